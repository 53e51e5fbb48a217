//! The RPC's HTTP side, on a thread of its own: connections, framing, and every check
//! made before a request reaches the engine (host whitelist, failed-login limit,
//! basic auth, the `X-Transmission-Session-Id` handshake). A request that passes is
//! handed to the engine's loop as its body ([`Job`]); the answer comes back through
//! a channel and this thread's waker, so a slow client never holds the engine.
//!
//! Caps ([`HttpLimits`]): at most `max_connections` connections and
//! `max_connections_per_ip` from one address (a newcomer evicts the least recently
//! active connection of its address, or of all); a head of at most 16 KiB (431 past
//! it); a body of at most `max_body` bytes, judged from `Content-Length` before a
//! byte of it is read (413); a head within 10 s of its first byte, a body within 60 s
//! of its head, an idle keep-alive connection closed after 60 s; one request in
//! flight per connection (pipelined bytes wait in the buffer, whose size is capped);
//! failed logins limited per address (429 once past the limit for a minute).
//!
//! Every other path is the web page's ([`Web`]): a GET or HEAD passes the same host,
//! login and credentials checks as the RPC (not the session id, which the page then
//! asks for through the RPC like any client) and is answered on this thread.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::web::Web;

/// Longest request head.
const MAX_HEAD: usize = 16 * 1024;
/// Most headers in a head.
const MAX_HEADERS: usize = 32;
/// Time from a request's first byte to the end of its head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time from a head to the end of its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// A keep-alive connection with nothing in progress is closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Failed logins from one address within [`LOGIN_WINDOW`] past which it gets 429.
const MAX_FAILED_LOGINS: u32 = 10;
/// The window of [`MAX_FAILED_LOGINS`].
const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failed logins are remembered (the oldest entry goes first).
const MAX_LOGIN_RECORDS: usize = 1024;
/// The RPC path.
pub const RPC_PATH: &str = "/transmission/rpc";
/// An answer must be read by its client within this time.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// After an answer that closes the connection, at most this much of what the client
/// still sends is read and dropped, for at most [`DRAIN_TIME`].
const DRAIN_BYTES: usize = 256 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// Requests of one connection answered (or handed over) per turn of the loop.
const REQUESTS_PER_TURN: usize = 8;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// The caps of the RPC's HTTP side.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Most open connections. Default 32.
    pub max_connections: usize,
    /// Most open connections from one address. Default 8.
    pub max_connections_per_ip: usize,
    /// Largest request body (a `torrent-add` with a base64 `.torrent`). Default 16 MiB;
    /// 4 MiB in the low-memory profile.
    pub max_body: usize,
    /// Request bodies being read over all connections. Default 32 MiB; 8 MiB in the
    /// low-memory profile. Past it a request is answered 503.
    pub max_body_total: usize,
    /// Answers queued over all connections past which a file of `--web-root` is
    /// answered 503 instead of read. Default 16 MiB; 4 MiB in the low-memory profile.
    pub max_page_queued: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 32,
            max_connections_per_ip: 8,
            max_body: 16 << 20,
            max_body_total: 32 << 20,
            max_page_queued: 16 << 20,
        }
    }
}

/// Who may use the RPC.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// `user:password` for HTTP basic auth (None: no auth).
    pub credentials: Option<String>,
    /// Host names accepted in `Host:` besides IP addresses and `localhost`; None:
    /// any (the whitelist is off).
    pub host_whitelist: Option<Vec<String>>,
}

/// A request for the engine: the JSON body, and where its answer goes.
pub struct Job {
    /// The request body (JSON).
    pub body: Vec<u8>,
    /// The connection, to route the answer.
    pub conn: usize,
    /// Which generation of the connection slot (a closed and reused slot drops it).
    pub generation: u64,
}

/// An answer from the engine.
pub struct Answer {
    pub conn: usize,
    pub generation: u64,
    pub body: Vec<u8>,
}

