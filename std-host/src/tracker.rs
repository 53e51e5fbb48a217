//! The tracker client: HTTP(S) and UDP announces off the event loop.
//!
//! [`TrackerClient::spawn`] starts up to [`TrackerConfig::max_parallel`] worker threads
//! pulling [`AnnounceJob`]s from a shared queue. Each finished job sends one
//! [`AnnounceResult`] on the channel returned by `spawn`, then calls the `notify`
//! closure (the host uses it to wake its event loop). Jobs of one torrent (one
//! [`AnnounceJob::key`]) run one at a time, in the order they were queued; jobs of
//! different torrents run in parallel.
//!
//! # Tiers (BEP 12)
//!
//! The client keeps a [`TrackerList`] per key across announces, built from
//! [`AnnounceJob::tiers`] and shuffled at first sight (rebuilt when the tiers change).
//! An announce tries the trackers in order, from the first tier, until one answers; the
//! one that answered moves to the front of its tier, and every tracker that failed
//! before it gives an entry in [`AnnounceResult::errors`]. A `stopped` announce goes
//! only to the trackers that answered during the session (best effort, with a short
//! timeout), after which the key is forgotten.
//!
//! # Transports
//!
//! - `http://`, `https://`: a `GET` of the BEP 3 announce URL (compact, with the numwant
//!   of the job and a per-session random `key`) through `ureq` (rustls), following
//!   redirects, with the configured timeout and a body read capped at [`MAX_BODY`].
//!   Proxies are taken from the environment (`HTTP_PROXY`, `NO_PROXY`, ...), as `ureq`
//!   does.
//! - `udp://host:port`: BEP 15 on a blocking socket of the worker thread. Sends are
//!   repeated every [`UDP_RETRY`] (or a third of the timeout, when shorter) until the
//!   configured timeout, not BEP 15's `15 * 2^n` schedule, so that an announce always
//!   ends within the timeout. Connection ids are cached per tracker address for 60 s;
//!   a cached id that draws no answer (or an error) is dropped and a new connect made.
//! - anything else (`wss://`, ...): an "unsupported tracker scheme" error.
//!
//! # Shutdown
//!
//! [`TrackerClient::shutdown`] drops the queued jobs except `stopped` announces, lets
//! the workers send those within the given time, and joins them (a worker still blocked
//! past the deadline is detached). Queue a `stopped` announce for every running torrent
//! before calling it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use btcore_core::bencode::Token;
use btcore_core::ids::{InfoHash, PeerId};
use btcore_core::rng::Rng;
use btcore_core::tracker::http::{self, AnnounceResponse, ScrapeResponse};
use btcore_core::tracker::tiers::TrackerList;
use btcore_core::tracker::udp::{self, Action, UdpResponse};
use btcore_core::tracker::{AnnounceRequest, TrackerError};

pub use btcore_core::tracker::{Event, ScrapeStats};

/// The largest HTTP response body read (larger ones are an error).
pub const MAX_BODY: u64 = 2 << 20;
/// Bencode tokens available to parse an announce response (about 2,000 peers in the
/// dictionary form; compact responses need a few dozen).
pub const ANNOUNCE_TOKENS: usize = 16_384;
/// The longest a `stopped` announce may take, per tracker.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait before a UDP request is sent again.
pub const UDP_RETRY: Duration = Duration::from_secs(5);
/// How long a UDP connection id is used after it was received (BEP 15).
pub const UDP_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The error text for schemes other than `http`, `https` and `udp`.
pub const UNSUPPORTED_SCHEME: &str = "unsupported tracker scheme";

/// How the client behaves.
#[derive(Clone, Debug)]
pub struct TrackerConfig {
    /// The longest one announce to one tracker may take (default 15 s).
    pub timeout: Duration,
    /// The HTTP `User-Agent` (default `btcore/<version>`).
    pub user_agent: String,
    /// How many announces run at once (default 4; at least 1 is used).
    pub max_parallel: usize,
    /// Seeds the shuffles of the tiers, the announce `key` and the UDP transaction ids.
    pub rng_seed: u64,
}

