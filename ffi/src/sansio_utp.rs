//! uTP (BEP 29, LEDBAT congestion control) for C: the core's [`UtpSocket`] behind a
//! handle, for firmware with its own UDP stack. The host owns the UDP socket and the
//! clock; the library runs every connection (ids, sequence numbers, acknowledgements,
//! retransmissions, the congestion window, the FIN handshake).
//!
//! ```text
//! datagram in        -> btcore_utp_recv(h, &from, data, len, now, &in)
//! timer due          -> btcore_utp_handle_timeout(h, now)   (btcore_utp_next_timeout)
//! commands           -> btcore_utp_connect / _write / _read / _close / _remove
//! then, until empty  -> btcore_utp_poll_transmit(h, now, buf, cap, &len, &to): send it
//! then               -> btcore_utp_next_timeout(h, &ms)
//! ```
//!
//! Connections are named by a `u64` id (never 0, never reused by a handle): the core's
//! handles carry a generation, this layer maps them to plain numbers C can keep. The
//! map holds one entry per connection the socket holds (at most `max_connections`).
use crate::error::Failure;
use crate::*;
use btcore_core::time::{Duration, Instant};
use btcore_core::utp::packet::PacketError;
use btcore_core::utp::{
    self, CloseReason, ConnHandle, ConnectError, DatagramKind, Event, Incoming, State, UtpConfig,
    UtpSocket,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// An opaque uTP endpoint: every uTP connection over one UDP socket of the host. Made
/// by `btcore_utp_new`, freed by `btcore_utp_free`. Every call may come from any thread
/// (calls on one handle are serialized on its lock; none does I/O); never free it while
/// another call on it runs.
#[derive(Debug)]
pub struct btcore_utp {
    _private: [u8; 0],
}

/// Settings of a uTP endpoint. Fill it with `btcore_utp_settings_default()` first; a
/// bound left at 0 takes the profile's value (desktop, or the low-memory one).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct btcore_utp_settings {
    /// Seed for connection ids and initial sequence numbers: give a fresh random value
    /// per run (0 is replaced by a fixed constant: fine for tests only).
    pub random_seed: u64,
    /// Bytes written and not yet acknowledged, per connection: the backpressure of
    /// `btcore_utp_write` (256 KiB; 64 KiB low-memory). 4 KiB to 64 MiB.
    pub send_buffer: u32,
    /// Bytes received and not yet read, per connection: the window advertised to the
    /// peer (256 KiB; 64 KiB low-memory). 4 KiB to 64 MiB.
    pub recv_buffer: u32,
    /// Connections held at once, open or closed and not yet removed (200; 32
    /// low-memory). 1 to 65,536.
    pub max_connections: u32,
    /// The largest datagram sent, uTP header included (1,404). 150 to 65,507; give
    /// `btcore_utp_poll_transmit` a buffer of at least this.
    pub max_packet_size: u16,
    /// Out-of-order packets held per connection (128; 32 low-memory); rounded up to a
    /// power of two. 1 to 4,096.
    pub reorder_slots: u16,
    /// Packets in flight per connection (512; 128 low-memory). 1 to 16,384.
    pub max_packets_in_flight: u16,
    /// RESETs queued for unknown or refused peers (64; 16 low-memory); more are dropped.
    pub max_pending_resets: u16,
    /// 1: the low-memory profile's values for the bounds left at 0.
    pub low_memory: u8,
    /// An incoming connection not confirmed this many milliseconds after its SYN (the
    /// peer never acknowledged our answer: a SYN from a forged address) is dropped
    /// silently (5,000). 100 to 600,000.
    pub confirm_timeout_ms: u32,
    /// A connection given to `btcore_utp_release` may take this many milliseconds to
    /// close gracefully before it is dropped with a RESET (10,000). 0 to 600,000; 0
    /// keeps the default.
    pub linger_ms: u32,
}

/// `btcore_utp_classify`: neither a DHT message nor a uTP packet.
pub const BTCORE_DATAGRAM_OTHER: u32 = 0;
/// `btcore_utp_classify`: a bencoded message (starts with `d`): the DHT's.
pub const BTCORE_DATAGRAM_DHT: u32 = 1;
/// `btcore_utp_classify`: a uTP packet, by its first byte and length.
pub const BTCORE_DATAGRAM_UTP: u32 = 2;

/// `btcore_utp_incoming.kind`: not uTP (a DHT message or other): give it to the DHT or
/// drop it.
pub const BTCORE_UTP_NOT_UTP: u32 = 0;
/// `btcore_utp_incoming.kind`: looked like uTP but did not decode (`invalid` says
/// why); dropped.
pub const BTCORE_UTP_INVALID: u32 = 1;
/// `btcore_utp_incoming.kind`: handed to connection `conn`.
pub const BTCORE_UTP_DELIVERED: u32 = 2;
/// `btcore_utp_incoming.kind`: a SYN opened the new incoming connection `conn`;
/// `evicted` (when not 0) was dropped to make room. It is a peer only once
/// `btcore_utp_poll_event` reports it `BTCORE_UTP_EVENT_ACCEPTED` (confirmed); one never
/// confirmed within `confirm_timeout_ms` is dropped.
pub const BTCORE_UTP_ACCEPTED: u32 = 3;
/// `btcore_utp_incoming.kind`: a SYN beyond `max_connections` with nothing to evict: a
/// RESET answers it.
pub const BTCORE_UTP_REFUSED: u32 = 4;
/// `btcore_utp_incoming.kind`: no connection has this id from this address: a RESET
/// answers it (unless it was one).
pub const BTCORE_UTP_UNKNOWN: u32 = 5;

