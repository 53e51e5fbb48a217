//! The bencode encoder: writes into any `embedded_io::Write` (a `&mut [u8]`, a socket,
//! or a `Vec<u8>` with the `alloc` feature). It does not sort keys for the caller:
//! write dictionary keys in sorted order to produce canonical bencode.

use super::{Kind, Value, DEPTH_CAP};
use embedded_io::Write;

/// Writes bencode values one token at a time.
#[derive(Debug)]
pub struct Encoder<W: Write> {
    w: W,
}

impl<W: Write> Encoder<W> {
    /// An encoder over `w`.
    pub fn new(w: W) -> Self {
        Self { w }
    }
    /// Gives the writer back.
    pub fn into_inner(self) -> W {
        self.w
    }
    /// `i<n>e`
    pub fn int(&mut self, n: i64) -> Result<(), W::Error> {
        let mut tmp = [0u8; 22];
        tmp[0] = b'i';
        let len = write_i64(n, &mut tmp[1..]);
        tmp[1 + len] = b'e';
        self.w.write_all(&tmp[..len + 2])
    }
    /// `<len>:<bytes>`
    pub fn bytes(&mut self, b: &[u8]) -> Result<(), W::Error> {
        let mut tmp = [0u8; 21];
        let len = write_u64(b.len() as u64, &mut tmp);
        tmp[len] = b':';
        self.w.write_all(&tmp[..=len])?;
        self.w.write_all(b)
    }
    /// Starts a list; close it with [`Encoder::end`].
    pub fn list(&mut self) -> Result<(), W::Error> {
        self.w.write_all(b"l")
    }
    /// Starts a dictionary; close it with [`Encoder::end`].
    pub fn dict(&mut self) -> Result<(), W::Error> {
        self.w.write_all(b"d")
    }
    /// Closes the innermost list or dictionary.
    pub fn end(&mut self) -> Result<(), W::Error> {
        self.w.write_all(b"e")
    }
    /// Writes already-encoded bencode as it is (for example an `info` dictionary's raw
    /// span, which must never be re-encoded).
    pub fn raw(&mut self, b: &[u8]) -> Result<(), W::Error> {
        self.w.write_all(b)
    }
    /// A key and an integer value.
    pub fn key_int(&mut self, k: &[u8], n: i64) -> Result<(), W::Error> {
        self.bytes(k)?;
        self.int(n)
    }
    /// A key and a string value.
    pub fn key_bytes(&mut self, k: &[u8], v: &[u8]) -> Result<(), W::Error> {
        self.bytes(k)?;
        self.bytes(v)
    }
}

fn write_u64(mut n: u64, out: &mut [u8]) -> usize {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = tmp.len() - i;
    out[..len].copy_from_slice(&tmp[i..]);
    len
}

fn write_i64(n: i64, out: &mut [u8]) -> usize {
    if n < 0 {
        out[0] = b'-';
        1 + write_u64(n.unsigned_abs(), &mut out[1..])
    } else {
        write_u64(n as u64, out)
    }
}

/// Writes a decoded value back out in canonical form (minimal string length prefixes),
/// keeping its dictionary key order. Iterative: no recursion, whatever the depth.
pub fn encode_value<W: Write>(v: &Value<'_>, enc: &mut Encoder<W>) -> Result<(), W::Error> {
    let tokens = v.tokens;
    let last = v.token().next().min(tokens.len());
    // Token indices at which an open container ends.
    let mut closes: heapless::Vec<usize, { DEPTH_CAP as usize + 1 }> = heapless::Vec::new();
    let mut i = v.idx;
    while i < last {
        while closes.last() == Some(&i) {
            closes.pop();
            enc.end()?;
        }
        let cur = v.at(i);
        match cur.kind() {
            Kind::Int => enc.int(cur.as_int().unwrap_or_default())?,
            Kind::Bytes => enc.bytes(cur.as_bytes().unwrap_or_default())?,
            Kind::List | Kind::Dict => {
                if cur.kind() == Kind::List {
                    enc.list()?;
                } else {
                    enc.dict()?;
                }
                let end = cur.token().next();
                if end == i + 1 {
                    enc.end()?;
                } else {
                    // Depth of a decoded document is at most DEPTH_CAP.
                    let _ = closes.push(end);
                }
            }
        }
        i += 1;
    }
    while closes.pop().is_some() {
        enc.end()?;
    }
    Ok(())
}
