//! btcore-host: the std driver of btcore.
//!
//! Today it holds what the `btcore` command needs to read torrents and magnet links
//! and a faster SHA-1 for verification; the event loop, transports, storage and
//! tracker clients land here as the engine grows (see `ARCHITECTURE.md`).

pub mod client;
pub mod create;
pub mod dht;
pub mod disk;
pub mod display;
pub mod encryption;
pub mod hash;
pub mod info;
pub mod lsd;
pub mod os;
pub mod resume;
pub mod storage;
pub mod tracker;
pub mod tracker_server;
mod udp_batch;

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
