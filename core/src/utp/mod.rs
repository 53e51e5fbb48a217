//! uTP, the micro transport protocol (BEP 29), with LEDBAT congestion control
//! (RFC 6817): reliable, ordered byte streams over UDP datagrams whose sender backs off
//! as soon as it sees its own packets queue, so a seeding box gives way to the other
//! traffic of its link.
//!
//! Sans-IO in the shape of quinn-proto: datagrams and `now` go in, datagrams to send
//! and the next timer come out; nothing here opens a socket or reads a clock.
//!
//! - [`packet`] (no allocator): the header, the extension chain, the selective ACK;
//!   decoding returns typed errors and never panics, encoding writes into a caller
//!   buffer. [`packet::looks_like_utp`] is the first-byte check that tells uTP from the
//!   DHT's bencoded messages (`d`) on a shared UDP port.
//! - [`ledbat`] (no allocator): the one-way delay history and the congestion window.
//! - `Connection` (with `alloc`): one connection's state machine: SYN/STATE/DATA/
//!   FIN/RESET, 16-bit sequence and ack numbers with wrap-around, the receive window
//!   advertised and the peer's honoured, a reorder buffer with selective ACKs, fast
//!   retransmit on 3 duplicate ACKs or 3 packets selectively acked past a hole,
//!   retransmission timeouts from RTT estimation (BEP 29: `rto = max(rtt + 4 *
//!   rtt_var, 500 ms)`, doubled on each timeout), a bounded number of resends,
//!   keep-alives, the FIN handshake, RESET.
//! - `UtpSocket` (with `alloc`): the demultiplexer over one UDP port, by peer address
//!   (a type the host supplies) and connection id, with a cap on connections.
//!
//! # Poll order
//!
//! For a socket: after each `handle_datagram`, `handle_timeout` or command
//! (`connect`, writes, `close`), call `poll_transmit` until it returns `None`, then
//! `poll_timeout` for the instant of the next `handle_timeout`.
//!
//! # Bounds (all in [`UtpConfig`])
//!
//! - Per connection: the send buffer (`send_buffer`, the backpressure of `write`), the
//!   receive buffer (`recv_buffer`, also the window advertised: in-order bytes not yet
//!   read plus out-of-order bytes held never exceed it), the reorder slots
//!   (`reorder_slots`, each holding one packet's payload, their storage reused), the
//!   packets in flight (`max_packets_in_flight`). Worst-case memory of a connection:
//!   `send_buffer + recv_buffer + reorder_slots * max payload` plus about 40 bytes per
//!   packet in flight.
//! - Per socket: `max_connections`; a SYN beyond it evicts a closed connection, or
//!   else the oldest incoming one that never got past its SYN (a SYN flood's leftovers),
//!   or else is refused with a RESET. RESETs waiting to go out: `max_pending_resets`,
//!   excess ones dropped.
//! - Per packet: at most [`packet::MAX_EXTENSIONS`] extensions, a selective ACK of at
//!   most [`packet::MAX_SACK_BYTES`].
//! - No allocation per packet once a connection's buffers have grown: the send and
//!   receive buffers grow up to their caps and are reused, the reorder slots keep
//!   their storage.
//!
//! # Packet size
//!
//! `max_packet_size` defaults to 1404 bytes for the whole uTP packet (header
//! included), libtorrent's initial packet size: an Ethernet MTU of 1500 less the IPv4
//! and UDP headers and 68 bytes of margin for tunnels (PPPoE, VPNs). That leaves 1384
//! bytes of payload a packet.
//!
//! # Not done here
//!
//! Path MTU discovery (the size stays at the configured one); delayed ACKs (every data
//! packet is acknowledged); the extension-bits extension (2) is skipped, not sent;
//! clock drift is handled only by the base delay history aging out every two minutes.
//! The session decides which transport to dial ([`crate::session::TransportPolicy`]);
//! the std host carries uTP peers over its UDP port, shared with the DHT.

pub mod ledbat;
pub mod packet;

#[cfg(feature = "alloc")]
mod conn;
#[cfg(feature = "alloc")]
mod socket;

#[cfg(feature = "alloc")]
pub use conn::{CloseReason, Connection, State};
#[cfg(feature = "alloc")]
pub use socket::{ConnHandle, ConnectError, Event, Incoming, UtpSocket, TRANSMIT_BURST};

use crate::time::Duration;

/// What a datagram on a port shared with the DHT is, from its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramKind {
    /// A bencoded message (starts with `d`): the DHT's.
    Dht,
    /// A uTP v1 packet, by its first byte and length.
    Utp,
    /// Neither.
    Other,
}

