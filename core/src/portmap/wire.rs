//! The NAT-PMP (RFC 6886) and PCP (RFC 6887) datagrams a client sends and the ones it
//! reads back, for IPv4 mappings. No allocator: requests are written into a caller
//! buffer, responses decoded from a borrowed one into plain values.
//!
//! Decoding is strict: the version byte picks the protocol (0 NAT-PMP, 2 PCP), a
//! request (not a response) is refused, a successful response must have exactly the
//! length its opcode defines (PCP: the fixed part, then well-formed options up to
//! [`MAX_PCP_MESSAGE`] bytes), and an error response at least its header. Nothing
//! here panics on any input.
//!
//! ```text
//! NAT-PMP map request (12 bytes)         NAT-PMP map response (16 bytes)
//! 0 | op (1 UDP, 2 TCP) | 0 0            0 | 128+op | result (2)
//! internal port (2) | suggested ext (2)  epoch (4)
//! lifetime (4)                           internal port (2) | mapped ext port (2)
//!                                        lifetime (4)
//! PCP MAP request (24 + 36 bytes)        PCP MAP response (24 + 36 bytes)
//! 2 | 1 | 0 0 | lifetime (4)             2 | 128+1 | 0 | result | lifetime (4)
//! client address (16, v4-mapped)         epoch (4) | reserved (12)
//! nonce (12) | protocol | 0 0 0          nonce (12) | protocol | 0 0 0
//! internal port | suggested ext port     internal port | assigned ext port
//! suggested ext address (16)             assigned ext address (16)
//! ```

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};

/// The gateway's UDP port for NAT-PMP and PCP requests (both RFCs).
pub const SERVER_PORT: u16 = 5351;
/// The NAT-PMP version byte.
pub const NATPMP_VERSION: u8 = 0;
/// The PCP version byte.
pub const PCP_VERSION: u8 = 2;
/// The largest PCP message (RFC 6887 section 7): longer ones are refused.
pub const MAX_PCP_MESSAGE: usize = 1100;
/// The longest request this module writes (a PCP MAP request).
pub const MAX_REQUEST: usize = PCP_MAP_LEN;

const PCP_HEADER_LEN: usize = 24;
const PCP_MAP_LEN: usize = PCP_HEADER_LEN + 36;
const PCP_OP_ANNOUNCE: u8 = 0;
const PCP_OP_MAP: u8 = 1;
const NATPMP_OP_ADDRESS: u8 = 0;
const NATPMP_ADDRESS_LEN: usize = 12;
const NATPMP_MAP_LEN: usize = 16;
/// IANA protocol numbers PCP names transports by.
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// A transport a mapping is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP (the peer listener).
    Tcp,
    /// UDP (uTP and the DHT).
    Udp,
}

impl Protocol {
    fn natpmp_op(self) -> u8 {
        match self {
            Self::Udp => 1,
            Self::Tcp => 2,
        }
    }
    fn ip_proto(self) -> u8 {
        match self {
            Self::Tcp => IPPROTO_TCP,
            Self::Udp => IPPROTO_UDP,
        }
    }
    /// `"TCP"` or `"UDP"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }
}

/// Which of the two protocols a datagram speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// NAT-PMP, RFC 6886 (version 0).
    NatPmp,
    /// PCP, RFC 6887 (version 2).
    Pcp,
}

impl Version {
    /// `"NAT-PMP"` or `"PCP"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::NatPmp => "NAT-PMP",
            Self::Pcp => "PCP",
        }
    }
}

/// A gateway's result code, as either protocol numbers it (the codes of NAT-PMP are
/// mapped to PCP's names where they mean the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultCode {
    /// 0: success.
    Success,
    /// The version is not spoken (NAT-PMP 1, PCP 1): the client falls back.
    UnsupportedVersion,
    /// Refused by policy (NAT-PMP 2 "not authorized/refused", PCP 2).
    NotAuthorized,
    /// The gateway has no external address or network (NAT-PMP 3, PCP 7).
    NetworkFailure,
    /// No ports left (NAT-PMP 4, PCP 8).
    NoResources,
    /// The opcode is not spoken (NAT-PMP 5, PCP 4).
    UnsupportedOpcode,
    /// Another PCP error code (3, 5, 6, 9..13: malformed request or option, unsupported
    /// option or protocol, quota, cannot provide the external address, address
    /// mismatch, too many remote peers) or an unknown code of either protocol.
    Other(u16),
}

