//! Unit tests of the session's private helpers (its behaviour is tested end to end
//! in the simulation, `tests/`).

#[test]
fn a_full_event_queue_drops_progress_events_never_state_changes() {
    use super::{push_bounded, Event, TorrentId};
    use crate::ids::PieceIndex;
    use alloc::collections::VecDeque;
    use alloc::vec::Vec;
    let t = TorrentId(1);
    let mut q = VecDeque::new();
    push_bounded(&mut q, Event::MetadataReceived(t), 4);
    for p in 0..10 {
        push_bounded(&mut q, Event::PieceVerified(t, PieceIndex(p)), 4);
    }
    push_bounded(&mut q, Event::TorrentFinished(t), 4);
    push_bounded(&mut q, Event::PieceVerified(t, PieceIndex(10)), 4);
    assert_eq!(
        q.iter().cloned().collect::<Vec<_>>(),
        [
            Event::MetadataReceived(t),
            Event::PieceVerified(t, PieceIndex(9)),
            Event::TorrentFinished(t),
            Event::PieceVerified(t, PieceIndex(10)),
        ]
    );
    // Only state changes: the oldest goes, the queue stays bounded.
    let mut q = VecDeque::new();
    for i in 0..6 {
        push_bounded(&mut q, Event::TorrentFinished(TorrentId(i)), 4);
    }
    assert_eq!(q.len(), 4);
    assert_eq!(q.front(), Some(&Event::TorrentFinished(TorrentId(2))));
}

/// A single-file torrent of `len` bytes in pieces of `piece_len` (the hashes are
/// never checked here: the host says whether a piece passed).
fn torrent_file(len: u64, piece_len: u32) -> alloc::vec::Vec<u8> {
    let n = len.div_ceil(u64::from(piece_len)) as usize;
    let mut f = alloc::format!(
        "d4:infod6:lengthi{len}e4:name1:a12:piece lengthi{piece_len}e6:pieces{}:",
        20 * n
    )
    .into_bytes();
    f.resize(f.len() + 20 * n, 7);
    f.extend_from_slice(b"ee");
    f
}

fn status(
    state: super::TorrentState,
    bytes_have: u64,
    total_size: u64,
    download_rate: u64,
) -> super::TorrentStatus {
    super::TorrentStatus {
        info_hash: crate::ids::InfoHash([0; 20]),
        info_hash_v2: None,
        state,
        pieces_have: 0,
        num_pieces: u32::from(total_size > 0),
        bytes_have,
        total_size,
        peers: 0,
        seeds: 0,
        connecting: 0,
        download_rate,
        upload_rate: 0,
        downloaded: 0,
        uploaded: 0,
        hash_failures: 0,
        banned: 0,
        private: false,
        paused: false,
        queued: false,
        queue_position: 0,
        error: None,
        wanted_size: total_size,
        wanted_have: bytes_have,
        finished: false,
        stalled: false,
    }
}

#[test]
fn progress_is_millionths_of_the_bytes_rounded_down_and_a_seed_is_whole() {
    use super::TorrentState::*;
    assert_eq!(status(Downloading, 0, 1000, 0).progress_ppm(), 0);
    assert_eq!(status(Downloading, 1, 3, 0).progress_ppm(), 333_333);
    assert_eq!(status(Downloading, 2, 3, 0).progress_ppm(), 666_666);
    // One byte short of 16 EiB is not done, and the product does not overflow.
    assert_eq!(
        status(Downloading, u64::MAX - 1, u64::MAX, 0).progress_ppm(),
        999_999
    );
    assert_eq!(status(Downloading, 1000, 1000, 0).progress_ppm(), 1_000_000);
    assert_eq!(status(Seeding, 1000, 1000, 0).progress_ppm(), 1_000_000);
    // A magnet link's torrent before its metadata: nothing known, nothing done.
    assert_eq!(status(FetchingMetadata, 0, 0, 500).progress_ppm(), 0);
    assert_eq!(status(Checking, 500, 1000, 0).progress_ppm(), 500_000);
}

