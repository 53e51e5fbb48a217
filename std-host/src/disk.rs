//! Disk and hashing workers: a few threads that write blocks, read blocks for upload
//! and hash pieces, so the event loop never waits on a slow NAS disk. Jobs go in
//! through a channel; completions come back through another, and a waker call tells
//! the event loop to collect them. The session caps the bytes handed out for writing,
//! so the queue stays bounded.
//!
//! Jobs are sharded by piece: every write, read and check of one piece goes to the same
//! worker, in the order the session issued them. That lets a worker hash a piece as its
//! blocks are written, in order, from the bytes in memory; the check at the end is then
//! a comparison, not a read of the piece back from disk. A piece whose blocks came out of
//! order, twice, or with a failed write is read back and hashed as before. Tasks (resume
//! saving, with its `fsync`) run on a thread of their own, so a slow flush holds up no
//! block.

use crate::hash::FastSha1;
use crate::storage::Storage;
use btcore_core::hash::Sha1;
use btcore_core::ids::{BlockRef, PieceIndex};
use btcore_core::session::{ConnId, DiskError, TorrentId};
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Pieces one worker hashes as they are written; past this many (pieces of removed
/// torrents, say) the table is cleared and those pieces are read back when checked.
const MAX_HASHING: usize = 4096;
/// Bytes of blocks that arrived ahead of their turn a worker keeps by default (after
/// writing them) until the gap before them is filled: peers answer requests out of
/// order when their own disk reads finish out of order. See [`DiskPool::new`].
pub const AHEAD_BYTES: usize = 2 << 20;
/// Most jobs a worker runs before it reports back to the loop.
const MAX_BATCH: usize = 16;
/// Blocks ahead of their turn kept per piece (the bytes are bounded by the worker's
/// `max_ahead`; this bounds the scan of a piece's list). A seeder whose disk reads finish
/// out of order (libtorrent's) sends blocks up to half a 1 MiB piece early; with 32 here,
/// one piece in fifteen was read back from the disk to be checked.
const MAX_AHEAD_BLOCKS: usize = 256;

/// A piece's hash so far.
enum Partial {
    /// Every block from offset 0 to `next` was written once and hashed in order;
    /// `ahead` holds blocks written once beyond `next`, by offset, not hashed yet.
    InOrder {
        next: u32,
        hasher: FastSha1,
        ahead: Vec<(u32, Vec<u8>)>,
    },
    /// Not hashable from memory: read back when checked.
    Broken,
}

/// One worker's pieces in progress.
struct Hashing {
    pieces: HashMap<(TorrentId, u32), Partial>,
    /// Bytes held in every piece's `ahead`.
    ahead_bytes: usize,
    /// The most `ahead_bytes` may be.
    max_ahead: usize,
}

impl Default for Hashing {
    fn default() -> Self {
        Self::new(AHEAD_BYTES)
    }
}

impl Hashing {
    fn new(max_ahead: usize) -> Self {
        Self {
            pieces: HashMap::new(),
            ahead_bytes: 0,
            max_ahead,
        }
    }

    /// After the write of `block` (`ok`: it succeeded), with its bytes.
    fn written(&mut self, torrent: TorrentId, block: &BlockRef, data: Vec<u8>, ok: bool) {
        if self.pieces.len() >= MAX_HASHING {
            self.pieces.clear();
            self.ahead_bytes = 0;
        }
        let e = self
            .pieces
            .entry((torrent, block.piece.0))
            .or_insert(Partial::InOrder {
                next: 0,
                hasher: FastSha1::default(),
                ahead: Vec::new(),
            });
        let Partial::InOrder {
            next,
            hasher,
            ahead,
        } = e
        else {
            return;
        };
        let at = block.offset;
        let fits =
            self.ahead_bytes + data.len() <= self.max_ahead && ahead.len() < MAX_AHEAD_BLOCKS;
        let fresh = at >= *next && !ahead.iter().any(|(o, _)| *o == at);
        if ok && at == *next {
            hasher.update(&data);
            *next += data.len() as u32;
            // Blocks that were waiting for this one.
            while let Some(i) = ahead.iter().position(|(o, _)| *o == *next) {
                let (_, d) = ahead.swap_remove(i);
                hasher.update(&d);
                *next += d.len() as u32;
                self.ahead_bytes -= d.len();
            }
        } else if ok && fresh && fits {
            self.ahead_bytes += data.len();
            ahead.push((at, data));
        } else {
            // A failed write, a block written twice (an endgame duplicate may differ
            // from what was hashed), or too much out of order: read back when checked.
            log::trace!(
                "{torrent:?} piece {}: block at {at} (ok: {ok}) after {next}: read back",
                block.piece.0
            );
            self.ahead_bytes -= ahead.iter().map(|(_, d)| d.len()).sum::<usize>();
            *e = Partial::Broken;
        }
    }

    fn release(&mut self, p: &Partial) {
        if let Partial::InOrder { ahead, .. } = p {
            self.ahead_bytes -= ahead.iter().map(|(_, d)| d.len()).sum::<usize>();
        }
    }

    /// The piece's digest when every byte of its `len` was hashed from memory.
    fn take(&mut self, torrent: TorrentId, piece: PieceIndex, len: u32) -> Option<[u8; 20]> {
        let p = self.pieces.remove(&(torrent, piece.0))?;
        self.release(&p);
        match p {
            Partial::InOrder { next, hasher, .. } if next == len => Some(hasher.finish()),
            _ => None,
        }
    }

    fn forget_torrent(&mut self, torrent: TorrentId) {
        let gone: Vec<_> = self
            .pieces
            .keys()
            .filter(|k| k.0 == torrent)
            .copied()
            .collect();
        for k in gone {
            if let Some(p) = self.pieces.remove(&k) {
                self.release(&p);
            }
        }
    }
}

/// Work for a disk worker.
#[allow(missing_debug_implementations)]
pub enum DiskJob {
    /// Write a block.
    Write {
        /// Torrent.
        torrent: TorrentId,
        /// Storage of the torrent.
        storage: Arc<Storage>,
        /// The block.
        block: BlockRef,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// Read a block for upload.
    Read {
        /// Torrent.
        torrent: TorrentId,
        /// Storage of the torrent.
        storage: Arc<Storage>,
        /// Who asked.
        conn: ConnId,
        /// The block.
        block: BlockRef,
    },
    /// Hash a piece and compare.
    Verify {
        /// Torrent.
        torrent: TorrentId,
        /// Storage of the torrent.
        storage: Arc<Storage>,
        /// The piece.
        piece: PieceIndex,
        /// Its expected SHA-1.
        expected: [u8; 20],
    },
    /// Run any closure off the loop (resume saving, rechecks).
    Task(Box<dyn FnOnce() + Send>),
    /// A torrent is gone: drop the hashes of its pieces in progress.
    Forget {
        /// Torrent.
        torrent: TorrentId,
    },
}

/// A finished job.
#[derive(Debug)]
pub enum DiskDone {
    /// A write finished.
    Write {
        /// Torrent.
        torrent: TorrentId,
        /// The block.
        block: BlockRef,
        /// Outcome.
        result: Result<(), DiskError>,
    },
    /// A read finished.
    Read {
        /// Torrent.
        torrent: TorrentId,
        /// Who asked.
        conn: ConnId,
        /// The block.
        block: BlockRef,
        /// The bytes.
        result: Result<Vec<u8>, DiskError>,
    },
    /// A piece was hashed.
    Verify {
        /// Torrent.
        torrent: TorrentId,
        /// The piece.
        piece: PieceIndex,
        /// Whether it matched.
        ok: bool,
    },
}

/// The worker pool.
pub struct DiskPool {
    /// One queue per worker.
    jobs: Vec<Sender<DiskJob>>,
    done: Receiver<DiskDone>,
    threads: Vec<JoinHandle<()>>,
    /// The queue of the thread that runs tasks (resume saving with its `fsync`), apart
    /// from the workers: a slow flush holds up no block.
    tasks: Option<Sender<DiskJob>>,
    /// Set by the worker that woke the loop, cleared when the loop found the queue
    /// empty: one wake-up per batch of completions, not one per block.
    wake_pending: Arc<AtomicBool>,
}

impl std::fmt::Debug for DiskPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DiskPool({} threads)", self.threads.len())
    }
}

