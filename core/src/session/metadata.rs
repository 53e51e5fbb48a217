//! Fetching a magnet link's info dictionary (BEP 9) from peers that may lie about it.
//!
//! Every peer says in its extension handshake how large the metadata is
//! (`metadata_size`), and a liar may say anything, first. Keeping the first size heard
//! and closing every peer that disagrees let one liar stall a magnet link for good.
//! Instead:
//!
//! - The size each connection claims is kept (its handshake, or the `total_size` of
//!   its first data message); nobody is closed for disagreeing.
//! - One size is assembled at a time: the candidate with the fewest failed attempts,
//!   then the most addresses claiming it, then the one being assembled, then the
//!   smallest. Only the peers that claim it are asked; data of another size is ignored.
//! - When the assembled dictionary does not hash to the info-hash: if one peer sent all
//!   of it, that peer lied and is banned (its address, as for bad piece data); if
//!   several did, the size counts a failure and its next attempt takes every piece
//!   from a single peer ([`MetadataAssembler::set_single_source`]), which names the liar
//!   if it fails again.
//! - An attempt that gets no piece for [`ExtConfig::request_timeout_ms`], or that has
//!   nothing to ask any more (its peers rejected what is missing) for [`IDLE_STALL`],
//!   while another size is claimed, counts a failure too, and the next candidate is
//!   tried.
//!
//! Memory: one assembly buffer at a time, at most [`ExtConfig::max_metadata_size`]
//! (the handshake parser ignores larger claims), and the failures of at most
//! [`MAX_TRIED_SIZES`] sizes. Attempts are not capped in number (a cap would let liars
//! stop the download for good); each costs the attacker an address (single source) or
//! the request timeout (a stall).

use super::bans::canonical;
use super::{torrent, ConnId, Session, TorrentId};
use crate::ext::{ExtConfig, MetadataAssembler};
use crate::time::{Duration, Instant};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::net::IpAddr;

/// Sizes whose failures are remembered; past it the oldest entry goes.
pub(crate) const MAX_TRIED_SIZES: usize = 16;
/// How long an attempt with nothing left to ask waits before it counts as stalled
/// (a peer may still come that claims the same size).
pub(crate) const IDLE_STALL: Duration = Duration::from_secs(2);

/// The metadata download's memory across attempts.
#[derive(Debug)]
pub(crate) struct FetchState {
    /// Failed attempts per size, oldest entry first.
    failures: Vec<(u32, u32)>,
    /// When the current attempt started or last got a piece.
    progress_at: Instant,
}

impl Default for FetchState {
    fn default() -> Self {
        Self {
            failures: Vec::new(),
            progress_at: Instant::ZERO,
        }
    }
}

impl FetchState {
    fn failures(&self, size: u32) -> u32 {
        self.failures
            .iter()
            .find(|(s, _)| *s == size)
            .map_or(0, |(_, n)| *n)
    }

    fn failed(&mut self, size: u32) {
        if let Some(e) = self.failures.iter_mut().find(|(s, _)| *s == size) {
            e.1 = e.1.saturating_add(1);
            return;
        }
        if self.failures.len() >= MAX_TRIED_SIZES {
            self.failures.remove(0);
        }
        self.failures.push((size, 1));
    }

    /// A piece of the current attempt arrived.
    pub(crate) fn progress(&mut self, now: Instant) {
        self.progress_at = now;
    }
}

fn ext_config() -> ExtConfig {
    ExtConfig::default()
}

/// The sizes claimed by the established connections of torrent `id` that speak
/// `ut_metadata`, with the distinct addresses claiming each.
fn claims(s: &Session, id: TorrentId) -> BTreeMap<u32, Vec<IpAddr>> {
    let mut votes: BTreeMap<u32, Vec<IpAddr>> = BTreeMap::new();
    for c in s.conns.values().filter(|c| {
        c.torrent == Some(id) && c.peer.is_established() && c.their_ut_metadata.is_some()
    }) {
        if let Some(size) = c.metadata_size {
            let ip = canonical(c.addr.ip());
            let v = votes.entry(size).or_default();
            if !v.contains(&ip) {
                v.push(ip);
            }
        }
    }
    votes
}

