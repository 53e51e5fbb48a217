//! Announce scheduling over a simulated day: a session with hundreds of torrents and a
//! tracker that sets `interval` and `min interval` (what private trackers enforce). The
//! session must use the tracker's interval, never announce twice within its
//! `min interval` (short of peers or not), back off when the tracker fails, and spread
//! the announces of torrents that start together.

use btcore_core::bitfield::Bitfield;
use btcore_core::ids::PeerId;
use btcore_core::session::{
    Action, AnnounceEvent, AnnounceOutcome, Session, SessionConfig, TorrentId,
};
use btcore_core::time::{Duration, Instant};
use btcore_tests::sim::make_torrent;
use std::collections::BTreeMap;

const DAY_SECS: u64 = 24 * 3600;

/// The tracker of the test: answers with `interval`/`min_interval`, or fails every
/// announce until `fail_until`.
struct Tracker {
    interval: u32,
    min_interval: Option<u32>,
    fail_until: Instant,
}

type Log = BTreeMap<TorrentId, Vec<(Instant, Option<AnnounceEvent>)>>;

/// Runs `n` torrents (seeding when `seed`) for `secs` simulated seconds, the session's
/// timers run every `step` seconds, answering each announce at once; returns every
/// announce per torrent.
fn run(n: usize, seed: bool, secs: u64, step: u64, tracker: &Tracker) -> Log {
    let mut session = Session::new(SessionConfig::new(PeerId([7; 20])), 1);
    let mut now = Instant::from_millis(1_000);
    let mut log: Log = BTreeMap::new();
    for i in 0..n {
        // One 16 KiB piece per torrent, distinct content.
        let content: Vec<u8> = (0..16_384u32)
            .map(|b| (b as usize * 31 + i * 7919) as u8 ^ (i >> 8) as u8)
            .collect();
        let file = make_torrent(&content, 16_384);
        let have = seed.then(|| Bitfield::full(1));
        let id = session
            .add_torrent(now, &file, have.as_ref())
            .expect("add torrent");
        log.insert(id, Vec::new());
    }
    let end = now + Duration::from_secs(secs);
    while now <= end {
        session.handle_timeout(now);
        while let Some(a) = session.poll_action() {
            if let Action::Announce {
                torrent,
                event,
                seq,
                ..
            } = a
            {
                log.get_mut(&torrent)
                    .expect("known torrent")
                    .push((now, event));
                let outcome = if now < tracker.fail_until {
                    AnnounceOutcome::Failed
                } else {
                    AnnounceOutcome::Answered {
                        interval: tracker.interval,
                        min_interval: tracker.min_interval,
                    }
                };
                session.handle_announced(now, torrent, seq, outcome);
            }
        }
        now = now + Duration::from_secs(step);
    }
    log
}

/// The shortest gap between two announces of one torrent.
fn min_gap(log: &Log) -> Duration {
    log.values()
        .flat_map(|v| v.windows(2).map(|w| w[1].0.since(w[0].0)))
        .min()
        .expect("at least two announces")
}

#[test]
fn seeds_announce_on_the_trackers_interval_for_a_day() {
    let tracker = Tracker {
        interval: 1800,
        min_interval: Some(900),
        fail_until: Instant::ZERO,
    };
    let log = run(500, true, DAY_SECS, 10, &tracker);
    for (id, v) in &log {
        // `started`, then one every 30 minutes: 48 more in a day (the spread start
        // shifts the last one by under a minute).
        assert!(
            (48..=49).contains(&v.len()),
            "{id:?} announced {} times in a day",
            v.len()
        );
        assert_eq!(v[0].1, Some(AnnounceEvent::Started));
        assert!(v[1..].iter().all(|(_, e)| e.is_none()));
    }
    assert!(min_gap(&log) >= Duration::from_secs(1800));
    // In the first ten minutes: one announce per torrent.
    let start = log.values().map(|v| v[0].0).min().expect("announces");
    for v in log.values() {
        let early = v
            .iter()
            .filter(|(t, _)| t.since(start) < Duration::from_secs(600))
            .count();
        assert_eq!(early, 1);
    }
}

