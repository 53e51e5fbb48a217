//! btcore-core: the `#![no_std]`, sans-IO heart of btcore.
//!
//! Nothing in this crate opens a socket or a file, reads a clock, draws randomness of
//! its own or spawns a thread: bytes, `now` and the results of disk work come in as
//! arguments; what to send, write, read, verify or announce goes out as data.
//!
//! Layers, bottom up:
//! - [`ids`], [`time`], [`rng`]: validated identifiers (info-hash, peer id, piece index)
//!   and the one [`ids::Geometry`] type that knows piece and block lengths; the core's
//!   own `Instant`/`Duration`; a seeded generator (the host seeds it).
//! - [`hash`]: a small SHA-1 trait so that a host can plug in a faster implementation;
//!   SHA-256 for BitTorrent v2.
//! - [`bencode`]: a `nom`-based decoder into a flat token table (no allocator), keeping
//!   the raw byte span of every value, and an encoder into any `embedded_io::Write`.
//! - [`metainfo`]: the view of a `.torrent` file over a decoded document: fields, piece
//!   hashes in place, files with offsets, sanitized paths; v1, hybrid and v2 (BEP 52).
//! - [`merkle`]: BEP 52 merkle trees (pieces roots, piece layers) without allocating.
//! - [`magnet`]: BEP 9 magnet URIs (`urn:btih:` and `urn:btmh:`), bounded and
//!   allocation-free.
//! - [`wire`]: the BEP 3 / 6 / 10 peer wire protocol: handshake, messages, framing.
//! - [`ext`]: BEP 10 extension handshake and BEP 9 metadata exchange.
//! - [`mse`]: message stream encryption (MSE/PE): the DH + RC4 handshake and filter,
//!   and the policy (`Encryption`, the per-connection `Link`): sniffing, fallback, redial.
//! - [`pex`]: BEP 11 peer exchange messages; [`lsd`]: BEP 14 local service discovery.
//! - [`portmap`]: NAT-PMP and PCP port mapping: the codecs and the client machine.
//! - [`picker`]: which block to request next: availability, rarest-first, endgame.
//! - [`tracker`]: HTTP and UDP (BEP 15) tracker codecs, BEP 12 tiers and the tracker
//!   server's logic.
//! - [`dht`]: BEP 5: the KRPC codec, routing table, lookups and peer store.
//! - [`utp`]: BEP 29 uTP with LEDBAT congestion control: the packet codec, the
//!   delay-based window, and (with `alloc`) connections and the demultiplexer of a
//!   UDP port.
//! - `bitfield`, `peer` and `session` (with `alloc`): piece sets, one connection's
//!   state, and the session that drives torrents, peers, picker and choker through the
//!   `Action`/`handle_*`/`Event` contract (`ARCHITECTURE.md`).
//!
//! The choker and the address grouping shared by the session and the DHT are
//! internal; [`ChokerConfig`] is re-exported for `SessionConfig::choker`. The types a
//! host uses most (`Session`, `SessionConfig`, `Action`, `Event`, `TorrentId`,
//! `ConnId`, `InfoHash`, `PeerId`, `Geometry`, `Instant`, `Duration`, `Metainfo`,
//! `Magnet`, `Rng`) are re-exported at the crate root as well.
//!
//! # Features
//!
//! - `alloc` (default): the session, DHT node, tracker server and metadata assembler.
//! - `fuzzing`: entry points for the fuzz targets and audits of internal consistency;
//!   not part of the API.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

/// The first 8 bytes of btcore's peer ids (Azureus style: `-`, client code `BQ`,
/// version 0.1.0.0, `-`), so other clients can tell btcore from others.
pub const PEER_ID_PREFIX: &[u8; 8] = b"-BQ0100-";

pub mod alt_speed;
pub mod bencode;
#[cfg(feature = "alloc")]
pub mod bitfield;
#[cfg(feature = "alloc")]
mod choker;
pub mod dht;
pub mod ext;
pub mod hash;
pub mod holepunch;
pub mod ids;
pub mod lsd;
pub mod magnet;
pub mod merkle;
pub mod metainfo;
pub mod mse;
#[cfg(feature = "alloc")]
mod netaddr;
#[cfg(feature = "alloc")]
pub mod peer;
pub mod pex;
pub mod picker;
pub mod portmap;
pub mod rng;
#[cfg(feature = "alloc")]
pub mod session;
pub mod time;
pub mod tracker;
pub mod utp;
pub mod wire;

#[cfg(feature = "alloc")]
pub use choker::ChokerConfig;

// The main types a host needs, at the crate root; the module paths stay valid.
pub use ids::{Geometry, InfoHash, PeerId};
pub use magnet::Magnet;
pub use metainfo::Metainfo;
pub use rng::Rng;
#[cfg(feature = "alloc")]
pub use session::{Action, ConnId, Event, Session, SessionConfig, TorrentId};
pub use time::{Duration, Instant};
