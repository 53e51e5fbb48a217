//! btcore's tracker: [`btcore_core::tracker::server::Tracker`] behind HTTP and UDP
//! sockets on one mio event loop, with its state saved to a file and announces
//! forwarded to peer trackers.
//!
//! # HTTP
//!
//! A small HTTP/1.1 server: requests of at most [`MAX_REQUEST`] bytes (head and body;
//! `POST /sync` bodies up to [`MAX_SYNC_BODY`]), keep-alive unless the client says
//! `Connection: close`, pipelined requests answered in order, idle connections closed
//! after [`IDLE_TIMEOUT`], at most [`MAX_CONNECTIONS`] at once. Paths:
//!
//! - `GET /announce?...`, `GET /scrape?...`: BEP 3 / BEP 48 (bencoded, `text/plain`).
//! - `GET /stats.json`: `{"swarms":N,"peers":N,"torrents":[{"info_hash","complete",
//!   "incomplete","downloaded"}...]}` (at most [`MAX_STATS_TORRENTS`] torrents).
//! - `GET /`: a plain HTML page with the same figures.
//! - `GET /admin/register?info_hash=..&key=..`: adds an info-hash (20 percent-encoded
//!   bytes or 40 hex digits) to the allow list; `key` must be the admin key.
//! - `POST /sync`: a batch from a peer tracker (see the core module docs).
//!
//! # UDP
//!
//! BEP 15 on the same loop. Datagrams are read in batches of up to
//! [`crate::udp_batch::BATCH`] (`recvmmsg` on Linux), answered with one clock reading,
//! and the replies sent together (`sendmmsg`); a reply the socket cannot take is
//! dropped, as a lost datagram would be.
//!
//! # State
//!
//! With a state file, the allow list and the `downloaded` counters are restored at
//! start, saved when they changed, at most every [`TrackerOptions::save_every`], and on
//! a clean stop. A save writes `FILE.tmp`, syncs it, renames it over `FILE` and syncs
//! the directory: a crash leaves the old or the new file, never a torn one.
//!
//! # Sync
//!
//! Local announces are encoded into signed batches on the loop every
//! [`SYNC_FLUSH`] and handed to a worker thread that `POST`s them to every peer
//! tracker's `/sync`. A peer that fails is marked down and probed every second with an
//! empty batch; when it answers again (and at the first contact) the loop sends it a
//! full list of the local peers, so a tracker that restarts learns the swarm back
//! without waiting for re-announces.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant as StdInstant};

use btcore_core::ids::InfoHash;
use btcore_core::rng::Rng;
use btcore_core::time::{Duration as CoreDuration, Instant};
use btcore_core::tracker::server::{
    decode_id20, encode_sync, query_pairs, Mode, ServerConfig, Tracker,
};
use btcore_core::tracker::ScrapeStats;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::{TcpListener, TcpStream as MioTcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::udp_batch::UdpBatch;

/// Largest HTTP request (head plus body) outside `/sync`.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Largest `POST /sync` body.
pub const MAX_SYNC_BODY: usize = 8 << 20;
/// Idle keep-alive connections are closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most open HTTP connections; more are accepted and closed at once.
pub const MAX_CONNECTIONS: usize = 4096;
/// Most torrents listed by `/stats.json` and `/`.
pub const MAX_STATS_TORRENTS: usize = 10_000;
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
}

impl TrackerServer {
    /// Binds the sockets, restores the state and starts the loop.
    pub fn start(opts: TrackerOptions) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listener = opts.http.map(TcpListener::bind).transpose()?;
        let mut udp = opts.udp.map(UdpSocket::bind).transpose()?;
        if let Some(l) = listener.as_mut() {
            poll.registry().register(l, LISTENER, Interest::READABLE)?;
        }
        if let Some(u) = udp.as_mut() {
            poll.registry().register(u, UDP, Interest::READABLE)?;
        }
        let http = listener.as_ref().map(TcpListener::local_addr).transpose()?;
        let udp_addr = udp.as_ref().map(UdpSocket::local_addr).transpose()?;