#[test]
fn eta_rounds_up_is_zero_for_a_seed_and_unknown_without_a_rate_or_a_download() {
    use super::TorrentState::*;
    // 1001 bytes left at 100 B/s: 11 s (10 would claim done too early).
    assert_eq!(status(Downloading, 0, 1001, 100).eta_secs(), Some(11));
    assert_eq!(status(Downloading, 1, 1001, 100).eta_secs(), Some(10));
    assert_eq!(status(Downloading, 1000, 1001, 1 << 30).eta_secs(), Some(1));
    assert_eq!(status(Downloading, 0, 1000, 0).eta_secs(), None);
    assert_eq!(status(Seeding, 1000, 1000, 0).eta_secs(), Some(0));
    assert_eq!(status(Seeding, 1000, 1000, 50).eta_secs(), Some(0));
    // No metadata yet, checking, stopped or paused: nothing to tell.
    assert_eq!(status(FetchingMetadata, 0, 0, 100).eta_secs(), None);
    assert_eq!(status(Checking, 0, 1000, 100).eta_secs(), None);
    assert_eq!(status(Error, 0, 1000, 100).eta_secs(), None);
    let mut paused = status(Downloading, 0, 1000, 100);
    paused.paused = true;
    assert_eq!(paused.eta_secs(), None);
}

#[test]
fn the_disk_error_that_stopped_a_torrent_is_in_its_status_and_stays() {
    use super::{DiskError, Session, SessionConfig, TorrentState};
    use crate::bitfield::Bitfield;
    use crate::ids::{BlockRef, PeerId, PieceIndex};
    use crate::time::Instant;
    let now = Instant::from_millis(1000);
    let mut s = Session::new(SessionConfig::new(PeerId::generate(1)), 1);
    let file = torrent_file(3 * 16384, 16384);
    let id = s.add_torrent(now, &file, None).expect("add");
    let st = s.torrent_status(id, now).expect("status");
    assert_eq!((st.state, st.error), (TorrentState::Downloading, None));
    assert_eq!((st.progress_ppm(), st.eta_secs()), (0, None));

    // Two pieces verified, then the disk fills while the third is written.
    s.handle_verified(now, id, PieceIndex(0), true);
    s.handle_verified(now, id, PieceIndex(1), true);
    let block = BlockRef {
        piece: PieceIndex(2),
        offset: 0,
        len: 16384,
    };
    s.handle_write_done(now, id, block, Err(DiskError::NoSpace));
    let st = s.torrent_status(id, now).expect("status");
    assert_eq!(st.state, TorrentState::Error);
    assert_eq!(st.error, Some(DiskError::NoSpace));
    assert_eq!((st.progress_ppm(), st.eta_secs()), (666_666, None));

    // A later error does not hide the first, nor is it reported again (one event per
    // stopped torrent, not one per block in flight); a piece verified after the error
    // does not make the stopped torrent a seed.
    s.handle_write_done(now, id, block, Err(DiskError::Io));
    s.handle_write_done(now, id, block, Err(DiskError::Io));
    let failed: alloc::vec::Vec<_> = core::iter::from_fn(|| s.poll_event())
        .filter(|e| matches!(e, super::Event::DiskFailed(..)))
        .collect();
    assert_eq!(failed, [super::Event::DiskFailed(id, DiskError::NoSpace)]);
    s.handle_verified(now, id, PieceIndex(2), true);
    let st = s.torrent_status(id, now).expect("status");
    assert_eq!(st.state, TorrentState::Error);
    assert_eq!(st.error, Some(DiskError::NoSpace));

    // A seed: complete, no error.
    let mut have = Bitfield::new(3);
    for i in 0..3 {
        have.set(i);
    }
    let mut s = Session::new(SessionConfig::new(PeerId::generate(2)), 2);
    let id = s.add_torrent(now, &file, Some(&have)).expect("add");
    let st = s.torrent_status(id, now).expect("status");
    assert_eq!((st.state, st.error), (TorrentState::Seeding, None));
    assert_eq!((st.progress_ppm(), st.eta_secs()), (1_000_000, Some(0)));
}

