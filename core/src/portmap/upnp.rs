//! UPnP IGD (Internet Gateway Device) port mapping, the messages: the SSDP search a
//! client multicasts and the gateway's answer, the HTTP responses that carry the
//! device description and the SOAP replies, a small XML scanner for both, and the
//! SOAP requests (`AddPortMapping`, `DeletePortMapping`, `GetExternalIPAddress`). No
//! allocator: requests are written into a caller buffer, answers read from a borrowed
//! one into borrowed slices and plain values.
//!
//! Everything read is bounded and strict; nothing here panics on any input:
//! - an SSDP answer: at most [`MAX_SSDP`] bytes, [`MAX_HEADERS`] header lines;
//! - an HTTP response: at most [`MAX_HTTP_HEAD`] bytes of head, [`MAX_HEADERS`]
//!   header lines, a body of `Content-Length`, chunks, or up to the end; the host
//!   reads at most [`MAX_HTTP_RESPONSE`] bytes;
//! - XML: at most [`MAX_XML_DEPTH`] nested elements, names of [`MAX_NAME`] bytes, no
//!   DOCTYPE (so no entities to expand), no CDATA; a value used (a URL, a service
//!   type, an address) of at most [`MAX_VALUE`] bytes, with no markup or entity in it;
//! - URLs: `http://` with an IPv4 literal host only (no name to resolve), which must
//!   be the gateway's (checked by the client, [`super::igd`]).

use super::wire::{BufferTooSmall, Protocol};
use core::fmt::{self, Write as _};
use core::net::{Ipv4Addr, SocketAddrV4};

/// Where SSDP searches go (UPnP Device Architecture 1.1, section 1.3.2).
pub const SSDP_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);
/// The device types searched for: version 1, and version 2 (which answers version
/// 1 searches too, but some only answer their own).
pub const IGD_TYPES: [&str; 2] = [
    "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
    "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
];
/// The services that map ports, best first.
pub const SERVICE_TYPES: [&str; 3] = [
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
];
/// The description every mapping carries (the router's UI shows it).
pub const DESCRIPTION: &str = "btcore";
/// The largest SSDP answer read; longer ones are refused.
pub const MAX_SSDP: usize = 1500;
/// The most header lines read in an SSDP answer or an HTTP response.
pub const MAX_HEADERS: usize = 32;
/// The longest HTTP response head (status line and headers).
pub const MAX_HTTP_HEAD: usize = 8 * 1024;
/// The most bytes of an HTTP response read (a device description is a few KiB).
pub const MAX_HTTP_RESPONSE: usize = 64 * 1024;
/// The deepest XML nesting scanned.
pub const MAX_XML_DEPTH: usize = 16;
/// The longest XML element name.
pub const MAX_NAME: usize = 64;
/// The longest value taken from XML or a header (URL, service type, address).
pub const MAX_VALUE: usize = 256;
/// The longest request written (a SOAP `AddPortMapping` with its HTTP head).
pub const MAX_REQUEST: usize = 1536;

/// Why an answer was not understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpnpParseError {
    /// Longer than its bound.
    TooLong,
    /// Ends before it is whole (no blank line after the head, a body shorter than its
    /// `Content-Length`, a chunk cut short).
    Truncated,
    /// Not an HTTP/1.x response, or a header line or chunk size that is not one.
    BadHttp,
    /// More than [`MAX_HEADERS`] header lines.
    TooManyHeaders,
    /// An SSDP answer without `LOCATION` or `ST`, or for another device type.
    NotAGateway,
    /// A URL that is not `http://IPV4[:PORT][/PATH]`, or too long.
    BadUrl,
    /// XML that is not well formed, too deep, or uses DOCTYPE or CDATA.
    BadXml,
    /// A device description without a port mapping service.
    NoService,
    /// A SOAP reply that has neither the action's response nor a UPnP error.
    BadSoap,
    /// An HTTP status other than 200 (or 500 with a SOAP fault).
    Status(u16),
}

impl fmt::Display for UpnpParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong => f.write_str("too long"),
            Self::Truncated => f.write_str("truncated"),
            Self::BadHttp => f.write_str("not HTTP"),
            Self::TooManyHeaders => f.write_str("too many headers"),
            Self::NotAGateway => f.write_str("not an Internet gateway's answer"),
            Self::BadUrl => f.write_str("unusable URL"),
            Self::BadXml => f.write_str("malformed XML"),
            Self::NoService => f.write_str("no WANIPConnection or WANPPPConnection service"),
            Self::BadSoap => f.write_str("malformed SOAP reply"),
            Self::Status(s) => write!(f, "HTTP status {s}"),
        }
    }
}

type Result<T> = core::result::Result<T, UpnpParseError>;

/// A `core::fmt::Write` into a byte slice.
struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl fmt::Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn write_with(
    out: &mut [u8],
    f: impl FnOnce(&mut Out<'_>) -> fmt::Result,
) -> core::result::Result<usize, BufferTooSmall> {
    let mut o = Out { buf: out, len: 0 };
    f(&mut o).map_err(|_| BufferTooSmall)?;
    Ok(o.len)
}

/// Writes an SSDP `M-SEARCH` for `st` (one of [`IGD_TYPES`]) asking for answers
/// within `mx` seconds (1 to 5).
pub fn write_msearch(
    out: &mut [u8],
    st: &str,
    mx: u8,
) -> core::result::Result<usize, BufferTooSmall> {
    write_with(out, |o| {
        write!(
            o,
            "M-SEARCH * HTTP/1.1\r\nHOST: {SSDP_ADDR}\r\nMAN: \"ssdp:discover\"\r\nMX: {}\r\nST: {st}\r\n\r\n",
            mx.clamp(1, 5)
        )
    })
}

/// An `http://` URL with an IPv4 literal host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpUrl<'a> {
    /// The host and port (80 when not given).
    pub addr: SocketAddrV4,
    /// The path, starting with `/` (with its query, if any).
    pub path: &'a str,
}

