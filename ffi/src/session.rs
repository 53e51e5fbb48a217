//! The session API: btcore's std host (sockets, files, disk and hashing threads) behind
//! an opaque `btcore_session`.
//!
//! Threading: every `btcore_session_*` call may be made from any thread; calls are
//! serialized on an internal lock. The loop runs either on the session's own thread
//! (`btcore_session_start`/`_stop`) or inside `btcore_session_poll`, called by the
//! application's loop. The notify callback is called with no lock held, so it may call
//! back into the session.
use crate::error::Failure;
use crate::*;
use btcore_core::session::TorrentId;
use btcore_host::client::{Client, ClientError, ClientOptions};
use btcore_host::encryption::Encryption;
use std::ffi::c_void;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// An opaque session: the std host with its sockets, files and worker threads.
/// Made by `btcore_session_new`, freed by `btcore_session_free`.
#[derive(Debug)]
pub struct btcore_session {
    _private: [u8; 0],
}

/// How a session runs. Fill it with `btcore_settings_default()` first, then change
/// what you need: later versions may add fields at the end.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct btcore_settings {
    /// Where torrents' files go (created if missing). NULL: the current directory.
    pub download_dir: *const c_char,
    /// Where resume files go (created if missing): a torrent added again later starts
    /// from the pieces recorded there, after a check. NULL: no resume data.
    pub state_dir: *const c_char,
    /// The address to listen on, e.g. `"127.0.0.1"` or `"::"`. NULL: `"0.0.0.0"`.
    pub listen_address: *const c_char,
    /// The TCP listen port (0: any free port; see `btcore_session_listen_port`).
    pub listen_port: u16,
    /// The small-device profile: fewer peers, smaller buffers, fewer blocks in flight.
    pub low_memory: bool,
    /// Whether to ask the torrents' trackers for peers.
    pub use_trackers: bool,
    /// Most connections per torrent (0: the default, 50; 20 with `low_memory`).
    pub max_peers_per_torrent: u32,
    /// Disk worker threads (0: the default, 2).
    pub disk_threads: u32,
    /// Download rate limit in bytes/s (0: none).
    pub download_rate_limit: u64,
    /// Upload rate limit in bytes/s (0: none).
    pub upload_rate_limit: u64,
    /// Seed for the engine's random choices (0: from the clock).
    pub random_seed: u64,
    /// Protocol encryption (MSE/PE): one of `BTCORE_ENCRYPTION_*` (0, the default:
    /// `BTCORE_ENCRYPTION_PREFERRED`).
    pub encryption: u32,
    /// The Mainline DHT (BEP 5) for public torrents: 1 (the default) on, 0 off. Its
    /// routing table is kept in `state_dir` (`dht.state`) when there is one.
    pub enable_dht: u8,
    /// Local service discovery (BEP 14, multicast on the LAN) for public torrents: 1
    /// on, 0 (the default) off: it reaches every machine of the local network.
    pub enable_lsd: u8,
    /// Peer exchange (BEP 11) for public torrents: 1 (the default) on, 0 off.
    pub enable_pex: u8,
    /// The DHT's UDP port (0, the default: the TCP listen port).
    pub dht_port: u16,
    /// Most connections over all torrents (0: the default, 200; 50 with
    /// `low_memory`). Lowered while running, the least useful connections over it are
    /// closed.
    pub max_connections: u32,
    /// The DHT nodes to join through, `"host:port,host:port"` (at most 32; names are
    /// resolved when the DHT starts). NULL, the default: the public routers.
    pub dht_bootstrap: *const c_char,
    /// Most bytes received from peers and not yet written to disk (0: the default,
    /// 1 MiB; 512 KiB with `low_memory`): no block is requested past it, and reading
    /// from peers pauses at twice it until writes complete.
    pub disk_queue_bytes: u64,
    /// Most torrents downloading at a time; the others wait
    /// (`BTCORE_STATE_QUEUED_DOWNLOAD`) in queue order (`btcore_session_queue_move`)
    /// and start as slots free. Paused torrents, those started with
    /// `btcore_session_start_now` and stalled ones do not count. 0 (the default): no
    /// queue (Transmission's `download-queue-size`).
    pub download_queue_size: u32,
    /// The same for finished torrents (`BTCORE_STATE_QUEUED_SEED`; 0, the default:
    /// no queue; `seed-queue-size`).
    pub seed_queue_size: u32,
    /// A running torrent that moved no payload for this many minutes is stalled: it
    /// runs on but no longer counts in its queue (30, the default; 0: never;
    /// `queue-stalled-minutes`).
    pub queue_stalled_minutes: u32,
    /// A finished torrent that uploaded nothing for this many minutes is paused
    /// (`BTCORE_EVENT_IDLE_LIMIT_REACHED`), unless it has a limit of its own
    /// (`btcore_session_set_idle_limit`). 0 (the default): none
    /// (`idle-seeding-limit`).
    pub seed_idle_minutes: u32,
    /// Download rate limit in bytes/s while the alternative ("turtle") limits apply
    /// (0: none).
    pub alt_download_rate_limit: u64,
    /// Upload rate limit in bytes/s while the alternative limits apply (0: none).
    pub alt_upload_rate_limit: u64,
    /// The alternative limits on (1) or off (0, the default); with a schedule, it
    /// turns them on and off at its edges. Given again unchanged to
    /// `btcore_session_apply_settings`, what the schedule set stays.
    pub alt_speed_enabled: u8,
    /// The schedule on (1) or off (0, the default): the alternative limits apply from
    /// `alt_speed_begin_minute` to `alt_speed_end_minute` (local time) on the days of
    /// `alt_speed_days`.
    pub alt_speed_schedule: u8,
    /// The days the schedule's span begins on: Sunday 1, Monday 2, ... Saturday 64
    /// (Transmission's bits; 127, the default: every day).
    pub alt_speed_days: u8,
    /// The first minute of the span (0 = 00:00 ... 1439; the default 540, 09:00).
    pub alt_speed_begin_minute: u16,
    /// The minute the span ends, not included (at or before the beginning: the next
    /// day; equal: a whole day; the default 1020, 17:00).
    pub alt_speed_end_minute: u16,
}

