//! One uTP connection (see [`Connection`]).

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::ledbat::{Ledbat, LedbatConfig};
use super::packet::{self, seq_diff, Header, Packet, PacketType, MAX_SACK_BYTES};
use super::UtpConfig;
use crate::time::{Duration, Instant};

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Our SYN is out, no answer yet.
    SynSent,
    /// Open both ways.
    Connected,
    /// `close` was called: the queued data, then a FIN, go out; reading goes on.
    Closing,
    /// Over; nothing more is sent except a RESET where the reason calls for one.
    Closed(CloseReason),
}

/// Why a connection is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Both FINs were exchanged and acknowledged.
    Normal,
    /// The peer sent a RESET (or refused our SYN with one).
    Reset,
    /// A packet was resent the configured number of times without an answer.
    TimedOut,
    /// Nothing was heard from the peer for the idle timeout.
    Idle,
    /// We aborted it (`abort`), a RESET went out.
    Aborted,
    /// The socket evicted it to make room for a new connection.
    Evicted,
}

/// The kind of a packet kept for retransmission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Syn,
    Data,
    Fin,
}

/// A packet sent and not yet acknowledged in order.
#[derive(Clone, Copy, Debug)]
struct Sent {
    seq: u16,
    kind: Kind,
    /// Stream offset of the payload.
    start: u64,
    len: u32,
    sent_at: Instant,
    transmissions: u8,
    /// Acknowledged by a selective ACK (its bytes stay until the prefix is acked).
    acked: bool,
    /// Counted as lost: to be sent again, not counted in flight.
    need_resend: bool,
    /// Already fast-retransmitted once since it was last sent by the timer.
    fast_resent: bool,
}

/// One out-of-order packet held for in-order delivery; the buffer is reused.
#[derive(Debug, Default)]
struct Slot {
    seq: u16,
    full: bool,
    fin: bool,
    data: Vec<u8>,
}

/// One uTP connection: the BEP 29 state machine over datagrams, sans-IO.
///
/// ```text
///  connect()                          accept (socket, on a SYN)
///     |                                   |
///  SynSent --STATE acking the SYN-->  Connected <-- (replies STATE at once)
///     |                                   |  close(): FIN after the queued data
///     |                                   v
///     |                                Closing --our FIN acked, peer's FIN in--> Closed(Normal)
///     +--- RESET / resends exhausted / idle timeout (any state) ---------------> Closed(reason)
/// ```
///
/// Poll order after each `handle_packet`/`handle_timeout`/command: `poll_transmit`
/// until `None`, then `poll_timeout` for the next wake-up. Reading and writing bytes
/// (`read`, `write`) may happen at any time; `write` returns how much was accepted
/// (the send buffer is the backpressure), `read` what was there.
///
/// Memory: the send and receive buffers grow up to their configured caps and never
/// beyond; the packets in flight and the reorder slots are bounded by configuration
/// and reuse their storage, so the steady state allocates nothing per packet.
#[derive(Debug)]
pub struct Connection {
    cfg: UtpConfig,
    state: State,
    recv_id: u16,
    send_id: u16,
    /// The next sequence number we send.
    seq_nr: u16,
    /// The last sequence number received in order.
    ack_nr: u16,
    // --- sending ---
    /// Unsent and unacknowledged bytes; `send_buf[0]` is stream offset `send_base`.
    send_buf: VecDeque<u8>,
    send_base: u64,
    /// Stream offset of the first byte not yet put in a packet.
    next_unsent: u64,
    /// Packets sent and not yet acknowledged in order, in sequence order.
    flight: VecDeque<Sent>,
    /// Payload bytes of `flight` neither acked nor marked for resend.
    flight_bytes: u32,
    peer_wnd: u32,
    dup_acks: u8,
    /// Losses of packets before this sequence number cut the window no more.
    loss_seq: u16,
    close_requested: bool,
    fin_queued: bool,
    // --- timers ---
    srtt: u32,
    rttvar: u32,
    rto: Duration,
    rto_deadline: Option<Instant>,
    last_sent: Instant,
    last_recv: Instant,
    ledbat: Ledbat,
    // --- receiving ---
    recv_buf: VecDeque<u8>,
    reorder: Vec<Slot>,
    ooo_bytes: u32,
    /// Slots in use.
    ooo_count: usize,
    /// Some packet in flight may be marked for resend (saves a scan per poll).
    resend_pending: bool,
    peer_fin: Option<u16>,
    eof: bool,
    ack_due: bool,
    reset_due: bool,
    /// Our clock minus the peer's timestamp on its last packet (sent back to it).
    reply_us: u32,
    /// The window we last advertised.
    advertised: u32,
    /// A packet from the peer beyond its SYN arrived (an incoming connection is real).
    confirmed: bool,
    /// Our first sequence number: until the connection is confirmed, every STATE
    /// carries it, so that the connecting side, which sets its ack number from the
    /// STATE that answers its SYN, never skips data we sent meanwhile.
    initial_seq: u16,
}

