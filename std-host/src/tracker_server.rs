//! btcore's tracker: [`btcore_core::tracker::server::Tracker`] behind HTTP and UDP
//! sockets on one mio event loop, with its state saved to a file and announces
//! forwarded to peer trackers.
//!
//! # HTTP
//!
//! A small HTTP/1.1 server: heads parsed by `httparse`, keep-alive unless the client
//! says `Connection: close`, pipelined requests answered in order. Everything between
//! the socket and the tracker, and every cap on it, lives in [`service`] (socket-free,
//! driven by the fuzz target too): a request of at most 8 KiB, a turn budget per
//! connection, backpressure on unread answers, input and output budgets over all
//! connections, deadlines for heads and bodies, caps on connections per address and in
//! all with eviction instead of refusal (young connections spared when every address
//! holds one), and `/sync` judged at its head. Connections waiting for a process-wide
//! budget are tried again once it has room. Paths:
//!
//! - `GET /announce?...`, `GET /scrape?...`: BEP 3 / BEP 48 (bencoded, `text/plain`).
//! - `GET /stats.json`: `{"swarms":N,"peers":N,"announces":N,"scrapes":N,"failures":N}`;
//!   with `?key=<admin key>`, also `"torrents":[{"info_hash","complete","incomplete",
//!   "downloaded"}...]` (at most [`HttpLimits::max_stats_torrents`]). Info-hashes are
//!   never listed to anyone else: with an allow list they are the publisher's secret.
//!   A page is built at most once a second ([`HttpLimits::stats_cache`]).
//! - `GET /`: a plain HTML page with the same figures (the table with the key only).
//! - `GET /admin/register?info_hash=..&key=..`: adds an info-hash (20 percent-encoded
//!   bytes or 40 hex digits) to the allow list; `key` must be the admin key.
//! - `POST /sync`: a batch from a peer tracker (see the core module docs), with the
//!   [`service::SYNC_AUTH_HEADER`] header.
//!
//! The loop serves in turns: each turn accepts a bounded number of connections,
//! answers a bounded number of UDP batches, and gives every HTTP connection with work
//! one bounded go (read at most [`READ_PER_TURN`] bytes, answer at most
//! [`HttpLimits::requests_per_turn`] requests); whatever is left waits for the next
//! turn, so no client can hold the loop.
//!
//! # UDP
//!
//! BEP 15 on the same loop. Datagrams are read in batches of up to 32 (`recvmmsg` on
//! Linux), answered with one clock reading, and the replies sent together
//! (`sendmmsg`); a reply the socket cannot take is dropped, as a lost datagram would
//! be. A turn answers at most [`UDP_BATCHES_PER_TURN`] batches, so a flood of
//! datagrams cannot starve the HTTP side either.
//!
//! # State
//!
//! With a state file, the allow list and the `downloaded` counters are restored at
//! start, saved when they changed, at most every [`TrackerOptions::save_every`], and on
//! a clean stop, through [`crate::os::write_atomic`]: a crash leaves the old or the new
//! file, never a torn one. The file
//! holds the counts of the swarms in memory only: a restored count of an unregistered
//! torrent whose peers do not come back is swept like any empty swarm's (see
//! [`ServerConfig::empty_swarm_ttl`]), and leaves the file at the next save.
//!
//! # Sync
//!
//! Local announces are encoded into signed batches (HMAC-SHA1 under the sync key) on
//! the loop every [`SYNC_FLUSH`] and handed to a worker thread that `POST`s them to
//! every peer tracker's `/sync`, with a header that proves the key before the body is
//! read. A peer that fails is marked down and probed every second with an
//! empty batch; when it answers again (and at the first contact) the loop sends it a
//! full list of the local peers, so a tracker that restarts learns the swarm back
//! without waiting for re-announces.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant as StdInstant};

