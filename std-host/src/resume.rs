//! Resume data: one small bencoded file per torrent in a state directory, named
//! `<info-hash hex>.resume`, so a restart needs no full recheck (and, for a magnet
//! link, no metadata fetch).
//!
//! The file is a dictionary with sorted keys:
//!
//! | key             | value                                                     |
//! |-----------------|-----------------------------------------------------------|
//! | `btcore-resume` | format version, `1`                                       |
//! | `downloaded`    | payload bytes downloaded (integer)                        |
//! | `file-stamps`   | optional: per file, length and mtime when the data was    |
//! |                 | synced, 16 bytes each (big-endian u64 length, i64 ns;     |
//! |                 | length `u64::MAX` for a file that was absent)              |
//! | `info`          | optional: the raw bencoded info dictionary, as a string   |
//! | `info-hash`     | the 20-byte v1 info-hash                                  |
//! | `num-pieces`    | number of pieces the bitfield covers (0 before metadata)  |
//! | `pieces`        | the have-bitfield in wire layout                          |
//! | `save-path`     | the save directory, as bytes                              |
//! | `unsynced-boot-id` | optional: the system's boot id when the data was saved |
//! |                 | without a sync (see below)                                |
//! | `unsynced-file-stamps` | with `unsynced-boot-id`, instead of `file-stamps`   |
//! | `uploaded`      | payload bytes uploaded (integer)                          |
//!
//! [`ResumeData::decode`] is strict: a wrong version, a bitfield of the wrong length
//! (or with spare bits set), an info-hash that is not 20 bytes, an `info` whose SHA-1
//! is not the info-hash, negative counters or trailing bytes are errors. Unknown keys
//! are ignored. No input makes it panic.
//!
//! [`save_atomic`] writes `<name>.tmp`, `fsync`s it, renames it over the old file and
//! `fsync`s the directory, so a crash at any moment leaves the old file or the new one,
//! never a torn one. [`ResumeWriter`] decides when to save: on change, coalesced to at
//! most one save per [`ResumeWriter::min_gap`] — never on a timer while nothing changed.
//! A save claims only pieces already written (the disk worker runs it after their
//! writes); without [`Storage::sync`](crate::storage::Storage::sync) first it says so
//! (below).
//!
//! Durability without the writeback bill: a data sync makes the process that asks for
//! it do the writeback of everything it wrote, so syncing every save charged a whole
//! download's writeback to the client. Where the system has a boot id (Linux:
//! `/proc/sys/kernel/random/boot_id`), most saves skip the sync and record the boot
//! id as `unsynced-boot-id` instead (and their stamps as `unsynced-file-stamps`, which
//! a build that knows nothing of this does not read: it checks the data rather than
//! trust it): the data they claim is in the kernel's page cache,
//! which outlives the process (a `kill -9` or a crash of the client loses nothing) but
//! not the system. Such a claim is trusted only while the boot id is the same; after a
//! restart of the system it is checked like a changed file. The data is synced (and
//! the claim saved without the boot id) at quiet points: the save after a torrent
//! completes or is paused, at shutdown, and at least every [`ResumeWriter::sync_gap`]
//! while it downloads; a sync that fails makes every later save sync until one works. So a power cut costs at most a recheck of the torrents that
//! downloaded within that gap, never a wrong claim.
//!
//! On start, pieces the file claims are trusted without hashing ([`trusted`]) when every
//! file's length and modification time are still those recorded in `file-stamps` (as
//! libtorrent and Transmission trust theirs), and every claimed piece's files exist and
//! are long enough to hold it: a restart of a large seed reads nothing, and a resume
//! file planted or left over for data that is not there claims nothing (without the
//! second rule, a resume file recording every file as absent made a torrent with no
//! file on disk start complete and "seed"). When any file changed (a crash after later
//! writes, a file touched by hand), there are no stamps, or a claim cannot hold, what
//! is on disk is checked before anything counts.

