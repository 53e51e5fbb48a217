//! Peers that try to exhaust a btcore session: scripted frame by frame against one
//! session (`btcore_tests::scripted`), a peer that never reads while it asks for
//! metadata and blocks, one address opening connection after connection, a peer id
//! connected twice or spoofed from another address, bare or idle connections from many
//! addresses holding the slots, PEX filling the known-peer list, remote parties naming
//! addresses of this machine; in the swarm simulation (`btcore_tests::sim`), addresses
//! that hog a seed's connection slots while honest leechers join; and on the real host
//! loop (sockets on 127.0.0.1), a connect flood. Each test asserts a counted bound
//! (bytes queued, connections held, dials made, connections accepted per turn), never
//! a timing.

use btcore_core::ids::{BlockRef, InfoHash, PieceIndex};
use btcore_core::peer::{PeerConfig, PeerError};
use btcore_core::session::{CloseReason, ConnId, PeerSource, SessionConfig, TorrentId};
use btcore_core::time::Duration;
use btcore_core::wire::Message;
use btcore_tests::scripted::{frames, info_hash_of, peer_id, zero_torrent, Host};
use btcore_tests::sim::{content, Behaviour, LinkSpec, Sim};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// btcore's local id for `ut_metadata`: what a peer puts in its requests.
const OUR_UT_METADATA: u8 = 2;
/// btcore's local id for `ut_pex`.
const OUR_UT_PEX: u8 = 1;
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
    let first = k;
    while host.session.wants_recv(conn) {
        k += 1;
        assert!(
            k - first <= 1_000,
            "still wanting to read after 1,000 chunks (4 MiB) from a peer that never reads"
        );
        host.recv(conn, &flood_chunk(k));
    }
    host.advance(Duration::from_millis(idle.as_millis() + 2_000));
    assert_eq!(
        host.close_reason(conn),
        Some(CloseReason::Peer(PeerError::Idle))
    );
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

/// A peer id already connected to the torrent: a second connection with it from the
/// same address closes, and the first stays. From another address it is another
/// peer to us (a peer id is whatever the peer says), and both stay.
#[test]
fn a_second_connection_of_a_connected_peer_id_closes() {
    let (mut host, hs) = small_seeder(SessionConfig::new(peer_id(999)));
    let first = host.incoming(addr(0, 1, 50_000));
    host.recv(first, &hs(5));
    assert!(host.is_open(first));
    let same_address = host.incoming(addr(0, 1, 50_002));
    host.recv(same_address, &hs(5));
    assert_eq!(
        host.close_reason(same_address),
        Some(CloseReason::Peer(PeerError::Duplicate))
    );
    assert!(host.is_open(first));
    let other_address = host.incoming(addr(0, 2, 50_001));
    host.recv(other_address, &hs(5));
    assert!(host.is_open(other_address), "{:?}", host.closed);
    assert!(host.is_open(first));
    // Another peer id from the first address is another peer.
    let neighbour = host.incoming(addr(0, 1, 50_003));
    host.recv(neighbour, &hs(6));
    assert!(host.is_open(neighbour));
}

/// A downloading session for a small torrent of zeros; returns the host, the torrent
/// and its info-hash.
fn leecher(config: SessionConfig) -> (Host, TorrentId, InfoHash) {
    let (file, content) = zero_torrent(16, PIECE_LEN);
    let mut host = Host::new(config, 13);
    let t = host.add_torrent(&file, &content, PIECE_LEN, false);
    (host, t, info_hash_of(&file))
}

/// Peers from a tracker that is not on this machine.
fn tracker() -> PeerSource {
    PeerSource::Tracker(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)))
}

fn keepalive() -> Vec<u8> {
    frames::message(&Message::KeepAlive)
}

