//! Load generator for bench/tracker.sh (not part of `cargo test`).
//!
//! ```text
//! tracker_load serve PORT                 run btcore's tracker on 127.0.0.1:PORT (HTTP+UDP)
//! tracker_load hashes N                   print N info-hashes (hex), the bench's torrents
//! tracker_load http ADDR SECS CONNS N     HTTP announces for SECS on CONNS connections
//! tracker_load udp ADDR SECS THREADS N    UDP announces for SECS from THREADS sockets
//! tracker_load fill ADDR PEERS N          UDP-announce PEERS distinct peers over N torrents
//! ```
//!
//! Peers are (torrent i, port p) pairs from 127.0.0.1; announces pick them at random
//! among N torrents times 100 ports. Prints `<kind> <announces per second>`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use btcore_core::ids::{InfoHash, PeerId};
use btcore_core::rng::Rng;
use btcore_core::tracker::udp::{encode_announce, encode_connect};
use btcore_core::tracker::AnnounceRequest;
use btcore_host::tracker_server::{run, TrackerOptions};

const PORTS: u64 = 100;

fn hash(i: u64) -> InfoHash {
    InfoHash(btcore_core::hash::sha1(&i.to_le_bytes()))
}

fn pct(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("argument {i} missing or invalid; see the source"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let port: u16 = arg(&args, 2);
            let addr = Some(SocketAddr::from(([127, 0, 0, 1], port)));
            let opts = TrackerOptions {
                http: addr,
                udp: addr,
                max_swarms: 1_000_000,
                max_peers_per_swarm: 100_000,
                max_peers: 10_000_000,
                // Every simulated peer is 127.0.0.1.
                max_peers_per_ip: usize::MAX,
                max_swarms_per_ip: usize::MAX,
                max_total_peers_per_ip: usize::MAX,
                ..TrackerOptions::default()
            };
            let stop = Arc::new(AtomicBool::new(false));
            run(opts, stop).expect("tracker");
        }
        Some("hashes") => {
            let n: u64 = arg(&args, 2);
            for i in 0..n {
                println!("{}", hash(i));
            }
        }
        Some("http") => {
            let addr: SocketAddr = arg(&args, 2);
            let secs: u64 = arg(&args, 3);
            let conns: usize = arg(&args, 4);
            let n: u64 = arg(&args, 5);
            let rate = load(conns, secs, move |i, stop, count| {
                http_worker(addr, i, n, stop, count)
            });
            println!("http {rate:.0}");
        }
        Some("udp") => {
            let addr: SocketAddr = arg(&args, 2);
            let secs: u64 = arg(&args, 3);
            let threads: usize = arg(&args, 4);
            let n: u64 = arg(&args, 5);
            let rate = load(threads, secs, move |i, stop, count| {
                udp_worker(addr, i, n, stop, count)
            });
            println!("udp {rate:.0}");
        }
        Some("fill") => {
            let addr: SocketAddr = arg(&args, 2);
            let peers: u64 = arg(&args, 3);
            let n: u64 = arg(&args, 4);
            fill(addr, peers, n);
        }
        _ => eprintln!("usage: see the source of examples/tracker_load.rs"),
    }
}

fn load(
    workers: usize,
    secs: u64,
    f: impl Fn(usize, Arc<AtomicBool>, Arc<AtomicU64>) + Send + Sync + Copy + 'static,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|i| {
            let (stop, count) = (stop.clone(), count.clone());
            thread::spawn(move || f(i, stop, count))
        })
        .collect();
    thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::SeqCst);
    let n = count.load(Ordering::SeqCst);
    let elapsed = start.elapsed().as_secs_f64();
    for h in handles {
        let _ = h.join();
    }
    n as f64 / elapsed
}