use crate::hash::FastSha1;
pub use crate::storage::FileStamp;
use crate::storage::Storage;
use btcore_core::bencode::{self, Encoder, Limits};
use btcore_core::bitfield::Bitfield;
use btcore_core::hash::Sha1;
use btcore_core::ids::InfoHash;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes per file in `file-stamps`.
const STAMP_LEN: usize = 16;

/// The format version written and the only one read.
pub const RESUME_VERSION: i64 = 1;

/// The largest resume file [`load`] reads (the info dictionary dominates it).
pub const MAX_RESUME_FILE: u64 = crate::MAX_TORRENT_FILE + (1 << 20);

/// What a torrent needs to resume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeData {
    /// The torrent.
    pub info_hash: InfoHash,
    /// Pieces verified on disk; its length is the number of pieces (0 for a magnet
    /// link whose metadata has not arrived).
    pub pieces: Bitfield,
    /// The save directory, as bytes (see [`ResumeData::save_dir`]).
    pub save_path: Vec<u8>,
    /// Payload bytes uploaded, all sessions together.
    pub uploaded: u64,
    /// Payload bytes downloaded, all sessions together.
    pub downloaded: u64,
    /// The raw bencoded info dictionary, when kept (for magnet links).
    pub info: Option<Vec<u8>>,
    /// Each file's length and mtime when the data was synced, in file order (`None`
    /// in the list: the file was absent), when recorded.
    pub file_stamps: Option<Vec<Option<FileStamp>>>,
    /// The system's boot id when the data was saved without a sync: the claim holds
    /// only within that boot (`None`: synced).
    pub unsynced_boot_id: Option<Vec<u8>>,
}

/// The longest `unsynced-boot-id` read.
const MAX_BOOT_ID: usize = 64;

/// Why resume data could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResumeError {
    /// Not valid bencode (or trailing bytes after it).
    Bencode(bencode::DecodeError),
    /// The root is not a dictionary.
    NotADict,
    /// A required key is absent or of the wrong type.
    Missing(&'static str),
    /// A version other than [`RESUME_VERSION`].
    Version(i64),
    /// A value out of range: the key named.
    Invalid(&'static str),
    /// The bitfield's length does not match `num-pieces` or has spare bits set.
    Bitfield,
    /// The `info` dictionary's SHA-1 is not the info-hash.
    InfoHashMismatch,
}

impl fmt::Display for ResumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bencode(e) => write!(f, "resume data: {e}"),
            Self::NotADict => f.write_str("resume data: not a dictionary"),
            Self::Missing(k) => write!(f, "resume data: {k:?} missing or of the wrong type"),
            Self::Version(v) => write!(f, "resume data: unsupported version {v}"),
            Self::Invalid(k) => write!(f, "resume data: {k:?} out of range"),
            Self::Bitfield => f.write_str("resume data: bitfield does not match num-pieces"),
            Self::InfoHashMismatch => f.write_str("resume data: info does not hash to info-hash"),
        }
    }
}

impl std::error::Error for ResumeError {}

/// A path as bytes: exact on Unix, UTF-8 (lossy) elsewhere.
pub fn path_bytes(p: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        p.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        p.to_string_lossy().into_owned().into_bytes()
    }
}

