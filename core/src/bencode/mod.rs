//! Bencode (BEP 3), decoded into a flat token table with no allocator.
//!
//! # Design
//!
//! [`decode`] walks the input once, iteratively (an explicit stack bounded by
//! [`Limits::max_depth`], so 100,000 nested lists are a clean [`ErrorKind::DepthExceeded`]
//! and never a stack overflow), and writes one [`Token`] per value into a buffer the
//! caller provides (or a `Vec` with the `alloc` feature, grown only as real tokens are
//! found). The atoms — integers and string length prefixes — are read with `nom`.
//!
//! Every token keeps its value's raw byte span, so [`Value::raw`] of the `info`
//! dictionary is exactly the bytes the info-hash is computed over: nothing is ever
//! re-encoded to be hashed. Strings are borrowed from the input, never copied.
//!
//! What is accepted and what is not (BEP 3 "bencoding"):
//! - integers: `-0`, leading zeros (`i03e`) and a lone `-` are errors; values must fit
//!   an `i64`.
//! - string lengths: leading zeros are tolerated (real torrents have them); a length
//!   beyond the remaining input is [`ErrorKind::UnexpectedEof`] found before anything is
//!   allocated or read.
//! - dictionaries: keys must be strings; unsorted keys are accepted (real torrents have
//!   them), duplicate keys are rejected ([`ErrorKind::DuplicateKey`]): with duplicates,
//!   two parsers could see two different torrents behind one info-hash.
//! - trailing bytes after the root value are reported through [`Document::consumed`];
//!   [`Limits::allow_trailing`] says whether they are an error.

mod encode;

pub use encode::{encode_value, Encoder};

use core::fmt;
use nom::{bytes::complete::take_while1, IResult, Parser};

/// Hard cap on nesting depth, whatever the limits say (the explicit stack lives on the
/// caller's stack: 128 entries of 12 bytes).
pub(crate) const DEPTH_CAP: u32 = 128;

/// Bounds applied while decoding. The defaults follow libtorrent's `load_torrent_limits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of lists and dictionaries (at most `DEPTH_CAP`). Default 100.
    pub max_depth: u32,
    /// Most tokens (values) in one document. Default 3,000,000.
    pub max_tokens: u32,
    /// Longest string. Default 64 MiB (never beyond what the input holds anyway).
    pub max_string_len: usize,
    /// Whether bytes after the root value are accepted. Default `true`: `.torrent`
    /// files with trailing bytes exist and libtorrent loads them.
    pub allow_trailing: bool,
    /// Budget of key comparisons spent on finding duplicates in dictionaries whose keys
    /// are not sorted (sorted keys cost one comparison each). Default 4,000,000.
    pub max_unsorted_work: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 100,
            max_tokens: 3_000_000,
            max_string_len: 64 << 20,
            allow_trailing: true,
            max_unsorted_work: 4_000_000,
        }
    }
}

/// What went wrong, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset in the input where the problem was found.
    pub offset: usize,
    /// The cause.
    pub kind: ErrorKind,
}

/// The cause of a [`DecodeError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input ends inside a value (or is empty).
    UnexpectedEof,
    /// A digit was expected (integer body, string length, dictionary key).
    ExpectedDigit,
    /// A `:` was expected after a string length.
    ExpectedColon,
    /// A value (`i`, `l`, `d` or a digit) was expected.
    ExpectedValue,
    /// An integer or a string length does not fit.
    Overflow,
    /// An integer with a leading zero (`i03e`).
    LeadingZero,
    /// The integer `-0`.
    NegativeZero,
    /// Nesting deeper than [`Limits::max_depth`].
    DepthExceeded,
    /// More values than [`Limits::max_tokens`] or the token buffer holds.
    TooManyTokens,
    /// A string longer than [`Limits::max_string_len`].
    StringTooLong,
    /// The same key twice in one dictionary.
    DuplicateKey,
    /// Bytes after the root value while [`Limits::allow_trailing`] is off.
    TrailingData,
    /// The input is larger than 4 GiB.
    InputTooLarge,
    /// Too many unsorted dictionary keys to check for duplicates within the budget.
    TooComplex,
}

