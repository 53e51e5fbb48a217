//! Parses arbitrary bytes as a BEP 11 `ut_pex` payload. Must never panic and never
//! yield more than 50 addresses per list; whatever parses must re-encode to a payload
//! that parses to the same addresses.
#![no_main]

use btcore_core::pex::{write_pex, PexMessage, MAX_PEERS_PER_MESSAGE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = PexMessage::parse(data) else {
        return;
    };
    let added: Vec<_> = m.added().collect();
    let dropped: Vec<_> = m.dropped().collect();
    assert!(added.len() <= 2 * MAX_PEERS_PER_MESSAGE);
    assert!(dropped.len() <= 2 * MAX_PEERS_PER_MESSAGE);
    let mut out = Vec::new();
    write_pex(&mut out, &added, &dropped).expect("Vec never fails");
    let back = PexMessage::parse(&out).expect("our encoding parses");
    let mut a2: Vec<_> = back.added().collect();
    let mut a1 = added.clone();
    a1.sort();
    a2.sort();
    assert_eq!(a1, a2);
});
