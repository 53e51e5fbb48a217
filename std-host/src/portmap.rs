//! Port mapping on the host: asks the default gateway to forward the client's TCP and
//! UDP ports with PCP or NAT-PMP, and with UPnP IGD ([`btcore_core::portmap`] decides;
//! this carries it out).
//!
//! - The gateway is the default route's (Linux: `/proc/net/route`), unless given.
//! - One UDP socket, bound to an ephemeral port and connected to the gateway's port
//!   5351: the kernel then delivers only what the gateway sends from that port, and
//!   its local address is the client address PCP names. (The gateway's multicast
//!   announcements to port 5350 are not listened to: renewals learn a new address.)
//! - UPnP starts [`UPNP_DELAY`] later unless PCP or NAT-PMP mapped by then (a gateway
//!   that speaks them answers at once): a second UDP socket, bound to the same local
//!   address and multicasting its searches from that interface, reads the answers; each
//!   HTTP request (description, SOAP) runs on a short-lived thread with a 2 s connect
//!   timeout, a 4 s deadline and a 64 KiB cap, hands its response back over a channel
//!   and wakes the loop. One request at a time (the machine's rule).
//! - Whichever protocol maps first holds the mappings; the other stops (UPnP deletes
//!   what it holds on other ports; PCP/NAT-PMP, having been granted nothing, is
//!   dropped). Status lines name the protocol of each mapping.
//! - Every outcome is a status line: logged at `info` and kept for the application
//!   ([`PortMapHost::take_lines`]), which shows them (the command prints each on
//!   stderr). Nothing here blocks
//!   the loop or fails the client: no gateway, a socket error or a refusal is a line.
//! - [`PortMapHost::finish`] deletes the mappings at exit, waiting at most its deadline.

use btcore_core::portmap::igd::{HttpError, UpnpMappingStatus, MAX_HTTP_RESPONSE, SSDP_ADDR};
use btcore_core::portmap::{
    upnp, MapperConfig, MappingStatus, PortMapEvent, PortMapper, Protocol, UpnpConfig, UpnpEvent,
    UpnpMapper, UpnpTransmit, Version,
};
use btcore_core::time::Instant;
use mio::net::UdpSocket;
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{mpsc, Arc};

/// Status lines kept for [`PortMapHost::take_lines`]; older ones are dropped.
const MAX_LINES: usize = 32;
/// Datagrams read per turn of the loop (a flood waits in the socket's buffer).
const READS_PER_TURN: usize = 16;

/// Port mapping settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapOptions {
    /// The gateway to ask (None: the default route's).
    pub gateway: Option<Ipv4Addr>,
    /// Seconds to ask for (the gateway may grant less; renewed at half). UPnP asks
    /// for the same lease.
    pub lifetime: u32,
    /// Whether UPnP IGD is tried beside PCP and NAT-PMP.
    pub upnp: bool,
}

impl Default for PortMapOptions {
    fn default() -> Self {
        Self {
            gateway: None,
            lifetime: btcore_core::portmap::client::DEFAULT_LIFETIME,
            upnp: true,
        }
    }
}

/// What was mapped where, for status displays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapStatus {
    /// The gateway asked.
    pub gateway: Ipv4Addr,
    /// The protocol in use (PCP, or NAT-PMP after a fallback).
    pub version: Version,
    /// The external address, once learned.
    pub external_address: Option<Ipv4Addr>,
    /// The TCP and UDP mappings (lifetime, expiry in the engine's clock, last error)
    /// of PCP or NAT-PMP (empty once UPnP mapped first).
    pub mappings: Vec<MappingStatus>,
    /// The protocol that mapped first and holds the mappings (None: none yet).
    pub mapped_by: Option<MappedBy>,
    /// UPnP's side (None: off, not started, or let go after PCP or NAT-PMP mapped).
    pub upnp: Option<UpnpStatus>,
}

/// The default IPv4 gateway from `/proc/net/route` (the default route with the lowest
/// metric), or None.
pub fn default_gateway() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    parse_route_table(&text)
}

