//! Drives a whole session (a seeded torrent, a downloaded one, a magnet link) with six
//! hostile peers from three addresses: bytes, handshakes, messages and floods, reads,
//! disconnects and time. Must never panic, and after every step the connection caps
//! and every connection's send-queue and receive-buffer caps must hold.
//! The check is `btcore_tests::fuzz_checks::session`, shared with `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::session(data);
});
