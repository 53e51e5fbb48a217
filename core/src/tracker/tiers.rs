//! Multitracker tiers ([BEP 12](https://www.bittorrent.org/beps/bep_0012.html)) and the
//! announce policy.
//!
//! # Tiers
//!
//! `TrackerList` (with the `alloc` feature) holds the `announce-list` tiers, each
//! shuffled once at construction with [`shuffle`] (Fisher-Yates driven by the caller's
//! random closure, so a given closure gives a given order). A cursor names the tracker
//! to try: `TrackerList::on_failure` moves it to the next tracker of the tier, then to
//! the next tier, and reports when the whole list has been tried;
//! `TrackerList::on_success` moves the tracker that answered to the front of its tier
//! and rewinds the cursor, since BEP 12 has every announce go through the list in order
//! from the first tier. The list is generic over what a tracker is (`&[u8]` borrowed
//! from the metainfo, an index, an owned URL).
//!
//! `TierWalk` (with `alloc`) is the list a session walks, one tracker per exchange:
//! each tracker keeps a [`TrackerHealth`], and one that failed is skipped until its
//! backoff is over ([`TRACKER_RETRY_BASE_MS`], doubling with each failure in a row, up
//! to a cap: libtorrent's `tracker_retry_delay_max`, an hour, by default), so a dead
//! tracker in the first tier costs one exchange now and then rather than one per
//! announce. A walk asks at most a given number of trackers; the one that answers
//! moves to the front of its tier, and the trackers that answered since the torrent
//! started are the ones told `stopped`.
//!
//! # Announce policy
//!
//! [`AnnounceState`] needs no allocator. It says which event to send next
//! ([`AnnounceState::next_event`]: `stopped` when stopping, else `started` until a
//! tracker acknowledged one, else `completed` once the download finished, if it was not
//! complete when the session started) and when ([`AnnounceState::is_due`]): right away
//! for the events (`started`, `completed`, `stopped`); after `interval` for regular
//! announces; after a failure, after a backoff of 60 s doubling up to the interval
//! (30 min before any success), and not within `min interval` of the last success.
//! [`AnnounceState::wants_more_peers`] says
//! when to announce early because the session is short of peers: never sooner than
//! `min interval` (the tracker's, or `DEFAULT_MIN_INTERVAL_SECS` when it sent none)
//! after the last successful announce.

use super::http::DEFAULT_INTERVAL_SECS;
use super::Event;

/// Shuffles `items` in place (Fisher-Yates). `rng(n)` must return a uniformly random
/// value in `0..n`; a value out of range is reduced modulo `n` (never a panic).
pub fn shuffle<T>(items: &mut [T], rng: &mut impl FnMut(usize) -> usize) {
    for i in (1..items.len()).rev() {
        let j = rng(i + 1) % (i + 1);
        items.swap(i, j);
    }
}

/// Where a tracker sits in a `TrackerList`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct TrackerPos {
    /// The tier.
    pub tier: usize,
    /// The position inside the tier.
    pub index: usize,
}

#[cfg(feature = "alloc")]
pub use list::TierWalk;
#[cfg(all(test, feature = "alloc"))]
use list::TrackerList;

/// The first delay before a tracker that failed is asked again; it doubles with each
/// failure in a row, up to the cap the caller gives (see [`TrackerHealth`]).
pub const TRACKER_RETRY_BASE_MS: u64 = 60_000;
/// The default cap of a tracker's retry delay: an hour, as libtorrent's
/// `tracker_retry_delay_max`.
pub const TRACKER_RETRY_MAX_MS: u64 = 3_600_000;

/// One tracker's record: failures in a row, when it may be asked again, and whether it
/// answered since the torrent started (it is then told `stopped`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerHealth {
    fails: u32,
    retry_at_ms: u64,
    answered: bool,
}

impl TrackerHealth {
    /// Whether the tracker may be asked at `now_ms` (its backoff is over).
    pub const fn available(&self, now_ms: u64) -> bool {
        now_ms >= self.retry_at_ms
    }

