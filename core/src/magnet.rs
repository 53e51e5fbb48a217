//! BEP 9 magnet URIs, bounded and allocation-free.
//!
//! A magnet link names a torrent by its info-hash so that the metadata can be fetched
//! from peers ([BEP 9](https://www.bittorrent.org/beps/bep_0009.html)):
//!
//! ```text
//! magnet:?xt=urn:btih:<info-hash>&dn=<name>&tr=<tracker url>&ws=<web seed>&x.pe=<peer>
//! ```
//!
//! [`Magnet::parse`] builds a view over the borrowed URI bytes. Nothing is copied or
//! allocated: the display name, trackers, web seeds and peers are kept as *raw*
//! (still percent-encoded) sub-slices of the URI, and are decoded on demand with
//! [`PercentDecode`] (a lazy iterator) or [`decode_into`] (into a caller buffer).
//!
//! # Choices
//!
//! - **Scheme and names.** `magnet:?` is matched case-insensitively, and so are the
//!   parameter names. As in libtorrent, a `.<digits>` suffix on a name is ignored, so
//!   `xt.1` and `tr.2` count as `xt` and `tr`. Unknown parameters are ignored (but
//!   count toward [`MagnetLimits::max_params`]); so are empty `&&` segments.
//! - **Info-hash.** `xt=urn:btih:` takes 40 hex digits or 32 base32 characters, in
//!   either case; the value may itself be percent-encoded (`urn%3Abtih%3A...`). The
//!   first `btih` wins; later ones must still be well formed. `xt=urn:btmh:1220<64 hex>`
//!   (BEP 52: a SHA-256 multihash) is the v2 info-hash ([`Magnet::info_hash_v2`]); a
//!   link may carry it alone or beside a `btih` (hybrid). A link with only a `btmh`
//!   parses, and its [`Magnet::info_hash`] is the v2 hash truncated to 20 bytes (the
//!   session joins the v2 swarm with it, fetches the info dictionary, then the piece
//!   layers with BEP 52 hash requests). A `btmh` of another hash function or length fails with
//!   [`MagnetError::BadInfoHash`]. Other `xt` URNs are ignored.
//! - **Repeated parameters.** Trackers, web seeds and peers are stored in fixed-size
//!   [`heapless::Vec`]s of `MAX_TRACKERS`, `MAX_WEB_SEEDS` and `MAX_PEERS`
//!   entries, in link order. Like libtorrent, a link with more of them is *not*
//!   rejected: the extras are dropped and counted in [`Magnet::dropped`] (see also
//!   [`Magnet::is_truncated`]). Empty values (`tr=`) are skipped, as libtorrent does.
//!   The first non-empty `dn` wins.
//! - **Decoding.** Values are percent-decoded (`%XX`, either case). A malformed escape
//!   (`%zz`, or `%4` at the end) in any recognised parameter fails the parse with
//!   [`MagnetError::BadEscape`] (libtorrent instead silently drops such a tracker), so
//!   every value of a parsed [`Magnet`] is known to decode. `+` is **not** turned into
//!   a space in tracker, web-seed and peer values ([`PlusMode::Literal`]): `+` is a
//!   legal, meaningful character in URLs (passkeys, paths). In the display name, which
//!   is only shown to people and is often produced by form encoders (`dn=My+Movie`),
//!   `+` means a space ([`PlusMode::Space`], as libtorrent does for every value).
//!   [`write_magnet`] always escapes `+` as `%2B`, so its links read back the same
//!   under either rule.
//! - **Peers.** `x.pe` values are `host:port` strings. [`Magnet::peers`] yields the ones
//!   that are a literal IPv4 (`1.2.3.4:6881`) or bracketed IPv6 (`[::1]:6881`) address
//!   with a non-zero port, as [`core::net::SocketAddr`]; host names and anything else
//!   are skipped, not errors (resolving names is the host's business; the raw values
//!   stay available through [`Magnet::peers_raw`]).
//! - **Limits.** [`MagnetLimits`] bounds the URI length (8 KiB by default) and the
//!   number of parameters (256 by default); all the work is linear in the URI length.

use core::fmt;
use core::iter::FusedIterator;
use core::net::SocketAddr;
use core::str::FromStr;

use heapless::Vec;

use crate::ids::{hex_val, InfoHash};

/// How many trackers (`tr`) a [`Magnet`] keeps; further ones are counted in
/// [`Dropped::trackers`].
pub(crate) const MAX_TRACKERS: usize = 32;
/// How many web seeds (`ws`) a [`Magnet`] keeps; further ones are counted in
/// [`Dropped::web_seeds`].
pub(crate) const MAX_WEB_SEEDS: usize = 8;
/// How many peer addresses (`x.pe`) a [`Magnet`] keeps; further ones are counted in
/// [`Dropped::peers`].
pub(crate) const MAX_PEERS: usize = 16;

/// Longest decoded `x.pe` value [`parse_peer`] looks at (a bracketed IPv6 address with
/// a scope id and a port fits comfortably).
const MAX_PEER_LEN: usize = 64;

/// Bounds applied by [`Magnet::parse_with`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MagnetLimits {
    /// Longest accepted URI, in bytes (default 8 KiB). Longer is [`MagnetError::TooLong`].
    pub max_uri_len: usize,
    /// Most `&`-separated parameters, known or not (default 256). More is
    /// [`MagnetError::TooManyParams`].
    pub max_params: usize,
}

impl MagnetLimits {
    /// The default limits: 8 KiB and 256 parameters.
    pub const DEFAULT: Self = Self {
        max_uri_len: 8 * 1024,
        max_params: 256,
    };
}

