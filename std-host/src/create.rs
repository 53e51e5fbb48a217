//! Creating `.torrent` files (BEP 3 v1 metainfo, with BEP 12 `announce-list`, BEP 19
//! `url-list` and BEP 27 `private`).
//!
//! [`create_torrent`] turns a file into a single-file torrent and a directory into a
//! multi-file torrent, and returns the bencoded `.torrent` bytes.
//!
//! # What goes in
//!
//! - A directory is walked recursively. Regular files are included, empty ones and hidden
//!   ones (names starting with `.`) too. Symbolic links (to files or to directories) are
//!   skipped, as are special files (FIFOs, sockets, devices): a torrent carries only
//!   regular content, and not following links means no loops and nothing from outside the
//!   directory. The path given itself may be a link; it is followed.
//! - Files are ordered by their relative path, compared element by element as bytes, so
//!   the same tree always gives the same torrent whatever order the file system lists it.
//! - A directory with no regular file, or content of zero bytes in all, is refused with
//!   [`CreateError::Empty`]: a torrent must have at least one byte.
//! - File names must be UTF-8 (a torrent's paths are shown to people and sent as JSON);
//!   others are refused with [`CreateError::BadName`].
//!
//! # What comes out
//!
//! Canonical bencode: every dictionary's keys in sorted order. The info dictionary holds
//! `files` (each with `length` and `path`) or `length`, then `name`, `piece length`,
//! `pieces` and `private` (only when set). The top level holds `announce`,
//! `announce-list` (only when there is more than one tracker in all), `comment`,
//! `created by`, `creation date`, `info` and `url-list` (when there are web seeds).
//!
//! By default ([`Format::V1`]) pieces run contiguously across files, without BEP 47 pad
//! files, and only v1 metadata is written.
//!
//! [`Format::V2`] writes a BEP 52 v2-only torrent: `meta version` 2, the `file tree`
//! (each file's `length` and, unless empty, its `pieces root`) and, at the top level,
//! `piece layers` for every file larger than a piece. [`Format::Hybrid`] writes both, as
//! libtorrent 2.0 does: the v1 `files` list gets a BEP 47 pad file
//! (`attr` `p`, path `.pad/<length>`) after every non-empty file that does not end on a
//! piece boundary, the last one included, so that every file starts a piece in both
//! views; a single file needs no pad. A v2 or hybrid single-file torrent's `file tree`
//! holds the one file under the torrent's name.
//!
//! # Hashing
//!
//! The pieces are split into one contiguous range per worker thread
//! ([`CreateOptions::threads`]); each worker reads its byte range, which may span files,
//! with positioned reads into a reusable buffer of at most [`READ_BUFFER`] bytes and
//! hashes it with [`FastSha1`]. Memory use is bounded by `threads × READ_BUFFER` whatever
//! the piece length.

use crate::hash::FastSha1;
use btcore_core::bencode::Encoder;
use btcore_core::hash::Sha1;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Smallest piece length chosen automatically or accepted (16 KiB, one block).
pub const MIN_PIECE_LENGTH: u32 = 16 << 10;
/// Largest piece length chosen automatically (16 MiB).
pub const MAX_AUTO_PIECE_LENGTH: u32 = 16 << 20;
/// Largest piece length accepted when given explicitly (the parser's default limit).
pub const MAX_PIECE_LENGTH: u32 = 1 << 30;
/// Most pieces a torrent may have (libtorrent's `max_pieces`, the parser's limit).
pub const MAX_PIECES: u64 = 1 << 21;
/// Most files a torrent may have (the parser's limit).
pub const MAX_FILES: usize = 1_000_000;
/// Most elements in one file path (the parser's limit).
pub const MAX_PATH_DEPTH: usize = 64;
/// The piece count the automatic piece length aims at.
pub const TARGET_PIECES: u64 = 1500;
/// Largest read a hashing worker makes at once.
pub const READ_BUFFER: usize = 4 << 20;

