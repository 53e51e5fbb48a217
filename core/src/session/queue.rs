//! The download and seed queues, the idle seeding limit and each torrent's own
//! connection cap (Transmission's `download-queue-size`, `seed-queue-size`,
//! `queue-stalled-minutes`, `seedIdleLimit` and `peer-limit`).
//!
//! Every torrent has a place in the queues (0 first; the places are 0..n, each once,
//! a new torrent last). With [`SessionConfig::download_queue`] at N, at most N
//! unfinished torrents run; with [`SessionConfig::seed_queue`] at M, at most M
//! finished ones. The others wait *queued* ([`TorrentStatus::queued`]): like a paused
//! torrent, a queued one holds no connection and does not announce (it announced
//! `stopped` when it entered the queue). Paused torrents, torrents started with
//! [`Session::resume_now`] and stalled torrents (no payload moved for
//! [`SessionConfig::queue_stalled_after`]; they keep running) do not count. At each
//! timer the queues are balanced: a free slot starts the queued torrent with the
//! lowest place; a queue over its size (lowered, or a download that finished and
//! joined the seeds) sends its running torrents with the highest places back to
//! wait. A running torrent is never swapped for a queued one of a lower place: the
//! places say who starts next, not who stops.
//!
//! ```text
//!            no free slot                    slot free (lowest place first)
//!  start ──────────────────▶ queued ─────────────────────────────▶ running
//!    │                         ▲   ◀── queue over its size ───────── │
//!    └────── free slot ────────┼──────────────────────────────────▶ │
//!                              │ resume_now: running, never queued   │
//!  paused ◀── pause (from either) ───────────────────────────────────┘
//! ```
//!
//! [`TorrentStatus::queued`]: super::TorrentStatus::queued

use super::{CloseReason, ConnId, Event, Session, SessionConfig, TorrentId, TorrentState};
use crate::peer::PeerError;
use crate::time::{Duration, Instant};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// A torrent's idle seeding limit (Transmission's `seedIdleMode`: 0, 1, 2 are
/// `Session`, `Minutes`, `Unlimited`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IdleLimit {
    /// The session's [`SessionConfig::seed_idle_minutes`] (the default).
    #[default]
    Session,
    /// Stop seeding after this many minutes without upload.
    Minutes(u32),
    /// Seed however long nothing is uploaded, whatever the session says.
    Unlimited,
}

/// A move in the queue ([`Session::move_in_queue`], Transmission's `queue-move-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueMove {
    /// To place 0.
    Top,
    /// One place earlier.
    Up,
    /// One place later.
    Down,
    /// To the last place.
    Bottom,
}

impl Session {
    // ---- queue ----

    /// The place of torrent `id` in the queues (0 first); `None` for an unknown
    /// torrent.
    pub fn queue_position(&self, id: TorrentId) -> Option<u32> {
        Some(self.torrents.get(&id)?.queue_pos)
    }

    /// Moves torrent `id` to place `pos` in the queues (past the last place: the
    /// last); the torrents between shift by one. A queued torrent moved ahead of
    /// running ones starts when a slot frees, it does not stop them. False for an
    /// unknown torrent.
    pub fn set_queue_position(&mut self, now: Instant, id: TorrentId, pos: u32) -> bool {
        let n = self.torrents.len() as u32;
        let Some(old) = self.torrents.get(&id).map(|t| t.queue_pos) else {
            return false;
        };
        let pos = pos.min(n.saturating_sub(1));
        for (k, t) in self.torrents.iter_mut() {
            if *k == id {
                t.queue_pos = pos;
            } else if pos < old && (pos..old).contains(&t.queue_pos) {
                t.queue_pos += 1;
            } else if pos > old && t.queue_pos > old && t.queue_pos <= pos {
                t.queue_pos -= 1;
            }
        }
        self.run_queue(now);
        self.flush_sends();
        true
    }

    /// Puts the queues in the order of `order` at once (one pass, one look at which
    /// torrents run): the torrents it names take places 0, 1, ... in that order, the
    /// others follow in their present order. Unknown ids and repeats are skipped.
    pub fn set_queue_order(&mut self, now: Instant, order: &[TorrentId]) {
        let mut rank: BTreeMap<TorrentId, u32> = BTreeMap::new();
        for id in order {
            if self.torrents.contains_key(id) && !rank.contains_key(id) {
                let next = rank.len() as u32;
                rank.insert(*id, next);
            }
        }
        let mut rest: Vec<(u32, TorrentId)> = self
            .torrents
            .iter()
            .filter(|(k, _)| !rank.contains_key(k))
            .map(|(k, t)| (t.queue_pos, *k))
            .collect();
        rest.sort_unstable();
        let named = rank.len() as u32;
        for (i, (_, k)) in rest.into_iter().enumerate() {
            rank.insert(k, named + i as u32);
        }
        for (k, t) in self.torrents.iter_mut() {
            if let Some(p) = rank.get(k) {
                t.queue_pos = *p;
            }
        }
        self.run_queue(now);
        self.flush_sends();
    }

