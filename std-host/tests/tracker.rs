//! The tracker client against stub trackers (HTTP and UDP) on 127.0.0.1, and against
//! a real `opentracker` when one is installed. Each test drives the client with its own
//! `mio::Poll`, as the host's event loop does. Every wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use btcore_core::ids::{InfoHash, PeerId};
use btcore_core::tracker::Event;
use btcore_host::tracker::{
    self, AnnounceJob, AnnounceResult, ScrapeStats, TrackerClient, TrackerConfig,
    UNSUPPORTED_SCHEME,
};
use btcore_tests::{free_port, torrent_with_tiers};
use mio::{Events, Poll, Token, Waker};

/// How long a stub lives at most.
const STUB_LIFETIME: Duration = Duration::from_secs(60);
/// The longest a test waits for one result.
const RESULT_WAIT: Duration = Duration::from_secs(20);

const HASH: [u8; 20] = [
    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf1, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x12,
    0x34, 0x56, 0x78, 0x9a,
];
const PEER: &[u8; 20] = b"-BT0001-ab c~.\x00\xff1234";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Byte-wise percent-encoding, unreserved characters kept, `%XX` uppercase.
fn pct(bytes: &[u8]) -> String {
    let mut s = String::new();
    let _ = btcore_core::tracker::percent_encode(bytes, &mut s);
    s
}

fn compact(peers: &[([u8; 4], u16)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ip, port) in peers {
        out.extend_from_slice(ip);
        out.extend_from_slice(&port.to_be_bytes());
    }
    out
}

fn two_peers() -> Vec<SocketAddr> {
    vec![
        "127.0.0.1:6881".parse().expect("addr"),
        "127.0.0.2:51413".parse().expect("addr"),
    ]
}

fn compact_two_peers() -> Vec<u8> {
    compact(&[([127, 0, 0, 1], 6881), ([127, 0, 0, 2], 51413)])
}

fn ok_body() -> Vec<u8> {
    let peers = compact_two_peers();
    let mut body = format!(
        "d8:completei5e10:incompletei3e8:intervali1800e12:min intervali60e5:peers{}:",
        peers.len()
    )
    .into_bytes();
    body.extend_from_slice(&peers);
    body.push(b'e');
    body
}

fn failure_body(text: &str) -> Vec<u8> {
    format!("d14:failure reason{}:{text}e", text.len()).into_bytes()
}

// ---------------------------------------------------------------- HTTP stub

type Reply = dyn Fn(&str) -> Vec<u8> + Send + Sync;

