//! Swarms over uTP in the deterministic simulation: sessions dial and accept uTP
//! connections on simulated sockets whose datagrams are lost, duplicated, reordered and
//! delayed, and fall back to TCP toward nodes that have no uTP.

use btcore_core::session::{ConnId, SessionConfig, Transport, TransportPolicy};
use btcore_core::time::{Duration, Instant};
use btcore_tests::sim::{content, Behaviour, LinkSpec, Sim, UdpSpec};
use std::collections::BTreeMap;
use std::net::SocketAddr;

const PIECE: u32 = 32_768;

fn secs(t: Instant) -> f64 {
    t.as_millis() as f64 / 1000.0
}

/// Checks every node against the ground truth (see `swarm.rs`).
fn assert_ground_truth(sim: &Sim) {
    for (i, n) in sim.nodes.iter().enumerate() {
        assert!(n.violations.is_empty(), "node {i}: {:?}", n.violations);
        let bad = sim.wrongly_verified(i);
        assert!(bad.is_empty(), "node {i} verified bad pieces {bad:?}");
    }
}

/// A link of `latency_ms` one way at 1 MB/s.
fn link(latency_ms: u64) -> LinkSpec {
    LinkSpec {
        latency: Duration::from_millis(latency_ms),
        ..LinkSpec::default()
    }
}

/// 2% loss, 1% duplication, up to 25 ms of jitter (reordering).
fn lossy() -> UdpSpec {
    UdpSpec {
        loss_ppm: 20_000,
        dup_ppm: 10_000,
        jitter: Duration::from_millis(25),
        queue: 0,
    }
}

/// A connection as its session shows it.
#[derive(Clone, Copy, Debug)]
struct Seen {
    transport: Transport,
    established: bool,
    outgoing: bool,
    conn: ConnId,
}

/// Every connection each node's session holds now: (node, peer address, connection).
fn peer_table(sim: &Sim) -> BTreeMap<(usize, SocketAddr, ConnId), Seen> {
    let mut t = BTreeMap::new();
    for (i, n) in sim.nodes.iter().enumerate() {
        let Some(id) = n.torrent else { continue };
        for p in n.session.peers(id) {
            let seen = Seen {
                transport: p.transport,
                established: p.established,
                outgoing: p.outgoing,
                conn: p.conn,
            };
            t.insert((i, p.addr, p.conn), seen);
        }
    }
    t
}

/// Adds what `now` shows to what was seen (a connection counts as established once
/// it was).
fn record(
    seen: &mut BTreeMap<(usize, SocketAddr, ConnId), Seen>,
    now: BTreeMap<(usize, SocketAddr, ConnId), Seen>,
) {
    for (k, v) in now {
        let e = seen.entry(k).or_insert(v);
        e.established |= v.established;
        e.transport = v.transport;
    }
}

