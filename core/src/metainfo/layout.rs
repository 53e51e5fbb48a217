//! The files of a torrent as the host lays them out on disk (needs `alloc`): sanitized
//! relative paths, with no two files on the same path.
//!
//! Two names are the same file when a case-insensitive, normalization-insensitive file
//! system would take them for one (Windows, SMB, macOS, ext4 with casefolding): their
//! [`path::push_name_key`] keys match (Unicode case folding and NFD). Sanitizing has
//! already removed what such systems ignore (trailing dots and spaces, default-ignorable
//! code points) and renamed device names. Two files on the same path, or a file on
//! another file's directory, are told apart the way libtorrent does it: the first
//! keeps its name and `name.ext` becomes `name.1.ext`, `name.2.ext`, ... in file order.
//! The renaming is bounded by [`LayoutLimits::max_duplicate_renames`] attempts in all,
//! so a torrent of a million same-named files costs bounded work and is refused with
//! [`ErrorKind::TooManyDuplicateFilenames`].
//!
//! # Cost
//!
//! Linear in the paths: one key per file (the folded path below the torrent's root,
//! its elements separated by a zero byte) in one buffer, and an index sorted by key.
//! In that order the files on one path are neighbours, and a path that is also a
//! directory is followed by the paths under it, so the checks are a scan and a
//! binary search; no set of every directory prefix is built (that costs the square of
//! the depth: 279 MiB for an 8 MiB torrent of 64-deep paths). The total length of the
//! paths is bounded beforehand by [`super::Limits::max_total_path_bytes`].

use super::{path, ErrorKind, FileAttr, Metainfo, MetainfoError};
use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;

/// Bounds on laying out files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutLimits {
    /// Rename attempts allowed in all (libtorrent's `max_duplicate_filenames`). Default 1000.
    pub max_duplicate_renames: u32,
}

impl Default for LayoutLimits {
    fn default() -> Self {
        Self {
            max_duplicate_renames: 1000,
        }
    }
}

/// One file as the host creates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// Index in the torrent's file list.
    pub index: u32,
    /// Relative path under the download directory, `/`-separated, sanitized and unique.
    /// Empty for pad files, which are never written.
    pub path: String,
    /// Byte offset in the torrent's content.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// BEP 47 attributes.
    pub attr: FileAttr,
    /// A symlink's sanitized target, relative to the torrent's root directory.
    pub symlink_target: Option<String>,
}

fn joined<'a>(elems: impl Iterator<Item = &'a [u8]> + Clone, leaf: bool) -> String {
    let cap = elems
        .clone()
        .map(|e| e.len().min(path::MAX_ELEMENT_LEN) + 2)
        .sum::<usize>()
        + 4;
    let mut buf = alloc::vec![0u8; cap];
    // `cap` covers every element at its longest plus separators, so this cannot fail.
    String::from(path::join_sanitized(elems, leaf, &mut buf).unwrap_or("_"))
}

impl Metainfo<'_> {
    /// The files with unique sanitized paths, under default limits.
    pub fn layout(&self) -> Result<Vec<FileSpec>, MetainfoError> {
        self.layout_with(&LayoutLimits::default())
    }

    /// The files with unique sanitized paths.
    pub(crate) fn layout_with(
        &self,
        limits: &LayoutLimits,
    ) -> Result<Vec<FileSpec>, MetainfoError> {
        let mut out = Vec::with_capacity(self.num_files() as usize);
        for f in self.files() {
            let path = if f.attr.pad {
                String::new()
            } else {
                joined(f.raw_path(), f.in_dir())
            };
            let symlink_target = f.symlink_target().map(|t| joined(t, false));
            out.push(FileSpec {
                index: f.index,
                path,
                offset: f.offset,
                length: f.length,
                attr: f.attr,
                symlink_target,
            });
        }
        // A single file is alone under its name.
        if self.is_multi_file() {
            Dedup::new(&out)
                .and_then(|d| d.rename(&mut out, limits))
                .map_err(|kind| MetainfoError {
                    offset: self.info().value().span().start,
                    kind,
                })?;
        }
        Ok(out)
    }
}

/// The files' keys and their order (see the module docs).
struct Dedup {
    /// Every key, one after the other.
    keys: Vec<u8>,
    /// Where each file's key is in `keys` (pad files: empty, and not in `order`).
    spans: Vec<(u32, u32)>,
    /// The files that have a path, by key then index.
    order: Vec<u32>,
}

