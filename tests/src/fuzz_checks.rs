//! The checks behind the cargo-fuzz targets in `fuzz/fuzz_targets/`: each target is a
//! one-line call to its function here, and `tests/tests/fuzz_seeds.rs` replays the
//! committed seeds (`fuzz/corpus/<target>/`) through the same functions on stable.
//!
//! Each check panics when an invariant fails and returns whether the parser under test
//! accepted the input (rejection is fine).

use btcore_core::bencode::{self, decode_vec, encode_value, Document, Encoder, Kind, Token, Value};
use btcore_core::hash::sha1;
use btcore_core::ids::PieceIndex;
use btcore_core::magnet::{decode_into, Magnet, MagnetLimits};
use btcore_core::metainfo::{self, Metainfo};
use btcore_core::wire::{self, Handshake, Status};
use std::collections::BTreeSet;

// ---------------------------------------------------------------------------------------
// bencode_decode
// ---------------------------------------------------------------------------------------

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

/// `bencode_decode`: decodes with a fixed token slice and with `decode_vec`, under the
/// default limits and tight ones, and walks every value of what decodes. Must never
/// panic; the two token stores must agree.
pub fn bencode_decode(data: &[u8]) -> bool {
    let tight = bencode::Limits {
        max_depth: 8,
        max_tokens: 1000,
        max_string_len: 64,
        allow_trailing: false,
        max_unsorted_work: 100,
    };
    let mut any_ok = false;
    for limits in [bencode::Limits::default(), tight] {
        let mut slice = [Token::default(); SLICE_TOKENS];
        let fixed = bencode::decode(data, &mut slice, &limits);
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

        any_ok |= grown.is_ok();
        // The token store only matters when the fixed one runs out.
        match (fixed, grown) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Ok(a), Err(e)) => panic!("slice decoded {a:?}, vec failed: {e}"),
            (Err(e), Ok((_, n))) => assert!(
                e.kind == bencode::ErrorKind::TooManyTokens && n > SLICE_TOKENS,
                "{e} vs {n}"
            ),
            // A full slice stops the decoder before a later error the vector reaches.
            (Err(a), Err(b)) => assert!(a == b || a.kind == bencode::ErrorKind::TooManyTokens),
        }
    }
    any_ok
}

// ---------------------------------------------------------------------------------------
// bencode_roundtrip
// ---------------------------------------------------------------------------------------

fn encode(v: &Value<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(v, &mut Encoder::new(&mut out)).expect("Vec never fails");
    out
}

