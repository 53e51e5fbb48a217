//! What outlives a run: the resume data of each torrent, written when due (dirty and
//! old enough) or on request, and the orderly shutdown: cancel running checks, let
//! queued writes land, write the resume data one last time, announce `stopped`, close
//! every connection and save the DHT's state.

use super::Client;
use crate::disk::{DiskDone, DiskJob};
use crate::resume::{self, ResumeData};
use btcore_core::session::{Action, ConnId, TorrentId, TorrentState};
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Client {
    /// Writes resume files that changed (coalesced), or all of them when `force`.
    pub(super) fn save_resume_if_due(&mut self, force: bool) {
        let Some(dir) = self.opts.state_dir.clone() else {
            return;
        };
        let now = std::time::Instant::now();
        let ids: Vec<TorrentId> = self.torrents.keys().copied().collect();
        for id in ids {
            // A torrent still checking keeps the resume file it has: it knows no piece
            // yet, and a save would wipe what the file claims.
            let due = self.torrents.get(&id).is_some_and(|t| {
                t.check.is_none() && t.resume.is_dirty() && (force || t.resume.should_flush(now))
            });
            if !due {
                continue;
            }
            let Some(have) = self.session.have(id).cloned() else {
                continue;
            };
            let Some(status) = self.session.torrent_status(id, self.now()) else {
                continue;
            };
            let info = self.session.info_bytes(id).map(<[u8]>::to_vec);
            let Some(t) = self.torrents.get_mut(&id) else {
                continue;
            };
            t.resume.flushed(now);
            // The data is synced at quiet points (shutdown, a torrent done, paused or
            // stopped) and at least every sync gap; in between, the claim holds only
            // within this boot (see `resume`'s docs).
            let boot = crate::os::boot_id();
            let quiet = force
                || status.paused
                || !matches!(
                    status.state,
                    TorrentState::Downloading | TorrentState::FetchingMetadata
                );
            let sync = boot.is_none() || quiet || t.resume.sync_due(now);
            if sync {
                t.resume.synced(now);
            }
            let outcome = t.resume.sync_outcome();
            let mut data = ResumeData::new(
                status.info_hash,
                &have,
                t.save_dir.to_string_lossy().as_bytes(),
                status.uploaded,
                status.downloaded,
                info,
            );
            let storage = t.storage.clone();
            let dir = dir.clone();
            let job = move || {
                // Data first, then the claim that it is there, with the files' stamps
                // as they are once synced (a later write changes them).
                if let Some(s) = storage {
                    if !sync {
                        data.unsynced_boot_id = boot.map(<[u8]>::to_vec);
                        data.file_stamps = Some(s.stamps());
                    } else if s.sync().is_ok() {
                        outcome.store(false, Ordering::Relaxed);
                        data.file_stamps = Some(s.stamps());
                    } else {
                        // No claim on stamps, and the next saves sync again.
                        outcome.store(true, Ordering::Relaxed);
                    }
                }
                if let Err(e) = resume::save_atomic(&dir, &data) {
                    log::warn!("saving resume data: {e}");
                }
            };
            if force {
                job();
            } else {
                self.disk.submit(DiskJob::Task(Box::new(job)));
            }
        }
    }

    /// Writes resume data for every torrent now (after syncing their files).
    pub fn save_resume(&mut self) {
        let now = std::time::Instant::now();
        for t in self.torrents.values_mut() {
            t.resume.mark_dirty(now);
        }
        self.save_resume_if_due(true);
    }

    /// Stops cleanly: announces `stopped`, closes peers, writes resume data.
    pub fn shutdown(&mut self) {
        let now = self.now();
        let ids: Vec<TorrentId> = self.session.torrents().collect();
        for id in &ids {
            if let Some(t) = self.torrents.get_mut(id) {
                t.resume.mark_dirty(std::time::Instant::now());
            }
        }
        // Web seed requests stop (their threads end at their next chunk).
        self.web.cancel_all();
        // A check in progress stops (the next start checks again).
        for c in self.torrents.values().filter_map(|t| t.check.as_ref()) {
            c.cancel.store(true, Ordering::Relaxed);
        }
        // Let queued writes land before the final resume save.
        for d in self.disk.shutdown() {
            let now = self.now();
            match d {
                DiskDone::Write {
                    torrent,
                    block,
                    result,
                } => {
                    let result = result.map_err(|e| self.disk_failed(torrent, e));
                    self.session.handle_write_done(now, torrent, block, result)
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
                DiskDone::Read { .. } | DiskDone::Checked { .. } => {}
            }
        }
        while self.session.poll_event().is_some() {}
        self.save_resume_if_due(true);
        for id in ids {
            self.session.remove_torrent(now, id);
        }
        while let Some(a) = self.session.poll_action() {
            if let Action::Announce {
                torrent,
                tracker,
                event,
                uploaded,
                downloaded,
                left,
                seq,
                info_hash_v2,
            } = a
            {
                self.announce(
                    torrent,
                    tracker,
                    event,
                    [uploaded, downloaded, left],
                    seq,
                    info_hash_v2,
                );
            }
        }
        if let Some(client) = self.trackers.take() {
            for r in client.shutdown(&mut self.poll, Duration::from_secs(3)) {
                if let Some(e) = &r.error {
                    log::warn!("tracker {}: {e}", r.tracker);
                }
            }
        }
        let conns: Vec<ConnId> = self.socks.keys().copied().collect();
        for c in conns {
            self.drop_sock(c);
        }
        // uTP peers hear of the close (a FIN or a RESET each), best effort.
        self.transmit_utp();
        self.finish_port_mapping();
        let now = self.now();
        if let Some(d) = self.dht.as_mut() {
            d.maybe_save(now, true);
        }
        let _ = self.waker.wake();
    }
}
