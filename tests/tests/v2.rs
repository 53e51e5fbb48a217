//! BEP 52 in the session: a hybrid torrent is in both swarms, so a peer that names it
//! by its truncated v2 info-hash is answered with that hash, as one naming its v1
//! info-hash is with that one; a v2-only torrent is known by its truncated v2 hash.

use btcore_core::ids::InfoHash;
use btcore_core::metainfo::{Limits, Metainfo};
use btcore_core::session::SessionConfig;
use btcore_tests::scripted::Host;
use std::net::SocketAddr;

fn corpus(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/data/conformance/v2-generated/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).expect(&path)
}

fn handshake(info_hash: &InfoHash) -> Vec<u8> {
    let mut h = vec![19];
    h.extend_from_slice(b"BitTorrent protocol");
    h.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 0]);
    h.extend_from_slice(&info_hash.0);
    h.extend_from_slice(&[b'x'; 20]);
    h
}

/// The info-hash of the handshake the session sent on a connection.
fn answered_hash(host: &mut Host, conn: btcore_core::session::ConnId) -> Option<[u8; 20]> {
    let out = host.read_from(conn, 68);
    (out.len() >= 48 && out[0] == 19).then(|| out[28..48].try_into().expect("20 bytes"))
}

#[test]
fn a_hybrid_answers_in_both_swarms_and_a_v2_torrent_by_its_v2_hash() {
    let hybrid = corpus("multi-hybrid.torrent");
    let v2 = corpus("multi-v2.torrent");
    let mut tokens = Vec::new();
    let m = Metainfo::parse_vec(&hybrid, &mut tokens, &Limits::default()).expect("hybrid");
    let (h1, h2) = (m.info_hash(), m.info_hash_v2_truncated().expect("v2 hash"));
    let (n, len, pl) = (m.num_pieces(), m.total_size(), m.piece_length());
    let mut tokens = Vec::new();
    let mv2 = Metainfo::parse_vec(&v2, &mut tokens, &Limits::default()).expect("v2");
    let only_v2 = mv2.info_hash_v2_truncated().expect("v2 hash");
    assert_eq!(mv2.info_hash(), only_v2);
    let (v2_len, v2_pl) = (mv2.total_size(), mv2.piece_length());
    assert!(n > 0);

    let mut host = Host::new(SessionConfig::new(btcore_core::ids::PeerId([7; 20])), 1);
    host.add_torrent(&hybrid, &vec![0; len as usize], pl, true);
    host.add_torrent(&v2, &vec![0; v2_len as usize], v2_pl, true);
    for (i, ih) in [h1, h2, only_v2].iter().enumerate() {
        let addr: SocketAddr = ([192, 0, 2, 10 + i as u8], 6881).into();
        let c = host.incoming(addr);
        host.recv(c, &handshake(ih));
        assert!(host.is_open(c), "{ih}: closed {:?}", host.close_reason(c));
        assert_eq!(answered_hash(&mut host, c), Some(ih.0), "{ih}");
    }
    // A hash of neither swarm is refused.
    let c = host.incoming(([192, 0, 2, 20], 6881).into());
    host.recv(c, &handshake(&InfoHash([9; 20])));
    assert!(!host.is_open(c));
}

/// Encodes one peer message.
fn encode(m: &btcore_core::wire::Message<'_>) -> Vec<u8> {
    let mut out = vec![0u8; m.encoded_len()];
    let n = m.encode(&mut out).expect("encode");
    out.truncate(n);
    out
}

/// The hash messages among the bytes a peer read: (answered request, its hashes) or
/// (rejected request, None).
fn hash_answers(bytes: &[u8]) -> Vec<(btcore_core::wire::HashRequest, Option<Vec<u8>>)> {
    use btcore_core::wire::{decode, Limits, Message, Status};
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(Status::Complete((m, n))) = decode(&bytes[at..], &Limits::default()) {
        match m {
            Message::Hashes { req, hashes } => out.push((req, Some(hashes.to_vec()))),
            Message::HashReject(req) => out.push((req, None)),
            _ => {}
        }
        at += n;
    }
    out
}

