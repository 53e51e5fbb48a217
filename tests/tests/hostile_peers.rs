//! Peers that try to exhaust a btcore session: scripted frame by frame against one
//! session (`btcore_tests::scripted`), a peer that never reads while it asks for
//! metadata and blocks, one address opening connection after connection, a peer id
//! connected twice; and in the swarm simulation (`btcore_tests::sim`), addresses that
//! hog a seed's connection slots while honest leechers join. Each test asserts a
//! counted bound (bytes queued, connections held), never a timing.

use btcore_core::ids::{BlockRef, PieceIndex};
use btcore_core::peer::{PeerConfig, PeerError};
use btcore_core::session::SessionConfig;
use btcore_core::time::Duration;
use btcore_core::wire::Message;
use btcore_tests::scripted::{frames, info_hash_of, peer_id, zero_torrent, Host};
use btcore_tests::sim::{content, Behaviour, LinkSpec, Sim};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// btcore's local id for `ut_metadata`: what a peer puts in its requests.
const OUR_UT_METADATA: u8 = 2;
const PIECE_LEN: u32 = 16 * 1024;
/// 1,024 pieces: an info dictionary of 20 KiB, two metadata pieces (16 KiB + 4 KiB).
const PIECES: u32 = 1024;

fn addr(a: u8, b: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, a, b)), port)
}

/// The most a connection may ever have queued: blocks up to `max_send_buffer`, other
/// messages up to `send_allowance`, and our bitfield once (length prefix and id
/// included).
fn queue_bound(p: &PeerConfig, pieces: u32) -> usize {
    p.max_send_buffer + p.send_allowance + pieces.div_ceil(8) as usize + 5
}

/// A seeding session and a peer that completed its handshakes and said it is
/// interested.
fn seeder_and_peer(config: SessionConfig) -> (Host, btcore_core::session::ConnId) {
    let (file, content) = zero_torrent(PIECES, PIECE_LEN);
    let mut host = Host::new(config, 7);
    host.add_torrent(&file, &content, PIECE_LEN, true);
    let conn = host.incoming(addr(0, 7, 50_000));
    let mut hello = frames::handshake(info_hash_of(&file), peer_id(1));
    hello.extend(frames::ext_handshake(3));
    hello.extend(frames::message(&Message::Interested));
    host.recv(conn, &hello);
    assert!(host.is_open(conn), "{:?}", host.close_reason(conn));
    (host, conn)
}

/// 4 KiB of what a hostile peer sends: `ut_metadata` requests (31 bytes each, every
/// one asking for up to 16 KiB) and block requests, `k` picking which.
fn flood_chunk(k: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < 4096 {
        out.extend(frames::metadata_request(OUR_UT_METADATA, (i + k) % 2));
        if i % 4 == 0 {
            out.extend(frames::request(BlockRef {
                piece: PieceIndex((k * 7 + i) % PIECES),
                offset: 0,
                len: PIECE_LEN,
            }));
        }
        i += 1;
    }
    out
}

/// 0.8 MB of metadata and block requests from a peer that never reads: what is
/// queued for it never passes the bound, whatever the host does with
/// `wants_recv` (here it keeps feeding). Before the send queue had a cap, the first
/// 4 KiB queued 2 MiB of metadata replies (and 0.74 MB grew a seed by 376 MiB).
#[test]
fn a_peer_that_never_reads_cannot_grow_what_is_queued_for_it() {
    let config = SessionConfig::new(peer_id(999));
    let bound = queue_bound(&config.peer, PIECES);
    let (mut host, conn) = seeder_and_peer(config);
    let mut fed = 0;
    let mut most = 0;
    let mut asked_to_stop = false;
    for k in 0..200 {
        let chunk = flood_chunk(k);
        fed += chunk.len();
        host.recv(conn, &chunk);
        let Some(b) = host.session.conn_buffers(conn) else {
            break;
        };
        most = most.max(b.send_queued);
        asked_to_stop |= !host.session.wants_recv(conn);
        assert!(
            b.send_queued <= bound,
            "{} bytes queued after {fed} bytes of requests (bound {bound})",
            b.send_queued
        );
    }
    println!(
        "fed {fed} bytes; most queued {most} (bound {bound}); closed: {:?}",
        host.close_reason(conn)
    );
    assert!(asked_to_stop || !host.is_open(conn));
    // Whatever stayed open stays bounded, and the peer, which never read, is gone by
    // the idle timeout.
    host.advance(Duration::from_secs(200));
    assert!(!host.is_open(conn));
}

