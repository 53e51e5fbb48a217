//! Parsing and hashing throughput: `cargo bench -p btcore-host --bench parse`.
//!
//! Decodes the largest torrents of the conformance corpus with the bencode decoder
//! alone and with the whole metainfo check (including the file layout), and hashes a
//! buffer with the core's portable SHA-1 and the host's. Prints MB/s per case; the
//! script `bench/parse.sh` prints libtorrent's figures on the same files beside them.

use btcore_core::bencode::{decode_vec, Limits as BLimits, Token};
use btcore_core::hash::{Sha1, SmolSha1};
use btcore_core::metainfo::{Limits, Metainfo};
use btcore_host::hash::FastSha1;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Runs `f` repeatedly for about `budget` and returns MB/s over `bytes` per call.
fn rate(bytes: usize, budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        f();
        n += 1;
    }
    (bytes as f64 * n as f64) / start.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let dir = btcore_tests::conformance_dir();
    let mut files: Vec<_> = walk(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "torrent"))
        .filter(|p| {
            std::env::args()
                .skip(1)
                .filter(|a| !a.starts_with('-'))
                .all(|a| p.ends_with(a))
        })
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .filter(|(_, b)| {
            let mut t = Vec::new();
            Metainfo::parse_vec(b, &mut t, &Limits::default()).is_ok()
        })
        .collect();
    files.sort_by_key(|(_, b)| std::cmp::Reverse(b.len()));
    files.truncate(5);
    let budget = Duration::from_millis(
        std::env::var("BENCH_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(500),
    );
    println!(
        "{:<46} {:>8} {:>7} {:>13} {:>13} {:>13}",
        "torrent", "bytes", "tokens", "bencode MB/s", "Mtokens/s", "metainfo MB/s"
    );
    let mut tokens: Vec<Token> = Vec::new();
    for (path, bytes) in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ntok = decode_vec(bytes, &mut tokens, &BLimits::default())
            .map(|d| d.token_count())
            .unwrap_or(0);
        let b = rate(bytes.len(), budget, || {
            let doc = decode_vec(bytes, &mut tokens, &BLimits::default()).map(|d| d.token_count());
            black_box(doc.ok());
        });
        let m = rate(bytes.len(), budget, || {
            let mut t = Vec::new();
            let m = Metainfo::parse_vec(bytes, &mut t, &Limits::default());
            black_box(m.map(|m| m.layout().map(|l| l.len())).ok());
        });
        let mtok = b / bytes.len() as f64 * ntok as f64;
        println!(
            "{name:<46} {:>8} {ntok:>7} {b:>13.0} {mtok:>13.1} {m:>13.0}",
            bytes.len()
        );
    }
    let data: Vec<u8> = (0..(16u32 << 20)).map(|i| (i ^ (i >> 7)) as u8).collect();
    let smol = rate(data.len(), budget * 2, || {
        black_box(SmolSha1::digest(&data));
    });
    let fast = rate(data.len(), budget * 2, || {
        black_box(FastSha1::digest(&data));
    });
    println!("sha1 16 MiB: core sha1_smol {smol:.0} MB/s, host sha1 {fast:.0} MB/s");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
