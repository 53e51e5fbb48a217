//! BEP 19 web seeds: HTTP(S) servers that hold the torrent's files (`url-list`, a
//! magnet link's `ws`), used as sources beside the peers.
//!
//! Every decision is the session's; the host only performs the HTTP requests asked:
//!
//! - **What a web seed gets.** Whole pieces, in runs: the start of the longest run of
//!   pieces that are missing, wanted and that no one has started (BEP 19's "start at
//!   the beginning of the biggest gap"), up to [`SessionConfig::web_seed_request_bytes`]
//!   and an eighth of the picker's partial-piece slots (one piece at least), so that
//!   peers keep room to start pieces of their own. Never rarest first, never a piece peers have in flight:
//!   only when no such piece is left does a web seed take the blocks nobody asked for
//!   of a piece in progress. The blocks are requested in the picker under the web
//!   seed's own key, so peers leave them alone until the endgame, when they may
//!   duplicate them as any other block and the first copy wins.
//! - **The request.** [`Action::WebSeedRequest`] carries the byte ranges of the run,
//!   cut at file boundaries (a multi-file torrent's URL is a folder: the torrent's
//!   name and the file's path follow, each element percent-encoded), BEP 47 pad files
//!   as zeros the host makes itself. The host streams the bytes back in order with
//!   [`Session::handle_webseed_data`], then [`Session::handle_webseed_done`] or
//!   [`Session::handle_webseed_failed`]; the session cuts them into blocks that go
//!   to the disk ([`Action::Write`]) and to the hash check like any peer's.
//! - **Connections.** At most [`SessionConfig::web_seed_connections`] requests per
//!   web seed at a time and [`SessionConfig::max_web_seed_requests`] over the session
//!   (a host runs each on a thread or a connection), none while the disk queue is
//!   full.
//! - **Failures.** A failed request (refused, timed out, an HTTP error) puts the web
//!   seed in backoff: [`SessionConfig::web_seed_retry`] doubling up to
//!   [`SessionConfig::web_seed_retry_max`], or the server's `Retry-After` (at least a
//!   second, at most [`MAX_RETRY_AFTER`]). A request that sends nothing for
//!   [`SessionConfig::web_seed_timeout`] fails. Its blocks go back to the picker at
//!   once: peers never wait for a web seed that is down.
//! - **Bad data.** A piece that fails its hash check with a block from a web seed
//!   drops that web seed for good (BEP 19: "that URL should be discarded"): its
//!   requests end, the blocks it sent of pieces not verified yet are fetched again,
//!   and it gets no second chance. Peers who shared the piece only go on parole.

use super::torrent::{Meta, Torrent};
use super::{Action, ConnId, Session, TorrentId, TorrentState};
use crate::ids::{BlockRef, Geometry, PieceIndex, BLOCK_LEN};
use crate::metainfo::Metainfo;
use crate::picker::{BlockStatus, PeerKey};
use crate::time::{Duration, Instant, Rate};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

/// A web seed, unique in the session.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct WebSeedId(pub u32);

/// Picker keys of web seeds: `WEB_KEY_BASE + id` (connection ids stay far below).
pub(crate) const WEB_KEY_BASE: u32 = 0xF000_0000;

/// The longest wait a server's `Retry-After` imposes.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The most bytes of a web seed's last error kept.
const MAX_ERROR_TEXT: usize = 256;

/// The longest web seed URL kept (longer ones are dropped).
pub const MAX_WEB_SEED_URL_LEN: usize = 1024;

/// Files one web seed request spans at most (past them it ends at the next block
/// boundary): a torrent of many tiny files cannot make one request a million ranges,
/// each its own URL and GET.
pub const MAX_FILES_PER_REQUEST: usize = 64;

/// One byte range of one file, of an [`Action::WebSeedRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSeedRange {
    /// The file's URL; `None` for a BEP 47 pad file, which no server holds: the host
    /// hands on `len` zeros.
    pub url: Option<String>,
    /// The first byte in the file.
    pub offset: u64,
    /// How many bytes (at least one).
    pub len: u64,
}

/// Where a web seed stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebSeedState {
    /// No request in flight (nothing to ask, or the torrent does not download).
    Idle,
    /// Requests in flight.
    Active,
    /// Waiting after a failure until [`WebSeedStatus::retry_in`] has passed.
    Backoff,
    /// Dropped for data that failed the hash check: never asked again.
    Dropped,
}

impl WebSeedState {
    /// A word for it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Active => "active",
            Self::Backoff => "backoff",
            Self::Dropped => "dropped",
        }
    }
}

/// One web seed of a torrent, for display ([`Session::web_seeds`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSeedStatus {
    /// Its id.
    pub id: WebSeedId,
    /// Its URL as the torrent gave it.
    pub url: String,
    /// Where it stands.
    pub state: WebSeedState,
    /// Payload bytes it sent (handed on as blocks).
    pub downloaded: u64,
    /// Bytes/s it sends.
    pub download_rate: u64,
    /// Requests in flight.
    pub requests: u32,
    /// Failures in a row.
    pub failures: u32,
    /// How long until it is asked again, while in backoff.
    pub retry_in: Option<Duration>,
    /// What went wrong last (at most 256 bytes).
    pub last_error: Option<String>,
}

/// One request in flight: the torrent's bytes `[next, end)` still to come, those
/// before `next + buf.len()` arrived (`buf` holds the start of the block at `next`).
#[derive(Debug)]
struct Request {
    req: u64,
    next: u64,
    end: u64,
    buf: Vec<u8>,
    last_data: Instant,
}

