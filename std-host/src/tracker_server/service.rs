//! The tracker's HTTP service without sockets: connections as byte buffers, requests
//! framed with `httparse` and answered by the [`Tracker`], with every per-connection,
//! per-address and process-wide resource capped. The event loop in
//! [`super`] only moves bytes between sockets and a [`Service`]; the fuzz target
//! `tracker_server` drives the same type with a simulated clock.
//!
//! # What the host calls, and in which order
//!
//! ```text
//!   accepted a connection      --> open(now, peer) -> Opened { id, evict }   (close `evict`)
//!   socket readable            --> read_capacity(id) bytes at most, then received(now, id, bytes)
//!   then                       --> process(now, id) -> true if its turn budget ran out
//!   socket writable / output   --> output(id), then wrote(now, id, n)
//!   after each of the above    --> finished(id): flush the output, then close
//!   peer closed or error       --> close(id)
//!   timer (poll_timeout)       --> handle_timeout(now, &mut expired), close each
//!   UDP datagram               --> handle_udp(now, packet, from, reply)
//! ```
//!
//! # Limits ([`HttpLimits`])
//!
//! - Framing is linear: the unparsed input starts at an offset and is compacted only
//!   when that offset passes half the buffer, and the search for the end of a head
//!   resumes where it stopped, so a pipelined burst costs its length, not its square.
//! - A turn answers at most [`HttpLimits::requests_per_turn`] requests of one
//!   connection: the host serves UDP and the other connections in between.
//! - Output: while a connection has [`HttpLimits::max_output`] bytes queued (a client
//!   that does not read its answers), it is neither parsed nor read (backpressure).
//!   While all connections together hold [`HttpLimits::max_output_total`] bytes of
//!   output buffers, no connection with an answer still unread is parsed: the others
//!   wait until clients read theirs (or the idle timeout closes those that never do).
//!   A connection with nothing queued always gets its next answer, so the output held
//!   is at most the budget plus one answer per connection, and clients that read
//!   their answers are never held back.
//! - Input: at most [`HttpLimits::max_request`] unparsed bytes, or the length of the
//!   request whose head was accepted (a `/sync` body); a head longer than that is
//!   refused with 431. All connections together hold at most
//!   [`HttpLimits::max_input_total`] bytes of input buffers besides accepted bodies
//!   (which [`HttpLimits::max_body_bytes`] bounds); past it a connection is read only
//!   up to 2 KiB of unparsed bytes (an announce fits) until requests are answered or
//!   cut by their deadline. [`Service::stalled`] tells the
//!   host which connections wait for these process-wide budgets, and
//!   [`Service::has_room`] when to try them again.
//! - `POST /sync` is judged at its head, before a byte of its body is read: refused when
//!   sync is off, without a valid [`SYNC_AUTH_HEADER`], with a `Content-Length` over
//!   [`HttpLimits::max_sync_body`], or when the bodies in flight on all connections
//!   would pass [`HttpLimits::max_body_bytes`].
//! - Time: a request must be complete within [`HttpLimits::header_timeout`] of its first
//!   byte (a body within [`HttpLimits::body_timeout`] of its head), whatever trickles
//!   in; a connection with nothing in progress is closed after
//!   [`HttpLimits::idle_timeout`] (bytes of an unfinished request do not count as
//!   activity; answers being read do).
//! - Connections: at most [`HttpLimits::max_connections_per_ip`] per address (IPv4, or
//!   IPv6 /64) and [`HttpLimits::max_connections`] in all. A newcomer is never
//!   refused while some connection can give way: it evicts the least useful
//!   connection, the least recently active one of its own address when that address
//!   is at its cap, else of the address holding the most connections (or of all,
//!   when every address holds one). In that last case only connections open for
//!   [`HttpLimits::min_age_to_evict`] can give way, so a flood of connections from
//!   many addresses cannot cut off a slow client before it has had the time to send
//!   its request; when every connection is younger, the newcomer itself is closed at
//!   once ([`Opened::evict`] is its own id).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use btcore_core::ids::InfoHash;
use btcore_core::magnet::decode_into;
use btcore_core::rng::Rng;
use btcore_core::time::{Duration, Instant};
use btcore_core::tracker::server::{check_sync_auth, decode_id20, query_pairs, Tracker};
use btcore_core::tracker::ScrapeStats;

/// The header of a `POST /sync` that proves, before its body is read, that the sender
/// knows the sync key ([`btcore_core::tracker::server::sync_auth`]).
pub const SYNC_AUTH_HEADER: &str = "X-Btcore-Sync-Auth";

/// Most headers in one request head.
const MAX_HEADERS: usize = 32;
/// An input buffer emptied with more capacity than this is freed.
const INBUF_KEEP: usize = 16 * 1024;
/// An output buffer emptied with more capacity than this is freed.
const OUT_KEEP: usize = 16 * 1024;
/// Most bytes one `received` call takes, whatever the input limit.
const READ_CHUNK: usize = 64 * 1024;
/// Unparsed bytes every connection may hold whatever the process-wide input budget
/// says: an announce fits, so clients that send one request at a time are never
/// held back by others' partial requests.
const INPUT_FLOOR: usize = 2048;

