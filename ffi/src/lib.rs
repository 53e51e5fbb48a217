//! libbtcore: the C ABI of btcore.
//!
//! Two APIs share one set of conventions (those of rustls-ffi):
//!
//! - the **session API** (`btcore_session_*`): the std host runs sockets, files, disk
//!   and hashing threads; the application adds torrents, reads status and drains events;
//! - the **sans-IO API** (`btcore_sansio_*`): the application owns sockets, storage and
//!   the clock; the library only decides. No thread, file or socket is touched.
//!
//! Conventions: every symbol starts with `btcore_`; opaque handles come from `_new` and
//! go back through `_free`; every fallible function returns a [`btcore_result`]
//! (numbered from 7000, never mistaken for errno); out-parameters are written only on
//! success; every buffer comes with its length; callbacks take `void *userdata` first;
//! every pointer is checked for NULL; no panic crosses the boundary. A failure's detail
//! (the OS error number, the file or address, the byte offset of a parse error, a
//! sentence) is recorded by `guard` for the calling thread and for the handle the
//! call resolved (see the `error` module): a handle accessor attaches its handle's
//! last-error slot to the running call, and calls whose failures know more return a
//! `Failure` through `guard_detail`.
//!
//! Safety: every exported function that takes a pointer is `unsafe` and says in its
//! `# Safety` section what the caller guarantees: buffers valid for the length given
//! with them, strings NUL-terminated, handles made by `btcore_*_new`, and nothing
//! passed to a call changed by another thread during it. A handle that was freed, is of
//! another type or was never made by the library is not undefined behaviour: the live
//! handles are kept in a set (`register_handle`, `is_live_handle`,
//! `unregister_handle`) and a pointer not in it is refused with `BTCORE_WRONG_HANDLE`
//! before anything behind it is read; what the caller must not do is free a handle while
//! another call on it runs. Every `unsafe` block carries a `SAFETY:` comment (the crate
//! denies `clippy::undocumented_unsafe_blocks`), and caller buffers of types with enum
//! fields are written as `MaybeUninit` slots, never read as values.
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::not_unsafe_ptr_arg_deref,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]
#![allow(non_camel_case_types)]

mod create;
mod error;
mod queue;
mod sansio;
mod sansio_dht;
mod sansio_files;
mod sansio_mse;
#[cfg(test)]
mod sansio_tests;
mod sansio_tracker;
mod sansio_utp;
mod session;
mod settings;
mod torrent;
mod trackers;
mod webseeds;

pub use create::*;
pub use error::*;
pub use queue::*;
pub use sansio::*;
pub use sansio_dht::*;
pub use sansio_files::*;
pub use sansio_mse::*;
pub use sansio_tracker::*;
pub use sansio_utp::*;
pub use session::*;
pub use settings::*;
pub use torrent::*;
pub use trackers::*;
pub use webseeds::*;

use btcore_core::session::{DiskError, Event, PeerOrigin, PeerStatus, TorrentState, TorrentStatus};
use std::collections::VecDeque;
use std::ffi::{c_char, CStr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// Major version of libbtcore (same as `btcore_version()`).
pub const BTCORE_VERSION_MAJOR: u32 = 0;
/// Minor version of libbtcore.
pub const BTCORE_VERSION_MINOR: u32 = 1;
/// Patch version of libbtcore.
pub const BTCORE_VERSION_PATCH: u32 = 0;

/// The result of every fallible call. `BTCORE_OK` is 0; errors start at 7000 so that
/// they are never mistaken for an errno value. `btcore_result_name()` and
/// `btcore_result_message()` describe a code; what happened in a given failure (the OS
/// error number, the file or address, the byte offset of a parse error, a sentence)
/// is in its detail: `btcore_last_error()`, `btcore_session_last_error()`,
/// `btcore_sansio_last_error()`.
pub type btcore_result = u32;
/// Success.
pub const BTCORE_OK: btcore_result = 0;
/// A required pointer argument was NULL.
pub const BTCORE_NULL_PARAMETER: btcore_result = 7001;
/// An argument is out of range or malformed (bad address, bad UTF-8, bad status).
pub const BTCORE_INVALID_PARAMETER: btcore_result = 7002;
/// The caller's buffer is too small; where a function has an `out_len`, it receives
/// the size needed (the one exception to "out-parameters only on success").
pub const BTCORE_BUFFER_TOO_SMALL: btcore_result = 7003;
/// A bug in libbtcore: a panic was caught at the boundary. The handle should be freed.
pub const BTCORE_PANIC: btcore_result = 7004;
/// The handle is of another type, was freed, or was not made by the library (the
/// library keeps the set of live handles and reads nothing behind any other).
pub const BTCORE_WRONG_HANDLE: btcore_result = 7005;
/// No torrent, action or connection with that id.
pub const BTCORE_NOT_FOUND: btcore_result = 7006;
/// The operation is not supported by this version.
pub const BTCORE_NOT_IMPLEMENTED: btcore_result = 7007;
/// Not allowed now (e.g. `btcore_session_poll` while the session thread runs).
pub const BTCORE_WRONG_STATE: btcore_result = 7008;
/// A file or socket error (the detail has the OS error number and the file or
/// address).
pub const BTCORE_IO: btcore_result = 7009;
/// The `.torrent` data is invalid (or larger than 64 MiB); the detail has the byte
/// offset and the cause.
pub const BTCORE_INVALID_TORRENT: btcore_result = 7010;
/// The magnet link is invalid; the detail has the cause.
pub const BTCORE_INVALID_MAGNET: btcore_result = 7011;
/// A torrent with the same info-hash is already in the session.
pub const BTCORE_DUPLICATE_TORRENT: btcore_result = 7012;
/// The torrent's files could not be set up in the download directory.
pub const BTCORE_STORAGE: btcore_result = 7013;
/// The disk is full.
pub const BTCORE_DISK_FULL: btcore_result = 7014;
/// A torrent could not be created (nothing to share, bad name, bad piece length).
pub const BTCORE_CREATE_FAILED: btcore_result = 7015;
/// A peer broke the protocol (sent bad data); its connection was closed.
pub const BTCORE_PEER_PROTOCOL: btcore_result = 7016;
/// A peer timed out or was of no use; its connection was closed.
pub const BTCORE_PEER_TIMEOUT: btcore_result = 7017;
/// The peer's address is banned (it sent data that failed a hash check); its
/// connection was closed, and it is refused when it comes back.
pub const BTCORE_PEER_BANNED: btcore_result = 7018;
/// A tracker refused the announce (its `failure reason`) or could not be reached
/// (the `error` of `BTCORE_EVENT_TRACKER_ERROR`).
pub const BTCORE_TRACKER: btcore_result = 7019;

/// The constant's name of a result code, or `None` for a code this version does not know.
pub(crate) fn result_name(code: btcore_result) -> Option<&'static CStr> {
    Some(match code {
        BTCORE_OK => c"BTCORE_OK",
        BTCORE_NULL_PARAMETER => c"BTCORE_NULL_PARAMETER",
        BTCORE_INVALID_PARAMETER => c"BTCORE_INVALID_PARAMETER",
        BTCORE_BUFFER_TOO_SMALL => c"BTCORE_BUFFER_TOO_SMALL",
        BTCORE_PANIC => c"BTCORE_PANIC",
        BTCORE_WRONG_HANDLE => c"BTCORE_WRONG_HANDLE",
        BTCORE_NOT_FOUND => c"BTCORE_NOT_FOUND",
        BTCORE_NOT_IMPLEMENTED => c"BTCORE_NOT_IMPLEMENTED",
        BTCORE_WRONG_STATE => c"BTCORE_WRONG_STATE",
        BTCORE_IO => c"BTCORE_IO",
        BTCORE_INVALID_TORRENT => c"BTCORE_INVALID_TORRENT",
        BTCORE_INVALID_MAGNET => c"BTCORE_INVALID_MAGNET",
        BTCORE_DUPLICATE_TORRENT => c"BTCORE_DUPLICATE_TORRENT",
        BTCORE_STORAGE => c"BTCORE_STORAGE",
        BTCORE_DISK_FULL => c"BTCORE_DISK_FULL",
        BTCORE_CREATE_FAILED => c"BTCORE_CREATE_FAILED",
        BTCORE_PEER_PROTOCOL => c"BTCORE_PEER_PROTOCOL",
        BTCORE_PEER_TIMEOUT => c"BTCORE_PEER_TIMEOUT",
        BTCORE_PEER_BANNED => c"BTCORE_PEER_BANNED",
        BTCORE_TRACKER => c"BTCORE_TRACKER",
        _ => return None,
    })
}

