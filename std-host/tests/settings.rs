//! Settings of a running client, with two clients on 127.0.0.1 stepped by this test:
//! the reported download rate tracks the real one (measured from the bytes that
//! arrive) under a limit and after the limit changes; `Client::apply_settings` turns
//! the DHT on and off, moves the listen socket (an address in use changes nothing) and
//! closes what is over a lowered connection cap. Every wait has a deadline.

use btcore_core::session::TorrentState;
use btcore_host::client::{Client, ClientOptions};
use btcore_host::create::{create_torrent, CreateOptions};
use btcore_host::dht::DhtOptions;
use btcore_tests::free_port;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Tmp(PathBuf);

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp(name: &str) -> Tmp {
    let d = std::env::temp_dir().join(format!("btcore-settings-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    Tmp(d)
}

fn opts(dir: &Path) -> ClientOptions {
    ClientOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        save_dir: dir.to_path_buf(),
        use_trackers: false,
        ..ClientOptions::default()
    }
}

/// A seeder of `size` bytes of content and the torrent.
fn seeder(dir: &Path, size: usize) -> (Client, Vec<u8>) {
    let src = dir.join("seed");
    std::fs::create_dir_all(&src).expect("seed dir");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(src.join("content.bin"), &data).expect("content");
    let torrent = create_torrent(
        &src.join("content.bin"),
        &CreateOptions {
            piece_length: Some(64 * 1024),
            ..CreateOptions::default()
        },
    )
    .expect("torrent");
    let mut seed = Client::new(opts(&src)).expect("seeder");
    let id = seed.add_torrent_file(&torrent, None).expect("add");
    let end = Instant::now() + Duration::from_secs(60);
    while seed.torrents()[0].status.state != TorrentState::Seeding {
        assert!(Instant::now() < end, "the seeder's check did not end");
        seed.run_once(Duration::from_millis(5)).expect("run");
    }
    let _ = id;
    (seed, torrent)
}

/// Steps both clients for `d`.
fn run_both(a: &mut Client, b: &mut Client, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        a.run_once(Duration::from_millis(1)).expect("run");
        b.run_once(Duration::from_millis(1)).expect("run");
    }
}

/// The reported rate matches the rate at which bytes really arrived over the last two
/// seconds, three seconds after the download starts and three seconds after its limit
/// is raised. (An exponential average of weight 1/4 a second read about 60% of the
/// real rate at those points.)
#[test]
fn reported_rate_tracks_the_real_rate() {
    let dir = tmp("rate");
    let (mut seed, torrent) = seeder(&dir.0, 12 << 20);
    let limit = 1u64 << 20;
    let mut o = opts(&dir.0.join("dl"));
    o.download_limit = limit;
    let mut dl = Client::new(o.clone()).expect("downloader");
    let id = dl.add_torrent_file(&torrent, None).expect("add");
    dl.add_peer(id, seed.local_addr());
    let downloaded = |c: &Client| c.torrents()[0].status.downloaded;
    let end = Instant::now() + Duration::from_secs(60);
    while downloaded(&dl) == 0 {
        assert!(Instant::now() < end, "nothing downloaded");
        run_both(&mut seed, &mut dl, Duration::from_millis(5));
    }
    // (time, bytes) every 100 ms.
    let t0 = Instant::now();
    let mut samples: Vec<(Instant, u64)> = vec![(t0, downloaded(&dl))];
    let mut check = |dl: &mut Client, seed: &mut Client, secs: f64, what: &str| {
        while samples.last().expect("sample").0 < t0 + Duration::from_secs_f64(secs) {
            run_both(seed, dl, Duration::from_millis(100));
            samples.push((Instant::now(), downloaded(dl)));
        }
        let (t1, b1) = *samples.last().expect("sample");
        let (t2, b2) = *samples
            .iter()
            .rev()
            .find(|(t, _)| t1.duration_since(*t) >= Duration::from_secs(2))
            .expect("two seconds of samples");
        let real = (b1 - b2) as f64 / t1.duration_since(t2).as_secs_f64();
        let reported = dl.torrents()[0].status.download_rate as f64;
        eprintln!("{what}: reported {reported:.0} B/s, real {real:.0} B/s");
        assert!(
            (reported - real).abs() <= 0.15 * real,
            "{what}: reported {reported:.0} B/s, real {real:.0} B/s"
        );
    };
    check(&mut dl, &mut seed, 3.0, "3 s after the first byte");
    o.download_limit = 2 * limit;
    dl.apply_settings(&o).expect("apply");
    check(&mut dl, &mut seed, 6.0, "3 s after the limit doubled");
}

