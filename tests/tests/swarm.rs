//! The deterministic swarm simulation: btcore sessions against each other in memory.

use btcore_core::bitfield::Bitfield;
use btcore_core::peer::{PeerConn, PeerError};
use btcore_core::session::{CloseReason, PeerSource, SessionConfig, TorrentState};
use btcore_core::time::{Duration, Instant};
use btcore_tests::sim::{content, Behaviour, LinkSpec, Sim};

const PIECE: u32 = 16_384;

fn secs(t: Instant) -> f64 {
    t.as_millis() as f64 / 1000.0
}

fn link(up_bps: u64) -> LinkSpec {
    LinkSpec {
        up_bps,
        ..LinkSpec::default()
    }
}

/// Checks every node against the ground truth: no violation recorded while running,
/// and every piece it reported verified hashes to the torrent's hash in its storage.
fn assert_ground_truth(sim: &Sim) {
    for (i, n) in sim.nodes.iter().enumerate() {
        assert!(n.violations.is_empty(), "node {i}: {:?}", n.violations);
        let bad = sim.wrongly_verified(i);
        assert!(bad.is_empty(), "node {i} verified bad pieces {bad:?}");
    }
}

fn all_finished(sim: &Sim, nodes: &[usize]) -> bool {
    nodes.iter().all(|&l| sim.nodes[l].finished_at.is_some())
}

#[test]
fn one_seed_one_leecher() {
    let mut sim = Sim::new(content(20 * 32_768 + 100, 1), 32_768, 7);
    sim.add_node(true, Behaviour::Honest, LinkSpec::default(), |_| {});
    let l = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |_| {});
    let ok = sim.run_until(Duration::from_secs(600), |s| {
        s.nodes[l].finished_at.is_some()
    });
    assert!(ok, "leecher did not finish by {:?}", sim.now);
    assert!(sim.has_correct_data(l));
    assert_ground_truth(&sim);
}

/// A disk far slower than the network: the leecher stops reading while its session says
/// the disk is behind, so the bytes waiting to be written stay within twice the cap (plus
/// what one delivery carries) instead of what the seeder owes on requests already sent.
#[test]
fn slow_disk_holds_memory_at_the_cap() {
    const CAP: usize = 128 << 10;
    let mut sim = Sim::new(content(48 * 32_768, 5), 32_768, 9);
    let fast = LinkSpec {
        up_bps: 40_000_000,
        latency: Duration::from_millis(2),
        send_buffer: 64 << 10,
    };
    sim.add_node(true, Behaviour::Honest, fast, |_| {});
    let l = sim.add_node(false, Behaviour::Honest, fast, |c| {
        c.max_disk_bytes_in_flight = CAP;
    });
    // 16 KiB per 20 ms: under 1 MB/s of disk against 40 MB/s of network.
    sim.nodes[l].write_latency = Some(Duration::from_millis(20));
    let ok = sim.run_until(Duration::from_secs(600), |s| {
        s.nodes[l].finished_at.is_some()
    });
    assert!(ok, "leecher did not finish by {:?}", sim.now);
    assert!(sim.has_correct_data(l));
    assert_ground_truth(&sim);
    let n = &sim.nodes[l];
    assert!(n.held_deliveries > 0, "the disk was never behind");
    // One delivery (at most the 64 KiB send buffer) may land past twice the cap.
    assert!(
        n.peak_writes_pending <= (2 * CAP + (64 << 10)) as u64,
        "{} bytes waited for the disk, cap {CAP}",
        n.peak_writes_pending
    );
    assert_eq!(n.writes_pending, 0);
}

