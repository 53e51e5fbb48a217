//! The HTTP tracker protocol: announce and scrape URLs, bencoded responses.
//!
//! # Requests
//!
//! [`write_announce_url`] appends the BEP 3 query to an announce URL, in the order
//! `info_hash, peer_id, port, uploaded, downloaded, left, [event], [numwant], [key],
//! [compact=1], [trackerid]`. `info_hash`, `peer_id` and `trackerid` are percent-encoded
//! byte by byte ([`super::percent_encode`]: unreserved `A-Za-z0-9-._~` kept, everything
//! else `%XX` in uppercase, as Transmission does). `key` is written as 8 uppercase hex
//! digits, as libtorrent does. The query is joined with `&` when the URL already has a
//! `?` (private-tracker passkeys), with `?` otherwise, and with nothing when the URL
//! already ends with the separator.
//!
//! [`scrape_url`] applies the BEP 48 convention: the last path component must start
//! with `announce`, which is replaced by `scrape` (`/announce.php?k=v` becomes
//! `/scrape.php?k=v`); otherwise the tracker does not support scraping. Slashes in the
//! query do not count as path separators.
//!
//! # Responses
//!
//! [`parse_announce_response`] and [`parse_scrape_response`] decode the body into the
//! caller's token buffer ([`crate::bencode::decode`]; about 32 tokens for a compact
//! response, plus 7 per peer of a dictionary-form `peers` list; a buffer that is too
//! small is a [`TrackerError::Bencode`] of kind
//! [`crate::bencode::ErrorKind::TooManyTokens`]) and return a view that borrows the body.
//! A `failure reason` is not an error but [`AnnounceResponse::Failure`] carrying the
//! text, so the host can show it; [`AnnounceResponse::ok`] turns it into
//! [`TrackerError::TrackerFailure`] for callers that do not care.
//!
//! Leniency, as libtorrent: a known field of the wrong type is treated as absent, and a
//! missing `peers` means no peers. Strictness: `peers` / `peers6` of the wrong type, or a
//! compact string whose length is not a multiple of 6 (`peers`, BEP 23) or 18 (`peers6`,
//! BEP 7), is [`TrackerError::BadPeers`]. Entries of the dictionary form of `peers` whose
//! `ip` is not a literal address (host names: resolving is the host's business) or whose
//! `port` is not in `1..=65535` are skipped.
//!
//! Intervals are clamped: `interval` (default `DEFAULT_INTERVAL_SECS` when missing)
//! to `[MIN_INTERVAL_SECS, MAX_INTERVAL_SECS]` (30 s to 24 h), so a broken or hostile
//! tracker can neither make us hammer it nor silence us for weeks; `min interval` to
//! `[MIN_INTERVAL_SECS, interval]`.

use core::fmt;
use core::iter::FusedIterator;
use core::net::{IpAddr, SocketAddr};
use core::str::FromStr;

use super::TrackerError;
use super::{percent_encode, to_u32, AnnounceRequest, CompactPeers, Failure, ScrapeStats};
use crate::bencode::{decode, Dict, DictIter, Kind, Limits, ListIter, Token, Value};
use crate::ids::InfoHash;

/// The announce interval assumed when a response has none (libtorrent's default).
pub(crate) const DEFAULT_INTERVAL_SECS: u32 = 1800;
/// The shortest `interval` and `min interval` accepted; shorter values are raised.
pub(crate) const MIN_INTERVAL_SECS: u32 = 30;
/// The longest `interval` accepted; longer values are lowered.
pub(crate) const MAX_INTERVAL_SECS: u32 = 24 * 3600;

/// Appends the announce query for `req` to the announce URL `base`, writing the whole
/// URL into `out`.
///
/// Fails with [`TrackerError::InvalidUrl`] when `base` is not UTF-8 and with
/// [`TrackerError::BufferTooSmall`] when `out` refuses a write (a full
/// `heapless::String`).
pub fn write_announce_url(
    base: &[u8],
    req: &AnnounceRequest<'_>,
    out: &mut impl fmt::Write,
) -> Result<(), TrackerError> {
    let base = core::str::from_utf8(base).map_err(|_| TrackerError::InvalidUrl)?;
    write_query(base, req, out).map_err(|_| TrackerError::BufferTooSmall)
}

