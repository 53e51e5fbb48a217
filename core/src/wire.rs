//! The BitTorrent peer wire protocol codec: handshake, messages and framing.
//!
//! This module turns bytes into [`Message`]s and back. It holds no connection state
//! (who is choked, what was requested): that is the session's job. Nothing allocates;
//! decoded messages borrow their payloads (bitfield, block data, extended payload) from
//! the input buffer, and encoding writes into a caller-provided `&mut [u8]`.
//!
//! Specifications:
//! - [BEP 3], section "peer protocol": the 68-byte handshake
//!   (`\x13BitTorrent protocol`, 8 reserved bytes, info-hash, peer id), then messages
//!   framed as a 4-byte big-endian length prefix followed by a 1-byte id and the payload;
//!   a zero length is a keep-alive. Messages `choke` (0) through `cancel` (8).
//! - [BEP 5], section "BitTorrent Protocol Extension": the DHT reserved bit
//!   (`reserved[7] & 0x01`) and the `port` message (9).
//! - [BEP 6], sections "Reserved Bit" and "New Messages": the fast-extension reserved bit
//!   (`reserved[7] & 0x04`) and `suggest piece` (0x0D), `have all` (0x0E),
//!   `have none` (0x0F), `reject request` (0x10), `allowed fast` (0x11).
//! - [BEP 10], section "Extension Protocol": the reserved bit (`reserved[5] & 0x10`) and
//!   the `extended` message (20), decoded here only as an envelope
//!   ([`Message::Extended`]): the extended id byte and the raw (bencoded) payload.
//! - [BEP 52] (BitTorrent v2), its new peer messages: the merkle hash messages
//!   `hash request` (21), `hashes` (22) and `hash reject` (23)
//!   ([`Message::HashRequest`], [`Message::Hashes`], [`Message::HashReject`]). All three
//!   start with the same 48-byte [`HashRequest`] (pieces root, base layer, index,
//!   length, proof layers); `hashes` then carries whole 32-byte hashes, at most
//!   [`Limits::max_hashes`] of them. The codec checks only the framing (a `hashes` body
//!   that is not a whole number of hashes is [`WireError::BadLength`]); whether the
//!   request makes sense for a file and whether the hashes prove out is
//!   [`crate::merkle::verify_hashes`] / [`crate::merkle::hashes_answer`].
//!
//! # Framing
//!
//! [`decode`] works like `httparse`: it is given everything received so far and returns
//! [`Status::Partial`] when more bytes are needed (not an error), or
//! [`Status::Complete`] with the message and the number of bytes it used. The length
//! prefix is checked against a per-message cap ([`Limits`]) as soon as the prefix and id
//! byte are in, before any body is awaited: fixed-size messages must have exactly their
//! size, variable-size ones at most their cap. A peer announcing a 4 GiB message is
//! therefore rejected after 5 bytes instead of being buffered. `Partial { needed }`
//! never asks for more than the rest of a frame that has already passed these checks,
//! so a host that reads exactly `needed` more bytes never buffers more than
//! [`Limits::max_frame_len`].
//!
//! # Unknown message ids
//!
//! Like libtorrent (which drops a peer sending a message id it has no handler for, with
//! `invalid_message`), an unknown id is an error: [`WireError::UnknownMessage`], raised
//! as soon as the id byte is seen. BEP 10 is the sanctioned way to extend the protocol;
//! its messages all travel inside [`Message::Extended`].
//!
//! # Errors
//!
//! Every [`WireError`] means the peer sent something invalid; the usual reaction is to
//! close the connection. Nothing in this module panics on any input: [`decode`] called
//! in a loop over arbitrary bytes always terminates with a message, `Partial` or an
//! error (`fuzz_decode`, with the `fuzzing` feature, is an entry point for a fuzz target).
//!
//! [BEP 3]: https://www.bittorrent.org/beps/bep_0003.html
//! [BEP 5]: https://www.bittorrent.org/beps/bep_0005.html
//! [BEP 6]: https://www.bittorrent.org/beps/bep_0006.html
//! [BEP 10]: https://www.bittorrent.org/beps/bep_0010.html
//! [BEP 52]: https://www.bittorrent.org/beps/bep_0052.html

use core::fmt;

use nom::number::complete::{be_u16, be_u32};
use nom::Parser;

use crate::ids::{BlockRef, InfoHash, PeerId, PieceIndex, BLOCK_LEN};

// ---------------------------------------------------------------------------------------
// Status and errors
// ---------------------------------------------------------------------------------------

/// The outcome of a parse that may need more input (like `httparse::Status`).
///
/// Deliberately not `#[non_exhaustive]`: like `core::task::Poll`, it has exactly two
/// states by definition.
#[must_use]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Status<T> {
    /// A value was parsed.
    Complete(T),
    /// The input ends early; this is not an error.
    Partial {
        /// At least this many more bytes are needed before parsing can progress
        /// (always at least 1, never beyond the end of the current frame).
        needed: usize,
    },
}

impl<T> Status<T> {
    /// Whether a value was parsed.
    pub const fn is_complete(&self) -> bool {
        matches!(self, Self::Complete(_))
    }

    /// Whether more input is needed.
    pub const fn is_partial(&self) -> bool {
        matches!(self, Self::Partial { .. })
    }

    /// The parsed value, if any.
    pub fn complete(self) -> Option<T> {
        match self {
            Self::Complete(v) => Some(v),
            Self::Partial { .. } => None,
        }
    }

    /// Maps the parsed value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Status<U> {
        match self {
            Self::Complete(v) => Status::Complete(f(v)),
            Self::Partial { needed } => Status::Partial { needed },
        }
    }
}

/// A protocol violation by the peer, found while decoding.
///
/// Every variant is the peer's fault ([`WireError::is_peer_fault`]); the usual reaction
/// is to disconnect.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum WireError {
    /// The handshake does not start with `\x13BitTorrent protocol`.
    BadProtocol,
    /// A variable-size message is longer than its cap in [`Limits`] (`len` is the
    /// length prefix: id byte plus payload).
    MessageTooLong {
        /// The message id.
        id: u8,
        /// The length prefix.
        len: u32,
    },
    /// A message has a length its kind never has (a fixed-size message of another
    /// size, or a variable-size one shorter than its fixed part).
    BadLength {
        /// The message id.
        id: u8,
        /// The length prefix.
        len: u32,
    },
    /// A message id this codec does not know (see the module docs).
    UnknownMessage {
        /// The message id.
        id: u8,
        /// The length prefix.
        len: u32,
    },
    /// A `request`, `cancel` or `reject` names a block longer than
    /// [`Limits::max_block_len`].
    BlockTooLong {
        /// The message id.
        id: u8,
        /// The block length named in the message.
        len: u32,
    },
}

impl WireError {
    /// Whether the peer is at fault. Always `true` today: decoding has no other failure
    /// mode (a short buffer is [`Status::Partial`], not an error).
    #[must_use]
    pub const fn is_peer_fault(&self) -> bool {
        true
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadProtocol => f.write_str("handshake is not \"\\x13BitTorrent protocol\""),
            Self::MessageTooLong { id, len } => {
                write!(f, "message id {id} of length {len} exceeds its limit")
            }
            Self::BadLength { id, len } => write!(f, "message id {id} has invalid length {len}"),
            Self::UnknownMessage { id, len } => {
                write!(f, "unknown message id {id} (length {len})")
            }
            Self::BlockTooLong { id, len } => {
                write!(
                    f,
                    "message id {id} names a block of {len} bytes, over the limit"
                )
            }
        }
    }
}

/// Why a message could not be encoded. Never the peer's fault.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is shorter than the encoding.
    BufferTooSmall {
        /// The number of bytes the encoding takes.
        needed: usize,
    },
    /// A payload too long for the 32-bit length prefix.
    PayloadTooLong {
        /// The payload length.
        len: usize,
    },
    /// The hashes of a [`Message::Hashes`] are not a whole number of 32-byte hashes
    /// (the peer could not decode the frame).
    BadHashesLen {
        /// The length of `hashes` in bytes.
        len: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BufferTooSmall { needed } => {
                write!(f, "output buffer too small, {needed} bytes needed")
            }
            Self::PayloadTooLong { len } => {
                write!(
                    f,
                    "payload of {len} bytes does not fit a 32-bit length prefix"
                )
            }
            Self::BadHashesLen { len } => {
                write!(f, "{len} bytes of hashes are not a multiple of 32")
            }
        }
    }
}

/// A bounds-checked writer over a caller buffer; it never panics.
struct Cursor<'o> {
    out: &'o mut [u8],
    pos: usize,
}

impl<'o> Cursor<'o> {
    /// Checks up front that `needed` bytes fit, so a partial write never happens.
    fn new(out: &'o mut [u8], needed: usize) -> Result<Self, EncodeError> {
        if out.len() < needed {
            return Err(EncodeError::BufferTooSmall { needed });
        }
        Ok(Self { out, pos: 0 })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self.pos.saturating_add(bytes.len());
        let dst = self
            .out
            .get_mut(self.pos..end)
            .ok_or(EncodeError::BufferTooSmall { needed: end })?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    fn u8(&mut self, v: u8) -> Result<(), EncodeError> {
        self.put(&[v])
    }

    fn u16(&mut self, v: u16) -> Result<(), EncodeError> {
        self.put(&v.to_be_bytes())
    }

    fn u32(&mut self, v: u32) -> Result<(), EncodeError> {
        self.put(&v.to_be_bytes())
    }
}

// ---------------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------------

/// The protocol string with its length byte: the first 20 bytes of every handshake.
pub(crate) const PROTOCOL: &[u8; 20] = b"\x13BitTorrent protocol";

/// The length of a handshake in bytes.
pub const HANDSHAKE_LEN: usize = 68;

/// The 8 reserved handshake bytes, which advertise protocol extensions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct Reserved(pub [u8; 8]);

impl Reserved {
    /// No extension bits set.
    pub const NONE: Self = Self([0; 8]);

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }

    const fn bit(&self, byte: usize, mask: u8) -> bool {
        self.0[byte] & mask != 0
    }

    const fn with_bit(mut self, byte: usize, mask: u8, on: bool) -> Self {
        if on {
            self.0[byte] |= mask;
        } else {
            self.0[byte] &= !mask;
        }
        self
    }

    /// BEP 5: the peer runs a DHT node (`reserved[7] & 0x01`).
    #[must_use]
    pub const fn dht(&self) -> bool {
        self.bit(7, 0x01)
    }

    /// Sets or clears the BEP 5 DHT bit.
    pub fn set_dht(&mut self, on: bool) {
        *self = self.with_dht(on);
    }

    /// This value with the BEP 5 DHT bit set or cleared.
    #[must_use]
    pub const fn with_dht(self, on: bool) -> Self {
        self.with_bit(7, 0x01, on)
    }

    /// BEP 52: the peer supports BitTorrent v2 (`reserved[7] & 0x10`).
    #[must_use]
    pub const fn v2(&self) -> bool {
        self.bit(7, 0x10)
    }

    /// This value with the BEP 52 v2 bit set or cleared.
    #[must_use]
    pub const fn with_v2(self, on: bool) -> Self {
        self.with_bit(7, 0x10, on)
    }

    /// BEP 6: the peer supports the fast extension (`reserved[7] & 0x04`).
    #[must_use]
    pub const fn fast(&self) -> bool {
        self.bit(7, 0x04)
    }

    /// Sets or clears the BEP 6 fast-extension bit.
    pub fn set_fast(&mut self, on: bool) {
        *self = self.with_fast(on);
    }

    /// This value with the BEP 6 fast-extension bit set or cleared.
    #[must_use]
    pub const fn with_fast(self, on: bool) -> Self {
        self.with_bit(7, 0x04, on)
    }

    /// BEP 10: the peer supports the extension protocol (`reserved[5] & 0x10`).
    #[must_use]
    pub const fn extension_protocol(&self) -> bool {
        self.bit(5, 0x10)
    }

    /// Sets or clears the BEP 10 extension-protocol bit.
    pub fn set_extension_protocol(&mut self, on: bool) {
        *self = self.with_extension_protocol(on);
    }

    /// This value with the BEP 10 extension-protocol bit set or cleared.
    #[must_use]
    pub const fn with_extension_protocol(self, on: bool) -> Self {
        self.with_bit(5, 0x10, on)
    }
}

/// The BEP 3 handshake: the first 68 bytes each side sends.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Handshake {
    /// Extension bits.
    pub reserved: Reserved,
    /// The torrent.
    pub info_hash: InfoHash,
    /// The sender's peer id.
    pub peer_id: PeerId,
}

/// Checks the part of the protocol string present in `buf`.
fn check_protocol(buf: &[u8]) -> Result<(), WireError> {
    let n = buf.len().min(PROTOCOL.len());
    match (buf.get(..n), PROTOCOL.get(..n)) {
        (Some(got), Some(want)) if got == want => Ok(()),
        _ => Err(WireError::BadProtocol),
    }
}

/// Copies `N` bytes at `at` out of `buf`, if present.
fn array_at<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..)?.first_chunk::<N>().copied()
}

impl Handshake {
    /// Parses a handshake from the start of `buf`. Returns `Partial` until 68 bytes are
    /// in, but [`WireError::BadProtocol`] as soon as the bytes present contradict the
    /// protocol string (a wrong first byte fails at once). On success the count is 68.
    pub fn parse(buf: &[u8]) -> Result<Status<(Handshake, usize)>, WireError> {
        check_protocol(buf)?;
        let (Some(reserved), Some(info_hash), Some(peer_id)) = (
            array_at::<8>(buf, 20),
            array_at::<20>(buf, 28),
            array_at::<20>(buf, 48),
        ) else {
            return Ok(Status::Partial {
                needed: HANDSHAKE_LEN.saturating_sub(buf.len()),
            });
        };
        let hs = Handshake {
            reserved: Reserved(reserved),
            info_hash: InfoHash(info_hash),
            peer_id: PeerId(peer_id),
        };
        Ok(Status::Complete((hs, HANDSHAKE_LEN)))
    }

    /// The info-hash from the first 48 bytes of a handshake, before the peer id has
    /// arrived: lets an accepting side pick the torrent (and answer) early, as BEP 3
    /// allows. Checks the protocol string like [`Handshake::parse`].
    pub fn peek_info_hash(buf: &[u8]) -> Result<Status<InfoHash>, WireError> {
        check_protocol(buf)?;
        match array_at::<20>(buf, 28) {
            Some(h) => Ok(Status::Complete(InfoHash(h))),
            None => Ok(Status::Partial {
                needed: 48usize.saturating_sub(buf.len()),
            }),
        }
    }

    /// Writes the 68-byte handshake into `out` and returns 68.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Cursor::new(out, HANDSHAKE_LEN)?;
        w.put(PROTOCOL)?;
        w.put(self.reserved.as_bytes())?;
        w.put(self.info_hash.as_bytes())?;
        w.put(self.peer_id.as_bytes())?;
        Ok(w.pos)
    }
}

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

/// Message ids (the byte after the length prefix).
pub(crate) mod msg_id {
    /// BEP 3 `choke`.
    pub(crate) const CHOKE: u8 = 0;
    /// BEP 3 `unchoke`.
    pub(crate) const UNCHOKE: u8 = 1;
    /// BEP 3 `interested`.
    pub(crate) const INTERESTED: u8 = 2;
    /// BEP 3 `not interested`.
    pub(crate) const NOT_INTERESTED: u8 = 3;
    /// BEP 3 `have`.
    pub(crate) const HAVE: u8 = 4;
    /// BEP 3 `bitfield`.
    pub(crate) const BITFIELD: u8 = 5;
    /// BEP 3 `request`.
    pub(crate) const REQUEST: u8 = 6;
    /// BEP 3 `piece`.
    pub const PIECE: u8 = 7;
    /// BEP 3 `cancel`.
    pub(crate) const CANCEL: u8 = 8;
    /// BEP 5 `port`.
    pub const PORT: u8 = 9;
    /// BEP 6 `suggest piece`.
    pub(crate) const SUGGEST: u8 = 0x0D;
    /// BEP 6 `have all`.
    pub(crate) const HAVE_ALL: u8 = 0x0E;
    /// BEP 6 `have none`.
    pub(crate) const HAVE_NONE: u8 = 0x0F;
    /// BEP 6 `reject request`.
    pub(crate) const REJECT: u8 = 0x10;
    /// BEP 6 `allowed fast`.
    pub(crate) const ALLOWED_FAST: u8 = 0x11;
    /// BEP 10 `extended`.
    pub(crate) const EXTENDED: u8 = 20;
    /// BEP 52 `hash request`.
    pub(crate) const HASH_REQUEST: u8 = 21;
    /// BEP 52 `hashes`.
    pub(crate) const HASHES: u8 = 22;
    /// BEP 52 `hash reject`.
    pub(crate) const HASH_REJECT: u8 = 23;
}

/// The length of the [`HashRequest`] part of a BEP 52 message: pieces root and four
/// 32-bit fields.
pub const HASH_REQUEST_LEN: usize = 48;

/// The size of one hash in a BEP 52 `hashes` message (SHA-256).
pub const HASH_LEN: usize = 32;

/// The payload of a BEP 52 `hash request` and `hash reject`, and the header of
/// `hashes`: a range of one layer of a file's merkle tree, and how much proof to send.
///
/// The codec carries the fields as they are; their meaning (checked by
/// [`crate::merkle`]):
/// - `base`: the layer, counted in layers above the leaves (0: the 16 KiB block
///   hashes; `log2(piece length / 16 KiB)`: the piece layer).
/// - `index`: the first hash asked for, an offset in that layer; a multiple of `length`.
/// - `length`: how many hashes; BEP 52 wants a power of two of at least 2 (unless cut
///   by the end of the layer) and no more than 512.
/// - `proof_layers`: how many ancestor layers of proof the answer should cover.
///   The layers below the root of the subtree the `length` hashes span are counted
///   but need no hash, so an answer carries [`HashRequest::proof_hashes`] uncle hashes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct HashRequest {
    /// The file's `pieces root`.
    pub root: [u8; 32],
    /// The layer of the requested hashes, in layers above the leaves.
    pub base: u32,
    /// The offset of the first requested hash in that layer.
    pub index: u32,
    /// The number of requested hashes.
    pub length: u32,
    /// The number of ancestor layers to prove, counting the ones inside the subtree.
    pub proof_layers: u32,
}

impl HashRequest {
    /// The number of uncle hashes a `hashes` answer carries after its `length` base
    /// hashes, as libtorrent counts them (`bt_peer_connection::on_hashes`):
    /// `max(0, proof_layers - (log2(next_pow2(length)) - 1))`. The `length` hashes fill
    /// a subtree of height `log2(length)`; its interior layers need no proof, so the
    /// first uncle is the sibling of that subtree's root and the last one the closest
    /// to the file's root.
    ///
    /// For `length` 0 or 1 this is `proof_layers + 1` (libtorrent's receiving side;
    /// its sending side sends one fewer, so such requests are best avoided, and
    /// [`crate::merkle`] rejects them).
    #[must_use]
    pub const fn proof_hashes(&self) -> u32 {
        if self.length <= 1 {
            return self.proof_layers.saturating_add(1);
        }
        // The height of the subtree: ceil(log2(length)), at least 1 here.
        let height = u32::BITS - (self.length - 1).leading_zeros();
        self.proof_layers.saturating_sub(height - 1)
    }

