//! The sans-IO API: btcore's core session with the application as the host. The
//! application owns sockets, storage and the clock; the library touches no thread, no
//! file and no socket.
//!
//! Every call that changes state takes `now_ms`, a monotonic time in milliseconds
//! chosen by the application (never going backwards). After any call that feeds input,
//! drain `btcore_sansio_poll_actions` and carry the actions out, then
//! `btcore_sansio_events`; sleep until `btcore_sansio_next_timeout` or I/O.
//!
//! Threading: a handle may be used from any thread; calls on one handle are serialized
//! on an internal lock (nothing blocks for long: no call does I/O).
//!
//! The session API's other services have sans-IO counterparts in sibling modules:
//! protocol encryption inside the session (`sansio_mse`: the host moves raw socket
//! bytes), tracker requests and answers (`sansio_tracker`), the file list
//! (`sansio_files`), and DHT lookups as actions (`BTCORE_ACTION_DHT_LOOKUP`).
use crate::error::Failure;
use crate::sansio_mse::{policy, ConnLink, KeyPool};
use crate::*;
use btcore_core::bitfield::Bitfield;
use btcore_core::ids::{BlockRef, Geometry, PeerId, PieceIndex};
use btcore_core::metainfo::FileSpec;
use btcore_core::metainfo::{Limits, Metainfo};
use btcore_core::mse::Encryption;
use btcore_core::peer::PeerError;
use btcore_core::session::{
    Action, AddError, AnnounceEvent, AnnounceOutcome, CloseReason, ConnId, DhtOutcome, DiskError,
    Event, PeerSource, Session, SessionConfig, TorrentId, TorrentState, Transport, TransportPolicy,
};
use btcore_core::time::Instant;
use btcore_core::InfoHash;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Peers asked of a tracker per announce (as the std host does).
const ANNOUNCE_NUMWANT: u32 = 50;

/// An opaque sans-IO session. Made by `btcore_sansio_new`, freed by
/// `btcore_sansio_free`.
///
/// The host's rules (docs/c-api.md, "Writing a sans-IO host"):
/// - set `TCP_NODELAY` on every peer socket: the engine's small messages otherwise
///   wait up to 40 ms each in the kernel (Nagle), which stalls a download, the
///   low-memory profile's most;
/// - after any call, drain `btcore_sansio_poll_actions` and `btcore_sansio_events`
///   until both give nothing (disk completions made while carrying out actions create
///   more of both) before sleeping until I/O or `btcore_sansio_next_timeout`;
/// - give every call the same monotonic `now_ms` clock;
/// - threads: every call may come from any thread (the calls on one handle are
///   serialized on its lock, none does I/O); never free a handle while another call on
///   it runs.
#[derive(Debug)]
pub struct btcore_sansio {
    _private: [u8; 0],
}

/// Settings of a sans-IO session. Fill it with `btcore_sansio_settings_default()`
/// first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct btcore_sansio_settings {
    /// Our peer id; all zero: made from `random_seed` (`-BQ0100-` and 12 characters).
    pub peer_id: [u8; 20],
    /// Seed for the engine's random choices; give a fresh value per run (0 is
    /// replaced by a fixed constant: fine for tests, not for a swarm).
    pub random_seed: u64,
    /// The port we listen on, sent to peers in the extension handshake (0: none).
    pub listen_port: u16,
    /// The small-device profile: fewer peers, smaller buffers, 512 KiB to disk in flight.
    pub low_memory: bool,
    /// Most connections per torrent (0: the profile's default, 50 or 20).
    pub max_peers_per_torrent: u32,
    /// Most bytes handed out in `BTCORE_ACTION_WRITE`s and not yet completed
    /// (0: the profile's default, 1 MiB or 512 KiB). When full, no new requests go out;
    /// at twice it `btcore_sansio_disk_backlogged` says to stop reading from peers.
    pub max_disk_bytes_in_flight: u32,
    /// Protocol encryption (MSE/PE): one of `BTCORE_ENCRYPTION_*` (0, the default:
    /// `BTCORE_ENCRYPTION_PREFERRED`). The library runs the handshakes and RC4 itself:
    /// the host passes raw socket bytes to `btcore_sansio_recv` and writes what
    /// `btcore_sansio_transmit` gives.
    pub encryption: u32,
    /// 32 bytes from the device's random source (`getrandom`, `/dev/urandom`, a
    /// hardware RNG): the secret the encryption handshakes' keys are drawn from. All
    /// zero leaves only `random_seed` behind the keys, which an observer who guesses
    /// it can use to read encrypted traffic; `btcore_sansio_entropy` adds more later.
    pub entropy: [u8; 32],
    /// 1: look torrents up in a DHT the host runs (`BTCORE_ACTION_DHT_LOOKUP`
    /// actions, answered with `btcore_sansio_dht_done`); 0 (the default): no DHT.
    pub dht: u8,
    /// Which transports peers are dialed over: `BTCORE_TRANSPORT_POLICY_*`. 0, the
    /// default, is `TCP_ONLY`: every `CONNECT` asks for TCP, so a host without uTP is
    /// never asked for it. `BOTH` dials uTP first (a `btcore_utp` endpoint on the
    /// host's UDP port) and TCP when uTP is refused or unanswered; `UTP_ONLY` dials
    /// uTP alone. Connections the host accepts are taken over both whatever this says.
    pub transport: u32,
    /// Under `BTCORE_TRANSPORT_POLICY_BOTH`: how long a uTP dial may go unanswered
    /// before the peer is dialed over TCP instead, in milliseconds (0: the default,
    /// 3,000; checked once a second).
    pub utp_connect_timeout_ms: u32,
}

/// `btcore_action.transport`, `btcore_sansio_incoming_over`: a TCP connection.
pub const BTCORE_TRANSPORT_TCP: u8 = 0;
/// `btcore_action.transport`, `btcore_sansio_incoming_over`: a uTP connection (BEP 29)
/// over the host's UDP port (`btcore_utp`).
pub const BTCORE_TRANSPORT_UTP: u8 = 1;

/// `btcore_sansio_settings.transport`: dial over TCP only (the default).
pub const BTCORE_TRANSPORT_POLICY_TCP_ONLY: u32 = 0;
/// `btcore_sansio_settings.transport`: dial over uTP first, as libtorrent and
/// Transmission do; over TCP when the uTP dial is refused (`btcore_sansio_connect_failed`)
/// or unanswered for `utp_connect_timeout_ms` (a `CLOSE` of the uTP attempt, then a
/// `CONNECT` over TCP for the same `conn`), and over TCP from then on for that peer.
pub const BTCORE_TRANSPORT_POLICY_BOTH: u32 = 1;
/// `btcore_sansio_settings.transport`: dial over uTP only.
pub const BTCORE_TRANSPORT_POLICY_UTP_ONLY: u32 = 2;

/// What the application is asked to do.
pub type btcore_action_kind = u32;
/// Open a connection to `addr` for `torrent` over `transport` (TCP, the default, or
/// uTP when `settings.transport` allows it), known as `conn` from now on; answer with
/// `btcore_sansio_connected` or `btcore_sansio_connect_failed`.
pub const BTCORE_ACTION_CONNECT: btcore_action_kind = 1;
/// `conn` has bytes to send: call `btcore_sansio_transmit` until it gives 0 bytes
/// (or the socket would block: then again when it is writable).
pub const BTCORE_ACTION_SEND: btcore_action_kind = 2;
/// Close `conn` (the library has forgotten it); `error` says why, or `BTCORE_OK`.
pub const BTCORE_ACTION_CLOSE: btcore_action_kind = 3;
/// Write `length` bytes of block data at `torrent_offset` (piece `piece`, `offset`
/// within it): take the bytes with `btcore_sansio_take_write_data(id)`, then
/// answer with `btcore_sansio_write_done(id)`.
pub const BTCORE_ACTION_WRITE: btcore_action_kind = 4;
/// Read `length` bytes at `torrent_offset` for `conn` (an upload); answer with
/// `btcore_sansio_read_done(id)`.
pub const BTCORE_ACTION_READ: btcore_action_kind = 5;
/// Hash piece `piece` (`length` bytes at `torrent_offset`) and compare it with
/// `expected_hash` (`btcore_sha1` helps); answer with
/// `btcore_sansio_verified_blocks(id)`, giving the SHA-1 of each 16 KiB block of
/// the piece when it does not match, or when `block_digests` asks (they tell which
/// peer sent bad data). `btcore_sansio_verified(id)` answers without them.
pub const BTCORE_ACTION_VERIFY: btcore_action_kind = 6;
/// Announce to ONE tracker of the torrent, the one at `tracker` (`tracker_len`
/// bytes, no NUL; `http://`, `https://` or `udp://`), with `announce_event`,
/// `uploaded`, `downloaded` and `left`: give the peers found to
/// `btcore_sansio_add_peer` and answer with `btcore_sansio_announced(torrent, id,
/// ...)` for this exchange alone (`id` numbers it). On `BTCORE_ANNOUNCED_FAILED`
/// (no answer in the host's own time limit, 15 s is usual, or a scheme it does not
/// speak) the library names the next tracker of the torrent's tiers (BEP 12) in a
/// new `ANNOUNCE`; the tracker's `interval` and `min interval` schedule the next
/// one. A host without trackers answers `BTCORE_ANNOUNCED_NO_TRACKERS`. A
/// `STOPPED` announce needs no answer (it goes to each tracker that answered). One
/// not answered counts as failed after `announce_timeout` (10 min).
pub const BTCORE_ACTION_ANNOUNCE: btcore_action_kind = 7;
/// Look up the peers of `info_hash` in the DHT (only with `settings.dht`): give the
/// peers found to `btcore_sansio_add_peer`, then answer with
/// `btcore_sansio_dht_done(torrent, id, ...)`. When `dht_announce` is 1, announce
/// `port` for `info_hash` to the closest nodes too (BEP 5 `announce_peer`).
pub const BTCORE_ACTION_DHT_LOOKUP: btcore_action_kind = 8;

