//! The memory a torrent's file layout costs, counted by a global allocator that tracks
//! the live bytes and their peak: a hostile 8 MiB torrent of deep paths must lay out
//! within a budget proportional to its size (before, every directory prefix of every
//! file was a separate allocation: 279 MiB for such a torrent).
//!
//! One test per binary, so no other thread allocates while it counts.

use btcore_core::bencode::Encoder;
use btcore_core::metainfo::{Limits, Metainfo};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to `System` with the same arguments; the counters are
// plain atomics.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: as `System::alloc`, with the caller's layout.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` was allocated by `alloc` above with `l`.
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: as `System::realloc`, with the caller's arguments.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                let now = LIVE.fetch_add(new - l.size(), Ordering::Relaxed) + new - l.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static A: Counting = Counting;

/// A multi-file torrent of about `size` bytes: files whose paths are `depth` one-byte
/// elements under a distinct first element, so no two files share a directory.
fn deep_paths(size: usize, depth: usize) -> Vec<u8> {
    let per_file = 24 + 3 * depth;
    let files = size / per_file;
    let mut out = Vec::with_capacity(size + 4096);
    let mut e = Encoder::new(&mut out);
    let r: Result<(), core::convert::Infallible> = (|| {
        e.dict()?;
        e.bytes(b"info")?;
        e.dict()?;
        e.bytes(b"files")?;
        e.list()?;
        for i in 0..files {
            e.dict()?;
            e.key_int(b"length", 1)?;
            e.bytes(b"path")?;
            e.list()?;
            e.bytes(format!("{i:x}").as_bytes())?;
            for _ in 1..depth {
                e.bytes(b"a")?;
            }
            e.end()?;
            e.end()?;
        }
        e.end()?;
        e.key_bytes(b"name", b"deep")?;
        e.key_int(b"piece length", 1 << 20)?;
        let pieces = files.div_ceil(1 << 20);
        e.key_bytes(b"pieces", &vec![0u8; 20 * pieces])?;
        e.end()?;
        e.end()
    })();
    match r {
        Ok(()) => out,
        Err(never) => match never {},
    }
}

#[test]
fn an_8_mib_deep_path_torrent_lays_out_within_a_counted_budget() {
    let depth = Limits::default().max_path_depth as usize;
    let t = deep_paths(8 << 20, depth);
    let mut tokens = Vec::new();
    let m = Metainfo::parse_vec(&t, &mut tokens, &Limits::default()).expect("parses");
    let files = m.num_files() as usize;
    assert!(files > 30_000, "{files} files");

    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let layout = m.layout().expect("lays out");
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let kept = LIVE.load(Ordering::Relaxed) - base;
    assert_eq!(layout.len(), files);
    assert!(
        layout[1].path.starts_with("deep/1/a/a/"),
        "{}",
        layout[1].path
    );

    // What the answer itself holds: every path once, and a `FileSpec` per file.
    let paths: usize = layout.iter().map(|f| f.path.len()).sum();
    println!(
        "{} bytes of torrent, {files} files, {paths} bytes of paths: layout peak {peak} B, kept {kept} B",
        t.len()
    );
    // The peak is the answer plus work linear in the paths (their folded keys and an
    // index per file), never a copy per directory prefix.
    let budget = 3 * paths + 256 * files;
    assert!(
        peak <= budget,
        "layout peak {peak} B over the budget {budget} B ({} B of torrent)",
        t.len()
    );
    assert!(
        peak <= 3 * t.len(),
        "peak {peak} B for {} B of torrent",
        t.len()
    );
}