fn ascii_value(b: &[u8]) -> Result<&str> {
    if b.len() > MAX_VALUE || !b.iter().all(|c| c.is_ascii_graphic()) {
        return Err(UpnpParseError::BadUrl);
    }
    core::str::from_utf8(b).map_err(|_| UpnpParseError::BadUrl)
}

/// Parses `http://A.B.C.D[:PORT][/PATH]`: no user, no host name, no fragment, only
/// printable ASCII, at most [`MAX_VALUE`] bytes.
pub fn parse_url(s: &str) -> Result<HttpUrl<'_>> {
    let s = ascii_value(s.as_bytes())?;
    let rest = s
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("http://"))
        .and_then(|_| s.get(7..))
        .ok_or(UpnpParseError::BadUrl)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if path.contains('#') || path.contains('\\') {
        return Err(UpnpParseError::BadUrl);
    }
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => {
            let p: u16 = p.parse().map_err(|_| UpnpParseError::BadUrl)?;
            (h, p)
        }
        None => (authority, 80),
    };
    if port == 0 {
        return Err(UpnpParseError::BadUrl);
    }
    let ip: Ipv4Addr = host.parse().map_err(|_| UpnpParseError::BadUrl)?;
    Ok(HttpUrl {
        addr: SocketAddrV4::new(ip, port),
        path,
    })
}

/// Resolves `reference` (a control URL: absolute, `/absolute-path` or a relative path)
/// against `base` (the URLBase, else the description's LOCATION). A relative path is
/// taken from the base's directory; `..` is refused. The result's path is returned as
/// a (possibly two-part) string: `prefix` then `rest`.
pub fn resolve_url<'a>(
    base: HttpUrl<'a>,
    reference: &'a str,
) -> Result<(SocketAddrV4, &'a str, &'a str)> {
    let r = ascii_value(reference.as_bytes())?;
    if r.len() >= 7 && r[..7].eq_ignore_ascii_case("http://") {
        let u = parse_url(r)?;
        return Ok((u.addr, "", u.path));
    }
    if r.contains("..") || r.contains('#') || r.contains('\\') || r.contains("://") {
        return Err(UpnpParseError::BadUrl);
    }
    if r.starts_with('/') {
        return Ok((base.addr, "", r));
    }
    // The base's directory: up to its last '/', without its query.
    let bpath = base.path.split('?').next().unwrap_or("/");
    let dir = match bpath.rfind('/') {
        Some(i) => &bpath[..=i],
        None => "/",
    };
    Ok((base.addr, dir, r))
}

/// One `Name: value` header line of a head.
fn headers(head: &[u8]) -> impl Iterator<Item = Result<(&[u8], &[u8])>> {
    let mut lines = head.split(|&b| b == b'\n').skip(1);
    let mut n = 0;
    core::iter::from_fn(move || loop {
        let line = lines.next()?;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        n += 1;
        if n > MAX_HEADERS {
            return Some(Err(UpnpParseError::TooManyHeaders));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Some(Err(UpnpParseError::BadHttp));
        };
        let name = &line[..colon];
        if name.is_empty()
            || !name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
        {
            return Some(Err(UpnpParseError::BadHttp));
        }
        return Some(Ok((name, trim(&line[colon + 1..]))));
    })
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// The end of the head (after its blank line) and the status code.
fn split_head(b: &[u8]) -> Result<(usize, u16)> {
    let end = find(b, b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| find(b, b"\n\n").map(|i| i + 2));
    let Some(end) = end else {
        return Err(if b.len() > MAX_HTTP_HEAD {
            UpnpParseError::TooLong
        } else {
            UpnpParseError::Truncated
        });
    };
    if end > MAX_HTTP_HEAD {
        return Err(UpnpParseError::TooLong);
    }
    let status_line = b[..end].split(|&c| c == b'\n').next().unwrap_or(&[]);
    let status_line = status_line.strip_suffix(b"\r").unwrap_or(status_line);
    let rest = status_line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix(b"HTTP/1.0 "))
        .ok_or(UpnpParseError::BadHttp)?;
    let code = rest.get(..3).ok_or(UpnpParseError::BadHttp)?;
    if !code.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|&c| c != b' ') {
        return Err(UpnpParseError::BadHttp);
    }
    let status = code.iter().fold(0u16, |a, &d| a * 10 + u16::from(d - b'0'));
    Ok((end, status))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A gateway's answer to the search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsdpAnswer<'a> {
    /// The device type answered for (one of [`IGD_TYPES`]).
    pub st: &'a str,
    /// The device description's URL.
    pub location: HttpUrl<'a>,
}

/// Parses an SSDP answer (`HTTP/1.1 200 OK` with `ST` one of [`IGD_TYPES`] and
/// `LOCATION` an `http://` URL with an IPv4 host).
pub fn parse_ssdp(b: &[u8]) -> Result<SsdpAnswer<'_>> {
    if b.len() > MAX_SSDP {
        return Err(UpnpParseError::TooLong);
    }
    let (end, status) = split_head(b)?;
    if status != 200 {
        return Err(UpnpParseError::Status(status));
    }
    let mut st = None;
    let mut location = None;
    for h in headers(&b[..end]) {
        let (name, value) = h?;
        if name.eq_ignore_ascii_case(b"ST") {
            st = IGD_TYPES.iter().copied().find(|t| t.as_bytes() == value);
            if st.is_none() {
                return Err(UpnpParseError::NotAGateway);
            }
        } else if name.eq_ignore_ascii_case(b"LOCATION") {
            location = Some(value);
        }
    }
    let (Some(st), Some(location)) = (st, location) else {
        return Err(UpnpParseError::NotAGateway);
    };
    let location = core::str::from_utf8(location).map_err(|_| UpnpParseError::BadUrl)?;
    Ok(SsdpAnswer {
        st,
        location: parse_url(location)?,
    })
}

