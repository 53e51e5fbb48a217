//! Who sent the bad data: per-block attribution of hash failures (libtorrent's
//! "smart ban" and "parole mode").
//!
//! A piece that fails its hash check says only that one of its blocks is wrong, not
//! whose. Blaming every peer that sent a block of it (strikes) bans honest peers that
//! shared a piece with a bad one, and gains nothing against a bad peer that comes back.
//! Instead:
//!
//! 1. A failed piece whose blocks all came from one address: that address sent the bad
//!    data and is banned at once.
//! 2. Otherwise the host gives the SHA-1 of each block as it read the failed data, and
//!    a record (block, sender address, digest) is kept per block. Every sender goes on
//!    *parole*: the picker gives it only pieces no other peer works on
//!    ([`PickHint::Parole`](crate::picker::PickHint)), so its next bad piece is its
//!    own (case 1). A peer on parole leaves it when a piece it alone sent passes.
//! 3. When a piece with records passes, the host is asked for the digests of its good
//!    blocks ([`Action::Verify`](super::Action)`::block_digests`): every address whose
//!    recorded block differs from the good one sent bad data and is banned; the others
//!    are cleared. An address that sends the same block of a failed piece twice with
//!    different data is banned as well (one of the two was wrong).
//!
//! The host hashes blocks only for a failed piece or one that failed before: the
//! common path costs nothing. SHA-1 needs no salt here (libtorrent salted its CRC32):
//! making a bad block pass for a good one would take a second preimage.
//!
//! A connection that leaves while blocks it sent wait for their piece's check is
//! remembered (connection key → address), so that leaving at once does not clear the
//! sender. Records, addresses on parole and remembered senders are each bounded by
//! [`SessionConfig::max_failed_block_records`](super::SessionConfig); past it the
//! oldest go.

use super::bans::{canonical, BanReason};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::net::IpAddr;

/// One block of a failed piece: who sent it and the digest of what it sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    block: u32,
    ip: IpAddr,
    digest: [u8; 20],
}

/// The smart-ban state of one torrent.
#[derive(Debug, Default)]
pub(crate) struct SmartBan {
    cap: usize,
    /// Records of the pieces that failed and have not passed since, by piece, with
    /// the order in which they were first recorded (oldest evicted first).
    failed: BTreeMap<u32, (u64, Vec<Record>)>,
    records: usize,
    seq: u64,
    /// Connection keys that left while blocks they sent were unverified.
    departed: BTreeMap<u32, IpAddr>,
    /// Addresses on parole.
    parole: BTreeSet<IpAddr>,
}

