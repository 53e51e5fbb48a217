//! Parses arbitrary bytes as a BEP 14 local service discovery datagram. Must never
//! panic; whatever parses must write back and parse to the same port and hashes.
#![no_main]

use btcore_core::lsd::{parse, write_announce, MAX_DATAGRAM};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(a) = parse(data) else {
        return;
    };
    let hashes: Vec<_> = a.infohashes().collect();
    let mut out = [0u8; MAX_DATAGRAM];
    if let Ok(n) = write_announce(
        &mut out,
        a.port(),
        &hashes,
        a.cookie().unwrap_or_default(),
        false,
    ) {
        let b = parse(&out[..n]).expect("our announce parses");
        assert_eq!(b.port(), a.port());
        assert!(b.infohashes().eq(hashes.iter().copied()));
    }
});
