//! Iterative lookups (BEP 5 "find_node" / "get_peers"): a candidate list sorted by
//! XOR distance to the target, at most `alpha` queries in flight, finished when the
//! `k` closest candidates that did not fail have all answered.
//!
//! ```text
//! candidate:  Fresh --query--> Waiting --reply--> Replied (token kept)
//!                                  \---timeout/error--> Failed
//! ```
//!
//! The list holds at most `4 * k` candidates: farther ones are dropped, so a flood
//! of far-away nodes in responses cannot grow it. It also holds at most one
//! candidate per subnet (an IPv4 /24, an IPv6 /48; see [`addr`]),
//! hence per host (an IPv4 address, an IPv6 /64), loopback exempt (see
//! `Lookup::restrict_ips`, libtorrent's `dht_restrict_search_ips`): a party with
//! many ports or many nearby addresses, posing as many nodes close to the target,
//! takes one place among the `k` asked, not all of them.

use super::addr;
use super::krpc::{NodeId, NodeInfo, MAX_TOKEN_LEN};
use alloc::vec::Vec;
use core::net::SocketAddr;

/// What a lookup is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LookupKind {
    /// `find_node`: the closest nodes to the target (bootstrap, refresh, host's own).
    FindNode,
    /// `get_peers`: peers for an info-hash.
    GetPeers,
    /// `get_peers`, then `announce_peer` to the closest nodes that gave a token.
    Announce {
        /// Our port (ignored by receivers when `implied_port`).
        port: u16,
        /// Ask receivers to use our datagrams' source port.
        implied_port: bool,
    },
}

/// A lookup's handle.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct LookupId(pub u64);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Fresh,
    Waiting,
    Replied,
    Failed,
}

#[derive(Clone, Debug)]
struct Candidate {
    info: NodeInfo,
    dist: [u8; 20],
    state: State,
    token: heapless::Vec<u8, MAX_TOKEN_LEN>,
}

/// One iterative lookup.
#[derive(Clone, Debug)]
pub(crate) struct Lookup {
    /// Handle.
    pub id: LookupId,
    /// The id or info-hash looked up.
    pub target: NodeId,
    /// What for.
    pub kind: LookupKind,
    k: usize,
    alpha: usize,
    restrict_ips: bool,
    cands: Vec<Candidate>,
    /// Queries in flight, candidates and seeds (bootstrap addresses) alike.
    pub(crate) inflight: usize,
    /// Queries sent.
    pub(crate) queried: usize,
    /// Peers reported so far.
    pub(crate) peers: usize,
    /// Whether it runs in the IPv6 DHT (BEP 32), else the IPv4 one.
    pub(crate) v6: bool,
}

impl Lookup {
    /// A lookup for `target`.
    pub fn new(id: LookupId, target: NodeId, kind: LookupKind, k: usize, alpha: usize) -> Self {
        Self {
            id,
            target,
            kind,
            k: k.max(1),
            alpha: alpha.max(1),
            restrict_ips: true,
            cands: Vec::new(),
            inflight: 0,
            queried: 0,
            peers: 0,
            v6: false,
        }
    }

    /// With `on` (the default), one candidate per subnet (IPv4 /24, IPv6 /48),
    /// loopback exempt; off, one per `IP:port`.
    #[must_use]
    pub fn restrict_ips(mut self, on: bool) -> Self {
        self.restrict_ips = on;
        self
    }

    fn cap(&self) -> usize {
        self.k * 4
    }

    /// Candidates held (at most `4 * k`, plus any still awaited beyond).
    pub fn candidates(&self) -> usize {
        self.cands.len()
    }

