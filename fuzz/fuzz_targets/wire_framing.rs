//! Decodes arbitrary bytes as a peer wire stream: `wire::fuzz_decode` (handshake, then
//! frames under default and tight limits, each re-encoded to its source bytes) must
//! hold, and a plain `wire::decode` loop over the stream must make progress and stop
//! cleanly.
//! BEP 52 `hash request` / `hashes` / `hash reject` frames are covered too: besides the
//! round trip, `fuzz_decode` hands each to `merkle::fuzz_hash_request` (the hashes are
//! checked against a file shaped after the request; a request fitted to a small file
//! is answered and its answer must verify exactly when its proof reaches the root).
//! Seeds: `corpus/wire_framing/bep52_*.bin`.
//! The check is `btcore_tests::fuzz_checks::wire_framing`, shared with `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::wire_framing(data);
});
