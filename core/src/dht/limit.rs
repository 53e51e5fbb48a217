//! What remote parties can make the node send: a per-source query rate that
//! rotating sources cannot flush, and a byte budget for answers to sources the node
//! has not confirmed.
//!
//! # Per-source rate: a keyed count-min of token buckets
//!
//! A table of recently seen addresses with eviction (what this node, and libtorrent's
//! `dos_blocker`, used before) forgets a flooding address as soon as more addresses
//! than it has slots send a query each: the attacker rotates through spoofed sources
//! and every query is answered. Here nothing is ever evicted: the source key (IPv4
//! /24, IPv6 /64; see [`addr::rate_key`]) is hashed with a secret key (SipHash-2-4,
//! so a remote party cannot aim at chosen cells) into one cell of each of two rows.
//! Each cell is a token bucket in GCRA form: the time its bucket is next full again
//! (its "theoretical arrival time"), a single number. A query is allowed when the
//! less loaded of its two cells has a token; both cells are then charged
//! (conservative update: a cell is only raised to the new value). A source sharing
//! cells with others can only be limited more, never less; to hold back a source
//! that shares no cell with it, a flood must fill every cell of a row, which takes
//! `width × rate` queries a second (40,960 with the defaults).
//!
//! # Byte budget
//!
//! A token bucket of bytes a second with three seconds' worth of burst (as
//! libtorrent's `dht_upload_rate_limit`): answers (and pings of the querier) to
//! sources that never answered us are sent only while it holds enough; past it,
//! queries from such sources go unanswered. Nodes of the routing table, which
//! answered a query of ours from their address, still get answers.

use crate::hash::siphash24;
use crate::time::Instant;
use alloc::vec;
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::addr;

/// Rows of the count-min table.
const ROWS: usize = 2;

/// Queries per second per source key, with a one-second burst, over a fixed table
/// that cannot be flushed.
#[derive(Clone, Debug)]
pub(crate) struct SourceLimiter {
    key: [u8; 16],
    width: usize,
    /// When each cell's bucket is full again, in microseconds of [`Instant`].
    cells: Vec<u64>,
    /// Microseconds one query costs (`1 s / rate`); 0 when no query is allowed.
    interval: u64,
    /// How far ahead of now a cell may run (the burst less one query).
    tolerance: u64,
}

impl SourceLimiter {
    /// `per_sec` queries a second (and as many at once) per source, over `width`
    /// cells per row (at least 1); `key` from the host's randomness.
    pub(crate) fn new(key: [u8; 16], width: usize, per_sec: u32) -> Self {
        let width = width.max(1);
        // At least a microsecond, so that a rate above a million still allows.
        let interval = (1_000_000 / u64::from(per_sec.max(1))).max(1);
        Self {
            key,
            width,
            cells: vec![0; ROWS * width],
            interval: if per_sec == 0 { 0 } else { interval },
            tolerance: interval * u64::from(per_sec.saturating_sub(1)),
        }
    }

    /// Whether a query from `from` may be answered at `now`; charges it if so.
    pub(crate) fn allow(&mut self, now: Instant, from: &SocketAddr) -> bool {
        if self.interval == 0 {
            return false;
        }
        let mut k = [0u8; 19];
        let n = addr::rate_key(from, &mut k);
        let h = siphash24(&self.key, &k[..n]);
        let w = self.width as u64;
        let idx = [(h & 0xffff_ffff) % w, self.width as u64 + (h >> 32) % w];
        let t = now.as_millis().saturating_mul(1000);
        let least = idx
            .iter()
            .map(|&i| self.cells[i as usize])
            .min()
            .unwrap_or(0);
        let tat = least.max(t);
        if tat - t > self.tolerance {
            return false;
        }
        let next = tat.saturating_add(self.interval);
        for i in idx {
            let c = &mut self.cells[i as usize];
            *c = (*c).max(next);
        }
        true
    }
}