/// A seed of a v2 torrent answers BEP 52 hash requests for its piece layers with
/// hashes and a proof that check against the file's root (what a peer that joined from
/// a magnet link needs), and rejects any other: an unknown root, a file of one piece,
/// another layer, a misaligned range; past its per-connection budget it rejects all.
#[test]
fn a_v2_seed_answers_hash_requests_with_checked_proofs_and_bounds_them() {
    use btcore_core::wire::{HashRequest, Message};
    let v2 = corpus("multi-v2.torrent");
    let mut tokens = Vec::new();
    let m = Metainfo::parse_vec(&v2, &mut tokens, &Limits::default()).expect("v2");
    let pl = m.piece_length();
    let base = btcore_core::merkle::layer_height(pl);
    let big = m
        .tree_files()
        .expect("tree")
        .find(|f| f.length > 2 * u64::from(pl))
        .expect("a file of several pieces");
    let small = m
        .tree_files()
        .expect("tree")
        .find(|f| !f.attr.pad && f.length > 0 && f.length <= u64::from(pl))
        .expect("a file of one piece");
    let (root, len) = (*big.pieces_root().expect("root"), big.length);
    let pieces = len.div_ceil(u64::from(pl));
    let width = pieces.next_power_of_two() as u32;
    let full = HashRequest {
        root,
        base,
        index: 0,
        length: width,
        proof_layers: width.trailing_zeros() - 1,
    };

    let mut host = Host::new(SessionConfig::new(btcore_core::ids::PeerId([7; 20])), 1);
    host.add_torrent(&v2, &vec![0; m.total_size() as usize], pl, true);
    let c = host.incoming(([192, 0, 2, 30], 6881).into());
    host.recv(c, &handshake(&m.info_hash()));
    let _ = host.read_from(c, 1 << 20);

    host.recv(c, &encode(&Message::HashRequest(full)));
    let got = hash_answers(&host.read_from(c, 1 << 20));
    assert_eq!(got.len(), 1, "{got:?}");
    let (req, hashes) = &got[0];
    assert_eq!(*req, full);
    let hashes = hashes.as_ref().expect("answered, not rejected");
    let layer = btcore_core::merkle::verify_hashes(&root, len, pl, req, hashes)
        .expect("the answer checks against the root");
    assert_eq!(layer, m.piece_layer(&root).expect("layer"));

    let refused = [
        HashRequest {
            root: [5; 32],
            ..full
        },
        HashRequest {
            root: *small.pieces_root().expect("root"),
            ..full
        },
        HashRequest {
            base: base + 1,
            ..full
        },
        HashRequest {
            index: 1,
            length: 2,
            ..full
        },
    ];
    for r in refused {
        host.recv(c, &encode(&Message::HashRequest(r)));
        let got = hash_answers(&host.read_from(c, 1 << 20));
        assert_eq!(got, [(r, None)], "{r:?}");
    }
    // The budget: at most a few dozen answers per connection, then rejects.
    let mut answered = 1;
    for _ in 0..200 {
        host.recv(c, &encode(&Message::HashRequest(full)));
        for (_, h) in hash_answers(&host.read_from(c, 1 << 20)) {
            answered += usize::from(h.is_some());
        }
    }
    assert!(host.is_open(c));
    assert!((2..=64).contains(&answered), "{answered} answers");
}

/// The extension handshake of a peer that serves the metadata (`ut_metadata` as its
/// id 3) of `size` bytes.
fn ext_handshake_with_metadata(size: usize) -> Vec<u8> {
    let payload = format!("d1:md11:ut_metadatai3ee13:metadata_sizei{size}ee");
    encode(&btcore_core::wire::Message::Extended {
        id: 0,
        payload: payload.as_bytes(),
    })
}

