//! The peer sockets: accepting (at most [`super::ACCEPTS_PER_TURN`] a turn), reading
//! into the session (at most [`super::READS_PER_TURN`] reads per connection a turn),
//! flushing what the session queued, dialing, registering a socket with the poll,
//! losing a connection, and expiring encryption handshakes that took too long. The
//! upload and download rate limits ([`Bucket`]) are applied here, on the bytes each
//! read and flush may move.

use super::{since, token, Client, Sock, ACCEPTS_PER_TURN, READS_PER_TURN};
use crate::encryption::{Close, Link, OurTorrents, Up};
use crate::utp::UtpHost;
use btcore_core::mse::Method;
use btcore_core::session::{ConnId, Transmit, Transport, RECV_BATCH_MAX, RECV_BATCH_MAX_WAIT_MS};
use btcore_core::utp::{ConnHandle, State};
use mio::net::TcpStream;
use mio::Interest;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

/// The BitTorrent handshake's length (BEP 3).
const HANDSHAKE_LEN: usize = 68;

/// A peer connection's byte stream: a TCP socket, or a uTP connection of the
/// client's [`UtpHost`].
#[derive(Debug)]
pub(super) enum Stream {
    Tcp(TcpStream),
    Utp(ConnHandle),
}

impl Stream {
    pub(super) fn transport(&self) -> Transport {
        match self {
            Self::Tcp(_) => Transport::Tcp,
            Self::Utp(_) => Transport::Utp,
        }
    }

    fn read(&mut self, utp: Option<&mut UtpHost>, buf: &mut [u8]) -> io::Result<usize> {
        match (self, utp) {
            (Self::Tcp(s), _) => s.read(buf),
            (Self::Utp(h), Some(u)) => u.read(*h, buf),
            (Self::Utp(_), None) => Ok(0),
        }
    }
}

/// Most parts one flush gathers and writes with one call.
pub(super) const MAX_SEGS: usize = 32;

/// A block payload read from disk that the loop holds and sends itself: bytes
/// `start..end` of a read's buffer (shared by the blocks of one read).
#[derive(Debug)]
pub(super) struct Held {
    pub(super) buf: Arc<Vec<u8>>,
    pub(super) start: usize,
    pub(super) end: usize,
}

impl Held {
    fn len(&self) -> usize {
        self.end - self.start
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

/// One part of a flush: bytes in the loop's buffer, or a held payload.
#[derive(Debug)]
pub(super) enum Seg {
    Tx(usize, usize),
    Held(Held),
}

impl Seg {
    fn len(&self) -> usize {
        match self {
            Self::Tx(a, b) => b - a,
            Self::Held(h) => h.len(),
        }
    }

    fn bytes<'a>(&'a self, tx: &'a [u8]) -> &'a [u8] {
        match self {
            Self::Tx(a, b) => &tx[*a..*b],
            Self::Held(h) => h.bytes(),
        }
    }
}

/// What waits to be written after a connection's queued bytes ([`Sock::out`]), in
/// order.
#[derive(Debug)]
pub(super) enum Pending {
    /// Bytes (copied), from the index on.
    Bytes(Vec<u8>, usize),
    /// A held payload, from its `start` on.
    Held(Held),
}

impl Pending {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Bytes(b, at) => &b[*at..],
            Self::Held(h) => h.bytes(),
        }
    }

    /// Marks `n` more bytes written; true when all are.
    fn advance(&mut self, n: usize) -> bool {
        match self {
            Self::Bytes(b, at) => {
                *at += n;
                *at == b.len()
            }
            Self::Held(h) => {
                h.start += n;
                h.start == h.end
            }
        }
    }
}

impl Sock {
    /// Bytes waiting to be written.
    pub(super) fn queued_len(&self) -> usize {
        self.out.len() - self.out_pos + self.later.iter().map(|p| p.bytes().len()).sum::<usize>()
    }

    /// Queues bytes after everything waiting.
    fn queue_bytes(&mut self, b: &[u8]) {
        match self.later.back_mut() {
            None => self.out.extend_from_slice(b),
            Some(Pending::Bytes(v, _)) => v.extend_from_slice(b),
            Some(Pending::Held(_)) => self.later.push_back(Pending::Bytes(b.to_vec(), 0)),
        }
    }

