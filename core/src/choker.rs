//! The choker: which peers we upload to (BEP 3, "Choking").
//!
//! BEP 3 lets every peer upload to only a few others at a time ("unchoked") and asks it
//! to reward the peers that give the most back, so that the swarm converges on
//! reciprocal trading (tit-for-tat). This module is that decision and nothing else: it
//! reads no clock, owns no RNG, knows no sockets and allocates nothing. The session
//! measures rates and passes them in; time is a `now_ms` argument (milliseconds from
//! any epoch the host likes) and randomness comes from the host's `rng` closure.
//!
//! # A round
//!
//! [`Choker::run`] takes one [`ChokeCandidate`] per connected peer and writes, into a
//! caller slice of the same length, whether each peer must be unchoked after the round.
//! The session then sends `choke`/`unchoke` for the peers whose state changed.
//!
//! 1. **Regular slots** ([`ChokerConfig::upload_slots`]; 0 = unlimited) go to the best
//!    *interested* peers (an uninterested peer would not use the slot):
//!    - *leeching*: by [`ChokeCandidate::download_rate`], the rate at which the peer
//!      sends to us (tit-for-tat, BEP 3). Snubbed peers (no block for a minute, as
//!      judged by the session) get no regular slot: they have shown they give nothing
//!      back.
//!    - *seeding*: we download nothing, so there is nothing to reciprocate; peers are
//!      ranked by [`ChokeCandidate::upload_rate`], the rate at which they take data
//!      from us (libtorrent's `fastest_upload` seed choking): the peers that can absorb
//!      the most spread the pieces fastest. `snubbed` is ignored when seeding.
//!
//!    Equal rates are ordered first by incumbency (a peer that is already unchoked
//!    keeps its slot, which avoids choke/unchoke churn between equal peers), then by
//!    ascending key, so that a round is a pure function of its input and the `rng`.
//!
//! 2. **One optimistic slot**, on top of the regular ones, goes to a peer drawn at
//!    random among the interested peers that did not get a regular slot, preferring
//!    peers that are currently choked and not the previous holder (falling back to any
//!    such peer when there is none). Peers with [`ChokeCandidate::is_new`] weigh 3 and
//!    the others 1: a new peer has no piece to trade yet and the optimistic slot is its
//!    only way in (BitTorrent mainline and libtorrent do the same). Snubbed peers may be
//!    drawn: the optimistic slot is how a peer gets a second chance.
//!
//!    The holder keeps the slot for [`ChokerConfig::optimistic_interval_ms`] even when
//!    it would not rank for a regular slot (that is the point: it needs time to start
//!    reciprocating), and while it holds the slot it does not also take a regular one,
//!    so a round unchokes up to `upload_slots + 1` distinct peers. The slot is freed
//!    early when its holder disconnects ([`Choker::peer_gone`]), leaves the candidate
//!    list or loses interest; it is then drawn again in the next round.
//!
//! # Timing
//!
//! ```text
//!   run ──▶ next_round_at = min(last round + interval_ms,
//!                               optimistic chosen + optimistic_interval_ms)
//!            should_run(now) ⇔ now >= next_round_at
//!   peer_gone(optimistic holder) ──▶ next_round_at = 0 (run as soon as possible)
//! ```
//!
//! The host calls [`Choker::run`] when [`Choker::should_run`] says so (and may call it
//! at any other time, e.g. when an unchoked peer disconnects or a choked peer becomes
//! interested while slots are free); [`Choker::next_round_at`] feeds its poll timeout.
//!
//! # Complexity
//!
//! `n` candidates, `s` regular slots: O(n · s) time per round (a partial selection, no
//! sort), O(n) when slots are unlimited, O(1) memory beyond the caller's output slice.

use core::fmt;

/// Tunables, with libtorrent's and mainline's defaults.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct ChokerConfig {
    /// Regular upload slots (the optimistic slot comes on top). 0 = unlimited: every
    /// eligible interested peer is unchoked.
    pub upload_slots: usize,
    /// Milliseconds between regular rounds (BEP 3: ten seconds).
    pub interval_ms: u64,
    /// Milliseconds an optimistic unchoke lasts before the slot rotates (BEP 3: thirty
    /// seconds, i.e. every third round).
    pub optimistic_interval_ms: u64,
}

