//! What a DHT node reports to the event loop (shared by the node and by its stand-in in
//! a build without the `dht` feature, so the loop compiles the same in both).

use btcore_core::ids::InfoHash;
use btcore_core::session::{DhtOutcome, TorrentId};
use std::net::SocketAddr;

/// Peers a lookup found (one response's worth).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The torrent whose lookup found them (`None`: a lookup the session did not ask
    /// for, such as `DhtHost::get_peers`).
    pub torrent: Option<TorrentId>,
    /// The info-hash looked up.
    pub info_hash: InfoHash,
    /// The peers.
    pub peers: Vec<SocketAddr>,
}

/// What the node did since the last `DhtHost::service`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DhtReport {
    /// Peers found.
    pub found: Vec<Found>,
    /// The session's lookups that ended: torrent, the lookup's number, how it went.
    pub done: Vec<(TorrentId, u64, DhtOutcome)>,
}
