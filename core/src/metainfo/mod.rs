//! The view of a `.torrent` file (BEP 3 metainfo; BEP 12 `announce-list`; BEP 19
//! `url-list`; BEP 27 `private`; BEP 47 pad files and attributes; the v1 part of BEP 52
//! hybrid torrents and v2-only torrents).
//!
//! [`Metainfo`] borrows a decoded [`Document`]: piece hashes are read in place and
//! nothing is copied or allocated. The info-hash is the SHA-1 of the raw bytes of the
//! `info` value exactly as they appear in the file.
//!
//! File paths go through [`path`]: every path element is sanitized so that no file can
//! land outside the download directory, and with the `alloc` feature
//! [`Metainfo::layout`] also guarantees that no two files map to the same path.
//!
//! BEP 52 (v2): the `file tree`, each file's `pieces root` and the `piece layers` are
//! checked (each layer hashes up to its root, see [`crate::merkle`]); the v2 info-hash
//! is the SHA-256 of the same raw `info` bytes ([`Metainfo::info_hash_v2`]). A v2-only
//! torrent (no v1 `pieces`) parses: its files come from the file tree, each starting on
//! a piece boundary with an implicit pad file after it, as libtorrent lists them. The
//! session cannot download v2-only torrents yet and refuses them with
//! [`ErrorKind::V2Only`]. A hybrid torrent is used through its v1 part, after checking
//! that its v2 file tree describes the same files.

pub mod path;
#[cfg(feature = "alloc")]
mod unicode;
#[cfg(feature = "alloc")]
mod unicode_tables;
mod v2;

#[cfg(feature = "alloc")]
mod layout;
#[cfg(feature = "alloc")]
pub use layout::{FileSpec, LayoutLimits};

use crate::bencode::{self, Dict, Document, List, Token, Value};
use crate::hash::{sha1, sha256};
use crate::ids::{Geometry, InfoHash, PieceIndex};
use core::fmt;
use v2::TreeSummary;

/// Bounds applied to a torrent file. Defaults follow libtorrent's `load_torrent_limits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bounds for the bencode layer.
    pub bencode: bencode::Limits,
    /// Most pieces. Default 2^21 (libtorrent's `max_pieces`).
    pub max_pieces: u32,
    /// Largest piece length. Default 1 GiB.
    pub max_piece_length: u32,
    /// Most files (pad files included). Default 1,000,000.
    pub max_files: u32,
    /// Most elements in one file path. Default 64.
    pub max_path_depth: u32,
    /// Most bytes of file paths in all: every file's path as laid out (the torrent's
    /// name, each element cut to 255 bytes, separators) and every symlink target
    /// added up, counted from the raw lengths before anything is allocated. It bounds
    /// what [`Metainfo::layout`] and a host's storage keep per file (the name is
    /// repeated in every path). Default 64 MiB.
    pub max_total_path_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            bencode: bencode::Limits::default(),
            max_pieces: 1 << 21,
            max_piece_length: 1 << 30,
            max_files: 1_000_000,
            max_path_depth: 64,
            max_total_path_bytes: 64 << 20,
        }
    }
}

/// Why a torrent file was refused, and where in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetainfoError {
    /// Byte offset in the file of the value at fault (or of the bencode error).
    pub offset: usize,
    /// The cause.
    pub kind: ErrorKind,
}