/// Most nodes in `btcore_settings.dht_bootstrap`.
/// cbindgen:ignore
const MAX_BOOTSTRAP_NODES: usize = 32;

/// Dial with an encryption handshake first (plain text or RC4 after it, as the peer
/// picks; plain text when it allows) and fall back to plain text; accept both. The
/// default, as in libtorrent and Transmission.
pub const BTCORE_ENCRYPTION_PREFERRED: u32 = 0;
/// Accept encrypted peers, dial in plain text.
pub const BTCORE_ENCRYPTION_ALLOWED: u32 = 1;
/// RC4 on every connection; plain peers are refused.
pub const BTCORE_ENCRYPTION_REQUIRED: u32 = 2;
/// Plain BitTorrent only; encrypted peers are refused.
pub const BTCORE_ENCRYPTION_DISABLED: u32 = 3;

/// Called when events become available (the queue went from empty to non-empty):
/// `userdata` is the pointer given to `btcore_session_set_notify`. It runs on the
/// session's thread (after `btcore_session_start`) or inside the call that produced
/// the events; it should only wake the application's loop, which then calls
/// `btcore_session_events`. No lock is held while it runs.
pub type btcore_notify_callback = Option<extern "C" fn(userdata: *mut c_void)>;

/// Fills `out` with the defaults: current directory, no state directory, listen on
/// 0.0.0.0:6881, trackers, DHT and PEX on, LSD off, 50 peers per torrent and 200 in
/// all, a 1 MiB disk queue, 2 disk threads, no rate limits, encryption preferred.
/// Thread-safe.
///
/// # Safety
///
/// `out` is NULL or valid for writing one `btcore_settings`.
#[no_mangle]
pub unsafe extern "C" fn btcore_settings_default(out: *mut btcore_settings) -> btcore_result {
    guard(|| {
        let out = non_null(out)?;
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(default_settings()) };
        Ok(())
    })
}

fn default_settings() -> btcore_settings {
    btcore_settings {
        download_dir: std::ptr::null(),
        state_dir: std::ptr::null(),
        listen_address: std::ptr::null(),
        listen_port: ClientOptions::default().listen.port(),
        low_memory: false,
        use_trackers: true,
        max_peers_per_torrent: 0,
        disk_threads: 0,
        download_rate_limit: 0,
        upload_rate_limit: 0,
        random_seed: 0,
        encryption: BTCORE_ENCRYPTION_PREFERRED,
        enable_dht: 1,
        enable_lsd: 0,
        enable_pex: 1,
        dht_port: 0,
        max_connections: 0,
        dht_bootstrap: std::ptr::null(),
        disk_queue_bytes: 0,
        download_queue_size: 0,
        seed_queue_size: 0,
        queue_stalled_minutes: 30,
        seed_idle_minutes: 0,
        alt_download_rate_limit: 0,
        alt_upload_rate_limit: 0,
        alt_speed_enabled: 0,
        alt_speed_schedule: 0,
        alt_speed_days: btcore_core::alt_speed::ALL_DAYS,
        alt_speed_begin_minute: 9 * 60,
        alt_speed_end_minute: 17 * 60,
    }
}

/// The host's options for `s`.
///
/// # Safety
/// The strings of `s` are NULL or NUL-terminated.
pub(crate) unsafe fn client_options(s: &btcore_settings) -> Result<ClientOptions, Failure> {
    let mut opts = ClientOptions::default();
    // SAFETY: `s` gives NULL or NUL-terminated strings, as this function's contract
    // requires.
    if let Some(d) = unsafe { opt_path(s.download_dir) }? {
        opts.save_dir = d;
    }
    // SAFETY: as above.
    opts.state_dir = unsafe { opt_path(s.state_dir) }?;
    // SAFETY: as above.
    let ip: IpAddr = match unsafe { opt_path(s.listen_address) }? {
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(a) => a.to_str().and_then(|a| a.parse().ok()).ok_or_else(|| {
            Failure::new(
                BTCORE_INVALID_PARAMETER,
                "listen_address is not an IP address",
            )
            .subject(BTCORE_SUBJECT_ADDRESS, a.as_os_str().as_encoded_bytes())
        })?,
    };
    opts.listen = SocketAddr::new(ip, s.listen_port);
    opts.low_memory = s.low_memory;
    opts.use_trackers = s.use_trackers;
    opts.max_peers = match s.max_peers_per_torrent {
        0 if s.low_memory => 20,
        0 => opts.max_peers,
        n => n as usize,
    };
    opts.max_connections = s.max_connections as usize;
    opts.max_disk_queue = usize::try_from(s.disk_queue_bytes).unwrap_or(usize::MAX);
    if s.disk_threads != 0 {
        opts.disk_threads = s.disk_threads.min(64) as usize;
    }
    opts.download_limit = s.download_rate_limit;
    opts.upload_limit = s.upload_rate_limit;
    opts.seed = s.random_seed;
    opts.encryption = match s.encryption {
        BTCORE_ENCRYPTION_PREFERRED => Encryption::Preferred,
        BTCORE_ENCRYPTION_ALLOWED => Encryption::Allowed,
        BTCORE_ENCRYPTION_REQUIRED => Encryption::Required,
        BTCORE_ENCRYPTION_DISABLED => Encryption::Disabled,
        _ => {
            return Err(Failure::new(
                BTCORE_INVALID_PARAMETER,
                "encryption is not one of BTCORE_ENCRYPTION_*",
            ))
        }
    };
    opts.pex = flag(s.enable_pex)?;
    opts.lsd = flag(s.enable_lsd)?;
    let nonzero = |n: u32| Some(n).filter(|&n| n > 0);
    opts.download_queue = nonzero(s.download_queue_size);
    opts.seed_queue = nonzero(s.seed_queue_size);
    opts.queue_stalled_minutes = nonzero(s.queue_stalled_minutes);
    opts.seed_idle_minutes = nonzero(s.seed_idle_minutes);
    opts.alt_download_limit = s.alt_download_rate_limit;
    opts.alt_upload_limit = s.alt_upload_rate_limit;
    opts.alt_speed_enabled = flag(s.alt_speed_enabled)?;
    let day = 24 * 60;
    if s.alt_speed_begin_minute >= day || s.alt_speed_end_minute >= day || s.alt_speed_days > 127 {
        return Err(Failure::new(
            BTCORE_INVALID_PARAMETER,
            "alt_speed minutes past 1439 or days past 127",
        ));
    }
    opts.alt_speed_schedule =
        flag(s.alt_speed_schedule)?.then_some(btcore_core::alt_speed::Schedule {
            begin_minute: s.alt_speed_begin_minute,
            end_minute: s.alt_speed_end_minute,
            days: s.alt_speed_days,
        });
    // SAFETY: as above.
    let bootstrap = unsafe { bootstrap_nodes(s.dht_bootstrap) }?;
    opts.dht = flag(s.enable_dht)?.then(|| btcore_host::dht::DhtOptions {
        port: s.dht_port,
        bootstrap,
        state_dir: opts.state_dir.clone(),
        low_memory: s.low_memory,
    });
    Ok(opts)
}