    /// Failures in a row.
    pub const fn fails(&self) -> u32 {
        self.fails
    }

    /// Whether it answered since the torrent started.
    pub const fn answered(&self) -> bool {
        self.answered
    }

    /// When it may be asked again (ms).
    pub const fn retry_at_ms(&self) -> u64 {
        self.retry_at_ms
    }

    /// It failed at `now_ms`: asked again after [`TRACKER_RETRY_BASE_MS`], doubling
    /// with each failure in a row, at most `max_ms`.
    pub fn on_failure(&mut self, now_ms: u64, max_ms: u64) {
        self.fails = self.fails.saturating_add(1);
        let shift = (self.fails - 1).min(20);
        let delay = (TRACKER_RETRY_BASE_MS << shift).min(max_ms.max(TRACKER_RETRY_BASE_MS));
        self.retry_at_ms = now_ms.saturating_add(delay);
    }

    /// It answered: no backoff.
    pub fn on_success(&mut self) {
        self.fails = 0;
        self.retry_at_ms = 0;
        self.answered = true;
    }
}

#[cfg(feature = "alloc")]
mod list {
    use super::{shuffle, TrackerHealth, TrackerPos};
    use alloc::vec::Vec;

    /// BEP 12 tiers of trackers (see the module docs).
    #[derive(Clone, Debug)]
    pub(crate) struct TrackerList<T> {
        tiers: Vec<Vec<T>>,
        cursor: TrackerPos,
    }

    impl<T> TrackerList<T> {
        /// Builds the list from tiers in `announce-list` order, dropping empty tiers and
        /// shuffling each tier with `rng` (see [`shuffle`]).
        pub fn new<I, J>(tiers: I, rng: &mut impl FnMut(usize) -> usize) -> Self
        where
            I: IntoIterator<Item = J>,
            J: IntoIterator<Item = T>,
        {
            let mut list: Vec<Vec<T>> = Vec::new();
            for tier in tiers {
                let mut tier: Vec<T> = tier.into_iter().collect();
                if !tier.is_empty() {
                    shuffle(&mut tier, rng);
                    list.push(tier);
                }
            }
            Self {
                tiers: list,
                cursor: TrackerPos::default(),
            }
        }

        /// The tiers in their current order.
        #[cfg(test)]
        pub fn tiers(&self) -> &[Vec<T>] {
            &self.tiers
        }

        /// Number of trackers in all tiers.
        pub fn len(&self) -> usize {
            self.tiers.iter().map(Vec::len).sum()
        }

        /// Whether there is no tracker.
        pub fn is_empty(&self) -> bool {
            self.tiers.is_empty()
        }

        /// Every tracker in announce order: tier by tier, front to back.
        pub fn iter(&self) -> impl Iterator<Item = (TrackerPos, &T)> + '_ {
            self.tiers.iter().enumerate().flat_map(|(tier, t)| {
                t.iter()
                    .enumerate()
                    .map(move |(index, v)| (TrackerPos { tier, index }, v))
            })
        }

        /// The tracker at `pos`.
        pub fn get(&self, pos: TrackerPos) -> Option<&T> {
            self.tiers.get(pos.tier)?.get(pos.index)
        }

        /// The tracker to try next.
        pub fn current(&self) -> Option<(TrackerPos, &T)> {
            self.get(self.cursor).map(|t| (self.cursor, t))
        }

        /// Rewinds the cursor to the first tracker of the first tier.
        pub fn restart(&mut self) {
            self.cursor = TrackerPos::default();
        }

        /// The tracker at (`tier`, `index`) answered: it moves to the front of its tier
        /// (the others keep their order) and the cursor rewinds. Returns `false` (and
        /// does nothing) for a position that does not exist.
        pub fn on_success(&mut self, tier: usize, index: usize) -> bool {
            let Some(front) = self.tiers.get_mut(tier).and_then(|t| t.get_mut(..=index)) else {
                return false;
            };
            front.rotate_right(1);
            self.restart();
            true
        }

