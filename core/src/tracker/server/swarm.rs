//! The peers of one swarm, stored compactly: what the tracker's logic reads and no more.
//!
//! A peer is its compact address (BEP 23: IPv4 and port, 6 bytes; BEP 7: IPv6 and port,
//! 18 bytes), exactly the bytes a compact reply carries, and 4 bytes of expiry (whole
//! seconds; the top bit says the peer was learnt through sync). That is 10 bytes per
//! IPv4 peer and 22 per IPv6 peer, with no alignment padding. Whether a peer is a seed
//! is where it lives; `uploaded`, `downloaded` and the exact `left` are not kept (no
//! logic reads them). Peer ids are kept only when [`Ids::Kept`] is asked for, in vectors
//! beside the records, for non-compact replies.
//!
//! ```text
//!   Swarm
//!   ├── v4: Family<6>                  lists[0] leechers, lists[1] seeds: Vec<Rec<6>>
//!   │                                  index (beyond SMALL peers): compact address -> slot,
//!   │                                  and the groups of two peers or more by size
//!   ├── v6: Option<Box<Family<18>>>    the same, allocated at the first IPv6 peer
//!   └── downloaded, last_seen
//! ```
//!
//! Removal is `swap_remove` (the last peer of the list takes the hole; its index entry
//! is updated), so every operation is O(1) and a random sample is a few draws of
//! indices. The index is a `hashbrown` table of 4-byte slots keyed by SipHash, under a
//! secret key, of the peer's *address group*: its IPv4 address, or the /64 prefix of
//! its IPv6 address (what one subscriber usually holds). Clients cannot choose
//! colliding groups; the peers of one group share a hash, so a lookup walks them, and
//! the tracker's per-group cap ([`super::ServerConfig::max_peers_per_ip`]) keeps that
//! walk short while giving the count of a group at the same cost. Swarms of at most
//! [`SMALL`] peers have no index: a scan of a kilobyte is as fast.
//!
//! A full swarm evicts the peer that expires first in the group holding the most
//! peers. An indexed family keeps every group of two peers or more in an ordered set
//! `(peers, group hash)`, updated as peers come and go (one walk of the group, which
//! insertion and removal make anyway), so the busiest group is its last entry and
//! choosing the victim reads only that group's peers: O(log n), not a group count per
//! peer. Groups of one peer are not in the set (they cost nothing; in a large honest
//! swarm they are nearly all); when there is no group of two, the victim is the peer
//! that expires first among [`SAMPLE`] records read from a cursor that goes round the
//! family, so a large honest swarm under churn costs O(1) per newcomer as well.

use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use hashbrown::HashTable;

use crate::hash::siphash24;
use crate::ids::PeerId;
use crate::rng::Rng;

/// Swarms (per address family) up to this many peers are searched without an index:
/// a scan of at most 1,280 contiguous bytes costs about what hashing and probing do
/// (bench/tracker.sh's UDP rate is the same with 100-peer swarms either way), and the
/// index would add about 6.5 bytes per peer.
pub(super) const SMALL: usize = 128;
/// Records read to choose whom a full swarm evicts when no address holds two of its
/// peers (see [`Family::victim`]).
const SAMPLE: usize = 32;

/// Seconds on the tracker's clock (`Instant` in whole seconds); about 68 years fit in
/// the 31 bits a record keeps.
pub(super) type Secs = u32;

const REMOTE: u32 = 1 << 31;
/// A slot in the seeds list has this bit; the rest is the index in its list.
const SEED: u32 = 1 << 31;

/// The address group of a compact address: the IPv4 address (first 4 of 6 bytes) or
/// the /64 prefix of an IPv6 address (first 8 of 18 bytes). Per-group caps count
/// these, as one subscriber usually holds one IPv4 address or one IPv6 /64.
fn group<const N: usize>(addr: &[u8; N]) -> &[u8] {
    if N == 6 {
        &addr[..4]
    } else {
        &addr[..8]
    }
}

/// Whether peer ids are stored (for non-compact replies) or not.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Ids {
    Dropped,
    Kept,
}

/// A peer's key and compact form: its address as BEP 23 / BEP 7 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Key {
    V4([u8; 6]),
    V6([u8; 18]),
}