/// The one-line description of a result code, or `None` for a code this version does not know.
pub(crate) fn result_message(code: btcore_result) -> Option<&'static CStr> {
    Some(match code {
        BTCORE_OK => c"success",
        BTCORE_NULL_PARAMETER => c"a required pointer argument was NULL",
        BTCORE_INVALID_PARAMETER => c"an argument is out of range or malformed",
        BTCORE_BUFFER_TOO_SMALL => c"the buffer is too small",
        BTCORE_PANIC => c"internal error (a panic was caught); free the handle",
        BTCORE_WRONG_HANDLE => c"the handle is of another type or was freed",
        BTCORE_NOT_FOUND => c"no torrent, action or connection with that id",
        BTCORE_NOT_IMPLEMENTED => c"not supported by this version of libbtcore",
        BTCORE_WRONG_STATE => c"not allowed in the current state",
        BTCORE_IO => c"a file or socket error",
        BTCORE_INVALID_TORRENT => c"the torrent data is invalid",
        BTCORE_INVALID_MAGNET => c"the magnet link is invalid",
        BTCORE_DUPLICATE_TORRENT => c"the torrent is already in the session",
        BTCORE_STORAGE => c"the torrent's files could not be set up",
        BTCORE_DISK_FULL => c"the disk is full",
        BTCORE_CREATE_FAILED => c"the torrent could not be created",
        BTCORE_PEER_PROTOCOL => c"the peer broke the protocol",
        BTCORE_PEER_TIMEOUT => c"the peer timed out",
        BTCORE_PEER_BANNED => c"the peer is banned",
        BTCORE_TRACKER => c"the tracker failed or refused the announce",
        _ => return None,
    })
}

/// The name of a result code (`"BTCORE_IO"`), or `"BTCORE_UNKNOWN"`: a static string,
/// never NULL, never to be freed. Thread-safe.
#[no_mangle]
pub extern "C" fn btcore_result_name(code: u32) -> *const c_char {
    catch_unwind(|| result_name(code).unwrap_or(c"BTCORE_UNKNOWN"))
        .unwrap_or(c"BTCORE_UNKNOWN")
        .as_ptr()
}

/// A one-line English description of a result code: a static string, never NULL,
/// never to be freed. Thread-safe. It describes the code only ("a file or socket
/// error"); what happened in a given failure ("0.0.0.0:6881: Address already in use
/// (os error 98)") is in the failure's detail: `btcore_last_error()`,
/// `btcore_session_last_error()`, `btcore_sansio_last_error()`.
#[no_mangle]
pub extern "C" fn btcore_result_message(code: u32) -> *const c_char {
    catch_unwind(|| result_message(code).unwrap_or(c"unknown result code"))
        .unwrap_or(c"unknown result code")
        .as_ptr()
}

/// The library's version, `"MAJOR.MINOR.PATCH"`: a static string. Compare with the
/// `BTCORE_VERSION_*` macros to detect a header/library mismatch. Thread-safe.
#[no_mangle]
pub extern "C" fn btcore_version() -> *const c_char {
    const V: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"0.0.0",
        };
    V.as_ptr()
}

/// SHA-1 of `len` bytes at `data` into `out`, which must hold 20 bytes: what a sans-IO host needs to
/// answer a `BTCORE_ACTION_VERIFY` without a crypto library of its own. `data` may be
/// NULL when `len` is 0. Thread-safe.
///
/// # Safety
///
/// - `data` is valid for reads of `len` bytes (it may be NULL when `len` is 0).
/// - `out` is NULL or valid for writes of 20 bytes.
#[no_mangle]
pub unsafe extern "C" fn btcore_sha1(data: *const u8, len: usize, out: *mut u8) -> btcore_result {
    guard(|| {
        // SAFETY: `data` is valid for reads of `len` bytes or `len` is 0, as this
        // function's contract requires.
        let data = unsafe { bytes(data, len) }?;
        let out = non_null(out)?;
        let d = btcore_core::hash::sha1(data);
        // SAFETY: `out` is not NULL (checked above) and valid for writes of 20 bytes by
        // this function's contract; `d` is a local 20-byte array, so they cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), out, d.len()) };
        Ok(())
    })
}