/// Tells a DHT message from a uTP packet (libtorrent does the same on its shared
/// port): a bencoded dictionary starts with `d`, a uTP v1 packet with
/// `type << 4 | 1`, type 0 to 4.
pub fn classify(datagram: &[u8]) -> DatagramKind {
    if datagram.first() == Some(&b'd') {
        DatagramKind::Dht
    } else if packet::looks_like_utp(datagram) {
        DatagramKind::Utp
    } else {
        DatagramKind::Other
    }
}

/// uTP settings: every per-connection and per-socket bound, and the protocol's timers.
/// [`UtpConfig::low_memory`] is the small-device profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtpConfig {
    /// The largest uTP packet sent, header included (libtorrent's initial 1404).
    pub max_packet_size: u16,
    /// Bytes written and not yet acknowledged, per connection (`write` backpressure).
    pub send_buffer: u32,
    /// Bytes received and not yet read, in order or not, per connection; the window
    /// advertised to the peer.
    pub recv_buffer: u32,
    /// Out-of-order packets held per connection (rounded up to a power of two, at
    /// most 4096).
    pub reorder_slots: u16,
    /// Packets in flight per connection (at most 16384, half the sequence space).
    pub max_packets_in_flight: u16,
    /// The retransmission timeout before the first RTT sample (BEP 29: 1 s).
    pub initial_rto: Duration,
    /// The floor of the retransmission timeout (BEP 29: 500 ms).
    pub min_rto: Duration,
    /// The ceiling of the retransmission timeout after backoff.
    pub max_rto: Duration,
    /// Resends of a SYN before the connection fails (libtorrent: 2).
    pub syn_resends: u8,
    /// Resends of a data packet before the connection fails (libtorrent: 3).
    pub data_resends: u8,
    /// Resends of a FIN before the connection fails (libtorrent: 2).
    pub fin_resends: u8,
    /// Duplicate ACKs (or packets selectively acked past a hole) that make a packet
    /// count as lost (3, as TCP and libutp).
    pub dup_ack_threshold: u8,
    /// An ACK goes out after this long without sending (libutp: 29 s, inside NAT
    /// timeouts).
    pub keepalive_interval: Duration,
    /// The connection fails after this long without a valid packet from the peer.
    pub idle_timeout: Duration,
    /// LEDBAT's target queueing delay in microseconds (100 ms).
    pub target_delay_us: u32,
    /// Connections per socket.
    pub max_connections: u32,
    /// RESETs queued for unknown or refused peers per socket.
    pub max_pending_resets: u16,
    /// An incoming connection not confirmed this long after its SYN is dropped: a SYN
    /// from a forged address costs a slot for no longer (5 s).
    pub confirm_timeout: Duration,
    /// A connection the host released may take this long to close gracefully (what is
    /// queued and its FIN acknowledged) before it is dropped (10 s).
    pub linger: Duration,
}

impl Default for UtpConfig {
    fn default() -> Self {
        Self {
            max_packet_size: 1404,
            send_buffer: 256 * 1024,
            recv_buffer: 256 * 1024,
            reorder_slots: 128,
            max_packets_in_flight: 512,
            initial_rto: Duration::from_millis(1000),
            min_rto: Duration::from_millis(500),
            max_rto: Duration::from_secs(60),
            syn_resends: 2,
            data_resends: 3,
            fin_resends: 2,
            dup_ack_threshold: 3,
            keepalive_interval: Duration::from_secs(29),
            idle_timeout: Duration::from_secs(300),
            target_delay_us: 100_000,
            max_connections: 200,
            max_pending_resets: 64,
            confirm_timeout: Duration::from_secs(5),
            linger: Duration::from_secs(10),
        }
    }
}

impl UtpConfig {
    /// The small-device profile: 64 KiB buffers, 32 reorder slots, 128 packets in
    /// flight, 32 connections, 16 queued RESETs (about 176 KiB a connection at worst).
    pub fn low_memory() -> Self {
        Self {
            send_buffer: 64 * 1024,
            recv_buffer: 64 * 1024,
            reorder_slots: 32,
            max_packets_in_flight: 128,
            max_connections: 32,
            max_pending_resets: 16,
            ..Self::default()
        }
    }

    /// The largest payload of one packet.
    pub fn max_payload(&self) -> u16 {
        self.max_packet_size.max(packet::HEADER_LEN as u16 + 1) - packet::HEADER_LEN as u16
    }

    /// The reorder slots actually kept: a power of two from 1 to 4096.
    pub fn reorder_slot_count(&self) -> usize {
        usize::from(self.reorder_slots.clamp(1, 4096)).next_power_of_two()
    }

    /// The packets in flight actually allowed: 1 to 16384.
    pub fn packets_in_flight_cap(&self) -> usize {
        usize::from(self.max_packets_in_flight.clamp(1, 16_384))
    }
}