impl Default for ChokerConfig {
    fn default() -> Self {
        Self {
            upload_slots: 4,
            interval_ms: 10_000,
            optimistic_interval_ms: 30_000,
        }
    }
}

/// One connected peer as the session sees it at the time of a round.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ChokeCandidate {
    /// The session's opaque key for the peer, stable while it is connected. Keys should
    /// be unique within one call; they also break ties between equal peers.
    pub key: u32,
    /// The peer is interested in us (it sent `interested` last). Only interested peers
    /// are unchoked.
    pub interested: bool,
    /// Bytes per second the peer sends us (its payload rate), ranks peers when leeching.
    pub download_rate: u64,
    /// Bytes per second we send the peer, ranks peers when seeding.
    pub upload_rate: u64,
    /// The peer has sent us nothing for a while although we asked: no regular slot while
    /// leeching.
    pub snubbed: bool,
    /// The peer connected recently: three times the weight in the optimistic draw.
    pub is_new: bool,
    /// We currently unchoke the peer (wins ties, and such a peer is drawn for the
    /// optimistic slot only when no choked peer can be).
    pub currently_unchoked: bool,
}

/// What a round decided, besides the per-peer output slice.
#[must_use]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ChokeRound {
    /// Peers marked unchoked in the output slice (regular plus optimistic).
    pub unchoked: usize,
    /// Key of the peer holding the optimistic slot after the round, if any.
    pub optimistic: Option<u32>,
    /// The optimistic slot was (re)drawn in this round (the holder's time was up, it
    /// left or lost interest, or the slot was empty), whether or not anyone was eligible.
    pub optimistic_rotated: bool,
}

/// Why [`Choker::run`] refused to run. The local caller's fault; no state changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ChokerError {
    /// The output slice is not exactly as long as the candidate slice.
    OutputLength,
}

impl fmt::Display for ChokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OutputLength => "choker output slice length differs from candidate count",
        })
    }
}

/// The choker state: who holds the optimistic slot since when, and when the last
/// round ran. See the [module documentation](self) for the algorithm.
///
/// Methods: getters ([`config`](Self::config), [`optimistic`](Self::optimistic),
/// [`should_run`](Self::should_run), [`next_round_at`](Self::next_round_at)), one
/// input ([`peer_gone`](Self::peer_gone)) and one command ([`run`](Self::run)).
#[derive(Clone, Debug)]
pub struct Choker {
    config: ChokerConfig,
    /// Key of the optimistic holder and when it was chosen.
    optimistic: Option<(u32, u64)>,
    /// When the last round ran; `None` before the first round or when a round is due
    /// at once (the optimistic holder left).
    last_round_ms: Option<u64>,
}

impl Choker {
    /// A choker that has not run yet: the first round is due immediately.
    pub fn new(config: ChokerConfig) -> Self {
        Self {
            config,
            optimistic: None,
            last_round_ms: None,
        }
    }

    /// Key of the peer holding the optimistic slot, if any.
    pub fn optimistic(&self) -> Option<u32> {
        self.optimistic.map(|(key, _)| key)
    }

    /// When the next round is due, in the host's milliseconds: the earlier of the next
    /// regular round and the optimistic rotation. 0 before the first round or after the
    /// optimistic holder left (run as soon as possible).
    pub fn next_round_at(&self) -> u64 {
        let Some(last) = self.last_round_ms else {
            return 0;
        };
        let regular = last.saturating_add(self.config.interval_ms);
        match self.optimistic {
            Some((_, since)) => {
                regular.min(since.saturating_add(self.config.optimistic_interval_ms))
            }
            None => regular,
        }
    }

    /// Whether a round is due at `now_ms`.
    pub fn should_run(&self, now_ms: u64) -> bool {
        now_ms >= self.next_round_at()
    }

    /// The peer `key` disconnected. If it held the optimistic slot the slot is freed and
    /// a round becomes due at once, so that another peer gets it.
    pub fn peer_gone(&mut self, key: u32) {
        if self.optimistic() == Some(key) {
            self.optimistic = None;
            self.last_round_ms = None;
        }
    }

