//! btcore-host: btcore's std host, the part that does what the core decides.
//!
//! The core (`btcore-core`) is sans-IO: it says what to send, write, read, verify and
//! announce. This crate carries it out with sockets, files, threads and the clock:
//!
//! - [`client`]: the event loop (`Client`), one `mio` poll for every peer of every
//!   torrent, with the disk workers ([`disk`]), each torrent's [`storage`], the resume
//!   files ([`resume`]) and protocol encryption on the sockets ([`encryption`]);
//! - [`tracker`]: the tracker client (HTTP, HTTPS with the `https` feature, UDP);
//! - `dht` (feature `dht`) and `lsd` (feature `lsd`): the DHT node's and Local Service
//!   Discovery's sockets;
//! - `tracker_server` (feature `tracker-server`): the tracker `btcore tracker` runs;
//! - [`portmap`]: port mapping (PCP, NAT-PMP) of the client's ports on the gateway;
//! - [`utp`]: uTP peers (BEP 29) over the UDP port, shared with the DHT when it binds
//!   the same one;
//! - [`webseed`]: the HTTP(S) requests of BEP 19 web seeds;
//! - [`create`]: making `.torrent` files; [`hash`]: the SHA-1 used for verification.
//!
//! The `btcore` command (argument parsing, progress display, subcommands) is the
//! `btcore-cli` crate, and the C ABI (libbtcore) is `btcore-ffi`; both are built on
//! this crate, which links neither a command-line parser nor a logger backend.
//! `ARCHITECTURE.md` describes the layers.

pub mod client;
pub mod create;
#[cfg(feature = "dht")]
pub mod dht;
#[cfg(not(feature = "dht"))]
#[path = "without/dht.rs"]
pub mod dht;
mod dht_report;
pub mod disk;
pub mod encryption;
pub mod hash;
#[cfg(feature = "lsd")]
pub mod lsd;
#[cfg(not(feature = "lsd"))]
#[path = "without/lsd.rs"]
pub mod lsd;
pub mod os;
pub mod portmap;
pub mod resume;
pub mod storage;
pub mod tracker;
#[cfg(feature = "tracker-server")]
pub mod tracker_server;
mod udp_batch;
pub mod utp;
pub mod webseed;

use std::path::Path;

/// The largest `.torrent` file read (libtorrent's `max_buffer_size` is 10 MB; the
/// largest real torrents are a few MB).
pub const MAX_TORRENT_FILE: u64 = 64 << 20;

/// Why a torrent file could not be read.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The file is larger than [`MAX_TORRENT_FILE`].
    TooLarge(u64),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::TooLarge(n) => write!(
                f,
                "file is {n} bytes, larger than the {MAX_TORRENT_FILE} bytes a torrent may have"
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// Reads a `.torrent` file, refusing one larger than [`MAX_TORRENT_FILE`] before reading.
pub fn read_torrent_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(LoadError::Io)?;
    let len = file.metadata().map_err(LoadError::Io)?.len();
    if len > MAX_TORRENT_FILE {
        return Err(LoadError::TooLarge(len));
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.take(MAX_TORRENT_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(LoadError::Io)?;
    if buf.len() as u64 > MAX_TORRENT_FILE {
        return Err(LoadError::TooLarge(buf.len() as u64));
    }
    Ok(buf)
}
