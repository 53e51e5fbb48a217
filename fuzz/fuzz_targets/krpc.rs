//! Parses arbitrary bytes as a KRPC datagram (BEP 5). Must never panic; whatever
//! parses must re-encode, and the re-encoding must parse to the same message and be a
//! fixed point (encode(parse(encode(m))) == encode(m)).
#![no_main]

use btcore_core::bencode::Token;
use btcore_core::dht::krpc::{self, Body, Message};
use libfuzzer_sys::fuzz_target;

fn encode(m: &Message<'_>) -> Vec<u8> {
    let mut out = vec![0u8; 4 * krpc::MAX_DATAGRAM];
    let n = m
        .encode(&mut out)
        .expect("a parsed message fits four times its limit");
    out.truncate(n);
    out
}

fn fields(m: &Message<'_>) -> String {
    match &m.body {
        Body::Query(q) => format!("q {:?} {:?}", m.tid, q),
        Body::Response(r) => format!(
            "r {:?} {:?} {:?} {:?} {:?} {:?}",
            m.tid,
            r.id,
            r.nodes.iter().collect::<Vec<_>>(),
            r.nodes6.iter().collect::<Vec<_>>(),
            r.values.iter().collect::<Vec<_>>(),
            r.token
        ),
        Body::Error(e) => format!("e {:?} {:?}", m.tid, e),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut tokens = [Token::default(); krpc::TOKENS_NEEDED];
    let Ok(m) = krpc::parse(data, &mut tokens) else {
        return;
    };
    let once = encode(&m);
    if once.len() > krpc::MAX_DATAGRAM {
        // Defaults written out (`implied_port`, an empty error message) can push a
        // message at the size limit over it; the parser rightly refuses that.
        return;
    }
    let mut tokens2 = [Token::default(); krpc::TOKENS_NEEDED];
    let m2 = krpc::parse(&once, &mut tokens2).expect("our encoding parses");
    assert_eq!(fields(&m), fields(&m2));
    assert_eq!(encode(&m2), once);
});
