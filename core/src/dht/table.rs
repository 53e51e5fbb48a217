//! The routing table (BEP 5 "Routing Table"): k-buckets over the 160-bit id space.
//!
//! ```text
//!  bucket 0      bucket 1      ...   bucket n-1 (holds our own id)
//!  first bit     first bit same,     everything sharing >= n-1 bits with us;
//!  differs       second differs      the only bucket that splits when full
//! ```
//!
//! A node is *good* if it replied to us in the last 15 minutes, or replied once and
//! queried us in the last 15 minutes; *bad* after [`TableConfig::bad_after`] queries
//! in a row went unanswered; *questionable* otherwise. A full bucket that cannot split
//! replaces a bad node; if there is none, the newcomer waits in the bucket's
//! replacement cache and the least recently seen questionable node should be pinged
//! ([`Insert::Full`]): when it fails, the best replacement takes its place.
//!
//! Memory is bounded: at most 160 buckets of `k` nodes and `k` replacements.
//! No two entries share an address, and our own id is never stored.

use super::krpc::{NodeId, NodeInfo};
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use alloc::vec::Vec;
use core::net::SocketAddr;

/// How long a reply keeps a node good (BEP 5: 15 minutes).
pub const GOOD_FOR: Duration = Duration::from_secs(15 * 60);

/// Routing table settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableConfig {
    /// Nodes per bucket (BEP 5: 8).
    pub k: usize,
    /// Failed queries in a row after which a node is bad. Default 2.
    pub bad_after: u8,
    /// Replacement cache entries per bucket. Default 8.
    pub replacements: usize,
    /// Most buckets (at most 160). Default 160.
    pub max_buckets: usize,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            k: 8,
            bad_after: 2,
            replacements: 8,
            max_buckets: 160,
        }
    }
}

/// A node's liveness.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Status {
    /// Replied recently.
    Good,
    /// Not heard from recently, or never replied.
    Questionable,
    /// Failed to reply several times in a row.
    Bad,
}

/// A routing table entry.
#[derive(Clone, Copy, Debug)]
pub struct Node {
    /// Id and address.
    pub info: NodeInfo,
    /// When it last replied to us.
    pub last_reply: Option<Instant>,
    /// When it last queried us.
    pub last_query: Option<Instant>,
    /// When we last pinged it to check it.
    pub last_ping: Option<Instant>,
    /// Unanswered queries in a row.
    pub fails: u8,
}

impl Node {
    fn new(info: NodeInfo) -> Self {
        Self {
            info,
            last_reply: None,
            last_query: None,
            last_ping: None,
            fails: 0,
        }
    }
    /// Its liveness at `now`.
    pub fn status(&self, now: Instant, bad_after: u8) -> Status {
        let recent = |t: Option<Instant>| t.is_some_and(|t| now.since(t) < GOOD_FOR);
        if self.fails >= bad_after {
            Status::Bad
        } else if recent(self.last_reply) || (self.last_reply.is_some() && recent(self.last_query))
        {
            Status::Good
        } else {
            Status::Questionable
        }
    }
    fn last_seen(&self) -> Option<Instant> {
        self.last_reply.max(self.last_query)
    }
}

#[derive(Clone, Debug)]
struct Bucket {
    nodes: Vec<Node>,
    replacements: Vec<Node>,
    changed: Instant,
}

/// How a contact was made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Contact {
    /// It answered one of our queries.
    Replied,
    /// It sent us a query.
    Queried,
}

/// What [`RoutingTable::heard_from`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Insert {
    /// Already there: liveness updated.
    Updated,
    /// Added to a bucket.
    Added,
    /// The bucket is full; the node waits in the replacement cache. `ping` is a
    /// questionable node of that bucket the caller should ping.
    Full {
        /// The node to ping, if any needs it.
        ping: Option<NodeInfo>,
    },
    /// Refused: our own id, or an address or id already used by another entry.
    Ignored,
}

/// The k-bucket routing table.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    own: NodeId,
    cfg: TableConfig,
    buckets: Vec<Bucket>,
}