/// Parses a whole HTTP response read up to the server's close (at most
/// [`MAX_HTTP_RESPONSE`] bytes), in place: a chunked body is joined where it is.
/// Returns the status and the body's range in `b`.
pub fn parse_http_response(b: &mut [u8]) -> Result<(u16, core::ops::Range<usize>)> {
    if b.len() > MAX_HTTP_RESPONSE {
        return Err(UpnpParseError::TooLong);
    }
    let (end, status) = split_head(b)?;
    let mut length = None;
    let mut chunked = false;
    for h in headers(&b[..end]) {
        let (name, value) = h?;
        if name.eq_ignore_ascii_case(b"Content-Length") {
            if value.is_empty() || value.len() > 7 || !value.iter().all(u8::is_ascii_digit) {
                return Err(UpnpParseError::BadHttp);
            }
            let n = value
                .iter()
                .fold(0usize, |a, &d| a * 10 + usize::from(d - b'0'));
            if length.is_some_and(|l| l != n) {
                return Err(UpnpParseError::BadHttp);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"Transfer-Encoding") {
            if !value.eq_ignore_ascii_case(b"chunked") {
                return Err(UpnpParseError::BadHttp);
            }
            chunked = true;
        }
    }
    if chunked {
        let n = dechunk(&mut b[end..])?;
        return Ok((status, end..end + n));
    }
    match length {
        Some(n) => {
            if b.len() - end < n {
                return Err(UpnpParseError::Truncated);
            }
            Ok((status, end..end + n))
        }
        None => Ok((status, end..b.len())),
    }
}

/// Whether `b` holds a whole response by its own framing (`Content-Length` bytes of
/// body, or a chunked body through its last chunk): the host stops reading there
/// instead of waiting for a server that keeps the connection open. A response framed
/// by the close alone, or not yet parsable, is not whole until the server closes.
pub fn http_response_complete(b: &[u8]) -> bool {
    let Ok((end, _)) = split_head(b) else {
        return false;
    };
    for h in headers(&b[..end]) {
        let Ok((name, value)) = h else {
            return false;
        };
        if name.eq_ignore_ascii_case(b"Content-Length") {
            let n = core::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok());
            return n.is_some_and(|n| b.len() - end >= n);
        }
        if name.eq_ignore_ascii_case(b"Transfer-Encoding") {
            // The last chunk and the blank line after it (no trailers).
            return b[end..].ends_with(b"\r\n0\r\n\r\n") || b[end..] == *b"0\r\n\r\n";
        }
    }
    false
}

/// Joins a chunked body in place; returns its length. Chunk extensions are skipped,
/// trailers ignored.
fn dechunk(b: &mut [u8]) -> Result<usize> {
    let mut read = 0;
    let mut write = 0;
    loop {
        let line_end = b[read..]
            .iter()
            .position(|&c| c == b'\n')
            .ok_or(UpnpParseError::Truncated)?;
        let line = &b[read..read + line_end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let hex = line.split(|&c| c == b';').next().unwrap_or(&[]);
        let hex = trim(hex);
        if hex.is_empty() || hex.len() > 6 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(UpnpParseError::BadHttp);
        }
        let size = hex.iter().fold(0usize, |a, &d| {
            a * 16 + usize::from(char::from(d).to_digit(16).unwrap_or(0) as u8)
        });
        read += line_end + 1;
        if size == 0 {
            return Ok(write);
        }
        if b.len() - read < size {
            return Err(UpnpParseError::Truncated);
        }
        b.copy_within(read..read + size, write);
        write += size;
        read += size;
        // The CRLF after the data.
        match &b[read..] {
            [b'\r', b'\n', ..] => read += 2,
            [b'\n', ..] => read += 1,
            [] | [b'\r'] => return Err(UpnpParseError::Truncated),
            _ => return Err(UpnpParseError::BadHttp),
        }
    }
}

