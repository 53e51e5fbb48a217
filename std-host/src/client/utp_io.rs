//! uTP peers on the loop: datagrams read from the uTP socket (ours, or the DHT's when
//! it shares the port: `discovery`), what they did to the connections carried to the
//! session (accepted, evicted, connected, readable, writable, closed), the uTP timers,
//! and the datagrams sent at the end of each turn. The bytes of a uTP connection then
//! go through the same reads and flushes as a TCP one (`net`), rate limits and
//! encryption included.

use super::net::Stream;
use super::TransportPolicy;
use super::{Client, DHT_READS_PER_TURN};
use crate::encryption::Link;
use btcore_core::session::{ConnId, Transport};

impl Client {
    /// Datagrams on the uTP sockets of our own, [`DHT_READS_PER_TURN`] at most on
    /// each.
    pub(super) fn read_utp(&mut self) {
        let now = self.now();
        if let Some(u) = self.utp.as_mut() {
            let more = u.read_own(now, DHT_READS_PER_TURN, false);
            self.utp_more = u.read_own(now, DHT_READS_PER_TURN, true) || more;
        }
    }

    /// Runs the uTP timers and carries what the socket did since the last turn to the
    /// session: connections evicted are lost, SYNs accepted are incoming peers, and
    /// connections a packet or a timer touched finish connecting, are read and
    /// flushed (or lost, once closed and read to the end).
    pub(super) fn service_utp(&mut self) {
        let now = self.now();
        let Some(u) = self.utp.as_mut() else {
            return;
        };
        u.handle_timeout(now);
        let evicted = u.take_evicted();
        let accepted = u.take_accepted();
        for conn in evicted {
            self.conn_lost(conn);
        }
        for (h, addr) in accepted {
            let conn = self.session.handle_incoming_over(now, addr, Transport::Utp);
            log::debug!("accepted {addr} over uTP as {conn:?}");
            if let Some(u) = self.utp.as_mut() {
                u.adopt(h, conn);
            }
            let link = Link::incoming(self.opts.encryption, self.keys.next());
            self.add_sock(conn, Stream::Utp(h), link, None, Vec::new());
        }
        let touched = self
            .utp
            .as_mut()
            .map(|u| u.take_touched())
            .unwrap_or_default();
        for conn in touched {
            self.on_utp_ready(conn);
        }
    }

    fn on_utp_ready(&mut self, conn: ConnId) {
        let Some(s) = self.socks.get(&conn) else {
            return;
        };
        if let (Stream::Utp(h), Some(u)) = (&s.stream, self.utp.as_ref()) {
            if let Some(c) = u.conn(*h) {
                if let btcore_core::utp::State::Closed(r) = c.state() {
                    log::debug!(
                        "{conn:?}: uTP closed ({r:?}): heard {} ms ago, cwnd {}, peer window {}, rto {:?}, unacked {}, in flight {}, readable {}",
                        self.now().since(c.last_heard()).as_millis(),
                        c.cwnd(),
                        c.peer_window(),
                        c.rto(),
                        c.unacked(),
                        c.bytes_in_flight(),
                        c.readable()
                    );
                }
            }
        }
        // Connected (or failed): as a TCP socket that turned writable.
        if s.connecting {
            self.on_writable(conn);
            if self.socks.get(&conn).is_none_or(|s| s.connecting) {
                return;
            }
        }
        self.read_conn(conn);
        self.flush(conn);
    }

    /// Sends the datagrams the uTP connections have ready (at the end of a turn, once
    /// the session's bytes were written into them).
    pub(super) fn transmit_utp(&mut self) {
        let now = self.now();
        let Some(u) = self.utp.as_mut() else {
            return;
        };
        let shared = self.dht.as_ref().map(|d| d.sockets()).unwrap_or_default();
        u.transmit(now, shared);
    }
}

impl Client {
    /// Closes the uTP socket of our own if it is bound to `port` (a DHT node about to
    /// bind that port shares its socket with uTP instead).
    pub(super) fn release_utp_port(&mut self, port: u16) {
        let Some(u) = self.utp.as_mut() else {
            return;
        };
        if u.own.as_ref().is_some_and(|s| s.port() == port) {
            if let Some(mut s) = u.own.take() {
                s.deregister(self.poll.registry());
            }
        }
    }

    /// Brings uTP in line with `new` after a settings change, listening on `port`: off
    /// under [`TransportPolicy::TcpOnly`] (its peers lost), on otherwise, on the DHT's
    /// socket when the node binds `port`, else on a socket of its own bound there. A
    /// socket that cannot be bound leaves uTP without one: dials fall back to TCP and
    /// the error is logged.
    pub(super) fn restart_utp(&mut self, new: &super::ClientOptions, port: u16) {
        if new.transport == TransportPolicy::TcpOnly {
            self.drop_utp();
            return;
        }
        let shared = self
            .dht
            .as_ref()
            .is_some_and(|d| d.local_addr().is_ok_and(|a| a.port() == port));
        if self.utp.is_none() {
            let seed = crate::os::random_u64();
            match super::start_utp(&self.poll, new, port, self.dht.as_ref(), seed) {
                Ok(u) => self.utp = u,
                Err(e) => log::warn!("uTP: cannot bind UDP port {port}: {e}"),
            }
            return;
        }
        let Some(u) = self.utp.as_mut() else {
            return;
        };
        let own_port = u.own.as_ref().map(|s| s.port());
        let right = if shared {
            own_port.is_none()
        } else {
            own_port == Some(port)
        };
        if right {
            return;
        }
        if let Some(mut s) = u.own.take() {
            s.deregister(self.poll.registry());
        }
        if !shared {
            let addr = std::net::SocketAddr::new(new.listen.ip(), port);
            match crate::utp::OwnSockets::bind(addr).and_then(|mut s| {
                s.register(self.poll.registry(), super::UTP, super::UTP6)
                    .map(|_| s)
            }) {
                Ok(s) => u.own = Some(s),
                Err(e) => {
                    // No socket to send on: no uTP (its peers lost, dials over TCP).
                    log::warn!("uTP: cannot bind {addr}: {e}");
                    self.drop_utp();
                }
            }
        }
    }

    /// Turns uTP off: its peers are lost (a last transmit tells them), the socket
    /// closed.
    fn drop_utp(&mut self) {
        if self.utp.is_none() {
            return;
        }
        let lost: Vec<ConnId> = self
            .socks
            .iter()
            .filter(|(_, s)| s.stream.transport() == Transport::Utp)
            .map(|(c, _)| *c)
            .collect();
        for c in lost {
            self.conn_lost(c);
        }
        self.transmit_utp();
        if let Some(mut u) = self.utp.take() {
            if let Some(mut s) = u.own.take() {
                s.deregister(self.poll.registry());
            }
        }
    }
}
