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
//!
//! On Linux a burst to or from one peer also costs one pass through the network stack
//! instead of one per datagram. A [`SendBatch`] sends consecutive datagrams of one
//! size to one destination as one buffer the kernel cuts into datagrams (`UDP_SEGMENT`,
//! Linux 4.18). A [`UdpBatch::coalescing`] batch reads sockets on which
//! [`enable_gro`] (`UDP_GRO`, Linux 5.0) let the kernel hand such a run over as one
//! buffer, and cuts it back into its datagrams. The two meet on loopback, where the
//! sender's buffer reaches the receiver whole, and a network card's receive offload
//! builds the same runs from the wire. Where the kernel lacks either, datagrams go one
//! by one as before.

use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;

/// Most datagrams handled per system call.
pub const BATCH: usize = 32;
/// Receive buffer per datagram.
pub const DATAGRAM: usize = 2048;
/// Messages per system call of a [`UdpBatch::coalescing`] batch, as many as a datagram
/// batch takes: each may be a run of datagrams up to [`RUN`] bytes.
pub const RUN_BATCH: usize = BATCH;
/// The longest run of datagrams the kernel hands over as one (a UDP payload's limit).
pub const RUN: usize = 65_536;
/// A coalescing batch's buffer per message: a run, and 33 cache lines more, so that
/// datagrams landing at the starts of the buffers do not all fall into the same sets
/// of the CPU's cache, as they would 64 KiB apart.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
const RUN_SLOT: usize = RUN + 33 * 64;
/// Most bytes one send hands the kernel to cut into datagrams (its limit is 64 KiB
/// with headers, and 64 datagrams).
const SEGMENTED_MAX: usize = 60_000;

/// Reusable buffers for one batch in and its replies out.
pub struct UdpBatch {
    /// `slots` buffers of `slot` bytes.
    bufs: Buffers,
    slot: usize,
    slots: usize,
    lens: [usize; BATCH],
    /// The size of the datagrams a received run is cut into (0: one datagram).
    segs: [usize; BATCH],
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
    /// Empty buffers: [`BATCH`] datagrams of at most [`DATAGRAM`] bytes per call.
    pub fn new() -> Self {
        Self::with_slots(BATCH, DATAGRAM)
    }

    /// Buffers for sockets [`enable_gro`] was called on (any other reads as well):
    /// [`RUN_BATCH`] messages per call, each a datagram or a run of them. The buffers
    /// (2 MiB of address space, mapped apart from the heap) take memory only as far
    /// as datagrams reach into them: a page or two per message while none come in
    /// runs (256 KiB at most), up to 64 KiB for each run one call has taken at a time.
    pub fn coalescing() -> Self {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            if let Some(pages) = sys::Pages::new(RUN_BATCH * RUN_SLOT) {
                return Self::with_buffers(Buffers::Mapped(pages), RUN_BATCH, RUN_SLOT);
            }
            // Runs still need their room (and their control messages: `recv` passes
            // one for buffers longer than a datagram).
            Self::with_slots(RUN_BATCH, RUN_SLOT)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        Self::new()
    }

    fn with_slots(slots: usize, slot: usize) -> Self {
        Self::with_buffers(Buffers::Heap(vec![0u8; slots * slot]), slots, slot)
    }

    fn with_buffers(bufs: Buffers, slots: usize, slot: usize) -> Self {
        Self {
            bufs,
            slot,
            slots,
            lens: [0; BATCH],
            segs: [0; BATCH],
            from: [None; BATCH],
            // Grown on first use: uTP only receives.
            replies: (0..BATCH).map(|_| Vec::new()).collect(),
            answer: [false; BATCH],
            n: 0,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            sys: sys::Names::new(),
        }
    }

    fn buf(&self, i: usize) -> &[u8] {
        &self.bufs.get()[i * self.slot..(i + 1) * self.slot]
    }