impl Default for TrackerConfig {
    /// The defaults above, with a seed from the clock and the process id.
    fn default() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut mix = Rng::new(nanos ^ (u64::from(std::process::id()) << 32));
        Self {
            timeout: Duration::from_secs(15),
            user_agent: format!("btcore/{}", env!("CARGO_PKG_VERSION")),
            max_parallel: 4,
            rng_seed: mix.next_u64(),
        }
    }
}

/// One announce of one torrent to its trackers.
#[derive(Clone, Debug)]
pub struct AnnounceJob {
    /// The host's torrent id: results carry it, and the tracker list is kept per key.
    pub key: u32,
    /// The `announce-list` tiers (or `[[announce]]`).
    pub tiers: Vec<Vec<String>>,
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
}

/// What an announce came to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnnounceResult {
    /// The job's key.
    pub key: u32,
    /// The peers the tracker gave (port 0 entries and duplicates dropped).
    pub peers: Vec<SocketAddr>,
    /// Seconds until the next regular announce, when a tracker answered.
    pub interval: Option<u32>,
    /// The tracker's `min interval`.
    pub min_interval: Option<u32>,
    /// Seeders, per the tracker.
    pub complete: Option<u32>,
    /// Leechers, per the tracker.
    pub incomplete: Option<u32>,
    /// The URL of the tracker that answered; `None` when none did.
    pub tracker: Option<String>,
    /// Every tracker that failed, with why (a tracker's `failure reason` as it sent it).
    pub errors: Vec<(String, String)>,
    /// The `warning message` of the tracker that answered.
    pub warning: Option<String>,
}

impl AnnounceResult {
    fn new(key: u32) -> Self {
        Self {
            key,
            ..Self::default()
        }
    }
}

/// The tracker worker pool (see the module docs).
pub struct TrackerClient {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl fmt::Debug for TrackerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackerClient")
            .field("config", &self.shared.config)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

/// What the workers and the client share.
struct Shared {
    config: TrackerConfig,
    /// The per-session `key` sent to trackers.
    session_key: u32,
    agent: ureq::Agent,
    state: Mutex<State>,
    cond: Condvar,
    udp_conns: Mutex<HashMap<SocketAddr, (u64, Instant)>>,
    notify: Mutex<Box<dyn Fn() + Send>>,
}

struct State {
    queue: VecDeque<AnnounceJob>,
    /// Keys with a job running.
    busy: HashSet<u32>,
    torrents: HashMap<u32, Torrent>,
    rng: Rng,
    /// Set by shutdown: the deadline after which workers give up.
    shutdown: Option<Instant>,
}

/// What is remembered of one torrent between announces.
struct Torrent {
    /// The tiers the list was built from.
    source: Vec<Vec<String>>,
    list: TrackerList<String>,
    /// Trackers that answered during the session (they get the `stopped`).
    answered: Vec<String>,
    /// `tracker id`s given by HTTP trackers, sent back in later announces.
    tracker_ids: HashMap<String, Vec<u8>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TrackerClient {
    /// Starts the workers. Results arrive on the returned receiver; `notify` is called
    /// after each one is sent.
    pub fn spawn(
        config: TrackerConfig,
        notify: Box<dyn Fn() + Send>,
    ) -> (TrackerClient, mpsc::Receiver<AnnounceResult>) {
        let mut rng = Rng::new(config.rng_seed);
        let session_key = rng.next_u32();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .max_redirects(5)
            .user_agent(config.user_agent.as_str())
            .http_status_as_error(false)
            .build()
            .into();
        let workers = config.max_parallel.max(1);
        let seeds: Vec<u64> = (0..workers).map(|_| rng.next_u64()).collect();
        let shared = Arc::new(Shared {
            config,
            session_key,
            agent,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                busy: HashSet::new(),
                torrents: HashMap::new(),
                rng,
                shutdown: None,
            }),
            cond: Condvar::new(),
            udp_conns: Mutex::new(HashMap::new()),
            notify: Mutex::new(notify),
        });
        let (tx, rx) = mpsc::channel();
        let workers = seeds
            .into_iter()
            .enumerate()
            .filter_map(|(i, seed)| {
                let shared = Arc::clone(&shared);
                let tx = tx.clone();
                thread::Builder::new()
                    .name(format!("btcore-tracker-{i}"))
                    .spawn(move || Worker::new(shared, seed).run(&tx))
                    .ok()
            })
            .collect();
        (TrackerClient { shared, workers }, rx)
    }

