//! BEP 14 Local Service Discovery on the host: one UDP socket in the IPv4 LSD multicast
//! group (`239.192.152.143:6771`) on the client's event loop. It announces the
//! caller's torrents on the LAN and reports the peers that announce the same ones.
//!
//! The socket is bound to `0.0.0.0:6771` with `SO_REUSEADDR` and `SO_REUSEPORT`, so
//! several clients on one machine share the port; multicast loopback is on so that
//! they hear each other, and each recognizes its own announces by a random cookie.
//! The TTL is 1: announces never leave the LAN segment.
//!
//! Private torrents (BEP 27) must never be announced: the caller passes only public
//! torrents to [`LsdHost::service`] and drops what [`LsdHost::read`] returns for any
//! other info-hash.

use btcore_core::ids::InfoHash;
use btcore_core::lsd::{self, ANNOUNCE_INTERVAL, HASHES_PER_DATAGRAM, MAX_DATAGRAM};
use btcore_core::time::{Duration, Instant};
use mio::net::UdpSocket;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// The same peer announcing the same torrent is reported at most this often.
const REPORT_AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// Bound on the (torrent, peer) pairs remembered for [`REPORT_AT_MOST_EVERY`].
const MAX_SEEN: usize = 4096;
/// Most pairs returned by one [`LsdHost::read`] (the rest of a flood is dropped).
const MAX_REPORTED_PER_READ: usize = 1024;

/// LSD settings of a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LsdOptions {
    /// The TCP port peers reach us at (the `Port` header).
    pub port_to_announce: u16,
    /// The multicast group and UDP port (default `239.192.152.143:6771`).
    pub group: SocketAddrV4,
    /// The interface (by its IPv4 address) to join the group and send on
    /// (default `0.0.0.0`: the one the routing table picks).
    pub interface: Ipv4Addr,
}

impl Default for LsdOptions {
    fn default() -> Self {
        Self {
            port_to_announce: 0,
            group: lsd::GROUP_ADDR_V4,
            interface: Ipv4Addr::UNSPECIFIED,
        }
    }
}

/// Counters for display and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LsdStats {
    /// Datagrams sent to the group.
    pub sent: u64,
    /// Datagrams that failed to send.
    pub send_errors: u64,
    /// Datagrams received (all of them).
    pub received: u64,
    /// Received datagrams that were not valid announces, or came from an address
    /// that cannot be connected to (`0.0.0.0`).
    pub refused: u64,
    /// Our own announces, looped back.
    pub own: u64,
    /// (torrent, peer) pairs reported by [`LsdHost::read`].
    pub reported: u64,
}

/// The LSD endpoint of a client.
#[derive(Debug)]
pub struct LsdHost {
    socket: UdpSocket,
    opts: LsdOptions,
    cookie: [u8; 16],
    /// When each torrent was last announced.
    last_sent: HashMap<InfoHash, Instant>,
    /// When each (torrent, peer) pair was last reported.
    seen: HashMap<(InfoHash, SocketAddr), Instant>,
    stats: LsdStats,
    buf: Vec<u8>,
}

