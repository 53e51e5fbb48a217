//! The KRPC codec of the Mainline DHT (BEP 5 "KRPC Protocol", BEP 32 `nodes6`/`want`,
//! BEP 42 `ip`): parse a datagram into borrowed structs, encode into a caller buffer.
//!
//! Needs no allocator. [`parse`] decodes into a caller token slice
//! ([`TOKENS_NEEDED`] tokens are enough for any message it accepts) and checks every
//! field before it is exposed, so the accessors never panic:
//!
//! - the datagram is at most [`MAX_DATAGRAM`] bytes, nesting at most 8 deep, no bytes
//!   after the root dictionary, no duplicate keys;
//! - `t` is 1 to `MAX_TID_LEN` bytes; node ids, targets and info-hashes are exactly 20;
//! - `token` is 1 to `MAX_TOKEN_LEN` bytes; `values` holds at most [`MAX_VALUES`]
//!   strings of 6 (IPv4) or 18 (IPv6) bytes; `nodes` is a multiple of 26 bytes and
//!   `nodes6` of 38, each at most `MAX_NODES` entries; a port is 1 to 65535;
//! - unknown keys are ignored (BEP 5: future extensions add keys).
//!
//! Responses carry no method name: the caller matches them to its query by `t`.

use crate::bencode::{self, Dict, Encoder, List, Token};
use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Largest datagram accepted or produced.
pub const MAX_DATAGRAM: usize = 1500;
/// Longest transaction id accepted.
pub(crate) const MAX_TID_LEN: usize = 16;
/// Longest write token accepted (BEP 5 leaves it open; real ones are 4 to 20 bytes).
pub(crate) const MAX_TOKEN_LEN: usize = 20;
/// Most peers in one `values` list.
pub const MAX_VALUES: usize = 100;
/// Most nodes in one `nodes` or `nodes6` string.
pub(crate) const MAX_NODES: usize = 16;
/// Bencode tokens enough for every message [`parse`] accepts.
pub const TOKENS_NEEDED: usize = 192;
/// Compact IPv4 node info: id, address, port.
pub const NODE4_LEN: usize = 26;
/// Compact IPv6 node info.
pub const NODE6_LEN: usize = 38;
/// Our `v` field: client "BC" and a two-byte version.
pub const VERSION: &[u8; 4] = b"BC\x00\x01";

/// A 160-bit DHT node id (also the key space of info-hashes).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub [u8; 20]);

impl NodeId {
    /// XOR distance to `other`, as a big-endian 160-bit number.
    pub fn distance(&self, other: &NodeId) -> [u8; 20] {
        let mut d = [0u8; 20];
        for (i, o) in d.iter_mut().enumerate() {
            *o = self.0[i] ^ other.0[i];
        }
        d
    }
    /// Number of leading bits shared with `other` (160 when equal).
    pub fn common_prefix(&self, other: &NodeId) -> usize {
        for (i, (a, b)) in self.0.iter().zip(other.0.iter()).enumerate() {
            let x = a ^ b;
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        160
    }
}

impl From<crate::ids::InfoHash> for NodeId {
    fn from(h: crate::ids::InfoHash) -> Self {
        Self(h.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("..")
    }
}

/// A node: id and UDP address.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NodeInfo {
    /// Its id.
    pub id: NodeId,
    /// Its address.
    pub addr: SocketAddr,
}

impl NodeInfo {
    /// Writes the compact form (26 bytes for IPv4, 38 for IPv6); returns the length,
    /// or `None` if `out` is too short.
    pub fn write_compact(&self, out: &mut [u8]) -> Option<usize> {
        let n = match self.addr {
            SocketAddr::V4(_) => NODE4_LEN,
            SocketAddr::V6(_) => NODE6_LEN,
        };
        let out = out.get_mut(..n)?;
        out[..20].copy_from_slice(&self.id.0);
        write_compact_addr(&self.addr, &mut out[20..]);
        Some(n)
    }
}

fn write_compact_addr(addr: &SocketAddr, out: &mut [u8]) -> usize {
    match addr {
        SocketAddr::V4(a) => {
            out[..4].copy_from_slice(&a.ip().octets());
            out[4..6].copy_from_slice(&a.port().to_be_bytes());
            6
        }
        SocketAddr::V6(a) => {
            out[..16].copy_from_slice(&a.ip().octets());
            out[16..18].copy_from_slice(&a.port().to_be_bytes());
            18
        }
    }
}

/// Reads a compact address of 6 or 18 bytes.
pub fn read_compact_addr(b: &[u8]) -> Option<SocketAddr> {
    match b.len() {
        6 => {
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let port = u16::from_be_bytes([b[4], b[5]]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        18 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[..16]);
            let port = u16::from_be_bytes([b[16], b[17]]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(o),
                port,
                0,
                0,
            )))
        }
        _ => None,
    }
}