impl Default for MagnetLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a magnet URI could not be parsed or a value decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum MagnetError {
    /// The URI does not start with `magnet:?` (in any case).
    NotMagnet,
    /// The URI is longer than [`MagnetLimits::max_uri_len`].
    TooLong,
    /// The URI has more parameters than [`MagnetLimits::max_params`].
    TooManyParams,
    /// No `xt=urn:btih:` (nor `urn:btmh:`) parameter.
    MissingInfoHash,
    /// A `urn:btih:` value is not 40 hex digits or 32 base32 characters.
    BadInfoHash,
    /// Only a v2 info-hash (`urn:btmh:`) is given where a host does not support v2
    /// (the session takes such links; no parser returns this).
    V2Unsupported,
    /// A malformed percent escape (`%zz`, or a `%` without two hex digits after it).
    BadEscape,
    /// The output buffer is too small for the decoded value.
    BufferTooSmall,
}

impl fmt::Display for MagnetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotMagnet => "not a magnet URI (missing `magnet:?`)",
            Self::TooLong => "magnet URI too long",
            Self::TooManyParams => "too many parameters in magnet URI",
            Self::MissingInfoHash => "magnet URI has no `xt=urn:btih:` info-hash",
            Self::BadInfoHash => "malformed info-hash in magnet URI",
            Self::V2Unsupported => "v2-only magnet URI (`urn:btmh:`): not supported by this host",
            Self::BadEscape => "malformed percent escape in magnet URI",
            Self::BufferTooSmall => "buffer too small for decoded magnet value",
        })
    }
}

/// What a `+` decodes to.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum PlusMode {
    /// `+` stays `+` (RFC 3986 percent-decoding only). Used for trackers, web seeds, peers.
    #[default]
    Literal,
    /// `+` is a space (HTML form encoding). Used for the display name.
    Space,
}

/// A lazy percent-decoder over raw bytes: yields each decoded byte, or one
/// [`MagnetError::BadEscape`] and then nothing.
#[derive(Clone, Debug)]
pub struct PercentDecode<'a> {
    rest: &'a [u8],
    plus: PlusMode,
    failed: bool,
}

impl<'a> PercentDecode<'a> {
    /// Decodes `raw` with `+` left as is.
    pub const fn new(raw: &'a [u8]) -> Self {
        Self::with_plus(raw, PlusMode::Literal)
    }

    /// Decodes `raw` with the given treatment of `+`.
    pub const fn with_plus(raw: &'a [u8], plus: PlusMode) -> Self {
        Self {
            rest: raw,
            plus,
            failed: false,
        }
    }
}

impl Iterator for PercentDecode<'_> {
    type Item = Result<u8, MagnetError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let (&c, rest) = self.rest.split_first()?;
        self.rest = rest;
        match c {
            b'%' => match rest {
                [h, l, tail @ ..] => match (hex_val(*h), hex_val(*l)) {
                    (Some(h), Some(l)) => {
                        self.rest = tail;
                        Some(Ok((h << 4) | l))
                    }
                    _ => self.fail(),
                },
                _ => self.fail(),
            },
            b'+' if self.plus == PlusMode::Space => Some(Ok(b' ')),
            _ => Some(Ok(c)),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.failed {
            (0, Some(0))
        } else {
            (self.rest.len().div_ceil(3), Some(self.rest.len()))
        }
    }
}

impl FusedIterator for PercentDecode<'_> {}

impl PercentDecode<'_> {
    fn fail(&mut self) -> Option<Result<u8, MagnetError>> {
        self.failed = true;
        self.rest = &[];
        Some(Err(MagnetError::BadEscape))
    }
}

/// A lazy percent-decoder over `raw` (`+` stays `+`); shorthand for [`PercentDecode::new`].
pub const fn percent_decode(raw: &[u8]) -> PercentDecode<'_> {
    PercentDecode::new(raw)
}

/// Percent-decodes `raw` into `out` (`+` stays `+`) and returns the decoded part.
///
/// Fails with [`MagnetError::BadEscape`] on a malformed escape and with
/// [`MagnetError::BufferTooSmall`] when `out` is too short; `raw.len()` bytes always
/// suffice, and `decoded_len` gives the exact size.
pub fn decode_into<'o>(raw: &[u8], out: &'o mut [u8]) -> Result<&'o [u8], MagnetError> {
    decode_into_with(raw, out, PlusMode::Literal)
}

/// [`decode_into`] with the given treatment of `+`.
pub(crate) fn decode_into_with<'o>(
    raw: &[u8],
    out: &'o mut [u8],
    plus: PlusMode,
) -> Result<&'o [u8], MagnetError> {
    let mut n = 0;
    for b in PercentDecode::with_plus(raw, plus) {
        let b = b?;
        *out.get_mut(n).ok_or(MagnetError::BufferTooSmall)? = b;
        n += 1;
    }
    let out: &'o [u8] = out;
    Ok(out.get(..n).unwrap_or_default())
}

/// The length of `raw` once percent-decoded, or [`MagnetError::BadEscape`].
pub(crate) fn decoded_len(raw: &[u8]) -> Result<usize, MagnetError> {
    let mut n = 0usize;
    for b in percent_decode(raw) {
        b?;
        n += 1;
    }
    Ok(n)
}

fn validate(raw: &[u8]) -> Result<(), MagnetError> {
    decoded_len(raw).map(|_| ())
}

/// Parses one raw (possibly percent-encoded) `x.pe` value: `1.2.3.4:6881` or
/// `[::1]:6881`. Returns `None` for host names, port 0, bad escapes and anything else
/// that is not a literal socket address.
pub(crate) fn parse_peer(raw: &[u8]) -> Option<SocketAddr> {
    let mut buf = [0u8; MAX_PEER_LEN];
    let s = decode_into(raw, &mut buf).ok()?;
    let s = core::str::from_utf8(s).ok()?;
    let addr = SocketAddr::from_str(s).ok()?;
    (addr.port() != 0).then_some(addr)
}