impl LsdHost {
    /// Binds `0.0.0.0:<group port>` (shared with other clients on this machine), joins
    /// the group on `opts.interface` with loopback on and a TTL of 1. Nothing is sent
    /// until [`LsdHost::service`].
    pub fn new(opts: LsdOptions) -> io::Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        let bind = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, opts.group.port());
        socket.bind(&bind.into())?;
        socket.join_multicast_v4(opts.group.ip(), &opts.interface)?;
        if !opts.interface.is_unspecified() {
            socket.set_multicast_if_v4(&opts.interface)?;
        }
        socket.set_multicast_loop_v4(true)?;
        socket.set_multicast_ttl_v4(1)?;
        let socket = UdpSocket::from_std(socket.into());
        Ok(Self {
            socket,
            opts,
            cookie: lsd::make_cookie(crate::os::random_u64()),
            last_sent: HashMap::new(),
            seen: HashMap::new(),
            stats: LsdStats::default(),
            buf: vec![0u8; MAX_DATAGRAM + 1],
        })
    }

    /// The socket, to register on the client's poll (readable).
    pub fn socket_mut(&mut self) -> &mut UdpSocket {
        &mut self.socket
    }

    /// The bound address (`0.0.0.0:6771`).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Our cookie: datagrams carrying it are ours and are ignored.
    pub fn cookie(&self) -> &[u8] {
        &self.cookie
    }

    /// Counters.
    pub fn stats(&self) -> LsdStats {
        self.stats
    }

    /// Changes the TCP port announced (e.g. once the listen socket is bound). Takes
    /// effect at the next announce.
    pub fn set_port_to_announce(&mut self, port: u16) {
        self.opts.port_to_announce = port;
    }

    /// Reads every waiting datagram (the socket is edge-triggered: call this on every
    /// readable event) and returns the peers announced: the sender's IP with the
    /// announced TCP port, per info-hash. Our own announces and anything malformed
    /// are dropped; the same (torrent, peer) pair is reported at most once a minute.
    pub fn read(&mut self, now: Instant) -> Vec<(InfoHash, SocketAddr)> {
        let mut found = Vec::new();
        loop {
            let (n, from) = match self.socket.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            self.stats.received += 1;
            // A datagram longer than MAX_DATAGRAM fills the buffer and is refused.
            let a = match lsd::parse(&self.buf[..n]) {
                Ok(a) => a,
                Err(e) => {
                    self.stats.refused += 1;
                    log::trace!("lsd: refused a datagram from {from}: {e}");
                    continue;
                }
            };
            if a.is_own(&self.cookie) {
                self.stats.own += 1;
                continue;
            }
            // A sender without an address (0.0.0.0: no source on the route) or a
            // group address cannot be connected to.
            if from.ip().is_unspecified() || from.ip().is_multicast() {
                self.stats.refused += 1;
                log::trace!("lsd: an announce from unusable address {from}");
                continue;
            }
            let peer = SocketAddr::new(from.ip(), a.port());
            for ih in a.infohashes() {
                if found.len() >= MAX_REPORTED_PER_READ {
                    break;
                }
                let recent = self
                    .seen
                    .get(&(ih, peer))
                    .is_some_and(|&t| now.since(t) < REPORT_AT_MOST_EVERY);
                if recent {
                    continue;
                }
                if self.seen.len() >= MAX_SEEN {
                    self.seen
                        .retain(|_, t| now.since(*t) < REPORT_AT_MOST_EVERY);
                    if self.seen.len() >= MAX_SEEN {
                        self.seen.clear();
                    }
                }
                self.seen.insert((ih, peer), now);
                log::debug!("lsd: {peer} announces {ih}");
                found.push((ih, peer));
            }
        }
        self.stats.reported += found.len() as u64;
        found
    }

    /// Announces the torrents of `torrents` that are due (never announced, or last
    /// announced [`ANNOUNCE_INTERVAL`] ago), several per datagram. Pass only public
    /// torrents: a private one must never be announced. Torrents no longer passed are
    /// forgotten (announced at once if they come back). Does nothing while the port
    /// to announce is 0.
    pub fn service(&mut self, now: Instant, torrents: &[InfoHash]) {
        let mut due: Vec<InfoHash> = torrents
            .iter()
            .copied()
            .filter(|ih| lsd::is_due(self.last_sent.get(ih).copied(), now))
            .collect();
        // A torrent was added or removed: forget the ones no longer passed.
        if !due.is_empty() || self.last_sent.len() != torrents.len() {
            let keep: std::collections::HashSet<&InfoHash> = torrents.iter().collect();
            self.last_sent.retain(|ih, _| keep.contains(ih));
        }
        if self.opts.port_to_announce == 0 {
            return;
        }
        due.sort_unstable();
        due.dedup();
        let mut out = [0u8; MAX_DATAGRAM];
        for batch in due.chunks(HASHES_PER_DATAGRAM) {
            let n = match lsd::write_announce(
                &mut out,
                self.opts.port_to_announce,
                batch,
                &self.cookie,
                false,
            ) {
                Ok(n) => n,
                Err(e) => {
                    log::warn!("lsd: cannot write an announce: {e}");
                    continue;
                }
            };
            // Marked as sent even when sending fails (no multicast route, a full
            // buffer): retried at the next interval, not on every turn of the loop.
            for ih in batch {
                self.last_sent.insert(*ih, now);
            }
            match self
                .socket
                .send_to(&out[..n], SocketAddr::V4(self.opts.group))
            {
                Ok(_) => self.stats.sent += 1,
                Err(e) => {
                    self.stats.send_errors += 1;
                    log::debug!("lsd: sending an announce: {e}");
                }
            }
        }
    }

    /// When [`LsdHost::service`] next has something to send for the torrents it was
    /// last given (None: nothing announced yet).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.last_sent
            .values()
            .map(|&t| t + ANNOUNCE_INTERVAL)
            .min()
    }
}
