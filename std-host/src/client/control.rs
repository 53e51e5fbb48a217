//! Per-torrent controls: file priorities (the session decides what to fetch, the
//! storage stops creating skipped files), sequential order, rate limits of one
//! torrent, the ratio at which it stops seeding, moving its data to another folder,
//! renaming one of its files or its top folder, and saving a magnet link's metadata
//! as a `.torrent` file.
//!
//! Moving and renaming wait for the torrent's disk jobs in flight to finish (the
//! session's new work waits in its queue meanwhile), then rename on disk and swap the
//! torrent's [`Storage`] for one at the new place, built (and so validated: no path
//! outside the folder, no symbolic link in the way) before any file is touched. A
//! move across file systems copies each file; the loop waits for it. The new place
//! lasts for this run: resume data does not record it, so the application adds the
//! torrent with the new folder (and the new names) next time.

use super::net::Bucket;
use super::Client;
use crate::storage::{Storage, StorageConfig, StorageError};
use btcore_core::metainfo::{FileSpec, Limits, Metainfo};
use btcore_core::session::{ControlError as CoreError, TorrentId};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Longest a move or rename waits for the torrent's disk jobs in flight.
const DISK_WAIT: Duration = Duration::from_secs(30);

/// Longest name [`Client::rename_file`] takes, in bytes (most file systems' limit).
pub const MAX_NAME_LEN: usize = 255;

/// Why a per-torrent control was refused or failed.
#[derive(Debug)]
pub enum ControlError {
    /// No torrent with that id.
    UnknownTorrent,
    /// A magnet link whose metadata has not arrived: no files yet.
    NoMetadata,
    /// The session refused it (wrong number of priorities, a priority above 7).
    Session(CoreError),
    /// A new name that is empty, `.`, `..`, holds a separator or a NUL byte, is longer
    /// than [`MAX_NAME_LEN`], or would not stay as written on disk; or a file index out
    /// of range; or a top folder asked of a single-file torrent.
    InvalidName(String),
    /// Something already exists where the data would go.
    Exists(PathBuf),
    /// The torrent's data is being checked, or its disk jobs did not finish in time.
    Busy,
    /// A file operation failed (the path involved).
    Io(io::Error, PathBuf),
    /// The torrent's files cannot live at the new place.
    Storage(StorageError),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownTorrent => f.write_str("no such torrent"),
            Self::NoMetadata => f.write_str("the torrent's metadata has not arrived yet"),
            Self::Session(e) => write!(f, "{e}"),
            Self::InvalidName(why) => write!(f, "invalid name: {why}"),
            Self::Exists(p) => write!(f, "{} already exists", p.display()),
            Self::Busy => f.write_str("the torrent's data is busy (checking or writing)"),
            Self::Io(e, p) => write!(f, "{}: {e}", p.display()),
            Self::Storage(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ControlError {}

/// One file of a torrent, as [`Client::files`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileView {
    /// Its path under the torrent's folder, `/`-separated (empty for a pad file).
    pub path: String,
    /// Its length.
    pub size: u64,
    /// Its bytes verified (those lying in pieces we have).
    pub done: u64,
    /// Its priority (0: skipped).
    pub priority: u8,
    /// A BEP 47 pad file (never written).
    pub pad: bool,
}

/// A torrent's own rate limits, on top of the client's.
#[derive(Debug)]
pub(super) struct TorrentBuckets {
    pub(super) down: Bucket,
    pub(super) up: Bucket,
}

/// Checks a new name for a file or folder: one plain component.
fn valid_name(name: &str) -> Result<(), ControlError> {
    let bad = |why: &str| Err(ControlError::InvalidName(format!("{name:?}: {why}")));
    if name.is_empty() || name == "." || name == ".." {
        return bad("empty, '.' or '..'");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("too long");
    }
    if name.contains(['/', '\\', '\0']) {
        return bad("holds a separator or a NUL byte");
    }
    // The metainfo parser's rules for a path element: what it would change is refused
    // rather than changed.
    let mut buf = [0u8; 4 * MAX_NAME_LEN + 16];
    match btcore_core::metainfo::path::sanitize_element(name.as_bytes(), &mut buf) {
        Ok(s) if s == name => Ok(()),
        _ => bad("not a portable file name"),
    }
}

/// Moves `from` to `to` (whose parent exists): a rename, or a copy and a removal
/// across file systems.
fn move_file(from: &Path, to: &Path) -> Result<(), ControlError> {
    if fs::rename(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to).map_err(|e| ControlError::Io(e, to.to_path_buf()))?;
    fs::remove_file(from).map_err(|e| ControlError::Io(e, from.to_path_buf()))
}

/// Removes the directories from `dir` up to (not including) `stop` while empty.
fn remove_empty_dirs(mut dir: Option<&Path>, stop: &Path) {
    while let Some(d) = dir {
        if d == stop || !d.starts_with(stop) || fs::remove_dir(d).is_err() {
            return;
        }
        dir = d.parent();
    }
}

impl Client {
    fn storage_of(&self, id: TorrentId) -> Result<Arc<Storage>, ControlError> {
        let t = self.torrents.get(&id).ok_or(ControlError::UnknownTorrent)?;
        t.storage.clone().ok_or(ControlError::NoMetadata)
    }

