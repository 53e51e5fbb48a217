//! Parses arbitrary bytes as a `.torrent` and, when that succeeds, calls every accessor.
//! Every path the host would create must be relative, with no `..`, `.` or empty
//! element, and no two files may land on the same path.
//! The check is `btcore_tests::fuzz_checks::metainfo`, shared with `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::metainfo(data);
});
