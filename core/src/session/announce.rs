//! When each torrent announces to its trackers.
//!
//! Each running torrent has an [`Announcer`]: the tracker's answer sets the next
//! regular announce (`interval`) and the earliest early one (`min interval`), through
//! [`AnnounceState`]. A torrent announces:
//! - the events without waiting for any interval (within the session's caps below):
//!   `started` when it starts (added, checked, resumed), `completed` when the download
//!   finishes (still owed after a pause until a tracker acknowledged it), `stopped`
//!   when it stops, pauses or fails on disk (only if a tracker may have it listed);
//! - again after `interval`;
//! - early when it has fewer established peers than
//!   [`SessionConfig::peer_low_watermark`](super::SessionConfig::peer_low_watermark), or
//!   when the application asks ([`Session::reannounce`](super::Session::reannounce)),
//!   but never before `min interval` has passed since the last answer: a request made
//!   sooner waits until then, as Transmission does;
//! - after a failure (no tracker answered), after a backoff of 60 s doubling up to the
//!   interval, and not within `min interval` of the last answer.
//!
//! Which tracker: each torrent's tiers (BEP 12) live in a [`TierWalk`], one
//! [`Action::Announce`](super::Action::Announce) per tracker asked. A walk starts from
//! the first tier (where the last tracker that answered stands first), skips the
//! trackers in backoff, and on each failure goes on at once (within the caps below) to
//! the next tracker of the tier, then of the next tier, for at most
//! [`SessionConfig::max_trackers_per_walk`](super::SessionConfig::max_trackers_per_walk)
//! trackers (the next walk goes on from there); when none answered, the torrent backs
//! off as above. The event pending goes to each tracker asked until one acknowledges
//! it; `stopped` goes to each tracker that answered since the start.
//!
//! Each tracker keeps what its last exchange said (when, answered or not, its failure
//! reason, warning or the transport error cut to
//! [`SessionConfig::max_tracker_text`](super::SessionConfig::max_tracker_text), its
//! counts and intervals), shown by
//! [`Session::tracker_status`](super::Session::tracker_status) and kept when the
//! application edits the list ([`Session::set_trackers`](super::Session::set_trackers))
//! and the tracker stays.
//!
//! One exchange per torrent is in flight at a time; the host reports how it went with
//! [`Session::handle_announced`](super::Session::handle_announced), giving back the
//! announce's number (a report for another announce, late or given up on, is
//! ignored), and one it never reports counts as failed after
//! [`SessionConfig::announce_timeout`](super::SessionConfig::announce_timeout). Over the
//! session, announces start at most at
//! [`SessionConfig::announces_per_second`](super::SessionConfig::announces_per_second)
//! (after a burst of as many) with at most
//! [`SessionConfig::max_announces_in_flight`](super::SessionConfig::max_announces_in_flight)
//! waiting for an answer, events and scheduled announces first, the longest overdue
//! first: a thousand torrents starting together reach their trackers spread over the
//! following seconds, not in one burst. `stopped` is exempt: it goes out at once.

use super::AnnounceEvent;
use crate::time::{Duration, Instant};
use crate::tracker::http::{MAX_INTERVAL_SECS, MIN_INTERVAL_SECS};
use crate::tracker::tiers::{AnnounceState, TierWalk, TrackerPos, DEFAULT_MIN_INTERVAL_SECS};
use crate::tracker::Event;
use alloc::string::String;

/// How an exchange with the tracker an announce named went, for
/// [`Session::handle_announced`](super::Session::handle_announced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnnounceOutcome {
    /// The tracker answered, with its `interval` and `min interval` in seconds (clamped
    /// to 30 s ..= 24 h, and `min interval` to at most `interval`).
    Answered {
        /// Seconds until the next regular announce.
        interval: u32,
        /// The least seconds between two announces; `None` when the tracker gave none
        /// (120 s is assumed).
        min_interval: Option<u32>,
    },
    /// The tracker did not answer in time, refused, or is not one the host can speak
    /// to: it backs off, and the next tracker of the torrent's tiers is asked (when
    /// none is left, the torrent retries after a backoff).
    Failed,
    /// The host has no tracker client: the torrent stops announcing until it is
    /// started again.
    NoTrackers,
}

/// A torrent's trackers: URLs in BEP 12 tiers, each with its backoff and what its
/// last exchange said.
pub(crate) type Trackers = TierWalk<Tracker>;

