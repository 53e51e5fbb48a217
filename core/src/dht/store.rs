//! What a node keeps for others: announced peers (BEP 5 `announce_peer`) and the
//! write tokens that guard them.
//!
//! Tokens are `sha1(secret || ip)` truncated to `TOKEN_LEN` bytes. The secret is
//! derived from a host-provided key and an epoch counter (`sha1(key || epoch)`), the
//! epoch advancing every `TOKEN_ROTATION`; a token from the previous epoch is still
//! accepted, so a token lives between 5 and 10 minutes (BEP 5 asks for 10). A token
//! is bound to the IP address it was issued to: an announce is checked against its
//! datagram's source IP, and the peer stored is that IP (with the announced port).
//!
//! The store is bounded ([`StoreLimits`]): one entry per host (IPv4 address, IPv6
//! /64; see the [`addr`] rules) per torrent, caps per torrent, on
//! torrents, on peers over all, and per host and per subnet (IPv4 /24, IPv6 /48)
//! over all torrents. A full torrent or store evicts its least useful entry (the
//! oldest peer of the subnet with the most peers in that torrent, the smallest and
//! stalest torrent) so that newcomers still get in, and one subnet with many hosts
//! pushes out its own peers before anyone else's; only a host or subnet over its own
//! cap is refused.

use crate::hash::sha1;
use crate::time::{Duration, Instant};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

use super::addr;
use super::krpc::NodeId;

/// Length of the tokens we hand out.
pub(crate) const TOKEN_LEN: usize = 8;
/// How often the token secret changes (BEP 5: every five minutes).
pub(crate) const TOKEN_ROTATION: Duration = Duration::from_secs(5 * 60);

/// Write tokens: the current and the previous secret.
#[derive(Clone, Debug)]
pub struct Tokens {
    key: [u8; 20],
    epoch: u64,
    current: [u8; 20],
    previous: [u8; 20],
    rotated: Instant,
}

impl Tokens {
    /// Tokens keyed by a secret from the host's randomness.
    pub fn new(key: [u8; 20], now: Instant) -> Self {
        let current = Self::secret(&key, 0);
        Self {
            key,
            epoch: 0,
            current,
            previous: current,
            rotated: now,
        }
    }
    fn secret(key: &[u8; 20], epoch: u64) -> [u8; 20] {
        let mut b = [0u8; 28];
        b[..20].copy_from_slice(key);
        b[20..].copy_from_slice(&epoch.to_be_bytes());
        sha1(&b)
    }
    fn token(secret: &[u8; 20], ip: IpAddr) -> [u8; TOKEN_LEN] {
        let mut b = [0u8; 36];
        b[..20].copy_from_slice(secret);
        let n = match ip {
            IpAddr::V4(a) => {
                b[20..24].copy_from_slice(&a.octets());
                24
            }
            IpAddr::V6(a) => {
                b[20..36].copy_from_slice(&a.octets());
                36
            }
        };
        let d = sha1(&b[..n]);
        let mut t = [0u8; TOKEN_LEN];
        t.copy_from_slice(&d[..TOKEN_LEN]);
        t
    }
    /// Rotates the secret when `TOKEN_ROTATION` has passed.
    pub fn tick(&mut self, now: Instant) {
        while now.since(self.rotated) >= TOKEN_ROTATION {
            self.epoch += 1;
            self.previous = self.current;
            self.current = Self::secret(&self.key, self.epoch);
            self.rotated = self.rotated + TOKEN_ROTATION;
            if now.since(self.rotated) >= TOKEN_ROTATION {
                // Long idle: skip ahead, both secrets are stale anyway.
                self.epoch += now.since(self.rotated).as_millis() / TOKEN_ROTATION.as_millis();
                self.current = Self::secret(&self.key, self.epoch);
                self.previous = self.current;
                self.rotated = now;
            }
        }
    }
    /// When the secret changes next.
    pub fn next_rotation(&self) -> Instant {
        self.rotated + TOKEN_ROTATION
    }
    /// The token for `ip` now.
    pub fn issue(&self, ip: IpAddr) -> [u8; TOKEN_LEN] {
        Self::token(&self.current, ip)
    }
    /// Whether `token` was issued to `ip` under the current or the previous secret.
    pub fn check(&self, ip: IpAddr, token: &[u8]) -> bool {
        token == Self::token(&self.current, ip) || token == Self::token(&self.previous, ip)
    }
}

