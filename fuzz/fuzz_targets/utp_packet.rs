//! Decodes arbitrary bytes as a uTP packet; what decodes must encode and decode back.
//! The check is `btcore_tests::fuzz_checks::utp_packet`, shared with `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::utp_packet(data);
});
