//! One btcore session driven by hand: scripted peers speak real frames to it, and the
//! caller (a test, or a fuzz input) decides when each peer's bytes arrive, when the
//! bytes queued for a peer are read, and how time passes. Disk work is answered at
//! once from an in-memory copy of each torrent; dials are answered as failed (or left
//! pending, see [`Host::hold_dials`]). No socket, no clock, no thread.
//!
//! [`frames`] builds the peer's side: handshakes and messages encoded by the core's own
//! wire and extension codecs.

use btcore_core::bitfield::Bitfield;
use btcore_core::hash::{Sha1, SmolSha1};
use btcore_core::ids::{InfoHash, PeerId, PieceIndex};
use btcore_core::metainfo::{Limits, Metainfo};
use btcore_core::session::{
    Action, CloseReason, ConnId, Session, SessionConfig, TorrentId, Transmit,
};
use btcore_core::time::{Duration, Instant};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// A torrent's bytes as the host's disk holds them.
struct Store {
    piece_len: u32,
    data: Vec<u8>,
}

/// A session and the host around it.
#[allow(missing_debug_implementations)]
pub struct Host {
    /// The session.
    pub session: Session,
    /// The clock.
    pub now: Instant,
    stores: BTreeMap<TorrentId, Store>,
    /// Connections the session closed, with its reason, in order.
    pub closed: Vec<(ConnId, CloseReason)>,
    /// Dials the session asked for (answered as failed).
    pub dials: usize,
    /// The address of each dial, in order.
    pub dialed: Vec<SocketAddr>,
    /// The transport of each dial, in order.
    pub dialed_over: Vec<btcore_core::session::Transport>,
    /// Leave dials pending instead of failing them: they wait in [`Host::pending_dials`]
    /// (a TCP connect that has not completed yet).
    pub hold_dials: bool,
    /// Dials left pending while [`Host::hold_dials`] was set.
    pub pending_dials: Vec<ConnId>,
    /// Pieces the session asked to verify, and whether they were right.
    pub verified: Vec<(PieceIndex, bool)>,
    /// Hold the blocks read for upload and send them by token
    /// ([`Session::handle_read_held`]), as the std host does, instead of handing the
    /// session their bytes; read them with [`Host::read_sent`].
    pub hold_reads: bool,
    /// Blocks held, by token.
    pub held: BTreeMap<u64, Vec<u8>>,
    next_token: u64,
    scratch: Vec<u8>,
}

impl Host {
    /// A host around a session made with `config`.
    pub fn new(config: SessionConfig, seed: u64) -> Self {
        Self {
            session: Session::new(config, seed),
            now: Instant::from_millis(1_000),
            stores: BTreeMap::new(),
            closed: Vec::new(),
            dials: 0,
            dialed: Vec::new(),
            dialed_over: Vec::new(),
            hold_dials: false,
            pending_dials: Vec::new(),
            verified: Vec::new(),
            hold_reads: false,
            held: BTreeMap::new(),
            next_token: 0,
            scratch: vec![0u8; 64 * 1024],
        }
    }

    /// Adds a torrent over `content`: seeding (its disk holds the content) or
    /// downloading (its disk holds zeros).
    pub fn add_torrent(
        &mut self,
        torrent_file: &[u8],
        content: &[u8],
        piece_len: u32,
        seeding: bool,
    ) -> TorrentId {
        let mut tokens = Vec::new();
        let m = Metainfo::parse_vec(torrent_file, &mut tokens, &Limits::default())
            .expect("a valid torrent");
        let n = m.num_pieces();
        let have = if seeding {
            Bitfield::full(n)
        } else {
            Bitfield::new(n)
        };
        let id = self
            .session
            .add_torrent(self.now, torrent_file, Some(&have))
            .expect("torrent added");
        let data = if seeding {
            content.to_vec()
        } else {
            vec![0; content.len()]
        };
        self.stores.insert(id, Store { piece_len, data });
        self.drain();
        id
    }

    /// Adds a magnet link for `info_hash` (its metadata is fetched from peers).
    pub fn add_magnet(&mut self, info_hash: InfoHash) -> TorrentId {
        let uri = format!("magnet:?xt=urn:btih:{info_hash}");
        let id = self
            .session
            .add_magnet(self.now, uri.as_bytes())
            .expect("magnet added");
        self.drain();
        id
    }

    /// A peer connected from `addr`.
    pub fn incoming(&mut self, addr: SocketAddr) -> ConnId {
        let c = self.session.handle_incoming(self.now, addr);
        self.drain();
        c
    }

    /// Bytes from the peer of `conn`.
    pub fn recv(&mut self, conn: ConnId, data: &[u8]) {
        self.session.handle_recv(self.now, conn, data);
        self.drain();
    }

