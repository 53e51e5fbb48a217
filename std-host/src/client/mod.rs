//! The std host's event loop: one `mio` poll drives every peer connection of every
//! torrent; disk and hashing run on [`crate::disk::DiskPool`]. Trackers go through
//! [`crate::tracker::TrackerClient`]: each `Action::Announce` names one tracker, and the
//! client performs that one exchange (UDP on this loop, its sockets and timers; HTTP on
//! its threads); each result goes back to the session, which picks the next tracker. The loop wakes on socket readiness, on a waker
//! from the workers, or when the session's, the DHT's or the trackers' `poll_timeout`
//! is due.
//!
//! ```text
//!  loop {
//!      poll(sockets, waker, timeout = session.poll_timeout())
//!      accept / read → session.handle_incoming / handle_recv (while wants_recv;
//!                      ACCEPTS_PER_TURN accepts, READS_PER_TURN reads per
//!                      connection, DHT_READS_PER_TURN datagrams; the rest next turn)
//!      connect done  → session.handle_connected / handle_connect_failed
//!      disk done     → session.handle_write_done / handle_read_done / handle_verified_blocks
//!      tracker UDP   → trackers.on_udp_readable; trackers.handle_timeout (always)
//!      tracker done  → session.handle_peers, session.handle_announced (per exchange)
//!      session.handle_timeout(now) when due
//!      drain session.poll_action(): Connect, Send, Close, Write, Read, Verify, Announce
//!      drain session.poll_event(): progress, resume saving, completion
//!  }
//! ```
//!
//! Ownership: the loop owns the sockets and the [`Session`]; each torrent's
//! [`Storage`] is shared (`Arc`) with the disk workers, who only do positioned reads
//! and writes. Nothing else holds a lock.
//!
//! This file holds the options, the `Client` and its state, its construction and the
//! loop itself ([`Client::run_once`]); each job of the loop has its own file:
//!
//! - `net`: peer sockets (accept, read, flush, dial, handshake expiry, rate limits);
//! - `utp_io`: uTP peers (datagrams in, the uTP socket's news to the session, timers,
//!   datagrams out at the end of each turn);
//! - `actions`: carrying out the session's actions and events;
//! - `torrents`: adding, checking, removing, pausing, resuming torrents; their views;
//! - `workers`: disk completions and tracker results coming back from worker threads;
//! - `settings`: settings changed while running ([`Client::apply_settings`]);
//! - `state`: resume data and shutdown;
//! - `discovery`: the DHT and local service discovery sockets;
//! - `webseed_io`: web seeds (BEP 19): requests started on their threads, their bytes
//!   handed to the session within the disk queue and the rate limits;
//! - `mapping`: port mapping (PCP, NAT-PMP) on the default gateway.
//! - `trackers`: a torrent's trackers as the application sees and edits them (their
//!   status in wall-clock time, reannounce, a new list).
//!
//! Clocks. The session, the DHT and LSD run on the engine's clock,
//! [`btcore_core::time::Instant`]: milliseconds since the client started (`epoch`),
//! read through `Client::now`. The tracker client (its UDP retry timers), the resume
//! writers (how long a file may stay dirty), the rate-limit buckets and `run_until`'s
//! deadline use [`std::time::Instant`] directly, as their APIs take one; the poll
//! timeout is computed from both (the session's due time is a core `Instant`, the
//! trackers' a std one).

use crate::disk::{CheckProgress, DiskPool};
use crate::encryption::{Encryption, KeySource, Link};
use crate::resume::ResumeWriter;
use crate::storage::Storage;
use crate::tracker::{TrackerClient, TrackerConfig};
use btcore_core::bitfield::Bitfield;
use btcore_core::ids::{InfoHash, PeerId};
pub use btcore_core::session::TransportPolicy;
use btcore_core::session::{
    ConnId, Event, Session, SessionConfig, TorrentId, TorrentStatus, RECV_BATCH_MAX_WAIT_MS,
};
use btcore_core::time::Instant;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod actions;
mod control;
mod discovery;
mod mapping;
mod net;
mod queue;
mod settings;
mod state;
mod torrents;
mod trackers;
mod utp_io;
mod webseed_io;
mod workers;

