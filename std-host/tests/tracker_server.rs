//! btcore's tracker on 127.0.0.1: our tracker client and raw HTTP/UDP requests against
//! it, bad input, restarts with a state file, and two trackers in sync. Every wait is
//! bounded; every server is stopped (or killed) before its test returns.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
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
use btcore_tests::free_port;
use mio::{Events, Poll, Token as IoToken, Waker};

const HASH: [u8; 20] = *b"btcore-tracker-test!";
const WAIT: Duration = Duration::from_secs(10);

fn pct(bytes: &[u8]) -> String {
    let mut s = String::new();
    let _ = btcore_core::tracker::percent_encode(bytes, &mut s);
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
        tracker: url.to_string(),
        info_hash: InfoHash(HASH),
        peer_id: PeerId(id),
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event: Some(Event::Started),
        numwant: Some(50),
        seq: 0,
    }
}

#[test]
fn client_over_http_and_udp_sees_the_other_peer() {
    let server = TrackerServer::start(TrackerOptions {
        admin_key: Some("adm".into()),
        ..opts()
    })
    .expect("start");
    let h = server.http_addr().expect("http");
    let u = server.udp_addr().expect("udp");
    let http_url = format!("http://{h}/announce");
    let udp_url = format!("udp://{u}/announce");
    let mut c = client();

    let r = c.announce(job(1, &http_url, 40001, 100));
    assert_eq!(r.error, None);
    assert_eq!(r.tracker, http_url);
    assert!(r.peers.is_empty());

    let r = c.announce(job(2, &udp_url, 40002, 100));
    assert_eq!(r.error, None);
    assert_eq!(r.tracker, udp_url);
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

    // The stats page knows the torrent (and lists it to the admin only).
    let (code, body) = get(h, "/stats.json?key=adm");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["peers"], 2);
    let hex = String::from_utf8(InfoHash(HASH).to_hex().to_vec()).expect("hex");
    assert_eq!(v["torrents"][0]["info_hash"], hex);
    let (code, body) = get(h, "/?key=adm");
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains(&hex));
    server.stop().expect("stop");
}

#[test]
fn seeds_numwant_and_scrape_over_raw_requests() {
    // Every peer here is 127.0.0.1: no per-address cap.
    let server = TrackerServer::start(TrackerOptions {
        max_peers_per_ip: usize::MAX,
        ..opts()
    })
    .expect("start");
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
            if reg
                .restore_state(btcore_core::time::Instant::ZERO, &data)
                .is_ok()
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
    let (code, body) = get(h, "/stats.json?key=s3cret%20%26key");
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

// ------------------------------------------------------------------ hostile clients

/// A TCP connection to `to` from the loopback address `127.0.0.<last>` (Linux routes
/// all of 127.0.0.0/8 to the loopback interface).
fn connect_from(last: [u8; 3], to: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let from = SocketAddr::from(([127, last[0], last[1], last[2]], 0));
    s.bind(&from.into()).expect("bind");
    s.connect_timeout(&to.into(), WAIT).expect("connect");
    s.into()
}

/// Reads `stream` until `n` whole answers (each with its `Content-Length` body) have
/// come, or the deadline passes; returns the status codes.
fn read_answers(stream: &mut TcpStream, n: usize) -> Vec<u16> {
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let end = Instant::now() + Duration::from_secs(60);
    let mut buf = Vec::new();
    let mut codes = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while codes.len() < n {
        assert!(Instant::now() < end, "{} of {n} answers", codes.len());
        // Parse what is there.
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut r = httparse::Response::new(&mut headers);
            let Ok(httparse::Status::Complete(head)) = r.parse(&buf) else {
                break;
            };
            let len: usize = r
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .expect("content-length");
            if buf.len() < head + len {
                break;
            }
            codes.push(r.code.expect("code"));
            buf.drain(..head + len);
        }
        if codes.len() >= n {
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) => panic!("closed after {} of {n} answers", codes.len()),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) => panic!("read after {} of {n} answers: {e}", codes.len()),
        }
    }
    codes
}