/// Which metadata a created torrent carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// BEP 3 v1 only.
    #[default]
    V1,
    /// BEP 52 v2 only (clients without v2 cannot use it).
    V2,
    /// v1 and v2 (BEP 52 hybrid, with BEP 47 pad files).
    Hybrid,
}

/// How to create a torrent. `Default` gives a public torrent without trackers, with an
/// automatic piece length, the current time and one hashing thread per CPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Tracker tiers (BEP 12). The first tracker is also written as `announce`;
    /// `announce-list` is written only when there is more than one tracker in all.
    /// Empty URLs and empty tiers are dropped.
    pub trackers: Vec<Vec<String>>,
    /// Web seeds (BEP 19 `url-list`). Empty URLs are dropped.
    pub web_seeds: Vec<String>,
    /// BEP 27: peers use only the trackers (no DHT, PEX or local discovery).
    pub private: bool,
    /// Piece length in bytes: a power of two from [`MIN_PIECE_LENGTH`] to
    /// [`MAX_PIECE_LENGTH`]. `None` chooses with [`auto_piece_length`].
    pub piece_length: Option<u32>,
    /// `comment`.
    pub comment: Option<String>,
    /// `created by`; `None` writes `btcore <version>`.
    pub created_by: Option<String>,
    /// `creation date` in seconds since the Unix epoch; `None` writes the current time.
    /// Give a fixed value for reproducible output.
    pub creation_date: Option<i64>,
    /// Hashing threads; 0 uses [`std::thread::available_parallelism`].
    pub threads: usize,
    /// The torrent's name; `None` uses the file or directory name of the path.
    pub name: Option<String>,
    /// v1, v2 or hybrid.
    pub format: Format,
}

/// Why a torrent could not be created.
#[derive(Debug)]
#[non_exhaustive]
pub enum CreateError {
    /// Reading a file or directory failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// No regular file, or only empty ones: a torrent needs at least one byte.
    Empty(PathBuf),
    /// More pieces than [`MAX_PIECES`] even at the largest piece length allowed.
    TooLarge {
        /// Total content size in bytes.
        total: u64,
        /// The piece length that was tried.
        piece_length: u32,
    },
    /// More files than [`MAX_FILES`].
    TooManyFiles(usize),
    /// A name that cannot be used in a torrent: not UTF-8, empty, `.`, `..`, holding a
    /// `/` or NUL, or a path deeper than [`MAX_PATH_DEPTH`].
    BadName(PathBuf),
    /// An explicit piece length that is not a power of two in the allowed range.
    BadPieceLength(u32),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Empty(p) => write!(
                f,
                "{}: nothing to share (no regular files, or only empty ones)",
                p.display()
            ),
            Self::TooLarge {
                total,
                piece_length,
            } => write!(
                f,
                "{total} bytes need more than {MAX_PIECES} pieces of {piece_length} bytes"
            ),
            Self::TooManyFiles(n) => write!(f, "{n} files, more than the {MAX_FILES} allowed"),
            Self::BadName(p) => write!(
                f,
                "{}: unusable name in a torrent (not UTF-8, empty, '.', '..', or with '/' or NUL, or nested too deep)",
                p.display()
            ),
            Self::BadPieceLength(n) => write!(
                f,
                "piece length {n} is not a power of two from {MIN_PIECE_LENGTH} to {MAX_PIECE_LENGTH}"
            ),
        }
    }
}

impl std::error::Error for CreateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CreateError + '_ {
    move |source| CreateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The automatic piece length for `total` bytes: `total / TARGET_PIECES` (1500) rounded
/// up to a power of two, clamped to [`MIN_PIECE_LENGTH`]..=[`MAX_AUTO_PIECE_LENGTH`]
/// (16 KiB to 16 MiB). Between about 24 MiB and 24 GiB of content this gives 750 to
/// 1500 pieces; smaller content has fewer pieces of 16 KiB, larger content more pieces
/// of 16 MiB.
pub fn auto_piece_length(total: u64) -> u32 {
    let want = total.div_ceil(TARGET_PIECES).max(1);
    let pow = want
        .checked_next_power_of_two()
        .unwrap_or(u64::from(MAX_AUTO_PIECE_LENGTH));
    pow.clamp(
        u64::from(MIN_PIECE_LENGTH),
        u64::from(MAX_AUTO_PIECE_LENGTH),
    ) as u32
}

