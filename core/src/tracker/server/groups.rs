//! Address groups across the whole tracker: how many peers and swarms each holds, and,
//! for the groups holding many, where their peers are, so that the tracker's global
//! caps can evict from the busiest group instead of refusing newcomers.
//!
//! A group is an IPv4 address or an IPv6 /64 (what one subscriber usually holds); an
//! IPv6 /48 (a site, which may hold many /64s) is counted too, for its own cap. Each is
//! known by the SipHash of its bytes under the tracker's secret key (4, 8 or 6 bytes:
//! the lengths keep the kinds apart), the hash the swarm indexes use: clients cannot
//! choose colliding groups, and a collision (2^-64 per pair) would only merge two
//! groups' counts.
//!
//! ```text
//!   counts: group hash -> (peers, swarms)         16 bytes per group holding a peer
//!   heavy:  group hash -> swarms it was seen in   groups of HEAVY peers or more only
//!   by_peers, by_swarms: (count, group hash)      the heavy groups, ordered
//! ```
//!
//! The places of a heavy group are the swarms it inserted or refreshed a peer in since
//! it became heavy, less those it left: a subset of its swarms, exact (every removal
//! goes through [`Groups::remove`]). Peers it held before it became heavy and never
//! announced again are not listed (fewer than [`HEAVY`]), so it can always be found
//! where it has been active. A group with no place listed, or fewer than `HEAVY / 2`
//! peers, is not heavy.

use alloc::collections::BTreeSet;

use hashbrown::HashTable;

use crate::ids::InfoHash;

/// Peers of one group, over all swarms, from which the swarms it is seen in are
/// listed. Honest groups rarely hold this many, so they cost their count only.
pub(super) const HEAVY: u32 = 32;

/// One group's figures.
#[derive(Clone, Copy, Debug)]
struct Count {
    key: u64,
    peers: u32,
    /// Swarms holding at least one of its peers (for IPv4 and /64 groups).
    swarms: u32,
}

/// A heavy group: where it was seen.
#[derive(Clone, Debug)]
struct Heavy {
    key: u64,
    /// An address of the group (to find its peers in a swarm).
    rep: super::swarm::Key,
    places: BTreeSet<InfoHash>,
}

/// The tracker-wide figures of every address group (see the module docs).
#[derive(Clone, Debug, Default)]
pub(super) struct Groups {
    counts: HashTable<Count>,
    heavy: HashTable<Heavy>,
    by_peers: BTreeSet<(u32, u64)>,
    by_swarms: BTreeSet<(u32, u64)>,
}

impl Groups {
    /// `(peers, swarms)` of the group `key`.
    pub(super) fn get(&self, key: u64) -> (u32, u32) {
        self.counts
            .find(key, |c| c.key == key)
            .map_or((0, 0), |c| (c.peers, c.swarms))
    }

    /// Groups known (holding at least one peer).
    pub(super) fn len(&self) -> usize {
        self.counts.len()
    }

    /// A peer of group `key` (whose address is `rep`) entered swarm `h`; `joined`
    /// when it is the group's first there. `listed`: an IPv4 or /64 group, whose
    /// places are kept when it is heavy (not a /48).
    pub(super) fn add(
        &mut self,
        key: u64,
        rep: &super::swarm::Key,
        h: &InfoHash,
        joined: bool,
        listed: bool,
    ) {
        let c = match self.counts.find_mut(key, |c| c.key == key) {
            Some(c) => c,
            None => self
                .counts
                .insert_unique(
                    key,
                    Count {
                        key,
                        peers: 0,
                        swarms: 0,
                    },
                    |c| c.key,
                )
                .into_mut(),
        };
        let before = (c.peers, c.swarms);
        c.peers = c.peers.saturating_add(1);
        c.swarms = c.swarms.saturating_add(u32::from(joined));
        let after = (c.peers, c.swarms);
        if listed {
            self.note(key, rep, h, before, after);
        }
    }

    /// A peer of group `key` announced again in swarm `h`.
    pub(super) fn refresh(&mut self, key: u64, rep: &super::swarm::Key, h: &InfoHash) {
        let now = self.get(key);
        self.note(key, rep, h, now, now);
    }

