//! File storage: maps a torrent's byte space onto the files under a save directory.
//!
//! A [`Storage`] is built from [`Metainfo::layout`](btcore_core::metainfo::Metainfo::layout)
//! and the torrent's [`Geometry`]. Reads and writes name a byte offset in the torrent's
//! content and are split across file boundaries; each piece of I/O is a positioned
//! `pread`/`pwrite`, so worker threads share one `Storage` (it is `Sync`) and never seek.
//! The only lock guards the cache of open file handles and is never held during I/O.
//!
//! # What lands on disk
//!
//! - Regular files are created on demand, with their parent directories, on the first
//!   write that touches them. They are sparse: nothing is ever pre-filled, and a file
//!   grows only as far as its highest written byte.
//! - Pad files (BEP 47 `p`) are never created or written: writes into them are dropped
//!   and reads of them return zeros.
//! - Symbolic-link files (BEP 47 `l`) are not created as symlinks: the storage treats
//!   them as empty files that are never written (their length is zero anyway; should one
//!   claim bytes, they behave like pad bytes).
//! - Zero-length files are created (empty) by [`Storage::ensure_files`].
//! - Skipped files ([`Storage::set_skipped`]) are not created by `ensure_files`. The
//!   session never requests a piece lying only in skipped files, but a piece straddling
//!   a wanted and a skipped file is written whole. With a parts file
//!   ([`StorageConfig::parts_file`], as libtorrent's "part file") the skipped file's
//!   bytes of such a piece go there, at their offset in the torrent (a sparse file), and
//!   no file of its own appears in the save directory; which (piece, file) pairs it
//!   holds is kept beside it (`PARTS.idx`, written at each [`Storage::sync`]). Reads of
//!   those bytes come from it; when the file is wanted again its bytes move into it.
//!   Without a parts file the skipped file is created, sparse, holding just the bytes
//!   of the boundary pieces.
//!
//! # Path safety
//!
//! Every path is checked again here, whatever the metainfo parser did: it must be
//! relative, `/`-separated, with no empty, `.` or `..` component and no NUL byte, and is
//! joined under the save directory. No component below the save directory may be an
//! existing symbolic link (checked with `symlink_metadata`, never following links): a
//! link there could lead a write out of the save directory, so such a file is refused
//! with [`StorageErrorKind::UnsafePath`]. The check runs in [`Storage::new`] and again
//! every time a file is opened. It narrows but cannot close the window against a local
//! attacker who swaps a directory for a link between the check and the `open`.
//!
//! # The state directory
//!
//! The client's state directory (resume files, the DHT's state) may lie under the save
//! directory (`OUTPUT/.btcore` by default, as rtorrent users keep `session/` beside
//! their downloads). Its first component below the save directory is a reserved name:
//! a torrent whose root (its name) is that name, as a case-insensitive disk compares
//! names, is saved under `_NAME` instead ([`StorageConfig::state_dir`]), so no file of a
//! torrent can be written into the state directory. A torrent named `.btcore` is saved
//! as `_.btcore`. When the state directory is the save directory itself, the names of
//! the files it holds are reserved the same way ([`crate::resume::is_state_file_key`]:
//! `<info-hash>.resume`, `dht.state`, their temporaries). In both cases a root of the
//! shape of an 8.3 short name (`0123AB~1.RES`, `BTCORE~1`: a stem of at most 8
//! characters ending in `~` and digits, an extension of at most 3) is renamed too, as
//! NTFS opens a long name's file by its short name (`.btcore` may be `BTCORE~1`). Names
//! are compared once default-ignorable code points are dropped (sanitizing does that),
//! so HFS+, which skips some of them, cannot equate a torrent's root with the state
//! directory behind the comparison's back.
//!
//! # Durability
//!
//! Writes go to the page cache. Call [`Storage::sync`] (which `fsync`s every file
//! written since the last flush, open or already closed) before saving resume data that
//! claims the written pieces.

use crate::hash::FastSha1;
use btcore_core::bitfield::Bitfield;
use btcore_core::hash::Sha1;
use btcore_core::ids::{BlockRef, Geometry, PieceIndex};
use btcore_core::metainfo::FileSpec;
use btcore_core::session::{DiskError, MerklePiece};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes hashed at a time by [`Storage::hash_piece`] (the only buffer it allocates).
pub const HASH_CHUNK: usize = 256 * 1024;

/// Tunables of a [`Storage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageConfig {
    /// Most file handles kept open at once (least recently used closed first).
    /// Default 64; values below 1 count as 1.
    pub max_open_files: usize,
    /// The client's state directory: when it lies under the save directory, no file of
    /// the torrent may reach it (see the [module docs](self#the-state-directory)).
    /// Default `None`.
    pub state_dir: Option<PathBuf>,
    /// Where the bytes of skipped files that share a piece with wanted ones go (see
    /// the [module docs](self#what-lands-on-disk)); its index is this path with `.idx`
    /// added. Default `None`: they go to the skipped file itself.
    pub parts_file: Option<PathBuf>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            max_open_files: 64,
            state_dir: None,
            parts_file: None,
        }
    }
}

/// Largest parts index read back (a few entries per file in practice).
const MAX_PARTS_INDEX: u64 = 16 << 20;

/// The parts file of a [`Storage`]: the (piece, file) pairs whose bytes it holds.
#[derive(Debug)]
struct Parts {
    path: PathBuf,
    index: PathBuf,
    state: Mutex<PartsState>,
}

#[derive(Debug, Default)]
struct PartsState {
    held: std::collections::BTreeSet<(u32, u32)>,
    file: Option<Arc<File>>,
    /// Written (data or index) since the last sync.
    dirty: bool,
}

impl Parts {
    /// Opens the index of `path` (missing: nothing held); entries out of range are
    /// dropped.
    fn open(path: PathBuf, pieces: u32, files: usize) -> Self {
        let mut index = path.clone().into_os_string();
        index.push(".idx");
        let index = PathBuf::from(index);
        let mut held = std::collections::BTreeSet::new();
        let small = fs::metadata(&index).is_ok_and(|m| m.len() <= MAX_PARTS_INDEX);
        if let Some(text) = small.then(|| fs::read_to_string(&index).ok()).flatten() {
            for line in text.lines() {
                let mut it = line.split(' ').map(str::parse::<u32>);
                if let (Some(Ok(p)), Some(Ok(f)), None) = (it.next(), it.next(), it.next()) {
                    if p < pieces && (f as usize) < files {
                        held.insert((p, f));
                    }
                }
            }
        }
        Self {
            path,
            index,
            state: Mutex::new(PartsState {
                held,
                ..PartsState::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PartsState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The data file, opened (and created with `write`) on first use.
    fn file(&self, write: bool) -> Result<Arc<File>, StorageError> {
        let mut st = self.lock();
        if let Some(f) = &st.file {
            return Ok(f.clone());
        }
        let f = if write {
            if let Some(parent) = self.path.parent() {
                fs::create_dir_all(parent).map_err(|e| StorageError::io(&e, parent))?;
            }
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)
        } else {
            OpenOptions::new().read(true).write(true).open(&self.path)
        }
        .map_err(|e| StorageError::io(&e, &self.path))?;
        let f = Arc::new(f);
        st.file = Some(f.clone());
        Ok(f)
    }
}

/// A file's length and modification time (nanoseconds since the Unix epoch), as
/// [`Storage::stamps`] reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    /// Length in bytes.
    pub len: u64,
    /// Modification time, nanoseconds since 1970 (negative before).
    pub mtime_ns: i64,
}

/// What went wrong in a [`StorageError`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageErrorKind {
    /// The disk (or the quota) is full (`ENOSPC`).
    NoSpace,
    /// Any other I/O error.
    Io(io::ErrorKind),
    /// The data is not there: the file does not exist or is shorter than the range read.
    Missing,
    /// A path that could lead outside the save directory, or that names something
    /// other than a regular file; the text says why.
    UnsafePath(String),
    /// The file list does not describe the geometry (offsets not contiguous, total
    /// length mismatch, duplicate paths, indices out of order); the text says why.
    BadLayout(String),
    /// A range or piece outside the torrent, or a buffer of the wrong length.
    OutOfRange,
}

/// A storage failure, with the file it concerns when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageError {
    /// The cause.
    pub kind: StorageErrorKind,
    /// The file (under the save directory) the error concerns, if any.
    pub path: Option<PathBuf>,
    /// The OS error number (`errno`) of an I/O error, if any.
    pub os_error: Option<i32>,
}