/// The default gateway in a `/proc/net/route` table: destination and mask 0, the
/// gateway flag (0x2) set, the lowest metric; addresses are hex in host (little-endian)
/// order.
pub fn parse_route_table(text: &str) -> Option<Ipv4Addr> {
    let mut best: Option<(u32, Ipv4Addr)> = None;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        let (Some(dest), Some(gw), Some(flags), Some(metric), Some(mask)) = (
            hex(f[1]),
            hex(f[2]),
            hex(f[3]),
            f[6].parse::<u32>().ok(),
            hex(f[7]),
        ) else {
            continue;
        };
        // RTF_UP | RTF_GATEWAY.
        if dest != 0 || mask != 0 || flags & 0x3 != 0x3 || gw == 0 {
            continue;
        }
        let addr = Ipv4Addr::from(gw.to_le_bytes());
        if best.is_none_or(|(m, _)| metric < m) {
            best = Some((metric, addr));
        }
    }
    best.map(|(_, a)| a)
}

/// How long the gateway has to answer PCP or NAT-PMP before UPnP is tried beside them
/// (a gateway that speaks PCP or NAT-PMP answers in milliseconds).
pub const UPNP_DELAY: std::time::Duration = std::time::Duration::from_secs(2);
/// The TCP connect timeout of a UPnP HTTP request.
const HTTP_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// The whole of a UPnP HTTP request (below the machine's own `HTTP_TIMEOUT`).
const HTTP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(4);

/// Which protocol holds the mappings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappedBy {
    /// PCP or NAT-PMP (the version in [`PortMapStatus::version`]).
    PcpOrNatPmp(Version),
    /// UPnP IGD.
    Upnp,
}

impl MappedBy {
    /// `"PCP"`, `"NAT-PMP"` or `"UPnP"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::PcpOrNatPmp(v) => v.name(),
            Self::Upnp => "UPnP",
        }
    }
}

/// What UPnP found and mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpnpStatus {
    /// The gateway's control URL host and service type, once found.
    pub service: Option<(SocketAddrV4, &'static str)>,
    /// The external address, once learned.
    pub external_address: Option<Ipv4Addr>,
    /// The TCP and UDP mappings.
    pub mappings: Vec<UpnpMappingStatus>,
}

/// When UPnP starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UpnpStart {
    /// At the first service: [`UPNP_DELAY`] from then.
    Unscheduled,
    /// At this time, unless PCP or NAT-PMP mapped first.
    At(Instant),
    /// Running.
    Started,
}

/// A UPnP HTTP request's outcome, from its thread.
type HttpDone = (u64, Result<Vec<u8>, HttpError>);

/// UPnP's I/O: the search socket and the HTTP requests' threads.
#[derive(Debug)]
struct UpnpIo {
    mapper: UpnpMapper,
    /// Sends the searches from our address towards the gateway and reads the answers
    /// (unicast to it).
    socket: UdpSocket,
    done_tx: mpsc::Sender<HttpDone>,
    done_rx: mpsc::Receiver<HttpDone>,
    waker: Arc<mio::Waker>,
    /// When the machine starts.
    start: UpnpStart,
}

/// The search socket: bound to our address towards the gateway, multicasting from
/// that interface, two hops at most (the Device Architecture's TTL is 2... 4; a gateway
/// is one).
fn ssdp_socket(client: Ipv4Addr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&SocketAddr::from((client, 0)).into())?;
    s.set_multicast_if_v4(&client)?;
    s.set_multicast_ttl_v4(2)?;
    s.set_multicast_loop_v4(false)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// One HTTP exchange: connect, write the request, read up to the close (or the
