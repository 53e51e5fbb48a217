//! LEDBAT congestion control (RFC 6817, as BEP 29 applies it to uTP): the window
//! follows the one-way queueing delay of our packets, growing while it is below the
//! 100 ms target and shrinking above it, so a uTP upload gives way to the household's
//! other traffic instead of filling the modem's buffer.
//!
//! - **Delay.** Each packet from the peer carries `timestamp_difference`: its clock at
//!   receipt minus our clock at sending, i.e. the one-way delay of our packets plus
//!   the (unknown) offset between the clocks. The offset cancels out by subtracting
//!   the *base delay*, the smallest such sample seen recently: what is left is the
//!   queueing delay. Samples are wrapping 32-bit microseconds, compared on the circle.
//! - **Base delay history.** The minimum per minute, kept for [`BASE_HISTORY`]
//!   minutes (RFC 6817's `BASE_HISTORY` buckets, shortened as libutp does): a route
//!   change or a drifting clock moves the base within that time, which is all the
//!   clock-drift handling done here.
//! - **Current delay.** The lowest of the last [`CURRENT_FILTER`] queueing delays
//!   (RFC 6817's FILTER), so one late packet does not shrink the window.
//! - **Growth and decrease.** Per acknowledgement of `bytes_acked` bytes,
//!   `cwnd += gain * (target - delay) / target * bytes_acked * mss / cwnd` (RFC 6817
//!   section 2.4.2, the form BEP 29 gives): below the target the window grows by up to
//!   `gain` packets per round trip, above it shrinks in proportion to the excess.
//!   Growth is capped at the bytes in flight plus one packet (RFC 6817's
//!   `ALLOWED_INCREASE`), so an idle connection does not build a window it never used.
//! - **Slow start.** As libtorrent does: until the first loss or until the delay
//!   passes 90% of the target, the window grows by the bytes acknowledged.
//! - **Loss.** A lost packet halves the window (at most once per window; the caller
//!   gates), a timeout drops it to one packet and restarts slow start.
//! - **Floor.** The window never goes below [`LedbatConfig::min_cwnd`] (one packet by
//!   default), and the connection may always have one packet in flight, so a
//!   connection behind a long queue keeps probing instead of stalling.

use crate::time::{Duration, Instant};

/// Minutes of base delay history.
pub const BASE_HISTORY: usize = 2;
/// Queueing delay samples the current delay is the minimum of.
pub const CURRENT_FILTER: usize = 3;
/// The length of one base delay bucket.
const BUCKET: Duration = Duration::from_secs(60);
/// The largest window kept, in bytes (the send buffer bounds it sooner in practice).
const MAX_CWND: i64 = 16 << 20;
/// Fixed-point scale of the window (libtorrent keeps it the same way): growth of a
/// fraction of a byte per acknowledgement adds up.
const FP: i64 = 1 << 16;

/// The controller's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedbatConfig {
    /// The queueing delay aimed at, in microseconds (RFC 6817: at most 100 ms).
    pub target_us: u32,
    /// The largest payload of one packet, in bytes.
    pub mss: u32,
    /// The window's floor in bytes.
    pub min_cwnd: u32,
    /// The window at the start, in bytes.
    pub initial_cwnd: u32,
    /// RFC 6817's GAIN: packets of growth per round trip at zero queueing delay.
    pub gain: u32,
    /// The share of the window kept on a loss, in percent (libtorrent: 50).
    pub loss_percent: u32,
}

impl LedbatConfig {
    /// The defaults for a payload size of `mss`: 100 ms target, a floor of one packet,
    /// two packets at the start, gain 1, halving on loss.
    pub const fn for_mss(mss: u32) -> Self {
        Self {
            target_us: 100_000,
            mss,
            min_cwnd: mss,
            initial_cwnd: mss.saturating_mul(2),
            gain: 1,
            loss_percent: 50,
        }
    }
}

/// `a` before `b` on the 32-bit microsecond circle.
fn wrapping_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// The base delay history and the current delay filter.
#[derive(Clone, Debug)]
pub struct DelayHistory {
    /// Minute minima of the raw samples, newest first.
    buckets: [Option<u32>; BASE_HISTORY],
    bucket_start: Option<Instant>,
    recent: [u32; CURRENT_FILTER],
    recent_len: usize,
    recent_next: usize,
}

impl Default for DelayHistory {
    fn default() -> Self {
        Self::new()
    }
}

impl DelayHistory {
    /// An empty history.
    pub const fn new() -> Self {
        Self {
            buckets: [None; BASE_HISTORY],
            bucket_start: None,
            recent: [0; CURRENT_FILTER],
            recent_len: 0,
            recent_next: 0,
        }
    }

    /// The base delay: the lowest raw sample of the history (wrapping order).
    pub fn base(&self) -> Option<u32> {
        self.buckets
            .iter()
            .flatten()
            .copied()
            .reduce(|a, b| if wrapping_lt(b, a) { b } else { a })
    }

