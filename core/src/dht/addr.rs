//! Who counts as one party on the DHT, for the per-address limits of the routing
//! table, lookups and the peer store.
//!
//! One IP address is one party whatever its ports: a single host can open as many
//! UDP ports as it likes, each claiming its own node id (a Sybil attack), so limits
//! count IP addresses, not `IP:port`. Nearby addresses (the same IPv4 /24 or IPv6
//! /64) are usually one operator, so the routing table and lookups also limit those,
//! as libtorrent does (`dht_restrict_routing_ips`, `dht_restrict_search_ips`).
//!
//! Loopback addresses are exempt: only this machine can send from them (a remote
//! datagram with a loopback source is dropped by the kernel), and several nodes on
//! one machine is how local setups and tests run. An IPv4 address carried as IPv6
//! (`::ffff:a.b.c.d`) counts as the IPv4 address.

use core::net::{IpAddr, SocketAddr};

/// The address with an IPv4-mapped IPv6 address turned into IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Whether per-address limits leave `ip` alone (loopback).
pub(crate) fn exempt(ip: IpAddr) -> bool {
    canonical(ip).is_loopback()
}

/// Whether `a` and `b` are the same party: the same IP, or the same `IP:port` for
/// exempt addresses.
pub(crate) fn same_host(a: &SocketAddr, b: &SocketAddr) -> bool {
    let (ia, ib) = (canonical(a.ip()), canonical(b.ip()));
    if ia != ib {
        return false;
    }
    !exempt(ia) || a.port() == b.port()
}

/// Whether `a` and `b` are in the same IPv4 /24 or IPv6 /64 (never for exempt
/// addresses).
pub(crate) fn same_subnet(a: IpAddr, b: IpAddr) -> bool {
    match (canonical(a), canonical(b)) {
        (IpAddr::V4(x), IpAddr::V4(y)) => !x.is_loopback() && x.octets()[..3] == y.octets()[..3],
        (IpAddr::V6(x), IpAddr::V6(y)) => !x.is_loopback() && x.octets()[..8] == y.octets()[..8],
        _ => false,
    }
}

// Whether a node at `from` may be believed when it names `addr` (a node or a peer):
// a loopback address only from a loopback sender. A remote node naming one of ours
// would make us send datagrams or connections to services of this machine. The rule
// is shared with the session's peer sources (`crate::netaddr`).
pub(crate) use crate::netaddr::plausible;

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn parties() {
        assert!(same_host(&a("192.0.2.1:1"), &a("192.0.2.1:2")));
        assert!(same_host(&a("192.0.2.1:1"), &a("[::ffff:192.0.2.1]:2")));
        assert!(!same_host(&a("192.0.2.1:1"), &a("192.0.2.2:1")));
        assert!(!same_host(&a("127.0.0.1:1"), &a("127.0.0.1:2")));
        assert!(same_host(&a("127.0.0.1:1"), &a("127.0.0.1:1")));
        assert!(!same_host(&a("[::1]:1"), &a("[::1]:2")));
        let ip = |s: &str| a(s).ip();
        assert!(same_subnet(ip("192.0.2.1:1"), ip("192.0.2.200:1")));
        assert!(!same_subnet(ip("192.0.2.1:1"), ip("192.0.3.1:1")));
        assert!(!same_subnet(ip("127.0.0.1:1"), ip("127.0.0.2:1")));
        assert!(same_subnet(ip("[2001:db8::1]:1"), ip("[2001:db8::ffff]:1")));
        assert!(!same_subnet(
            ip("[2001:db8:0:1::1]:1"),
            ip("[2001:db8::1]:1")
        ));
        assert!(!same_subnet(ip("192.0.2.1:1"), ip("[2001:db8::1]:1")));
        assert!(plausible(&a("192.0.2.1:1"), &a("198.51.100.1:6881")));
        assert!(!plausible(&a("192.0.2.1:1"), &a("127.0.0.1:6881")));
        assert!(!plausible(&a("192.0.2.1:1"), &a("[::ffff:127.0.0.1]:6881")));
        assert!(plausible(&a("127.0.0.1:1"), &a("127.0.0.1:6881")));
        assert!(!plausible(&a("127.0.0.1:1"), &a("0.0.0.0:6881")));
        assert!(!plausible(&a("192.0.2.1:1"), &a("198.51.100.1:0")));
    }
}
