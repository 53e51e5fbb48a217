//! BEP 14 Local Service Discovery: the codec of the `BT-SEARCH` datagrams that clients
//! multicast on their LAN (`239.192.152.143:6771`, or `[ff15::efc0:988f]:6771`) to
//! tell each other which torrents they have and on which TCP port:
//!
//! ```text
//! BT-SEARCH * HTTP/1.1\r\n
//! Host: 239.192.152.143:6771\r\n
//! Port: <port>\r\n
//! Infohash: <40 hex digits>\r\n
//! [Infohash: <more>\r\n ...]
//! cookie: <opaque>\r\n
//! \r\n
//! \r\n
//! ```
//!
//! Needs no allocator: [`parse`] borrows the datagram and [`write_announce`] writes
//! into a caller buffer.
//!
//! Parsing is strict about bounds and lenient about form: a datagram is at most
//! [`MAX_DATAGRAM`] bytes and names at most `MAX_INFOHASHES` torrents; header names
//! are case-insensitive; lines may end in `\r\n` or `\n`; unknown headers (including
//! `Host`) are ignored; the headers end at the first empty line or at the end of the
//! datagram. A malformed `Port` or `Infohash` refuses the whole datagram.
//!
//! Policy (helpers here, applied by the host): each torrent is announced at most once
//! every [`ANNOUNCE_INTERVAL`] (see [`is_due`]); a datagram carrying our own cookie is
//! ours, looped back by the multicast group, and is ignored ([`LsdAnnounce::is_own`]);
//! never for private torrents (BEP 27).

use crate::ids::InfoHash;
use crate::time::{Duration, Instant};
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

/// The UDP port of the LSD multicast groups.
pub(crate) const LSD_PORT: u16 = 6771;
/// The IPv4 multicast group.
pub(crate) const GROUP_V4: Ipv4Addr = Ipv4Addr::new(239, 192, 152, 143);
/// The IPv6 multicast group (organization-local scope).
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0xefc0, 0x988f);
/// The IPv4 group and port.
pub const GROUP_ADDR_V4: SocketAddrV4 = SocketAddrV4::new(GROUP_V4, LSD_PORT);
/// The IPv6 group and port.
pub const GROUP_ADDR_V6: SocketAddrV6 = SocketAddrV6::new(GROUP_V6, LSD_PORT, 0, 0);

/// The largest datagram parsed or written (fits an Ethernet MTU with room to spare).
pub const MAX_DATAGRAM: usize = 1400;
/// Most info-hashes one datagram may name; a datagram naming more is refused. (A
/// [`MAX_DATAGRAM`] datagram has room for at most 27, so this is a second guard.)
pub(crate) const MAX_INFOHASHES: usize = 32;
/// The longest cookie written or accepted.
pub(crate) const MAX_COOKIE: usize = 64;
/// Info-hashes a host puts in one datagram: with the longest cookie and port, an
/// announce of this many fits [`MAX_DATAGRAM`] (a unit test checks it).
pub const HASHES_PER_DATAGRAM: usize = 24;
/// Each torrent is announced at most this often (BEP 14 allows one a minute; five
/// minutes keeps a LAN of many torrents quiet).
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(5 * 60);

const REQUEST_LINE: &[u8] = b"BT-SEARCH * HTTP/1.1";
const HOST_V4: &[u8] = b"239.192.152.143:6771";
const HOST_V6: &[u8] = b"[ff15::efc0:988f]:6771";

/// Why an LSD datagram was refused or could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LsdError {
    /// Longer than [`MAX_DATAGRAM`] (parsing), or would be (writing).
    TooLong,
    /// The output buffer is too small.
    BufferTooSmall,
    /// Not a `BT-SEARCH * HTTP/1.1` request.
    NotSearch,
    /// A header line without a colon, or a control byte in a line.
    Malformed,
    /// No `Port` header, or one that is not a decimal in `1..=65535`, or two of them.
    BadPort,
    /// No `Infohash` header.
    NoInfohash,
    /// An `Infohash` that is not 40 hex digits.
    BadInfohash,
    /// More than `MAX_INFOHASHES` info-hashes.
    TooManyInfohashes,
    /// A cookie longer than `MAX_COOKIE`, or with bytes other than visible ASCII, or
    /// two `cookie` headers.
    BadCookie,
    /// Zero info-hashes to announce, or port 0 (writing).
    Nothing,
}

