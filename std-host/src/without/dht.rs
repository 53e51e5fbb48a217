//! The DHT left out (a build without the `dht` feature).
//!
//! [`DhtOptions`] keeps its shape so that `ClientOptions` is the same in every build;
//! asking for a DHT ([`DhtHost::new`]) fails with `ErrorKind::Unsupported`, and
//! [`DhtHost`] cannot exist, so the event loop's DHT code is compiled out with it.

use btcore_core::dht::DhtStats;
use btcore_core::ids::InfoHash;
use btcore_core::session::TorrentId;
use btcore_core::time::Instant;
use mio::net::UdpSocket;
use std::convert::Infallible;

pub use crate::dht_report::{DhtReport, Found};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// DHT settings of a client (unused in this build).
#[derive(Clone, Debug, Default)]
pub struct DhtOptions {
    /// UDP port (0: the client's TCP listen port).
    pub port: u16,
    /// `host:port` nodes to bootstrap from.
    pub bootstrap: Vec<String>,
    /// Where the routing table is kept (`dht.state`).
    pub state_dir: Option<PathBuf>,
    /// The low-memory profile's limits.
    pub low_memory: bool,
}

/// A DHT node: none can be made in this build.
#[derive(Debug)]
pub struct DhtHost {
    /// The node's socket.
    pub socket: UdpSocket,
    never: Infallible,
}

impl DhtHost {
    /// Always fails: this build has no DHT.
    pub fn new(
        _bind: SocketAddr,
        _opts: &DhtOptions,
        _now: Instant,
        _seed: u64,
    ) -> io::Result<Self> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "built without the DHT (the `dht` feature)",
        ))
    }

    /// Counters.
    pub fn stats(&self, _now: Instant) -> DhtStats {
        match self.never {}
    }

    /// Handles waiting datagrams.
    pub fn read(&mut self, _now: Instant, _budget: usize) -> bool {
        match self.never {}
    }

    /// Handles waiting datagrams of the IPv6 socket, uTP ones to `utp`.
    pub fn read6_with(
        &mut self,
        _now: Instant,
        _budget: usize,
        _utp: impl FnMut(SocketAddr, &[u8]),
    ) -> bool {
        match self.never {}
    }

    /// Registers the sockets.
    pub fn register(
        &mut self,
        _registry: &mio::Registry,
        _token: mio::Token,
        _token6: mio::Token,
    ) -> io::Result<()> {
        match self.never {}
    }

    /// Takes the sockets out of `registry`.
    pub fn deregister(&mut self, _registry: &mio::Registry) {
        match self.never {}
    }

    /// Handles waiting datagrams, uTP ones to `utp`.
    pub fn read_with(
        &mut self,
        _now: Instant,
        _budget: usize,
        _utp: impl FnMut(SocketAddr, &[u8]),
    ) -> bool {
        match self.never {}
    }

    /// Runs timers; the peers found and the lookups done.
    pub fn service(&mut self, _now: Instant) -> DhtReport {
        match self.never {}
    }

    /// When the node next needs [`DhtHost::service`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.never {}
    }

    /// Performs a lookup the session asked for.
    pub fn lookup(
        &mut self,
        _now: Instant,
        _torrent: TorrentId,
        _info_hash: InfoHash,
        _announce: Option<u16>,
        _seq: u64,
    ) -> bool {
        match self.never {}
    }

    /// The session's lookups still running, forgotten.
    pub fn abandon_lookups(&mut self) -> Vec<(TorrentId, u64)> {
        match self.never {}
    }

    /// The UDP address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.never {}
    }

    /// Our external address, as the host learnt it.
    pub fn set_external_ip(&mut self, _now: Instant, _ip: std::net::IpAddr) {
        match self.never {}
    }

    /// The sockets, for uTP to share.
    pub fn sockets(&self) -> crate::utp::Sockets<'_> {
        match self.never {}
    }

    /// Saves the routing table.
    pub fn maybe_save(&mut self, _now: Instant, _force: bool) {
        match self.never {}
    }
}