/// Bytes a second with three seconds' worth of burst.
#[derive(Clone, Debug)]
pub(crate) struct ByteBudget {
    per_sec: u64,
    /// Millibytes available (bytes a second are millibytes a millisecond).
    level: u64,
    at: Instant,
}

impl ByteBudget {
    /// A full budget of `per_sec` bytes a second.
    pub(crate) fn new(per_sec: u32, now: Instant) -> Self {
        let per_sec = u64::from(per_sec);
        Self {
            per_sec,
            level: per_sec * 3_000,
            at: now,
        }
    }

    /// Takes `n` bytes if the budget holds them at `now`.
    pub(crate) fn take(&mut self, now: Instant, n: usize) -> bool {
        let ms = now.since(self.at).as_millis();
        self.at = self.at.max(now);
        let cap = self.per_sec * 3_000;
        self.level = self
            .level
            .saturating_add(self.per_sec.saturating_mul(ms))
            .min(cap);
        let cost = (n as u64).saturating_mul(1000);
        if self.level < cost {
            return false;
        }
        self.level -= cost;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }
    fn ms(t: u64) -> Instant {
        Instant::from_millis(t)
    }

    #[test]
    fn rate_per_source_with_a_burst() {
        let mut l = SourceLimiter::new([1; 16], 64, 10);
        let src = a("192.0.2.1:1");
        let allowed = (0..100).filter(|_| l.allow(ms(1000), &src)).count();
        assert_eq!(allowed, 10, "a second's worth at once");
        // The same /24 shares it; another /24 does not.
        assert!(!l.allow(ms(1000), &a("192.0.2.99:7")));
        assert!(l.allow(ms(1000), &a("192.0.3.1:1")));
        // Then 10 a second.
        let later = (0..100)
            .filter(|i| l.allow(ms(1000 + i * 10), &src))
            .count();
        assert!((9..=11).contains(&later), "{later} in the next second");
        // Idle: the full burst again, no more.
        let allowed = (0..100).filter(|_| l.allow(ms(60_000), &src)).count();
        assert_eq!(allowed, 10);
        assert_eq!(l.cells.len(), 2 * 64);
        // A rate of 0 allows nothing.
        let mut none = SourceLimiter::new([1; 16], 4, 0);
        assert!(!none.allow(ms(0), &src));
        // A rate beyond a million a second allows (it does not wrap to none).
        let mut all = SourceLimiter::new([1; 16], 4, u32::MAX);
        assert!((0..1000).all(|_| all.allow(ms(0), &src)));
    }

    #[test]
    fn rotation_does_not_flush_a_source() {
        let mut l = SourceLimiter::new([2; 16], 1024, 20);
        let evil = a("192.0.2.66:1");
        let mut answered = 0;
        for i in 0..10_000u32 {
            let other = SocketAddr::from(([100, (i >> 8) as u8, i as u8, 1], 1));
            let _ = l.allow(ms(u64::from(i / 10)), &other);
            if l.allow(ms(u64::from(i / 10)), &evil) {
                answered += 1;
            }
        }
        // 10,000 queries over one second, among 10,000 other sources: the burst
        // of 20, then 20 a second.
        assert!((39..=41).contains(&answered), "{answered}");
    }

    #[test]
    fn byte_budget() {
        let mut b = ByteBudget::new(1000, ms(0));
        assert!(b.take(ms(0), 3000), "three seconds of burst");
        assert!(!b.take(ms(0), 1));
        assert!(!b.take(ms(499), 500));
        assert!(b.take(ms(500), 500));
        assert!(!b.take(ms(500), 1));
        // An older `now` neither panics nor refills.
        assert!(!b.take(ms(100), 1));
        assert!(b.take(ms(100_000), 3000));
        assert!(!b.take(ms(100_000), 1));
        let mut zero = ByteBudget::new(0, ms(0));
        assert!(!zero.take(ms(10_000), 1));
        assert!(zero.take(ms(10_000), 0));
    }
}
