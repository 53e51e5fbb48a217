//! Parses arbitrary bytes as a BEP 11 `ut_pex` payload. Must never panic and never
//! yield more than 50 addresses per list; whatever parses must re-encode to a payload
//! that parses to the same addresses.
//! The same bytes also go through the BEP 55 `ut_holepunch` codec
//! (`fuzz_checks::holepunch`: whatever parses writes back to the same message).
//! The check is `btcore_tests::fuzz_checks::pex`, shared with `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::pex(data);
    // The same bytes as a BEP 55 `ut_holepunch` payload (no allocator, 24 bytes).
    btcore_tests::fuzz_checks::holepunch(data);
});