/// An attacker reads the honest seed's peer id from its handshake, connects to the
/// victim first with that id from its own address, and keeps the connection alive:
/// every connection of the real seed must still get in and be asked for blocks.
/// Before, each was closed as a duplicate and the download never started.
#[test]
fn a_spoofed_peer_id_does_not_lock_the_real_peer_out() {
    let (mut host, _, ih) = leecher(SessionConfig::new(peer_id(999)));
    let seed_id = 4242;
    let spoof = host.incoming(addr(0, 66, 40_000));
    host.recv(spoof, &frames::handshake(ih, peer_id(seed_id)));
    assert!(host.is_open(spoof));
    for round in 0..3u16 {
        let seed = host.incoming(addr(1, 1, 6881 + round));
        let mut hello = frames::handshake(ih, peer_id(seed_id));
        hello.extend(frames::message(&Message::HaveAll));
        hello.extend(frames::message(&Message::Unchoke));
        host.recv(seed, &hello);
        assert!(
            host.is_open(seed),
            "round {round}: the real seed was closed: {:?}",
            host.close_reason(seed)
        );
        let asked = frames::requests(&host.read_from(seed, usize::MAX));
        assert!(
            !asked.is_empty(),
            "round {round}: nothing asked of the seed"
        );
        host.disconnect(seed);
        host.recv(spoof, &keepalive());
        host.advance(Duration::from_secs(20));
        assert!(host.is_open(spoof));
    }
}

/// 50 addresses keep 4 bare TCP connections each open to a downloading session
/// (renewed every 9 s, under the 10 s incoming handshake timeout): 200 connections,
/// the whole table. The session must still dial the peers a tracker gives (a share
/// of the table is kept for our dials), take honest incoming peers, and never give
/// up a dial of its own for an incoming newcomer. Before, no dial ever went out.
#[test]
fn bare_connections_from_many_addresses_do_not_stop_dialing() {
    let config = SessionConfig::new(peer_id(999));
    let max = config.max_connections;
    let (mut host, t, ih) = leecher(config);
    host.hold_dials = true;
    let renew = |host: &mut Host, round: u16| {
        for g in 0..50u8 {
            for k in 0..4u16 {
                host.incoming(addr(10, g, 30_000 + round * 4 + k));
            }
        }
    };
    renew(&mut host, 0);
    assert!(host.session.num_connections() >= max - max / 10);
    let candidates: Vec<SocketAddr> = (1..=20u8).map(|i| addr(20, i, 6881)).collect();
    host.session
        .handle_peers(host.now, t, &candidates, tracker());
    host.drain();
    let mut honest = Vec::new();
    for round in 1..8u16 {
        host.advance(Duration::from_secs(9));
        renew(&mut host, round);
        let c = host.incoming(addr(30, round as u8, 6881));
        host.recv(c, &frames::handshake(ih, peer_id(500 + u64::from(round))));
        honest.push(c);
    }
    let dialed: Vec<&SocketAddr> = host
        .dialed
        .iter()
        .filter(|a| candidates.contains(a))
        .collect();
    println!(
        "{} dials to the tracker's peers, {} pending; {} connections",
        dialed.len(),
        host.pending_dials.len(),
        host.session.num_connections()
    );
    assert!(!dialed.is_empty(), "no dial went out under the flood");
    for d in &host.pending_dials {
        assert_eq!(host.close_reason(*d), None, "our dial {d:?} was given up");
        assert!(host.is_open(*d));
    }
    let open = honest.iter().filter(|c| host.is_open(**c)).count();
    let why: Vec<_> = honest.iter().map(|c| host.close_reason(*c)).collect();
    assert_eq!(open, honest.len(), "honest peers closed: {why:?}");
}

/// Incoming connections from many addresses (one each, as a botnet would) while our
/// own dials wait for their TCP connect: the table fills, and each newcomer replaces
/// a connection still in its handshake, but never one we dialed. Before, the oldest
/// went first: our dials.
#[test]
fn incoming_newcomers_never_replace_our_dials() {
    let mut config = SessionConfig::new(peer_id(999));
    config.max_connections = 40;
    let (mut host, t, _) = leecher(config);
    host.hold_dials = true;
    let candidates: Vec<SocketAddr> = (1..=20u8).map(|i| addr(20, i, 6881)).collect();
    host.session
        .handle_peers(host.now, t, &candidates, tracker());
    host.drain();
    let ours = host.pending_dials.clone();
    assert!(!ours.is_empty());
    for i in 0..300u16 {
        host.incoming(addr(40 + (i / 250) as u8, (i % 250) as u8, 50_000));
        if i % 50 == 0 {
            host.advance(Duration::from_secs(1));
        }
    }
    for d in &ours {
        assert_eq!(host.close_reason(*d), None, "our dial {d:?} was given up");
    }
    assert!(host.session.num_connections() <= 40);
}

