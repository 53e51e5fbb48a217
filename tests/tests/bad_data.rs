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

/// An honest seed and a leecher; with `attack`, also a seed that serves flipped bytes,
/// dials the leecher again right after every close with a new port and peer id, and
/// whose blocks land in the same pieces as the honest seed's. `digests`: whether the
/// leecher's host gives block digests.
fn run(attack: bool, digests: bool) -> Run {
    let mut sim = Sim::new(content(PIECES * PIECE as usize - 1000, 15), PIECE, 77);
    let seed = sim.add_node(true, Behaviour::Honest, link(2_000_000), |_| {});
    let victim = sim.add_node(false, Behaviour::Honest, link(1_000_000), |_| {});
    sim.nodes[victim].block_digests = digests;
    let attacker = attack.then(|| {
        sim.add_node(true, Behaviour::Rejoining, link(2_000_000), |c| {
            c.reconnect_backoff = Duration::from_millis(100);
        })
    });
    let ok = sim.run_until(Duration::from_secs(300), |s| {
        s.nodes[victim].finished_at.is_some()
    });
    let v = &sim.nodes[victim];
    assert!(
        ok,
        "the leecher did not finish by {:.1} s: {} of {PIECES} pieces, {} hash failures, banned {:?}",
        secs(sim.now),
        v.verified.len(),
        v.hash_failures,
        v.banned
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
    let clean = run(false, true);
    let attacked = run(true, true);
    check(&clean, &attacked);
}

/// The same without block digests from the host (a host that only says pass or
/// fail): parole alone singles the attacker out.
#[test]
fn without_block_digests_parole_finds_the_attacker() {
    let clean = run(false, false);
    let attacked = run(true, false);
    check(&clean, &attacked);
}