fn bytes_path(b: &[u8]) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(b))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(b).into_owned())
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl ResumeData {
    /// Resume data of a torrent (`have` is cloned).
    pub fn new(
        info_hash: InfoHash,
        have: &Bitfield,
        save_path: &[u8],
        uploaded: u64,
        downloaded: u64,
        info: Option<Vec<u8>>,
    ) -> Self {
        Self {
            info_hash,
            pieces: have.clone(),
            save_path: save_path.to_vec(),
            uploaded,
            downloaded,
            info,
            file_stamps: None,
            unsynced_boot_id: None,
        }
    }

    /// The pieces verified on disk.
    pub fn have(&self) -> &Bitfield {
        &self.pieces
    }

    /// Number of pieces the bitfield covers.
    pub fn num_pieces(&self) -> u32 {
        self.pieces.len()
    }

    /// The save directory as a path (exact on Unix).
    pub fn save_dir(&self) -> PathBuf {
        bytes_path(&self.save_path)
    }

    /// The file name: `<info-hash hex>.resume`.
    pub fn file_name(info_hash: &InfoHash) -> String {
        format!("{info_hash}.resume")
    }

    /// Canonical bencode (sorted keys). Counters above `i64::MAX` are clamped.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            160 + self.pieces.as_bytes().len() + self.info.as_ref().map_or(0, Vec::len),
        );
        let mut e = Encoder::new(&mut out);
        // Writing into a Vec cannot fail.
        let res: Result<(), core::convert::Infallible> = (|| {
            e.dict()?;
            e.key_int(b"btcore-resume", RESUME_VERSION)?;
            e.key_int(b"downloaded", clamp(self.downloaded))?;
            let packed = self.file_stamps.as_ref().map(|stamps| {
                let mut packed = Vec::with_capacity(stamps.len() * STAMP_LEN);
                for s in stamps {
                    let (len, t) = s.map_or((u64::MAX, 0), |s| (s.len, s.mtime_ns));
                    packed.extend_from_slice(&len.to_be_bytes());
                    packed.extend_from_slice(&t.to_be_bytes());
                }
                packed
            });
            let unsynced = self.unsynced_boot_id.is_some();
            if let (Some(p), false) = (&packed, unsynced) {
                e.key_bytes(b"file-stamps", p)?;
            }
            if let Some(info) = &self.info {
                e.key_bytes(b"info", info)?;
            }
            e.key_bytes(b"info-hash", self.info_hash.as_bytes())?;
            e.key_int(b"num-pieces", i64::from(self.pieces.len()))?;
            e.key_bytes(b"pieces", self.pieces.as_bytes())?;
            e.key_bytes(b"save-path", &self.save_path)?;
            if let Some(b) = &self.unsynced_boot_id {
                e.key_bytes(b"unsynced-boot-id", b)?;
                if let Some(p) = &packed {
                    e.key_bytes(b"unsynced-file-stamps", p)?;
                }
            }
            e.key_int(b"uploaded", clamp(self.uploaded))?;
            e.end()
        })();
        match res {
            Ok(()) => {}
            Err(never) => match never {},
        }
        out
    }

    /// Decodes and checks resume data. See the [module docs](self) for what is refused.
    pub fn decode(buf: &[u8]) -> Result<ResumeData, ResumeError> {
        let limits = Limits {
            max_depth: 4,
            max_tokens: 4096,
            max_string_len: MAX_RESUME_FILE as usize,
            allow_trailing: false,
            ..Limits::default()
        };
        let mut tokens = Vec::new();
        let doc = bencode::decode_vec(buf, &mut tokens, &limits).map_err(ResumeError::Bencode)?;
        let d = doc.root().as_dict().ok_or(ResumeError::NotADict)?;

        let int = |k: &'static str| d.get_int(k.as_bytes()).ok_or(ResumeError::Missing(k));
        let bytes = |k: &'static str| d.get_bytes(k.as_bytes()).ok_or(ResumeError::Missing(k));
        let counter = |k: &'static str| {
            int(k).and_then(|n| u64::try_from(n).map_err(|_| ResumeError::Invalid(k)))
        };

        let version = int("btcore-resume")?;
        if version != RESUME_VERSION {
            return Err(ResumeError::Version(version));
        }
        let info_hash = <[u8; 20]>::try_from(bytes("info-hash")?)
            .map(InfoHash)
            .map_err(|_| ResumeError::Invalid("info-hash"))?;
        let num_pieces =
            u32::try_from(int("num-pieces")?).map_err(|_| ResumeError::Invalid("num-pieces"))?;
        let pieces =
            Bitfield::from_wire(bytes("pieces")?, num_pieces).ok_or(ResumeError::Bitfield)?;
        let save_path = bytes("save-path")?.to_vec();
        let uploaded = counter("uploaded")?;
        let downloaded = counter("downloaded")?;
        let info = match d.get(b"info") {
            None => None,
            Some(v) => {
                let raw = v.as_bytes().ok_or(ResumeError::Missing("info"))?;
                // v1: its SHA-1; v2 (BEP 52): its SHA-256, truncated.
                if FastSha1::digest(raw) != info_hash.0
                    && btcore_core::hash::sha256(raw)[..20] != info_hash.0
                {
                    return Err(ResumeError::InfoHashMismatch);
                }
                Some(raw.to_vec())
            }
        };
        let unsynced = d.get(b"unsynced-boot-id").is_some();
        let stamps_key: &[u8] = if unsynced {
            b"unsynced-file-stamps"
        } else {
            b"file-stamps"
        };
        let file_stamps = match d.get(stamps_key) {
            None => None,
            Some(v) => {
                let raw = v
                    .as_bytes()
                    .filter(|r| r.len() % STAMP_LEN == 0)
                    .ok_or(ResumeError::Invalid("file-stamps"))?;
                Some(
                    raw.chunks_exact(STAMP_LEN)
                        .map(|c| {
                            let (l, t) = c.split_at(8);
                            let len = u64::from_be_bytes(l.try_into().unwrap_or([0; 8]));
                            let mtime_ns = i64::from_be_bytes(t.try_into().unwrap_or([0; 8]));
                            (len != u64::MAX).then_some(FileStamp { len, mtime_ns })
                        })
                        .collect(),
                )
            }
        };
        let unsynced_boot_id = match d.get(b"unsynced-boot-id") {
            None => None,
            Some(v) => Some(
                v.as_bytes()
                    .filter(|b| !b.is_empty() && b.len() <= MAX_BOOT_ID)
                    .ok_or(ResumeError::Invalid("unsynced-boot-id"))?
                    .to_vec(),
            ),
        };
        Ok(ResumeData {
            info_hash,
            pieces,
            save_path,
            uploaded,
            downloaded,
            info,
            file_stamps,
            unsynced_boot_id,
        })
    }
}

