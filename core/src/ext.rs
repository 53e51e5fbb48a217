//! The BEP 10 extension protocol handshake and the BEP 9 metadata exchange.
//!
//! These codecs work on the payload of a [`Message::Extended`](crate::wire::Message)
//! (wire message id 20, the extended id byte already stripped): nothing here allocates;
//! parsed values borrow from the payload and encoders write into caller buffers. Only
//! `MetadataAssembler`, which owns the metadata being downloaded, needs the `alloc`
//! feature.
//!
//! Specifications:
//! - [BEP 10], section "handshake message": extended id 0 carries a bencoded dictionary.
//!   `m` maps extension names to the extended message ids *the sender* wants to receive
//!   them under; an id of 0 means the extension is disabled (a handshake may be sent
//!   again later to enable or disable extensions). The other keys used here are `p`
//!   (TCP listen port), `v` (client name and version), `yourip` (the address the sender
//!   sees the receiver as, 4 or 16 bytes) and `reqq` (how many outstanding requests the
//!   sender accepts). Unknown keys are ignored.
//! - [BEP 9], section "extension header": the `ut_metadata` entry in `m` and the
//!   `metadata_size` key (bytes of the info dictionary). Section "metadata": the
//!   metadata is handled in 16 KiB pieces ([`METADATA_PIECE_LEN`]), all full except the
//!   last. Section "extension message": bencoded dictionaries with `msg_type`
//!   (0 request, 1 data, 2 reject) and `piece`; a data message also has `total_size`
//!   and is followed by the piece's bytes. An unrecognized `msg_type` must be ignored
//!   ([`ExtError::UnknownMsgType`] is therefore not a peer fault).
//! - [BEP 11]: only the `ut_pex` name in `m` is recognized here.
//! - [BEP 55]: only the `ut_holepunch` name in `m` (its messages: `crate::holepunch`).
//! - [BEP 21]: the `upload_only` handshake key (a partial seed).
//!
//! # Leniency
//!
//! A handshake's advisory fields (`p`, `v`, `yourip`, `reqq`, `metadata_size`,
//! `upload_only`) of the wrong type or out of range are ignored (reported as absent),
//! as are malformed entries of `m`; only a payload that is not a bencoded dictionary, or
//! an `m` that is not a dictionary, is an error. `metadata_size` above
//! [`ExtConfig::max_metadata_size`] is ignored too: such a peer is simply not asked for
//! metadata. Metadata messages are checked strictly.
//!
//! [BEP 9]: https://www.bittorrent.org/beps/bep_0009.html
//! [BEP 10]: https://www.bittorrent.org/beps/bep_0010.html
//! [BEP 11]: https://www.bittorrent.org/beps/bep_0011.html
//! [BEP 55]: https://www.bittorrent.org/beps/bep_0055.html
//! [BEP 21]: https://www.bittorrent.org/beps/bep_0021.html

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use embedded_io::SliceWriteError;

use crate::bencode::{self, DecodeError, Dict, Encoder, Limits, Token};

#[cfg(feature = "alloc")]
use crate::ids::InfoHash;
#[cfg(feature = "alloc")]
use alloc::vec::Vec;

/// The extended message id of the extension handshake (BEP 10).
pub const EXT_HANDSHAKE_ID: u8 = 0;
/// The `m` key of the BEP 9 metadata extension.
pub(crate) const UT_METADATA: &[u8] = b"ut_metadata";
/// The `m` key of the peer exchange extension (BEP 11).
pub(crate) const UT_PEX: &[u8] = b"ut_pex";
use crate::holepunch::UT_HOLEPUNCH;
/// Size of a metadata piece (BEP 9, section "metadata"): 16 KiB.
pub const METADATA_PIECE_LEN: u32 = 16 * 1024;
/// Default bound on an accepted `metadata_size`: 16 MiB.
pub(crate) const DEFAULT_MAX_METADATA_SIZE: u32 = 16 << 20;
/// Default time after which a metadata request is offered to another peer: 20 s.
pub(crate) const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 20_000;
/// How many extensions besides `ut_metadata` and `ut_pex` a parsed handshake records.
pub const MAX_OTHER_EXTENSIONS: usize = 16;
/// Tokens used by [`ExtHandshake::parse`] (on the stack, 16 bytes each).
pub const HANDSHAKE_TOKENS: usize = 128;
/// Tokens used by [`MetadataMsg::parse`] (on the stack, 16 bytes each).
pub(crate) const METADATA_MSG_TOKENS: usize = 32;

/// Decoding bounds for extension payloads: shallow, and strings no longer than what a
/// payload can hold anyway.
const EXT_LIMITS: Limits = Limits {
    max_depth: 16,
    max_tokens: u32::MAX,
    max_string_len: 1 << 20,
    allow_trailing: false,
    max_unsorted_work: 10_000,
};

/// Configuration of the metadata exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtConfig {
    /// Largest `metadata_size` accepted from a peer (and by `MetadataAssembler`).
    /// Default `DEFAULT_MAX_METADATA_SIZE` (16 MiB).
    pub max_metadata_size: u32,
    /// How long a metadata piece request stays with one peer before
    /// `MetadataAssembler::next_request` offers the piece to another.
    /// Default `DEFAULT_REQUEST_TIMEOUT_MS`.
    pub request_timeout_ms: u64,
}

impl Default for ExtConfig {
    fn default() -> Self {
        Self {
            max_metadata_size: DEFAULT_MAX_METADATA_SIZE,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
        }
    }
}

/// Why an extension payload could not be parsed or written, or metadata not assembled.
///
/// [`ExtError::is_peer_fault`] tells whether the peer sent something invalid (the usual
/// reaction is to disconnect) or the error is local or to be ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExtError {
    /// The payload is not valid bencode (peer fault).
    Bencode(DecodeError),
    /// The payload is bencode but not a dictionary (peer fault).
    NotADict,
    /// A required key is missing (peer fault).
    MissingField(&'static str),
    /// A key has the wrong type or an out-of-range value (peer fault).
    BadField(&'static str),
    /// Bytes after a message that has none (peer fault).
    TrailingData,
    /// A BEP 9 `msg_type` this codec does not know. Not a peer fault: BEP 9 says
    /// unrecognized message types must be ignored.
    UnknownMsgType(i64),
    /// A metadata piece index beyond the metadata (peer fault).
    PieceOutOfRange {
        /// The piece index.
        piece: u32,
    },
    /// A metadata data message whose piece bytes have the wrong length: every piece is
    /// 16 KiB except the last, which holds the rest (peer fault).
    BadPieceLength {
        /// The piece index.
        piece: u32,
        /// The number of bytes received.
        len: usize,
    },
    /// A `metadata_size` or `total_size` of 0, above the configured maximum or beyond
    /// 32 bits (peer fault). Also fitting for a data message whose `total_size`
    /// differs from `MetadataAssembler::total_size` (the session checks that).
    BadMetadataSize {
        /// The announced size.
        size: i64,
    },
    /// The output buffer is too small (local).
    BufferTooSmall,
    /// The metadata buffer could not be allocated (local).
    OutOfMemory,
}

impl ExtError {
    /// Whether the peer is at fault (see each variant).
    #[must_use]
    pub const fn is_peer_fault(&self) -> bool {
        !matches!(
            self,
            Self::UnknownMsgType(_) | Self::BufferTooSmall | Self::OutOfMemory
        )
    }
}

impl fmt::Display for ExtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Bencode(e) => write!(f, "extension payload: {e}"),
            Self::NotADict => f.write_str("extension payload is not a dictionary"),
            Self::MissingField(k) => write!(f, "extension payload lacks key {k:?}"),
            Self::BadField(k) => write!(f, "extension payload has an invalid {k:?}"),
            Self::TrailingData => f.write_str("trailing bytes after extension message"),
            Self::UnknownMsgType(t) => write!(f, "unknown ut_metadata msg_type {t}"),
            Self::PieceOutOfRange { piece } => {
                write!(f, "metadata piece {piece} is beyond the metadata")
            }
            Self::BadPieceLength { piece, len } => {
                write!(f, "metadata piece {piece} has invalid length {len}")
            }
            Self::BadMetadataSize { size } => write!(f, "invalid metadata size {size}"),
            Self::BufferTooSmall => f.write_str("output buffer too small"),
            Self::OutOfMemory => f.write_str("cannot allocate the metadata buffer"),
        }
    }
}

