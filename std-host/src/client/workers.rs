//! What the worker threads report back: disk completions (writes, reads, hash checks,
//! data-check progress) from [`crate::disk::DiskPool`] and finished HTTP exchanges and
//! UDP timeouts from the [`crate::tracker::TrackerClient`], each handed to the session.

use super::Client;
use crate::disk::DiskDone;
use crate::tracker::AnnounceResult;
use btcore_core::session::{AnnounceCounts, AnnounceOutcome, PeerSource, TorrentId};
use std::net::{IpAddr, Ipv4Addr};

impl Client {
    pub(super) fn collect_workers(&mut self) {
        self.collect_disk();
        self.collect_trackers();
    }

    /// Hands the disk completions to the session.
    pub(super) fn collect_disk(&mut self) {
        while let Some(done) = self.disk.try_done() {
            let now = self.now();
            match done {
                DiskDone::Write {
                    torrent,
                    block,
                    result,
                } => {
                    let result = result.map_err(|e| self.disk_failed(torrent, e));
                    self.session.handle_write_done(now, torrent, block, result)
                }
                DiskDone::Read {
                    torrent,
                    reads,
                    result,
                } => {
                    let result = result.map_err(|e| self.disk_failed(torrent, e));
                    let mut at = 0;
                    for (conn, block) in reads {
                        let len = block.len as usize;
                        let data = match &result {
                            Ok(d) => d
                                .get(at..at + len)
                                .ok_or(btcore_core::session::DiskError::Io),
                            Err(e) => Err(*e),
                        };
                        at += len;
                        self.session
                            .handle_read_done(now, torrent, conn, block, data);
                    }
                }
                DiskDone::Verify {
                    torrent,
                    piece,
                    disagree: true,
                    ..
                } => self.session.handle_hashes_disagree(now, torrent, piece),
                DiskDone::Verify {
                    torrent,
                    piece,
                    ok,
                    digests,
                    ..
                } => self
                    .session
                    .handle_verified_blocks(now, torrent, piece, ok, &digests),
                DiskDone::Checked { torrent, have } => self.checked(torrent, &have),
            }
        }
    }

    /// Hands the finished tracker exchanges to the session.
    fn collect_trackers(&mut self) {
        let results: Vec<AnnounceResult> = match self.trackers.as_mut() {
            Some(t) => {
                t.handle_timeout(std::time::Instant::now());
                std::iter::from_fn(|| t.poll_result()).collect()
            }
            None => Vec::new(),
        };
        for r in results {
            let now = self.now();
            if let Some(e) = &r.error {
                log::debug!("tracker {}: {e}", r.tracker);
            }
            let id = TorrentId(r.key);
            if r.answered() {
                let source = tracker_source(Some(&r.tracker));
                self.session.handle_peers(now, id, &r.peers, source);
            }
            // The `stopped` announce ends the torrent's schedule: nothing to report
            // (and a torrent resumed since has its `started` in flight). Each exchange
            // is reported on its own: the session picks the next tracker.
            // The tracker's words (its failure reason or the transport error; its
            // warning) become the session's tracker events.
            if r.event != Some(btcore_core::tracker::Event::Stopped)
                && r.seq & super::actions::V2_SWARM == 0
            {
                let (outcome, message) = match (r.answered(), r.interval) {
                    (true, Some(interval)) => (
                        AnnounceOutcome::Answered {
                            interval,
                            min_interval: r.min_interval,
                        },
                        r.warning.as_deref().unwrap_or(""),
                    ),
                    (true, None) => (AnnounceOutcome::Failed, "no interval in the answer"),
                    _ => (AnnounceOutcome::Failed, r.error.as_deref().unwrap_or("")),
                };
                let counts = AnnounceCounts {
                    seeders: r.complete,
                    leechers: r.incomplete,
                    downloaded: None,
                    peers: u32::try_from(r.peers.len()).unwrap_or(u32::MAX),
                };
                self.session.handle_announce_report(
                    now,
                    id,
                    r.seq,
                    outcome,
                    message.as_bytes(),
                    counts,
                );
            }
        }
    }
}

impl Client {
    /// Keeps the first disk error of torrent `id` (with its file and OS error number,
    /// for [`Client::disk_error`]) and gives the session's view of it.
    pub(super) fn disk_failed(
        &mut self,
        id: TorrentId,
        e: crate::storage::StorageError,
    ) -> btcore_core::session::DiskError {
        let core = e.to_core();
        if let Some(t) = self.torrents.get_mut(&id) {
            if t.disk_error.is_none() {
                log::debug!("torrent {}: {e}", id.0);
                t.disk_error = Some(e);
            }
        }
        core
    }
}

/// Whom the peers of a tracker's answer come from: the tracker's address when its URL
/// names one (`localhost` is loopback); a host name counts as a remote party (the
/// session then drops the loopback addresses it names).
fn tracker_source(url: Option<&str>) -> PeerSource {
    let remote = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let Some(url) = url else {
        return PeerSource::Tracker(remote);
    };
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    if host.eq_ignore_ascii_case("localhost") {
        return PeerSource::Tracker(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    PeerSource::Tracker(host.parse().unwrap_or(remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback peers are believed from a tracker whose URL names a loopback address
    /// or `localhost`, never from one named by another host name.
    #[test]
    fn tracker_source_from_its_url() {
        let lo4 = PeerSource::Tracker(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let remote = PeerSource::Tracker(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(tracker_source(Some("http://127.0.0.1:8000/announce")), lo4);
        assert_eq!(tracker_source(Some("udp://LocalHost:6969")), lo4);
        assert_eq!(
            tracker_source(Some("udp://[::1]:6969/announce")),
            PeerSource::Tracker("::1".parse().expect("ip"))
        );
        assert_eq!(
            tracker_source(Some("http://u:p@192.0.2.5/a?b")),
            PeerSource::Tracker("192.0.2.5".parse().expect("ip"))
        );
        assert_eq!(tracker_source(Some("https://tracker.example/a")), remote);
        assert_eq!(
            tracker_source(Some("http://localhost.evil.example/a")),
            remote
        );
        assert_eq!(tracker_source(None), remote);
    }
}
