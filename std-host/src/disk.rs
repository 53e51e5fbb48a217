//! Disk and hashing workers: a few threads that write blocks, read blocks for upload
//! and hash pieces, so the event loop never waits on a slow NAS disk. Jobs go in
//! through a queue per worker; completions come back through a shared one, and a waker
//! call tells the event loop to collect them. The session caps the bytes handed out for
//! writing, so the queue stays bounded.
//!
//! The loop hands jobs over in batches: [`DiskPool::submit`] only queues, and
//! [`DiskPool::flush`] (at the end of each turn of the loop) sends each worker its jobs
//! of that turn at once. A worker that sleeps is then woken once per turn, not once per
//! 16 KiB block: on a 2-core box, those wake-ups and the context switches they cost
//! were the largest part of the leecher's CPU time after the copies.
//!
//! Jobs are sharded by piece: every write, read and check of one piece goes to the same
//! worker, in the order the session issued them. That lets a worker hash a piece as its
//! blocks are written, in order, from the bytes in memory; the check at the end is then
//! a comparison, not a read of the piece back from disk. A piece whose blocks came out of
//! order, twice, or with a failed write is read back and hashed as before. Tasks (resume
//! saving, with its `fsync`) run on a thread of their own, so a slow flush holds up no
//! block.

use crate::hash::FastSha1;
use crate::storage::{Expected, Storage, StorageError, Verdict};
use btcore_core::bitfield::Bitfield;
use btcore_core::hash::Sha1;
use btcore_core::ids::{BlockRef, PieceIndex};
use btcore_core::session::{ConnId, TorrentId};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// Pieces one worker hashes as they are written; past this many (pieces of removed
/// torrents, say) the table is cleared and those pieces are read back when checked.
const MAX_HASHING: usize = 4096;
/// Bytes of blocks that arrived ahead of their turn a worker keeps by default (after
/// writing them) until the gap before them is filled: peers answer requests out of
/// order when their own disk reads finish out of order. See [`DiskPool::new`].
pub const AHEAD_BYTES: usize = 2 << 20;
/// Most jobs a worker takes from its queue at once before it runs them and reports
/// back to the loop (a worker behind the loop catches up in steps of this many).
const MAX_BATCH: usize = 64;
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
    /// Hash a piece and compare; a piece that does not match (or any, with
    /// `block_digests`) is read back to hash each of its blocks.
    Verify {
        /// Torrent.
        torrent: TorrentId,
        /// Storage of the torrent.
        storage: Arc<Storage>,
        /// The piece.
        piece: PieceIndex,
        /// What it must hash to (v1, v2 or both).
        expected: Expected,
        /// Give the block digests even when the piece matches.
        block_digests: bool,
    },
    /// Run any closure off the loop (resume saving, rechecks).
    Task(Box<dyn FnOnce() + Send>),
    /// Check the data of a torrent already on disk (on a thread of its own, one
    /// torrent at a time, as libtorrent does: two checks at once on one disk only
    /// seek).
    Check {
        /// Torrent.
        torrent: TorrentId,
        /// Storage of the torrent.
        storage: Arc<Storage>,
        /// What every piece must hash to.
        hashes: Vec<Expected>,
        /// Progress, and the flag that stops the check.
        progress: Arc<CheckProgress>,
    },
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
        /// Outcome (the storage error keeps the file and the OS error number;
        /// [`StorageError::to_core`] gives the session's view).
        result: Result<(), StorageError>,
    },
    /// Reads finished: blocks that follow each other in the torrent, read at once.
    Read {
        /// Torrent.
        torrent: TorrentId,
        /// Who asked for each block, and the block, in order.
        reads: Vec<(ConnId, BlockRef)>,
        /// The bytes of every block, one after another.
        result: Result<Vec<u8>, StorageError>,
    },
    /// A piece was hashed.
    Verify {
        /// Torrent.
        torrent: TorrentId,
        /// The piece.
        piece: PieceIndex,
        /// Whether it matched.
        ok: bool,
        /// A hybrid piece that matched one of its hashes and not the other.
        disagree: bool,
        /// The SHA-1 of each block as read, when the piece failed or they were asked
        /// for (empty otherwise, or if the read back failed).
        digests: Vec<[u8; 20]>,
    },
    /// A check finished (a cancelled one reports nothing).
    Checked {
        /// Torrent.
        torrent: TorrentId,
        /// The pieces that verified.
        have: Bitfield,
    },
}