/// The caps of the HTTP service (see the module docs).
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Most open connections. Default 4,096.
    pub max_connections: usize,
    /// Most open connections from one address (IPv4, or IPv6 /64). Default 32.
    pub max_connections_per_ip: usize,
    /// Largest request (head and body) outside `/sync`; most unparsed bytes buffered
    /// otherwise. Default 8 KiB.
    pub max_request: usize,
    /// Largest `POST /sync` body. Default 8 MiB.
    pub max_sync_body: usize,
    /// Most request body bytes awaited on all connections together. Default 16 MiB.
    pub max_body_bytes: usize,
    /// Input buffers of all connections together, accepted bodies aside, past which
    /// a connection is read only up to 2 KiB of unparsed bytes. Default 8 MiB (a thousand heads of the largest size;
    /// an announce is about 300 bytes).
    pub max_input_total: usize,
    /// Output queued on one connection past which it is not read or parsed. Default
    /// 64 KiB (one answer may pass it: a stats page is built whole).
    pub max_output: usize,
    /// Output buffers of all connections together past which no connection with an
    /// unread answer is parsed (a connection with none still gets one answer).
    /// Default 16 MiB.
    pub max_output_total: usize,
    /// How long a connection is safe from eviction for another address's newcomer
    /// when every address holds one connection (an address holding more gives way
    /// whatever the age of its connections). Default 5 s.
    pub min_age_to_evict: Duration,
    /// A request must be whole this long after its first byte. Default 10 s.
    pub header_timeout: Duration,
    /// A body must be whole this long after its head. Default 30 s.
    pub body_timeout: Duration,
    /// A connection with nothing in progress is closed after this. Default 30 s.
    pub idle_timeout: Duration,
    /// Most requests of one connection answered in one turn. Default 16.
    pub requests_per_turn: usize,
    /// How long a built stats page is served again. Default 1 s.
    pub stats_cache: Duration,
    /// Most torrents listed by the admin's stats pages. Default 10,000.
    pub max_stats_torrents: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_connections_per_ip: 32,
            max_request: 8 * 1024,
            max_sync_body: 8 << 20,
            max_body_bytes: 16 << 20,
            max_input_total: 8 << 20,
            max_output: 64 * 1024,
            max_output_total: 16 << 20,
            min_age_to_evict: Duration::from_secs(5),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            requests_per_turn: 16,
            stats_cache: Duration::from_secs(1),
            max_stats_torrents: 10_000,
        }
    }
}

/// A connection's handle, given by [`Service::open`].
pub type ConnId = usize;

/// What [`Service::open`] decided.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Opened {
    /// The new connection.
    pub id: ConnId,
    /// A connection evicted to make room: the host closes its socket (the service has
    /// forgotten it already). `Some(id)`: the newcomer itself was refused (every
    /// connection that could give way is younger than [`HttpLimits::min_age_to_evict`]).
    pub evict: Option<ConnId>,
}

/// What the HTTP service did so far.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct HttpCounters {
    /// Connections opened.
    pub connections: u64,
    /// Requests answered (refusals at the head included).
    pub requests: u64,
    /// Request bytes received.
    pub bytes_in: u64,
    /// Input bytes moved by compaction (linear framing keeps this below `bytes_in`).
    pub bytes_moved: u64,
    /// Most requests of one connection answered in one turn.
    pub max_requests_per_turn: u64,
    /// Connections evicted for a newcomer.
    pub evicted: u64,
    /// Newcomers closed at once: every connection that could give way was too young.
    pub refused_connections: u64,
    /// Connections closed by a deadline (header, body or idle).
    pub timed_out: u64,
    /// Requests refused at their head (400, 403, 413, 431, 501, 503).
    pub refused: u64,
    /// Most output queued on one connection at the end of a call.
    pub peak_output: usize,
    /// Most bytes held by all connection buffers together (capacities).
    pub peak_buffers: usize,
    /// Most bytes held by all input buffers together, accepted bodies aside.
    pub peak_input: usize,
    /// Most bytes held by all output buffers together.
    pub peak_output_total: usize,
    /// Body bytes reserved now by requests whose head was accepted.
    pub bodies_in_flight: usize,
}

/// Where a request goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route {
    Announce,
    Scrape,
    StatsJson,
    Index,
    Register,
    Sync,
    NotFound,
    BadMethod,
}

/// A request whose head was accepted, waiting for (or answering) its body.
#[derive(Clone, Debug)]
struct Pending {
    /// Head length, then head plus body, from the request's first byte.
    head_len: usize,
    total: usize,
    route: Route,
    keep_alive: bool,
    /// The query string, from the request's first byte.
    query: Range<usize>,
}

/// One connection's buffers and clocks.
#[derive(Debug)]
struct Conn {
    peer: SocketAddr,
    ip: IpKey,
    /// Received bytes; those before `start` are answered.
    inbuf: Vec<u8>,
    start: usize,
    /// Where the search for the end of the current head resumes.
    scanned: usize,
    pending: Option<Pending>,
    out: Vec<u8>,
    written: usize,
    /// The last answer said `Connection: close`: nothing more is parsed.
    closing: bool,
    /// [`Service::process`] stopped at the output cap with input left to parse.
    held: bool,
    /// First byte of the request in progress (head), or the end of its head (body).
    since: Option<Instant>,
    /// Opened, last request answered, or last output taken.
    last_active: Instant,
    /// Opened.
    opened: Instant,
    /// Bytes of the body budget held by `pending`.
    reserved: usize,
}

