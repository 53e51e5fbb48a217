//! Decodes arbitrary bytes as a peer wire stream: `wire::fuzz_decode` (handshake, then
//! frames under default and tight limits, each re-encoded to its source bytes) must
//! hold, and a plain `wire::decode` loop over the stream must make progress and stop
//! cleanly.
//! The check is `btcore_tests::fuzz_checks::wire_framing`, shared with `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::wire_framing(data);
});