        /// The tracker at (`tier`, `index`) failed: the cursor moves to the next one
        /// (next in the tier, else first of the next tier), which is returned. `None`
        /// means every tracker has been tried; the cursor is then back at the start, for
        /// the host to retry after a backoff. A report for another position than the
        /// cursor's (a stale one) changes nothing and returns the current position.
        pub fn on_failure(&mut self, tier: usize, index: usize) -> Option<TrackerPos> {
            let pos = TrackerPos { tier, index };
            if pos != self.cursor || self.get(pos).is_none() {
                return self.current().map(|(p, _)| p);
            }
            let tier_len = self.tiers.get(tier).map_or(0, Vec::len);
            self.cursor = if index + 1 < tier_len {
                TrackerPos {
                    tier,
                    index: index + 1,
                }
            } else {
                TrackerPos {
                    tier: tier + 1,
                    index: 0,
                }
            };
            if self.get(self.cursor).is_none() {
                self.restart();
                return None;
            }
            Some(self.cursor)
        }

        /// The tracker at `pos`, mutably.
        pub fn get_mut(&mut self, pos: TrackerPos) -> Option<&mut T> {
            self.tiers.get_mut(pos.tier)?.get_mut(pos.index)
        }

        fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
            self.tiers.iter_mut().flatten()
        }
    }

    /// One torrent's trackers walked as BEP 12 says, with a backoff per tracker (see
    /// the module docs).
    ///
    /// ```text
    ///  restart ──▶ next(now) ─┬─ None: walk over (every tracker tried, in backoff,
    ///     ▲                   │        or the walk's cap reached)
    ///     │                   └─ Some(pos) ──▶ start(pos) ──▶ exchange
    ///     │                                                   │
    ///     ├── on_success(pos): to the front of its tier ◀─────┤ answered
    ///     │                                                   │ failed
    ///     └──────────────── on_failure(pos, now): backoff ◀───┘ (then next(now))
    /// ```
    #[derive(Clone, Debug)]
    pub struct TierWalk<T> {
        list: TrackerList<(T, TrackerHealth)>,
        /// Trackers asked in this walk.
        tried: usize,
        /// The cursor went past the last tier: nothing more in this walk.
        done: bool,
    }

    impl<T> TierWalk<T> {
        /// The tiers in `announce-list` order, each shuffled with `rng` (see
        /// `TrackerList::new`); no tracker in backoff.
        pub fn new<I, J>(tiers: I, rng: &mut impl FnMut(usize) -> usize) -> Self
        where
            I: IntoIterator<Item = J>,
            J: IntoIterator<Item = T>,
        {
            let tiers = tiers
                .into_iter()
                .map(|t| t.into_iter().map(|u| (u, TrackerHealth::default())));
            Self {
                list: TrackerList::new(tiers, rng),
                tried: 0,
                done: false,
            }
        }

        /// Number of trackers.
        pub fn len(&self) -> usize {
            self.list.len()
        }

        /// Whether there is no tracker.
        pub fn is_empty(&self) -> bool {
            self.list.is_empty()
        }

        /// Every tracker with its record, in announce order.
        pub fn iter(&self) -> impl Iterator<Item = (TrackerPos, &T, &TrackerHealth)> + '_ {
            self.list.iter().map(|(p, (t, h))| (p, t, h))
        }

        /// The tracker at `pos`.
        pub fn get(&self, pos: TrackerPos) -> Option<&T> {
            self.list.get(pos).map(|(t, _)| t)
        }

        /// The record of the tracker at `pos`.
        pub fn health(&self, pos: TrackerPos) -> Option<&TrackerHealth> {
            self.list.get(pos).map(|(_, h)| h)
        }

        /// The tracker at `pos` and its record, mutably.
        pub fn get_mut(&mut self, pos: TrackerPos) -> Option<(&mut T, &mut TrackerHealth)> {
            self.list.get_mut(pos).map(|(t, h)| (t, h))
        }

        /// A new walk: from the first tracker of the first tier.
        pub fn restart(&mut self) {
            self.list.restart();
            self.tried = 0;
            self.done = false;
        }

        /// A new walk after one that failed: from where that one stopped when it
        /// stopped at its cap (so the trackers past the cap get their turn rather than
        /// the same first ones every time), else from the first tier.
        pub fn resume(&mut self) {
            if self.done {
                self.restart();
            } else {
                self.tried = 0;
            }
        }

        /// Trackers asked in this walk.
        pub fn tried(&self) -> usize {
            self.tried
        }

        /// The next tracker of this walk to ask at `now_ms`: the cursor moves past the
        /// trackers in backoff. `None` when the walk is over: past the last tier, or
        /// `max` trackers asked already.
        pub fn next(&mut self, now_ms: u64, max: usize) -> Option<TrackerPos> {
            if self.done || self.tried >= max {
                return None;
            }
            loop {
                let (pos, (_, health)) = self.list.current()?;
                if health.available(now_ms) {
                    return Some(pos);
                }
                if self.list.on_failure(pos.tier, pos.index).is_none() {
                    self.done = true;
                    return None;
                }
            }
        }

        /// The tracker at `pos` is asked.
        pub fn start(&mut self, _pos: TrackerPos) {
            self.tried = self.tried.saturating_add(1);
        }

        /// The tracker at `pos` answered: its backoff ends, it moves to the front of its
        /// tier (BEP 12) and the next walk starts from the first tier.
        pub fn on_success(&mut self, pos: TrackerPos) {
            if let Some((_, h)) = self.list.get_mut(pos) {
                h.on_success();
                self.list.on_success(pos.tier, pos.index);
            }
            self.tried = 0;
            self.done = false;
        }

        /// The tracker at `pos` failed at `now_ms`: it backs off (at most `max_ms`) and
        /// the walk moves to the next tracker of its tier, then to the next tier.
        pub fn on_failure(&mut self, pos: TrackerPos, now_ms: u64, max_ms: u64) {
            let Some((_, h)) = self.list.get_mut(pos) else {
                return;
            };
            h.on_failure(now_ms, max_ms);
            if self.list.current().map(|(p, _)| p) == Some(pos)
                && self.list.on_failure(pos.tier, pos.index).is_none()
            {
                self.done = true;
            }
        }

        /// Whether some tracker may be asked at `now_ms`.
        pub(crate) fn any_available(&self, now_ms: u64) -> bool {
            self.list.iter().any(|(_, (_, h))| h.available(now_ms))
        }

        /// The trackers that answered since the torrent started (they are told
        /// `stopped`).
        pub fn answered(&self) -> impl Iterator<Item = (TrackerPos, &T)> + '_ {
            self.list
                .iter()
                .filter(|(_, (_, h))| h.answered)
                .map(|(p, (t, _))| (p, t))
        }

        /// The torrent stopped: no tracker has it listed any more.
        pub(crate) fn forget_answered(&mut self) {
            for (_, h) in self.list.iter_mut() {
                h.answered = false;
            }
        }
    }
}

