//! The conformance corpus: every torrent meets its expected verdict, accepted torrents
//! agree with libtorrent on the figures, every path stays inside the download directory,
//! and every torrent that comes with its content verifies piece by piece.

use btcore_core::bencode::ErrorKind as DecodeErrorKind;
use btcore_core::hash::{Sha1, SmolSha1};
use btcore_core::ids::PieceIndex;
use btcore_core::metainfo::{ErrorKind, Limits, Metainfo};
use btcore_tests::{conformance_dir, manifest};
use std::collections::HashSet;

/// Rows where btcore refuses what libtorrent 2.0.8 accepts, on purpose.
const DEVIATIONS: &[(&str, &str)] = &[(
    "torrents/transmission/dup-pieces-key.torrent",
    "a duplicate key in a dictionary lets two parsers see two torrents behind one \
     info-hash: btcore refuses duplicates everywhere (as malformed/duplicate_key_* \
     require), and Transmission refuses this torrent too",
)];

#[test]
fn every_manifest_row_meets_its_verdict() {
    let rows = manifest();
    assert!(rows.len() >= 200, "manifest has {} rows", rows.len());
    let mut failures = Vec::new();
    let (mut accepted, mut rejected, mut v2_only) = (0, 0, 0);
    for row in &rows {
        let bytes = std::fs::read(conformance_dir().join(&row.path)).expect("corpus file");
        let mut tokens = Vec::new();
        let parsed = Metainfo::parse_vec(&bytes, &mut tokens, &Limits::default())
            .and_then(|m| m.layout().map(|l| (m, l)));
        if DEVIATIONS.iter().any(|(p, _)| *p == row.path) {
            match parsed {
                Err(e) if e.kind == ErrorKind::Bencode(DecodeErrorKind::DuplicateKey) => {
                    rejected += 1;
                }
                other => failures.push(format!(
                    "{}: a listed deviation must be refused as a duplicate key, got {:?}",
                    row.path,
                    other.map(|_| ())
                )),
            }
            continue;
        }
        match (row.expect_ok, parsed) {
            (true, Err(e)) => failures.push(format!("{}: expected ok, got error {e}", row.path)),
            (true, Ok((m, layout))) => {
                accepted += 1;
                v2_only += usize::from(m.is_v2_only());
                if m.is_v2_only() != row.is_v2_only {
                    failures.push(format!("{}: v2-only is {}", row.path, m.is_v2_only()));
                }
                let v2 = m.info_hash_v2().map(hex).unwrap_or_default();
                if v2 != row.v2_info_hash {
                    failures.push(format!("{}: v2 hash {v2:?}", row.path));
                }
                let got = (
                    m.info_hash_v1().map(|h| h.to_string()).unwrap_or_default(),
                    m.total_size(),
                    u64::from(m.piece_length()),
                    u64::from(m.num_pieces()),
                    u64::from(m.num_files()),
                );
                let want = (
                    row.v1_info_hash.clone(),
                    row.total_size,
                    row.piece_length,
                    row.num_pieces,
                    row.num_files,
                );
                if got != want {
                    failures.push(format!("{}: got {got:?}, libtorrent {want:?}", row.path));
                }
                // Where sanitizing does not touch the name, it matches libtorrent's.
                let raw = String::from_utf8_lossy(m.name());
                if raw.len() <= 200
                    && raw
                        .chars()
                        .all(|c| c.is_alphanumeric() || " -_.()".contains(c))
                    && raw != row.name
                {
                    failures.push(format!("{}: name {raw:?} vs {:?}", row.path, row.name));
                }
                if let Err(e) = check_paths(&layout) {
                    failures.push(format!("{}: {e}", row.path));
                }
            }
            (false, Ok(_)) => failures.push(format!(
                "{}: expected error ({}), but it loaded; notes: {}",
                row.path, row.libtorrent_error, row.notes
            )),
            (false, Err(_)) => rejected += 1,
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("accepted {accepted} (v2-only {v2_only}), rejected {rejected}");
    assert!(v2_only >= 9, "v2-only torrents parse");
    assert_eq!(accepted + rejected, rows.len());
}

fn hex(b: impl AsRef<[u8]>) -> String {
    b.as_ref().iter().map(|x| format!("{x:02x}")).collect()
}

/// Every path is relative, made of ordinary elements, and unique without case.
fn check_paths(layout: &[btcore_core::metainfo::FileSpec]) -> Result<(), String> {
    let mut seen = HashSet::new();
    let mut dirs = HashSet::new();
    for f in layout.iter().filter(|f| !f.attr.pad) {
        let p = &f.path;
        if p.is_empty() || p.starts_with('/') || p.contains('\\') || p.contains('\0') {
            return Err(format!("unsafe path {p:?}"));
        }
        if p.split('/')
            .any(|e| e.is_empty() || e == "." || e == ".." || e.contains(':'))
        {
            return Err(format!("unsafe element in {p:?}"));
        }
        let lc = p.to_ascii_lowercase();
        if !seen.insert(lc.clone()) {
            return Err(format!("two files on {p:?}"));
        }
        let mut acc = String::new();
        for e in lc
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|x| x.1)
            .unwrap_or(&[])
        {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(e);
            dirs.insert(acc.clone());
        }
    }
    if let Some(clash) = seen.iter().find(|p| dirs.contains(*p)) {
        return Err(format!("a file takes a directory's path: {clash:?}"));
    }
    Ok(())
}

#[test]
fn with_content_pairs_verify_piece_by_piece() {
    let base = conformance_dir().join("with-content");
    let mut checked = 0;
    let mut v2_checked = 0;
    let mut dirs: Vec<_> = std::fs::read_dir(&base)
        .expect("with-content")
        .flatten()
        .collect();
    dirs.sort_by_key(|d| d.file_name());
    for d in dirs {
        let name = d.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(d.path().join(format!("{name}.torrent"))).expect("torrent");
        let mut tokens = Vec::new();
        let m = match Metainfo::parse_vec(&bytes, &mut tokens, &Limits::default()) {
            Err(e) => panic!("{name}: {e}"),
            Ok(m) => m,
        };
        if let Some(tree) = m.tree_files() {
            v2_checked += check_merkle(&m, tree, &d.path(), &name);
        }
        if m.is_v2_only() {
            continue;
        }
        let content = read_content(&m, &d.path());
        assert_eq!(content.len() as u64, m.total_size(), "{name}");
        let g = m.geometry();
        for i in 0..m.num_pieces() {
            let p = PieceIndex(i);
            let start = g.piece_offset(p) as usize;
            let data = &content[start..start + g.piece_size(p) as usize];
            let want = m.piece_hash(p).expect("hash");
            assert_eq!(&SmolSha1::digest(data), want, "{name} piece {i}");
            // The same piece with one byte flipped must fail.
            let mut bad = data.to_vec();
            bad[data.len() / 2] ^= 0x01;
            assert_ne!(&SmolSha1::digest(&bad), want, "{name} piece {i} corrupted");
        }
        checked += 1;
    }
    assert_eq!(checked, 7, "seven v1 and hybrid pairs verify");
    assert!(v2_checked >= 8, "v2 files verified: {v2_checked}");
}

/// Every v2 file's content hashes to its `pieces root` and piece layer, and a flipped
/// byte does not; returns how many files were checked.
fn check_merkle(
    m: &Metainfo<'_>,
    tree: btcore_core::metainfo::FileIter<'_>,
    save_path: &std::path::Path,
    name: &str,
) -> usize {
    use btcore_core::merkle;
    let layout = m.layout().expect("layout");
    let paths = layout.iter().filter(|f| !f.attr.pad).map(|f| &f.path);
    let pl = m.piece_length();
    let mut n = 0;
    for (f, path) in tree.filter(|f| !f.attr.pad).zip(paths) {
        let data = std::fs::read(save_path.join(path)).expect("content");
        let (root, layer) = merkle::file_tree(&data, pl);
        assert_eq!(root.as_ref(), f.pieces_root(), "{name} {path}");
        if let Some(r) = f.pieces_root() {
            if data.len() > pl as usize {
                assert_eq!(m.piece_layer(r), Some(&layer[..]), "{name} {path}");
            }
            let mut bad = data.clone();
            bad[data.len() - 1] ^= 1;
            assert_ne!(merkle::file_tree(&bad, pl).0.as_ref(), Some(r));
            n += 1;
        }
    }
    n
}

/// The torrent's content in one buffer, pad files as zeros.
fn read_content(m: &Metainfo<'_>, save_path: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.total_size() as usize);
    for f in m.layout().expect("layout") {
        if f.attr.pad {
            out.resize(out.len() + f.length as usize, 0);
        } else {
            let data = std::fs::read(save_path.join(&f.path))
                .unwrap_or_else(|e| panic!("{}: {e}", f.path));
            assert_eq!(data.len() as u64, f.length, "{}", f.path);
            out.extend_from_slice(&data);
        }
    }
    out
}

/// The v2-only and hybrid torrents made by libtorrent (`v2-generated/make_v2.py`):
/// btcore refuses what libtorrent refuses and agrees on everything else: both
/// info-hashes, sizes, piece and file counts (implicit v2 pads included), every file's
/// offset and pieces root, and every piece layer.
#[test]
fn generated_v2_torrents_meet_libtorrent_verdicts() {
    let dir = conformance_dir().join("v2-generated");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("EXPECTED.json")).expect("EXPECTED.json"))
            .expect("JSON");
    let torrents = expected["torrents"].as_object().expect("torrents");
    assert!(torrents.len() >= 13);
    let mut failures = Vec::new();
    for (name, lt) in torrents {
        let bytes = std::fs::read(dir.join(name)).expect("torrent");
        let mut tokens = Vec::new();
        let parsed = Metainfo::parse_vec(&bytes, &mut tokens, &Limits::default());
        let m = match (lt["expected"].as_str(), parsed) {
            (Some("error"), Err(_)) => continue,
            (Some("error"), Ok(_)) => {
                failures.push(format!("{name}: loaded, libtorrent: {}", lt["session_add"]));
                continue;
            }
            (_, Err(e)) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
            (_, Ok(m)) => m,
        };
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let got = (
            m.info_hash_v1().map(|h| h.to_string()).unwrap_or_default(),
            m.info_hash_v2().map(hex).unwrap_or_default(),
            m.total_size(),
            m.piece_length(),
            m.num_pieces(),
            m.num_files(),
        );
        let want = (
            s(&lt["v1_info_hash"]),
            s(&lt["v2_info_hash"]),
            lt["total_size"].as_u64().unwrap_or_default(),
            lt["piece_length"].as_u64().unwrap_or_default() as u32,
            lt["num_pieces"].as_u64().unwrap_or_default() as u32,
            lt["num_files"].as_u64().unwrap_or_default() as u32,
        );
        if got != want {
            failures.push(format!("{name}: {got:?} vs libtorrent {want:?}"));
        }
        // Every file in libtorrent's order (pads included): offset, size, pad.
        let ours: Vec<_> = m
            .files()
            .map(|f| (f.offset, f.length, f.attr.pad))
            .collect();
        let theirs: Vec<_> = lt["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| {
                (
                    f["offset"].as_u64().unwrap_or_default(),
                    f["size"].as_u64().unwrap_or_default(),
                    f["pad"] == true,
                )
            })
            .collect();
        if ours != theirs {
            failures.push(format!("{name}: files {ours:?} vs {theirs:?}"));
        }
        // Pieces roots in order, and each layer byte for byte.
        let tree = m.tree_files().expect("v2 metadata");
        let roots: Vec<String> = tree
            .filter(|f| !f.attr.pad)
            .map(|f| f.pieces_root().map(hex).unwrap_or_default())
            .collect();
        let lt_roots: Vec<String> = lt["files"]
            .as_array()
            .expect("files")
            .iter()
            .filter(|f| f["pad"] != true)
            .map(|f| s(&f["pieces_root"]))
            .collect();
        if roots != lt_roots {
            failures.push(format!("{name}: roots {roots:?} vs {lt_roots:?}"));
        }
        let layers = lt["piece_layers"].as_object().expect("layers");
        if layers.len() != m.num_piece_layers() {
            failures.push(format!("{name}: {} layers", m.num_piece_layers()));
        }
        for (root, layer) in layers {
            let r: [u8; 32] = (0..32)
                .map(|i| u8::from_str_radix(&root[2 * i..2 * i + 2], 16).expect("hex"))
                .collect::<Vec<_>>()
                .try_into()
                .expect("32 bytes");
            if m.piece_layer(&r).map(hex) != layer.as_str().map(String::from) {
                failures.push(format!("{name}: layer of {root}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