impl Conn {
    fn unparsed(&self) -> &[u8] {
        &self.inbuf[self.start..]
    }

    fn queued(&self) -> usize {
        self.out.len() - self.written
    }

    /// Capacities of the input buffer (while no body is awaited), of the input buffer
    /// (while a body is, which the body budget bounds) and of the output buffer.
    fn buffers(&self) -> (usize, usize, usize) {
        let i = self.inbuf.capacity();
        if self.reserved > 0 {
            (0, i, self.out.capacity())
        } else {
            (i, 0, self.out.capacity())
        }
    }
}

/// An address as the per-address caps count it: IPv4, or the /64 of IPv6.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum IpKey {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl IpKey {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut p = [0u8; 8];
                p.copy_from_slice(&v6.octets()[..8]);
                Self::V6(p)
            }
        }
    }
}

/// A built stats page and when.
#[derive(Debug, Default)]
struct Cached {
    at: Option<Instant>,
    body: Vec<u8>,
}

/// What answers requests: the tracker, its keys and the stats pages.
#[derive(Debug)]
struct App {
    tracker: Tracker,
    rng: Rng,
    admin_key: Option<String>,
    sync_key: Option<String>,
    /// `[json public, json admin, html public, html admin]`.
    cache: [Cached; 4],
}

/// The tracker's HTTP connections and request handling, without sockets (see the
/// module docs).
#[derive(Debug)]
pub struct Service {
    limits: HttpLimits,
    app: App,
    conns: HashMap<ConnId, Conn>,
    /// The connections of each address.
    by_ip: HashMap<IpKey, Vec<ConnId>>,
    next_id: ConnId,
    /// Body bytes reserved by accepted heads.
    bodies: usize,
    /// Capacity of every connection's input buffers, apart from those awaiting a
    /// body, which are `body_inputs`, and of its output buffers (the sums of
    /// [`Conn::buffers`]).
    inputs: usize,
    body_inputs: usize,
    outputs: usize,
    counters: HttpCounters,
}

impl Service {
    /// A service answering with `tracker`; `rng` draws the peers of replies.
    pub fn new(
        limits: HttpLimits,
        tracker: Tracker,
        rng: Rng,
        admin_key: Option<String>,
        sync_key: Option<String>,
    ) -> Self {
        Self {
            limits,
            app: App {
                tracker,
                rng,
                admin_key,
                sync_key,
                cache: Default::default(),
            },
            conns: HashMap::new(),
            by_ip: HashMap::new(),
            next_id: 0,
            bodies: 0,
            inputs: 0,
            body_inputs: 0,
            outputs: 0,
            counters: HttpCounters::default(),
        }
    }

    // ------------------------------------------------------------ getters

    /// The tracker.
    pub const fn tracker(&self) -> &Tracker {
        &self.app.tracker
    }

    /// The tracker, to drive its timer, sync and state.
    pub fn tracker_mut(&mut self) -> &mut Tracker {
        &mut self.app.tracker
    }

    /// The limits.
    pub const fn limits(&self) -> &HttpLimits {
        &self.limits
    }

