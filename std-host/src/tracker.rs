//! The tracker client: UDP announces on the host's event loop, HTTP(S) announces and
//! host-name lookups on worker threads.
//!
//! [`TrackerClient`] is the one façade the event loop talks to: a job is one exchange
//! with one tracker, the one the session named in its `Action::Announce`
//! ([`TrackerClient::announce`]); one [`AnnounceResult`] per job comes out
//! ([`TrackerClient::poll_result`]), which the loop reports to the session with
//! `handle_announced`. Which tracker to ask, when, and what to do when one fails (the
//! BEP 12 tier walk, per-tracker backoff, promotion, who gets `stopped`) is the
//! session's decision, not this client's. The loop owns it. Its UDP sockets (one per address
//! family, bound on first use, non-blocking) are registered in the loop's `mio::Poll`
//! under the two tokens given to [`TrackerClient::new`], and every UDP exchange is run
//! by the core's sans-IO BEP 15 client ([`UdpTrackerClient`]), so a silent UDP tracker
//! costs a timer, never a blocked thread. HTTP(S) requests, which need a TLS stack and a
//! blocking client crate, and the lookups of `udp://` host names (`getaddrinfo` blocks)
//! go to up to [`TrackerConfig::max_parallel`] worker threads; each finished piece of
//! worker output calls the `notify` closure (the host wakes its loop with it).
//!
//! # Driving it
//!
//! Each turn of the loop:
//!
//! 1. when one of the client's tokens is readable, [`TrackerClient::on_udp_readable`];
//! 2. [`TrackerClient::handle_timeout`] with the current time: takes in what the
//!    workers finished, advances UDP retransmissions and ends attempts past their
//!    deadline (cheap when nothing is due: call it every turn);
//! 3. [`TrackerClient::poll_result`] until `None`;
//! 4. sleep at most until [`TrackerClient::poll_timeout`].
//!
//! Jobs of one torrent (one [`AnnounceJob::key`]) run one at a time, in the order they
//! were queued (a `stopped` to one tracker before a `started` to it again); jobs of
//! different torrents run at once. Each exchange has its own deadline,
//! [`TrackerConfig::timeout`] from the moment it starts: a UDP exchange or a host-name
//! lookup when it is queued, an HTTP request when a worker takes it (one waiting behind
//! slow requests does not lose its time waiting); a `stopped` has at most
//! [`STOP_TIMEOUT`]. The `tracker id` an HTTP tracker gives is kept per torrent and
//! tracker and sent back until the `stopped` to that tracker.
//!
//! # Transports
//!
//! - `http://`, `https://`: a `GET` of the BEP 3 announce URL (compact, with the numwant
//!   of the job and a per-session random `key`) through `ureq` (rustls), following up
//!   to [`MAX_REDIRECTS`] redirects, with the configured timeout and a body read capped
//!   at [`MAX_BODY`], through [`TrackerConfig::proxy`] (by default the environment's:
//!   `HTTP_PROXY`, `NO_PROXY`, ..., as `ureq` reads them). Every hop passes the SSRF
//!   guard below.
//! - `udp://host:port`: BEP 15. An IP literal is used as is; a name is looked up on a
//!   worker (ahead of queued HTTP requests) and the answer kept for [`NAME_TTL`] (a
//!   failed lookup for [`NAME_RETRY`]). The retransmission schedule is BEP 15's
//!   doubling one, but from a base of [`UDP_RETRY`] (or a third of the timeout, when
//!   shorter) rather than 15 s, and each attempt ends at the configured timeout, so an
//!   announce to a silent tracker fails within the timeout (15 s: sends at 0 and 5 s,
//!   gives up at 15 s) instead of BEP 15's hour. Connection ids are cached per tracker address for
//!   60 s ([`UDP_CONNECTION_LIFETIME`]) and shared by every torrent; a cached id that
//!   draws an error packet is dropped and the request made again after a new connect.
//! - anything else (`wss://`, ...): an "unsupported tracker scheme" error.
//!
//! # Server-side request forgery (SSRF)
//!
//! A torrent's tracker URLs and a tracker's redirects come from strangers, and an
//! announce is a `GET` our host makes: aimed at a router's admin page or a NAS's local
//! service, it would make btcore a tool against the network it sits in. As libtorrent's
//! `ssrf_mitigation` does (on by default, [`TrackerConfig::ssrf`]), HTTP announces and
//! scrapes are held to these rules:
//!
//! - a tracker URL whose query already holds a tracker parameter (`info_hash`,
//!   `peer_id`, `port`, `uploaded`, `downloaded`, `left`, `corrupt`, `key`, `event`;
//!   without case, once unescaped) is refused, for every tracker;
//! - each hop (the URL, then every redirect) is checked on the addresses its host
//!   stands for: an IP literal in any form a resolver reads as one (IPv6, and IPv4 in
//!   `inet_aton`'s forms: `127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1`; a host that
//!   ends in a number but is no address is refused), else the answers of a lookup
//!   made here;
//! - a local address ([`is_local_address`]: loopback, private, link-local, unique
//!   local, shared, unspecified, multicast, reserved, the local-use NAT64 prefix
//!   `64:ff9b:1::/48`, and IPv6 forms embedding a local IPv4 address) is used only
//!   when the path, as written, is exactly `/announce` or `/announce.php` (`/scrape`
//!   or `/scrape.php` for a scrape, BEP 48); libtorrent only asks loopback trackers
//!   for a path that starts with `/announce`;
//! - a redirect from a tracker reached at a public address may not lead to a local one;
//! - the local addresses a rule excludes are dropped; a hop left with none fails with
//!   an error saying so, and the tracker counts as failed;
//! - the request then goes to exactly the checked addresses: the HTTP client's
//!   resolver gives those for the hop's host and refuses any other name (the lookup is
//!   not repeated, so a name that changes its answer between the check and the
//!   connection, DNS rebinding, cannot slip past). Through an HTTP proxy
//!   ([`TrackerConfig::proxy`]), the proxy is asked for a tunnel to a checked address
//!   (`CONNECT 192.0.2.7:80`), never to the name, and TLS runs through the tunnel with
//!   the URL's host name: a tracker's name must resolve here even with a proxy, and
//!   only HTTP(S) proxies are used (a request that would go through a SOCKS proxy
//!   fails).
//!
//! UDP trackers send a fixed 16-byte packet and follow no redirect; they are not
//! restricted.
//!
//! [`scrape`] is a separate, blocking call for the one-shot `btcore scrape` command: it
//! runs the same core BEP 15 client on a blocking socket (and HTTP scrapes with `ureq`).
//!
//! # Shutdown
//!
//! [`TrackerClient::shutdown`] drops the queued and running jobs except `stopped`
//! announces, runs the given `Poll` for the client alone until those are done or the
//! time given is up, then stops the workers (one still blocked in a request past the
//! deadline is detached). Queue a `stopped` announce for every running torrent before
//! calling it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use btcore_core::bencode::Token as BencodeToken;
use btcore_core::ids::{InfoHash, PeerId};
use btcore_core::rng::Rng;
use btcore_core::tracker::http::{self, AnnounceResponse, ScrapeResponse};
use btcore_core::tracker::udp::{self, ConnState, UdpEvent, UdpTrackerClient};
use btcore_core::tracker::AnnounceRequest;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Registry, Token};

pub use btcore_core::tracker::{Event, ScrapeStats};

/// The largest HTTP response body read (larger ones are an error).
pub const MAX_BODY: u64 = 2 << 20;
/// The most redirects an HTTP announce or scrape follows.
pub const MAX_REDIRECTS: u32 = 5;
/// Bencode tokens available to parse an announce response (about 2,000 peers in the
/// dictionary form; compact responses need a few dozen).
pub const ANNOUNCE_TOKENS: usize = 16_384;
/// The longest a `stopped` announce may take, per tracker.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The first UDP retransmission timeout (BEP 15 says 15 s; see the module docs).
pub const UDP_RETRY: Duration = Duration::from_secs(5);
/// How long a UDP connection id is used after it was received (BEP 15).
pub const UDP_CONNECTION_LIFETIME: Duration = Duration::from_millis(udp::CONNECTION_ID_LIFETIME_MS);
/// How long the address of a `udp://` host name is kept.
pub const NAME_TTL: Duration = Duration::from_secs(300);
/// How long a failed host-name lookup is kept before it is tried again.
pub const NAME_RETRY: Duration = Duration::from_secs(30);
/// The error text for schemes other than `http`, `https` and `udp`.
pub const UNSUPPORTED_SCHEME: &str = "unsupported tracker scheme";