/// 13 addresses hold 4 connections each to a downloading session's torrent (its 50
/// slots): they complete the handshake, then only send keep-alives. An honest seed
/// that connects must get in (an idle connection gives way), and the peers a tracker
/// gives must be dialed (peer turnover drops a share of the least useful connections
/// of a full torrent). Before, the hogs held the torrent for good.
#[test]
fn idle_connections_do_not_hold_a_torrent_for_good() {
    let config = SessionConfig::new(peer_id(999));
    let per_torrent = config.max_peers_per_torrent;
    let (mut host, t, ih) = leecher(config);
    let mut hogs = Vec::new();
    for g in 0..13u8 {
        for k in 0..4u16 {
            let c = host.incoming(addr(50, g, 40_000 + k));
            host.recv(
                c,
                &frames::handshake(ih, peer_id(1000 + u64::from(g) * 10 + u64::from(k))),
            );
            hogs.push(c);
        }
    }
    let held = |host: &Host| hogs.iter().filter(|c| host.is_open(**c)).count();
    assert_eq!(held(&host), per_torrent);
    let keep_alive = |host: &mut Host, others: &[ConnId]| {
        for c in hogs.iter().chain(others) {
            if host.is_open(*c) {
                host.recv(*c, &keepalive());
            }
        }
    };
    host.advance(Duration::from_secs(10));
    keep_alive(&mut host, &[]);
    // An honest seed connects (it never unchokes us, but keeps the connection
    // alive).
    let seed = host.incoming(addr(51, 1, 6881));
    let mut hello = frames::handshake(ih, peer_id(1));
    hello.extend(frames::message(&Message::HaveAll));
    host.recv(seed, &hello);
    assert!(
        host.is_open(seed),
        "the honest seed was refused: {:?}",
        host.close_reason(seed)
    );
    // A tracker gives peers; they are dialed within a turnover interval.
    let candidates: Vec<SocketAddr> = (1..=10u8).map(|i| addr(52, i, 6881)).collect();
    host.session
        .handle_peers(host.now, t, &candidates, tracker());
    host.drain();
    let mut waited = 0;
    while !host.dialed.iter().any(|a| candidates.contains(a)) && waited < 400 {
        host.advance(Duration::from_secs(30));
        keep_alive(&mut host, &[seed]);
        waited += 30;
    }
    println!(
        "dialed after {waited} s; the hogs hold {} connections",
        held(&host)
    );
    assert!(
        host.dialed.iter().any(|a| candidates.contains(a)),
        "no tracker peer dialed in {waited} s"
    );
    assert!(host.is_open(seed));
}

/// 5 PEX messages of 100 junk addresses each (the known-peer list holds 500): the
/// peers a tracker gives afterwards must still be dialed, and one address's PEX holds
/// only its share of the list. Before, the list refused newcomers once full.
#[test]
fn pex_cannot_crowd_tracker_peers_out() {
    let (mut host, t, ih) = leecher(SessionConfig::new(peer_id(999)));
    let pexer = host.incoming(addr(60, 1, 6881));
    host.recv(pexer, &frames::handshake(ih, peer_id(7)));
    assert!(host.is_open(pexer));
    let mut junk = Vec::new();
    for m in 0..5u16 {
        let mut added = Vec::new();
        for i in 0..50u16 {
            let n = m * 50 + i;
            added.push(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(100, 64, (n / 250) as u8, (n % 250) as u8 + 1)),
                6881,
            ));
            added.push(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x66, n, 0, 0, 0, 1)),
                6881,
            ));
        }
        host.recv(pexer, &frames::pex(OUR_UT_PEX, &added));
        junk.extend(added);
    }
    assert!(host.is_open(pexer));
    let candidates: Vec<SocketAddr> = (1..=10u8).map(|i| addr(61, i, 6881)).collect();
    host.session
        .handle_peers(host.now, t, &candidates, tracker());
    host.drain();
    host.advance(Duration::from_secs(5));
    let missing: Vec<&SocketAddr> = candidates
        .iter()
        .filter(|a| !host.dialed.contains(a))
        .collect();
    assert!(
        missing.is_empty(),
        "tracker peers never dialed: {missing:?}"
    );
    // However long it runs, one address's PEX gets only its share of the list.
    host.advance(Duration::from_secs(600));
    let from_pex: std::collections::BTreeSet<&SocketAddr> =
        host.dialed.iter().filter(|a| junk.contains(a)).collect();
    let share = SessionConfig::new(peer_id(0)).max_known_peers / 10;
    println!("{} of {} PEX addresses dialed", from_pex.len(), junk.len());
    assert!(from_pex.len() <= share, "{} PEX addresses", from_pex.len());
}