    /// What the service did so far.
    pub const fn counters(&self) -> HttpCounters {
        let mut c = self.counters;
        c.bodies_in_flight = self.bodies;
        c
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Open connections from the address of `ip` (its /64 for IPv6).
    pub fn connections_from(&self, ip: IpAddr) -> usize {
        self.by_ip.get(&IpKey::of(ip)).map_or(0, Vec::len)
    }

    /// Bytes held by connection buffers (capacities) and cached stats pages.
    pub fn memory(&self) -> usize {
        self.inputs
            + self.body_inputs
            + self.outputs
            + self
                .app
                .cache
                .iter()
                .map(|c| c.body.capacity())
                .sum::<usize>()
    }

    /// Body bytes reserved by requests whose head was accepted.
    pub const fn bodies_in_flight(&self) -> usize {
        self.bodies
    }

    /// Output queued on `id`, to be written to its socket.
    pub fn output(&self, id: ConnId) -> &[u8] {
        self.conns.get(&id).map_or(&[], |c| &c.out[c.written..])
    }

    /// Bytes `id` may take now (0: do not read it; backpressure or closing).
    pub fn read_capacity(&self, id: ConnId) -> usize {
        let Some(c) = self.conns.get(&id) else {
            return 0;
        };
        let own = self.own_capacity(c);
        if c.pending.is_some() {
            // An accepted body is within the body budget already.
            own
        } else {
            let floor = INPUT_FLOOR.saturating_sub(c.unparsed().len());
            own.min(self.input_room().max(floor))
        }
    }

    /// What `c` may take by its own caps, whatever the others hold.
    fn own_capacity(&self, c: &Conn) -> usize {
        if c.closing || c.queued() >= self.limits.max_output {
            return 0;
        }
        let limit = match &c.pending {
            Some(p) => p.total.max(self.limits.max_request),
            None => self.limits.max_request,
        };
        limit.saturating_sub(c.unparsed().len()).min(READ_CHUNK)
    }

    /// Input bytes the process-wide budget has left (accepted bodies aside).
    fn input_room(&self) -> usize {
        self.limits.max_input_total.saturating_sub(self.inputs)
    }

    /// Whether the process-wide output budget is spent.
    fn output_full(&self) -> bool {
        self.outputs >= self.limits.max_output_total
    }

    /// Whether [`Service::process`] has work on `id` again: it stopped at the output
    /// cap with input left, and the output has drained below it since.
    pub fn ready(&self, id: ConnId) -> bool {
        self.conns.get(&id).is_some_and(|c| {
            c.held
                && !c.closing
                && c.queued() < self.limits.max_output
                && (c.queued() == 0 || !self.output_full())
        })
    }

    /// Whether `id` waits for a process-wide budget only: it has input left to parse
    /// while all connections' output is at [`HttpLimits::max_output_total`] (`output`),
    /// or could take more bytes but for [`HttpLimits::max_input_total`]. Nothing on
    /// its own socket will wake it; the host tries it again once
    /// [`Service::has_room`] says so.
    pub fn stalled(&self, id: ConnId, output: bool) -> bool {
        self.conns.get(&id).is_some_and(|c| {
            if output {
                c.held
                    && !c.closing
                    && c.queued() > 0
                    && c.queued() < self.limits.max_output
                    && self.output_full()
            } else {
                c.pending.is_none()
                    && self.own_capacity(c) > 0
                    && self.input_room() == 0
                    && c.unparsed().len() >= INPUT_FLOOR
            }
        })
    }

    /// Whether the process-wide output budget (`output`) or input budget has room.
    pub fn has_room(&self, output: bool) -> bool {
        if output {
            !self.output_full()
        } else {
            self.input_room() > 0
        }
    }

    /// Whether `id` has nothing more to say: its last answer closes it (or it was never
    /// opened) and its output is flushed. The host closes it then.
    pub fn finished(&self, id: ConnId) -> bool {
        self.conns
            .get(&id)
            .is_none_or(|c| c.closing && c.queued() == 0)
    }

    /// When [`Service::handle_timeout`] has work: the earliest deadline of a connection.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns.values().map(|c| self.deadline(c)).min()
    }

    fn deadline(&self, c: &Conn) -> Instant {
        match (c.since, &c.pending) {
            (Some(t), Some(_)) => t + self.limits.body_timeout,
            (Some(t), None) => t + self.limits.header_timeout,
            (None, _) => c.last_active + self.limits.idle_timeout,
        }
    }

    // ------------------------------------------------------------ commands

    /// A connection from `peer` was accepted at `now`. Always admitted; at a cap, the
    /// least useful connection is evicted (see the module docs).
    pub fn open(&mut self, now: Instant, peer: SocketAddr) -> Opened {
        let ip = IpKey::of(peer.ip());
        let mine = self.by_ip.get(&ip).map_or(0, Vec::len);
        let id = self.next_id;
        self.next_id += 1;
        let evict = if mine >= self.limits.max_connections_per_ip.max(1) {
            // The address makes room among its own, whatever their age.
            self.least_useful(Some(ip), None)
        } else if self.conns.len() >= self.limits.max_connections.max(1) {
            let busiest = self
                .by_ip
                .iter()
                .max_by_key(|(_, v)| v.len())
                .filter(|(_, v)| v.len() > 1)
                .map(|(k, _)| *k);
            // The address holding the most gives way whatever the age of its
            // connections; when every address holds one, only connections old enough.
            let pick = match busiest {
                Some(b) => self.least_useful(Some(b), None),
                None => self.least_useful(None, Some(now)),
            };
            if pick.is_none() {
                // Every connection is too young to give way: the newcomer does.
                self.counters.refused_connections += 1;
                return Opened {
                    id,
                    evict: Some(id),
                };
            }
            pick
        } else {
            None
        };
        if let Some(e) = evict {
            self.close(e);
            self.counters.evicted += 1;
        }
        self.conns.insert(
            id,
            Conn {
                peer,
                ip,
                inbuf: Vec::new(),
                start: 0,
                scanned: 0,
                pending: None,
                out: Vec::new(),
                written: 0,
                closing: false,
                held: false,
                since: None,
                last_active: now,
                opened: now,
                reserved: 0,
            },
        );
        self.by_ip.entry(ip).or_default().push(id);
        self.counters.connections += 1;
        Opened { id, evict }
    }

