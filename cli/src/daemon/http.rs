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

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

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
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 32,
            max_connections_per_ip: 8,
            max_body: 16 << 20,
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
    /// When the request in progress began (its first byte).
    started: Option<Instant>,
    /// Head parsed, waiting for `body_len` bytes of body after `head_len`.
    body: Option<(usize, usize, Instant)>,
    /// A request is with the engine.
    waiting: bool,
    last_active: Instant,
    close_after_write: bool,
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
            },
            Replies { tx, waker },
        ))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` is set (checked at least once a second).
    pub fn run(mut self, stop: Arc<std::sync::atomic::AtomicBool>) {
        let mut events = Events::with_capacity(256);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let timeout = self.next_deadline().map_or(Duration::from_secs(1), |d| {
                d.saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1))
            });
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("rpc: poll: {e}");
                return;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.read(t);
                        }
                        if ev.is_writable() {
                            self.flush(t);
                        }
                    }
                }
            }
            while let Ok(a) = self.answers.try_recv() {
                self.answered(a);
            }
            self.expire();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().map(Self::deadline).min()
    }

    fn deadline(c: &Conn) -> Instant {
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
            self.make_room(peer.ip());
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
                    started: None,
                    body: None,
                    waiting: false,
                    last_active: Instant::now(),
                    close_after_write: false,
                },
            );
        }
    }

    /// Closes the least recently active connection of `ip` when it is at its cap, or
    /// of all when the server is.
    fn make_room(&mut self, ip: IpAddr) {
        let of_ip = self.conns.values().filter(|c| c.peer.ip() == ip).count();
        let victim = if of_ip >= self.limits.max_connections_per_ip {
            self.conns
                .iter()
                .filter(|(_, c)| c.peer.ip() == ip)
                .min_by_key(|(_, c)| c.last_active)
                .map(|(t, _)| *t)
        } else if self.conns.len() >= self.limits.max_connections {
            self.conns
                .iter()
                .min_by_key(|(_, c)| c.last_active)
                .map(|(t, _)| *t)
        } else {
            None
        };
        if let Some(t) = victim {
            self.close(t);
        }
    }

    fn close(&mut self, t: usize) {
        if let Some(mut c) = self.conns.remove(&t) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    fn read(&mut self, t: usize) {
        let max_body = self.limits.max_body;
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let mut buf = [0u8; 16 * 1024];
        loop {
            // Never more than the request being read can use: a head, or the head and
            // its body; pipelined bytes past it wait in the kernel.
            let cap = match c.body {
                Some((head, len, _)) => head + len,
                None => MAX_HEAD + 1,
            }
            .min(MAX_HEAD + max_body);
            if c.inbuf.len() >= cap || c.waiting {
                break;
            }
            let want = (cap - c.inbuf.len()).min(buf.len());
            match c.stream.read(&mut buf[..want]) {
                Ok(0) => {
                    self.close(t);
                    return;
                }
                Ok(n) => {
                    if c.started.is_none() {
                        c.started = Some(Instant::now());
                    }
                    c.inbuf.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(t);
                    return;
                }
            }
        }
        self.process(t);
    }

    /// Frames what a connection has read: a whole request goes to the engine (or is
    /// answered here), one at a time.
    fn process(&mut self, t: usize) {
        loop {
            let Some(c) = self.conns.get_mut(&t) else {
                return;
            };
            if c.waiting || c.close_after_write || c.out_pos < c.out.len() {
                return;
            }
            if let Some((head, len, _)) = c.body {
                if c.inbuf.len() < head + len {
                    return;
                }
                let body = c.inbuf[head..head + len].to_vec();
                c.inbuf.drain(..head + len);
                c.body = None;
                c.started = (!c.inbuf.is_empty()).then(Instant::now);
                c.waiting = true;
                let job = Job {
                    body,
                    conn: t,
                    generation: c.generation,
                };
                if self.jobs.send(job).is_err() {
                    self.close(t);
                    return;
                }
                let _ = self.engine_waker.wake();
                return;
            }
            if c.inbuf.is_empty() {
                return;
            }
            let peer = c.peer.ip();
            let buf = std::mem::take(&mut c.inbuf);
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            let verdict = match req.parse(&buf) {
                Ok(httparse::Status::Partial) => {
                    if buf.len() > MAX_HEAD {
                        (
                            0,
                            Verdict::Respond(
                                simple(431, "Request Header Fields Too Large", "", &[]),
                                true,
                            ),
                        )
                    } else {
                        if let Some(c) = self.conns.get_mut(&t) {
                            c.inbuf = buf;
                        }
                        return;
                    }
                }
                Ok(httparse::Status::Complete(head)) => (head, self.judge(&req, peer)),
                Err(_) => (
                    0,
                    Verdict::Respond(simple(400, "Bad Request", "", &[]), true),
                ),
            };
            let Some(c) = self.conns.get_mut(&t) else {
                return;
            };
            c.inbuf = buf;
            match verdict {
                (head, Verdict::Body(len)) => {
                    c.body = Some((head, len, Instant::now()));
                }
                (head, Verdict::Respond(resp, close)) => {
                    // The body of a refused request is not read: the connection closes
                    // when it had one.
                    c.inbuf.drain(..head.min(c.inbuf.len()));
                    c.started = None;
                    c.close_after_write = close;
                    c.out.extend_from_slice(&resp);
                    self.flush(t);
                    return;
                }
            }
        }
    }

    /// Checks a request head, in the order Transmission does: path, host whitelist,
    /// failed-login limit, credentials, session id, then the body's size.
    fn judge(&mut self, req: &httparse::Request<'_, '_>, peer: IpAddr) -> Verdict {
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        let content_length = header("content-length")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        let has_body =
            content_length.is_some_and(|n| n > 0) || header("transfer-encoding").is_some();
        let close = has_body;
        let path = req.path.unwrap_or("");
        let path = path.split('?').next().unwrap_or("");
        if path != RPC_PATH && path != "/transmission/rpc/" {
            return Verdict::Respond(simple(404, "Not Found", "not found\n", &[]), close);
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
            let given = header("authorization").and_then(basic_credentials);
            let ok = given.is_some_and(|g| ct_eq(g.as_bytes(), cred.as_bytes()));
            if !ok {
                self.login_failed(peer);
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

    fn answered(&mut self, a: Answer) {
        let Some(c) = self.conns.get_mut(&a.conn) else {
            return;
        };
        if c.generation != a.generation {
            return;
        }
        c.waiting = false;
        let mut head = format!(
            "HTTP/1.1 200 OK\r\nServer: btcore\r\nContent-Type: application/json; charset=UTF-8\r\n\
             Content-Length: {}\r\n\r\n",
            a.body.len()
        )
        .into_bytes();
        head.extend_from_slice(&a.body);
        c.out.extend_from_slice(&head);
        self.flush(a.conn);
        self.process(a.conn);
    }

    fn flush(&mut self, t: usize) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        while c.out_pos < c.out.len() {
            match c.stream.write(&c.out[c.out_pos..]) {
                Ok(0) => break,
                Ok(n) => {
                    c.out_pos += n;
                    c.last_active = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(t);
                    return;
                }
            }
        }
        c.out.clear();
        c.out_pos = 0;
        if c.out.capacity() > 64 * 1024 {
            c.out = Vec::new();
        }
        if c.close_after_write {
            self.close(t);
            return;
        }
        c.last_active = Instant::now();
        // Bytes of a next request may already be here.
        self.process(t);
        // Read what waited in the kernel while this connection was busy.
        if self
            .conns
            .get(&t)
            .is_some_and(|c| !c.waiting && c.body.is_none())
        {
            self.read_more(t);
        }
    }

    fn read_more(&mut self, t: usize) {
        let Some(c) = self.conns.get(&t) else {
            return;
        };
        if c.inbuf.len() <= MAX_HEAD {
            self.read(t);
        }
    }
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
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