/// Chooses the size to assemble for torrent `id` (a magnet link still fetching) and
/// starts it when it changed, asking the peers that claim it. `stalled`: the current
/// attempt made no progress for the request timeout; it fails if another size is
/// claimed.
fn choose(s: &mut Session, now: Instant, id: TorrentId, stalled: bool) {
    let votes = claims(s, id);
    let Some(t) = s.torrents.get_mut(&id) else {
        return;
    };
    if t.meta.is_some() || t.layers.is_some() {
        return;
    }
    let mut current = t.fetch.as_ref().map(MetadataAssembler::total_size);
    if let (true, Some(size)) = (stalled, current) {
        if votes.keys().any(|k| *k != size) {
            t.meta_fetch.failed(size);
            t.fetch = None;
            current = None;
        }
    }
    let best = votes
        .iter()
        .min_by_key(|(size, ips)| {
            (
                t.meta_fetch.failures(**size),
                Reverse(ips.len()),
                Some(**size) != current,
                **size,
            )
        })
        .map(|(size, _)| *size);
    let Some(best) = best else { return };
    if Some(best) == current {
        return;
    }
    t.fetch = MetadataAssembler::new(t.info_hash, best, &ext_config())
        .ok()
        .map(|mut a| {
            a.set_single_source(t.meta_fetch.failures(best) > 0);
            a.set_v2(t.v2_link);
            a
        });
    t.meta_fetch.progress(now);
    let agreeing: Vec<ConnId> = s
        .conns
        .iter()
        .filter(|(_, c)| c.torrent == Some(id) && c.metadata_size == Some(best))
        .map(|(k, _)| *k)
        .collect();
    for k in agreeing {
        torrent::request_metadata(s, now, k);
    }
}

/// A peer told the size it claims (or a new peer came): re-chooses.
pub(super) fn claims_changed(s: &mut Session, now: Instant, id: TorrentId) {
    choose(s, now, id, false);
}

/// Once a second for a torrent fetching its metadata: peers come and go, and an
/// attempt may stall.
pub(super) fn tick(s: &mut Session, now: Instant, id: TorrentId) {
    if s.torrents.get(&id).is_some_and(|t| t.layers.is_some()) {
        super::layers::request(s, now, id);
        return;
    }
    let timeout = Duration::from_millis(ext_config().request_timeout_ms);
    let stalled = s.torrents.get(&id).is_some_and(|t| {
        t.fetch.as_ref().is_some_and(|f| {
            let quiet = now.since(t.meta_fetch.progress_at);
            quiet >= timeout || (f.is_idle() && quiet >= IDLE_STALL)
        })
    });
    choose(s, now, id, stalled);
}

/// The assembled metadata of `size` did not hash to the info-hash; `contributors`
/// sent its pieces.
pub(super) fn hash_mismatch(
    s: &mut Session,
    now: Instant,
    id: TorrentId,
    size: u32,
    contributors: &[u32],
) {
    let sole = match contributors {
        [k] => s.conns.get(&ConnId(*k)).map(|c| c.addr.ip()),
        _ => None,
    };
    if let Some(t) = s.torrents.get_mut(&id) {
        if sole.is_none() {
            t.meta_fetch.failed(size);
        }
        t.fetch = None;
    }
    if let Some(ip) = sole {
        // It alone sent metadata that is not the torrent's.
        s.ban_ip(id, ip, super::BanReason::SoleSender);
    }
    choose(s, now, id, false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_and_bounded() {
        let mut f = FetchState::default();
        f.failed(100);
        f.failed(100);
        assert_eq!(f.failures(100), 2);
        assert_eq!(f.failures(7), 0);
        for size in 0..MAX_TRIED_SIZES as u32 + 5 {
            f.failed(1000 + size);
            assert!(f.failures.len() <= MAX_TRIED_SIZES);
        }
        // The oldest went first.
        assert_eq!(f.failures(100), 0);
        assert_eq!(f.failures(1000 + MAX_TRIED_SIZES as u32 + 4), 1);
    }
}
