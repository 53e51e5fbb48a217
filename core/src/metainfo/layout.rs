//! The files of a torrent as the host lays them out on disk (needs `alloc`): sanitized
//! relative paths, with no two files on the same path.
//!
//! Two files that sanitize to the same path (compared without ASCII case, as a NAS
//! exporting over SMB must), or a file whose path is another file's directory, are told
//! apart the way libtorrent does it: `name.ext` becomes `name.1.ext`, `name.2.ext`, ...
//! The renaming is bounded by [`LayoutLimits::max_duplicate_renames`] attempts in all, so
//! a torrent of a million same-named files costs bounded work and is refused.

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

fn lower(p: &str) -> Vec<u8> {
    p.bytes().map(|b| b.to_ascii_lowercase()).collect()
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
    pub fn layout_with(&self, limits: &LayoutLimits) -> Result<Vec<FileSpec>, MetainfoError> {
        let mut out = Vec::with_capacity(self.num_files() as usize);
        for f in self.files() {
            let path = if f.attr.pad {
                String::new()
            } else {
                joined(f.raw_path(), f.path.is_some())
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

        // Every directory is taken first, so no file can take a directory's path.
        let mut taken: BTreeSet<Vec<u8>> = BTreeSet::new();
        for spec in out.iter().filter(|s| !s.attr.pad) {
            let lc = lower(&spec.path);
            for (i, &b) in lc.iter().enumerate() {
                if b == b'/' {
                    taken.insert(lc[..i].to_vec());
                }
            }
        }
        let mut budget = limits.max_duplicate_renames;
        for spec in out.iter_mut().filter(|s| !s.attr.pad) {
            if taken.insert(lower(&spec.path)) {
                continue;
            }
            let (dir, file) = match spec.path.rfind('/') {
                Some(i) => spec.path.split_at(i + 1),
                None => ("", spec.path.as_str()),
            };
            let (stem, ext) = match file.rfind('.') {
                Some(i) if i > 0 => file.split_at(i),
                _ => (file, ""),
            };
            let mut n = 1u32;
            let renamed = loop {
                let candidate = alloc::format!("{dir}{stem}.{n}{ext}");
                if taken.insert(lower(&candidate)) {
                    break candidate;
                }
                budget = budget.checked_sub(1).ok_or(MetainfoError {
                    offset: self.info().value().span().start,
                    kind: ErrorKind::TooManyDuplicateFilenames,
                })?;
                n += 1;
            };
            budget = budget.checked_sub(1).ok_or(MetainfoError {
                offset: self.info().value().span().start,
                kind: ErrorKind::TooManyDuplicateFilenames,
            })?;
            spec.path = renamed;
        }
        Ok(out)
    }
}
