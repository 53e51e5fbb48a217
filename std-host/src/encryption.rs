//! Protocol encryption (MSE/PE) on the host side: key material, and the link type
//! the event loop keeps per socket.
//!
//! The policy is the core's ([`btcore_core::mse::Link`], [`Encryption`]): what an
//! accepted connection is (plain or MSE, refused or not), whether a dialed one starts
//! with MSE, the redial in plain text after a failed attempt, the handshake deadline
//! and the check of the torrent a peer names. The event loop (`client/`) only moves
//! bytes through the link, arms the timer it names and dials when its [`Close`]
//! verdict says so. This module supplies the secret keys each handshake needs, from
//! the OS, and the heap-backed link type.

use std::collections::HashMap;

use btcore_core::ids::InfoHash;
pub use btcore_core::mse::Encryption;
use btcore_core::mse::{self, Handshake, Keys, StreamCrypto, PRIVATE_LEN};
pub(crate) use btcore_core::mse::{Close, Up};
use btcore_core::session::TorrentId;
use sha1::Digest;

/// A connection's encryption layer, its handshake and RC4 filter on the heap so that a
/// plain connection costs a few dozen bytes.
pub(crate) type Link = mse::Link<Box<Handshake>, Box<StreamCrypto>>;

/// Secret DH private keys and pad seeds: SHA-1 over a 32-byte secret from the OS and a
/// counter.
pub(crate) struct KeySource {
    secret: [u8; 32],
    counter: u64,
}

impl KeySource {
    pub(crate) fn new() -> Self {
        let secret = crate::os::random_array();
        Self { secret, counter: 0 }
    }

    /// A private key and, from a separate hash, the seed of the pads (which go out in
    /// the clear and so must tell nothing about the key).
    pub(crate) fn next(&mut self) -> Keys {
        self.counter += 1;
        let digest = |tag: &[u8]| {
            let mut h = sha1::Sha1::new();
            h.update(tag);
            h.update(self.secret);
            h.update(self.counter.to_le_bytes());
            h.finalize()
        };
        let mut private = [0u8; PRIVATE_LEN];
        private.copy_from_slice(&digest(b"key"));
        let d = digest(b"pad");
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&d[..8]);
        Keys {
            private,
            pad_seed: u64::from_le_bytes(seed),
        }
    }
}

/// The torrents of a client, as a link looks them up: by `SHA1("req2", info_hash)`
/// for an MSE handshake, by info-hash for a plain one. Each torrent gives its
/// info-hash and, for a hybrid, its truncated v2 info-hash (BEP 52: both swarms).
pub(crate) struct OurTorrents<'a, T>(
    pub(crate) &'a HashMap<TorrentId, T>,
    pub(crate) fn(&T) -> (InfoHash, Option<InfoHash>),
);

impl<T> OurTorrents<'_, T> {
    fn hashes(&self) -> impl Iterator<Item = InfoHash> + '_ {
        self.0.values().flat_map(|t| {
            let (v1, v2) = (self.1)(t);
            core::iter::once(v1).chain(v2)
        })
    }
}

impl<T> mse::Torrents for OurTorrents<'_, T> {
    fn find_req2(&self, req2: &[u8; 20]) -> Option<InfoHash> {
        self.hashes().find(|ih| mse::req2_hash(ih) == *req2)
    }
    fn contains(&self, info_hash: &InfoHash) -> bool {
        self.hashes().any(|ih| ih == *info_hash)
    }
}