pub use control::{torrent_file, ControlError, FileView, MAX_NAME_LEN};
use net::Bucket;
pub use trackers::TrackerInfo;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const DHT: Token = Token(2);
const LSD: Token = Token(3);
/// The tracker client's UDP sockets (IPv4, IPv6).
const TRACKER_UDP: [Token; 2] = [Token(4), Token(5)];
/// The uTP socket, when it does not share the DHT's.
const UTP: Token = Token(6);
/// Its IPv6 twin beside an IPv4 one on `0.0.0.0`.
const UTP6: Token = Token(9);
/// The DHT's IPv6 socket, beside its IPv4 one (BEP 32).
const DHT6: Token = Token(7);
/// The IPv6 twin of a listener on `0.0.0.0` ([`bind_v6_twin`]).
const LISTENER6: Token = Token(10);
/// The port mapping socket (to the gateway).
const PORTMAP: Token = Token(8);
/// The UPnP search socket (answers from the gateway).
const PORTMAP_UPNP: Token = Token(11);
/// The port mapping and UPnP sockets of the mapper of a DHT on a port of its own.
const PORTMAP_DHT: Token = Token(12);
const PORTMAP_DHT_UPNP: Token = Token(13);
const FIRST_CONN: usize = 16;

/// How the client runs.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Where torrents' files go.
    pub save_dir: PathBuf,
    /// Where resume files go (None: no resume data).
    pub state_dir: Option<PathBuf>,
    /// The small-device profile.
    pub low_memory: bool,
    /// Most connections per torrent (0: the profile's default).
    pub max_peers: usize,
    /// Most connections over all torrents (0: the profile's default, 200 or 50).
    pub max_connections: usize,
    /// Disk worker threads ([`DEFAULT_DISK_THREADS`] by default).
    pub disk_threads: usize,
    /// Most bytes received and not yet written (0: the profile's default, 1 MiB or
    /// 512 KiB): no block is requested past it, and reading from peers pauses at twice
    /// it until writes complete (libtorrent's `max_queued_disk_bytes`).
    pub max_disk_queue: usize,
    /// Whether to ask trackers for peers.
    pub use_trackers: bool,
    /// Seed for the engine's random choices (0: from the clock).
    pub seed: u64,
    /// Download rate limit in bytes/s (0: none).
    pub download_limit: u64,
    /// Upload rate limit in bytes/s (0: none).
    pub upload_limit: u64,
    /// The Mainline DHT (None: off). Never used for private torrents.
    pub dht: Option<crate::dht::DhtOptions>,
    /// BEP 14 local service discovery (multicast on the LAN). Off by default: it
    /// reaches every machine on the local network. Never used for private torrents.
    pub lsd: bool,
    /// Protocol encryption (MSE/PE) policy.
    pub encryption: Encryption,
    /// Peer exchange (BEP 11) with peers of public torrents.
    pub pex: bool,
    /// Most torrents downloading at a time; the others wait queued (None: no queue;
    /// Transmission's `download-queue-size`).
    pub download_queue: Option<u32>,
    /// Most finished torrents seeding at a time (None: no queue; `seed-queue-size`).
    pub seed_queue: Option<u32>,
    /// Minutes without payload after which a running torrent no longer counts in its
    /// queue (None: never; `queue-stalled-minutes`, 30 by default).
    pub queue_stalled_minutes: Option<u32>,
    /// Minutes without upload after which a finished torrent stops seeding, for the
    /// torrents without a limit of their own (None: none; `idle-seeding-limit`).
    pub seed_idle_minutes: Option<u32>,
    /// Download rate limit in bytes/s while the alternative ("turtle") limits apply
    /// (0: none).
    pub alt_download_limit: u64,
    /// Upload rate limit in bytes/s while the alternative limits apply (0: none).
    pub alt_upload_limit: u64,
    /// The alternative limits on (Transmission's `alt-speed-enabled`); a schedule
    /// turns them on and off on its edges.
    pub alt_speed_enabled: bool,
    /// When the alternative limits apply by themselves, in local time (None: only by
    /// hand; `alt-speed-time-*`).
    pub alt_speed_schedule: Option<btcore_core::alt_speed::Schedule>,
    /// Peer transports: [`TransportPolicy::Both`] (the default, as libtorrent and
    /// Transmission) dials uTP first and falls back to TCP; `UtpOnly` dials uTP only;
    /// `TcpOnly` has no uTP at all (no UDP socket for it, no incoming uTP). Incoming
    /// uTP is taken under `Both` and `UtpOnly`, on the UDP port of the listen port's
    /// number (shared with the DHT when it binds the same).
    pub transport: TransportPolicy,
    /// Download from the torrents' web seeds (BEP 19 `url-list`, a magnet link's
    /// `ws`) over HTTP and HTTPS (on by default).
    pub web_seeds: bool,
    /// Ask the default gateway to forward the listen port (TCP) and the UDP port, with
    /// PCP or NAT-PMP (None: off, the default of the library; the command turns it on).
    /// Failures are status lines ([`Client::take_port_mapping_lines`]), never errors.
    pub port_mapping: Option<crate::portmap::PortMapOptions>,
}

