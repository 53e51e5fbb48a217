//! Feeds a script of datagrams, packets, timers and commands to a uTP socket; bounds hold.
//! The check is `btcore_tests::fuzz_checks::utp_connection`, shared with `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::utp_connection(data);
});