/// What the XML scanner meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Xml<'a> {
    /// An element opens (its local name: the prefix is dropped).
    Open(&'a [u8]),
    /// An element closes (an empty element gives `Open` then `Close`).
    Close(&'a [u8]),
    /// Character data between tags (untrimmed).
    Text(&'a [u8]),
}

/// A strict, bounded scanner: checks nesting (names must match, at most
/// [`MAX_XML_DEPTH`]), skips the declaration, processing instructions, comments and
/// attributes; refuses DOCTYPE and CDATA.
struct Scanner<'a> {
    b: &'a [u8],
    at: usize,
    stack: [&'a [u8]; MAX_XML_DEPTH],
    depth: usize,
    pending_close: Option<&'a [u8]>,
    seen_root: bool,
}

fn local(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&c| c == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"_-.:".contains(&c)
}

impl<'a> Scanner<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self {
            b,
            at: 0,
            stack: [&[]; MAX_XML_DEPTH],
            depth: 0,
            pending_close: None,
            seen_root: false,
        }
    }

    fn depth(&self) -> usize {
        self.depth
    }

    /// The next item; None at a well-formed end.
    fn next_item(&mut self) -> Result<Option<Xml<'a>>> {
        if let Some(n) = self.pending_close.take() {
            return Ok(Some(Xml::Close(n)));
        }
        loop {
            let rest = &self.b[self.at..];
            if rest.is_empty() {
                return if self.depth == 0 && self.seen_root {
                    Ok(None)
                } else {
                    Err(UpnpParseError::BadXml)
                };
            }
            if rest[0] != b'<' {
                let n = rest.iter().position(|&c| c == b'<').unwrap_or(rest.len());
                let text = &rest[..n];
                self.at += n;
                if self.depth == 0 {
                    // Only white space outside the root.
                    if !text.iter().all(u8::is_ascii_whitespace) {
                        return Err(UpnpParseError::BadXml);
                    }
                    continue;
                }
                return Ok(Some(Xml::Text(text)));
            }
            if rest.starts_with(b"<?") {
                let end = find(rest, b"?>").ok_or(UpnpParseError::BadXml)?;
                self.at += end + 2;
                continue;
            }
            if rest.starts_with(b"<!--") {
                let end = find(&rest[4..], b"-->").ok_or(UpnpParseError::BadXml)?;
                self.at += 4 + end + 3;
                continue;
            }
            if rest.starts_with(b"<!") {
                // DOCTYPE (entities) and CDATA: not in a device description or a reply.
                return Err(UpnpParseError::BadXml);
            }
            let closing = rest.get(1) == Some(&b'/');
            let name_start = if closing { 2 } else { 1 };
            let name_len = rest[name_start..]
                .iter()
                .position(|&c| !is_name_byte(c))
                .ok_or(UpnpParseError::BadXml)?;
            if name_len == 0 || name_len > MAX_NAME {
                return Err(UpnpParseError::BadXml);
            }
            let name = &rest[name_start..name_start + name_len];
            // The end of the tag, past quoted attribute values.
            let mut i = name_start + name_len;
            let mut quote = None;
            loop {
                let c = *rest.get(i).ok_or(UpnpParseError::BadXml)?;
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => {}
                    None if c == b'"' || c == b'\'' => {
                        if closing {
                            return Err(UpnpParseError::BadXml);
                        }
                        quote = Some(c);
                    }
                    None if c == b'<' => return Err(UpnpParseError::BadXml),
                    None if c == b'>' => break,
                    None => {}
                }
                i += 1;
            }
            let empty = !closing && rest[i - 1] == b'/';
            self.at += i + 1;
            if closing {
                if self.depth == 0 || self.stack[self.depth - 1] != name {
                    return Err(UpnpParseError::BadXml);
                }
                self.depth -= 1;
                return Ok(Some(Xml::Close(local(name))));
            }
            if self.depth == 0 && self.seen_root {
                return Err(UpnpParseError::BadXml);
            }
            self.seen_root = true;
            if empty {
                self.pending_close = Some(local(name));
                return Ok(Some(Xml::Open(local(name))));
            }
            if self.depth == MAX_XML_DEPTH {
                return Err(UpnpParseError::BadXml);
            }
            self.stack[self.depth] = name;
            self.depth += 1;
            return Ok(Some(Xml::Open(local(name))));
        }
    }
}

/// A value from XML text: trimmed, at most [`MAX_VALUE`] bytes, printable ASCII with no
/// entity.
fn xml_value(t: &[u8]) -> Result<&str> {
    let t = trim_ws(t);
    if t.len() > MAX_VALUE || !t.iter().all(|c| c.is_ascii_graphic() && *c != b'&') {
        return Err(UpnpParseError::BadXml);
    }
    core::str::from_utf8(t).map_err(|_| UpnpParseError::BadXml)
}

fn trim_ws(mut b: &[u8]) -> &[u8] {
    while let [c, rest @ ..] = b {
        if !c.is_ascii_whitespace() {
            break;
        }
        b = rest;
    }
    while let [rest @ .., c] = b {
        if !c.is_ascii_whitespace() {
            break;
        }
        b = rest;
    }
    b
}

/// The port mapping service a device description offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IgdService<'a> {
    /// One of [`SERVICE_TYPES`] (the SOAP namespace and action prefix).
    pub service_type: &'static str,
    /// The control URL as written (resolve it with [`resolve_url`] against
    /// [`IgdService::url_base`] or the LOCATION).
    pub control_url: &'a str,
    /// The description's `URLBase` (UPnP 1.0), if any.
    pub url_base: Option<&'a str>,
}

/// Scans a device description for the best port mapping service ([`SERVICE_TYPES`]
/// order; the first of a type).
pub fn parse_description(b: &[u8]) -> Result<IgdService<'_>> {
    let mut sc = Scanner::new(b);
    let mut best: Option<(usize, &'static str, &str)> = None;
    let mut url_base = None;
    // Inside a <service>: its type and control URL so far.
    let mut in_service: Option<usize> = None;
    let mut st: Option<&[u8]> = None;
    let mut ctl: Option<&[u8]> = None;
    let mut current: Option<&[u8]> = None;
    while let Some(item) = sc.next_item()? {
        match item {
            Xml::Open(name) => {
                if name == b"service" {
                    if in_service.is_some() {
                        return Err(UpnpParseError::BadXml);
                    }
                    in_service = Some(sc.depth());
                    st = None;
                    ctl = None;
                }
                current = Some(name);
            }
            Xml::Text(t) => match (current, in_service) {
                (Some(b"serviceType"), Some(_)) => st = Some(t),
                (Some(b"controlURL"), Some(_)) => ctl = Some(t),
                (Some(b"URLBase"), None) if sc.depth() == 2 => {
                    url_base = Some(xml_value(t)?);
                }
                _ => {}
            },
            Xml::Close(name) => {
                current = None;
                if name == b"service" && in_service.is_some() {
                    in_service = None;
                    let Some(kind) = st.and_then(|t| {
                        let t = trim_ws(t);
                        SERVICE_TYPES.iter().position(|s| s.as_bytes() == t)
                    }) else {
                        continue;
                    };
                    let Some(c) = ctl else { continue };
                    let c = xml_value(c)?;
                    if c.is_empty() {
                        continue;
                    }
                    if best.is_none_or(|(k, _, _)| kind < k) {
                        best = Some((kind, SERVICE_TYPES[kind], c));
                    }
                }
            }
        }
    }
    let (_, service_type, control_url) = best.ok_or(UpnpParseError::NoService)?;
    Ok(IgdService {
        service_type,
        control_url,
        url_base: url_base.filter(|u| !u.is_empty()),
    })
}