/// The cause of a [`MetainfoError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file is not valid bencode.
    Bencode(bencode::ErrorKind),
    /// The top level is not a dictionary.
    NotADict,
    /// `info` is missing or not a dictionary.
    MissingInfo,
    /// `name` is missing, not a string, or sanitizes to nothing.
    MissingName,
    /// A file's `path` (or `symlink path`) is not a list of strings.
    InvalidPath,
    /// A path has more elements than [`Limits::max_path_depth`].
    PathTooDeep,
    /// `piece length` is missing, not positive, or above [`Limits::max_piece_length`].
    InvalidPieceLength,
    /// `pieces` is missing or not a string.
    MissingPieces,
    /// `pieces` is not 20 bytes per piece of the content.
    InvalidHashes,
    /// A length is missing, negative or not an integer, or the total is zero or overflows.
    InvalidLength,
    /// `files` is an empty list.
    NoFiles,
    /// More files than [`Limits::max_files`].
    TooManyFiles,
    /// More pieces than [`Limits::max_pieces`].
    TooManyPieces,
    /// A hybrid torrent whose v2 `file tree` does not describe the v1 files.
    InconsistentFiles,
    /// A malformed v2 `file tree`.
    InvalidFileTree,
    /// A v2-only torrent where one is not supported (a C sans-IO host, which checks
    /// pieces by their SHA-1 alone).
    V2Only,
    /// A v2-only torrent file without the `piece layers` entry of a file larger than
    /// a piece: its pieces cannot be checked.
    MissingPieceLayer,
    /// A non-empty v2 file without a 32-byte, non-zero `pieces root`.
    MissingPiecesRoot,
    /// A `piece layers` entry that does not hash to its key, has the wrong number of
    /// hashes for its file, or belongs to no file larger than a piece.
    InvalidPieceLayer,
    /// A v2 `file tree` entry with the pad attribute (v2 pads are implicit).
    InvalidPadFile,
    /// Too many files with the same path to rename them all.
    TooManyDuplicateFilenames,
    /// The file paths add up to more than [`Limits::max_total_path_bytes`].
    PathsTooLong,
}

impl ErrorKind {
    /// A short description.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bencode(k) => k.as_str(),
            Self::NotADict => "torrent file is not a dictionary",
            Self::MissingInfo => "missing or invalid 'info' dictionary",
            Self::MissingName => "missing or invalid 'name'",
            Self::InvalidPath => "invalid file path",
            Self::PathTooDeep => "file path too deep",
            Self::InvalidPieceLength => "missing or invalid 'piece length'",
            Self::MissingPieces => "missing or invalid 'pieces'",
            Self::InvalidHashes => "wrong number of piece hashes",
            Self::InvalidLength => "invalid file length or total size",
            Self::NoFiles => "no files in torrent",
            Self::TooManyFiles => "too many files",
            Self::TooManyPieces => "too many pieces",
            Self::InconsistentFiles => "v1 and v2 file lists disagree",
            Self::InvalidFileTree => "invalid v2 'file tree'",
            Self::V2Only => "v2-only torrent (BEP 52): not supported by this host",
            Self::MissingPieceLayer => "a v2 file larger than a piece has no 'piece layers' entry",
            Self::MissingPiecesRoot => "a v2 file has no valid 'pieces root'",
            Self::InvalidPieceLayer => "invalid v2 'piece layers' entry",
            Self::InvalidPadFile => "a v2 file has the pad attribute",
            Self::TooManyDuplicateFilenames => "too many duplicate file names",
            Self::PathsTooLong => "file paths too long in all",
        }
    }
}

impl fmt::Display for MetainfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.kind.as_str(), self.offset)
    }
}

impl core::error::Error for MetainfoError {}

impl From<bencode::DecodeError> for MetainfoError {
    fn from(e: bencode::DecodeError) -> Self {
        Self {
            offset: e.offset,
            kind: ErrorKind::Bencode(e.kind),
        }
    }
}

fn fail<T>(v: Option<&Value<'_>>, kind: ErrorKind) -> Result<T, MetainfoError> {
    Err(MetainfoError {
        offset: v.map_or(0, |v| v.span().start),
        kind,
    })
}

/// BEP 47 file attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileAttr {
    /// `p`: a pad file; its bytes are zeros and are never written.
    pub pad: bool,
    /// `x`: executable.
    pub executable: bool,
    /// `h`: hidden.
    pub hidden: bool,
    /// `l`: a symbolic link (its length counts as zero).
    pub symlink: bool,
}

impl FileAttr {
    fn parse(s: &[u8]) -> Self {
        Self {
            pad: s.contains(&b'p'),
            executable: s.contains(&b'x'),
            hidden: s.contains(&b'h'),
            symlink: s.contains(&b'l'),
        }
    }
}