    /// Queues an announce; its result comes on the channel.
    pub fn announce(&self, job: AnnounceJob) {
        lock(&self.shared.state).queue.push_back(job);
        self.shared.cond.notify_all();
    }

    /// Scrapes `hashes` from the tracker whose announce URL is `url`, blocking the
    /// calling thread (for `btcore scrape`). HTTP trackers need a BEP 48 scrape URL
    /// (the last path component starts with `announce`); an HTTP answer is filtered to
    /// the hashes asked for, unless none was.
    pub fn scrape(
        &self,
        url: &str,
        hashes: Vec<InfoHash>,
    ) -> Result<Vec<(InfoHash, ScrapeStats)>, String> {
        let timeout = self.shared.config.timeout;
        match scheme(url) {
            Scheme::Http => http_scrape(&self.shared.agent, url, &hashes, timeout),
            Scheme::Udp => {
                let seed = lock(&self.shared.state).rng.next_u64();
                let mut udp = UdpCtx {
                    shared: &self.shared,
                    rng: Rng::new(seed),
                    buf: vec![0; 65_536],
                };
                let mut out = Vec::with_capacity(hashes.len());
                for chunk in hashes.chunks(udp::MAX_SCRAPE_HASHES) {
                    out.extend(udp.scrape(url, chunk, timeout)?);
                }
                Ok(out)
            }
            Scheme::Other => Err(UNSUPPORTED_SCHEME.into()),
        }
    }