/// Whether a DHT node answers a `ping` on 127.0.0.1:`port` while `c` runs.
fn dht_answers(c: &mut Client, port: u16) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").expect("udp");
    s.set_nonblocking(true).expect("nonblocking");
    let q = b"d1:ad2:id20:btcore-settingsprobee1:q4:ping1:t2:pp1:y1:qe";
    let _ = s.send_to(q, ("127.0.0.1", port));
    let end = Instant::now() + Duration::from_millis(1500);
    let mut buf = [0u8; 1500];
    while Instant::now() < end {
        c.run_once(Duration::from_millis(5)).expect("run");
        if let Ok(n) = s.recv(&mut buf) {
            return buf[..n].windows(6).any(|w| w == b"1:y1:r");
        }
    }
    false
}

#[test]
fn apply_settings_switches_the_dht_and_moves_the_listener() {
    let dir = tmp("apply");
    let mut o = opts(&dir.0);
    let mut c = Client::new(o.clone()).expect("client");
    let dht_port = free_port();
    assert!(c.dht().is_none());
    assert!(!dht_answers(&mut c, dht_port));

    o.dht = Some(DhtOptions {
        port: dht_port,
        bootstrap: vec![format!("127.0.0.1:{}", free_port())],
        ..DhtOptions::default()
    });
    c.apply_settings(&o).expect("DHT on");
    assert!(c.dht().is_some());
    assert!(
        dht_answers(&mut c, dht_port),
        "the DHT does not answer once on"
    );
    o.dht = None;
    c.apply_settings(&o).expect("DHT off");
    assert!(c.dht().is_none());
    assert!(!dht_answers(&mut c, dht_port), "the DHT answers once off");

    // The listener moves.
    let old = c.local_addr();
    let port = free_port();
    o.listen = SocketAddr::from(([127, 0, 0, 1], port));
    c.apply_settings(&o).expect("new port");
    assert_eq!(c.local_addr().port(), port);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(
        TcpStream::connect(old).is_err(),
        "the old socket still listens"
    );

    // A port in use: an error, and nothing changed.
    let busy = TcpListener::bind("127.0.0.1:0").expect("busy");
    let mut bad = o.clone();
    bad.listen = busy.local_addr().expect("addr");
    bad.download_limit = 12_345;
    assert!(c.apply_settings(&bad).is_err());
    assert_eq!(c.local_addr().port(), port);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
}

/// A lowered connection cap closes what is over it at once.
#[test]
fn apply_settings_closes_connections_over_a_lowered_cap() {
    let dir = tmp("cap");
    let mut o = opts(&dir.0);
    let mut c = Client::new(o.clone()).expect("client");
    let streams: Vec<TcpStream> = (0..6)
        .map(|_| TcpStream::connect(c.local_addr()).expect("connect"))
        .collect();
    let end = Instant::now() + Duration::from_secs(10);
    while c.num_connections() < 6 {
        assert!(Instant::now() < end, "{} connections", c.num_connections());
        c.run_once(Duration::from_millis(5)).expect("run");
    }
    o.max_connections = 2;
    c.apply_settings(&o).expect("apply");
    assert!(c.num_connections() <= 2, "{}", c.num_connections());
    drop(streams);
}