/// One file of the torrent.
#[derive(Clone, Copy, Debug)]
pub struct FileEntry<'a> {
    /// Index in the torrent's file list.
    pub index: u32,
    /// Byte offset of the file in the torrent's content.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// BEP 47 attributes.
    pub attr: FileAttr,
    name: NameRef<'a>,
    /// `path` list for multi-file torrents, `None` for a single-file torrent.
    path: Option<List<'a>>,
    symlink: Option<List<'a>>,
    tree: TreePath<'a>,
    root: Option<&'a [u8; 32]>,
}

/// The path of a v2 file: the token indices of its keys in the `file tree`.
#[derive(Clone, Copy, Debug)]
struct TreePath<'a> {
    base: Option<Value<'a>>,
    keys: [u32; 64],
    len: u8,
}

impl<'a> TreePath<'a> {
    const NONE: Self = Self {
        base: None,
        keys: [0; 64],
        len: 0,
    };
    fn elems(&self) -> impl Iterator<Item = &'a [u8]> + Clone + '_ {
        let base = self.base;
        self.keys[..usize::from(self.len)].iter().map(move |&i| {
            base.and_then(|b| b.at(i as usize).as_bytes())
                .unwrap_or_default()
        })
    }
}

impl<'a> FileEntry<'a> {
    /// The raw path elements: the torrent name first for a multi-file torrent, then the
    /// file's `path` list. Not sanitized: use [`FileEntry::write_path`] for disk paths.
    pub fn raw_path(&self) -> impl Iterator<Item = &[u8]> + Clone + '_ {
        // An empty `ListIter`, not `self.path.into_iter().flatten()`: that iterator
        // keeps the `None` of a single-file torrent, whose payload is uninitialised
        // bytes, and the optimised build compares those bytes (hoisted out of the loop)
        // and branches on the result before it tests the `None`. That is harmless, but
        // valgrind reports it, in every program that adds a single-file torrent.
        let rest = self
            .path
            .map_or_else(bencode::ListIter::empty, List::into_iter);
        core::iter::once(self.name.bytes())
            .chain(rest.map(|v| v.as_bytes().unwrap_or_default()))
            .chain(self.tree.elems())
    }

    /// Whether the file lies under the torrent's directory (a multi-file torrent).
    pub(crate) fn in_dir(&self) -> bool {
        self.path.is_some() || self.tree.len > 0
    }

    /// Writes the sanitized relative path (elements joined with `/`) into `out`.
    pub fn write_path<'o>(&self, out: &'o mut [u8]) -> Result<&'o str, path::PathError> {
        path::join_sanitized(self.raw_path(), self.in_dir(), out)
    }

    /// The v2 `pieces root` of this file (files listed by [`Metainfo::tree_files`] or of
    /// a v2-only torrent; `None` for empty files, symlinks and pad files).
    pub fn pieces_root(&self) -> Option<&'a [u8; 32]> {
        self.root
    }

    /// The raw target elements of a symlink (`symlink path`), if this is one.
    pub fn symlink_target(&self) -> Option<impl Iterator<Item = &'a [u8]> + Clone + 'a> {
        self.symlink
            .map(|l| l.into_iter().map(|v| v.as_bytes().unwrap_or_default()))
    }
}

/// The torrent's name: its own bytes, or its info-hash in hex when it has none usable.
#[derive(Clone, Copy, Debug)]
enum NameRef<'a> {
    Raw(&'a [u8]),
    Hex([u8; 40]),
}

impl<'a> NameRef<'a> {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Raw(b) => b,
            Self::Hex(h) => h,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Files<'a> {
    Single {
        length: u64,
    },
    Multi {
        list: List<'a>,
    },
    /// A v2 `file tree` (files in stored key order, implicit pads after them).
    Tree {
        tree: Dict<'a>,
        single: bool,
    },
}

/// Which BEP 52 metadata a torrent carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaVersion {
    /// v1 only (BEP 3).
    V1,
    /// v1 and v2 (a hybrid torrent).
    Hybrid,
    /// v2 only (BEP 52).
    V2,
}

/// A parsed torrent file.
#[derive(Clone, Copy, Debug)]
pub struct Metainfo<'a> {
    root: Dict<'a>,
    info: Dict<'a>,
    info_hash: InfoHash,
    name: NameRef<'a>,
    geometry: Geometry,
    pieces: &'a [u8],
    files: Files<'a>,
    num_files: u32,
    version: MetaVersion,
    info_hash_v2: Option<[u8; 32]>,
    tree: Option<(Dict<'a>, TreeSummary)>,
}