/// How far a [`DiskJob::Check`] is, shared with the loop for display.
#[derive(Debug, Default)]
pub struct CheckProgress {
    /// Pieces checked so far.
    pub checked: AtomicU32,
    /// Pieces to check.
    pub total: u32,
    /// Set to stop the check (the torrent was removed, the client stops).
    pub cancel: AtomicBool,
}

impl CheckProgress {
    /// A check of `total` pieces, not started.
    pub fn new(total: u32) -> Self {
        Self {
            total,
            ..Self::default()
        }
    }
}

/// One worker's queue: the loop appends a turn's jobs under the lock and signals only
/// a worker that sleeps. A worker that finds it empty sleeps on the condition variable
/// at once: a channel that spins and yields before it parks costs a context switch per
/// yield, and on a 2-core box those were a third of the leecher's switches.
#[derive(Default)]
struct JobQueue {
    state: Mutex<JobState>,
    ready: Condvar,
}

#[derive(Default)]
struct JobState {
    jobs: Vec<DiskJob>,
    /// The worker waits on `ready`.
    sleeping: bool,
    /// No more jobs will come: run what is queued, then stop.
    closed: bool,
}

impl JobQueue {
    fn lock(&self) -> MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, jobs: &mut Vec<DiskJob>) {
        let mut s = self.lock();
        if s.jobs.is_empty() {
            std::mem::swap(&mut s.jobs, jobs);
        } else {
            s.jobs.append(jobs);
        }
        let wake = s.sleeping;
        drop(s);
        if wake {
            self.ready.notify_one();
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Up to [`MAX_BATCH`] jobs, waiting for some; none once closed and drained.
    fn take(&self, into: &mut Vec<DiskJob>) {
        let mut s = self.lock();
        while s.jobs.is_empty() && !s.closed {
            s.sleeping = true;
            s = self.ready.wait(s).unwrap_or_else(PoisonError::into_inner);
            s.sleeping = false;
        }
        if s.jobs.len() <= MAX_BATCH {
            std::mem::swap(&mut s.jobs, into);
        } else {
            into.extend(s.jobs.drain(..MAX_BATCH));
        }
    }
}

/// Completions on their way back to the loop; the loop takes them all under one lock.
struct DoneQueue {
    done: Mutex<Vec<DiskDone>>,
    /// Set by the worker that woke the loop, cleared when the loop takes the queue:
    /// one wake-up per batch of completions, not one per block.
    wake_pending: AtomicBool,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl DoneQueue {
    fn push(&self, done: &mut Vec<DiskDone>) {
        if done.is_empty() {
            return;
        }
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .append(done);
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            (self.wake)();
        }
    }

    fn take(&self, into: &mut VecDeque<DiskDone>) {
        // Cleared first: a completion pushed after the take below wakes the loop again.
        self.wake_pending.store(false, Ordering::SeqCst);
        let mut d = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        into.extend(d.drain(..));
    }
}

/// The worker pool.
pub struct DiskPool {
    /// One queue per worker; the loop appends each turn's jobs at once.
    queues: Vec<Arc<JobQueue>>,
    /// Jobs submitted this turn and not sent yet, per worker.
    pending: Vec<Vec<DiskJob>>,
    done: Arc<DoneQueue>,
    /// Completions taken from `done` and not handed to the loop yet.
    ready: VecDeque<DiskDone>,
    threads: Vec<JoinHandle<()>>,
    /// The queue of the thread that runs tasks (resume saving with its `fsync`), apart
    /// from the workers: a slow flush holds up no block.
    tasks: Option<Arc<JobQueue>>,
    /// The queue of the thread that checks torrents' data, one torrent at a time.
    checks: Option<Arc<JobQueue>>,
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
        let done = Arc::new(DoneQueue {
            done: Mutex::new(Vec::new()),
            wake_pending: AtomicBool::new(false),
            wake,
        });
        let mut queues = Vec::new();
        let mut threads: Vec<JoinHandle<()>> = (0..threads.max(1))
            .map(|i| {
                let queue = Arc::new(JobQueue::default());
                queues.push(queue.clone());
                let mut hashing = Hashing::new(ahead_bytes);
                // Jobs queued together run together (writes of adjacent blocks in one
                // `pwritev`), and the loop is woken once after them.
                let mut run = Gather::default();
                spawn_queue(
                    &format!("btcore-disk-{i}"),
                    queue,
                    done.clone(),
                    move |jobs, out| {
                        for j in jobs.drain(..) {
                            run.job(j, &mut hashing, out);
                        }
                        run.flush(&mut hashing, out);
                    },
                )
            })
            .collect();
        let tasks = Arc::new(JobQueue::default());
        let aside_all = |jobs: &mut Vec<DiskJob>, out: &mut Vec<DiskDone>| {
            out.extend(jobs.drain(..).filter_map(aside));
        };
        threads.push(spawn_queue(
            "btcore-tasks",
            tasks.clone(),
            done.clone(),
            aside_all,
        ));
        let checks = Arc::new(JobQueue::default());
        threads.push(spawn_queue(
            "btcore-check",
            checks.clone(),
            done.clone(),
            aside_all,
        ));
        Self {
            pending: queues.iter().map(|_| Vec::new()).collect(),
            queues,
            done,
            ready: VecDeque::new(),
            threads,
            tasks: Some(tasks),
            checks: Some(checks),
        }
    }

    /// Queues a job for the worker of its piece (tasks go to the task thread at once).
    /// Worker jobs are sent by the next [`flush`](Self::flush) or
    /// [`try_done`](Self::try_done).
    pub fn submit(&mut self, job: DiskJob) {
        if self.queues.is_empty() {
            return;
        }
        let n = self.queues.len();
        let worker = match &job {
            DiskJob::Write { block, .. } | DiskJob::Read { block, .. } => {
                block.piece.0 as usize % n
            }
            DiskJob::Verify { piece, .. } => piece.0 as usize % n,
            DiskJob::Forget { torrent } => {
                // Every worker forgets the torrent's pieces.
                let torrent = *torrent;
                for p in &mut self.pending {
                    p.push(DiskJob::Forget { torrent });
                }
                return;
            }
            DiskJob::Task(_) => {
                if let Some(q) = &self.tasks {
                    q.push(&mut vec![job]);
                }
                return;
            }
            DiskJob::Check { .. } => {
                if let Some(q) = &self.checks {
                    q.push(&mut vec![job]);
                }
                return;
            }
        };
        self.pending[worker].push(job);
    }

    /// Hands every worker the jobs queued for it since the last flush, at once.
    pub fn flush(&mut self) {
        for (q, p) in self.queues.iter().zip(&mut self.pending) {
            if !p.is_empty() {
                q.push(p);
            }
        }
    }

    /// A finished job, if any (jobs still queued are sent first).
    pub fn try_done(&mut self) -> Option<DiskDone> {
        if let Some(d) = self.ready.pop_front() {
            return Some(d);
        }
        self.flush();
        self.done.take(&mut self.ready);
        self.ready.pop_front()
    }

    /// Finishes every queued job and stops the workers.
    pub fn shutdown(&mut self) -> Vec<DiskDone> {
        self.flush();
        for q in self
            .queues
            .drain(..)
            .chain(self.tasks.take())
            .chain(self.checks.take())
        {
            q.close();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.done.take(&mut self.ready);
        self.ready.drain(..).collect()
    }
}

impl Drop for DiskPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A thread that takes the jobs of `queue` in batches, runs each batch with `batch`
/// (which reports into its second argument), and hands the reports to `done`, until
/// the queue is closed and drained. Workers run [`Gather`]; the threads beside them
/// (tasks, checks) run [`aside`].
fn spawn_queue(
    name: &str,
    queue: Arc<JobQueue>,
    done: Arc<DoneQueue>,
    mut batch: impl FnMut(&mut Vec<DiskJob>, &mut Vec<DiskDone>) + Send + 'static,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut jobs = Vec::new();
            let mut out = Vec::new();
            loop {
                queue.take(&mut jobs);
                if jobs.is_empty() {
                    return;
                }
                batch(&mut jobs, &mut out);
                done.push(&mut out);
            }
        })
        .expect("spawn disk thread")
}

