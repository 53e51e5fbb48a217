//! BEP 52 piece layers over the wire: `hash request`, `hashes` and `hash reject`.
//!
//! **Serving.** A peer that has a file's `pieces root` but not its piece layer (it
//! joined from a magnet link: `ut_metadata` carries only the info dictionary) asks for
//! ranges of the layer with a proof up to the root. A torrent whose layers are known
//! answers from them ([`crate::merkle::hashes_answer`]); anything else (another layer,
//! a file it does not know, a malformed range) gets a `hash reject`. A file's tree
//! above 512 pieces is built once, at the first request for it, so an answer costs at
//! most 512 SHA-256 plus a lookup per proof layer; each connection may make at most
//! [`answer_budget`] requests, answered or not: twice what fetching every layer of the
//! torrent takes, plus a few; past it every request is rejected.
//!
//! **Fetching** (see `fetch` below): a magnet link of a v2-only torrent gets its info
//! dictionary, then the layer of each file larger than a piece, in ranges of at most
//! 512 hashes, each checked against the file's root before it is kept.

use super::torrent::MetaOutcome;
use super::{CloseReason, ConnId, Session, TorrentId};
use crate::bencode::Encoder;
use crate::merkle;
use crate::metainfo::Metainfo;
use crate::time::{Duration, Instant};
use crate::wire::HashRequest;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// A file with a piece layer: its root, its first piece and piece count, its length.
#[derive(Clone, Debug)]
pub(crate) struct LayeredFile {
    pub(crate) root: [u8; 32],
    pub(crate) first: u32,
    pub(crate) pieces: u32,
    pub(crate) length: u64,
    /// Built at the first request for it: the layer in one piece and the tree above
    /// 512 pieces, so an answer costs at most 512 hashes (32 bytes a piece, plus
    /// about one node per 256 pieces).
    served: Option<(Vec<u8>, merkle::UpperTree)>,
}

/// The files of `m` larger than a piece, in order.
pub(crate) fn layered_files(m: &Metainfo<'_>) -> Vec<LayeredFile> {
    let pl = u64::from(m.piece_length());
    let Some(files) = m.tree_files() else {
        return Vec::new();
    };
    files
        .filter(|f| !f.attr.pad && f.length > pl)
        .filter_map(|f| {
            Some(LayeredFile {
                root: *f.pieces_root()?,
                first: u32::try_from(f.offset / pl).ok()?,
                pieces: u32::try_from(f.length.div_ceil(pl)).ok()?,
                length: f.length,
                served: None,
            })
        })
        .collect()
}

/// The piece layer of the file whose `pieces` pieces start at `first`: their roots in
/// `merkle`, end to end.
pub(crate) fn layer_of(merkle: &[super::MerklePiece], first: u32, pieces: u32) -> Option<Vec<u8>> {
    let roots = merkle.get(first as usize..first as usize + pieces as usize)?;
    Some(roots.iter().flat_map(|p| p.root).collect())
}

/// The hash requests one connection may make (answered or rejected): enough to fetch
/// every layer of the torrent twice (ranges of 512 hashes), and 16 more.
pub(crate) fn answer_budget(files: &[LayeredFile]) -> u32 {
    let ranges: u32 = files
        .iter()
        .map(|f| f.pieces.div_ceil(merkle::MAX_HASH_REQUEST_LEN))
        .fold(0u32, u32::saturating_add);
    ranges.saturating_mul(2).saturating_add(16)
}

/// A peer's `hash request`: answered from the torrent's piece layers, or rejected.
/// Every request counts against the connection's budget, answered or not.
pub(crate) fn on_hash_request(s: &mut Session, conn: ConnId, req: &HashRequest) {
    let answer = answer(s, conn, req);
    let Some(c) = s.conns.get_mut(&conn) else {
        return;
    };
    c.hash_answers = c.hash_answers.saturating_add(1);
    match answer {
        Some(hashes) => c.peer.send_hashes(*req, &hashes),
        None => c.peer.send_hash_reject(*req),
    }
    s.flag_send(conn);
}

fn answer(s: &mut Session, conn: ConnId, req: &HashRequest) -> Option<Vec<u8>> {
    let c = s.conns.get(&conn)?;
    let used = c.hash_answers;
    let m = s.torrents.get_mut(&c.torrent?)?.meta.as_mut()?;
    if used >= answer_budget(&m.layered) {
        return None;
    }
    let piece_len = m.geometry.piece_len();
    let f = m.layered.iter_mut().find(|f| f.root == req.root)?;
    // A request to refuse costs nothing more.
    if !merkle::hash_request_ok(f.length, piece_len, req) {
        return None;
    }
    if f.served.is_none() {
        let layer = layer_of(&m.merkle, f.first, f.pieces)?;
        let upper = merkle::UpperTree::new(&layer, merkle::layer_height(piece_len));
        f.served = Some((layer, upper));
    }
    let (layer, upper) = f.served.as_ref()?;
    let mut out = Vec::new();
    merkle::hashes_answer_cached(layer, upper, f.length, piece_len, req, &mut out).ok()?;
    Some(out)
}