impl core::error::Error for ExtError {}

impl From<DecodeError> for ExtError {
    fn from(e: DecodeError) -> Self {
        Self::Bencode(e)
    }
}

/// `sub`, a subslice of `payload` borrowed for a shorter time (through the token
/// buffer), re-borrowed from `payload` itself.
fn rebind<'a>(payload: &'a [u8], sub: &[u8]) -> &'a [u8] {
    let off = (sub.as_ptr() as usize).wrapping_sub(payload.as_ptr() as usize);
    off.checked_add(sub.len())
        .and_then(|end| payload.get(off..end))
        .unwrap_or_default()
}

fn root_dict<'a>(
    payload: &'a [u8],
    tokens: &'a mut [Token],
    allow_trailing: bool,
) -> Result<(Dict<'a>, usize), ExtError> {
    let limits = Limits {
        allow_trailing,
        ..EXT_LIMITS
    };
    let doc = bencode::decode(payload, tokens, &limits)?;
    let dict = doc.root().as_dict().ok_or(ExtError::NotADict)?;
    Ok((dict, doc.consumed()))
}

/// Writes with `f` into `out` and returns the number of bytes written.
fn encode_into<F>(out: &mut [u8], f: F) -> Result<usize, ExtError>
where
    F: FnOnce(&mut Encoder<&mut &mut [u8]>) -> Result<(), SliceWriteError>,
{
    let total = out.len();
    let mut w: &mut [u8] = out;
    f(&mut Encoder::new(&mut w)).map_err(|_| ExtError::BufferTooSmall)?;
    Ok(total - w.len())
}

// ---------------------------------------------------------------------------------------
// BEP 10 handshake
// ---------------------------------------------------------------------------------------

/// A peer's extension handshake (BEP 10, section "handshake message"), borrowed from
/// the payload of extended message 0.
///
/// Extension ids are the ids the *peer* wants to receive those messages under: send
/// `ut_metadata` messages to this peer with extended id `ut_metadata`. In each id field
/// `None` means the name was absent from `m` (for a re-sent handshake: unchanged) and
/// `Some(0)` that the peer disabled the extension; [`ExtHandshake::ut_metadata_id`] and
/// [`ExtHandshake::ut_pex_id`] give only enabled ids.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ExtHandshake<'a> {
    /// The `ut_metadata` id (BEP 9).
    pub ut_metadata: Option<u8>,
    /// The `ut_pex` id (BEP 11).
    pub ut_pex: Option<u8>,
    /// The `ut_holepunch` id (BEP 55).
    pub ut_holepunch: Option<u8>,
    /// Other entries of `m` (name, id), in payload order; at most
    /// [`MAX_OTHER_EXTENSIONS`], further ones are dropped.
    pub others: heapless::Vec<(&'a [u8], u8), MAX_OTHER_EXTENSIONS>,
    /// `metadata_size` (BEP 9), when in `1..=max_metadata_size`.
    pub metadata_size: Option<u32>,
    /// `p`: the peer's TCP listen port, when in `1..=65535`.
    pub listen_port: Option<u16>,
    /// `v`: client name and version (UTF-8 by the BEP, not checked).
    pub client: Option<&'a [u8]>,
    /// `yourip`: the address the peer sees us as.
    pub yourip: Option<IpAddr>,
    /// `ipv4`: the peer's own IPv4 address, as it says (4 bytes).
    pub ipv4: Option<Ipv4Addr>,
    /// `ipv6`: the peer's own IPv6 address, as it says (16 bytes).
    pub ipv6: Option<Ipv6Addr>,
    /// `reqq`: how many outstanding requests the peer accepts, when positive.
    pub reqq: Option<u32>,
    /// `upload_only` (BEP 21): the peer will not download (a seed or partial seed).
    pub upload_only: bool,
}

impl<'a> ExtHandshake<'a> {
    /// Parses an extension handshake payload, decoding into [`HANDSHAKE_TOKENS`] tokens
    /// on the stack (2 KiB). See the module docs for what is lenient.
    pub fn parse(payload: &'a [u8], config: &ExtConfig) -> Result<Self, ExtError> {
        let mut tokens = [Token::default(); HANDSHAKE_TOKENS];
        Self::parse_with(payload, &mut tokens, config)
    }

    /// Like [`ExtHandshake::parse`], decoding into the caller's token buffer (a payload
    /// of `n` bencode values needs `n` tokens).
    pub fn parse_with(
        payload: &'a [u8],
        tokens: &mut [Token],
        config: &ExtConfig,
    ) -> Result<Self, ExtError> {
        let (dict, _) = root_dict(payload, tokens, false)?;
        let mut hs = ExtHandshake::default();
        if let Some(m) = dict.get(b"m") {
            let m = m.as_dict().ok_or(ExtError::BadField("m"))?;
            for (name, v) in m {
                let Some(id) = v.as_int().and_then(|i| u8::try_from(i).ok()) else {
                    continue;
                };
                match name {
                    UT_METADATA => hs.ut_metadata = Some(id),
                    UT_PEX => hs.ut_pex = Some(id),
                    UT_HOLEPUNCH => hs.ut_holepunch = Some(id),
                    _ => {
                        let _ = hs.others.push((rebind(payload, name), id));
                    }
                }
            }
        }
        hs.metadata_size = dict
            .get_int(b"metadata_size")
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=config.max_metadata_size).contains(n));
        hs.listen_port = dict
            .get_int(b"p")
            .and_then(|n| u16::try_from(n).ok())
            .filter(|&p| p != 0);
        hs.client = dict.get_bytes(b"v").map(|v| rebind(payload, v));
        hs.yourip = dict.get_bytes(b"yourip").and_then(ip_from_bytes);
        hs.ipv4 = dict
            .get_bytes(b"ipv4")
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(Ipv4Addr::from);
        hs.ipv6 = dict
            .get_bytes(b"ipv6")
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Ipv6Addr::from);
        hs.reqq = dict
            .get_int(b"reqq")
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n != 0);
        hs.upload_only = dict.get_int(b"upload_only").is_some_and(|n| n != 0);
        Ok(hs)
    }

    /// The peer's `ut_metadata` id, if it announced one and did not disable it.
    pub fn ut_metadata_id(&self) -> Option<u8> {
        self.ut_metadata.filter(|&id| id != 0)
    }

    /// The peer's `ut_pex` id, if it announced one and did not disable it.
    pub fn ut_pex_id(&self) -> Option<u8> {
        self.ut_pex.filter(|&id| id != 0)
    }

    /// The peer's `ut_holepunch` id, if it announced one and did not disable it.
    pub fn ut_holepunch_id(&self) -> Option<u8> {
        self.ut_holepunch.filter(|&id| id != 0)
    }

    /// The id of an extension by name, as found in `m` (0: disabled), among
    /// `ut_metadata`, `ut_pex`, `ut_holepunch` and the recorded others.
    #[cfg(test)]
    pub fn extension_id(&self, name: &[u8]) -> Option<u8> {
        match name {
            UT_METADATA => self.ut_metadata,
            UT_PEX => self.ut_pex,
            UT_HOLEPUNCH => self.ut_holepunch,
            _ => self
                .others
                .iter()
                .find(|(n, _)| *n == name)
                .map(|&(_, id)| id),
        }
    }
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        Some(IpAddr::V4(Ipv4Addr::from(v4)))
    } else if let Ok(v6) = <[u8; 16]>::try_from(b) {
        Some(IpAddr::V6(Ipv6Addr::from(v6)))
    } else {
        None
    }
}

