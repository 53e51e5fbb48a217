//! One peer connection's protocol state (BEP 3, with BEP 6 fast and BEP 10 extension
//! messages): the handshake, choke and interest on both sides, what the peer has, the
//! pipeline of our requests with a depth that follows the peer's rate, the peer's
//! requests to us, keep-alives and timeouts. It chooses no piece (the picker does) and
//! touches no socket: bytes come in through [`PeerConn::handle_recv`], and what to send
//! goes out through [`PeerConn::poll_transmit`] into a caller buffer.
//!
//! ```text
//!  outgoing: new_outgoing ──(our handshake queued)──► AwaitHandshake
//!  incoming: new_incoming ──────────────────────────► AwaitHandshake
//!  AwaitHandshake ──(theirs read; incoming: accept())──► Established
//!  Established ──(messages)──► Established;  any error ──► the host closes the socket
//! ```
//!
//! Poll order for a host: after `handle_recv` or `handle_timeout`, drain
//! [`PeerConn::poll_event`], then call [`PeerConn::poll_transmit`] until it returns 0.
//! Every misbehaviour is a [`PeerError`] that says whether the peer is at fault.
//!
//! Everything a peer can make a connection hold is capped: the receive buffer holds one
//! frame at most, the peer's requests `max_peer_requests` (indexed, so a `request` or
//! `cancel` costs O(log n)), and the send queue [`PeerConn::send_cap`] bytes; a message
//! that would pass that closes the connection ([`PeerError::SendOverflow`]), and past
//! most of it [`PeerConn::wants_recv`] asks the host to stop reading the peer.

use crate::bitfield::Bitfield;
use crate::ids::{BlockRef, Geometry, InfoHash, PeerId, PieceIndex, BLOCK_LEN};
use crate::time::{Duration, Instant, Rate};
use crate::wire::{self, Handshake, HashRequest, Message, Reserved, Status};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::cmp::Ordering;
use core::fmt;

#[cfg(test)]
extern crate std;

/// Per-connection limits and timers. [`PeerConfig::low_memory`] is the small profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// Wire message caps (the receive buffer never holds more than one largest frame).
    pub wire: wire::Limits,
    /// Fewest requests kept in flight to an unchoking peer.
    pub min_queue: u32,
    /// Most requests kept in flight to one peer.
    pub max_queue: u32,
    /// Seconds of the peer's rate kept in flight (libtorrent's `request_queue_time`).
    pub queue_secs: u32,
    /// A request unanswered this long is given up (and may go to another peer).
    pub request_timeout: Duration,
    /// No block for this long while requests are out: the peer is snubbing us.
    pub snub_timeout: Duration,
    /// Send a keep-alive after this long without sending anything.
    pub keepalive_interval: Duration,
    /// Close after this long without receiving anything.
    pub idle_timeout: Duration,
    /// Close a connection we dialed when the peer's handshake has not arrived this long
    /// after the TCP connection was made.
    pub handshake_timeout: Duration,
    /// Close a connection a peer opened to us when its handshake has not arrived this
    /// long after it was accepted (an encryption handshake before it included): a bare
    /// TCP connection holds a slot only this long.
    pub incoming_handshake_timeout: Duration,
    /// Most requests from the peer queued for upload (also our `reqq`, BEP 10); beyond
    /// it a request is rejected (BEP 6) or dropped.
    pub max_peer_requests: usize,
    /// Bytes of blocks (and `ut_metadata` pieces) queued to send: no block is read for
    /// the peer while the queue holds this much.
    pub max_send_buffer: usize,
    /// Bytes beyond `max_send_buffer` kept for other messages (`have`, choke, rejects,
    /// extension messages). The queue never holds more than
    /// [`PeerConn::send_cap`]: a message that would pass it closes the connection
    /// ([`PeerError::SendOverflow`]). Past half of this allowance
    /// [`PeerConn::wants_recv`] asks the host to stop reading from the peer, so that
    /// what the peer sends cannot make us queue more (backpressure).
    pub send_allowance: usize,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            wire: wire::Limits::default(),
            min_queue: 4,
            max_queue: 250,
            queue_secs: 3,
            request_timeout: Duration::from_secs(30),
            snub_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(90),
            idle_timeout: Duration::from_secs(180),
            handshake_timeout: Duration::from_secs(20),
            // libtorrent's `handshake_timeout` (an encryption handshake takes three
            // round trips).
            incoming_handshake_timeout: Duration::from_secs(10),
            // Our `reqq`. libtorrent's `max_allowed_in_request_queue` is 500; with 500
            // a libtorrent leecher kept less in flight and an A/B run on loopback was
            // too noisy to rule out a slower upload, so the queue keeps its length (a
            // request or cancel costs O(log n) of it).
            max_peer_requests: 2000,
            max_send_buffer: 512 * 1024,
            send_allowance: 64 * 1024,
        }
    }
}

impl PeerConfig {
    /// The profile for small devices: shorter queues, smaller buffers.
    pub fn low_memory() -> Self {
        Self {
            wire: wire::Limits {
                max_extended_len: 64 * 1024,
                max_block_len: BLOCK_LEN,
                // BEP 52 answers of 512 hashes and their proof (an 18 KiB frame).
                max_hashes: 512 + 64,
                ..wire::Limits::default()
            },
            max_queue: 32,
            max_peer_requests: 250,
            max_send_buffer: 64 * 1024,
            send_allowance: 16 * 1024,
            ..Self::default()
        }
    }
}

