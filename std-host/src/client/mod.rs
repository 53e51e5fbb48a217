//! The std host's event loop: one `mio` poll drives every peer connection of every
//! torrent; disk and hashing run on [`crate::disk::DiskPool`]. Trackers go through
//! [`crate::tracker::TrackerClient`]: each `Action::Announce` names one tracker, and the
//! client performs that one exchange (UDP on this loop, its sockets and timers; HTTP on
//! its threads); each result goes back to the session, which picks the next tracker. The loop wakes on socket readiness, on a waker
//! from the workers, or when the session's, the DHT's or the trackers' `poll_timeout`
//! is due.
//!
//! ```text
//!  loop {
//!      poll(sockets, waker, timeout = session.poll_timeout())
//!      accept / read → session.handle_incoming / handle_recv (while wants_recv;
//!                      ACCEPTS_PER_TURN accepts, READS_PER_TURN reads per
//!                      connection, DHT_READS_PER_TURN datagrams; the rest next turn)
//!      connect done  → session.handle_connected / handle_connect_failed
//!      disk done     → session.handle_write_done / handle_read_done / handle_verified_blocks
//!      tracker UDP   → trackers.on_udp_readable; trackers.handle_timeout (always)
//!      tracker done  → session.handle_peers, session.handle_announced (per exchange)
//!      session.handle_timeout(now) when due
//!      drain session.poll_action(): Connect, Send, Close, Write, Read, Verify, Announce
//!      drain session.poll_event(): progress, resume saving, completion
//!  }
//! ```
//!
//! Ownership: the loop owns the sockets and the [`Session`]; each torrent's
//! [`Storage`] is shared (`Arc`) with the disk workers, who only do positioned reads
//! and writes. Nothing else holds a lock.

use crate::disk::{CheckProgress, DiskDone, DiskJob, DiskPool};
use crate::encryption::{Close, Encryption, KeySource, Link, OurTorrents, Up};
use crate::resume::{self, ResumeData, ResumeWriter};
use crate::storage::{Storage, StorageConfig};
use crate::tracker::{AnnounceJob, AnnounceResult, TrackerClient, TrackerConfig};
use btcore_core::bitfield::Bitfield;
use btcore_core::ids::{InfoHash, PeerId};
use btcore_core::metainfo::{Limits, Metainfo};
use btcore_core::session::{
    Action, AnnounceEvent, AnnounceOutcome, ConnId, DhtOutcome, Event, PeerSource, Session,
    SessionConfig, TorrentId, TorrentState, TorrentStatus,
};
use btcore_core::time::Instant;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const DHT: Token = Token(2);
const LSD: Token = Token(3);
/// The tracker client's UDP sockets (IPv4, IPv6).
const TRACKER_UDP: [Token; 2] = [Token(4), Token(5)];
const FIRST_CONN: usize = 16;

/// How the client runs.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Where torrents' files go.
    pub save_dir: PathBuf,
    /// Where resume files go (None: no resume data).
    pub state_dir: Option<PathBuf>,
    /// The small-device profile.
    pub low_memory: bool,
    /// Most connections per torrent (0: the profile's default).
    pub max_peers: usize,
    /// Most connections over all torrents (0: the profile's default, 200 or 50).
    pub max_connections: usize,
    /// Disk worker threads ([`DEFAULT_DISK_THREADS`] by default).
    pub disk_threads: usize,
    /// Most bytes received and not yet written (0: the profile's default, 1 MiB or
    /// 512 KiB): no block is requested past it, and reading from peers pauses at twice
    /// it until writes complete (libtorrent's `max_queued_disk_bytes`).
    pub max_disk_queue: usize,
    /// Whether to ask trackers for peers.
    pub use_trackers: bool,
    /// Seed for the engine's random choices (0: from the clock).
    pub seed: u64,
    /// Download rate limit in bytes/s (0: none).
    pub download_limit: u64,
    /// Upload rate limit in bytes/s (0: none).
    pub upload_limit: u64,
    /// The Mainline DHT (None: off). Never used for private torrents.
    pub dht: Option<crate::dht::DhtOptions>,
    /// BEP 14 local service discovery (multicast on the LAN). Off by default: it
    /// reaches every machine on the local network. Never used for private torrents.
    pub lsd: bool,
    /// Protocol encryption (MSE/PE) policy.
    pub encryption: Encryption,
}

/// Socket reads of one connection in one turn of the loop: one peer that keeps its
/// socket full cannot keep the loop from the others (with a 64 KiB buffer, 1 MiB a
/// turn). Edge-triggered readiness is not lost: a connection that used them is read
/// again next turn.
pub const READS_PER_TURN: usize = 16;

/// Connections accepted in one turn of the loop: a connect flood cannot keep the loop
/// from reading its peers. The rest wait in the kernel's backlog for the next turn.
pub const ACCEPTS_PER_TURN: usize = 32;

/// DHT datagrams handled in one turn of the loop: a flood on the DHT port cannot keep
/// the loop from its peers. The rest wait in the socket's buffer for the next turn
/// (and past it are dropped by the kernel, as on a lossy network).
pub const DHT_READS_PER_TURN: usize = 256;

/// Disk workers of a client unless told otherwise.
pub const DEFAULT_DISK_THREADS: usize = 2;

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 6881),
            save_dir: PathBuf::from("."),
            state_dir: None,
            low_memory: false,
            max_peers: 0,
            max_connections: 0,
            disk_threads: DEFAULT_DISK_THREADS,
            max_disk_queue: 0,
            use_trackers: true,
            seed: 0,
            download_limit: 0,
            upload_limit: 0,
            dht: None,
            lsd: false,
            encryption: Encryption::default(),
        }
    }
}