/// A seed and four leechers, all uTP only, over links of 20 to 80 ms with 2% loss, 1%
/// duplication and reordering: every leecher completes with the right bytes, every
/// connection was uTP, no byte went over TCP.
#[test]
fn utp_only_swarm_completes_over_lossy_links() {
    let pieces = 64;
    let mut sim = Sim::new(content(pieces * PIECE as usize - 1000, 21), PIECE, 5);
    let utp_only = |c: &mut SessionConfig| c.transport = TransportPolicy::UtpOnly;
    let seed = sim.add_node(true, Behaviour::Honest, link(20), utp_only);
    let leechers: Vec<usize> = [35, 50, 65, 80]
        .into_iter()
        .map(|ms| sim.add_node(false, Behaviour::Honest, link(ms), utp_only))
        .collect();
    for n in &mut sim.nodes {
        n.udp = lossy();
    }
    // Connections seen while the swarm runs (finished leechers leave each other).
    let mut seen = BTreeMap::new();
    let limit = Instant::from_millis(120_000);
    while sim.now < limit && leechers.iter().any(|&l| sim.nodes[l].finished_at.is_none()) {
        sim.run_for(Duration::from_millis(250));
        record(&mut seen, peer_table(&sim));
    }
    for &l in &leechers {
        let n = &sim.nodes[l];
        assert!(
            n.finished_at.is_some(),
            "leecher {l} did not finish by {:.1} s: {} of {} pieces; {:?}",
            secs(sim.now),
            n.verified.len(),
            sim.num_pieces(),
            sim.udp
        );
        assert!(sim.has_correct_data(l), "leecher {l} data");
    }
    assert_ground_truth(&sim);
    // Every dial and every connection was uTP; the TCP links never carried a byte.
    for (i, n) in sim.nodes.iter().enumerate() {
        assert!(n.has_utp(), "node {i} has no uTP socket");
        assert!(
            n.connects.iter().all(|c| c.3 == Transport::Utp),
            "node {i} dialed over TCP: {:?}",
            n.connects
        );
    }
    assert!(
        seen.values().all(|s| s.transport == Transport::Utp),
        "{seen:?}"
    );
    let established = seen.values().filter(|s| s.established).count();
    assert!(established >= 4, "{established} connections established");
    assert_eq!(sim.peak_links, 0, "a TCP link was opened");
    assert!(sim.nodes[seed].uploaded > 0);
    let fetched: u64 = leechers
        .iter()
        .map(|&l| sim.nodes[l].bytes_from.values().sum::<u64>())
        .sum();
    assert!(fetched >= 4 * sim.nodes[seed].storage.len() as u64);
    // The link model did its part.
    assert!(sim.udp.lost > 100, "{:?}", sim.udp);
    assert!(sim.udp.duplicated > 50, "{:?}", sim.udp);
    let last = leechers
        .iter()
        .filter_map(|&l| sim.nodes[l].finished_at)
        .max()
        .expect("finished");
    println!(
        "uTP only, 4 leechers, {pieces} pieces of 32 KiB: done at {:.1} s simulated; {:?}",
        secs(last),
        sim.udp
    );
}