    /// Writes what is queued, in order, at most `limit` bytes (one call; see
    /// [`write_parts`]).
    pub(super) fn write_queued(
        &mut self,
        utp: Option<&mut UtpHost>,
        limit: usize,
    ) -> io::Result<usize> {
        let parts =
            std::iter::once(&self.out[self.out_pos..]).chain(self.later.iter().map(Pending::bytes));
        write_parts(&mut self.stream, utp, parts, limit)
    }

    /// Marks `n` bytes of the queue written.
    fn advance(&mut self, mut n: usize) {
        let first = (self.out.len() - self.out_pos).min(n);
        self.out_pos += first;
        n -= first;
        while n > 0 {
            let Some(p) = self.later.front_mut() else {
                return;
            };
            let left = p.bytes().len();
            let k = left.min(n);
            n -= k;
            if p.advance(k) {
                self.later.pop_front();
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            // Bytes queued behind a payload move to the front once it is written.
            if let Some(Pending::Bytes(..)) = self.later.front() {
                if let Some(Pending::Bytes(v, at)) = self.later.pop_front() {
                    self.out = v;
                    self.out_pos = at;
                }
            }
        }
    }
}

/// Writes `parts` in order, at most `limit` bytes: one vectored write over TCP, one
/// write per part over uTP (its stream copies into its own buffer) until one is short.
fn write_parts<'a>(
    stream: &mut Stream,
    utp: Option<&mut UtpHost>,
    parts: impl Iterator<Item = &'a [u8]>,
    limit: usize,
) -> io::Result<usize> {
    let mut slices = [io::IoSlice::new(&[]); MAX_SEGS + 1];
    let mut k = 0;
    let mut left = limit;
    for p in parts {
        if left == 0 || k == slices.len() {
            break;
        }
        if p.is_empty() {
            continue;
        }
        let p = &p[..p.len().min(left)];
        left -= p.len();
        slices[k] = io::IoSlice::new(p);
        k += 1;
    }
    match (stream, utp) {
        (Stream::Tcp(s), _) => s.write_vectored(&slices[..k]),
        (Stream::Utp(h), Some(u)) => {
            let mut n = 0;
            for p in &slices[..k] {
                match u.write(*h, p) {
                    Ok(w) => {
                        n += w;
                        if w < p.len() {
                            break;
                        }
                    }
                    Err(e) if n == 0 => return Err(e),
                    Err(_) => break,
                }
            }
            Ok(n)
        }
        (Stream::Utp(_), None) => Err(io::ErrorKind::BrokenPipe.into()),
    }
}

impl Client {
    /// Accepts pending connections, [`ACCEPTS_PER_TURN`] at most on each listener.
    pub(super) fn accept_all(&mut self) {
        let mut more = self.accept_from(false);
        if self.listener6.is_some() {
            more |= self.accept_from(true);
        }
        // More may wait in the backlog; readiness will not be reported again.
        self.accept_more = more;
    }