fn slots_or_one(n: usize) -> usize {
    n.max(1)
}

fn micros(now: Instant) -> u32 {
    (now.as_millis().wrapping_mul(1000)) as u32
}

impl Connection {
    fn new(cfg: &UtpConfig, now: Instant, recv_id: u16, send_id: u16, seq_nr: u16) -> Self {
        let mss = u32::from(cfg.max_payload());
        Self {
            cfg: *cfg,
            state: State::SynSent,
            recv_id,
            send_id,
            seq_nr,
            ack_nr: 0,
            send_buf: VecDeque::new(),
            send_base: 0,
            next_unsent: 0,
            flight: VecDeque::new(),
            flight_bytes: 0,
            peer_wnd: mss,
            dup_acks: 0,
            loss_seq: seq_nr,
            close_requested: false,
            fin_queued: false,
            srtt: 0,
            rttvar: 0,
            rto: cfg.initial_rto,
            rto_deadline: None,
            last_sent: now,
            last_recv: now,
            ledbat: Ledbat::new(LedbatConfig {
                target_us: cfg.target_delay_us,
                ..LedbatConfig::for_mss(mss)
            }),
            recv_buf: VecDeque::new(),
            reorder: Vec::new(),
            ooo_bytes: 0,
            ooo_count: 0,
            resend_pending: false,
            peer_fin: None,
            eof: false,
            ack_due: false,
            reset_due: false,
            reply_us: 0,
            advertised: 0,
            confirmed: false,
            initial_seq: seq_nr,
        }
    }

    /// An outgoing connection: `recv_id` is ours (random, chosen by the socket), the
    /// SYN goes out on the first `poll_transmit`.
    pub fn connect(cfg: &UtpConfig, now: Instant, recv_id: u16, initial_seq: u16) -> Self {
        let mut c = Self::new(cfg, now, recv_id, recv_id.wrapping_add(1), initial_seq);
        c.flight.push_back(Sent {
            seq: initial_seq,
            kind: Kind::Syn,
            start: 0,
            len: 0,
            sent_at: now,
            transmissions: 0,
            acked: false,
            need_resend: true,
            fast_resent: false,
        });
        c.seq_nr = initial_seq.wrapping_add(1);
        c.confirmed = true;
        c.resend_pending = true;
        c
    }

    /// An incoming connection from a decoded SYN: replies with a STATE at once.
    pub fn accept(cfg: &UtpConfig, now: Instant, syn: &Header, initial_seq: u16) -> Self {
        let mut c = Self::new(
            cfg,
            now,
            syn.conn_id.wrapping_add(1),
            syn.conn_id,
            initial_seq,
        );
        c.state = State::Connected;
        c.ack_nr = syn.seq_nr;
        c.peer_wnd = syn.wnd_size;
        c.reply_us = micros(now).wrapping_sub(syn.timestamp_us);
        c.ack_due = true;
        c
    }

    // ---------------------------------------------------------------- getters