impl<'a> Metainfo<'a> {
    /// Decodes and checks a torrent file with the caller's token buffer (no allocator).
    pub fn parse(
        buf: &'a [u8],
        tokens: &'a mut [Token],
        limits: &Limits,
    ) -> Result<Self, MetainfoError> {
        let doc = bencode::decode(buf, tokens, &limits.bencode)?;
        Self::from_document(&doc, limits)
    }

    /// Decodes and checks a torrent file, growing `tokens` as needed.
    #[cfg(feature = "alloc")]
    pub fn parse_vec(
        buf: &'a [u8],
        tokens: &'a mut alloc::vec::Vec<Token>,
        limits: &Limits,
    ) -> Result<Self, MetainfoError> {
        let doc = bencode::decode_vec(buf, tokens, &limits.bencode)?;
        Self::from_document(&doc, limits)
    }

    /// Checks a decoded document.
    pub(crate) fn from_document(
        doc: &Document<'a>,
        limits: &Limits,
    ) -> Result<Self, MetainfoError> {
        let rootv = doc.root();
        let Some(root) = rootv.as_dict() else {
            return fail(Some(&rootv), ErrorKind::NotADict);
        };
        let Some(info) = root.get_dict(b"info") else {
            return fail(root.get(b"info").as_ref(), ErrorKind::MissingInfo);
        };
        let infov = info.value();
        let at = |k: &[u8]| info.get(k);

        // BEP 52: a v2-only torrent has `meta version` 2 and no v1 `pieces`.
        let v2 = info.get_int(b"meta version") == Some(2) || info.get(b"file tree").is_some();
        let v2_only = v2 && info.get(b"pieces").is_none();

        let raw_name = info
            .get_bytes(b"name.utf-8")
            .filter(|n| path::is_usable_name(n))
            .or_else(|| info.get_bytes(b"name"));
        let name = match raw_name {
            Some(n) if path::is_usable_name(n) => NameRef::Raw(n),
            // A multi-file torrent whose name sanitizes to nothing is named after its
            // info-hash (libtorrent does the same); a single file has no other name.
            Some(_) if info.get(b"files").is_some() => {
                NameRef::Hex(InfoHash(sha1(infov.raw())).to_hex())
            }
            Some(_) if v2_only => NameRef::Hex(truncated(&sha256(infov.raw())).to_hex()),
            _ => {
                return fail(
                    at(b"name").as_ref().or(Some(&infov)),
                    ErrorKind::MissingName,
                )
            }
        };

        let piece_length = match info.get_int(b"piece length") {
            Some(n) if n > 0 && n <= i64::from(limits.max_piece_length) => n as u32,
            _ => {
                return fail(
                    at(b"piece length").as_ref().or(Some(&infov)),
                    ErrorKind::InvalidPieceLength,
                )
            }
        };

        let tree = if v2 {
            Some(v2::check_tree(
                info,
                root,
                piece_length,
                name.bytes().len(),
                limits,
            )?)
        } else {
            None
        };
        let info_hash_v2 = v2.then(|| sha256(infov.raw()));
        if v2_only {
            let Some((tree_dict, sum)) = tree else {
                return fail(Some(&infov), ErrorKind::InvalidFileTree);
            };
            let geometry = match Geometry::new(sum.padded_total, piece_length) {
                Ok(g) if g.num_pieces() <= limits.max_pieces => g,
                _ => return fail(Some(&infov), ErrorKind::TooManyPieces),
            };
            let h2 = sha256(infov.raw());
            return Ok(Self {
                root,
                info,
                info_hash: truncated(&h2),
                name,
                geometry,
                pieces: &[],
                files: Files::Tree {
                    tree: tree_dict,
                    single: sum.single,
                },
                num_files: sum.files,
                version: MetaVersion::V2,
                info_hash_v2: Some(h2),
                tree,
            });
        }

        let (files, total, num_files) = match info.get(b"files") {
            Some(fv) => {
                let Some(list) = fv.as_list() else {
                    return fail(Some(&fv), ErrorKind::InvalidLength);
                };
                let (total, n) = check_files(list, name.bytes().len(), limits)?;
                (Files::Multi { list }, total, n)
            }
            None => {
                let lv = at(b"length");
                match lv.and_then(|v| v.as_int()) {
                    Some(n) if n >= 0 => (Files::Single { length: n as u64 }, n as u64, 1),
                    _ => return fail(lv.as_ref().or(Some(&infov)), ErrorKind::InvalidLength),
                }
            }
        };
        if total == 0 {
            return fail(Some(&infov), ErrorKind::InvalidLength);
        }

        let Some(piecesv) = at(b"pieces") else {
            return fail(Some(&infov), ErrorKind::MissingPieces);
        };
        let Some(pieces) = piecesv.as_bytes() else {
            return fail(Some(&piecesv), ErrorKind::MissingPieces);
        };
        let geometry = match Geometry::new(total, piece_length) {
            Ok(g) if g.num_pieces() <= limits.max_pieces => g,
            _ => return fail(Some(&piecesv), ErrorKind::TooManyPieces),
        };
        if pieces.len() % 20 != 0 || (pieces.len() / 20) as u64 != u64::from(geometry.num_pieces())
        {
            return fail(Some(&piecesv), ErrorKind::InvalidHashes);
        }

        let hybrid = v2;
        let me = Self {
            root,
            info,
            info_hash: InfoHash(sha1(infov.raw())),
            name,
            geometry,
            pieces,
            files,
            num_files,
            version: if hybrid {
                MetaVersion::Hybrid
            } else {
                MetaVersion::V1
            },
            info_hash_v2,
            tree,
        };
        if hybrid {
            v2::check_hybrid(&me, limits)?;
        }
        Ok(me)
    }

