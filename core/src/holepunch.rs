//! BEP 55 hole punching (`ut_holepunch`): the codec of the extension message with
//! which a peer asks another it is connected to (the relay) to introduce it to a
//! third one that neither of them can dial, so both open uTP connections towards each
//! other at once and their NATs let the other's packets in.
//!
//! The payload (after the extended id byte), BEP 55 "Protocol Extension":
//!
//! ```text
//! msg_type   1 byte    0 rendezvous, 1 connect, 2 error
//! addr_type  1 byte    0 IPv4, 1 IPv6
//! addr       6|18      compact address (BEP 23): 4 or 16 bytes and a big-endian port
//! err_code   4 bytes   big-endian; 0 except in `error`
//! ```
//!
//! Needs no allocator: parsing reads a borrowed slice, writing fills a caller's
//! buffer of at least [`MAX_MESSAGE_LEN`] bytes. What the session does with the
//! messages (relaying, rate limits, which `connect` it honours) is in
//! `session/holepunch.rs`.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The extension's name in the `m` dictionary of the BEP 10 handshake.
pub const UT_HOLEPUNCH: &[u8] = b"ut_holepunch";
/// The longest message: an IPv6 one (1 + 1 + 18 + 4).
pub const MAX_MESSAGE_LEN: usize = 24;

/// Why a rendezvous could not be carried out (BEP 55 "error codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: the endpoint is not valid.
    NoSuchPeer,
    /// 2: the relay is not connected to the endpoint.
    NotConnected,
    /// 3: the endpoint does not support hole punching.
    NoSupport,
    /// 4: the endpoint is the relay itself.
    NoSelf,
    /// Any other code (kept, so an error from a newer peer still parses).
    Other(u32),
}

impl ErrorCode {
    /// The code on the wire.
    pub const fn code(self) -> u32 {
        match self {
            Self::NoSuchPeer => 1,
            Self::NotConnected => 2,
            Self::NoSupport => 3,
            Self::NoSelf => 4,
            Self::Other(c) => c,
        }
    }

    /// The code from the wire.
    pub const fn from_code(c: u32) -> Self {
        match c {
            1 => Self::NoSuchPeer,
            2 => Self::NotConnected,
            3 => Self::NoSupport,
            4 => Self::NoSelf,
            c => Self::Other(c),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchPeer => f.write_str("no such peer"),
            Self::NotConnected => f.write_str("not connected"),
            Self::NoSupport => f.write_str("no holepunch support"),
            Self::NoSelf => f.write_str("that is the relay itself"),
            Self::Other(c) => write!(f, "error code {c}"),
        }
    }
}

/// A `ut_holepunch` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolepunchMsg {
    /// To the relay: introduce us to the peer at this address.
    Rendezvous(SocketAddr),
    /// From the relay: open a uTP connection to this address (it dials us too).
    Connect(SocketAddr),
    /// From the relay: the rendezvous for this address failed.
    Error {
        /// The address of the rendezvous, as it named it.
        addr: SocketAddr,
        /// Why.
        code: ErrorCode,
    },
}

/// Why a `ut_holepunch` payload was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HolepunchError {
    /// Shorter than its address type needs.
    Truncated,
    /// `msg_type` is not 0, 1 or 2.
    BadMsgType(u8),
    /// `addr_type` is not 0 or 1.
    BadAddrType(u8),
    /// An `error` message with code 0 (which means "no error").
    NoErrorCode,
    /// The output buffer is shorter than the message.
    BufferTooSmall,
}

impl fmt::Display for HolepunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated ut_holepunch message"),
            Self::BadMsgType(t) => write!(f, "unknown ut_holepunch msg_type {t}"),
            Self::BadAddrType(t) => write!(f, "unknown ut_holepunch addr_type {t}"),
            Self::NoErrorCode => f.write_str("ut_holepunch error without a code"),
            Self::BufferTooSmall => f.write_str("buffer too small for a ut_holepunch message"),
        }
    }
}

impl HolepunchMsg {
    /// The address the message names.
    pub const fn addr(&self) -> SocketAddr {
        match *self {
            Self::Rendezvous(a) | Self::Connect(a) | Self::Error { addr: a, .. } => a,
        }
    }