/// Socket reads of one connection in one turn of the loop: one peer that keeps its
/// socket full cannot keep the loop from the others (with a 64 KiB buffer, 1 MiB a
/// turn). Edge-triggered readiness is not lost: a connection that used them is read
/// again next turn.
pub const READS_PER_TURN: usize = 16;

/// Connections accepted in one turn of the loop: a connect flood cannot keep the loop
/// from reading its peers. The rest wait in the kernel's backlog for the next turn.
pub const ACCEPTS_PER_TURN: usize = 32;

/// DHT datagrams handled in one turn of the loop: a flood on the DHT port cannot keep
/// the loop from its peers. The rest wait in the socket's buffer for the next turn
/// (and past it are dropped by the kernel, as on a lossy network).
pub const DHT_READS_PER_TURN: usize = 256;

/// Disk workers of a client unless told otherwise.
pub const DEFAULT_DISK_THREADS: usize = 2;

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 6881),
            save_dir: PathBuf::from("."),
            state_dir: None,
            low_memory: false,
            max_peers: 0,
            max_connections: 0,
            disk_threads: DEFAULT_DISK_THREADS,
            max_disk_queue: 0,
            use_trackers: true,
            seed: 0,
            download_limit: 0,
            upload_limit: 0,
            dht: None,
            lsd: false,
            encryption: Encryption::default(),
            pex: true,
            download_queue: None,
            seed_queue: None,
            queue_stalled_minutes: Some(30),
            seed_idle_minutes: None,
            alt_download_limit: 0,
            alt_upload_limit: 0,
            alt_speed_enabled: false,
            alt_speed_schedule: None,
            transport: TransportPolicy::Both,
            web_seeds: true,
            port_mapping: None,
        }
    }
}