    /// Sets the priority of each file of torrent `id`, in torrent order (one per file,
    /// pad files included): 0 skips the file, 1 to 7 rank it, 4 is the default
    /// (libtorrent's levels; Transmission's low/normal/high are 1/4/7). A skipped
    /// file's pieces are not downloaded and the file is not created unless a piece it
    /// shares with a wanted file needs it.
    pub fn set_file_priorities(&mut self, id: TorrentId, prio: &[u8]) -> Result<(), ControlError> {
        if !self.torrents.contains_key(&id) {
            return Err(ControlError::UnknownTorrent);
        }
        let now = self.now();
        self.session
            .set_file_priorities(now, id, prio)
            .map_err(|e| match e {
                CoreError::UnknownTorrent => ControlError::UnknownTorrent,
                CoreError::NoMetadata => ControlError::NoMetadata,
                e => ControlError::Session(e),
            })?;
        if let Ok(s) = self.storage_of(id) {
            for (i, p) in prio.iter().enumerate() {
                s.set_skipped(i as u32, *p == 0);
            }
            if let Err(e) = s.ensure_files() {
                log::warn!("{e}");
            }
        }
        self.pump();
        Ok(())
    }

    /// The files of torrent `id` with their progress and priority; `None` for an
    /// unknown torrent or a magnet link without metadata.
    pub fn files(&self, id: TorrentId) -> Option<Vec<FileView>> {
        let storage = self.torrents.get(&id)?.storage.clone()?;
        let done = self.session.file_progress(id)?;
        let prio = self.session.file_priorities(id)?;
        Some(
            storage
                .files()
                .zip(done)
                .zip(prio)
                .map(|((f, done), priority)| FileView {
                    path: f.path.clone(),
                    size: f.length,
                    done,
                    priority,
                    pad: f.attr.pad,
                })
                .collect(),
        )
    }

    /// Sequential (streaming) order on or off; false for an unknown torrent or a
    /// magnet link without metadata.
    pub fn set_sequential(&mut self, id: TorrentId, on: bool) -> bool {
        self.session.set_sequential(id, on)
    }

    /// Limits torrent `id` to `down` and `up` bytes/s (0: no limit of its own), on top
    /// of the client's limits. False for an unknown torrent.
    pub fn set_torrent_limits(&mut self, id: TorrentId, down: u64, up: u64) -> bool {
        if !self.torrents.contains_key(&id) {
            return false;
        }
        if down == 0 && up == 0 {
            self.torrent_buckets.remove(&id);
        } else {
            self.torrent_buckets.insert(
                id,
                TorrentBuckets {
                    down: Bucket::new(down),
                    up: Bucket::new(up),
                },
            );
        }
        true
    }

    /// Stops seeding torrent `id` (pauses it, with
    /// [`Event::RatioReached`](btcore_core::session::Event::RatioReached)) once it is
    /// finished and has uploaded `limit` thousandths of what it downloaded; `None`
    /// lifts the limit. False for an unknown torrent.
    pub fn set_ratio_limit(&mut self, id: TorrentId, limit: Option<u32>) -> bool {
        let now = self.now();
        let ok = self.session.set_ratio_limit(now, id, limit);
        self.pump();
        ok
    }