#[test]
fn one_seed_fifty_leechers() {
    let pieces = 200;
    let mut sim = Sim::new(content(pieces * 16_384 - 7, 2), PIECE, 11);
    let seed = sim.add_node(true, Behaviour::Honest, link(2_000_000), |_| {});
    let leechers: Vec<usize> = (0..50)
        .map(|_| {
            sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |c| {
                c.max_peers_per_torrent = 30
            })
        })
        .collect();
    let ok = sim.run_until(Duration::from_secs(3600), |s| all_finished(s, &leechers));
    let done = leechers
        .iter()
        .filter(|&&l| sim.nodes[l].finished_at.is_some())
        .count();
    assert!(ok, "{done}/50 finished by {:?}", sim.now);
    for &l in &leechers {
        assert!(sim.has_correct_data(l), "leecher {l} data");
    }
    assert_ground_truth(&sim);
    let from_seed = sim.nodes[seed].uploaded;
    let from_leechers: u64 = leechers.iter().map(|&l| sim.nodes[l].uploaded).sum();
    let share = from_leechers as f64 / (from_seed + from_leechers) as f64;
    let last = leechers
        .iter()
        .filter_map(|&l| sim.nodes[l].finished_at)
        .max()
        .expect("finished");
    println!(
        "50 leechers, {pieces} pieces: all done at {:.1} s simulated; leechers served {:.0}% of the bytes; peak {} connections",
        secs(last),
        share * 100.0,
        sim.peak_links
    );
    // State per peer connection: the struct plus its heap buffers at their caps.
    let cfg = SessionConfig::new(btcore_core::ids::PeerId([0; 20]));
    let low = SessionConfig::low_memory(btcore_core::ids::PeerId([0; 20]));
    for (name, c) in [("default", &cfg), ("low_memory", &low)] {
        let conn = core::mem::size_of::<PeerConn>();
        let send = c.peer.max_send_buffer;
        let recv = c.peer.wire.max_frame_len() as usize;
        // Our requests in flight (block ref + time: 20 bytes) and the peer's queued
        // requests (block ref: 12 bytes), at their caps; the peer's bitfield.
        let outstanding = c.peer.max_queue as usize * 20;
        let peer_reqs = c.peer.max_peer_requests * 12;
        let bitfield = pieces.div_ceil(8);
        println!(
            "per-peer state ({name}): PeerConn {conn} B + send buffer ≤ {send} B + receive buffer ≤ {recv} B (one frame) + requests ≤ {outstanding}+{peer_reqs} B + bitfield {bitfield} B = ≤ {} B",
            conn + send + recv + outstanding + peer_reqs + bitfield
        );
    }
    assert!(share > 0.5, "leechers served only {:.0}%", share * 100.0);
}

