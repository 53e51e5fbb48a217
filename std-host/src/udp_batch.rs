//! Datagrams in batches: up to [`BATCH`] received with one `recvmmsg(2)` and their
//! replies sent with one `sendmmsg(2)` on Linux, one `recv_from` / `send_to` each
//! elsewhere. For the tracker's UDP socket, where two system calls per announce were
//! most of the cost: a batch amortises them and lets the loop answer a burst without
//! being rescheduled between datagrams.
//!
//! Buffers are allocated once ([`BATCH`] × [`DATAGRAM`] in, [`BATCH`] reply vectors
//! out) and reused; a datagram longer than [`DATAGRAM`] is truncated, which no BEP 15
//! request is (a scrape of 74 info-hashes is 1,496 bytes).

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
            replies: (0..BATCH).map(|_| Vec::with_capacity(1024)).collect(),
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

    /// Hands each received datagram and an empty reply buffer to `f`, which returns
    /// whether the reply is to be sent. Datagrams from unreadable addresses are skipped.
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
        }
        Ok(r)
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
}
