#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use super::*;

fn with<R>(bytes: &[u8], f: impl FnOnce(Result<Message<'_>, KrpcError>) -> R) -> R {
    let mut tokens = [Token::default(); TOKENS_NEEDED];
    f(parse(bytes, &mut tokens))
}

fn reencode(bytes: &[u8]) -> std::vec::Vec<u8> {
    with(bytes, |m| {
        let m = m.expect("parses");
        let mut out = [0u8; MAX_DATAGRAM];
        let n = m.encode(&mut out).expect("fits");
        out[..n].to_vec()
    })
}

extern crate std;

/// The examples of BEP 5, byte for byte: they are canonical, so re-encoding gives
/// them back.
const BEP5: &[&[u8]] = &[
    b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
    b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
    b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe",
    b"d1:rd2:id20:0123456789abcdefghij5:nodes26:mnopqrstuvwxyz123456axje.ue1:t2:aa1:y1:re",
    b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe",
    b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
    b"d1:rd2:id20:abcdefghij01234567895:nodes26:mnopqrstuvwxyz123456axje.u5:token8:aoeusnthe1:t2:aa1:y1:re",
    b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
    b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
];

#[test]
fn bep5_examples_round_trip() {
    for ex in BEP5 {
        assert_eq!(
            reencode(ex),
            *ex,
            "{}",
            std::string::String::from_utf8_lossy(ex)
        );
    }
}

#[test]
fn bep5_examples_parse_to_the_right_fields() {
    with(BEP5[0], |m| {
        let m = m.expect("ping");
        assert_eq!(m.tid, b"aa");
        let Body::Query(q) = m.body else { panic!() };
        assert_eq!(q.id.0, *b"abcdefghij0123456789");
        assert_eq!(q.method, Method::Ping);
    });
    with(BEP5[3], |m| {
        let Body::Response(r) = m.expect("nodes").body else {
            panic!()
        };
        let n: std::vec::Vec<_> = r.nodes.iter().collect();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].id.0, *b"mnopqrstuvwxyz123456");
        assert_eq!(n[0].addr, "97.120.106.101:11893".parse().unwrap());
    });
    with(BEP5[5], |m| {
        let Body::Response(r) = m.expect("values").body else {
            panic!()
        };
        assert_eq!(r.token, Some(&b"aoeusnth"[..]));
        let v: std::vec::Vec<_> = r.values.iter().collect();
        assert_eq!(
            v,
            [
                "97.120.106.101:11893".parse().unwrap(),
                "105.100.104.116:28269".parse().unwrap()
            ]
        );
    });
    with(BEP5[7], |m| {
        let Body::Query(q) = m.expect("announce").body else {
            panic!()
        };
        assert_eq!(
            q.method,
            Method::AnnouncePeer {
                info_hash: NodeId(*b"mnopqrstuvwxyz123456"),
                port: 6881,
                implied_port: true,
                token: b"aoeusnth"
            }
        );
    });
    with(BEP5[8], |m| {
        let Body::Error(e) = m.expect("error").body else {
            panic!()
        };
        assert_eq!(e.code, 201);
        assert_eq!(e.message, b"A Generic Error Ocurred");
    });
}

#[test]
fn encodes_our_messages_canonically() {
    let peers: [SocketAddr; 2] = ["1.2.3.4:5".parse().unwrap(), "[::1]:6".parse().unwrap()];
    let mut n6 = [0u8; NODE6_LEN];
    NodeInfo {
        id: NodeId([b'x'; 20]),
        addr: "[::2]:7".parse().unwrap(),
    }
    .write_compact(&mut n6);
    let msg = Message {
        tid: b"\x01\x02",
        version: Some(VERSION),
        ip: Some("9.8.7.6:5".parse().unwrap()),
        body: Body::Response(Response {
            id: NodeId([b'i'; 20]),
            nodes: CompactNodes::default(),
            nodes6: CompactNodes::v6(&n6).unwrap(),
            values: Values::Addrs(&peers),
            token: Some(b"tok"),
        }),
    };
    let mut out = [0u8; 400];
    let n = msg.encode(&mut out).unwrap();
    let mut exp = std::vec::Vec::new();
    exp.extend_from_slice(
        b"d2:ip6:\x09\x08\x07\x06\x00\x051:rd2:id20:iiiiiiiiiiiiiiiiiiii6:nodes638:",
    );
    exp.extend_from_slice(&n6);
    exp.extend_from_slice(b"5:token3:tok6:valuesl6:\x01\x02\x03\x04\x00\x0518:");
    exp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 6]);
    exp.extend_from_slice(b"ee1:t2:\x01\x021:v4:BC\x00\x011:y1:re");
    assert_eq!(&out[..n], &exp[..]);
    assert_eq!(reencode(&exp), exp);
    // Too small a buffer is an error, not a panic or a truncated message.
    assert_eq!(msg.encode(&mut out[..n - 1]), Err(BufferTooSmall));
    // A query with `want` and `ro`.
    let q = Message {
        tid: b"aa",
        version: None,
        ip: None,
        body: Body::Query(Query {
            id: NodeId([b'a'; 20]),
            method: Method::FindNode {
                target: NodeId([b'b'; 20]),
            },
            want: Want { n4: true, n6: true },
            read_only: true,
        }),
    };
    let n = q.encode(&mut out).unwrap();
    assert_eq!(
        &out[..n],
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa6:target20:bbbbbbbbbbbbbbbbbbbb4:wantl2:n42:n6ee1:q9:find_node2:roi1e1:t2:aa1:y1:qe"
    );
    with(&out[..n], |m| {
        let Body::Query(p) = m.unwrap().body else {
            panic!()
        };
        assert!(p.read_only && p.want.n4 && p.want.n6);
    });
}