    /// Waits until no disk job of `storage` is in flight (handing completions to the
    /// session, whose new work waits in its queue), at most [`DISK_WAIT`].
    fn settle(&mut self, id: TorrentId, storage: &Arc<Storage>) -> Result<(), ControlError> {
        if self.torrents.get(&id).is_some_and(|t| t.check.is_some()) {
            return Err(ControlError::Busy);
        }
        let deadline = std::time::Instant::now() + DISK_WAIT;
        // Ours, and the torrent's.
        while Arc::strong_count(storage) > 2 {
            if std::time::Instant::now() > deadline {
                return Err(ControlError::Busy);
            }
            self.disk.flush();
            self.collect_disk();
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = storage.sync();
        storage.close_all();
        Ok(())
    }

    /// A storage like `old` with the files of `layout` under `dir`, the same files
    /// skipped.
    fn rebuilt(
        &self,
        old: &Storage,
        dir: &Path,
        layout: Vec<FileSpec>,
    ) -> Result<Storage, ControlError> {
        let s = Storage::new(
            dir,
            layout,
            *old.geometry(),
            StorageConfig {
                state_dir: self.opts.state_dir.clone(),
                parts_file: old.parts_file().map(Path::to_path_buf),
                ..StorageConfig::default()
            },
        )
        .map_err(ControlError::Storage)?;
        for i in 0..old.files().count() as u32 {
            s.set_skipped(i, old.is_skipped(i));
        }
        s.set_sha1_pieces(old.sha1_pieces());
        Ok(s)
    }

    /// Moves every file of `old` to where `new` has it (none may exist there yet):
    /// on a failure the files moved so far go back.
    fn relocate(old: &Storage, new: &Storage) -> Result<(), ControlError> {
        let n = old.files().count() as u32;
        let pairs: Vec<(PathBuf, PathBuf)> = (0..n)
            .filter_map(|i| Some((old.file_path(i)?, new.file_path(i)?)))
            .filter(|(from, to)| from != to && from.exists())
            .map(|(from, to)| (from.to_path_buf(), to.to_path_buf()))
            .collect();
        if let Some((_, to)) = pairs.iter().find(|(_, to)| to.symlink_metadata().is_ok()) {
            return Err(ControlError::Exists(to.clone()));
        }
        for (k, (from, to)) in pairs.iter().enumerate() {
            let moved = match to.parent() {
                Some(p) => fs::create_dir_all(p).map_err(|e| ControlError::Io(e, p.into())),
                None => Ok(()),
            }
            .and_then(|()| move_file(from, to));
            if let Err(e) = moved {
                for (from, to) in pairs[..k].iter().rev() {
                    let _ = move_file(to, from);
                }
                return Err(e);
            }
        }
        for (from, _) in &pairs {
            remove_empty_dirs(from.parent(), old.root());
        }
        Ok(())
    }

    /// Puts `new` in place of torrent `id`'s storage, saved under `dir`.
    fn swap_storage(&mut self, id: TorrentId, new: Storage, dir: PathBuf) {
        if let Some(t) = self.torrents.get_mut(&id) {
            t.storage = Some(Arc::new(new));
            t.save_dir = dir;
            t.resume.mark_dirty(std::time::Instant::now());
        }
        self.pump();
    }

    /// Moves torrent `id`'s data to the folder `dir` (created if needed): each file
    /// goes to the same relative path under it; nothing is written outside it, and
    /// nothing there is replaced (a file in the way refuses the move, before any file
    /// moved). The torrent keeps running; its disk jobs in flight finish first. A
    /// move across file systems copies the data, and the loop waits for it.
    pub fn move_storage(&mut self, id: TorrentId, dir: &Path) -> Result<(), ControlError> {
        let old = self.storage_of(id)?;
        fs::create_dir_all(dir).map_err(|e| ControlError::Io(e, dir.to_path_buf()))?;
        let layout: Vec<FileSpec> = old.files().cloned().collect();
        let new = self.rebuilt(&old, dir, layout)?;
        self.settle(id, &old)?;
        Self::relocate(&old, &new)?;
        self.swap_storage(id, new, dir.to_path_buf());
        Ok(())
    }

    /// Renames file `index` of torrent `id` to `name` (the last component of its
    /// path; one plain name: no separator, not `.` or `..`, nothing the metainfo
    /// parser would change). The file moves on disk if it exists.
    pub fn rename_file(
        &mut self,
        id: TorrentId,
        index: u32,
        name: &str,
    ) -> Result<(), ControlError> {
        valid_name(name)?;
        let old = self.storage_of(id)?;
        let mut layout: Vec<FileSpec> = old.files().cloned().collect();
        let f = layout
            .get_mut(index as usize)
            .filter(|f| !f.attr.pad)
            .ok_or_else(|| ControlError::InvalidName(format!("no file {index}")))?;
        f.path = match f.path.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/{name}"),
            None => name.to_owned(),
        };
        let dir = old.root().to_path_buf();
        let new = self.rebuilt(&old, &dir, layout)?;
        self.settle(id, &old)?;
        Self::relocate(&old, &new)?;
        self.swap_storage(id, new, dir);
        Ok(())
    }

    /// Renames the top folder of multi-file torrent `id` to `name` (validated as in
    /// [`Client::rename_file`]); every file moves with it.
    pub fn rename_folder(&mut self, id: TorrentId, name: &str) -> Result<(), ControlError> {
        valid_name(name)?;
        let old = self.storage_of(id)?;
        let mut layout: Vec<FileSpec> = old.files().cloned().collect();
        for f in layout.iter_mut().filter(|f| !f.path.is_empty()) {
            let Some((_, rest)) = f.path.split_once('/') else {
                return Err(ControlError::InvalidName(
                    "a single-file torrent has no folder".into(),
                ));
            };
            f.path = format!("{name}/{rest}");
        }
        let dir = old.root().to_path_buf();
        let new = self.rebuilt(&old, &dir, layout)?;
        self.settle(id, &old)?;
        Self::relocate(&old, &new)?;
        self.swap_storage(id, new, dir);
        Ok(())
    }