    /// The connection's state.
    pub fn state(&self) -> State {
        self.state
    }
    /// The next sequence number this side sends.
    pub fn seq_nr(&self) -> u16 {
        self.seq_nr
    }
    /// The last sequence number received in order.
    pub fn ack_nr(&self) -> u16 {
        self.ack_nr
    }
    /// The window this side advertises now: its receive buffer less what it holds.
    pub fn recv_window(&self) -> u32 {
        let used = self.recv_buf.len() as u64 + u64::from(self.ooo_bytes);
        u32::try_from(u64::from(self.cfg.recv_buffer).saturating_sub(used)).unwrap_or(0)
    }
    /// Bytes held out of order.
    pub fn out_of_order_bytes(&self) -> u32 {
        self.ooo_bytes
    }
    /// The id the peer's packets carry.
    pub fn recv_id(&self) -> u16 {
        self.recv_id
    }
    /// The id our packets carry.
    pub fn send_id(&self) -> u16 {
        self.send_id
    }
    /// Whether the peer sent anything beyond its SYN (for incoming connections; an
    /// outgoing one is always confirmed). The socket evicts unconfirmed ones first.
    pub fn is_confirmed(&self) -> bool {
        self.confirmed
    }
    /// The congestion window in bytes.
    pub fn cwnd(&self) -> u32 {
        self.ledbat.cwnd()
    }
    /// The current retransmission timeout.
    pub fn rto(&self) -> Duration {
        self.rto
    }
    /// The smoothed round-trip time in milliseconds (0 before the first sample).
    pub fn srtt_ms(&self) -> u32 {
        self.srtt
    }
    /// The current queueing delay estimate of our packets, in microseconds.
    pub fn queueing_delay_us(&self) -> Option<u32> {
        self.ledbat.history().current()
    }
    /// Payload bytes in flight (sent, not acknowledged, not counted as lost).
    pub fn bytes_in_flight(&self) -> u32 {
        self.flight_bytes
    }
    /// Bytes that `read` would return now.
    pub fn readable(&self) -> usize {
        self.recv_buf.len()
    }
    /// Whether the peer finished its stream and everything before its FIN was read.
    pub fn is_eof(&self) -> bool {
        self.eof && self.recv_buf.is_empty()
    }
    /// Bytes `write` would accept now.
    pub fn writable(&self) -> usize {
        match self.state {
            State::SynSent | State::Connected => {
                (self.cfg.send_buffer as usize).saturating_sub(self.send_buf.len())
            }
            _ => 0,
        }
    }
    /// When the last valid packet from the peer came.
    pub fn last_heard(&self) -> Instant {
        self.last_recv
    }
    /// The receive window the peer last advertised.
    pub fn peer_window(&self) -> u32 {
        self.peer_wnd
    }
    /// Bytes written and not yet acknowledged by the peer.
    pub fn unacked(&self) -> usize {
        self.send_buf.len()
    }
    /// Whether the connection holds an out-of-order packet (tests and audits).
    pub fn reorder_len(&self) -> usize {
        self.ooo_count
    }

    // ---------------------------------------------------------------- commands