/// response's own end), at most `MAX_HTTP_RESPONSE` bytes, within [`HTTP_DEADLINE`].
fn http_exchange(to: SocketAddrV4, request: &[u8]) -> Result<Vec<u8>, HttpError> {
    use std::io::{Read, Write};
    let start = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect_timeout(&SocketAddr::V4(to), HTTP_CONNECT_TIMEOUT)
        .map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => HttpError::Timeout,
            _ => HttpError::Connect,
        })?;
    let left = |start: std::time::Instant| {
        HTTP_DEADLINE
            .checked_sub(start.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or(HttpError::Timeout)
    };
    s.set_write_timeout(Some(left(start)?))
        .map_err(|_| HttpError::Io)?;
    s.write_all(request).map_err(|e| match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => HttpError::Timeout,
        _ => HttpError::Io,
    })?;
    let mut out = Vec::with_capacity(4096);
    let mut buf = [0u8; 4096];
    loop {
        s.set_read_timeout(Some(left(start)?))
            .map_err(|_| HttpError::Io)?;
        match s.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                if out.len() + n > MAX_HTTP_RESPONSE {
                    return Err(HttpError::TooLarge);
                }
                out.extend_from_slice(&buf[..n]);
                if upnp::http_response_complete(&out) {
                    return Ok(out);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                return Err(HttpError::Timeout)
            }
            Err(_) => return Err(HttpError::Io),
        }
    }
}

/// The client's port mapping: PCP/NAT-PMP's machine and socket, UPnP's machine, its
/// socket and its HTTP threads, the status lines.
#[derive(Debug)]
pub struct PortMapHost {
    socket: UdpSocket,
    /// PCP and NAT-PMP (None: UPnP mapped first, and this one was dropped).
    mapper: Option<PortMapper>,
    /// The machine that lets the other go once it is dropped (for `status`).
    pcp_version: Version,
    upnp: Option<UpnpIo>,
    winner: Option<MappedBy>,
    gateway: Ipv4Addr,
    lines: VecDeque<String>,
    buf: Vec<u8>,
}

impl PortMapHost {
    /// Starts mapping `tcp_port` and `udp_port` on the gateway of `opts` (or the
    /// default route's): PCP (then NAT-PMP) at once, UPnP [`UPNP_DELAY`] later unless
    /// one of those mapped first. `waker` wakes the loop when a UPnP HTTP request is
    /// answered. Fails only when there is no gateway or no socket; nothing is sent
    /// until [`PortMapHost::service`].
    pub fn new(
        opts: &PortMapOptions,
        tcp_port: Option<u16>,
        udp_port: Option<u16>,
        seed: u64,
        waker: Arc<mio::Waker>,
    ) -> io::Result<Self> {
        let gateway = opts
            .gateway
            .or_else(default_gateway)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no default IPv4 gateway"))?;
        let server = SocketAddr::V4(SocketAddrV4::new(
            gateway,
            btcore_core::portmap::wire::SERVER_PORT,
        ));
        let std_sock = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        std_sock.connect(server)?;
        std_sock.set_nonblocking(true)?;
        let client = match std_sock.local_addr()?.ip() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        let mapper = PortMapper::new(
            MapperConfig {
                gateway,
                client,
                tcp_port,
                udp_port,
                lifetime: opts.lifetime,
                start_with: Version::Pcp,
            },
            seed,
        );
        let mut lines = VecDeque::new();
        let upnp = if opts.upnp {
            match ssdp_socket(client) {
                Ok(s) => {
                    let (done_tx, done_rx) = mpsc::channel();
                    Some(UpnpIo {
                        mapper: UpnpMapper::new(
                            UpnpConfig {
                                gateway,
                                client,
                                tcp_port,
                                udp_port,
                                lease: opts.lifetime,
                            },
                            seed.rotate_left(17) ^ 0x5550_6e50,
                        ),
                        socket: UdpSocket::from_std(s),
                        done_tx,
                        done_rx,
                        waker,
                        start: UpnpStart::Unscheduled,
                    })
                }
                Err(e) => {
                    lines.push_back(format!("port mapping: UPnP off: {e}"));
                    None
                }
            }
        } else {
            None
        };
        let also = if upnp.is_some() { ", and UPnP" } else { "" };
        let mut host = Self {
            socket: UdpSocket::from_std(std_sock),
            mapper: Some(mapper),
            pcp_version: Version::Pcp,
            upnp,
            winner: None,
            gateway,
            lines: VecDeque::new(),
            buf: vec![0u8; btcore_core::portmap::wire::MAX_PCP_MESSAGE.max(upnp::MAX_SSDP) + 1],
        };
        host.line(format!(
            "port mapping: asking gateway {gateway} from {client} (PCP, then NAT-PMP{also})"
        ));
        for l in lines {
            host.line(l);
        }
        Ok(host)
    }