/// `btcore_action.announce_event`: a regular announce.
pub const BTCORE_ANNOUNCE_NONE: u32 = 0;
/// `btcore_action.announce_event`: the first announce.
pub const BTCORE_ANNOUNCE_STARTED: u32 = 1;
/// `btcore_action.announce_event`: the download completed.
pub const BTCORE_ANNOUNCE_COMPLETED: u32 = 2;
/// `btcore_action.announce_event`: the torrent stops.
pub const BTCORE_ANNOUNCE_STOPPED: u32 = 3;

/// `btcore_sansio_announced`: the tracker answered.
pub const BTCORE_ANNOUNCED_OK: u32 = 0;
/// `btcore_sansio_announced`: the tracker did not answer (it backs off: 60 s, doubling
/// up to an hour; the next tracker of the torrent's tiers is asked, and when none is
/// left the torrent retries after its own backoff).
pub const BTCORE_ANNOUNCED_FAILED: u32 = 1;
/// `btcore_sansio_announced`: the host has no tracker client (the torrent stops
/// announcing until it is started again).
pub const BTCORE_ANNOUNCED_NO_TRACKERS: u32 = 2;

/// Disk completion status: success.
pub const BTCORE_DISK_OK: u32 = 0;
/// Disk completion status: the disk is full (the torrent stops).
pub const BTCORE_DISK_NO_SPACE: u32 = 1;
/// Disk completion status: another I/O error (the torrent stops).
pub const BTCORE_DISK_IO_ERROR: u32 = 2;

/// One action, drained by `btcore_sansio_poll_actions`. Fields not used by a kind are
/// zero.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct btcore_action {
    /// What to do.
    pub kind: btcore_action_kind,
    /// The torrent.
    pub torrent: u32,
    /// The action's id, for the completion of `WRITE`, `READ`, `VERIFY` and `ANNOUNCE`.
    pub id: u64,
    /// The connection (`CONNECT`, `SEND`, `CLOSE`, `READ`).
    pub conn: u32,
    /// The piece (`WRITE`, `READ`, `VERIFY`).
    pub piece: u32,
    /// Byte offset inside the piece (`WRITE`, `READ`; 0 for `VERIFY`).
    pub offset: u32,
    /// Length in bytes (`WRITE`, `READ`: the block; `VERIFY`: the piece).
    pub length: u32,
    /// Byte offset in the torrent's data (all files end to end): for a single-file
    /// torrent, the offset in the file.
    pub torrent_offset: u64,
    /// Where to connect (`CONNECT`).
    pub addr: btcore_addr,
    /// The piece's SHA-1 (`VERIFY`).
    pub expected_hash: [u8; 20],
    /// Why the connection closes (`CLOSE`): `BTCORE_OK` (a normal close: the torrent
    /// stopped, both ends are seeds), `BTCORE_PEER_BANNED`, `BTCORE_PEER_PROTOCOL` or
    /// `BTCORE_PEER_TIMEOUT`.
    pub error: btcore_result,
    /// `BTCORE_ANNOUNCE_*` (`ANNOUNCE`).
    pub announce_event: u32,
    /// Payload bytes sent so far (`ANNOUNCE`).
    pub uploaded: u64,
    /// Payload bytes received so far (`ANNOUNCE`).
    pub downloaded: u64,
    /// Bytes still missing (`ANNOUNCE`).
    pub left: u64,
    /// The tracker's URL (`ANNOUNCE`), not NUL-terminated: valid until the next
    /// `btcore_sansio_poll_actions` or `btcore_sansio_free` on the handle.
    pub tracker: *const u8,
    /// Length of `tracker` in bytes.
    pub tracker_len: usize,
    /// `VERIFY`: the piece failed before; give the digest of each block even if it
    /// matches (see `btcore_sansio_verified_blocks`).
    pub block_digests: bool,
    /// `CONNECT`: 1 when this dials `conn` again, in plain text, after its encryption
    /// handshake failed (`BTCORE_ENCRYPTION_PREFERRED`, once per dial): the host has
    /// closed the socket (or was told to by a `CLOSE`) and opens a new one for the same
    /// `conn`.
    pub redial: u8,
    /// `DHT_LOOKUP`: 1 to announce ourselves on `port` too.
    pub dht_announce: u8,
    /// The listen port to announce (`ANNOUNCE`, `DHT_LOOKUP`: `settings.listen_port`).
    pub port: u16,
    /// How many peers to ask the tracker for (`ANNOUNCE`; 0 for `STOPPED`).
    pub numwant: u32,
    /// The session's announce key (`ANNOUNCE`): lets a tracker recognise us across
    /// address changes.
    pub key: u32,
    /// The torrent's info-hash (`ANNOUNCE`, `DHT_LOOKUP`).
    pub info_hash: [u8; 20],
    /// Our peer id (`ANNOUNCE`).
    pub peer_id: [u8; 20],
    /// `CONNECT`: `BTCORE_TRANSPORT_TCP` or `BTCORE_TRANSPORT_UTP` (only when
    /// `settings.transport` is not `TCP_ONLY`). A redial keeps its dial's transport.
    pub transport: u8,
}

impl btcore_action {
    pub(crate) fn new(kind: btcore_action_kind, torrent: u32) -> Self {
        Self {
            kind,
            torrent,
            id: 0,
            conn: 0,
            piece: 0,
            offset: 0,
            length: 0,
            torrent_offset: 0,
            addr: btcore_addr::default(),
            expected_hash: [0; 20],
            error: BTCORE_OK,
            announce_event: 0,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            tracker: std::ptr::null(),
            tracker_len: 0,
            block_digests: false,
            redial: 0,
            dht_announce: 0,
            port: 0,
            numwant: 0,
            key: 0,
            info_hash: [0; 20],
            peer_id: [0; 20],
            transport: BTCORE_TRANSPORT_TCP,
        }
    }
}

#[derive(Debug)]
enum Pending {
    Write {
        torrent: TorrentId,
        block: BlockRef,
        data: Option<Vec<u8>>,
    },
    Read {
        torrent: TorrentId,
        conn: ConnId,
        block: BlockRef,
    },
    Verify {
        torrent: TorrentId,
        piece: PieceIndex,
        /// Blocks in the piece (the count of digests a completion may give).
        blocks: u32,
    },
}

/// What the library keeps of a torrent for the host: its info-hash and files.
#[derive(Debug)]
pub(crate) struct TorrentInfo {
    pub(crate) info_hash: InfoHash,
    /// A hybrid's truncated v2 info-hash (BEP 52: peers of the v2 swarm name it so).
    pub(crate) info_hash_v2: Option<InfoHash>,
    /// The files, sanitized and unique, in torrent order (empty until a magnet link's
    /// metadata arrives).
    pub(crate) files: Vec<FileSpec>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) session: Session,
    next_action: u64,
    pending: HashMap<u64, Pending>,
    geometry: HashMap<TorrentId, Geometry>,
    pub(crate) events: EventQueue,
    /// The tracker URLs of the `ANNOUNCE` actions given by the last
    /// `btcore_sansio_poll_actions` (their `tracker` fields point here).
    announce_urls: Vec<Box<[u8]>>,
    /// The torrents' info-hashes and files.
    pub(crate) info: HashMap<TorrentId, TorrentInfo>,
    /// Removed torrents' info-hashes, for their `STOPPED` announces; cleared once the
    /// action queue is drained.
    removed: HashMap<TorrentId, InfoHash>,
    /// The encryption policy.
    pub(crate) policy: Encryption,
    /// The secret behind the encryption handshakes' keys.
    pub(crate) keys: KeyPool,
    /// Each connection's encryption layer.
    pub(crate) links: HashMap<ConnId, ConnLink>,
    /// Actions of the encryption layer, handed out before the session's.
    pub(crate) extra: VecDeque<btcore_action>,
    /// The time of the last call that gave one.
    pub(crate) now: Instant,
    peer_id: PeerId,
    listen_port: u16,
    announce_key: u32,
}

/// cbindgen:ignore
struct SansioBox {
    inner: Mutex<Inner>,
    /// The last failure of a call on this handle (see `btcore_sansio_last_error`).
    last_error: crate::error::Slot,
}

/// The locked state behind a handle, once the live-handle set knows it.
///
/// # Safety
/// `p` is NULL, not a live handle (refused without a read), or a live sans-IO handle
/// that no `btcore_sansio_free` frees while the guard is held.
pub(crate) unsafe fn handle(
    p: *const btcore_sansio,
) -> Result<std::sync::MutexGuard<'static, Inner>, btcore_result> {
    if p.is_null() {
        return Err(BTCORE_NULL_PARAMETER);
    }
    if !is_live_handle(p.cast(), HandleKind::Sansio) {
        return Err(BTCORE_WRONG_HANDLE);
    }
    // SAFETY: a live sans-IO handle is a `SansioBox` made by `Box::into_raw` in
    // `btcore_sansio_new` and not freed yet (the caller makes no call that races with
    // its free, as the API requires).
    let b = unsafe { &*(p as *const SansioBox) };
    crate::error::attach(&b.last_error);
    b.inner.lock().map_err(|_| BTCORE_PANIC)
}

