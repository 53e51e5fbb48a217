//! btcore's tracker on 127.0.0.1: our tracker client and raw HTTP/UDP requests against
//! it, bad input, restarts with a state file, and two trackers in sync. Every wait is
//! bounded; every server is stopped (or killed) before its test returns.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use btcore_core::bencode::Token;
use btcore_core::ids::{InfoHash, PeerId};
use btcore_core::tracker::http::{parse_announce_response, parse_scrape_response};
use btcore_core::tracker::udp::{
    encode_announce, encode_connect, encode_scrape, parse_response, Action, UdpResponse,
};
use btcore_core::tracker::{AnnounceRequest, Event};
use btcore_host::tracker::{self, AnnounceJob, AnnounceResult, TrackerClient, TrackerConfig};
use btcore_host::tracker_server::{TrackerOptions, TrackerServer};
use mio::{Events, Poll, Token as IoToken, Waker};

const HASH: [u8; 20] = *b"btcore-tracker-test!";
const WAIT: Duration = Duration::from_secs(10);

fn pct(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fn local() -> Option<SocketAddr> {
    Some("127.0.0.1:0".parse().expect("addr"))
}

fn opts() -> TrackerOptions {
    TrackerOptions {
        http: local(),
        udp: local(),
        interval_secs: 60,
        save_every: Duration::from_millis(100),
        ..TrackerOptions::default()
    }
}

/// A port free for both TCP and UDP on 127.0.0.1.
fn free_port() -> u16 {
    for _ in 0..100 {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = t.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "btcore-tracker-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).expect("dir");
    d
}

/// A one-shot HTTP request; (status, body).
fn http(addr: SocketAddr, raw: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(raw).expect("write");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&resp)));
    let code = std::str::from_utf8(&resp[9..12])
        .expect("utf8")
        .parse()
        .expect("code");
    (code, resp[end + 4..].to_vec())
}