impl ErrorKind {
    /// A short description.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnexpectedEof => "unexpected end of input",
            Self::ExpectedDigit => "expected digit",
            Self::ExpectedColon => "expected ':' after string length",
            Self::ExpectedValue => "expected value (list, dict, int or string)",
            Self::Overflow => "integer overflow",
            Self::LeadingZero => "integer with leading zero",
            Self::NegativeZero => "negative zero integer",
            Self::DepthExceeded => "nesting depth exceeded",
            Self::TooManyTokens => "too many values",
            Self::StringTooLong => "string too long",
            Self::DuplicateKey => "duplicate dictionary key",
            Self::TrailingData => "trailing data after the root value",
            Self::InputTooLarge => "input larger than 4 GiB",
            Self::TooComplex => "too many unsorted dictionary keys",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bencode: {} at byte {}", self.kind.as_str(), self.offset)
    }
}

impl core::error::Error for DecodeError {}

/// The kind of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `i...e`
    Int,
    /// `N:...`
    Bytes,
    /// `l...e`
    List,
    /// `d...e`
    Dict,
}

const NEXT_MASK: u32 = (1 << 29) - 1;

/// One decoded value: its raw span, where its subtree ends in the token table, and for
/// strings where the data starts (for containers, how many items it holds).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Token {
    start: u32,
    end: u32,
    /// Index of the token after this value's subtree, and the kind in the top 3 bits.
    next_kind: u32,
    aux: u32,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}..{}", self.kind(), self.start, self.end)
    }
}

impl Token {
    fn new(kind: Kind, start: usize, aux: u32) -> Self {
        let k = match kind {
            Kind::Int => 0,
            Kind::Bytes => 1,
            Kind::List => 2,
            Kind::Dict => 3,
        };
        Self {
            start: start as u32,
            end: start as u32,
            next_kind: k << 29,
            aux,
        }
    }
    fn kind(&self) -> Kind {
        match self.next_kind >> 29 {
            0 => Kind::Int,
            1 => Kind::Bytes,
            2 => Kind::List,
            _ => Kind::Dict,
        }
    }
    fn next(&self) -> usize {
        (self.next_kind & NEXT_MASK) as usize
    }
    fn set_next(&mut self, next: usize) {
        self.next_kind = (self.next_kind & !NEXT_MASK) | (next as u32 & NEXT_MASK);
    }
}

/// Where tokens go while decoding: a caller's slice, or a `Vec` with `alloc`.
trait TokenStore {
    fn push(&mut self, t: Token) -> bool;
    fn len(&self) -> usize;
    fn get_mut(&mut self, i: usize) -> Option<&mut Token>;
    fn slice(&self) -> &[Token];
}

struct SliceStore<'t> {
    buf: &'t mut [Token],
    len: usize,
}

impl TokenStore for SliceStore<'_> {
    fn push(&mut self, t: Token) -> bool {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = t;
                self.len += 1;
                true
            }
            None => false,
        }
    }
    fn len(&self) -> usize {
        self.len
    }
    fn get_mut(&mut self, i: usize) -> Option<&mut Token> {
        self.buf[..self.len].get_mut(i)
    }
    fn slice(&self) -> &[Token] {
        &self.buf[..self.len]
    }
}

#[cfg(feature = "alloc")]
impl TokenStore for alloc::vec::Vec<Token> {
    fn push(&mut self, t: Token) -> bool {
        if self.try_reserve(1).is_err() {
            return false;
        }
        alloc::vec::Vec::push(self, t);
        true
    }
    fn len(&self) -> usize {
        alloc::vec::Vec::len(self)
    }
    fn get_mut(&mut self, i: usize) -> Option<&mut Token> {
        <[Token]>::get_mut(self, i)
    }
    fn slice(&self) -> &[Token] {
        self
    }
}

/// A decoded document: the input and its token table.
#[derive(Clone, Copy, Debug)]
pub struct Document<'a> {
    buf: &'a [u8],
    tokens: &'a [Token],
    consumed: usize,
}

impl<'a> Document<'a> {
    /// The root value.
    pub fn root(&self) -> Value<'a> {
        Value {
            buf: self.buf,
            tokens: self.tokens,
            idx: 0,
        }
    }
    /// Bytes taken by the root value; anything after it is trailing data.
    pub const fn consumed(&self) -> usize {
        self.consumed
    }
    /// Number of tokens (values) in the document.
    pub const fn token_count(&self) -> usize {
        self.tokens.len()
    }
}