// ---- shared C types ----

/// No address (the `family` of an unset `btcore_addr`).
pub const BTCORE_ADDR_NONE: u16 = 0;
/// An IPv4 address: `ip[0..4]`, network order.
pub const BTCORE_ADDR_IPV4: u16 = 4;
/// An IPv6 address: `ip[0..16]`, network order.
pub const BTCORE_ADDR_IPV6: u16 = 6;

/// A peer address, IPv4 or IPv6.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct btcore_addr {
    /// `BTCORE_ADDR_IPV4`, `BTCORE_ADDR_IPV6` or `BTCORE_ADDR_NONE`.
    pub family: u16,
    /// The port, host byte order.
    pub port: u16,
    /// The address bytes, network order (IPv4 uses the first 4).
    pub ip: [u8; 16],
}

impl btcore_addr {
    pub(crate) fn from_socket(a: SocketAddr) -> Self {
        let mut ip = [0u8; 16];
        let family = match a.ip() {
            IpAddr::V4(v4) => {
                ip[..4].copy_from_slice(&v4.octets());
                BTCORE_ADDR_IPV4
            }
            IpAddr::V6(v6) => {
                ip = v6.octets();
                BTCORE_ADDR_IPV6
            }
        };
        Self {
            family,
            port: a.port(),
            ip,
        }
    }

    pub(crate) fn to_socket(self) -> Option<SocketAddr> {
        match self.family {
            BTCORE_ADDR_IPV4 => Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(
                    self.ip[0], self.ip[1], self.ip[2], self.ip[3],
                )),
                self.port,
            )),
            BTCORE_ADDR_IPV6 => Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(self.ip)),
                self.port,
            )),
            _ => None,
        }
    }
}

/// Where a torrent stands.
pub type btcore_torrent_state = u32;
/// Fetching the info dictionary from peers (a magnet link).
pub const BTCORE_STATE_FETCHING_METADATA: btcore_torrent_state = 1;
/// Fetching pieces.
pub const BTCORE_STATE_DOWNLOADING: btcore_torrent_state = 2;
/// Every piece verified; serving others.
pub const BTCORE_STATE_SEEDING: btcore_torrent_state = 3;
/// Stopped by an error (see `btcore_torrent_status.error`).
pub const BTCORE_STATE_ERROR: btcore_torrent_state = 4;
/// Paused by `btcore_session_pause`.
pub const BTCORE_STATE_PAUSED: btcore_torrent_state = 5;
/// Its data on disk is being checked (off the loop); no peers until that ends.
/// `progress_ppm` then says how far the check is.
pub const BTCORE_STATE_CHECKING: btcore_torrent_state = 6;
/// Waiting in the download queue (`btcore_settings.download_queue_size`): no
/// connection, no announce; it starts by itself when a slot frees (Transmission's
/// "queued to download").
pub const BTCORE_STATE_QUEUED_DOWNLOAD: btcore_torrent_state = 7;
/// Finished and waiting in the seed queue (`btcore_settings.seed_queue_size`;
/// Transmission's "queued to seed").
pub const BTCORE_STATE_QUEUED_SEED: btcore_torrent_state = 8;

/// A torrent's status, filled by `btcore_session_torrent_status()` or
/// `btcore_sansio_torrent_status()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct btcore_torrent_status {
    /// The torrent's id in its session.
    pub id: u32,
    /// Its state.
    pub state: btcore_torrent_state,
    /// The info-hash (SHA-1 of the info dictionary).
    pub info_hash: [u8; 20],
    /// Progress in millionths (0 to 1000000) of the verified bytes; while
    /// `BTCORE_STATE_CHECKING`, of the pieces checked (as libtorrent reports it).
    pub progress_ppm: u32,
    /// Verified pieces.
    pub pieces_have: u32,
    /// All pieces (0 until a magnet link's metadata arrives).
    pub num_pieces: u32,
    /// Verified bytes.
    pub bytes_have: u64,
    /// Total bytes (0 until a magnet link's metadata arrives).
    pub total_size: u64,
    /// Download rate in bytes/s.
    pub download_rate: u64,
    /// Upload rate in bytes/s.
    pub upload_rate: u64,
    /// Payload bytes received in all.
    pub downloaded: u64,
    /// Payload bytes sent in all.
    pub uploaded: u64,
    /// Estimated seconds to completion: 0 when complete, -1 when unknown (no rate).
    pub eta_seconds: i64,
    /// Connected peers (handshake done).
    pub peers: u32,
    /// Of which seeds.
    pub seeds: u32,
    /// Connections being set up.
    pub connecting: u32,
    /// Pieces that failed their hash check.
    pub hash_failures: u32,
    /// Peers banned for bad data.
    pub banned: u32,
    /// The error that stopped the torrent (`BTCORE_DISK_FULL`, `BTCORE_IO`), or
    /// `BTCORE_OK`.
    pub error: btcore_result,
    /// Bytes of the wanted pieces (`total_size` unless files are skipped with
    /// `btcore_session_set_file_priorities`; counted by whole pieces).
    pub wanted_size: u64,
    /// Of which verified. `progress_ppm` and `eta_seconds` count these.
    pub wanted_have: u64,
    /// 1 once every wanted piece is verified (a seed, or every wanted file there), else
    /// 0.
    pub finished: u32,
}