    /// Adds a candidate (ignored if already known by id, address or, restricted,
    /// by IP or subnet, or too far).
    pub fn add(&mut self, info: NodeInfo) {
        let restrict = self.restrict_ips;
        if self.cands.iter().any(|c| {
            c.info.id == info.id
                || c.info.addr == info.addr
                || (restrict
                    && (addr::same_host(&c.info.addr, &info.addr)
                        || addr::same_subnet(c.info.addr.ip(), info.addr.ip())))
        }) {
            return;
        }
        let dist = info.id.distance(&self.target);
        let pos = self.cands.partition_point(|c| c.dist < dist);
        if pos >= self.cap() {
            return;
        }
        self.cands.insert(
            pos,
            Candidate {
                info,
                dist,
                state: State::Fresh,
                token: heapless::Vec::new(),
            },
        );
        while self.cands.len() > self.cap() {
            // Drop the farthest candidate not waiting for an answer.
            match self.cands.iter().rposition(|c| c.state != State::Waiting) {
                Some(i) => {
                    self.cands.remove(i);
                }
                None => break,
            }
        }
    }

    /// The next candidate to query, marked waiting, if a slot is free and one of the
    /// `k` closest live candidates has not been asked.
    pub(crate) fn next_query(&mut self) -> Option<NodeInfo> {
        if self.inflight >= self.alpha {
            return None;
        }
        let k = self.k;
        let c = self
            .cands
            .iter_mut()
            .filter(|c| c.state != State::Failed)
            .take(k)
            .find(|c| c.state == State::Fresh)?;
        c.state = State::Waiting;
        self.inflight += 1;
        self.queried += 1;
        Some(c.info)
    }

    /// Counts a query sent to a seed address (no candidate behind it).
    pub(crate) fn seed_sent(&mut self) {
        self.inflight += 1;
        self.queried += 1;
    }

    fn find(&mut self, addr: &SocketAddr) -> Option<&mut Candidate> {
        self.cands.iter_mut().find(|c| c.info.addr == *addr)
    }

    /// A reply from `from` (with a write token for `get_peers`).
    pub(crate) fn replied(&mut self, from: NodeInfo, token: Option<&[u8]>, was_seed: bool) {
        self.inflight = self.inflight.saturating_sub(1);
        if was_seed {
            self.add(from);
        }
        if let Some(c) = self.find(&from.addr) {
            if c.info.id == from.id {
                c.state = State::Replied;
                if let Some(t) = token {
                    c.token = heapless::Vec::from_slice(t).unwrap_or_default();
                }
            } else {
                c.state = State::Failed;
            }
        }
    }

    /// A query to `addr` timed out or got an error.
    pub fn failed(&mut self, addr: &SocketAddr) {
        self.inflight = self.inflight.saturating_sub(1);
        if let Some(c) = self.find(addr) {
            c.state = State::Failed;
        }
    }

    /// Whether the lookup is over: nothing in flight and nothing left to ask among
    /// the `k` closest live candidates.
    pub fn is_done(&self) -> bool {
        self.inflight == 0
            && self
                .cands
                .iter()
                .filter(|c| c.state != State::Failed)
                .take(self.k)
                .all(|c| c.state == State::Replied)
    }

    /// The `k` closest nodes that answered, closest first.
    pub fn closest(&self) -> Vec<NodeInfo> {
        self.cands
            .iter()
            .filter(|c| c.state == State::Replied)
            .take(self.k)
            .map(|c| c.info)
            .collect()
    }