/// The separator that starts a query appended to `url`.
fn query_sep(url: &str) -> &'static str {
    if !url.contains('?') {
        "?"
    } else if url.ends_with('?') || url.ends_with('&') {
        ""
    } else {
        "&"
    }
}

fn write_query(base: &str, req: &AnnounceRequest<'_>, out: &mut impl fmt::Write) -> fmt::Result {
    out.write_str(base)?;
    out.write_str(query_sep(base))?;
    out.write_str("info_hash=")?;
    percent_encode(req.info_hash.as_bytes(), out)?;
    out.write_str("&peer_id=")?;
    percent_encode(req.peer_id.as_bytes(), out)?;
    write!(
        out,
        "&port={}&uploaded={}&downloaded={}&left={}",
        req.port, req.uploaded, req.downloaded, req.left
    )?;
    if let Some(ev) = req.event {
        write!(out, "&event={}", ev.as_str())?;
    }
    if let Some(n) = req.numwant {
        write!(out, "&numwant={n}")?;
    }
    if let Some(key) = req.key {
        write!(out, "&key={key:08X}")?;
    }
    if req.compact {
        out.write_str("&compact=1")?;
    }
    if let Some(id) = req.tracker_id {
        out.write_str("&trackerid=")?;
        percent_encode(id, out)?;
    }
    Ok(())
}

/// A scrape URL derived from an announce URL (BEP 48): everything before and after the
/// `announce` that becomes `scrape`. Its [`Display`](fmt::Display) is the bare scrape
/// URL; [`ScrapeUrl::write`] adds info-hashes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ScrapeUrl<'a> {
    head: &'a str,
    tail: &'a str,
}

/// The scrape URL of an announce URL, or `None` when the last path component does not
/// start with `announce` (or the URL is not UTF-8): that tracker does not scrape.
pub fn scrape_url(announce: &[u8]) -> Option<ScrapeUrl<'_>> {
    const WORD: &str = "announce";
    let url = core::str::from_utf8(announce).ok()?;
    let path_end = url.find(['?', '#']).unwrap_or(url.len());
    let path = url.get(..path_end)?;
    // Skip `scheme://` so that a host name is never taken for a path component.
    let from = path.find("://").map_or(0, |i| i + 3);
    let slash = from + path.get(from..)?.rfind('/')?;
    let component = path.get(slash + 1..)?;
    if !component.starts_with(WORD) {
        return None;
    }
    Some(ScrapeUrl {
        head: url.get(..slash + 1)?,
        tail: url.get(slash + 1 + WORD.len()..)?,
    })
}

impl ScrapeUrl<'_> {
    /// Writes the scrape URL with one `info_hash=` parameter per hash (none scrapes
    /// everything, which most trackers refuse).
    pub fn write(
        &self,
        hashes: &[InfoHash],
        out: &mut impl fmt::Write,
    ) -> Result<(), TrackerError> {
        self.write_fmt(hashes, out)
            .map_err(|_| TrackerError::BufferTooSmall)
    }

    fn write_fmt(&self, hashes: &[InfoHash], out: &mut impl fmt::Write) -> fmt::Result {
        write!(out, "{self}")?;
        let mut sep = query_sep(self.tail);
        for h in hashes {
            out.write_str(sep)?;
            out.write_str("info_hash=")?;
            percent_encode(h.as_bytes(), out)?;
            sep = "&";
        }
        Ok(())
    }
}

impl fmt::Display for ScrapeUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.head)?;
        f.write_str("scrape")?;
        f.write_str(self.tail)
    }
}

fn limits() -> Limits {
    Limits {
        max_depth: 16,
        ..Limits::default()
    }
}

/// What an HTTP tracker answered to an announce.
#[derive(Clone, Debug)]
pub enum AnnounceResponse<'a> {
    /// The tracker refused (`failure reason`); nothing else in the body is meaningful.
    Failure(Failure<'a>),
    /// Peers and timing.
    Success(AnnounceOk<'a>),
}

impl<'a> AnnounceResponse<'a> {
    /// The success, or [`TrackerError::TrackerFailure`] (dropping the text).
    pub fn ok(self) -> Result<AnnounceOk<'a>, TrackerError> {
        match self {
            Self::Success(ok) => Ok(ok),
            Self::Failure(_) => Err(TrackerError::TrackerFailure),
        }
    }

    /// The failure, if the tracker refused.
    pub fn failure(&self) -> Option<Failure<'a>> {
        match self {
            Self::Failure(f) => Some(*f),
            Self::Success(_) => None,
        }
    }
}

