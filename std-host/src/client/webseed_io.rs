//! Web seeds (BEP 19) on the loop: the session's `WebSeedRequest`s started on
//! [`crate::webseed::WebSeedClient`]'s threads, and what they send back handed to the
//! session, a chunk at a time, only while the disk is not behind and the download
//! rate limits (the client's and the torrent's) have room: web seed bytes count as
//! peers' bytes do. A request the session no longer wants (the torrent stopped, the
//! web seed was dropped) is cancelled when its next chunk comes.

use super::Client;
use crate::webseed::{WebMsg, WebSeedClient};
use btcore_core::session::{TorrentId, WebSeedId, WebSeedRange, WebSeedStatus};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The loop's side of the web seeds.
pub(super) struct WebIo {
    client: WebSeedClient,
    /// The cancel flag of each request running, by request number.
    running: HashMap<u64, Arc<AtomicBool>>,
    /// A chunk taken from the channel and held back by a rate limit or the disk.
    held: Option<WebMsg>,
}

impl WebIo {
    pub(super) fn new(waker: Arc<mio::Waker>) -> Self {
        Self {
            client: WebSeedClient::new(Arc::new(move || {
                let _ = waker.wake();
            })),
            running: HashMap::new(),
            held: None,
        }
    }

    /// A chunk waits for a rate limit: the loop looks again soon.
    pub(super) fn throttled(&self) -> bool {
        self.held.is_some()
    }

    /// Stops every request (at shutdown).
    pub(super) fn cancel_all(&mut self) {
        for (_, c) in self.running.drain() {
            c.store(true, Ordering::Relaxed);
        }
    }
}

impl Client {
    /// Starts the session's `WebSeedRequest`.
    pub(super) fn start_webseed(
        &mut self,
        torrent: TorrentId,
        seed: WebSeedId,
        req: u64,
        ranges: Vec<WebSeedRange>,
    ) {
        let cancel = Arc::new(AtomicBool::new(false));
        self.web.running.insert(req, cancel.clone());
        self.web.client.start(torrent, seed, req, ranges, cancel);
    }

    /// Hands what the web seed threads sent to the session, within the disk queue and
    /// the rate limits.
    pub(super) fn collect_webseeds(&mut self) {
        loop {
            let Some(msg) = self.web.held.take().or_else(|| self.web.client.try_recv()) else {
                return;
            };
            let now = self.now();
            match msg {
                WebMsg::Data {
                    torrent,
                    seed,
                    req,
                    bytes,
                } => {
                    if !self.web.running.contains_key(&req) {
                        continue;
                    }
                    let own = self.torrent_buckets.get_mut(&torrent);
                    let room = self
                        .down
                        .available()
                        .min(own.map_or(usize::MAX, |b| b.down.available()));
                    if room == 0 || self.session.disk_backlogged() {
                        self.web.held = Some(WebMsg::Data {
                            torrent,
                            seed,
                            req,
                            bytes,
                        });
                        return;
                    }
                    self.down.take(bytes.len());
                    if let Some(b) = self.torrent_buckets.get_mut(&torrent) {
                        b.down.take(bytes.len());
                    }
                    if !self
                        .session
                        .handle_webseed_data(now, torrent, seed, req, &bytes)
                    {
                        if let Some(c) = self.web.running.remove(&req) {
                            c.store(true, Ordering::Relaxed);
                        }
                    }
                }
                WebMsg::End {
                    torrent,
                    seed,
                    req,
                    result,
                } => {
                    if self.web.running.remove(&req).is_none() {
                        continue;
                    }
                    match result {
                        Ok(()) => self.session.handle_webseed_done(now, torrent, seed, req),
                        Err((e, retry)) => {
                            log::debug!("web seed {seed:?} of {torrent:?}: {e}");
                            let retry = retry.map(|d| {
                                btcore_core::time::Duration::from_millis(d.as_millis() as u64)
                            });
                            self.session
                                .handle_webseed_failed(now, torrent, seed, req, retry, &e);
                        }
                    }
                }
            }
        }
    }

    /// A torrent's web seeds: URL, state, bytes sent, last error.
    pub fn web_seeds(&self, id: TorrentId) -> Vec<WebSeedStatus> {
        self.session.web_seeds(id, self.now())
    }
}