/// A mixed swarm: nodes 0 (the seed), 2 and 4 dial uTP first (`Both`), nodes 1 and 3
/// have no uTP (`TcpOnly`, no socket); node 5 (`Both`) joins a second later, when the
/// others have announced already, so it alone dials the `TcpOnly` nodes. The `Both`
/// nodes reach each other over uTP and the others over TCP, after a uTP dial that gets
/// no answer (or a RESET when `reset`). Everyone completes.
fn mixed_swarm(reset: bool) {
    let pieces = 160;
    let mut sim = Sim::new(content(pieces * PIECE as usize, 33), PIECE, 8);
    sim.refuse_utp_with_reset = reset;
    let both = |c: &mut SessionConfig| c.transport = TransportPolicy::Both;
    let tcp = |c: &mut SessionConfig| c.transport = TransportPolicy::TcpOnly;
    sim.add_node(true, Behaviour::Honest, link(30), both);
    sim.add_node(false, Behaviour::Honest, link(40), tcp);
    sim.add_node(false, Behaviour::Honest, link(50), both);
    sim.add_node(false, Behaviour::Honest, link(60), tcp);
    sim.add_node(false, Behaviour::Honest, link(25), both);
    for n in &mut sim.nodes {
        n.udp = lossy();
    }
    sim.run_for(Duration::from_millis(1000));
    let late = sim.add_node(false, Behaviour::Honest, link(45), both);
    sim.nodes[late].udp = lossy();
    let utp_nodes = [0usize, 2, 4, 5];
    let tcp_nodes = [1usize, 3];
    let leechers = [1usize, 2, 3, 4, 5];
    let speaks_utp =
        |addr: SocketAddr, sim: &Sim| utp_nodes.iter().any(|&k| sim.nodes[k].addr == addr);
    let mut seen = BTreeMap::new();
    let limit = Instant::from_millis(120_000);
    while sim.now < limit && leechers.iter().any(|&l| sim.nodes[l].finished_at.is_none()) {
        sim.run_for(Duration::from_millis(250));
        record(&mut seen, peer_table(&sim));
    }
    for &l in &leechers {
        assert!(
            sim.nodes[l].finished_at.is_some(),
            "leecher {l} did not finish by {:.1} s",
            secs(sim.now)
        );
        assert!(sim.has_correct_data(l), "leecher {l} data");
    }
    assert_ground_truth(&sim);
    for (i, n) in sim.nodes.iter().enumerate() {
        assert_eq!(n.has_utp(), utp_nodes.contains(&i), "node {i}");
    }
    // Each connection's transport: uTP between two uTP nodes, TCP otherwise.
    let mut pairs = [0usize; 2];
    for (&(i, addr, _), s) in &seen {
        let want = if utp_nodes.contains(&i) && speaks_utp(addr, &sim) {
            Transport::Utp
        } else {
            Transport::Tcp
        };
        if s.established {
            assert_eq!(s.transport, want, "node {i} to {addr}");
            pairs[usize::from(s.transport == Transport::Utp)] += 1;
        }
    }
    // The late node reached each TCP-only node over a connection it dialed over uTP
    // first and then over TCP under the same id.
    let late_fb = sim.nodes[late].fallbacks();
    for &k in &tcp_nodes {
        let addr = sim.nodes[k].addr;
        assert!(
            seen.iter().any(|(&(i, a, _), s)| i == late
                && a == addr
                && s.established
                && s.outgoing
                && s.transport == Transport::Tcp
                && late_fb.contains(&(s.conn, addr))),
            "node {late} never reached node {k} by falling back to TCP: {seen:?}"
        );
    }
    // And the uTP nodes over uTP.
    for &k in &utp_nodes[..3] {
        let addr = sim.nodes[k].addr;
        assert!(
            seen.iter().any(|(&(i, a, _), s)| i == late
                && a == addr
                && s.established
                && s.transport == Transport::Utp),
            "node {late} never reached node {k} over uTP: {seen:?}"
        );
    }
    assert!(pairs[1] >= 2, "uTP connections established: {pairs:?}");
    assert!(pairs[0] >= 2, "TCP connections established: {pairs:?}");
    // Every uTP dial toward a node without uTP was made again over TCP, after a
    // RESET within a round trip, or after `utp_connect_timeout` (3 s) of silence.
    let mut fallbacks = 0;
    let mut quickest = u64::MAX;
    for &i in &utp_nodes {
        let n = &sim.nodes[i];
        let fb = n.fallbacks();
        for &(at, conn, addr, t) in &n.connects {
            if t != Transport::Utp || speaks_utp(addr, &sim) {
                continue;
            }
            let tcp_at = n
                .connects
                .iter()
                .find(|c| c.1 == conn && c.3 == Transport::Tcp)
                .map(|c| c.0);
            let Some(tcp_at) = tcp_at else {
                // A dial the session gave up for another reason (the peer connected
                // to us meanwhile) must not have become a uTP connection.
                continue;
            };
            assert!(fb.contains(&(conn, addr)));
            let waited = tcp_at.since(at).as_millis();
            quickest = quickest.min(waited);
            if reset {
                // On the RESET (a lost SYN or RESET costs a resend, 1 s), before the
                // timeout.
                assert!(waited < 3000, "node {i}: fell back after {waited} ms");
            } else {
                assert!(
                    (3000..=4500).contains(&waited),
                    "node {i}: fell back after {waited} ms"
                );
            }
            fallbacks += 1;
        }
        // uTP dials only ever went to the others once they proved uTP-less.
        for (conn, addr) in fb {
            assert!(
                !speaks_utp(addr, &sim),
                "node {i} fell back on {conn:?} to {addr}"
            );
        }
    }
    assert!(fallbacks >= 2, "{fallbacks} fallbacks");
    if reset {
        assert!(quickest < 500, "quickest fallback after {quickest} ms");
    }
    assert!(sim.udp.no_socket > 0, "{:?}", sim.udp);
    println!(
        "mixed swarm (refusal by {}): {} uTP and {} TCP connections, {fallbacks} fallbacks, done at {:.1} s; {:?}",
        if reset { "RESET" } else { "silence" },
        pairs[1],
        pairs[0],
        secs(sim.now),
        sim.udp
    );
}

#[test]
fn mixed_swarm_falls_back_to_tcp_on_silence() {
    mixed_swarm(false);
}

#[test]
fn mixed_swarm_falls_back_to_tcp_on_reset() {
    mixed_swarm(true);
}