/// An HTTP tracker on 127.0.0.1 answering every request with `reply(target)` (a body
/// sent with status 200, or a whole response when it starts with `HTTP/1.1 `).
struct HttpStub {
    url: String,
    hits: Arc<AtomicUsize>,
    targets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for HttpStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl HttpStub {
    fn new(reply: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> Self {
        Self::on([127, 0, 0, 1], reply)
    }

    /// The stub on another loopback address.
    fn on(ip: [u8; 4], reply: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind((std::net::Ipv4Addr::from(ip), 0)).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let targets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reply: Arc<Reply> = Arc::new(reply);
        {
            let (hits, targets, stop) = (hits.clone(), targets.clone(), stop.clone());
            thread::spawn(move || {
                let end = Instant::now() + STUB_LIFETIME;
                while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            // Recorded before the answer is written, so that the test
                            // sees it as soon as the client has the answer.
                            let _ = serve_http(stream, &*reply, &|target| {
                                lock(&targets).push(target.to_string());
                                hits.fetch_add(1, Ordering::SeqCst);
                            });
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        let [a, b, c, d] = ip;
        Self {
            url: format!("http://{a}.{b}.{c}.{d}:{port}/announce"),
            hits,
            targets,
            stop,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn last_target(&self) -> String {
        lock(&self.targets).last().cloned().unwrap_or_default()
    }
}

/// Reads one request, hands its target to `record`, answers it.
fn serve_http(mut stream: TcpStream, reply: &Reply, record: &dyn Fn(&str)) -> Option<()> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 65_536 {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(buf.get(..n)?);
    }
    let text = String::from_utf8_lossy(&req);
    let line = text.lines().next()?;
    let mut parts = line.split(' ');
    let (method, target) = (parts.next()?, parts.next()?.to_string());
    if method != "GET" {
        return None;
    }
    record(&target);
    let body = reply(&target);
    if body.starts_with(b"HTTP/1.1 ") {
        stream.write_all(&body).ok()?;
        return stream.flush().ok();
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(&body).ok()?;
    stream.flush().ok()
}

// ---------------------------------------------------------------- UDP stub

const PROTOCOL_ID: u64 = 0x0417_2710_1980;
const CONN_ID: u64 = 0x1122_3344_5566_7788;

#[derive(Clone, Copy)]
enum UdpMode {
    Peers,
    Error(&'static str),
}

/// A BEP 15 tracker on 127.0.0.1.
struct UdpStub {
    url: String,
    connects: Arc<AtomicUsize>,
    announces: Arc<AtomicUsize>,
    last_announce: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for UdpStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn be_u32(d: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&d[at..at + 4]);
    u32::from_be_bytes(b)
}

fn be_u64(d: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[at..at + 8]);
    u64::from_be_bytes(b)
}

impl UdpStub {
    fn new(mode: UdpMode) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let port = sock.local_addr().expect("addr").port();
        let connects = Arc::new(AtomicUsize::new(0));
        let announces = Arc::new(AtomicUsize::new(0));
        let last_announce = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (connects, announces, last, stop) = (
                connects.clone(),
                announces.clone(),
                last_announce.clone(),
                stop.clone(),
            );
            thread::spawn(move || {
                let end = Instant::now() + STUB_LIFETIME;
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let d = &buf[..n];
                    if n < 16 {
                        continue;
                    }
                    let (first, action, txid) = (be_u64(d, 0), be_u32(d, 8), be_u32(d, 12));
                    let mut out = Vec::new();
                    match action {
                        0 if n == 16 && first == PROTOCOL_ID => {
                            connects.fetch_add(1, Ordering::SeqCst);
                            out.extend_from_slice(&0u32.to_be_bytes());
                            out.extend_from_slice(&txid.to_be_bytes());
                            out.extend_from_slice(&CONN_ID.to_be_bytes());
                        }
                        1 if n == 98 && first == CONN_ID => {
                            announces.fetch_add(1, Ordering::SeqCst);
                            *lock(&last) = d.to_vec();
                            match mode {
                                UdpMode::Peers => {
                                    out.extend_from_slice(&1u32.to_be_bytes());
                                    out.extend_from_slice(&txid.to_be_bytes());
                                    out.extend_from_slice(&900u32.to_be_bytes());
                                    out.extend_from_slice(&3u32.to_be_bytes()); // leechers
                                    out.extend_from_slice(&5u32.to_be_bytes()); // seeders
                                    out.extend_from_slice(&compact_two_peers());
                                }
                                UdpMode::Error(text) => {
                                    out.extend_from_slice(&3u32.to_be_bytes());
                                    out.extend_from_slice(&txid.to_be_bytes());
                                    out.extend_from_slice(text.as_bytes());
                                }
                            }
                        }
                        2 if (n - 16) % 20 == 0 && first == CONN_ID => {
                            out.extend_from_slice(&2u32.to_be_bytes());
                            out.extend_from_slice(&txid.to_be_bytes());
                            for i in 0..(n - 16) / 20 {
                                let i = i as u32;
                                for v in [10 + i, 100 + i, 20 + i] {
                                    out.extend_from_slice(&v.to_be_bytes());
                                }
                            }
                        }
                        _ => continue,
                    }
                    let _ = sock.send_to(&out, from);
                }
            });
        }
        Self {
            url: format!("udp://127.0.0.1:{port}/announce"),
            connects,
            announces,
            last_announce,
            stop,
        }
    }
}

// ---------------------------------------------------------------- helpers

struct Client {
    client: TrackerClient,
    poll: Poll,
    events: Events,
    config: TrackerConfig,
    notified: Arc<AtomicUsize>,
}

const WAKE: Token = Token(0);
const UDP_TOKENS: [Token; 2] = [Token(1), Token(2)];

fn client(timeout: Duration) -> Client {
    client_with(timeout, 2)
}

fn client_with(timeout: Duration, max_parallel: usize) -> Client {
    client_config(TrackerConfig {
        timeout,
        max_parallel,
        rng_seed: 7,
        ..TrackerConfig::default()
    })
}

fn client_config(config: TrackerConfig) -> Client {
    let notified = Arc::new(AtomicUsize::new(0));
    let poll = Poll::new().expect("poll");
    let waker = Waker::new(poll.registry(), WAKE).expect("waker");
    let n = notified.clone();
    let client = TrackerClient::new(
        config.clone(),
        poll.registry(),
        UDP_TOKENS,
        Box::new(move || {
            n.fetch_add(1, Ordering::SeqCst);
            let _ = waker.wake();
        }),
    )
    .expect("tracker client");
    Client {
        client,
        poll,
        events: Events::with_capacity(16),
        config,
        notified,
    }
}

impl Client {
    fn announce(&mut self, key: u32, url: &str, port: u16, event: Option<Event>) {
        self.submit(job(key, url, PEER, port, event));
    }

    fn submit(&mut self, job: AnnounceJob) {
        self.client.announce(Instant::now(), job);
    }

    /// One turn of a loop that has nothing but the tracker client: sleeps until its
    /// `poll_timeout` (at most `max`), a datagram or a worker's wake-up.
    fn turn(&mut self, max: Duration) {
        let start = Instant::now();
        let wait = self
            .client
            .poll_timeout()
            .map_or(max, |t| t.saturating_duration_since(start))
            .min(max);
        self.poll.poll(&mut self.events, Some(wait)).expect("poll");
        if self.events.iter().any(|e| UDP_TOKENS.contains(&e.token())) {
            self.client.on_udp_readable(Instant::now());
        }
        self.client.handle_timeout(Instant::now());
    }

    /// Runs the loop until a result comes.
    fn result(&mut self) -> AnnounceResult {
        let end = Instant::now() + RESULT_WAIT;
        loop {
            if let Some(r) = self.client.poll_result() {
                return r;
            }
            assert!(Instant::now() < end, "no announce result");
            self.turn(Duration::from_secs(1));
        }
    }

    /// Waits for a result with the client's clock held at `now`: the workers' answers
    /// are taken in, but no attempt reaches its deadline and no UDP retransmission
    /// falls due, however long the wall clock takes. Fails after `RESULT_WAIT`.
    fn result_at(&mut self, now: Instant, what: &str) -> AnnounceResult {
        let end = Instant::now() + RESULT_WAIT;
        loop {
            self.client.handle_timeout(now);
            if let Some(r) = self.client.poll_result() {
                return r;
            }
            assert!(
                Instant::now() < end,
                "no result for {what} within {RESULT_WAIT:?}"
            );
            // Woken by a worker's answer, or 50 ms.
            self.poll
                .poll(&mut self.events, Some(Duration::from_millis(50)))
                .expect("poll");
        }
    }

    /// Runs the client's timers on a simulated clock from `start` until a result comes,
    /// as the loop does: sleeps until `poll_timeout` in whole milliseconds rounded up
    /// (as `epoll` does), then runs the timers, calling `each` with the simulated time
    /// since `start`. Returns the result and when it came. Fails after 100 steps.
    fn result_stepped(
        &mut self,
        start: Instant,
        mut each: impl FnMut(Duration),
    ) -> (AnnounceResult, Duration) {
        let mut now = start;
        for _ in 0..100 {
            if let Some(r) = self.client.poll_result() {
                return (r, now - start);
            }
            let next = self
                .client
                .poll_timeout()
                .expect("a timer while an attempt runs");
            let wait = next.saturating_duration_since(now).as_nanos();
            now += Duration::from_millis(wait.div_ceil(1_000_000) as u64);
            self.client.handle_timeout(now);
            each(now - start);
        }
        panic!("no result after 100 timer steps");
    }

    fn scrape(
        &self,
        url: &str,
        hashes: &[InfoHash],
    ) -> Result<Vec<(InfoHash, ScrapeStats)>, String> {
        tracker::scrape(&self.config, url, hashes)
    }
}

fn job(key: u32, url: &str, peer: &[u8; 20], port: u16, event: Option<Event>) -> AnnounceJob {
    AnnounceJob {
        key,
        tracker: url.to_string(),
        info_hash: InfoHash(HASH),
        peer_id: PeerId(*peer),
        port,
        uploaded: 10,
        downloaded: 20,
        left: 30,
        event,
        numwant: Some(50),
        seq: 0,
    }
}

/// The tracker that answered, if it did.
fn answered_by(r: &AnnounceResult) -> Option<&str> {
    r.answered().then_some(r.tracker.as_str())
}

// ---------------------------------------------------------------- tests

#[test]
fn http_announce_returns_compact_peers() {
    let stub = HttpStub::new(|_| ok_body());
    let mut c = client(Duration::from_secs(5));
    c.announce(1, &stub.url, 6881, Some(Event::Started));
    let r = c.result();
    assert_eq!(r.key, 1);
    assert_eq!(r.error, None);
    assert_eq!(answered_by(&r), Some(stub.url.as_str()));
    assert_eq!(r.peers, two_peers());
    assert_eq!(r.interval, Some(1800));
    assert_eq!(r.min_interval, Some(60));
    assert_eq!((r.complete, r.incomplete), (Some(5), Some(3)));
    // `notify` runs right after the result is sent.
    let end = Instant::now() + Duration::from_secs(5);
    while c.notified.load(Ordering::SeqCst) == 0 && Instant::now() < end {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(c.notified.load(Ordering::SeqCst), 1);

    let target = stub.last_target();
    let query = target.split_once('?').map(|(_, q)| q).expect("query");
    let params: Vec<&str> = query.split('&').collect();
    for expected in [
        format!("info_hash={}", pct(&HASH)),
        format!("peer_id={}", pct(PEER)),
        "port=6881".into(),
        "uploaded=10".into(),
        "downloaded=20".into(),
        "left=30".into(),
        "compact=1".into(),
        "event=started".into(),
        "numwant=50".into(),
    ] {
        assert!(params.contains(&expected.as_str()), "{expected} in {query}");
    }
    assert_eq!(
        format!("info_hash={}", pct(&HASH)),
        "info_hash=%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A"
    );
    let key = params
        .iter()
        .find_map(|p| p.strip_prefix("key="))
        .expect("key");
    assert_eq!(key.len(), 8);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    c.client.shutdown(&mut c.poll, Duration::from_secs(2));
}

#[test]
fn http_dict_peers_and_warning() {
    let stub = HttpStub::new(|_| {
        b"d8:intervali900e15:warning message4:slow5:peersl\
          d2:ip9:127.0.0.37:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti7000ee\
          d2:ip3:::14:porti7001eee\
          6:peers618:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x1b\x5ae"
            .to_vec()
    });
    let mut c = client(Duration::from_secs(5));
    c.announce(2, &stub.url, 6881, None);
    let r = c.result();
    assert_eq!(r.error, None);
    let want: Vec<SocketAddr> = ["127.0.0.3:7000", "[::1]:7001", "[::2]:7002"]
        .iter()
        .map(|s| s.parse().expect("addr"))
        .collect();
    assert_eq!(r.peers, want);
    assert_eq!(r.warning.as_deref(), Some("slow"));
    assert_eq!(r.interval, Some(900));
    assert!(!stub.last_target().contains("event="));
}

#[test]
fn failure_reason_is_the_error() {
    let a = HttpStub::new(|_| failure_body("not registered at A"));
    let mut c = client(Duration::from_secs(5));
    c.announce(3, &a.url, 6881, Some(Event::Started));
    let r = c.result();
    assert!(!r.answered());
    assert_eq!(r.tracker, a.url);
    assert_eq!(r.error.as_deref(), Some("not registered at A"));
    assert!(r.peers.is_empty());
    assert_eq!(a.hits(), 1);
}

/// The session walks the tiers and the client performs each exchange it names,
/// reporting each on its own: a tracker refusing connections in the first tier fails
/// (reported with its own URL and announce number), the session then names the
/// tracker of the second tier, which answers; its `interval` schedules the next
/// announce, and the dead one, backing off, is skipped by the next walk.
#[test]
fn each_exchange_the_session_asks_is_reported_on_its_own() {
    use btcore_core::session::{Action, AnnounceOutcome, Session, SessionConfig};
    use btcore_core::time::Instant as CoreInstant;

    let dead = format!("http://127.0.0.1:{}/announce", free_port());
    let live = HttpStub::new(|_| ok_body());
    let mut session = Session::new(SessionConfig::new(PeerId(*PEER)), 3);
    let mut c = client(Duration::from_secs(5));
    let mut now = CoreInstant::from_millis(1_000);
    // Seeding: no early announce for want of peers.
    let have = btcore_core::bitfield::Bitfield::full(1);
    let id = session
        .add_torrent(
            now,
            &torrent_with_tiers(&[&[&dead], &[&live.url]]),
            Some(&have),
        )
        .expect("torrent");
    // Performs the exchange the session asks, if any, and reports it.
    let mut exchange = |session: &mut Session, now: CoreInstant| {
        let mut asked = Vec::new();
        while let Some(a) = session.poll_action() {
            if let Action::Announce {
                torrent,
                tracker,
                event,
                seq,
                ..
            } = a
            {
                assert_eq!(torrent, id);
                asked.push(tracker.clone());
                c.submit(AnnounceJob {
                    seq,
                    event: event.map(|_| Event::Started),
                    ..job(torrent.0, &tracker, PEER, 6881, None)
                });
            }
        }
        assert!(asked.len() <= 1, "one exchange at a time: {asked:?}");
        let r = asked.first().map(|_| c.result());
        if let Some(r) = &r {
            let outcome = match (r.answered(), r.interval) {
                (true, Some(interval)) => AnnounceOutcome::Answered {
                    interval,
                    min_interval: r.min_interval,
                },
                _ => AnnounceOutcome::Failed,
            };
            assert!(session.handle_announced(now, id, r.seq, outcome));
        }
        r
    };
    let first = exchange(&mut session, now).expect("an announce");
    assert_eq!(first.tracker, dead);
    assert!(first.error.is_some(), "{first:?}");
    let second = exchange(&mut session, now).expect("the next tier");
    assert_eq!(second.tracker, live.url);
    assert!(second.answered(), "{second:?}");
    assert_ne!(first.seq, second.seq);
    assert_eq!(second.peers, two_peers());
    assert!(live.last_target().contains("event=started"));
    assert!(exchange(&mut session, now).is_none(), "the walk is over");
    // The stub's interval is 1800 s: nothing before it. Then a new walk from the first
    // tier: the dead tracker's backoff (60 s) is over, so it is asked again first.
    now = now + btcore_core::time::Duration::from_secs(1799);
    session.handle_timeout(now);
    assert!(exchange(&mut session, now).is_none(), "{now:?}");
    now = now + btcore_core::time::Duration::from_secs(1);
    session.handle_timeout(now);
    let third = exchange(&mut session, now).expect("after the interval");
    assert_eq!(third.tracker, dead);
    let fourth = exchange(&mut session, now).expect("then the live one");
    assert_eq!(fourth.tracker, live.url);
    assert_eq!(live.hits(), 2);
}

#[test]
fn unreachable_trackers_fail_within_the_timeout() {
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent_url = format!(
        "udp://127.0.0.1:{}/announce",
        silent.local_addr().expect("addr").port()
    );
    let http_url = format!("http://127.0.0.1:{}/announce", free_port());
    let mut c = client(Duration::from_secs(2));

    // A refused connection is an error from the worker itself: the client's clock
    // stands still, so its 2 s deadline cannot be what ends the attempt.
    let t0 = Instant::now();
    c.client
        .announce(t0, job(5, &http_url, PEER, 6881, Some(Event::Started)));
    let r = c.result_at(t0, "a refused HTTP announce");
    assert!(!r.answered());
    assert_eq!(r.tracker, http_url);
    assert!(r.error.as_deref().is_some_and(|e| !e.is_empty()), "{r:?}");
    assert!(
        !r.error.as_deref().is_some_and(|e| e.contains("timed out")),
        "{r:?}"
    );

    // A silent UDP tracker, on a simulated clock: the attempt ends at its 2 s
    // timeout exactly, not before and not after.
    let t0 = Instant::now();
    c.client
        .announce(t0, job(6, &silent_url, PEER, 6881, Some(Event::Started)));
    let (r, at) = c.result_stepped(t0, |_| {});
    assert_eq!(at, Duration::from_secs(2), "ended at {at:?}");
    assert!(
        r.error.as_deref().is_some_and(|e| e.contains("timed out")),
        "{r:?}"
    );
}

/// The host's loop carries out the walk the session asks: the first tier refuses
/// connections, the loop reports that exchange, and performs the next one the session
/// names, to the second tier.
#[test]
fn the_client_loop_asks_the_tracker_each_announce_names() {
    use btcore_host::client::{Client as Host, ClientOptions};
    let dead = format!("http://127.0.0.1:{}/announce", free_port());
    let live = HttpStub::new(|_| ok_body());
    let dir = std::env::temp_dir().join(format!("btcore-tiers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut host = Host::new(ClientOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        save_dir: dir.clone(),
        seed: 5,
        ..ClientOptions::default()
    })
    .expect("client");
    host.add_torrent_file(&torrent_with_tiers(&[&[&dead], &[&live.url]]), None)
        .expect("add");
    let end = Instant::now() + RESULT_WAIT;
    while live.hits() == 0 {
        assert!(Instant::now() < end, "the second tier was never asked");
        host.run_once(Duration::from_millis(20)).expect("loop");
    }
    assert!(live.last_target().contains("event=started"));
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unsupported_schemes_are_errors() {
    let mut c = client(Duration::from_secs(5));
    c.announce(7, "wss://tracker.example/announce", 6881, None);
    let r = c.result();
    assert_eq!(r.tracker, "wss://tracker.example/announce");
    assert_eq!(r.error.as_deref(), Some(UNSUPPORTED_SCHEME));
    assert_eq!(
        c.scrape("wss://x/announce", &[InfoHash(HASH)]),
        Err(UNSUPPORTED_SCHEME.to_string())
    );
}

#[test]
fn udp_announce_connect_cache_and_scrape() {
    let stub = UdpStub::new(UdpMode::Peers);
    let mut c = client(Duration::from_secs(5));
    c.announce(8, &stub.url, 6881, Some(Event::Started));
    let r = c.result();
    assert_eq!(r.error, None);
    assert_eq!(answered_by(&r), Some(stub.url.as_str()));
    assert_eq!(r.peers, two_peers());
    assert_eq!(r.interval, Some(900));
    assert_eq!((r.complete, r.incomplete), (Some(5), Some(3)));

    let d = lock(&stub.last_announce).clone();
    assert_eq!(d.len(), 98);
    assert_eq!(&d[16..36], &HASH);
    assert_eq!(&d[36..56], PEER);
    assert_eq!(be_u64(&d, 56), 20); // downloaded
    assert_eq!(be_u64(&d, 64), 30); // left
    assert_eq!(be_u64(&d, 72), 10); // uploaded
    assert_eq!(be_u32(&d, 80), 2); // started
    assert_eq!(be_u32(&d, 92), 50); // num_want
    assert_eq!(&d[96..98], &6881u16.to_be_bytes());

    // The connection id is reused within its minute.
    c.announce(8, &stub.url, 6881, None);
    let r = c.result();
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(stub.connects.load(Ordering::SeqCst), 1);
    assert_eq!(stub.announces.load(Ordering::SeqCst), 2);
    assert_eq!(be_u32(&lock(&stub.last_announce), 80), 0);

    let other = InfoHash([7; 20]);
    let stats = c
        .scrape(&stub.url, &[InfoHash(HASH), other])
        .expect("scrape");
    assert_eq!(
        stats,
        vec![
            (
                InfoHash(HASH),
                ScrapeStats {
                    complete: 10,
                    downloaded: 100,
                    incomplete: 20
                }
            ),
            (
                other,
                ScrapeStats {
                    complete: 11,
                    downloaded: 101,
                    incomplete: 21
                }
            ),
        ]
    );
}

#[test]
fn udp_error_packet_is_reported() {
    let stub = UdpStub::new(UdpMode::Error("torrent banned"));
    let mut c = client(Duration::from_secs(5));
    c.announce(9, &stub.url, 6881, Some(Event::Started));
    let r = c.result();
    assert!(!r.answered());
    assert_eq!(
        (r.tracker.as_str(), r.error.as_deref()),
        (stub.url.as_str(), Some("torrent banned"))
    );
    assert!(r.peers.is_empty());
}

#[test]
fn http_scrape() {
    let stub = HttpStub::new(|target| {
        if !target.starts_with("/scrape?") {
            return failure_body("wrong path");
        }
        let mut body = b"d5:filesd20:".to_vec();
        body.extend_from_slice(&HASH);
        body.extend_from_slice(b"d8:completei4e10:downloadedi40e10:incompletei2ee");
        body.extend_from_slice(b"20:bbbbbbbbbbbbbbbbbbbbd8:completei1eeee");
        body
    });
    let c = client(Duration::from_secs(5));
    let stats = c.scrape(&stub.url, &[InfoHash(HASH)]).expect("scrape");
    assert_eq!(
        stats,
        vec![(
            InfoHash(HASH),
            ScrapeStats {
                complete: 4,
                downloaded: 40,
                incomplete: 2
            }
        )]
    );
    assert_eq!(
        stub.last_target(),
        format!("/scrape?info_hash={}", pct(&HASH))
    );
    assert!(c
        .scrape("http://127.0.0.1:1/track", &[InfoHash(HASH)])
        .is_err());
}

#[test]
fn shutdown_keeps_only_the_stopped_exchanges() {
    let stub = HttpStub::new(|_| ok_body());
    let silent = SilentUdp::new();
    let mut c = client(Duration::from_secs(5));
    c.announce(10, &stub.url, 6881, Some(Event::Started));
    assert_eq!(answered_by(&c.result()), Some(stub.url.as_str()));
    // A regular exchange still running with another tracker (a silent one) is given
    // up at once: the `stopped` queued behind it need not wait for it, and goes out.
    c.announce(10, &silent.url, 6881, None);
    c.announce(10, &stub.url, 6881, Some(Event::Stopped));
    let Client {
        client, mut poll, ..
    } = c;
    let start = Instant::now();
    let results = client.shutdown(&mut poll, Duration::from_secs(3));
    assert!(
        start.elapsed() < Duration::from_millis(1200),
        "waited {:?} for another tracker",
        start.elapsed()
    );
    assert_eq!(results.len(), 1, "{results:?}");
    let r = &results[0];
    assert_eq!(r.event, Some(Event::Stopped));
    assert_eq!(answered_by(r), Some(stub.url.as_str()));
    assert_eq!(stub.hits(), 2);
    assert!(stub.last_target().contains("event=stopped"));
}

/// A tracker that serves each request on its own thread and takes a `completed` in
/// 300 ms, anything else at once: the order in which it takes them is the order in
/// which they end, as in a tracker that serves many at a time.
#[test]
fn shutdown_sends_stopped_after_the_exchange_in_flight() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://127.0.0.1:{}/announce",
        listener.local_addr().expect("addr").port()
    );
    let taken: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    {
        let taken = taken.clone();
        thread::spawn(move || {
            for stream in listener.incoming().take(4).flatten() {
                let taken = taken.clone();
                thread::spawn(move || {
                    let _ = serve_http(
                        stream,
                        &move |target: &str| {
                            if target.contains("event=completed") {
                                thread::sleep(Duration::from_millis(300));
                            }
                            let event = ["completed", "stopped"]
                                .into_iter()
                                .find(|e| target.contains(&format!("event={e}")))
                                .unwrap_or("none");
                            lock(&taken).push(event.to_string());
                            ok_body()
                        },
                        &|_| {},
                    );
                });
            }
        });
    }
    let mut c = client(Duration::from_secs(5));
    // `completed` in flight when the torrent stops and the client shuts down.
    c.announce(11, &url, 6881, Some(Event::Completed));
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.client.poll_timeout().is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
        c.client.handle_timeout(Instant::now());
    }
    thread::sleep(Duration::from_millis(50));
    c.announce(11, &url, 6881, Some(Event::Stopped));
    let Client {
        client, mut poll, ..
    } = c;
    let results = client.shutdown(&mut poll, Duration::from_secs(3));
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(
        *lock(&taken),
        ["completed", "stopped"],
        "the tracker took our `stopped` before our `completed`: it lists a seeder that left"
    );
}

// ---------------------------------------------------------------- UDP on the loop

/// A UDP socket that reads what it is sent and never answers; counts the datagrams.
struct SilentUdp {
    url: String,
    sock: UdpSocket,
}

impl SilentUdp {
    fn new() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_nonblocking(true).expect("nonblocking");
        let url = format!(
            "udp://127.0.0.1:{}/announce",
            sock.local_addr().expect("addr").port()
        );
        Self { url, sock }
    }

    /// The datagrams received so far.
    fn received(&self) -> usize {
        let mut buf = [0u8; 2048];
        std::iter::from_fn(|| self.sock.recv_from(&mut buf).ok()).count()
    }
}

#[test]
fn udp_announces_run_on_the_loop_and_hold_no_worker() {
    // One worker only: were the UDP announce on it, the HTTP one would wait 3 s.
    let silent = SilentUdp::new();
    let http = HttpStub::new(|_| ok_body());
    let mut c = client_with(Duration::from_secs(3), 1);
    let t0 = Instant::now();
    c.client
        .announce(t0, job(20, &silent.url, PEER, 6881, Some(Event::Started)));
    c.client
        .announce(t0, job(21, &http.url, PEER, 6881, Some(Event::Started)));
    // The client's clock stands still at t0, so the UDP attempt cannot end: the HTTP
    // answer comes first only if it did not wait for the one worker.
    let r = c.result_at(t0, "the HTTP announce beside a silent UDP one");
    assert_eq!(r.key, 21);
    assert_eq!(answered_by(&r), Some(http.url.as_str()));
    assert!(c.client.poll_timeout().is_some(), "the UDP attempt runs");
    assert_eq!(silent.received(), 1, "the first connect request");

    // The silent tracker gets BEP 15 retransmissions from the loop's timers (base 1 s
    // for a 3 s timeout: sends at 0 and 1 s, the attempt ends at 3 s), each due at
    // the time `poll_timeout` gives, so a loop sleeping until then never misses one.
    // On a simulated clock: the times are exact.
    let mut sends = Vec::new();
    let (r, at) = c.result_stepped(t0, |t| {
        for _ in 0..silent.received() {
            sends.push(t);
        }
    });
    assert_eq!(r.key, 20);
    assert!(!r.answered());
    assert_eq!(
        (r.tracker.as_str(), r.error.as_deref()),
        (silent.url.as_str(), Some("timed out (connect)"))
    );
    assert_eq!(at, Duration::from_secs(3), "ended at {at:?}");
    assert_eq!(sends, [Duration::from_secs(1)], "retransmissions");
    assert!(c.client.is_idle());
    assert_eq!(c.client.poll_timeout(), None);
}

#[test]
fn a_dead_udp_exchange_then_a_live_http_one() {
    let silent = SilentUdp::new();
    let http = HttpStub::new(|_| ok_body());
    let mut c = client(Duration::from_secs(1));
    // One torrent's exchanges run in order, each reported on its own.
    let start = Instant::now();
    c.announce(22, &silent.url, 6881, Some(Event::Started));
    c.announce(22, &http.url, 6881, Some(Event::Started));
    let r = c.result();
    assert_eq!(r.tracker, silent.url);
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.starts_with("timed out")),
        "{r:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let r = c.result();
    assert_eq!(answered_by(&r), Some(http.url.as_str()));
    assert_eq!(r.peers, two_peers());
    assert_eq!(http.hits(), 1);
}

#[test]
fn a_dead_http_exchange_then_a_live_udp_one() {
    let dead = format!("http://127.0.0.1:{}/announce", free_port());
    let stub = UdpStub::new(UdpMode::Peers);
    let mut c = client(Duration::from_secs(5));
    c.announce(24, &dead, 6881, Some(Event::Started));
    let r = c.result();
    assert_eq!(r.tracker, dead);
    assert!(r.error.is_some(), "{r:?}");
    c.announce(24, &stub.url, 6881, Some(Event::Started));
    let r = c.result();
    assert_eq!(answered_by(&r), Some(stub.url.as_str()));
    assert_eq!(r.peers, two_peers());

    // Another torrent on the same UDP tracker reuses the connection id.
    c.announce(25, &stub.url, 6882, None);
    let r = c.result();
    assert_eq!(answered_by(&r), Some(stub.url.as_str()));
    assert_eq!(stub.connects.load(Ordering::SeqCst), 1);
    assert_eq!(stub.announces.load(Ordering::SeqCst), 2);
}

#[test]
fn shutdown_sends_stopped_to_the_udp_tracker() {
    let stub = UdpStub::new(UdpMode::Peers);
    let mut c = client(Duration::from_secs(5));
    c.announce(26, &stub.url, 6881, Some(Event::Started));
    assert_eq!(answered_by(&c.result()), Some(stub.url.as_str()));
    // A regular announce still running (its packet is out already: the cached
    // connection id needs no connect) is answered first; `stopped` goes out after it,
    // on the loop that `shutdown` runs.
    c.announce(26, &stub.url, 6881, None);
    c.announce(26, &stub.url, 6881, Some(Event::Stopped));
    let Client {
        client, mut poll, ..
    } = c;
    let start = Instant::now();
    let results = client.shutdown(&mut poll, Duration::from_secs(3));
    // Returned once `stopped` was answered, not at its deadline.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "shutdown ran to its deadline: {:?}",
        start.elapsed()
    );
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0].event, None);
    assert_eq!(results[1].event, Some(Event::Stopped));
    assert_eq!(answered_by(&results[1]), Some(stub.url.as_str()));
    assert!(results[1].error.is_none(), "{:?}", results[1].error);
    assert_eq!(stub.announces.load(Ordering::SeqCst), 3);
    assert_eq!(stub.connects.load(Ordering::SeqCst), 1);
    assert_eq!(be_u32(&lock(&stub.last_announce), 80), 3); // stopped
}