/// What we announce in our extension handshake (see [`write_ext_handshake`]).
///
/// Ids are the extended ids *we* want to receive the messages under; `Some(0)`
/// announces the extension as disabled (for a re-sent handshake), `None` leaves it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OurExtensions<'a> {
    /// Our `ut_metadata` id.
    pub ut_metadata: Option<u8>,
    /// Our `ut_pex` id.
    pub ut_pex: Option<u8>,
    /// Our `ut_holepunch` id (BEP 55).
    pub ut_holepunch: Option<u8>,
    /// `metadata_size`: the size of the info dictionary, when we have it.
    pub metadata_size: Option<u32>,
    /// `p`: our TCP listen port.
    pub listen_port: Option<u16>,
    /// `v`: client name and version; left out when empty.
    pub client: &'a [u8],
    /// `reqq`: how many outstanding requests we accept.
    pub reqq: Option<u32>,
    /// `yourip`: the address we see the peer at.
    pub yourip: Option<IpAddr>,
    /// `ipv4`: our own (external) IPv4 address, when known.
    pub ipv4: Option<Ipv4Addr>,
    /// `ipv6`: our own (external) IPv6 address, when known.
    pub ipv6: Option<Ipv6Addr>,
}

/// Writes our extension handshake payload (the bencoded dictionary, without the wire
/// frame or the extended id 0) into `out`, keys in sorted order (canonical bencode).
/// Returns the number of bytes written; [`ExtError::BufferTooSmall`] if `out` is short.
pub fn write_ext_handshake(out: &mut [u8], ours: &OurExtensions<'_>) -> Result<usize, ExtError> {
    encode_into(out, |e| {
        e.dict()?;
        if let Some(a) = ours.ipv4 {
            e.key_bytes(b"ipv4", &a.octets())?;
        }
        if let Some(a) = ours.ipv6 {
            e.key_bytes(b"ipv6", &a.octets())?;
        }
        e.bytes(b"m")?;
        e.dict()?;
        if let Some(id) = ours.ut_holepunch {
            e.key_int(UT_HOLEPUNCH, id.into())?;
        }
        if let Some(id) = ours.ut_metadata {
            e.key_int(UT_METADATA, id.into())?;
        }
        if let Some(id) = ours.ut_pex {
            e.key_int(UT_PEX, id.into())?;
        }
        e.end()?;
        if let Some(n) = ours.metadata_size {
            e.key_int(b"metadata_size", n.into())?;
        }
        if let Some(p) = ours.listen_port {
            e.key_int(b"p", p.into())?;
        }
        if let Some(n) = ours.reqq {
            e.key_int(b"reqq", n.into())?;
        }
        if !ours.client.is_empty() {
            e.key_bytes(b"v", ours.client)?;
        }
        match ours.yourip {
            Some(IpAddr::V4(a)) => e.key_bytes(b"yourip", &a.octets())?,
            Some(IpAddr::V6(a)) => e.key_bytes(b"yourip", &a.octets())?,
            None => {}
        }
        e.end()
    })
}

// ---------------------------------------------------------------------------------------
// BEP 9 messages
// ---------------------------------------------------------------------------------------

/// The number of 16 KiB metadata pieces of `len` bytes of metadata (saturating).
pub fn num_metadata_pieces(len: usize) -> u32 {
    u32::try_from(len.div_ceil(METADATA_PIECE_LEN as usize)).unwrap_or(u32::MAX)
}

/// Piece `piece` of the metadata `info_bytes` (for serving requests), or `None` when
/// the piece is beyond it.
pub fn metadata_piece(info_bytes: &[u8], piece: u32) -> Option<&[u8]> {
    let start = (piece as usize).checked_mul(METADATA_PIECE_LEN as usize)?;
    if start >= info_bytes.len() {
        return None;
    }
    let end = info_bytes
        .len()
        .min(start.saturating_add(METADATA_PIECE_LEN as usize));
    info_bytes.get(start..end)
}

/// The length of piece `piece` of `total_size` bytes of metadata, or `None` when the
/// piece is beyond it.
fn piece_len(total_size: u32, piece: u32) -> Option<usize> {
    let start = u64::from(piece) * u64::from(METADATA_PIECE_LEN);
    let rest = u64::from(total_size)
        .checked_sub(start)
        .filter(|&r| r > 0)?;
    Some(rest.min(u64::from(METADATA_PIECE_LEN)) as usize)
}

/// A `ut_metadata` message (BEP 9, section "extension message").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataMsg<'a> {
    /// `msg_type` 0: asks for a piece.
    Request {
        /// The piece index.
        piece: u32,
    },
    /// `msg_type` 1: a piece, `data` being the bytes after the dictionary.
    Data {
        /// The piece index.
        piece: u32,
        /// The size of the whole metadata.
        total_size: u32,
        /// The piece's bytes, borrowed from the payload.
        data: &'a [u8],
    },
    /// `msg_type` 2: the sender will not send this piece (it does not have the
    /// metadata, or refuses).
    Reject {
        /// The piece index.
        piece: u32,
    },
}

const MSG_REQUEST: i64 = 0;
const MSG_DATA: i64 = 1;
const MSG_REJECT: i64 = 2;

impl<'a> MetadataMsg<'a> {
    /// Parses a `ut_metadata` payload (after the extended id byte).
    ///
    /// A data message's `total_size` must be positive and fit 32 bits, its piece must
    /// lie within it, and its trailing bytes must be exactly the piece: 16 KiB, or the
    /// rest for the last piece. Request and reject messages take no trailing bytes.
    /// Unknown keys are ignored; an unknown `msg_type` is
    /// [`ExtError::UnknownMsgType`], to be ignored.
    pub fn parse(payload: &'a [u8]) -> Result<Self, ExtError> {
        let mut tokens = [Token::default(); METADATA_MSG_TOKENS];
        let (dict, consumed) = root_dict(payload, &mut tokens, true)?;
        let msg_type = dict
            .get(b"msg_type")
            .ok_or(ExtError::MissingField("msg_type"))?
            .as_int()
            .ok_or(ExtError::BadField("msg_type"))?;
        if !matches!(msg_type, MSG_REQUEST | MSG_DATA | MSG_REJECT) {
            return Err(ExtError::UnknownMsgType(msg_type));
        }
        let piece = dict
            .get(b"piece")
            .ok_or(ExtError::MissingField("piece"))?
            .as_int()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(ExtError::BadField("piece"))?;
        let rest = payload.get(consumed..).unwrap_or_default();
        if msg_type != MSG_DATA {
            if !rest.is_empty() {
                return Err(ExtError::TrailingData);
            }
            return Ok(if msg_type == MSG_REQUEST {
                Self::Request { piece }
            } else {
                Self::Reject { piece }
            });
        }
        let size = dict
            .get(b"total_size")
            .ok_or(ExtError::MissingField("total_size"))?
            .as_int()
            .ok_or(ExtError::BadField("total_size"))?;
        let total_size = u32::try_from(size)
            .ok()
            .filter(|&n| n != 0)
            .ok_or(ExtError::BadMetadataSize { size })?;
        let expected = piece_len(total_size, piece).ok_or(ExtError::PieceOutOfRange { piece })?;
        if rest.len() != expected {
            return Err(ExtError::BadPieceLength {
                piece,
                len: rest.len(),
            });
        }
        Ok(Self::Data {
            piece,
            total_size,
            data: rest,
        })
    }

