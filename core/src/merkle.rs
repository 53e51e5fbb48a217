//! BEP 52 merkle trees: a file's `pieces root`, its `piece layers` entry, and the
//! checks of a piece and of a piece layer, without allocating.
//!
//! A v2 file is cut into 16 KiB blocks (the last one may be shorter); each leaf is the
//! SHA-256 of one block. The leaves are padded with zero hashes to a power of two and
//! hashed pairwise up to the root, the file's `pieces root`. The *piece layer* is the
//! layer whose nodes each cover one piece (`piece length / 16 KiB` leaves); a file
//! larger than one piece lists it in the torrent's `piece layers`. Padding follows the
//! BEP: leaves past the end of the file are zero hashes, so the last piece's hash is
//! over its blocks and zero leaves up to a whole piece, and the piece layer is padded
//! with the hash of a piece of zero leaves. A file of one piece or less has no layer:
//! its root is over its blocks padded only to the next power of two.
//!
//! [`MerkleBuilder`] folds hashes into a root with `O(log n)` state (a stack of at most
//! 64 pending nodes); [`FileHasher`] streams a file's bytes and reports its piece-layer
//! hashes as they complete.
//!
//! # Hash requests (BEP 52 `hash request` / `hashes`)
//!
//! A peer that has a file's `pieces root` but not its piece layer asks for a range of
//! the layer with a proof ([`crate::wire::HashRequest`]); [`hashes_answer`] (or
//! [`hashes_answer_into`], without an allocator) builds the `hashes` payload from the
//! layer and [`verify_hashes`] checks one against the root. Both work on the *piece
//! layer* only (`base` = [`layer_height`]), padded to a power of two with
//! [`pad_hash`]`(base)` as the BEP pads it, and follow libtorrent's conventions
//! (`merkle_tree::get_hashes`, `bt_peer_connection::on_hashes`,
//! `validate_hash_request`):
//!
//! - the answer is the `length` requested hashes (pad hashes where the range passes the
//!   end of the file's layer), then the uncle hashes, lowest first;
//! - the requested hashes fill a subtree of height `k = log2(length)`, so its `k - 1`
//!   interior layers need no proof: the answer carries
//!   `max(0, proof_layers - (k - 1))` uncles, the first the sibling of that subtree's
//!   root, each next one the sibling of the previous one's parent
//!   ([`crate::wire::HashRequest::proof_hashes`]);
//! - `proof_layers` is at most `log2(layer width) - 1`: the last possible uncle is a
//!   child of the root, the root itself is never sent.
//!
//! Requests are checked more strictly than libtorrent checks them: `length` must be a
//! power of two from 2 to [`MAX_HASH_REQUEST_LEN`] and `index` a multiple of it, below
//! the number of pieces. libtorrent's picker asks for
//! `min(512, next_pow2(remaining pieces))` hashes at a multiple of 512, which passes,
//! except when a single piece remains past a multiple of 512 (a length of 1, for which
//! libtorrent's sending and receiving sides count the uncles differently). A length cut
//! short by the end of the layer, which BEP 52 allows, is refused too (a
//! `hash reject`): ask for the power of two, the pad hashes come with it.

use crate::hash::{sha256, sha256_pair, Digest256};
use crate::wire::HashRequest;
use sha2::Digest as _;

/// The size of a v2 block (a merkle leaf).
pub const BLOCK_SIZE: u32 = 16 * 1024;

/// The all-zero hash: a leaf past the end of a file.
pub const ZERO: Digest256 = [0; 32];

/// The root of a tree of `2^height` zero leaves.
pub fn pad_hash(height: u32) -> Digest256 {
    let mut h = ZERO;
    for _ in 0..height {
        h = sha256_pair(&h, &h);
    }
    h
}

/// Folds a sequence of nodes of one height into the root of a tree of a given width.
///
/// Push the nodes left to right with [`MerkleBuilder::push`], then
/// [`MerkleBuilder::finish`] pads the missing right part with `pad`-nodes (the root of
/// an all-zero subtree of that height) up to a power-of-two width.
#[derive(Clone, Debug)]
pub struct MerkleBuilder {
    /// `stack[l]`: a complete left subtree of height `l` waiting for its sibling.
    stack: [Option<Digest256>; 64],
    count: u64,
    pad: Digest256,
}

impl MerkleBuilder {
    /// A builder whose missing nodes are `pad` (use [`ZERO`] for leaves, and
    /// [`pad_hash`] of the height for upper layers).
    pub fn new(pad: Digest256) -> Self {
        Self {
            stack: [None; 64],
            count: 0,
            pad,
        }
    }

    /// How many nodes were pushed.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Appends the next node. More than 2^63 nodes is not possible (a file of 2^63
    /// bytes has 2^49 leaves).
    pub fn push(&mut self, h: Digest256) {
        let mut carry = h;
        let mut l = 0;
        while let Some(left) = self.stack[l].take() {
            carry = sha256_pair(&left, &carry);
            l += 1;
        }
        self.stack[l] = Some(carry);
        self.count += 1;
    }

    /// The root of a tree `width` nodes wide (rounded up to a power of two, and at least
    /// the number pushed).
    pub fn finish(&self, width: u64) -> Digest256 {
        let width = width.max(self.count).max(1).next_power_of_two();
        let levels = width.trailing_zeros() as usize;
        if self.count == width {
            return self.stack[levels].unwrap_or(self.pad);
        }
        let mut pad = self.pad;
        let mut carry: Option<Digest256> = None;
        for l in 0..levels {
            carry = match (self.stack[l], carry) {
                (Some(left), Some(right)) => Some(sha256_pair(&left, &right)),
                (Some(left), None) => Some(sha256_pair(&left, &pad)),
                (None, Some(left)) => Some(sha256_pair(&left, &pad)),
                (None, None) => None,
            };
            pad = sha256_pair(&pad, &pad);
        }
        // Nothing pushed: an all-pad tree.
        carry.unwrap_or(pad)
    }
}

/// Blocks in one piece: `piece_length / 16 KiB` (`piece_length` a power of two of at
/// least 16 KiB, as v2 requires).
fn blocks_per_piece(piece_length: u32) -> u64 {
    u64::from((piece_length / BLOCK_SIZE).max(1))
}