/// Why the client or a torrent could not start.
#[derive(Debug)]
pub enum ClientError {
    /// A socket or file error.
    Io(io::Error),
    /// The torrent or magnet link was refused.
    Add(btcore_core::session::AddError),
    /// The torrent's files could not be set up.
    Storage(crate::storage::StorageError),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Add(e) => write!(f, "{e}"),
            Self::Storage(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

struct Sock {
    stream: net::Stream,
    connecting: bool,
    /// The encryption policy's view of the connection: plain, sniffing, in an
    /// encryption handshake, or encrypted; it decides, the loop moves bytes.
    link: Link,
    /// Where we dialed (None: accepted).
    dialed: Option<SocketAddr>,
    /// Bytes taken from the session and not yet written, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    /// What follows them: parts of a flush the socket did not take, in order.
    later: std::collections::VecDeque<net::Pending>,
    /// Block payloads read for this connection that the loop holds and sends itself
    /// ([`Session::handle_read_held`]), by token, in the order the session queued them.
    held: std::collections::VecDeque<(u64, net::Held)>,
    /// The next payload's token.
    next_token: u64,
    /// A dialed encrypted uTP connection whose BitTorrent handshake is still to go:
    /// it leaves in a packet of its own (Transmission 3.00 reads only the handshake
    /// from the packet that brings it, and the bitfield behind it waited for a packet
    /// that a seed never sends).
    handshake_alone: bool,
    /// The socket's `SO_RCVLOWAT` as last set ([`Session::recv_batch`]; 0: never set).
    batch: usize,
}

struct HostTorrent {
    name: String,
    info_hash: InfoHash,
    /// A hybrid's truncated v2 info-hash: encrypted handshakes find it by this too.
    info_hash_v2: Option<InfoHash>,
    storage: Option<Arc<Storage>>,
    resume: ResumeWriter,
    save_dir: PathBuf,
    /// The check of its data on disk, while it runs.
    check: Option<Arc<CheckProgress>>,
    /// The disk error that stopped it (the first; the session reports only that one),
    /// with its file and OS error number.
    disk_error: Option<crate::storage::StorageError>,
}

/// How a torrent added from a file starts.
enum Start {
    /// At once, with these pieces.
    Ready(Bitfield),
    /// After a check of what is on disk.
    Check,
}

/// A torrent as shown to a person.
#[derive(Clone, Debug)]
pub struct TorrentView {
    /// Session id.
    pub id: TorrentId,
    /// Display name.
    pub name: String,
    /// Engine status.
    pub status: TorrentStatus,
    /// While its data is checked ([`TorrentState::Checking`](btcore_core::session::TorrentState::Checking)): pieces checked, and of
    /// how many.
    pub checking: Option<(u32, u32)>,
}

/// The std client: a session, its sockets, disk workers and trackers.
pub struct Client {
    opts: ClientOptions,
    session: Session,
    poll: Poll,
    waker: Arc<Waker>,
    listener: TcpListener,
    /// Listening on `[::]` at the same port when `listener` is on `0.0.0.0`: IPv6 peers
    /// can dial us too.
    listener6: Option<TcpListener>,
    local_addr: SocketAddr,
    socks: HashMap<ConnId, Sock>,
    disk: DiskPool,
    trackers: Option<TrackerClient>,
    torrents: HashMap<TorrentId, HostTorrent>,
    epoch: std::time::Instant,
    /// The wall clock's reading of the engine's clock, for times shown in Unix seconds.
    wall: trackers::WallAnchor,
    peer_id: PeerId,
    stop: Arc<AtomicBool>,
    events_out: Vec<Event>,
    /// Socket reads land here.
    buf: Vec<u8>,
    /// What the session sends is taken here, then written to the socket.
    tx: Vec<u8>,
    down: Bucket,
    up: Bucket,
    /// Torrents' own rate limits ([`Client::set_torrent_limits`]).
    torrent_buckets: HashMap<TorrentId, control::TorrentBuckets>,
    /// Connections left readable or writable because a rate limit ran out.
    throttled_read: Vec<ConnId>,
    /// Where the next turn of `throttled_read` starts.
    throttle_turn: usize,
    /// Connections left unread while the disk is behind ([`Session::disk_backlogged`]):
    /// read again once writes complete.
    disk_blocked: Vec<ConnId>,
    /// Connections left unread while their peer has not read what the session queued
    /// for it ([`Session::wants_recv`]): read again once it has (a writable socket
    /// took bytes).
    send_blocked: Vec<ConnId>,
    throttled_write: Vec<ConnId>,
    /// The parts of one flush, kept to reuse their allocation.
    segs: Vec<net::Seg>,
    /// Connections that used their reads of a turn ([`READS_PER_TURN`]) with bytes
    /// left: read again next turn, after the sockets that became ready.
    read_more: Vec<ConnId>,
    /// Connections whose socket gathers a batch before it is reported readable
    /// ([`Session::recv_batch`]): read at least every [`RECV_BATCH_MAX_WAIT_MS`]
    /// anyway, or a choke or a reject of what the peer owes would wait for good.
    batched: Vec<ConnId>,
    /// When `batched` is read next.
    batch_sweep: std::time::Instant,
    /// The listener used its accepts of a turn ([`ACCEPTS_PER_TURN`]) with
    /// connections left: accepted again next turn.
    accept_more: bool,
    /// The DHT socket used its reads of a turn ([`DHT_READS_PER_TURN`]) with
    /// datagrams left: read again next turn.
    dht_more: bool,
    dht: Option<crate::dht::DhtHost>,
    /// uTP peers (None under [`TransportPolicy::TcpOnly`]).
    utp: Option<crate::utp::UtpHost>,
    /// The uTP socket of our own used its reads of a turn with datagrams left.
    utp_more: bool,
    lsd: Option<crate::lsd::LsdHost>,
    portmap: Option<crate::portmap::PortMapHost>,
    /// The port mapping socket used its reads of a turn.
    portmap_more: bool,
    /// The mapper of a DHT on a port of its own, and whether it has more to read.
    portmap_dht: Option<crate::portmap::PortMapHost>,
    portmap_dht_more: bool,
    portmap_lines: Vec<String>,
    /// The external address the gateway last gave, as handed to the session.
    portmap_external: Option<std::net::Ipv4Addr>,
    /// DH private keys for encryption handshakes.
    keys: KeySource,
    /// Web seeds' HTTP requests and what they send back (`webseed_io`).
    web: webseed_io::WebIo,
    /// The alternative speed limits' switch and schedule.
    alt: btcore_core::alt_speed::AltSpeed,
    /// When the local clock is next looked at for the schedule.
    next_alt_check: std::time::Instant,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({})", self.local_addr)
    }
}

/// The session's configuration for `opts`: the profile's, with the caps `opts` sets.
fn session_config(opts: &ClientOptions, peer_id: PeerId, port: u16) -> SessionConfig {
    let mut config = if opts.low_memory {
        SessionConfig::low_memory(peer_id)
    } else {
        SessionConfig::new(peer_id)
    };
    config.listen_port = port;
    // 0: the profile's own limit (50, or 20 in the low-memory profile).
    if opts.max_peers != 0 {
        config.max_peers_per_torrent = opts.max_peers;
    }
    if opts.max_connections != 0 {
        config.max_connections = opts.max_connections;
    }
    if opts.max_disk_queue != 0 {
        config.max_disk_bytes_in_flight = opts.max_disk_queue;
    }
    // The session schedules DHT lookups only for a host that runs a node.
    config.dht = opts.dht.is_some();
    config.pex = opts.pex;
    config.download_queue = opts.download_queue;
    config.seed_queue = opts.seed_queue;
    config.queue_stalled_after = opts
        .queue_stalled_minutes
        .map(|m| btcore_core::time::Duration::from_secs(u64::from(m) * 60));
    config.seed_idle_minutes = opts.seed_idle_minutes;
    config.transport = opts.transport;
    config.web_seeds = opts.web_seeds;
    config
}

/// A listener on `[::]` at `local`'s port, IPv6 only, when `local` is `0.0.0.0` (the
/// default): the IPv4 and IPv6 peers of a dual-stack host both reach us, each family on
/// its own socket so addresses stay as they are. None (logged) where the host has no
/// IPv6 or the port is taken there.
pub(super) fn bind_v6_twin(poll: &Poll, local: SocketAddr) -> Option<TcpListener> {
    if local.ip() != IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
        return None;
    }
    let addr = SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), local.port());
    let bind = || -> io::Result<TcpListener> {
        let s = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        s.set_only_v6(true)?;
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        let mut l = TcpListener::from_std(s.into());
        poll.registry()
            .register(&mut l, LISTENER6, Interest::READABLE)?;
        Ok(l)
    };
    match bind() {
        Ok(l) => Some(l),
        Err(e) => {
            log::debug!("no IPv6 listener on {addr}: {e}");
            None
        }
    }
}

