//! Sanitizing file paths from torrents so that no file can land outside the download
//! directory, and telling when two names are one file on the disks a NAS serves.
//!
//! A path element from a torrent is raw bytes. It becomes a file name as follows:
//! - empty elements, `.` and `..` are dropped (they would address the parent);
//! - `/`, `\`, NUL and other control characters, and the characters Windows forbids
//!   (`:*?"<>|`), become `_`, so an element can never hold a separator or a drive;
//! - bytes that are not UTF-8 become `_` (names are shown to people and sent as JSON);
//! - default-ignorable code points (Unicode's `Default_Ignorable_Code_Point`: zero-width
//!   spaces and joiners, bidi controls, variation selectors, the BOM, tags, ...) are
//!   dropped: HFS+ skips several of them when it compares names (U+200C-U+200F,
//!   U+202A-U+202E, U+206A-U+206F, U+FEFF) and Linux's casefolding file systems skipped
//!   them all, so `.bt` U+200C `core` would be `.btcore` there; the bidi controls also
//!   disguise extensions (`a` U+202E `gpj.exe` shows as `aexe.jpg`), which is why
//!   libtorrent drops those. Names that need a joiner to render (Persian, emoji
//!   sequences) lose it;
//! - an element is cut to 255 bytes (the usual file-name limit) on a character
//!   boundary;
//! - trailing dots and spaces are removed (Windows and SMB drop them, so `a.` and `a`
//!   would be one file there; Transmission does the same), and an element left empty
//!   becomes `_`;
//! - names that Windows reserves for devices get a `_` in front (a NAS shares its
//!   disk over SMB): `CON`, `PRN`, `AUX`, `NUL`, `CLOCK$`, `CONIN$`, `CONOUT$`,
//!   `COM0`-`COM9`, `LPT0`-`LPT9` and `COM¹²³`/`LPT¹²³`, in any case, alone or before
//!   an extension (`nul.tar.gz`), trailing spaces of the stem ignored.
//!
//! The result is a relative path made only of ordinary names joined with `/`. This is
//! one of the three conformant answers libtorrent and Transmission give (rename,
//! replace, reject); two files that end up with the same path are told apart by
//! [`super::Metainfo::layout`].
//!
//! With the `alloc` feature, [`push_name_key`] gives the key under which a
//! case-insensitive, normalization-insensitive file system (Windows, SMB, macOS, ext4
//! with casefolding) files a sanitized name: two names with the same key are one file
//! there. [`same_name`] compares two raw names that way.

use core::fmt;

/// Longest path element written, in bytes.
pub const MAX_ELEMENT_LEN: usize = 255;

/// Why a path could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// The output buffer is too small.
    BufferTooSmall,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("path buffer too small")
    }
}

/// A bounded writer over a caller buffer.
struct Out<'o> {
    buf: &'o mut [u8],
    len: usize,
}

impl Out<'_> {
    fn push(&mut self, s: &[u8]) -> Result<(), PathError> {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(PathError::BufferTooSmall)?
            .copy_from_slice(s);
        self.len = end;
        Ok(())
    }

    /// Drops the trailing dots and spaces written since `start`.
    fn trim_end(&mut self, start: usize) {
        while self.len > start && trailing(self.buf[self.len - 1]) {
            self.len -= 1;
        }
    }
}

fn is_dropped(raw: &[u8]) -> bool {
    raw.is_empty() || raw == b"." || raw == b".."
}

/// Unicode's `Default_Ignorable_Code_Point` ranges (DerivedCoreProperties, Unicode
/// 16.0): invisible characters that file systems may skip when they compare names.
const DEFAULT_IGNORABLE: [(u32, u32); 17] = [
    (0x00ad, 0x00ad),
    (0x034f, 0x034f),
    (0x061c, 0x061c),
    (0x115f, 0x1160),
    (0x17b4, 0x17b5),
    (0x180b, 0x180f),
    (0x200b, 0x200f),
    (0x202a, 0x202e),
    (0x2060, 0x206f),
    (0x3164, 0x3164),
    (0xfe00, 0xfe0f),
    (0xfeff, 0xfeff),
    (0xffa0, 0xffa0),
    (0xfff0, 0xfff8),
    (0x1bca0, 0x1bca3),
    (0x1d173, 0x1d17a),
    (0xe0000, 0xe0fff),
];

