//! BEP 11 peer exchange (`ut_pex`): the codec of the extension message that tells a
//! peer which peers joined (`added`, `added6`) and left (`dropped`, `dropped6`) the
//! swarm since the last message, as compact addresses (BEP 23: 4 or 16 address bytes
//! and a big-endian port). Needs no allocator: parsing borrows the payload and
//! encoding writes into any `embedded_io::Write`.
//!
//! The optional `added.f` and `added6.f` strings carry one byte of flags per added
//! peer ([`FLAG_UTP`], [`FLAG_HOLEPUNCH`], ...); a flags string whose length does not
//! match its list is ignored (the peers still count, without flags).
//!
//! Policy (in the session, not here): at most one message a minute per peer, at most
//! [`MAX_PEERS_PER_MESSAGE`] entries per list, and never for private torrents (BEP 27).

use crate::bencode::{self, Encoder, Token};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Most addresses sent or taken per list in one message (libtorrent's limit).
pub const MAX_PEERS_PER_MESSAGE: usize = 50;
/// `added.f`: the peer prefers encryption.
pub const FLAG_ENCRYPTION: u8 = 0x01;
/// `added.f`: the peer is a seed (or upload only).
pub const FLAG_SEED: u8 = 0x02;
/// `added.f`: the peer supports uTP.
pub const FLAG_UTP: u8 = 0x04;
/// `added.f`: the peer offered `ut_holepunch` (BEP 55) in its extension handshake.
pub const FLAG_HOLEPUNCH: u8 = 0x08;
/// `added.f`: the connection was outgoing: the peer is reachable.
pub const FLAG_REACHABLE: u8 = 0x10;
/// Tokens needed to decode a message.
pub(crate) const PEX_TOKENS: usize = 32;

/// Why a `ut_pex` payload was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PexError {
    /// Not bencode, or not a dictionary.
    Malformed,
    /// A compact list whose length is not a multiple of its entry size.
    BadLength,
}

impl core::fmt::Display for PexError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed ut_pex message",
            Self::BadLength => "ut_pex compact list of a bad length",
        })
    }
}

/// A parsed `ut_pex` message; the lists are borrowed compact bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PexMessage<'a> {
    added: &'a [u8],
    added_f: &'a [u8],
    added6: &'a [u8],
    added6_f: &'a [u8],
    dropped: &'a [u8],
    dropped6: &'a [u8],
}

fn compact(b: &[u8], v6: bool) -> Option<SocketAddr> {
    if v6 {
        let ip: [u8; 16] = b.get(..16)?.try_into().ok()?;
        let port = u16::from_be_bytes([*b.get(16)?, *b.get(17)?]);
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            0,
            0,
        )))
    } else {
        let ip: [u8; 4] = b.get(..4)?.try_into().ok()?;
        let port = u16::from_be_bytes([*b.get(4)?, *b.get(5)?]);
        Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
    }
}

fn addrs(list: &[u8], v6: bool) -> impl Iterator<Item = SocketAddr> + '_ {
    let n = if v6 { 18 } else { 6 };
    list.chunks_exact(n)
        .take(MAX_PEERS_PER_MESSAGE)
        .filter_map(move |c| compact(c, v6))
        .filter(|a| a.port() != 0)
}