/// The uTP endpoint for `opts` listening on port `port`: on the DHT's socket when
/// `dht` binds the same address, else on a socket of its own (registered with
/// `poll`). None under [`TransportPolicy::TcpOnly`].
fn start_utp(
    poll: &Poll,
    opts: &ClientOptions,
    port: u16,
    dht: Option<&crate::dht::DhtHost>,
    seed: u64,
) -> io::Result<Option<crate::utp::UtpHost>> {
    if opts.transport == TransportPolicy::TcpOnly {
        return Ok(None);
    }
    let addr = SocketAddr::new(opts.listen.ip(), port);
    let shared = dht.is_some_and(|d| d.local_addr().is_ok_and(|a| a.port() == port));
    let own = if shared {
        None
    } else {
        let mut s = crate::utp::OwnSockets::bind(addr)?;
        s.register(poll.registry(), UTP, UTP6)?;
        Some(s)
    };
    let cfg = if opts.low_memory {
        btcore_core::utp::UtpConfig::low_memory()
    } else {
        btcore_core::utp::UtpConfig::default()
    };
    Ok(Some(crate::utp::UtpHost::new(cfg, seed ^ 0x0075_7470, own)))
}

/// Where the DHT node of `opts` binds: the listen address, on its own port or the
/// TCP listen port `tcp_port`.
fn dht_bind(opts: &ClientOptions, d: &crate::dht::DhtOptions, tcp_port: u16) -> SocketAddr {
    let port = if d.port == 0 { tcp_port } else { d.port };
    SocketAddr::new(opts.listen.ip(), port)
}

/// A DHT node for `d`, registered with `poll`.
fn start_dht(
    poll: &Poll,
    opts: &ClientOptions,
    d: &crate::dht::DhtOptions,
    tcp_port: u16,
    now: Instant,
    seed: u64,
) -> io::Result<crate::dht::DhtHost> {
    let mut host = crate::dht::DhtHost::new(dht_bind(opts, d, tcp_port), d, now, seed)?;
    host.register(poll.registry(), DHT, DHT6)?;
    Ok(host)
}

