//! Parses arbitrary bytes as a `.torrent` and, when that succeeds, calls every accessor.
//! Every path the host would create must be relative, with no `..`, `.` or empty
//! element, and no two files may land on the same path.
#![no_main]

use btcore_core::hash::sha1;
use btcore_core::ids::PieceIndex;
use btcore_core::metainfo::{Limits, Metainfo};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;

/// Room for the longest sanitized path: 65 elements of at most 255 bytes plus `/`s.
const PATH_BUF: usize = 1 << 15;

fn assert_safe_path(p: &str) {
    assert!(!p.is_empty(), "empty path");
    assert!(
        !p.starts_with('/') && !p.contains('\\'),
        "not relative: {p:?}"
    );
    for e in p.split('/') {
        assert!(
            !e.is_empty() && e != "." && e != "..",
            "bad element in {p:?}"
        );
        assert!(!e.contains(':'), "drive or stream in {p:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut tokens = Vec::new();
    let Ok(m) = Metainfo::parse_vec(data, &mut tokens, &Limits::default()) else {
        return;
    };
    assert_eq!(m.info_hash().0, sha1(m.info_bytes()));
    let _ = (
        m.info().len(),
        m.root().len(),
        m.name(),
        m.is_hybrid(),
        m.is_private(),
    );
    let _ = (m.announce(), m.creation_date(), m.comment(), m.created_by());
    let _ = m.announce_tiers().map(|t| t.count()).sum::<usize>();
    let _ = m.trackers().count();
    let _ = m.url_list().count();

    let g = m.geometry();
    let n = m.num_pieces();
    assert!(n >= 1 && n == g.num_pieces() && m.piece_length() == g.piece_len());
    assert!(m.piece_hash(PieceIndex(0)).is_some());
    assert!(m.piece_hash(PieceIndex(n - 1)).is_some());
    assert!(m.piece_hash(PieceIndex(n)).is_none());
    assert!(m.piece_hash(PieceIndex(u32::MAX)).is_none());
    let last = g.piece(n - 1).expect("last piece");
    assert!(g.piece_size(last) >= 1 && g.piece_size(last) <= g.piece_len());
    assert_eq!(
        g.piece_offset(last) + u64::from(g.piece_size(last)),
        m.total_size()
    );
    assert!(g.block(last, 0).is_some());

    let mut buf = vec![0u8; PATH_BUF];
    let (mut count, mut offset) = (0u32, 0u64);
    for f in m.files() {
        assert_eq!((f.index, f.offset), (count, offset));
        let _ = f.raw_path().count();
        let _ = f.symlink_target().map(|t| t.count());
        let p = f.write_path(&mut buf).expect("a path fits PATH_BUF");
        assert_safe_path(p);
        count += 1;
        offset += f.length;
    }
    assert_eq!(count, m.num_files());
    assert_eq!(offset, m.total_size());
    assert!(m.is_multi_file() || count == 1);

    let Ok(layout) = m.layout() else {
        return;
    };
    assert_eq!(layout.len(), count as usize);
    let mut files = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    for (i, spec) in layout.iter().enumerate() {
        assert_eq!(spec.index as usize, i);
        if let Some(t) = &spec.symlink_target {
            assert_safe_path(t);
        }
        if spec.attr.pad {
            assert!(spec.path.is_empty());
            continue;
        }
        assert_safe_path(&spec.path);
        let lower = spec.path.to_ascii_lowercase();
        for (at, _) in lower.match_indices('/') {
            dirs.insert(lower[..at].to_string());
        }
        assert!(files.insert(lower), "two files on {:?}", spec.path);
    }
    assert!(files.is_disjoint(&dirs), "a file on a directory's path");
});