/// One tracker of a torrent: its URL and what its last exchange said (the text at
/// most [`SessionConfig::max_tracker_text`](super::SessionConfig::max_tracker_text)
/// bytes, so a torrent's records cost at most that times
/// [`SessionConfig::max_trackers`](super::SessionConfig::max_trackers)).
#[derive(Clone, Debug, Default)]
pub(crate) struct Tracker {
    pub(crate) url: String,
    pub(crate) record: TrackerRecord,
}

impl From<String> for Tracker {
    fn from(url: String) -> Self {
        Self {
            url,
            record: TrackerRecord::default(),
        }
    }
}

impl From<&str> for Tracker {
    fn from(url: &str) -> Self {
        String::from(url).into()
    }
}

/// What a tracker's last exchange said.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrackerRecord {
    /// When the last exchange ended (answer, failure or timeout), and whether the
    /// tracker answered.
    pub(crate) last: Option<(Instant, bool)>,
    /// Its failure reason, warning or the transport error (empty: none).
    pub(crate) text: String,
    /// The counts of its last answer (kept across a failure).
    pub(crate) counts: AnnounceCounts,
    /// Its last `interval` and `min interval` (seconds, as clamped).
    pub(crate) interval: Option<(u32, u32)>,
}

/// The swarm counts and peers of a tracker's answer, for
/// [`Session::handle_announce_report`](super::Session::handle_announce_report).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnnounceCounts {
    /// Seeders (`complete`), when the tracker said.
    pub seeders: Option<u32>,
    /// Leechers (`incomplete`), when the tracker said.
    pub leechers: Option<u32>,
    /// Completed downloads (`downloaded`, from a scrape), when known.
    pub downloaded: Option<u32>,
    /// The peers the answer gave.
    pub peers: u32,
}

/// One tracker of a torrent as [`Session::tracker_status`](super::Session::tracker_status)
/// shows it (what Transmission's `trackerStats` reports).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrackerStatus {
    /// The announce URL.
    pub url: String,
    /// Its BEP 12 tier (0 first).
    pub tier: u32,
    /// An announce to it is on its way.
    pub announcing: bool,
    /// When its last announce ended (answered, failed or timed out); `None`: never
    /// since the torrent was added.
    pub last_announce: Option<Instant>,
    /// Whether that announce was answered.
    pub last_announce_ok: bool,
    /// The tracker's `failure reason` or `warning message`, or the transport error, of
    /// that announce; empty when it answered without a word. At most
    /// [`SessionConfig::max_tracker_text`](super::SessionConfig::max_tracker_text) bytes.
    pub last_result: String,
    /// Seeders in its last answer.
    pub seeders: Option<u32>,
    /// Leechers in its last answer.
    pub leechers: Option<u32>,
    /// Completed downloads, when the host reported them (a scrape).
    pub downloaded: Option<u32>,
    /// Peers its last answer gave.
    pub last_peers: u32,
    /// When it may be asked next: the torrent's next announce (scheduled, or asked for
    /// with [`Session::reannounce`](super::Session::reannounce) and held by
    /// `min interval`), or later while the tracker backs off after failures. `None`
    /// when the torrent does not announce (paused, checking, no tracker client).
    pub next_announce: Option<Instant>,
    /// Its last `interval` (seconds).
    pub interval: Option<u32>,
    /// Its last `min interval` (seconds).
    pub min_interval: Option<u32>,
    /// Its failures in a row.
    pub failures: u32,
}

/// Why [`Session::set_trackers`](super::Session::set_trackers) refused a list (it
/// then changes nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrackerListError {
    /// No such torrent.
    UnknownTorrent,
    /// More distinct URLs than
    /// [`SessionConfig::max_trackers`](super::SessionConfig::max_trackers).
    TooMany,
    /// A URL is empty or longer than 1024 bytes.
    BadLength,
    /// A URL is not an `http://`, `https://` or `udp://` announce URL with a host.
    UnsupportedUrl,
}

impl core::fmt::Display for TrackerListError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::UnknownTorrent => "unknown torrent",
            Self::TooMany => "too many trackers",
            Self::BadLength => "tracker URL empty or too long",
            Self::UnsupportedUrl => "not an http, https or udp tracker URL",
        })
    }
}