/// `btcore_utp_incoming.invalid`: shorter than the 20-byte header.
pub const BTCORE_UTP_PACKET_TOO_SHORT: u32 = 1;
/// `btcore_utp_incoming.invalid`: a version other than 1.
pub const BTCORE_UTP_PACKET_BAD_VERSION: u32 = 2;
/// `btcore_utp_incoming.invalid`: a packet type above 4.
pub const BTCORE_UTP_PACKET_BAD_TYPE: u32 = 3;
/// `btcore_utp_incoming.invalid`: an extension runs past the end of the datagram.
pub const BTCORE_UTP_PACKET_TRUNCATED_EXTENSION: u32 = 4;
/// `btcore_utp_incoming.invalid`: a selective ACK of a bad length.
pub const BTCORE_UTP_PACKET_BAD_SACK: u32 = 5;
/// `btcore_utp_incoming.invalid`: more than one selective ACK.
pub const BTCORE_UTP_PACKET_DUPLICATE_SACK: u32 = 6;
/// `btcore_utp_incoming.invalid`: too many extensions.
pub const BTCORE_UTP_PACKET_TOO_MANY_EXTENSIONS: u32 = 7;
/// `btcore_utp_incoming.invalid`: another decoding failure.
pub const BTCORE_UTP_PACKET_OTHER: u32 = 8;

/// What became of a datagram given to `btcore_utp_recv`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct btcore_utp_incoming {
    /// `BTCORE_UTP_NOT_UTP`, `_INVALID`, `_DELIVERED`, `_ACCEPTED`, `_REFUSED` or
    /// `_UNKNOWN`.
    pub kind: u32,
    /// `INVALID`: why (`BTCORE_UTP_PACKET_*`); 0 otherwise.
    pub invalid: u32,
    /// `DELIVERED`, `ACCEPTED`: the connection; 0 otherwise.
    pub conn: u64,
    /// `ACCEPTED`: a connection dropped to make room (a closed one with nothing left to
    /// read, or the oldest incoming one never confirmed past its SYN); its id is gone
    /// from now on. 0: none.
    pub evicted: u64,
}

/// `btcore_utp_poll_event`: nothing to report.
pub const BTCORE_UTP_EVENT_NONE: u32 = 0;
/// `btcore_utp_poll_event`: incoming connection `conn` is confirmed (the peer
/// acknowledged our answer to its SYN, whose random sequence number a sender at a forged
/// address never saw): a peer now; what it sent is readable.
pub const BTCORE_UTP_EVENT_ACCEPTED: u32 = 1;
/// `btcore_utp_poll_event`: a packet or a timer changed `conn` (it may have become
/// readable, writable, connected or closed: read its `btcore_utp_status`). Once per
/// connection until polled.
pub const BTCORE_UTP_EVENT_CHANGED: u32 = 2;
/// `btcore_utp_poll_event`: `conn` was dropped to make room for another connection (it
/// was closed with nothing left to read); its id is gone.
pub const BTCORE_UTP_EVENT_DROPPED: u32 = 3;

/// `btcore_utp_conn_status.state`: our SYN is out, no answer yet.
pub const BTCORE_UTP_STATE_CONNECTING: u32 = 1;
/// `btcore_utp_conn_status.state`: open both ways.
pub const BTCORE_UTP_STATE_CONNECTED: u32 = 2;
/// `btcore_utp_conn_status.state`: `btcore_utp_close` was called: the queued bytes,
/// then a FIN, go out; reading goes on.
pub const BTCORE_UTP_STATE_CLOSING: u32 = 3;
/// `btcore_utp_conn_status.state`: over (`close_reason` says why); bytes received before
/// can still be read. Remove it with `btcore_utp_remove`.
pub const BTCORE_UTP_STATE_CLOSED: u32 = 4;

/// `btcore_utp_conn_status.close_reason`: not closed.
pub const BTCORE_UTP_CLOSE_NONE: u32 = 0;
/// `btcore_utp_conn_status.close_reason`: both FINs exchanged and acknowledged.
pub const BTCORE_UTP_CLOSE_NORMAL: u32 = 1;
/// `btcore_utp_conn_status.close_reason`: the peer sent a RESET (or refused our SYN).
pub const BTCORE_UTP_CLOSE_RESET: u32 = 2;
/// `btcore_utp_conn_status.close_reason`: a packet was resent too often unanswered
/// (a dial nobody answers ends so).
pub const BTCORE_UTP_CLOSE_TIMED_OUT: u32 = 3;
/// `btcore_utp_conn_status.close_reason`: nothing heard from the peer for 5 minutes.
pub const BTCORE_UTP_CLOSE_IDLE: u32 = 4;
/// `btcore_utp_conn_status.close_reason`: aborted on our side (a RESET went out).
pub const BTCORE_UTP_CLOSE_ABORTED: u32 = 5;
/// `btcore_utp_conn_status.close_reason`: dropped to make room for a new connection.
pub const BTCORE_UTP_CLOSE_EVICTED: u32 = 6;