// ---------------------------------------------------------------- opentracker

struct Opentracker {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for Opentracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_opentracker(bin: &str, hash: &InfoHash) -> (Opentracker, u16) {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!(
        "btcore-opentracker-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // opentracker may drop privileges: let anyone read the whitelist.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let whitelist = dir.join("whitelist.txt");
    let hex = String::from_utf8(hash.to_hex().to_vec()).expect("hex");
    std::fs::write(&whitelist, format!("{hex}\n")).expect("whitelist");
    let conf = dir.join("opentracker.conf");
    std::fs::write(&conf, format!("access.whitelist {}\n", whitelist.display())).expect("conf");
    let port = free_port();
    let child = std::process::Command::new(bin)
        .arg("-f")
        .arg(&conf)
        .args(["-d", "/", "-i", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-P", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start opentracker");
    let ot = Opentracker { child, dir };
    let end = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "opentracker did not start on {port}");
        thread::sleep(Duration::from_millis(20));
    }
    (ot, port)
}

#[test]
fn opentracker_http_and_udp() {
    let Some(bin) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("opentracker"))
            .find(|p| p.is_file())
    }) else {
        println!("skipped: opentracker is not installed (apt-get install opentracker)");
        return;
    };
    let (_ot, port) = start_opentracker(&bin.to_string_lossy(), &InfoHash(HASH));
    let http = format!("http://127.0.0.1:{port}/announce");
    let udp = format!("udp://127.0.0.1:{port}/announce");
    let mut c = client(Duration::from_secs(5));
    let peer_a: SocketAddr = "127.0.0.1:40001".parse().expect("addr");
    let peer_b: SocketAddr = "127.0.0.1:40002".parse().expect("addr");

    // The whitelist may be read a moment after the port opens: retry a few times.
    let mut r = AnnounceResult::default();
    for _ in 0..50 {
        c.submit(job(
            11,
            &http,
            b"-BT0001-aaaaaaaaaaaa",
            40001,
            Some(Event::Started),
        ));
        r = c.result();
        if r.answered() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(answered_by(&r), Some(http.as_str()), "{:?}", r.error);

    c.submit(job(
        12,
        &udp,
        b"-BT0001-bbbbbbbbbbbb",
        40002,
        Some(Event::Started),
    ));
    let r = c.result();
    assert_eq!(answered_by(&r), Some(udp.as_str()), "{:?}", r.error);
    assert!(r.peers.contains(&peer_a), "{:?}", r.peers);

    c.submit(job(11, &http, b"-BT0001-aaaaaaaaaaaa", 40001, None));
    let r = c.result();
    assert_eq!(answered_by(&r), Some(http.as_str()), "{:?}", r.error);
    assert!(r.peers.contains(&peer_b), "{:?}", r.peers);

    let stats = c.scrape(&udp, &[InfoHash(HASH)]).expect("udp scrape");
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].1.incomplete, 2);
    let stats = c.scrape(&http, &[InfoHash(HASH)]).expect("http scrape");
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].1.incomplete, 2);
}

