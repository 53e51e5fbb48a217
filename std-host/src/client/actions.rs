//! Carrying out the session's decisions: [`Client::pump`] drains `poll_action` and
//! `poll_event`; each `Action` (connect, send, close, disk write/read/verify, announce to
//! one tracker, DHT lookup, data check of a magnet's metadata) is done by `do_action`
//! without deciding anything, and each `Event` that changes what a resume file would
//! say (a piece verified, a torrent finished) marks it dirty in `on_event`.

use super::Client;
use crate::disk::DiskJob;
use crate::encryption::Link;
use crate::tracker::AnnounceJob;
use btcore_core::session::{Action, AnnounceEvent, AnnounceOutcome, DhtOutcome, Event, TorrentId};

impl Client {
    /// Carries out the session's actions and collects its events.
    pub(super) fn pump(&mut self) {
        loop {
            let mut any = false;
            while let Some(a) = self.session.poll_action() {
                any = true;
                self.do_action(a);
            }
            while let Some(e) = self.session.poll_event() {
                any = true;
                self.on_event(e);
            }
            if !any {
                // This turn's disk jobs go out together: one wake-up per worker.
                self.disk.flush();
                return;
            }
        }
    }

    pub(super) fn do_action(&mut self, a: Action) {
        let now = self.now();
        match a {
            Action::Connect {
                conn,
                torrent,
                addr,
                transport,
            } => {
                let policy = self.opts.encryption;
                let link = match self.torrents.get(&torrent) {
                    Some(t) => Link::outgoing(policy, t.info_hash, self.keys.next(), now),
                    None => Link::outgoing_plain(policy),
                };
                if !self.dial(conn, addr, transport, link) {
                    self.session.handle_connect_failed(now, conn);
                }
            }
            Action::Send(conn) => self.flush(conn),
            Action::Close { conn, reason } => {
                log::debug!("closing {conn:?}: {reason}");
                if let Some(s) = self.socks.get_mut(&conn) {
                    // Best effort: what is queued goes out before the close.
                    let _ = s.write_queued(self.utp.as_mut(), usize::MAX);
                }
                self.drop_sock(conn);
            }
            Action::Write {
                torrent,
                block,
                data,
            } => match self.storage(torrent) {
                Some(storage) => self.disk.submit(DiskJob::Write {
                    torrent,
                    storage,
                    block,
                    data,
                }),
                None => self.session.handle_write_done(
                    now,
                    torrent,
                    block,
                    Err(btcore_core::session::DiskError::Io),
                ),
            },
            Action::Read {
                torrent,
                conn,
                block,
            } => {
                if let Some(storage) = self.storage(torrent) {
                    self.disk.submit(DiskJob::Read {
                        torrent,
                        storage,
                        conn,
                        block,
                    });
                }
            }
            Action::Verify {
                torrent,
                piece,
                expected,
                merkle,
                block_digests,
            } => {
                if let Some(storage) = self.storage(torrent) {
                    self.disk.submit(DiskJob::Verify {
                        torrent,
                        storage,
                        piece,
                        expected: crate::storage::Expected {
                            sha1: expected,
                            merkle,
                        },
                        block_digests,
                    });
                }
            }
            Action::Announce {
                torrent,
                tracker,
                event,
                uploaded,
                downloaded,
                left,
                seq,
                info_hash_v2,
            } => self.announce(
                torrent,
                tracker,
                event,
                [uploaded, downloaded, left],
                seq,
                info_hash_v2,
            ),
            Action::DhtLookup {
                torrent,
                info_hash,
                announce,
                seq,
            } => {
                let port = announce.then_some(self.local_addr.port());
                let started = self
                    .dht
                    .as_mut()
                    .is_some_and(|d| d.lookup(now, torrent, info_hash, port, seq));
                if !started {
                    self.session
                        .handle_dht_done(now, torrent, seq, DhtOutcome::Failed);
                }
            }
            Action::CheckData { torrent } => self.metadata_received(torrent),
            Action::WebSeedRequest {
                torrent,
                seed,
                req,
                ranges,
            } => self.start_webseed(torrent, seed, req, ranges),
            _ => {}
        }
    }

    /// Performs the one exchange the session asked: `tracker` of torrent `id`, with
    /// the `[uploaded, downloaded, left]` counts.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn announce(
        &mut self,
        id: TorrentId,
        tracker: String,
        event: Option<AnnounceEvent>,
        [uploaded, downloaded, left]: [u64; 3],
        seq: u64,
        info_hash_v2: Option<btcore_core::ids::InfoHash>,
    ) {
        let Some(t) = self.torrents.get(&id) else {
            return;
        };
        let Some(client) = self.trackers.as_mut() else {
            if event != Some(AnnounceEvent::Stopped) {
                let now = self.now();
                self.session
                    .handle_announced(now, id, seq, AnnounceOutcome::NoTrackers);
            }
            return;
        };
        // The torrent may already be gone from the session (the `stopped` announce).
        let job = AnnounceJob {
            key: id.0,
            tracker,
            info_hash: t.info_hash,
            peer_id: self.peer_id,
            port: self.local_addr.port(),
            uploaded,
            downloaded,
            left,
            event: event.map(|e| match e {
                AnnounceEvent::Started => btcore_core::tracker::Event::Started,
                AnnounceEvent::Completed => btcore_core::tracker::Event::Completed,
                AnnounceEvent::Stopped => btcore_core::tracker::Event::Stopped,
            }),
            numwant: Some(50),
            seq,
        };
        // A hybrid is in the v2 swarm too (BEP 52): the same exchange for its v2
        // info-hash, after the first (a torrent's exchanges run in order), marked so
        // that its result gives peers only.
        let second = info_hash_v2.map(|h| AnnounceJob {
            tracker: job.tracker.clone(),
            info_hash: h,
            seq: job.seq | V2_SWARM,
            ..job
        });
        client.announce(std::time::Instant::now(), job);
        if let Some(j) = second {
            client.announce(std::time::Instant::now(), j);
        }
    }

    pub(super) fn on_event(&mut self, e: Event) {
        match &e {
            Event::PieceVerified(id, _) | Event::TorrentFinished(id) => {
                if let Some(t) = self.torrents.get_mut(id) {
                    t.resume.mark_dirty(std::time::Instant::now());
                }
            }
            Event::ExternalAddress(ip) => {
                log::info!("external address: {ip}");
                let now = self.now();
                if let Some(d) = self.dht.as_mut() {
                    d.set_external_ip(now, *ip);
                }
            }
            Event::Holepunch(_, h) => log::info!("holepunch: {h}"),
            _ => {}
        }
        if self.events_out.len() < 10_000 {
            self.events_out.push(e);
        }
    }
}

/// The bit of an [`AnnounceJob`]'s `seq` that marks a hybrid's exchange for its v2
/// info-hash: its peers are the session's, its outcome is not reported (the session's
/// own numbers never reach it).
pub(super) const V2_SWARM: u64 = 1 << 63;
