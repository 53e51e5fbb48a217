//! BEP 52 (v2) metainfo: the `file tree`, per-file `pieces root`, the top-level
//! `piece layers`, and for hybrid torrents the check that the v2 `file tree` describes
//! exactly the files of the v1 `files` list, each v2 file starting on a piece boundary
//! (a BEP 47 pad file after every file that does not end on one). Two disagreeing lists
//! would let v1 and v2 peers see different content.
//!
//! In v2 every file starts on a piece boundary: the files are laid end to end with an
//! implicit pad after each one that does not end on a boundary (the last one too, as
//! libtorrent counts them), so the torrent's pieces are `sum(round_up(length))` bytes.

use super::{fail, path, ErrorKind, Files, Limits, Metainfo, MetainfoError};
use crate::bencode::{Dict, Value};
use crate::merkle;

type PathStack<'a> = heapless::Vec<&'a [u8], 64>;
type Visit<'v, 'a> = dyn FnMut(&[&'a [u8]], Dict<'a>, &Value<'a>) -> Result<(), MetainfoError> + 'v;

/// Calls `f(path, leaf, value)` for every file of a v2 `file tree` (`leaf` is the file's
/// `""` dictionary), depth first in key order (which must be sorted).
fn walk<'a>(
    dir: Dict<'a>,
    path: &mut PathStack<'a>,
    max_depth: usize,
    f: &mut Visit<'_, 'a>,
) -> Result<(), MetainfoError> {
    let mut prev: Option<&[u8]> = None;
    for (name, node) in dir.iter() {
        let Some(node) = node.as_dict() else {
            return fail(Some(&node.clone()), ErrorKind::InvalidFileTree);
        };
        // The file order is the key order: unsorted keys would let two clients see two
        // orders (libtorrent refuses them too).
        if prev.is_some_and(|p| p >= name) {
            return fail(Some(&node.value()), ErrorKind::InvalidFileTree);
        }
        prev = Some(name);
        if path.len() >= max_depth || path.push(name).is_err() {
            return fail(Some(&node.value()), ErrorKind::PathTooDeep);
        }
        if name.is_empty() {
            return fail(Some(&node.value()), ErrorKind::InvalidFileTree);
        }
        match node.get(b"") {
            Some(leaf) => {
                let Some(d) = leaf.as_dict() else {
                    return fail(Some(&leaf), ErrorKind::InvalidFileTree);
                };
                if node.len() != 1 {
                    return fail(Some(&node.value()), ErrorKind::InvalidFileTree);
                }
                f(path, d, &leaf)?;
            }
            None if node.is_empty() => {
                return fail(Some(&node.value()), ErrorKind::InvalidFileTree);
            }
            None => walk(node, path, max_depth, f)?,
        }
        path.pop();
    }
    Ok(())
}

/// One file of the tree as the checks see it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Leaf<'a> {
    /// Length in bytes (0 for a symlink).
    pub length: u64,
    /// `pieces root` (absent for an empty file or a symlink).
    pub root: Option<&'a [u8; 32]>,
    /// BEP 47 attributes.
    pub attr: super::FileAttr,
}

/// Reads a leaf's fields (checked by [`check_tree`] before).
pub(super) fn leaf<'a>(d: &Dict<'a>) -> Result<Leaf<'a>, ErrorKind> {
    let attr = super::FileAttr::parse(d.get_bytes(b"attr").unwrap_or_default());
    if attr.pad {
        return Err(ErrorKind::InvalidPadFile);
    }
    let symlink = attr.symlink
        && d.get_list(b"symlink path")
            .is_some_and(|l| l.iter().all(|e| e.as_bytes().is_some()));
    let length = match d.get_int(b"length") {
        Some(n) if n >= 0 => n as u64,
        None if symlink => 0,
        _ => return Err(ErrorKind::InvalidLength),
    };
    if symlink {
        return Ok(Leaf {
            length: 0,
            root: None,
            attr,
        });
    }
    let attr = super::FileAttr {
        symlink: false,
        ..attr
    };
    if length == 0 {
        return Ok(Leaf {
            length,
            root: None,
            attr,
        });
    }
    match d
        .get_bytes(b"pieces root")
        .and_then(|r| <&[u8; 32]>::try_from(r).ok())
    {
        Some(r) if *r != [0; 32] => Ok(Leaf {
            length,
            root: Some(r),
            attr,
        }),
        _ => Err(ErrorKind::MissingPiecesRoot),
    }
}

/// What the checks of a `file tree` found.
#[derive(Clone, Copy, Debug)]
pub(super) struct TreeSummary {
    /// The content with every file padded to a piece boundary.
    pub padded_total: u64,
    /// Files, the implicit pad files included.
    pub files: u32,
    /// A single file at the top of the tree (a single-file torrent).
    pub single: bool,
}

