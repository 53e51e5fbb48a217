//! uTP peers on the host: the core's [`UtpSocket`] over one UDP port, the same port
//! number as the TCP listener. That port is shared with the DHT when the node binds it
//! (as libtorrent does: the DHT socket reads every datagram and hands the uTP ones
//! here, [`btcore_core::utp::classify`] tells them apart by their first byte);
//! otherwise this host binds its own socket there ([`OwnSockets`]).
//!
//! Both families: listening on `0.0.0.0`, the port is bound twice, an IPv4 socket and
//! an IPv6-only twin on `[::]` (the DHT's pair when shared, BEP 32); on `[::]`, one
//! dual-stack socket. Each datagram leaves on the socket of its destination's family
//! ([`Sockets`]); a family with no socket is never dialed over uTP
//! ([`UtpHost::reaches`]).
//!
//! The event loop sees a uTP connection as a byte stream like a TCP one
//! ([`UtpHost::read`], [`UtpHost::write`]); this host turns what the socket did into
//! the loop's news: connections accepted, evicted, and touched (a packet or a timer
//! changed them: readable, writable, connected or closed), which the loop drains each
//! turn. Datagrams leave in [`UtpHost::transmit`], up to the socket's send buffer, in
//! batches of one `sendmmsg(2)` each; those that would block are kept and sent first
//! next time. Our own socket is read in batches of one `recvmmsg(2)`. On Linux a
//! connection's run of full packets leaves as one buffer the kernel cuts
//! (`UDP_SEGMENT`), and a peer's runs arrive as one (`UDP_GRO`, on our sockets and the
//! DHT's): the core's socket gives each connection's packets in a row
//! ([`btcore_core::utp::TRANSMIT_BURST`]) so that runs form (`udp_batch`).
//!
//! Spoofed SYNs: a SYN costs one STATE in reply (as a TCP SYN costs a SYN-ACK) and a
//! slot of the socket, which the next SYN or dial may take back. The session hears of
//! an incoming connection only once the core's socket reports it confirmed (the peer
//! acked our STATE, whose random sequence number a sender at a forged address never
//! saw); the socket drops one not confirmed within its `confirm_timeout`. Connections
//! the session let go close gracefully for at most the socket's `linger`, then are
//! aborted.

use crate::udp_batch::{SendBatch, UdpBatch};
use btcore_core::session::ConnId;
use btcore_core::time::Instant;
use btcore_core::utp::{ConnHandle, Event, Incoming, State, UtpConfig, UtpSocket};
use mio::net::UdpSocket;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;

/// Datagrams sent in one [`UtpHost::transmit`] at most: a burst of every connection's
/// window cannot hold the loop (the rest go next turn).
pub const SENDS_PER_TURN: usize = 1024;

/// The UDP sockets datagrams leave on: `main` (an IPv6 one when `main_v6`, reaching
/// IPv4 peers too when `main_dual`) and an IPv6-only `v6` beside an IPv4 `main`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sockets<'a> {
    /// The socket at the listen address.
    pub main: Option<&'a UdpSocket>,
    /// `main` is an IPv6 socket.
    pub main_v6: bool,
    /// `main` is an IPv6 socket that reaches IPv4 peers too (dual stack: bound to
    /// `[::]` with `IPV6_V6ONLY` off).
    pub main_dual: bool,
    /// The IPv6 twin of an IPv4 `main` bound to all addresses.
    pub v6: Option<&'a UdpSocket>,
}

impl<'a> Sockets<'a> {
    /// The socket that reaches peers of one family, if any.
    pub fn for_family(&self, v6: bool) -> Option<&'a UdpSocket> {
        match (v6, self.main_v6) {
            (false, false) | (true, true) => self.main,
            (false, true) => self.main.filter(|_| self.main_dual),
            (true, false) => self.v6,
        }
    }
}

/// uTP's own UDP sockets, when it does not share the DHT's: one at the listen address
/// and, when that is `0.0.0.0`, an IPv6-only twin on `[::]` and the same port.
#[derive(Debug)]
pub struct OwnSockets {
    main: UdpSocket,
    main_v6: bool,
    main_dual: bool,
    v6: Option<UdpSocket>,
    port: u16,
}