    /// The info-hash the swarm knows the torrent by (peer handshakes, trackers, DHT):
    /// the v1 info-hash, or for a v2-only torrent the v2 info-hash truncated to 20 bytes
    /// (BEP 52).
    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }
    /// The v1 info-hash (SHA-1 of the info bytes); `None` for a v2-only torrent.
    pub fn info_hash_v1(&self) -> Option<InfoHash> {
        (self.version != MetaVersion::V2).then_some(self.info_hash)
    }
    /// The v2 info-hash (SHA-256 of the info bytes) of a v2 or hybrid torrent.
    pub fn info_hash_v2(&self) -> Option<[u8; 32]> {
        self.info_hash_v2
    }
    /// The v2 info-hash truncated to 20 bytes (what v2 peers put in handshakes).
    pub fn info_hash_v2_truncated(&self) -> Option<InfoHash> {
        self.info_hash_v2.as_ref().map(truncated)
    }
    /// v1, hybrid or v2-only.
    pub fn meta_version(&self) -> MetaVersion {
        self.version
    }
    /// Whether this is a v2-only torrent (no v1 piece hashes: the engine cannot
    /// download it yet).
    pub fn is_v2_only(&self) -> bool {
        self.version == MetaVersion::V2
    }
    /// The v2 `piece layers` entry of a file's `pieces root` (concatenated 32-byte
    /// hashes, checked against the root), if the torrent carries it.
    pub fn piece_layer(&self, root: &[u8; 32]) -> Option<&'a [u8]> {
        self.root
            .get_dict(b"piece layers")?
            .iter()
            .find(|(k, _)| *k == root)?
            .1
            .as_bytes()
    }
    /// Number of entries in `piece layers`.
    pub fn num_piece_layers(&self) -> usize {
        self.root.get_dict(b"piece layers").map_or(0, |d| d.len())
    }
    /// The files of the v2 `file tree` of a v2 or hybrid torrent, in stored key order,
    /// each starting on a piece boundary with an implicit pad file after it (the
    /// offsets are those of the v2 pieces; for a hybrid they equal the v1 ones).
    pub fn tree_files(&self) -> Option<FileIter<'a>> {
        let (tree, sum) = self.tree?;
        Some(FileIter::new(
            self.name,
            Files::Tree {
                tree,
                single: sum.single,
            },
            self.geometry.piece_len(),
        ))
    }
    /// The raw bytes of the `info` dictionary (what the info-hash is computed over, and
    /// what `ut_metadata` serves).
    pub fn info_bytes(&self) -> &'a [u8] {
        self.info.value().raw()
    }
    /// The `info` dictionary.
    pub fn info(&self) -> Dict<'a> {
        self.info
    }
    /// The top-level dictionary.
    pub fn root(&self) -> Dict<'a> {
        self.root
    }
    /// The raw torrent name (`name.utf-8` when present; the info-hash in hex for a
    /// multi-file torrent whose name is unusable). See [`path`] for a safe form.
    pub fn name(&self) -> &[u8] {
        self.name.bytes()
    }
    /// Piece and block arithmetic.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }
    /// Nominal piece length.
    pub fn piece_length(&self) -> u32 {
        self.geometry.piece_len()
    }
    /// Number of pieces.
    pub fn num_pieces(&self) -> u32 {
        self.geometry.num_pieces()
    }
    /// Total bytes, pad files included.
    pub fn total_size(&self) -> u64 {
        self.geometry.total_len()
    }
    /// The SHA-1 of a piece, read in place.
    pub fn piece_hash(&self, piece: PieceIndex) -> Option<&'a [u8; 20]> {
        let start = piece.get().checked_mul(20)?;
        self.pieces.get(start..start + 20)?.try_into().ok()
    }
    /// Whether this is a multi-file torrent (files live under a directory named
    /// [`Metainfo::name`]).
    pub fn is_multi_file(&self) -> bool {
        match self.files {
            Files::Multi { .. } => true,
            Files::Single { .. } => false,
            Files::Tree { single, .. } => !single,
        }
    }
    /// Number of files, pad files included.
    pub fn num_files(&self) -> u32 {
        self.num_files
    }
    /// Whether the torrent carries both v1 and BEP 52 v2 metadata.
    pub fn is_hybrid(&self) -> bool {
        self.version == MetaVersion::Hybrid
    }
    /// BEP 27: a private torrent uses only its trackers (no DHT, PEX or LSD).
    pub fn is_private(&self) -> bool {
        self.info.get_int(b"private") == Some(1)
    }
    /// The files in order, with their offsets.
    pub fn files(&self) -> FileIter<'a> {
        FileIter::new(self.name, self.files, self.geometry.piece_len())
    }
    /// `announce`: the main tracker.
    pub fn announce(&self) -> Option<&'a [u8]> {
        self.root.get_bytes(b"announce").filter(|s| !s.is_empty())
    }
    /// BEP 12 `announce-list`: tiers of tracker URLs (non-string entries are skipped).
    pub fn announce_tiers(&self) -> impl Iterator<Item = impl Iterator<Item = &'a [u8]>> + 'a {
        self.root
            .get_list(b"announce-list")
            .into_iter()
            .flatten()
            .filter_map(|tier| tier.as_list())
            .map(|tier| {
                tier.into_iter()
                    .filter_map(|u| u.as_bytes())
                    .filter(|u| !u.is_empty())
            })
    }
    /// Every tracker URL: the `announce-list` tiers when present (BEP 12 says to ignore
    /// `announce` then), otherwise `announce`.
    pub fn trackers(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let tiers = self.announce_tiers().flatten();
        let has_list = self.announce_tiers().flatten().next().is_some();
        let single = if has_list { None } else { self.announce() };
        tiers.chain(single)
    }
    /// BEP 19 `url-list` web seeds (a single string or a list).
    pub fn url_list(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let v = self.root.get(b"url-list");
        let single = v.and_then(|v| v.as_bytes());
        let list = v.and_then(|v| v.as_list());
        single
            .into_iter()
            .chain(list.into_iter().flatten().filter_map(|u| u.as_bytes()))
            .filter(|u| !u.is_empty())
    }
    /// `creation date` in seconds since the Unix epoch.
    pub fn creation_date(&self) -> Option<i64> {
        self.root.get_int(b"creation date")
    }
    /// `comment`.
    pub fn comment(&self) -> Option<&'a [u8]> {
        self.root
            .get_bytes(b"comment.utf-8")
            .or_else(|| self.root.get_bytes(b"comment"))
    }
    /// `created by`.
    pub fn created_by(&self) -> Option<&'a [u8]> {
        self.root.get_bytes(b"created by")
    }
}

