//! Tracker announces for a sans-IO host: the request of an `ANNOUNCE` action built by
//! the core's codecs, and the tracker's answer parsed by them, so the host needs a
//! socket but no BitTorrent code of its own.
//!
//! HTTP (BEP 3, compact peers BEP 23/7): `btcore_tracker_announce_url` gives the whole
//! `GET` URL of an `ANNOUNCE` action (the tracker's URL and the query: info-hash, peer
//! id, port, counters, event, numwant, key, `compact=1`); the host sends
//! `GET <path and query> HTTP/1.1` and hands the response body to
//! `btcore_tracker_parse_announce`.
//!
//! UDP (BEP 15): `btcore_tracker_udp_connect_request` and
//! `btcore_tracker_udp_parse_connect` get a connection id (valid for a minute),
//! `btcore_tracker_udp_announce_request` and `btcore_tracker_udp_parse_announce` make
//! the announce. The host picks the transaction ids (random, one per request) and
//! retransmits after 15 s, doubling, as BEP 15 says.
//!
//! Either way the peers go to `btcore_sansio_add_peer` and the interval to
//! `btcore_sansio_announced`.
use crate::sansio::btcore_action;
use crate::*;
use btcore_core::bencode::Token;
use btcore_core::ids::{InfoHash, PeerId};
use btcore_core::tracker::{http, udp, AnnounceRequest, Event, TrackerError};
use std::mem::MaybeUninit;
use std::net::SocketAddr;

/// Most bencode tokens an HTTP announce answer may hold (the std host's
/// `ANNOUNCE_TOKENS`): 16,384, a bounded 256 KiB of parser state whatever the body.
const MAX_TOKENS: usize = 16_384;

/// What a tracker answered (`btcore_tracker_parse_announce`,
/// `btcore_tracker_udp_parse_announce`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct btcore_tracker_reply {
    /// Seconds until the next announce (clamped to 30 s .. 24 h): give it to
    /// `btcore_sansio_announced`.
    pub interval_secs: u32,
    /// The tracker's `min interval` (HTTP), 0 when it gave none.
    pub min_interval_secs: u32,
    /// Peers written to the caller's buffer.
    pub num_peers: u32,
    /// Peers in the answer (more than `num_peers` when the buffer was too small: the
    /// rest are dropped).
    pub total_peers: u32,
    /// Seeders and leechers, per the tracker (`UINT32_MAX`: not given).
    pub seeders: u32,
    /// Leechers, per the tracker (`UINT32_MAX`: not given).
    pub leechers: u32,
    /// 1: the tracker refused (`failure reason`, or a UDP error packet): answer
    /// `BTCORE_ANNOUNCED_FAILED`. The reason is `failure_len` bytes at
    /// `failure_offset` in the caller's own response bytes.
    pub failure: u8,
    /// Offset of the failure reason in the response bytes.
    pub failure_offset: u32,
    /// Length of the failure reason.
    pub failure_len: u32,
}

/// The announce request of an `ANNOUNCE` action.
fn request(a: &btcore_action) -> Result<AnnounceRequest<'static>, btcore_result> {
    if a.kind != BTCORE_ACTION_ANNOUNCE {
        return Err(BTCORE_INVALID_PARAMETER);
    }
    Ok(AnnounceRequest {
        info_hash: InfoHash(a.info_hash),
        peer_id: PeerId(a.peer_id),
        port: a.port,
        uploaded: a.uploaded,
        downloaded: a.downloaded,
        left: a.left,
        event: match a.announce_event {
            BTCORE_ANNOUNCE_NONE => None,
            BTCORE_ANNOUNCE_STARTED => Some(Event::Started),
            BTCORE_ANNOUNCE_COMPLETED => Some(Event::Completed),
            BTCORE_ANNOUNCE_STOPPED => Some(Event::Stopped),
            _ => return Err(BTCORE_INVALID_PARAMETER),
        },
        compact: true,
        numwant: Some(a.numwant),
        key: Some(a.key),
        tracker_id: None,
    })
}