impl DiskPool {
    /// Starts `threads` workers; `wake` is called when a completion arrives and the
    /// loop has not looked since the last call (it must then drain `try_done`).
    ///
    /// Each worker keeps up to `ahead_bytes` of blocks that came before their turn, to
    /// hash their pieces from memory ([`AHEAD_BYTES`] by default; small devices give
    /// less, and 0 reads every out-of-order piece back).
    pub fn new(threads: usize, ahead_bytes: usize, wake: Arc<dyn Fn() + Send + Sync>) -> Self {
        let (dtx, drx) = unbounded::<DiskDone>();
        let wake_pending = Arc::new(AtomicBool::new(false));
        let mut jobs = Vec::new();
        let mut threads: Vec<JoinHandle<()>> = (0..threads.max(1))
            .map(|i| {
                let (jtx, jrx) = unbounded::<DiskJob>();
                jobs.push(jtx);
                let dtx = dtx.clone();
                let wake = wake.clone();
                let pending = wake_pending.clone();
                std::thread::Builder::new()
                    .name(format!("btcore-disk-{i}"))
                    .spawn(move || {
                        let mut hashing = Hashing::new(ahead_bytes);
                        // Jobs queued together run together, and the loop is woken
                        // once after them.
                        while let Ok(first) = jrx.recv() {
                            let mut job = Some(first);
                            let (mut ran, mut sent) = (0, false);
                            while let Some(j) = job.take() {
                                if let Some(done) = run(j, &mut hashing) {
                                    if dtx.send(done).is_err() {
                                        return;
                                    }
                                    sent = true;
                                }
                                ran += 1;
                                if ran < MAX_BATCH {
                                    job = jrx.try_recv().ok();
                                }
                            }
                            if sent && !pending.swap(true, Ordering::SeqCst) {
                                wake();
                            }
                        }
                    })
                    .expect("spawn disk worker")
            })
            .collect();
        let (ttx, trx) = unbounded::<DiskJob>();
        threads.push(
            std::thread::Builder::new()
                .name("btcore-tasks".into())
                .spawn(move || {
                    for job in trx {
                        if let DiskJob::Task(f) = job {
                            f();
                        }
                    }
                })
                .expect("spawn task thread"),
        );
        Self {
            jobs,
            done: drx,
            threads,
            tasks: Some(ttx),
            wake_pending,
        }
    }

