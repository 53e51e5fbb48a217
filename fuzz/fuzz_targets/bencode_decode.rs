//! Decodes arbitrary bytes with a fixed token slice and with `decode_vec`, under the
//! default limits and tight ones, and walks every value of what decodes. Must never
//! panic; the two token stores must agree.
//! The check is `btcore_tests::fuzz_checks::bencode_decode`, shared with `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::bencode_decode(data);
});
