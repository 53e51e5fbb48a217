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
//! in a row went unanswered; *questionable* otherwise.
//!
//! Only *confirmed* nodes, ones that answered a query of ours from their address,
//! sit in a bucket, and so only they are handed out to others and used to seed
//! lookups. A node heard only through its queries (whose source address may be
//! forged) waits in the bucket's replacement cache, unconfirmed, until it answers a
//! ping (`Insert::Pending`):
//!
//! ```text
//!  query from an unknown node --> replacement (unconfirmed) --ping answered--> bucket
//!                                          \--ping unanswered--> forgotten
//!  answer from an unknown node --> bucket (room or a bad node to replace)
//!                                  or replacement (confirmed) + ping a questionable node
//! ```
//!
//! A full bucket that cannot split replaces a bad node; if there is none, the
//! newcomer waits in the replacement cache and the least recently seen questionable
//! node should be pinged (`Insert::Full`): when it fails, the best confirmed
//! replacement takes its place. An unconfirmed newcomer never displaces a confirmed
//! replacement.
//!
//! Against one party filling the table (see [`TableConfig::restrict_ips`], as
//! libtorrent's `dht_restrict_routing_ips`): one entry per host (an IPv4 address, an
//! IPv6 /64: see [`addr`]) over the whole table, buckets and
//! replacement caches alike, whatever the ports, addresses and ids; and one entry
//! per subnet (an IPv4 /24, an IPv6 /48) in a bucket (with its replacement cache).
//! A confirmed newcomer displaces an unconfirmed entry or a bad node of its host or
//! subnet; otherwise the first one stays. Loopback addresses are exempt (one entry
//! per address there).
//!
//! BEP 42 ([`TableConfig::enforce_node_id`]): a node whose id is not derived from
//! its IP address is refused, so a party with few addresses cannot place nodes of
//! its choosing next to a target (each IPv4 address allows 8 prefixes of 21 bits).
//!
//! Memory is bounded: at most [`TableConfig::max_buckets`] buckets of `k` nodes and
//! [`TableConfig::replacements`] replacements; our own id is never stored.

use super::krpc::{NodeId, NodeInfo};
use super::{addr, bep42};
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use alloc::vec::Vec;
use core::net::SocketAddr;

/// How long a reply keeps a node good (BEP 5: 15 minutes).
pub(crate) const GOOD_FOR: Duration = Duration::from_secs(15 * 60);