/// Ranges asked of one connection at a time.
const MAX_ASKED_PER_CONN: usize = 4;
/// A range not answered in this long is asked of another peer.
const ASK_TIMEOUT: Duration = Duration::from_secs(20);
/// Peers remembered per range as having refused it.
const MAX_REFUSERS: usize = 8;

/// One range of a file's piece layer: `length` hashes from `index`.
#[derive(Clone, Debug)]
struct Range {
    index: u32,
    length: u32,
    /// Asked of a connection, and when.
    asked: Option<(ConnId, Instant)>,
    got: bool,
    /// Connections that rejected it (or whose answer failed its proof).
    refused: Vec<ConnId>,
}

#[derive(Clone, Debug)]
struct FileFetch {
    root: [u8; 32],
    length: u64,
    pieces: u32,
    /// The layer as it arrives: `pieces` hashes, zero where not yet known.
    layer: Vec<u8>,
    ranges: Vec<Range>,
}

/// A v2 magnet link's torrent between its info dictionary and its piece layers.
#[derive(Clone, Debug)]
pub(crate) struct LayerFetch {
    info: Vec<u8>,
    piece_len: u32,
    files: Vec<FileFetch>,
}

impl LayerFetch {
    /// The layers `m` (parsed from its info dictionary alone) lacks; `None` when it
    /// needs none or its piece length is not a v2 one.
    pub(crate) fn new(m: &Metainfo<'_>) -> Option<Self> {
        let piece_len = m.piece_length();
        if piece_len < merkle::BLOCK_SIZE || !piece_len.is_power_of_two() {
            return None;
        }
        let mut layered = layered_files(m);
        // Files of the same content share a root, and so a layer: fetched once. The
        // same root for files of different sizes cannot be right.
        layered.sort_by_key(|f| f.root);
        for w in layered.windows(2) {
            if w[0].root == w[1].root && w[0].length != w[1].length {
                return None;
            }
        }
        layered.dedup_by(|a, b| a.root == b.root);
        let files: Vec<FileFetch> = layered
            .into_iter()
            .map(|f| {
                let width = f.pieces.next_power_of_two();
                let length = width.min(merkle::MAX_HASH_REQUEST_LEN);
                let ranges = (0..f.pieces.div_ceil(length))
                    .map(|k| Range {
                        index: k * length,
                        length,
                        asked: None,
                        got: false,
                        refused: Vec::new(),
                    })
                    .collect();
                FileFetch {
                    root: f.root,
                    length: f.length,
                    pieces: f.pieces,
                    layer: alloc::vec![0; f.pieces as usize * 32],
                    ranges,
                }
            })
            .collect();
        if files.is_empty() {
            return None;
        }
        Some(Self {
            info: m.info_bytes().to_vec(),
            piece_len,
            files,
        })
    }

    fn request(&self, f: &FileFetch, r: &Range) -> HashRequest {
        let width = f.pieces.next_power_of_two();
        HashRequest {
            root: f.root,
            base: merkle::layer_height(self.piece_len),
            index: r.index,
            length: r.length,
            // A proof up to the root: `log2(width) - 1` layers (see `crate::merkle`).
            proof_layers: width.trailing_zeros().saturating_sub(1),
        }
    }

    fn is_complete(&self) -> bool {
        self.files.iter().all(|f| f.ranges.iter().all(|r| r.got))
    }

    /// The whole metainfo: the info dictionary and the `piece layers` fetched.
    fn metainfo(&self) -> Vec<u8> {
        metainfo(
            &self.info,
            self.files.iter().map(|f| (f.root, f.layer.as_slice())),
        )
    }
}

/// `d4:info<info>12:piece layersd<root><layer>...ee`: a metainfo of the info dictionary
/// and the given layers (none: `d4:info<info>e`), keys in bencode's order.
pub(crate) fn metainfo<'a>(
    info: &[u8],
    layers: impl Iterator<Item = ([u8; 32], &'a [u8])>,
) -> Vec<u8> {
    let mut layers: Vec<([u8; 32], &[u8])> = layers.collect();
    layers.sort_by_key(|l| l.0);
    layers.dedup_by(|a, b| a.0 == b.0);
    let mut e = Encoder::new(Vec::with_capacity(info.len() + 32));
    // Writing into a Vec cannot fail.
    let _ = e
        .dict()
        .and_then(|()| e.bytes(b"info"))
        .and_then(|()| e.raw(info));
    if !layers.is_empty() {
        let _ = e.bytes(b"piece layers").and_then(|()| e.dict());
        for (root, layer) in layers {
            let _ = e.bytes(&root).and_then(|()| e.bytes(layer));
        }
        let _ = e.end();
    }
    let _ = e.end();
    e.into_inner()
}

