//! Who counts as one party on the network, and which addresses a remote party may
//! make us contact: the rules the session (peers, PEX, bans) and the DHT share.
//!
//! One IP address is one party whatever its ports: a host opens as many ports as it
//! likes. An IPv6 subscriber usually gets a whole /64 (often a /56 or /48), so a
//! per-address limit on IPv6 counts the /64 ([`group`]), and a coarser one the /48
//! ([`site`]). An IPv4 address carried as IPv6 (`::ffff:a.b.c.d`) counts as the IPv4
//! address.
//!
//! Loopback addresses are this machine: only a local process can connect or send from
//! one (the kernel drops a remote packet with a loopback source). A remote party that
//! names a loopback address (a tracker's peer list, a PEX message, a DHT node) would
//! make us connect to services of this machine, so such an address is believed only
//! from a source on loopback itself ([`plausible`]).

use core::net::{IpAddr, SocketAddr};

/// The address with an IPv4-mapped IPv6 address turned into IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Whether `ip` is this machine (IPv4 `127.0.0.0/8`, `::1`, and IPv4-mapped forms).
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    canonical(ip).is_loopback()
}

/// `ip` with all but its first `bytes` bytes cleared (IPv6 only; IPv4 as is).
fn v6_prefix(ip: IpAddr, bytes: usize) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[bytes..].fill(0);
            IpAddr::V6(o.into())
        }
        v4 => v4,
    }
}

/// The party a per-address limit counts: an IPv4 address, or an IPv6 /64.
pub(crate) fn group(ip: IpAddr) -> IpAddr {
    v6_prefix(ip, 8)
}

/// The coarser party: an IPv4 address, or an IPv6 /48 (one site, holding 65,536 /64s).
pub(crate) fn site(ip: IpAddr) -> IpAddr {
    v6_prefix(ip, 6)
}

/// Whether a party at `from` may be believed when it names `addr` as a peer or a
/// node: never an unspecified address or port 0, and a loopback address only from a
/// loopback source.
pub(crate) fn plausible_from(from: IpAddr, addr: &SocketAddr) -> bool {
    let ip = canonical(addr.ip());
    !ip.is_unspecified() && addr.port() != 0 && (!ip.is_loopback() || is_loopback(from))
}

/// Whether a node at `from` may be believed when it names `addr` (a node or a peer):
/// [`plausible_from`] its IP address.
pub(crate) fn plausible(from: &SocketAddr, addr: &SocketAddr) -> bool {
    plausible_from(from.ip(), addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn groups_and_sites() {
        let ip = |s: &str| a(s).ip();
        assert_eq!(group(ip("192.0.2.1:1")), ip("192.0.2.1:1"));
        assert_eq!(group(ip("[::ffff:192.0.2.1]:1")), ip("192.0.2.1:1"));
        assert_eq!(group(ip("[2001:db8:1:2:3::4]:1")), ip("[2001:db8:1:2::]:1"));
        assert_eq!(site(ip("[2001:db8:1:2:3::4]:1")), ip("[2001:db8:1::]:1"));
        assert_eq!(site(ip("192.0.2.1:1")), ip("192.0.2.1:1"));
    }

    #[test]
    fn loopback_only_from_loopback() {
        let lo = a("127.0.0.1:1").ip();
        let remote = a("192.0.2.1:1").ip();
        assert!(plausible_from(remote, &a("198.51.100.1:6881")));
        assert!(!plausible_from(remote, &a("127.0.0.1:6881")));
        assert!(!plausible_from(remote, &a("127.1.2.3:22")));
        assert!(!plausible_from(remote, &a("[::1]:6881")));
        assert!(!plausible_from(remote, &a("[::ffff:127.0.0.1]:6881")));
        assert!(plausible_from(lo, &a("127.0.0.1:6881")));
        assert!(plausible_from(a("[::1]:1").ip(), &a("127.0.0.1:6881")));
        assert!(!plausible_from(lo, &a("0.0.0.0:6881")));
        assert!(!plausible_from(lo, &a("[::]:6881")));
        assert!(!plausible_from(remote, &a("198.51.100.1:0")));
        assert!(plausible(&a("127.0.0.1:9"), &a("127.0.0.1:6881")));
    }
}
