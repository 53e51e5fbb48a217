//! Datagrams in batches: up to [`BATCH`] received with one `recvmmsg(2)` and their
//! replies sent with one `sendmmsg(2)` on Linux, one `recv_from` / `send_to` each
//! elsewhere. For the tracker's UDP socket, where two system calls per announce were
//! most of the cost: a batch amortises them and lets the loop answer a burst without
//! being rescheduled between datagrams. uTP reads its own socket the same way and sends
//! through a [`SendBatch`] (every connection's packets to their peers).
//!
//! Buffers are allocated once ([`BATCH`] × [`DATAGRAM`] in, [`BATCH`] reply vectors
//! out) and reused; a datagram longer than [`DATAGRAM`] is dropped (on Linux; cut short
//! elsewhere), which no BEP 15 request is (a scrape of 74 info-hashes is 1,496 bytes)
//! and no uTP packet (1,404 bytes at most from libtorrent, Transmission and us).

use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;

/// Most datagrams handled per system call.
pub const BATCH: usize = 32;
/// Receive buffer per datagram.
pub const DATAGRAM: usize = 2048;

/// Reusable buffers for one batch in and its replies out.
pub struct UdpBatch {
    bufs: Vec<[u8; DATAGRAM]>,
    lens: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
    replies: Vec<Vec<u8>>,
    answer: [bool; BATCH],
    n: usize,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    sys: sys::Names,
}

impl std::fmt::Debug for UdpBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpBatch").field("n", &self.n).finish()
    }
}

impl Default for UdpBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl UdpBatch {
    /// Empty buffers.
    pub fn new() -> Self {
        Self {
            bufs: vec![[0u8; DATAGRAM]; BATCH],
            lens: [0; BATCH],
            from: [None; BATCH],
            // Grown on first use: uTP only receives.
            replies: (0..BATCH).map(|_| Vec::new()).collect(),
            answer: [false; BATCH],
            n: 0,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            sys: sys::Names::new(),
        }
    }

