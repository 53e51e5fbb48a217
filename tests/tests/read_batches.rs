//! The batches a session lets its host read a download in (`Session::recv_batch`),
//! scripted frame by frame against one session: never more than half of what the
//! peer owes on our requests (the other half keeps coming while the host waits), at
//! most `RECV_BATCH_MAX` and what the peer sends in `RECV_BATCH_MAX_WAIT_MS` at its
//! rate (a slow link is read as its bytes come), and nothing while we upload to the
//! peer or when little is owed.

use btcore_core::ids::{BlockRef, InfoHash};
use btcore_core::session::{ConnId, SessionConfig, RECV_BATCH_MAX, RECV_BATCH_MAX_WAIT_MS};
use btcore_core::time::Duration;
use btcore_core::wire::{self, Limits, Message, Status};
use btcore_tests::scripted::{frames, info_hash_of, peer_id, zero_torrent, Host};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

const PIECE_LEN: u32 = 256 * 1024;

fn addr(last: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, last)), 6881)
}

/// A downloading session of a torrent of zeros, `pieces` long.
fn leecher(pieces: u32) -> (Host, InfoHash) {
    let (file, content) = zero_torrent(pieces, PIECE_LEN);
    let mut host = Host::new(SessionConfig::new(peer_id(999)), 5);
    host.add_torrent(&file, &content, PIECE_LEN, false);
    (host, info_hash_of(&file))
}

/// A seed that connected, has everything and unchoked us; returns it with the
/// blocks the session asked of it.
fn seed(host: &mut Host, ih: InfoHash, last: u8) -> (ConnId, Vec<BlockRef>) {
    let c = host.incoming(addr(last));
    let mut hello = frames::handshake(ih, peer_id(u64::from(last)));
    hello.extend(frames::message(&Message::HaveAll));
    hello.extend(frames::message(&Message::Unchoke));
    host.recv(c, &hello);
    let asked = frames::requests(&host.read_from(c, usize::MAX));
    (c, asked)
}

/// The download rate from the peer of `c` with the second in progress, bytes/s.
fn download_rate(host: &Host, c: ConnId) -> u64 {
    let t = host.session.torrents().next().expect("a torrent");
    host.session
        .peers_at(t, host.now)
        .iter()
        .find(|p| p.conn == c)
        .expect("a connection the session knows")
        .download_rate
}

/// The ids of the messages in `bytes`.
fn messages(bytes: &[u8]) -> Vec<Option<u8>> {
    let limits = Limits::default();
    let mut ids = Vec::new();
    let mut rest = bytes;
    while let Ok(Status::Complete((m, n))) = wire::decode(rest, &limits) {
        ids.push(m.id());
        rest = &rest[n..];
    }
    ids
}

fn send_block(host: &mut Host, c: ConnId, b: BlockRef) {
    let zeros = vec![0u8; b.len as usize];
    host.recv(
        c,
        &frames::message(&Message::Piece {
            piece: b.piece,
            offset: b.offset,
            data: &zeros,
        }),
    );
}

/// 50 ms of a fast seed: it sends half of what it owes, and the session asks for
/// more.
fn stream(host: &mut Host, c: ConnId, owed: &mut Vec<BlockRef>) {
    let n = owed.len().div_ceil(2);
    for b in owed.drain(..n) {
        send_block(host, c, b);
    }
    host.advance(Duration::from_millis(50));
    owed.extend(frames::requests(&host.read_from(c, usize::MAX)));
}

/// As the pipeline to a fast seed deepens, the batch grows with it, in the steps
/// the host can set, and always leaves the seed half of what it owes to send.
#[test]
fn the_batch_follows_what_the_peer_owes_and_never_passes_half() {
    let (mut host, ih) = leecher(256);
    let (c, first) = seed(&mut host, ih, 1);
    assert!(!first.is_empty(), "nothing asked of the seed");
    let mut owed: Vec<BlockRef> = first;
    let mut seen = Vec::new();
    for _ in 0..60 {
        let total: usize = owed.iter().map(|b| b.len as usize).sum();
        let batch = host.session.recv_batch(host.now, c);
        assert!(
            [0, RECV_BATCH_MAX / 4, RECV_BATCH_MAX / 2, RECV_BATCH_MAX].contains(&batch),
            "batch {batch} is not a step the host can set"
        );
        assert!(
            batch <= total / 2,
            "batch {batch} with {total} bytes owed: the seed could stall waiting for us"
        );
        if total < 128 * 1024 {
            assert_eq!(batch, 0, "{total} bytes owed");
        }
        // No more than the peer sends in the time the host may wait.
        let rate = download_rate(&host, c);
        let in_wait = rate * RECV_BATCH_MAX_WAIT_MS / 1000;
        assert!(
            batch as u64 <= in_wait,
            "batch {batch} at {rate} B/s: more than arrives in {RECV_BATCH_MAX_WAIT_MS} ms"
        );
        seen.push(batch);
        if batch == RECV_BATCH_MAX {
            break;
        }
        stream(&mut host, c, &mut owed);
    }
    assert!(
        seen.contains(&RECV_BATCH_MAX),
        "a deep pipeline never asked for the largest batch: {seen:?}"
    );
    assert!(
        seen.first() == Some(&0),
        "a fresh connection batched: {seen:?}"
    );
}

/// A peer we upload to is read as its bytes come (its requests are not held back),
/// and so is one the session does not know.
#[test]
fn no_batch_for_a_peer_we_upload_to_or_an_unknown_connection() {
    let (mut host, ih) = leecher(256);
    let (c, mut owed) = seed(&mut host, ih, 2);
    for _ in 0..60 {
        if host.session.recv_batch(host.now, c) == RECV_BATCH_MAX {
            break;
        }
        stream(&mut host, c, &mut owed);
    }
    assert_eq!(host.session.recv_batch(host.now, c), RECV_BATCH_MAX);
    // The first piece verified: the peer (no longer a seed in this story) wants it.
    host.recv(c, &frames::message(&Message::Interested));
    let mut unchoked = false;
    for _ in 0..15 {
        host.advance(Duration::from_secs(1));
        unchoked |= messages(&host.read_from(c, usize::MAX))
            .iter()
            .any(|m| *m == Message::Unchoke.id());
        if unchoked {
            break;
        }
    }
    assert!(unchoked, "the session never unchoked the interested peer");
    assert_eq!(
        host.session.recv_batch(host.now, c),
        0,
        "an interested peer we unchoke"
    );
    host.disconnect(c);
    assert_eq!(host.session.recv_batch(host.now, c), 0);
}
