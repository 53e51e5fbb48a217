//! Per-torrent controls in the simulated swarm: file priorities (a skipped file's
//! pieces are never requested, the torrent finishes with the wanted ones and resumes
//! when more become wanted), the finished event however a torrent got there, and the
//! ratio limit that stops seeding.

use btcore_core::bitfield::Bitfield;
use btcore_core::ids::PeerId;
use btcore_core::session::{
    ControlError, Event, Session, SessionConfig, TorrentState, DEFAULT_FILE_PRIORITY,
};
use btcore_core::time::{Duration, Instant};
use btcore_tests::sim::{content, make_multi_torrent, Behaviour, LinkSpec, Sim};

const PIECE: u32 = 16_384;
const P: u64 = PIECE as u64;

/// Three files: `f0` of 10 pieces and 3000 bytes, `f1` of 20 pieces, `f2` the rest
/// (about 10 pieces): pieces 10 and 30 are shared across file boundaries.
fn lens() -> [u64; 3] {
    [10 * P + 3000, 20 * P, 10 * P - 3000 + 500]
}

fn three_files(seed: u64) -> Sim {
    let total: u64 = lens().iter().sum();
    Sim::new(content(total as usize, seed), PIECE, seed).with_files(&lens())
}

/// Pieces that hold bytes of file `f1` only (no other file shares them).
fn f1_only() -> std::ops::Range<u32> {
    // f1 spans [10P+3000, 30P+3000): piece 10 is shared with f0, piece 30 with f2.
    11..30
}

#[test]
fn a_skipped_file_is_never_requested_and_wanted_again_resumes() {
    let mut sim = three_files(3);
    sim.add_node(true, Behaviour::Honest, LinkSpec::default(), |_| {});
    let l = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |_| {});
    let t = sim.nodes[l].torrent.expect("torrent");
    let now = sim.now;
    let s = &mut sim.nodes[l].session;
    assert_eq!(s.num_files(t), Some(3));
    s.set_file_priorities(now, t, &[DEFAULT_FILE_PRIORITY, 0, 7])
        .expect("priorities");
    let ok = sim.run_until(Duration::from_secs(120), |s| {
        s.nodes[l].finished_at.is_some()
    });
    assert!(ok, "the wanted files did not finish");
    let st = sim.nodes[l]
        .session
        .torrent_status(t, sim.now)
        .expect("status");
    assert!(st.finished, "{st:?}");
    assert_eq!(st.state, TorrentState::Downloading, "not a seed: {st:?}");
    assert_eq!(st.wanted_have, st.wanted_size);
    // Pieces 0..=10 (f0, and the piece f0 shares with f1) and 30.. (f2 and the shared
    // piece 30).
    assert_eq!(st.wanted_size, 11 * P + (st.total_size - 30 * P));
    let n = &sim.nodes[l];
    for p in f1_only() {
        assert!(
            !n.pieces_received.contains(&p),
            "piece {p} of the skipped file"
        );
        assert!(!n.verified.contains(&p));
    }
    assert!(
        n.verified.contains(&10) && n.verified.contains(&30),
        "shared pieces fetched"
    );
    // Finished: nothing more is requested, the peer is of no interest.
    let got = n.pieces_received.len();
    sim.run_for(Duration::from_secs(30));
    assert_eq!(sim.nodes[l].pieces_received.len(), got);
    let peers = sim.nodes[l].session.peers(t);
    assert!(peers.iter().all(|p| !p.am_interested), "{peers:?}");
    // Wanted again: it downloads the rest and seeds, with a second finished event.
    let first = sim.nodes[l].finished_at.take();
    let now = sim.now;
    sim.nodes[l]
        .session
        .set_file_priorities(now, t, &[4, 1, 4])
        .expect("priorities");
    let st = sim.nodes[l]
        .session
        .torrent_status(t, sim.now)
        .expect("status");
    assert!(!st.finished && st.wanted_size == st.total_size, "{st:?}");
    let ok = sim.run_until(Duration::from_secs(120), |s| {
        s.nodes[l].finished_at.is_some()
    });
    assert!(ok, "the rest did not arrive");
    assert!(sim.nodes[l].finished_at > first);
    let st = sim.nodes[l]
        .session
        .torrent_status(t, sim.now)
        .expect("status");
    assert_eq!(st.state, TorrentState::Seeding);
    assert!(sim.has_correct_data(l));
}

#[test]
fn file_priorities_are_checked() {
    let mut sim = three_files(4);
    let l = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |_| {});
    let t = sim.nodes[l].torrent.expect("torrent");
    let now = sim.now;
    let s = &mut sim.nodes[l].session;
    assert_eq!(
        s.set_file_priorities(now, t, &[4, 4]),
        Err(ControlError::WrongFileCount {
            expected: 3,
            got: 2
        })
    );
    assert_eq!(
        s.set_file_priorities(now, t, &[4, 8, 4]),
        Err(ControlError::InvalidPriority)
    );
    assert_eq!(
        s.set_file_priorities(now, btcore_core::session::TorrentId(99), &[4, 4, 4]),
        Err(ControlError::UnknownTorrent)
    );
    assert!(s.set_sequential(t, true));
    let st = s.torrent_status(t, now).expect("status");
    assert_eq!(st.wanted_size, st.total_size);
    let m = sim.add_magnet_node(LinkSpec::default());
    let mt = sim.nodes[m].torrent.expect("magnet");
    assert_eq!(
        sim.nodes[m]
            .session
            .set_file_priorities(now, mt, &[4, 4, 4]),
        Err(ControlError::NoMetadata)
    );
    assert_eq!(sim.nodes[m].session.num_files(mt), None);
}