/// A `nodes` (26-byte entries) or `nodes6` (38-byte entries) string, length checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct CompactNodes<'a> {
    raw: &'a [u8],
    v6: bool,
}

impl<'a> CompactNodes<'a> {
    /// Wraps an IPv4 `nodes` string; `None` unless a multiple of 26 of at most
    /// `MAX_NODES` entries.
    pub fn v4(raw: &'a [u8]) -> Option<Self> {
        (raw.len() % NODE4_LEN == 0 && raw.len() / NODE4_LEN <= MAX_NODES)
            .then_some(Self { raw, v6: false })
    }
    /// Wraps an IPv6 `nodes6` string (38-byte entries).
    pub fn v6(raw: &'a [u8]) -> Option<Self> {
        (raw.len() % NODE6_LEN == 0 && raw.len() / NODE6_LEN <= MAX_NODES)
            .then_some(Self { raw, v6: true })
    }
    /// The raw bytes.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.raw.len() / self.entry_len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
    fn entry_len(&self) -> usize {
        if self.v6 {
            NODE6_LEN
        } else {
            NODE4_LEN
        }
    }
    /// The nodes.
    pub fn iter(&self) -> impl Iterator<Item = NodeInfo> + 'a {
        let n = self.entry_len();
        self.raw.chunks_exact(n).filter_map(|c| {
            let mut id = [0u8; 20];
            id.copy_from_slice(&c[..20]);
            Some(NodeInfo {
                id: NodeId(id),
                addr: read_compact_addr(&c[20..])?,
            })
        })
    }
}

/// The `values` of a `get_peers` response: compact peers, parsed or to be encoded.
#[derive(Clone, Copy, Debug, Default)]
pub enum Values<'a> {
    /// No `values` key.
    #[default]
    None,
    /// A parsed list whose items are checked to be 6 or 18 bytes.
    Parsed(List<'a>),
    /// Addresses to encode.
    Addrs(&'a [SocketAddr]),
}

impl<'a> Values<'a> {
    /// Number of peers.
    pub fn len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::Parsed(l) => l.len(),
            Self::Addrs(a) => a.len(),
        }
    }
    /// Whether there are none (or no `values` key).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether the key is present.
    pub(crate) fn is_present(&self) -> bool {
        !matches!(self, Self::None)
    }
    /// The peers.
    pub fn iter(&self) -> impl Iterator<Item = SocketAddr> + 'a {
        let (list, addrs) = match *self {
            Self::None => (None, &[][..]),
            Self::Parsed(l) => (Some(l), &[][..]),
            Self::Addrs(a) => (None, a),
        };
        list.into_iter()
            .flat_map(|l| l.iter())
            .filter_map(|v| read_compact_addr(v.as_bytes()?))
            .chain(addrs.iter().copied())
    }
}

/// Which address families a querier wants nodes for (BEP 32 `want`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Want {
    /// `n4`: IPv4 nodes.
    pub n4: bool,
    /// `n6`: IPv6 nodes.
    pub n6: bool,
}