fn file_length(f: &Dict<'_>, attr: FileAttr) -> Result<u64, MetainfoError> {
    let lv = f.get(b"length");
    match lv.as_ref().and_then(Value::as_int) {
        Some(n) if n >= 0 => Ok(if attr.symlink { 0 } else { n as u64 }),
        None if attr.symlink && lv.is_none() => Ok(0),
        _ => fail(lv.as_ref().or(Some(&f.value())), ErrorKind::InvalidLength),
    }
}

/// Checks a `path` (or `symlink path`) list; returns the most bytes it can take once
/// sanitized, separators included.
fn check_path_list(
    l: Option<Value<'_>>,
    limits: &Limits,
    fv: &Value<'_>,
) -> Result<u64, MetainfoError> {
    let Some(lv) = l else {
        return fail(Some(fv), ErrorKind::MissingName);
    };
    let Some(list) = lv.as_list() else {
        return fail(Some(&lv), ErrorKind::InvalidPath);
    };
    if list.len() > limits.max_path_depth as usize {
        return fail(Some(&lv), ErrorKind::PathTooDeep);
    }
    let mut bytes = 0u64;
    for e in list.iter() {
        let Some(b) = e.as_bytes() else {
            return fail(Some(&e), ErrorKind::InvalidPath);
        };
        bytes += b.len().min(path::MAX_ELEMENT_LEN) as u64 + 1;
    }
    Ok(bytes)
}