    /// The number of hashes in a `hashes` answer to this request: `length` plus
    /// [`HashRequest::proof_hashes`].
    #[must_use]
    pub const fn answer_hashes(&self) -> u64 {
        self.length as u64 + self.proof_hashes() as u64
    }

    fn write(&self, w: &mut Cursor<'_>) -> Result<(), EncodeError> {
        w.put(&self.root)?;
        w.u32(self.base)?;
        w.u32(self.index)?;
        w.u32(self.length)?;
        w.u32(self.proof_layers)
    }
}

/// The length of a `piece` message's header: length prefix, id, index, begin.
pub const PIECE_HEADER_LEN: usize = 13;

/// One peer wire message, borrowing its variable payload from the decode buffer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Message<'a> {
    /// BEP 3: a zero length prefix, no id.
    KeepAlive,
    /// BEP 3 id 0: the sender will not serve requests.
    Choke,
    /// BEP 3 id 1: the sender will serve requests.
    Unchoke,
    /// BEP 3 id 2: the sender wants pieces the receiver has.
    Interested,
    /// BEP 3 id 3: the opposite of `Interested`.
    NotInterested,
    /// BEP 3 id 4: the sender has (verified) this piece.
    Have(PieceIndex),
    /// BEP 3 id 5: one bit per piece, high bit of the first byte is piece 0. The codec
    /// only bounds its length ([`Limits::max_pieces`]); the session checks it against
    /// the torrent's piece count and spare bits.
    Bitfield(&'a [u8]),
    /// BEP 3 id 6: asks for a block. The codec bounds `len` by
    /// [`Limits::max_block_len`]; range checks are [`crate::ids::Geometry::is_valid_block`].
    Request(BlockRef),
    /// BEP 3 id 7: a block of data.
    Piece {
        /// The piece.
        piece: PieceIndex,
        /// Byte offset of `data` inside the piece.
        offset: u32,
        /// The block, borrowed from the input.
        data: &'a [u8],
    },
    /// BEP 3 id 8: withdraws a request.
    Cancel(BlockRef),
    /// BEP 5 id 9: the sender's DHT UDP port.
    Port(u16),
    /// BEP 6 id 0x0D: the sender suggests downloading this piece.
    Suggest(PieceIndex),
    /// BEP 6 id 0x0E: the sender has every piece.
    HaveAll,
    /// BEP 6 id 0x0F: the sender has no piece.
    HaveNone,
    /// BEP 6 id 0x10: the sender will not serve this request.
    Reject(BlockRef),
    /// BEP 6 id 0x11: the receiver may request this piece even while choked.
    AllowedFast(PieceIndex),
    /// BEP 10 id 20: an extension message; `id` 0 is the extension handshake, others
    /// are the ids negotiated there. `payload` is raw (usually bencode).
    Extended {
        /// The extended message id.
        id: u8,
        /// The payload after the extended id, borrowed from the input.
        payload: &'a [u8],
    },
    /// BEP 52 id 21: asks for a range of a file's merkle tree layer with its proof.
    HashRequest(HashRequest),
    /// BEP 52 id 22: the answer to a `hash request`: the request, then the `length`
    /// base-layer hashes followed by the uncle hashes, the one closest to the root last
    /// (see [`HashRequest::proof_hashes`]). `hashes` is a whole number of 32-byte
    /// hashes, at most [`Limits::max_hashes`]; it is not checked against the request
    /// here ([`crate::merkle::verify_hashes`] does).
    Hashes {
        /// The request this answers.
        req: HashRequest,
        /// The concatenated 32-byte hashes, borrowed from the input.
        hashes: &'a [u8],
    },
    /// BEP 52 id 23: the sender will not answer this `hash request`.
    HashReject(HashRequest),
}

/// Length-prefix bounds (`min`, `max`) of a message id, or `None` for unknown ids.
/// Arithmetic is 64-bit so no limit configuration can overflow.
fn len_bounds(id: u8, limits: &Limits) -> Option<(u64, u64)> {
    use msg_id::*;
    let fixed = |n: u64| Some((n, n));
    match id {
        CHOKE | UNCHOKE | INTERESTED | NOT_INTERESTED | HAVE_ALL | HAVE_NONE => fixed(1),
        HAVE | SUGGEST | ALLOWED_FAST => fixed(5),
        REQUEST | CANCEL | REJECT => fixed(13),
        PORT => fixed(3),
        BITFIELD => Some((1, 1 + u64::from(limits.max_pieces).div_ceil(8))),
        PIECE => Some((9, 9 + u64::from(limits.max_block_len))),
        EXTENDED => Some((2, 2 + u64::from(limits.max_extended_len))),
        HASH_REQUEST | HASH_REJECT => fixed(1 + HASH_REQUEST_LEN as u64),
        HASHES => Some((
            1 + HASH_REQUEST_LEN as u64,
            1 + HASH_REQUEST_LEN as u64 + HASH_LEN as u64 * u64::from(limits.max_hashes),
        )),
        _ => None,
    }
}

/// Checks a length prefix against the bounds of its id.
fn check_len(id: u8, len: u32, limits: &Limits) -> Result<(), WireError> {
    let Some((min, max)) = len_bounds(id, limits) else {
        return Err(WireError::UnknownMessage { id, len });
    };
    let l = u64::from(len);
    if l < min || (min == max && l != max) {
        Err(WireError::BadLength { id, len })
    } else if l > max {
        Err(WireError::MessageTooLong { id, len })
    } else if id == msg_id::HASHES && (l - min) % HASH_LEN as u64 != 0 {
        // Not a whole number of hashes: decided from the prefix, like the caps.
        Err(WireError::BadLength { id, len })
    } else {
        Ok(())
    }
}

type NomResult<'a, O> = nom::IResult<&'a [u8], O, ()>;

fn u32_field(i: &[u8]) -> NomResult<'_, u32> {
    be_u32(i)
}

/// Parses `index begin length` of a request, cancel or reject.
fn block_ref(id: u8, len: u32, body: &[u8], limits: &Limits) -> Result<BlockRef, WireError> {
    let (_, (piece, offset, block_len)) = (u32_field, u32_field, u32_field)
        .parse(body)
        .map_err(|_| WireError::BadLength { id, len })?;
    if block_len > limits.max_block_len {
        return Err(WireError::BlockTooLong { id, len: block_len });
    }
    Ok(BlockRef {
        piece: PieceIndex(piece),
        offset,
        len: block_len,
    })
}

/// Parses the 48-byte [`HashRequest`] at the start of a BEP 52 message body; returns
/// it with the rest of the body.
fn hash_request(body: &[u8]) -> Option<(HashRequest, &[u8])> {
    let (root, rest) = body.split_first_chunk::<32>()?;
    let (rest, (base, index, length, proof_layers)) = (u32_field, u32_field, u32_field, u32_field)
        .parse(rest)
        .ok()?;
    let req = HashRequest {
        root: *root,
        base,
        index,
        length,
        proof_layers,
    };
    Some((req, rest))
}

/// Parses the body (after the id byte) of a frame whose length was already checked.
fn parse_body<'a>(
    id: u8,
    len: u32,
    body: &'a [u8],
    limits: &Limits,
) -> Result<Message<'a>, WireError> {
    use msg_id::*;
    let bad = WireError::BadLength { id, len };
    let index = |body: &[u8]| -> Result<PieceIndex, WireError> {
        u32_field(body).map(|(_, v)| PieceIndex(v)).map_err(|_| bad)
    };
    Ok(match id {
        CHOKE => Message::Choke,
        UNCHOKE => Message::Unchoke,
        INTERESTED => Message::Interested,
        NOT_INTERESTED => Message::NotInterested,
        HAVE_ALL => Message::HaveAll,
        HAVE_NONE => Message::HaveNone,
        HAVE => Message::Have(index(body)?),
        SUGGEST => Message::Suggest(index(body)?),
        ALLOWED_FAST => Message::AllowedFast(index(body)?),
        REQUEST => Message::Request(block_ref(id, len, body, limits)?),
        CANCEL => Message::Cancel(block_ref(id, len, body, limits)?),
        REJECT => Message::Reject(block_ref(id, len, body, limits)?),
        PORT => Message::Port(be_u16::<_, ()>(body).map(|(_, p)| p).map_err(|_| bad)?),
        BITFIELD => Message::Bitfield(body),
        PIECE => {
            let (data, (piece, offset)) = (u32_field, u32_field).parse(body).map_err(|_| bad)?;
            Message::Piece {
                piece: PieceIndex(piece),
                offset,
                data,
            }
        }
        EXTENDED => {
            let (&ext, payload) = body.split_first().ok_or(bad)?;
            Message::Extended { id: ext, payload }
        }
        HASH_REQUEST => Message::HashRequest(hash_request(body).ok_or(bad)?.0),
        HASH_REJECT => Message::HashReject(hash_request(body).ok_or(bad)?.0),
        HASHES => {
            let (req, hashes) = hash_request(body).ok_or(bad)?;
            if hashes.len() % HASH_LEN != 0 {
                return Err(bad);
            }
            Message::Hashes { req, hashes }
        }
        _ => return Err(WireError::UnknownMessage { id, len }),
    })
}