    /// Parses a payload (after the extended id byte). `err_code` may be left out of
    /// `rendezvous` and `connect` (libtorrent sends them 8 or 20 bytes long), never
    /// out of `error`. Bytes after `err_code` are ignored (room for a later
    /// revision); a message never reads past its 24 bytes.
    pub fn parse(payload: &[u8]) -> Result<Self, HolepunchError> {
        let (&ty, rest) = payload.split_first().ok_or(HolepunchError::Truncated)?;
        if ty > 2 {
            return Err(HolepunchError::BadMsgType(ty));
        }
        let (&at, rest) = rest.split_first().ok_or(HolepunchError::Truncated)?;
        let alen = match at {
            0 => 6,
            1 => 18,
            t => return Err(HolepunchError::BadAddrType(t)),
        };
        let a = rest.get(..alen).ok_or(HolepunchError::Truncated)?;
        // libtorrent writes `err_code` only in `error` messages (and reads it only
        // there): in the others it is optional.
        let e: Option<[u8; 4]> = rest.get(alen..alen + 4).and_then(|b| b.try_into().ok());
        let port = u16::from_be_bytes([a[alen - 2], a[alen - 1]]);
        let addr = if at == 0 {
            let ip: [u8; 4] = a[..4].try_into().map_err(|_| HolepunchError::Truncated)?;
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))
        } else {
            let ip: [u8; 16] = a[..16].try_into().map_err(|_| HolepunchError::Truncated)?;
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
        };
        Ok(match ty {
            0 => Self::Rendezvous(addr),
            1 => Self::Connect(addr),
            _ => match e.map(u32::from_be_bytes) {
                None => return Err(HolepunchError::Truncated),
                Some(0) => return Err(HolepunchError::NoErrorCode),
                Some(code) => Self::Error {
                    addr,
                    code: ErrorCode::from_code(code),
                },
            },
        })
    }

    /// Writes the payload into `out`; returns its length (12 or 24 bytes).
    pub fn write(&self, out: &mut [u8]) -> Result<usize, HolepunchError> {
        let (ty, code) = match *self {
            Self::Rendezvous(_) => (0u8, 0u32),
            Self::Connect(_) => (1, 0),
            Self::Error { code, .. } => (2, code.code()),
        };
        let addr = self.addr();
        let n = if addr.is_ipv4() { 12 } else { 24 };
        let out = out.get_mut(..n).ok_or(HolepunchError::BufferTooSmall)?;
        out[0] = ty;
        out[1] = u8::from(addr.is_ipv6());
        let ip_end = match addr.ip() {
            IpAddr::V4(ip) => {
                out[2..6].copy_from_slice(&ip.octets());
                6
            }
            IpAddr::V6(ip) => {
                out[2..18].copy_from_slice(&ip.octets());
                18
            }
        };
        out[ip_end..ip_end + 2].copy_from_slice(&addr.port().to_be_bytes());
        out[ip_end + 2..ip_end + 6].copy_from_slice(&code.to_be_bytes());
        Ok(n)
    }
}

