//! Peers that send bad data, in the swarm simulation: the one that sent it is found
//! block by block and banned by address (never an honest peer that shared a piece with
//! it), and it cannot come back with a new port or peer id.

use btcore_core::time::{Duration, Instant};
use btcore_tests::sim::{content, Behaviour, LinkSpec, Sim};
use std::net::{IpAddr, SocketAddr};

/// 128 KiB pieces: 8 blocks each, so that pieces are shared between peers.
const PIECE: u32 = 128 * 1024;
const PIECES: usize = 40;

fn secs(t: Instant) -> f64 {
    t.as_millis() as f64 / 1000.0
}

fn link(up_bps: u64) -> LinkSpec {
    LinkSpec {
        up_bps,
        ..LinkSpec::default()
    }
}

fn ip(a: SocketAddr) -> IpAddr {
    a.ip()
}

/// What a run of the framing attack gives.
struct Run {
    sim: Sim,
    seed: usize,
    victim: usize,
    attacker: Option<usize>,
}

/// An honest seed and a leecher; with `attack` (its upload rate), also a seed that
/// serves flipped bytes, dials the leecher again right after every close with a new
/// port and peer id, and whose blocks land in the same pieces as the honest seed's.
/// `digests`: whether the leecher's host gives block digests.
fn run(attack: Option<u64>, digests: bool) -> Run {
    let mut sim = Sim::new(content(PIECES * PIECE as usize - 1000, 15), PIECE, 77);
    let seed = sim.add_node(true, Behaviour::Honest, link(2_000_000), |_| {});
    let victim = sim.add_node(false, Behaviour::Honest, link(1_000_000), |_| {});
    sim.nodes[victim].block_digests = digests;
    let attacker = attack.map(|up| {
        sim.add_node(true, Behaviour::Rejoining, link(up), |c| {
            c.reconnect_backoff = Duration::from_millis(100);
        })
    });
    let ok = sim.run_until(Duration::from_secs(300), |s| {
        s.nodes[victim].finished_at.is_some()
    });
    let v = &sim.nodes[victim];
    assert!(
        ok,
        "the leecher did not finish by {:.1} s: {} of {PIECES} pieces, {} hash failures, \
         {} bans, the first {:?}",
        secs(sim.now),
        v.verified.len(),
        v.hash_failures,
        v.banned.len(),
        &v.banned[..v.banned.len().min(8)]
    );
    assert!(sim.has_correct_data(victim));
    for (i, n) in sim.nodes.iter().enumerate() {
        assert!(n.violations.is_empty(), "node {i}: {:?}", n.violations);
        assert!(sim.wrongly_verified(i).is_empty(), "node {i}");
    }
    Run {
        sim,
        seed,
        victim,
        attacker,
    }
}

/// Checks the attack run against the attack-free one; returns a summary line.
fn check(clean: &Run, attacked: &Run) -> String {
    let v = &attacked.sim.nodes[attacked.victim];
    let seed_ip = ip(attacked.sim.nodes[attacked.seed].addr);
    let attacker = attacked.attacker.expect("attacker");
    let bad_ip = ip(attacked.sim.nodes[attacker].addr);
    let bad_bytes = v
        .received_from
        .iter()
        .filter(|(a, _)| ip(**a) == bad_ip)
        .map(|(_, n)| *n)
        .sum::<u64>();
    let reconnects = v.connected.iter().filter(|(_, a)| ip(*a) == bad_ip).count();
    let attempts = attacked.sim.nodes[attacker].dials();
    let t_clean = clean.sim.nodes[clean.victim]
        .finished_at
        .expect("finished")
        .since(clean.sim.nodes[clean.victim].joined_at);
    let t_attack = v.finished_at.expect("finished").since(v.joined_at);
    let line = format!(
        "attack-free: done in {:.2} s; under attack: done in {:.2} s, {} hash failures \
         ({} of pieces from both seeds), \
         {} KiB from the attacker over {reconnects} connections ({attempts} dialed), bans {:?}",
        t_clean.as_millis() as f64 / 1000.0,
        t_attack.as_millis() as f64 / 1000.0,
        v.hash_failures,
        v.mixed_failures,
        bad_bytes / 1024,
        v.banned
    );
    println!("{line}");
    // The attack was carried out: bad blocks arrived, in pieces the honest seed served
    // too, and the attacker kept dialing after it was banned.
    assert!(bad_bytes > 0, "the attacker sent nothing: {line}");
    assert!(
        v.mixed_failures > 0,
        "no piece failed with blocks of both: {line}"
    );
    assert!(attempts >= 5, "the attacker did not come back: {line}");
    // The honest seed is never banned; the attacker is, by address.
    assert!(
        v.banned.iter().all(|a| ip(*a) != seed_ip),
        "the honest seed was banned: {line}"
    );
    assert!(
        v.banned.iter().any(|a| ip(*a) == bad_ip),
        "the attacker was not banned: {line}"
    );
    // Once banned, its new connections (new ports, new peer ids) get nowhere: no
    // handshake completes after the ban, though it kept dialing.
    let k = v
        .banned
        .iter()
        .position(|a| ip(*a) == bad_ip)
        .expect("banned");
    let banned_at = v.banned_at[k];
    let after: Vec<_> = v
        .connected
        .iter()
        .filter(|(t, a)| ip(*a) == bad_ip && *t > banned_at)
        .collect();
    assert!(
        after.is_empty(),
        "the banned attacker came back (banned at {:.2} s): {after:?}",
        secs(banned_at)
    );
    assert!(
        t_attack.as_millis() <= t_clean.as_millis() * 13 / 10 + 1000,
        "the attack slowed the download down: {line}"
    );
    line
}