    /// The least recently active connection of `ip` (of all, with `None`): a
    /// connection that never finished a request counts from its opening. With
    /// `aged: Some(now)`, only connections open for [`HttpLimits::min_age_to_evict`]
    /// at `now` are candidates.
    fn least_useful(&self, ip: Option<IpKey>, aged: Option<Instant>) -> Option<ConnId> {
        let min_age = self.limits.min_age_to_evict;
        let pick = |ids: &mut dyn Iterator<Item = ConnId>| {
            ids.filter_map(|id| {
                let c = self.conns.get(&id)?;
                let old = aged.is_none_or(|now| c.opened + min_age <= now);
                old.then_some((c.last_active, id))
            })
            .min()
            .map(|(_, id)| id)
        };
        match ip.and_then(|ip| self.by_ip.get(&ip)) {
            Some(ids) => pick(&mut ids.iter().copied()),
            None => pick(&mut self.conns.keys().copied()),
        }
    }

    /// Forgets `id` and what it held.
    pub fn close(&mut self, id: ConnId) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        let (i, b, o) = c.buffers();
        self.inputs -= i;
        self.body_inputs -= b;
        self.outputs -= o;
        self.bodies -= c.reserved;
        if let Some(v) = self.by_ip.get_mut(&c.ip) {
            v.retain(|&x| x != id);
            if v.is_empty() {
                self.by_ip.remove(&c.ip);
            }
        }
    }

    /// Bytes read from `id`'s socket (at most [`Service::read_capacity`]; more are
    /// dropped, and the connection is answered 431 and closed).
    pub fn received(&mut self, now: Instant, id: ConnId, data: &[u8]) {
        let cap = self.read_capacity(id);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if data.is_empty() || c.closing {
            return;
        }
        let before = c.buffers();
        if c.unparsed().is_empty() && c.pending.is_none() {
            c.since = Some(now);
        }
        let take = data.len().min(cap);
        c.inbuf.extend_from_slice(&data[..take]);
        self.counters.bytes_in += take as u64;
        if take < data.len() {
            refuse(c, 431);
            self.counters.refused += 1;
        }
        let after = c.buffers();
        self.account(before, after);
    }

    /// Moves the buffer totals by one connection's change, and their peaks.
    fn account(&mut self, before: (usize, usize, usize), after: (usize, usize, usize)) {
        self.inputs = self.inputs + after.0 - before.0;
        self.body_inputs = self.body_inputs + after.1 - before.1;
        self.outputs = self.outputs + after.2 - before.2;
        let c = &mut self.counters;
        c.peak_buffers = c
            .peak_buffers
            .max(self.inputs + self.body_inputs + self.outputs);
        c.peak_input = c.peak_input.max(self.inputs);
        c.peak_output_total = c.peak_output_total.max(self.outputs);
    }

    /// Output taken by `id`'s socket.
    pub fn wrote(&mut self, now: Instant, id: ConnId, n: usize) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let before = c.buffers();
        c.written = (c.written + n).min(c.out.len());
        if n > 0 {
            c.last_active = now;
        }
        if c.written == c.out.len() {
            c.out.clear();
            c.written = 0;
            if c.out.capacity() > OUT_KEEP {
                c.out = Vec::new();
            }
        } else if c.written > c.out.len() / 2 {
            c.out.drain(..c.written);
            c.written = 0;
        }
        let after = c.buffers();
        self.account(before, after);
    }

    /// Answers the whole requests `id` has received, at most
    /// [`HttpLimits::requests_per_turn`] of them and while its output is under
    /// [`HttpLimits::max_output`]. Returns `true` when it stopped at the turn budget
    /// with more to do (the host comes back after serving the others).
    pub fn process(&mut self, now: Instant, id: ConnId) -> bool {
        let Some(c) = self.conns.get_mut(&id) else {
            return false;
        };
        let before = c.buffers();
        let limits = &self.limits;
        let mut answered = 0;
        let mut more = false;
        c.held = false;
        loop {
            if c.closing {
                break;
            }
            // The process-wide output, with this connection's as it is now.
            // A connection with nothing queued always gets its next answer: clients
            // that read theirs are never held back by those that do not.
            let outputs = self.outputs - before.2 + c.out.capacity();
            if c.queued() >= limits.max_output
                || (c.queued() > 0 && outputs >= limits.max_output_total)
            {
                c.held = !c.unparsed().is_empty();
                break;
            }
            if answered >= limits.requests_per_turn {
                more = true;
                break;
            }
            if c.pending.is_none() {
                match head(c, limits, &self.app, self.bodies) {
                    Head::Partial => break,
                    Head::Refused(code, text) => {
                        refuse_with(c, code, text);
                        self.counters.refused += 1;
                        self.counters.requests += 1;
                        answered += 1;
                        break;
                    }
                    Head::Accepted(p, reserve) => {
                        self.bodies += reserve;
                        c.reserved = reserve;
                        c.since = Some(now);
                        c.pending = Some(p);
                    }
                }
            }
            let Some(p) = c.pending.clone() else {
                break;
            };
            if c.unparsed().len() < p.total {
                break;
            }
            let req = &c.inbuf[c.start..c.start + p.total];
            let keep = self.app.answer(now, &p, req, c.peer, limits, &mut c.out);
            c.start += p.total;
            c.scanned = c.start;
            c.pending = None;
            self.bodies -= c.reserved;
            c.reserved = 0;
            c.last_active = now;
            c.since = (!c.unparsed().is_empty()).then_some(now);
            c.closing |= !keep;
            answered += 1;
            self.counters.requests += 1;
        }
        // Compact rarely: when the answered bytes are half the buffer or more, the tail
        // moved is at most what was answered since the last move.
        if c.start > 0 && (c.start == c.inbuf.len() || c.start * 2 >= c.inbuf.len()) {
            let tail = c.inbuf.len() - c.start;
            self.counters.bytes_moved += tail as u64;
            c.inbuf.drain(..c.start);
            c.scanned -= c.start.min(c.scanned);
            c.start = 0;
            if c.inbuf.is_empty() && c.inbuf.capacity() > INBUF_KEEP {
                c.inbuf = Vec::new();
            }
        }
        if c.closing {
            c.inbuf = Vec::new();
            c.start = 0;
            c.scanned = 0;
            c.since = None;
        }
        let queued = c.queued();
        let after = c.buffers();
        self.account(before, after);
        self.counters.peak_output = self.counters.peak_output.max(queued);
        self.counters.max_requests_per_turn =
            self.counters.max_requests_per_turn.max(answered as u64);
        more
    }

    /// Closes (forgets) the connections whose deadline passed at `now`; their ids go
    /// into `expired` for the host to close their sockets.
    pub fn handle_timeout(&mut self, now: Instant, expired: &mut Vec<ConnId>) {
        let start = expired.len();
        expired.extend(
            self.conns
                .iter()
                .filter(|(_, c)| self.deadline(c) <= now)
                .map(|(id, _)| *id),
        );
        for &id in &expired[start..] {
            self.close(id);
            self.counters.timed_out += 1;
        }
    }

    /// Answers one BEP 15 datagram (see [`Tracker::handle_udp`]).
    pub fn handle_udp(
        &mut self,
        now: Instant,
        packet: &[u8],
        from: SocketAddr,
        reply: &mut Vec<u8>,
    ) -> bool {
        let app = &mut self.app;
        app.tracker
            .handle_udp(now, packet, from, &mut app.rng, reply)
    }
}

