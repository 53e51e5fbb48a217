//! BEP 42 (DHT security extension): node ids bound to the node's external IP.
//!
//! A node's id must start with 21 bits of `crc32c((ip & mask) | (r << 29))` (IPv4:
//! the address, mask `0x030f3fff`; IPv6: the first 64 bits, mask
//! `0x0103070f1f3f7fff`, `r << 61`), `r` being the low 3 bits of the id's last byte.
//! An IPv4 address thus allows 8 prefixes of 21 bits, so a party with few addresses
//! cannot choose ids next to an info-hash and take over its storage.
//!
//! - [`node_id`] derives an id for an address; [`id_matches`] checks one;
//! - addresses of local networks are exempt ([`exempt`]): 10/8, 172.16/12,
//!   192.168/16, 169.254/16, 127/8 as the BEP lists, and for IPv6 loopback,
//!   link-local (fe80::/10) and unique local (fc00::/7) addresses;
//! - [`IpVoter`] learns our own external address from the `ip` field of answers
//!   (BEP 42 "Bootstrapping"), believing it once several parties agree.

use alloc::vec::Vec;
use core::net::IpAddr;

use super::addr;
use super::krpc::NodeId;

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as BEP 42 asks.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}

/// The CRC32C of `ip` masked and combined with `r` (0 to 7), whose first 21 bits an
/// id for `ip` must start with.
pub fn id_prefix(ip: IpAddr, r: u8) -> u32 {
    let r = u64::from(r & 7);
    match addr::canonical(ip) {
        IpAddr::V4(a) => {
            let v = (u32::from(a) & 0x030f_3fff) | ((r as u32) << 29);
            crc32c(&v.to_be_bytes())
        }
        IpAddr::V6(a) => {
            let high = (u128::from(a) >> 64) as u64;
            let v = (high & 0x0103_070f_1f3f_7fff) | (r << 61);
            crc32c(&v.to_be_bytes())
        }
    }
}

/// Whether BEP 42 leaves `ip` alone: an address of a local network (see the
/// [module docs](self)).
pub fn exempt(ip: IpAddr) -> bool {
    match addr::canonical(ip) {
        IpAddr::V4(a) => {
            let [x, y, ..] = a.octets();
            x == 10
                || x == 127
                || (x == 172 && (16..32).contains(&y))
                || (x == 192 && y == 168)
                || (x == 169 && y == 254)
        }
        IpAddr::V6(a) => {
            let s = a.segments()[0];
            a.is_loopback() || (s & 0xffc0) == 0xfe80 || (s & 0xfe00) == 0xfc00
        }
    }
}

/// An id for a node at `ip`: the first 21 bits from [`id_prefix`] with `r` the low
/// 3 bits of `random[19]`, the rest (bits 21 to 159) from `random`.
pub fn node_id(ip: IpAddr, random: [u8; 20]) -> NodeId {
    let mut id = random;
    let p = id_prefix(ip, random[19]).to_be_bytes();
    id[0] = p[0];
    id[1] = p[1];
    id[2] = (p[2] & 0xf8) | (random[2] & 0x07);
    NodeId(id)
}

/// Whether `id` is a valid id for a node at `ip` (always, for an exempt address).
pub fn id_matches(id: &NodeId, ip: IpAddr) -> bool {
    if exempt(ip) {
        return true;
    }
    let p = id_prefix(ip, id.0[19]).to_be_bytes();
    id.0[0] == p[0] && id.0[1] == p[1] && (id.0[2] & 0xf8) == (p[2] & 0xf8)
}

/// Votes that reported one address of ours.
#[derive(Clone, Debug)]
struct Candidate {
    ip: IpAddr,
    /// The subnets (IPv4 /24, IPv6 /48) of the voters, at most the threshold.
    voters: Vec<IpAddr>,
}

