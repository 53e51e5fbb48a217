//! The UDP tracker protocol ([BEP 15](https://www.bittorrent.org/beps/bep_0015.html)).
//!
//! # Packets
//!
//! All integers are big-endian. Requests are written into caller buffers by
//! [`encode_connect`] (16 bytes), [`encode_announce`] (`ANNOUNCE_LEN` = 98 bytes, no
//! BEP 41 extensions) and [`encode_scrape`] (16 + 20 per hash, at most
//! `MAX_SCRAPE_HASHES` = 74). [`parse_response`] checks, in this order, the minimum
//! length (8), the transaction id ([`TrackerError::WrongTransaction`]), the action (an
//! error packet, action 3, is accepted whatever was expected; any other action must be
//! the expected one, else [`TrackerError::WrongAction`]) and the action's own length:
//! connect at least 16 bytes, announce at least 20 with a peer list that is a whole
//! number of 6-byte (IPv4) or 18-byte (IPv6) entries ([`TrackerError::BadPeers`]);
//! which one is the caller's flag, as the entry size depends on the address family of
//! the socket the tracker was reached over; scrape 8 plus a whole number of 12-byte
//! entries ([`TrackerError::BadLength`]). Bytes after a connect response are ignored.
//!
//! # The client
//!
//! [`UdpTrackerClient`] runs one operation (announce or scrape) at a time against one
//! tracker, sans IO. It goes through these states ([`ConnState`]): *need connect* (no
//! connection id, or an expired one), *connecting* (a connect request is outstanding),
//! *connected* (a connection id received less than [`CONNECTION_ID_LIFETIME_MS`] = 60 s
//! ago: BEP 15 lets a client use it for one minute). A request whose connection id has
//! expired, first send or retransmission, is preceded by a new connect.
//!
//! Retransmission follows BEP 15: with no answer `15 * 2^n` seconds after a send, the
//! packet is sent again with `n + 1`, up to `n = 8` (3840 s); after the timeout of the
//! `n = 8` send the operation ends with [`UdpEvent::TimedOut`]. `n` counts every timeout
//! of the operation, connect and request alike, so an operation always ends.
//! Retransmissions reuse the transaction id, so a late answer to an earlier copy is
//! still accepted; every new transaction (a connect, a request after a connect, a new
//! operation) takes a fresh id from the caller's closure.
//!
//! Poll order, each time the host wakes up:
//!
//! 1. for every datagram received from the tracker's address,
//!    [`UdpTrackerClient::handle_datagram`]: `Ok(Some(event))` is a result for the host,
//!    `Ok(None)` is progress (a connection id), `Err(_)` means the datagram was not an
//!    answer to the outstanding request (stale, spoofed or malformed): drop it, the
//!    state is unchanged;
//! 2. [`UdpTrackerClient::handle_timeout`] with the current time (it does nothing before
//!    the deadline), which may yield [`UdpEvent::TimedOut`];
//! 3. [`UdpTrackerClient::poll_transmit`] until it returns `Ok(None)`, sending each packet;
//! 4. sleep until [`UdpTrackerClient::poll_timeout`] (an absolute time in ms; `None` when
//!    idle) or the next datagram.
//!
//! [`UdpTrackerClient::announce`] and [`UdpTrackerClient::scrape`] start an operation,
//! replacing any outstanding one (answers to the old one are then rejected); follow them
//! with step 3.

use core::iter::FusedIterator;

use super::http::{MAX_INTERVAL_SECS, MIN_INTERVAL_SECS};
use super::{AnnounceRequest, CompactPeers, Event, Failure, ScrapeStats, TrackerError};
use crate::ids::InfoHash;

/// The magic constant that starts a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// Length of a connect request and of a connect response.
pub(crate) const CONNECT_LEN: usize = 16;
/// Length of an announce request (without BEP 41 extensions).
pub(crate) const ANNOUNCE_LEN: usize = 98;
/// Most info-hashes in one scrape request (BEP 15).
pub(crate) const MAX_SCRAPE_HASHES: usize = 74;
/// How long a connection id may be used after it was received.
pub const CONNECTION_ID_LIFETIME_MS: u64 = 60_000;
/// The first retransmission timeout; the `n`-th is this times `2^n`.
pub(crate) const BASE_TIMEOUT_MS: u64 = 15_000;
/// The highest `n` of the retransmission schedule.
pub(crate) const MAX_RETRIES: u8 = 8;
/// Most info-hashes one [`UdpTrackerClient::scrape`] takes.
pub const CLIENT_MAX_SCRAPE: usize = 16;
/// A buffer of this size always fits what [`UdpTrackerClient::poll_transmit`] writes.
pub const CLIENT_MAX_PACKET: usize = 16 + 20 * CLIENT_MAX_SCRAPE;

/// The action field of BEP 15 packets.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Action {
    /// 0
    Connect,
    /// 1
    Announce,
    /// 2
    Scrape,
    /// 3
    Error,
}

impl Action {
    /// The wire code.
    pub const fn code(self) -> u32 {
        match self {
            Self::Connect => 0,
            Self::Announce => 1,
            Self::Scrape => 2,
            Self::Error => 3,
        }
    }

