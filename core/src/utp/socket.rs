//! The demultiplexer over one UDP port: datagrams are routed to connections by the
//! peer's address and the connection id (BEP 29 "Connection setup"), a SYN opens an
//! incoming connection within the cap, and anything that matches no connection is
//! answered with a RESET (bounded).
//!
//! Connection ids: the side that connects picks `recv_id` at random and sends its SYN
//! with it; it sends everything else with `send_id = recv_id + 1`. The side that
//! accepts takes `recv_id = syn.conn_id + 1` and `send_id = syn.conn_id`. So the id
//! in a packet is always the receiver's `recv_id`, and the socket keys its connections
//! by `(peer address, recv_id)`.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use super::conn::{CloseReason, Connection, State};
use super::packet::{self, Header, PacketError, PacketType};
use super::{classify, DatagramKind, UtpConfig};
use crate::rng::Rng;
use crate::time::Instant;

/// A connection of a [`UtpSocket`]: an index and a generation, so a handle to a
/// removed or evicted connection never reaches its successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnHandle {
    index: u32,
    generation: u32,
}

/// What became of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// Not uTP (a bencoded DHT message starts with `d`): for the DHT or nobody.
    NotUtp,
    /// Looked like uTP but did not decode; dropped.
    Invalid(PacketError),
    /// Handed to a connection.
    Delivered(ConnHandle),
    /// A SYN opened a new incoming connection; `evicted` was closed to make room
    /// (its handle is no longer valid).
    Accepted {
        /// The new connection.
        handle: ConnHandle,
        /// The connection evicted for it, if the socket was full.
        evicted: Option<ConnHandle>,
    },
    /// A SYN beyond the cap with nothing to evict: a RESET answers it.
    Refused,
    /// No connection has this id from this address: a RESET answers it (unless it
    /// was one).
    Unknown,
}

/// What the socket tells its host, from [`UtpSocket::poll_event`]: only about
/// connections the host knows (those it dialed, and incoming ones once
/// [`Event::Accepted`]); none about a connection after [`UtpSocket::release`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An incoming connection is confirmed (the peer acknowledged our answer to its
    /// SYN, whose random sequence number a sender at a forged address never saw): a
    /// peer now. What it sent is readable already. An incoming connection never
    /// confirmed within [`UtpConfig::confirm_timeout`] is dropped without a word.
    Accepted(ConnHandle),
    /// A packet or a timer changed the connection: it may have become readable,
    /// writable, connected or closed. Once per connection until polled.
    Changed(ConnHandle),
    /// The socket dropped the connection to make room for another (it was closed with
    /// nothing left to read): the handle is void.
    Dropped(ConnHandle),
}

/// Why `connect` failed (the local caller's capacity, not the peer's fault).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// `max_connections` reached.
    Full,
    /// No free connection id for this address after several tries.
    NoFreeId,
}

#[derive(Debug)]
struct Entry<A> {
    addr: A,
    conn: Connection,
    created: Instant,
    incoming: bool,
    /// The host knows it: dialed, or reported [`Event::Accepted`].
    known: bool,
    /// An [`Event::Changed`] for it waits in the queue.
    changed: bool,
    /// Let go by the host: removed once closed or at this instant.
    released: Option<Instant>,
}

#[derive(Debug)]
struct Slot<A> {
    generation: u32,
    entry: Option<Entry<A>>,
}

/// Most packets [`UtpSocket::poll_transmit`] takes from one connection in a row while
/// another may have some (a host's send batch holds 32).
pub const TRANSMIT_BURST: usize = 32;