/// A pipelined burst of 4 MiB on one connection: framing is linear (the input bytes
/// moved by compaction stay below the bytes received; copying the buffer after every
/// request moved gigabytes), and no turn answers more than its budget of requests, so
/// UDP and the other connections are served between turns.
#[test]
fn pipelined_burst_costs_linear_work_and_yields_between_turns() {
    let server = TrackerServer::start(opts()).expect("start");
    let h = server.http_addr().expect("http");
    let one = format!(
        "GET /scrape?info_hash={} HTTP/1.1\r\nHost: x\r\n\r\n",
        pct(&HASH)
    );
    let n = (4 << 20) / one.len();
    let burst = one.repeat(n).into_bytes();
    let mut s = TcpStream::connect_timeout(&h, WAIT).expect("connect");
    let mut w = s.try_clone().expect("clone");
    let writer = thread::spawn(move || w.write_all(&burst));
    let codes = read_answers(&mut s, n);
    writer.join().expect("writer").expect("write");
    assert!(codes.iter().all(|&c| c == 200));
    // UDP is answered right after.
    let u = Udp::new(server.udp_addr().expect("udp"));
    u.connect();
    let c = server.http_counters();
    assert_eq!(c.requests, n as u64);
    assert!(c.bytes_in >= (n * one.len()) as u64);
    assert!(
        c.bytes_moved <= c.bytes_in,
        "{} bytes moved for {} received",
        c.bytes_moved,
        c.bytes_in
    );
    let budget = TrackerOptions::default().limits.requests_per_turn as u64;
    assert!(
        c.max_requests_per_turn <= budget,
        "{} requests answered in one turn",
        c.max_requests_per_turn
    );
    server.stop().expect("stop");
}

/// Requests whose answers are never read: the connection is no longer read or parsed
/// once its queued output passes the cap, so what the tracker holds stays bounded
/// (it grew by the size of every answer before); reading later gets every answer.
#[test]
fn unread_answers_are_held_back_not_queued() {
    let hashes: Vec<InfoHash> = (0..2000u32)
        .map(|i| InfoHash(btcore_core::hash::sha1(&i.to_be_bytes())))
        .collect();
    let server = TrackerServer::start(TrackerOptions {
        allow_list: true,
        register: hashes,
        admin_key: Some("k".into()),
        ..opts()
    })
    .expect("start");
    let h = server.http_addr().expect("http");
    let page = get(h, "/stats.json?key=k").1.len();
    assert!(page > 100_000, "a large page: {page}");
    let n = 500;
    let mut s = TcpStream::connect_timeout(&h, WAIT).expect("connect");
    s.write_all(
        "GET /stats.json?key=k HTTP/1.1\r\nHost: x\r\n\r\n"
            .repeat(n)
            .as_bytes(),
    )
    .expect("write");
    // Other clients are served meanwhile; once they are, the burst had its turns.
    for _ in 0..3 {
        assert_eq!(get(h, "/stats.json").0, 200);
    }
    let c = server.http_counters();
    let cap = TrackerOptions::default().limits.max_output;
    assert!(
        c.peak_output <= cap + page + 512,
        "{} bytes queued on one connection",
        c.peak_output
    );
    assert!(
        c.peak_buffers <= 4 * (cap + page),
        "{} bytes in connection buffers",
        c.peak_buffers
    );
    assert!(
        c.requests < n as u64,
        "the unread connection was answered {} times",
        c.requests
    );
    // Reading resumes the answers, all of them.
    let codes = read_answers(&mut s, n);
    assert_eq!(codes.len(), n);
    server.stop().expect("stop");
}

/// Flag down every socket the server closed; how many of `conns` are still open.
fn still_open(conns: &mut [TcpStream]) -> usize {
    let mut open = 0;
    let mut b = [0u8; 16];
    for c in conns.iter_mut() {
        c.set_nonblocking(true).expect("nonblocking");
        match c.read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open += 1,
            _ => {}
        }
    }
    open
}

/// Raises the soft limit of open files to the hard one; returns it.
fn raise_nofile() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed, nothing else.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
    // `rlim_t` is 32 bits on some targets (armv7 glibc).
    #[allow(clippy::useless_conversion)]
    u64::from(l.rlim_cur)
}