/// Local service discovery announcing `tcp_port`, registered with `poll`.
fn start_lsd(poll: &Poll, tcp_port: u16) -> io::Result<crate::lsd::LsdHost> {
    let mut host = crate::lsd::LsdHost::new(crate::lsd::LsdOptions {
        port_to_announce: tcp_port,
        ..crate::lsd::LsdOptions::default()
    })?;
    poll.registry()
        .register(host.socket_mut(), LSD, Interest::READABLE)?;
    Ok(host)
}

/// The engine's clock: milliseconds since `epoch`, from 1.
fn since(epoch: std::time::Instant) -> Instant {
    Instant::from_millis(epoch.elapsed().as_millis() as u64 + 1)
}

fn token(c: ConnId) -> Token {
    Token(c.0 as usize + FIRST_CONN)
}

fn conn_of(t: Token) -> ConnId {
    ConnId((t.0 - FIRST_CONN) as u32)
}

impl Client {
    /// Binds the listen socket and starts the workers.
    pub fn new(opts: ClientOptions) -> Result<Self, ClientError> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listener = TcpListener::bind(opts.listen)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let local_addr = listener.local_addr()?;
        let listener6 = bind_v6_twin(&poll, local_addr);
        let seed = if opts.seed != 0 {
            opts.seed
        } else {
            crate::os::random_u64()
        };
        let peer_id = PeerId::generate(seed);
        let config = session_config(&opts, peer_id, local_addr.port());
        let session = Session::new(config, seed);
        let w = waker.clone();
        let disk = DiskPool::new(
            opts.disk_threads,
            if opts.low_memory {
                256 << 10
            } else {
                crate::disk::AHEAD_BYTES
            },
            Arc::new(move || {
                let _ = w.wake();
            }),
        );
        let dht = match &opts.dht {
            Some(d) => Some(start_dht(
                &poll,
                &opts,
                d,
                local_addr.port(),
                Instant::from_millis(1),
                seed,
            )?),
            None => None,
        };
        let utp = start_utp(&poll, &opts, local_addr.port(), dht.as_ref(), seed)?;
        let lsd = if opts.lsd {
            Some(start_lsd(&poll, local_addr.port())?)
        } else {
            None
        };
        let trackers = if opts.use_trackers {
            let w = waker.clone();
            Some(TrackerClient::new(
                TrackerConfig {
                    rng_seed: seed,
                    ..TrackerConfig::default()
                },
                poll.registry(),
                TRACKER_UDP,
                Box::new(move || {
                    let _ = w.wake();
                }),
            )?)
        } else {
            None
        };
        let web = webseed_io::WebIo::new(waker.clone());
        let mut client = Self {
            session,
            poll,
            waker,
            listener,
            listener6,
            local_addr,
            socks: HashMap::new(),
            disk,
            trackers,
            torrents: HashMap::new(),
            epoch: std::time::Instant::now(),
            wall: trackers::WallAnchor::new(Instant::from_millis(1), std::time::SystemTime::now()),
            peer_id,
            stop: Arc::new(AtomicBool::new(false)),
            events_out: Vec::new(),
            // One socket read at most. Small enough to stay in the CPU's L2 cache: the
            // kernel's copy into it and ours out of it then hit the cache (with 256 KiB,
            // the receive copy cost 2.5 times as much); large enough to hold several
            // blocks, so few messages straddle two reads.
            buf: vec![
                0u8;
                if opts.low_memory {
                    32 * 1024
                } else {
                    64 * 1024
                }
            ],
            // Uploads leave in writes of up to 256 KiB, several blocks per system call
            // (as before the reads went down to 64 KiB); small devices write less.
            tx: vec![
                0u8;
                if opts.low_memory {
                    32 * 1024
                } else {
                    256 * 1024
                }
            ],
            down: Bucket::new(opts.download_limit),
            up: Bucket::new(opts.upload_limit),
            torrent_buckets: HashMap::new(),
            throttled_read: Vec::new(),
            throttle_turn: 0,
            disk_blocked: Vec::new(),
            send_blocked: Vec::new(),
            throttled_write: Vec::new(),
            segs: Vec::with_capacity(net::MAX_SEGS),
            read_more: Vec::new(),
            batched: Vec::new(),
            batch_sweep: std::time::Instant::now(),
            accept_more: false,
            dht_more: false,
            dht,
            utp,
            utp_more: false,
            lsd,
            portmap: None,
            portmap_more: false,
            portmap_dht: None,
            portmap_dht_more: false,
            portmap_lines: Vec::new(),
            portmap_external: None,
            keys: KeySource::new(),
            web,
            alt: queue::alt_speed(&opts),
            next_alt_check: std::time::Instant::now(),
            opts,
        };
        // The schedule decides at once.
        client.service_alt_speed(true);
        client.start_port_mapping();
        Ok(client)
    }

    /// The address peers reach us at.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Wakes the loop from another thread (a `run_once` waiting returns): for work
    /// handed to the thread that runs the client.
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// A flag that stops [`Client::run_until`] (set it from a signal handler).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    fn now(&self) -> Instant {
        since(self.epoch)
    }

    /// The disk error that stopped torrent `id` ([`Event::DiskFailed`]), with the file
    /// and the OS error number the session's [`DiskError`] does not carry.
    ///
    /// [`DiskError`]: btcore_core::session::DiskError
    pub fn disk_error(&self, id: TorrentId) -> Option<&crate::storage::StorageError> {
        self.torrents.get(&id)?.disk_error.as_ref()
    }

    /// Events since the last call (piece verified, finished, banned, ...).
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events_out)
    }

    /// Runs the loop until `done` says so, the stop flag is set, or `limit` passes.
    /// Returns whether `done` held.
    pub fn run_until(
        &mut self,
        limit: Option<Duration>,
        mut done: impl FnMut(&mut Client) -> bool,
    ) -> io::Result<bool> {
        let start = std::time::Instant::now();
        loop {
            if done(self) {
                return Ok(true);
            }
            if self.stop.load(Ordering::Relaxed) || limit.is_some_and(|l| start.elapsed() >= l) {
                return Ok(false);
            }
            self.run_once(Duration::from_millis(250))?;
        }
    }

    /// One turn of the loop: waits for readiness at most `max_wait`.
    pub fn run_once(&mut self, max_wait: Duration) -> io::Result<()> {
        let now = self.now();
        let wait = self
            .session
            .poll_timeout()
            .map_or(max_wait, |t| {
                Duration::from_millis(t.as_millis().saturating_sub(now.as_millis()))
            })
            .min(max_wait);
        let wait = match self.dht.as_ref().and_then(|d| d.poll_timeout()) {
            Some(t) => wait.min(Duration::from_millis(
                t.as_millis().saturating_sub(now.as_millis()),
            )),
            None => wait,
        };
        let wait = match self.utp.as_ref() {
            Some(u) if u.blocked() => wait.min(Duration::from_millis(1)),
            Some(u) => match u.poll_timeout() {
                Some(t) => wait.min(Duration::from_millis(
                    t.as_millis().saturating_sub(now.as_millis()),
                )),
                None => wait,
            },
            None => wait,
        };
        let wait = match self.trackers.as_ref().and_then(TrackerClient::poll_timeout) {
            Some(t) => wait.min(t.saturating_duration_since(std::time::Instant::now())),
            None => wait,
        };
        let mappers = self.portmap.iter().chain(self.portmap_dht.iter());
        let wait = match mappers.filter_map(|p| p.poll_timeout()).min() {
            Some(t) => wait.min(Duration::from_millis(
                t.as_millis().saturating_sub(now.as_millis()),
            )),
            None => wait,
        };
        let throttled = !self.throttled_read.is_empty()
            || !self.throttled_write.is_empty()
            || self.web.throttled();
        let wait = if throttled {
            wait.min(Duration::from_millis(20))
        } else {
            wait
        };
        // A send at the end of the last turn may have let a blocked peer be read.
        let wait = if self
            .send_blocked
            .iter()
            .any(|c| self.session.wants_recv(*c))
        {
            Duration::ZERO
        } else {
            wait
        };
        // Batching sockets are looked at every RECV_BATCH_MAX_WAIT_MS at least.
        let wait = if self.batched.is_empty() {
            wait
        } else {
            wait.min(
                self.batch_sweep
                    .saturating_duration_since(std::time::Instant::now()),
            )
        };
        // Work left from the last turn: look at the sockets without waiting.
        let read_again = std::mem::take(&mut self.read_more);
        let accept_again = std::mem::take(&mut self.accept_more);
        let dht_again = std::mem::take(&mut self.dht_more);
        let utp_again = std::mem::take(&mut self.utp_more);
        let wait = if read_again.is_empty() && !accept_again && !dht_again && !utp_again {
            wait
        } else {
            Duration::ZERO
        };
        let mut events = Events::with_capacity(256);
        match self.poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let mut accepted = false;
        let mut dht_read = false;
        let mut utp_read = false;
        let mut portmap_read = false;
        for ev in events.iter() {
            match ev.token() {
                LISTENER | LISTENER6 => {
                    accepted = true;
                    self.accept_all();
                }
                WAKER => {}
                DHT | DHT6 => {
                    if !dht_read {
                        dht_read = true;
                        self.read_dht();
                    }
                }
                UTP | UTP6 => {
                    utp_read = true;
                    self.read_utp();
                }
                LSD => self.read_lsd(),
                PORTMAP | PORTMAP_UPNP | PORTMAP_DHT | PORTMAP_DHT_UPNP => portmap_read = true,
                t if TRACKER_UDP.contains(&t) => {
                    if let Some(tr) = self.trackers.as_mut() {
                        tr.on_udp_readable(std::time::Instant::now());
                    }
                }
                t => {
                    let conn = conn_of(t);
                    if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                        self.on_writable(conn);
                    }
                    if ev.is_readable() || ev.is_read_closed() {
                        self.read_conn(conn);
                    }
                }
            }
        }
        if accept_again && !accepted {
            self.accept_all();
        }
        if dht_again && !dht_read {
            self.read_dht();
        }
        if utp_again && !utp_read {
            self.read_utp();
        }
        self.service_utp();
        for conn in read_again {
            if !self.read_more.contains(&conn) {
                self.read_conn(conn);
            }
        }
        if !self.batched.is_empty() && std::time::Instant::now() >= self.batch_sweep {
            self.batch_sweep =
                std::time::Instant::now() + Duration::from_millis(RECV_BATCH_MAX_WAIT_MS);
            // Not those another list reads this turn anyway (a rate limit's turns
            // among the throttled ones stay fair), nor those left for the disk or
            // for their peer to read.
            let skip = |c: &ConnId| {
                self.read_more.contains(c)
                    || self.throttled_read.contains(c)
                    || self.disk_blocked.contains(c)
                    || self.send_blocked.contains(c)
            };
            let due: Vec<ConnId> = self.batched.iter().copied().filter(|c| !skip(c)).collect();
            for conn in due {
                self.read_conn(conn);
            }
        }
        self.service_dht();
        self.service_lsd();
        self.service_port_mapping(portmap_read);
        for conn in std::mem::take(&mut self.throttled_write) {
            self.flush(conn);
        }
        // The connections a limit held back take turns at the tokens: the first one
        // served takes what there is, so each turn starts one further along (served
        // in the same order every time, the first peer throttled took the whole limit).
        let mut throttled = std::mem::take(&mut self.throttled_read);
        if throttled.len() > 1 {
            // In a fixed order (the list comes back in the order served), each
            // turn one further along.
            throttled.sort_unstable();
            let start = self.throttle_turn % throttled.len();
            throttled.rotate_left(start);
            self.throttle_turn = self.throttle_turn.wrapping_add(1);
        }
        for conn in throttled {
            self.read_conn(conn);
        }
        // Peers that read what was queued for them (their sockets were writable).
        if !self.send_blocked.is_empty() {
            let (ready, still): (Vec<ConnId>, Vec<ConnId>) = std::mem::take(&mut self.send_blocked)
                .into_iter()
                .filter(|c| self.socks.contains_key(c))
                .partition(|c| self.session.wants_recv(*c));
            self.send_blocked = still;
            for conn in ready {
                self.read_conn(conn);
            }
        }
        self.collect_workers();
        self.collect_webseeds();
        if !self.disk_blocked.is_empty() && !self.session.disk_backlogged() {
            for conn in std::mem::take(&mut self.disk_blocked) {
                self.read_conn(conn);
            }
        }
        self.expire_handshakes();
        self.service_alt_speed(false);
        let now = self.now();
        if self.session.poll_timeout().is_some_and(|t| t <= now) {
            self.session.handle_timeout(now);
        }
        self.pump();
        self.transmit_utp();
        self.save_resume_if_due(false);
        Ok(())
    }
}