impl RoutingTable {
    /// An empty table around our id.
    pub fn new(own: NodeId, cfg: TableConfig, now: Instant) -> Self {
        let buckets = alloc::vec![Bucket {
            nodes: Vec::new(),
            replacements: Vec::new(),
            changed: now,
        }];
        Self {
            own,
            cfg: TableConfig {
                k: cfg.k.max(1),
                max_buckets: cfg.max_buckets.clamp(1, 160),
                bad_after: cfg.bad_after.max(1),
                ..cfg
            },
            buckets,
        }
    }
    /// Our id.
    pub fn own_id(&self) -> NodeId {
        self.own
    }
    /// Number of buckets.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }
    /// Nodes in buckets (replacements not counted).
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len()).sum()
    }
    /// Whether no bucket holds a node.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Nodes that are good at `now`.
    pub fn good_count(&self, now: Instant) -> usize {
        self.nodes()
            .filter(|n| n.status(now, self.cfg.bad_after) == Status::Good)
            .count()
    }
    /// Entries in replacement caches.
    pub fn replacement_count(&self) -> usize {
        self.buckets.iter().map(|b| b.replacements.len()).sum()
    }
    /// Every node in a bucket.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        self.buckets.iter().flat_map(|b| b.nodes.iter())
    }
    /// The entry for `id`, if any.
    pub fn get(&self, id: &NodeId) -> Option<&Node> {
        let b = &self.buckets[self.bucket_of(id)];
        b.nodes.iter().find(|n| n.info.id == *id)
    }

    fn bucket_of(&self, id: &NodeId) -> usize {
        self.own
            .common_prefix(id)
            .min(self.buckets.len().saturating_sub(1))
    }

    fn find_addr(&self, addr: &SocketAddr) -> Option<(usize, usize)> {
        for (bi, b) in self.buckets.iter().enumerate() {
            if let Some(ni) = b.nodes.iter().position(|n| n.info.addr == *addr) {
                return Some((bi, ni));
            }
        }
        None
    }

    /// Records that `info` answered us or queried us at `now`.
    pub fn heard_from(&mut self, info: NodeInfo, now: Instant, contact: Contact) -> Insert {
        if info.id == self.own {
            return Insert::Ignored;
        }
        let bad_after = self.cfg.bad_after;
        let touch = |n: &mut Node| match contact {
            Contact::Replied => {
                n.last_reply = Some(now);
                n.fails = 0;
            }
            Contact::Queried => n.last_query = Some(now),
        };
        if let Some((bi, ni)) = self.find_addr(&info.addr) {
            let n = &mut self.buckets[bi].nodes[ni];
            if n.info.id == info.id {
                touch(n);
                if contact == Contact::Replied {
                    self.buckets[bi].changed = now;
                }
                return Insert::Updated;
            }
            if n.status(now, bad_after) != Status::Bad {
                return Insert::Ignored;
            }
            // A bad node's address taken by a new id (a restart): drop the old entry.
            self.buckets[bi].nodes.remove(ni);
        }
        loop {
            let bi = self.bucket_of(&info.id);
            let can_split =
                bi + 1 == self.buckets.len() && self.buckets.len() < self.cfg.max_buckets;
            let k = self.cfg.k;
            let b = &mut self.buckets[bi];
            if let Some(n) = b.nodes.iter_mut().find(|n| n.info.id == info.id) {
                // Same id, other address: keep the entry unless it went bad.
                if n.status(now, bad_after) != Status::Bad {
                    return Insert::Ignored;
                }
                n.info.addr = info.addr;
                n.fails = 0;
                touch(n);
                b.changed = now;
                return Insert::Updated;
            }
            let mut node = Node::new(info);
            touch(&mut node);
            if b.nodes.len() < k {
                b.nodes.push(node);
                b.replacements.retain(|r| r.info.id != info.id);
                b.changed = now;
                return Insert::Added;
            }
            if can_split {
                self.split();
                continue;
            }
            if let Some(i) = b
                .nodes
                .iter()
                .position(|n| n.status(now, bad_after) == Status::Bad)
            {
                b.nodes[i] = node;
                b.changed = now;
                return Insert::Added;
            }
            // Full of good or questionable nodes: remember the newcomer.
            b.replacements
                .retain(|r| r.info.id != info.id && r.info.addr != info.addr);
            if b.replacements.len() >= self.cfg.replacements {
                // Forget the stalest, preferring to keep nodes that replied.
                let victim = b
                    .replacements
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, r)| (r.last_reply.is_some(), r.last_seen()))
                    .map(|(i, _)| i);
                if let Some(v) = victim {
                    b.replacements.remove(v);
                }
            }
            if self.cfg.replacements > 0 {
                b.replacements.push(node);
            }
            let ping = b
                .nodes
                .iter()
                .filter(|n| n.status(now, bad_after) == Status::Questionable)
                .filter(|n| {
                    n.last_ping
                        .is_none_or(|p| now.since(p) >= Duration::from_secs(60))
                })
                .min_by_key(|n| n.last_seen())
                .map(|n| n.info);
            return Insert::Full { ping };
        }
    }

    fn split(&mut self) {
        let depth = self.buckets.len() - 1;
        let own = self.own;
        let old = &mut self.buckets[depth];
        let changed = old.changed;
        let (stay, go): (Vec<Node>, Vec<Node>) = old
            .nodes
            .drain(..)
            .partition(|n| own.common_prefix(&n.info.id) == depth);
        let (rstay, rgo): (Vec<Node>, Vec<Node>) = old
            .replacements
            .drain(..)
            .partition(|n| own.common_prefix(&n.info.id) == depth);
        old.nodes = stay;
        old.replacements = rstay;
        self.buckets.push(Bucket {
            nodes: go,
            replacements: rgo,
            changed,
        });
    }

    /// Records that we pinged `id` to check it.
    pub fn pinged(&mut self, id: &NodeId, now: Instant) {
        let bi = self.bucket_of(id);
        if let Some(n) = self.buckets[bi].nodes.iter_mut().find(|n| n.info.id == *id) {
            n.last_ping = Some(now);
        }
    }

    /// Records an unanswered query to `id`. A node that turns bad is replaced by the
    /// best entry of the replacement cache, if any.
    pub fn failed(&mut self, id: &NodeId, now: Instant) {
        let bi = self.bucket_of(id);
        let bad_after = self.cfg.bad_after;
        let b = &mut self.buckets[bi];
        b.replacements.retain(|r| r.info.id != *id);
        let Some(i) = b.nodes.iter().position(|n| n.info.id == *id) else {
            return;
        };
        b.nodes[i].fails = b.nodes[i].fails.saturating_add(1);
        if b.nodes[i].status(now, bad_after) != Status::Bad {
            return;
        }
        let best = b
            .replacements
            .iter()
            .enumerate()
            .max_by_key(|(_, r)| (r.last_reply.is_some(), r.last_seen()))
            .map(|(j, _)| j);
        if let Some(j) = best {
            let r = b.replacements.remove(j);
            b.nodes[i] = r;
            b.changed = now;
        }
    }

    /// Up to `n` non-bad nodes closest to `target`, closest first; `v6` selects the
    /// address family (`None`: both).
    pub fn closest(
        &self,
        target: &NodeId,
        n: usize,
        now: Instant,
        v6: Option<bool>,
    ) -> Vec<NodeInfo> {
        let mut all: Vec<NodeInfo> = self
            .nodes()
            .filter(|x| x.status(now, self.cfg.bad_after) != Status::Bad)
            .filter(|x| v6.is_none_or(|v| x.info.addr.is_ipv6() == v))
            .map(|x| x.info)
            .collect();
        all.sort_unstable_by_key(|x| x.id.distance(target));
        all.truncate(n);
        all
    }

    /// A bucket not changed for `stale` (BEP 5: 15 minutes), marked as refreshed now,
    /// with a random id in its range to look up.
    pub fn refresh_target(
        &mut self,
        now: Instant,
        stale: Duration,
        rng: &mut Rng,
    ) -> Option<NodeId> {
        let len = self.buckets.len();
        let bi = self
            .buckets
            .iter()
            .position(|b| now.since(b.changed) >= stale)?;
        self.buckets[bi].changed = now;
        Some(self.random_id_in(bi, bi + 1 == len, rng))
    }

    fn random_id_in(&self, bi: usize, last: bool, rng: &mut Rng) -> NodeId {
        let mut id = [0u8; 20];
        for c in id.chunks_mut(8) {
            let r = rng.next_u64().to_be_bytes();
            c.copy_from_slice(&r[..c.len()]);
        }
        // Keep the first `bi` bits of our id; flip bit `bi` unless it is the last bucket.
        for bit in 0..bi.min(160) {
            let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
            id[byte] = (id[byte] & !mask) | (self.own.0[byte] & mask);
        }
        if !last && bi < 160 {
            let (byte, mask) = (bi / 8, 0x80u8 >> (bi % 8));
            id[byte] = (id[byte] & !mask) | (!self.own.0[byte] & mask);
        }
        NodeId(id)
    }

    /// Questionable nodes not pinged in the last `every`, at most `max`, marked as
    /// pinged now: the caller pings them.
    pub fn to_ping(&mut self, now: Instant, every: Duration, max: usize) -> Vec<NodeInfo> {
        let bad_after = self.cfg.bad_after;
        let mut out = Vec::new();
        for b in &mut self.buckets {
            for n in &mut b.nodes {
                if out.len() >= max {
                    return out;
                }
                if n.status(now, bad_after) == Status::Questionable
                    && n.last_ping.is_none_or(|p| now.since(p) >= every)
                {
                    n.last_ping = Some(now);
                    out.push(n.info);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, SocketAddrV4};

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + i), 6881))
    }
    fn id_with_prefix(first: u8, i: u8) -> NodeId {
        let mut id = [0u8; 20];
        id[0] = first;
        id[19] = i;
        NodeId(id)
    }
    fn t(s: u64) -> Instant {
        Instant::from_millis(s * 1000)
    }

    #[test]
    fn splits_only_own_bucket_and_ignores_self_and_duplicates() {
        let own = NodeId([0u8; 20]);
        let mut rt = RoutingTable::new(own, TableConfig::default(), t(0));
        assert_eq!(
            rt.heard_from(
                NodeInfo {
                    id: own,
                    addr: addr(999)
                },
                t(0),
                Contact::Replied
            ),
            Insert::Ignored
        );
        // 8 far nodes (first bit 1) fill bucket 0 after one split.
        for i in 0..8u8 {
            let r = rt.heard_from(
                NodeInfo {
                    id: id_with_prefix(0x80, i),
                    addr: addr(u32::from(i)),
                },
                t(0),
                Contact::Replied,
            );
            assert_eq!(r, Insert::Added);
        }
        assert_eq!(rt.bucket_count(), 1);
        // A near node forces a split of the own bucket.
        let near = NodeInfo {
            id: id_with_prefix(0x01, 1),
            addr: addr(100),
        };
        assert_eq!(rt.heard_from(near, t(0), Contact::Replied), Insert::Added);
        assert_eq!(rt.bucket_count(), 2);
        // More far nodes cannot split bucket 0: they go to the replacement cache.
        let far = NodeInfo {
            id: id_with_prefix(0x81, 0),
            addr: addr(200),
        };
        assert!(matches!(
            rt.heard_from(far, t(0), Contact::Replied),
            Insert::Full { .. }
        ));
        assert_eq!(rt.bucket_count(), 2);
        assert_eq!(rt.replacement_count(), 1);
        // Same address, other id: refused.
        let dup = NodeInfo {
            id: id_with_prefix(0x02, 7),
            addr: addr(100),
        };
        assert_eq!(rt.heard_from(dup, t(0), Contact::Replied), Insert::Ignored);
        // Same id, other address: refused while the node is alive.
        let moved = NodeInfo {
            id: near.id,
            addr: addr(101),
        };
        assert_eq!(
            rt.heard_from(moved, t(0), Contact::Replied),
            Insert::Ignored
        );
        assert_eq!(rt.len(), 9);
        // Many near nodes split down the own side only.
        for i in 0..40u8 {
            let mut id = [0u8; 20];
            id[1] = i.wrapping_mul(37) | 1;
            id[19] = i;
            rt.heard_from(
                NodeInfo {
                    id: NodeId(id),
                    addr: addr(300 + u32::from(i)),
                },
                t(0),
                Contact::Replied,
            );
        }
        assert!(rt.bucket_count() > 2);
        assert!(rt
            .buckets
            .iter()
            .all(|b| b.nodes.len() <= 8 && b.replacements.len() <= 8));
        let c = rt.closest(&own, 8, t(0), None);
        assert_eq!(c.len(), 8);
        assert!(c
            .windows(2)
            .all(|w| w[0].id.distance(&own) <= w[1].id.distance(&own)));
    }

    #[test]
    fn liveness_and_replacement() {
        let own = NodeId([0u8; 20]);
        let cfg = TableConfig {
            max_buckets: 1,
            ..TableConfig::default()
        };
        let mut rt = RoutingTable::new(own, cfg, t(0));
        for i in 0..8u8 {
            rt.heard_from(
                NodeInfo {
                    id: id_with_prefix(0x80, i),
                    addr: addr(u32::from(i)),
                },
                t(0),
                Contact::Replied,
            );
        }
        let first = id_with_prefix(0x80, 0);
        assert_eq!(
            rt.get(&first).map(|n| n.status(t(10), 2)),
            Some(Status::Good)
        );
        assert_eq!(
            rt.get(&first).map(|n| n.status(t(16 * 60), 2)),
            Some(Status::Questionable)
        );
        assert_eq!(rt.good_count(t(16 * 60)), 0);
        // A newcomer to the full bucket waits; a questionable node is offered for a ping.
        let newcomer = NodeInfo {
            id: id_with_prefix(0x90, 1),
            addr: addr(50),
        };
        let r = rt.heard_from(newcomer, t(16 * 60), Contact::Replied);
        assert!(matches!(r, Insert::Full { ping: Some(_) }), "{r:?}");
        // Two failures make the node bad and the newcomer takes its place.
        rt.failed(&first, t(16 * 60));
        assert!(rt.get(&first).is_some());
        rt.failed(&first, t(16 * 60));
        assert!(rt.get(&first).is_none());
        assert!(rt.get(&newcomer.id).is_some());
        assert_eq!(rt.len(), 8);
        // A bad node with no replacement stays, but is replaced by the next arrival.
        let second = id_with_prefix(0x80, 1);
        rt.failed(&second, t(16 * 60));
        rt.failed(&second, t(16 * 60));
        assert!(rt
            .closest(&second, 8, t(16 * 60), None)
            .iter()
            .all(|n| n.id != second));
        let next = NodeInfo {
            id: id_with_prefix(0xa0, 1),
            addr: addr(51),
        };
        assert_eq!(
            rt.heard_from(next, t(16 * 60), Contact::Queried),
            Insert::Added
        );
        assert!(rt.get(&second).is_none());
        // Questionable nodes are offered for pings once per interval.
        let p = rt.to_ping(t(17 * 60), Duration::from_secs(300), 100);
        assert!(!p.is_empty());
        assert!(rt
            .to_ping(t(17 * 60), Duration::from_secs(300), 100)
            .is_empty());
    }

    #[test]
    fn refresh_targets_fall_in_their_bucket() {
        let own = NodeId([0x55; 20]);
        let mut rt = RoutingTable::new(own, TableConfig::default(), t(0));
        let mut rng = Rng::new(7);
        for i in 0..200u32 {
            let mut id = [0u8; 20];
            id[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
            rt.heard_from(
                NodeInfo {
                    id: NodeId(id),
                    addr: addr(i),
                },
                t(0),
                Contact::Replied,
            );
        }
        let n = rt.bucket_count();
        assert!(n >= 4);
        for bi in 0..n {
            let id = rt.random_id_in(bi, bi + 1 == n, &mut rng);
            assert_eq!(rt.bucket_of(&id), bi);
        }
        assert!(rt.refresh_target(t(60), GOOD_FOR, &mut rng).is_none());
        assert!(rt.refresh_target(t(16 * 60), GOOD_FOR, &mut rng).is_some());
    }
}