/// One file of the content.
#[derive(Debug)]
struct Source {
    /// Where to read it.
    disk: PathBuf,
    /// Path elements under the torrent's directory (empty for a single-file torrent).
    elems: Vec<String>,
    /// Byte offset in the content.
    offset: u64,
    length: u64,
    /// A BEP 47 pad file: zeros, read from nowhere.
    pad: bool,
}

/// Checks an element as it will be written in a torrent.
fn usable(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0'])
}

fn elem(name: &std::ffi::OsStr, disk: &Path) -> Result<String, CreateError> {
    match name.to_str() {
        Some(s) if usable(s) => Ok(s.to_owned()),
        _ => Err(CreateError::BadName(disk.to_path_buf())),
    }
}

/// Collects the regular files under `dir` (not following links).
fn walk(dir: &Path, prefix: &mut Vec<String>, out: &mut Vec<Source>) -> Result<(), CreateError> {
    let rd = fs::read_dir(dir).map_err(io_err(dir))?;
    for entry in rd {
        let entry = entry.map_err(io_err(dir))?;
        let disk = entry.path();
        let ft = entry.file_type().map_err(io_err(&disk))?;
        if ft.is_dir() {
            prefix.push(elem(&entry.file_name(), &disk)?);
            if prefix.len() >= MAX_PATH_DEPTH {
                return Err(CreateError::BadName(disk));
            }
            walk(&disk, prefix, out)?;
            prefix.pop();
        } else if ft.is_file() {
            let length = entry.metadata().map_err(io_err(&disk))?.len();
            let mut elems = prefix.clone();
            elems.push(elem(&entry.file_name(), &disk)?);
            out.push(Source {
                disk,
                elems,
                offset: 0,
                length,
                pad: false,
            });
            if out.len() > MAX_FILES {
                return Err(CreateError::TooManyFiles(out.len()));
            }
        }
        // Symbolic links and special files are skipped (see the module documentation).
    }
    Ok(())
}

/// Positioned read of exactly `buf.len()` bytes.
#[cfg(unix)]
fn read_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, offset)
}

/// Positioned read of exactly `buf.len()` bytes.
#[cfg(windows)]
fn read_at(f: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_read(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads content bytes, whichever files they lie in, keeping the last file open.
struct Reader<'a> {
    files: &'a [Source],
    open: Option<(usize, File)>,
}

impl Reader<'_> {
    fn read(&mut self, mut pos: u64, mut buf: &mut [u8]) -> Result<(), CreateError> {
        while !buf.is_empty() {
            // The first file ending after `pos` (empty files never do).
            let i = self.files.partition_point(|f| f.offset + f.length <= pos);
            let src = &self.files[i];
            if !src.pad && self.open.as_ref().map(|(j, _)| *j) != Some(i) {
                let f = File::open(&src.disk).map_err(io_err(&src.disk))?;
                self.open = Some((i, f));
            }
            let in_file = pos - src.offset;
            let n = (src.length - in_file).min(buf.len() as u64) as usize;
            let (head, rest) = buf.split_at_mut(n);
            if src.pad {
                head.fill(0);
                buf = rest;
                pos += n as u64;
                continue;
            }
            let Some((_, file)) = self.open.as_ref() else {
                unreachable!("opened above")
            };
            read_at(file, head, in_file).map_err(|e| {
                let e = if e.kind() == io::ErrorKind::UnexpectedEof {
                    io::Error::new(e.kind(), "file shrank while hashing")
                } else {
                    e
                };
                io_err(&src.disk)(e)
            })?;
            buf = rest;
            pos += n as u64;
        }
        Ok(())
    }
}

/// Progress shared by the workers: calls are serialized and the count never goes back.
struct Progress<'a> {
    done: Mutex<u64>,
    total: u64,
    cb: Option<&'a (dyn Fn(u64, u64) + Sync)>,
}