// ---------------------------------------------------------------- SSRF

/// A redirect answer to `location`.
fn redirect(location: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// The error the announce to `url` ended with.
fn error_for(r: &AnnounceResult, url: &str) -> String {
    r.error
        .clone()
        .filter(|_| r.tracker == url)
        .unwrap_or_else(|| panic!("no error for {url}: {r:?}"))
}

/// A tracker that redirects its announces to a local service (another port of this
/// host, a path no tracker has) is not followed: the service never sees a request.
/// A redirect to another local tracker's announce path still is.
#[test]
fn a_redirect_to_a_local_service_is_not_followed() {
    let service = HttpStub::new(|_| b"admin page".to_vec());
    let port = service
        .url
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next());
    let admin = format!(
        "http://127.0.0.1:{}/cgi-bin/reboot?now=1",
        port.expect("port")
    );
    let tracker = {
        let admin = admin.clone();
        HttpStub::new(move |_| redirect(&admin))
    };
    let mut c = client(Duration::from_secs(5));
    c.announce(1, &tracker.url, 6881, Some(Event::Started));
    let r = c.result();
    assert_eq!(tracker.hits(), 1);
    assert_eq!(service.hits(), 0, "the redirect reached {admin}: {r:?}");
    assert!(!r.answered() && r.peers.is_empty(), "{r:?}");
    let e = error_for(&r, &tracker.url);
    assert!(e.contains("SSRF"), "{e}");

    // A local tracker's announce path is a tracker's: followed.
    let real = HttpStub::new(|_| ok_body());
    let moved = {
        let to = real.url.clone();
        HttpStub::new(move |_| redirect(&to))
    };
    c.announce(2, &moved.url, 6881, None);
    let r = c.result();
    assert_eq!(r.peers, two_peers(), "{r:?}");
    assert_eq!(real.hits(), 1);
    assert_eq!(
        real.last_target(),
        "/announce",
        "the Location, as it was given"
    );
}

