//! Who counts as one party on the DHT, for the per-address limits of the routing
//! table, lookups, the peer store and the query rate limit.
//!
//! One *host* is one party whatever its ports: an IPv4 address, or an IPv6 /64 (the
//! smallest prefix a network hands out, so one machine or one home holds all of its
//! addresses, as the session and the tracker count it too). A single host can open as
//! many UDP ports, or take as many addresses of its /64, as it likes, each claiming
//! its own node id (a Sybil attack), so limits count hosts, not `IP:port`.
//!
//! Nearby hosts, one *subnet*, are usually one operator: an IPv4 /24, or an IPv6 /48
//! (what one site, or one customer of many ISPs, gets: 65,536 /64s, as cheap to hold
//! as one IPv4 address). The routing table and lookups also limit those, as
//! libtorrent does (`dht_restrict_routing_ips`, `dht_restrict_search_ips`), and the
//! peer store evicts from the most represented subnet first.
//!
//! The query rate limit counts per IPv4 /24 and per IPv6 /64.
//!
//! Loopback addresses are exempt: only this machine can send from them (a remote
//! datagram with a loopback source is dropped by the kernel), and several nodes on
//! one machine is how local setups and tests run; each loopback `IP:port` is a party
//! of its own. An IPv4 address carried as IPv6 (`::ffff:a.b.c.d`) counts as the
//! IPv4 address.

use core::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The address with an IPv4-mapped IPv6 address turned into IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Whether per-address limits leave `ip` alone (loopback).
pub(crate) fn exempt(ip: IpAddr) -> bool {
    canonical(ip).is_loopback()
}

/// `ip` with all but its first `bits` bits zeroed (IPv6 only; IPv4 as it is).
fn prefix6(ip: Ipv6Addr, bits: u32) -> IpAddr {
    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
    IpAddr::V6(Ipv6Addr::from(u128::from(ip) & mask))
}

/// The host `ip` belongs to, as a key: the IPv4 address, or the IPv6 /64 (the rest
/// of the address zeroed). Exempt addresses are their own key.
pub(crate) fn host(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(a) if !a.is_loopback() => prefix6(a, 64),
        ip => ip,
    }
}

/// The subnet `ip` belongs to, as a key: its IPv4 /24 or its IPv6 /48.
pub(crate) fn subnet(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V4(a) => {
            let [x, y, z, _] = a.octets();
            IpAddr::V4([x, y, z, 0].into())
        }
        IpAddr::V6(a) => prefix6(a, 48),
    }
}

/// Whether `a` and `b` are the same party: the same host (IPv4 address, IPv6 /64),
/// or the same `IP:port` for exempt addresses.
pub(crate) fn same_host(a: &SocketAddr, b: &SocketAddr) -> bool {
    let (ia, ib) = (canonical(a.ip()), canonical(b.ip()));
    if exempt(ia) || exempt(ib) {
        return ia == ib && a.port() == b.port();
    }
    host(ia) == host(ib)
}

/// Whether `a` and `b` are in the same subnet (IPv4 /24, IPv6 /48; never for
/// exempt addresses).
pub(crate) fn same_subnet(a: IpAddr, b: IpAddr) -> bool {
    !exempt(a) && !exempt(b) && subnet(a) == subnet(b)
}

