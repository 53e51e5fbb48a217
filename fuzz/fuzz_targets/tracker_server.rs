//! Drives the tracker server's request handling statefully: HTTP bytes on several
//! connections through the host's socket-free connection handling and BEP 15 datagrams
//! through `Tracker::handle_udp`, on a simulated clock, with a memory bound checked
//! after every step. The check is `btcore_tests::fuzz_checks::tracker_server`, shared
//! with `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::tracker_server(data);
});