/// Whether `url` is an announce URL of a scheme the engine speaks, with a host.
pub(crate) fn known_tracker_url(url: &str) -> bool {
    let b = url.as_bytes();
    let rest = ["http://", "https://", "udp://"].iter().find_map(|p| {
        (b.len() > p.len() && b[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
            .then(|| &b[p.len()..])
    });
    rest.is_some_and(|r| {
        !matches!(r.first(), None | Some(b'/' | b':' | b'?' | b'#'))
            && !r
                .iter()
                .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
    })
}

/// The announce waiting for the host's report.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    seq: u64,
    event: Option<AnnounceEvent>,
    deadline: Instant,
    /// The tracker asked.
    pos: TrackerPos,
}

/// How far a walk over the tiers may go, and how long a tracker backs off.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WalkLimits {
    /// Trackers asked at most per walk.
    pub(crate) max_trackers: usize,
    /// The cap of one tracker's backoff (ms).
    pub(crate) retry_max_ms: u64,
}

/// One torrent's announce schedule.
#[derive(Clone, Debug)]
pub(crate) struct Announcer {
    state: AnnounceState,
    /// The exchange waiting for an answer.
    in_flight: Option<InFlight>,
    /// A walk over the tiers is under way: a tracker failed and the next one is to be
    /// asked (at once, within the session's caps).
    walking: bool,
    /// The application asked for an announce: sent as soon as `min interval` allows.
    requested: bool,
    /// No tracker to ask: none in the torrent, or the host has no tracker client.
    no_trackers: bool,
    /// The host said it has no tracker client ([`AnnounceOutcome::NoTrackers`]).
    no_client: bool,
    /// A tracker answered since the start (so `stopped` has someone to tell).
    answered_once: bool,
}

fn to_wire(e: Option<AnnounceEvent>) -> Option<Event> {
    e.map(|e| match e {
        AnnounceEvent::Started => Event::Started,
        AnnounceEvent::Completed => Event::Completed,
        AnnounceEvent::Stopped => Event::Stopped,
    })
}

fn from_wire(e: Option<Event>) -> Option<AnnounceEvent> {
    e.map(|e| match e {
        Event::Started => AnnounceEvent::Started,
        Event::Completed => AnnounceEvent::Completed,
        Event::Stopped => AnnounceEvent::Stopped,
    })
}

/// Why an announce is wanted now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Due {
    /// On schedule (an event, the interval, a retry, the next tracker of a walk).
    Scheduled,
    /// Early: short of peers, or asked by the application.
    Early,
}

impl Announcer {
    /// A torrent starting at `now`; `complete` when it has everything already (then
    /// `completed` is never sent); `has_trackers` false when it has none to ask.
    pub(crate) fn new(complete: bool, now: Instant, has_trackers: bool) -> Self {
        Self {
            state: AnnounceState::new(complete, now.as_millis()),
            in_flight: None,
            walking: false,
            requested: false,
            no_trackers: !has_trackers,
            no_client: false,
            answered_once: false,
        }
    }

    /// The download finished: `completed` is due (after `started`).
    pub(crate) fn on_completed(&mut self, now: Instant) {
        self.state.on_completed(now.as_millis());
    }

    /// The application asked for an announce; false when none will go out (no
    /// tracker to ask).
    pub(crate) fn request(&mut self) -> bool {
        self.requested = !self.no_trackers;
        self.requested
    }

    /// When the next announce goes out (ms), as far as the schedule knows: at once
    /// during a walk, else the scheduled one, or sooner when the application asked
    /// and `min interval` allows it sooner. `None` when none will (no tracker).
    pub(crate) fn next_ms(&self) -> Option<u64> {
        if self.no_trackers {
            return None;
        }
        if self.walking && self.in_flight.is_none() {
            return Some(0);
        }
        let scheduled = self.state.next_announce_ms()?;
        let early = self
            .requested
            .then(|| self.state.early_allowed_ms())
            .flatten();
        Some(early.map_or(scheduled, |e| e.min(scheduled)))
    }

