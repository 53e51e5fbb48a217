//! Parses arbitrary bytes as a BitTorrent v2 or hybrid `.torrent` (seeded with v2
//! torrents) and checks what the v2 parser promises: the SHA-256 info-hash, files on
//! piece boundaries, pieces roots exactly for non-empty files, piece layers that hash
//! up to their roots, hybrid v1 and v2 files in the same places.
//! The check is `btcore_tests::fuzz_checks::metainfo_v2`, shared with
//! `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::metainfo_v2(data);
});
