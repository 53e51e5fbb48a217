//! The checks behind the cargo-fuzz targets in `fuzz/fuzz_targets/`: each target is a
//! one-line call to its function here, and `tests/tests/fuzz_seeds.rs` replays the
//! committed seeds (`fuzz/corpus/<target>/`) through the same functions on stable.
//!
//! Each check panics when an invariant fails and returns whether the parser under test
//! accepted the input (rejection is fine).

use btcore_core::bencode::{self, decode_vec, encode_value, Document, Encoder, Kind, Token, Value};
use btcore_core::hash::{sha1, sha256};
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
    if m.is_v2_only() {
        // The swarm knows a v2-only torrent by its truncated v2 info-hash.
        assert_eq!(m.info_hash().0[..], sha256(m.info_bytes())[..20]);
        assert!(m.piece_hash(PieceIndex(0)).is_none());
    } else {
        assert_eq!(m.info_hash().0, sha1(m.info_bytes()));
        assert!(m.piece_hash(PieceIndex(0)).is_some());
        assert!(m.piece_hash(PieceIndex(m.num_pieces() - 1)).is_some());
    }
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
    // A single file (in v2, followed by its implicit pad).
    assert!(m.is_multi_file() || m.files().filter(|f| !f.attr.pad).count() == 1);

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

