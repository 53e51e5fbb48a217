//! BEP 14 Local Service Discovery between two `LsdHost`s on one machine.
//!
//! LSD multicasts on the LAN, so the test never runs on the real network: the outer
//! test re-executes this binary inside a new network namespace (`unshare -n`, as
//! root) with only `lo` up and the multicast range routed to it (with source
//! 127.0.0.1: without it the kernel sends from 0.0.0.0, as `lo`'s address has host
//! scope), and the inner test does the work there. Without namespaces (not root, no `unshare`), the test prints
//! "skipped: no network namespace" and passes, unless `BTCORE_INTEROP=1` demands it.

use btcore_core::ids::InfoHash;
use btcore_core::lsd::{self, ANNOUNCE_INTERVAL};
use btcore_core::time::Instant;
use btcore_host::lsd::{LsdHost, LsdOptions};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

const INNER: &str = "BTCORE_LSD_NETNS";
const SETUP: &str = "ip link set lo up && ip link set lo multicast on \
    && ip route add 224.0.0.0/4 dev lo src 127.0.0.1 \
    && BTCORE_LSD_NETNS=1 exec \"$0\" --exact lsd_inside --nocapture --test-threads=1";

fn works(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn lsd_in_a_network_namespace() {
    if std::env::var_os(INNER).is_some() {
        return;
    }
    if !works("unshare", &["-n", "true"]) || !works("ip", &["-V"]) {
        assert!(
            std::env::var("BTCORE_INTEROP").as_deref() != Ok("1"),
            "BTCORE_INTEROP=1 but `unshare -n true` or `ip` fails (run as root with \
             util-linux and iproute2)"
        );
        println!("skipped: no network namespace");
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new("unshare")
        .args(["-n", "--", "sh", "-c", SETUP])
        .arg(&exe)
        .output()
        .expect("runs unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "inner test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // The inner run must really have run the test, not filtered it away.
    assert!(
        stdout.contains("test result: ok. 1 passed") && stdout.contains("lsd_inside: done"),
        "inner test did not run:\n{stdout}\n{stderr}"
    );
}

fn ih(n: u8) -> InfoHash {
    InfoHash([n; 20])
}

fn host(port: u16) -> LsdHost {
    LsdHost::new(LsdOptions {
        port_to_announce: port,
        ..LsdOptions::default()
    })
    .expect("binds and joins the group")
}

/// What one host reported.
type Heard = Vec<(InfoHash, SocketAddr)>;

/// Reads both hosts until `done` holds (given the hosts and what each reported), and
/// fails with `what` after 5 s.
fn until_hosts(
    a: &mut LsdHost,
    b: &mut LsdHost,
    now: Instant,
    what: &str,
    done: impl Fn(&LsdHost, &LsdHost, &Heard, &Heard) -> bool,
) -> (Heard, Heard) {
    let (mut ha, mut hb) = (Vec::new(), Vec::new());
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        ha.extend(a.read(now));
        hb.extend(b.read(now));
        if done(a, b, &ha, &hb) {
            return (ha, hb);
        }
        assert!(
            std::time::Instant::now() < end,
            "timed out after 5 s waiting for {what}; a heard {ha:?}, b heard {hb:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads both hosts until `done` holds; fails with `what` after 5 s.
fn until(
    a: &mut LsdHost,
    b: &mut LsdHost,
    now: Instant,
    what: &str,
    done: impl Fn(&Heard, &Heard) -> bool,
) -> (Heard, Heard) {
    until_hosts(a, b, now, what, |_, _, ha, hb| done(ha, hb))
}

fn sender() -> UdpSocket {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    s.set_multicast_loop_v4(true).expect("loop");
    s.set_multicast_ttl_v4(1).expect("ttl");
    s
}

#[test]
fn lsd_inside() {
    if std::env::var(INNER).as_deref() != Ok("1") {
        return;
    }
    // Never multicast on a real network: only `lo` may be here.
    // (/proc/net/dev is per namespace; /sys/class/net is the mounter's.)
    let dev = std::fs::read_to_string("/proc/net/dev").expect("/proc/net/dev");
    let links: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(links, ["lo"], "not in a private network namespace");
    let mut a = host(40001);
    let mut b = host(40002);
    assert_ne!(a.cookie(), b.cookie());
    let shared = ih(0x11);
    let only_a = ih(0x22);
    let t0 = Instant::from_millis(1_000);

    // Both announce; each hears the other's, never its own.
    a.service(t0, &[shared, only_a]);
    b.service(t0, &[shared]);
    assert_eq!(
        (a.stats().sent, b.stats().sent),
        (1, 1),
        "one batched datagram each"
    );
    let (ha, hb) = until(&mut a, &mut b, t0, "each other's announces", |ha, hb| {
        !ha.is_empty() && hb.len() >= 2
    });
    assert!(
        ha.iter().all(|(_, p)| p.port() == 40002),
        "a heard itself: {ha:?}"
    );
    assert!(
        hb.iter().all(|(_, p)| p.port() == 40001),
        "b heard itself: {hb:?}"
    );
    let mut got_b: Vec<InfoHash> = hb.iter().map(|(h, _)| *h).collect();
    got_b.sort();
    assert_eq!(got_b, [shared, only_a], "b heard {hb:?}");
    assert_eq!(ha.iter().map(|(h, _)| *h).collect::<Vec<_>>(), [shared]);
    assert!(
        ha.iter().chain(&hb).all(|(_, p)| p.ip().is_loopback()),
        "{ha:?} {hb:?}"
    );
    assert!(
        a.stats().own >= 1 && b.stats().own >= 1,
        "own announces looped back"
    );

    // Not due again before the interval: nothing sent.
    a.service(Instant::from_millis(2_000), &[shared, only_a]);
    assert_eq!(a.stats().sent, 1);

    // Garbage to the group: refused, nothing reported.
    let s = sender();
    let group = SocketAddr::from(lsd::GROUP_ADDR_V4);
    let mut big = b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n".to_vec();
    big.resize(1500, b'a');
    let garbage: [&[u8]; 6] = [
        b"",
        b"\xff\x00garbage",
        b"BT-SEARCH * HTTP/1.1\r\nPort: 0\r\nInfohash: 1111111111111111111111111111111111111111\r\n\r\n",
        b"BT-SEARCH * HTTP/1.1\r\nPort: 7\r\nInfohash: 11\r\n\r\n",
        b"GET / HTTP/1.1\r\nPort: 7\r\nInfohash: 1111111111111111111111111111111111111111\r\n\r\n",
        &big,
    ];
    let refused = (a.stats().refused, b.stats().refused);
    for g in garbage {
        s.send_to(g, group).expect("send garbage");
    }
    // Waits until every garbage datagram has arrived (counted as refused), not for a
    // fixed time: a host that reported one instead fails the check below.
    let (ha, hb) = until_hosts(&mut a, &mut b, t0, "6 refused datagrams", |a, b, _, _| {
        a.stats().refused - refused.0 >= 6 && b.stats().refused - refused.1 >= 6
    });
    assert!(
        ha.is_empty() && hb.is_empty(),
        "garbage reported: {ha:?} {hb:?}"
    );
    assert_eq!(
        (a.stats().refused - refused.0, b.stats().refused - refused.1),
        (6, 6),
        "every garbage datagram arrived and was refused"
    );

    // A third party's valid announce is heard by both (the path is live), once.
    let mut out = [0u8; lsd::MAX_DATAGRAM];
    let n = lsd::write_announce(&mut out, 40003, &[shared], b"third", false).expect("fits");
    s.send_to(&out[..n], group).expect("send");
    s.send_to(&out[..n], group).expect("send again");
    // Then a marker from the same socket, for another torrent: datagrams from one socket
    // arrive over loopback in order, so once the marker is heard a repeat reported
    // would have been heard too.
    let marker = ih(0x33);
    let m = lsd::write_announce(&mut out, 40003, &[marker], b"third", false).expect("fits");
    s.send_to(&out[..m], group).expect("send marker");
    let heard_marker = |h: &Heard| h.iter().any(|(ih, _)| *ih == marker);
    let (ha, hb) = until(&mut a, &mut b, t0, "the marker announce", |ha, hb| {
        heard_marker(ha) && heard_marker(hb)
    });
    for heard in [&ha, &hb] {
        assert_eq!(
            heard.len(),
            2,
            "repeat reported, or the first lost: {heard:?}"
        );
        assert_eq!(heard[0].0, shared);
        assert_eq!(heard[0].1.port(), 40003);
        assert_eq!(heard[1].0, marker);
    }

    // After the interval, announced again.
    let later = t0 + ANNOUNCE_INTERVAL;
    a.service(later, &[shared, only_a]);
    assert_eq!(a.stats().sent, 2);
    let (_, hb) = until(
        &mut a,
        &mut b,
        later,
        "the announce after the interval",
        |_, hb| hb.len() >= 2,
    );
    assert_eq!(hb.len(), 2, "{hb:?}");
    assert_eq!(a.stats().send_errors, 0);
    download_found_by_lsd();
    println!("lsd_inside: done");
}

/// `btcore seed --lsd` and `btcore download --lsd` with no tracker, no DHT and no
/// `--peer`: they find each other on the (namespace's) local network only.
fn download_found_by_lsd() {
    let dir = std::env::temp_dir().join(format!("btcore-lsd-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).expect("dir");
    let data: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("src/lsd.bin"), &data).expect("write");
    let bin = env!("CARGO_BIN_EXE_btcore");
    let torrent = dir.join("lsd.torrent");
    let ok = Command::new(bin)
        .args([
            "create",
            dir.join("src/lsd.bin").to_str().expect("utf-8"),
            "-o",
        ])
        .arg(&torrent)
        .stdout(Stdio::null())
        .status()
        .expect("create");
    assert!(ok.success());
    let net = [
        "--lsd",
        "--no-dht",
        "--no-trackers",
        "--bind",
        "127.0.0.1",
        "--progress",
        "none",
    ];
    let mut seed = Command::new(bin)
        .arg("seed")
        .arg(&torrent)
        .arg(dir.join("src"))
        .args(net)
        .args(["--port", "41001"])
        .stderr(Stdio::null())
        .spawn()
        .expect("seed");
    // Wait for the seed to be up (its port accepts), not for a fixed time. Either
    // order then works: each side joins the group before its first announce, so the
    // later one to start hears the earlier one's, or is heard by it.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", 41001)).is_err() {
        if std::time::Instant::now() > end {
            let _ = seed.kill();
            panic!("the seed did not listen on 41001 within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = dir.join("out");
    let status = Command::new(bin)
        .arg("download")
        .arg(&torrent)
        .arg("-o")
        .arg(&out)
        .args(net)
        .args(["--port", "41002", "--timeout", "30"])
        .status()
        .expect("download");
    let _ = seed.kill();
    let _ = seed.wait();
    assert!(status.success(), "download over LSD: {status}");
    assert_eq!(std::fs::read(out.join("lsd.bin")).expect("data"), data);
    let _ = std::fs::remove_dir_all(&dir);
    println!("lsd e2e: downloaded through LSD");
}