/// Peer store limits. Every cap evicts rather than refuses, except
/// [`StoreLimits::per_ip`] and [`StoreLimits::per_subnet`], which only throttle the
/// host or subnet over them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// How long an announce is kept (BEP 5 practice: 30 minutes).
    pub ttl: Duration,
    /// Most peers per info-hash; a new announcer evicts the oldest peer of the
    /// subnet with the most peers in that torrent. Default 200.
    pub per_hash: usize,
    /// Most info-hashes; a new one evicts the torrent with the fewest peers (the
    /// stalest of those). Default 2,000.
    pub hashes: usize,
    /// Most peers over all; a new announce evicts the oldest peer of the most
    /// represented subnet of the largest torrent. Default 20,000.
    pub total: usize,
    /// Most peers stored for one host (an IPv4 address, an IPv6 /64; loopback
    /// exempt) over all torrents; announces beyond it from that host are refused
    /// until some expire. Default 64.
    pub per_ip: usize,
    /// Most peers stored for one subnet (an IPv4 /24, an IPv6 /48; loopback exempt)
    /// over all torrents; announces beyond it from that subnet are refused until
    /// some expire. Default 256.
    pub per_subnet: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30 * 60),
            per_hash: 200,
            hashes: 2_000,
            total: 20_000,
            per_ip: 64,
            per_subnet: 256,
        }
    }
}

