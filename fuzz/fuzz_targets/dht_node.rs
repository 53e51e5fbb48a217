//! A DHT node fed a script of datagrams from several source addresses, commands and
//! timeouts, its output drained and its memory bounds and anti-Sybil invariants
//! checked after every step (routing table, replacement caches, peer store, queries
//! in flight, lookups, queues).
//! The check is `btcore_tests::fuzz_checks::dht_node`, shared with `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::dht_node(data);
});