/// How the client behaves.
#[derive(Clone, Debug)]
pub struct TrackerConfig {
    /// The longest one announce to one tracker may take (default 15 s).
    pub timeout: Duration,
    /// The HTTP `User-Agent` (default `btcore/<version>`).
    pub user_agent: String,
    /// How many HTTP requests and name lookups run at once (default 4; at least 1).
    pub max_parallel: usize,
    /// Seeds the announce `key` and the UDP transaction ids.
    pub rng_seed: u64,
    /// The SSRF guard of HTTP announces and scrapes (see the module docs).
    pub ssrf: SsrfGuard,
    /// The proxy HTTP(S) trackers are reached through. Default: the environment's
    /// (`ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY`, with `NO_PROXY`), as `ureq` reads it.
    pub proxy: Option<ureq::Proxy>,
}

/// The SSRF guard (libtorrent's `ssrf_mitigation`; see the [module docs](self)).
#[derive(Clone, Copy, Debug)]
pub struct SsrfGuard {
    /// Whether the guard is on. Default `true`.
    pub enabled: bool,
    /// Which addresses count as local. Default [`is_local_address`]; a host may narrow
    /// or widen it (the tests make 127.0.0.1 look public with it).
    pub is_local: fn(IpAddr) -> bool,
}

impl Default for SsrfGuard {
    fn default() -> Self {
        Self {
            enabled: true,
            is_local: is_local_address,
        }
    }
}

/// Whether `ip` is an address of this host or its local networks, which a tracker
/// from the internet must not make us request: loopback, private (RFC 1918), shared
/// (RFC 6598), link-local, unspecified ("this network"), benchmarking, reserved,
/// multicast and broadcast IPv4 addresses; loopback, unspecified, unique local,
/// link-local, site-local and multicast IPv6 ones, the local-use NAT64 prefix
/// `64:ff9b:1::/48` (RFC 8215), and IPv6 addresses that embed a local IPv4 address
/// (mapped, compatible, NAT64, 6to4).
pub fn is_local_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                let [h1, h2] = hi.to_be_bytes();
                let [l1, l2] = lo.to_be_bytes();
                is_local_address(IpAddr::V4(Ipv4Addr::new(h1, h2, l1, l2)))
            };
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] & 0xffc0) == 0xfec0
                // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible).
                || (seg[..5] == [0; 5] && (seg[5] == 0xffff || seg[5] == 0) && embedded(seg[6], seg[7]))
                // 64:ff9b::a.b.c.d (NAT64).
                || (seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && embedded(seg[6], seg[7]))
                // 64:ff9b:1::/48, NAT64 for local use (RFC 8215): never routed beyond
                // its own network, whatever it embeds.
                || seg[..3] == [0x64, 0xff9b, 1]
                // 2002:AABB:CCDD::/48 (6to4).
                || (seg[0] == 0x2002 && embedded(seg[1], seg[2]))
        }
    }
}

impl Default for TrackerConfig {
    /// The defaults above, with a seed from the OS.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            user_agent: format!("btcore/{}", env!("CARGO_PKG_VERSION")),
            max_parallel: 4,
            rng_seed: crate::os::random_u64(),
            ssrf: SsrfGuard::default(),
            proxy: ureq::Proxy::try_from_env(),
        }
    }
}

impl TrackerConfig {
    /// The first UDP retransmission timeout for this configuration.
    fn udp_retry(&self) -> Duration {
        UDP_RETRY
            .min(self.timeout / 3)
            .max(Duration::from_millis(100))
    }
}

/// One exchange with one tracker: the announce of one torrent to the tracker the
/// session named.
#[derive(Clone, Debug)]
pub struct AnnounceJob {
    /// The host's torrent id: results carry it, and a torrent's exchanges run one at a
    /// time, in order.
    pub key: u32,
    /// The tracker's URL.
    pub tracker: String,
    /// The torrent.
    pub info_hash: InfoHash,
    /// Our peer id.
    pub peer_id: PeerId,
    /// The port we accept peer connections on.
    pub port: u16,
    /// Bytes uploaded this session.
    pub uploaded: u64,
    /// Bytes downloaded this session.
    pub downloaded: u64,
    /// Bytes still missing.
    pub left: u64,
    /// The event, if any.
    pub event: Option<Event>,
    /// How many peers we want; `None` lets the tracker choose.
    pub numwant: Option<u32>,
    /// The session's number for this announce, given back in the result.
    pub seq: u64,
}

/// What an exchange came to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnnounceResult {
    /// The job's key.
    pub key: u32,
    /// The event of the job.
    pub event: Option<Event>,
    /// The job's `seq`.
    pub seq: u64,
    /// The tracker asked (the job's URL).
    pub tracker: String,
    /// Why it failed (a tracker's `failure reason` as it sent it); `None` when it
    /// answered.
    pub error: Option<String>,
    /// The peers the tracker gave (port 0 entries and duplicates dropped).
    pub peers: Vec<SocketAddr>,
    /// Seconds until the next regular announce, when the tracker answered.
    pub interval: Option<u32>,
    /// The tracker's `min interval`.
    pub min_interval: Option<u32>,
    /// Seeders, per the tracker.
    pub complete: Option<u32>,
    /// Leechers, per the tracker.
    pub incomplete: Option<u32>,
    /// The tracker's `warning message`.
    pub warning: Option<String>,
}

impl AnnounceResult {
    /// Whether the tracker answered.
    pub fn answered(&self) -> bool {
        self.error.is_none()
    }

    fn new(job: AnnounceJob, outcome: Result<Answer, String>) -> Self {
        let mut r = Self {
            key: job.key,
            seq: job.seq,
            event: job.event,
            tracker: job.tracker,
            ..Self::default()
        };
        match outcome {
            Ok(a) => {
                r.peers = a.peers;
                r.interval = a.interval;
                r.min_interval = a.min_interval;
                r.complete = a.complete;
                r.incomplete = a.incomplete;
                r.warning = a.warning;
            }
            Err(e) => r.error = Some(e),
        }
        r
    }
}

/// The tracker client (see the module docs).
pub struct TrackerClient {
    config: TrackerConfig,
    /// The per-session `key` sent to trackers.
    session_key: u32,
    pool: Pool,
    io: UdpIo,
    torrents: HashMap<u32, Torrent>,
    /// `udp://` host names: looked up, being looked up, or failed.
    names: HashMap<(String, u16), Name>,
    results: VecDeque<AnnounceResult>,
    next_op: u64,
    /// Set by shutdown: exchanges end by then.
    shutdown: Option<Instant>,
}

impl fmt::Debug for TrackerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackerClient")
            .field("config", &self.config)
            .field("workers", &self.pool.workers.len())
            .field("torrents", &self.torrents.len())
            .finish_non_exhaustive()
    }
}

/// The loop's UDP side: sockets, transaction ids, the connection-id cache.
struct UdpIo {
    registry: Registry,
    tokens: [Token; 2],
    /// IPv4 and IPv6 sockets, bound on first use.
    socks: [Option<UdpSocket>; 2],
    rng: Rng,
    /// Connection ids per tracker address, with their expiry (ms on `epoch`).
    conn_ids: HashMap<SocketAddr, (u64, u64)>,
    epoch: Instant,
    retry_ms: u64,
    buf: Vec<u8>,
}

enum Name {
    Pending,
    Found(SocketAddr, Instant),
    Failed(String, Instant),
}

/// One torrent's exchanges, and what its trackers asked us to send back.
#[derive(Default)]
struct Torrent {
    /// `tracker id`s given by HTTP trackers, sent back in later announces (forgotten
    /// with the `stopped` one).
    tracker_ids: HashMap<String, Vec<u8>>,
    queue: VecDeque<AnnounceJob>,
    running: Option<Exchange>,
}

/// The exchange of a torrent under way.
struct Exchange {
    job: AnnounceJob,
    /// When it is given up on; `None` while an HTTP request waits for a worker (its
    /// time starts when a worker takes it).
    deadline: Option<Instant>,
    timeout: Duration,
    state: StepState,
}

enum StepState {
    /// Waiting for a worker's HTTP answer.
    Http { op: u64 },
    /// Waiting for a worker's lookup of the host name.
    Resolving { host: String, port: u16 },
    /// A BEP 15 exchange on the loop.
    Udp(Box<UdpStep>),
}

struct UdpStep {
    addr: SocketAddr,
    client: UdpTrackerClient,
    /// Whether the connection id came from the cache (an error then earns a retry).
    cached: bool,
}