/// Every connection slot from one address, then from 140: an honest client from yet
/// another address is still served. One address keeps at most its per-address share
/// (its least recently active connections make room for its newer ones), and a full
/// table evicts from the address holding the most instead of refusing newcomers.
#[test]
fn connection_floods_lock_no_one_out() {
    let nofile = raise_nofile();
    assert!(
        nofile >= 12_000,
        "this test needs 12,000 open files, have {nofile}"
    );
    let server = TrackerServer::start(opts()).expect("start");
    let h = server.http_addr().expect("http");
    let limits = TrackerOptions::default().limits;
    let mut flood: Vec<TcpStream> = (0..limits.max_connections + 100)
        .map(|_| connect_from([0, 0, 1], h))
        .collect();
    let (code, _) = {
        let mut s = connect_from([0, 0, 2], h);
        s.write_all(b"GET /stats.json HTTP/1.1\r\nConnection: close\r\n\r\n")
            .expect("write");
        let codes = read_answers(&mut s, 1);
        (codes[0], ())
    };
    assert_eq!(code, 200, "an honest client is served");
    let open = still_open(&mut flood);
    assert!(
        open <= limits.max_connections_per_ip,
        "one address holds {open} connections"
    );
    drop(flood);

    // 140 addresses with their share each: more than the table holds.
    let per = limits.max_connections_per_ip;
    let addrs = limits.max_connections / per + 12;
    let mut many = Vec::new();
    for a in 0..addrs {
        for _ in 0..per {
            many.push(connect_from([1, (a / 250) as u8, (a % 250) as u8 + 1], h));
        }
    }
    let mut s = connect_from([2, 0, 1], h);
    s.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .expect("write");
    assert_eq!(read_answers(&mut s, 1), [200], "a newcomer is served");
    let open = still_open(&mut many);
    assert!(open < limits.max_connections, "{open} open");
    server.stop().expect("stop");
}

/// A slow client that has connected but not yet sent its request is not cut off by a
/// flood of connections from many addresses, one each: a connection younger than
/// `min_age_to_evict` does not give way, and the flood's newcomers are closed instead.
/// (The least recently active connection used to go first: the slow client.)
#[test]
fn a_connection_flood_cannot_evict_young_connections() {
    let mut o = opts();
    o.limits.max_connections = 32;
    o.limits.min_age_to_evict = btcore_core::time::Duration::from_secs(60);
    let server = TrackerServer::start(o).expect("start");
    let h = server.http_addr().expect("http");
    let mut slow = connect_from([3, 0, 1], h);
    let flood: Vec<TcpStream> = (0..200u32)
        .map(|a| connect_from([1, (a / 250) as u8, (a % 250) as u8 + 1], h))
        .collect();
    // Every connection is accepted, or refused, before the slow client speaks.
    let end = Instant::now() + WAIT;
    loop {
        let c = server.http_counters();
        if c.connections + c.refused_connections >= 201 {
            break;
        }
        assert!(Instant::now() < end, "{c:?}");
        thread::sleep(Duration::from_millis(10));
    }
    slow.write_all(b"GET /stats.json HTTP/1.1\r\nConnection: close\r\n\r\n")
        .expect("write");
    assert_eq!(
        read_answers(&mut slow, 1),
        [200],
        "the slow client is served"
    );
    let c = server.http_counters();
    assert!(c.refused_connections >= 200 - 31, "{c:?}");
    assert_eq!(c.evicted, 0);
    drop(flood);
    server.stop().expect("stop");
}

/// A connection to `to` from `127.<last>` whose receive buffer is small, so that the
/// answers it does not read pile up at the server soon.
fn connect_small_from(last: [u8; 3], to: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.set_recv_buffer_size(4096).expect("rcvbuf");
    let from = SocketAddr::from(([127, last[0], last[1], last[2]], 0));
    s.bind(&from.into()).expect("bind");
    s.connect_timeout(&to.into(), WAIT).expect("connect");
    s.into()
}

/// Waits until at least `n` connections have been closed by a deadline (bounded).
fn wait_timed_out(server: &TrackerServer, n: u64) {
    let end = Instant::now() + Duration::from_secs(60);
    while server.http_counters().timed_out < n {
        assert!(Instant::now() < end, "{:?}", server.http_counters());
        thread::sleep(Duration::from_millis(50));
    }
}