impl<'a> PexMessage<'a> {
    /// Parses a payload (after the extended id byte).
    pub fn parse(payload: &'a [u8]) -> Result<Self, PexError> {
        let mut tokens = [Token::default(); PEX_TOKENS];
        let limits = bencode::Limits {
            max_depth: 4,
            ..bencode::Limits::default()
        };
        let doc =
            bencode::decode(payload, &mut tokens, &limits).map_err(|_| PexError::Malformed)?;
        let d = doc.root().as_dict().ok_or(PexError::Malformed)?;
        let get = |k: &[u8], n: usize| -> Result<&'a [u8], PexError> {
            // Borrow from the payload, not from the token buffer.
            match d.get(k) {
                None => Ok(&[]),
                Some(v) => {
                    let b = v.as_bytes().ok_or(PexError::Malformed)?;
                    if b.len() % n != 0 {
                        return Err(PexError::BadLength);
                    }
                    let start = b.as_ptr() as usize - payload.as_ptr() as usize;
                    Ok(&payload[start..start + b.len()])
                }
            }
        };
        let added = get(b"added", 6)?;
        let added6 = get(b"added6", 18)?;
        // Flags only when there is one byte per peer; anything else is ignored.
        let flags = |k: &[u8], list: &[u8], n: usize| -> &'a [u8] {
            match get(k, 1) {
                Ok(f) if f.len() * n == list.len() => f,
                _ => &[],
            }
        };
        Ok(Self {
            added_f: flags(b"added.f", added, 6),
            added6_f: flags(b"added6.f", added6, 18),
            added,
            added6,
            dropped: get(b"dropped", 6)?,
            dropped6: get(b"dropped6", 18)?,
        })
    }

    /// Peers that joined (IPv4 then IPv6), at most [`MAX_PEERS_PER_MESSAGE`] of each.
    pub fn added(&self) -> impl Iterator<Item = SocketAddr> + 'a {
        addrs(self.added, false).chain(addrs(self.added6, true))
    }

    /// Peers that joined with their `added.f` flags (0 when the message has none),
    /// as [`PexMessage::added`] lists them.
    pub fn added_with_flags(&self) -> impl Iterator<Item = (SocketAddr, u8)> + 'a {
        fn with<'b>(
            list: &'b [u8],
            flags: &'b [u8],
            v6: bool,
        ) -> impl Iterator<Item = (SocketAddr, u8)> + 'b {
            let n = if v6 { 18 } else { 6 };
            list.chunks_exact(n)
                .enumerate()
                .take(MAX_PEERS_PER_MESSAGE)
                .filter_map(move |(i, c)| Some((compact(c, v6)?, *flags.get(i).unwrap_or(&0))))
                .filter(|(a, _)| a.port() != 0)
        }
        with(self.added, self.added_f, false).chain(with(self.added6, self.added6_f, true))
    }

    /// Peers that left.
    pub fn dropped(&self) -> impl Iterator<Item = SocketAddr> + 'a {
        addrs(self.dropped, false).chain(addrs(self.dropped6, true))
    }
}

/// Writes the `<len>:` of a string of `len` bytes.
fn write_len<W: embedded_io::Write>(e: &mut Encoder<W>, len: usize) -> Result<(), W::Error> {
    let mut hdr = [0u8; 8];
    let mut len = len;
    let mut i = hdr.len();
    loop {
        i -= 1;
        hdr[i] = b'0' + (len % 10) as u8;
        len /= 10;
        if len == 0 {
            break;
        }
    }
    e.raw(&hdr[i..])?;
    e.raw(b":")
}

fn write_list<W: embedded_io::Write>(
    e: &mut Encoder<W>,
    key: &[u8],
    peers: &[SocketAddr],
    v6: bool,
) -> Result<(), W::Error> {
    let n = peers
        .iter()
        .filter(|p| p.is_ipv6() == v6)
        .take(MAX_PEERS_PER_MESSAGE)
        .count();
    let entry = if v6 { 18 } else { 6 };
    e.bytes(key)?;
    // `<len>:` then the raw entries.
    write_len(e, n * entry)?;
    for p in peers
        .iter()
        .filter(|p| p.is_ipv6() == v6)
        .take(MAX_PEERS_PER_MESSAGE)
    {
        match p.ip() {
            IpAddr::V4(ip) => e.raw(&ip.octets())?,
            IpAddr::V6(ip) => e.raw(&ip.octets())?,
        }
        e.raw(&p.port().to_be_bytes())?;
    }
    Ok(())
}

/// Writes a `ut_pex` payload (keys sorted). `added.f` flags are not sent (they are
/// optional).
pub fn write_pex<W: embedded_io::Write>(
    w: W,
    added: &[SocketAddr],
    dropped: &[SocketAddr],
) -> Result<(), W::Error> {
    let mut e = Encoder::new(w);
    e.dict()?;
    write_list(&mut e, b"added", added, false)?;
    write_list(&mut e, b"added6", added, true)?;
    write_list(&mut e, b"dropped", dropped, false)?;
    write_list(&mut e, b"dropped6", dropped, true)?;
    e.end()
}

