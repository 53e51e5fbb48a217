//! Whatever decodes re-encodes to a canonical form that is a fixpoint: decoding the
//! encoding and encoding again gives the same bytes. The root's raw span is exactly the
//! consumed prefix of the input.
#![no_main]

use btcore_core::bencode::{decode_vec, encode_value, Encoder, Limits, Value};
use libfuzzer_sys::fuzz_target;

fn encode(v: &Value<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(v, &mut Encoder::new(&mut out)).expect("Vec never fails");
    out
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut tokens = Vec::new();
    let Ok(doc) = decode_vec(data, &mut tokens, &limits) else {
        return;
    };
    let consumed = doc.consumed();
    let root = doc.root();
    assert_eq!(root.span(), 0..consumed);
    assert_eq!(root.raw(), &data[..consumed]);

    let first = encode(&root);
    let mut tokens2 = Vec::new();
    let doc2 = decode_vec(&first, &mut tokens2, &limits).expect("canonical form decodes");
    assert_eq!(doc2.consumed(), first.len());
    assert_eq!(doc2.token_count(), doc.token_count());
    assert_eq!(doc2.root().kind(), root.kind());
    let second = encode(&doc2.root());
    assert_eq!(first, second, "canonical form is not a fixpoint");
    assert!(first.len() <= consumed, "canonical form is never longer");
});