fn now(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

impl Inner {
    /// Moves the session's events into the queue, learning geometries on the way.
    fn pump_events(&mut self) {
        while let Some(e) = self.session.poll_event() {
            if let Event::MetadataReceived(id) = &e {
                if let Some(info) = self.session.info_bytes(*id) {
                    let mut file = b"d4:info".to_vec();
                    file.extend_from_slice(info);
                    file.push(b'e');
                    let mut tokens = Vec::new();
                    if let Ok(m) = Metainfo::parse_vec(&file, &mut tokens, &Limits::default()) {
                        self.geometry.insert(*id, m.geometry());
                        if let (Some(t), Ok(files)) = (self.info.get_mut(id), m.layout()) {
                            t.files = files;
                            t.info_hash_v2 = m.info_hash_v2_truncated().filter(|_| m.is_hybrid());
                        }
                    }
                }
            }
            if let Some((ev, detail)) = convert_event(&e) {
                self.events.push_with(ev, detail);
            }
        }
    }

    fn torrent_offset(&self, t: TorrentId, piece: PieceIndex, offset: u32) -> u64 {
        self.geometry
            .get(&t)
            .map_or(0, |g| g.piece_offset(piece) + u64::from(offset))
    }

    fn has_torrent(&self, id: u32) -> bool {
        self.session.torrents().any(|t| t.0 == id)
    }

    fn convert(&mut self, a: Action) -> Option<btcore_action> {
        let mut id = || {
            self.next_action += 1;
            self.next_action
        };
        Some(match a {
            Action::Connect {
                conn,
                torrent,
                addr,
                transport,
            } => {
                self.link_dial(conn, torrent, addr, transport);
                btcore_action {
                    conn: conn.0,
                    addr: btcore_addr::from_socket(addr),
                    transport: transport_code(transport),
                    ..btcore_action::new(BTCORE_ACTION_CONNECT, torrent.0)
                }
            }
            Action::Send(conn) => btcore_action {
                conn: conn.0,
                ..btcore_action::new(BTCORE_ACTION_SEND, 0)
            },
            Action::Close { conn, reason } => btcore_action {
                conn: {
                    self.link_forget(conn);
                    conn.0
                },
                error: match reason {
                    CloseReason::Banned => BTCORE_PEER_BANNED,
                    CloseReason::Peer(PeerError::Idle | PeerError::HandshakeTimeout) => {
                        BTCORE_PEER_TIMEOUT
                    }
                    CloseReason::Peer(_) | CloseReason::BadMetadata => BTCORE_PEER_PROTOCOL,
                    _ => BTCORE_OK,
                },
                ..btcore_action::new(BTCORE_ACTION_CLOSE, 0)
            },
            Action::Write {
                torrent,
                block,
                data,
            } => {
                let id = id();
                self.pending.insert(
                    id,
                    Pending::Write {
                        torrent,
                        block,
                        data: Some(data),
                    },
                );
                btcore_action {
                    id,
                    piece: block.piece.0,
                    offset: block.offset,
                    length: block.len,
                    torrent_offset: self.torrent_offset(torrent, block.piece, block.offset),
                    ..btcore_action::new(BTCORE_ACTION_WRITE, torrent.0)
                }
            }
            Action::Read {
                torrent,
                conn,
                block,
            } => {
                let id = id();
                self.pending.insert(
                    id,
                    Pending::Read {
                        torrent,
                        conn,
                        block,
                    },
                );
                btcore_action {
                    id,
                    conn: conn.0,
                    piece: block.piece.0,
                    offset: block.offset,
                    length: block.len,
                    torrent_offset: self.torrent_offset(torrent, block.piece, block.offset),
                    ..btcore_action::new(BTCORE_ACTION_READ, torrent.0)
                }
            }
            Action::Verify {
                torrent,
                piece,
                expected,
                block_digests,
                ..
            } => {
                let id = id();
                let g = self.geometry.get(&torrent);
                self.pending.insert(
                    id,
                    Pending::Verify {
                        torrent,
                        piece,
                        blocks: g.map_or(0, |g| g.blocks_in_piece(piece)),
                    },
                );
                btcore_action {
                    id,
                    piece: piece.0,
                    length: g.map_or(0, |g| g.piece_size(piece)),
                    torrent_offset: self.torrent_offset(torrent, piece, 0),
                    // A C host checks the v1 SHA-1 alone (v2-only torrents are refused).
                    expected_hash: expected.unwrap_or_default(),
                    block_digests,
                    ..btcore_action::new(BTCORE_ACTION_VERIFY, torrent.0)
                }
            }
            Action::Announce {
                torrent,
                tracker,
                event,
                uploaded,
                downloaded,
                left,
                seq,
                // A C host announces the info-hash it is given, one swarm.
                ..
            } => {
                let info_hash = self
                    .info
                    .get(&torrent)
                    .map(|t| t.info_hash)
                    .or_else(|| self.removed.get(&torrent).copied())
                    .unwrap_or(InfoHash([0; 20]));
                let url: Box<[u8]> = tracker.into_bytes().into_boxed_slice();
                let (ptr, len) = (url.as_ptr(), url.len());
                // The box's heap block does not move when the box is moved into the
                // list, so the pointer stays valid until the list is cleared.
                self.announce_urls.push(url);
                btcore_action {
                    id: seq,
                    tracker: ptr,
                    tracker_len: len,
                    announce_event: match event {
                        None => BTCORE_ANNOUNCE_NONE,
                        Some(AnnounceEvent::Started) => BTCORE_ANNOUNCE_STARTED,
                        Some(AnnounceEvent::Completed) => BTCORE_ANNOUNCE_COMPLETED,
                        Some(AnnounceEvent::Stopped) => BTCORE_ANNOUNCE_STOPPED,
                    },
                    uploaded,
                    downloaded,
                    left,
                    port: self.listen_port,
                    numwant: if event == Some(AnnounceEvent::Stopped) {
                        0
                    } else {
                        ANNOUNCE_NUMWANT
                    },
                    key: self.announce_key,
                    info_hash: info_hash.0,
                    peer_id: self.peer_id.0,
                    ..btcore_action::new(BTCORE_ACTION_ANNOUNCE, torrent.0)
                }
            }
            Action::DhtLookup {
                torrent,
                info_hash,
                announce,
                seq,
            } => btcore_action {
                id: seq,
                info_hash: info_hash.0,
                dht_announce: u8::from(announce),
                port: self.listen_port,
                ..btcore_action::new(BTCORE_ACTION_DHT_LOOKUP, torrent.0)
            },
            // The C host checks no magnet data (`check_after_metadata` is off): the
            // action has no C kind yet.
            Action::CheckData { .. } => return None,
            _ => return None,
        })
    }
}

/// Fills `out` with the defaults: desktop profile, no listen port, seed 0 (set one).
/// Thread-safe.
///
/// # Safety
///
/// `out` is NULL or valid for writing one `btcore_sansio_settings`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_settings_default(
    out: *mut btcore_sansio_settings,
) -> btcore_result {
    guard(|| {
        let out = non_null(out)?;
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(default_settings()) };
        Ok(())
    })
}

fn default_settings() -> btcore_sansio_settings {
    btcore_sansio_settings {
        peer_id: [0; 20],
        random_seed: 0,
        listen_port: 0,
        low_memory: false,
        max_peers_per_torrent: 0,
        max_disk_bytes_in_flight: 0,
        encryption: BTCORE_ENCRYPTION_PREFERRED,
        entropy: [0; 32],
        dht: 0,
        transport: BTCORE_TRANSPORT_POLICY_TCP_ONLY,
        utp_connect_timeout_ms: 0,
    }
}

/// The C code of a transport.
pub(crate) fn transport_code(t: Transport) -> u8 {
    match t {
        Transport::Utp => BTCORE_TRANSPORT_UTP,
        _ => BTCORE_TRANSPORT_TCP,
    }
}

/// Creates a sans-IO session from `settings` (NULL: the defaults) into `*out`. Free it
/// with `btcore_sansio_free`. Thread-safe.
///
/// # Safety
///
/// - `settings` is NULL or valid for reading one `btcore_sansio_settings`.
/// - `out` is NULL or valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_new(
    settings: *const btcore_sansio_settings,
    out: *mut *mut btcore_sansio,
) -> btcore_result {
    guard(|| {
        let out = non_null(out)?;
        let s = if settings.is_null() {
            default_settings()
        } else {
            // SAFETY: `settings` is non-NULL (checked above) and valid for one read, as
            // this function's contract requires.
            unsafe { *settings }
        };
        let seed = if s.random_seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            s.random_seed
        };
        let peer_id = if s.peer_id == [0; 20] {
            PeerId::generate(seed)
        } else {
            PeerId(s.peer_id)
        };
        let mut config = if s.low_memory {
            SessionConfig::low_memory(peer_id)
        } else {
            SessionConfig::new(peer_id)
        };
        config.listen_port = s.listen_port;
        // No action asks the C host to check a magnet link's data yet: the torrent
        // downloads at once when its metadata arrives.
        config.check_after_metadata = false;
        config.dht = s.dht != 0;
        config.transport = match s.transport {
            BTCORE_TRANSPORT_POLICY_TCP_ONLY => TransportPolicy::TcpOnly,
            BTCORE_TRANSPORT_POLICY_BOTH => TransportPolicy::Both,
            BTCORE_TRANSPORT_POLICY_UTP_ONLY => TransportPolicy::UtpOnly,
            _ => return Err(BTCORE_INVALID_PARAMETER),
        };
        if s.utp_connect_timeout_ms != 0 {
            config.utp_connect_timeout =
                btcore_core::time::Duration::from_millis(u64::from(s.utp_connect_timeout_ms));
        }
        let policy = policy(s.encryption).ok_or(BTCORE_INVALID_PARAMETER)?;
        let mut rng = btcore_core::rng::Rng::new(seed ^ 0x6b65_795f_616e_6e6f);
        if s.max_peers_per_torrent != 0 {
            config.max_peers_per_torrent = s.max_peers_per_torrent as usize;
        }
        if s.max_disk_bytes_in_flight != 0 {
            config.max_disk_bytes_in_flight = s.max_disk_bytes_in_flight as usize;
        }
        let b = Box::new(SansioBox {
            inner: Mutex::new(Inner {
                session: Session::new(config, seed),
                next_action: 0,
                pending: HashMap::new(),
                geometry: HashMap::new(),
                events: EventQueue::default(),
                announce_urls: Vec::new(),
                info: HashMap::new(),
                removed: HashMap::new(),
                policy,
                keys: KeyPool::new(&s.entropy, seed),
                links: HashMap::new(),
                extra: VecDeque::new(),
                now: Instant::from_millis(0),
                peer_id,
                listen_port: s.listen_port,
                announce_key: rng.next_u32(),
            }),
            last_error: crate::error::Slot::default(),
        });
        let p = Box::into_raw(b) as *mut btcore_sansio;
        register_handle(p.cast_const().cast(), HandleKind::Sansio);
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(p) };
        Ok(())
    })
}