/// The framing attack: an attacker whose bad blocks share pieces with the honest
/// seed's, and who comes back with a new port and peer id after every close. With
/// strikes against every sender of a failed piece and bans by `IP:port` and peer id,
/// the honest seed got banned and the attacker kept coming back.
#[test]
fn attacker_is_banned_by_address_and_the_honest_seed_never() {
    let clean = run(None, true);
    let attacked = run(Some(2_000_000), true);
    check(&clean, &attacked);
}

/// A slow attacker seldom finishes a piece of its own while on parole: its bad blocks
/// are found by their digests when the pieces they spoiled pass, and it is banned
/// though every failed piece had blocks of both seeds.
#[test]
fn block_digests_find_the_attacker_in_shared_pieces() {
    let clean = run(None, true);
    let attacked = run(Some(50_000), true);
    check(&clean, &attacked);
    let v = &attacked.sim.nodes[attacked.victim];
    let bad_ip = attacked
        .attacker
        .map(|a| ip(attacked.sim.nodes[a].addr))
        .expect("an attacker");
    let k = v
        .banned
        .iter()
        .position(|a| ip(*a) == bad_ip)
        .expect("banned");
    // The ban came from the digests: no piece of the attacker's alone had failed yet
    // (such a failure bans its sole sender at once).
    assert!(
        v.single_failures_at.iter().all(|t| *t > v.banned_at[k]),
        "a piece with one sender failed before the ban (at {:?}, ban at {:.2} s): the ban \
         may not come from the digests",
        v.single_failures_at,
        secs(v.banned_at[k])
    );
}

/// The same without block digests from the host (a host that only says pass or
/// fail): parole alone singles the attacker out.
#[test]
fn without_block_digests_parole_finds_the_attacker() {
    let clean = run(None, false);
    let attacked = run(Some(2_000_000), false);
    check(&clean, &attacked);
}

/// Runs a magnet link against an honest seed and a metadata liar (announcing the size
/// off by `size_delta`, sending random metadata pieces; with `first`, reaching the
/// leecher first, else as close as the honest seed); returns the sim, the leecher, the
/// honest seed and the liar once the leecher has the metadata (and, with `download`,
/// the whole content), or panics at `limit`.
fn magnet_run(
    pieces: usize,
    size_delta: i32,
    first: bool,
    download: bool,
    limit: u64,
) -> (Sim, usize, usize, usize) {
    let mut sim = Sim::new(content(pieces * 16_384 + 5, 4), 16_384, 8);
    let quick = LinkSpec {
        latency: Duration::from_millis(if first { 2 } else { 20 }),
        ..LinkSpec::default()
    };
    let liar = sim.add_node(true, Behaviour::MetadataLiar { size_delta }, quick, |_| {});
    let honest = sim.add_node(true, Behaviour::Honest, LinkSpec::default(), |_| {});
    let m = sim.add_magnet_node(LinkSpec::default());
    let ok = sim.run_until(Duration::from_secs(limit), |s| {
        let n = &s.nodes[m];
        if download {
            n.finished_at.is_some()
        } else {
            n.torrent.is_some_and(|t| n.session.info_bytes(t).is_some())
        }
    });
    let n = &sim.nodes[m];
    assert!(
        ok,
        "the magnet link stalled: {:.1} s, metadata {}, closed {:?}, banned {:?}",
        secs(sim.now),
        n.torrent.is_some_and(|t| n.session.info_bytes(t).is_some()),
        n.closed,
        n.banned
    );
    let honest_ip = ip(sim.nodes[honest].addr);
    assert!(
        n.banned.iter().all(|a| ip(*a) != honest_ip),
        "the honest seed was banned: {:?}",
        n.banned
    );
    // Nor was it ever closed for disagreeing, or for a failed dictionary it had a part
    // in (a finished leecher closes seeds: two seeds have nothing to say).
    let end = n.finished_at.unwrap_or(sim.now);
    let closed: Vec<_> = n
        .closed
        .iter()
        .zip(&n.closed_at)
        .filter(|((a, _), t)| ip(*a) == honest_ip && **t < end)
        .collect();
    assert!(closed.is_empty(), "the honest seed was closed: {closed:?}");
    (sim, m, honest, liar)
}

