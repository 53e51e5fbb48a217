//! SHA-1 behind a small trait, and SipHash-2-4 for keyed hashes of short inputs.
//!
//! The core hashes with `sha1_smol` (portable, no_std, about 0.8 GB/s on one x86-64
//! core). A host can pass its own [`Sha1`] implementation wherever the core verifies
//! data, for example one using the CPU's SHA extensions.
//!
//! [`siphash24`] is a keyed pseudo-random function (Aumasson and Bernstein, 2012) for
//! the tracker's hot path: its UDP connection ids and the hash index of its peers,
//! where the key keeps clients from forging ids or choosing colliding addresses. It
//! costs a few dozen nanoseconds on 24 bytes, where SHA-1 takes two blocks.

/// A SHA-1 digest.
pub type Digest = [u8; 20];

/// An incremental SHA-1 hasher.
pub trait Sha1: Default {
    /// Feeds more bytes.
    fn update(&mut self, data: &[u8]);
    /// Returns the digest of everything fed so far.
    fn finish(self) -> Digest;

    /// Hashes one buffer.
    fn digest(data: &[u8]) -> Digest {
        let mut h = Self::default();
        h.update(data);
        h.finish()
    }
}

/// The portable hasher of the core (`sha1_smol`).
#[derive(Default, Clone)]
pub struct SmolSha1(sha1_smol::Sha1);

impl core::fmt::Debug for SmolSha1 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SmolSha1")
    }
}

impl Sha1 for SmolSha1 {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn finish(self) -> Digest {
        self.0.digest().bytes()
    }
}

/// SHA-1 of `data` with the core's portable hasher.
pub fn sha1(data: &[u8]) -> Digest {
    SmolSha1::digest(data)
}

/// A SHA-256 digest (BEP 52 v2 info-hashes and merkle trees).
pub type Digest256 = [u8; 32];

/// SHA-256 of `data` (the `sha2` crate: portable, with the CPU's SHA extensions on
/// x86-64 and aarch64 where it detects them at run time).
pub fn sha256(data: &[u8]) -> Digest256 {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

/// SHA-256 of `a` then `b` (a merkle tree's inner node).
pub fn sha256_pair(a: &Digest256, b: &Digest256) -> Digest256 {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(a);
    h.update(b);
    h.finalize().into()
}

/// SipHash-2-4 of `data` under the 128-bit `key` (little-endian halves, as in the
/// reference implementation).
pub fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let k0 = u64::from_le_bytes([
        key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
    ]);
    let k1 = u64::from_le_bytes([
        key[8], key[9], key[10], key[11], key[12], key[13], key[14], key[15],
    ]);
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut blocks = data.chunks_exact(8);
    for b in &mut blocks {
        let m = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        v[3] ^= m;
        sip_rounds(&mut v, 2);
        v[0] ^= m;
    }
    let mut last = [0u8; 8];
    let tail = blocks.remainder();
    last[..tail.len()].copy_from_slice(tail);
    last[7] = data.len() as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    sip_rounds(&mut v, 2);
    v[0] ^= m;
    v[2] ^= 0xff;
    sip_rounds(&mut v, 4);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn sip_rounds(v: &mut [u64; 4], n: usize) {
    for _ in 0..n {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash_reference_vectors() {
        // The paper's appendix A and the reference `vectors.h` (key 00..0f, message
        // 00..len-1).
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let msg: [u8; 64] = core::array::from_fn(|i| i as u8);
        assert_eq!(siphash24(&key, &msg[..0]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(&key, &msg[..15]), 0xa129_ca61_49be_45e5);
        assert_eq!(siphash24(&key, &msg[..8]), 0x93f5_f579_9a93_2462);
        assert_ne!(siphash24(&[1; 16], &msg[..15]), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn known_vectors() {
        assert_eq!(
            sha1(b"abc"),
            [
                0xa9, 0x99, 0x3e, 0x36, 0x47, 0x06, 0x81, 0x6a, 0xba, 0x3e, 0x25, 0x71, 0x78, 0x50,
                0xc2, 0x6c, 0x9c, 0xd0, 0xd8, 0x9d
            ]
        );
        let mut h = SmolSha1::default();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), sha1(b"abc"));
    }
}