/// A tracker's successful answer, owned.
#[derive(Default)]
struct Answer {
    peers: Vec<SocketAddr>,
    interval: Option<u32>,
    min_interval: Option<u32>,
    complete: Option<u32>,
    incomplete: Option<u32>,
    warning: Option<String>,
    tracker_id: Option<Vec<u8>>,
}

fn collect_peers(peers: impl Iterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut seen = HashSet::new();
    peers.filter(|a| a.port() != 0 && seen.insert(*a)).collect()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The HTTP client: redirects are followed by [`http_get`] (each hop checked), and no
/// connection is kept for later (one checked for a hop is never reused by another).
fn agent(config: &TrackerConfig) -> Http {
    let agent_config = ureq::Agent::config_builder()
        .timeout_global(Some(config.timeout))
        .max_redirects(0)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .user_agent(config.user_agent.as_str())
        .http_status_as_error(false)
        .proxy(config.proxy.clone())
        .build();
    Http {
        agent: ureq::Agent::with_parts(
            agent_config,
            GuardedConnector::default(),
            PinnedResolver::default(),
        ),
        guard: config.ssrf,
    }
}

fn request<'a>(job: &AnnounceJob, key: u32, tracker_id: Option<&'a [u8]>) -> AnnounceRequest<'a> {
    AnnounceRequest {
        info_hash: job.info_hash,
        peer_id: job.peer_id,
        port: job.port,
        uploaded: job.uploaded,
        downloaded: job.downloaded,
        left: job.left,
        event: job.event,
        compact: true,
        numwant: job.numwant,
        key: Some(key),
        tracker_id,
    }
}

/// What the loop waits for while a worker runs an HTTP request, past the request's
/// own timeout, before it gives up on the worker.
const WORKER_GRACE: Duration = Duration::from_secs(2);

impl TrackerClient {
    /// A client whose UDP sockets will be registered in `registry` under `tokens`
    /// (IPv4, IPv6), with its workers started. `notify` is called from a worker each
    /// time it finished something; the host wakes its loop with it.
    pub fn new(
        config: TrackerConfig,
        registry: &Registry,
        tokens: [Token; 2],
        notify: Box<dyn Fn() + Send>,
    ) -> io::Result<TrackerClient> {
        let mut rng = Rng::new(config.rng_seed);
        let session_key = rng.next_u32();
        let udp_rng = Rng::new(rng.next_u64());
        let pool = Pool::spawn(&config, notify);
        let io = UdpIo {
            registry: registry.try_clone()?,
            tokens,
            socks: [None, None],
            rng: udp_rng,
            conn_ids: HashMap::new(),
            epoch: Instant::now(),
            retry_ms: config.udp_retry().as_millis() as u64,
            buf: vec![0; 65_536],
        };
        Ok(TrackerClient {
            config,
            session_key,
            pool,
            io,
            torrents: HashMap::new(),
            names: HashMap::new(),
            results: VecDeque::new(),
            next_op: 0,
            shutdown: None,
        })
    }

    /// Queues an exchange and starts it unless the torrent has one running.
    pub fn announce(&mut self, now: Instant, job: AnnounceJob) {
        let key = job.key;
        self.torrents.entry(key).or_default().queue.push_back(job);
        self.advance(key, now);
    }

    /// The next finished exchange.
    pub fn poll_result(&mut self) -> Option<AnnounceResult> {
        self.results.pop_front()
    }

    /// Whether no exchange is queued or running.
    pub fn is_idle(&self) -> bool {
        self.torrents
            .values()
            .all(|t| t.running.is_none() && t.queue.is_empty())
    }

