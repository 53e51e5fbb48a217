//! What a node keeps for others: announced peers (BEP 5 `announce_peer`) and the
//! write tokens that guard them.
//!
//! Tokens are `sha1(secret || ip)` truncated to [`TOKEN_LEN`] bytes. The secret is
//! derived from a host-provided key and an epoch counter (`sha1(key || epoch)`), the
//! epoch advancing every [`TOKEN_ROTATION`]; a token from the previous epoch is still
//! accepted, so a token lives between 5 and 10 minutes (BEP 5 asks for 10). A token
//! is bound to the IP address it was issued to: an announce is checked against its
//! datagram's source IP, and the peer stored is that IP (with the announced port).
//!
//! The store is bounded ([`StoreLimits`]): one entry per IP address per torrent,
//! caps per torrent, on torrents, on peers over all and per IP address over all
//! torrents. A full torrent or store evicts its least useful entry (the oldest peer,
//! the smallest and stalest torrent) so that newcomers still get in; only an address
//! over its own cap is refused.

use crate::hash::sha1;
use crate::time::{Duration, Instant};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

use super::addr;
use super::krpc::NodeId;

/// Length of the tokens we hand out.
pub const TOKEN_LEN: usize = 8;
/// How often the token secret changes (BEP 5: every five minutes).
pub const TOKEN_ROTATION: Duration = Duration::from_secs(5 * 60);

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
    /// Rotates the secret when [`TOKEN_ROTATION`] has passed.
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
/// [`StoreLimits::per_ip`], which only throttles the address over it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// How long an announce is kept (BEP 5 practice: 30 minutes).
    pub ttl: Duration,
    /// Most peers per info-hash; a new announcer evicts the oldest. Default 200.
    pub per_hash: usize,
    /// Most info-hashes; a new one evicts the torrent with the fewest peers (the
    /// stalest of those). Default 2,000.
    pub hashes: usize,
    /// Most peers over all; a new announce evicts the oldest peer of the largest
    /// torrent. Default 20,000.
    pub total: usize,
    /// Most peers stored for one IP address over all torrents (loopback exempt);
    /// announces beyond it from that address are refused until some expire.
    /// Default 64.
    pub per_ip: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30 * 60),
            per_hash: 200,
            hashes: 2_000,
            total: 20_000,
            per_ip: 64,
        }
    }
}

impl StoreLimits {
    /// The low-memory profile: 50 peers per torrent, 200 torrents, 2,000 peers,
    /// 16 per IP address.
    pub fn low_memory() -> Self {
        Self {
            per_hash: 50,
            hashes: 200,
            total: 2_000,
            per_ip: 16,
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
/// BEP 5 peers are keyed by IP in practice: a torrent holds one entry per IP
/// address (loopback: per address), and a new port from that IP replaces the old
/// one, so one host cannot fill a torrent whatever its ports. Each torrent's list is
/// kept oldest first (a refresh moves an entry to the end), so expiry and eviction
/// look at its front.
#[derive(Clone, Debug, Default)]
pub struct PeerStore {
    limits: StoreLimits,
    map: BTreeMap<NodeId, Vec<Entry>>,
    /// Entries per IP address over all torrents (exempt addresses not counted).
    per_ip: BTreeMap<IpAddr, usize>,
    total: usize,
}

impl PeerStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            map: BTreeMap::new(),
            per_ip: BTreeMap::new(),
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
    /// [`PeerStore::expire`]), oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, impl Iterator<Item = SocketAddr> + '_)> {
        self.map.iter().map(|(h, l)| (h, l.iter().map(|e| e.addr)))
    }
    /// Peers stored for IP address `ip` over all torrents (0 for exempt addresses).
    pub fn count_for_ip(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&addr::canonical(ip)).copied().unwrap_or(0)
    }

    fn counted(&mut self, ip: IpAddr, add: bool) {
        let ip = addr::canonical(ip);
        if addr::exempt(ip) {
            return;
        }
        if add {
            *self.per_ip.entry(ip).or_insert(0) += 1;
        } else if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Forgets one entry (already taken out of its list).
    fn dropped(&mut self, e: Entry) {
        self.total -= 1;
        self.counted(e.addr.ip(), false);
    }

    /// Stores or refreshes `peer` for `hash`. Returns false only when refused: a
    /// zero limit, or `peer`'s IP over [`StoreLimits::per_ip`]; any other cap evicts.
    pub fn announce(&mut self, hash: NodeId, peer: SocketAddr, now: Instant) -> bool {
        let l = self.limits;
        let entry = Entry {
            addr: peer,
            expires: now + l.ttl,
        };
        // The same IP (or exempt address) in this torrent: the newest port wins.
        if let Some(list) = self.map.get_mut(&hash) {
            if let Some(i) = list.iter().position(|e| addr::same_host(&e.addr, &peer)) {
                list.remove(i);
                list.push(entry);
                return true;
            }
        }
        if l.per_hash == 0 || l.hashes == 0 || l.total == 0 {
            return false;
        }
        if !addr::exempt(peer.ip()) && self.count_for_ip(peer.ip()) >= l.per_ip {
            return false;
        }
        if self.total >= l.total {
            self.evict_from_largest();
        }
        if !self.map.contains_key(&hash) && self.map.len() >= l.hashes {
            self.evict_torrent();
        }
        let list = self.map.entry(hash).or_default();
        let old = (list.len() >= l.per_hash).then(|| list.remove(0));
        list.push(entry);
        if let Some(old) = old {
            self.dropped(old);
        }
        self.total += 1;
        self.counted(peer.ip(), true);
        true
    }

    /// Drops the oldest peer of the torrent with the most peers.
    fn evict_from_largest(&mut self) {
        let Some((&hash, _)) = self.map.iter().max_by_key(|(_, l)| l.len()) else {
            return;
        };
        self.evict_oldest(hash);
    }

    fn evict_oldest(&mut self, hash: NodeId) {
        let Some(list) = self.map.get_mut(&hash) else {
            return;
        };
        let old = (!list.is_empty()).then(|| list.remove(0));
        if list.is_empty() {
            self.map.remove(&hash);
        }
        if let Some(old) = old {
            self.dropped(old);
        }
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
    pub fn expire(&mut self, now: Instant) {
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
}