    /// The action of a wire code.
    pub const fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::Connect),
            1 => Some(Self::Announce),
            2 => Some(Self::Scrape),
            3 => Some(Self::Error),
            _ => None,
        }
    }
}

/// Writes into the front of a caller buffer, failing instead of panicking.
struct Cursor<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), TrackerError> {
        let end = self.pos + bytes.len();
        self.buf
            .get_mut(self.pos..end)
            .ok_or(TrackerError::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }
}

fn header(
    out: &mut [u8],
    len: usize,
    first: u64,
    action: Action,
    txid: u32,
) -> Result<Cursor<'_>, TrackerError> {
    if out.len() < len {
        return Err(TrackerError::BufferTooSmall);
    }
    let mut c = Cursor { buf: out, pos: 0 };
    c.put(&first.to_be_bytes())?;
    c.put(&action.code().to_be_bytes())?;
    c.put(&txid.to_be_bytes())?;
    Ok(c)
}

/// Writes a connect request; returns its length (16).
pub fn encode_connect(txid: u32, out: &mut [u8]) -> Result<usize, TrackerError> {
    let c = header(out, CONNECT_LEN, PROTOCOL_ID, Action::Connect, txid)?;
    Ok(c.pos)
}

/// Writes an announce request; returns its length (`ANNOUNCE_LEN`). The IP field is
/// 0 (the tracker uses the packet's source), `key: None` is 0, `numwant: None` is -1.
pub fn encode_announce(
    connection_id: u64,
    txid: u32,
    req: &AnnounceRequest<'_>,
    out: &mut [u8],
) -> Result<usize, TrackerError> {
    let mut c = header(out, ANNOUNCE_LEN, connection_id, Action::Announce, txid)?;
    c.put(req.info_hash.as_bytes())?;
    c.put(req.peer_id.as_bytes())?;
    c.put(&req.downloaded.to_be_bytes())?;
    c.put(&req.left.to_be_bytes())?;
    c.put(&req.uploaded.to_be_bytes())?;
    c.put(&Event::udp_code(req.event).to_be_bytes())?;
    c.put(&0u32.to_be_bytes())?;
    c.put(&req.key.unwrap_or(0).to_be_bytes())?;
    let num_want = req
        .numwant
        .map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX));
    c.put(&num_want.to_be_bytes())?;
    c.put(&req.port.to_be_bytes())?;
    Ok(c.pos)
}

/// Writes a scrape request for up to `MAX_SCRAPE_HASHES` torrents; returns its length.
pub fn encode_scrape(
    connection_id: u64,
    txid: u32,
    hashes: &[InfoHash],
    out: &mut [u8],
) -> Result<usize, TrackerError> {
    if hashes.len() > MAX_SCRAPE_HASHES {
        return Err(TrackerError::TooManyHashes);
    }
    let len = 16 + 20 * hashes.len();
    let mut c = header(out, len, connection_id, Action::Scrape, txid)?;
    for h in hashes {
        c.put(h.as_bytes())?;
    }
    Ok(c.pos)
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..)?.first_chunk::<4>()?;
    Some(u32::from_be_bytes(*b))
}

fn be_u64(data: &[u8], at: usize) -> Option<u64> {
    let b = data.get(at..)?.first_chunk::<8>()?;
    Some(u64::from_be_bytes(*b))
}

/// The announce part of a response.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UdpAnnounceResponse<'a> {
    /// Seconds until the next announce, clamped like the HTTP one to
    /// `[MIN_INTERVAL_SECS, MAX_INTERVAL_SECS]` (30 s to 24 h).
    pub interval_secs: u32,
    /// Leechers, per the tracker.
    pub leechers: u32,
    /// Seeders, per the tracker.
    pub seeders: u32,
    /// The peers (IPv4 or IPv6 entries per the caller's flag).
    pub peers: CompactPeers<'a>,
}

/// The entries of a scrape response, in the order of the request's hashes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UdpScrapeResponse<'a> {
    data: &'a [u8],
}

impl UdpScrapeResponse<'_> {
    /// Number of entries.
    pub const fn len(&self) -> usize {
        self.data.len() / 12
    }

    /// Whether there are none.
    pub const fn is_empty(&self) -> bool {
        self.data.len() < 12
    }
}

impl Iterator for UdpScrapeResponse<'_> {
    type Item = ScrapeStats;

    fn next(&mut self) -> Option<ScrapeStats> {
        let (entry, rest) = self.data.split_first_chunk::<12>()?;
        self.data = rest;
        Some(ScrapeStats {
            complete: be_u32(entry, 0)?,
            downloaded: be_u32(entry, 4)?,
            incomplete: be_u32(entry, 8)?,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len(), Some(self.len()))
    }
}

impl ExactSizeIterator for UdpScrapeResponse<'_> {}
impl FusedIterator for UdpScrapeResponse<'_> {}