    /// Runs a round at `now_ms`: writes into `out[i]` whether `candidates[i]` must be
    /// unchoked afterwards (every element is written) and returns a summary.
    ///
    /// `seeding` selects the ranking (download rate while leeching, upload rate while
    /// seeding); `rng` is drawn only when the optimistic slot is (re)assigned, so equal
    /// inputs and an equally seeded `rng` give equal outputs.
    ///
    /// # Errors
    ///
    /// [`ChokerError::OutputLength`] if `out.len() != candidates.len()`; nothing is
    /// written and the state is unchanged.
    pub fn run(
        &mut self,
        now_ms: u64,
        seeding: bool,
        candidates: &[ChokeCandidate],
        out: &mut [bool],
        rng: &mut impl FnMut() -> u32,
    ) -> Result<ChokeRound, ChokerError> {
        if out.len() != candidates.len() {
            return Err(ChokerError::OutputLength);
        }
        out.fill(false);

        // The current holder, if it is still here and still wants data.
        let previous = self.optimistic();
        let holder = self.optimistic.and_then(|(key, since)| {
            let i = candidates
                .iter()
                .position(|c| c.key == key && c.interested)?;
            let expired = now_ms.saturating_sub(since) >= self.config.optimistic_interval_ms;
            (!expired).then_some(i)
        });

        // Regular slots; a holder that keeps its slot does not compete.
        let eligible = |i: usize| {
            let c = &candidates[i];
            c.interested && (seeding || !c.snubbed) && Some(i) != holder
        };
        let mut unchoked = 0;
        if self.config.upload_slots == 0 {
            for (i, o) in out.iter_mut().enumerate() {
                if eligible(i) {
                    *o = true;
                    unchoked += 1;
                }
            }
        } else {
            while unchoked < self.config.upload_slots {
                let mut best: Option<usize> = None;
                for i in 0..candidates.len() {
                    if out[i] || !eligible(i) {
                        continue;
                    }
                    if best.is_none_or(|b| ranks_before(&candidates[i], &candidates[b], seeding)) {
                        best = Some(i);
                    }
                }
                let Some(b) = best else { break };
                out[b] = true;
                unchoked += 1;
            }
        }

        // The optimistic slot.
        let rotated = holder.is_none();
        let chosen = match holder {
            Some(i) => Some(i),
            None => {
                let free = |i: usize| candidates[i].interested && !out[i];
                draw(candidates, rng, |i| {
                    free(i)
                        && !candidates[i].currently_unchoked
                        && Some(candidates[i].key) != previous
                })
                .or_else(|| draw(candidates, rng, free))
            }
        };
        if let Some(i) = chosen {
            out[i] = true;
            unchoked += 1;
        }
        self.optimistic = match (chosen, rotated) {
            (None, _) => None,
            (Some(_), false) => self.optimistic,
            (Some(i), true) => Some((candidates[i].key, now_ms)),
        };
        self.last_round_ms = Some(now_ms);
        Ok(ChokeRound {
            unchoked,
            optimistic: self.optimistic(),
            optimistic_rotated: rotated,
        })
    }
}

/// Whether `a` ranks strictly before `b` for a regular slot: higher rate, then already
/// unchoked, then lower key.
fn ranks_before(a: &ChokeCandidate, b: &ChokeCandidate, seeding: bool) -> bool {
    let rate = |c: &ChokeCandidate| {
        if seeding {
            c.upload_rate
        } else {
            c.download_rate
        }
    };
    (rate(b), b.currently_unchoked, a.key) < (rate(a), a.currently_unchoked, b.key)
}

/// Weight of a peer in the optimistic draw.
fn weight(c: &ChokeCandidate) -> u64 {
    if c.is_new {
        3
    } else {
        1
    }
}

