//! The uTP packet codec (BEP 29 "Header format" and "Extension"): no allocator, no
//! panic on any input, encoding into a caller buffer.
//!
//! ```text
//!  0       4       8               16              24              32
//! +-------+-------+---------------+---------------+---------------+
//! | type  | ver   | extension     | connection_id                 |
//! +-------+-------+---------------+---------------+---------------+
//! | timestamp_microseconds                                        |
//! +---------------+---------------+---------------+---------------+
//! | timestamp_difference_microseconds                             |
//! +---------------+---------------+---------------+---------------+
//! | wnd_size                                                      |
//! +---------------+---------------+---------------+---------------+
//! | seq_nr                        | ack_nr                        |
//! +---------------+---------------+---------------+---------------+
//! ```
//!
//! All fields are big-endian. `extension` names the first extension of a chain; each
//! extension is `next extension type (u8), length (u8), length bytes`. Type 1 is the
//! selective ACK: a bitmask (BEP 29: a non-zero multiple of 4 bytes, as we send it;
//! libtorrent sends any length, which is taken), bit 0 of its
//! first byte standing for `ack_nr + 2`. Other types are skipped by their length.

/// The length of the fixed header.
pub const HEADER_LEN: usize = 20;
/// The protocol version this codec speaks (BEP 29's v1).
pub const VERSION: u8 = 1;
/// The extension type of the selective ACK.
pub const EXT_SACK: u8 = 1;
/// The most extensions read from one packet: the chain is bounded by the datagram's
/// length anyway (two bytes each at least); this bounds the walk as well.
pub const MAX_EXTENSIONS: usize = 16;
/// The longest selective ACK bitmask accepted or written, in bytes (a multiple of 4
/// that fits the one-byte length field).
pub const MAX_SACK_BYTES: usize = 252;

/// The five packet types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketType {
    /// `ST_DATA`: payload.
    Data = 0,
    /// `ST_FIN`: the last sequence number of the sender's stream.
    Fin = 1,
    /// `ST_STATE`: an acknowledgement without payload; takes no sequence number.
    State = 2,
    /// `ST_RESET`: the connection is gone.
    Reset = 3,
    /// `ST_SYN`: opens a connection.
    Syn = 4,
}

impl PacketType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Data,
            1 => Self::Fin,
            2 => Self::State,
            3 => Self::Reset,
            4 => Self::Syn,
            _ => return None,
        })
    }
}

/// Why a datagram is not a valid uTP packet. The sender is at fault for every variant
/// except [`PacketError::BufferTooSmall`] and [`PacketError::BadSackLength`] on encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketError {
    /// Shorter than the 20-byte header.
    TooShort,
    /// A version other than 1.
    BadVersion(u8),
    /// A type above 4.
    BadType(u8),
    /// An extension runs past the end of the datagram.
    TruncatedExtension,
    /// A selective ACK whose length is zero or above the bound (what we build is a
    /// multiple of 4, as BEP 29 asks).
    BadSackLength(usize),
    /// More than one selective ACK in a packet.
    DuplicateSack,
    /// More than [`MAX_EXTENSIONS`] extensions.
    TooManyExtensions,
    /// The caller's buffer cannot hold the packet (encode only).
    BufferTooSmall,
}

/// The fixed header's fields (the extension byte is derived from the packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The packet type.
    pub ty: PacketType,
    /// The connection id the receiver knows the connection by.
    pub conn_id: u16,
    /// The sender's clock when sending, in microseconds (wrapping).
    pub timestamp_us: u32,
    /// The sender's clock minus the timestamp of the last packet it received, in
    /// microseconds (wrapping): the one-way delay of the receiver's packets plus the
    /// clocks' offset. Zero when nothing was received yet.
    pub timestamp_diff_us: u32,
    /// The bytes the sender can still receive (its advertised receive window).
    pub wnd_size: u32,
    /// This packet's sequence number (for `State`: the next one the sender will use).
    pub seq_nr: u16,
    /// The last sequence number the sender received in order.
    pub ack_nr: u16,
}

/// A selective ACK bitmask, borrowed from a packet; its length was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sack<'a>(&'a [u8]);

impl<'a> Sack<'a> {
    /// The bitmask if its length is valid as received: 1 to [`MAX_SACK_BYTES`]
    /// bytes. BEP 29 asks for a multiple of 4, but libtorrent sends any length (5
    /// and 6 bytes are common): a decoder that refused them dropped every ack it
    /// sent past a hole, and the connection timed out.
    pub fn new(bytes: &'a [u8]) -> Result<Self, PacketError> {
        if bytes.is_empty() || bytes.len() > MAX_SACK_BYTES {
            return Err(PacketError::BadSackLength(bytes.len()));
        }
        Ok(Self(bytes))
    }
    /// The raw bitmask.
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }
    /// The number of packets it describes (8 per byte).
    pub fn bits(&self) -> usize {
        self.0.len() * 8
    }
    /// Whether the packet `ack_nr + 2 + i` is acknowledged.
    pub fn is_set(&self, i: usize) -> bool {
        self.0.get(i / 8).is_some_and(|b| b & (1u8 << (i % 8)) != 0)
    }
}