    /// The piece index the message is about.
    pub fn piece(&self) -> u32 {
        match *self {
            Self::Request { piece } | Self::Data { piece, .. } | Self::Reject { piece } => piece,
        }
    }

    /// Writes the bencoded dictionary only (for [`MetadataMsg::Data`], the caller
    /// appends `data` after it). Returns the number of bytes written.
    pub(crate) fn write_header(&self, out: &mut [u8]) -> Result<usize, ExtError> {
        let (msg_type, total) = match *self {
            Self::Request { .. } => (MSG_REQUEST, None),
            Self::Data { total_size, .. } => (MSG_DATA, Some(total_size)),
            Self::Reject { .. } => (MSG_REJECT, None),
        };
        let piece = self.piece();
        encode_into(out, |e| {
            e.dict()?;
            e.key_int(b"msg_type", msg_type)?;
            e.key_int(b"piece", piece.into())?;
            if let Some(t) = total {
                e.key_int(b"total_size", t.into())?;
            }
            e.end()
        })
    }

    /// Writes the whole payload: the dictionary and, for [`MetadataMsg::Data`], the
    /// data after it. Returns the number of bytes written.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, ExtError> {
        let n = self.write_header(out)?;
        let data: &[u8] = match self {
            Self::Data { data, .. } => data,
            _ => &[],
        };
        let end = n.checked_add(data.len()).ok_or(ExtError::BufferTooSmall)?;
        out.get_mut(n..end)
            .ok_or(ExtError::BufferTooSmall)?
            .copy_from_slice(data);
        Ok(end)
    }
}

// ---------------------------------------------------------------------------------------
// Metadata assembly
// ---------------------------------------------------------------------------------------

/// The state of one metadata piece in a [`MetadataAssembler`].
#[cfg(feature = "alloc")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Not present and not requested; `rejected_by` is the last peer that rejected it.
    Missing { rejected_by: Option<u32> },
    /// Requested from `peer` at `at_ms`.
    Requested { peer: u32, at_ms: u64 },
    /// Present, received from `peer`.
    Have { peer: u32 },
}

/// What `MetadataAssembler::add_piece` reports once every piece is present.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done {
    /// The SHA-1 of the metadata equals the info-hash: the complete info dictionary.
    Complete(Vec<u8>),
    /// The SHA-1 does not match: every piece was dropped (the assembler starts over)
    /// and these peers (sorted, without duplicates) contributed pieces. At least one of
    /// them sent bad data.
    HashMismatch {
        /// Peer keys that sent a piece of the failed attempt.
        contributors: Vec<u32>,
    },
}

/// Downloads the metadata (the info dictionary) from peers, 16 KiB piece by piece,
/// and verifies it against the info-hash (BEP 9, section "metadata").
///
/// Peers are identified by a caller key (`u32`); time is the caller's monotonic
/// milliseconds. The buffer is allocated once, at creation, for the announced size.
/// Which peers to ask is the caller's choice (those that announced this size).
///
/// Data for a piece is accepted from any peer whether or not it was asked for it; a
/// bad piece is caught by the final hash check, which names the contributors.
///
/// After a failed check with several contributors, the bad one cannot be told from
/// the others; a *single-source* assembler ([`MetadataAssembler::set_single_source`])
/// then takes every piece from one peer, the first that asks (its *owner*), so that a
/// failure names the liar alone. Another peer takes over, and the pieces start over,
/// when the owner has no request less than [`ExtConfig::request_timeout_ms`] old
/// (it is slow, gone, or rejected a piece).
#[cfg(feature = "alloc")]
#[derive(Clone, Debug)]
pub(crate) struct MetadataAssembler {
    info_hash: InfoHash,
    buf: Vec<u8>,
    total_size: u32,
    slots: Vec<Slot>,
    have: u32,
    timeout_ms: u64,
    done: bool,
    single_source: bool,
    /// The info-hash is a v2 one (BEP 52, a `btmh` link): the SHA-256 of the
    /// dictionary, truncated, must match it (else its SHA-1 must).
    v2: bool,
    owner: Option<u32>,
}

#[cfg(feature = "alloc")]
impl MetadataAssembler {
    /// Starts assembling `metadata_size` bytes (as announced by a peer) that must hash
    /// to `info_hash`. [`ExtError::BadMetadataSize`] if the size is 0 or above
    /// [`ExtConfig::max_metadata_size`].
    pub fn new(
        info_hash: InfoHash,
        metadata_size: u32,
        config: &ExtConfig,
    ) -> Result<Self, ExtError> {
        if metadata_size == 0 || metadata_size > config.max_metadata_size {
            return Err(ExtError::BadMetadataSize {
                size: metadata_size.into(),
            });
        }
        let size = metadata_size as usize;
        let n = num_metadata_pieces(size) as usize;
        let mut buf = Vec::new();
        buf.try_reserve_exact(size)
            .map_err(|_| ExtError::OutOfMemory)?;
        buf.resize(size, 0);
        let mut slots = Vec::new();
        slots
            .try_reserve_exact(n)
            .map_err(|_| ExtError::OutOfMemory)?;
        slots.resize(n, Slot::Missing { rejected_by: None });
        Ok(Self {
            info_hash,
            buf,
            total_size: metadata_size,
            slots,
            have: 0,
            timeout_ms: config.request_timeout_ms,
            done: false,
            single_source: false,
            v2: false,
            owner: None,
        })
    }

    /// The info-hash is a v2 one, truncated (BEP 52): the dictionary is checked by its
    /// SHA-256 rather than its SHA-1.
    pub(crate) fn set_v2(&mut self, on: bool) {
        self.v2 = on;
    }

    /// Takes every piece from one peer (see the type's docs); any pieces already
    /// present are dropped.
    pub(crate) fn set_single_source(&mut self, on: bool) {
        self.single_source = on;
        self.owner = None;
        self.start_over();
    }

    /// Whether every piece comes from one peer.
    #[cfg(test)]
    pub fn is_single_source(&self) -> bool {
        self.single_source
    }

    fn start_over(&mut self) {
        self.slots.fill(Slot::Missing { rejected_by: None });
        self.have = 0;
    }

    /// The size of the metadata being assembled (check a data message's `total_size`
    /// against it).
    pub fn total_size(&self) -> u32 {
        self.total_size
    }

    /// The number of 16 KiB pieces.
    #[cfg(test)]
    pub fn num_pieces(&self) -> u32 {
        self.slots.len() as u32
    }

    /// How many pieces are present.
    pub fn pieces_have(&self) -> u32 {
        self.have
    }

    /// Whether the metadata was completed and verified (then handed out).
    #[cfg(test)]
    pub fn is_complete(&self) -> bool {
        self.done
    }

    /// Whether nothing is requested while pieces are missing: when every peer that
    /// could be asked was, nobody can give what is missing (rejected it, or left).
    pub fn is_idle(&self) -> bool {
        !self.done
            && !self
                .slots
                .iter()
                .any(|s| matches!(s, Slot::Requested { .. }))
    }