/// How many repeated parameters did not fit in a [`Magnet`]'s fixed-size lists.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Dropped {
    /// Trackers beyond `MAX_TRACKERS`.
    pub trackers: usize,
    /// Web seeds beyond `MAX_WEB_SEEDS`.
    pub web_seeds: usize,
    /// Peers beyond `MAX_PEERS`.
    pub peers: usize,
}

impl Dropped {
    /// The total number of dropped values.
    pub const fn total(&self) -> usize {
        self.trackers
            .saturating_add(self.web_seeds)
            .saturating_add(self.peers)
    }
}

/// A parsed magnet link: a view over the URI bytes it was parsed from.
///
/// All string values are raw sub-slices of the URI, still percent-encoded; decode them
/// with [`decode_into`] or [`PercentDecode`]. They are known to decode without error.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Magnet<'a> {
    raw: &'a [u8],
    info_hash: InfoHash,
    has_btih: bool,
    btmh: Option<[u8; 32]>,
    name: Option<&'a [u8]>,
    trackers: Vec<&'a [u8], MAX_TRACKERS>,
    web_seeds: Vec<&'a [u8], MAX_WEB_SEEDS>,
    peers: Vec<&'a [u8], MAX_PEERS>,
    dropped: Dropped,
}

/// Which parameter a name stands for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Xt,
    Dn,
    Tr,
    Ws,
    Pe,
    Other,
}

fn key(name: &[u8]) -> Key {
    let mut parts = name.splitn(2, |&b| b == b'.');
    let head = parts.next().unwrap_or_default();
    let base = match parts.next() {
        Some(tail) if tail.iter().all(u8::is_ascii_digit) => head,
        _ => name,
    };
    let is = |k: &[u8]| base.eq_ignore_ascii_case(k);
    if is(b"xt") {
        Key::Xt
    } else if is(b"dn") {
        Key::Dn
    } else if is(b"tr") {
        Key::Tr
    } else if is(b"ws") {
        Key::Ws
    } else if is(b"x.pe") {
        Key::Pe
    } else {
        Key::Other
    }
}

/// What an `xt` value names.
enum Xt {
    Btih(InfoHash),
    Btmh([u8; 32]),
    Other,
}

fn classify_xt(raw: &[u8]) -> Result<Xt, MagnetError> {
    let mut dec = percent_decode(raw);
    let mut prefix = [0u8; 9];
    let mut n = 0;
    for slot in prefix.iter_mut() {
        match dec.next() {
            Some(b) => *slot = b?,
            None => break,
        }
        n += 1;
    }
    if n == prefix.len() && prefix.eq_ignore_ascii_case(b"urn:btih:") {
        let mut buf = [0u8; 40];
        let mut len = 0;
        for b in dec {
            *buf.get_mut(len).ok_or(MagnetError::BadInfoHash)? = b?;
            len += 1;
        }
        buf.get(..len)
            .and_then(InfoHash::from_btih)
            .map(Xt::Btih)
            .ok_or(MagnetError::BadInfoHash)
    } else {
        for b in dec {
            b?;
        }
        if n == prefix.len() && prefix.eq_ignore_ascii_case(b"urn:btmh:") {
            btmh(percent_decode(raw).skip(9))
        } else {
            Ok(Xt::Other)
        }
    }
}

/// A `btmh` value: the multihash `1220` (SHA-256, 32 bytes) and 64 hex digits.
fn btmh(dec: impl Iterator<Item = Result<u8, MagnetError>>) -> Result<Xt, MagnetError> {
    let mut buf = [0u8; 68];
    let mut len = 0;
    for b in dec {
        *buf.get_mut(len).ok_or(MagnetError::BadInfoHash)? = b?;
        len += 1;
    }
    if len != 68 || &buf[..4] != b"1220" {
        return Err(MagnetError::BadInfoHash);
    }
    let mut h = [0u8; 32];
    for (i, pair) in buf[4..].chunks_exact(2).enumerate() {
        let (Some(hi), Some(lo)) = (hex_val(pair[0]), hex_val(pair[1])) else {
            return Err(MagnetError::BadInfoHash);
        };
        h[i] = hi << 4 | lo;
    }
    Ok(Xt::Btmh(h))
}

fn push<'a, const N: usize>(
    list: &mut Vec<&'a [u8], N>,
    value: &'a [u8],
    dropped: &mut usize,
) -> Result<(), MagnetError> {
    validate(value)?;
    if !value.is_empty() && list.push(value).is_err() {
        *dropped = dropped.saturating_add(1);
    }
    Ok(())
}

fn strip_scheme(uri: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"magnet:?";
    let head = uri.get(..SCHEME.len())?;
    if head.eq_ignore_ascii_case(SCHEME) {
        uri.get(SCHEME.len()..)
    } else {
        None
    }
}

impl<'a> Magnet<'a> {
    /// Parses a magnet URI with the [default limits](MagnetLimits::DEFAULT).
    pub fn parse(uri: &'a [u8]) -> Result<Self, MagnetError> {
        Self::parse_with(uri, &MagnetLimits::DEFAULT)
    }

    /// Parses a magnet URI given as a string, with the default limits.
    pub fn parse_str(uri: &'a str) -> Result<Self, MagnetError> {
        Self::parse(uri.as_bytes())
    }