    /// Queues a job: on the worker of its piece, or the next one for a task.
    pub fn submit(&self, job: DiskJob) {
        if self.jobs.is_empty() {
            return;
        }
        let n = self.jobs.len();
        let worker = match &job {
            DiskJob::Write { block, .. } | DiskJob::Read { block, .. } => {
                block.piece.0 as usize % n
            }
            DiskJob::Verify { piece, .. } => piece.0 as usize % n,
            DiskJob::Forget { torrent } => {
                // Every worker forgets the torrent's pieces.
                for tx in &self.jobs {
                    let _ = tx.send(DiskJob::Forget { torrent: *torrent });
                }
                return;
            }
            DiskJob::Task(_) => {
                if let Some(tx) = &self.tasks {
                    let _ = tx.send(job);
                }
                return;
            }
        };
        let _ = self.jobs[worker].send(job);
    }

    /// A finished job, if any.
    pub fn try_done(&self) -> Option<DiskDone> {
        if let Ok(d) = self.done.try_recv() {
            return Some(d);
        }
        // Empty: the next completion wakes the loop again. Look once more, for one
        // that came after the look above but before the flag was cleared.
        self.wake_pending.store(false, Ordering::SeqCst);
        self.done.try_recv().ok()
    }

    /// Finishes every queued job and stops the workers.
    pub fn shutdown(&mut self) -> Vec<DiskDone> {
        self.jobs.clear();
        self.tasks = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.done.try_iter().collect()
    }
}

impl Drop for DiskPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn offset(storage: &Storage, block: &BlockRef) -> u64 {
    storage.geometry().piece_offset(block.piece) + u64::from(block.offset)
}