/// `metainfo_v2`: what the v2 parser promises of a torrent it accepts. The v2
/// info-hash is the SHA-256 of the info bytes; the file tree's files lie end to end,
/// each non-empty one starting on a piece boundary, and add up to the total (v2-only)
/// or sit where the v1 files are (hybrid); a `pieces root` is there exactly for a
/// non-empty regular file; every piece layer has one hash per piece of its file and
/// hashes up to its root. The `metainfo` checks run too.
pub fn metainfo_v2(data: &[u8]) -> bool {
    use btcore_core::merkle;
    if !metainfo(data) {
        return false;
    }
    let mut tokens = Vec::new();
    let m = Metainfo::parse_vec(data, &mut tokens, &metainfo::Limits::default())
        .expect("parsed by the metainfo check");
    let Some(h2) = m.info_hash_v2() else {
        assert!(m.tree_files().is_none() && !m.is_v2_only() && !m.is_hybrid());
        return true;
    };
    assert_eq!(h2, sha256(m.info_bytes()));
    assert_eq!(
        m.info_hash_v2_truncated().map(|h| h.0[..] == h2[..20]),
        Some(true)
    );
    assert!(m.is_v2_only() != m.is_hybrid());
    let pl = u64::from(m.piece_length());
    assert!(pl.is_power_of_two() && pl >= 16 * 1024);
    let mut offset = 0u64;
    let mut with_layer = 0usize;
    let v1: Vec<_> = m
        .files()
        .filter(|f| !f.attr.pad)
        .map(|f| (f.offset, f.length))
        .collect();
    let mut real = Vec::new();
    for f in m.tree_files().expect("v2 files") {
        assert_eq!(f.offset, offset);
        offset += f.length;
        if f.attr.pad {
            assert!(f.length > 0 && f.length < pl && f.pieces_root().is_none());
            continue;
        }
        real.push((f.offset, f.length));
        assert_eq!(f.offset % pl, 0, "v2 files start on a piece boundary");
        assert_eq!(
            f.pieces_root().is_some(),
            f.length > 0,
            "a root exactly for non-empty files"
        );
        if let Some(root) = f.pieces_root() {
            if let Some(layer) = m.piece_layer(root).filter(|_| f.length > pl) {
                // (A file of one piece may claim the root of a larger one: a lie only
                // its data can reveal. It has no layer of its own.)
                assert!(merkle::verify_layer(
                    layer,
                    m.piece_length(),
                    f.length,
                    root
                ));
                with_layer += 1;
            }
        }
    }
    assert!(offset % pl == 0);
    if m.is_v2_only() {
        assert_eq!(offset, m.total_size());
        assert_eq!(m.files().count(), m.tree_files().expect("v2").count());
    } else {
        // Empty files may sit anywhere in v1; every other file is where v2 puts it.
        let nonempty = |v: &[(u64, u64)]| -> Vec<(u64, u64)> {
            v.iter().copied().filter(|f| f.1 > 0).collect()
        };
        assert_eq!(nonempty(&v1), nonempty(&real));
    }
    // Every layer belongs to a file larger than a piece.
    assert!(m.num_piece_layers() <= with_layer);
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

/// Parses a BEP 55 `ut_holepunch` payload; whatever parses must write back to a
/// payload that parses to the same message (checked inside `fuzz_parse`).
pub fn holepunch(data: &[u8]) -> bool {
    btcore_core::holepunch::fuzz_parse(data) > 0
}

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
// portmap
// ---------------------------------------------------------------------------------------

/// `portmap`: decodes arbitrary bytes as a NAT-PMP or PCP response from the gateway,
/// then hands them to port mapping clients in both protocols, as an answer to their
/// first requests and again after a grant. Must never panic; a client never takes a
/// grant of port 0 or lifetime 0, and a shutdown sends one deletion per mapping.
pub fn portmap(data: &[u8]) -> bool {
    use btcore_core::portmap::wire::{decode_response, MAX_REQUEST, SERVER_PORT};
    use btcore_core::portmap::{MapperConfig, PortMapper, Version};
    use btcore_core::time::Instant;
    use std::net::{Ipv4Addr, SocketAddr};
    let ok = decode_response(data).is_ok();
    let gw = Ipv4Addr::new(10, 0, 0, 1);
    let from = SocketAddr::from((gw, SERVER_PORT));
    for start_with in [Version::Pcp, Version::NatPmp] {
        let mut m = PortMapper::new(
            MapperConfig {
                gateway: gw,
                client: Ipv4Addr::new(10, 0, 0, 2),
                tcp_port: Some(6881),
                udp_port: Some(6881),
                lifetime: 7200,
                start_with,
            },
            1,
        );
        let mut buf = [0u8; MAX_REQUEST];
        let now = Instant::from_millis(1);
        // A PCP answer carries its request's nonce: put it in, so the fuzzer reaches
        // the grants (the nonces of the TCP and UDP requests).
        let mut nonces = Vec::new();
        while let Some(n) = m.poll_transmit(now, &mut buf) {
            if n == 60 {
                nonces.push((buf[36], buf[24..36].to_vec()));
            }
        }
        let mut data = data.to_vec();
        if data.len() >= 60 && data[0] == 2 {
            if let Some((_, nonce)) = nonces.iter().find(|(p, _)| *p == data[36]) {
                data[24..36].copy_from_slice(nonce);
            }
        }
        let data = &data[..];
        m.handle_datagram(now, from, data);
        // Split the input: the same bytes as a second answer, later.
        let later = Instant::from_millis(5000);
        while m.poll_transmit(later, &mut buf).is_some() {}
        m.handle_datagram(later, from, data);
        while m.poll_event().is_some() {}
        for s in m.mappings() {
            assert_ne!(s.external_port, Some(0));
            if s.external_port.is_some() {
                assert!(s.lifetime > 0 && s.expires.is_some());
            }
        }
        m.shutdown(later);
        let mut sends = 0;
        while m.poll_transmit(later, &mut buf).is_some() {
            sends += 1;
            assert!(sends <= 3, "one deletion per mapping at most");
        }
    }
    ok
}

// ---------------------------------------------------------------------------------------
// upnp
// ---------------------------------------------------------------------------------------

/// `upnp`: UPnP IGD's parsers and client with hostile bytes. The first byte picks
/// where the rest goes: an SSDP answer; the HTTP response carrying the device
/// description; the HTTP response to every SOAP action (after miniupnpd's real
/// description); or, wrapped in a valid HTTP head so the fuzzer reaches the XML, the
/// description's or the actions' body. Must never panic; what the client writes
/// always fits [`btcore_core::portmap::igd::MAX_REQUEST`] and goes to the gateway; a
/// mapping shown as granted has a non-zero port; a shutdown deletes each mapping at
/// most once and finishes.
pub fn upnp(data: &[u8]) -> bool {
    use btcore_core::portmap::igd::{HttpError, MAX_REQUEST};
    use btcore_core::portmap::upnp::{
        http_response_complete, parse_description, parse_http_response, parse_soap, parse_ssdp,
        Action,
    };
    use btcore_core::portmap::{Protocol, UpnpConfig, UpnpMapper, UpnpTransmit};
    use btcore_core::time::Instant;
    use std::net::{Ipv4Addr, SocketAddr};
    const SSDP: &[u8] = include_bytes!("../../core/src/portmap/testdata/miniupnpd_ssdp1.http");
    const DESC: &[u8] = include_bytes!("../../core/src/portmap/testdata/miniupnpd_desc.http");
    let Some((&sel, rest)) = data.split_first() else {
        return false;
    };
    // The parsers alone.
    let mut ok = parse_ssdp(rest).is_ok();
    let _ = http_response_complete(rest);
    let mut b = rest.to_vec();
    if let Ok((status, r)) = parse_http_response(&mut b) {
        assert!(r.end <= b.len());
        let body = &b[r];
        ok |= parse_description(body).is_ok();
        for a in [
            Action::GetExternalIpAddress,
            Action::DeletePortMapping {
                protocol: Protocol::Udp,
                external_port: 1,
            },
        ] {
            ok |= parse_soap(status, body, &a).is_ok();
        }
    }
    ok |= parse_description(rest).is_ok();
    // The client.
    let wrapped = {
        let mut w = format!(
            "HTTP/1.1 {} OK\r\nContent-Length: {}\r\n\r\n",
            if sel & 4 == 0 { 200 } else { 500 },
            rest.len()
        )
        .into_bytes();
        w.extend_from_slice(rest);
        w
    };
    let gw = Ipv4Addr::new(10, 78, 1, 1);
    let mut m = UpnpMapper::new(
        UpnpConfig {
            gateway: gw,
            client: Ipv4Addr::new(10, 78, 1, 2),
            tcp_port: Some(6881),
            udp_port: Some(6881),
            lease: 120,
        },
        u64::from(sel),
    );
    let from = SocketAddr::from((gw, 1900));
    let mut out = vec![0u8; MAX_REQUEST];
    // The first HTTP request is the description's, the others SOAP actions'.
    let mut requests = 0u32;
    let mut drive = |m: &mut UpnpMapper, now: Instant| {
        let mut n = 0;
        while let Some(t) = m.poll_transmit(now, &mut out) {
            n += 1;
            assert!(n < 64, "a bounded number of sends per turn");
            match t {
                UpnpTransmit::Search { len } => assert!(len <= MAX_REQUEST),
                UpnpTransmit::Http { id, to, len } => {
                    assert!(len <= MAX_REQUEST);
                    assert_eq!(*to.ip(), gw, "requests go to the gateway only");
                    requests += 1;
                    let first = requests == 1;
                    let resp: &[u8] = match sel & 3 {
                        0 | 2 if first => DESC,
                        3 if first && sel & 16 == 0 => DESC,
                        0..=2 => rest,
                        _ => &wrapped,
                    };
                    if sel & 8 != 0 && !first {
                        m.handle_http(now, id, Err(HttpError::Timeout));
                    } else {
                        let mut r = resp.to_vec();
                        m.handle_http(now, id, Ok(&mut r));
                    }
                }
            }
        }
    };
    drive(&mut m, Instant::from_millis(0));
    m.handle_ssdp(
        Instant::from_millis(1),
        from,
        if sel & 3 == 0 { rest } else { SSDP },
    );
    for t in [1, 2, 3, 70_000, 140_000] {
        drive(&mut m, Instant::from_millis(t));
        while m.poll_event().is_some() {}
        for s in m.mappings() {
            assert_ne!(s.external_port, Some(0));
        }
    }
    let end = Instant::from_millis(200_000);
    m.shutdown(end);
    drive(&mut m, end);
    drive(&mut m, Instant::from_millis(210_000));
    assert!(m.is_finished(), "a shutdown finishes");
    ok
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
// dht_node
// ---------------------------------------------------------------------------------------

/// The fixed remote addresses of `dht_node`: two ports of one IP, a neighbour in its
/// /24, others, IPv6, loopback and the first one written as IPv4-mapped IPv6.
fn dht_sources() -> [std::net::SocketAddr; 8] {
    [
        "192.0.2.1:6881",
        "192.0.2.1:6882",
        "192.0.2.2:6881",
        "198.51.100.7:1000",
        "203.0.113.9:6881",
        "[2001:db8::1]:6881",
        "127.0.0.1:7000",
        "[::ffff:192.0.2.1]:6883",
    ]
    .map(|s| s.parse().expect("address"))
}

/// What the `dht_node` harness remembers of the node's output, to answer it.
#[derive(Default)]
struct DhtHarness {
    /// Addresses the node sent queries to lately, newest last (source 8 is the
    /// newest, 9 the one before, ...).
    recent: Vec<std::net::SocketAddr>,
    /// The last query's transaction id per address.
    tids: std::collections::HashMap<std::net::SocketAddr, Vec<u8>>,
    /// The last write token the node gave each address.
    tokens: std::collections::HashMap<std::net::SocketAddr, Vec<u8>>,
    /// Node ids heard of per address (from queries and nodes lists given to the node).
    ids: std::collections::HashMap<std::net::SocketAddr, [u8; 20]>,
    /// The datagram of this step, if it came from a remote party: its source and
    /// length (what the node sends back is held to `max_reply_ratio` times it).
    input: Option<(std::net::SocketAddr, usize)>,
    /// Bytes sent back to sources the node had not confirmed (remote ones).
    unconfirmed_bytes: u64,
    /// Queries answered per rate-limit source (an IPv4 /24, an IPv6 /64).
    answered: std::collections::HashMap<Vec<u8>, u64>,
}

impl DhtHarness {
    fn source(&self, i: u8) -> std::net::SocketAddr {
        let fixed = dht_sources();
        let i = usize::from(i % 16);
        if i < 8 || self.recent.is_empty() {
            fixed[i % 8]
        } else {
            self.recent[self.recent.len() - 1 - (i - 8) % self.recent.len()]
        }
    }

    fn remember_id(&mut self, addr: std::net::SocketAddr, id: [u8; 20]) {
        if self.ids.len() >= 1024 {
            self.ids.clear();
        }
        self.ids.insert(addr, id);
    }

    /// Drains the node's datagrams and events; checks each datagram parses and fits.
    fn drain(&mut self, dht: &mut btcore_core::dht::Dht, now: btcore_core::time::Instant) {
        use btcore_core::dht::krpc::{self, Body};
        use btcore_core::dht::DhtEvent;
        let mut buf = [0u8; krpc::MAX_DATAGRAM];
        // Bytes of answers, and of pings to the source, for this step's datagram.
        let (mut back, mut answers) = (0, 0);
        while let Some((to, n)) = dht.poll_transmit(now, &mut buf) {
            assert!(n <= krpc::MAX_DATAGRAM);
            let mut tokens = [Token::default(); krpc::TOKENS_NEEDED];
            let m = krpc::parse(&buf[..n], &mut tokens).expect("the node's datagrams parse");
            let to_source = self.input.is_some_and(|(src, _)| src == to);
            match m.body {
                Body::Query(q) if to_source && q.method == krpc::Method::Ping => back += n,
                Body::Response(_) | Body::Error(_) => {
                    assert!(to_source, "an answer to {to}, not to the querier");
                    back += n;
                    answers += 1;
                }
                _ => {}
            }
            match m.body {
                Body::Query(_) => {
                    if self.tids.len() >= 1024 {
                        self.tids.clear();
                    }
                    self.tids.insert(to, m.tid.to_vec());
                    self.recent.retain(|a| *a != to);
                    self.recent.push(to);
                    if self.recent.len() > 8 {
                        self.recent.remove(0);
                    }
                }
                Body::Response(r) => {
                    if let Some(t) = r.token {
                        if self.tokens.len() >= 1024 {
                            self.tokens.clear();
                        }
                        self.tokens.insert(to, t.to_vec());
                    }
                    assert!(r.values.len() <= dht.config().max_values_per_response);
                }
                Body::Error(_) => {}
            }
        }
        if let Some((src, len)) = self.input.take() {
            let ip = src.ip().to_canonical();
            if !ip.is_loopback() {
                let cfg = dht.config();
                let most = len * cfg.max_reply_ratio as usize;
                assert!(back <= most, "{back} bytes back for {len} from {src}");
                // Since time 0: the byte budget's three seconds of burst, then its
                // rate; each source's second of burst, then its rate.
                let ms = now.as_millis();
                if !dht.table_of(&src).is_confirmed(&src) {
                    self.unconfirmed_bytes += back as u64;
                    let budget = u64::from(cfg.unconfirmed_reply_bytes_per_sec);
                    assert!(
                        self.unconfirmed_bytes * 1000 <= budget * (3000 + ms),
                        "{} bytes to unconfirmed sources by {ms} ms",
                        self.unconfirmed_bytes
                    );
                }
                if answers > 0 {
                    let key = match ip {
                        std::net::IpAddr::V4(a) => a.octets()[..3].to_vec(),
                        std::net::IpAddr::V6(a) => a.octets()[..8].to_vec(),
                    };
                    let n = self.answered.entry(key).or_insert(0);
                    *n += 1;
                    let rate = u64::from(cfg.max_queries_per_source_per_sec);
                    assert!(
                        *n * 1000 <= rate * (1000 + ms) + 1000,
                        "{n} queries from {src}'s source answered by {ms} ms"
                    );
                }
            }
        }
        let k = dht.table().config().k;
        while let Some(ev) = dht.poll_event() {
            match ev {
                DhtEvent::Peers { peers, .. } => assert!(peers.len() <= krpc::MAX_VALUES),
                // k of each DHT (IPv4, IPv6).
                DhtEvent::LookupDone { closest, .. } => assert!(closest.len() <= 2 * k),
                _ => {}
            }
        }
    }
}

/// The DHT's host of `ip` (an IPv4 address, an IPv6 /64) and subnet (an IPv4 /24,
/// an IPv6 /48), as byte strings.
fn dht_host_and_subnet(ip: std::net::IpAddr) -> (Vec<u8>, Vec<u8>) {
    match ip.to_canonical() {
        std::net::IpAddr::V4(a) => (a.octets().to_vec(), a.octets()[..3].to_vec()),
        std::net::IpAddr::V6(a) => (a.octets()[..8].to_vec(), a.octets()[..6].to_vec()),
    }
}

/// The memory bounds and the anti-Sybil invariants of a DHT node.
fn check_dht(dht: &btcore_core::dht::Dht, now: btcore_core::time::Instant) {
    use std::collections::{HashMap, HashSet};
    let cfg = dht.config();
    let tc = *dht.table().config();
    let s = dht.stats(now);
    assert!(s.buckets >= 1 && s.buckets <= 2 * tc.max_buckets);
    assert!(s.nodes6 <= s.nodes);
    assert!(s.nodes <= s.buckets * tc.k, "{s:?}");
    assert!(s.replacements <= s.buckets * tc.replacements, "{s:?}");
    assert!(s.lookups_running <= cfg.max_lookups);
    assert!(
        s.lookup_candidates <= cfg.max_lookups * (4 * tc.k + cfg.alpha),
        "{s:?}"
    );
    assert!(s.queries_in_flight <= cfg.max_outstanding);
    assert!(s.queued_datagrams <= cfg.max_transmit_queue);
    assert!(s.queued_events <= cfg.max_events);
    let limits = dht.store().limits();
    assert!(s.stored_peers <= limits.total, "{s:?}");
    assert!(s.stored_torrents <= limits.hashes, "{s:?}");
    let mut total = 0;
    let (mut per_host, mut per_subnet) = (HashMap::new(), HashMap::new());
    for (_, peers) in dht.store().iter() {
        let peers: Vec<_> = peers.collect();
        assert!(!peers.is_empty() && peers.len() <= limits.per_hash);
        total += peers.len();
        let mut hosts = HashSet::new();
        for p in &peers {
            let ip = p.ip().to_canonical();
            if !ip.is_loopback() {
                let (host, subnet) = dht_host_and_subnet(ip);
                assert!(
                    hosts.insert(host.clone()),
                    "two peers of {ip}'s host in one torrent"
                );
                *per_host.entry(host).or_insert(0) += 1;
                *per_subnet.entry(subnet).or_insert(0) += 1;
                assert!(dht.store().count_for_ip(ip) <= limits.per_ip);
                assert!(dht.store().count_for_subnet(ip) <= limits.per_subnet);
            }
        }
    }
    assert_eq!(total, s.stored_peers);
    assert!(per_host.values().all(|&n| n <= limits.per_ip));
    assert!(per_subnet.values().all(|&n| n <= limits.per_subnet));
    // The routing tables: only confirmed nodes in buckets, one entry per host (IPv4
    // address, IPv6 /64), one per subnet (IPv4 /24, IPv6 /48) per bucket, loopback
    // exempt; nodes of the table's family only (BEP 32), their ids valid for their
    // address (BEP 42), never ours.
    let mut hosts = HashSet::new();
    for v6 in [false, true] {
        let table = if v6 { dht.table6() } else { dht.table() };
        assert_eq!(table.own_id(), dht.id_of(v6));
        for n in table.nodes().chain(table.replacements()) {
            let fam6 = n.info.addr.ip().to_canonical().is_ipv6();
            assert_eq!(fam6, v6, "{:?} in the wrong table", n.info.addr);
            assert!(btcore_core::dht::bep42::id_matches(
                &n.info.id,
                n.info.addr.ip()
            ));
            assert_ne!(n.info.id, dht.id_of(v6));
        }
    }
    for (nodes, replacements) in dht.table().buckets().chain(dht.table6().buckets()) {
        assert!(nodes.len() <= tc.k && replacements.len() <= tc.replacements);
        assert!(
            nodes.iter().all(|n| n.confirmed()),
            "an unconfirmed node in a bucket"
        );
        let mut subnets = HashSet::new();
        for n in nodes.iter().chain(replacements) {
            let ip = n.info.addr.ip().to_canonical();
            if ip.is_loopback() {
                let octets = match ip {
                    std::net::IpAddr::V4(a) => a.octets().to_vec(),
                    std::net::IpAddr::V6(a) => a.octets().to_vec(),
                };
                assert!(hosts.insert((octets, n.info.addr.port())));
            } else {
                let (host, subnet) = dht_host_and_subnet(ip);
                assert!(hosts.insert((host, 0)), "two entries of {ip}'s host");
                assert!(subnets.insert(subnet), "two entries of {ip}'s subnet");
            }
        }
    }
}

/// Reads a `dht_node` script; bytes past the end read as zero.
struct ByteReader<'a>(&'a [u8]);

impl ByteReader<'_> {
    fn take(&mut self, n: usize) -> Vec<u8> {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        let mut v = a.to_vec();
        v.resize(n, 0);
        v
    }
    fn byte(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u16(&mut self) -> u16 {
        let b = self.take(2);
        u16::from_le_bytes([b[0], b[1]])
    }
}

/// A node id in bucket `bit % 160` of `own`, with `tail` at the end.
fn dht_id_near(own: [u8; 20], bit: u8, tail: [u8; 2]) -> [u8; 20] {
    let mut id = own;
    let bit = usize::from(bit) % 160;
    id[bit / 8] ^= 0x80 >> (bit % 8);
    id[18] ^= tail[0];
    id[19] ^= tail[1];
    id
}

/// `dht_node`: a DHT node (`Dht`) fed a script of steps from several source
/// addresses, its output drained after each, and its memory bounds and anti-Sybil
/// invariants checked after each (`check_dht`). Each step is one byte `op`, then its
/// arguments (missing bytes read as zero):
///
/// - `0x00..=0x5f` a raw datagram from source `op % 16`: length (2 bytes, little
///   endian), bytes;
/// - `0x60..=0x7f` `announce_peer` from source `op % 16` with the last token the node
///   gave it: info-hash byte, port (2 bytes; 0 = implied port);
/// - `0x80..=0x9f` a query from source `op % 16`: method (ping, find_node, get_peers;
///   bit 2 read-only, bits 3-4 `want`, bit 5 an id valid for the source's address
///   under BEP 42), id (bucket bit, 2 tail bytes);
/// - `0xa0..=0xbf` `(op % 32 + 1) * 300` ms pass, timers run;
/// - `0xc0..=0xcf` a command: bootstrap, find_node, get_peers, announce, load_nodes;
/// - `0xd0..=0xff` an answer to the last query sent to source `op % 16`: flags (bit 0
///   a token, bit 1 a wrong id, bit 2 `nodes6`, bit 3 an `ip` naming our address,
///   bits 4-7 values), node count, nodes
///   (26 or 38 bytes each), values (6 bytes each).
///
/// Sources 0 to 7 are fixed (`dht_sources`); 8 to 15 are the addresses the node
/// sent queries to last, newest first. Returns whether the node took in any query or response.
pub fn dht_node(data: &[u8]) -> bool {
    use btcore_core::dht::krpc::{
        self, Body, CompactNodes, Message, Method, Query, Response, Values, Want,
    };
    use btcore_core::dht::{Dht, DhtConfig, NodeId, NodeInfo, StoreLimits};
    use btcore_core::ids::InfoHash;
    use btcore_core::time::{Duration, Instant};

    let own = [0x5a; 20];
    let mut cfg = DhtConfig::new(own, [7; 20]);
    cfg.bootstrap = vec![dht_sources()[4], dht_sources()[5]];
    // Small caps, so a short input reaches them.
    cfg.max_lookups = 4;
    cfg.max_outstanding = 16;
    cfg.max_transmit_queue = 32;
    cfg.max_events = 16;
    cfg.max_queries_per_source_per_sec = 5;
    cfg.rate_limit_slots = 4;
    cfg.unconfirmed_reply_bytes_per_sec = 250;
    cfg.store = StoreLimits {
        per_hash: 4,
        hashes: 4,
        total: 8,
        per_ip: 2,
        per_subnet: 3,
        ..StoreLimits::default()
    };
    let mut now = Instant::from_millis(0);
    let mut dht = Dht::new(cfg, now, 1);
    let mut h = DhtHarness::default();
    let mut r = ByteReader(data);
    let encode = |m: &Message<'_>| -> Vec<u8> {
        let mut out = vec![0u8; krpc::MAX_DATAGRAM];
        let n = m.encode(&mut out).unwrap_or(0);
        out.truncate(n);
        out
    };
    loop {
        let op = r.byte();
        let src = h.source(op);
        match op {
            0x00..=0x5f => {
                let len = usize::from(r.u16());
                let bytes = r.take(len.min(r.0.len()));
                h.input = Some((src, bytes.len()));
                dht.handle_datagram(now, src, &bytes);
            }
            0x60..=0x7f => {
                let hash = NodeId([r.byte(); 20]);
                let port = r.u16();
                let token = h
                    .tokens
                    .get(&src)
                    .cloned()
                    .unwrap_or_else(|| b"none".to_vec());
                let m = Message {
                    tid: b"an",
                    version: None,
                    ip: None,
                    body: Body::Query(Query {
                        id: NodeId([0x11; 20]),
                        method: Method::AnnouncePeer {
                            info_hash: hash,
                            port: port.max(1),
                            implied_port: port == 0,
                            token: &token,
                        },
                        want: Want::default(),
                        read_only: true,
                    }),
                };
                let bytes = encode(&m);
                h.input = Some((src, bytes.len()));
                dht.handle_datagram(now, src, &bytes);
            }
            0x80..=0x9f => {
                let a = r.take(4);
                let mut id = dht_id_near(own, a[1], [a[2], a[3]]);
                if a[0] & 32 != 0 {
                    // BEP 42: an id valid for the source's address.
                    id = btcore_core::dht::bep42::node_id(src.ip(), id).0;
                }
                h.remember_id(src, id);
                let target = NodeId(dht_id_near(own, a[2], [a[3], a[1]]));
                let method = match a[0] % 3 {
                    0 => Method::Ping,
                    1 => Method::FindNode { target },
                    _ => Method::GetPeers { info_hash: target },
                };
                let m = Message {
                    tid: &a[1..3],
                    version: None,
                    ip: None,
                    body: Body::Query(Query {
                        id: NodeId(id),
                        method,
                        want: Want {
                            n4: a[0] & 8 != 0,
                            n6: a[0] & 16 != 0,
                        },
                        read_only: a[0] & 4 != 0,
                    }),
                };
                let bytes = encode(&m);
                h.input = Some((src, bytes.len()));
                dht.handle_datagram(now, src, &bytes);
            }
            0xa0..=0xbf => {
                let end = now + Duration::from_millis(u64::from(op % 32 + 1) * 300);
                while let Some(t) = dht.poll_timeout() {
                    if t > end {
                        break;
                    }
                    now = now.max(t);
                    dht.handle_timeout(now);
                    h.drain(&mut dht, now);
                    check_dht(&dht, now);
                }
                now = end;
            }
            0xc0..=0xcf => {
                let a = r.take(3);
                let target = NodeId(dht_id_near(own, a[0], [a[1], a[2]]));
                match op % 8 {
                    0 => {
                        let _ = dht.bootstrap(now);
                    }
                    1 => {
                        let _ = dht.find_node(now, target);
                    }
                    2 => {
                        let _ = dht.get_peers(now, InfoHash(target.0));
                    }
                    3 | 4 => {
                        let port = u16::from_le_bytes([a[1], a[2]]);
                        let _ = dht.announce(now, InfoHash(target.0), port.max(1), op % 8 == 4);
                    }
                    _ => {
                        let n = usize::from(a[0] % 5);
                        let raw = r.take(n * krpc::NODE4_LEN);
                        let nodes: Vec<NodeInfo> = CompactNodes::v4(&raw)
                            .map(|c| c.iter().collect())
                            .unwrap_or_default();
                        for n in &nodes {
                            h.remember_id(n.addr, n.id.0);
                        }
                        dht.load_nodes(now, &nodes);
                    }
                }
            }
            0xd0..=0xff => {
                let a = r.take(2);
                let (flags, count) = (a[0], usize::from(a[1] % 9));
                let v6 = flags & 4 != 0;
                let entry = if v6 { krpc::NODE6_LEN } else { krpc::NODE4_LEN };
                let raw = r.take(count * entry);
                let values: Vec<std::net::SocketAddr> = r
                    .take(usize::from(flags >> 4) * 6)
                    .chunks_exact(6)
                    .filter_map(krpc::read_compact_addr)
                    .collect();
                let tid = h.tids.get(&src).cloned().unwrap_or_else(|| b"xx".to_vec());
                let id = match h.ids.get(&src) {
                    Some(id) if flags & 2 == 0 => *id,
                    _ => [0x33; 20],
                };
                let nodes = if v6 {
                    CompactNodes::v6(&raw)
                } else {
                    CompactNodes::v4(&raw)
                }
                .unwrap_or_default();
                for n in nodes.iter() {
                    h.remember_id(n.addr, n.id.0);
                }
                // BEP 42 `ip`: how the responder sees us (votes for our address).
                let seen: std::net::SocketAddr = if src.is_ipv4() {
                    ([198, 51, 100, 99], 6881).into()
                } else {
                    "[2001:db8:99::1]:6881".parse().expect("address")
                };
                let m = Message {
                    tid: &tid,
                    version: None,
                    ip: (flags & 8 != 0).then_some(seen),
                    body: Body::Response(Response {
                        id: NodeId(id),
                        nodes: if v6 { CompactNodes::default() } else { nodes },
                        nodes6: if v6 { nodes } else { CompactNodes::default() },
                        values: if values.is_empty() {
                            Values::None
                        } else {
                            Values::Addrs(&values)
                        },
                        token: (flags & 1 != 0).then_some(&b"tok1"[..]),
                    }),
                };
                dht.handle_datagram(now, src, &encode(&m));
            }
        }
        h.drain(&mut dht, now);
        check_dht(&dht, now);
        if r.0.is_empty() {
            break;
        }
    }
    let s = dht.stats(now);
    s.queries_received + s.responses_received > 0
}