impl core::fmt::Display for LsdError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::TooLong => "LSD datagram too long",
            Self::BufferTooSmall => "buffer too small for the LSD announce",
            Self::NotSearch => "not a BT-SEARCH request",
            Self::Malformed => "malformed LSD header line",
            Self::BadPort => "missing or bad LSD Port header",
            Self::NoInfohash => "LSD announce without an Infohash",
            Self::BadInfohash => "bad LSD Infohash header",
            Self::TooManyInfohashes => "too many info-hashes in one LSD announce",
            Self::BadCookie => "bad LSD cookie",
            Self::Nothing => "nothing to announce",
        })
    }
}

/// A parsed announce, borrowing the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LsdAnnounce<'a> {
    port: u16,
    /// The header lines (after the request line, up to the empty line), for
    /// re-walking the `Infohash` headers, all already validated.
    headers: &'a [u8],
    count: usize,
    cookie: Option<&'a [u8]>,
}

/// The lines of `b`, each without its `\n` and one trailing `\r`.
fn lines(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    b.split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
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

/// A header line as `(name, value)`, both trimmed; `None` without a colon.
fn header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&c| c == b':')?;
    Some((trim(&line[..colon]), trim(&line[colon + 1..])))
}

/// The header lines before the first empty line.
fn header_lines(headers: &[u8]) -> impl Iterator<Item = &[u8]> {
    lines(headers).take_while(|l| !l.is_empty())
}

fn parse_port(v: &[u8]) -> Option<u16> {
    if v.is_empty() || v.len() > 5 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = v
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    u16::try_from(n).ok().filter(|&p| p != 0)
}

fn valid_cookie(c: &[u8]) -> bool {
    c.len() <= MAX_COOKIE && c.iter().all(|b| b.is_ascii_graphic())
}

/// Parses one datagram.
pub fn parse(datagram: &[u8]) -> Result<LsdAnnounce<'_>, LsdError> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(LsdError::TooLong);
    }
    let nl = datagram.iter().position(|&c| c == b'\n');
    let (first, headers) = match nl {
        Some(i) => (&datagram[..i], &datagram[i + 1..]),
        None => (datagram, &[][..]),
    };
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    if first != REQUEST_LINE {
        return Err(LsdError::NotSearch);
    }
    let mut port = None;
    let mut cookie = None;
    let mut count = 0usize;
    for line in header_lines(headers) {
        if line.iter().any(|&c| c.is_ascii_control() && c != b'\t') {
            return Err(LsdError::Malformed);
        }
        let (name, value) = header(line).ok_or(LsdError::Malformed)?;
        if name.eq_ignore_ascii_case(b"port") {
            if port.is_some() {
                return Err(LsdError::BadPort);
            }
            port = Some(parse_port(value).ok_or(LsdError::BadPort)?);
        } else if name.eq_ignore_ascii_case(b"infohash") {
            InfoHash::from_hex(value).ok_or(LsdError::BadInfohash)?;
            count += 1;
            if count > MAX_INFOHASHES {
                return Err(LsdError::TooManyInfohashes);
            }
        } else if name.eq_ignore_ascii_case(b"cookie") {
            if cookie.is_some() || !valid_cookie(value) {
                return Err(LsdError::BadCookie);
            }
            cookie = Some(value);
        }
    }
    let port = port.ok_or(LsdError::BadPort)?;
    if count == 0 {
        return Err(LsdError::NoInfohash);
    }
    Ok(LsdAnnounce {
        port,
        headers,
        count,
        cookie,
    })
}

impl<'a> LsdAnnounce<'a> {
    /// The TCP port the sender accepts peers on (never 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The announced torrents, in order (1 to `MAX_INFOHASHES` of them).
    pub fn infohashes(&self) -> impl Iterator<Item = InfoHash> + 'a {
        header_lines(self.headers)
            .filter_map(header)
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"infohash"))
            .filter_map(|(_, v)| InfoHash::from_hex(v))
    }

    /// How many info-hashes [`LsdAnnounce::infohashes`] yields.
    pub fn infohash_count(&self) -> usize {
        self.count
    }

    /// The sender's cookie, if it sent one.
    pub fn cookie(&self) -> Option<&'a [u8]> {
        self.cookie
    }

    /// Whether this is our own announce, looped back (its cookie is `ours`). An empty
    /// `ours` matches nothing.
    pub fn is_own(&self, ours: &[u8]) -> bool {
        !ours.is_empty() && self.cookie == Some(ours)
    }
}