/// Forty connections from forty addresses pipelining requests and never reading the
/// answers, more than the kernel's socket buffers take: the output held by all of
/// them stays within the process-wide budget plus about one answer each (each
/// connection used to hold its own 64 KiB and more), and honest clients are served
/// meanwhile.
#[test]
fn unread_answers_on_many_connections_stay_within_the_process_budget() {
    let hashes: Vec<InfoHash> = (0..30u32)
        .map(|i| InfoHash(btcore_core::hash::sha1(&i.to_be_bytes())))
        .collect();
    let mut o = TrackerOptions {
        allow_list: true,
        register: hashes,
        admin_key: Some("k".into()),
        ..opts()
    };
    o.limits.max_output_total = 256 * 1024;
    o.limits.idle_timeout = btcore_core::time::Duration::from_secs(3);
    let budget = o.limits.max_output_total;
    let server = TrackerServer::start(o).expect("start");
    let h = server.http_addr().expect("http");
    let page = get(h, "/stats.json?key=k").1.len() + 200;
    // 6 MB of answers for each connection: more than loopback buffers hold (4 MB).
    let (conns, n) = (40, (6 << 20) / page);
    let req = "GET /stats.json?key=k HTTP/1.1\r\nHost: x\r\n\r\n".repeat(n);
    let writers: Vec<_> = (0..conns)
        .map(|a| {
            let mut s = connect_small_from([4, 0, a as u8 + 1], h);
            let req = req.clone();
            // Blocks once the server stops reading; fails once it closes.
            thread::spawn(move || {
                let _ = s.write_all(req.as_bytes());
                s
            })
        })
        .collect();
    // Honest clients are served while the flood's answers pile up.
    for _ in 0..3 {
        assert_eq!(get(h, "/stats.json").0, 200, "an honest client is served");
    }
    // The flood is closed by the idle timeout once no answer moves.
    wait_timed_out(&server, conns as u64);
    let c = server.http_counters();
    assert!(
        c.peak_output_total <= budget + conns * 4 * page,
        "{} bytes of output held ({page} bytes a page)",
        c.peak_output_total
    );
    assert!(c.requests < (conns * n) as u64, "{c:?}");
    for w in writers {
        drop(w.join().expect("writer"));
    }
    server.stop().expect("stop");
}

/// Two hundred connections from two hundred addresses each sending 7 KB of a request
/// head that never ends: the input held by all of them stays within the process-wide
/// budget plus 2 KiB each (each used to hold its 7 KB), and honest clients, whose
/// requests are shorter, are served meanwhile.
#[test]
fn unfinished_heads_on_many_connections_stay_within_the_process_budget() {
    let mut o = opts();
    o.limits.max_input_total = 64 * 1024;
    let budget = o.limits.max_input_total;
    let server = TrackerServer::start(o).expect("start");
    let h = server.http_addr().expect("http");
    let conns = 200;
    let head = format!("GET /announce?{}", "a".repeat(7000));
    let flood: Vec<TcpStream> = (0..conns)
        .map(|a| {
            let mut s = connect_from([5, (a / 250) as u8, (a % 250) as u8 + 1], h);
            s.write_all(head.as_bytes()).expect("write");
            s
        })
        .collect();
    assert_eq!(get(h, "/stats.json").0, 200, "an honest client is served");
    // Every head is cut at its deadline (10 s); what was read meanwhile is counted.
    wait_timed_out(&server, conns as u64);
    let c = server.http_counters();
    assert!(
        c.peak_input <= budget + conns * 2 * 2048 + 64 * 1024,
        "{} bytes of input held",
        c.peak_input
    );
    drop(flood);
    server.stop().expect("stop");
}

/// A request trickling in a byte at a time is cut at the header deadline (10 s after
/// its first byte), however steadily the bytes come; every byte used to restart the
/// idle timer.
#[test]
fn slowloris_is_cut_at_the_header_deadline() {
    let server = TrackerServer::start(opts()).expect("start");
    let h = server.http_addr().expect("http");
    let mut s = TcpStream::connect_timeout(&h, WAIT).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(250)))
        .expect("timeout");
    let end = Instant::now() + Duration::from_secs(25);
    let mut closed = false;
    let mut b = [0u8; 256];
    let mut sent = 0;
    while Instant::now() < end {
        if s.write_all(b"G").is_err() {
            closed = true;
            break;
        }
        sent += 1;
        match s.read(&mut b) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "still open after {sent} bytes over 25 s");
    // An honest client is served as usual.
    assert_eq!(get(h, "/stats.json").0, 200);
    server.stop().expect("stop");
}