/// Under a download limit that a seeder's payload keeps saturated, a peer that
/// connects still gets through its handshake at once: handshake bytes do not queue
/// for tokens behind the payload (they waited past the handshake deadline).
#[test]
fn a_saturated_download_limit_does_not_starve_a_new_peers_handshake() {
    use std::io::{Read, Write};
    let dir = tmp("handshake");
    let (mut seed, torrent) = seeder(&dir.0, 16 << 20);
    let mut o = opts(&dir.0.join("dl"));
    o.download_limit = 16 * 1024;
    let mut dl = Client::new(o).expect("downloader");
    let id = dl.add_torrent_file(&torrent, None).expect("add");
    dl.add_peer(id, seed.local_addr());
    let end = Instant::now() + Duration::from_secs(30);
    while dl.torrents()[0].status.downloaded < 64 * 1024 {
        assert!(Instant::now() < end, "the limited download did not start");
        run_both(&mut seed, &mut dl, Duration::from_millis(5));
    }
    let info_hash = dl.torrents()[0].status.info_hash;
    let mut peer = TcpStream::connect(dl.local_addr()).expect("connect");
    peer.set_nonblocking(true).expect("nonblocking");
    let mut hs = vec![19u8];
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0; 8]);
    hs.extend_from_slice(&info_hash.0);
    hs.extend_from_slice(b"-XX0001-handshakes00");
    peer.write_all(&hs).expect("handshake");
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < 68 {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "no handshake back in 2 s ({} bytes)",
            got.len()
        );
        run_both(&mut seed, &mut dl, Duration::from_millis(5));
        let mut buf = [0u8; 256];
        match peer.read(&mut buf) {
            Ok(0) => panic!("the downloader closed the connection"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(&got[1..20], b"BitTorrent protocol");
    assert_eq!(&got[28..48], &info_hash.0);
}

/// Two seeders under one download limit share it: the connections the limit holds
/// back take turns at its tokens (served in one order, the first took them all).
#[test]
fn a_download_limit_is_shared_between_peers() {
    let dir = tmp("share");
    let (mut seed_a, torrent) = seeder(&dir.0.join("a"), 16 << 20);
    let (mut seed_b, _) = seeder(&dir.0.join("b"), 16 << 20);
    let mut o = opts(&dir.0.join("dl"));
    o.download_limit = 64 * 1024;
    let mut dl = Client::new(o).expect("downloader");
    let id = dl.add_torrent_file(&torrent, None).expect("add");
    dl.add_peer(id, seed_a.local_addr());
    dl.add_peer(id, seed_b.local_addr());
    let step = |a: &mut Client, b: &mut Client, dl: &mut Client| {
        a.run_once(Duration::from_millis(1)).expect("run");
        b.run_once(Duration::from_millis(1)).expect("run");
        dl.run_once(Duration::from_millis(1)).expect("run");
    };
    let end = Instant::now() + Duration::from_secs(30);
    while dl.peers(id).iter().filter(|p| p.downloaded > 0).count() < 2 {
        assert!(Instant::now() < end, "not both peers sent");
        step(&mut seed_a, &mut seed_b, &mut dl);
    }
    let totals = |dl: &Client| {
        let mut v: Vec<(SocketAddr, u64)> = dl
            .peers(id)
            .iter()
            .map(|p| (p.addr, p.downloaded))
            .collect();
        v.sort();
        v
    };
    let before = totals(&dl);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(4) {
        step(&mut seed_a, &mut seed_b, &mut dl);
    }
    let got: Vec<u64> = totals(&dl)
        .iter()
        .zip(&before)
        .map(|((_, n), (_, b))| n - b)
        .collect();
    let total: u64 = got.iter().sum();
    assert!(total > 0, "{got:?}");
    assert!(
        got.iter().all(|&g| g * 4 >= total),
        "one peer took the limit: {got:?}"
    );
}