    /// When [`TrackerClient::handle_timeout`] has something to do next without new
    /// input: a UDP retransmission or an exchange's deadline. `None` when nothing runs
    /// on the loop's clock.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.torrents
            .values()
            .filter_map(|t| t.running.as_ref())
            .filter_map(|x| {
                let udp = match &x.state {
                    StepState::Udp(u) => u
                        .client
                        .poll_timeout()
                        .map(|ms| self.io.epoch + Duration::from_millis(ms)),
                    _ => None,
                };
                match (udp, x.deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }

    /// Reads every datagram waiting on the UDP sockets (call it when one of the
    /// client's tokens is readable) and feeds each to the exchange it answers.
    pub fn on_udp_readable(&mut self, now: Instant) {
        let now_ms = self.io.ms(now);
        let mut done = Vec::new();
        let mut buf = std::mem::take(&mut self.io.buf);
        for family in 0..2 {
            while let Some(sock) = self.io.socks[family].as_ref() {
                let (n, from) = match sock.recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            log::debug!("tracker UDP socket: {e}");
                        }
                        break;
                    }
                };
                let Self {
                    io,
                    torrents,
                    session_key,
                    ..
                } = self;
                let data = buf.get(..n).unwrap_or_default();
                for (key, t) in torrents.iter_mut() {
                    let Some(x) = t.running.as_mut() else {
                        continue;
                    };
                    let StepState::Udp(u) = &mut x.state else {
                        continue;
                    };
                    if u.addr != from {
                        continue;
                    }
                    let outcome = match u.client.handle_datagram(now_ms, data) {
                        // Not an answer to this exchange: maybe to another one.
                        Err(_) => continue,
                        Ok(None) => None,
                        Ok(Some(UdpEvent::Announced(a))) => Some(Ok(Answer {
                            peers: collect_peers(a.peers),
                            interval: Some(a.interval_secs),
                            complete: Some(a.seeders),
                            incomplete: Some(a.leechers),
                            ..Answer::default()
                        })),
                        Ok(Some(UdpEvent::Failed(f))) => Some(Err(f.to_string())),
                        Ok(Some(other)) => Some(Err(format!("unexpected answer {other:?}"))),
                    };
                    let outcome = match outcome {
                        Some(Err(_)) if u.cached => {
                            // The tracker may have forgotten our connection id.
                            io.conn_ids.remove(&u.addr);
                            u.cached = false;
                            u.client = io.new_client(u.addr);
                            let req = request(&x.job, *session_key, None);
                            u.client.announce(&req, now_ms);
                            None
                        }
                        other => other,
                    };
                    match outcome {
                        Some(r) => done.push((*key, r)),
                        None => {
                            io.remember_connection(u, now_ms);
                            if let Err(e) = io.transmit(u, now_ms) {
                                done.push((*key, Err(e)));
                            }
                        }
                    }
                    break;
                }
            }
        }
        self.io.buf = buf;
        for (key, r) in done {
            self.finish(key, r, now);
        }
    }

    /// Takes in what the workers finished, advances UDP retransmissions and ends the
    /// exchanges past their deadline. Call it on every turn of the loop.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Ok(done) = self.pool.done.try_recv() {
            match done {
                Done::Started { op, at } => {
                    let stopping = self.shutdown.is_some();
                    if let Some(x) = self.http_exchange(op) {
                        let d = at + x.timeout + WORKER_GRACE;
                        // At shutdown, never past the limit `shutdown` set.
                        x.deadline = Some(match x.deadline {
                            Some(old) if stopping => old.min(d),
                            _ => d,
                        });
                    }
                }
                Done::Http { op, answer } => {
                    if let Some(key) = self.http_exchange(op).map(|x| x.job.key) {
                        self.finish(key, answer, now);
                    }
                }
                Done::Resolved { host, port, addr } => self.resolved(host, port, addr, now),
            }
        }
        let now_ms = self.io.ms(now);
        let mut done = Vec::new();
        for (key, t) in &mut self.torrents {
            let Some(x) = t.running.as_mut() else {
                continue;
            };
            if x.deadline.is_some_and(|d| now >= d) {
                let why = match &x.state {
                    StepState::Udp(u)
                        if !matches!(u.client.conn_state(now_ms), ConnState::Connected { .. }) =>
                    {
                        "timed out (connect)"
                    }
                    StepState::Resolving { .. } => "timed out (name lookup)",
                    _ => "timed out",
                };
                done.push((*key, Err(why.to_string())));
                continue;
            }
            if let StepState::Udp(u) = &mut x.state {
                if let Some(UdpEvent::TimedOut) = u.client.handle_timeout(now_ms) {
                    done.push((*key, Err("timed out".to_string())));
                } else if let Err(e) = self.io.transmit(u, now_ms) {
                    done.push((*key, Err(e)));
                }
            }
        }
        for (key, r) in done {
            self.finish(key, r, now);
        }
    }

    /// The running HTTP exchange with operation number `op`.
    fn http_exchange(&mut self, op: u64) -> Option<&mut Exchange> {
        self.torrents.values_mut().find_map(|t| {
            t.running
                .as_mut()
                .filter(|x| matches!(x.state, StepState::Http { op: o } if o == op))
        })
    }

    /// Drops queued and running exchanges except `stopped` announces, runs `poll` for
    /// this client alone until those are done or `timeout` has passed, and stops the
    /// workers (one still busy at the deadline is left to finish on its own). Returns
    /// the results of the exchanges finished meanwhile (those not yet polled included).
    /// An exchange running when a `stopped` for the same torrent and tracker waits behind it is
    /// given half of `timeout` to finish first: sent at once, the `stopped` could reach
    /// the tracker before it (a `completed` read after our `stopped` leaves a seeder
    /// that has gone in the tracker's lists).
    pub fn shutdown(mut self, poll: &mut Poll, timeout: Duration) -> Vec<AnnounceResult> {
        let start = Instant::now();
        let deadline = start + timeout;
        self.shutdown = Some(deadline);
        let keys: Vec<u32> = self.torrents.keys().copied().collect();
        for key in keys {
            if let Some(t) = self.torrents.get_mut(&key) {
                t.queue.retain(|j| j.event == Some(Event::Stopped));
                // Only a `stopped` to the same tracker must come after it.
                let stop_waits = t
                    .running
                    .as_ref()
                    .is_some_and(|x| t.queue.iter().any(|j| j.tracker == x.job.tracker));
                if let Some(x) = t
                    .running
                    .as_mut()
                    .filter(|x| x.job.event != Some(Event::Stopped))
                {
                    if stop_waits {
                        let limit = start + timeout / 2;
                        x.deadline = Some(x.deadline.map_or(limit, |d| d.min(limit)));
                    } else {
                        t.running = None;
                    }
                }
            }
            self.advance(key, start);
        }
        let mut events = Events::with_capacity(64);
        loop {
            let now = Instant::now();
            self.handle_timeout(now);
            if self.is_idle() || now >= deadline {
                break;
            }
            // Short naps: other sockets of the loop may be registered in `poll` too.
            let wait = self
                .poll_timeout()
                .unwrap_or(deadline)
                .min(deadline)
                .saturating_duration_since(now)
                .min(Duration::from_millis(50));
            if let Err(e) = poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            if events.iter().any(|e| self.io.tokens.contains(&e.token())) {
                self.on_udp_readable(Instant::now());
            }
        }
        self.pool.stop(deadline);
        self.results.drain(..).collect()
    }

    /// Starts the next queued exchange of `key` if none is running; an exchange that
    /// cannot start ends at once with its error.
    fn advance(&mut self, key: u32, now: Instant) {
        let Some(mut t) = self.torrents.remove(&key) else {
            return;
        };
        while t.running.is_none() {
            let Some(job) = t.queue.pop_front() else {
                break;
            };
            let stopping = job.event == Some(Event::Stopped);
            if self.shutdown.is_some() && !stopping {
                continue;
            }
            let mut timeout = self.config.timeout;
            if stopping {
                timeout = timeout.min(STOP_TIMEOUT);
            }
            if let Some(d) = self.shutdown {
                timeout = timeout.min(d.saturating_duration_since(now));
            }
            let started = if timeout.is_zero() {
                Err("shutdown deadline passed".to_string())
            } else {
                let id = t.tracker_ids.get(&job.tracker).map(Vec::as_slice);
                let req = request(&job, self.session_key, id);
                self.begin(&job.tracker, &req, timeout, now)
            };
            match started {
                Ok(state) => {
                    // An HTTP request's time starts when a worker takes it.
                    let deadline =
                        (!matches!(state, StepState::Http { .. })).then(|| now + timeout);
                    t.running = Some(Exchange {
                        job,
                        deadline,
                        timeout,
                        state,
                    });
                }
                Err(e) => self.publish(&mut t, job, Err(e)),
            }
        }
        let keep = t.running.is_some() || !t.queue.is_empty() || !t.tracker_ids.is_empty();
        if keep {
            self.torrents.insert(key, t);
        }
    }

    /// Publishes the result of `job`, keeping the `tracker id` its tracker gave.
    fn publish(&mut self, t: &mut Torrent, job: AnnounceJob, mut outcome: Result<Answer, String>) {
        if job.event == Some(Event::Stopped) {
            // The session with this tracker is over.
            t.tracker_ids.remove(&job.tracker);
        } else if let Some(id) = outcome.as_mut().ok().and_then(|a| a.tracker_id.take()) {
            t.tracker_ids.insert(job.tracker.clone(), id);
        }
        self.results.push_back(AnnounceResult::new(job, outcome));
    }

    /// The running exchange of `key` came to `outcome`: publish it and start the next.
    fn finish(&mut self, key: u32, outcome: Result<Answer, String>, now: Instant) {
        let Some(mut t) = self.torrents.remove(&key) else {
            return;
        };
        if let Some(x) = t.running.take() {
            self.publish(&mut t, x.job, outcome);
        }
        self.torrents.insert(key, t);
        self.advance(key, now);
    }

    /// Starts an exchange with `url`.
    fn begin(
        &mut self,
        url: &str,
        req: &AnnounceRequest<'_>,
        timeout: Duration,
        now: Instant,
    ) -> Result<StepState, String> {
        match scheme(url) {
            Scheme::Http => {
                check_query(&self.config.ssrf, url)?;
                let mut full = String::with_capacity(url.len() + 256);
                http::write_announce_url(url.as_bytes(), req, &mut full)
                    .map_err(|e| e.to_string())?;
                self.next_op += 1;
                let op = self.next_op;
                self.pool.submit(Work::Http {
                    op,
                    url: full,
                    timeout,
                });
                Ok(StepState::Http { op })
            }
            Scheme::Udp => {
                let (host, port) = udp_authority(url)?;
                let addr = match host.parse::<IpAddr>() {
                    Ok(ip) => SocketAddr::new(ip, port),
                    Err(_) => {
                        let name = (host.to_ascii_lowercase(), port);
                        match self.names.get(&name) {
                            Some(Name::Found(addr, at)) if now < *at + NAME_TTL => *addr,
                            Some(Name::Failed(e, at)) if now < *at + NAME_RETRY => {
                                return Err(e.clone())
                            }
                            Some(Name::Pending) => {
                                return Ok(StepState::Resolving { host: name.0, port })
                            }
                            _ => {
                                self.names.insert(name.clone(), Name::Pending);
                                self.pool.submit(Work::Resolve {
                                    host: name.0.clone(),
                                    port,
                                });
                                return Ok(StepState::Resolving { host: name.0, port });
                            }
                        }
                    }
                };
                self.io.start(addr, req, now).map(StepState::Udp)
            }
            Scheme::Other => Err(UNSUPPORTED_SCHEME.into()),
        }
    }

    /// A worker looked up `host`: the exchanges waiting for it go on.
    fn resolved(
        &mut self,
        host: String,
        port: u16,
        addr: Result<SocketAddr, String>,
        now: Instant,
    ) {
        let name = (host, port);
        self.names.insert(
            name.clone(),
            match &addr {
                Ok(a) => Name::Found(*a, now),
                Err(e) => Name::Failed(e.clone(), now),
            },
        );
        let mut failed = Vec::new();
        for (key, t) in &mut self.torrents {
            let Some(x) = t.running.as_mut() else {
                continue;
            };
            if !matches!(&x.state, StepState::Resolving { host, port } if *host == name.0 && *port == name.1)
            {
                continue;
            }
            let started = addr.clone().and_then(|a| {
                let id = t.tracker_ids.get(&x.job.tracker).map(Vec::as_slice);
                let req = request(&x.job, self.session_key, id);
                self.io.start(a, &req, now)
            });
            match started {
                Ok(u) => x.state = StepState::Udp(u),
                Err(e) => failed.push((*key, e)),
            }
        }
        for (key, e) in failed {
            self.finish(key, Err(e), now);
        }
    }
}

impl Drop for TrackerClient {
    /// Without [`TrackerClient::shutdown`], the workers stop at once (queued requests
    /// are dropped; running ones finish in the background).
    fn drop(&mut self) {
        self.pool.stop(Instant::now());
    }
}

impl UdpIo {
    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn new_client(&self, addr: SocketAddr) -> UdpTrackerClient {
        UdpTrackerClient::new(addr.is_ipv6()).with_base_timeout_ms(self.retry_ms)
    }