/// `POST /sync` is judged at its head: refused at once, before any body byte is read,
/// when sync is off, without the auth header, with a bad one, or with a body over the
/// cap; bodies in flight on all connections together stay within a budget.
#[test]
fn sync_is_judged_at_its_head() {
    // Sync off.
    let server = TrackerServer::start(opts()).expect("start");
    let h = server.http_addr().expect("http");
    let mut s = TcpStream::connect_timeout(&h, WAIT).expect("connect");
    s.write_all(b"POST /sync HTTP/1.1\r\nContent-Length: 8000000\r\n\r\n")
        .expect("write");
    assert_eq!(read_answers(&mut s, 1), [403], "refused without its body");
    server.stop().expect("stop");

    let key = "shared";
    let server = TrackerServer::start(TrackerOptions {
        sync_key: Some(key.into()),
        ..opts()
    })
    .expect("start");
    let h = server.http_addr().expect("http");
    let auth = |len: u64| {
        String::from_utf8(btcore_core::tracker::server::sync_auth(key.as_bytes(), len).to_vec())
            .expect("hex")
    };
    let head = |len: u64, auth: Option<String>| {
        let mut r = format!("POST /sync HTTP/1.1\r\nContent-Length: {len}\r\n");
        if let Some(a) = auth {
            r.push_str(&format!("X-Btcore-Sync-Auth: {a}\r\n"));
        }
        r.push_str("\r\n");
        r
    };
    let limits = TrackerOptions::default().limits;
    let big = limits.max_sync_body as u64;
    let cases = [
        (head(big, None), 403),
        (head(big, Some(auth(big - 1))), 403),
        (head(big + 1, Some(auth(big + 1))), 413),
    ];
    for (req, code) in cases {
        let mut s = TcpStream::connect_timeout(&h, WAIT).expect("connect");
        s.write_all(req.as_bytes()).expect("write");
        assert_eq!(read_answers(&mut s, 1), [code], "{req}");
    }
    // Two heads of 8 MiB bodies fill the 16 MiB budget; a third waits its turn (503).
    let mut held = Vec::new();
    for _ in 0..limits.max_body_bytes / limits.max_sync_body {
        let mut s = TcpStream::connect_timeout(&h, WAIT).expect("connect");
        s.write_all(head(big, Some(auth(big))).as_bytes())
            .expect("write");
        s.write_all(&[b'x'; 1000]).expect("part of a body");
        held.push(s);
    }
    let end = Instant::now() + WAIT;
    while server.http_counters().bodies_in_flight < limits.max_body_bytes {
        assert!(Instant::now() < end, "the heads were never accepted");
        thread::sleep(Duration::from_millis(20));
    }
    let mut s = TcpStream::connect_timeout(&h, WAIT).expect("connect");
    s.write_all(head(big, Some(auth(big))).as_bytes())
        .expect("write");
    assert_eq!(read_answers(&mut s, 1), [503]);
    drop(held);
    // A real batch with its header is applied.
    let mut batch = Vec::new();
    btcore_core::tracker::server::encode_sync(
        &[btcore_core::tracker::server::SyncEntry {
            info_hash: InfoHash(HASH),
            addr: "127.0.0.9:6666".parse().expect("a"),
            seed: true,
            ttl_secs: 60,
        }],
        key.as_bytes(),
        &mut batch,
    );
    let end = Instant::now() + WAIT;
    loop {
        let mut s = TcpStream::connect_timeout(&h, WAIT).expect("connect");
        s.write_all(head(batch.len() as u64, Some(auth(batch.len() as u64))).as_bytes())
            .expect("write");
        s.write_all(&batch).expect("body");
        let code = read_answers(&mut s, 1)[0];
        if code == 200 {
            break;
        }
        // 503 until the server has seen the held connections close.
        assert_eq!(code, 503);
        assert!(Instant::now() < end, "the budget never came back");
        thread::sleep(Duration::from_millis(50));
    }
    let c = server.http_counters();
    assert!(
        c.peak_buffers <= limits.max_body_bytes + (1 << 20),
        "{} bytes buffered",
        c.peak_buffers
    );
    server.stop().expect("stop");
}

/// A UDP client bound to `127.0.0.<last>`.
fn udp_from(last: [u8; 3], server: SocketAddr) -> Udp {
    let sock =
        UdpSocket::bind(SocketAddr::from(([127, last[0], last[1], last[2]], 0))).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    Udp { sock, server }
}

