//! BEP 52 piece layers over the wire: `hash request`, `hashes` and `hash reject`.
//!
//! **Serving.** A peer that has a file's `pieces root` but not its piece layer (it
//! joined from a magnet link: `ut_metadata` carries only the info dictionary) asks for
//! ranges of the layer with a proof up to the root. A torrent whose layers are known
//! answers from them ([`crate::merkle::hashes_answer`]); anything else (another layer,
//! a file it does not know, a malformed range) gets a `hash reject`. An answer costs
//! `O(pieces of the file)` SHA-256 (the proof is rebuilt from the layer), so each
//! connection gets at most [`answer_budget`] answers: twice what fetching every layer
//! of the torrent takes, plus a few; past it every request is rejected.
//!
//! **Fetching** (see `fetch` below): a magnet link of a v2-only torrent gets its info
//! dictionary, then the layer of each file larger than a piece, in ranges of at most
//! 512 hashes, each checked against the file's root before it is kept.

use super::{ConnId, Session};
use crate::merkle;
use crate::metainfo::Metainfo;
use crate::wire::HashRequest;
use alloc::vec::Vec;

/// A file with a piece layer: its root, its first piece and piece count, its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LayeredFile {
    pub(crate) root: [u8; 32],
    pub(crate) first: u32,
    pub(crate) pieces: u32,
    pub(crate) length: u64,
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
            })
        })
        .collect()
}

/// The requests one connection may have answered: enough to fetch every layer of the
/// torrent twice (ranges of 512 hashes), and 16 more.
pub(crate) fn answer_budget(files: &[LayeredFile]) -> u32 {
    let ranges: u32 = files
        .iter()
        .map(|f| f.pieces.div_ceil(merkle::MAX_HASH_REQUEST_LEN))
        .fold(0u32, u32::saturating_add);
    ranges.saturating_mul(2).saturating_add(16)
}

/// A peer's `hash request`: answered from the torrent's piece layers, or rejected.
pub(crate) fn on_hash_request(s: &mut Session, conn: ConnId, req: &HashRequest) {
    let answer = answer(s, conn, req);
    let Some(c) = s.conns.get_mut(&conn) else {
        return;
    };
    match answer {
        Some(hashes) => {
            c.hash_answers = c.hash_answers.saturating_add(1);
            c.peer.send_hashes(*req, &hashes);
        }
        None => c.peer.send_hash_reject(*req),
    }
    s.flag_send(conn);
}

fn answer(s: &Session, conn: ConnId, req: &HashRequest) -> Option<Vec<u8>> {
    let c = s.conns.get(&conn)?;
    let m = s.torrents.get(&c.torrent?)?.meta.as_ref()?;
    if c.hash_answers >= answer_budget(&m.layered) {
        return None;
    }
    let f = m.layered.iter().find(|f| f.root == req.root)?;
    let pieces = m
        .merkle
        .get(f.first as usize..(f.first + f.pieces) as usize)?;
    let mut layer = Vec::with_capacity(pieces.len() * 32);
    for p in pieces {
        layer.extend_from_slice(&p.root);
    }
    let mut out = Vec::new();
    merkle::hashes_answer(&layer, f.length, m.geometry.piece_len(), req, &mut out).ok()?;
    Some(out)
}

/// A peer's `hashes`: an answer to a request of ours (a magnet link's layers).
pub(crate) fn on_hashes(
    s: &mut Session,
    now: crate::time::Instant,
    conn: ConnId,
    req: &HashRequest,
    hashes: &[u8],
) -> Result<(), super::CloseReason> {
    let _ = (s, now, conn, req, hashes);
    Ok(())
}

/// A peer's `hash reject` of a request of ours.
pub(crate) fn on_hash_reject(
    s: &mut Session,
    now: crate::time::Instant,
    conn: ConnId,
    req: &HashRequest,
) {
    let _ = (s, now, conn, req);
}