    /// The `k` closest nodes that answered with a write token, with the token.
    pub(crate) fn announce_targets(&self) -> Vec<(NodeInfo, heapless::Vec<u8, MAX_TOKEN_LEN>)> {
        self.cands
            .iter()
            .filter(|c| c.state == State::Replied && !c.token.is_empty())
            .take(self.k)
            .map(|c| (c.info, c.token.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, SocketAddrV4};

    fn node(first: u8) -> NodeInfo {
        let mut id = [0u8; 20];
        id[0] = first;
        NodeInfo {
            id: NodeId(id),
            addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, first, 0, 1), 1)),
        }
    }

    #[test]
    fn alpha_bound_and_termination() {
        let mut l = Lookup::new(LookupId(1), NodeId([0; 20]), LookupKind::GetPeers, 2, 3);
        for i in [9u8, 5, 7, 3] {
            l.add(node(i));
        }
        l.add(node(3));
        // Only the two closest (3, 5) are asked while they are alive.
        assert_eq!(l.next_query(), Some(node(3)));
        assert_eq!(l.next_query(), Some(node(5)));
        assert_eq!(l.next_query(), None);
        assert!(!l.is_done());
        l.failed(&node(5).addr);
        assert_eq!(l.next_query(), Some(node(7)));
        l.replied(node(3), Some(b"tok"), false);
        // A closer node learned late is asked too.
        l.add(node(1));
        assert_eq!(l.next_query(), Some(node(1)));
        assert_eq!(l.next_query(), None, "k closest live are 1 and 3");
        l.replied(node(1), None, false);
        assert!(!l.is_done(), "7 still in flight");
        l.failed(&node(7).addr);
        assert!(l.is_done());
        assert_eq!(l.closest(), [node(1), node(3)]);
        assert_eq!(l.announce_targets().len(), 1);
    }

    #[test]
    fn one_candidate_per_ip_and_subnet() {
        let target = NodeId([0; 20]);
        let at = |first: u8, ip: [u8; 4], port: u16| NodeInfo {
            id: NodeId({
                let mut id = [0u8; 20];
                id[0] = first;
                id
            }),
            addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)),
        };
        let mut l = Lookup::new(LookupId(1), target, LookupKind::FindNode, 8, 3);
        // One host with 20 ports and ids, then 20 hosts of one /24, then others.
        for i in 0..20u8 {
            l.add(at(i + 1, [192, 0, 2, 66], 1000 + u16::from(i)));
        }
        for i in 0..20u8 {
            l.add(at(i + 30, [192, 0, 2, i + 1], 6881));
        }
        for i in 0..20u8 {
            l.add(at(i + 60, [10, i, 0, 1], 6881));
            l.add(at(i + 90, [127, 0, 0, 1], 2000 + u16::from(i)));
        }
        let from = |a: [u8; 3]| {
            l.cands
                .iter()
                .filter(|c| matches!(c.info.addr.ip(), core::net::IpAddr::V4(v) if v.octets()[..3] == a))
                .count()
        };
        assert_eq!(from([192, 0, 2]), 1, "one host and its /24 take one place");
        assert_eq!(
            from([127, 0, 0]),
            11,
            "loopback exempt (up to the list cap)"
        );
        assert_eq!(l.cands.len(), 32);
        // IPv6: the addresses of one /64, then the /64s of one /48, take one place.
        let six = |first: u8, ip: &str| NodeInfo {
            id: NodeId({
                let mut id = [0u8; 20];
                id[0] = first;
                id
            }),
            addr: SocketAddr::new(ip.parse().expect("ip"), 6881),
        };
        let mut l = Lookup::new(LookupId(3), target, LookupKind::FindNode, 8, 3);
        for i in 0..20u8 {
            l.add(six(i + 1, &alloc::format!("2001:db8:1:1::{i}")));
            l.add(six(i + 30, &alloc::format!("2001:db8:1:{i}::1")));
            l.add(six(
                i + 60,
                &alloc::format!("2001:db8:{}::1", u16::from(i) + 2),
            ));
        }
        assert_eq!(l.cands.len(), 21, "one of 2001:db8:1::/48, 20 other /48s");
        // Unrestricted: one per address.
        let mut l =
            Lookup::new(LookupId(2), target, LookupKind::FindNode, 8, 3).restrict_ips(false);
        for i in 0..20u8 {
            l.add(at(i + 1, [192, 0, 2, 66], 1000 + u16::from(i)));
        }
        assert_eq!(l.cands.len(), 20);
    }

    #[test]
    fn bounded_candidates() {
        let mut l = Lookup::new(LookupId(1), NodeId([0; 20]), LookupKind::FindNode, 2, 3);
        for i in 1..=50u8 {
            l.add(node(i));
        }
        assert_eq!(l.cands.len(), 8);
        assert_eq!(l.cands[0].info, node(1));
    }
}