/// A successful announce response, borrowing the body.
#[derive(Clone, Debug)]
pub struct AnnounceOk<'a> {
    /// Seconds until the next regular announce, clamped (see the module docs).
    pub interval_secs: u32,
    /// The tracker's `min interval`, clamped to `[MIN_INTERVAL_SECS, interval_secs]`.
    pub min_interval_secs: Option<u32>,
    /// The `tracker id` to send back in later announces.
    pub tracker_id: Option<&'a [u8]>,
    /// A `warning message` to show (the announce still succeeded).
    pub warning: Option<&'a [u8]>,
    /// Seeders, per the tracker.
    pub complete: Option<u32>,
    /// Leechers, per the tracker.
    pub incomplete: Option<u32>,
    /// Completed downloads, when the tracker includes them.
    pub downloaded: Option<u32>,
    v4: PeerSource<'a>,
    v6: CompactPeers<'a>,
}

impl<'a> AnnounceOk<'a> {
    /// Every peer: those of `peers` (compact or dictionary form), then those of `peers6`.
    pub fn peers(&self) -> Peers<'a> {
        Peers {
            first: self.v4.clone(),
            v6: self.v6.clone(),
        }
    }

    /// The peers of the `peers` key only.
    pub fn peers_field(&self) -> Peers<'a> {
        Peers {
            first: self.v4.clone(),
            v6: CompactPeers::empty(),
        }
    }

    /// The peers of the `peers6` key only (BEP 7).
    pub fn peers6(&self) -> CompactPeers<'a> {
        self.v6.clone()
    }

    /// Whether `peers` came in the original dictionary-list form rather than compact.
    pub fn is_dict_form(&self) -> bool {
        matches!(self.v4, PeerSource::Dicts(_))
    }
}

#[derive(Clone, Debug)]
enum PeerSource<'a> {
    Compact(CompactPeers<'a>),
    Dicts(ListIter<'a>),
}

/// Peers of an HTTP announce response as socket addresses, decoded lazily.
#[derive(Clone, Debug)]
pub struct Peers<'a> {
    first: PeerSource<'a>,
    v6: CompactPeers<'a>,
}

impl Iterator for Peers<'_> {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        let first = match &mut self.first {
            PeerSource::Compact(c) => c.next(),
            PeerSource::Dicts(list) => list.by_ref().find_map(dict_peer),
        };
        first.or_else(|| self.v6.next())
    }
}

impl FusedIterator for Peers<'_> {}

/// One entry of the dictionary form: `{ip: "1.2.3.4" or "::1", port: 6881, ...}`.
fn dict_peer(v: Value<'_>) -> Option<SocketAddr> {
    let d = v.as_dict()?;
    let ip = core::str::from_utf8(d.get_bytes(b"ip")?).ok()?;
    let ip = ip
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(ip);
    let ip = IpAddr::from_str(ip).ok()?;
    let port = u16::try_from(d.get_int(b"port")?)
        .ok()
        .filter(|&p| p != 0)?;
    Some(SocketAddr::new(ip, port))
}

fn root_dict<'a>(body: &'a [u8], tokens: &'a mut [Token]) -> Result<Dict<'a>, TrackerError> {
    let doc = decode(body, tokens, &limits())?;
    doc.root().as_dict().ok_or(TrackerError::NotADict)
}

fn failure<'a>(d: &Dict<'a>) -> Option<Failure<'a>> {
    d.get_bytes(b"failure reason")
        .map(|reason| Failure { reason })
}

fn get_u32(d: &Dict<'_>, key: &[u8]) -> Option<u32> {
    d.get_int(key).and_then(to_u32)
}

