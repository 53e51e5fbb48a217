//! The host's SHA-1: the `sha1` crate, which uses the CPU's SHA extensions when the
//! processor has them (detected at run time) and is about twice as fast as the core's
//! portable `sha1_smol` on x86-64 (see `BENCHMARKS.md`).
//!
//! Also the digests of each block of a piece, which the session asks for when a piece
//! fails its check (to find which peer sent the bad block).

use crate::storage::Storage;
use btcore_core::hash::{Digest, Sha1};
use btcore_core::ids::PieceIndex;
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

/// Which SHA-1 code [`FastSha1`] runs on this processor: the `sha1` crate's own
/// run-time test, asked the same way (x86-64: SHA-NI with SSE2, SSSE3 and SSE4.1;
/// aarch64: the ARMv8 SHA extensions, which Rust and Linux's `HWCAP` name `sha2`);
/// elsewhere, and on armv7 (no such code in the crate), the portable one.
pub fn sha1_backend() -> &'static str {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse2")
            && std::arch::is_x86_feature_detected!("ssse3")
            && std::arch::is_x86_feature_detected!("sse4.1")
        {
            return "SHA-NI";
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("sha2") {
            return "ARMv8 SHA extensions";
        }
    }
    "portable"
}

/// The SHA-1 of each block of `piece` as stored (16 KiB blocks, the last one
/// shorter), read back one block at a time.
pub fn block_digests(
    storage: &Storage,
    piece: PieceIndex,
) -> Result<Vec<Digest>, crate::storage::StorageError> {
    let g = *storage.geometry();
    let n = g.blocks_in_piece(piece);
    let mut buf = vec![0u8; btcore_core::ids::BLOCK_LEN as usize];
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let Some(b) = g.block(piece, i) else { break };
        let buf = &mut buf[..b.len as usize];
        storage.read_block(&b, buf)?;
        out.push(FastSha1::digest(buf));
    }
    Ok(out)
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