/// Whether `key` (a name's [`push_name_key`] key) names a file the state directory
/// holds: `<info-hash hex>.resume` and its temporary `<...>.resume.tmp` (see
/// [`save_atomic`]), and the DHT's `dht.state` and its `dht.state.tmp`. When the state directory
/// is a save directory, no torrent may take these names (see
/// [`Storage`](crate::storage#the-state-directory)).
///
/// [`push_name_key`]: btcore_core::metainfo::path::push_name_key
pub fn is_state_file_key(key: &[u8]) -> bool {
    let resume = |rest: &[u8]| rest == b".resume" || rest == b".resume.tmp";
    key == b"dht.state"
        || key == b"dht.state.tmp"
        || (key.len() > 40
            && key[..40]
                .iter()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && resume(&key[40..]))
}

/// Writes `data` to `dir/<info-hash hex>.resume` with [`crate::os::write_atomic`] (a
/// temporary file in the same directory, `fsync`, `rename` over the old file, `fsync`
/// of the directory). Creates `dir` if needed. One writer per torrent at a time (the temporary name is
/// fixed).
pub fn save_atomic(dir: &Path, data: &ResumeData) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    crate::os::write_atomic(
        &dir.join(ResumeData::file_name(&data.info_hash)),
        &data.encode(),
    )
}

/// Reads `dir/<info-hash hex>.resume`: `Ok(None)` when there is none; an
/// [`io::ErrorKind::InvalidData`] error when it is corrupt, too large or belongs to
/// another torrent.
pub fn load(dir: &Path, info_hash: &InfoHash) -> io::Result<Option<ResumeData>> {
    let path = dir.join(ResumeData::file_name(info_hash));
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = Vec::new();
    f.take(MAX_RESUME_FILE + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_RESUME_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: larger than {MAX_RESUME_FILE} bytes", path.display()),
        ));
    }
    let data = ResumeData::decode(&buf).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })?;
    if data.info_hash != *info_hash {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: holds info-hash {}", path.display(), data.info_hash),
        ));
    }
    Ok(Some(data))
}