/// Why the client or a torrent could not start.
#[derive(Debug)]
pub enum ClientError {
    /// A socket or file error.
    Io(io::Error),
    /// The torrent or magnet link was refused.
    Add(btcore_core::session::AddError),
    /// The torrent's files could not be set up.
    Storage(crate::storage::StorageError),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Add(e) => write!(f, "{e}"),
            Self::Storage(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// A token bucket: `rate` bytes per second, at most one second of burst.
#[derive(Debug)]
struct Bucket {
    rate: u64,
    tokens: f64,
    last: std::time::Instant,
}

impl Bucket {
    fn new(rate: u64) -> Self {
        Self {
            rate,
            tokens: rate as f64,
            last: std::time::Instant::now(),
        }
    }
    /// Bytes that may move now (`usize::MAX` when unlimited).
    fn available(&mut self) -> usize {
        if self.rate == 0 {
            return usize::MAX;
        }
        let now = std::time::Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate as f64).min(self.rate as f64);
        self.tokens.max(0.0) as usize
    }
    fn take(&mut self, n: usize) {
        if self.rate != 0 {
            self.tokens -= n as f64;
        }
    }
}

struct Sock {
    stream: TcpStream,
    connecting: bool,
    /// The encryption policy's view of the connection: plain, sniffing, in an
    /// encryption handshake, or encrypted; it decides, the loop moves bytes.
    link: Link,
    /// Where we dialed (None: accepted).
    dialed: Option<SocketAddr>,
    /// Bytes taken from the session and not yet written.
    out: Vec<u8>,
    out_pos: usize,
}

struct HostTorrent {
    name: String,
    info_hash: InfoHash,
    storage: Option<Arc<Storage>>,
    resume: ResumeWriter,
    save_dir: PathBuf,
    /// The check of its data on disk, while it runs.
    check: Option<Arc<CheckProgress>>,
}

/// How a torrent added from a file starts.
enum Start {
    /// At once, with these pieces.
    Ready(Bitfield),
    /// After a check of what is on disk.
    Check,
}

/// A torrent as shown to a person.
#[derive(Clone, Debug)]
pub struct TorrentView {
    /// Session id.
    pub id: TorrentId,
    /// Display name.
    pub name: String,
    /// Engine status.
    pub status: TorrentStatus,
    /// While its data is checked ([`TorrentState::Checking`]): pieces checked, and of
    /// how many.
    pub checking: Option<(u32, u32)>,
}

/// The std client: a session, its sockets, disk workers and trackers.
pub struct Client {
    opts: ClientOptions,
    session: Session,
    poll: Poll,
    waker: Arc<Waker>,
    listener: TcpListener,
    local_addr: SocketAddr,
    socks: HashMap<ConnId, Sock>,
    disk: DiskPool,
    trackers: Option<TrackerClient>,
    torrents: HashMap<TorrentId, HostTorrent>,
    epoch: std::time::Instant,
    peer_id: PeerId,
    stop: Arc<AtomicBool>,
    events_out: Vec<Event>,
    /// Socket reads land here.
    buf: Vec<u8>,
    /// What the session sends is taken here, then written to the socket.
    tx: Vec<u8>,
    down: Bucket,
    up: Bucket,
    /// Connections left readable or writable because a rate limit ran out.
    throttled_read: Vec<ConnId>,
    /// Connections left unread while the disk is behind ([`Session::disk_backlogged`]):
    /// read again once writes complete.
    disk_blocked: Vec<ConnId>,
    /// Connections left unread while their peer has not read what the session queued
    /// for it ([`Session::wants_recv`]): read again once it has (a writable socket
    /// took bytes).
    send_blocked: Vec<ConnId>,
    throttled_write: Vec<ConnId>,
    /// Connections that used their reads of a turn ([`READS_PER_TURN`]) with bytes
    /// left: read again next turn, after the sockets that became ready.
    read_more: Vec<ConnId>,
    /// The listener used its accepts of a turn ([`ACCEPTS_PER_TURN`]) with
    /// connections left: accepted again next turn.
    accept_more: bool,
    /// The DHT socket used its reads of a turn ([`DHT_READS_PER_TURN`]) with
    /// datagrams left: read again next turn.
    dht_more: bool,
    dht: Option<crate::dht::DhtHost>,
    lsd: Option<crate::lsd::LsdHost>,
    /// DH private keys for encryption handshakes.
    keys: KeySource,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({})", self.local_addr)
    }
}