/// The height of the piece layer above the leaves: `log2(piece_length / 16 KiB)`, the
/// `base` of a BEP 52 hash request for piece-layer hashes (0 for 16 KiB pieces).
/// `piece_length` should be a valid v2 piece length (a power of two, at least 16 KiB);
/// anything below 16 KiB gives 0.
#[must_use]
pub fn layer_height(piece_length: u32) -> u32 {
    blocks_per_piece(piece_length).trailing_zeros()
}

/// The hashes of the 16 KiB blocks of `data`, in order.
pub fn block_hashes(data: &[u8]) -> impl Iterator<Item = Digest256> + '_ {
    data.chunks(BLOCK_SIZE as usize).map(sha256)
}

/// The piece-layer hash of one piece of a file larger than a piece: its blocks, padded
/// with zero leaves to a whole piece.
pub fn piece_hash(data: &[u8], piece_length: u32) -> Digest256 {
    let mut b = MerkleBuilder::new(ZERO);
    block_hashes(data).for_each(|h| b.push(h));
    b.finish(blocks_per_piece(piece_length))
}

/// Whether `data`, one piece of a file larger than a piece, hashes to its piece-layer
/// entry `expected`.
pub fn verify_piece(data: &[u8], piece_length: u32, expected: &Digest256) -> bool {
    data.len() <= piece_length as usize && piece_hash(data, piece_length) == *expected
}

/// The `pieces root` of a file of at most one piece (no piece layer): its blocks padded
/// to a power of two. `None` for an empty file, which has no root.
pub fn small_file_root(data: &[u8]) -> Option<Digest256> {
    if data.is_empty() {
        return None;
    }
    let mut b = MerkleBuilder::new(ZERO);
    block_hashes(data).for_each(|h| b.push(h));
    Some(b.finish(b.count()))
}

/// The root over a piece layer (concatenated 32-byte hashes), padded with the hash of
/// an all-zero piece. `None` when `layer` is not a whole number of hashes or is empty.
pub fn layer_root(layer: &[u8], piece_length: u32) -> Option<Digest256> {
    if layer.is_empty() || layer.len() % 32 != 0 {
        return None;
    }
    let height = blocks_per_piece(piece_length).trailing_zeros();
    let mut b = MerkleBuilder::new(pad_hash(height));
    for h in layer.chunks_exact(32) {
        b.push(h.try_into().ok()?);
    }
    Some(b.finish(b.count()))
}

/// Whether a piece layer has the right number of hashes for a file of `file_length`
/// bytes and hashes up to `root`.
pub fn verify_layer(layer: &[u8], piece_length: u32, file_length: u64, root: &Digest256) -> bool {
    let pieces = file_length.div_ceil(u64::from(piece_length));
    layer.len() as u64 == pieces * 32 && layer_root(layer, piece_length).as_ref() == Some(root)
}

/// Streams a file's bytes into its `pieces root`, reporting each piece-layer hash.
#[derive(Clone, Debug)]
pub struct FileHasher {
    piece_length: u32,
    block: sha2::Sha256,
    block_fill: u32,
    piece: MerkleBuilder,
    piece_fill: u64,
    pieces: MerkleBuilder,
    length: u64,
}

impl FileHasher {
    /// A hasher for a torrent of `piece_length` (a power of two, at least 16 KiB).
    pub fn new(piece_length: u32) -> Self {
        let height = blocks_per_piece(piece_length).trailing_zeros();
        Self {
            piece_length: piece_length.max(BLOCK_SIZE),
            block: sha2::Sha256::new(),
            block_fill: 0,
            piece: MerkleBuilder::new(ZERO),
            piece_fill: 0,
            pieces: MerkleBuilder::new(pad_hash(height)),
            length: 0,
        }
    }

    /// Feeds more of the file; `on_piece(i, hash)` gets each full piece's layer hash.
    pub fn update(&mut self, mut data: &[u8], on_piece: &mut dyn FnMut(u64, Digest256)) {
        while !data.is_empty() {
            let room = (BLOCK_SIZE - self.block_fill) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.block.update(now);
            self.block_fill += now.len() as u32;
            self.length += now.len() as u64;
            data = rest;
            if self.block_fill == BLOCK_SIZE {
                self.end_block();
                if self.piece_fill == blocks_per_piece(self.piece_length) {
                    self.end_piece(on_piece);
                }
            }
        }
    }

    fn end_block(&mut self) {
        let h = core::mem::replace(&mut self.block, sha2::Sha256::new());
        self.piece.push(h.finalize().into());
        self.block_fill = 0;
        self.piece_fill += 1;
    }

    fn end_piece(&mut self, on_piece: &mut dyn FnMut(u64, Digest256)) {
        let h = self.piece.finish(blocks_per_piece(self.piece_length));
        on_piece(self.pieces.count(), h);
        self.pieces.push(h);
        self.piece = MerkleBuilder::new(ZERO);
        self.piece_fill = 0;
    }

    /// The file's `pieces root` (`None` for an empty file). For a file larger than one
    /// piece, `on_piece` gets the last, partial piece first.
    pub fn finish(mut self, on_piece: &mut dyn FnMut(u64, Digest256)) -> Option<Digest256> {
        if self.length == 0 {
            return None;
        }
        if self.block_fill > 0 {
            self.end_block();
        }
        if self.length <= u64::from(self.piece_length) {
            // One piece or less: no layer, the leaves padded to a power of two only.
            return Some(if self.pieces.count() == 1 {
                self.pieces.finish(1)
            } else {
                self.piece.finish(self.piece.count())
            });
        }
        if self.piece_fill > 0 {
            self.end_piece(on_piece);
        }
        Some(self.pieces.finish(self.pieces.count()))
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.length
    }

    /// Whether nothing was fed.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }
}

/// A file's `pieces root` and piece layer (empty for a file of one piece or less).
#[cfg(feature = "alloc")]
pub fn file_tree(data: &[u8], piece_length: u32) -> (Option<Digest256>, alloc::vec::Vec<u8>) {
    let mut layer = alloc::vec::Vec::new();
    let mut h = FileHasher::new(piece_length);
    h.update(data, &mut |_, p| layer.extend_from_slice(&p));
    let root = h.finish(&mut |_, p| layer.extend_from_slice(&p));
    if data.len() as u64 <= u64::from(piece_length) {
        layer.clear();
    }
    (root, layer)
}

// ---------------------------------------------------------------------------------------
// BEP 52 hash requests
// ---------------------------------------------------------------------------------------