#[test]
fn unknown_fields_are_ignored() {
    let m =
        b"d1:ad2:id20:abcdefghij01234567893:xyzli1eli2eeee1:q4:ping1:t2:aa5:extrad1:ai1ee1:y1:qe";
    with(m, |m| assert!(m.is_ok(), "{m:?}"));
    with(
        b"d1:ad2:id20:abcdefghij0123456789e1:q7:vote_up1:t2:aa1:y1:qe",
        |m| {
            let Body::Query(q) = m.unwrap().body else {
                panic!()
            };
            assert_eq!(q.method, Method::Unknown(b"vote_up"));
        },
    );
}

#[test]
fn malformed_inputs_are_refused() {
    use KrpcError::*;
    let cases: &[(&[u8], KrpcError)] = &[
        (b"d1:ad2:id19:abcdefghij012345678e1:q4:ping1:t2:aa1:y1:qe", Invalid(Field::Id)),
        (b"d1:ade1:q4:ping1:t2:aa1:y1:qe", Missing(Field::Id)),
        (b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t0:1:y1:qe", Invalid(Field::Tid)),
        (b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:y1:qe", Missing(Field::Tid)),
        (b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:xe", Invalid(Field::Type)),
        (b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe\0", Bencode(bencode::DecodeError { offset: 56, kind: bencode::ErrorKind::TrailingData })),
        (b"li1ee", Invalid(Field::Root)),
        (b"d1:ad2:id20:abcdefghij01234567896:target19:mnopqrstuvwxyz12345e1:q9:find_node1:t2:aa1:y1:qe", Invalid(Field::Target)),
        (b"d1:rd2:id20:0123456789abcdefghij5:nodes25:mnopqrstuvwxyz123456axjeue1:t2:aa1:y1:re", Invalid(Field::Nodes)),
        (b"d1:rd2:id20:0123456789abcdefghij6:nodes626:mnopqrstuvwxyz123456axje.ue1:t2:aa1:y1:re", Invalid(Field::Nodes6)),
        (b"d1:rd2:id20:abcdefghij01234567895:token21:aaaaaaaaaaaaaaaaaaaaae1:t2:aa1:y1:re", Invalid(Field::Token)),
        (b"d1:rd2:id20:abcdefghij01234567895:token0:e1:t2:aa1:y1:re", Invalid(Field::Token)),
        (b"d1:rd2:id20:abcdefghij01234567896:valuesl5:axje.ee1:t2:aa1:y1:re", Invalid(Field::Values)),
        (b"d1:rd2:id20:abcdefghij01234567896:valuesli1eee1:t2:aa1:y1:re", Invalid(Field::Values)),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti0e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe", Invalid(Field::Port)),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti65536e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe", Invalid(Field::Port)),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti1ee1:q13:announce_peer1:t2:aa1:y1:qe", Missing(Field::Token)),
        (b"d1:el2:xxe1:t2:aa1:y1:ee", Invalid(Field::Error)),
    ];
    for (bytes, err) in cases {
        with(bytes, |m| {
            assert_eq!(
                m.err(),
                Some(*err),
                "{}",
                std::string::String::from_utf8_lossy(bytes)
            )
        });
    }
    // An error without a message is accepted.
    with(b"d1:eli201ee1:t2:aa1:y1:ee", |m| assert!(m.is_ok()));
    // Oversized datagrams and oversized `values` lists.
    let big = [b'x'; MAX_DATAGRAM + 1];
    with(&big, |m| assert_eq!(m.err(), Some(TooLong)));
    let mut v = std::vec::Vec::new();
    v.extend_from_slice(b"d1:rd2:id20:abcdefghij01234567896:valuesl");
    for _ in 0..=MAX_VALUES {
        v.extend_from_slice(b"6:abcdef");
    }
    v.extend_from_slice(b"ee1:t2:aa1:y1:re");
    with(&v, |m| assert_eq!(m.err(), Some(Invalid(Field::Values))));
    // Deep nesting inside an unknown key stops at the depth limit.
    let mut deep = std::vec::Vec::new();
    deep.extend_from_slice(b"d1:ad2:id20:abcdefghij01234567891:x");
    deep.extend(core::iter::repeat_n(b'l', 20));
    deep.extend(core::iter::repeat_n(b'e', 20));
    deep.extend_from_slice(b"e1:q4:ping1:t2:aa1:y1:qe");
    with(&deep, |m| assert!(matches!(m, Err(Bencode(_)))));
    // Too few tokens is a clean error.
    let mut few = [Token::default(); 4];
    assert!(matches!(parse(BEP5[0], &mut few), Err(Bencode(_))));
}