impl StorageError {
    fn new(kind: StorageErrorKind, path: Option<&Path>) -> Self {
        Self {
            kind,
            path: path.map(Path::to_path_buf),
            os_error: None,
        }
    }

    fn io(e: &io::Error, path: &Path) -> Self {
        Self {
            os_error: e.raw_os_error(),
            ..Self::new(io_kind(e), Some(path))
        }
    }

    fn range() -> Self {
        Self::new(StorageErrorKind::OutOfRange, None)
    }

    fn layout(msg: impl Into<String>) -> Self {
        Self::new(StorageErrorKind::BadLayout(msg.into()), None)
    }

    /// Whether the data is simply not there yet ([`StorageErrorKind::Missing`]).
    pub fn is_missing(&self) -> bool {
        self.kind == StorageErrorKind::Missing
    }

    /// The core's view of this error, for `Session::disk_write_done` and friends.
    pub fn to_core(&self) -> DiskError {
        match self.kind {
            StorageErrorKind::NoSpace => DiskError::NoSpace,
            _ => DiskError::Io,
        }
    }
}

impl fmt::Display for StorageErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSpace => f.write_str("no space left on device"),
            Self::Io(k) => write!(f, "I/O error: {k}"),
            Self::Missing => f.write_str("data not present on disk"),
            Self::UnsafePath(why) => write!(f, "unsafe path: {why}"),
            Self::BadLayout(why) => write!(f, "bad file layout: {why}"),
            Self::OutOfRange => f.write_str("range outside the torrent"),
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.path {
            write!(f, "{}: ", p.display())?;
        }
        match self.os_error {
            // The system's words: "Not a directory (os error 20)".
            Some(n) => write!(f, "{}", io::Error::from_raw_os_error(n)),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for StorageError {}

/// Maps an I/O error, recognising a full disk.
fn io_kind(e: &io::Error) -> StorageErrorKind {
    #[cfg(unix)]
    const ENOSPC: i32 = 28;
    #[cfg(unix)]
    let raw_full = e.raw_os_error() == Some(ENOSPC);
    #[cfg(not(unix))]
    let raw_full = false;
    if raw_full || e.kind() == io::ErrorKind::StorageFull {
        StorageErrorKind::NoSpace
    } else {
        StorageErrorKind::Io(e.kind())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Regular,
    Pad,
    Symlink,
}

#[derive(Debug)]
struct Entry {
    spec: FileSpec,
    kind: Kind,
    /// Validated components of `spec.path` (empty for pad files).
    parts: Vec<String>,
    /// `save_dir` joined with `parts`.
    abs: PathBuf,
    skipped: AtomicBool,
}

#[derive(Debug)]
struct Handle {
    file: Arc<File>,
    writable: bool,
    used: u64,
}

#[derive(Debug, Default)]
struct Cache {
    open: HashMap<usize, Handle>,
    tick: u64,
    /// Files written since the last [`Storage::sync`].
    dirty: HashSet<usize>,
    /// Verified bytes not yet sent on their way to the disk, and their files
    /// ([`Storage::write_behind`]).
    behind: u64,
    behind_files: HashSet<usize>,
}

/// Verified bytes gathered before their files' writeback is started: one call per file
/// per 4 MiB, whatever the piece length (a torrent of 16 KiB pieces has 65,536 per GiB).
const WRITE_BEHIND: u64 = 4 << 20;

/// A torrent's files under a save directory. See the [module docs](self).
#[derive(Debug)]
pub struct Storage {
    root: PathBuf,
    files: Vec<Entry>,
    /// Indices of files that cover bytes (length > 0), in offset order.
    spans: Vec<usize>,
    geometry: Geometry,
    max_open: usize,
    cache: Mutex<Cache>,
    parts: Option<Parts>,
    /// Whether the SHA-1 of pieces is computed as their blocks are written (false for
    /// a v2-only torrent, whose pieces have none: see [`Storage::set_sha1_pieces`]).
    sha1_pieces: AtomicBool,
}

/// Checks one torrent path and splits it into components.
/// `p` made absolute, through the longest part of it that exists resolved (symbolic
/// links followed), the rest taken as written.
fn resolved(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut rest = Vec::new();
    let mut base = abs.as_path();
    let real = loop {
        if let Ok(r) = fs::canonicalize(base) {
            break r;
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                base = parent;
            }
            _ => break base.to_path_buf(),
        }
    };
    let mut out = real;
    for c in rest.iter().rev() {
        out.push(c);
    }
    out
}

fn os_bytes(s: &std::ffi::OsStr) -> Vec<u8> {
    crate::resume::path_bytes(Path::new(s))
}

/// The components of `dir` below `base` when `dir` is `base` or lies under it, names
/// compared as a case-insensitive disk would.
fn below(dir: &Path, base: &Path) -> Option<Vec<std::ffi::OsString>> {
    let mut d = dir.components();
    for b in base.components() {
        let same = match (b, d.next()?) {
            (Component::Normal(x), Component::Normal(y)) => {
                btcore_core::metainfo::path::same_name(&os_bytes(x), &os_bytes(y))
            }
            (x, y) => x == y,
        };
        if !same {
            return None;
        }
    }
    Some(d.map(|c| c.as_os_str().to_os_string()).collect())
}

/// Whether a name (its [`push_name_key`] key) has the shape of an 8.3 short name NTFS
/// gives long names (`0123AB~1.RES`, `BTCORE~1`): a stem of at most 8 bytes ending in
/// `~` and digits, and at most one dot, followed by at most 3 bytes. NTFS opens a file
/// by its short name too, so such a root could reach a state file or the state
/// directory (see the [module docs](self#the-state-directory)).
///
/// [`push_name_key`]: btcore_core::metainfo::path::push_name_key
fn is_short_name(key: &[u8]) -> bool {
    let (stem, ext) = match key.iter().position(|&b| b == b'.') {
        Some(i) => (&key[..i], &key[i + 1..]),
        None => (key, &[][..]),
    };
    let digits = stem.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    stem.len() <= 8
        && ext.len() <= 3
        && !ext.contains(&b'.')
        && digits > 0
        && stem.len() > digits
        && stem[stem.len() - digits - 1] == b'~'
}

/// Renames the torrent's root when it would take the state directory's name (see the
/// [module docs](self#the-state-directory)).
fn keep_out_of_state_dir(
    save_dir: &Path,
    state_dir: &Path,
    files: &mut [FileSpec],
) -> Result<(), StorageError> {
    let Some(rel) = below(&resolved(state_dir), &resolved(save_dir)) else {
        return Ok(());
    };
    let root = files
        .iter()
        .find(|f| !f.attr.pad)
        .and_then(|f| f.path.split('/').next())
        .unwrap_or_default()
        .to_owned();
    let mut key = Vec::new();
    btcore_core::metainfo::path::push_name_key(&root, &mut key);
    let taken = is_short_name(&key)
        || match rel.first() {
            Some(reserved) => {
                btcore_core::metainfo::path::same_name(root.as_bytes(), &os_bytes(reserved))
            }
            // The state directory is the save directory: its files' names are reserved.
            None => crate::resume::is_state_file_key(&key),
        };
    if !taken {
        return Ok(());
    }
    let mut buf = [0u8; btcore_core::metainfo::path::MAX_ELEMENT_LEN + 1];
    let renamed =
        btcore_core::metainfo::path::sanitize_element(format!("_{root}").as_bytes(), &mut buf)
            .unwrap_or("_")
            .to_owned();
    log::warn!(
        "{root:?} is the name of the state directory {}: saving the torrent as {renamed:?}",
        state_dir.display()
    );
    for f in files.iter_mut().filter(|f| !f.attr.pad) {
        let tail = f.path.get(root.len()..).unwrap_or_default();
        f.path = format!("{renamed}{tail}");
    }
    Ok(())
}

fn checked_parts(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.contains('\0') {
        return Err(format!("{path:?} contains a NUL byte"));
    }
    if path.starts_with('/') {
        return Err(format!("{path:?} is absolute"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!("{path:?} has an empty, '.' or '..' component"));
        }
        #[cfg(windows)]
        if part.contains(['\\', ':']) {
            return Err(format!("{path:?} has a separator or drive in a component"));
        }
        let mut comps = Path::new(part).components();
        if !matches!(
            (comps.next(), comps.next()),
            (Some(Component::Normal(_)), None)
        ) {
            return Err(format!("{path:?} has a component that is not a plain name"));
        }
        parts.push(part.to_owned());
    }
    Ok(parts)
}

/// Walks the existing components of `root/parts...` without following links: refuses a
/// symbolic link anywhere below `root`, a non-directory where a directory is needed and
/// a final component that exists but is not a regular file.
fn check_existing(root: &Path, parts: &[String]) -> Result<(), StorageError> {
    let mut cur = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        cur.push(part);
        let last = i + 1 == parts.len();
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(StorageError::new(
                    StorageErrorKind::UnsafePath(format!("{} is a symbolic link", cur.display())),
                    Some(&cur),
                ));
            }
            Ok(m) if !last && !m.is_dir() => {
                return Err(StorageError::new(
                    StorageErrorKind::Io(io::ErrorKind::NotADirectory),
                    Some(&cur),
                ));
            }
            Ok(m) if last && m.is_dir() => {
                return Err(StorageError::new(
                    StorageErrorKind::Io(io::ErrorKind::IsADirectory),
                    Some(&cur),
                ));
            }
            Ok(m) if last && !m.is_file() => {
                return Err(StorageError::new(
                    StorageErrorKind::UnsafePath(format!(
                        "{} is not a regular file",
                        cur.display()
                    )),
                    Some(&cur),
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StorageError::io(&e, &cur)),
        }
    }
    Ok(())
}

