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
