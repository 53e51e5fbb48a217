//! What the worker threads report back: disk completions (writes, reads, hash checks,
//! data-check progress) from [`crate::disk::DiskPool`] and finished HTTP exchanges and
//! UDP timeouts from the [`crate::tracker::TrackerClient`], each handed to the session.

use super::net::Held;
use super::Client;
use crate::disk::DiskDone;
use crate::tracker::AnnounceResult;
use btcore_core::ids::BlockRef;
use btcore_core::session::{AnnounceCounts, AnnounceOutcome, ConnId, PeerSource, TorrentId};
use btcore_core::time::Instant;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use btcore_core::session::HOLD_MIN;

impl Client {
    pub(super) fn collect_workers(&mut self) {
        self.collect_disk();
        self.collect_trackers();
    }

    /// Whether the loop may hold a read's buffer and send its blocks from it: all of
    /// them go to one plain connection (a read for several would keep the whole buffer
    /// alive for the slowest; an encrypting link copies anyway), none is shorter than
    /// [`HOLD_MIN`], and the buffer has them all.
    fn may_hold(&self, reads: &[(ConnId, BlockRef)], len: usize) -> bool {
        let Some(&(conn, _)) = reads.first() else {
            return false;
        };
        reads.iter().all(|(c, b)| *c == conn && b.len >= HOLD_MIN)
            && reads.iter().map(|(_, b)| b.len as usize).sum::<usize>() <= len
            && self
                .socks
                .get(&conn)
                .is_some_and(|s| s.link.is_plain() && !s.connecting)
    }

    /// Hands the session a read's blocks, held: the loop sends them from `buf`.
    fn hold_reads(
        &mut self,
        now: Instant,
        torrent: TorrentId,
        reads: Vec<(ConnId, BlockRef)>,
        buf: Vec<u8>,
    ) {
        let buf = Arc::new(buf);
        let mut at = 0;
        for (conn, block) in reads {
            let len = block.len as usize;
            // `may_hold` found its socket; the session drops none while it is told.
            let token = self.socks.get_mut(&conn).map_or(0, |s| {
                s.next_token += 1;
                s.next_token
            });
            let held = Held {
                buf: Arc::clone(&buf),
                start: at,
                end: at + len,
            };
            at += len;
            if self
                .session
                .handle_read_held(now, torrent, conn, block, token)
            {
                if let Some(s) = self.socks.get_mut(&conn) {
                    s.held.push_back((token, held));
                }
            }
        }
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
                    let result = match result {
                        Ok(buf) if self.may_hold(&reads, buf.len()) => {
                            self.hold_reads(now, torrent, reads, buf);
                            continue;
                        }
                        r => r,
                    };
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
