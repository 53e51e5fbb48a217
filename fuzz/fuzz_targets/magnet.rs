//! Parses arbitrary bytes as a magnet link; what parses is written back with
//! `write_uri`, and that canonical link parses to the same info-hash and writes back
//! the same (the canonical form is a fixpoint).
//! The check is `btcore_tests::fuzz_checks::magnet`, shared with `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::magnet(data);
});