impl OwnSockets {
    /// Binds uTP's sockets at `addr` (large buffers: a burst waits for the next turn
    /// of the loop rather than being dropped).
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let main = tune(UdpSocket::bind(addr)?);
        let port = main.local_addr()?.port();
        let v6 = crate::os::bind_v6_beside(&main, addr, "uTP").map(tune);
        Ok(Self {
            main_dual: dual_stack(&main, addr),
            main,
            main_v6: addr.is_ipv6(),
            v6,
            port,
        })
    }

    /// The port bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The sockets to send on.
    pub fn sockets(&self) -> Sockets<'_> {
        Sockets {
            main: Some(&self.main),
            main_v6: self.main_v6,
            main_dual: self.main_dual,
            v6: self.v6.as_ref(),
        }
    }

    /// Registers the sockets with `registry`: the first under `token`, the IPv6 twin
    /// (if any) under `token6`.
    pub fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        token6: mio::Token,
    ) -> io::Result<()> {
        registry.register(&mut self.main, token, mio::Interest::READABLE)?;
        if let Some(s) = self.v6.as_mut() {
            registry.register(s, token6, mio::Interest::READABLE)?;
        }
        Ok(())
    }

    /// Takes the sockets out of `registry`.
    pub fn deregister(&mut self, registry: &mio::Registry) {
        let _ = registry.deregister(&mut self.main);
        if let Some(s) = self.v6.as_mut() {
            let _ = registry.deregister(s);
        }
    }
}

/// Whether `s`, bound to `addr`, is an IPv6 socket that reaches IPv4 peers as well:
/// bound to `[::]` with `IPV6_V6ONLY` off (the default on Linux, not everywhere).
pub fn dual_stack(s: &UdpSocket, addr: SocketAddr) -> bool {
    addr.is_ipv6()
        && addr.ip().is_unspecified()
        && socket2::SockRef::from(s).only_v6().is_ok_and(|only| !only)
}

/// Large buffers, and runs of datagrams from one peer read as one
/// ([`crate::udp_batch::enable_gro`]; the socket is read by a coalescing batch).
fn tune(s: UdpSocket) -> UdpSocket {
    let _ = socket2::SockRef::from(&s).set_recv_buffer_size(2 << 20);
    let _ = socket2::SockRef::from(&s).set_send_buffer_size(2 << 20);
    crate::udp_batch::enable_gro(&s);
    s
}

/// The uTP side of a client.
#[derive(Debug)]
pub struct UtpHost {
    socket: UtpSocket<SocketAddr>,
    /// Sockets of our own, when the DHT does not share its own.
    pub(crate) own: Option<OwnSockets>,
    /// The session's connection behind each uTP connection the loop holds.
    conns: HashMap<ConnHandle, ConnId>,
    touched: Vec<ConnHandle>,
    accepted: Vec<(ConnHandle, SocketAddr)>,
    evicted: Vec<ConnHandle>,
    /// The last transmit stopped at [`SENDS_PER_TURN`] with more to send.
    more: bool,
    /// Datagrams encoded and not yet sent (those that would have blocked first), to
    /// peers reached through the main socket, and through the IPv6 twin.
    tx: SendBatch,
    tx6: SendBatch,
    /// Datagrams read from our own socket land here (allocated on first read: a
    /// socket shared with the DHT is read by the DHT).
    rx: Option<Box<UdpBatch>>,
}

impl UtpHost {
    /// A uTP endpoint with `cfg`'s bounds; `own` are its sockets unless it shares the
    /// DHT's.
    pub fn new(cfg: UtpConfig, seed: u64, own: Option<OwnSockets>) -> Self {
        let size = usize::from(cfg.max_packet_size).max(64);
        Self {
            socket: UtpSocket::new(cfg, seed),
            own,
            conns: HashMap::new(),
            touched: Vec::new(),
            accepted: Vec::new(),
            evicted: Vec::new(),
            more: false,
            tx: SendBatch::new(size),
            tx6: SendBatch::new(size),
            rx: None,
        }
    }

    /// Whether a peer of `addr`'s family can be dialed: a socket of that family is
    /// ours, or the DHT's in `shared` when we have none.
    pub fn reaches(&self, addr: SocketAddr, shared: Sockets<'_>) -> bool {
        self.sockets(shared).for_family(addr.is_ipv6()).is_some()
    }