impl ResultCode {
    fn from_natpmp(c: u16) -> Self {
        match c {
            0 => Self::Success,
            1 => Self::UnsupportedVersion,
            2 => Self::NotAuthorized,
            3 => Self::NetworkFailure,
            4 => Self::NoResources,
            5 => Self::UnsupportedOpcode,
            c => Self::Other(c),
        }
    }
    fn from_pcp(c: u8) -> Self {
        match c {
            0 => Self::Success,
            1 => Self::UnsupportedVersion,
            2 => Self::NotAuthorized,
            4 => Self::UnsupportedOpcode,
            7 => Self::NetworkFailure,
            8 => Self::NoResources,
            c => Self::Other(u16::from(c)),
        }
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Success => f.write_str("success"),
            Self::UnsupportedVersion => f.write_str("unsupported version"),
            Self::NotAuthorized => f.write_str("not authorized"),
            Self::NetworkFailure => f.write_str("network failure"),
            Self::NoResources => f.write_str("out of resources"),
            Self::UnsupportedOpcode => f.write_str("unsupported opcode"),
            Self::Other(c) => write!(f, "error code {c}"),
        }
    }
}

/// Why a datagram was not a response this module understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than its header or than its opcode's fixed part.
    Truncated,
    /// Longer than its opcode defines (NAT-PMP), or than [`MAX_PCP_MESSAGE`] (PCP).
    TooLong,
    /// Neither version 0 nor 2.
    UnknownVersion(u8),
    /// A request (the response bit is clear).
    NotAResponse,
    /// A response to an opcode this client never sends.
    UnknownOpcode(u8),
    /// A PCP option that runs past the end, or a PCP MAP response for a protocol other
    /// than TCP or UDP.
    Malformed,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated"),
            Self::TooLong => f.write_str("too long"),
            Self::UnknownVersion(v) => write!(f, "unknown version {v}"),
            Self::NotAResponse => f.write_str("not a response"),
            Self::UnknownOpcode(o) => write!(f, "unknown opcode {o}"),
            Self::Malformed => f.write_str("malformed"),
        }
    }
}

/// Why a request could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall;

/// A request to send to the gateway's port [`SERVER_PORT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// NAT-PMP: what is the external address?
    NatPmpAddress,
    /// NAT-PMP: map (or, with lifetime 0, delete) a port.
    NatPmpMap {
        /// The transport.
        protocol: Protocol,
        /// Our port.
        internal_port: u16,
        /// The external port we would like (0: any; must be 0 to delete).
        suggested_port: u16,
        /// Seconds (0: delete).
        lifetime: u32,
    },
    /// PCP MAP: map (or, with lifetime 0, delete) a port.
    PcpMap {
        /// Our address, as the gateway sees it (the source of the datagram).
        client: Ipv4Addr,
        /// Names the mapping; the same for its renewals and its deletion.
        nonce: [u8; 12],
        /// The transport.
        protocol: Protocol,
        /// Our port.
        internal_port: u16,
        /// The external port we would like (0: any).
        suggested_port: u16,
        /// The external address we would like (unspecified: any).
        suggested_address: Ipv4Addr,
        /// Seconds (0: delete).
        lifetime: u32,
    },
}

fn mapped(a: Ipv4Addr) -> [u8; 16] {
    a.to_ipv6_mapped().octets()
}

