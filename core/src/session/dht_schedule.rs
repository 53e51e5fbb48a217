//! When each torrent is looked up on the DHT (BEP 5 `get_peers`, then `announce_peer`).
//!
//! The session decides; the host's DHT node only performs the lookups it is asked
//! for ([`Action::DhtLookup`](super::Action::DhtLookup)), hands the peers found to
//! [`Session::handle_peers`](super::Session::handle_peers) and reports the end with
//! [`Session::handle_dht_done`](super::Session::handle_dht_done). Only a host that
//! runs a DHT node turns the schedule on ([`SessionConfig::dht`]).
//!
//! A torrent is looked up while it runs and is public: never a private torrent
//! (BEP 27), a paused one, one whose data is being checked, or one stopped by a disk
//! error. Each such torrent is looked up:
//! - at once when it starts (added, checked, resumed), within the caps below;
//! - again [`SessionConfig::dht_announce_interval`] after the last lookup started
//!   (libtorrent's `dht_announce_interval`, 15 minutes);
//! - sooner while it is short of peers
//!   ([`Session::short_of_peers`](super::Session::short_of_peers), the one threshold
//!   trackers use too), but never within
//!   [`SessionConfig::dht_short_of_peers_interval`] of the last start;
//! - after a lookup that reached no node (an empty routing table while the node
//!   bootstraps) or that the node could not start, after 2 s doubling up to
//!   5 minutes.
//!
//! One lookup per torrent runs at a time; one the host never reports counts as failed
//! after [`LOOKUP_TIMEOUT`]. Over the session, lookups start at most at
//! [`SessionConfig::dht_lookups_per_minute`] (after a burst of five seconds' worth),
//! with at most [`SessionConfig::max_dht_lookups_in_flight`] running, torrents short
//! of peers first, then the longest overdue: a thousand torrents starting together
//! reach the DHT spread over the following minutes, as libtorrent spreads its DHT
//! announces over the interval, instead of in one burst.
//!
//! ```text
//!            start (public, running)
//!                  │
//!                  ▼
//!   ┌──────────► waiting ── due, within the caps ──► in flight
//!   │   next: start + interval                        │
//!   │   (start + short interval while short)          │ handle_dht_done / timeout
//!   └──────────────────────────────────────────────────┘
//!         reached nodes: back to the interval; none: backoff 2 s .. 5 min
//! ```

use super::{Action, SessionConfig, TorrentId};
use crate::ids::InfoHash;
use crate::time::{Duration, Instant};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

/// A lookup the host has not reported after this long counts as failed (a lookup
/// ends within a minute: every query times out long before).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(120);
/// The first retry after a lookup that reached no node; it doubles each time.
const RETRY_FIRST: Duration = Duration::from_secs(2);
/// The longest retry backoff.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// How a DHT lookup went, for [`Session::handle_dht_done`](super::Session::handle_dht_done).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DhtOutcome {
    /// The lookup reached nodes (whether or not they knew peers): the next one comes
    /// after the interval.
    Reached,
    /// It reached no node, or the DHT node could not start it (too many lookups
    /// running): retried after a backoff.
    Failed,
}

/// A torrent eligible for lookups, as the session sees it this turn.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Eligible {
    pub(crate) id: TorrentId,
    pub(crate) info_hash: InfoHash,
    /// A hybrid's truncated v2 info-hash (BEP 52): its lookups take turns with the
    /// v1 one, twice as often, so each swarm is looked up at the interval.
    pub(crate) info_hash_v2: Option<InfoHash>,
    pub(crate) short: bool,
}

#[derive(Clone, Debug)]
struct Entry {
    /// When the next lookup is due (the regular one, or a retry after a failure).
    next: Instant,
    /// The lookup running: its number and when to give up on it.
    in_flight: Option<(u64, Instant)>,
    /// When the last lookup started.
    last_start: Option<Instant>,
    /// Consecutive failed lookups.
    failures: u32,
    /// Lookups started (a hybrid's odd ones are of its v2 info-hash).
    started: u32,
}

impl Entry {
    /// When a lookup is wanted; `short` while the torrent is short of peers.
    fn due_at(&self, short: bool, short_interval: Duration) -> Instant {
        if self.failures > 0 || !short {
            return self.next;
        }
        match self.last_start {
            Some(t) => self.next.min(t + short_interval),
            None => self.next,
        }
    }
}

/// The session's DHT lookup schedule: one entry per eligible torrent, and the
/// process-wide rate of lookup starts.
#[derive(Clone, Debug, Default)]
pub(crate) struct DhtSchedule {
    entries: BTreeMap<TorrentId, Entry>,
    /// Earned time, in ms, capped at a burst's worth.
    credit_ms: u64,
    last: Option<Instant>,
    next_seq: u64,
}