use btcore_core::ids::InfoHash;
use btcore_core::rng::Rng;
use btcore_core::time::{Duration as CoreDuration, Instant};
use btcore_core::tracker::server::{encode_sync, sync_auth, Mode, ServerConfig, Tracker};
use btcore_core::tracker::ScrapeStats;
use mio::net::{TcpListener, TcpStream as MioTcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use crate::udp_batch::UdpBatch;

pub mod service;

use service::{ConnId, Service, SYNC_AUTH_HEADER};
pub use service::{HttpCounters, HttpLimits};

/// Most bytes read from one connection in one turn of the loop.
pub const READ_PER_TURN: usize = 64 * 1024;
/// The HTTP listener's accept queue (the kernel caps it at `net.core.somaxconn`).
pub const LISTEN_BACKLOG: i32 = 1024;
/// Most connections accepted in one turn of the loop.
pub const ACCEPTS_PER_TURN: usize = 64;
/// Most UDP batches (of up to 32 datagrams) answered in one
/// turn of the loop.
pub const UDP_BATCHES_PER_TURN: usize = 8;
/// How often the connections' deadlines are checked (and the longest the loop sleeps).
const DEADLINE_CHECK: Duration = Duration::from_millis(100);
/// How often queued sync entries are sent.
pub const SYNC_FLUSH: Duration = Duration::from_millis(500);
/// Most entries in one sync batch.
pub const SYNC_BATCH: usize = 5_000;

const LISTENER: Token = Token(0);
const UDP: Token = Token(1);
const WAKER: Token = Token(2);
const FIRST_CONN: usize = 3;

/// How the tracker is run (`btcore tracker`).
#[derive(Clone, Debug)]
pub struct TrackerOptions {
    /// HTTP listen address (`None`: no HTTP).
    pub http: Option<SocketAddr>,
    /// UDP listen address (`None`: no UDP).
    pub udp: Option<SocketAddr>,
    /// State file (allow list, downloaded counters).
    pub state: Option<PathBuf>,
    /// Only registered info-hashes are tracked.
    pub allow_list: bool,
    /// The key of `/admin/register` (no key: registration disabled).
    pub admin_key: Option<String>,
    /// Info-hashes registered at start (allow-list mode).
    pub register: Vec<InfoHash>,
    /// Peer trackers' base URLs (`http://host:port`); batches go to `/sync` there.
    pub sync_peers: Vec<String>,
    /// The shared key of sync batches (needed to send or accept any).
    pub sync_key: Option<String>,
    /// `interval` sent to clients, in seconds.
    pub interval_secs: u32,
    /// Most swarms.
    pub max_swarms: usize,
    /// Most peers per swarm.
    pub max_peers_per_swarm: usize,
    /// Most peers in all.
    pub max_peers: usize,
    /// Most peers of one address (IPv4, or IPv6 /64) in one swarm (see
    /// [`ServerConfig::max_peers_per_ip`]).
    pub max_peers_per_ip: usize,
    /// Most swarms one address holds peers in (see
    /// [`ServerConfig::max_swarms_per_ip`]).
    pub max_swarms_per_ip: usize,
    /// Most peers of one address in all swarms (see
    /// [`ServerConfig::max_total_peers_per_ip`]).
    pub max_total_peers_per_ip: usize,
    /// Most peers of one IPv6 /48 in all swarms (see
    /// [`ServerConfig::max_peers_per_48`]).
    pub max_peers_per_48: usize,
    /// An empty swarm's `downloaded` count is kept this long after its last announce
    /// (see [`ServerConfig::empty_swarm_ttl`]); `None`: the peer timeout.
    pub empty_swarm_ttl: Option<Duration>,
    /// The HTTP server's caps.
    pub limits: HttpLimits,
    /// Believe the `ip` parameter of announces.
    pub accept_ip_param: bool,
    /// Keep peer ids for non-compact HTTP replies (see [`ServerConfig::peer_ids`]).
    pub peer_ids: bool,
    /// Shortest time between two state saves.
    pub save_every: Duration,
}

impl Default for TrackerOptions {
    fn default() -> Self {
        let c = ServerConfig::default();
        Self {
            http: Some(SocketAddr::from(([0, 0, 0, 0], 6969))),
            udp: Some(SocketAddr::from(([0, 0, 0, 0], 6969))),
            state: None,
            allow_list: false,
            admin_key: None,
            register: Vec::new(),
            sync_peers: Vec::new(),
            sync_key: None,
            interval_secs: c.interval_secs,
            max_swarms: c.max_swarms,
            max_peers_per_swarm: c.max_peers_per_swarm,
            max_peers: c.max_peers,
            max_peers_per_ip: c.max_peers_per_ip,
            max_swarms_per_ip: c.max_swarms_per_ip,
            max_total_peers_per_ip: c.max_total_peers_per_ip,
            max_peers_per_48: c.max_peers_per_48,
            empty_swarm_ttl: None,
            limits: HttpLimits::default(),
            accept_ip_param: false,
            peer_ids: c.peer_ids,
            save_every: Duration::from_secs(5),
        }
    }
}

impl TrackerOptions {
    fn config(&self) -> ServerConfig {
        let interval = self.interval_secs.max(1);
        ServerConfig {
            mode: if self.allow_list {
                Mode::AllowList
            } else {
                Mode::Open
            },
            interval_secs: interval,
            min_interval_secs: 60.min(interval),
            peer_timeout: CoreDuration::from_secs(2 * u64::from(interval)),
            max_swarms: self.max_swarms,
            max_peers_per_swarm: self.max_peers_per_swarm,
            max_peers: self.max_peers,
            max_peers_per_ip: self.max_peers_per_ip,
            max_swarms_per_ip: self.max_swarms_per_ip,
            max_total_peers_per_ip: self.max_total_peers_per_ip,
            max_peers_per_48: self.max_peers_per_48,
            empty_swarm_ttl: CoreDuration::from_millis(
                self.empty_swarm_ttl
                    .map_or(2_000 * u64::from(interval), |d| d.as_millis() as u64),
            ),
            accept_ip_param: self.accept_ip_param,
            peer_ids: self.peer_ids,
            sync: !self.sync_peers.is_empty() && self.sync_key.is_some(),
            sweep_every: CoreDuration::from_secs(u64::from(interval).clamp(1, 10)),
            ..ServerConfig::default()
        }
    }
}

/// Runs a tracker until `stop` is set, then saves its state (`btcore tracker`).
pub fn run(opts: TrackerOptions, stop: Arc<AtomicBool>) -> io::Result<()> {
    let server = TrackerServer::start(opts)?;
    if let Some(a) = server.http_addr() {
        log::info!("tracker: http://{a}/announce");
    }
    if let Some(a) = server.udp_addr() {
        log::info!("tracker: udp://{a}/announce");
    }
    while !stop.load(Ordering::SeqCst) && !server.is_finished() {
        thread::sleep(Duration::from_millis(100));
    }
    server.stop()
}

/// A running tracker (event loop thread plus an optional sync worker).
#[derive(Debug)]
pub struct TrackerServer {
    http: Option<SocketAddr>,
    udp: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    /// Set with `stop` to skip the final save (a simulated crash).
    no_save: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<io::Result<()>>>,
    sync: Option<JoinHandle<()>>,
    counters: Arc<Mutex<HttpCounters>>,
}

impl TrackerServer {
    /// Binds the sockets, restores the state and starts the loop.
    pub fn start(opts: TrackerOptions) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listener = opts.http.map(listen).transpose()?;
        let mut udp = opts.udp.map(UdpSocket::bind).transpose()?;
        if let Some(l) = listener.as_mut() {
            poll.registry().register(l, LISTENER, Interest::READABLE)?;
        }
        if let Some(u) = udp.as_mut() {
            poll.registry().register(u, UDP, Interest::READABLE)?;
        }
        let http = listener.as_ref().map(TcpListener::local_addr).transpose()?;
        let udp_addr = udp.as_ref().map(UdpSocket::local_addr).transpose()?;

        let seed: [u8; 32] = crate::os::random_array();
        let mut tracker = Tracker::new(opts.config(), seed);
        if let Some(path) = &opts.state {
            match fs::read(path) {
                Ok(data) => tracker.restore_state(Instant::ZERO, &data).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {e}", path.display()),
                    )
                })?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        for h in &opts.register {
            tracker.register(*h);
        }
        let rng_seed = u64::from_le_bytes([
            seed[20], seed[21], seed[22], seed[23], seed[24], seed[25], seed[26], seed[27],
        ]);

        let stop = Arc::new(AtomicBool::new(false));
        let no_save = Arc::new(AtomicBool::new(false));
        let full_dump = Arc::new(AtomicBool::new(false));
        let (sync_tx, sync) = match (&opts.sync_key, opts.sync_peers.is_empty()) {
            (Some(key), false) => {
                let (tx, rx) = std::sync::mpsc::sync_channel(64);
                let worker = SyncWorker {
                    peers: opts
                        .sync_peers
                        .iter()
                        .map(|u| PeerTracker::new(u))
                        .collect(),
                    key: key.clone().into_bytes(),
                    rx,
                    full_dump: full_dump.clone(),
                    waker: waker.clone(),
                    stop: stop.clone(),
                };
                let h = thread::Builder::new()
                    .name("btcore-tracker-sync".into())
                    .spawn(move || worker.run())?;
                (Some(tx), Some(h))
            }
            _ => (None, None),
        };

        let counters = Arc::new(Mutex::new(HttpCounters::default()));
        let service = Service::new(
            opts.limits.clone(),
            tracker,
            Rng::new(rng_seed),
            opts.admin_key.clone(),
            opts.sync_key.clone(),
        );
        let mut lp = Loop {
            service,
            poll,
            listener,
            udp,
            socks: HashMap::new(),
            work: VecDeque::new(),
            stalled: Vec::new(),
            read_buf: vec![0; 16 * 1024],
            accept_ready: false,
            udp_ready: false,
            start: StdInstant::now(),
            state: opts.state.clone(),
            save_every: opts.save_every,
            last_save: None,
            sync_key: opts.sync_key.clone(),
            sync_tx,
            full_dump,
            last_flush: StdInstant::now(),
            stop: stop.clone(),
            no_save: no_save.clone(),
            counters: counters.clone(),
        };
        let thread = thread::Builder::new()
            .name("btcore-tracker".into())
            .spawn(move || lp.run())?;
        Ok(Self {
            http,
            udp: udp_addr,
            stop,
            no_save,
            waker,
            thread: Some(thread),
            sync,
            counters,
        })
    }

    /// What the HTTP service did so far (updated at the end of every turn).
    pub fn http_counters(&self) -> HttpCounters {
        self.counters
            .lock()
            .map_or_else(|e| *e.into_inner(), |c| *c)
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// The bound UDP address.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp
    }

    /// Whether the loop ended on its own (an error).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the loop, saves the state and joins the threads.
    pub fn stop(mut self) -> io::Result<()> {
        self.shutdown()
    }

    /// Stops without the final save, as `kill -9` would (only the coalesced saves made
    /// while running are on disk). For tests.
    pub fn kill(mut self) {
        self.no_save.store(true, Ordering::SeqCst);
        let _ = self.shutdown();
    }

    fn shutdown(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        let r = match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("tracker thread panicked"))),
            None => Ok(()),
        };
        if let Some(s) = self.sync.take() {
            let _ = s.join();
        }
        r
    }
}

