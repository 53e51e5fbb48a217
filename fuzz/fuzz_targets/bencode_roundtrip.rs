//! Whatever decodes re-encodes to a canonical form that is a fixpoint: decoding the
//! encoding and encoding again gives the same bytes. The root's raw span is exactly the
//! consumed prefix of the input.
//! The check is `btcore_tests::fuzz_checks::bencode_roundtrip`, shared with `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::bencode_roundtrip(data);
});