/// The most hashes a request may ask for: BEP 52's "SHOULD NOT be larger than 512".
pub const MAX_HASH_REQUEST_LEN: u32 = 512;

/// Why a hash request cannot be answered (or an answer cannot be checked). An
/// answering peer sends a `hash reject`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum HashRequestError {
    /// The piece length is not a power of two of at least 16 KiB.
    BadPieceLength,
    /// The file has no piece layer: it is empty or fits in one piece.
    NoPieceLayer,
    /// `base` is not the piece layer ([`layer_height`]); only piece-layer requests are
    /// supported.
    WrongBase,
    /// `length` is not a power of two from 2 to [`MAX_HASH_REQUEST_LEN`], or wider than
    /// the padded layer.
    BadLength,
    /// `index` is not a multiple of `length`.
    Misaligned,
    /// `index` is past the last piece of the file.
    OutOfRange,
    /// `proof_layers` asks for more than the layers between the base and the root.
    TooManyProofLayers,
    /// The piece layer given to [`hashes_answer`] is not one hash per piece.
    LayerMismatch,
    /// The output buffer of [`hashes_answer_into`] is too small.
    BufferTooSmall {
        /// The payload's length in bytes.
        needed: usize,
    },
}

impl core::fmt::Display for HashRequestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::BadPieceLength => f.write_str("piece length is not a power of two >= 16 KiB"),
            Self::NoPieceLayer => f.write_str("file has no piece layer"),
            Self::WrongBase => f.write_str("base layer is not the piece layer"),
            Self::BadLength => f.write_str("length is not a power of two from 2 to 512"),
            Self::Misaligned => f.write_str("index is not a multiple of length"),
            Self::OutOfRange => f.write_str("index is past the end of the layer"),
            Self::TooManyProofLayers => f.write_str("more proof layers than the tree has"),
            Self::LayerMismatch => f.write_str("piece layer does not match the file"),
            Self::BufferTooSmall { needed } => {
                write!(f, "output buffer too small, {needed} bytes needed")
            }
        }
    }
}

/// A piece-layer request checked against its file.
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// The piece layer's height above the leaves.
    base: u32,
    /// Pieces in the file (hashes in the unpadded layer), at least 2.
    pieces: u64,
    /// `log2` of the padded layer's width: the tree's height above the piece layer.
    width_log: u32,
    /// `log2(length)`: the height of the requested subtree.
    k: u32,
    /// Uncle hashes in the answer.
    uncles: u32,
    index: u64,
    length: u64,
}

impl Shape {
    /// The payload's length in bytes (at most `(512 + 63) * 32`).
    fn answer_len(&self) -> usize {
        (self.length as usize + self.uncles as usize) * 32
    }
}

fn check_request(
    file_length: u64,
    piece_length: u32,
    req: &HashRequest,
) -> Result<Shape, HashRequestError> {
    if !piece_length.is_power_of_two() || piece_length < BLOCK_SIZE {
        return Err(HashRequestError::BadPieceLength);
    }
    let pieces = file_length.div_ceil(u64::from(piece_length));
    if pieces < 2 {
        return Err(HashRequestError::NoPieceLayer);
    }
    let base = layer_height(piece_length);
    if req.base != base {
        return Err(HashRequestError::WrongBase);
    }
    // At most 2^50 pieces (a u64 length over 16 KiB pieces): no overflow.
    let width = pieces.next_power_of_two();
    let width_log = width.trailing_zeros();
    let length = u64::from(req.length);
    if !req.length.is_power_of_two()
        || req.length < 2
        || req.length > MAX_HASH_REQUEST_LEN
        || length > width
    {
        return Err(HashRequestError::BadLength);
    }
    let index = u64::from(req.index);
    if index % length != 0 {
        return Err(HashRequestError::Misaligned);
    }
    // Aligned and below `pieces`, the range ends inside the padded layer.
    if index >= pieces {
        return Err(HashRequestError::OutOfRange);
    }
    // libtorrent's `validate_hash_request`: proof_layers < layers - base.
    if req.proof_layers >= width_log {
        return Err(HashRequestError::TooManyProofLayers);
    }
    Ok(Shape {
        base,
        pieces,
        width_log,
        k: req.length.trailing_zeros(),
        uncles: req.proof_hashes(),
        index,
        length,
    })
}

/// The root of the subtree of height `h` whose leftmost piece-layer node is `start`,
/// from the layer (`pieces` hashes), padded with the pad hashes of layer `base`.
fn subtree_root(layer: &[u8], pieces: u64, start: u64, h: u32, base: u32) -> Digest256 {
    if start >= pieces {
        return pad_hash(base + h);
    }
    let end = pieces.min(start + (1u64 << h));
    let mut b = MerkleBuilder::new(pad_hash(base));
    // `start < end <= pieces` and `layer` holds `pieces` hashes.
    let bytes = layer
        .get(start as usize * 32..end as usize * 32)
        .unwrap_or(&[]);
    for c in bytes.chunks_exact(32) {
        let mut node = ZERO;
        node.copy_from_slice(c);
        b.push(node);
    }
    b.finish(1u64 << h)
}

/// Whether [`hashes_answer`] would answer `req` for a file of `file_length` bytes (it
/// checks the request only: cheap, no hashing).
pub fn hash_request_ok(file_length: u64, piece_length: u32, req: &HashRequest) -> bool {
    check_request(file_length, piece_length, req).is_ok()
}

/// Height above the piece layer of the lowest level [`UpperTree`] keeps: a subtree of
/// [`MAX_HASH_REQUEST_LEN`] pieces.
#[cfg(feature = "alloc")]
const UPPER_FROM: u32 = 9;

/// The nodes of a file's tree from [`MAX_HASH_REQUEST_LEN`] pieces up (about one node
/// per 256 pieces): with it an answer costs at most 512 hashes plus one lookup per
/// proof layer, instead of hashing the whole layer for its uncles.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, Default)]
pub struct UpperTree {
    /// `levels[j]`: the nodes at height `UPPER_FROM + j` above the piece layer.
    levels: alloc::vec::Vec<alloc::vec::Vec<Digest256>>,
}