/// A tracker URL naming a local service by a host name (resolved to 127.0.0.1, then
/// checked) is refused before any connection.
#[test]
fn a_tracker_url_on_a_local_service_path_is_refused() {
    let service = HttpStub::new(|_| ok_body());
    let port = service
        .url
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next());
    let url = format!("http://localhost:{}/admin/../announce", port.expect("port"));
    let mut c = client(Duration::from_secs(5));
    c.announce(1, &url, 6881, None);
    let r = c.result();
    assert_eq!(service.hits(), 0, "{r:?}");
    assert!(error_for(&r, &url).contains("SSRF"), "{r:?}");
}

/// Which addresses count as local is a setting: with 127.0.0.1 taken for a public
/// address and 127.0.0.2 for a local one, a tracker at 127.0.0.1 redirecting to a
/// tracker's path at 127.0.0.2 is refused (a public tracker may not lead us into the
/// local network), while a redirect that stays on 127.0.0.1 is followed.
#[test]
fn a_public_tracker_cannot_redirect_into_the_local_network() {
    fn only_127_0_0_1_is_public(ip: std::net::IpAddr) -> bool {
        ip != std::net::IpAddr::from([127, 0, 0, 1])
    }
    let Ok(probe) = TcpListener::bind("127.0.0.2:0") else {
        eprintln!("127.0.0.2 cannot be bound here: skipped");
        return;
    };
    drop(probe);
    let local = HttpStub::on([127, 0, 0, 2], |_| ok_body());
    let tracker = {
        let to = local.url.clone();
        HttpStub::new(move |_| redirect(&to))
    };
    let mut c = client_config(TrackerConfig {
        timeout: Duration::from_secs(5),
        rng_seed: 7,
        ssrf: tracker::SsrfGuard {
            enabled: true,
            is_local: only_127_0_0_1_is_public,
        },
        ..TrackerConfig::default()
    });
    c.announce(1, &tracker.url, 6881, None);
    let r = c.result();
    assert_eq!(local.hits(), 0, "{r:?}");
    assert!(error_for(&r, &tracker.url).contains("public"), "{r:?}");

    let public = HttpStub::new(|_| ok_body());
    let hop = {
        let to = public.url.clone();
        HttpStub::new(move |_| redirect(&to))
    };
    c.announce(2, &hop.url, 6881, None);
    assert_eq!(c.result().peers, two_peers());
    assert_eq!(public.hits(), 1);
}