/// A decoded packet, borrowing its payload and selective ACK from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The fixed header.
    pub header: Header,
    /// The selective ACK, if the packet carries one.
    pub sack: Option<Sack<'a>>,
    /// The payload (empty except for `Data`, by convention).
    pub payload: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[w, x, y, z]) => u32::from_be_bytes([w, x, y, z]),
        _ => 0,
    }
}

/// Whether a datagram looks like uTP v1 from its first byte: version 1 in the low
/// nibble, a type 0..=4 in the high one. A bencoded DHT message starts with `d`
/// (0x64), which has version 4 and so is never taken for uTP.
pub fn looks_like_utp(datagram: &[u8]) -> bool {
    match datagram.first() {
        Some(&b) => b & 0x0f == VERSION && (b >> 4) <= 4 && datagram.len() >= HEADER_LEN,
        None => false,
    }
}

/// Decodes one datagram. Never panics; reads every length against what is left.
pub fn decode(datagram: &[u8]) -> Result<Packet<'_>, PacketError> {
    if datagram.len() < HEADER_LEN {
        return Err(PacketError::TooShort);
    }
    let b0 = datagram[0];
    if b0 & 0x0f != VERSION {
        return Err(PacketError::BadVersion(b0 & 0x0f));
    }
    let ty = PacketType::from_u8(b0 >> 4).ok_or(PacketError::BadType(b0 >> 4))?;
    let header = Header {
        ty,
        conn_id: be16(datagram, 2),
        timestamp_us: be32(datagram, 4),
        timestamp_diff_us: be32(datagram, 8),
        wnd_size: be32(datagram, 12),
        seq_nr: be16(datagram, 16),
        ack_nr: be16(datagram, 18),
    };
    let mut next = datagram[1];
    let mut at = HEADER_LEN;
    let mut sack = None;
    let mut count = 0;
    while next != 0 {
        count += 1;
        if count > MAX_EXTENSIONS {
            return Err(PacketError::TooManyExtensions);
        }
        let (&following, &len) = match (datagram.get(at), datagram.get(at + 1)) {
            (Some(f), Some(l)) => (f, l),
            _ => return Err(PacketError::TruncatedExtension),
        };
        let body = datagram
            .get(at + 2..at + 2 + usize::from(len))
            .ok_or(PacketError::TruncatedExtension)?;
        if next == EXT_SACK {
            if sack.is_some() {
                return Err(PacketError::DuplicateSack);
            }
            sack = Some(Sack::new(body)?);
        }
        at += 2 + usize::from(len);
        next = following;
    }
    Ok(Packet {
        header,
        sack,
        payload: datagram.get(at..).unwrap_or(&[]),
    })
}

/// The encoded length of a packet with a selective ACK of `sack_len` bytes (0 for
/// none) and `payload_len` bytes of payload.
pub const fn encoded_len(sack_len: usize, payload_len: usize) -> usize {
    HEADER_LEN + if sack_len > 0 { 2 + sack_len } else { 0 } + payload_len
}

/// Encodes a packet into `out`; returns its length.
pub fn encode(
    header: &Header,
    sack: Option<&[u8]>,
    payload: &[u8],
    out: &mut [u8],
) -> Result<usize, PacketError> {
    let sack = match sack {
        Some(s) => Some(Sack::new(s)?.bytes()),
        None => None,
    };
    let len = encoded_len(sack.map_or(0, <[u8]>::len), payload.len());
    let out = out.get_mut(..len).ok_or(PacketError::BufferTooSmall)?;
    out[0] = ((header.ty as u8) << 4) | VERSION;
    out[1] = if sack.is_some() { EXT_SACK } else { 0 };
    out[2..4].copy_from_slice(&header.conn_id.to_be_bytes());
    out[4..8].copy_from_slice(&header.timestamp_us.to_be_bytes());
    out[8..12].copy_from_slice(&header.timestamp_diff_us.to_be_bytes());
    out[12..16].copy_from_slice(&header.wnd_size.to_be_bytes());
    out[16..18].copy_from_slice(&header.seq_nr.to_be_bytes());
    out[18..20].copy_from_slice(&header.ack_nr.to_be_bytes());
    let mut at = HEADER_LEN;
    if let Some(s) = sack {
        out[at] = 0;
        // Sack::new bounds the length to MAX_SACK_BYTES, which fits a byte.
        out[at + 1] = s.len() as u8;
        out[at + 2..at + 2 + s.len()].copy_from_slice(s);
        at += 2 + s.len();
    }
    out[at..].copy_from_slice(payload);
    Ok(len)
}

/// `a - b` on the 16-bit sequence circle: positive when `a` is after `b`.
pub const fn seq_diff(a: u16, b: u16) -> i16 {
    a.wrapping_sub(b) as i16
}

