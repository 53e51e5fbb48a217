//! SHA-1 behind a small trait.
//!
//! The core hashes with `sha1_smol` (portable, no_std, about 0.8 GB/s on one x86-64
//! core). A host can pass its own [`Sha1`] implementation wherever the core verifies
//! data, for example one using the CPU's SHA extensions.

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

#[cfg(test)]
mod tests {
    use super::*;

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