/// One connection, from `btcore_utp_status`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct btcore_utp_conn_status {
    /// `BTCORE_UTP_STATE_*`.
    pub state: u32,
    /// `BTCORE_UTP_CLOSE_*` (`CLOSE_NONE` unless `state` is `CLOSED`).
    pub close_reason: u32,
    /// Bytes `btcore_utp_read` would give now.
    pub readable: u64,
    /// Bytes `btcore_utp_write` would take now.
    pub writable: u64,
    /// Bytes written and not yet acknowledged by the peer.
    pub unacked: u64,
    /// The peer's address.
    pub addr: btcore_addr,
    /// 1: the peer ended its stream (its FIN) and every byte before it was read.
    pub eof: u8,
    /// 1: we dialed it (`btcore_utp_connect`); 0: it was accepted.
    pub outgoing: u8,
    /// Zero (room for later use).
    pub reserved: u16,
    /// The smoothed round-trip time in milliseconds (0 before a sample).
    pub rtt_ms: u32,
}

/// cbindgen:ignore
#[derive(Debug)]
struct Endpoint {
    socket: UtpSocket<SocketAddr>,
    /// C id -> the core's handle, and back, with whether we dialed it.
    ids: HashMap<u64, (ConnHandle, bool)>,
    handles: HashMap<ConnHandle, u64>,
    next_id: u64,
}

impl Endpoint {
    /// The C id of `h`, given one now when it has none.
    fn id_of(&mut self, h: ConnHandle, outgoing: bool) -> u64 {
        if let Some(&id) = self.handles.get(&h) {
            return id;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.ids.insert(id, (h, outgoing));
        self.handles.insert(h, id);
        id
    }

    /// Forgets the C id of a handle the socket dropped.
    fn forget(&mut self, h: ConnHandle) -> u64 {
        match self.handles.remove(&h) {
            Some(id) => {
                self.ids.remove(&id);
                id
            }
            None => 0,
        }
    }

    /// Drops the ids of connections the socket evicted without saying (to make room
    /// for a dial): the map never outgrows the socket.
    fn prune(&mut self) {
        if self.ids.len() > self.socket.len() {
            let socket = &self.socket;
            self.ids.retain(|_, (h, _)| socket.conn(*h).is_some());
            let ids = &self.ids;
            self.handles.retain(|_, id| ids.contains_key(id));
        }
    }

    fn handle(&self, id: u64) -> Result<(ConnHandle, bool), Failure> {
        self.ids
            .get(&id)
            .copied()
            .filter(|(h, _)| self.socket.conn(*h).is_some())
            .ok_or_else(|| Failure::new(BTCORE_NOT_FOUND, format!("no uTP connection {id}")))
    }
}

/// cbindgen:ignore
struct UtpBox {
    inner: Mutex<Endpoint>,
}

/// The locked endpoint behind a handle, once the live-handle set knows it.
///
/// # Safety
/// `p` is NULL, not a live handle (refused without a read), or a live uTP handle that
/// no `btcore_utp_free` frees while the guard is held.
unsafe fn endpoint(
    p: *const btcore_utp,
) -> Result<std::sync::MutexGuard<'static, Endpoint>, btcore_result> {
    if p.is_null() {
        return Err(BTCORE_NULL_PARAMETER);
    }
    if !is_live_handle(p.cast(), HandleKind::Utp) {
        return Err(BTCORE_WRONG_HANDLE);
    }
    // SAFETY: a live uTP handle is a `UtpBox` made by `Box::into_raw` in `btcore_utp_new`
    // and not freed yet (the caller makes no call that races with its free).
    let b = unsafe { &*(p as *const UtpBox) };
    b.inner.lock().map_err(|_| BTCORE_PANIC)
}