/// Reads the action a caller passes.
///
/// # Safety
/// `a` is NULL or valid for reading one `btcore_action` whose `kind` is a valid kind.
unsafe fn action<'a>(a: *const btcore_action) -> Result<&'a btcore_action, btcore_result> {
    if a.is_null() {
        return Err(BTCORE_NULL_PARAMETER);
    }
    // SAFETY: non-NULL (checked above) and valid for one read of an action the library
    // filled, as the caller promises.
    Ok(unsafe { &*a })
}

/// Writes the HTTP announce URL of the `ANNOUNCE` action `*a` (its `tracker` URL with
/// the BEP 3 query appended), NUL-terminated, into `buf` and its length without the
/// NUL to `*out_len`. Call it before the next `btcore_sansio_poll_actions` (the action's
/// `tracker` points into the handle until then). `BTCORE_BUFFER_TOO_SMALL` with the
/// length needed (plus one for the NUL) in `*out_len`; `BTCORE_INVALID_PARAMETER` for
/// another kind of action or a URL that is not UTF-8. Thread-safe.
///
/// # Safety
///
/// - `a` is NULL or points to an action filled by `btcore_sansio_poll_actions`, whose
///   `tracker` is still valid.
/// - `buf` is valid for writes of `cap` bytes (it may be NULL when `cap` is 0).
/// - `out_len` is NULL or valid for writing one `usize`.
#[no_mangle]
pub unsafe extern "C" fn btcore_tracker_announce_url(
    a: *const btcore_action,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard(|| {
        // SAFETY: as this function's contract requires.
        let a = unsafe { action(a) }?;
        let out_len = non_null(out_len)?;
        let req = request(a)?;
        // SAFETY: `tracker` holds `tracker_len` bytes that the handle keeps until its next
        // poll, as this function's contract requires.
        let base = unsafe { bytes(a.tracker, a.tracker_len) }?;
        let mut url = String::new();
        http::write_announce_url(base, &req, &mut url).map_err(|_| BTCORE_INVALID_PARAMETER)?;
        let mut with_nul = url.into_bytes();
        with_nul.push(0);
        // SAFETY: `buf` is valid for writes of `cap` bytes or `cap` is 0 and `out_len` is
        // non-NULL and valid for one write, as this function's contract requires.
        let r = unsafe { copy_out(&with_nul, buf.cast::<u8>(), cap, out_len) };
        // The length reported is the string's, without its NUL.
        // SAFETY: `out_len` is non-NULL (checked above) and `copy_out` wrote it.
        unsafe { out_len.write(out_len.read() - 1) };
        r
    })
}

/// Copies peers into the caller's buffer and counts them.
fn fill(
    peers: impl Iterator<Item = SocketAddr>,
    dst: &mut [MaybeUninit<btcore_addr>],
    reply: &mut btcore_tracker_reply,
) {
    let mut total = 0u32;
    for p in peers.filter(|p| p.port() != 0) {
        if let Some(d) = dst.get_mut(total as usize) {
            d.write(btcore_addr::from_socket(p));
            reply.num_peers += 1;
        }
        total = total.saturating_add(1);
    }
    reply.total_peers = total;
}