/// Parses an announce response body (see the module docs for what is checked).
pub fn parse_announce_response<'a>(
    body: &'a [u8],
    tokens: &'a mut [Token],
) -> Result<AnnounceResponse<'a>, TrackerError> {
    let d = root_dict(body, tokens)?;
    if let Some(f) = failure(&d) {
        return Ok(AnnounceResponse::Failure(f));
    }
    let interval_secs = match d.get_int(b"interval") {
        Some(v) => to_u32(v)
            .unwrap_or(0)
            .clamp(MIN_INTERVAL_SECS, MAX_INTERVAL_SECS),
        None => DEFAULT_INTERVAL_SECS,
    };
    let min_interval_secs = d.get_int(b"min interval").map(|v| {
        to_u32(v)
            .unwrap_or(0)
            .clamp(MIN_INTERVAL_SECS, interval_secs)
    });
    let v4 = match d.get(b"peers") {
        None => PeerSource::Compact(CompactPeers::empty()),
        Some(v) => match v.kind() {
            Kind::Bytes => PeerSource::Compact(CompactPeers::v4(v.as_bytes().unwrap_or_default())?),
            Kind::List => match v.as_list() {
                Some(l) => PeerSource::Dicts(l.into_iter()),
                None => return Err(TrackerError::BadPeers),
            },
            Kind::Int | Kind::Dict => return Err(TrackerError::BadPeers),
        },
    };
    let v6 = match d.get(b"peers6") {
        None => CompactPeers::empty(),
        Some(v) => CompactPeers::v6(v.as_bytes().ok_or(TrackerError::BadPeers)?)?,
    };
    Ok(AnnounceResponse::Success(AnnounceOk {
        interval_secs,
        min_interval_secs,
        tracker_id: d.get_bytes(b"tracker id"),
        warning: d.get_bytes(b"warning message"),
        complete: get_u32(&d, b"complete"),
        incomplete: get_u32(&d, b"incomplete"),
        downloaded: get_u32(&d, b"downloaded"),
        v4,
        v6,
    }))
}

/// What an HTTP tracker answered to a scrape.
#[derive(Clone, Debug)]
pub enum ScrapeResponse<'a> {
    /// The tracker refused (`failure reason`).
    Failure(Failure<'a>),
    /// Statistics per torrent.
    Files(ScrapeFiles<'a>),
}

impl<'a> ScrapeResponse<'a> {
    /// The statistics, or [`TrackerError::TrackerFailure`] (dropping the text).
    pub fn ok(self) -> Result<ScrapeFiles<'a>, TrackerError> {
        match self {
            Self::Files(f) => Ok(f),
            Self::Failure(_) => Err(TrackerError::TrackerFailure),
        }
    }
}

/// The `files` dictionary of a scrape response. Entries whose key is not a 20-byte
/// info-hash or whose value is not a dictionary are skipped; missing counts are 0.
#[derive(Clone, Copy, Debug)]
pub struct ScrapeFiles<'a> {
    files: Dict<'a>,
}

impl<'a> ScrapeFiles<'a> {
    /// The torrents in response order.
    pub fn iter(&self) -> ScrapeIter<'a> {
        ScrapeIter(self.files.iter())
    }

    /// The statistics of one torrent.
    pub fn get(&self, info_hash: &InfoHash) -> Option<ScrapeStats> {
        self.iter().find(|(h, _)| h == info_hash).map(|(_, s)| s)
    }
}

impl<'a> IntoIterator for ScrapeFiles<'a> {
    type Item = (InfoHash, ScrapeStats);
    type IntoIter = ScrapeIter<'a>;
    fn into_iter(self) -> ScrapeIter<'a> {
        self.iter()
    }
}

/// Iterator over the torrents of a scrape response.
#[derive(Clone, Debug)]
pub struct ScrapeIter<'a>(DictIter<'a>);

impl Iterator for ScrapeIter<'_> {
    type Item = (InfoHash, ScrapeStats);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.by_ref().find_map(|(k, v)| {
            let hash = InfoHash(*<&[u8; 20]>::try_from(k).ok()?);
            let d = v.as_dict()?;
            let stats = ScrapeStats {
                complete: get_u32(&d, b"complete").unwrap_or(0),
                downloaded: get_u32(&d, b"downloaded").unwrap_or(0),
                incomplete: get_u32(&d, b"incomplete").unwrap_or(0),
            };
            Some((hash, stats))
        })
    }
}

impl FusedIterator for ScrapeIter<'_> {}