#[cfg(feature = "alloc")]
impl UpperTree {
    /// Builds it from a file's piece layer (`pieces` hashes) whose height above the
    /// leaves is `base`: `O(pieces)` SHA-256, once.
    pub fn new(layer: &[u8], base: u32) -> Self {
        let pieces = (layer.len() / 32) as u64;
        let width_log = pieces.max(1).next_power_of_two().trailing_zeros();
        let mut levels = alloc::vec::Vec::new();
        if width_log <= UPPER_FROM {
            return Self { levels };
        }
        let n = pieces.div_ceil(1 << UPPER_FROM);
        let mut level: alloc::vec::Vec<Digest256> = (0..n)
            .map(|j| subtree_root(layer, pieces, j << UPPER_FROM, UPPER_FROM, base))
            .collect();
        let mut h = UPPER_FROM;
        while h < width_log {
            let pad = pad_hash(base + h);
            let up: alloc::vec::Vec<Digest256> = level
                .chunks(2)
                .map(|c| sha256_pair(&c[0], c.get(1).unwrap_or(&pad)))
                .collect();
            levels.push(level);
            level = up;
            h += 1;
        }
        Self { levels }
    }

    /// The node at height `h` (at least `UPPER_FROM`) covering pieces from `start`.
    fn node(&self, h: u32, start: u64, base: u32) -> Option<Digest256> {
        let level = self.levels.get(h.checked_sub(UPPER_FROM)? as usize)?;
        Some(
            level
                .get((start >> h) as usize)
                .copied()
                .unwrap_or_else(|| pad_hash(base + h)),
        )
    }
}

/// As [`hashes_answer`], with the file's [`UpperTree`]: the uncles above 512 pieces
/// come from it (the same bytes, at a fraction of the cost).
#[cfg(feature = "alloc")]
pub fn hashes_answer_cached(
    layer: &[u8],
    upper: &UpperTree,
    file_length: u64,
    piece_length: u32,
    req: &HashRequest,
    out: &mut alloc::vec::Vec<u8>,
) -> Result<(), HashRequestError> {
    let shape = check_request(file_length, piece_length, req)?;
    if layer.len() as u64 != shape.pieces * 32 {
        return Err(HashRequestError::LayerMismatch);
    }
    let pad = pad_hash(shape.base);
    for i in shape.index..shape.index + shape.length {
        match layer.get(i as usize * 32..i as usize * 32 + 32) {
            Some(h) if i < shape.pieces => out.extend_from_slice(h),
            _ => out.extend_from_slice(&pad),
        }
    }
    for h in (shape.k..).take(shape.uncles as usize) {
        let sibling = ((shape.index >> h) ^ 1) << h;
        let node = match upper.node(h, sibling, shape.base) {
            Some(n) => n,
            None => subtree_root(layer, shape.pieces, sibling, h, shape.base),
        };
        out.extend_from_slice(&node);
    }
    Ok(())
}

/// Writes the `hashes` payload (after the 48-byte request header) answering `req` into
/// `out`, from a file's piece layer (one 32-byte hash per piece, as in the torrent's
/// `piece layers`); returns its length. See the module docs for the layout. Nothing is
/// written on error.
///
/// Only piece-layer requests are answered; `req.root` is not checked (the caller found
/// the file by it). The cost is `O(pieces)` SHA-256 compressions for a full proof (the
/// uncles are recomputed from the layer), so a host should bound how often a peer
/// may ask.
pub fn hashes_answer_into(
    layer: &[u8],
    file_length: u64,
    piece_length: u32,
    req: &HashRequest,
    out: &mut [u8],
) -> Result<usize, HashRequestError> {
    let shape = check_request(file_length, piece_length, req)?;
    if layer.len() as u64 != shape.pieces * 32 {
        return Err(HashRequestError::LayerMismatch);
    }
    let needed = shape.answer_len();
    let Some(out) = out.get_mut(..needed) else {
        return Err(HashRequestError::BufferTooSmall { needed });
    };
    let (base_out, uncle_out) = out.split_at_mut(shape.length as usize * 32);
    let pad = pad_hash(shape.base);
    for (i, dst) in (shape.index..).zip(base_out.chunks_exact_mut(32)) {
        match layer.get(i as usize * 32..i as usize * 32 + 32) {
            Some(h) if i < shape.pieces => dst.copy_from_slice(h),
            _ => dst.copy_from_slice(&pad),
        }
    }
    // The uncles: siblings of the requested subtree's root and of its ancestors, from
    // the height of that subtree up.
    for (h, dst) in (shape.k..).zip(uncle_out.chunks_exact_mut(32)) {
        let sibling = ((shape.index >> h) ^ 1) << h;
        dst.copy_from_slice(&subtree_root(layer, shape.pieces, sibling, h, shape.base));
    }
    Ok(needed)
}

/// Appends to `out` the `hashes` payload answering `req` (see [`hashes_answer_into`]);
/// `out` is left as it was on error.
#[cfg(feature = "alloc")]
pub fn hashes_answer(
    layer: &[u8],
    file_length: u64,
    piece_length: u32,
    req: &HashRequest,
    out: &mut alloc::vec::Vec<u8>,
) -> Result<(), HashRequestError> {
    let needed = check_request(file_length, piece_length, req)?.answer_len();
    let start = out.len();
    out.resize(start + needed, 0);
    let dst = out.get_mut(start..).unwrap_or(&mut []);
    match hashes_answer_into(layer, file_length, piece_length, req, dst) {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Checks a `hashes` answer (`hashes`: the payload after the request header) to a
/// piece-layer request against the file's `pieces root`. On success returns the
/// verified piece-layer hashes of the range that lie inside the file (the pad hashes
/// past its last piece are checked and left out): the hashes of pieces `req.index..`.
///
/// Fails (`None`) when `req.root` is not `root`, the request is one [`hashes_answer`]
/// would refuse, `hashes` is not exactly `req.length` plus
/// [`HashRequest::proof_hashes`] hashes, a hash past the file's last piece is not the
/// pad hash, or the hashes do not lead to `root`. The proof must reach the root: with
/// fewer than `log2(layer width) - 1` proof layers only a request for the whole padded
/// layer can be checked.
///
/// Never panics or allocates; at most 575 SHA-256 pair hashes.
#[must_use]
pub fn verify_hashes<'h>(
    root: &Digest256,
    file_length: u64,
    piece_length: u32,
    req: &HashRequest,
    hashes: &'h [u8],
) -> Option<&'h [u8]> {
    if req.root != *root {
        return None;
    }
    let shape = check_request(file_length, piece_length, req).ok()?;
    if hashes.len() != shape.answer_len() || shape.k + shape.uncles != shape.width_log {
        return None;
    }
    let (base_hashes, uncles) = hashes.split_at(shape.length as usize * 32);
    let pad = pad_hash(shape.base);
    let real = shape.length.min(shape.pieces - shape.index) as usize;
    let mut b = MerkleBuilder::new(pad);
    for (i, c) in base_hashes.chunks_exact(32).enumerate() {
        let mut h = ZERO;
        h.copy_from_slice(c);
        if i >= real && h != pad {
            return None;
        }
        b.push(h);
    }
    let mut node = b.finish(shape.length);
    let mut pos = shape.index >> shape.k;
    for c in uncles.chunks_exact(32) {
        let mut uncle = ZERO;
        uncle.copy_from_slice(c);
        node = if pos & 1 == 0 {
            sha256_pair(&node, &uncle)
        } else {
            sha256_pair(&uncle, &node)
        };
        pos >>= 1;
    }
    (node == *root && pos == 0).then(|| base_hashes.get(..real * 32).unwrap_or(&[]))
}

