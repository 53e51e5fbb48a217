//! btcore-core on a Cortex-M4F with no allocator: downloads a 100,000-byte "firmware
//! image" from a scripted peer.
//!
//! Everything here is the allocation-free part of the core:
//! - `bencode::Encoder` writes the `.torrent` into a stack buffer (the piece hashes are
//!   computed with `hash::sha1` over the generated content);
//! - `metainfo::Metainfo::parse` reads it back with a fixed `[Token; 32]`;
//! - `wire` frames the handshake, `bitfield`, `unchoke`, `interested`, `request` and
//!   `piece` messages; the peer's bytes arrive in odd-sized chunks (a TCP stream), so
//!   every frame is also parsed from partial input;
//! - `picker::Picker` runs over `PickerStorage` slices on the stack (4 pieces, 2
//!   partial-piece slots of 2 blocks);
//! - every piece is verified with SHA-1 before the picker counts it; the peer corrupts
//!   one block once, so one piece fails, is re-requested and then passes.
//!
//! The "flash" the image lands in and the receive buffer are `cortex_m::singleton!`
//! statics (no `static mut` in this file). Output and the exit status go through
//! semihosting: `cargo run --release` runs it on qemu's MPS2 AN386 (see
//! `.cargo/config.toml`) and exits 0 on success.
#![no_std]
#![no_main]

use btcore_core::bencode::{Encoder, Token};
use btcore_core::hash::sha1;
use btcore_core::ids::{BlockRef, InfoHash, PeerId, PieceIndex, BLOCK_LEN};
use btcore_core::metainfo::{Limits as MetaLimits, Metainfo};
use btcore_core::picker::{
    BlockSlot, PartialPiece, PeerKey, PickHint, Picker, PickerConfig, PickerStorage, PieceState,
};
use btcore_core::wire::{self, Frames, Handshake, Message, Reserved, Status, HANDSHAKE_LEN};
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};

#[cfg(feature = "panic-halt")]
use panic_halt as _;
#[cfg(feature = "panic-exit")]
use panic_semihosting as _;

/// Size of the image.
const TOTAL: u32 = 100_000;
/// Piece length: two 16 KiB blocks.
const PIECE_LEN: u32 = 2 * BLOCK_LEN;
const NUM_PIECES: usize = TOTAL.div_ceil(PIECE_LEN) as usize;
const BLOCKS_PER_PIECE: usize = (PIECE_LEN / BLOCK_LEN) as usize;
/// Pieces in progress at once (bounds RAM and data in flight).
const MAX_PARTIALS: usize = 2;
/// Requests kept outstanding.
const PIPELINE: usize = 3;
/// The "network" delivers this many bytes at a time: frames straddle reads.
const CHUNK: usize = 701;
/// The peer flips a byte of this piece's first block, once.
const CORRUPT_PIECE: u32 = 2;
/// Wire limits for this torrent: no frame longer than a 16 KiB block plus its header.
const WIRE: wire::Limits = wire::Limits {
    max_pieces: NUM_PIECES as u32,
    max_block_len: BLOCK_LEN,
    max_extended_len: 256,
    // No v2 torrent here: a hash message longer than its header is refused.
    max_hashes: 0,
};
/// Receive buffer: one whole frame plus a chunk (`WIRE.max_frame_len()` is 16,397).
const RX_CAP: usize = BLOCK_LEN as usize + 13 + CHUNK;

const US: PeerKey = PeerKey(0);

/// The image's bytes.
fn content(i: u32) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn fail(what: &str) -> ! {
    hprintln!("FAIL: {}", what);
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}

fn check<T, E: core::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            hprintln!("FAIL: {}: {:?}", what, e);
            debug::exit(debug::EXIT_FAILURE);
            #[allow(clippy::empty_loop)]
            loop {}
        }
    }
}