/// A query's method and arguments.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Method<'a> {
    /// `ping`
    Ping,
    /// `find_node`
    FindNode {
        /// The id looked for.
        target: NodeId,
    },
    /// `get_peers`
    GetPeers {
        /// The torrent.
        info_hash: NodeId,
    },
    /// `announce_peer`
    AnnouncePeer {
        /// The torrent.
        info_hash: NodeId,
        /// The peer's port (ignored by the receiver when `implied_port`).
        port: u16,
        /// Use the datagram's source port instead of `port`.
        implied_port: bool,
        /// The token from an earlier `get_peers` response.
        token: &'a [u8],
    },
    /// A method this codec does not know (answered with error 204).
    Unknown(&'a [u8]),
}

/// A query (`y` = `q`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Query<'a> {
    /// The querier's id.
    pub id: NodeId,
    /// Method and arguments.
    pub method: Method<'a>,
    /// BEP 32 `want`; both false when absent.
    pub want: Want,
    /// BEP 43 `ro`: the querier is read-only and must not be added to routing tables.
    pub read_only: bool,
}

/// A response (`y` = `r`). Which fields are present depends on the query.
#[derive(Clone, Copy, Debug)]
pub struct Response<'a> {
    /// The responder's id.
    pub id: NodeId,
    /// `nodes`, empty when absent.
    pub nodes: CompactNodes<'a>,
    /// `nodes6`, empty when absent.
    pub nodes6: CompactNodes<'a>,
    /// `values`.
    pub values: Values<'a>,
    /// `token`.
    pub token: Option<&'a [u8]>,
}

/// An error message (`y` = `e`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ErrorMsg<'a> {
    /// 201 generic, 202 server, 203 protocol, 204 method unknown.
    pub code: i64,
    /// The message (bytes, not necessarily UTF-8).
    pub message: &'a [u8],
}

/// Error codes of BEP 5.
pub mod code {
    /// Generic error.
    pub const GENERIC: i64 = 201;
    /// Server error.
    pub const SERVER: i64 = 202;
    /// Protocol error: malformed packet, invalid arguments, bad token.
    pub const PROTOCOL: i64 = 203;
    /// Method unknown.
    pub const METHOD_UNKNOWN: i64 = 204;
}

/// The three kinds of KRPC message.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// A query.
    Query(Query<'a>),
    /// A response.
    Response(Response<'a>),
    /// An error.
    Error(ErrorMsg<'a>),
}

/// One KRPC message.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// Transaction id, echoed by the responder.
    pub tid: &'a [u8],
    /// The sender's `v` (client and version), if any.
    pub version: Option<&'a [u8]>,
    /// BEP 42 `ip`: the address the responder saw the querier at.
    pub ip: Option<SocketAddr>,
    /// The content.
    pub body: Body<'a>,
}

/// Which field a [`KrpcError`] is about.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Field {
    /// The root value.
    Root,
    /// `t`
    Tid,
    /// `y`
    Type,
    /// `q`
    Method,
    /// `a` or `r`
    Args,
    /// `id`
    Id,
    /// `target`
    Target,
    /// `info_hash`
    InfoHash,
    /// `port`
    Port,
    /// `token`
    Token,
    /// `nodes`
    Nodes,
    /// `nodes6`
    Nodes6,
    /// `values`
    Values,
    /// `e`
    Error,
    /// `ip`
    Ip,
    /// `v`
    Version,
}

/// Why a datagram was refused. All are the sender's fault.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum KrpcError {
    /// Larger than [`MAX_DATAGRAM`].
    TooLong,
    /// Not bencode, or bencode beyond the limits (the token slice included).
    Bencode(bencode::DecodeError),
    /// A required field is missing.
    Missing(Field),
    /// A field has the wrong type, length or value.
    Invalid(Field),
}

impl fmt::Display for KrpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong => f.write_str("krpc: datagram too long"),
            Self::Bencode(e) => write!(f, "krpc: {e}"),
            Self::Missing(x) => write!(f, "krpc: missing {x:?}"),
            Self::Invalid(x) => write!(f, "krpc: invalid {x:?}"),
        }
    }
}

impl core::error::Error for KrpcError {}