#[test]
fn progress_and_eta_count_the_wanted_bytes() {
    use super::TorrentState::*;
    let mut s = status(Downloading, 500, 1000, 100);
    s.wanted_size = 600;
    s.wanted_have = 300;
    assert_eq!(s.progress_ppm(), 500_000);
    assert_eq!(s.eta_secs(), Some(3));
    s.wanted_have = 600;
    s.finished = true;
    assert_eq!(s.progress_ppm(), 1_000_000);
    assert_eq!(s.eta_secs(), Some(0));
}

/// A lowered connection cap closes what is over it at once, the newest connections
/// still in their handshake first; the peer id stays whatever the new config says.
#[test]
fn set_config_closes_connections_over_a_lowered_cap() {
    use super::{Action, CloseReason, Session, SessionConfig};
    use crate::ids::PeerId;
    use crate::peer::PeerError;
    use crate::time::Instant;
    use alloc::vec::Vec;
    let id = PeerId(*b"-BT0001-abcdefghijkl");
    let mut s = Session::new(SessionConfig::new(id), 7);
    let now = Instant::from_millis(1_000);
    let conns: Vec<_> = (1..=6u8)
        .map(|i| s.handle_incoming(now, ([192, 0, 2, i], 6881).into()))
        .collect();
    while s.poll_action().is_some() {}
    let mut c = SessionConfig::new(PeerId(*b"-XX0001-zzzzzzzzzzzz"));
    c.max_connections = 2;
    c.pex = false;
    s.set_config(now, c);
    assert_eq!(s.num_connections(), 2);
    let mut closed = Vec::new();
    while let Some(a) = s.poll_action() {
        if let Action::Close { conn, reason } = a {
            assert_eq!(reason, CloseReason::Peer(PeerError::ConnectionLimit));
            closed.push(conn);
        }
    }
    closed.sort();
    // The newest first.
    assert_eq!(closed, conns[2..]);
    assert_eq!(s.config().peer_id, id);
    assert!(!s.config().pex);
}

/// A small torrent holds no more partial-piece slots than it has pieces (a daemon
/// with a thousand small torrents would otherwise carry 3.6 MiB of them); a large one
/// keeps the configured number.
#[test]
fn a_small_torrent_holds_no_more_partial_slots_than_pieces() {
    use super::{Session, SessionConfig};
    use crate::ids::PeerId;
    use crate::time::Instant;
    let now = Instant::from_millis(1000);
    let config = SessionConfig::new(PeerId::generate(3));
    let configured = config
        .picker
        .max_partials
        .max(config.max_peers_per_torrent * 2);
    let mut s = Session::new(config, 3);
    let small = s
        .add_torrent(now, &torrent_file(3 * 16384, 16384), None)
        .expect("small");
    let large = s
        .add_torrent(now, &torrent_file(1000 * 16384, 16384), None)
        .expect("large");
    let slots = |id| {
        s.torrents[&id]
            .meta
            .as_ref()
            .expect("meta")
            .picker
            .partial_capacity()
    };
    assert_eq!(slots(small), 3);
    assert_eq!(slots(large), configured);
}

/// `set_queue_order` places the torrents it names first, in its order, the others
/// after them in their present order; unknown ids and repeats are skipped.
#[test]
fn set_queue_order_places_the_named_torrents_first() {
    use super::{Session, SessionConfig, TorrentId};
    use crate::ids::PeerId;
    use crate::time::Instant;
    let now = Instant::from_millis(1000);
    let mut s = Session::new(SessionConfig::new(PeerId::generate(4)), 4);
    let ids: alloc::vec::Vec<TorrentId> = (1..=4u64)
        .map(|i| {
            s.add_torrent(now, &torrent_file(i * 16384, 16384), None)
                .expect("add")
        })
        .collect();
    s.set_queue_order(now, &[ids[3], TorrentId(999), ids[1], ids[3]]);
    let pos: alloc::vec::Vec<u32> = ids
        .iter()
        .map(|id| s.queue_position(*id).expect("pos"))
        .collect();
    assert_eq!(pos, [2, 1, 3, 0]);
}