    /// Accepts on one listener; true when its budget ran out first.
    fn accept_from(&mut self, v6: bool) -> bool {
        for _ in 0..ACCEPTS_PER_TURN {
            let l = match (v6, self.listener6.as_ref()) {
                (false, _) => &self.listener,
                (true, Some(l)) => l,
                (true, None) => return false,
            };
            match l.accept() {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    // A dual-stack listener (`[::]` given) names IPv4 peers as mapped
                    // IPv6 addresses: the session sees them as IPv4.
                    let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
                    let now = self.now();
                    let conn = self.session.handle_incoming(now, addr);
                    let link = Link::incoming(self.opts.encryption, self.keys.next());
                    self.add_sock(conn, Stream::Tcp(stream), link, None, Vec::new());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    pub(super) fn on_writable(&mut self, conn: ConnId) {
        let now = self.now();
        let Some(s) = self.socks.get_mut(&conn) else {
            return;
        };
        if s.connecting {
            let failed = match &s.stream {
                Stream::Tcp(t) => {
                    matches!(t.take_error(), Ok(Some(_)) | Err(_)) || t.peer_addr().is_err()
                }
                Stream::Utp(h) => match self.utp.as_ref().and_then(|u| u.state(*h)) {
                    Some(State::SynSent) => return,
                    Some(State::Connected) => false,
                    _ => true,
                },
            };
            if failed {
                log::debug!("connect {conn:?} ({:?}) failed", s.stream.transport());
                self.drop_sock(conn);
                self.session.handle_connect_failed(now, conn);
                return;
            }
            s.connecting = false;
            match &s.stream {
                Stream::Tcp(t) => {
                    let _ = t.set_nodelay(true);
                }
                Stream::Utp(_) => self.session.handle_transport_connected(conn),
            }
            // With an encryption handshake, the session learns of the connection
            // once it is done (`Up::Established`).
            if s.link.handle_connected() {
                self.session.handle_connected(now, conn);
            }
        }
        self.flush(conn);
    }

    /// Reads `conn` until its socket is empty, the session or the rate limit says
    /// stop, or it used its [`READS_PER_TURN`] (then it is read again next turn).
    pub(super) fn read_conn(&mut self, conn: ConnId) {
        let mut reads = 0;
        loop {
            let Some(s) = self.socks.get_mut(&conn) else {
                return;
            };
            if reads == READS_PER_TURN {
                if !self.read_more.contains(&conn) {
                    self.read_more.push(conn);
                }
                return;
            }
            reads += 1;
            if s.connecting {
                return;
            }
            // The disk is behind: what the peer sends waits in the kernel (and then
            // in the peer) instead of in our memory. A completion wakes the loop.
            if self.session.disk_backlogged() {
                if !self.disk_blocked.contains(&conn) {
                    self.disk_blocked.push(conn);
                }
                return;
            }
            // The peer does not read what we queued for it: what it sends (more
            // requests) waits in the kernel, and TCP holds it back, until it does.
            if !self.session.wants_recv(conn) {
                if !self.send_blocked.contains(&conn) {
                    self.send_blocked.push(conn);
                }
                return;
            }
            let torrent = self.session.conn_torrent(conn);
            let own = torrent.and_then(|t| self.torrent_buckets.get_mut(&t));
            // A connection in its handshakes (the encryption handshake, or an
            // accepted one whose BitTorrent handshake has not named a torrent yet)
            // reads without waiting for tokens, charged all the same: under a busy
            // download limit the payload of the established peers took every token,
            // and a newcomer's few hundred handshake bytes waited past its deadline.
            // Both handshakes are bounded ([`HANDSHAKE_READ`] covers either).
            // (Not one the session has closed: it no longer knows it.)
            let handshaking = (s.link.negotiating() || torrent.is_none())
                && self.session.conn_buffers(conn).is_some();
            let allowed = if handshaking {
                HANDSHAKE_READ.min(self.buf.len())
            } else {
                self.down
                    .available()
                    .min(own.map_or(usize::MAX, |b| b.down.available()))
                    .min(self.buf.len())
            };
            if allowed == 0 {
                if !self.throttled_read.contains(&conn) {
                    self.throttled_read.push(conn);
                }
                return;
            }
            match s.stream.read(self.utp.as_mut(), &mut self.buf[..allowed]) {
                Ok(0) => {
                    self.conn_lost(conn);
                    return;
                }
                Ok(n) => {
                    self.down.take(n);
                    let own = self.session.conn_torrent(conn);
                    if let Some(b) = own.and_then(|t| self.torrent_buckets.get_mut(&t)) {
                        b.down.take(n);
                    }
                    // `self.now()` would borrow all of `self` while `s` is held.
                    let now = since(self.epoch);
                    let had_out = s.out.len();
                    let session = &mut self.session;
                    let out = &mut s.out;
                    let mut established = false;
                    let mut alone = false;
                    let result = s.link.handle_recv(
                        &mut self.buf[..n],
                        &OurTorrents(&self.torrents, |t| (t.info_hash, t.info_hash_v2)),
                        &mut |up| match up {
                            // Handshake replies leave before any session byte.
                            Up::Transmit(b) => out.extend_from_slice(b),
                            Up::Data(b) => session.handle_recv(now, conn, b),
                            Up::Established { outgoing, method } => {
                                log::debug!("{conn:?}: encrypted handshake done, {method:?}");
                                session.set_encrypted(conn, method == Method::Rc4);
                                established = true;
                                if outgoing {
                                    alone = true;
                                    session.handle_connected(now, conn);
                                }
                            }
                        },
                    );
                    s.handshake_alone |= alone && matches!(s.stream, Stream::Utp(_));
                    // Handshake replies, and the session's first bytes once established.
                    let replies = s.out.len() > had_out || established;
                    if let Err(e) = result {
                        log::debug!("{conn:?}: {e}");
                        self.conn_lost(conn);
                        return;
                    }
                    if replies {
                        self.flush(conn);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.set_batch(conn);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.conn_lost(conn);
                    return;
                }
            }
        }
    }

    /// Lets a TCP socket read to its end gather the batch the session asks for
    /// before it is reported readable again ([`Session::recv_batch`]): fewer wake-ups
    /// of the loop for the same bytes while a download streams.
    fn set_batch(&mut self, conn: ConnId) {
        let Some(s) = self.socks.get_mut(&conn) else {
            return;
        };
        let Stream::Tcp(t) = &s.stream else {
            return;
        };
        // `self.now()` would borrow all of `self` while `s` is held.
        let mut want = self.session.recv_batch(since(self.epoch), conn);
        if want == s.batch || (want == 0 && s.batch <= 1) {
            return;
        }
        if want > s.batch {
            want = fit_batch(want, crate::os::recv_buffer(t).unwrap_or(0));
            if want == s.batch || (want == 0 && s.batch <= 1) {
                return;
            }
        }
        if crate::os::set_recv_lowat(t, want).is_err() {
            return;
        }
        s.batch = want.max(1);
        if want > 1 {
            if self.batched.is_empty() {
                self.batch_sweep = std::time::Instant::now()
                    + std::time::Duration::from_millis(RECV_BATCH_MAX_WAIT_MS);
            }
            if !self.batched.contains(&conn) {
                self.batched.push(conn);
            }
        } else {
            self.batched.retain(|c| *c != conn);
        }
    }

    /// Writes what the session has for `conn` until the socket would block.
    pub(super) fn flush(&mut self, conn: ConnId) {
        let now = self.now();
        loop {
            let Some(s) = self.socks.get_mut(&conn) else {
                return;
            };
            if s.connecting {
                return;
            }
            if s.out_pos == s.out.len() && s.later.is_empty() {
                s.out.clear();
                s.out_pos = 0;
                // The session speaks once any encryption handshake is done.
                if s.link.negotiating() {
                    return;
                }
                // What the session has, gathered: its bytes into `self.tx` (encrypted
                // there when the link encrypts), the payloads this loop holds by
                // reference; then one write, and only what the socket does not take
                // now is kept for later.
                let mut segs = std::mem::take(&mut self.segs);
                let mut used = 0;
                while segs.len() < MAX_SEGS && used < self.tx.len() {
                    match self.session.poll_send(now, conn, &mut self.tx[used..]) {
                        Transmit::Idle => break,
                        Transmit::Bytes { len, .. } => {
                            s.link.encrypt(&mut self.tx[used..used + len]);
                            segs.push(Seg::Tx(used, used + len));
                            used += len;
                        }
                        Transmit::Held { token, len } => match s.held.pop_front() {
                            // Held only for plain links: nothing to encrypt.
                            Some((t, h)) if t == token && h.len() == len as usize => {
                                segs.push(Seg::Held(h));
                            }
                            _ => {
                                log::warn!("{conn:?}: a held payload is out of order");
                                segs.clear();
                                self.segs = segs;
                                self.conn_lost(conn);
                                return;
                            }
                        },
                    }
                }
                if segs.is_empty() {
                    self.segs = segs;
                    return;
                }
                let total: usize = segs.iter().map(|g| g.len()).sum();
                let own = self.session.conn_torrent(conn);
                let mut own = own.and_then(|t| self.torrent_buckets.get_mut(&t));
                let mut allowed = self
                    .up
                    .available()
                    .min(own.as_mut().map_or(usize::MAX, |b| b.up.available()))
                    .min(total);
                let alone = s.handshake_alone && allowed > HANDSHAKE_LEN;
                if alone {
                    allowed = HANDSHAKE_LEN;
                }
                // An error leaves everything queued: the queue's write below meets it
                // again and handles it.
                let written = if allowed == 0 {
                    0
                } else {
                    let tx = &self.tx;
                    let parts = segs.iter().map(|g| g.bytes(tx));
                    write_parts(&mut s.stream, self.utp.as_mut(), parts, allowed).unwrap_or(0)
                };
                self.up.take(written);
                if let Some(b) = own {
                    b.up.take(written);
                }
                // The rest, in order: bytes copied, held payloads kept by reference.
                let mut skip = written;
                for g in segs.drain(..) {
                    let len = g.len();
                    if skip >= len {
                        skip -= len;
                        continue;
                    }
                    match g {
                        Seg::Tx(a, b) => s.queue_bytes(&self.tx[a + skip..b]),
                        Seg::Held(mut h) => {
                            h.start += skip;
                            s.later.push_back(Pending::Held(h));
                        }
                    }
                    skip = 0;
                }
                self.segs = segs;
                if alone && written == HANDSHAKE_LEN {
                    s.handshake_alone = false;
                    // The handshake goes out now, in its own packet.
                    self.transmit_utp();
                }
                continue;
            }
            let own = self.session.conn_torrent(conn);
            let mut own = own.and_then(|t| self.torrent_buckets.get_mut(&t));
            let allowed = self
                .up
                .available()
                .min(own.as_mut().map_or(usize::MAX, |b| b.up.available()))
                .min(s.queued_len());
            if allowed == 0 {
                if !self.throttled_write.contains(&conn) {
                    self.throttled_write.push(conn);
                }
                return;
            }
            match s.write_queued(self.utp.as_mut(), allowed) {
                Ok(0) => return,
                Ok(n) => {
                    self.up.take(n);
                    if let Some(b) = own {
                        b.up.take(n);
                    }
                    s.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.conn_lost(conn);
                    return;
                }
            }
        }
    }

    pub(super) fn drop_sock(&mut self, conn: ConnId) {
        self.batched.retain(|c| *c != conn);
        match self.socks.remove(&conn).map(|s| s.stream) {
            Some(Stream::Tcp(mut t)) => {
                let _ = self.poll.registry().deregister(&mut t);
            }
            Some(Stream::Utp(h)) => {
                if let Some(u) = self.utp.as_mut() {
                    // A connection never established goes with a RESET; an open one
                    // sends what it holds, then its FIN.
                    let abort = !matches!(u.state(h), Some(State::Connected));
                    u.release(since(self.epoch), h, abort);
                }
            }
            None => {}
        }
    }

    /// Gives up on dialed connections whose encryption handshake (or TCP connect, while
    /// one is due) ran past the deadline their link names.
    pub(super) fn expire_handshakes(&mut self) {
        let now = self.now();
        let late: Vec<ConnId> = self
            .socks
            .iter_mut()
            .filter(|(_, s)| s.link.poll_timeout().is_some_and(|d| d <= now))
            .filter_map(|(c, s)| s.link.handle_timeout(now).map(|_| *c))
            .collect();
        for conn in late {
            log::debug!("{conn:?}: encryption handshake timed out");
            self.conn_lost(conn);
        }
    }

    /// Opens a connection to `addr` over `transport` for `conn`; false when that
    /// failed at once (for uTP: no uTP socket, or its table is full).
    pub(super) fn dial(
        &mut self,
        conn: ConnId,
        addr: SocketAddr,
        transport: Transport,
        mut link: Link,
    ) -> bool {
        let stream = match transport {
            Transport::Tcp => match TcpStream::connect(addr) {
                Ok(s) => Stream::Tcp(s),
                Err(_) => return false,
            },
            // A uTP socket of the other address family cannot reach it: failed at once
            // (TCP follows under `Both`), not after the SYN's timeouts.
            Transport::Utp if !self.utp_reaches(addr) => return false,
            Transport::Utp => {
                let now = self.now();
                match self.utp.as_mut().and_then(|u| u.connect(now, addr, conn)) {
                    Some(h) => Stream::Utp(h),
                    None => return false,
                }
            }
        };
        log::debug!("dialing {addr} over {transport:?} as {conn:?} ({link:?})");
        // The encryption handshake's opening, if any, goes out first.
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = link.poll_transmit(&mut buf);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        self.add_sock(conn, stream, link, Some(addr), out)
    }

    /// Whether a uTP socket (ours, or the DHT's it shares) reaches `addr`'s family.
    fn utp_reaches(&self, addr: SocketAddr) -> bool {
        let shared = self.dht.as_ref().map(|d| d.sockets()).unwrap_or_default();
        self.utp.as_ref().is_some_and(|u| u.reaches(addr, shared))
    }

    /// Registers `stream` for `conn` (dialed to `dialed`, or accepted) and keeps it,
    /// with `out` queued to send; false when the poll refused it.
    pub(super) fn add_sock(
        &mut self,
        conn: ConnId,
        mut stream: Stream,
        link: Link,
        dialed: Option<SocketAddr>,
        out: Vec<u8>,
    ) -> bool {
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Stream::Tcp(t) = &mut stream {
            if self
                .poll
                .registry()
                .register(t, token(conn), interest)
                .is_err()
            {
                return false;
            }
        }
        // Transmission 3.00 over uTP reads the handshake of a peer it dialed only from
        // a packet of its own (what follows in the same packet is lost): an accepted
        // uTP connection's handshake goes out alone.
        let handshake_alone = dialed.is_none() && matches!(stream, Stream::Utp(_));
        let sock = Sock {
            stream,
            connecting: dialed.is_some(),
            link,
            dialed,
            out,
            out_pos: 0,
            later: std::collections::VecDeque::new(),
            held: std::collections::VecDeque::new(),
            next_token: 0,
            handshake_alone,
            batch: 0,
        };
        self.socks.insert(conn, sock);
        true
    }

    /// A connection ended (closed, failed, refused or timed out): its link's verdict
    /// says what follows. A dialed connection that failed inside our encryption
    /// handshake under the `preferred` policy is dialed again in plain text under the
    /// same id (the session never learnt of the first attempt), unless the peer has
    /// another connection with us (`Session::has_twin`); one the session never
    /// learnt of is a failed dial to it; any other is a disconnection.
    pub(super) fn conn_lost(&mut self, conn: ConnId) {
        let now = self.now();
        let (verdict, dialed, transport) = match self.socks.get_mut(&conn) {
            Some(s) => (s.link.close(), s.dialed, s.stream.transport()),
            None => (Close::Disconnected, None, Transport::Tcp),
        };
        self.drop_sock(conn);
        match (verdict, dialed) {
            (Close::RedialPlain, Some(addr)) if self.session.has_twin(conn) => {
                log::debug!("{conn:?}: {addr} closed a duplicate of its own connection");
                self.session.handle_connect_failed(now, conn);
            }
            (Close::RedialPlain, Some(addr)) => {
                log::debug!("{conn:?}: no encryption handshake from {addr}, dialing in plain text");
                let link = Link::outgoing_plain(self.opts.encryption);
                if !self.dial(conn, addr, transport, link) {
                    self.session.handle_connect_failed(now, conn);
                }
            }
            (Close::RedialPlain | Close::ConnectFailed, _) => {
                self.session.handle_connect_failed(now, conn)
            }
            (Close::Disconnected, _) => self.session.handle_disconnected(now, conn),
        }
    }
}

/// The most a connection in its handshakes reads at a time past the rate limits: an
/// MSE initiator's whole handshake (96-byte key, two pads of at most 512 bytes, the
/// hashes, `VC`, lengths) with the BitTorrent handshake after it.
const HANDSHAKE_READ: usize = 2048;

/// The shortest burst a [`Bucket`] allows, whatever its rate: one 16 KiB block and
/// its message header, so that a slow limit still moves whole blocks.
const MIN_BURST: f64 = 16.0 * 1024.0 + 13.0;

/// A token bucket: `rate` bytes per second, with a burst of at most a fifth of a
/// second's worth ([`MIN_BURST`] at least). It starts empty: a limit holds over every
/// window a person can watch, the first second included (a bucket that started full
/// with a second of burst let twice the limit through in the first second, and a
/// download ran 18% over its limit).
#[derive(Debug)]
pub(super) struct Bucket {
    rate: u64,
    tokens: f64,
    last: std::time::Instant,
}

impl Bucket {
    pub(super) fn new(rate: u64) -> Self {
        Self {
            rate,
            tokens: 0.0,
            last: std::time::Instant::now(),
        }
    }
    /// The most tokens held: a fifth of a second's worth, one block at least.
    fn burst(&self) -> f64 {
        (self.rate as f64 / 5.0).max(MIN_BURST)
    }
    /// A new rate (0: none), from now on; the tokens held stay within the new burst.
    pub(super) fn set_rate(&mut self, rate: u64) {
        if rate == self.rate {
            return;
        }
        self.refill();
        self.rate = rate;
        self.tokens = self.tokens.min(self.burst());
    }
    fn refill(&mut self) {
        let now = std::time::Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        if self.rate != 0 {
            self.tokens = (self.tokens + dt * self.rate as f64).min(self.burst());
        }
    }
    /// Bytes that may move now (`usize::MAX` when unlimited).
    pub(super) fn available(&mut self) -> usize {
        self.refill();
        if self.rate == 0 {
            return usize::MAX;
        }
        self.tokens.max(0.0) as usize
    }
    /// Spends `n` bytes' tokens; what a read past them (a handshake's) leaves owing
    /// is at most one burst, so newcomers churned in cannot starve the peers that
    /// pay.
    pub(super) fn take(&mut self, n: usize) {
        if self.rate != 0 {
            self.tokens = (self.tokens - n as f64).max(-self.burst());
        }
    }
}

/// The batch the session asks for (`want`), halved until it is at most a quarter of a
/// socket buffer of `rcvbuf` bytes (as `SO_RCVBUF` reports it: the window offered is
/// about half of it); 0 below the smallest batch. A mark the buffer cannot hold is
/// never reached: kernels before 4.18 neither grow the buffer for it nor report a
/// socket whose window closed, and the 20 ms sweep alone would pace the download.
fn fit_batch(mut want: usize, rcvbuf: usize) -> usize {
    let room = rcvbuf / 4;
    while want > room && want >= RECV_BATCH_MAX / 4 {
        want /= 2;
    }
    if want < RECV_BATCH_MAX / 4 {
        0
    } else {
        want
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_batch_fits_a_quarter_of_the_socket_buffer() {
        use super::fit_batch;
        const K: usize = 1024;
        assert_eq!(fit_batch(256 * K, 6 * 1024 * K), 256 * K);
        assert_eq!(fit_batch(256 * K, 1024 * K), 256 * K);
        assert_eq!(fit_batch(256 * K, 1023 * K), 128 * K);
        assert_eq!(fit_batch(256 * K, 300 * K), 64 * K);
        assert_eq!(fit_batch(256 * K, 255 * K), 0);
        assert_eq!(fit_batch(128 * K, 87_380 * 2), 0);
        assert_eq!(fit_batch(64 * K, 0), 0);
        assert_eq!(fit_batch(0, 6 * 1024 * K), 0);
    }

    use super::*;

    /// What a flush leaves queued (bytes, payloads held by reference, bytes queued
    /// behind them) goes out in order through writes the socket cuts short.
    #[test]
    fn queued_bytes_and_held_payloads_go_out_in_order() {
        use crate::encryption::{Encryption, Link};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let a = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("dial");
        let (mut b, _) = l.accept().expect("accept");
        a.set_nonblocking(true).expect("nonblocking");
        let mut s = Sock {
            stream: Stream::Tcp(TcpStream::from_std(a)),
            connecting: false,
            link: Link::outgoing_plain(Encryption::Disabled),
            dialed: None,
            out: b"A".to_vec(),
            out_pos: 0,
            later: std::collections::VecDeque::new(),
            held: std::collections::VecDeque::new(),
            next_token: 0,
            handshake_alone: false,
            batch: 0,
        };
        let buf = Arc::new(b"xxBBBBDDyy".to_vec());
        let held = |start, end| Held {
            buf: Arc::clone(&buf),
            start,
            end,
        };
        s.later.push_back(Pending::Held(held(2, 6)));
        s.queue_bytes(b"CC");
        s.later.push_back(Pending::Held(held(6, 8)));
        s.queue_bytes(b"E");
        s.queue_bytes(b"F");
        s.later.push_back(Pending::Held(held(8, 10)));
        let want = b"ABBBBCCDDEFyy";
        assert_eq!(s.queued_len(), want.len());
        let mut writes = 0;
        while s.queued_len() > 0 {
            let n = s.write_queued(None, 3).expect("write");
            assert!(n > 0 && n <= 3);
            s.advance(n);
            writes += 1;
        }
        assert_eq!(writes, want.len().div_ceil(3));
        assert_eq!(s.write_queued(None, usize::MAX).expect("nothing left"), 0);
        let mut got = vec![0u8; want.len()];
        b.read_exact(&mut got).expect("read");
        assert_eq!(&got, want);
    }

    /// The burst after a quiet spell is a fifth of a second's worth; a new bucket
    /// holds nothing.
    #[test]
    fn bucket_burst_is_bounded() {
        let mut b = Bucket::new(1_000_000);
        assert!(b.available() < 20_000, "{}", b.available());
        b.last -= std::time::Duration::from_secs(5);
        assert_eq!(b.available(), 200_000);
        b.take(200_000);
        b.set_rate(100_000);
        b.last -= std::time::Duration::from_secs(5);
        assert_eq!(b.available(), 20_000);
        b.set_rate(0);
        assert_eq!(b.available(), usize::MAX);
    }
}