/// Draws one index among those accepted by `pool`, weighted by [`weight`]. Does not
/// touch `rng` when the pool is empty.
fn draw(
    candidates: &[ChokeCandidate],
    rng: &mut impl FnMut() -> u32,
    pool: impl Fn(usize) -> bool,
) -> Option<usize> {
    let total: u64 = (0..candidates.len())
        .filter(|&i| pool(i))
        .map(|i| weight(&candidates[i]))
        .sum();
    if total == 0 {
        return None;
    }
    // Uniform in 0..total by multiply-shift of a 64-bit draw (bias below 2^-32).
    let r = (u64::from(rng()) << 32) | u64::from(rng());
    let mut target = ((u128::from(r) * u128::from(total)) >> 64) as u64;
    for i in (0..candidates.len()).filter(|&i| pool(i)) {
        let w = weight(&candidates[i]);
        if target < w {
            return Some(i);
        }
        target -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::vec;
    use std::vec::Vec;

    fn rng(seed: u32) -> impl FnMut() -> u32 {
        let mut x = seed.wrapping_mul(2_654_435_761) | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        }
    }

    fn config(slots: usize) -> ChokerConfig {
        ChokerConfig {
            upload_slots: slots,
            ..ChokerConfig::default()
        }
    }

    /// An interested peer downloading to us at `down` and from us at `up`.
    fn peer(key: u32, down: u64, up: u64) -> ChokeCandidate {
        ChokeCandidate {
            key,
            interested: true,
            download_rate: down,
            upload_rate: up,
            ..ChokeCandidate::default()
        }
    }

    /// Keys marked unchoked.
    fn unchoked(c: &[ChokeCandidate], out: &[bool]) -> BTreeSet<u32> {
        c.iter()
            .zip(out)
            .filter(|(_, &o)| o)
            .map(|(c, _)| c.key)
            .collect()
    }

    /// Keys unchoked apart from the optimistic holder.
    fn regular(c: &[ChokeCandidate], out: &[bool], r: &ChokeRound) -> BTreeSet<u32> {
        let mut s = unchoked(c, out);
        if let Some(k) = r.optimistic {
            s.remove(&k);
        }
        s
    }

    fn set(keys: &[u32]) -> BTreeSet<u32> {
        keys.iter().copied().collect()
    }

    /// Runs one round and feeds `currently_unchoked` back into the candidates.
    fn step(
        ch: &mut Choker,
        now: u64,
        seeding: bool,
        c: &mut [ChokeCandidate],
        g: &mut impl FnMut() -> u32,
    ) -> ChokeRound {
        let mut out = vec![false; c.len()];
        let r = ch.run(now, seeding, c, &mut out, g).expect("lengths match");
        for (c, o) in c.iter_mut().zip(&out) {
            c.currently_unchoked = *o;
        }
        r
    }

    #[test]
    fn leeching_ranks_by_download_rate() {
        let c: Vec<_> = (0..10)
            .map(|k| peer(k, u64::from(k) * 100, 1_000 - u64::from(k)))
            .collect();
        let mut ch = Choker::new(config(3));
        let mut out = vec![false; c.len()];
        let r = ch.run(0, false, &c, &mut out, &mut rng(1)).expect("ok");
        assert_eq!(regular(&c, &out, &r), set(&[7, 8, 9]));
        assert_eq!(r.unchoked, 4);
        let opt = r.optimistic.expect("an optimistic peer");
        assert!(opt < 7);
        assert!(r.optimistic_rotated);
    }

    #[test]
    fn seeding_ranks_by_upload_rate() {
        let c: Vec<_> = (0..10)
            .map(|k| peer(k, u64::from(k) * 100, 1_000 - u64::from(k)))
            .collect();
        let mut ch = Choker::new(config(3));
        let mut out = vec![false; c.len()];
        let r = ch.run(0, true, &c, &mut out, &mut rng(1)).expect("ok");
        assert_eq!(regular(&c, &out, &r), set(&[0, 1, 2]));
    }

    #[test]
    fn ties_break_by_incumbency_then_key() {
        let mut c: Vec<_> = (0..6).map(|k| peer(k, 50, 0)).collect();
        let mut ch = Choker::new(config(2));
        let mut out = vec![false; c.len()];
        let r = ch.run(0, false, &c, &mut out, &mut rng(1)).expect("ok");
        assert_eq!(regular(&c, &out, &r), set(&[0, 1]));
        c[4].currently_unchoked = true;
        let mut ch = Choker::new(config(2));
        let r = ch.run(0, false, &c, &mut out, &mut rng(1)).expect("ok");
        assert_eq!(regular(&c, &out, &r), set(&[0, 4]));
    }

    #[test]
    fn uninterested_peers_are_never_unchoked() {
        let mut c: Vec<_> = (0..8)
            .map(|k| peer(k, 1_000 * u64::from(k + 1), 1_000))
            .collect();
        for p in c.iter_mut().filter(|p| p.key % 2 == 1) {
            p.interested = false;
        }
        for seeding in [false, true] {
            for slots in [0, 1, 3, 10] {
                let mut ch = Choker::new(config(slots));
                let mut g = rng(7);
                for round in 0..20 {
                    let mut out = vec![false; c.len()];
                    let _ = ch
                        .run(round * 10_000, seeding, &c, &mut out, &mut g)
                        .expect("ok");
                    for (p, o) in c.iter().zip(&out) {
                        assert!(!*o || p.interested, "uninterested {} unchoked", p.key);
                    }
                }
            }
        }
    }

    #[test]
    fn snubbed_peers_get_no_regular_slot_while_leeching() {
        let mut c: Vec<_> = (0..6)
            .map(|k| peer(k, 1_000 * u64::from(k + 1), 0))
            .collect();
        c[5].snubbed = true;
        c[4].snubbed = true;
        // Only two peers left for the optimistic draw, so it cannot hide the test.
        let mut ch = Choker::new(config(2));
        let mut out = vec![false; c.len()];
        let r = ch.run(0, false, &c, &mut out, &mut rng(3)).expect("ok");
        assert_eq!(regular(&c, &out, &r), set(&[2, 3]));
        // Seeding ignores snubbing.
        for p in &mut c {
            p.upload_rate = p.download_rate;
        }
        let mut ch = Choker::new(config(2));
        let r = ch.run(0, true, &c, &mut out, &mut rng(3)).expect("ok");
        assert_eq!(regular(&c, &out, &r), set(&[4, 5]));
    }

    #[test]
    fn optimistic_slot_holds_for_thirty_seconds_then_rotates() {
        // Peers 0 and 1 are fast, 2..8 send nothing.
        let mut c: Vec<_> = (0..8).map(|k| peer(k, 0, 0)).collect();
        c[0].download_rate = 9_000;
        c[1].download_rate = 8_000;
        let mut ch = Choker::new(config(2));
        let mut g = rng(11);
        let r = step(&mut ch, 0, false, &mut c, &mut g);
        let first = r.optimistic.expect("optimistic chosen");
        assert!(r.optimistic_rotated);
        assert!(
            (2..8).contains(&first),
            "went to a choked peer, not {first}"
        );
        assert_eq!(ch.next_round_at(), 10_000);
        assert!(!ch.should_run(9_999));
        assert!(ch.should_run(10_000));
        // It keeps the slot at 10 s and 20 s although it ranks nowhere.
        for now in [10_000, 20_000, 29_999] {
            let r = step(&mut ch, now, false, &mut c, &mut g);
            assert_eq!(r.optimistic, Some(first));
            assert!(!r.optimistic_rotated);
            assert_eq!(r.unchoked, 3);
            assert_eq!(
                unchoked(
                    &c,
                    &c.iter().map(|p| p.currently_unchoked).collect::<Vec<_>>()
                ),
                {
                    let mut s = set(&[0, 1]);
                    s.insert(first);
                    s
                }
            );
        }
        assert_eq!(ch.next_round_at(), 30_000);
        // At 30 s it rotates to another choked peer.
        let r = step(&mut ch, 30_000, false, &mut c, &mut g);
        assert!(r.optimistic_rotated);
        let second = r.optimistic.expect("optimistic chosen");
        assert_ne!(second, first);
        assert!((2..8).contains(&second));
        assert!(
            !c[first as usize].currently_unchoked,
            "previous holder choked again"
        );
    }

    #[test]
    fn holder_does_not_take_a_regular_slot_too() {
        // The only fast peer is drawn optimistically: the regular slot goes to the next.
        let mut c = vec![peer(1, 0, 0), peer(2, 0, 0)];
        let mut ch = Choker::new(config(1));
        // Force peer 2 to be the holder: peer 1 takes the regular slot first.
        let r = step(&mut ch, 0, false, &mut c, &mut rng(1));
        assert_eq!(r.optimistic, Some(2));
        c[1].download_rate = 1_000_000;
        let r = step(&mut ch, 10_000, false, &mut c, &mut rng(1));
        assert_eq!(r.optimistic, Some(2));
        assert_eq!(r.unchoked, 2);
        assert!(c[0].currently_unchoked && c[1].currently_unchoked);
    }

    #[test]
    fn holder_losing_interest_frees_the_slot() {
        let mut c: Vec<_> = (0..5).map(|k| peer(k, 0, 0)).collect();
        let mut ch = Choker::new(config(1));
        let mut g = rng(5);
        let first = step(&mut ch, 0, false, &mut c, &mut g)
            .optimistic
            .expect("chosen");
        c[first as usize].interested = false;
        let r = step(&mut ch, 10_000, false, &mut c, &mut g);
        assert!(r.optimistic_rotated);
        assert_ne!(r.optimistic, Some(first));
        assert!(!c[first as usize].currently_unchoked);
    }

    #[test]
    fn rotation_reaches_every_interested_peer() {
        let mut c: Vec<_> = (0..12).map(|k| peer(k, 0, 0)).collect();
        c[0].download_rate = 5_000;
        c[1].download_rate = 4_000;
        c[2].download_rate = 3_000;
        c[3].interested = false;
        c[7].snubbed = true;
        let mut ch = Choker::new(config(3));
        let mut g = rng(2024);
        let mut seen = BTreeSet::new();
        let mut now = 0;
        for _ in 0..3_000 {
            if ch.should_run(now) {
                let r = step(&mut ch, now, false, &mut c, &mut g);
                seen.extend(r.optimistic);
            }
            now += 1_000;
        }
        // Everyone interested outside the top three, the snubbed peer included.
        let expected: BTreeSet<u32> = (4..12).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn new_peers_are_drawn_about_three_times_as_often() {
        // Peer 0 holds the one regular slot; 1..=10 are new, 11..=20 are not. (Skipping
        // the previous holder pulls the ratio a little below 3: about 2.85 here.)
        let mut c: Vec<_> = (0..21).map(|k| peer(k, 0, 0)).collect();
        c[0].download_rate = 1_000;
        for p in &mut c[1..=10] {
            p.is_new = true;
        }
        let mut ch = Choker::new(config(1));
        let mut g = rng(99);
        let mut count: BTreeMap<bool, u32> = BTreeMap::new();
        for round in 0..4_000u64 {
            let r = step(&mut ch, round * 30_000, false, &mut c, &mut g);
            assert!(r.optimistic_rotated);
            let k = r.optimistic.expect("chosen");
            *count.entry(c[k as usize].is_new).or_default() += 1;
        }
        let new = f64::from(count[&true]);
        let old = f64::from(count[&false]);
        let ratio = new / old;
        assert!(
            (2.0..4.5).contains(&ratio),
            "new {new} old {old} ratio {ratio}"
        );
    }

    #[test]
    fn zero_slots_means_unlimited() {
        let mut c: Vec<_> = (0..50).map(|k| peer(k, u64::from(k), 0)).collect();
        c[10].interested = false;
        c[20].snubbed = true;
        let mut ch = Choker::new(config(0));
        let mut out = vec![false; c.len()];
        let r = ch.run(0, false, &c, &mut out, &mut rng(1)).expect("ok");
        // Everyone interested and not snubbed, plus the snubbed one optimistically.
        assert_eq!(r.unchoked, 49);
        assert_eq!(r.optimistic, Some(20));
        assert!(!out[10]);
    }

    #[test]
    fn peer_gone_frees_the_optimistic_slot() {
        let mut c: Vec<_> = (0..6).map(|k| peer(k, 0, 0)).collect();
        c[0].download_rate = 1_000;
        let mut ch = Choker::new(config(1));
        let mut g = rng(8);
        let first = step(&mut ch, 0, false, &mut c, &mut g)
            .optimistic
            .expect("chosen");
        // Another peer leaving changes nothing.
        ch.peer_gone(0);
        assert_eq!(ch.optimistic(), Some(first));
        assert_eq!(ch.next_round_at(), 10_000);
        ch.peer_gone(first);
        assert_eq!(ch.optimistic(), None);
        assert!(ch.should_run(1));
        c.retain(|p| p.key != first);
        let r = step(&mut ch, 1, false, &mut c, &mut g);
        assert!(r.optimistic_rotated);
        let second = r.optimistic.expect("chosen");
        assert_ne!(second, first);
        assert_ne!(second, 0);
        // A holder that silently vanished from the candidate list is replaced too.
        c.retain(|p| p.key != second);
        let r = step(&mut ch, 2, false, &mut c, &mut g);
        assert!(r.optimistic_rotated);
        assert!(r.optimistic.is_some_and(|k| k != second && k != 0));
    }

    #[test]
    fn same_input_and_seed_give_same_output() {
        let make = || -> Vec<ChokeCandidate> {
            (0..40u32)
                .map(|k| ChokeCandidate {
                    key: k * 7 + 3,
                    interested: k % 5 != 0,
                    download_rate: u64::from((k * 37) % 11) * 100,
                    upload_rate: u64::from((k * 13) % 7) * 100,
                    snubbed: k % 9 == 0,
                    is_new: k % 4 == 0,
                    currently_unchoked: false,
                })
                .collect()
        };
        let play = |seed: u32| {
            let mut c = make();
            let mut ch = Choker::new(config(4));
            let mut g = rng(seed);
            let mut log = Vec::new();
            for round in 0..30u64 {
                let r = step(&mut ch, round * 10_000, round % 10 >= 7, &mut c, &mut g);
                log.push((
                    r,
                    c.iter().map(|p| p.currently_unchoked).collect::<Vec<_>>(),
                ));
            }
            log
        };
        assert_eq!(play(42), play(42));
        assert_ne!(play(42), play(43), "the seed matters at all");
    }

    #[test]
    fn wrong_output_length_is_refused_without_change() {
        let c = [peer(1, 0, 0), peer(2, 0, 0)];
        let mut ch = Choker::new(config(1));
        let mut out = [true; 3];
        let mut calls = 0;
        let mut g = || {
            calls += 1;
            0
        };
        assert_eq!(
            ch.run(5, false, &c, &mut out, &mut g),
            Err(ChokerError::OutputLength)
        );
        assert_eq!(out, [true; 3]);
        assert_eq!(calls, 0);
        assert_eq!(ch.next_round_at(), 0);
    }

    #[test]
    fn empty_round() {
        let mut ch = Choker::new(ChokerConfig::default());
        let r = ch.run(0, false, &[], &mut [], &mut rng(1)).expect("ok");
        assert_eq!(
            r,
            ChokeRound {
                unchoked: 0,
                optimistic: None,
                optimistic_rotated: true
            }
        );
        assert_eq!(ch.next_round_at(), 10_000);
    }

    fn candidate() -> impl Strategy<Value = ChokeCandidate> {
        (
            0u32..24,
            any::<bool>(),
            0u64..5,
            0u64..5,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(key, interested, down, up, snubbed, is_new, unchoked)| {
                ChokeCandidate {
                    key,
                    interested,
                    download_rate: down * 1_000,
                    upload_rate: up * 1_000,
                    snubbed,
                    is_new,
                    currently_unchoked: unchoked,
                }
            })
    }

    proptest! {
        #[test]
        fn unchoked_peers_are_bounded_and_interested(
            slots in 0usize..6,
            seed in any::<u32>(),
            rounds in proptest::collection::vec(
                (
                    0u64..40_000,
                    any::<bool>(),
                    proptest::collection::vec(candidate(), 0..32),
                    proptest::option::of(0u32..24),
                ),
                1..12,
            ),
        ) {
            let mut ch = Choker::new(config(slots));
            let mut g = rng(seed);
            let mut now = 0u64;
            for (dt, seeding, c, gone) in rounds {
                now += dt;
                if let Some(k) = gone {
                    ch.peer_gone(k);
                }
                let mut out = vec![false; c.len()];
                let r = ch.run(now, seeding, &c, &mut out, &mut g).expect("lengths match");
                let n = out.iter().filter(|&&o| o).count();
                prop_assert_eq!(n, r.unchoked);
                if slots > 0 {
                    prop_assert!(n <= slots + 1, "{} unchoked with {} slots", n, slots);
                }
                for (p, &o) in c.iter().zip(&out) {
                    if o {
                        prop_assert!(p.interested);
                        if p.snubbed && !seeding {
                            prop_assert_eq!(r.optimistic, Some(p.key));
                        }
                    }
                }
                if slots == 0 {
                    for (p, &o) in c.iter().zip(&out) {
                        prop_assert!(o || !p.interested || (p.snubbed && !seeding));
                    }
                }
                prop_assert!(!ch.should_run(now) || ch.next_round_at() <= now);
                prop_assert!(ch.next_round_at() > now);
            }
        }
    }
}