/// Writes a `ut_pex` payload with `added.f`/`added6.f`: one flags byte per added
/// peer, in the order of `added` (keys sorted).
pub fn write_pex_with_flags<W: embedded_io::Write>(
    w: W,
    added: &[SocketAddr],
    flags: &[u8],
    dropped: &[SocketAddr],
) -> Result<(), W::Error> {
    let mut e = Encoder::new(w);
    e.dict()?;
    for v6 in [false, true] {
        let (key, fkey) = if v6 {
            (&b"added6"[..], &b"added6.f"[..])
        } else {
            (&b"added"[..], &b"added.f"[..])
        };
        write_list(&mut e, key, added, v6)?;
        let f = added
            .iter()
            .zip(flags.iter().copied().chain(core::iter::repeat(0)))
            .filter(|(p, _)| p.is_ipv6() == v6)
            .take(MAX_PEERS_PER_MESSAGE);
        e.bytes(fkey)?;
        write_len(&mut e, f.clone().count())?;
        for (_, b) in f {
            e.raw(&[b])?;
        }
    }
    write_list(&mut e, b"dropped", dropped, false)?;
    write_list(&mut e, b"dropped6", dropped, true)?;
    e.end()
}

/// For fuzzing: parses and walks a payload; never panics.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_parse(data: &[u8]) -> usize {
    match PexMessage::parse(data) {
        Ok(m) => {
            // Flags never change which peers are listed.
            assert!(m.added_with_flags().map(|(a, _)| a).eq(m.added()));
            m.added().count() + m.dropped().count()
        }
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn round_trip_and_hand_written() {
        let a: SocketAddr = "10.0.0.1:6881".parse().expect("addr");
        let b: SocketAddr = "[::1]:51413".parse().expect("addr");
        let c: SocketAddr = "192.168.1.2:80".parse().expect("addr");
        let mut buf = [0u8; 128];
        let mut w: &mut [u8] = &mut buf;
        write_pex(&mut w, &[a, b], &[c]).expect("room");
        let n = 128 - w.len();
        let m = PexMessage::parse(&buf[..n]).expect("parses");
        assert_eq!(m.added().collect::<Vec<_>>(), [a, b]);
        assert_eq!(m.dropped().collect::<Vec<_>>(), [c]);
        let hand = b"d5:added6:\x0a\x00\x00\x01\x1a\xe17:dropped0:e";
        let m = PexMessage::parse(hand).expect("parses");
        assert_eq!(m.added().collect::<Vec<_>>(), [a]);
        assert_eq!(m.dropped().count(), 0);
    }

    #[test]
    fn flags_round_trip_and_bad_flags_are_ignored() {
        let a: SocketAddr = "10.0.0.1:6881".parse().expect("addr");
        let b: SocketAddr = "[::1]:51413".parse().expect("addr");
        let c: SocketAddr = "10.0.0.2:6882".parse().expect("addr");
        let mut out = Vec::new();
        write_pex_with_flags(&mut out, &[a, b, c], &[FLAG_UTP, FLAG_HOLEPUNCH, 0x1f], &[])
            .expect("vec");
        let m = PexMessage::parse(&out).expect("parses");
        assert_eq!(
            m.added_with_flags().collect::<Vec<_>>(),
            [(a, FLAG_UTP), (c, 0x1f), (b, FLAG_HOLEPUNCH)]
        );
        assert_eq!(m.added().collect::<Vec<_>>(), [a, c, b]);
        // Sorted keys: added, added.f, added6, added6.f.
        assert!(out.starts_with(b"d5:added12:"));
        // Flags of the wrong length: no flags, the peers stay.
        let hand = b"d5:added6:\x0a\x00\x00\x01\x1a\xe17:added.f2:\x04\x08e";
        let m = PexMessage::parse(hand).expect("parses");
        assert_eq!(m.added_with_flags().collect::<Vec<_>>(), [(a, 0)]);
    }

    #[test]
    fn bad_input_is_refused_or_bounded() {
        assert_eq!(
            PexMessage::parse(b"d5:added5:abcdee"),
            Err(PexError::BadLength)
        );
        assert_eq!(PexMessage::parse(b"le"), Err(PexError::Malformed));
        assert_eq!(PexMessage::parse(b"d5:addedi1ee"), Err(PexError::Malformed));
        // 200 entries: only the first 50 are taken.
        let mut big = Vec::from(&b"d5:added1200:"[..]);
        for i in 0..200u32 {
            big.extend_from_slice(&[10, 0, (i >> 8) as u8, i as u8, 0x1a, 0xe1]);
        }
        big.push(b'e');
        assert_eq!(
            PexMessage::parse(&big).expect("parses").added().count(),
            MAX_PEERS_PER_MESSAGE
        );
        for i in 0..2000u32 {
            let junk: Vec<u8> = (0..(i % 40)).map(|j| (i * 31 + j * 7) as u8).collect();
            let _ = fuzz_parse(&junk);
        }
    }
}
