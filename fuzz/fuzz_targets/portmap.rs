//! Parses arbitrary bytes as a NAT-PMP or PCP response and feeds them to port mapping
//! clients of both protocols. Must never panic.
//! The check is `btcore_tests::fuzz_checks::portmap`, shared with `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::portmap(data);
});