/// A UDP announce of `port` as a leecher; the ports of the peers in the reply.
fn udp_announce(u: &Udp, id: u64, hash: [u8; 20], port: u16, event: Option<Event>) -> Vec<u16> {
    let mut req = AnnounceRequest::new(InfoHash(hash), PeerId([port as u8; 20]), port);
    req.left = 5;
    req.numwant = Some(200);
    req.event = event;
    let mut pkt = [0u8; 98];
    let n = encode_announce(id, u32::from(port), &req, &mut pkt).expect("enc");
    for _ in 0..5 {
        u.sock.send_to(&pkt[..n], u.server).expect("send");
        let mut buf = [0u8; 4096];
        // Replies to earlier requests may come first: skip to this one's.
        while let Ok((k, _)) = u.sock.recv_from(&mut buf) {
            let resp = &buf[..k];
            if resp.get(4..8) != Some(&u32::from(port).to_be_bytes()[..]) {
                continue;
            }
            let Ok(UdpResponse::Announce(a)) =
                parse_response(resp, u32::from(port), Action::Announce, false)
            else {
                panic!("announce {resp:?}");
            };
            let mut ports: Vec<u16> = a.peers.map(|p| p.port()).collect();
            ports.sort_unstable();
            return ports;
        }
    }
    panic!("no reply to the announce of {port}");
}

/// A UDP announce of `port` as a leecher to `hash`: the ports of the peers in the
/// reply, or `None` when the tracker answered with an error.
fn udp_try_announce(u: &Udp, id: u64, hash: [u8; 20], port: u16) -> Option<Vec<u16>> {
    let mut req = AnnounceRequest::new(InfoHash(hash), PeerId([port as u8; 20]), port);
    req.left = 5;
    req.numwant = Some(200);
    let mut pkt = [0u8; 98];
    let n = encode_announce(id, u32::from(port), &req, &mut pkt).expect("enc");
    for _ in 0..5 {
        u.sock.send_to(&pkt[..n], u.server).expect("send");
        let mut buf = [0u8; 4096];
        while let Ok((k, _)) = u.sock.recv_from(&mut buf) {
            let resp = &buf[..k];
            if resp.get(4..8) != Some(&u32::from(port).to_be_bytes()[..]) {
                continue;
            }
            return match parse_response(resp, u32::from(port), Action::Announce, false) {
                Ok(UdpResponse::Announce(a)) => Some(a.peers.map(|p| p.port()).collect()),
                _ => None,
            };
        }
    }
    panic!("no reply to the announce of {port}");
}

/// One address announcing to 200 new torrents over UDP fills a table of 50 swarms: a
/// newcomer's new torrent was then refused ("tracker is tracking too many torrents")
/// for as long as the flood's peers lived. Now the swarms held only by the address
/// present in the most swarms give way, and the honest swarm stays.
#[test]
fn one_address_cannot_fill_the_swarm_table() {
    let server = TrackerServer::start(TrackerOptions {
        max_swarms: 50,
        ..opts()
    })
    .expect("start");
    let addr = server.udp_addr().expect("udp");
    let honest = udp_from([6, 0, 2], addr);
    let hid = honest.connect();
    assert!(udp_try_announce(&honest, hid, HASH, 7000).is_some());
    let bad = udp_from([6, 0, 1], addr);
    let bid = bad.connect();
    for j in 0..200u32 {
        let h = btcore_core::hash::sha1(&j.to_be_bytes());
        let _ = udp_try_announce(&bad, bid, h, 20_000 + (j % 8) as u16);
    }
    let fresh = udp_from([6, 0, 3], addr);
    let fid = fresh.connect();
    let h = btcore_core::hash::sha1(b"a new torrent");
    assert!(
        udp_try_announce(&fresh, fid, h, 7001).is_some(),
        "a new torrent is refused"
    );
    let peers = udp_try_announce(&fresh, fid, HASH, 7002).expect("the honest swarm");
    assert_eq!(peers, [7000], "the honest peer stays");
    server.stop().expect("stop");
}