/// Writes the `.torrent` (single file, keys in sorted order) into `out`; returns its
/// length. `scratch` holds one piece while hashing.
fn build_torrent(out: &mut [u8], scratch: &mut [u8]) -> usize {
    let mut hashes = [0u8; 20 * NUM_PIECES];
    for (p, h) in hashes.chunks_exact_mut(20).enumerate() {
        let start = p as u32 * PIECE_LEN;
        let len = (TOTAL - start).min(PIECE_LEN);
        for (k, b) in scratch[..len as usize].iter_mut().enumerate() {
            *b = content(start + k as u32);
        }
        h.copy_from_slice(&sha1(&scratch[..len as usize]));
    }
    let cap = out.len();
    let mut e = Encoder::new(out);
    let r = (|| {
        e.dict()?;
        e.key_bytes(b"announce", b"http://tracker.invalid/announce")?;
        e.bytes(b"info")?;
        e.dict()?;
        e.key_int(b"length", i64::from(TOTAL))?;
        e.key_bytes(b"name", b"firmware.bin")?;
        e.key_int(b"piece length", i64::from(PIECE_LEN))?;
        e.key_bytes(b"pieces", &hashes)?;
        e.end()?;
        e.end()
    })();
    check(r, "encode torrent");
    cap - e.into_inner().len()
}

/// The remote side: a seed that answers requests in order. It produces its byte stream
/// lazily (`read`), the way a socket would, so it needs no buffer of its own beyond the
/// greeting and a request queue.
struct ScriptedPeer {
    info_hash: InfoHash,
    greeting: [u8; 96],
    greeting_len: usize,
    greeting_pos: usize,
    saw_handshake: bool,
    interested: bool,
    queue: [Option<BlockRef>; 8],
    /// The frame being sent: its block and how many of its bytes went out.
    cur: Option<(BlockRef, usize)>,
    corrupted: bool,
    served: u32,
}

impl ScriptedPeer {
    fn new(info_hash: InfoHash) -> Self {
        let mut p = Self {
            info_hash,
            greeting: [0; 96],
            greeting_len: 0,
            greeting_pos: 0,
            saw_handshake: false,
            interested: false,
            queue: [None; 8],
            cur: None,
            corrupted: false,
            served: 0,
        };
        // Handshake, a full bitfield, unchoke.
        let hs = Handshake {
            reserved: Reserved::NONE.with_fast(true),
            info_hash,
            peer_id: PeerId(*b"-SC0001-scriptedpeer"),
        };
        let mut n = check(hs.encode(&mut p.greeting), "peer handshake");
        let mut bits = [0u8; NUM_PIECES.div_ceil(8)];
        for i in 0..NUM_PIECES {
            bits[i / 8] |= 0x80 >> (i % 8);
        }
        n += check(
            Message::Bitfield(&bits).encode(&mut p.greeting[n..]),
            "bitfield",
        );
        n += check(Message::Unchoke.encode(&mut p.greeting[n..]), "unchoke");
        p.greeting_len = n;
        p
    }

    /// Bytes we sent to the peer (whole messages).
    fn receive(&mut self, mut bytes: &[u8]) {
        if !self.saw_handshake {
            match check(Handshake::parse(bytes), "peer: our handshake") {
                Status::Complete((hs, n)) if hs.info_hash == self.info_hash => {
                    self.saw_handshake = true;
                    bytes = &bytes[n..];
                }
                _ => fail("peer: bad handshake"),
            }
        }
        let mut frames = Frames::new(bytes, &WIRE);
        for m in frames.by_ref() {
            match check(m, "peer: our message") {
                Message::Interested => self.interested = true,
                Message::Request(b) => {
                    if !self.interested {
                        fail("peer: request before interested");
                    }
                    match self.queue.iter_mut().find(|q| q.is_none()) {
                        Some(slot) => *slot = Some(b),
                        None => fail("peer: request queue full"),
                    }
                }
                _ => {}
            }
        }
        if frames.consumed() != bytes.len() {
            fail("peer: partial message");
        }
    }

    /// Fills `out` with the next bytes of the stream; 0 when it has nothing to send.
    fn read(&mut self, out: &mut [u8]) -> usize {
        let mut n = 0;
        while n < out.len() {
            if self.greeting_pos < self.greeting_len {
                let k = (self.greeting_len - self.greeting_pos).min(out.len() - n);
                out[n..n + k]
                    .copy_from_slice(&self.greeting[self.greeting_pos..self.greeting_pos + k]);
                self.greeting_pos += k;
                n += k;
                continue;
            }
            let (block, pos) = match self.cur {
                Some(c) => c,
                None => {
                    let Some(b) = self.queue[0].take() else { break };
                    self.queue.rotate_left(1);
                    (b, 0)
                }
            };
            let mut hdr = [0u8; wire::PIECE_HEADER_LEN];
            check(wire::encode_piece_header(&block, &mut hdr), "piece header");
            let frame_len = hdr.len() + block.len as usize;
            let base = block.piece.0 * PIECE_LEN + block.offset;
            let flip = !self.corrupted && block.piece.0 == CORRUPT_PIECE && block.offset == 0;
            let mut p = pos;
            while p < frame_len && n < out.len() {
                out[n] = if p < hdr.len() {
                    hdr[p]
                } else {
                    let k = (p - hdr.len()) as u32;
                    content(base + k) ^ if flip && k == 1000 { 0xFF } else { 0 }
                };
                p += 1;
                n += 1;
            }
            if p == frame_len {
                self.cur = None;
                self.served += 1;
                self.corrupted |= flip;
            } else {
                self.cur = Some((block, p));
            }
        }
        n
    }
}

