//! BEP 52 pieces through the disk pool: a hybrid piece whose pad bytes a peer sent as
//! garbage (pad bytes are never written: they read back as zeros) is judged on the
//! bytes on disk, so the torrent's two halves do not "disagree" over it.

use btcore_core::ids::{BlockRef, PieceIndex};
use btcore_core::metainfo::{Limits, Metainfo};
use btcore_core::session::TorrentId;
use btcore_host::disk::{DiskDone, DiskJob, DiskPool};
use btcore_host::storage::{expected_hashes, Storage, StorageConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn garbage_in_a_hybrid_pieces_pad_is_not_a_disagreement() {
    let dir = std::env::temp_dir().join(format!("btcore-v2-pad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let src = dir.join("t");
    std::fs::create_dir_all(&src).expect("src");
    // a.bin: 40,000 bytes: piece 1 holds its last 7,232 bytes and 25,536 of pad.
    let a: Vec<u8> = (0..40_000u32).map(|i| (i * 7) as u8).collect();
    let b: Vec<u8> = (0..50_000u32).map(|i| (i * 13) as u8).collect();
    std::fs::write(src.join("a.bin"), &a).expect("a");
    std::fs::write(src.join("b.bin"), &b).expect("b");
    let t = btcore_host::create::create_torrent(
        &src,
        &btcore_host::create::CreateOptions {
            piece_length: Some(32 * 1024),
            creation_date: Some(0),
            format: btcore_host::create::Format::Hybrid,
            ..Default::default()
        },
    )
    .expect("torrent");
    let mut tokens = Vec::new();
    let m = Metainfo::parse_vec(&t, &mut tokens, &Limits::default()).expect("parse");
    let expected = expected_hashes(&m);
    let dl = dir.join("dl");
    std::fs::create_dir_all(&dl).expect("dl");
    let layout = m.layout().expect("layout");
    let storage = Arc::new(
        Storage::new(&dl, layout, m.geometry(), StorageConfig::default()).expect("storage"),
    );
    let mut pool = DiskPool::new(1, 1 << 20, Arc::new(|| {}));
    let torrent = TorrentId(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    for (garbage, want_ok) in [(0xffu8, true), (0x00, true)] {
        let mut piece = a[32_768..].to_vec();
        piece.resize(32_768, garbage);
        for off in [0u32, 16_384] {
            pool.submit(DiskJob::Write {
                torrent,
                storage: storage.clone(),
                block: BlockRef {
                    piece: PieceIndex(1),
                    offset: off,
                    len: 16_384,
                },
                data: piece[off as usize..off as usize + 16_384].to_vec(),
            });
        }
        let mut written = 0;
        while written < 2 {
            match pool.try_done() {
                Some(DiskDone::Write { result, .. }) => {
                    result.expect("write");
                    written += 1;
                }
                _ => std::thread::yield_now(),
            }
            assert!(Instant::now() < deadline, "writes");
        }
        pool.submit(DiskJob::Verify {
            torrent,
            storage: storage.clone(),
            piece: PieceIndex(1),
            expected: expected[1],
            block_digests: false,
        });
        loop {
            if let Some(DiskDone::Verify { ok, disagree, .. }) = pool.try_done() {
                assert!(
                    !disagree,
                    "pad {garbage:#x}: a peer's pad bytes split the torrent"
                );
                assert_eq!(ok, want_ok, "pad {garbage:#x}");
                break;
            }
            assert!(Instant::now() < deadline, "verify");
            std::thread::yield_now();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