/// A 0/1 switch; anything else is refused (room for values with a meaning later).
fn flag(v: u8) -> Result<bool, btcore_result> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(BTCORE_INVALID_PARAMETER),
    }
}

/// `"host:port,host:port"` (NULL: none, the default routers).
///
/// # Safety
/// `p` is NULL or NUL-terminated.
unsafe fn bootstrap_nodes(p: *const c_char) -> Result<Vec<String>, btcore_result> {
    if p.is_null() {
        return Ok(Vec::new());
    }
    // SAFETY: not NULL (checked above); the caller promises a NUL-terminated string.
    let s = unsafe { std::ffi::CStr::from_ptr(p) };
    let s = s.to_str().map_err(|_| BTCORE_INVALID_PARAMETER)?;
    let nodes: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    // Each is `host:port` with a port: no name resolution for what cannot work.
    let well_formed = |n: &String| {
        n.rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0))
    };
    if nodes.len() > MAX_BOOTSTRAP_NODES || !nodes.iter().all(well_formed) {
        return Err(BTCORE_INVALID_PARAMETER);
    }
    Ok(nodes)
}

struct Notify {
    cb: extern "C" fn(*mut c_void),
    userdata: *mut c_void,
}

// SAFETY: the application promises (header docs) that `userdata` may be used from the
// thread the callback runs on.
unsafe impl Send for Notify {}

struct State {
    events: EventQueue,
    notify: Option<Notify>,
}

pub(crate) struct Shared {
    client: Mutex<Client>,
    state: Mutex<State>,
    /// The last failure of a call on this session (see `btcore_session_last_error`).
    last_error: crate::error::Slot,
    /// API callers waiting for the client lock: the loop thread steps aside for them.
    waiting: AtomicUsize,
    stop: AtomicBool,
}

/// cbindgen:ignore
pub(crate) struct SessionBox {
    pub(crate) shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, btcore_result> {
    m.lock().map_err(|_| BTCORE_PANIC)
}

impl Shared {
    pub(crate) fn client(&self) -> Result<MutexGuard<'_, Client>, btcore_result> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let g = lock(&self.client);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        g
    }

    /// Moves the client's events into the queue; returns whether to notify.
    fn collect(&self, client: &mut Client, extra: &[btcore_event]) -> Result<bool, btcore_result> {
        let events = client.take_events();
        let mut st = lock(&self.state)?;
        let mut notify = false;
        for e in extra {
            notify |= st.events.push(*e);
        }
        for e in &events {
            let Some((ev, mut detail)) = convert_event(e) else {
                continue;
            };
            // A disk error's file and OS error number are the host's.
            if let btcore_core::session::Event::DiskFailed(t, _) = e {
                detail = client.disk_error(*t).map(|d| disk_failure(ev.error, d));
            }
            notify |= st.events.push_with(ev, detail);
        }
        Ok(notify && st.notify.is_some())
    }

    /// Calls the notify callback, with no lock held.
    fn notify(&self, needed: bool) {
        if !needed {
            return;
        }
        let cb = match self.state.lock() {
            Ok(st) => st.notify.as_ref().map(|n| (n.cb, n.userdata)),
            Err(_) => None,
        };
        if let Some((cb, userdata)) = cb {
            cb(userdata);
        }
    }

    /// One turn of the loop.
    fn step(&self, wait: Duration) -> Result<(), crate::error::Failure> {
        let needed = {
            let mut c = lock(&self.client)?;
            c.run_once(wait)
                .map_err(|e| crate::error::Failure::io(BTCORE_IO, &e))?;
            self.collect(&mut c, &[])?
        };
        self.notify(needed);
        Ok(())
    }
}

/// The session behind a handle, once the live-handle set knows it.
///
/// # Safety
/// `p` is NULL, not a live handle (refused without a read), or a live session handle
/// that no `btcore_session_free` frees while the reference is used.
pub(crate) unsafe fn session<'a>(
    p: *const btcore_session,
) -> Result<&'a SessionBox, btcore_result> {
    if p.is_null() {
        return Err(BTCORE_NULL_PARAMETER);
    }
    if !is_live_handle(p.cast(), HandleKind::Session) {
        return Err(BTCORE_WRONG_HANDLE);
    }
    // SAFETY: a live session handle is a `SessionBox` made by `Box::into_raw` in
    // `btcore_session_new` and not freed yet (the caller makes no call that races with
    // its free, as the API requires).
    let b = unsafe { &*(p as *const SessionBox) };
    crate::error::attach(&b.shared.last_error);
    Ok(b)
}