/// The C view of a torrent's status. Progress, ETA and error are the core's
/// ([`TorrentStatus::progress_ppm`], [`TorrentStatus::eta_secs`],
/// [`TorrentStatus::error`]); only the progress of a data check, `checking` as
/// (pieces checked, pieces), is the host's, which runs the check.
pub(crate) fn torrent_status(
    id: u32,
    s: &TorrentStatus,
    checking: Option<(u32, u32)>,
) -> btcore_torrent_status {
    let state = match s.state {
        _ if s.paused => BTCORE_STATE_PAUSED,
        _ if s.queued && s.finished => BTCORE_STATE_QUEUED_SEED,
        _ if s.queued => BTCORE_STATE_QUEUED_DOWNLOAD,
        TorrentState::Checking => BTCORE_STATE_CHECKING,
        TorrentState::FetchingMetadata => BTCORE_STATE_FETCHING_METADATA,
        TorrentState::Downloading => BTCORE_STATE_DOWNLOADING,
        TorrentState::Seeding => BTCORE_STATE_SEEDING,
        _ => BTCORE_STATE_ERROR,
    };
    let progress_ppm = match checking {
        Some((done, total)) => (u64::from(done) * 1_000_000)
            .checked_div(u64::from(total))
            .unwrap_or(1_000_000) as u32,
        None => s.progress_ppm(),
    };
    let eta_seconds = s
        .eta_secs()
        .map_or(-1, |e| i64::try_from(e).unwrap_or(i64::MAX));
    let error = s.error.map_or(BTCORE_OK, disk_error);
    btcore_torrent_status {
        id,
        state,
        info_hash: *s.info_hash.as_bytes(),
        progress_ppm,
        pieces_have: s.pieces_have,
        num_pieces: s.num_pieces,
        bytes_have: s.bytes_have,
        total_size: s.total_size,
        download_rate: s.download_rate,
        upload_rate: s.upload_rate,
        downloaded: s.downloaded,
        uploaded: s.uploaded,
        eta_seconds,
        peers: s.peers,
        seeds: s.seeds,
        connecting: s.connecting,
        hash_failures: s.hash_failures,
        banned: s.banned,
        error,
        wanted_size: s.wanted_size,
        wanted_have: s.wanted_have,
        finished: u32::from(s.finished),
    }
}

/// `btcore_peer_status.flags`: the handshake is complete.
pub const BTCORE_PEER_ESTABLISHED: u32 = 1;
/// `btcore_peer_status.flags`: we dialed the peer (else it connected to us).
pub const BTCORE_PEER_OUTGOING: u32 = 2;
/// `btcore_peer_status.flags`: we choke the peer.
pub const BTCORE_PEER_AM_CHOKING: u32 = 4;
/// `btcore_peer_status.flags`: we want the peer's pieces.
pub const BTCORE_PEER_AM_INTERESTED: u32 = 8;
/// `btcore_peer_status.flags`: the peer chokes us.
pub const BTCORE_PEER_PEER_CHOKING: u32 = 16;
/// `btcore_peer_status.flags`: the peer wants our pieces.
pub const BTCORE_PEER_PEER_INTERESTED: u32 = 32;
/// `btcore_peer_status.flags`: `peer_id` is valid (the handshake told it).
pub const BTCORE_PEER_HAS_PEER_ID: u32 = 64;
/// `btcore_peer_status.flags`: the connection runs over uTP (else TCP).
pub const BTCORE_PEER_UTP: u32 = 128;
/// `btcore_peer_status.flags`: the connection is encrypted (RC4, after an MSE/PE
/// handshake; not after one that settled on plain text).
pub const BTCORE_PEER_ENCRYPTED: u32 = 256;
/// `btcore_peer_status.flags`: we heard of the peer from a tracker. At most one
/// `BTCORE_PEER_FROM_*` bit is set, none for a peer that dialed us.
pub const BTCORE_PEER_FROM_TRACKER: u32 = 512;
/// `btcore_peer_status.flags`: we heard of the peer from the DHT.
pub const BTCORE_PEER_FROM_DHT: u32 = 1024;
/// `btcore_peer_status.flags`: we heard of the peer from another peer (PEX).
pub const BTCORE_PEER_FROM_PEX: u32 = 2048;
/// `btcore_peer_status.flags`: we heard of the peer from local service discovery.
pub const BTCORE_PEER_FROM_LSD: u32 = 4096;
/// `btcore_peer_status.flags`: the application or a magnet link named the peer.
pub const BTCORE_PEER_FROM_USER: u32 = 8192;

/// One peer of a torrent, filled by `btcore_session_peers()` or `btcore_sansio_peers()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct btcore_peer_status {
    /// The connection id.
    pub conn: u32,
    /// A set of `BTCORE_PEER_*` bits.
    pub flags: u32,
    /// The peer's address.
    pub addr: btcore_addr,
    /// The peer's id (valid when `flags & BTCORE_PEER_HAS_PEER_ID`).
    pub peer_id: [u8; 20],
    /// The client, from the peer id (`"LT2080"` for `-LT2080-...`), NUL-terminated;
    /// empty when unknown.
    pub client: [c_char; 16],
    /// Bytes/s from the peer.
    pub download_rate: u64,
    /// Bytes/s to the peer.
    pub upload_rate: u64,
    /// Payload bytes from the peer.
    pub downloaded: u64,
    /// Payload bytes to the peer.
    pub uploaded: u64,
    /// Pieces the peer has.
    pub pieces: u32,
}