/// Why a connection must close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerError {
    /// A malformed frame.
    Wire(wire::WireError),
    /// The handshake names another torrent.
    InfoHashMismatch,
    /// We connected to ourselves.
    SelfConnection,
    /// A bitfield of the wrong length or with spare bits set, or sent twice or late.
    BadBitfield,
    /// A piece index beyond the torrent.
    BadPiece(u32),
    /// A block we did not request, or of the wrong length.
    UnrequestedBlock(BlockRef),
    /// A request beyond the piece or of a bad length.
    BadRequest(BlockRef),
    /// A BEP 6 message from a peer that did not announce the fast extension.
    FastNotNegotiated,
    /// A message before the handshake completed, or a second handshake.
    ProtocolOrder,
    /// The peer sent nothing for too long.
    Idle,
    /// No handshake in time.
    HandshakeTimeout,
    /// The peer does not read what we send: a message would have passed the send
    /// queue's cap ([`PeerConn::send_cap`]).
    SendOverflow,
    /// A second connection of a peer already connected to the torrent (the same peer
    /// id).
    Duplicate,
    /// Closed for a connection limit: the session's or the torrent's table was full,
    /// or the peer's address holds its share of connections (an older connection still
    /// in its handshake may be closed this way to make room for a newcomer).
    ConnectionLimit,
}

impl PeerError {
    /// Whether the peer broke the protocol (a host may ban it), as opposed to a
    /// timeout or a mismatch that says nothing of its honesty.
    pub const fn is_peer_fault(&self) -> bool {
        !matches!(
            self,
            Self::Idle
                | Self::HandshakeTimeout
                | Self::InfoHashMismatch
                | Self::SelfConnection
                | Self::SendOverflow
                | Self::Duplicate
                | Self::ConnectionLimit
        )
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wire(e) => write!(f, "{e}"),
            Self::InfoHashMismatch => f.write_str("handshake for another torrent"),
            Self::SelfConnection => f.write_str("connected to ourselves"),
            Self::BadBitfield => f.write_str("bad bitfield"),
            Self::BadPiece(i) => write!(f, "piece index {i} out of range"),
            Self::UnrequestedBlock(b) => {
                write!(f, "unrequested block {}:{}+{}", b.piece.0, b.offset, b.len)
            }
            Self::BadRequest(b) => write!(f, "bad request {}:{}+{}", b.piece.0, b.offset, b.len),
            Self::FastNotNegotiated => f.write_str("fast extension message without negotiation"),
            Self::ProtocolOrder => f.write_str("message out of order"),
            Self::Idle => f.write_str("peer silent too long"),
            Self::HandshakeTimeout => f.write_str("no handshake in time"),
            Self::SendOverflow => f.write_str("peer does not read what we send"),
            Self::Duplicate => f.write_str("duplicate connection of a connected peer"),
            Self::ConnectionLimit => f.write_str("connection limit"),
        }
    }
}

impl From<wire::WireError> for PeerError {
    fn from(e: wire::WireError) -> Self {
        Self::Wire(e)
    }
}

/// What the connection learned; drained with [`PeerConn::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// The peer's handshake arrived. For an incoming connection, answer with
    /// [`PeerConn::accept`] (or close).
    Handshake {
        /// The torrent the peer asks for.
        info_hash: InfoHash,
        /// The peer's id.
        peer_id: PeerId,
        /// The peer's reserved bits.
        reserved: Reserved,
    },
    /// The peer's pieces changed: a bitfield, have all/none, or (with
    /// [`PeerEvent::Have`]) one piece. Read them with [`PeerConn::has`].
    HaveSet,
    /// The peer has one more piece.
    Have(PieceIndex),
    /// The peer choked us (requests not allowed-fast are gone, see `RequestLost`).
    Choked,
    /// The peer unchoked us.
    Unchoked,
    /// The peer became interested or not.
    Interest(bool),
    /// A block we requested arrived.
    Block {
        /// Which block.
        block: BlockRef,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// A request of ours will not be answered (rejected, dropped by a choke, timed out).
    RequestLost(BlockRef),
    /// The peer may serve this piece even while choking us (BEP 6).
    AllowedFast(PieceIndex),
    /// The peer suggests this piece (BEP 6).
    Suggest(PieceIndex),
    /// The peer has requests waiting for upload: see `PeerConn::next_peer_request`.
    PeerRequest,
    /// A BEP 10 extension message.
    Extended {
        /// Our local id for the extension (0: the extension handshake).
        id: u8,
        /// The payload.
        payload: Vec<u8>,
    },
    /// The peer's DHT port (BEP 5).
    DhtPort(u16),
    /// BEP 52: the peer asks for a range of a file's merkle tree.
    HashRequest(HashRequest),
    /// BEP 52: the peer sends hashes (an answer to our request).
    Hashes {
        /// The request it answers.
        req: HashRequest,
        /// The hashes, 32 bytes each: the base layer's, then the proof.
        hashes: Vec<u8>,
    },
    /// BEP 52: the peer will not answer our request.
    HashReject(HashRequest),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    AwaitHandshake,
    AwaitAccept,
    Established,
}

#[derive(Clone, Copy, Debug)]
struct Outstanding {
    block: BlockRef,
    sent: Instant,
}

/// One peer connection. See the module docs for the poll order.
#[derive(Debug)]
pub struct PeerConn {
    config: PeerConfig,
    state: State,
    info_hash: Option<InfoHash>,
    our_id: PeerId,
    our_reserved: Reserved,
    their_id: Option<PeerId>,
    their_reserved: Reserved,
    geometry: Option<Geometry>,
    /// Before the geometry is known (magnet links) the raw bitfield waits here.
    pending_bitfield: Option<Vec<u8>>,
    pending_have_all: Option<bool>,
    pending_haves: Vec<u32>,
    has: Bitfield,
    got_bitfield: bool,
    am_choking: bool,
    am_interested: bool,
    peer_choking: bool,
    peer_interested: bool,
    allowed_fast: Vec<PieceIndex>,
    outstanding: Vec<Outstanding>,
    peer_requests: RequestQueue,
    rx: Vec<u8>,
    tx: Vec<u8>,
    tx_pos: usize,
    /// Block payloads the host holds and sends itself ([`PeerConn::send_block_held`]),
    /// each at its place in `tx`, in order.
    tx_held: VecDeque<HeldPayload>,
    /// Their bytes, counted in the send queue.
    tx_held_bytes: usize,
    /// Room in the send queue beyond the configured caps for our have-set (sent once,
    /// as long as the torrent's bitfield).
    have_set_room: usize,
    /// A message did not fit under [`PeerConn::send_cap`]: the connection must close.
    overflow: bool,
    /// How long the peer has for its handshake (shorter for incoming connections).
    handshake_timeout: Duration,
    events: VecDeque<PeerEvent>,
    created: Instant,
    last_recv: Instant,
    last_send: Instant,
    last_block: Instant,
    /// When a requested block last came or one of ours went (the connection's start
    /// until then).
    last_payload: Instant,
    down: Rate,
    up: Rate,
    /// Slow start: the pipeline depth until the first rate measurement (one more per
    /// block received, so it doubles every round trip); 0 once it is over.
    slow_start: u32,
    their_reqq: Option<u32>,
}