    /// Parses a magnet URI within the given limits.
    pub fn parse_with(uri: &'a [u8], limits: &MagnetLimits) -> Result<Self, MagnetError> {
        if uri.len() > limits.max_uri_len {
            return Err(MagnetError::TooLong);
        }
        let query = strip_scheme(uri).ok_or(MagnetError::NotMagnet)?;

        let mut info_hash = None;
        let mut btmh = None;
        let mut name = None;
        let mut trackers = Vec::new();
        let mut web_seeds = Vec::new();
        let mut peers = Vec::new();
        let mut dropped = Dropped::default();

        let params = query.split(|&b| b == b'&').filter(|s| !s.is_empty());
        for (count, param) in params.enumerate() {
            if count >= limits.max_params {
                return Err(MagnetError::TooManyParams);
            }
            let mut kv = param.splitn(2, |&b| b == b'=');
            let k = kv.next().unwrap_or_default();
            let value = kv.next().unwrap_or_default();
            match key(k) {
                Key::Xt => match classify_xt(value)? {
                    Xt::Btih(h) => {
                        info_hash.get_or_insert(h);
                    }
                    Xt::Btmh(h) => {
                        btmh.get_or_insert(h);
                    }
                    Xt::Other => {}
                },
                Key::Dn => {
                    validate(value)?;
                    if name.is_none() && !value.is_empty() {
                        name = Some(value);
                    }
                }
                Key::Tr => push(&mut trackers, value, &mut dropped.trackers)?,
                Key::Ws => push(&mut web_seeds, value, &mut dropped.web_seeds)?,
                Key::Pe => push(&mut peers, value, &mut dropped.peers)?,
                Key::Other => {}
            }
        }

        let has_btih = info_hash.is_some();
        let info_hash = match (info_hash, &btmh) {
            (Some(h), _) => h,
            (None, Some(h2)) => {
                let mut t = [0u8; 20];
                t.copy_from_slice(&h2[..20]);
                InfoHash(t)
            }
            (None, None) => return Err(MagnetError::MissingInfoHash),
        };
        Ok(Self {
            raw: uri,
            info_hash,
            has_btih,
            btmh,
            name,
            trackers,
            web_seeds,
            peers,
            dropped,
        })
    }

    /// The whole URI this magnet was parsed from.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// The v1 info-hash (`xt=urn:btih:`).
    pub const fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    /// Whether the link carries a v2 info-hash (`xt=urn:btmh:`).
    pub const fn has_btmh(&self) -> bool {
        self.btmh.is_some()
    }

    /// The v1 info-hash (`xt=urn:btih:`), if the link has one.
    pub const fn info_hash_v1(&self) -> Option<InfoHash> {
        if self.has_btih {
            Some(self.info_hash)
        } else {
            None
        }
    }

    /// The v2 info-hash (`xt=urn:btmh:1220...`), if the link has one.
    pub const fn info_hash_v2(&self) -> Option<[u8; 32]> {
        self.btmh
    }

    /// The raw (percent-encoded) display name `dn`, if any.
    pub const fn name_raw(&self) -> Option<&'a [u8]> {
        self.name
    }

    /// The display name as a lazy decoder (`+` is a space).
    pub fn name(&self) -> Option<PercentDecode<'a>> {
        self.name
            .map(|raw| PercentDecode::with_plus(raw, PlusMode::Space))
    }

    /// Decodes the display name into `buf` (`+` is a space); `Ok(None)` without a `dn`.
    pub fn name_into<'o>(&self, buf: &'o mut [u8]) -> Result<Option<&'o [u8]>, MagnetError> {
        match self.name {
            Some(raw) => decode_into_with(raw, buf, PlusMode::Space).map(Some),
            None => Ok(None),
        }
    }

    /// The raw (percent-encoded) tracker URLs, in link order (at most `MAX_TRACKERS`).
    pub fn trackers(&self) -> &[&'a [u8]] {
        &self.trackers
    }

    /// The `i`-th raw tracker URL; decode it with [`decode_into`].
    pub fn tracker(&self, i: usize) -> Option<&'a [u8]> {
        self.trackers.get(i).copied()
    }

    /// The raw (percent-encoded) web seed URLs (at most `MAX_WEB_SEEDS`).
    pub fn web_seeds(&self) -> &[&'a [u8]] {
        &self.web_seeds
    }

    /// The `i`-th raw web seed URL; decode it with [`decode_into`].
    pub fn web_seed(&self, i: usize) -> Option<&'a [u8]> {
        self.web_seeds.get(i).copied()
    }

    /// The raw `x.pe` values, host names included (at most `MAX_PEERS`).
    pub fn peers_raw(&self) -> &[&'a [u8]] {
        &self.peers
    }

    /// The `x.pe` peers that are literal IPv4 or bracketed IPv6 addresses; host names
    /// and unparsable values are skipped (see `parse_peer`).
    pub fn peers(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.peers.iter().filter_map(|raw| parse_peer(raw))
    }

    /// How many trackers, web seeds and peers did not fit and were dropped.
    pub const fn dropped(&self) -> Dropped {
        self.dropped
    }

    /// Whether any tracker, web seed or peer was dropped for lack of room.
    pub const fn is_truncated(&self) -> bool {
        self.dropped.total() != 0
    }

    /// Writes the link back in canonical form: `xt` as lowercase hex, then `dn`, `tr`,
    /// `ws` and `x.pe`, each decoded and re-encoded (see [`write_magnet`]). Unknown
    /// parameters, `btmh` and dropped values are not written.
    pub fn write_uri(&self, out: &mut impl fmt::Write) -> fmt::Result {
        write_head(out, &self.info_hash)?;
        if let Some(raw) = self.name {
            out.write_str("&dn=")?;
            encode(
                out,
                PercentDecode::with_plus(raw, PlusMode::Space),
                is_unreserved,
            )?;
        }
        for (key, list) in [("&tr=", self.trackers()), ("&ws=", self.web_seeds())] {
            for raw in list {
                out.write_str(key)?;
                encode(out, percent_decode(raw), is_unreserved)?;
            }
        }
        for raw in self.peers_raw() {
            out.write_str("&x.pe=")?;
            encode(out, percent_decode(raw), is_peer_char)?;
        }
        Ok(())
    }
}