/// The HTTP thread's handle for the engine: send answers, wake the thread.
pub struct Replies {
    pub tx: Sender<Answer>,
    pub waker: Arc<Waker>,
}

impl Replies {
    /// Sends an answer and wakes the HTTP thread.
    pub fn send(&self, a: Answer) {
        if self.tx.send(a).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    generation: u64,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// When the answer being written was queued (it must be read within
    /// [`WRITE_TIMEOUT`]).
    out_since: Option<Instant>,
    /// When the request in progress began (its first byte).
    started: Option<Instant>,
    /// Head parsed, waiting for `body_len` bytes of body after `head_len`.
    body: Option<(usize, usize, Instant)>,
    /// A request is with the engine.
    waiting: bool,
    /// A request of this connection passed the credentials check.
    authed: bool,
    last_active: Instant,
    close_after_write: bool,
    /// Answer sent, writing shut: the rest of what the client sends is read and
    /// dropped (so the kernel does not reset the connection before the client reads
    /// the answer), up to [`DRAIN_BYTES`] or [`DRAIN_TIME`].
    draining: Option<(Instant, usize)>,
}

/// The RPC's HTTP server.
pub struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: HashMap<usize, Conn>,
    next_token: usize,
    next_generation: u64,
    limits: HttpLimits,
    access: Access,
    session_id: String,
    jobs: Sender<Job>,
    engine_waker: Arc<Waker>,
    answers: Receiver<Answer>,
    failed_logins: HashMap<IpAddr, (u32, Instant)>,
    failed_order: VecDeque<IpAddr>,
    /// Connections with work left after their turn (served next turn).
    again: Vec<usize>,
    /// Body bytes being read over all connections (the declared lengths).
    body_bytes: usize,
    /// The page served beside the RPC.
    web: Web,
}

/// What a head decided.
enum Verdict {
    /// Answer at once with this response (and close if the flag says so).
    Respond(Vec<u8>, bool),
    /// A request for the engine with a body of this length.
    Body(usize),
}