/// Whom the peers of a tracker's answer come from: the tracker's address when its URL
/// names one (`localhost` is loopback); a host name counts as a remote party (the
/// session then drops the loopback addresses it names).
fn tracker_source(url: Option<&str>) -> PeerSource {
    let remote = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let Some(url) = url else {
        return PeerSource::Tracker(remote);
    };
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    if host.eq_ignore_ascii_case("localhost") {
        return PeerSource::Tracker(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    PeerSource::Tracker(host.parse().unwrap_or(remote))
}

/// The engine's clock: milliseconds since `epoch`, from 1.
fn since(epoch: std::time::Instant) -> Instant {
    Instant::from_millis(epoch.elapsed().as_millis() as u64 + 1)
}

fn token(c: ConnId) -> Token {
    Token(c.0 as usize + FIRST_CONN)
}

fn conn_of(t: Token) -> ConnId {
    ConnId((t.0 - FIRST_CONN) as u32)
}

impl Client {
    /// Binds the listen socket and starts the workers.
    pub fn new(opts: ClientOptions) -> Result<Self, ClientError> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listener = TcpListener::bind(opts.listen)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let local_addr = listener.local_addr()?;
        let seed = if opts.seed != 0 {
            opts.seed
        } else {
            crate::os::random_u64()
        };
        let peer_id = PeerId::generate(seed);
        let mut config = if opts.low_memory {
            SessionConfig::low_memory(peer_id)
        } else {
            SessionConfig::new(peer_id)
        };
        config.listen_port = local_addr.port();
        // 0: the profile's own limit (50, or 20 in the low-memory profile).
        if opts.max_peers != 0 {
            config.max_peers_per_torrent = opts.max_peers;
        }
        if opts.max_connections != 0 {
            config.max_connections = opts.max_connections;
        }
        if opts.max_disk_queue != 0 {
            config.max_disk_bytes_in_flight = opts.max_disk_queue;
        }
        // The session schedules DHT lookups only for a host that runs a node.
        config.dht = opts.dht.is_some();
        let session = Session::new(config, seed);
        let w = waker.clone();
        let disk = DiskPool::new(
            opts.disk_threads,
            if opts.low_memory {
                256 << 10
            } else {
                crate::disk::AHEAD_BYTES
            },
            Arc::new(move || {
                let _ = w.wake();
            }),
        );
        let dht = match &opts.dht {
            Some(d) => {
                let port = if d.port == 0 {
                    local_addr.port()
                } else {
                    d.port
                };
                let bind = SocketAddr::new(opts.listen.ip(), port);
                let epoch_now = Instant::from_millis(1);
                let mut host = crate::dht::DhtHost::new(bind, d, epoch_now, seed)?;
                poll.registry()
                    .register(&mut host.socket, DHT, Interest::READABLE)?;
                Some(host)
            }
            None => None,
        };
        let lsd = if opts.lsd {
            let mut host = crate::lsd::LsdHost::new(crate::lsd::LsdOptions {
                port_to_announce: local_addr.port(),
                ..crate::lsd::LsdOptions::default()
            })?;
            poll.registry()
                .register(host.socket_mut(), LSD, Interest::READABLE)?;
            Some(host)
        } else {
            None
        };
        let trackers = if opts.use_trackers {
            let w = waker.clone();
            Some(TrackerClient::new(
                TrackerConfig {
                    rng_seed: seed,
                    ..TrackerConfig::default()
                },
                poll.registry(),
                TRACKER_UDP,
                Box::new(move || {
                    let _ = w.wake();
                }),
            )?)
        } else {
            None
        };
        Ok(Self {
            session,
            poll,
            waker,
            listener,
            local_addr,
            socks: HashMap::new(),
            disk,
            trackers,
            torrents: HashMap::new(),
            epoch: std::time::Instant::now(),
            peer_id,
            stop: Arc::new(AtomicBool::new(false)),
            events_out: Vec::new(),
            // One socket read at most. Small enough to stay in the CPU's L2 cache: the
            // kernel's copy into it and ours out of it then hit the cache (with 256 KiB,
            // the receive copy cost 2.5 times as much); large enough to hold several
            // blocks, so few messages straddle two reads.
            buf: vec![
                0u8;
                if opts.low_memory {
                    32 * 1024
                } else {
                    64 * 1024
                }
            ],
            // Uploads leave in writes of up to 256 KiB, several blocks per system call
            // (as before the reads went down to 64 KiB); small devices write less.
            tx: vec![
                0u8;
                if opts.low_memory {
                    32 * 1024
                } else {
                    256 * 1024
                }
            ],
            down: Bucket::new(opts.download_limit),
            up: Bucket::new(opts.upload_limit),
            throttled_read: Vec::new(),
            disk_blocked: Vec::new(),
            send_blocked: Vec::new(),
            throttled_write: Vec::new(),
            read_more: Vec::new(),
            accept_more: false,
            dht_more: false,
            dht,
            lsd,
            keys: KeySource::new(),
            opts,
        })
    }

    /// The address peers reach us at.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A flag that stops [`Client::run_until`] (set it from a signal handler).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    fn now(&self) -> Instant {
        since(self.epoch)
    }

    /// Adds a `.torrent` file, saving into `save_dir` (the client's by default). Resume
    /// data whose files are unchanged since it was saved is trusted as it is; otherwise
    /// (files changed, or no resume data) whatever is on disk is checked. A check runs
    /// off the loop, one torrent at a time: the torrent waits in
    /// [`TorrentState::Checking`] (no announce, no peer) while the others run on.
    pub fn add_torrent_file(
        &mut self,
        torrent_file: &[u8],
        save_dir: Option<&Path>,
    ) -> Result<TorrentId, ClientError> {
        let mut tokens = Vec::new();
        let m = Metainfo::parse_vec(torrent_file, &mut tokens, &Limits::default())
            .map_err(|e| ClientError::Add(btcore_core::session::AddError::Metainfo(e)))?;
        let save_dir = save_dir.unwrap_or(&self.opts.save_dir).to_path_buf();
        let storage = Arc::new(
            Storage::new(
                &save_dir,
                m.layout()
                    .map_err(|e| ClientError::Add(btcore_core::session::AddError::Metainfo(e)))?,
                m.geometry(),
                StorageConfig {
                    state_dir: self.opts.state_dir.clone(),
                    ..StorageConfig::default()
                },
            )
            .map_err(ClientError::Storage)?,
        );
        // Empty files have no piece to write them: create them now.
        storage.ensure_files().map_err(ClientError::Storage)?;
        let now = self.now();
        let (id, check) = match self.initial_have(&m, &storage) {
            Start::Ready(have) => (
                self.session
                    .add_torrent(now, torrent_file, Some(&have))
                    .map_err(ClientError::Add)?,
                None,
            ),
            Start::Check => {
                let id = self
                    .session
                    .add_torrent_checking(now, torrent_file)
                    .map_err(ClientError::Add)?;
                let progress = self.submit_check(id, &m, &storage);
                (id, Some(progress))
            }
        };
        self.torrents.insert(
            id,
            HostTorrent {
                name: String::from_utf8_lossy(m.name()).into_owned(),
                info_hash: m.info_hash(),
                storage: Some(storage),
                resume: ResumeWriter::default(),
                save_dir,
                check,
            },
        );
        self.pump();
        Ok(id)
    }

    /// Adds a magnet link.
    pub fn add_magnet(
        &mut self,
        uri: &str,
        save_dir: Option<&Path>,
    ) -> Result<TorrentId, ClientError> {
        let m = btcore_core::magnet::Magnet::parse_str(uri)
            .map_err(|e| ClientError::Add(btcore_core::session::AddError::Magnet(e)))?;
        let name = m.info_hash().to_string();
        let info_hash = m.info_hash();
        let now = self.now();
        let id = self
            .session
            .add_magnet(now, uri.as_bytes())
            .map_err(ClientError::Add)?;
        self.torrents.insert(
            id,
            HostTorrent {
                name,
                info_hash,
                storage: None,
                resume: ResumeWriter::default(),
                save_dir: save_dir.unwrap_or(&self.opts.save_dir).to_path_buf(),
                check: None,
            },
        );
        self.pump();
        Ok(id)
    }

    /// Hashes every piece of `m` on disk off the loop; the result comes back as
    /// `DiskDone::Checked`, for [`Session::handle_checked`].
    fn submit_check(
        &mut self,
        id: TorrentId,
        m: &Metainfo<'_>,
        storage: &Arc<Storage>,
    ) -> Arc<CheckProgress> {
        let n = m.num_pieces();
        let progress = Arc::new(CheckProgress::new(n));
        log::info!(
            "{}: checking {} pieces on disk",
            String::from_utf8_lossy(m.name()),
            progress.total
        );
        self.disk.submit(DiskJob::Check {
            torrent: id,
            storage: storage.clone(),
            hashes: (0..n)
                .map(|i| {
                    m.piece_hash(btcore_core::ids::PieceIndex(i))
                        .copied()
                        .unwrap_or_default()
                })
                .collect(),
            progress: progress.clone(),
        });
        progress
    }

    /// How a torrent starts: with the resume file's pieces as they are when no file
    /// changed since it was saved (same lengths and mtimes), with nothing when no file
    /// holds data; otherwise after a check of every piece on disk (as libtorrent does
    /// when resume data does not match): after a `kill -9` that finds the pieces
    /// verified since the last save too, and a piece whose data is all holes costs no
    /// read.
    fn initial_have(&self, m: &Metainfo<'_>, storage: &Storage) -> Start {
        let n = m.num_pieces();
        let resume = self
            .opts
            .state_dir
            .as_deref()
            .and_then(|d| resume::load(d, &m.info_hash()).ok().flatten())
            .filter(|r| r.num_pieces() == n);
        match resume {
            // No file changed since the data was synced, and the claims can hold.
            Some(r) if resume::trusted(&r, storage) => {
                log::debug!("resume data trusted: no file changed since it was saved");
                Start::Ready(r.pieces)
            }
            _ if !storage.has_data() => Start::Ready(Bitfield::new(n)),
            Some(_) => {
                log::debug!("resume data not trusted: a file changed since it was saved");
                Start::Check
            }
            None => Start::Check,
        }
    }

    /// Adds a peer by hand.
    pub fn add_peer(&mut self, id: TorrentId, addr: SocketAddr) {
        let now = self.now();
        self.session
            .handle_peers(now, id, &[addr], PeerSource::User);
        self.pump();
    }

    /// The torrents with their status.
    pub fn torrents(&self) -> Vec<TorrentView> {
        let now = self.now();
        let mut v: Vec<TorrentView> = self
            .session
            .torrents()
            .filter_map(|id| {
                let status = self.session.torrent_status(id, now)?;
                let t = self.torrents.get(&id);
                let name = t.map(|t| t.name.clone()).unwrap_or_default();
                let checking = t
                    .and_then(|t| t.check.as_ref())
                    .map(|c| (c.checked.load(Ordering::Relaxed).min(c.total), c.total));
                Some(TorrentView {
                    id,
                    name,
                    status,
                    checking,
                })
            })
            .collect();
        v.sort_by_key(|t| t.id);
        v
    }

    /// Per-peer status of a torrent.
    pub fn peers(&self, id: TorrentId) -> Vec<btcore_core::session::PeerStatus> {
        self.session.peers(id)
    }

    /// Events since the last call (piece verified, finished, banned, ...).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events_out)
    }

    /// Runs the loop until `done` says so, the stop flag is set, or `limit` passes.
    /// Returns whether `done` held.
    pub fn run_until(
        &mut self,
        limit: Option<Duration>,
        mut done: impl FnMut(&mut Client) -> bool,
    ) -> io::Result<bool> {
        let start = std::time::Instant::now();
        loop {
            if done(self) {
                return Ok(true);
            }
            if self.stop.load(Ordering::Relaxed) || limit.is_some_and(|l| start.elapsed() >= l) {
                return Ok(false);
            }
            self.run_once(Duration::from_millis(250))?;
        }
    }

    /// One turn of the loop: waits for readiness at most `max_wait`.
    pub fn run_once(&mut self, max_wait: Duration) -> io::Result<()> {
        let now = self.now();
        let wait = self
            .session
            .poll_timeout()
            .map_or(max_wait, |t| {
                Duration::from_millis(t.as_millis().saturating_sub(now.as_millis()))
            })
            .min(max_wait);
        let wait = match self.dht.as_ref().and_then(|d| d.poll_timeout()) {
            Some(t) => wait.min(Duration::from_millis(
                t.as_millis().saturating_sub(now.as_millis()),
            )),
            None => wait,
        };
        let wait = match self.trackers.as_ref().and_then(TrackerClient::poll_timeout) {
            Some(t) => wait.min(t.saturating_duration_since(std::time::Instant::now())),
            None => wait,
        };
        let throttled = !self.throttled_read.is_empty() || !self.throttled_write.is_empty();
        let wait = if throttled {
            wait.min(Duration::from_millis(20))
        } else {
            wait
        };
        // A send at the end of the last turn may have let a blocked peer be read.
        let wait = if self
            .send_blocked
            .iter()
            .any(|c| self.session.wants_recv(*c))
        {
            Duration::ZERO
        } else {
            wait
        };
        // Work left from the last turn: look at the sockets without waiting.
        let read_again = std::mem::take(&mut self.read_more);
        let accept_again = std::mem::take(&mut self.accept_more);
        let dht_again = std::mem::take(&mut self.dht_more);
        let wait = if read_again.is_empty() && !accept_again && !dht_again {
            wait
        } else {
            Duration::ZERO
        };
        let mut events = Events::with_capacity(256);
        match self.poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let mut accepted = false;
        let mut dht_read = false;
        for ev in events.iter() {
            match ev.token() {
                LISTENER => {
                    accepted = true;
                    self.accept_all();
                }
                WAKER => {}
                DHT => {
                    dht_read = true;
                    self.read_dht();
                }
                LSD => self.read_lsd(),
                t if TRACKER_UDP.contains(&t) => {
                    if let Some(tr) = self.trackers.as_mut() {
                        tr.on_udp_readable(std::time::Instant::now());
                    }
                }
                t => {
                    let conn = conn_of(t);
                    if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                        self.on_writable(conn);
                    }
                    if ev.is_readable() || ev.is_read_closed() {
                        self.read_conn(conn);
                    }
                }
            }
        }
        if accept_again && !accepted {
            self.accept_all();
        }
        if dht_again && !dht_read {
            self.read_dht();
        }
        for conn in read_again {
            if !self.read_more.contains(&conn) {
                self.read_conn(conn);
            }
        }
        self.service_dht();
        self.service_lsd();
        for conn in std::mem::take(&mut self.throttled_write) {
            self.flush(conn);
        }
        for conn in std::mem::take(&mut self.throttled_read) {
            self.read_conn(conn);
        }
        // Peers that read what was queued for them (their sockets were writable).
        if !self.send_blocked.is_empty() {
            let (ready, still): (Vec<ConnId>, Vec<ConnId>) = std::mem::take(&mut self.send_blocked)
                .into_iter()
                .filter(|c| self.socks.contains_key(c))
                .partition(|c| self.session.wants_recv(*c));
            self.send_blocked = still;
            for conn in ready {
                self.read_conn(conn);
            }
        }
        self.collect_workers();
        if !self.disk_blocked.is_empty() && !self.session.disk_backlogged() {
            for conn in std::mem::take(&mut self.disk_blocked) {
                self.read_conn(conn);
            }
        }
        self.expire_handshakes();
        let now = self.now();
        if self.session.poll_timeout().is_some_and(|t| t <= now) {
            self.session.handle_timeout(now);
        }
        self.pump();
        self.save_resume_if_due(false);
        Ok(())
    }

    /// DHT timers and datagrams: hands the peers found to the session and reports
    /// the lookups done (the session decides when each torrent is looked up:
    /// [`Action::DhtLookup`]).
    fn service_dht(&mut self) {
        let now = self.now();
        let Some(d) = self.dht.as_mut() else {
            return;
        };
        let report = d.service(now);
        for f in report.found {
            if let Some(id) = f.torrent {
                self.session
                    .handle_peers(now, id, &f.peers, PeerSource::Dht);
            }
        }
        for (id, seq, outcome) in report.done {
            self.session.handle_dht_done(now, id, seq, outcome);
        }
    }

    /// Public, running torrents past their check: what LSD may speak of.
    fn public_torrents(&self) -> Vec<(TorrentId, InfoHash)> {
        self.session.public_running_torrents().collect()
    }

    /// Peers heard on the local network, for public torrents only.
    fn read_lsd(&mut self) {
        let now = self.now();
        let Some(l) = self.lsd.as_mut() else { return };
        let heard = l.read(now);
        if heard.is_empty() {
            return;
        }
        let public = self.public_torrents();
        for (ih, addr) in heard {
            if let Some((id, _)) = public.iter().find(|(_, h)| *h == ih) {
                self.session
                    .handle_peers(now, *id, &[addr], PeerSource::Lsd);
            }
        }
    }

    /// Announces public torrents on the local network when due.
    fn service_lsd(&mut self) {
        if self.lsd.is_none() {
            return;
        }
        let now = self.now();
        let hashes: Vec<InfoHash> = self.public_torrents().into_iter().map(|(_, h)| h).collect();
        if let Some(l) = self.lsd.as_mut() {
            l.service(now, &hashes);
        }
    }

    /// DHT counters (None when the DHT is off).
    pub fn dht_stats(&self) -> Option<btcore_core::dht::DhtStats> {
        self.dht.as_ref().map(|d| d.stats(self.now()))
    }

    /// The DHT node (None when off).
    pub fn dht(&self) -> Option<&crate::dht::DhtHost> {
        self.dht.as_ref()
    }

    /// Handles waiting DHT datagrams, [`DHT_READS_PER_TURN`] at most.
    fn read_dht(&mut self) {
        let now = self.now();
        if let Some(d) = self.dht.as_mut() {
            self.dht_more = d.read(now, DHT_READS_PER_TURN);
        }
    }

    /// Accepts pending connections, [`ACCEPTS_PER_TURN`] at most.
    fn accept_all(&mut self) {
        for _ in 0..ACCEPTS_PER_TURN {
            match self.listener.accept() {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let now = self.now();
                    let conn = self.session.handle_incoming(now, addr);
                    let link = Link::incoming(self.opts.encryption, self.keys.next());
                    self.add_sock(conn, stream, link, None, Vec::new());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
        // More may wait in the backlog; readiness will not be reported again.
        self.accept_more = true;
    }

    fn on_writable(&mut self, conn: ConnId) {
        let now = self.now();
        let Some(s) = self.socks.get_mut(&conn) else {
            return;
        };
        if s.connecting {
            let failed = matches!(s.stream.take_error(), Ok(Some(_)) | Err(_))
                || s.stream.peer_addr().is_err();
            if failed {
                log::debug!("connect {conn:?} failed");
                self.drop_sock(conn);
                self.session.handle_connect_failed(now, conn);
                return;
            }
            s.connecting = false;
            let _ = s.stream.set_nodelay(true);
            // With an encryption handshake, the session learns of the connection
            // once it is done (`Up::Established`).
            if s.link.handle_connected() {
                self.session.handle_connected(now, conn);
            }
        }
        self.flush(conn);
    }

    /// Reads `conn` until its socket is empty, the session or the rate limit says
    /// stop, or it used its [`READS_PER_TURN`] (then it is read again next turn).
    fn read_conn(&mut self, conn: ConnId) {
        let mut reads = 0;
        loop {
            let Some(s) = self.socks.get_mut(&conn) else {
                return;
            };
            if reads == READS_PER_TURN {
                if !self.read_more.contains(&conn) {
                    self.read_more.push(conn);
                }
                return;
            }
            reads += 1;
            if s.connecting {
                return;
            }
            // The disk is behind: what the peer sends waits in the kernel (and then
            // in the peer) instead of in our memory. A completion wakes the loop.
            if self.session.disk_backlogged() {
                if !self.disk_blocked.contains(&conn) {
                    self.disk_blocked.push(conn);
                }
                return;
            }
            // The peer does not read what we queued for it: what it sends (more
            // requests) waits in the kernel, and TCP holds it back, until it does.
            if !self.session.wants_recv(conn) {
                if !self.send_blocked.contains(&conn) {
                    self.send_blocked.push(conn);
                }
                return;
            }
            let allowed = self.down.available().min(self.buf.len());
            if allowed == 0 {
                if !self.throttled_read.contains(&conn) {
                    self.throttled_read.push(conn);
                }
                return;
            }
            match s.stream.read(&mut self.buf[..allowed]) {
                Ok(0) => {
                    self.conn_lost(conn);
                    return;
                }
                Ok(n) => {
                    self.down.take(n);
                    // `self.now()` would borrow all of `self` while `s` is held.
                    let now = since(self.epoch);
                    let had_out = s.out.len();
                    let session = &mut self.session;
                    let out = &mut s.out;
                    let mut established = false;
                    let result = s.link.handle_recv(
                        &mut self.buf[..n],
                        &OurTorrents(&self.torrents, |t| t.info_hash),
                        &mut |up| match up {
                            // Handshake replies leave before any session byte.
                            Up::Transmit(b) => out.extend_from_slice(b),
                            Up::Data(b) => session.handle_recv(now, conn, b),
                            Up::Established { outgoing, method } => {
                                log::debug!("{conn:?}: encrypted handshake done, {method:?}");
                                established = true;
                                if outgoing {
                                    session.handle_connected(now, conn);
                                }
                            }
                        },
                    );
                    // Handshake replies, and the session's first bytes once established.
                    let replies = s.out.len() > had_out || established;
                    if let Err(e) = result {
                        log::debug!("{conn:?}: {e}");
                        self.conn_lost(conn);
                        return;
                    }
                    if replies {
                        self.flush(conn);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.conn_lost(conn);
                    return;
                }
            }
        }
    }

    /// Writes what the session has for `conn` until the socket would block.
    fn flush(&mut self, conn: ConnId) {
        let now = self.now();
        loop {
            let Some(s) = self.socks.get_mut(&conn) else {
                return;
            };
            if s.connecting {
                return;
            }
            if s.out_pos == s.out.len() {
                s.out.clear();
                s.out_pos = 0;
                // The session speaks once any encryption handshake is done.
                if s.link.negotiating() {
                    return;
                }
                let n = self.session.poll_transmit(now, conn, &mut self.tx);
                if n == 0 {
                    return;
                }
                s.link.encrypt(&mut self.tx[..n]);
                // Straight from the buffer; only what the socket does not take now is
                // kept for later.
                let allowed = self.up.available().min(n);
                // An error leaves everything queued: the queue's write below meets it
                // again and handles it.
                let written = if allowed == 0 {
                    0
                } else {
                    s.stream.write(&self.tx[..allowed]).unwrap_or(0)
                };
                self.up.take(written);
                if written < n {
                    s.out.extend_from_slice(&self.tx[written..n]);
                }
                continue;
            }
            let allowed = self.up.available().min(s.out.len() - s.out_pos);
            if allowed == 0 {
                if !self.throttled_write.contains(&conn) {
                    self.throttled_write.push(conn);
                }
                return;
            }
            match s.stream.write(&s.out[s.out_pos..s.out_pos + allowed]) {
                Ok(0) => return,
                Ok(n) => {
                    self.up.take(n);
                    s.out_pos += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.conn_lost(conn);
                    return;
                }
            }
        }
    }

    fn drop_sock(&mut self, conn: ConnId) {
        if let Some(mut s) = self.socks.remove(&conn) {
            let _ = self.poll.registry().deregister(&mut s.stream);
        }
    }

    fn collect_workers(&mut self) {
        while let Some(done) = self.disk.try_done() {
            let now = self.now();
            match done {
                DiskDone::Write {
                    torrent,
                    block,
                    result,
                } => self.session.handle_write_done(now, torrent, block, result),
                DiskDone::Read {
                    torrent,
                    reads,
                    result,
                } => {
                    let mut at = 0;
                    for (conn, block) in reads {
                        let len = block.len as usize;
                        let data = match &result {
                            Ok(d) => d
                                .get(at..at + len)
                                .ok_or(btcore_core::session::DiskError::Io),
                            Err(e) => Err(*e),
                        };
                        at += len;
                        self.session
                            .handle_read_done(now, torrent, conn, block, data);
                    }
                }
                DiskDone::Verify {
                    torrent,
                    piece,
                    ok,
                    digests,
                } => self
                    .session
                    .handle_verified_blocks(now, torrent, piece, ok, &digests),
                DiskDone::Checked { torrent, have } => self.checked(torrent, &have),
            }
        }
        let results: Vec<AnnounceResult> = match self.trackers.as_mut() {
            Some(t) => {
                t.handle_timeout(std::time::Instant::now());
                std::iter::from_fn(|| t.poll_result()).collect()
            }
            None => Vec::new(),
        };
        for r in results {
            let now = self.now();
            if let Some(e) = &r.error {
                log::warn!("tracker {}: {e}", r.tracker);
            }
            let id = TorrentId(r.key);
            if r.answered() {
                let source = tracker_source(Some(&r.tracker));
                self.session.handle_peers(now, id, &r.peers, source);
            }
            // The `stopped` announce ends the torrent's schedule: nothing to report
            // (and a torrent resumed since has its `started` in flight). Each exchange
            // is reported on its own: the session picks the next tracker.
            if r.event != Some(btcore_core::tracker::Event::Stopped) {
                let outcome = match (r.answered(), r.interval) {
                    (true, Some(interval)) => AnnounceOutcome::Answered {
                        interval,
                        min_interval: r.min_interval,
                    },
                    _ => AnnounceOutcome::Failed,
                };
                self.session.handle_announced(now, id, r.seq, outcome);
            }
        }
    }

    /// A torrent's check is done: it starts with the pieces found.
    fn checked(&mut self, id: TorrentId, have: &Bitfield) {
        let Some(t) = self.torrents.get_mut(&id) else {
            return;
        };
        if t.check.take().is_none() {
            return;
        }
        log::info!(
            "{}: check done, {} of {} pieces",
            t.name,
            have.count(),
            have.len()
        );
        // What the check found is worth keeping (a later start trusts it).
        t.resume.mark_dirty(std::time::Instant::now());
        let now = self.now();
        self.session.handle_checked(now, id, have);
    }

    /// Carries out the session's actions and collects its events.
    fn pump(&mut self) {
        loop {
            let mut any = false;
            while let Some(a) = self.session.poll_action() {
                any = true;
                self.do_action(a);
            }
            while let Some(e) = self.session.poll_event() {
                any = true;
                self.on_event(e);
            }
            if !any {
                // This turn's disk jobs go out together: one wake-up per worker.
                self.disk.flush();
                return;
            }
        }
    }

    fn do_action(&mut self, a: Action) {
        let now = self.now();
        match a {
            Action::Connect {
                conn,
                torrent,
                addr,
            } => {
                let policy = self.opts.encryption;
                let link = match self.torrents.get(&torrent) {
                    Some(t) => Link::outgoing(policy, t.info_hash, self.keys.next(), now),
                    None => Link::outgoing_plain(policy),
                };
                if !self.dial(conn, addr, link) {
                    self.session.handle_connect_failed(now, conn);
                }
            }
            Action::Send(conn) => self.flush(conn),
            Action::Close { conn, reason } => {
                log::debug!("closing {conn:?}: {reason}");
                if let Some(s) = self.socks.get_mut(&conn) {
                    // Best effort: what is queued goes out before the close.
                    let _ = s.stream.write(&s.out[s.out_pos..]);
                }
                self.drop_sock(conn);
            }
            Action::Write {
                torrent,
                block,
                data,
            } => match self.storage(torrent) {
                Some(storage) => self.disk.submit(DiskJob::Write {
                    torrent,
                    storage,
                    block,
                    data,
                }),
                None => self.session.handle_write_done(
                    now,
                    torrent,
                    block,
                    Err(btcore_core::session::DiskError::Io),
                ),
            },
            Action::Read {
                torrent,
                conn,
                block,
            } => {
                if let Some(storage) = self.storage(torrent) {
                    self.disk.submit(DiskJob::Read {
                        torrent,
                        storage,
                        conn,
                        block,
                    });
                }
            }
            Action::Verify {
                torrent,
                piece,
                expected,
                block_digests,
            } => {
                if let Some(storage) = self.storage(torrent) {
                    self.disk.submit(DiskJob::Verify {
                        torrent,
                        storage,
                        piece,
                        expected,
                        block_digests,
                    });
                }
            }
            Action::Announce {
                torrent,
                tracker,
                event,
                uploaded,
                downloaded,
                left,
                seq,
            } => self.announce(torrent, tracker, event, [uploaded, downloaded, left], seq),
            Action::DhtLookup {
                torrent,
                info_hash,
                announce,
                seq,
            } => {
                let port = announce.then_some(self.local_addr.port());
                let started = self
                    .dht
                    .as_mut()
                    .is_some_and(|d| d.lookup(now, torrent, info_hash, port, seq));
                if !started {
                    self.session
                        .handle_dht_done(now, torrent, seq, DhtOutcome::Failed);
                }
            }
            Action::CheckData { torrent } => self.metadata_received(torrent),
            _ => {}
        }
    }

    /// Gives up on dialed connections whose encryption handshake (or TCP connect, while
    /// one is due) ran past the deadline their link names.
    fn expire_handshakes(&mut self) {
        let now = self.now();
        let late: Vec<ConnId> = self
            .socks
            .iter_mut()
            .filter(|(_, s)| s.link.poll_timeout().is_some_and(|d| d <= now))
            .filter_map(|(c, s)| s.link.handle_timeout(now).map(|_| *c))
            .collect();
        for conn in late {
            log::debug!("{conn:?}: encryption handshake timed out");
            self.conn_lost(conn);
        }
    }

    /// Opens a connection to `addr` for `conn`; false when that failed at once.
    fn dial(&mut self, conn: ConnId, addr: SocketAddr, mut link: Link) -> bool {
        let Ok(stream) = TcpStream::connect(addr) else {
            return false;
        };
        log::debug!("dialing {addr} as {conn:?} ({link:?})");
        // The encryption handshake's opening, if any, goes out first.
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = link.poll_transmit(&mut buf);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        self.add_sock(conn, stream, link, Some(addr), out)
    }

    /// Registers `stream` for `conn` (dialed to `dialed`, or accepted) and keeps it,
    /// with `out` queued to send; false when the poll refused it.
    fn add_sock(
        &mut self,
        conn: ConnId,
        mut stream: TcpStream,
        link: Link,
        dialed: Option<SocketAddr>,
        out: Vec<u8>,
    ) -> bool {
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut stream, token(conn), interest)
            .is_err()
        {
            return false;
        }
        let sock = Sock {
            stream,
            connecting: dialed.is_some(),
            link,
            dialed,
            out,
            out_pos: 0,
        };
        self.socks.insert(conn, sock);
        true
    }

    /// A connection ended (closed, failed, refused or timed out): its link's verdict
    /// says what follows. A dialed connection that failed inside our encryption
    /// handshake under the `preferred` policy is dialed again in plain text under the
    /// same id (the session never learnt of the first attempt); one the session never
    /// learnt of is a failed dial to it; any other is a disconnection.
    fn conn_lost(&mut self, conn: ConnId) {
        let now = self.now();
        let (verdict, dialed) = match self.socks.get_mut(&conn) {
            Some(s) => (s.link.close(), s.dialed),
            None => (Close::Disconnected, None),
        };
        self.drop_sock(conn);
        match (verdict, dialed) {
            (Close::RedialPlain, Some(addr)) => {
                log::debug!("{conn:?}: no encryption handshake from {addr}, dialing in plain text");
                let link = Link::outgoing_plain(self.opts.encryption);
                if !self.dial(conn, addr, link) {
                    self.session.handle_connect_failed(now, conn);
                }
            }
            (Close::RedialPlain | Close::ConnectFailed, _) => {
                self.session.handle_connect_failed(now, conn)
            }
            (Close::Disconnected, _) => self.session.handle_disconnected(now, conn),
        }
    }

    fn storage(&self, id: TorrentId) -> Option<Arc<Storage>> {
        self.torrents.get(&id)?.storage.clone()
    }

    /// Performs the one exchange the session asked: `tracker` of torrent `id`, with
    /// the `[uploaded, downloaded, left]` counts.
    fn announce(
        &mut self,
        id: TorrentId,
        tracker: String,
        event: Option<AnnounceEvent>,
        [uploaded, downloaded, left]: [u64; 3],
        seq: u64,
    ) {
        let Some(t) = self.torrents.get(&id) else {
            return;
        };
        let Some(client) = self.trackers.as_mut() else {
            if event != Some(AnnounceEvent::Stopped) {
                let now = self.now();
                self.session
                    .handle_announced(now, id, seq, AnnounceOutcome::NoTrackers);
            }
            return;
        };
        // The torrent may already be gone from the session (the `stopped` announce).
        let job = AnnounceJob {
            key: id.0,
            tracker,
            info_hash: t.info_hash,
            peer_id: self.peer_id,
            port: self.local_addr.port(),
            uploaded,
            downloaded,
            left,
            event: event.map(|e| match e {
                AnnounceEvent::Started => btcore_core::tracker::Event::Started,
                AnnounceEvent::Completed => btcore_core::tracker::Event::Completed,
                AnnounceEvent::Stopped => btcore_core::tracker::Event::Stopped,
            }),
            numwant: Some(50),
            seq,
        };
        client.announce(std::time::Instant::now(), job);
    }

    fn on_event(&mut self, e: Event) {
        match &e {
            Event::PieceVerified(id, _) | Event::TorrentFinished(id) => {
                if let Some(t) = self.torrents.get_mut(id) {
                    t.resume.mark_dirty(std::time::Instant::now());
                }
            }
            _ => {}
        }
        if self.events_out.len() < 10_000 {
            self.events_out.push(e);
        }
    }

    /// A magnet link's info dictionary arrived ([`Action::CheckData`]): the storage is
    /// made, and what is already on disk is checked as for a torrent added from a file
    /// (resume data trusted if no file changed, nothing to check when no file holds
    /// data) before the session downloads what is missing.
    fn metadata_received(&mut self, id: TorrentId) {
        let now = self.now();
        let Some(info) = self.session.info_bytes(id).map(<[u8]>::to_vec) else {
            return;
        };
        let mut file = b"d4:info".to_vec();
        file.extend_from_slice(&info);
        file.push(b'e');
        let mut tokens = Vec::new();
        let parsed = Metainfo::parse_vec(&file, &mut tokens, &Limits::default());
        let storage = match (&parsed, self.torrents.get_mut(&id)) {
            (Ok(m), Some(t)) => {
                t.name = String::from_utf8_lossy(m.name()).into_owned();
                let config = StorageConfig {
                    state_dir: self.opts.state_dir.clone(),
                    ..StorageConfig::default()
                };
                let made = m.layout().map_err(|e| e.to_string()).and_then(|layout| {
                    Storage::new(&t.save_dir, layout, m.geometry(), config)
                        .map_err(|e| e.to_string())
                });
                match made {
                    Ok(s) => {
                        let s = Arc::new(s);
                        // Empty files have no piece to write them: create them now.
                        if let Err(e) = s.ensure_files() {
                            log::warn!("{}: {e}", t.name);
                        }
                        t.storage = Some(s.clone());
                        Some(s)
                    }
                    Err(e) => {
                        log::warn!("{}: no storage: {e}", t.name);
                        None
                    }
                }
            }
            _ => None,
        };
        let (Ok(m), Some(storage)) = (parsed, storage) else {
            // Nothing to check: the torrent starts empty (its writes will fail and
            // stop it with a disk error if there is no storage).
            let n = self
                .session
                .torrent_status(id, now)
                .map_or(0, |s| s.num_pieces);
            self.session.handle_checked(now, id, &Bitfield::new(n));
            return;
        };
        match self.initial_have(&m, &storage) {
            Start::Ready(have) => {
                self.session.handle_checked(now, id, &have);
            }
            Start::Check => {
                let progress = self.submit_check(id, &m, &storage);
                if let Some(t) = self.torrents.get_mut(&id) {
                    t.check = Some(progress);
                }
            }
        }
    }

    /// Writes resume files that changed (coalesced), or all of them when `force`.
    fn save_resume_if_due(&mut self, force: bool) {
        let Some(dir) = self.opts.state_dir.clone() else {
            return;
        };
        let now = std::time::Instant::now();
        let ids: Vec<TorrentId> = self.torrents.keys().copied().collect();
        for id in ids {
            // A torrent still checking keeps the resume file it has: it knows no piece
            // yet, and a save would wipe what the file claims.
            let due = self.torrents.get(&id).is_some_and(|t| {
                t.check.is_none() && t.resume.is_dirty() && (force || t.resume.should_flush(now))
            });
            if !due {
                continue;
            }
            let Some(have) = self.session.have(id).cloned() else {
                continue;
            };
            let Some(status) = self.session.torrent_status(id, self.now()) else {
                continue;
            };
            let info = self.session.info_bytes(id).map(<[u8]>::to_vec);
            let Some(t) = self.torrents.get_mut(&id) else {
                continue;
            };
            t.resume.flushed(now);
            let mut data = ResumeData::new(
                status.info_hash,
                &have,
                t.save_dir.to_string_lossy().as_bytes(),
                status.uploaded,
                status.downloaded,
                info,
            );
            let storage = t.storage.clone();
            let dir = dir.clone();
            let job = move || {
                // Data first, then the claim that it is there, with the files' stamps
                // as they are once synced (a later write changes them).
                if let Some(s) = storage {
                    if s.sync().is_ok() {
                        data.file_stamps = Some(s.stamps());
                    }
                }
                if let Err(e) = resume::save_atomic(&dir, &data) {
                    log::warn!("saving resume data: {e}");
                }
            };
            if force {
                job();
            } else {
                self.disk.submit(DiskJob::Task(Box::new(job)));
            }
        }
    }

    /// Removes a torrent: closes its peers, announces `stopped`, forgets its resume
    /// data, and with `delete_data` deletes its files (empty folders are left). Returns
    /// whether the torrent existed. A disk write still in flight may land after the
    /// files are deleted; call it on a settled torrent when that matters.
    pub fn remove_torrent(&mut self, id: TorrentId, delete_data: bool) -> bool {
        let now = self.now();
        if !self.session.torrents().any(|t| t == id) {
            return false;
        }
        self.session.remove_torrent(now, id);
        self.pump();
        self.disk.submit(DiskJob::Forget { torrent: id });
        self.disk.flush();
        let Some(t) = self.torrents.remove(&id) else {
            return true;
        };
        if let Some(c) = &t.check {
            c.cancel.store(true, Ordering::Relaxed);
        }
        if let Some(dir) = &self.opts.state_dir {
            let _ = std::fs::remove_file(dir.join(ResumeData::file_name(&t.info_hash)));
        }
        if delete_data {
            if let Some(s) = &t.storage {
                let paths: Vec<PathBuf> = (0..s.files().count() as u32)
                    .filter_map(|i| s.file_path(i).map(Path::to_path_buf))
                    .collect();
                for p in paths {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        true
    }

    /// Pauses a torrent (closes its peers, announces `stopped`); false if unknown.
    pub fn pause(&mut self, id: TorrentId) -> bool {
        let now = self.now();
        let ok = self.session.pause_torrent(now, id);
        self.pump();
        ok
    }

    /// Resumes a paused torrent; false if unknown.
    pub fn resume(&mut self, id: TorrentId) -> bool {
        let now = self.now();
        let ok = self.session.resume_torrent(now, id);
        self.pump();
        ok
    }

    /// Writes resume data for every torrent now (after syncing their files).
    pub fn save_resume(&mut self) {
        let now = std::time::Instant::now();
        for t in self.torrents.values_mut() {
            t.resume.mark_dirty(now);
        }
        self.save_resume_if_due(true);
    }

    /// Stops cleanly: announces `stopped`, closes peers, writes resume data.
    pub fn shutdown(&mut self) {
        let now = self.now();
        let ids: Vec<TorrentId> = self.session.torrents().collect();
        for id in &ids {
            if let Some(t) = self.torrents.get_mut(id) {
                t.resume.mark_dirty(std::time::Instant::now());
            }
        }
        // A check in progress stops (the next start checks again).
        for c in self.torrents.values().filter_map(|t| t.check.as_ref()) {
            c.cancel.store(true, Ordering::Relaxed);
        }
        // Let queued writes land before the final resume save.
        for d in self.disk.shutdown() {
            let now = self.now();
            match d {
                DiskDone::Write {
                    torrent,
                    block,
                    result,
                } => self.session.handle_write_done(now, torrent, block, result),
                DiskDone::Verify {
                    torrent,
                    piece,
                    ok,
                    digests,
                } => self
                    .session
                    .handle_verified_blocks(now, torrent, piece, ok, &digests),
                DiskDone::Read { .. } | DiskDone::Checked { .. } => {}
            }
        }
        while self.session.poll_event().is_some() {}
        self.save_resume_if_due(true);
        for id in ids {
            self.session.remove_torrent(now, id);
        }
        while let Some(a) = self.session.poll_action() {
            if let Action::Announce {
                torrent,
                tracker,
                event,
                uploaded,
                downloaded,
                left,
                seq,
            } = a
            {
                self.announce(torrent, tracker, event, [uploaded, downloaded, left], seq);
            }
        }
        if let Some(client) = self.trackers.take() {
            for r in client.shutdown(&mut self.poll, Duration::from_secs(3)) {
                if let Some(e) = &r.error {
                    log::warn!("tracker {}: {e}", r.tracker);
                }
            }
        }
        let conns: Vec<ConnId> = self.socks.keys().copied().collect();
        for c in conns {
            self.drop_sock(c);
        }
        let now = self.now();
        if let Some(d) = self.dht.as_mut() {
            d.maybe_save(now, true);
        }
        let _ = self.waker.wake();
    }

    /// Whether every torrent is seeding.
    pub fn all_complete(&self) -> bool {
        self.torrents()
            .iter()
            .all(|t| t.status.state == TorrentState::Seeding)
    }

    /// The info-hash of a torrent.
    pub fn info_hash(&self, id: TorrentId) -> Option<InfoHash> {
        self.session
            .torrent_status(id, self.now())
            .map(|s| s.info_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback peers are believed from a tracker whose URL names a loopback address
    /// or `localhost`, never from one named by another host name.
    #[test]
    fn tracker_source_from_its_url() {
        let lo4 = PeerSource::Tracker(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let remote = PeerSource::Tracker(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(tracker_source(Some("http://127.0.0.1:8000/announce")), lo4);
        assert_eq!(tracker_source(Some("udp://LocalHost:6969")), lo4);
        assert_eq!(
            tracker_source(Some("udp://[::1]:6969/announce")),
            PeerSource::Tracker("::1".parse().expect("ip"))
        );
        assert_eq!(
            tracker_source(Some("http://u:p@192.0.2.5/a?b")),
            PeerSource::Tracker("192.0.2.5".parse().expect("ip"))
        );
        assert_eq!(tracker_source(Some("https://tracker.example/a")), remote);
        assert_eq!(
            tracker_source(Some("http://localhost.evil.example/a")),
            remote
        );
        assert_eq!(tracker_source(None), remote);
    }
}