/// Scenario 1: honest seeds and leechers with a corrupt seed, a garbage node and a
/// silent seed among them.
#[test]
fn hostile_peers() {
    let pieces = 100;
    let mut sim = Sim::new(content(pieces * PIECE as usize - 300, 3), PIECE, 21);
    let seeds = [
        sim.add_node(true, Behaviour::Honest, link(1_000_000), |_| {}),
        sim.add_node(true, Behaviour::Honest, link(1_000_000), |_| {}),
    ];
    let corrupt = sim.add_node(true, Behaviour::Corrupt, link(2_000_000), |_| {});
    let garbage = sim.add_node(false, Behaviour::Garbage, link(1_000_000), |_| {});
    let silent = sim.add_node(true, Behaviour::Silent, link(1_000_000), |_| {});
    let leechers: Vec<usize> = (0..10)
        .map(|_| sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |_| {}))
        .collect();
    let ok = sim.run_until(Duration::from_secs(900), |s| all_finished(s, &leechers));
    let done = leechers
        .iter()
        .filter(|&&l| sim.nodes[l].finished_at.is_some())
        .count();
    assert!(ok, "{done}/10 finished by {:?}", sim.now);
    for &l in &leechers {
        assert!(sim.has_correct_data(l), "leecher {l} data");
    }
    assert_ground_truth(&sim);

    let corrupt_addr = sim.nodes[corrupt].addr;
    let received: Vec<usize> = leechers
        .iter()
        .copied()
        .filter(|&l| sim.nodes[l].received_from.contains_key(&corrupt_addr))
        .collect();
    // Bans are by address (IP), whatever the port.
    let banned_it: Vec<usize> = leechers
        .iter()
        .copied()
        .filter(|&l| {
            sim.nodes[l]
                .banned
                .iter()
                .any(|a| a.ip() == corrupt_addr.ip())
        })
        .collect();
    let failures: u32 = leechers.iter().map(|&l| sim.nodes[l].hash_failures).sum();
    let last = leechers
        .iter()
        .filter_map(|&l| sim.nodes[l].finished_at)
        .max()
        .expect("finished");
    println!(
        "hostile: 10 leechers done by {:.1} s; {failures} hash failures; corrupt seed sent data to {} leechers, banned by {} ({:?})",
        secs(last),
        received.len(),
        banned_it.len(),
        banned_it
    );
    for &l in &leechers {
        let n = &sim.nodes[l];
        println!(
            "  leecher {l}: done {:.1} s, {} B from the corrupt seed, {} hash failures, banned {:?}",
            secs(n.finished_at.expect("finished")),
            n.received_from.get(&corrupt_addr).copied().unwrap_or(0),
            n.hash_failures,
            n.banned
        );
    }
    assert!(!banned_it.is_empty(), "nobody banned the corrupt seed");
    // Every leecher whose pieces failed with its blocks banned it.
    for &l in &received {
        if sim.nodes[l].hash_failures > 0 {
            assert!(
                banned_it.contains(&l),
                "leecher {l} failed {} pieces, no ban",
                sim.nodes[l].hash_failures
            );
        }
    }
    // No honest node was banned by anyone.
    let honest: Vec<_> = seeds
        .iter()
        .chain(&leechers)
        .map(|&i| sim.nodes[i].addr.ip())
        .collect();
    for (i, n) in sim.nodes.iter().enumerate() {
        for a in &n.banned {
            assert!(!honest.contains(&a.ip()), "node {i} banned honest peer {a}");
        }
    }

    // The garbage node: every connection it sent noise on was closed by the other
    // end, with a protocol error, soon after the noise arrived.
    let g = &sim.garbage_links;
    assert!(!g.is_empty(), "the garbage node never got to send noise");
    let mut worst = 0;
    for l in g {
        match l.closed {
            Some((_, false)) => {
                // Both ends dialed at once and the garbage node's own (honest) session
                // dropped this one as the duplicate.
                let peer = sim.nodes[l.node].addr;
                assert!(
                    sim.nodes[garbage]
                        .closed
                        .iter()
                        .any(|&(a, e)| a == peer && e == CloseReason::Peer(PeerError::Duplicate)),
                    "garbage link to {} closed by garbage",
                    l.node
                );
            }
            Some((at, true)) => {
                let e = l.error.expect("closed with a reason");
                // Both ends dialed at once: one of the two connections closes as a
                // duplicate, as soon as the handshake shows it.
                assert!(
                    e.is_peer_fault() || e == PeerError::Duplicate,
                    "closed with {e:?}"
                );
                worst = worst.max(at.since(l.first_junk).as_millis());
            }
            None => assert!(
                sim.now.since(l.first_junk) < Duration::from_secs(1),
                "garbage link to node {} still open",
                l.node
            ),
        }
    }
    assert!(worst < 1000, "a garbage link stayed open {worst} ms");
    assert_eq!(sim.nodes[garbage].verified.len(), 0);
    let kinds: std::collections::BTreeSet<String> = g
        .iter()
        .filter_map(|l| l.error.map(|e| format!("{e:?}")))
        .map(|e| e.split([' ', '(']).take(2).collect::<Vec<_>>().join("("))
        .collect();
    println!(
        "  garbage node: {} connections got noise, all closed by the other end within {worst} ms ({kinds:?})",
        g.len()
    );
    // The silent seed served nothing; nobody finished waiting for it.
    assert_eq!(sim.nodes[silent].uploaded, 0);
    let silent_addr = sim.nodes[silent].addr;
    assert!(leechers
        .iter()
        .all(|&l| !sim.nodes[l].received_from.contains_key(&silent_addr)));
}

/// Runs one fast seed (and a very slow one when `slow`) and a leecher; returns when
/// the leecher got its first block, when it finished, and the bytes each seed sent.
fn endgame_run(slow: bool) -> (Instant, Instant, u64, u64) {
    let pieces = 200;
    let mut sim = Sim::new(content(pieces * PIECE as usize, 4), PIECE, 31);
    let fast = sim.add_node(true, Behaviour::Honest, link(5_000_000), |_| {});
    let slow_node = slow.then(|| sim.add_node(true, Behaviour::Honest, link(2_000), |_| {}));
    let l = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |_| {});
    let ok = sim.run_until(Duration::from_secs(600), |s| {
        s.nodes[l].finished_at.is_some()
    });
    assert!(ok, "leecher did not finish (slow = {slow})");
    assert!(sim.has_correct_data(l));
    assert_ground_truth(&sim);
    let slow_up = slow_node.map_or(0, |s| sim.nodes[s].uploaded);
    (
        sim.nodes[l].first_block_at.expect("got blocks"),
        sim.nodes[l].finished_at.expect("finished"),
        sim.nodes[fast].uploaded,
        slow_up,
    )
}