/// `http://127.0.0.1:PORT` of a stub's URL.
fn origin(stub: &HttpStub) -> String {
    stub.url
        .strip_suffix("/announce")
        .expect("a stub URL")
        .to_string()
}

/// On a local address only a tracker's own path is asked, exactly: `/announce` or
/// `/announce.php` (`/scrape`, `/scrape.php` for scrapes). A CGI reached with a path
/// info (`/cgi-bin/reboot.cgi/announce`), a path that only ends or starts like a
/// tracker's (`/api/x/announce-x`, `/announce.cgi`) or spells it with escapes is
/// refused before any connection, whatever its query.
#[test]
fn a_local_tracker_must_use_the_announce_path_exactly() {
    let service = HttpStub::new(|target| {
        if target.starts_with("/scrape") {
            let mut body = b"d5:filesd20:".to_vec();
            body.extend_from_slice(&HASH);
            body.extend_from_slice(b"d8:completei1e10:downloadedi2e10:incompletei3eeee");
            body
        } else {
            ok_body()
        }
    });
    let base = origin(&service);
    let mut c = client(Duration::from_secs(5));
    let refused = [
        "/cgi-bin/reboot.cgi/announce",
        "/api/x/announce-x?cmd=reboot",
        "/x/announce",
        "/announce.cgi",
        "/announce/",
        "/announce/x",
        "/%61nnounce",
        "/ANNOUNCE",
        "/",
    ];
    for (key, path) in (1..).zip(refused) {
        let url = format!("{base}{path}");
        c.announce(key, &url, 6881, None);
        let r = c.result();
        assert!(error_for(&r, &url).contains("SSRF"), "{url}: {r:?}");
    }
    for path in ["/cgi-bin/x.cgi/announce", "/x/announce.php"] {
        let e = c
            .scrape(&format!("{base}{path}"), &[InfoHash(HASH)])
            .expect_err(path);
        assert!(e.contains("SSRF"), "{path}: {e}");
    }
    assert_eq!(service.hits(), 0, "{:?}", service.last_target());

    let allowed = ["/announce", "/announce.php", "/announce?passkey=abc"];
    for (key, path) in (100..).zip(allowed) {
        let url = format!("{base}{path}");
        c.announce(key, &url, 6881, None);
        let r = c.result();
        assert_eq!(r.peers, two_peers(), "{url}: {r:?}");
    }
    for path in ["/announce", "/announce.php"] {
        let stats = c
            .scrape(&format!("{base}{path}"), &[InfoHash(HASH)])
            .expect(path);
        assert_eq!(stats.len(), 1, "{path}");
    }
    assert_eq!(service.hits(), allowed.len() + 2);
    assert!(service.last_target().starts_with("/scrape.php?info_hash="));
}