/// The source key of the query rate limit for `from`, written into `out`: its IPv4
/// /24 or its IPv6 /64 (an exempt address: its `IP:port`). Returns its length.
pub(crate) fn rate_key(from: &SocketAddr, out: &mut [u8; 19]) -> usize {
    let ip = canonical(from.ip());
    if exempt(ip) {
        out[0] = 0;
        let n = match ip {
            IpAddr::V4(a) => {
                out[1..5].copy_from_slice(&a.octets());
                5
            }
            IpAddr::V6(a) => {
                out[1..17].copy_from_slice(&a.octets());
                17
            }
        };
        out[n..n + 2].copy_from_slice(&from.port().to_be_bytes());
        return n + 2;
    }
    match ip {
        IpAddr::V4(a) => {
            out[0] = 4;
            out[1..4].copy_from_slice(&a.octets()[..3]);
            4
        }
        IpAddr::V6(a) => {
            out[0] = 6;
            out[1..9].copy_from_slice(&a.octets()[..8]);
            9
        }
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
        // IPv6: one /64 is one host.
        assert!(same_host(&a("[2001:db8::1]:1"), &a("[2001:db8::ffff:1]:2")));
        assert!(same_host(
            &a("[2001:db8:0:0:ffff::1]:1"),
            &a("[2001:db8::2]:1")
        ));
        assert!(!same_host(&a("[2001:db8:0:1::1]:1"), &a("[2001:db8::1]:1")));
        assert!(!same_host(&a("[::1]:1"), &a("[::2]:1")));
        let ip = |s: &str| a(s).ip();
        assert!(same_subnet(ip("192.0.2.1:1"), ip("192.0.2.200:1")));
        assert!(!same_subnet(ip("192.0.2.1:1"), ip("192.0.3.1:1")));
        assert!(!same_subnet(ip("127.0.0.1:1"), ip("127.0.0.2:1")));
        // IPv6: one /48 is one subnet.
        assert!(same_subnet(ip("[2001:db8::1]:1"), ip("[2001:db8::ffff]:1")));
        assert!(same_subnet(
            ip("[2001:db8:0:ffff::1]:1"),
            ip("[2001:db8::1]:1")
        ));
        assert!(!same_subnet(ip("[2001:db8:1::1]:1"), ip("[2001:db8::1]:1")));
        assert!(!same_subnet(ip("[::1]:1"), ip("[::1]:1")));
        assert!(!same_subnet(ip("192.0.2.1:1"), ip("[2001:db8::1]:1")));
        assert!(!same_subnet(ip("0.0.0.1:1"), ip("[::1]:1")));
        assert_eq!(host(ip("[::ffff:192.0.2.1]:1")), ip("192.0.2.1:1"));
        assert_eq!(host(ip("[2001:db8::5:6]:1")), ip("[2001:db8::]:1"));
        assert_eq!(subnet(ip("[2001:db8:7:8::1]:1")), ip("[2001:db8:7::]:1"));
        assert_eq!(subnet(ip("192.0.2.77:1")), ip("192.0.2.0:1"));
        assert!(plausible(&a("192.0.2.1:1"), &a("198.51.100.1:6881")));
        assert!(!plausible(&a("192.0.2.1:1"), &a("127.0.0.1:6881")));
        assert!(!plausible(&a("192.0.2.1:1"), &a("[::ffff:127.0.0.1]:6881")));
        assert!(plausible(&a("127.0.0.1:1"), &a("127.0.0.1:6881")));
        assert!(!plausible(&a("127.0.0.1:1"), &a("0.0.0.0:6881")));
        assert!(!plausible(&a("192.0.2.1:1"), &a("198.51.100.1:0")));
    }

    #[test]
    fn rate_keys() {
        let key = |s: &str| {
            let mut b = [0u8; 19];
            let n = rate_key(&a(s), &mut b);
            b[..n].to_vec()
        };
        assert_eq!(key("192.0.2.1:1"), key("192.0.2.200:2"));
        assert_eq!(key("192.0.2.1:1"), key("[::ffff:192.0.2.9]:2"));
        assert_ne!(key("192.0.2.1:1"), key("192.0.3.1:1"));
        assert_eq!(key("[2001:db8::1]:1"), key("[2001:db8::ffff:1]:2"));
        assert_ne!(key("[2001:db8:0:1::1]:1"), key("[2001:db8::1]:1"));
        assert_ne!(key("127.0.0.1:1"), key("127.0.0.1:2"));
        assert_eq!(key("127.0.0.1:1"), key("127.0.0.1:1"));
        assert_ne!(key("[::1]:1"), key("[::1]:2"));
        // No IPv4 key equals an IPv6 one.
        assert_ne!(key("0.0.0.0:1"), key("[::]:1"));
    }
}