impl Key {
    /// The key of `addr`; IPv4-mapped IPv6 addresses are IPv4.
    pub(super) fn of(addr: SocketAddr) -> Self {
        let port = addr.port().to_be_bytes();
        match addr.ip().to_canonical() {
            IpAddr::V4(ip) => {
                let o = ip.octets();
                Self::V4([o[0], o[1], o[2], o[3], port[0], port[1]])
            }
            IpAddr::V6(ip) => {
                let mut k = [0u8; 18];
                k[..16].copy_from_slice(&ip.octets());
                k[16..].copy_from_slice(&port);
                Self::V6(k)
            }
        }
    }

    /// The address group (IPv4 address, IPv6 /64) as the per-group caps count it.
    pub(super) fn group(&self) -> &[u8] {
        match self {
            Self::V4(k) => group(k),
            Self::V6(k) => group(k),
        }
    }

    /// The IPv6 /48 of the address (`None` for IPv4): a site, which may hold many /64s.
    pub(super) fn group48(&self) -> Option<&[u8]> {
        match self {
            Self::V4(_) => None,
            Self::V6(k) => Some(&k[..6]),
        }
    }

    /// The key of 6 or 18 compact bytes (any other length is taken as IPv6).
    fn of_compact<const N: usize>(a: &[u8; N]) -> Self {
        if N == 6 {
            let mut k = [0u8; 6];
            k.copy_from_slice(&a[..6]);
            Self::V4(k)
        } else {
            let mut k = [0u8; 18];
            let n = N.min(18);
            k[..n].copy_from_slice(&a[..n]);
            Self::V6(k)
        }
    }

    #[cfg(test)]
    fn addr(&self) -> SocketAddr {
        compact_addr(match self {
            Self::V4(k) => k,
            Self::V6(k) => k,
        })
    }

    const fn is_v6(&self) -> bool {
        matches!(self, Self::V6(_))
    }
}

/// The socket address of 6 or 18 compact bytes.
pub(super) fn compact_addr(b: &[u8]) -> SocketAddr {
    match *b {
        [a, b, c, d, p0, p1] => SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(a, b, c, d),
            u16::from_be_bytes([p0, p1]),
        )),
        _ => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&b[..16]);
            let port = u16::from_be_bytes([b[16], b[17]]);
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
        }
    }
}

/// Which address families a reply may carry: UDP replies carry the requester's only,
/// HTTP replies both (`peers` and `peers6`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Families {
    Both,
    SameAs,
}

/// One stored peer (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(super) struct Rec<const N: usize> {
    addr: [u8; N],
    meta: [u8; 4],
}

impl<const N: usize> Rec<N> {
    fn new(addr: [u8; N], expires: Secs, remote: bool) -> Self {
        let meta = expires.min(REMOTE - 1) | if remote { REMOTE } else { 0 };
        Self {
            addr,
            meta: meta.to_le_bytes(),
        }
    }

    pub(super) const fn expires(&self) -> Secs {
        u32::from_le_bytes(self.meta) & !REMOTE
    }

    pub(super) const fn remote(&self) -> bool {
        u32::from_le_bytes(self.meta) & REMOTE != 0
    }
}

/// The peers of one address family.
#[derive(Clone, Debug, Default)]
struct Family<const N: usize> {
    /// `[leechers, seeds]`.
    lists: [Vec<Rec<N>>; 2],
    /// Beside `lists` with [`Ids::Kept`], `None` otherwise.
    ids: Option<Box<[Vec<PeerId>; 2]>>,
    /// Built beyond [`SMALL`] peers and dropped below half of it. Boxed, as `ids`, to
    /// keep small swarms small: most swarms of a public tracker have a few peers, and
    /// every byte here is paid per swarm.
    index: Option<Box<Index>>,
}

/// The index of a large family.
#[derive(Clone, Debug, Default)]
struct Index {
    /// Address -> slot, hashed by address group.
    slots: HashTable<u32>,
    /// `(peers, group hash)` of every group holding two peers or more, kept as peers
    /// come and go: the busiest group is the last entry, found in O(log n) when the
    /// swarm is full. Groups of one peer are left out (in a large honest swarm nearly
    /// every group), so this costs nothing until some address holds several entries.
    multi: BTreeSet<(u32, u64)>,
    /// Where the next sample of [`Family::victim`] starts, over the leechers then the
    /// seeds.
    cursor: u32,
}

impl Index {
    /// Moves a group from `before` to `after` peers in `multi`.
    fn recount(&mut self, h: u64, before: usize, after: usize) {
        if before >= 2 {
            self.multi.remove(&(before as u32, h));
        }
        if after >= 2 {
            self.multi.insert((after as u32, h));
        }
    }
}