#[entry]
fn main() -> ! {
    hprintln!("btcore-core on Cortex-M4F: no allocator, no OS");

    // The image lands here (on a real board: a flash partition).
    let Some(flash) = cortex_m::singleton!(: [u8; TOTAL as usize] = [0; TOTAL as usize]) else {
        fail("flash singleton")
    };
    let Some(rx) = cortex_m::singleton!(: [u8; RX_CAP] = [0; RX_CAP]) else {
        fail("rx singleton")
    };

    // 1. The torrent, encoded and parsed with a fixed token table.
    let mut torrent = [0u8; 256];
    let torrent_len = build_torrent(&mut torrent, &mut flash[..PIECE_LEN as usize]);
    flash.fill(0);
    let mut tokens = [Token::default(); 32];
    let meta = check(
        Metainfo::parse(&torrent[..torrent_len], &mut tokens, &MetaLimits::default()),
        "parse torrent",
    );
    let geo = meta.geometry();
    let ih = meta.info_hash().to_hex();
    hprintln!(
        "torrent: {} bytes, {} pieces of {} bytes, info-hash {}",
        geo.total_len(),
        geo.num_pieces(),
        geo.piece_len(),
        core::str::from_utf8(&ih).unwrap_or("?")
    );
    if geo.num_pieces() as usize != NUM_PIECES {
        fail("piece count");
    }

    // 2. The picker over stack storage.
    let mut pieces = [PieceState::EMPTY; NUM_PIECES];
    let mut partials = [PartialPiece::EMPTY; MAX_PARTIALS];
    let mut blocks = [BlockSlot::EMPTY; MAX_PARTIALS * BLOCKS_PER_PIECE];
    let mut picker = check(
        Picker::new(
            geo,
            PickerConfig::default().with_initial_random(0),
            PickerStorage {
                pieces: &mut pieces,
                partials: &mut partials,
                blocks: &mut blocks,
            },
        ),
        "picker",
    );
    let mut seed = 0x2545_f491_u32;
    let mut rng = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };

    // 3. The connection.
    let mut peer = ScriptedPeer::new(meta.info_hash());
    let mut tx = [0u8; HANDSHAKE_LEN + 5];
    let ours = Handshake {
        reserved: Reserved::NONE.with_fast(true),
        info_hash: meta.info_hash(),
        peer_id: PeerId(*b"-BQ0100-firmware0001"),
    };
    let mut n = check(ours.encode(&mut tx), "handshake");
    n += check(Message::Interested.encode(&mut tx[n..]), "interested");
    peer.receive(&tx[..n]);

    let mut rx_len = 0;
    let mut handshaken = false;
    let mut peer_bits = [0u8; NUM_PIECES.div_ceil(8)];
    let mut unchoked = false;
    let mut in_flight = 0usize;
    let mut failures = 0u32;
    let mut requests = 0u32;
    let mut reads = 0u32;
    let mut max_rx = 0usize;

    while !picker.is_seed() {
        // Keep PIPELINE requests outstanding.
        if unchoked && in_flight < PIPELINE {
            let mut picked = [BlockRef {
                piece: PieceIndex(0),
                offset: 0,
                len: 0,
            }; PIPELINE];
            let k = picker.pick(
                &peer_bits[..],
                US,
                PickHint::Normal,
                PIPELINE - in_flight,
                &mut picked,
                &mut rng,
            );
            for b in &picked[..k] {
                let mut req = [0u8; 17];
                let m = check(Message::Request(*b).encode(&mut req), "request");
                peer.receive(&req[..m]);
            }
            in_flight += k;
            requests += k as u32;
        }

        // One read from the "socket".
        let end = (rx_len + CHUNK).min(RX_CAP);
        let got = peer.read(&mut rx[rx_len..end]);
        if got == 0 {
            fail("stalled: the peer has nothing to send");
        }
        reads += 1;
        rx_len += got;
        max_rx = max_rx.max(rx_len);

        // Parse what is complete.
        let mut used = 0;
        if !handshaken {
            match check(Handshake::parse(&rx[..rx_len]), "peer handshake") {
                Status::Complete((hs, k)) => {
                    if hs.info_hash != meta.info_hash() {
                        fail("wrong info-hash");
                    }
                    handshaken = true;
                    used = k;
                }
                Status::Partial { .. } => continue,
            }
        }
        while let Status::Complete((msg, k)) =
            check(wire::decode(&rx[used..rx_len], &WIRE), "peer message")
        {
            used += k;
            match msg {
                Message::Bitfield(bits) => {
                    if bits.len() != peer_bits.len() {
                        fail("bitfield length");
                    }
                    peer_bits.copy_from_slice(bits);
                    check(picker.peer_has_bitfield(bits), "peer_has_bitfield");
                }
                Message::Have(p) => {
                    check(picker.peer_has(p), "peer_has");
                    peer_bits[p.get() / 8] |= 0x80 >> (p.get() % 8);
                }
                Message::Unchoke => unchoked = true,
                Message::Choke => {
                    unchoked = false;
                    in_flight -= picker.abort_peer(US);
                }
                Message::Piece {
                    piece,
                    offset,
                    data,
                } => {
                    let block = BlockRef {
                        piece,
                        offset,
                        len: data.len() as u32,
                    };
                    if !geo.is_valid_block(&block, BLOCK_LEN) {
                        fail("block outside the torrent");
                    }
                    in_flight = in_flight.saturating_sub(1);
                    let r = check(picker.mark_received(&block, US), "mark_received");
                    if r.duplicate {
                        continue;
                    }
                    let at = (geo.piece_offset(piece) + u64::from(offset)) as usize;
                    flash[at..at + data.len()].copy_from_slice(data);
                    if check(picker.mark_written(&block), "mark_written") {
                        let start = geo.piece_offset(piece) as usize;
                        let len = geo.piece_size(piece) as usize;
                        let want = meta.piece_hash(piece);
                        if want == Some(&sha1(&flash[start..start + len])) {
                            check(picker.piece_verified(piece), "piece_verified");
                            hprintln!("piece {} verified", piece.0);
                        } else {
                            failures += 1;
                            let from = check(picker.piece_failed(piece), "piece_failed");
                            hprintln!(
                                "piece {} failed its hash check (sent by {} peer), re-requested",
                                piece.0,
                                from.len()
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        rx.copy_within(used..rx_len, 0);
        rx_len -= used;
    }

    // 4. The result.
    let intact = flash
        .iter()
        .enumerate()
        .all(|(i, &b)| b == content(i as u32));
    hprintln!(
        "done: {} requests, {} blocks served, {} reads, {} hash failure(s), rx high-water {} of {} bytes",
        requests,
        peer.served,
        reads,
        failures,
        max_rx,
        RX_CAP
    );
    hprintln!(
        "state: picker {} B + pieces {} B + partials {} B + blocks {} B; tokens {} B; rx {} B (max frame {})",
        core::mem::size_of::<Picker<'_>>(),
        core::mem::size_of_val(&pieces_len_probe()),
        core::mem::size_of::<[PartialPiece; MAX_PARTIALS]>(),
        core::mem::size_of::<[BlockSlot; MAX_PARTIALS * BLOCKS_PER_PIECE]>(),
        core::mem::size_of_val(&tokens_probe()),
        RX_CAP,
        WIRE.max_frame_len()
    );
    if !intact || failures != 1 || !picker.is_seed() {
        fail("image differs, or not exactly one hash failure");
    }
    hprintln!("OK: image of {} bytes verified", TOTAL);
    debug::exit(debug::EXIT_SUCCESS);
    #[allow(clippy::empty_loop)]
    loop {}
}

// Sizes reported above (the arrays themselves are borrowed by the picker and the parse).
fn pieces_len_probe() -> [PieceState; NUM_PIECES] {
    [PieceState::EMPTY; NUM_PIECES]
}
fn tokens_probe() -> [Token; 32] {
    [Token::default(); 32]
}