impl fmt::Display for Magnet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_uri(f)
    }
}

/// RFC 3986 unreserved characters: never escaped.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters left as is in `x.pe` (libtorrent reads `x.pe` without unescaping it).
fn is_peer_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b':' | b'[' | b']')
}

fn encode(
    w: &mut impl fmt::Write,
    bytes: impl IntoIterator<Item = Result<u8, MagnetError>>,
    keep: fn(u8) -> bool,
) -> fmt::Result {
    const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
    for b in bytes {
        let b = b.map_err(|_| fmt::Error)?;
        if keep(b) {
            w.write_char(char::from(b))?;
        } else {
            w.write_char('%')?;
            for nibble in [b >> 4, b & 0xf] {
                let c = HEX_UPPER.get(usize::from(nibble)).ok_or(fmt::Error)?;
                w.write_char(char::from(*c))?;
            }
        }
    }
    Ok(())
}

fn write_head(w: &mut impl fmt::Write, info_hash: &InfoHash) -> fmt::Result {
    write!(w, "magnet:?xt=urn:btih:{info_hash}")
}

/// Writes a canonical magnet link: `magnet:?xt=urn:btih:<lowercase hex>`, then `dn` if
/// `name` is given and non-empty, then one `tr` per non-empty tracker, in order.
///
/// Every byte other than an RFC 3986 unreserved character (`A-Z a-z 0-9 - . _ ~`) is
/// percent-encoded (`%3A`, `%2F`, `%20`, `%2B`, ...), so the output is ASCII and
/// [`Magnet::parse`] gives back exactly these bytes, whatever they are.
pub fn write_magnet<'t>(
    w: &mut impl fmt::Write,
    info_hash: &InfoHash,
    name: Option<&[u8]>,
    trackers: impl IntoIterator<Item = &'t [u8]>,
) -> fmt::Result {
    write_head(w, info_hash)?;
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        w.write_str("&dn=")?;
        encode(w, name.iter().map(|&b| Ok(b)), is_unreserved)?;
    }
    for tr in trackers.into_iter().filter(|t| !t.is_empty()) {
        w.write_str("&tr=")?;
        encode(w, tr.iter().map(|&b| Ok(b)), is_unreserved)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    use proptest::prelude::*;
    use std::string::String;
    use std::vec::Vec as StdVec;

    const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";
    const B32: &str = "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK";

    fn ih() -> InfoHash {
        InfoHash::from_hex(HEX.as_bytes()).expect("hex")
    }

    fn parse(s: &str) -> Result<Magnet<'_>, MagnetError> {
        Magnet::parse_str(s)
    }

    fn hash_of(s: &str) -> Result<InfoHash, MagnetError> {
        Magnet::parse_str(s).map(|m| m.info_hash())
    }

    fn dec(raw: &[u8]) -> StdVec<u8> {
        let mut buf = [0u8; 256];
        decode_into(raw, &mut buf).expect("decode").to_vec()
    }

    #[test]
    fn hex_xt_either_case() {
        let s = std::format!("magnet:?xt=urn:btih:{HEX}");
        let m = parse(&s).expect("lower");
        assert_eq!(m.info_hash(), ih());
        assert!(m.name_raw().is_none() && m.trackers().is_empty());
        let upper = HEX.to_ascii_uppercase();
        assert_eq!(
            hash_of(&std::format!("magnet:?xt=urn:btih:{upper}")),
            Ok(ih())
        );
    }

    #[test]
    fn base32_xt_either_case() {
        assert_eq!(
            hash_of(&std::format!("magnet:?xt=urn:btih:{B32}")),
            Ok(ih())
        );
        let lower = B32.to_ascii_lowercase();
        assert_eq!(
            hash_of(&std::format!("magnet:?xt=urn:btih:{lower}")),
            Ok(ih())
        );
    }

    #[test]
    fn scheme_names_and_urn_case_insensitive() {
        let s = std::format!("MAGNET:?XT=URN:BTIH:{HEX}&DN=x&TR=t");
        let m = parse(&s).expect("parse");
        assert_eq!(m.info_hash(), ih());
        assert_eq!(m.name_raw(), Some(&b"x"[..]));
        assert_eq!(m.trackers(), &[&b"t"[..]]);
        assert_eq!(m.as_bytes(), s.as_bytes());
    }

    #[test]
    fn escaped_xt() {
        assert_eq!(
            hash_of(&std::format!("magnet:?xt=urn%3Abtih%3a{HEX}")),
            Ok(ih())
        );
    }

    #[test]
    fn several_trackers_decoded() {
        let s = std::format!(
            "magnet:?xt=urn:btih:{HEX}&tr=udp%3A%2F%2Ftracker.example.org%3A1337%2Fannounce\
             &tr=http://t2.example/a?x&tr=&tr.1=https%3a%2f%2ft3%2Fp%2Bq"
        );
        let m = parse(&s).expect("parse");
        assert_eq!(m.trackers().len(), 3, "empty tr skipped");
        assert_eq!(
            dec(m.tracker(0).expect("t0")),
            b"udp://tracker.example.org:1337/announce"
        );
        assert_eq!(dec(m.tracker(1).expect("t1")), b"http://t2.example/a?x");
        assert_eq!(dec(m.tracker(2).expect("t2")), b"https://t3/p+q");
        assert!(m.tracker(3).is_none());
        assert!(!m.is_truncated());
    }

    #[test]
    fn name_plus_is_space_but_tracker_plus_is_not() {
        let s = std::format!("magnet:?xt=urn:btih:{HEX}&dn=My+Movie%20(2020)&tr=http://a/b+c");
        let m = parse(&s).expect("parse");
        let mut buf = [0u8; 64];
        assert_eq!(
            m.name_into(&mut buf).expect("name"),
            Some(&b"My Movie (2020)"[..])
        );
        let lazy: StdVec<u8> = m
            .name()
            .expect("name")
            .collect::<Result<_, _>>()
            .expect("ok");
        assert_eq!(lazy, b"My Movie (2020)");
        assert_eq!(dec(m.tracker(0).expect("tr")), b"http://a/b+c");
    }

    #[test]
    fn first_name_and_hash_win() {
        let other = "0000000000000000000000000000000000000000";
        let s = std::format!("magnet:?dn=&dn=one&xt=urn:btih:{HEX}&dn=two&xt.2=urn:btih:{other}");
        let m = parse(&s).expect("parse");
        assert_eq!(m.name_raw(), Some(&b"one"[..]));
        assert_eq!(m.info_hash(), ih());
    }

    #[test]
    fn web_seeds() {
        let s = std::format!(
            "magnet:?xt=urn:btih:{HEX}&ws=http%3A%2F%2Fmirror.example%2Ff.iso&ws=https://m2/f"
        );
        let m = parse(&s).expect("parse");
        assert_eq!(m.web_seeds().len(), 2);
        assert_eq!(
            dec(m.web_seed(0).expect("ws0")),
            b"http://mirror.example/f.iso"
        );
        assert_eq!(m.web_seed(1), Some(&b"https://m2/f"[..]));
        assert!(m.web_seed(2).is_none());
    }

    #[test]
    fn peers_v4_v6_and_hostnames() {
        let s = std::format!(
            "magnet:?xt=urn:btih:{HEX}&x.pe=1.2.3.4:6881&x.pe=peer.example.org:6881\
             &x.pe=[::1]:6882&x.pe=%5B2001%3Adb8%3A%3A7%5D%3A51413&x.pe=5.6.7.8:0\
             &x.pe=9.9.9.9&X.PE=10.0.0.1:1"
        );
        let m = parse(&s).expect("parse");
        assert_eq!(m.peers_raw().len(), 7);
        let peers: StdVec<SocketAddr> = m.peers().collect();
        assert_eq!(
            peers,
            [
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 6881)),
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 6882, 0, 0)),
                SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7),
                    51413,
                    0,
                    0
                )),
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1)),
            ]
        );
        assert!(parse_peer(b"::1:6881").is_none(), "unbracketed v6");
        assert!(parse_peer(b"1.2.3.4:65536").is_none());
        assert!(parse_peer(&[b'1'; 200]).is_none(), "too long");
    }

    #[test]
    fn missing_info_hash() {
        assert_eq!(parse("magnet:?").err(), Some(MagnetError::MissingInfoHash));
        assert_eq!(
            parse("magnet:?dn=x&tr=http://t/&xt=urn:sha1:ABCDEF").err(),
            Some(MagnetError::MissingInfoHash)
        );
        assert_eq!(
            parse("magnet:?xt=urn:btih").err(),
            Some(MagnetError::MissingInfoHash)
        );
    }

    #[test]
    fn v2_only_and_hybrid() {
        let btmh = "1220caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa9f6105232b28ad099f3a302e";
        let want: [u8; 32] = core::array::from_fn(|i| {
            u8::from_str_radix(&btmh[4 + 2 * i..6 + 2 * i], 16).expect("hex")
        });
        let s = std::format!("magnet:?xt=urn:btmh:{btmh}&dn=v2");
        let m = parse(&s).expect("v2 only");
        assert_eq!(m.info_hash_v2(), Some(want));
        assert_eq!(m.info_hash_v1(), None);
        assert_eq!(m.info_hash().0[..], want[..20], "truncated v2 hash");
        // Percent-encoded and upper case, beside a btih (either order).
        let up = btmh.to_uppercase();
        for s in [
            std::format!("magnet:?xt=urn:btmh:{btmh}&xt=urn:btih:{HEX}"),
            std::format!("magnet:?xt=urn:btih:{HEX}&xt=urn%3Abtmh%3A{up}"),
        ] {
            let m = parse(&s).expect("hybrid");
            assert_eq!(m.info_hash(), ih());
            assert_eq!(m.info_hash_v1(), Some(ih()));
            assert_eq!(m.info_hash_v2(), Some(want));
            assert!(m.has_btmh());
        }
        for bad in [
            &btmh[..66],                         // short
            &std::format!("{btmh}00")[..],       // long
            &std::format!("1114{}", &btmh[4..]), // SHA-1 multihash code
            &std::format!("1220{}x", &btmh[4..67]),
        ] {
            assert_eq!(
                parse(&std::format!("magnet:?xt=urn:btmh:{bad}")).err(),
                Some(MagnetError::BadInfoHash),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_info_hash() {
        for bad in [
            "magnet:?xt=urn:btih:",
            "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88",
            "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88aa",
            "magnet:?xt=urn:btih:z12fe1c06bba254a9dc9f519b335aa7c1367a88a",
            "magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKE1",
            "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88ac12fe1c06bba254a9dc9",
        ] {
            assert_eq!(parse(bad).err(), Some(MagnetError::BadInfoHash), "{bad}");
        }
        // A later malformed btih still fails the link.
        let s = std::format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btih:1234");
        assert_eq!(parse(&s).err(), Some(MagnetError::BadInfoHash));
    }

    #[test]
    fn bad_escapes() {
        for tail in [
            "&tr=%zz",
            "&dn=abc%4",
            "&ws=%",
            "&x.pe=%G1",
            "&xt=urn:sha1:%2",
        ] {
            let s = std::format!("magnet:?xt=urn:btih:{HEX}{tail}");
            assert_eq!(parse(&s).err(), Some(MagnetError::BadEscape), "{tail}");
        }
        assert_eq!(
            parse("magnet:?xt=urn%3Gbtih%3A00").err(),
            Some(MagnetError::BadEscape)
        );
        // Unknown parameters are not looked at.
        let s = std::format!("magnet:?xt=urn:btih:{HEX}&foo=%zz&so=%");
        assert!(parse(&s).is_ok());

        let mut buf = [0u8; 8];
        assert_eq!(decode_into(b"%zz", &mut buf), Err(MagnetError::BadEscape));
        assert_eq!(decode_into(b"ab%4", &mut buf), Err(MagnetError::BadEscape));
        assert_eq!(decode_into(b"%", &mut buf), Err(MagnetError::BadEscape));
        assert_eq!(decoded_len(b"a%4g"), Err(MagnetError::BadEscape));
        let mut it = percent_decode(b"a%zzb");
        assert_eq!(it.next(), Some(Ok(b'a')));
        assert_eq!(it.next(), Some(Err(MagnetError::BadEscape)));
        assert_eq!(it.next(), None);
        assert_eq!(it.next(), None);
    }

    #[test]
    fn decode_buffers() {
        let mut buf = [0u8; 4];
        assert_eq!(decode_into(b"%41%42c", &mut buf), Ok(&b"ABc"[..]));
        assert_eq!(decode_into(b"a+b", &mut buf), Ok(&b"a+b"[..]));
        assert_eq!(
            decode_into_with(b"a+b", &mut buf, PlusMode::Space),
            Ok(&b"a b"[..])
        );
        assert_eq!(
            decode_into(b"abcde", &mut buf),
            Err(MagnetError::BufferTooSmall)
        );
        assert_eq!(decode_into(b"%41%42%43%44", &mut buf), Ok(&b"ABCD"[..]));
        assert_eq!(decode_into(b"", &mut []), Ok(&b""[..]));
        assert_eq!(decoded_len(b"%41%42c"), Ok(3));
        assert_eq!(decode_into(b"%ff%00", &mut buf), Ok(&[0xff, 0][..]));
    }

    #[test]
    fn not_magnet() {
        for s in [
            "",
            "magnet",
            "magnet:",
            "magnet:xt=urn:btih:",
            "http://x/?xt=1",
        ] {
            assert_eq!(parse(s).err(), Some(MagnetError::NotMagnet), "{s}");
        }
        assert_eq!(
            Magnet::parse(&[0xff; 16]).err(),
            Some(MagnetError::NotMagnet)
        );
    }

    #[test]
    fn over_long_uri() {
        let mut s = std::format!("magnet:?xt=urn:btih:{HEX}&dn=");
        let room = MagnetLimits::default().max_uri_len - s.len();
        s.extend(core::iter::repeat_n('a', room));
        assert!(parse(&s).is_ok(), "exactly at the limit");
        s.push('a');
        assert_eq!(parse(&s).err(), Some(MagnetError::TooLong));

        let small = MagnetLimits {
            max_uri_len: 40,
            ..MagnetLimits::DEFAULT
        };
        let s = std::format!("magnet:?xt=urn:btih:{HEX}");
        assert_eq!(
            Magnet::parse_with(s.as_bytes(), &small).err(),
            Some(MagnetError::TooLong)
        );
    }

    #[test]
    fn too_many_params() {
        let limits = MagnetLimits {
            max_params: 4,
            ..MagnetLimits::DEFAULT
        };
        let ok = std::format!("magnet:?xt=urn:btih:{HEX}&a&&b=1&c=2&");
        assert!(Magnet::parse_with(ok.as_bytes(), &limits).is_ok());
        let bad = std::format!("{ok}d=3");
        assert_eq!(
            Magnet::parse_with(bad.as_bytes(), &limits).err(),
            Some(MagnetError::TooManyParams)
        );
        let mut s = std::format!("magnet:?xt=urn:btih:{HEX}");
        for _ in 0..MagnetLimits::DEFAULT.max_params {
            s.push_str("&x");
        }
        assert_eq!(parse(&s).err(), Some(MagnetError::TooManyParams));
    }

    #[test]
    fn caps_drop_and_count() {
        let mut s = std::format!("magnet:?xt=urn:btih:{HEX}");
        for i in 0..MAX_TRACKERS + 5 {
            s.push_str(&std::format!("&tr=http://t{i}/"));
        }
        for i in 0..MAX_WEB_SEEDS + 2 {
            s.push_str(&std::format!("&ws=http://w{i}/"));
        }
        for i in 0..MAX_PEERS + 1 {
            s.push_str(&std::format!("&x.pe=10.0.0.{i}:1"));
        }
        let m = parse(&s).expect("parse");
        assert_eq!(m.trackers().len(), MAX_TRACKERS);
        assert_eq!(m.tracker(0), Some(&b"http://t0/"[..]));
        assert_eq!(m.web_seeds().len(), MAX_WEB_SEEDS);
        assert_eq!(m.peers().count(), MAX_PEERS);
        assert_eq!(
            m.dropped(),
            Dropped {
                trackers: 5,
                web_seeds: 2,
                peers: 1
            }
        );
        assert_eq!(m.dropped().total(), 8);
        assert!(m.is_truncated());
    }

    #[test]
    fn write_then_parse() {
        let name = "Ubuntu 24.04 [x86+64] ü/&=%";
        let trackers: [&[u8]; 3] = [
            b"udp://tracker.example:1337/announce",
            b"",
            b"http://a/b?c=d&e+f",
        ];
        let mut out = String::new();
        write_magnet(&mut out, &ih(), Some(name.as_bytes()), trackers).expect("write");
        assert!(out.is_ascii());
        assert!(out.starts_with(&std::format!(
            "magnet:?xt=urn:btih:{HEX}&dn=Ubuntu%2024.04%20"
        )));
        assert!(out.contains("&tr=udp%3A%2F%2Ftracker.example%3A1337%2Fannounce"));
        let m = parse(&out).expect("parse");
        assert_eq!(m.info_hash(), ih());
        let mut buf = [0u8; 64];
        assert_eq!(m.name_into(&mut buf).expect("name"), Some(name.as_bytes()));
        assert_eq!(m.trackers().len(), 2);
        assert_eq!(dec(m.tracker(0).expect("t0")), trackers[0]);
        assert_eq!(dec(m.tracker(1).expect("t1")), trackers[2]);

        let mut bare = String::new();
        write_magnet(&mut bare, &ih(), None, []).expect("write");
        assert_eq!(bare, std::format!("magnet:?xt=urn:btih:{HEX}"));
    }

    #[test]
    fn write_uri_canonical() {
        let s = std::format!(
            "magnet:?xt=urn:btih:{B32}&dn=a+b&tr=udp://t:1/a&ws=http://w/x+y&x.pe=[::1]:5&foo=bar"
        );
        let m = parse(&s).expect("parse");
        let mut out = String::new();
        m.write_uri(&mut out).expect("write");
        assert_eq!(
            out,
            std::format!(
                "magnet:?xt=urn:btih:{HEX}&dn=a%20b&tr=udp%3A%2F%2Ft%3A1%2Fa\
                 &ws=http%3A%2F%2Fw%2Fx%2By&x.pe=[::1]:5"
            )
        );
        assert_eq!(std::format!("{m}"), out);
        let again = parse(&out).expect("reparse");
        assert_eq!(again.info_hash(), m.info_hash());
        assert_eq!(
            again.peers().collect::<StdVec<_>>(),
            m.peers().collect::<StdVec<_>>()
        );
    }

    #[test]
    fn errors_display() {
        for e in [
            MagnetError::NotMagnet,
            MagnetError::TooLong,
            MagnetError::TooManyParams,
            MagnetError::MissingInfoHash,
            MagnetError::BadInfoHash,
            MagnetError::V2Unsupported,
            MagnetError::BadEscape,
            MagnetError::BufferTooSmall,
        ] {
            assert!(!std::format!("{e}").is_empty());
        }
    }

    /// Exercises every accessor of a parsed magnet; must never panic.
    fn exercise(m: &Magnet<'_>) {
        let mut buf = [0u8; 8192];
        let _ = m.name_into(&mut buf).expect("parsed values decode");
        for raw in m
            .trackers()
            .iter()
            .chain(m.web_seeds())
            .chain(m.peers_raw())
        {
            assert!(decode_into(raw, &mut buf).is_ok());
        }
        let _ = m.peers().count();
        let mut out = String::new();
        m.write_uri(&mut out).expect("write");
        let again = Magnet::parse(out.as_bytes());
        if out.len() <= MagnetLimits::DEFAULT.max_uri_len {
            assert_eq!(again.map(|a| a.info_hash()), Ok(m.info_hash()));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(m) = Magnet::parse(&bytes) {
                exercise(&m);
            }
            let _ = decoded_len(&bytes);
            let _ = parse_peer(&bytes);
        }

        #[test]
        fn arbitrary_queries_never_panic(
            parts in proptest::collection::vec(
                (
                    prop::sample::select(&["xt", "xt.1", "dn", "tr", "ws", "x.pe", "zz", ""][..]),
                    "(urn:btih:|urn:btmh:|urn%3Abtih%3A)?[0-9a-zA-Z%+:/.\\[\\]]{0,48}",
                ),
                0..12,
            ),
        ) {
            let mut s = String::from("magnet:?");
            for (k, v) in &parts {
                s.push_str(k);
                s.push('=');
                s.push_str(v);
                s.push('&');
            }
            if let Ok(m) = Magnet::parse_str(&s) {
                exercise(&m);
            };
        }

        #[test]
        fn write_parse_round_trip(
            hash in any::<[u8; 20]>(),
            name in proptest::collection::vec(any::<u8>(), 0..64),
            trackers in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..64),
                0..MAX_TRACKERS,
            ),
        ) {
            let info_hash = InfoHash(hash);
            let mut out = String::new();
            write_magnet(&mut out, &info_hash, Some(&name), trackers.iter().map(|t| t.as_slice()))
                .expect("write");
            let m = Magnet::parse_str(&out).expect("parse");
            prop_assert_eq!(m.info_hash(), info_hash);
            let mut buf = [0u8; 64];
            let got = m.name_into(&mut buf).expect("name");
            prop_assert_eq!(got, (!name.is_empty()).then_some(name.as_slice()));
            let want: StdVec<&[u8]> =
                trackers.iter().map(|t| t.as_slice()).filter(|t| !t.is_empty()).collect();
            prop_assert_eq!(m.trackers().len(), want.len());
            for (raw, want) in m.trackers().iter().zip(want) {
                prop_assert_eq!(decode_into(raw, &mut buf).expect("tracker"), want);
            }
            prop_assert!(!m.is_truncated());
        }
    }
}