/// Scenario 2: a very slow seed must not hold the last pieces hostage.
#[test]
fn slow_peer_does_not_hold_the_endgame() {
    let (start_a, end_a, _, _) = endgame_run(false);
    let (start_s, end_s, fast_up, slow_up) = endgame_run(true);
    // Measured from the first block: both runs first wait for the seeds' choker round
    // (see `new_peer_is_unchoked_promptly`), which says nothing about the endgame.
    let alone = end_a.since(start_a).as_millis();
    let with_slow = end_s.since(start_s).as_millis();
    println!(
        "endgame: 3.2 MB; fast seed (5 MB/s) alone: first block {:.2} s, done {:.2} s ({alone} ms of transfer); with a 2 KB/s seed too: first block {:.2} s, done {:.2} s ({with_slow} ms); fast seed sent {} KiB, slow seed {} KiB",
        secs(start_a),
        secs(end_a),
        secs(start_s),
        secs(end_s),
        fast_up / 1024,
        slow_up / 1024
    );
    // One 16 KiB block at 2 KB/s takes 8 s and a request times out after 30 s: waiting
    // for either blows both bounds (the transfer alone takes about a second).
    assert!(
        with_slow < 2 * alone,
        "the slow seed held the download: {with_slow} ms vs {alone} ms alone"
    );
    assert!(
        with_slow < alone + 4_000,
        "the slow seed held the download: {with_slow} ms vs {alone} ms alone"
    );
}

/// A seed with free upload slots should unchoke a newly interested peer at once, not
/// at its next choker round.
#[test]

fn new_peer_is_unchoked_promptly() {
    let mut sim = Sim::new(content(20 * PIECE as usize, 8), PIECE, 61);
    sim.add_node(true, Behaviour::Honest, LinkSpec::default(), |_| {});
    let a = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |_| {});
    sim.run_for(Duration::from_secs(3));
    // One more joins between rounds.
    let b = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |_| {});
    assert!(sim.run_until(Duration::from_secs(60), |s| {
        s.nodes[a].finished_at.is_some() && s.nodes[b].finished_at.is_some()
    }));
    for l in [a, b] {
        let n = &sim.nodes[l];
        let wait = n.first_block_at.expect("blocks").since(n.joined_at);
        assert!(
            wait < Duration::from_secs(1),
            "node {l} joined at {:.1} s, first block at {:.1} s",
            secs(n.joined_at),
            secs(n.first_block_at.expect("blocks"))
        );
    }
}

/// Per-node results of a run, for the determinism check.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    finished: Vec<Option<u64>>,
    uploaded: Vec<u64>,
    verified: Vec<Vec<u32>>,
    now: u64,
}

fn swarm_outcome(seed: u64) -> Outcome {
    let mut sim = Sim::new(content(80 * PIECE as usize - 1000, 5), PIECE, seed);
    sim.add_node(true, Behaviour::Honest, link(1_000_000), |_| {});
    let leechers: Vec<usize> = (0..10)
        .map(|i| sim.add_node(false, Behaviour::Honest, link(300_000 + i * 50_000), |_| {}))
        .collect();
    assert!(sim.run_until(Duration::from_secs(600), |s| all_finished(s, &leechers)));
    assert_ground_truth(&sim);
    Outcome {
        finished: sim
            .nodes
            .iter()
            .map(|n| n.finished_at.map(|t| t.as_millis()))
            .collect(),
        uploaded: sim.nodes.iter().map(|n| n.uploaded).collect(),
        verified: sim.nodes.iter().map(|n| n.verified.clone()).collect(),
        now: sim.now.as_millis(),
    }
}

/// Scenario 3: the same seed gives the same run; another seed another run.
#[test]
fn deterministic() {
    let a = swarm_outcome(41);
    let b = swarm_outcome(41);
    assert_eq!(a, b, "same seed, different runs");
    let c = swarm_outcome(42);
    assert_ne!(a.finished, c.finished, "completion times ignore the seed");
    assert_ne!(a.verified, c.verified, "piece order ignores the seed");
    println!(
        "determinism: seed 41 twice identical (done at {} ms); seed 42 done at {} ms",
        a.now, c.now
    );
}

