//! The download queue, the idle seeding limit and a torrent's own connection cap in
//! the simulated swarm: at most N downloads run and the rest wait without a
//! connection, a stalled one gives its slot away, `resume_now` passes the queue, a
//! paused torrent frees its slot; a seed that uploads nothing for its idle limit
//! stops; a lowered peer limit closes the connections over it.

use btcore_core::peer::PeerError;
use btcore_core::session::{CloseReason, Event, IdleLimit, QueueMove, TorrentId, TorrentStatus};
use btcore_core::time::Duration;
use btcore_tests::sim::{content, make_torrent, Behaviour, LinkSpec, Sim};

const PIECE: u32 = 16_384;

fn status(sim: &Sim, node: usize, t: TorrentId) -> TorrentStatus {
    sim.nodes[node]
        .session
        .torrent_status(t, sim.now)
        .expect("status")
}

/// Adds to node `node` a torrent of its own (no other node has it).
fn add_other(sim: &mut Sim, node: usize, seed: u64) -> TorrentId {
    let file = make_torrent(&content(8 * PIECE as usize, seed), PIECE);
    let now = sim.now;
    sim.nodes[node]
        .session
        .add_torrent(now, &file, None)
        .expect("add")
}

fn queued_events(sim: &Sim, node: usize, t: TorrentId) -> (usize, usize) {
    let ev = &sim.nodes[node].queue_events;
    (
        ev.iter()
            .filter(|(_, e)| *e == Event::TorrentQueued(t))
            .count(),
        ev.iter()
            .filter(|(_, e)| *e == Event::TorrentDequeued(t))
            .count(),
    )
}

/// A queue of one: the second download waits, with no connection, until the first
/// finishes (and joins the seeds); then it starts by itself.
#[test]
fn a_queue_of_one_runs_one_download_at_a_time() {
    let mut sim = Sim::new(content(40 * PIECE as usize, 1), PIECE, 2);
    sim.add_node(true, Behaviour::Honest, LinkSpec::default(), |_| {});
    let l = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |c| {
        c.download_queue = Some(1);
    });
    let a = sim.nodes[l].torrent.expect("torrent");
    let b = add_other(&mut sim, l, 3);
    assert_eq!(sim.nodes[l].session.queue_position(a), Some(0));
    assert_eq!(sim.nodes[l].session.queue_position(b), Some(1));
    let st = status(&sim, l, b);
    assert!(st.queued && !st.paused, "{st:?}");
    assert!(!status(&sim, l, a).queued);
    let mut waited = 0;
    while sim.nodes[l].finished_at.is_none() {
        assert!(waited < 240, "the first download never finished");
        sim.run_for(Duration::from_millis(500));
        waited += 1;
        if sim.nodes[l].finished_at.is_some() {
            break;
        }
        let st = status(&sim, l, b);
        assert!(st.queued, "started before the first finished: {st:?}");
        assert_eq!(
            st.peers + st.connecting,
            0,
            "a queued torrent connects: {st:?}"
        );
    }
    // The first is a seed now: the download slot is free.
    sim.run_for(Duration::from_secs(2));
    let st = status(&sim, l, b);
    assert!(!st.queued, "{st:?}");
    assert_eq!(queued_events(&sim, l, b), (1, 1));
    assert!(sim.has_correct_data(l));
}

/// A download that moved nothing for `queue_stalled_after` no longer holds its slot:
/// the next one starts (the stalled one keeps running).
#[test]
fn a_stalled_download_gives_its_slot_to_the_next() {
    // No seed: nothing ever arrives.
    let mut sim = Sim::new(content(20 * PIECE as usize, 4), PIECE, 5);
    let l = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |c| {
        c.download_queue = Some(1);
        c.queue_stalled_after = Some(Duration::from_secs(10));
    });
    let a = sim.nodes[l].torrent.expect("torrent");
    let b = add_other(&mut sim, l, 6);
    let c = add_other(&mut sim, l, 7);
    sim.run_for(Duration::from_secs(5));
    assert!(status(&sim, l, b).queued && status(&sim, l, c).queued);
    sim.run_for(Duration::from_secs(7));
    assert!(
        !status(&sim, l, a).queued,
        "a stalled torrent keeps running"
    );
    assert!(!status(&sim, l, b).queued, "the next did not start");
    assert!(status(&sim, l, c).queued, "only one slot was freed");
    // The second stalls in turn.
    sim.run_for(Duration::from_secs(11));
    assert!(!status(&sim, l, c).queued);
}