fn now(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// Reads an address argument.
///
/// # Safety
/// `a` is NULL or valid for reading one `btcore_addr`.
unsafe fn addr_in(a: *const btcore_addr) -> Result<SocketAddr, Failure> {
    if a.is_null() {
        return Err(BTCORE_NULL_PARAMETER.into());
    }
    // SAFETY: non-NULL (checked above) and valid for one read, as the contract requires.
    let a = unsafe { *a };
    a.to_socket()
        .ok_or_else(|| Failure::new(BTCORE_INVALID_PARAMETER, "not an IPv4 or IPv6 address"))
}

fn default_settings() -> btcore_utp_settings {
    btcore_utp_settings {
        random_seed: 0,
        send_buffer: 0,
        recv_buffer: 0,
        max_connections: 0,
        max_packet_size: 0,
        reorder_slots: 0,
        max_packets_in_flight: 0,
        max_pending_resets: 0,
        low_memory: 0,
        confirm_timeout_ms: 0,
        linger_ms: 0,
    }
}

/// The core's configuration from C settings, every bound checked.
fn config(s: &btcore_utp_settings) -> Result<UtpConfig, Failure> {
    let mut c = if s.low_memory != 0 {
        UtpConfig::low_memory()
    } else {
        UtpConfig::default()
    };
    fn set<T: Copy + PartialOrd + std::fmt::Display + Default>(
        field: &mut T,
        v: T,
        lo: T,
        hi: T,
        name: &str,
    ) -> Result<(), Failure> {
        if v == T::default() {
            return Ok(());
        }
        if v < lo || v > hi {
            return Err(Failure::new(
                BTCORE_INVALID_PARAMETER,
                format!("btcore_utp_settings.{name} is {v}, outside {lo} ..= {hi}"),
            ));
        }
        *field = v;
        Ok(())
    }
    const MIB: u32 = 1024 * 1024;
    set(
        &mut c.send_buffer,
        s.send_buffer,
        4096,
        64 * MIB,
        "send_buffer",
    )?;
    set(
        &mut c.recv_buffer,
        s.recv_buffer,
        4096,
        64 * MIB,
        "recv_buffer",
    )?;
    set(
        &mut c.max_connections,
        s.max_connections,
        1,
        65_536,
        "max_connections",
    )?;
    set(
        &mut c.max_packet_size,
        s.max_packet_size,
        150,
        65_507,
        "max_packet_size",
    )?;
    set(
        &mut c.reorder_slots,
        s.reorder_slots,
        1,
        4096,
        "reorder_slots",
    )?;
    set(
        &mut c.max_packets_in_flight,
        s.max_packets_in_flight,
        1,
        16_384,
        "max_packets_in_flight",
    )?;
    set(
        &mut c.max_pending_resets,
        s.max_pending_resets,
        1,
        u16::MAX,
        "max_pending_resets",
    )?;
    let (mut confirm, mut linger) = (0u32, 0u32);
    set(
        &mut confirm,
        s.confirm_timeout_ms,
        100,
        600_000,
        "confirm_timeout_ms",
    )?;
    set(&mut linger, s.linger_ms, 1, 600_000, "linger_ms")?;
    if confirm != 0 {
        c.confirm_timeout = Duration::from_millis(u64::from(confirm));
    }
    if linger != 0 {
        c.linger = Duration::from_millis(u64::from(linger));
    }
    Ok(c)
}

fn invalid_code(e: PacketError) -> u32 {
    match e {
        PacketError::TooShort => BTCORE_UTP_PACKET_TOO_SHORT,
        PacketError::BadVersion(_) => BTCORE_UTP_PACKET_BAD_VERSION,
        PacketError::BadType(_) => BTCORE_UTP_PACKET_BAD_TYPE,
        PacketError::TruncatedExtension => BTCORE_UTP_PACKET_TRUNCATED_EXTENSION,
        PacketError::BadSackLength(_) => BTCORE_UTP_PACKET_BAD_SACK,
        PacketError::DuplicateSack => BTCORE_UTP_PACKET_DUPLICATE_SACK,
        PacketError::TooManyExtensions => BTCORE_UTP_PACKET_TOO_MANY_EXTENSIONS,
        PacketError::BufferTooSmall => BTCORE_UTP_PACKET_OTHER,
    }
}

/// Fills `out` with the defaults: every bound 0 (the profile's value), the desktop
/// profile, seed 0 (set one). Thread-safe.
///
/// # Safety
///
/// `out` is NULL or valid for writing one `btcore_utp_settings`.
#[no_mangle]
pub unsafe extern "C" fn btcore_utp_settings_default(
    out: *mut btcore_utp_settings,
) -> btcore_result {
    guard(|| {
        let out = non_null(out)?;
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(default_settings()) };
        Ok(())
    })
}

/// Creates a uTP endpoint from `settings` (NULL: the defaults) into `*out`; free it
/// with `btcore_utp_free`. A bound outside its range is `BTCORE_INVALID_PARAMETER`
/// (`btcore_last_error` names it). Thread-safe.
///
/// # Safety
///
/// - `settings` is NULL or valid for reading one `btcore_utp_settings`.
/// - `out` is NULL or valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn btcore_utp_new(
    settings: *const btcore_utp_settings,
    out: *mut *mut btcore_utp,
) -> btcore_result {
    guard_detail(|| {
        let out = non_null(out)?;
        let s = if settings.is_null() {
            default_settings()
        } else {
            // SAFETY: `settings` is non-NULL (checked above) and valid for one read, as
            // this function's contract requires.
            unsafe { *settings }
        };
        let cfg = config(&s)?;
        let seed = if s.random_seed == 0 {
            0x7574_705f_7365_6564
        } else {
            s.random_seed
        };
        let p = Box::into_raw(Box::new(UtpBox {
            inner: Mutex::new(Endpoint {
                socket: UtpSocket::new(cfg, seed),
                ids: HashMap::new(),
                handles: HashMap::new(),
                next_id: 0,
            }),
        })) as *mut btcore_utp;
        register_handle(p.cast_const().cast(), HandleKind::Utp);
        // SAFETY: `out` is non-NULL (checked above) and valid for one write.
        unsafe { out.write(p) };
        Ok(())
    })
}