/// The `min interval` assumed when the tracker sends none (Transmission's value).
pub(crate) const DEFAULT_MIN_INTERVAL_SECS: u32 = 120;
/// The first retry delay after a failed announce; it doubles with each failure.
pub const RETRY_BASE_MS: u64 = 60_000;

/// Announce bookkeeping for one torrent and one tracker list (see the module docs).
#[derive(Clone, Debug)]
pub struct AnnounceState {
    complete: bool,
    started_acked: bool,
    completed_pending: bool,
    stopping: bool,
    finished: bool,
    interval_ms: u64,
    min_interval_ms: u64,
    last_success_ms: Option<u64>,
    next_ms: u64,
    failures: u32,
}

impl AnnounceState {
    /// A session starting at `now_ms`; `complete` says whether we already have the
    /// whole torrent (then `completed` is never sent). The `started` announce is due now.
    pub const fn new(complete: bool, now_ms: u64) -> Self {
        Self {
            complete,
            started_acked: false,
            completed_pending: false,
            stopping: false,
            finished: false,
            interval_ms: DEFAULT_INTERVAL_SECS as u64 * 1000,
            min_interval_ms: DEFAULT_MIN_INTERVAL_SECS as u64 * 1000,
            last_success_ms: None,
            next_ms: now_ms,
            failures: 0,
        }
    }