/// `resume_now` starts a torrent past a full queue (and it does not count in it); a
/// paused torrent gives its slot to the next in queue order; one resumed with the
/// queue full waits.
#[test]
fn start_now_passes_the_queue_and_paused_torrents_do_not_count() {
    let mut sim = Sim::new(content(20 * PIECE as usize, 8), PIECE, 9);
    let l = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |c| {
        c.download_queue = Some(1);
    });
    let a = sim.nodes[l].torrent.expect("torrent");
    let b = add_other(&mut sim, l, 10);
    let c = add_other(&mut sim, l, 11);
    let d = add_other(&mut sim, l, 12);
    sim.run_for(Duration::from_secs(1));
    let now = sim.now;
    let s = &mut sim.nodes[l].session;
    assert!(s.resume_now(now, c));
    sim.run_for(Duration::from_secs(2));
    assert!(!status(&sim, l, a).queued);
    assert!(!status(&sim, l, c).queued, "start-now waited");
    assert!(status(&sim, l, b).queued && status(&sim, l, d).queued);
    // D moved ahead of B: it is next.
    let now = sim.now;
    let s = &mut sim.nodes[l].session;
    assert!(s.move_in_queue(now, d, QueueMove::Top));
    assert_eq!(s.queue_position(d), Some(0));
    assert_eq!(s.queue_position(a), Some(1));
    assert_eq!(s.queue_position(b), Some(2));
    assert_eq!(s.queue_position(c), Some(3));
    assert!(s.pause_torrent(now, a));
    sim.run_for(Duration::from_secs(2));
    assert!(
        !status(&sim, l, d).queued,
        "the paused torrent kept its slot"
    );
    assert!(status(&sim, l, b).queued);
    let st = status(&sim, l, a);
    assert!(st.paused && !st.queued, "{st:?}");
    // Resumed with the queue full: it waits.
    let now = sim.now;
    assert!(sim.nodes[l].session.resume_torrent(now, a));
    sim.run_for(Duration::from_secs(2));
    let st = status(&sim, l, a);
    assert!(st.queued && !st.paused, "{st:?}");
    // The queue lifted: everyone runs.
    let now = sim.now;
    let mut cfg = sim.nodes[l].session.config().clone();
    cfg.download_queue = None;
    sim.nodes[l].session.set_config(now, cfg);
    for t in [a, b, c, d] {
        assert!(!status(&sim, l, t).queued);
    }
}

