//! Tracker codecs: HTTP announce and scrape, the UDP tracker protocol, and tiers.
//!
//! Everything here is sans-IO and needs no allocator (except `tiers::TrackerList`,
//! behind the `alloc` feature): requests are written into caller buffers, responses
//! are parsed in place and borrow from the received bytes, peers come out of
//! iterators that decode each address on the fly. Time comes in as `now_ms: u64` and
//! randomness (transaction ids, shuffling) through caller-supplied values or closures.
//!
//! - [`http`]: the HTTP tracker protocol of
//!   [BEP 3](https://www.bittorrent.org/beps/bep_0003.html): announce URL building with
//!   byte-wise percent-encoding, the bencoded announce response with compact peers
//!   ([BEP 23](https://www.bittorrent.org/beps/bep_0023.html)), IPv6 `peers6`
//!   ([BEP 7](https://www.bittorrent.org/beps/bep_0007.html)) and the original list of
//!   dictionaries; the scrape convention of
//!   [BEP 48](https://www.bittorrent.org/beps/bep_0048.html).
//! - [`udp`]: the UDP tracker protocol of
//!   [BEP 15](https://www.bittorrent.org/beps/bep_0015.html): packet codecs and a small
//!   state machine, [`udp::UdpTrackerClient`], for one tracker (connect, connection id
//!   lifetime, the `15 * 2^n` s retransmission schedule).
//! - [`tiers`]: the multitracker extension of
//!   [BEP 12](https://www.bittorrent.org/beps/bep_0012.html) (shuffled tiers, promotion
//!   of the tracker that answered) and [`tiers::AnnounceState`], the announce policy:
//!   which event to send next and when to re-announce.
//!
//! Shared by both transports: [`AnnounceRequest`], [`Event`], [`CompactPeers`],
//! [`ScrapeStats`], [`Failure`] and the error type [`TrackerError`].

pub mod http;
#[cfg(feature = "alloc")]
pub mod server;
pub mod tiers;
pub mod udp;

use core::fmt;
use core::iter::FusedIterator;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::bencode::DecodeError;
use crate::ids::{InfoHash, PeerId};

/// The `event` of an announce (BEP 3; the UDP codes are BEP 15's).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Event {
    /// The first announce of a session.
    Started,
    /// The download finished (not sent if the torrent was complete when started).
    Completed,
    /// The client is leaving the swarm.
    Stopped,
}

impl Event {
    /// The value of the HTTP `event=` parameter.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Completed => "completed",
            Self::Stopped => "stopped",
        }
    }

    /// The BEP 15 code (`0` is "none", used for `Option::None`).
    pub const fn udp_code(event: Option<Self>) -> u32 {
        match event {
            None => 0,
            Some(Self::Completed) => 1,
            Some(Self::Started) => 2,
            Some(Self::Stopped) => 3,
        }
    }
}

/// One announce, for either transport.
///
/// The UDP encoder ignores `compact` (UDP is always compact) and `tracker_id`
/// (HTTP only); `key: None` is sent as `0` and `numwant: None` as `-1` there.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AnnounceRequest<'a> {
    /// The torrent.
    pub info_hash: InfoHash,
    /// Our peer id.
    pub peer_id: PeerId,
    /// The port we accept peer connections on.
    pub port: u16,
    /// Bytes uploaded this session.
    pub uploaded: u64,
    /// Bytes downloaded this session.
    pub downloaded: u64,
    /// Bytes still missing.
    pub left: u64,
    /// The event, if any.
    pub event: Option<Event>,
    /// Ask for compact peers (BEP 23); `true` by default.
    pub compact: bool,
    /// How many peers we want; `None` lets the tracker choose.
    pub numwant: Option<u32>,
    /// A per-session random key that lets the tracker recognise us across IP changes.
    pub key: Option<u32>,
    /// The `tracker id` a previous response gave us (HTTP only).
    pub tracker_id: Option<&'a [u8]>,
}

impl AnnounceRequest<'_> {
    /// A request with no event, no transfer counts, `compact` on and nothing optional.
    pub const fn new(info_hash: InfoHash, peer_id: PeerId, port: u16) -> Self {
        Self {
            info_hash,
            peer_id,
            port,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: None,
            compact: true,
            numwant: None,
            key: None,
            tracker_id: None,
        }
    }
}

