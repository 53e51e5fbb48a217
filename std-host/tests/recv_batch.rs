//! The std client reads a downloading TCP connection in batches (`SO_RCVLOWAT` set to
//! `Session::recv_batch`: half of what the peer owes and what it sends in 20 ms at its
//! rate, up to 256 KiB), so it must also read such a connection every
//! `RECV_BATCH_MAX_WAIT_MS` anyway: a peer that chokes instead of sending what it owes
//! sends only a few bytes, which never make the batch.
//!
//! A scripted seed on a real TCP socket on 127.0.0.1 (plain BitTorrent frames, no
//! fast extension: a choke drops every request) streams at 10 MB/s for 2.5 s (its
//! pipeline grows with the rate it measures), holds the requests then out (4 MB),
//! chokes, unchokes 300 ms later and expects new requests within 3 s; then serves the
//! whole torrent and the client's copy must match. Every wait is bounded.

use btcore_core::ids::BlockRef;
use btcore_core::session::{Event, TorrentState, TransportPolicy};
use btcore_core::wire::{decode, Handshake, Limits, Message, Reserved, Status, HANDSHAKE_LEN};
use btcore_host::client::{Client, ClientOptions};
use btcore_host::create::{create_torrent, CreateOptions};
use btcore_host::encryption::Encryption;
use btcore_tests::scripted::{frames, info_hash_of, peer_id};
use btcore_tests::xorshift_bytes;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// 160 pieces of 256 KiB (40 MiB): more than STREAM at PACE and what is owed then.
const PIECE: u32 = 256 * 1024;
const PIECES: u32 = 160;
const BLOCK: u32 = 16 * 1024;
/// How fast the seed streams first, bytes/s: its rate lets the client batch 128 KiB
/// (what comes in 20 ms).
const PACE: u64 = 10_000_000;
/// How long it streams: long enough for the client's pipeline to grow with its rate.
const STREAM: Duration = Duration::from_millis(2500);
/// Requests the client must have out (16 KiB each: 640 KiB owed, a batch of 256 KiB)
/// before the seed stops sending.
const HELD: usize = 40;
/// How long the client gets to ask again after the unchoke: `RECV_BATCH_MAX_WAIT_MS`
/// (20 ms) is what it needs.
const ASK_AGAIN: Duration = Duration::from_secs(3);

fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("recv-batch-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// What the seed cares about among the client's messages.
#[derive(Debug, PartialEq)]
enum In {
    Request(BlockRef),
    Cancel(BlockRef),
    Other,
}

/// The scripted seed's side of the connection: blocking reads with timeouts.
struct Seed {
    sock: TcpStream,
    buf: Vec<u8>,
    data: Arc<Vec<u8>>,
}

impl Seed {
    /// Reads once, waiting until `until` at most. `Ok(false)`: nothing came.
    fn read_some(&mut self, until: Instant) -> Result<bool, String> {
        let wait = until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.sock
            .set_read_timeout(Some(wait))
            .map_err(|e| e.to_string())?;
        let mut tmp = [0u8; 64 * 1024];
        match self.sock.read(&mut tmp) {
            Ok(0) => Err("the client closed the connection".into()),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// The whole messages received so far.
    fn messages(&mut self) -> Result<Vec<In>, String> {
        let mut out = Vec::new();
        let mut used = 0;
        loop {
            match decode(&self.buf[used..], &Limits::default()) {
                Ok(Status::Complete((m, n))) => {
                    out.push(match m {
                        Message::Request(b) => In::Request(b),
                        Message::Cancel(b) => In::Cancel(b),
                        _ => In::Other,
                    });
                    used += n;
                }
                Ok(Status::Partial { .. }) => break,
                Err(e) => return Err(format!("a bad frame from the client: {e:?}")),
            }
        }
        self.buf.drain(..used);
        Ok(out)
    }

    /// The messages that come until `quiet` passes without any byte (or `until`).
    fn until_quiet(&mut self, quiet: Duration, until: Instant) -> Result<Vec<In>, String> {
        let mut out = self.messages()?;
        loop {
            let now = Instant::now();
            if now >= until || !self.read_some((now + quiet).min(until))? {
                return Ok(out);
            }
            out.extend(self.messages()?);
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.sock
            .write_all(bytes)
            .map_err(|e| format!("write: {e}"))
    }

    fn serve(&mut self, b: BlockRef) -> Result<(), String> {
        let at = b.piece.0 as usize * PIECE as usize + b.offset as usize;
        let data = Arc::clone(&self.data);
        let block = data
            .get(at..at + b.len as usize)
            .ok_or_else(|| format!("a request past the end: {b:?}"))?;
        self.send(&frames::message(&Message::Piece {
            piece: b.piece,
            offset: b.offset,
            data: block,
        }))
    }
}

fn requests(msgs: &[In]) -> Vec<BlockRef> {
    msgs.iter()
        .filter_map(|m| match m {
            In::Request(b) => Some(*b),
            _ => None,
        })
        .collect()
}

/// The scripted seed: connects to the client, grows its pipeline, withholds, chokes,
/// unchokes, and then serves until `done` (or the client closes).
fn seed(
    client: SocketAddr,
    handshake: Vec<u8>,
    data: Arc<Vec<u8>>,
    done: Arc<AtomicBool>,
) -> Result<(), String> {
    let sock = TcpStream::connect(client).map_err(|e| format!("connect: {e}"))?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut s = Seed {
        sock,
        buf: Vec::new(),
        data,
    };
    // Handshake, every piece, unchoke.
    let mut hello = handshake.clone();
    let mut bits = vec![0xFFu8; PIECES.div_ceil(8) as usize];
    if PIECES % 8 != 0 {
        *bits.last_mut().expect("bits") = 0xFF << (8 - PIECES % 8);
    }
    hello.extend(frames::message(&Message::Bitfield(&bits)));
    hello.extend(frames::message(&Message::Unchoke));
    s.send(&hello)?;
    let until = Instant::now() + Duration::from_secs(5);
    while s.buf.len() < HANDSHAKE_LEN {
        if Instant::now() >= until {
            return Err("no handshake from the client in 5 s".into());
        }
        s.read_some(until)?;
    }
    if s.buf[28..48] != handshake[28..48] {
        return Err("the client's handshake names another torrent".into());
    }
    s.buf.drain(..HANDSHAKE_LEN);

    // Stream at about PACE for STREAM: the session batches no more than the peer
    // sends in 20 ms at its rate, and asks as deep as that rate goes, so the rate
    // must be known first. Whatever batch the client waits for, all it is owed comes.
    let start = Instant::now();
    let mut held: Vec<BlockRef> = Vec::new();
    let mut served = 0u64;
    loop {
        let msgs = s.until_quiet(
            Duration::from_millis(2),
            Instant::now() + Duration::from_millis(20),
        )?;
        for m in &msgs {
            match m {
                In::Request(b) => held.push(*b),
                In::Cancel(b) => held.retain(|x| x != b),
                In::Other => {}
            }
        }
        let elapsed = start.elapsed();
        if elapsed >= STREAM && held.len() >= HELD {
            break;
        }
        if elapsed >= STREAM + Duration::from_secs(5) {
            return Err(format!(
                "the client's pipeline did not grow to {HELD} requests \
                 ({} out after {served} blocks)",
                held.len()
            ));
        }
        let allowed = (PACE as f64 * elapsed.as_secs_f64()) as u64;
        while served * u64::from(BLOCK) < allowed && !held.is_empty() {
            s.serve(held.remove(0))?;
            served += 1;
        }
    }
    // Whatever else it asks for, taken too: from now on nothing is sent but
    // choke and unchoke.
    held.extend(requests(&s.until_quiet(
        Duration::from_millis(300),
        Instant::now() + Duration::from_secs(2),
    )?));
    let owed: u32 = held.iter().map(|b| b.len).sum();
    println!(
        "seed: {served} blocks served, {} requests held ({} KiB owed); choke",
        held.len(),
        owed / 1024
    );

    // Choke (no fast extension: the client drops every request), and unchoke.
    s.send(&frames::message(&Message::Choke))?;
    // Requests that come now were sent before the choke was read (a slow machine):
    // they do not count as asking again.
    let late = requests(&s.until_quiet(
        Duration::from_millis(300),
        Instant::now() + Duration::from_millis(300),
    )?);
    if !late.is_empty() {
        println!("seed: {} requests came while choked", late.len());
    }
    s.send(&frames::message(&Message::Unchoke))?;
    let unchoked = Instant::now();
    let until = unchoked + ASK_AGAIN;
    let mut asked = Vec::new();
    while asked.is_empty() && Instant::now() < until {
        if s.read_some(until)? {
            asked = requests(&s.messages()?);
        }
    }
    if asked.is_empty() {
        return Err(format!(
            "no request from the client in {ASK_AGAIN:?} after choke and unchoke \
             ({} KiB were owed): the 10 bytes never made its receive batch",
            owed / 1024
        ));
    }
    println!(
        "seed: {} new requests {:?} after the unchoke",
        asked.len(),
        unchoked.elapsed()
    );

    // Serve the rest: every request at once, until the client has it all.
    for b in asked {
        s.serve(b)?;
    }
    let until = Instant::now() + Duration::from_secs(20);
    while !done.load(Ordering::Relaxed) {
        if Instant::now() >= until {
            return Err("the download did not finish in 20 s".into());
        }
        match s.read_some(Instant::now() + Duration::from_millis(50)) {
            Ok(true) => {}
            Ok(false) => continue,
            // A finished client closes its connection to a seed, maybe before the
            // test's loop has seen it finish.
            Err(e) => {
                let wait = Instant::now() + Duration::from_secs(2);
                while !done.load(Ordering::Relaxed) && Instant::now() < wait {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if done.load(Ordering::Relaxed) {
                    break;
                }
                return Err(format!("{e} before the download finished"));
            }
        }
        for b in requests(&s.messages()?) {
            s.serve(b)?;
        }
    }
    Ok(())
}

/// A peer that chokes with half a MiB owed and unchokes 300 ms later: its 10 bytes
/// do not make the client's 256 KiB receive batch, and only the periodic read of
/// batching connections sees them, so the client asks again.
#[test]
fn a_choke_and_unchoke_are_read_while_a_batch_is_awaited() {
    let dir = scratch("choke");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).expect("src dir");
    let data = Arc::new(xorshift_bytes(7, (PIECE * PIECES) as usize));
    let file = src.join("batch.bin");
    std::fs::write(&file, data.as_slice()).expect("write");
    let torrent = create_torrent(
        &file,
        &CreateOptions {
            piece_length: Some(PIECE),
            creation_date: Some(1),
            threads: 1,
            ..CreateOptions::default()
        },
    )
    .expect("create");
    let handshake = {
        let hs = Handshake {
            // No fast extension: a choke drops the client's requests (BEP 3).
            reserved: Reserved::NONE,
            info_hash: info_hash_of(&torrent),
            peer_id: peer_id(1),
        };
        let mut buf = [0u8; HANDSHAKE_LEN];
        let n = hs.encode(&mut buf).expect("a handshake fits");
        buf[..n].to_vec()
    };

    let save = dir.join("leech");
    let mut client = Client::new(ClientOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        save_dir: save.clone(),
        use_trackers: false,
        dht: None,
        lsd: false,
        pex: false,
        web_seeds: false,
        encryption: Encryption::Disabled,
        transport: TransportPolicy::TcpOnly,
        seed: 0,
        ..ClientOptions::default()
    })
    .expect("client");
    let id = client.add_torrent_file(&torrent, None).expect("add");
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .torrents()
        .iter()
        .find(|t| t.id == id)
        .expect("torrent")
        .status
        .state
        != TorrentState::Downloading
    {
        assert!(Instant::now() < deadline, "the check did not end");
        client.run_once(Duration::from_millis(5)).expect("run");
    }

    let done = Arc::new(AtomicBool::new(false));
    let seed = {
        let (addr, data, done) = (client.local_addr(), Arc::clone(&data), Arc::clone(&done));
        std::thread::spawn(move || seed(addr, handshake, data, done))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut finished = false;
    while !seed.is_finished() {
        assert!(Instant::now() < deadline, "the seed did not end in 30 s");
        client.run_once(Duration::from_millis(5)).expect("run");
        if client.take_events().contains(&Event::TorrentFinished(id)) {
            finished = true;
            done.store(true, Ordering::Relaxed);
        }
    }
    if let Err(e) = seed.join().expect("the seed thread") {
        panic!("{e}");
    }
    assert!(finished, "the download did not finish");
    let got = std::fs::read(save.join("batch.bin")).expect("the downloaded file");
    assert!(got == *data, "the downloaded file differs");
}