const fn slot(seed: bool, i: usize) -> u32 {
    (i as u32) | if seed { SEED } else { 0 }
}

const fn unslot(s: u32) -> (bool, usize) {
    (s & SEED != 0, (s & !SEED) as usize)
}

impl<const N: usize> Family<N> {
    fn len(&self) -> usize {
        self.lists[0].len() + self.lists[1].len()
    }

    fn rec(&self, s: u32) -> Option<&Rec<N>> {
        let (seed, i) = unslot(s);
        self.lists[usize::from(seed)].get(i)
    }

    fn id(&self, s: u32) -> Option<&PeerId> {
        let (seed, i) = unslot(s);
        self.ids.as_ref()?[usize::from(seed)].get(i)
    }

    fn find(&self, key: &[u8; 16], addr: &[u8; N]) -> Option<u32> {
        let Some(index) = &self.index else {
            return (0..2).find_map(|l| {
                let i = self.lists[l].iter().position(|r| r.addr == *addr)?;
                Some(slot(l == 1, i))
            });
        };
        let lists = &self.lists;
        index
            .slots
            .find(siphash24(key, group(addr)), |&s| {
                let (seed, i) = unslot(s);
                lists[usize::from(seed)]
                    .get(i)
                    .is_some_and(|r| r.addr == *addr)
            })
            .copied()
    }

    fn insert(&mut self, key: &[u8; 16], rec: Rec<N>, id: Option<PeerId>, seed: bool) {
        let l = usize::from(seed);
        let s = slot(seed, self.lists[l].len());
        self.lists[l].push(rec);
        if let Some(id) = id {
            self.ids.get_or_insert_with(Box::default)[l].push(id);
        }
        if let Some(index) = &mut self.index {
            let lists = &self.lists;
            let h = siphash24(key, group(&rec.addr));
            index.slots.insert_unique(h, s, |&s| rehash(key, lists, s));
            let n = self.group_count(key, &rec.addr);
            if let Some(index) = &mut self.index {
                index.recount(h, n - 1, n);
            }
        } else if self.len() > SMALL {
            self.build_index(key);
        }
    }

    fn build_index(&mut self, key: &[u8; 16]) {
        let mut slots = HashTable::with_capacity(self.len());
        for (l, list) in self.lists.iter().enumerate() {
            for (i, r) in list.iter().enumerate() {
                let lists = &self.lists;
                slots.insert_unique(siphash24(key, group(&r.addr)), slot(l == 1, i), |&s| {
                    rehash(key, lists, s)
                });
            }
        }
        self.index = Some(Box::new(Index {
            slots,
            multi: BTreeSet::new(),
            cursor: 0,
        }));
        let mut multi = BTreeSet::new();
        for r in self.lists.iter().flatten() {
            let n = self.group_count(key, &r.addr);
            if n >= 2 {
                multi.insert((n as u32, siphash24(key, group(&r.addr))));
            }
        }
        if let Some(index) = &mut self.index {
            index.multi = multi;
        }
    }

    /// Removes the peer at `s`; the last of its list moves into the hole.
    fn remove(&mut self, key: &[u8; 16], s: u32) -> Option<Rec<N>> {
        let (seed, i) = unslot(s);
        let l = usize::from(seed);
        let last = self.lists[l].len().checked_sub(1)?;
        if i > last {
            return None;
        }
        let gone = self.lists[l].swap_remove(i);
        if let Some(ids) = self.ids.as_mut().filter(|ids| i < ids[l].len()) {
            ids[l].swap_remove(i);
        }
        if self.len() <= SMALL / 2 {
            self.index = None;
        }
        let Some(index) = &mut self.index else {
            return Some(gone);
        };
        let h = siphash24(key, group(&gone.addr));
        if let Ok(e) = index.slots.find_entry(h, |&x| x == s) {
            e.remove();
        }
        if i < last {
            let moved = self.lists[l][i].addr;
            let from = slot(seed, last);
            if let Some(x) = index
                .slots
                .find_mut(siphash24(key, group(&moved)), |&x| x == from)
            {
                *x = s;
            }
        }
        let n = self.group_count(key, &gone.addr);
        if let Some(index) = &mut self.index {
            index.recount(h, n + 1, n);
        }
        Some(gone)
    }