    /// The torrent's tracker list was replaced: `moved` maps the position of the
    /// tracker in flight to its new one (`None`: it was removed; its report, when it
    /// comes, is then ignored and the schedule goes on with the new list). A walk
    /// under way starts over from the first tier.
    pub(crate) fn trackers_replaced(
        &mut self,
        has_trackers: bool,
        moved: impl FnOnce(TrackerPos) -> Option<TrackerPos>,
    ) {
        if let Some(f) = self.in_flight.as_mut() {
            match moved(f.pos) {
                Some(p) => f.pos = p,
                None => self.in_flight = None,
            }
        }
        self.walking = false;
        self.no_trackers = !has_trackers || self.no_client;
        if self.no_trackers {
            self.requested = false;
        }
    }

    /// Whether a tracker may have us listed: one answered since the start, or an
    /// announce is on its way.
    pub(crate) fn announced(&self) -> bool {
        self.answered_once || self.in_flight.is_some()
    }

    /// The tracker asked by the exchange in flight.
    pub(crate) fn in_flight_tracker(&self) -> Option<TrackerPos> {
        self.in_flight.map(|f| f.pos)
    }

    /// When the next scheduled announce is due (ms): the order in which due announces
    /// go out when the session's caps hold some back (a walk under way first).
    pub(crate) fn due_ms(&self) -> u64 {
        if self.walking {
            return 0;
        }
        self.state.next_announce_ms().unwrap_or(u64::MAX)
    }

    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Gives up on an exchange the host did not report by its deadline: its tracker
    /// failed.
    pub(crate) fn expire(&mut self, now: Instant, trackers: &mut Trackers, limits: WalkLimits) {
        if let Some(f) = self.in_flight.filter(|f| now >= f.deadline) {
            self.in_flight = None;
            if let Some((t, _)) = trackers.get_mut(f.pos) {
                t.record.last = Some((now, false));
                t.record.text.clear();
                t.record.text.push_str("no answer in time");
            }
            self.tracker_failed(now, f.pos, trackers, limits);
        }
    }

    /// Whether an announce is wanted at `now`; `short` when the torrent is short of
    /// peers. A walk under way goes on at once; a new one waits until a tracker is out
    /// of its backoff.
    pub(crate) fn due(&self, now: Instant, short: bool, trackers: &Trackers) -> Option<Due> {
        if self.in_flight.is_some() || self.no_trackers {
            return None;
        }
        if self.walking {
            return Some(Due::Scheduled);
        }
        let ms = now.as_millis();
        if !trackers.any_available(ms) {
            return None;
        }
        if self.state.is_due(ms) {
            return Some(Due::Scheduled);
        }
        // `wants_more_peers` holds only once `min interval` has passed since the last
        // answer, and never while retrying after a failure.
        let early = short || self.requested;
        self.state
            .wants_more_peers(ms, 0, usize::from(early))
            .then_some(Due::Early)
    }

    /// Announce number `seq` goes out at `now`: the tracker to ask (the next of the
    /// walk, which starts from the first tier unless one is under way) and the event
    /// it carries. `None` when no tracker is left to ask (the walk failed).
    pub(crate) fn send(
        &mut self,
        now: Instant,
        seq: u64,
        timeout: Duration,
        trackers: &mut Trackers,
        limits: WalkLimits,
    ) -> Option<(TrackerPos, Option<AnnounceEvent>)> {
        if !self.walking {
            // A walk that ended on an answer or past the last tier restarted the list;
            // one that ended at its cap goes on from there.
            trackers.resume();
        }
        let Some(pos) = trackers.next(now.as_millis(), limits.max_trackers) else {
            if self.walking {
                self.walk_failed(now, trackers);
            }
            return None;
        };
        trackers.start(pos);
        self.walking = true;
        let event = from_wire(self.state.next_event());
        self.in_flight = Some(InFlight {
            seq,
            event,
            deadline: now + timeout,
            pos,
        });
        self.requested = false;
        Some((pos, event))
    }

    /// The tracker at `pos` failed: the walk goes on to the next one, or fails when
    /// none is left (the torrent backs off).
    fn tracker_failed(
        &mut self,
        now: Instant,
        pos: TrackerPos,
        trackers: &mut Trackers,
        limits: WalkLimits,
    ) {
        let ms = now.as_millis();
        trackers.on_failure(pos, ms, limits.retry_max_ms);
        if trackers.next(ms, limits.max_trackers).is_none() {
            self.walk_failed(now, trackers);
        }
    }

    fn walk_failed(&mut self, now: Instant, trackers: &mut Trackers) {
        self.walking = false;
        trackers.resume();
        self.state.on_failure(now.as_millis());
    }