/// Frees a sans-IO session and any write data not taken. NULL, or a handle already
/// freed, is a no-op. No other call on this handle may run meanwhile; calls after it
/// get `BTCORE_WRONG_HANDLE`.
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_sansio_new`. A handle already freed, or any pointer
/// the library did not make, is refused by a look-up in the library's set of live handles
/// without being read; no other call on the handle may run meanwhile.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_free(h: *mut btcore_sansio) {
    let _ = guard(|| {
        if h.is_null() {
            return Ok(());
        }
        if !unregister_handle(h.cast_const().cast(), HandleKind::Sansio) {
            return Err(BTCORE_WRONG_HANDLE);
        }
        // SAFETY: made by `Box::into_raw` in `btcore_sansio_new` and live until the
        // line above, which only one free can pass.
        drop(unsafe { Box::from_raw(h as *mut SansioBox) });
        Ok(())
    });
}

/// Adds a torrent whose data the application is still checking (hashing what is on
/// its storage, in the background): the torrent reads `BTCORE_STATE_CHECKING`, has no
/// piece, and neither announces nor takes or dials peers until
/// `btcore_sansio_checked` gives what verified. Writes the id to `*out_id`.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `data` is valid for reads of `len` bytes (it may be NULL when `len` is 0).
/// - `out_id` is NULL or valid for writing one `u32`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_add_torrent_checking(
    h: *mut btcore_sansio,
    data: *const u8,
    len: usize,
    now_ms: u64,
    out_id: *mut u32,
) -> btcore_result {
    guard_detail(|| {
        // SAFETY: `data` is valid for reads of `len` bytes or `len` is 0, as this
        // function's contract requires.
        let data = unsafe { bytes(data, len) }?;
        // SAFETY: `h` is NULL or a handle that no free races with and `out_id` NULL or
        // valid for one write, as this function's contract requires.
        unsafe {
            add(h, data, now_ms, out_id, |session, _| {
                session.add_torrent_checking(now(now_ms), data)
            })
        }
    })
}

/// The application's check of torrent `id` (added with
/// `btcore_sansio_add_torrent_checking`) is done: `have`/`have_len` is the BitTorrent
/// bitfield of the pieces that verified (NULL/0: none). The torrent then announces and
/// looks for peers. `BTCORE_NOT_FOUND` for an unknown id, `BTCORE_WRONG_STATE` when it
/// is not checking, `BTCORE_INVALID_PARAMETER` for a bitfield of the wrong size.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `have` is valid for reads of `have_len` bytes (it may be NULL when `have_len` is 0).
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_checked(
    h: *mut btcore_sansio,
    id: u32,
    have: *const u8,
    have_len: usize,
    now_ms: u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        s.now = now(now_ms);
        // SAFETY: `have` is valid for reads of `have_len` bytes or `have_len` is 0, as this
        // function's contract requires.
        let have = unsafe { bytes(have, have_len) }?;
        let t = TorrentId(id);
        let st = s
            .session
            .torrent_status(t, now(now_ms))
            .ok_or(BTCORE_NOT_FOUND)?;
        if st.state != TorrentState::Checking {
            return Err(BTCORE_WRONG_STATE);
        }
        let have = if have.is_empty() {
            Bitfield::new(st.num_pieces)
        } else {
            Bitfield::from_wire(have, st.num_pieces).ok_or(BTCORE_INVALID_PARAMETER)?
        };
        if !s.session.handle_checked(now(now_ms), t, &have) {
            return Err(BTCORE_INVALID_PARAMETER);
        }
        s.pump_events();
        Ok(())
    })
}

/// Adds a torrent from `len` bytes of `.torrent` data (copied). `have`/`have_len` is
/// resume data: the BitTorrent bitfield of pieces the application already verified
/// (as from `btcore_sansio_have`); NULL/0 means none. Writes the id to `*out_id`.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `data` is valid for reads of `len` bytes (it may be NULL when `len` is 0).
/// - `have` is valid for reads of `have_len` bytes (it may be NULL when `have_len` is 0).
/// - `out_id` is NULL or valid for writing one `u32`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_add_torrent(
    h: *mut btcore_sansio,
    data: *const u8,
    len: usize,
    have: *const u8,
    have_len: usize,
    now_ms: u64,
    out_id: *mut u32,
) -> btcore_result {
    guard_detail(|| {
        // SAFETY: `data` is valid for reads of `len` bytes or `len` is 0, as this
        // function's contract requires.
        let data = unsafe { bytes(data, len) }?;
        // SAFETY: `have` is valid for reads of `have_len` bytes or `have_len` is 0, as this
        // function's contract requires.
        let have = unsafe { bytes(have, have_len) }?;
        // SAFETY: `h` is NULL or a handle that no free races with and `out_id` NULL or
        // valid for one write, as this function's contract requires.
        unsafe {
            add(h, data, now_ms, out_id, |session, pieces| {
                let have = if have.is_empty() {
                    None
                } else {
                    Some(Bitfield::from_wire(have, pieces).ok_or(AddError::BadResume)?)
                };
                session.add_torrent(now(now_ms), data, have.as_ref())
            })
        }
    })
}

/// Adds the torrent in `data` with `insert` (given the session and the torrent's
/// number of pieces), records its geometry, queues `TORRENT_ADDED` and writes the id.
///
/// # Safety
/// As [`handle`] for `h`; `out_id` is NULL or valid for writing one `u32`.
unsafe fn add(
    h: *mut btcore_sansio,
    data: &[u8],
    now_ms: u64,
    out_id: *mut u32,
    insert: impl FnOnce(&mut Session, u32) -> Result<TorrentId, AddError>,
) -> Result<(), Failure> {
    // SAFETY: `h` is NULL or a handle that no free races with, as this function's contract
    // requires; anything else is refused before a read.
    let mut s = unsafe { handle(h) }?;
    s.now = now(now_ms);
    let out_id = non_null(out_id)?;
    let mut tokens = Vec::new();
    let m = Metainfo::parse_vec(data, &mut tokens, &Limits::default())
        .map_err(|e| Failure::new(BTCORE_INVALID_TORRENT, e).at(e.offset))?;
    if m.is_v2_only() {
        // `VERIFY` gives the C host a SHA-1 to compare: a v2-only torrent has none.
        let e = btcore_core::metainfo::MetainfoError {
            offset: 0,
            kind: btcore_core::metainfo::ErrorKind::V2Only,
        };
        return Err(Failure::new(BTCORE_INVALID_TORRENT, e));
    }
    let files = m.layout().map_err(|_| BTCORE_INVALID_TORRENT)?;
    let id = insert(&mut s.session, m.num_pieces()).map_err(|e| match e {
        AddError::Duplicate(_) => Failure::new(BTCORE_DUPLICATE_TORRENT, e),
        AddError::BadResume => Failure::new(
            BTCORE_INVALID_PARAMETER,
            "the have bitfield does not match the torrent's pieces",
        ),
        AddError::Metainfo(m) => Failure::new(BTCORE_INVALID_TORRENT, m).at(m.offset),
        _ => Failure::new(BTCORE_INVALID_TORRENT, e),
    })?;
    s.geometry.insert(id, m.geometry());
    s.info.insert(
        id,
        TorrentInfo {
            info_hash: m.info_hash(),
            info_hash_v2: m.info_hash_v2_truncated().filter(|_| m.is_hybrid()),
            files,
        },
    );
    // SAFETY: `out_id` is non-NULL (checked above) and valid for one write, as this
    // function's contract requires.
    unsafe { added(&mut s, id, out_id) };
    Ok(())
}

/// A torrent was added: `TORRENT_ADDED` queued, its first actions taken, the id
/// written to `out_id`.
///
/// # Safety
/// `out_id` is non-NULL and valid for writing one `u32`.
unsafe fn added(s: &mut Inner, id: TorrentId, out_id: *mut u32) {
    s.events
        .push(btcore_event::new(BTCORE_EVENT_TORRENT_ADDED, id.0));
    s.pump_events();
    // SAFETY: non-NULL and valid for one write, as this function's contract requires.
    unsafe { out_id.write(id.0) };
}

/// Adds a magnet link (NUL-terminated); writes the id to `*out_id`. The torrent's
/// metadata comes from peers (`BTCORE_EVENT_METADATA_RECEIVED`).
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `uri` is NULL or points to a NUL-terminated string.
/// - `out_id` is NULL or valid for writing one `u32`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_add_magnet(
    h: *mut btcore_sansio,
    uri: *const c_char,
    now_ms: u64,
    out_id: *mut u32,
) -> btcore_result {
    guard_detail(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        s.now = now(now_ms);
        // SAFETY: `uri` is NULL or NUL-terminated, as this function's contract requires.
        let uri = unsafe { cstr(uri) }?;
        let out_id = non_null(out_id)?;
        // A v2-only link's torrent has no SHA-1 for `VERIFY` (as for its torrent file).
        if btcore_core::magnet::Magnet::parse(uri.to_bytes())
            .is_ok_and(|m| m.info_hash_v1().is_none())
        {
            let e = btcore_core::magnet::MagnetError::V2Unsupported;
            return Err(Failure::new(BTCORE_INVALID_MAGNET, e));
        }
        let id = s
            .session
            .add_magnet(now(now_ms), uri.to_bytes())
            .map_err(|e| match e {
                AddError::Duplicate(_) => Failure::new(BTCORE_DUPLICATE_TORRENT, e),
                _ => Failure::new(BTCORE_INVALID_MAGNET, e),
            })?;
        if let Some(st) = s.session.torrent_status(id, now(now_ms)) {
            s.info.insert(
                id,
                TorrentInfo {
                    info_hash: st.info_hash,
                    info_hash_v2: None,
                    files: Vec::new(),
                },
            );
        }
        // SAFETY: `out_id` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { added(&mut s, id, out_id) };
        Ok(())
    })
}

/// Removes torrent `id`: its connections get `CLOSE` actions and an `ANNOUNCE` with
/// `BTCORE_ANNOUNCE_STOPPED` follows. The application deletes data itself if it
/// wants. Pending completions for it are accepted and ignored.
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
/// during the call. A freed handle, one of another type or any other pointer is a checked
/// error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
/// reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_remove_torrent(
    h: *mut btcore_sansio,
    id: u32,
    now_ms: u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        s.now = now(now_ms);
        if !s.has_torrent(id) {
            return Err(BTCORE_NOT_FOUND);
        }
        s.session.remove_torrent(now(now_ms), TorrentId(id));
        s.geometry.remove(&TorrentId(id));
        if let Some(t) = s.info.remove(&TorrentId(id)) {
            s.removed.insert(TorrentId(id), t.info_hash);
        }
        s.events
            .push(btcore_event::new(BTCORE_EVENT_TORRENT_REMOVED, id));
        s.pump_events();
        Ok(())
    })
}

/// Gives torrent `id` a peer address (from a tracker, the user, ...): a `CONNECT`
/// action follows when there is room.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `addr` is NULL or valid for reading one `btcore_addr`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_add_peer(
    h: *mut btcore_sansio,
    id: u32,
    addr: *const btcore_addr,
    now_ms: u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        s.now = now(now_ms);
        if addr.is_null() {
            return Err(BTCORE_NULL_PARAMETER);
        }
        // SAFETY: `addr` is non-NULL (checked above) and valid for one read, as this
        // function's contract requires.
        let a = unsafe { *addr }
            .to_socket()
            .ok_or(BTCORE_INVALID_PARAMETER)?;
        if !s.has_torrent(id) {
            return Err(BTCORE_NOT_FOUND);
        }
        // The application decides which addresses to give: believed as the user's.
        s.session
            .handle_peers(now(now_ms), TorrentId(id), &[a], PeerSource::User);
        s.pump_events();
        Ok(())
    })
}

/// How the `ANNOUNCE` action `action_id` (its `id` field) of torrent `id` went, the
/// exchange with the one tracker it named: `status` is one of
/// `BTCORE_ANNOUNCED_*`; with `BTCORE_ANNOUNCED_OK`, `interval_secs` is the tracker's
/// `interval` and `min_interval_secs` its `min interval` (0 when it sent none); both are
/// clamped to 30 s ..= 24 h. The next announce comes after the interval, and never
/// sooner than the min interval, however short of peers the torrent is.
/// `BTCORE_NOT_FOUND` when the torrent is unknown or `action_id` is not the announce
/// it waits for (a late answer, or one the library gave up on after 10 min);
/// `BTCORE_INVALID_PARAMETER` for an unknown status.
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
/// during the call. A freed handle, one of another type or any other pointer is a checked
/// error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
/// reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_announced(
    h: *mut btcore_sansio,
    id: u32,
    action_id: u64,
    status: u32,
    interval_secs: u32,
    min_interval_secs: u32,
    now_ms: u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        s.now = now(now_ms);
        let outcome = match status {
            BTCORE_ANNOUNCED_OK => AnnounceOutcome::Answered {
                interval: interval_secs,
                min_interval: (min_interval_secs != 0).then_some(min_interval_secs),
            },
            BTCORE_ANNOUNCED_FAILED => AnnounceOutcome::Failed,
            BTCORE_ANNOUNCED_NO_TRACKERS => AnnounceOutcome::NoTrackers,
            _ => return Err(BTCORE_INVALID_PARAMETER),
        };
        let known = s
            .session
            .handle_announced(now(now_ms), TorrentId(id), action_id, outcome);
        s.pump_events();
        known.then_some(()).ok_or(BTCORE_NOT_FOUND)
    })
}

/// `btcore_sansio_dht_done`: the lookup reached DHT nodes (whether or not they knew
/// peers): the next one comes after the regular interval.
pub const BTCORE_DHT_REACHED: u32 = 0;
/// `btcore_sansio_dht_done`: the lookup reached no node, or the host's DHT could not
/// run it: retried after a backoff.
pub const BTCORE_DHT_FAILED: u32 = 1;

/// The `DHT_LOOKUP` action `action_id` of torrent `id` is over: `status` is
/// `BTCORE_DHT_REACHED` or `BTCORE_DHT_FAILED` (give the peers found to
/// `btcore_sansio_add_peer` first). `BTCORE_NOT_FOUND` for a lookup the library no
/// longer waits for (late, or the torrent went).
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
/// during the call. A freed handle, one of another type or any other pointer is a checked
/// error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
/// reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_dht_done(
    h: *mut btcore_sansio,
    id: u32,
    action_id: u64,
    status: u32,
    now_ms: u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        s.now = now(now_ms);
        let outcome = match status {
            BTCORE_DHT_REACHED => DhtOutcome::Reached,
            BTCORE_DHT_FAILED => DhtOutcome::Failed,
            _ => return Err(BTCORE_INVALID_PARAMETER),
        };
        let known = s
            .session
            .handle_dht_done(now(now_ms), TorrentId(id), action_id, outcome);
        s.pump_events();
        known.then_some(()).ok_or(BTCORE_NOT_FOUND)
    })
}

/// Asks torrent `id` to announce: an `ANNOUNCE` action follows as soon as the
/// tracker's `min interval` allows (at once if it already does). `BTCORE_NOT_FOUND`
/// when the torrent is unknown or not running (checking, paused).
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
/// during the call. A freed handle, one of another type or any other pointer is a checked
/// error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
/// reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_reannounce(
    h: *mut btcore_sansio,
    id: u32,
    now_ms: u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        s.now = now(now_ms);
        let known = s.session.reannounce(now(now_ms), TorrentId(id));
        s.pump_events();
        known.then_some(()).ok_or(BTCORE_NOT_FOUND)
    })
}

/// A peer connected to us from `*addr` over TCP; writes the connection's id to
/// `*out_conn` (set `TCP_NODELAY` on the socket). Its first bytes tell plain from
/// encrypted; one the encryption policy refuses gets a `CLOSE`.
/// A connection refused (the connection cap is reached, or the address is banned for
/// bad data) gets a `CLOSE` action at once. The same as `btcore_sansio_incoming_over`
/// with `BTCORE_TRANSPORT_TCP`.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `addr` is NULL or valid for reading one `btcore_addr`.
/// - `out_conn` is NULL or valid for writing one `u32`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_incoming(
    h: *mut btcore_sansio,
    addr: *const btcore_addr,
    now_ms: u64,
    out_conn: *mut u32,
) -> btcore_result {
    // SAFETY: the pointers are as this function's contract requires, which is
    // `btcore_sansio_incoming_over`'s.
    unsafe { btcore_sansio_incoming_over(h, addr, BTCORE_TRANSPORT_TCP, now_ms, out_conn) }
}

/// A peer connected to us from `*addr` over `transport`: `BTCORE_TRANSPORT_TCP` (an
/// accepted socket) or `BTCORE_TRANSPORT_UTP` (a connection `btcore_utp_recv` reported
/// as `BTCORE_UTP_ACCEPTED`); writes the connection's id to `*out_conn`. The rest is as
/// `btcore_sansio_incoming`: the bytes read go to `btcore_sansio_recv`, those of
/// `btcore_sansio_transmit` to the connection, whatever its transport. Taken whatever
/// `settings.transport` says. `BTCORE_INVALID_PARAMETER` for another `transport`.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `addr` is NULL or valid for reading one `btcore_addr`.
/// - `out_conn` is NULL or valid for writing one `u32`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_incoming_over(
    h: *mut btcore_sansio,
    addr: *const btcore_addr,
    transport: u8,
    now_ms: u64,
    out_conn: *mut u32,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        s.now = now(now_ms);
        if addr.is_null() {
            return Err(BTCORE_NULL_PARAMETER);
        }
        // SAFETY: `addr` is non-NULL (checked above) and valid for one read, as this
        // function's contract requires.
        let a = unsafe { *addr }
            .to_socket()
            .ok_or(BTCORE_INVALID_PARAMETER)?;
        let out_conn = non_null(out_conn)?;
        let transport = match transport {
            BTCORE_TRANSPORT_TCP => Transport::Tcp,
            BTCORE_TRANSPORT_UTP => Transport::Utp,
            _ => return Err(BTCORE_INVALID_PARAMETER),
        };
        let c = s.session.handle_incoming_over(now(now_ms), a, transport);
        s.link_incoming(c);
        // SAFETY: `out_conn` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out_conn.write(c.0) };
        Ok(())
    })
}

/// Runs a per-connection report on the handle, then collects the session's events.
///
/// # Safety
/// As [`handle`] for `h`.
unsafe fn conn_event(h: *mut btcore_sansio, f: impl FnOnce(&mut Inner)) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        f(&mut s);
        s.pump_events();
        Ok(())
    })
}

/// The connection asked by a `CONNECT` action is open (set `TCP_NODELAY` on it). A
/// connection the library has already closed is ignored (as in every per-connection
/// call). When it is to be encrypted, a `SEND` follows for the handshake's first
/// message, and the torrent learns of the peer once the handshake is over.
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
/// during the call. A freed handle, one of another type or any other pointer is a checked
/// error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
/// reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_connected(
    h: *mut btcore_sansio,
    conn: u32,
    now_ms: u64,
) -> btcore_result {
    // SAFETY: `h` is NULL or a handle that no free races with, as this function's contract
    // requires; anything else is refused before a read.
    unsafe { conn_event(h, |s| s.link_connected(now(now_ms), ConnId(conn))) }
}

/// The connection asked by a `CONNECT` action could not be made.
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
/// during the call. A freed handle, one of another type or any other pointer is a checked
/// error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
/// reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_connect_failed(
    h: *mut btcore_sansio,
    conn: u32,
    now_ms: u64,
) -> btcore_result {
    // SAFETY: `h` is NULL or a handle that no free races with, as this function's contract
    // requires; anything else is refused before a read.
    unsafe { conn_event(h, |s| s.link_closed(now(now_ms), ConnId(conn), true)) }
}

/// The socket of `conn` closed or failed (no `CLOSE` action follows). When it was
/// dialed with the encryption handshake under `BTCORE_ENCRYPTION_PREFERRED` and closed
/// before the handshake was over, a `CONNECT` for the same `conn` with `redial` set
/// follows: dial again, in plain text.
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
/// during the call. A freed handle, one of another type or any other pointer is a checked
/// error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
/// reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_disconnected(
    h: *mut btcore_sansio,
    conn: u32,
    now_ms: u64,
) -> btcore_result {
    // SAFETY: `h` is NULL or a handle that no free races with, as this function's contract
    // requires; anything else is refused before a read.
    unsafe { conn_event(h, |s| s.link_closed(now(now_ms), ConnId(conn), false)) }
}

/// `len` bytes received on `conn` (any split: framing is the library's job), exactly as
/// read from the socket: the library undoes the encryption itself. Call it only while
/// `btcore_sansio_disk_backlogged` is false and `btcore_sansio_wants_recv` true for
/// `conn`.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `data` is valid for reads of `len` bytes (it may be NULL when `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_recv(
    h: *mut btcore_sansio,
    conn: u32,
    data: *const u8,
    len: usize,
    now_ms: u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        s.now = now(now_ms);
        // SAFETY: `data` is valid for reads of `len` bytes or `len` is 0, as this
        // function's contract requires.
        let data = unsafe { bytes(data, len) }?;
        s.link_recv(now(now_ms), ConnId(conn), data);
        s.pump_events();
        Ok(())
    })
}