/// Checks every entry of a multi-file `files` list; returns the total size and count.
fn check_files(
    list: List<'_>,
    name_len: usize,
    limits: &Limits,
) -> Result<(u64, u32), MetainfoError> {
    if list.is_empty() {
        return fail(Some(&list.value()), ErrorKind::NoFiles);
    }
    if list.len() > limits.max_files as usize {
        return fail(Some(&list.value()), ErrorKind::TooManyFiles);
    }
    // Every path starts with the name; a `_` leaf may be added (see `path`).
    let root = name_len.min(path::MAX_ELEMENT_LEN) as u64 + 2;
    let mut total: u64 = 0;
    let mut path_bytes: u64 = 0;
    for fv in list.iter() {
        let Some(f) = fv.as_dict() else {
            return fail(Some(&fv), ErrorKind::InvalidLength);
        };
        let attr = FileAttr::parse(f.get_bytes(b"attr").unwrap_or_default());
        let len = file_length(&f, attr)?;
        let path = f.get(b"path.utf-8").or_else(|| f.get(b"path"));
        if !(attr.pad && path.is_none()) {
            path_bytes += root + check_path_list(path, limits, &fv)?;
        }
        if attr.symlink {
            path_bytes +=
                2 + check_path_list(f.get(b"symlink path"), limits, &fv).map_err(|e| {
                    MetainfoError {
                        kind: ErrorKind::InvalidPath,
                        ..e
                    }
                })?;
        }
        if path_bytes > limits.max_total_path_bytes {
            return fail(Some(&fv), ErrorKind::PathsTooLong);
        }
        total = match total.checked_add(len) {
            Some(t) if t <= i64::MAX as u64 => t,
            _ => return fail(Some(&fv), ErrorKind::InvalidLength),
        };
    }
    Ok((total, list.len() as u32))
}

/// The v2 info-hash truncated to 20 bytes.
fn truncated(h: &[u8; 32]) -> InfoHash {
    let mut t = [0u8; 20];
    t.copy_from_slice(&h[..20]);
    InfoHash(t)
}

/// Iterator over a torrent's files.
#[derive(Clone, Debug)]
pub struct FileIter<'a> {
    name: NameRef<'a>,
    files: Files<'a>,
    list: bencode::ListIter<'a>,
    index: u32,
    offset: u64,
    done: bool,
    /// The v2 walk: the open directories (their key's token index and iterator).
    stack: heapless::Vec<(u32, bencode::DictIter<'a>), 64>,
    piece_len: u32,
    /// The implicit pad after the last v2 file.
    pad: u64,
}