impl PeerConn {
    fn new(config: PeerConfig, now: Instant, our_id: PeerId, our_reserved: Reserved) -> Self {
        Self {
            config,
            state: State::AwaitHandshake,
            info_hash: None,
            our_id,
            our_reserved,
            their_id: None,
            their_reserved: Reserved::NONE,
            geometry: None,
            pending_bitfield: None,
            pending_have_all: None,
            pending_haves: Vec::new(),
            has: Bitfield::default(),
            got_bitfield: false,
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            allowed_fast: Vec::new(),
            outstanding: Vec::new(),
            peer_requests: RequestQueue::default(),
            rx: Vec::new(),
            tx: Vec::new(),
            tx_pos: 0,
            tx_held: VecDeque::new(),
            tx_held_bytes: 0,
            have_set_room: 0,
            overflow: false,
            handshake_timeout: config.handshake_timeout,
            events: VecDeque::new(),
            created: now,
            last_recv: now,
            last_send: now,
            last_block: now,
            last_payload: now,
            down: Rate::default(),
            up: Rate::default(),
            slow_start: config.min_queue.max(1),
            their_reqq: None,
        }
    }

    /// A connection we opened to a peer for `info_hash`; our handshake is queued.
    pub(crate) fn new_outgoing(
        config: PeerConfig,
        now: Instant,
        info_hash: InfoHash,
        our_id: PeerId,
        our_reserved: Reserved,
    ) -> Self {
        let mut c = Self::new(config, now, our_id, our_reserved);
        c.info_hash = Some(info_hash);
        c.queue_handshake(info_hash);
        c
    }

    /// A connection a peer opened to us; its handshake tells which torrent it wants.
    pub(crate) fn new_incoming(
        config: PeerConfig,
        now: Instant,
        our_id: PeerId,
        our_reserved: Reserved,
    ) -> Self {
        let mut c = Self::new(config, now, our_id, our_reserved);
        c.handshake_timeout = config.incoming_handshake_timeout;
        c
    }

    fn queue_handshake(&mut self, info_hash: InfoHash) {
        let hs = Handshake {
            reserved: self.our_reserved,
            info_hash,
            peer_id: self.our_id,
        };
        let mut buf = [0u8; wire::HANDSHAKE_LEN];
        if let Ok(n) = hs.encode(&mut buf) {
            self.tx.extend_from_slice(&buf[..n]);
        }
    }

    /// Answers an incoming peer's handshake for a torrent we serve, and reads whatever
    /// the peer sent after its handshake.
    pub fn accept(&mut self, now: Instant, info_hash: InfoHash) -> Result<(), PeerError> {
        if self.state != State::AwaitAccept {
            return Err(PeerError::ProtocolOrder);
        }
        self.info_hash = Some(info_hash);
        self.queue_handshake(info_hash);
        self.state = State::Established;
        self.parse_buffered(now)
    }

    /// Sets the torrent's geometry (at once for a torrent file, after the metadata for
    /// a magnet link) and checks what the peer said it has so far.
    pub(crate) fn set_geometry(&mut self, g: Geometry) -> Result<(), PeerError> {
        self.geometry = Some(g);
        let n = g.num_pieces();
        self.has = Bitfield::new(n);
        if let Some(bits) = self.pending_bitfield.take() {
            self.has = Bitfield::from_wire(&bits, n).ok_or(PeerError::BadBitfield)?;
        }
        if self.pending_have_all == Some(true) {
            self.has = Bitfield::full(n);
        }
        for i in core::mem::take(&mut self.pending_haves) {
            if i >= n {
                return Err(PeerError::BadPiece(i));
            }
            self.has.set(i);
        }
        Ok(())
    }

    // ---- getters ----