impl SmartBan {
    /// Empty state keeping at most `cap` records (and as many parole entries and
    /// departed senders).
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            ..Self::default()
        }
    }

    /// Nothing recorded and nobody on parole: a piece that passes needs no look at
    /// its senders.
    pub(crate) fn is_idle(&self) -> bool {
        self.failed.is_empty() && self.parole.is_empty()
    }

    /// Whether `piece` failed before: the host must give its block digests when it
    /// passes.
    pub(crate) fn wants_digests(&self, piece: u32) -> bool {
        !self.failed.is_empty() && self.failed.contains_key(&piece)
    }

    /// Whether `ip` is on parole.
    pub(crate) fn on_parole(&self, ip: IpAddr) -> bool {
        !self.parole.is_empty() && self.parole.contains(&canonical(ip))
    }

    /// Records held (for tests and status).
    #[cfg(test)]
    pub(crate) fn records(&self) -> usize {
        self.records
    }

    /// The connection `key` from `ip` left while blocks it sent were unverified.
    /// When the table is full, `holders` gives the keys that still have such blocks
    /// (one pass over the picker): the others are dropped, then the oldest, down to
    /// three quarters of the cap, so that a full table costs one pass per quarter.
    pub(crate) fn peer_left(
        &mut self,
        key: u32,
        ip: IpAddr,
        holders: impl FnOnce() -> BTreeSet<u32>,
    ) {
        if self.cap == 0 {
            return;
        }
        if self.departed.len() >= self.cap {
            let live = holders();
            self.departed.retain(|k, _| live.contains(k));
            while self.departed.len() >= self.cap - self.cap / 4 {
                // Keys grow: the first is the oldest connection.
                self.departed.pop_first();
            }
        }
        self.departed.insert(key, canonical(ip));
    }

    /// The address of a connection that left, if remembered.
    pub(crate) fn departed(&self, key: u32) -> Option<IpAddr> {
        self.departed.get(&key).copied()
    }

    /// The keys of departed connections from `ip`.
    pub(crate) fn departed_keys(&self, ip: IpAddr) -> Vec<u32> {
        let ip = canonical(ip);
        self.departed
            .iter()
            .filter(|(_, a)| **a == ip)
            .map(|(k, _)| *k)
            .collect()
    }

    /// `ip` was banned: forget everything about it.
    pub(crate) fn forget_ip(&mut self, ip: IpAddr) {
        let ip = canonical(ip);
        self.parole.remove(&ip);
        self.departed.retain(|_, a| *a != ip);
        let mut dropped = 0;
        self.failed.retain(|_, (_, recs)| {
            let before = recs.len();
            recs.retain(|r| r.ip != ip);
            dropped += before - recs.len();
            !recs.is_empty()
        });
        self.records -= dropped;
    }

    /// `piece` failed. `senders` holds the sender of each block (`None`: unknown),
    /// `digests` the host's digest of each block as read, if it gave them (the same
    /// length as `senders`). Addresses to ban are appended to `ban`, with why.
    pub(crate) fn piece_failed(
        &mut self,
        piece: u32,
        senders: &[Option<IpAddr>],
        digests: Option<&[[u8; 20]]>,
        ban: &mut Vec<(IpAddr, BanReason)>,
    ) {
        let ips = distinct(senders);
        // A block of unknown origin (its sender forgotten) leaves the doubt.
        let all_known = senders.iter().all(Option::is_some);
        match ips.as_slice() {
            [] => return,
            [sole] if all_known => {
                // It alone sent the piece: it sent the bad data.
                ban.push((*sole, BanReason::SoleSender));
                return;
            }
            _ => {}
        }
        for ip in &ips {
            if self.parole.len() >= self.cap.max(1) {
                self.parole.pop_first();
            }
            self.parole.insert(*ip);
        }
        let Some(digests) = digests.filter(|d| d.len() == senders.len()) else {
            return;
        };
        for (block, (sender, digest)) in senders.iter().zip(digests).enumerate() {
            let Some(ip) = *sender else { continue };
            let block = block as u32;
            let known = self.failed.get(&piece).and_then(|(_, recs)| {
                recs.iter()
                    .find(|r| r.block == block && r.ip == ip)
                    .map(|r| r.digest)
            });
            match known {
                // The same block from the same address, different bytes: one of the
                // two was wrong.
                Some(d) if d != *digest => {
                    if !ban.iter().any(|(b, _)| *b == ip) {
                        ban.push((ip, BanReason::Proven));
                    }
                }
                Some(_) => {}
                None => self.record(
                    piece,
                    Record {
                        block,
                        ip,
                        digest: *digest,
                    },
                ),
            }
        }
    }

    /// `piece` passed. `senders` and `digests` as for [`Self::piece_failed`]: with the
    /// digests of the good blocks, every address whose recorded block differs is
    /// appended to `ban`.
    pub(crate) fn piece_passed(
        &mut self,
        piece: u32,
        senders: &[Option<IpAddr>],
        digests: Option<&[[u8; 20]]>,
        ban: &mut Vec<(IpAddr, BanReason)>,
    ) {
        if let Some((_, recs)) = self.failed.remove(&piece) {
            self.records -= recs.len();
            if let Some(good) = digests {
                for r in recs {
                    let bad = good.get(r.block as usize).is_some_and(|g| *g != r.digest);
                    if bad && !ban.iter().any(|(b, _)| *b == r.ip) {
                        ban.push((r.ip, BanReason::Proven));
                    }
                }
            }
        }
        // A whole good piece from one address on parole: it is trusted again.
        if let ([sole], true) = (
            distinct(senders).as_slice(),
            senders.iter().all(Option::is_some),
        ) {
            self.parole.remove(sole);
        }
    }

    fn record(&mut self, piece: u32, r: Record) {
        if self.cap == 0 {
            return;
        }
        while self.records >= self.cap {
            // Drop the oldest failed piece, if it is not this one.
            let oldest = self
                .failed
                .iter()
                .filter(|(p, _)| **p != piece)
                .min_by_key(|(_, (seq, _))| *seq)
                .map(|(p, _)| *p);
            let Some(p) = oldest else { return };
            if let Some((_, recs)) = self.failed.remove(&p) {
                self.records -= recs.len();
            }
        }
        self.seq += 1;
        let seq = self.seq;
        self.failed
            .entry(piece)
            .or_insert_with(|| (seq, Vec::new()))
            .1
            .push(r);
        self.records += 1;
    }
}