/// BEP 9: a peer that announces a wrong `metadata_size` first, and sends random
/// pieces of that size, cannot stall a magnet link: the size is not taken from the
/// first peer heard, nobody is closed for disagreeing, and the liar, sole source of a
/// dictionary that does not hash to the info-hash, is banned. (Keeping the first size
/// and closing every peer that disagreed stalled the download for good.)
#[test]
fn a_wrong_metadata_size_first_does_not_stall_a_magnet_link() {
    let (sim, m, _, liar) = magnet_run(40, -7, true, true, 60);
    assert!(sim.has_correct_data(m));
    let n = &sim.nodes[m];
    let liar_ip = ip(sim.nodes[liar].addr);
    assert!(
        n.banned.iter().any(|a| ip(*a) == liar_ip),
        "the liar was not banned: {:?}",
        n.banned
    );
    let done = n.finished_at.expect("finished").since(n.joined_at);
    println!(
        "magnet with a metadata liar: done in {:.2} s, banned {:?}",
        done.as_millis() as f64 / 1000.0,
        n.banned
    );
    assert!(done < Duration::from_secs(10), "took {done:?}");
}

/// The same liar announcing the right size, with metadata of several pieces: pieces
/// from both make a dictionary that fails its check, the next attempt takes every piece
/// from one peer, and the metadata arrives.
#[test]
fn random_metadata_pieces_of_the_right_size_do_not_stall_a_magnet_link() {
    // 1700 pieces: an info dictionary of 3 metadata pieces.
    let (sim, m, _, _) = magnet_run(1700, 0, false, false, 120);
    let n = &sim.nodes[m];
    let info = n
        .torrent
        .and_then(|t| n.session.info_bytes(t))
        .expect("info");
    assert!(info.len() > 2 * 16_384, "{} bytes of metadata", info.len());
    println!(
        "metadata ({} bytes) in {:.2} s despite a liar; banned {:?}",
        info.len(),
        secs(sim.now),
        n.banned
    );
}

/// A liar whose size can never be completed (it announces one metadata piece more than
/// there is and rejects that piece): the attempt stalls, and after the request timeout
/// the size the honest seed claims is fetched instead.
#[test]
fn a_metadata_size_that_never_completes_is_left_for_the_next() {
    let (sim, m, _, _) = magnet_run(40, 20_000, true, true, 60);
    let n = &sim.nodes[m];
    let done = n.finished_at.expect("finished").since(n.joined_at);
    println!(
        "magnet with a liar that never completes: done in {:.2} s",
        done.as_millis() as f64 / 1000.0
    );
    assert!(sim.has_correct_data(m));
    assert!(done < Duration::from_secs(10), "took {done:?}");
}

/// A peer that sends its bad blocks and leaves before their pieces are checked is
/// still found: who sent what outlives the connection.
#[test]
fn a_sender_that_leaves_is_still_found() {
    let mut sim = Sim::new(content(PIECES * PIECE as usize - 1000, 15), PIECE, 77);
    let seed = sim.add_node(true, Behaviour::Honest, link(2_000_000), |_| {});
    let victim = sim.add_node(false, Behaviour::Honest, link(1_000_000), |_| {});
    // Small socket buffers: its blocks arrive one by one.
    let one_by_one = LinkSpec {
        up_bps: 300_000,
        send_buffer: 17 * 1024,
        ..LinkSpec::default()
    };
    let bad = sim.add_node(true, Behaviour::Corrupt, one_by_one, |_| {});
    let bad_addr = sim.nodes[bad].addr;
    // It leaves as soon as its first block arrived, before its piece is whole.
    let sent = sim.run_until(Duration::from_secs(60), |s| {
        s.nodes[victim]
            .bytes_from
            .get(&bad_addr)
            .is_some_and(|&n| n >= 16_384 + 100)
    });
    assert!(sent, "the bad peer sent nothing");
    assert_eq!(
        sim.nodes[victim].hash_failures, 0,
        "a piece failed before it left: the test would prove nothing"
    );
    let left_at = sim.now;
    sim.kill(bad);
    let ok = sim.run_until(Duration::from_secs(120), |s| {
        s.nodes[victim].finished_at.is_some()
    });
    let v = &sim.nodes[victim];
    assert!(ok && sim.has_correct_data(victim), "not finished");
    println!(
        "a sender that left at {:.2} s: {} hash failures, banned {:?} at {:?}",
        secs(left_at),
        v.hash_failures,
        v.banned,
        v.banned_at
    );
    // Found after it left (no connection: port 0), by its address.
    let k = v
        .banned
        .iter()
        .position(|a| ip(*a) == ip(bad_addr))
        .unwrap_or_else(|| panic!("not banned: {:?}", v.banned));
    assert!(v.banned_at[k] >= left_at);
    let seed_ip = ip(sim.nodes[seed].addr);
    assert!(v.banned.iter().all(|a| ip(*a) != seed_ip), "{:?}", v.banned);
}

