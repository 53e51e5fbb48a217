//! A host that holds the blocks it read for upload and sends them itself
//! (`Session::handle_read_held`, as the std host does for plain connections), scripted
//! against one seeding session: the peer gets the same piece messages, in the order
//! asked, with the payloads at their places; a host reading with `poll_transmit` is
//! held before a payload, which waits for `poll_send`, never lost.

use btcore_core::ids::{BlockRef, PieceIndex};
use btcore_core::session::{SessionConfig, Transmit};
use btcore_core::wire::{self, Limits, Message, Status};
use btcore_tests::scripted::{frames, info_hash_of, peer_id, zero_torrent, Host};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

const PIECE_LEN: u32 = 64 * 1024;

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect()
}

/// A seed of 4 pieces (its bytes a pattern, not the torrent's zeros: a seed's data
/// is not checked here) and a leecher connected to it that is unchoked and asked
/// for `blocks`; returns the host, the connection and the seed's bytes.
fn seed_asked(hold: bool, blocks: &[BlockRef]) -> (Host, btcore_core::session::ConnId, Vec<u8>) {
    let (file, _) = zero_torrent(4, PIECE_LEN);
    let content = pattern(4 * PIECE_LEN as usize);
    let mut host = Host::new(SessionConfig::new(peer_id(999)), 9);
    host.hold_reads = hold;
    host.add_torrent(&file, &content, PIECE_LEN, true);
    let ih = info_hash_of(&file);
    let c = host.incoming(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
        6881,
    ));
    let mut hello = frames::handshake(ih, peer_id(7));
    hello.extend(frames::message(&Message::Interested));
    host.recv(c, &hello);
    // Handshake, have-all, unchoke: what the seed says first.
    let _ = host.read_sent(c, usize::MAX);
    let mut asks = Vec::new();
    for b in blocks {
        asks.extend(frames::request(*b));
    }
    host.recv(c, &asks);
    (host, c, content)
}

/// The piece messages in `bytes`, with their payloads; panics on anything else.
fn pieces(bytes: &[u8]) -> Vec<(BlockRef, Vec<u8>)> {
    let limits = Limits::default();
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Ok(Status::Complete((m, n))) = wire::decode(rest, &limits) else {
            panic!("a whole message, {} bytes left", rest.len());
        };
        match m {
            Message::Piece {
                piece,
                offset,
                data,
            } => out.push((
                BlockRef {
                    piece,
                    offset,
                    len: data.len() as u32,
                },
                data.to_vec(),
            )),
            Message::KeepAlive => {}
            m => panic!("only pieces expected, got {:?}", m.id()),
        }
        rest = &rest[n..];
    }
    out
}

fn blocks() -> Vec<BlockRef> {
    let b = |piece: u32, offset: u32| BlockRef {
        piece: PieceIndex(piece),
        offset,
        len: 16_384,
    };
    vec![b(2, 16_384), b(0, 0), b(0, 16_384), b(3, 49_152), b(1, 0)]
}

#[test]
fn held_payloads_reach_the_peer_at_their_places() {
    let asked = blocks();
    let (mut host, c, content) = seed_asked(true, &asked);
    assert_eq!(host.held.len(), asked.len(), "every block read is held");
    let got = pieces(&host.read_sent(c, usize::MAX));
    assert!(host.held.is_empty(), "every held payload was sent");
    let want: Vec<_> = asked
        .iter()
        .map(|b| {
            let at = (b.piece.0 * PIECE_LEN + b.offset) as usize;
            (*b, content[at..at + b.len as usize].to_vec())
        })
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0);
        assert!(g.1 == w.1, "payload of {:?}", g.0);
    }
    // The same blocks copied into the session's queue make the same stream.
    let (mut copying, c2, _) = seed_asked(false, &asked);
    assert!(copying.held.is_empty());
    assert_eq!(pieces(&copying.read_from(c2, usize::MAX)), got);
}

#[test]
fn poll_transmit_waits_before_a_held_payload() {
    let asked = blocks();
    let (mut host, c, _) = seed_asked(true, &asked);
    // The first piece message's header, then nothing: its payload is held.
    let head = host.read_from(c, usize::MAX);
    assert_eq!(head.len(), wire::PIECE_HEADER_LEN);
    assert!(host.read_from(c, usize::MAX).is_empty());
    assert_eq!(host.held.len(), asked.len(), "nothing held was given away");
    let mut buf = vec![0u8; 1024];
    let first = host.session.poll_send(host.now, c, &mut buf);
    let token = *host.held.keys().next().expect("held");
    assert_eq!(
        first,
        Transmit::Held {
            token,
            len: asked[0].len
        }
    );
    host.held.remove(&token);
    // The rest of the stream follows, whole.
    let tail = pieces(&host.read_sent(c, usize::MAX));
    assert_eq!(
        tail.iter().map(|p| p.0).collect::<Vec<_>>(),
        asked[1..].to_vec()
    );
}