    /// The next piece to request from `peer` at `now_ms`, marked as requested from it:
    /// the lowest piece neither present nor requested (skipping one this peer last
    /// rejected), else the lowest one requested from another peer at least
    /// [`ExtConfig::request_timeout_ms`] ago. `None` when there is nothing to ask.
    /// Single-source: only the owner is asked, unless `peer` takes over.
    pub(crate) fn next_request(&mut self, peer: u32, now_ms: u64) -> Option<u32> {
        if self.done {
            return None;
        }
        if self.single_source {
            match self.owner {
                Some(o) if o == peer => {}
                Some(o) => {
                    let busy = self.slots.iter().any(|s| {
                        matches!(*s, Slot::Requested { peer: p, at_ms }
                            if p == o && now_ms.saturating_sub(at_ms) < self.timeout_ms)
                    });
                    if busy {
                        return None;
                    }
                    // The owner stalled: `peer` takes over, from the start.
                    self.start_over();
                    self.owner = Some(peer);
                }
                None => {
                    if self.have > 0 {
                        self.start_over();
                    }
                    self.owner = Some(peer);
                }
            }
        }
        let fresh = self
            .slots
            .iter()
            .position(|s| matches!(*s, Slot::Missing { rejected_by } if rejected_by != Some(peer)));
        let idx = fresh.or_else(|| {
            self.slots.iter().position(|s| match *s {
                Slot::Requested { peer: p, at_ms } => {
                    p != peer && now_ms.saturating_sub(at_ms) >= self.timeout_ms
                }
                _ => false,
            })
        })?;
        self.slots[idx] = Slot::Requested {
            peer,
            at_ms: now_ms,
        };
        Some(idx as u32)
    }

    /// `peer` rejected (or will not answer) its request for `piece`: the piece becomes
    /// available to other peers. Returns whether a request of this peer was freed.
    pub fn reject(&mut self, piece: u32, peer: u32) -> bool {
        match self.slots.get_mut(piece as usize) {
            Some(s) if matches!(*s, Slot::Requested { peer: p, .. } if p == peer) => {
                *s = Slot::Missing {
                    rejected_by: Some(peer),
                };
                if self.owner == Some(peer) {
                    // It cannot give everything: the next peer that asks takes over.
                    self.owner = None;
                }
                true
            }
            _ => false,
        }
    }

    /// `peer` is gone: every piece requested from it becomes available again.
    pub(crate) fn forget_peer(&mut self, peer: u32) {
        if self.owner == Some(peer) {
            self.owner = None;
        }
        for s in &mut self.slots {
            match *s {
                Slot::Requested { peer: p, .. } if p == peer => {
                    *s = Slot::Missing { rejected_by: None };
                }
                Slot::Missing {
                    rejected_by: Some(p),
                } if p == peer => *s = Slot::Missing { rejected_by: None },
                _ => {}
            }
        }
    }