/// How long before an unconfirmed replacement is pinged again.
const RECHECK_AFTER: Duration = Duration::from_secs(60);

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
    /// One entry per host (IPv4 address, IPv6 /64) over the table, and one per
    /// subnet (IPv4 /24, IPv6 /48) in a bucket (loopback exempt); off, one entry per
    /// `IP:port`. Default on.
    pub restrict_ips: bool,
    /// BEP 42: a node whose id does not match its address (see [`bep42`]) does not
    /// enter the table, neither a bucket nor a replacement cache (local network
    /// addresses exempt). Its queries are still answered; a lookup asks it but never
    /// announces to it. Default on.
    pub enforce_node_id: bool,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            k: 8,
            bad_after: 2,
            replacements: 8,
            max_buckets: 160,
            restrict_ips: true,
            enforce_node_id: true,
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
    /// Whether it ever answered a query of ours (every bucket node has).
    pub fn confirmed(&self) -> bool {
        self.last_reply.is_some()
    }
    fn last_seen(&self) -> Option<Instant> {
        self.last_reply.max(self.last_query)
    }
    fn touch(&mut self, now: Instant, contact: Contact) {
        match contact {
            Contact::Replied => {
                self.last_reply = Some(now);
                self.fails = 0;
            }
            Contact::Queried => self.last_query = Some(now),
        }
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
pub(crate) enum Contact {
    /// It answered one of our queries (from the address we sent it to).
    Replied,
    /// It sent us a query (from an address that may be forged).
    Queried,
}

/// What [`RoutingTable::heard_from`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Insert {
    /// Already there: liveness updated.
    Updated,
    /// Added to a bucket.
    Added,
    /// A confirmed node, but the bucket is full: it waits in the replacement cache.
    /// `ping` is a questionable node of that bucket the caller should ping.
    Full {
        /// The node to ping, if any needs it.
        ping: Option<NodeInfo>,
    },
    /// Not confirmed yet: it waits in the replacement cache until it answers a
    /// query of ours. `ping` is the node to ping: the newcomer itself when its
    /// bucket has room for it, else a questionable node of the full bucket.
    Pending {
        /// The node to ping, if any.
        ping: Option<NodeInfo>,
    },
    /// Refused: our own id, an id that fails BEP 42's check, an address, subnet or id taken by another entry, or a
    /// replacement cache full of confirmed nodes.
    Ignored,
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    Node(usize),
    Replacement(usize),
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
    /// The settings in force (`k`, `max_buckets` and `bad_after` clamped).
    pub fn config(&self) -> &TableConfig {
        &self.cfg
    }
    /// Number of buckets.
    pub(crate) fn bucket_count(&self) -> usize {
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
    pub(crate) fn good_count(&self, now: Instant) -> usize {
        self.nodes()
            .filter(|n| n.status(now, self.cfg.bad_after) == Status::Good)
            .count()
    }
    /// Entries in replacement caches.
    pub(crate) fn replacement_count(&self) -> usize {
        self.buckets.iter().map(|b| b.replacements.len()).sum()
    }
    /// Every node in a bucket (all confirmed).
    pub fn nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        self.buckets.iter().flat_map(|b| b.nodes.iter())
    }
    /// Every replacement cache entry, confirmed or not.
    pub fn replacements(&self) -> impl Iterator<Item = &Node> + '_ {
        self.buckets.iter().flat_map(|b| b.replacements.iter())
    }
    /// Each bucket's nodes and replacements, bucket 0 first.
    pub fn buckets(&self) -> impl Iterator<Item = (&[Node], &[Node])> + '_ {
        self.buckets
            .iter()
            .map(|b| (b.nodes.as_slice(), b.replacements.as_slice()))
    }
    /// The bucket entry for `id`, if any (replacements not included).
    pub fn get(&self, id: &NodeId) -> Option<&Node> {
        let b = &self.buckets[self.bucket_of(id)];
        b.nodes.iter().find(|n| n.info.id == *id)
    }

    /// Whether `addr` is the address of a confirmed entry (a bucket node, or a
    /// replacement that answered a query of ours from there).
    pub fn is_confirmed(&self, addr: &SocketAddr) -> bool {
        self.buckets.iter().any(|b| {
            b.nodes.iter().any(|n| n.info.addr == *addr)
                || b.replacements
                    .iter()
                    .any(|n| n.confirmed() && n.info.addr == *addr)
        })
    }

    fn bucket_of(&self, id: &NodeId) -> usize {
        self.own
            .common_prefix(id)
            .min(self.buckets.len().saturating_sub(1))
    }

    fn same_host(&self, a: &SocketAddr, b: &SocketAddr) -> bool {
        if self.cfg.restrict_ips {
            addr::same_host(a, b)
        } else {
            a == b
        }
    }

    /// The entry of `addr`'s host (its IPv4 address or IPv6 /64, or the address
    /// itself when exempt or unrestricted), in a bucket or a replacement cache.
    fn find_host(&self, addr: &SocketAddr) -> Option<(usize, Slot)> {
        for (bi, b) in self.buckets.iter().enumerate() {
            if let Some(i) = b
                .nodes
                .iter()
                .position(|n| self.same_host(&n.info.addr, addr))
            {
                return Some((bi, Slot::Node(i)));
            }
            if let Some(i) = b
                .replacements
                .iter()
                .position(|n| self.same_host(&n.info.addr, addr))
            {
                return Some((bi, Slot::Replacement(i)));
            }
        }
        None
    }

    /// Whether bucket `bi` would take a confirmed node now: room, a bad node to
    /// replace, or a split to come.
    fn has_room(&self, bi: usize, now: Instant) -> bool {
        let b = &self.buckets[bi];
        b.nodes.len() < self.cfg.k
            || (bi + 1 == self.buckets.len() && self.buckets.len() < self.cfg.max_buckets)
            || b.nodes
                .iter()
                .any(|n| n.status(now, self.cfg.bad_after) == Status::Bad)
    }

    /// Whether a query from `info` now would have it pinged ([`Insert::Pending`]
    /// naming it): a newcomer, or an unconfirmed replacement not pinged in the last
    /// minute, whose bucket has room for it. Changes nothing.
    pub(crate) fn would_ping(&self, info: &NodeInfo, now: Instant) -> bool {
        if info.id == self.own
            || (self.cfg.enforce_node_id && !bep42::id_matches(&info.id, info.addr.ip()))
        {
            return false;
        }
        match self.find_host(&info.addr) {
            Some((bi, Slot::Replacement(i))) => {
                let r = &self.buckets[bi].replacements[i];
                r.info == *info
                    && !r.confirmed()
                    && r.last_ping.is_none_or(|p| now.since(p) >= RECHECK_AFTER)
                    && self.has_room(bi, now)
            }
            Some(_) => false,
            None => self.has_room(self.bucket_of(&info.id), now),
        }
    }

    /// Records that `info` answered us or queried us at `now`.
    pub(crate) fn heard_from(&mut self, info: NodeInfo, now: Instant, contact: Contact) -> Insert {
        if info.id == self.own
            || (self.cfg.enforce_node_id && !bep42::id_matches(&info.id, info.addr.ip()))
        {
            return Insert::Ignored;
        }
        let bad_after = self.cfg.bad_after;
        let replied = contact == Contact::Replied;
        if let Some((bi, slot)) = self.find_host(&info.addr) {
            let room = self.has_room(bi, now);
            let b = &mut self.buckets[bi];
            match slot {
                Slot::Node(i) => {
                    let n = &mut b.nodes[i];
                    if n.info == info {
                        n.touch(now, contact);
                        if replied {
                            b.changed = now;
                        }
                        return Insert::Updated;
                    }
                    if n.status(now, bad_after) != Status::Bad || !replied {
                        return Insert::Ignored;
                    }
                    // A bad node's host answers with another id or port (a restart).
                    b.nodes.remove(i);
                }
                Slot::Replacement(i) => {
                    let r = &mut b.replacements[i];
                    if r.info == info {
                        r.touch(now, contact);
                        if !replied {
                            // Ask again now and then while the bucket has room for it.
                            let due = r.last_ping.is_none_or(|p| now.since(p) >= RECHECK_AFTER);
                            let ping = (!r.confirmed() && room && due).then_some(info);
                            return Insert::Pending { ping };
                        }
                        let node = b.replacements.remove(i);
                        return self.insert(node, now);
                    }
                    // Another id or port on this host: only an answer displaces an
                    // unconfirmed claim.
                    if r.confirmed() || !replied {
                        return Insert::Ignored;
                    }
                    b.replacements.remove(i);
                }
            }
        }
        let mut node = Node::new(info);
        node.touch(now, contact);
        self.insert(node, now)
    }

    /// Places a node none of whose host is in the table.
    fn insert(&mut self, node: Node, now: Instant) -> Insert {
        let bad_after = self.cfg.bad_after;
        let confirmed = node.confirmed();
        let id = node.info.id;
        loop {
            let bi = self.bucket_of(&id);
            let can_split =
                bi + 1 == self.buckets.len() && self.buckets.len() < self.cfg.max_buckets;
            let k = self.cfg.k;
            let b = &mut self.buckets[bi];
            // The same id at another host.
            if let Some(i) = b.nodes.iter().position(|n| n.info.id == id) {
                if b.nodes[i].status(now, bad_after) != Status::Bad || !confirmed {
                    return Insert::Ignored;
                }
                // It moved (a new address after a restart): the old entry goes.
                b.nodes.remove(i);
            }
            if let Some(i) = b.replacements.iter().position(|n| n.info.id == id) {
                if b.replacements[i].confirmed() || !confirmed {
                    return Insert::Ignored;
                }
                b.replacements.remove(i);
            }
            if confirmed && b.nodes.len() >= k && can_split {
                self.split();
                continue;
            }
            // The bucket is final.
            if !self.make_way_in_subnet(bi, &node, now) {
                return Insert::Ignored;
            }
            let room = self.has_room(bi, now);
            let b = &mut self.buckets[bi];
            if confirmed {
                if b.nodes.len() < k {
                    b.nodes.push(node);
                    b.changed = now;
                    return Insert::Added;
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
            }
            if !self.push_replacement(bi, node) {
                return Insert::Ignored;
            }
            return if confirmed {
                Insert::Full {
                    ping: self.questionable(bi, now),
                }
            } else if room {
                Insert::Pending {
                    ping: Some(node.info),
                }
            } else {
                Insert::Pending {
                    ping: self.questionable(bi, now),
                }
            };
        }
    }

    /// Clears the way for `node` in bucket `bi` under the subnet rule: an entry of
    /// the same subnet is displaced if it is a bad node, or an unconfirmed
    /// replacement while `node` is confirmed; otherwise `node` is refused (false).
    fn make_way_in_subnet(&mut self, bi: usize, node: &Node, now: Instant) -> bool {
        if !self.cfg.restrict_ips {
            return true;
        }
        let bad_after = self.cfg.bad_after;
        let ip = node.info.addr.ip();
        let b = &mut self.buckets[bi];
        if let Some(i) = b
            .nodes
            .iter()
            .position(|n| addr::same_subnet(n.info.addr.ip(), ip))
        {
            if b.nodes[i].status(now, bad_after) != Status::Bad || !node.confirmed() {
                return false;
            }
            b.nodes.remove(i);
        }
        if let Some(i) = b
            .replacements
            .iter()
            .position(|n| addr::same_subnet(n.info.addr.ip(), ip))
        {
            if b.replacements[i].confirmed() || !node.confirmed() {
                return false;
            }
            b.replacements.remove(i);
        }
        true
    }

    /// Puts `node` in bucket `bi`'s replacement cache, making room by forgetting the
    /// stalest entry (unconfirmed ones first). An unconfirmed node never displaces a
    /// confirmed one: false when refused.
    fn push_replacement(&mut self, bi: usize, node: Node) -> bool {
        let cap = self.cfg.replacements;
        let b = &mut self.buckets[bi];
        if cap == 0 {
            return false;
        }
        if b.replacements.len() >= cap {
            let victim = b
                .replacements
                .iter()
                .enumerate()
                .min_by_key(|(_, r)| (r.confirmed(), r.last_seen()))
                .map(|(i, r)| (i, r.confirmed()));
            match victim {
                Some((_, true)) if !node.confirmed() => return false,
                Some((i, _)) => {
                    b.replacements.remove(i);
                }
                None => return false,
            }
        }
        b.replacements.push(node);
        true
    }

    /// The least recently seen questionable node of bucket `bi` not pinged in the
    /// last minute.
    fn questionable(&self, bi: usize, now: Instant) -> Option<NodeInfo> {
        let bad_after = self.cfg.bad_after;
        self.buckets[bi]
            .nodes
            .iter()
            .filter(|n| n.status(now, bad_after) == Status::Questionable)
            .filter(|n| {
                n.last_ping
                    .is_none_or(|p| now.since(p) >= Duration::from_secs(60))
            })
            .min_by_key(|n| n.last_seen())
            .map(|n| n.info)
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
        self.fill_from_replacements(depth);
        self.fill_from_replacements(depth + 1);
    }

    /// Moves confirmed replacements of bucket `bi` into it while it has room.
    fn fill_from_replacements(&mut self, bi: usize) {
        let k = self.cfg.k;
        let b = &mut self.buckets[bi];
        while b.nodes.len() < k {
            let best = b
                .replacements
                .iter()
                .enumerate()
                .filter(|(_, r)| r.confirmed())
                .max_by_key(|(_, r)| r.last_seen())
                .map(|(i, _)| i);
            let Some(i) = best else { break };
            let r = b.replacements.remove(i);
            b.nodes.push(r);
        }
    }

    /// The table around a new id of ours (BEP 42: our external address changed),
    /// holding what this one holds, each entry with its liveness; entries that no
    /// longer fit (a full bucket of the new layout) are dropped.
    pub(crate) fn rebuilt(&self, own: NodeId, now: Instant) -> Self {
        let mut t = Self::new(own, self.cfg, now);
        for n in self.nodes().chain(self.replacements()) {
            if n.info.id != own {
                t.insert(*n, now);
            }
        }
        t
    }

    /// Records that we pinged `id` (a node or a replacement) to check it.
    pub fn pinged(&mut self, id: &NodeId, now: Instant) {
        let bi = self.bucket_of(id);
        let b = &mut self.buckets[bi];
        if let Some(n) = b
            .nodes
            .iter_mut()
            .chain(b.replacements.iter_mut())
            .find(|n| n.info.id == *id)
        {
            n.last_ping = Some(now);
        }
    }

    /// Records an unanswered query to `id`. A replacement that does not answer is
    /// forgotten; a node that turns bad is replaced by the best confirmed entry of
    /// the replacement cache, if any.
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
            .filter(|(_, r)| r.confirmed())
            .max_by_key(|(_, r)| r.last_seen())
            .map(|(j, _)| j);
        if let Some(j) = best {
            let r = b.replacements.remove(j);
            b.nodes[i] = r;
            b.changed = now;
        }
    }

    /// Up to `n` non-bad nodes closest to `target`, closest first; `v6` selects the
    /// address family (`None`: both). Only confirmed nodes (bucket entries).
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
    pub(crate) fn refresh_target(
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

    /// Nodes to ping, at most `max`, marked as pinged now: questionable nodes not
    /// pinged in the last `every`, then unconfirmed replacements of buckets with room
    /// for them not pinged in the last minute.
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
        for bi in 0..self.buckets.len() {
            if !self.has_room(bi, now) {
                continue;
            }
            for r in &mut self.buckets[bi].replacements {
                if out.len() >= max {
                    return out;
                }
                if !r.confirmed() && r.last_ping.is_none_or(|p| now.since(p) >= RECHECK_AFTER) {
                    r.last_ping = Some(now);
                    out.push(r.info);
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

    /// A node address in a /24 of its own.
    fn addr(i: u32) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(0x0a00_0001 + (i << 8)),
            6881,
        ))
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
        // A querier is not confirmed: it waits, and is to be pinged (a bad node
        // leaves room for it); its answer puts it in the bad node's place.
        assert_eq!(
            rt.heard_from(next, t(16 * 60), Contact::Queried),
            Insert::Pending { ping: Some(next) }
        );
        assert!(rt.get(&next.id).is_none());
        assert!(rt
            .closest(&next.id, 8, t(16 * 60), None)
            .iter()
            .all(|n| n.id != next.id));
        assert_eq!(
            rt.heard_from(next, t(16 * 60), Contact::Replied),
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

    fn at(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))
    }

    #[test]
    fn one_entry_per_ip_and_one_per_subnet_in_a_bucket() {
        let own = NodeId([0u8; 20]);
        // The address rules alone (ids of our choosing; BEP 42 is tested below).
        let cfg = TableConfig {
            enforce_node_id: false,
            ..TableConfig::default()
        };
        let mut rt = RoutingTable::new(own, cfg, t(0));
        let info = |first: u8, i: u8, addr: SocketAddr| NodeInfo {
            id: id_with_prefix(first, i),
            addr,
        };
        // One IP, many ports and ids, all answering: one entry.
        let first = info(0x80, 0, at([192, 0, 2, 66], 1000));
        assert_eq!(rt.heard_from(first, t(0), Contact::Replied), Insert::Added);
        for p in 1..50u8 {
            let n = info(0x80 + p, p, at([192, 0, 2, 66], 1000 + u16::from(p)));
            assert_eq!(rt.heard_from(n, t(0), Contact::Replied), Insert::Ignored);
        }
        // Same /24 in the same bucket: refused; in another bucket: fine.
        for i in 1..8u8 {
            let n = info(0x80 + i, 100 + i, addr(u32::from(i)));
            assert_eq!(rt.heard_from(n, t(0), Contact::Replied), Insert::Added);
        }
        let near = info(0x90, 1, at([192, 0, 2, 67], 1000));
        assert_eq!(rt.heard_from(near, t(0), Contact::Replied), Insert::Ignored);
        let other_bucket = info(0x01, 1, at([192, 0, 2, 67], 1000));
        assert_eq!(
            rt.heard_from(other_bucket, t(0), Contact::Replied),
            Insert::Added
        );
        assert_eq!(rt.bucket_count(), 2);
        assert_eq!(rt.len(), 9);
        // An unconfirmed claim at an address is displaced by a confirmed node of the
        // same IP; a confirmed entry is not displaced by a claim.
        let claim = info(0x02, 1, at([198, 51, 100, 1], 6881));
        assert_eq!(
            rt.heard_from(claim, t(1), Contact::Queried),
            Insert::Pending { ping: Some(claim) }
        );
        assert_eq!(rt.replacement_count(), 1);
        let real = info(0x03, 1, at([198, 51, 100, 1], 6882));
        assert_eq!(rt.heard_from(real, t(2), Contact::Replied), Insert::Added);
        assert_eq!(rt.replacement_count(), 0);
        let claim2 = info(0x04, 1, at([198, 51, 100, 1], 6883));
        assert_eq!(
            rt.heard_from(claim2, t(3), Contact::Queried),
            Insert::Ignored
        );
        // A bad node's IP may come back with a new port and id (a restart).
        rt.failed(&real.id, t(4));
        rt.failed(&real.id, t(4));
        let back = info(0x05, 2, at([198, 51, 100, 1], 7000));
        assert_eq!(rt.heard_from(back, t(5), Contact::Queried), Insert::Ignored);
        assert_eq!(rt.heard_from(back, t(5), Contact::Replied), Insert::Added);
        assert!(rt.get(&real.id).is_none());
        // Loopback: one entry per address.
        for p in 0..4u8 {
            let n = info(0x40 + p, p, at([127, 0, 0, 1], 2000 + u16::from(p)));
            assert_eq!(rt.heard_from(n, t(6), Contact::Replied), Insert::Added);
        }
        // Unrestricted: one entry per address.
        let cfg = TableConfig {
            restrict_ips: false,
            ..cfg
        };
        let mut rt = RoutingTable::new(own, cfg, t(0));
        for p in 0..8u8 {
            let n = info(0x80 + p, p, at([192, 0, 2, 66], 1000 + u16::from(p)));
            assert_eq!(rt.heard_from(n, t(0), Contact::Replied), Insert::Added);
        }
    }

    /// BEP 42: a node whose id does not match its IP stays out, buckets and
    /// replacement caches alike, unless its address is local; one whose id matches
    /// gets in.
    #[test]
    fn ids_must_match_their_address() {
        let own = NodeId([0u8; 20]);
        let mut rt = RoutingTable::new(own, TableConfig::default(), t(0));
        let ip = at([192, 0, 2, 66], 1000);
        let mut random = [0x80u8; 20];
        random[19] = 3;
        let good = bep42::node_id(ip.ip(), random);
        let mut bad = good;
        bad.0[1] ^= 0x10;
        let node = |id, addr| NodeInfo { id, addr };
        assert_eq!(
            rt.heard_from(node(bad, ip), t(0), Contact::Replied),
            Insert::Ignored
        );
        assert_eq!(
            rt.heard_from(node(bad, ip), t(0), Contact::Queried),
            Insert::Ignored
        );
        assert!(rt.is_empty() && rt.replacement_count() == 0);
        assert_eq!(
            rt.heard_from(node(good, ip), t(0), Contact::Replied),
            Insert::Added
        );
        // A local address may have any id.
        let lan = at([192, 168, 1, 5], 1000);
        assert_eq!(
            rt.heard_from(node(bad, lan), t(0), Contact::Replied),
            Insert::Added
        );
        // Off: any id.
        let cfg = TableConfig {
            enforce_node_id: false,
            ..TableConfig::default()
        };
        let mut rt = RoutingTable::new(own, cfg, t(0));
        assert_eq!(
            rt.heard_from(node(bad, ip), t(0), Contact::Replied),
            Insert::Added
        );
        // A rebuilt table keeps its entries around the new id.
        let other = NodeId([0x55; 20]);
        let rebuilt = rt.rebuilt(other, t(1));
        assert_eq!(rebuilt.own_id(), other);
        assert!(rebuilt.get(&bad).is_some_and(Node::confirmed));
    }

    #[test]
    fn unconfirmed_nodes_wait_and_never_displace_confirmed_ones() {
        let own = NodeId([0u8; 20]);
        let cfg = TableConfig {
            max_buckets: 1,
            replacements: 2,
            ..TableConfig::default()
        };
        let mut rt = RoutingTable::new(own, cfg, t(0));
        for i in 0..8u32 {
            let n = NodeInfo {
                id: id_with_prefix(0x80, i as u8),
                addr: addr(i),
            };
            assert_eq!(
                rt.heard_from(n, t(0), Contact::Queried),
                Insert::Pending { ping: Some(n) }
            );
            rt.pinged(&n.id, t(0));
            assert_eq!(rt.heard_from(n, t(0), Contact::Replied), Insert::Added);
        }
        // Two confirmed replacements fill the cache; unconfirmed ones are refused.
        for i in 8..10u32 {
            let n = NodeInfo {
                id: id_with_prefix(0x90, i as u8),
                addr: addr(i),
            };
            assert!(matches!(
                rt.heard_from(n, t(1), Contact::Replied),
                Insert::Full { .. }
            ));
        }
        let n = NodeInfo {
            id: id_with_prefix(0xa0, 1),
            addr: addr(20),
        };
        assert_eq!(rt.heard_from(n, t(2), Contact::Queried), Insert::Ignored);
        assert_eq!(rt.replacement_count(), 2);
        assert!(rt.replacements().all(Node::confirmed));
        assert!(rt.nodes().all(Node::confirmed));
        // A failed replacement is forgotten.
        rt.failed(&id_with_prefix(0x90, 8), t(3));
        assert_eq!(rt.replacement_count(), 1);
        // Unconfirmed replacements of a bucket with room are offered for pings, once
        // a minute.
        let mut rt = RoutingTable::new(own, TableConfig::default(), t(0));
        let n = NodeInfo {
            id: id_with_prefix(0x80, 1),
            addr: addr(1),
        };
        assert_eq!(
            rt.heard_from(n, t(0), Contact::Queried),
            Insert::Pending { ping: Some(n) }
        );
        rt.pinged(&n.id, t(0));
        assert_eq!(
            rt.heard_from(n, t(1), Contact::Queried),
            Insert::Pending { ping: None },
            "not pinged twice in a minute"
        );
        assert!(rt.to_ping(t(30), Duration::from_secs(300), 10).is_empty());
        assert_eq!(rt.to_ping(t(61), Duration::from_secs(300), 10), [n]);
        rt.failed(&n.id, t(63));
        assert_eq!(rt.replacement_count(), 0);
        assert!(rt.is_empty());
    }
}
