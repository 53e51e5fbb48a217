//! 64-bit offsets on 32-bit targets: a torrent whose first file is 5 GiB + 123 bytes,
//! followed by a small file, must map pieces and blocks to the right files and file
//! offsets past 4 GiB, and write and read back there through `Storage`.
//!
//! The payload is sparse: only three pieces are written (the one straddling 4 GiB, the
//! one after it, and the last one, which straddles the two files), about 9 MiB. The
//! torrent is built with `bencode::Encoder`; only those three pieces carry real hashes.
//!
//! Runs natively and on armv7 under qemu-user
//! (`cargo test --target armv7-unknown-linux-gnueabihf -p btcore-host --test large_offsets`),
//! where `usize` is 32 bits and any `as usize` / `as u32` truncation of an offset shows.

use btcore_core::bencode::Encoder;
use btcore_core::hash::sha1;
use btcore_core::ids::{BlockRef, PieceIndex, BLOCK_LEN};
use btcore_core::metainfo::{Limits, Metainfo};
use btcore_host::storage::{Storage, StorageConfig};
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};

/// A scratch folder, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("btcore-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const GIB: u64 = 1 << 30;
/// 3 MiB: 4 GiB is not a multiple of it, so a piece straddles the 4 GiB mark.
const PIECE: u32 = 3 << 20;
const BIG: u64 = 5 * GIB + 123;
const SMALL: u64 = 40_000;
const TOTAL: u64 = BIG + SMALL;
/// The piece holding byte 4 GiB: [4095 MiB, 4098 MiB).
const STRADDLE_4G: u32 = ((4 * GIB) / PIECE as u64) as u32;
/// The last piece: [5118 MiB, end), the end of big.bin then all of small.txt.
const LAST: u32 = (TOTAL.div_ceil(PIECE as u64) - 1) as u32;
const WRITTEN: [u32; 3] = [STRADDLE_4G, STRADDLE_4G + 1, LAST];

/// The byte at torrent offset `i` (depends on the high bits too, so a wrapped offset
/// reads different data).
fn byte_at(i: u64) -> u8 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8 ^ (i >> 32) as u8
}

fn data(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|k| byte_at(offset + k)).collect()
}

fn piece_range(p: u32) -> (u64, usize) {
    let off = u64::from(p) * u64::from(PIECE);
    (off, (TOTAL - off).min(u64::from(PIECE)) as usize)
}

/// A two-file torrent; real hashes for `WRITTEN`, zeros elsewhere.
fn torrent() -> Vec<u8> {
    let n = TOTAL.div_ceil(u64::from(PIECE)) as usize;
    let mut pieces = vec![0u8; 20 * n];
    for p in WRITTEN {
        let (off, len) = piece_range(p);
        pieces[p as usize * 20..][..20].copy_from_slice(&sha1(&data(off, len)));
    }
    let mut e = Encoder::new(Vec::new());
    let mut build = || -> Result<(), core::convert::Infallible> {
        e.dict()?;
        e.bytes(b"info")?;
        e.dict()?;
        e.bytes(b"files")?;
        e.list()?;
        for (name, len) in [(&b"big.bin"[..], BIG), (&b"small.txt"[..], SMALL)] {
            e.dict()?;
            e.key_int(b"length", len as i64)?;
            e.bytes(b"path")?;
            e.list()?;
            e.bytes(name)?;
            e.end()?;
            e.end()?;
        }
        e.end()?;
        e.key_bytes(b"name", b"large")?;
        e.key_int(b"piece length", i64::from(PIECE))?;
        e.key_bytes(b"pieces", &pieces)?;
        e.end()?;
        e.end()
    };
    build().expect("encode into a Vec");
    e.into_inner()
}

/// Whether the filesystem under `dir` keeps a 5 GiB hole sparse.
fn sparse_ok(dir: &std::path::Path) -> bool {
    let probe = dir.join("probe");
    let ok = fs::File::create(&probe)
        .and_then(|f| f.write_all_at(b"x", BIG).map(|()| f))
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.blocks() * 512 < (64 << 20));
    let _ = fs::remove_file(&probe);
    ok
}

#[test]
fn metainfo_maps_pieces_past_four_gib() {
    let bytes = torrent();
    let mut tokens = Vec::new();
    let m = Metainfo::parse_vec(&bytes, &mut tokens, &Limits::default()).expect("parse");
    assert_eq!(m.total_size(), TOTAL);
    assert_eq!(m.num_pieces(), LAST + 1);
    assert_eq!(m.num_files(), 2);

    let files = m.layout().expect("layout");
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].path, "large/big.bin");
    assert_eq!((files[0].offset, files[0].length), (0, BIG));
    assert_eq!(files[1].path, "large/small.txt");
    assert_eq!((files[1].offset, files[1].length), (BIG, SMALL));

    let g = m.geometry();
    assert_eq!(STRADDLE_4G, 1365);
    assert_eq!(LAST, 1706);
    let p = PieceIndex(STRADDLE_4G);
    assert_eq!(g.piece_offset(p), 4095 << 20);
    assert!(g.piece_offset(p) < 4 * GIB && g.piece_offset(p) + u64::from(PIECE) > 4 * GIB);
    assert_eq!(g.piece_offset(PieceIndex(STRADDLE_4G + 1)), 4098 << 20);
    assert_eq!(g.piece_offset(PieceIndex(LAST)), 5118 << 20);
    assert_eq!(
        u64::from(g.piece_size(PieceIndex(LAST))),
        TOTAL - (5118 << 20)
    );
    assert_eq!(g.piece_size(PieceIndex(LAST)), (2 << 20) + 123 + 40_000);
    // The block holding byte 4 GiB: piece 1365, offset 1 MiB.
    let b = g.block(p, (1 << 20) / BLOCK_LEN).expect("block");
    assert_eq!(g.piece_offset(b.piece) + u64::from(b.offset), 4 * GIB);
    // Every hash is where the piece index says.
    for piece in WRITTEN {
        let (off, len) = piece_range(piece);
        assert_eq!(
            m.piece_hash(PieceIndex(piece)),
            Some(&sha1(&data(off, len))),
            "hash of piece {piece}"
        );
    }
}