/// The detail of a client error: the OS error number, the byte offset and cause of a
/// parse error, the file of a storage error.
pub(crate) fn client_failure(e: &ClientError) -> Failure {
    use btcore_core::session::AddError;
    match e {
        ClientError::Io(io) => Failure::io(BTCORE_IO, io),
        ClientError::Add(AddError::Duplicate(_)) => Failure::new(BTCORE_DUPLICATE_TORRENT, e),
        ClientError::Add(AddError::Magnet(_)) => Failure::new(BTCORE_INVALID_MAGNET, e),
        ClientError::Add(AddError::Metainfo(m)) => {
            Failure::new(BTCORE_INVALID_TORRENT, m).at(m.offset)
        }
        ClientError::Add(_) => Failure::new(BTCORE_INVALID_TORRENT, e),
        ClientError::Storage(s) => disk_failure(BTCORE_STORAGE, s),
    }
}

/// The detail of a storage error: its file, its OS error number and the system's words.
fn disk_failure(code: btcore_result, e: &btcore_host::storage::StorageError) -> Failure {
    let f = Failure::new(code, e).errno(e.os_error);
    match &e.path {
        Some(p) => f.path(p),
        None => f,
    }
}

/// Creates a session from `settings` (NULL: the defaults) and writes it to `*out`.
/// Binds the listen socket and starts the disk (and tracker) threads; the loop itself
/// runs only in `btcore_session_poll` or after `btcore_session_start`. Free it with
/// `btcore_session_free`. Thread-safe.
///
/// # Safety
///
/// - `settings` is NULL or valid for reading one `btcore_settings` whose strings are NULL
///   or NUL-terminated.
/// - `out` is NULL or valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_new(
    settings: *const btcore_settings,
    out: *mut *mut btcore_session,
) -> btcore_result {
    guard_detail(|| {
        let out = non_null(out)?;
        let s = if settings.is_null() {
            default_settings()
        } else {
            // SAFETY: `settings` is non-NULL (checked above) and valid for one read, as
            // this function's contract requires.
            unsafe { *settings }
        };
        // SAFETY: `settings` gives NULL or NUL-terminated strings, as this function's
        // contract requires.
        let opts = unsafe { client_options(&s) }?;
        let dir = |d: &std::path::Path| {
            std::fs::create_dir_all(d).map_err(|e| Failure::io(BTCORE_IO, &e).path(d))
        };
        dir(&opts.save_dir)?;
        if let Some(d) = &opts.state_dir {
            dir(d)?;
        }
        let listen = opts.listen;
        // The client's I/O errors at its start are those of its listen socket.
        let client = Client::new(opts).map_err(|e| match &e {
            ClientError::Io(_) => client_failure(&e).addr(listen),
            _ => client_failure(&e),
        })?;
        let b = Box::new(SessionBox {
            shared: Arc::new(Shared {
                client: Mutex::new(client),
                state: Mutex::new(State {
                    events: EventQueue::default(),
                    notify: None,
                }),
                last_error: crate::error::Slot::default(),
                waiting: AtomicUsize::new(0),
                stop: AtomicBool::new(false),
            }),
            thread: Mutex::new(None),
        });
        let p = Box::into_raw(b) as *mut btcore_session;
        register_handle(p.cast_const().cast(), HandleKind::Session);
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(p) };
        Ok(())
    })
}

fn stop_thread(b: &SessionBox) -> Result<bool, btcore_result> {
    let handle = lock(&b.thread)?.take();
    let Some(h) = handle else { return Ok(false) };
    b.shared.stop.store(true, Ordering::SeqCst);
    let r = h.join();
    b.shared.stop.store(false, Ordering::SeqCst);
    r.map_err(|_| BTCORE_PANIC)?;
    Ok(true)
}