impl StoreLimits {
    /// The low-memory profile: 50 peers per torrent, 200 torrents, 2,000 peers,
    /// 16 per host, 64 per subnet.
    pub fn low_memory() -> Self {
        Self {
            per_hash: 50,
            hashes: 200,
            total: 2_000,
            per_ip: 16,
            per_subnet: 64,
            ..Self::default()
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    addr: SocketAddr,
    expires: Instant,
}

/// Info-hash to announced peers, with expiry and caps.
///
/// BEP 5 peers are keyed by IP in practice: a torrent holds one entry per host (an
/// IPv4 address, an IPv6 /64; loopback: per address), and a new address or port of
/// that host replaces the old one, so one host cannot fill a torrent whatever its
/// ports and addresses. Each torrent's list is kept oldest first (a refresh moves an
/// entry to the end), so expiry looks at its front.
#[derive(Clone, Debug, Default)]
pub struct PeerStore {
    limits: StoreLimits,
    map: BTreeMap<NodeId, Vec<Entry>>,
    /// Entries per host over all torrents (exempt addresses not counted).
    per_ip: BTreeMap<IpAddr, usize>,
    /// Entries per subnet over all torrents (exempt addresses not counted).
    per_subnet: BTreeMap<IpAddr, usize>,
    total: usize,
}

impl PeerStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            map: BTreeMap::new(),
            per_ip: BTreeMap::new(),
            per_subnet: BTreeMap::new(),
            total: 0,
        }
    }
    /// Peers stored over all.
    pub fn len(&self) -> usize {
        self.total
    }
    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
    /// Info-hashes stored.
    pub fn hash_count(&self) -> usize {
        self.map.len()
    }
    /// The limits in force.
    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }
    /// Every torrent with its stored peers (expired ones included until the next
    /// `PeerStore::expire`), oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, impl Iterator<Item = SocketAddr> + '_)> {
        self.map.iter().map(|(h, l)| (h, l.iter().map(|e| e.addr)))
    }
    /// Peers stored for the host of `ip` (its IPv4 address, its IPv6 /64) over all
    /// torrents (0 for exempt addresses).
    pub fn count_for_ip(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&addr::host(ip)).copied().unwrap_or(0)
    }
    /// Peers stored for the subnet of `ip` (its IPv4 /24, its IPv6 /48) over all
    /// torrents (0 for exempt addresses).
    pub fn count_for_subnet(&self, ip: IpAddr) -> usize {
        self.per_subnet.get(&addr::subnet(ip)).copied().unwrap_or(0)
    }

    fn counted(&mut self, ip: IpAddr, add: bool) {
        if addr::exempt(ip) {
            return;
        }
        for (map, key) in [
            (&mut self.per_ip, addr::host(ip)),
            (&mut self.per_subnet, addr::subnet(ip)),
        ] {
            if add {
                *map.entry(key).or_insert(0) += 1;
            } else if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
    }

    /// Forgets one entry (already taken out of its list).
    fn dropped(&mut self, e: Entry) {
        self.total -= 1;
        self.counted(e.addr.ip(), false);
    }

    /// Stores or refreshes `peer` for `hash`. Returns false only when refused: a
    /// zero limit, or `peer`'s host over [`StoreLimits::per_ip`] or subnet over
    /// [`StoreLimits::per_subnet`]; any other cap evicts.
    pub fn announce(&mut self, hash: NodeId, peer: SocketAddr, now: Instant) -> bool {
        let l = self.limits;
        let entry = Entry {
            addr: peer,
            expires: now + l.ttl,
        };
        // The same host (or exempt address) in this torrent: the newest address
        // and port win.
        if let Some(list) = self.map.get_mut(&hash) {
            if let Some(i) = list.iter().position(|e| addr::same_host(&e.addr, &peer)) {
                // The same host is in the same subnet: the counts stay.
                list.remove(i);
                list.push(entry);
                return true;
            }
        }
        if l.per_hash == 0 || l.hashes == 0 || l.total == 0 {
            return false;
        }
        if !addr::exempt(peer.ip())
            && (self.count_for_ip(peer.ip()) >= l.per_ip
                || self.count_for_subnet(peer.ip()) >= l.per_subnet)
        {
            return false;
        }
        if self.total >= l.total {
            self.evict_from_largest();
        }
        if !self.map.contains_key(&hash) && self.map.len() >= l.hashes {
            self.evict_torrent();
        }
        if self
            .map
            .get(&hash)
            .is_some_and(|list| list.len() >= l.per_hash)
        {
            self.evict_from(hash);
        }
        self.map.entry(hash).or_default().push(entry);
        self.total += 1;
        self.counted(peer.ip(), true);
        true
    }

    /// Drops the least useful peer of the torrent with the most peers.
    fn evict_from_largest(&mut self) {
        let Some((&hash, _)) = self.map.iter().max_by_key(|(_, l)| l.len()) else {
            return;
        };
        self.evict_from(hash);
    }

    /// Drops the least useful peer of torrent `hash`: the oldest one of the subnet
    /// with the most peers there (each exempt address its own subnet), so that a
    /// subnet with many hosts makes room with its own peers. One sort of the list.
    fn evict_from(&mut self, hash: NodeId) {
        let Some(list) = self.map.get_mut(&hash) else {
            return;
        };
        let group = |a: &SocketAddr| {
            if addr::exempt(a.ip()) {
                (addr::canonical(a.ip()), a.port())
            } else {
                (addr::subnet(a.ip()), 0)
            }
        };
        // (subnet, position), sorted: each subnet's run starts with its oldest.
        let mut keys: Vec<((IpAddr, u16), usize)> = list
            .iter()
            .enumerate()
            .map(|(i, e)| (group(&e.addr), i))
            .collect();
        keys.sort_unstable();
        let mut victim: Option<(usize, usize)> = None; // (count, oldest position)
        for run in keys.chunk_by(|a, b| a.0 == b.0) {
            let cand = (run.len(), run[0].1);
            if victim.is_none_or(|(n, i)| cand.0 > n || (cand.0 == n && cand.1 < i)) {
                victim = Some(cand);
            }
        }
        let Some((_, i)) = victim else {
            return;
        };
        let old = list.remove(i);
        if list.is_empty() {
            self.map.remove(&hash);
        }
        self.dropped(old);
    }

    /// Drops the torrent with the fewest peers, the one announced least recently
    /// among those.
    fn evict_torrent(&mut self) {
        let victim = self
            .map
            .iter()
            .min_by_key(|(_, l)| (l.len(), l.last().map(|e| e.expires)))
            .map(|(h, _)| *h);
        let Some(list) = victim.and_then(|h| self.map.remove(&h)) else {
            return;
        };
        for e in list {
            self.dropped(e);
        }
    }

    /// Up to `max` live peers for `hash` of the given family, most recent first.
    pub fn get(&self, hash: &NodeId, now: Instant, max: usize, v6: bool) -> Vec<SocketAddr> {
        let Some(list) = self.map.get(hash) else {
            return Vec::new();
        };
        list.iter()
            .rev()
            .filter(|e| e.expires > now && e.addr.is_ipv6() == v6)
            .take(max)
            .map(|e| e.addr)
            .collect()
    }
    /// Drops expired announces.
    pub(crate) fn expire(&mut self, now: Instant) {
        let mut gone = Vec::new();
        self.map.retain(|_, list| {
            // Oldest first: the expired ones are a prefix.
            let n = list.partition_point(|e| e.expires <= now);
            gone.extend(list.drain(..n));
            !list.is_empty()
        });
        for e in gone {
            self.dropped(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, SocketAddrV4};

    fn ip(i: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))
    }
    fn peer(i: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(10, 0, 1, i as u8),
            1000 + i,
        ))
    }
    fn t(s: u64) -> Instant {
        Instant::from_millis(s * 1000)
    }

    #[test]
    fn tokens_survive_one_rotation_only() {
        let mut tk = Tokens::new([7; 20], t(0));
        let tok = tk.issue(ip(1));
        assert!(tk.check(ip(1), &tok));
        assert!(!tk.check(ip(2), &tok));
        assert!(!tk.check(ip(1), &tok[..4]));
        tk.tick(t(299));
        assert!(tk.check(ip(1), &tok));
        tk.tick(t(300));
        assert_ne!(tk.issue(ip(1)), tok);
        assert!(tk.check(ip(1), &tok), "previous secret still accepted");
        tk.tick(t(600));
        assert!(!tk.check(ip(1), &tok), "two rotations later it is refused");
        // Another key gives other tokens.
        assert_ne!(
            Tokens::new([8; 20], t(0)).issue(ip(1)),
            Tokens::new([7; 20], t(0)).issue(ip(1))
        );
        // A long pause does not loop per epoch and leaves tokens rotating.
        tk.tick(t(1_000_000));
        assert!(tk.next_rotation() > t(1_000_000));
    }

    #[test]
    fn store_expires_and_evicts() {
        let limits = StoreLimits {
            ttl: Duration::from_secs(1800),
            per_hash: 3,
            hashes: 2,
            total: 4,
            per_ip: 100,
            per_subnet: 100,
        };
        let mut s = PeerStore::new(limits);
        let (a, b, c) = (NodeId([1; 20]), NodeId([2; 20]), NodeId([3; 20]));
        assert!(s.announce(a, peer(1), t(0)));
        assert!(s.announce(a, peer(2), t(10)));
        assert!(s.announce(a, peer(3), t(20)));
        assert!(s.announce(a, peer(4), t(20)), "a full torrent evicts");
        assert_eq!(s.get(&a, t(30), 10, false), [peer(4), peer(3), peer(2)]);
        assert!(s.announce(a, peer(2), t(30)), "refresh");
        assert_eq!(s.get(&a, t(30), 10, false), [peer(2), peer(4), peer(3)]);
        assert!(s.announce(b, peer(1), t(30)));
        assert_eq!(s.len(), 4);
        // Full store and full torrent count: the largest torrent gives its oldest
        // peer, the smallest torrent goes.
        assert!(s.announce(c, peer(1), t(40)));
        assert_eq!(s.len(), 3);
        assert_eq!(s.hash_count(), 2);
        assert_eq!(s.get(&a, t(40), 10, false), [peer(2), peer(4)]);
        assert!(s.get(&b, t(40), 10, false).is_empty());
        assert_eq!(s.get(&c, t(40), 10, false), [peer(1)]);
        assert!(s.get(&a, t(40), 10, true).is_empty());
        assert_eq!(s.get(&a, t(40), 1, false).len(), 1);
        // peer(2) was refreshed at 30 s: it outlives peer(4).
        assert_eq!(s.get(&a, t(1825), 10, false), [peer(2)]);
        s.expire(t(1825));
        assert_eq!(s.len(), 2);
        s.expire(t(1840));
        assert!(s.is_empty());
        assert_eq!(s.hash_count(), 0);
        assert_eq!(s.count_for_ip(peer(1).ip()), 0);
    }

    #[test]
    fn one_entry_per_ip_and_a_cap_per_ip() {
        let limits = StoreLimits {
            per_ip: 3,
            ..StoreLimits::default()
        };
        let mut s = PeerStore::new(limits);
        let h = |i: u8| NodeId([i; 20]);
        let at = |port: u16| SocketAddr::new(ip(9), port);
        for port in 1..=50 {
            assert!(s.announce(h(1), at(port), t(u64::from(port))));
        }
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.get(&h(1), t(60), 100, false),
            [at(50)],
            "newest port wins"
        );
        // Its IP in an IPv6-mapped form is the same party.
        let mapped: SocketAddr = "[::ffff:10.0.0.9]:7".parse().expect("addr");
        assert!(s.announce(h(1), mapped, t(61)));
        assert_eq!(s.len(), 1);
        assert!(s.announce(h(2), at(1), t(62)));
        assert!(s.announce(h(3), at(1), t(63)));
        assert!(!s.announce(h(4), at(1), t(64)), "over the per-IP cap");
        assert_eq!(s.count_for_ip(ip(9)), 3);
        assert!(
            s.announce(h(4), SocketAddr::new(ip(10), 1), t(64)),
            "others still stored"
        );
        // Loopback: one entry per address, no per-IP cap.
        let lo = |port: u16| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        for port in 1..=10 {
            assert!(s.announce(h(5), lo(port), t(65)));
            assert!(s.announce(NodeId([100 + port as u8; 20]), lo(port), t(65)));
        }
        assert_eq!(s.get(&h(5), t(66), 100, false).len(), 10);
        s.expire(t(10_000));
        assert!(s.is_empty());
        assert_eq!(s.count_for_ip(ip(9)), 0);
    }

    #[test]
    fn ipv6_64_is_one_host_and_subnets_evict_their_own() {
        let limits = StoreLimits {
            per_hash: 6,
            per_ip: 3,
            per_subnet: 5,
            ..StoreLimits::default()
        };
        let mut s = PeerStore::new(limits);
        let six = |a: &str| -> SocketAddr { a.parse().expect("addr") };
        let h = |i: u8| NodeId([i; 20]);
        // The addresses of one /64 replace each other in a torrent.
        assert!(s.announce(h(1), six("[2001:db8:1:1::1]:1"), t(1)));
        assert!(s.announce(h(1), six("[2001:db8:1:1:ffff::2]:2"), t(2)));
        assert_eq!(
            s.get(&h(1), t(3), 10, true),
            [six("[2001:db8:1:1:ffff::2]:2")]
        );
        assert_eq!(s.count_for_ip(six("[2001:db8:1:1::7]:0").ip()), 1);
        // The per-host cap counts the /64 over all torrents.
        assert!(s.announce(h(2), six("[2001:db8:1:1::3]:1"), t(4)));
        assert!(s.announce(h(3), six("[2001:db8:1:1::4]:1"), t(5)));
        assert!(
            !s.announce(h(4), six("[2001:db8:1:1::5]:1"), t(6)),
            "per host"
        );
        // The per-subnet cap counts the /48: two more /64s of it, then refused.
        assert!(s.announce(h(4), six("[2001:db8:1:2::1]:1"), t(7)));
        assert!(s.announce(h(4), six("[2001:db8:1:3::1]:1"), t(8)));
        assert_eq!(s.count_for_subnet(six("[2001:db8:1:9::1]:0").ip()), 5);
        assert!(
            !s.announce(h(4), six("[2001:db8:1:4::1]:1"), t(9)),
            "per subnet"
        );
        assert!(
            s.announce(h(4), six("[2001:db8:2::1]:1"), t(9)),
            "another /48"
        );
        // A full torrent evicts the oldest peer of its most represented subnet, not
        // the oldest peer: torrent 4 holds two peers of 2001:db8:1::/48 (the two
        // oldest), one of 2001:db8:2::/48, then IPv4 peers of /24s of their own.
        let lone = |k: u8| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, k, 0, 1)), 1);
        for k in 1..=3 {
            assert!(s.announce(h(4), lone(k), t(10 + u64::from(k))));
        }
        assert!(s.announce(h(4), lone(4), t(20)));
        assert_eq!(
            s.get(&h(4), t(21), 10, true),
            [six("[2001:db8:2::1]:1"), six("[2001:db8:1:3::1]:1")]
        );
        assert_eq!(s.get(&h(4), t(21), 10, false).len(), 4);
        // All subnets even: the oldest peer goes.
        assert!(s.announce(h(4), lone(5), t(22)));
        assert_eq!(s.get(&h(4), t(23), 10, true), [six("[2001:db8:2::1]:1")]);
        assert_eq!(s.len(), 3 + 6);
        s.expire(t(10_000));
        assert!(s.is_empty());
        assert_eq!(s.count_for_subnet(six("[2001:db8:1::1]:0").ip()), 0);
    }
}