/// The outcome of looking for a request head.
enum Head {
    Partial,
    Refused(u16, &'static str),
    /// The head, and the body bytes it reserves from the budget.
    Accepted(Pending, usize),
}

/// Finds, parses and judges the head at `c`'s unparsed bytes.
fn head(c: &mut Conn, limits: &HttpLimits, app: &App, bodies: usize) -> Head {
    // Blank lines between requests are ignored (RFC 9112, 2.2).
    while c
        .inbuf
        .get(c.start)
        .is_some_and(|&b| b == b'\r' || b == b'\n')
    {
        c.start += 1;
    }
    if c.start == c.inbuf.len() {
        c.since = None;
    }
    c.scanned = c.scanned.max(c.start);
    let end = match head_end(&c.inbuf, c.scanned) {
        Ok(end) => end - c.start,
        Err(resume) => {
            c.scanned = resume;
            return if c.unparsed().len() >= limits.max_request {
                Head::Refused(431, "Request Header Fields Too Large")
            } else {
                Head::Partial
            };
        }
    };
    if end > limits.max_request {
        return Head::Refused(431, "Request Header Fields Too Large");
    }
    let raw = &c.inbuf[c.start..c.start + end];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(raw) {
        Ok(httparse::Status::Complete(n)) if n == end => {}
        Err(httparse::Error::TooManyHeaders) => {
            return Head::Refused(431, "Request Header Fields Too Large")
        }
        _ => return Head::Refused(400, "Bad Request"),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Head::Refused(400, "Bad Request");
    };
    let mut length: Option<u64> = None;
    let mut keep_alive = version == 1;
    let mut auth = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = h.value.trim_ascii();
            let n = match std::str::from_utf8(v)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            {
                Some(s) => s.parse::<u64>().ok(),
                None => None,
            };
            match (n, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Head::Refused(400, "Bad Request"),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Head::Refused(501, "Transfer-Encoding not supported");
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let t = token.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case(SYNC_AUTH_HEADER) {
            auth = Some(h.value);
        }
    }
    let length = length.unwrap_or(0);
    let (path, query) = match target.find('?') {
        Some(i) => (&target[..i], i + 1..target.len()),
        None => (target, target.len()..target.len()),
    };
    // The target's offset in the head, to find the query again at answer time.
    let base = target.as_ptr() as usize - raw.as_ptr() as usize;
    let query = base + query.start..base + query.end;
    let route = match (method, path) {
        ("GET", "/announce") => Route::Announce,
        ("GET", "/scrape") => Route::Scrape,
        ("GET", "/stats.json") => Route::StatsJson,
        ("GET", "/") => Route::Index,
        ("GET", "/admin/register") => Route::Register,
        ("POST", "/sync") => Route::Sync,
        ("GET" | "POST", _) => Route::NotFound,
        _ => Route::BadMethod,
    };
    if route == Route::Sync {
        let Some(key) = &app.sync_key else {
            return Head::Refused(403, "sync not enabled");
        };
        let Some(auth) = auth else {
            return Head::Refused(403, "sync auth missing");
        };
        if length > limits.max_sync_body as u64 {
            return Head::Refused(413, "Payload Too Large");
        }
        if !check_sync_auth(key.as_bytes(), length, auth) {
            return Head::Refused(403, "bad sync auth");
        }
    } else if length > (limits.max_request - end) as u64 {
        return Head::Refused(413, "Payload Too Large");
    }
    // Bounded by the checks above.
    let length = length as usize;
    if bodies + length > limits.max_body_bytes {
        return Head::Refused(503, "Too many bodies in flight");
    }
    let p = Pending {
        head_len: end,
        total: end + length,
        route,
        keep_alive,
        query,
    };
    Head::Accepted(p, length)
}

/// The end of the first head in `buf` (just past its blank line), searching from
/// `from`; or where to resume the search when more bytes come.
fn head_end(buf: &[u8], from: usize) -> Result<usize, usize> {
    let mut i = from;
    while let Some(p) = buf
        .get(i..)
        .and_then(|b| b.iter().position(|&b| b == b'\n'))
    {
        let nl = i + p;
        match (buf.get(nl + 1), buf.get(nl + 2)) {
            (Some(b'\n'), _) => return Ok(nl + 2),
            (Some(b'\r'), Some(b'\n')) => return Ok(nl + 3),
            (None, _) | (Some(b'\r'), None) => return Err(nl),
            _ => {}
        }
        i = nl + 1;
    }
    Err(buf.len().max(from))
}

/// Queues a refusal that closes the connection.
fn refuse(c: &mut Conn, code: u16) {
    refuse_with(c, code, status_text(code));
}

fn refuse_with(c: &mut Conn, code: u16, text: &str) {
    respond(&mut c.out, code, "text/plain", text.as_bytes(), false);
    c.closing = true;
    c.pending = None;
}

impl App {
    /// Answers one whole request into `out`; `false` if the connection closes after.
    fn answer(
        &mut self,
        now: Instant,
        p: &Pending,
        req: &[u8],
        peer: SocketAddr,
        limits: &HttpLimits,
        out: &mut Vec<u8>,
    ) -> bool {
        let ka = p.keep_alive;
        let query = req.get(p.query.clone()).unwrap_or_default();
        let body = req.get(p.head_len..).unwrap_or_default();
        let mut reply = Vec::with_capacity(256);
        match p.route {
            Route::Announce => {
                self.tracker
                    .handle_http_announce(now, query, peer, &mut self.rng, &mut reply);
                respond(out, 200, "text/plain", &reply, ka);
            }
            Route::Scrape => {
                self.tracker.handle_http_scrape(query, &mut reply);
                respond(out, 200, "text/plain", &reply, ka);
            }
            Route::StatsJson | Route::Index => {
                let admin = self.is_admin(query);
                let json = p.route == Route::StatsJson;
                let page = self.stats_page(now, json, admin, limits);
                let ctype = if json {
                    "application/json"
                } else {
                    "text/html; charset=utf-8"
                };
                respond(out, 200, ctype, page, ka);
            }
            Route::Register => {
                let (code, text) = self.register(query);
                respond(out, code, "text/plain", text.as_bytes(), ka);
            }
            Route::Sync => {
                let (code, text) = match &self.sync_key {
                    None => (403, "sync not enabled".to_string()),
                    Some(key) => match self.tracker.apply_sync(now, body, key.as_bytes()) {
                        Ok(n) => (200, format!("applied {n}")),
                        Err(e) => (403, e.to_string()),
                    },
                };
                respond(out, code, "text/plain", text.as_bytes(), ka);
            }
            Route::NotFound => respond(out, 404, "text/plain", b"Not Found", ka),
            Route::BadMethod => respond(out, 405, "text/plain", b"Method Not Allowed", ka),
        }
        ka
    }

