//! BEP 6 allowed fast: a peer that keeps us choked but lets us have a few pieces gets
//! asked for those pieces, and only those, however many others it has; once it
//! unchokes us, any piece.

use btcore_core::ids::PieceIndex;
use btcore_core::session::SessionConfig;
use btcore_core::wire::Message;
use btcore_tests::scripted::{frames, info_hash_of, peer_id, zero_torrent, Host};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

const PIECE_LEN: u32 = 16 * 1024;
const PIECES: u32 = 512;

/// The pieces of the blocks requested in what the session sent.
fn requested(bytes: &[u8]) -> BTreeSet<u32> {
    frames::requests(bytes).iter().map(|b| b.piece.0).collect()
}

#[test]
fn a_choking_peer_is_asked_for_its_allowed_fast_pieces_only() {
    let (file, content) = zero_torrent(PIECES, PIECE_LEN);
    let mut host = Host::new(SessionConfig::new(peer_id(999)), 3);
    host.add_torrent(&file, &content, PIECE_LEN, false);
    let c = host.incoming(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)),
        6881,
    ));
    // A seed that chokes us and lets us have three pieces far from the start.
    let allowed = [301u32, 77, 450];
    let mut hello = frames::handshake(info_hash_of(&file), peer_id(8));
    hello.extend(frames::message(&Message::HaveAll));
    for p in allowed {
        hello.extend(frames::message(&Message::AllowedFast(PieceIndex(p))));
    }
    host.recv(c, &hello);
    let sent = host.read_sent(c, usize::MAX);
    assert_eq!(
        requested(&sent),
        allowed.into_iter().collect::<BTreeSet<_>>(),
        "each allowed-fast piece asked for, nothing else"
    );
    // Unchoked: any piece may be asked for now.
    host.recv(c, &frames::message(&Message::Unchoke));
    let sent = host.read_sent(c, usize::MAX);
    let more = requested(&sent);
    assert!(
        more.iter().any(|p| !allowed.contains(p)),
        "other pieces once unchoked: {more:?}"
    );
}