/// Addresses of this machine named by remote parties are never dialed: from a PEX
/// message of a remote peer, a tracker's peer list (a tracker not on loopback), or a
/// magnet link's `x.pe`. From a peer on loopback, or added by the user, they are.
#[test]
fn remote_parties_cannot_make_us_dial_this_machine() {
    let (mut host, t, ih) = leecher(SessionConfig::new(peer_id(999)));
    let local: Vec<SocketAddr> = [
        "127.0.0.1:22",
        "127.0.0.2:6881",
        "[::1]:631",
        "[::ffff:127.0.0.1]:25",
    ]
    .iter()
    .map(|s| s.parse().expect("address"))
    .collect();
    let public = addr(70, 1, 6881);
    let remote = host.incoming(addr(70, 2, 6881));
    host.recv(remote, &frames::handshake(ih, peer_id(8)));
    let mut named = local.clone();
    named.push(public);
    host.recv(remote, &frames::pex(OUR_UT_PEX, &named));
    host.session.handle_peers(host.now, t, &local, tracker());
    host.drain();
    let (file2, _) = zero_torrent(8, PIECE_LEN);
    let uri = format!(
        "magnet:?xt=urn:btih:{}&x.pe=127.0.0.1:9091&x.pe=198.51.70.3:6881",
        info_hash_of(&file2)
    );
    host.session
        .add_magnet(host.now, uri.as_bytes())
        .expect("magnet added");
    host.drain();
    host.advance(Duration::from_secs(5));
    let looped: Vec<&SocketAddr> = host
        .dialed
        .iter()
        .filter(|a| a.ip().to_canonical().is_loopback())
        .collect();
    assert!(looped.is_empty(), "dialed this machine: {looped:?}");
    assert!(host.dialed.contains(&public));
    assert!(host.dialed.contains(&addr(70, 3, 6881)));
    // A peer on this machine may name others on it.
    let neighbour = host.incoming("127.0.0.1:40000".parse().expect("address"));
    host.recv(neighbour, &frames::handshake(ih, peer_id(9)));
    let ok: SocketAddr = "127.0.0.1:7000".parse().expect("address");
    host.recv(neighbour, &frames::pex(OUR_UT_PEX, &[ok]));
    // So may the user, and a tracker on this machine.
    let by_hand: SocketAddr = "127.0.0.1:7001".parse().expect("address");
    host.session
        .handle_peers(host.now, t, &[by_hand], PeerSource::User);
    let from_local: SocketAddr = "[::1]:7002".parse().expect("address");
    let local_tracker = PeerSource::Tracker("127.0.0.1".parse().expect("ip"));
    host.session
        .handle_peers(host.now, t, &[from_local], local_tracker);
    host.advance(Duration::from_secs(2));
    for a in [ok, by_hand, from_local] {
        assert!(
            host.dialed.contains(&a),
            "{a} not dialed: {:?}",
            host.dialed
        );
    }
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
    // What incoming connections may hold of the table (the rest is for our dials).
    let incoming_cap = 20 - 20 * config.outgoing_share as usize / 100;
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
    assert_eq!(held(&host, &honest), 10);

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
    while host.session.num_connections() < incoming_cap {
        assert!(
            honest.len() < 200,
            "{} honest peers and still only {} of {incoming_cap} connections",
            honest.len(),
            host.session.num_connections()
        );
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
        open_honest >= incoming_cap - per_ip,
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
        Some(CloseReason::Peer(PeerError::HandshakeTimeout))
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
                .all(|(_, e)| *e == CloseReason::Peer(PeerError::Duplicate)),
        "{dropped:?}"
    );
    let ok = sim.run_until(Duration::from_secs(60), |s| {
        s.nodes[b].finished_at.is_some()
    });
    assert!(ok && sim.has_correct_data(b));
}