    /// The event to put in the next announce.
    pub const fn next_event(&self) -> Option<Event> {
        if self.stopping {
            Some(Event::Stopped)
        } else if !self.started_acked {
            Some(Event::Started)
        } else if self.completed_pending {
            Some(Event::Completed)
        } else {
            None
        }
    }

    /// When an early announce ([`AnnounceState::wants_more_peers`]) is allowed from
    /// (ms): `min interval` after the last successful announce; `None` while none may
    /// go out early (before `started` is acknowledged, while stopping or retrying).
    pub fn early_allowed_ms(&self) -> Option<u64> {
        (!self.finished && !self.stopping && self.started_acked && self.failures == 0)
            .then(|| self.earliest_ms())
    }

    /// The earliest time a non-event announce is allowed.
    fn earliest_ms(&self) -> u64 {
        self.last_success_ms
            .map_or(0, |t| t.saturating_add(self.min_interval_ms))
    }

    /// The download just finished: `completed` becomes pending (once) and is due at
    /// once, as an event (Transmission and libtorrent send it right away; trackers
    /// count downloads by it). Only a pending retry after a failure delays it.
    pub fn on_completed(&mut self, now_ms: u64) {
        if self.complete || self.finished {
            return;
        }
        self.complete = true;
        self.completed_pending = true;
        if self.started_acked && self.failures == 0 {
            self.next_ms = self.next_ms.min(now_ms);
        }
    }

    /// The session is leaving: `stopped` is due now. When no announce ever succeeded
    /// there is nobody to tell and the state is finished at once.
    pub fn stop(&mut self, now_ms: u64) {
        if self.finished {
            return;
        }
        if self.last_success_ms.is_none() {
            self.finished = true;
            return;
        }
        self.stopping = true;
        self.failures = 0;
        self.next_ms = now_ms;
    }

    /// Whether nothing more is to be announced (a `stopped` was acknowledged, or
    /// [`AnnounceState::stop`] came before any success).
    pub const fn is_finished(&self) -> bool {
        self.finished
    }

    /// When the next announce is due (ms), `None` when finished.
    pub const fn next_announce_ms(&self) -> Option<u64> {
        if self.finished {
            None
        } else {
            Some(self.next_ms)
        }
    }

    /// Whether an announce is due at `now_ms`.
    pub const fn is_due(&self, now_ms: u64) -> bool {
        !self.finished && now_ms >= self.next_ms
    }

    /// Whether to announce early because only `connected_peers` (fewer than
    /// `threshold`) are connected: only while running normally (started acknowledged,
    /// not stopping, last announce successful) and at least `min interval` after the
    /// last successful announce.
    pub fn wants_more_peers(&self, now_ms: u64, connected_peers: usize, threshold: usize) -> bool {
        !self.finished
            && !self.stopping
            && self.started_acked
            && self.failures == 0
            && connected_peers < threshold
            && now_ms >= self.earliest_ms()
    }