/// Runs a job that needs no worker's state: a task, or a check (its result, nothing
/// when cancelled). The other jobs are the workers' ([`Gather`]) and give nothing here.
fn aside(job: DiskJob) -> Option<DiskDone> {
    match job {
        DiskJob::Task(f) => {
            f();
            None
        }
        DiskJob::Check {
            torrent,
            storage,
            hashes,
            progress,
        } => {
            let hash = |p: u32| hashes.get(p as usize).copied().unwrap_or_default();
            let have = storage.check(None, hash, || {
                progress.checked.fetch_add(1, Ordering::Relaxed);
                !progress.cancel.load(Ordering::Relaxed)
            })?;
            Some(DiskDone::Checked { torrent, have })
        }
        _ => None,
    }
}

fn offset(storage: &Storage, block: &BlockRef) -> u64 {
    storage.geometry().piece_offset(block.piece) + u64::from(block.offset)
}

/// Most bytes in one run of writes or reads.
const MAX_RUN: usize = 256 << 10;

/// Where a run of blocks lies: blocks of one torrent, each starting where the one before
/// ends.
#[derive(Default)]
struct Span {
    storage: Option<Arc<Storage>>,
    torrent: Option<TorrentId>,
    /// Where the first block lies, in the torrent.
    start: u64,
    /// Bytes gathered.
    len: usize,
}