#[derive(Debug)]
pub(crate) struct WebSeed {
    id: WebSeedId,
    url: String,
    requests: Vec<Request>,
    failures: u32,
    retry_at: Option<Instant>,
    dropped: bool,
    /// Pieces it shared with peers that failed their hash check: a second one drops it
    /// (one bad peer block in a piece it also fed must not cost an honest web seed).
    strikes: u8,
    downloaded: u64,
    last_error: Option<String>,
    rate: Rate,
}

/// One file as a web seed serves it.
#[derive(Debug, Clone)]
struct WebFile {
    offset: u64,
    len: u64,
    /// Percent-encoded path from the web seed's folder: the name, then for a
    /// multi-file torrent each element of the file's path.
    path: String,
    pad: bool,
}

/// A torrent's web seeds and the file layout their URLs need.
#[derive(Debug, Default)]
pub(crate) struct WebSeeds {
    seeds: Vec<WebSeed>,
    /// Empty until the info dictionary is known (a magnet link).
    files: Vec<WebFile>,
    multi: bool,
}

/// Whether `url` is one a web seed may have: UTF-8, `http://` or `https://`, no
/// space or control character, not too long.
fn valid_url(url: &[u8]) -> Option<String> {
    let s = core::str::from_utf8(url).ok()?;
    let lower = |p: &str| s.len() > p.len() && s[..p.len()].eq_ignore_ascii_case(p);
    let ok = (lower("http://") || lower("https://"))
        && s.len() <= MAX_WEB_SEED_URL_LEN
        && s.bytes().all(|b| b > b' ' && b != 0x7f);
    ok.then(|| String::from(s))
}