/// Entry point for the `wire_framing` fuzz target (through
/// [`crate::wire::fuzz_decode`]): exercises [`verify_hashes`] on a decoded
/// `hash request` / `hashes` (`hashes` empty for a request), and answers a request
/// shaped after it over a small synthetic file, checking that the answer verifies
/// exactly when its proof reaches the root and stops verifying after a flipped byte.
///
/// Returns `false` if an invariant fails; never panics; uses only the stack.
#[cfg(any(test, feature = "fuzzing"))]
#[must_use]
pub fn fuzz_hash_request(req: &HashRequest, hashes: &[u8]) -> bool {
    // The peer's hashes against a file the request could be about: no panic, and a
    // success hands back a prefix of the hashes.
    let pl = BLOCK_SIZE << req.base.min(17);
    let pieces = u64::from(req.index) + u64::from(req.length % 2048);
    let file_length = pieces
        .saturating_mul(u64::from(pl))
        .saturating_sub(u64::from(req.proof_layers % 1024));
    if let Some(v) = verify_hashes(&req.root, file_length, pl, req, hashes) {
        if hashes.get(..v.len()) != Some(v) {
            return false;
        }
    }
    // A request fitted to a file of 2 to 16 pieces, answered and checked.
    let pieces = 2 + u64::from(req.index % 15);
    let width = pieces.next_power_of_two();
    let width_log = width.trailing_zeros();
    let length = 2u64 << (req.length % width_log);
    let index = (u64::from(req.index / 16) % pieces) / length * length;
    let mut layer = [0u8; 16 * 32];
    for (i, h) in layer.chunks_exact_mut(32).enumerate() {
        h.copy_from_slice(&req.root);
        h[0] ^= i as u8;
    }
    let Some(layer) = layer.get(..pieces as usize * 32) else {
        return false;
    };
    let Some(root) = layer_root(layer, pl) else {
        return false;
    };
    // The last piece holds at least one byte.
    let short = u64::from(req.proof_layers >> 16) % u64::from(pl);
    let file_length = pieces * u64::from(pl) - short;
    let fitted = HashRequest {
        root,
        base: layer_height(pl),
        index: index as u32,
        length: length as u32,
        proof_layers: (req.proof_layers % width_log),
    };
    let mut out = [0u8; (16 + 4) * 32];
    let Ok(n) = hashes_answer_into(layer, file_length, pl, &fitted, &mut out) else {
        return false;
    };
    let Some(ans) = out.get_mut(..n) else {
        return false;
    };
    let full = fitted.proof_layers + 1 == width_log || length == width;
    let real = (length.min(pieces - index) * 32) as usize;
    let from = index as usize * 32;
    let want = layer.get(from..from + real);
    if (verify_hashes(&root, file_length, pl, &fitted, ans) == want) != full {
        return false;
    }
    if let Some(b) = ans.get_mut(usize::from(req.root[1]) % n) {
        *b ^= 1 << (req.root[2] % 8);
    }
    verify_hashes(&root, file_length, pl, &fitted, ans).is_none()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// The tree the plain way: every leaf, padded with zeros to `width`.
    fn naive(leaves: &[Digest256], width: usize) -> Digest256 {
        let mut level: Vec<Digest256> = leaves.to_vec();
        level.resize(width.max(1).next_power_of_two(), ZERO);
        while level.len() > 1 {
            level = level.chunks(2).map(|p| sha256_pair(&p[0], &p[1])).collect();
        }
        level[0]
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn builder_matches_the_plain_tree() {
        for n in 0..40usize {
            let leaves: Vec<_> = (0..n).map(|i| sha256(&[i as u8])).collect();
            for width in [n, n + 1, 64] {
                let mut b = MerkleBuilder::new(ZERO);
                leaves.iter().for_each(|h| b.push(*h));
                assert_eq!(b.finish(width as u64), naive(&leaves, width), "{n} {width}");
            }
        }
    }

    #[test]
    fn pad_hash_is_the_root_of_zero_leaves() {
        assert_eq!(pad_hash(0), ZERO);
        assert_eq!(pad_hash(3), naive(&[], 8));
    }

    #[test]
    fn streamed_file_matches_layer_and_pieces() {
        let pl = 32 * 1024;
        for len in [1, 100, 16_384, 16_385, 32_768, 32_769, 100_000, 131_072] {
            let d = data(len);
            let leaves: Vec<_> = block_hashes(&d).collect();
            let (root, layer) = file_tree(&d, pl);
            let root = root.expect("root");
            // The root is over every leaf, padded to a power of two (and to a whole
            // piece when there are several).
            let width = if len <= pl as usize {
                leaves.len()
            } else {
                leaves.len().div_ceil(2) * 2
            };
            assert_eq!(root, naive(&leaves, width), "len {len}");
            if len <= pl as usize {
                assert!(layer.is_empty());
                assert_eq!(small_file_root(&d), Some(root));
                continue;
            }
            assert!(verify_layer(&layer, pl, len as u64, &root), "len {len}");
            for (i, piece) in d.chunks(pl as usize).enumerate() {
                let want: Digest256 = layer[i * 32..i * 32 + 32].try_into().expect("32");
                assert!(verify_piece(piece, pl, &want));
                let mut bad = piece.to_vec();
                bad[0] ^= 1;
                assert!(!verify_piece(&bad, pl, &want));
            }
            let mut bad = layer.clone();
            bad[5] ^= 1;
            assert!(!verify_layer(&bad, pl, len as u64, &root));
            assert!(!verify_layer(&layer[32..], pl, len as u64, &root));
        }
        assert_eq!(file_tree(&[], pl).0, None);
    }

    #[test]
    fn fed_in_odd_chunks_gives_the_same_root() {
        let d = data(200_001);
        let whole = file_tree(&d, 65_536);
        let mut layer = Vec::new();
        let mut h = FileHasher::new(65_536);
        for c in d.chunks(777) {
            h.update(c, &mut |_, p| layer.extend_from_slice(&p));
        }
        let root = h.finish(&mut |_, p| layer.extend_from_slice(&p));
        assert_eq!((root, layer), whole);
    }

    // ----- BEP 52 hash requests -----

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            let mut v: Vec<u8> = (0..n.div_ceil(8))
                .flat_map(|_| self.next().to_le_bytes())
                .collect();
            v.truncate(n);
            v
        }
    }

    fn req(root: Digest256, base: u32, index: u32, length: u32, proof_layers: u32) -> HashRequest {
        HashRequest {
            root,
            base,
            index,
            length,
            proof_layers,
        }
    }

    fn answer(
        layer: &[u8],
        file_length: u64,
        piece_length: u32,
        r: &HashRequest,
    ) -> Result<Vec<u8>, HashRequestError> {
        let mut out = vec![0xee];
        let res = hashes_answer(layer, file_length, piece_length, r, &mut out);
        assert_eq!(out[0], 0xee, "appends");
        match res {
            Ok(()) => Ok(out.split_off(1)),
            Err(e) => {
                assert_eq!(out.len(), 1, "nothing appended on error");
                Err(e)
            }
        }
    }

    /// Every layer of the padded tree over a piece layer, the piece layer first.
    fn full_tree(layer: &[u8], base: u32) -> Vec<Vec<Digest256>> {
        let mut level: Vec<Digest256> = layer
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32"))
            .collect();
        level.resize(level.len().next_power_of_two(), pad_hash(base));
        let mut levels = vec![level.clone()];
        while level.len() > 1 {
            level = level.chunks(2).map(|p| sha256_pair(&p[0], &p[1])).collect();
            levels.push(level.clone());
        }
        levels
    }

    /// libtorrent's `merkle_tree::get_hashes`, transcribed over a plain tree: the
    /// `count` hashes, then for `i` in `0..proof_layers` go one layer up and, once past
    /// the requested subtree's interior (`i >= log2(count) - 1`), add the sibling.
    fn libtorrent_get_hashes(levels: &[Vec<Digest256>], r: &HashRequest) -> Vec<u8> {
        let mut out = Vec::new();
        for j in 0..r.length as usize {
            out.extend_from_slice(&levels[0][r.index as usize + j]);
        }
        let base_tree_layers = r.length.next_power_of_two().trailing_zeros() as i64 - 1;
        let (mut layer, mut offset) = (0usize, r.index as usize);
        for i in 0..i64::from(r.proof_layers) {
            layer += 1;
            offset >>= 1;
            if i >= base_tree_layers {
                out.extend_from_slice(&levels[layer][offset ^ 1]);
            }
        }
        out
    }

    /// The requests to try on a layer: all of them when `thorough`, else a sample
    /// (lengths 2, 8 and 512; the first, a middle and the last index; no proof, the
    /// subtree's interior only, and a full proof).
    fn requests(pieces: u64, thorough: bool) -> Vec<(u32, u32, u32)> {
        let width = pieces.next_power_of_two();
        let width_log = width.trailing_zeros();
        let mut out = Vec::new();
        let mut length = 2u32;
        while u64::from(length) <= width.min(512) {
            let len = u64::from(length);
            let k = length.trailing_zeros();
            let indices: Vec<u64> = if thorough {
                (0..pieces).step_by(length as usize).collect()
            } else if [2, 8, 512].contains(&length) {
                let last = (pieces - 1) / len * len;
                let mut v = vec![0, last / 2 / len * len, last];
                v.dedup();
                v
            } else {
                Vec::new()
            };
            let proofs: Vec<u32> = if thorough {
                (0..width_log).collect()
            } else {
                let mut v = vec![0, (k - 1).min(width_log - 1), width_log - 1];
                v.dedup();
                v
            };
            for &i in &indices {
                for &p in &proofs {
                    out.push((i as u32, length, p));
                }
            }
            length *= 2;
        }
        out
    }

    /// Checks the requests of [`requests`] on a layer: the answer matches libtorrent's
    /// layout, verifies exactly when its proof reaches the root, and fails after any
    /// damage (every byte flipped when `thorough`, else one byte of some hashes).
    fn check_file(layer: &[u8], root: Digest256, file_length: u64, pl: u32, thorough: bool) {
        let base = layer_height(pl);
        let pieces = layer.len() as u64 / 32;
        let width = pieces.next_power_of_two();
        let width_log = width.trailing_zeros();
        let levels = full_tree(layer, base);
        assert_eq!(levels.last().expect("root")[0], root);
        let mut checked = 0;
        for (index, length, p) in requests(pieces, thorough) {
            let r = req(root, base, index, length, p);
            let ans = answer(layer, file_length, pl, &r).expect("answerable");
            assert_eq!(ans.len() as u64, r.answer_hashes() * 32);
            assert_eq!(ans, libtorrent_get_hashes(&levels, &r), "{r:?}");
            let mut buf = vec![0u8; ans.len()];
            assert_eq!(
                hashes_answer_into(layer, file_length, pl, &r, &mut buf),
                Ok(ans.len())
            );
            assert_eq!(buf, ans);
            if ans.len() > 32 {
                assert_eq!(
                    hashes_answer_into(layer, file_length, pl, &r, &mut buf[..ans.len() - 1]),
                    Err(HashRequestError::BufferTooSmall { needed: ans.len() })
                );
            }
            let reaches_root = r.proof_hashes() + length.trailing_zeros() == width_log;
            assert_eq!(
                reaches_root,
                p == width_log - 1 || u64::from(length) == width
            );
            let got = verify_hashes(&root, file_length, pl, &r, &ans);
            if !reaches_root {
                assert_eq!(got, None, "{r:?}: proof short of the root");
                continue;
            }
            checked += 1;
            let real = u64::from(length).min(pieces - u64::from(index)) as usize;
            let from = index as usize * 32;
            assert_eq!(got, Some(&layer[from..from + real * 32]), "{r:?}");
            // Any flipped byte fails.
            let step = if thorough {
                1
            } else {
                (ans.len() / 16).next_multiple_of(32) + 1
            };
            for at in (0..ans.len()).step_by(step).chain([ans.len() - 1]) {
                let mut bad = ans.clone();
                bad[at] ^= 0x01;
                assert_eq!(verify_hashes(&root, file_length, pl, &r, &bad), None);
            }
            // Truncated, or one hash too many.
            assert_eq!(
                verify_hashes(&root, file_length, pl, &r, &ans[..ans.len() - 32]),
                None
            );
            assert_eq!(
                verify_hashes(&root, file_length, pl, &r, &ans[..ans.len() - 1]),
                None
            );
            let mut long = ans.clone();
            long.extend_from_slice(&[0; 32]);
            assert_eq!(verify_hashes(&root, file_length, pl, &r, &long), None);
            // Another index, or another root.
            for other in [index + length, index.wrapping_sub(length)] {
                let moved = HashRequest { index: other, ..r };
                assert_eq!(verify_hashes(&root, file_length, pl, &moved, &ans), None);
            }
            let mut other_root = root;
            other_root[0] ^= 1;
            assert_eq!(verify_hashes(&other_root, file_length, pl, &r, &ans), None);
            let relabeled = HashRequest {
                root: other_root,
                ..r
            };
            assert_eq!(
                verify_hashes(&root, file_length, pl, &relabeled, &ans),
                None
            );
        }
        assert!(checked > 0);
    }

    #[test]
    fn hash_requests_on_real_files() {
        let mut rng = XorShift(0x5eed_1234_abcd_0001);
        for pl in [16 * 1024u32, 64 * 1024] {
            for (pieces, tail) in [(1u64, 0u64), (3, 100), (17, 0), (17, 1)] {
                let len =
                    (pieces - 1) * u64::from(pl) + if tail == 0 { u64::from(pl) } else { tail };
                let d = rng.bytes(len as usize);
                let (root, layer) = file_tree(&d, pl);
                let root = root.expect("root");
                if pieces == 1 {
                    assert!(layer.is_empty());
                    let r = req(root, layer_height(pl), 0, 2, 0);
                    assert_eq!(
                        answer(&layer, len, pl, &r),
                        Err(HashRequestError::NoPieceLayer)
                    );
                    assert_eq!(verify_hashes(&root, len, pl, &r, &[0; 64]), None);
                    continue;
                }
                assert_eq!(layer.len() as u64, pieces * 32);
                check_file(&layer, root, len, pl, true);
            }
        }
    }

    #[test]
    fn hash_requests_on_large_layers() {
        // Synthetic piece layers (the tree above them is all that matters): several
        // 512-hash buckets, partial last buckets, a power of two.
        let mut rng = XorShift(0x0bad_cafe_0000_0042);
        let pl = 256 * 1024;
        for pieces in [600u64, 1024, 1025] {
            let layer = rng.bytes(pieces as usize * 32);
            let root = layer_root(&layer, pl).expect("root");
            check_file(&layer, root, pieces * u64::from(pl) - 5, pl, false);
        }
    }

    #[test]
    fn answer_pads_past_the_last_piece() {
        // 3 pieces: the layer is padded to 4 with the root of a zero piece.
        let pl = 32 * 1024;
        let d: Vec<u8> = (0..2 * 32 * 1024 + 10).map(|i| (i % 251) as u8).collect();
        let (root, layer) = file_tree(&d, pl);
        let root = root.expect("root");
        let r = req(root, 1, 0, 4, 1);
        let ans = answer(&layer, d.len() as u64, pl, &r).expect("answer");
        assert_eq!(ans.len(), 4 * 32, "whole layer: no uncle");
        assert_eq!(&ans[..96], &layer[..]);
        assert_eq!(&ans[96..], &pad_hash(1)[..]);
        assert_eq!(
            verify_hashes(&root, d.len() as u64, pl, &r, &ans),
            Some(&layer[..])
        );
        // Index 2, length 2: piece 2 and a pad, then the uncle (hash of pieces 0, 1).
        let r = req(root, 1, 2, 2, 1);
        let ans = answer(&layer, d.len() as u64, pl, &r).expect("answer");
        assert_eq!(ans.len(), 3 * 32);
        assert_eq!(&ans[..32], &layer[64..]);
        assert_eq!(&ans[32..64], &pad_hash(1)[..]);
        let left: [Digest256; 2] = [
            layer[..32].try_into().expect("32"),
            layer[32..64].try_into().expect("32"),
        ];
        assert_eq!(&ans[64..], &sha256_pair(&left[0], &left[1])[..]);
        assert_eq!(
            verify_hashes(&root, d.len() as u64, pl, &r, &ans),
            Some(&layer[64..])
        );
        // A wrong pad fails even though it is past the file.
        let mut bad = ans.clone();
        bad[40] ^= 1;
        assert_eq!(verify_hashes(&root, d.len() as u64, pl, &r, &bad), None);
    }

    #[test]
    fn hash_request_errors() {
        let mut rng = XorShift(7);
        let pl = 16 * 1024;
        let pieces = 20u64;
        let len = pieces * u64::from(pl);
        let layer = rng.bytes(pieces as usize * 32);
        let root = layer_root(&layer, pl).expect("root");
        use HashRequestError::*;
        let cases: &[(u32, u32, u32, u32, u32, HashRequestError)] = &[
            // (piece length, base, index, length, proof layers)
            (pl, 1, 0, 2, 0, WrongBase),
            (pl, 0, 0, 1, 0, BadLength),
            (pl, 0, 0, 0, 0, BadLength),
            (pl, 0, 0, 3, 0, BadLength),
            (pl, 0, 0, 64, 0, BadLength),
            (pl, 0, 2, 4, 0, Misaligned),
            (pl, 0, 1, 2, 0, Misaligned),
            (pl, 0, 20, 2, 0, OutOfRange),
            (pl, 0, 24, 8, 0, OutOfRange),
            (pl, 0, u32::MAX - 1, 2, 0, OutOfRange),
            (pl, 0, 0, 2, 5, TooManyProofLayers),
            (pl, 0, 0, 2, u32::MAX, TooManyProofLayers),
            (0, 0, 0, 2, 0, BadPieceLength),
            (8 * 1024, 0, 0, 2, 0, BadPieceLength),
            (48 * 1024, 0, 0, 2, 0, BadPieceLength),
        ];
        for &(p, base, index, length, proof, want) in cases {
            let r = req(root, base, index, length, proof);
            assert_eq!(answer(&layer, len, p, &r), Err(want), "{r:?}");
            assert_eq!(verify_hashes(&root, len, p, &r, &[0; 64]), None);
        }
        // Requests over 512 are refused even where the layer is wider.
        let wide = rng.bytes(2048 * 32);
        let wide_len = 2048 * u64::from(pl);
        let r = req(root, 0, 0, 1024, 10);
        assert_eq!(answer(&wide, wide_len, pl, &r), Err(BadLength));
        assert!(answer(&wide, wide_len, pl, &req(root, 0, 0, 512, 10)).is_ok());
        // The layer must be one hash per piece.
        let r = req(root, 0, 0, 2, 4);
        assert_eq!(answer(&layer[32..], len, pl, &r), Err(LayerMismatch));
        assert_eq!(answer(&layer[1..], len, pl, &r), Err(LayerMismatch));
        assert_eq!(
            answer(&layer, len + u64::from(pl), pl, &r),
            Err(LayerMismatch)
        );
        // One piece, and an empty file, have no layer.
        assert_eq!(answer(&[], u64::from(pl), pl, &r), Err(NoPieceLayer));
        assert_eq!(answer(&[], 0, pl, &r), Err(NoPieceLayer));
        // The smallest layer (2 pieces): length 2, no proof layer possible.
        let two = rng.bytes(64);
        let two_root = layer_root(&two, pl).expect("root");
        let r = req(two_root, 0, 0, 2, 0);
        let ans = answer(&two, 2 * u64::from(pl), pl, &r).expect("answer");
        assert_eq!(ans, two);
        assert_eq!(
            verify_hashes(&two_root, 2 * u64::from(pl), pl, &r, &ans),
            Some(&two[..])
        );
        assert_eq!(
            answer(&two, 2 * u64::from(pl), pl, &req(two_root, 0, 0, 2, 1)),
            Err(TooManyProofLayers)
        );
        assert_eq!(layer_height(16 * 1024), 0);
        assert_eq!(layer_height(64 * 1024), 2);
        assert_eq!(layer_height(4 << 20), 8);
        assert_eq!(layer_height(1024), 0);
        for e in [BadLength, BufferTooSmall { needed: 9 }] {
            assert!(!std::format!("{e}").is_empty());
        }
    }

    #[test]
    fn verify_hashes_on_random_input_never_panics() {
        let mut rng = XorShift(0xdead_beef_f00d_0001);
        let root = [3u8; 32];
        let mut accepted = 0;
        for round in 0..20_000 {
            let pick = |rng: &mut XorShift, small: u64| -> u32 {
                match rng.next() % 4 {
                    0 => u32::MAX - (rng.next() % 3) as u32,
                    1 => rng.next() as u32,
                    _ => (rng.next() % small) as u32,
                }
            };
            let pl = match rng.next() % 4 {
                0 => rng.next() as u32,
                _ => (16 * 1024) << (rng.next() % 4),
            };
            let file_length = match rng.next() % 4 {
                0 => u64::MAX - rng.next() % 3,
                1 => rng.next(),
                _ => rng.next() % (40 * u64::from(pl.max(1))),
            };
            let r = req(
                if round % 2 == 0 {
                    root
                } else {
                    [rng.next() as u8; 32]
                },
                pick(&mut rng, 4),
                pick(&mut rng, 64),
                pick(&mut rng, 1100),
                pick(&mut rng, 70),
            );
            let n = (rng.next() % 40) as usize * 32 + if rng.next() % 8 == 0 { 5 } else { 0 };
            let hashes = rng.bytes(n);
            accepted += usize::from(verify_hashes(&root, file_length, pl, &r, &hashes).is_some());
        }
        assert_eq!(accepted, 0, "random hashes never prove");
        for _ in 0..3000 {
            let r = req(
                core::array::from_fn(|_| rng.next() as u8),
                rng.next() as u32 % 20,
                rng.next() as u32,
                rng.next() as u32,
                rng.next() as u32,
            );
            let n = (rng.next() % 12) as usize * 32;
            assert!(fuzz_hash_request(&r, &rng.bytes(n)), "{r:?}");
        }
        // Extreme but valid shapes answer and verify: a 2^50-piece file is out of
        // memory's reach, so check the request checks alone on it.
        let huge = u64::MAX;
        let r = req(root, 0, (1 << 31) - 512, 512, 40);
        assert!(matches!(
            answer(&[], huge, 16 * 1024, &r),
            Err(HashRequestError::LayerMismatch)
        ));
        assert_eq!(verify_hashes(&root, huge, 16 * 1024, &r, &[0; 32]), None);
    }

    /// The cached answer is byte for byte the uncached one, for layers under and over
    /// 512 pieces and every request shape (lengths, positions, proof depths).
    #[test]
    fn cached_answers_equal_the_uncached_ones() {
        let pl = 16 * 1024;
        for pieces in [2u64, 3, 511, 512, 513, 1100, 2100] {
            let layer: alloc::vec::Vec<u8> = (0..pieces * 32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
                .collect();
            let file_length = pieces * u64::from(pl) - 5;
            let upper = UpperTree::new(&layer, 0);
            let width_log = pieces.next_power_of_two().trailing_zeros();
            let mut checked = 0;
            for k in 1..=9u32 {
                let length = 1u32 << k;
                if u64::from(length) > pieces.next_power_of_two() {
                    break;
                }
                let all: alloc::vec::Vec<u32> =
                    (0..pieces as u32).step_by(length as usize).collect();
                let ends = all.iter().take(4).chain(all.iter().rev().take(2));
                for &index in ends {
                    for proof in [0, width_log / 2, width_log - 1] {
                        let r = req([1; 32], 0, index, length, proof);
                        let mut a = alloc::vec::Vec::new();
                        let mut b = alloc::vec::Vec::new();
                        let x = hashes_answer(&layer, file_length, pl, &r, &mut a);
                        let y = hashes_answer_cached(&layer, &upper, file_length, pl, &r, &mut b);
                        assert_eq!(x.is_ok(), y.is_ok(), "{pieces} {r:?}");
                        assert_eq!(a, b, "{pieces} {r:?}");
                        checked += usize::from(x.is_ok());
                    }
                }
            }
            assert!(checked > 0, "{pieces}");
        }
    }
}