fn http_worker(addr: SocketAddr, i: usize, n: u64, stop: Arc<AtomicBool>, count: Arc<AtomicU64>) {
    let mut rng = Rng::new(i as u64 + 1);
    let mut conn: Option<TcpStream> = None;
    let mut buf = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let t = rng.below(n);
        let port = 10_000 + rng.below(PORTS) as u16;
        let mut id = *b"-LD0001-000000000000";
        id[14..20].copy_from_slice(format!("{port:06}").as_bytes());
        let req = format!(
            "GET /announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left={}&compact=1&numwant=50 HTTP/1.1\r\nHost: x\r\n\r\n",
            pct(&hash(t).0),
            pct(&id),
            rng.below(2)
        );
        let s = match conn.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect(addr) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    conn.insert(s)
                }
                Err(_) => {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        if s.write_all(req.as_bytes()).is_err() {
            conn = None;
            continue;
        }
        match read_response(s, &mut buf) {
            Some(keep) => {
                count.fetch_add(1, Ordering::Relaxed);
                if !keep {
                    conn = None;
                }
            }
            None => conn = None,
        }
    }
}

/// Reads one response; `Some(keep_alive)` if whole.
fn read_response(s: &mut TcpStream, buf: &mut [u8]) -> Option<bool> {
    let mut have = 0;
    loop {
        let n = s.read(&mut buf[have..]).ok()?;
        if n == 0 {
            // Closed: fine if the response is there (read-to-EOF framing).
            return (have > 0).then_some(false);
        }
        have += n;
        let data = &buf[..have];
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let close = head.contains("connection: close") || head.starts_with("http/1.0");
            if let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                if have >= end + 4 + len {
                    return Some(!close);
                }
            }
        }
        if have == buf.len() {
            return None;
        }
    }
}

fn udp_connect(sock: &UdpSocket, addr: SocketAddr) -> Option<u64> {
    let mut pkt = [0u8; 16];
    encode_connect(0x1234, &mut pkt).ok()?;
    let mut buf = [0u8; 64];
    for _ in 0..10 {
        sock.send_to(&pkt, addr).ok()?;
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if n >= 16 && buf[..4] == [0, 0, 0, 0] {
                return Some(u64::from_be_bytes(buf[8..16].try_into().ok()?));
            }
        }
    }
    None
}

fn udp_worker(addr: SocketAddr, i: usize, n: u64, stop: Arc<AtomicBool>, count: Arc<AtomicU64>) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut rng = Rng::new(i as u64 + 100);
    let Some(mut id) = udp_connect(&sock, addr) else {
        return;
    };
    let mut connected = Instant::now();
    let mut pkt = [0u8; 98];
    let mut buf = [0u8; 2048];
    // A window of requests in flight, as a busy client population would have.
    const WINDOW: u32 = 16;
    let mut inflight = 0u32;
    while !stop.load(Ordering::Relaxed) {
        if connected.elapsed() > Duration::from_secs(50) {
            if let Some(c) = udp_connect(&sock, addr) {
                id = c;
                connected = Instant::now();
            }
            inflight = 0;
        }
        while inflight < WINDOW {
            let t = rng.below(n);
            let port = 10_000 + rng.below(PORTS) as u16;
            let mut req = AnnounceRequest::new(hash(t), PeerId([port as u8; 20]), port);
            req.left = rng.below(2);
            req.numwant = Some(50);
            let len = encode_announce(id, rng.next_u32(), &req, &mut pkt).expect("enc");
            let _ = sock.send_to(&pkt[..len], addr);
            inflight += 1;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                inflight -= 1;
                if n >= 20 && buf[..4] == [0, 0, 0, 1] {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => inflight = 0, // lost: refill the window
        }
    }
}

fn fill(addr: SocketAddr, peers: u64, n: u64) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let id = udp_connect(&sock, addr).expect("connect");
    let per = peers.div_ceil(n);
    assert!(per <= 50_000, "too many peers per torrent");
    let mut pkt = [0u8; 98];
    let mut buf = [0u8; 2048];
    let mut answered = 0u64;
    let mut k = 0u64;
    while k < peers {
        let batch = (peers - k).min(32);
        for j in 0..batch {
            let idx = k + j;
            let port = 1024 + (idx / n) as u16;
            let mut req = AnnounceRequest::new(hash(idx % n), PeerId([7; 20]), port);
            req.left = 1;
            req.numwant = Some(0);
            let len = encode_announce(id, idx as u32, &req, &mut pkt).expect("enc");
            let _ = sock.send_to(&pkt[..len], addr);
        }
        for _ in 0..batch {
            if sock.recv_from(&mut buf).is_ok() {
                answered += 1;
            }
        }
        k += batch;
    }
    println!("fill {answered}/{peers}");
}