/// Frees a uTP endpoint and every connection it holds (no packet goes out: the peers
/// time out). NULL, or a handle already freed, is a no-op. No other call on this
/// handle may run meanwhile.
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_utp_new`; a pointer the library did not make, or
/// one already freed, is refused by a look-up in the set of live handles without being
/// read.
#[no_mangle]
pub unsafe extern "C" fn btcore_utp_free(h: *mut btcore_utp) {
    let _ = guard(|| {
        if h.is_null() {
            return Ok(());
        }
        if !unregister_handle(h.cast_const().cast(), HandleKind::Utp) {
            return Err(BTCORE_WRONG_HANDLE);
        }
        // SAFETY: made by `Box::into_raw` in `btcore_utp_new` and live until the line
        // above, which only one free can pass.
        drop(unsafe { Box::from_raw(h as *mut UtpBox) });
        Ok(())
    });
}

/// What a datagram on a UDP port shared by the DHT and uTP is, from its first bytes:
/// writes `BTCORE_DATAGRAM_DHT`, `_UTP` or `_OTHER` to `*out_kind`. Takes no handle;
/// thread-safe.
///
/// # Safety
///
/// - `data` is valid for reads of `len` bytes (it may be NULL when `len` is 0).
/// - `out_kind` is NULL or valid for writing one `u32`.
#[no_mangle]
pub unsafe extern "C" fn btcore_utp_classify(
    data: *const u8,
    len: usize,
    out_kind: *mut u32,
) -> btcore_result {
    guard(|| {
        let out_kind = non_null(out_kind)?;
        // SAFETY: `data` is valid for reads of `len` bytes or `len` is 0.
        let data = unsafe { bytes(data, len) }?;
        let k = match utp::classify(data) {
            DatagramKind::Dht => BTCORE_DATAGRAM_DHT,
            DatagramKind::Utp => BTCORE_DATAGRAM_UTP,
            DatagramKind::Other => BTCORE_DATAGRAM_OTHER,
        };
        // SAFETY: non-NULL (checked above) and valid for one write.
        unsafe { out_kind.write(k) };
        Ok(())
    })
}

/// A datagram of `len` bytes (at most 65,535) from `*from` arrived on the UDP socket;
/// `*out` says what became of it. Garbage is not an error: it comes back as
/// `BTCORE_UTP_NOT_UTP` or `BTCORE_UTP_INVALID`. Then drain `btcore_utp_poll_transmit`.
/// A connection just `ACCEPTED` may be written at once: its answer to the SYN leaves
/// before its data (a dialer takes only that answer as the connection's start).
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_utp_new` that no `btcore_utp_free` frees during
///   the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
/// - `from` is NULL or valid for reading one `btcore_addr`.
/// - `data` is valid for reads of `len` bytes (it may be NULL when `len` is 0).
/// - `out` is NULL or valid for writing one `btcore_utp_incoming`.
#[no_mangle]
pub unsafe extern "C" fn btcore_utp_recv(
    h: *mut btcore_utp,
    from: *const btcore_addr,
    data: *const u8,
    len: usize,
    now_ms: u64,
    out: *mut btcore_utp_incoming,
) -> btcore_result {
    guard_detail(|| {
        // SAFETY: as this function's contract requires.
        let mut e = unsafe { endpoint(h) }?;
        let out = non_null(out)?;
        // SAFETY: `from` is NULL or valid for one read.
        let from = unsafe { addr_in(from) }?;
        if len > usize::from(u16::MAX) {
            return Err(Failure::new(
                BTCORE_INVALID_PARAMETER,
                format!("a datagram of {len} bytes (a UDP datagram holds at most 65535)"),
            ));
        }
        // SAFETY: `data` is valid for reads of `len` bytes or `len` is 0.
        let data = unsafe { bytes(data, len) }?;
        let r = match e.socket.handle_datagram(now(now_ms), from, data) {
            Incoming::NotUtp => btcore_utp_incoming {
                kind: BTCORE_UTP_NOT_UTP,
                ..Default::default()
            },
            Incoming::Invalid(err) => btcore_utp_incoming {
                kind: BTCORE_UTP_INVALID,
                invalid: invalid_code(err),
                ..Default::default()
            },
            // Ids for the connections C knows of (an unconfirmed incoming one has its
            // id from its SYN; a released one has none any more).
            Incoming::Delivered(c) => btcore_utp_incoming {
                kind: BTCORE_UTP_DELIVERED,
                conn: e.handles.get(&c).copied().unwrap_or(0),
                ..Default::default()
            },
            Incoming::Accepted { handle, evicted } => {
                let evicted = evicted.map_or(0, |v| e.forget(v));
                btcore_utp_incoming {
                    kind: BTCORE_UTP_ACCEPTED,
                    conn: e.id_of(handle, false),
                    evicted,
                    ..Default::default()
                }
            }
            Incoming::Refused => btcore_utp_incoming {
                kind: BTCORE_UTP_REFUSED,
                ..Default::default()
            },
            Incoming::Unknown => btcore_utp_incoming {
                kind: BTCORE_UTP_UNKNOWN,
                ..Default::default()
            },
            // A later core may tell more: to C it is a datagram no connection took.
            _ => btcore_utp_incoming {
                kind: BTCORE_UTP_UNKNOWN,
                ..Default::default()
            },
        };
        // SAFETY: non-NULL (checked above) and valid for one write.
        unsafe { out.write(r) };
        Ok(())
    })
}

