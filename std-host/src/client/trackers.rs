//! A torrent's trackers as the application sees and edits them: what each last said
//! (Transmission's `trackerStats`), an announce now (`torrent-reannounce`), and a new
//! list (`torrent-set`'s tracker edits). The session decides; this converts its clock
//! to wall-clock time and keeps the loop going.
//!
//! The client keeps no tracker list of its own across restarts: a torrent's trackers
//! are those of the `.torrent` or magnet link it is added from. An edited list lives
//! in the session, and [`Client::save_torrent_file`] writes it (with the info
//! dictionary as received) for an application that re-adds the torrent from that file.

use super::Client;
use btcore_core::session::{TorrentId, TrackerListError, TrackerStatus};
use btcore_core::time::Instant;
use std::time::{SystemTime, UNIX_EPOCH};

/// One tracker of a torrent ([`Client::tracker_status`]); times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerInfo {
    /// The announce URL.
    pub url: String,
    /// Its BEP 12 tier (0 first).
    pub tier: u32,
    /// An announce to it is on its way.
    pub announcing: bool,
    /// When its last announce ended (Unix seconds); `None`: never since the torrent
    /// was added.
    pub last_announce: Option<u64>,
    /// Whether that announce was answered.
    pub last_announce_ok: bool,
    /// The tracker's failure reason or warning, or the transport error (empty: the
    /// tracker answered without a word); bounded by the session's `max_tracker_text`.
    pub last_result: String,
    /// Seeders in its last answer.
    pub seeders: Option<u32>,
    /// Leechers in its last answer.
    pub leechers: Option<u32>,
    /// Completed downloads, when known.
    pub downloaded: Option<u32>,
    /// Peers its last answer gave.
    pub last_peers: u32,
    /// When it may be asked next (Unix seconds); `None` when the torrent does not
    /// announce (paused, checking, no tracker client).
    pub next_announce: Option<u64>,
    /// Its last `interval` (seconds).
    pub interval: Option<u32>,
    /// Its last `min interval` (seconds).
    pub min_interval: Option<u32>,
    /// Its failures in a row.
    pub failures: u32,
}

/// The engine's clock against the wall clock: the Unix time in ms at engine instant 0.
/// Read once and kept while the wall clock agrees within [`WallAnchor::SLACK_MS`], so
/// one engine instant always shows as the same Unix second (reading both clocks at
/// each call made a time flip between two seconds from one call to the next); moved
/// when the wall clock is set (a router's clock set by NTP after boot).
#[derive(Debug)]
pub(crate) struct WallAnchor {
    unix_ms_at_zero: std::sync::atomic::AtomicI64,
}

impl WallAnchor {
    /// How far the wall clock may drift from the anchor before it moves.
    const SLACK_MS: i64 = 2_000;

    pub(crate) fn new(now: Instant, wall: SystemTime) -> Self {
        Self {
            unix_ms_at_zero: std::sync::atomic::AtomicI64::new(offset_ms(now, wall)),
        }
    }

    /// The Unix time (seconds) of the engine's instant `at`, the engine's clock reading
    /// `now` at the wall-clock time `wall`.
    pub(crate) fn unix_secs(&self, at: Instant, now: Instant, wall: SystemTime) -> u64 {
        use std::sync::atomic::Ordering;
        let measured = offset_ms(now, wall);
        let mut anchor = self.unix_ms_at_zero.load(Ordering::Relaxed);
        if (measured - anchor).abs() > Self::SLACK_MS {
            anchor = measured;
            self.unix_ms_at_zero.store(anchor, Ordering::Relaxed);
        }
        let ms = anchor.saturating_add(i64::try_from(at.as_millis()).unwrap_or(i64::MAX));
        u64::try_from(ms).unwrap_or(0) / 1000
    }
}

/// Unix ms minus engine ms.
fn offset_ms(now: Instant, wall: SystemTime) -> i64 {
    let wall = wall
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    wall.saturating_sub(i64::try_from(now.as_millis()).unwrap_or(i64::MAX))
}

impl TrackerInfo {
    fn from_status(s: TrackerStatus, now: Instant, wall: SystemTime, anchor: &WallAnchor) -> Self {
        let unix = |t: Option<Instant>| t.map(|t| anchor.unix_secs(t, now, wall));
        Self {
            url: s.url,
            tier: s.tier,
            announcing: s.announcing,
            last_announce: unix(s.last_announce),
            last_announce_ok: s.last_announce_ok,
            last_result: s.last_result,
            seeders: s.seeders,
            leechers: s.leechers,
            downloaded: s.downloaded,
            last_peers: s.last_peers,
            next_announce: unix(s.next_announce),
            interval: s.interval,
            min_interval: s.min_interval,
            failures: s.failures,
        }
    }
}

impl Client {
    /// The trackers of torrent `id` and what each last said, in announce order (see
    /// [`btcore_core::session::Session::tracker_status`]); `None` for an unknown
    /// torrent.
    pub fn tracker_status(&self, id: TorrentId) -> Option<Vec<TrackerInfo>> {
        let now = self.now();
        let wall = SystemTime::now();
        Some(
            self.session
                .tracker_status(id)?
                .into_iter()
                .map(|s| TrackerInfo::from_status(s, now, wall, &self.wall))
                .collect(),
        )
    }

    /// Asks torrent `id` to announce now: to each tracker as soon as its
    /// `min interval` allows, and on the DHT (see
    /// [`btcore_core::session::Session::reannounce`]). False when the torrent is
    /// unknown or does not run (paused, checking), or has nothing to ask.
    pub fn reannounce(&mut self, id: TorrentId) -> bool {
        let now = self.now();
        let ok = self.session.reannounce(now, id);
        self.pump();
        ok
    }

    /// Replaces the trackers of torrent `id` with `tiers` (first tier first; see
    /// [`btcore_core::session::Session::set_trackers`] for what is refused). The
    /// client persists no tracker list: an application that keeps its torrents
    /// across restarts saves the edited list with [`Client::save_torrent_file`].
    pub fn set_trackers(
        &mut self,
        id: TorrentId,
        tiers: Vec<Vec<String>>,
    ) -> Result<(), TrackerListError> {
        let now = self.now();
        let r = self.session.set_trackers(now, id, tiers);
        self.pump();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn engine_instants_become_unix_seconds() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let now = Instant::from_millis(50_000);
        let a = WallAnchor::new(now, wall);
        assert_eq!(a.unix_secs(now, now, wall), 1_700_000_000);
        assert_eq!(
            a.unix_secs(Instant::from_millis(20_000), now, wall),
            1_699_999_970
        );
        assert_eq!(
            a.unix_secs(Instant::from_millis(1_850_000), now, wall),
            1_700_001_800
        );
    }

    /// Read a few hundred microseconds apart, the two clocks of each call differ by a
    /// little: one instant still shows as one second, until the wall clock is set.
    #[test]
    fn one_instant_shows_as_one_second_until_the_clock_is_set() {
        let base = UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
        let at = Instant::from_millis(10_000);
        let a = WallAnchor::new(Instant::from_millis(10_000), base);
        let first = a.unix_secs(at, Instant::from_millis(10_000), base);
        // The next call reads the engine's clock, then the wall clock 2 ms later.
        let later = a.unix_secs(
            at,
            Instant::from_millis(20_000),
            base + Duration::from_millis(10_002),
        );
        assert_eq!(first, later);
        // The wall clock set an hour forward: times move with it.
        let set = a.unix_secs(
            at,
            Instant::from_millis(30_000),
            base + Duration::from_millis(20_000 + 3_600_000),
        );
        assert_eq!(set, first + 3600);
    }
}
