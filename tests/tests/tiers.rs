//! The BEP 12 tier walk, in the session: each announce names one tracker, a failure
//! moves on to the next tracker of the tier and then to the next tier, the tracker
//! that answers moves to the front of its tier, a dead tracker backs off instead of
//! being asked on every walk, a walk asks a bounded number of trackers, and the
//! answering tracker's `min interval` holds. Simulated time; the "trackers" are
//! closures that answer or fail each exchange.

use btcore_core::bitfield::Bitfield;
use btcore_core::ids::PeerId;
use btcore_core::session::{
    Action, AnnounceEvent, AnnounceOutcome, Event, Session, SessionConfig, TorrentId,
};
use btcore_core::time::{Duration, Instant};
use btcore_tests::torrent_with_tiers;
use std::collections::BTreeSet;

/// One exchange the session asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Asked {
    at: Instant,
    tracker: String,
    event: Option<AnnounceEvent>,
    seq: u64,
}

struct Run {
    session: Session,
    id: TorrentId,
    now: Instant,
    log: Vec<Asked>,
}

impl Run {
    /// A session with one torrent on `tiers`, seeding (no early announce for want of
    /// peers) unless `downloading`.
    fn new(config: SessionConfig, tiers: &[&[&str]], downloading: bool) -> Self {
        let mut session = Session::new(config, 42);
        let now = Instant::from_millis(1_000);
        let have = (!downloading).then(|| Bitfield::full(1));
        let id = session
            .add_torrent(now, &torrent_with_tiers(tiers), have.as_ref())
            .expect("torrent");
        Self {
            session,
            id,
            now,
            log: Vec::new(),
        }
    }

    /// Runs `secs` simulated seconds, a second at a time, answering each exchange at
    /// once with `tracker(url, now)`.
    fn run(&mut self, secs: u64, tracker: &dyn Fn(&str, Instant) -> AnnounceOutcome) {
        let end = self.now + Duration::from_secs(secs);
        while self.now < end {
            self.session.handle_timeout(self.now);
            self.drain(tracker);
            self.now = self.now + Duration::from_secs(1);
        }
    }

    /// Answers the exchanges asked now (and those they lead to).
    fn drain(&mut self, tracker: &dyn Fn(&str, Instant) -> AnnounceOutcome) {
        while let Some(a) = self.session.poll_action() {
            if let Action::Announce {
                torrent,
                tracker: url,
                event,
                seq,
                ..
            } = a
            {
                assert_eq!(torrent, self.id);
                self.log.push(Asked {
                    at: self.now,
                    tracker: url.clone(),
                    event,
                    seq,
                });
                if event != Some(AnnounceEvent::Stopped) {
                    let outcome = tracker(&url, self.now);
                    assert!(self
                        .session
                        .handle_announced(self.now, torrent, seq, outcome));
                }
            }
        }
    }

    fn asked(&self, url: &str) -> Vec<Instant> {
        self.log
            .iter()
            .filter(|a| a.tracker == url)
            .map(|a| a.at)
            .collect()
    }
}

const OK: AnnounceOutcome = AnnounceOutcome::Answered {
    interval: 1800,
    min_interval: Some(900),
};

fn config() -> SessionConfig {
    SessionConfig::new(PeerId([7; 20]))
}

#[test]
fn a_dead_tracker_moves_the_walk_through_its_tier_then_to_the_next_tier() {
    let (a, b, c) = ("http://a/announce", "udp://b:80", "http://c/announce");
    let mut r = Run::new(config(), &[&[a, b], &[c]], false);
    r.run(1, &|url, _| {
        if url == c {
            OK
        } else {
            AnnounceOutcome::Failed
        }
    });
    let asked: Vec<&str> = r.log.iter().map(|x| x.tracker.as_str()).collect();
    assert_eq!(asked.len(), 3, "{asked:?}");
    // The first tier in its shuffled order, then the second tier.
    let first: BTreeSet<&str> = asked[..2].iter().copied().collect();
    assert_eq!(first, BTreeSet::from([a, b]));
    assert_eq!(asked[2], c);
    // One exchange each, each with its own number, all carrying `started`.
    let seqs: BTreeSet<u64> = r.log.iter().map(|x| x.seq).collect();
    assert_eq!(seqs.len(), 3);
    assert!(r
        .log
        .iter()
        .all(|x| x.event == Some(AnnounceEvent::Started)));
}

#[test]
fn the_tracker_that_answers_moves_to_the_front_of_its_tier() {
    let (a, b) = ("http://a/announce", "http://b/announce");
    let mut r = Run::new(config(), &[&[a, b]], false);
    // Whichever comes first fails; the other answers.
    r.run(1, &|_, _| AnnounceOutcome::Failed);
    let first = r.log[0].tracker.clone();
    let second = if first == a { b } else { a };
    assert_eq!(r.log.len(), 2);
    assert_eq!(r.log[1].tracker, second);
    // (The walk above failed as a whole: answer the retry through the second.)
    let mut r = Run::new(config(), &[&[a, b]], false);
    let f = first.clone();
    r.run(1, &move |url, _| {
        if url == f {
            AnnounceOutcome::Failed
        } else {
            OK
        }
    });
    assert_eq!(r.log.len(), 2);
    // Everyone answers now: the next walks ask the promoted one only.
    r.run(2 * 3600, &|_, _| OK);
    let later: Vec<&str> = r.log[2..].iter().map(|x| x.tracker.as_str()).collect();
    assert_eq!(later.len(), 4, "{later:?}");
    assert!(later.iter().all(|t| *t == second), "{later:?}");
}