/// Writes to `*out` whether the disk is behind: the bytes of `WRITE` actions not yet
/// confirmed with `btcore_sansio_write_done` reached twice `max_disk_bytes_in_flight`
/// (at the cap itself no more blocks are requested). While it is, stop reading from
/// peer sockets (leave the bytes in the kernel: TCP holds the peers back) and read
/// again after a `btcore_sansio_write_done` brings it under. The memory held for
/// received blocks then stays at twice the cap however slow the storage; a host that
/// ignores it stays correct, but may hold what peers owe on requests already sent.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `out` is NULL or valid for writing one `bool`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_disk_backlogged(
    h: *const btcore_sansio,
    out: *mut bool,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let s = unsafe { handle(h) }?;
        let out = non_null(out)?;
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(s.session.disk_backlogged()) };
        Ok(())
    })
}

/// Writes to `*out` whether to read from `conn` now. False while the peer does not
/// read what is queued for it (past `max_send_buffer` and half the allowance for other
/// messages, or with metadata pieces it asked for waiting for room): leave its bytes
/// in the kernel (TCP holds it back) and read again once `btcore_sansio_transmit` has
/// taken bytes for it (its socket was writable). A peer that never reads is closed by
/// the idle timeout. A host that ignores it stays within the caps: a connection whose
/// queue would pass them is closed instead. True for a connection the library does not
/// know.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `out` is NULL or valid for writing one `bool`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_wants_recv(
    h: *const btcore_sansio,
    conn: u32,
    out: *mut bool,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let s = unsafe { handle(h) }?;
        let out = non_null(out)?;
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(s.session.wants_recv(ConnId(conn))) };
        Ok(())
    })
}

