//! Per-torrent controls: which files are wanted and how urgently, sequential order,
//! and the ratio at which a torrent stops seeding; and the torrent becoming
//! "finished" (every wanted piece verified).
//!
//! File priorities are libtorrent's: 0 skips the file, 1 to 7 rank it (7 first), 4 is
//! the default ([`DEFAULT_FILE_PRIORITY`]). Transmission's "wanted" and
//! low/normal/high map onto them as unwanted = 0, low = 1, normal = 4, high = 7. A
//! piece takes the highest priority of the files it holds bytes of, so a piece shared
//! by a skipped and a wanted file is downloaded whole (the host writes the skipped
//! file's part of it). A torrent that has every piece of priority above 0 is
//! *finished*: it requests nothing more, is interested in nobody, and reports
//! [`Event::TorrentFinished`]; it announces `completed` only once it has every piece.
//! Making a file wanted again sends it back to downloading.
//!
//! ```text
//!  Downloading ──last wanted piece──▶ finished (Downloading, nothing requested)
//!      ▲                                 │ last piece of all (or none skipped)
//!      └──── more files wanted ◀─────────┤
//!                                        ▼
//!                                     Seeding ──ratio limit──▶ paused
//! ```

use super::{CloseReason, ConnId, Event, Session, TorrentId, TorrentState};
use crate::ids::PieceIndex;
use crate::picker::MAX_PRIORITY;
use crate::time::Instant;
use alloc::vec::Vec;
use core::fmt;

/// The priority of a file nobody set one for (libtorrent's default).
pub const DEFAULT_FILE_PRIORITY: u8 = crate::picker::DEFAULT_PRIORITY;

/// Why a per-torrent control was refused (the caller's fault each time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlError {
    /// No torrent with that id.
    UnknownTorrent,
    /// A magnet link whose info dictionary has not arrived: its files are unknown.
    NoMetadata,
    /// The priorities given are not one per file.
    WrongFileCount {
        /// The torrent's files.
        expected: u32,
        /// The priorities given.
        got: usize,
    },
    /// A priority above 7.
    InvalidPriority,
    /// The torrent's data is being checked.
    Checking,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownTorrent => f.write_str("no such torrent"),
            Self::NoMetadata => f.write_str("the torrent's metadata has not arrived yet"),
            Self::WrongFileCount { expected, got } => {
                write!(f, "{got} priorities for {expected} files")
            }
            Self::InvalidPriority => f.write_str("priority above 7"),
            Self::Checking => f.write_str("the torrent's data is being checked"),
        }
    }
}

/// The priority of each piece from those of the files: the highest of the files it
/// holds bytes of (0 for a piece no file of length above 0 covers).
fn piece_priorities(files: &[(u64, u64)], prio: &[u8], piece_len: u64, pieces: u32) -> Vec<u8> {
    let mut out = alloc::vec![0u8; pieces as usize];
    for (&(offset, len), &p) in files.iter().zip(prio) {
        if len == 0 || p == 0 {
            continue;
        }
        let first = (offset / piece_len) as usize;
        let last = ((offset + len - 1) / piece_len) as usize;
        for slot in out.iter_mut().take(last + 1).skip(first) {
            *slot = (*slot).max(p);
        }
    }
    out
}

impl Session {
    /// Sets the priority of each file of torrent `id`, in torrent order (one per file,
    /// pad files included): 0 = skip, 1..=7, higher first, 4 the default (see the
    /// module docs of `control` for the Transmission mapping). A skipped file's pieces
    /// (those no wanted file shares) are never requested; a torrent that has every
    /// wanted piece is finished ([`Event::TorrentFinished`]); one that wants more
    /// again downloads again. A partial piece that becomes skipped keeps its blocks
    /// and gets no new requests. Typed errors for an unknown torrent, a magnet link
    /// whose metadata has not arrived, a count that is not the file count, a priority
    /// above 7; nothing changes then.
    pub fn set_file_priorities(
        &mut self,
        now: Instant,
        id: TorrentId,
        priorities: &[u8],
    ) -> Result<(), ControlError> {
        let t = self
            .torrents
            .get_mut(&id)
            .ok_or(ControlError::UnknownTorrent)?;
        let m = t.meta.as_mut().ok_or(ControlError::NoMetadata)?;
        if priorities.len() != m.files.len() {
            return Err(ControlError::WrongFileCount {
                expected: m.files.len() as u32,
                got: priorities.len(),
            });
        }
        if priorities.iter().any(|&p| p > MAX_PRIORITY) {
            return Err(ControlError::InvalidPriority);
        }
        let n = m.geometry.num_pieces();
        let prio = piece_priorities(&m.files, priorities, u64::from(m.geometry.piece_len()), n);
        for (i, &p) in prio.iter().enumerate() {
            // In range and at most 7: checked above.
            let _ = m.picker.set_piece_priority(PieceIndex(i as u32), p);
        }
        m.skipped_pieces = prio.iter().filter(|&&p| p == 0).count() as u32;
        m.wanted_mask = (m.skipped_pieces > 0).then(|| {
            let mut w = crate::bitfield::Bitfield::new(n);
            for (i, _) in prio.iter().enumerate().filter(|(_, &p)| p > 0) {
                w.set(i as u32);
            }
            w
        });
        m.file_prio = priorities.to_vec();
        // More wanted than what we have: downloading again.
        let unfinished = t.finished && !m.is_finished();
        if unfinished {
            t.finished = false;
        } else {
            self.note_finished(id);
        }
        self.refresh_interest(now, id);
        Ok(())
    }