/// Whether the pieces `data` claims can be taken as they are for the torrent stored in
/// `storage` (see the [module docs](self)): saved after a sync or within this boot,
/// its files' stamps are those recorded, and every claimed piece's files exist and
/// are long enough to hold it.
pub fn trusted(data: &ResumeData, storage: &Storage) -> bool {
    trusted_in_boot(data, storage, crate::os::boot_id())
}

fn trusted_in_boot(data: &ResumeData, storage: &Storage, boot: Option<&[u8]>) -> bool {
    if data.num_pieces() != storage.geometry().num_pieces() {
        return false;
    }
    if let Some(saved) = &data.unsynced_boot_id {
        if boot != Some(saved.as_slice()) {
            log::info!(
                "resume data for {} was saved before its data reached the disk, and the \
                 system restarted since: checking",
                data.info_hash
            );
            return false;
        }
    }
    if data.file_stamps.as_ref() != Some(&storage.stamps()) {
        log::debug!("resume data not trusted: a file changed since it was saved");
        return false;
    }
    if !storage.can_hold(&data.pieces) {
        log::warn!(
            "resume data for {} claims pieces whose files are absent or too short: checking",
            data.info_hash
        );
        return false;
    }
    true
}

/// When to save resume data: on change, at most once per `min_gap`.
///
/// Call [`mark_dirty`](Self::mark_dirty) on every change worth saving (a piece
/// verified, a file priority changed, metadata received), poll
/// [`should_flush`](Self::should_flush) from the event loop (or sleep until
/// [`next_flush_at`](Self::next_flush_at)), and call [`flushed`](Self::flushed) right
/// after taking the snapshot that was saved. The first change after a quiet period is
/// saved at once; a burst of changes then costs one more save `min_gap` later.
#[derive(Clone, Debug)]
pub struct ResumeWriter {
    min_gap: Duration,
    sync_gap: Duration,
    dirty: bool,
    last_flush: Option<Instant>,
    /// The last save that synced the data (None: none yet).
    last_sync: Option<Instant>,
    /// Set by a save whose sync failed, cleared by one whose sync worked.
    sync_failed: Arc<AtomicBool>,
}

/// The default [`ResumeWriter::sync_gap`]: the most downloading a power cut can send
/// back to a recheck.
pub const SYNC_GAP: Duration = Duration::from_secs(60);

impl Default for ResumeWriter {
    fn default() -> Self {
        Self::new(Duration::from_secs(2))
    }
}