impl Request {
    /// Writes the request into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        match *self {
            Self::NatPmpAddress => {
                let b = out.get_mut(..2).ok_or(BufferTooSmall)?;
                b.copy_from_slice(&[NATPMP_VERSION, NATPMP_OP_ADDRESS]);
                Ok(2)
            }
            Self::NatPmpMap {
                protocol,
                internal_port,
                suggested_port,
                lifetime,
            } => {
                let b = out.get_mut(..12).ok_or(BufferTooSmall)?;
                b[0] = NATPMP_VERSION;
                b[1] = protocol.natpmp_op();
                b[2..4].fill(0);
                b[4..6].copy_from_slice(&internal_port.to_be_bytes());
                b[6..8].copy_from_slice(&suggested_port.to_be_bytes());
                b[8..12].copy_from_slice(&lifetime.to_be_bytes());
                Ok(12)
            }
            Self::PcpMap {
                client,
                nonce,
                protocol,
                internal_port,
                suggested_port,
                suggested_address,
                lifetime,
            } => {
                let b = out.get_mut(..PCP_MAP_LEN).ok_or(BufferTooSmall)?;
                b.fill(0);
                b[0] = PCP_VERSION;
                b[1] = PCP_OP_MAP;
                b[4..8].copy_from_slice(&lifetime.to_be_bytes());
                b[8..24].copy_from_slice(&mapped(client));
                b[24..36].copy_from_slice(&nonce);
                b[36] = protocol.ip_proto();
                b[40..42].copy_from_slice(&internal_port.to_be_bytes());
                b[42..44].copy_from_slice(&suggested_port.to_be_bytes());
                let ext = if suggested_address.is_unspecified() {
                    // "All zeros" IPv4: the IPv4-mapped ::ffff:0.0.0.0 (RFC 6887 11.1).
                    mapped(Ipv4Addr::UNSPECIFIED)
                } else {
                    mapped(suggested_address)
                };
                b[44..60].copy_from_slice(&ext);
                Ok(PCP_MAP_LEN)
            }
        }
    }
}

/// A response from the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    /// NAT-PMP's answer to the external address request.
    NatPmpAddress {
        /// The result.
        result: ResultCode,
        /// Seconds since the gateway's port mapping table was (re)initialized.
        epoch: u32,
        /// The external address (None in an error response).
        address: Option<Ipv4Addr>,
    },
    /// NAT-PMP's answer to a map request.
    NatPmpMap {
        /// The transport (from the opcode).
        protocol: Protocol,
        /// The result.
        result: ResultCode,
        /// Seconds since the table was (re)initialized.
        epoch: u32,
        /// Our port, echoed (0 in a short error response).
        internal_port: u16,
        /// The external port granted (0 in an error response).
        external_port: u16,
        /// Seconds granted (0 in an error response).
        lifetime: u32,
    },
    /// A version-0 error response to an opcode this client did not send as NAT-PMP
    /// (what a NAT-PMP-only gateway answers a PCP request with: "unsupported version").
    NatPmpError {
        /// The opcode echoed, less 128.
        opcode: u8,
        /// The result.
        result: ResultCode,
        /// Seconds since the table was (re)initialized.
        epoch: u32,
    },
    /// PCP's answer to a MAP request.
    PcpMap {
        /// The result.
        result: ResultCode,
        /// Seconds granted; in an error response, how long the error holds.
        lifetime: u32,
        /// Seconds since the table was (re)initialized.
        epoch: u32,
        /// The nonce of the request.
        nonce: [u8; 12],
        /// The transport.
        protocol: Protocol,
        /// Our port, echoed.
        internal_port: u16,
        /// The external port granted.
        external_port: u16,
        /// The external address granted (an IPv6 one is kept as is).
        external_address: Ipv6Addr,
    },
    /// A PCP response with no MAP payload: an error to any opcode (e.g. a gateway
    /// that speaks only an older PCP version), or an ANNOUNCE response.
    PcpOther {
        /// The opcode, less 128.
        opcode: u8,
        /// The result.
        result: ResultCode,
        /// Seconds the error holds.
        lifetime: u32,
        /// Seconds since the table was (re)initialized.
        epoch: u32,
    },
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes a datagram received from the gateway.
pub fn decode_response(b: &[u8]) -> Result<Response, DecodeError> {
    match b.first() {
        None => Err(DecodeError::Truncated),
        Some(&NATPMP_VERSION) => decode_natpmp(b),
        Some(&PCP_VERSION) => decode_pcp(b),
        Some(&v) => Err(DecodeError::UnknownVersion(v)),
    }
}