    /// Queues bytes to send; returns how many were taken (0 when the send buffer is
    /// full or the connection is closing or closed).
    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.writable());
        self.send_buf.extend(&data[..n]);
        n
    }

    /// Reads received bytes in order into `out`; returns how many.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.recv_buf.len());
        let (a, b) = self.recv_buf.as_slices();
        let from_a = n.min(a.len());
        out[..from_a].copy_from_slice(&a[..from_a]);
        out[from_a..n].copy_from_slice(&b[..n - from_a]);
        self.recv_buf.drain(..n);
        // A window that reopens by a packet or more is announced at once: the peer
        // may be waiting on it with nothing in flight.
        let mss = u32::from(self.cfg.max_payload());
        if n > 0 && self.advertised < mss && self.recv_window() >= mss && self.is_open() {
            self.ack_due = true;
        }
        n
    }

    /// Closes the sending side: the queued bytes go out, then a FIN. Reading goes on
    /// until the peer's FIN.
    pub fn close(&mut self) {
        match self.state {
            State::Connected | State::SynSent => {
                self.close_requested = true;
                if self.state == State::Connected {
                    self.state = State::Closing;
                }
            }
            _ => {}
        }
    }

    /// Ends the connection at once; a RESET tells the peer.
    pub fn abort(&mut self) {
        if !matches!(self.state, State::Closed(_)) {
            self.state = State::Closed(CloseReason::Aborted);
            self.reset_due = true;
        }
    }

    /// Marks the connection evicted by its socket (no packet goes out).
    pub(crate) fn evict(&mut self) {
        self.state = State::Closed(CloseReason::Evicted);
    }

    fn is_open(&self) -> bool {
        matches!(self.state, State::Connected | State::Closing)
    }

    // ---------------------------------------------------------------- input

    /// A packet from the peer, already decoded and routed to this connection by the
    /// socket (connection id and address matched).
    pub fn handle_packet(&mut self, now: Instant, p: &Packet<'_>) {
        let h = &p.header;
        if let State::Closed(reason) = self.state {
            // Our ack of the peer's FIN was lost: it resends its FIN; ack it again.
            if reason == CloseReason::Normal
                && h.ty == PacketType::Fin
                && Some(h.seq_nr) == self.peer_fin
            {
                self.ack_due = true;
            }
            return;
        }
        if h.ty == PacketType::Reset {
            self.state = State::Closed(CloseReason::Reset);
            return;
        }
        if h.ty == PacketType::Syn {
            // A resent SYN of the connection we accepted: our STATE was lost.
            if !self.confirmed && h.seq_nr == self.ack_nr {
                self.ack_due = true;
                self.last_recv = now;
            }
            return;
        }
        if self.state == State::SynSent {
            // Only the STATE answering the SYN carries the sequence number the peer
            // starts from (a DATA may arrive reordered past another); the acceptor
            // sends that STATE before any data.
            let syn_seq = self.seq_nr.wrapping_sub(1);
            if h.ty != PacketType::State || h.ack_nr != syn_seq {
                return;
            }
            self.state = if self.close_requested {
                State::Closing
            } else {
                State::Connected
            };
            // A STATE carries the next sequence number the peer will use.
            self.ack_nr = h.seq_nr.wrapping_sub(1);
        }
        let newest_sent = self.seq_nr.wrapping_sub(1);
        if seq_diff(h.ack_nr, newest_sent) > 0 {
            // An ack for a packet never sent: not from this connection's peer.
            return;
        }
        if !self.confirmed && seq_diff(h.ack_nr, self.initial_seq.wrapping_sub(1)) < 0 {
            // An incoming connection is confirmed only by a packet acking our STATE
            // (whose random sequence number a sender at a spoofed address never saw).
            return;
        }
        self.last_recv = now;
        // Any packet past the SYN with a valid ack confirms an incoming connection.
        self.confirmed = true;
        self.reply_us = micros(now).wrapping_sub(h.timestamp_us);
        if self.ack_in_range(h.ack_nr) {
            self.peer_wnd = h.wnd_size;
            self.ledbat.on_delay_sample(now, h.timestamp_diff_us);
            self.process_acks(now, h, p.sack);
        }
        // A reordered packet with an older ack still carries good data.
        match h.ty {
            PacketType::Data => self.receive_data(h.seq_nr, p.payload, false),
            PacketType::Fin => self.receive_data(h.seq_nr, &[], true),
            _ => {}
        }
        self.check_done();
    }

    /// Whether `ack` acknowledges something we sent, or repeats the last ack.
    fn ack_in_range(&self, ack: u16) -> bool {
        let oldest = self.flight.front().map_or(self.seq_nr, |s| s.seq);
        // From the packet before the oldest unacknowledged one to the newest sent.
        seq_diff(ack, oldest.wrapping_sub(1)) >= 0 && seq_diff(ack, self.seq_nr) < 0
    }

    fn process_acks(&mut self, now: Instant, h: &Header, sack: Option<packet::Sack<'_>>) {
        let flight_before = self.flight_bytes;
        let mut acked_bytes = 0u32;
        let mut advanced = false;
        // Cumulative part.
        while let Some(front) = self.flight.front() {
            if seq_diff(h.ack_nr, front.seq) < 0 {
                break;
            }
            let s = *front;
            self.flight.pop_front();
            advanced = true;
            if !s.acked {
                if !s.need_resend {
                    self.flight_bytes = self.flight_bytes.saturating_sub(s.len);
                }
                acked_bytes += s.len;
                if s.transmissions == 1 {
                    self.rtt_sample(now.since(s.sent_at));
                }
            }
            if s.kind == Kind::Data {
                // The prefix of the buffer is done with.
                let end = s.start + u64::from(s.len);
                let drop = usize::try_from(end.saturating_sub(self.send_base))
                    .unwrap_or(usize::MAX)
                    .min(self.send_buf.len());
                self.send_buf.drain(..drop);
                self.send_base += drop as u64;
            }
        }
        // Selective part: bit i stands for ack_nr + 2 + i.
        let mut highest_sacked: Option<usize> = None;
        if let Some(s) = sack {
            let first = h.ack_nr.wrapping_add(2);
            for i in 0..s.bits() {
                if !s.is_set(i) {
                    continue;
                }
                let seq = first.wrapping_add(i as u16);
                let Some(idx) = self.flight_index(seq) else {
                    continue;
                };
                let e = &mut self.flight[idx];
                if !e.acked {
                    e.acked = true;
                    if !e.need_resend {
                        self.flight_bytes = self.flight_bytes.saturating_sub(e.len);
                    }
                    acked_bytes += e.len;
                    if e.transmissions == 1 {
                        let rtt = now.since(e.sent_at);
                        self.rtt_sample(rtt);
                    }
                }
                highest_sacked = Some(highest_sacked.map_or(idx, |h| h.max(idx)));
            }
        }
        // Duplicate acks (no progress, packets in flight, no payload).
        let mut lost: Option<usize> = None;
        if !advanced && acked_bytes == 0 && h.ty == PacketType::State && !self.flight.is_empty() {
            self.dup_acks = self.dup_acks.saturating_add(1);
            if self.dup_acks >= self.cfg.dup_ack_threshold {
                lost = Some(0);
            }
        } else if advanced {
            self.dup_acks = 0;
        }
        // Packets with `dup_ack_threshold` or more sacked packets after them are lost.
        if let Some(hi) = highest_sacked {
            let mut after = 0usize;
            for idx in (0..hi).rev() {
                let e = self.flight[idx + 1];
                if e.acked {
                    after += 1;
                }
                if after >= usize::from(self.cfg.dup_ack_threshold) && !self.flight[idx].acked {
                    self.mark_lost(idx);
                }
            }
        }
        if let Some(idx) = lost {
            self.mark_lost(idx);
        }
        if acked_bytes > 0 {
            self.ledbat
                .on_ack(acked_bytes, flight_before.max(acked_bytes));
        }
        if advanced || acked_bytes > 0 {
            self.rto_deadline = if self.flight.iter().any(|s| !s.acked) {
                Some(now + self.rto)
            } else {
                None
            };
        }
    }

    fn flight_index(&self, seq: u16) -> Option<usize> {
        let front = self.flight.front()?.seq;
        let d = seq_diff(seq, front);
        let idx = usize::try_from(d).ok()?;
        (idx < self.flight.len()).then_some(idx)
    }

    /// Marks a packet lost for fast retransmit; cuts the window once per window.
    fn mark_lost(&mut self, idx: usize) {
        let Some(e) = self.flight.get_mut(idx) else {
            return;
        };
        if e.acked || e.need_resend || e.fast_resent || e.transmissions == 0 {
            return;
        }
        e.need_resend = true;
        self.resend_pending = true;
        e.fast_resent = true;
        let (seq, len) = (e.seq, e.len);
        self.flight_bytes = self.flight_bytes.saturating_sub(len);
        if seq_diff(seq, self.loss_seq) >= 0 {
            self.ledbat.on_loss();
            self.loss_seq = self.seq_nr;
        }
    }

    fn rtt_sample(&mut self, rtt: Duration) {
        let r = u32::try_from(rtt.as_millis()).unwrap_or(u32::MAX);
        if self.srtt == 0 {
            self.srtt = r.max(1);
            self.rttvar = r / 2;
        } else {
            let delta = self.srtt.abs_diff(r);
            self.rttvar = self.rttvar - self.rttvar / 4 + delta / 4;
            self.srtt = self.srtt - self.srtt / 8 + r / 8;
        }
        let rto = u64::from(self.srtt) + 4 * u64::from(self.rttvar);
        self.rto = Duration::from_millis(
            rto.clamp(self.cfg.min_rto.as_millis(), self.cfg.max_rto.as_millis()),
        );
    }

    fn receive_data(&mut self, seq: u16, payload: &[u8], fin: bool) {
        if self.eof {
            self.ack_due = true;
            return;
        }
        if let Some(f) = self.peer_fin {
            if seq_diff(seq, f) > 0 || (fin && seq != f) {
                // Nothing comes after the FIN, and the FIN does not move.
                return;
            }
        }
        self.ack_due = true;
        let d = seq_diff(seq, self.ack_nr.wrapping_add(1));
        if d < 0 {
            return; // a duplicate: the ack above repeats where we are
        }
        if fin {
            self.peer_fin = Some(seq);
        }
        let len = payload.len() as u64;
        if d == 0 {
            if fin {
                self.ack_nr = seq;
                self.eof = true;
                return;
            }
            let used = self.recv_buf.len() as u64 + u64::from(self.ooo_bytes);
            if used + len > u64::from(self.cfg.recv_buffer) {
                return; // beyond the window: the peer resends when it has room
            }
            self.recv_buf.extend(payload);
            self.ack_nr = seq;
            let n = slots_or_one(self.reorder.len());
            if let Some(slot) = self.reorder.get_mut(usize::from(seq) % n) {
                if slot.full && slot.seq == seq {
                    slot.full = false;
                    self.ooo_count -= 1;
                    self.ooo_bytes = self.ooo_bytes.saturating_sub(slot.data.len() as u32);
                }
            }
            self.drain_reorder();
            return;
        }
        // Out of order: keep it in its slot if it fits the window and the slots.
        let slots = self.cfg.reorder_slot_count();
        if d as usize >= slots {
            return;
        }
        // Out-of-order bytes leave room for one in-order packet, so the packet that
        // fills the hole always fits once the reader has drained what is in order:
        // in-order plus out-of-order bytes never exceed the receive buffer, and a
        // reordered stream never wedges it.
        let used = self.recv_buf.len() as u64 + u64::from(self.ooo_bytes);
        let reserve = u64::from(self.cfg.max_payload());
        if used + len + reserve > u64::from(self.cfg.recv_buffer) {
            return;
        }
        if self.reorder.is_empty() {
            self.reorder.resize_with(slots, Slot::default);
        }
        let slot = &mut self.reorder[usize::from(seq) % slots];
        if slot.full {
            return; // a duplicate
        }
        slot.seq = seq;
        slot.full = true;
        slot.fin = fin;
        slot.data.clear();
        slot.data.extend_from_slice(payload);
        self.ooo_bytes += payload.len() as u32;
        self.ooo_count += 1;
    }

    fn drain_reorder(&mut self) {
        let slots = self.reorder.len();
        if slots == 0 {
            return;
        }
        loop {
            let next = self.ack_nr.wrapping_add(1);
            let slot = &mut self.reorder[usize::from(next) % slots];
            if !slot.full || slot.seq != next {
                break;
            }
            slot.full = false;
            self.ooo_count -= 1;
            self.ooo_bytes = self.ooo_bytes.saturating_sub(slot.data.len() as u32);
            self.ack_nr = next;
            if slot.fin {
                self.eof = true;
                break;
            }
            self.recv_buf.extend(slot.data.iter());
        }
    }

    /// The selective ACK of the packets held out of order, into `out`; its length
    /// (0 when none is held).
    fn build_sack(&self, out: &mut [u8; MAX_SACK_BYTES]) -> usize {
        if self.reorder_len() == 0 {
            return 0;
        }
        let slots = self.reorder.len();
        let base = self.ack_nr.wrapping_add(2);
        let mut highest = 0usize;
        out.fill(0);
        for slot in self.reorder.iter().filter(|s| s.full) {
            let Ok(i) = usize::try_from(seq_diff(slot.seq, base)) else {
                continue;
            };
            if i >= MAX_SACK_BYTES * 8 || i >= slots {
                continue;
            }
            out[i / 8] |= 1 << (i % 8);
            highest = highest.max(i + 1);
        }
        if highest == 0 {
            0
        } else {
            highest.div_ceil(32) * 4
        }
    }

    fn check_done(&mut self) {
        if self.state == State::Closing && self.fin_queued && self.flight.is_empty() && self.eof {
            self.state = State::Closed(CloseReason::Normal);
        }
    }

    // ---------------------------------------------------------------- timers

    /// When `handle_timeout` wants to be called next (`None`: when closed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.state, State::Closed(_)) {
            return None;
        }
        let idle = self.last_recv + self.cfg.idle_timeout;
        let mut t = idle;
        if let Some(d) = self.rto_deadline {
            t = t.min(d);
        }
        if self.is_open() {
            t = t.min(self.last_sent + self.cfg.keepalive_interval);
        }
        Some(t)
    }

    /// Runs the timers due at `now`: retransmission with backoff, zero-window probe,
    /// keep-alive, idle timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        if now >= self.last_recv + self.cfg.idle_timeout {
            self.state = State::Closed(CloseReason::Idle);
            self.reset_due = true;
            return;
        }
        if self.rto_deadline.is_some_and(|d| now >= d) {
            self.on_rto(now);
            if matches!(self.state, State::Closed(_)) {
                return;
            }
        }
        if self.is_open() && now >= self.last_sent + self.cfg.keepalive_interval {
            self.ack_due = true;
        }
    }

    fn on_rto(&mut self, now: Instant) {
        let Some(first) = self.flight.iter().find(|s| !s.acked).copied() else {
            self.rto_deadline = None;
            return;
        };
        let limit = match first.kind {
            Kind::Syn => self.cfg.syn_resends,
            Kind::Fin => self.cfg.fin_resends,
            Kind::Data => self.cfg.data_resends,
        };
        if first.transmissions > limit {
            self.state = State::Closed(CloseReason::TimedOut);
            self.reset_due = first.kind != Kind::Syn;
            return;
        }
        // Everything unacknowledged counts as lost (libutp): one packet at a time
        // from the oldest, with the window at its floor and the timeout doubled.
        for s in self.flight.iter_mut().filter(|s| !s.acked) {
            s.need_resend = true;
            self.resend_pending = true;
            s.fast_resent = false;
        }
        self.flight_bytes = 0;
        if first.kind != Kind::Syn {
            self.ledbat.on_timeout();
        }
        self.loss_seq = self.seq_nr;
        self.rto = Duration::from_millis(
            self.rto
                .as_millis()
                .saturating_mul(2)
                .min(self.cfg.max_rto.as_millis()),
        );
        self.rto_deadline = Some(now + self.rto);
    }

    // ---------------------------------------------------------------- output

    fn header(&mut self, now: Instant, ty: PacketType, seq_nr: u16) -> Header {
        let wnd = self.recv_window();
        self.advertised = wnd;
        let seq_nr = if ty == PacketType::State && !self.confirmed {
            self.initial_seq
        } else {
            seq_nr
        };
        Header {
            ty,
            conn_id: if ty == PacketType::Syn {
                self.recv_id
            } else {
                self.send_id
            },
            timestamp_us: micros(now),
            timestamp_diff_us: self.reply_us,
            wnd_size: wnd,
            seq_nr,
            ack_nr: self.ack_nr,
        }
    }

    /// The next datagram to send, written into `buf` (at least
    /// [`UtpConfig::max_packet_size`] bytes to fit any); its length.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.reset_due {
            self.reset_due = false;
            let h = Header {
                ty: PacketType::Reset,
                conn_id: self.send_id,
                timestamp_us: micros(now),
                timestamp_diff_us: self.reply_us,
                wnd_size: 0,
                seq_nr: self.seq_nr,
                ack_nr: self.ack_nr,
            };
            return packet::encode(&h, None, &[], buf).ok();
        }
        if let State::Closed(reason) = self.state {
            // The last ack of a clean close (of the peer's FIN) still goes out.
            if reason != CloseReason::Normal || !self.ack_due {
                return None;
            }
            let h = self.header(now, PacketType::State, self.seq_nr);
            let n = packet::encode(&h, None, &[], buf).ok()?;
            self.ack_due = false;
            return Some(n);
        }
        // An incoming connection answers the SYN with a STATE before any data (the
        // host may write at once): the dialer takes its starting point from it.
        let unanswered = !self.confirmed && self.ack_due && self.state == State::Connected;
        if !unanswered {
            if let Some(n) = self.transmit_flight(now, buf) {
                return Some(n);
            }
        }
        if self.state != State::SynSent && !unanswered {
            if let Some(n) = self.transmit_new_data(now, buf) {
                return Some(n);
            }
            if self.close_requested && !self.fin_queued && self.next_unsent == self.stream_end() {
                return self.transmit_fin(now, buf);
            }
        }
        if self.ack_due && self.state != State::SynSent {
            let mut sack = [0u8; MAX_SACK_BYTES];
            let sack_len = self.build_sack(&mut sack);
            let h = self.header(now, PacketType::State, self.seq_nr);
            let s = (sack_len > 0).then_some(&sack[..sack_len]);
            let n = packet::encode(&h, s, &[], buf).ok()?;
            self.ack_due = false;
            self.last_sent = now;
            return Some(n);
        }
        None
    }

    fn stream_end(&self) -> u64 {
        self.send_base + self.send_buf.len() as u64
    }

    /// The bytes the windows let us put in flight now.
    fn send_allowance(&self) -> u32 {
        let window = self.ledbat.cwnd().min(self.peer_wnd);
        let mut avail = window.saturating_sub(self.flight_bytes);
        if self.flight_bytes == 0 {
            // One packet may always be in flight (the window's floor), within the
            // peer's window. A closed peer window reopens with the peer's next ack:
            // the one it sends when its reader makes room, or its keep-alive.
            let mss = u32::from(self.cfg.max_payload());
            avail = avail.max(mss.min(self.peer_wnd));
        }
        avail
    }

    fn transmit_flight(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if !self.resend_pending {
            return None;
        }
        let Some(idx) = self.flight.iter().position(|s| s.need_resend && !s.acked) else {
            self.resend_pending = false;
            return None;
        };
        let s = self.flight[idx];
        // A fast retransmit goes at once (as TCP's); a resend of bytes the peer once
        // had room for may always go alone; other resends wait for the window.
        if s.kind == Kind::Data
            && !s.fast_resent
            && self.flight_bytes > 0
            && s.len > self.send_allowance()
        {
            return None;
        }
        let ty = match s.kind {
            Kind::Syn => PacketType::Syn,
            Kind::Data => PacketType::Data,
            Kind::Fin => PacketType::Fin,
        };
        let mut h = self.header(now, ty, s.seq);
        if s.kind == Kind::Syn {
            h.ack_nr = 0;
        }
        let n = self.emit(&h, s.start, s.len, buf)?;
        let e = &mut self.flight[idx];
        e.need_resend = false;
        e.sent_at = now;
        e.transmissions = e.transmissions.saturating_add(1);
        if s.kind == Kind::Data {
            self.flight_bytes += s.len;
        }
        self.after_send(now);
        Some(n)
    }

    fn transmit_new_data(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let unsent = self.stream_end().saturating_sub(self.next_unsent);
        if unsent == 0 || self.flight.len() >= self.cfg.packets_in_flight_cap() {
            return None;
        }
        let mss = u32::from(self.cfg.max_payload());
        let allowance = self.send_allowance();
        let len = u64::from(mss.min(allowance)).min(unsent);
        if len == 0 {
            return None;
        }
        // Nagle, as libutp: a short packet only when nothing else is in flight.
        if len < u64::from(mss) && self.flight_bytes > 0 {
            return None;
        }
        let len = len as u32;
        let seq = self.seq_nr;
        let h = self.header(now, PacketType::Data, seq);
        let n = self.emit(&h, self.next_unsent, len, buf)?;
        self.flight.push_back(Sent {
            seq,
            kind: Kind::Data,
            start: self.next_unsent,
            len,
            sent_at: now,
            transmissions: 1,
            acked: false,
            need_resend: false,
            fast_resent: false,
        });
        self.next_unsent += u64::from(len);
        self.seq_nr = seq.wrapping_add(1);
        self.flight_bytes += len;
        self.after_send(now);
        Some(n)
    }

    fn transmit_fin(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let seq = self.seq_nr;
        let h = self.header(now, PacketType::Fin, seq);
        let n = self.emit(&h, self.next_unsent, 0, buf)?;
        self.flight.push_back(Sent {
            seq,
            kind: Kind::Fin,
            start: self.next_unsent,
            len: 0,
            sent_at: now,
            transmissions: 1,
            acked: false,
            need_resend: false,
            fast_resent: false,
        });
        self.seq_nr = seq.wrapping_add(1);
        self.fin_queued = true;
        self.after_send(now);
        Some(n)
    }

    fn after_send(&mut self, now: Instant) {
        self.ack_due = false;
        self.last_sent = now;
        if self.rto_deadline.is_none() {
            self.rto_deadline = Some(now + self.rto);
        }
    }

    /// Encodes a packet whose payload is the stream bytes `start..start + len`, with a
    /// selective ACK when one is due and fits.
    fn emit(&self, h: &Header, start: u64, len: u32, buf: &mut [u8]) -> Option<usize> {
        let max = usize::from(self.cfg.max_packet_size).min(buf.len());
        let mut sack = [0u8; MAX_SACK_BYTES];
        let mut sack_len = self.build_sack(&mut sack);
        let len_us = len as usize;
        if packet::encoded_len(sack_len, len_us) > max {
            sack_len = 0;
        }
        let total = packet::encoded_len(sack_len, len_us);
        if total > max {
            return None;
        }
        let payload_at = total - len_us;
        let s = (sack_len > 0).then_some(&sack[..sack_len]);
        packet::encode(h, s, &[], &mut buf[..payload_at]).ok()?;
        let off = usize::try_from(start.checked_sub(self.send_base)?).ok()?;
        let end = off.checked_add(len_us)?;
        let (a, b) = self.send_buf.as_slices();
        if end > a.len() + b.len() {
            return None;
        }
        let dst = &mut buf[payload_at..total];
        if off < a.len() {
            let a_end = end.min(a.len());
            dst[..a_end - off].copy_from_slice(&a[off..a_end]);
            if end > a.len() {
                dst[a_end - off..].copy_from_slice(&b[..end - a.len()]);
            }
        } else {
            dst.copy_from_slice(&b[off - a.len()..end - a.len()]);
        }
        Some(total)
    }

    /// Whether this connection holds no unsent, unacknowledged or unread data.
    pub fn is_idle(&self) -> bool {
        self.send_buf.is_empty() && self.flight.is_empty() && self.recv_buf.is_empty()
    }
}