    /// Whether the query carries the admin key.
    fn is_admin(&self, query: &[u8]) -> bool {
        let Some(admin) = &self.admin_key else {
            return false;
        };
        query_pairs(query)
            .filter(|(k, _)| *k == b"key")
            .any(|(_, v)| {
                let mut buf = vec![0; v.len()];
                decode_into(v, &mut buf).is_ok_and(|k| ct_eq(k, admin.as_bytes()))
            })
    }

    fn register(&mut self, query: &[u8]) -> (u16, &'static str) {
        let mut hash = None;
        for (k, v) in query_pairs(query) {
            if k == b"info_hash" {
                hash = decode_id20(v).map(InfoHash);
            }
        }
        if self.admin_key.is_none() {
            return (403, "registration disabled");
        }
        if !self.is_admin(query) {
            return (403, "bad key");
        }
        let Some(h) = hash else {
            return (400, "bad info_hash");
        };
        if self.tracker.register(h) {
            (200, "registered")
        } else {
            (200, "already registered")
        }
    }

    /// The stats page (JSON or HTML; with the torrents only for the admin), built at
    /// most once per [`HttpLimits::stats_cache`].
    fn stats_page(&mut self, now: Instant, json: bool, admin: bool, limits: &HttpLimits) -> &[u8] {
        let i = usize::from(!json) * 2 + usize::from(admin);
        let fresh = self.cache[i]
            .at
            .is_some_and(|t| now < t + limits.stats_cache && now >= t);
        if !fresh {
            let body = if json {
                self.stats_json(admin, limits.max_stats_torrents)
            } else {
                self.html(admin, limits.max_stats_torrents)
            };
            self.cache[i] = Cached {
                at: Some(now),
                body: body.into_bytes(),
            };
        }
        &self.cache[i].body
    }