/// A disk far slower than the network under uTP: the leecher reads its connection only
/// while the session wants bytes, so what waits for the disk stays within twice the
/// cap (plus one read) and the rest waits in the uTP receive buffer, whose window
/// holds the seed back.
#[test]
fn slow_disk_closes_the_utp_window() {
    const CAP: usize = 128 << 10;
    let mut sim = Sim::new(content(48 * PIECE as usize, 5), PIECE, 9);
    let fast = LinkSpec {
        up_bps: 40_000_000,
        latency: Duration::from_millis(2),
        send_buffer: 256 << 10,
    };
    sim.add_node(true, Behaviour::Honest, fast, |c| {
        c.transport = TransportPolicy::UtpOnly;
    });
    let l = sim.add_node(false, Behaviour::Honest, fast, |c| {
        c.transport = TransportPolicy::UtpOnly;
        c.max_disk_bytes_in_flight = CAP;
    });
    // Each write takes 100 ms, at most twice the cap at once: about 2.6 MB/s of disk
    // against 40 MB/s of network.
    sim.nodes[l].write_latency = Some(Duration::from_millis(100));
    let ok = sim.run_until(Duration::from_secs(120), |s| {
        s.nodes[l].finished_at.is_some()
    });
    assert!(ok, "leecher did not finish by {:.1} s", secs(sim.now));
    assert!(sim.has_correct_data(l));
    assert_ground_truth(&sim);
    let n = &sim.nodes[l];
    assert!(
        n.utp_reads_deferred > 0,
        "the leecher never left bytes unread"
    );
    // One read (16 KiB) may land past twice the cap.
    assert!(
        n.peak_writes_pending <= (2 * CAP + (16 << 10)) as u64,
        "{} bytes waited for the disk, cap {CAP}",
        n.peak_writes_pending
    );
    assert_eq!(n.writes_pending, 0);
    assert_eq!(sim.peak_links, 0);
    println!(
        "slow disk over uTP: done at {:.1} s, at most {} bytes waited for the disk (cap {CAP}), reads deferred {} times",
        secs(sim.now),
        n.peak_writes_pending,
        n.utp_reads_deferred
    );
}

/// A leecher vanishes mid-download (no FIN, no RESET: its datagrams just stop): the
/// others notice over uTP, drop it, and complete from the rest.
#[test]
fn a_vanished_utp_peer_is_dropped_and_the_rest_complete() {
    let mut sim = Sim::new(content(96 * PIECE as usize, 44), PIECE, 12);
    let utp_only = |c: &mut SessionConfig| c.transport = TransportPolicy::UtpOnly;
    sim.add_node(true, Behaviour::Honest, link(30), utp_only);
    let leechers: Vec<usize> = [20, 40, 60, 80]
        .into_iter()
        .map(|ms| sim.add_node(false, Behaviour::Honest, link(ms), utp_only))
        .collect();
    for n in &mut sim.nodes {
        n.udp = lossy();
    }
    sim.run_for(Duration::from_secs(3));
    let gone = leechers[1];
    let gone_addr = sim.nodes[gone].addr;
    assert!(
        sim.nodes.iter().any(|n| n.utp_conns() > 0),
        "no uTP connection by 3 s"
    );
    sim.kill(gone);
    let killed_at = sim.now;
    let rest: Vec<usize> = leechers.iter().copied().filter(|&l| l != gone).collect();
    let ok = sim.run_until(Duration::from_secs(120), |s| {
        rest.iter().all(|&l| s.nodes[l].finished_at.is_some())
    });
    assert!(ok, "the others did not finish by {:.1} s", secs(sim.now));
    for &l in &rest {
        assert!(sim.has_correct_data(l), "leecher {l} data");
    }
    assert_ground_truth(&sim);
    // Every live node lets go of the vanished one (uTP resends run out, or the
    // session's own timeouts), within a bound.
    let ok = sim.run_until(Duration::from_secs(300), |s| {
        s.nodes.iter().filter(|n| n.alive).all(|n| {
            n.torrent
                .is_none_or(|t| n.session.peers(t).iter().all(|p| p.addr != gone_addr))
        })
    });
    assert!(
        ok,
        "a node still holds the vanished peer {:.1} s after it left",
        secs(sim.now) - secs(killed_at)
    );
    println!(
        "vanished peer dropped by all within {:.1} s; done",
        secs(sim.now) - secs(killed_at)
    );
}
