//! Addresses banned for sending bad data, for the whole session.
//!
//! A ban is by address, not by `IP:port` nor by peer id: a peer chooses its source
//! port and its peer id freely, and would come back with new ones at once (libtorrent
//! bans addresses too). An IPv4 address is banned alone; an IPv6 address by its /64,
//! since a subscriber gets a whole /64 and picks addresses in it at will. When
//! [`SessionConfig::max_bans_per_ipv6_48`](super::SessionConfig) /64s of one /48 are
//! banned, the whole /48 is, in one entry that replaces theirs: one site cannot fill
//! the list. The session checks the list when a connection comes in, before any byte
//! of it is read, and before dialing. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`)
//! count as the IPv4 address they carry.
//!
//! The list holds at most [`SessionConfig::max_banned_ips`](super::SessionConfig)
//! entries. When it is full a ban is lifted for the newest, the weakest first: one
//! whose address only sent a whole bad piece alone ([`BanReason::SoleSender`]), then
//! one proven by the smart ban's block digests ([`BanReason::Proven`]), then a /48;
//! the oldest first within each.

use crate::netaddr;
use alloc::collections::{BTreeMap, BTreeSet};
use core::net::IpAddr;

/// The address a ban is about: IPv4-mapped IPv6 addresses as IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Why an address was banned, weakest first: when the list is full, the weakest
/// bans are lifted first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum BanReason {
    /// It alone sent a piece that failed its check.
    SoleSender,
    /// One of its blocks differed from the good one, or it sent one block twice with
    /// different bytes (the smart ban's proof).
    Proven,
    /// Several /64s of its /48 were banned.
    Site,
}

/// A banned prefix: its first address and its length in bits (32 for IPv4, 64 or 48
/// for IPv6).
type Key = (IpAddr, u8);

/// Banned addresses, weakest and oldest first out.
#[derive(Debug, Default)]
pub(crate) struct BanList {
    bans: BTreeMap<Key, (BanReason, u64)>,
    /// The same entries in the order they are lifted.
    order: BTreeSet<(BanReason, u64, Key)>,
    seq: u64,
    cap: usize,
    per_site: usize,
}

/// The /64 (IPv6) or address (IPv4) `ip` is banned by.
fn key(ip: IpAddr) -> Key {
    match canonical(ip) {
        v4 @ IpAddr::V4(_) => (v4, 32),
        v6 => (netaddr::group(v6), 64),
    }
}

impl BanList {
    /// An empty list that keeps at most `cap` entries and bans an IPv6 /48 once
    /// `per_site` of its /64s are (0: never).
    pub(crate) fn new(cap: usize, per_site: usize) -> Self {
        Self {
            cap,
            per_site,
            ..Self::default()
        }
    }

    /// The entry that covers `ip`, if any.
    fn covering(&self, ip: IpAddr) -> Option<Key> {
        if self.bans.is_empty() {
            return None;
        }
        let k = key(ip);
        if self.bans.contains_key(&k) {
            return Some(k);
        }
        let site = (netaddr::site(k.0), 48);
        (k.1 == 64 && self.bans.contains_key(&site)).then_some(site)
    }

