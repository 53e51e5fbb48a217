//! The download and seed queues, the idle seeding limit, a torrent's own connection
//! cap, and the alternative ("turtle") speed limits with their schedule. The session
//! decides the first three (its `queue.rs`); the core's `alt_speed` decides whether
//! the alternative limits apply, from the local time this module reads once a minute
//! (and when the settings change), and the client's own rate limits carry them out.

use super::Client;
use btcore_core::alt_speed::AltSpeed;
use btcore_core::session::{IdleLimit, QueueMove, TorrentId};
use std::time::Duration;

/// How often the local clock is looked at for the schedule.
const ALT_CHECK_EVERY: Duration = Duration::from_secs(60);

/// The switch and schedule of `opts`.
pub(super) fn alt_speed(opts: &super::ClientOptions) -> AltSpeed {
    let mut a = AltSpeed::new();
    a.set_enabled(opts.alt_speed_enabled);
    a.set_schedule(opts.alt_speed_schedule);
    a
}

impl Client {
    /// The place of torrent `id` in the queues (0 first); `None` if unknown.
    pub fn queue_position(&self, id: TorrentId) -> Option<u32> {
        self.session.queue_position(id)
    }

    /// Moves torrent `id` to place `pos` of the queues (past the end: last); false
    /// if unknown.
    pub fn set_queue_position(&mut self, id: TorrentId, pos: u32) -> bool {
        let now = self.now();
        let ok = self.session.set_queue_position(now, id, pos);
        self.pump();
        ok
    }

    /// Puts the queues in the order of `order` at once (the torrents it does not name
    /// follow in their present order).
    pub fn set_queue_order(&mut self, order: &[TorrentId]) {
        let now = self.now();
        self.session.set_queue_order(now, order);
        self.pump();
    }

    /// Moves torrent `id` to the top, up one, down one or to the bottom of the
    /// queues; false if unknown.
    pub fn move_in_queue(&mut self, id: TorrentId, to: QueueMove) -> bool {
        let now = self.now();
        let ok = self.session.move_in_queue(now, id, to);
        self.pump();
        ok
    }

    /// Starts torrent `id` now, paused or queued, past the queues (Transmission's
    /// `torrent-start-now`); false if unknown.
    pub fn resume_now(&mut self, id: TorrentId) -> bool {
        let now = self.now();
        let ok = self.session.resume_now(now, id);
        self.pump();
        ok
    }

    /// Sets the idle seeding limit of torrent `id` (the session's default, minutes,
    /// or none): once finished, it is paused after that long without upload, with
    /// [`Event::IdleLimitReached`](btcore_core::session::Event::IdleLimitReached).
    /// False if unknown.
    pub fn set_idle_limit(&mut self, id: TorrentId, limit: IdleLimit) -> bool {
        let now = self.now();
        let ok = self.session.set_idle_limit(now, id, limit);
        self.pump();
        ok
    }

    /// The idle seeding limit of torrent `id` as set; `None` if unknown.
    pub fn idle_limit(&self, id: TorrentId) -> Option<IdleLimit> {
        self.session.idle_limit(id)
    }

    /// Caps the connections of torrent `id` (`None`: the client's `max_peers`);
    /// lowered, the least useful connections over it are closed at once. False if
    /// unknown.
    pub fn set_peer_limit(&mut self, id: TorrentId, limit: Option<usize>) -> bool {
        let now = self.now();
        let ok = self.session.set_peer_limit(now, id, limit);
        self.pump();
        ok
    }

    /// The connection cap of torrent `id` in force; `None` if unknown.
    pub fn peer_limit(&self, id: TorrentId) -> Option<usize> {
        self.session.peer_limit(id)
    }

    /// Turns the alternative speed limits on or off by hand (with a schedule, until
    /// its next edge).
    pub fn set_alt_speed(&mut self, on: bool) {
        self.alt.set_enabled(on);
        self.opts.alt_speed_enabled = on;
        self.apply_rates();
    }

    /// Whether the alternative speed limits apply now.
    pub fn alt_speed_enabled(&self) -> bool {
        self.alt.enabled()
    }

    /// The rate limits in force now (download, upload in bytes/s; 0: none): the
    /// alternative ones while they apply.
    pub fn rate_limits(&self) -> (u64, u64) {
        self.alt.limits(
            (self.opts.download_limit, self.opts.upload_limit),
            (self.opts.alt_download_limit, self.opts.alt_upload_limit),
        )
    }

    /// Applies the switch and schedule of the options in force (after
    /// [`Client::apply_settings`]): a switch given other than it stands is set, the
    /// schedule is set, and the clock looked at.
    pub(super) fn apply_alt_settings(&mut self, enabled: bool) {
        if enabled != self.alt.enabled() {
            self.alt.set_enabled(enabled);
        }
        self.alt.set_schedule(self.opts.alt_speed_schedule);
        self.service_alt_speed(true);
    }

    /// Once a minute (or now, with `force`): the schedule looks at the local time,
    /// and the limits in force are applied.
    pub(super) fn service_alt_speed(&mut self, force: bool) {
        let now = std::time::Instant::now();
        if !force && now < self.next_alt_check {
            return;
        }
        self.next_alt_check = now + ALT_CHECK_EVERY;
        if self.alt.schedule().is_some() {
            if let Some((day, minute)) = crate::os::local_weekday_minute() {
                if self.alt.update(day, minute) {
                    log::info!(
                        "alternative speed limits {} by the schedule",
                        if self.alt.enabled() { "on" } else { "off" }
                    );
                }
            }
        }
        self.opts.alt_speed_enabled = self.alt.enabled();
        self.apply_rates();
    }

    fn apply_rates(&mut self) {
        let (down, up) = self.rate_limits();
        self.down.set_rate(down);
        self.up.set_rate(up);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Client, ClientOptions};
    use btcore_core::alt_speed::{Schedule, ALL_DAYS};

    fn opts() -> ClientOptions {
        ClientOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            save_dir: std::env::temp_dir(),
            use_trackers: false,
            download_limit: 1000,
            upload_limit: 2000,
            alt_download_limit: 10,
            alt_upload_limit: 20,
            ..ClientOptions::default()
        }
    }

    #[test]
    fn the_alternative_limits_follow_the_switch_and_the_schedule() {
        let mut c = Client::new(opts()).expect("client");
        assert_eq!(c.rate_limits(), (1000, 2000));
        c.set_alt_speed(true);
        assert!(c.alt_speed_enabled());
        assert_eq!(c.rate_limits(), (10, 20));
        // A schedule of the whole week (equal ends: whole days, every day) turns them
        // on at once whatever the local time; a schedule of no day, off.
        let mut o = opts();
        o.alt_speed_schedule = Some(Schedule {
            begin_minute: 0,
            end_minute: 0,
            days: ALL_DAYS,
        });
        c.apply_settings(&o).expect("apply");
        assert!(crate::os::local_weekday_minute().is_some());
        assert_eq!(c.rate_limits(), (10, 20));
        o.alt_speed_schedule = Some(Schedule {
            begin_minute: 0,
            end_minute: 0,
            days: 0,
        });
        c.apply_settings(&o).expect("apply");
        assert!(!c.alt_speed_enabled());
        assert_eq!(c.rate_limits(), (1000, 2000));
    }
}