#[test]
fn a_dead_tracker_backs_off_instead_of_being_asked_every_walk() {
    let (dead, live) = ("http://dead/announce", "http://live/announce");
    let mut r = Run::new(config(), &[&[dead], &[live]], false);
    r.run(24 * 3600, &|url, _| {
        if url == dead {
            AnnounceOutcome::Failed
        } else {
            OK
        }
    });
    let walks = r.asked(live);
    let dead_asks = r.asked(dead);
    // A walk every 30 minutes for a day, each answered by the live tracker.
    assert!((48..=49).contains(&walks.len()), "{} walks", walks.len());
    // The dead one: 60 s, 120 s, ... of backoff up to an hour, so after the first
    // walks it is skipped by every other one: far fewer asks than walks.
    assert!(
        dead_asks.len() <= 30,
        "{} asks of the dead tracker",
        dead_asks.len()
    );
    let gaps: Vec<Duration> = dead_asks.windows(2).map(|w| w[1].since(w[0])).collect();
    assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
    assert!(
        gaps.iter()
            .rev()
            .take(10)
            .all(|g| *g >= Duration::from_secs(3600)),
        "{gaps:?}"
    );
    // The live tracker's interval holds: never two answers within 30 minutes.
    assert!(walks
        .windows(2)
        .all(|w| w[1].since(w[0]) >= Duration::from_secs(1800)));
}

#[test]
fn a_walk_asks_a_bounded_number_of_trackers() {
    let urls: Vec<String> = (0..20).map(|i| format!("http://t{i}/announce")).collect();
    let tier: Vec<&str> = urls.iter().map(String::as_str).collect();
    let mut r = Run::new(config(), &[&tier], false);
    r.run(1, &|_, _| AnnounceOutcome::Failed);
    assert_eq!(r.log.len(), 8, "max_trackers_per_walk");
    r.run(59, &|_, _| AnnounceOutcome::Failed);
    assert_eq!(r.log.len(), 8, "the torrent backs off after a failed walk");
    // The next walks take the trackers past the cap: every one is asked within the
    // first three walks, at most 8 per walk.
    r.run(10 * 60, &|_, _| AnnounceOutcome::Failed);
    let first: BTreeSet<&str> = r.log.iter().take(20).map(|x| x.tracker.as_str()).collect();
    assert_eq!(first.len(), 20);
    let mut per_walk: std::collections::BTreeMap<Instant, usize> = Default::default();
    for x in &r.log {
        *per_walk.entry(x.at).or_default() += 1;
    }
    assert!(per_walk.values().all(|n| *n <= 8), "{per_walk:?}");
    // A smaller cap is configuration.
    let mut small = config();
    small.max_trackers_per_walk = 2;
    let mut r = Run::new(small, &[&tier], false);
    r.run(1, &|_, _| AnnounceOutcome::Failed);
    assert_eq!(r.log.len(), 2);
}

#[test]
fn the_answering_trackers_min_interval_holds_through_failures() {
    // Downloading with no peer: the torrent wants peers all the time and may
    // announce early, but never within the min interval of the last answer, whichever
    // tracker fails before the one that answers.
    let (dead, live) = ("udp://dead:80", "http://live/announce");
    let mut r = Run::new(config(), &[&[dead], &[live]], true);
    r.run(6 * 3600, &|url, _| {
        if url == dead {
            AnnounceOutcome::Failed
        } else {
            OK
        }
    });
    let answers = r.asked(live);
    assert!(answers.len() >= 20, "{}", answers.len());
    assert!(
        answers
            .windows(2)
            .all(|w| w[1].since(w[0]) >= Duration::from_secs(900)),
        "{answers:?}"
    );
}

#[test]
fn stopped_goes_to_each_tracker_that_answered() {
    let (a, b, c) = (
        "http://a/announce",
        "http://b/announce",
        "http://c/announce",
    );
    let mut r = Run::new(config(), &[&[a], &[b], &[c]], false);
    r.run(1, &|_, _| OK);
    assert_eq!(r.asked(a).len(), 1);
    // `a` fails from now on: the next walk is answered by `b`.
    r.run(1800, &|url, _| {
        if url == a {
            AnnounceOutcome::Failed
        } else {
            OK
        }
    });
    assert_eq!(r.asked(b).len(), 1);
    assert!(r.session.pause_torrent(r.now, r.id));
    r.drain(&|_, _| OK);
    let stopped: BTreeSet<&str> = r
        .log
        .iter()
        .filter(|x| x.event == Some(AnnounceEvent::Stopped))
        .map(|x| x.tracker.as_str())
        .collect();
    assert_eq!(
        stopped,
        BTreeSet::from([a, b]),
        "never `c`, which was never asked"
    );
    // Resumed: `started` walks from the first tier again, and a pause now tells only
    // the tracker that answered since.
    assert!(r.session.resume_torrent(r.now, r.id));
    r.drain(&|url, _| {
        if url == a {
            AnnounceOutcome::Failed
        } else {
            OK
        }
    });
    let n = r.log.len();
    assert!(r.session.pause_torrent(r.now, r.id));
    r.drain(&|_, _| OK);
    let again: Vec<&str> = r.log[n..].iter().map(|x| x.tracker.as_str()).collect();
    assert_eq!(again, [b]);
}

