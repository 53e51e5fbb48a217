//! A BEP 3 bitfield: bit `i` (most significant bit first) says piece `i` is present.

use alloc::vec;
use alloc::vec::Vec;

/// A growable set of pieces in the wire layout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: u32,
    count: u32,
}

impl Bitfield {
    /// `len` pieces, none present.
    pub fn new(len: u32) -> Self {
        Self {
            bits: vec![0; (len as usize).div_ceil(8)],
            len,
            count: 0,
        }
    }
    /// `len` pieces, all present.
    pub fn full(len: u32) -> Self {
        let mut b = Self::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }
    /// Reads a wire bitfield for `len` pieces; `None` if it has the wrong length or a
    /// spare bit set (a peer at fault).
    pub fn from_wire(bytes: &[u8], len: u32) -> Option<Self> {
        if bytes.len() != (len as usize).div_ceil(8) {
            return None;
        }
        let spare = (bytes.len() * 8) as u32 - len;
        if spare > 0 {
            let mask = (1u8 << spare) - 1;
            if bytes.last().is_some_and(|b| b & mask != 0) {
                return None;
            }
        }
        let count = bytes.iter().map(|b| b.count_ones()).sum();
        Some(Self {
            bits: bytes.to_vec(),
            len,
            count,
        })
    }
    /// Number of pieces the field covers.
    pub const fn len(&self) -> u32 {
        self.len
    }
    /// Whether it covers no piece.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Pieces present.
    pub const fn count(&self) -> u32 {
        self.count
    }
    /// Whether every piece is present.
    pub const fn is_full(&self) -> bool {
        self.count == self.len
    }
    /// Whether piece `i` is present (false when out of range).
    pub fn get(&self, i: u32) -> bool {
        self.bits
            .get((i / 8) as usize)
            .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
            && i < self.len
    }
    /// Marks piece `i` present; returns whether it was newly set (false when out of range).
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bits[(i / 8) as usize] |= 0x80 >> (i % 8);
        self.count += 1;
        true
    }
    /// Marks piece `i` absent.
    pub fn clear(&mut self, i: u32) {
        if self.get(i) {
            self.bits[(i / 8) as usize] &= !(0x80 >> (i % 8));
            self.count -= 1;
        }
    }
    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }
    /// Indices of present pieces.
    pub fn iter_set(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_and_spare_bits() {
        let b = Bitfield::from_wire(&[0b1010_0000, 0b1000_0000], 9).expect("valid");
        assert_eq!(b.count(), 3);
        assert!(b.get(0) && b.get(2) && b.get(8) && !b.get(1) && !b.get(9));
        assert!(Bitfield::from_wire(&[0xff, 0b1100_0000], 9).is_none());
        assert!(Bitfield::from_wire(&[0xff], 9).is_none());
        let mut f = Bitfield::new(3);
        assert!(f.set(2) && !f.set(2) && !f.set(3));
        f.clear(2);
        assert_eq!(f.count(), 0);
        assert!(Bitfield::full(9).is_full());
        assert_eq!(Bitfield::full(9).as_bytes(), &[0xff, 0x80]);
    }
}