impl DhtSchedule {
    /// Milliseconds between two lookup starts at `per_minute`.
    fn period_ms(per_minute: u32) -> u64 {
        60_000 / u64::from(per_minute.max(1))
    }

    /// Takes one lookup start if the rate allows it at `now` (a token bucket holding
    /// five seconds' worth, at least one).
    fn take(&mut self, now: Instant, per_minute: u32) -> bool {
        let period = Self::period_ms(per_minute);
        let burst = (u64::from(per_minute) / 12).max(1);
        let cap = period.saturating_mul(burst);
        let earned = match self.last {
            Some(last) => now.since(last).as_millis(),
            None => cap,
        };
        self.credit_ms = self.credit_ms.saturating_add(earned).min(cap);
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
        if self.credit_ms >= period {
            self.credit_ms -= period;
            true
        } else {
            false
        }
    }

    /// Lookups running.
    pub(crate) fn in_flight(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.in_flight.is_some())
            .count()
    }

    /// Starts the lookups that are due among `eligible` (every torrent that may be
    /// looked up now; the others are forgotten), within the caps of `config`.
    pub(crate) fn run(
        &mut self,
        now: Instant,
        eligible: &[Eligible],
        config: &SessionConfig,
        actions: &mut VecDeque<Action>,
    ) {
        // Forget the torrents that stopped, paused, went private or failed; a new one
        // is due at once.
        self.entries
            .retain(|id, _| eligible.binary_search_by_key(id, |e| e.id).is_ok());
        for e in eligible {
            self.entries.entry(e.id).or_insert(Entry {
                next: now,
                in_flight: None,
                last_start: None,
                failures: 0,
                started: 0,
            });
        }
        let mut running = 0;
        let mut due: Vec<(bool, Instant, TorrentId, InfoHash, bool)> = Vec::new();
        for e in eligible {
            let Some(entry) = self.entries.get_mut(&e.id) else {
                continue;
            };
            if let Some((_, deadline)) = entry.in_flight {
                if now < deadline {
                    running += 1;
                    continue;
                }
                entry.in_flight = None;
                Self::failed(entry, now);
            }
            let at = entry.due_at(e.short, config.dht_short_of_peers_interval);
            if at <= now {
                let info_hash = match e.info_hash_v2 {
                    Some(v2) if entry.started % 2 == 1 => v2,
                    _ => e.info_hash,
                };
                due.push((!e.short, at, e.id, info_hash, e.info_hash_v2.is_some()));
            }
        }
        due.sort_unstable();
        let announce = config.listen_port != 0;
        for (_, _, id, info_hash, hybrid) in due {
            if running >= config.max_dht_lookups_in_flight
                || !self.take(now, config.dht_lookups_per_minute)
            {
                break;
            }
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            self.next_seq += 1;
            let seq = self.next_seq;
            entry.in_flight = Some((seq, now + LOOKUP_TIMEOUT));
            entry.last_start = Some(now);
            entry.started = entry.started.wrapping_add(1);
            entry.next = if hybrid {
                now + Duration::from_millis(config.dht_announce_interval.as_millis() / 2)
            } else {
                now + config.dht_announce_interval
            };
            running += 1;
            actions.push_back(Action::DhtLookup {
                torrent: id,
                info_hash,
                announce,
                seq,
            });
        }
    }

    fn failed(entry: &mut Entry, now: Instant) {
        entry.failures = entry.failures.saturating_add(1);
        let shift = (entry.failures - 1).min(16);
        let backoff = RETRY_FIRST.as_millis().saturating_mul(1 << shift);
        entry.next = now + Duration::from_millis(backoff.min(RETRY_MAX.as_millis()));
    }

    /// The application asks for a lookup of torrent `id`: due as soon as
    /// `short_interval` after the last start allows (the spacing kept while short of
    /// peers). False when the torrent is not in the schedule (not eligible yet), a
    /// lookup runs, or a retry backoff holds.
    pub(crate) fn request(
        &mut self,
        now: Instant,
        id: TorrentId,
        short_interval: Duration,
    ) -> bool {
        let Some(e) = self.entries.get_mut(&id) else {
            return false;
        };
        if e.in_flight.is_some() || e.failures > 0 {
            return false;
        }
        let at = e.last_start.map_or(now, |t| (t + short_interval).max(now));
        if at < e.next {
            e.next = at;
        }
        true
    }

    /// The host reports lookup `seq` of torrent `id`. False when it is not the one
    /// running (late, given up on, or unknown).
    pub(crate) fn done(
        &mut self,
        now: Instant,
        id: TorrentId,
        seq: u64,
        outcome: DhtOutcome,
    ) -> bool {
        let Some(entry) = self.entries.get_mut(&id) else {
            return false;
        };
        if !matches!(entry.in_flight, Some((s, _)) if s == seq) {
            return false;
        }
        entry.in_flight = None;
        match outcome {
            DhtOutcome::Reached => entry.failures = 0,
            DhtOutcome::Failed => Self::failed(entry, now),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PeerId;

    fn config() -> SessionConfig {
        let mut c = SessionConfig::new(PeerId([1; 20]));
        c.dht = true;
        c
    }

    fn lookups(q: &mut VecDeque<Action>) -> Vec<(TorrentId, u64)> {
        q.drain(..)
            .filter_map(|a| match a {
                Action::DhtLookup { torrent, seq, .. } => Some((torrent, seq)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn retries_back_off_and_reset() {
        let c = config();
        let mut s = DhtSchedule::default();
        let mut q = VecDeque::new();
        let one = [Eligible {
            id: TorrentId(1),
            info_hash: InfoHash([1; 20]),
            info_hash_v2: None,
            short: true,
        }];
        let t0 = Instant::from_millis(1_000);
        s.run(t0, &one, &c, &mut q);
        let (_, seq) = lookups(&mut q)[0];
        assert!(
            !s.done(t0, TorrentId(1), seq + 1, DhtOutcome::Failed),
            "not it"
        );
        assert!(s.done(t0, TorrentId(1), seq, DhtOutcome::Failed));
        // 2 s, then 4 s.
        s.run(t0 + Duration::from_millis(1_999), &one, &c, &mut q);
        assert!(lookups(&mut q).is_empty());
        let t1 = t0 + Duration::from_secs(2);
        s.run(t1, &one, &c, &mut q);
        let (_, seq) = lookups(&mut q)[0];
        s.done(t1, TorrentId(1), seq, DhtOutcome::Failed);
        s.run(t1 + Duration::from_millis(3_999), &one, &c, &mut q);
        assert!(lookups(&mut q).is_empty());
        let t2 = t1 + Duration::from_secs(4);
        s.run(t2, &one, &c, &mut q);
        let (_, seq) = lookups(&mut q)[0];
        // Reached: the short-of-peers interval from now on.
        s.done(t2, TorrentId(1), seq, DhtOutcome::Reached);
        let floor = c.dht_short_of_peers_interval;
        s.run(
            t2 + Duration::from_millis(floor.as_millis() - 1),
            &one,
            &c,
            &mut q,
        );
        assert!(lookups(&mut q).is_empty());
        s.run(t2 + floor, &one, &c, &mut q);
        assert_eq!(lookups(&mut q).len(), 1);
        // Never reported: given up on after the timeout, then retried.
        let t3 = t2 + floor + LOOKUP_TIMEOUT;
        s.run(t3, &one, &c, &mut q);
        assert!(
            lookups(&mut q).is_empty(),
            "counted as failed, retried in 2 s"
        );
        s.run(t3 + RETRY_FIRST, &one, &c, &mut q);
        assert_eq!(lookups(&mut q).len(), 1);
    }

    #[test]
    fn the_rate_holds_for_many_torrents() {
        let mut c = config();
        c.max_dht_lookups_in_flight = usize::MAX;
        let mut s = DhtSchedule::default();
        let mut q = VecDeque::new();
        let all: Vec<Eligible> = (0..1000u32)
            .map(|i| Eligible {
                id: TorrentId(i),
                info_hash: InfoHash([i as u8; 20]),
                info_hash_v2: None,
                short: false,
            })
            .collect();
        let t0 = Instant::from_millis(5_000);
        s.run(t0, &all, &c, &mut q);
        assert_eq!(lookups(&mut q).len(), 5, "the burst");
        let mut n = 0;
        for ms in (100..=60_000).step_by(100) {
            s.run(t0 + Duration::from_millis(ms), &all, &c, &mut q);
            n += lookups(&mut q).len();
        }
        assert_eq!(n, 60, "one a second");
    }

    /// A hybrid is looked up in both swarms (BEP 52): its v1 and v2 info-hashes take
    /// turns, each at the interval.
    #[test]
    fn a_hybrid_is_looked_up_in_both_swarms() {
        let c = config();
        let mut s = DhtSchedule::default();
        let mut q = VecDeque::new();
        let (v1, v2) = (InfoHash([1; 20]), InfoHash([2; 20]));
        let one = [Eligible {
            id: TorrentId(1),
            info_hash: v1,
            info_hash_v2: Some(v2),
            short: false,
        }];
        let mut t = Instant::from_millis(1_000);
        let mut seen = Vec::new();
        for _ in 0..4 {
            s.run(t, &one, &c, &mut q);
            while let Some(a) = q.pop_front() {
                if let Action::DhtLookup { info_hash, seq, .. } = a {
                    seen.push(info_hash);
                    assert!(s.done(t, TorrentId(1), seq, DhtOutcome::Reached));
                }
            }
            t = t + Duration::from_millis(c.dht_announce_interval.as_millis() / 2);
        }
        assert_eq!(seen, [v1, v2, v1, v2]);
    }
}