    /// Drops the peers expired at `now` and pushes their keys into `gone`; returns
    /// how many.
    fn expire(&mut self, key: &[u8; 16], now: Secs, gone: &mut Vec<Key>) -> usize {
        let mut n = 0;
        for seed in [false, true] {
            let mut i = 0;
            while i < self.lists[usize::from(seed)].len() {
                if self.lists[usize::from(seed)][i].expires() <= now {
                    if let Some(r) = self.remove(key, slot(seed, i)) {
                        gone.push(Key::of_compact(&r.addr));
                    }
                    n += 1;
                } else {
                    i += 1;
                }
            }
        }
        n
    }

    /// Calls `f` with the slot and record of every peer in the group of `addr`.
    fn each_in_group(&self, key: &[u8; 16], addr: &[u8; N], mut f: impl FnMut(u32, &Rec<N>)) {
        let g = group(addr);
        match &self.index {
            None => {
                for (l, list) in self.lists.iter().enumerate() {
                    for (i, r) in list.iter().enumerate() {
                        if group(&r.addr) == g {
                            f(slot(l == 1, i), r);
                        }
                    }
                }
            }
            Some(index) => {
                for &s in index.slots.iter_hash(siphash24(key, g)) {
                    if let Some(r) = self.rec(s).filter(|r| group(&r.addr) == g) {
                        f(s, r);
                    }
                }
            }
        }
    }

    /// How many peers share the group of `addr`.
    fn group_count(&self, key: &[u8; 16], addr: &[u8; N]) -> usize {
        let mut n = 0;
        self.each_in_group(key, addr, |_, _| n += 1);
        n
    }

    /// The peer of the group of `addr` that expires first, and when.
    fn first_in_group(&self, key: &[u8; 16], addr: &[u8; N]) -> Option<(Secs, u32)> {
        let mut best: Option<(Secs, u32)> = None;
        self.each_in_group(key, addr, |s, r| {
            if best.is_none_or(|(t, _)| r.expires() < t) {
                best = Some((r.expires(), s));
            }
        });
        best
    }

    /// The least useful peer when the swarm is full: `(group size, expiry, slot)` of
    /// the peer that expires first in the group holding the most peers. Indexed, the
    /// busiest group is the last of `multi` and only its peers are read (O(log n) plus
    /// the group's size); with no group of two, it is the peer that expires first of
    /// [`SAMPLE`] read from the cursor on, which then moves past them (every peer is
    /// looked at once in `len / SAMPLE` evictions). Small families are scanned.
    /// `work` counts the records read.
    fn victim(
        &mut self,
        key: &[u8; 16],
        stop_at: usize,
        work: &mut u64,
    ) -> Option<(usize, Secs, u32)> {
        let Some(index) = &self.index else {
            return self.busiest(key, stop_at, work);
        };
        if let Some(&(n, h)) = index.multi.last() {
            if let Some((t, s)) = self.first_with_hash(key, index, h, work) {
                return Some((n as usize, t, s));
            }
        }
        let (leechers, len) = (self.lists[0].len(), self.len());
        if len == 0 {
            return None;
        }
        let start = index.cursor as usize % len;
        let mut best: Option<(Secs, u32)> = None;
        for j in 0..SAMPLE.min(len) {
            let i = (start + j) % len;
            let s = if i < leechers {
                slot(false, i)
            } else {
                slot(true, i - leechers)
            };
            *work += 1;
            if let Some(r) = self.rec(s) {
                if best.is_none_or(|(t, _)| r.expires() < t) {
                    best = Some((r.expires(), s));
                }
            }
        }
        if let Some(index) = &mut self.index {
            index.cursor = ((start + SAMPLE) % len) as u32;
        }
        best.map(|(t, s)| (1, t, s))
    }

    /// The peer that expires first in the group whose hash is `h` (the first group of
    /// that hash met, should two share it).
    fn first_with_hash(
        &self,
        key: &[u8; 16],
        index: &Index,
        h: u64,
        work: &mut u64,
    ) -> Option<(Secs, u32)> {
        let mut g: Option<&[u8]> = None;
        let mut best: Option<(Secs, u32)> = None;
        for &s in index.slots.iter_hash(h) {
            *work += 1;
            let Some(r) = self.rec(s) else { continue };
            let rg = group(&r.addr);
            match g {
                Some(g) if g != rg => continue,
                Some(_) => {}
                None if siphash24(key, rg) != h => continue,
                None => g = Some(rg),
            }
            if best.is_none_or(|(t, _)| r.expires() < t) {
                best = Some((r.expires(), s));
            }
        }
        best
    }