#[cfg(unix)]
fn read_exact_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, off)
}

/// The offset of the first byte of data at or after `off` (`lseek` with `SEEK_DATA`):
/// `Some(u64::MAX)` when only a hole follows, `None` when the system cannot say.
#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
fn next_data(f: &File, off: u64) -> Option<u64> {
    #[cfg(target_env = "musl")]
    use libc::lseek as lseek_at;
    #[cfg(target_env = "gnu")]
    use libc::lseek64 as lseek_at;
    use std::os::fd::AsRawFd;
    let off = Off64::try_from(off).ok()?;
    // SAFETY: a valid descriptor for the call; the offset it moves is never used (all
    // I/O is positioned).
    let r = unsafe { lseek_at(f.as_raw_fd(), off, libc::SEEK_DATA) };
    if r >= 0 {
        return u64::try_from(r).ok();
    }
    (io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO)).then_some(u64::MAX)
}

#[cfg(not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl"))))]
fn next_data(_f: &File, _off: u64) -> Option<u64> {
    None
}

/// The SHA-1 of `len` zero bytes.
/// What a piece must hash to: its v1 SHA-1, its v2 merkle root (BEP 52), or both (a
/// hybrid torrent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// The v1 SHA-1.
    pub sha1: Option<[u8; 20]>,
    /// The v2 merkle root.
    pub merkle: Option<MerklePiece>,
}

impl Expected {
    /// A v1 piece.
    pub fn sha1(h: [u8; 20]) -> Self {
        Self {
            sha1: Some(h),
            merkle: None,
        }
    }
}

/// What each piece of `m` must hash to: its v1 SHA-1, its v2 merkle root (when the
/// piece layers are known), or both.
pub fn expected_hashes(m: &btcore_core::metainfo::Metainfo<'_>) -> Vec<Expected> {
    let merkle = btcore_core::session::merkle_pieces(m).unwrap_or_default();
    (0..m.num_pieces())
        .map(|i| Expected {
            sha1: m.piece_hash(PieceIndex(i)).copied(),
            merkle: merkle.get(i as usize).copied(),
        })
        .collect()
}

/// How a piece compared with its [`Expected`] hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every hash given matches.
    Match,
    /// No hash given matches (or none was given).
    Mismatch,
    /// A hybrid piece that matches one of its hashes and not the other.
    Disagree,
}

impl Verdict {
    fn of(sha1: Option<bool>, merkle: Option<bool>) -> Self {
        match (sha1, merkle) {
            (Some(a), Some(b)) if a != b => Self::Disagree,
            (Some(true), _) | (None, Some(true)) => Self::Match,
            _ => Self::Mismatch,
        }
    }

    /// Whether the piece matched.
    pub fn ok(self) -> bool {
        self == Self::Match
    }
}

/// The merkle root a piece of zeros has for `m` (its `len` bytes all zero).
fn zeros_merkle(m: &MerklePiece) -> [u8; 32] {
    let block = btcore_core::hash::sha256(&[0u8; 16 * 1024]);
    let mut tree = btcore_core::merkle::MerkleBuilder::new(btcore_core::merkle::ZERO);
    let len = u64::from(m.len);
    let bs = u64::from(btcore_core::merkle::BLOCK_SIZE);
    for _ in 0..len / bs {
        tree.push(block);
    }
    if len % bs != 0 {
        tree.push(btcore_core::hash::sha256(&vec![0u8; (len % bs) as usize]));
    }
    tree.finish(u64::from(m.width))
}

fn zeros_digest(len: usize) -> [u8; 20] {
    let block = [0u8; 16 * 1024];
    let mut h = FastSha1::default();
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        h.update(&block[..n]);
        left -= n;
    }
    h.finish()
}

/// Where `write_all_vectored_at` has no `pwritev`.
#[cfg(all(
    unix,
    not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))
))]
fn write_all_at(f: &File, buf: &[u8], off: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, buf, off)
}

/// `pwritev` with a 64-bit offset: glibc's `off_t` is 32 bits on 32-bit ARM, so there
/// it is `pwritev64` (as std's `pwrite` is `pwrite64`); musl's `off_t` is 64 bits.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
use libc::{off64_t as Off64, pwritev64 as pwritev_at};
#[cfg(all(target_os = "linux", target_env = "musl"))]
use libc::{off_t as Off64, pwritev as pwritev_at};