/// A SOAP action on the port mapping service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The gateway's external address.
    GetExternalIpAddress,
    /// Map (or renew) `external_port` to `client:internal_port` for `lease` seconds
    /// (0: no end), described as [`DESCRIPTION`].
    AddPortMapping {
        /// The transport.
        protocol: Protocol,
        /// The port peers dial on the external address.
        external_port: u16,
        /// Our port.
        internal_port: u16,
        /// Our address on the gateway's network.
        client: Ipv4Addr,
        /// Seconds (0: permanent, for gateways that only take that).
        lease: u32,
    },
    /// Delete the mapping of `external_port`.
    DeletePortMapping {
        /// The transport.
        protocol: Protocol,
        /// The external port mapped.
        external_port: u16,
    },
}

impl Action {
    /// The action's name (`AddPortMapping`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::GetExternalIpAddress => "GetExternalIPAddress",
            Self::AddPortMapping { .. } => "AddPortMapping",
            Self::DeletePortMapping { .. } => "DeletePortMapping",
        }
    }
}

/// Writes an HTTP/1.1 GET of `path` on `host` (the device description).
pub fn write_get(
    out: &mut [u8],
    host: SocketAddrV4,
    path: (&str, &str),
) -> core::result::Result<usize, BufferTooSmall> {
    write_with(out, |o| {
        write!(
            o,
            "GET {}{} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: btcore UPnP/1.1\r\n\r\n",
            path.0, path.1
        )
    })
}

/// Writes the HTTP POST of `action` to the control URL (`host`, `path`) of a service
/// of `service_type` (one of [`SERVICE_TYPES`]).
pub fn write_soap(
    out: &mut [u8],
    host: SocketAddrV4,
    path: (&str, &str),
    service_type: &str,
    action: &Action,
) -> core::result::Result<usize, BufferTooSmall> {
    let name = action.name();
    let body = |o: &mut dyn fmt::Write| -> fmt::Result {
        write!(
            o,
            "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>\
             <u:{name} xmlns:u=\"{service_type}\">"
        )?;
        match *action {
            Action::GetExternalIpAddress => {}
            Action::AddPortMapping {
                protocol,
                external_port,
                internal_port,
                client,
                lease,
            } => write!(
                o,
                "<NewRemoteHost></NewRemoteHost><NewExternalPort>{external_port}</NewExternalPort>\
                 <NewProtocol>{}</NewProtocol><NewInternalPort>{internal_port}</NewInternalPort>\
                 <NewInternalClient>{client}</NewInternalClient><NewEnabled>1</NewEnabled>\
                 <NewPortMappingDescription>{DESCRIPTION}</NewPortMappingDescription>\
                 <NewLeaseDuration>{lease}</NewLeaseDuration>",
                protocol.name()
            )?,
            Action::DeletePortMapping {
                protocol,
                external_port,
            } => write!(
                o,
                "<NewRemoteHost></NewRemoteHost><NewExternalPort>{external_port}</NewExternalPort>\
                 <NewProtocol>{}</NewProtocol>",
                protocol.name()
            )?,
        }
        write!(o, "</u:{name}></s:Body></s:Envelope>\r\n")
    };
    // The body's length first (a counting writer).
    struct Count(usize);
    impl fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut c = Count(0);
    body(&mut c).map_err(|_| BufferTooSmall)?;
    write_with(out, |o| {
        write!(
            o,
            "POST {}{} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n\
             SOAPAction: \"{service_type}#{name}\"\r\nContent-Length: {}\r\nConnection: close\r\n\
             User-Agent: btcore UPnP/1.1\r\n\r\n",
            path.0, path.1, c.0
        )?;
        body(o)
    })
}

/// A gateway's answer to an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoapReply {
    /// Done (`AddPortMapping`, `DeletePortMapping`).
    Done,
    /// `GetExternalIPAddress`'s answer (None: the gateway has none, e.g. an empty value).
    ExternalAddress(Option<Ipv4Addr>),
    /// A SOAP fault with a UPnP error code ([`UpnpErrorCode`]).
    Fault(UpnpErrorCode),
}

/// A UPnP error code from a SOAP fault (IGD WANIPConnection, section 2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpnpErrorCode(pub u16);

impl UpnpErrorCode {
    /// 402: invalid arguments.
    pub const INVALID_ARGS: Self = Self(402);
    /// 501: the action failed.
    pub const ACTION_FAILED: Self = Self(501);
    /// 606: not authorized.
    pub const NOT_AUTHORIZED: Self = Self(606);
    /// 714: no such entry (deleting a mapping that is gone).
    pub const NO_SUCH_ENTRY: Self = Self(714);
    /// 718: the external port is mapped to someone else.
    pub const CONFLICT: Self = Self(718);
    /// 724: the external and internal ports must be the same.
    pub const SAME_PORT_VALUES_REQUIRED: Self = Self(724);
    /// 725: only lease 0 (permanent) is taken.
    pub const ONLY_PERMANENT_LEASES: Self = Self(725);
    /// 727: the external port cannot be a wildcard.
    pub const EXTERNAL_PORT_WILDCARD: Self = Self(727);
    /// 728: the gateway's table is full.
    pub const NO_PORT_MAPS_AVAILABLE: Self = Self(728);

    fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            402 => "InvalidArgs",
            501 => "ActionFailed",
            606 => "ActionNotAuthorized",
            714 => "NoSuchEntryInArray",
            715 => "WildCardNotPermittedInSrcIP",
            716 => "WildCardNotPermittedInExtPort",
            718 => "ConflictInMappingEntry",
            724 => "SamePortValuesRequired",
            725 => "OnlyPermanentLeasesSupported",
            726 => "RemoteHostOnlySupportsWildcard",
            727 => "ExternalPortOnlySupportsWildcard",
            728 => "NoPortMapsAvailable",
            729 => "ConflictWithOtherMechanisms",
            _ => return None,
        })
    }
}

impl fmt::Display for UpnpErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "UPnP error {} {n}", self.0),
            None => write!(f, "UPnP error {}", self.0),
        }
    }
}

/// Reads the reply to `action` from an HTTP status and body: 200 with the action's
/// `...Response` element (and, for `GetExternalIPAddress`, its address), or a SOAP
/// fault (status 500, some gateways 200) with a `UPnPError` code.
pub fn parse_soap(status: u16, body: &[u8], action: &Action) -> Result<SoapReply> {
    let mut sc = Scanner::new(body);
    let mut fault = false;
    let mut response = false;
    let mut code: Option<u16> = None;
    let mut address: Option<Option<Ipv4Addr>> = None;
    let mut current: Option<&[u8]> = None;
    let want = action.name().as_bytes();
    while let Some(item) = sc.next_item()? {
        match item {
            Xml::Open(name) => {
                if name == b"Fault" {
                    fault = true;
                } else if name.len() == want.len() + 8
                    && name.starts_with(want)
                    && name.ends_with(b"Response")
                {
                    response = true;
                } else if name == b"NewExternalIPAddress" && response {
                    address = Some(None);
                }
                current = Some(name);
            }
            Xml::Text(t) => match current {
                Some(b"errorCode") if fault => {
                    let t = trim_ws(t);
                    if t.is_empty() || t.len() > 4 || !t.iter().all(u8::is_ascii_digit) {
                        return Err(UpnpParseError::BadSoap);
                    }
                    code = Some(t.iter().fold(0u16, |a, &d| a * 10 + u16::from(d - b'0')));
                }
                Some(b"NewExternalIPAddress") if response => {
                    let v = xml_value(t).map_err(|_| UpnpParseError::BadSoap)?;
                    address = Some(v.parse().ok());
                }
                _ => {}
            },
            Xml::Close(_) => current = None,
        }
    }
    if fault {
        return match code {
            Some(c) if status == 500 || status == 200 => Ok(SoapReply::Fault(UpnpErrorCode(c))),
            _ => Err(UpnpParseError::BadSoap),
        };
    }
    if status != 200 {
        return Err(UpnpParseError::Status(status));
    }
    if !response {
        return Err(UpnpParseError::BadSoap);
    }
    Ok(match action {
        Action::GetExternalIpAddress => SoapReply::ExternalAddress(
            address
                .ok_or(UpnpParseError::BadSoap)?
                .filter(|a| !a.is_unspecified()),
        ),
        _ => SoapReply::Done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSDP: &[u8] = include_bytes!("testdata/miniupnpd_ssdp1.http");
    const DESC: &[u8] = include_bytes!("testdata/miniupnpd_desc.http");
    const EXTIP: &[u8] = include_bytes!("testdata/miniupnpd_extip.http");
    const ADD: &[u8] = include_bytes!("testdata/miniupnpd_add.http");
    const DEL: &[u8] = include_bytes!("testdata/miniupnpd_del.http");
    const E718: &[u8] = include_bytes!("testdata/miniupnpd_718.http");

    fn split_body(b: &mut [u8]) -> (u16, &[u8]) {
        let (s, r) = parse_http_response(b).expect("HTTP");
        (s, &b[r])
    }

    fn add() -> Action {
        Action::AddPortMapping {
            protocol: Protocol::Tcp,
            external_port: 6881,
            internal_port: 6881,
            client: Ipv4Addr::new(10, 78, 1, 2),
            lease: 7200,
        }
    }

    #[test]
    fn msearch_as_the_device_architecture_lays_it_out() {
        let mut b = [0u8; 256];
        let n = write_msearch(&mut b, IGD_TYPES[0], 2).expect("fits");
        assert_eq!(
            &b[..n],
            b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n\
              MX: 2\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n"
        );
        assert_eq!(
            write_msearch(&mut b[..n - 1], IGD_TYPES[0], 2),
            Err(BufferTooSmall)
        );
    }

    #[test]
    fn miniupnpds_ssdp_answer() {
        let a = parse_ssdp(SSDP).expect("parses");
        assert_eq!(a.st, IGD_TYPES[0]);
        assert_eq!(a.location.addr, "10.78.1.1:42951".parse().expect("addr"));
        assert_eq!(a.location.path, "/rootDesc.xml");
        // Another device type, no location, a search (not an answer), too long.
        let other = b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nLOCATION: http://1.2.3.4/\r\n\r\n";
        assert_eq!(parse_ssdp(other), Err(UpnpParseError::NotAGateway));
        let nol =
            b"HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n";
        assert_eq!(parse_ssdp(nol), Err(UpnpParseError::NotAGateway));
        let mut m = [0u8; 256];
        let n = write_msearch(&mut m, IGD_TYPES[0], 1).expect("fits");
        assert_eq!(parse_ssdp(&m[..n]), Err(UpnpParseError::BadHttp));
        assert_eq!(
            parse_ssdp(&[b'a'; MAX_SSDP + 1]),
            Err(UpnpParseError::TooLong)
        );
        assert_eq!(parse_ssdp(&SSDP[..40]), Err(UpnpParseError::Truncated));
        let named =
            b"HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\n\
                      LOCATION: http://router.lan:5000/desc.xml\r\n\r\n";
        assert_eq!(parse_ssdp(named), Err(UpnpParseError::BadUrl));
        let mut many = std::vec::Vec::new();
        many.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"X: y\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_ssdp(&many), Err(UpnpParseError::TooManyHeaders));
    }

    extern crate std;

    #[test]
    fn miniupnpds_description() {
        let mut b = DESC.to_vec();
        let (status, body) = split_body(&mut b);
        assert_eq!(status, 200);
        let s = parse_description(body).expect("a service");
        assert_eq!(s.service_type, SERVICE_TYPES[0]);
        assert_eq!(s.control_url, "/ctl/IPConn");
        assert_eq!(s.url_base, None);
        // Every prefix fails cleanly.
        for n in 0..body.len() {
            assert!(parse_description(&body[..n]).is_err());
        }
    }

    #[test]
    fn a_ppp_service_relative_url_and_url_base() {
        let x =
            b"<?xml version=\"1.0\"?><!-- c --><root xmlns=\"urn:schemas-upnp-org:device-1-0\">\
            <URLBase>http://192.168.1.1:5000/</URLBase><device><serviceList>\
            <service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType>\
            <controlURL>upnp/control/WANPPPConn1</controlURL></service>\
            <service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>\
            <controlURL>/l3f</controlURL></service>\
            </serviceList></device></root>\n";
        let s = parse_description(x).expect("a service");
        assert_eq!(s.service_type, SERVICE_TYPES[2]);
        assert_eq!(s.url_base, Some("http://192.168.1.1:5000/"));
        let base = parse_url(s.url_base.expect("base")).expect("url");
        let (addr, a, b) = resolve_url(base, s.control_url).expect("resolves");
        assert_eq!(addr, "192.168.1.1:5000".parse().expect("addr"));
        assert_eq!((a, b), ("/", "upnp/control/WANPPPConn1"));
        let loc = parse_url("http://10.0.0.1:80/dev/desc.xml?x=1").expect("url");
        assert_eq!(resolve_url(loc, "ctl").expect("resolves").1, "/dev/");
        assert_eq!(resolve_url(loc, "/a").expect("resolves").2, "/a");
        assert_eq!(
            resolve_url(loc, "http://10.0.0.1:81/c")
                .expect("resolves")
                .0,
            "10.0.0.1:81".parse().expect("addr")
        );
        assert_eq!(resolve_url(loc, "../x"), Err(UpnpParseError::BadUrl));
        assert_eq!(resolve_url(loc, "ftp://x/"), Err(UpnpParseError::BadUrl));
    }

    #[test]
    fn strict_xml() {
        let ok = b"<a><b x='1' y=\"2>\">t</b><c/></a>";
        assert!(matches!(
            parse_description(ok),
            Err(UpnpParseError::NoService)
        ));
        for bad in [
            &b"<a><b></a></b>"[..],
            b"<a>",
            b"<a></a><b></b>",
            b"text<a></a>",
            b"<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
            b"<a><![CDATA[x]]></a>",
            b"<a><b</a>",
            b"<a></b>",
            b"</a>",
            b"<>",
            b"<a x=\"1></a>",
            b"",
        ] {
            assert!(parse_description(bad).is_err(), "{bad:?}");
        }
        let mut deep = std::vec::Vec::new();
        for _ in 0..=MAX_XML_DEPTH {
            deep.extend_from_slice(b"<a>");
        }
        for _ in 0..=MAX_XML_DEPTH {
            deep.extend_from_slice(b"</a>");
        }
        assert_eq!(parse_description(&deep), Err(UpnpParseError::BadXml));
        let long = [b'a'; MAX_NAME + 1];
        let mut x = std::vec![b'<'];
        x.extend_from_slice(&long);
        x.extend_from_slice(b"/>");
        assert_eq!(parse_description(&x), Err(UpnpParseError::BadXml));
        // A control URL with an entity in it is refused, not decoded.
        let ent = b"<r><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1\
            </serviceType><controlURL>/c?a=1&amp;b=2</controlURL></service></r>";
        assert_eq!(parse_description(ent), Err(UpnpParseError::BadXml));
    }

    #[test]
    fn soap_requests() {
        let mut b = [0u8; MAX_REQUEST];
        let host: SocketAddrV4 = "10.78.1.1:42951".parse().expect("addr");
        let n =
            write_soap(&mut b, host, ("", "/ctl/IPConn"), SERVICE_TYPES[0], &add()).expect("fits");
        let req = core::str::from_utf8(&b[..n]).expect("ascii");
        let (head, body) = req.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("POST /ctl/IPConn HTTP/1.1\r\nHost: 10.78.1.1:42951\r\n"));
        assert!(head.contains(
            "SOAPAction: \"urn:schemas-upnp-org:service:WANIPConnection:2#AddPortMapping\""
        ));
        assert!(head.contains(&std::format!("Content-Length: {}\r\n", body.len())));
        assert!(body.contains(
            "<u:AddPortMapping xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:2\">\
             <NewRemoteHost></NewRemoteHost><NewExternalPort>6881</NewExternalPort>\
             <NewProtocol>TCP</NewProtocol><NewInternalPort>6881</NewInternalPort>\
             <NewInternalClient>10.78.1.2</NewInternalClient><NewEnabled>1</NewEnabled>\
             <NewPortMappingDescription>btcore</NewPortMappingDescription>\
             <NewLeaseDuration>7200</NewLeaseDuration></u:AddPortMapping>"
        ));
        // The body is well-formed XML for our own scanner.
        let mut sc = Scanner::new(body.as_bytes());
        while sc.next_item().expect("well formed").is_some() {}
        let del = Action::DeletePortMapping {
            protocol: Protocol::Udp,
            external_port: 7000,
        };
        let n = write_soap(&mut b, host, ("/", "c"), SERVICE_TYPES[1], &del).expect("fits");
        let req = core::str::from_utf8(&b[..n]).expect("ascii");
        assert!(req.starts_with("POST /c HTTP/1.1"));
        assert!(
            req.contains("<NewExternalPort>7000</NewExternalPort><NewProtocol>UDP</NewProtocol>")
        );
        assert!(req.contains("WANIPConnection:1#DeletePortMapping"));
        assert_eq!(
            write_soap(&mut b[..300], host, ("", "/c"), SERVICE_TYPES[1], &del),
            Err(BufferTooSmall)
        );
        let n = write_get(&mut b, host, ("", "/rootDesc.xml")).expect("fits");
        assert!(b[..n].starts_with(b"GET /rootDesc.xml HTTP/1.1\r\nHost: 10.78.1.1:42951\r\n"));
    }

    #[test]
    fn miniupnpds_soap_replies() {
        let mut b = EXTIP.to_vec();
        let (s, body) = split_body(&mut b);
        assert_eq!(
            parse_soap(s, body, &Action::GetExternalIpAddress),
            Ok(SoapReply::ExternalAddress(Some(Ipv4Addr::new(44, 2, 1, 1))))
        );
        let mut b = ADD.to_vec();
        let (s, body) = split_body(&mut b);
        assert_eq!(parse_soap(s, body, &add()), Ok(SoapReply::Done));
        // The wrong action's response is not taken.
        assert_eq!(
            parse_soap(s, body, &Action::GetExternalIpAddress),
            Err(UpnpParseError::BadSoap)
        );
        let mut b = DEL.to_vec();
        let (s, body) = split_body(&mut b);
        let del = Action::DeletePortMapping {
            protocol: Protocol::Tcp,
            external_port: 6881,
        };
        assert_eq!(parse_soap(s, body, &del), Ok(SoapReply::Done));
        let mut b = E718.to_vec();
        let (s, body) = split_body(&mut b);
        assert_eq!(s, 500);
        assert_eq!(
            parse_soap(s, body, &add()),
            Ok(SoapReply::Fault(UpnpErrorCode::CONFLICT))
        );
        assert_eq!(
            std::format!("{}", UpnpErrorCode::CONFLICT),
            "UPnP error 718 ConflictInMappingEntry"
        );
        let e725 = b"<s:Envelope><s:Body><s:Fault><detail><UPnPError><errorCode> 725 </errorCode>\
                     </UPnPError></detail></s:Fault></s:Body></s:Envelope>";
        assert_eq!(
            parse_soap(500, e725, &add()),
            Ok(SoapReply::Fault(UpnpErrorCode::ONLY_PERMANENT_LEASES))
        );
        assert_eq!(
            parse_soap(404, b"<html></html>", &add()),
            Err(UpnpParseError::Status(404))
        );
        assert_eq!(
            parse_soap(500, b"<Fault><errorCode>x</errorCode></Fault>", &add()),
            Err(UpnpParseError::BadSoap)
        );
    }

    #[test]
    fn http_framing() {
        let mut c = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n".to_vec();
        let (s, r) = parse_http_response(&mut c).expect("chunked");
        assert_eq!((s, &c[r]), (200, &b"abcdefg"[..]));
        let mut short = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabcd".to_vec();
        assert_eq!(
            parse_http_response(&mut short),
            Err(UpnpParseError::Truncated)
        );
        let mut big =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffff\r\n".to_vec();
        assert_eq!(parse_http_response(&mut big), Err(UpnpParseError::BadHttp));
        let mut cl = b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec();
        assert_eq!(parse_http_response(&mut cl), Err(UpnpParseError::Truncated));
        let mut two =
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec();
        assert_eq!(parse_http_response(&mut two), Err(UpnpParseError::BadHttp));
        let mut close = b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nto the end".to_vec();
        let (_, r) = parse_http_response(&mut close).expect("close-delimited");
        assert_eq!(&close[r], b"to the end");
        let mut bad = b"HTTP/1.1 2x0 OK\r\n\r\n".to_vec();
        assert_eq!(parse_http_response(&mut bad), Err(UpnpParseError::BadHttp));
        let mut nohead = std::vec![b'a'; MAX_HTTP_HEAD + 10];
        assert_eq!(
            parse_http_response(&mut nohead),
            Err(UpnpParseError::TooLong)
        );
        assert!(http_response_complete(ADD));
        assert!(!http_response_complete(&ADD[..ADD.len() - 1]));
        assert!(!http_response_complete(b"HTTP/1.1 200 OK\r\n\r\nabc"));
        assert!(http_response_complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"
        ));
        let mut huge = std::vec![b'a'; MAX_HTTP_RESPONSE + 1];
        assert_eq!(parse_http_response(&mut huge), Err(UpnpParseError::TooLong));
        // Every prefix of every captured answer: an error or a result, never a panic.
        for f in [SSDP, DESC, EXTIP, ADD, DEL, E718] {
            for n in 0..f.len() {
                let mut b = f[..n].to_vec();
                let _ = parse_http_response(&mut b);
                let _ = parse_ssdp(&f[..n]);
            }
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("HTTP://1.2.3.4").expect("url"),
            HttpUrl {
                addr: "1.2.3.4:80".parse().expect("addr"),
                path: "/"
            }
        );
        for bad in [
            "https://1.2.3.4/",
            "http://1.2.3.4:0/",
            "http://1.2.3.4:99999/",
            "http://user@1.2.3.4/",
            "http://[::1]/",
            "http://1.2.3.4/a b",
            "http://1.2.3.4/#f",
            "http:/1.2.3.4",
            "",
        ] {
            assert_eq!(parse_url(bad), Err(UpnpParseError::BadUrl), "{bad}");
        }
        let long = std::format!("http://1.2.3.4/{}", "a".repeat(MAX_VALUE));
        assert_eq!(parse_url(&long), Err(UpnpParseError::BadUrl));
    }
}