    /// Moves torrent `id` in the queues: to the top, up one, down one, to the
    /// bottom. False for an unknown torrent.
    pub fn move_in_queue(&mut self, now: Instant, id: TorrentId, to: QueueMove) -> bool {
        let Some(pos) = self.queue_position(id) else {
            return false;
        };
        let pos = match to {
            QueueMove::Top => 0,
            QueueMove::Up => pos.saturating_sub(1),
            QueueMove::Down => pos.saturating_add(1),
            QueueMove::Bottom => u32::MAX,
        };
        self.set_queue_position(now, id, pos)
    }

    /// Starts torrent `id` now, paused or queued, past the queues (Transmission's
    /// `torrent-start-now`): it never waits in a queue and does not count in one
    /// until it is paused. False for an unknown torrent.
    pub fn resume_now(&mut self, now: Instant, id: TorrentId) -> bool {
        let Some(t) = self.torrents.get_mut(&id) else {
            return false;
        };
        t.force_start = true;
        let was_stopped = t.is_stopped();
        let was_queued = core::mem::take(&mut t.queued);
        t.paused = false;
        if was_queued {
            self.push_event(Event::TorrentDequeued(id));
        }
        if was_stopped && t_runs(self, id) {
            if let Some(t) = self.torrents.get_mut(&id) {
                t.active_since = now;
            }
            self.start_announcing(now, id);
            self.connect_more(now);
        }
        self.flush_sends();
        true
    }

    /// Torrent `id` is about to start (added, resumed, its check done): whether it
    /// may run now. When its queue has no free slot it is queued instead
    /// ([`Event::TorrentQueued`]) and false is returned.
    pub(super) fn enter_queue(&mut self, now: Instant, id: TorrentId) -> bool {
        let Some(t) = self.torrents.get(&id) else {
            return false;
        };
        let seeds = is_seed(t);
        let limit = queue_limit(&self.config, seeds);
        let free = match limit {
            _ if t.force_start => true,
            None => true,
            Some(n) => {
                let stalled = self.config.queue_stalled_after;
                let counted = self
                    .torrents
                    .iter()
                    .filter(|(k, o)| **k != id && counts(o, now, stalled) && is_seed(o) == seeds)
                    .count();
                counted < n as usize
            }
        };
        let Some(t) = self.torrents.get_mut(&id) else {
            return false;
        };
        if free {
            t.active_since = now;
        } else if !t.queued {
            t.queued = true;
            self.push_event(Event::TorrentQueued(id));
        }
        free
    }