    /// Starts an announce to the tracker at `addr`, sending its first packet.
    fn start(
        &mut self,
        addr: SocketAddr,
        req: &AnnounceRequest<'_>,
        now: Instant,
    ) -> Result<Box<UdpStep>, String> {
        let now_ms = self.ms(now);
        let family = usize::from(addr.is_ipv6());
        if self.socks[family].is_none() {
            let local = if addr.is_ipv6() {
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
            } else {
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
            };
            let mut sock = UdpSocket::bind(local).map_err(|e| e.to_string())?;
            self.registry
                .register(&mut sock, self.tokens[family], Interest::READABLE)
                .map_err(|e| e.to_string())?;
            self.socks[family] = Some(sock);
        }
        let mut client = self.new_client(addr);
        let cached = match self.conn_ids.get(&addr) {
            Some(&(id, expires)) if now_ms < expires => {
                client.set_connection(id, expires);
                true
            }
            _ => false,
        };
        client.announce(req, now_ms);
        let mut step = Box::new(UdpStep {
            addr,
            client,
            cached,
        });
        self.transmit(&mut step, now_ms)?;
        Ok(step)
    }

    /// Keeps the connection id an attempt received, for the other attempts.
    fn remember_connection(&mut self, u: &UdpStep, now_ms: u64) {
        if let ConnState::Connected {
            connection_id,
            expires_ms,
        } = u.client.conn_state(now_ms)
        {
            self.conn_ids.insert(u.addr, (connection_id, expires_ms));
        }
    }

    /// Sends what the attempt has to send now.
    fn transmit(&mut self, u: &mut UdpStep, now_ms: u64) -> Result<(), String> {
        let mut out = [0u8; udp::CLIENT_MAX_PACKET];
        let rng = &mut self.rng;
        while let Some(n) = u
            .client
            .poll_transmit(now_ms, &mut out, &mut || rng.next_u32())
            .map_err(|e| e.to_string())?
        {
            let Some(sock) = self.socks[usize::from(u.addr.is_ipv6())].as_ref() else {
                return Err("no socket".into());
            };
            match sock.send_to(out.get(..n).unwrap_or_default(), u.addr) {
                Ok(_) => {}
                // A full send buffer is a lost packet: the retransmission covers it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- workers

enum Work {
    Http {
        op: u64,
        url: String,
        timeout: Duration,
    },
    Resolve {
        host: String,
        port: u16,
    },
}

enum Done {
    /// A worker took HTTP request `op` at `at`.
    Started { op: u64, at: Instant },
    Http {
        op: u64,
        answer: Result<Answer, String>,
    },
    Resolved {
        host: String,
        port: u16,
        addr: Result<SocketAddr, String>,
    },
}

struct Pool {
    shared: Arc<PoolShared>,
    done: mpsc::Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
}

struct PoolShared {
    agent: Http,
    queue: Mutex<(VecDeque<Work>, bool)>,
    cond: Condvar,
    notify: Mutex<Box<dyn Fn() + Send>>,
}

impl Pool {
    fn spawn(config: &TrackerConfig, notify: Box<dyn Fn() + Send>) -> Pool {
        let shared = Arc::new(PoolShared {
            agent: agent(config),
            queue: Mutex::new((VecDeque::new(), false)),
            cond: Condvar::new(),
            notify: Mutex::new(notify),
        });
        let (tx, done) = mpsc::channel();
        let workers = (0..config.max_parallel.max(1))
            .filter_map(|i| {
                let shared = Arc::clone(&shared);
                let tx = tx.clone();
                thread::Builder::new()
                    .name(format!("btcore-tracker-{i}"))
                    .spawn(move || work(&shared, &tx))
                    .ok()
            })
            .collect();
        Pool {
            shared,
            done,
            workers,
        }
    }

    /// Queues work; name lookups go first, as UDP attempts wait on them.
    fn submit(&self, w: Work) {
        let mut q = lock(&self.shared.queue);
        match w {
            Work::Resolve { .. } => q.0.push_front(w),
            Work::Http { .. } => q.0.push_back(w),
        }
        drop(q);
        self.shared.cond.notify_one();
    }

    /// Drops the queued work and joins the workers until `deadline`.
    fn stop(&mut self, deadline: Instant) {
        {
            let mut q = lock(&self.shared.queue);
            q.0.clear();
            q.1 = true;
        }
        self.shared.cond.notify_all();
        for handle in std::mem::take(&mut self.workers) {
            while !handle.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }
}

fn work(shared: &PoolShared, tx: &mpsc::Sender<Done>) {
    let mut tokens = vec![BencodeToken::default(); ANNOUNCE_TOKENS];
    loop {
        let w = {
            let mut q = lock(&shared.queue);
            loop {
                if q.1 {
                    return;
                }
                if let Some(w) = q.0.pop_front() {
                    break w;
                }
                q = shared.cond.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
        };
        let done = match w {
            Work::Http { op, url, timeout } => {
                let at = Instant::now();
                if tx.send(Done::Started { op, at }).is_err() {
                    return;
                }
                Done::Http {
                    op,
                    answer: http_announce(&shared.agent, &url, timeout, &mut tokens),
                }
            }
            Work::Resolve { host, port } => {
                let addr = (host.as_str(), port)
                    .to_socket_addrs()
                    .map_err(|e| format!("cannot resolve {host}: {e}"))
                    .and_then(|mut a| a.next().ok_or_else(|| format!("cannot resolve {host}")));
                Done::Resolved { host, port, addr }
            }
        };
        if tx.send(done).is_err() {
            return;
        }
        (lock(&shared.notify))();
    }
}

fn http_announce(
    agent: &Http,
    url: &str,
    timeout: Duration,
    tokens: &mut [BencodeToken],
) -> Result<Answer, String> {
    let (status, body) = http_get(agent, url, timeout, Request::Announce, MAX_BODY)?;
    match http::parse_announce_response(&body, tokens) {
        Ok(AnnounceResponse::Failure(f)) => Err(f.to_string()),
        Ok(AnnounceResponse::Success(ok)) if (200..300).contains(&status) => Ok(Answer {
            peers: collect_peers(ok.peers()),
            interval: Some(ok.interval_secs),
            min_interval: ok.min_interval_secs,
            complete: ok.complete,
            incomplete: ok.incomplete,
            warning: ok.warning.map(|w| String::from_utf8_lossy(w).into_owned()),
            tracker_id: ok.tracker_id.map(<[u8]>::to_vec),
        }),
        Ok(AnnounceResponse::Success(_)) => Err(format!("HTTP status {status}")),
        Err(_) if !(200..300).contains(&status) => Err(format!("HTTP status {status}")),
        Err(e) => Err(e.to_string()),
    }
}

// ---------------------------------------------------------------- scrape

/// Scrapes `hashes` from the tracker whose announce URL is `url`, blocking the calling
/// thread (for the one-shot `btcore scrape`). HTTP trackers need a BEP 48 scrape URL
/// (the last path component starts with `announce`); an HTTP answer is filtered to
/// the hashes asked for, unless none was. UDP scrapes go through the core's BEP 15
/// client on a blocking socket, [`udp::CLIENT_MAX_SCRAPE`] hashes per request.
pub fn scrape(
    config: &TrackerConfig,
    url: &str,
    hashes: &[InfoHash],
) -> Result<Vec<(InfoHash, ScrapeStats)>, String> {
    match scheme(url) {
        Scheme::Http => http_scrape(&agent(config), url, hashes, config.timeout),
        Scheme::Udp => udp_scrape(config, url, hashes),
        Scheme::Other => Err(UNSUPPORTED_SCHEME.into()),
    }
}

fn udp_scrape(
    config: &TrackerConfig,
    url: &str,
    hashes: &[InfoHash],
) -> Result<Vec<(InfoHash, ScrapeStats)>, String> {
    let (host, port) = udp_authority(url)?;
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {host}"))?;
    let local = if addr.is_ipv6() {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    };
    let sock = std::net::UdpSocket::bind(local).map_err(|e| e.to_string())?;
    sock.connect(addr).map_err(|e| e.to_string())?;
    let epoch = Instant::now();
    let ms = |t: Instant| t.saturating_duration_since(epoch).as_millis() as u64;
    let mut rng = Rng::new(config.rng_seed);
    let mut client = UdpTrackerClient::new(addr.is_ipv6())
        .with_base_timeout_ms(config.udp_retry().as_millis() as u64);
    let mut out = Vec::with_capacity(hashes.len());
    let mut buf = vec![0u8; 65_536];
    let mut packet = [0u8; udp::CLIENT_MAX_PACKET];
    for chunk in hashes.chunks(udp::CLIENT_MAX_SCRAPE) {
        let deadline = Instant::now() + config.timeout;
        client
            .scrape(chunk, ms(Instant::now()))
            .map_err(|e| e.to_string())?;
        'op: loop {
            let now = Instant::now();
            if now >= deadline || client.handle_timeout(ms(now)).is_some() {
                return Err("timed out".into());
            }
            while let Some(n) = client
                .poll_transmit(ms(now), &mut packet, &mut || rng.next_u32())
                .map_err(|e| e.to_string())?
            {
                sock.send(packet.get(..n).unwrap_or_default())
                    .map_err(|e| e.to_string())?;
            }
            let wake = client
                .poll_timeout()
                .map_or(deadline, |t| epoch + Duration::from_millis(t))
                .min(deadline);
            let wait = wake
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            sock.set_read_timeout(Some(wait))
                .map_err(|e| e.to_string())?;
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e.to_string()),
            };
            let data = buf.get(..n).unwrap_or_default();
            match client.handle_datagram(ms(Instant::now()), data) {
                Ok(Some(UdpEvent::Scraped(s))) => {
                    out.extend(chunk.iter().copied().zip(s));
                    break 'op;
                }
                Ok(Some(UdpEvent::Failed(f))) => return Err(f.to_string()),
                Ok(Some(other)) => return Err(format!("unexpected answer {other:?}")),
                // Progress (a connection id), or a stray datagram.
                Ok(None) | Err(_) => {}
            }
        }
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scheme {
    Http,
    Udp,
    Other,
}

fn scheme(url: &str) -> Scheme {
    let lower = |p: &str| {
        url.get(..p.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(p))
    };
    if lower("http://") || lower("https://") {
        Scheme::Http
    } else if lower("udp://") {
        Scheme::Udp
    } else {
        Scheme::Other
    }
}

/// A `GET` with a timeout for the whole exchange (redirects included) and a capped
/// body: the status and the body. Redirects are followed here, each hop through
/// [`Http::check`].
fn http_get(
    http: &Http,
    url: &str,
    timeout: Duration,
    what: Request,
    limit: u64,
) -> Result<(u16, Vec<u8>), String> {
    let deadline = Instant::now() + timeout;
    let mut url = url.to_owned();
    let mut from_public = false;
    for hop in 0..=MAX_REDIRECTS {
        let uri: ureq::http::Uri = url.parse().map_err(|_| format!("malformed URL {url}"))?;
        let pin = http.check(&uri, what, from_public)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        let call = || {
            http.agent
                .get(&url)
                .config()
                .timeout_global(Some(left))
                .build()
                .call()
        };
        let resp = match &pin {
            Some(p) => PINNED.with(|cell| {
                *cell.borrow_mut() = Some(p.clone());
                let r = call();
                *cell.borrow_mut() = None;
                r
            }),
            None => call(),
        }
        .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok());
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            let Some(location) = location else {
                return Err(format!("HTTP status {status} without a location"));
            };
            if hop == MAX_REDIRECTS {
                break;
            }
            url = redirect_target(&uri, location)?;
            if let Some(p) = &pin {
                from_public |= p.public;
            }
            continue;
        }
        let body = resp
            .into_body()
            .into_with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        return Ok((status, body));
    }
    Err(format!("more than {MAX_REDIRECTS} redirects"))
}

/// Downloads the file at `url` (`http://`, and `https://` with the `https` feature),
/// such as a `.torrent` a user asked for by its URL: redirects followed (at most
/// [`MAX_REDIRECTS`]), the whole exchange within `timeout`, at most `max_bytes` read
/// (more is an error), the environment's proxy used as for trackers. A status other
/// than 200 is an error that names it. No SSRF guard: the address is the user's own
/// choice (a local indexer is the common case), not a tracker's.
pub fn fetch(url: &str, max_bytes: u64, timeout: Duration) -> Result<Vec<u8>, String> {
    let config = TrackerConfig {
        timeout,
        ssrf: SsrfGuard {
            enabled: false,
            ..SsrfGuard::default()
        },
        ..TrackerConfig::default()
    };
    let http = agent(&config);
    // The announce path rule is the guard's, which is off here.
    let (status, body) = http_get(&http, url, timeout, Request::Announce, max_bytes)?;
    if status != 200 {
        return Err(format!("HTTP status {status}"));
    }
    Ok(body)
}

/// What a request asks a tracker (its path must say so on a local address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    Announce,
    Scrape,
}

/// The HTTP client and its guard.
struct Http {
    agent: ureq::Agent,
    guard: SsrfGuard,
}

/// The checked addresses of one hop, for the resolver.
#[derive(Clone, Debug)]
pub(crate) struct Pin {
    host: String,
    port: u16,
    addrs: Vec<SocketAddr>,
    /// Whether one of them is public (a redirect from it may not go local).
    public: bool,
}

impl Pin {
    /// The addresses checked for `host` and `port`; `public` when one of them is.
    pub(crate) fn new(host: &str, port: u16, addrs: Vec<SocketAddr>, public: bool) -> Self {
        Self {
            host: host.to_owned(),
            port,
            addrs,
            public,
        }
    }

    /// Whether one of the addresses is public.
    pub(crate) fn is_public(&self) -> bool {
        self.public
    }

    /// Whether `uri` names the host and port this pin was checked for.
    fn matches(&self, uri: &ureq::http::Uri) -> bool {
        uri_host(uri).is_some_and(|h| h.eq_ignore_ascii_case(&self.host))
            && uri_port(uri) == Some(self.port)
    }
}

thread_local! {
    /// The addresses [`PinnedResolver`] and [`GuardedConnector`] use for the request
    /// this thread is making (set by [`http_get`] while the guard is on).
    static PINNED: std::cell::RefCell<Option<Pin>> = const { std::cell::RefCell::new(None) };
}

/// Runs `call` (one request of an agent built with [`pinned_agent`]) with `pin`'s
/// addresses as the only ones its host resolves to, and no other host reachable.
pub(crate) fn with_pin<R>(pin: &Pin, call: impl FnOnce() -> R) -> R {
    /// Puts back what was pinned before, also when `call` unwinds.
    struct Restore(Option<Pin>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let before = self.0.take();
            PINNED.with(|cell| *cell.borrow_mut() = before);
        }
    }
    let _restore = Restore(PINNED.with(|cell| cell.borrow_mut().replace(pin.clone())));
    call()
}

/// A `ureq` agent whose requests made in [`with_pin`] reach the pinned addresses only
/// (directly, or through an HTTP proxy's tunnel to one of them).
pub(crate) fn pinned_agent(config: ureq::config::Config) -> ureq::Agent {
    ureq::Agent::with_parts(
        config,
        GuardedConnector::default(),
        PinnedResolver::default(),
    )
}

/// The error of a connection the guard did not check.
fn unchecked(what: &str) -> ureq::Error {
    ureq::Error::Io(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("SSRF mitigation: {what} was not checked"),
    ))
}

