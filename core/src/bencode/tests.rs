extern crate std;

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

fn dec(input: &[u8]) -> Result<(Vec<Token>, usize), DecodeError> {
    let mut toks = Vec::new();
    let doc = decode_vec(input, &mut toks, &Limits::default())?;
    let n = doc.consumed();
    Ok((toks, n))
}

fn kind_of(input: &[u8]) -> ErrorKind {
    dec(input).expect_err("must fail").kind
}

#[test]
fn scalars_and_spans() {
    let input = b"d3:cow3:moo4:spaml1:a1:bi-42eee";
    let mut toks = [Token::default(); 16];
    let doc = decode(input, &mut toks, &Limits::default()).expect("decodes");
    let d = doc.root().as_dict().expect("dict");
    assert_eq!(d.len(), 2);
    assert_eq!(d.get_bytes(b"cow"), Some(&b"moo"[..]));
    let spam = d.get_list(b"spam").expect("list");
    assert_eq!(spam.len(), 3);
    let items: Vec<_> = spam.iter().collect();
    assert_eq!(items[0].as_bytes(), Some(&b"a"[..]));
    assert_eq!(items[2].as_int(), Some(-42));
    assert_eq!(spam.value().raw(), b"l1:a1:bi-42ee");
    assert_eq!(doc.consumed(), input.len());
    assert_eq!(doc.token_count(), 8);
}

#[test]
fn errors_name_cause_and_offset() {
    let cases: &[(&[u8], ErrorKind, usize)] = &[
        (b"", ErrorKind::UnexpectedEof, 0),
        (b"i03e", ErrorKind::LeadingZero, 1),
        (b"i-0e", ErrorKind::NegativeZero, 2),
        (b"i-e", ErrorKind::ExpectedDigit, 2),
        (b"ie", ErrorKind::ExpectedDigit, 1),
        (b"i+1e", ErrorKind::ExpectedDigit, 1),
        (b"i12a4e", ErrorKind::ExpectedDigit, 3),
        (b"i123", ErrorKind::UnexpectedEof, 4),
        (b"i9223372036854775808e", ErrorKind::Overflow, 1),
        (b"99999999999:abc", ErrorKind::UnexpectedEof, 15),
        (b"3abc", ErrorKind::ExpectedColon, 1),
        (b"-3:abc", ErrorKind::ExpectedValue, 0),
        (b"di1e1:xe", ErrorKind::ExpectedDigit, 1),
        (b"d4:infoe", ErrorKind::ExpectedValue, 7),
        (b"d1:ai1e1:ai2ee", ErrorKind::DuplicateKey, 7),
        (b"d1:bi1e1:ai2e1:bi3ee", ErrorKind::DuplicateKey, 13),
        (b"e", ErrorKind::ExpectedValue, 0),
        (b"l", ErrorKind::UnexpectedEof, 1),
        (b"99999999999999999999999:", ErrorKind::Overflow, 0),
    ];
    for (input, kind, offset) in cases {
        let e = dec(input).expect_err("must fail");
        assert_eq!(
            (e.kind, e.offset),
            (*kind, *offset),
            "input {:?}",
            std::str::from_utf8(input)
        );
    }
    assert_eq!(
        std::format!("{}", dec(b"i03e").expect_err("fails")),
        "bencode: integer with leading zero at byte 1"
    );
}

#[test]
fn lenient_where_real_torrents_need_it() {
    // Leading zeros in a string length and unsorted keys are accepted.
    let (_, n) = dec(b"d03:abci1e1:ai2ee").expect("decodes");
    assert_eq!(n, 17);
    // Trailing data is reported through consumed(), or refused on request.
    let (_, n) = dec(b"i1egarbage").expect("decodes");
    assert_eq!(n, 3);
    let strict = Limits {
        allow_trailing: false,
        ..Limits::default()
    };
    let mut toks = Vec::new();
    let e = decode_vec(b"i1egarbage", &mut toks, &strict).expect_err("trailing");
    assert_eq!((e.kind, e.offset), (ErrorKind::TrailingData, 3));
    assert_eq!(dec(b"i-9223372036854775808e").map(|r| r.1), Ok(22));
}

#[test]
fn deep_nesting_is_a_clean_error() {
    let mut deep = vec![b'l'; 100_000];
    deep.extend(vec![b'e'; 100_000]);
    assert_eq!(kind_of(&deep), ErrorKind::DepthExceeded);
    let unterminated = vec![b'l'; 100_000];
    assert_eq!(kind_of(&unterminated), ErrorKind::DepthExceeded);
    let mut ok = vec![b'l'; 100];
    ok.extend(vec![b'e'; 100]);
    assert!(dec(&ok).is_ok());
    ok.insert(0, b'l');
    ok.push(b'e');
    assert_eq!(kind_of(&ok), ErrorKind::DepthExceeded);
}