impl Span {
    /// Adds a block of `len` bytes for `torrent` at `at`; false (and nothing changed) when
    /// it does not continue the run, which must then be flushed and started anew.
    fn extend(&mut self, torrent: TorrentId, storage: &Arc<Storage>, at: u64, len: usize) -> bool {
        let joins = self.torrent == Some(torrent)
            && self
                .storage
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, storage))
            && at == self.start + self.len as u64
            && self.len + len <= MAX_RUN;
        if joins {
            self.len += len;
        }
        joins
    }

    /// Starts a run with its first block.
    fn begin(&mut self, torrent: TorrentId, storage: Arc<Storage>, at: u64, len: usize) {
        *self = Self {
            storage: Some(storage),
            torrent: Some(torrent),
            start: at,
            len,
        };
    }

    /// Ends the run: its storage, torrent and start, if it had any block.
    fn take(&mut self) -> Option<(Arc<Storage>, TorrentId, u64)> {
        let s = std::mem::take(self);
        Some((s.storage?, s.torrent?, s.start))
    }
}

/// A worker's writes and reads gathered into runs: adjacent blocks written with one
/// `pwritev`, adjacent blocks asked for upload (a peer asks for a piece's blocks in
/// order) read with one `pread` into one buffer and reported together. Jobs keep their
/// order: a write flushes the reads gathered before it, a read the writes, anything
/// else both; the worker flushes before it waits for more, so nothing is held back.
#[derive(Default)]
struct Gather {
    writes: Span,
    blocks: Vec<(BlockRef, Vec<u8>)>,
    reads: Span,
    asked: Vec<(ConnId, BlockRef)>,
}

