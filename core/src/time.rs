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

/// A transfer rate estimate in bytes per second, kept two ways from one count of bytes.
///
/// - [`Rate::at`], for display: a sliding window. Bytes are counted in one-second
///   buckets, and the rate is the bytes of the last two full seconds and of the second
///   in progress over the time they span (2 to 3 s; less while the first byte is
///   younger than that, at least one second). A step in the real rate shows in full
///   within three seconds, with no lag in the steady state, and a silent peer reads
///   zero three seconds after its last byte. (The average below read 58% of a step
///   three seconds after it, and so about 60% of a download's rate three seconds in.)
/// - [`Rate::get`], for the engine's decisions (request pipeline depth, choking):
///   seconds folded into an exponential moving average, weight 1/4 for the newest,
///   0 until the first second is over ("nothing measured yet"); smooth, so a peer's
///   rank does not jump with one busy second.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rate {
    total: u64,
    /// The average: the start of its second, its bytes, the average.
    bucket_start: Instant,
    bucket: u64,
    rate: u64,
    /// The window: the start of the second in progress (meaningful once `started`)...
    start: Instant,
    /// ... its bytes ...
    cur: u64,
    /// ... those of the last full seconds, the newest first ...
    past: [u64; RATE_WINDOW_SECS],
    /// ... and how many full seconds `past` holds since the first byte.
    filled: u8,
    started: bool,
}

/// Full seconds the window of a [`Rate`] holds, besides the second in progress.
const RATE_WINDOW_SECS: usize = 2;

impl Rate {
    /// Counts `n` bytes at `now`.
    pub fn add(&mut self, now: Instant, n: u64) {
        if !self.started {
            self.started = true;
            self.start = now;
        }
        self.tick(now);
        self.total = self.total.saturating_add(n);
        self.bucket = self.bucket.saturating_add(n);
        self.cur = self.cur.saturating_add(n);
    }
    /// Folds finished seconds into the average and moves them into the window.
    pub fn tick(&mut self, now: Instant) {
        self.slide(now);
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
    /// Moves the seconds finished by `now` into the window.
    fn slide(&mut self, now: Instant) {
        if !self.started {
            return;
        }
        let elapsed = now.since(self.start).as_millis();
        if elapsed < 1000 {
            return;
        }
        let secs = elapsed / 1000;
        if secs > RATE_WINDOW_SECS as u64 {
            // Silent for the whole window.
            self.past = [0; RATE_WINDOW_SECS];
        } else {
            for _ in 0..secs {
                self.past.rotate_right(1);
                self.past[0] = self.cur;
                self.cur = 0;
            }
        }
        self.filled = (u64::from(self.filled) + secs).min(RATE_WINDOW_SECS as u64) as u8;
        self.cur = 0;
        self.start = Instant::from_millis(now.as_millis() - elapsed % 1000);
    }
    /// Bytes per second, the smoothed average as of the last full second (for the
    /// engine's decisions).
    pub const fn get(&self) -> u64 {
        self.rate
    }
    /// Bytes per second at `now` over the sliding window: the full seconds of the
    /// window and the second in progress, over the time they span (at least one
    /// second). For display.
    pub fn at(&self, now: Instant) -> u64 {
        let mut r = *self;
        r.slide(now);
        if !r.started {
            return 0;
        }
        let filled = usize::from(r.filled);
        let span = filled as u64 * 1000 + now.since(r.start).as_millis();
        let bytes = r.past[..filled].iter().sum::<u64>().saturating_add(r.cur);
        bytes.saturating_mul(1000) / span.max(1000)
    }
    /// Bytes counted in all.
    pub const fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes at `per_sec` a second, in 10 ms steps from `from` to `to` (ms).
    fn feed(r: &mut Rate, from: u64, to: u64, per_sec: u64) {
        let mut t = from;
        while t < to {
            r.add(Instant::from_millis(t), per_sec / 100);
            t += 10;
        }
    }

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

    /// The reported rate is the real one within a second of the first byte and within
    /// three seconds of a step, with no lag in between (an exponential average of
    /// weight 1/4 a second read 58% of a step three seconds after it).
    #[test]
    fn rate_tracks_steps_without_lag() {
        let mut r = Rate::default();
        feed(&mut r, 5_000, 6_000, 1_000_000);
        let at = r.at(Instant::from_millis(6_000));
        assert!((950_000..=1_050_000).contains(&at), "after 1 s: {at}");
        let mut from = 6_000;
        for t in [7_000, 8_500, 10_000] {
            feed(&mut r, from, t, 1_000_000);
            from = t;
            let at = r.at(Instant::from_millis(t));
            assert!((950_000..=1_050_000).contains(&at), "at {t}: {at}");
        }
        // Up to 4 MB/s: in full after three seconds, most of the way after two.
        feed(&mut r, 10_000, 12_000, 4_000_000);
        let at = r.at(Instant::from_millis(12_000));
        assert!(at >= 3_000_000, "2 s after the step: {at}");
        feed(&mut r, 12_000, 13_000, 4_000_000);
        let at = r.at(Instant::from_millis(13_000));
        assert!((3_900_000..=4_100_000).contains(&at), "3 s after: {at}");
        // The smoothed average is still on its way.
        assert!(r.get() < 3_500_000, "{}", r.get());
        // Silence: zero three seconds after the last byte.
        assert_eq!(r.at(Instant::from_millis(16_000)), 0);
        // Nothing yet: nothing measured.
        assert_eq!(Rate::default().at(Instant::from_millis(9)), 0);
    }
}