/// Scenario 4: leechers leave mid-way, new ones join late, connections drop.
#[test]
fn churn() {
    let pieces = 150;
    let mut sim = Sim::new(content(pieces * PIECE as usize - 5000, 6), PIECE, 51);
    let seed = sim.add_node(true, Behaviour::Honest, link(600_000), |_| {});
    let mut leechers: Vec<usize> = (0..12)
        .map(|_| sim.add_node(false, Behaviour::Honest, link(400_000), |_| {}))
        .collect();
    let mut killed = Vec::new();
    let mut late = Vec::new();

    sim.run_for(Duration::from_secs(14));
    // Three leave with part of the data.
    for &l in &leechers[..3] {
        sim.kill(l);
        killed.push(l);
    }
    // The network drops every connection of two others.
    sim.cut_links(leechers[3]);
    sim.cut_links(leechers[4]);
    sim.run_for(Duration::from_secs(2));
    // Five join late.
    for _ in 0..5 {
        let n = sim.add_node(false, Behaviour::Honest, link(400_000), |_| {});
        late.push(n);
        leechers.push(n);
    }
    sim.run_for(Duration::from_secs(5));
    // Two more leave (one of the newcomers) and the seed's connections drop.
    for l in [leechers[5], late[0]] {
        sim.kill(l);
        killed.push(l);
    }
    sim.cut_links(seed);
    sim.run_for(Duration::from_secs(2));
    for _ in 0..3 {
        let n = sim.add_node(false, Behaviour::Honest, link(400_000), |_| {});
        late.push(n);
        leechers.push(n);
    }
    let survivors: Vec<usize> = leechers
        .iter()
        .copied()
        .filter(|l| !killed.contains(l))
        .collect();
    let ok = sim.run_until(Duration::from_secs(900), |s| all_finished(s, &survivors));
    let pending: Vec<usize> = survivors
        .iter()
        .copied()
        .filter(|&l| sim.nodes[l].finished_at.is_none())
        .collect();
    assert!(ok, "unfinished at {:?}: {pending:?}", sim.now);
    for &l in &survivors {
        assert!(sim.has_correct_data(l), "leecher {l} data");
    }
    assert_ground_truth(&sim);
    let killed_progress: Vec<usize> = killed
        .iter()
        .map(|&k| sim.nodes[k].verified.len())
        .collect();
    let late_done: Vec<String> = late
        .iter()
        .filter(|l| !killed.contains(l))
        .map(|&l| {
            let n = &sim.nodes[l];
            format!(
                "{:.1}→{:.1}",
                secs(n.joined_at),
                secs(n.finished_at.expect("finished"))
            )
        })
        .collect();
    for &l in &survivors {
        let n = &sim.nodes[l];
        println!(
            "  node {l}: joined {:.1} s, first block {:.1} s, done {:.1} s",
            secs(n.joined_at),
            secs(n.first_block_at.expect("blocks")),
            secs(n.finished_at.expect("finished"))
        );
    }
    println!(
        "churn: {} survivors all done by {:.1} s; killed leechers had {killed_progress:?} of {pieces} pieces; late joiners (join→done s): {late_done:?}",
        survivors.len(),
        secs(
            survivors
                .iter()
                .filter_map(|&l| sim.nodes[l].finished_at)
                .max()
                .expect("finished")
        )
    );
}

/// BEP 11: three peers where only one knows the others; the two others learn of each
/// other through peer exchange and connect.
#[test]
fn pex_introduces_peers() {
    let mut sim = Sim::new(content(60 * 16_384, 9), 16_384, 5);
    sim.tracker = false;
    // A slow hub, so the download lasts past the first PEX message.
    let slow = LinkSpec {
        up_bps: 100_000,
        ..LinkSpec::default()
    };
    let hub = sim.add_node(true, Behaviour::Honest, slow, |_| {});
    let b = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |_| {});
    let c = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |_| {});
    let hub_addr = sim.nodes[hub].addr;
    let now = sim.now;
    for i in [b, c] {
        let t = sim.nodes[i].torrent.expect("torrent");
        sim.nodes[i]
            .session
            .handle_peers(now, t, &[hub_addr], PeerSource::User);
    }
    let met = sim.run_until(Duration::from_secs(30), |s| s.links_between(b, c) > 0);
    assert!(met, "b and c never met");
    let ok = sim.run_until(Duration::from_secs(300), |s| {
        s.nodes[b].finished_at.is_some() && s.nodes[c].finished_at.is_some()
    });
    assert!(ok && sim.has_correct_data(b) && sim.has_correct_data(c));
    let c_addr = sim.nodes[c].addr;
    let b_addr = sim.nodes[b].addr;
    let exchanged = sim.nodes[b]
        .received_from
        .get(&c_addr)
        .copied()
        .unwrap_or(0)
        + sim.nodes[c]
            .received_from
            .get(&b_addr)
            .copied()
            .unwrap_or(0);
    assert!(exchanged > 0, "b and c connected but exchanged no data");
}