/// Appends `seg` percent-encoded (all but RFC 3986's unreserved characters; a
/// segment of dots alone is escaped whole, so no `..` climbs out of the folder).
fn push_escaped(out: &mut String, seg: &[u8]) {
    let dots = !seg.is_empty() && seg.iter().all(|&b| b == b'.');
    for &b in seg {
        if !dots && (b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The URL of the file at `path` (percent-encoded, from [`WebFile::path`]): a
/// multi-file torrent's web seed is a folder; a single file's is the file itself,
/// or a folder when it ends in `/` (BEP 19).
fn file_url(base: &str, multi: bool, path: &str) -> String {
    let mut u = String::from(base);
    if multi || base.ends_with('/') {
        if !u.ends_with('/') {
            u.push('/');
        }
        u.push_str(path);
    }
    u
}

impl WebSeeds {
    pub(crate) fn is_empty(&self) -> bool {
        self.seeds.is_empty()
    }

    /// Adds a web seed (a duplicate, an unusable URL, or one past `max` is
    /// dropped).
    pub(crate) fn add(&mut self, url: &[u8], next_id: &mut u32, max: usize) -> Option<WebSeedId> {
        let url = valid_url(url)?;
        if self.seeds.len() >= max
            || self.seeds.iter().any(|s| s.url == url)
            || *next_id >= u32::MAX - WEB_KEY_BASE
        {
            return None;
        }
        let id = WebSeedId(*next_id);
        *next_id += 1;
        self.seeds.push(WebSeed {
            id,
            url,
            requests: Vec::new(),
            failures: 0,
            retry_at: None,
            strikes: 0,
            dropped: false,
            downloaded: 0,
            last_error: None,
            rate: Rate::default(),
        });
        Some(id)
    }

    /// Learns the file layout from the torrent (only when it has web seeds).
    pub(crate) fn set_layout(&mut self, m: &Metainfo<'_>) {
        if self.seeds.is_empty() {
            return;
        }
        self.multi = m.is_multi_file();
        self.files = m
            .files()
            .filter(|f| f.length > 0)
            .map(|f| {
                let mut path = String::new();
                for (i, seg) in f.raw_path().enumerate() {
                    if i > 0 {
                        path.push('/');
                    }
                    push_escaped(&mut path, seg);
                }
                WebFile {
                    offset: f.offset,
                    len: f.length,
                    path,
                    pad: f.attr.pad,
                }
            })
            .collect();
    }

    /// The ranges of the torrent's bytes `[start, end)` on the web seed at `base`,
    /// file by file.
    fn ranges(&self, base: &str, start: u64, end: u64) -> Vec<WebSeedRange> {
        let mut out = Vec::new();
        let first = self.files.partition_point(|f| f.offset + f.len <= start);
        for f in &self.files[first..] {
            if f.offset >= end {
                break;
            }
            let from = start.max(f.offset);
            let to = end.min(f.offset + f.len);
            if from >= to {
                continue;
            }
            out.push(WebSeedRange {
                url: (!f.pad).then(|| file_url(base, self.multi, &f.path)),
                offset: from - f.offset,
                len: to - from,
            });
        }
        out
    }

    /// `end`, or earlier so that `[start, end)` spans at most [`MAX_FILES_PER_REQUEST`]
    /// files (then it ends at the block boundary after the last of them; a block of
    /// many tiny files stays whole).
    fn cap_files(&self, geo: &Geometry, start: u64, end: u64) -> u64 {
        let first = self.files.partition_point(|f| f.offset + f.len <= start);
        let Some(f) = self.files.get(first + MAX_FILES_PER_REQUEST - 1) else {
            return end;
        };
        let file_end = f.offset.saturating_add(f.len);
        if file_end >= end {
            return end;
        }
        // The block holding the last byte of that file, from its start.
        let last = file_end.saturating_sub(1).max(start);
        let Ok(p) = u32::try_from(last / u64::from(geo.piece_len())) else {
            return end;
        };
        let Some(piece) = geo.piece(p) else {
            return end;
        };
        let piece_off = geo.piece_offset(piece);
        let inner = (last - piece_off) / u64::from(BLOCK_LEN) * u64::from(BLOCK_LEN);
        match block_at(geo, piece_off + inner) {
            Some(b) => block_end(geo, &b).clamp(start.saturating_add(1), end),
            None => end,
        }
    }

    fn seed_mut(&mut self, id: WebSeedId) -> Option<&mut WebSeed> {
        self.seeds.iter_mut().find(|s| s.id == id)
    }

    /// The web seeds whose key is among `keys`.
    fn seeds_of(keys: &[PeerKey]) -> Vec<WebSeedId> {
        keys.iter()
            .filter(|k| k.0 >= WEB_KEY_BASE)
            .map(|k| WebSeedId(k.0 - WEB_KEY_BASE))
            .collect()
    }

    pub(crate) fn rate_at(&self, now: Instant) -> u64 {
        self.seeds.iter().map(|s| s.rate.at(now)).sum()
    }
}

fn key(id: WebSeedId) -> PeerKey {
    PeerKey(WEB_KEY_BASE + id.0)
}

/// The block that starts at torrent offset `off` (a block boundary), if any.
fn block_at(geo: &Geometry, off: u64) -> Option<BlockRef> {
    let piece = geo.piece(u32::try_from(off / u64::from(geo.piece_len())).ok()?)?;
    let inner = (off - geo.piece_offset(piece)) as u32;
    geo.block(piece, inner / BLOCK_LEN)
        .filter(|b| b.offset == inner)
}

/// The end (torrent offset) of `b`.
fn block_end(geo: &Geometry, b: &BlockRef) -> u64 {
    geo.piece_offset(b.piece) + u64::from(b.offset) + u64::from(b.len)
}

/// Whether a piece is for the taking: missing, wanted and not started by anyone.
fn untouched(m: &Meta, i: u32) -> bool {
    let p = PieceIndex(i);
    !m.have.get(i)
        && m.wanted(i)
        && m.picker.piece_priority(p).is_ok_and(|x| x > 0)
        && !m.picker.in_progress(p)
}

/// Where a web seed's next request goes: the torrent's bytes `[start, end)`, on
/// block boundaries. The start of the longest run of untouched pieces (at most
/// `max_bytes` and an eighth of the partial-piece slots, one piece at least); else the blocks nobody asked for of a piece in
/// progress; else nothing.
pub(crate) fn pick_range(m: &Meta, max_bytes: u64) -> Option<(u64, u64)> {
    let geo = &m.geometry;
    let n = geo.num_pieces();
    let (mut best, mut best_len, mut run, mut run_len) = (0u32, 0u32, 0u32, 0u32);
    for i in 0..n {
        if untouched(m, i) {
            if run_len == 0 {
                run = i;
            }
            run_len += 1;
            if run_len > best_len {
                best = run;
                best_len = run_len;
            }
        } else {
            run_len = 0;
        }
    }
    if best_len > 0 {
        // An eighth of the picker's partial slots at most: the peers keep room to
        // start pieces of their own.
        let slots = (m.picker.partial_usage().1 / 8).max(1) as u64;
        let per = (max_bytes / u64::from(geo.piece_len())).clamp(1, slots);
        let count = u64::from(best_len).min(per) as u32;
        let last = PieceIndex(best + count - 1);
        return Some((
            geo.piece_offset(PieceIndex(best)),
            geo.piece_offset(last) + u64::from(geo.piece_size(last)),
        ));
    }
    // No piece left untouched: the blocks nobody asked for of one in progress.
    for i in 0..n {
        let p = PieceIndex(i);
        if m.have.get(i) || !m.wanted(i) || !m.picker.in_progress(p) {
            continue;
        }
        let mut range: Option<(u64, u64)> = None;
        for b in 0..geo.blocks_in_piece(p) {
            let Some(block) = geo.block(p, b) else { break };
            let free = m.picker.block_status(&block) == Ok(BlockStatus::None);
            match (&mut range, free) {
                (None, true) => {
                    let at = geo.piece_offset(p) + u64::from(block.offset);
                    range = Some((at, block_end(geo, &block)));
                }
                (Some(r), true) => r.1 = block_end(geo, &block),
                (Some(_), false) => break,
                (None, false) => {}
            }
        }
        if range.is_some() {
            return range;
        }
    }
    None
}

/// Marks the blocks of `[start, end)` requested by the web seed; a piece the picker
/// has no room for ends the range there. Returns the end kept (`start`: none).
fn claim(m: &mut Meta, k: PeerKey, start: u64, end: u64) -> u64 {
    let geo = m.geometry;
    let mut off = start;
    while off < end {
        let Some(b) = block_at(&geo, off) else { break };
        let r = m.picker.mark_requested(&b, k);
        if r.is_err() && (b.offset == 0 || off == start) {
            // No partial slot for this piece: the run ends before it.
            return off;
        }
        off = block_end(&geo, &b);
    }
    off.min(end)
}

/// Gives back to the picker the blocks of `[from, end)` the web seed still had.
fn release(m: &mut Meta, k: PeerKey, from: u64, end: u64) {
    let geo = m.geometry;
    let mut off = from;
    while off < end {
        let Some(b) = block_at(&geo, off) else { break };
        let _ = m.picker.abort_request(&b, k);
        off = block_end(&geo, &b);
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn cap_text(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    String::from(&s[..end])
}

impl Torrent {
    /// Ends every request of every web seed (the torrent stopped downloading): their
    /// blocks go back to the picker. The host learns it when it next hands bytes in.
    fn end_web_requests(&mut self) {
        let (web, meta) = (&mut self.web, &mut self.meta);
        for s in &mut web.seeds {
            for r in s.requests.drain(..) {
                if let Some(m) = meta.as_mut() {
                    release(m, key(s.id), r.next, r.end);
                }
            }
        }
    }

    /// The web seeds that sent blocks of `piece` (asked before its failure is
    /// recorded).
    pub(crate) fn web_senders(&self, piece: PieceIndex) -> (Vec<WebSeedId>, bool) {
        if self.web.is_empty() {
            return (Vec::new(), false);
        }
        let Some(m) = self.meta.as_ref() else {
            return (Vec::new(), false);
        };
        match m.picker.piece_senders(piece) {
            Ok(set) => {
                let web = WebSeeds::seeds_of(set.as_slice());
                let alone = web.len() == set.as_slice().len();
                (web, alone)
            }
            Err(_) => (Vec::new(), false),
        }
    }

    /// Blames web seed `id` for the failed `piece`: dropped for good when web seeds
    /// alone sent it (`alone`) or at its second shared failure.
    pub(crate) fn blame_web_seed(&mut self, id: WebSeedId, piece: PieceIndex, alone: bool) {
        let Some(s) = self.web.seed_mut(id) else {
            return;
        };
        if !alone && s.strikes == 0 {
            s.strikes = 1;
            return;
        }
        self.drop_web_seed(id, piece);
    }

    /// Drops web seed `id` for good: its data failed the hash check of `piece`.
    pub(crate) fn drop_web_seed(&mut self, id: WebSeedId, piece: PieceIndex) {
        let (web, meta) = (&mut self.web, &mut self.meta);
        let Some(s) = web.seed_mut(id) else { return };
        if s.dropped {
            return;
        }
        s.dropped = true;
        s.retry_at = None;
        let mut text = String::new();
        let _ = write!(text, "piece {} failed its hash check: dropped", piece.0);
        s.last_error = Some(text);
        if let Some(m) = meta.as_mut() {
            for r in s.requests.drain(..) {
                release(m, key(id), r.next, r.end);
            }
            // What else it sent is suspect: fetched again.
            m.picker.drop_blocks_from(key(id));
        }
        s.requests.clear();
    }
}

impl Session {
    /// Adds web seed `url` (BEP 19: `http://` or `https://`; a multi-file torrent's
    /// is a folder) to torrent `id`, as `url-list` and a magnet link's `ws` do when
    /// the torrent is added. `None` when the torrent is unknown, the URL unusable or
    /// already there, or the torrent has [`SessionConfig::max_web_seeds`](super::SessionConfig::max_web_seeds).
    pub fn add_web_seed(&mut self, id: TorrentId, url: &[u8]) -> Option<WebSeedId> {
        let max = self.config.max_web_seeds;
        let t = self.torrents.get_mut(&id)?;
        let had_layout = !t.web.files.is_empty();
        let seed = t.web.add(url, &mut self.next_web_seed, max)?;
        if !had_layout {
            if let Some(m) = t.meta.as_ref() {
                let mut file = Vec::with_capacity(m.info.len() + 8);
                file.extend_from_slice(b"d4:info");
                file.extend_from_slice(&m.info);
                file.push(b'e');
                let mut tokens = Vec::new();
                if let Ok(mi) =
                    Metainfo::parse_vec(&file, &mut tokens, &crate::metainfo::Limits::default())
                {
                    t.web.set_layout(&mi);
                }
            }
        }
        Some(seed)
    }

    /// A torrent's web seeds, for display.
    pub fn web_seeds(&self, id: TorrentId, now: Instant) -> Vec<WebSeedStatus> {
        let Some(t) = self.torrents.get(&id) else {
            return Vec::new();
        };
        t.web
            .seeds
            .iter()
            .map(|s| {
                let retry_in = s.retry_at.filter(|&r| r > now).map(|r| r.since(now));
                let state = if s.dropped {
                    WebSeedState::Dropped
                } else if retry_in.is_some() {
                    WebSeedState::Backoff
                } else if s.requests.is_empty() {
                    WebSeedState::Idle
                } else {
                    WebSeedState::Active
                };
                WebSeedStatus {
                    id: s.id,
                    url: s.url.clone(),
                    state,
                    downloaded: s.downloaded,
                    download_rate: s.rate.at(now),
                    requests: s.requests.len() as u32,
                    failures: s.failures,
                    retry_in,
                    last_error: s.last_error.clone(),
                }
            })
            .collect()
    }

    /// Bytes of request `req` of web seed `seed`, in order, as they arrive (any
    /// amount at a time). Returns false when the request is no longer wanted (the
    /// torrent stopped or was removed, the web seed was dropped, the request ended or
    /// more bytes came than asked): the host stops it and reports nothing more.
    pub fn handle_webseed_data(
        &mut self,
        now: Instant,
        torrent: TorrentId,
        seed: WebSeedId,
        req: u64,
        data: &[u8],
    ) -> bool {
        let Some(t) = self.torrents.get_mut(&torrent) else {
            return false;
        };
        let (web, meta) = (&mut t.web, &mut t.meta);
        let (Some(m), Some(s)) = (meta.as_mut(), web.seed_mut(seed)) else {
            return false;
        };
        let Some(ri) = s.requests.iter().position(|r| r.req == req) else {
            return false;
        };
        let geo = m.geometry;
        let k = key(seed);
        let r = &mut s.requests[ri];
        let arrived = r.next + r.buf.len() as u64;
        if data.len() as u64 > r.end - arrived {
            // More than asked: the host's bug or a server's lie; the request ends.
            let r = s.requests.swap_remove(ri);
            release(m, k, r.next, r.end);
            s.last_error = Some(String::from("more bytes than asked"));
            return false;
        }
        r.last_data = now;
        let mut cancels: Vec<(PeerKey, BlockRef)> = Vec::new();
        let mut written = 0usize;
        let mut rest = data;
        while !rest.is_empty() {
            let Some(b) = block_at(&geo, r.next) else {
                break;
            };
            let need = b.len as usize - r.buf.len();
            let take = need.min(rest.len());
            let block_data = if r.buf.is_empty() && take == b.len as usize {
                rest[..take].to_vec()
            } else {
                r.buf.extend_from_slice(&rest[..take]);
                if r.buf.len() < b.len as usize {
                    break;
                }
                core::mem::take(&mut r.buf)
            };
            rest = &rest[take..];
            r.next = block_end(&geo, &b);
            if let Ok(rc) = m.picker.mark_received(&b, k) {
                if !rc.duplicate {
                    written += block_data.len();
                    self.actions.push_back(Action::Write {
                        torrent,
                        block: b,
                        data: block_data,
                    });
                }
                cancels.extend(rc.cancel.as_slice().iter().map(|p| (*p, b)));
            }
        }
        let n = data.len() as u64;
        s.downloaded += n;
        s.rate.add(now, n);
        t.downloaded += n;
        t.last_transfer = now;
        self.disk_in_flight += written;
        // Peers asked for the same blocks in the endgame: cancelled.
        for (p, b) in cancels {
            if let Some(c) = self.conns.get_mut(&ConnId(p.0)) {
                c.peer.cancel(b);
            }
        }
        self.flush_sends();
        true
    }

    /// Request `req` of web seed `seed` ended: every byte asked came (fewer is a
    /// failure).
    pub fn handle_webseed_done(
        &mut self,
        now: Instant,
        torrent: TorrentId,
        seed: WebSeedId,
        req: u64,
    ) {
        let complete = self
            .torrents
            .get(&torrent)
            .and_then(|t| t.web.seeds.iter().find(|s| s.id == seed))
            .and_then(|s| s.requests.iter().find(|r| r.req == req))
            .map(|r| r.next >= r.end);
        match complete {
            None => {}
            Some(false) => {
                self.handle_webseed_failed(now, torrent, seed, req, None, "response ended early");
                return;
            }
            Some(true) => {
                if let Some(s) = self
                    .torrents
                    .get_mut(&torrent)
                    .and_then(|t| t.web.seed_mut(seed))
                {
                    s.requests.retain(|r| r.req != req);
                    s.failures = 0;
                    s.retry_at = None;
                }
            }
        }
        self.run_web_seeds(now);
        self.flush_sends();
    }

    /// Request `req` of web seed `seed` failed (`error` says how, for its status):
    /// its blocks go back to the picker and the web seed waits, `retry_after` (the
    /// server's `Retry-After`) or its backoff.
    pub fn handle_webseed_failed(
        &mut self,
        now: Instant,
        torrent: TorrentId,
        seed: WebSeedId,
        req: u64,
        retry_after: Option<Duration>,
        error: &str,
    ) {
        let (base, max) = (self.config.web_seed_retry, self.config.web_seed_retry_max);
        if let Some(t) = self.torrents.get_mut(&torrent) {
            let (web, meta) = (&mut t.web, &mut t.meta);
            if let Some(s) = web.seed_mut(seed) {
                if let Some(ri) = s.requests.iter().position(|r| r.req == req) {
                    let r = s.requests.swap_remove(ri);
                    if let Some(m) = meta.as_mut() {
                        release(m, key(seed), r.next, r.end);
                    }
                    fail_seed(s, now, retry_after, error, base, max);
                }
            }
        }
        self.run_web_seeds(now);
        self.fill_all_requests(now);
        self.flush_sends();
    }

    /// Hands out web seed requests: each web seed of each downloading torrent, not
    /// dropped and not in backoff, gets requests up to its connections while the disk
    /// queue has room; requests silent for too long fail; a torrent that stopped
    /// downloading ends its requests.
    pub(crate) fn run_web_seeds(&mut self, now: Instant) {
        let cfg = &self.config;
        let (conns, bytes, timeout) = (
            cfg.web_seed_connections,
            cfg.web_seed_request_bytes,
            cfg.web_seed_timeout,
        );
        let (base, max) = (cfg.web_seed_retry, cfg.web_seed_retry_max);
        let on = cfg.web_seeds;
        let disk_cap = cfg.max_disk_bytes_in_flight;
        let total_cap = cfg.max_web_seed_requests;
        let mut total: usize = self
            .torrents
            .values()
            .flat_map(|t| t.web.seeds.iter())
            .map(|s| s.requests.len())
            .sum();
        for t in self.torrents.values_mut() {
            if t.web.is_empty() {
                continue;
            }
            let runs = on
                && t.meta.is_some()
                && !t.web.files.is_empty()
                && t.state == TorrentState::Downloading
                && !t.is_stopped()
                && t.error.is_none()
                && !t.is_finished();
            if !runs {
                t.end_web_requests();
                continue;
            }
            let tid = t.id;
            let (web, meta) = (&mut t.web, &mut t.meta);
            let Some(m) = meta.as_mut() else { continue };
            for si in 0..web.seeds.len() {
                let s = &mut web.seeds[si];
                if s.dropped {
                    continue;
                }
                // Requests that sent nothing for too long.
                while let Some(ri) = s
                    .requests
                    .iter()
                    .position(|r| now.since(r.last_data) >= timeout)
                {
                    let r = s.requests.swap_remove(ri);
                    release(m, key(s.id), r.next, r.end);
                    fail_seed(s, now, None, "timed out", base, max);
                }
                if s.retry_at.is_some_and(|r| r > now) {
                    continue;
                }
                s.rate.tick(now);
                while web.seeds[si].requests.len() < conns
                    && total < total_cap
                    && self.disk_in_flight < disk_cap
                {
                    let Some((start, end)) = pick_range(m, bytes) else {
                        break;
                    };
                    let end = web.cap_files(&m.geometry, start, end);
                    let id = web.seeds[si].id;
                    let end = claim(m, key(id), start, end);
                    if end <= start {
                        break;
                    }
                    let ranges = web.ranges(&web.seeds[si].url, start, end);
                    total += 1;
                    let req = self.next_web_req;
                    self.next_web_req += 1;
                    let s = &mut web.seeds[si];
                    s.requests.push(Request {
                        req,
                        next: start,
                        end,
                        buf: Vec::new(),
                        last_data: now,
                    });
                    self.actions.push_back(Action::WebSeedRequest {
                        torrent: tid,
                        seed: id,
                        req,
                        ranges,
                    });
                }
            }
        }
    }
}

/// A request of `s` failed: it backs off (a second request failing during the wait
/// only extends it by its `Retry-After`).
fn fail_seed(
    s: &mut WebSeed,
    now: Instant,
    retry_after: Option<Duration>,
    error: &str,
    base: Duration,
    max: Duration,
) {
    s.last_error = Some(cap_text(error, MAX_ERROR_TEXT));
    let waiting = s.retry_at.filter(|&r| r > now);
    if waiting.is_some() && retry_after.is_none() {
        // Its other requests, started before the first failure, failing in turn:
        // one failure, one wait.
        return;
    }
    s.failures = s.failures.saturating_add(1);
    let at = now + backoff(s.failures, retry_after, base, max);
    s.retry_at = Some(waiting.map_or(at, |w| w.max(at)));
}

/// How long a web seed waits after its `failures`-th failure in a row: the server's
/// `Retry-After` when it gave one (at least a second, at most [`MAX_RETRY_AFTER`]),
/// else `base` doubling with each failure, at most `max`.
pub fn backoff(
    failures: u32,
    retry_after: Option<Duration>,
    base: Duration,
    max: Duration,
) -> Duration {
    if let Some(d) = retry_after {
        let d = d.as_millis().clamp(1000, MAX_RETRY_AFTER.as_millis());
        return Duration::from_millis(d);
    }
    let shift = failures.saturating_sub(1).min(20);
    let ms = base.as_millis().saturating_mul(1u64 << shift);
    Duration::from_millis(ms.min(max.as_millis().max(base.as_millis())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(multi: bool, files: &[(&str, u64, bool)]) -> WebSeeds {
        let mut w = WebSeeds {
            multi,
            ..WebSeeds::default()
        };
        let mut off = 0;
        for &(p, len, pad) in files {
            w.files.push(WebFile {
                offset: off,
                len,
                path: String::from(p),
                pad,
            });
            off += len;
        }
        w
    }

    fn range(url: Option<&str>, offset: u64, len: u64) -> WebSeedRange {
        WebSeedRange {
            url: url.map(String::from),
            offset,
            len,
        }
    }

    /// A range that spans three files is cut at their boundaries; the folder URL
    /// gets a slash when it lacks one; pad files are zeros, not URLs.
    #[test]
    fn ranges_cross_file_boundaries() {
        let w = layout(
            true,
            &[
                ("t/a", 100, false),
                ("t/b", 50, false),
                ("t/.pad/14", 14, true),
                ("t/c%20d", 1000, false),
            ],
        );
        assert_eq!(
            w.ranges("http://h/pub", 90, 200),
            [
                range(Some("http://h/pub/t/a"), 90, 10),
                range(Some("http://h/pub/t/b"), 0, 50),
                range(None, 0, 14),
                range(Some("http://h/pub/t/c%20d"), 0, 36),
            ]
        );
        assert_eq!(
            w.ranges("http://h/pub/", 0, 100),
            [range(Some("http://h/pub/t/a"), 0, 100)]
        );
        assert_eq!(
            w.ranges("http://h/", 150, 1164),
            [range(None, 0, 14), range(Some("http://h/t/c%20d"), 0, 1000)]
        );
        assert_eq!(
            w.ranges("http://h/", 120, 121),
            [range(Some("http://h/t/b"), 20, 1)]
        );
    }

    /// A request over many small files ends at the block boundary after its 64th file;
    /// one over few files, or a block holding many, is left as it is.
    #[test]
    fn a_request_spans_at_most_64_files() {
        let names: Vec<String> = (0..300).map(|i| alloc::format!("t/{i}")).collect();
        let small: Vec<(&str, u64, bool)> =
            names.iter().map(|n| (n.as_str(), 1000, false)).collect();
        let w = layout(true, &small);
        let geo = Geometry::new(300_000, 65_536).expect("geometry");
        // Files 0..64 end at 64,000: the block boundary after it is 65,536.
        let end = w.cap_files(&geo, 0, 262_144);
        assert_eq!(end, 65_536);
        assert!(w.ranges("http://h/", 0, end).len() <= MAX_FILES_PER_REQUEST + 2);
        // From the middle of file 100: 64 files on is 164,000, then 180,224.
        assert_eq!(w.cap_files(&geo, 100_500, 262_144), 180_224);
        // Within the cap: unchanged.
        assert_eq!(w.cap_files(&geo, 0, 16_384), 16_384);
        let big = layout(true, &[("a", 1 << 30, false), ("b", 1 << 30, false)]);
        let geo = Geometry::new(2 << 30, 1 << 20).expect("geometry");
        assert_eq!(big.cap_files(&geo, 0, 4 << 20), 4 << 20);
        // A block of 16,384 one-byte files stays one request (past the cap, never
        // empty).
        let names: Vec<String> = (0..20_000).map(|i| alloc::format!("t/{i}")).collect();
        let tiny: Vec<(&str, u64, bool)> = names.iter().map(|n| (n.as_str(), 1, false)).collect();
        let w = layout(true, &tiny);
        let geo = Geometry::new(20_000, 16_384).expect("geometry");
        assert_eq!(w.cap_files(&geo, 0, 20_000), 16_384);
    }

    /// A single file: the URL is the file, or a folder when it ends in a slash.
    #[test]
    fn single_file_url() {
        let w = layout(false, &[("f%C3%A9.iso", 500, false)]);
        assert_eq!(
            w.ranges("http://h/x.iso", 10, 20),
            [range(Some("http://h/x.iso"), 10, 10)]
        );
        assert_eq!(
            w.ranges("http://h/d/", 10, 20),
            [range(Some("http://h/d/f%C3%A9.iso"), 10, 10)]
        );
    }

    #[test]
    fn escaping() {
        let mut s = String::new();
        push_escaped(&mut s, "a b/é~_-.x?#%".as_bytes());
        assert_eq!(s, "a%20b%2F%C3%A9~_-.x%3F%23%25");
        let mut s = String::new();
        push_escaped(&mut s, b"..");
        assert_eq!(s, "%2E%2E");
        assert!(valid_url(b"http://h/").is_some());
        assert!(valid_url(b"HTTPS://h/").is_some());
        assert!(valid_url(b"ftp://h/").is_none());
        assert!(valid_url(b"http://h/a b").is_none());
        assert!(valid_url(b"http://").is_none());
    }

    /// The backoff doubles from the base to the cap; `Retry-After` wins, within
    /// a second and an hour.
    #[test]
    fn backoff_doubles_and_honours_retry_after() {
        let (b, m) = (Duration::from_secs(3), Duration::from_secs(300));
        let secs = |f, r| backoff(f, r, b, m).as_millis() / 1000;
        assert_eq!(
            (1..=9).map(|f| secs(f, None)).collect::<Vec<_>>(),
            [3, 6, 12, 24, 48, 96, 192, 300, 300]
        );
        assert_eq!(secs(1000, None), 300);
        assert_eq!(secs(5, Some(Duration::from_secs(2))), 2);
        assert_eq!(secs(1, Some(Duration::from_secs(0))), 1);
        assert_eq!(secs(1, Some(Duration::from_secs(86_400))), 3600);
    }

    #[test]
    fn blocks_at_offsets() {
        let geo = Geometry::new(40_000, 32_768).expect("geometry");
        assert_eq!(
            block_at(&geo, 16_384),
            Some(BlockRef {
                piece: PieceIndex(0),
                offset: 16_384,
                len: 16_384
            })
        );
        assert_eq!(
            block_at(&geo, 32_768),
            Some(BlockRef {
                piece: PieceIndex(1),
                offset: 0,
                len: 40_000 - 32_768
            })
        );
        assert_eq!(block_at(&geo, 100), None);
        assert_eq!(block_at(&geo, 40_000), None);
    }

    /// A multi-file torrent (two files of 40,000 and 30,000 bytes, 32 KiB pieces)
    /// with a web seed; the hashes are never checked here.
    fn two_files(ws: &str) -> Vec<u8> {
        let n = 70_000u64.div_ceil(32_768) as usize;
        let mut f = alloc::format!(
            "d8:url-list{}:{ws}4:infod5:filesld6:lengthi40000e4:pathl1:aeed6:lengthi30000e4:pathl3:b ceee4:name1:t12:piece lengthi32768e6:pieces{}:",
            ws.len(),
            20 * n
        )
        .into_bytes();
        f.resize(f.len() + 20 * n, 7);
        f.extend_from_slice(b"ee");
        f
    }

    fn session() -> Session {
        let mut c = super::super::SessionConfig::new(crate::ids::PeerId::generate(1));
        c.web_seeds = true;
        c.web_seed_request_bytes = 64 << 10;
        c.web_seed_connections = 1;
        Session::new(c, 1)
    }

    fn actions(s: &mut Session) -> Vec<Action> {
        core::iter::from_fn(|| s.poll_action()).collect()
    }

    fn requests(a: &[Action]) -> Vec<(WebSeedId, u64, Vec<WebSeedRange>)> {
        a.iter()
            .filter_map(|a| match a {
                Action::WebSeedRequest {
                    seed, req, ranges, ..
                } => Some((*seed, *req, ranges.clone())),
                _ => None,
            })
            .collect()
    }

    /// The session asks a web seed for whole pieces (one at a time here: this
    /// torrent's picker has three partial slots), cut at the file boundary; the bytes
    /// become blocks written and checked; a piece that fails with the web seed's data
    /// drops it for good and its blocks go back.
    #[test]
    fn a_web_seed_downloads_runs_and_is_dropped_after_bad_data() {
        let mut s = session();
        let now = Instant::from_millis(1000);
        let t = s
            .add_torrent(now, &two_files("http://h/pub"), None)
            .expect("add");
        s.handle_timeout(now);
        let a = actions(&mut s);
        let r = requests(&a);
        assert_eq!(r.len(), 1, "{a:?}");
        let (seed, req, ranges) = r[0].clone();
        assert_eq!(ranges, [range(Some("http://h/pub/t/a"), 0, 32_768)]);
        // The bytes in odd-sized chunks: whole blocks come out.
        let mut writes = Vec::new();
        let feed = |s: &mut Session, req, writes: &mut Vec<BlockRef>| {
            let data = alloc::vec![1u8; 32_768];
            for chunk in data.chunks(10_000) {
                assert!(s.handle_webseed_data(now, t, seed, req, chunk));
                for a in actions(s) {
                    if let Action::Write { block, data, .. } = a {
                        assert_eq!(data.len(), block.len as usize);
                        writes.push(block);
                    }
                }
            }
        };
        feed(&mut s, req, &mut writes);
        s.handle_webseed_done(now, t, seed, req);
        // The next piece spans the two files.
        let r = requests(&actions(&mut s));
        assert_eq!(r.len(), 1);
        let (_, req2, ranges) = r[0].clone();
        assert_eq!(
            ranges,
            [
                range(Some("http://h/pub/t/a"), 32_768, 40_000 - 32_768),
                range(Some("http://h/pub/t/b%20c"), 0, 65_536 - 40_000),
            ]
        );
        feed(&mut s, req2, &mut writes);
        assert_eq!(writes.len(), 4);
        assert_eq!(s.web_seeds(t, now)[0].downloaded, 65_536);
        // More than asked is refused.
        assert!(!s.handle_webseed_data(now, t, seed, req2, &[0]));
        let mut verify = Vec::new();
        for b in &writes {
            s.handle_write_done(now, t, *b, Ok(()));
            for a in actions(&mut s) {
                if let Action::Verify { piece, .. } = a {
                    verify.push(piece);
                }
            }
        }
        assert_eq!(verify, [PieceIndex(0), PieceIndex(1)]);
        s.handle_verified(now, t, PieceIndex(0), true);
        s.handle_verified(now, t, PieceIndex(1), false);
        // What was asked before the failure is ended by it.
        let _ = actions(&mut s);
        let st = &s.web_seeds(t, now)[0];
        assert_eq!(st.requests, 0, "{st:?}");
        assert_eq!(st.state, WebSeedState::Dropped, "{st:?}");
        assert!(st
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("piece 1")));
        // Never asked again, though pieces 1 and 2 are missing.
        let later = now + Duration::from_secs(1000);
        s.handle_timeout(later);
        assert!(requests(&actions(&mut s)).is_empty());
    }

    /// A failed request backs the web seed off and gives its blocks back; a second
    /// web seed (or peers) can take them at once; `Retry-After` sets the wait.
    #[test]
    fn a_failed_request_backs_off_and_frees_its_pieces() {
        let mut s = session();
        let now = Instant::from_millis(1000);
        let t = s
            .add_torrent(now, &two_files("http://h/pub/"), None)
            .expect("add");
        s.handle_timeout(now);
        let (seed, req, _) = requests(&actions(&mut s))[0].clone();
        s.handle_webseed_failed(now, t, seed, req, Some(Duration::from_secs(7)), "HTTP 503");
        let st = &s.web_seeds(t, now)[0];
        assert_eq!(st.state, WebSeedState::Backoff);
        assert_eq!(st.retry_in, Some(Duration::from_secs(7)));
        assert_eq!(st.last_error.as_deref(), Some("HTTP 503"));
        // Its pieces are free again: a second web seed gets the same start.
        let other = s.add_web_seed(t, b"http://mirror/").expect("second");
        s.handle_timeout(now + Duration::from_secs(1));
        let r = requests(&actions(&mut s));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, other);
        assert_eq!(r[0].2, [range(Some("http://mirror/t/a"), 0, 32_768)]);
        // Not before the wait is over.
        s.handle_timeout(now + Duration::from_secs(6));
        assert!(requests(&actions(&mut s)).iter().all(|r| r.0 != seed));
        // After the wait the first is asked again, for the start of what is left
        // (piece 1: piece 0 is the mirror's).
        s.handle_timeout(now + Duration::from_secs(8));
        let r = requests(&actions(&mut s));
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].0, seed);
        assert_eq!(
            r[0].2[0],
            range(Some("http://h/pub/t/a"), 32_768, 40_000 - 32_768)
        );
    }

    /// The session's cap on requests holds over every web seed of every torrent.
    #[test]
    fn requests_are_capped_over_the_session() {
        let mut c = super::super::SessionConfig::new(crate::ids::PeerId::generate(1));
        c.web_seeds = true;
        c.max_web_seed_requests = 1;
        let mut s = Session::new(c, 1);
        let now = Instant::from_millis(1000);
        let t = s
            .add_torrent(now, &two_files("http://h/pub"), None)
            .expect("add");
        s.add_web_seed(t, b"http://mirror/").expect("second");
        s.handle_timeout(now);
        let r = requests(&actions(&mut s));
        assert_eq!(r.len(), 1, "{r:?}");
        // When it ends, the next one goes out.
        s.handle_webseed_failed(now, t, r[0].0, r[0].1, None, "refused");
        assert_eq!(requests(&actions(&mut s)).len(), 1);
    }
}
