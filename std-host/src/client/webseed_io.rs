//! Web seeds (BEP 19) on the loop: the session's `WebSeedRequest`s started on
//! [`crate::webseed::WebSeedClient`]'s threads, and what they send back handed to the
//! session, a chunk at a time, only while the disk is not behind and the download
//! rate limits (the client's and the torrent's) have room: web seed bytes count as
//! peers' bytes do. A request the session no longer wants (the torrent stopped, the
//! web seed was dropped) is cancelled when its next chunk comes.

use super::Client;
use crate::webseed::{Switches, WebMsg, WebSeedClient, CHANNEL};
use btcore_core::session::{TorrentId, WebSeedId, WebSeedRange, WebSeedStatus};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The loop's side of the web seeds.
pub(super) struct WebIo {
    client: WebSeedClient,
    /// The switches of each request running, by request number.
    running: HashMap<u64, Arc<Switches>>,
    /// Chunks taken from the channel and held back by a rate limit or the disk, in
    /// the order they came (at most [`HOLD`]).
    held: VecDeque<WebMsg>,
}

/// The most chunks held back (2 MiB): a request with a chunk held for its torrent's
/// limit is paused, so beyond the channel's worth such requests add one each.
const HOLD: usize = 2 * CHANNEL;

impl WebIo {
    pub(super) fn new(waker: Arc<mio::Waker>) -> Self {
        Self {
            client: WebSeedClient::new(Arc::new(move || {
                let _ = waker.wake();
            })),
            running: HashMap::new(),
            held: VecDeque::new(),
        }
    }

    /// A chunk waits for a rate limit: the loop looks again soon.
    pub(super) fn throttled(&self) -> bool {
        !self.held.is_empty()
    }

    /// Stops every request (at shutdown).
    pub(super) fn cancel_all(&mut self) {
        for (_, c) in self.running.drain() {
            c.cancel.store(true, Ordering::Relaxed);
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
        let switches = Arc::new(Switches::default());
        self.web.running.insert(req, switches.clone());
        self.web.client.start(torrent, seed, req, ranges, switches);
    }

    /// Hands what the web seed threads sent to the session, within the disk queue and
    /// the rate limits. A chunk whose torrent's own limit has no room is held (with
    /// whatever of the same request follows it, so each request's bytes stay in
    /// order) and its request paused, while the other torrents' chunks go on; the
    /// client's limit or a disk that is behind holds them all. At most [`HOLD`]
    /// chunks are held: beyond that the channel, and then the threads, wait.
    pub(super) fn collect_webseeds(&mut self) {
        let mut stop = false;
        let held = std::mem::take(&mut self.web.held);
        for msg in held {
            stop = self.offer_web(msg, stop);
        }
        while !stop && self.web.held.len() < HOLD {
            let Some(msg) = self.web.client.try_recv() else {
                break;
            };
            stop = self.offer_web(msg, stop);
        }
        // A request with a chunk held sends no more until it is delivered.
        let held = &self.web.held;
        for (req, sw) in &self.web.running {
            let hold = held.iter().any(|m| req_of(m) == *req);
            sw.pause.store(hold, Ordering::Relaxed);
        }
    }

    /// Delivers `msg` or holds it (always when `stop`, or when an earlier message of
    /// its request is held); true when nothing more can be delivered this turn.
    fn offer_web(&mut self, msg: WebMsg, stop: bool) -> bool {
        let req = req_of(&msg);
        if stop || self.web.held.iter().any(|h| req_of(h) == req) {
            self.web.held.push_back(msg);
            return stop;
        }
        match self.deliver_web(msg) {
            Ok(()) => false,
            Err((msg, all)) => {
                self.web.held.push_back(msg);
                all
            }
        }
    }

    /// Hands one message to the session; `Err` with it back when a rate limit or the
    /// disk says wait (`true`: for every torrent).
    fn deliver_web(&mut self, msg: WebMsg) -> Result<(), (WebMsg, bool)> {
        let now = self.now();
        match msg {
            WebMsg::Data {
                torrent,
                seed,
                req,
                bytes,
            } => {
                if !self.web.running.contains_key(&req) {
                    return Ok(());
                }
                let all = self.down.available() == 0 || self.session.disk_backlogged();
                let own = self
                    .torrent_buckets
                    .get_mut(&torrent)
                    .is_some_and(|b| b.down.available() == 0);
                if all || own {
                    let msg = WebMsg::Data {
                        torrent,
                        seed,
                        req,
                        bytes,
                    };
                    return Err((msg, all));
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
                        c.cancel.store(true, Ordering::Relaxed);
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
                    return Ok(());
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
        Ok(())
    }

    /// A torrent's web seeds: URL, state, bytes sent, last error.
    pub fn web_seeds(&self, id: TorrentId) -> Vec<WebSeedStatus> {
        self.session.web_seeds(id, self.now())
    }
}

/// The request a message belongs to.
fn req_of(m: &WebMsg) -> u64 {
    match m {
        WebMsg::Data { req, .. } | WebMsg::End { req, .. } => *req,
    }
}