    /// The peer whose group holds the most peers, the one that expires first among
    /// those: `(group size, expiry, slot)`, by a scan of every peer (for families of
    /// at most [`SMALL`] peers). The scan stops early at a group of `stop_at` peers (no
    /// group may hold more), taking that group's first to expire.
    fn busiest(
        &self,
        key: &[u8; 16],
        stop_at: usize,
        work: &mut u64,
    ) -> Option<(usize, Secs, u32)> {
        let mut best: Option<(usize, Secs, u32)> = None;
        for (l, list) in self.lists.iter().enumerate() {
            for (i, r) in list.iter().enumerate() {
                *work += 1 + self.len() as u64;
                let n = self.group_count(key, &r.addr);
                let better = best.is_none_or(|(bn, bt, _)| n > bn || (n == bn && r.expires() < bt));
                if better {
                    best = Some((n, r.expires(), slot(l == 1, i)));
                }
                if n >= stop_at {
                    let (t, s) = self.first_in_group(key, &r.addr)?;
                    return Some((n, t, s));
                }
            }
        }
        best
    }

    /// The peer that expires first, and when.
    fn first_to_expire(&self, work: &mut u64) -> Option<(Secs, u32)> {
        *work += self.len() as u64;
        (0..2)
            .flat_map(|l| {
                self.lists[l]
                    .iter()
                    .enumerate()
                    .map(move |(i, r)| (r.expires(), slot(l == 1, i)))
            })
            .min_by_key(|(t, _)| *t)
    }
}

fn rehash<const N: usize>(key: &[u8; 16], lists: &[Vec<Rec<N>>; 2], s: u32) -> u64 {
    let (seed, i) = unslot(s);
    lists[usize::from(seed)]
        .get(i)
        .map_or(0, |r| siphash24(key, group(&r.addr)))
}

/// Where a peer lives: its family (IPv6 or not) and slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Place {
    v6: bool,
    slot: u32,
}

impl Place {
    pub(super) const fn is_seed(self) -> bool {
        self.slot & SEED != 0
    }
}

/// A peer as read back (for sync lists and sweeps).
#[derive(Clone, Copy, Debug)]
pub(super) struct PeerInfo {
    pub(super) addr: SocketAddr,
    pub(super) seed: bool,
    pub(super) expires: Secs,
    pub(super) remote: bool,
}

/// The peers of one torrent, its completed-download count, and when it was last
/// announced to.
#[derive(Clone, Debug, Default)]
pub(super) struct Swarm {
    v4: Family<6>,
    v6: Option<Box<Family<18>>>,
    pub(super) downloaded: u32,
    /// The last announce (or sync entry, or restore) on the tracker's clock: an empty
    /// swarm keeps its `downloaded` count for a while after it.
    pub(super) last_seen: Secs,
}

impl Swarm {
    /// An empty swarm last announced to at `last_seen`.
    pub(super) fn new(last_seen: Secs) -> Self {
        Self {
            last_seen,
            ..Self::default()
        }
    }

    pub(super) fn len(&self) -> usize {
        self.v4.len() + self.v6.as_ref().map_or(0, |f| f.len())
    }

    /// `(seeds, leechers)`.
    pub(super) fn counts(&self) -> (usize, usize) {
        let (mut s, mut l) = (self.v4.lists[1].len(), self.v4.lists[0].len());
        if let Some(f) = &self.v6 {
            s += f.lists[1].len();
            l += f.lists[0].len();
        }
        (s, l)
    }

    pub(super) fn find(&self, key: &[u8; 16], k: &Key) -> Option<Place> {
        let slot = match k {
            Key::V4(a) => self.v4.find(key, a)?,
            Key::V6(a) => self.v6.as_ref()?.find(key, a)?,
        };
        Some(Place {
            v6: k.is_v6(),
            slot,
        })
    }

    /// Expiry and origin of the peer at `p`.
    pub(super) fn meta(&self, p: Place) -> Option<(Secs, bool, Option<PeerId>)> {
        let (e, r, id) = if p.v6 {
            let f = self.v6.as_ref()?;
            let r = f.rec(p.slot)?;
            (r.expires(), r.remote(), f.id(p.slot).copied())
        } else {
            let r = self.v4.rec(p.slot)?;
            (r.expires(), r.remote(), self.v4.id(p.slot).copied())
        };
        Some((e, r, id))
    }