/// The most milliseconds a host that batches reads (`btcore_sansio_recv_batch`) may
/// leave such a connection unread.
pub const BTCORE_RECV_BATCH_MAX_WAIT_MS: u32 = 20;
const _: () =
    assert!(BTCORE_RECV_BATCH_MAX_WAIT_MS as u64 == btcore_core::session::RECV_BATCH_MAX_WAIT_MS);

/// Writes to `*out` how many bytes the host may let gather on `conn` at `now_ms`
/// before it reads it (0: read whatever arrives, a low-water mark of 1): half of what
/// the peer owes on our requests and no more than it sends in
/// `BTCORE_RECV_BATCH_MAX_WAIT_MS` at its rate, 64, 128 or 256 KiB; 0 while we upload
/// to the peer, on a slow link, with little owed, and for a connection the library
/// does not know. A TCP host sets it as the socket's `SO_RCVLOWAT` after reading the
/// socket to its end, so a download wakes it once per batch instead of once per
/// segment. A host that does must also read the connection at least every
/// `BTCORE_RECV_BATCH_MAX_WAIT_MS`: a choke or a reject is a few bytes, which never
/// make the batch.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `out` is NULL or valid for writing one `size_t`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_recv_batch(
    h: *const btcore_sansio,
    conn: u32,
    now_ms: u64,
    out: *mut usize,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let s = unsafe { handle(h) }?;
        let out = non_null(out)?;
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(s.session.recv_batch(now(now_ms), ConnId(conn))) };
        Ok(())
    })
}

/// Copies bytes to send on `conn` into `buf` (room for `cap`, at least 1) and writes
/// how many to `*out_len`; 0 means nothing more to send now. The bytes are the
/// application's to send in order, as they are (encrypted already when the connection
/// is): they are not given again. While an encryption handshake runs, only its bytes
/// come out.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `buf` is valid for writes of `cap` `u8`s (it may be NULL when `cap` is 0).
/// - `out_len` is NULL or valid for writing one `usize`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_transmit(
    h: *mut btcore_sansio,
    conn: u32,
    now_ms: u64,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        s.now = now(now_ms);
        let out_len = non_null(out_len)?;
        // SAFETY: `buf` is valid for writes of `cap` elements or `cap` is 0, as this
        // function's contract requires.
        let dst = unsafe { out_slice(buf, cap) }?;
        if dst.is_empty() {
            return Err(BTCORE_BUFFER_TOO_SMALL);
        }
        let n = s.link_transmit(now(now_ms), ConnId(conn), dst);
        s.pump_events();
        // SAFETY: `out_len` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out_len.write(n) };
        Ok(())
    })
}

/// Moves up to `cap` (at least 1) pending actions into `buf`, in order, and writes how
/// many to `*out_len` (0: nothing to do). Actions not taken stay queued.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `buf` is valid for writes of `cap` `btcore_action`s (it may be NULL when `cap` is 0).
/// - `out_len` is NULL or valid for writing one `usize`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_poll_actions(
    h: *mut btcore_sansio,
    buf: *mut btcore_action,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        let out_len = non_null(out_len)?;
        // SAFETY: `buf` is valid for writes of `cap` elements or `cap` is 0, as this
        // function's contract requires.
        let dst = unsafe { out_uninit(buf, cap) }?;
        if dst.is_empty() {
            return Err(BTCORE_BUFFER_TOO_SMALL);
        }
        // The URLs of the last call's `ANNOUNCE` actions are released now.
        s.announce_urls.clear();
        let mut n = 0;
        while n < dst.len() {
            if let Some(a) = s.extra.pop_front() {
                dst[n].write(a);
                n += 1;
                continue;
            }
            let Some(a) = s.session.poll_action() else {
                // Every action of a removal is out: its info-hash is no longer needed.
                s.removed.clear();
                break;
            };
            if let Some(a) = s.convert(a) {
                dst[n].write(a);
                n += 1;
            }
        }
        s.pump_events();
        // SAFETY: `out_len` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out_len.write(n) };
        Ok(())
    })
}

/// Copies the block data of `WRITE` action `action_id` into `buf` (room for `cap`,
/// at least the action's `length`) and writes the length to `*out_len`; the library's
/// copy is released. Returns `BTCORE_WRONG_STATE` when already taken and
/// `BTCORE_BUFFER_TOO_SMALL` (with the length needed in `*out_len`) when `cap` is too
/// small. Answer with `btcore_sansio_write_done` once written.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `buf` is valid for writes of `cap` `u8`s (it may be NULL when `cap` is 0).
/// - `out_len` is NULL or valid for writing one `usize`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_take_write_data(
    h: *mut btcore_sansio,
    action_id: u64,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        let out_len_p = non_null(out_len)?;
        let Some(Pending::Write { data, .. }) = s.pending.get_mut(&action_id) else {
            return Err(BTCORE_NOT_FOUND);
        };
        let Some(d) = data.as_ref() else {
            return Err(BTCORE_WRONG_STATE);
        };
        // SAFETY: `buf` is valid for writes of `cap` bytes or `cap` is 0, and `out_len` is
        // NULL or valid for one write, as this function's contract requires.
        unsafe { copy_out(d, buf, cap, out_len_p) }?;
        *data = None;
        Ok(())
    })
}

fn disk_status(status: u32) -> Result<Result<(), DiskError>, btcore_result> {
    match status {
        BTCORE_DISK_OK => Ok(Ok(())),
        BTCORE_DISK_NO_SPACE => Ok(Err(DiskError::NoSpace)),
        BTCORE_DISK_IO_ERROR => Ok(Err(DiskError::Io)),
        _ => Err(BTCORE_INVALID_PARAMETER),
    }
}