/// The dials of a session under `policy` with one known peer: the actions after each
/// step, as (conn, transport) for connects and conn for closes.
#[cfg(test)]
mod transports {
    use super::super::{
        Action, ConnId, PeerSource, Session, SessionConfig, Transport, TransportPolicy,
    };
    use crate::ids::PeerId;
    use crate::time::Instant;
    use alloc::vec::Vec;
    use core::net::SocketAddr;

    #[derive(Debug, PartialEq, Eq)]
    enum Step {
        Connect(ConnId, Transport),
        Close(ConnId),
    }

    fn steps(s: &mut Session) -> Vec<Step> {
        let mut v = Vec::new();
        while let Some(a) = s.poll_action() {
            match a {
                Action::Connect {
                    conn, transport, ..
                } => v.push(Step::Connect(conn, transport)),
                Action::Close { conn, .. } => v.push(Step::Close(conn)),
                _ => {}
            }
        }
        v
    }

    fn session(policy: TransportPolicy) -> (Session, SocketAddr) {
        let mut c = SessionConfig::new(PeerId::generate(5));
        c.transport = policy;
        let mut s = Session::new(c, 5);
        let now = Instant::from_millis(1000);
        let id = s
            .add_torrent(now, &super::torrent_file(64 * 16384, 16384), None)
            .expect("torrent");
        let peer: SocketAddr = ([192, 0, 2, 9], 6881).into();
        s.handle_peers(now, id, &[peer], PeerSource::User);
        s.handle_timeout(now);
        (s, peer)
    }

    /// Both: uTP first; a refused uTP dial is made again over TCP under the same id,
    /// and that peer is dialed over TCP from then on.
    #[test]
    fn a_refused_utp_dial_falls_back_to_tcp_and_the_peer_stays_on_tcp() {
        let (mut s, _) = session(TransportPolicy::Both);
        let first = steps(&mut s);
        let Some(Step::Connect(conn, Transport::Utp)) = first.first() else {
            panic!("{first:?}");
        };
        let conn = *conn;
        let now = Instant::from_millis(1500);
        s.handle_connect_failed(now, conn);
        assert_eq!(steps(&mut s), [Step::Connect(conn, Transport::Tcp)]);
        // The TCP dial fails too: the next dial of that peer (after its backoff) is
        // TCP straight away.
        s.handle_connect_failed(now, conn);
        assert!(steps(&mut s).is_empty());
        let later = Instant::from_millis(600_000);
        s.handle_timeout(later);
        let again = steps(&mut s);
        assert!(
            matches!(again.first(), Some(Step::Connect(c, Transport::Tcp)) if *c != conn),
            "{again:?}"
        );
    }

    /// Both: a uTP dial unanswered for `utp_connect_timeout` is closed and dialed
    /// over TCP.
    #[test]
    fn an_unanswered_utp_dial_is_closed_and_dialed_over_tcp() {
        let (mut s, _) = session(TransportPolicy::Both);
        let Some(Step::Connect(conn, Transport::Utp)) = steps(&mut s).pop() else {
            panic!("no uTP dial");
        };
        s.handle_timeout(Instant::from_millis(3000));
        assert!(steps(&mut s).is_empty(), "too early");
        s.handle_timeout(Instant::from_millis(4100));
        assert_eq!(
            steps(&mut s),
            [Step::Close(conn), Step::Connect(conn, Transport::Tcp)]
        );
    }

    /// A uTP dial that came up and then died (a duplicate closed in the host's
    /// encryption handshake) is not dialed again over TCP.
    #[test]
    fn a_utp_dial_that_came_up_does_not_fall_back_to_tcp() {
        let (mut s, _) = session(TransportPolicy::Both);
        let Some(Step::Connect(conn, Transport::Utp)) = steps(&mut s).pop() else {
            panic!("no uTP dial");
        };
        s.handle_transport_connected(conn);
        s.handle_connect_failed(Instant::from_millis(1500), conn);
        let after = steps(&mut s);
        assert!(
            !after
                .iter()
                .any(|st| matches!(st, Step::Connect(_, Transport::Tcp))),
            "{after:?}"
        );
    }

