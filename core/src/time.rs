//! Time as the core sees it: milliseconds from an epoch the host chooses.
//!
//! The core never reads a clock: every call that depends on time takes `now: Instant`.
//! A host passes a monotonic clock; a simulation passes its own.

use core::ops::{Add, Sub};

/// A point in time, in milliseconds since an arbitrary epoch chosen by the host.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Instant(u64);

/// A span of time in milliseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Duration(u64);

impl Instant {
    /// The epoch.
    pub const ZERO: Self = Self(0);
    /// From milliseconds since the host's epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }
    /// Milliseconds since the host's epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }
    /// Time since `earlier`, or zero if `earlier` is later.
    pub const fn since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl Duration {
    /// Zero.
    pub const ZERO: Self = Self(0);
    /// From milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }
    /// From seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self(s.saturating_mul(1000))
    }
    /// In milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.0))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.since(earlier)
    }
}

/// A transfer rate estimate in bytes per second: bytes are counted in one-second
/// buckets and folded into an exponential moving average (weight 1/4 for the newest
/// second), so a silent peer's rate decays to zero within seconds once `tick`ed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rate {
    total: u64,
    bucket_start: Instant,
    bucket: u64,
    rate: u64,
}

impl Rate {
    /// Counts `n` bytes at `now`.
    pub fn add(&mut self, now: Instant, n: u64) {
        self.tick(now);
        self.total = self.total.saturating_add(n);
        self.bucket = self.bucket.saturating_add(n);
    }
    /// Folds finished seconds into the average.
    pub fn tick(&mut self, now: Instant) {
        let elapsed = now.since(self.bucket_start).as_millis();
        if elapsed < 1000 {
            return;
        }
        let per_sec = self.bucket.saturating_mul(1000) / elapsed;
        self.rate = (self.rate * 3 + per_sec) / 4;
        // Whole idle seconds beyond the first decay the average further.
        for _ in 1..(elapsed / 1000).min(16) {
            self.rate = self.rate * 3 / 4;
        }
        self.bucket = 0;
        self.bucket_start = now;
    }
    /// Bytes per second.
    pub const fn get(&self) -> u64 {
        self.rate
    }
    /// Bytes counted in all.
    pub const fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_follows_and_decays() {
        let mut r = Rate::default();
        for s in 0..20u64 {
            r.add(Instant::from_millis(s * 1000), 100_000);
        }
        r.tick(Instant::from_millis(20_000));
        assert!((90_000..=100_000).contains(&r.get()), "{}", r.get());
        r.tick(Instant::from_millis(40_000));
        assert!(r.get() < 5_000, "{}", r.get());
        assert_eq!(r.total(), 2_000_000);
        assert_eq!(
            Instant::from_millis(5).since(Instant::from_millis(9)),
            Duration::ZERO
        );
    }
}