/// A check that finds the whole download on disk finishes the torrent: the finished
/// event goes out (as libtorrent's after a check), so an application waiting for it
/// does not hang.
#[test]
fn a_check_that_finds_everything_sends_the_finished_event() {
    let mut sim = Sim::new(content(30 * PIECE as usize, 5), PIECE, 6);
    let c = sim.add_checking_node(LinkSpec::default());
    let t = sim.nodes[c].torrent.expect("torrent");
    sim.run_for(Duration::from_secs(2));
    assert!(sim.nodes[c].finished_at.is_none());
    let now = sim.now;
    let n = sim.num_pieces();
    assert!(sim.nodes[c]
        .session
        .handle_checked(now, t, &Bitfield::full(n)));
    sim.run_for(Duration::from_secs(1));
    assert!(sim.nodes[c].finished_at.is_some(), "no finished event");
}

/// Resume data that has every piece finishes the torrent at once, with its event
/// (once); one that has part of it does not.
#[test]
fn resume_data_with_everything_sends_the_finished_event_once() {
    let file = make_multi_torrent(&content(5 * PIECE as usize, 7), PIECE, &[P, 4 * P]);
    let mut s = Session::new(SessionConfig::new(PeerId([7; 20])), 1);
    let now = Instant::from_millis(1);
    let t = s
        .add_torrent(now, &file, Some(&Bitfield::full(5)))
        .expect("add");
    let finished = |s: &mut Session| {
        std::iter::from_fn(|| s.poll_event())
            .filter(|e| *e == Event::TorrentFinished(t))
            .count()
    };
    assert_eq!(finished(&mut s), 1);
    s.handle_timeout(now + Duration::from_secs(1));
    assert_eq!(finished(&mut s), 0);
    let mut part = Bitfield::new(5);
    part.set(0);
    let mut s = Session::new(SessionConfig::new(PeerId([7; 20])), 1);
    let t = s.add_torrent(now, &file, Some(&part)).expect("add");
    assert_eq!(
        std::iter::from_fn(|| s.poll_event())
            .filter(|e| *e == Event::TorrentFinished(t))
            .count(),
        0
    );
    // Only file 0 wanted, and it is there: finished now.
    s.set_file_priorities(now, t, &[4, 0]).expect("priorities");
    assert_eq!(
        std::iter::from_fn(|| s.poll_event())
            .filter(|e| *e == Event::TorrentFinished(t))
            .count(),
        1
    );
}

/// A seed with a ratio limit of 0.5 stops once it uploaded half the torrent's size:
/// paused, with its event; the leecher gets no more from it.
#[test]
fn the_ratio_limit_stops_seeding() {
    let total = 60 * PIECE as usize;
    let mut sim = Sim::new(content(total, 8), PIECE, 9);
    let slow = LinkSpec {
        up_bps: 200_000,
        ..LinkSpec::default()
    };
    let seed = sim.add_node(true, Behaviour::Honest, slow, |_| {});
    let t = sim.nodes[seed].torrent.expect("torrent");
    let now = sim.now;
    assert!(sim.nodes[seed].session.set_ratio_limit(now, t, Some(500)));
    let l = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), |_| {});
    let ok = sim.run_until(Duration::from_secs(60), |s| {
        s.nodes[seed].ratio_reached_at.is_some()
    });
    assert!(ok, "the seed never stopped");
    let st = sim.nodes[seed]
        .session
        .torrent_status(t, sim.now)
        .expect("status");
    assert!(st.paused, "{st:?}");
    assert!(st.uploaded * 2 >= total as u64, "{st:?}");
    // Checked as each block goes out: past the limit only by the block that reached
    // it.
    assert!(st.uploaded <= total as u64 / 2 + P, "{st:?}");
    let got = sim.nodes[l].verified.len();
    sim.run_for(Duration::from_secs(10));
    assert_eq!(
        sim.nodes[l].verified.len(),
        got,
        "the paused seed sent more"
    );
    assert!(sim.nodes[l].finished_at.is_none());
    // Lifted: it seeds again and the leecher finishes.
    let now = sim.now;
    assert!(sim.nodes[seed].session.set_ratio_limit(now, t, None));
    assert!(sim.nodes[seed].session.resume_torrent(now, t));
    let ok = sim.run_until(Duration::from_secs(120), |s| {
        s.nodes[l].finished_at.is_some()
    });
    assert!(ok && sim.has_correct_data(l));
}