    /// An announce carrying `sent` succeeded at `now_ms`, with the tracker's interval
    /// and min interval (already clamped by the parsers); schedules the next one.
    pub fn on_success(
        &mut self,
        now_ms: u64,
        sent: Option<Event>,
        interval_secs: u32,
        min_interval_secs: Option<u32>,
    ) {
        match sent {
            Some(Event::Stopped) => {
                self.finished = true;
                self.stopping = false;
            }
            Some(Event::Started) => self.started_acked = true,
            Some(Event::Completed) => self.completed_pending = false,
            None => {}
        }
        let interval = interval_secs.max(1);
        let min_interval = min_interval_secs
            .unwrap_or(DEFAULT_MIN_INTERVAL_SECS)
            .min(interval);
        self.interval_ms = u64::from(interval) * 1000;
        self.min_interval_ms = u64::from(min_interval) * 1000;
        self.last_success_ms = Some(now_ms);
        self.failures = 0;
        self.next_ms = if self.stopping || !self.started_acked || self.completed_pending {
            now_ms
        } else {
            now_ms.saturating_add(self.interval_ms)
        };
    }

    /// An announce failed at `now_ms` (every tracker of the list tried, or the host's
    /// own policy): the event stays pending and a retry is scheduled after 60 s,
    /// 120 s, ... up to the interval, and never within `min interval` of the last
    /// successful announce. Returns the retry time.
    pub fn on_failure(&mut self, now_ms: u64) -> u64 {
        self.failures = self.failures.saturating_add(1);
        let shift = (self.failures - 1).min(16);
        let delay = (RETRY_BASE_MS << shift).min(self.interval_ms.max(RETRY_BASE_MS));
        self.next_ms = now_ms.saturating_add(delay).max(self.earliest_ms());
        self.next_ms
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn shuffle_is_fisher_yates() {
        let mut v = [0, 1, 2, 3, 4];
        let mut calls = std::vec::Vec::new();
        // Always pick 0: each step swaps position i with the front.
        shuffle(&mut v, &mut |n| {
            calls.push(n);
            0
        });
        assert_eq!(calls, [5, 4, 3, 2]);
        assert_eq!(v, [1, 2, 3, 4, 0]);
        let mut v = [0, 1, 2, 3];
        // Out-of-range values are reduced, never a panic; `n - 1` keeps the order.
        shuffle(&mut v, &mut |n| n - 1 + n);
        assert_eq!(v, [0, 1, 2, 3]);
        shuffle(&mut [0u8; 0], &mut |_| 7);
    }

    #[cfg(feature = "alloc")]
    fn lcg() -> impl FnMut(usize) -> usize {
        let mut s: u32 = 12345;
        move |n| {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (s >> 16) as usize % n
        }
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn tiers_shuffle_deterministically_and_promote() {
        use std::vec;
        use std::vec::Vec;
        let tiers = vec![vec!["a", "b", "c", "d"], vec![], vec!["e", "f"]];
        let l1 = TrackerList::new(tiers.clone(), &mut lcg());
        let l2 = TrackerList::new(tiers.clone(), &mut lcg());
        assert_eq!(l1.tiers(), l2.tiers());
        assert_eq!(l1.tiers().len(), 2);
        assert_eq!(l1.len(), 6);
        let mut first: Vec<_> = l1.tiers()[0].clone();
        first.sort_unstable();
        assert_eq!(first, ["a", "b", "c", "d"]);

        // With "always the last" the order is kept, which makes the rest readable.
        let mut l = TrackerList::new(tiers, &mut |n| n - 1);
        let order: Vec<_> = l.iter().map(|(_, t)| *t).collect();
        assert_eq!(order, ["a", "b", "c", "d", "e", "f"]);
        assert_eq!(l.current(), Some((TrackerPos::default(), &"a")));
        assert_eq!(l.on_failure(0, 0), Some(TrackerPos { tier: 0, index: 1 }));
        // A stale report changes nothing.
        assert_eq!(l.on_failure(0, 0), Some(TrackerPos { tier: 0, index: 1 }));
        assert_eq!(l.on_failure(0, 1), Some(TrackerPos { tier: 0, index: 2 }));
        assert_eq!(l.on_failure(0, 2), Some(TrackerPos { tier: 0, index: 3 }));
        assert_eq!(l.on_failure(0, 3), Some(TrackerPos { tier: 1, index: 0 }));
        assert_eq!(l.current().map(|(_, t)| *t), Some("e"));
        assert_eq!(l.on_failure(1, 0), Some(TrackerPos { tier: 1, index: 1 }));
        assert_eq!(l.on_failure(1, 1), None);
        assert_eq!(l.current().map(|(_, t)| *t), Some("a"));

        // "c" answers: it moves to the front, the others keep their order.
        assert!(l.on_success(0, 2));
        assert_eq!(l.tiers()[0], ["c", "a", "b", "d"]);
        assert_eq!(l.current().map(|(_, t)| *t), Some("c"));
        assert!(l.on_success(1, 1));
        assert_eq!(l.tiers()[1], ["f", "e"]);
        assert!(!l.on_success(1, 2));
        assert!(!l.on_success(5, 0));
        assert_eq!(l.get(TrackerPos { tier: 9, index: 0 }), None);

        let empty: TrackerList<&str> = TrackerList::new(vec![Vec::<&str>::new()], &mut lcg());
        assert!(empty.is_empty());
        assert_eq!(empty.current(), None);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn walk_skips_trackers_in_backoff_and_is_bounded() {
        use std::vec;
        use std::vec::Vec;
        let p = |tier, index| TrackerPos { tier, index };
        // "Always the last": the order stays as given.
        let mut w = TierWalk::new(vec![vec!["a", "b"], vec!["c"]], &mut |n| n - 1);
        assert_eq!(w.len(), 3);
        w.restart();
        assert_eq!(w.next(0, 8), Some(p(0, 0)));
        w.start(p(0, 0));
        w.on_failure(p(0, 0), 0, TRACKER_RETRY_MAX_MS);
        assert_eq!(w.next(0, 8), Some(p(0, 1)), "next in the tier");
        w.start(p(0, 1));
        w.on_failure(p(0, 1), 0, TRACKER_RETRY_MAX_MS);
        assert_eq!(w.next(0, 8), Some(p(1, 0)), "then the next tier");
        w.start(p(1, 0));
        w.on_failure(p(1, 0), 0, TRACKER_RETRY_MAX_MS);
        assert_eq!(w.next(0, 8), None, "every tracker tried");
        // All three back off: a new walk finds nobody until 60 s.
        w.restart();
        assert!(!w.any_available(59_999));
        assert_eq!(w.next(59_999, 8), None);
        w.restart();
        assert_eq!(w.next(60_000, 8), Some(p(0, 0)));
        // "b" answers: to the front of its tier; "a" in backoff is skipped next time.
        w.start(p(0, 0));
        w.on_failure(p(0, 0), 60_000, TRACKER_RETRY_MAX_MS);
        assert_eq!(w.health(p(0, 0)).map(TrackerHealth::fails), Some(2));
        assert_eq!(w.next(60_000, 8), Some(p(0, 1)));
        w.start(p(0, 1));
        w.on_success(p(0, 1));
        let order: Vec<_> = w.iter().map(|(_, t, _)| *t).collect();
        assert_eq!(order, ["b", "a", "c"]);
        let answered: Vec<_> = w.answered().map(|(_, t)| *t).collect();
        assert_eq!(answered, ["b"]);
        w.restart();
        assert_eq!(w.next(60_000, 8), Some(p(0, 0)));
        // At most `max` asked per walk; the next walk resumes past the cap.
        w.start(p(0, 0));
        assert_eq!(w.next(60_000, 1), None);
        w.on_failure(p(0, 0), 60_000, TRACKER_RETRY_MAX_MS);
        w.resume();
        assert_eq!(w.next(60_000, 1), Some(p(1, 0)));
        w.start(p(1, 0));
        w.on_failure(p(1, 0), 60_000, TRACKER_RETRY_MAX_MS);
        w.resume();
        assert_eq!(
            w.next(400_000, 1),
            Some(p(0, 0)),
            "from the first tier again"
        );
        w.forget_answered();
        assert_eq!(w.answered().count(), 0);
        // The backoff doubles up to its cap.
        let mut h = TrackerHealth::default();
        let delays: Vec<u64> = (0..8)
            .map(|_| {
                h.on_failure(0, 600_000);
                h.retry_at_ms()
            })
            .collect();
        assert_eq!(
            delays,
            [60_000, 120_000, 240_000, 480_000, 600_000, 600_000, 600_000, 600_000]
        );
        h.on_success();
        assert!(h.available(0) && h.answered() && h.fails() == 0);
    }

    #[test]
    fn event_sequence_for_a_download() {
        let mut s = AnnounceState::new(false, 1_000);
        assert!(s.is_due(1_000));
        assert_eq!(s.next_event(), Some(Event::Started));
        assert!(!s.wants_more_peers(1_000, 0, 10));
        s.on_success(1_000, Some(Event::Started), 1800, Some(300));
        assert_eq!(s.next_event(), None);
        assert_eq!(s.next_announce_ms(), Some(1_801_000));
        assert!(!s.is_due(1_800_999));
        assert!(s.is_due(1_801_000));
        // Short of peers: not before the min interval, then yes.
        assert!(!s.wants_more_peers(300_999, 3, 10));
        assert!(s.wants_more_peers(301_000, 3, 10));
        assert!(!s.wants_more_peers(301_000, 10, 10));
        // Completion: an event, due at once.
        s.on_completed(100_000);
        assert_eq!(s.next_event(), Some(Event::Completed));
        assert_eq!(s.next_announce_ms(), Some(100_000));
        s.on_success(301_000, Some(Event::Completed), 1800, Some(300));
        assert_eq!(s.next_event(), None);
        s.on_completed(400_000);
        assert_eq!(s.next_event(), None);
        // Stopping goes out at once.
        s.stop(500_000);
        assert_eq!(s.next_event(), Some(Event::Stopped));
        assert!(s.is_due(500_000));
        assert!(!s.wants_more_peers(2_000_000, 0, 10));
        s.on_success(500_100, Some(Event::Stopped), 1800, None);
        assert!(s.is_finished());
        assert!(!s.is_due(u64::MAX));
        assert_eq!(s.next_announce_ms(), None);
    }

    #[test]
    fn seeding_session_never_sends_completed() {
        let mut s = AnnounceState::new(true, 0);
        s.on_success(0, Some(Event::Started), 600, None);
        s.on_completed(10);
        assert_eq!(s.next_event(), None);
        // No min interval from the tracker: the default applies (capped by interval).
        assert!(!s.wants_more_peers(119_999, 0, 5));
        assert!(s.wants_more_peers(120_000, 0, 5));
        s.on_success(0, None, 60, None);
        assert!(s.wants_more_peers(60_000, 0, 5));
    }

    #[test]
    fn failures_back_off_and_keep_the_event() {
        let mut s = AnnounceState::new(false, 0);
        assert_eq!(s.on_failure(0), 60_000);
        assert_eq!(s.next_event(), Some(Event::Started));
        assert!(!s.is_due(59_999));
        assert_eq!(s.on_failure(60_000), 180_000);
        assert_eq!(s.on_failure(180_000), 420_000);
        for _ in 0..40 {
            s.on_failure(0);
        }
        assert_eq!(s.next_announce_ms(), Some(1_800_000));
        s.on_success(0, Some(Event::Started), 900, None);
        assert_eq!(s.next_announce_ms(), Some(900_000));
        // After a success, a retry waits for the tracker's min interval too.
        s.on_success(1_000_000, None, 1800, Some(900));
        assert_eq!(s.on_failure(1_100_000), 1_900_000);
        assert_eq!(s.on_failure(1_900_000), 2_020_000);
        // Stopping before any success: nothing to tell.
        let mut s = AnnounceState::new(false, 0);
        s.stop(5);
        assert!(s.is_finished());
    }
}