impl Progress<'_> {
    fn add(&self, n: u64) {
        if let Some(cb) = self.cb {
            let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
            *done += n;
            cb(*done, self.total);
        }
    }
}

/// Hashes pieces `first..first + out.len() / 20` into `out`.
fn hash_range(
    files: &[Source],
    total: u64,
    piece_len: u32,
    first: u64,
    out: &mut [u8],
    progress: &Progress<'_>,
    stop: &AtomicBool,
) -> Result<(), CreateError> {
    let pl = u64::from(piece_len);
    let start = first * pl;
    let end = ((first + (out.len() / 20) as u64) * pl).min(total);
    let mut buf = vec![0u8; (end - start).min(READ_BUFFER as u64) as usize];
    let mut reader = Reader { files, open: None };
    let mut hasher = FastSha1::default();
    let mut piece_left = (total - start).min(pl);
    let mut slots = out.chunks_exact_mut(20);
    let mut pos = start;
    while pos < end {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let n = (end - pos).min(buf.len() as u64) as usize;
        reader.read(pos, &mut buf[..n])?;
        let mut data = &buf[..n];
        while !data.is_empty() {
            let take = (piece_left.min(data.len() as u64)) as usize;
            hasher.update(&data[..take]);
            data = &data[take..];
            piece_left -= take as u64;
            if piece_left == 0 {
                let digest = std::mem::take(&mut hasher).finish();
                if let Some(slot) = slots.next() {
                    slot.copy_from_slice(&digest);
                }
                let piece_end = pos + n as u64 - data.len() as u64;
                piece_left = (total - piece_end).min(pl);
            }
        }
        pos += n as u64;
        progress.add(n as u64);
    }
    Ok(())
}

