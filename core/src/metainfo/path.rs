//! Sanitizing file paths from torrents so that no file can land outside the download
//! directory.
//!
//! A path element from a torrent is raw bytes. It becomes a file name as follows:
//! - empty elements, `.` and `..` are dropped (they would address the parent);
//! - `/`, `\`, NUL and other control characters, and the characters Windows forbids
//!   (`:*?"<>|`), become `_`, so an element can never hold a separator or a drive;
//! - bytes that are not UTF-8 become `_` (names are shown to people and sent as JSON);
//! - names that Windows reserves for devices (`CON`, `NUL`, `COM1`, ...) get a `_`
//!   in front (a NAS shares its disk over SMB);
//! - an element is cut to 255 bytes (the usual file-name limit) on a character
//!   boundary.
//!
//! The result is a relative path made only of ordinary names joined with `/`. This is
//! one of the three conformant answers libtorrent and Transmission give (rename,
//! replace, reject); two files that end up with the same path are told apart by
//! [`super::Metainfo::layout`].

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
}

fn is_dropped(raw: &[u8]) -> bool {
    raw.is_empty() || raw == b"." || raw == b".."
}

fn bad_char(c: char) -> bool {
    c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|')
}

fn is_reserved(raw: &[u8]) -> bool {
    let stem = raw.split(|&b| b == b'.').next().unwrap_or_default();
    let up = |i: usize| stem.get(i).map(u8::to_ascii_uppercase);
    match stem.len() {
        3 => matches!(
            [up(0), up(1), up(2)],
            [Some(b'C'), Some(b'O'), Some(b'N')]
                | [Some(b'P'), Some(b'R'), Some(b'N')]
                | [Some(b'A'), Some(b'U'), Some(b'X')]
                | [Some(b'N'), Some(b'U'), Some(b'L')]
        ),
        4 => {
            let head = [up(0), up(1), up(2)];
            let com = head == [Some(b'C'), Some(b'O'), Some(b'M')];
            let lpt = head == [Some(b'L'), Some(b'P'), Some(b'T')];
            (com || lpt) && matches!(stem[3], b'1'..=b'9')
        }
        _ => false,
    }
}

/// Writes one sanitized element; returns `false` (writing nothing) for a dropped one.
fn write_element(raw: &[u8], out: &mut Out<'_>) -> Result<bool, PathError> {
    if is_dropped(raw) {
        return Ok(false);
    }
    let start = out.len;
    if is_reserved(raw) {
        out.push(b"_")?;
    }
    let mut tmp = [0u8; 4];
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            let c = if bad_char(c) { '_' } else { c };
            let enc = c.encode_utf8(&mut tmp).as_bytes();
            if out.len - start + enc.len() > MAX_ELEMENT_LEN {
                return Ok(true);
            }
            out.push(enc)?;
        }
        for _ in chunk.invalid() {
            if out.len - start + 1 > MAX_ELEMENT_LEN {
                return Ok(true);
            }
            out.push(b"_")?;
        }
    }
    Ok(true)
}

/// Whether a torrent `name` leaves a usable directory or file name once sanitized.
pub fn is_usable_name(raw: &[u8]) -> bool {
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
pub fn join_sanitized<'a, 'o>(
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
        let long = [b'a'; 400];
        assert_eq!(join(&[&long], false).len(), MAX_ELEMENT_LEN);
        let mut small = [0u8; 3];
        assert_eq!(
            join_sanitized([&b"abcd"[..]].into_iter(), false, &mut small),
            Err(PathError::BufferTooSmall)
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
}