/// Whether `a` comes before `b` on the 16-bit sequence circle.
pub const fn seq_lt(a: u16, b: u16) -> bool {
    seq_diff(a, b) < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ty: PacketType) -> Header {
        Header {
            ty,
            conn_id: 0x1234,
            timestamp_us: 0xdead_beef,
            timestamp_diff_us: 7,
            wnd_size: 65_536,
            seq_nr: 0xfffe,
            ack_nr: 3,
        }
    }

    #[test]
    fn round_trip_with_sack_and_payload() {
        let mut buf = [0u8; 64];
        let h = header(PacketType::Data);
        let n = encode(&h, Some(&[0b101, 0, 0, 0x80]), b"hello", &mut buf).expect("fits");
        assert_eq!(n, 20 + 2 + 4 + 5);
        assert_eq!(buf[0], 0x01);
        let p = decode(&buf[..n]).expect("valid");
        assert_eq!(p.header, h);
        assert_eq!(p.payload, b"hello");
        let s = p.sack.expect("sack");
        assert!(s.is_set(0) && !s.is_set(1) && s.is_set(2) && s.is_set(31));
        assert!(!s.is_set(30) && !s.is_set(32));
        assert_eq!(s.bits(), 32);
    }

    #[test]
    fn known_bytes_decode() {
        // A SYN as libtorrent sends it: type 4, version 1, no extension.
        let syn = [
            0x41, 0x00, 0x30, 0x39, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 1, 0, 0,
        ];
        let p = decode(&syn).expect("valid");
        assert_eq!(p.header.ty, PacketType::Syn);
        assert_eq!(p.header.conn_id, 12345);
        assert_eq!(p.header.wnd_size, 0x0010_0000);
        assert_eq!(p.header.seq_nr, 1);
        assert!(p.sack.is_none() && p.payload.is_empty());
    }

    #[test]
    fn unknown_extensions_are_skipped_within_bounds() {
        let mut d = [0u8; 20 + 10 + 6 + 3].to_vec();
        d[0] = 0x21;
        d[1] = 2; // extension bits (8 bytes), then a sack
        d[20] = EXT_SACK;
        d[21] = 8;
        d[30] = 0;
        d[31] = 4;
        d[32] = 1;
        d[36..].copy_from_slice(b"abc");
        let p = decode(&d).expect("valid");
        assert!(p.sack.expect("sack").is_set(0));
        assert_eq!(p.payload, b"abc");
    }

    #[test]
    fn malformed_packets_are_typed_errors() {
        assert_eq!(decode(&[0x01; 19]), Err(PacketError::TooShort));
        let mut d = [0u8; 28];
        d[0] = 0x02;
        assert_eq!(decode(&d), Err(PacketError::BadVersion(2)));
        d[0] = 0x51;
        assert_eq!(decode(&d), Err(PacketError::BadType(5)));
        d[0] = 0x21;
        d[1] = 1;
        d[20] = 0;
        // Any length from 1 byte is taken (libtorrent sends 5 and 6).
        d[21] = 3;
        assert_eq!(
            decode(&d).map(|p| p.sack.map(|s| s.bytes().len())),
            Ok(Some(3))
        );
        d[21] = 0;
        assert_eq!(decode(&d), Err(PacketError::BadSackLength(0)));
        d[21] = 8;
        assert_eq!(decode(&d), Err(PacketError::TruncatedExtension));
        assert_eq!(decode(&d[..21]), Err(PacketError::TruncatedExtension));
        d[21] = 2;
        d[20] = 1; // chain continues with another sack
        assert_eq!(decode(&d), Err(PacketError::DuplicateSack));
        // A chain of empty unknown extensions longer than the cap.
        let mut long = [0u8; 20 + 2 * 20].to_vec();
        long[0] = 0x21;
        long[1] = 9;
        for i in 0..20 {
            long[20 + 2 * i] = 9;
        }
        assert_eq!(decode(&long), Err(PacketError::TooManyExtensions));
        // Two sacks.
        let mut two = [0u8; 20 + 12].to_vec();
        two[0] = 0x21;
        two[1] = 1;
        two[20] = 1;
        two[21] = 4;
        two[26] = 0;
        two[27] = 4;
        assert_eq!(decode(&two), Err(PacketError::DuplicateSack));
    }

    #[test]
    fn encode_checks_the_buffer_and_the_sack() {
        let h = header(PacketType::State);
        assert_eq!(
            encode(&h, None, &[], &mut [0u8; 19]),
            Err(PacketError::BufferTooSmall)
        );
        assert_eq!(
            encode(&h, Some(&[]), &[], &mut [0u8; 64]),
            Err(PacketError::BadSackLength(0))
        );
    }

    #[test]
    fn sequence_numbers_wrap() {
        assert!(seq_lt(0xffff, 0));
        assert!(seq_lt(0xfff0, 5));
        assert!(!seq_lt(5, 0xfff0));
        assert_eq!(seq_diff(2, 0xfffe), 4);
        assert_eq!(seq_diff(0xfffe, 2), -4);
    }

    #[test]
    fn first_byte_tells_dht_from_utp() {
        assert!(!looks_like_utp(
            b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:aa1:y1:qe"
        ));
        let mut syn = [0u8; 20];
        syn[0] = 0x41;
        assert!(looks_like_utp(&syn));
        assert!(!looks_like_utp(&syn[..10]));
        syn[0] = 0x51;
        assert!(!looks_like_utp(&syn));
    }
}