/// Hashes every piece with `threads` workers.
fn hash_pieces(
    files: &[Source],
    total: u64,
    piece_len: u32,
    threads: usize,
    cb: Option<&(dyn Fn(u64, u64) + Sync)>,
) -> Result<Vec<u8>, CreateError> {
    let num_pieces = total.div_ceil(u64::from(piece_len));
    let mut pieces = vec![0u8; num_pieces as usize * 20];
    let threads = threads.clamp(1, num_pieces as usize);
    let per = (num_pieces as usize).div_ceil(threads);
    let progress = Progress {
        done: Mutex::new(0),
        total,
        cb,
    };
    let stop = AtomicBool::new(false);
    if threads == 1 {
        hash_range(files, total, piece_len, 0, &mut pieces, &progress, &stop)?;
        return Ok(pieces);
    }
    let results: Vec<Result<(), CreateError>> = std::thread::scope(|s| {
        let handles: Vec<_> = pieces
            .chunks_mut(per * 20)
            .enumerate()
            .map(|(i, out)| {
                let (progress, stop) = (&progress, &stop);
                s.spawn(move || {
                    let r = hash_range(
                        files,
                        total,
                        piece_len,
                        (i * per) as u64,
                        out,
                        progress,
                        stop,
                    );
                    if r.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(pieces)
}

/// A file's v2 hashes.
#[derive(Debug)]
struct V2File {
    length: u64,
    root: Option<[u8; 32]>,
    /// The piece layer (empty for a file of one piece or less).
    layer: Vec<u8>,
}

/// Hashes every (non-pad) file into its merkle root and piece layer, one file after
/// the other with a buffer of at most [`READ_BUFFER`] bytes.
fn hash_v2(
    files: &[Source],
    piece_len: u32,
    cb: Option<&(dyn Fn(u64, u64) + Sync)>,
) -> Result<Vec<V2File>, CreateError> {
    use btcore_core::merkle::FileHasher;
    let total: u64 = files.iter().filter(|f| !f.pad).map(|f| f.length).sum();
    let mut done = 0u64;
    let mut buf = vec![0u8; READ_BUFFER.min(total as usize).max(1)];
    let mut out = Vec::new();
    for f in files.iter().filter(|f| !f.pad) {
        let mut h = FileHasher::new(piece_len);
        let mut layer = Vec::new();
        let file = if f.length > 0 {
            Some(File::open(&f.disk).map_err(io_err(&f.disk))?)
        } else {
            None
        };
        let mut pos = 0u64;
        while pos < f.length {
            let n = (f.length - pos).min(buf.len() as u64) as usize;
            if let Some(file) = &file {
                read_at(file, &mut buf[..n], pos).map_err(io_err(&f.disk))?;
            }
            h.update(&buf[..n], &mut |_, p| layer.extend_from_slice(&p));
            pos += n as u64;
            done += n as u64;
            if let Some(cb) = cb {
                cb(done, total);
            }
        }
        let root = h.finish(&mut |_, p| layer.extend_from_slice(&p));
        if f.length <= u64::from(piece_len) {
            layer.clear();
        }
        out.push(V2File {
            length: f.length,
            root,
            layer,
        });
    }
    Ok(out)
}

/// `{"": {"length": N, "pieces root": R}}` (no root for an empty file).
fn write_leaf(e: &mut Encoder<Vec<u8>>, f: &V2File) {
    w(e.dict());
    w(e.bytes(b""));
    w(e.dict());
    w(e.key_int(b"length", f.length as i64));
    if let Some(r) = &f.root {
        w(e.key_bytes(b"pieces root", r));
    }
    w(e.end());
    w(e.end());
}

/// The files under one directory of the `file tree` (sorted by path, so each
/// directory's files are neighbours and its keys come out in order).
fn write_tree(e: &mut Encoder<Vec<u8>>, files: &[(&Source, &V2File)], depth: usize) {
    w(e.dict());
    let mut i = 0;
    while i < files.len() {
        let key = &files[i].0.elems[depth];
        let mut j = i + 1;
        while j < files.len() && files[j].0.elems.get(depth) == Some(key) {
            j += 1;
        }
        w(e.bytes(key.as_bytes()));
        if files[i].0.elems.len() == depth + 1 {
            write_leaf(e, files[i].1);
        } else {
            write_tree(e, &files[i..j], depth + 1);
        }
        i = j;
    }
    w(e.end());
}

/// Writes a bencode token into a `Vec`, which cannot fail.
fn w(r: Result<(), std::convert::Infallible>) {
    let Ok(()) = r;
}

/// Creates a torrent from a file (single-file torrent) or a directory (multi-file
/// torrent) and returns the `.torrent` bytes. See the module documentation.
pub fn create_torrent(path: &Path, opts: &CreateOptions) -> Result<Vec<u8>, CreateError> {
    create_torrent_with_progress(path, opts, None)
}

/// [`create_torrent`], calling `progress(bytes_hashed, total_bytes)` as hashing goes on.
/// Calls come from the hashing threads, one at a time, with a count that only grows;
/// the last call has `bytes_hashed == total_bytes`.
pub fn create_torrent_with_progress(
    path: &Path,
    opts: &CreateOptions,
    progress: Option<&(dyn Fn(u64, u64) + Sync)>,
) -> Result<Vec<u8>, CreateError> {
    if let Some(n) = opts.piece_length {
        if !n.is_power_of_two() || !(MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(&n) {
            return Err(CreateError::BadPieceLength(n));
        }
    }
    let name = match &opts.name {
        Some(n) if usable(n) => n.clone(),
        Some(n) => return Err(CreateError::BadName(PathBuf::from(n))),
        None => {
            let own;
            let base = match path.file_name() {
                Some(b) => b,
                // `.`, `..` or `/`: name it after what it resolves to.
                None => {
                    own = fs::canonicalize(path).map_err(io_err(path))?;
                    own.file_name()
                        .ok_or_else(|| CreateError::BadName(path.to_path_buf()))?
                }
            };
            elem(base, path)?
        }
    };

    let meta = fs::metadata(path).map_err(io_err(path))?;
    let multi = meta.is_dir();
    let mut files = Vec::new();
    if multi {
        walk(path, &mut Vec::new(), &mut files)?;
        files.sort_by(|a, b| a.elems.cmp(&b.elems));
    } else if meta.is_file() {
        files.push(Source {
            disk: path.to_path_buf(),
            elems: Vec::new(),
            offset: 0,
            length: meta.len(),
            pad: false,
        });
    } else {
        return Err(io_err(path)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file or a directory",
        )));
    }
    let content: u64 = files.iter().map(|f| f.length).sum();
    if content == 0 {
        return Err(CreateError::Empty(path.to_path_buf()));
    }
    let piece_len = opts
        .piece_length
        .unwrap_or_else(|| auto_piece_length(content));
    if opts.format == Format::Hybrid && multi {
        // BEP 47 pads so that every file starts a piece (libtorrent 2.0's layout).
        let pl = u64::from(piece_len);
        let mut padded = Vec::with_capacity(files.len() * 2);
        for f in files {
            let pad = (pl - f.length % pl) % pl;
            padded.push(f);
            if pad > 0 {
                padded.push(Source {
                    disk: PathBuf::new(),
                    elems: vec![".pad".to_owned(), pad.to_string()],
                    offset: 0,
                    length: pad,
                    pad: true,
                });
            }
        }
        files = padded;
        if files.len() > MAX_FILES {
            return Err(CreateError::TooManyFiles(files.len()));
        }
    }
    let mut total = 0u64;
    for f in &mut files {
        f.offset = total;
        total = total
            .checked_add(f.length)
            .filter(|&t| t <= i64::MAX as u64)
            .ok_or(CreateError::TooLarge {
                total: u64::MAX,
                piece_length: MAX_PIECE_LENGTH,
            })?;
    }
    // v2 pieces: every file padded to a piece boundary.
    let v2_pieces: u64 = files
        .iter()
        .filter(|f| !f.pad)
        .map(|f| f.length.div_ceil(u64::from(piece_len)))
        .sum();
    if total.div_ceil(u64::from(piece_len)).max(v2_pieces) > MAX_PIECES {
        return Err(CreateError::TooLarge {
            total,
            piece_length: piece_len,
        });
    }

    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let (pieces, v2) = match opts.format {
        Format::V1 => (
            hash_pieces(&files, total, piece_len, threads, progress)?,
            None,
        ),
        Format::Hybrid => {
            let pieces = hash_pieces(&files, total, piece_len, threads, progress)?;
            (pieces, Some(hash_v2(&files, piece_len, None)?))
        }
        Format::V2 => (Vec::new(), Some(hash_v2(&files, piece_len, progress)?)),
    };

    let mut e = Encoder::new(Vec::with_capacity(pieces.len() + files.len() * 64 + 512));
    w(e.dict());
    let tiers: Vec<Vec<&str>> = opts
        .trackers
        .iter()
        .map(|t| {
            t.iter()
                .map(String::as_str)
                .filter(|u| !u.is_empty())
                .collect()
        })
        .filter(|t: &Vec<&str>| !t.is_empty())
        .collect();
    if let Some(first) = tiers.first().and_then(|t| t.first()) {
        w(e.key_bytes(b"announce", first.as_bytes()));
    }
    if tiers.iter().map(Vec::len).sum::<usize>() > 1 {
        w(e.bytes(b"announce-list"));
        w(e.list());
        for tier in &tiers {
            w(e.list());
            for url in tier {
                w(e.bytes(url.as_bytes()));
            }
            w(e.end());
        }
        w(e.end());
    }
    if let Some(c) = &opts.comment {
        w(e.key_bytes(b"comment", c.as_bytes()));
    }
    let created_by = opts
        .created_by
        .clone()
        .unwrap_or_else(|| format!("btcore {}", env!("CARGO_PKG_VERSION")));
    w(e.key_bytes(b"created by", created_by.as_bytes()));
    let date = opts.creation_date.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    });
    w(e.key_int(b"creation date", date));

    w(e.bytes(b"info"));
    w(e.dict());
    if let Some(v2) = &v2 {
        w(e.bytes(b"file tree"));
        let real: Vec<(&Source, &V2File)> = files.iter().filter(|f| !f.pad).zip(v2).collect();
        if multi {
            write_tree(&mut e, &real, 0);
        } else {
            w(e.dict());
            w(e.bytes(name.as_bytes()));
            write_leaf(&mut e, real[0].1);
            w(e.end());
        }
    }
    if multi && opts.format != Format::V2 {
        w(e.bytes(b"files"));
        w(e.list());
        for f in &files {
            w(e.dict());
            if f.pad {
                w(e.key_bytes(b"attr", b"p"));
            }
            w(e.key_int(b"length", f.length as i64));
            w(e.bytes(b"path"));
            w(e.list());
            for el in &f.elems {
                w(e.bytes(el.as_bytes()));
            }
            w(e.end());
            w(e.end());
        }
        w(e.end());
    } else if !multi && opts.format != Format::V2 {
        w(e.key_int(b"length", total as i64));
    }
    if v2.is_some() {
        w(e.key_int(b"meta version", 2));
    }
    w(e.key_bytes(b"name", name.as_bytes()));
    w(e.key_int(b"piece length", i64::from(piece_len)));
    if opts.format != Format::V2 {
        w(e.key_bytes(b"pieces", &pieces));
    }
    if opts.private {
        w(e.key_int(b"private", 1));
    }
    w(e.end());
    if let Some(v2) = &v2 {
        // One entry per distinct root of a file larger than a piece, keys sorted.
        let mut layers: Vec<(&[u8; 32], &[u8])> = v2
            .iter()
            .filter_map(|f| Some((f.root.as_ref()?, &f.layer[..])))
            .filter(|(_, l)| !l.is_empty())
            .collect();
        layers.sort_unstable_by_key(|(r, _)| *r);
        layers.dedup_by_key(|(r, _)| *r);
        w(e.bytes(b"piece layers"));
        w(e.dict());
        for (root, layer) in layers {
            w(e.key_bytes(root, layer));
        }
        w(e.end());
    }

    let seeds: Vec<&String> = opts.web_seeds.iter().filter(|u| !u.is_empty()).collect();
    if !seeds.is_empty() {
        w(e.bytes(b"url-list"));
        w(e.list());
        for u in seeds {
            w(e.bytes(u.as_bytes()));
        }
        w(e.end());
    }
    w(e.end());
    Ok(e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_piece_length_rule() {
        const K: u64 = 1 << 10;
        const M: u64 = 1 << 20;
        const G: u64 = 1 << 30;
        assert_eq!(auto_piece_length(0), MIN_PIECE_LENGTH);
        assert_eq!(auto_piece_length(1), MIN_PIECE_LENGTH);
        assert_eq!(auto_piece_length(1500 * 16 * K), 16 << 10);
        assert_eq!(auto_piece_length(1500 * 16 * K + 1), 32 << 10);
        assert_eq!(auto_piece_length(100 * M), 128 << 10);
        assert_eq!(auto_piece_length(700 * M), 512 << 10);
        assert_eq!(auto_piece_length(G), 1 << 20);
        assert_eq!(auto_piece_length(4 * G), 4 << 20);
        assert_eq!(auto_piece_length(24 * G), 16 << 20);
        assert_eq!(auto_piece_length(1 << 50), MAX_AUTO_PIECE_LENGTH);
        assert_eq!(auto_piece_length(u64::MAX), MAX_AUTO_PIECE_LENGTH);
        // Within the clamp, 750 < pieces <= 1500.
        for total in [30 * M, 100 * M, 700 * M, G, 3 * G + 17, 20 * G] {
            let pl = u64::from(auto_piece_length(total));
            let n = total.div_ceil(pl);
            assert!(pl.is_power_of_two());
            assert!((751..=1500).contains(&n), "{total}: {n} pieces of {pl}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(usable("a b.txt"));
        assert!(usable(".hidden"));
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(!usable(bad), "{bad:?}");
        }
    }

    #[test]
    fn errors_display() {
        let e = CreateError::Empty(PathBuf::from("/x"));
        assert!(e.to_string().starts_with("/x: nothing to share"));
        let e = CreateError::TooLarge {
            total: 5,
            piece_length: 16384,
        };
        assert!(e.to_string().contains("2097152 pieces"));
        assert!(CreateError::BadPieceLength(3).to_string().contains('3'));
    }
}