/// The uTP endpoint of one UDP port, generic over the host's address type (anything
/// ordered: a `SocketAddr`, an index).
///
/// Connection ids (BEP 29): the side that connects picks `recv_id` at random and
/// sends its SYN with it, everything else with `send_id = recv_id + 1`; the side that
/// accepts takes `recv_id = syn.conn_id + 1`, `send_id = syn.conn_id`. A packet's id
/// is thus the receiver's `recv_id`, and connections are keyed by `(address,
/// recv_id)`. A datagram whose first byte is `d` is the DHT's ([`Incoming::NotUtp`]).
///
/// Poll order: after `handle_datagram`, `handle_timeout` or a command, call
/// `poll_transmit` until `None`, then `poll_timeout`. Connections stay, closed or not,
/// until `remove`d (or evicted to make room: a closed one with nothing left to read
/// first, then for a SYN the oldest incoming one never confirmed past its SYN).
#[derive(Debug)]
pub struct UtpSocket<A> {
    cfg: UtpConfig,
    slots: Vec<Slot<A>>,
    by_id: BTreeMap<(A, u16), u32>,
    live: usize,
    resets: VecDeque<(A, Header)>,
    rng: Rng,
    /// The connection [`UtpSocket::poll_transmit`] asks first, and how many packets
    /// in a row it gave.
    cursor: usize,
    burst: usize,
    /// At most one `Changed` and one `Accepted` per connection and one `Dropped` per
    /// eviction of a connection the host knows.
    events: VecDeque<Event>,
}