/// Resolves the host of the request in flight on this thread to the addresses the
/// guard checked (see [`http_get`]). While a request is pinned, any other name is
/// refused (fails closed) except the configured proxy's own, which is looked up as
/// `ureq` would; with the guard off nothing is pinned and every name is looked up.
#[derive(Debug, Default)]
struct PinnedResolver(ureq::unversioned::resolver::DefaultResolver);

impl ureq::unversioned::resolver::Resolver for PinnedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let pinned = PINNED.with(|cell| {
            let pin = cell.borrow();
            let p = pin.as_ref()?;
            Some(p.matches(uri).then(|| p.addrs.clone()))
        });
        let addrs = match pinned {
            None => return self.0.resolve(uri, config, timeout),
            Some(Some(addrs)) => addrs,
            Some(None) if config.proxy().is_some_and(|p| p.uri() == uri) => {
                return self.0.resolve(uri, config, timeout)
            }
            Some(None) => return Err(unchecked(&format!("the host of {uri}"))),
        };
        let mut out = self.empty();
        for a in addrs.into_iter().take(16) {
            out.push(a);
        }
        Ok(out)
    }
}

/// `ureq`'s connector, except that through an HTTP proxy a pinned request (see
/// [`http_get`]) asks the proxy for a tunnel to one of the checked addresses
/// (`CONNECT 192.0.2.7:80`), never to the host name, which the proxy would resolve
/// again. TLS then runs through the tunnel with the URL's host name, as usual.
#[derive(Debug, Default)]
struct GuardedConnector {
    inner: ureq::unversioned::transport::DefaultConnector,
    #[cfg(feature = "https")]
    tls: ureq::unversioned::transport::RustlsConnector,
}