pub(crate) fn peer_status(p: &PeerStatus) -> btcore_peer_status {
    let mut flags = 0u32;
    for (on, f) in [
        (p.established, BTCORE_PEER_ESTABLISHED),
        (p.outgoing, BTCORE_PEER_OUTGOING),
        (p.am_choking, BTCORE_PEER_AM_CHOKING),
        (p.am_interested, BTCORE_PEER_AM_INTERESTED),
        (p.peer_choking, BTCORE_PEER_PEER_CHOKING),
        (p.peer_interested, BTCORE_PEER_PEER_INTERESTED),
        (p.peer_id.is_some(), BTCORE_PEER_HAS_PEER_ID),
        (
            p.transport == btcore_core::session::Transport::Utp,
            BTCORE_PEER_UTP,
        ),
        (p.encrypted, BTCORE_PEER_ENCRYPTED),
        (p.origin == PeerOrigin::Tracker, BTCORE_PEER_FROM_TRACKER),
        (p.origin == PeerOrigin::Dht, BTCORE_PEER_FROM_DHT),
        (p.origin == PeerOrigin::Pex, BTCORE_PEER_FROM_PEX),
        (p.origin == PeerOrigin::Lsd, BTCORE_PEER_FROM_LSD),
        (p.origin == PeerOrigin::User, BTCORE_PEER_FROM_USER),
    ] {
        if on {
            flags |= f;
        }
    }
    let mut client = [0 as c_char; 16];
    let mut peer_id = [0u8; 20];
    if let Some(id) = p.peer_id {
        peer_id = id.0;
        let name: &[u8] = if id.0[0] == b'-' && id.0[7] == b'-' {
            &id.0[1..7]
        } else {
            let n =
                id.0.iter()
                    .take(8)
                    .take_while(|b| b.is_ascii_graphic())
                    .count();
            &id.0[..n]
        };
        for (d, s) in client.iter_mut().zip(name.iter().take(15)) {
            *d = if s.is_ascii_graphic() {
                *s as c_char
            } else {
                b'?' as c_char
            };
        }
    }
    btcore_peer_status {
        conn: p.conn.0,
        flags,
        addr: btcore_addr::from_socket(p.addr),
        peer_id,
        client,
        download_rate: p.download_rate,
        upload_rate: p.upload_rate,
        downloaded: p.downloaded,
        uploaded: p.uploaded,
        pieces: p.pieces,
    }
}

/// What an event reports.
pub type btcore_event_kind = u32;
/// A torrent was added (`torrent`).
pub const BTCORE_EVENT_TORRENT_ADDED: btcore_event_kind = 1;
/// A magnet link's metadata arrived and checked out: the torrent downloads now.
pub const BTCORE_EVENT_METADATA_RECEIVED: btcore_event_kind = 2;
/// A piece (`piece`) passed its hash check and is on disk.
pub const BTCORE_EVENT_PIECE_FINISHED: btcore_event_kind = 3;
/// A piece (`piece`) failed its hash check and will be downloaded again.
pub const BTCORE_EVENT_HASH_FAILED: btcore_event_kind = 4;
/// Every wanted piece is verified: the torrent seeds from now on (or, with files
/// skipped, stops downloading). Sent whenever the torrent becomes finished,
/// however it got there: the last piece downloaded, or a check of the data on disk
/// (or resume data) that found every wanted piece when it was added; and again if
/// more files become wanted and arrive.
pub const BTCORE_EVENT_TORRENT_FINISHED: btcore_event_kind = 5;
/// A peer (`peer`) completed its handshake.
pub const BTCORE_EVENT_PEER_CONNECTED: btcore_event_kind = 6;
/// A peer (`peer`) was banned for sending bad data.
pub const BTCORE_EVENT_PEER_BANNED: btcore_event_kind = 7;
/// A disk error (`error`: `BTCORE_DISK_FULL` or `BTCORE_IO`) stopped the torrent.
/// One event per stopped torrent (the blocks in flight that fail after it make no
/// event). `os_error` is the OS error number; `detail` gives the file and the
/// system's words through `btcore_session_event_detail()`.
pub const BTCORE_EVENT_FILE_ERROR: btcore_event_kind = 8;
/// An announce to a tracker failed (`error`: `BTCORE_TRACKER`): no answer, a
/// transport error, or the tracker's `failure reason`; the next tracker is asked.
/// `detail` gives the tracker's URL (the subject) and the message.
pub const BTCORE_EVENT_TRACKER_ERROR: btcore_event_kind = 9;
/// A torrent was removed.
pub const BTCORE_EVENT_TORRENT_REMOVED: btcore_event_kind = 10;
/// The queue was full and `count` older events were dropped (drain more often).
pub const BTCORE_EVENT_DROPPED: btcore_event_kind = 11;
/// A tracker answered with a `warning message` (the announce counted). `detail`
/// gives the tracker's URL (the subject) and the message.
pub const BTCORE_EVENT_TRACKER_WARNING: btcore_event_kind = 12;
/// The torrent reached its ratio limit (`btcore_session_set_ratio_limit`) and was
/// paused: it stopped seeding.
pub const BTCORE_EVENT_RATIO_REACHED: btcore_event_kind = 20;
/// The finished torrent uploaded nothing for its idle limit
/// (`btcore_session_set_idle_limit`, `btcore_settings.seed_idle_minutes`) and was
/// paused: it stopped seeding.
pub const BTCORE_EVENT_IDLE_LIMIT_REACHED: btcore_event_kind = 30;
/// The torrent waits in its queue (`BTCORE_STATE_QUEUED_DOWNLOAD` or
/// `BTCORE_STATE_QUEUED_SEED`): its connections were closed.
pub const BTCORE_EVENT_TORRENT_QUEUED: btcore_event_kind = 31;
/// The torrent left its queue and runs.
pub const BTCORE_EVENT_TORRENT_DEQUEUED: btcore_event_kind = 32;

/// One event, drained by `btcore_session_events()` or `btcore_sansio_events()`
/// (libtorrent's alerts, as plain data). Fields not used by a kind are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct btcore_event {
    /// What happened.
    pub kind: btcore_event_kind,
    /// The torrent's id.
    pub torrent: u32,
    /// The piece, for `PIECE_FINISHED` and `HASH_FAILED`.
    pub piece: u32,
    /// The error, for `FILE_ERROR` and `TRACKER_ERROR`.
    pub error: btcore_result,
    /// The peer, for `PEER_CONNECTED` and `PEER_BANNED`.
    pub peer: btcore_addr,
    /// The number of dropped events, for `BTCORE_EVENT_DROPPED`.
    pub count: u64,
    /// The number of the event's detail (the file, the tracker's URL, the message), for
    /// `btcore_session_event_detail()` / `btcore_sansio_event_detail()`; 0 when none.
    pub detail: u64,
    /// The OS error number of a `FILE_ERROR` (`errno`), 0 when none or unknown.
    pub os_error: i32,
}

impl btcore_event {
    pub(crate) fn new(kind: btcore_event_kind, torrent: u32) -> Self {
        Self {
            kind,
            torrent,
            piece: 0,
            error: BTCORE_OK,
            peer: btcore_addr::default(),
            count: 0,
            detail: 0,
            os_error: 0,
        }
    }
}

