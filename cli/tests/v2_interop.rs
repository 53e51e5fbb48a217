//! BitTorrent v2 (BEP 52) torrents against libtorrent (python3-libtorrent, driven by
//! `tests/interop/lt_v2.py`): libtorrent loads the v2-only and hybrid torrents that
//! `btcore create --v2/--hybrid` makes, adds them to a session (which checks the piece
//! layers against the roots), and computes the same v1 and v2 info-hashes, file list
//! and pieces roots; libtorrent's own torrent of the same content has the same
//! info-hashes (the info dictionaries are byte for byte the same); and `btcore info
//! --json` reads libtorrent's torrents as libtorrent does.
//!
//! Skipped when libtorrent is not installed, unless `BTCORE_INTEROP=1` (CI): then it
//! fails.

use common::{interop_script, require, write_file, Rng, TempDir, Tool, BTCORE, PYTHON};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

mod common;

const PIECE: usize = 16 * 1024;

/// Content around the v2 edge cases: a file of several pieces with a partial last one,
/// a file of exactly one piece, an empty file, a file smaller than a block, a file
/// larger than a piece by one byte, and nested directories.
fn content(root: &Path) {
    let mut r = Rng(0x0000_b352);
    write_file(&root.join("big.bin"), &r.bytes(3 * PIECE + 5000));
    write_file(&root.join("empty.txt"), b"");
    write_file(&root.join("one piece.bin"), &r.bytes(PIECE));
    write_file(&root.join("a/b/c/deep.txt"), &r.bytes(700));
    write_file(&root.join("a/next.bin"), &r.bytes(PIECE + 1));
}

fn run(c: &mut Command) -> Vec<u8> {
    let o = c.output().expect("runs");
    assert!(
        o.status.success(),
        "{c:?}: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

fn lt_show(torrent: &Path) -> Value {
    let out = run(Command::new(PYTHON)
        .arg(interop_script("lt_v2.py"))
        .arg("show")
        .arg(torrent));
    serde_json::from_slice(&out).expect("lt_v2.py show prints JSON")
}

fn btcore_info(torrent: &Path) -> Value {
    let out = run(Command::new(BTCORE).args(["info", "--json"]).arg(torrent));
    serde_json::from_slice(&out).expect("info --json prints JSON")
}

/// libtorrent's non-pad files as (size, pieces root), in order.
fn lt_files(v: &Value) -> Vec<(u64, String)> {
    v["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter(|f| f["pad"] != true)
        .map(|f| {
            (
                f["size"].as_u64().expect("size"),
                f["pieces_root"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// btcore's v2 files as (size, pieces root), in order.
fn btcore_files(v: &Value) -> Vec<(u64, String)> {
    v["file_tree"]
        .as_array()
        .expect("file_tree")
        .iter()
        .map(|f| {
            (
                f["length"].as_u64().expect("length"),
                f["pieces_root"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

#[test]
fn libtorrent_agrees_on_btcore_made_v2_and_hybrid_torrents() {
    if !require(&[Tool::Libtorrent], "apt-get install python3-libtorrent") {
        return;
    }
    let tmp = TempDir::new("v2-interop");
    let dir = tmp.0.join("content");
    content(&dir);
    let single = dir.join("big.bin");
    let mut checked = 0;
    for (src, what) in [(&dir, "dir"), (&single, "single")] {
        for format in ["v2", "hybrid"] {
            let ours = tmp.0.join(format!("{what}-{format}-btcore.torrent"));
            let theirs = tmp.0.join(format!("{what}-{format}-lt.torrent"));
            run(Command::new(BTCORE)
                .arg("create")
                .arg(src)
                .arg(format!("--{format}"))
                .args(["--piece-kib", "16", "-o"])
                .arg(&ours));
            run(Command::new(PYTHON)
                .arg(interop_script("lt_v2.py"))
                .arg("make")
                .arg(src)
                .arg(&theirs)
                .args(["--format", format, "--piece-kib", "16"]));
            let lt_ours = lt_show(&ours);
            let lt_theirs = lt_show(&theirs);
            let bt_ours = btcore_info(&ours);
            let bt_theirs = btcore_info(&theirs);
            let case = format!("{what} {format}");
            assert_eq!(lt_ours["session_add"], "ok", "{case}: {lt_ours}");
            // Same info dictionary as libtorrent's own: same hashes.
            assert_eq!(lt_ours["v1"], lt_theirs["v1"], "{case}");
            assert_eq!(lt_ours["v2"], lt_theirs["v2"], "{case}");
            assert_eq!(str_of(&lt_ours["v1"]).is_empty(), format == "v2", "{case}");
            assert_eq!(str_of(&lt_ours["v2"]).len(), 64, "{case}");
            assert_eq!(lt_ours["num_pieces"], lt_theirs["num_pieces"], "{case}");
            // btcore reads both as libtorrent does.
            for bt in [&bt_ours, &bt_theirs] {
                assert_eq!(
                    str_of(&bt["info_hash_v2"]),
                    str_of(&lt_ours["v2"]),
                    "{case}"
                );
                assert_eq!(
                    str_of(&bt["info_hash_v1"]),
                    str_of(&lt_ours["v1"]),
                    "{case}"
                );
                assert_eq!(bt["num_pieces"], lt_ours["num_pieces"], "{case}");
                assert_eq!(btcore_files(bt), lt_files(&lt_ours), "{case}");
            }
            let files = lt_files(&lt_ours);
            assert_eq!(files.len(), if what == "dir" { 5 } else { 1 }, "{case}");
            assert!(files.iter().any(|f| f.0 > PIECE as u64 && !f.1.is_empty()));
            checked += 1;
        }
    }
    assert_eq!(checked, 4);
}

#[test]
fn libtorrent_refuses_a_btcore_v2_torrent_with_a_corrupt_piece_layer_and_so_does_btcore() {
    if !require(&[Tool::Libtorrent], "apt-get install python3-libtorrent") {
        return;
    }
    let tmp = TempDir::new("v2-interop-bad");
    let src = tmp.0.join("big.bin");
    write_file(&src, &Rng(7).bytes(3 * PIECE + 1));
    let t = tmp.0.join("big.torrent");
    run(Command::new(BTCORE)
        .arg("create")
        .arg(&src)
        .args(["--v2", "--piece-kib", "16", "-o"])
        .arg(&t));
    let mut bytes = std::fs::read(&t).expect("torrent");
    // The last byte of the piece layer, just before the two closing `e`s.
    let at = bytes.len() - 3;
    bytes[at] ^= 0x01;
    let bad = tmp.0.join("bad.torrent");
    std::fs::write(&bad, &bytes).expect("write");
    let v = lt_show(&bad);
    assert_ne!(v["session_add"], "ok", "libtorrent: {v}");
    let o = Command::new(BTCORE)
        .args(["info", "--json"])
        .arg(&bad)
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(3), "btcore refuses it");
    assert!(String::from_utf8_lossy(&o.stderr).contains("piece layers"));
}
