//! Parses arbitrary bytes as a BEP 14 local service discovery datagram. Must never
//! panic; whatever parses must write back and parse to the same port and hashes.
//! The check is `btcore_tests::fuzz_checks::lsd`, shared with `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::lsd(data);
});
