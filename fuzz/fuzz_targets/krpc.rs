//! Parses arbitrary bytes as a KRPC datagram (BEP 5). Must never panic; whatever
//! parses must re-encode, and the re-encoding must parse to the same message and be a
//! fixed point (encode(parse(encode(m))) == encode(m)).
//! The check is `btcore_tests::fuzz_checks::krpc`, shared with `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::krpc(data);
});
