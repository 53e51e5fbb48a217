//! Addresses banned for sending bad data, for the whole session.
//!
//! A ban is by IP address, not by `IP:port` nor by peer id: a peer chooses its source
//! port and its peer id freely, and would come back with new ones at once (libtorrent
//! bans addresses too). The session checks the list when a connection comes in, before
//! any byte of it is read, and before dialing. IPv4-mapped IPv6 addresses
//! (`::ffff:a.b.c.d`) count as the IPv4 address they carry.
//!
//! The list holds at most [`SessionConfig::max_banned_ips`](super::SessionConfig)
//! addresses; when it is full the oldest ban is lifted for the newest.

use alloc::collections::{BTreeSet, VecDeque};
use core::net::IpAddr;

/// The address a ban is about: IPv4-mapped IPv6 addresses as IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Banned addresses, oldest first out.
#[derive(Debug, Default)]
pub(crate) struct BanList {
    set: BTreeSet<IpAddr>,
    order: VecDeque<IpAddr>,
    cap: usize,
}

impl BanList {
    /// An empty list that keeps at most `cap` addresses.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            set: BTreeSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// Whether `ip` is banned.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        !self.set.is_empty() && self.set.contains(&canonical(ip))
    }

    /// Bans `ip`; returns whether it was not banned yet. Past the cap the oldest ban
    /// is lifted.
    pub(crate) fn insert(&mut self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.cap == 0 || self.set.contains(&ip) {
            return false;
        }
        while self.set.len() >= self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.set.remove(&old);
                }
                None => break,
            }
        }
        self.set.insert(ip);
        self.order.push_back(ip);
        true
    }

    /// Number of banned addresses.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn by_address_mapped_and_bounded() {
        let mut b = BanList::new(2);
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert!(b.insert(a));
        assert!(!b.insert(a));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert!(b.contains(mapped));
        assert!(!b.insert(mapped));
        let c = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let d = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        assert!(b.insert(c));
        assert!(b.insert(d));
        // The oldest ban made room.
        assert_eq!(b.len(), 2);
        assert!(!b.contains(a) && b.contains(c) && b.contains(d));
        let mut none = BanList::new(0);
        assert!(!none.insert(a));
        assert!(!none.contains(a));
    }
}