    fn sockets<'a>(&'a self, shared: Sockets<'a>) -> Sockets<'a> {
        match &self.own {
            Some(o) => o.sockets(),
            None => shared,
        }
    }

    /// Connections held (the loop's and the orphans closing).
    pub fn len(&self) -> usize {
        self.socket.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.socket.is_empty()
    }

    /// A datagram from `from` that the first-byte check called uTP.
    pub fn on_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        deliver(&mut self.socket, now, from, datagram);
    }

    /// Sorts the socket's news: accepted, changed (touched), dropped (evicted).
    fn drain_events(&mut self) {
        while let Some(ev) = self.socket.poll_event() {
            match ev {
                Event::Accepted(h) => {
                    if let Some(addr) = self.socket.addr(h) {
                        self.accepted.push((h, *addr));
                    }
                }
                Event::Changed(h) if self.conns.contains_key(&h) => self.touched.push(h),
                Event::Dropped(h) => self.evicted.push(h),
                _ => {}
            }
        }
    }

    /// Reads datagrams from our own socket (its IPv6 twin when `v6`), about `budget`
    /// at most, 32 a system call; true when the budget ran out with datagrams
    /// possibly left.
    pub fn read_own(&mut self, now: Instant, budget: usize, v6: bool) -> bool {
        let Some(own) = self.own.as_ref() else {
            return false;
        };
        let sock = if v6 { own.v6.as_ref() } else { Some(&own.main) };
        let Some(sock) = sock else {
            return false;
        };
        let rx = self
            .rx
            .get_or_insert_with(|| Box::new(UdpBatch::coalescing()));
        let socket = &mut self.socket;
        rx.read_all(sock, budget, |d, from| deliver(socket, now, from, d))
    }

    /// Opens a connection to `addr` for the session's `conn`.
    pub fn connect(&mut self, now: Instant, addr: SocketAddr, conn: ConnId) -> Option<ConnHandle> {
        let h = self.socket.connect(now, addr).ok()?;
        self.conns.insert(h, conn);
        Some(h)
    }

    /// Takes an accepted connection for the session's `conn` (what it already
    /// received is read on the loop's next look at the touched connections).
    pub fn adopt(&mut self, h: ConnHandle, conn: ConnId) {
        self.conns.insert(h, conn);
        self.touched.push(h);
    }

    /// Lets a connection go at `now`: a graceful close (FIN after what is queued),
    /// removed once closed or the socket's `linger` later; `abort`: a RESET at once
    /// instead.
    pub fn release(&mut self, now: Instant, h: ConnHandle, abort: bool) {
        self.conns.remove(&h);
        self.socket.release(now, h, abort);
    }

    /// Incoming connections confirmed since the last call, with their addresses
    /// (take each with [`UtpHost::adopt`]).
    pub fn take_accepted(&mut self) -> Vec<(ConnHandle, SocketAddr)> {
        self.drain_events();
        std::mem::take(&mut self.accepted)
    }

    /// The session's connections whose uTP connection was evicted since the last call.
    pub fn take_evicted(&mut self) -> Vec<ConnId> {
        self.drain_events();
        let ev = std::mem::take(&mut self.evicted);
        ev.into_iter()
            .filter_map(|h| self.conns.remove(&h))
            .collect()
    }

    /// The session's connections a packet or a timer changed since the last call.
    pub fn take_touched(&mut self) -> Vec<ConnId> {
        self.drain_events();
        let t = std::mem::take(&mut self.touched);
        t.into_iter()
            .filter_map(|h| self.conns.get(&h).copied())
            .collect()
    }

    /// A connection, to look at.
    pub fn conn(&self, h: ConnHandle) -> Option<&btcore_core::utp::Connection> {
        self.socket.conn(h)
    }

    /// Where a connection stands (None: gone).
    pub fn state(&self, h: ConnHandle) -> Option<State> {
        self.socket.conn(h).map(|c| c.state())
    }

    /// Reads in-order bytes: `Ok(0)` at the end of the stream or when the connection
    /// is over, `WouldBlock` when nothing waits.
    pub fn read(&mut self, h: ConnHandle, buf: &mut [u8]) -> io::Result<usize> {
        let Some(c) = self.socket.conn_mut(h) else {
            return Ok(0);
        };
        let n = c.read(buf);
        if n > 0 || c.is_eof() || matches!(c.state(), State::Closed(_)) {
            return Ok(n);
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// Queues bytes to send: how many the send buffer took, `WouldBlock` when none,
    /// `BrokenPipe` when the connection is over.
    pub fn write(&mut self, h: ConnHandle, data: &[u8]) -> io::Result<usize> {
        let Some(c) = self.socket.conn_mut(h) else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        if matches!(c.state(), State::Closed(_) | State::Closing) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        match c.write(data) {
            0 if !data.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    /// When [`UtpHost::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.socket.poll_timeout()
    }

    /// Whether a datagram waits for room in the socket's send buffer (the loop then
    /// comes back within a millisecond).
    pub fn blocked(&self) -> bool {
        self.tx.queued() > 0 || self.tx6.queued() > 0 || self.more
    }

    /// Runs the socket's timers due at `now` (retransmissions, keep-alives, the
    /// unconfirmed and released connections' deadlines).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.socket.poll_timeout().is_some_and(|t| t <= now) {
            self.socket.handle_timeout(now);
        }
    }

    /// Sends what the connections have to send, on our own sockets or else on
    /// `shared` (the DHT's), each on the socket of its destination's family, until one
    /// would block or [`SENDS_PER_TURN`] went out. Datagrams to a family with no
    /// socket are dropped (no such peer is dialed, none can have reached us).
    pub fn transmit(&mut self, now: Instant, shared: Sockets<'_>) {
        let own = self.own.take();
        let sockets = match &own {
            Some(o) => o.sockets(),
            None => shared,
        };
        self.transmit_on(now, sockets.for_family(false), sockets.for_family(true));
        self.own = own;
    }

    fn transmit_on(&mut self, now: Instant, s4: Option<&UdpSocket>, s6: Option<&UdpSocket>) {
        self.more = false;
        // What would have blocked last time goes first.
        if !flush(&mut self.tx, s4) || !flush(&mut self.tx6, s6) {
            return;
        }
        let mut sent = 0;
        while sent < SENDS_PER_TURN {
            // Encoded into the main batch's next slot; moved to the twin's when the
            // destination is IPv6 and the twin is another socket.
            let split = !same(s4, s6);
            while !self.tx6.is_full() {
                let Some(buf) = self.tx.slot() else {
                    break;
                };
                let Some((to, n)) = self.socket.poll_transmit(now, buf) else {
                    break;
                };
                trace_packet("->", to, &buf[..n]);
                if to.is_ipv6() && split {
                    // Without an IPv6 socket: dropped.
                    if let (Some(buf), Some(_)) = (self.tx.slot(), s6) {
                        self.tx6.push(to, &buf[..n]);
                    }
                } else {
                    self.tx.commit(to, n);
                }
            }
            let queued = self.tx.queued() + self.tx6.queued();
            let full = self.tx.is_full() || self.tx6.is_full();
            if queued == 0 || !flush(&mut self.tx, s4) || !flush(&mut self.tx6, s6) || !full {
                return;
            }
            sent += queued;
        }
        self.more = true;
    }
}