/// Stops the session's thread if running, closes every connection, announces
/// `stopped` to trackers (waiting up to 3 s), writes resume data, and frees the
/// session. NULL, or a session already freed, is a no-op. Must not be called from the
/// notify callback; no other call on this session may run meanwhile; calls after it
/// get `BTCORE_WRONG_HANDLE`.
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new`. A handle already freed, or any
/// pointer the library did not make, is refused by a look-up in the library's set of live
/// handles without being read; no other call on the handle may run meanwhile.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_free(session: *mut btcore_session) {
    let _ = guard(|| {
        if session.is_null() {
            return Ok(());
        }
        if !unregister_handle(session.cast_const().cast(), HandleKind::Session) {
            return Err(BTCORE_WRONG_HANDLE);
        }
        // SAFETY: made by `Box::into_raw` in `btcore_session_new` and live until the
        // line above, which only one free can pass.
        let b = unsafe { Box::from_raw(session as *mut SessionBox) };
        let _ = stop_thread(&b);
        if let Ok(mut c) = b.shared.client.lock() {
            c.shutdown();
        }
        drop(b);
        Ok(())
    });
}

/// Writes the TCP port the session listens on to `*out` (useful with port 0).
/// Thread-safe.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `out` is NULL or valid for writing one `u16`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_listen_port(
    session: *const btcore_session,
    out: *mut u16,
) -> btcore_result {
    guard(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        let out = non_null(out)?;
        let port = b.shared.client()?.local_addr().port();
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(port) };
        Ok(())
    })
}

/// Adds a torrent with `f` and writes its id to `*out_id`.
///
/// # Safety
/// `out_id` is NULL or valid for writing one `u32`.
unsafe fn add_with(
    b: &SessionBox,
    out_id: *mut u32,
    f: impl FnOnce(&mut Client) -> Result<TorrentId, ClientError>,
) -> Result<(), Failure> {
    let out_id = non_null(out_id)?;
    let (id, needed) = {
        let mut c = b.shared.client()?;
        let id = f(&mut c).map_err(|e| client_failure(&e))?;
        let added = btcore_event::new(BTCORE_EVENT_TORRENT_ADDED, id.0);
        let needed = b.shared.collect(&mut c, &[added])?;
        (id, needed)
    };
    b.shared.notify(needed);
    // SAFETY: `out_id` is non-NULL (checked above) and valid for one write, as this
    // function's contract requires.
    unsafe { out_id.write(id.0) };
    Ok(())
}

/// Adds the `.torrent` file at `path`, saving into `save_dir` (NULL: the session's
/// download directory); writes the torrent's id to `*out_id`. The call returns at
/// once, without hashing: data already in the directory is checked on a thread of the
/// session, one torrent at a time, while the torrent reads `BTCORE_STATE_CHECKING` (no
/// peers, no announce); then it downloads or seeds (see its status and events). With a
/// state directory, resume data whose files are unchanged skips that check.
/// Thread-safe.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `path` is NULL or points to a NUL-terminated string.
/// - `save_dir` is NULL or points to a NUL-terminated string.
/// - `out_id` is NULL or valid for writing one `u32`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_add_torrent_file(
    session: *mut btcore_session,
    path: *const c_char,
    save_dir: *const c_char,
    out_id: *mut u32,
) -> btcore_result {
    guard_detail(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        // SAFETY: `path` is NULL or NUL-terminated, as this function's contract requires.
        let path = unsafe { opt_path(path) }?.ok_or(BTCORE_NULL_PARAMETER)?;
        // SAFETY: `save_dir` is NULL or NUL-terminated, as this function's contract
        // requires.
        let save_dir = unsafe { opt_path(save_dir) }?;
        non_null(out_id)?;
        let data = btcore_host::read_torrent_file(&path).map_err(|e| {
            match &e {
                btcore_host::LoadError::Io(io) => Failure::io(BTCORE_IO, io),
                btcore_host::LoadError::TooLarge(_) => Failure::new(BTCORE_INVALID_TORRENT, &e),
            }
            .path(&path)
        })?;
        // SAFETY: `out_id` is NULL or valid for one write, as this function's contract
        // requires.
        unsafe {
            add_with(b, out_id, |c| {
                c.add_torrent_file(&data, save_dir.as_deref())
            })
        }
        .map_err(|f| {
            // A parse error names the file it is in.
            if f.subject.is_empty() {
                f.path(&path)
            } else {
                f
            }
        })
    })
}

/// Adds a torrent from `len` bytes of `.torrent` data at `data` (copied), saving into
/// `save_dir` (NULL: the session's download directory); writes its id to `*out_id`.
/// The call returns at once, without hashing: data already in the directory is
/// checked on a thread of the session while the torrent reads `BTCORE_STATE_CHECKING`
/// (no peers, no announce); then it downloads or seeds (see its status and events).
/// Thread-safe.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `data` is valid for reads of `len` bytes (it may be NULL when `len` is 0).
/// - `save_dir` is NULL or points to a NUL-terminated string.
/// - `out_id` is NULL or valid for writing one `u32`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_add_torrent_bytes(
    session: *mut btcore_session,
    data: *const u8,
    len: usize,
    save_dir: *const c_char,
    out_id: *mut u32,
) -> btcore_result {
    guard_detail(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        // SAFETY: `data` is valid for reads of `len` bytes or `len` is 0, as this
        // function's contract requires.
        let data = unsafe { bytes(data, len) }?;
        // SAFETY: `save_dir` is NULL or NUL-terminated, as this function's contract
        // requires.
        let save_dir = unsafe { opt_path(save_dir) }?;
        if data.len() as u64 > btcore_host::MAX_TORRENT_FILE {
            return Err(Failure::new(
                BTCORE_INVALID_TORRENT,
                format_args!(
                    "{} bytes, larger than the {} a torrent may have",
                    data.len(),
                    btcore_host::MAX_TORRENT_FILE
                ),
            ));
        }
        // SAFETY: `out_id` is NULL or valid for one write, as this function's contract
        // requires.
        unsafe { add_with(b, out_id, |c| c.add_torrent_file(data, save_dir.as_deref())) }
    })
}

/// Adds the torrent whose `.torrent` is at `url` (`http://`, or `https://` in a build
/// with TLS), saving into `save_dir` (NULL: the session's download directory); writes
/// its id to `*out_id`. The file is downloaded on the calling thread, without holding
/// the session (which runs on meanwhile): redirects followed (at most 5), the whole
/// exchange within `timeout_ms` (0: 30 s), at most the 64 MiB a `.torrent` may have.
/// `BTCORE_IO` with the detail when the download fails (a status other than 200, a
/// timeout, a refused connection); then as `btcore_session_add_torrent_bytes`.
/// Thread-safe.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `url` is NULL or points to a NUL-terminated string.
/// - `save_dir` is NULL or points to a NUL-terminated string.
/// - `out_id` is NULL or valid for writing one `u32`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_add_torrent_url(
    session: *mut btcore_session,
    url: *const c_char,
    save_dir: *const c_char,
    timeout_ms: u32,
    out_id: *mut u32,
) -> btcore_result {
    guard_detail(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        // SAFETY: `url` is NULL or NUL-terminated, as this function's contract requires.
        let url = unsafe { cstr(url) }?
            .to_str()
            .map_err(|_| Failure::new(BTCORE_INVALID_PARAMETER, "the URL is not UTF-8"))?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Failure::new(
                BTCORE_INVALID_PARAMETER,
                format_args!("{url}: not an http:// or https:// URL"),
            ));
        }
        // SAFETY: `save_dir` is NULL or NUL-terminated, as this function's contract
        // requires.
        let save_dir = unsafe { opt_path(save_dir) }?;
        let timeout = match timeout_ms {
            0 => std::time::Duration::from_secs(30),
            ms => std::time::Duration::from_millis(u64::from(ms)),
        };
        let data = btcore_host::tracker::fetch(url, btcore_host::MAX_TORRENT_FILE, timeout)
            .map_err(|e| Failure::new(BTCORE_IO, format_args!("{url}: {e}")))?;
        // SAFETY: `out_id` is NULL or valid for one write, as this function's contract
        // requires.
        unsafe {
            add_with(b, out_id, |c| {
                c.add_torrent_file(&data, save_dir.as_deref())
            })
        }
    })
}

