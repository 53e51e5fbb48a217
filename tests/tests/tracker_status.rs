//! What a torrent's trackers said, as the application sees it
//! (`Session::tracker_status`, Transmission's `trackerStats`), the application's
//! reannounce (held by `min interval`, also asking the DHT), and editing a torrent's
//! tracker list (`Session::set_trackers`). Simulated time; the "trackers" are the
//! reports the test gives.

use btcore_core::bitfield::Bitfield;
use btcore_core::ids::PeerId;
use btcore_core::session::{
    Action, AnnounceCounts, AnnounceEvent, AnnounceOutcome, DhtOutcome, Session, SessionConfig,
    TorrentId, TrackerListError, TrackerStatus,
};
use btcore_core::time::{Duration, Instant};
use btcore_tests::torrent_with_tiers;

const OK: AnnounceOutcome = AnnounceOutcome::Answered {
    interval: 1800,
    min_interval: Some(900),
};

fn config() -> SessionConfig {
    SessionConfig::new(PeerId([7; 20]))
}

/// A session with one seeding torrent on `tiers`.
fn seeding(config: SessionConfig, tiers: &[&[&str]], now: Instant) -> (Session, TorrentId) {
    let mut s = Session::new(config, 42);
    let id = s
        .add_torrent(now, &torrent_with_tiers(tiers), Some(&Bitfield::full(1)))
        .expect("torrent");
    (s, id)
}

/// The announces asked for now: (tracker, event, seq).
fn announces(s: &mut Session) -> Vec<(String, Option<AnnounceEvent>, u64)> {
    std::iter::from_fn(|| s.poll_action())
        .filter_map(|a| match a {
            Action::Announce {
                tracker,
                event,
                seq,
                ..
            } => Some((tracker, event, seq)),
            _ => None,
        })
        .collect()
}

fn of<'a>(st: &'a [TrackerStatus], url: &str) -> &'a TrackerStatus {
    st.iter().find(|t| t.url == url).expect("tracker listed")
}

/// Each tracker's last answer shows: a failure with its reason (cut to
/// `max_tracker_text`), an answer with its warning, counts, interval and the next
/// announce; the one asked shows as announcing.
#[test]
fn status_shows_each_trackers_last_answer_and_failure() {
    let (a, b) = ("http://a/announce", "udp://b:80");
    let t0 = Instant::from_millis(1_000);
    let mut cfg = config();
    cfg.max_tracker_text = 16;
    let (mut s, id) = seeding(cfg, &[&[a], &[b]], t0);
    assert_eq!(s.tracker_status(TorrentId(99)), None);
    let st = s.tracker_status(id).expect("known");
    assert_eq!(st.len(), 2);
    assert_eq!((of(&st, a).tier, of(&st, b).tier), (0, 1));
    assert_eq!(of(&st, a).last_announce, None);
    s.handle_timeout(t0);
    let asked = announces(&mut s);
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].0, a);
    let st = s.tracker_status(id).expect("known");
    assert!(of(&st, a).announcing && !of(&st, b).announcing);

    // a fails with a long reason: cut; the walk asks b.
    let t1 = t0 + Duration::from_secs(3);
    assert!(s.handle_announce_report(
        t1,
        id,
        asked[0].2,
        AnnounceOutcome::Failed,
        b"torrent not registered here",
        AnnounceCounts::default(),
    ));
    let asked = announces(&mut s);
    assert_eq!(asked[0].0, b);
    let st = s.tracker_status(id).expect("known");
    let sa = of(&st, a);
    assert_eq!(sa.last_announce, Some(t1));
    assert!(!sa.last_announce_ok && !sa.announcing);
    assert_eq!(sa.last_result, "torrent not regi");
    assert_eq!(sa.failures, 1);
    assert!(of(&st, b).announcing);

    // b answers with a warning and counts.
    let t2 = t1 + Duration::from_secs(1);
    let counts = AnnounceCounts {
        seeders: Some(5),
        leechers: Some(3),
        downloaded: Some(40),
        peers: 7,
    };
    assert!(s.handle_announce_report(t2, id, asked[0].2, OK, b"slow down", counts));
    let st = s.tracker_status(id).expect("known");
    let sb = of(&st, b);
    assert_eq!(sb.last_announce, Some(t2));
    assert!(sb.last_announce_ok);
    assert_eq!(sb.last_result, "slow down");
    assert_eq!(
        (sb.seeders, sb.leechers, sb.downloaded, sb.last_peers),
        (Some(5), Some(3), Some(40), 7)
    );
    assert_eq!((sb.interval, sb.min_interval), (Some(1800), Some(900)));
    assert_eq!(sb.next_announce, Some(t2 + Duration::from_secs(1800)));
    assert_eq!(sb.failures, 0);
    // a backs off 60 s, less than the torrent's next announce.
    assert_eq!(
        of(&st, a).next_announce,
        Some(t2 + Duration::from_secs(1800))
    );

    // A later failure of b keeps its counts, and says why.
    let t3 = t2 + Duration::from_secs(1800);
    s.handle_timeout(t3);
    // The walk starts from the first tier again (a is out of its backoff); both fail.
    for url in [a, b] {
        let asked = announces(&mut s);
        assert_eq!(asked[0].0, url);
        assert!(s.handle_announce_report(
            t3,
            id,
            asked[0].2,
            AnnounceOutcome::Failed,
            b"",
            AnnounceCounts::default()
        ));
    }
    let st = s.tracker_status(id).expect("known");
    let sb = of(&st, b);
    assert_eq!(sb.last_result, "announce failed");
    assert!(!sb.last_announce_ok);
    assert_eq!(sb.seeders, Some(5));

    // A paused torrent announces nothing next.
    assert!(s.pause_torrent(t3, id));
    let st = s.tracker_status(id).expect("known");
    assert!(st
        .iter()
        .all(|t| t.next_announce.is_none() && !t.announcing));
}