/// Sends `batch` on `sock` (see [`SendBatch::flush`]); with no socket, its datagrams
/// are dropped.
fn flush(batch: &mut SendBatch, sock: Option<&UdpSocket>) -> bool {
    match sock {
        Some(s) => batch.flush(s),
        None => {
            batch.clear();
            true
        }
    }
}

/// Whether both are the same socket (a dual-stack one serving both families).
fn same(a: Option<&UdpSocket>, b: Option<&UdpSocket>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if std::ptr::eq(a, b))
}

/// Each packet's header at trace level (`RUST_LOG=btcore_host::utp=trace`).
fn trace_packet(dir: &str, addr: SocketAddr, d: &[u8]) {
    if log::log_enabled!(log::Level::Trace) {
        match btcore_core::utp::packet::decode(d) {
            Ok(p) => log::trace!(
                "uTP {dir} {addr} {:?} id={} seq={} ack={} wnd={} sack={} len={}",
                p.header.ty,
                p.header.conn_id,
                p.header.seq_nr,
                p.header.ack_nr,
                p.header.wnd_size,
                p.sack.map_or(0, |s| s.bits()),
                p.payload.len()
            ),
            Err(e) => log::trace!("uTP {dir} {addr} undecodable ({e:?}, {} bytes)", d.len()),
        }
    }
}