    /// Whether the handshake is complete both ways.
    pub(crate) fn is_established(&self) -> bool {
        self.state == State::Established
    }
    /// The peer's id, once its handshake arrived.
    pub fn peer_id(&self) -> Option<PeerId> {
        self.their_id
    }
    /// The peer's reserved bits.
    pub fn peer_reserved(&self) -> Reserved {
        self.their_reserved
    }
    /// Whether both sides speak BEP 6.
    pub fn fast(&self) -> bool {
        self.our_reserved.fast() && self.their_reserved.fast()
    }
    /// Whether both sides speak BEP 10.
    pub fn extensions(&self) -> bool {
        self.our_reserved.extension_protocol() && self.their_reserved.extension_protocol()
    }
    /// Whether the peer has `piece`.
    pub fn has(&self, piece: PieceIndex) -> bool {
        self.has.get(piece.0)
    }
    /// The peer's pieces (empty until the geometry is known).
    pub fn bitfield(&self) -> &Bitfield {
        &self.has
    }
    /// Whether the peer has every piece.
    pub fn is_seed(&self) -> bool {
        !self.has.is_empty() && self.has.is_full()
    }
    /// Whether we choke the peer.
    pub fn am_choking(&self) -> bool {
        self.am_choking
    }
    /// Whether we are interested in the peer.
    pub fn am_interested(&self) -> bool {
        self.am_interested
    }
    /// Whether the peer chokes us.
    pub fn peer_choking(&self) -> bool {
        self.peer_choking
    }
    /// Whether the peer is interested in us.
    pub fn peer_interested(&self) -> bool {
        self.peer_interested
    }
    /// Pieces the peer lets us fetch while choked (BEP 6).
    pub(crate) fn allowed_fast(&self) -> &[PieceIndex] {
        &self.allowed_fast
    }
    /// Download rate from the peer, bytes/s.
    pub fn download_rate(&self) -> u64 {
        self.down.get()
    }
    /// Upload rate to the peer, bytes/s.
    pub fn upload_rate(&self) -> u64 {
        self.up.get()
    }
    /// Download and upload rates at `now`, including the second in progress (for
    /// display: [`Rate::at`]).
    pub fn rates_at(&self, now: Instant) -> (u64, u64) {
        (self.down.at(now), self.up.at(now))
    }
    /// Payload bytes received and sent.
    pub fn totals(&self) -> (u64, u64) {
        (self.down.total(), self.up.total())
    }
    /// When the connection was made.
    pub fn created(&self) -> Instant {
        self.created
    }
    /// When a block we requested last arrived or a block of ours last went out
    /// (when the connection was made, before any).
    pub(crate) fn last_payload(&self) -> Instant {
        self.last_payload
    }
    /// Whether requests are out and no block came for the snub timeout.
    pub(crate) fn is_snubbing(&self, now: Instant) -> bool {
        !self.outstanding.is_empty() && now.since(self.last_block) >= self.config.snub_timeout
    }
    /// Our requests in flight.
    pub fn outstanding(&self) -> impl Iterator<Item = BlockRef> + '_ {
        self.outstanding.iter().map(|o| o.block)
    }
    /// How many more requests to send now: the pipeline depth follows the peer's rate
    /// (`queue_secs` of it), within `min_queue..=max_queue` and the peer's own `reqq`.
    pub(crate) fn request_slots(&self, now: Instant) -> usize {
        if self.state != State::Established {
            return 0;
        }
        let depth = if self.is_snubbing(now) {
            1
        } else {
            let mut by_rate =
                self.down.get() * u64::from(self.config.queue_secs) / u64::from(BLOCK_LEN);
            if self.slow_start > 0 && self.down.get() == 0 {
                // No rate measured yet (it takes a second): grow with what arrives
                // instead of waiting at `min_queue`.
                by_rate = by_rate.max(u64::from(self.slow_start));
            }
            let mut d = by_rate.clamp(
                u64::from(self.config.min_queue),
                u64::from(self.config.max_queue),
            );
            if let Some(q) = self.their_reqq {
                d = d.min(u64::from(q.max(1)));
            }
            d
        };
        (depth as usize).saturating_sub(self.outstanding.len())
    }
    /// Whether we may request blocks of `piece` now (unchoked, or allowed-fast).
    pub(crate) fn can_request(&self, piece: PieceIndex) -> bool {
        self.has(piece)
            && (!self.peer_choking || (self.fast() && self.allowed_fast.contains(&piece)))
    }
    /// Bytes queued to send.
    pub fn send_queued(&self) -> usize {
        self.tx.len() - self.tx_pos + self.tx_held_bytes
    }
    /// Room left in the send buffer for blocks.
    pub(crate) fn send_space(&self) -> usize {
        self.config
            .max_send_buffer
            .saturating_sub(self.send_queued())
    }
    /// The most bytes the send queue ever holds: `max_send_buffer` and
    /// `send_allowance` ([`PeerConfig`]), and our have-set once (a bitfield is as long
    /// as the torrent needs). A message that would pass it is not queued and the
    /// connection fails with [`PeerError::SendOverflow`].
    pub fn send_cap(&self) -> usize {
        self.config
            .max_send_buffer
            .saturating_add(self.config.send_allowance)
            .saturating_add(self.have_set_room)
    }
    /// Whether the host should read from the peer: false while what we have queued
    /// for it is past `max_send_buffer` and half of `send_allowance` (the peer does
    /// not read, and every message it sends may make us queue more), or once the
    /// queue overflowed. Its bytes then wait in the kernel and TCP flow control holds
    /// it back; the idle timeout closes a peer that never reads.
    pub fn wants_recv(&self) -> bool {
        let limit = self
            .config
            .max_send_buffer
            .saturating_add(self.config.send_allowance / 2)
            .saturating_add(self.have_set_room);
        !self.overflow && self.send_queued() < limit
    }
    /// Bytes of the blocks we asked of the peer and it has not sent, rejected or
    /// had cancelled yet.
    pub fn owed_bytes(&self) -> usize {
        self.outstanding.iter().map(|o| o.block.len as usize).sum()
    }
    /// Whether a message did not fit in the send queue (the connection must close
    /// with [`PeerError::SendOverflow`]).
    pub(crate) fn overflowed(&self) -> bool {
        self.overflow
    }
    /// Bytes received and kept for a message not yet complete (at most one frame).
    pub fn recv_buffered(&self) -> usize {
        self.rx.len()
    }

    // ---- input ----

    /// Takes bytes read from the socket.
    pub fn handle_recv(&mut self, now: Instant, data: &[u8]) -> Result<(), PeerError> {
        if self.overflow {
            return Err(PeerError::SendOverflow);
        }
        if data.is_empty() {
            return Ok(());
        }
        self.last_recv = now;
        let mut data = data;
        if matches!(self.state, State::AwaitHandshake | State::AwaitAccept) && !self.rx.is_empty() {
            self.rx.extend_from_slice(data);
            return self.parse_buffered(now);
        }
        // A message begun in an earlier read: complete it with just the bytes it
        // lacks, so the buffer holds one message at most, not a whole read.
        while !self.rx.is_empty() && !data.is_empty() {
            let need = if self.rx.len() < 4 {
                4 - self.rx.len()
            } else {
                let len = u32::from_be_bytes([self.rx[0], self.rx[1], self.rx[2], self.rx[3]]);
                (4 + len as usize).saturating_sub(self.rx.len()).max(1)
            };
            let take = need.min(data.len());
            self.rx.extend_from_slice(&data[..take]);
            data = &data[take..];
            self.parse_buffered(now)?;
        }
        if data.is_empty() {
            return Ok(());
        }
        // The common case: whole messages straight from the caller's buffer; only a
        // partial message at the end is copied.
        let mut pos = 0;
        let result = self.parse_slice(now, data, &mut pos);
        if result.is_ok() {
            self.rx.extend_from_slice(&data[pos..]);
        }
        result
    }

    /// Parses what waits in the receive buffer, then keeps only the partial tail (and
    /// gives back memory a burst left behind: an idle connection holds little).
    fn parse_buffered(&mut self, now: Instant) -> Result<(), PeerError> {
        let rx = core::mem::take(&mut self.rx);
        let mut pos = 0;
        let result = self.parse_slice(now, &rx, &mut pos);
        self.rx = rx;
        self.rx.drain(..pos);
        if self.rx.capacity() > 64 * 1024 && self.rx.len() <= 32 * 1024 {
            self.rx.shrink_to(32 * 1024);
        }
        result
    }

    fn parse_slice(&mut self, now: Instant, buf: &[u8], pos: &mut usize) -> Result<(), PeerError> {
        if self.state == State::AwaitHandshake {
            match Handshake::parse(buf)? {
                Status::Partial { .. } => return Ok(()),
                Status::Complete((hs, n)) => {
                    *pos = n;
                    self.on_handshake(hs)?;
                }
            }
        }
        if self.state == State::AwaitAccept {
            // Bytes after the handshake wait for accept().
            return Ok(());
        }
        let limits = self.config.wire;
        loop {
            let rest = &buf[*pos..];
            match wire::decode(rest, &limits)? {
                Status::Partial { .. } => return Ok(()),
                Status::Complete((msg, n)) => {
                    let owned = OwnedMsg::from(&msg);
                    *pos += n;
                    self.on_message(now, owned)?;
                    // What the peer sent made us queue more than we keep: the rest of
                    // its bytes is not worth parsing.
                    if self.overflow {
                        return Err(PeerError::SendOverflow);
                    }
                }
            }
        }
    }

    fn on_handshake(&mut self, hs: Handshake) -> Result<(), PeerError> {
        if hs.peer_id == self.our_id {
            return Err(PeerError::SelfConnection);
        }
        if let Some(ih) = self.info_hash {
            if ih != hs.info_hash {
                return Err(PeerError::InfoHashMismatch);
            }
            self.state = State::Established;
        } else {
            self.state = State::AwaitAccept;
        }
        self.their_id = Some(hs.peer_id);
        self.their_reserved = hs.reserved;
        self.events.push_back(PeerEvent::Handshake {
            info_hash: hs.info_hash,
            peer_id: hs.peer_id,
            reserved: hs.reserved,
        });
        Ok(())
    }

    fn check_piece(&self, i: PieceIndex) -> Result<(), PeerError> {
        match self.geometry {
            Some(g) if i.0 >= g.num_pieces() => Err(PeerError::BadPiece(i.0)),
            _ => Ok(()),
        }
    }

    fn on_message(&mut self, now: Instant, msg: OwnedMsg) -> Result<(), PeerError> {
        // Only one bitfield / have all / have none, and before any `have`.
        let first = !self.got_bitfield;
        if matches!(
            msg,
            OwnedMsg::Bitfield(_) | OwnedMsg::HaveAll | OwnedMsg::HaveNone | OwnedMsg::Have(_)
        ) {
            self.got_bitfield = true;
        }
        match msg {
            OwnedMsg::KeepAlive => {}
            OwnedMsg::Choke => {
                self.peer_choking = true;
                self.events.push_back(PeerEvent::Choked);
                if !self.fast() {
                    // Without BEP 6 a choke silently drops every request.
                    for o in core::mem::take(&mut self.outstanding) {
                        self.events.push_back(PeerEvent::RequestLost(o.block));
                    }
                }
            }
            OwnedMsg::Unchoke => {
                self.peer_choking = false;
                self.last_block = now;
                self.events.push_back(PeerEvent::Unchoked);
            }
            OwnedMsg::Interested(yes) => {
                self.peer_interested = yes;
                self.events.push_back(PeerEvent::Interest(yes));
            }
            OwnedMsg::Have(i) => {
                self.check_piece(i)?;
                if self.geometry.is_some() {
                    if self.has.set(i.0) {
                        self.events.push_back(PeerEvent::Have(i));
                    }
                } else if self.pending_haves.len() < self.config.wire.max_pieces as usize {
                    self.pending_haves.push(i.0);
                }
            }
            OwnedMsg::Bitfield(bits) => {
                match (self.geometry, first) {
                    (Some(g), true) => {
                        self.has = Bitfield::from_wire(&bits, g.num_pieces())
                            .ok_or(PeerError::BadBitfield)?;
                        self.events.push_back(PeerEvent::HaveSet);
                    }
                    // A late bitfield (aria2 sends one instead of many `have`s): taken as
                    // a batch of `have`s; a peer never loses pieces (BEP 3).
                    (Some(g), false) => {
                        let late = Bitfield::from_wire(&bits, g.num_pieces())
                            .ok_or(PeerError::BadBitfield)?;
                        for i in late.iter_set() {
                            if self.has.set(i) {
                                self.events.push_back(PeerEvent::Have(PieceIndex(i)));
                            }
                        }
                    }
                    (None, _) => self.pending_bitfield = Some(bits),
                }
            }
            OwnedMsg::HaveAll | OwnedMsg::HaveNone => {
                if !self.fast() {
                    return Err(PeerError::FastNotNegotiated);
                }
                if !first {
                    return Err(PeerError::BadBitfield);
                }
                let all = matches!(msg, OwnedMsg::HaveAll);
                match self.geometry {
                    Some(g) => {
                        self.has = if all {
                            Bitfield::full(g.num_pieces())
                        } else {
                            Bitfield::new(g.num_pieces())
                        };
                        self.events.push_back(PeerEvent::HaveSet);
                    }
                    None => self.pending_have_all = Some(all),
                }
            }
            OwnedMsg::Request(b) => {
                let valid = self
                    .geometry
                    .is_some_and(|g| g.is_valid_block(&b, self.config.wire.max_block_len));
                if !valid {
                    return Err(PeerError::BadRequest(b));
                }
                let allowed = !self.am_choking;
                if !allowed || self.peer_requests.len() >= self.config.max_peer_requests {
                    if self.fast() {
                        self.send(&Message::Reject(b));
                    }
                } else if self.peer_requests.push(b) {
                    self.events.push_back(PeerEvent::PeerRequest);
                }
            }
            OwnedMsg::Cancel(b) => {
                if self.peer_requests.remove(&b) && self.fast() {
                    self.send(&Message::Reject(b));
                }
            }
            OwnedMsg::Piece(b, data) => {
                let Some(i) = self.outstanding.iter().position(|o| o.block == b) else {
                    // A block we cancelled may still arrive: accept it quietly when it is
                    // a valid block; anything else is the peer's fault.
                    let valid = self
                        .geometry
                        .is_some_and(|g| g.is_valid_block(&b, BLOCK_LEN));
                    if valid {
                        self.down.add(now, data.len() as u64);
                        return Ok(());
                    }
                    return Err(PeerError::UnrequestedBlock(b));
                };
                self.outstanding.swap_remove(i);
                self.down.add(now, data.len() as u64);
                self.last_block = now;
                self.last_payload = now;
                if self.slow_start > 0 {
                    self.slow_start = if self.down.get() > 0 {
                        0
                    } else {
                        (self.slow_start + 1).min(self.config.max_queue)
                    };
                }
                self.events.push_back(PeerEvent::Block { block: b, data });
            }
            OwnedMsg::Reject(b) => {
                if !self.fast() {
                    return Err(PeerError::FastNotNegotiated);
                }
                if let Some(i) = self.outstanding.iter().position(|o| o.block == b) {
                    self.outstanding.swap_remove(i);
                    self.events.push_back(PeerEvent::RequestLost(b));
                }
            }
            OwnedMsg::AllowedFast(i) => {
                if !self.fast() {
                    return Err(PeerError::FastNotNegotiated);
                }
                self.check_piece(i)?;
                if self.allowed_fast.len() < 64 && !self.allowed_fast.contains(&i) {
                    self.allowed_fast.push(i);
                    self.events.push_back(PeerEvent::AllowedFast(i));
                }
            }
            OwnedMsg::Suggest(i) => {
                if !self.fast() {
                    return Err(PeerError::FastNotNegotiated);
                }
                self.check_piece(i)?;
                self.events.push_back(PeerEvent::Suggest(i));
            }
            OwnedMsg::Extended(id, payload) => {
                self.events.push_back(PeerEvent::Extended { id, payload });
            }
            OwnedMsg::Port(p) => self.events.push_back(PeerEvent::DhtPort(p)),
            OwnedMsg::HashRequest(r) => self.events.push_back(PeerEvent::HashRequest(r)),
            OwnedMsg::Hashes(req, hashes) => {
                self.events.push_back(PeerEvent::Hashes { req, hashes });
            }
            OwnedMsg::HashReject(r) => self.events.push_back(PeerEvent::HashReject(r)),
        }
        Ok(())
    }

    /// Checks timers: keep-alive, idle and handshake timeouts, request timeouts.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), PeerError> {
        if self.overflow {
            return Err(PeerError::SendOverflow);
        }
        if self.state != State::Established && now.since(self.created) >= self.handshake_timeout {
            return Err(PeerError::HandshakeTimeout);
        }
        if now.since(self.last_recv) >= self.config.idle_timeout {
            return Err(PeerError::Idle);
        }
        // Anything still queued keeps the connection alive once it leaves: a peer that
        // does not read gets no keep-alive on top of it.
        if self.state == State::Established
            && now.since(self.last_send) >= self.config.keepalive_interval
            && self.send_queued() == 0
        {
            self.send(&Message::KeepAlive);
        }
        let timeout = self.config.request_timeout;
        let mut i = 0;
        while i < self.outstanding.len() {
            if now.since(self.outstanding[i].sent) >= timeout {
                let o = self.outstanding.swap_remove(i);
                self.events.push_back(PeerEvent::RequestLost(o.block));
            } else {
                i += 1;
            }
        }
        self.down.tick(now);
        self.up.tick(now);
        Ok(())
    }

    /// When [`PeerConn::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.last_recv + self.config.idle_timeout;
        if self.state != State::Established {
            t = t.min(self.created + self.handshake_timeout);
        } else {
            t = t.min(self.last_send + self.config.keepalive_interval);
        }
        if let Some(o) = self.outstanding.iter().map(|o| o.sent).min() {
            t = t.min(o + self.config.request_timeout);
        }
        t
    }

    // ---- output ----

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    /// Copies queued bytes into `out`; returns how many (0: nothing to send, or a
    /// payload the host holds is next: [`PeerConn::poll_held`]).
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> usize {
        let end = self.tx_held.front().map_or(self.tx.len(), |h| h.at);
        let pending = &self.tx[self.tx_pos..end];
        let n = pending.len().min(out.len());
        out[..n].copy_from_slice(&pending[..n]);
        self.tx_pos += n;
        if self.tx_pos == self.tx.len() {
            self.shift_tx(self.tx_pos);
            self.tx.clear();
            // An upload burst can leave a large buffer behind; an idle peer keeps little.
            if self.tx.capacity() > 64 * 1024 {
                self.tx.shrink_to(16 * 1024);
            }
        } else if self.tx_pos > 64 * 1024 {
            self.tx.drain(..self.tx_pos);
            self.shift_tx(self.tx_pos);
        }
        if n > 0 {
            self.last_send = now;
        }
        n
    }

    /// The bytes before `tx_pos` are gone from `tx`: the held payloads' places move.
    fn shift_tx(&mut self, by: usize) {
        for h in &mut self.tx_held {
            h.at -= by;
        }
        self.tx_pos -= by;
    }

    /// Whether a payload the host holds is next in the send queue.
    pub fn held_next(&self) -> bool {
        self.tx_held.front().is_some_and(|h| h.at == self.tx_pos)
    }

    /// The payload the host holds that is next in the send queue, if one is: `(token,
    /// length)`, the token as given to `send_block_held` (through
    /// `Session::handle_read_held`). From now on the host sends it, before anything
    /// [`PeerConn::poll_transmit`] gives next.
    pub fn poll_held(&mut self, now: Instant) -> Option<(u64, u32)> {
        if !self.held_next() {
            return None;
        }
        let h = self.tx_held.pop_front()?;
        self.tx_held_bytes -= h.len as usize;
        self.last_send = now;
        Some((h.token, h.len))
    }

    /// Whether `len` more bytes fit under [`PeerConn::send_cap`]; when not, the
    /// connection is marked to close.
    fn room_for(&mut self, len: usize) -> bool {
        if self.overflow || self.send_queued().saturating_add(len) > self.send_cap() {
            self.overflow = true;
            return false;
        }
        true
    }

    fn send(&mut self, m: &Message<'_>) {
        let len = m.encoded_len();
        if !self.room_for(len) {
            return;
        }
        let start = self.tx.len();
        self.tx.resize(start + len, 0);
        match m.encode(&mut self.tx[start..]) {
            Ok(n) => self.tx.truncate(start + n),
            Err(_) => self.tx.truncate(start),
        }
    }

    // ---- commands ----

    /// Sends what we have: a bitfield, or with BEP 6 `have all` / `have none`.
    pub(crate) fn send_have_set(&mut self, ours: &Bitfield) {
        // Sent once, at the start: its room comes on top of the caps.
        self.have_set_room = ours.as_bytes().len() + 5;
        // A torrent whose size is not known yet (a magnet link) has nothing.
        if ours.is_empty() {
            if self.fast() {
                self.send(&Message::HaveNone);
            }
            return;
        }
        if self.fast() && ours.is_full() {
            self.send(&Message::HaveAll);
        } else if self.fast() && ours.count() == 0 {
            self.send(&Message::HaveNone);
        } else if ours.count() > 0 {
            self.send(&Message::Bitfield(ours.as_bytes()));
        }
    }
    /// Announces a newly verified piece.
    pub(crate) fn send_have(&mut self, piece: PieceIndex) {
        self.send(&Message::Have(piece));
    }
    /// Says whether we want something the peer has.
    pub(crate) fn set_interested(&mut self, yes: bool) {
        if self.am_interested != yes {
            self.am_interested = yes;
            self.send(&if yes {
                Message::Interested
            } else {
                Message::NotInterested
            });
        }
    }
    /// Chokes or unchokes the peer. Choking drops its queued requests (BEP 6: rejected).
    pub(crate) fn set_choking(&mut self, choke: bool) {
        if self.am_choking == choke {
            return;
        }
        self.am_choking = choke;
        if choke {
            self.send(&Message::Choke);
            let dropped = core::mem::take(&mut self.peer_requests);
            if self.fast() {
                for b in dropped.into_blocks() {
                    self.send(&Message::Reject(b));
                }
            }
        } else {
            self.send(&Message::Unchoke);
        }
    }
    /// Requests a block (the caller checked `PeerConn::can_request`).
    pub fn request(&mut self, now: Instant, block: BlockRef) {
        self.outstanding.push(Outstanding { block, sent: now });
        self.send(&Message::Request(block));
    }
    /// Cancels a request (endgame: another peer delivered the block).
    pub fn cancel(&mut self, block: BlockRef) {
        if let Some(i) = self.outstanding.iter().position(|o| o.block == block) {
            self.outstanding.swap_remove(i);
            self.send(&Message::Cancel(block));
        }
    }
    /// The next request of the peer to serve, if it still wants it.
    pub(crate) fn next_peer_request(&mut self) -> Option<BlockRef> {
        self.peer_requests.pop()
    }
    /// Requests of the peer waiting to be served.
    pub(crate) fn peer_requests_queued(&self) -> usize {
        self.peer_requests.len()
    }
    /// Sends a block the peer requested (read by the host).
    pub(crate) fn send_block(&mut self, now: Instant, block: BlockRef, data: &[u8]) -> bool {
        let mut hdr = [0u8; wire::PIECE_HEADER_LEN];
        if data.len() != block.len as usize || wire::encode_piece_header(&block, &mut hdr).is_err()
        {
            return false;
        }
        if !self.room_for(hdr.len() + data.len()) {
            return false;
        }
        self.tx.extend_from_slice(&hdr);
        self.tx.extend_from_slice(data);
        self.up.add(now, data.len() as u64);
        self.last_payload = now;
        true
    }
    /// Queues a piece message whose payload the host holds (a block it read) and sends
    /// itself: the header goes in the send queue, the payload's place after it
    /// ([`PeerConn::poll_held`] gives `token` there). False when it is not queued (no
    /// room: the connection is failing), and the host drops what it holds.
    pub(crate) fn send_block_held(&mut self, now: Instant, block: BlockRef, token: u64) -> bool {
        let mut hdr = [0u8; wire::PIECE_HEADER_LEN];
        if wire::encode_piece_header(&block, &mut hdr).is_err() {
            return false;
        }
        if !self.room_for(hdr.len() + block.len as usize) {
            return false;
        }
        self.tx.extend_from_slice(&hdr);
        self.tx_held.push_back(HeldPayload {
            at: self.tx.len(),
            len: block.len,
            token,
        });
        self.tx_held_bytes += block.len as usize;
        self.up.add(now, u64::from(block.len));
        self.last_payload = now;
        true
    }
    /// Sends a BEP 10 extension message with the peer's id for it.
    pub(crate) fn send_extended(&mut self, id: u8, payload: &[u8]) {
        self.send(&Message::Extended { id, payload });
    }
    /// BEP 52: asks for a range of a file's merkle tree.
    pub(crate) fn send_hash_request(&mut self, req: HashRequest) {
        self.send(&Message::HashRequest(req));
    }
    /// BEP 52: answers a hash request.
    pub(crate) fn send_hashes(&mut self, req: HashRequest, hashes: &[u8]) {
        self.send(&Message::Hashes { req, hashes });
    }
    /// BEP 52: refuses a hash request.
    pub(crate) fn send_hash_reject(&mut self, req: HashRequest) {
        self.send(&Message::HashReject(req));
    }
    /// Records the peer's `reqq` from its extension handshake.
    pub(crate) fn set_peer_reqq(&mut self, reqq: Option<u32>) {
        self.their_reqq = reqq;
    }
}