/// One address announcing 25,000 ports to a swarm of 10 honest peers: with the
/// defaults (20,000 peers a swarm) it used to push every honest peer out; now it
/// holds its per-address share and the honest peers all stay listed.
#[test]
fn one_address_cannot_take_over_a_swarm() {
    let server = TrackerServer::start(opts()).expect("start");
    let addr = server.udp_addr().expect("udp");
    let honest: Vec<(Udp, u64)> = (10..20)
        .map(|i| {
            let u = udp_from([0, 0, i], addr);
            let id = u.connect();
            (u, id)
        })
        .collect();
    for (i, (u, id)) in honest.iter().enumerate() {
        udp_announce(u, *id, HASH, 7000 + i as u16, Some(Event::Started));
    }
    // The flood, from 127.0.0.1, without waiting for replies (bounded: 25,000).
    let bad = udp_from([0, 0, 1], addr);
    let bid = bad.connect();
    let mut pkt = [0u8; 98];
    for p in 0..25_000u16 {
        let mut req = AnnounceRequest::new(InfoHash(HASH), PeerId([9; 20]), 20_000 + p);
        req.left = 5;
        let n = encode_announce(bid, 1, &req, &mut pkt).expect("enc");
        bad.sock.send_to(&pkt[..n], addr).expect("send");
        if p % 64 == 0 {
            // Drain replies so the socket keeps up.
            let _ = bad.sock.set_nonblocking(true);
            let mut b = [0u8; 2048];
            while bad.sock.recv_from(&mut b).is_ok() {}
            let _ = bad.sock.set_nonblocking(false);
        }
    }
    // Its last announce answered: everything before it was handled.
    udp_announce(&bad, bid, HASH, 50_000, None);
    let (u, id) = &honest[0];
    let peers = udp_announce(u, *id, HASH, 7000, None);
    for i in 1..10u16 {
        assert!(
            peers.contains(&(7000 + i)),
            "honest {} gone: {peers:?}",
            7000 + i
        );
    }
    assert!(peers.len() <= 9 + 8, "{} peers", peers.len());
    server.stop().expect("stop");
}

/// `completed` announces from one address on 100 torrents, then `stopped`: the swarms
/// go once their counts have had their time (twice the interval here), restored from
/// the state file or not; they used to stay for good.
#[test]
fn completed_announces_do_not_pin_swarms() {
    let dir = temp_dir("pin");
    let state = dir.join("tracker.state");
    let o = TrackerOptions {
        interval_secs: 1,
        state: Some(state.clone()),
        ..opts()
    };
    let server = TrackerServer::start(o.clone()).expect("start");
    let h = server.http_addr().expect("http");
    let swarms = |h: SocketAddr| -> u64 {
        let (code, body) = get(h, "/stats.json");
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        v["swarms"].as_u64().expect("swarms")
    };
    for i in 0..100u32 {
        let hash = btcore_core::hash::sha1(&i.to_be_bytes());
        for extra in ["&event=completed", "&event=stopped"] {
            let (code, _) = get(h, &announce_query(&hash, 1, 0, extra));
            assert_eq!(code, 200);
        }
    }
    assert_eq!(swarms(h), 100);
    server.stop().expect("stop saves");
    assert!(std::fs::metadata(&state).expect("state").len() > 2000);

    let server = TrackerServer::start(o).expect("restart");
    let h = server.http_addr().expect("http");
    let end = Instant::now() + Duration::from_secs(20);
    while swarms(h) > 0 {
        assert!(Instant::now() < end, "{} swarms still pinned", swarms(h));
        thread::sleep(Duration::from_millis(200));
    }
    server.stop().expect("stop saves");
    assert!(std::fs::metadata(&state).expect("state").len() < 100);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With an allow list, the stats pages give counts to anyone and the info-hashes to
/// the admin only.
#[test]
fn stats_list_info_hashes_to_the_admin_only() {
    let server = TrackerServer::start(TrackerOptions {
        allow_list: true,
        register: vec![InfoHash(HASH)],
        admin_key: Some("adm".into()),
        ..opts()
    })
    .expect("start");
    let h = server.http_addr().expect("http");
    let hex = String::from_utf8(InfoHash(HASH).to_hex().to_vec()).expect("hex");
    for path in ["/stats.json", "/", "/stats.json?key=wrong", "/?key=nope"] {
        let (code, body) = get(h, path);
        assert_eq!(code, 200);
        assert!(
            !String::from_utf8_lossy(&body).contains(&hex),
            "{path} lists the info-hash"
        );
    }
    let (_, body) = get(h, "/stats.json");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["swarms"], 0);
    for path in ["/stats.json?key=adm", "/?key=adm"] {
        let (_, body) = get(h, path);
        assert!(String::from_utf8_lossy(&body).contains(&hex), "{path}");
    }
    server.stop().expect("stop");
}