/// A parsed response.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum UdpResponse<'a> {
    /// The connection id to use for the next minute.
    Connect {
        /// The id.
        connection_id: u64,
    },
    /// An announce answer.
    Announce(UdpAnnounceResponse<'a>),
    /// A scrape answer.
    Scrape(UdpScrapeResponse<'a>),
    /// An error packet: the tracker's message.
    Error(Failure<'a>),
}

/// Parses a response to the request with transaction id `txid` and action `expect`;
/// `ipv6` says whether the tracker was reached over IPv6 (18-byte peer entries).
pub fn parse_response(
    data: &[u8],
    txid: u32,
    expect: Action,
    ipv6: bool,
) -> Result<UdpResponse<'_>, TrackerError> {
    let (Some(action), Some(got_txid)) = (be_u32(data, 0), be_u32(data, 4)) else {
        return Err(TrackerError::BadLength);
    };
    if got_txid != txid {
        return Err(TrackerError::WrongTransaction);
    }
    let action = Action::from_code(action).ok_or(TrackerError::WrongAction)?;
    if action != expect && action != Action::Error {
        return Err(TrackerError::WrongAction);
    }
    let body = data.get(8..).unwrap_or_default();
    match action {
        Action::Connect => {
            let connection_id = be_u64(data, 8).ok_or(TrackerError::BadLength)?;
            Ok(UdpResponse::Connect { connection_id })
        }
        Action::Announce => {
            let (Some(interval), Some(leechers), Some(seeders)) =
                (be_u32(data, 8), be_u32(data, 12), be_u32(data, 16))
            else {
                return Err(TrackerError::BadLength);
            };
            let peers = CompactPeers::new(data.get(20..).unwrap_or_default(), ipv6)?;
            Ok(UdpResponse::Announce(UdpAnnounceResponse {
                interval_secs: interval.clamp(MIN_INTERVAL_SECS, MAX_INTERVAL_SECS),
                leechers,
                seeders,
                peers,
            }))
        }
        Action::Scrape => {
            if body.len() % 12 != 0 {
                return Err(TrackerError::BadLength);
            }
            Ok(UdpResponse::Scrape(UdpScrapeResponse { data: body }))
        }
        Action::Error => Ok(UdpResponse::Error(Failure { reason: body })),
    }
}

/// Where the client stands with its tracker's connection id.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConnState {
    /// No valid connection id and no connect outstanding.
    NeedConnect,
    /// A connect request is outstanding (or due to be retransmitted).
    Connecting,
    /// A valid connection id.
    Connected {
        /// The id.
        connection_id: u64,
        /// When it stops being used (ms, the caller's clock).
        expires_ms: u64,
    },
}