    /// Receives up to [`BATCH`] messages (datagrams, or runs of them on a socket
    /// [`enable_gro`] was called on); returns how many (`WouldBlock` when none).
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        self.n = 0;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let n = sys::recv(
            sock,
            self.bufs.get_mut(),
            self.slot,
            self.slots,
            &mut self.lens,
            &mut self.segs,
            &mut self.sys,
        )?;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let n = {
            let mut n = 0;
            while n < self.slots {
                let at = n * self.slot;
                match sock.recv_from(&mut self.bufs.get_mut()[at..at + self.slot]) {
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
                    let mut read = 0;
                    for (d, from) in self.datagrams() {
                        f(d, from);
                        read += 1;
                    }
                    left = left.saturating_sub(read.max(1));
                    // Fewer than asked: the queue ran dry (`recvmmsg` stops there).
                    if n < self.slots {
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

    /// The datagrams of the last [`UdpBatch::recv`] with their sources, runs cut into
    /// their datagrams (those from unreadable addresses, and any longer than
    /// [`DATAGRAM`] outside a run, left out).
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> + '_ {
        (0..self.n).flat_map(move |i| {
            let len = self.lens[i].min(self.slot);
            let seg = if self.segs[i] == 0 { len } else { self.segs[i] };
            // A datagram longer than [`DATAGRAM`] is dropped, alone or in a run.
            let from = self.from[i].filter(|_| seg <= DATAGRAM);
            let count = match from {
                None => 0,
                Some(_) if len == 0 => 1,
                Some(_) => len.div_ceil(seg),
            };
            let data = &self.buf(i)[..len];
            (0..count).filter_map(move |k| Some((&data[k * seg..len.min((k + 1) * seg)], from?)))
        })
    }

    /// Hands each received datagram and an empty reply buffer to `f`, which returns
    /// whether the reply is to be sent. Datagrams from unreadable addresses are skipped.
    #[cfg_attr(not(feature = "tracker-server"), allow(dead_code))]
    pub fn answer(&mut self, mut f: impl FnMut(&[u8], SocketAddr, &mut Vec<u8>) -> bool) {
        for i in 0..self.n {
            self.replies[i].clear();
            let at = i * self.slot;
            let d = &self.bufs.get()[at..at + self.lens[i].min(self.slot).min(DATAGRAM)];
            // Only whole datagrams are answered (a run, or one longer than a datagram
            // in a coalescing batch's buffers, is not).
            let whole = self.segs[i] == 0 && self.lens[i] <= DATAGRAM;
            self.answer[i] = match self.from[i] {
                Some(from) if whole => f(d, from, &mut self.replies[i]),
                _ => false,
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

/// Where a [`UdpBatch`]'s datagrams land.
enum Buffers {
    Heap(Vec<u8>),
    /// Pages of their own, backed by memory only once written (a zeroed heap block
    /// may be cleared, and so backed, whole).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Mapped(sys::Pages),
}

impl Buffers {
    fn get(&self) -> &[u8] {
        match self {
            Self::Heap(v) => v,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Self::Mapped(p) => p.get(),
        }
    }

    fn get_mut(&mut self) -> &mut [u8] {
        match self {
            Self::Heap(v) => v,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Self::Mapped(p) => p.get_mut(),
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
    /// Runs to one destination go as one buffer the kernel cuts (`UDP_SEGMENT`).
    gso: bool,
    /// Flushes left that send every destination datagram by datagram, after runs to
    /// more destinations than [`SOLO`] holds were refused.
    pause: u16,
    /// Destinations whose runs the kernel refused lately (a route's MTU below the
    /// datagrams, an ICMP "too big" from the peer, a tunnel that cannot cut), with the
    /// flushes left that send to them datagram by datagram.
    solo: [(Option<SocketAddr>, u16); SOLO],
}

/// Flushes that send a destination datagram by datagram after its run was refused (a
/// route whose MTU is below the datagrams refuses every run: one failed call per flush
/// otherwise).
const REFUSED_PAUSE: u16 = 256;

/// Destinations held apart at once; refusals for more turn runs off for everyone for
/// [`REFUSED_PAUSE`] flushes (then it is the socket or the device, not a route).
const SOLO: usize = 8;

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
            #[cfg(any(target_os = "linux", target_os = "android"))]
            gso: sys::gso(),
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            gso: false,
            pause: 0,
            solo: [(None, 0); SOLO],
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
    /// A run the kernel refuses goes again datagram by datagram, and so does what goes
    /// to its destination for the next [`REFUSED_PAUSE`] flushes: one peer's route
    /// costs that peer its runs, not the others.
    pub fn flush(&mut self, sock: &UdpSocket) -> bool {
        self.pause = self.pause.saturating_sub(1);
        for e in &mut self.solo {
            e.1 = e.1.saturating_sub(1);
            if e.1 == 0 {
                e.0 = None;
            }
        }
        while self.sent < self.n {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            let r = sys::send_many(
                sock,
                &self.bufs,
                self.size,
                &self.lens[self.sent..self.n],
                &self.to[self.sent..self.n],
                self.sent,
                (self.gso && self.pause == 0).then_some(&self.solo[..]),
            );
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            let r = {
                let i = self.sent;
                let at = i * self.size;
                match self.to[i] {
                    Some(to) => sock
                        .send_to(&self.bufs[at..at + self.lens[i]], to)
                        .map(|_| 1)
                        .map_err(|e| (e, 1)),
                    None => Ok(1),
                }
            };
            match r {
                Ok(k) => self.sent += k.max(1),
                Err((e, _)) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err((e, _)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err((_, run)) if run > 1 => self.refused(self.to[self.sent]),
                Err(_) => self.sent += 1,
            }
        }
        self.sent = 0;
        self.n = 0;
        true
    }

    /// The kernel refused a run to `to`: its datagrams go one by one for a while, or
    /// everyone's when too many destinations are held apart already.
    fn refused(&mut self, to: Option<SocketAddr>) {
        // `run()` makes runs to one destination only, so `to` is always known; an
        // unknown one pauses runs for everyone, like a full set.
        let free = self.solo.iter().position(|e| e.0.is_none() || e.0 == to);
        match free {
            Some(i) if to.is_some() => self.solo[i] = (to, REFUSED_PAUSE),
            _ => self.pause = REFUSED_PAUSE,
        }
    }
}

/// Marks `sock` to hand runs of datagrams from one sender over as one buffer
/// (`UDP_GRO`); false where the kernel cannot. Read it with a
/// [`UdpBatch::coalescing`] batch only: a datagram batch drops such runs as too long.
pub fn enable_gro(sock: &UdpSocket) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return sys::enable_gro(sock);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = sock;
        false
    }
}

/// How many of the datagrams `lens` (to `to`) lead a run one send can carry: one
/// destination, every datagram as long as the first but the last (which may be
/// shorter), at most [`SEGMENTED_MAX`] bytes.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
fn run(lens: &[usize], to: &[Option<SocketAddr>]) -> usize {
    let (Some(&seg), Some(&dst)) = (lens.first(), to.first()) else {
        return 0;
    };
    if seg == 0 || dst.is_none() {
        return 1;
    }
    let mut k = 1;
    let mut total = seg;
    while k < lens.len().min(to.len()) {
        let len = lens[k];
        if to[k] != dst || len > seg || len == 0 || total + len > SEGMENTED_MAX {
            break;
        }
        total += len;
        k += 1;
        if len < seg {
            break;
        }
    }
    k
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

    /// Anonymous private pages, unmapped on drop: zero until written, and backed by
    /// memory only where written.
    pub struct Pages {
        ptr: ptr::NonNull<u8>,
        len: usize,
    }

    // SAFETY: `Pages` owns its mapping outright (as a `Vec<u8>` owns its block); the
    // accessors hand out borrows tied to `&self` / `&mut self`.
    unsafe impl Send for Pages {}
    // SAFETY: as above; shared access is read only.
    unsafe impl Sync for Pages {}

    impl Pages {
        pub fn new(len: usize) -> Option<Self> {
            // SAFETY: a fresh anonymous mapping; no existing memory is touched.
            let p = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return None;
            }
            // Backed page by page: a transparent huge page would back 2 MiB for the
            // first datagram. (Refused by kernels without them: nothing to do then.)
            // SAFETY: advice on the mapping just made.
            let _ = unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) };
            Some(Self {
                ptr: ptr::NonNull::new(p.cast())?,
                len,
            })
        }

        pub fn get(&self) -> &[u8] {
            // SAFETY: `len` bytes mapped readable and writable (zero-filled by the
            // kernel, so initialized) for as long as `self` lives.
            unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
        }

        pub fn get_mut(&mut self) -> &mut [u8] {
            // SAFETY: as in `get`, borrowed uniquely through `&mut self`.
            unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
        }

        /// How many of the pages are backed by memory (`mincore(2)`).
        #[cfg(test)]
        pub fn resident(&self) -> usize {
            // SAFETY: sysconf has no preconditions.
            let page =
                usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
            let mut vec = vec![0u8; self.len.div_ceil(page)];
            // SAFETY: the mapping is page aligned and `len` long; `vec` has one byte per
            // page of it.
            let r = unsafe {
                libc::mincore(self.ptr.as_ptr().cast(), self.len, vec.as_mut_ptr().cast())
            };
            assert_eq!(r, 0, "mincore: {}", io::Error::last_os_error());
            vec.iter().filter(|&&b| b & 1 != 0).count()
        }
    }

    impl Drop for Pages {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `new`, unmapped once; no borrow outlives self.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }

    /// `SOL_UDP` and its options (Linux's values on every architecture).
    const SOL_UDP: libc::c_int = 17;
    const UDP_SEGMENT: libc::c_int = 103;
    const UDP_GRO: libc::c_int = 104;

    /// Room for one `cmsghdr` and an `int` (with alignment, on 32 and 64 bits).
    type Control = [u64; 4];

    /// Whether this kernel takes `UDP_SEGMENT` (asked once, on a socket of its own).
    pub fn gso() -> bool {
        static GSO: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *GSO.get_or_init(|| {
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
                .or_else(|_| {
                    socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)
                })
                .is_ok_and(|s| set_int(s.as_raw_fd(), UDP_SEGMENT, 0))
        })
    }

    pub fn enable_gro(sock: &UdpSocket) -> bool {
        set_int(sock.as_raw_fd(), UDP_GRO, 1)
    }

    fn set_int(fd: libc::c_int, opt: libc::c_int, v: libc::c_int) -> bool {
        // SAFETY: the option value is a live `int` of the stated size.
        unsafe {
            libc::setsockopt(
                fd,
                SOL_UDP,
                opt,
                ptr::from_ref(&v).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    }

    pub fn recv(
        sock: &UdpSocket,
        bufs: &mut [u8],
        slot: usize,
        slots: usize,
        lens: &mut [usize; BATCH],
        segs: &mut [usize; BATCH],
        names: &mut Names,
    ) -> io::Result<usize> {
        // SAFETY: iovec, mmsghdr and the control words are plain C data; zeroed is
        // valid for each.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let mut control: [Control; BATCH] = unsafe { zeroed() };
        // Only runs need their segment size: datagram batches pass no control buffer.
        let runs = slot > DATAGRAM;
        let n = slots.min(BATCH).min(bufs.len() / slot.max(1));
        for (i, buf) in bufs.chunks_exact_mut(slot).take(n).enumerate() {
            iovs[i].iov_base = buf.as_mut_ptr().cast();
            iovs[i].iov_len = slot;
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = ptr::from_mut(&mut names.addrs[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = ptr::from_mut(&mut iovs[i]);
            h.msg_iovlen = 1;
            if runs {
                h.msg_control = control[i].as_mut_ptr().cast();
                h.msg_controllen = size_of::<Control>() as _;
            }
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
            segs[i] = if runs { segment(&hdrs[i].msg_hdr) } else { 0 };
            // Longer than the buffer: cut short, so skipped (no source address) rather
            // than handed on (uTP has no checksum to notice). Without room for its
            // control message a run cannot be cut back into its datagrams: skipped too.
            if hdrs[i].msg_hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
                names.lens[i] = 0;
            }
        }
        Ok(r)
    }

    /// The size of the datagrams a received run is made of (`UDP_GRO`'s control
    /// message), 0 for a single datagram.
    fn segment(h: &libc::msghdr) -> usize {
        if h.msg_controllen == 0 {
            return 0;
        }
        // SAFETY: the kernel wrote `msg_controllen` bytes of control messages into the
        // buffer `h.msg_control` points at, which outlives this call; the CMSG macros
        // stay within that length, and the data read is the `int` UDP_GRO carries.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                    let v = ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                    return usize::try_from(v).unwrap_or(0);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        0
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
    /// `size` bytes) to `to`, each run of [`super::run`] as one message the kernel cuts
    /// into datagrams when `cut` is given, but for the destinations it holds apart:
    /// how many datagrams the kernel took, or the error with how many datagrams the
    /// message it refused held.
    pub fn send_many(
        sock: &UdpSocket,
        bufs: &[u8],
        size: usize,
        lens: &[usize],
        to: &[Option<SocketAddr>],
        first: usize,
        cut: Option<&[(Option<SocketAddr>, u16)]>,
    ) -> Result<usize, (io::Error, usize)> {
        let invalid = || (io::Error::from(io::ErrorKind::InvalidInput), 1);
        // SAFETY: plain C data; zeroed is valid for each.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let mut control: [Control; BATCH] = unsafe { zeroed() };
        let mut runs = [0usize; BATCH];
        let n = lens.len().min(to.len()).min(BATCH);
        let (mut i, mut m) = (0, 0);
        while i < n {
            let k = if cut.is_some_and(|solo| !solo.iter().any(|e| e.0.is_some() && e.0 == to[i])) {
                super::run(&lens[i..n], &to[i..n])
            } else {
                1
            };
            for j in i..i + k {
                let at = (first + j) * size;
                let buf = bufs.get(at..at + lens[j]).ok_or_else(invalid)?;
                iovs[j].iov_base = buf.as_ptr().cast_mut().cast();
                iovs[j].iov_len = buf.len();
            }
            let dst = to[i].ok_or_else(invalid)?;
            let h = &mut hdrs[m].msg_hdr;
            h.msg_namelen = sockaddr(dst, &mut names[m]);
            h.msg_name = ptr::from_mut(&mut names[m]).cast();
            // The run's `k` iovecs, from the array's own pointer.
            h.msg_iov = iovs.as_mut_ptr().wrapping_add(i);
            h.msg_iovlen = k as _;
            if k > 1 {
                h.msg_control = control[m].as_mut_ptr().cast();
                h.msg_controllen = size_of::<Control>() as _;
                // SAFETY: the control buffer is `Control`-sized and aligned, room for
                // one header and the `u16` segment size (the macros stay inside it).
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(h);
                    (*c).cmsg_level = SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as _) as _;
                    ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), lens[i] as u16);
                    h.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as _) as _;
                }
            }
            runs[m] = k;
            i += k;
            m += 1;
        }
        // SAFETY: headers `0..m` point at the datagrams (read only by the kernel), their
        // iovecs, addresses and control messages, all alive and unmoved during the call.
        let r = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                m as libc::c_uint,
                libc::MSG_DONTWAIT as _,
            )
        };
        if r < 0 {
            return Err((io::Error::last_os_error(), runs[0]));
        }
        Ok(runs[..r as usize].iter().sum())
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

    #[test]
    fn a_run_is_one_destination_and_one_size_but_its_last() {
        let a = Some("127.0.0.1:1".parse().expect("addr"));
        let b = Some("127.0.0.1:2".parse().expect("addr"));
        assert_eq!(run(&[], &[]), 0);
        assert_eq!(run(&[100, 100, 100, 100], &[a, a, a, b]), 3);
        assert_eq!(
            run(&[100, 100, 60, 100], &[a, a, a, a]),
            3,
            "the short one ends it"
        );
        assert_eq!(
            run(&[100, 120, 100], &[a, a, a]),
            1,
            "a longer one starts anew"
        );
        assert_eq!(run(&[0, 0], &[a, a]), 1);
        assert_eq!(run(&[100, 0], &[a, a]), 1);
        assert_eq!(run(&[100, 100], &[None, None]), 1);
        let lens = [2400; BATCH];
        let k = run(&lens, &[a; BATCH]);
        assert!(
            k * 2400 <= SEGMENTED_MAX && (k + 1) * 2400 > SEGMENTED_MAX,
            "{k}"
        );
    }

    /// A burst to one peer: a reader whose socket takes runs gets every datagram
    /// whole and in order, in fewer messages than datagrams where the kernel can
    /// (Linux 5.0); a reader without gets them one by one, as sent.
    #[test]
    fn a_run_reaches_a_coalescing_reader_whole_and_a_plain_one_datagram_by_datagram() {
        let sender = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let coalescing = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let runs = enable_gro(&coalescing);
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        // First a run of datagrams too long for us: dropped, as they would be alone.
        let mut big = SendBatch::new(3000);
        for _ in 0..3 {
            big.push(coalescing.local_addr().expect("addr"), &[0xee; 3000]);
        }
        assert!(big.flush(&sender));
        let mut tx = SendBatch::new(1404);
        let mut sent = Vec::new();
        // 20 of 1404 bytes and a short last one, then 2 for the plain reader, twice.
        for round in 0..2u8 {
            for i in 0..23u8 {
                let (to, len) = match i {
                    0..20 => (coalescing.local_addr().expect("addr"), 1404),
                    20 => (coalescing.local_addr().expect("addr"), 300),
                    _ => (plain.local_addr().expect("addr"), 1404),
                };
                let buf = tx.slot().expect("room");
                buf[..len].fill(round * 100 + i);
                buf[0] = round;
                buf[1] = i;
                tx.commit(to, len);
                sent.push((to, round, i, len));
            }
            assert!(tx.flush(&sender), "a small batch would block");
        }
        let want: Vec<_> = sent
            .iter()
            .filter(|s| s.0 == coalescing.local_addr().expect("addr"))
            .collect();
        let from = Some(sender.local_addr().expect("addr"));
        let (got, messages) = read_n(&mut UdpBatch::coalescing(), &coalescing, want.len(), from);
        assert_eq!(got.len(), want.len());
        for (d, (_, round, i, len)) in got.iter().zip(&want) {
            assert_eq!(
                (d.len(), d[0], d[1]),
                (*len, *round, *i),
                "out of order or cut"
            );
            assert!(
                d[2..].iter().all(|&x| x == round * 100 + i),
                "datagram {i} mangled"
            );
        }
        if runs && tx.gso {
            assert!(
                messages < got.len(),
                "{} datagrams in {messages} messages: no run went as one",
                got.len()
            );
        }
        plain
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 65_536];
        for (_, round, i, len) in sent
            .iter()
            .filter(|s| s.0 == plain.local_addr().expect("addr"))
        {
            let (n, _) = plain.recv_from(&mut buf).expect("a datagram");
            assert_eq!((n, buf[0], buf[1]), (*len, *round, *i));
        }
    }