/// Seeders, completed downloads and leechers of one torrent, from a scrape.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct ScrapeStats {
    /// Peers with the whole torrent (seeders).
    pub complete: u32,
    /// How many times the torrent was downloaded to completion.
    pub downloaded: u32,
    /// Peers still downloading (leechers).
    pub incomplete: u32,
}

/// A tracker's refusal: the `failure reason` of an HTTP response (BEP 3) or the
/// message of a UDP error packet (BEP 15), borrowed from the response.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Failure<'a> {
    /// The raw text (meant to be UTF-8, not guaranteed).
    pub reason: &'a [u8],
}

impl<'a> Failure<'a> {
    /// The text, if it is valid UTF-8.
    pub fn reason_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.reason).ok()
    }
}

impl fmt::Display for Failure<'_> {
    /// Writes the text, with invalid UTF-8 shown as U+FFFD.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.reason.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\u{FFFD}")?;
            }
        }
        Ok(())
    }
}

/// Why a tracker message could not be built or understood.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum TrackerError {
    /// The HTTP body is not valid bencode (the error carries the byte offset; a
    /// [`crate::bencode::ErrorKind::TooManyTokens`] means the token buffer was too small).
    Bencode(DecodeError),
    /// The HTTP body is not a dictionary.
    NotADict,
    /// A required field is missing (`files` of a scrape response).
    MissingField,
    /// `peers` / `peers6` have the wrong type, or a compact string's length is not a
    /// multiple of 6 (IPv4) or 18 (IPv6).
    BadPeers,
    /// A UDP packet is shorter than its action requires, or has a stray tail.
    BadLength,
    /// A UDP response whose transaction id is not the one we sent.
    WrongTransaction,
    /// A UDP response with an unexpected or unknown action.
    WrongAction,
    /// The tracker refused (the text is in [`Failure`]; this variant is what
    /// [`http::AnnounceResponse::ok`] and friends turn it into).
    TrackerFailure,
    /// The output buffer or writer is too small.
    BufferTooSmall,
    /// More info-hashes than one scrape can carry.
    TooManyHashes,
    /// An announce URL that is not UTF-8.
    InvalidUrl,
    /// A UDP datagram arrived while no request was outstanding.
    Unexpected,
}

impl TrackerError {
    /// A short description.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bencode(_) => "response is not valid bencode",
            Self::NotADict => "response is not a dictionary",
            Self::MissingField => "response lacks a required field",
            Self::BadPeers => "malformed peer list",
            Self::BadLength => "packet has the wrong length",
            Self::WrongTransaction => "wrong transaction id",
            Self::WrongAction => "unexpected action",
            Self::TrackerFailure => "tracker returned a failure",
            Self::BufferTooSmall => "output buffer too small",
            Self::TooManyHashes => "too many info-hashes for one scrape",
            Self::InvalidUrl => "announce URL is not UTF-8",
            Self::Unexpected => "no request outstanding",
        }
    }
}

impl fmt::Display for TrackerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bencode(e) => write!(f, "tracker: {e}"),
            other => write!(f, "tracker: {}", other.as_str()),
        }
    }
}

impl core::error::Error for TrackerError {}

impl From<DecodeError> for TrackerError {
    fn from(e: DecodeError) -> Self {
        Self::Bencode(e)
    }
}

/// Length of one compact IPv4 peer: 4 address bytes and a big-endian port (BEP 23).
pub(crate) const COMPACT_V4_LEN: usize = 6;
/// Length of one compact IPv6 peer: 16 address bytes and a big-endian port (BEP 7).
pub(crate) const COMPACT_V6_LEN: usize = 18;

/// Compact peers (BEP 23 / BEP 7 / BEP 15), decoded one by one from the borrowed bytes.
///
/// Entries are yielded as they are, port 0 included: filtering is the caller's policy.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CompactPeers<'a> {
    data: &'a [u8],
    v6: bool,
}

impl<'a> CompactPeers<'a> {
    /// 6-byte IPv4 entries; the length must be a multiple of 6.
    pub fn v4(data: &'a [u8]) -> Result<Self, TrackerError> {
        Self::new(data, false)
    }

    /// 18-byte IPv6 entries; the length must be a multiple of 18.
    pub fn v6(data: &'a [u8]) -> Result<Self, TrackerError> {
        Self::new(data, true)
    }