impl Drop for TrackerServer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// A non-blocking listener on `addr` with a backlog of [`LISTEN_BACKLOG`] (the standard
/// library's 128 overflows under a burst of connections, and every dropped SYN costs
/// its client a second).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(LISTEN_BACKLOG)?;
    s.set_nonblocking(true)?;
    Ok(TcpListener::from_std(s.into()))
}

// ---------------------------------------------------------------- the loop

/// A connection's socket and what it is known to be ready for (readiness is
/// edge-triggered: a flag stays set until the socket says `WouldBlock`).
struct Sock {
    stream: MioTcpStream,
    readable: bool,
    writable: bool,
    /// The peer sent its last byte (or the socket failed): nothing more to read.
    eof: bool,
    /// In the work queue.
    queued: bool,
    /// In the list of connections waiting for a process-wide budget.
    stalled: bool,
}

struct Loop {
    service: Service,
    poll: Poll,
    listener: Option<TcpListener>,
    udp: Option<UdpSocket>,
    socks: HashMap<ConnId, Sock>,
    /// Connections with work for the next turn.
    work: VecDeque<ConnId>,
    /// Connections waiting for the process-wide output (`true`) or input budget,
    /// tried again once it has room (nothing on their own sockets will wake them).
    stalled: Vec<(ConnId, bool)>,
    /// Reused for every read.
    read_buf: Vec<u8>,
    /// The listener or the UDP socket may have more waiting.
    accept_ready: bool,
    udp_ready: bool,
    start: StdInstant,
    state: Option<PathBuf>,
    save_every: Duration,
    last_save: Option<StdInstant>,
    sync_key: Option<String>,
    sync_tx: Option<SyncSender<Vec<u8>>>,
    full_dump: Arc<AtomicBool>,
    last_flush: StdInstant,
    stop: Arc<AtomicBool>,
    no_save: Arc<AtomicBool>,
    counters: Arc<Mutex<HttpCounters>>,
}

