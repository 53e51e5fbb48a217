//! Local Service Discovery left out (a build without the `lsd` feature).
//!
//! `ClientOptions::lsd` still exists; turning it on makes `Client::new` fail with
//! `ErrorKind::Unsupported` ([`LsdHost::new`]), and [`LsdHost`] cannot exist, so the
//! event loop's LSD code is compiled out with it.

use btcore_core::ids::InfoHash;
use btcore_core::time::Instant;
use mio::net::UdpSocket;
use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// LSD settings of a client (unused in this build).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LsdOptions {
    /// The TCP port peers reach us at.
    pub port_to_announce: u16,
    /// The multicast group and UDP port.
    pub group: SocketAddrV4,
    /// The interface to join the group and send on.
    pub interface: Ipv4Addr,
}

impl Default for LsdOptions {
    fn default() -> Self {
        Self {
            port_to_announce: 0,
            group: btcore_core::lsd::GROUP_ADDR_V4,
            interface: Ipv4Addr::UNSPECIFIED,
        }
    }
}

/// An LSD socket: none can be made in this build.
#[derive(Debug)]
pub struct LsdHost {
    never: Infallible,
}

impl LsdHost {
    /// Always fails: this build has no LSD.
    pub fn new(_opts: LsdOptions) -> io::Result<Self> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "built without Local Service Discovery (the `lsd` feature)",
        ))
    }

    /// The socket, for registration with the event loop.
    pub fn socket_mut(&mut self) -> &mut UdpSocket {
        match self.never {}
    }

    /// The peers heard since the last call.
    pub fn read(&mut self, _now: Instant) -> Vec<(InfoHash, SocketAddr)> {
        match self.never {}
    }

    /// Announces `torrents` when due.
    pub fn service(&mut self, _now: Instant, _torrents: &[InfoHash]) {
        match self.never {}
    }

    /// Never called: no value of this type exists.
    pub fn set_port_to_announce(&mut self, _port: u16) {
        match self.never {}
    }
}