    /// Drops the queued jobs except `stopped` announces, gives the workers until
    /// `timeout` from now to send those, and joins them (one still busy at the
    /// deadline is left to finish on its own).
    pub fn shutdown(mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        {
            let mut st = lock(&self.shared.state);
            st.shutdown = Some(deadline);
            st.queue.retain(|j| j.event == Some(Event::Stopped));
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

impl Drop for TrackerClient {
    /// Without [`TrackerClient::shutdown`], the workers stop at once (queued jobs are
    /// dropped; running ones finish in the background).
    fn drop(&mut self) {
        if self.workers.is_empty() {
            return;
        }
        {
            let mut st = lock(&self.shared.state);
            if st.shutdown.is_none() {
                st.shutdown = Some(Instant::now());
            }
            st.queue.clear();
        }
        self.shared.cond.notify_all();
    }
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

struct Worker {
    shared: Arc<Shared>,
    tokens: Vec<Token>,
    udp_rng: Rng,
    udp_buf: Vec<u8>,
}

impl Worker {
    fn new(shared: Arc<Shared>, seed: u64) -> Self {
        Self {
            shared,
            tokens: vec![Token::default(); ANNOUNCE_TOKENS],
            udp_rng: Rng::new(seed),
            udp_buf: vec![0; 65_536],
        }
    }

    fn run(mut self, tx: &mpsc::Sender<AnnounceResult>) {
        while let Some((job, torrent)) = self.next_job() {
            let (result, torrent) = if job.event == Some(Event::Stopped) {
                (self.stop(&job, torrent.as_ref()), None)
            } else {
                let mut torrent = torrent;
                let result = match torrent.as_mut() {
                    Some(t) => self.announce(&job, t),
                    None => AnnounceResult::new(job.key),
                };
                (result, torrent)
            };
            {
                let mut st = lock(&self.shared.state);
                st.busy.remove(&job.key);
                if let Some(t) = torrent {
                    st.torrents.insert(job.key, t);
                }
            }
            self.shared.cond.notify_all();
            if tx.send(result).is_ok() {
                (lock(&self.shared.notify))();
            }
        }
    }

    /// The next job whose key is not busy, with its torrent's state taken out of the
    /// map (for a job that is not `stopped`, built or rebuilt from the job's tiers).
    /// `None` when the worker is to exit.
    fn next_job(&self) -> Option<(AnnounceJob, Option<Torrent>)> {
        let mut st = lock(&self.shared.state);
        loop {
            if let Some(deadline) = st.shutdown {
                if st.queue.is_empty() || Instant::now() >= deadline {
                    return None;
                }
            }
            let st_ref = &mut *st;
            if let Some(i) = st_ref
                .queue
                .iter()
                .position(|j| !st_ref.busy.contains(&j.key))
            {
                let job = st_ref.queue.remove(i)?;
                st_ref.busy.insert(job.key);
                let mut torrent = st_ref.torrents.remove(&job.key);
                if job.event != Some(Event::Stopped)
                    && torrent.as_ref().is_none_or(|t| t.source != job.tiers)
                {
                    let rng = &mut st_ref.rng;
                    let list = TrackerList::new(job.tiers.iter().cloned(), &mut |n| {
                        rng.below(n as u64) as usize
                    });
                    let (answered, tracker_ids) = torrent
                        .map(|t| (t.answered, t.tracker_ids))
                        .unwrap_or_default();
                    torrent = Some(Torrent {
                        source: job.tiers.clone(),
                        list,
                        answered,
                        tracker_ids,
                    });
                }
                return Some((job, torrent));
            }
            st = match st.shutdown {
                Some(deadline) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    self.shared
                        .cond
                        .wait_timeout(st, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .shared
                    .cond
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    /// The shutdown deadline, if shutting down.
    fn shutdown_deadline(&self) -> Option<Instant> {
        lock(&self.shared.state).shutdown
    }

    fn request<'a>(&self, job: &AnnounceJob, tracker_id: Option<&'a [u8]>) -> AnnounceRequest<'a> {
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
            key: Some(self.shared.session_key),
            tracker_id,
        }
    }

    /// A regular, `started` or `completed` announce: through the tiers until a
    /// tracker answers.
    fn announce(&mut self, job: &AnnounceJob, t: &mut Torrent) -> AnnounceResult {
        let mut res = AnnounceResult::new(job.key);
        t.list.restart();
        let timeout = self.shared.config.timeout;
        while let Some((pos, url)) = t.list.current().map(|(p, u)| (p, u.clone())) {
            if self.shutdown_deadline().is_some() {
                break;
            }
            let req = self.request(job, t.tracker_ids.get(&url).map(Vec::as_slice));
            match self.announce_one(&url, &req, timeout) {
                Ok(answer) => {
                    t.list.on_success(pos.tier, pos.index);
                    if !t.answered.contains(&url) {
                        t.answered.push(url.clone());
                    }
                    if let Some(id) = answer.tracker_id {
                        t.tracker_ids.insert(url.clone(), id);
                    }
                    res.peers = answer.peers;
                    res.interval = answer.interval;
                    res.min_interval = answer.min_interval;
                    res.complete = answer.complete;
                    res.incomplete = answer.incomplete;
                    res.warning = answer.warning;
                    res.tracker = Some(url);
                    break;
                }
                Err(msg) => {
                    res.errors.push((url, msg));
                    if t.list.on_failure(pos.tier, pos.index).is_none() {
                        break;
                    }
                }
            }
        }
        res
    }

    /// A `stopped` announce to every tracker that answered during the session.
    fn stop(&mut self, job: &AnnounceJob, t: Option<&Torrent>) -> AnnounceResult {
        let mut res = AnnounceResult::new(job.key);
        let Some(t) = t else {
            return res;
        };
        for url in &t.answered {
            let mut timeout = STOP_TIMEOUT.min(self.shared.config.timeout);
            if let Some(deadline) = self.shutdown_deadline() {
                timeout = timeout.min(deadline.saturating_duration_since(Instant::now()));
            }
            if timeout.is_zero() {
                res.errors
                    .push((url.clone(), "shutdown deadline passed".into()));
                continue;
            }
            let req = self.request(job, t.tracker_ids.get(url).map(Vec::as_slice));
            match self.announce_one(url, &req, timeout) {
                Ok(_) => {
                    if res.tracker.is_none() {
                        res.tracker = Some(url.clone());
                    }
                }
                Err(msg) => res.errors.push((url.clone(), msg)),
            }
        }
        res
    }

    fn announce_one(
        &mut self,
        url: &str,
        req: &AnnounceRequest<'_>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        match scheme(url) {
            Scheme::Http => self.http_announce(url, req, timeout),
            Scheme::Udp => {
                let mut udp = UdpCtx {
                    shared: &self.shared,
                    rng: self.udp_rng.clone(),
                    buf: std::mem::take(&mut self.udp_buf),
                };
                let r = udp.announce(url, req, timeout);
                self.udp_rng = udp.rng;
                self.udp_buf = udp.buf;
                r
            }
            Scheme::Other => Err(UNSUPPORTED_SCHEME.into()),
        }
    }

    fn http_announce(
        &mut self,
        url: &str,
        req: &AnnounceRequest<'_>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let mut full = String::with_capacity(url.len() + 256);
        http::write_announce_url(url.as_bytes(), req, &mut full).map_err(|e| e.to_string())?;
        let (status, body) = http_get(&self.shared.agent, &full, timeout)?;
        match http::parse_announce_response(&body, &mut self.tokens) {
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
}

/// A `GET` with a per-call timeout and a capped body: the status and the body.
fn http_get(agent: &ureq::Agent, url: &str, timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    let resp = agent
        .get(url)
        .config()
        .timeout_global(Some(timeout))
        .build()
        .call()
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .into_with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    Ok((status, body))
}

fn http_scrape(
    agent: &ureq::Agent,
    url: &str,
    hashes: &[InfoHash],
    timeout: Duration,
) -> Result<Vec<(InfoHash, ScrapeStats)>, String> {
    let scrape =
        http::scrape_url(url.as_bytes()).ok_or("the tracker does not support scrape (BEP 48)")?;
    let mut full = String::with_capacity(url.len() + 64 * hashes.len());
    scrape.write(hashes, &mut full).map_err(|e| e.to_string())?;
    let (status, body) = http_get(agent, &full, timeout)?;
    // Every bencoded value takes at least two bytes.
    let mut tokens = vec![Token::default(); body.len() / 2 + 2];
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

/// Why a UDP exchange failed.
enum UdpFail {
    TimedOut,
    Io(io::Error),
    Codec(TrackerError),
    /// An error packet: the tracker's text.
    Tracker(String),
}

impl From<UdpFail> for String {
    fn from(f: UdpFail) -> String {
        match f {
            UdpFail::TimedOut => "timed out".into(),
            UdpFail::Io(e) => e.to_string(),
            UdpFail::Codec(e) => e.to_string(),
            UdpFail::Tracker(s) => s,
        }
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

/// A UDP exchange context: the shared connection-id cache, transaction ids, a buffer.
struct UdpCtx<'s> {
    shared: &'s Shared,
    rng: Rng,
    buf: Vec<u8>,
}

/// Writes a request with the given connection id and transaction id; returns its length.
type Encoder<'a> = &'a dyn Fn(u64, u32, &mut [u8]) -> Result<usize, TrackerError>;

/// A socket connected to a tracker.
struct Link {
    sock: UdpSocket,
    addr: SocketAddr,
    /// Whether the tracker is reached over IPv6 (18-byte peer entries).
    ipv6: bool,
}

/// A socket connected to the tracker of `url`.
fn udp_socket(url: &str) -> Result<Link, String> {
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
    let sock = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    sock.connect(addr).map_err(|e| e.to_string())?;
    Ok(Link {
        sock,
        addr,
        ipv6: addr.is_ipv6(),
    })
}

impl UdpCtx<'_> {
    fn cached_connection(&self, addr: SocketAddr) -> Option<(u64, Instant)> {
        let mut cache = lock(&self.shared.udp_conns);
        let now = Instant::now();
        cache.retain(|_, (_, at)| now.duration_since(*at) < UDP_CONNECTION_LIFETIME);
        cache.get(&addr).copied()
    }

    fn forget_connection(&self, addr: SocketAddr) {
        lock(&self.shared.udp_conns).remove(&addr);
    }

    /// Sends `packet` and waits for the answer with transaction `txid` and action
    /// `expect` (or an error packet) until `until`, sending again every retry period.
    /// Returns the answer's length in `self.buf`.
    fn transact(
        &mut self,
        link: &Link,
        packet: &[u8],
        txid: u32,
        expect: Action,
        until: Instant,
        retry: Duration,
    ) -> Result<usize, UdpFail> {
        loop {
            let now = Instant::now();
            if now >= until {
                return Err(UdpFail::TimedOut);
            }
            link.sock.send(packet).map_err(UdpFail::Io)?;
            let resend = (now + retry).min(until);
            loop {
                let wait = resend.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    break;
                }
                link.sock
                    .set_read_timeout(Some(wait))
                    .map_err(UdpFail::Io)?;
                match link.sock.recv(&mut self.buf) {
                    Ok(n) => {
                        let data = self.buf.get(..n).unwrap_or_default();
                        if udp::parse_response(data, txid, expect, link.ipv6).is_ok() {
                            return Ok(n);
                        }
                        // Stale, spoofed or malformed: keep waiting.
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(UdpFail::Io(e)),
                }
            }
        }
    }

    /// A connect: the new connection id.
    fn connect(&mut self, link: &Link, deadline: Instant, retry: Duration) -> Result<u64, UdpFail> {
        let txid = self.rng.next_u32();
        let mut pkt = [0u8; udp::CONNECT_LEN];
        let n = udp::encode_connect(txid, &mut pkt).map_err(UdpFail::Codec)?;
        let len = self.transact(
            link,
            pkt.get(..n).unwrap_or_default(),
            txid,
            Action::Connect,
            deadline,
            retry,
        )?;
        let data = self.buf.get(..len).unwrap_or_default();
        match udp::parse_response(data, txid, Action::Connect, link.ipv6) {
            Ok(UdpResponse::Connect { connection_id }) => Ok(connection_id),
            Ok(UdpResponse::Error(f)) => Err(UdpFail::Tracker(f.to_string())),
            Ok(_) => Err(UdpFail::Codec(TrackerError::WrongAction)),
            Err(e) => Err(UdpFail::Codec(e)),
        }
    }

    /// Connect (or a cached connection id) then the request `encode` writes; returns
    /// the answer's length in `self.buf` and its transaction id. A cached id that
    /// draws no answer within one retry period, or an error packet, is dropped and the
    /// exchange starts over with a connect.
    fn exchange(
        &mut self,
        url: &str,
        timeout: Duration,
        expect: Action,
        encode: Encoder<'_>,
    ) -> Result<(usize, u32, bool), String> {
        let deadline = Instant::now() + timeout;
        let retry = UDP_RETRY.min(timeout / 3).max(Duration::from_millis(200));
        let link = udp_socket(url)?;
        let (addr, ipv6) = (link.addr, link.ipv6);
        let mut pkt = vec![0u8; 16 + 20 * udp::MAX_SCRAPE_HASHES];
        let mut may_use_cache = true;
        loop {
            let cached = if may_use_cache {
                self.cached_connection(addr)
            } else {
                None
            };
            let (id, since, fresh) = match cached {
                Some((id, at)) => (id, at, false),
                None => {
                    let id = self.connect(&link, deadline, retry).map_err(|e| {
                        if matches!(e, UdpFail::TimedOut) {
                            "timed out (connect)".to_string()
                        } else {
                            String::from(e)
                        }
                    })?;
                    let at = Instant::now();
                    lock(&self.shared.udp_conns).insert(addr, (id, at));
                    (id, at, true)
                }
            };
            let txid = self.rng.next_u32();
            let n = encode(id, txid, &mut pkt).map_err(|e| e.to_string())?;
            let mut until = deadline.min(since + UDP_CONNECTION_LIFETIME);
            if !fresh {
                until = until.min(Instant::now() + retry);
            }
            let sent = pkt.get(..n).unwrap_or_default();
            match self.transact(&link, sent, txid, expect, until, retry) {
                Ok(len) => {
                    let data = self.buf.get(..len).unwrap_or_default();
                    let is_error = matches!(
                        udp::parse_response(data, txid, expect, ipv6),
                        Ok(UdpResponse::Error(_))
                    );
                    if is_error {
                        self.forget_connection(addr);
                        if !fresh && Instant::now() < deadline {
                            may_use_cache = false;
                            continue;
                        }
                    }
                    return Ok((len, txid, ipv6));
                }
                Err(UdpFail::TimedOut) => {
                    self.forget_connection(addr);
                    if Instant::now() >= deadline {
                        return Err("timed out".into());
                    }
                    may_use_cache = false;
                }
                Err(e) => {
                    self.forget_connection(addr);
                    return Err(e.into());
                }
            }
        }
    }

    fn announce(
        &mut self,
        url: &str,
        req: &AnnounceRequest<'_>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let encode = |id: u64, txid: u32, out: &mut [u8]| udp::encode_announce(id, txid, req, out);
        let (len, txid, ipv6) = self.exchange(url, timeout, Action::Announce, &encode)?;
        let data = self.buf.get(..len).unwrap_or_default();
        match udp::parse_response(data, txid, Action::Announce, ipv6) {
            Ok(UdpResponse::Announce(a)) => Ok(Answer {
                peers: collect_peers(a.peers),
                interval: Some(a.interval_secs),
                complete: Some(a.seeders),
                incomplete: Some(a.leechers),
                ..Answer::default()
            }),
            Ok(UdpResponse::Error(f)) => Err(f.to_string()),
            Ok(_) => Err(TrackerError::WrongAction.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn scrape(
        &mut self,
        url: &str,
        hashes: &[InfoHash],
        timeout: Duration,
    ) -> Result<Vec<(InfoHash, ScrapeStats)>, String> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let encode = |id: u64, txid: u32, out: &mut [u8]| udp::encode_scrape(id, txid, hashes, out);
        let (len, txid, ipv6) = self.exchange(url, timeout, Action::Scrape, &encode)?;
        let data = self.buf.get(..len).unwrap_or_default();
        match udp::parse_response(data, txid, Action::Scrape, ipv6) {
            Ok(UdpResponse::Scrape(s)) => Ok(hashes.iter().copied().zip(s).collect()),
            Ok(UdpResponse::Error(f)) => Err(f.to_string()),
            Ok(_) => Err(TrackerError::WrongAction.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
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
    fn peers_are_deduplicated() {
        let a: SocketAddr = "1.2.3.4:5".parse().expect("addr");
        let z: SocketAddr = "1.2.3.4:0".parse().expect("addr");
        assert_eq!(collect_peers([a, z, a].into_iter()), vec![a]);
    }
}