/// Adds a magnet link (`magnet:?xt=urn:btih:...`), saving into `save_dir` (NULL: the
/// session's download directory); writes its id to `*out_id`. The call returns at
/// once; the torrent is in `BTCORE_STATE_FETCHING_METADATA` until
/// `BTCORE_EVENT_METADATA_RECEIVED`, then `BTCORE_STATE_CHECKING` while what is
/// already on disk is checked, then downloads.
/// Thread-safe.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `uri` is NULL or points to a NUL-terminated string.
/// - `save_dir` is NULL or points to a NUL-terminated string.
/// - `out_id` is NULL or valid for writing one `u32`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_add_magnet(
    session: *mut btcore_session,
    uri: *const c_char,
    save_dir: *const c_char,
    out_id: *mut u32,
) -> btcore_result {
    guard_detail(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        // SAFETY: `uri` is NULL or NUL-terminated, as this function's contract requires.
        let uri = unsafe { cstr(uri) }?.to_str().map_err(|e| {
            Failure::new(BTCORE_INVALID_MAGNET, "the magnet link is not UTF-8").at(e.valid_up_to())
        })?;
        // SAFETY: `save_dir` is NULL or NUL-terminated, as this function's contract
        // requires.
        let save_dir = unsafe { opt_path(save_dir) }?;
        // SAFETY: `out_id` is NULL or valid for one write, as this function's contract
        // requires.
        unsafe { add_with(b, out_id, |c| c.add_magnet(uri, save_dir.as_deref())) }
    })
}

fn has_torrent(c: &Client, id: u32) -> bool {
    c.torrents().iter().any(|t| t.id.0 == id)
}

/// Gives torrent `id` a peer to connect to: `"host:port"`, `"1.2.3.4:6881"` or
/// `"[::1]:6881"` (a host name is resolved, which may block). Thread-safe.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `address` is NULL or points to a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_add_peer(
    session: *mut btcore_session,
    id: u32,
    address: *const c_char,
) -> btcore_result {
    guard_detail(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        // SAFETY: `address` is NULL or NUL-terminated, as this function's contract
        // requires.
        let a = unsafe { cstr(address) }?
            .to_str()
            .map_err(|_| Failure::new(BTCORE_INVALID_PARAMETER, "the address is not UTF-8"))?;
        let bad = |why: &dyn std::fmt::Display| {
            Failure::new(BTCORE_INVALID_PARAMETER, why)
                .subject(BTCORE_SUBJECT_ADDRESS, a.as_bytes())
        };
        let addr = a
            .to_socket_addrs()
            .map_err(|e| bad(&e))?
            .next()
            .ok_or_else(|| bad(&"the name has no address"))?;
        let needed = {
            let mut c = b.shared.client()?;
            if !has_torrent(&c, id) {
                return Err(BTCORE_NOT_FOUND.into());
            }
            c.add_peer(TorrentId(id), addr);
            b.shared.collect(&mut c, &[])?
        };
        b.shared.notify(needed);
        Ok(())
    })
}

/// Runs `op` on torrent `id` of the session; `op` returns whether the torrent exists.
///
/// # Safety
/// As [`session`] for `session`.
unsafe fn torrent_op(
    session: *mut btcore_session,
    id: u32,
    op: impl FnOnce(&mut Client, TorrentId) -> bool,
) -> btcore_result {
    guard(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        let mut c = b.shared.client()?;
        if op(&mut c, TorrentId(id)) {
            Ok(())
        } else {
            Err(BTCORE_NOT_FOUND)
        }
    })
}

/// Pauses torrent `id`: its peers are closed, `stopped` is announced, nothing is
/// dialed or accepted until `btcore_session_resume`; what it has is kept (state
/// `BTCORE_STATE_PAUSED`). `BTCORE_NOT_FOUND` for an unknown id. Thread-safe.
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
/// frees during the call. A freed handle, one of another type or any other pointer is a
/// checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
/// handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_pause(
    session: *mut btcore_session,
    id: u32,
) -> btcore_result {
    // SAFETY: `session` is NULL or a handle that no free races with, as this function's
    // contract requires; anything else is refused before a read.
    unsafe { torrent_op(session, id, |c, t| c.pause(t)) }
}

/// Resumes a paused torrent (`BTCORE_NOT_FOUND` for an unknown id). Thread-safe.
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
/// frees during the call. A freed handle, one of another type or any other pointer is a
/// checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
/// handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_resume(
    session: *mut btcore_session,
    id: u32,
) -> btcore_result {
    // SAFETY: `session` is NULL or a handle that no free races with, as this function's
    // contract requires; anything else is refused before a read.
    unsafe { torrent_op(session, id, |c, t| c.resume(t)) }
}

/// Removes torrent `id`: closes its peers, announces `stopped`, deletes its resume
/// file and, when `delete_data`, its files. `BTCORE_NOT_FOUND` for an unknown id.
/// Thread-safe.
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
/// frees during the call. A freed handle, one of another type or any other pointer is a
/// checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
/// handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_remove(
    session: *mut btcore_session,
    id: u32,
    delete_data: bool,
) -> btcore_result {
    // SAFETY: `session` is NULL or a handle that no free races with, as this function's
    // contract requires; anything else is refused before a read.
    unsafe { torrent_op(session, id, |c, t| c.remove_torrent(t, delete_data)) }
}