// ---------------------------------------------------------------------------------
// Bans, scripted frame by frame against one session (`btcore_tests::scripted`).
// ---------------------------------------------------------------------------------

mod scripted_bans {
    use btcore_core::session::{CloseReason, ConnId, SessionConfig};
    use btcore_core::wire::Message;
    use btcore_tests::scripted::{frames, info_hash_of, peer_id, zero_torrent, Host};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    const PIECE_LEN: u32 = 16 * 1024;

    /// A downloading session for a torrent of zeros (one block per piece).
    fn leecher(config: SessionConfig) -> (Host, btcore_core::ids::InfoHash) {
        let (file, content) = zero_torrent(64, PIECE_LEN);
        let mut host = Host::new(config, 21);
        host.add_torrent(&file, &content, PIECE_LEN, false);
        (host, info_hash_of(&file))
    }

    /// A peer at `from` connects, says it has everything, unchokes, and answers the
    /// first block asked with bad bytes: a piece it alone sent fails, and it is banned.
    /// Returns the connection, or None when it was refused before any byte.
    fn serve_bad_piece(
        host: &mut Host,
        ih: btcore_core::ids::InfoHash,
        from: SocketAddr,
        id: u64,
    ) -> Option<ConnId> {
        let c = host.incoming(from);
        if !host.is_open(c) {
            return None;
        }
        let mut hello = frames::handshake(ih, peer_id(id));
        hello.extend(frames::message(&Message::HaveAll));
        hello.extend(frames::message(&Message::Unchoke));
        host.recv(c, &hello);
        let asked = frames::requests(&host.read_from(c, usize::MAX));
        let b = *asked.first().expect("a request");
        let junk = vec![0xa5u8; b.len as usize];
        host.recv(
            c,
            &frames::message(&Message::Piece {
                piece: b.piece,
                offset: b.offset,
                data: &junk,
            }),
        );
        Some(c)
    }

    fn v6(net: u16, host: u16) -> SocketAddr {
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, net, 0, 0, 0, host)),
            6881,
        )
    }

    /// An IPv6 address banned for bad data: every address of its /64 is refused
    /// before any byte (a subscriber gets a whole /64 and picks addresses in it at
    /// will). Before, the next address of the /64 got in.
    #[test]
    fn an_ipv6_ban_covers_the_64() {
        let (mut host, ih) = leecher(SessionConfig::new(peer_id(999)));
        let c = serve_bad_piece(&mut host, ih, v6(1, 1), 1).expect("admitted");
        assert!(
            !host.is_open(c),
            "the sender of the bad piece is still connected"
        );
        assert!(host.session.is_banned(v6(1, 1).ip()));
        for h in [2, 0x99, 0xffff] {
            let again = host.incoming(v6(1, h));
            assert_eq!(
                host.close_reason(again),
                Some(CloseReason::Banned),
                "{} got in",
                v6(1, h)
            );
        }
        // Another /64 is another subscriber.
        let neighbour = host.incoming(v6(2, 1));
        assert!(host.is_open(neighbour));
    }

    /// An attacker with a /48 gets itself banned from one /64 after another, to fill
    /// the ban list (256 in the low-memory profile) and have the oldest bans lifted.
    /// Bans of one /48 are gathered into one once it has a few: the list does not
    /// grow, and an address banned before stays banned. Before, 256 bans later the
    /// first banned address got in again.
    #[test]
    fn bans_from_one_prefix_do_not_lift_older_bans() {
        let config = SessionConfig::low_memory(peer_id(999));
        let cap = config.max_banned_ips;
        let (mut host, ih) = leecher(config);
        let first = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 6881);
        serve_bad_piece(&mut host, ih, first, 1).expect("admitted");
        assert!(host.session.is_banned(first.ip()));
        let mut admitted = 0;
        for net in 0..(cap as u16 + 50) {
            if serve_bad_piece(&mut host, ih, v6(net, 1), 100 + u64::from(net)).is_some() {
                admitted += 1;
            }
        }
        println!("{admitted} of {} /64s got in", cap + 50);
        let back = host.incoming(first);
        assert_eq!(
            host.close_reason(back),
            Some(CloseReason::Banned),
            "the first ban was lifted"
        );
        assert!(admitted < 16, "{admitted} /64s of one /48 got in");
    }
}