/// Decodes one message from the start of `buf`.
///
/// Returns `Complete((message, consumed))`, or `Partial { needed }` when `buf` holds
/// less than a whole frame. The length prefix is validated against `limits` as soon as
/// the prefix and the id byte are present (5 bytes), before the body is awaited.
/// `needed` is 4 minus what is present while the prefix is incomplete, 1 while only the
/// prefix is present, then the rest of the validated frame.
///
/// Never panics, whatever `buf` holds.
pub fn decode<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Status<(Message<'a>, usize)>, WireError> {
    let Some((prefix, rest)) = buf.split_first_chunk::<4>() else {
        return Ok(Status::Partial {
            needed: 4usize.saturating_sub(buf.len()),
        });
    };
    let len = u32::from_be_bytes(*prefix);
    if len == 0 {
        return Ok(Status::Complete((Message::KeepAlive, 4)));
    }
    let Some((&id, after_id)) = rest.split_first() else {
        return Ok(Status::Partial { needed: 1 });
    };
    check_len(id, len, limits)?;
    // `len` passed its cap; the body is `len - 1` bytes after the id.
    let body_len = usize::try_from(len - 1).map_err(|_| WireError::MessageTooLong { id, len })?;
    let Some(body) = after_id.get(..body_len) else {
        return Ok(Status::Partial {
            needed: body_len - after_id.len(),
        });
    };
    let msg = parse_body(id, len, body, limits)?;
    Ok(Status::Complete((msg, 5 + body_len)))
}

impl<'a> Message<'a> {
    /// The message id, or `None` for a keep-alive.
    #[must_use]
    pub const fn id(&self) -> Option<u8> {
        use msg_id::*;
        Some(match self {
            Self::KeepAlive => return None,
            Self::Choke => CHOKE,
            Self::Unchoke => UNCHOKE,
            Self::Interested => INTERESTED,
            Self::NotInterested => NOT_INTERESTED,
            Self::Have(_) => HAVE,
            Self::Bitfield(_) => BITFIELD,
            Self::Request(_) => REQUEST,
            Self::Piece { .. } => PIECE,
            Self::Cancel(_) => CANCEL,
            Self::Port(_) => PORT,
            Self::Suggest(_) => SUGGEST,
            Self::HaveAll => HAVE_ALL,
            Self::HaveNone => HAVE_NONE,
            Self::Reject(_) => REJECT,
            Self::AllowedFast(_) => ALLOWED_FAST,
            Self::Extended { .. } => EXTENDED,
            Self::HashRequest(_) => HASH_REQUEST,
            Self::Hashes { .. } => HASHES,
            Self::HashReject(_) => HASH_REJECT,
        })
    }

    /// For a `Piece`, the block it carries (`len` is the data length); `None` for other
    /// messages or data longer than `u32::MAX`.
    #[must_use]
    pub fn piece_block(&self) -> Option<BlockRef> {
        match *self {
            Self::Piece {
                piece,
                offset,
                data,
            } => Some(BlockRef {
                piece,
                offset,
                len: u32::try_from(data.len()).ok()?,
            }),
            _ => None,
        }
    }

    /// The length-prefix value: id byte plus payload (0 for a keep-alive). Saturates
    /// for payloads that cannot be encoded.
    fn body_len(&self) -> usize {
        match *self {
            Self::KeepAlive => 0,
            Self::Choke | Self::Unchoke | Self::Interested | Self::NotInterested => 1,
            Self::HaveAll | Self::HaveNone => 1,
            Self::Have(_) | Self::Suggest(_) | Self::AllowedFast(_) => 5,
            Self::Request(_) | Self::Cancel(_) | Self::Reject(_) => 13,
            Self::Port(_) => 3,
            Self::Bitfield(b) => b.len().saturating_add(1),
            Self::Piece { data, .. } => data.len().saturating_add(9),
            Self::Extended { payload, .. } => payload.len().saturating_add(2),
            Self::HashRequest(_) | Self::HashReject(_) => 1 + HASH_REQUEST_LEN,
            Self::Hashes { hashes, .. } => hashes.len().saturating_add(1 + HASH_REQUEST_LEN),
        }
    }

    /// The number of bytes [`Message::encode`] writes, length prefix included.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        self.body_len().saturating_add(4)
    }

    /// Writes the framed message (length prefix, id, payload) into `out` and returns the
    /// number of bytes written. Fails without writing when `out` is too short, or for
    /// a [`Message::Hashes`] whose `hashes` is not a whole number of 32-byte hashes.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        if let Self::Hashes { hashes, .. } = *self {
            if hashes.len() % HASH_LEN != 0 {
                return Err(EncodeError::BadHashesLen { len: hashes.len() });
            }
        }
        let body_len = self.body_len();
        let prefix = u32::try_from(body_len).map_err(|_| EncodeError::PayloadTooLong {
            len: body_len.saturating_sub(1),
        })?;
        let mut w = Cursor::new(out, self.encoded_len())?;
        w.u32(prefix)?;
        if let Some(id) = self.id() {
            w.u8(id)?;
        }
        match *self {
            Self::KeepAlive
            | Self::Choke
            | Self::Unchoke
            | Self::Interested
            | Self::NotInterested
            | Self::HaveAll
            | Self::HaveNone => {}
            Self::Have(p) | Self::Suggest(p) | Self::AllowedFast(p) => w.u32(p.0)?,
            Self::Request(b) | Self::Cancel(b) | Self::Reject(b) => {
                w.u32(b.piece.0)?;
                w.u32(b.offset)?;
                w.u32(b.len)?;
            }
            Self::Port(port) => w.u16(port)?,
            Self::Bitfield(bits) => w.put(bits)?,
            Self::Piece {
                piece,
                offset,
                data,
            } => {
                w.u32(piece.0)?;
                w.u32(offset)?;
                w.put(data)?;
            }
            Self::Extended { id, payload } => {
                w.u8(id)?;
                w.put(payload)?;
            }
            Self::HashRequest(r) | Self::HashReject(r) => r.write(&mut w)?,
            Self::Hashes { req, hashes } => {
                req.write(&mut w)?;
                w.put(hashes)?;
            }
        }
        Ok(w.pos)
    }
}

/// Writes only the 13-byte header of a `piece` message carrying `block` (length prefix
/// `9 + block.len`, id 7, index, begin), so that the host can send `block.len` bytes of
/// data straight from its own buffer after it. Returns [`PIECE_HEADER_LEN`].
pub fn encode_piece_header(block: &BlockRef, out: &mut [u8]) -> Result<usize, EncodeError> {
    let prefix = block
        .len
        .checked_add(9)
        .ok_or(EncodeError::PayloadTooLong {
            len: usize::try_from(block.len).unwrap_or(usize::MAX),
        })?;
    let mut w = Cursor::new(out, PIECE_HEADER_LEN)?;
    w.u32(prefix)?;
    w.u8(msg_id::PIECE)?;
    w.u32(block.piece.0)?;
    w.u32(block.offset)?;
    Ok(w.pos)
}

// ---------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------

/// Caps on what a peer may send, checked from the length prefix.
///
/// The defaults ([`Limits::DEFAULT`]) follow libtorrent: up to 2^21 pieces, blocks up
/// to 128 KiB (btcore itself requests [`BLOCK_LEN`] = 16 KiB blocks, but some clients
/// request up to 128 KiB and most serve them), extended payloads up to 1 MiB (BEP 9
/// metadata pieces are 16 KiB; PEX and the extension handshake are far smaller), and
/// BEP 52 `hashes` messages of up to [`Limits::DEFAULT_MAX_HASHES`] hashes. A small
/// device can lower them to bound its receive buffer: see [`Limits::max_frame_len`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Limits {
    /// The most pieces a torrent may have; bounds a `bitfield` to
    /// `1 + ceil(max_pieces / 8)` bytes after the prefix. Default 2^21.
    pub max_pieces: u32,
    /// The longest block a `request`, `cancel`, `reject` may name and a `piece` may
    /// carry. Default 128 KiB.
    pub max_block_len: u32,
    /// The longest payload of an `extended` message (after its extended id byte).
    /// Default 1 MiB.
    pub max_extended_len: u32,
    /// The most 32-byte hashes (requested ones and proof together) a BEP 52 `hashes`
    /// message may carry: bounds it to `49 + 32 * max_hashes` bytes after the prefix.
    /// Default [`Limits::DEFAULT_MAX_HASHES`] (a 264 KiB frame); a host that only asks
    /// for piece-layer hashes 512 at a time can set 512 + 64 (an 18 KiB frame), and one
    /// that never asks for hashes 0 (a `hashes` frame is then exactly 49 bytes).
    pub max_hashes: u32,
}

impl Limits {
    /// The default limits (see the type docs).
    pub const DEFAULT: Self = Self {
        max_pieces: 1 << 21,
        max_block_len: 8 * BLOCK_LEN,
        max_extended_len: 1 << 20,
        max_hashes: Self::DEFAULT_MAX_HASHES,
    };

    /// The default [`Limits::max_hashes`]: 8192 requested hashes (the most libtorrent
    /// asks for or serves, `validate_hash_request`: the blocks of a 128 MiB piece) plus
    /// 64 proof hashes (more than the height of any file's tree). An answer to a
    /// request for 512 piece-layer hashes, BEP 52's recommended most, with a full
    /// proof is under 600 hashes (19 KiB).
    pub const DEFAULT_MAX_HASHES: u32 = 8192 + 64;

    /// The longest frame (length prefix included) that [`decode`] accepts under these
    /// limits: the receive buffer a host needs.
    #[must_use]
    pub fn max_frame_len(&self) -> u64 {
        (0..=u8::MAX)
            .filter_map(|id| len_bounds(id, self))
            .map(|(_, max)| max.min(u64::from(u32::MAX)) + 4)
            .max()
            .unwrap_or(4)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

// ---------------------------------------------------------------------------------------
// Iteration and fuzzing
// ---------------------------------------------------------------------------------------

/// An iterator decoding consecutive messages from one buffer.
///
/// Yields `Ok(message)` per complete frame, then stops at the first incomplete frame
/// (see [`Frames::consumed`] and [`Frames::needed`]) or after yielding the first error.
#[derive(Clone, Debug)]
#[must_use = "iterators do nothing unless consumed"]
pub struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: Limits,
    needed: usize,
    done: bool,
}

impl<'a> Frames<'a> {
    /// Iterates over the messages at the start of `buf`.
    pub fn new(buf: &'a [u8], limits: &Limits) -> Self {
        Self {
            buf,
            pos: 0,
            limits: *limits,
            needed: 0,
            done: false,
        }
    }