impl<A: Ord + Clone> UtpSocket<A> {
    /// An empty socket; `seed` (from the host) drives connection ids and initial
    /// sequence numbers.
    pub fn new(cfg: UtpConfig, seed: u64) -> Self {
        Self {
            cfg,
            slots: Vec::new(),
            by_id: BTreeMap::new(),
            live: 0,
            resets: VecDeque::new(),
            rng: Rng::new(seed),
            cursor: 0,
            burst: 0,
            events: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &UtpConfig {
        &self.cfg
    }

    /// Connections held (open or closed and not yet removed).
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no connection is held.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The connection behind a handle.
    pub fn conn(&self, h: ConnHandle) -> Option<&Connection> {
        self.entry(h).map(|e| &e.conn)
    }

    /// The connection behind a handle, for `read`, `write`, `close`.
    pub fn conn_mut(&mut self, h: ConnHandle) -> Option<&mut Connection> {
        let slot = self.slots.get_mut(h.index as usize)?;
        if slot.generation != h.generation {
            return None;
        }
        slot.entry.as_mut().map(|e| &mut e.conn)
    }

    /// The peer's address of a connection.
    pub fn addr(&self, h: ConnHandle) -> Option<&A> {
        self.entry(h).map(|e| &e.addr)
    }

    /// The handles of every connection held.
    pub fn handles(&self) -> impl Iterator<Item = ConnHandle> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.entry.as_ref().map(|_| ConnHandle {
                index: i as u32,
                generation: s.generation,
            })
        })
    }

    fn entry(&self, h: ConnHandle) -> Option<&Entry<A>> {
        let slot = self.slots.get(h.index as usize)?;
        if slot.generation != h.generation {
            return None;
        }
        slot.entry.as_ref()
    }

    /// Opens a connection to `addr`; the SYN goes out on the next `poll_transmit`.
    pub fn connect(&mut self, now: Instant, addr: A) -> Result<ConnHandle, ConnectError> {
        // A dial may take the place of an incoming connection never confirmed past its
        // SYN: a SYN flood does not keep us from dialing.
        if self.live >= self.cfg.max_connections as usize && self.evict_one(true).is_none() {
            return Err(ConnectError::Full);
        }
        for _ in 0..16 {
            let id = self.rng.next_u32() as u16;
            if self.by_id.contains_key(&(addr.clone(), id)) {
                continue;
            }
            let seq = self.rng.next_u32() as u16;
            let conn = Connection::connect(&self.cfg, now, id, seq);
            let h = self.insert(now, addr, conn, false);
            if let Some(e) = self.slots[h.index as usize].entry.as_mut() {
                e.known = true;
            }
            return Ok(h);
        }
        Err(ConnectError::NoFreeId)
    }

    /// Drops a connection (an open one is told with a RESET). Returns whether the
    /// handle was valid.
    pub fn remove(&mut self, h: ConnHandle) -> bool {
        let Some(slot) = self.slots.get_mut(h.index as usize) else {
            return false;
        };
        if slot.generation != h.generation {
            return false;
        }
        let Some(e) = slot.entry.take() else {
            return false;
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.live -= 1;
        self.by_id.remove(&(e.addr.clone(), e.conn.recv_id()));
        if !matches!(e.conn.state(), State::Closed(_)) {
            let h = Header {
                ty: PacketType::Reset,
                conn_id: e.conn.send_id(),
                timestamp_us: 0,
                timestamp_diff_us: 0,
                wnd_size: 0,
                seq_nr: 0,
                ack_nr: 0,
            };
            self.queue_reset(e.addr, h);
        }
        true
    }

    fn insert(&mut self, now: Instant, addr: A, conn: Connection, incoming: bool) -> ConnHandle {
        let index = match self.slots.iter().position(|s| s.entry.is_none()) {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                self.slots.len() - 1
            }
        };
        self.by_id
            .insert((addr.clone(), conn.recv_id()), index as u32);
        let slot = &mut self.slots[index];
        slot.entry = Some(Entry {
            addr,
            conn,
            created: now,
            incoming,
            known: false,
            changed: false,
            released: None,
        });
        self.live += 1;
        ConnHandle {
            index: index as u32,
            generation: slot.generation,
        }
    }

    /// Evicts the least useful connection: a closed one with nothing left to read, or
    /// else (`allow_half_open`: for incoming SYNs and dials) the oldest incoming one
    /// never confirmed past its SYN.
    fn evict_one(&mut self, allow_half_open: bool) -> Option<ConnHandle> {
        let mut best: Option<(u8, Instant, usize)> = None;
        for (i, s) in self.slots.iter().enumerate() {
            let Some(e) = &s.entry else { continue };
            // A closed connection whose bytes were all read is of no more use; one
            // with bytes unread is left for the host to drain.
            // Then, as much use: one the host released (lingering for its FIN, which a
            // peer may never acknowledge to hold the slot), or (for SYNs and dials) an
            // incoming one never confirmed.
            let rank = if matches!(e.conn.state(), State::Closed(_)) && e.conn.readable() == 0 {
                0
            } else if e.released.is_some()
                || (allow_half_open && e.incoming && !e.conn.is_confirmed())
            {
                1
            } else {
                continue;
            };
            if best.is_none_or(|(r, t, _)| (rank, e.created) < (r, t)) {
                best = Some((rank, e.created, i));
            }
        }
        let (_, _, i) = best?;
        let slot = &mut self.slots[i];
        let h = ConnHandle {
            index: i as u32,
            generation: slot.generation,
        };
        let mut e = slot.entry.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.live -= 1;
        self.by_id.remove(&(e.addr.clone(), e.conn.recv_id()));
        e.conn.evict();
        if e.known && e.released.is_none() {
            self.events.push_back(Event::Dropped(h));
        }
        Some(h)
    }

    fn queue_reset(&mut self, addr: A, h: Header) {
        if self.resets.len() < usize::from(self.cfg.max_pending_resets) {
            self.resets.push_back((addr, h));
        }
    }

    fn reset_for(&mut self, now: Instant, addr: A, to: &Header) {
        let h = Header {
            ty: PacketType::Reset,
            conn_id: to.conn_id,
            timestamp_us: (now.as_millis().wrapping_mul(1000)) as u32,
            timestamp_diff_us: 0,
            wnd_size: 0,
            seq_nr: self.rng.next_u32() as u16,
            ack_nr: to.seq_nr,
        };
        self.queue_reset(addr, h);
    }

    fn lookup(&self, addr: &A, id: u16) -> Option<usize> {
        self.by_id.get(&(addr.clone(), id)).map(|&i| i as usize)
    }

    /// A datagram from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: A, datagram: &[u8]) -> Incoming {
        if classify(datagram) != DatagramKind::Utp {
            return Incoming::NotUtp;
        }
        let p = match packet::decode(datagram) {
            Ok(p) => p,
            Err(e) => return Incoming::Invalid(e),
        };
        let h = p.header;
        let target = match h.ty {
            PacketType::Syn => self.lookup(&from, h.conn_id.wrapping_add(1)),
            PacketType::Reset => self.lookup(&from, h.conn_id).or_else(|| {
                // A RESET may carry our send id (the id of the packet it answers).
                [h.conn_id.wrapping_sub(1), h.conn_id.wrapping_add(1)]
                    .into_iter()
                    .filter_map(|id| self.lookup(&from, id))
                    .find(|&i| {
                        self.slots[i]
                            .entry
                            .as_ref()
                            .is_some_and(|e| e.conn.send_id() == h.conn_id)
                    })
            }),
            _ => self.lookup(&from, h.conn_id),
        };
        if let Some(i) = target {
            let slot = &mut self.slots[i];
            let handle = ConnHandle {
                index: i as u32,
                generation: slot.generation,
            };
            let mut drop_released = false;
            if let Some(e) = slot.entry.as_mut() {
                // A closed connection answers with a RESET, except after a clean
                // close (the peer may resend its FIN: the connection acks it again).
                let was_closed = matches!(
                    e.conn.state(),
                    State::Closed(r) if r != CloseReason::Normal
                );
                e.conn.handle_packet(now, &p);
                let closed = matches!(e.conn.state(), State::Closed(_));
                if e.released.is_some() {
                    drop_released = closed;
                } else if e.known {
                    if !e.changed {
                        e.changed = true;
                        self.events.push_back(Event::Changed(handle));
                    }
                } else if e.conn.is_confirmed() && e.conn.state() == State::Connected {
                    e.known = true;
                    self.events.push_back(Event::Accepted(handle));
                }
                if was_closed && !matches!(h.ty, PacketType::Reset | PacketType::State) {
                    self.reset_for(now, from, &h);
                }
            }
            if drop_released {
                self.remove(handle);
            }
            return Incoming::Delivered(handle);
        }
        match h.ty {
            PacketType::Syn => {
                let mut evicted = None;
                if self.live >= self.cfg.max_connections as usize {
                    evicted = self.evict_one(true);
                    if evicted.is_none() {
                        self.reset_for(now, from, &h);
                        return Incoming::Refused;
                    }
                }
                let seq = self.rng.next_u32() as u16;
                let conn = Connection::accept(&self.cfg, now, &h, seq);
                let handle = self.insert(now, from, conn, true);
                Incoming::Accepted { handle, evicted }
            }
            PacketType::Reset => Incoming::Unknown,
            _ => {
                self.reset_for(now, from, &h);
                Incoming::Unknown
            }
        }
    }

    /// The next datagram to send: its destination and length in `buf` (give it at
    /// least `max_packet_size` bytes). Connections take turns, each giving up to
    /// [`TRANSMIT_BURST`] packets in a row: a host can send a connection's run of
    /// equal packets as one buffer its kernel cuts into datagrams.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(A, usize)> {
        while let Some((addr, h)) = self.resets.pop_front() {
            if let Ok(n) = packet::encode(&h, None, &[], buf) {
                return Some((addr, n));
            }
        }
        let n = self.slots.len();
        for k in 0..n {
            let i = (self.cursor + k) % n;
            let Some(e) = self.slots[i].entry.as_mut() else {
                continue;
            };
            if let Some(len) = e.conn.poll_transmit(now, buf) {
                self.burst = if k == 0 { self.burst + 1 } else { 1 };
                if self.burst >= TRANSMIT_BURST {
                    self.cursor = (i + 1) % n;
                    self.burst = 0;
                } else {
                    self.cursor = i;
                }
                return Some((e.addr.clone(), len));
            }
        }
        None
    }

    /// When `handle_timeout` wants to be called next: a connection's timer, the end
    /// of an unconfirmed one's [`UtpConfig::confirm_timeout`], a released one's
    /// [`UtpConfig::linger`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| {
                let e = s.entry.as_ref()?;
                let t = e.conn.poll_timeout();
                let deadline = self.deadline(e);
                match (t, deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }

    /// When the socket drops `e` unless something happens first.
    fn deadline(&self, e: &Entry<A>) -> Option<Instant> {
        if let Some(d) = e.released {
            return Some(d);
        }
        (e.incoming && !e.known).then(|| e.created + self.cfg.confirm_timeout)
    }

    /// Runs every connection's timers due at `now` (an [`Event::Changed`] for each
    /// connection a timer changed), drops incoming connections unconfirmed past
    /// [`UtpConfig::confirm_timeout`] (a RESET tells them) and released ones that
    /// closed or outlived [`UtpConfig::linger`].
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut gone: Vec<ConnHandle> = Vec::new();
        for i in 0..self.slots.len() {
            let deadline = match self.slots[i].entry.as_ref() {
                Some(e) => self.deadline(e),
                None => continue,
            };
            let s = &mut self.slots[i];
            let handle = ConnHandle {
                index: i as u32,
                generation: s.generation,
            };
            let Some(e) = s.entry.as_mut() else { continue };
            if e.conn.poll_timeout().is_some_and(|t| t <= now) {
                e.conn.handle_timeout(now);
                if e.known && e.released.is_none() && !e.changed {
                    e.changed = true;
                    self.events.push_back(Event::Changed(handle));
                }
            }
            let closed = matches!(e.conn.state(), State::Closed(_));
            let unreported = e.released.is_some() || !e.known;
            if deadline.is_some_and(|d| now >= d) || (unreported && closed) {
                gone.push(handle);
            }
        }
        for h in gone {
            self.remove(h);
        }
    }

    /// The host lets a connection go at `now`: it closes gracefully (what is queued,
    /// then a FIN) and is removed once closed or [`UtpConfig::linger`] later; `abort`:
    /// a RESET and removed at once. No event names it from now on. Returns whether
    /// the handle was valid.
    pub fn release(&mut self, now: Instant, h: ConnHandle, abort: bool) -> bool {
        let linger = self.cfg.linger;
        let Some(slot) = self.slots.get_mut(h.index as usize) else {
            return false;
        };
        if slot.generation != h.generation {
            return false;
        }
        let Some(e) = slot.entry.as_mut() else {
            return false;
        };
        if abort || matches!(e.conn.state(), State::Closed(_)) {
            return self.remove(h);
        }
        e.conn.close();
        e.released = Some(now + linger);
        true
    }

    /// The next thing the host should hear of, oldest first. Poll it after
    /// `handle_datagram` and `handle_timeout`.
    pub fn poll_event(&mut self) -> Option<Event> {
        while let Some(ev) = self.events.pop_front() {
            match ev {
                Event::Changed(h) | Event::Accepted(h) => {
                    let Some(slot) = self.slots.get_mut(h.index as usize) else {
                        continue;
                    };
                    if slot.generation != h.generation {
                        continue;
                    }
                    match slot.entry.as_mut() {
                        Some(e) if e.released.is_none() => {
                            if matches!(ev, Event::Changed(_)) {
                                e.changed = false;
                            }
                            return Some(ev);
                        }
                        _ => continue,
                    }
                }
                _ => return Some(ev),
            }
        }
        None
    }

    /// Why a connection closed, if it did.
    pub fn close_reason(&self, h: ConnHandle) -> Option<CloseReason> {
        match self.conn(h)?.state() {
            State::Closed(r) => Some(r),
            _ => None,
        }
    }
}