/// A connect flood on the real host loop (sockets on 127.0.0.1): 96 peers connect at
/// once, each with its handshake already sent. One turn of the loop accepts at most
/// [`ACCEPTS_PER_TURN`](btcore_host::client::ACCEPTS_PER_TURN) of them, so the peers
/// already connected are read between the batches; the rest are accepted in the next
/// turns, none lost. Before, one turn accepted the whole backlog (and the next read
/// every one of them) whatever its length.
#[test]
fn a_connect_flood_is_accepted_a_batch_per_turn() {
    use btcore_core::session::TorrentState;
    use btcore_host::client::{Client, ClientOptions, ACCEPTS_PER_TURN};
    use std::io::Write;
    use std::time::Instant as Wall;

    const FLOOD: usize = 96;
    let dir = std::env::temp_dir().join(format!("btcore-accept-flood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let mut client = Client::new(ClientOptions {
        listen: "127.0.0.1:0".parse().expect("address"),
        save_dir: dir.clone(),
        use_trackers: false,
        max_peers: 200,
        max_connections: 200,
        seed: 7,
        ..ClientOptions::default()
    })
    .expect("client");
    let (file, _) = zero_torrent(16, PIECE_LEN);
    let ih = info_hash_of(&file);
    let id = client.add_torrent_file(&file, None).expect("torrent");
    let deadline = Wall::now() + std::time::Duration::from_secs(20);
    let checking = |c: &Client| {
        c.torrents()
            .iter()
            .any(|t| t.id == id && t.status.state == TorrentState::Checking)
    };
    while checking(&client) && Wall::now() < deadline {
        client
            .run_once(std::time::Duration::from_millis(10))
            .expect("turn");
    }
    assert!(!checking(&client), "the torrent is still being checked");
    let to = client.local_addr();
    let mut peers = Vec::new();
    for i in 0..FLOOD {
        let mut s = std::net::TcpStream::connect(to).expect("connect");
        s.write_all(&frames::handshake(ih, peer_id(10_000 + i as u64)))
            .expect("handshake");
        peers.push(s);
    }
    // Turn 1 accepts; turn 2 reads what turn 1 accepted (and accepts the next batch).
    for _ in 0..2 {
        client
            .run_once(std::time::Duration::from_millis(200))
            .expect("turn");
    }
    let after_two = client.peers(id).len();
    println!("{after_two} of {FLOOD} peers attached after two turns");
    assert!(
        after_two <= ACCEPTS_PER_TURN,
        "{after_two} peers attached in two turns"
    );
    while client.peers(id).len() < FLOOD && Wall::now() < deadline {
        client
            .run_once(std::time::Duration::from_millis(10))
            .expect("turn");
    }
    let all = client.peers(id).len();
    drop(peers);
    drop(client);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(all, FLOOD, "connections lost in the backlog");
}

/// A datagram flood on the DHT port of the real host loop (127.0.0.1): one turn handles
/// at most [`DHT_READS_PER_TURN`](btcore_host::client::DHT_READS_PER_TURN) of them, so
/// the loop goes back to its peers between batches; the rest are handled in the next
/// turns without a new readiness event. Before, one turn read the socket dry whatever
/// was waiting.
#[test]
fn a_dht_flood_is_read_a_batch_per_turn() {
    use btcore_host::client::{Client, ClientOptions, DHT_READS_PER_TURN};
    use btcore_host::dht::DhtOptions;
    use std::time::Instant as Wall;

    const FLOOD: usize = 600;
    let dir = std::env::temp_dir().join(format!("btcore-dht-flood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let mut client = Client::new(ClientOptions {
        listen: "127.0.0.1:0".parse().expect("address"),
        save_dir: dir.clone(),
        use_trackers: false,
        dht: Some(DhtOptions {
            port: 0,
            // Nobody: the node stays alone, and no name is looked up.
            bootstrap: vec!["127.0.0.1:9".into()],
            state_dir: None,
            low_memory: false,
        }),
        seed: 7,
        ..ClientOptions::default()
    })
    .expect("client");
    let handled = |c: &Client| {
        // Every datagram of the flood is a well-formed query.
        c.dht()
            .expect("dht on")
            .stats(btcore_core::time::Instant::ZERO)
            .queries_received
    };
    let to = client.dht().expect("dht on").local_addr().expect("address");
    // Let the node settle (its bootstrap ping goes nowhere).
    for _ in 0..3 {
        client
            .run_once(std::time::Duration::from_millis(10))
            .expect("turn");
    }
    let before = handled(&client);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let mut ping = b"d1:ad2:id20:".to_vec();
    ping.extend_from_slice(&[0x42; 20]);
    ping.extend_from_slice(b"e1:q4:ping1:t2:aa1:y1:qe");
    for _ in 0..FLOOD {
        sock.send_to(&ping, to).expect("send");
    }
    client
        .run_once(std::time::Duration::from_millis(200))
        .expect("turn");
    let first = handled(&client) - before;
    println!("{first} of {FLOOD} datagrams handled in one turn");
    assert!(first >= 1, "the flood did not arrive");
    assert!(
        first <= DHT_READS_PER_TURN as u64,
        "{first} datagrams handled in one turn"
    );
    let deadline = Wall::now() + std::time::Duration::from_secs(10);
    while handled(&client) - before <= DHT_READS_PER_TURN as u64 && Wall::now() < deadline {
        client
            .run_once(std::time::Duration::from_millis(10))
            .expect("turn");
    }
    let total = handled(&client) - before;
    drop(client);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        total > DHT_READS_PER_TURN as u64,
        "datagrams left waiting: {total} handled"
    );
}

