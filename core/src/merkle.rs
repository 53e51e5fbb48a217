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

use crate::hash::{sha256, sha256_pair, Digest256};
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

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
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
}