impl<'a> FileIter<'a> {
    fn new(name: NameRef<'a>, files: Files<'a>, piece_len: u32) -> Self {
        let mut stack = heapless::Vec::new();
        if let Files::Tree { tree, .. } = files {
            let _ = stack.push((u32::MAX, tree.iter()));
        }
        Self {
            name,
            files,
            // Fully initialised for a single file too (see `FileEntry::raw_path`).
            list: match files {
                Files::Multi { list } => list.into_iter(),
                Files::Single { .. } | Files::Tree { .. } => bencode::ListIter::empty(),
            },
            index: 0,
            offset: 0,
            done: false,
            stack,
            piece_len,
            pad: 0,
        }
    }

    /// The next file of a v2 tree (checked by `v2::check_tree`).
    fn next_tree(&mut self, single: bool) -> Option<FileEntry<'a>> {
        let pad = core::mem::take(&mut self.pad);
        if pad > 0 {
            return Some(FileEntry {
                index: self.index,
                offset: self.offset,
                length: pad,
                attr: FileAttr {
                    pad: true,
                    ..FileAttr::default()
                },
                name: self.name,
                path: None,
                symlink: None,
                tree: TreePath::NONE,
                root: None,
            });
        }
        loop {
            let (_, it) = self.stack.last_mut()?;
            let Some((k, node)) = it.next_entry() else {
                self.stack.pop();
                continue;
            };
            let node = node.as_dict()?;
            match node.get(b"") {
                Some(leaf) => {
                    let d = leaf.as_dict()?;
                    let l = v2::leaf(&d).ok()?;
                    let mut tree = TreePath {
                        base: Some(k),
                        ..TreePath::NONE
                    };
                    let keys = self.stack.iter().skip(1).map(|e| e.0);
                    for (slot, key) in tree.keys.iter_mut().zip(keys.chain([k.index() as u32])) {
                        *slot = key;
                        tree.len += 1;
                    }
                    if single {
                        tree = TreePath::NONE;
                    }
                    let pl = u64::from(self.piece_len.max(1));
                    self.pad = (pl - l.length % pl) % pl;
                    return Some(FileEntry {
                        index: self.index,
                        offset: self.offset,
                        length: l.length,
                        attr: l.attr,
                        name: self.name,
                        path: None,
                        symlink: if l.attr.symlink {
                            d.get_list(b"symlink path")
                        } else {
                            None
                        },
                        tree,
                        root: l.root,
                    });
                }
                None => {
                    self.stack.push((k.index() as u32, node.iter())).ok()?;
                }
            }
        }
    }
}

impl<'a> Iterator for FileIter<'a> {
    type Item = FileEntry<'a>;
    fn next(&mut self) -> Option<FileEntry<'a>> {
        if self.done {
            return None;
        }
        let entry = match self.files {
            Files::Tree { single, .. } => self.next_tree(single)?,
            Files::Single { length } => {
                self.done = true;
                FileEntry {
                    index: 0,
                    offset: 0,
                    length,
                    attr: FileAttr::default(),
                    name: self.name,
                    path: None,
                    symlink: None,
                    tree: TreePath::NONE,
                    root: None,
                }
            }
            Files::Multi { .. } => {
                // Checked by `check_files`: dictionaries with valid lengths and paths.
                let f = self.list.next()?.as_dict()?;
                let attr = FileAttr::parse(f.get_bytes(b"attr").unwrap_or_default());
                let length = file_length(&f, attr).ok()?;
                let path = f.get_list(b"path.utf-8").or_else(|| f.get_list(b"path"));
                FileEntry {
                    index: self.index,
                    offset: self.offset,
                    length,
                    attr,
                    name: self.name,
                    path,
                    symlink: if attr.symlink {
                        f.get_list(b"symlink path")
                    } else {
                        None
                    },
                    tree: TreePath::NONE,
                    root: None,
                }
            }
        };
        self.index += 1;
        self.offset += entry.length;
        Some(entry)
    }
}

#[cfg(test)]
mod tests;