    /// The peer of `conn` reads up to `max` bytes of what is queued for it; returns
    /// them.
    pub fn read_from(&mut self, conn: ConnId, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut scratch = std::mem::take(&mut self.scratch);
        while out.len() < max {
            let want = (max - out.len()).min(scratch.len());
            let n = self
                .session
                .poll_transmit(self.now, conn, &mut scratch[..want]);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&scratch[..n]);
        }
        self.scratch = scratch;
        self.drain();
        out
    }

    /// What a host holding payloads sends the peer of `conn`, up to `max` bytes
    /// (a whole payload may pass it): the session's bytes and, at their places, the
    /// payloads held ([`Session::poll_send`]). A payload given whose token is not held
    /// panics.
    pub fn read_sent(&mut self, conn: ConnId, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut scratch = std::mem::take(&mut self.scratch);
        while out.len() < max {
            let want = (max - out.len()).min(scratch.len());
            match self.session.poll_send(self.now, conn, &mut scratch[..want]) {
                Transmit::Idle => break,
                Transmit::Bytes { len, .. } => out.extend_from_slice(&scratch[..len]),
                Transmit::Held { token, len } => {
                    let d = self.held.remove(&token).expect("a payload we hold");
                    assert_eq!(d.len(), len as usize);
                    out.extend_from_slice(&d);
                }
            }
        }
        self.scratch = scratch;
        self.drain();
        out
    }

    /// The peer of `conn` closed its socket.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.session.handle_disconnected(self.now, conn);
        self.drain();
    }

    /// Lets `d` pass, running the session's timers each second of it.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self.session.poll_timeout().map_or(end, |t| t.min(end));
            self.now = self.now.max(next);
            if self.session.poll_timeout().is_some_and(|t| t <= self.now) {
                self.session.handle_timeout(self.now);
                self.drain();
            }
            if self.now >= end {
                return;
            }
        }
    }

    /// Whether the session still has `conn`.
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.session.conn_buffers(conn).is_some()
    }

    /// Why the session closed `conn`, if it did.
    pub fn close_reason(&self, conn: ConnId) -> Option<CloseReason> {
        self.closed
            .iter()
            .find(|(c, _)| *c == conn)
            .map(|(_, e)| *e)
    }

    /// A peer connected from `addr` over `transport`.
    pub fn incoming_over(
        &mut self,
        addr: SocketAddr,
        transport: btcore_core::session::Transport,
    ) -> ConnId {
        let c = self.session.handle_incoming_over(self.now, addr, transport);
        self.drain();
        c
    }

    /// Carries out every action the session asks for.
    pub fn drain(&mut self) {
        while let Some(a) = self.session.poll_action() {
            self.act(a);
        }
        while self.session.poll_event().is_some() {}
    }

    fn act(&mut self, a: Action) {
        let now = self.now;
        match a {
            Action::Connect {
                conn,
                addr,
                transport,
                ..
            } => {
                self.dials += 1;
                self.dialed.push(addr);
                self.dialed_over.push(transport);
                if self.hold_dials {
                    self.pending_dials.push(conn);
                } else {
                    self.session.handle_connect_failed(now, conn);
                }
            }
            Action::Close { conn, reason } => self.closed.push((conn, reason)),
            Action::Write {
                torrent,
                block,
                data,
            } => {
                if let Some(s) = self.stores.get_mut(&torrent) {
                    let at = block.piece.0 as usize * s.piece_len as usize + block.offset as usize;
                    if let Some(dst) = s.data.get_mut(at..at + data.len()) {
                        dst.copy_from_slice(&data);
                    }
                }
                self.session.handle_write_done(now, torrent, block, Ok(()));
            }
            Action::Read {
                torrent,
                conn,
                block,
            } => {
                let data = self.stores.get(&torrent).and_then(|s| {
                    let at = block.piece.0 as usize * s.piece_len as usize + block.offset as usize;
                    s.data.get(at..at + block.len as usize).map(<[u8]>::to_vec)
                });
                match data {
                    Some(d) if self.hold_reads => {
                        self.next_token += 1;
                        let token = self.next_token;
                        if self
                            .session
                            .handle_read_held(now, torrent, conn, block, token)
                        {
                            self.held.insert(token, d);
                        }
                    }
                    Some(d) => self
                        .session
                        .handle_read_done(now, torrent, conn, block, Ok(&d)),
                    None => self.session.handle_read_done(
                        now,
                        torrent,
                        conn,
                        block,
                        Err(btcore_core::session::DiskError::Io),
                    ),
                }
            }
            Action::Verify {
                torrent,
                piece,
                expected,
                ..
            } => {
                let ok = self.stores.get(&torrent).is_some_and(|s| {
                    let at = piece.0 as usize * s.piece_len as usize;
                    let end = (at + s.piece_len as usize).min(s.data.len());
                    s.data
                        .get(at..end)
                        .is_some_and(|d| Some(SmolSha1::digest(d)) == expected)
                });
                self.verified.push((piece, ok));
                self.session.handle_verified(now, torrent, piece, ok);
            }
            Action::CheckData { torrent } => {
                // Nothing on disk: a magnet link's torrent starts empty.
                let n = self
                    .session
                    .torrent_status(torrent, now)
                    .map_or(0, |s| s.num_pieces);
                self.session
                    .handle_checked(now, torrent, &btcore_core::bitfield::Bitfield::new(n));
            }
            _ => {}
        }
    }
}