/// Adds the `btmh`-only magnet link of `m` (a v2 torrent).
fn add_btmh(host: &mut Host, m: &Metainfo<'_>) -> btcore_core::session::TorrentId {
    let hex: String = m
        .info_hash_v2()
        .expect("v2")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let uri = format!("magnet:?xt=urn:btmh:1220{hex}");
    let id = host
        .session
        .add_magnet(host.now, uri.as_bytes())
        .expect("magnet added");
    host.drain();
    id
}

/// Answers the hash requests the session sent on `c` from `m`'s layers (one byte
/// flipped in each answer when `corrupt`); returns how many.
fn answer_hash_requests(
    host: &mut Host,
    c: btcore_core::session::ConnId,
    m: &Metainfo<'_>,
    corrupt: bool,
) -> usize {
    use btcore_core::wire::{decode, Limits as WireLimits, Message, Status};
    let out = host.read_from(c, 1 << 20);
    let mut at = 0;
    let mut reqs = Vec::new();
    while let Ok(Status::Complete((msg, n))) = decode(&out[at..], &WireLimits::default()) {
        if let Message::HashRequest(r) = msg {
            reqs.push(r);
        }
        at += n;
    }
    for r in &reqs {
        let f = m
            .tree_files()
            .expect("tree")
            .find(|f| f.pieces_root() == Some(&r.root))
            .expect("a file of the torrent");
        let layer = m.piece_layer(&r.root).expect("layer");
        let mut hashes = Vec::new();
        btcore_core::merkle::hashes_answer(layer, f.length, m.piece_length(), r, &mut hashes)
            .expect("a request libtorrent would answer");
        if corrupt {
            hashes[5] ^= 1;
        }
        host.recv(
            c,
            &encode(&Message::Hashes {
                req: *r,
                hashes: &hashes,
            }),
        );
    }
    reqs.len()
}

/// btcore's local id for `ut_metadata`: what a peer puts in its messages.
const OUR_UT_METADATA: u8 = 2;

/// A v2-only magnet link: the info dictionary comes with `ut_metadata` (checked against
/// the truncated SHA-256 info-hash), then each file's piece layer with BEP 52 hash
/// requests. A peer whose answer does not prove out against the file's root is cut
/// off and the range is asked of another; once every range checks, the torrent is
/// whole, with the same piece layers as the torrent file.
#[test]
fn a_v2_magnet_fetches_its_piece_layers_and_drops_a_peer_with_bad_proofs() {
    use btcore_core::session::TorrentState;
    use btcore_core::wire::Message;
    let v2 = corpus("multi-v2.torrent");
    let mut tokens = Vec::new();
    let m = Metainfo::parse_vec(&v2, &mut tokens, &Limits::default()).expect("v2");
    let info = m.info_bytes().to_vec();
    let ih = m.info_hash();
    let pl = m.piece_length();
    let mut host = Host::new(SessionConfig::new(btcore_core::ids::PeerId([7; 20])), 1);
    let id = add_btmh(&mut host, &m);

    // Two peers; the metadata comes from the first.
    let peers: Vec<_> = (0..2u8)
        .map(|i| {
            let c = host.incoming(([192, 0, 2, 40 + i], 6881).into());
            host.recv(c, &handshake(&ih));
            host.recv(c, &ext_handshake_with_metadata(info.len()));
            let _ = host.read_from(c, 1 << 20);
            c
        })
        .collect();
    let header = format!("d8:msg_typei1e5:piecei0e10:total_sizei{}ee", info.len());
    let mut data = header.into_bytes();
    data.extend_from_slice(&info);
    host.recv(
        peers[0],
        &encode(&Message::Extended {
            id: OUR_UT_METADATA,
            payload: &data,
        }),
    );
    assert_eq!(
        host.session
            .torrent_status(id, host.now)
            .expect("status")
            .state,
        TorrentState::FetchingMetadata,
        "the piece layers are still missing"
    );
    host.advance(btcore_core::Duration::from_secs(1));

    // Answer every hash request: the first peer with a flipped byte.
    let mut answered = 0;
    for round in 0..20 {
        let mut any = false;
        for (k, &c) in peers.iter().enumerate() {
            if !host.is_open(c) {
                continue;
            }
            let n = answer_hash_requests(&mut host, c, &m, k == 0);
            any |= n > 0;
            answered += n;
        }
        if host
            .session
            .torrent_status(id, host.now)
            .expect("status")
            .state
            != TorrentState::FetchingMetadata
        {
            break;
        }
        assert!(any || round < 19, "no hash request in round {round}");
        host.advance(btcore_core::Duration::from_secs(1));
    }
    assert!(answered >= 2, "{answered} answers");
    assert!(
        !host.is_open(peers[0]),
        "the peer with bad proofs is cut off"
    );
    assert!(host.is_open(peers[1]));
    let st = host.session.torrent_status(id, host.now).expect("status");
    assert_ne!(st.state, TorrentState::FetchingMetadata);
    // The torrent as the session now knows it carries the same layers as the file.
    let whole = host.session.metainfo_bytes(id).expect("metainfo");
    let mut tokens = Vec::new();
    let got = Metainfo::parse_vec(&whole, &mut tokens, &Limits::default()).expect("parses");
    assert_eq!(got.info_hash(), ih);
    for f in m
        .tree_files()
        .expect("tree")
        .filter(|f| f.length > u64::from(pl))
    {
        let root = f.pieces_root().expect("root");
        assert_eq!(got.piece_layer(root), m.piece_layer(root));
    }
}