    /// Adds a raw sample (`timestamp_difference` of a packet); returns its queueing
    /// delay in microseconds.
    pub fn add(&mut self, now: Instant, raw: u32) -> u32 {
        let start = *self.bucket_start.get_or_insert(now);
        let elapsed = now.since(start).as_millis() / BUCKET.as_millis();
        if elapsed > 0 {
            let shift = usize::try_from(elapsed).unwrap_or(BASE_HISTORY);
            for _ in 0..shift.min(BASE_HISTORY) {
                self.buckets.rotate_right(1);
                self.buckets[0] = None;
            }
            self.bucket_start = Some(now);
        }
        self.buckets[0] = Some(match self.buckets[0] {
            Some(m) if !wrapping_lt(raw, m) => m,
            _ => raw,
        });
        let base = self.base().unwrap_or(raw);
        let delay = raw.wrapping_sub(base);
        // Below the base on the circle (cannot happen after the update above, but the
        // arithmetic stays total).
        let delay = if delay > i32::MAX as u32 { 0 } else { delay };
        self.recent[self.recent_next] = delay;
        self.recent_next = (self.recent_next + 1) % CURRENT_FILTER;
        self.recent_len = (self.recent_len + 1).min(CURRENT_FILTER);
        delay
    }

    /// The current queueing delay (the lowest recent sample), if any was taken.
    pub fn current(&self) -> Option<u32> {
        self.recent[..self.recent_len].iter().copied().min()
    }
}

/// The congestion window.
#[derive(Clone, Debug)]
pub struct Ledbat {
    cfg: LedbatConfig,
    /// The window, bytes times [`FP`].
    cwnd: i64,
    slow_start: bool,
    ssthresh: i64,
    history: DelayHistory,
}

impl Ledbat {
    /// A controller at its initial window, in slow start.
    pub fn new(cfg: LedbatConfig) -> Self {
        let floor = i64::from(cfg.min_cwnd.max(1));
        Self {
            cfg,
            cwnd: i64::from(cfg.initial_cwnd).clamp(floor, MAX_CWND) * FP,
            slow_start: true,
            ssthresh: MAX_CWND,
            history: DelayHistory::new(),
        }
    }

    /// The window in bytes.
    pub fn cwnd(&self) -> u32 {
        u32::try_from(self.cwnd / FP).unwrap_or(u32::MAX)
    }

    /// Whether the controller is in slow start.
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// The delay history.
    pub fn history(&self) -> &DelayHistory {
        &self.history
    }

    /// Sets the window (tests and the initial handshake); clamped to the floor.
    pub fn set_cwnd(&mut self, bytes: u32) {
        self.cwnd = i64::from(bytes).clamp(self.floor(), MAX_CWND) * FP;
    }

    /// Leaves slow start (tests, and a peer known to be behind a queue).
    pub fn end_slow_start(&mut self) {
        self.slow_start = false;
        self.ssthresh = self.cwnd / FP;
    }

    fn floor(&self) -> i64 {
        i64::from(self.cfg.min_cwnd.max(1))
    }

    /// A one-way delay sample from a packet's `timestamp_difference` (zero means the
    /// peer had nothing to measure and is ignored).
    pub fn on_delay_sample(&mut self, now: Instant, raw: u32) {
        if raw != 0 {
            self.history.add(now, raw);
        }
    }

    /// `bytes_acked` bytes newly acknowledged while `flight` bytes (these included)
    /// were in flight.
    pub fn on_ack(&mut self, bytes_acked: u32, flight: u32) {
        if bytes_acked == 0 {
            return;
        }
        let target = i64::from(self.cfg.target_us.max(1));
        let delay = i64::from(self.history.current().unwrap_or(0));
        let old = self.cwnd;
        if self.slow_start {
            if delay * 10 > target * 9 {
                self.slow_start = false;
                self.ssthresh = self.cwnd / FP;
            } else {
                self.cwnd += i64::from(bytes_acked) * FP;
                if self.cwnd / FP >= self.ssthresh {
                    self.slow_start = false;
                }
            }
        }
        if !self.slow_start && self.cwnd == old {
            let off_target = target - delay;
            let cwnd_bytes = (self.cwnd / FP).max(1);
            let delta = i128::from(self.cfg.gain)
                * i128::from(off_target)
                * i128::from(bytes_acked)
                * i128::from(self.cfg.mss)
                * i128::from(FP)
                / (i128::from(target) * i128::from(cwnd_bytes));
            let delta =
                i64::try_from(delta).unwrap_or(if delta > 0 { MAX_CWND } else { -MAX_CWND } * FP);
            self.cwnd = self.cwnd.saturating_add(delta);
        }
        if self.cwnd > old {
            // ALLOWED_INCREASE: no growth beyond what was in flight plus a packet.
            let cap = (i64::from(flight) + i64::from(self.cfg.mss)) * FP;
            self.cwnd = self.cwnd.min(old.max(cap));
        }
        self.cwnd = self.cwnd.clamp(self.floor() * FP, MAX_CWND * FP);
    }