/// An exchange the host never reports shows as timed out.
#[test]
fn status_shows_a_timeout() {
    let a = "http://a/announce";
    let t0 = Instant::from_millis(1_000);
    let cfg = config();
    let timeout = cfg.announce_timeout;
    let (mut s, id) = seeding(cfg, &[&[a]], t0);
    s.handle_timeout(t0);
    assert_eq!(announces(&mut s).len(), 1);
    s.handle_timeout(t0 + timeout);
    let st = s.tracker_status(id).expect("known");
    assert_eq!(st[0].last_result, "no answer in time");
    assert_eq!(st[0].last_announce, Some(t0 + timeout));
    assert_eq!(st[0].failures, 1);
}

/// A reannounce within the tracker's `min interval` waits for it (and shows when it
/// will go out); past it, it goes out at once; a paused torrent does not announce.
#[test]
fn reannounce_waits_for_min_interval_and_is_refused_when_paused() {
    let a = "http://a/announce";
    let t0 = Instant::from_millis(1_000);
    let (mut s, id) = seeding(config(), &[&[a]], t0);
    s.handle_timeout(t0);
    let asked = announces(&mut s);
    assert!(s.handle_announced(t0, id, asked[0].2, OK));
    let t1 = t0 + Duration::from_secs(10);
    assert!(s.reannounce(t1, id));
    assert_eq!(announces(&mut s), []);
    let st = s.tracker_status(id).expect("known");
    assert_eq!(
        st[0].next_announce,
        Some(t0 + Duration::from_secs(900)),
        "held until min interval"
    );
    let mut now = t1;
    while now < t0 + Duration::from_secs(899) {
        now = now + Duration::from_secs(1);
        s.handle_timeout(now);
        assert_eq!(announces(&mut s), [], "at {now:?}");
    }
    s.handle_timeout(t0 + Duration::from_secs(900));
    let asked = announces(&mut s);
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].1, None);
    let t2 = t0 + Duration::from_secs(900);
    assert!(s.handle_announced(t2, id, asked[0].2, OK));
    // Past min interval: at once.
    let t3 = t2 + Duration::from_secs(901);
    assert!(s.reannounce(t3, id));
    assert_eq!(announces(&mut s).len(), 1);
    // Paused: nothing.
    assert!(s.pause_torrent(t3, id));
    announces(&mut s);
    assert!(!s.reannounce(t3 + Duration::from_secs(5000), id));
    assert_eq!(announces(&mut s), []);
    assert!(!s.reannounce(t3, TorrentId(99)));
}

/// A reannounce also asks the DHT for a lookup, sooner than its regular interval
/// (15 min) but not within the short-of-peers spacing of the last lookup.
#[test]
fn reannounce_asks_the_dht_for_a_lookup() {
    let t0 = Instant::from_millis(1_000);
    let mut cfg = config();
    cfg.dht = true;
    let spacing = cfg.dht_short_of_peers_interval;
    let (mut s, id) = seeding(cfg, &[&["http://a/announce"]], t0);
    let lookups = |s: &mut Session| -> Vec<u64> {
        std::iter::from_fn(|| s.poll_action())
            .filter_map(|a| match a {
                Action::DhtLookup { seq, .. } => Some(seq),
                _ => None,
            })
            .collect()
    };
    s.handle_timeout(t0);
    let first = lookups(&mut s);
    assert_eq!(first.len(), 1);
    assert!(s.handle_dht_done(t0, id, first[0], DhtOutcome::Reached));
    let t1 = t0 + Duration::from_secs(5);
    assert!(s.reannounce(t1, id));
    assert!(lookups(&mut s).is_empty(), "within the spacing");
    let mut at = Vec::new();
    let mut now = t1;
    while now <= t0 + Duration::from_secs(120) {
        s.handle_timeout(now);
        if !lookups(&mut s).is_empty() {
            at.push(now);
        }
        now = now + Duration::from_secs(1);
    }
    assert_eq!(at, [t0 + spacing], "well before 15 minutes");
}