fn get(addr: SocketAddr, target: &str) -> (u16, Vec<u8>) {
    http(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn announce_query(hash: &[u8; 20], port: u16, left: u64, extra: &str) -> String {
    let mut id = *b"-RAW000-000000000000";
    id[14..20].copy_from_slice(format!("{port:06}").as_bytes());
    format!(
        "/announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left={left}&compact=1{extra}",
        pct(hash),
        pct(&id)
    )
}

/// Raw HTTP announce: Ok(ports of the peers, complete, incomplete) or Err(failure).
fn http_announce(
    addr: SocketAddr,
    port: u16,
    left: u64,
    extra: &str,
) -> Result<(Vec<u16>, u32, u32), String> {
    let (code, body) = get(addr, &announce_query(&HASH, port, left, extra));
    assert_eq!(code, 200);
    let mut tokens = vec![Token::default(); 4096];
    let r = parse_announce_response(&body, &mut tokens).expect("bencode");
    if let Some(f) = r.failure() {
        return Err(f.to_string());
    }
    let ok = r.ok().expect("ok");
    let mut ports: Vec<u16> = ok.peers().map(|p| p.port()).collect();
    ports.sort_unstable();
    Ok((ports, ok.complete.unwrap_or(0), ok.incomplete.unwrap_or(0)))
}

struct Udp {
    sock: UdpSocket,
    server: SocketAddr,
}

impl Udp {
    fn new(server: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        Self { sock, server }
    }

    fn exchange(&self, pkt: &[u8]) -> Option<Vec<u8>> {
        self.sock.send_to(pkt, self.server).expect("send");
        let mut buf = [0u8; 4096];
        match self.sock.recv_from(&mut buf) {
            Ok((n, _)) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    }

    fn connect(&self) -> u64 {
        let mut pkt = [0u8; 16];
        encode_connect(1, &mut pkt).expect("enc");
        let resp = self.exchange(&pkt).expect("connect reply");
        match parse_response(&resp, 1, Action::Connect, false) {
            Ok(UdpResponse::Connect { connection_id, .. }) => connection_id,
            other => panic!("connect: {other:?}"),
        }
    }
}

fn config() -> TrackerConfig {
    TrackerConfig {
        timeout: Duration::from_secs(5),
        max_parallel: 2,
        rng_seed: 9,
        ..TrackerConfig::default()
    }
}

/// The tracker client on a loop of its own, as the host's event loop runs it.
struct Client {
    client: TrackerClient,
    poll: Poll,
}

const TOKENS: [IoToken; 2] = [IoToken(1), IoToken(2)];

fn client() -> Client {
    let poll = Poll::new().expect("poll");
    let waker = Waker::new(poll.registry(), IoToken(0)).expect("waker");
    let client = TrackerClient::new(
        config(),
        poll.registry(),
        TOKENS,
        Box::new(move || {
            let _ = waker.wake();
        }),
    )
    .expect("client");
    Client { client, poll }
}

impl Client {
    fn announce(&mut self, job: AnnounceJob) -> AnnounceResult {
        self.client.announce(Instant::now(), job);
        let end = Instant::now() + WAIT;
        let mut events = Events::with_capacity(8);
        loop {
            if let Some(r) = self.client.poll_result() {
                return r;
            }
            let now = Instant::now();
            assert!(now < end, "no announce result");
            let wait = self
                .client
                .poll_timeout()
                .map_or(end, |t| t.min(end))
                .saturating_duration_since(now);
            self.poll.poll(&mut events, Some(wait)).expect("poll");
            if events.iter().any(|e| TOKENS.contains(&e.token())) {
                self.client.on_udp_readable(Instant::now());
            }
            self.client.handle_timeout(Instant::now());
        }
    }
}

fn job(key: u32, url: &str, port: u16, left: u64) -> AnnounceJob {
    let mut id = *b"-BT0001-000000000000";
    id[14..20].copy_from_slice(format!("{port:06}").as_bytes());
    AnnounceJob {
        key,
        tiers: vec![vec![url.to_string()]],
        info_hash: InfoHash(HASH),
        peer_id: PeerId(id),
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event: Some(Event::Started),
        numwant: Some(50),
    }
}

#[test]
fn client_over_http_and_udp_sees_the_other_peer() {
    let server = TrackerServer::start(opts()).expect("start");
    let h = server.http_addr().expect("http");
    let u = server.udp_addr().expect("udp");
    let http_url = format!("http://{h}/announce");
    let udp_url = format!("udp://{u}/announce");
    let mut c = client();

    let r = c.announce(job(1, &http_url, 40001, 100));
    assert_eq!(
        r.tracker.as_deref(),
        Some(http_url.as_str()),
        "{:?}",
        r.errors
    );
    assert!(r.peers.is_empty());

    let r = c.announce(job(2, &udp_url, 40002, 100));
    assert_eq!(
        r.tracker.as_deref(),
        Some(udp_url.as_str()),
        "{:?}",
        r.errors
    );
    assert_eq!(
        r.peers,
        ["127.0.0.1:40001".parse::<SocketAddr>().expect("a")]
    );
    assert_eq!(r.incomplete, Some(2));

    let mut j = job(1, &http_url, 40001, 100);
    j.event = None;
    let r = c.announce(j);
    assert_eq!(
        r.peers,
        ["127.0.0.1:40002".parse::<SocketAddr>().expect("a")]
    );
    assert_eq!(r.interval, Some(60));

    for url in [&http_url, &udp_url] {
        let s = tracker::scrape(&config(), url, &[InfoHash(HASH)]).expect("scrape");
        assert_eq!(s.len(), 1, "{url}");
        assert_eq!((s[0].1.incomplete, s[0].1.complete), (2, 0), "{url}");
    }
    c.client.shutdown(&mut c.poll, Duration::from_secs(1));

    // The stats page knows the torrent.
    let (code, body) = get(h, "/stats.json");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["peers"], 2);
    let hex = String::from_utf8(InfoHash(HASH).to_hex().to_vec()).expect("hex");
    assert_eq!(v["torrents"][0]["info_hash"], hex);
    let (code, body) = get(h, "/");
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains(&hex));
    server.stop().expect("stop");
}

#[test]
fn seeds_numwant_and_scrape_over_raw_requests() {
    let server = TrackerServer::start(opts()).expect("start");
    let h = server.http_addr().expect("http");
    // 210 leechers.
    for p in 1..=210u16 {
        http_announce(h, 10_000 + p, 5, "").expect("announce");
    }
    let (peers, _, inc) = http_announce(h, 10_001, 5, "").expect("a");
    assert_eq!((peers.len(), inc), (50, 210));
    assert!(!peers.contains(&10_001));
    let (peers, _, _) = http_announce(h, 10_001, 5, "&numwant=1000000").expect("a");
    assert_eq!(peers.len(), 200);
    let (peers, _, _) = http_announce(h, 10_001, 5, "&numwant=3").expect("a");
    assert_eq!(peers.len(), 3);
    // Two seeds: each gets leechers only.
    http_announce(h, 20_001, 0, "&event=completed").expect("seed");
    let (peers, complete, _) = http_announce(h, 20_002, 0, "&numwant=200").expect("seed");
    assert_eq!(complete, 2);
    assert!(peers.iter().all(|&p| p < 20_000), "{peers:?}");
    // A leecher may get seeds.
    let (peers, _, _) = http_announce(h, 10_002, 5, "&numwant=200").expect("a");
    assert_eq!(peers.len(), 200);

    // HTTP scrape of two hashes (one unknown).
    let (code, body) = get(
        h,
        &format!(
            "/scrape?info_hash={}&info_hash={}",
            pct(&HASH),
            pct(&[7; 20])
        ),
    );
    assert_eq!(code, 200);
    let mut tokens = vec![Token::default(); 256];
    let files = parse_scrape_response(&body, &mut tokens)
        .expect("scrape")
        .ok()
        .expect("files");
    let s = files.get(&InfoHash(HASH)).expect("ours");
    assert_eq!((s.complete, s.incomplete, s.downloaded), (2, 210, 1));
    assert_eq!(files.get(&InfoHash([7; 20])).map(|s| s.complete), Some(0));

    // UDP scrape and a UDP announce from a seed.
    let u = Udp::new(server.udp_addr().expect("udp"));
    let id = u.connect();
    let mut pkt = [0u8; 128];
    let n = encode_scrape(id, 5, &[InfoHash(HASH)], &mut pkt).expect("enc");
    let resp = u.exchange(&pkt[..n]).expect("scrape reply");
    let Ok(UdpResponse::Scrape(mut s)) = parse_response(&resp, 5, Action::Scrape, false) else {
        panic!("scrape {resp:?}");
    };
    let s = s.next().expect("entry");
    assert_eq!((s.complete, s.downloaded, s.incomplete), (2, 1, 210));
    let mut req = AnnounceRequest::new(InfoHash(HASH), PeerId([3; 20]), 30_000);
    req.numwant = Some(500);
    let n = encode_announce(id, 6, &req, &mut pkt).expect("enc");
    let resp = u.exchange(&pkt[..n]).expect("announce reply");
    let Ok(UdpResponse::Announce(a)) = parse_response(&resp, 6, Action::Announce, false) else {
        panic!("announce {resp:?}");
    };
    assert_eq!(a.seeders, 3);
    let ports: Vec<u16> = a.peers.map(|p| p.port()).collect();
    assert_eq!(ports.len(), 200);
    assert!(ports.iter().all(|&p| p < 20_000));
    server.stop().expect("stop");
}

#[test]
fn bad_requests_get_failures_or_silence() {
    let server = TrackerServer::start(opts()).expect("start");
    let h = server.http_addr().expect("http");
    let hash = pct(&HASH);
    let cases = [
        (
            "/announce?peer_id=-BT0001-000000000000&port=1&left=0".to_string(),
            "missing info_hash",
        ),
        (
            format!(
                "/announce?info_hash={}&peer_id=-BT0001-000000000000&port=1&left=0",
                pct(&HASH[..19])
            ),
            "invalid info_hash",
        ),
        (
            format!("/announce?info_hash={hash}&port=1&left=0"),
            "missing peer_id",
        ),
        (
            format!("/announce?info_hash={hash}&peer_id=-BT0001-000000000000&left=0"),
            "missing port",
        ),
        (
            format!("/announce?info_hash={hash}&peer_id=-BT0001-000000000000&port=0&left=0"),
            "invalid port",
        ),
        (
            format!("/announce?info_hash={hash}&peer_id=-BT0001-000000000000&port=1"),
            "missing left",
        ),
        (
            format!(
                "/announce?info_hash={hash}&peer_id=-BT0001-000000000000&port=1&left=0&event=bogus"
            ),
            "invalid event",
        ),
        (
            format!("/announce?info_hash=%zz{hash}"),
            "invalid info_hash",
        ),
        ("/scrape".to_string(), "full scrape not supported"),
    ];
    let mut tokens = vec![Token::default(); 64];
    for (target, reason) in cases {
        let (code, body) = get(h, &target);
        assert_eq!(code, 200, "{target}");
        let r = parse_announce_response(&body, &mut tokens).expect("bencode");
        assert_eq!(
            r.failure().and_then(|f| f.reason_str()),
            Some(reason),
            "{target}"
        );
    }
    // A huge numwant is capped, not refused.
    let (peers, _, _) = http_announce(h, 1, 1, "&numwant=99999999999999999").expect("huge");
    assert!(peers.is_empty());
    // HTTP garbage: oversize head, wrong method, unknown path, binary junk.
    let big = format!("GET /announce?{} HTTP/1.1\r\n\r\n", "a".repeat(10_000));
    assert_eq!(http(h, big.as_bytes()).0, 431);
    assert_eq!(get(h, "/nope").0, 404);
    assert_eq!(
        http(h, b"DELETE / HTTP/1.1\r\nConnection: close\r\n\r\n").0,
        405
    );
    assert_eq!(http(h, b"\x00\xff\r\n\r\n").0, 400);
    assert_eq!(get(h, "/admin/register?info_hash=x&key=y").0, 403);
    assert_eq!(
        http(
            h,
            b"POST /sync HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nde"
        )
        .0,
        403
    );

    // UDP: garbage, short packets and forged connection ids get no reply.
    let u = Udp::new(server.udp_addr().expect("udp"));
    assert_eq!(u.exchange(b"hello"), None);
    assert_eq!(u.exchange(&[0xff; 98]), None);
    let id = u.connect();
    let req = AnnounceRequest::new(InfoHash(HASH), PeerId([3; 20]), 3000);
    let mut pkt = [0u8; 98];
    let n = encode_announce(id ^ 1, 7, &req, &mut pkt).expect("enc");
    assert_eq!(u.exchange(&pkt[..n]), None);
    let n = encode_announce(id, 7, &req, &mut pkt).expect("enc");
    assert_eq!(u.exchange(&pkt[..n - 1]), None);
    // A bad event gets an error packet.
    pkt[80..84].copy_from_slice(&42u32.to_be_bytes());
    let resp = u.exchange(&pkt[..n]).expect("error packet");
    assert!(matches!(
        parse_response(&resp, 7, Action::Announce, false),
        Ok(UdpResponse::Error(f)) if f.reason == b"invalid event"
    ));
    // Still alive and well.
    pkt[80..84].copy_from_slice(&0u32.to_be_bytes());
    assert!(u.exchange(&pkt[..n]).is_some());
    assert!(http_announce(h, 2, 1, "").is_ok());
    server.stop().expect("stop");
}

#[test]
fn allow_list_and_counts_survive_restarts() {
    let dir = temp_dir("state");
    let state = dir.join("tracker.state");
    let o = TrackerOptions {
        state: Some(state.clone()),
        allow_list: true,
        admin_key: Some("s3cret &key".into()),
        ..opts()
    };
    let server = TrackerServer::start(o.clone()).expect("start");
    let h = server.http_addr().expect("http");
    assert_eq!(
        http_announce(h, 1, 0, ""),
        Err("torrent not registered".into())
    );
    assert_eq!(
        get(
            h,
            &format!("/admin/register?info_hash={}&key=wrong", pct(&HASH))
        )
        .0,
        403
    );
    let (code, body) = get(
        h,
        &format!(
            "/admin/register?info_hash={}&key=s3cret%20%26key",
            pct(&HASH)
        ),
    );
    assert_eq!((code, body.as_slice()), (200, &b"registered"[..]));
    http_announce(h, 1, 0, "&event=completed").expect("registered now");
    http_announce(h, 2, 0, "&event=completed").expect("registered now");
    // No clean exit: only the coalesced save (every 100 ms here) is on disk.
    let end = Instant::now() + WAIT;
    let mut reg = btcore_core::tracker::server::Tracker::new(Default::default(), [0; 32]);
    loop {
        if let Ok(data) = std::fs::read(&state) {
            if reg.restore_state(&data).is_ok()
                && reg.stats(&InfoHash(HASH)).map(|s| s.downloaded) == Some(2)
            {
                break;
            }
        }
        assert!(Instant::now() < end, "state never saved");
        thread::sleep(Duration::from_millis(50));
    }
    server.kill();

    let server = TrackerServer::start(o.clone()).expect("restart");
    let h = server.http_addr().expect("http");
    let (_, complete, _) = http_announce(h, 3, 0, "&event=completed").expect("still registered");
    assert_eq!(complete, 1, "peers are not saved");
    let (code, body) = get(h, "/stats.json");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["torrents"][0]["downloaded"], 3);
    server.stop().expect("clean stop saves");

    let server = TrackerServer::start(o).expect("restart");
    let u = Udp::new(server.udp_addr().expect("udp"));
    let id = u.connect();
    let mut pkt = [0u8; 64];
    let n = encode_scrape(id, 9, &[InfoHash(HASH)], &mut pkt).expect("enc");
    let resp = u.exchange(&pkt[..n]).expect("scrape");
    let Ok(UdpResponse::Scrape(mut s)) = parse_response(&resp, 9, Action::Scrape, false) else {
        panic!("scrape");
    };
    assert_eq!(s.next().map(|s| s.downloaded), Some(3));
    server.stop().expect("stop");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_trackers_in_sync_survive_a_restart() {
    let (pa, pb) = (free_port(), free_port());
    let at = |p: u16| Some(SocketAddr::from(([127, 0, 0, 1], p)));
    let make = |me: u16, other: u16| TrackerOptions {
        http: at(me),
        udp: at(me),
        sync_peers: vec![format!("http://127.0.0.1:{other}")],
        sync_key: Some("shared".into()),
        ..opts()
    };
    let a = TrackerServer::start(make(pa, pb)).expect("a");
    let b = TrackerServer::start(make(pb, pa)).expect("b");
    let ha = a.http_addr().expect("a");
    let hb = b.http_addr().expect("b");

    let wait_for = |addr: SocketAddr, me: u16, want: &[u16]| {
        let end = Instant::now() + WAIT;
        loop {
            let (peers, _, _) = http_announce(addr, me, 5, "&numwant=200").expect("announce");
            if want.iter().all(|p| peers.contains(p)) {
                return;
            }
            assert!(Instant::now() < end, "{addr}: {peers:?} lacks {want:?}");
            thread::sleep(Duration::from_millis(100));
        }
    };
    http_announce(ha, 1001, 5, "").expect("x on a");
    wait_for(hb, 2001, &[1001]);
    wait_for(ha, 1002, &[2001]);

    // A forged batch is refused.
    let mut forged = Vec::new();
    btcore_core::tracker::server::encode_sync(
        &[btcore_core::tracker::server::SyncEntry {
            info_hash: InfoHash(HASH),
            addr: "127.0.0.1:6666".parse().expect("a"),
            seed: true,
            ttl_secs: 60,
        }],
        b"not the key",
        &mut forged,
    );
    let mut req = format!(
        "POST /sync HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        forged.len()
    )
    .into_bytes();
    req.extend_from_slice(&forged);
    assert_eq!(http(hb, &req).0, 403);

    // b goes down; y announces to a meanwhile; b comes back empty and learns both.
    b.kill();
    http_announce(ha, 1003, 5, "").expect("y on a");
    let b = TrackerServer::start(make(pb, pa)).expect("b again");
    wait_for(hb, 2002, &[1001, 1003]);
    assert!(!http_announce(hb, 2002, 5, "&numwant=200")
        .expect("b")
        .0
        .contains(&6666));
    // And b's announces still reach a.
    wait_for(ha, 1001, &[2002]);
    b.stop().expect("b");
    a.stop().expect("a");
}