/// Writes resume data for every torrent now (into the settings' state directory, after
/// syncing the data files). Resume files are also written on their own, coalesced, a
/// few seconds after pieces complete, and by `btcore_session_free`. Thread-safe.
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
/// frees during the call. A freed handle, one of another type or any other pointer is a
/// checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
/// handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_save_resume(session: *mut btcore_session) -> btcore_result {
    guard(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        b.shared.client()?.save_resume();
        Ok(())
    })
}

/// Writes the ids of the session's torrents into `ids` (room for `cap`) and their
/// number into `*out_len`. When `cap` is too small, returns `BTCORE_BUFFER_TOO_SMALL`
/// with the number needed in `*out_len` and writes no id. `ids` may be NULL when `cap`
/// is 0. Thread-safe.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `ids` is valid for writes of `cap` `u32`s (it may be NULL when `cap` is 0).
/// - `out_len` is NULL or valid for writing one `usize`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_torrents(
    session: *const btcore_session,
    ids: *mut u32,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        let out_len = non_null(out_len)?;
        // SAFETY: `ids` is valid for writes of `cap` elements or `cap` is 0, as this
        // function's contract requires.
        let dst = unsafe { out_slice(ids, cap) }?;
        let list = b.shared.client()?.torrents();
        // SAFETY: `out_len` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out_len.write(list.len()) };
        if dst.len() < list.len() {
            return Err(BTCORE_BUFFER_TOO_SMALL);
        }
        for (d, t) in dst.iter_mut().zip(&list) {
            *d = t.id.0;
        }
        Ok(())
    })
}

/// Fills `*out` with the status of torrent `id`. Thread-safe.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `out` is NULL or valid for writing one `btcore_torrent_status`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_torrent_status(
    session: *const btcore_session,
    id: u32,
    out: *mut btcore_torrent_status,
) -> btcore_result {
    guard(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        let out = non_null(out)?;
        let view = b
            .shared
            .client()?
            .torrent(TorrentId(id))
            .ok_or(BTCORE_NOT_FOUND)?;
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(torrent_status(id, &view.status, view.checking)) };
        Ok(())
    })
}

/// Writes the v2 info-hash of torrent `id` (BEP 52: the SHA-256 of its info
/// dictionary, 32 bytes; its first 20 bytes are what v2 trackers and the DHT use) to
/// `out` and `true` to `*has_v2` for a hybrid torrent; `false` to `*has_v2` (and
/// nothing to `out`) for a v1 torrent, or a magnet link whose metadata has not arrived.
/// The v1 info-hash is `btcore_torrent_status.info_hash`. Thread-safe.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `out` is NULL or valid for writing 32 bytes.
/// - `has_v2` is NULL or valid for writing one `bool`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_torrent_info_hash_v2(
    session: *const btcore_session,
    id: u32,
    out: *mut u8,
    has_v2: *mut bool,
) -> btcore_result {
    guard(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        let out = non_null(out)?;
        let has_v2 = non_null(has_v2)?;
        let view = b
            .shared
            .client()?
            .torrent(TorrentId(id))
            .ok_or(BTCORE_NOT_FOUND)?;
        // SAFETY: both are non-NULL (checked above) and valid for these writes, as this
        // function's contract requires.
        unsafe { crate::torrent::write_info_hash_v2(view.status.info_hash_v2, out, has_v2) };
        Ok(())
    })
}

/// Copies the name of torrent `id` (bytes from the torrent, usually UTF-8; the
/// info-hash in hex until a magnet link's metadata arrives) into `buf`, NUL-terminated,
/// and its length without the NUL into `*out_len`. When `cap` is too small, returns
/// `BTCORE_BUFFER_TOO_SMALL` with the length needed (without the NUL) in `*out_len`.
/// Thread-safe.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `buf` is valid for writes of `cap` `c_char`s (it may be NULL when `cap` is 0).
/// - `out_len` is NULL or valid for writing one `usize`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_torrent_name(
    session: *const btcore_session,
    id: u32,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        let out_len = non_null(out_len)?;
        // SAFETY: `buf` is valid for writes of `cap` elements or `cap` is 0, as this
        // function's contract requires.
        let dst = unsafe { out_slice(buf as *mut u8, cap) }?;
        let view = b
            .shared
            .client()?
            .torrent(TorrentId(id))
            .ok_or(BTCORE_NOT_FOUND)?;
        let name = view.name.as_bytes();
        let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
        // SAFETY: `out_len` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out_len.write(name.len()) };
        if dst.len() <= name.len() {
            return Err(BTCORE_BUFFER_TOO_SMALL);
        }
        dst[..name.len()].copy_from_slice(name);
        dst[name.len()] = 0;
        Ok(())
    })
}

/// Fills `buf` (room for `cap`) with the peers of torrent `id` and writes their number
/// to `*out_len`. When `cap` is too small, returns `BTCORE_BUFFER_TOO_SMALL` with the
/// number needed in `*out_len`. `buf` may be NULL when `cap` is 0. Thread-safe.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `buf` is valid for writes of `cap` `btcore_peer_status`s (it may be NULL when `cap` is
///   0).
/// - `out_len` is NULL or valid for writing one `usize`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_peers(
    session: *const btcore_session,
    id: u32,
    buf: *mut btcore_peer_status,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        let out_len = non_null(out_len)?;
        // SAFETY: `buf` is valid for writes of `cap` elements or `cap` is 0, as this
        // function's contract requires.
        let dst = unsafe { out_slice(buf, cap) }?;
        let peers = {
            let c = b.shared.client()?;
            if !has_torrent(&c, id) {
                return Err(BTCORE_NOT_FOUND);
            }
            c.peers(TorrentId(id))
        };
        // SAFETY: `out_len` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out_len.write(peers.len()) };
        if dst.len() < peers.len() {
            return Err(BTCORE_BUFFER_TOO_SMALL);
        }
        for (d, p) in dst.iter_mut().zip(&peers) {
            *d = peer_status(p);
        }
        Ok(())
    })
}