/// Whether `c` is a default-ignorable code point (see the module docs).
fn is_ignorable(c: char) -> bool {
    let cp = u32::from(c);
    cp >= 0xad
        && DEFAULT_IGNORABLE
            .binary_search_by(|&(lo, hi)| {
                if hi < cp {
                    core::cmp::Ordering::Less
                } else if lo > cp {
                    core::cmp::Ordering::Greater
                } else {
                    core::cmp::Ordering::Equal
                }
            })
            .is_ok()
}

fn bad_char(c: char) -> bool {
    c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|')
}

/// Whether a sanitized name is one Windows keeps for a device (see the module docs).
fn is_reserved(name: &[u8]) -> bool {
    let stem = name.split(|&b| b == b'.').next().unwrap_or_default();
    let end = stem.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    let stem = &stem[..end];
    const WHOLE: [&[u8]; 7] = [
        b"CON", b"PRN", b"AUX", b"NUL", b"CLOCK$", b"CONIN$", b"CONOUT$",
    ];
    if WHOLE.iter().any(|w| stem.eq_ignore_ascii_case(w)) {
        return true;
    }
    if stem.len() < 4 {
        return false;
    }
    let (head, tail) = stem.split_at(3);
    (head.eq_ignore_ascii_case(b"COM") || head.eq_ignore_ascii_case(b"LPT"))
        // A digit, or a superscript one, two or three (U+00B9, U+00B2, U+00B3).
        && matches!(tail, [b'0'..=b'9'] | [0xc2, 0xb9 | 0xb2 | 0xb3])
}

/// Whether a byte ends a name that Windows would shorten.
fn trailing(b: u8) -> bool {
    b == b'.' || b == b' '
}

/// Writes one sanitized element; returns `false` (writing nothing) for a dropped one.
fn write_element(raw: &[u8], out: &mut Out<'_>) -> Result<bool, PathError> {
    if is_dropped(raw) {
        return Ok(false);
    }
    let start = out.len;
    let mut tmp = [0u8; 4];
    'chars: for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            if is_ignorable(c) {
                continue;
            }
            let c = if bad_char(c) { '_' } else { c };
            let enc = c.encode_utf8(&mut tmp).as_bytes();
            if out.len - start + enc.len() > MAX_ELEMENT_LEN {
                break 'chars;
            }
            out.push(enc)?;
        }
        for _ in chunk.invalid() {
            if out.len - start + 1 > MAX_ELEMENT_LEN {
                break 'chars;
            }
            out.push(b"_")?;
        }
    }
    out.trim_end(start);
    if out.len == start {
        out.push(b"_")?;
    }
    if is_reserved(&out.buf[start..out.len]) {
        // Room for the `_` in front: the last character goes if the name is full.
        if out.len - start == MAX_ELEMENT_LEN {
            out.len -= 1;
            while out.len > start && out.buf[out.len] & 0xc0 == 0x80 {
                out.len -= 1;
            }
        }
        out.push(b"_")?;
        out.buf[start..out.len].rotate_right(1);
        out.trim_end(start);
    }
    Ok(true)
}

/// Whether a torrent `name` leaves a usable directory or file name once sanitized.
pub(crate) fn is_usable_name(raw: &[u8]) -> bool {
    !is_dropped(raw)
}

/// Writes the sanitized form of one element into `out`; an element that is dropped
/// (empty, `.` or `..`) writes nothing and returns an empty string.
pub fn sanitize_element<'o>(raw: &[u8], out: &'o mut [u8]) -> Result<&'o str, PathError> {
    let mut o = Out { buf: out, len: 0 };
    write_element(raw, &mut o)?;
    let len = o.len;
    Ok(core::str::from_utf8(&out[..len]).unwrap_or_default())
}