    /// uTP only: a failed dial is a failed dial; TCP only: never uTP.
    #[test]
    fn single_transport_policies_never_use_the_other() {
        let (mut s, _) = session(TransportPolicy::UtpOnly);
        let Some(Step::Connect(conn, Transport::Utp)) = steps(&mut s).pop() else {
            panic!("no uTP dial");
        };
        s.handle_connect_failed(Instant::from_millis(1500), conn);
        assert!(steps(&mut s).is_empty());
        s.handle_timeout(Instant::from_millis(600_000));
        assert!(steps(&mut s)
            .iter()
            .all(|st| matches!(st, Step::Connect(_, Transport::Utp))));

        let (mut s, _) = session(TransportPolicy::TcpOnly);
        let first = steps(&mut s);
        assert!(matches!(
            first.first(),
            Some(Step::Connect(_, Transport::Tcp))
        ));
        s.handle_timeout(Instant::from_millis(10_000));
        assert!(steps(&mut s).iter().all(|st| !matches!(st, Step::Close(_))));
    }
}

/// A dialed peer's status says where we heard of it; of two sources better than PEX,
/// the first is kept.
#[test]
fn a_peer_status_names_where_the_peer_came_from() {
    use super::{PeerOrigin, PeerSource, Session, SessionConfig};
    use crate::ids::PeerId;
    use crate::time::Instant;
    use alloc::vec::Vec;
    use core::net::{IpAddr, SocketAddr};
    let mut s = Session::new(SessionConfig::new(PeerId::generate(5)), 5);
    let now = Instant::from_millis(1000);
    let id = s
        .add_torrent(now, &torrent_file(64 * 16384, 16384), None)
        .expect("torrent");
    let tracker: SocketAddr = ([192, 0, 2, 9], 6881).into();
    let dht: SocketAddr = ([192, 0, 2, 10], 6881).into();
    let lsd: SocketAddr = ([192, 0, 2, 11], 6881).into();
    let from = IpAddr::from([198, 51, 100, 1]);
    s.handle_peers(now, id, &[tracker], PeerSource::Tracker(from));
    s.handle_peers(now, id, &[dht, tracker], PeerSource::Dht);
    s.handle_peers(now, id, &[lsd], PeerSource::Lsd);
    s.handle_timeout(now);
    while s.poll_action().is_some() {}
    let mut got: Vec<(SocketAddr, PeerOrigin)> =
        s.peers(id).iter().map(|p| (p.addr, p.origin)).collect();
    got.sort_by_key(|(a, _)| *a);
    assert_eq!(
        got,
        [
            (tracker, PeerOrigin::Tracker),
            (dht, PeerOrigin::Dht),
            (lsd, PeerOrigin::Lsd)
        ]
    );
}

/// A running torrent that moves no payload for `queue_stalled_after` is stalled; a
/// paused one never is.
#[test]
fn a_running_torrent_without_payload_is_stalled_after_the_setting() {
    use super::{Session, SessionConfig};
    use crate::ids::PeerId;
    use crate::time::{Duration, Instant};
    let mut c = SessionConfig::new(PeerId::generate(5));
    c.queue_stalled_after = Some(Duration::from_secs(60));
    let mut s = Session::new(c, 5);
    let start = Instant::from_millis(1000);
    let id = s
        .add_torrent(start, &torrent_file(64 * 16384, 16384), None)
        .expect("torrent");
    let at = |ms: u64| Instant::from_millis(1000 + ms);
    let stalled = |s: &Session, ms| s.torrent_status(id, at(ms)).expect("status").stalled;
    assert!(!stalled(&s, 59_000));
    assert!(stalled(&s, 61_000));
    s.pause_torrent(at(61_000), id);
    assert!(!stalled(&s, 61_000));
}