const fn token(id: ConnId) -> Token {
    Token(id + FIRST_CONN)
}

impl Loop {
    fn now(&self) -> Instant {
        Instant::from_millis(self.start.elapsed().as_millis() as u64)
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut batch = UdpBatch::new();
        let mut expired = Vec::new();
        let mut last_deadlines = StdInstant::now();
        while !self.stop.load(Ordering::SeqCst) {
            let busy = !self.work.is_empty() || self.accept_ready || self.udp_ready;
            // Deadlines are whole seconds or more: checking them every DEADLINE_CHECK
            // keeps a turn O(its work), not O(connections).
            let timeout = if busy { Duration::ZERO } else { DEADLINE_CHECK };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in &events {
                match ev.token() {
                    LISTENER => self.accept_ready = true,
                    UDP => self.udp_ready = true,
                    WAKER => {}
                    Token(t) => {
                        let id = t - FIRST_CONN;
                        if let Some(s) = self.socks.get_mut(&id) {
                            s.readable |= ev.is_readable() || ev.is_read_closed() || ev.is_error();
                            s.writable |= ev.is_writable() || ev.is_error();
                            if !s.queued {
                                s.queued = true;
                                self.work.push_back(id);
                            }
                        }
                    }
                }
            }
            if self.accept_ready {
                self.accept();
            }
            if self.udp_ready {
                self.udp_turn(&mut batch);
            }
            // Connections waiting for a process-wide budget that has room again.
            let service = &self.service;
            let (socks, work) = (&mut self.socks, &mut self.work);
            self.stalled.retain(|&(id, output)| {
                if !service.has_room(output) && socks.contains_key(&id) {
                    return true;
                }
                if let Some(s) = socks.get_mut(&id) {
                    s.stalled = false;
                    if !s.queued {
                        s.queued = true;
                        work.push_back(id);
                    }
                }
                false
            });
            // One bounded go for every connection with work, in turn.
            for _ in 0..self.work.len() {
                let Some(id) = self.work.pop_front() else {
                    break;
                };
                if self.drive(id) {
                    self.work.push_back(id);
                } else if let Some(s) = self.socks.get_mut(&id) {
                    s.queued = false;
                    let input = s.readable && !s.eof && self.service.stalled(id, false);
                    let output = self.service.stalled(id, true);
                    if !s.stalled && (output || input) {
                        s.stalled = true;
                        self.stalled.push((id, output));
                    }
                }
            }
            let now = self.now();
            if self
                .service
                .tracker()
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.service.tracker_mut().handle_timeout(now);
            }
            if last_deadlines.elapsed() >= DEADLINE_CHECK {
                last_deadlines = StdInstant::now();
                self.service.handle_timeout(now, &mut expired);
                for id in expired.drain(..) {
                    self.drop_sock(id);
                }
            }
            self.flush_sync(false);
            self.maybe_save(false);
            if let Ok(mut c) = self.counters.lock() {
                *c = self.service.counters();
            }
        }
        self.flush_sync(true);
        if !self.no_save.load(Ordering::SeqCst) {
            self.maybe_save(true);
        }
        Ok(())
    }

    fn maybe_save(&mut self, force: bool) {
        let Some(path) = self.state.clone() else {
            return;
        };
        let tracker = self.service.tracker_mut();
        if !tracker.is_dirty() {
            return;
        }
        if !force
            && self
                .last_save
                .is_some_and(|t| t.elapsed() < self.save_every)
        {
            return;
        }
        let mut data = Vec::new();
        tracker.encode_state(&mut data);
        match crate::os::write_atomic(&path, &data) {
            Ok(()) => {
                tracker.mark_saved();
                self.last_save = Some(StdInstant::now());
            }
            Err(e) => {
                log::warn!("tracker: saving {}: {e}", path.display());
                // Try again after the interval rather than on every turn.
                self.last_save = Some(StdInstant::now());
            }
        }
    }

    fn flush_sync(&mut self, force: bool) {
        let (Some(tx), Some(key)) = (&self.sync_tx, &self.sync_key) else {
            return;
        };
        let now = Instant::from_millis(self.start.elapsed().as_millis() as u64);
        let tracker = self.service.tracker_mut();
        if self.full_dump.swap(false, Ordering::SeqCst) {
            let mut all = Vec::new();
            tracker.local_sync_entries(now, &mut all);
            for chunk in all.chunks(SYNC_BATCH) {
                let mut msg = Vec::new();
                encode_sync(chunk, key.as_bytes(), &mut msg);
                if let Err(TrySendError::Full(_)) = tx.try_send(msg) {
                    log::warn!("tracker: sync queue full, full resync truncated");
                    break;
                }
            }
        }
        if tracker.sync_pending() == 0
            || (!force
                && self.last_flush.elapsed() < SYNC_FLUSH
                && tracker.sync_pending() < SYNC_BATCH)
        {
            return;
        }
        self.last_flush = StdInstant::now();
        while tracker.sync_pending() > 0 {
            let mut batch = Vec::new();
            tracker.drain_sync(&mut batch, SYNC_BATCH);
            let mut msg = Vec::new();
            encode_sync(&batch, key.as_bytes(), &mut msg);
            if tx.try_send(msg).is_err() {
                log::debug!("tracker: sync worker busy, batch dropped");
            }
        }
    }

    /// Accepts up to [`ACCEPTS_PER_TURN`] connections; each is admitted by the service,
    /// which may evict another.
    fn accept(&mut self) {
        let Some(listener) = self.listener.take() else {
            self.accept_ready = false;
            return;
        };
        self.accept_from(&listener);
        self.listener = Some(listener);
    }

    fn accept_from(&mut self, listener: &TcpListener) {
        for _ in 0..ACCEPTS_PER_TURN {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    let now = Instant::from_millis(self.start.elapsed().as_millis() as u64);
                    let opened = self.service.open(now, peer);
                    if opened.evict == Some(opened.id) {
                        // Refused: every connection is too young to give way.
                        drop(stream);
                        continue;
                    }
                    if let Some(old) = opened.evict {
                        self.drop_sock(old);
                    }
                    let registered = self.poll.registry().register(
                        &mut stream,
                        token(opened.id),
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    if registered.is_err() {
                        self.service.close(opened.id);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    self.socks.insert(
                        opened.id,
                        Sock {
                            stream,
                            readable: false,
                            writable: false,
                            eof: false,
                            queued: false,
                            stalled: false,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, for one: try again next turn, not in a spin.
                    log::debug!("tracker: accept: {e}");
                    self.accept_ready = false;
                    return;
                }
            }
        }
    }

    /// Answers up to [`UDP_BATCHES_PER_TURN`] batches of datagrams.
    fn udp_turn(&mut self, batch: &mut UdpBatch) {
        let Some(sock) = &self.udp else {
            self.udp_ready = false;
            return;
        };
        for _ in 0..UDP_BATCHES_PER_TURN {
            match batch.recv(sock) {
                Ok(_) => {
                    let now = Instant::from_millis(self.start.elapsed().as_millis() as u64);
                    let service = &mut self.service;
                    batch.answer(|pkt, from, out| service.handle_udp(now, pkt, from, out));
                    batch.send(sock);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.udp_ready = false;
                    return;
                }
            }
        }
    }

    /// Closes `id`'s socket (the service has forgotten it, or is told to).
    fn drop_sock(&mut self, id: ConnId) {
        self.service.close(id);
        if let Some(mut s) = self.socks.remove(&id) {
            let _ = self.poll.registry().deregister(&mut s.stream);
        }
    }

    /// One bounded go for `id`: write what is queued, read at most [`READ_PER_TURN`]
    /// bytes while the service takes them, answer within its turn budget, write again.
    /// Returns whether it has more to do next turn.
    fn drive(&mut self, id: ConnId) -> bool {
        let now = self.now();
        let Some(s) = self.socks.get_mut(&id) else {
            return false;
        };
        let mut failed = !flush(&mut self.service, now, id, s);
        let mut read = 0;
        let buf = &mut self.read_buf;
        while !failed && s.readable && !s.eof && read < READ_PER_TURN {
            let want = self.service.read_capacity(id).min(buf.len());
            if want == 0 {
                break;
            }
            match s.stream.read(&mut buf[..want]) {
                Ok(0) => s.eof = true,
                Ok(n) => {
                    read += n;
                    self.service.received(now, id, &buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => failed = true,
            }
        }
        let budget_left = self.service.process(now, id);
        failed = failed || !flush(&mut self.service, now, id, s);
        let done = failed
            || self.service.finished(id)
            || (s.eof && !budget_left && self.service.output(id).is_empty());
        if done {
            self.drop_sock(id);
            return false;
        }
        let can_read = s.readable && !s.eof && self.service.read_capacity(id) > 0;
        let can_write = s.writable && !self.service.output(id).is_empty();
        budget_left || can_read || can_write || self.service.ready(id)
    }
}

/// Writes `id`'s queued output while the socket takes it; `false` on a socket error.
fn flush(service: &mut Service, now: Instant, id: ConnId, s: &mut Sock) -> bool {
    while s.writable {
        let out = service.output(id);
        if out.is_empty() {
            break;
        }
        match s.stream.write(out) {
            Ok(0) => return false,
            Ok(n) => service.wrote(now, id, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.writable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

// ---------------------------------------------------------------- sync worker

struct PeerTracker {
    url: String,
    authority: String,
    path: String,
    up: bool,
    last_try: Option<StdInstant>,
}

impl PeerTracker {
    fn new(url: &str) -> Self {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (authority, path) = match rest.find('/') {
            Some(i) if &rest[i..] != "/" => (&rest[..i], &rest[i..]),
            Some(i) => (&rest[..i], "/sync"),
            None => (rest, "/sync"),
        };
        Self {
            url: url.to_string(),
            authority: authority.to_string(),
            path: path.to_string(),
            up: false,
            last_try: None,
        }
    }

    fn post(&self, body: &[u8], key: &[u8]) -> Result<(), String> {
        let auth = sync_auth(key, body.len() as u64);
        let auth = std::str::from_utf8(&auth).unwrap_or_default();
        let (code, text) = http_request(
            &self.authority,
            "POST",
            &self.path,
            &[(SYNC_AUTH_HEADER, auth)],
            body,
            Duration::from_secs(3),
        )
        .map_err(|e| e.to_string())?;
        if code == 200 {
            Ok(())
        } else {
            Err(format!("{code} {}", String::from_utf8_lossy(&text)))
        }
    }
}

struct SyncWorker {
    peers: Vec<PeerTracker>,
    key: Vec<u8>,
    rx: Receiver<Vec<u8>>,
    full_dump: Arc<AtomicBool>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

impl SyncWorker {
    fn run(mut self) {
        let mut probe = Vec::new();
        encode_sync(&[], &self.key, &mut probe);
        loop {
            let msg = self.rx.recv_timeout(Duration::from_millis(200));
            if self.stop.load(Ordering::SeqCst) && msg.is_err() {
                return;
            }
            if let Ok(msg) = &msg {
                for p in self.peers.iter_mut().filter(|p| p.up) {
                    if let Err(e) = p.post(msg, &self.key) {
                        log::info!("tracker: sync peer {} down: {e}", p.url);
                        p.up = false;
                    }
                }
            }
            let mut came_up = false;
            for p in self.peers.iter_mut().filter(|p| !p.up) {
                if p.last_try
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
                {
                    continue;
                }
                p.last_try = Some(StdInstant::now());
                if p.post(&probe, &self.key).is_ok() {
                    log::info!("tracker: sync peer {} up", p.url);
                    p.up = true;
                    came_up = true;
                }
            }
            if came_up {
                self.full_dump.store(true, Ordering::SeqCst);
                let _ = self.waker.wake();
            }
        }
    }
}

/// A one-shot HTTP/1.1 request over a plain TCP connection (`authority` is
/// `host:port`) with `headers` besides `Host`, `Content-Length` and `Connection`;
/// returns the status code and the body (at most 1 MiB).
fn http_request(
    authority: &str,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<(u16, Vec<u8>)> {
    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    let mut req = req.into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req)?;
    let mut resp = Vec::new();
    s.take(1 << 20).read_to_end(&mut resp)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP response");
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(&resp) {
        Ok(httparse::Status::Complete(end)) => Ok((r.code.ok_or_else(bad)?, resp[end..].to_vec())),
        _ => Err(bad()),
    }
}

// ---------------------------------------------------------------- share, scrape

/// `btcore share`: registers info-hashes with a btcore tracker in allow-list mode.
#[derive(Clone, Debug)]
pub struct ShareOptions {
    /// The tracker's base or announce URL (`http://host:port[/announce]`).
    pub tracker: String,
    /// The tracker's admin key.
    pub admin_key: String,
    /// The torrents to register.
    pub info_hashes: Vec<InfoHash>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Registers every info-hash of `opts`; returns the tracker's answer for each.
pub fn share(opts: &ShareOptions) -> Result<Vec<(InfoHash, String)>, String> {
    let rest = opts
        .tracker
        .strip_prefix("http://")
        .ok_or("share needs an http:// tracker URL")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut key = String::new();
    let _ = btcore_core::tracker::percent_encode(opts.admin_key.as_bytes(), &mut key);
    let mut out = Vec::new();
    for h in &opts.info_hashes {
        let path = format!(
            "/admin/register?info_hash={}&key={key}",
            String::from_utf8_lossy(&h.to_hex())
        );
        let (code, body) = http_request(authority, "GET", &path, &[], &[], opts.timeout)
            .map_err(|e| format!("{}: {e}", opts.tracker))?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if code != 200 {
            return Err(format!("{h}: {code} {text}"));
        }
        out.push((*h, text));
    }
    Ok(out)
}

/// `btcore scrape`: asks any tracker (HTTP or UDP) for the counts of info-hashes.
#[derive(Clone, Debug)]
pub struct ScrapeOptions {
    /// The tracker's announce URL (`http://.../announce` or `udp://host:port`).
    pub tracker: String,
    /// The torrents.
    pub info_hashes: Vec<InfoHash>,
    /// Timeout of the whole scrape.
    pub timeout: Duration,
}

/// Scrapes through [`crate::tracker::scrape`] (blocking: a one-shot command).
pub fn scrape(opts: &ScrapeOptions) -> Result<Vec<(InfoHash, ScrapeStats)>, String> {
    let config = crate::tracker::TrackerConfig {
        timeout: opts.timeout,
        max_parallel: 1,
        ..crate::tracker::TrackerConfig::default()
    };
    crate::tracker::scrape(&config, &opts.tracker, &opts.info_hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_tracker_urls() {
        let p = PeerTracker::new("http://127.0.0.1:7000");
        assert_eq!(
            (p.authority.as_str(), p.path.as_str()),
            ("127.0.0.1:7000", "/sync")
        );
        let p = PeerTracker::new("http://h:1/other");
        assert_eq!((p.authority.as_str(), p.path.as_str()), ("h:1", "/other"));
    }
}