/// Moves up to `cap` queued events, oldest first, into `buf` and writes how many to
/// `*out_len` (0 when none are waiting). Events not taken stay queued; the queue holds
/// 4096 and then drops the oldest, reporting `BTCORE_EVENT_DROPPED`. `cap` must be at
/// least 1. Thread-safe.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `buf` is valid for writes of `cap` `btcore_event`s (it may be NULL when `cap` is 0).
/// - `out_len` is NULL or valid for writing one `usize`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_events(
    session: *mut btcore_session,
    buf: *mut btcore_event,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        let out_len = non_null(out_len)?;
        // SAFETY: `buf` is valid for writes of `cap` elements or `cap` is 0, as this
        // function's contract requires.
        let dst = unsafe { out_uninit(buf, cap) }?;
        if dst.is_empty() {
            return Err(BTCORE_BUFFER_TOO_SMALL);
        }
        let n = lock(&b.shared.state)?.events.drain_into(dst);
        // SAFETY: `out_len` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out_len.write(n) };
        Ok(())
    })
}

/// Sets (or with a NULL `callback`, clears) the callback told when events become
/// available; `userdata` is passed back to it. See `btcore_notify_callback` for where
/// it runs. Thread-safe.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `userdata` is not read by the library; the callback receives it on the thread where it
///   runs, so it must be usable from there.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_set_notify(
    session: *mut btcore_session,
    callback: btcore_notify_callback,
    userdata: *mut c_void,
) -> btcore_result {
    guard(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        lock(&b.shared.state)?.notify = callback.map(|cb| Notify { cb, userdata });
        Ok(())
    })
}

/// Runs the session's loop on a thread of its own until `btcore_session_stop` or
/// `btcore_session_free`. Returns `BTCORE_WRONG_STATE` when already running.
/// Thread-safe.
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
/// frees during the call. A freed handle, one of another type or any other pointer is a
/// checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
/// handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_start(session: *mut btcore_session) -> btcore_result {
    guard_detail(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        let mut t = lock(&b.thread)?;
        if t.is_some() {
            return Err(BTCORE_WRONG_STATE.into());
        }
        let shared = b.shared.clone();
        let h = std::thread::Builder::new()
            .name("btcore-session".into())
            .spawn(move || {
                while !shared.stop.load(Ordering::SeqCst) {
                    if shared.step(Duration::from_millis(10)).is_err() {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    // Let waiting API calls take the lock before the next turn.
                    let mut spins = 0;
                    while shared.waiting.load(Ordering::SeqCst) > 0 && spins < 1000 {
                        std::thread::yield_now();
                        spins += 1;
                    }
                }
            })
            .map_err(|e| Failure::io(BTCORE_IO, &e))?;
        *t = Some(h);
        Ok(())
    })
}

/// Stops the session's thread and waits for it (at most one turn of the loop, about
/// 10 ms). Returns `BTCORE_WRONG_STATE` when it was not running. Must not be called
/// from the notify callback. Thread-safe.
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
/// frees during the call. A freed handle, one of another type or any other pointer is a
/// checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
/// handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_stop(session: *mut btcore_session) -> btcore_result {
    guard(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        if stop_thread(b)? {
            Ok(())
        } else {
            Err(BTCORE_WRONG_STATE)
        }
    })
}

/// Runs the loop once from the application's own loop: waits at most `timeout_ms` for
/// network or disk activity, then handles whatever is ready (0: do not wait). Call it
/// at least every 100 ms or so. Returns `BTCORE_WRONG_STATE` while the session's own
/// thread runs. Thread-safe.
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
/// frees during the call. A freed handle, one of another type or any other pointer is a
/// checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
/// handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_poll(
    session: *mut btcore_session,
    timeout_ms: u32,
) -> btcore_result {
    guard_detail(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        if lock(&b.thread)?.is_some() {
            return Err(BTCORE_WRONG_STATE.into());
        }
        b.shared.step(Duration::from_millis(u64::from(timeout_ms)))
    })
}

// ---- error detail (see `crate::error`) ----

/// The last-error slot of a live session handle.
///
/// # Safety
/// As [`session`].
pub(crate) unsafe fn last_error_slot(
    p: *const btcore_session,
) -> Result<crate::error::Slot, btcore_result> {
    // SAFETY: as this function's contract requires.
    let b = unsafe { session(p) }?;
    Ok(b.shared.last_error.clone())
}

/// The detail of a drained event of a live session handle.
///
/// # Safety
/// As [`session`].
pub(crate) unsafe fn event_detail(
    p: *const btcore_session,
    id: u64,
) -> Result<Failure, btcore_result> {
    // SAFETY: as this function's contract requires.
    let b = unsafe { session(p) }?;
    let st = lock(&b.shared.state)?;
    st.events.detail(id).cloned().ok_or(BTCORE_NOT_FOUND)
}

/// Runs `f` on the client of `session` (its lock held), then queues the events it
/// caused and calls the notify callback (with no lock held). For the calls of other
/// modules (`torrent.rs`).
///
/// # Safety
/// As [`session`] for `session`.
pub(crate) unsafe fn with_client<R>(
    session: *const btcore_session,
    f: impl FnOnce(&mut Client) -> Result<R, btcore_result>,
) -> Result<R, btcore_result> {
    // SAFETY: `session` is NULL or a handle that no free races with, as this function's
    // contract requires; anything else is refused before a read.
    let b = unsafe { self::session(session) }?;
    let (r, needed) = {
        let mut c = b.shared.client()?;
        let r = f(&mut c);
        (r, b.shared.collect(&mut c, &[])?)
    };
    b.shared.notify(needed);
    r
}