struct Cursor<'b> {
    out: &'b mut [u8],
    at: usize,
}

impl Cursor<'_> {
    fn put(&mut self, b: &[u8]) -> Result<(), LsdError> {
        let end = self.at + b.len();
        self.out
            .get_mut(self.at..end)
            .ok_or(LsdError::BufferTooSmall)?
            .copy_from_slice(b);
        self.at = end;
        Ok(())
    }

    fn put_u16(&mut self, n: u16) -> Result<(), LsdError> {
        let mut d = [0u8; 5];
        let mut i = d.len();
        let mut n = n;
        loop {
            i -= 1;
            d[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.put(&d[i..])
    }
}

/// Writes an announce of `infohashes` for TCP `port` into `out`; returns its length.
/// `cookie` (visible ASCII, at most `MAX_COOKIE` bytes; empty: no cookie header)
/// lets the sender recognize its own datagram when the group loops it back. `v6`
/// picks the `Host` header of the IPv6 group.
///
/// At most [`HASHES_PER_DATAGRAM`] info-hashes always fit; more may, up to
/// `MAX_INFOHASHES` and [`MAX_DATAGRAM`] bytes.
pub fn write_announce(
    out: &mut [u8],
    port: u16,
    infohashes: &[InfoHash],
    cookie: &[u8],
    v6: bool,
) -> Result<usize, LsdError> {
    if infohashes.is_empty() || port == 0 {
        return Err(LsdError::Nothing);
    }
    if infohashes.len() > MAX_INFOHASHES {
        return Err(LsdError::TooManyInfohashes);
    }
    if !valid_cookie(cookie) {
        return Err(LsdError::BadCookie);
    }
    let host = if v6 { HOST_V6 } else { HOST_V4 };
    let digits = match port {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    };
    let cookie_len = if cookie.is_empty() {
        0
    } else {
        "cookie: \r\n".len() + cookie.len()
    };
    let len = REQUEST_LINE.len()
        + "\r\nHost: ".len()
        + host.len()
        + "\r\nPort: ".len()
        + digits
        + "\r\n".len()
        + infohashes.len() * "Infohash: \r\n".len()
        + infohashes.len() * 40
        + cookie_len
        + "\r\n\r\n".len();
    if len > MAX_DATAGRAM {
        return Err(LsdError::TooLong);
    }
    let mut c = Cursor {
        out: out.get_mut(..len).ok_or(LsdError::BufferTooSmall)?,
        at: 0,
    };
    c.put(REQUEST_LINE)?;
    c.put(b"\r\nHost: ")?;
    c.put(host)?;
    c.put(b"\r\nPort: ")?;
    c.put_u16(port)?;
    c.put(b"\r\n")?;
    for ih in infohashes {
        c.put(b"Infohash: ")?;
        c.put(&ih.to_hex())?;
        c.put(b"\r\n")?;
    }
    if !cookie.is_empty() {
        c.put(b"cookie: ")?;
        c.put(cookie)?;
        c.put(b"\r\n")?;
    }
    c.put(b"\r\n\r\n")?;
    debug_assert_eq!(c.at, len);
    Ok(c.at)
}

/// Whether a torrent last announced at `last` (None: never) is due again at `now`.
pub fn is_due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|t| now.since(t) >= ANNOUNCE_INTERVAL)
}

/// A cookie from random bits: 16 lowercase hex digits.
pub fn make_cookie(random: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        let nibble = (random >> (60 - 4 * i)) & 0xf;
        *b = b"0123456789abcdef"[nibble as usize];
    }
    out
}