/// `bencode_roundtrip`: whatever decodes re-encodes to a canonical form that is a
/// fixpoint (decoding the encoding and encoding again gives the same bytes); the root's
/// raw span is exactly the consumed prefix of the input.
pub fn bencode_roundtrip(data: &[u8]) -> bool {
    let limits = bencode::Limits::default();
    let mut tokens = Vec::new();
    let Ok(doc) = decode_vec(data, &mut tokens, &limits) else {
        return false;
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
    true
}

// ---------------------------------------------------------------------------------------
// metainfo
// ---------------------------------------------------------------------------------------

/// Room for the longest sanitized path: 65 elements of at most 255 bytes plus `/`s.
const PATH_BUF: usize = 1 << 15;

fn assert_safe_path(p: &str) {
    assert!(!p.is_empty(), "empty path");
    assert!(
        !p.starts_with('/') && !p.contains('\\'),
        "not relative: {p:?}"
    );
    for e in p.split('/') {
        assert!(
            !e.is_empty() && e != "." && e != "..",
            "bad element in {p:?}"
        );
        assert!(!e.contains(':'), "drive or stream in {p:?}");
    }
}

/// `metainfo`: parses a `.torrent` and, when that succeeds, calls every accessor. Every
/// path the host would create must be relative, with no `..`, `.` or empty element, and
/// no two files may land on the same path.
pub fn metainfo(data: &[u8]) -> bool {
    let mut tokens = Vec::new();
    let Ok(m) = Metainfo::parse_vec(data, &mut tokens, &metainfo::Limits::default()) else {
        return false;
    };
    assert_eq!(m.info_hash().0, sha1(m.info_bytes()));
    let _ = (
        m.info().len(),
        m.root().len(),
        m.name(),
        m.is_hybrid(),
        m.is_private(),
    );
    let _ = (m.announce(), m.creation_date(), m.comment(), m.created_by());
    let _ = m.announce_tiers().map(|t| t.count()).sum::<usize>();
    let _ = m.trackers().count();
    let _ = m.url_list().count();

    let g = m.geometry();
    let n = m.num_pieces();
    assert!(n >= 1 && n == g.num_pieces() && m.piece_length() == g.piece_len());
    assert!(m.piece_hash(PieceIndex(0)).is_some());
    assert!(m.piece_hash(PieceIndex(n - 1)).is_some());
    assert!(m.piece_hash(PieceIndex(n)).is_none());
    assert!(m.piece_hash(PieceIndex(u32::MAX)).is_none());
    let last = g.piece(n - 1).expect("last piece");
    assert!(g.piece_size(last) >= 1 && g.piece_size(last) <= g.piece_len());
    assert_eq!(
        g.piece_offset(last) + u64::from(g.piece_size(last)),
        m.total_size()
    );
    assert!(g.block(last, 0).is_some());

    let mut buf = vec![0u8; PATH_BUF];
    let (mut count, mut offset) = (0u32, 0u64);
    for f in m.files() {
        assert_eq!((f.index, f.offset), (count, offset));
        let _ = f.raw_path().count();
        let _ = f.symlink_target().map(|t| t.count());
        let p = f.write_path(&mut buf).expect("a path fits PATH_BUF");
        assert_safe_path(p);
        count += 1;
        offset += f.length;
    }
    assert_eq!(count, m.num_files());
    assert_eq!(offset, m.total_size());
    assert!(m.is_multi_file() || count == 1);

    let Ok(layout) = m.layout() else {
        return true;
    };
    assert_eq!(layout.len(), count as usize);
    let mut files = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    for (i, spec) in layout.iter().enumerate() {
        assert_eq!(spec.index as usize, i);
        if let Some(t) = &spec.symlink_target {
            assert_safe_path(t);
        }
        if spec.attr.pad {
            assert!(spec.path.is_empty());
            continue;
        }
        assert_safe_path(&spec.path);
        let lower = spec.path.to_ascii_lowercase();
        for (at, _) in lower.match_indices('/') {
            dirs.insert(lower[..at].to_string());
        }
        assert!(files.insert(lower), "two files on {:?}", spec.path);
    }
    assert!(files.is_disjoint(&dirs), "a file on a directory's path");
    true
}

// ---------------------------------------------------------------------------------------
// magnet
// ---------------------------------------------------------------------------------------

/// `magnet`: parses a magnet link; what parses is written back with `write_uri`, and
/// that canonical link parses to the same info-hash and writes back the same (the
/// canonical form is a fixpoint).
pub fn magnet(data: &[u8]) -> bool {
    let Ok(m) = Magnet::parse(data) else {
        return false;
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
    true
}

// ---------------------------------------------------------------------------------------
// wire_framing
// ---------------------------------------------------------------------------------------

/// `wire_framing`: decodes a peer wire stream. `wire::fuzz_decode` (handshake, then
/// frames under default and tight limits, each re-encoded to its source bytes) must
/// hold, and a plain `wire::decode` loop over the stream must make progress and stop
/// cleanly. Accepted: at least one message decoded.
pub fn wire_framing(data: &[u8]) -> bool {
    assert!(wire::fuzz_decode(data), "wire codec invariant failed");

    let mut rest = data;
    if let Ok(Status::Complete((_, used))) = Handshake::parse(data) {
        assert_eq!(used, wire::HANDSHAKE_LEN);
        rest = &data[used..];
    }
    let limits = wire::Limits::default();
    let mut messages = 0;
    loop {
        match wire::decode(rest, &limits) {
            Ok(Status::Complete((msg, used))) => {
                assert!(used >= 4 && used <= rest.len());
                assert_eq!(msg.encoded_len(), used);
                let mut out = vec![0u8; used];
                assert_eq!(msg.encode(&mut out), Ok(used));
                assert_eq!(out, rest[..used]);
                let _ = (msg.id(), msg.piece_block());
                rest = &rest[used..];
                messages += 1;
            }
            Ok(Status::Partial { needed }) => {
                assert!(needed >= 1);
                break;
            }
            Err(e) => {
                assert!(e.is_peer_fault());
                break;
            }
        }
    }
    messages > 0
}

// ---------------------------------------------------------------------------------------
// krpc
// ---------------------------------------------------------------------------------------

fn krpc_encode(m: &btcore_core::dht::krpc::Message<'_>) -> Vec<u8> {
    use btcore_core::dht::krpc;
    let mut out = vec![0u8; 4 * krpc::MAX_DATAGRAM];
    let n = m
        .encode(&mut out)
        .expect("a parsed message fits four times its limit");
    out.truncate(n);
    out
}

fn krpc_fields(m: &btcore_core::dht::krpc::Message<'_>) -> String {
    use btcore_core::dht::krpc::Body;
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

/// `krpc`: parses a KRPC datagram (BEP 5). Whatever parses must re-encode, and the
/// re-encoding must parse to the same message and be a fixed point
/// (encode(parse(encode(m))) == encode(m)).
pub fn krpc(data: &[u8]) -> bool {
    use btcore_core::dht::krpc;
    let mut tokens = [Token::default(); krpc::TOKENS_NEEDED];
    let Ok(m) = krpc::parse(data, &mut tokens) else {
        return false;
    };
    let once = krpc_encode(&m);
    if once.len() > krpc::MAX_DATAGRAM {
        // Defaults written out (`implied_port`, an empty error message) can push a
        // message at the size limit over it; the parser rightly refuses that.
        return true;
    }
    let mut tokens2 = [Token::default(); krpc::TOKENS_NEEDED];
    let m2 = krpc::parse(&once, &mut tokens2).expect("our encoding parses");
    assert_eq!(krpc_fields(&m), krpc_fields(&m2));
    assert_eq!(krpc_encode(&m2), once);
    true
}

// ---------------------------------------------------------------------------------------
// pex
// ---------------------------------------------------------------------------------------

/// `pex`: parses a BEP 11 `ut_pex` payload. Never more than 50 addresses per list;
/// whatever parses must re-encode to a payload that parses to the same addresses.
pub fn pex(data: &[u8]) -> bool {
    use btcore_core::pex::{write_pex, PexMessage, MAX_PEERS_PER_MESSAGE};
    let Ok(m) = PexMessage::parse(data) else {
        return false;
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
    true
}

// ---------------------------------------------------------------------------------------
// lsd
// ---------------------------------------------------------------------------------------

/// `lsd`: parses a BEP 14 local service discovery datagram; whatever parses must write
/// back and parse to the same port and hashes.
pub fn lsd(data: &[u8]) -> bool {
    use btcore_core::lsd::{parse, write_announce, MAX_DATAGRAM};
    let Ok(a) = parse(data) else {
        return false;
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
    true
}

// ---------------------------------------------------------------------------------------
// mse
// ---------------------------------------------------------------------------------------

/// `mse`: drives an MSE/PE handshake with hostile bytes. The first byte picks the case
/// and the chunk size: a responder or an initiator fed `data` directly, or a real
/// exchange whose bytes one way (initiator to responder, or back) are XORed with `data`
/// past the public key, so the fuzzer reaches the encrypted fields (provide, select,
/// pad lengths, IA length). Must never panic, never consume more than it is given, and
/// must fail (not wait forever) once more bytes than any valid handshake has arrived;
/// when only the initiator's bytes were corrupted and the exchange still completes,
/// both sides agree on the method.
pub fn mse(data: &[u8]) -> bool {
    use btcore_core::ids::InfoHash;
    use btcore_core::mse::{req2_hash, Handshake, CRYPTO_PLAINTEXT, CRYPTO_RC4};
    let Some((&sel, rest)) = data.split_first() else {
        return false;
    };
    let chunk = usize::from(sel >> 2).max(1);
    let ih = InfoHash([7; 20]);
    let mut known = |h: &[u8; 20]| (*h == req2_hash(&ih)).then_some(ih);
    let both = CRYPTO_PLAINTEXT | CRYPTO_RC4;
    match sel & 3 {
        0 | 1 => {
            let mut h = if sel & 3 == 0 {
                Handshake::responder(both, true, [3; 20], 1)
            } else {
                Handshake::initiator(ih, both, [3; 20], 1)
            };
            let mut out = [0u8; 2048];
            let mut fed = 0;
            for c in rest.chunks(chunk) {
                h.poll_transmit(&mut out);
                match h.handle_recv(c, &mut known) {
                    Ok(n) => {
                        assert!(n <= c.len());
                        fed += n;
                        if n < c.len() {
                            assert!(h.is_done());
                            break;
                        }
                    }
                    Err(_) => return false,
                }
            }
            // 96 + 532 + 20 + 14 + 512 + 2 bytes bound a responder; 96 + 520 + 6 +
            // 512 an initiator: past that, an unfinished handshake is a bug.
            assert!(h.is_done() || fed <= 96 + 532 + 20 + 14 + 512 + 2);
            h.is_done()
        }
        corrupt => {
            // 2: the initiator's bytes to the responder are corrupted past its key;
            // 3: the responder's bytes to the initiator (step 4: select, PadD).
            let mut a = Handshake::initiator(ih, both, [5; 20], 2);
            let mut b = Handshake::responder(both, sel & 0x80 != 0, [6; 20], 3);
            let mut buf = [0u8; 2048];
            let mut pos = [0usize; 2];
            let mut flip = |dir: usize, bytes: &mut [u8]| {
                if corrupt == 2 + dir as u8 {
                    for (i, x) in bytes.iter_mut().enumerate() {
                        if pos[dir] + i >= 96 {
                            *x ^= rest.get(pos[dir] + i - 96).copied().unwrap_or(0);
                        }
                    }
                }
                pos[dir] += bytes.len();
            };
            for _ in 0..4096 {
                let n = a.poll_transmit(&mut buf[..chunk.min(2048)]);
                flip(0, &mut buf[..n]);
                if b.handle_recv(&buf[..n], &mut known).is_err() {
                    return false;
                }
                let n = b.poll_transmit(&mut buf[..chunk.min(2048)]);
                flip(1, &mut buf[..n]);
                if a.handle_recv(&buf[..n], &mut |_| None).is_err() {
                    return false;
                }
                if a.is_done() && b.is_done() && !a.wants_transmit() && !b.wants_transmit() {
                    let (ma, _) = a.finish().expect("done");
                    let (mb, _) = b.finish().expect("done");
                    // The responder decides and its answer arrives intact in case 2;
                    // in case 3 a corrupted answer may name another offered method.
                    if corrupt == 2 {
                        assert_eq!(ma, mb);
                    }
                    return true;
                }
            }
            false
        }
    }
}

// ---------------------------------------------------------------------------------------
// session
// ---------------------------------------------------------------------------------------

/// Peer slots the `session` input speaks for.
const SESSION_PEERS: u8 = 6;

/// The torrents of the `session` check: one seeded (8 pieces of 16 KiB of
/// pseudo-random bytes) and one downloaded (8 pieces of zeros, so blocks of zeros from
/// the input verify), built once.
fn session_torrents() -> &'static [(Vec<u8>, Vec<u8>); 2] {
    static T: std::sync::OnceLock<[(Vec<u8>, Vec<u8>); 2]> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let content = crate::sim::content(8 * 16_384, 5);
        let seeded = (crate::sim::make_torrent(&content, 16_384), content);
        [seeded, crate::scripted::zero_torrent(8, 16_384)]
    })
}

/// The settings of the `session` check: small caps, so that inputs reach them.
fn session_config() -> btcore_core::session::SessionConfig {
    use btcore_core::session::SessionConfig;
    let mut c = SessionConfig::new(crate::scripted::peer_id(0));
    c.max_connections = 4;
    c.max_peers_per_torrent = 3;
    c.max_peers_per_ip = 2;
    c.max_metadata_requests = 2;
    c.max_reads_per_peer = 2;
    c.peer.max_send_buffer = 48 * 1024;
    c.peer.send_allowance = 4 * 1024;
    c.peer.max_peer_requests = 16;
    c
}

/// The next byte of `b` (0 past its end).
fn take_byte(b: &mut &[u8]) -> u8 {
    match b.split_first() {
        Some((&x, rest)) => {
            *b = rest;
            x
        }
        None => 0,
    }
}

/// The next `n` bytes of `b` (fewer at its end).
fn take_bytes<'a>(b: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (a, rest) = b.split_at(n.min(b.len()));
    *b = rest;
    a
}

/// One structured message from `b` (a kind, then its fields).
fn session_message(b: &mut &[u8], ih: &[btcore_core::ids::InfoHash; 3]) -> Vec<u8> {
    use crate::scripted::frames;
    use btcore_core::ids::{BlockRef, PieceIndex};
    use btcore_core::wire::Message;
    let mut next = || take_byte(b);
    let kind = next();
    let piece = PieceIndex(u32::from(next() % 9));
    let block = BlockRef {
        piece,
        offset: u32::from(next() % 2) * 16_384,
        len: 16_384,
    };
    match kind % 20 {
        0 => frames::message(&Message::Interested),
        1 => frames::message(&Message::NotInterested),
        2 => frames::message(&Message::Unchoke),
        3 => frames::message(&Message::Choke),
        4 => frames::message(&Message::Have(piece)),
        5 => frames::message(&Message::Bitfield(&[next()])),
        6 => frames::request(block),
        7 => frames::message(&Message::Cancel(block)),
        8 => frames::message(&Message::Piece {
            piece: block.piece,
            offset: block.offset,
            data: &[0u8; 16_384],
        }),
        9 => frames::ext_handshake(next() % 4),
        10 => frames::metadata_request(2, u32::from(next() % 3)),
        11 => {
            // A metadata piece of some size, for a magnet link.
            let mut out = [0u8; 64 + 1024];
            let data = [next(); 1024];
            let m = btcore_core::ext::MetadataMsg::Data {
                piece: u32::from(next() % 2),
                total_size: u32::from(next()) * 64 + 1,
                data: &data,
            };
            let n = m.write(&mut out).unwrap_or(0);
            frames::message(&Message::Extended {
                id: 2,
                payload: &out[..n],
            })
        }
        12 => frames::message(&Message::HaveAll),
        13 => frames::message(&Message::HaveNone),
        14 => frames::message(&Message::Reject(block)),
        15 => frames::message(&Message::AllowedFast(piece)),
        16 => frames::message(&Message::KeepAlive),
        17 => frames::message(&Message::Suggest(piece)),
        18 => frames::message(&Message::Port(6881)),
        _ => frames::handshake(ih[usize::from(next() % 3)], crate::scripted::peer_id(1)),
    }
}

/// `session`: a session with a seeded torrent, a downloaded one and a magnet link,
/// fed by six peers from three addresses. The input is a series of steps, each a byte
/// naming the peer (low 3 bits) and what it does (high 5 bits), then its operands:
/// raw bytes, a handshake, a structured message, a flood of one message, reading what
/// is queued for it, disconnecting or reconnecting, or time passing. Disk work is
/// answered at once. After every step: the connections within `max_connections`, per
/// torrent and per address; every send queue within its cap, which is within the
/// configured ones; every partial message within one frame. Accepted: some peer
/// completed its handshake.
pub fn session(data: &[u8]) -> bool {
    use crate::scripted::{frames, info_hash_of, peer_id, Host};
    use btcore_core::ids::InfoHash;
    use btcore_core::session::ConnId;
    use btcore_core::time::Duration;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    let config = session_config();
    let torrents = session_torrents();
    let mut host = Host::new(config.clone(), 1);
    let mut tids = Vec::new();
    for (i, (file, content)) in torrents.iter().enumerate() {
        tids.push(host.add_torrent(file, content, 16_384, i == 0));
    }
    let magnet = InfoHash([0x5a; 20]);
    tids.push(host.add_magnet(magnet));
    let ih = [
        info_hash_of(&torrents[0].0),
        info_hash_of(&torrents[1].0),
        magnet,
    ];
    let frame_cap = config.peer.wire.max_frame_len() as usize;
    // Our own bitfield: 8 pieces.
    let queue_cap = config.peer.max_send_buffer + config.peer.send_allowance + 1 + 5;
    let mut slots: [Option<ConnId>; SESSION_PEERS as usize] = [None; SESSION_PEERS as usize];
    let mut port = 40_000u16;
    let mut accepted = false;
    let mut rest = data;
    let mut steps = 0;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        steps += 1;
        if steps > 1024 {
            break;
        }
        let slot = usize::from((op & 7) % SESSION_PEERS);
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, (slot % 3) as u8 + 1));
        let mut conn = |host: &mut Host, slot: &mut Option<ConnId>, fresh: bool| -> ConnId {
            match *slot {
                Some(c) if !fresh && host.is_open(c) => c,
                _ => {
                    port = port.wrapping_add(1);
                    let c = host.incoming(SocketAddr::new(ip, port));
                    *slot = Some(c);
                    c
                }
            }
        };
        match op >> 3 {
            0..=9 => {
                let len = usize::from(take_byte(&mut rest));
                let bytes = take_bytes(&mut rest, len).to_vec();
                let c = conn(&mut host, &mut slots[slot], false);
                host.recv(c, &bytes);
            }
            10 | 11 => {
                let which = usize::from(take_byte(&mut rest) % 3);
                let id = peer_id(u64::from(take_byte(&mut rest) % 8));
                let c = conn(&mut host, &mut slots[slot], false);
                host.recv(c, &frames::handshake(ih[which], id));
            }
            12..=19 => {
                let m = session_message(&mut rest, &ih);
                let c = conn(&mut host, &mut slots[slot], false);
                host.recv(c, &m);
            }
            20..=23 => {
                let kib = usize::from(take_byte(&mut rest));
                if let Some(c) = slots[slot] {
                    let max = if kib == 0 { usize::MAX } else { kib * 1024 };
                    host.read_from(c, max);
                }
            }
            24 | 25 => {
                let t = u64::from(take_byte(&mut rest));
                host.advance(Duration::from_millis(t * 100));
            }
            26 => {
                if let Some(c) = slots[slot].take() {
                    host.disconnect(c);
                }
            }
            27 => {
                if let Some(c) = slots[slot].take() {
                    host.disconnect(c);
                }
                conn(&mut host, &mut slots[slot], true);
            }
            _ => {
                // A flood: one message, many times over, in one read of at most
                // 32 KiB (past the send queue's cap of the check's settings).
                let n = usize::from(take_byte(&mut rest)) + 1;
                let m = session_message(&mut rest, &ih);
                let len = (m.len() * n * 8).min(32 * 1024);
                let bytes: Vec<u8> = m.iter().copied().cycle().take(len).collect();
                let c = conn(&mut host, &mut slots[slot], false);
                host.recv(c, &bytes);
            }
        }

        // The caps hold after every step.
        let s = &host.session;
        assert!(s.num_connections() <= config.max_connections);
        for &id in &tids {
            let peers = s.peers(id);
            assert!(peers.len() <= config.max_peers_per_torrent);
            for p in &peers {
                let same = peers.iter().filter(|q| q.addr.ip() == p.addr.ip()).count();
                assert!(same <= config.max_peers_per_ip, "{same} from {}", p.addr);
            }
            accepted |= peers.iter().any(|p| p.established);
        }
        for c in slots.iter().flatten() {
            if let Some(b) = s.conn_buffers(*c) {
                assert!(b.send_queued <= b.send_cap, "{b:?}");
                assert!(b.send_cap <= queue_cap, "{b:?}");
                assert!(b.recv_buffered <= frame_cap, "{b:?}");
            }
        }
    }
    accepted
}
