//! Validated identifiers and the torrent's piece/block geometry.
//!
//! Every index that crosses a layer boundary is a newtype, so a piece index is never
//! mistaken for a block offset. [`Geometry`] is the one place that knows how long a
//! piece or a block is: all pieces are `piece_length` long except the last, which is
//! what remains; blocks are [`BLOCK_LEN`] (16 KiB) except the last block of a piece.
//! All byte arithmetic is 64-bit and checked, so torrents above 4 GiB work on 32-bit
//! targets too.

use core::fmt;

/// The block size every client requests (BEP 3 convention, 16 KiB).
pub const BLOCK_LEN: u32 = 16 * 1024;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as lowercase hex into `out` (which must be twice as long) and
/// returns the written part as `&str`. Returns `None` when `out` is too short.
pub(crate) fn hex_encode<'o>(bytes: &[u8], out: &'o mut [u8]) -> Option<&'o str> {
    let n = bytes.len().checked_mul(2)?;
    let out = out.get_mut(..n)?;
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    core::str::from_utf8(out).ok()
}

/// The value of one hex digit (either case).
pub(crate) fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes exactly `N` bytes from `2 * N` hex digits (either case).
pub(crate) fn hex_decode<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (hex_val(s[2 * i])? << 4) | hex_val(s[2 * i + 1])?;
    }
    Some(out)
}

/// Decodes RFC 4648 base32 (upper or lower case, no padding) of exactly `N` bytes;
/// `s` must be `ceil(8 * N / 5)` characters long and carry no stray trailing bits.
pub(crate) fn base32_decode<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != (8 * N).div_ceil(5) {
        return None;
    }
    let mut out = [0u8; N];
    let (mut acc, mut bits, mut pos) = (0u32, 0u32, 0usize);
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(pos)? = (acc >> bits) as u8;
            pos += 1;
            acc &= (1 << bits) - 1;
        }
    }
    (pos == N && acc == 0).then_some(out)
}

macro_rules! id20 {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub [u8; 20]);

        impl $name {
            /// The raw 20 bytes.
            pub const fn as_bytes(&self) -> &[u8; 20] {
                &self.0
            }
            /// Parses 40 hex digits.
            pub fn from_hex(s: &[u8]) -> Option<Self> {
                hex_decode::<20>(s).map(Self)
            }
            /// Lowercase hex into a caller buffer.
            pub fn to_hex(&self) -> [u8; 40] {
                let mut out = [0u8; 40];
                let _ = hex_encode(&self.0, &mut out);
                out
            }
        }

        impl From<[u8; 20]> for $name {
            fn from(b: [u8; 20]) -> Self {
                Self(b)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }
    };
}

id20!(
    /// The v1 info-hash: SHA-1 of the raw bencoded `info` dictionary.
    InfoHash
);
id20!(
    /// A peer's 20-byte id from its handshake.
    PeerId
);

impl PeerId {
    /// btcore's own peer id: [`crate::PEER_ID_PREFIX`] and 12 characters of `[0-9a-z]`
    /// drawn from `seed` (the host seeds it from the OS; the same seed gives the same id).
    pub fn generate(seed: u64) -> Self {
        const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(crate::PEER_ID_PREFIX);
        let mut r = crate::rng::Rng::new(seed);
        for b in &mut id[8..] {
            *b = ALPHABET[r.below(36) as usize];
        }
        Self(id)
    }
}

impl InfoHash {
    /// Parses a magnet `btih` value: 40 hex digits or 32 base32 characters.
    pub fn from_btih(s: &[u8]) -> Option<Self> {
        match s.len() {
            40 => Self::from_hex(s),
            32 => base32_decode::<20>(s).map(Self),
            _ => None,
        }
    }
}

/// The index of a piece. Only [`Geometry::piece`] makes one that is known to be in range.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct PieceIndex(pub u32);

impl PieceIndex {
    /// As a `usize` for indexing tables.
    pub const fn get(self) -> usize {
        self.0 as usize
    }
}

/// One block of one piece: what a `request`, `piece`, `cancel` or `reject` names.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct BlockRef {
    /// The piece.
    pub piece: PieceIndex,
    /// Byte offset inside the piece.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

/// Why a geometry could not be built.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum GeometryError {
    /// The piece length is zero.
    ZeroPieceLength,
    /// The total size is zero.
    ZeroLength,
    /// More pieces than a `u32` can count.
    TooManyPieces,
}

/// Piece and block arithmetic of one torrent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Geometry {
    total_len: u64,
    piece_len: u32,
    num_pieces: u32,
}

impl Geometry {
    /// A geometry for `total_len` bytes cut into pieces of `piece_len` bytes.
    pub fn new(total_len: u64, piece_len: u32) -> Result<Self, GeometryError> {
        if piece_len == 0 {
            return Err(GeometryError::ZeroPieceLength);
        }
        if total_len == 0 {
            return Err(GeometryError::ZeroLength);
        }
        let n = total_len.div_ceil(u64::from(piece_len));
        let num_pieces = u32::try_from(n).map_err(|_| GeometryError::TooManyPieces)?;
        Ok(Self {
            total_len,
            piece_len,
            num_pieces,
        })
    }