    /// The host reports announce `seq`: the event it carried and the tracker it went
    /// to when it is the one in flight, else `None` and nothing changes (a late report,
    /// one for an announce given up on, or an unasked one).
    pub(crate) fn answered(
        &mut self,
        now: Instant,
        seq: u64,
        outcome: AnnounceOutcome,
        trackers: &mut Trackers,
        limits: WalkLimits,
        record: impl FnOnce(&mut TrackerRecord),
    ) -> Option<(Option<AnnounceEvent>, TrackerPos)> {
        let f = self.in_flight?;
        if f.seq != seq {
            return None;
        }
        self.in_flight = None;
        let ms = now.as_millis();
        // The tracker's record first: an answer moves it within its tier.
        if let Some((t, _)) = trackers.get_mut(f.pos) {
            record(&mut t.record);
        }
        match outcome {
            AnnounceOutcome::Answered {
                interval,
                min_interval,
            } => {
                let interval = interval.clamp(MIN_INTERVAL_SECS, MAX_INTERVAL_SECS);
                let min_interval = min_interval.map(|m| m.clamp(MIN_INTERVAL_SECS, interval));
                if let Some((t, _)) = trackers.get_mut(f.pos) {
                    t.record.interval = Some((
                        interval,
                        min_interval.unwrap_or(DEFAULT_MIN_INTERVAL_SECS.min(interval)),
                    ));
                }
                trackers.on_success(f.pos);
                self.walking = false;
                self.state
                    .on_success(ms, to_wire(f.event), interval, min_interval);
                self.answered_once = true;
            }
            AnnounceOutcome::Failed => self.tracker_failed(now, f.pos, trackers, limits),
            AnnounceOutcome::NoTrackers => {
                self.no_trackers = true;
                self.no_client = true;
                self.walking = false;
                self.requested = false;
            }
        }
        Some((f.event, f.pos))
    }
}

/// The session's announce rate: a token bucket of announce starts.
#[derive(Clone, Debug)]
pub(crate) struct AnnounceBudget {
    /// Earned time, in ms, capped at a burst's worth.
    credit_ms: u64,
    last: Instant,
}

impl AnnounceBudget {
    pub(crate) fn new(now: Instant, per_second: u32) -> Self {
        Self {
            credit_ms: Self::period_ms(per_second).saturating_mul(u64::from(per_second)),
            last: now,
        }
    }

    fn period_ms(per_second: u32) -> u64 {
        1000 / u64::from(per_second.max(1))
    }