/// Parses a scrape response body: a `failure reason`, or a `files` dictionary (a
/// missing or malformed `files` is [`TrackerError::MissingField`]).
pub fn parse_scrape_response<'a>(
    body: &'a [u8],
    tokens: &'a mut [Token],
) -> Result<ScrapeResponse<'a>, TrackerError> {
    let d = root_dict(body, tokens)?;
    if let Some(f) = failure(&d) {
        return Ok(ScrapeResponse::Failure(f));
    }
    let files = d.get_dict(b"files").ok_or(TrackerError::MissingField)?;
    Ok(ScrapeResponse::Files(ScrapeFiles { files }))
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::ids::PeerId;
    use crate::tracker::Event;
    use proptest::prelude::*;
    use std::string::String;
    use std::vec::Vec;

    const HASH: [u8; 20] = [
        0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf1, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
        0x12, 0x34, 0x56, 0x78, 0x9a,
    ];
    const HASH_ENC: &str = "%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A";
    const PEER: &[u8; 20] = b"-BT0001-ab c~.\x00\xff1234";
    const PEER_ENC: &str = "-BT0001-ab%20c~.%00%FF1234";

    fn req() -> AnnounceRequest<'static> {
        AnnounceRequest {
            uploaded: 10,
            downloaded: 20,
            left: 30,
            ..AnnounceRequest::new(InfoHash(HASH), PeerId(*PEER), 6881)
        }
    }

    fn url(base: &str, r: &AnnounceRequest<'_>) -> String {
        let mut s = String::new();
        write_announce_url(base.as_bytes(), r, &mut s).expect("write");
        s
    }

    #[test]
    fn announce_url_encoding() {
        let expected = std::format!(
            "http://t.example/announce?info_hash={HASH_ENC}&peer_id={PEER_ENC}\
             &port=6881&uploaded=10&downloaded=20&left=30&compact=1"
        );
        assert_eq!(url("http://t.example/announce", &req()), expected);
    }

    #[test]
    fn announce_url_optional_fields_and_existing_query() {
        let r = AnnounceRequest {
            event: Some(Event::Started),
            numwant: Some(50),
            key: Some(0xdead_beef),
            tracker_id: Some(b"id 1"),
            compact: false,
            ..req()
        };
        let expected = std::format!(
            "http://t/a.php?passkey=abc&info_hash={HASH_ENC}&peer_id={PEER_ENC}\
             &port=6881&uploaded=10&downloaded=20&left=30&event=started&numwant=50\
             &key=DEADBEEF&trackerid=id%201"
        );
        assert_eq!(url("http://t/a.php?passkey=abc", &r), expected);
        assert!(url("http://t/a?", &req()).starts_with("http://t/a?info_hash="));
        assert!(url("http://t/a?x=1&", &req()).starts_with("http://t/a?x=1&info_hash="));
        let mut s = String::new();
        assert_eq!(
            write_announce_url(b"http://\xff", &req(), &mut s),
            Err(TrackerError::InvalidUrl)
        );
        let mut small: heapless::String<32> = heapless::String::new();
        assert_eq!(
            write_announce_url(b"http://t/announce", &req(), &mut small),
            Err(TrackerError::BufferTooSmall)
        );
    }

    fn scrape(s: &str) -> Option<String> {
        scrape_url(s.as_bytes()).map(|u| std::format!("{u}"))
    }

    #[test]
    fn scrape_url_conversion() {
        assert_eq!(
            scrape("http://x/announce").as_deref(),
            Some("http://x/scrape")
        );
        assert_eq!(
            scrape("http://x/announce.php?a=b").as_deref(),
            Some("http://x/scrape.php?a=b")
        );
        assert_eq!(
            scrape("http://x/p/announce?k=/announce").as_deref(),
            Some("http://x/p/scrape?k=/announce")
        );
        assert_eq!(scrape("http://x/a"), None);
        assert_eq!(scrape("http://x/announce/x"), None);
        assert_eq!(scrape("http://x/x?announce"), None);
        assert_eq!(scrape("http://announce"), None);
        assert_eq!(scrape("udp://x/a?/announce"), None);
    }

    #[test]
    fn scrape_url_with_hashes() {
        let u = scrape_url(b"http://x/announce").expect("scrape");
        let mut s = String::new();
        u.write(&[InfoHash(HASH), InfoHash([b'a'; 20])], &mut s)
            .expect("write");
        assert_eq!(
            s,
            std::format!("http://x/scrape?info_hash={HASH_ENC}&info_hash=aaaaaaaaaaaaaaaaaaaa")
        );
        let u = scrape_url(b"http://x/announce.php?a=b").expect("scrape");
        let mut s = String::new();
        u.write(&[InfoHash(HASH)], &mut s).expect("write");
        assert_eq!(
            s,
            std::format!("http://x/scrape.php?a=b&info_hash={HASH_ENC}")
        );
    }

    fn parse(body: &[u8]) -> Result<AnnounceResponse<'_>, TrackerError> {
        // Leaked so that the response may borrow it: tests only.
        let toks = std::boxed::Box::leak(std::vec![Token::default(); 256].into_boxed_slice());
        parse_announce_response(body, toks)
    }

    fn addrs(p: Peers<'_>) -> Vec<String> {
        p.map(|a| std::format!("{a}")).collect()
    }

    #[test]
    fn compact_peers_v4_and_v6() {
        let mut body = Vec::new();
        body.extend_from_slice(b"d8:completei5e10:incompletei3e8:intervali1800e5:peers12:");
        body.extend_from_slice(&[1, 2, 3, 4, 0x1a, 0xe1, 192, 168, 0, 1, 0, 80]);
        body.extend_from_slice(b"6:peers618:");
        body.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        body.extend_from_slice(&[0x1a, 0xe2]);
        body.push(b'e');
        let ok = parse(&body).expect("parse").ok().expect("success");
        assert_eq!(ok.interval_secs, 1800);
        assert_eq!(ok.min_interval_secs, None);
        assert_eq!((ok.complete, ok.incomplete), (Some(5), Some(3)));
        assert!(!ok.is_dict_form());
        assert_eq!(
            addrs(ok.peers()),
            ["1.2.3.4:6881", "192.168.0.1:80", "[2001:db8::1]:6882"]
        );
        assert_eq!(addrs(ok.peers_field()).len(), 2);
        assert_eq!(ok.peers6().len(), 1);
    }

    #[test]
    fn dict_form_peers() {
        let body = b"d8:intervali900e5:peersl\
            d2:ip7:1.2.3.47:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti6881ee\
            d2:ip11:example.org4:porti1ee\
            d2:ip3:::14:porti7000ee\
            d2:ip7:5.6.7.84:porti0ee\
            d2:ip7:5.6.7.84:porti70000ee\
            i5e\
            d2:ip5:[::2]4:porti9ee\
            ee";
        let ok = parse(body).expect("parse").ok().expect("success");
        assert!(ok.is_dict_form());
        assert_eq!(ok.interval_secs, 900);
        assert_eq!(addrs(ok.peers()), ["1.2.3.4:6881", "[::1]:7000", "[::2]:9"]);
    }

    #[test]
    fn failure_and_warning() {
        match parse(b"d14:failure reason12:unregisterede").expect("parse") {
            AnnounceResponse::Failure(f) => {
                assert_eq!(f.reason, b"unregistered");
                assert_eq!(f.reason_str(), Some("unregistered"));
            }
            AnnounceResponse::Success(_) => panic!("expected failure"),
        }
        assert_eq!(
            parse(b"d14:failure reason1:xe").expect("parse").ok().err(),
            Some(TrackerError::TrackerFailure)
        );
        let ok = parse(b"d10:tracker id3:abc15:warning message4:slow5:peers0:e")
            .expect("parse")
            .ok()
            .expect("success");
        assert_eq!(ok.warning, Some(&b"slow"[..]));
        assert_eq!(ok.tracker_id, Some(&b"abc"[..]));
        assert_eq!(ok.interval_secs, DEFAULT_INTERVAL_SECS);
        assert_eq!(ok.peers().count(), 0);
    }

    #[test]
    fn interval_and_min_interval_are_clamped() {
        let ok = |b: &'static [u8]| parse(b).expect("parse").ok().expect("success");
        let r = ok(b"d8:intervali1200e12:min intervali60ee");
        assert_eq!((r.interval_secs, r.min_interval_secs), (1200, Some(60)));
        let r = ok(b"d8:intervali5e12:min intervali1ee");
        assert_eq!((r.interval_secs, r.min_interval_secs), (30, Some(30)));
        let r = ok(b"d8:intervali-5e12:min intervali99999999999ee");
        assert_eq!((r.interval_secs, r.min_interval_secs), (30, Some(30)));
        let r = ok(b"d8:intervali99999999999e12:min intervali3600ee");
        assert_eq!(
            (r.interval_secs, r.min_interval_secs),
            (MAX_INTERVAL_SECS, Some(3600))
        );
        let r = ok(b"d8:interval2:xxe");
        assert_eq!(r.interval_secs, DEFAULT_INTERVAL_SECS);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(matches!(parse(b""), Err(TrackerError::Bencode(_))));
        assert!(matches!(parse(b"d5:peers"), Err(TrackerError::Bencode(_))));
        assert_eq!(parse(b"le").err(), Some(TrackerError::NotADict));
        assert_eq!(parse(b"i1e").err(), Some(TrackerError::NotADict));
        assert_eq!(
            parse(b"d5:peers5:abcdee").err(),
            Some(TrackerError::BadPeers)
        );
        assert_eq!(parse(b"d5:peersi1ee").err(), Some(TrackerError::BadPeers));
        assert_eq!(parse(b"d5:peersdee").err(), Some(TrackerError::BadPeers));
        assert_eq!(
            parse(b"d6:peers66:abcdefe").err(),
            Some(TrackerError::BadPeers)
        );
        assert_eq!(parse(b"d6:peers6lee").err(), Some(TrackerError::BadPeers));
        let mut toks = [Token::default(); 2];
        assert!(matches!(
            parse_announce_response(b"d1:ai1e1:bi2ee", &mut toks),
            Err(TrackerError::Bencode(e)) if e.kind == crate::bencode::ErrorKind::TooManyTokens
        ));
    }

    #[test]
    fn scrape_response() {
        let mut body = Vec::new();
        body.extend_from_slice(b"d5:filesd20:");
        body.extend_from_slice(&HASH);
        body.extend_from_slice(b"d8:completei5e10:downloadedi50e10:incompletei10ee");
        body.extend_from_slice(b"3:bad");
        body.extend_from_slice(b"d8:completei1ee");
        body.extend_from_slice(b"20:bbbbbbbbbbbbbbbbbbbbd8:completei-1eeee");
        let mut toks = [Token::default(); 64];
        let files = parse_scrape_response(&body, &mut toks)
            .expect("parse")
            .ok()
            .expect("files");
        let all: Vec<_> = files.iter().collect();
        assert_eq!(all.len(), 2);
        assert_eq!(
            files.get(&InfoHash(HASH)),
            Some(ScrapeStats {
                complete: 5,
                downloaded: 50,
                incomplete: 10
            })
        );
        assert_eq!(
            files.get(&InfoHash([b'b'; 20])),
            Some(ScrapeStats::default())
        );
        let mut toks = [Token::default(); 8];
        assert!(matches!(
            parse_scrape_response(b"d14:failure reason2:noe", &mut toks),
            Ok(ScrapeResponse::Failure(f)) if f.reason == b"no"
        ));
        let mut toks = [Token::default(); 8];
        assert_eq!(
            parse_scrape_response(b"d5:filesi1ee", &mut toks).err(),
            Some(TrackerError::MissingField)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut toks = [Token::default(); 64];
            if let Ok(AnnounceResponse::Success(ok)) = parse_announce_response(&body, &mut toks) {
                let _ = ok.peers().count();
            }
            let mut toks = [Token::default(); 64];
            if let Ok(ScrapeResponse::Files(f)) = parse_scrape_response(&body, &mut toks) {
                let _ = f.iter().count();
            }
            let _ = scrape_url(&body).map(|u| std::format!("{u}"));
            let mut s = String::new();
            let _ = write_announce_url(&body, &req(), &mut s);
        }

        #[test]
        fn bencoded_peer_lists_never_panic(
            items in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..48), any::<i64>()), 0..8)
        ) {
            let mut body = Vec::from(&b"d5:peersl"[..]);
            for (ip, port) in &items {
                body.extend_from_slice(std::format!("d2:ip{}:", ip.len()).as_bytes());
                body.extend_from_slice(ip);
                body.extend_from_slice(std::format!("4:porti{port}ee").as_bytes());
            }
            body.extend_from_slice(b"ee");
            let mut toks = [Token::default(); 128];
            let ok = parse_announce_response(&body, &mut toks).expect("parse").ok().expect("ok");
            prop_assert!(ok.peers().count() <= items.len());
        }
    }
}