/// Writes every byte of `bufs`, one after another, at `off`: `pwritev`, resumed after a
/// short write.
#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
fn write_all_vectored_at(f: &File, bufs: &[&[u8]], mut off: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // IOV_MAX is 1024 on Linux; callers pass far fewer.
    const MAX_IOV: usize = 64;
    let mut iov: Vec<libc::iovec> = bufs
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| libc::iovec {
            iov_base: b.as_ptr().cast_mut().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut at = 0;
    while at < iov.len() {
        let n = (iov.len() - at).min(MAX_IOV);
        let Ok(pos) = Off64::try_from(off) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        // SAFETY: every iovec points into a slice of `bufs`, alive and unchanged for the
        // call; the kernel only reads them.
        let r = unsafe { pwritev_at(f.as_raw_fd(), iov[at..].as_ptr(), n as libc::c_int, pos) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut left = r as usize;
        off += left as u64;
        // Skip what was written; a buffer written in part keeps its tail.
        while left > 0 {
            let v = &mut iov[at];
            if left >= v.iov_len {
                left -= v.iov_len;
                at += 1;
            } else {
                // SAFETY: `left < iov_len`, so the new start stays inside the buffer.
                v.iov_base = unsafe { v.iov_base.cast::<u8>().add(left) }.cast();
                v.iov_len -= left;
                left = 0;
            }
        }
    }
    Ok(())
}

/// Elsewhere (uClibc, other systems): one positioned write per buffer.
#[cfg(not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl"))))]
fn write_all_vectored_at(f: &File, bufs: &[&[u8]], mut off: u64) -> io::Result<()> {
    for b in bufs {
        write_all_at(f, b, off)?;
        off += b.len() as u64;
    }
    Ok(())
}

#[cfg(windows)]
fn read_exact_at(f: &File, mut buf: &mut [u8], mut off: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_read(buf, off) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(windows)]
fn write_all_at(f: &File, mut buf: &[u8], mut off: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_write(buf, off) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Storage {
    /// A storage for `files` (as [`Metainfo::layout`] returns them: `files[i].index == i`,
    /// contiguous offsets summing to `geometry.total_len()`) under `save_dir`.
    ///
    /// Nothing is created here; every path is validated and existing components are
    /// checked for symbolic links.
    ///
    /// [`Metainfo::layout`]: btcore_core::metainfo::Metainfo::layout
    pub fn new(
        save_dir: &Path,
        mut files: Vec<FileSpec>,
        geometry: Geometry,
        config: StorageConfig,
    ) -> Result<Storage, StorageError> {
        if let Some(state_dir) = &config.state_dir {
            keep_out_of_state_dir(save_dir, state_dir, &mut files)?;
        }
        let mut entries = Vec::with_capacity(files.len());
        let mut spans = Vec::new();
        let mut seen = HashSet::new();
        let mut expected = 0u64;
        for (i, spec) in files.into_iter().enumerate() {
            if spec.index as usize != i {
                return Err(StorageError::layout(format!(
                    "file {i} carries index {}",
                    spec.index
                )));
            }
            if spec.offset != expected {
                return Err(StorageError::layout(format!(
                    "file {i} starts at {} instead of {expected}",
                    spec.offset
                )));
            }
            expected = expected
                .checked_add(spec.length)
                .ok_or_else(|| StorageError::layout("total length overflows"))?;
            let kind = if spec.attr.pad {
                Kind::Pad
            } else if spec.attr.symlink {
                Kind::Symlink
            } else {
                Kind::Regular
            };
            let (parts, abs) = if kind == Kind::Pad {
                (Vec::new(), PathBuf::new())
            } else {
                let parts = checked_parts(&spec.path)
                    .map_err(|why| StorageError::new(StorageErrorKind::UnsafePath(why), None))?;
                let mut abs = save_dir.to_path_buf();
                abs.extend(&parts);
                if !seen.insert(parts.join("/")) {
                    return Err(StorageError::layout(format!(
                        "path {:?} appears twice",
                        spec.path
                    )));
                }
                if kind == Kind::Regular {
                    check_existing(save_dir, &parts)?;
                }
                (parts, abs)
            };
            if spec.length > 0 {
                spans.push(i);
            }
            entries.push(Entry {
                spec,
                kind,
                parts,
                abs,
                skipped: AtomicBool::new(false),
            });
        }
        if expected != geometry.total_len() {
            return Err(StorageError::layout(format!(
                "files total {expected} bytes, the geometry {}",
                geometry.total_len()
            )));
        }
        let parts = config
            .parts_file
            .map(|p| Parts::open(p, geometry.num_pieces(), entries.len()));
        Ok(Storage {
            root: save_dir.to_path_buf(),
            files: entries,
            spans,
            geometry,
            max_open: config.max_open_files.max(1),
            cache: Mutex::new(Cache::default()),
            parts,
            sha1_pieces: AtomicBool::new(true),
        })
    }

    /// Whether pieces have a SHA-1 to compute as their blocks are written: true but for
    /// a v2-only torrent (BEP 52), whose pieces are checked by their merkle root alone.
    pub fn set_sha1_pieces(&self, on: bool) {
        self.sha1_pieces.store(on, Ordering::Relaxed);
    }

    /// See [`Storage::set_sha1_pieces`].
    pub fn sha1_pieces(&self) -> bool {
        self.sha1_pieces.load(Ordering::Relaxed)
    }

    /// The save directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The files, in torrent order.
    pub fn files(&self) -> impl Iterator<Item = &FileSpec> + '_ {
        self.files.iter().map(|e| &e.spec)
    }

    /// Where file `index` lives on disk; `None` for pad files and out-of-range indices.
    pub fn file_path(&self, index: u32) -> Option<&Path> {
        self.files
            .get(index as usize)
            .filter(|e| e.kind != Kind::Pad)
            .map(|e| e.abs.as_path())
    }

    /// Marks a file skipped (not wanted) or wanted again. A skipped file is not created
    /// by [`Storage::ensure_files`]; see the module docs for boundary pieces.
    /// Out-of-range indices are ignored.
    pub fn set_skipped(&self, index: u32, skipped: bool) {
        if let Some(e) = self.files.get(index as usize) {
            let was = e.skipped.swap(skipped, Ordering::Relaxed);
            if was && !skipped {
                if let Err(err) = self.unpark(index) {
                    log::warn!("{err}");
                }
            }
        }
    }

    /// The parts file, when there is one.
    pub fn parts_file(&self) -> Option<&Path> {
        self.parts.as_ref().map(|p| p.path.as_path())
    }

    /// Deletes the parts file and its index (the torrent is removed).
    pub fn remove_parts(&self) {
        if let Some(p) = &self.parts {
            let mut st = p.lock();
            st.file = None;
            st.held.clear();
            st.dirty = false;
            let _ = fs::remove_file(&p.path);
            let _ = fs::remove_file(&p.index);
        }
    }

    /// The pieces the torrent bytes `off .. off + len` touch.
    fn pieces_of(&self, off: u64, len: u64) -> std::ops::RangeInclusive<u32> {
        let plen = u64::from(self.geometry.piece_len()).max(1);
        let first = (off / plen) as u32;
        let last = ((off + len.max(1) - 1) / plen) as u32;
        first..=last
    }

    /// Whether the parts file holds file `k`'s bytes of `piece`.
    fn parts_hold(&self, piece: u32, k: usize) -> bool {
        self.parts
            .as_ref()
            .is_some_and(|p| p.lock().held.contains(&(piece, k as u32)))
    }

    /// File `index` is wanted again: its bytes held in the parts file move into it.
    fn unpark(&self, index: u32) -> Result<(), StorageError> {
        let Some(p) = &self.parts else {
            return Ok(());
        };
        let pieces: Vec<u32> = p
            .lock()
            .held
            .iter()
            .filter(|(_, f)| *f == index)
            .map(|(piece, _)| *piece)
            .collect();
        if pieces.is_empty() {
            return Ok(());
        }
        let k = index as usize;
        let spec = &self.files[k].spec;
        let from = p.file(false)?;
        let to = self.handle(k, true)?;
        let mut buf = Vec::new();
        for piece in pieces {
            let (poff, plen) = self.piece_range(piece);
            let lo = poff.max(spec.offset);
            let hi = (poff + u64::from(plen)).min(spec.offset + spec.length);
            if lo < hi {
                buf.resize((hi - lo) as usize, 0);
                read_exact_at(&from, &mut buf, lo).map_err(|e| StorageError::io(&e, &p.path))?;
                write_all_vectored_at(&to, &[&buf], lo - spec.offset)
                    .map_err(|e| StorageError::io(&e, &self.files[k].abs))?;
            }
            self.lock().dirty.insert(k);
            let mut st = p.lock();
            st.held.remove(&(piece, index));
            st.dirty = true;
        }
        Ok(())
    }

    /// Whether file `index` is skipped.
    pub fn is_skipped(&self, index: u32) -> bool {
        self.files
            .get(index as usize)
            .is_some_and(|e| e.skipped.load(Ordering::Relaxed))
    }

    /// Creates every wanted zero-length regular file (empty) and its directories.
    /// Files with data are created by the writes themselves.
    pub fn ensure_files(&self) -> Result<(), StorageError> {
        for (k, e) in self.files.iter().enumerate() {
            if e.kind == Kind::Regular && e.spec.length == 0 && !e.skipped.load(Ordering::Relaxed) {
                self.open(k, true)?;
            }
        }
        Ok(())
    }

    /// Offset in the torrent and length of a piece (length 0 past the last piece).
    pub fn piece_range(&self, piece: u32) -> (u64, u32) {
        let p = PieceIndex(piece);
        (self.geometry.piece_offset(p), self.geometry.piece_size(p))
    }

    fn checked_piece(&self, piece: u32) -> Result<(u64, u32), StorageError> {
        if piece >= self.geometry.num_pieces() {
            return Err(StorageError::range());
        }
        Ok(self.piece_range(piece))
    }

    /// Calls `f(file, offset in file, part of the buffer)` for each file the range
    /// `offset .. offset + len` touches, in order.
    fn each_segment(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(usize, u64, std::ops::Range<usize>) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let end = offset
            .checked_add(len as u64)
            .filter(|&e| e <= self.geometry.total_len())
            .ok_or_else(StorageError::range)?;
        let mut i = self.spans.partition_point(|&k| {
            let s = &self.files[k].spec;
            s.offset + s.length <= offset
        });
        let mut pos = offset;
        while pos < end {
            let k = *self
                .spans
                .get(i)
                .ok_or_else(|| StorageError::layout("range past the last file"))?;
            let s = &self.files[k].spec;
            let n = (s.offset + s.length).min(end) - pos;
            let lo = (pos - offset) as usize;
            f(k, pos - s.offset, lo..lo + n as usize)?;
            pos += n;
            i += 1;
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        // The cache is consistent after every statement; a panic elsewhere cannot break it.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens file `k` (not cached). `write` creates it and its directories.
    fn open(&self, k: usize, write: bool) -> Result<File, StorageError> {
        let e = &self.files[k];
        check_existing(&self.root, &e.parts)?;
        let res = if write {
            if let Some(parent) = e.abs.parent() {
                fs::create_dir_all(parent).map_err(|err| StorageError::io(&err, parent))?;
            }
            let mut o = OpenOptions::new();
            o.read(true).write(true).create(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                o.mode(if e.spec.attr.executable { 0o777 } else { 0o666 });
            }
            o.open(&e.abs)
        } else {
            File::open(&e.abs)
        };
        res.map_err(|err| {
            if err.kind() == io::ErrorKind::NotFound && !write {
                StorageError::new(StorageErrorKind::Missing, Some(&e.abs))
            } else {
                StorageError::io(&err, &e.abs)
            }
        })
    }

    /// A cached handle of file `k`, opening it on a miss (outside the lock).
    fn handle(&self, k: usize, write: bool) -> Result<Arc<File>, StorageError> {
        let usable = |h: &Handle| h.writable || !write;
        {
            let mut c = self.lock();
            c.tick += 1;
            let tick = c.tick;
            if let Some(h) = c.open.get_mut(&k).filter(|h| usable(h)) {
                h.used = tick;
                return Ok(Arc::clone(&h.file));
            }
        }
        let file = Arc::new(self.open(k, write)?);
        let mut c = self.lock();
        c.tick += 1;
        let tick = c.tick;
        if let Some(h) = c.open.get_mut(&k).filter(|h| usable(h)) {
            // Another thread opened it meanwhile: share its handle, drop ours.
            h.used = tick;
            return Ok(Arc::clone(&h.file));
        }
        while c.open.len() >= self.max_open && !c.open.contains_key(&k) {
            let lru = c.open.iter().min_by_key(|(_, h)| h.used).map(|(&i, _)| i);
            match lru {
                // Closed once the I/O in flight on it (holding its own Arc) ends.
                Some(i) => c.open.remove(&i),
                None => break,
            };
        }
        c.open.insert(
            k,
            Handle {
                file: Arc::clone(&file),
                writable: write,
                used: tick,
            },
        );
        Ok(file)
    }

    /// Writes `data` at `offset` in the torrent, across file boundaries. Bytes falling in
    /// pad (or symlink) files are dropped.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        self.write_vectored(offset, &[data])
    }

    /// Writes `bufs`, one after another, from `offset` in the torrent: like
    /// [`write`](Self::write) of their concatenation, in one `pwritev` per file touched.
    /// Page-cache writes of 256 KiB cost about half the kernel time of the same bytes
    /// in 16 KiB writes.
    pub fn write_vectored(&self, offset: u64, bufs: &[&[u8]]) -> Result<(), StorageError> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(bufs.len() + 1);
        self.each_segment(offset, total, |k, file_off, range| {
            if self.files[k].kind != Kind::Regular {
                return Ok(());
            }
            // The parts of `bufs` that fall in `range` of their concatenation.
            parts.clear();
            let mut pos = 0;
            for b in bufs {
                let (lo, hi) = (pos, pos + b.len());
                pos = hi;
                if hi <= range.start || lo >= range.end {
                    continue;
                }
                let from = range.start.max(lo) - lo;
                let to = range.end.min(hi) - lo;
                parts.push(&b[from..to]);
            }
            let e = &self.files[k];
            if let Some(p) = self
                .parts
                .as_ref()
                .filter(|_| e.skipped.load(Ordering::Relaxed))
            {
                // A skipped file's bytes of a piece it shares: to the parts file.
                let at = e.spec.offset + file_off;
                let f = p.file(true)?;
                write_all_vectored_at(&f, &parts, at)
                    .map_err(|err| StorageError::io(&err, &p.path))?;
                let mut st = p.lock();
                for piece in self.pieces_of(at, (range.end - range.start) as u64) {
                    st.held.insert((piece, k as u32));
                }
                st.dirty = true;
                return Ok(());
            }
            let f = self.handle(k, true)?;
            self.lock().dirty.insert(k);
            write_all_vectored_at(&f, &parts, file_off)
                .map_err(|e| StorageError::io(&e, &self.files[k].abs))
        })
    }

    /// Piece `piece` verified: its files' writeback starts once 4 MiB
    /// of verified pieces gathered (`sync_file_range(SYNC_FILE_RANGE_WRITE)` over each
    /// such file on Linux, not waiting for the disk; nothing elsewhere), so the
    /// writeback of a download spreads over it instead of piling up for the sync at its
    /// end. Best effort: what this does not start waits for the next [`Storage::sync`],
    /// which is what makes the bytes durable either way.
    pub fn write_behind(&self, piece: u32) {
        let Ok((off, len)) = self.checked_piece(piece) else {
            return;
        };
        let due: Vec<Arc<File>> = {
            let mut c = self.lock();
            let _ = self.each_segment(off, len as usize, |k, _, _| {
                let e = &self.files[k];
                if e.kind == Kind::Regular && !e.skipped.load(Ordering::Relaxed) {
                    c.behind_files.insert(k);
                }
                Ok(())
            });
            c.behind += u64::from(len);
            if c.behind < WRITE_BEHIND {
                return;
            }
            c.behind = 0;
            let files = std::mem::take(&mut c.behind_files);
            // A file whose handle was closed meanwhile is left to the next sync: no open
            // (nor eviction of another handle) for a hint.
            files
                .into_iter()
                .filter_map(|k| c.open.get(&k).map(|h| Arc::clone(&h.file)))
                .collect()
        };
        #[cfg(target_os = "linux")]
        for f in due {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid descriptor, held open by `f` for the call; offset 0 and
            // length 0 mean the whole file.
            unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        }
        #[cfg(not(target_os = "linux"))]
        drop(due);
    }

    /// Each file's length and modification time as the file system has them now, in
    /// file order: what resume data records after a sync, and compares on the next start
    /// to tell whether the files changed since. Files that are absent, pad files and
    /// symlinks have no stamp.
    pub fn stamps(&self) -> Vec<Option<FileStamp>> {
        self.files
            .iter()
            .map(|e| {
                if e.kind != Kind::Regular {
                    return None;
                }
                let m = fs::symlink_metadata(&e.abs)
                    .ok()
                    .filter(fs::Metadata::is_file)?;
                let t = m.modified().ok()?;
                let ns = match t.duration_since(std::time::UNIX_EPOCH) {
                    Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
                    Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
                };
                Some(FileStamp {
                    len: m.len(),
                    mtime_ns: i64::try_from(ns).unwrap_or(i64::MAX),
                })
            })
            .collect()
    }

    /// Reads `buf.len()` bytes at `offset` in the torrent. Pad bytes read as zeros; a
    /// file that does not exist or is too short is [`StorageErrorKind::Missing`].
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.each_segment(offset, buf.len(), |k, file_off, range| {
            let e = &self.files[k];
            if e.kind != Kind::Regular {
                buf[range].fill(0);
                return Ok(());
            }
            if let Some(p) = &self.parts {
                // Piece by piece: those the parts file holds for this file come from it.
                let at = e.spec.offset + file_off;
                let held: Vec<u32> = {
                    let st = p.lock();
                    self.pieces_of(at, (range.end - range.start) as u64)
                        .filter(|piece| st.held.contains(&(*piece, k as u32)))
                        .collect()
                };
                if !held.is_empty() {
                    let plen = u64::from(self.geometry.piece_len()).max(1);
                    let mut pos = range.start;
                    while pos < range.end {
                        let t = at + (pos - range.start) as u64;
                        let piece = (t / plen) as u32;
                        let n = ((u64::from(piece) + 1) * plen - t).min((range.end - pos) as u64)
                            as usize;
                        let out = &mut buf[pos..pos + n];
                        if held.contains(&piece) {
                            let f = p.file(false)?;
                            read_exact_at(&f, out, t)
                                .map_err(|err| StorageError::io(&err, &p.path))?;
                        } else {
                            self.read_file(k, out, t - e.spec.offset)?;
                        }
                        pos += n;
                    }
                    return Ok(());
                }
            }
            self.read_file(k, &mut buf[range], file_off)
        })
    }

    /// Reads `buf.len()` bytes of file `k` at `file_off`.
    fn read_file(&self, k: usize, buf: &mut [u8], file_off: u64) -> Result<(), StorageError> {
        let e = &self.files[k];
        let f = self.handle(k, false)?;
        read_exact_at(&f, buf, file_off).map_err(|err| {
            if err.kind() == io::ErrorKind::UnexpectedEof {
                StorageError::new(StorageErrorKind::Missing, Some(&e.abs))
            } else {
                StorageError::io(&err, &e.abs)
            }
        })
    }

    fn block_offset(&self, block: &BlockRef, len: usize) -> Result<u64, StorageError> {
        let (off, size) = self.checked_piece(block.piece.0)?;
        if len != block.len as usize
            || u64::from(block.offset) + u64::from(block.len) > u64::from(size)
        {
            return Err(StorageError::range());
        }
        Ok(off + u64::from(block.offset))
    }

    /// Writes one block (`data.len()` must equal `block.len`).
    pub fn write_block(&self, block: &BlockRef, data: &[u8]) -> Result<(), StorageError> {
        let off = self.block_offset(block, data.len())?;
        self.write(off, data)
    }

    /// Reads one block (`buf.len()` must equal `block.len`).
    pub fn read_block(&self, block: &BlockRef, buf: &mut [u8]) -> Result<(), StorageError> {
        let off = self.block_offset(block, buf.len())?;
        self.read(off, buf)
    }

    /// Reads a whole piece into the start of `buf` (which must be at least the piece
    /// long) and returns the piece's length.
    pub fn read_piece(&self, piece: u32, buf: &mut [u8]) -> Result<usize, StorageError> {
        let (off, len) = self.checked_piece(piece)?;
        let buf = buf
            .get_mut(..len as usize)
            .ok_or_else(StorageError::range)?;
        self.read(off, buf)?;
        Ok(len as usize)
    }

    /// SHA-1 of a piece as stored, read in [`HASH_CHUNK`] pieces.
    pub fn hash_piece(&self, piece: u32) -> Result<[u8; 20], StorageError> {
        let (off, len) = self.checked_piece(piece)?;
        let len = len as usize;
        let mut buf = vec![0u8; len.min(HASH_CHUNK)];
        let mut h = FastSha1::default();
        let mut pos = 0;
        while pos < len {
            let n = (len - pos).min(HASH_CHUNK);
            self.read(off + pos as u64, &mut buf[..n])?;
            h.update(&buf[..n]);
            pos += n;
        }
        Ok(h.finish())
    }

    /// Reads piece `piece` once and compares it with each hash `expected` gives
    /// (`sha1` when given: the SHA-1 already computed from the bytes as written).
    pub fn verify_piece(
        &self,
        piece: u32,
        expected: &Expected,
        sha1: Option<[u8; 20]>,
    ) -> Result<Verdict, StorageError> {
        let (off, len) = self.checked_piece(piece)?;
        let want_sha1 = expected.sha1.is_some() && sha1.is_none();
        let mut h1 = want_sha1.then(FastSha1::default);
        let mut h2 = expected.merkle.as_ref().map(MerklePiece::hasher);
        if h1.is_some() || h2.is_some() {
            // Only the merkle tree: the bytes past the file's end are padding.
            let len = match (&h1, &expected.merkle) {
                (None, Some(m)) => len.min(m.len),
                _ => len,
            } as usize;
            let mut buf = vec![0u8; len.min(HASH_CHUNK)];
            let mut pos = 0;
            while pos < len {
                let n = (len - pos).min(HASH_CHUNK);
                self.read(off + pos as u64, &mut buf[..n])?;
                if let Some(h) = h1.as_mut() {
                    h.update(&buf[..n]);
                }
                if let Some(h) = h2.as_mut() {
                    h.update(&buf[..n]);
                }
                pos += n;
            }
        }
        let sha1 = sha1.or_else(|| h1.map(FastSha1::finish));
        let v1 = expected.sha1.map(|e| sha1 == Some(e));
        let v2 = h2.map(btcore_core::session::MerklePieceHasher::matches);
        Ok(Verdict::of(v1, v2))
    }

    /// Bytes present of each regular file (0 when absent); `u64::MAX` for the others.
    fn present_lengths(&self) -> Vec<u64> {
        self.files
            .iter()
            .map(|e| match e.kind {
                Kind::Regular => fs::symlink_metadata(&e.abs)
                    .ok()
                    .filter(fs::Metadata::is_file)
                    .map_or(0, |m| m.len()),
                Kind::Pad | Kind::Symlink => u64::MAX,
            })
            .collect()
    }

    fn verifies(
        &self,
        piece: u32,
        present: &[u64],
        hashes: &impl Fn(u32) -> Expected,
        zeros: &mut Vec<(u32, [u8; 20])>,
    ) -> bool {
        let Ok((off, len)) = self.checked_piece(piece) else {
            return false;
        };
        let mut data = false;
        let there = self
            .each_segment(off, len as usize, |k, file_off, range| {
                let end = file_off + range.len() as u64;
                if self.parts_hold(piece, k) {
                    // In the parts file: read when the piece is hashed.
                    data = true;
                    return Ok(());
                }
                if present[k] < end {
                    return Err(StorageError::new(StorageErrorKind::Missing, None));
                }
                data = data || self.may_hold_data(k, file_off, range.len() as u64);
                Ok(())
            })
            .is_ok();
        if !there {
            return false;
        }
        if !data {
            // Holes all through (never written; or pad files): zeros. Only a piece of
            // zeros verifies, and that needs no read.
            let expected = hashes(piece);
            let v1 = expected.sha1.map(|want| {
                let zero = match zeros.iter().find(|(l, _)| *l == len) {
                    Some((_, h)) => *h,
                    None => {
                        let h = zeros_digest(len as usize);
                        zeros.push((len, h));
                        h
                    }
                };
                zero == want
            });
            let v2 = expected.merkle.map(|m| zeros_merkle(&m) == m.root);
            return Verdict::of(v1, v2).ok();
        }
        self.verify_piece(piece, &hashes(piece), None)
            .is_ok_and(Verdict::ok)
    }

    /// Whether bytes `file_off..file_off + len` of file `k` may hold data: false only
    /// when the file system says they are all a hole (`SEEK_DATA`), or for a pad file.
    /// Skipping holes keeps a full check of a sparse, partly downloaded torrent from
    /// hashing gigabytes of zeros.
    fn may_hold_data(&self, k: usize, file_off: u64, len: u64) -> bool {
        match self.files[k].kind {
            Kind::Pad => false,
            Kind::Symlink => true,
            Kind::Regular => {
                let Ok(f) = self.handle(k, false) else {
                    return true;
                };
                match next_data(&f, file_off) {
                    Some(at) => at < file_off + len,
                    // Unknown (no SEEK_DATA here, or an error): read it.
                    None => true,
                }
            }
        }
    }

    /// Hashes every piece whose data is all on disk and returns those matching
    /// `hashes(piece)`. Pieces with missing data, or whose read fails, are absent.
    pub fn recheck(&self, hashes: impl Fn(u32) -> Expected) -> Bitfield {
        self.check(None, hashes, || true)
            .unwrap_or_else(|| Bitfield::new(self.geometry.num_pieces()))
    }

    /// The pieces among `pieces` whose data is on disk and matches `hashes(piece)`,
    /// in the order given.
    pub fn check_pieces(&self, pieces: &[u32], hashes: impl Fn(u32) -> Expected) -> Vec<u32> {
        self.check(Some(pieces), hashes, || true)
            .map(|b| pieces.iter().copied().filter(|&p| b.get(p)).collect())
            .unwrap_or_default()
    }

    /// The pieces (of `pieces`, or all) whose data is on disk and matches
    /// `hashes(piece)`; `on_piece` is called after each piece and stops the check
    /// (`None`) when it returns false.
    pub fn check(
        &self,
        pieces: Option<&[u32]>,
        hashes: impl Fn(u32) -> Expected,
        mut on_piece: impl FnMut() -> bool,
    ) -> Option<Bitfield> {
        let n = self.geometry.num_pieces();
        let present = self.present_lengths();
        let mut have = Bitfield::new(n);
        let mut zeros = Vec::new();
        let mut one = |piece: u32| {
            if piece < n && self.verifies(piece, &present, &hashes, &mut zeros) {
                have.set(piece);
            }
            on_piece()
        };
        let finished = match pieces {
            Some(list) => list.iter().all(|&p| one(p)),
            None => (0..n).all(&mut one),
        };
        finished.then_some(have)
    }

    /// Whether every piece set in `have` can be on disk: each file it spans exists and
    /// is long enough to hold the piece's bytes (pad and symlink files need nothing).
    /// Resume data claiming a piece whose data cannot be there is not to be trusted.
    pub fn can_hold(&self, have: &Bitfield) -> bool {
        let present = self.present_lengths();
        have.iter_set().all(|piece| {
            let Ok((off, len)) = self.checked_piece(piece) else {
                return false;
            };
            self.each_segment(off, len as usize, |k, file_off, range| {
                let need = file_off + range.len() as u64;
                if present[k] >= need {
                    Ok(())
                } else {
                    Err(StorageError::new(StorageErrorKind::Missing, None))
                }
            })
            .is_ok()
        })
    }

    /// Whether any regular file of the torrent exists with some data in it (when none
    /// does, there is nothing to check).
    pub fn has_data(&self) -> bool {
        self.present_lengths()
            .iter()
            .zip(&self.files)
            .any(|(&len, e)| e.kind == Kind::Regular && len > 0)
    }

    /// `fsync`s every file written since the last flush (reopening those whose handle
    /// was closed meanwhile). Files that fail stay due for the next flush.
    pub fn sync(&self) -> Result<(), StorageError> {
        if let Some(p) = &self.parts {
            let (file, text) = {
                let mut st = p.lock();
                if !st.dirty {
                    (None, None)
                } else {
                    st.dirty = false;
                    let text: String = st
                        .held
                        .iter()
                        .map(|(piece, f)| format!("{piece} {f}\n"))
                        .collect();
                    (st.file.clone(), Some(text))
                }
            };
            let res = file
                .map_or(Ok(()), |f| {
                    f.sync_data().map_err(|e| StorageError::io(&e, &p.path))
                })
                .and_then(|()| match text {
                    Some(t) => crate::os::write_atomic(&p.index, t.as_bytes())
                        .map_err(|e| StorageError::io(&e, &p.index)),
                    None => Ok(()),
                });
            if let Err(e) = res {
                p.lock().dirty = true;
                return Err(e);
            }
        }
        let dirty: Vec<usize> = std::mem::take(&mut self.lock().dirty).into_iter().collect();
        for (i, &k) in dirty.iter().enumerate() {
            let res = self.handle(k, false).and_then(|f| {
                f.sync_data()
                    .map_err(|e| StorageError::io(&e, &self.files[k].abs))
            });
            if let Err(e) = res {
                self.lock().dirty.extend(&dirty[i..]);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Closes every cached handle (I/O in flight keeps its own until it ends). Data not
    /// yet flushed stays due for the next [`Storage::sync`].
    pub fn close_all(&self) {
        self.lock().open.clear();
    }

    /// Number of handles currently cached.
    pub fn open_files(&self) -> usize {
        self.lock().open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let d = std::env::temp_dir()
                .join(format!("btcore-storage-unit-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).expect("scratch dir");
            Self(d)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Where the files of a torrent named `name` (one directory holding `f.bin`) go
    /// under `dir/save`, with the state directory at `dir/save/state`.
    fn laid_out(dir: &Path, state: &str, name: &str) -> Vec<String> {
        use btcore_core::metainfo::{Limits, Metainfo};
        let src = dir.join("src");
        fs::create_dir_all(&src).expect("src");
        fs::write(src.join("f.bin"), [1u8; 100]).expect("file");
        let t = crate::create::create_torrent(
            &src,
            &crate::create::CreateOptions {
                piece_length: Some(16 * 1024),
                creation_date: Some(0),
                name: Some(name.to_string()),
                ..crate::create::CreateOptions::default()
            },
        )
        .expect("torrent");
        let mut tokens = Vec::new();
        let m = Metainfo::parse_vec(&t, &mut tokens, &Limits::default()).expect("torrent");
        let save = dir.join("save");
        fs::create_dir_all(&save).expect("save");
        let config = StorageConfig {
            state_dir: Some(save.join(state)),
            ..StorageConfig::default()
        };
        let s = Storage::new(&save, m.layout().expect("layout"), m.geometry(), config)
            .expect("storage");
        s.files().map(|f| f.path.clone()).collect()
    }

    /// A name that a file system takes for the state directory's once it skips the
    /// code points it ignores (HFS+: U+200C, U+FEFF, ...) is the state directory's.
    #[test]
    fn ignorable_code_points_cannot_hide_the_state_dirs_name() {
        let dir = Scratch::new("ignorable");
        for (name, want) in [
            (".bt\u{200c}core", "_.btcore/f.bin"),
            ("\u{feff}.BTCORE\u{200f}", "_.BTCORE/f.bin"),
            (".btcore\u{200b}x", ".btcorex/f.bin"),
        ] {
            assert_eq!(laid_out(&dir.0, ".btcore", name), [want], "{name:?}");
        }
    }

    /// NTFS answers to the 8.3 short names it gives long names (`0123AB~1.RES` for
    /// `0123ab...ef.resume`, `BTCORE~1` for `.btcore`), so a torrent root of that
    /// shape could open a state file or the state directory: such roots are renamed
    /// whenever the state directory lies in the save directory.
    #[test]
    fn short_names_cannot_reach_the_state_files() {
        let dir = Scratch::new("short");
        for (state, name, want) in [
            (".", "0123AB~1.RES", "_0123AB~1.RES/f.bin"),
            (".", "0123a~12.res", "_0123a~12.res/f.bin"),
            (".", "A1B2~1.TMP", "_A1B2~1.TMP/f.bin"),
            (".", "DHT~1.STA", "_DHT~1.STA/f.bin"),
            (".", "DHT~1", "_DHT~1/f.bin"),
            (".btcore", "BTCORE~1", "_BTCORE~1/f.bin"),
            (".btcore", "btcore~2.", "_btcore~2/f.bin"),
            // Not a short name: kept.
            (".", "0123AB~X.RES", "0123AB~X.RES/f.bin"),
            (".", "0123ABCD~1.RES", "0123ABCD~1.RES/f.bin"),
            (".", "0123ab~12.res", "0123ab~12.res/f.bin"),
            (".", "0123AB~1.RESU", "0123AB~1.RESU/f.bin"),
            (".", "A~1.B.C", "A~1.B.C/f.bin"),
            (".", "~", "~/f.bin"),
        ] {
            assert_eq!(
                laid_out(&dir.0, state, name),
                [want],
                "state {state}, torrent {name:?}"
            );
        }
        // Outside the save directory the state directory needs no reserved name.
        let elsewhere = Scratch::new("short-elsewhere");
        assert_eq!(
            laid_out(&elsewhere.0, "../state", "BTCORE~1"),
            ["BTCORE~1/f.bin"]
        );
    }

    /// A v2-only and a hybrid torrent of three files (one under a piece, one of
    /// several pieces, one empty) are checked against their merkle trees: the data as
    /// made verifies; one changed byte fails its piece and only it; a hybrid piece
    /// whose SHA-1 in the torrent is wrong while its merkle root is right is a
    /// disagreement, not a mismatch; a hole where a file is missing is no piece.
    #[test]
    fn v2_pieces_verify_against_their_merkle_roots() {
        use btcore_core::metainfo::{Limits, Metainfo};
        let dir = Scratch::new("v2-verify");
        let src = dir.0.join("t");
        fs::create_dir_all(&src).expect("src");
        let mut rng = 0x1234_5678u64;
        let mut bytes = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng as u8
                })
                .collect()
        };
        fs::write(src.join("a.bin"), bytes(20_000)).expect("a");
        fs::write(src.join("b.bin"), bytes(200_000)).expect("b");
        fs::write(src.join("c.bin"), b"").expect("c");
        for format in [crate::create::Format::V2, crate::create::Format::Hybrid] {
            let t = crate::create::create_torrent(
                &src,
                &crate::create::CreateOptions {
                    piece_length: Some(32 * 1024),
                    creation_date: Some(0),
                    format,
                    ..crate::create::CreateOptions::default()
                },
            )
            .expect("torrent");
            let mut tokens = Vec::new();
            let m = Metainfo::parse_vec(&t, &mut tokens, &Limits::default()).expect("torrent");
            let expected = expected_hashes(&m);
            assert!(expected.iter().all(|e| e.merkle.is_some()), "{format:?}");
            assert_eq!(
                expected.iter().all(|e| e.sha1.is_some()),
                format == crate::create::Format::Hybrid
            );
            let s = Storage::new(
                &dir.0,
                m.layout().expect("layout"),
                m.geometry(),
                StorageConfig::default(),
            )
            .expect("storage");
            let n = m.num_pieces();
            let hashes = |p: u32| expected[p as usize];
            assert!(s.recheck(hashes).is_full(), "{format:?}: as made");
            // b.bin's second piece: pieces 0 (a.bin), 1.. (b.bin).
            let b = src.join("b.bin");
            let good = fs::read(&b).expect("b");
            let mut bad = good.clone();
            bad[40_000] ^= 1;
            fs::write(&b, &bad).expect("b");
            let have = s.recheck(hashes);
            let missing: Vec<u32> = (0..n).filter(|&p| !have.get(p)).collect();
            assert_eq!(missing, [2], "{format:?}: one changed byte");
            assert_eq!(
                s.verify_piece(2, &expected[2], None).expect("read"),
                Verdict::Mismatch
            );
            fs::write(&b, &good).expect("b");
            if format == crate::create::Format::Hybrid {
                let mut wrong = expected[2];
                if let Some(h) = wrong.sha1.as_mut() {
                    h[0] ^= 1;
                }
                assert_eq!(
                    s.verify_piece(2, &wrong, None).expect("read"),
                    Verdict::Disagree
                );
                let sha1 = s.hash_piece(2).expect("hash");
                assert_eq!(
                    s.verify_piece(2, &expected[2], Some(sha1)).expect("read"),
                    Verdict::Match
                );
            }
            let a = fs::read(src.join("a.bin")).expect("a");
            fs::remove_file(src.join("a.bin")).expect("a");
            let have = s.recheck(hashes);
            assert!(
                !have.get(0) && have.count() == n - 1,
                "{format:?}: a.bin gone"
            );
            fs::write(src.join("a.bin"), a).expect("a");
        }
    }

    #[test]
    fn full_disk_maps_to_no_space() {
        let full = io::Error::from(io::ErrorKind::StorageFull);
        assert_eq!(io_kind(&full), StorageErrorKind::NoSpace);
        #[cfg(unix)]
        assert_eq!(
            io_kind(&io::Error::from_raw_os_error(28)),
            StorageErrorKind::NoSpace
        );
        let other = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(
            io_kind(&other),
            StorageErrorKind::Io(io::ErrorKind::PermissionDenied)
        );
        let e = StorageError::io(&full, Path::new("x"));
        assert_eq!(e.to_core(), DiskError::NoSpace);
        assert_eq!(e.to_string(), "x: no space left on device");
        assert_eq!(
            StorageError::new(StorageErrorKind::Missing, None).to_core(),
            DiskError::Io
        );
    }
}