    /// Lists `h` among the places of a heavy group (making it heavy when it holds
    /// enough peers) and moves it in the orders, from `before` to `after`.
    fn note(
        &mut self,
        key: u64,
        rep: &super::swarm::Key,
        h: &InfoHash,
        before: (u32, u32),
        after: (u32, u32),
    ) {
        if let Some(e) = self.heavy.find_mut(key, |e| e.key == key) {
            e.places.insert(*h);
        } else if after.0 >= HEAVY {
            let mut places = BTreeSet::new();
            places.insert(*h);
            self.heavy.insert_unique(
                key,
                Heavy {
                    key,
                    rep: *rep,
                    places,
                },
                |e| e.key,
            );
        } else {
            return;
        }
        self.reorder(key, Some(before), Some(after));
    }

    fn reorder(&mut self, key: u64, before: Option<(u32, u32)>, after: Option<(u32, u32)>) {
        if before == after {
            return;
        }
        if let Some((p, s)) = before {
            self.by_peers.remove(&(p, key));
            self.by_swarms.remove(&(s, key));
        }
        if let Some((p, s)) = after {
            self.by_peers.insert((p, key));
            self.by_swarms.insert((s, key));
        }
    }

    /// A peer of group `key` left swarm `h`; `left` when it was the group's last
    /// there.
    pub(super) fn remove(&mut self, key: u64, h: &InfoHash, left: bool) {
        let Some(c) = self.counts.find_mut(key, |c| c.key == key) else {
            return;
        };
        let before = (c.peers, c.swarms);
        c.peers = c.peers.saturating_sub(1);
        c.swarms = c.swarms.saturating_sub(u32::from(left));
        let after = (c.peers, c.swarms);
        if c.peers == 0 {
            if let Ok(e) = self.counts.find_entry(key, |c| c.key == key) {
                e.remove();
            }
        }
        let Ok(mut e) = self.heavy.find_entry(key, |e| e.key == key) else {
            return;
        };
        if left {
            e.get_mut().places.remove(h);
        }
        if e.get().places.is_empty() || after.0 < HEAVY / 2 {
            e.remove();
            self.reorder(key, Some(before), None);
        } else {
            self.reorder(key, Some(before), Some(after));
        }
    }

    /// The heavy group holding the most peers: an address of it and a swarm where it
    /// has peers.
    pub(super) fn busiest_by_peers(&self) -> Option<(super::swarm::Key, InfoHash)> {
        let &(_, key) = self.by_peers.last()?;
        self.place(key)
    }

    /// The heavy group present in the most swarms, as [`Groups::busiest_by_peers`].
    pub(super) fn busiest_by_swarms(&self) -> Option<(super::swarm::Key, InfoHash)> {
        let &(_, key) = self.by_swarms.last()?;
        self.place(key)
    }

    fn place(&self, key: u64) -> Option<(super::swarm::Key, InfoHash)> {
        let e = self.heavy.find(key, |e| e.key == key)?;
        Some((e.rep, *e.places.first()?))
    }

    /// Forgets that the heavy group `key` is in swarm `h` (it was not found there).
    pub(super) fn unlist(&mut self, key: u64, h: &InfoHash) {
        let now = self.get(key);
        if let Ok(mut e) = self.heavy.find_entry(key, |e| e.key == key) {
            e.get_mut().places.remove(h);
            if e.get().places.is_empty() {
                e.remove();
                self.reorder(key, Some(now), None);
            }
        }
    }

    /// Every group's `(peers, swarms)`, for audits.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(super) fn each(&self) -> impl Iterator<Item = (u64, u32, u32)> + '_ {
        self.counts.iter().map(|c| (c.key, c.peers, c.swarms))
    }

    /// Whether the orders and the heavy table agree (for audits).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(super) fn consistent(&self) -> bool {
        self.heavy.len() == self.by_peers.len()
            && self.heavy.len() == self.by_swarms.len()
            && self.heavy.iter().all(|e| {
                let (p, s) = self.get(e.key);
                !e.places.is_empty()
                    && self.by_peers.contains(&(p, e.key))
                    && self.by_swarms.contains(&(s, e.key))
            })
    }

    /// Every listed place of every heavy group: an address of the group and a swarm
    /// (for audits).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(super) fn places(&self) -> impl Iterator<Item = (&super::swarm::Key, &InfoHash)> + '_ {
        self.heavy
            .iter()
            .flat_map(|e| e.places.iter().map(move |h| (&e.rep, h)))
    }
}