/// `set_trackers` refuses bad lists whole (changing nothing), drops repeats and empty
/// tiers, keeps the record of the trackers that stay, ignores the late report of a
/// removed tracker and announces to the new list.
#[test]
fn set_trackers_validates_and_keeps_the_status_of_trackers_that_stay() {
    let (a, b, c) = ("http://a/announce", "https://b/announce", "udp://c:6969");
    let t0 = Instant::from_millis(1_000);
    let mut cfg = config();
    cfg.max_trackers = 3;
    let (mut s, id) = seeding(cfg, &[&[a], &[b]], t0);
    s.handle_timeout(t0);
    let asked = announces(&mut s);
    assert_eq!(asked[0].0, a);
    assert!(s.handle_announced_message(t0, id, asked[0].2, AnnounceOutcome::Failed, b"nope"));
    let asked = announces(&mut s);
    assert_eq!(asked[0].0, b, "b in flight");
    let before = s.trackers(id);
    let v = |t: &[&[&str]]| -> Vec<Vec<String>> {
        t.iter()
            .map(|t| t.iter().map(|u| u.to_string()).collect())
            .collect()
    };
    let long = format!("http://{}/announce", "x".repeat(1100));
    for (bad, why) in [
        (
            v(&[&["ftp://a/announce"]]),
            TrackerListError::UnsupportedUrl,
        ),
        (v(&[&["http://"]]), TrackerListError::UnsupportedUrl),
        (
            v(&[&["http:///announce"]]),
            TrackerListError::UnsupportedUrl,
        ),
        (
            v(&[&["http://a b/announce"]]),
            TrackerListError::UnsupportedUrl,
        ),
        (v(&[&["magnet:?xt=1"]]), TrackerListError::UnsupportedUrl),
        (v(&[&[a], &[""]]), TrackerListError::BadLength),
        (v(&[&[&long]]), TrackerListError::BadLength),
        (
            v(&[&[a, b], &[c, "http://d/announce"]]),
            TrackerListError::TooMany,
        ),
    ] {
        assert_eq!(s.set_trackers(t0, id, bad.clone()), Err(why), "{bad:?}");
        assert_eq!(s.trackers(id), before, "unchanged after {bad:?}");
    }
    assert_eq!(
        s.set_trackers(t0, TorrentId(99), v(&[&[a]])),
        Err(TrackerListError::UnknownTorrent)
    );
    // Repeats (within the cap) and empty tiers are dropped; b (in flight) goes.
    assert_eq!(s.set_trackers(t0, id, v(&[&[c, a], &[], &[a, c]])), Ok(()));
    let mut tiers = s.trackers(id).expect("known");
    tiers[0].sort();
    assert_eq!(tiers, v(&[&[a, c]]));
    let st = s.tracker_status(id).expect("known");
    assert_eq!(st.len(), 2);
    assert_eq!(of(&st, a).last_result, "nope", "a keeps its record");
    assert_eq!(of(&st, a).failures, 1, "and its backoff");
    assert_eq!(of(&st, c).last_announce, None);
    // The new list is asked at once, `started` being owed (a backs off: c); the late
    // report of b is not taken.
    let late = asked[0].2;
    let asked = announces(&mut s);
    assert!(!s.handle_announced(t0, id, late, OK));
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].0, c);
    assert_eq!(asked[0].1, Some(AnnounceEvent::Started), "still owed");
    let st = s.tracker_status(id).expect("known");
    assert!(of(&st, c).announcing);
    // Edited while c is in flight and c stays: its report is taken, at its new place.
    assert_eq!(s.set_trackers(t0, id, v(&[&[b], &[c]])), Ok(()));
    assert!(s.handle_announced(t0 + Duration::from_secs(2), id, asked[0].2, OK));
    let st = s.tracker_status(id).expect("known");
    assert_eq!(of(&st, c).tier, 1);
    assert!(of(&st, c).last_announce_ok);
    // Every tracker removed: nothing to announce; one added back: announces.
    assert_eq!(s.set_trackers(t0, id, Vec::new()), Ok(()));
    assert_eq!(s.tracker_status(id), Some(Vec::new()));
    assert!(!s.reannounce(t0 + Duration::from_secs(3), id));
    assert_eq!(s.set_trackers(t0, id, v(&[&[a]])), Ok(()));
    let t9 = t0 + Duration::from_secs(4_000);
    s.handle_timeout(t9);
    assert_eq!(announces(&mut s).len(), 1);
}

/// A torrent added with no tracker starts announcing once it is given one.
#[test]
fn a_torrent_without_trackers_announces_once_given_one() {
    let t0 = Instant::from_millis(1_000);
    let (mut s, id) = seeding(config(), &[], t0);
    s.handle_timeout(t0);
    assert_eq!(announces(&mut s), []);
    let a = "http://a/announce".to_string();
    assert_eq!(s.set_trackers(t0, id, vec![vec![a.clone()]]), Ok(()));
    s.handle_timeout(t0 + Duration::from_secs(1));
    let asked = announces(&mut s);
    assert_eq!(asked.len(), 1);
    assert_eq!(
        (asked[0].0.as_str(), asked[0].1),
        (a.as_str(), Some(AnnounceEvent::Started))
    );
}
