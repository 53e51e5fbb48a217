//! A deterministic datagram link for uTP tests: two endpoints, a simulated clock, and a
//! link model with propagation delay, jitter (reordering), loss, duplication and an
//! optional bottleneck (a rate and a FIFO queue whose delay LEDBAT should keep near its
//! target). Each endpoint may run its own clock offset, so timestamps of the two sides
//! are unrelated and wrap.

use btcore_core::rng::Rng;
use btcore_core::time::{Duration, Instant};
use btcore_core::utp::{packet, ConnHandle, Connection, Incoming, UtpSocket};

/// One side of a link.
pub trait Endpoint {
    /// The next datagram for the other side.
    fn transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize>;
    /// A datagram from the other side.
    fn receive(&mut self, now: Instant, datagram: &[u8]);
    /// The next timer.
    fn timeout(&self) -> Option<Instant>;
    /// Runs the timers.
    fn on_timeout(&mut self, now: Instant);
    /// The connection this side uses, once there is one.
    fn conn(&mut self) -> Option<&mut Connection>;
}

impl Endpoint for Connection {
    fn transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.poll_transmit(now, buf)
    }
    fn receive(&mut self, now: Instant, datagram: &[u8]) {
        if let Ok(p) = packet::decode(datagram) {
            self.handle_packet(now, &p);
        }
    }
    fn timeout(&self) -> Option<Instant> {
        self.poll_timeout()
    }
    fn on_timeout(&mut self, now: Instant) {
        self.handle_timeout(now);
    }
    fn conn(&mut self) -> Option<&mut Connection> {
        Some(self)
    }
}

/// A socket whose one peer is address `peer`; remembers the connections it accepted.
#[derive(Debug)]
pub struct SocketEnd {
    /// The socket.
    pub socket: UtpSocket<u8>,
    /// The address of the other side.
    pub peer: u8,
    /// Connections accepted from SYNs.
    pub accepted: Vec<ConnHandle>,
    /// The connection this side uses: the one it opened, or the first it accepted.
    pub main: Option<ConnHandle>,
}

impl Endpoint for SocketEnd {
    fn transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let (to, n) = self.socket.poll_transmit(now, buf)?;
        assert_eq!(to, self.peer);
        Some(n)
    }
    fn receive(&mut self, now: Instant, datagram: &[u8]) {
        if let Incoming::Accepted { handle, .. } =
            self.socket.handle_datagram(now, self.peer, datagram)
        {
            self.accepted.push(handle);
            self.main.get_or_insert(handle);
        }
    }
    fn timeout(&self) -> Option<Instant> {
        self.socket.poll_timeout()
    }
    fn on_timeout(&mut self, now: Instant) {
        self.socket.handle_timeout(now);
    }
    fn conn(&mut self) -> Option<&mut Connection> {
        self.socket.conn_mut(self.main?)
    }
}

/// The link's behaviour, per direction.
#[derive(Clone, Copy, Debug)]
pub struct LinkModel {
    /// One-way propagation delay.
    pub delay_ms: u64,
    /// Extra random delay, 0 to this (reorders packets).
    pub jitter_ms: u64,
    /// Loss probability, per million.
    pub loss_ppm: u32,
    /// Duplication probability, per million.
    pub dup_ppm: u32,
    /// Bottleneck rate in bytes per millisecond (0: unlimited).
    pub rate_bytes_per_ms: u64,
    /// Bottleneck queue length in milliseconds of the rate (tail drop beyond).
    pub queue_ms: u64,
}

impl Default for LinkModel {
    fn default() -> Self {
        Self {
            delay_ms: 10,
            jitter_ms: 0,
            loss_ppm: 0,
            dup_ppm: 0,
            rate_bytes_per_ms: 0,
            queue_ms: 0,
        }
    }
}

/// A datagram on its way.
#[derive(Debug)]
struct InFlight {
    at: Instant,
    order: u64,
    to: usize,
    bytes: Vec<u8>,
}

/// Two endpoints joined by a link, on a simulated clock.
#[derive(Debug)]
pub struct Link<E> {
    /// The two sides.
    pub ends: [E; 2],
    /// Their clock offsets (added to the simulated time each sees).
    pub offsets: [Duration; 2],
    /// The model of each direction (index: the sender).
    pub model: [LinkModel; 2],
    /// The simulated time.
    pub now: Instant,
    rng: Rng,
    queue: Vec<InFlight>,
    order: u64,
    /// When the bottleneck of each direction is free again.
    busy_until: [Instant; 2],
    /// Datagrams sent by each side.
    pub sent: [u64; 2],
    /// The largest bottleneck queueing delay seen per direction since the last reset.
    pub max_queue_ms: [u64; 2],
    /// A handler that may drop datagrams (returns false), for scripted losses.
    pub filter: Option<fn(usize, &[u8]) -> bool>,
}