fn id20(d: &Dict<'_>, key: &[u8], field: Field) -> Result<NodeId, KrpcError> {
    let b = d.get(key).ok_or(KrpcError::Missing(field))?;
    let b = b.as_bytes().ok_or(KrpcError::Invalid(field))?;
    let a: [u8; 20] = b.try_into().map_err(|_| KrpcError::Invalid(field))?;
    Ok(NodeId(a))
}

fn opt_bytes<'a>(d: &Dict<'a>, key: &[u8], field: Field) -> Result<Option<&'a [u8]>, KrpcError> {
    match d.get(key) {
        None => Ok(None),
        Some(v) => v.as_bytes().map(Some).ok_or(KrpcError::Invalid(field)),
    }
}

/// Parses one datagram. `tokens` should hold [`TOKENS_NEEDED`] tokens; fewer make
/// large messages fail with [`bencode::ErrorKind::TooManyTokens`].
pub fn parse<'a>(buf: &'a [u8], tokens: &'a mut [Token]) -> Result<Message<'a>, KrpcError> {
    if buf.len() > MAX_DATAGRAM {
        return Err(KrpcError::TooLong);
    }
    let limits = bencode::Limits {
        max_depth: 8,
        max_tokens: tokens.len().min(u32::MAX as usize) as u32,
        max_string_len: MAX_DATAGRAM,
        allow_trailing: false,
        max_unsorted_work: 2_000,
    };
    let doc = bencode::decode(buf, tokens, &limits).map_err(KrpcError::Bencode)?;
    let root = doc
        .root()
        .as_dict()
        .ok_or(KrpcError::Invalid(Field::Root))?;
    let tid = root.get(b"t").ok_or(KrpcError::Missing(Field::Tid))?;
    let tid = tid.as_bytes().ok_or(KrpcError::Invalid(Field::Tid))?;
    if tid.is_empty() || tid.len() > MAX_TID_LEN {
        return Err(KrpcError::Invalid(Field::Tid));
    }
    // A `v` of another type is ignored rather than refused: it is informational.
    let version = root.get(b"v").and_then(|v| v.as_bytes());
    let ip = match opt_bytes(&root, b"ip", Field::Ip)? {
        None => None,
        Some(b) => Some(read_compact_addr(b).ok_or(KrpcError::Invalid(Field::Ip))?),
    };
    let y = root.get(b"y").ok_or(KrpcError::Missing(Field::Type))?;
    let body = match y.as_bytes() {
        Some(b"q") => Body::Query(parse_query(&root)?),
        Some(b"r") => Body::Response(parse_response(&root)?),
        Some(b"e") => Body::Error(parse_error(&root)?),
        _ => return Err(KrpcError::Invalid(Field::Type)),
    };
    Ok(Message {
        tid,
        version,
        ip,
        body,
    })
}