    /// Balances the queues (see the module docs): starts queued torrents while their
    /// queue has free slots, queues the running ones over its size.
    pub(super) fn run_queue(&mut self, now: Instant) {
        let any_queued = self.torrents.values().any(|t| t.queued);
        if !any_queued && self.config.download_queue.is_none() && self.config.seed_queue.is_none() {
            return;
        }
        let stalled = self.config.queue_stalled_after;
        let mut start = Vec::new();
        let mut stop = Vec::new();
        for seeds in [false, true] {
            // (place, id, queued, counted)
            let mut list: Vec<(u32, TorrentId, bool, bool)> = self
                .torrents
                .iter()
                .filter(|(_, t)| in_queue(t) && is_seed(t) == seeds)
                .map(|(k, t)| (t.queue_pos, *k, t.queued, counts(t, now, stalled)))
                .collect();
            list.sort_unstable();
            let counted = list.iter().filter(|e| e.3).count();
            match queue_limit(&self.config, seeds) {
                None => start.extend(list.iter().filter(|e| e.2).map(|e| e.1)),
                Some(n) if counted > n as usize => stop.extend(
                    list.iter()
                        .rev()
                        .filter(|e| e.3)
                        .take(counted - n as usize)
                        .map(|e| e.1),
                ),
                Some(n) => start.extend(
                    list.iter()
                        .filter(|e| e.2)
                        .take(n as usize - counted)
                        .map(|e| e.1),
                ),
            }
        }
        for id in stop {
            if let Some(t) = self.torrents.get_mut(&id) {
                t.queued = true;
            }
            self.stop_announcing(id);
            let conns: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| c.torrent == Some(id))
                .map(|(k, _)| *k)
                .collect();
            for c in conns {
                self.close(c, CloseReason::TorrentStopped);
            }
            self.push_event(Event::TorrentQueued(id));
        }
        let started = !start.is_empty();
        for id in start {
            if let Some(t) = self.torrents.get_mut(&id) {
                t.queued = false;
                t.active_since = now;
            }
            if t_runs(self, id) {
                self.start_announcing(now, id);
            }
            self.push_event(Event::TorrentDequeued(id));
        }
        self.run_announces(now);
        if started {
            self.connect_more(now);
        }
    }

    /// A torrent at place `pos` left: the places after it move up.
    pub(super) fn close_queue_gap(&mut self, pos: u32) {
        for t in self.torrents.values_mut().filter(|t| t.queue_pos > pos) {
            t.queue_pos -= 1;
        }
    }

    // ---- idle seeding limit ----

    /// Sets the idle seeding limit of torrent `id`: once finished, a torrent that
    /// uploaded nothing for that long (counted from its last payload either way, or
    /// from when it last started) is paused and [`Event::IdleLimitReached`] says so.
    /// Checked at each timer. False for an unknown torrent.
    pub fn set_idle_limit(&mut self, now: Instant, id: TorrentId, limit: IdleLimit) -> bool {
        let Some(t) = self.torrents.get_mut(&id) else {
            return false;
        };
        t.idle_limit = limit;
        self.check_idle(now);
        true
    }

    /// The idle seeding limit of torrent `id` as set; `None` for an unknown torrent.
    pub fn idle_limit(&self, id: TorrentId) -> Option<IdleLimit> {
        Some(self.torrents.get(&id)?.idle_limit)
    }

    /// Pauses the finished torrents idle for their limit (at each timer).
    pub(super) fn check_idle(&mut self, now: Instant) {
        let session = self.config.seed_idle_minutes;
        let due: Vec<TorrentId> = self
            .torrents
            .iter()
            .filter(|(_, t)| !t.is_stopped() && t.finished && t.state != TorrentState::Error)
            .filter(|(_, t)| {
                let minutes = match t.idle_limit {
                    IdleLimit::Session => session,
                    IdleLimit::Minutes(m) => Some(m),
                    IdleLimit::Unlimited => None,
                };
                minutes.is_some_and(|m| t.idle_for(now) >= Duration::from_secs(u64::from(m) * 60))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.pause_torrent(now, id);
            self.push_event(Event::IdleLimitReached(id));
        }
    }

    // ---- connection cap ----

    /// Caps the connections of torrent `id` at `limit` (Transmission's `peer-limit`;
    /// `None`: back to [`SessionConfig::max_peers_per_torrent`]). Lowered, the
    /// connections over it are closed at once ([`PeerError::ConnectionLimit`]): those
    /// still in their handshake first (the newest first), then the least useful
    /// established ones, as [`Session::set_config`] closes them. The session's
    /// [`SessionConfig::max_connections`] still holds over all torrents. False for an
    /// unknown torrent.
    pub fn set_peer_limit(&mut self, now: Instant, id: TorrentId, limit: Option<usize>) -> bool {
        let Some(t) = self.torrents.get_mut(&id) else {
            return false;
        };
        t.max_peers = limit;
        self.shed_torrent(now, id);
        self.connect_more(now);
        self.flush_sends();
        true
    }

    /// The connection cap of torrent `id` in force (its own, or the session's);
    /// `None` for an unknown torrent.
    pub fn peer_limit(&self, id: TorrentId) -> Option<usize> {
        self.torrents.get(&id).map(|_| self.peer_cap(id))
    }

    /// The connection cap of torrent `id`.
    pub(super) fn peer_cap(&self, id: TorrentId) -> usize {
        self.torrents
            .get(&id)
            .and_then(|t| t.max_peers)
            .unwrap_or(self.config.max_peers_per_torrent)
    }

    /// Closes the connections of torrent `tid` over its cap, least useful first.
    pub(super) fn shed_torrent(&mut self, now: Instant, tid: TorrentId) {
        let order = self.shedding_order(now, Some(tid));
        let over = order.len().saturating_sub(self.peer_cap(tid));
        for k in order.into_iter().take(over) {
            self.close(k, CloseReason::Peer(PeerError::ConnectionLimit));
        }
    }
}

/// Whether torrent `id` runs once not stopped: past its check, not stopped by an
/// error.
fn t_runs(s: &Session, id: TorrentId) -> bool {
    s.torrents
        .get(&id)
        .is_some_and(|t| !matches!(t.state, TorrentState::Checking | TorrentState::Error))
}

/// A finished torrent is in the seed queue, others in the download queue.
fn is_seed(t: &super::Torrent) -> bool {
    t.finished || t.state == TorrentState::Seeding
}

/// The size of the seed or download queue.
fn queue_limit(config: &SessionConfig, seeds: bool) -> Option<u32> {
    if seeds {
        config.seed_queue
    } else {
        config.download_queue
    }
}

/// Whether the queues hold torrent `t` (running or queued): not paused, not started
/// past them, past its check and not stopped by an error.
fn in_queue(t: &super::Torrent) -> bool {
    !t.paused && !t.force_start && !matches!(t.state, TorrentState::Checking | TorrentState::Error)
}

/// Whether torrent `t` runs but moved no payload for `stalled`.
pub(super) fn is_stalled(t: &super::Torrent, now: Instant, stalled: Option<Duration>) -> bool {
    in_queue(t) && !t.queued && stalled.is_some_and(|d| t.idle_for(now) >= d)
}

/// Whether torrent `t` takes a slot of its queue: it runs, in the queue, and is not
/// stalled.
fn counts(t: &super::Torrent, now: Instant, stalled: Option<Duration>) -> bool {
    in_queue(t) && !t.queued && stalled.is_none_or(|d| t.idle_for(now) < d)
}
