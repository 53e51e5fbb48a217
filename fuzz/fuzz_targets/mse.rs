//! Drives an MSE/PE (protocol encryption) handshake with hostile bytes: raw input to a
//! responder or an initiator, or a real exchange with the initiator's bytes corrupted.
//! Must never panic, over-consume, or wait forever past the longest valid handshake.
//! The check is `btcore_tests::fuzz_checks::mse`, shared with `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::mse(data);
});