fn parse_query<'a>(root: &Dict<'a>) -> Result<Query<'a>, KrpcError> {
    let q = root.get(b"q").ok_or(KrpcError::Missing(Field::Method))?;
    let q = q.as_bytes().ok_or(KrpcError::Invalid(Field::Method))?;
    let a = root.get(b"a").ok_or(KrpcError::Missing(Field::Args))?;
    let a = a.as_dict().ok_or(KrpcError::Invalid(Field::Args))?;
    let id = id20(&a, b"id", Field::Id)?;
    let mut want = Want::default();
    if let Some(w) = a.get(b"want") {
        // Bounded by the token count; unknown entries are ignored.
        let w = w.as_list().ok_or(KrpcError::Invalid(Field::Args))?;
        for item in w.iter() {
            match item.as_bytes() {
                Some(b"n4") => want.n4 = true,
                Some(b"n6") => want.n6 = true,
                _ => {}
            }
        }
    }
    // BEP 43 puts `ro` at the top level; some clients put it in `a`: accept both.
    let read_only = root.get_int(b"ro") == Some(1) || a.get_int(b"ro") == Some(1);
    let method = match q {
        b"ping" => Method::Ping,
        b"find_node" => Method::FindNode {
            target: id20(&a, b"target", Field::Target)?,
        },
        b"get_peers" => Method::GetPeers {
            info_hash: id20(&a, b"info_hash", Field::InfoHash)?,
        },
        b"announce_peer" => {
            let info_hash = id20(&a, b"info_hash", Field::InfoHash)?;
            let implied_port = match a.get(b"implied_port") {
                None => false,
                Some(v) => v.as_int().ok_or(KrpcError::Invalid(Field::Port))? != 0,
            };
            let port = match a.get(b"port") {
                Some(v) => {
                    let p = v.as_int().ok_or(KrpcError::Invalid(Field::Port))?;
                    match u16::try_from(p) {
                        Ok(p) if p != 0 => p,
                        // With implied_port the port argument does not matter.
                        _ if implied_port => 0,
                        _ => return Err(KrpcError::Invalid(Field::Port)),
                    }
                }
                None if implied_port => 0,
                None => return Err(KrpcError::Missing(Field::Port)),
            };
            let token =
                opt_bytes(&a, b"token", Field::Token)?.ok_or(KrpcError::Missing(Field::Token))?;
            if token.is_empty() || token.len() > MAX_TOKEN_LEN {
                return Err(KrpcError::Invalid(Field::Token));
            }
            Method::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            }
        }
        other => Method::Unknown(other),
    };
    Ok(Query {
        id,
        method,
        want,
        read_only,
    })
}

fn parse_response<'a>(root: &Dict<'a>) -> Result<Response<'a>, KrpcError> {
    let r = root.get(b"r").ok_or(KrpcError::Missing(Field::Args))?;
    let r = r.as_dict().ok_or(KrpcError::Invalid(Field::Args))?;
    let id = id20(&r, b"id", Field::Id)?;
    let nodes = match opt_bytes(&r, b"nodes", Field::Nodes)? {
        None => CompactNodes::default(),
        Some(b) => CompactNodes::v4(b).ok_or(KrpcError::Invalid(Field::Nodes))?,
    };
    let nodes6 = match opt_bytes(&r, b"nodes6", Field::Nodes6)? {
        None => CompactNodes { raw: &[], v6: true },
        Some(b) => CompactNodes::v6(b).ok_or(KrpcError::Invalid(Field::Nodes6))?,
    };
    let token = opt_bytes(&r, b"token", Field::Token)?;
    if let Some(t) = token {
        if t.is_empty() || t.len() > MAX_TOKEN_LEN {
            return Err(KrpcError::Invalid(Field::Token));
        }
    }
    let values = match r.get(b"values") {
        None => Values::None,
        Some(v) => {
            let l = v.as_list().ok_or(KrpcError::Invalid(Field::Values))?;
            if l.len() > MAX_VALUES {
                return Err(KrpcError::Invalid(Field::Values));
            }
            for item in l.iter() {
                match item.as_bytes() {
                    Some(b) if b.len() == 6 || b.len() == 18 => {}
                    _ => return Err(KrpcError::Invalid(Field::Values)),
                }
            }
            Values::Parsed(l)
        }
    };
    Ok(Response {
        id,
        nodes,
        nodes6,
        values,
        token,
    })
}

fn parse_error<'a>(root: &Dict<'a>) -> Result<ErrorMsg<'a>, KrpcError> {
    let e = root.get(b"e").ok_or(KrpcError::Missing(Field::Error))?;
    let l = e.as_list().ok_or(KrpcError::Invalid(Field::Error))?;
    let mut it = l.iter();
    let code = it
        .next()
        .and_then(|v| v.as_int())
        .ok_or(KrpcError::Invalid(Field::Error))?;
    let message = it.next().and_then(|v| v.as_bytes()).unwrap_or_default();
    Ok(ErrorMsg { code, message })
}

/// The output buffer is too small for the message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BufferTooSmall;

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("krpc: output buffer too small")
    }
}

impl core::error::Error for BufferTooSmall {}

type Enc<'o, 'b> = Encoder<&'o mut &'b mut [u8]>;