impl Server {
    /// Binds `addr`; jobs go to `jobs` with `engine_waker` woken. Returns the server
    /// and the handle the engine answers through.
    pub fn bind(
        addr: SocketAddr,
        limits: HttpLimits,
        access: Access,
        session_id: String,
        jobs: Sender<Job>,
        engine_waker: Arc<Waker>,
    ) -> io::Result<(Self, Replies)> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(addr)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, answers) = std::sync::mpsc::channel();
        Ok((
            Self {
                poll,
                listener,
                conns: HashMap::new(),
                next_token: FIRST_CONN,
                next_generation: 1,
                limits,
                access,
                session_id,
                jobs,
                engine_waker,
                answers,
                failed_logins: HashMap::new(),
                failed_order: VecDeque::new(),
                again: Vec::new(),
                body_bytes: 0,
                web: Web::default_source(),
            },
            Replies { tx, waker },
        ))
    }

    /// Serves `web` beside the RPC (default: the built-in page, when the binary has
    /// one).
    pub fn with_web(mut self, web: Web) -> Self {
        self.web = web;
        self
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` is set (checked at least once a second).
    pub fn run(mut self, stop: Arc<std::sync::atomic::AtomicBool>) {
        match &self.web {
            Web::Off => {}
            Web::Builtin => log::info!(
                "web page at / ({} bytes, gzip)",
                super::web::compressed_size()
            ),
            Web::Dir(d) => log::info!("web page at / from {}", d.display()),
        }
        let mut events = Events::with_capacity(256);
        while !stop.load(std::sync::atomic::Ordering::Acquire) {
            let timeout = if self.again.is_empty() {
                self.next_deadline().map_or(Duration::from_secs(1), |d| {
                    d.saturating_duration_since(Instant::now())
                        .min(Duration::from_secs(1))
                })
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("rpc: poll: {e}");
                return;
            }
            let mut turn = std::mem::take(&mut self.again);
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) => turn.push(t),
                }
            }
            while let Ok(a) = self.answers.try_recv() {
                if self.answered(a) {
                    // `answered` queued the connection's turn.
                }
            }
            turn.append(&mut self.again);
            turn.sort_unstable();
            turn.dedup();
            for t in turn {
                self.service(t);
            }
            self.expire();
        }
        // Stopping: the answers the engine made before it stopped (`session-close`'s
        // own) still go out, for a second at most.
        while let Ok(a) = self.answers.try_recv() {
            self.answered(a);
        }
        let end = Instant::now() + Duration::from_secs(1);
        let mut left = std::mem::take(&mut self.again);
        while !left.is_empty() && Instant::now() < end {
            left.retain(|&t| {
                !self.flush(t) && self.conns.get(&t).is_some_and(|c| c.out_pos < c.out.len())
            });
            if !left.is_empty() {
                let _ = self.poll.poll(&mut events, Some(Duration::from_millis(50)));
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().map(Self::deadline).min()
    }

    fn deadline(c: &Conn) -> Instant {
        if let Some((since, _)) = c.draining {
            return since + DRAIN_TIME;
        }
        if let Some(since) = c.out_since {
            return since + WRITE_TIMEOUT;
        }
        match (c.body, c.started) {
            (Some((_, _, at)), _) => at + BODY_TIMEOUT,
            (None, Some(at)) => at + HEAD_TIMEOUT,
            (None, None) => c.last_active + IDLE_TIMEOUT,
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.waiting && Self::deadline(c) <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            self.close(t);
        }
    }

    fn accept(&mut self) {
        // A bounded number per wake-up; the rest wait in the backlog.
        for _ in 0..64 {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("rpc: accept: {e}");
                    return;
                }
            };
            if !self.make_room(peer.ip()) {
                // Every connection has a request with the engine: the newcomer waits
                // for none of them.
                continue;
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
            let generation = self.next_generation;
            self.next_generation += 1;
            self.conns.insert(
                token,
                Conn {
                    stream,
                    peer,
                    generation,
                    inbuf: Vec::new(),
                    out: Vec::new(),
                    out_pos: 0,
                    out_since: None,
                    started: None,
                    body: None,
                    waiting: false,
                    authed: false,
                    last_active: Instant::now(),
                    close_after_write: false,
                    draining: None,
                },
            );
        }
    }

    /// Makes room for a newcomer from `ip`: when its address group (an IPv4 address,
    /// an IPv6 /64) is at its cap, one of that group's connections goes; when the
    /// server is full, one of the group holding the most. The one that goes is the
    /// least useful: never one whose request is with the engine, one that never
    /// passed the credentials check before one that did, then the least recently
    /// active. False when nothing can go (the newcomer is then refused).
    fn make_room(&mut self, ip: IpAddr) -> bool {
        let g = group(ip);
        let of_group = self
            .conns
            .values()
            .filter(|c| group(c.peer.ip()) == g)
            .count();
        let victim_group = if of_group >= self.limits.max_connections_per_ip {
            Some(g)
        } else if self.conns.len() >= self.limits.max_connections {
            let mut counts: HashMap<IpAddr, usize> = HashMap::new();
            for c in self.conns.values() {
                *counts.entry(group(c.peer.ip())).or_default() += 1;
            }
            counts.into_iter().max_by_key(|(_, n)| *n).map(|(g, _)| g)
        } else {
            return true;
        };
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| Some(group(c.peer.ip())) == victim_group && !c.waiting)
            .min_by_key(|(_, c)| (c.authed, c.last_active))
            .map(|(t, _)| *t);
        match victim {
            Some(t) => {
                self.close(t);
                true
            }
            None => false,
        }
    }

    fn close(&mut self, t: usize) {
        if let Some(mut c) = self.conns.remove(&t) {
            if let Some((_, len, _)) = c.body {
                self.body_bytes = self.body_bytes.saturating_sub(len);
            }
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    /// A connection's turn: write what is queued, then answer or hand over the
    /// requests it has read, reading more as needed, for at most
    /// [`REQUESTS_PER_TURN`] requests; a connection with work left is served again
    /// next turn. Iterative: nothing here calls back into itself.
    fn service(&mut self, t: usize) {
        for _ in 0..REQUESTS_PER_TURN {
            if !self.flush(t) {
                return;
            }
            if self.conns.get(&t).is_some_and(|c| c.draining.is_some()) {
                self.drain(t);
                return;
            }
            match self.step(t) {
                Step::Progress => continue,
                Step::Stop => return,
                Step::NeedInput => {
                    if !self.fill(t) {
                        return;
                    }
                }
            }
        }
        self.again.push(t);
    }

    /// Reads once into the connection's buffer, no more than the request being read
    /// can use (pipelined bytes past it wait in the kernel). False when nothing came
    /// (would block, closed, or no room).
    fn fill(&mut self, t: usize) -> bool {
        let max_body = self.limits.max_body;
        let Some(c) = self.conns.get_mut(&t) else {
            return false;
        };
        let cap = match c.body {
            Some((head, len, _)) => head + len,
            None => MAX_HEAD + 1,
        }
        .min(MAX_HEAD + max_body);
        if c.inbuf.len() >= cap || c.waiting {
            return false;
        }
        let want = (cap - c.inbuf.len()).min(64 * 1024);
        let start = c.inbuf.len();
        c.inbuf.resize(start + want, 0);
        let r = loop {
            match c.stream.read(&mut c.inbuf[start..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        match r {
            Ok(0) => {
                c.inbuf.truncate(start);
                self.close(t);
                false
            }
            Ok(n) => {
                c.inbuf.truncate(start + n);
                if c.started.is_none() {
                    c.started = Some(Instant::now());
                }
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.inbuf.truncate(start);
                false
            }
            Err(_) => {
                c.inbuf.truncate(start);
                self.close(t);
                false
            }
        }
    }

    /// Reads and drops what a client sends after an answer that closes its
    /// connection; closes it at the end of the input, or past the budget.
    fn drain(&mut self, t: usize) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let mut buf = [0u8; 4096];
        loop {
            let Some((_, left)) = c.draining.as_mut() else {
                return;
            };
            match c.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) if n >= *left => break,
                Ok(n) => *left -= n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        self.close(t);
    }

    /// One request from what the connection has read: handed to the engine, or
    /// answered here.
    fn step(&mut self, t: usize) -> Step {
        let Some(c) = self.conns.get_mut(&t) else {
            return Step::Stop;
        };
        if c.waiting || (c.close_after_write && c.body.is_none()) {
            return Step::Stop;
        }
        if let Some((head, len, _)) = c.body {
            if c.inbuf.len() < head + len {
                return Step::NeedInput;
            }
            let body = c.inbuf[head..head + len].to_vec();
            c.inbuf.drain(..head + len);
            c.body = None;
            c.started = (!c.inbuf.is_empty()).then(Instant::now);
            c.waiting = true;
            c.last_active = Instant::now();
            self.body_bytes = self.body_bytes.saturating_sub(len);
            let job = Job {
                body,
                conn: t,
                generation: c.generation,
            };
            if self.jobs.send(job).is_err() {
                self.close(t);
                return Step::Stop;
            }
            let _ = self.engine_waker.wake();
            return Step::Stop;
        }
        if c.inbuf.is_empty() {
            return Step::NeedInput;
        }
        let peer = c.peer.ip();
        let buf = std::mem::take(&mut c.inbuf);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let (head, verdict) = match req.parse(&buf) {
            Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => {
                if let Some(c) = self.conns.get_mut(&t) {
                    c.inbuf = buf;
                }
                return Step::NeedInput;
            }
            Ok(httparse::Status::Partial) => (
                0,
                Verdict::Respond(
                    simple(431, "Request Header Fields Too Large", "", &[]),
                    true,
                ),
            ),
            Ok(httparse::Status::Complete(head)) => (head, self.judge(&req, peer, t)),
            Err(_) => (
                0,
                Verdict::Respond(simple(400, "Bad Request", "", &[]), true),
            ),
        };
        let keep_alive = req.version == Some(1)
            && !req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
            });
        let expect_continue = req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("expect") && h.value.eq_ignore_ascii_case(b"100-continue")
        });
        let Some(c) = self.conns.get_mut(&t) else {
            return Step::Stop;
        };
        c.inbuf = buf;
        match verdict {
            Verdict::Body(len) => {
                c.body = Some((head, len, Instant::now()));
                c.close_after_write = !keep_alive;
                if expect_continue {
                    c.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    c.out_since.get_or_insert_with(Instant::now);
                }
                self.body_bytes += len;
                Step::Progress
            }
            Verdict::Respond(resp, close) => {
                // The body of a refused request is not read: the connection closes
                // when it had one (after the answer, dropping what follows).
                c.inbuf.drain(..head.min(c.inbuf.len()));
                c.started = None;
                c.close_after_write = close || !keep_alive;
                c.out.extend_from_slice(&resp);
                c.out_since.get_or_insert_with(Instant::now);
                Step::Progress
            }
        }
    }

    /// Checks a request head, in the order Transmission does: path, host whitelist,
    /// failed-login limit, credentials, session id, then the body's size.
    fn judge(&mut self, req: &httparse::Request<'_, '_>, peer: IpAddr, t: usize) -> Verdict {
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        let content_length = match header("content-length") {
            None => None,
            Some(v) => match std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                Some(n) => Some(n),
                None => {
                    return Verdict::Respond(
                        simple(400, "Bad Request", "bad Content-Length\n", &[]),
                        true,
                    )
                }
            },
        };
        let has_body =
            content_length.is_some_and(|n| n > 0) || header("transfer-encoding").is_some();
        let close = has_body;
        let path = req.path.unwrap_or("");
        let path = path.split('?').next().unwrap_or("");
        let is_rpc = path == RPC_PATH || path == "/transmission/rpc/";
        if !is_rpc && !self.web.serves(path) {
            return Verdict::Respond(simple(404, "Not Found", "not found\n", &[]), close);
        }
        let head_only = req.method == Some("HEAD");
        if !is_rpc && req.method != Some("GET") && !head_only {
            return Verdict::Respond(
                simple(405, "Method Not Allowed", "", &[("Allow", "GET, HEAD")]),
                close,
            );
        }
        if let Some(list) = &self.access.host_whitelist {
            let host = header("host")
                .and_then(|h| std::str::from_utf8(h).ok())
                .unwrap_or("");
            if !host_allowed(host, list) {
                let msg = format!(
                    "<p>Transmission received your request, but the hostname was unrecognized.</p>\
                     <p>To fix this, add \"{}\" to the daemon's --rpc-host-whitelist, or connect by IP address.</p>\n",
                    html_escape(strip_port(host))
                );
                return Verdict::Respond(simple(421, "Misdirected Request", &msg, &[]), close);
            }
        }
        if let Some(cred) = self.access.credentials.clone() {
            let peer = group(peer);
            if self.login_blocked(peer) {
                return Verdict::Respond(
                    simple(
                        429,
                        "Too Many Requests",
                        "too many failed logins; try again later\n",
                        &[],
                    ),
                    true,
                );
            }
            let header_given = header("authorization");
            let given = header_given.and_then(basic_credentials);
            let ok = given.is_some_and(|g| ct_eq(g.as_bytes(), cred.as_bytes()));
            if !ok {
                // A request with no credentials at all (a browser's first) is not a
                // failed login.
                if header_given.is_some() {
                    self.login_failed(peer);
                }
                return Verdict::Respond(
                    simple(
                        401,
                        "Unauthorized",
                        "unauthorized\n",
                        &[("WWW-Authenticate", "Basic realm=\"btcore\"")],
                    ),
                    close,
                );
            }
        }
        if let Some(c) = self.conns.get_mut(&t) {
            c.authed = true;
        }
        if !is_rpc {
            let queued: usize = self
                .conns
                .values()
                .map(|c| c.out.len().saturating_sub(c.out_pos))
                .sum();
            let r = self.web.respond(
                head_only,
                path,
                header("accept-encoding"),
                header("if-none-match"),
                self.limits.max_page_queued.saturating_sub(queued),
            );
            return Verdict::Respond(r, close);
        }
        let sid = header("x-transmission-session-id");
        if sid != Some(self.session_id.as_bytes()) {
            let msg = format!(
                "<h1>409: Conflict</h1><p>Your request had an invalid session-id header.</p>\
                 <p><code>X-Transmission-Session-Id: {}</code></p>\n",
                self.session_id
            );
            let sid = self.session_id.clone();
            return Verdict::Respond(
                simple(
                    409,
                    "Conflict",
                    &msg,
                    &[("X-Transmission-Session-Id", &sid)],
                ),
                close,
            );
        }
        if req.method != Some("POST") {
            return Verdict::Respond(
                simple(
                    405,
                    "Method Not Allowed",
                    "POST a JSON request\n",
                    &[("Allow", "POST")],
                ),
                close,
            );
        }
        if header("transfer-encoding").is_some() {
            return Verdict::Respond(simple(411, "Length Required", "", &[]), true);
        }
        match content_length {
            None => Verdict::Respond(simple(411, "Length Required", "", &[]), true),
            Some(n) if n > self.limits.max_body => Verdict::Respond(
                simple(413, "Payload Too Large", "the request is too large\n", &[]),
                true,
            ),
            Some(n) if self.body_bytes + n > self.limits.max_body_total => Verdict::Respond(
                simple(
                    503,
                    "Service Unavailable",
                    "too many requests in progress; try again\n",
                    &[("Retry-After", "1")],
                ),
                true,
            ),
            Some(n) => Verdict::Body(n),
        }
    }

    fn login_blocked(&mut self, ip: IpAddr) -> bool {
        match self.failed_logins.get(&ip) {
            Some((n, since)) if since.elapsed() < LOGIN_WINDOW => *n >= MAX_FAILED_LOGINS,
            Some(_) => {
                self.failed_logins.remove(&ip);
                false
            }
            None => false,
        }
    }

    fn login_failed(&mut self, ip: IpAddr) {
        let now = Instant::now();
        let e = self.failed_logins.entry(ip).or_insert_with(|| (0, now));
        if now.duration_since(e.1) >= LOGIN_WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
        if e.0 == 1 {
            self.failed_order.push_back(ip);
        }
        while self.failed_logins.len() > MAX_LOGIN_RECORDS {
            match self.failed_order.pop_front() {
                Some(old) => {
                    self.failed_logins.remove(&old);
                }
                None => break,
            }
        }
        if self.failed_order.len() > 2 * MAX_LOGIN_RECORDS {
            let live = &self.failed_logins;
            self.failed_order.retain(|ip| live.contains_key(ip));
        }
    }

    /// The engine's answer to a connection's request: queued, and the connection
    /// served next.
    fn answered(&mut self, a: Answer) -> bool {
        let Some(c) = self.conns.get_mut(&a.conn) else {
            return false;
        };
        if c.generation != a.generation {
            return false;
        }
        c.waiting = false;
        c.last_active = Instant::now();
        let head = format!(
            "HTTP/1.1 200 OK\r\nServer: btcore\r\nContent-Type: application/json; charset=UTF-8\r\n\
             Content-Length: {}\r\n\r\n",
            a.body.len()
        );
        c.out.extend_from_slice(head.as_bytes());
        c.out.extend_from_slice(&a.body);
        c.out_since.get_or_insert_with(Instant::now);
        self.again.push(a.conn);
        true
    }

    /// Writes what is queued. True when nothing is left to write and the
    /// connection is open; false when it must wait (for the socket, or it closed).
    fn flush(&mut self, t: usize) -> bool {
        let Some(c) = self.conns.get_mut(&t) else {
            return false;
        };
        while c.out_pos < c.out.len() {
            match c.stream.write(&c.out[c.out_pos..]) {
                Ok(0) => {
                    self.close(t);
                    return false;
                }
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(t);
                    return false;
                }
            }
        }
        if !c.out.is_empty() {
            c.out.clear();
            c.out_pos = 0;
            c.out_since = None;
            c.last_active = Instant::now();
            if c.out.capacity() > 64 * 1024 {
                c.out = Vec::new();
            }
        }
        if c.close_after_write && c.draining.is_none() && !c.waiting && c.body.is_none() {
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
            c.draining = Some((Instant::now(), DRAIN_BYTES));
        }
        true
    }
}

/// Who counts as one party: an IPv4 address, an IPv6 /64.
fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// What a connection's turn did.
enum Step {
    /// A request was answered or a head accepted: go on.
    Progress,
    /// More input is needed.
    NeedInput,
    /// Nothing more this turn (with the engine, closing, or closed).
    Stop,
}

/// The `user:password` of a `Basic` authorization header.
fn basic_credentials(v: &[u8]) -> Option<String> {
    let v = std::str::from_utf8(v).ok()?.trim();
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    String::from_utf8(raw).ok()
}

/// Compares in time independent of where the inputs differ.
fn ct_eq(given: &[u8], secret: &[u8]) -> bool {
    // As long as what was given, whatever the secret's length.
    let mut diff = u8::from(given.len() != secret.len());
    for (i, x) in given.iter().enumerate() {
        diff |= x ^ secret.get(i % secret.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Whether a `Host:` value may reach the RPC: an IP address, `localhost`, or a name
/// of the whitelist (entries may start with `*.` for any subdomain).
fn host_allowed(host: &str, list: &[String]) -> bool {
    let h = strip_port(host).to_ascii_lowercase();
    if h.parse::<IpAddr>().is_ok() || h == "localhost" || h == "localhost." {
        return true;
    }
    list.iter().any(|w| {
        let w = w.trim().to_ascii_lowercase();
        match w.strip_prefix("*.") {
            Some(suffix) => h.ends_with(&format!(".{suffix}")),
            None => w == h || w == "*",
        }
    })
}

fn html_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// A whole response with a short text body.
fn simple(code: u16, reason: &str, body: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {code} {reason}\r\nServer: btcore\r\n");
    for (k, v) in headers {
        r += &format!("{k}: {v}\r\n");
    }
    r += &format!(
        "Content-Type: text/html; charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    r.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let list = vec!["nas.lan".to_string(), "*.example.org".to_string()];
        assert!(host_allowed("127.0.0.1:9091", &list));
        assert!(host_allowed("[::1]:9091", &list));
        assert!(host_allowed("localhost:9091", &list));
        assert!(host_allowed("NAS.lan:9091", &list));
        assert!(host_allowed("a.example.org", &list));
        assert!(!host_allowed("example.org", &list));
        assert!(!host_allowed("evil.com:9091", &list));
        assert!(!host_allowed("", &list));
    }

    #[test]
    fn credentials() {
        assert_eq!(
            basic_credentials(b"Basic dXNlcjpwYXNz").as_deref(),
            Some("user:pass")
        );
        assert_eq!(basic_credentials(b"Bearer dXNlcjpwYXNz"), None);
        assert_eq!(basic_credentials(b"Basic !!!"), None);
    }
}