#[test]
fn a_torrents_trackers_are_capped_deduplicated_and_bounded_in_length() {
    let long = format!("http://{}/announce", "x".repeat(1100));
    let (a, b, c, d) = ("http://a/a", "http://b/a", "http://c/a", "http://d/a");
    let mut config = config();
    config.max_trackers = 3;
    config.max_trackers_per_walk = 100;
    let mut r = Run::new(config, &[&[a, a, &long], &[b], &[c], &[d]], false);
    r.run(3600, &|_, _| AnnounceOutcome::Failed);
    let asked: BTreeSet<&str> = r.log.iter().map(|x| x.tracker.as_str()).collect();
    assert_eq!(asked, BTreeSet::from([a, b, c]));
    // The first walk asks each kept tracker once.
    assert_eq!(r.asked(a)[0], r.asked(c)[0]);
    assert_eq!(r.log.iter().filter(|x| x.at == r.log[0].at).count(), 3);
}

/// A tracker that fails says so: each failure is an `Event::TrackerError` with the
/// tracker's URL and the reason the host gave, a `warning message` in an answer is an
/// `Event::TrackerWarning`, a report the walk does not take (late, unasked) makes no
/// event, and a long reason is cut to the configured bound.
#[test]
fn tracker_failures_and_warnings_are_events_with_the_url_and_the_message() {
    let (a, b) = ("http://a/announce", "http://b/announce");
    let mut r = Run::new(config(), &[&[a], &[b]], false);
    let events = |s: &mut Session| std::iter::from_fn(|| s.poll_event()).collect::<Vec<_>>();
    // What adding the torrent said (a complete torrent is finished at once).
    events(&mut r.session);
    r.session.handle_timeout(r.now);
    let first = match r.session.poll_action() {
        Some(Action::Announce { tracker, seq, .. }) => (tracker, seq),
        other => panic!("expected an announce, got {other:?}"),
    };
    assert_eq!(first.0, a);
    // A report for another announce is ignored, and says nothing.
    assert!(!r.session.handle_announced_message(
        r.now,
        r.id,
        first.1 + 100,
        AnnounceOutcome::Failed,
        b"late"
    ));
    assert_eq!(events(&mut r.session), []);
    // The tracker's failure reason.
    assert!(r.session.handle_announced_message(
        r.now,
        r.id,
        first.1,
        AnnounceOutcome::Failed,
        b"nope"
    ));
    assert_eq!(
        events(&mut r.session),
        [Event::TrackerError {
            torrent: r.id,
            tracker: a.into(),
            message: "nope".into()
        }]
    );
    // The walk asks the next tier; it answers with a warning.
    let second = match r.session.poll_action() {
        Some(Action::Announce { tracker, seq, .. }) => (tracker, seq),
        other => panic!("expected an announce, got {other:?}"),
    };
    assert_eq!(second.0, b);
    assert!(r
        .session
        .handle_announced_message(r.now, r.id, second.1, OK, b"slow down"));
    assert_eq!(
        events(&mut r.session),
        [Event::TrackerWarning {
            torrent: r.id,
            tracker: b.into(),
            message: "slow down".into()
        }]
    );

    // A failure with no words still names the tracker; a reason of 100 KB is cut.
    let mut r = Run::new(config(), &[&[a], &[b]], false);
    events(&mut r.session);
    r.session.handle_timeout(r.now);
    let Some(Action::Announce { seq, .. }) = r.session.poll_action() else {
        panic!("no announce");
    };
    assert!(r
        .session
        .handle_announced(r.now, r.id, seq, AnnounceOutcome::Failed));
    let Some(Action::Announce { seq, .. }) = r.session.poll_action() else {
        panic!("no announce");
    };
    let long = vec![b'x'; 100_000];
    assert!(r
        .session
        .handle_announced_message(r.now, r.id, seq, AnnounceOutcome::Failed, &long));
    let ev = events(&mut r.session);
    assert_eq!(ev.len(), 2);
    assert!(
        matches!(&ev[0], Event::TrackerError { tracker, message, .. } if tracker == a && message == "announce failed")
    );
    assert!(
        matches!(&ev[1], Event::TrackerError { tracker, message, .. } if tracker == b && message.len() == config().max_tracker_text)
    );
}