fn failure_at(body: &[u8], reason: &[u8], reply: &mut btcore_tracker_reply) {
    reply.failure = 1;
    let at = (reason.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    if at <= body.len() {
        reply.failure_offset = u32::try_from(at).unwrap_or(0);
        reply.failure_len = u32::try_from(reason.len()).unwrap_or(0);
    }
}

/// Parses the body of an HTTP tracker's answer to an announce into `*out`, the peers
/// (IPv4 and IPv6, port 0 dropped) into `peers` (`cap` of them). A tracker's refusal is
/// not an error: `out->failure` says it. A body that is not a valid announce answer is
/// `BTCORE_INVALID_PARAMETER`. Thread-safe.
///
/// # Safety
///
/// - `body` is valid for reads of `len` bytes (it may be NULL when `len` is 0).
/// - `peers` is valid for writes of `cap` `btcore_addr`s (it may be NULL when `cap` is 0).
/// - `out` is NULL or valid for writing one `btcore_tracker_reply`.
#[no_mangle]
pub unsafe extern "C" fn btcore_tracker_parse_announce(
    body: *const u8,
    len: usize,
    peers: *mut btcore_addr,
    cap: usize,
    out: *mut btcore_tracker_reply,
) -> btcore_result {
    guard(|| {
        // SAFETY: `body` is valid for reads of `len` bytes or `len` is 0, as this
        // function's contract requires.
        let body = unsafe { bytes(body, len) }?;
        // SAFETY: `peers` is valid for writes of `cap` elements or `cap` is 0, as this
        // function's contract requires.
        let dst = unsafe { out_uninit(peers, cap) }?;
        let out = non_null(out)?;
        // A value takes at least two bytes of bencode (`0:`, `ie` ...), so half the
        // body's length in tokens always suffices; capped as the std host's tracker
        // client caps them (about 2,000 dictionary-form peers, any number of compact
        // ones): a larger answer is refused, not parsed with an allocation it chose.
        let mut tokens = vec![Token::default(); (body.len() / 2 + 2).min(MAX_TOKENS)];
        let mut reply = btcore_tracker_reply {
            seeders: u32::MAX,
            leechers: u32::MAX,
            ..Default::default()
        };
        match http::parse_announce_response(body, &mut tokens).map_err(invalid)? {
            http::AnnounceResponse::Failure(f) => failure_at(body, f.reason, &mut reply),
            http::AnnounceResponse::Success(ok) => {
                reply.interval_secs = ok.interval_secs;
                reply.min_interval_secs = ok.min_interval_secs.unwrap_or(0);
                reply.seeders = ok.complete.unwrap_or(u32::MAX);
                reply.leechers = ok.incomplete.unwrap_or(u32::MAX);
                fill(ok.peers(), dst, &mut reply);
            }
        }
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(reply) };
        Ok(())
    })
}

fn invalid(_: TrackerError) -> btcore_result {
    BTCORE_INVALID_PARAMETER
}

/// Writes a `len`-byte packet built by `f` into the caller's buffer.
///
/// # Safety
/// `buf` is valid for writes of `cap` bytes or `cap` is 0; `out_len` NULL or valid for
/// one write.
unsafe fn packet(
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
    f: impl FnOnce(&mut [u8]) -> Result<usize, TrackerError>,
) -> Result<(), btcore_result> {
    let out_len = non_null(out_len)?;
    let mut p = [0u8; 128];
    let n = f(&mut p).map_err(invalid)?;
    // SAFETY: as this function's contract requires.
    unsafe { copy_out(&p[..n], buf, cap, out_len) }
}

/// Writes a BEP 15 connect request with transaction id `txid` (16 bytes) into `buf`
/// and its length to `*out_len`. Thread-safe.
///
/// # Safety
///
/// - `buf` is valid for writes of `cap` bytes (it may be NULL when `cap` is 0).
/// - `out_len` is NULL or valid for writing one `usize`.
#[no_mangle]
pub unsafe extern "C" fn btcore_tracker_udp_connect_request(
    txid: u32,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    // SAFETY: as this function's contract requires.
    guard(|| unsafe { packet(buf, cap, out_len, |p| udp::encode_connect(txid, p)) })
}