pub(crate) fn disk_error(e: DiskError) -> btcore_result {
    match e {
        DiskError::NoSpace => BTCORE_DISK_FULL,
        _ => BTCORE_IO,
    }
}

/// The C event for a core event, with its detail when it has one (a tracker's URL and
/// message). A `FILE_ERROR`'s detail is the host's (see the session's collect).
pub(crate) fn convert_event(e: &Event) -> Option<(btcore_event, Option<error::Failure>)> {
    let tracker = |kind, code, torrent: &btcore_core::session::TorrentId, url: &str, msg: &str| {
        let f = error::Failure::new(code, msg).subject(BTCORE_SUBJECT_URL, url.as_bytes());
        let ev = btcore_event {
            error: code,
            ..btcore_event::new(kind, torrent.0)
        };
        Some((ev, Some(f)))
    };
    match e {
        Event::TrackerError {
            torrent,
            tracker: url,
            message,
        } => {
            return tracker(
                BTCORE_EVENT_TRACKER_ERROR,
                BTCORE_TRACKER,
                torrent,
                url,
                message,
            )
        }
        Event::TrackerWarning {
            torrent,
            tracker: url,
            message,
        } => {
            return tracker(
                BTCORE_EVENT_TRACKER_WARNING,
                BTCORE_OK,
                torrent,
                url,
                message,
            )
        }
        _ => {}
    }
    let ev = match e {
        Event::PieceVerified(t, p) => btcore_event {
            piece: p.0,
            ..btcore_event::new(BTCORE_EVENT_PIECE_FINISHED, t.0)
        },
        Event::HashFailed(t, p) => btcore_event {
            piece: p.0,
            ..btcore_event::new(BTCORE_EVENT_HASH_FAILED, t.0)
        },
        Event::TorrentFinished(t) => btcore_event::new(BTCORE_EVENT_TORRENT_FINISHED, t.0),
        Event::PeerConnected(t, a) => btcore_event {
            peer: btcore_addr::from_socket(*a),
            ..btcore_event::new(BTCORE_EVENT_PEER_CONNECTED, t.0)
        },
        Event::PeerBanned(t, a) => btcore_event {
            peer: btcore_addr::from_socket(*a),
            ..btcore_event::new(BTCORE_EVENT_PEER_BANNED, t.0)
        },
        Event::DiskFailed(t, d) => btcore_event {
            error: disk_error(*d),
            ..btcore_event::new(BTCORE_EVENT_FILE_ERROR, t.0)
        },
        Event::MetadataReceived(t) => btcore_event::new(BTCORE_EVENT_METADATA_RECEIVED, t.0),
        Event::RatioReached(t) => btcore_event::new(BTCORE_EVENT_RATIO_REACHED, t.0),
        Event::IdleLimitReached(t) => btcore_event::new(BTCORE_EVENT_IDLE_LIMIT_REACHED, t.0),
        Event::TorrentQueued(t) => btcore_event::new(BTCORE_EVENT_TORRENT_QUEUED, t.0),
        Event::TorrentDequeued(t) => btcore_event::new(BTCORE_EVENT_TORRENT_DEQUEUED, t.0),
        _ => return None,
    };
    Some((ev, None))
}

/// A bounded event queue: the oldest events go first when it is full, and the count of
/// dropped events is reported with a `BTCORE_EVENT_DROPPED` before the rest.
#[derive(Debug, Default)]
pub(crate) struct EventQueue {
    q: VecDeque<btcore_event>,
    dropped: u64,
    /// The details of recent events (their `detail` numbers).
    details: error::EventDetails,
}

/// cbindgen:ignore
const MAX_QUEUED_EVENTS: usize = 4096;

impl EventQueue {
    /// Queues an event; returns whether the queue was empty before.
    pub(crate) fn push(&mut self, e: btcore_event) -> bool {
        let was_empty = self.is_empty();
        if self.q.len() >= MAX_QUEUED_EVENTS {
            // Progress goes first: an event that changes what the application must do
            // (a torrent added, its metadata, its end, a file error, its removal) is
            // dropped only when every queued event is one.
            let state = |k: btcore_event_kind| {
                matches!(
                    k,
                    BTCORE_EVENT_TORRENT_ADDED
                        | BTCORE_EVENT_METADATA_RECEIVED
                        | BTCORE_EVENT_TORRENT_FINISHED
                        | BTCORE_EVENT_FILE_ERROR
                        | BTCORE_EVENT_TORRENT_REMOVED
                        | BTCORE_EVENT_RATIO_REACHED
                        | BTCORE_EVENT_IDLE_LIMIT_REACHED
                )
            };
            let i = self.q.iter().position(|e| !state(e.kind)).unwrap_or(0);
            self.q.remove(i);
            self.dropped += 1;
        }
        self.q.push_back(e);
        was_empty
    }

    /// Queues an event with its detail (kept for `_event_detail` under the number the
    /// event carries); returns whether the queue was empty before.
    pub(crate) fn push_with(
        &mut self,
        mut e: btcore_event,
        detail: Option<error::Failure>,
    ) -> bool {
        if let Some(f) = detail {
            e.os_error = f.os_error;
            e.detail = self.details.push(f);
        }
        self.push(e)
    }

    /// The detail numbered `id`, while it is kept.
    pub(crate) fn detail(&self, id: u64) -> Option<&error::Failure> {
        self.details.get(id)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.q.is_empty() && self.dropped == 0
    }

    pub(crate) fn drain_into(&mut self, out: &mut [std::mem::MaybeUninit<btcore_event>]) -> usize {
        let mut n = 0;
        if self.dropped > 0 && !out.is_empty() {
            out[0].write(btcore_event {
                count: self.dropped,
                ..btcore_event::new(BTCORE_EVENT_DROPPED, 0)
            });
            self.dropped = 0;
            n = 1;
        }
        while n < out.len() {
            let Some(e) = self.q.pop_front() else { break };
            out[n].write(e);
            n += 1;
        }
        n
    }
}

// ---- boundary helpers ----

