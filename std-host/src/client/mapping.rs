//! Port mapping (PCP, NAT-PMP, UPnP IGD) of the client's ports on the default gateway: started
//! with the client when [`ClientOptions::port_mapping`](super::ClientOptions) says so,
//! serviced each turn of the loop, the mappings deleted at shutdown. It never fails or
//! stalls the client: every problem is a status line ([`crate::portmap`]).

use super::{Client, PORTMAP, PORTMAP_UPNP};
use crate::portmap::{PortMapHost, PortMapStatus};
use mio::Interest;

/// How long shutdown waits for the gateway to acknowledge the deletions (UPnP's are
/// HTTP requests, one after the other).
const FINISH_LIMIT: std::time::Duration = std::time::Duration::from_secs(3);

impl Client {
    /// Starts mapping the listen port (TCP) and the UDP port of uTP (the same number)
    /// or, without uTP, the DHT's; on a loopback listen address there is nothing to
    /// map. A failure to start is a status line.
    pub(super) fn start_port_mapping(&mut self) {
        let Some(opts) = self.opts.port_mapping.clone() else {
            return;
        };
        if self.local_addr.ip().is_loopback() {
            log::debug!("port mapping: listening on loopback, nothing to map");
            return;
        }
        let tcp = self.local_addr.port();
        let udp = if self.utp.is_some() {
            Some(tcp)
        } else {
            self.dht
                .as_ref()
                .and_then(|d| d.local_addr().ok())
                .map(|a| a.port())
        };
        let seed = crate::os::random_u64();
        match PortMapHost::new(&opts, Some(tcp), udp, seed, self.waker.clone()) {
            Ok(mut h) => {
                let registry = self.poll.registry();
                let registered = registry
                    .register(h.socket_mut(), PORTMAP, Interest::READABLE)
                    .and_then(|()| match h.upnp_socket_mut() {
                        Some(s) => registry.register(s, PORTMAP_UPNP, Interest::READABLE),
                        None => Ok(()),
                    });
                match registered {
                    Ok(()) => {
                        self.portmap_lines.extend(h.take_lines());
                        self.portmap = Some(h);
                    }
                    Err(e) => self.portmap_line(format!("port mapping: off: {e}")),
                }
            }
            Err(e) => self.portmap_line(format!("port mapping: off: {e}")),
        }
    }

    fn portmap_line(&mut self, s: String) {
        log::info!("{s}");
        self.portmap_lines.push(s);
    }

    /// Datagrams from the gateway, timers, sends.
    pub(super) fn service_port_mapping(&mut self, readable: bool) {
        let now = self.now();
        let Some(h) = self.portmap.as_mut() else {
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
        // Bounded if the application never takes them.
        if self.portmap_lines.len() > 64 {
            let extra = self.portmap_lines.len() - 64;
            self.portmap_lines.drain(..extra);
        }
        if external.is_some() && external != self.portmap_external {
            self.portmap_external = external;
            if let Some(a) = external {
                self.session.set_external_address(std::net::IpAddr::V4(a));
            }
        }
    }

    /// Deletes the mappings, waiting a little for the gateway (at shutdown, and when
    /// the ports change).
    pub(super) fn finish_port_mapping(&mut self) {
        if let Some(mut h) = self.portmap.take() {
            let _ = self.poll.registry().deregister(h.socket_mut());
            if let Some(s) = h.upnp_socket_mut() {
                let _ = self.poll.registry().deregister(s);
            }
            let epoch = self.epoch;
            h.finish(|| super::since(epoch), FINISH_LIMIT);
            self.portmap_lines.extend(h.take_lines());
        }
    }

    /// Maps again after a settings change that changed the ports or the switch.
    pub(super) fn restart_port_mapping(
        &mut self,
        was: &Option<crate::portmap::PortMapOptions>,
        old_port: u16,
    ) {
        if *was == self.opts.port_mapping && old_port == self.local_addr.port() {
            return;
        }
        self.finish_port_mapping();
        self.start_port_mapping();
    }

    /// What was mapped where (None: port mapping off or not started).
    pub fn port_mapping(&self) -> Option<PortMapStatus> {
        self.portmap.as_ref().map(PortMapHost::status)
    }

    /// Port mapping status lines since the last call: what was mapped, what failed
    /// (each is also logged).
    pub fn take_port_mapping_lines(&mut self) -> Vec<String> {
        std::mem::take(&mut self.portmap_lines)
    }
}