impl ResumeWriter {
    /// A writer allowing one save per `min_gap`, clean, never saved.
    pub fn new(min_gap: Duration) -> Self {
        Self {
            min_gap,
            sync_gap: SYNC_GAP,
            dirty: false,
            last_flush: None,
            last_sync: None,
            sync_failed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The shortest time between two saves.
    pub fn min_gap(&self) -> Duration {
        self.min_gap
    }

    /// The longest time between two syncs of the data while changes are saved.
    pub fn sync_gap(&self) -> Duration {
        self.sync_gap
    }

    /// Whether the save about to be made at `now` should sync the data first: the
    /// first save, or [`ResumeWriter::sync_gap`] after the last synced one (quiet
    /// points, completion and shutdown, sync whatever this says).
    pub fn sync_due(&self, now: Instant) -> bool {
        self.sync_failed.load(Ordering::Relaxed)
            || self
                .last_sync
                .is_none_or(|t| now.saturating_duration_since(t) >= self.sync_gap)
    }

    /// The flag a save's sync reports to: true when it failed (every later save then
    /// syncs until one works).
    pub fn sync_outcome(&self) -> Arc<AtomicBool> {
        self.sync_failed.clone()
    }

    /// Records that the save made at `now` synced the data.
    pub fn synced(&mut self, now: Instant) {
        self.last_sync = Some(now);
    }

    /// Whether a change awaits saving.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Records a change.
    pub fn mark_dirty(&mut self, _now: Instant) {
        self.dirty = true;
    }

    /// When the pending change may be saved: `None` when nothing changed, `now` or
    /// earlier when it may be saved at once.
    pub fn next_flush_at(&self, now: Instant) -> Option<Instant> {
        self.dirty.then(|| {
            self.last_flush
                .and_then(|t| t.checked_add(self.min_gap))
                .unwrap_or(now)
        })
    }

    /// Whether to save now: something changed and `min_gap` has passed since the last
    /// save.
    pub fn should_flush(&self, now: Instant) -> bool {
        self.dirty
            && self
                .last_flush
                .is_none_or(|t| now.saturating_duration_since(t) >= self.min_gap)
    }

    /// Records a save made at `now` of everything marked so far.
    pub fn flushed(&mut self, now: Instant) {
        self.dirty = false;
        self.last_flush = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u32, info: bool) -> ResumeData {
        let info_bytes =
            b"d6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        let info_hash = if info {
            InfoHash(FastSha1::digest(info_bytes))
        } else {
            InfoHash([7; 20])
        };
        let mut pieces = Bitfield::new(n);
        for i in (0..n).filter(|i| i % 3 == 0) {
            pieces.set(i);
        }
        ResumeData {
            info_hash,
            pieces,
            save_path: path_bytes(Path::new("/srv/down loads/ü")),
            uploaded: 1 << 40,
            downloaded: 12345,
            info: info.then(|| info_bytes.to_vec()),
            // With the info (a magnet's resume data) also stamps: a present file, an
            // absent one, a time before 1970.
            file_stamps: info.then(|| {
                vec![
                    Some(FileStamp {
                        len: 5,
                        mtime_ns: 1_764_600_000_123_456_789,
                    }),
                    None,
                    Some(FileStamp {
                        len: 0,
                        mtime_ns: -1,
                    }),
                ]
            }),
            unsynced_boot_id: None,
        }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("btcore-resume-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_trip() {
        for (n, info) in [(0, false), (1, true), (8, false), (13, true), (1000, false)] {
            let r = sample(n, info);
            let enc = r.encode();
            assert_eq!(ResumeData::decode(&enc), Ok(r.clone()));
            // Canonical: re-encoding gives the same bytes.
            assert_eq!(ResumeData::decode(&enc).map(|d| d.encode()), Ok(enc));
        }
        let enc = sample(3, false).encode();
        assert!(enc.starts_with(b"d13:btcore-resumei1e10:downloadedi12345e9:info-hash20:"));
        let enc = sample(3, true).encode();
        assert!(enc.starts_with(b"d13:btcore-resumei1e10:downloadedi12345e11:file-stamps48:"));
        // Stamps of the wrong length are refused.
        let mut r = sample(3, true).encode();
        let at = r
            .windows(15)
            .position(|w| w == b"11:file-stamps4")
            .expect("key");
        r[at + 14..at + 16].copy_from_slice(b"47");
        r.remove(at + 17);
        assert_eq!(
            ResumeData::decode(&r),
            Err(ResumeError::Invalid("file-stamps"))
        );
    }

    #[test]
    fn refuses_bad_input() {
        let good = sample(13, true).encode();
        assert!(ResumeData::decode(b"").is_err());
        assert!(ResumeData::decode(b"garbage").is_err());
        assert_eq!(ResumeData::decode(b"le"), Err(ResumeError::NotADict));
        for cut in 0..good.len() {
            assert!(ResumeData::decode(&good[..cut]).is_err(), "prefix {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(b'x');
        assert!(ResumeData::decode(&trailing).is_err());

        let swap = |from: &[u8], to: &[u8]| -> Vec<u8> {
            let s = sample(13, false).encode();
            let at = s
                .windows(from.len())
                .position(|w| w == from)
                .expect("pattern present");
            [&s[..at], to, &s[at + from.len()..]].concat()
        };
        assert_eq!(
            ResumeData::decode(&swap(b"btcore-resumei1e", b"btcore-resumei2e")),
            Err(ResumeError::Version(2))
        );
        assert_eq!(
            ResumeData::decode(&swap(b"num-piecesi13e", b"num-piecesi17e")),
            Err(ResumeError::Bitfield)
        );
        assert_eq!(
            ResumeData::decode(&swap(b"num-piecesi13e", b"num-piecesi-1e")),
            Err(ResumeError::Invalid("num-pieces"))
        );
        assert_eq!(
            ResumeData::decode(&swap(b"num-piecesi13e", b"num-piecesi12e")),
            Err(ResumeError::Bitfield),
            "spare bit set"
        );
        assert_eq!(
            ResumeData::decode(&swap(b"downloadedi12345e", b"downloadedi-5e")),
            Err(ResumeError::Invalid("downloaded"))
        );
        let mut short = Vec::new();
        let mut e = Encoder::new(&mut short);
        let _ = (|| {
            e.dict()?;
            e.key_int(b"btcore-resume", 1)?;
            e.key_int(b"downloaded", 0)?;
            e.key_bytes(b"info-hash", &[1; 19])?;
            e.key_int(b"num-pieces", 0)?;
            e.key_bytes(b"pieces", b"")?;
            e.key_bytes(b"save-path", b"/x")?;
            e.key_int(b"uploaded", 0)?;
            e.end()
        })();
        assert_eq!(
            ResumeData::decode(&short),
            Err(ResumeError::Invalid("info-hash"))
        );
        assert_eq!(
            ResumeData::decode(&swap(b"8:uploaded", b"8:uploadex")),
            Err(ResumeError::Missing("uploaded"))
        );
        // An info dictionary that does not hash to the info-hash.
        let mut r = sample(13, true);
        r.info = Some(b"de".to_vec());
        assert_eq!(
            ResumeData::decode(&r.encode()),
            Err(ResumeError::InfoHashMismatch)
        );
    }

    #[test]
    fn never_panics_on_mutations() {
        // A small deterministic fuzz: flip, insert and delete bytes of valid data.
        let seeds = [sample(13, true).encode(), sample(9, false).encode()];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut v = seeds[(next() % 2) as usize].clone();
            for _ in 0..=(next() % 4) {
                let i = (next() % v.len() as u64) as usize;
                match next() % 3 {
                    0 => v[i] = next() as u8,
                    1 => v.insert(i, b"0123456789ie:dl-"[(next() % 16) as usize]),
                    _ => {
                        v.remove(i);
                    }
                }
                if v.is_empty() {
                    break;
                }
            }
            if let Ok(d) = ResumeData::decode(&v) {
                // Whatever decodes re-encodes to something that decodes the same.
                assert_eq!(ResumeData::decode(&d.encode()), Ok(d));
            }
        }
    }

    #[test]
    fn save_replaces_atomically() {
        let dir = tmpdir("save");
        let mut r = sample(13, true);
        assert!(load(&dir, &r.info_hash).expect("load").is_none());
        save_atomic(&dir, &r).expect("save");
        assert_eq!(load(&dir, &r.info_hash).expect("load"), Some(r.clone()));
        r.pieces.set(1);
        r.uploaded += 1;
        save_atomic(&dir, &r).expect("save again");
        assert_eq!(load(&dir, &r.info_hash).expect("load"), Some(r.clone()));
        let names: Vec<String> = fs::read_dir(&dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![ResumeData::file_name(&r.info_hash)]);

        // Corrupt or foreign files are errors, not panics or silent defaults.
        let path = dir.join(ResumeData::file_name(&r.info_hash));
        fs::write(&path, b"d13:btcore-resumei1ee").expect("write");
        let e = load(&dir, &r.info_hash).expect_err("corrupt");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let other = sample(5, false);
        fs::write(&path, other.encode()).expect("write");
        let e = load(&dir, &r.info_hash).expect_err("foreign");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn writer_coalesces() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = ResumeWriter::default();
        assert!(!w.should_flush(at(0)), "nothing changed");
        assert_eq!(w.next_flush_at(at(0)), None);
        assert!(!w.should_flush(at(60_000)), "no timer while clean");

        // First change after a quiet period: saved at once.
        w.mark_dirty(at(100));
        assert!(w.should_flush(at(100)));
        w.flushed(at(100));

        // A burst within 2 s: one save, 2 s after the previous one.
        let mut saves = 0;
        for ms in (200..2_000).step_by(150) {
            w.mark_dirty(at(ms));
            if w.should_flush(at(ms)) {
                saves += 1;
                w.flushed(at(ms));
            }
        }
        assert_eq!(saves, 0);
        assert_eq!(w.next_flush_at(at(2_000)), Some(at(2_100)));
        assert!(!w.should_flush(at(2_099)));
        assert!(w.should_flush(at(2_100)));
        w.flushed(at(2_100));
        assert!(!w.should_flush(at(10_000)), "clean again");
    }

    #[test]
    fn writer_syncs_first_then_once_per_sync_gap() {
        let t0 = Instant::now();
        let mut w = ResumeWriter::default();
        assert!(w.sync_due(t0), "the first save syncs");
        w.synced(t0);
        let gap = w.sync_gap();
        assert!(!w.sync_due(t0 + Duration::from_secs(2)));
        assert!(!w.sync_due(t0 + gap - Duration::from_millis(1)));
        assert!(w.sync_due(t0 + gap));
    }

    /// An unsynced save's stamps are under a key of their own: a reader that knows
    /// nothing of the boot id finds no stamps (and checks the data).
    #[test]
    fn unsynced_stamps_are_hidden_from_readers_that_ignore_the_boot_id() {
        let mut r = sample(13, true);
        r.unsynced_boot_id = Some(b"8e0e3a4c-5b1f-4d2e-9c3a-1f2e3d4c5b6a".to_vec());
        let enc = r.encode();
        assert!(!enc.windows(14).any(|w| w == b"11:file-stamps"));
        assert!(enc.windows(23).any(|w| w == b"20:unsynced-file-stamps"));
        assert_eq!(ResumeData::decode(&enc), Ok(r.clone()));
        // Without the boot id, `unsynced-file-stamps` alone is not taken.
        let plain = sample(13, true);
        let mut no_boot = plain.clone();
        no_boot.file_stamps = None;
        let stripped = {
            let from = b"16:unsynced-boot-id36:8e0e3a4c-5b1f-4d2e-9c3a-1f2e3d4c5b6a";
            let at = enc
                .windows(from.len())
                .position(|w| w == from)
                .expect("key");
            [&enc[..at], &enc[at + from.len()..]].concat()
        };
        assert_eq!(ResumeData::decode(&stripped), Ok(no_boot));
    }

    #[test]
    fn writer_syncs_every_save_after_a_failed_sync() {
        let t0 = Instant::now();
        let mut w = ResumeWriter::default();
        w.synced(t0);
        assert!(!w.sync_due(t0 + Duration::from_secs(2)));
        w.sync_outcome().store(true, Ordering::Relaxed);
        assert!(w.sync_due(t0 + Duration::from_secs(2)));
        w.sync_outcome().store(false, Ordering::Relaxed);
        assert!(!w.sync_due(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn unsynced_boot_id_is_bounded() {
        let mut r = sample(13, true);
        r.unsynced_boot_id = Some(b"8e0e3a4c-5b1f-4d2e-9c3a-1f2e3d4c5b6a".to_vec());
        let enc = r.encode();
        let with = |v: &[u8]| -> Vec<u8> {
            let from = b"16:unsynced-boot-id36:8e0e3a4c-5b1f-4d2e-9c3a-1f2e3d4c5b6a";
            let at = enc
                .windows(from.len())
                .position(|w| w == from)
                .expect("key present");
            let mut to = format!("16:unsynced-boot-id{}:", v.len()).into_bytes();
            to.extend_from_slice(v);
            [&enc[..at], &to[..], &enc[at + from.len()..]].concat()
        };
        assert!(ResumeData::decode(&with(&[b'a'; 64])).is_ok());
        for bad in [&[][..], &[b'a'; 65][..]] {
            assert_eq!(
                ResumeData::decode(&with(bad)),
                Err(ResumeError::Invalid("unsynced-boot-id"))
            );
        }
    }
}