    /// Stores piece `piece` received from `peer`. The length must be exact (16 KiB, or
    /// the rest for the last piece); a piece already present is ignored. When the last
    /// missing piece arrives, the whole buffer is hashed: see [`Done`].
    ///
    /// Errors ([`ExtError::PieceOutOfRange`], [`ExtError::BadPieceLength`]) are the
    /// peer's fault and change nothing. After completion everything is ignored, and so
    /// is a piece from another peer than the owner of a single-source assembler.
    pub(crate) fn add_piece(
        &mut self,
        piece: u32,
        data: &[u8],
        peer: u32,
    ) -> Result<Option<Done>, ExtError> {
        if self.done {
            return Ok(None);
        }
        let expected =
            piece_len(self.total_size, piece).ok_or(ExtError::PieceOutOfRange { piece })?;
        if data.len() != expected {
            return Err(ExtError::BadPieceLength {
                piece,
                len: data.len(),
            });
        }
        let idx = piece as usize;
        if matches!(self.slots[idx], Slot::Have { .. })
            || (self.single_source && self.owner != Some(peer))
        {
            return Ok(None);
        }
        let start = idx * METADATA_PIECE_LEN as usize;
        self.buf[start..start + expected].copy_from_slice(data);
        self.slots[idx] = Slot::Have { peer };
        self.have += 1;
        if self.have as usize != self.slots.len() {
            return Ok(None);
        }
        // v1: the SHA-1 of the info dictionary; v2 (BEP 52): its SHA-256, truncated.
        let ok = if self.v2 {
            crate::hash::sha256(&self.buf)[..20] == self.info_hash.0
        } else {
            crate::hash::sha1(&self.buf) == self.info_hash.0
        };
        if ok {
            self.done = true;
            return Ok(Some(Done::Complete(core::mem::take(&mut self.buf))));
        }
        let mut contributors: Vec<u32> = self
            .slots
            .iter()
            .filter_map(|s| match *s {
                Slot::Have { peer } => Some(peer),
                _ => None,
            })
            .collect();
        contributors.sort_unstable();
        contributors.dedup();
        self.start_over();
        self.owner = None;
        Ok(Some(Done::HashMismatch { contributors }))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec;

    const LIBTORRENT_HS: &[u8] =
        b"d1:md11:ut_metadatai3e6:ut_pexi1ee13:metadata_sizei31235e1:pi6881e1:v14:libtorrent 2.0e";

    #[test]
    fn parses_real_looking_handshake() {
        let hs = ExtHandshake::parse(LIBTORRENT_HS, &ExtConfig::default()).expect("parse");
        assert_eq!(hs.ut_metadata, Some(3));
        assert_eq!(hs.ut_pex, Some(1));
        assert_eq!(hs.ut_metadata_id(), Some(3));
        assert_eq!(hs.metadata_size, Some(31235));
        assert_eq!(hs.listen_port, Some(6881));
        assert_eq!(hs.client, Some(&b"libtorrent 2.0"[..]));
        assert_eq!(hs.yourip, None);
        assert_eq!(hs.reqq, None);
        assert!(!hs.upload_only);
        assert!(hs.others.is_empty());
    }

    #[test]
    fn handshake_others_disabled_and_extras() {
        let p = b"d1:md11:lt_donthavei7e10:share_modei8e11:upload_onlyi3e11:ut_metadatai0ee4:reqqi500e11:upload_onlyi1e6:yourip4:\x0a\x00\x00\x01e";
        let hs = ExtHandshake::parse(p, &ExtConfig::default()).expect("parse");
        assert_eq!(hs.ut_metadata, Some(0));
        assert_eq!(hs.ut_metadata_id(), None);
        assert_eq!(hs.ut_pex, None);
        assert_eq!(hs.others.len(), 3);
        assert_eq!(hs.extension_id(b"share_mode"), Some(8));
        assert_eq!(hs.extension_id(b"lt_donthave"), Some(7));
        assert_eq!(hs.extension_id(b"nope"), None);
        assert_eq!(hs.reqq, Some(500));
        assert!(hs.upload_only);
        assert_eq!(hs.yourip, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
    }

    #[test]
    fn handshake_lenient_fields_and_errors() {
        // Wrong types and out-of-range values are ignored.
        let p = b"d1:md11:ut_metadatai300e6:ut_pex3:abce13:metadata_sizei-5e1:pi70000e4:reqqi0e1:vi1e6:yourip3:abce";
        let hs = ExtHandshake::parse(p, &ExtConfig::default()).expect("parse");
        assert_eq!(hs, ExtHandshake::default());
        // No `m` at all is fine.
        assert_eq!(
            ExtHandshake::parse(b"de", &ExtConfig::default()),
            Ok(ExtHandshake::default())
        );
        // Not a dictionary, bad `m`, bad bencode, trailing bytes.
        let cfg = ExtConfig::default();
        assert_eq!(ExtHandshake::parse(b"le", &cfg), Err(ExtError::NotADict));
        assert_eq!(
            ExtHandshake::parse(b"d1:mi1ee", &cfg),
            Err(ExtError::BadField("m"))
        );
        assert!(matches!(
            ExtHandshake::parse(b"d1:m", &cfg),
            Err(ExtError::Bencode(_))
        ));
        assert!(matches!(
            ExtHandshake::parse(b"dexx", &cfg),
            Err(ExtError::Bencode(_))
        ));
        assert!(ExtError::NotADict.is_peer_fault());
    }

    #[test]
    fn oversized_metadata_size_ignored_in_handshake() {
        let cfg = ExtConfig {
            max_metadata_size: 1000,
            ..ExtConfig::default()
        };
        let hs = ExtHandshake::parse(LIBTORRENT_HS, &cfg).expect("parse");
        assert_eq!(hs.metadata_size, None);
        assert_eq!(hs.ut_metadata_id(), Some(3));
        let big = b"d13:metadata_sizei16777217ee";
        let hs = ExtHandshake::parse(big, &ExtConfig::default()).expect("parse");
        assert_eq!(hs.metadata_size, None);
        let ok = b"d13:metadata_sizei16777216ee";
        let hs = ExtHandshake::parse(ok, &ExtConfig::default()).expect("parse");
        assert_eq!(hs.metadata_size, Some(16 << 20));
    }

    /// Our own addresses (`ipv4`, `ipv6`) come first (sorted keys) and parse back;
    /// values of another length are ignored.
    #[test]
    fn our_addresses_round_trip() {
        let ours = OurExtensions {
            ipv4: Some(Ipv4Addr::new(203, 0, 113, 7)),
            ipv6: Some("2001:db8::7".parse().expect("v6")),
            ..OurExtensions::default()
        };
        let mut out = [0u8; 128];
        let n = write_ext_handshake(&mut out, &ours).expect("write");
        assert!(out[..n].starts_with(b"d4:ipv44:\xcb\x00\x71\x074:ipv616:"));
        let hs = ExtHandshake::parse(&out[..n], &ExtConfig::default()).expect("parse");
        assert_eq!(hs.ipv4, ours.ipv4);
        assert_eq!(hs.ipv6, ours.ipv6);
        let odd = b"d4:ipv43:abc4:ipv65:abcdee";
        let hs = ExtHandshake::parse(odd, &ExtConfig::default()).expect("parse");
        assert_eq!((hs.ipv4, hs.ipv6), (None, None));
    }

    #[test]
    fn our_handshake_round_trips() {
        let ours = OurExtensions {
            ut_metadata: Some(2),
            ut_pex: Some(1),
            ut_holepunch: Some(4),
            metadata_size: Some(31235),
            listen_port: Some(6881),
            client: b"btcore 0.1",
            reqq: Some(250),
            yourip: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ..OurExtensions::default()
        };
        let mut out = [0u8; 256];
        let n = write_ext_handshake(&mut out, &ours).expect("write");
        let mut expected = std::vec::Vec::new();
        expected.extend_from_slice(
            b"d1:md12:ut_holepunchi4e11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei31235e1:pi6881e4:reqqi250e1:v10:btcore 0.16:yourip16:",
        );
        expected.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        expected.push(b'e');
        assert_eq!(&out[..n], &expected[..]);
        let hs = ExtHandshake::parse(&out[..n], &ExtConfig::default()).expect("parse");
        assert_eq!(hs.ut_metadata, Some(2));
        assert_eq!(hs.ut_pex, Some(1));
        assert_eq!(hs.ut_holepunch_id(), Some(4));
        assert_eq!(hs.extension_id(b"ut_holepunch"), Some(4));
        assert_eq!(hs.metadata_size, Some(31235));
        assert_eq!(hs.listen_port, Some(6881));
        assert_eq!(hs.client, Some(&b"btcore 0.1"[..]));
        assert_eq!(hs.reqq, Some(250));
        assert_eq!(hs.yourip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        drop(hs);

        // Minimal handshake, and a too-small buffer at every length.
        let n = write_ext_handshake(&mut out, &OurExtensions::default()).expect("write");
        assert_eq!(&out[..n], b"d1:mdee");
        let full = write_ext_handshake(&mut out, &ours).expect("write");
        for len in 0..full {
            assert_eq!(
                write_ext_handshake(&mut out[..len], &ours),
                Err(ExtError::BufferTooSmall)
            );
        }
        assert!(!ExtError::BufferTooSmall.is_peer_fault());
    }

    #[test]
    fn metadata_request_and_reject_round_trip() {
        let req = b"d8:msg_typei0e5:piecei0ee";
        assert_eq!(
            MetadataMsg::parse(req),
            Ok(MetadataMsg::Request { piece: 0 })
        );
        let mut out = [0u8; 64];
        let n = MetadataMsg::Request { piece: 0 }
            .write(&mut out)
            .expect("w");
        assert_eq!(&out[..n], req);

        let rej = b"d8:msg_typei2e5:piecei7ee";
        assert_eq!(
            MetadataMsg::parse(rej),
            Ok(MetadataMsg::Reject { piece: 7 })
        );
        let n = MetadataMsg::Reject { piece: 7 }
            .write_header(&mut out)
            .expect("w");
        assert_eq!(&out[..n], rej);
        assert_eq!(MetadataMsg::Reject { piece: 7 }.piece(), 7);

        // Unknown keys ignored, key order not required.
        assert_eq!(
            MetadataMsg::parse(b"d5:piecei1e8:msg_typei0e3:zzzi9ee"),
            Ok(MetadataMsg::Request { piece: 1 })
        );
    }

    #[test]
    fn metadata_message_errors() {
        assert_eq!(
            MetadataMsg::parse(b"d8:msg_typei0e5:piecei0eexx"),
            Err(ExtError::TrailingData)
        );
        assert_eq!(
            MetadataMsg::parse(b"d8:msg_typei5e5:piecei0ee"),
            Err(ExtError::UnknownMsgType(5))
        );
        assert!(!ExtError::UnknownMsgType(5).is_peer_fault());
        assert_eq!(
            MetadataMsg::parse(b"d5:piecei0ee"),
            Err(ExtError::MissingField("msg_type"))
        );
        assert_eq!(
            MetadataMsg::parse(b"d8:msg_typei0ee"),
            Err(ExtError::MissingField("piece"))
        );
        assert_eq!(
            MetadataMsg::parse(b"d8:msg_typei0e5:piecei-1ee"),
            Err(ExtError::BadField("piece"))
        );
        assert_eq!(
            MetadataMsg::parse(b"d8:msg_typei1e5:piecei0ee"),
            Err(ExtError::MissingField("total_size"))
        );
        assert_eq!(
            MetadataMsg::parse(b"d8:msg_typei1e5:piecei0e10:total_sizei0ee"),
            Err(ExtError::BadMetadataSize { size: 0 })
        );
        assert_eq!(
            MetadataMsg::parse(b"d8:msg_typei1e5:piecei1e10:total_sizei5eeabcde"),
            Err(ExtError::PieceOutOfRange { piece: 1 })
        );
        assert_eq!(MetadataMsg::parse(b"i1e"), Err(ExtError::NotADict));
        assert!(matches!(MetadataMsg::parse(b""), Err(ExtError::Bencode(_))));
    }

    #[test]
    fn metadata_data_round_trip_and_lengths() {
        // Last (and only) piece of a 5-byte metadata.
        let p = b"d8:msg_typei1e5:piecei0e10:total_sizei5eeabcde";
        let msg = MetadataMsg::parse(p).expect("parse");
        assert_eq!(
            msg,
            MetadataMsg::Data {
                piece: 0,
                total_size: 5,
                data: b"abcde"
            }
        );
        let mut out = [0u8; 64];
        let n = msg.write(&mut out).expect("write");
        assert_eq!(&out[..n], p);
        let h = msg.write_header(&mut out).expect("header");
        assert_eq!(&out[..h], b"d8:msg_typei1e5:piecei0e10:total_sizei5ee");
        assert_eq!(msg.write(&mut out[..n - 1]), Err(ExtError::BufferTooSmall));

        // Wrong trailing lengths: short, long, and empty for the last piece.
        for bad in [&b"abcd"[..], b"abcdef", b""] {
            let mut v = b"d8:msg_typei1e5:piecei0e10:total_sizei5ee".to_vec();
            v.extend_from_slice(bad);
            assert_eq!(
                MetadataMsg::parse(&v),
                Err(ExtError::BadPieceLength {
                    piece: 0,
                    len: bad.len()
                })
            );
        }

        // A non-last piece must be exactly 16 KiB.
        let hdr = b"d8:msg_typei1e5:piecei0e10:total_sizei20000ee";
        let mut v = hdr.to_vec();
        v.resize(hdr.len() + 16384, 7);
        assert!(matches!(
            MetadataMsg::parse(&v),
            Ok(MetadataMsg::Data { piece: 0, total_size: 20000, data }) if data.len() == 16384
        ));
        v.pop();
        assert_eq!(
            MetadataMsg::parse(&v),
            Err(ExtError::BadPieceLength {
                piece: 0,
                len: 16383
            })
        );
        // The last piece of 20000 bytes holds 3616.
        let hdr = b"d8:msg_typei1e5:piecei1e10:total_sizei20000ee";
        let mut v = hdr.to_vec();
        v.resize(hdr.len() + 3616, 1);
        assert!(MetadataMsg::parse(&v).is_ok());
        v.resize(hdr.len() + 16384, 1);
        assert_eq!(
            MetadataMsg::parse(&v),
            Err(ExtError::BadPieceLength {
                piece: 1,
                len: 16384
            })
        );
    }

    #[test]
    fn serving_helpers() {
        assert_eq!(num_metadata_pieces(0), 0);
        assert_eq!(num_metadata_pieces(1), 1);
        assert_eq!(num_metadata_pieces(16384), 1);
        assert_eq!(num_metadata_pieces(16385), 2);
        let info: std::vec::Vec<u8> = (0..40000u32).map(|i| i as u8).collect();
        assert_eq!(metadata_piece(&info, 0), Some(&info[..16384]));
        assert_eq!(metadata_piece(&info, 1), Some(&info[16384..32768]));
        assert_eq!(metadata_piece(&info, 2), Some(&info[32768..]));
        assert_eq!(metadata_piece(&info, 3), None);
        assert_eq!(metadata_piece(&info, u32::MAX), None);
        assert_eq!(metadata_piece(&[], 0), None);
    }

    #[cfg(feature = "alloc")]
    /// A bencoded info dictionary of about `len` bytes and its info-hash.
    fn fake_info(len: usize) -> (std::vec::Vec<u8>, InfoHash) {
        let mut v = b"d6:pieces".to_vec();
        let body = len - 20;
        v.extend_from_slice(std::format!("{body}:").as_bytes());
        v.extend((0..body).map(|i| (i * 31 % 251) as u8));
        v.push(b'e');
        let h = InfoHash(crate::hash::sha1(&v));
        (v, h)
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn assembler_out_of_order_two_peers() {
        let (info, ih) = fake_info(40000);
        let cfg = ExtConfig::default();
        let mut a = MetadataAssembler::new(ih, info.len() as u32, &cfg).expect("new");
        assert_eq!(a.num_pieces(), 3);
        assert_eq!(a.total_size() as usize, info.len());
        let (p1, p2) = (11, 22);
        assert_eq!(a.next_request(p1, 0), Some(0));
        assert_eq!(a.next_request(p2, 0), Some(1));
        assert_eq!(a.next_request(p1, 0), Some(2));
        assert_eq!(a.next_request(p2, 0), None);
        let piece = |i| metadata_piece(&info, i).expect("piece");
        assert_eq!(a.add_piece(2, piece(2), p1), Ok(None));
        assert_eq!(a.add_piece(1, piece(1), p2), Ok(None));
        // Duplicates are ignored, bad lengths and indices refused.
        assert_eq!(a.add_piece(1, piece(1), p1), Ok(None));
        assert_eq!(
            a.add_piece(0, &piece(0)[..100], p1),
            Err(ExtError::BadPieceLength { piece: 0, len: 100 })
        );
        assert_eq!(
            a.add_piece(3, piece(2), p1),
            Err(ExtError::PieceOutOfRange { piece: 3 })
        );
        assert_eq!(a.pieces_have(), 2);
        let done = a.add_piece(0, piece(0), p1).expect("ok");
        assert_eq!(done, Some(Done::Complete(info.clone())));
        assert!(a.is_complete());
        assert_eq!(a.next_request(p1, 0), None);
        assert_eq!(a.add_piece(0, piece(0), p1), Ok(None));
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn assembler_corrupt_piece_resets_and_names_contributors() {
        let (info, ih) = fake_info(40000);
        let mut a =
            MetadataAssembler::new(ih, info.len() as u32, &ExtConfig::default()).expect("new");
        let piece = |i| metadata_piece(&info, i).expect("piece");
        let mut bad = piece(1).to_vec();
        bad[5] ^= 0xff;
        assert_eq!(a.add_piece(0, piece(0), 3), Ok(None));
        assert_eq!(a.add_piece(1, &bad, 9), Ok(None));
        let done = a.add_piece(2, piece(2), 3).expect("ok");
        assert_eq!(
            done,
            Some(Done::HashMismatch {
                contributors: vec![3, 9]
            })
        );
        assert!(!a.is_complete());
        assert_eq!(a.pieces_have(), 0);
        // Everything can be requested again; a good retry completes.
        assert_eq!(a.next_request(3, 0), Some(0));
        for i in 0..3 {
            let r = a.add_piece(i, piece(i), 3).expect("ok");
            if i == 2 {
                assert_eq!(r, Some(Done::Complete(info.clone())));
            } else {
                assert_eq!(r, None);
            }
        }
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn single_source_takes_every_piece_from_one_peer() {
        let (info, ih) = fake_info(40000);
        let cfg = ExtConfig {
            request_timeout_ms: 1000,
            ..ExtConfig::default()
        };
        let mut a = MetadataAssembler::new(ih, info.len() as u32, &cfg).expect("new");
        let piece = |i| metadata_piece(&info, i).expect("piece");
        let mut bad = piece(1).to_vec();
        bad[0] ^= 1;
        a.set_single_source(true);
        assert!(a.is_single_source());
        let (liar, honest) = (1, 2);
        // The first to ask owns the attempt; the other gets nothing meanwhile, and
        // what it sends unasked is ignored.
        assert_eq!(a.next_request(liar, 0), Some(0));
        assert_eq!(a.next_request(honest, 10), None);
        assert_eq!(a.add_piece(0, piece(0), honest), Ok(None));
        assert_eq!(a.pieces_have(), 0);
        assert_eq!(a.add_piece(0, piece(0), liar), Ok(None));
        assert_eq!(a.next_request(liar, 10), Some(1));
        assert_eq!(a.next_request(liar, 10), Some(2));
        assert_eq!(a.add_piece(1, &bad, liar), Ok(None));
        // Its failure names it alone.
        assert_eq!(
            a.add_piece(2, piece(2), liar),
            Ok(Some(Done::HashMismatch {
                contributors: vec![liar]
            }))
        );
        // The next attempt: the honest peer asks first and completes.
        for i in 0..3 {
            assert_eq!(a.next_request(honest, 20), Some(i));
        }
        assert_eq!(a.next_request(liar, 30), None);
        assert_eq!(a.add_piece(0, piece(0), honest), Ok(None));
        assert_eq!(a.add_piece(1, piece(1), honest), Ok(None));
        assert_eq!(
            a.add_piece(2, piece(2), honest),
            Ok(Some(Done::Complete(info.clone())))
        );
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn single_source_owner_that_stalls_or_rejects_is_replaced() {
        let (info, ih) = fake_info(40000);
        let cfg = ExtConfig {
            request_timeout_ms: 1000,
            ..ExtConfig::default()
        };
        let mut a = MetadataAssembler::new(ih, info.len() as u32, &cfg).expect("new");
        a.set_single_source(true);
        let piece = |i| metadata_piece(&info, i).expect("piece");
        let (slow, other, third) = (1, 2, 3);
        assert_eq!(a.next_request(slow, 0), Some(0));
        assert_eq!(a.add_piece(0, piece(0), slow), Ok(None));
        assert_eq!(a.next_request(slow, 100), Some(1));
        assert_eq!(a.next_request(other, 1099), None);
        // No request of the owner is fresh any more: another takes over from scratch.
        assert_eq!(a.next_request(other, 1100), Some(0));
        assert_eq!(a.pieces_have(), 0);
        assert_eq!(a.add_piece(1, piece(1), slow), Ok(None));
        assert_eq!(a.pieces_have(), 0, "the old owner's late piece is ignored");
        // The new owner rejects a piece: the next peer to ask takes over.
        assert!(a.reject(0, other));
        assert_eq!(a.next_request(third, 1200), Some(0));
        assert_eq!(a.next_request(other, 1200), None);
        a.forget_peer(third);
        assert_eq!(a.next_request(other, 1300), Some(0));
        // Turning it off keeps nothing from before.
        a.set_single_source(false);
        assert_eq!(a.pieces_have(), 0);
        assert!(!a.is_single_source());
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn assembler_size_bounds() {
        let ih = InfoHash([0; 20]);
        let cfg = ExtConfig::default();
        assert_eq!(
            MetadataAssembler::new(ih, 0, &cfg).map(|_| ()),
            Err(ExtError::BadMetadataSize { size: 0 })
        );
        assert_eq!(
            MetadataAssembler::new(ih, (16 << 20) + 1, &cfg).map(|_| ()),
            Err(ExtError::BadMetadataSize {
                size: (16 << 20) + 1
            })
        );
        let small = ExtConfig {
            max_metadata_size: 1000,
            ..cfg
        };
        assert!(MetadataAssembler::new(ih, 1001, &small).is_err());
        let a = MetadataAssembler::new(ih, 1000, &small).expect("new");
        assert_eq!(a.num_pieces(), 1);
        assert!(ExtError::BadMetadataSize { size: 0 }.is_peer_fault());
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn assembler_timeouts_and_rejects() {
        let (info, ih) = fake_info(20000);
        let cfg = ExtConfig {
            request_timeout_ms: 1000,
            ..ExtConfig::default()
        };
        let mut a = MetadataAssembler::new(ih, info.len() as u32, &cfg).expect("new");
        let (p1, p2, p3) = (1, 2, 3);
        assert_eq!(a.next_request(p1, 0), Some(0));
        assert_eq!(a.next_request(p1, 0), Some(1));
        // Nothing for another peer before the timeout, nor for p1 itself after it.
        assert_eq!(a.next_request(p2, 999), None);
        assert_eq!(a.next_request(p1, 5000), None);
        // After the timeout, another peer gets the piece.
        assert_eq!(a.next_request(p2, 1000), Some(0));
        assert_eq!(a.next_request(p2, 1000), Some(1));
        assert_eq!(a.next_request(p3, 1500), None);
        // A late answer from p1 still counts.
        assert_eq!(
            a.add_piece(0, metadata_piece(&info, 0).expect("p"), p1),
            Ok(None)
        );
        // p2 rejects piece 1: it is not offered back to p2, but to p3 at once.
        assert!(!a.reject(1, p3));
        assert!(!a.is_idle());
        assert!(a.reject(1, p2));
        assert!(a.is_idle(), "nothing requested, piece 1 missing");
        assert!(!a.reject(1, p2));
        assert!(!a.reject(99, p2));
        assert_eq!(a.next_request(p2, 1500), None);
        assert_eq!(a.next_request(p3, 1500), Some(1));
        // p3 leaves: its piece is free for p2 again.
        a.forget_peer(p3);
        assert_eq!(a.next_request(p2, 1500), Some(1));
        let done = a
            .add_piece(1, metadata_piece(&info, 1).expect("p"), p2)
            .expect("ok");
        assert_eq!(done, Some(Done::Complete(info)));
    }

    #[test]
    fn errors_display() {
        let e = ExtError::BadPieceLength { piece: 2, len: 3 };
        assert_eq!(std::format!("{e}"), "metadata piece 2 has invalid length 3");
        let e = ExtError::MissingField("piece");
        assert!(std::format!("{e}").contains("piece"));
    }

    fn all_parsers(data: &[u8]) {
        let cfg = ExtConfig::default();
        let _ = ExtHandshake::parse(data, &cfg);
        let mut few = [Token::default(); 4];
        let _ = ExtHandshake::parse_with(data, &mut few, &cfg);
        if let Ok(m) = MetadataMsg::parse(data) {
            let mut out = vec![0u8; data.len() + 64];
            let n = m.write(&mut out).expect("fits");
            assert_eq!(MetadataMsg::parse(&out[..n]), Ok(m));
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            all_parsers(&data);
        }

        #[test]
        fn parsers_never_panic_on_dict_prefixes(
            prefix in prop_oneof![
                Just(&b"d8:msg_typei1e5:piecei"[..]),
                Just(&b"d8:msg_typei0e5:piece"[..]),
                Just(&b"d1:md11:ut_metadatai"[..]),
                Just(&b"d13:metadata_sizei"[..]),
                Just(&b"d6:yourip"[..]),
            ],
            data in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut v = prefix.to_vec();
            v.extend_from_slice(&data);
            all_parsers(&v);
        }

        #[cfg(feature = "alloc")]
        #[test]
        fn assembler_never_panics(
            size in 1u32..70_000,
            ops in proptest::collection::vec((0u8..4, 0u32..6, 0u32..3, 0usize..20_000, 0u64..5000), 0..40),
        ) {
            let mut a = MetadataAssembler::new(InfoHash([1; 20]), size, &ExtConfig::default())
                .expect("new");
            let buf = vec![0u8; 20_000];
            for (op, piece, peer, len, now) in ops {
                match op {
                    0 if piece == 5 => a.set_single_source(now % 2 == 0),
                    0 => { let _ = a.next_request(peer, now); }
                    1 => { let _ = a.reject(piece, peer); }
                    2 => a.forget_peer(peer),
                    _ => {
                        let len = piece_len(size, piece).filter(|_| len % 2 == 0).unwrap_or(len);
                        let _ = a.add_piece(piece, &buf[..len], peer);
                    }
                }
                prop_assert!(a.pieces_have() <= a.num_pieces());
            }
        }
    }
}