impl Gather {
    fn job(&mut self, job: DiskJob, hashing: &mut Hashing, done: &mut Vec<DiskDone>) {
        match job {
            DiskJob::Write {
                torrent,
                storage,
                block,
                data,
            } => {
                self.flush_reads(done);
                let at = offset(&storage, &block);
                if !self.writes.extend(torrent, &storage, at, data.len()) {
                    self.flush_writes(hashing, done);
                    self.writes.begin(torrent, storage, at, data.len());
                }
                self.blocks.push((block, data));
            }
            DiskJob::Read {
                torrent,
                storage,
                conn,
                block,
            } => {
                self.flush_writes(hashing, done);
                let (at, len) = (offset(&storage, &block), block.len as usize);
                if !self.reads.extend(torrent, &storage, at, len) {
                    self.flush_reads(done);
                    self.reads.begin(torrent, storage, at, len);
                }
                self.asked.push((conn, block));
            }
            DiskJob::Verify {
                torrent,
                storage,
                piece,
                expected,
                block_digests,
            } => {
                self.flush(hashing, done);
                let len = storage.geometry().piece_size(piece);
                // The SHA-1 of the bytes as written, when they were hashed on the way;
                // a v2 root is over the piece read back (from the page cache).
                let written = hashing.take(torrent, piece, len);
                if written.is_none() || expected.merkle.is_some() {
                    log::trace!("{torrent:?} piece {}: read back to be checked", piece.0);
                }
                let mut verdict = storage.verify_piece(piece.0, &expected, written);
                // The SHA-1 taken on the way covers the bytes as the peer sent them,
                // pad bytes included, which are never written (they read as zeros): a
                // hybrid's halves are compared on the bytes on disk alone.
                if written.is_some() && matches!(verdict, Ok(Verdict::Disagree)) {
                    verdict = storage.verify_piece(piece.0, &expected, None);
                }
                let disagree = matches!(verdict, Ok(Verdict::Disagree));
                let ok = verdict.is_ok_and(Verdict::ok);
                // A verified piece is never written again: its writeback can start now
                // rather than at the next sync (on the download's last piece, all of it).
                if ok {
                    storage.write_behind(piece.0);
                }
                // Rare (a failed piece, or one that failed before): read back.
                let digests = if !ok || block_digests {
                    crate::hash::block_digests(&storage, piece).unwrap_or_default()
                } else {
                    Vec::new()
                };
                done.push(DiskDone::Verify {
                    torrent,
                    piece,
                    ok,
                    disagree,
                    digests,
                });
            }
            DiskJob::Forget { torrent } => {
                self.flush(hashing, done);
                hashing.forget_torrent(torrent);
            }
            // The pool sends these to their own threads; run here if one comes.
            j @ (DiskJob::Task(_) | DiskJob::Check { .. }) => {
                self.flush(hashing, done);
                done.extend(aside(j));
            }
        }
    }

    /// Writes the gathered blocks, then hashes them and reports each.
    fn flush_writes(&mut self, hashing: &mut Hashing, done: &mut Vec<DiskDone>) {
        let Some((storage, torrent, start)) = self.writes.take() else {
            return;
        };
        let bufs: Vec<&[u8]> = self.blocks.iter().map(|(_, d)| d.as_slice()).collect();
        let result = storage.write_vectored(start, &bufs);
        let sha1 = storage.sha1_pieces();
        for (block, data) in self.blocks.drain(..) {
            if sha1 {
                hashing.written(torrent, &block, data, result.is_ok());
            }
            done.push(DiskDone::Write {
                torrent,
                block,
                result: result.clone(),
            });
        }
    }

    /// Reads the gathered blocks into one buffer and reports them together.
    fn flush_reads(&mut self, done: &mut Vec<DiskDone>) {
        let len = self.reads.len;
        let Some((storage, torrent, start)) = self.reads.take() else {
            return;
        };
        let mut buf = vec![0u8; len];
        let result = storage.read(start, &mut buf).map(|()| buf);
        done.push(DiskDone::Read {
            torrent,
            reads: std::mem::take(&mut self.asked),
            result,
        });
    }

    fn flush(&mut self, hashing: &mut Hashing, done: &mut Vec<DiskDone>) {
        self.flush_writes(hashing, done);
        self.flush_reads(done);
    }
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