/// A host that follows `wants_recv`: reading stops while the peer has not read what
/// is queued for it (the connection stays open, under the bound, nothing dropped),
/// starts again once it reads, and a peer that never reads again is closed by the
/// idle timeout.
#[test]
fn backpressure_stops_reading_until_the_peer_reads() {
    let config = SessionConfig::new(peer_id(999));
    let bound = queue_bound(&config.peer, PIECES);
    let idle = config.peer.idle_timeout;
    let (mut host, conn) = seeder_and_peer(config);
    let mut fed = 0;
    let mut k = 0;
    while host.session.wants_recv(conn) && fed < 800_000 {
        let chunk = flood_chunk(k);
        k += 1;
        fed += chunk.len();
        host.recv(conn, &chunk);
    }
    assert!(
        !host.session.wants_recv(conn),
        "never asked to stop reading"
    );
    assert!(host.is_open(conn), "{:?}", host.close_reason(conn));
    let queued = host.session.conn_buffers(conn).expect("open").send_queued;
    assert!(queued <= bound, "{queued} > {bound}");
    println!("reading stopped after {fed} bytes of requests with {queued} bytes queued");
    assert!(fed < 200_000, "{fed} bytes read before the stop");

    // The peer reads: reading resumes.
    let got = host.read_from(conn, usize::MAX);
    assert!(got.len() >= queued);
    assert!(host.session.wants_recv(conn));
    host.recv(conn, &flood_chunk(k));
    assert!(host.is_open(conn));

    // It never reads again and the host stops feeding it: the idle timeout closes it.
    while host.session.wants_recv(conn) {
        k += 1;
        host.recv(conn, &flood_chunk(k));
    }
    host.advance(Duration::from_millis(idle.as_millis() + 2_000));
    assert_eq!(host.close_reason(conn), Some(Some(PeerError::Idle)));
}

/// A seeding session with `config` for a small torrent; returns the host and the
/// torrent's handshake for a peer id.
fn small_seeder(config: SessionConfig) -> (Host, impl Fn(u64) -> Vec<u8>) {
    let (file, content) = zero_torrent(16, PIECE_LEN);
    let mut host = Host::new(config, 11);
    host.add_torrent(&file, &content, PIECE_LEN, true);
    let ih = info_hash_of(&file);
    (host, move |id| frames::handshake(ih, peer_id(id)))
}

/// A peer id already connected to the torrent: a second connection with it closes
/// (from another address, or from the same one in the same direction), and the first
/// stays.
#[test]
fn a_second_connection_of_a_connected_peer_id_closes() {
    let (mut host, hs) = small_seeder(SessionConfig::new(peer_id(999)));
    let first = host.incoming(addr(0, 1, 50_000));
    host.recv(first, &hs(5));
    assert!(host.is_open(first));
    let other_address = host.incoming(addr(0, 2, 50_001));
    host.recv(other_address, &hs(5));
    assert_eq!(
        host.close_reason(other_address),
        Some(Some(PeerError::Duplicate))
    );
    let same_address = host.incoming(addr(0, 1, 50_002));
    host.recv(same_address, &hs(5));
    assert_eq!(
        host.close_reason(same_address),
        Some(Some(PeerError::Duplicate))
    );
    assert!(host.is_open(first));
    // Another peer id from the first address is another peer.
    let neighbour = host.incoming(addr(0, 1, 50_003));
    host.recv(neighbour, &hs(6));
    assert!(host.is_open(neighbour));
}

