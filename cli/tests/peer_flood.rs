//! A peer that floods a seeding `btcore` with requests and never reads what it is
//! sent cannot grow the seeder's memory, with real sockets on 127.0.0.1.
//!
//! The attacker is this test: it connects to a `btcore seed` process, completes the
//! BitTorrent and extension handshakes, and writes `ut_metadata` requests (31 bytes,
//! each asking for a 16 KiB piece of the info dictionary) and block requests as fast as
//! the socket takes them, never reading. The seeder's resident memory (`VmRSS` in
//! `/proc/PID/status`) is sampled throughout and must stay within a bound; before the
//! send queue had a cap and the host stopped reading such a peer, 0.74 MB of requests
//! grew a seeder by 376 MiB. The seeder must still answer another peer afterwards.
//!
//! Every wait has a deadline; the seeder is killed by its own handle (PID) when the
//! case ends; the scratch directory is removed.

use btcore_core::ids::{BlockRef, PieceIndex};
use btcore_core::metainfo::{Limits, Metainfo};
use btcore_core::wire::{Message, HANDSHAKE_LEN};
use btcore_tests::scripted::{frames, peer_id};
use common::{btcore, btcore_seed, free_port, Case, Config, Deadline};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod common;

const CONFIG: Config = Config {
    dir_prefix: "btcore-flood",
    deadline: Deadline::Case(Duration::from_secs(90)),
    poll: Duration::from_millis(50),
    log_tail: 4000,
    btcore_exit_hint: true,
};
/// 1,024 pieces of 16 KiB: an info dictionary of about 20 KiB, so most metadata
/// requests ask for a full 16 KiB piece.
const PIECE_LEN: u32 = 16 * 1024;
const PIECES: u32 = 1024;
/// Bytes of requests the attacker tries to send.
const FLOOD: usize = 1_000_000;
/// The most the seeder may grow, in KiB: its send queue for the peer is capped at
/// 576 KiB and the host's write buffer at 256 KiB; the rest is slack for the
/// allocator.
const GROWTH_BOUND_KIB: u64 = 24 * 1024;

/// The seeder's resident memory in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Writes what the socket takes of `data` before `until`; returns how much.
fn write_until(s: &mut TcpStream, data: &[u8], until: Instant) -> usize {
    let mut at = 0;
    while at < data.len() && Instant::now() < until {
        match s.write(&data[at..]) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    at
}

#[test]
fn a_peer_that_never_reads_cannot_grow_a_seeder() {
    if !std::path::Path::new("/proc/self/status").exists() {
        println!("skipped: no /proc to read the seeder's memory from");
        return;
    }
    let mut case = Case::new("flood", CONFIG);
    let src_dir = case.path("src");
    let src = src_dir.join("zeros.bin");
    // Sparse: the seeder's check reads no hole.
    let f = std::fs::File::create(&src).expect("payload");
    f.set_len(u64::from(PIECES) * u64::from(PIECE_LEN))
        .expect("payload size");
    drop(f);
    let torrent = case.dir.join("zeros.torrent");
    let o = btcore(&["create"])
        .arg(&src)
        .arg("-o")
        .arg(&torrent)
        .args(["--piece-kib", "16"])
        .output()
        .expect("btcore create");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&torrent).expect("torrent");
    let mut tokens = Vec::new();
    let m = Metainfo::parse_vec(&bytes, &mut tokens, &Limits::default()).expect("metainfo");
    let info_hash = m.info_hash();
    assert!(
        m.info_bytes().len() > 16 * 1024,
        "info of {}",
        m.info_bytes().len()
    );

    let port = free_port();
    let seed = case.spawn(
        "btcore-seed",
        btcore_seed(&torrent, &src_dir, port, &[], false),
        true,
    );
    case.wait_output(seed, "btcore: seeding");
    let pid = case.procs[seed].child.id();
    let before = rss_kib(pid).expect("VmRSS");

    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_write_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut hello = frames::handshake(info_hash, peer_id(1));
    hello.extend(frames::ext_handshake(3));
    hello.extend(frames::message(&Message::Interested));
    let mut flood = Vec::with_capacity(FLOOD + 64);
    let mut i = 0u32;
    while flood.len() < FLOOD {
        flood.extend(frames::metadata_request(2, i % 2));
        if i % 4 == 0 {
            flood.extend(frames::request(BlockRef {
                piece: PieceIndex(i % PIECES),
                offset: 0,
                len: PIECE_LEN,
            }));
        }
        i += 1;
    }
    let until = Instant::now() + Duration::from_secs(10);
    assert_eq!(write_until(&mut s, &hello, until), hello.len());

    // Flood in slices, sampling the seeder's memory as it goes and for two seconds
    // after (while it works through what it read).
    let mut sent = 0;
    let mut most = before;
    for part in flood.chunks(16 * 1024) {
        let n = write_until(&mut s, part, until);
        sent += n;
        most = most.max(rss_kib(pid).unwrap_or(0));
        if n < part.len() {
            break;
        }
    }
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        most = most.max(rss_kib(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let growth = most.saturating_sub(before);
    println!(
        "sent {sent} bytes of requests (the socket took no more by then); seeder RSS {before} KiB, at most {most} KiB: +{growth} KiB (bound {GROWTH_BOUND_KIB} KiB)"
    );
    assert!(sent >= 16 * 1024, "only {sent} bytes went out");
    if growth > GROWTH_BOUND_KIB {
        case.fail(&format!(
            "the seeder grew by {growth} KiB on {sent} bytes of requests"
        ));
    }

    // The seeder still answers another peer.
    let mut other = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    other
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    other
        .write_all(&frames::handshake(info_hash, peer_id(2)))
        .expect("handshake");
    let mut reply = [0u8; HANDSHAKE_LEN];
    other
        .read_exact(&mut reply)
        .expect("the seeder's handshake");
    assert_eq!(&reply[28..48], info_hash.as_bytes());
    drop(s);
    case.finish();
}