fn run(job: DiskJob, hashing: &mut Hashing) -> Option<DiskDone> {
    Some(match job {
        DiskJob::Write {
            torrent,
            storage,
            block,
            data,
        } => {
            let result = storage
                .write(offset(&storage, &block), &data)
                .map_err(|e| e.to_core());
            hashing.written(torrent, &block, data, result.is_ok());
            DiskDone::Write {
                torrent,
                block,
                result,
            }
        }
        DiskJob::Read {
            torrent,
            storage,
            conn,
            block,
        } => {
            let mut buf = vec![0u8; block.len as usize];
            let result = storage
                .read(offset(&storage, &block), &mut buf)
                .map(|()| buf)
                .map_err(|e| e.to_core());
            DiskDone::Read {
                torrent,
                conn,
                block,
                result,
            }
        }
        DiskJob::Verify {
            torrent,
            storage,
            piece,
            expected,
        } => {
            let len = storage.geometry().piece_size(piece);
            let digest = match hashing.take(torrent, piece, len) {
                Some(d) => Ok(d),
                None => {
                    log::trace!("{torrent:?} piece {}: read back to be checked", piece.0);
                    storage.hash_piece(piece.0)
                }
            };
            DiskDone::Verify {
                torrent,
                piece,
                ok: digest.is_ok_and(|h| h == expected),
            }
        }
        DiskJob::Task(f) => {
            f();
            return None;
        }
        DiskJob::Forget { torrent } => {
            hashing.forget_torrent(torrent);
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use btcore_core::hash::sha1;
    use btcore_core::ids::Geometry;
    use btcore_core::metainfo::{FileAttr, FileSpec};

    const T: TorrentId = TorrentId(1);

    fn block(piece: u32, offset: u32, len: u32) -> BlockRef {
        BlockRef {
            piece: PieceIndex(piece),
            offset,
            len,
        }
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn in_order_blocks_hash_to_the_piece_digest() {
        let piece = data(40_000, 1);
        let mut h = Hashing::default();
        for (i, c) in piece.chunks(16_384).enumerate() {
            h.written(
                T,
                &block(3, (i * 16_384) as u32, c.len() as u32),
                c.to_vec(),
                true,
            );
        }
        assert_eq!(h.take(T, PieceIndex(3), 40_000), Some(sha1(&piece)));
        // Taken once: the next check reads back.
        assert_eq!(h.take(T, PieceIndex(3), 40_000), None);
    }

    #[test]
    fn blocks_out_of_order_are_held_until_their_turn() {
        let piece = data(5 * 16_384, 4);
        let blocks: Vec<Vec<u8>> = piece.chunks(16_384).map(<[u8]>::to_vec).collect();
        let mut h = Hashing::default();
        for i in [2usize, 1, 4, 0, 3] {
            h.written(
                T,
                &block(7, (i * 16_384) as u32, 16_384),
                blocks[i].clone(),
                true,
            );
        }
        assert_eq!(h.take(T, PieceIndex(7), 5 * 16_384), Some(sha1(&piece)));
        assert_eq!(h.ahead_bytes, 0);
        // More blocks ahead than a piece may hold: read back.
        for i in (1..=MAX_AHEAD_BLOCKS + 1).rev() {
            h.written(T, &block(8, (i * 16) as u32, 16), vec![1; 16], true);
        }
        h.written(T, &block(8, 0, 16), vec![1; 16], true);
        assert_eq!(
            h.take(T, PieceIndex(8), 16 * (MAX_AHEAD_BLOCKS as u32 + 2)),
            None
        );
        assert_eq!(h.ahead_bytes, 0);
    }

    #[test]
    fn anything_but_one_clean_pass_falls_back_to_reading() {
        let piece = data(32_768, 2);
        let (a, b) = piece.split_at(16_384);
        let (a, b) = (a.to_vec(), b.to_vec());
        let mut h = Hashing::default();
        // A block written twice (an endgame duplicate may differ from what was hashed),
        // before or after its turn.
        h.written(T, &block(0, 0, 16_384), a.clone(), true);
        h.written(T, &block(0, 0, 16_384), a.clone(), true);
        h.written(T, &block(0, 16_384, 16_384), b.clone(), true);
        assert_eq!(h.take(T, PieceIndex(0), 32_768), None);
        h.written(T, &block(0, 16_384, 16_384), b.clone(), true);
        h.written(T, &block(0, 16_384, 16_384), b.clone(), true);
        h.written(T, &block(0, 0, 16_384), a.clone(), true);
        assert_eq!(h.take(T, PieceIndex(0), 32_768), None);
        // A failed write.
        h.written(T, &block(0, 0, 16_384), a.clone(), false);
        h.written(T, &block(0, 16_384, 16_384), b.clone(), true);
        assert_eq!(h.take(T, PieceIndex(0), 32_768), None);
        // Incomplete.
        h.written(T, &block(0, 0, 16_384), a.clone(), true);
        assert_eq!(h.take(T, PieceIndex(0), 32_768), None);
        // Another torrent's piece of the same index is another piece.
        h.written(T, &block(0, 0, 16_384), a.clone(), true);
        h.written(TorrentId(2), &block(0, 16_384, 16_384), b.clone(), true);
        h.written(T, &block(0, 16_384, 16_384), b, true);
        assert_eq!(h.take(T, PieceIndex(0), 32_768), Some(sha1(&piece)));
        assert_eq!(h.ahead_bytes, 16_384);
        h.forget_torrent(TorrentId(2));
        assert!(h.pieces.is_empty());
        assert_eq!(h.ahead_bytes, 0);
    }

    /// A task that takes its time (a resume save waiting on `fsync`) holds up no write.
    #[test]
    fn a_slow_task_holds_up_no_write() {
        let dir = std::env::temp_dir().join(format!("btcore-disk-task-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let g = Geometry::new(4 * 16_384, 16_384).expect("geometry");
        let files = vec![FileSpec {
            index: 0,
            path: "f.bin".into(),
            offset: 0,
            length: 4 * 16_384,
            attr: FileAttr::default(),
            symlink_target: None,
        }];
        let storage = Arc::new(
            Storage::new(&dir, files, g, crate::storage::StorageConfig::default())
                .expect("storage"),
        );
        let pool = DiskPool::new(2, AHEAD_BYTES, Arc::new(|| {}));
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        pool.submit(DiskJob::Task(Box::new(move || {
            let _ = blocked.recv_timeout(std::time::Duration::from_secs(20));
        })));
        for p in 0..4 {
            pool.submit(DiskJob::Write {
                torrent: T,
                storage: storage.clone(),
                block: block(p, 0, 16_384),
                data: data(16_384, p as u8),
            });
        }
        let start = std::time::Instant::now();
        let mut written = 0;
        while written < 4 && start.elapsed() < std::time::Duration::from_secs(10) {
            match pool.try_done() {
                Some(DiskDone::Write { result, .. }) => {
                    result.expect("written");
                    written += 1;
                }
                _ => std::thread::yield_now(),
            }
        }
        let _ = release.send(());
        assert_eq!(written, 4, "writes waited for the task");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Through the pool: pieces written in order, out of order and not at all are all
    /// checked right, from memory or from the disk.
    #[test]
    fn pool_checks_pieces_hashed_in_memory_or_read_back() {
        let dir = std::env::temp_dir().join(format!("btcore-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let piece_len = 32_768u32;
        let total = u64::from(piece_len) * 3;
        let g = Geometry::new(total, piece_len).expect("geometry");
        let files = vec![FileSpec {
            index: 0,
            path: "f.bin".into(),
            offset: 0,
            length: total,
            attr: FileAttr::default(),
            symlink_target: None,
        }];
        let storage = Arc::new(
            Storage::new(&dir, files, g, crate::storage::StorageConfig::default())
                .expect("storage"),
        );
        let content = data(total as usize, 9);
        let pool = DiskPool::new(2, AHEAD_BYTES, Arc::new(|| {}));
        let piece = |p: u32| &content[(p * piece_len) as usize..((p + 1) * piece_len) as usize];
        // Piece 0 in order, piece 1 out of order; piece 2 written straight to the file.
        let half = piece_len / 2;
        for (p, offs) in [(0u32, [0, half]), (1, [half, 0])] {
            for off in offs {
                pool.submit(DiskJob::Write {
                    torrent: T,
                    storage: storage.clone(),
                    block: block(p, off, half),
                    data: piece(p)[off as usize..(off + half) as usize].to_vec(),
                });
            }
        }
        storage
            .write(u64::from(2 * piece_len), piece(2))
            .expect("write");
        let mut writes = 0;
        while writes < 4 {
            if let Some(DiskDone::Write { result, .. }) = pool.try_done() {
                result.expect("written");
                writes += 1;
            }
        }
        for (p, good) in [(0, true), (1, true), (2, true), (0, false), (1, false)] {
            let mut expected = sha1(piece(p));
            if !good {
                expected[0] ^= 1;
            }
            pool.submit(DiskJob::Verify {
                torrent: T,
                storage: storage.clone(),
                piece: PieceIndex(p),
                expected,
            });
            let ok = loop {
                if let Some(DiskDone::Verify { ok, .. }) = pool.try_done() {
                    break ok;
                }
                std::thread::yield_now();
            };
            assert_eq!(ok, good, "piece {p}, expected to match: {good}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