/// Asks the torrent's established peers for the ranges still missing: each range of
/// one peer at a time (not one that refused it), at most [`MAX_ASKED_PER_CONN`] per
/// peer; a range unanswered for [`ASK_TIMEOUT`] is asked again elsewhere.
pub(crate) fn request(s: &mut Session, now: Instant, id: TorrentId) {
    let conns: Vec<ConnId> = s
        .conns
        .iter()
        .filter(|(_, c)| c.torrent == Some(id) && c.peer.is_established())
        .map(|(k, _)| *k)
        .collect();
    let Some(t) = s.torrents.get_mut(&id) else {
        return;
    };
    let Some(fetch) = t.layers.as_mut() else {
        return;
    };
    let mut load: BTreeMap<ConnId, usize> = conns.iter().map(|c| (*c, 0)).collect();
    for f in &mut fetch.files {
        for r in &mut f.ranges {
            if let Some((c, at)) = r.asked {
                if r.got {
                    continue;
                }
                if load.contains_key(&c) && now.since(at) < ASK_TIMEOUT {
                    if let Some(n) = load.get_mut(&c) {
                        *n += 1;
                    }
                    continue;
                }
                // Gone, or too slow: someone else is asked.
                if r.refused.len() < MAX_REFUSERS {
                    r.refused.push(c);
                }
                r.asked = None;
            }
        }
    }
    let mut sends = Vec::new();
    for fi in 0..fetch.files.len() {
        for ri in 0..fetch.files[fi].ranges.len() {
            let r = &fetch.files[fi].ranges[ri];
            if r.got || r.asked.is_some() {
                continue;
            }
            let pick = load
                .iter()
                .filter(|(c, n)| **n < MAX_ASKED_PER_CONN && !r.refused.contains(c))
                .min_by_key(|(c, n)| (**n, **c))
                .map(|(c, _)| *c);
            let Some(c) = pick else {
                // Every peer refused it: forget the refusals and try again later.
                if load.keys().all(|c| r.refused.contains(c)) && !load.is_empty() {
                    fetch.files[fi].ranges[ri].refused.clear();
                }
                continue;
            };
            if let Some(n) = load.get_mut(&c) {
                *n += 1;
            }
            let req = fetch.request(&fetch.files[fi], r);
            fetch.files[fi].ranges[ri].asked = Some((c, now));
            sends.push((c, req));
        }
    }
    for (c, req) in sends {
        if let Some(conn) = s.conns.get_mut(&c) {
            conn.peer.send_hash_request(req);
        }
        s.flag_send(c);
    }
}

/// A peer's `hashes`: an answer to a request of ours (a magnet link's layers). One
/// whose proof does not lead to the file's root closes the connection; an answer to
/// nothing asked is ignored.
pub(crate) fn on_hashes(
    s: &mut Session,
    now: Instant,
    conn: ConnId,
    req: &HashRequest,
    hashes: &[u8],
) -> Result<(), CloseReason> {
    let Some(id) = s.conns.get(&conn).and_then(|c| c.torrent) else {
        return Ok(());
    };
    let Some(fetch) = s.torrents.get_mut(&id).and_then(|t| t.layers.as_mut()) else {
        return Ok(());
    };
    let piece_len = fetch.piece_len;
    let Some(f) = fetch.files.iter_mut().find(|f| f.root == req.root) else {
        return Ok(());
    };
    let Some(r) = f
        .ranges
        .iter_mut()
        .find(|r| r.index == req.index && r.length == req.length && !r.got)
    else {
        return Ok(());
    };
    let Some(real) = merkle::verify_hashes(&f.root, f.length, piece_len, req, hashes) else {
        if r.asked.is_some_and(|(c, _)| c == conn) {
            if r.refused.len() < MAX_REFUSERS {
                r.refused.push(conn);
            }
            r.asked = None;
        }
        return Err(CloseReason::BadMetadata);
    };
    let at = r.index as usize * 32;
    if let Some(dst) = f.layer.get_mut(at..at + real.len()) {
        dst.copy_from_slice(real);
        r.got = true;
        r.asked = None;
    }
    if fetch.is_complete() {
        let file = fetch.metainfo();
        let config = s.config().clone();
        let Some(t) = s.torrents.get_mut(&id) else {
            return Ok(());
        };
        match t.metainfo_received(&file, &config) {
            MetaOutcome::Ready => s.metadata_ready(now, id, &config),
            // The layers passed their proofs, so this cannot fail: start over.
            MetaOutcome::NeedLayers | MetaOutcome::Bad => {
                t.layers = None;
            }
        }
    } else {
        request(s, now, id);
    }
    Ok(())
}

/// A peer's `hash reject` of a request of ours: another peer is asked.
pub(crate) fn on_hash_reject(s: &mut Session, now: Instant, conn: ConnId, req: &HashRequest) {
    let Some(id) = s.conns.get(&conn).and_then(|c| c.torrent) else {
        return;
    };
    let Some(fetch) = s.torrents.get_mut(&id).and_then(|t| t.layers.as_mut()) else {
        return;
    };
    let Some(r) = fetch
        .files
        .iter_mut()
        .filter(|f| f.root == req.root)
        .flat_map(|f| f.ranges.iter_mut())
        .find(|r| r.index == req.index && r.asked.is_some_and(|(c, _)| c == conn))
    else {
        return;
    };
    if r.refused.len() < MAX_REFUSERS {
        r.refused.push(conn);
    }
    r.asked = None;
    request(s, now, id);
}