    /// Total bytes of the torrent (pad files included).
    pub const fn total_len(&self) -> u64 {
        self.total_len
    }
    /// The nominal piece length.
    pub const fn piece_len(&self) -> u32 {
        self.piece_len
    }
    /// Number of pieces.
    pub const fn num_pieces(&self) -> u32 {
        self.num_pieces
    }

    /// A checked piece index.
    pub fn piece(&self, index: u32) -> Option<PieceIndex> {
        (index < self.num_pieces).then_some(PieceIndex(index))
    }

    /// Byte offset of a piece in the whole torrent.
    pub fn piece_offset(&self, piece: PieceIndex) -> u64 {
        u64::from(piece.0) * u64::from(self.piece_len)
    }

    /// Length of a piece: `piece_len`, except the last.
    pub fn piece_size(&self, piece: PieceIndex) -> u32 {
        let rest = self.total_len.saturating_sub(self.piece_offset(piece));
        // rest <= piece_len when this is the last piece, so the cast cannot truncate.
        rest.min(u64::from(self.piece_len)) as u32
    }

    /// Number of blocks in a piece.
    pub fn blocks_in_piece(&self, piece: PieceIndex) -> u32 {
        self.piece_size(piece).div_ceil(BLOCK_LEN)
    }

    /// The `n`-th block of a piece, if the piece has one.
    pub fn block(&self, piece: PieceIndex, n: u32) -> Option<BlockRef> {
        let size = self.piece_size(piece);
        let offset = n.checked_mul(BLOCK_LEN)?;
        if offset >= size {
            return None;
        }
        Some(BlockRef {
            piece,
            offset,
            len: (size - offset).min(BLOCK_LEN),
        })
    }

    /// Whether a block named by a peer lies inside its piece and is of a sane length
    /// (non-zero, at most `max_len`).
    pub fn is_valid_block(&self, b: &BlockRef, max_len: u32) -> bool {
        b.piece.0 < self.num_pieces
            && b.len > 0
            && b.len <= max_len
            && u64::from(b.offset) + u64::from(b.len) <= u64::from(self.piece_size(b.piece))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_peer_ids_carry_the_prefix_and_follow_the_seed() {
        let a = PeerId::generate(1);
        assert_eq!(&a.0[..8], crate::PEER_ID_PREFIX);
        assert!(a.0[8..]
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
        assert_eq!(a, PeerId::generate(1));
        assert_ne!(a, PeerId::generate(2));
    }

    #[test]
    fn last_piece_is_shorter() {
        let g = Geometry::new(100_000, 32_768).expect("geometry");
        assert_eq!(g.num_pieces(), 4);
        assert_eq!(g.piece_size(PieceIndex(0)), 32_768);
        assert_eq!(g.piece_size(PieceIndex(3)), 100_000 - 3 * 32_768);
        assert_eq!(g.blocks_in_piece(PieceIndex(3)), 1);
        let last = g.block(PieceIndex(3), 0).expect("block");
        assert_eq!(last.len, 1_696);
        assert!(g.block(PieceIndex(3), 1).is_none());
        assert!(g.piece(4).is_none());
    }

    #[test]
    fn beyond_four_gib() {
        let total = 5 * 1024 * 1024 * 1024u64 + 5;
        let g = Geometry::new(total, 1 << 22).expect("geometry");
        assert_eq!(g.num_pieces(), 1281);
        let last = PieceIndex(1280);
        assert_eq!(g.piece_offset(last), 5 * 1024 * 1024 * 1024);
        assert_eq!(g.piece_size(last), 5);
    }

    #[test]
    fn block_validation() {
        let g = Geometry::new(40_000, 32_768).expect("geometry");
        let ok = BlockRef {
            piece: PieceIndex(1),
            offset: 0,
            len: 7_232,
        };
        assert!(g.is_valid_block(&ok, BLOCK_LEN));
        let past = BlockRef { len: 7_233, ..ok };
        assert!(!g.is_valid_block(&past, BLOCK_LEN));
        let wrap = BlockRef {
            piece: PieceIndex(0),
            offset: u32::MAX,
            len: 2,
        };
        assert!(!g.is_valid_block(&wrap, BLOCK_LEN));
    }

    #[test]
    fn codecs() {
        let h = InfoHash::from_hex(b"C12FE1C06BBA254A9DC9F519B335AA7C1367A88A").expect("hex");
        assert_eq!(&h.to_hex(), b"c12fe1c06bba254a9dc9f519b335aa7c1367a88a");
        let b32 = InfoHash::from_btih(b"YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK").expect("b32");
        assert_eq!(b32, h);
        assert!(InfoHash::from_btih(b"YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKE1").is_none());
        assert!(InfoHash::from_hex(b"zz2fe1c06bba254a9dc9f519b335aa7c1367a88a").is_none());
    }
}