impl<E: Endpoint> Link<E> {
    /// A link between `a` and `b` with the same model both ways.
    pub fn new(a: E, b: E, model: LinkModel, seed: u64) -> Self {
        Self {
            ends: [a, b],
            offsets: [Duration::ZERO; 2],
            model: [model; 2],
            now: Instant::from_millis(1),
            rng: Rng::new(seed),
            queue: Vec::new(),
            order: 0,
            busy_until: [Instant::ZERO; 2],
            sent: [0; 2],
            max_queue_ms: [0; 2],
            filter: None,
        }
    }

    /// The time side `i` sees.
    pub fn local(&self, i: usize) -> Instant {
        self.now + self.offsets[i]
    }

    fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.rng.below(1_000_000) < u64::from(ppm)
    }

    /// Sends everything both sides have to send.
    pub fn flush(&mut self) {
        let mut buf = [0u8; 2048];
        for from in 0..2 {
            let local = self.local(from);
            while let Some(n) = self.ends[from].transmit(local, &mut buf) {
                self.sent[from] += 1;
                let bytes = buf[..n].to_vec();
                if let Some(f) = self.filter {
                    if !f(from, &bytes) {
                        continue;
                    }
                }
                let m = self.model[from];
                if self.chance(m.loss_ppm) {
                    continue;
                }
                let copies = if self.chance(m.dup_ppm) { 2 } else { 1 };
                let mut at = self.now;
                if m.rate_bytes_per_ms > 0 {
                    let start = self.busy_until[from].max(self.now);
                    let wait = start.since(self.now).as_millis();
                    if wait > m.queue_ms {
                        continue; // tail drop
                    }
                    self.max_queue_ms[from] = self.max_queue_ms[from].max(wait);
                    let tx = (n as u64).div_ceil(m.rate_bytes_per_ms);
                    self.busy_until[from] = start + Duration::from_millis(tx);
                    at = self.busy_until[from];
                }
                for _ in 0..copies {
                    let jitter = if m.jitter_ms > 0 {
                        self.rng.below(m.jitter_ms + 1)
                    } else {
                        0
                    };
                    self.order += 1;
                    self.queue.push(InFlight {
                        at: at + Duration::from_millis(m.delay_ms + jitter),
                        order: self.order,
                        to: 1 - from,
                        bytes: bytes.clone(),
                    });
                }
            }
        }
    }

    /// Advances to the next event (a delivery or a timer) and handles it; false when
    /// nothing is left to happen.
    pub fn step(&mut self) -> bool {
        self.flush();
        let next_delivery = self.queue.iter().map(|d| (d.at, d.order)).min();
        let mut next = next_delivery.map(|(t, _)| t);
        for i in 0..2 {
            if let Some(t) = self.ends[i].timeout() {
                let t =
                    Instant::from_millis(t.as_millis().saturating_sub(self.offsets[i].as_millis()));
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        }
        let Some(next) = next else {
            return false;
        };
        self.now = self.now.max(next);
        // Deliver everything due, in arrival order.
        self.queue
            .sort_by_key(|d| std::cmp::Reverse((d.at, d.order)));
        while self.queue.last().is_some_and(|d| d.at <= self.now) {
            let Some(d) = self.queue.pop() else { break };
            let local = self.local(d.to);
            self.ends[d.to].receive(local, &d.bytes);
        }
        for i in 0..2 {
            let local = self.local(i);
            if self.ends[i].timeout().is_some_and(|t| t <= local) {
                self.ends[i].on_timeout(local);
            }
        }
        self.flush();
        true
    }

    /// Steps until `done` holds or `deadline` (simulated) passes; returns whether
    /// `done` held.
    pub fn run_until(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        // A step cap as well as the simulated deadline: a timer that failed to move
        // forward would otherwise spin without the clock advancing.
        for _ in 0..20_000_000u64 {
            if done(self) {
                return true;
            }
            if self.now > deadline || !self.step() {
                return done(self);
            }
        }
        false
    }
}