    /// A packet was lost (fast retransmit): multiplicative decrease, out of slow start.
    pub fn on_loss(&mut self) {
        let kept = self.cwnd / 100 * i64::from(self.cfg.loss_percent.min(100));
        self.cwnd = kept.max(self.floor() * FP);
        self.slow_start = false;
        self.ssthresh = self.cwnd / FP;
    }

    /// The retransmission timer fired: one packet, slow start up to half the old window.
    pub fn on_timeout(&mut self) {
        self.ssthresh = (self.cwnd / FP / 2).max(self.floor());
        self.cwnd = self.floor() * FP;
        self.slow_start = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn cfg() -> LedbatConfig {
        LedbatConfig::for_mss(1000)
    }

    /// A controller out of slow start at `cwnd`, with queueing delay `delay_us`
    /// (base 5000 µs from an earlier sample).
    fn steady(cwnd: u32, delay_us: u32) -> Ledbat {
        let mut l = Ledbat::new(cfg());
        l.end_slow_start();
        l.set_cwnd(cwnd);
        l.on_delay_sample(at(0), 5000);
        for _ in 0..CURRENT_FILTER {
            l.on_delay_sample(at(1), 5000 + delay_us);
        }
        assert_eq!(l.history().current(), Some(delay_us));
        l
    }

    #[test]
    fn grows_below_target_by_the_hand_computed_amount() {
        // off_target 50 ms of 100: 1 * 0.5 * 1000 * 1000 / 20000 = 25 bytes.
        let mut l = steady(20_000, 50_000);
        l.on_ack(1000, 20_000);
        assert_eq!(l.cwnd(), 20_025);
        // At zero delay: a whole 1000 * 1000 / 20025 = 49.9 bytes.
        let mut l = steady(20_000, 0);
        l.on_ack(1000, 20_000);
        assert_eq!(l.cwnd(), 20_050);
    }

    #[test]
    fn shrinks_above_target_by_the_hand_computed_amount() {
        // 300 ms: off_target -200 ms = -2 * 1000 * 1000 / 20000 = -100 bytes.
        let mut l = steady(20_000, 300_000);
        l.on_ack(1000, 20_000);
        assert_eq!(l.cwnd(), 19_900);
        // On target: unchanged.
        let mut l = steady(20_000, 100_000);
        l.on_ack(1000, 20_000);
        assert_eq!(l.cwnd(), 20_000);
    }

    #[test]
    fn never_below_the_floor() {
        let mut l = steady(1500, 2_000_000);
        for _ in 0..10 {
            l.on_ack(1000, 1500);
        }
        assert_eq!(l.cwnd(), 1000);
        l.on_loss();
        assert_eq!(l.cwnd(), 1000);
        l.on_timeout();
        assert_eq!(l.cwnd(), 1000);
    }

    #[test]
    fn growth_is_capped_by_what_was_in_flight() {
        // Only 2000 bytes in flight of a 20000 window: no growth.
        let mut l = steady(20_000, 0);
        l.on_ack(1000, 2000);
        assert_eq!(l.cwnd(), 20_000);
    }

    #[test]
    fn loss_halves_and_timeout_resets() {
        let mut l = steady(20_000, 0);
        l.on_loss();
        assert_eq!(l.cwnd(), 10_000);
        l.on_timeout();
        assert_eq!(l.cwnd(), 1000);
        assert!(l.in_slow_start());
    }

    #[test]
    fn slow_start_adds_the_bytes_acked_until_the_delay_nears_target() {
        let mut l = Ledbat::new(cfg());
        assert_eq!(l.cwnd(), 2000);
        l.on_ack(1000, 2000);
        assert_eq!(l.cwnd(), 3000);
        l.on_delay_sample(at(0), 1000);
        l.on_delay_sample(at(0), 1000 + 95_000);
        l.on_delay_sample(at(0), 1000 + 95_000);
        l.on_delay_sample(at(0), 1000 + 95_000);
        l.on_ack(1000, 3000);
        assert!(!l.in_slow_start());
        // Then the LEDBAT formula: 5 ms below target: 0.05 * 1000 * 1000 / 3000 = 16.
        assert_eq!(l.cwnd(), 3016);
    }

    #[test]
    fn base_delay_is_a_minimum_over_two_minute_buckets_and_wraps() {
        let mut h = DelayHistory::new();
        // Samples near the 32-bit wrap: the base is the earliest on the circle.
        assert_eq!(h.add(at(0), u32::MAX - 10), 0);
        assert_eq!(h.add(at(1000), 20), 31);
        assert_eq!(h.base(), Some(u32::MAX - 10));
        // After a minute the old minimum is still in the second bucket...
        assert_eq!(h.add(at(61_000), 100), 111);
        // ...and after two more it has aged out: the base rises to the new samples.
        h.add(at(125_000), 500);
        assert_eq!(h.base(), Some(100));
        h.add(at(190_000), 600);
        assert_eq!(h.base(), Some(500));
        assert_eq!(h.current(), Some(100));
    }
}