/// The `WRITE` action `action_id` is done: `status` is `BTCORE_DISK_OK`,
/// `BTCORE_DISK_NO_SPACE` or `BTCORE_DISK_IO_ERROR` (the torrent stops). Data not
/// taken is released.
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
/// during the call. A freed handle, one of another type or any other pointer is a checked
/// error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
/// reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_write_done(
    h: *mut btcore_sansio,
    action_id: u64,
    status: u32,
    now_ms: u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        s.now = now(now_ms);
        let result = disk_status(status)?;
        let Some(Pending::Write { .. }) = s.pending.get(&action_id) else {
            return Err(BTCORE_NOT_FOUND);
        };
        let Some(Pending::Write { torrent, block, .. }) = s.pending.remove(&action_id) else {
            return Err(BTCORE_NOT_FOUND);
        };
        s.session
            .handle_write_done(now(now_ms), torrent, block, result);
        s.pump_events();
        Ok(())
    })
}

/// The `READ` action `action_id` is done: with `BTCORE_DISK_OK`, `data` holds exactly
/// the action's `length` bytes (copied); otherwise `data` may be NULL.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `data` is valid for reads of `len` bytes (it may be NULL when `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_read_done(
    h: *mut btcore_sansio,
    action_id: u64,
    data: *const u8,
    len: usize,
    status: u32,
    now_ms: u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        s.now = now(now_ms);
        let result = disk_status(status)?;
        let Some(Pending::Read { block, .. }) = s.pending.get(&action_id) else {
            return Err(BTCORE_NOT_FOUND);
        };
        // SAFETY: `data` is valid for reads of `len` bytes or `len` is 0, as this
        // function's contract requires.
        let data = unsafe { bytes(data, len) }?;
        if result.is_ok() && data.len() != block.len as usize {
            return Err(BTCORE_INVALID_PARAMETER);
        }
        let Some(Pending::Read {
            torrent,
            conn,
            block,
        }) = s.pending.remove(&action_id)
        else {
            return Err(BTCORE_NOT_FOUND);
        };
        s.session
            .handle_read_done(now(now_ms), torrent, conn, block, result.map(|()| data));
        s.pump_events();
        Ok(())
    })
}

/// Smallest block whose bytes the application may hold (`btcore_sansio_read_held`):
/// tracking a held payload costs more than copying a smaller one.
pub const BTCORE_HOLD_MIN: u32 = 4096;
// The core's (a literal above, for the header).
const _: () = assert!(BTCORE_HOLD_MIN == btcore_core::session::HOLD_MIN);

/// The `READ` action `action_id` is done and the application keeps the bytes it read
/// instead of copying them in (`btcore_sansio_read_done`): the library queues the
/// piece message's header with the payload's place, named `token` (any value the
/// application chooses), and `btcore_sansio_transmit_held` says when to send those
/// bytes. Writes to `*out_queued` whether the place was queued; if not (the connection
/// is gone or closing, or we choke the peer now), free the bytes at once. Counted in
/// the connection's send buffer like copied bytes until named.
///
/// Who owns a queued payload's bytes: the application, always. Keep them while the
/// library holds the place, and once `btcore_sansio_transmit_held` names `token`,
/// until you have written them. Free every payload of a connection, named or not, when
/// it ends: a `CLOSE` action (also what removing or pausing its torrent gives), your
/// own `btcore_sansio_disconnected` or `btcore_sansio_connect_failed`, or
/// `btcore_sansio_free`. The library does not list the tokens it drops, so keep a
/// table per connection; it names them in the order they were queued on the
/// connection, so a queue will do.
///
/// Only for a plain connection (no encryption, or an encryption handshake that chose
/// plain text) and a block of at least `BTCORE_HOLD_MIN` bytes; otherwise
/// `BTCORE_WRONG_STATE` and the action stays pending: complete it with
/// `btcore_sansio_read_done`. A host that holds payloads reads what to send with
/// `btcore_sansio_transmit_held` (`btcore_sansio_transmit` stops before a held payload).
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `out_queued` is NULL or valid for writing one `bool`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_read_held(
    h: *mut btcore_sansio,
    action_id: u64,
    token: u64,
    now_ms: u64,
    out_queued: *mut bool,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        s.now = now(now_ms);
        let out_queued = non_null(out_queued)?;
        let Some(&Pending::Read { conn, block, .. }) = s.pending.get(&action_id) else {
            return Err(BTCORE_NOT_FOUND);
        };
        if block.len < BTCORE_HOLD_MIN || !s.link_plain(conn) {
            return Err(BTCORE_WRONG_STATE);
        }
        let Some(Pending::Read {
            torrent,
            conn,
            block,
        }) = s.pending.remove(&action_id)
        else {
            return Err(BTCORE_NOT_FOUND);
        };
        let queued = s
            .session
            .handle_read_held(now(now_ms), torrent, conn, block, token);
        s.pump_events();
        // SAFETY: `out_queued` is non-NULL (checked above) and valid for one write, as
        // this function's contract requires.
        unsafe { out_queued.write(queued) };
        Ok(())
    })
}

/// What `btcore_sansio_transmit_held` gives: bytes copied into the caller's buffer,
/// then, when `held_len` is not 0, the held payload `held_token` to send right after
/// them, before anything else.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct btcore_transmit {
    /// Bytes copied into the buffer (0: none).
    pub len: usize,
    /// The token of the held payload to send after them (`btcore_sansio_read_held`).
    pub held_token: u64,
    /// Its length in bytes; 0: no held payload is next.
    pub held_len: usize,
}

/// `btcore_sansio_transmit` for an application that holds block payloads
/// (`btcore_sansio_read_held`): copies up to `cap` (at least 1) bytes to send on `conn`
/// into `buf`, and when a held payload comes next, names it in `*out` (`held_token`,
/// `held_len`): send the copied bytes, then that payload's bytes, in order, and call
/// again only once they are written. A named payload leaves the connection's send
/// buffer: the application owns its sending from then on, and a host that took more
/// before writing what it has would hold more than the send cap. Nothing to send:
/// `len` and `held_len` are 0. On an error `*out` is left as it was.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `buf` is valid for writes of `cap` `u8`s (it may be NULL when `cap` is 0).
/// - `out` is NULL or valid for writing one `btcore_transmit`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_transmit_held(
    h: *mut btcore_sansio,
    conn: u32,
    now_ms: u64,
    buf: *mut u8,
    cap: usize,
    out: *mut btcore_transmit,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        s.now = now(now_ms);
        let out = non_null(out)?;
        // SAFETY: `buf` is valid for writes of `cap` elements or `cap` is 0, as this
        // function's contract requires.
        let dst = unsafe { out_slice(buf, cap) }?;
        if dst.is_empty() {
            return Err(BTCORE_BUFFER_TOO_SMALL);
        }
        let (len, held) = s.link_send(now(now_ms), ConnId(conn), dst);
        s.pump_events();
        let (held_token, held_len) = held.map_or((0, 0), |(t, l)| (t, l as usize));
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe {
            out.write(btcore_transmit {
                len,
                held_token,
                held_len,
            });
        }
        Ok(())
    })
}

/// The `VERIFY` action `action_id` is done: `ok` says whether the piece's SHA-1
/// matched. Without block digests, the peers that sent a failed piece are only put on
/// parole (see `btcore_sansio_verified_blocks`).
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
/// during the call. A freed handle, one of another type or any other pointer is a checked
/// error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
/// reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_verified(
    h: *mut btcore_sansio,
    action_id: u64,
    ok: bool,
    now_ms: u64,
) -> btcore_result {
    // SAFETY: `h` as this function's contract requires; no digests (NULL, 0).
    unsafe { btcore_sansio_verified_blocks(h, action_id, ok, std::ptr::null(), 0, now_ms) }
}

/// The `VERIFY` action `action_id` is done: `ok` says whether the piece's SHA-1
/// matched, and `digests` holds the SHA-1 of each block of the piece as read (16 KiB
/// blocks, the last one shorter; 20 bytes each, in order): `digests_len` is 20 times
/// the number of blocks, or 0 (`digests` may then be NULL). Give them when the piece
/// failed, and when it matched if the action's `block_digests` is set: they tell which
/// peer sent the bad data, which is then banned by address. Any other length is
/// `BTCORE_INVALID_PARAMETER` and the action stays pending.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `digests` is valid for reads of `digests_len` bytes (it may be NULL when `digests_len`
///   is 0).
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_verified_blocks(
    h: *mut btcore_sansio,
    action_id: u64,
    ok: bool,
    digests: *const u8,
    digests_len: usize,
    now_ms: u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        s.now = now(now_ms);
        let Some(Pending::Verify { blocks, .. }) = s.pending.get(&action_id) else {
            return Err(BTCORE_NOT_FOUND);
        };
        if digests_len != 0 && digests_len != *blocks as usize * 20 {
            return Err(BTCORE_INVALID_PARAMETER);
        }
        // SAFETY: the caller passes `digests_len` readable bytes at `digests` (or 0).
        let bytes = unsafe { bytes(digests, digests_len) }?;
        let digests: Vec<[u8; 20]> = bytes
            .chunks_exact(20)
            .map(|c| {
                let mut d = [0u8; 20];
                d.copy_from_slice(c);
                d
            })
            .collect();
        let Some(Pending::Verify { torrent, piece, .. }) = s.pending.remove(&action_id) else {
            return Err(BTCORE_NOT_FOUND);
        };
        s.session
            .handle_verified_blocks(now(now_ms), torrent, piece, ok, &digests);
        s.pump_events();
        Ok(())
    })
}