    /// Checks torrent `id`'s data on disk again (Transmission's "verify", libtorrent's
    /// `force_recheck`): its peers are closed (they were told of pieces that may be
    /// gone), every piece and partial piece is forgotten (file priorities stay), and it
    /// waits in [`TorrentState::Checking`] until the host's check of every piece comes
    /// back through [`Session::handle_checked`], then starts as a torrent that was just
    /// added (a finished torrent whose data is whole stays finished; one that lost
    /// data downloads it again). A paused torrent stays paused. Typed errors for an
    /// unknown torrent, a magnet link without metadata, and a torrent already checking.
    pub fn recheck(&mut self, now: Instant, id: TorrentId) -> Result<(), ControlError> {
        let t = self.torrents.get(&id).ok_or(ControlError::UnknownTorrent)?;
        if t.meta.is_none() {
            return Err(ControlError::NoMetadata);
        }
        if t.state == TorrentState::Checking {
            return Err(ControlError::Checking);
        }
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.torrent == Some(id))
            .map(|(k, _)| *k)
            .collect();
        for k in conns {
            self.close(k, CloseReason::TorrentStopped);
        }
        let Some(t) = self.torrents.get_mut(&id) else {
            return Err(ControlError::UnknownTorrent);
        };
        let Some(m) = t.meta.as_mut() else {
            return Err(ControlError::NoMetadata);
        };
        if !m.forget_pieces(&self.config) {
            return Err(ControlError::NoMetadata);
        }
        let prio = core::mem::take(&mut m.file_prio);
        m.skipped_pieces = 0;
        m.wanted_mask = None;
        t.state = TorrentState::Checking;
        t.redial_connected();
        if !prio.is_empty() {
            // The same file count as before: cannot fail.
            let _ = self.set_file_priorities(now, id, &prio);
        }
        self.flush_sends();
        Ok(())
    }

    /// The number of files of torrent `id` (pad files included): the length
    /// [`Session::set_file_priorities`] expects. `None` for an unknown torrent or a
    /// magnet link without metadata.
    pub fn num_files(&self, id: TorrentId) -> Option<u32> {
        Some(self.torrents.get(&id)?.meta.as_ref()?.files.len() as u32)
    }

    /// The priority of each file of torrent `id` (as last set, the default for all
    /// until then); `None` for an unknown torrent or a magnet link without metadata.
    pub fn file_priorities(&self, id: TorrentId) -> Option<Vec<u8>> {
        let m = self.torrents.get(&id)?.meta.as_ref()?;
        Some(if m.file_prio.is_empty() {
            alloc::vec![DEFAULT_FILE_PRIORITY; m.files.len()]
        } else {
            m.file_prio.clone()
        })
    }

    /// The verified bytes of each file of torrent `id`, in torrent order: the bytes of
    /// the file that lie in pieces we have. `None` for an unknown torrent or a magnet
    /// link without metadata.
    pub fn file_progress(&self, id: TorrentId) -> Option<Vec<u64>> {
        let m = self.torrents.get(&id)?.meta.as_ref()?;
        let plen = u64::from(m.geometry.piece_len());
        Some(
            m.files
                .iter()
                .map(|&(offset, len)| {
                    if len == 0 {
                        return 0;
                    }
                    let end = offset + len;
                    let (first, last) = (offset / plen, (end - 1) / plen);
                    (first..=last)
                        .filter(|&p| m.have.get(p as u32))
                        .map(|p| end.min((p + 1) * plen) - offset.max(p * plen))
                        .sum()
                })
                .collect(),
        )
    }

    /// The trackers of torrent `id` in their BEP 12 tiers (each tier in the order the
    /// session tries it); `None` for an unknown torrent. What a host writes into the
    /// `.torrent` it saves for a magnet link.
    pub fn trackers(&self, id: TorrentId) -> Option<Vec<Vec<alloc::string::String>>> {
        let t = self.torrents.get(&id)?;
        let mut tiers: Vec<Vec<alloc::string::String>> = Vec::new();
        for (pos, url, _) in t.trackers.iter() {
            while tiers.len() <= pos.tier {
                tiers.push(Vec::new());
            }
            tiers[pos.tier].push(url.url.clone());
        }
        tiers.retain(|t| !t.is_empty());
        Some(tiers)
    }

    /// The torrent connection `conn` belongs to, once its handshake named one.
    pub fn conn_torrent(&self, conn: ConnId) -> Option<TorrentId> {
        self.conns.get(&conn)?.torrent
    }

    /// Turns sequential (streaming) order on or off for torrent `id`: pieces are
    /// requested lowest index first within each priority. False for an unknown
    /// torrent or a magnet link without metadata.
    pub fn set_sequential(&mut self, id: TorrentId, on: bool) -> bool {
        match self.torrents.get_mut(&id).and_then(|t| t.meta.as_mut()) {
            Some(m) => {
                m.picker.set_sequential(on);
                true
            }
            None => false,
        }
    }

    /// Stops torrent `id` seeding once it is finished and its uploaded payload bytes
    /// reach `limit` thousandths of its downloaded ones (1000 = ratio 1.0; the
    /// downloaded bytes count at least the verified bytes, so a torrent added complete
    /// stops after uploading `limit`/1000 times its size, as libtorrent counts it):
    /// it is paused and [`Event::RatioReached`] says so. `None` lifts the limit.
    /// Checked now, as each block goes out and at each timer; a torrent resumed past its limit stops again, so
    /// raise or lift the limit first. False for an unknown torrent.
    pub fn set_ratio_limit(&mut self, now: Instant, id: TorrentId, limit: Option<u32>) -> bool {
        let Some(t) = self.torrents.get_mut(&id) else {
            return false;
        };
        t.ratio_limit = limit;
        self.check_ratios(now);
        true
    }

    /// Pauses the finished torrents that reached their ratio limit (at each timer, and
    /// after each block read for a torrent that has a limit).
    pub(super) fn check_ratios(&mut self, now: Instant) {
        let due: Vec<TorrentId> = self
            .torrents
            .iter()
            .filter(|(_, t)| !t.paused && t.finished && t.state != TorrentState::Error)
            .filter(|(_, t)| {
                t.ratio_limit.is_some_and(|limit| {
                    let have = t.meta.as_ref().map_or(0, |m| m.bytes_have());
                    let down = t.downloaded.max(have);
                    down > 0
                        && u128::from(t.uploaded) * 1000 >= u128::from(limit) * u128::from(down)
                })
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.pause_torrent(now, id);
            self.push_event(Event::RatioReached(id));
        }
    }

    /// Torrent `id` may have just become finished (every wanted piece verified): it
    /// is marked so and [`Event::TorrentFinished`] goes out, once per time it becomes
    /// finished.
    pub(super) fn note_finished(&mut self, id: TorrentId) {
        let Some(t) = self.torrents.get_mut(&id) else {
            return;
        };
        if !t.finished && t.is_finished() {
            t.finished = true;
            self.push_event(Event::TorrentFinished(id));
        }
    }

    /// What torrent `id` wants changed: each of its peers is told whether we are
    /// interested, and requests go out for what is wanted now.
    fn refresh_interest(&mut self, now: Instant, id: TorrentId) {
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.torrent == Some(id) && c.peer.is_established())
            .map(|(k, _)| *k)
            .collect();
        for k in conns {
            self.update_interest(k);
            self.fill_requests(now, k);
        }
        self.flush_sends();
    }
}

#[cfg(test)]
mod tests {
    use super::piece_priorities;

    #[test]
    fn a_shared_piece_takes_the_highest_priority() {
        // Pieces of 10 bytes; files [0,15) [15,15) [15,30) [30,35).
        let files = [(0, 15), (15, 0), (15, 15), (30, 5)];
        assert_eq!(piece_priorities(&files, &[1, 7, 0, 0], 10, 4), [1, 1, 0, 0]);
        assert_eq!(piece_priorities(&files, &[0, 0, 6, 2], 10, 4), [0, 6, 6, 2]);
        assert_eq!(piece_priorities(&files, &[3, 0, 5, 0], 10, 4), [3, 5, 5, 0]);
    }
}