/// A dial's twin is an incoming connection from the address it dials; another port of
/// the same host (another peer behind the same address) is not.
#[test]
fn a_dial_has_a_twin_only_in_a_connection_from_its_own_address() {
    use super::{Action, PeerSource, Session, SessionConfig};
    use crate::ids::PeerId;
    use crate::time::Instant;
    use core::net::SocketAddr;
    let mut s = Session::new(SessionConfig::new(PeerId::generate(5)), 5);
    let now = Instant::from_millis(1000);
    let id = s
        .add_torrent(now, &torrent_file(64 * 16384, 16384), None)
        .expect("torrent");
    let peer: SocketAddr = ([192, 0, 2, 9], 6881).into();
    s.handle_peers(now, id, &[peer], PeerSource::User);
    s.handle_timeout(now);
    let mut dial = None;
    while let Some(a) = s.poll_action() {
        if let Action::Connect { conn, .. } = a {
            dial = Some(conn);
        }
    }
    let dial = dial.expect("a dial");
    assert!(!s.has_twin(dial));
    let other = s.handle_incoming(now, ([192, 0, 2, 9], 50000).into());
    assert!(!s.has_twin(dial), "another port of the same host");
    assert!(!s.has_twin(other), "an incoming connection has no twin");
    s.handle_incoming(now, peer);
    assert!(s.has_twin(dial));
}

/// BEP 52: each piece of a v2-only or hybrid torrent made by libtorrent gets the node
/// of its file's piece layer (or the file's pieces root when the file is a piece or
/// less), the file's bytes in it and its tree's width; a hybrid's pieces are the same
/// as its v2-only twin's when the content is the same.
#[test]
fn merkle_pieces_follow_the_file_tree_and_piece_layers() {
    use crate::metainfo::{Limits, Metainfo};
    let cases: [(&str, &[u8]); 5] = [
        (
            "multi-v2",
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/data/conformance/v2-generated/multi-v2.torrent"
            )),
        ),
        (
            "multi-hybrid",
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/data/conformance/v2-generated/multi-hybrid.torrent"
            )),
        ),
        (
            "single-two-pieces-v2",
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/data/conformance/v2-generated/single-two-pieces-v2.torrent"
            )),
        ),
        (
            "single-tiny-v2",
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/data/conformance/v2-generated/single-tiny-v2.torrent"
            )),
        ),
        (
            "multi-64k-v2",
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/data/conformance/v2-generated/multi-64k-v2.torrent"
            )),
        ),
    ];
    for (name, file) in cases {
        let mut tokens = alloc::vec::Vec::new();
        let m = Metainfo::parse_vec(file, &mut tokens, &Limits::default()).expect(name);
        let pieces = super::merkle_pieces(&m).expect(name);
        let pl = m.piece_length();
        assert_eq!(pieces.len(), m.num_pieces() as usize, "{name}");
        let mut at = 0usize;
        let mut data_bytes = 0u64;
        for f in m.tree_files().expect(name) {
            if f.attr.pad || f.length == 0 {
                continue;
            }
            let root = *f.pieces_root().expect(name);
            let count = f.length.div_ceil(u64::from(pl)) as usize;
            for (k, p) in pieces[at..at + count].iter().enumerate() {
                let start = k as u64 * u64::from(pl);
                assert_eq!(
                    u64::from(p.len),
                    (f.length - start).min(u64::from(pl)),
                    "{name}"
                );
                if count == 1 {
                    assert_eq!(p.root, root, "{name}: a file of one piece");
                    let blocks = f.length.div_ceil(16_384);
                    assert_eq!(u64::from(p.width), blocks.next_power_of_two(), "{name}");
                } else {
                    let layer = m.piece_layer(&root).expect(name);
                    assert_eq!(p.root[..], layer[k * 32..k * 32 + 32], "{name}");
                    assert_eq!(p.width, pl / 16_384, "{name}");
                }
                data_bytes += u64::from(p.len);
            }
            at += count;
        }
        assert_eq!(at, pieces.len(), "{name}");
        let pads: u64 = m.files().filter(|f| f.attr.pad).map(|f| f.length).sum();
        assert_eq!(data_bytes + pads, m.total_size(), "{name}");
    }
    // A v1 torrent has none.
    let v1 = torrent_file(3 * 16384, 16384);
    let mut tokens = alloc::vec::Vec::new();
    let m = Metainfo::parse_vec(&v1, &mut tokens, &Limits::default()).expect("v1");
    assert!(super::merkle_pieces(&m).is_none());
}

