//! Disk and hashing workers: a few threads that write blocks, read blocks for upload
//! and hash pieces, so the event loop never waits on a slow NAS disk. Jobs go in
//! through a channel; completions come back through another, and a waker call tells
//! the event loop to collect them. The session caps the bytes handed out for writing,
//! so the queue stays bounded.

use crate::storage::Storage;
use btcore_core::ids::{BlockRef, PieceIndex};
use btcore_core::session::{ConnId, DiskError, TorrentId};
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

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
    jobs: Option<Sender<DiskJob>>,
    done: Receiver<DiskDone>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for DiskPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DiskPool({} threads)", self.threads.len())
    }
}

impl DiskPool {
    /// Starts `threads` workers; `wake` is called after each completion.
    pub fn new(threads: usize, wake: Arc<dyn Fn() + Send + Sync>) -> Self {
        let (jtx, jrx) = unbounded::<DiskJob>();
        let (dtx, drx) = unbounded::<DiskDone>();
        let threads = (0..threads.max(1))
            .map(|i| {
                let jrx = jrx.clone();
                let dtx = dtx.clone();
                let wake = wake.clone();
                std::thread::Builder::new()
                    .name(format!("btcore-disk-{i}"))
                    .spawn(move || {
                        for job in jrx {
                            if let Some(done) = run(job) {
                                if dtx.send(done).is_err() {
                                    return;
                                }
                                wake();
                            }
                        }
                    })
                    .expect("spawn disk worker")
            })
            .collect();
        Self {
            jobs: Some(jtx),
            done: drx,
            threads,
        }
    }

    /// Queues a job.
    pub fn submit(&self, job: DiskJob) {
        if let Some(tx) = &self.jobs {
            let _ = tx.send(job);
        }
    }

    /// A finished job, if any.
    pub fn try_done(&self) -> Option<DiskDone> {
        self.done.try_recv().ok()
    }

    /// Finishes every queued job and stops the workers.
    pub fn shutdown(&mut self) -> Vec<DiskDone> {
        self.jobs = None;
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

fn run(job: DiskJob) -> Option<DiskDone> {
    Some(match job {
        DiskJob::Write {
            torrent,
            storage,
            block,
            data,
        } => DiskDone::Write {
            torrent,
            block,
            result: storage
                .write(offset(&storage, &block), &data)
                .map_err(|e| e.to_core()),
        },
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
        } => DiskDone::Verify {
            torrent,
            piece,
            ok: storage.hash_piece(piece.0).is_ok_and(|h| h == expected),
        },
        DiskJob::Task(f) => {
            f();
            return None;
        }
    })
}
