//! btcore-core: the `#![no_std]`, sans-IO heart of btcore.
//!
//! Nothing in this crate opens a socket or a file, reads a clock or spawns a thread:
//! bytes come in as arguments and results go out into caller-provided buffers.
//!
//! Layers, bottom up:
//! - [`ids`]: validated identifiers (info-hash, peer id, piece index) and the one
//!   [`ids::Geometry`] type that knows piece and block lengths.
//! - [`hash`]: a small SHA-1 trait so that a host can plug in a faster implementation.
//! - [`bencode`]: a `nom`-based decoder into a flat token table (no allocator), keeping
//!   the raw byte span of every value, and an encoder into any `embedded_io::Write`.
//! - [`metainfo`]: the view of a `.torrent` file over a decoded document: fields, piece
//!   hashes in place, files with offsets, sanitized paths.
//! - [`magnet`]: BEP 9 magnet URIs, bounded and allocation-free.
//! - [`wire`]: the BEP 3 / 6 / 10 peer wire protocol: handshake, messages, framing.
//! - [`ext`]: BEP 10 extension handshake and BEP 9 metadata exchange.
//! - [`mse`]: message stream encryption (MSE/PE): the DH + RC4 handshake and filter,
//!   and the policy (`Encryption`, the per-connection `Link`): sniffing, fallback, redial.
//! - [`pex`]: BEP 11 peer exchange messages.
//! - [`picker`]: which block to request next: availability, rarest-first, endgame.
//! - [`tracker`]: HTTP and UDP (BEP 15) tracker codecs and BEP 12 tiers.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

/// The first 8 bytes of btcore's peer ids (Azureus style: `-`, client code `BQ`,
/// version 0.1.0.0, `-`), so other clients can tell btcore from others.
pub const PEER_ID_PREFIX: &[u8; 8] = b"-BQ0100-";

pub mod bencode;
#[cfg(feature = "alloc")]
pub mod bitfield;
pub mod choker;
pub mod dht;
pub mod ext;
pub mod hash;
pub mod ids;
pub mod lsd;
pub mod magnet;
pub mod metainfo;
pub mod mse;
#[cfg(feature = "alloc")]
mod netaddr;
#[cfg(feature = "alloc")]
pub mod peer;
pub mod pex;
pub mod picker;
pub mod rng;
#[cfg(feature = "alloc")]
pub mod session;
pub mod time;
pub mod tracker;
pub mod wire;