    /// Whether `ip` is banned.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.covering(ip).is_some()
    }

    /// Bans `ip` (an IPv6 address: its /64, or its /48); returns whether it was not
    /// banned yet. A ban already there is kept, with the stronger reason. Past the
    /// cap the weakest, oldest ban is lifted (never this one).
    pub(crate) fn insert(&mut self, ip: IpAddr, reason: BanReason) -> bool {
        if self.cap == 0 {
            return false;
        }
        if let Some(k) = self.covering(ip) {
            if let Some(&(old, seq)) = self.bans.get(&k) {
                if reason > old {
                    self.order.remove(&(old, seq, k));
                    self.order.insert((reason, seq, k));
                    self.bans.insert(k, (reason, seq));
                }
            }
            return false;
        }
        let mut k = key(ip);
        let mut reason = reason;
        if k.1 == 64 && self.per_site > 0 {
            let site = netaddr::site(k.0);
            let IpAddr::V6(first) = site else {
                return false;
            };
            let last = IpAddr::V6((u128::from(first) | ((1u128 << 80) - 1)).into());
            let same: alloc::vec::Vec<Key> = self
                .bans
                .range((site, 0)..=(last, u8::MAX))
                .map(|(k, _)| *k)
                .collect();
            if same.len() + 1 >= self.per_site {
                for s in same {
                    if let Some((r, seq)) = self.bans.remove(&s) {
                        self.order.remove(&(r, seq, s));
                    }
                }
                k = (site, 48);
                reason = BanReason::Site;
            }
        }
        while self.bans.len() >= self.cap {
            let Some((_, _, old)) = self.order.pop_first() else {
                break;
            };
            self.bans.remove(&old);
        }
        self.seq += 1;
        self.bans.insert(k, (reason, self.seq));
        self.order.insert((reason, self.seq, k));
        true
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.bans.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    fn v6(net: u16, sub: u16, host: u16) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, net, sub, 0, 0, 0, host))
    }

    #[test]
    fn by_address_mapped_and_bounded() {
        let mut b = BanList::new(2, 0);
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert!(b.insert(a, BanReason::SoleSender));
        assert!(!b.insert(a, BanReason::SoleSender));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert!(b.contains(mapped));
        assert!(!b.insert(mapped, BanReason::SoleSender));
        let c = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let d = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        assert!(b.insert(c, BanReason::SoleSender));
        assert!(b.insert(d, BanReason::SoleSender));
        // The oldest ban made room.
        assert_eq!(b.len(), 2);
        assert!(!b.contains(a) && b.contains(c) && b.contains(d));
        let mut none = BanList::new(0, 8);
        assert!(!none.insert(a, BanReason::Proven));
        assert!(!none.contains(a));
    }

    #[test]
    fn ipv6_by_64_then_by_48() {
        let mut b = BanList::new(16, 3);
        assert!(b.insert(v6(1, 1, 1), BanReason::SoleSender));
        assert!(b.contains(v6(1, 1, 0xffff)), "the whole /64");
        assert!(!b.contains(v6(1, 2, 1)));
        assert!(!b.insert(v6(1, 1, 7), BanReason::SoleSender));
        assert!(b.insert(v6(1, 2, 1), BanReason::SoleSender));
        assert_eq!(b.len(), 2);
        // The third /64 of the /48: one entry for the /48 in place of the three.
        assert!(b.insert(v6(1, 3, 1), BanReason::SoleSender));
        assert_eq!(b.len(), 1);
        assert!(b.contains(v6(1, 0xbeef, 9)));
        assert!(!b.contains(v6(2, 1, 1)), "another /48");
        assert!(!b.insert(v6(1, 4, 1), BanReason::Proven));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn proven_bans_outlast_sole_senders() {
        let mut b = BanList::new(3, 0);
        let ip = |n| IpAddr::V4(Ipv4Addr::new(192, 0, 2, n));
        assert!(b.insert(ip(1), BanReason::Proven));
        assert!(b.insert(ip(2), BanReason::SoleSender));
        assert!(b.insert(ip(3), BanReason::SoleSender));
        // Sole senders go first, the oldest first, whatever the proven ban's age.
        for n in 4..20 {
            assert!(b.insert(ip(n), BanReason::SoleSender));
            assert_eq!(b.len(), 3);
            assert!(b.contains(ip(1)), "the proven ban was lifted at {n}");
            assert!(b.contains(ip(n)) && b.contains(ip(n - 1)));
        }
        // A ban proven later is upgraded in place.
        assert!(!b.insert(ip(19), BanReason::Proven));
        assert!(b.insert(ip(20), BanReason::SoleSender));
        assert!(b.contains(ip(1)) && b.contains(ip(19)) && b.contains(ip(20)));
        // Only proven bans left: the oldest goes.
        let mut b = BanList::new(2, 0);
        b.insert(ip(1), BanReason::Proven);
        b.insert(ip(2), BanReason::Proven);
        b.insert(ip(3), BanReason::SoleSender);
        assert!(!b.contains(ip(1)) && b.contains(ip(2)) && b.contains(ip(3)));
    }
}