/// Copies the next datagram to send into `buf`, its length to `*out_len` and its
/// destination to `*out_to`; `*out_len` 0: nothing to send. `cap` must hold
/// `max_packet_size` (1,404 by default; 1,500 always suffices then): a smaller `cap` is
/// `BTCORE_BUFFER_TOO_SMALL` with the size needed in `*out_len`. Call it until
/// `*out_len` is 0 after every other call on the handle.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_utp_new` that no `btcore_utp_free` frees during
///   the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
/// - `buf` is valid for writes of `cap` bytes (it may be NULL when `cap` is 0).
/// - `out_len` and `out_to` are NULL or valid for one write each.
#[no_mangle]
pub unsafe extern "C" fn btcore_utp_poll_transmit(
    h: *mut btcore_utp,
    now_ms: u64,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
    out_to: *mut btcore_addr,
) -> btcore_result {
    guard(|| {
        // SAFETY: as this function's contract requires.
        let mut e = unsafe { endpoint(h) }?;
        let out_len = non_null(out_len)?;
        let out_to = non_null(out_to)?;
        let need = usize::from(e.socket.config().max_packet_size);
        if cap < need {
            // SAFETY: non-NULL (checked above) and valid for one write.
            unsafe { out_len.write(need) };
            return Err(BTCORE_BUFFER_TOO_SMALL);
        }
        // SAFETY: `buf` is valid for writes of `cap` bytes (not 0: checked above).
        let dst = unsafe { out_slice(buf, cap) }?;
        let (to, n) = e
            .socket
            .poll_transmit(now(now_ms), dst)
            .map_or((btcore_addr::default(), 0), |(to, n)| {
                (btcore_addr::from_socket(to), n)
            });
        // SAFETY: both are non-NULL (checked above) and valid for one write.
        unsafe {
            out_len.write(n);
            out_to.write(to);
        }
        Ok(())
    })
}

/// Writes when `btcore_utp_handle_timeout` is next due to `*out_ms` (`UINT64_MAX`:
/// nothing scheduled). Ask again after every other call on the handle.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_utp_new` that no `btcore_utp_free` frees during
///   the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
/// - `out_ms` is NULL or valid for writing one `u64`.
#[no_mangle]
pub unsafe extern "C" fn btcore_utp_next_timeout(
    h: *const btcore_utp,
    out_ms: *mut u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: as this function's contract requires.
        let e = unsafe { endpoint(h) }?;
        let out_ms = non_null(out_ms)?;
        let t = e.socket.poll_timeout().map_or(u64::MAX, |t| t.as_millis());
        // SAFETY: non-NULL (checked above) and valid for one write.
        unsafe { out_ms.write(t) };
        Ok(())
    })
}

/// Runs the connections' timers due at `now_ms` (retransmissions, keep-alives, idle
/// and connect timeouts); early is harmless. Then drain `btcore_utp_poll_transmit`.
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_utp_new` that no `btcore_utp_free` frees during
/// the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
#[no_mangle]
pub unsafe extern "C" fn btcore_utp_handle_timeout(
    h: *mut btcore_utp,
    now_ms: u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: as this function's contract requires.
        let mut e = unsafe { endpoint(h) }?;
        e.socket.handle_timeout(now(now_ms));
        Ok(())
    })
}

/// Opens a connection to `*addr` and writes its id to `*out_conn`; the SYN goes out on
/// the next `btcore_utp_poll_transmit`. Bytes may be written at once (they go out once
/// the peer answers). The dial is answered when `btcore_utp_status` reads
/// `CONNECTED`, or fails as `CLOSED` (`CLOSE_RESET`: refused; `CLOSE_TIMED_OUT`: no
/// answer after the SYN was sent 3 times, about 7 s). `BTCORE_WRONG_STATE` when
/// `max_connections` are held and none is closed with nothing left to read.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_utp_new` that no `btcore_utp_free` frees during
///   the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
/// - `addr` is NULL or valid for reading one `btcore_addr`.
/// - `out_conn` is NULL or valid for writing one `u64`.
#[no_mangle]
pub unsafe extern "C" fn btcore_utp_connect(
    h: *mut btcore_utp,
    addr: *const btcore_addr,
    now_ms: u64,
    out_conn: *mut u64,
) -> btcore_result {
    guard_detail(|| {
        // SAFETY: as this function's contract requires.
        let mut e = unsafe { endpoint(h) }?;
        let out_conn = non_null(out_conn)?;
        // SAFETY: `addr` is NULL or valid for one read.
        let to = unsafe { addr_in(addr) }?;
        let c = e.socket.connect(now(now_ms), to).map_err(|err| {
            Failure::new(
                BTCORE_WRONG_STATE,
                match err {
                    ConnectError::Full => "max_connections uTP connections are open",
                    ConnectError::NoFreeId => "no free uTP connection id for this address",
                },
            )
            .addr(to)
        })?;
        let id = e.id_of(c, true);
        // SAFETY: non-NULL (checked above) and valid for one write.
        unsafe { out_conn.write(id) };
        Ok(())
    })
}