/// What an operation of a [`UdpTrackerClient`] came to.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum UdpEvent<'a> {
    /// The announce succeeded.
    Announced(UdpAnnounceResponse<'a>),
    /// The scrape succeeded; entries follow the order of the hashes given.
    Scraped(UdpScrapeResponse<'a>),
    /// The tracker sent an error packet.
    Failed(Failure<'a>),
    /// No answer after the whole retransmission schedule.
    TimedOut,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Connect,
    Request,
}

#[derive(Clone, Debug)]
enum OpKind {
    Announce(AnnounceRequest<'static>),
    /// The hashes are the client's `scrape_hashes`.
    Scrape,
}

#[derive(Clone, Debug)]
struct Op {
    kind: OpKind,
    stage: Stage,
    /// The transaction id of the current request; `None` until it is first sent.
    txid: Option<u32>,
    /// `n` of the retransmission schedule.
    attempt: u8,
    /// Whether a (re)transmission is due.
    send_due: bool,
    /// When the outstanding request times out, or when the due send became due.
    deadline_ms: u64,
}

/// A sans-IO BEP 15 client for one tracker (see the module docs for the poll order).
#[derive(Clone, Debug)]
pub struct UdpTrackerClient {
    ipv6: bool,
    max_retries: u8,
    base_timeout_ms: u64,
    connection: Option<(u64, u64)>,
    op: Option<Op>,
    scrape_hashes: heapless::Vec<InfoHash, CLIENT_MAX_SCRAPE>,
}

impl UdpTrackerClient {
    /// A client for a tracker reached over IPv6 (`ipv6 = true`, 18-byte peer entries)
    /// or IPv4, with the full BEP 15 schedule (`MAX_RETRIES`).
    pub const fn new(ipv6: bool) -> Self {
        Self {
            ipv6,
            max_retries: MAX_RETRIES,
            base_timeout_ms: BASE_TIMEOUT_MS,
            connection: None,
            op: None,
            scrape_hashes: heapless::Vec::new(),
        }
    }

    /// Gives up after the timeout of the send with `n = max_retries` (at most
    /// `MAX_RETRIES`); many clients use fewer than BEP 15's eight retries.
    pub const fn with_max_retries(mut self, max_retries: u8) -> Self {
        self.max_retries = if max_retries < MAX_RETRIES {
            max_retries
        } else {
            MAX_RETRIES
        };
        self
    }

    /// Uses `base_ms` (at least 1) instead of BEP 15's `BASE_TIMEOUT_MS` as the first
    /// retransmission timeout; the `n`-th is still `base_ms * 2^n`. A host that bounds
    /// each announce by a deadline shorter than 15 s uses it to retransmit within it.
    pub const fn with_base_timeout_ms(mut self, base_ms: u64) -> Self {
        self.base_timeout_ms = if base_ms == 0 { 1 } else { base_ms };
        self
    }

    /// Takes a connection id the host cached from an earlier client for the same
    /// tracker (see [`UdpTrackerClient::conn_state`]); it is used until `expires_ms`.
    /// Call before starting an operation.
    pub fn set_connection(&mut self, connection_id: u64, expires_ms: u64) {
        self.connection = Some((connection_id, expires_ms));
    }

    fn valid_connection(&self, now_ms: u64) -> Option<u64> {
        self.connection
            .filter(|&(_, expires)| now_ms < expires)
            .map(|(id, _)| id)
    }

    fn start(&mut self, kind: OpKind, now_ms: u64) {
        let stage = if self.valid_connection(now_ms).is_some() {
            Stage::Request
        } else {
            Stage::Connect
        };
        self.op = Some(Op {
            kind,
            stage,
            txid: None,
            attempt: 0,
            send_due: true,
            deadline_ms: now_ms,
        });
    }

    /// Starts an announce (replacing any outstanding operation). `tracker_id` and
    /// `compact` are HTTP-only and ignored.
    pub fn announce(&mut self, req: &AnnounceRequest<'_>, now_ms: u64) {
        let req = AnnounceRequest {
            info_hash: req.info_hash,
            peer_id: req.peer_id,
            port: req.port,
            uploaded: req.uploaded,
            downloaded: req.downloaded,
            left: req.left,
            event: req.event,
            compact: true,
            numwant: req.numwant,
            key: req.key,
            tracker_id: None,
        };
        self.start(OpKind::Announce(req), now_ms);
    }

    /// Starts a scrape of up to [`CLIENT_MAX_SCRAPE`] torrents (replacing any
    /// outstanding operation).
    pub fn scrape(&mut self, hashes: &[InfoHash], now_ms: u64) -> Result<(), TrackerError> {
        self.scrape_hashes =
            heapless::Vec::from_slice(hashes).map_err(|_| TrackerError::TooManyHashes)?;
        self.start(OpKind::Scrape, now_ms);
        Ok(())
    }

    /// Drops the outstanding operation, if any (the connection id is kept).
    pub fn cancel(&mut self) {
        self.op = None;
    }

    /// Whether an operation is outstanding.
    pub const fn is_busy(&self) -> bool {
        self.op.is_some()
    }

    /// The connection state at `now_ms`.
    pub fn conn_state(&self, now_ms: u64) -> ConnState {
        if let (Some(connection_id), Some((_, expires_ms))) =
            (self.valid_connection(now_ms), self.connection)
        {
            return ConnState::Connected {
                connection_id,
                expires_ms,
            };
        }
        match &self.op {
            Some(op) if op.stage == Stage::Connect && op.txid.is_some() => ConnState::Connecting,
            _ => ConnState::NeedConnect,
        }
    }

    /// The packet to send now, if any, written into `out` (at least
    /// [`CLIENT_MAX_PACKET`] bytes always suffice); returns its length. Takes a new
    /// transaction id from `next_txid` when a new transaction starts.
    pub fn poll_transmit(
        &mut self,
        now_ms: u64,
        out: &mut [u8],
        next_txid: &mut impl FnMut() -> u32,
    ) -> Result<Option<usize>, TrackerError> {
        let conn = self.valid_connection(now_ms);
        if conn.is_none() {
            self.connection = None;
        }
        let Some(op) = self.op.as_mut() else {
            return Ok(None);
        };
        if !op.send_due {
            return Ok(None);
        }
        if op.stage == Stage::Request && conn.is_none() {
            op.stage = Stage::Connect;
            op.txid = None;
        }
        let txid = match op.txid {
            Some(t) => t,
            None => {
                let t = next_txid();
                op.txid = Some(t);
                t
            }
        };
        let n = match (op.stage, conn, &op.kind) {
            (Stage::Request, Some(id), OpKind::Announce(req)) => {
                encode_announce(id, txid, req, out)?
            }
            (Stage::Request, Some(id), OpKind::Scrape) => {
                encode_scrape(id, txid, &self.scrape_hashes, out)?
            }
            _ => encode_connect(txid, out)?,
        };
        op.send_due = false;
        op.deadline_ms = now_ms.saturating_add(self.base_timeout_ms << op.attempt);
        Ok(Some(n))
    }

    /// Feeds a datagram received from the tracker. See the module docs: an `Err` means
    /// the datagram is to be dropped and leaves the state unchanged.
    pub fn handle_datagram<'d>(
        &mut self,
        now_ms: u64,
        data: &'d [u8],
    ) -> Result<Option<UdpEvent<'d>>, TrackerError> {
        let op = self.op.as_mut().ok_or(TrackerError::Unexpected)?;
        let txid = op.txid.ok_or(TrackerError::Unexpected)?;
        let expect = match (op.stage, &op.kind) {
            (Stage::Connect, _) => Action::Connect,
            (Stage::Request, OpKind::Announce(_)) => Action::Announce,
            (Stage::Request, OpKind::Scrape) => Action::Scrape,
        };
        let event = match parse_response(data, txid, expect, self.ipv6)? {
            UdpResponse::Connect { connection_id } => {
                self.connection = Some((
                    connection_id,
                    now_ms.saturating_add(CONNECTION_ID_LIFETIME_MS),
                ));
                op.stage = Stage::Request;
                op.txid = None;
                op.send_due = true;
                op.deadline_ms = now_ms;
                return Ok(None);
            }
            UdpResponse::Announce(a) => UdpEvent::Announced(a),
            UdpResponse::Scrape(s) => UdpEvent::Scraped(s),
            UdpResponse::Error(f) => UdpEvent::Failed(f),
        };
        self.op = None;
        Ok(Some(event))
    }

    /// Advances the retransmission schedule when the deadline has passed: schedules a
    /// retransmission, or ends the operation with [`UdpEvent::TimedOut`].
    pub fn handle_timeout(&mut self, now_ms: u64) -> Option<UdpEvent<'static>> {
        let op = self.op.as_mut()?;
        if op.send_due || now_ms < op.deadline_ms {
            return None;
        }
        if op.attempt >= self.max_retries {
            self.op = None;
            return Some(UdpEvent::TimedOut);
        }
        op.attempt += 1;
        op.send_due = true;
        None
    }

    /// When to wake up next (absolute ms): the retransmission deadline, or a time
    /// already past when a send is due. `None` when idle.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.op.as_ref().map(|op| op.deadline_ms)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::ids::PeerId;
    use proptest::prelude::*;
    use std::vec::Vec;

    const TX: u32 = 0xAABB_CCDD;

    fn req() -> AnnounceRequest<'static> {
        AnnounceRequest {
            uploaded: 0x0102,
            downloaded: 0x0304,
            left: 0x0506,
            event: Some(Event::Started),
            key: Some(0x1122_3344),
            ..AnnounceRequest::new(InfoHash([0x11; 20]), PeerId([0x22; 20]), 6881)
        }
    }

    #[test]
    fn connect_round_trip() {
        let mut out = [0u8; 16];
        assert_eq!(encode_connect(TX, &mut out), Ok(16));
        assert_eq!(
            out,
            [0x00, 0x00, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 0xAA, 0xBB, 0xCC, 0xDD]
        );
        assert_eq!(
            encode_connect(TX, &mut [0u8; 15]),
            Err(TrackerError::BufferTooSmall)
        );
        let resp = [0, 0, 0, 0, 0xAA, 0xBB, 0xCC, 0xDD, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            parse_response(&resp, TX, Action::Connect, false),
            Ok(UdpResponse::Connect {
                connection_id: 0x0102_0304_0506_0708
            })
        );
        assert_eq!(
            parse_response(&resp, TX ^ 1, Action::Connect, false),
            Err(TrackerError::WrongTransaction)
        );
        assert_eq!(
            parse_response(&resp[..15], TX, Action::Connect, false),
            Err(TrackerError::BadLength)
        );
        assert_eq!(
            parse_response(&resp[..7], TX, Action::Connect, false),
            Err(TrackerError::BadLength)
        );
        assert_eq!(
            parse_response(&resp, TX, Action::Announce, false),
            Err(TrackerError::WrongAction)
        );
        let mut bad = resp;
        bad[3] = 9;
        assert_eq!(
            parse_response(&bad, TX, Action::Connect, false),
            Err(TrackerError::WrongAction)
        );
    }

    #[test]
    fn announce_request_bytes() {
        let mut out = [0u8; 128];
        let n = encode_announce(0x0102_0304_0506_0708, TX, &req(), &mut out).expect("enc");
        assert_eq!(n, ANNOUNCE_LEN);
        let mut expected = Vec::new();
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        expected.extend_from_slice(&[0, 0, 0, 1, 0xAA, 0xBB, 0xCC, 0xDD]);
        expected.extend_from_slice(&[0x11; 20]);
        expected.extend_from_slice(&[0x22; 20]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x03, 0x04]); // downloaded
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x05, 0x06]); // left
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x01, 0x02]); // uploaded
        expected.extend_from_slice(&[0, 0, 0, 2]); // event: started
        expected.extend_from_slice(&[0, 0, 0, 0]); // ip
        expected.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]); // key
        expected.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]); // num_want -1
        expected.extend_from_slice(&[0x1A, 0xE1]); // port 6881
        assert_eq!(&out[..n], &expected[..]);

        let r = AnnounceRequest {
            event: Some(Event::Stopped),
            numwant: Some(u32::MAX),
            key: None,
            ..req()
        };
        let n = encode_announce(1, TX, &r, &mut out).expect("enc");
        assert_eq!(&out[80..84], &[0, 0, 0, 3]);
        assert_eq!(&out[88..92], &[0, 0, 0, 0]);
        assert_eq!(&out[92..96], &[0x7F, 0xFF, 0xFF, 0xFF]);
        assert_eq!(n, 98);
        assert_eq!(
            encode_announce(1, TX, &req(), &mut [0u8; 97]),
            Err(TrackerError::BufferTooSmall)
        );
    }

    #[test]
    fn announce_response_v4_v6() {
        let mut resp = Vec::from(&[0, 0, 0, 1, 0xAA, 0xBB, 0xCC, 0xDD][..]);
        resp.extend_from_slice(&[0, 0, 0x07, 0x08]); // interval 1800
        resp.extend_from_slice(&[0, 0, 0, 5]); // leechers
        resp.extend_from_slice(&[0, 0, 0, 7]); // seeders
        resp.extend_from_slice(&[1, 2, 3, 4, 0x1A, 0xE1]);
        resp.extend_from_slice(&[5, 6, 7, 8, 0, 80]);
        let Ok(UdpResponse::Announce(a)) = parse_response(&resp, TX, Action::Announce, false)
        else {
            panic!("announce");
        };
        assert_eq!((a.interval_secs, a.leechers, a.seeders), (1800, 5, 7));
        let peers: Vec<_> = a.peers.map(|p| std::format!("{p}")).collect();
        assert_eq!(peers, ["1.2.3.4:6881", "5.6.7.8:80"]);
        // The same 12 bytes are not a whole IPv6 entry.
        assert_eq!(
            parse_response(&resp, TX, Action::Announce, true),
            Err(TrackerError::BadPeers)
        );
        assert_eq!(
            parse_response(&resp[..19], TX, Action::Announce, false),
            Err(TrackerError::BadLength)
        );
        assert_eq!(
            parse_response(&resp[..25], TX, Action::Announce, false),
            Err(TrackerError::BadPeers)
        );

        let mut resp6 = Vec::from(&resp[..20]);
        resp6.extend_from_slice(&[0xFE, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
        resp6.extend_from_slice(&[0x1A, 0xE1]);
        let Ok(UdpResponse::Announce(a)) = parse_response(&resp6, TX, Action::Announce, true)
        else {
            panic!("announce6");
        };
        let peers: Vec<_> = a.peers.map(|p| std::format!("{p}")).collect();
        assert_eq!(peers, ["[fe80::9]:6881"]);
        // Interval 0 is clamped.
        let mut zero = Vec::from(&resp[..20]);
        zero[8..12].copy_from_slice(&[0, 0, 0, 0]);
        let Ok(UdpResponse::Announce(a)) = parse_response(&zero, TX, Action::Announce, false)
        else {
            panic!("announce");
        };
        assert_eq!((a.interval_secs, a.peers.len()), (MIN_INTERVAL_SECS, 0));
    }

    #[test]
    fn scrape_round_trip() {
        let hashes = [InfoHash([0x11; 20]), InfoHash([0x22; 20])];
        let mut out = [0u8; 64];
        let n = encode_scrape(0x0A0B, TX, &hashes, &mut out).expect("enc");
        assert_eq!(n, 56);
        assert_eq!(
            &out[..16],
            &[0, 0, 0, 0, 0, 0, 0x0A, 0x0B, 0, 0, 0, 2, 0xAA, 0xBB, 0xCC, 0xDD]
        );
        assert_eq!(&out[16..36], &[0x11; 20]);
        assert_eq!(&out[36..56], &[0x22; 20]);
        let many = [InfoHash::default(); 75];
        assert_eq!(
            encode_scrape(1, TX, &many, &mut [0u8; 2048]),
            Err(TrackerError::TooManyHashes)
        );
        assert_eq!(
            encode_scrape(1, TX, &many[..74], &mut [0u8; 2048]),
            Ok(16 + 74 * 20)
        );

        let resp = [
            0, 0, 0, 2, 0xAA, 0xBB, 0xCC, 0xDD, //
            0, 0, 0, 10, 0, 0, 0, 20, 0, 0, 0, 30, //
            0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3,
        ];
        let Ok(UdpResponse::Scrape(s)) = parse_response(&resp, TX, Action::Scrape, false) else {
            panic!("scrape");
        };
        assert_eq!(s.len(), 2);
        let stats: Vec<_> = s.collect();
        assert_eq!(
            stats,
            [
                ScrapeStats {
                    complete: 10,
                    downloaded: 20,
                    incomplete: 30
                },
                ScrapeStats {
                    complete: 1,
                    downloaded: 2,
                    incomplete: 3
                }
            ]
        );
        assert_eq!(
            parse_response(&resp[..27], TX, Action::Scrape, false),
            Err(TrackerError::BadLength)
        );
    }

    #[test]
    fn error_packet() {
        let resp = b"\x00\x00\x00\x03\xAA\xBB\xCC\xDDtorrent not registered";
        for expect in [Action::Connect, Action::Announce, Action::Scrape] {
            assert_eq!(
                parse_response(resp, TX, expect, false),
                Ok(UdpResponse::Error(Failure {
                    reason: b"torrent not registered"
                }))
            );
        }
        assert_eq!(
            parse_response(resp, 1, Action::Connect, false),
            Err(TrackerError::WrongTransaction)
        );
    }

    fn connect_resp(txid: u32, id: u64) -> Vec<u8> {
        let mut v = Vec::from(&[0, 0, 0, 0][..]);
        v.extend_from_slice(&txid.to_be_bytes());
        v.extend_from_slice(&id.to_be_bytes());
        v
    }

    fn announce_resp(txid: u32) -> Vec<u8> {
        let mut v = Vec::from(&[0, 0, 0, 1][..]);
        v.extend_from_slice(&txid.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0x07, 0x08, 0, 0, 0, 1, 0, 0, 0, 2]);
        v.extend_from_slice(&[9, 9, 9, 9, 0x1A, 0xE1]);
        v
    }

    /// Sends whatever is due; returns (action, txid) of the packet.
    fn send(
        c: &mut UdpTrackerClient,
        now: u64,
        rng: &mut impl FnMut() -> u32,
    ) -> Option<(u32, u32)> {
        let mut buf = [0u8; CLIENT_MAX_PACKET];
        let n = c.poll_transmit(now, &mut buf, rng).expect("transmit")?;
        assert!(c
            .poll_transmit(now, &mut buf, rng)
            .expect("transmit")
            .is_none());
        let p = &buf[..n];
        Some((be_u32(p, 8).expect("action"), be_u32(p, 12).expect("txid")))
    }

    fn counter() -> impl FnMut() -> u32 {
        let mut n = 100;
        move || {
            n += 1;
            n
        }
    }

    #[test]
    fn client_announce_flow() {
        let mut rng = counter();
        let mut c = UdpTrackerClient::new(false);
        assert_eq!(c.poll_timeout(), None);
        assert_eq!(send(&mut c, 0, &mut rng), None);
        c.announce(&req(), 1_000);
        assert_eq!(c.conn_state(1_000), ConnState::NeedConnect);
        assert_eq!(c.poll_timeout(), Some(1_000));
        assert_eq!(send(&mut c, 1_000, &mut rng), Some((0, 101)));
        assert_eq!(c.conn_state(1_000), ConnState::Connecting);
        assert_eq!(c.poll_timeout(), Some(16_000));
        // Stale or spoofed datagrams are rejected and change nothing.
        assert_eq!(
            c.handle_datagram(1_100, &connect_resp(7, 1)),
            Err(TrackerError::WrongTransaction)
        );
        assert_eq!(
            c.handle_datagram(1_100, &[0, 0, 0]),
            Err(TrackerError::BadLength)
        );
        assert_eq!(
            c.handle_datagram(1_200, &connect_resp(101, 0xC1D)),
            Ok(None)
        );
        assert_eq!(
            c.conn_state(1_200),
            ConnState::Connected {
                connection_id: 0xC1D,
                expires_ms: 61_200
            }
        );
        assert_eq!(send(&mut c, 1_200, &mut rng), Some((1, 102)));
        assert_eq!(
            c.handle_datagram(1_300, &announce_resp(101)),
            Err(TrackerError::WrongTransaction)
        );
        let resp = announce_resp(102);
        let ev = c.handle_datagram(1_300, &resp).expect("ok").expect("event");
        let UdpEvent::Announced(a) = ev else {
            panic!("announced");
        };
        assert_eq!((a.leechers, a.seeders, a.peers.len()), (1, 2, 1));
        assert!(!c.is_busy());
        assert_eq!(
            c.handle_datagram(1_400, &announce_resp(102)),
            Err(TrackerError::Unexpected)
        );
        // Within the minute the connection id is reused: no connect.
        c.announce(&req(), 30_000);
        assert_eq!(send(&mut c, 30_000, &mut rng), Some((1, 103)));
        // An error packet ends the operation with the tracker's text.
        let mut err = Vec::from(&[0, 0, 0, 3][..]);
        err.extend_from_slice(&103u32.to_be_bytes());
        err.extend_from_slice(b"go away");
        assert_eq!(
            c.handle_datagram(30_100, &err),
            Ok(Some(UdpEvent::Failed(Failure { reason: b"go away" })))
        );
    }

    #[test]
    fn client_retry_schedule() {
        let mut rng = counter();
        let mut c = UdpTrackerClient::new(false);
        c.announce(&req(), 0);
        assert_eq!(send(&mut c, 0, &mut rng), Some((0, 101)));
        let mut now = 0u64;
        let mut deadlines = Vec::new();
        while let Some(deadline) = c.poll_timeout() {
            // Nothing happens a millisecond early.
            assert_eq!(c.handle_timeout(deadline - 1), None);
            assert_eq!(send(&mut c, deadline - 1, &mut rng), None);
            now = deadline;
            deadlines.push(now / 1000);
            match c.handle_timeout(now) {
                Some(UdpEvent::TimedOut) => break,
                Some(other) => panic!("unexpected {other:?}"),
                None => {}
            }
            assert_eq!(c.poll_timeout(), Some(now));
            // Retransmission: same transaction id.
            assert_eq!(send(&mut c, now, &mut rng), Some((0, 101)));
        }
        assert_eq!(deadlines, [15, 45, 105, 225, 465, 945, 1905, 3825, 7665]);
        let gaps: Vec<_> = deadlines
            .iter()
            .scan(0, |prev, &d| {
                let g = d - *prev;
                *prev = d;
                Some(g)
            })
            .collect();
        assert_eq!(gaps, [15, 30, 60, 120, 240, 480, 960, 1920, 3840]);
        assert!(!c.is_busy());
        assert_eq!(c.poll_timeout(), None);
        assert_eq!(now, 7_665_000);

        let mut c = UdpTrackerClient::new(false).with_max_retries(1);
        c.scrape(&[InfoHash([1; 20])], 0).expect("scrape");
        assert_eq!(send(&mut c, 0, &mut rng), Some((0, 102)));
        assert_eq!(c.handle_timeout(15_000), None);
        assert_eq!(send(&mut c, 15_000, &mut rng), Some((0, 102)));
        assert_eq!(c.handle_timeout(45_000), Some(UdpEvent::TimedOut));
    }

    #[test]
    fn shorter_base_timeout_and_seeded_connection() {
        let mut rng = counter();
        let mut c = UdpTrackerClient::new(false).with_base_timeout_ms(2_000);
        c.set_connection(9, 60_000);
        assert_eq!(
            c.conn_state(0),
            ConnState::Connected {
                connection_id: 9,
                expires_ms: 60_000
            }
        );
        // The cached id skips the connect; retransmissions double from 2 s.
        c.announce(&req(), 0);
        assert_eq!(send(&mut c, 0, &mut rng), Some((1, 101)));
        assert_eq!(c.poll_timeout(), Some(2_000));
        assert_eq!(c.handle_timeout(2_000), None);
        assert_eq!(send(&mut c, 2_000, &mut rng), Some((1, 101)));
        assert_eq!(c.poll_timeout(), Some(6_000));
        // An expired seed is not used.
        let mut c = UdpTrackerClient::new(false);
        c.set_connection(9, 10);
        c.announce(&req(), 10);
        assert_eq!(send(&mut c, 10, &mut rng), Some((0, 102)));
    }

    #[test]
    fn connection_id_expires_after_a_minute() {
        let mut rng = counter();
        let mut c = UdpTrackerClient::new(false);
        c.announce(&req(), 0);
        assert_eq!(send(&mut c, 0, &mut rng), Some((0, 101)));
        assert_eq!(c.handle_datagram(0, &connect_resp(101, 5)), Ok(None));
        // The announce goes unanswered; retransmissions at 15 s and 45 s still use the
        // connection id, the one at 105 s needs a new connect first.
        assert_eq!(send(&mut c, 0, &mut rng), Some((1, 102)));
        assert_eq!(c.handle_timeout(15_000), None);
        assert_eq!(send(&mut c, 15_000, &mut rng), Some((1, 102)));
        assert_eq!(c.handle_timeout(45_000), None);
        assert_eq!(send(&mut c, 45_000, &mut rng), Some((1, 102)));
        assert_eq!(c.handle_timeout(105_000), None);
        assert_eq!(c.conn_state(105_000), ConnState::NeedConnect);
        assert_eq!(send(&mut c, 105_000, &mut rng), Some((0, 103)));
        assert_eq!(c.poll_timeout(), Some(105_000 + 120_000));
        assert_eq!(c.handle_datagram(106_000, &connect_resp(103, 6)), Ok(None));
        assert_eq!(send(&mut c, 106_000, &mut rng), Some((1, 104)));
        assert!(matches!(
            c.handle_datagram(106_500, &announce_resp(104)),
            Ok(Some(UdpEvent::Announced(_)))
        ));
        // A new announce 59.999 s after the connect reuses it; at 60 s it reconnects.
        c.announce(&req(), 165_999);
        assert_eq!(send(&mut c, 165_999, &mut rng), Some((1, 105)));
        c.announce(&req(), 166_000);
        assert_eq!(send(&mut c, 166_000, &mut rng), Some((0, 106)));
    }

    #[test]
    fn client_scrape_and_small_buffer() {
        let mut rng = counter();
        let mut c = UdpTrackerClient::new(true);
        assert_eq!(
            c.scrape(&[InfoHash::default(); CLIENT_MAX_SCRAPE + 1], 0),
            Err(TrackerError::TooManyHashes)
        );
        c.scrape(&[InfoHash([3; 20]); CLIENT_MAX_SCRAPE], 0)
            .expect("scrape");
        assert_eq!(
            c.poll_transmit(0, &mut [0u8; 8], &mut rng),
            Err(TrackerError::BufferTooSmall)
        );
        assert_eq!(send(&mut c, 0, &mut rng), Some((0, 101)));
        assert_eq!(c.handle_datagram(0, &connect_resp(101, 5)), Ok(None));
        let mut buf = [0u8; CLIENT_MAX_PACKET];
        assert_eq!(
            c.poll_transmit(0, &mut buf, &mut rng),
            Ok(Some(CLIENT_MAX_PACKET))
        );
        let mut resp = Vec::from(&[0, 0, 0, 2][..]);
        resp.extend_from_slice(&102u32.to_be_bytes());
        resp.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]);
        let Ok(Some(UdpEvent::Scraped(s))) = c.handle_datagram(1, &resp) else {
            panic!("scraped");
        };
        assert_eq!(s.len(), 1);
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..128),
            txid in any::<u32>(),
            v6 in any::<bool>(),
        ) {
            for expect in [Action::Connect, Action::Announce, Action::Scrape, Action::Error] {
                if let Ok(UdpResponse::Announce(a)) = parse_response(&data, txid, expect, v6) {
                    let _ = a.peers.count();
                }
                let _ = parse_response(&data, txid, expect, v6);
            }
            let mut c = UdpTrackerClient::new(v6);
            let mut rng = || txid;
            c.announce(&req(), 0);
            let mut buf = [0u8; CLIENT_MAX_PACKET];
            let _ = c.poll_transmit(0, &mut buf, &mut rng);
            let _ = c.handle_datagram(0, &data);
            let _ = c.poll_transmit(0, &mut buf, &mut rng);
            let _ = c.handle_datagram(0, &data);
        }
    }
}