/// Runs `f` behind the panic boundary; a failure is recorded (with the code's own
/// sentence as its message) for the thread and for the handle the call resolved (see
/// [`error`]).
pub(crate) fn guard(f: impl FnOnce() -> Result<(), btcore_result>) -> btcore_result {
    guard_detail(|| f().map_err(error::Failure::from))
}

/// [`guard`] for a call whose failures carry their detail.
pub(crate) fn guard_detail(f: impl FnOnce() -> Result<(), error::Failure>) -> btcore_result {
    let outer = error::enter();
    let r = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => BTCORE_OK,
        Ok(Err(e)) => {
            let code = e.code;
            error::record(e);
            code
        }
        Err(_) => {
            error::record(error::Failure::from(BTCORE_PANIC));
            BTCORE_PANIC
        }
    };
    error::leave(outer);
    r
}

/// Checks an out-pointer.
pub(crate) fn non_null<T>(p: *mut T) -> Result<*mut T, btcore_result> {
    if p.is_null() {
        Err(BTCORE_NULL_PARAMETER)
    } else {
        Ok(p)
    }
}

/// A byte slice from a pointer and a length (NULL allowed when `len` is 0).
///
/// # Safety
/// `p` must point to `len` readable bytes when not NULL.
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: usize) -> Result<&'a [u8], btcore_result> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(BTCORE_NULL_PARAMETER);
    }
    if len > isize::MAX as usize {
        return Err(BTCORE_INVALID_PARAMETER);
    }
    // SAFETY: `p` is not NULL and `len` is at most `isize::MAX` (both checked above);
    // the caller promises `len` readable bytes at `p`, unchanged while the slice lives.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Types for which every bit pattern is a valid value (integers and structs of them):
/// a caller buffer of them may be viewed as `&mut [T]` whatever it held before.
///
/// # Safety
/// Implement only for types with no enum, `bool`, reference or other field with
/// invalid bit patterns, and no padding that the view could expose.
pub(crate) unsafe trait AnyBits: Copy {}
// SAFETY: an integer; every bit pattern is valid.
unsafe impl AnyBits for u8 {}
// SAFETY: an integer; every bit pattern is valid.
unsafe impl AnyBits for u32 {}
// SAFETY: integers and arrays of integers only (`btcore_addr` included).
unsafe impl AnyBits for btcore_peer_status {}

/// Checks a caller buffer of `cap` `T`s: `Ok(None)` when `cap` is 0, the pointer when
/// it may be viewed as a slice.
fn out_ptr<T>(p: *mut T, cap: usize) -> Result<Option<*mut T>, btcore_result> {
    if cap == 0 {
        return Ok(None);
    }
    if p.is_null() {
        return Err(BTCORE_NULL_PARAMETER);
    }
    if cap
        .checked_mul(std::mem::size_of::<T>().max(1))
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(BTCORE_INVALID_PARAMETER);
    }
    Ok(Some(p))
}

/// A mutable slice of `T` from a caller buffer (NULL allowed when `cap` is 0), for a
/// type valid in any bit pattern (what the buffer held before is a valid `T`).
///
/// # Safety
/// `p` must point to `cap` writable `T`s when not NULL, used by nothing else while the
/// slice lives.
pub(crate) unsafe fn out_slice<'a, T: AnyBits>(
    p: *mut T,
    cap: usize,
) -> Result<&'a mut [T], btcore_result> {
    let Some(p) = out_ptr(p, cap)? else {
        return Ok(&mut []);
    };
    // SAFETY: `p` is not NULL and `cap` elements fit in `isize::MAX` bytes (both checked
    // by `out_ptr`); the caller promises `cap` writable `T`s at `p`, used by nothing else
    // while the slice lives; whatever they hold is a valid `T` (`T: AnyBits`).
    Ok(unsafe { std::slice::from_raw_parts_mut(p, cap) })
}

/// A caller buffer of `cap` `T`s, as maybe-uninitialized slots (NULL allowed when `cap`
/// is 0): for types with invalid bit patterns (an enum field), whose buffer may hold
/// anything before the library writes it.
///
/// # Safety
/// As [`out_slice`].
pub(crate) unsafe fn out_uninit<'a, T>(
    p: *mut T,
    cap: usize,
) -> Result<&'a mut [std::mem::MaybeUninit<T>], btcore_result> {
    let Some(p) = out_ptr(p, cap)? else {
        return Ok(&mut []);
    };
    // SAFETY: as in `out_slice`; `MaybeUninit<T>` has the layout of `T` and is valid in
    // any bit pattern, so the view reads nothing as a `T`.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast(), cap) })
}

/// A NUL-terminated string (required).
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string.
pub(crate) unsafe fn cstr<'a>(p: *const c_char) -> Result<&'a CStr, btcore_result> {
    if p.is_null() {
        return Err(BTCORE_NULL_PARAMETER);
    }
    // SAFETY: not NULL (checked above); the caller promises a NUL-terminated string.
    Ok(unsafe { CStr::from_ptr(p) })
}

/// A path from a NUL-terminated string (bytes, not necessarily UTF-8); NULL gives None.
///
/// # Safety
/// As [`cstr`].
pub(crate) unsafe fn opt_path(p: *const c_char) -> Result<Option<PathBuf>, btcore_result> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: not NULL (checked above); the caller promises a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(p) };
    if s.is_empty() {
        return Err(BTCORE_INVALID_PARAMETER);
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(Some(PathBuf::from(std::ffi::OsStr::from_bytes(
            s.to_bytes(),
        ))))
    }
    #[cfg(not(unix))]
    {
        s.to_str()
            .map(|s| Some(PathBuf::from(s)))
            .map_err(|_| BTCORE_INVALID_PARAMETER)
    }
}

