//! What a node keeps for others: announced peers (BEP 5 `announce_peer`) and the
//! write tokens that guard them.
//!
//! Tokens are `sha1(secret || ip)` truncated to [`TOKEN_LEN`] bytes. The secret is
//! derived from a host-provided key and an epoch counter (`sha1(key || epoch)`), the
//! epoch advancing every [`TOKEN_ROTATION`]; a token from the previous epoch is still
//! accepted, so a token lives between 5 and 10 minutes (BEP 5 asks for 10).

use crate::hash::sha1;
use crate::time::{Duration, Instant};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

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

/// Peer store limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// How long an announce is kept (BEP 5 practice: 30 minutes).
    pub ttl: Duration,
    /// Most peers per info-hash. Default 200.
    pub per_hash: usize,
    /// Most info-hashes. Default 2,000.
    pub hashes: usize,
    /// Most peers over all. Default 20,000.
    pub total: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30 * 60),
            per_hash: 200,
            hashes: 2_000,
            total: 20_000,
        }
    }
}

/// Info-hash to announced peers, with expiry and caps.
#[derive(Clone, Debug, Default)]
pub struct PeerStore {
    limits: StoreLimits,
    map: BTreeMap<NodeId, Vec<(SocketAddr, Instant)>>,
    total: usize,
}

impl PeerStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            map: BTreeMap::new(),
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
    /// Stores or refreshes `peer` for `hash`; returns false when a cap refuses it.
    pub fn announce(&mut self, hash: NodeId, peer: SocketAddr, now: Instant) -> bool {
        let expires = now + self.limits.ttl;
        if !self.map.contains_key(&hash) && self.map.len() >= self.limits.hashes {
            return false;
        }
        let list = self.map.entry(hash).or_default();
        if let Some(e) = list.iter_mut().find(|(a, _)| *a == peer) {
            e.1 = expires;
            return true;
        }
        if list.len() >= self.limits.per_hash || self.total >= self.limits.total {
            if list.is_empty() {
                self.map.remove(&hash);
            }
            return false;
        }
        list.push((peer, expires));
        self.total += 1;
        true
    }
    /// Up to `max` live peers for `hash` of the given family, most recent first.
    pub fn get(&self, hash: &NodeId, now: Instant, max: usize, v6: bool) -> Vec<SocketAddr> {
        let Some(list) = self.map.get(hash) else {
            return Vec::new();
        };
        list.iter()
            .rev()
            .filter(|(a, e)| *e > now && a.is_ipv6() == v6)
            .take(max)
            .map(|(a, _)| *a)
            .collect()
    }
    /// Drops expired announces.
    pub fn expire(&mut self, now: Instant) {
        let mut total = 0;
        self.map.retain(|_, list| {
            list.retain(|(_, e)| *e > now);
            total += list.len();
            !list.is_empty()
        });
        self.total = total;
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
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 1), 1000 + i))
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
    fn store_expires_and_caps() {
        let limits = StoreLimits {
            ttl: Duration::from_secs(1800),
            per_hash: 3,
            hashes: 2,
            total: 4,
        };
        let mut s = PeerStore::new(limits);
        let (a, b, c) = (NodeId([1; 20]), NodeId([2; 20]), NodeId([3; 20]));
        assert!(s.announce(a, peer(1), t(0)));
        assert!(s.announce(a, peer(2), t(10)));
        assert!(s.announce(a, peer(3), t(20)));
        assert!(!s.announce(a, peer(4), t(20)), "per-hash cap");
        assert!(s.announce(a, peer(1), t(30)), "refresh is always fine");
        assert!(s.announce(b, peer(1), t(30)));
        assert!(!s.announce(c, peer(1), t(30)), "hash cap");
        assert!(!s.announce(b, peer(2), t(30)), "total cap");
        assert_eq!(s.len(), 4);
        assert_eq!(s.get(&a, t(40), 10, false).len(), 3);
        assert!(s.get(&a, t(40), 10, true).is_empty());
        assert_eq!(s.get(&a, t(40), 2, false).len(), 2);
        // peer(1) was refreshed at 30 s: it outlives peer(2) and peer(3).
        assert_eq!(s.get(&a, t(1825), 10, false), [peer(1)]);
        s.expire(t(1825));
        assert_eq!(s.len(), 2);
        s.expire(t(1830));
        assert!(s.is_empty());
        assert_eq!(s.hash_count(), 0);
    }
}