    /// The PCP/NAT-PMP socket, to register on the client's poll (readable).
    pub fn socket_mut(&mut self) -> &mut UdpSocket {
        &mut self.socket
    }

    /// The UPnP search socket, to register on the client's poll (readable).
    pub fn upnp_socket_mut(&mut self) -> Option<&mut UdpSocket> {
        self.upnp.as_mut().map(|u| &mut u.socket)
    }

    /// A status line: logged at `info` (the application shows it) and kept.
    fn line(&mut self, s: String) {
        log::info!("{s}");
        if self.lines.len() == MAX_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(s);
    }

    /// Status lines since the last call (each also logged).
    pub fn take_lines(&mut self) -> Vec<String> {
        self.lines.drain(..).collect()
    }

    /// What was mapped where.
    pub fn status(&self) -> PortMapStatus {
        PortMapStatus {
            gateway: self.gateway,
            version: self
                .mapper
                .as_ref()
                .map_or(self.pcp_version, PortMapper::version),
            external_address: self.external_address(),
            mappings: self
                .mapper
                .as_ref()
                .map(|m| m.mappings().collect())
                .unwrap_or_default(),
            mapped_by: self.winner,
            upnp: self.upnp.as_ref().map(|u| UpnpStatus {
                service: u.mapper.service(),
                external_address: u.mapper.external_address(),
                mappings: u.mapper.mappings().collect(),
            }),
        }
    }

    /// The external address, once learned (from the protocol that mapped, else any).
    pub fn external_address(&self) -> Option<Ipv4Addr> {
        let pcp = self.mapper.as_ref().and_then(PortMapper::external_address);
        let upnp = self.upnp.as_ref().and_then(|u| u.mapper.external_address());
        match self.winner {
            Some(MappedBy::Upnp) => upnp.or(pcp),
            _ => pcp.or(upnp),
        }
    }