/// The bytes a peer sends.
pub mod frames {
    use btcore_core::ext::{write_ext_handshake, MetadataMsg, OurExtensions};
    use btcore_core::ids::{BlockRef, InfoHash, PeerId};
    use btcore_core::wire::{Handshake, Message, Reserved, HANDSHAKE_LEN};

    /// A BitTorrent handshake for `info_hash` from `peer_id`, announcing BEP 6 and
    /// BEP 10.
    pub fn handshake(info_hash: InfoHash, peer_id: PeerId) -> Vec<u8> {
        let hs = Handshake {
            reserved: Reserved::NONE.with_fast(true).with_extension_protocol(true),
            info_hash,
            peer_id,
        };
        let mut buf = [0u8; HANDSHAKE_LEN];
        let n = hs.encode(&mut buf).expect("a handshake fits");
        buf[..n].to_vec()
    }

    /// One message, framed.
    pub fn message(m: &Message<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; m.encoded_len()];
        let n = m.encode(&mut buf).expect("encoded");
        buf.truncate(n);
        buf
    }

    /// A BEP 10 extension handshake naming `ut_metadata` as our extension `ut_metadata`.
    pub fn ext_handshake(ut_metadata: u8) -> Vec<u8> {
        let ours = OurExtensions {
            ut_metadata: Some(ut_metadata),
            ut_pex: None,
            ut_holepunch: None,
            metadata_size: None,
            listen_port: None,
            client: b"scripted",
            reqq: Some(250),
            ..OurExtensions::default()
        };
        let mut buf = [0u8; 256];
        let n = write_ext_handshake(&mut buf, &ours).expect("fits");
        message(&Message::Extended {
            id: 0,
            payload: &buf[..n],
        })
    }

    /// A BEP 10 extension handshake saying the peer sees us at `yourip`.
    pub fn ext_handshake_yourip(yourip: std::net::IpAddr) -> Vec<u8> {
        let ours = OurExtensions {
            client: b"scripted",
            yourip: Some(yourip),
            ..OurExtensions::default()
        };
        let mut buf = [0u8; 256];
        let n = write_ext_handshake(&mut buf, &ours).expect("fits");
        message(&Message::Extended {
            id: 0,
            payload: &buf[..n],
        })
    }

    /// The extension handshake in `bytes`, what a session sent to a peer (after its
    /// handshake when it starts with one), parsed with `f`.
    pub fn sent_ext_handshake<R>(
        bytes: &[u8],
        f: impl FnOnce(&btcore_core::ext::ExtHandshake<'_>) -> R,
    ) -> Option<R> {
        use btcore_core::wire::{decode, Limits, Status};
        let mut rest = bytes;
        if rest.first() == Some(&19) && rest.len() >= HANDSHAKE_LEN {
            rest = &rest[HANDSHAKE_LEN..];
        }
        while let Ok(Status::Complete((message, consumed))) = decode(rest, &Limits::default()) {
            if let Message::Extended { id: 0, payload } = message {
                let hs = btcore_core::ext::ExtHandshake::parse(
                    payload,
                    &btcore_core::ext::ExtConfig::default(),
                )
                .ok()?;
                return Some(f(&hs));
            }
            rest = &rest[consumed..];
        }
        None
    }

    /// A BEP 9 request for metadata piece `piece`, sent with the session's id for
    /// `ut_metadata` (btcore's is 2).
    pub fn metadata_request(their_id: u8, piece: u32) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let n = MetadataMsg::Request { piece }
            .write(&mut buf)
            .expect("fits");
        message(&Message::Extended {
            id: their_id,
            payload: &buf[..n],
        })
    }

    /// A `request` for `block`.
    pub fn request(block: BlockRef) -> Vec<u8> {
        message(&Message::Request(block))
    }

    /// A BEP 11 `ut_pex` message listing `added`, sent with the session's id for
    /// `ut_pex` (btcore's is 1).
    pub fn pex(their_id: u8, added: &[std::net::SocketAddr]) -> Vec<u8> {
        let mut payload = Vec::new();
        btcore_core::pex::write_pex(&mut payload, added, &[]).expect("fits");
        message(&Message::Extended {
            id: their_id,
            payload: &payload,
        })
    }

    /// The extension handshake of a peer that speaks BEP 55 (`ut_holepunch` as our
    /// id `holepunch`) and listens on `port`.
    pub fn holepunch_ext_handshake(holepunch: u8, port: u16) -> Vec<u8> {
        let ours = OurExtensions {
            ut_holepunch: Some(holepunch),
            listen_port: Some(port),
            client: b"scripted",
            ..OurExtensions::default()
        };
        let mut buf = [0u8; 256];
        let n = write_ext_handshake(&mut buf, &ours).expect("fits");
        message(&Message::Extended {
            id: 0,
            payload: &buf[..n],
        })
    }

    /// A BEP 55 message, sent with the session's id for `ut_holepunch` (btcore's is 3).
    pub fn holepunch(their_id: u8, m: btcore_core::holepunch::HolepunchMsg) -> Vec<u8> {
        let mut buf = [0u8; btcore_core::holepunch::MAX_MESSAGE_LEN];
        let n = m.write(&mut buf).expect("fits");
        message(&Message::Extended {
            id: their_id,
            payload: &buf[..n],
        })
    }

    /// The extension messages (id, payload) in `bytes`, what a session sent to a
    /// peer: whole messages, after the session's handshake when it starts with one.
    pub fn extended(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        use btcore_core::wire::{decode, Limits, Status};
        let mut rest = bytes;
        if rest.first() == Some(&19) && rest.len() >= HANDSHAKE_LEN {
            rest = &rest[HANDSHAKE_LEN..];
        }
        let mut out = Vec::new();
        while let Ok(Status::Complete((m, n))) = decode(rest, &Limits::default()) {
            if let Message::Extended { id, payload } = m {
                out.push((id, payload.to_vec()));
            }
            rest = &rest[n..];
        }
        out
    }

    /// The blocks requested in `bytes`, what a session sent to a peer: whole
    /// messages, after the session's handshake when it starts with one.
    pub fn requests(bytes: &[u8]) -> Vec<BlockRef> {
        use btcore_core::wire::{decode, Limits, Status};
        let mut rest = bytes;
        if rest.first() == Some(&19) && rest.len() >= HANDSHAKE_LEN {
            rest = &rest[HANDSHAKE_LEN..];
        }
        let mut out = Vec::new();
        while let Ok(Status::Complete((m, n))) = decode(rest, &Limits::default()) {
            if let Message::Request(b) = m {
                out.push(b);
            }
            rest = &rest[n..];
        }
        out
    }
}