/// The streaming hasher agrees with the merkle module's whole-piece functions (which
/// the corpus ties to libtorrent's trees), whatever the parts the bytes come in, and
/// refuses too few or too many bytes.
#[test]
fn merkle_piece_hasher_matches_the_merkle_module() {
    use super::MerklePiece;
    let mut rng = crate::rng::Rng::new(7);
    for (len, piece_len) in [
        (1usize, 16_384u32),
        (16_384, 16_384),
        (40_000, 65_536),
        (65_536, 65_536),
        (100_000, 262_144),
    ] {
        let data: alloc::vec::Vec<u8> = (0..len).map(|_| rng.next_u32() as u8).collect();
        // A piece of a file larger than a piece: padded to the piece's width.
        let p = MerklePiece {
            root: crate::merkle::piece_hash(&data, piece_len),
            len: len as u32,
            width: piece_len / 16_384,
        };
        assert!(p.matches(&data), "{len}");
        for cut in [1usize, 7, 16_384, 20_000] {
            let mut h = p.hasher();
            for part in data.chunks(cut) {
                h.update(part);
            }
            assert!(h.matches(), "{len} in parts of {cut}");
        }
        // Padding past `len` is ignored; a short piece or a changed byte is not.
        let mut padded = data.clone();
        padded.extend_from_slice(&[0; 100]);
        assert!(p.matches(&padded), "{len} padded");
        assert!(!p.matches(&data[..len - 1]), "{len} short");
        let mut bad = data.clone();
        bad[len / 2] ^= 1;
        assert!(!p.matches(&bad), "{len} changed");
        // A whole small file: padded to the next power of two of its blocks.
        if len <= piece_len as usize {
            let small = MerklePiece {
                root: crate::merkle::small_file_root(&data).expect("root"),
                len: len as u32,
                width: (len.div_ceil(16_384) as u32).next_power_of_two(),
            };
            assert!(small.matches(&data), "{len} small file");
        }
    }
}

/// A v2-only torrent is added (no v1 hash to give), and a hybrid piece whose two
/// hashes disagree stops the torrent with `HashesDisagree`, once.
#[test]
fn v2_torrents_are_added_and_disagreeing_hashes_stop_a_hybrid() {
    use super::{DiskError, Session, SessionConfig, TorrentState};
    use crate::ids::{PeerId, PieceIndex};
    use crate::time::Instant;
    let now = Instant::from_millis(1000);
    let mut s = Session::new(SessionConfig::new(PeerId::generate(1)), 1);
    let v2 = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/conformance/v2-generated/multi-v2.torrent"
    ));
    let hybrid = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/conformance/v2-generated/multi-hybrid.torrent"
    ));
    let a = s.add_torrent(now, v2, None).expect("v2-only");
    let b = s.add_torrent(now, hybrid, None).expect("hybrid");
    assert_eq!(
        s.torrent_status(a, now).expect("a").state,
        TorrentState::Downloading
    );
    s.handle_hashes_disagree(now, b, PieceIndex(0));
    s.handle_hashes_disagree(now, b, PieceIndex(1));
    let st = s.torrent_status(b, now).expect("b");
    assert_eq!(
        (st.state, st.error),
        (TorrentState::Error, Some(DiskError::HashesDisagree))
    );
    let failed: alloc::vec::Vec<_> = core::iter::from_fn(|| s.poll_event())
        .filter(|e| matches!(e, super::Event::DiskFailed(..)))
        .collect();
    assert_eq!(
        failed,
        [super::Event::DiskFailed(b, DiskError::HashesDisagree)]
    );
    assert_eq!(
        s.torrent_status(a, now).expect("a").state,
        TorrentState::Downloading
    );
}
