//! Parses arbitrary bytes as a magnet link; what parses is written back with
//! `write_uri`, and that canonical link parses to the same info-hash and writes back
//! the same (the canonical form is a fixpoint).
#![no_main]

use btcore_core::magnet::{decode_into, Magnet, MagnetLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Magnet::parse(data) else {
        return;
    };
    assert_eq!(m.as_bytes(), data);
    let _ = (m.has_btmh(), m.dropped().total(), m.is_truncated());
    let mut buf = vec![0u8; data.len()];
    if let Some(name) = m.name() {
        let lazy = name
            .collect::<Result<Vec<u8>, _>>()
            .expect("a parsed name decodes");
        let into = m.name_into(&mut buf).expect("decodes").expect("has a name");
        assert_eq!(lazy, into);
    } else {
        assert!(m.name_raw().is_none());
    }
    for (i, raw) in m.trackers().iter().enumerate() {
        assert_eq!(m.tracker(i), Some(*raw));
        decode_into(raw, &mut buf).expect("a parsed tracker decodes");
    }
    for (i, raw) in m.web_seeds().iter().enumerate() {
        assert_eq!(m.web_seed(i), Some(*raw));
        decode_into(raw, &mut buf).expect("a parsed web seed decodes");
    }
    assert!(m.peers().count() <= m.peers_raw().len());

    let mut uri = String::new();
    m.write_uri(&mut uri).expect("write_uri into a String");
    assert_eq!(uri, m.to_string());
    // Escaping can triple a value, so the written link may exceed the default 8 KiB.
    let roomy = MagnetLimits {
        max_uri_len: usize::MAX,
        ..MagnetLimits::DEFAULT
    };
    let again = Magnet::parse_with(uri.as_bytes(), &roomy).expect("the written link parses");
    assert_eq!(again.info_hash(), m.info_hash());
    assert_eq!(again.trackers().len(), m.trackers().len());
    assert_eq!(again.web_seeds().len(), m.web_seeds().len());
    assert_eq!(again.peers_raw().len(), m.peers_raw().len());
    let mut uri2 = String::new();
    again.write_uri(&mut uri2).expect("write_uri into a String");
    assert_eq!(uri, uri2, "the canonical link is not a fixpoint");
});