    /// Receives up to [`BATCH`] datagrams; returns how many (`WouldBlock` when none).
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        self.n = 0;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let n = sys::recv(sock, &mut self.bufs, &mut self.lens, &mut self.sys)?;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let n = {
            let mut n = 0;
            while n < BATCH {
                match sock.recv_from(&mut self.bufs[n]) {
                    Ok((len, from)) => {
                        self.lens[n] = len;
                        self.from[n] = Some(from);
                        n += 1;
                    }
                    Err(e) if n > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            n
        };
        #[cfg(any(target_os = "linux", target_os = "android"))]
        for i in 0..n {
            self.from[i] = self.sys.addr(i);
        }
        self.n = n;
        Ok(n)
    }

    /// Reads `sock` in batches until it is empty or about `budget` datagrams were
    /// read, handing each to `f`; true when the budget ran out with datagrams possibly
    /// left. ICMP errors (a peer's port closed) surface on Linux as a failed read, one
    /// per error, ahead of the datagrams still queued: reading goes on past them; a
    /// socket that fails eight times is left for this turn.
    pub fn read_all(
        &mut self,
        sock: &UdpSocket,
        budget: usize,
        mut f: impl FnMut(&[u8], SocketAddr),
    ) -> bool {
        let mut left = budget;
        let mut errors = 0;
        while left > 0 {
            match self.recv(sock) {
                Ok(n) => {
                    for (d, from) in self.datagrams() {
                        f(d, from);
                    }
                    left = left.saturating_sub(n.max(1));
                    // Fewer than asked: the queue ran dry (`recvmmsg` stops there).
                    if n < BATCH {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => {
                    errors += 1;
                    if errors == 8 {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// The datagrams of the last [`UdpBatch::recv`] with their sources (those from
    /// unreadable addresses left out).
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> + '_ {
        (0..self.n)
            .filter_map(|i| Some((&self.bufs[i][..self.lens[i].min(DATAGRAM)], self.from[i]?)))
    }

    /// Hands each received datagram and an empty reply buffer to `f`, which returns
    /// whether the reply is to be sent. Datagrams from unreadable addresses are skipped.
    #[cfg_attr(not(feature = "tracker-server"), allow(dead_code))]
    pub fn answer(&mut self, mut f: impl FnMut(&[u8], SocketAddr, &mut Vec<u8>) -> bool) {
        for i in 0..self.n {
            self.replies[i].clear();
            self.answer[i] = match self.from[i] {
                Some(from) => f(
                    &self.bufs[i][..self.lens[i].min(DATAGRAM)],
                    from,
                    &mut self.replies[i],
                ),
                None => false,
            };
        }
    }

    /// Sends the replies [`UdpBatch::answer`] kept. A reply the socket cannot take now
    /// is dropped, as a lost datagram would be (the client retries).
    #[cfg_attr(not(feature = "tracker-server"), allow(dead_code))]
    pub fn send(&mut self, sock: &UdpSocket) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        sys::send(sock, &self.replies, &self.answer[..self.n], &mut self.sys);
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        for i in (0..self.n).filter(|&i| self.answer[i]) {
            if let Some(to) = self.from[i] {
                let _ = sock.send_to(&self.replies[i], to);
            }
        }
    }
}

/// Datagrams to many destinations, queued into buffers allocated once and sent with
/// one `sendmmsg(2)` per [`BATCH`] on Linux (one `send_to` each elsewhere). What the
/// socket cannot take now stays queued, in order, for the next [`SendBatch::flush`].
pub struct SendBatch {
    /// [`BATCH`] slots of `size` bytes.
    bufs: Vec<u8>,
    size: usize,
    lens: [usize; BATCH],
    to: [Option<SocketAddr>; BATCH],
    /// Slots `sent..n` wait to be sent.
    sent: usize,
    n: usize,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("queued", &(self.n - self.sent))
            .finish()
    }
}

impl SendBatch {
    /// Room for [`BATCH`] datagrams of at most `size` bytes.
    pub fn new(size: usize) -> Self {
        Self {
            bufs: vec![0; size * BATCH],
            size,
            lens: [0; BATCH],
            to: [None; BATCH],
            sent: 0,
            n: 0,
        }
    }

    /// Datagrams queued and not sent yet.
    pub fn queued(&self) -> usize {
        self.n - self.sent
    }

    /// Whether every slot is taken.
    pub fn is_full(&self) -> bool {
        self.n == BATCH
    }

    /// The next free slot to encode a datagram into (`None`: full); then
    /// [`SendBatch::commit`] it.
    pub fn slot(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let at = self.n * self.size;
        Some(&mut self.bufs[at..at + self.size])
    }

    /// Queues the `len` bytes written into the last [`SendBatch::slot`] for `to`.
    pub fn commit(&mut self, to: SocketAddr, len: usize) {
        if self.n < BATCH {
            self.lens[self.n] = len.min(self.size);
            self.to[self.n] = Some(to);
            self.n += 1;
        }
    }

    /// Queues a copy of `data` for `to` (dropped when full or too long).
    pub fn push(&mut self, to: SocketAddr, data: &[u8]) {
        if data.len() > self.size {
            return;
        }
        if let Some(slot) = self.slot() {
            slot[..data.len()].copy_from_slice(data);
            self.commit(to, data.len());
        }
    }

    /// Drops what is queued.
    pub fn clear(&mut self) {
        self.sent = 0;
        self.n = 0;
    }

    /// Sends what is queued: true when all of it went (the slots are free again), false
    /// when the socket would block (the rest stays queued). A datagram the kernel
    /// refuses for its destination (unreachable, too big) is dropped, as a lost one.
    pub fn flush(&mut self, sock: &UdpSocket) -> bool {
        while self.sent < self.n {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            let r = sys::send_many(
                sock,
                &self.bufs,
                self.size,
                &self.lens[self.sent..self.n],
                &self.to[self.sent..self.n],
                self.sent,
            );
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            let r = {
                let i = self.sent;
                let at = i * self.size;
                match self.to[i] {
                    Some(to) => sock
                        .send_to(&self.bufs[at..at + self.lens[i]], to)
                        .map(|_| 1),
                    None => Ok(1),
                }
            };
            match r {
                Ok(k) => self.sent += k.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.sent += 1,
            }
        }
        self.sent = 0;
        self.n = 0;
        true
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod sys {
    //! `recvmmsg` / `sendmmsg`. The headers point into buffers owned by the caller and
    //! are rebuilt before every call, so no pointer outlives the borrow it came from.

    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;
    use std::ptr;

    use mio::net::UdpSocket;

    use super::{BATCH, DATAGRAM};

    /// Source addresses as the kernel writes them (and as replies reuse them).
    pub struct Names {
        addrs: Box<[libc::sockaddr_storage; BATCH]>,
        lens: [libc::socklen_t; BATCH],
    }

    impl Names {
        pub fn new() -> Self {
            // SAFETY: sockaddr_storage is plain bytes; all zeros is a valid value.
            let addrs = Box::new(unsafe { zeroed::<[libc::sockaddr_storage; BATCH]>() });
            Self {
                addrs,
                lens: [0; BATCH],
            }
        }

        /// The source address of datagram `i` of the last receive.
        pub fn addr(&self, i: usize) -> Option<SocketAddr> {
            let s = &self.addrs[i];
            let len = self.lens[i] as usize;
            match i32::from(s.ss_family) {
                libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                    // SAFETY: the kernel wrote a sockaddr_in (family and length checked);
                    // sockaddr_storage is large and aligned enough for it.
                    let a = unsafe { ptr::read(ptr::from_ref(s).cast::<libc::sockaddr_in>()) };
                    Some(SocketAddr::V4(SocketAddrV4::new(
                        Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                        u16::from_be(a.sin_port),
                    )))
                }
                libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                    // SAFETY: as above, for sockaddr_in6.
                    let a = unsafe { ptr::read(ptr::from_ref(s).cast::<libc::sockaddr_in6>()) };
                    Some(SocketAddr::V6(SocketAddrV6::new(
                        Ipv6Addr::from(a.sin6_addr.s6_addr),
                        u16::from_be(a.sin6_port),
                        u32::from_be(a.sin6_flowinfo),
                        a.sin6_scope_id,
                    )))
                }
                _ => None,
            }
        }
    }

    pub fn recv(
        sock: &UdpSocket,
        bufs: &mut [[u8; DATAGRAM]],
        lens: &mut [usize; BATCH],
        names: &mut Names,
    ) -> io::Result<usize> {
        // SAFETY: iovec and mmsghdr are plain C structs; zeroed is valid for both.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let n = bufs.len().min(BATCH);
        for i in 0..n {
            iovs[i].iov_base = bufs[i].as_mut_ptr().cast();
            iovs[i].iov_len = DATAGRAM;
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = ptr::from_mut(&mut names.addrs[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = ptr::from_mut(&mut iovs[i]);
            h.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live buffer of the stated length (the
        // datagram buffer, its iovec, its sockaddr_storage), all borrowed mutably
        // for the duration of the call; the count is at most the array length.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT as _,
                ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = r as usize;
        for i in 0..r {
            lens[i] = hdrs[i].msg_len as usize;
            names.lens[i] = hdrs[i].msg_hdr.msg_namelen;
            // Longer than the buffer: cut short, so skipped (no source address) rather
            // than handed on (uTP has no checksum to notice).
            if hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                names.lens[i] = 0;
            }
        }
        Ok(r)
    }

    /// `addr` as the kernel takes it.
    fn sockaddr(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_in is plain bytes; all zeros is a valid value.
                let mut s: libc::sockaddr_in = unsafe { zeroed() };
                s.sin_family = libc::AF_INET as libc::sa_family_t;
                s.sin_port = a.port().to_be();
                s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
                // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
                unsafe { ptr::write(ptr::from_mut(out).cast::<libc::sockaddr_in>(), s) };
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                // SAFETY: as above.
                let mut s: libc::sockaddr_in6 = unsafe { zeroed() };
                s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                s.sin6_port = a.port().to_be();
                s.sin6_flowinfo = a.flowinfo().to_be();
                s.sin6_addr.s6_addr = a.ip().octets();
                s.sin6_scope_id = a.scope_id();
                // SAFETY: as above, for a sockaddr_in6.
                unsafe { ptr::write(ptr::from_mut(out).cast::<libc::sockaddr_in6>(), s) };
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }

    /// One `sendmmsg` of datagrams `first..first + lens.len()` of `bufs` (slots of
    /// `size` bytes) to `to`: how many the kernel took.
    pub fn send_many(
        sock: &UdpSocket,
        bufs: &[u8],
        size: usize,
        lens: &[usize],
        to: &[Option<SocketAddr>],
        first: usize,
    ) -> io::Result<usize> {
        // SAFETY: plain C structs; zeroed is valid for each.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let n = lens.len().min(to.len()).min(BATCH);
        for i in 0..n {
            let at = (first + i) * size;
            let Some(buf) = bufs.get(at..at + lens[i]) else {
                return Err(io::ErrorKind::InvalidInput.into());
            };
            iovs[i].iov_base = buf.as_ptr().cast_mut().cast();
            iovs[i].iov_len = buf.len();
            let Some(dst) = to[i] else {
                return Err(io::ErrorKind::InvalidInput.into());
            };
            let h = &mut hdrs[i].msg_hdr;
            h.msg_namelen = sockaddr(dst, &mut names[i]);
            h.msg_name = ptr::from_mut(&mut names[i]).cast();
            h.msg_iov = ptr::from_mut(&mut iovs[i]);
            h.msg_iovlen = 1;
        }
        // SAFETY: headers `0..n` point at the datagrams (read only by the kernel), their
        // iovecs and addresses, all alive and unmoved during the call.
        let r = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT as _,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    pub fn send(sock: &UdpSocket, replies: &[Vec<u8>], answer: &[bool], names: &mut Names) {
        // SAFETY: as in `recv`.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let mut n = 0;
        for (i, _) in answer.iter().enumerate().filter(|(_, a)| **a) {
            iovs[n].iov_base = replies[i].as_ptr().cast_mut().cast();
            iovs[n].iov_len = replies[i].len();
            let h = &mut hdrs[n].msg_hdr;
            h.msg_name = ptr::from_mut(&mut names.addrs[i]).cast();
            h.msg_namelen = names.lens[i];
            h.msg_iov = ptr::from_mut(&mut iovs[n]);
            h.msg_iovlen = 1;
            n += 1;
        }
        let mut start = 0;
        while start < n {
            // SAFETY: headers `start..n` point at the replies (read only by the kernel)
            // and at the source addresses, all alive and unmoved during the call.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    hdrs[start..].as_mut_ptr(),
                    (n - start) as libc::c_uint,
                    libc::MSG_DONTWAIT as _,
                )
            };
            if r > 0 {
                start += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => return,
                // This destination refused it (unreachable, too big): skip it.
                _ => start += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_answered_in_batches_with_sources_kept() {
        let server = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let to = server.local_addr().expect("addr");
        let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let n = BATCH + 5;
        for i in 0..n {
            a.send_to(&[i as u8; 3], to).expect("send");
        }
        let mut batch = UdpBatch::new();
        let mut got = Vec::new();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got.len() < n {
            assert!(
                std::time::Instant::now() < end,
                "{} of {n} datagrams after 10 s",
                got.len()
            );
            match batch.recv(&server) {
                Ok(k) => assert!(k <= BATCH),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                }
                Err(e) => panic!("{e}"),
            }
            batch.answer(|pkt, from, out| {
                assert_eq!(from, a.local_addr().expect("addr"));
                got.push(pkt[0]);
                out.extend_from_slice(&[pkt[0], 0xaa]);
                pkt[0] % 2 == 0 // odd ones get no reply
            });
            batch.send(&server);
        }
        assert_eq!(got, (0..n as u8).collect::<Vec<_>>());
        a.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        for i in (0..n as u8).filter(|i| i % 2 == 0) {
            let (len, _) = a.recv_from(&mut buf).expect("reply");
            assert_eq!(&buf[..len], &[i, 0xaa]);
        }
    }

    /// Datagrams queued for two destinations (one over IPv6 when the host has it) leave
    /// in order, each to its own address, whole; a full batch takes no more.
    #[test]
    fn a_send_batch_reaches_each_destination_in_order() {
        let sender = UdpSocket::bind("0.0.0.0:0".parse().expect("addr")).expect("bind");
        let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut tx = SendBatch::new(1404);
        let mut expect_a = Vec::new();
        let mut expect_b = Vec::new();
        for i in 0..BATCH {
            let buf = tx.slot().expect("room");
            assert_eq!(buf.len(), 1404);
            let len = 10 + i * 40;
            buf[..len].fill(i as u8);
            let to = if i % 3 == 0 { &b } else { &a };
            tx.commit(to.local_addr().expect("addr"), len);
            if i % 3 == 0 {
                &mut expect_b
            } else {
                &mut expect_a
            }
            .push((i as u8, len));
        }
        assert!(tx.is_full() && tx.slot().is_none());
        assert_eq!(tx.queued(), BATCH);
        assert!(tx.flush(&sender), "a small batch would block");
        assert_eq!(tx.queued(), 0);
        for (sock, expect) in [(&a, expect_a), (&b, expect_b)] {
            sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .expect("timeout");
            let mut buf = [0u8; 2048];
            for (byte, len) in expect {
                let (n, from) = sock.recv_from(&mut buf).expect("a datagram");
                assert_eq!(from.port(), sender.local_addr().expect("addr").port());
                assert_eq!(n, len);
                assert!(
                    buf[..n].iter().all(|&x| x == byte),
                    "datagram {byte} mangled"
                );
            }
        }
        // IPv6, where the host has it: the address conversion of the other family.
        if let (Ok(s6), Ok(r6)) = (
            UdpSocket::bind("[::1]:0".parse().expect("addr")),
            std::net::UdpSocket::bind("[::1]:0"),
        ) {
            let buf = tx.slot().expect("room");
            buf[..5].copy_from_slice(b"hello");
            tx.commit(r6.local_addr().expect("addr"), 5);
            assert!(tx.flush(&s6));
            r6.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .expect("timeout");
            let mut got = [0u8; 16];
            let (n, from) = r6.recv_from(&mut got).expect("a datagram over IPv6");
            assert_eq!(&got[..n], b"hello");
            assert_eq!(from, s6.local_addr().expect("addr"));
        }
    }
}