        let seed = random_bytes();
        let mut tracker = Tracker::new(opts.config(), seed);
        if let Some(path) = &opts.state {
            match fs::read(path) {
                Ok(data) => tracker.restore_state(&data).map_err(|e| {
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
                let (tx, rx) = crossbeam_channel::bounded(64);
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

        let mut lp = Loop {
            tracker,
            rng: Rng::new(rng_seed),
            poll,
            listener,
            udp,
            conns: HashMap::new(),
            next_token: FIRST_CONN,
            start: StdInstant::now(),
            state: opts.state.clone(),
            save_every: opts.save_every,
            last_save: None,
            admin_key: opts.admin_key.clone(),
            sync_key: opts.sync_key.clone(),
            sync_tx,
            full_dump,
            last_flush: StdInstant::now(),
            stop: stop.clone(),
            no_save: no_save.clone(),
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
        })
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

/// 32 bytes from the OS (`/dev/urandom`), or from the clock and process id if that
/// fails; they key the UDP connection ids and seed the peer selection.
fn random_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    if fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return b;
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let seed = format!("{t} {} {:p}", std::process::id(), &b);
    let h1 = btcore_core::hash::sha1(seed.as_bytes());
    let h2 = btcore_core::hash::sha1(&h1);
    b[..20].copy_from_slice(&h1);
    b[20..].copy_from_slice(&h2[..12]);
    b
}

// ---------------------------------------------------------------- the loop

struct Conn {
    stream: MioTcpStream,
    peer: SocketAddr,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    close: bool,
    last_active: StdInstant,
}

struct Loop {
    tracker: Tracker,
    rng: Rng,
    poll: Poll,
    listener: Option<TcpListener>,
    udp: Option<UdpSocket>,
    conns: HashMap<usize, Conn>,
    next_token: usize,
    start: StdInstant,
    state: Option<PathBuf>,
    save_every: Duration,
    last_save: Option<StdInstant>,
    admin_key: Option<String>,
    sync_key: Option<String>,
    sync_tx: Option<Sender<Vec<u8>>>,
    full_dump: Arc<AtomicBool>,
    last_flush: StdInstant,
    stop: Arc<AtomicBool>,
    no_save: Arc<AtomicBool>,
}

/// What a parsed request asks for.
struct Request<'a> {
    method: &'a [u8],
    path: &'a [u8],
    query: &'a [u8],
    body: &'a [u8],
    keep_alive: bool,
}

enum Parsed {
    Partial,
    Bad(u16),
    Done(usize),
}

impl Loop {
    fn now(&self) -> Instant {
        Instant::from_millis(self.start.elapsed().as_millis() as u64)
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut batch = UdpBatch::new();
        let mut last_idle_check = StdInstant::now();
        while !self.stop.load(Ordering::SeqCst) {
            let timeout = Duration::from_millis(100);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in &events {
                match ev.token() {
                    LISTENER => self.accept(),
                    UDP => self.udp_ready(&mut batch),
                    WAKER => {}
                    Token(t) => self.conn_ready(t),
                }
            }
            let now = self.now();
            if self.tracker.poll_timeout().is_some_and(|t| t <= now) {
                self.tracker.handle_timeout(now);
            }
            self.flush_sync(false);
            self.maybe_save(false);
            if last_idle_check.elapsed() >= Duration::from_secs(1) {
                last_idle_check = StdInstant::now();
                let idle: Vec<usize> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.last_active.elapsed() > IDLE_TIMEOUT)
                    .map(|(t, _)| *t)
                    .collect();
                for t in idle {
                    self.close(t);
                }
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
        if !self.tracker.is_dirty() {
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
        self.tracker.encode_state(&mut data);
        match save_atomically(&path, &data) {
            Ok(()) => {
                self.tracker.mark_saved();
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
        let now = self.now();
        if self.full_dump.swap(false, Ordering::SeqCst) {
            let mut all = Vec::new();
            self.tracker.local_sync_entries(now, &mut all);
            for chunk in all.chunks(SYNC_BATCH) {
                let mut msg = Vec::new();
                encode_sync(chunk, key.as_bytes(), &mut msg);
                if let Err(TrySendError::Full(_)) = tx.try_send(msg) {
                    log::warn!("tracker: sync queue full, full resync truncated");
                    break;
                }
            }
        }
        if self.tracker.sync_pending() == 0
            || (!force
                && self.last_flush.elapsed() < SYNC_FLUSH
                && self.tracker.sync_pending() < SYNC_BATCH)
        {
            return;
        }
        self.last_flush = StdInstant::now();
        while self.tracker.sync_pending() > 0 {
            let mut batch = Vec::new();
            self.tracker.drain_sync(&mut batch, SYNC_BATCH);
            let mut msg = Vec::new();
            encode_sync(&batch, key.as_bytes(), &mut msg);
            if tx.try_send(msg).is_err() {
                log::debug!("tracker: sync worker busy, batch dropped");
            }
        }
    }

    fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    if self.conns.len() >= MAX_CONNECTIONS {
                        continue; // dropped: closed at once
                    }
                    let token = self.next_token;
                    self.next_token += 1;
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(token),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    self.conns.insert(
                        token,
                        Conn {
                            stream,
                            peer,
                            inbuf: Vec::new(),
                            out: Vec::new(),
                            written: 0,
                            close: false,
                            last_active: StdInstant::now(),
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("tracker: accept: {e}");
                    break;
                }
            }
        }
    }

    /// Answers datagrams until the socket is drained (edge-triggered readiness).
    fn udp_ready(&mut self, batch: &mut UdpBatch) {
        let Some(sock) = &self.udp else {
            return;
        };
        loop {
            match batch.recv(sock) {
                Ok(_) => {
                    let now = Instant::from_millis(self.start.elapsed().as_millis() as u64);
                    let (tracker, rng) = (&mut self.tracker, &mut self.rng);
                    batch.answer(|pkt, from, out| tracker.handle_udp(now, pkt, from, rng, out));
                    batch.send(sock);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }

    fn close(&mut self, token: usize) {
        if let Some(mut c) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    fn conn_ready(&mut self, token: usize) {
        let Some(mut c) = self.conns.remove(&token) else {
            return;
        };
        let keep = self.drive(&mut c);
        if keep {
            self.conns.insert(token, c);
        } else {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    /// Reads, answers and writes what it can; `false` when the connection is done.
    fn drive(&mut self, c: &mut Conn) -> bool {
        c.last_active = StdInstant::now();
        let mut eof = false;
        let mut buf = [0u8; 4096];
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    c.inbuf.extend_from_slice(&buf[..n]);
                    if c.inbuf.len() > MAX_SYNC_BODY + MAX_REQUEST {
                        c.close = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        while !c.close {
            match parse_request(&c.inbuf) {
                Parsed::Partial => break,
                Parsed::Bad(code) => {
                    respond(
                        &mut c.out,
                        code,
                        "text/plain",
                        status_text(code).as_bytes(),
                        false,
                    );
                    c.close = true;
                    c.inbuf.clear();
                }
                Parsed::Done(len) => {
                    let data = std::mem::take(&mut c.inbuf);
                    let keep = self.answer(&data[..len], c.peer, &mut c.out);
                    c.inbuf = data[len..].to_vec();
                    if !keep {
                        c.close = true;
                    }
                }
            }
        }
        // Write what is pending.
        while c.written < c.out.len() {
            match c.stream.write(&c.out[c.written..]) {
                Ok(0) => return false,
                Ok(n) => c.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        c.out.clear();
        c.written = 0;
        !(c.close || eof)
    }

    /// Answers one whole request into `out`; `false` if the connection should close.
    fn answer(&mut self, raw: &[u8], peer: SocketAddr, out: &mut Vec<u8>) -> bool {
        let Some(req) = split_request(raw) else {
            respond(out, 400, "text/plain", b"Bad Request", false);
            return false;
        };
        let ka = req.keep_alive;
        let now = self.now();
        let mut body = Vec::with_capacity(512);
        match (req.method, req.path) {
            (b"GET", b"/announce") => {
                self.tracker
                    .handle_http_announce(now, req.query, peer, &mut self.rng, &mut body);
                respond(out, 200, "text/plain", &body, ka);
            }
            (b"GET", b"/scrape") => {
                self.tracker.handle_http_scrape(req.query, &mut body);
                respond(out, 200, "text/plain", &body, ka);
            }
            (b"GET", b"/stats.json") => {
                respond(
                    out,
                    200,
                    "application/json",
                    self.stats_json().as_bytes(),
                    ka,
                );
            }
            (b"GET", b"/") => {
                respond(
                    out,
                    200,
                    "text/html; charset=utf-8",
                    self.html().as_bytes(),
                    ka,
                );
            }
            (b"GET", b"/admin/register") => {
                let (code, text) = self.register(req.query);
                respond(out, code, "text/plain", text.as_bytes(), ka);
            }
            (b"POST", b"/sync") => {
                let (code, text) = match &self.sync_key {
                    None => (403, "sync not enabled".to_string()),
                    Some(key) => match self.tracker.apply_sync(now, req.body, key.as_bytes()) {
                        Ok(n) => (200, format!("applied {n}")),
                        Err(e) => (403, e.to_string()),
                    },
                };
                respond(out, code, "text/plain", text.as_bytes(), ka);
            }
            (b"GET" | b"POST", _) => respond(out, 404, "text/plain", b"Not Found", ka),
            _ => respond(out, 405, "text/plain", b"Method Not Allowed", ka),
        }
        ka
    }

    fn register(&mut self, query: &[u8]) -> (u16, &'static str) {
        let mut hash = None;
        let mut key = None;
        for (k, v) in query_pairs(query) {
            match k {
                b"info_hash" => hash = decode_id20(v).map(InfoHash),
                b"key" => key = Some(pct_decode_lossy(v)),
                _ => {}
            }
        }
        let Some(admin) = &self.admin_key else {
            return (403, "registration disabled");
        };
        if !key.is_some_and(|k| ct_eq(k.as_bytes(), admin.as_bytes())) {
            return (403, "bad key");
        }
        let Some(h) = hash else {
            return (400, "bad info_hash");
        };
        if self.tracker.register(h) {
            self.maybe_save(false);
            (200, "registered")
        } else {
            (200, "already registered")
        }
    }

    fn torrents(&self) -> impl Iterator<Item = (InfoHash, ScrapeStats)> + '_ {
        self.tracker.all_stats().take(MAX_STATS_TORRENTS)
    }

    fn stats_json(&self) -> String {
        let torrents: Vec<serde_json::Value> = self
            .torrents()
            .map(|(h, s)| {
                serde_json::json!({
                    "info_hash": String::from_utf8_lossy(&h.to_hex()),
                    "complete": s.complete,
                    "incomplete": s.incomplete,
                    "downloaded": s.downloaded,
                })
            })
            .collect();
        let c = self.tracker.counters();
        serde_json::json!({
            "swarms": self.tracker.swarm_count(),
            "peers": self.tracker.peer_count(),
            "announces": c.announces,
            "scrapes": c.scrapes,
            "failures": c.failures,
            "torrents": torrents,
        })
        .to_string()
    }

    fn html(&self) -> String {
        let mut s = String::from(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>btcore tracker</title></head><body>\n<h1>btcore tracker</h1>\n",
        );
        let _ = writeln!(
            s,
            "<p>{} torrents, {} peers. Announce at <code>/announce</code>, scrape at <code>/scrape</code>, figures in <a href=\"/stats.json\">/stats.json</a>.</p>",
            self.tracker.swarm_count(),
            self.tracker.peer_count()
        );
        s.push_str("<table><tr><th>info-hash</th><th>seeds</th><th>leechers</th><th>downloaded</th></tr>\n");
        for (h, st) in self.torrents() {
            let _ = writeln!(
                s,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                String::from_utf8_lossy(&h.to_hex()),
                st.complete,
                st.incomplete,
                st.downloaded
            );
        }
        s.push_str("</table></body></html>\n");
        s
    }
}

fn pct_decode_lossy(v: &[u8]) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 2 < v.len() {
            if let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&v[i + 1..i + 3]), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

fn respond(out: &mut Vec<u8>, code: u16, ctype: &str, body: &[u8], keep_alive: bool) {
    let _ = write!(
        out,
        "HTTP/1.1 {code} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        status_text(code),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    out.extend_from_slice(body);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(name)
            .then(|| line[colon + 1..].trim_ascii())
    })
}

/// Whether `buf` starts with a whole request, and how long it is.
fn parse_request(buf: &[u8]) -> Parsed {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_REQUEST {
            Parsed::Bad(431)
        } else {
            Parsed::Partial
        };
    };
    let head = &buf[..end];
    if end > MAX_REQUEST {
        return Parsed::Bad(431);
    }
    let len = match header(head, b"content-length") {
        None => 0,
        Some(v) => match std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        {
            Some(n) => n,
            None => return Parsed::Bad(400),
        },
    };
    let limit = if head.starts_with(b"POST /sync ") {
        MAX_SYNC_BODY
    } else {
        MAX_REQUEST - end
    };
    if len > limit {
        return Parsed::Bad(413);
    }
    if buf.len() < end + 4 + len {
        return Parsed::Partial;
    }
    Parsed::Done(end + 4 + len)
}

fn split_request(raw: &[u8]) -> Option<Request<'_>> {
    let end = find(raw, b"\r\n\r\n")?;
    let head = &raw[..end];
    let line = head.split(|&b| b == b'\n').next()?.trim_ascii_end();
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &target[target.len()..]),
    };
    let conn = header(head, b"connection").map(<[u8]>::to_ascii_lowercase);
    let keep_alive = match conn.as_deref() {
        Some(b"close") => false,
        Some(b"keep-alive") => true,
        _ => version == b"HTTP/1.1",
    };
    Some(Request {
        method,
        path,
        query,
        body: &raw[end + 4..],
        keep_alive,
    })
}

/// Writes `data` to `path` through `path.tmp`, fsync and rename.
fn save_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
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

    fn post(&self, body: &[u8]) -> Result<(), String> {
        let (code, text) = http_request(
            &self.authority,
            "POST",
            &self.path,
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
                    if let Err(e) = p.post(msg) {
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
                if p.post(&probe).is_ok() {
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
/// `host:port`); returns the status code and the body (at most 1 MiB).
fn http_request(
    authority: &str,
    method: &str,
    path_and_query: &str,
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
        "{method} {path_and_query} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req)?;
    let mut resp = Vec::new();
    s.take(1 << 20).read_to_end(&mut resp)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP response");
    let end = find(&resp, b"\r\n\r\n").ok_or_else(bad)?;
    let code = resp
        .split(|&b| b == b' ')
        .nth(1)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((code, resp[end + 4..].to_vec()))
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
        let (code, body) = http_request(authority, "GET", &path, &[], opts.timeout)
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
    fn request_framing() {
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\n"),
            Parsed::Partial
        ));
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET"),
            Parsed::Done(27)
        ));
        assert!(matches!(
            parse_request(b"POST /sync HTTP/1.1\r\ncontent-length: 3\r\n\r\nab"),
            Parsed::Partial
        ));
        assert!(matches!(
            parse_request(b"POST /x HTTP/1.1\r\nContent-Length: 99999\r\n\r\n"),
            Parsed::Bad(413)
        ));
        assert!(matches!(
            parse_request(&vec![b'a'; MAX_REQUEST + 1]),
            Parsed::Bad(431)
        ));
        let r = split_request(b"GET /announce?a=b HTTP/1.0\r\n\r\n").expect("req");
        assert_eq!(
            (r.path, r.query, r.keep_alive),
            (&b"/announce"[..], &b"a=b"[..], false)
        );
        let p = PeerTracker::new("http://127.0.0.1:7000");
        assert_eq!(
            (p.authority.as_str(), p.path.as_str()),
            ("127.0.0.1:7000", "/sync")
        );
    }
}
