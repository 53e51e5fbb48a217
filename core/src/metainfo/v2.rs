//! The part of BEP 52 that a v1 engine needs: checking that a hybrid torrent's v2
//! `file tree` describes exactly the files of its v1 `files` list, each v2 file
//! starting on a piece boundary (a BEP 47 pad file after every file that does not end
//! on one). Two disagreeing lists would let v1 and v2 peers see different content.

use super::{fail, ErrorKind, Files, Limits, Metainfo, MetainfoError};
use crate::bencode::{Dict, Value};

type PathStack<'a> = heapless::Vec<&'a [u8], 64>;
type Visit<'v, 'a> = dyn FnMut(&[&'a [u8]], u64, &Value<'a>) -> Result<(), MetainfoError> + 'v;

/// Calls `f(path, length, value)` for every file of a v2 `file tree`, depth first in key
/// order.
fn walk<'a>(
    dir: Dict<'a>,
    path: &mut PathStack<'a>,
    max_depth: usize,
    f: &mut Visit<'_, 'a>,
) -> Result<(), MetainfoError> {
    for (name, node) in dir.iter() {
        let Some(node) = node.as_dict() else {
            return fail(Some(&node.clone()), ErrorKind::InvalidFileTree);
        };
        if path.len() >= max_depth || path.push(name).is_err() {
            return fail(Some(&node.value()), ErrorKind::PathTooDeep);
        }
        if name.is_empty() {
            return fail(Some(&node.value()), ErrorKind::InvalidFileTree);
        }
        match node.get(b"") {
            Some(leaf) => {
                let len = leaf
                    .as_dict()
                    .and_then(|d| d.get_int(b"length"))
                    .filter(|n| *n >= 0);
                let Some(len) = len else {
                    return fail(Some(&leaf), ErrorKind::InvalidFileTree);
                };
                if node.len() != 1 {
                    return fail(Some(&node.value()), ErrorKind::InvalidFileTree);
                }
                f(path, len as u64, &leaf)?;
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
    walk(
        tree,
        &mut path,
        limits.max_path_depth as usize,
        &mut |p, len, at| {
            let Some(f) = v1.next() else {
                return inconsistent(at);
            };
            let same_path = if single {
                p.len() == 1 && p[0] == m.name()
            } else {
                f.raw_path().skip(1).eq(p.iter().copied())
            };
            // BEP 52: every non-empty file starts on a piece boundary (pad files before it).
            let aligned = len == 0 || f.offset % piece_len == 0;
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