/// Checks the `file tree`, its lengths and roots, and the `piece layers`.
pub(super) fn check_tree<'a>(
    info: Dict<'a>,
    root: Dict<'a>,
    piece_length: u32,
    name_len: usize,
    limits: &Limits,
) -> Result<(Dict<'a>, TreeSummary), MetainfoError> {
    let infov = info.value();
    // BEP 52: a power of two, at least 16 KiB.
    if !piece_length.is_power_of_two() || piece_length < merkle::BLOCK_SIZE {
        return fail(
            info.get(b"piece length").as_ref().or(Some(&infov)),
            ErrorKind::InvalidPieceLength,
        );
    }
    let Some(tree) = info.get_dict(b"file tree") else {
        return fail(
            info.get(b"file tree").as_ref().or(Some(&infov)),
            ErrorKind::InvalidFileTree,
        );
    };
    let pl = u64::from(piece_length);
    let (mut padded, mut content, mut files, mut path_bytes) = (0u64, 0u64, 0u32, 0u64);
    let root_len = name_len.min(path::MAX_ELEMENT_LEN) as u64 + 2;
    #[cfg(feature = "alloc")]
    let mut layered: alloc::vec::Vec<([u8; 32], u64)> = alloc::vec::Vec::new();
    let mut path = PathStack::new();
    walk(
        tree,
        &mut path,
        limits.max_path_depth as usize,
        &mut |p, d, at| {
            let l = leaf(&d).map_err(|kind| MetainfoError {
                offset: at.span().start,
                kind,
            })?;
            let pad = (pl - l.length % pl) % pl;
            files = files.saturating_add(1 + u32::from(pad > 0));
            if files > limits.max_files {
                return fail(Some(at), ErrorKind::TooManyFiles);
            }
            path_bytes += root_len
                + p.iter()
                    .map(|e| e.len().min(path::MAX_ELEMENT_LEN) as u64 + 1)
                    .sum::<u64>();
            if path_bytes > limits.max_total_path_bytes {
                return fail(Some(at), ErrorKind::PathsTooLong);
            }
            content = content.saturating_add(l.length);
            padded = match padded
                .checked_add(l.length)
                .and_then(|t| t.checked_add(pad))
            {
                Some(t) if t <= i64::MAX as u64 => t,
                _ => return fail(Some(at), ErrorKind::InvalidLength),
            };
            if padded / pl > u64::from(limits.max_pieces) {
                return fail(Some(at), ErrorKind::TooManyPieces);
            }
            #[cfg(feature = "alloc")]
            if let Some(r) = l.root.filter(|_| l.length > pl) {
                layered.push((*r, l.length));
            }
            Ok(())
        },
    )?;
    if content == 0 {
        return fail(Some(&tree.value()), ErrorKind::InvalidLength);
    }
    let mut first = tree.iter();
    let single = tree.len() == 1
        && first
            .next()
            .and_then(|(_, n)| n.as_dict())
            .is_some_and(|n| n.get(b"").is_some());

    // `piece layers`: each entry hashes up to its key, and belongs to a file larger
    // than a piece, with one hash per piece of that file. A file without an entry is
    // fine (its layer can come from peers, as with a magnet link).
    if let Some(lv) = root.get(b"piece layers") {
        let Some(layers) = lv.as_dict() else {
            return fail(Some(&lv), ErrorKind::InvalidPieceLayer);
        };
        #[cfg(feature = "alloc")]
        layered.sort_unstable();
        for (k, v) in layers.iter() {
            let bad = || fail(Some(&v), ErrorKind::InvalidPieceLayer);
            let (Ok(key), Some(layer)) = (<&[u8; 32]>::try_from(k), v.as_bytes()) else {
                return bad();
            };
            if merkle::layer_root(layer, piece_length).as_ref() != Some(key) {
                return bad();
            }
            #[cfg(feature = "alloc")]
            {
                let at = layered.partition_point(|(r, _)| r < key);
                // Every file that claims this root must have this many pieces.
                let owners = layered[at..].iter().take_while(|(r, _)| r == key);
                let mut any = false;
                for &(_, len) in owners {
                    any = true;
                    if layer.len() as u64 != len.div_ceil(pl) * 32 {
                        return bad();
                    }
                }
                if !any {
                    return bad();
                }
            }
        }
    }
    Ok((
        tree,
        TreeSummary {
            padded_total: padded,
            files,
            single,
        },
    ))
}

pub(super) fn check_hybrid(m: &Metainfo<'_>, limits: &Limits) -> Result<(), MetainfoError> {
    let info = m.info();
    let Some(tree) = info.get_dict(b"file tree") else {
        return fail(Some(&info.value()), ErrorKind::InvalidFileTree);
    };
    let piece_len = u64::from(m.piece_length());
    let mut v1 = m.files().filter(|f| !f.attr.pad);
    let single = !matches!(m.files, Files::Multi { .. });
    let mut path = PathStack::new();
    let inconsistent = |v: &Value<'_>| fail(Some(v), ErrorKind::InconsistentFiles);
    // Where v2 puts the next file: after the previous one, padded to a piece.
    let mut v2_offset = 0u64;
    walk(
        tree,
        &mut path,
        limits.max_path_depth as usize,
        &mut |p, d, at| {
            let len = leaf(&d).map_err(|kind| MetainfoError {
                offset: at.span().start,
                kind,
            })?;
            let len = len.length;
            let Some(f) = v1.next() else {
                return inconsistent(at);
            };
            let same_path = if single {
                p.len() == 1 && p[0] == m.name()
            } else {
                f.raw_path().skip(1).eq(p.iter().copied())
            };
            // BEP 52: every non-empty file starts on a piece boundary (pad files before
            // it), the same one in v1 and v2, so that a piece is the same bytes in both.
            let aligned = len == 0 || (f.offset % piece_len == 0 && f.offset == v2_offset);
            v2_offset = v2_offset.saturating_add(len.div_ceil(piece_len) * piece_len);
            if !same_path || f.length != len || !aligned {
                return inconsistent(at);
            }
            Ok(())
        },
    )?;
    match v1.next() {
        Some(_) => inconsistent(&tree.value()),
        None => Ok(()),
    }
}