/// One address opening connection after connection, bare or with handshakes under
/// fresh peer ids, holds at most `max_peers_per_ip` connections in handshake and as
/// many attached to the torrent; honest peers from other addresses keep getting in,
/// also when the table is full (a connection still in its handshake gives way), and a
/// bare connection holds its slot only for the incoming handshake timeout.
#[test]
fn one_address_cannot_hold_every_slot() {
    let mut config = SessionConfig::new(peer_id(999));
    config.max_connections = 20;
    config.max_peers_per_torrent = 20;
    let per_ip = config.max_peers_per_ip;
    let handshake_timeout = config.peer.incoming_handshake_timeout;
    let (mut host, hs) = small_seeder(config);
    let attacker = |port: u16| addr(0, 66, port);
    let held = |host: &Host, conns: &[btcore_core::session::ConnId]| {
        conns.iter().filter(|c| host.is_open(**c)).count()
    };

    let mut bare = Vec::new();
    for port in 0..100 {
        bare.push(host.incoming(attacker(40_000 + port)));
        assert!(held(&host, &bare) <= per_ip, "{} bare", held(&host, &bare));
    }
    let mut honest = Vec::new();
    for i in 0..10u8 {
        let c = host.incoming(addr(1, i, 6881));
        host.recv(c, &hs(100 + u64::from(i)));
        honest.push(c);
    }
    assert_eq!(held(&host, &honest), 10, "{:?}", host.closed);

    // With handshakes under new peer ids each time.
    let mut shaken = Vec::new();
    for port in 0..100 {
        let c = host.incoming(attacker(41_000 + port));
        host.recv(c, &hs(10_000 + u64::from(port)));
        shaken.push(c);
        let total = held(&host, &bare) + held(&host, &shaken);
        assert!(total <= 2 * per_ip, "the address holds {total} connections");
    }
    assert!(held(&host, &shaken) > 0);
    assert_eq!(held(&host, &honest), 10);

    // Fill the table with honest peers: each newcomer finds room, the attacker's
    // connections still in their handshake give way first.
    while host.session.num_connections() < 20 {
        let i = honest.len() as u8;
        let c = host.incoming(addr(2, i, 6881));
        host.recv(c, &hs(200 + u64::from(i)));
        honest.push(c);
    }
    for i in 0..4u8 {
        let c = host.incoming(addr(3, i, 6881));
        host.recv(c, &hs(300 + u64::from(i)));
        honest.push(c);
    }
    let open_honest = held(&host, &honest);
    assert!(
        open_honest >= 20 - per_ip,
        "{open_honest} honest peers of {} connected",
        honest.len()
    );
    assert!(host.session.num_connections() <= 20);

    // A bare connection from a fresh address is closed at the incoming handshake
    // timeout.
    let mut config = SessionConfig::new(peer_id(999));
    config.max_connections = 20;
    let (mut host, _) = small_seeder(config);
    let c = host.incoming(addr(4, 1, 6881));
    host.advance(Duration::from_millis(handshake_timeout.as_millis() - 500));
    assert!(host.is_open(c));
    host.advance(Duration::from_secs(2));
    assert_eq!(
        host.close_reason(c),
        Some(Some(PeerError::HandshakeTimeout))
    );
}

// ---------------------------------------------------------------------------------
// In the simulation: whole swarms of btcore sessions.
// ---------------------------------------------------------------------------------

/// Two addresses hammer a seed, keeping 200 connections each open to it (one bare,
/// one completing handshakes under fresh peer ids); honest leechers that join later
/// all get in and finish, and neither address ever holds more than its share.
#[test]
fn in_a_swarm_one_address_cannot_keep_honest_peers_out() {
    let mut sim = Sim::new(content(64 * 16_384, 31), 16_384, 32);
    let seed = sim.add_node(true, Behaviour::Honest, LinkSpec::default(), |c| {
        c.max_connections = 30;
        c.max_peers_per_torrent = 30;
    });
    let per_ip = SessionConfig::new(peer_id(0)).max_peers_per_ip;
    let bare = sim.add_hog(seed, 200, false);
    let shaking = sim.add_hog(seed, 200, true);
    sim.run_for(Duration::from_secs(2));
    let leechers: Vec<usize> = (0..8)
        .map(|_| sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |_| {}))
        .collect();
    let mut most = (0, 0);
    let ok = sim.run_until(Duration::from_secs(60), |s| {
        most.0 = most.0.max(s.hog_conns(bare));
        most.1 = most.1.max(s.hog_conns(shaking));
        leechers.iter().all(|&l| s.nodes[l].finished_at.is_some())
    });
    let done = leechers
        .iter()
        .filter(|&&l| sim.nodes[l].finished_at.is_some())
        .count();
    println!(
        "{done}/8 leechers done by {:?}; the hogs held at most {most:?} connections",
        sim.now
    );
    assert!(ok, "{done}/8 leechers finished");
    assert!(most.0 <= per_ip, "bare: {}", most.0);
    assert!(most.1 <= 2 * per_ip, "with handshakes: {}", most.1);
    for &l in &leechers {
        assert!(sim.has_correct_data(l));
    }
}

/// Two peers that dial each other at the same moment keep one connection (each side
/// drops the same one of the two).
#[test]
fn peers_that_dial_each_other_keep_one_connection() {
    let mut sim = Sim::new(content(256 * 16_384, 41), 16_384, 42);
    let a = sim.add_node(true, Behaviour::Honest, LinkSpec::default(), |_| {});
    let b = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |_| {});
    sim.run_for(Duration::from_secs(2));
    assert!(sim.nodes[b].finished_at.is_none());
    assert_eq!((sim.links_between(a, b), sim.links_between(b, a)), (1, 1));
    let dropped: Vec<_> = [a, b]
        .iter()
        .flat_map(|&n| sim.nodes[n].closed.clone())
        .collect();
    assert!(
        !dropped.is_empty()
            && dropped
                .iter()
                .all(|(_, e)| *e == Some(PeerError::Duplicate)),
        "{dropped:?}"
    );
    let ok = sim.run_until(Duration::from_secs(60), |s| {
        s.nodes[b].finished_at.is_some()
    });
    assert!(ok && sim.has_correct_data(b));
}