/// Reads up to `cap` received bytes of `conn`, in order, into `buf` and writes how many
/// to `*out_len` (0: none now; at the end of the peer's stream `btcore_utp_status`
/// says `eof`). Reading reopens the window the peer may send into: then drain
/// `btcore_utp_poll_transmit`. `BTCORE_NOT_FOUND` for an unknown or removed `conn`.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_utp_new` that no `btcore_utp_free` frees during
///   the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
/// - `buf` is valid for writes of `cap` bytes (it may be NULL when `cap` is 0).
/// - `out_len` is NULL or valid for writing one `usize`.
#[no_mangle]
pub unsafe extern "C" fn btcore_utp_read(
    h: *mut btcore_utp,
    conn: u64,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard_detail(|| {
        // SAFETY: as this function's contract requires.
        let mut e = unsafe { endpoint(h) }?;
        let out_len = non_null(out_len)?;
        // SAFETY: `buf` is valid for writes of `cap` bytes or `cap` is 0.
        let dst = unsafe { out_slice(buf, cap) }?;
        let (c, _) = e.handle(conn)?;
        let n = e.socket.conn_mut(c).map_or(0, |c| c.read(dst));
        // SAFETY: non-NULL (checked above) and valid for one write.
        unsafe { out_len.write(n) };
        Ok(())
    })
}

/// Queues up to `len` bytes of `data` on `conn` and writes how many were taken to
/// `*out_written` (fewer, or 0, when the send buffer is full: write the rest once
/// `writable` in `btcore_utp_status` grows, after acknowledgements come in). Then
/// drain `btcore_utp_poll_transmit`. `BTCORE_WRONG_STATE` once the connection is
/// closing or closed; `BTCORE_NOT_FOUND` for an unknown or removed `conn`.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_utp_new` that no `btcore_utp_free` frees during
///   the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
/// - `data` is valid for reads of `len` bytes (it may be NULL when `len` is 0).
/// - `out_written` is NULL or valid for writing one `usize`.
#[no_mangle]
pub unsafe extern "C" fn btcore_utp_write(
    h: *mut btcore_utp,
    conn: u64,
    data: *const u8,
    len: usize,
    out_written: *mut usize,
) -> btcore_result {
    guard_detail(|| {
        // SAFETY: as this function's contract requires.
        let mut e = unsafe { endpoint(h) }?;
        let out_written = non_null(out_written)?;
        // SAFETY: `data` is valid for reads of `len` bytes or `len` is 0.
        let data = unsafe { bytes(data, len) }?;
        let (c, _) = e.handle(conn)?;
        let Some(c) = e.socket.conn_mut(c) else {
            return Err(BTCORE_NOT_FOUND.into());
        };
        if !matches!(c.state(), State::SynSent | State::Connected) {
            return Err(Failure::new(
                BTCORE_WRONG_STATE,
                format!("uTP connection {conn} is closing or closed"),
            ));
        }
        let n = c.write(data);
        // SAFETY: non-NULL (checked above) and valid for one write.
        unsafe { out_written.write(n) };
        Ok(())
    })
}

/// Closes the sending side of `conn`: the bytes queued go out, then a FIN; reading goes
/// on until the peer's FIN. The connection reads `CLOSED` with `CLOSE_NORMAL` once both
/// FINs are acknowledged. Closing a connection already closing or closed does nothing.
/// `BTCORE_NOT_FOUND` for an unknown or removed `conn`.
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_utp_new` that no `btcore_utp_free` frees during
/// the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
#[no_mangle]
pub unsafe extern "C" fn btcore_utp_close(h: *mut btcore_utp, conn: u64) -> btcore_result {
    guard_detail(|| {
        // SAFETY: as this function's contract requires.
        let mut e = unsafe { endpoint(h) }?;
        let (c, _) = e.handle(conn)?;
        if let Some(c) = e.socket.conn_mut(c) {
            c.close();
        }
        Ok(())
    })
}

/// Drops `conn` and its id; a connection not closed yet is ended with a RESET to the
/// peer (drain `btcore_utp_poll_transmit`). Remove every connection once done with it:
/// it holds its buffers and a slot of `max_connections` until then.
/// `BTCORE_NOT_FOUND` for an unknown or removed `conn`.
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_utp_new` that no `btcore_utp_free` frees during
/// the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
#[no_mangle]
pub unsafe extern "C" fn btcore_utp_remove(h: *mut btcore_utp, conn: u64) -> btcore_result {
    guard_detail(|| {
        // SAFETY: as this function's contract requires.
        let mut e = unsafe { endpoint(h) }?;
        let (c, _) = e.handle(conn)?;
        e.socket.remove(c);
        e.forget(c);
        Ok(())
    })
}