/// Appends the key of `path` below its first element (the torrent's root, which every
/// file shares).
fn push_key(path: &str, out: &mut Vec<u8>) {
    for (i, elem) in path.split('/').skip(1).enumerate() {
        if i > 0 {
            out.push(0);
        }
        path::push_name_key(elem, out);
    }
}

/// Whether `key` is `dir` or lies under it.
fn under(key: &[u8], dir: &[u8]) -> bool {
    key.strip_prefix(dir)
        .is_some_and(|rest| rest.first().is_none_or(|&b| b == 0))
}

impl Dedup {
    fn new(files: &[FileSpec]) -> Result<Self, ErrorKind> {
        let total: usize = files.iter().map(|f| f.path.len()).sum();
        let mut keys = Vec::with_capacity(total);
        let mut spans = Vec::with_capacity(files.len());
        let mut order = Vec::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            let start = keys.len();
            if !f.attr.pad {
                push_key(&f.path, &mut keys);
                order.push(i as u32);
            }
            let span = u32::try_from(start)
                .ok()
                .zip(u32::try_from(keys.len() - start).ok())
                .ok_or(ErrorKind::PathsTooLong)?;
            spans.push(span);
        }
        let mut me = Self { keys, spans, order };
        let mut order = core::mem::take(&mut me.order);
        order.sort_unstable_by(|&a, &b| me.key(a).cmp(me.key(b)).then(a.cmp(&b)));
        me.order = order;
        Ok(me)
    }

    fn key(&self, file: u32) -> &[u8] {
        let (start, len) = self.spans[file as usize];
        &self.keys[start as usize..(start + len) as usize]
    }

    /// Whether a file of the torrent has the key `k`, or lies under it.
    fn taken(&self, k: &[u8]) -> bool {
        let at = self.order.partition_point(|&f| self.key(f) < k);
        self.order.get(at).is_some_and(|&f| under(self.key(f), k))
    }

    /// The files to rename, in file order: every file after the first on one path,
    /// and every file on another file's directory.
    fn clashes(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.order.len() {
            let k = self.key(self.order[i]);
            let mut j = i + 1;
            while j < self.order.len() && self.key(self.order[j]) == k {
                j += 1;
            }
            let is_dir = self
                .order
                .get(j)
                .is_some_and(|&next| under(self.key(next), k));
            out.extend_from_slice(&self.order[if is_dir { i } else { i + 1 }..j]);
            i = j;
        }
        out.sort_unstable();
        out
    }

    fn rename(self, files: &mut [FileSpec], limits: &LayoutLimits) -> Result<(), ErrorKind> {
        let mut budget = limits.max_duplicate_renames;
        let mut spend = || {
            budget = budget
                .checked_sub(1)
                .ok_or(ErrorKind::TooManyDuplicateFilenames)?;
            Ok::<(), ErrorKind>(())
        };
        // Keys given by renaming (a few: each cost the budget).
        let mut given: BTreeSet<Vec<u8>> = BTreeSet::new();
        for i in self.clashes() {
            let spec = &mut files[i as usize];
            let key = self.key(i);
            let parent = &key[..key.iter().rposition(|&b| b == 0).map_or(0, |p| p + 1)];
            let (dir, file) = spec
                .path
                .split_at(spec.path.rfind('/').map_or(0, |p| p + 1));
            let (stem, ext) = match file.rfind('.') {
                Some(p) if p > 0 => file.split_at(p),
                _ => (file, ""),
            };
            let mut n = 1u32;
            let renamed = loop {
                let leaf = numbered(stem, n, ext);
                let mut cand = parent.to_vec();
                path::push_name_key(&leaf, &mut cand);
                if !self.taken(&cand) && !given.contains(&cand) {
                    given.insert(cand);
                    break alloc::format!("{dir}{leaf}");
                }
                spend()?;
                n += 1;
            };
            spend()?;
            spec.path = renamed;
        }
        Ok(())
    }
}

/// `stem.N.ext`, sanitized (shortened to a file name's length, the stem first).
fn numbered(stem: &str, n: u32, ext: &str) -> String {
    let num = alloc::format!(".{n}");
    let room = path::MAX_ELEMENT_LEN.saturating_sub(num.len() + ext.len());
    let mut cut = stem.len().min(room);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    let raw = alloc::format!("{}{num}{ext}", &stem[..cut]);
    let mut buf = [0u8; path::MAX_ELEMENT_LEN + 1];
    String::from(path::sanitize_element(raw.as_bytes(), &mut buf).unwrap_or("_"))
}
