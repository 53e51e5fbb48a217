//! The host's SHA-1: the `sha1` crate, which uses the CPU's SHA extensions when the
//! processor has them (detected at run time) and is about twice as fast as the core's
//! portable `sha1_smol` on x86-64 (see `BENCHMARKS.md`).

use btcore_core::hash::{Digest, Sha1};
use sha1::Digest as _;

/// SHA-1 with run-time detection of SHA-NI / ARMv8 SHA instructions.
#[derive(Default, Clone, Debug)]
pub struct FastSha1(sha1::Sha1);

impl Sha1 for FastSha1 {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn finish(self) -> Digest {
        self.0.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use btcore_core::hash::SmolSha1;

    #[test]
    fn agrees_with_the_core() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in [0, 1, 55, 56, 64, 1000, data.len()] {
            assert_eq!(
                FastSha1::digest(&data[..len]),
                SmolSha1::digest(&data[..len])
            );
        }
    }
}