#[test]
fn token_buffer_and_limits_bound_the_work() {
    let mut toks = [Token::default(); 3];
    let e = decode(b"li1ei2ei3ee", &mut toks, &Limits::default()).expect_err("too many");
    assert_eq!(e.kind, ErrorKind::TooManyTokens);
    let lim = Limits {
        max_string_len: 2,
        ..Limits::default()
    };
    let mut v = Vec::new();
    assert_eq!(
        decode_vec(b"3:abc", &mut v, &lim).expect_err("long").kind,
        ErrorKind::StringTooLong
    );
    // Many unsorted keys cost comparisons, bounded by a budget.
    let mut big = Vec::from(&b"d"[..]);
    for i in (0..2000u32).rev() {
        big.extend(std::format!("6:{i:06}i0e").as_bytes());
    }
    big.push(b'e');
    assert!(dec(&big).is_ok());
    let lim = Limits {
        max_unsorted_work: 10_000,
        ..Limits::default()
    };
    assert_eq!(
        decode_vec(&big, &mut v, &lim).expect_err("budget").kind,
        ErrorKind::TooComplex
    );
}

#[test]
fn encoder_writes_into_a_slice() {
    let mut buf = [0u8; 64];
    let mut w: &mut [u8] = &mut buf;
    let mut e = Encoder::new(&mut w);
    e.dict().expect("room");
    e.key_int(b"a", -5).expect("room");
    e.key_bytes(b"b", b"xyz").expect("room");
    e.bytes(b"c").expect("room");
    e.list().expect("room");
    e.int(i64::MIN).expect("room");
    e.end().expect("room");
    e.end().expect("room");
    let left = w.len();
    let out = &buf[..64 - left];
    assert_eq!(out, b"d1:ai-5e1:b3:xyz1:cli-9223372036854775808eee");
    let mut tiny = [0u8; 3];
    let mut w: &mut [u8] = &mut tiny;
    assert!(Encoder::new(&mut w).bytes(b"abc").is_err());
}

#[test]
fn reencoding_keeps_order_and_drops_leading_zeros() {
    let input = b"d1:bli1e0:e01:xde1:ai7ee";
    let (toks, _) = dec(input).expect("decodes");
    let doc = Document {
        buf: input,
        tokens: &toks,
        consumed: input.len(),
    };
    let mut out = Vec::new();
    encode_value(&doc.root(), &mut Encoder::new(&mut out)).expect("vec");
    assert_eq!(out, b"d1:bli1e0:e1:xde1:ai7ee");
}

/// An owned bencode value for property tests.
#[derive(Debug, Clone, PartialEq)]
enum Owned {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Owned>),
    Dict(BTreeMap<Vec<u8>, Owned>),
}

fn encode_owned(v: &Owned, e: &mut Encoder<&mut Vec<u8>>) {
    match v {
        Owned::Int(n) => e.int(*n).expect("vec"),
        Owned::Bytes(b) => e.bytes(b).expect("vec"),
        Owned::List(l) => {
            e.list().expect("vec");
            l.iter().for_each(|x| encode_owned(x, e));
            e.end().expect("vec");
        }
        Owned::Dict(d) => {
            e.dict().expect("vec");
            for (k, x) in d {
                e.bytes(k).expect("vec");
                encode_owned(x, e);
            }
            e.end().expect("vec");
        }
    }
}

fn to_owned(v: Value<'_>) -> Owned {
    match v.kind() {
        Kind::Int => Owned::Int(v.as_int().expect("int")),
        Kind::Bytes => Owned::Bytes(v.as_bytes().expect("bytes").to_vec()),
        Kind::List => Owned::List(v.as_list().expect("list").iter().map(to_owned).collect()),
        Kind::Dict => Owned::Dict(
            v.as_dict()
                .expect("dict")
                .iter()
                .map(|(k, x)| (k.to_vec(), to_owned(x)))
                .collect(),
        ),
    }
}

fn owned() -> impl Strategy<Value = Owned> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Owned::Int),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Owned::Bytes),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Owned::List),
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..8),
                inner,
                0..8
            )
            .prop_map(Owned::Dict),
        ]
    })
}

proptest! {
    #[test]
    fn round_trip(v in owned()) {
        let mut bytes = Vec::new();
        encode_owned(&v, &mut Encoder::new(&mut bytes));
        let mut toks = Vec::new();
        let doc = decode_vec(&bytes, &mut toks, &Limits::default()).expect("own output decodes");
        prop_assert_eq!(doc.consumed(), bytes.len());
        prop_assert_eq!(to_owned(doc.root()), v);
        let mut again = Vec::new();
        encode_value(&doc.root(), &mut Encoder::new(&mut again)).expect("vec");
        prop_assert_eq!(again, bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut toks = [Token::default(); 64];
        if let Ok(doc) = decode(&input, &mut toks, &Limits::default()) {
            prop_assert!(doc.consumed() <= input.len());
            let mut out = Vec::new();
            encode_value(&doc.root(), &mut Encoder::new(&mut out)).expect("vec");
        }
    }

    #[test]
    fn mutated_documents_never_panic(v in owned(), at in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = Vec::new();
        encode_owned(&v, &mut Encoder::new(&mut bytes));
        let i = at % bytes.len();
        bytes[i] = byte;
        let mut toks = Vec::new();
        let _ = decode_vec(&bytes, &mut toks, &Limits::default());
    }
}