/// A tracker URL whose query already holds a tracker parameter (`info_hash`,
/// `peer_id`, `port`, `uploaded`, `downloaded`, `left`, `corrupt`, `key`, `event`; any
/// case, escaped or not) is refused for every tracker, public ones too, as libtorrent
/// does: such a URL would let its author set what our announce says. Other parameters
/// (a private tracker's `passkey`) are kept.
#[test]
fn tracker_urls_with_preset_tracker_parameters_are_refused() {
    fn only_127_0_0_1_is_public(ip: std::net::IpAddr) -> bool {
        ip != std::net::IpAddr::from([127, 0, 0, 1])
    }
    let tracker = HttpStub::new(|_| ok_body());
    let mut c = client_config(TrackerConfig {
        timeout: Duration::from_secs(5),
        rng_seed: 7,
        ssrf: tracker::SsrfGuard {
            enabled: true,
            is_local: only_127_0_0_1_is_public,
        },
        ..TrackerConfig::default()
    });
    let refused = [
        "?info_hash=%12%34",
        "?passkey=x&PEER_ID=abc",
        "?port=80",
        "?a=1&event=stopped",
        "?%69nfo_hash=1",
        "?left",
        "?key=1&uploaded=0",
        "?corrupt=1",
    ];
    for (key, query) in (1..).zip(refused) {
        let url = format!("{}{query}", tracker.url);
        c.announce(key, &url, 6881, None);
        let r = c.result();
        assert!(error_for(&r, &url).contains("SSRF"), "{url}: {r:?}");
    }
    let e = c
        .scrape(&format!("{}?info_hash=x", tracker.url), &[InfoHash(HASH)])
        .expect_err("scrape");
    assert!(e.contains("SSRF"), "{e}");
    assert_eq!(tracker.hits(), 0, "{:?}", tracker.last_target());

    let url = format!("{}?passkey=abc&uid=5", tracker.url);
    c.announce(100, &url, 6881, None);
    assert_eq!(c.result().peers, two_peers());
    assert!(tracker
        .last_target()
        .starts_with("/announce?passkey=abc&uid=5&info_hash="));
}