/// Our external address of one family, as nodes that answered our queries see it
/// (the `ip` field of their answers). An address is believed once `needed` voters
/// from distinct subnets (IPv4 /24, IPv6 /48) reported it: one party, whatever the
/// number of its nodes, cannot make us take a wrong address (and so a wrong id).
#[derive(Clone, Debug)]
pub struct IpVoter {
    needed: usize,
    cands: Vec<Candidate>,
    decided: Option<IpAddr>,
}

/// Addresses under vote at once; a new one evicts the one with the fewest votes.
const MAX_CANDIDATES: usize = 8;

impl IpVoter {
    /// A voter that believes an address once `needed` (at least 1) subnets agree.
    pub fn new(needed: usize) -> Self {
        Self {
            needed: needed.max(1),
            cands: Vec::new(),
            decided: None,
        }
    }
    /// The address believed, if any.
    pub fn decided(&self) -> Option<IpAddr> {
        self.decided
    }
    /// Sets the address from a source the host trusts (its router, its settings).
    pub fn set(&mut self, ip: IpAddr) {
        self.decided = Some(addr::canonical(ip));
        self.cands.clear();
    }
    /// A vote by `voter` that our address is `ip`. Returns the address when this vote
    /// makes a new one believed.
    pub fn vote(&mut self, voter: IpAddr, ip: IpAddr) -> Option<IpAddr> {
        let ip = addr::canonical(ip);
        let subnet = addr::subnet(voter);
        let i = match self.cands.iter().position(|c| c.ip == ip) {
            Some(i) => i,
            None => {
                if self.cands.len() >= MAX_CANDIDATES {
                    let (j, _) = self
                        .cands
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, c)| c.voters.len())?;
                    self.cands.swap_remove(j);
                }
                self.cands.push(Candidate {
                    ip,
                    voters: Vec::new(),
                });
                self.cands.len() - 1
            }
        };
        let c = &mut self.cands[i];
        if c.voters.len() >= self.needed || c.voters.contains(&subnet) {
            return None;
        }
        c.voters.push(subnet);
        if c.voters.len() < self.needed || self.decided == Some(ip) {
            return None;
        }
        // A new address: the votes for the others start over.
        self.decided = Some(ip);
        self.cands.retain(|c| c.ip == ip);
        Some(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn hex(s: &str) -> [u8; 20] {
        let mut out = [0u8; 20];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex");
        }
        out
    }

    /// The test vectors of BEP 42: address, `rand`, an example id.
    const VECTORS: [(&str, u8, &str); 5] = [
        (
            "124.31.75.21",
            1,
            "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401",
        ),
        (
            "21.75.31.124",
            86,
            "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256",
        ),
        (
            "65.23.51.170",
            22,
            "a5d43220bc8f112a3d426c84764f8c2a1150e616",
        ),
        (
            "84.124.73.14",
            65,
            "1b0321dd1bb1fe518101ceef99462b947a01ff41",
        ),
        (
            "43.213.53.83",
            90,
            "e56f6cbf5b7c4be0237986d5243b87aa6d51305a",
        ),
    ];

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn bep42_test_vectors() {
        for (addr, rand, example) in VECTORS {
            let example = hex(example);
            let a = ip(addr);
            // The id we derive with the vector's `rand` has the vector's 21 bits and
            // last byte; the other bits are ours.
            let mut random = [0x33u8; 20];
            random[19] = rand;
            let id = node_id(a, random);
            assert_eq!(id.0[..2], example[..2], "{addr}");
            assert_eq!(id.0[2] & 0xf8, example[2] & 0xf8, "{addr}");
            assert_eq!(id.0[19], rand, "{addr}");
            assert_eq!(id.0[3..19], random[3..19], "{addr}");
            assert!(id_matches(&id, a), "{addr}");
            // The example id is valid for its address, not for another.
            assert!(id_matches(&NodeId(example), a), "{addr}");
            assert!(!id_matches(&NodeId(example), ip("8.8.8.8")), "{addr}");
            // Each of the 21 bits counts; the 3 bits after them do not.
            for bit in 0..21 {
                let mut bad = example;
                bad[bit / 8] ^= 0x80 >> (bit % 8);
                assert!(!id_matches(&NodeId(bad), a), "{addr} bit {bit}");
            }
            let mut free = example;
            free[2] ^= 0x07;
            free[10] ^= 0xff;
            assert!(id_matches(&NodeId(free), a), "{addr}");
            // `r` is the low 3 bits of the last byte: another `r`, another prefix.
            let mut other_r = example;
            other_r[19] ^= 0x01;
            assert!(!id_matches(&NodeId(other_r), a), "{addr}");
            // Only the last byte's low 3 bits are `r`.
            let mut high = example;
            high[19] ^= 0xf8;
            assert!(id_matches(&NodeId(high), a), "{addr}");
        }
        // The masked-out bits of an address do not change the prefix.
        assert_eq!(
            id_prefix(ip("124.31.75.21"), 1),
            id_prefix(ip("252.31.75.21"), 1)
        );
        assert_ne!(
            id_prefix(ip("124.31.75.21"), 1),
            id_prefix(ip("124.31.75.22"), 1)
        );
        // An IPv4-mapped address is the IPv4 address.
        assert_eq!(
            id_prefix(ip("::ffff:124.31.75.21"), 1),
            id_prefix(ip("124.31.75.21"), 1)
        );
    }

    #[test]
    fn ipv6_ids() {
        let a = ip("2001:db8:1234:5678:9abc::1");
        let id = node_id(a, [0x5a; 20]);
        assert!(id_matches(&id, a));
        // Only the first 64 bits count, masked.
        assert!(id_matches(&id, ip("2001:db8:1234:5678::77")));
        assert!(!id_matches(&id, ip("2001:db8:1234:5679::1")));
        // By hand: the first 64 bits masked, r = 2 in the top 3 bits, big-endian.
        let v: u64 = (0x2001_0db8_1234_5678 & 0x0103_070f_1f3f_7fff) | (2 << 61);
        assert_eq!(id_prefix(a, 2), crc32c(&v.to_be_bytes()));
    }

    #[test]
    fn local_addresses_are_exempt() {
        for a in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.3.4",
            "127.0.0.1",
            "::1",
            "fe80::1",
            "fd12::1",
            "::ffff:192.168.1.1",
        ] {
            assert!(exempt(ip(a)), "{a}");
            assert!(id_matches(&NodeId([0; 20]), ip(a)), "{a}");
        }
        for a in ["172.32.0.1", "8.8.8.8", "192.0.2.1", "2001:db8::1"] {
            assert!(!exempt(ip(a)), "{a}");
        }
    }

    #[test]
    fn votes_from_distinct_subnets_decide() {
        let mut v = IpVoter::new(3);
        let ours = ip("198.51.100.7");
        // One /24 voting many times is one voter.
        for k in 1..50u8 {
            assert_eq!(v.vote(IpAddr::from([192, 0, 2, k]), ours), None);
        }
        assert_eq!(v.decided(), None);
        assert_eq!(v.vote(ip("203.0.113.1"), ours), None);
        assert_eq!(v.vote(ip("203.0.114.1"), ours), Some(ours));
        assert_eq!(v.decided(), Some(ours));
        assert_eq!(v.vote(ip("203.0.115.1"), ours), None, "decided once");
        // A new address (a new lease) takes the same number of subnets.
        let new = ip("198.51.100.8");
        assert_eq!(v.vote(ip("1.0.0.1"), new), None);
        assert_eq!(v.vote(ip("1.0.1.1"), new), None);
        assert_eq!(v.vote(ip("1.0.2.1"), new), Some(new));
        // Many addresses claimed by liars evict each other, not the believed one.
        for k in 0..100u8 {
            v.vote(IpAddr::from([5, k, 0, 1]), IpAddr::from([9, 9, 9, k]));
        }
        assert_eq!(v.decided(), Some(new));
        v.set(ip("::ffff:198.51.100.9"));
        assert_eq!(v.decided(), Some(ip("198.51.100.9")));
    }
}