/// A block payload the host holds, at its place in the send queue.
#[derive(Debug, Clone, Copy)]
struct HeldPayload {
    /// Where in `tx` it goes (after its piece header).
    at: usize,
    len: u32,
    token: u64,
}

/// The peer's requests waiting for upload, in the order they came, with an index by
/// block: queueing, cancelling and serving a request each cost O(log n) however long
/// the queue (a linear search of it was a loop a peer could make us run 2,000 steps
/// per 17-byte message).
#[derive(Debug, Default)]
struct RequestQueue {
    /// Arrival number → block: the serve order.
    order: BTreeMap<u64, BlockRef>,
    /// Block → its arrival number.
    index: BTreeMap<ReqKey, u64>,
    next: u64,
}

impl RequestQueue {
    fn len(&self) -> usize {
        self.order.len()
    }
    /// Queues `b`; false when it is queued already.
    fn push(&mut self, b: BlockRef) -> bool {
        match self.index.entry(ReqKey(b)) {
            alloc::collections::btree_map::Entry::Occupied(_) => false,
            alloc::collections::btree_map::Entry::Vacant(v) => {
                v.insert(self.next);
                self.order.insert(self.next, b);
                self.next += 1;
                true
            }
        }
    }
    /// Drops `b`; false when it was not queued.
    fn remove(&mut self, b: &BlockRef) -> bool {
        match self.index.remove(&ReqKey(*b)) {
            Some(seq) => {
                self.order.remove(&seq);
                true
            }
            None => false,
        }
    }
    /// The oldest request.
    fn pop(&mut self) -> Option<BlockRef> {
        let (_, b) = self.order.pop_first()?;
        self.index.remove(&ReqKey(b));
        Some(b)
    }
    /// The requests in arrival order.
    fn into_blocks(self) -> impl Iterator<Item = BlockRef> {
        self.order.into_values()
    }
}

