//! The host's one door to two things of the operating system that have one right way
//! to be used: randomness and the durable replacement of a file.
//!
//! - [`random_fill`] (and [`random_u64`], [`random_array`]) reads the OS's random
//!   source through `getrandom` (the `getrandom(2)` call, or `/dev/urandom` where the
//!   kernel is older). Every secret and seed of the host comes from here: MSE keys, the
//!   DHT's node id and token key, the tracker server's connection-id key and peer
//!   selection, the LSD cookie, the session's and tracker client's seeds.
//! - [`write_atomic`] replaces a file so that a crash or power cut at any moment leaves
//!   either the old or the new contents, never a mix or an empty file: resume files,
//!   the DHT routing table and the tracker server's state all go through it.
//! - `bind_v6_beside` binds the IPv6-only twin of a UDP socket on `0.0.0.0` (the
//!   DHT's and uTP's).
//! - [`boot_id`] tells this boot of the system from the others (resume data saved
//!   without a data sync is trusted only within the boot that wrote it).
//! - [`set_recv_lowat`] sets how many bytes a TCP socket gathers before it is
//!   reported readable (`SO_RCVLOWAT`): a download is read in batches, no larger than
//!   [`recv_buffer`] allows.
//! - [`local_weekday_minute`] reads the local wall clock (`localtime_r`, with the
//!   time zone of the system): the alternative speed schedule is in local time.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The system's boot id (Linux: `/proc/sys/kernel/random/boot_id`, a random UUID
/// drawn at each boot), read once; `None` where there is none.
pub fn boot_id() -> Option<&'static [u8]> {
    static ID: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let s = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let s = s.trim();
        (!s.is_empty() && s.len() <= 64).then(|| s.as_bytes().to_vec())
    })
    .as_deref()
}

/// An IPv6-only socket on `[::]` and the port of `socket`, when `bind` is the IPv4
/// unspecified address (all addresses) and the system has IPv6; `None` otherwise
/// (logged for `what`). The DHT's and uTP's IPv6 twins.
pub(crate) fn bind_v6_beside(
    socket: &mio::net::UdpSocket,
    bind: std::net::SocketAddr,
    what: &str,
) -> Option<mio::net::UdpSocket> {
    if bind.ip() != std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED) {
        return None;
    }
    let port = socket.local_addr().ok()?.port();
    let addr = std::net::SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port);
    let open = || -> io::Result<mio::net::UdpSocket> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_only_v6(true)?;
        s.set_nonblocking(true)?;
        let _ = s.set_recv_buffer_size(1 << 20);
        s.bind(&addr.into())?;
        Ok(mio::net::UdpSocket::from_std(s.into()))
    };
    match open() {
        Ok(s) => Some(s),
        Err(e) => {
            log::info!("{what}: no IPv6 socket on {addr}: {e}");
            None
        }
    }
}

/// Fills `buf` with random bytes from the OS.
///
/// Should the OS have none to give (no `getrandom(2)` and no readable `/dev/urandom`,
/// as in a bare chroot), the bytes are SHA-1 of the clock, the process id, a counter
/// and a stack address: enough to tell two processes apart, not a secret. That case is
/// logged once per call.
pub fn random_fill(buf: &mut [u8]) {
    if buf.is_empty() || getrandom::getrandom(buf).is_ok() {
        return;
    }
    log::warn!("no randomness from the OS: seeding from the clock and the process id");
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for chunk in buf.chunks_mut(20) {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let seed = format!("{nanos} {} {n} {:p}", std::process::id(), &n);
        let h = btcore_core::hash::sha1(seed.as_bytes());
        chunk.copy_from_slice(&h[..chunk.len()]);
    }
}

/// `N` random bytes from the OS (see [`random_fill`]).
pub fn random_array<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    random_fill(&mut b);
    b
}

/// A random `u64` from the OS (see [`random_fill`]), for seeding the core's generators.
pub fn random_u64() -> u64 {
    u64::from_le_bytes(random_array())
}

/// Replaces `path` with `data` atomically and durably: the bytes go to `path.tmp` in the
/// same directory, which is `fsync`ed, renamed over `path`, and then the directory is
/// `fsync`ed so the rename itself survives a power cut. On failure the temporary file
/// is removed and `path` is left as it was. One writer per `path` at a time (the
/// temporary name is fixed).
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// The temporary file [`write_atomic`] writes `path` through: `path` with `.tmp`
/// appended.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// The local day of the week (0 = Sunday, as `tm_wday`) and minute of the day (0 =
/// 00:00), in the system's time zone; `None` when the C library cannot tell.
pub fn local_weekday_minute() -> Option<(u8, u16)> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    // Of `time_t`'s own width (32 or 64 bits, by target and C library), inferred from
    // the call: musl deprecates naming the alias.
    let t = secs.try_into().ok()?;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: `t` and `tm` are valid for the call; `localtime_r` is the thread-safe
    // form (it writes only into `tm`) and returns NULL on failure, checked before `tm`
    // is read; `tm` was zeroed, so it is initialized whatever the call wrote.
    let r = unsafe { libc::localtime_r(std::ptr::from_ref(&t), tm.as_mut_ptr()) };
    if r.is_null() {
        return None;
    }
    // SAFETY: zero-initialized above and filled by a successful `localtime_r`.
    let tm = unsafe { tm.assume_init() };
    let weekday = u8::try_from(tm.tm_wday).ok().filter(|d| *d < 7)?;
    let minute = u16::try_from(tm.tm_hour * 60 + tm.tm_min)
        .ok()?
        .min(24 * 60 - 1);
    Some((weekday, minute))
}

/// Sets `SO_RCVLOWAT` of a socket: it is reported readable (by `epoll` and `poll`)
/// only once `bytes` are waiting (1 and 0: any byte). A non-blocking read still
/// returns whatever is there. Linux re-checks a socket whose mark is lowered, so
/// bytes already waiting are reported at once.
#[cfg(unix)]
pub fn set_recv_lowat(sock: &impl std::os::fd::AsRawFd, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes.max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid descriptor, a c_int option of the size given.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The size of a socket's receive buffer (`SO_RCVBUF`, as the kernel counts it: with
/// its overhead, about twice the data it holds).
#[cfg(unix)]
pub fn recv_buffer(sock: &impl std::os::fd::AsRawFd) -> io::Result<usize> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid descriptor, a c_int to write of the size given.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            std::ptr::from_mut(&mut v).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(usize::try_from(v).unwrap_or(0))
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_differ() {
        let a: [u8; 32] = random_array();
        let b: [u8; 32] = random_array();
        assert_ne!(a, b);
        assert_ne!(random_u64(), random_u64());
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("btcore-os-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state");
        write_atomic(&path, b"old").expect("first");
        write_atomic(&path, b"new contents").expect("second");
        assert_eq!(fs::read(&path).expect("read"), b"new contents");
        assert!(!tmp_path(&path).exists());
        // A failed write leaves the old file alone and no temporary behind.
        let missing = dir.join("no-such-dir").join("state");
        assert!(write_atomic(&missing, b"x").is_err());
        assert!(!tmp_path(&missing).exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