    fn stats_json(&self, admin: bool, max: usize) -> String {
        let c = self.tracker.counters();
        let mut v = serde_json::json!({
            "swarms": self.tracker.swarm_count(),
            "peers": self.tracker.peer_count(),
            "announces": c.announces,
            "scrapes": c.scrapes,
            "failures": c.failures,
        });
        if admin {
            let torrents: Vec<serde_json::Value> = self
                .tracker
                .all_stats()
                .take(max)
                .map(|(h, s)| {
                    serde_json::json!({
                        "info_hash": String::from_utf8_lossy(&h.to_hex()),
                        "complete": s.complete,
                        "incomplete": s.incomplete,
                        "downloaded": s.downloaded,
                    })
                })
                .collect();
            v["torrents"] = serde_json::Value::Array(torrents);
        }
        v.to_string()
    }

    fn html(&self, admin: bool, max: usize) -> String {
        let mut s = String::from(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>btcore tracker</title></head><body>\n<h1>btcore tracker</h1>\n",
        );
        let _ = writeln!(
            s,
            "<p>{} torrents, {} peers. Announce at <code>/announce</code>, scrape at <code>/scrape</code>, figures in <a href=\"/stats.json\">/stats.json</a>.</p>",
            self.tracker.swarm_count(),
            self.tracker.peer_count()
        );
        if admin {
            s.push_str("<table><tr><th>info-hash</th><th>seeds</th><th>leechers</th><th>downloaded</th></tr>\n");
            for (h, st) in self.tracker.all_stats().take(max) {
                let st: ScrapeStats = st;
                let _ = writeln!(
                    s,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    String::from_utf8_lossy(&h.to_hex()),
                    st.complete,
                    st.incomplete,
                    st.downloaded
                );
            }
            s.push_str("</table>");
        }
        s.push_str("</body></html>\n");
        s
    }
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
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
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

#[cfg(test)]
mod tests {
    use super::*;
    use btcore_core::tracker::server::ServerConfig;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn service(limits: HttpLimits) -> Service {
        let tracker = Tracker::new(ServerConfig::default(), [1; 32]);
        Service::new(limits, tracker, Rng::new(1), Some("k".into()), None)
    }

    fn peer(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], port))
    }

    fn take(s: &mut Service, id: ConnId) -> Vec<u8> {
        let o = s.output(id).to_vec();
        s.wrote(t(0), id, o.len());
        o
    }

    #[test]
    fn head_end_resumes_and_accepts_bare_newlines() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nX", 0), Ok(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nX", 0), Ok(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n", 0), Err(15));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r", 0), Err(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 24), Ok(27));
        assert_eq!(head_end(b"abc", 0), Err(3));
    }

    #[test]
    fn pipelined_requests_answered_in_order_within_the_turn_budget() {
        let mut s = service(HttpLimits {
            requests_per_turn: 3,
            ..HttpLimits::default()
        });
        let id = s.open(t(0), peer(1, 1000)).id;
        let one = b"GET /nope HTTP/1.1\r\n\r\n";
        let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * 7).collect();
        s.received(t(0), id, &burst);
        assert!(s.process(t(0), id), "stopped at the budget");
        assert!(s.process(t(0), id));
        assert!(!s.process(t(0), id), "done");
        let out = take(&mut s, id);
        assert_eq!(out.windows(12).filter(|w| w == b"HTTP/1.1 404").count(), 7);
        assert_eq!(s.counters().max_requests_per_turn, 3);
        assert!(s.counters().bytes_moved <= burst.len() as u64);
    }

    #[test]
    fn framing_errors_and_limits() {
        let mut s = service(HttpLimits::default());
        let cases: [(&[u8], &[u8]); 6] = [
            (b"\x00\xff\r\n\r\n", b"400"),
            (b"POST /x HTTP/1.1\r\nContent-Length: 99999\r\n\r\n", b"413"),
            (
                b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"501",
            ),
            (
                b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                b"400",
            ),
            (
                b"POST /sync HTTP/1.1\r\nContent-Length: 9000000\r\n\r\n",
                b"403",
            ),
            (b"DELETE / HTTP/1.1\r\n\r\n", b"405"),
        ];
        for (i, (req, code)) in cases.iter().enumerate() {
            let id = s.open(t(0), peer(1, i as u16)).id;
            s.received(t(0), id, req);
            s.process(t(0), id);
            let out = take(&mut s, id);
            assert_eq!(&out[9..12], *code, "{}", String::from_utf8_lossy(req));
        }
        let id = s.open(t(0), peer(2, 1)).id;
        let big = vec![b'a'; 9000];
        let cap = s.read_capacity(id);
        assert_eq!(cap, 8 * 1024);
        s.received(t(0), id, &big[..cap]);
        s.process(t(0), id);
        assert_eq!(&take(&mut s, id)[9..12], b"431");
        assert!(s.finished(id));
    }
}
