//! Decodes arbitrary bytes with a fixed token slice and with `decode_vec`, under the
//! default limits and tight ones, and walks every value of what decodes. Must never
//! panic; the two token stores must agree.
#![no_main]

use btcore_core::bencode::{
    decode, decode_vec, encode_value, Document, Encoder, ErrorKind, Kind, Limits, Token, Value,
};
use libfuzzer_sys::fuzz_target;

/// Tokens in the fixed buffer: small enough that the fuzzer hits `TooManyTokens`.
const SLICE_TOKENS: usize = 64;

/// Visits `v` and everything under it; returns the number of values seen.
fn walk(input: &[u8], v: Value<'_>) -> usize {
    let span = v.span();
    assert!(span.start < span.end && span.end <= input.len());
    assert_eq!(v.raw(), &input[span.clone()]);
    match v.kind() {
        Kind::Int => {
            assert!(v.as_int().is_some());
            assert!(v.as_bytes().is_none() && v.as_list().is_none() && v.as_dict().is_none());
            1
        }
        Kind::Bytes => {
            let b = v.as_bytes().expect("a string has bytes");
            assert!(v.raw().ends_with(b));
            let _ = v.as_str();
            assert!(v.as_int().is_none());
            1
        }
        Kind::List => {
            let l = v.as_list().expect("a list");
            let mut seen = 1;
            let mut n = 0;
            for item in l.iter() {
                assert!(item.span().start >= span.start && item.span().end <= span.end);
                seen += walk(input, item);
                n += 1;
            }
            assert_eq!(n, l.len());
            assert_eq!(l.is_empty(), n == 0);
            seen
        }
        Kind::Dict => {
            let d = v.as_dict().expect("a dict");
            let mut seen = 1;
            let mut n = 0;
            for (k, item) in d.iter() {
                // Keys are unique, so looking one up finds this very value.
                let found = d.get(k).expect("a present key is found");
                assert_eq!(found.span(), item.span());
                seen += 1 + walk(input, item);
                n += 1;
            }
            assert_eq!(n, d.len());
            assert_eq!(d.is_empty(), n == 0);
            seen
        }
    }
}

fn check_doc(input: &[u8], doc: &Document<'_>) {
    assert!(doc.consumed() >= 1 && doc.consumed() <= input.len());
    assert_eq!(walk(input, doc.root()), doc.token_count());
    let mut out = Vec::new();
    encode_value(&doc.root(), &mut Encoder::new(&mut out)).expect("Vec never fails");
    assert!(!out.is_empty());
    let _ = format!("{:?}", doc.root());
}

fuzz_target!(|data: &[u8]| {
    let tight = Limits {
        max_depth: 8,
        max_tokens: 1000,
        max_string_len: 64,
        allow_trailing: false,
        max_unsorted_work: 100,
    };
    for limits in [Limits::default(), tight] {
        let mut slice = [Token::default(); SLICE_TOKENS];
        let fixed = decode(data, &mut slice, &limits);
        if let Ok(doc) = &fixed {
            check_doc(data, doc);
        }
        let fixed = fixed.map(|d| (d.consumed(), d.token_count()));

        let mut vec = Vec::new();
        let grown = decode_vec(data, &mut vec, &limits);
        if let Ok(doc) = &grown {
            check_doc(data, doc);
        }
        let grown = grown.map(|d| (d.consumed(), d.token_count()));

        // The token store only matters when the fixed one runs out.
        match (fixed, grown) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Ok(a), Err(e)) => panic!("slice decoded {a:?}, vec failed: {e}"),
            (Err(e), Ok((_, n))) => {
                assert!(
                    e.kind == ErrorKind::TooManyTokens && n > SLICE_TOKENS,
                    "{e} vs {n}"
                )
            }
            // A full slice stops the decoder before a later error the vector reaches.
            (Err(a), Err(b)) => assert!(a == b || a.kind == ErrorKind::TooManyTokens),
        }
    }
});