// ---------------------------------------------------------------------------------------
// tracker_server
// ---------------------------------------------------------------------------------------

/// The limits of the `tracker_server` check: small, so the fuzzer reaches every cap.
fn tracker_fuzz_limits() -> btcore_host::tracker_server::HttpLimits {
    use btcore_core::time::Duration;
    btcore_host::tracker_server::HttpLimits {
        max_connections: 6,
        max_connections_per_ip: 3,
        max_request: 512,
        max_sync_body: 2048,
        max_body_bytes: 3000,
        max_input_total: 1500,
        max_output: 1024,
        max_output_total: 2500,
        min_age_to_evict: Duration::from_secs(1),
        header_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(5),
        requests_per_turn: 4,
        stats_cache: Duration::from_secs(1),
        max_stats_torrents: 8,
    }
}

/// Bytes of the input, one at a time.
struct Ops<'a>(&'a [u8]);

impl Ops<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, rest) = self.0.split_at(n);
        self.0 = rest;
        a
    }
}

/// `tracker_server`: drives the tracker's request handling as the host does, over
/// several connections from a few addresses and a simulated clock: HTTP bytes through
/// the socket-free connection handling (`tracker_server::service::Service`: framing,
/// turn budgets, backpressure, deadlines, per-address caps, the body budget) and BEP 15
/// datagrams through `Tracker::handle_udp` (with valid connection ids, so announces and
/// scrapes get through). Each input byte picks an operation (open, bytes, a canned
/// request, process, drain output, close, time passes, a datagram); after every step
/// the memory held (connection buffers, cached pages, bodies in flight, swarms and
/// peers) must stay under the bound the limits give. Returns whether anything was
/// answered.
pub fn tracker_server(data: &[u8]) -> bool {
    use btcore_core::ids::{InfoHash, PeerId};
    use btcore_core::rng::Rng;
    use btcore_core::time::{Duration, Instant};
    use btcore_core::tracker::server::{
        encode_sync, sync_auth, Mode, ServerConfig, SyncEntry, Tracker,
    };
    use btcore_core::tracker::udp::{encode_announce, encode_connect, encode_scrape};
    use btcore_core::tracker::{AnnounceRequest, Event};
    use btcore_host::tracker_server::service::{ConnId, Service};
    use std::net::{IpAddr, SocketAddr};

    let mut ops = Ops(data);
    let Some(mode) = ops.byte() else {
        return false;
    };
    let limits = tracker_fuzz_limits();
    let config = ServerConfig {
        mode: if mode & 1 == 0 {
            Mode::Open
        } else {
            Mode::AllowList
        },
        peer_timeout: Duration::from_secs(10),
        max_swarms: 16,
        max_peers_per_swarm: 8,
        max_peers: 40,
        max_peers_per_ip: 3,
        empty_swarm_ttl: Duration::from_secs(5),
        sweep_every: Duration::from_secs(1),
        sync: mode & 2 != 0,
        max_sync_queue: 64,
        max_sync_batch: 16,
        peer_ids: mode & 4 != 0,
        ..ServerConfig::default()
    };
    let (max_swarms, max_peers, per_swarm) = (16, 40, 8);
    let mut tracker = Tracker::new(config, [7; 32]);
    tracker.register(InfoHash([1; 20]));
    let mut service = Service::new(
        limits.clone(),
        tracker,
        Rng::new(u64::from(mode)),
        Some("adm".into()),
        Some("k".into()),
    );
    let ips: [IpAddr; 7] = [
        [10, 0, 0, 1].into(),
        [10, 0, 0, 2].into(),
        [10, 0, 0, 3].into(),
        [192, 168, 1, 1].into(),
        "2001:db8::1".parse().expect("v6"),
        "2001:db8::2".parse().expect("v6"),
        "2001:db8:0:1::1".parse().expect("v6"),
    ];
    let hashes = |i: u8| InfoHash([i % 4 + 1; 20]);
    // Memory bound: per connection an input buffer under twice the largest request
    // (before compaction) and an output under twice the cap plus one answer, each
    // allocated at most twice over; plus four cached pages.
    let max_answer = 4096;
    let bound = limits.max_connections
        * (4 * (limits.max_request + limits.max_sync_body) + 4 * (limits.max_output + max_answer))
        + 4 * 4096;
    let mut now = Instant::ZERO;
    let mut conns: Vec<ConnId> = Vec::new();
    let mut expired = Vec::new();
    let mut answered = false;
    let mut reply = Vec::new();
    let mut req = Vec::new();
    while let Some(op) = ops.byte() {
        let arg = ops.byte().unwrap_or(0);
        let pick = |conns: &[ConnId]| conns.get(usize::from(arg) % conns.len().max(1)).copied();
        match op % 9 {
            0 => {
                let peer =
                    SocketAddr::new(ips[usize::from(arg) % ips.len()], 40_000 + u16::from(op));
                let o = service.open(now, peer);
                if let Some(e) = o.evict {
                    conns.retain(|&c| c != e);
                }
                conns.push(o.id);
            }
            1 | 2 => {
                // Raw bytes, or a canned request that the fuzzer then mangles less.
                let Some(id) = pick(&conns) else { continue };
                req.clear();
                if op % 9 == 1 {
                    let n = usize::from(ops.byte().unwrap_or(0));
                    req.extend_from_slice(ops.bytes(n));
                } else {
                    let b = ops.byte().unwrap_or(0);
                    let h = hashes(b);
                    let hex = String::from_utf8_lossy(&h.to_hex()).into_owned();
                    match arg % 8 {
                        0 => req.extend_from_slice(
                            format!(
                                "GET /announce?info_hash={hex}&peer_id=-FZ0001-00000000000{}&port={}&left={}&event={} HTTP/1.1\r\n\r\n",
                                b % 10,
                                1 + u16::from(b),
                                b & 1,
                                ["started", "completed", "stopped", ""][usize::from(b >> 6)]
                            )
                            .as_bytes(),
                        ),
                        1 => req.extend_from_slice(
                            format!("GET /scrape?info_hash={hex} HTTP/1.1\r\n\r\n").as_bytes(),
                        ),
                        2 => req.extend_from_slice(b"GET /stats.json HTTP/1.1\r\n\r\n"),
                        3 => req.extend_from_slice(
                            b"GET /?key=adm HTTP/1.1\r\nConnection: close\r\n\r\n",
                        ),
                        4 => {
                            let mut r = [0u8; 20];
                            r[0] = b;
                            let hex = String::from_utf8_lossy(&InfoHash(r).to_hex()).into_owned();
                            req.extend_from_slice(
                                format!("GET /admin/register?info_hash={hex}&key=adm HTTP/1.1\r\n\r\n")
                                    .as_bytes(),
                            );
                        }
                        5 => {
                            let entries: Vec<SyncEntry> = (0..b % 20)
                                .map(|i| SyncEntry {
                                    info_hash: hashes(i),
                                    addr: SocketAddr::new(ips[usize::from(i) % ips.len()], 1 + u16::from(i)),
                                    seed: i & 1 == 0,
                                    ttl_secs: u32::from(i),
                                })
                                .collect();
                            let mut batch = Vec::new();
                            encode_sync(&entries, b"k", &mut batch);
                            let auth = sync_auth(b"k", batch.len() as u64);
                            req.extend_from_slice(
                                format!(
                                    "POST /sync HTTP/1.1\r\nContent-Length: {}\r\nX-Btcore-Sync-Auth: {}\r\n\r\n",
                                    batch.len(),
                                    String::from_utf8_lossy(&auth)
                                )
                                .as_bytes(),
                            );
                            req.extend_from_slice(&batch);
                        }
                        6 => {
                            let len = u64::from(b) * 16;
                            let auth = sync_auth(b"k", len);
                            req.extend_from_slice(
                                format!(
                                    "POST /sync HTTP/1.1\r\nContent-Length: {len}\r\nX-Btcore-Sync-Auth: {}\r\n\r\n",
                                    String::from_utf8_lossy(&auth)
                                )
                                .as_bytes(),
                            );
                        }
                        _ => req.extend_from_slice(
                            b"POST /sync HTTP/1.1\r\nContent-Length: 4\r\nX-Btcore-Sync-Auth: 00\r\n\r\nd1:e",
                        ),
                    }
                }
                // As the host reads: never more than the service takes.
                let mut rest = &req[..];
                while !rest.is_empty() {
                    let cap = service.read_capacity(id);
                    if cap == 0 {
                        break;
                    }
                    let (now_part, later) = rest.split_at(cap.min(rest.len()));
                    service.received(now, id, now_part);
                    rest = later;
                }
            }
            3 => {
                let Some(id) = pick(&conns) else { continue };
                let before = service.counters().requests;
                service.process(now, id);
                answered |= service.counters().requests > before;
            }
            4 => {
                let Some(id) = pick(&conns) else { continue };
                let n = service
                    .output(id)
                    .len()
                    .min(usize::from(ops.byte().unwrap_or(255)) * 64);
                service.wrote(now, id, n);
                if service.finished(id) {
                    service.close(id);
                    conns.retain(|&c| c != id);
                }
            }
            5 => {
                let Some(id) = pick(&conns) else { continue };
                service.close(id);
                conns.retain(|&c| c != id);
            }
            6 => {
                now = now + Duration::from_millis(u64::from(arg) * 50);
                service.tracker_mut().handle_timeout(now);
                service.handle_timeout(now, &mut expired);
                conns.retain(|c| !expired.contains(c));
                expired.clear();
            }
            _ => {
                let from = SocketAddr::new(ips[usize::from(arg) % ips.len()], 6881);
                let b = ops.byte().unwrap_or(0);
                let cid = service.tracker().connection_id(now, from);
                let mut pkt = [0u8; 2048];
                let n = match op % 9 {
                    7 if b & 1 == 0 => encode_connect(u32::from(b), &mut pkt).unwrap_or(0),
                    7 => {
                        let mut a = AnnounceRequest::new(hashes(b), PeerId([b; 20]), u16::from(b));
                        a.left = u64::from(b & 2);
                        a.event = [
                            None,
                            Some(Event::Started),
                            Some(Event::Completed),
                            Some(Event::Stopped),
                        ][usize::from(b >> 6)];
                        a.numwant = Some(u32::from(b));
                        encode_announce(cid, u32::from(b), &a, &mut pkt).unwrap_or(0)
                    }
                    _ if b & 1 == 0 => {
                        let hs: Vec<InfoHash> = (0..b % 5).map(hashes).collect();
                        encode_scrape(cid, 9, &hs, &mut pkt).unwrap_or(0)
                    }
                    _ => {
                        let raw = ops.bytes(usize::from(b % 128));
                        pkt[..raw.len()].copy_from_slice(raw);
                        raw.len()
                    }
                };
                answered |= service.handle_udp(now, &pkt[..n], from, &mut reply);
                assert!(
                    reply.len() <= 20 + 6 * 200 + 12 * 74 + 64,
                    "UDP reply of {}",
                    reply.len()
                );
            }
        }
        // The bounds, after every step.
        assert!(service.connections() <= limits.max_connections);
        for ip in ips {
            assert!(service.connections_from(ip) <= limits.max_connections_per_ip);
        }
        assert!(service.memory() <= bound, "{} bytes held", service.memory());
        assert!(service.bodies_in_flight() <= limits.max_body_bytes);
        let c = service.counters();
        assert!(
            c.peak_output <= limits.max_output + max_answer,
            "{} queued",
            c.peak_output
        );
        assert!(c.bytes_moved <= c.bytes_in);
        assert!(c.max_requests_per_turn <= limits.requests_per_turn as u64);
        let t = service.tracker();
        assert!(t.swarm_count() <= max_swarms);
        assert!(t.peer_count() <= max_peers);
        assert!(t.sync_pending() <= 64);
        for (_, s) in t.all_stats() {
            assert!((s.complete + s.incomplete) as usize <= per_swarm);
        }
        if t.sync_pending() > 32 {
            let mut drained = Vec::new();
            service.tracker_mut().drain_sync(&mut drained, 64);
        }
    }
    answered
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

// ---------------------------------------------------------------------------------------
// utp_packet
// ---------------------------------------------------------------------------------------

/// `utp_packet`: arbitrary bytes through the uTP codec. Never panics; whatever decodes
/// encodes again (unknown extensions dropped, so never longer) and decodes to the same
/// header, selective ACK and payload. Accepted: the input decoded.
pub fn utp_packet(data: &[u8]) -> bool {
    use btcore_core::utp::{classify, packet, DatagramKind};
    let kind = classify(data);
    let Ok(p) = packet::decode(data) else {
        return false;
    };
    assert_eq!(
        kind,
        DatagramKind::Utp,
        "a decodable packet is classified as uTP"
    );
    if let Some(s) = p.sack {
        assert!(!s.bytes().is_empty());
        assert!(s.bytes().len() <= packet::MAX_SACK_BYTES);
        let _ = (0..s.bits() + 8).filter(|&i| s.is_set(i)).count();
    }
    let mut buf = vec![0u8; data.len()];
    let n = packet::encode(&p.header, p.sack.map(|s| s.bytes()), p.payload, &mut buf)
        .expect("a decoded packet fits in as many bytes as it came in");
    let q = packet::decode(&buf[..n]).expect("an encoded packet decodes");
    assert_eq!(q, p);
    // Too small a buffer is an error, not a panic.
    if n > 0 {
        assert_eq!(
            packet::encode(
                &p.header,
                p.sack.map(|s| s.bytes()),
                p.payload,
                &mut buf[..n - 1]
            ),
            Err(packet::PacketError::BufferTooSmall)
        );
    }
    true
}

// ---------------------------------------------------------------------------------------
// utp_connection
// ---------------------------------------------------------------------------------------

/// `utp_connection`: a uTP socket with small bounds, one outgoing connection to
/// address 0, fed a script of steps. Each step is a byte: low 3 bits the kind, high 5
/// its argument. Kinds: a raw datagram from address `arg % 4` (a length byte, then the
/// bytes); a packet built for the outgoing connection (its ids right, type, sequence
/// and ack numbers near the live ones, optional selective ACK, payload) so the fuzzer
/// reaches deep states; time passing; writing; reading; closing or aborting. After
/// every step, everything the socket sends must decode, and the bounds hold: the
/// connection cap, each connection's buffered bytes within the receive buffer, its
/// reorder slots and unacknowledged bytes within theirs. Accepted: a packet reached a
/// connection.
pub fn utp_connection(data: &[u8]) -> bool {
    use btcore_core::time::{Duration, Instant};
    use btcore_core::utp::packet::{self, Header, PacketType};
    use btcore_core::utp::{Incoming, UtpConfig, UtpSocket};

    let cfg = UtpConfig {
        send_buffer: 8192,
        recv_buffer: 8192,
        reorder_slots: 8,
        max_packets_in_flight: 16,
        max_connections: 4,
        max_pending_resets: 4,
        ..UtpConfig::default()
    };
    let mut s: UtpSocket<u8> = UtpSocket::new(cfg, 7);
    let mut now = Instant::from_millis(1);
    let out = s.connect(now, 0).ok();
    let mut accepted = false;
    let mut buf = [0u8; 2048];
    let mut i = 0;
    let next = |i: &mut usize| {
        let b = data.get(*i).copied().unwrap_or(0);
        *i += 1;
        b
    };
    while i < data.len() {
        let op = next(&mut i);
        let arg = op >> 3;
        match op & 7 {
            0 => {
                let len = usize::from(next(&mut i));
                let start = i.min(data.len());
                let end = (start + len).min(data.len());
                let d = &data[start..end];
                i = end;
                match s.handle_datagram(now, arg % 4, d) {
                    Incoming::Delivered(_) | Incoming::Accepted { .. } => accepted = true,
                    _ => {}
                }
            }
            1 => {
                let Some(c) = out.and_then(|h| s.conn(h)) else {
                    continue;
                };
                let ty = match arg % 5 {
                    0 => PacketType::Data,
                    1 => PacketType::Fin,
                    2 => PacketType::State,
                    3 => PacketType::Reset,
                    _ => PacketType::Syn,
                };
                let seq_off = next(&mut i) as i8;
                let ack_off = next(&mut i);
                let wnd = u32::from(next(&mut i)) * 256;
                let sack_len = usize::from(next(&mut i) % 3) * 4;
                let payload_len = usize::from(next(&mut i)) * 8;
                let h = Header {
                    ty,
                    conn_id: c.recv_id(),
                    timestamp_us: now.as_millis() as u32 * 1000,
                    timestamp_diff_us: u32::from(ack_off) * 1000,
                    wnd_size: wnd,
                    seq_nr: c.ack_nr().wrapping_add(1).wrapping_add(seq_off as u16),
                    ack_nr: c
                        .seq_nr()
                        .wrapping_sub(1)
                        .wrapping_sub(u16::from(ack_off % 32)),
                };
                let sack: Vec<u8> = (0..sack_len).map(|_| next(&mut i)).collect();
                let payload = vec![arg; payload_len];
                let mut d = vec![0u8; packet::encoded_len(sack_len, payload_len)];
                let sack = (sack_len > 0).then_some(&sack[..]);
                let n = packet::encode(&h, sack, &payload, &mut d).expect("sized");
                if let Incoming::Delivered(_) = s.handle_datagram(now, 0, &d[..n]) {
                    accepted = true;
                }
            }
            2 => {
                now = now + Duration::from_millis(u64::from(arg) * 97);
                s.handle_timeout(now);
            }
            3 => {
                if let Some(t) = s.poll_timeout() {
                    now = now.max(t);
                    s.handle_timeout(now);
                }
            }
            4 | 5 => {
                let handles: Vec<_> = s.handles().collect();
                for h in handles {
                    if let Some(c) = s.conn_mut(h) {
                        if op & 7 == 4 {
                            let _ = c.write(&vec![arg; usize::from(arg) * 300]);
                        } else {
                            let mut sink = vec![0u8; usize::from(arg) * 300];
                            let _ = c.read(&mut sink);
                        }
                    }
                }
            }
            6 => {
                let nth = s.handles().nth(usize::from(arg % 4));
                if let Some(h) = nth {
                    if let Some(c) = s.conn_mut(h) {
                        if arg & 4 == 0 {
                            c.close();
                        } else {
                            c.abort();
                        }
                    }
                }
            }
            _ => {
                let nth = s.handles().nth(usize::from(arg % 4));
                if let Some(h) = nth {
                    s.remove(h);
                }
            }
        }
        for _ in 0..10_000 {
            let Some((_, n)) = s.poll_transmit(now, &mut buf) else {
                break;
            };
            assert!(n <= usize::from(cfg.max_packet_size));
            packet::decode(&buf[..n]).expect("the socket sends valid packets");
        }
        assert!(s.len() <= 4);
        for h in s.handles() {
            let c = s.conn(h).expect("a listed handle is live");
            assert!(c.readable() + c.out_of_order_bytes() as usize <= 8192);
            assert!(c.reorder_len() <= 8);
            assert!(c.unacked() <= 8192);
            assert!(c.bytes_in_flight() as usize <= c.unacked());
            assert!(c.cwnd() >= u32::from(cfg.max_payload()));
        }
    }
    accepted
}