    /// Entries of the given family.
    pub fn new(data: &'a [u8], v6: bool) -> Result<Self, TrackerError> {
        let entry = if v6 { COMPACT_V6_LEN } else { COMPACT_V4_LEN };
        if data.len() % entry != 0 {
            return Err(TrackerError::BadPeers);
        }
        Ok(Self { data, v6 })
    }

    /// No peers.
    pub const fn empty() -> Self {
        Self {
            data: &[],
            v6: false,
        }
    }

    /// Whether the entries are IPv6.
    pub const fn is_v6(&self) -> bool {
        self.v6
    }

    /// The raw bytes still to be yielded.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.data
    }

    const fn entry_len(&self) -> usize {
        if self.v6 {
            COMPACT_V6_LEN
        } else {
            COMPACT_V4_LEN
        }
    }
}

impl Iterator for CompactPeers<'_> {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        if self.v6 {
            let (entry, rest) = self.data.split_first_chunk::<COMPACT_V6_LEN>()?;
            self.data = rest;
            let (ip, port) = entry.split_first_chunk::<16>()?;
            let port = u16::from_be_bytes(*port.first_chunk::<2>()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(*ip),
                port,
                0,
                0,
            )))
        } else {
            let (entry, rest) = self.data.split_first_chunk::<COMPACT_V4_LEN>()?;
            self.data = rest;
            let (ip, port) = entry.split_first_chunk::<4>()?;
            let port = u16::from_be_bytes(*port.first_chunk::<2>()?);
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(*ip), port)))
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.data.len() / self.entry_len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for CompactPeers<'_> {}
impl FusedIterator for CompactPeers<'_> {}

/// Percent-encodes `bytes` into `out`, keeping only the RFC 3986 unreserved characters
/// `A-Z a-z 0-9 - . _ ~` and writing every other byte as `%XX` (uppercase), byte by
/// byte, as Transmission does for info-hashes and peer ids.
pub fn percent_encode(bytes: &[u8], out: &mut impl fmt::Write) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.write_char(char::from(b))?;
        } else {
            out.write_char('%')?;
            out.write_char(char::from(HEX[usize::from(b >> 4)]))?;
            out.write_char(char::from(HEX[usize::from(b & 0xf)]))?;
        }
    }
    Ok(())
}

/// Clamps a bencoded or wire integer into a `u32` (negative values become `None`).
fn to_u32(v: i64) -> Option<u32> {
    if v < 0 {
        None
    } else {
        Some(u32::try_from(v).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::string::String;
    use std::vec::Vec;

    #[test]
    fn compact_v4_and_v6() {
        let v4 = [1, 2, 3, 4, 0x1a, 0xe1, 10, 0, 0, 1, 0, 80];
        let peers: Vec<_> = CompactPeers::v4(&v4).expect("v4").collect();
        assert_eq!(
            peers,
            [
                "1.2.3.4:6881".parse::<SocketAddr>().expect("addr"),
                "10.0.0.1:80".parse().expect("addr"),
            ]
        );
        assert_eq!(CompactPeers::v4(&v4).expect("v4").len(), 2);
        assert_eq!(CompactPeers::v4(&v4[..7]), Err(TrackerError::BadPeers));

        let mut v6 = [0u8; 18];
        v6[0] = 0x20;
        v6[1] = 0x01;
        v6[2] = 0x0d;
        v6[3] = 0xb8;
        v6[15] = 1;
        v6[16] = 0x1a;
        v6[17] = 0xe1;
        let peers: Vec<_> = CompactPeers::v6(&v6).expect("v6").collect();
        assert_eq!(
            peers,
            ["[2001:db8::1]:6881".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(CompactPeers::v6(&v6[..12]), Err(TrackerError::BadPeers));
        assert_eq!(CompactPeers::empty().count(), 0);
    }

    #[test]
    fn percent_encoding_is_bytewise() {
        let mut s = String::new();
        percent_encode(b"aZ09-._~ /%\x00\xff", &mut s).expect("write");
        assert_eq!(s, "aZ09-._~%20%2F%25%00%FF");
    }

    #[test]
    fn failure_display_is_lossy() {
        let f = Failure {
            reason: b"bad \xff torrent",
        };
        assert_eq!(std::format!("{f}"), "bad \u{FFFD} torrent");
        assert_eq!(f.reason_str(), None);
        assert_eq!(
            std::format!("{}", TrackerError::WrongTransaction),
            "tracker: wrong transaction id"
        );
    }
}