/// Joins the sanitized elements with `/` into `out`. The first element (the torrent
/// name) is always kept; when `needs_leaf` is set and every further element was
/// dropped, a `_` leaf is added so that a file never takes its directory's path.
pub(crate) fn join_sanitized<'a, 'o>(
    elements: impl Iterator<Item = &'a [u8]>,
    needs_leaf: bool,
    out: &'o mut [u8],
) -> Result<&'o str, PathError> {
    let mut o = Out { buf: out, len: 0 };
    let mut written = 0usize;
    for e in elements {
        let mark = o.len;
        if written > 0 {
            o.push(b"/")?;
        }
        if write_element(e, &mut o)? {
            written += 1;
        } else {
            o.len = mark;
        }
    }
    if written == 0 || (needs_leaf && written == 1) {
        if written > 0 {
            o.push(b"/")?;
        }
        o.push(b"_")?;
    }
    let len = o.len;
    Ok(core::str::from_utf8(&out[..len]).unwrap_or_default())
}

/// One character folded the way case-insensitive file systems compare names: lowered,
/// raised and lowered again, so that every pair Unicode's case folding joins gets one
/// form (`K`, `k` and the Kelvin sign; `ς`, `σ` and `Σ`; `ſ` and `s`; `ẞ`, `ß` and
/// `ss`). It joins a few pairs more than NTFS's upcase table does (`ß` and `ss`): a
/// name taken for another is renamed, which costs nothing.
#[cfg(feature = "alloc")]
fn fold(c: char, mut emit: impl FnMut(char)) {
    for l in c.to_lowercase() {
        for u in l.to_uppercase() {
            u.to_lowercase().for_each(&mut emit);
        }
    }
}

/// Appends to `out` the key under which a case-insensitive file system files the
/// sanitized name `name` (see the module docs): Unicode case folded, canonically
/// decomposed (NFD), so `Ä`, `ä` and `a` + U+0308 have one key. Two names with the
/// same key are one file on Windows, SMB, macOS or ext4 with casefolding.
#[cfg(feature = "alloc")]
pub fn push_name_key(name: &str, out: &mut alloc::vec::Vec<u8>) {
    if name.is_ascii() {
        out.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        return;
    }
    let mut chars = alloc::vec::Vec::with_capacity(name.len());
    for c in name.chars() {
        super::unicode::decompose(c, |d| {
            fold(d, |f| super::unicode::decompose(f, |g| chars.push(g)))
        });
    }
    super::unicode::reorder(&mut chars);
    let mut tmp = [0u8; 4];
    for c in chars {
        out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
    }
}