    /// Adds the peer `k` (known absent) as a seed or a leecher. With [`Ids::Kept`],
    /// `id` is stored (zeros when unknown); otherwise it is ignored.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert(
        &mut self,
        key: &[u8; 16],
        k: &Key,
        expires: Secs,
        remote: bool,
        seed: bool,
        ids: Ids,
        id: PeerId,
    ) {
        let id = (ids == Ids::Kept).then_some(id);
        match k {
            Key::V4(a) => self.v4.insert(key, Rec::new(*a, expires, remote), id, seed),
            Key::V6(a) => self.v6.get_or_insert_with(Box::default).insert(
                key,
                Rec::new(*a, expires, remote),
                id,
                seed,
            ),
        }
    }

    /// Refreshes the peer at `p` in place (same list).
    pub(super) fn update(&mut self, p: Place, expires: Secs, remote: bool, id: PeerId) {
        let (seed, i) = unslot(p.slot);
        let l = usize::from(seed);
        if p.v6 {
            if let Some(f) = self.v6.as_mut() {
                refresh(f, l, i, expires, remote, id);
            }
        } else {
            refresh(&mut self.v4, l, i, expires, remote, id);
        }
    }

    pub(super) fn remove(&mut self, key: &[u8; 16], p: Place) -> bool {
        if p.v6 {
            let Some(f) = self.v6.as_mut() else {
                return false;
            };
            let gone = f.remove(key, p.slot).is_some();
            if f.len() == 0 {
                self.v6 = None;
            }
            gone
        } else {
            self.v4.remove(key, p.slot).is_some()
        }
    }

    /// Drops expired peers, pushing their keys into `gone`; returns how many.
    pub(super) fn expire(&mut self, key: &[u8; 16], now: Secs, gone: &mut Vec<Key>) -> usize {
        let mut n = self.v4.expire(key, now, gone);
        if let Some(f) = self.v6.as_mut() {
            n += f.expire(key, now, gone);
            if f.len() == 0 {
                self.v6 = None;
            }
        }
        n
    }

    /// How many peers share the address group (IPv4 address, IPv6 /64) of `k`.
    pub(super) fn group_count(&self, key: &[u8; 16], k: &Key) -> usize {
        match k {
            Key::V4(a) => self.v4.group_count(key, a),
            Key::V6(a) => self.v6.as_ref().map_or(0, |f| f.group_count(key, a)),
        }
    }

    /// The peer of the address group of `k` that expires first.
    pub(super) fn first_in_group(&self, key: &[u8; 16], k: &Key) -> Option<Place> {
        let (v6, (_, slot)) = match k {
            Key::V4(a) => (false, self.v4.first_in_group(key, a)?),
            Key::V6(a) => (true, self.v6.as_ref()?.first_in_group(key, a)?),
        };
        Some(Place { v6, slot })
    }

    /// The key of the peer at `p`.
    pub(super) fn key_at(&self, p: Place) -> Option<Key> {
        Some(if p.v6 {
            Key::V6(self.v6.as_ref()?.rec(p.slot)?.addr)
        } else {
            Key::V4(self.v4.rec(p.slot)?.addr)
        })
    }

    /// The least useful peer when the swarm is full: the one that expires first in the
    /// address group holding the most peers (with every group of one peer, simply the
    /// one that expires first, of a sample in large families; among groups holding as
    /// many, the first in the order of their keyed hashes, which no client can choose). `max_per_group` is the
    /// per-group cap, where the scan of a small family may stop. Large families keep
    /// their groups of two or more ordered by size (see [`Index`]), so the choice reads
    /// the busiest group's peers only; `work` counts the peer records read.
    pub(super) fn eviction_victim(
        &mut self,
        key: &[u8; 16],
        max_per_group: usize,
        work: &mut u64,
    ) -> Option<Place> {
        let a = self
            .v4
            .victim(key, max_per_group, work)
            .map(|(n, t, s)| (n, t, false, s));
        let b = self
            .v6
            .as_mut()
            .and_then(|f| f.victim(key, max_per_group, work))
            .map(|(n, t, s)| (n, t, true, s));
        let (_, _, v6, slot) = match (a, b) {
            (Some(a), Some(b)) => {
                if b.0 > a.0 || (b.0 == a.0 && b.1 < a.1) {
                    b
                } else {
                    a
                }
            }
            (a, b) => a.or(b)?,
        };
        Some(Place { v6, slot })
    }

    /// The peer that expires first (the least recently announced, for local peers).
    pub(super) fn first_to_expire(&self, work: &mut u64) -> Option<Place> {
        let a = self.v4.first_to_expire(work).map(|(t, s)| (t, false, s));
        let b = self
            .v6
            .as_ref()
            .and_then(|f| f.first_to_expire(work))
            .map(|(t, s)| (t, true, s));
        let (_, v6, slot) = match (a, b) {
            (Some(a), Some(b)) => {
                if b.0 < a.0 {
                    b
                } else {
                    a
                }
            }
            (a, b) => a.or(b)?,
        };
        Some(Place { v6, slot })
    }

    /// Every peer, for sync lists.
    pub(super) fn peers(&self) -> impl Iterator<Item = PeerInfo> + '_ {
        fn each<const N: usize>(f: &Family<N>) -> impl Iterator<Item = PeerInfo> + '_ {
            (0..2).flat_map(move |l| {
                f.lists[l].iter().map(move |r| PeerInfo {
                    addr: compact_addr(&r.addr),
                    seed: l == 1,
                    expires: r.expires(),
                    remote: r.remote(),
                })
            })
        }
        each(&self.v4).chain(self.v6.iter().flat_map(|f| each(f)))
    }

    /// Picks up to `want` peers at random for the peer `me` and hands each to `emit`
    /// (compact address, peer id if kept): seeds get leechers only, leechers get both,
    /// never `me` itself. Floyd's sampling over the concatenated lists: `want` draws,
    /// uniform without replacement; `picked` is scratch space.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn select(
        &self,
        me: Option<Place>,
        me_v6: bool,
        me_seed: bool,
        families: Families,
        want: usize,
        rng: &mut Rng,
        picked: &mut Vec<u32>,
        mut emit: impl FnMut(&[u8], Option<&PeerId>),
    ) {
        // Segments of the pool: (v6, list), in a fixed order.
        let mut segs = [(false, 0usize, 0usize); 4];
        let mut nsegs = 0;
        let mut pool = 0usize;
        let mut mine = None;
        for v6 in [false, true] {
            if families == Families::SameAs && v6 != me_v6 {
                continue;
            }
            for l in [0, 1] {
                if me_seed && l == 1 {
                    continue;
                }
                let len = if v6 {
                    self.v6.as_ref().map_or(0, |f| f.lists[l].len())
                } else {
                    self.v4.lists[l].len()
                };
                if let Some(p) = me.filter(|p| p.v6 == v6 && usize::from(p.is_seed()) == l) {
                    mine = Some(pool + unslot(p.slot).1);
                }
                segs[nsegs] = (v6, l, len);
                nsegs += 1;
                pool += len;
            }
        }
        let segs = &segs[..nsegs];
        let mut at = |mut i: usize| {
            for &(v6, l, len) in segs {
                if i < len {
                    let s = slot(l == 1, i);
                    if v6 {
                        if let Some(f) = self.v6.as_deref() {
                            if let Some(r) = f.rec(s) {
                                emit(&r.addr, f.id(s));
                            }
                        }
                    } else if let Some(r) = self.v4.rec(s) {
                        emit(&r.addr, self.v4.id(s));
                    }
                    return;
                }
                i -= len;
            }
        };
        let others = pool - usize::from(mine.is_some());
        if others <= want {
            for i in (0..pool).filter(|i| Some(*i) != mine) {
                at(i);
            }
            return;
        }
        // Floyd: for j in n-k..n, pick t in 0..=j; take t unless taken, else take j.
        // Sampling over `others` indices and skipping `mine` by mapping i >= mine to i + 1.
        picked.clear();
        for j in (others - want)..others {
            let t = rng.below(j as u64 + 1) as u32;
            let v = if picked.contains(&t) { j as u32 } else { t };
            picked.push(v);
        }
        for &i in picked.iter() {
            let i = i as usize;
            at(match mine {
                Some(m) if i >= m => i + 1,
                _ => i,
            });
        }
    }
}

