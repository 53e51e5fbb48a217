//! Parses arbitrary bytes as UPnP IGD answers (SSDP, HTTP, device description, SOAP)
//! and feeds them to a UPnP port mapping client at each step. Must never panic.
//! The check is `btcore_tests::fuzz_checks::upnp`, shared with `tests/tests/fuzz_seeds.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    btcore_tests::fuzz_checks::upnp(data);
});