impl GuardedConnector {
    /// TLS through `tunnel` for an `https://` URL (the tunnel as it is for `http://`).
    #[cfg(feature = "https")]
    fn through(
        &self,
        details: &ureq::unversioned::transport::ConnectionDetails<'_>,
        tunnel: Box<dyn ureq::unversioned::transport::Transport>,
    ) -> Result<Option<Box<dyn ureq::unversioned::transport::Transport>>, ureq::Error> {
        use ureq::unversioned::transport::Connector;
        Ok(self
            .tls
            .connect(details, Some(tunnel))?
            .map(|t| Box::new(t) as Box<dyn ureq::unversioned::transport::Transport>))
    }

    /// Without the `https` feature the tunnel as it is: `ureq` refuses to send an
    /// `https://` request over it (`TlsRequired`).
    #[cfg(not(feature = "https"))]
    fn through(
        &self,
        _details: &ureq::unversioned::transport::ConnectionDetails<'_>,
        tunnel: Box<dyn ureq::unversioned::transport::Transport>,
    ) -> Result<Option<Box<dyn ureq::unversioned::transport::Transport>>, ureq::Error> {
        Ok(Some(tunnel))
    }
}

impl ureq::unversioned::transport::Connector<()> for GuardedConnector {
    type Out = Box<dyn ureq::unversioned::transport::Transport>;

    fn connect(
        &self,
        details: &ureq::unversioned::transport::ConnectionDetails<'_>,
        chained: Option<()>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        use ureq::unversioned::transport::ConnectionDetails;
        let proxy = details
            .config
            .proxy()
            .filter(|p| !p.is_no_proxy(details.uri));
        let pin = PINNED.with(|cell| cell.borrow().clone());
        let (Some(proxy), Some(pin)) = (proxy, pin) else {
            // No proxy: the resolver gave the checked addresses.
            return self.inner.connect(details, chained);
        };
        if !pin.matches(details.uri) {
            return Err(unchecked(&format!("the host of {}", details.uri)));
        }
        if !matches!(
            proxy.protocol(),
            ureq::ProxyProtocol::Http | ureq::ProxyProtocol::Https
        ) {
            return Err(ureq::Error::ConnectProxyFailed(
                "SSRF mitigation: trackers and web seeds are reached through HTTP proxies only"
                    .into(),
            ));
        }
        let mut last = None;
        for addr in &pin.addrs {
            let target: ureq::http::Uri = format!("http://{addr}/")
                .parse()
                .map_err(|_| ureq::Error::HostNotFound)?;
            let mut addrs = details.resolver.empty();
            addrs.push(*addr);
            let hop = ConnectionDetails {
                uri: &target,
                addrs,
                config: details.config,
                request_level: details.request_level,
                resolver: details.resolver,
                now: details.now,
                timeout: details.timeout,
                current_time: details.current_time.clone(),
                run_connector: details.run_connector.clone(),
                register_shutdown: details.register_shutdown.clone(),
            };
            match self.inner.connect(&hop, None) {
                Ok(Some(tunnel)) => return self.through(details, tunnel),
                Ok(None) => last = Some(ureq::Error::ConnectionFailed),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ureq::Error::HostNotFound))
    }
}

/// The host of an absolute URI, without the brackets of an IPv6 literal.
pub(crate) fn uri_host(uri: &ureq::http::Uri) -> Option<&str> {
    let h = uri.host()?;
    Some(
        h.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h),
    )
}

pub(crate) fn uri_port(uri: &ureq::http::Uri) -> Option<u16> {
    uri.port_u16().or(match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => Some(443),
        Some(s) if s.eq_ignore_ascii_case("http") => Some(80),
        _ => None,
    })
}

/// Whether `path` (as written in the URL, before any decoding) is a tracker's: exactly
/// `/announce` or `/announce.php`, `/scrape` or `/scrape.php` for a scrape (see the
/// module docs).
fn tracker_path(path: &str, what: Request) -> bool {
    let stem = match what {
        Request::Announce => "/announce",
        Request::Scrape => "/scrape",
    };
    path.strip_prefix(stem)
        .is_some_and(|rest| rest.is_empty() || rest == ".php")
}

/// The query parameters an announce or scrape URL may not carry already, as
/// libtorrent's `has_tracker_query_string` (compared without case, once unescaped).
const TRACKER_PARAMS: [&str; 9] = [
    "info_hash",
    "peer_id",
    "port",
    "uploaded",
    "downloaded",
    "left",
    "corrupt",
    "key",
    "event",
];

/// The first tracker parameter (see [`TRACKER_PARAMS`]) the query of a tracker's URL
/// holds already, if any.
fn preset_tracker_param(url: &str) -> Option<&'static str> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').find_map(|arg| {
        let name = arg.split('=').next().unwrap_or_default();
        let name: Vec<u8> = btcore_core::magnet::percent_decode(name.as_bytes())
            .map(|b| b.unwrap_or(0))
            .collect();
        TRACKER_PARAMS
            .into_iter()
            .find(|p| name.eq_ignore_ascii_case(p.as_bytes()))
    })
}

/// Refuses a tracker URL that already holds a tracker parameter (see the module docs).
fn check_query(guard: &SsrfGuard, url: &str) -> Result<(), String> {
    match preset_tracker_param(url) {
        Some(p) if guard.enabled => Err(format!(
            "SSRF mitigation: the tracker URL already holds the parameter {p}"
        )),
        _ => Ok(()),
    }
}

/// The address a URL's host (brackets removed) is written as, if it is one: an IPv6
/// literal, or an IPv4 address in any form `inet_aton` and the WHATWG URL parser read
/// (`127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1`, a trailing dot), so that no
/// resolver or proxy reads as an address what the guard took for a name. A host whose
/// last label is a number but which is no valid IPv4 address (`1.2.3.256`, `08.1`) is
/// an error, as the URL standard has it.
pub(crate) fn host_literal(host: &str) -> Result<Option<IpAddr>, String> {
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        return Ok(Some(IpAddr::V6(v6)));
    }
    ipv4_literal(host)
        .map(|v4| v4.map(IpAddr::V4))
        .map_err(|()| format!("malformed host {host}: it ends in a number but is no IPv4 address"))
}

/// One part of an IPv4 literal: decimal, octal with a leading `0`, hexadecimal with
/// `0x` (WHATWG: a bare `0x` is zero).
fn ipv4_number(part: &str) -> Option<u64> {
    let (digits, radix) = match part.get(..2) {
        Some("0x" | "0X") => (&part[2..], 16),
        _ if part.len() > 1 && part.starts_with('0') => (&part[1..], 8),
        _ => (part, 10),
    };
    if digits.is_empty() {
        return (radix == 16).then_some(0);
    }
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // Leading zeros cannot overflow; more than 32 significant bits is out of range.
    let digits = digits.trim_start_matches('0');
    if digits.len() > 32 {
        return Some(u64::MAX);
    }
    u64::from_str_radix(digits, radix).ok().or(Some(0))
}

/// An IPv4 address in `inet_aton`'s forms (see [`host_literal`]): `Ok(None)` for a
/// name, `Err` for a host that ends in a number but is no address.
fn ipv4_literal(host: &str) -> Result<Option<Ipv4Addr>, ()> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let last = host.rsplit('.').next().unwrap_or_default();
    let numeric = !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit()) || ipv4_number(last).is_some());
    if !numeric {
        return Ok(None);
    }
    let parts: Vec<u64> = host
        .split('.')
        .map(ipv4_number)
        .collect::<Option<_>>()
        .ok_or(())?;
    let Some((&last, head)) = parts.split_last() else {
        return Err(());
    };
    if parts.len() > 4 || head.iter().any(|&p| p > 255) {
        return Err(());
    }
    if last >= 1u64 << (8 * (5 - parts.len())) {
        return Err(());
    }
    let mut v = last;
    for (i, &p) in head.iter().enumerate() {
        v += p << (8 * (3 - i));
    }
    Ok(Some(Ipv4Addr::from(v as u32)))
}