    /// Takes one start if the rate allows it at `now`.
    pub(crate) fn take(&mut self, now: Instant, per_second: u32) -> bool {
        let period = Self::period_ms(per_second);
        let cap = period.saturating_mul(u64::from(per_second.max(1)));
        self.credit_ms = self
            .credit_ms
            .saturating_add(now.since(self.last).as_millis())
            .min(cap);
        self.last = self.last.max(now);
        if self.credit_ms >= period {
            self.credit_ms -= period;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Announcer {
        fn answered_t(
            &mut self,
            now: Instant,
            seq: u64,
            outcome: AnnounceOutcome,
            trackers: &mut Trackers,
            limits: WalkLimits,
        ) -> Option<(Option<AnnounceEvent>, TrackerPos)> {
            self.answered(now, seq, outcome, trackers, limits, |_| {})
        }
    }

    const OK: AnnounceOutcome = AnnounceOutcome::Answered {
        interval: 1800,
        min_interval: Some(900),
    };
    const T: Duration = Duration::from_secs(300);
    const L: WalkLimits = WalkLimits {
        max_trackers: 8,
        retry_max_ms: 3_600_000,
    };

    fn one_tracker() -> Trackers {
        Trackers::new([["http://t/announce".into()]], &mut |_| 0)
    }

    #[test]
    fn min_interval_holds_early_announces_back() {
        let t0 = Instant::from_millis(1_000);
        let mut a = Announcer::new(false, t0, true);
        let mut tr = one_tracker();
        assert_eq!(a.due(t0, true, &tr), Some(Due::Scheduled));
        assert!(!a.announced());
        assert_eq!(
            a.send(t0, 1, T, &mut tr, L).and_then(|s| s.1),
            Some(AnnounceEvent::Started)
        );
        assert!(a.announced(), "on its way");
        assert_eq!(a.due(t0, true, &tr), None, "one in flight at a time");
        assert_eq!(
            a.answered_t(t0, 7, OK, &mut tr, L),
            None,
            "not the announce in flight"
        );
        assert_eq!(
            a.answered_t(t0, 1, OK, &mut tr, L).map(|(e, _)| e),
            Some(Some(AnnounceEvent::Started))
        );
        assert_eq!(
            a.answered_t(t0, 1, OK, &mut tr, L),
            None,
            "nothing in flight"
        );
        // Short of peers, but min interval rules; user requests wait too.
        assert!(a.request());
        let before = t0 + Duration::from_millis(899_999);
        assert_eq!(a.due(before, true, &tr), None);
        let at = t0 + Duration::from_secs(900);
        assert_eq!(a.due(at, true, &tr), Some(Due::Early));
        assert_eq!(a.due(at, false, &tr), Some(Due::Early), "requested");
        assert_eq!(a.send(at, 2, T, &mut tr, L).map(|s| s.1), Some(None));
        a.answered_t(at, 2, OK, &mut tr, L);
        assert_eq!(a.due(at + Duration::from_secs(1799), false, &tr), None);
        assert_eq!(
            a.due(at + Duration::from_secs(1800), false, &tr),
            Some(Due::Scheduled)
        );
    }

    #[test]
    fn failures_and_timeouts_back_off() {
        let t0 = Instant::from_millis(0);
        let mut a = Announcer::new(true, t0, true);
        let mut tr = one_tracker();
        a.send(t0, 1, T, &mut tr, L).and_then(|s| s.1);
        a.expire(t0 + Duration::from_secs(299), &mut tr, L);
        assert!(a.in_flight());
        let t1 = t0 + Duration::from_secs(300);
        a.expire(t1, &mut tr, L);
        assert!(!a.in_flight());
        assert!(!a.announced());
        // Retry after 60 s, the event kept; short of peers changes nothing.
        assert_eq!(a.due(t1 + Duration::from_secs(59), true, &tr), None);
        assert_eq!(
            a.due(t1 + Duration::from_secs(60), true, &tr),
            Some(Due::Scheduled)
        );
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(
            a.send(t2, 2, T, &mut tr, L).and_then(|s| s.1),
            Some(AnnounceEvent::Started)
        );
        // The report of the announce given up on is not taken for this one.
        assert_eq!(a.answered_t(t2, 1, OK, &mut tr, L), None);
        assert!(a.in_flight());
        a.answered_t(t2, 2, AnnounceOutcome::Failed, &mut tr, L);
        assert_eq!(a.due(t2 + Duration::from_secs(119), true, &tr), None);
        assert!(a.due(t2 + Duration::from_secs(120), true, &tr).is_some());
        // A tracker's absurd interval is clamped.
        let t2 = t2 + Duration::from_secs(120);
        assert_eq!(
            a.send(t2, 3, T, &mut tr, L).map(|s| s.0),
            Some(TrackerPos::default())
        );
        a.answered_t(
            t2,
            3,
            AnnounceOutcome::Answered {
                interval: 1,
                min_interval: Some(0),
            },
            &mut tr,
            L,
        );
        assert_eq!(a.due(t2 + Duration::from_secs(29), true, &tr), None);
        // No tracker: never again, and a request is refused.
        let t3 = t2 + Duration::from_secs(30);
        assert!(a.send(t3, 4, T, &mut tr, L).is_some());
        a.answered_t(t3, 4, AnnounceOutcome::NoTrackers, &mut tr, L);
        assert_eq!(a.due(t3 + Duration::from_secs(100_000), true, &tr), None);
        assert!(!a.request());
    }

    #[test]
    fn budget_spreads_starts() {
        let t0 = Instant::from_millis(10_000);
        let mut b = AnnounceBudget::new(t0, 10);
        let burst = (0..100).filter(|_| b.take(t0, 10)).count();
        assert_eq!(burst, 10);
        assert!(!b.take(t0 + Duration::from_millis(99), 10));
        assert!(b.take(t0 + Duration::from_millis(100), 10));
        // Over a minute, at most the burst plus the rate.
        let mut n = 0;
        for ms in (0..60_000).step_by(10) {
            n += usize::from(b.take(t0 + Duration::from_millis(200 + ms), 10));
        }
        assert!((600..=611).contains(&n), "{n}");
    }
}
