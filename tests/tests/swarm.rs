//! The deterministic swarm simulation: btcore sessions against each other in memory.

use btcore_core::time::Duration;
use btcore_tests::sim::{content, Behaviour, LinkSpec, Sim};

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
}

#[test]
fn one_seed_fifty_leechers() {
    let pieces = 200;
    let mut sim = Sim::new(content(pieces * 16_384 - 7, 2), 16_384, 11);
    let seed = sim.add_node(
        true,
        Behaviour::Honest,
        LinkSpec {
            up_bps: 2_000_000,
            ..LinkSpec::default()
        },
        |_| {},
    );
    let leechers: Vec<usize> = (0..50)
        .map(|_| {
            sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |c| {
                c.max_peers_per_torrent = 30
            })
        })
        .collect();
    let ok = sim.run_until(Duration::from_secs(3600), |s| {
        leechers.iter().all(|&l| s.nodes[l].finished_at.is_some())
    });
    let done = leechers
        .iter()
        .filter(|&&l| sim.nodes[l].finished_at.is_some())
        .count();
    assert!(ok, "{done}/50 finished by {:?}", sim.now);
    for &l in &leechers {
        assert!(sim.has_correct_data(l), "leecher {l} data");
    }
    let from_seed = sim.nodes[seed].uploaded;
    let from_leechers: u64 = leechers.iter().map(|&l| sim.nodes[l].uploaded).sum();
    let share = from_leechers as f64 / (from_seed + from_leechers) as f64;
    let last = leechers
        .iter()
        .filter_map(|&l| sim.nodes[l].finished_at)
        .max()
        .expect("finished");
    println!(
        "50 leechers, {pieces} pieces: all done at {:.1} s simulated; leechers served {:.0}% of the bytes",
        last.as_millis() as f64 / 1000.0,
        share * 100.0
    );
    assert!(share > 0.5, "leechers served only {:.0}%", share * 100.0);
}