impl Message<'_> {
    /// Encodes the message (canonical bencode, keys sorted) into `out`; returns the
    /// number of bytes written. `version` is written as given: pass [`VERSION`] for ours.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let total = out.len();
        let mut w: &mut [u8] = out;
        self.encode_into(&mut Encoder::new(&mut w))
            .map_err(|_| BufferTooSmall)?;
        Ok(total - w.len())
    }

    fn encode_into(&self, e: &mut Enc<'_, '_>) -> Result<(), embedded_io::SliceWriteError> {
        let mut addr = [0u8; 18];
        e.dict()?;
        match &self.body {
            Body::Query(q) => {
                e.bytes(b"a")?;
                e.dict()?;
                e.key_bytes(b"id", &q.id.0)?;
                let (info_hash, port, token) = match q.method {
                    Method::GetPeers { info_hash } => (Some(info_hash), None, None),
                    Method::AnnouncePeer {
                        info_hash,
                        port,
                        implied_port,
                        token,
                    } => (Some(info_hash), Some((port, implied_port)), Some(token)),
                    _ => (None, None, None),
                };
                if let Some((_, implied)) = port {
                    e.key_int(b"implied_port", i64::from(implied))?;
                }
                if let Some(h) = info_hash {
                    e.key_bytes(b"info_hash", &h.0)?;
                }
                if let Some((p, _)) = port {
                    e.key_int(b"port", i64::from(p))?;
                }
                if let Method::FindNode { target } = q.method {
                    e.key_bytes(b"target", &target.0)?;
                }
                if let Some(t) = token {
                    e.key_bytes(b"token", t)?;
                }
                if q.want.n4 || q.want.n6 {
                    e.bytes(b"want")?;
                    e.list()?;
                    if q.want.n4 {
                        e.bytes(b"n4")?;
                    }
                    if q.want.n6 {
                        e.bytes(b"n6")?;
                    }
                    e.end()?;
                }
                e.end()?;
            }
            Body::Response(_) => {}
            Body::Error(err) => {
                e.bytes(b"e")?;
                e.list()?;
                e.int(err.code)?;
                e.bytes(err.message)?;
                e.end()?;
            }
        }
        if let Some(ip) = &self.ip {
            let n = write_compact_addr(ip, &mut addr);
            e.key_bytes(b"ip", &addr[..n])?;
        }
        if let Body::Query(q) = &self.body {
            let name: &[u8] = match q.method {
                Method::Ping => b"ping",
                Method::FindNode { .. } => b"find_node",
                Method::GetPeers { .. } => b"get_peers",
                Method::AnnouncePeer { .. } => b"announce_peer",
                Method::Unknown(m) => m,
            };
            e.key_bytes(b"q", name)?;
        }
        if let Body::Response(r) = &self.body {
            e.bytes(b"r")?;
            e.dict()?;
            e.key_bytes(b"id", &r.id.0)?;
            if !r.nodes.is_empty() {
                e.key_bytes(b"nodes", r.nodes.raw())?;
            }
            if !r.nodes6.is_empty() {
                e.key_bytes(b"nodes6", r.nodes6.raw())?;
            }
            if let Some(t) = r.token {
                e.key_bytes(b"token", t)?;
            }
            if r.values.is_present() {
                e.bytes(b"values")?;
                e.list()?;
                for a in r.values.iter() {
                    let n = write_compact_addr(&a, &mut addr);
                    e.bytes(&addr[..n])?;
                }
                e.end()?;
            }
            e.end()?;
        }
        // BEP 43: `ro` sits at the top level of a query, between `q` and `t`.
        if let Body::Query(q) = &self.body {
            if q.read_only {
                e.key_int(b"ro", 1)?;
            }
        }
        e.key_bytes(b"t", self.tid)?;
        if let Some(v) = self.version {
            e.key_bytes(b"v", v)?;
        }
        let y: &[u8] = match self.body {
            Body::Query(_) => b"q",
            Body::Response(_) => b"r",
            Body::Error(_) => b"e",
        };
        e.key_bytes(b"y", y)?;
        e.end()
    }
}

#[cfg(test)]
mod tests;