/// A seed with an idle limit of one minute keeps seeding while it uploads, and stops
/// (paused, with its event) a minute after its last upload; the session's default
/// stops another, and `Unlimited` overrides the default.
#[test]
fn the_idle_limit_stops_a_seed_that_uploads_nothing() {
    let total = 40 * PIECE as usize;
    let mut sim = Sim::new(content(total, 13), PIECE, 14);
    // About 65 s to upload the torrent: longer than the limit.
    let slow = LinkSpec {
        up_bps: 10_000,
        ..LinkSpec::default()
    };
    let seed = sim.add_node(true, Behaviour::Honest, slow, |_| {});
    let t = sim.nodes[seed].torrent.expect("torrent");
    let now = sim.now;
    assert!(sim.nodes[seed]
        .session
        .set_idle_limit(now, t, IdleLimit::Minutes(1)));
    assert_eq!(
        sim.nodes[seed].session.idle_limit(t),
        Some(IdleLimit::Minutes(1))
    );
    let l = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |_| {});
    let ok = sim.run_until(Duration::from_secs(200), |s| {
        s.nodes[l].finished_at.is_some()
    });
    assert!(ok, "the leecher did not finish");
    let took = sim.now.since(sim.nodes[l].joined_at);
    assert!(took > Duration::from_secs(60), "{took:?}");
    assert!(
        sim.nodes[seed].idle_reached_at.is_none(),
        "stopped while uploading"
    );
    let done = sim.now;
    let ok = sim.run_until(Duration::from_secs(120), |s| {
        s.nodes[seed].idle_reached_at.is_some()
    });
    assert!(ok, "the idle seed never stopped");
    let at = sim.nodes[seed].idle_reached_at.expect("stopped");
    assert!(
        at.since(done) <= Duration::from_secs(62),
        "{:?}",
        at.since(done)
    );
    assert!(status(&sim, seed, t).paused);

    // The session's default, and a torrent that opts out.
    let mut sim = Sim::new(content(total, 15), PIECE, 16);
    let a = sim.add_node(true, Behaviour::Honest, LinkSpec::default(), |c| {
        c.seed_idle_minutes = Some(2);
    });
    let b = sim.add_node(true, Behaviour::Honest, LinkSpec::default(), |c| {
        c.seed_idle_minutes = Some(2);
    });
    let tb = sim.nodes[b].torrent.expect("torrent");
    let now = sim.now;
    assert!(sim.nodes[b]
        .session
        .set_idle_limit(now, tb, IdleLimit::Unlimited));
    sim.run_for(Duration::from_secs(119));
    assert!(sim.nodes[a].idle_reached_at.is_none());
    sim.run_for(Duration::from_secs(3));
    assert!(
        sim.nodes[a].idle_reached_at.is_some(),
        "the default did not apply"
    );
    sim.run_for(Duration::from_secs(60));
    assert!(
        sim.nodes[b].idle_reached_at.is_none(),
        "Unlimited was not kept"
    );
}

/// A seed with six leechers connected: its peer limit lowered to two closes four of
/// them at once (a connection limit, not a fault), and it takes no more than two
/// while the limit holds; lifted, it connects again.
#[test]
fn a_lowered_peer_limit_closes_the_connections_over_it() {
    let mut sim = Sim::new(content(200 * PIECE as usize, 17), PIECE, 18);
    let slow = LinkSpec {
        up_bps: 100_000,
        ..LinkSpec::default()
    };
    let seed = sim.add_node(true, Behaviour::Honest, slow, |_| {});
    let t = sim.nodes[seed].torrent.expect("torrent");
    for _ in 0..6 {
        sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |_| {});
    }
    sim.run_for(Duration::from_secs(5));
    let peers = |sim: &Sim| {
        let st = status(sim, seed, t);
        st.peers + st.connecting
    };
    assert_eq!(peers(&sim), 6);
    let closed_before = sim.nodes[seed].closed.len();
    let now = sim.now;
    assert!(sim.nodes[seed].session.set_peer_limit(now, t, Some(2)));
    assert_eq!(sim.nodes[seed].session.peer_limit(t), Some(2));
    assert_eq!(peers(&sim), 2, "the connections over the limit stayed");
    // The closes go out as actions.
    sim.run_for(Duration::from_millis(1));
    let closed = &sim.nodes[seed].closed[closed_before..];
    assert_eq!(closed.len(), 4, "{closed:?}");
    assert!(closed
        .iter()
        .all(|(_, r)| *r == CloseReason::Peer(PeerError::ConnectionLimit)));
    for _ in 0..20 {
        sim.run_for(Duration::from_secs(1));
        assert!(peers(&sim) <= 2, "past the limit: {}", peers(&sim));
    }
    let now = sim.now;
    assert!(sim.nodes[seed].session.set_peer_limit(now, t, None));
    assert_eq!(sim.nodes[seed].session.peer_limit(t), Some(50));
    let ok = sim.run_until(Duration::from_secs(120), |s| {
        let st = s.nodes[seed]
            .session
            .torrent_status(t, s.now)
            .expect("status");
        st.peers >= 4
    });
    assert!(ok, "the lifted limit let no one back");
}
