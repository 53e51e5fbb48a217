//! Port mapping on the host: asks the default gateway to forward the client's TCP and
//! UDP ports with PCP or NAT-PMP ([`btcore_core::portmap`] decides; this carries it
//! out).
//!
//! - The gateway is the default route's (Linux: `/proc/net/route`), unless given.
//! - One UDP socket, bound to an ephemeral port and connected to the gateway's port
//!   5351: the kernel then delivers only what the gateway sends from that port, and
//!   its local address is the client address PCP names. (The gateway's multicast
//!   announcements to port 5350 are not listened to: renewals learn a new address.)
//! - Every outcome is a status line: logged at `info` and kept for the application
//!   ([`PortMapHost::take_lines`]), which shows them (the command prints each on
//!   stderr). Nothing here blocks
//!   the loop or fails the client: no gateway, a socket error or a refusal is a line.
//! - [`PortMapHost::finish`] deletes the mappings at exit, waiting at most its deadline.

use btcore_core::portmap::{
    MapState, MapperConfig, MappingStatus, PortMapEvent, PortMapper, Version,
};
use btcore_core::time::Instant;
use mio::net::UdpSocket;
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

/// Status lines kept for [`PortMapHost::take_lines`]; older ones are dropped.
const MAX_LINES: usize = 32;
/// Datagrams read per turn of the loop (a flood waits in the socket's buffer).
const READS_PER_TURN: usize = 16;

/// Port mapping settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapOptions {
    /// The gateway to ask (None: the default route's).
    pub gateway: Option<Ipv4Addr>,
    /// Seconds to ask for (the gateway may grant less; renewed at half).
    pub lifetime: u32,
}

impl Default for PortMapOptions {
    fn default() -> Self {
        Self {
            gateway: None,
            lifetime: btcore_core::portmap::client::DEFAULT_LIFETIME,
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
    /// The TCP and UDP mappings (lifetime, expiry in the engine's clock, last error).
    pub mappings: Vec<MappingStatus>,
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

/// The client's port mapping: the machine, its socket, its status lines.
#[derive(Debug)]
pub struct PortMapHost {
    socket: UdpSocket,
    mapper: PortMapper,
    gateway: Ipv4Addr,
    lines: VecDeque<String>,
    buf: Vec<u8>,
}

impl PortMapHost {
    /// Starts mapping `tcp_port` and `udp_port` on the gateway of `opts` (or the
    /// default route's). Fails only when there is no gateway or no socket; nothing is
    /// sent until [`PortMapHost::service`].
    pub fn new(
        opts: &PortMapOptions,
        tcp_port: Option<u16>,
        udp_port: Option<u16>,
        seed: u64,
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
        let mut host = Self {
            socket: UdpSocket::from_std(std_sock),
            mapper,
            gateway,
            lines: VecDeque::new(),
            buf: vec![0u8; btcore_core::portmap::wire::MAX_PCP_MESSAGE + 1],
        };
        host.line(format!(
            "port mapping: asking gateway {gateway} from {client} (PCP, then NAT-PMP)"
        ));
        Ok(host)
    }

    /// The socket, to register on the client's poll (readable).
    pub fn socket_mut(&mut self) -> &mut UdpSocket {
        &mut self.socket
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
            version: self.mapper.version(),
            external_address: self.mapper.external_address(),
            mappings: self.mapper.mappings().collect(),
        }
    }

    /// The external address, once learned.
    pub fn external_address(&self) -> Option<Ipv4Addr> {
        self.mapper.external_address()
    }

    /// When [`PortMapHost::service`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.mapper.poll_timeout()
    }

    /// Reads waiting datagrams (at most a turn's worth; the socket is edge-triggered,
    /// so call [`PortMapHost::service`] after, which reads again when this one stopped
    /// short). Returns whether datagrams may be left.
    pub fn read(&mut self, now: Instant) -> bool {
        let from = SocketAddr::V4(self.mapper.server());
        for _ in 0..READS_PER_TURN {
            match self.socket.recv(&mut self.buf) {
                // Connected: only the gateway's port gets through; a datagram longer
                // than the largest response fills the buffer and is refused.
                Ok(n) => self.mapper.handle_datagram(now, from, &self.buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ICMP port unreachable: nothing listens on the gateway's 5351. The
                // machine's retransmissions and fallback cover it.
                Err(e) => log::debug!("port mapping: reading: {e}"),
            }
        }
        true
    }

    /// Sends what is due and turns the machine's events into status lines.
    pub fn service(&mut self, now: Instant) {
        let mut out = [0u8; btcore_core::portmap::wire::MAX_REQUEST];
        while let Some(n) = self.mapper.poll_transmit(now, &mut out) {
            if let Err(e) = self.socket.send(&out[..n]) {
                // Counted as sent: the retransmission schedule goes on.
                log::debug!("port mapping: sending to {}: {e}", self.gateway);
            }
        }
        while let Some(e) = self.mapper.poll_event() {
            self.report(e);
        }
    }

    fn report(&mut self, e: PortMapEvent) {
        let ext = self
            .mapper
            .external_address()
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

    /// Deletes the mappings (lifetime 0) and waits for the gateway's answers, at most
    /// `limit` (about 2 s suffice: three sends 250 ms apart, doubling). `now` reads
    /// the engine's clock.
    pub fn finish(&mut self, now: impl Fn() -> Instant, limit: std::time::Duration) {
        let start = std::time::Instant::now();
        self.mapper.shutdown(now());
        let mut waiting = self
            .mapper
            .mappings()
            .any(|m| m.state == MapState::Deleting);
        while waiting && start.elapsed() < limit {
            let t = now();
            self.read(t);
            self.service(t);
            waiting = !self.mapper.is_finished();
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