    /// When [`PortMapHost::service`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pcp = self.mapper.as_ref().and_then(PortMapper::poll_timeout);
        let upnp = self.upnp.as_ref().and_then(|u| match u.start {
            UpnpStart::Unscheduled => Some(Instant::ZERO),
            UpnpStart::At(at) => Some(at),
            UpnpStart::Started => u.mapper.poll_timeout(),
        });
        pcp.into_iter().chain(upnp).min()
    }

    /// Reads waiting datagrams of both sockets (at most a turn's worth each; they are
    /// edge-triggered, so call [`PortMapHost::service`] after, which reads again when
    /// this one stopped short). Returns whether datagrams may be left.
    pub fn read(&mut self, now: Instant) -> bool {
        let mut more = false;
        if let Some(mapper) = self.mapper.as_mut() {
            let from = SocketAddr::V4(mapper.server());
            let mut done = false;
            for _ in 0..READS_PER_TURN {
                match self.socket.recv(&mut self.buf) {
                    // Connected: only the gateway's port gets through; a datagram
                    // longer than the largest response fills the buffer and is refused.
                    Ok(n) => mapper.handle_datagram(now, from, &self.buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        done = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // ICMP port unreachable: nothing listens on the gateway's 5351. The
                    // machine's retransmissions and fallback cover it.
                    Err(e) => log::debug!("port mapping: reading: {e}"),
                }
            }
            more |= !done;
        }
        if let Some(u) = self.upnp.as_mut() {
            let mut done = false;
            for _ in 0..READS_PER_TURN {
                match u.socket.recv_from(&mut self.buf) {
                    // Longer than the largest answer: the buffer is full, refused.
                    Ok((n, from)) => u.mapper.handle_ssdp(now, from, &self.buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        done = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => log::debug!("port mapping: UPnP: reading: {e}"),
                }
            }
            more |= !done;
        }
        more
    }

    /// Sends what is due, starts UPnP's HTTP requests, takes their responses, and
    /// turns both machines' events into status lines.
    pub fn service(&mut self, now: Instant) {
        if let Some(mapper) = self.mapper.as_mut() {
            let mut out = [0u8; btcore_core::portmap::wire::MAX_REQUEST];
            while let Some(n) = mapper.poll_transmit(now, &mut out) {
                if let Err(e) = self.socket.send(&out[..n]) {
                    // Counted as sent: the retransmission schedule goes on.
                    log::debug!("port mapping: sending to {}: {e}", self.gateway);
                }
            }
        }
        while let Some(e) = self.mapper.as_mut().and_then(PortMapper::poll_event) {
            self.report(e, now);
        }
        self.service_upnp(now);
    }

    fn service_upnp(&mut self, now: Instant) {
        let Some(u) = self.upnp.as_mut() else {
            return;
        };
        match u.start {
            UpnpStart::Unscheduled => {
                let delay = btcore_core::time::Duration::from_millis(UPNP_DELAY.as_millis() as u64);
                u.start = UpnpStart::At(now + delay);
                return;
            }
            UpnpStart::At(at) if at > now => return,
            UpnpStart::At(_) => u.start = UpnpStart::Started,
            UpnpStart::Started => {}
        }
        while let Ok((id, r)) = u.done_rx.try_recv() {
            match r {
                Ok(mut b) => u.mapper.handle_http(now, id, Ok(&mut b)),
                Err(e) => u.mapper.handle_http(now, id, Err(e)),
            }
        }
        let mut out = [0u8; upnp::MAX_REQUEST];
        while let Some(t) = u.mapper.poll_transmit(now, &mut out) {
            match t {
                UpnpTransmit::Search { len } => {
                    if let Err(e) = u.socket.send_to(&out[..len], SocketAddr::V4(SSDP_ADDR)) {
                        log::debug!("port mapping: UPnP search: {e}");
                    }
                }
                UpnpTransmit::Http { id, to, len } => {
                    let request = out[..len].to_vec();
                    let tx = u.done_tx.clone();
                    let waker = u.waker.clone();
                    let spawned = std::thread::Builder::new()
                        .name("btcore-upnp".into())
                        .spawn(move || {
                            let r = http_exchange(to, &request);
                            let _ = tx.send((id, r));
                            let _ = waker.wake();
                        });
                    if spawned.is_err() {
                        u.mapper.handle_http(now, id, Err(HttpError::Io));
                    }
                }
            }
        }
        let mut events = Vec::new();
        while let Some(e) = u.mapper.poll_event() {
            events.push(e);
        }
        for e in events {
            self.report_upnp(e, now);
        }
        // A UPnP machine let go after PCP mapped first is dropped once it is done.
        if self.winner.is_some_and(|w| w != MappedBy::Upnp)
            && self.upnp.as_ref().is_some_and(|u| u.mapper.is_finished())
        {
            self.upnp = None;
        }
    }

    /// PCP or NAT-PMP mapped first: UPnP stops (a mapping it holds on the same port is
    /// the same entry in the gateway's table, so it is left; any other is deleted).
    fn pcp_won(&mut self, now: Instant, version: Version, protocol: Protocol, port: u16) {
        if self.winner.is_some() {
            return;
        }
        self.winner = Some(MappedBy::PcpOrNatPmp(version));
        let Some(u) = self.upnp.as_mut() else {
            return;
        };
        if u.start != UpnpStart::Started {
            self.upnp = None;
            return;
        }
        // PCP's grants so far (the one just reported among them).
        let mut held: Vec<(Protocol, u16)> = self
            .mapper
            .as_ref()
            .map(|m| {
                m.mappings()
                    .filter_map(|s| s.external_port.map(|p| (s.protocol, p)))
                    .collect()
            })
            .unwrap_or_default();
        held.push((protocol, port));
        let same: Vec<Protocol> = u
            .mapper
            .mappings()
            .filter(|m| {
                m.external_port
                    .is_some_and(|p| held.contains(&(m.protocol, p)))
            })
            .map(|m| m.protocol)
            .collect();
        for p in same {
            u.mapper.forget(p);
        }
        u.mapper.shutdown(now);
        self.line(format!(
            "port mapping: {} mapped first; UPnP stops",
            version.name()
        ));
    }

    /// UPnP mapped first: PCP and NAT-PMP stop (they hold nothing: nothing to delete).
    fn upnp_won(&mut self) {
        if self.winner.is_some() {
            return;
        }
        self.winner = Some(MappedBy::Upnp);
        if let Some(m) = self.mapper.take() {
            self.pcp_version = m.version();
            self.line(format!(
                "port mapping: UPnP mapped first; {} stops",
                if m.version() == Version::Pcp {
                    "PCP"
                } else {
                    "NAT-PMP"
                }
            ));
        }
    }

    fn report(&mut self, e: PortMapEvent, now: Instant) {
        let ext = self
            .mapper
            .as_ref()
            .and_then(PortMapper::external_address)
            .map_or_else(|| "?".to_string(), |a| a.to_string());
        match e {
            PortMapEvent::ExternalAddress(a) => {
                self.line(format!("port mapping: external address {a}"));
            }
            PortMapEvent::Mapped {
                protocol,
                internal_port,
                external_port,
                lifetime,
                version,
                renewed,
            } => {
                self.pcp_won(now, version, protocol, external_port);
                let s = format!(
                    "port mapping: {} port {internal_port} mapped to {ext}:{external_port} \
                     ({}, {lifetime} s)",
                    protocol.name(),
                    version.name()
                );
                if renewed {
                    log::debug!("{s}, renewed");
                } else {
                    self.line(s);
                }
            }
            PortMapEvent::Failed {
                protocol,
                error,
                retry_in,
            } => {
                let what = protocol.map_or("the external address query", |p| p.name());
                self.line(format!(
                    "port mapping: {what} on gateway {}: {error}; trying again in {} s",
                    self.gateway,
                    retry_in.as_millis() / 1000
                ));
            }
            PortMapEvent::Lost { protocol } => self.line(format!(
                "port mapping: the {} mapping lapsed before it was renewed",
                protocol.name()
            )),
            PortMapEvent::Deleted {
                protocol,
                confirmed,
            } => {
                let s = if confirmed {
                    format!("port mapping: {} mapping deleted", protocol.name())
                } else {
                    format!(
                        "port mapping: {} mapping deletion not acknowledged",
                        protocol.name()
                    )
                };
                self.line(s);
            }
            PortMapEvent::FellBack { from, to } => self.line(format!(
                "port mapping: gateway {} does not speak {}; using {}",
                self.gateway,
                from.name(),
                to.name()
            )),
            PortMapEvent::GatewayRestarted => self.line(format!(
                "port mapping: gateway {} restarted; mapping again",
                self.gateway
            )),
        }
    }

    fn report_upnp(&mut self, e: UpnpEvent, _now: Instant) {
        let ext = self
            .upnp
            .as_ref()
            .and_then(|u| u.mapper.external_address())
            .map_or_else(|| "?".to_string(), |a| a.to_string());
        match e {
            UpnpEvent::Found {
                control,
                service_type,
            } => {
                let short = service_type
                    .strip_prefix("urn:schemas-upnp-org:service:")
                    .unwrap_or(service_type);
                self.line(format!(
                    "port mapping: UPnP gateway found at {control} ({short})"
                ));
            }
            UpnpEvent::ExternalAddress(a) => {
                self.line(format!("port mapping: external address {a} (UPnP)"));
            }
            UpnpEvent::Mapped {
                protocol,
                internal_port,
                external_port,
                lease,
                renewed,
            } => {
                self.upnp_won();
                let lease = if lease == 0 {
                    "permanent".to_string()
                } else {
                    format!("{lease} s")
                };
                let s = format!(
                    "port mapping: {} port {internal_port} mapped to {ext}:{external_port} \
                     (UPnP, {lease})",
                    protocol.name(),
                );
                if renewed {
                    log::debug!("{s}, renewed");
                } else {
                    self.line(s);
                }
            }
            UpnpEvent::Failed {
                protocol,
                error,
                retry_in,
            } => {
                let what = protocol.map_or("discovery", |p| p.name());
                let again = if retry_in.as_millis() == 0 {
                    String::new()
                } else {
                    format!("; trying again in {} s", retry_in.as_millis() / 1000)
                };
                // Silence from a network with no UPnP gateway is expected where PCP or
                // NAT-PMP mapped: a debug line then.
                let s = format!("port mapping: UPnP {what}: {error}{again}");
                if self.winner.is_some() {
                    log::debug!("{s}");
                } else {
                    self.line(s);
                }
            }
            UpnpEvent::Lost { protocol } => self.line(format!(
                "port mapping: the {} mapping (UPnP) lapsed before it was renewed",
                protocol.name()
            )),
            UpnpEvent::Deleted {
                protocol,
                confirmed,
            } => {
                let s = if confirmed {
                    format!("port mapping: {} mapping deleted (UPnP)", protocol.name())
                } else {
                    format!(
                        "port mapping: {} mapping deletion not acknowledged (UPnP)",
                        protocol.name()
                    )
                };
                self.line(s);
            }
        }
    }

    /// Deletes the mappings (PCP/NAT-PMP: lifetime 0; UPnP: `DeletePortMapping`) and
    /// waits for the gateway's answers, at most `limit` (about 2 s suffice). `now`
    /// reads the engine's clock.
    pub fn finish(&mut self, now: impl Fn() -> Instant, limit: std::time::Duration) {
        let start = std::time::Instant::now();
        let t = now();
        if let Some(m) = self.mapper.as_mut() {
            m.shutdown(t);
        }
        if let Some(u) = self.upnp.as_mut() {
            if u.start != UpnpStart::Started {
                self.upnp = None;
            } else {
                u.mapper.shutdown(t);
            }
        }
        let finished = |h: &Self| {
            h.mapper.as_ref().is_none_or(PortMapper::is_finished)
                && h.upnp.as_ref().is_none_or(|u| u.mapper.is_finished())
        };
        let mut waiting = !finished(self);
        while waiting && start.elapsed() < limit {
            let t = now();
            self.read(t);
            self.service(t);
            waiting = !finished(self);
            if waiting {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        if waiting {
            self.line("port mapping: the gateway did not acknowledge the deletion in time".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-connection HTTP server on loopback that reads the request, writes
    /// `reply` and keeps the connection open until the client goes.
    fn server(reply: Vec<u8>) -> SocketAddrV4 {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let SocketAddr::V4(addr) = l.local_addr().expect("addr") else {
            unreachable!("an IPv4 listener")
        };
        std::thread::spawn(move || {
            let Ok((mut c, _)) = l.accept() else { return };
            let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(10)));
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(&reply);
            // Open until the client closes (a server that ignores Connection: close).
            let _ = c.read(&mut buf);
        });
        addr
    }

    #[test]
    fn http_stops_at_the_responses_own_end_and_at_the_cap() {
        let body = b"<a/>";
        let mut r =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        r.extend_from_slice(body);
        let start = std::time::Instant::now();
        let got = http_exchange(server(r.clone()), b"GET / HTTP/1.1\r\n\r\n").expect("a response");
        assert_eq!(got, r);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1),
            "not waiting for the close"
        );
        // Endless: cut at the cap.
        let big = format!("HTTP/1.1 200 OK\r\n\r\n{}", "x".repeat(MAX_HTTP_RESPONSE)).into_bytes();
        assert_eq!(
            http_exchange(server(big), b"GET / HTTP/1.1\r\n\r\n"),
            Err(HttpError::TooLarge)
        );
        // Nothing listening.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let SocketAddr::V4(closed) = l.local_addr().expect("addr") else {
            unreachable!("an IPv4 listener")
        };
        drop(l);
        assert_eq!(
            http_exchange(closed, b"GET / HTTP/1.1\r\n\r\n"),
            Err(HttpError::Connect)
        );
    }

    #[test]
    fn the_default_route_with_the_lowest_metric() {
        let t =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
                 wlan0\t00000000\t01004D0A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                 eth0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(parse_route_table(t), Some(Ipv4Addr::new(10, 77, 0, 1)));
        let none = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\n";
        assert_eq!(parse_route_table(none), None);
        assert_eq!(parse_route_table(""), None);
        assert_eq!(parse_route_table("x\nbad line\n"), None);
    }
}