#[test]
fn short_of_peers_never_undercuts_min_interval() {
    // Downloading torrents with no peer at all: they want peers all day, and may ask
    // every `min interval`, not sooner.
    let tracker = Tracker {
        interval: 1800,
        min_interval: Some(900),
        fail_until: Instant::ZERO,
    };
    let log = run(100, false, DAY_SECS, 10, &tracker);
    assert!(min_gap(&log) >= Duration::from_secs(900));
    for v in log.values() {
        assert!(v.len() <= 97, "{} announces", v.len());
    }
}

#[test]
fn starts_are_spread_and_failures_back_off() {
    // The tracker is down for the first two hours.
    let tracker = Tracker {
        interval: 1800,
        min_interval: Some(900),
        fail_until: Instant::from_millis(1_000 + 2 * 3600 * 1000),
    };
    let log = run(300, false, 3 * 3600, 1, &tracker);
    // At most the burst plus the rate in any one second (10 + 10).
    let mut per_second: BTreeMap<u64, usize> = BTreeMap::new();
    for v in log.values() {
        for (t, _) in v {
            *per_second.entry(t.as_millis() / 1000).or_default() += 1;
        }
    }
    let busiest = per_second.values().max().copied().expect("announces");
    assert!(busiest <= 20, "{busiest} announces in one second");
    // Backoff: 60 s, 120 s, 240 s, ... capped at the interval: within two hours of
    // failures no torrent tries more than 8 times, and the gaps never shrink.
    for v in log.values() {
        let failed: Vec<Instant> = v
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| *t < tracker.fail_until)
            .collect();
        assert!(failed.len() <= 8, "{} attempts while down", failed.len());
        let gaps: Vec<Duration> = failed.windows(2).map(|w| w[1].since(w[0])).collect();
        assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
        assert!(gaps.first().is_none_or(|g| *g >= Duration::from_secs(60)));
        // `started` is kept until a tracker acknowledges it.
        assert!(v
            .iter()
            .take(failed.len() + 1)
            .all(|(_, e)| *e == Some(AnnounceEvent::Started)));
    }
}

/// Reports are matched to the announce they answer: the report of an announce given
/// up on (past `announce_timeout`) or of one made before a pause is not taken for the
/// announce in flight, which would send `started` twice or schedule on a stale answer.
#[test]
fn late_reports_are_not_taken_for_the_announce_in_flight() {
    let mut session = Session::new(SessionConfig::new(PeerId([7; 20])), 1);
    let mut now = Instant::from_millis(1_000);
    let file = make_torrent(&[5u8; 16_384], 16_384);
    let id = session.add_torrent(now, &file, None).expect("add");
    let announces = |s: &mut Session| {
        let mut v = Vec::new();
        while let Some(a) = s.poll_action() {
            if let Action::Announce { event, seq, .. } = a {
                v.push((event, seq));
            }
        }
        v
    };
    let first = announces(&mut session);
    assert_eq!(first.len(), 1);
    let (event, seq1) = first[0];
    assert_eq!(event, Some(AnnounceEvent::Started));
    // Never reported: given up on after 10 minutes, retried a minute later.
    let mut retry = Vec::new();
    for _ in 0..(11 * 60) {
        now = now + Duration::from_secs(1);
        session.handle_timeout(now);
        retry.extend(announces(&mut session));
    }
    assert_eq!(retry.len(), 1, "{retry:?}");
    let (event, seq2) = retry[0];
    assert_eq!(event, Some(AnnounceEvent::Started));
    assert_ne!(seq1, seq2);
    let ok = AnnounceOutcome::Answered {
        interval: 1800,
        min_interval: Some(900),
    };
    assert!(
        !session.handle_announced(now, id, seq1, ok),
        "a stale report"
    );
    // Paused with `started` in flight: `stopped` goes out; resumed, a new `started`.
    assert!(session.pause_torrent(now, id));
    assert_eq!(announces(&mut session), [(Some(AnnounceEvent::Stopped), 0)]);
    assert!(session.resume_torrent(now, id));
    let resumed = announces(&mut session);
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].0, Some(AnnounceEvent::Started));
    assert!(
        !session.handle_announced(now, id, seq2, ok),
        "from before the pause"
    );
    assert!(session.handle_announced(now, id, resumed[0].1, ok));
    // Acknowledged: nothing more until the interval (the torrent is short of peers,
    // but min interval holds).
    let mut more = 0;
    for _ in 0..(15 * 60 - 1) {
        now = now + Duration::from_secs(1);
        session.handle_timeout(now);
        more += announces(&mut session).len();
    }
    assert_eq!(more, 0);
}