// ---------------------------------------------------------------- proxy

/// An HTTP CONNECT proxy on 127.0.0.1: it records each CONNECT target, answers 200 and
/// then serves the tunnelled request itself with `reply` (it stands for the proxy and
/// the tracker behind it).
struct ProxyStub {
    proxy: ureq::Proxy,
    connects: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for ProxyStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl ProxyStub {
    fn new(reply: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let connects = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reply: Arc<Reply> = Arc::new(reply);
        {
            let (connects, stop) = (connects.clone(), stop.clone());
            thread::spawn(move || {
                let end = Instant::now() + STUB_LIFETIME;
                while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = serve_connect(stream, &*reply, &connects);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        let proxy = ureq::Proxy::new(&format!("http://127.0.0.1:{port}")).expect("proxy");
        Self {
            proxy,
            connects,
            stop,
        }
    }

    fn connects(&self) -> Vec<String> {
        lock(&self.connects).clone()
    }
}

/// Reads a CONNECT request, records its target, opens the tunnel and serves one request
/// through it.
fn serve_connect(
    mut stream: TcpStream,
    reply: &Reply,
    connects: &Mutex<Vec<String>>,
) -> Option<()> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut parts = text.lines().next()?.split(' ');
    if parts.next()? != "CONNECT" {
        return None;
    }
    lock(connects).push(parts.next()?.to_string());
    stream
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .ok()?;
    let mut first = [0u8; 1];
    stream.peek(&mut first).ok()?;
    if first[0] == 0x16 {
        // A TLS ClientHello: kept (as the last "connect" entry) and left unanswered.
        let mut hello = vec![0u8; 4096];
        let n = stream.read(&mut hello).ok()?;
        hello.truncate(n);
        lock(connects).push(format!("tls:{}", String::from_utf8_lossy(&hello)));
        return None;
    }
    serve_http(stream, reply, &|_| {})
}

/// Through an HTTP proxy, the guard still applies: the host name is resolved and
/// checked here (a name that resolves to a local address is refused), host names that
/// are IPv4 literals in `inet_aton`'s forms (`127.1`, `2130706433`, `0x7f.1`,
/// `0177.0.0.1`) count as those addresses, and the proxy is never asked.
#[test]
fn names_behind_a_proxy_are_resolved_and_checked_here() {
    let proxy = ProxyStub::new(|_| ok_body());
    let port = free_port();
    let mut c = client_config(TrackerConfig {
        timeout: Duration::from_secs(5),
        rng_seed: 7,
        proxy: Some(proxy.proxy.clone()),
        ..TrackerConfig::default()
    });
    let hosts = [
        "localhost",
        "127.1",
        "2130706433",
        "0x7f.1",
        "0x7F000001",
        "0177.0.0.1",
        "127.0.0.1.",
        "[::ffff:7f00:1]",
    ];
    for (key, host) in (1..).zip(hosts) {
        let url = format!("http://{host}:{port}/admin");
        c.announce(key, &url, 6881, None);
        let r = c.result();
        assert!(error_for(&r, &url).contains("SSRF"), "{url}: {r:?}");
    }
    assert_eq!(proxy.connects(), Vec::<String>::new());
}

/// With the guard on, the proxy is asked to connect to the address the guard checked
/// (`CONNECT 127.0.0.1:PORT`), never to a name it would resolve again: what the proxy
/// reaches is what was checked. With the guard off, the proxy gets the name.
#[test]
fn a_proxy_is_asked_for_the_checked_address() {
    fn only_127_0_0_1_is_public(ip: std::net::IpAddr) -> bool {
        ip != std::net::IpAddr::from([127, 0, 0, 1])
    }
    let proxy = ProxyStub::new(|_| ok_body());
    let port = free_port();
    let config = TrackerConfig {
        timeout: Duration::from_secs(5),
        rng_seed: 7,
        proxy: Some(proxy.proxy.clone()),
        ssrf: tracker::SsrfGuard {
            enabled: true,
            is_local: only_127_0_0_1_is_public,
        },
        ..TrackerConfig::default()
    };
    // `localhost` may also be ::1, a local address here, which a path that is not a
    // tracker's excludes: only 127.0.0.1 is left.
    let url = format!("http://localhost:{port}/tracker/announce");
    let mut c = client_config(config.clone());
    c.announce(1, &url, 6881, None);
    let r = c.result();
    assert_eq!(r.peers, two_peers(), "{r:?}");
    assert_eq!(proxy.connects(), [format!("127.0.0.1:{port}")]);

    // HTTPS: TLS runs through the tunnel to the checked address, with the URL's
    // host name (the ClientHello names `localhost`, not the address).
    let tls = format!("https://localhost:{port}/tracker/announce");
    c.announce(3, &tls, 6881, None);
    let r = c.result();
    assert!(r.peers.is_empty() && r.error.is_some(), "{r:?}");
    let seen = proxy.connects();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[1], format!("127.0.0.1:{port}"));
    assert!(
        seen[2].starts_with("tls:") && seen[2].contains("localhost"),
        "{seen:?}"
    );

    let mut off = client_config(TrackerConfig {
        ssrf: tracker::SsrfGuard {
            enabled: false,
            ..config.ssrf
        },
        ..config
    });
    off.announce(2, &url, 6881, None);
    assert_eq!(off.result().peers, two_peers());
    assert_eq!(
        proxy.connects().last().map(String::as_str),
        Some(format!("localhost:{port}").as_str())
    );
}

#[test]
fn local_addresses() {
    use std::net::IpAddr;
    for local in [
        "127.0.0.1",
        "127.3.4.5",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fd00::1",
        "::ffff:192.168.1.1",
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "64:ff9b::10.0.0.1",
        "64:ff9b:1::1",
        "64:ff9b:1:ffff:ffff::808:808",
        "2002:c0a8:0101::1",
        "ff02::1",
    ] {
        let ip: IpAddr = local.parse().expect("ip");
        assert!(tracker::is_local_address(ip), "{local} is local");
    }
    for public in [
        "1.1.1.1",
        "8.8.8.8",
        "172.32.0.1",
        "100.128.0.1",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::8.8.8.8",
        "2002:0808:0808::1",
    ] {
        let ip: IpAddr = public.parse().expect("ip");
        assert!(!tracker::is_local_address(ip), "{public} is public");
    }
}
