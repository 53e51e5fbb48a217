//! Helpers shared by the cross-crate tests in `tests/tests/`, and by the test suites
//! of the host (`std-host/tests/`) and of the C library (`ffi/tests/`).

use std::collections::HashSet;
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::Mutex;

/// `len` bytes of a xorshift stream seeded by `seed`: test payloads that differ in every
/// block, the same on every run.
pub fn xorshift_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A port on 127.0.0.1 that nothing listens on, for TCP nor UDP, and that this process
/// has not been given before (so two tests running at once never get the same one).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..200 {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = t.local_addr().expect("local addr").port();
        if !given.contains(&port) && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

/// The conformance corpus copied into the repository (`tests/data/conformance`).
pub fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/conformance")
}

/// One row of `MANIFEST.tsv`.
#[derive(Debug, Clone)]
pub struct ManifestRow {
    /// Path relative to the corpus folder.
    pub path: String,
    /// `true` when the torrent must load.
    pub expect_ok: bool,
    /// libtorrent's error code name for rows expected to fail.
    pub libtorrent_error: String,
    /// Lowercase hex v1 info-hash (empty for v2-only).
    pub v1_info_hash: String,
    /// Lowercase hex v2 info-hash (empty for v1-only).
    pub v2_info_hash: String,
    /// libtorrent's (sanitized) name.
    pub name: String,
    /// Total size, pad files included.
    pub total_size: u64,
    /// Piece length.
    pub piece_length: u64,
    /// Number of pieces.
    pub num_pieces: u64,
    /// Number of files, pad files included.
    pub num_files: u64,
    /// A v2-only torrent.
    pub is_v2_only: bool,
    /// Why the row expects what it expects.
    pub notes: String,
}

/// Reads `MANIFEST.tsv`.
pub fn manifest() -> Vec<ManifestRow> {
    let text = std::fs::read_to_string(conformance_dir().join("MANIFEST.tsv"))
        .expect("MANIFEST.tsv is in the repository");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split('\t').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("column {name}"))
    };
    let (c_path, c_exp, c_err, c_hash, c_name) = (
        col("path"),
        col("expected"),
        col("libtorrent_error"),
        col("v1_info_hash"),
        col("name"),
    );
    let (c_size, c_plen, c_np, c_nf, c_v2, c_notes) = (
        col("total_size"),
        col("piece_length"),
        col("num_pieces"),
        col("num_files"),
        col("is_v2_only"),
        col("notes"),
    );
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let num = |i: usize| f[i].parse::<u64>().unwrap_or(0);
            ManifestRow {
                path: unescape(f[c_path]),
                expect_ok: f[c_exp] == "ok",
                libtorrent_error: f[c_err].to_string(),
                v1_info_hash: f[c_hash].to_string(),
                v2_info_hash: f[col("v2_info_hash")].to_string(),
                name: unescape(f[c_name]),
                total_size: num(c_size),
                piece_length: num(c_plen),
                num_pieces: num(c_np),
                num_files: num(c_nf),
                is_v2_only: f[c_v2] == "true",
                notes: f[c_notes].to_string(),
            }
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub mod fuzz_checks;
pub mod scripted;
pub mod sim;
pub mod utp_link;

/// A `.torrent` of one 16 KiB piece with `announce-list` `tiers`.
pub fn torrent_with_tiers(tiers: &[&[&str]]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = btcore_core::bencode::Encoder::new(&mut out);
    let r = (|| {
        e.dict()?;
        e.bytes(b"announce-list")?;
        e.list()?;
        for tier in tiers {
            e.list()?;
            for url in *tier {
                e.bytes(url.as_bytes())?;
            }
            e.end()?;
        }
        e.end()?;
        e.bytes(b"info")?;
        e.dict()?;
        e.key_int(b"length", 16_384)?;
        e.key_bytes(b"name", b"tiers.bin")?;
        e.key_int(b"piece length", 16_384)?;
        e.key_bytes(b"pieces", &[0u8; 20])?;
        e.end()?;
        e.end()
    })();
    r.expect("vec");
    out
}