/// A v2 torrent of two files with the same content (so the same pieces root and
/// layer), from a `btmh` magnet link: the shared layer is fetched once and the torrent
/// becomes whole (it asked for the second file's copy forever before).
#[test]
fn a_v2_magnet_with_two_identical_files_completes() {
    use btcore_core::session::TorrentState;
    use btcore_core::wire::Message;
    let dir = std::env::temp_dir().join(format!("btcore-v2-twins-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    std::fs::write(dir.join("a.bin"), &data).expect("a");
    std::fs::write(dir.join("b.bin"), &data).expect("b");
    let t = btcore_host::create::create_torrent(
        &dir,
        &btcore_host::create::CreateOptions {
            piece_length: Some(16 * 1024),
            creation_date: Some(0),
            format: btcore_host::create::Format::V2,
            ..Default::default()
        },
    )
    .expect("torrent");
    let _ = std::fs::remove_dir_all(&dir);
    let mut tokens = Vec::new();
    let m = Metainfo::parse_vec(&t, &mut tokens, &Limits::default()).expect("v2");
    let (info, ih) = (m.info_bytes().to_vec(), m.info_hash());
    let mut host = Host::new(SessionConfig::new(btcore_core::ids::PeerId([7; 20])), 1);
    let id = add_btmh(&mut host, &m);
    let c = host.incoming(([192, 0, 2, 50], 6881).into());
    host.recv(c, &handshake(&ih));
    host.recv(c, &ext_handshake_with_metadata(info.len()));
    let _ = host.read_from(c, 1 << 20);
    let mut d = format!("d8:msg_typei1e5:piecei0e10:total_sizei{}ee", info.len()).into_bytes();
    d.extend_from_slice(&info);
    host.recv(
        c,
        &encode(&Message::Extended {
            id: OUR_UT_METADATA,
            payload: &d,
        }),
    );
    for _ in 0..10 {
        host.advance(btcore_core::Duration::from_secs(1));
        answer_hash_requests(&mut host, c, &m, false);
    }
    let st = host.session.torrent_status(id, host.now).expect("status");
    assert_ne!(st.state, TorrentState::FetchingMetadata);
    assert!(host.is_open(c));
}