/// A block as the key of the request index; under `cfg(test)` it counts the
/// comparisons made (the work a peer's `request` and `cancel` cost).
#[derive(Clone, Copy, Debug)]
struct ReqKey(BlockRef);

#[cfg(test)]
std::thread_local! {
    /// Comparisons of request keys made on this thread.
    static KEY_COMPARISONS: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

#[inline]
fn count_comparison() {
    #[cfg(test)]
    KEY_COMPARISONS.with(|c| c.set(c.get() + 1));
}

impl PartialEq for ReqKey {
    fn eq(&self, other: &Self) -> bool {
        count_comparison();
        self.0 == other.0
    }
}
impl Eq for ReqKey {}
impl PartialOrd for ReqKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ReqKey {
    fn cmp(&self, other: &Self) -> Ordering {
        count_comparison();
        self.0.cmp(&other.0)
    }
}

/// A decoded message that owns its payload (the receive buffer is reused).
enum OwnedMsg {
    KeepAlive,
    Choke,
    Unchoke,
    Interested(bool),
    Have(PieceIndex),
    Bitfield(Vec<u8>),
    Request(BlockRef),
    Piece(BlockRef, Vec<u8>),
    Cancel(BlockRef),
    Port(u16),
    Suggest(PieceIndex),
    HaveAll,
    HaveNone,
    Reject(BlockRef),
    AllowedFast(PieceIndex),
    Extended(u8, Vec<u8>),
    HashRequest(HashRequest),
    Hashes(HashRequest, Vec<u8>),
    HashReject(HashRequest),
}

impl From<&Message<'_>> for OwnedMsg {
    fn from(m: &Message<'_>) -> Self {
        match *m {
            Message::KeepAlive => Self::KeepAlive,
            Message::Choke => Self::Choke,
            Message::Unchoke => Self::Unchoke,
            Message::Interested => Self::Interested(true),
            Message::NotInterested => Self::Interested(false),
            Message::Have(i) => Self::Have(i),
            Message::Bitfield(b) => Self::Bitfield(b.to_vec()),
            Message::Request(b) => Self::Request(b),
            Message::Piece {
                piece,
                offset,
                data,
            } => Self::Piece(
                BlockRef {
                    piece,
                    offset,
                    len: data.len() as u32,
                },
                data.to_vec(),
            ),
            Message::Cancel(b) => Self::Cancel(b),
            Message::Port(p) => Self::Port(p),
            Message::Suggest(i) => Self::Suggest(i),
            Message::HaveAll => Self::HaveAll,
            Message::HaveNone => Self::HaveNone,
            Message::Reject(b) => Self::Reject(b),
            Message::AllowedFast(i) => Self::AllowedFast(i),
            Message::Extended { id, payload } => Self::Extended(id, payload.to_vec()),
            Message::HashRequest(r) => Self::HashRequest(r),
            Message::Hashes { req, hashes } => Self::Hashes(req, hashes.to_vec()),
            Message::HashReject(r) => Self::HashReject(r),
        }
    }
}

#[cfg(test)]
mod tests;