/// Hands a datagram to the socket (its news drained later), logging what it refused.
fn deliver(socket: &mut UtpSocket<SocketAddr>, now: Instant, from: SocketAddr, d: &[u8]) {
    trace_packet("<-", from, d);
    match socket.handle_datagram(now, from, d) {
        Incoming::Invalid(e) => log::debug!("uTP: invalid datagram from {from}: {e:?}"),
        Incoming::Unknown => log::debug!("uTP: datagram for no connection from {from}"),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use btcore_core::time::Duration;
    use btcore_core::utp::packet::{self, Header, PacketType};

    fn datagram(ty: PacketType, conn_id: u16, seq_nr: u16, ack_nr: u16, payload: &[u8]) -> Vec<u8> {
        let h = Header {
            ty,
            conn_id,
            timestamp_us: 1,
            timestamp_diff_us: 0,
            wnd_size: 1 << 20,
            seq_nr,
            ack_nr,
        };
        let mut buf = vec![0u8; 1500];
        let n = packet::encode(&h, None, payload, &mut buf).expect("encode");
        buf.truncate(n);
        buf
    }

    /// A SYN from a forged address, followed by data that guesses our sequence
    /// numbers wrong, never reaches the session and is dropped after
    /// the socket's confirm timeout; a peer that acks our STATE is reported as accepted.
    #[test]
    fn an_incoming_connection_reaches_the_session_only_once_confirmed() {
        let mut u = UtpHost::new(UtpConfig::default(), 9, None);
        let spoofed: SocketAddr = "192.0.2.7:6881".parse().expect("addr");
        let t0 = Instant::from_millis(1000);
        u.on_datagram(t0, spoofed, &datagram(PacketType::Syn, 100, 1, 0, &[]));
        // Blind guesses at the ack: every other half of the sequence space.
        for guess in [0u16, 0x4000, 0x8000, 0xc000] {
            let d = datagram(PacketType::Data, 101, 2, guess, b"\x13BitTorrent protocol");
            u.on_datagram(t0, spoofed, &d);
        }
        u.handle_timeout(t0);
        assert!(u.take_accepted().is_empty(), "unconfirmed, yet accepted");
        assert_eq!(u.len(), 1);
        u.handle_timeout(t0 + UtpConfig::default().confirm_timeout);
        assert!(u.take_accepted().is_empty());
        assert!(
            u.is_empty(),
            "an unconfirmed connection outlived its timeout"
        );

        // A real peer: reads our STATE and acks it.
        let peer: SocketAddr = "192.0.2.8:6881".parse().expect("addr");
        u.on_datagram(t0, peer, &datagram(PacketType::Syn, 200, 1, 0, &[]));
        let mut out = vec![0u8; 2048];
        let n = loop {
            // Earlier datagrams (the first one's STATE and RESET) go to the forged address.
            let (to, n) = u.socket.poll_transmit(t0, &mut out).expect("our STATE");
            if to == peer {
                break n;
            }
        };
        let state = packet::decode(&out[..n]).expect("decode").header;
        assert_eq!(state.ty, PacketType::State);
        let d = datagram(
            PacketType::Data,
            201,
            2,
            state.seq_nr.wrapping_sub(1),
            b"hi",
        );
        u.on_datagram(t0, peer, &d);
        u.handle_timeout(t0);
        let accepted = u.take_accepted();
        assert_eq!(accepted.len(), 1);
        assert_eq!(accepted[0].1, peer);
    }

    /// A connection let go that the peer never lets close is aborted after the socket's linger.
    #[test]
    fn a_released_connection_lingers_no_longer_than_its_deadline() {
        let mut u = UtpHost::new(UtpConfig::default(), 9, None);
        let peer: SocketAddr = "192.0.2.9:6881".parse().expect("addr");
        let t0 = Instant::from_millis(1000);
        let h = u.connect(t0, peer, ConnId(1)).expect("connect");
        u.release(t0, h, false);
        u.handle_timeout(t0 + Duration::from_millis(10));
        assert_eq!(u.len(), 1, "gone before its deadline");
        u.handle_timeout(t0 + UtpConfig::default().linger);
        assert!(u.is_empty(), "still held past the linger");
    }
}