/// A close says why: a normal close (the torrent paused, a handshake for a torrent we
/// do not have) is told apart from a peer's failure, so a host (and a C host through
/// `btcore_action.error`) can tell a ban or a protocol error from a normal close.
#[test]
fn close_reasons_tell_a_normal_close_from_a_failure() {
    let (file, content) = zero_torrent(PIECES, PIECE_LEN);
    let mut host = Host::new(SessionConfig::new(peer_id(999)), 7);
    let tid = host.add_torrent(&file, &content, PIECE_LEN, true);
    let conn = host.incoming(addr(0, 7, 50_000));
    host.recv(conn, &frames::handshake(info_hash_of(&file), peer_id(1)));
    assert!(host.is_open(conn), "{:?}", host.close_reason(conn));
    let stranger = host.incoming(addr(0, 8, 50_000));
    host.recv(
        stranger,
        &frames::handshake(InfoHash([0x55; 20]), peer_id(2)),
    );
    assert_eq!(
        host.close_reason(stranger),
        Some(CloseReason::UnknownTorrent)
    );
    let now = host.now;
    assert!(host.session.pause_torrent(now, tid));
    host.drain();
    let why = host.close_reason(conn);
    assert_eq!(why, Some(CloseReason::TorrentStopped));
    assert!(!why.is_some_and(|r| r.is_peer_fault()));
}

/// Our external address is what peers of four distinct /24 subnets see in their
/// `yourip`: never what many peers of one subnet say, nor a private or loopback
/// address; once known it goes out in our extension handshake (`ipv4`). The host's
/// word (its router's) is taken at once.
#[test]
fn peers_vote_our_external_address_from_distinct_subnets_only() {
    let (mut host, _t, ih) = leecher(SessionConfig::new(peer_id(999)));
    let say = |host: &mut Host, from: SocketAddr, ip: IpAddr, id: u8| {
        let c = host.incoming(from);
        host.recv(c, &frames::handshake(ih, peer_id(u64::from(id))));
        host.recv(c, &frames::ext_handshake_yourip(ip));
        c
    };
    let liar = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 66));
    // Twelve peers of one subnet (198.51.70.0/24).
    for i in 0..12 {
        say(&mut host, addr(70, 10 + i, 6881), liar, 10 + i);
    }
    assert_eq!(
        host.session.external_address(false),
        None,
        "one subnet decided"
    );
    // Private and loopback answers count for nothing, however many subnets say them.
    for (i, ip) in ["10.0.0.7", "127.0.0.1", "192.168.1.2", "0.0.0.0"]
        .iter()
        .enumerate()
    {
        for j in 0..5u8 {
            say(
                &mut host,
                addr(80 + j, i as u8 + 1, 6881),
                ip.parse().expect("ip"),
                30 + j,
            );
        }
    }
    assert_eq!(host.session.external_address(false), None);
    // Three subnets agree: not yet; a fourth: taken.
    let ours = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
    for j in 0..3u8 {
        say(&mut host, addr(90 + j, 1, 6881), ours, 50 + j);
    }
    assert_eq!(
        host.session.external_address(false),
        None,
        "three subnets decided"
    );
    say(&mut host, addr(93, 1, 6881), ours, 60);
    assert_eq!(host.session.external_address(false), Some(ours));
    // The next peer hears it in our extension handshake.
    let c = host.incoming(addr(94, 1, 6881));
    host.recv(c, &frames::handshake(ih, peer_id(70)));
    let sent = host.read_from(c, 1 << 20);
    let ipv4 = frames::sent_ext_handshake(&sent, |hs| hs.ipv4).expect("an extension handshake");
    assert_eq!(ipv4, Some(Ipv4Addr::new(203, 0, 113, 9)));
    // The router's word moves it at once.
    let routed = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    host.session.set_external_address(routed);
    assert_eq!(host.session.external_address(false), Some(routed));
    assert_eq!(host.session.external_address(true), None);
}
