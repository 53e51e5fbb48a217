//! Port mapping (PCP, NAT-PMP, UPnP IGD) of the client's ports on the default gateway: started
//! with the client when [`ClientOptions::port_mapping`](super::ClientOptions) says so,
//! serviced each turn of the loop, the mappings deleted at shutdown. It never fails or
//! stalls the client: every problem is a status line ([`crate::portmap`]).

use super::{Client, PORTMAP, PORTMAP_DHT, PORTMAP_DHT_UPNP, PORTMAP_UPNP};
use crate::portmap::{PortMapHost, PortMapStatus};
use mio::Interest;

/// How long shutdown waits for the gateway to acknowledge the deletions (UPnP's are
/// HTTP requests, one after the other).
const FINISH_LIMIT: std::time::Duration = std::time::Duration::from_secs(3);

impl Client {
    /// Starts mapping the listen port (TCP) and the UDP port of uTP (the same number)
    /// or, without uTP, the DHT's, and a DHT's port of its own beside uTP's; on a
    /// loopback listen address there is nothing to map. A failure to start is a status
    /// line.
    pub(super) fn start_port_mapping(&mut self) {
        let Some(opts) = self.opts.port_mapping.clone() else {
            return;
        };
        if self.local_addr.ip().is_loopback() {
            log::debug!("port mapping: listening on loopback, nothing to map");
            return;
        }
        let tcp = self.local_addr.port();
        let dht = self.dht_port();
        let udp = if self.utp.is_some() { Some(tcp) } else { dht };
        let seed = crate::os::random_u64();
        self.portmap = self.start_mapper(&opts, Some(tcp), udp, seed, false);
        // A DHT on a port of its own (`--dht-port`) is mapped beside uTP's, by a
        // mapper of its own.
        if let Some(port) = dht.filter(|p| udp != Some(*p)) {
            self.portmap_dht = self.start_mapper(
                &opts,
                None,
                Some(port),
                seed.rotate_left(29) ^ 0x4448_5400,
                true,
            );
        }
    }

    /// A mapper of `tcp` and `udp` with its sockets on the poll (the DHT port's own
    /// mapper under tokens of its own); None, with a status line, when it cannot
    /// start.
    fn start_mapper(
        &mut self,
        opts: &crate::portmap::PortMapOptions,
        tcp: Option<u16>,
        udp: Option<u16>,
        seed: u64,
        dht: bool,
    ) -> Option<PortMapHost> {
        let tokens = if dht {
            [PORTMAP_DHT, PORTMAP_DHT_UPNP]
        } else {
            [PORTMAP, PORTMAP_UPNP]
        };
        match PortMapHost::new(opts, tcp, udp, seed, self.waker.clone()) {
            Ok(mut h) => {
                let registry = self.poll.registry();
                let registered = registry
                    .register(h.socket_mut(), tokens[0], Interest::READABLE)
                    .and_then(|()| match h.upnp_socket_mut() {
                        Some(s) => registry.register(s, tokens[1], Interest::READABLE),
                        None => Ok(()),
                    });
                match registered {
                    Ok(()) => {
                        self.push_lines(h.take_lines(), dht);
                        Some(h)
                    }
                    Err(e) => {
                        self.portmap_line(format!("port mapping: off: {e}"));
                        None
                    }
                }
            }
            Err(e) => {
                self.portmap_line(format!("port mapping: off: {e}"));
                None
            }
        }
    }

    fn portmap_line(&mut self, s: String) {
        log::info!("{s}");
        self.portmap_lines.push(s);
    }

    /// Datagrams from the gateway, timers, sends.
    pub(super) fn service_port_mapping(&mut self, readable: bool) {
        let now = self.now();
        if let Some(h) = self.portmap_dht.as_mut() {
            if readable || self.portmap_dht_more {
                self.portmap_dht_more = h.read(now);
            }
            h.service(now);
            let lines = h.take_lines();
            self.push_lines(lines, true);
        }
        let Some(h) = self.portmap.as_mut() else {
            self.bound_portmap_lines();
            return;
        };
        if readable || self.portmap_more {
            self.portmap_more = h.read(now);
        }
        h.service(now);
        // The gateway's word on our external address goes to the session (our
        // extension handshake) and from there to the DHT (BEP 42).
        let external = h.external_address();
        let lines = h.take_lines();
        self.portmap_lines.extend(lines);
        self.bound_portmap_lines();
        if external.is_some() && external != self.portmap_external {
            self.portmap_external = external;
            if let Some(a) = external {
                self.session.set_external_address(std::net::IpAddr::V4(a));
            }
        }
    }

    /// A mapper's status lines, those of the DHT port's own named as such.
    fn push_lines(&mut self, lines: Vec<String>, dht: bool) {
        if dht {
            self.portmap_lines.extend(lines.into_iter().map(dht_line));
        } else {
            self.portmap_lines.extend(lines);
        }
    }

    /// Bounded if the application never takes them.
    fn bound_portmap_lines(&mut self) {
        if self.portmap_lines.len() > 64 {
            let extra = self.portmap_lines.len() - 64;
            self.portmap_lines.drain(..extra);
        }
    }

    /// Deletes the mappings, waiting a little for the gateway (at shutdown, and when
    /// the ports change).
    pub(super) fn finish_port_mapping(&mut self) {
        let hosts = [
            (self.portmap.take(), false),
            (self.portmap_dht.take(), true),
        ];
        for (mut h, dht) in hosts.into_iter().filter_map(|(h, d)| Some((h?, d))) {
            let _ = self.poll.registry().deregister(h.socket_mut());
            if let Some(s) = h.upnp_socket_mut() {
                let _ = self.poll.registry().deregister(s);
            }
            let epoch = self.epoch;
            h.finish(|| super::since(epoch), FINISH_LIMIT);
            self.push_lines(h.take_lines(), dht);
        }
    }

    /// Maps again after a settings change that changed the ports or the switch.
    pub(super) fn restart_port_mapping(
        &mut self,
        was: &Option<crate::portmap::PortMapOptions>,
        old_port: u16,
        old_dht_port: Option<u16>,
    ) {
        if *was == self.opts.port_mapping
            && old_port == self.local_addr.port()
            && old_dht_port == self.dht_port()
        {
            return;
        }
        self.finish_port_mapping();
        self.start_port_mapping();
    }

    /// The DHT's UDP port (None: no DHT).
    pub(super) fn dht_port(&self) -> Option<u16> {
        self.dht
            .as_ref()
            .and_then(|d| d.local_addr().ok())
            .map(|a| a.port())
    }

    /// What was mapped where (None: port mapping off or not started); a DHT on a
    /// port of its own adds its mapping.
    pub fn port_mapping(&self) -> Option<PortMapStatus> {
        let mut status = self.portmap.as_ref().map(PortMapHost::status)?;
        if let Some(d) = self.portmap_dht.as_ref().map(PortMapHost::status) {
            status.mappings.extend(d.mappings);
            if let (Some(u), Some(du)) = (status.upnp.as_mut(), d.upnp) {
                u.mappings.extend(du.mappings);
            }
        }
        Some(status)
    }

    /// Port mapping status lines since the last call: what was mapped, what failed
    /// (each is also logged).
    pub fn take_port_mapping_lines(&mut self) -> Vec<String> {
        std::mem::take(&mut self.portmap_lines)
    }
}

/// A status line of the DHT port's own mapper, named as such.
fn dht_line(line: String) -> String {
    match line.strip_prefix("port mapping: ") {
        Some(rest) => format!("port mapping (DHT port): {rest}"),
        None => line,
    }
}