fn decode_natpmp(b: &[u8]) -> Result<Response, DecodeError> {
    if b.len() < 8 {
        return Err(DecodeError::Truncated);
    }
    if b[1] < 128 {
        return Err(DecodeError::NotAResponse);
    }
    let op = b[1] - 128;
    let result = ResultCode::from_natpmp(be16(b, 2));
    let epoch = be32(b, 4);
    let expected = match op {
        NATPMP_OP_ADDRESS => NATPMP_ADDRESS_LEN,
        1 | 2 => NATPMP_MAP_LEN,
        // A version-0 error for what we sent as PCP (MAP 1 is caught above; ANNOUNCE
        // 0 too): only as an error, and only its 8-byte header.
        _ if result != ResultCode::Success => {
            if b.len() > 8 {
                return Err(DecodeError::TooLong);
            }
            return Ok(Response::NatPmpError {
                opcode: op,
                result,
                epoch,
            });
        }
        _ => return Err(DecodeError::UnknownOpcode(op)),
    };
    // RFC 6886 3.5: an error response may stop after the epoch.
    if result != ResultCode::Success && b.len() == 8 {
        return Ok(match op {
            NATPMP_OP_ADDRESS => Response::NatPmpAddress {
                result,
                epoch,
                address: None,
            },
            _ => Response::NatPmpMap {
                protocol: if op == 1 {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                result,
                epoch,
                internal_port: 0,
                external_port: 0,
                lifetime: 0,
            },
        });
    }
    if b.len() < expected {
        return Err(DecodeError::Truncated);
    }
    if b.len() > expected {
        return Err(DecodeError::TooLong);
    }
    Ok(match op {
        NATPMP_OP_ADDRESS => Response::NatPmpAddress {
            result,
            epoch,
            address: (result == ResultCode::Success)
                .then(|| Ipv4Addr::new(b[8], b[9], b[10], b[11])),
        },
        _ => Response::NatPmpMap {
            protocol: if op == 1 {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
            result,
            epoch,
            internal_port: be16(b, 8),
            external_port: be16(b, 10),
            lifetime: be32(b, 12),
        },
    })
}

/// Checks the options from `b[at..]`: each a 4-byte header and its data padded to 4
/// bytes, ending exactly at the end.
fn check_options(b: &[u8], mut at: usize) -> Result<(), DecodeError> {
    while at < b.len() {
        if b.len() - at < 4 {
            return Err(DecodeError::Malformed);
        }
        let len = usize::from(be16(b, at + 2));
        let padded = (len + 3) & !3;
        at += 4;
        if b.len() - at < padded {
            return Err(DecodeError::Malformed);
        }
        at += padded;
    }
    Ok(())
}

fn decode_pcp(b: &[u8]) -> Result<Response, DecodeError> {
    if b.len() > MAX_PCP_MESSAGE {
        return Err(DecodeError::TooLong);
    }
    if b.len() < PCP_HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    if b[1] & 0x80 == 0 {
        return Err(DecodeError::NotAResponse);
    }
    let opcode = b[1] & 0x7f;
    let result = ResultCode::from_pcp(b[3]);
    let lifetime = be32(b, 4);
    let epoch = be32(b, 8);
    match opcode {
        PCP_OP_MAP if b.len() >= PCP_MAP_LEN => {
            check_options(b, PCP_MAP_LEN)?;
            let protocol = match b[36] {
                IPPROTO_TCP => Protocol::Tcp,
                IPPROTO_UDP => Protocol::Udp,
                _ => return Err(DecodeError::Malformed),
            };
            let mut nonce = [0u8; 12];
            nonce.copy_from_slice(&b[24..36]);
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[44..60]);
            Ok(Response::PcpMap {
                result,
                lifetime,
                epoch,
                nonce,
                protocol,
                internal_port: be16(b, 40),
                external_port: be16(b, 42),
                external_address: Ipv6Addr::from(a),
            })
        }
        // An error to a MAP request may come without its payload (a gateway that did
        // not understand it, e.g. UNSUPP_VERSION); a success may not.
        PCP_OP_MAP if result == ResultCode::Success => Err(DecodeError::Truncated),
        PCP_OP_MAP | PCP_OP_ANNOUNCE => {
            check_options(b, PCP_HEADER_LEN)?;
            Ok(Response::PcpOther {
                opcode,
                result,
                lifetime,
                epoch,
            })
        }
        _ => Err(DecodeError::UnknownOpcode(opcode)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: Request) -> ([u8; MAX_REQUEST], usize) {
        let mut out = [0u8; MAX_REQUEST];
        let n = r.encode(&mut out).expect("fits");
        (out, n)
    }

    #[test]
    fn natpmp_requests_as_rfc_6886_lays_them_out() {
        let (b, n) = enc(Request::NatPmpAddress);
        assert_eq!(&b[..n], &[0, 0]);
        // Section 3.3: TCP op 2, internal 6881, suggested 6881, 7200 s.
        let (b, n) = enc(Request::NatPmpMap {
            protocol: Protocol::Tcp,
            internal_port: 6881,
            suggested_port: 6881,
            lifetime: 7200,
        });
        assert_eq!(
            &b[..n],
            &[0, 2, 0, 0, 0x1a, 0xe1, 0x1a, 0xe1, 0, 0, 0x1c, 0x20]
        );
        // Section 3.4: a deletion has lifetime 0 and suggested port 0.
        let (b, n) = enc(Request::NatPmpMap {
            protocol: Protocol::Udp,
            internal_port: 6881,
            suggested_port: 0,
            lifetime: 0,
        });
        assert_eq!(&b[..n], &[0, 1, 0, 0, 0x1a, 0xe1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Request::NatPmpAddress.encode(&mut [0u8; 1]),
            Err(BufferTooSmall)
        );
    }

    #[test]
    fn pcp_map_request_as_rfc_6887_lays_it_out() {
        let (b, n) = enc(Request::PcpMap {
            client: Ipv4Addr::new(192, 168, 1, 10),
            nonce: [7; 12],
            protocol: Protocol::Udp,
            internal_port: 51413,
            suggested_port: 51413,
            suggested_address: Ipv4Addr::UNSPECIFIED,
            lifetime: 7200,
        });
        assert_eq!(n, 60);
        assert_eq!(&b[..4], &[2, 1, 0, 0]);
        assert_eq!(&b[4..8], &7200u32.to_be_bytes());
        assert_eq!(
            &b[8..24],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 10]
        );
        assert_eq!(&b[24..36], &[7; 12]);
        assert_eq!(&b[36..40], &[17, 0, 0, 0]);
        assert_eq!(&b[40..44], &[0xc8, 0xd5, 0xc8, 0xd5]);
        assert_eq!(
            &b[44..60],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(
            Request::PcpMap {
                client: Ipv4Addr::LOCALHOST,
                nonce: [0; 12],
                protocol: Protocol::Tcp,
                internal_port: 1,
                suggested_port: 1,
                suggested_address: Ipv4Addr::UNSPECIFIED,
                lifetime: 1,
            }
            .encode(&mut [0u8; 59]),
            Err(BufferTooSmall)
        );
    }

    #[test]
    fn natpmp_responses() {
        let addr = [0, 128, 0, 0, 0, 0, 0x10, 0, 203, 0, 113, 9];
        assert_eq!(
            decode_response(&addr),
            Ok(Response::NatPmpAddress {
                result: ResultCode::Success,
                epoch: 4096,
                address: Some(Ipv4Addr::new(203, 0, 113, 9)),
            })
        );
        let map = [
            0, 130, 0, 0, 0, 0, 0, 5, 0x1a, 0xe1, 0x1a, 0xe2, 0, 0, 0x0e, 0x10,
        ];
        assert_eq!(
            decode_response(&map),
            Ok(Response::NatPmpMap {
                protocol: Protocol::Tcp,
                result: ResultCode::Success,
                epoch: 5,
                internal_port: 6881,
                external_port: 6882,
                lifetime: 3600,
            })
        );
        // Refused, header only (section 3.5).
        assert_eq!(
            decode_response(&[0, 129, 0, 2, 0, 0, 0, 1]),
            Ok(Response::NatPmpMap {
                protocol: Protocol::Udp,
                result: ResultCode::NotAuthorized,
                epoch: 1,
                internal_port: 0,
                external_port: 0,
                lifetime: 0,
            })
        );
        // A NAT-PMP gateway's answer to a PCP MAP: version 0, opcode 129, result 1.
        assert!(matches!(
            decode_response(&[0, 129, 0, 1, 0, 0, 0, 9]),
            Ok(Response::NatPmpMap {
                result: ResultCode::UnsupportedVersion,
                ..
            })
        ));
        assert_eq!(
            decode_response(&[0, 128 + 9, 0, 1, 0, 0, 0, 9]),
            Ok(Response::NatPmpError {
                opcode: 9,
                result: ResultCode::UnsupportedVersion,
                epoch: 9
            })
        );
        // Strict lengths, directions, opcodes.
        assert_eq!(decode_response(&map[..15]), Err(DecodeError::Truncated));
        let mut long = [0u8; 17];
        long[..16].copy_from_slice(&map);
        assert_eq!(decode_response(&long), Err(DecodeError::TooLong));
        assert_eq!(decode_response(&addr[..7]), Err(DecodeError::Truncated));
        assert_eq!(
            decode_response(&[0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::NotAResponse)
        );
        assert_eq!(
            decode_response(&[0, 140, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::UnknownOpcode(12))
        );
        assert_eq!(decode_response(&[]), Err(DecodeError::Truncated));
        assert_eq!(
            decode_response(&[1, 128]),
            Err(DecodeError::UnknownVersion(1))
        );
    }

    fn pcp_map_response(result: u8, proto: u8) -> [u8; 60] {
        let mut b = [0u8; 60];
        b[0] = 2;
        b[1] = 0x81;
        b[3] = result;
        b[4..8].copy_from_slice(&120u32.to_be_bytes());
        b[8..12].copy_from_slice(&77u32.to_be_bytes());
        b[24..36].copy_from_slice(&[3; 12]);
        b[36] = proto;
        b[40..42].copy_from_slice(&6881u16.to_be_bytes());
        b[42..44].copy_from_slice(&16881u16.to_be_bytes());
        b[44..60].copy_from_slice(&mapped(Ipv4Addr::new(198, 51, 100, 7)));
        b
    }

    #[test]
    fn pcp_responses() {
        let b = pcp_map_response(0, 6);
        assert_eq!(
            decode_response(&b),
            Ok(Response::PcpMap {
                result: ResultCode::Success,
                lifetime: 120,
                epoch: 77,
                nonce: [3; 12],
                protocol: Protocol::Tcp,
                internal_port: 6881,
                external_port: 16881,
                external_address: Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped(),
            })
        );
        // With an option (THIRD_PARTY-like, 4 bytes of data) after the payload.
        let mut o = [0u8; 68];
        o[..60].copy_from_slice(&b);
        o[60] = 1;
        o[63] = 4;
        assert!(decode_response(&o).is_ok());
        // The option claims more than is there.
        o[63] = 5;
        assert_eq!(decode_response(&o), Err(DecodeError::Malformed));
        assert_eq!(decode_response(&o[..62]), Err(DecodeError::Malformed));
        // Unknown protocol, request bit, truncation, size cap.
        assert_eq!(
            decode_response(&pcp_map_response(0, 33)),
            Err(DecodeError::Malformed)
        );
        let mut req = b;
        req[1] = 1;
        assert_eq!(decode_response(&req), Err(DecodeError::NotAResponse));
        assert_eq!(decode_response(&b[..59]), Err(DecodeError::Truncated));
        assert_eq!(decode_response(&b[..23]), Err(DecodeError::Truncated));
        let mut big = [0u8; MAX_PCP_MESSAGE + 1];
        big[..60].copy_from_slice(&b);
        assert_eq!(decode_response(&big), Err(DecodeError::TooLong));
        // An error with the header only.
        let mut e = [0u8; 24];
        e[0] = 2;
        e[1] = 0x81;
        e[3] = 1;
        assert_eq!(
            decode_response(&e),
            Ok(Response::PcpOther {
                opcode: 1,
                result: ResultCode::UnsupportedVersion,
                lifetime: 0,
                epoch: 0
            })
        );
        e[3] = 0;
        assert_eq!(decode_response(&e), Err(DecodeError::Truncated));
        e[1] = 0x85;
        assert_eq!(decode_response(&e), Err(DecodeError::UnknownOpcode(5)));
    }

    #[test]
    fn no_input_panics() {
        // Every prefix of valid responses, and every byte value in each position of
        // a short one.
        let b = pcp_map_response(0, 17);
        for n in 0..=b.len() {
            let _ = decode_response(&b[..n]);
        }
        for i in 0..16 {
            for v in 0..=255u8 {
                let mut m = [
                    0, 130, 0, 0, 0, 0, 0, 5, 0x1a, 0xe1, 0x1a, 0xe2, 0, 0, 0x0e, 0x10,
                ];
                m[i] = v;
                let _ = decode_response(&m);
            }
        }
    }
}