/// Writes the state of `conn` to `*out`: connecting, connected, closing or closed (with
/// why), the bytes to read and the room to write, the peer's address. Check the
/// connections after `btcore_utp_recv` and `btcore_utp_handle_timeout`.
/// `BTCORE_NOT_FOUND` for an unknown or removed `conn`.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_utp_new` that no `btcore_utp_free` frees during
///   the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
/// - `out` is NULL or valid for writing one `btcore_utp_conn_status`.
#[no_mangle]
pub unsafe extern "C" fn btcore_utp_status(
    h: *const btcore_utp,
    conn: u64,
    out: *mut btcore_utp_conn_status,
) -> btcore_result {
    guard_detail(|| {
        // SAFETY: as this function's contract requires.
        let e = unsafe { endpoint(h) }?;
        let out = non_null(out)?;
        let (handle, outgoing) = e.handle(conn)?;
        let (Some(c), Some(addr)) = (e.socket.conn(handle), e.socket.addr(handle)) else {
            return Err(BTCORE_NOT_FOUND.into());
        };
        let (state, close_reason) = match c.state() {
            State::SynSent => (BTCORE_UTP_STATE_CONNECTING, BTCORE_UTP_CLOSE_NONE),
            State::Connected => (BTCORE_UTP_STATE_CONNECTED, BTCORE_UTP_CLOSE_NONE),
            State::Closing => (BTCORE_UTP_STATE_CLOSING, BTCORE_UTP_CLOSE_NONE),
            State::Closed(r) => (
                BTCORE_UTP_STATE_CLOSED,
                match r {
                    CloseReason::Normal => BTCORE_UTP_CLOSE_NORMAL,
                    CloseReason::Reset => BTCORE_UTP_CLOSE_RESET,
                    CloseReason::TimedOut => BTCORE_UTP_CLOSE_TIMED_OUT,
                    CloseReason::Idle => BTCORE_UTP_CLOSE_IDLE,
                    CloseReason::Aborted => BTCORE_UTP_CLOSE_ABORTED,
                    CloseReason::Evicted => BTCORE_UTP_CLOSE_EVICTED,
                },
            ),
        };
        let s = btcore_utp_conn_status {
            state,
            close_reason,
            readable: c.readable() as u64,
            writable: c.writable() as u64,
            unacked: c.unacked() as u64,
            addr: btcore_addr::from_socket(*addr),
            eof: u8::from(c.is_eof()),
            outgoing: u8::from(outgoing),
            reserved: 0,
            rtt_ms: c.srtt_ms(),
        };
        // SAFETY: non-NULL (checked above) and valid for one write.
        unsafe { out.write(s) };
        Ok(())
    })
}

/// Writes the next event to `*out_kind` (`BTCORE_UTP_EVENT_*`) and the connection it
/// names to `*out_conn`; `BTCORE_UTP_EVENT_NONE` (and 0): none left. Drain it after
/// `btcore_utp_recv` and `btcore_utp_handle_timeout`: it names only connections the
/// caller knows (those it dialed, and incoming ones from their `ACCEPTED` event on), and
/// none after `btcore_utp_release` or `btcore_utp_remove`.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_utp_new` that no `btcore_utp_free` frees during
///   the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
/// - `out_kind` and `out_conn` are NULL or valid for one write each.
#[no_mangle]
pub unsafe extern "C" fn btcore_utp_poll_event(
    h: *mut btcore_utp,
    out_kind: *mut u32,
    out_conn: *mut u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: as this function's contract requires.
        let mut e = unsafe { endpoint(h) }?;
        let out_kind = non_null(out_kind)?;
        let out_conn = non_null(out_conn)?;
        let (kind, conn) = loop {
            match e.socket.poll_event() {
                // Every DROPPED told: now the ids of connections gone without a word
                // (unconfirmed past their timeout, evicted half-open) can go too.
                None => {
                    e.prune();
                    break (BTCORE_UTP_EVENT_NONE, 0);
                }
                Some(Event::Accepted(c)) => break (BTCORE_UTP_EVENT_ACCEPTED, e.id_of(c, false)),
                Some(Event::Changed(c)) => {
                    if let Some(&id) = e.handles.get(&c) {
                        break (BTCORE_UTP_EVENT_CHANGED, id);
                    }
                }
                Some(Event::Dropped(c)) => {
                    let id = e.forget(c);
                    if id != 0 {
                        break (BTCORE_UTP_EVENT_DROPPED, id);
                    }
                }
                Some(_) => {}
            }
        };
        // SAFETY: both are non-NULL (checked above) and valid for one write.
        unsafe {
            out_kind.write(kind);
            out_conn.write(conn);
        }
        Ok(())
    })
}

/// Lets `conn` go at `now_ms`: its id is gone at once; the connection closes
/// gracefully (what is queued, then a FIN) and is dropped once closed or `linger_ms`
/// later, with a RESET then. `abort` 1: a RESET and dropped at once. The way to end a
/// peer without waiting for its FIN handshake. `BTCORE_NOT_FOUND` for an unknown or
/// removed `conn`.
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_utp_new` that no `btcore_utp_free` frees during
/// the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
#[no_mangle]
pub unsafe extern "C" fn btcore_utp_release(
    h: *mut btcore_utp,
    conn: u64,
    now_ms: u64,
    abort: u8,
) -> btcore_result {
    guard_detail(|| {
        // SAFETY: as this function's contract requires.
        let mut e = unsafe { endpoint(h) }?;
        let (c, _) = e.handle(conn)?;
        e.socket.release(now(now_ms), c, abort != 0);
        e.forget(c);
        Ok(())
    })
}