    /// Reads `n` datagrams from `sock` with `batch` (giving up after 3 s), each from
    /// `from` when given: the datagrams and the messages they came in.
    fn read_n(
        batch: &mut UdpBatch,
        sock: &UdpSocket,
        n: usize,
        from: Option<SocketAddr>,
    ) -> (Vec<Vec<u8>>, usize) {
        let (mut got, mut messages) = (Vec::new(), 0);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while got.len() < n && std::time::Instant::now() < end {
            match batch.recv(sock) {
                Ok(k) => messages += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                }
                Err(e) => panic!("{e}"),
            }
            for (d, src) in batch.datagrams() {
                assert!(from.is_none_or(|f| f == src), "from {src}");
                got.push(d.to_vec());
            }
        }
        (got, messages)
    }

    /// A run over IPv6, where the host has it: cut and read back the same way.
    #[test]
    fn a_run_over_ipv6_arrives_whole_and_in_order() {
        let (Ok(sender), Ok(rx)) = (
            UdpSocket::bind("[::1]:0".parse().expect("addr")),
            UdpSocket::bind("[::1]:0".parse().expect("addr")),
        ) else {
            eprintln!("no IPv6 loopback: skipped");
            return;
        };
        let runs = enable_gro(&rx);
        let to = rx.local_addr().expect("addr");
        let len = |i: u8| if i == 11 { 700 } else { 1404 };
        let mut tx = SendBatch::new(1404);
        for i in 0..12u8 {
            tx.push(to, &[i; 1404][..len(i)]);
        }
        assert!(tx.flush(&sender));
        let from = Some(sender.local_addr().expect("addr"));
        let (got, messages) = read_n(&mut UdpBatch::coalescing(), &rx, 12, from);
        assert!(got.iter().all(|d| d.iter().all(|&x| x == d[0])), "mangled");
        let got: Vec<(usize, u8)> = got.iter().map(|d| (d.len(), d[0])).collect();
        let want: Vec<(usize, u8)> = (0..12u8).map(|i| (len(i), i)).collect();
        assert_eq!(got, want);
        if runs && tx.gso {
            assert!(messages < 12, "12 datagrams in {messages} messages: no run");
        }
    }

    /// A run the kernel refuses to cut (here: a sender without UDP checksums, which
    /// `UDP_SEGMENT` needs) still arrives, datagram by datagram and in order.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_refused_run_goes_datagram_by_datagram() {
        let sender = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let one: libc::c_int = 1;
        // SAFETY: SO_NO_CHECK takes an int, passed by a live reference of its size.
        let r = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sender),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                std::ptr::from_ref(&one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_NO_CHECK: {}", io::Error::last_os_error());
        let rx = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let to = rx.local_addr().expect("addr");
        let mut tx = SendBatch::new(1000);
        for round in 0..2u8 {
            for i in 0..10u8 {
                tx.push(to, &[round * 10 + i; 1000]);
            }
            assert!(tx.flush(&sender));
        }
        let (got, _) = read_n(&mut UdpBatch::new(), &rx, 20, None);
        assert!(got.iter().all(|d| d.iter().all(|&x| x == d[0])), "mangled");
        let got: Vec<(usize, u8)> = got.iter().map(|d| (d.len(), d[0])).collect();
        let want: Vec<(usize, u8)> = (0..20u8).map(|i| (1000, i)).collect();
        assert_eq!(got, want);
        if sys::gso() {
            assert!(
                tx.solo.iter().any(|e| e.0 == Some(to)),
                "the refusal was not seen (runs were not sent)"
            );
        }
    }

    /// A run refused for its destination (here an IPv6 peer of an IPv4 socket; a
    /// peer's route MTU, lowered by its ICMP "too big", is refused the same way) costs
    /// that destination its runs, not the others: the run after it in the same flush,
    /// and the next flush's, still go as runs. Held apart for more destinations than
    /// [`SOLO`], runs stop for everyone for a while.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_run_refused_for_one_destination_keeps_runs_to_the_others() {
        let sender = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let rx = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let runs = enable_gro(&rx);
        let to = rx.local_addr().expect("addr");
        let away: SocketAddr = "[::1]:9".parse().expect("addr");
        let from = Some(sender.local_addr().expect("addr"));
        let mut tx = SendBatch::new(1000);
        let mut got = Vec::new();
        for round in 0..2u8 {
            if round == 0 {
                for i in 0..10u8 {
                    tx.push(away, &[i; 1000]);
                }
            }
            for i in 0..10u8 {
                tx.push(to, &[10 * round + i; 1000]);
            }
            assert!(tx.flush(&sender));
            let (d, messages) = read_n(&mut UdpBatch::coalescing(), &rx, 10, from);
            got.extend(d.iter().map(|d| d[0]));
            if runs && tx.gso {
                assert!(messages < 10, "round {round}: no run ({messages} messages)");
                assert!(tx.solo.iter().any(|e| e.0 == Some(away)), "not held apart");
            }
            assert_eq!(tx.pause, 0, "runs paused for everyone");
        }
        assert_eq!(got, (0..20u8).collect::<Vec<_>>());
        if tx.gso {
            for port in 0..=SOLO as u16 {
                for i in 0..4u8 {
                    tx.push(SocketAddr::new(away.ip(), 100 + port), &[i; 1000]);
                }
            }
            assert!(tx.flush(&sender));
            assert!(
                tx.pause > 0,
                "{} destinations refused, runs still on",
                SOLO + 1
            );
        }
    }

    /// A run that reaches a batch without room for its control message is dropped,
    /// never handed on as one datagram: two 500-byte packets read as one would be a
    /// uTP packet with another's header inside its payload.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_run_without_its_segment_size_is_dropped_not_merged() {
        let sender = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let rx = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let to = rx.local_addr().expect("addr");
        let runs = enable_gro(&rx);
        let mut tx = SendBatch::new(500);
        tx.push(to, &[1; 500]);
        tx.push(to, &[2; 500]);
        assert!(tx.flush(&sender));
        // A lone datagram after it shows the run had its turn.
        let lone = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        lone.send_to(&[3; 20], to).expect("send");
        let mut batch = UdpBatch::new();
        let mut got = Vec::new();
        while got.last() != Some(&vec![3u8; 20]) {
            let (more, _) = read_n(&mut batch, &rx, 1, None);
            assert!(!more.is_empty(), "the lone datagram never came");
            got.extend(more);
        }
        let got: Vec<(usize, u8)> = got.iter().map(|d| (d.len(), d[0])).collect();
        if runs && tx.gso {
            assert_eq!(got, [(20, 3)], "the run merged or its datagrams read");
        } else {
            assert_eq!(got, [(500, 1), (500, 2), (20, 3)]);
        }
    }

    /// Plain datagrams read by a coalescing batch back two pages per message at most,
    /// not the 2 MiB its runs may take.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn a_coalescing_batch_takes_memory_only_where_datagrams_land() {
        let sock = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let to = sock.local_addr().expect("addr");
        let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut batch = UdpBatch::coalescing();
        let Buffers::Mapped(pages) = &batch.bufs else {
            panic!("a coalescing batch on Linux maps its buffers");
        };
        assert_eq!(pages.resident(), 0);
        let mut read = 0;
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for round in 0..4 {
            for _ in 0..RUN_BATCH {
                a.send_to(&[round; 1400], to).expect("send");
            }
            let mut got = 0;
            while got < RUN_BATCH {
                assert!(
                    std::time::Instant::now() < end,
                    "datagrams lost on loopback"
                );
                match batch.recv(&sock) {
                    Ok(_) => got += batch.datagrams().count(),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            read += got;
        }
        assert_eq!(read, 4 * RUN_BATCH);
        let Buffers::Mapped(pages) = &batch.bufs else {
            unreachable!()
        };
        let resident = pages.resident();
        assert!(
            (1..=2 * RUN_BATCH).contains(&resident),
            "{resident} pages backed after {read} datagrams of 1400 bytes"
        );
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