/// Copies `src` into a caller buffer, with the size needed in `out_len` even when the
/// buffer is too small.
///
/// # Safety
/// `buf` must point to `cap` writable bytes when not NULL; `out_len` is checked.
pub(crate) unsafe fn copy_out(
    src: &[u8],
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> Result<(), btcore_result> {
    let out_len = non_null(out_len)?;
    // SAFETY: `buf` is valid for writes of `cap` elements or `cap` is 0, as this function's
    // contract requires.
    let dst = unsafe { out_slice(buf, cap) }?;
    if dst.len() < src.len() {
        // SAFETY: `out_len` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out_len.write(src.len()) };
        return Err(BTCORE_BUFFER_TOO_SMALL);
    }
    dst[..src.len()].copy_from_slice(src);
    // SAFETY: `out_len` is non-NULL (checked above) and valid for one write, as this
    // function's contract requires.
    unsafe { out_len.write(src.len()) };
    Ok(())
}

/// cbindgen:ignore
/// The kinds of handle the library hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum HandleKind {
    Session,
    Sansio,
    Dht,
    Utp,
}

/// cbindgen:ignore
/// The handles alive now, by address and kind. A pointer is looked up here before
/// anything behind it is read, so a handle of another type, a freed one (freed twice,
/// or used after its free) or a stray pointer is refused with `BTCORE_WRONG_HANDLE`
/// without touching its memory. A new handle may reuse a freed one's address: a call
/// with the old pointer then reaches the new handle (of the same kind), never freed
/// memory.
static LIVE_HANDLES: std::sync::Mutex<std::collections::BTreeSet<(usize, HandleKind)>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn live_handles() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<(usize, HandleKind)>>
{
    // The set is never left half-updated: a poisoned lock still holds a good set.
    LIVE_HANDLES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records a new handle.
pub(crate) fn register_handle(p: *const (), kind: HandleKind) {
    live_handles().insert((p as usize, kind));
}

/// Whether `p` is a live handle of `kind`.
pub(crate) fn is_live_handle(p: *const (), kind: HandleKind) -> bool {
    live_handles().contains(&(p as usize, kind))
}

/// Forgets a handle being freed; false when it was not live (then it must not be
/// freed). Only one of two racing frees gets true.
pub(crate) fn unregister_handle(p: *const (), kind: HandleKind) -> bool {
    live_handles().remove(&(p as usize, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_event_queue_keeps_state_changes() {
        let mut q = EventQueue::default();
        q.push(btcore_event::new(BTCORE_EVENT_METADATA_RECEIVED, 1));
        for _ in 0..MAX_QUEUED_EVENTS + 10 {
            q.push(btcore_event::new(BTCORE_EVENT_PIECE_FINISHED, 1));
        }
        let mut slots = vec![std::mem::MaybeUninit::uninit(); MAX_QUEUED_EVENTS + 1];
        let n = q.drain_into(&mut slots);
        assert_eq!(n, MAX_QUEUED_EVENTS + 1);
        let mut out = Vec::new();
        for e in &slots[..n] {
            // SAFETY: `drain_into` wrote the first `n` slots.
            out.push(unsafe { e.assume_init() });
        }
        assert_eq!(out[0].kind, BTCORE_EVENT_DROPPED);
        assert_eq!(out[0].count, 11);
        assert_eq!(out[1].kind, BTCORE_EVENT_METADATA_RECEIVED);
    }

    #[test]
    fn version_macros_match_the_crate() {
        assert_eq!(
            BTCORE_VERSION_MAJOR.to_string(),
            env!("CARGO_PKG_VERSION_MAJOR")
        );
        assert_eq!(
            BTCORE_VERSION_MINOR.to_string(),
            env!("CARGO_PKG_VERSION_MINOR")
        );
        assert_eq!(
            BTCORE_VERSION_PATCH.to_string(),
            env!("CARGO_PKG_VERSION_PATCH")
        );
        // SAFETY: `btcore_version` returns a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(btcore_version()) };
        assert_eq!(v.to_str().ok(), Some(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn every_code_has_a_name() {
        for c in [0u32, 7001, 7017] {
            // SAFETY: `btcore_result_name` returns a static NUL-terminated string.
            let n = unsafe { CStr::from_ptr(btcore_result_name(c)) };
            assert!(n.to_bytes().starts_with(b"BTCORE_"));
            assert_ne!(n.to_bytes(), b"BTCORE_UNKNOWN");
        }
        // SAFETY: `btcore_result_name` returns a static NUL-terminated string.
        let n = unsafe { CStr::from_ptr(btcore_result_name(5)) };
        assert_eq!(n.to_bytes(), b"BTCORE_UNKNOWN");
    }

    #[test]
    fn the_c_status_takes_progress_eta_and_error_from_the_core() {
        use btcore_core::ids::InfoHash;
        let base = TorrentStatus {
            info_hash: InfoHash([1; 20]),
            info_hash_v2: None,
            state: TorrentState::Downloading,
            pieces_have: 1,
            num_pieces: 3,
            bytes_have: 1,
            total_size: 3,
            peers: 0,
            seeds: 0,
            connecting: 0,
            download_rate: 2,
            upload_rate: 0,
            downloaded: 0,
            uploaded: 0,
            hash_failures: 0,
            banned: 0,
            private: false,
            paused: false,
            queued: false,
            queue_position: 0,
            error: None,
            wanted_size: 3,
            wanted_have: 1,
            finished: false,
            stalled: false,
        };
        let c = torrent_status(7, &base, None);
        assert_eq!(
            (c.progress_ppm, c.eta_seconds, c.error),
            (333_333, 1, BTCORE_OK)
        );
        let no_rate = TorrentStatus {
            download_rate: 0,
            ..base
        };
        assert_eq!(torrent_status(7, &no_rate, None).eta_seconds, -1);
        let seed = TorrentStatus {
            state: TorrentState::Seeding,
            bytes_have: 3,
            ..base
        };
        let c = torrent_status(7, &seed, None);
        assert_eq!((c.progress_ppm, c.eta_seconds), (1_000_000, 0));
        let full = TorrentStatus {
            state: TorrentState::Error,
            error: Some(DiskError::NoSpace),
            ..base
        };
        let c = torrent_status(7, &full, None);
        assert_eq!(c.state, BTCORE_STATE_ERROR);
        assert_eq!((c.error, c.eta_seconds), (BTCORE_DISK_FULL, -1));
        // While checking, the progress is the host's check.
        let checking = TorrentStatus {
            state: TorrentState::Checking,
            ..base
        };
        assert_eq!(
            torrent_status(7, &checking, Some((1, 4))).progress_ppm,
            250_000
        );
    }
}