impl Http {
    /// Checks one hop: `None` when the guard is off, else the addresses the request may
    /// go to, directly or through a proxy (see the module docs).
    fn check(
        &self,
        uri: &ureq::http::Uri,
        what: Request,
        from_public: bool,
    ) -> Result<Option<Pin>, String> {
        if !self.guard.enabled {
            return Ok(None);
        }
        let host = uri_host(uri).ok_or("URL without a host")?;
        let port = uri_port(uri).ok_or("URL without a port")?;
        let found: Vec<SocketAddr> = match host_literal(host)? {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => (host, port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .collect(),
        };
        let is_local = self.guard.is_local;
        let path_ok = tracker_path(uri.path(), what);
        let addrs: Vec<SocketAddr> = found
            .iter()
            .copied()
            .filter(|a| !is_local(a.ip()) || (path_ok && !from_public))
            .collect();
        if addrs.is_empty() {
            let why = if found.is_empty() {
                format!("cannot resolve {host}")
            } else if from_public {
                format!(
                    "SSRF mitigation: a redirect from a public tracker to {host}, a local address"
                )
            } else {
                format!(
                    "SSRF mitigation: {host} is a local address and {} is not a tracker's path",
                    uri.path()
                )
            };
            return Err(why);
        }
        if addrs.len() < found.len() {
            log::debug!("tracker {host}: local addresses left out (SSRF mitigation)");
        }
        let public = addrs.iter().any(|a| !is_local(a.ip()));
        Ok(Some(Pin {
            host: host.to_owned(),
            port,
            addrs,
            public,
        }))
    }
}

/// Where a redirect from `base` to `location` leads (absolute, scheme-relative,
/// absolute-path or relative reference), as an absolute `http(s)` URL.
pub(crate) fn redirect_target(base: &ureq::http::Uri, location: &str) -> Result<String, String> {
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map_or("", |a| a.as_str());
    let lower = location.get(..8).unwrap_or(location).to_ascii_lowercase();
    let target = if lower.starts_with("http://") || lower.starts_with("https://") {
        location.to_owned()
    } else if location.contains("://") {
        return Err(format!("redirect to an unsupported scheme: {location}"));
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if location.starts_with('?') {
        format!("{scheme}://{authority}{}{location}", base.path())
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{scheme}://{authority}{dir}{location}")
    };
    Ok(target)
}

fn http_scrape(
    agent: &Http,
    url: &str,
    hashes: &[InfoHash],
    timeout: Duration,
) -> Result<Vec<(InfoHash, ScrapeStats)>, String> {
    check_query(&agent.guard, url)?;
    let scrape =
        http::scrape_url(url.as_bytes()).ok_or("the tracker does not support scrape (BEP 48)")?;
    let mut full = String::with_capacity(url.len() + 64 * hashes.len());
    scrape.write(hashes, &mut full).map_err(|e| e.to_string())?;
    let (status, body) = http_get(agent, &full, timeout, Request::Scrape, MAX_BODY)?;
    // Every bencoded value takes at least two bytes.
    let mut tokens = vec![BencodeToken::default(); body.len() / 2 + 2];
    match http::parse_scrape_response(&body, &mut tokens) {
        Ok(ScrapeResponse::Failure(f)) => Err(f.to_string()),
        Ok(ScrapeResponse::Files(files)) if (200..300).contains(&status) => Ok(files
            .iter()
            .filter(|(h, _)| hashes.is_empty() || hashes.contains(h))
            .collect()),
        Ok(ScrapeResponse::Files(_)) => Err(format!("HTTP status {status}")),
        Err(_) if !(200..300).contains(&status) => Err(format!("HTTP status {status}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A UDP tracker's host and port from `udp://host:port/...`.
fn udp_authority(url: &str) -> Result<(&str, u16), String> {
    let rest = url.get("udp://".len()..).unwrap_or_default();
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = rest.get(..end).unwrap_or_default();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("malformed tracker URL")?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = port
        .ok_or("UDP tracker URL without a port")?
        .parse::<u16>()
        .map_err(|_| "malformed port in tracker URL".to_string())?;
    if host.is_empty() {
        return Err("malformed tracker URL".into());
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(scheme("HTTP://x/announce"), Scheme::Http);
        assert_eq!(scheme("https://x/announce"), Scheme::Http);
        assert_eq!(scheme("udp://x:1"), Scheme::Udp);
        assert_eq!(scheme("wss://x"), Scheme::Other);
        assert_eq!(scheme("ud"), Scheme::Other);
    }

    #[test]
    fn udp_authorities() {
        assert_eq!(
            udp_authority("udp://tracker.example:1337/announce"),
            Ok(("tracker.example", 1337))
        );
        assert_eq!(udp_authority("udp://[::1]:80"), Ok(("::1", 80)));
        assert_eq!(
            udp_authority("udp://1.2.3.4:6969?x=1"),
            Ok(("1.2.3.4", 6969))
        );
        assert!(udp_authority("udp://host/announce").is_err());
        assert!(udp_authority("udp://:80").is_err());
        assert!(udp_authority("udp://h:99999").is_err());
    }

    #[test]
    fn ip_literals_in_every_form() {
        let v4 = |s: &str| host_literal(s).map(|ip| ip.map(|ip| ip.to_string()));
        for (host, ip) in [
            ("127.0.0.1", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("127.0.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("0X7F000001", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("00000000000000000000177.0.0.1", "127.0.0.1"),
            ("127.0.0.1.", "127.0.0.1"),
            ("0x", "0.0.0.0"),
            ("0", "0.0.0.0"),
            ("192.168.257", "192.168.1.1"),
            ("4294967295", "255.255.255.255"),
            ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
        ] {
            assert_eq!(v4(host), Ok(Some(ip.to_string())), "{host}");
        }
        for name in ["tracker.example", "1e100.net", "0x1g", "localhost", "a.0xg"] {
            assert_eq!(v4(name), Ok(None), "{name}");
        }
        for bad in [
            "1.2.3.256",
            "4294967296",
            "08.0.0.1",
            "1.2.3.4.5",
            "1..2",
            "tracker.example.1",
            "0x100000000",
            "999999999999999999999999999999999999999999",
            ".1",
        ] {
            assert!(v4(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tracker_paths_and_queries() {
        for p in ["/announce", "/announce.php"] {
            assert!(tracker_path(p, Request::Announce), "{p}");
        }
        for p in ["/scrape", "/scrape.php"] {
            assert!(tracker_path(p, Request::Scrape), "{p}");
        }
        for p in [
            "/x/announce",
            "/announce/",
            "/announcex",
            "/scrape",
            "/announce.phpx",
            "",
        ] {
            assert!(!tracker_path(p, Request::Announce), "{p}");
        }
        assert_eq!(preset_tracker_param("http://t/announce"), None);
        assert_eq!(preset_tracker_param("http://t/announce?passkey=1&x"), None);
        assert_eq!(
            preset_tracker_param("http://t/announce?a#info_hash=1"),
            None
        );
        assert_eq!(
            preset_tracker_param("http://t/announce?a=1&Info_Hash=2"),
            Some("info_hash")
        );
        assert_eq!(preset_tracker_param("http://t/a?%70ort"), Some("port"));
    }

    /// The resolver gives the checked addresses for the host they were checked for, and
    /// refuses any other name while a request is pinned (no fallback to an unchecked
    /// lookup); the proxy's own name is looked up as usual.
    #[test]
    fn the_resolver_fails_closed_on_a_pin_mismatch() {
        use ureq::unversioned::resolver::Resolver;
        let checked: SocketAddr = "192.0.2.7:80".parse().expect("addr");
        let proxy = ureq::Proxy::new("http://127.0.0.1:3128").expect("proxy");
        let config = ureq::Agent::config_builder()
            .proxy(Some(proxy.clone()))
            .build();
        let timeout = ureq::unversioned::transport::NextTimeout {
            after: ureq::unversioned::transport::time::Duration::NotHappening,
            reason: ureq::Timeout::Resolve,
            per_read: None,
            per_write: None,
        };
        let resolver = PinnedResolver::default();
        let resolve = |uri: &str| {
            let uri: ureq::http::Uri = uri.parse().expect("uri");
            resolver
                .resolve(&uri, &config, timeout)
                .map(|a| a.iter().copied().collect::<Vec<_>>())
        };
        PINNED.with(|cell| {
            *cell.borrow_mut() = Some(Pin {
                host: "tracker.example".into(),
                port: 80,
                addrs: vec![checked],
                public: true,
            })
        });
        assert_eq!(
            resolve("http://TRACKER.example/announce").ok(),
            Some(vec![checked])
        );
        assert!(resolve("http://localhost/announce").is_err());
        assert!(resolve("http://tracker.example:8080/announce").is_err());
        assert!(resolve("http://127.0.0.1/announce").is_err());
        let via = resolve("http://127.0.0.1:3128").expect("the proxy's address");
        assert_eq!(via, ["127.0.0.1:3128".parse::<SocketAddr>().expect("addr")]);
        PINNED.with(|cell| *cell.borrow_mut() = None);
    }

    #[test]
    fn peers_are_deduplicated() {
        let a: SocketAddr = "1.2.3.4:5".parse().expect("addr");
        let z: SocketAddr = "1.2.3.4:0".parse().expect("addr");
        assert_eq!(collect_peers([a, z, a].into_iter()), vec![a]);
    }
}