/// The distinct addresses among `senders`, in order of first appearance.
fn distinct(senders: &[Option<IpAddr>]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in senders.iter().flatten() {
        if !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    #[test]
    fn sole_sender_is_banned_at_once() {
        let mut s = SmartBan::new(16);
        let mut ban = Vec::new();
        s.piece_failed(3, &[Some(ip(1)), Some(ip(1)), None], None, &mut ban);
        assert!(ban.is_empty(), "a block of unknown origin leaves the doubt");
        assert!(s.on_parole(ip(1)));
        s.piece_failed(3, &[Some(ip(1)), Some(ip(1)), Some(ip(1))], None, &mut ban);
        assert_eq!(ban, [(ip(1), BanReason::SoleSender)]);
    }

    #[test]
    fn mixed_piece_records_then_bans_exactly_the_bad_sender() {
        let mut s = SmartBan::new(16);
        let mut ban = Vec::new();
        let good = [[1u8; 20], [2; 20], [3; 20]];
        let bad = [[1u8; 20], [9; 20], [3; 20]];
        let senders = [Some(ip(1)), Some(ip(2)), Some(ip(1))];
        s.piece_failed(7, &senders, Some(&bad), &mut ban);
        assert!(ban.is_empty());
        assert!(s.on_parole(ip(1)) && s.on_parole(ip(2)));
        assert!(s.wants_digests(7) && !s.wants_digests(6));
        assert_eq!(s.records(), 3);
        // The piece passes with blocks from ip 1 alone: ip 2's block differed.
        s.piece_passed(7, &[Some(ip(1)); 3], Some(&good), &mut ban);
        assert_eq!(ban, [(ip(2), BanReason::Proven)]);
        assert!(!s.on_parole(ip(1)), "a sole good piece ends parole");
        assert!(s.on_parole(ip(2)));
        assert_eq!(s.records(), 0);
        s.forget_ip(ip(2));
        assert!(s.is_idle());
    }

    #[test]
    fn same_block_twice_with_other_bytes_is_banned() {
        let mut s = SmartBan::new(16);
        let mut ban = Vec::new();
        let senders = [Some(ip(1)), Some(ip(2))];
        s.piece_failed(0, &senders, Some(&[[1; 20], [2; 20]]), &mut ban);
        s.piece_failed(0, &senders, Some(&[[1; 20], [5; 20]]), &mut ban);
        assert_eq!(ban, [(ip(2), BanReason::Proven)]);
        // Without digests nobody is banned, both go on parole.
        let mut s = SmartBan::new(16);
        let mut ban = Vec::new();
        s.piece_failed(0, &senders, None, &mut ban);
        assert!(ban.is_empty() && s.on_parole(ip(1)) && s.on_parole(ip(2)));
        // Digests of the wrong length are ignored.
        s.piece_failed(1, &senders, Some(&[[1; 20]]), &mut ban);
        assert!(!s.wants_digests(1));
    }

    #[test]
    fn bounded() {
        let mut s = SmartBan::new(4);
        let mut ban = Vec::new();
        for piece in 0..10 {
            let senders = [Some(ip(1)), Some(ip(2 + piece as u8))];
            s.piece_failed(piece, &senders, Some(&[[0; 20], [1; 20]]), &mut ban);
            assert!(s.records() <= 4);
            assert!(s.parole.len() <= 4);
        }
        // The newest pieces are kept.
        assert!(s.wants_digests(9) && !s.wants_digests(0));
        for k in 0..10 {
            s.peer_left(k, ip(1), || (0..10).filter(|k| k % 2 == 0).collect());
            assert!(s.departed.len() <= 4);
        }
        assert_eq!(s.departed(9), Some(ip(1)));
        assert_eq!(s.departed_keys(ip(1)).len(), s.departed.len());
        let mut none = SmartBan::new(0);
        none.piece_failed(
            0,
            &[Some(ip(1)), Some(ip(2))],
            Some(&[[0; 20]; 2]),
            &mut ban,
        );
        assert_eq!(none.records(), 0);
        none.peer_left(1, ip(1), BTreeSet::new);
        assert_eq!(none.departed(1), None);
    }
}