/// Decodes `buf` into the caller's token buffer. Needs no allocator: a document of `n`
/// values needs `n` tokens (16 bytes each); a full buffer is [`ErrorKind::TooManyTokens`].
pub fn decode<'a>(
    buf: &'a [u8],
    tokens: &'a mut [Token],
    limits: &Limits,
) -> Result<Document<'a>, DecodeError> {
    let mut store = SliceStore {
        buf: tokens,
        len: 0,
    };
    let consumed = decode_into(buf, &mut store, limits)?;
    let len = store.len;
    Ok(Document {
        buf,
        tokens: &store.buf[..len],
        consumed,
    })
}

/// Decodes `buf` into a growable token vector (cleared first). The vector grows only
/// with values actually present, never with a length the input claims.
#[cfg(feature = "alloc")]
pub fn decode_vec<'a>(
    buf: &'a [u8],
    tokens: &'a mut alloc::vec::Vec<Token>,
    limits: &Limits,
) -> Result<Document<'a>, DecodeError> {
    tokens.clear();
    let consumed = decode_into(buf, tokens, limits)?;
    Ok(Document {
        buf,
        tokens,
        consumed,
    })
}

/// An open container on the decoder's stack.
#[derive(Clone, Copy)]
struct Open {
    token: u32,
    /// Items so far (for a dictionary, keys and values both count).
    items: u32,
    /// Token of the previous key (dictionaries).
    prev_key: u32,
    /// Whether an earlier key was out of order (then every key is checked against all).
    unsorted: bool,
}

fn err(offset: usize, kind: ErrorKind) -> DecodeError {
    DecodeError { offset, kind }
}

fn digits(input: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while1(|c: u8| c.is_ascii_digit()).parse(input)
}

/// Reads `i<digits>e` at `pos`; returns the end offset.
fn read_int(buf: &[u8], pos: usize) -> Result<usize, DecodeError> {
    let body = &buf[pos + 1..];
    let (neg, num) = match body.first() {
        Some(b'-') => (true, &body[1..]),
        Some(_) => (false, body),
        None => return Err(err(buf.len(), ErrorKind::UnexpectedEof)),
    };
    let num_at = buf.len() - num.len();
    let (rest, ds) = match digits(num) {
        Ok(r) => r,
        Err(_) if num.is_empty() => return Err(err(num_at, ErrorKind::UnexpectedEof)),
        Err(_) => return Err(err(num_at, ErrorKind::ExpectedDigit)),
    };
    let end_at = buf.len() - rest.len();
    match rest.first() {
        Some(b'e') => {}
        Some(_) => return Err(err(end_at, ErrorKind::ExpectedDigit)),
        None => return Err(err(end_at, ErrorKind::UnexpectedEof)),
    }
    if ds.len() > 1 && ds[0] == b'0' {
        return Err(err(num_at, ErrorKind::LeadingZero));
    }
    if neg && ds == b"0" {
        return Err(err(num_at, ErrorKind::NegativeZero));
    }
    if parse_i64(neg, ds).is_none() {
        return Err(err(num_at, ErrorKind::Overflow));
    }
    Ok(end_at + 1)
}