/// Writes when `btcore_sansio_handle_timeout` is next due (in the `now_ms` time base)
/// to `*out_ms`: `UINT64_MAX` when nothing is scheduled.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `out_ms` is NULL or valid for writing one `u64`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_next_timeout(
    h: *const btcore_sansio,
    out_ms: *mut u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let s = unsafe { handle(h) }?;
        let out_ms = non_null(out_ms)?;
        let t = match (s.session.poll_timeout(), s.link_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let t = t.map_or(u64::MAX, |t| t.as_millis());
        // SAFETY: `out_ms` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out_ms.write(t) };
        Ok(())
    })
}

/// Runs the timers (keep-alives, timeouts, choking, re-announces, dialing). Call it
/// when `btcore_sansio_next_timeout` is due; calling it early is harmless.
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
/// during the call. A freed handle, one of another type or any other pointer is a checked
/// error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
/// reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_handle_timeout(
    h: *mut btcore_sansio,
    now_ms: u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        s.now = now(now_ms);
        s.link_handle_timeout(now(now_ms));
        s.session.handle_timeout(now(now_ms));
        s.pump_events();
        Ok(())
    })
}

/// Moves up to `cap` (at least 1) queued events into `buf` and writes how many to
/// `*out_len`, as `btcore_session_events`.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `buf` is valid for writes of `cap` `btcore_event`s (it may be NULL when `cap` is 0).
/// - `out_len` is NULL or valid for writing one `usize`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_events(
    h: *mut btcore_sansio,
    buf: *mut btcore_event,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        let out_len = non_null(out_len)?;
        // SAFETY: `buf` is valid for writes of `cap` elements or `cap` is 0, as this
        // function's contract requires.
        let dst = unsafe { out_uninit(buf, cap) }?;
        if dst.is_empty() {
            return Err(BTCORE_BUFFER_TOO_SMALL);
        }
        let n = s.events.drain_into(dst);
        // SAFETY: `out_len` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out_len.write(n) };
        Ok(())
    })
}

/// Fills `*out` with the status of torrent `id`.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `out` is NULL or valid for writing one `btcore_torrent_status`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_torrent_status(
    h: *const btcore_sansio,
    id: u32,
    now_ms: u64,
    out: *mut btcore_torrent_status,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let s = unsafe { handle(h) }?;
        let out = non_null(out)?;
        let st = s
            .session
            .torrent_status(TorrentId(id), now(now_ms))
            .ok_or(BTCORE_NOT_FOUND)?;
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(torrent_status(id, &st, None)) };
        Ok(())
    })
}

/// Writes the v2 info-hash of torrent `id` to `out` (32 bytes) and whether it has
/// one to `*has_v2`, as `btcore_session_torrent_info_hash_v2`.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `out` is NULL or valid for writing 32 bytes.
/// - `has_v2` is NULL or valid for writing one `bool`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_torrent_info_hash_v2(
    h: *const btcore_sansio,
    id: u32,
    now_ms: u64,
    out: *mut u8,
    has_v2: *mut bool,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let s = unsafe { handle(h) }?;
        let out = non_null(out)?;
        let has_v2 = non_null(has_v2)?;
        let st = s
            .session
            .torrent_status(TorrentId(id), now(now_ms))
            .ok_or(BTCORE_NOT_FOUND)?;
        // SAFETY: both are non-NULL (checked above) and valid for these writes, as this
        // function's contract requires.
        unsafe { crate::torrent::write_info_hash_v2(st.info_hash_v2, out, has_v2) };
        Ok(())
    })
}

/// Fills `buf` with the peers of torrent `id`, as `btcore_session_peers`.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `buf` is valid for writes of `cap` `btcore_peer_status`s (it may be NULL when `cap` is
///   0).
/// - `out_len` is NULL or valid for writing one `usize`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_peers(
    h: *const btcore_sansio,
    id: u32,
    buf: *mut btcore_peer_status,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let s = unsafe { handle(h) }?;
        let out_len = non_null(out_len)?;
        // SAFETY: `buf` is valid for writes of `cap` elements or `cap` is 0, as this
        // function's contract requires.
        let dst = unsafe { out_slice(buf, cap) }?;
        if !s.has_torrent(id) {
            return Err(BTCORE_NOT_FOUND);
        }
        let peers = s.session.peers(TorrentId(id));
        // SAFETY: `out_len` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out_len.write(peers.len()) };
        if dst.len() < peers.len() {
            return Err(BTCORE_BUFFER_TOO_SMALL);
        }
        for (d, p) in dst.iter_mut().zip(&peers) {
            *d = peer_status(p);
        }
        Ok(())
    })
}

/// Copies the verified-pieces bitfield of torrent `id` (BitTorrent order: piece 0 is
/// the high bit of byte 0) into `buf` and its length to `*out_len`: the resume data to
/// give back to `btcore_sansio_add_torrent` later. `BTCORE_NOT_FOUND` until a magnet
/// link's metadata arrives; `BTCORE_BUFFER_TOO_SMALL` with the length needed.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `buf` is valid for writes of `cap` `u8`s (it may be NULL when `cap` is 0).
/// - `out_len` is NULL or valid for writing one `usize`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_have(
    h: *const btcore_sansio,
    id: u32,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let s = unsafe { handle(h) }?;
        let have = s.session.have(TorrentId(id)).ok_or(BTCORE_NOT_FOUND)?;
        // SAFETY: `buf` is valid for writes of `cap` bytes or `cap` is 0, and `out_len` is
        // NULL or valid for one write, as this function's contract requires.
        unsafe { copy_out(have.as_bytes(), buf, cap, out_len) }
    })
}

/// Copies the raw info dictionary of torrent `id` (what a magnet link fetched; wrap it
/// as `d4:info<...>e` to get a `.torrent`) into `buf` and its length to `*out_len`.
/// `BTCORE_NOT_FOUND` until known; `BTCORE_BUFFER_TOO_SMALL` with the length needed.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `buf` is valid for writes of `cap` `u8`s (it may be NULL when `cap` is 0).
/// - `out_len` is NULL or valid for writing one `usize`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_metadata(
    h: *const btcore_sansio,
    id: u32,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let s = unsafe { handle(h) }?;
        let info = s
            .session
            .info_bytes(TorrentId(id))
            .ok_or(BTCORE_NOT_FOUND)?;
        // SAFETY: `buf` is valid for writes of `cap` bytes or `cap` is 0, and `out_len` is
        // NULL or valid for one write, as this function's contract requires.
        unsafe { copy_out(info, buf, cap, out_len) }
    })
}

// ---- error detail (see `crate::error`) ----

/// The live handle behind `p` (without locking its state).
///
/// # Safety
/// As [`handle`].
unsafe fn sansio_box<'a>(p: *const btcore_sansio) -> Result<&'a SansioBox, btcore_result> {
    if p.is_null() {
        return Err(BTCORE_NULL_PARAMETER);
    }
    if !is_live_handle(p.cast(), HandleKind::Sansio) {
        return Err(BTCORE_WRONG_HANDLE);
    }
    // SAFETY: a live sans-IO handle is a `SansioBox` made by `Box::into_raw` in
    // `btcore_sansio_new` and not freed yet (the caller makes no call that races with
    // its free, as the API requires).
    Ok(unsafe { &*(p as *const SansioBox) })
}

/// The last-error slot of a live sans-IO handle.
///
/// # Safety
/// As [`handle`].
pub(crate) unsafe fn last_error_slot(
    p: *const btcore_sansio,
) -> Result<crate::error::Slot, btcore_result> {
    // SAFETY: as this function's contract requires.
    Ok(unsafe { sansio_box(p) }?.last_error.clone())
}

/// The detail of a drained event of a live sans-IO handle.
///
/// # Safety
/// As [`handle`].
pub(crate) unsafe fn event_detail(
    p: *const btcore_sansio,
    id: u64,
) -> Result<Failure, btcore_result> {
    // SAFETY: as this function's contract requires.
    let b = unsafe { sansio_box(p) }?;
    let s = b.inner.lock().map_err(|_| BTCORE_PANIC)?;
    s.events.detail(id).cloned().ok_or(BTCORE_NOT_FOUND)
}

/// `btcore_sansio_announced` with the tracker's words: with `BTCORE_ANNOUNCED_FAILED`,
/// why (its `failure reason`, or the transport error), reported as a
/// `BTCORE_EVENT_TRACKER_ERROR` whose detail has the tracker's URL and this message;
/// with `BTCORE_ANNOUNCED_OK`, its `warning message` (empty: none), reported as a
/// `BTCORE_EVENT_TRACKER_WARNING`. `message` holds `message_len` bytes (usually UTF-8;
/// not NUL-terminated; NULL when `message_len` is 0). Results as
/// `btcore_sansio_announced`.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles
///   before reading anything behind it.
/// - `message` is valid for reads of `message_len` bytes (it may be NULL when
///   `message_len` is 0).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn btcore_sansio_announced_message(
    h: *mut btcore_sansio,
    id: u32,
    action_id: u64,
    status: u32,
    interval_secs: u32,
    min_interval_secs: u32,
    message: *const u8,
    message_len: usize,
    now_ms: u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        // SAFETY: `message` is valid for reads of `message_len` bytes or it is 0, as this
        // function's contract requires.
        let message = unsafe { bytes(message, message_len) }?;
        let outcome = match status {
            BTCORE_ANNOUNCED_OK => AnnounceOutcome::Answered {
                interval: interval_secs,
                min_interval: (min_interval_secs != 0).then_some(min_interval_secs),
            },
            BTCORE_ANNOUNCED_FAILED => AnnounceOutcome::Failed,
            BTCORE_ANNOUNCED_NO_TRACKERS => AnnounceOutcome::NoTrackers,
            _ => return Err(BTCORE_INVALID_PARAMETER),
        };
        let known = s.session.handle_announced_message(
            now(now_ms),
            TorrentId(id),
            action_id,
            outcome,
            message,
        );
        s.pump_events();
        known.then_some(()).ok_or(BTCORE_NOT_FOUND)
    })
}