fn refresh<const N: usize>(
    f: &mut Family<N>,
    l: usize,
    i: usize,
    expires: Secs,
    remote: bool,
    id: PeerId,
) {
    if let Some(r) = f.lists[l].get_mut(i) {
        *r = Rec::new(r.addr, expires, remote);
    }
    if let Some(x) = f.ids.as_mut().and_then(|ids| ids[l].get_mut(i)) {
        *x = id;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: [u8; 16] = [7; 16];

    fn v4(port: u16) -> Key {
        Key::of(SocketAddr::from(([10, 0, 0, 1], port)))
    }

    fn v6(port: u16) -> Key {
        Key::of(SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], port)))
    }

    /// Every peer is found at the place its list says, index or not.
    fn check(s: &Swarm) {
        for p in s.peers() {
            let k = Key::of(p.addr);
            let at = s.find(&K, &k).expect("indexed");
            assert_eq!(at.is_seed(), p.seed, "{}", p.addr);
        }
    }

    #[test]
    fn records_are_compact() {
        assert_eq!(size_of::<Rec<6>>(), 10);
        assert!(size_of::<Swarm>() <= 80, "{}", size_of::<Swarm>());
        assert_eq!(size_of::<Rec<18>>(), 22);
        let r = Rec::new([1; 6], 12345, true);
        assert_eq!((r.expires(), r.remote()), (12345, true));
        let r = Rec::new([1; 6], u32::MAX, false);
        assert_eq!((r.expires(), r.remote()), (REMOTE - 1, false));
        let a: SocketAddr = "[::ffff:10.1.2.3]:80".parse().expect("addr");
        assert_eq!(Key::of(a), Key::V4([10, 1, 2, 3, 0, 80]));
        assert_eq!(
            Key::of(a).addr(),
            "10.1.2.3:80".parse::<SocketAddr>().expect("a")
        );
        assert_eq!(v6(9).addr().port(), 9);
    }

    #[test]
    fn index_follows_swap_removes_across_the_small_threshold() {
        let mut s = Swarm::default();
        let n = 3 * SMALL as u16;
        for p in 1..=n {
            let k = if p % 5 == 0 { v6(p) } else { v4(p) };
            s.insert(
                &K,
                &k,
                100 + u32::from(p),
                false,
                p % 3 == 0,
                Ids::Kept,
                PeerId([p as u8; 20]),
            );
            check(&s);
        }
        assert!(s.v4.index.is_some(), "indexed past SMALL");
        assert_eq!(s.len(), usize::from(n));
        // Remove from the front, the middle and the back; every survivor stays found.
        for p in (1..=n).step_by(2) {
            let k = if p % 5 == 0 { v6(p) } else { v4(p) };
            let at = s.find(&K, &k).expect("present");
            assert_eq!(s.meta(at).map(|m| m.2), Some(Some(PeerId([p as u8; 20]))));
            assert!(s.remove(&K, at));
            assert_eq!(s.find(&K, &k), None);
            check(&s);
        }
        // Expire everything up to 100 + 2n/3: the rest stays, indexes and ids agree.
        let cut = 100 + 2 * u32::from(n) / 3;
        let mut keys = Vec::new();
        let gone = s.expire(&K, cut, &mut keys);
        assert_eq!(keys.len(), gone);
        assert!(keys.iter().all(|k| s.find(&K, k).is_none()));
        assert!(gone > 0);
        assert!(s.peers().all(|p| p.expires > cut));
        check(&s);
        for p in s.peers() {
            let at = s.find(&K, &Key::of(p.addr)).expect("present");
            let port = p.addr.port();
            assert_eq!(s.meta(at).and_then(|m| m.2), Some(PeerId([port as u8; 20])));
        }
        assert!(s.v4.index.is_none(), "dropped below SMALL / 2");
        let left = s.len();
        assert_eq!(s.expire(&K, u32::MAX, &mut keys), left);
        assert!(s.v6.is_none(), "the IPv6 family is freed when empty");
    }

    #[test]
    fn selection_respects_families_and_seeds() {
        let mut s = Swarm::default();
        for p in 1..=4 {
            s.insert(&K, &v4(p), 9, false, p > 2, Ids::Dropped, PeerId::default());
            s.insert(&K, &v6(p), 9, false, p > 2, Ids::Dropped, PeerId::default());
        }
        let me = s.find(&K, &v4(1));
        let mut rng = Rng::new(1);
        let mut picked = Vec::new();
        let mut got = Vec::new();
        s.select(
            me,
            false,
            false,
            Families::SameAs,
            50,
            &mut rng,
            &mut picked,
            |a, id| {
                assert!(id.is_none());
                got.push(compact_addr(a));
            },
        );
        got.sort();
        let want: Vec<SocketAddr> = [2, 3, 4].iter().map(|&p| v4(p).addr()).collect();
        assert_eq!(got, want);
        got.clear();
        let me = s.find(&K, &v6(3));
        s.select(
            me,
            true,
            true,
            Families::Both,
            50,
            &mut rng,
            &mut picked,
            |a, _| {
                got.push(compact_addr(a));
            },
        );
        got.sort();
        let want: Vec<SocketAddr> = [v4(1), v4(2), v6(1), v6(2)].iter().map(Key::addr).collect();
        assert_eq!(got, want, "a seed gets leechers of both families only");
    }
}