fn parse_i64(neg: bool, ds: &[u8]) -> Option<i64> {
    let mut v: i64 = 0;
    for &d in ds {
        let d = i64::from(d.wrapping_sub(b'0'));
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

/// Reads `<len>:` at `pos`; returns (data start, data end).
fn read_str(buf: &[u8], pos: usize, limits: &Limits) -> Result<(usize, usize), DecodeError> {
    let (rest, ds) = digits(&buf[pos..]).map_err(|_| err(pos, ErrorKind::ExpectedDigit))?;
    let colon = buf.len() - rest.len();
    match rest.first() {
        Some(b':') => {}
        Some(_) => return Err(err(colon, ErrorKind::ExpectedColon)),
        None => return Err(err(colon, ErrorKind::UnexpectedEof)),
    }
    // 64-bit on every target, so a claimed length past the input is "unexpected end"
    // on armv7 as on x86-64 (and only a length past u64 is an overflow).
    let mut len: u64 = 0;
    for &d in ds {
        len = len
            .checked_mul(10)
            .and_then(|l| l.checked_add(u64::from(d - b'0')))
            .ok_or(err(pos, ErrorKind::Overflow))?;
    }
    let start = colon + 1;
    if len > (buf.len() - start) as u64 {
        return Err(err(buf.len(), ErrorKind::UnexpectedEof));
    }
    // Fits: it is at most the remaining input length.
    let len = len as usize;
    if len > limits.max_string_len {
        return Err(err(pos, ErrorKind::StringTooLong));
    }
    Ok((start, start + len))
}

fn decode_into<S: TokenStore>(
    buf: &[u8],
    store: &mut S,
    limits: &Limits,
) -> Result<usize, DecodeError> {
    if u32::try_from(buf.len()).is_err() {
        return Err(err(0, ErrorKind::InputTooLarge));
    }
    let max_depth = limits.max_depth.min(DEPTH_CAP) as usize;
    let max_tokens = (limits.max_tokens as usize).min(NEXT_MASK as usize);
    let mut stack: heapless::Vec<Open, { DEPTH_CAP as usize }> = heapless::Vec::new();
    let mut unsorted_budget = limits.max_unsorted_work;
    let mut pos = 0usize;

    loop {
        let Some(&c) = buf.get(pos) else {
            return Err(err(pos, ErrorKind::UnexpectedEof));
        };
        let in_dict_key = stack.last().is_some_and(|o| {
            store.slice()[o.token as usize].kind() == Kind::Dict && o.items % 2 == 0
        });

        if c == b'e' {
            let Some(open) = stack.pop() else {
                return Err(err(pos, ErrorKind::ExpectedValue));
            };
            let next = store.len();
            let t = store
                .get_mut(open.token as usize)
                .ok_or(err(pos, ErrorKind::TooManyTokens))?;
            if t.kind() == Kind::Dict && open.items % 2 == 1 {
                return Err(err(pos, ErrorKind::ExpectedValue));
            }
            t.end = (pos + 1) as u32;
            t.set_next(next);
            t.aux = if t.kind() == Kind::Dict {
                open.items / 2
            } else {
                open.items
            };
            pos += 1;
        } else {
            if in_dict_key && !c.is_ascii_digit() {
                return Err(err(pos, ErrorKind::ExpectedDigit));
            }
            if store.len() >= max_tokens {
                return Err(err(pos, ErrorKind::TooManyTokens));
            }
            let idx = store.len();
            match c {
                b'i' => {
                    let end = read_int(buf, pos)?;
                    let mut t = Token::new(Kind::Int, pos, 0);
                    t.end = end as u32;
                    t.set_next(idx + 1);
                    push(store, t, pos)?;
                    pos = end;
                }
                b'0'..=b'9' => {
                    let (start, end) = read_str(buf, pos, limits)?;
                    let mut t = Token::new(Kind::Bytes, pos, start as u32);
                    t.end = end as u32;
                    t.set_next(idx + 1);
                    push(store, t, pos)?;
                    if in_dict_key {
                        check_key(buf, store, &mut stack, idx, pos, &mut unsorted_budget)?;
                    }
                    pos = end;
                }
                b'l' | b'd' => {
                    if stack.len() >= max_depth {
                        return Err(err(pos, ErrorKind::DepthExceeded));
                    }
                    let kind = if c == b'l' { Kind::List } else { Kind::Dict };
                    push(store, Token::new(kind, pos, 0), pos)?;
                    // Cannot fail: depth is checked against DEPTH_CAP above.
                    stack
                        .push(Open {
                            token: idx as u32,
                            items: 0,
                            prev_key: u32::MAX,
                            unsorted: false,
                        })
                        .map_err(|_| err(pos, ErrorKind::DepthExceeded))?;
                    pos += 1;
                    continue;
                }
                _ => return Err(err(pos, ErrorKind::ExpectedValue)),
            }
        }

        // A value is complete: count it in its parent, or finish.
        match stack.last_mut() {
            Some(parent) => parent.items += 1,
            None => {
                if pos < buf.len() && !limits.allow_trailing {
                    return Err(err(pos, ErrorKind::TrailingData));
                }
                return Ok(pos);
            }
        }
    }
}

fn push<S: TokenStore>(store: &mut S, t: Token, pos: usize) -> Result<(), DecodeError> {
    if store.push(t) {
        Ok(())
    } else {
        Err(err(pos, ErrorKind::TooManyTokens))
    }
}

fn token_bytes<'b>(buf: &'b [u8], t: &Token) -> &'b [u8] {
    &buf[t.aux as usize..t.end as usize]
}