/// Reads a UDP tracker's answer to the connect request `txid` into
/// `*out_connection_id`. A packet of another transaction, another action or the wrong
/// length is `BTCORE_INVALID_PARAMETER` (ignore it and keep waiting); an error packet
/// is `BTCORE_NOT_FOUND`. Thread-safe.
///
/// # Safety
///
/// - `data` is valid for reads of `len` bytes (it may be NULL when `len` is 0).
/// - `out_connection_id` is NULL or valid for writing one `u64`.
#[no_mangle]
pub unsafe extern "C" fn btcore_tracker_udp_parse_connect(
    data: *const u8,
    len: usize,
    txid: u32,
    out_connection_id: *mut u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: `data` is valid for reads of `len` bytes or `len` is 0, as this
        // function's contract requires.
        let data = unsafe { bytes(data, len) }?;
        let out = non_null(out_connection_id)?;
        match udp::parse_response(data, txid, udp::Action::Connect, false).map_err(invalid)? {
            udp::UdpResponse::Connect { connection_id } => {
                // SAFETY: `out` is non-NULL (checked above) and valid for one write, as
                // this function's contract requires.
                unsafe { out.write(connection_id) };
                Ok(())
            }
            udp::UdpResponse::Error(_) => Err(BTCORE_NOT_FOUND),
            _ => Err(BTCORE_INVALID_PARAMETER),
        }
    })
}

/// Writes the BEP 15 announce request of the `ANNOUNCE` action `*a` (98 bytes) with
/// `connection_id` and transaction id `txid` into `buf` and its length to `*out_len`.
/// Thread-safe.
///
/// # Safety
///
/// - `a` is NULL or points to an action filled by `btcore_sansio_poll_actions`.
/// - `buf` is valid for writes of `cap` bytes (it may be NULL when `cap` is 0).
/// - `out_len` is NULL or valid for writing one `usize`.
#[no_mangle]
pub unsafe extern "C" fn btcore_tracker_udp_announce_request(
    a: *const btcore_action,
    connection_id: u64,
    txid: u32,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard(|| {
        // SAFETY: as this function's contract requires.
        let a = unsafe { action(a) }?;
        let req = request(a)?;
        // SAFETY: as this function's contract requires.
        unsafe {
            packet(buf, cap, out_len, |p| {
                udp::encode_announce(connection_id, txid, &req, p)
            })
        }
    })
}

/// Parses a UDP tracker's answer to the announce `txid` into `*out`, the peers into
/// `peers` (`cap` of them); `ipv6` is 1 when the tracker was reached over IPv6 (18-byte
/// peer entries). An error packet sets `out->failure`. A packet of another
/// transaction, another action or the wrong length is `BTCORE_INVALID_PARAMETER`
/// (ignore it and keep waiting). Thread-safe.
///
/// # Safety
///
/// - `data` is valid for reads of `len` bytes (it may be NULL when `len` is 0).
/// - `peers` is valid for writes of `cap` `btcore_addr`s (it may be NULL when `cap` is 0).
/// - `out` is NULL or valid for writing one `btcore_tracker_reply`.
#[no_mangle]
pub unsafe extern "C" fn btcore_tracker_udp_parse_announce(
    data: *const u8,
    len: usize,
    txid: u32,
    ipv6: u8,
    peers: *mut btcore_addr,
    cap: usize,
    out: *mut btcore_tracker_reply,
) -> btcore_result {
    guard(|| {
        // SAFETY: `data` is valid for reads of `len` bytes or `len` is 0, as this
        // function's contract requires.
        let data = unsafe { bytes(data, len) }?;
        // SAFETY: `peers` is valid for writes of `cap` elements or `cap` is 0, as this
        // function's contract requires.
        let dst = unsafe { out_uninit(peers, cap) }?;
        let out = non_null(out)?;
        let mut reply = btcore_tracker_reply {
            seeders: u32::MAX,
            leechers: u32::MAX,
            ..Default::default()
        };
        match udp::parse_response(data, txid, udp::Action::Announce, ipv6 != 0).map_err(invalid)? {
            udp::UdpResponse::Announce(a) => {
                reply.interval_secs = a.interval_secs;
                reply.seeders = a.seeders;
                reply.leechers = a.leechers;
                fill(a.peers, dst, &mut reply);
            }
            udp::UdpResponse::Error(f) => failure_at(data, f.reason, &mut reply),
            _ => return Err(BTCORE_INVALID_PARAMETER),
        }
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(reply) };
        Ok(())
    })
}