    /// Bytes used by the messages yielded so far.
    #[must_use]
    pub const fn consumed(&self) -> usize {
        self.pos
    }

    /// The undecoded tail of the buffer.
    #[must_use]
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    /// After the iterator stopped on an incomplete frame, the `needed` count of that
    /// [`Status::Partial`]; 0 otherwise.
    #[must_use]
    pub const fn needed(&self) -> usize {
        self.needed
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Message<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match decode(self.rest(), &self.limits) {
            Ok(Status::Complete((msg, used))) => {
                self.pos = self.pos.saturating_add(used);
                Some(Ok(msg))
            }
            Ok(Status::Partial { needed }) => {
                self.needed = needed;
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl core::iter::FusedIterator for Frames<'_> {}

/// Entry point for a fuzz target: decodes `data` as a handshake (if it starts like one)
/// followed by a message stream, under both the default limits and tight ones, and
/// checks that each decoded message re-encodes to exactly the bytes it came from. BEP 52
/// hash messages also go through [`crate::merkle::fuzz_hash_request`].
///
/// Returns `false` if that invariant fails (a codec bug); a fuzz target asserts it.
/// It must never panic. Uses only the stack (a 128-byte scratch buffer; longer
/// messages are checked by length only).
#[cfg(any(test, feature = "fuzzing"))]
#[must_use]
pub fn fuzz_decode(data: &[u8]) -> bool {
    let mut stream = data;
    if let Ok(Status::Complete((hs, used))) = Handshake::parse(data) {
        let mut out = [0u8; HANDSHAKE_LEN];
        if hs.encode(&mut out) != Ok(HANDSHAKE_LEN) || data.get(..used) != Some(&out[..]) {
            return false;
        }
        stream = data.get(used..).unwrap_or(&[]);
    }
    let tight = Limits {
        max_pieces: 64,
        max_block_len: 32,
        max_extended_len: 16,
        max_hashes: 2,
    };
    for limits in [Limits::DEFAULT, tight] {
        let mut frames = Frames::new(stream, &limits);
        let mut start = 0;
        while let Some(Ok(msg)) = frames.next() {
            let end = frames.consumed();
            let Some(src) = stream.get(start..end) else {
                return false;
            };
            if msg.encoded_len() != src.len() {
                return false;
            }
            let mut out = [0u8; 128];
            if let Some(dst) = out.get_mut(..src.len()) {
                if msg.encode(dst) != Ok(src.len()) || dst != src {
                    return false;
                }
            }
            let bep52 = match msg {
                Message::HashRequest(r) | Message::HashReject(r) => Some((r, &[][..])),
                Message::Hashes { req, hashes } => Some((req, hashes)),
                _ => None,
            };
            if let Some((req, hashes)) = bep52 {
                if !crate::merkle::fuzz_hash_request(&req, hashes) {
                    return false;
                }
            }
            start = end;
        }
    }
    true
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    const L: Limits = Limits::DEFAULT;

    fn br(piece: u32, offset: u32, len: u32) -> BlockRef {
        BlockRef {
            piece: PieceIndex(piece),
            offset,
            len,
        }
    }

    fn enc(m: &Message<'_>) -> Vec<u8> {
        let mut out = vec![0u8; m.encoded_len()];
        let n = m.encode(&mut out).expect("encode");
        assert_eq!(n, out.len());
        out
    }

    /// Every message kind with its hand-written encoding.
    fn scripted() -> Vec<(Message<'static>, &'static [u8])> {
        vec![
            (Message::KeepAlive, &[0, 0, 0, 0]),
            (Message::Choke, &[0, 0, 0, 1, 0]),
            (Message::Unchoke, &[0, 0, 0, 1, 1]),
            (Message::Interested, &[0, 0, 0, 1, 2]),
            (Message::NotInterested, &[0, 0, 0, 1, 3]),
            (
                Message::Have(PieceIndex(0x0102_0304)),
                &[0, 0, 0, 5, 4, 1, 2, 3, 4],
            ),
            (
                Message::Bitfield(&[0xff, 0x80]),
                &[0, 0, 0, 3, 5, 0xff, 0x80],
            ),
            (Message::Bitfield(&[]), &[0, 0, 0, 1, 5]),
            (
                Message::Request(br(1, 0x4000, 0x4000)),
                &[0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0],
            ),
            (
                Message::Piece {
                    piece: PieceIndex(2),
                    offset: 0x10,
                    data: b"abc",
                },
                &[0, 0, 0, 12, 7, 0, 0, 0, 2, 0, 0, 0, 0x10, b'a', b'b', b'c'],
            ),
            (
                Message::Piece {
                    piece: PieceIndex(0),
                    offset: 0,
                    data: &[],
                },
                &[0, 0, 0, 9, 7, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                Message::Cancel(br(3, 0, 0x20000)),
                &[0, 0, 0, 13, 8, 0, 0, 0, 3, 0, 0, 0, 0, 0, 2, 0, 0],
            ),
            (Message::Port(6881), &[0, 0, 0, 3, 9, 0x1a, 0xe1]),
            (
                Message::Suggest(PieceIndex(7)),
                &[0, 0, 0, 5, 0x0d, 0, 0, 0, 7],
            ),
            (Message::HaveAll, &[0, 0, 0, 1, 0x0e]),
            (Message::HaveNone, &[0, 0, 0, 1, 0x0f]),
            (
                Message::Reject(br(4, 0x8000, 0x4000)),
                &[0, 0, 0, 13, 0x10, 0, 0, 0, 4, 0, 0, 0x80, 0, 0, 0, 0x40, 0],
            ),
            (
                Message::AllowedFast(PieceIndex(9)),
                &[0, 0, 0, 5, 0x11, 0, 0, 0, 9],
            ),
            (
                Message::Extended {
                    id: 0,
                    payload: b"de",
                },
                &[0, 0, 0, 4, 20, 0, b'd', b'e'],
            ),
            (
                Message::Extended {
                    id: 3,
                    payload: &[],
                },
                &[0, 0, 0, 2, 20, 3],
            ),
        ]
    }

    #[test]
    fn scripted_encode() {
        for (m, bytes) in scripted() {
            assert_eq!(m.encoded_len(), bytes.len(), "{m:?}");
            assert_eq!(enc(&m), bytes, "{m:?}");
        }
    }

    #[test]
    fn scripted_decode() {
        for (m, bytes) in scripted() {
            assert_eq!(
                decode(bytes, &L),
                Ok(Status::Complete((m, bytes.len()))),
                "{m:?}"
            );
            // Trailing bytes are left alone.
            let mut more = bytes.to_vec();
            more.extend_from_slice(&[0, 0]);
            assert_eq!(
                decode(&more, &L),
                Ok(Status::Complete((m, bytes.len()))),
                "{m:?}"
            );
        }
    }

    #[test]
    fn scripted_partial_every_prefix() {
        for (m, bytes) in scripted() {
            for cut in 0..bytes.len() {
                let st = decode(&bytes[..cut], &L).expect("no error on a prefix");
                let Status::Partial { needed } = st else {
                    panic!("{m:?} complete at {cut}");
                };
                assert!(
                    needed >= 1 && cut + needed <= bytes.len(),
                    "{m:?} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn encode_buffer_too_small() {
        let m = Message::Have(PieceIndex(1));
        let mut out = [0xaau8; 8];
        assert_eq!(
            m.encode(&mut out),
            Err(EncodeError::BufferTooSmall { needed: 9 })
        );
        assert_eq!(out, [0xaa; 8], "nothing written");
        let mut out = [0u8; 20];
        assert_eq!(m.encode(&mut out), Ok(9));
    }

    #[test]
    fn piece_header_helper() {
        let data = [7u8; 5];
        let block = br(2, 0x4000, 5);
        let mut hdr = [0u8; PIECE_HEADER_LEN];
        assert_eq!(encode_piece_header(&block, &mut hdr), Ok(PIECE_HEADER_LEN));
        let mut joined = hdr.to_vec();
        joined.extend_from_slice(&data);
        let whole = Message::Piece {
            piece: PieceIndex(2),
            offset: 0x4000,
            data: &data,
        };
        assert_eq!(joined, enc(&whole));
        assert_eq!(whole.piece_block(), Some(block));
        let mut short = [0u8; 12];
        assert_eq!(
            encode_piece_header(&block, &mut short),
            Err(EncodeError::BufferTooSmall { needed: 13 })
        );
        assert!(matches!(
            encode_piece_header(&br(0, 0, u32::MAX), &mut hdr),
            Err(EncodeError::PayloadTooLong { .. })
        ));
    }

    #[test]
    fn keep_alive_alone_and_in_stream() {
        assert_eq!(
            decode(&[0, 0, 0, 0], &L),
            Ok(Status::Complete((Message::KeepAlive, 4)))
        );
        let stream = [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0];
        let got: Vec<_> = Frames::new(&stream, &L).collect();
        assert_eq!(
            got,
            vec![
                Ok(Message::KeepAlive),
                Ok(Message::Unchoke),
                Ok(Message::KeepAlive)
            ]
        );
    }

    #[test]
    fn partial_needed_counts() {
        assert_eq!(decode(&[], &L), Ok(Status::Partial { needed: 4 }));
        assert_eq!(decode(&[0, 0], &L), Ok(Status::Partial { needed: 2 }));
        assert_eq!(decode(&[0, 0, 0, 5], &L), Ok(Status::Partial { needed: 1 }));
        assert_eq!(
            decode(&[0, 0, 0, 5, 4], &L),
            Ok(Status::Partial { needed: 4 })
        );
        assert_eq!(
            decode(&[0, 0, 0, 5, 4, 0, 0], &L),
            Ok(Status::Partial { needed: 2 })
        );
        // A maximal piece is fine to wait for.
        let max = 9 + L.max_block_len;
        let mut hdr = max.to_be_bytes().to_vec();
        hdr.push(7);
        assert_eq!(
            decode(&hdr, &L),
            Ok(Status::Partial {
                needed: max as usize - 1
            })
        );
    }

    /// A frame of `len` with id `id` and nothing else: must be decided from these 5 bytes.
    fn head(len: u32, id: u8) -> Vec<u8> {
        let mut v = len.to_be_bytes().to_vec();
        v.push(id);
        v
    }

    #[test]
    fn caps_rejected_from_prefix_alone() {
        use msg_id::*;
        let bad = |len, id| Err(WireError::BadLength { id, len });
        let long = |len, id| Err(WireError::MessageTooLong { id, len });
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff, 7], &L),
            long(u32::MAX, PIECE)
        );
        for id in [
            CHOKE,
            UNCHOKE,
            INTERESTED,
            NOT_INTERESTED,
            HAVE_ALL,
            HAVE_NONE,
        ] {
            assert_eq!(decode(&head(2, id), &L), bad(2, id));
            assert_eq!(decode(&head(u32::MAX, id), &L), bad(u32::MAX, id));
        }
        for id in [HAVE, SUGGEST, ALLOWED_FAST] {
            assert_eq!(decode(&head(4, id), &L), bad(4, id));
            assert_eq!(decode(&head(6, id), &L), bad(6, id));
            assert_eq!(decode(&head(u32::MAX, id), &L), bad(u32::MAX, id));
        }
        for id in [REQUEST, CANCEL, REJECT] {
            assert_eq!(decode(&head(12, id), &L), bad(12, id));
            assert_eq!(decode(&head(14, id), &L), bad(14, id));
            assert_eq!(decode(&head(u32::MAX, id), &L), bad(u32::MAX, id));
        }
        assert_eq!(decode(&head(2, PORT), &L), bad(2, PORT));
        assert_eq!(decode(&head(5, PORT), &L), bad(5, PORT));
        assert_eq!(decode(&head(u32::MAX, PORT), &L), bad(u32::MAX, PORT));

        let bf_max = 1 + (1u32 << 21) / 8;
        assert!(decode(&head(bf_max, BITFIELD), &L)
            .expect("ok")
            .is_partial());
        assert_eq!(
            decode(&head(bf_max + 1, BITFIELD), &L),
            long(bf_max + 1, BITFIELD)
        );
        assert_eq!(
            decode(&head(u32::MAX, BITFIELD), &L),
            long(u32::MAX, BITFIELD)
        );

        let piece_max = 9 + 128 * 1024;
        assert!(decode(&head(piece_max, PIECE), &L)
            .expect("ok")
            .is_partial());
        assert_eq!(
            decode(&head(piece_max + 1, PIECE), &L),
            long(piece_max + 1, PIECE)
        );
        assert_eq!(decode(&head(8, PIECE), &L), bad(8, PIECE));

        let ext_max = 2 + (1u32 << 20);
        assert!(decode(&head(ext_max, EXTENDED), &L)
            .expect("ok")
            .is_partial());
        assert_eq!(
            decode(&head(ext_max + 1, EXTENDED), &L),
            long(ext_max + 1, EXTENDED)
        );
        assert_eq!(decode(&head(1, EXTENDED), &L), bad(1, EXTENDED));

        // BEP 52: `hash request` and `hash reject` are exactly 49, `hashes` 49 plus
        // whole hashes up to its cap.
        for id in [HASH_REQUEST, HASH_REJECT] {
            assert!(decode(&head(49, id), &L).expect("ok").is_partial());
            assert_eq!(decode(&head(48, id), &L), bad(48, id));
            assert_eq!(decode(&head(50, id), &L), bad(50, id));
            assert_eq!(decode(&head(81, id), &L), bad(81, id));
            assert_eq!(decode(&head(u32::MAX, id), &L), bad(u32::MAX, id));
        }
        let hashes_max = 49 + 32 * Limits::DEFAULT_MAX_HASHES;
        for ok in [49, 81, 49 + 32 * 512, hashes_max] {
            assert!(decode(&head(ok, HASHES), &L).expect("ok").is_partial());
        }
        for not_whole in [50, 80, 82, 49 + 32 * 512 + 31, hashes_max - 1] {
            assert_eq!(decode(&head(not_whole, HASHES), &L), bad(not_whole, HASHES));
        }
        assert_eq!(decode(&head(48, HASHES), &L), bad(48, HASHES));
        assert_eq!(decode(&head(1, HASHES), &L), bad(1, HASHES));
        assert_eq!(
            decode(&head(hashes_max + 32, HASHES), &L),
            long(hashes_max + 32, HASHES)
        );
        assert_eq!(decode(&head(u32::MAX, HASHES), &L), long(u32::MAX, HASHES));

        for id in [10u8, 11, 12, 0x12, 19, 24, 0xff] {
            assert_eq!(
                decode(&head(1, id), &L),
                Err(WireError::UnknownMessage { id, len: 1 })
            );
            assert_eq!(
                decode(&head(u32::MAX, id), &L),
                Err(WireError::UnknownMessage { id, len: u32::MAX })
            );
        }
    }

    #[test]
    fn custom_limits() {
        let lim = Limits {
            max_pieces: 9,
            max_block_len: 16,
            max_extended_len: 4,
            max_hashes: 1,
        };
        // ceil(9 / 8) = 2 bitfield bytes.
        assert!(decode(&[0, 0, 0, 3, 5, 0xff, 0x80], &lim)
            .expect("ok")
            .is_complete());
        assert_eq!(
            decode(&head(4, 5), &lim),
            Err(WireError::MessageTooLong { id: 5, len: 4 })
        );
        assert_eq!(
            decode(&head(26, 7), &lim),
            Err(WireError::MessageTooLong { id: 7, len: 26 })
        );
        assert_eq!(
            decode(&head(7, 20), &lim),
            Err(WireError::MessageTooLong { id: 20, len: 7 })
        );
        // A `hashes` message of one hash is this limit's longest frame.
        assert_eq!(lim.max_frame_len(), 4 + 49 + 32);
        assert_eq!(
            decode(&head(49 + 64, 22), &lim),
            Err(WireError::MessageTooLong {
                id: 22,
                len: 49 + 64
            })
        );
        assert!(decode(&head(49 + 32, 22), &lim).expect("ok").is_partial());
        let no_hashes = Limits {
            max_hashes: 0,
            ..lim
        };
        // With no room for a hash, `hashes` has one size, like a fixed-size message.
        assert_eq!(
            decode(&head(49 + 32, 22), &no_hashes),
            Err(WireError::BadLength {
                id: 22,
                len: 49 + 32
            })
        );
        // The fixed 53-byte hash request frame sets the floor.
        assert_eq!(no_hashes.max_frame_len(), 4 + 49);
        assert_eq!(L.max_frame_len(), 4 + 2 + (1 << 20));
        // Silly limits do not overflow.
        let huge = Limits {
            max_pieces: u32::MAX,
            max_block_len: u32::MAX,
            max_extended_len: u32::MAX,
            max_hashes: u32::MAX,
        };
        assert_eq!(huge.max_frame_len(), 4 + u64::from(u32::MAX));
        assert!(decode(&[0xff, 0xff, 0xff, 0xff, 7], &huge)
            .expect("ok")
            .is_partial());
    }

    #[test]
    fn request_block_len_cap() {
        let at = Message::Request(br(0, 0, 128 * 1024));
        assert_eq!(decode(&enc(&at), &L), Ok(Status::Complete((at, 17))));
        for m in [
            Message::Request(br(0, 0, 128 * 1024 + 1)),
            Message::Cancel(br(0, 0, u32::MAX)),
            Message::Reject(br(0, 0, 200_000)),
        ] {
            let b = enc(&m);
            let Some(id) = m.id() else { unreachable!() };
            let (Message::Request(r) | Message::Cancel(r) | Message::Reject(r)) = m else {
                unreachable!()
            };
            assert_eq!(
                decode(&b, &L),
                Err(WireError::BlockTooLong { id, len: r.len })
            );
        }
    }

    #[test]
    fn frames_iterator() {
        let mut stream = Vec::new();
        for (m, _) in scripted() {
            stream.extend_from_slice(&enc(&m));
        }
        let full = stream.len();
        stream.extend_from_slice(&[0, 0, 0, 5, 4, 0]);
        let mut it = Frames::new(&stream, &L);
        let got: Vec<_> = it.by_ref().collect::<Result<_, _>>().expect("no error");
        let want: Vec<_> = scripted().into_iter().map(|(m, _)| m).collect();
        assert_eq!(got, want);
        assert_eq!(it.consumed(), full);
        assert_eq!(it.rest(), &[0, 0, 0, 5, 4, 0]);
        assert_eq!(it.needed(), 3);
        assert_eq!(it.next(), None);

        let bad = [0, 0, 0, 1, 1, 0, 0, 0, 1, 99, 0, 0, 0, 1, 1];
        let got: Vec<_> = Frames::new(&bad, &L).collect();
        assert_eq!(
            got,
            vec![
                Ok(Message::Unchoke),
                Err(WireError::UnknownMessage { id: 99, len: 1 })
            ]
        );
    }

    const HR: HashRequest = HashRequest {
        root: [0xab; 32],
        base: 2,
        index: 512,
        length: 512,
        proof_layers: 10,
    };

    /// The 48-byte BEP 52 header of `HR`, written out field by field.
    fn hr_bytes() -> Vec<u8> {
        let mut v = vec![0xab; 32];
        v.extend_from_slice(&[0, 0, 0, 2]);
        v.extend_from_slice(&[0, 0, 2, 0]);
        v.extend_from_slice(&[0, 0, 2, 0]);
        v.extend_from_slice(&[0, 0, 0, 10]);
        v
    }

    #[test]
    fn bep52_messages_roundtrip() {
        let mut hash_request = vec![0, 0, 0, 49, 21];
        hash_request.extend(hr_bytes());
        let mut hash_reject = vec![0, 0, 0, 49, 23];
        hash_reject.extend(hr_bytes());
        let data: Vec<u8> = (0..96).map(|i| i as u8).collect();
        let mut hashes = vec![0, 0, 0, 49 + 96, 22];
        hashes.extend(hr_bytes());
        hashes.extend_from_slice(&data);
        let mut no_hashes = vec![0, 0, 0, 49, 22];
        no_hashes.extend(hr_bytes());
        let cases = [
            (Message::HashRequest(HR), hash_request),
            (Message::HashReject(HR), hash_reject),
            (
                Message::Hashes {
                    req: HR,
                    hashes: &data,
                },
                hashes,
            ),
            (
                Message::Hashes {
                    req: HR,
                    hashes: &[],
                },
                no_hashes,
            ),
        ];
        for (m, bytes) in &cases {
            assert_eq!(m.encoded_len(), bytes.len(), "{m:?}");
            assert_eq!(&enc(m), bytes, "{m:?}");
            assert_eq!(
                decode(bytes, &L),
                Ok(Status::Complete((*m, bytes.len()))),
                "{m:?}"
            );
            for cut in 0..bytes.len() {
                let Ok(Status::Partial { needed }) = decode(&bytes[..cut], &L) else {
                    panic!("{m:?} not partial at {cut}");
                };
                assert!(needed >= 1 && cut + needed <= bytes.len());
            }
            assert!(fuzz_decode(bytes));
        }
        assert_eq!(Message::HashRequest(HR).id(), Some(21));
        assert_eq!(
            Message::Hashes {
                req: HR,
                hashes: &[]
            }
            .id(),
            Some(22)
        );
        assert_eq!(Message::HashReject(HR).id(), Some(23));
        // All three in one stream, after a handshake.
        let mut stream = hs_bytes([0; 8]);
        for (_, bytes) in &cases {
            stream.extend_from_slice(bytes);
        }
        assert!(fuzz_decode(&stream));
        let got: Vec<_> = Frames::new(&stream[68..], &L).collect();
        let want: Vec<_> = cases.iter().map(|(m, _)| Ok(*m)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn bep52_bad_lengths() {
        // A `hashes` body that is not a whole number of hashes, whatever the cap.
        let mut b = vec![0, 0, 0, 49 + 33, 22];
        b.extend(hr_bytes());
        b.extend_from_slice(&[7; 33]);
        assert_eq!(
            decode(&b, &L),
            Err(WireError::BadLength { id: 22, len: 82 })
        );
        // Decided from the prefix alone.
        assert_eq!(
            decode(&b[..5], &L),
            Err(WireError::BadLength { id: 22, len: 82 })
        );
        // Too many hashes for the limit.
        let lim = Limits { max_hashes: 2, ..L };
        let three = [9u8; 96];
        let m = Message::Hashes {
            req: HR,
            hashes: &three,
        };
        let bytes = enc(&m);
        assert_eq!(
            decode(&bytes, &lim),
            Err(WireError::MessageTooLong {
                id: 22,
                len: 49 + 96
            })
        );
        assert_eq!(decode(&bytes, &L), Ok(Status::Complete((m, bytes.len()))));
        // A hash request or reject of the wrong size.
        for id in [21u8, 23] {
            let mut b = vec![0, 0, 0, 48, id];
            b.extend_from_slice(&hr_bytes()[..47]);
            assert_eq!(decode(&b, &L), Err(WireError::BadLength { id, len: 48 }));
            let mut b = vec![0, 0, 0, 81, id];
            b.extend(hr_bytes());
            b.extend_from_slice(&[0; 32]);
            assert_eq!(decode(&b, &L), Err(WireError::BadLength { id, len: 81 }));
        }
        // The encoder refuses what the decoder would.
        let odd = Message::Hashes {
            req: HR,
            hashes: &[1; 31],
        };
        let mut out = [0u8; 200];
        assert_eq!(
            odd.encode(&mut out),
            Err(EncodeError::BadHashesLen { len: 31 })
        );
        assert_eq!(
            Message::HashRequest(HR).encode(&mut out[..52]),
            Err(EncodeError::BufferTooSmall { needed: 53 })
        );
    }

    #[test]
    fn bep52_proof_hash_count() {
        let r = |length, proof_layers| HashRequest {
            root: [0; 32],
            base: 0,
            index: 0,
            length,
            proof_layers,
        };
        // libtorrent: max(0, proof_layers - (log2(next_pow2(length)) - 1)).
        assert_eq!(r(2, 0).proof_hashes(), 0);
        assert_eq!(r(2, 1).proof_hashes(), 1);
        assert_eq!(r(2, 5).proof_hashes(), 5);
        assert_eq!(r(4, 1).proof_hashes(), 0);
        assert_eq!(r(4, 2).proof_hashes(), 1);
        assert_eq!(r(512, 8).proof_hashes(), 0);
        assert_eq!(r(512, 9).proof_hashes(), 1);
        assert_eq!(r(512, 20).proof_hashes(), 12);
        assert_eq!(r(3, 2).proof_hashes(), 1);
        assert_eq!(r(1, 0).proof_hashes(), 1);
        assert_eq!(r(0, 0).proof_hashes(), 1);
        assert_eq!(r(u32::MAX, u32::MAX).proof_hashes(), u32::MAX - 31);
        assert_eq!(r(512, 20).answer_hashes(), 524);
        assert_eq!(
            r(u32::MAX, u32::MAX).answer_hashes(),
            2 * u64::from(u32::MAX) - 31
        );
    }

    fn hs_bytes(reserved: [u8; 8]) -> Vec<u8> {
        let mut v = PROTOCOL.to_vec();
        v.extend_from_slice(&reserved);
        v.extend((0..20).map(|i| 0xa0 + i));
        v.extend((0..20).map(|i| 0x30 + i));
        v
    }

    #[test]
    fn handshake_roundtrip_and_bits() {
        let cases: [(Reserved, [u8; 8]); 5] = [
            (Reserved::NONE, [0; 8]),
            (Reserved::NONE.with_dht(true), [0, 0, 0, 0, 0, 0, 0, 0x01]),
            (Reserved::NONE.with_fast(true), [0, 0, 0, 0, 0, 0, 0, 0x04]),
            (
                Reserved::NONE.with_extension_protocol(true),
                [0, 0, 0, 0, 0, 0x10, 0, 0],
            ),
            (
                Reserved::NONE
                    .with_dht(true)
                    .with_fast(true)
                    .with_extension_protocol(true),
                [0, 0, 0, 0, 0, 0x10, 0, 0x05],
            ),
        ];
        for (reserved, raw) in cases {
            assert_eq!(reserved.0, raw);
            let bytes = hs_bytes(raw);
            let hs = Handshake {
                reserved,
                info_hash: InfoHash(core::array::from_fn(|i| 0xa0 + i as u8)),
                peer_id: PeerId(core::array::from_fn(|i| 0x30 + i as u8)),
            };
            let mut out = [0u8; 70];
            assert_eq!(hs.encode(&mut out), Ok(68));
            assert_eq!(&out[..68], &bytes[..]);
            assert_eq!(Handshake::parse(&bytes), Ok(Status::Complete((hs, 68))));
            let parsed = Handshake::parse(&bytes)
                .expect("ok")
                .complete()
                .expect("complete")
                .0;
            assert_eq!(parsed.reserved.dht(), raw[7] & 1 != 0);
            assert_eq!(parsed.reserved.fast(), raw[7] & 4 != 0);
            assert_eq!(parsed.reserved.extension_protocol(), raw[5] & 0x10 != 0);
            assert_eq!(
                Handshake::peek_info_hash(&bytes[..48]),
                Ok(Status::Complete(hs.info_hash))
            );
        }
        let mut r = Reserved([0xff; 8]);
        r.set_dht(false);
        r.set_fast(false);
        r.set_extension_protocol(false);
        assert_eq!(r.0, [0xff, 0xff, 0xff, 0xff, 0xff, 0xef, 0xff, 0xfa]);
        assert!(!r.dht() && !r.fast() && !r.extension_protocol());
        r.set_fast(true);
        assert!(r.fast());
        let mut small = [0u8; 67];
        let hs = Handshake {
            reserved: Reserved::NONE,
            info_hash: InfoHash::default(),
            peer_id: PeerId::default(),
        };
        assert_eq!(
            hs.encode(&mut small),
            Err(EncodeError::BufferTooSmall { needed: 68 })
        );
    }

    #[test]
    fn handshake_partial() {
        let bytes = hs_bytes([0; 8]);
        for cut in 0..68 {
            assert_eq!(
                Handshake::parse(&bytes[..cut]),
                Ok(Status::Partial { needed: 68 - cut })
            );
        }
        assert_eq!(
            Handshake::peek_info_hash(&bytes[..47]),
            Ok(Status::Partial { needed: 1 })
        );
    }

    #[test]
    fn handshake_wrong_protocol() {
        assert_eq!(Handshake::parse(&[0x14]), Err(WireError::BadProtocol));
        assert_eq!(
            Handshake::parse(b"\x13Bit"),
            Ok(Status::Partial { needed: 64 })
        );
        assert_eq!(
            Handshake::parse(b"\x13Bittorrent"),
            Err(WireError::BadProtocol)
        );
        let mut bytes = hs_bytes([0; 8]);
        bytes[19] = b'X';
        assert_eq!(
            Handshake::parse(&bytes[..19]),
            Ok(Status::Partial { needed: 49 })
        );
        assert_eq!(Handshake::parse(&bytes[..20]), Err(WireError::BadProtocol));
        assert_eq!(Handshake::parse(&bytes), Err(WireError::BadProtocol));
        assert_eq!(
            Handshake::peek_info_hash(&bytes),
            Err(WireError::BadProtocol)
        );
        // A message frame is not a handshake.
        assert_eq!(
            Handshake::parse(&[0, 0, 0, 1, 1]),
            Err(WireError::BadProtocol)
        );
    }

    #[test]
    fn errors_display_and_fault() {
        use core::fmt::Write as _;
        let errs = [
            WireError::BadProtocol,
            WireError::MessageTooLong { id: 7, len: 1 },
            WireError::BadLength { id: 4, len: 1 },
            WireError::UnknownMessage { id: 99, len: 1 },
            WireError::BlockTooLong { id: 6, len: 1 },
        ];
        for e in errs {
            assert!(e.is_peer_fault());
            let mut s = std::string::String::new();
            write!(s, "{e}").expect("fmt");
            assert!(!s.is_empty());
        }
        let mut s = std::string::String::new();
        write!(s, "{}", EncodeError::BufferTooSmall { needed: 3 }).expect("fmt");
        assert!(s.contains('3'));
        let mut s = std::string::String::new();
        write!(s, "{}", EncodeError::BadHashesLen { len: 33 }).expect("fmt");
        assert!(s.contains("33"));
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    const KNOWN: [u8; 20] = [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 20, 21, 22, 23, 24,
    ];

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let tight = Limits {
            max_pieces: 16,
            max_block_len: 8,
            max_extended_len: 8,
            max_hashes: 3,
        };
        let mut completed = 0usize;
        for round in 0..5000 {
            let len = (rng.next() % 200) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Bias towards plausible frames: small length prefixes and known ids.
            if round % 2 == 0 {
                let mut i = 0;
                while i + 5 <= buf.len() {
                    // A known id with a length that usually fits it.
                    let id = KNOWN[(rng.next() % KNOWN.len() as u64) as usize];
                    let l = match len_bounds(id, &tight) {
                        Some((min, max)) if min == max => min as u32,
                        Some((min, _)) if id == msg_id::HASHES => {
                            min as u32 + 32 * (rng.next() % 4) as u32
                        }
                        Some((min, _)) => min as u32 + (rng.next() % 12) as u32,
                        None => 1,
                    };
                    let l = if rng.next() % 16 == 0 { l + 1 } else { l };
                    buf[i..i + 4].copy_from_slice(&l.to_be_bytes());
                    buf[i + 4] = id;
                    i += 4 + l as usize;
                }
            }
            if round % 7 == 0 && buf.len() >= 20 {
                buf[..20].copy_from_slice(PROTOCOL);
            }
            for limits in [L, tight] {
                let mut rest = &buf[..];
                while let Ok(Status::Complete((m, used))) = decode(rest, &limits) {
                    assert!(used >= 4 && used <= rest.len());
                    assert_eq!(m.encoded_len(), used);
                    rest = &rest[used..];
                    completed += 1;
                }
            }
            let _ = Handshake::parse(&buf);
            let _ = Handshake::peek_info_hash(&buf);
            assert!(fuzz_decode(&buf));
        }
        assert!(completed > 1000, "bias produced only {completed} messages");
    }

    // ----- property tests -----

    /// An owned description of a message, from which a borrowed `Message` is built.
    #[derive(Clone, Debug)]
    struct Spec {
        kind: u8,
        a: u32,
        b: u32,
        c: u32,
        small: u8,
        data: Vec<u8>,
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            0u8..20,
            any::<u32>(),
            any::<u32>(),
            0..=L.max_block_len,
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..48),
        )
            .prop_map(|(kind, a, b, c, small, data)| Spec {
                kind,
                a,
                b,
                c,
                small,
                data,
            })
    }

    fn build(s: &Spec) -> Message<'_> {
        let block = br(s.a, s.b, s.c);
        match s.kind {
            0 => Message::KeepAlive,
            1 => Message::Choke,
            2 => Message::Unchoke,
            3 => Message::Interested,
            4 => Message::NotInterested,
            5 => Message::Have(PieceIndex(s.a)),
            6 => Message::Bitfield(&s.data),
            7 => Message::Request(block),
            8 => Message::Piece {
                piece: PieceIndex(s.a),
                offset: s.b,
                data: &s.data,
            },
            9 => Message::Cancel(block),
            10 => Message::Port(s.a as u16),
            11 => Message::Suggest(PieceIndex(s.a)),
            12 => Message::HaveAll,
            13 => Message::HaveNone,
            14 => Message::Reject(block),
            15 => Message::AllowedFast(PieceIndex(s.a)),
            16 => Message::Extended {
                id: s.small,
                payload: &s.data,
            },
            17 => Message::HashRequest(hreq(s)),
            18 => Message::HashReject(hreq(s)),
            _ => Message::Hashes {
                req: hreq(s),
                hashes: &s.data[..s.data.len() / 32 * 32],
            },
        }
    }

    fn hreq(s: &Spec) -> HashRequest {
        HashRequest {
            root: core::array::from_fn(|i| s.small ^ i as u8),
            base: s.a,
            index: s.b,
            length: s.c,
            proof_layers: s.a ^ s.b,
        }
    }

    /// Decodes a whole stream, returning each message re-encoded (owned).
    fn decode_all(stream: &[u8]) -> Vec<Vec<u8>> {
        let mut it = Frames::new(stream, &L);
        let out = it.by_ref().map(|m| enc(&m.expect("valid"))).collect();
        assert_eq!(it.consumed(), stream.len());
        out
    }

    /// Feeds `stream` to a receive buffer in the given chunks, decoding whenever bytes
    /// arrive, like a host's read loop.
    fn decode_chunked(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut acc: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain(core::iter::once(&stream.len())) {
            let to = to.clamp(from, stream.len());
            acc.extend_from_slice(&stream[from..to]);
            from = to;
            loop {
                match decode(&acc, &L).expect("valid") {
                    Status::Complete((m, used)) => {
                        out.push(enc(&m));
                        acc.drain(..used);
                    }
                    Status::Partial { needed } => {
                        assert!(needed >= 1);
                        break;
                    }
                }
            }
        }
        assert!(acc.is_empty());
        out
    }

    proptest! {
        #[test]
        fn roundtrip(s in spec()) {
            let m = build(&s);
            let bytes = enc(&m);
            prop_assert_eq!(bytes.len(), m.encoded_len());
            prop_assert_eq!(decode(&bytes, &L), Ok(Status::Complete((m, bytes.len()))));
            prop_assert!(fuzz_decode(&bytes));
        }

        #[test]
        fn framing_two_chunks_every_split(specs in prop::collection::vec(spec(), 1..6)) {
            let msgs: Vec<Message<'_>> = specs.iter().map(build).collect();
            let stream: Vec<u8> = msgs.iter().flat_map(|m| enc(m)).collect();
            let want: Vec<Vec<u8>> = msgs.iter().map(|m| enc(m)).collect();
            prop_assert_eq!(&decode_all(&stream), &want);
            for split in 0..=stream.len() {
                prop_assert_eq!(&decode_chunked(&stream, &[split]), &want, "split {}", split);
            }
        }

        #[test]
        fn framing_arbitrary_chunks(
            specs in prop::collection::vec(spec(), 1..10),
            sizes in prop::collection::vec(1usize..40, 0..30),
        ) {
            let msgs: Vec<Message<'_>> = specs.iter().map(build).collect();
            let stream: Vec<u8> = msgs.iter().flat_map(|m| enc(m)).collect();
            let cuts: Vec<usize> = sizes
                .iter()
                .scan(0usize, |at, n| { *at += n; Some(*at) })
                .collect();
            prop_assert_eq!(decode_chunked(&stream, &cuts), decode_all(&stream));
        }

        /// Reading exactly `needed` bytes each time never crosses a frame boundary.
        #[test]
        fn needed_is_exact_lower_bound(specs in prop::collection::vec(spec(), 1..6)) {
            let msgs: Vec<Message<'_>> = specs.iter().map(build).collect();
            let stream: Vec<u8> = msgs.iter().flat_map(|m| enc(m)).collect();
            let mut acc: Vec<u8> = Vec::new();
            let mut pos = 0;
            let mut got = Vec::new();
            while pos < stream.len() || !acc.is_empty() {
                match decode(&acc, &L).expect("valid") {
                    Status::Complete((m, used)) => {
                        prop_assert_eq!(used, acc.len(), "read past a frame");
                        got.push(m.encoded_len());
                        acc.clear();
                    }
                    Status::Partial { needed } => {
                        prop_assert!(pos + needed <= stream.len());
                        acc.extend_from_slice(&stream[pos..pos + needed]);
                        pos += needed;
                    }
                }
            }
            let want: Vec<usize> = msgs.iter().map(Message::encoded_len).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            prop_assert!(fuzz_decode(&bytes));
        }
    }
}