/// Checks a new dictionary key against the earlier keys of the same dictionary.
fn check_key<S: TokenStore>(
    buf: &[u8],
    store: &mut S,
    stack: &mut heapless::Vec<Open, { DEPTH_CAP as usize }>,
    key_idx: usize,
    pos: usize,
    budget: &mut u32,
) -> Result<(), DecodeError> {
    let Some(open) = stack.last_mut() else {
        return Ok(());
    };
    let toks = store.slice();
    let key = token_bytes(buf, &toks[key_idx]);
    let prev = open.prev_key;
    open.prev_key = key_idx as u32;
    if prev == u32::MAX {
        return Ok(());
    }
    let prev_key = token_bytes(buf, &toks[prev as usize]);
    if key == prev_key {
        return Err(err(pos, ErrorKind::DuplicateKey));
    }
    if key > prev_key && !open.unsorted {
        return Ok(());
    }
    open.unsorted = true;
    // Out of order: compare against every earlier key of this dictionary.
    let mut i = open.token as usize + 1;
    while i < key_idx {
        *budget = budget
            .checked_sub(1)
            .ok_or(err(pos, ErrorKind::TooComplex))?;
        if token_bytes(buf, &toks[i]) == key {
            return Err(err(pos, ErrorKind::DuplicateKey));
        }
        // Skip the key and then its value's whole subtree.
        let value = toks[i].next();
        i = toks.get(value).map_or(key_idx, |v| v.next());
    }
    Ok(())
}

/// A value inside a [`Document`]; cheap to copy.
#[derive(Clone, Copy)]
pub struct Value<'a> {
    buf: &'a [u8],
    tokens: &'a [Token],
    idx: usize,
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            Kind::Int => write!(f, "{}", self.as_int().unwrap_or_default()),
            Kind::Bytes => {
                let b = self.as_bytes().unwrap_or_default();
                match core::str::from_utf8(b) {
                    Ok(s) => write!(f, "{s:?}"),
                    Err(_) => write!(f, "<{} bytes>", b.len()),
                }
            }
            Kind::List => f
                .debug_list()
                .entries(self.as_list().into_iter().flatten())
                .finish(),
            Kind::Dict => {
                let mut m = f.debug_map();
                for (k, v) in self.as_dict().into_iter().flatten() {
                    m.entry(&core::str::from_utf8(k).unwrap_or("<bytes>"), &v);
                }
                m.finish()
            }
        }
    }
}

impl<'a> Value<'a> {
    fn token(&self) -> &'a Token {
        &self.tokens[self.idx]
    }
    /// The value at token `idx` of the same document.
    pub(crate) fn at(&self, idx: usize) -> Value<'a> {
        Value { idx, ..*self }
    }
    /// This value's index in the token table.
    pub(crate) fn index(&self) -> usize {
        self.idx
    }
    /// The kind of this value.
    pub fn kind(&self) -> Kind {
        self.token().kind()
    }
    /// The raw bytes of this value in the input, exactly as they appear there.
    pub fn raw(&self) -> &'a [u8] {
        let t = self.token();
        &self.buf[t.start as usize..t.end as usize]
    }
    /// Byte range of this value in the input.
    pub fn span(&self) -> core::ops::Range<usize> {
        let t = self.token();
        t.start as usize..t.end as usize
    }
    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        let t = self.token();
        if t.kind() != Kind::Int {
            return None;
        }
        let body = &self.buf[t.start as usize + 1..t.end as usize - 1];
        match body.split_first() {
            Some((b'-', ds)) => parse_i64(true, ds),
            _ => parse_i64(false, body),
        }
    }
    /// The string's bytes, if this is a string.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        let t = self.token();
        (t.kind() == Kind::Bytes).then(|| token_bytes(self.buf, t))
    }
    /// The string as UTF-8, if this is a string and valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| core::str::from_utf8(b).ok())
    }
    /// The list, if this is one.
    pub fn as_list(&self) -> Option<List<'a>> {
        (self.kind() == Kind::List).then_some(List(*self))
    }
    /// The dictionary, if this is one.
    pub fn as_dict(&self) -> Option<Dict<'a>> {
        (self.kind() == Kind::Dict).then_some(Dict(*self))
    }
}