/// For fuzzing: parses a payload and writes it back; never panics.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_parse(data: &[u8]) -> usize {
    match HolepunchMsg::parse(data) {
        Ok(m) => {
            let mut buf = [0u8; MAX_MESSAGE_LEN];
            let n = m.write(&mut buf).unwrap_or(0);
            // What was written parses back to the same message.
            assert_eq!(HolepunchMsg::parse(&buf[..n]), Ok(m));
            n
        }
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn hand_written_messages() {
        // rendezvous 10.0.0.1:6881
        let m = HolepunchMsg::parse(b"\x00\x00\x0a\x00\x00\x01\x1a\xe1\x00\x00\x00\x00");
        assert_eq!(m, Ok(HolepunchMsg::Rendezvous(sa("10.0.0.1:6881"))));
        // connect [::1]:51413
        let mut p = [0u8; 24];
        p[0] = 1;
        p[1] = 1;
        p[17] = 1;
        p[18..20].copy_from_slice(&51413u16.to_be_bytes());
        assert_eq!(
            HolepunchMsg::parse(&p),
            Ok(HolepunchMsg::Connect(sa("[::1]:51413")))
        );
        // error NotConnected, with a trailing byte (ignored)
        let m = HolepunchMsg::parse(b"\x02\x00\x01\x02\x03\x04\x00\x50\x00\x00\x00\x02\xff");
        assert_eq!(
            m,
            Ok(HolepunchMsg::Error {
                addr: sa("1.2.3.4:80"),
                code: ErrorCode::NotConnected
            })
        );
        let mut out = [0u8; MAX_MESSAGE_LEN];
        let n = HolepunchMsg::Error {
            addr: sa("1.2.3.4:80"),
            code: ErrorCode::NotConnected,
        }
        .write(&mut out)
        .expect("room");
        assert_eq!(
            &out[..n],
            b"\x02\x00\x01\x02\x03\x04\x00\x50\x00\x00\x00\x02"
        );
    }

    #[test]
    fn bad_messages_are_typed() {
        use HolepunchError::*;
        assert_eq!(HolepunchMsg::parse(b""), Err(Truncated));
        assert_eq!(HolepunchMsg::parse(b"\x00"), Err(Truncated));
        assert_eq!(HolepunchMsg::parse(b"\x03\x00"), Err(BadMsgType(3)));
        assert_eq!(HolepunchMsg::parse(b"\x00\x02"), Err(BadAddrType(2)));
        // Without its error code: an `error` is cut short, a `rendezvous` or a
        // `connect` is whole (as libtorrent writes them).
        assert_eq!(
            HolepunchMsg::parse(b"\x02\x00\x0a\x00\x00\x01\x1a\xe1\x00\x00\x01"),
            Err(Truncated)
        );
        assert_eq!(
            HolepunchMsg::parse(b"\x00\x00\x0a\x00\x00\x01\x1a\xe1"),
            Ok(HolepunchMsg::Rendezvous(sa("10.0.0.1:6881")))
        );
        let mut v6 = [0u8; 20];
        v6[0] = 1;
        v6[1] = 1;
        v6[17] = 1;
        v6[18..].copy_from_slice(&6881u16.to_be_bytes());
        assert_eq!(HolepunchMsg::parse(&v6[..19]), Err(Truncated));
        assert_eq!(
            HolepunchMsg::parse(&v6),
            Ok(HolepunchMsg::Connect(sa("[::1]:6881")))
        );
        // An IPv6 type with an IPv4-sized body.
        assert_eq!(
            HolepunchMsg::parse(b"\x01\x01\x0a\x00\x00\x01\x1a\xe1\x00\x00\x00\x00"),
            Err(Truncated)
        );
        assert_eq!(
            HolepunchMsg::parse(b"\x02\x00\x0a\x00\x00\x01\x1a\xe1\x00\x00\x00\x00"),
            Err(NoErrorCode)
        );
        assert_eq!(
            HolepunchMsg::Connect(sa("[::1]:1")).write(&mut [0u8; 23]),
            Err(BufferTooSmall)
        );
        assert_eq!(
            HolepunchMsg::parse(b"\x02\x00\x0a\x00\x00\x01\x1a\xe1\x00\x00\x01\x00"),
            Ok(HolepunchMsg::Error {
                addr: sa("10.0.0.1:6881"),
                code: ErrorCode::Other(256)
            })
        );
    }

    fn any_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), p)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), p)),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(addr in any_addr(), kind in 0u8..3, code in 1u32..) {
            let m = match kind {
                0 => HolepunchMsg::Rendezvous(addr),
                1 => HolepunchMsg::Connect(addr),
                _ => HolepunchMsg::Error { addr, code: ErrorCode::from_code(code) },
            };
            let mut buf = [0u8; MAX_MESSAGE_LEN];
            let n = m.write(&mut buf).expect("room");
            prop_assert_eq!(n, if addr.is_ipv4() { 12 } else { 24 });
            prop_assert_eq!(HolepunchMsg::parse(&buf[..n]), Ok(m));
            // Every cut into the address fails as truncated, and so does every cut
            // into an error's code; a rendezvous or connect without its (zero) code,
            // or with part of it, is whole.
            let addr_end = n - 4;
            for cut in 2..n {
                let got = HolepunchMsg::parse(&buf[..cut]);
                if cut >= addr_end && kind < 2 {
                    prop_assert_eq!(got, Ok(m));
                } else {
                    prop_assert_eq!(got, Err(HolepunchError::Truncated));
                }
            }
        }

        #[test]
        fn junk_never_panics(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = fuzz_parse(&data);
        }
    }
}