#[test]
fn storage_writes_and_reads_past_four_gib() {
    let dir = TempDir::new("large-rw");
    if !sparse_ok(&dir.0) {
        eprintln!("skipping storage_writes_and_reads_past_four_gib: no sparse files here");
        return;
    }
    let bytes = torrent();
    let mut tokens = Vec::new();
    let m = Metainfo::parse_vec(&bytes, &mut tokens, &Limits::default()).expect("parse");
    let g = m.geometry();
    let save = dir.0.join("save");
    let s = Storage::new(
        &save,
        m.layout().expect("layout"),
        g,
        StorageConfig::default(),
    )
    .expect("storage");

    // Whole pieces, in the order: last (two files), past 4 GiB, across; the first two
    // as 16 KiB blocks through `write_vectored` (one `pwritev` per file), the one
    // across 4 GiB through `write`.
    for p in [LAST, STRADDLE_4G + 1, STRADDLE_4G] {
        let (off, len) = s.piece_range(p);
        assert_eq!((off, len as usize), piece_range(p));
        let bytes = data(off, len as usize);
        if p == STRADDLE_4G {
            s.write(off, &bytes).expect("write piece");
        } else {
            let blocks: Vec<&[u8]> = bytes.chunks(BLOCK_LEN as usize).collect();
            s.write_vectored(off, &blocks)
                .expect("write piece in blocks");
        }
    }

    // Read back whole pieces, and hash them as stored.
    let mut buf = vec![0u8; PIECE as usize];
    for p in WRITTEN {
        let (off, len) = piece_range(p);
        assert_eq!(s.read_piece(p, &mut buf).expect("read piece"), len);
        assert!(buf[..len] == data(off, len)[..], "piece {p} reads back");
        assert_eq!(
            Some(&s.hash_piece(p).expect("hash")),
            m.piece_hash(PieceIndex(p))
        );
    }
    let hashes = |p: u32| {
        btcore_host::storage::Expected::sha1(*m.piece_hash(PieceIndex(p)).expect("piece hash"))
    };
    assert_eq!(
        s.check_pieces(
            &[0, STRADDLE_4G - 1, STRADDLE_4G, STRADDLE_4G + 1, LAST],
            hashes
        ),
        WRITTEN
    );

    // Byte ranges across 4 GiB and across the file boundary.
    for (off, len) in [(4 * GIB - 7, 14usize), (BIG - 5, 10), (BIG + SMALL - 3, 3)] {
        let mut b = vec![0u8; len];
        s.read(off, &mut b).expect("read range");
        assert_eq!(b, data(off, len), "range at {off}");
    }
    // Past the end is refused, not wrapped.
    assert!(s.read(TOTAL - 1, &mut [0u8; 2]).is_err());
    assert!(s.write(TOTAL, b"x").is_err());

    // A block rewritten through `write_block` / `read_block` (the last block of the
    // piece after 4 GiB, and the short last block of the torrent).
    for (piece, n) in [
        (STRADDLE_4G + 1, PIECE / BLOCK_LEN - 1),
        (LAST, g.blocks_in_piece(PieceIndex(LAST)) - 1),
    ] {
        let b: BlockRef = g.block(PieceIndex(piece), n).expect("block");
        let at = g.piece_offset(b.piece) + u64::from(b.offset);
        let fresh: Vec<u8> = data(at, b.len as usize).iter().map(|x| !x).collect();
        s.write_block(&b, &fresh).expect("write block");
        let mut back = vec![0u8; b.len as usize];
        s.read_block(&b, &mut back).expect("read block");
        assert_eq!(back, fresh);
        s.write_block(&b, &data(at, b.len as usize))
            .expect("restore block");
    }
    s.sync().expect("sync");
    s.close_all();

    // On disk: at the right file offsets, nothing at the 4 GiB-wrapped ones.
    let big = fs::File::open(save.join("large/big.bin")).expect("big.bin");
    assert_eq!(big.metadata().expect("meta").len(), BIG);
    let mut raw = vec![0u8; 4096];
    big.read_exact_at(&mut raw, 4 * GIB)
        .expect("raw read at 4 GiB");
    assert_eq!(raw, data(4 * GIB, 4096));
    big.read_exact_at(&mut raw, 0).expect("raw read at 0");
    assert_eq!(raw, vec![0u8; 4096], "4 GiB wrapped onto offset 0");
    let (off, _) = piece_range(STRADDLE_4G + 1);
    big.read_exact_at(&mut raw, off - 4 * GIB)
        .expect("raw read low");
    assert_eq!(raw, vec![0u8; 4096], "a piece past 4 GiB wrapped");
    big.read_exact_at(&mut raw[..123], 5 * GIB)
        .expect("tail of big.bin");
    assert_eq!(raw[..123], data(5 * GIB, 123)[..]);
    let small = fs::read(save.join("large/small.txt")).expect("small.txt");
    assert_eq!(small, data(BIG, SMALL as usize));
    // Sparse: far less than 5 GiB is allocated.
    assert!(big.metadata().expect("meta").blocks() * 512 < (64 << 20));
}