/// For fuzzing: parses and walks a datagram; never panics.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_parse(data: &[u8]) -> usize {
    match parse(data) {
        Ok(a) => a.infohashes().count() + usize::from(a.port()),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn ih(n: u8) -> InfoHash {
        InfoHash([n; 20])
    }

    #[test]
    fn writes_the_bep14_form() {
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = write_announce(&mut buf, 6881, &[ih(0xab)], b"c00k1e", false).expect("fits");
        let want = b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\n\
Infohash: abababababababababababababababababababab\r\ncookie: c00k1e\r\n\r\n\r\n";
        assert_eq!(&buf[..n], &want[..]);
        let n = write_announce(&mut buf, 1, &[ih(1)], b"", true).expect("fits");
        let s = &buf[..n];
        assert!(
            s.starts_with(b"BT-SEARCH * HTTP/1.1\r\nHost: [ff15::efc0:988f]:6771\r\nPort: 1\r\n")
        );
        assert!(!s.windows(6).any(|w| w == b"cookie"));
    }

    #[test]
    fn round_trip() {
        let hashes: Vec<InfoHash> = (0..5).map(ih).collect();
        let mut buf = [0u8; MAX_DATAGRAM];
        for v6 in [false, true] {
            let n = write_announce(&mut buf, 65535, &hashes, b"abc", v6).expect("fits");
            let a = parse(&buf[..n]).expect("parses");
            assert_eq!(a.port(), 65535);
            assert_eq!(a.infohashes().collect::<Vec<_>>(), hashes);
            assert_eq!(a.infohash_count(), 5);
            assert_eq!(a.cookie(), Some(&b"abc"[..]));
            assert!(a.is_own(b"abc"));
            assert!(!a.is_own(b"abd"));
            assert!(!a.is_own(b""));
        }
    }

    #[test]
    fn the_batch_size_always_fits() {
        let hashes: Vec<InfoHash> = (0..HASHES_PER_DATAGRAM as u8).map(ih).collect();
        let cookie = [b'x'; MAX_COOKIE];
        let mut buf = [0u8; 2048];
        let n = write_announce(&mut buf, 65535, &hashes, &cookie, true).expect("fits");
        assert!(n <= MAX_DATAGRAM);
        let a = parse(&buf[..n]).expect("parses");
        assert_eq!(a.infohash_count(), HASHES_PER_DATAGRAM);
        // 32 with the longest cookie do not fit in 1400 bytes.
        let many: Vec<InfoHash> = (0..MAX_INFOHASHES as u8).map(ih).collect();
        assert_eq!(
            write_announce(&mut buf, 65535, &many, &cookie, true),
            Err(LsdError::TooLong)
        );
        assert_eq!(
            write_announce(&mut buf[..100], 65535, &hashes, &cookie, true),
            Err(LsdError::BufferTooSmall)
        );
        let more: Vec<InfoHash> = (0..33).map(ih).collect();
        assert_eq!(
            write_announce(&mut buf, 1, &more, b"", false),
            Err(LsdError::TooManyInfohashes)
        );
        assert_eq!(
            write_announce(&mut buf, 1, &[], b"", false),
            Err(LsdError::Nothing)
        );
        assert_eq!(
            write_announce(&mut buf, 0, &hashes, b"", false),
            Err(LsdError::Nothing)
        );
        assert_eq!(
            write_announce(&mut buf, 1, &hashes, b"a b", false),
            Err(LsdError::BadCookie)
        );
        assert_eq!(
            write_announce(&mut buf, 1, &hashes, b"a\r\nPort: 2", false),
            Err(LsdError::BadCookie)
        );
    }

    #[test]
    fn lenient_on_form() {
        // `\n` line endings, mixed case names, extra spaces, unknown headers, no Host,
        // no trailing empty line, no cookie.
        let d = b"BT-SEARCH * HTTP/1.1\nport:  51413 \nX-Other: 1\r\n\
INFOHASH:ABABABABABABABABABABABABABABABABABABABAB\n";
        let a = parse(d).expect("parses");
        assert_eq!(a.port(), 51413);
        assert_eq!(a.infohashes().collect::<Vec<_>>(), [ih(0xab)]);
        assert_eq!(a.cookie(), None);
        // Anything after the empty line is ignored.
        let d = b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: 0101010101010101010101010101010101010101\r\n\r\nInfohash: zz\r\n\x00\xff";
        let a = parse(d).expect("parses");
        assert_eq!(a.infohashes().collect::<Vec<_>>(), [ih(1)]);
    }

    #[test]
    fn strict_on_content() {
        let h = "Infohash: 0101010101010101010101010101010101010101\r\n";
        fn p(s: &str) -> Result<LsdAnnounce<'_>, LsdError> {
            parse(s.as_bytes())
        }
        assert_eq!(p("GET / HTTP/1.1\r\n\r\n"), Err(LsdError::NotSearch));
        assert_eq!(p(""), Err(LsdError::NotSearch));
        assert_eq!(p("BT-SEARCH * HTTP/1.1"), Err(LsdError::BadPort));
        let base = "BT-SEARCH * HTTP/1.1\r\n";
        assert_eq!(p(&std::format!("{base}{h}")), Err(LsdError::BadPort));
        for port in ["0", "65536", "-1", "12a", "", "000001"] {
            assert_eq!(
                p(&std::format!("{base}Port: {port}\r\n{h}")),
                Err(LsdError::BadPort),
                "{port}"
            );
        }
        assert_eq!(
            p(&std::format!("{base}Port: 1\r\nPort: 2\r\n{h}")),
            Err(LsdError::BadPort)
        );
        assert_eq!(
            p(&std::format!("{base}Port: 1\r\n")),
            Err(LsdError::NoInfohash)
        );
        assert_eq!(
            p(&std::format!("{base}Port: 1\r\nInfohash: 0101\r\n")),
            Err(LsdError::BadInfohash)
        );
        assert_eq!(
            p(&std::format!("{base}Port: 1\r\nno colon here\r\n{h}")),
            Err(LsdError::Malformed)
        );
        assert_eq!(
            p(&std::format!("{base}Port: 1\r\nX: a\x00b\r\n{h}")),
            Err(LsdError::Malformed)
        );
        assert_eq!(
            p(&std::format!(
                "{base}Port: 1\r\n{h}cookie: a\r\ncookie: b\r\n"
            )),
            Err(LsdError::BadCookie)
        );
        let long = "c".repeat(MAX_COOKIE + 1);
        assert_eq!(
            p(&std::format!("{base}Port: 1\r\n{h}cookie: {long}\r\n")),
            Err(LsdError::BadCookie)
        );
        // The shortest lines: 27 fit in MAX_DATAGRAM, so MAX_INFOHASHES is a second
        // guard that the size limit already implies.
        let short = "infohash:0101010101010101010101010101010101010101\n".repeat(27);
        let d = std::format!("BT-SEARCH * HTTP/1.1\nport:1\n{short}");
        assert!(d.len() <= MAX_DATAGRAM);
        assert_eq!(p(&d).expect("27 parse").infohashes().count(), 27);
        let mut big = std::format!("{base}Port: 1\r\n{h}").into_bytes();
        big.resize(MAX_DATAGRAM + 1, b'\n');
        assert_eq!(parse(&big), Err(LsdError::TooLong));
        big.truncate(MAX_DATAGRAM);
        assert!(parse(&big).is_ok());
    }

    #[test]
    fn policy() {
        let t0 = Instant::from_millis(1_000);
        assert!(is_due(None, t0));
        assert!(!is_due(Some(t0), t0));
        assert!(!is_due(
            Some(t0),
            Instant::from_millis(t0.as_millis() + ANNOUNCE_INTERVAL.as_millis() - 1)
        ));
        assert!(is_due(Some(t0), t0 + ANNOUNCE_INTERVAL));
        // A clock that went back is not due.
        assert!(!is_due(Some(t0), Instant::from_millis(0)));
        assert_eq!(&make_cookie(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        assert!(valid_cookie(&make_cookie(u64::MAX)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let _ = fuzz_parse(&data);
        }

        #[test]
        fn mutated_announces_never_panic(
            n in 1usize..8,
            port in 1u16..,
            edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..8),
        ) {
            let hashes: Vec<InfoHash> = (0..n as u8).map(ih).collect();
            let mut buf = [0u8; MAX_DATAGRAM];
            let len = write_announce(&mut buf, port, &hashes, b"me", false).expect("fits");
            let mut d = buf[..len].to_vec();
            for (at, b) in edits {
                let i = usize::from(at) % d.len();
                d[i] = b;
            }
            if let Ok(a) = parse(&d) {
                prop_assert!(a.port() != 0);
                prop_assert_eq!(a.infohashes().count(), a.infohash_count());
            }
        }

        #[test]
        fn round_trips(
            raw in proptest::collection::vec(any::<[u8; 20]>(), 1..=HASHES_PER_DATAGRAM),
            port in 1u16..,
            cookie in "[!-~]{0,64}",
            v6 in any::<bool>(),
        ) {
            let hashes: Vec<InfoHash> = raw.into_iter().map(InfoHash).collect();
            let mut buf = [0u8; MAX_DATAGRAM];
            let len = write_announce(&mut buf, port, &hashes, cookie.as_bytes(), v6)
                .expect("the batch size fits");
            let a = parse(&buf[..len]).expect("parses");
            prop_assert_eq!(a.port(), port);
            prop_assert_eq!(a.infohashes().collect::<Vec<_>>(), hashes);
            let want = (!cookie.is_empty()).then_some(cookie.as_bytes());
            prop_assert_eq!(a.cookie(), want);
        }
    }
}