/// A single-file torrent of `num_pieces` pieces of `piece_len` zero bytes (every
/// piece hash is the same: built at once however large), and its content.
pub fn zero_torrent(num_pieces: u32, piece_len: u32) -> (Vec<u8>, Vec<u8>) {
    use btcore_core::bencode::Encoder;
    let h = SmolSha1::digest(&vec![0u8; piece_len as usize]);
    let pieces: Vec<u8> = (0..num_pieces).flat_map(|_| h).collect();
    let len = u64::from(num_pieces) * u64::from(piece_len);
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out);
    let r = (|| {
        e.dict()?;
        e.key_bytes(b"announce", b"http://tracker.invalid/announce")?;
        e.bytes(b"info")?;
        e.dict()?;
        e.key_int(b"length", len as i64)?;
        e.key_bytes(b"name", b"zeros.bin")?;
        e.key_int(b"piece length", i64::from(piece_len))?;
        e.key_bytes(b"pieces", &pieces)?;
        e.end()?;
        e.end()
    })();
    r.expect("vec");
    (out, vec![0u8; len as usize])
}

/// The info-hash of a torrent file.
pub fn info_hash_of(torrent_file: &[u8]) -> InfoHash {
    let mut tokens = Vec::new();
    Metainfo::parse_vec(torrent_file, &mut tokens, &Limits::default())
        .expect("a valid torrent")
        .info_hash()
}

/// A peer id unlike btcore's: `-SC0001-` and `n` in decimal.
pub fn peer_id(n: u64) -> PeerId {
    let mut id = *b"-SC0001-000000000000";
    let digits = format!("{n:012}");
    id[8..].copy_from_slice(&digits.as_bytes()[digits.len() - 12..]);
    PeerId(id)
}
