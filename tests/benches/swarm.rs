//! A larger simulated swarm, for numbers rather than pass/fail:
//! `cargo bench -p btcore-tests --bench swarm`.
//!
//! One seed and 300 leechers share 500 pieces of 16 KiB in the deterministic
//! simulator; each row prints the simulated completion times, the share of bytes the
//! leechers served each other, hash failures, the simulator's wall-clock time and the
//! most connections open at once.

use btcore_core::session::SessionConfig;
use btcore_core::time::Duration;
use btcore_tests::sim::{content, Behaviour, LinkSpec, Sim};
use std::time::Instant as WallClock;

struct Row {
    name: &'static str,
    leechers: usize,
    done: usize,
    min: f64,
    median: f64,
    max: f64,
    share: f64,
    hash_failures: u32,
    wall: f64,
    peak_links: usize,
}

fn run(name: &'static str, leechers: usize, pieces: usize, low_memory: bool) -> Row {
    let wall = WallClock::now();
    let mut sim = Sim::new(content(pieces * 16_384, 9), 16_384, 77);
    let config = move |c: &mut SessionConfig| {
        if low_memory {
            *c = SessionConfig::low_memory(c.peer_id);
        }
    };
    let seed = sim.add_node(
        true,
        Behaviour::Honest,
        LinkSpec {
            up_bps: 4_000_000,
            ..LinkSpec::default()
        },
        config,
    );
    let ls: Vec<usize> = (0..leechers)
        .map(|_| sim.add_node(false, Behaviour::Honest, LinkSpec::default(), config))
        .collect();
    sim.run_until(Duration::from_secs(3600), |s| {
        ls.iter().all(|&l| s.nodes[l].finished_at.is_some())
    });
    let wall = wall.elapsed().as_secs_f64();
    let mut times: Vec<f64> = ls
        .iter()
        .filter_map(|&l| sim.nodes[l].finished_at)
        .map(|t| t.as_millis() as f64 / 1000.0)
        .collect();
    times.sort_by(f64::total_cmp);
    for &l in &ls {
        if sim.nodes[l].finished_at.is_some() {
            assert!(sim.has_correct_data(l), "leecher {l} has wrong data");
        }
        assert!(
            sim.nodes[l].violations.is_empty(),
            "{:?}",
            sim.nodes[l].violations
        );
    }
    let from_seed = sim.nodes[seed].uploaded;
    let from_leechers: u64 = ls.iter().map(|&l| sim.nodes[l].uploaded).sum();
    let pick = |f: f64| {
        times
            .get(((times.len() as f64 - 1.0) * f) as usize)
            .copied()
    };
    Row {
        name,
        leechers,
        done: times.len(),
        min: pick(0.0).unwrap_or(f64::NAN),
        median: pick(0.5).unwrap_or(f64::NAN),
        max: pick(1.0).unwrap_or(f64::NAN),
        share: from_leechers as f64 / (from_seed + from_leechers).max(1) as f64,
        hash_failures: ls.iter().map(|&l| sim.nodes[l].hash_failures).sum(),
        wall,
        peak_links: sim.peak_links,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep that
    // short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (leechers, pieces) = if quick { (20, 50) } else { (300, 500) };
    let rows = [
        run("default", leechers, pieces, false),
        run("low_memory", leechers, pieces, true),
    ];
    println!(
        "swarm: 1 seed (4 MB/s up) + {leechers} leechers (1 MB/s up, 20 ms), {pieces} pieces of 16 KiB ({:.1} MB)",
        (pieces * 16_384) as f64 / 1e6
    );
    println!(
        "{:<11} {:>9} {:>8} {:>8} {:>8} {:>10} {:>9} {:>8} {:>10}",
        "profile",
        "finished",
        "min s",
        "median s",
        "max s",
        "by leechers",
        "hash fail",
        "wall s",
        "peak conns"
    );
    for r in &rows {
        println!(
            "{:<11} {:>5}/{:<3} {:>8.1} {:>8.1} {:>8.1} {:>10.1}% {:>9} {:>8.2} {:>10}",
            r.name,
            r.done,
            r.leechers,
            r.min,
            r.median,
            r.max,
            r.share * 100.0,
            r.hash_failures,
            r.wall,
            r.peak_links
        );
    }
}