/// BEP 9: a leecher that has only the info-hash fetches the info dictionary from its
/// peers with `ut_metadata`, checks it, and downloads.
#[test]
fn magnet_link_fetches_metadata_then_downloads() {
    let mut sim = Sim::new(content(40 * 16_384 + 5, 4), 16_384, 8);
    sim.add_node(true, Behaviour::Honest, LinkSpec::default(), |_| {});
    let m = sim.add_magnet_node(LinkSpec::default());
    let ok = sim.run_until(Duration::from_secs(120), |s| {
        s.nodes[m].finished_at.is_some()
    });
    assert!(ok, "magnet leecher did not finish");
    assert!(sim.has_correct_data(m));
}

/// Pausing closes a torrent's connections and stops its progress; resuming finishes it.
#[test]
fn pause_stops_progress_and_resume_finishes() {
    let mut sim = Sim::new(content(200 * 16_384, 12), 16_384, 13);
    let slow = LinkSpec {
        up_bps: 200_000,
        ..LinkSpec::default()
    };
    sim.add_node(true, Behaviour::Honest, slow, |_| {});
    let l = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |_| {});
    sim.run_for(Duration::from_secs(5));
    let t = sim.nodes[l].torrent.expect("torrent");
    let before = sim.nodes[l].verified.len();
    assert!(
        before > 0 && sim.nodes[l].finished_at.is_none(),
        "{before} pieces"
    );
    let now = sim.now;
    assert!(sim.nodes[l].session.pause_torrent(now, t));
    sim.run_for(Duration::from_secs(20));
    let status = sim.nodes[l]
        .session
        .torrent_status(t, sim.now)
        .expect("status");
    assert!(status.paused && status.peers == 0, "{status:?}");
    // A few blocks in flight may still land; no new requests go out while paused.
    let during = sim.nodes[l].verified.len();
    assert!(during <= before + 2, "{before} -> {during} while paused");
    let now = sim.now;
    assert!(sim.nodes[l].session.resume_torrent(now, t));
    let ok = sim.run_until(Duration::from_secs(120), |s| {
        s.nodes[l].finished_at.is_some()
    });
    assert!(ok && sim.has_correct_data(l));
}

/// A torrent added while its data is being checked neither announces, dials nor takes
/// peers; once the check reports its pieces it starts and serves them.
#[test]
fn a_checking_torrent_waits_for_its_check() {
    let mut sim = Sim::new(content(60 * 16_384, 21), 16_384, 22);
    let c = sim.add_checking_node(LinkSpec::default());
    let l = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |_| {});
    let t = sim.nodes[c].torrent.expect("checking torrent added");
    sim.run_for(Duration::from_secs(10));
    let status = sim.nodes[c]
        .session
        .torrent_status(t, sim.now)
        .expect("status");
    assert_eq!(status.state, TorrentState::Checking);
    assert_eq!((status.pieces_have, status.peers), (0, 0), "{status:?}");
    assert!(sim.nodes[l].verified.is_empty());
    let now = sim.now;
    let n = sim.num_pieces();
    // A result of the wrong size changes nothing.
    assert!(!sim.nodes[c]
        .session
        .handle_checked(now, t, &Bitfield::full(n + 1)));
    assert!(sim.nodes[c]
        .session
        .handle_checked(now, t, &Bitfield::full(n)));
    // Only once.
    assert!(!sim.nodes[c]
        .session
        .handle_checked(now, t, &Bitfield::full(n)));
    let status = sim.nodes[c]
        .session
        .torrent_status(t, sim.now)
        .expect("status");
    assert_eq!(status.state, TorrentState::Seeding);
    let ok = sim.run_until(Duration::from_secs(120), |s| {
        s.nodes[l].finished_at.is_some()
    });
    assert!(ok && sim.has_correct_data(l));
}

/// The global connection cap holds whoever dials whom, and the capped peer still
/// finishes.
#[test]
fn global_connection_cap_holds() {
    let mut sim = Sim::new(content(80 * 16_384, 14), 16_384, 15);
    sim.add_node(true, Behaviour::Honest, LinkSpec::default(), |_| {});
    let capped = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |c| {
        c.max_connections = 3;
    });
    for _ in 0..8 {
        sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |_| {});
    }
    let n = sim.nodes.len();
    let mut most = 0;
    let ok = sim.run_until(Duration::from_secs(300), |s| {
        let links: usize = (0..n)
            .filter(|&j| j != capped)
            .map(|j| s.links_between(capped, j))
            .sum();
        most = most.max(links);
        s.nodes[capped].finished_at.is_some()
    });
    assert!(ok && sim.has_correct_data(capped));
    assert_eq!(most, 3, "the cap is reached and never passed");
}