/// Iterates the direct children of a container.
#[derive(Clone, Copy, Debug)]
struct Children<'a> {
    v: Value<'a>,
    next: usize,
    end: usize,
}

impl<'a> Iterator for Children<'a> {
    type Item = Value<'a>;
    fn next(&mut self) -> Option<Value<'a>> {
        if self.next >= self.end {
            return None;
        }
        let v = self.v.at(self.next);
        self.next = v.token().next().max(self.next + 1);
        Some(v)
    }
}

fn children(v: Value<'_>) -> Children<'_> {
    let t = v.token();
    Children {
        v,
        next: v.idx + 1,
        end: t.next().min(v.tokens.len()),
    }
}

/// A list value.
#[derive(Clone, Copy, Debug)]
pub struct List<'a>(Value<'a>);

impl<'a> List<'a> {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.0.token().aux as usize
    }
    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The items in order.
    pub fn iter(&self) -> impl Iterator<Item = Value<'a>> + 'a {
        children(self.0)
    }
    /// The list as a value.
    pub fn value(&self) -> Value<'a> {
        self.0
    }
}

impl<'a> IntoIterator for List<'a> {
    type Item = Value<'a>;
    type IntoIter = ListIter<'a>;
    fn into_iter(self) -> ListIter<'a> {
        ListIter(children(self.0))
    }
}

/// Iterator over a list's items.
#[derive(Clone, Debug)]
pub struct ListIter<'a>(Children<'a>);

impl ListIter<'_> {
    /// An iterator over no items, every field written: a stand-in for "no list" where
    /// an `Option<ListIter>` would leave its payload uninitialised (see
    /// `metainfo::FileEntry::raw_path`).
    pub(crate) fn empty() -> Self {
        ListIter(Children {
            v: Value {
                buf: &[],
                tokens: &[],
                idx: 0,
            },
            next: 0,
            end: 0,
        })
    }
}

impl<'a> Iterator for ListIter<'a> {
    type Item = Value<'a>;
    fn next(&mut self) -> Option<Value<'a>> {
        self.0.next()
    }
}

/// A dictionary value.
#[derive(Clone, Copy, Debug)]
pub struct Dict<'a>(Value<'a>);

impl<'a> Dict<'a> {
    /// Number of key/value pairs.
    pub fn len(&self) -> usize {
        self.0.token().aux as usize
    }
    /// Whether the dictionary is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The pairs in input order.
    pub fn iter(&self) -> DictIter<'a> {
        DictIter(children(self.0))
    }
    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Value<'a>> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
    /// The integer at `key`.
    pub fn get_int(&self, key: &[u8]) -> Option<i64> {
        self.get(key)?.as_int()
    }
    /// The string at `key`.
    pub fn get_bytes(&self, key: &[u8]) -> Option<&'a [u8]> {
        self.get(key)?.as_bytes()
    }
    /// The list at `key`.
    pub fn get_list(&self, key: &[u8]) -> Option<List<'a>> {
        self.get(key)?.as_list()
    }
    /// The dictionary at `key`.
    pub(crate) fn get_dict(&self, key: &[u8]) -> Option<Dict<'a>> {
        self.get(key)?.as_dict()
    }
    /// The dictionary as a value.
    pub fn value(&self) -> Value<'a> {
        self.0
    }
}

impl<'a> IntoIterator for Dict<'a> {
    type Item = (&'a [u8], Value<'a>);
    type IntoIter = DictIter<'a>;
    fn into_iter(self) -> DictIter<'a> {
        self.iter()
    }
}

/// Iterator over a dictionary's pairs.
#[derive(Clone, Debug)]
pub struct DictIter<'a>(Children<'a>);

impl<'a> DictIter<'a> {
    /// The next pair with its key as a value (for its position in the token table).
    pub(crate) fn next_entry(&mut self) -> Option<(Value<'a>, Value<'a>)> {
        let k = self.0.next()?;
        let v = self.0.next()?;
        Some((k, v))
    }
}

impl<'a> Iterator for DictIter<'a> {
    type Item = (&'a [u8], Value<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        let k = self.0.next()?;
        let v = self.0.next()?;
        Some((k.as_bytes().unwrap_or_default(), v))
    }
}

#[cfg(test)]
mod tests;