/// Whether two raw path elements become one file on a case-insensitive,
/// normalization-insensitive file system once sanitized.
#[cfg(feature = "alloc")]
pub fn same_name(a: &[u8], b: &[u8]) -> bool {
    let key = |raw: &[u8]| {
        let mut buf = [0u8; MAX_ELEMENT_LEN + 1];
        let mut k = alloc::vec::Vec::new();
        push_name_key(sanitize_element(raw, &mut buf).unwrap_or_default(), &mut k);
        k
    };
    key(a) == key(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(parts: &[&[u8]], leaf: bool) -> std::string::String {
        let mut buf = [0u8; 1024];
        join_sanitized(parts.iter().copied(), leaf, &mut buf)
            .expect("fits")
            .into()
    }
    extern crate std;

    #[test]
    fn hostile_elements_stay_inside() {
        assert_eq!(
            join(&[b"t", b"..", b"..", b"etc", b"passwd"], true),
            "t/etc/passwd"
        );
        assert_eq!(join(&[b"t", b"/etc/passwd"], true), "t/_etc_passwd");
        assert_eq!(join(&[b"t", b"C:\\win", b"a\0b"], true), "t/C__win/a_b");
        assert_eq!(join(&[b"t", b"", b"."], true), "t/_");
        assert_eq!(join(&[b"..", b"x"], false), "x");
        assert_eq!(join(&[b"t", b"\xff\xfeok"], true), "t/__ok");
        assert_eq!(
            join(&[b"t", b"CON.txt", b"com1", b"COMA"], true),
            "t/_CON.txt/_com1/COMA"
        );
        assert_eq!(join(&[b"t", "é/ü".as_bytes()], true), "t/é_ü");
        // What Windows would shorten or take for a device.
        assert_eq!(join(&[b"t", b"a. .", b"...", b" "], true), "t/a/_/_");
        assert_eq!(
            join(
                &[b"t", b"CONIN$", b"conout$.x", b"Clock$", b"nul .txt"],
                true
            ),
            "t/_CONIN$/_conout$.x/_Clock$/_nul .txt"
        );
        assert_eq!(
            join(
                &[b"t", "COM¹".as_bytes(), b"lpt0.a", b"COM10", b"CONX"],
                true
            ),
            "t/_COM¹/_lpt0.a/COM10/CONX"
        );
        // A device name at the longest: the `_` takes the last character's place.
        let mut dev = b"AUX.".to_vec();
        dev.extend_from_slice(&[b'x'; 260]);
        let got = join(&[&dev], false);
        assert_eq!(got.len(), MAX_ELEMENT_LEN);
        assert!(got.starts_with("_AUX.xx"));
        let long = [b'a'; 400];
        assert_eq!(join(&[&long], false).len(), MAX_ELEMENT_LEN);
        let mut small = [0u8; 3];
        assert_eq!(
            join_sanitized([&b"abcd"[..]].into_iter(), false, &mut small),
            Err(PathError::BufferTooSmall)
        );
    }

    /// Code points that file systems ignore in names (HFS+ skips U+200C-U+200F,
    /// U+202A-U+202E, U+206A-U+206F and U+FEFF when it compares names; Linux's
    /// casefolding ext4 and f2fs skipped every default-ignorable one) are dropped, so
    /// that `.bt` U+200C `core` cannot be `.btcore` there behind our back; the bidi
    /// controls among them also spoof extensions (`a` U+202E `gpj.exe`).
    #[test]
    fn ignorable_code_points_are_dropped() {
        assert_eq!(
            join(&["t".as_bytes(), "a\u{202e}gpj.exe".as_bytes()], true),
            "t/agpj.exe"
        );
        assert_eq!(join(&[".bt\u{200c}core".as_bytes()], false), ".btcore");
        assert_eq!(
            join(&["\u{feff}x\u{ad}\u{34f}\u{61c}\u{115f}\u{17b4}\u{180b}\u{180e}\u{200b}\u{2060}\u{2065}\u{206f}\u{3164}\u{fe0f}\u{ffa0}\u{fff0}\u{1bca0}\u{1d173}\u{e0001}\u{e01ef}\u{e0fff}y".as_bytes()], false),
            "xy"
        );
        // What is left is sanitized as a whole: empty, dots, device names.
        assert_eq!(join(&["t".as_bytes(), "\u{200b}".as_bytes()], true), "t/_");
        assert_eq!(
            join(&["t".as_bytes(), "..\u{200b}".as_bytes()], true),
            "t/_"
        );
        assert_eq!(
            join(&["t".as_bytes(), "CON\u{200d}.txt".as_bytes()], true),
            "t/_CON.txt"
        );
        // Neighbours of the ignorable ranges stay.
        assert_eq!(
            join(
                &["\u{ac}\u{34e}\u{200a}\u{2010}\u{fff9}\u{1d172}".as_bytes()],
                false
            ),
            "\u{ac}\u{34e}\u{200a}\u{2010}\u{fff9}\u{1d172}"
        );
    }

    #[test]
    fn names() {
        assert!(!is_usable_name(b".."));
        assert!(!is_usable_name(b""));
        assert!(is_usable_name(b"/"));
        let mut buf = [0u8; 8];
        assert_eq!(sanitize_element(b"..", &mut buf), Ok(""));
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn same_names() {
        assert!(same_name(b".BTCORE", b".btcore"));
        assert!(same_name(b".btcore. ", b".btcore"));
        assert!(same_name("\u{c5}".as_bytes(), "a\u{30a}".as_bytes()));
        assert!(
            same_name("\u{212b}".as_bytes(), "\u{e5}".as_bytes()),
            "Angstrom sign"
        );
        assert!(!same_name(b"a", b"b"));
        assert!(!same_name(b"con", b"_con.x"));
        assert!(same_name(".bt\u{200c}core".as_bytes(), b".btcore"));
        assert!(same_name("\u{feff}A\u{200d}".as_bytes(), b"a"));
    }
}