    /// A fresh scratch folder named after `tag` and a storage of one file of `total`
    /// bytes in it, in pieces of `piece_len`.
    fn one_file(tag: &str, total: u64, piece_len: u32) -> (std::path::PathBuf, Arc<Storage>) {
        let dir = std::env::temp_dir().join(format!("btcore-disk-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let g = Geometry::new(total, piece_len).expect("geometry");
        let files = vec![FileSpec {
            index: 0,
            path: "f.bin".into(),
            offset: 0,
            length: total,
            attr: FileAttr::default(),
            symlink_target: None,
        }];
        let storage = Storage::new(&dir, files, g, crate::storage::StorageConfig::default())
            .expect("storage");
        (dir, Arc::new(storage))
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
        let (dir, storage) = one_file("task", 4 * 16_384, 16_384);
        let mut pool = DiskPool::new(2, AHEAD_BYTES, Arc::new(|| {}));
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
        let piece_len = 32_768u32;
        let total = u64::from(piece_len) * 3;
        let (dir, storage) = one_file("pieces", total, piece_len);
        let content = data(total as usize, 9);
        let mut pool = DiskPool::new(2, AHEAD_BYTES, Arc::new(|| {}));
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
        let cases = [
            (0, true, false),
            (1, true, false),
            (2, true, true),
            (0, false, false),
            (1, false, false),
        ];
        for (p, good, asked) in cases {
            let mut expected = sha1(piece(p));
            if !good {
                expected[0] ^= 1;
            }
            pool.submit(DiskJob::Verify {
                torrent: T,
                storage: storage.clone(),
                piece: PieceIndex(p),
                expected: Expected::sha1(expected),
                block_digests: asked,
            });
            let (ok, digests) = loop {
                if let Some(DiskDone::Verify { ok, digests, .. }) = pool.try_done() {
                    break (ok, digests);
                }
                std::thread::yield_now();
            };
            assert_eq!(ok, good, "piece {p}, expected to match: {good}");
            // Block digests come with a failed piece, or when asked for.
            let blocks: Vec<[u8; 20]> = piece(p).chunks(16_384).map(sha1).collect();
            if !good || asked {
                assert_eq!(digests, blocks, "piece {p}");
            } else {
                assert!(digests.is_empty(), "piece {p}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Pages of `f` in `off..off + len` that are dirty (not yet on their way to the
    /// disk), from `cachestat` (Linux 6.5); None where the kernel lacks it.
    #[cfg(target_os = "linux")]
    fn dirty_pages(f: &std::fs::File, off: u64, len: u64) -> Option<u64> {
        use std::os::fd::AsRawFd;
        let range = [off, len];
        // nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted.
        let mut stat = [0u64; 5];
        // SAFETY: cachestat(2) (the same number on every architecture) reads the range
        // and writes the five counters, both live arrays of their layout's size.
        let r = unsafe {
            libc::syscall(
                451,
                f.as_raw_fd(),
                range.as_ptr(),
                stat.as_mut_ptr(),
                0 as libc::c_uint,
            )
        };
        (r == 0).then_some(stat[1])
    }

    /// Pieces that verify start on their way to the disk once 4 MiB of them gathered
    /// (write-behind), so the sync at the end of a download has little left to write.
    /// Without it their pages stay dirty for the kernel's 30 s expiry.
    #[cfg(target_os = "linux")]
    #[test]
    fn verified_pieces_are_written_behind() {
        let piece_len = 1u32 << 20;
        let pieces = 4u32;
        let total = u64::from(piece_len * pieces);
        let (dir, storage) = one_file("behind", total, piece_len);
        let content = data(total as usize, 3);
        let piece = |p: u32| &content[(p * piece_len) as usize..((p + 1) * piece_len) as usize];
        let mut pool = DiskPool::new(2, AHEAD_BYTES, Arc::new(|| {}));
        for p in 0..pieces {
            pool.submit(DiskJob::Write {
                torrent: T,
                storage: storage.clone(),
                block: block(p, 0, piece_len),
                data: piece(p).to_vec(),
            });
        }
        for (_, result) in writes(&mut pool, pieces as usize) {
            result.expect("written");
        }
        let file = std::fs::File::open(dir.join("f.bin")).expect("open");
        let dirty = || dirty_pages(&file, 0, total);
        match dirty() {
            Some(n) if n > 0 => {}
            other => {
                eprintln!("no dirty page accounting here ({other:?}): skipped");
                let _ = std::fs::remove_dir_all(&dir);
                return;
            }
        }
        let start = std::time::Instant::now();
        for p in 0..pieces {
            pool.submit(DiskJob::Verify {
                torrent: T,
                storage: storage.clone(),
                piece: PieceIndex(p),
                expected: Expected::sha1(sha1(piece(p))),
                block_digests: false,
            });
            let ok = loop {
                match pool.try_done() {
                    Some(DiskDone::Verify { ok, .. }) => break ok,
                    Some(other) => panic!("unexpected {other:?}"),
                    None if start.elapsed() > std::time::Duration::from_secs(10) => {
                        panic!("no verdict")
                    }
                    None => std::thread::yield_now(),
                }
            };
            assert!(ok, "piece {p} did not verify");
        }
        while dirty().is_some_and(|n| n > 0) && start.elapsed().as_secs() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(
            dirty(),
            Some(0),
            "the verified pieces still wait for writeback"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Collects `n` write completions (or fewer after 10 s), by block.
    fn writes(
        pool: &mut DiskPool,
        n: usize,
    ) -> Vec<(BlockRef, Result<(), btcore_core::session::DiskError>)> {
        let start = std::time::Instant::now();
        let mut out = Vec::new();
        while out.len() < n && start.elapsed() < std::time::Duration::from_secs(10) {
            match pool.try_done() {
                Some(DiskDone::Write { block, result, .. }) => {
                    out.push((block, result.map_err(|e| e.to_core())))
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => std::thread::yield_now(),
            }
        }
        out
    }

    /// A turn's writes go out together, adjacent blocks in one run across a file
    /// boundary: every block is reported once, the bytes land where they belong and
    /// the pieces check from memory; a run that fails reports the error for each of
    /// its blocks.
    #[test]
    fn one_turn_of_adjacent_writes() {
        let dir = std::env::temp_dir().join(format!("btcore-disk-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (piece_len, blen) = (32_768u32, 8_192u32);
        let total = u64::from(piece_len) * 4;
        let g = Geometry::new(total, piece_len).expect("geometry");
        let spec = |index: u32, path: &str, offset: u64, length: u64| FileSpec {
            index,
            path: path.into(),
            offset,
            length,
            attr: FileAttr::default(),
            symlink_target: None,
        };
        let files = vec![
            spec(0, "a", 0, 40_000),
            spec(1, "b", 40_000, total - 40_000),
        ];
        let storage = Arc::new(
            Storage::new(
                &dir,
                files.clone(),
                g,
                crate::storage::StorageConfig::default(),
            )
            .expect("storage"),
        );
        let content = data(total as usize, 3);
        let mut pool = DiskPool::new(2, AHEAD_BYTES, Arc::new(|| {}));
        let mut sent = Vec::new();
        for p in 0..4u32 {
            let mut offs: Vec<u32> = (0..piece_len / blen).map(|i| i * blen).collect();
            if p == 3 {
                offs.reverse();
            }
            for off in offs {
                let b = block(p, off, blen);
                let at = (p * piece_len + off) as usize;
                pool.submit(DiskJob::Write {
                    torrent: T,
                    storage: storage.clone(),
                    block: b,
                    data: content[at..at + blen as usize].to_vec(),
                });
                sent.push(b);
            }
        }
        let mut got = writes(&mut pool, sent.len());
        assert!(got.iter().all(|(_, r)| r.is_ok()), "{got:?}");
        let key = |b: &BlockRef| (b.piece.0, b.offset);
        got.sort_by_key(|(b, _)| key(b));
        sent.sort_by_key(key);
        assert_eq!(got.iter().map(|(b, _)| *b).collect::<Vec<_>>(), sent);
        let mut on_disk = std::fs::read(dir.join("a")).expect("a");
        on_disk.extend(std::fs::read(dir.join("b")).expect("b"));
        assert!(on_disk == content, "bytes on disk differ");
        for p in 0..4u32 {
            let at = (p * piece_len) as usize;
            pool.submit(DiskJob::Verify {
                torrent: T,
                storage: storage.clone(),
                piece: PieceIndex(p),
                expected: Expected::sha1(sha1(&content[at..at + piece_len as usize])),
                block_digests: false,
            });
            let start = std::time::Instant::now();
            let ok = loop {
                if let Some(DiskDone::Verify { ok, .. }) = pool.try_done() {
                    break ok;
                }
                assert!(start.elapsed() < std::time::Duration::from_secs(10));
                std::thread::yield_now();
            };
            assert!(ok, "piece {p}");
        }

        // The second file cannot be created (a folder holds its name): piece 1, which
        // spans both files, fails in every block of its run.
        let dir2 = dir.join("blocked");
        let storage = Arc::new(
            Storage::new(&dir2, files, g, crate::storage::StorageConfig::default())
                .expect("storage"),
        );
        std::fs::create_dir_all(dir2.join("b").join("x")).expect("folder");
        for off in (0..piece_len).step_by(blen as usize) {
            let at = (piece_len + off) as usize;
            pool.submit(DiskJob::Write {
                torrent: T,
                storage: storage.clone(),
                block: block(1, off, blen),
                data: content[at..at + blen as usize].to_vec(),
            });
        }
        let got = writes(&mut pool, 4);
        assert_eq!(got.len(), 4);
        assert!(got.iter().all(|(_, r)| r.is_err()), "{got:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Reads of adjacent blocks in one turn come back as one run, in order, with the
    /// bytes of each; a read queued after a write of the same block sees the new bytes,
    /// and one queued before it the old.
    #[test]
    fn one_turn_of_adjacent_reads_keeps_order_with_writes() {
        let (piece_len, blen) = (32_768u32, 8_192u32);
        let total = u64::from(piece_len) * 2;
        let (dir, storage) = one_file("reads", total, piece_len);
        let old = data(total as usize, 1);
        storage.write(0, &old).expect("write");
        let new = data(blen as usize, 2);
        let mut pool = DiskPool::new(1, AHEAD_BYTES, Arc::new(|| {}));
        let read = |pool: &mut DiskPool, conn: u32, off: u32| {
            pool.submit(DiskJob::Read {
                torrent: T,
                storage: storage.clone(),
                conn: ConnId(conn),
                block: block(0, off, blen),
            });
        };
        // Piece 0: blocks 0 and 1 (two peers), then a write of block 2, then blocks 2
        // and 3: two runs on either side of the write.
        read(&mut pool, 1, 0);
        read(&mut pool, 2, blen);
        pool.submit(DiskJob::Write {
            torrent: T,
            storage: storage.clone(),
            block: block(0, 2 * blen, blen),
            data: new.clone(),
        });
        read(&mut pool, 1, 2 * blen);
        read(&mut pool, 1, 3 * blen);
        let start = std::time::Instant::now();
        let mut got = Vec::new();
        while got.len() < 3 && start.elapsed() < std::time::Duration::from_secs(10) {
            match pool.try_done() {
                Some(d) => got.push(d),
                None => std::thread::yield_now(),
            }
        }
        let b = blen as usize;
        let mut expected_now = old[..4 * b].to_vec();
        expected_now[2 * b..3 * b].copy_from_slice(&new);
        match &got[..] {
            [DiskDone::Read {
                reads: r1,
                result: Ok(d1),
                ..
            }, DiskDone::Write { result: Ok(()), .. }, DiskDone::Read {
                reads: r2,
                result: Ok(d2),
                ..
            }] => {
                assert_eq!(
                    r1,
                    &[
                        (ConnId(1), block(0, 0, blen)),
                        (ConnId(2), block(0, blen, blen))
                    ]
                );
                assert!(d1[..] == old[..2 * b], "first run's bytes");
                assert_eq!(
                    r2,
                    &[
                        (ConnId(1), block(0, 2 * blen, blen)),
                        (ConnId(1), block(0, 3 * blen, blen))
                    ]
                );
                assert!(d2[..] == expected_now[2 * b..], "second run sees the write");
            }
            other => panic!("unexpected completions {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Shutting down runs every job already handed over, across several batches per
    /// worker, and reports each; a loop that never looked was woken once, not per job.
    #[test]
    fn shutdown_runs_every_queued_job() {
        let n = 3 * MAX_BATCH as u32 + 5;
        let (dir, storage) = one_file("shutdown", u64::from(n) * 1024, 1024);
        let wakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let w = wakes.clone();
        let mut pool = DiskPool::new(
            2,
            AHEAD_BYTES,
            Arc::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            }),
        );
        for p in 0..n {
            pool.submit(DiskJob::Write {
                torrent: T,
                storage: storage.clone(),
                block: block(p, 0, 1024),
                data: vec![p as u8; 1024],
            });
        }
        pool.flush();
        let done = pool.shutdown();
        let mut seen: Vec<u32> = done
            .iter()
            .map(|d| match d {
                DiskDone::Write {
                    block,
                    result: Ok(()),
                    ..
                } => block.piece.0,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        let w = wakes.load(Ordering::SeqCst);
        assert_eq!(w, 1, "{w} wake-ups for {n} jobs");
        let mut buf = vec![0u8; 1024];
        for p in [0, n / 2, n - 1] {
            storage.read(u64::from(p) * 1024, &mut buf).expect("read");
            assert!(buf.iter().all(|&b| b == p as u8), "piece {p}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