    /// Checks torrent `id`'s data on disk again (Transmission's "verify"): its disk
    /// jobs in flight finish first, then every piece is hashed off the loop while the
    /// torrent waits in [`TorrentState::Checking`](btcore_core::session::TorrentState::Checking)
    /// with no peer; what verifies is kept, what does not is downloaded again. A
    /// paused torrent stays paused. Refused while a check runs, and for a magnet link
    /// whose metadata has not arrived.
    pub fn recheck(&mut self, id: TorrentId) -> Result<(), ControlError> {
        let storage = self.storage_of(id)?;
        self.settle(id, &storage)?;
        let now = self.now();
        self.session.recheck(now, id).map_err(|e| match e {
            CoreError::UnknownTorrent => ControlError::UnknownTorrent,
            CoreError::NoMetadata => ControlError::NoMetadata,
            CoreError::Checking => ControlError::Busy,
            e => ControlError::Session(e),
        })?;
        let file = self
            .session
            .metainfo_bytes(id)
            .ok_or(ControlError::NoMetadata)?;
        let mut tokens = Vec::new();
        let m = Metainfo::parse_vec(&file, &mut tokens, &Limits::default())
            .map_err(|_| ControlError::NoMetadata)?;
        let progress = self.submit_check(id, &m, &storage);
        if let Some(t) = self.torrents.get_mut(&id) {
            t.check = Some(progress);
        }
        self.pump();
        Ok(())
    }

    /// Points torrent `id` at data already in the folder `dir` (Transmission's
    /// set-location without moving): nothing is moved; the torrent's files are looked
    /// for under `dir` from now on, and every piece is checked there
    /// ([`Client::recheck`]).
    pub fn set_location(&mut self, id: TorrentId, dir: &Path) -> Result<(), ControlError> {
        let old = self.storage_of(id)?;
        let layout: Vec<FileSpec> = old.files().cloned().collect();
        let new = self.rebuilt(&old, dir, layout)?;
        self.settle(id, &old)?;
        self.swap_storage(id, new, dir.to_path_buf());
        self.recheck(id)
    }

    /// Writes torrent `id` as a `.torrent` file at `path` (atomically: a reader sees
    /// the old file or the whole new one): its info dictionary as received, and its
    /// trackers (`announce` and BEP 12 `announce-list`). What saves a magnet link's
    /// metadata; works for any torrent once its metadata is known.
    pub fn save_torrent_file(&self, id: TorrentId, path: &Path) -> Result<(), ControlError> {
        if !self.torrents.contains_key(&id) {
            return Err(ControlError::UnknownTorrent);
        }
        let metainfo = self
            .session
            .metainfo_bytes(id)
            .ok_or(ControlError::NoMetadata)?;
        let tiers = self.session.trackers(id).unwrap_or_default();
        let file = torrent_file(&metainfo, &tiers);
        crate::os::write_atomic(path, &file).map_err(|e| ControlError::Io(e, path.to_path_buf()))
    }
}

/// A `.torrent` file from a metainfo without trackers (`d4:info...e`, and a v2
/// torrent's `piece layers`: [`btcore_core::session::Session::metainfo_bytes`]; the
/// info dictionary's bytes kept as they are, so the info-hash stays the same), with
/// `announce` (the first tracker) and `announce-list` when there is more than one;
/// keys in sorted order.
pub fn torrent_file(metainfo: &[u8], tiers: &[Vec<String>]) -> Vec<u8> {
    fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(b.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(b);
    }
    let mut out = Vec::with_capacity(metainfo.len() + 64);
    out.push(b'd');
    let first = tiers.iter().flatten().next();
    if let Some(url) = first {
        bytes(&mut out, b"announce");
        bytes(&mut out, url.as_bytes());
    }
    if tiers.iter().flatten().nth(1).is_some() {
        bytes(&mut out, b"announce-list");
        out.push(b'l');
        for tier in tiers.iter().filter(|t| !t.is_empty()) {
            out.push(b'l');
            for url in tier {
                bytes(&mut out, url.as_bytes());
            }
            out.push(b'e');
        }
        out.push(b'e');
    }
    // `announce` and `announce-list` sort before `info`.
    out.extend_from_slice(metainfo.get(1..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_plain_component() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "/abs",
            "a\0b",
            &"x".repeat(256),
        ] {
            assert!(valid_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "new name.mkv", "été"] {
            assert!(valid_name(good).is_ok(), "{good:?}");
        }
    }
}
