//! The torrent session: many torrents, their peers, the picker and the choker, driven
//! by a host that owns the sockets, the disk and the clock.
//!
//! The session never does I/O. It asks for work with [`Action`]s and takes the results
//! back through `handle_*` calls:
//!
//! | the session asks | the host answers with |
//! |---|---|
//! | [`Action::Connect`] | [`Session::handle_connected`] or [`Session::handle_connect_failed`] |
//! | [`Action::Send`] | [`Session::poll_transmit`] until it returns 0 |
//! | [`Action::Close`] | closing the socket (the session has forgotten the connection) |
//! | [`Action::Write`] | [`Session::handle_write_done`] |
//! | [`Action::Read`] | [`Session::handle_read_done`] |
//! | [`Action::Verify`] | [`Session::handle_verified_blocks`] (the host hashes: SHA-1 is heavy) |
//! | [`Action::Announce`] (one tracker) | [`Session::handle_peers`] with the peers it gave, and [`Session::handle_announced`] with how the exchange went |
//! | [`Action::DhtLookup`] | [`Session::handle_peers`] with what the DHT found, then [`Session::handle_dht_done`] |
//! | [`Action::CheckData`] | [`Session::handle_checked`] with the pieces found on disk |
//! | [`Action::WebSeedRequest`] | [`Session::handle_webseed_data`] with the bytes as they come, then [`Session::handle_webseed_done`] or [`Session::handle_webseed_failed`] |
//!
//! Incoming connections start with [`Session::handle_incoming`]; bytes read go to
//! [`Session::handle_recv`]; a closed socket to [`Session::handle_disconnected`].
//!
//! # Limits a host follows
//!
//! Read from peers only while [`Session::disk_backlogged`] is false, and from a
//! connection only while [`Session::wants_recv`] says so: a peer that does not read
//! what we queue for it is not read either (its bytes wait in the kernel and TCP holds
//! it back) until [`Session::poll_transmit`] has taken bytes for it. The session keeps
//! its own caps whatever the host does: a connection's send queue never passes
//! [`ConnBuffers::send_cap`] (a peer that would make it is closed), connections are
//! capped per address, per torrent and in all (a share of the table kept for our own
//! dials), an incoming connection that has not completed its handshake in time gives
//! its slot back, and a full torrent turns over its idle connections now and then
//! ([`SessionConfig::peer_turnover`]). Peer addresses are believed according to their
//! source ([`PeerSource`]): none of this machine from a remote party.
//!
//! # Per-torrent controls
//!
//! [`Session::set_file_priorities`] (0 skips a file; a piece takes the highest priority
//! of its files), [`Session::set_sequential`] and [`Session::set_ratio_limit`]. A
//! torrent with every wanted piece is finished ([`TorrentStatus::finished`],
//! [`Event::TorrentFinished`], however it got there: downloaded, or found by a check
//! or in resume data); it seeds once it has every piece. See `control.rs`.
//!
//! # Queues and limits
//!
//! [`SessionConfig::download_queue`] and [`SessionConfig::seed_queue`] let at most N
//! torrents download and M seed; the others wait [`TorrentStatus::queued`] (no
//! connection, no announce) in the order of [`Session::set_queue_position`], and
//! stalled torrents ([`SessionConfig::queue_stalled_after`]) give their slot away;
//! [`Session::resume_now`] passes the queues. [`Session::set_idle_limit`] (and
//! [`SessionConfig::seed_idle_minutes`]) stops a seed that uploads nothing;
//! [`Session::set_peer_limit`] caps one torrent's connections. See `queue.rs`.
//!
//! # Poll order
//!
//! After any `handle_*` call: drain [`Session::poll_action`], then
//! [`Session::poll_event`]; sleep until [`Session::poll_timeout`] or I/O, and call
//! [`Session::handle_timeout`] when it is due. Every call takes `now`.
//!
//! # Flow of a block
//!
//! picker pick → `request` to the peer → `Block` arrives → [`Action::Write`] (bytes in
//! flight to disk are capped: when full, no new requests go out) → write done → when
//! every block of the piece is written, [`Action::Verify`] → verified: `have` to every
//! peer; failed: the blocks go back to the picker, and the peer that sent the bad data
//! is found block by block and banned by address (an IPv6 address by its /64; see
//! `bans` and `smart_ban`: a failed piece
//! from one address bans it; otherwise the host's digest of each block is kept, its
//! senders go on parole, and when the piece passes the addresses whose blocks differ
//! are banned). A banned address is refused when it connects and never dialed.

mod announce;
mod bans;
mod control;
mod dht_schedule;
mod holepunch;
mod layers;
mod metadata;
mod queue;
mod smart_ban;
mod torrent;
mod webseed;

pub use announce::{AnnounceCounts, AnnounceOutcome, TrackerListError, TrackerStatus};
pub use control::{ControlError, DEFAULT_FILE_PRIORITY};
pub use dht_schedule::{DhtOutcome, LOOKUP_TIMEOUT as DHT_LOOKUP_TIMEOUT};
pub use holepunch::HolepunchEvent;
pub use queue::{IdleLimit, QueueMove};
pub use torrent::{merkle_pieces, TorrentState, TorrentStatus};
pub use webseed::{
    backoff as web_seed_backoff, WebSeedId, WebSeedRange, WebSeedState, WebSeedStatus,
    MAX_RETRY_AFTER, MAX_WEB_SEED_URL_LEN,
};

use crate::bitfield::Bitfield;
use crate::choker::ChokerConfig;
use crate::ids::{BlockRef, InfoHash, PeerId, PieceIndex};
use crate::metainfo::{self, Metainfo};
use crate::netaddr;
use crate::peer::{PeerConfig, PeerConn, PeerError};
use crate::picker::PickerConfig;
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use crate::tracker::tiers::TrackerPos;
use crate::wire::Reserved;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use announce::{AnnounceBudget, Announcer, Due, Trackers, WalkLimits};
use bans::BanList;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use torrent::Torrent;

use bans::BanReason;

fn is_loopback(ip: IpAddr) -> bool {
    netaddr::is_loopback(ip)
}

/// How useful an established connection is to peer turnover, compared in order: we
/// want something it has, it wants something of ours, it is not on parole, payload
/// bytes per second, it does not choke us.
type Usefulness = (bool, bool, bool, u64, bool);

/// How an address maps to the party a per-address cap counts ([`netaddr::group`],
/// [`netaddr::site`]).
type Party = fn(IpAddr) -> IpAddr;

/// A connection's buffers ([`Session::conn_buffers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnBuffers {
    /// Bytes queued to send.
    pub send_queued: usize,
    /// The most the send queue ever holds ([`PeerConn::send_cap`]).
    pub send_cap: usize,
    /// Bytes of a partial message received (at most one frame).
    pub recv_buffered: usize,
}

/// Identifies a torrent in a session.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct TorrentId(pub u32);

/// Identifies a connection (never reused within a session).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ConnId(pub u32);

/// Session configuration. [`SessionConfig::low_memory`] is the small-device profile.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Our peer id (the host makes it, [`crate::PEER_ID_PREFIX`] and 12 random bytes).
    pub peer_id: PeerId,
    /// Our listen port (sent in the extension handshake).
    pub listen_port: u16,
    /// Per-connection limits and timers.
    pub peer: PeerConfig,
    /// Picker settings.
    pub picker: PickerConfig,
    /// Choker settings.
    pub choker: ChokerConfig,
    /// Most connections per torrent.
    pub max_peers_per_torrent: usize,
    /// Most outgoing connection attempts in flight per torrent.
    pub max_connecting: usize,
    /// Most connections over all torrents. An incoming connection that finds the
    /// table full (or the incoming share of it, see
    /// [`SessionConfig::outgoing_share`]) takes the place of the least useful
    /// incoming one still in its handshake (from the address holding the most
    /// connections, the oldest first; none younger than
    /// [`SessionConfig::turnover_min_age`], and never a connection we dialed); when
    /// there is none it is closed at once.
    pub max_connections: usize,
    /// Percent of [`SessionConfig::max_connections`] kept for connections we dial:
    /// incoming connections hold at most the rest, so that connections from others,
    /// bare or not, never stop us from dialing the peers trackers give. A dial that
    /// finds the table full anyway takes the place of an incoming connection still
    /// in its handshake.
    pub outgoing_share: u32,
    /// Most connections with one address (an IPv6 /64 counts as one address), per
    /// torrent, in both directions; and most incoming connections from one address
    /// still in their handshake over the session (a newer one replaces the oldest).
    /// Loopback peers are exempt: they run on this machine (tests, benchmarks and
    /// several instances on one host rely on it). A second connection of a peer id
    /// already connected to the torrent from the same address is closed whatever this
    /// says.
    pub max_peers_per_ip: usize,
    /// The same for an IPv6 /48 (one site, 65,536 /64s): most connections per torrent
    /// from its addresses, and most of its incoming connections still in their
    /// handshake. Also, when a full table makes room, the address whose /48 holds the
    /// most connections gives way first.
    pub max_peers_per_ipv6_48: usize,
    /// A connection younger than this is never closed to make room for another (a
    /// newcomer, a dial, or peer turnover): it has this long to complete its
    /// handshake and show what it wants.
    pub turnover_min_age: Duration,
    /// Peer turnover (libtorrent's `peer_turnover`): percent of a full torrent's
    /// connections closed every [`SessionConfig::peer_turnover_interval`] (at least
    /// one) to make room for newcomers. Only connections that moved no payload for
    /// an interval are closed, the least useful first (we want nothing from it and it
    /// nothing from us, on parole, the lowest payload rate, it chokes us), and no more
    /// than peers wait for a slot (addresses to dial, incoming peers refused for lack
    /// of room). 0: no turnover.
    pub peer_turnover: u32,
    /// Turnover runs when the session holds this percent of
    /// [`SessionConfig::max_connections`] (then on the torrent with the most
    /// connections), or a torrent this percent of
    /// [`SessionConfig::max_peers_per_torrent`] (libtorrent's
    /// `peer_turnover_cutoff`).
    pub peer_turnover_cutoff: u32,
    /// How often turnover runs (libtorrent's `peer_turnover_interval`).
    pub peer_turnover_interval: Duration,
    /// `ut_metadata` requests (BEP 9) of one peer kept waiting for room in its send
    /// queue; beyond them a request is rejected.
    pub max_metadata_requests: usize,
    /// Most bytes handed to the host for writing and not yet written, per session: past
    /// it no block is requested, and past twice it [`Session::disk_backlogged`] tells the
    /// host to stop reading from peers.
    pub max_disk_bytes_in_flight: usize,
    /// Most disk reads for uploads in flight per peer (also bounded by the room in the
    /// peer's send buffer).
    pub max_reads_per_peer: usize,
    /// Most bans for bad data, over all torrents (an IPv4 address, an IPv6 /64, or an
    /// IPv6 /48 once several of its /64s were banned); past it a ban is lifted: of
    /// the addresses that only sent a whole bad piece alone first, then of those
    /// whose blocks were proven bad, the oldest first.
    pub max_banned_ips: usize,
    /// Banned /64s within one IPv6 /48 that ban the whole /48 (one entry in place of
    /// theirs): one party cannot fill the ban list from its site. 0: never.
    pub max_bans_per_ipv6_48: usize,
    /// Per torrent, most blocks of failed pieces whose sender and digest are kept
    /// until the piece passes, to find the peer that sent bad data (about 64 bytes
    /// each); also the most addresses on parole and departed senders remembered.
    pub max_failed_block_records: usize,
    /// The most bytes of a tracker URL or message an [`Event::TrackerError`] or
    /// [`Event::TrackerWarning`] carries (longer ones are cut at a character
    /// boundary): the event queue holds up to 4096 events.
    pub max_tracker_text: usize,
    /// Ask trackers for more peers when fewer than this are connected.
    pub peer_low_watermark: usize,
    /// Wait this long before dialing an address again after a failure.
    pub reconnect_backoff: Duration,
    /// Most announces started per second over all torrents (and the burst allowed
    /// after a quiet spell): many torrents starting together reach their trackers
    /// spread out. `stopped` announces are exempt.
    pub announces_per_second: u32,
    /// Most announces waiting for [`Session::handle_announced`] over all torrents.
    pub max_announces_in_flight: usize,
    /// An announce the host has not reported after this long counts as failed (its
    /// tracker failed). A host gives each exchange its own, shorter deadline.
    pub announce_timeout: Duration,
    /// Keep at most this many trackers per torrent (the first ones of its tiers, in
    /// `announce-list` order; duplicates and URLs longer than
    /// `MAX_TRACKER_URL_LEN` are dropped).
    pub max_trackers: usize,
    /// Ask at most this many trackers in one walk over a torrent's tiers (BEP 12);
    /// when none of them answered the torrent backs off.
    pub max_trackers_per_walk: usize,
    /// The cap of one tracker's backoff after failures in a row (60 s, doubling).
    pub tracker_retry_max: Duration,
    /// Keep at most this many known peer addresses per torrent. A newcomer past it
    /// replaces an entry rather than being refused: one that failed first, then one
    /// from PEX (never one from a tracker, the DHT or the user for one from PEX),
    /// then one never connected, the oldest first.
    pub max_known_peers: usize,
    /// Most known peer addresses per torrent that PEX messages (BEP 11) from one
    /// address (an IPv6 /64) hold, over all its connections; a newer one replaces its
    /// oldest.
    pub max_pex_peers_per_ip: usize,
    /// The host runs a DHT node: the session asks it to look up and announce its
    /// public torrents ([`Action::DhtLookup`], on the schedule described in
    /// `dht_schedule.rs`). Off by default: a host without a DHT node gets no such
    /// action.
    pub dht: bool,
    /// Peer exchange (BEP 11, `ut_pex`): offered in the extension handshake, sent and
    /// heard. Never for private torrents. Turned off while running, nothing more is
    /// sent or taken from what peers send; turned on, connections made since offer it
    /// again, and peers that offered it before hear from us.
    pub pex: bool,
    /// How often a public running torrent is looked up and announced on the DHT
    /// (libtorrent's `dht_announce_interval`).
    pub dht_announce_interval: Duration,
    /// How often at most a torrent short of peers ([`Session::short_of_peers`]) is
    /// looked up on the DHT: sooner than [`SessionConfig::dht_announce_interval`],
    /// never sooner than this.
    pub dht_short_of_peers_interval: Duration,
    /// Most DHT lookups started per minute over all torrents (after a burst of five
    /// seconds' worth): many torrents starting together reach the DHT spread out.
    pub dht_lookups_per_minute: u32,
    /// Most DHT lookups of torrents running at a time (below the DHT node's own
    /// `max_lookups`, which its table refreshes share).
    pub max_dht_lookups_in_flight: usize,
    /// BEP 55 hole punching (`ut_holepunch`): offered in the extension handshake of
    /// public torrents when the session dials uTP ([`SessionConfig::transport`]); we
    /// relay rendezvous between peers we are connected to, ask the peer whose PEX
    /// named an address we could not dial to introduce us, and dial over uTP the
    /// addresses a relay introduces us to (see `session/holepunch.rs` for what is
    /// refused).
    pub holepunch: bool,
    /// Most rendezvous taken from one peer per minute (past it: dropped unanswered).
    pub holepunch_relays_per_peer: u32,
    /// Most rendezvous taken per minute over all peers.
    pub holepunch_relays_per_minute: u32,
    /// Most `connect` requests honoured from one relay per minute.
    pub holepunch_connects_per_peer: u32,
    /// Most `connect` requests honoured per minute over all relays.
    pub holepunch_connects_per_minute: u32,
    /// A rendezvous for one address goes out at most once per this long.
    pub holepunch_retry: Duration,
    /// When a magnet link's info dictionary arrives, the torrent waits in
    /// [`TorrentState::Checking`] and the host checks what is already on disk
    /// ([`Action::CheckData`]) before anything is downloaded, as libtorrent does. A
    /// host that cannot check turns it off: the torrent then downloads at once.
    pub check_after_metadata: bool,
    /// Most torrents downloading at a time (Transmission's `download-queue-size`):
    /// the others wait, [`TorrentStatus::queued`], in queue order
    /// ([`Session::set_queue_position`]), holding no connection and not announcing.
    /// Paused torrents, those started with [`Session::resume_now`] and those stalled
    /// ([`SessionConfig::queue_stalled_after`]) do not count. `None` (the default):
    /// no queue.
    pub download_queue: Option<u32>,
    /// The same for finished torrents (seeding; Transmission's `seed-queue-size`).
    pub seed_queue: Option<u32>,
    /// A running torrent that moved no payload for this long is stalled: it keeps
    /// running but no longer counts against its queue, so the next one starts
    /// (Transmission's `queue-stalled-minutes`, 30 by default). `None`: never.
    pub queue_stalled_after: Option<Duration>,
    /// A finished torrent that uploaded nothing for this many minutes stops seeding:
    /// it is paused and [`Event::IdleLimitReached`] says so (Transmission's
    /// `idle-seeding-limit`); a torrent's own limit ([`Session::set_idle_limit`])
    /// overrides it. `None` (the default): no limit.
    pub seed_idle_minutes: Option<u32>,
    /// Which transports peers are dialed over. [`TransportPolicy::TcpOnly`] by default,
    /// so a host without uTP is never asked for it; the std host sets
    /// [`TransportPolicy::Both`] (uTP first, TCP when uTP gets no answer within
    /// `utp_connect_timeout`).
    pub transport: TransportPolicy,
    /// How long a uTP dial may go unanswered before the peer is dialed over TCP
    /// instead (under [`TransportPolicy::Both`]; libtorrent: 3 s). Checked on the
    /// session's one-second tick.
    pub utp_connect_timeout: Duration,
    /// The host downloads from web seeds (BEP 19, [`Action::WebSeedRequest`]): off by
    /// default, so a host without an HTTP client is never asked.
    pub web_seeds: bool,
    /// Most web seeds kept per torrent (the first of its `url-list`).
    pub max_web_seeds: usize,
    /// Most requests in flight per web seed (its connections).
    pub web_seed_connections: usize,
    /// Most web seed requests in flight over all torrents.
    pub max_web_seed_requests: usize,
    /// Bytes one web seed request asks for at most (whole pieces, one at least).
    pub web_seed_request_bytes: u64,
    /// The first wait after a web seed failed, doubling with each failure in a row.
    pub web_seed_retry: Duration,
    /// The longest wait after failures (a server's `Retry-After` may ask longer).
    pub web_seed_retry_max: Duration,
    /// A web seed request that sends nothing for this long fails.
    pub web_seed_timeout: Duration,
}

/// The transport of a peer connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A TCP connection.
    #[default]
    Tcp,
    /// A uTP connection (BEP 29) over the UDP port ([`crate::utp`]).
    Utp,
}

/// Which transports the session dials (incoming connections are taken over both
/// whatever the policy, as the host accepts them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TransportPolicy {
    /// uTP first, as libtorrent and Transmission dial; TCP when the uTP dial gets no
    /// answer or is refused, and from then on for that peer.
    Both,
    /// uTP only.
    UtpOnly,
    /// TCP only (the default: a host that has no uTP).
    #[default]
    TcpOnly,
}

impl SessionConfig {
    /// Defaults for a desktop or NAS.
    pub fn new(peer_id: PeerId) -> Self {
        Self {
            peer_id,
            listen_port: 6881,
            peer: PeerConfig::default(),
            picker: PickerConfig::default(),
            choker: ChokerConfig::default(),
            max_peers_per_torrent: 50,
            max_connecting: 8,
            max_connections: 200,
            outgoing_share: 10,
            // libtorrent allows one (`allow_multiple_connections_per_ip` off); a few
            // more let peers behind one NAT or carrier-grade NAT address share a swarm,
            // and settle a simultaneous open by peer id rather than by address.
            max_peers_per_ip: 4,
            max_peers_per_ipv6_48: 16,
            turnover_min_age: Duration::from_secs(5),
            // libtorrent's defaults: 4% every 5 minutes at 90% of the cap.
            peer_turnover: 4,
            peer_turnover_cutoff: 90,
            peer_turnover_interval: Duration::from_secs(300),
            max_metadata_requests: 8,
            // As libtorrent's `max_queued_disk_bytes`: a page-cache write takes microseconds,
            // and a slow disk gains nothing from a deeper queue but memory.
            max_disk_bytes_in_flight: 1 << 20,
            // Bounded by the send buffer too (512 KiB: 32 blocks). A host reads a peer's
            // adjacent blocks at once; 8 at a time cost a btcore seeder 30-50% of its
            // rate in round trips to the disk workers.
            max_reads_per_peer: 32,
            max_banned_ips: 4096,
            max_bans_per_ipv6_48: 8,
            // 256 KiB at most; 16 failed 4 MiB pieces, 256 failed 256 KiB ones.
            max_failed_block_records: 4096,
            max_tracker_text: 512,
            peer_low_watermark: 10,
            reconnect_backoff: Duration::from_secs(30),
            // libtorrent's `max_concurrent_http_announces` is 50.
            announces_per_second: 10,
            max_announces_in_flight: 50,
            announce_timeout: Duration::from_secs(600),
            max_trackers: 64,
            max_trackers_per_walk: 8,
            // libtorrent's `tracker_retry_delay_max`.
            tracker_retry_max: Duration::from_millis(crate::tracker::tiers::TRACKER_RETRY_MAX_MS),
            max_known_peers: 500,
            // One PEX message's worth (50 per family).
            max_pex_peers_per_ip: 50,
            dht: false,
            pex: true,
            // libtorrent's default; Transmission waits 25 to 28 minutes.
            dht_announce_interval: Duration::from_secs(15 * 60),
            dht_short_of_peers_interval: Duration::from_secs(60),
            // libtorrent announces one torrent a second at most.
            dht_lookups_per_minute: 60,
            max_dht_lookups_in_flight: 16,
            holepunch: true,
            holepunch_relays_per_peer: 10,
            holepunch_relays_per_minute: 60,
            holepunch_connects_per_peer: 5,
            holepunch_connects_per_minute: 20,
            holepunch_retry: Duration::from_secs(300),
            check_after_metadata: true,
            download_queue: None,
            seed_queue: None,
            // Transmission's default.
            queue_stalled_after: Some(Duration::from_secs(30 * 60)),
            seed_idle_minutes: None,
            transport: TransportPolicy::TcpOnly,
            utp_connect_timeout: Duration::from_secs(3),
            web_seeds: false,
            max_web_seeds: 8,
            // libtorrent opens one connection per web seed by default; two keep a
            // fast server busy while a request starts.
            web_seed_connections: 2,
            max_web_seed_requests: 16,
            web_seed_request_bytes: 4 << 20,
            web_seed_retry: Duration::from_secs(3),
            web_seed_retry_max: Duration::from_secs(300),
            web_seed_timeout: Duration::from_secs(60),
        }
    }

    /// The profile for small devices (router, microcontroller with alloc).
    pub fn low_memory(peer_id: PeerId) -> Self {
        Self {
            peer: PeerConfig::low_memory(),
            picker: PickerConfig::default().with_max_partials(16),
            max_peers_per_torrent: 20,
            max_connections: 50,
            max_peers_per_ip: 2,
            max_peers_per_ipv6_48: 4,
            max_metadata_requests: 2,
            max_disk_bytes_in_flight: 512 << 10,
            max_reads_per_peer: 2,
            max_known_peers: 100,
            announces_per_second: 4,
            max_announces_in_flight: 8,
            max_trackers: 16,
            max_trackers_per_walk: 4,
            max_pex_peers_per_ip: 20,
            max_banned_ips: 256,
            max_bans_per_ipv6_48: 4,
            max_failed_block_records: 512,
            max_tracker_text: 128,
            // The low-memory DHT node runs 8 lookups at most.
            dht_lookups_per_minute: 20,
            max_dht_lookups_in_flight: 4,
            max_web_seed_requests: 4,
            ..Self::new(peer_id)
        }
    }
}

/// A disk error reported by the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiskError {
    /// The disk is full.
    NoSpace,
    /// Any other I/O error.
    Io,
    /// A hybrid torrent whose v1 and v2 hashes disagree on a piece (BEP 52: the
    /// torrent is inconsistent; see [`Session::handle_hashes_disagree`]).
    HashesDisagree,
}

/// BEP 52: what one piece of a v2 or hybrid torrent hashes to. Its first `len` bytes
/// (the rest of the piece, if any, is padding) are cut into 16 KiB blocks; the SHA-256
/// of each block is a leaf, the leaves are padded with zero hashes to `width` (a power
/// of two), and the tree's root must be `root`. [`MerklePiece::matches`] does it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MerklePiece {
    /// The piece's node in its file's piece layer, or the file's `pieces root` when
    /// the file is a piece or less.
    pub root: [u8; 32],
    /// The file's bytes in this piece.
    pub len: u32,
    /// The width of the piece's tree in leaves.
    pub width: u32,
}

impl MerklePiece {
    /// Whether `data` (the piece's first `len` bytes) hashes to `root`.
    pub fn matches(&self, data: &[u8]) -> bool {
        let mut h = self.hasher();
        h.update(data);
        h.matches()
    }

    /// A hasher to feed the piece's bytes in parts, in order.
    pub fn hasher(&self) -> MerklePieceHasher {
        MerklePieceHasher {
            piece: *self,
            tree: crate::merkle::MerkleBuilder::new(crate::merkle::ZERO),
            block: sha2::Sha256::default(),
            in_block: 0,
            total: 0,
        }
    }
}

/// Streams a piece's bytes into its [`MerklePiece`] tree (see [`MerklePiece::hasher`]).
#[derive(Clone, Debug)]
pub struct MerklePieceHasher {
    piece: MerklePiece,
    tree: crate::merkle::MerkleBuilder,
    block: sha2::Sha256,
    in_block: u32,
    total: u64,
}

impl MerklePieceHasher {
    /// Feeds the next bytes; bytes past the piece's `len` are ignored (padding).
    pub fn update(&mut self, mut data: &[u8]) {
        use sha2::Digest as _;
        let left = u64::from(self.piece.len).saturating_sub(self.total);
        if (data.len() as u64) > left {
            data = &data[..left as usize];
        }
        self.total += data.len() as u64;
        while !data.is_empty() {
            let room = (crate::merkle::BLOCK_SIZE - self.in_block) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.block.update(now);
            self.in_block += now.len() as u32;
            data = rest;
            if self.in_block == crate::merkle::BLOCK_SIZE {
                let leaf = core::mem::take(&mut self.block).finalize();
                self.tree.push(leaf.into());
                self.in_block = 0;
            }
        }
    }

    /// Whether the bytes fed were the piece's `len` bytes and hash to its root.
    pub fn matches(mut self) -> bool {
        use sha2::Digest as _;
        if self.total != u64::from(self.piece.len) {
            return false;
        }
        if self.in_block > 0 {
            let leaf = core::mem::take(&mut self.block).finalize();
            self.tree.push(leaf.into());
        }
        let width = u64::from(self.piece.width);
        self.tree.count() <= width && self.tree.finish(width) == self.piece.root
    }
}

/// Why a torrent could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddError {
    /// The torrent file is invalid.
    Metainfo(metainfo::MetainfoError),
    /// The same info-hash is already in the session.
    Duplicate(TorrentId),
    /// A resume bitfield of the wrong length.
    BadResume,
    /// The magnet link is invalid.
    Magnet(crate::magnet::MagnetError),
}

impl core::fmt::Display for AddError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Metainfo(e) => write!(f, "{e}"),
            Self::Duplicate(_) => f.write_str("torrent already added"),
            Self::BadResume => f.write_str("resume data does not fit the torrent"),
            Self::Magnet(e) => write!(f, "{e}"),
        }
    }
}

/// The longest tracker URL a torrent may name (longer ones are dropped): ample for
/// any announce URL, small enough that a torrent's trackers cost little.
pub(crate) const MAX_TRACKER_URL_LEN: usize = 1024;

/// Tracker events (BEP 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnounceEvent {
    /// The first announce.
    Started,
    /// The download finished.
    Completed,
    /// The torrent stops.
    Stopped,
}

/// Where the peer addresses given to [`Session::handle_peers`] come from. An
/// address of this machine (loopback) is believed only from a source on it: a remote
/// tracker naming one would make us connect to local services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerSource {
    /// The user or the application (a peer added by hand): believed.
    User,
    /// A tracker, at the address the host reached it (loopback peers only from a
    /// tracker on loopback).
    Tracker(IpAddr),
    /// The DHT, which believes a loopback address only from a node on loopback.
    Dht,
    /// Local service discovery (BEP 14): the address an announce came from.
    Lsd,
}

/// Where a peer we dialed was heard of (a source better than PEX replaces PEX), for
/// display (Transmission's `peersFrom`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerOrigin {
    /// It dialed us.
    Incoming,
    /// A tracker's announce answer.
    Tracker,
    /// The DHT.
    Dht,
    /// Local service discovery.
    Lsd,
    /// A connected peer's PEX message.
    Pex,
    /// The user, the application or a magnet link.
    User,
}

impl PeerSource {
    /// The origin this source gives the peers it names.
    fn origin(self) -> PeerOrigin {
        match self {
            Self::User => PeerOrigin::User,
            Self::Tracker(_) => PeerOrigin::Tracker,
            Self::Dht => PeerOrigin::Dht,
            Self::Lsd => PeerOrigin::Lsd,
        }
    }

    /// Whether `addr` from this source may be dialed.
    fn believes(self, addr: &SocketAddr) -> bool {
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        match self {
            Self::User | Self::Dht | Self::Lsd => netaddr::plausible_from(local, addr),
            Self::Tracker(ip) => netaddr::plausible_from(ip, addr),
        }
    }
}

/// Why the session closed a connection ([`Action::Close`]): a host logs it, counts it,
/// or (through the C API) tells its user, and can tell a ban from a normal close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The torrent was paused or removed, or was checking its data when the peer came.
    TorrentStopped,
    /// Both ends are seeds: they have nothing to exchange.
    BothSeeds,
    /// The handshake names a torrent this session does not have.
    UnknownTorrent,
    /// The peer's address is banned (for data that failed a hash check, or another
    /// [`Event::PeerBanned`] reason); a banned address is refused as soon as it connects.
    Banned,
    /// A malformed `ut_metadata` message (BEP 9).
    BadMetadata,
    /// A magnet link's data check found more pieces than `have` messages would tell
    /// well (`MAX_HAVES_AFTER_CHECK`): the peer learns our bitfield when it connects
    /// again.
    Resync,
    /// The connection failed: a protocol violation, a timeout, a duplicate or a
    /// connection limit ([`PeerError`] says which).
    Peer(PeerError),
}

impl CloseReason {
    /// Whether the peer is to blame (a host may count it against the peer's address):
    /// a ban, a malformed metadata message, or a [`PeerError::is_peer_fault`].
    pub const fn is_peer_fault(&self) -> bool {
        match self {
            Self::Banned | Self::BadMetadata => true,
            Self::Peer(e) => e.is_peer_fault(),
            Self::TorrentStopped | Self::BothSeeds | Self::UnknownTorrent | Self::Resync => false,
        }
    }

    /// The connection's own error, when it failed.
    pub const fn peer_error(&self) -> Option<PeerError> {
        match self {
            Self::Peer(e) => Some(*e),
            _ => None,
        }
    }
}

impl From<PeerError> for CloseReason {
    fn from(e: PeerError) -> Self {
        Self::Peer(e)
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TorrentStopped => f.write_str("torrent stopped"),
            Self::BothSeeds => f.write_str("both ends are seeds"),
            Self::UnknownTorrent => f.write_str("handshake for a torrent we do not have"),
            Self::Banned => f.write_str("banned address"),
            Self::BadMetadata => f.write_str("malformed metadata message"),
            Self::Resync => f.write_str("reconnect for the pieces found by a data check"),
            Self::Peer(e) => write!(f, "{e}"),
        }
    }
}

/// What [`Session::poll_send`] gives for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    /// Nothing to send now.
    Idle,
    /// `len` bytes were copied into the buffer.
    Bytes {
        /// How many.
        len: usize,
        /// A held payload follows them at once (a host may send these bytes with
        /// "more to come", e.g. `MSG_MORE`).
        held_next: bool,
    },
    /// The host sends the block payload it holds under `token`
    /// ([`Session::handle_read_held`]) now, `len` bytes, before anything else.
    Held {
        /// The token the host gave.
        token: u64,
        /// The payload's length.
        len: u32,
    },
}

/// A read block's bytes: given, or held by the host.
enum ReadPayload<'a> {
    Bytes(&'a [u8]),
    Held(u64),
}

/// Work the session asks of the host.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Open a connection to `addr` over `transport` for `torrent`, known from now on
    /// as `conn`. The same `conn` may be asked for again over TCP after a uTP dial
    /// that failed ([`Session::handle_connect_failed`]) or went unanswered (then a
    /// [`Action::Close`] of the uTP attempt comes first).
    Connect {
        /// The connection's id.
        conn: ConnId,
        /// The torrent.
        torrent: TorrentId,
        /// Where to.
        addr: SocketAddr,
        /// Over what.
        transport: Transport,
    },
    /// `conn` has bytes to send: call [`Session::poll_transmit`].
    Send(ConnId),
    /// Close `conn`; the session has forgotten it.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Write a received block.
    Write {
        /// The torrent.
        torrent: TorrentId,
        /// The block.
        block: BlockRef,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// Read a block to upload to `conn`.
    Read {
        /// The torrent.
        torrent: TorrentId,
        /// Who asked for it.
        conn: ConnId,
        /// The block.
        block: BlockRef,
    },
    /// Hash a piece on disk and compare it with `expected` and `merkle` (each that is
    /// given: a hybrid torrent gives both, and the piece passes when both match);
    /// answer with [`Session::handle_verified_blocks`], or with
    /// [`Session::handle_hashes_disagree`] when one matches and the other does not.
    /// When the piece does not match, also give the SHA-1 of each of its blocks as
    /// read (they tell which peer sent the bad data); when it matches, only if
    /// `block_digests` asks.
    Verify {
        /// The torrent.
        torrent: TorrentId,
        /// The piece.
        piece: PieceIndex,
        /// Its v1 SHA-1 from the torrent (`None` for a v2-only torrent).
        expected: Option<[u8; 20]>,
        /// BEP 52: its v2 merkle root (a v2-only or hybrid torrent; `None` for v1, and
        /// for a hybrid whose piece layers are not known).
        merkle: Option<MerklePiece>,
        /// The piece failed before: give its block digests even if it matches, to be
        /// compared with those of the bad data.
        block_digests: bool,
    },
    /// Announce to one tracker of the torrent: one HTTP or UDP exchange with
    /// `tracker`, reported with [`Session::handle_announced`]. The session walks the
    /// torrent's tiers (BEP 12): it names the next tracker when one fails.
    Announce {
        /// The torrent.
        torrent: TorrentId,
        /// The tracker's URL, as the torrent or magnet link gave it (`http://`,
        /// `https://`, `udp://`, or a scheme the host may not support: it then
        /// reports a failure).
        tracker: String,
        /// The event, if any.
        event: Option<AnnounceEvent>,
        /// Payload bytes sent so far.
        uploaded: u64,
        /// Payload bytes received so far.
        downloaded: u64,
        /// Bytes still missing.
        left: u64,
        /// This announce's number: give it back to [`Session::handle_announced`], which
        /// ignores a report for an announce that is not the one awaited (a late one, or
        /// one given up on after [`SessionConfig::announce_timeout`]). 0 for `stopped`,
        /// which needs no report (it goes to each tracker that answered since the
        /// torrent started).
        seq: u64,
        /// A hybrid's truncated v2 info-hash (BEP 52: the torrent is in both swarms):
        /// make the same exchange with the tracker for it too. That second exchange is
        /// not reported; its peers go to [`Session::handle_peers`] like the first's.
        /// `None` for other torrents (and for hosts that join one swarm only).
        info_hash_v2: Option<InfoHash>,
    },
    /// Look `info_hash` up on the DHT (BEP 5 `get_peers`) and, with `announce`, announce
    /// our listen port to the closest nodes that gave a token (`announce_peer`). Give
    /// the peers found to [`Session::handle_peers`] with [`PeerSource::Dht`] and report
    /// the end with [`Session::handle_dht_done`]. Only with [`SessionConfig::dht`].
    DhtLookup {
        /// The torrent.
        torrent: TorrentId,
        /// Its info-hash.
        info_hash: InfoHash,
        /// Announce ourselves too (we have a listen port).
        announce: bool,
        /// This lookup's number, for [`Session::handle_dht_done`].
        seq: u64,
    },
    /// The info dictionary of `torrent` (a magnet link) arrived, read it with
    /// [`Session::info_bytes`]: check what data is already on disk and answer with
    /// [`Session::handle_checked`] and the pieces that verified (an empty bitfield when
    /// there is none). The torrent waits in [`TorrentState::Checking`] meanwhile and
    /// downloads only what is missing. Unlike an event, an action is never dropped.
    CheckData {
        /// The torrent.
        torrent: TorrentId,
    },
    /// Download these bytes from web seed `seed` (BEP 19; only with
    /// [`SessionConfig::web_seeds`]): each range in order, `Range` requests of the
    /// files' URLs (a pad file's range is zeros). Hand the bytes on in order with
    /// [`Session::handle_webseed_data`] (never more than the ranges add up to), then
    /// report [`Session::handle_webseed_done`] or [`Session::handle_webseed_failed`].
    WebSeedRequest {
        /// The torrent.
        torrent: TorrentId,
        /// The web seed.
        seed: WebSeedId,
        /// This request's number, for the `handle_webseed_*` calls.
        req: u64,
        /// The byte ranges, file by file.
        ranges: Vec<WebSeedRange>,
    },
}

/// The BEP 11 `added.f` flags of a connection, for the PEX messages that name it.
fn pex_flags(c: &Conn) -> u8 {
    use crate::pex::{FLAG_HOLEPUNCH, FLAG_REACHABLE, FLAG_SEED, FLAG_UTP};
    let mut f = 0;
    if c.transport == Transport::Utp {
        f |= FLAG_UTP;
    }
    if c.holepunch.their_id.is_some() {
        f |= FLAG_HOLEPUNCH;
    }
    if c.outgoing {
        f |= FLAG_REACHABLE;
    }
    if c.peer.is_seed() {
        f |= FLAG_SEED;
    }
    f
}

/// What happened, for the application (a bounded queue it drains).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A piece passed its hash check.
    PieceVerified(TorrentId, PieceIndex),
    /// A piece failed its hash check and will be downloaded again.
    HashFailed(TorrentId, PieceIndex),
    /// Every wanted piece is verified (every piece unless files are skipped,
    /// [`Session::set_file_priorities`]): the torrent seeds from now on, or, with
    /// files skipped, stops requesting. Emitted each time the torrent becomes
    /// finished, however it got there: the last piece verified, a check of the data on
    /// disk ([`Session::handle_checked`]) or resume data ([`Session::add_torrent`])
    /// that found every wanted piece (as libtorrent's `torrent_finished_alert` after a
    /// check), and again after more files became wanted and arrived.
    TorrentFinished(TorrentId),
    /// The torrent's upload ratio reached its limit ([`Session::set_ratio_limit`]):
    /// it was paused (it stops seeding).
    RatioReached(TorrentId),
    /// The finished torrent uploaded nothing for its idle limit
    /// ([`Session::set_idle_limit`], [`SessionConfig::seed_idle_minutes`]): it was
    /// paused (it stops seeding).
    IdleLimitReached(TorrentId),
    /// The torrent waits in its queue ([`SessionConfig::download_queue`],
    /// [`SessionConfig::seed_queue`]): its connections were closed and `stopped`
    /// announced.
    TorrentQueued(TorrentId),
    /// The torrent left its queue and runs (announces `started`, dials its peers).
    TorrentDequeued(TorrentId),
    /// A peer connection completed its handshake.
    PeerConnected(TorrentId, SocketAddr),
    /// Our external address of one family is now this one: set by the host (its
    /// router said so, [`Session::set_external_address`]) or seen by peers of
    /// [`EXTERNAL_VOTERS`] distinct subnets in their `yourip`. The host hands it on to
    /// the DHT (BEP 42: the node id derived from it).
    ExternalAddress(IpAddr),
    /// A peer was banned for bad data: its IP address is refused from now on, on
    /// every torrent, whatever its port or peer id. The port is that of the
    /// connection it sent from (0 when none was open any more).
    PeerBanned(TorrentId, SocketAddr),
    /// A disk error stopped the torrent: reported once, for the first error (the
    /// blocks in flight that fail after it make no event of their own).
    DiskFailed(TorrentId, DiskError),
    /// A magnet link's info dictionary arrived and checked out: the torrent downloads
    /// from now on (after the check of what is on disk, [`Action::CheckData`]). The
    /// application reads it with [`Session::info_bytes`].
    MetadataReceived(TorrentId),
    /// An announce to `tracker` failed: no answer in time, a transport error, or the
    /// tracker's `failure reason` (BEP 3), as the host reported it to
    /// [`Session::handle_announced_message`]. The walk has moved on to the next
    /// tracker. Both strings are at most [`SessionConfig::max_tracker_text`] bytes.
    TrackerError {
        /// The torrent.
        torrent: TorrentId,
        /// The tracker's URL.
        tracker: String,
        /// What went wrong (lossy UTF-8 of what the host gave; "announce failed"
        /// when it gave nothing).
        message: String,
    },
    /// `tracker` answered with a `warning message` (the announce still counted).
    /// Both strings are at most [`SessionConfig::max_tracker_text`] bytes.
    TrackerWarning {
        /// The torrent.
        torrent: TorrentId,
        /// The tracker's URL.
        tracker: String,
        /// The tracker's text (lossy UTF-8).
        message: String,
    },
    /// A step of BEP 55 hole punching ([`SessionConfig::holepunch`]), for the log.
    Holepunch(TorrentId, HolepunchEvent),
}

/// `bytes` as text of at most `max` bytes (lossy UTF-8, cut at a character
/// boundary); only that much of the input is read.
fn tracker_text(bytes: &[u8], max: usize) -> String {
    let mut s = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned();
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) torrent: Option<TorrentId>,
    pub(crate) addr: SocketAddr,
    pub(crate) outgoing: bool,
    pub(crate) connected: bool,
    /// TCP or uTP.
    pub(crate) transport: Transport,
    /// When the current dial went out (outgoing connections).
    pub(crate) dialed_at: Instant,
    /// The transport answered the dial (a uTP connection is up; the encryption
    /// handshake may still run): no fallback to TCP from here.
    pub(crate) transport_up: bool,
    /// The host's encryption handshake settled on RC4 ([`Session::set_encrypted`]).
    pub(crate) encrypted: bool,
    pub(crate) peer: PeerConn,
    pub(crate) reads_in_flight: usize,
    pub(crate) send_flagged: bool,
    /// Counted in the picker's availability.
    pub(crate) counted: bool,
    /// The peer's id for `ut_metadata` (BEP 9), from its extension handshake.
    pub(crate) their_ut_metadata: Option<u8>,
    /// The metadata size the peer claims (BEP 9 `metadata_size`, or the `total_size`
    /// of its first data message), within the configured bound.
    pub(crate) metadata_size: Option<u32>,
    /// The peer's id for `ut_pex` (BEP 11).
    pub(crate) their_ut_pex: Option<u8>,
    /// The peer's listen port (`p` in its extension handshake).
    pub(crate) listen_port: Option<u16>,
    /// Where we heard of the peer when we dialed it ([`PeerOrigin::Incoming`]: it
    /// dialed us).
    pub(crate) origin: PeerOrigin,
    /// What our PEX messages told this peer is in the swarm.
    pub(crate) pex_sent: Vec<SocketAddr>,
    /// When we last sent it a PEX message.
    pub(crate) last_pex: Option<Instant>,
    /// `ut_metadata` pieces it asked for that wait for room in its send queue.
    pub(crate) metadata_deferred: Vec<u32>,
    /// BEP 55: the peer's id, rate windows, whether a relay asked for this dial.
    pub(crate) holepunch: holepunch::ConnHolepunch,
    /// BEP 52 hash requests of the peer answered so far (capped, see `layers.rs`).
    pub(crate) hash_answers: u32,
}

impl Conn {
    /// A connection: an incoming one is connected at once, an outgoing one when the
    /// host says so.
    fn new(
        torrent: Option<TorrentId>,
        addr: SocketAddr,
        outgoing: bool,
        transport: Transport,
        peer: PeerConn,
    ) -> Self {
        Self {
            torrent,
            addr,
            outgoing,
            connected: !outgoing,
            transport,
            dialed_at: peer.created(),
            transport_up: false,
            encrypted: false,
            peer,
            reads_in_flight: 0,
            send_flagged: false,
            counted: false,
            their_ut_metadata: None,
            metadata_size: None,
            their_ut_pex: None,
            listen_port: None,
            origin: if outgoing {
                PeerOrigin::User
            } else {
                PeerOrigin::Incoming
            },
            pex_sent: Vec::new(),
            last_pex: None,
            metadata_deferred: Vec::new(),
            holepunch: holepunch::ConnHolepunch::default(),
            hash_answers: 0,
        }
    }

    /// The address other peers can dial this peer at: where we dialed it, or its
    /// advertised listen port for an incoming connection.
    pub(crate) fn dialable(&self) -> Option<SocketAddr> {
        if self.outgoing {
            Some(self.addr)
        } else {
            self.listen_port
                .filter(|p| *p != 0)
                .map(|p| SocketAddr::new(self.addr.ip(), p))
        }
    }
}

/// The torrent session. See the module docs for the flow and the poll order.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    rng: Rng,
    next_conn: u32,
    next_torrent: u32,
    torrents: BTreeMap<TorrentId, Torrent>,
    conns: BTreeMap<ConnId, Conn>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    /// Our external address, IPv4 then IPv6: set by the host or voted by peers.
    external: [crate::dht::bep42::IpVoter; 2],
    disk_in_flight: usize,
    next_tick: Instant,
    /// Addresses banned for bad data.
    bans: BanList,
    /// The rate of announce starts.
    announce_budget: AnnounceBudget,
    /// The number of the next announce.
    next_announce: u64,
    /// When peer turnover runs next (set at the first timer).
    next_turnover: Option<Instant>,
    /// When each public torrent is looked up on the DHT.
    dht: dht_schedule::DhtSchedule,
    /// The id of the next web seed, and the number of the next web seed request.
    next_web_seed: u32,
    next_web_req: u64,
    /// BEP 55 rate windows and the addresses we asked relays for.
    holepunch: holepunch::HolepunchState,
}

/// Events kept before the oldest are dropped (the application drains them).
const MAX_EVENTS: usize = 4096;

/// Most `have` messages sent to a peer connected before the check of a magnet link's
/// data (9 bytes each); a peer that would need more is reconnected instead.
const MAX_HAVES_AFTER_CHECK: usize = 256;

impl Event {
    /// Whether the event changes what the application must do about a torrent
    /// (save the metadata of a magnet link, stop on a disk error, report the end of a
    /// download): such an event is never the one dropped from a full queue.
    fn is_state_change(&self) -> bool {
        matches!(
            self,
            Event::MetadataReceived(_)
                | Event::TorrentFinished(_)
                | Event::DiskFailed(..)
                | Event::RatioReached(_)
                | Event::IdleLimitReached(_)
        )
    }
}

/// Peers from this many distinct subnets (IPv4 /24, IPv6 /48) must agree on our
/// `yourip` before it is taken as our external address (as the DHT's BEP 42 vote).
pub const EXTERNAL_VOTERS: usize = 4;
/// The shortest block a host holds by reference ([`Session::handle_read_held`]);
/// shorter ones are copied in ([`Session::handle_read_done`]). Held, a 1-byte block a
/// peer asked for would cost the host a buffer and queue entries (some 200 bytes) for
/// the one byte the send cap counts.
pub const HOLD_MIN: u32 = 4096;

/// The largest batch [`Session::recv_batch`] asks a host to wait for.
pub const RECV_BATCH_MAX: usize = 256 * 1024;

/// How long a host lets a batching connection ([`Session::recv_batch`]) go unread at
/// most: the delay a choke or a reject can see while a download streams.
pub const RECV_BATCH_MAX_WAIT_MS: u64 = 20;

/// Whether `ip` can be an external address: not unspecified, loopback, multicast,
/// link-local or private (a peer on the LAN sees our LAN address).
fn external_candidate(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_link_local()
                || a.is_private()
                || a.is_broadcast())
        }
        IpAddr::V6(a) => {
            let seg = a.segments()[0];
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || (seg & 0xffc0) == 0xfe80
                || (seg & 0xfe00) == 0xfc00)
        }
    }
}

/// Queues `e`, keeping at most `cap` events: past it, the oldest event that is no
/// state change goes (the oldest of all only when every one is).
fn push_bounded(q: &mut VecDeque<Event>, e: Event, cap: usize) {
    if q.len() >= cap.max(1) {
        match q.iter().position(|old| !old.is_state_change()) {
            Some(i) => {
                q.remove(i);
            }
            None => {
                q.pop_front();
            }
        }
    }
    q.push_back(e);
}

impl Session {
    /// A session; `seed` feeds the random generator (tie-breaks, optimistic unchoke).
    pub fn new(config: SessionConfig, seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            next_conn: 1,
            next_torrent: 1,
            torrents: BTreeMap::new(),
            conns: BTreeMap::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            external: [
                crate::dht::bep42::IpVoter::new(EXTERNAL_VOTERS),
                crate::dht::bep42::IpVoter::new(EXTERNAL_VOTERS),
            ],
            disk_in_flight: 0,
            next_tick: Instant::ZERO,
            announce_budget: AnnounceBudget::new(Instant::ZERO, config.announces_per_second),
            next_announce: 1,
            bans: BanList::new(config.max_banned_ips, config.max_bans_per_ipv6_48),
            next_turnover: None,
            dht: dht_schedule::DhtSchedule::default(),
            next_web_seed: 0,
            next_web_req: 1,
            holepunch: holepunch::HolepunchState::default(),
            config,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Changes the configuration while running, as libtorrent's `apply_settings`
    /// does; the peer id stays. What is over the new caps comes under them at once:
    /// connections past a torrent's [`SessionConfig::max_peers_per_torrent`], then
    /// past [`SessionConfig::max_connections`], are closed
    /// ([`PeerError::ConnectionLimit`]), those still in their handshake first (the
    /// newest first), then the least useful established ones (as turnover ranks
    /// them). The disk cap, PEX, the DHT schedule, the announce and turnover
    /// settings apply from the next call on; what is sized when made (the ban list, the
    /// announce rate's bucket, each connection's own limits in `peer`, each torrent's
    /// picker) keeps its size, and connections and torrents made from now on take the
    /// new values.
    pub fn set_config(&mut self, now: Instant, mut config: SessionConfig) {
        config.peer_id = self.config.peer_id;
        self.config = config;
        let tids: Vec<TorrentId> = self.torrents.keys().copied().collect();
        for tid in tids {
            self.shed_torrent(now, tid);
        }
        let order = self.shedding_order(now, None);
        let over = order.len().saturating_sub(self.config.max_connections);
        for k in order.into_iter().take(over) {
            self.close(k, CloseReason::Peer(PeerError::ConnectionLimit));
        } // New queue sizes.
        self.run_queue(now);
    }

    /// The connections of torrent `tid` (None: all), in the order a lowered cap
    /// closes them: still in their handshake first (the newest first), then the
    /// established ones, the least useful first.
    fn shedding_order(&self, now: Instant, tid: Option<TorrentId>) -> Vec<ConnId> {
        let mut v: Vec<(
            bool,
            Usefulness,
            core::cmp::Reverse<Instant>,
            core::cmp::Reverse<ConnId>,
        )> = self
            .conns
            .iter()
            .filter(|(_, c)| tid.is_none() || c.torrent == tid)
            .map(|(k, c)| {
                let t = c.torrent.and_then(|t| self.torrents.get(&t));
                let useful = match t {
                    Some(t) if c.peer.is_established() => Self::usefulness(now, t, c),
                    _ => Usefulness::default(),
                };
                let established = t.is_some() && c.peer.is_established();
                (
                    established,
                    useful,
                    core::cmp::Reverse(c.peer.created()),
                    core::cmp::Reverse(*k),
                )
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, _, _, k)| k.0).collect()
    }

    fn reserved() -> Reserved {
        // Not the BEP 52 v2 bit: libtorrent takes a handshake that sets it as one
        // naming a truncated v2 info-hash, and refuses it for a v1 torrent ("invalid
        // info-hash"); v2 peers are found by their info-hashes alone.
        Reserved::NONE.with_fast(true).with_extension_protocol(true)
    }

    /// Adds a torrent from its file. `have` is resume data: pieces the host already
    /// verified (a bitfield); `None` means nothing yet (the host rechecks first if it
    /// has data on disk).
    pub fn add_torrent(
        &mut self,
        now: Instant,
        torrent_file: &[u8],
        have: Option<&Bitfield>,
    ) -> Result<TorrentId, AddError> {
        let id = self.insert_torrent(torrent_file, have)?;
        // Resume data that has every piece: finished at once, as after a check.
        self.note_finished(id);
        if self.enter_queue(now, id) {
            self.start_announcing(now, id);
        }
        Ok(id)
    }

    /// Adds a torrent whose data the host is still checking (as libtorrent and
    /// Transmission do, off the loop): it is listed in [`TorrentState::Checking`], with
    /// no piece, and neither announces nor takes or dials peers until
    /// [`Session::handle_checked`] gives the pieces found. Everything else runs on
    /// meanwhile.
    pub fn add_torrent_checking(
        &mut self,
        _now: Instant,
        torrent_file: &[u8],
    ) -> Result<TorrentId, AddError> {
        let id = self.insert_torrent(torrent_file, None)?;
        if let Some(t) = self.torrents.get_mut(&id) {
            t.state = TorrentState::Checking;
        }
        Ok(id)
    }

    /// The check of a torrent added with [`Session::add_torrent_checking`] is done:
    /// `have` holds the pieces that verified. The torrent starts (announces `started`
    /// and looks for peers, unless paused meanwhile). False, and nothing changed, when
    /// the torrent is unknown, not checking, or `have` has the wrong length.
    pub fn handle_checked(&mut self, now: Instant, id: TorrentId, have: &Bitfield) -> bool {
        let Some(t) = self.torrents.get_mut(&id) else {
            return false;
        };
        if t.state != TorrentState::Checking || !t.set_checked(have) {
            return false;
        }
        // A check again (`recheck`) that found data missing: downloading again.
        if t.finished && !t.is_finished() {
            t.finished = false;
        }
        // As libtorrent after a check: data found complete is a finished torrent
        // (and so in the seed queue).
        self.note_finished(id);
        // A magnet link's torrent announced while it fetched the metadata: its
        // schedule goes on (no second `started`).
        let idle = self
            .torrents
            .get(&id)
            .is_some_and(|t| !t.paused && t.announcer.is_none());
        if idle && self.enter_queue(now, id) {
            self.start_announcing(now, id);
        }
        self.checked_peers(now, id, have);
        if self.torrents.get(&id).is_some_and(|t| !t.is_stopped()) {
            self.connect_more(now);
        }
        true
    }

    /// After the check of a magnet link's data: the peers connected while the
    /// metadata was fetched were told we had nothing. They hear of the pieces found
    /// with `have` messages (at most [`MAX_HAVES_AFTER_CHECK`]; past it a connection is
    /// closed, to learn our bitfield when it connects again); then requests start.
    fn checked_peers(&mut self, now: Instant, id: TorrentId, have: &Bitfield) {
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.torrent == Some(id) && c.peer.is_established())
            .map(|(k, _)| *k)
            .collect();
        if conns.is_empty() {
            return;
        }
        let found = have.count() as usize;
        let complete = self.torrents.get(&id).is_some_and(|t| t.is_complete());
        for k in conns {
            let Some(c) = self.conns.get_mut(&k) else {
                continue;
            };
            if complete && c.peer.is_seed() {
                self.close(k, CloseReason::BothSeeds);
                continue;
            }
            if found > MAX_HAVES_AFTER_CHECK {
                self.close(k, CloseReason::Resync);
                continue;
            }
            for i in have.iter_set() {
                c.peer.send_have(PieceIndex(i));
            }
            self.update_interest(k);
            self.fill_requests(now, k);
        }
        self.flush_sends();
    }

    fn insert_torrent(
        &mut self,
        torrent_file: &[u8],
        have: Option<&Bitfield>,
    ) -> Result<TorrentId, AddError> {
        let mut tokens = Vec::new();
        let m = Metainfo::parse_vec(torrent_file, &mut tokens, &metainfo::Limits::default())
            .map_err(AddError::Metainfo)?;
        // A v2-only torrent is checked against its piece layers alone.
        if m.is_v2_only() && torrent::merkle_pieces(&m).is_none() {
            return Err(AddError::Metainfo(metainfo::MetainfoError {
                offset: 0,
                kind: metainfo::ErrorKind::MissingPieceLayer,
            }));
        }
        if let Some((&id, _)) = self
            .torrents
            .iter()
            .find(|(_, t)| t.info_hash == m.info_hash())
        {
            return Err(AddError::Duplicate(id));
        }
        let id = TorrentId(self.next_torrent);
        let mut t = Torrent::new(id, &m, have, &self.config).ok_or(AddError::BadResume)?;
        t.queue_pos = self.torrents.len() as u32;
        // BEP 12: `announce` only when there is no `announce-list`.
        let has_list = m.announce_tiers().flatten().next().is_some();
        t.trackers = if has_list {
            self.trackers_of(m.announce_tiers().map(|t| t.map(<[u8]>::to_vec)))
        } else {
            self.trackers_of(m.announce().map(|a| core::iter::once(a.to_vec())))
        };
        let max = self.config.max_web_seeds;
        for url in m.url_list() {
            t.web.add(url, &mut self.next_web_seed, max);
        }
        t.web.set_layout(&m);
        self.next_torrent += 1;
        self.torrents.insert(id, t);
        Ok(id)
    }

    /// Adds a torrent from a magnet link (BEP 9): the info dictionary is fetched from
    /// peers that support `ut_metadata`; the link's `x.pe` peers are dialed.
    pub fn add_magnet(&mut self, now: Instant, uri: &[u8]) -> Result<TorrentId, AddError> {
        let m = crate::magnet::Magnet::parse(uri).map_err(AddError::Magnet)?;
        let ih = m.info_hash();
        if let Some((&id, _)) = self.torrents.iter().find(|(_, t)| t.info_hash == ih) {
            return Err(AddError::Duplicate(id));
        }
        let id = TorrentId(self.next_torrent);
        self.next_torrent += 1;
        let mut t = Torrent::new_magnet(id, ih, &self.config);
        t.v2_link = m.info_hash_v1().is_none();
        t.queue_pos = self.torrents.len() as u32;
        t.active_since = now;
        // Each `tr` its own tier, as libtorrent does; a malformed escape drops it.
        t.trackers = self.trackers_of(m.trackers().iter().map(|raw| {
            crate::magnet::percent_decode(raw)
                .collect::<Result<Vec<u8>, _>>()
                .ok()
                .into_iter()
        }));
        // A magnet link is anyone's text: its peers are believed as a remote party's
        // (none of this machine).
        let remote = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let caps = self.known_caps();
        for p in m
            .peers()
            .filter(|p| netaddr::plausible_from(remote, p) && !self.bans.contains(p.ip()))
        {
            t.add_known_peer(p, None, PeerOrigin::User, caps);
        }
        // BEP 19 web seeds (`ws`); their file layout comes with the info dictionary.
        for raw in m.web_seeds() {
            if let Ok(url) = crate::magnet::percent_decode(raw).collect::<Result<Vec<u8>, _>>() {
                t.web
                    .add(&url, &mut self.next_web_seed, self.config.max_web_seeds);
            }
        }
        self.torrents.insert(id, t);
        if self.enter_queue(now, id) {
            self.start_announcing(now, id);
            self.connect_more(now);
        }
        Ok(id)
    }

    /// A torrent's trackers from its tiers of URLs: the empty, the non-UTF-8, those
    /// longer than [`MAX_TRACKER_URL_LEN`] and the repeated ones dropped, at most
    /// [`SessionConfig::max_trackers`] kept, each tier shuffled with the session's
    /// random generator (BEP 12).
    fn trackers_of<I, J>(&mut self, tiers: I) -> Trackers
    where
        I: IntoIterator<Item = J>,
        J: IntoIterator<Item = Vec<u8>>,
    {
        let mut seen: Vec<String> = Vec::new();
        let mut kept: Vec<Vec<announce::Tracker>> = Vec::new();
        for tier in tiers {
            if seen.len() >= self.config.max_trackers {
                break;
            }
            let mut urls = Vec::new();
            for url in tier {
                if seen.len() >= self.config.max_trackers {
                    break;
                }
                let Ok(url) = String::from_utf8(url) else {
                    continue;
                };
                if url.is_empty() || url.len() > MAX_TRACKER_URL_LEN || seen.contains(&url) {
                    continue;
                }
                seen.push(url.clone());
                urls.push(url.into());
            }
            kept.push(urls);
        }
        let rng = &mut self.rng;
        Trackers::new(kept, &mut |n| rng.below(n as u64) as usize)
    }

    /// The raw info dictionary of a torrent, once known (what a host saves as the
    /// `.torrent` of a magnet link).
    pub fn info_bytes(&self, id: TorrentId) -> Option<&[u8]> {
        self.torrents
            .get(&id)?
            .meta
            .as_ref()
            .map(|m| m.info.as_slice())
    }

    /// A torrent's metainfo once known, as a `.torrent` holds it without trackers: the
    /// info dictionary, and for a v2 torrent its `piece layers` (those of a magnet
    /// link came from peers). What a host parses to make the torrent's storage and
    /// check its data, and saves as its `.torrent`.
    pub fn metainfo_bytes(&self, id: TorrentId) -> Option<Vec<u8>> {
        let m = self.torrents.get(&id)?.meta.as_ref()?;
        let owned: Vec<([u8; 32], Vec<u8>)> = m
            .layered
            .iter()
            .filter_map(|f| Some((f.root, layers::layer_of(&m.merkle, f.first, f.pieces)?)))
            .collect();
        Some(layers::metainfo(
            &m.info,
            owned.iter().map(|(r, l)| (*r, l.as_slice())),
        ))
    }

    pub(crate) fn metadata_complete(
        &mut self,
        now: Instant,
        id: TorrentId,
        info: &[u8],
        config: &SessionConfig,
    ) {
        let Some(t) = self.torrents.get_mut(&id) else {
            return;
        };
        match t.metadata_received(info, config) {
            torrent::MetaOutcome::Ready => self.metadata_ready(now, id, config),
            torrent::MetaOutcome::NeedLayers => layers::request(self, now, id),
            torrent::MetaOutcome::Bad => {}
        }
    }

    /// A magnet link's torrent is whole (info dictionary, and piece layers for v2):
    /// its data is checked, then it downloads from the peers it has.
    pub(crate) fn metadata_ready(&mut self, now: Instant, id: TorrentId, config: &SessionConfig) {
        let Some(t) = self.torrents.get_mut(&id) else {
            return;
        };
        // What is on disk is checked before anything is downloaded: the torrent waits
        // in `Checking` (its connections stay, asking for nothing) until
        // `handle_checked`.
        let check = config.check_after_metadata;
        if check {
            t.state = TorrentState::Checking;
            self.actions.push_back(Action::CheckData { torrent: id });
        }
        self.push_event(Event::MetadataReceived(id));
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.torrent == Some(id) && c.peer.is_established())
            .map(|(k, _)| *k)
            .collect();
        for k in conns {
            let ok = match self.split(k) {
                Some((c, t, _)) => match t.meta.as_ref() {
                    Some(m) => {
                        let ok = c.peer.set_geometry(m.geometry);
                        ok.is_ok()
                    }
                    None => false,
                },
                None => false,
            };
            if ok {
                torrent::count_availability(self, k);
                self.fill_requests(now, k);
            } else {
                self.close(k, CloseReason::Peer(PeerError::BadBitfield));
            }
        }
        self.flush_sends();
    }

    /// BEP 11: tells each peer that speaks `ut_pex` which peers joined and left since
    /// the last message, at most once a minute (the first one two seconds after the
    /// handshake), never for private torrents.
    fn send_pex(&mut self, now: Instant) {
        if !self.config.pex {
            return;
        }
        let due: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.their_ut_pex.is_some() && c.peer.is_established())
            .filter(|(_, c)| match c.last_pex {
                None => now.since(c.peer.created()) >= Duration::from_secs(2),
                Some(t) => now.since(t) >= Duration::from_secs(60),
            })
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            let Some(c) = self.conns.get(&k) else {
                continue;
            };
            let Some(tid) = c.torrent else { continue };
            if self.torrents.get(&tid).is_none_or(|t| t.private) {
                continue;
            }
            // Each with its BEP 11 flags: uTP, `ut_holepunch` (BEP 55), reachable, seed.
            let with_flags: Vec<(SocketAddr, u8)> = self
                .conns
                .iter()
                .filter(|(o, oc)| **o != k && oc.torrent == Some(tid) && oc.peer.is_established())
                .filter_map(|(_, oc)| Some((oc.dialable()?, pex_flags(oc))))
                .collect();
            let swarm: Vec<SocketAddr> = with_flags.iter().map(|(a, _)| *a).collect();
            let Some(c) = self.conns.get_mut(&k) else {
                continue;
            };
            let added: Vec<SocketAddr> = swarm
                .iter()
                .filter(|a| !c.pex_sent.contains(a))
                .take(crate::pex::MAX_PEERS_PER_MESSAGE)
                .copied()
                .collect();
            let dropped: Vec<SocketAddr> = c
                .pex_sent
                .iter()
                .filter(|a| !swarm.contains(a))
                .take(crate::pex::MAX_PEERS_PER_MESSAGE)
                .copied()
                .collect();
            c.last_pex = Some(now);
            if added.is_empty() && dropped.is_empty() {
                continue;
            }
            c.pex_sent.retain(|a| !dropped.contains(a));
            c.pex_sent.extend_from_slice(&added);
            let mut payload = Vec::new();
            let flags: Vec<u8> = added
                .iter()
                .map(|a| {
                    with_flags
                        .iter()
                        .find(|(b, _)| b == a)
                        .map_or(0, |(_, f)| *f)
                })
                .collect();
            if crate::pex::write_pex_with_flags(&mut payload, &added, &flags, &dropped).is_ok() {
                if let Some(id) = c.their_ut_pex {
                    c.peer.send_extended(id, &payload);
                }
            }
            self.flag_send(k);
        }
    }

    /// Unchokes `conn` when its torrent has a free upload slot.
    pub(crate) fn unchoke_if_room(&mut self, conn: ConnId) {
        let Some(tid) = self.conns.get(&conn).and_then(|c| c.torrent) else {
            return;
        };
        let slots = self.config.choker.upload_slots;
        let unchoked = self
            .conns
            .values()
            .filter(|c| c.torrent == Some(tid) && c.peer.is_established() && !c.peer.am_choking())
            .count();
        if slots == 0 || unchoked < slots {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.peer.set_choking(false);
            }
            self.flag_send(conn);
        }
    }

    /// Stops a torrent: closes its connections and announces `stopped`.
    pub fn remove_torrent(&mut self, now: Instant, id: TorrentId) {
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.torrent == Some(id))
            .map(|(k, _)| *k)
            .collect();
        for c in conns {
            self.close(c, CloseReason::TorrentStopped);
        }
        self.stop_announcing(id);
        if let Some(t) = self.torrents.remove(&id) {
            self.close_queue_gap(t.queue_pos);
        }
        self.run_announces(now);
        self.run_queue(now);
    }

    /// Pauses a torrent: closes its connections, announces `stopped`, refuses its peers
    /// and dials nobody until [`Session::resume_torrent`]. What it has is kept. A
    /// queued torrent leaves its queue; a running one frees its slot.
    pub fn pause_torrent(&mut self, now: Instant, id: TorrentId) -> bool {
        let Some(t) = self.torrents.get_mut(&id) else {
            return false;
        };
        t.force_start = false;
        let was_queued = core::mem::take(&mut t.queued);
        if t.paused {
            return true;
        }
        t.paused = true;
        if !was_queued {
            // Its slot goes to the next torrent in its queue.
            self.run_queue(now);
        }
        self.stop_announcing(id);
        self.run_announces(now);
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.torrent == Some(id))
            .map(|(k, _)| *k)
            .collect();
        for c in conns {
            self.close(c, CloseReason::TorrentStopped);
        }
        true
    }

    /// Resumes a paused torrent: announces `started` and dials its known peers again;
    /// when its queue is full it waits queued instead ([`Session::resume_now`] does
    /// not).
    pub fn resume_torrent(&mut self, now: Instant, id: TorrentId) -> bool {
        let Some(t) = self.torrents.get_mut(&id) else {
            return false;
        };
        if t.paused {
            t.paused = false;
            // A torrent still checking starts when its check is done.
            if t.state != TorrentState::Checking && self.enter_queue(now, id) {
                self.start_announcing(now, id);
                self.connect_more(now);
            }
        }
        true
    }

    /// How the announce of torrent `id` to one tracker (an [`Action::Announce`]) went.
    /// An answer schedules the next announce: after that tracker's `interval`, never
    /// sooner than its `min interval` however short of peers the torrent is; the
    /// tracker moves to the front of its tier. A failure backs that tracker off and
    /// the walk asks the next one (next in the tier, then the next tier); when none is
    /// left the torrent backs off. False when the torrent is unknown or has no
    /// announce waiting (a late report, or the `stopped` one: nothing to do).
    pub fn handle_announced(
        &mut self,
        now: Instant,
        id: TorrentId,
        seq: u64,
        outcome: AnnounceOutcome,
    ) -> bool {
        self.handle_announced_message(now, id, seq, outcome, b"")
    }

    /// [`Session::handle_announced`] with the tracker's words: for
    /// [`AnnounceOutcome::Failed`], why (its `failure reason`, or the transport
    /// error), reported as an [`Event::TrackerError`]; for
    /// [`AnnounceOutcome::Answered`], its `warning message` (empty: none), reported as
    /// an [`Event::TrackerWarning`]. A report the walk does not take (late, unasked)
    /// makes no event.
    pub fn handle_announced_message(
        &mut self,
        now: Instant,
        id: TorrentId,
        seq: u64,
        outcome: AnnounceOutcome,
        message: &[u8],
    ) -> bool {
        self.handle_announce_report(now, id, seq, outcome, message, AnnounceCounts::default())
    }

    /// [`Session::handle_announced_message`] with the swarm counts of the answer
    /// (seeders, leechers, completed downloads, peers given), kept for
    /// [`Session::tracker_status`] (with the message). The counts of a failed exchange
    /// are ignored: the tracker's last answer keeps its own.
    pub fn handle_announce_report(
        &mut self,
        now: Instant,
        id: TorrentId,
        seq: u64,
        outcome: AnnounceOutcome,
        message: &[u8],
        counts: AnnounceCounts,
    ) -> bool {
        let Some(t) = self.torrents.get_mut(&id) else {
            return false;
        };
        let limits = Self::walk_limits(&self.config);
        let max = self.config.max_tracker_text;
        let record = |r: &mut announce::TrackerRecord| {
            let (ok, text): (bool, &[u8]) = match outcome {
                AnnounceOutcome::Answered { .. } => {
                    r.counts = counts;
                    (true, message)
                }
                AnnounceOutcome::Failed if message.is_empty() => (false, b"announce failed"),
                AnnounceOutcome::Failed => (false, message),
                AnnounceOutcome::NoTrackers => (false, b"no tracker client"),
            };
            r.last = Some((now, ok));
            r.text = tracker_text(text, max);
        };
        let Some((sent, pos)) = t
            .announcer
            .as_mut()
            .and_then(|a| a.answered(now, seq, outcome, &mut t.trackers, limits, record))
        else {
            return false;
        };
        let tracker = || {
            tracker_text(
                t.trackers.get(pos).map_or(&b""[..], |u| u.url.as_bytes()),
                max,
            )
        };
        let event = match outcome {
            AnnounceOutcome::Failed => Some(Event::TrackerError {
                torrent: id,
                tracker: tracker(),
                message: tracker_text(
                    if message.is_empty() {
                        b"announce failed"
                    } else {
                        message
                    },
                    max,
                ),
            }),
            AnnounceOutcome::Answered { .. } if !message.is_empty() => {
                Some(Event::TrackerWarning {
                    torrent: id,
                    tracker: tracker(),
                    message: tracker_text(message, max),
                })
            }
            _ => None,
        };
        if sent == Some(AnnounceEvent::Completed)
            && matches!(outcome, AnnounceOutcome::Answered { .. })
        {
            t.completed_unsent = false;
        }
        if let Some(e) = event {
            self.push_event(e);
        }
        self.run_announces(now);
        true
    }

    /// The application asks torrent `id` to announce now (to find peers, or to tell
    /// the tracker what it has). It goes out as soon as the tracker's `min interval`
    /// allows (at once if it already does), as Transmission does; never sooner. A
    /// public torrent is also looked up on the DHT, as soon as
    /// [`SessionConfig::dht_short_of_peers_interval`] after the last lookup allows. False
    /// when the torrent is unknown or does not run (checking, paused), or has neither
    /// a tracker nor a DHT lookup to make.
    pub fn reannounce(&mut self, now: Instant, id: TorrentId) -> bool {
        let Some(t) = self.torrents.get_mut(&id) else {
            return false;
        };
        let Some(a) = t.announcer.as_mut() else {
            return false;
        };
        let trackers = a.request();
        let dht = self.config.dht
            && t.is_public_and_running()
            && self
                .dht
                .request(now, id, self.config.dht_short_of_peers_interval);
        if trackers {
            self.run_announces(now);
        }
        if dht {
            self.run_dht(now);
        }
        trackers || dht
    }

    /// The trackers of torrent `id` and what each last said, in announce order (tier
    /// by tier; in a tier, the one that answered last first): what Transmission's
    /// `trackerStats` shows. `None` for an unknown torrent. Its size is bounded by
    /// [`SessionConfig::max_trackers`] entries of at most
    /// [`SessionConfig::max_tracker_text`] bytes of text each (and their URLs).
    pub fn tracker_status(&self, id: TorrentId) -> Option<Vec<TrackerStatus>> {
        let t = self.torrents.get(&id)?;
        let a = t.announcer.as_ref();
        let next = a.and_then(Announcer::next_ms);
        let flying = a.and_then(Announcer::in_flight_tracker);
        Some(
            t.trackers
                .iter()
                .map(|(pos, tr, health)| {
                    let r = &tr.record;
                    TrackerStatus {
                        url: tr.url.clone(),
                        tier: u32::try_from(pos.tier).unwrap_or(u32::MAX),
                        announcing: flying == Some(pos),
                        last_announce: r.last.map(|(at, _)| at),
                        last_announce_ok: r.last.is_some_and(|(_, ok)| ok),
                        last_result: r.text.clone(),
                        seeders: r.counts.seeders,
                        leechers: r.counts.leechers,
                        downloaded: r.counts.downloaded,
                        last_peers: r.counts.peers,
                        next_announce: next
                            .map(|n| Instant::from_millis(n.max(health.retry_at_ms()))),
                        interval: r.interval.map(|(i, _)| i),
                        min_interval: r.interval.map(|(_, m)| m),
                        failures: health.fails(),
                    }
                })
                .collect(),
        )
    }

    /// Replaces the trackers of torrent `id` with `tiers` (BEP 12 tiers of announce
    /// URLs, first tier first): what Transmission's `trackerList`, `trackerAdd`,
    /// `trackerRemove` and `trackerReplace` edit. Empty tiers and repeated URLs are
    /// dropped; each tier is shuffled as for a torrent added (BEP 12). A tracker that
    /// stays keeps its record (its last answer, its backoff, whether it is to be told
    /// `stopped`); a removed one is not told `stopped`, and the report of an announce
    /// to it still on its way is ignored. A running torrent announces to a new list
    /// on its schedule (at once when it had no tracker before and `started` is owed).
    /// Refused as a whole, changing nothing, when a URL is empty, longer than 1024
    /// bytes, or not an `http://`, `https://` or `udp://` URL with a host, or when
    /// there are more than [`SessionConfig::max_trackers`] URLs.
    pub fn set_trackers(
        &mut self,
        now: Instant,
        id: TorrentId,
        tiers: Vec<Vec<String>>,
    ) -> Result<(), TrackerListError> {
        if !self.torrents.contains_key(&id) {
            return Err(TrackerListError::UnknownTorrent);
        }
        let mut seen: Vec<&str> = Vec::new();
        for url in tiers.iter().flatten() {
            if url.is_empty() || url.len() > MAX_TRACKER_URL_LEN {
                return Err(TrackerListError::BadLength);
            }
            if !announce::known_tracker_url(url) {
                return Err(TrackerListError::UnsupportedUrl);
            }
            if !seen.contains(&url.as_str()) {
                if seen.len() >= self.config.max_trackers {
                    return Err(TrackerListError::TooMany);
                }
                seen.push(url);
            }
        }
        let new = self.trackers_of(
            tiers
                .into_iter()
                .map(|t| t.into_iter().map(String::into_bytes)),
        );
        let Some(t) = self.torrents.get_mut(&id) else {
            return Err(TrackerListError::UnknownTorrent);
        };
        let mut old = core::mem::replace(&mut t.trackers, new);
        // Records follow their URL.
        let positions: Vec<(TrackerPos, String)> = t
            .trackers
            .iter()
            .map(|(p, tr, _)| (p, tr.url.clone()))
            .collect();
        let mut old_pos: Vec<(TrackerPos, TrackerPos)> = Vec::new();
        for (p, url) in &positions {
            let found = old
                .iter()
                .find(|(_, tr, _)| tr.url == *url)
                .map(|(op, _, _)| op);
            let Some(op) = found else {
                continue;
            };
            old_pos.push((op, *p));
            if let (Some((otr, oh)), Some((ntr, nh))) = (old.get_mut(op), t.trackers.get_mut(*p)) {
                ntr.record = core::mem::take(&mut otr.record);
                *nh = *oh;
            }
        }
        t.trackers.restart();
        let has = !t.trackers.is_empty();
        if let Some(a) = t.announcer.as_mut() {
            a.trackers_replaced(has, |p| {
                old_pos.iter().find(|(op, _)| *op == p).map(|(_, np)| *np)
            });
            self.run_announces(now);
        }
        Ok(())
    }

    /// Whether torrent `id` is short of peers: it still downloads (or fetches its
    /// metadata) with fewer established connections than
    /// [`SessionConfig::peer_low_watermark`]. The one threshold for every source: the
    /// session announces early to trackers on it (within `min interval`), and looks
    /// the torrent up on the DHT sooner (within
    /// [`SessionConfig::dht_short_of_peers_interval`]).
    pub fn short_of_peers(&self, id: TorrentId) -> bool {
        let peers = self
            .conns
            .values()
            .filter(|c| c.torrent == Some(id) && c.peer.is_established())
            .count();
        self.torrents
            .get(&id)
            .is_some_and(|t| self.is_short(t, peers))
    }

    /// The torrents short of peers ([`Session::short_of_peers`]), in one pass over
    /// the connections.
    pub fn torrents_short_of_peers(&self) -> Vec<TorrentId> {
        let peers = self.established_per_torrent();
        self.torrents
            .iter()
            .filter(|(id, t)| self.is_short(t, peers.get(id).copied().unwrap_or(0)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// How DHT lookup `seq` of torrent `id` (an [`Action::DhtLookup`]) went: the next
    /// one is scheduled from it (see `dht_schedule.rs`). False when the torrent has no
    /// such lookup running (a late report, or one given up on after
    /// [`DHT_LOOKUP_TIMEOUT`]).
    pub fn handle_dht_done(
        &mut self,
        now: Instant,
        id: TorrentId,
        seq: u64,
        outcome: DhtOutcome,
    ) -> bool {
        self.dht.done(now, id, seq, outcome)
    }

    /// Starts the DHT lookups that are due ([`SessionConfig::dht`]): for the public
    /// torrents that run and are past their check, within the session's caps.
    fn run_dht(&mut self, now: Instant) {
        if !self.config.dht {
            return;
        }
        let peers = self.established_per_torrent();
        // In id order, as the schedule expects.
        let eligible: Vec<dht_schedule::Eligible> = self
            .torrents
            .iter()
            .filter(|(_, t)| t.is_public_and_running())
            .map(|(id, t)| dht_schedule::Eligible {
                id: *id,
                info_hash: t.info_hash,
                info_hash_v2: t.info_hash_v2_short(),
                short: self.is_short(t, peers.get(id).copied().unwrap_or(0)),
            })
            .collect();
        self.dht
            .run(now, &eligible, &self.config, &mut self.actions);
    }

    /// The public torrents that run and are past their check: those the DHT and local
    /// service discovery may speak of (never a private torrent, BEP 27).
    pub fn public_running_torrents(&self) -> impl Iterator<Item = (TorrentId, InfoHash)> + '_ {
        self.torrents
            .iter()
            .filter(|(_, t)| t.is_public_and_running())
            .map(|(id, t)| (*id, t.info_hash))
    }

    /// DHT lookups of torrents running now.
    pub fn dht_lookups_in_flight(&self) -> usize {
        self.dht.in_flight()
    }

    fn established_per_torrent(&self) -> BTreeMap<TorrentId, usize> {
        let mut peers: BTreeMap<TorrentId, usize> = BTreeMap::new();
        for c in self.conns.values().filter(|c| c.peer.is_established()) {
            if let Some(t) = c.torrent {
                *peers.entry(t).or_default() += 1;
            }
        }
        peers
    }

    fn is_short(&self, t: &Torrent, established: usize) -> bool {
        !t.is_stopped()
            && !t.finished
            && !matches!(
                t.state,
                TorrentState::Seeding | TorrentState::Checking | TorrentState::Error
            )
            && established < self.config.peer_low_watermark
    }

    /// The per-address connection caps: (how an address maps to its party, the cap)
    /// for an IPv4 address or IPv6 /64, then for an IPv6 /48.
    fn party_caps(&self) -> [(Party, usize); 2] {
        [
            (netaddr::group, self.config.max_peers_per_ip),
            (netaddr::site, self.config.max_peers_per_ipv6_48),
        ]
    }

    /// Torrent `id` starts: `started` is due.
    fn start_announcing(&mut self, now: Instant, id: TorrentId) {
        let Some(t) = self.torrents.get_mut(&id) else {
            return;
        };
        // A `completed` no tracker acknowledged yet (the torrent was paused first) is
        // still owed.
        let mut a = Announcer::new(
            t.is_complete() && !t.completed_unsent,
            now,
            !t.trackers.is_empty(),
        );
        if t.completed_unsent {
            a.on_completed(now);
        }
        t.trackers.restart();
        t.announcer = Some(a);
        self.run_announces(now);
    }

    /// Torrent `id` stops: `stopped` goes out at once to each tracker that answered
    /// since it started, and to the one asked if an exchange is in flight.
    fn stop_announcing(&mut self, id: TorrentId) {
        let Some(t) = self.torrents.get_mut(&id) else {
            return;
        };
        if let Some(a) = t.announcer.take().filter(Announcer::announced) {
            let mut told: Vec<TrackerPos> = t.trackers.answered().map(|(p, _)| p).collect();
            if let Some(p) = a.in_flight_tracker().filter(|p| !told.contains(p)) {
                told.push(p);
            }
            for p in told {
                if let Some(tr) = t.trackers.get(p) {
                    t.push_announce(
                        Some(AnnounceEvent::Stopped),
                        0,
                        tr.url.clone(),
                        &mut self.actions,
                    );
                }
            }
        }
        t.trackers.forget_answered();
    }

    fn walk_limits(config: &SessionConfig) -> WalkLimits {
        WalkLimits {
            max_trackers: config.max_trackers_per_walk.max(1),
            retry_max_ms: config.tracker_retry_max.as_millis(),
        }
    }

    /// Starts the announces that are due, within the session's rate and in-flight caps
    /// (see `announce.rs`): those on schedule first, then the early ones.
    fn run_announces(&mut self, now: Instant) {
        let peers = self.established_per_torrent();
        let short: Vec<TorrentId> = self
            .torrents
            .iter()
            .filter(|(id, t)| {
                t.announcer.is_some() && self.is_short(t, peers.get(id).copied().unwrap_or(0))
            })
            .map(|(id, _)| *id)
            .collect();
        let mut in_flight = 0;
        // Events, intervals and retries before early announces; among them, the
        // longest overdue first.
        let limits = Self::walk_limits(&self.config);
        let mut due: Vec<(Due, u64, TorrentId)> = Vec::new();
        for (&id, t) in &mut self.torrents {
            let Some(a) = t.announcer.as_mut() else {
                continue;
            };
            a.expire(now, &mut t.trackers, limits);
            if a.in_flight() {
                in_flight += 1;
            } else if let Some(d) = a.due(now, short.binary_search(&id).is_ok(), &t.trackers) {
                due.push((d, a.due_ms(), id));
            }
        }
        due.sort_unstable();
        for (_, _, id) in due {
            if in_flight >= self.config.max_announces_in_flight
                || !self
                    .announce_budget
                    .take(now, self.config.announces_per_second)
            {
                break;
            }
            let Some(t) = self.torrents.get_mut(&id) else {
                continue;
            };
            let Some(a) = t.announcer.as_mut() else {
                continue;
            };
            let seq = self.next_announce;
            let Some((pos, event)) = a.send(
                now,
                seq,
                self.config.announce_timeout,
                &mut t.trackers,
                limits,
            ) else {
                continue;
            };
            let Some(url) = t.trackers.get(pos).map(|t| t.url.clone()) else {
                continue;
            };
            self.next_announce += 1;
            t.push_announce(event, seq, url, &mut self.actions);
            in_flight += 1;
        }
    }

    /// Peer addresses for a torrent from `source` (a tracker, the DHT, local service
    /// discovery, or the user). Addresses of this machine are dropped unless the
    /// source is on it too ([`PeerSource`]), and so are banned ones; the rest become
    /// candidates to dial ([`SessionConfig::max_known_peers`]).
    pub fn handle_peers(
        &mut self,
        now: Instant,
        id: TorrentId,
        peers: &[SocketAddr],
        source: PeerSource,
    ) {
        let caps = self.known_caps();
        if let Some(t) = self.torrents.get_mut(&id) {
            for &a in peers
                .iter()
                .filter(|a| source.believes(a) && !self.bans.contains(a.ip()))
            {
                t.add_known_peer(a, None, source.origin(), caps);
            }
        }
        self.connect_more(now);
    }

    // ---- connections ----

    /// A peer connected to us from `addr`; returns the id to use for it.
    ///
    /// Room is made rather than the newcomer refused (libtorrent's peer turnover): an
    /// address that already has [`SessionConfig::max_peers_per_ip`] incoming
    /// connections in their handshake loses its oldest one (and so does an IPv6 /48
    /// at [`SessionConfig::max_peers_per_ipv6_48`]), and when the table holds
    /// [`SessionConfig::max_connections`], or incoming connections hold all but
    /// [`SessionConfig::outgoing_share`] of it, the least useful incoming connection
    /// still in its handshake is closed (from the address holding the most
    /// connections, the oldest first, none younger than
    /// [`SessionConfig::turnover_min_age`]). A connection we dialed never gives way to
    /// a newcomer. When there is no such connection the newcomer is refused, and so
    /// is a banned address: an [`Action::Close`] for it follows at once. Until its
    /// handshake arrives the connection holds its slot at most
    /// [`PeerConfig::incoming_handshake_timeout`](crate::peer::PeerConfig).
    pub fn handle_incoming(&mut self, now: Instant, addr: SocketAddr) -> ConnId {
        self.handle_incoming_over(now, addr, Transport::Tcp)
    }

    /// As [`Session::handle_incoming`], for a connection that came in over
    /// `transport` (a uTP SYN accepted by the host's uTP socket).
    pub fn handle_incoming_over(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        transport: Transport,
    ) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        if self.bans.contains(addr.ip()) {
            self.actions.push_back(Action::Close {
                conn: id,
                reason: CloseReason::Banned,
            });
            return id;
        }
        if !is_loopback(addr.ip()) {
            let pending = |c: &Conn| c.torrent.is_none() && !c.outgoing;
            let caps = self.party_caps();
            for (party, cap) in caps {
                let p = party(addr.ip());
                let mine: Vec<(Instant, ConnId)> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| pending(c) && party(c.addr.ip()) == p)
                    .map(|(k, c)| (c.peer.created(), *k))
                    .collect();
                if mine.len() >= cap.max(1) {
                    if let Some(&(_, oldest)) = mine.iter().min() {
                        self.close(oldest, CloseReason::Peer(PeerError::ConnectionLimit));
                    }
                }
            }
        }
        let incoming = self.conns.values().filter(|c| !c.outgoing).count();
        if self.conns.len() >= self.config.max_connections || incoming >= self.incoming_slots() {
            match self.least_useful(now, Some(addr.ip()), |c| !c.outgoing) {
                Some(victim) => self.close(victim, CloseReason::Peer(PeerError::ConnectionLimit)),
                None => {
                    self.actions.push_back(Action::Close {
                        conn: id,
                        reason: CloseReason::Peer(PeerError::ConnectionLimit),
                    });
                    return id;
                }
            }
        }
        let peer =
            PeerConn::new_incoming(self.config.peer, now, self.config.peer_id, Self::reserved());
        self.conns
            .insert(id, Conn::new(None, addr, false, transport, peer));
        id
    }

    /// The slots of the table incoming connections may hold: all but
    /// [`SessionConfig::outgoing_share`].
    fn incoming_slots(&self) -> usize {
        let max = self.config.max_connections;
        let share = (self.config.outgoing_share.min(100) as usize).saturating_mul(max) / 100;
        max - share
    }

    /// The connection to give up for a newcomer from `from` (None: a dial of ours)
    /// among those `eligible`: one still in its handshake (or still connecting), from
    /// the address holding the most connections (an IPv6 address counts what its
    /// /48 holds), the oldest first. One younger than
    /// [`SessionConfig::turnover_min_age`] gives way only when its address holds more
    /// than one connection more than the newcomer's: a party that renews all its
    /// connections at once cannot hide behind their youth. None when there is no such
    /// connection.
    fn least_useful(
        &self,
        now: Instant,
        from: Option<IpAddr>,
        eligible: impl Fn(&Conn) -> bool,
    ) -> Option<ConnId> {
        let min_age = self.config.turnover_min_age;
        let mut per_site: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for c in self.conns.values() {
            *per_site.entry(netaddr::site(c.addr.ip())).or_insert(0) += 1;
        }
        let held = |ip: IpAddr| per_site.get(&netaddr::site(ip)).copied().unwrap_or(0);
        let newcomer = from.map_or(0, held);
        self.conns
            .iter()
            .filter(|(_, c)| {
                !c.peer.is_established()
                    && (now.since(c.peer.created()) >= min_age || held(c.addr.ip()) > newcomer + 1)
                    && eligible(c)
            })
            .max_by_key(|(k, c)| {
                // Most connections first, then the oldest (smallest creation time,
                // then smallest id).
                (
                    held(c.addr.ip()),
                    core::cmp::Reverse(c.peer.created()),
                    core::cmp::Reverse(**k),
                )
            })
            .map(|(k, _)| *k)
    }

    /// How useful an established connection of torrent `t` is, for turnover: the
    /// smallest goes first. In order: we want something it has; it wants something
    /// of ours; it is not on parole; payload bytes per second since it connected; it
    /// does not choke us.
    fn usefulness(now: Instant, t: &Torrent, c: &Conn) -> Usefulness {
        let (down, up) = c.peer.totals();
        let secs = now.since(c.peer.created()).as_millis() / 1000 + 1;
        (
            c.peer.am_interested(),
            c.peer.peer_interested(),
            !t.smart.on_parole(c.addr.ip()),
            (down + up) / secs,
            !c.peer.peer_choking(),
        )
    }

    /// The established connections of torrent `tid` that turnover may close: at
    /// least [`SessionConfig::turnover_min_age`] old, no payload either way for
    /// `quiet`, and, with `idle`, wanting nothing from us nor we from them. The least
    /// useful first.
    fn turnover_candidates(
        &self,
        now: Instant,
        tid: TorrentId,
        quiet: Duration,
        idle: bool,
    ) -> Vec<ConnId> {
        let Some(t) = self.torrents.get(&tid) else {
            return Vec::new();
        };
        let min_age = self.config.turnover_min_age;
        let mut v: Vec<(Usefulness, ConnId)> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.torrent == Some(tid)
                    && c.peer.is_established()
                    && now.since(c.peer.created()) >= min_age
                    && now.since(c.peer.last_payload()) >= quiet
                    && (!idle || !(c.peer.am_interested() || c.peer.peer_interested()))
            })
            .map(|(k, c)| (Self::usefulness(now, t, c), *k))
            .collect();
        v.sort();
        v.into_iter().map(|(_, k)| k).collect()
    }

    /// Peer turnover (libtorrent's): every [`SessionConfig::peer_turnover_interval`],
    /// when the session holds [`SessionConfig::peer_turnover_cutoff`] percent of its
    /// connections, the torrent with the most connections closes
    /// [`SessionConfig::peer_turnover`] percent of them (at least one); otherwise
    /// each torrent that holds that share of its own cap does. Only connections that
    /// moved no payload for an interval go, the least useful first, and no more than
    /// peers wait for a slot (addresses to dial, incoming peers refused for lack of
    /// room since the last turnover).
    fn turnover(&mut self, now: Instant) {
        let interval = self.config.peer_turnover_interval;
        match self.next_turnover {
            None => {
                self.next_turnover = Some(now + interval);
                return;
            }
            Some(t) if now < t => return,
            Some(_) => self.next_turnover = Some(now + interval),
        }
        let (share, cutoff) = (
            self.config.peer_turnover as usize,
            self.config.peer_turnover_cutoff as usize,
        );
        if share == 0 {
            return;
        }
        let mut per_torrent: BTreeMap<TorrentId, usize> = BTreeMap::new();
        for c in self.conns.values() {
            if let Some(t) = c.torrent {
                *per_torrent.entry(t).or_insert(0) += 1;
            }
        }
        let max = self.config.max_connections;
        // As libtorrent: below six connections turnover would be too disruptive.
        let full: Vec<TorrentId> = if max > 5 && self.conns.len() * 100 >= max * cutoff {
            per_torrent
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(t, _)| *t)
                .into_iter()
                .collect()
        } else {
            per_torrent
                .iter()
                .filter(|(t, n)| {
                    let cap = self.peer_cap(**t);
                    cap > 5 && **n * 100 >= cap * cutoff
                })
                .map(|(t, _)| *t)
                .collect()
        };
        for tid in full {
            let n = per_torrent.get(&tid).copied().unwrap_or(0);
            let busy: Vec<SocketAddr> = self
                .conns
                .values()
                .filter(|c| c.torrent == Some(tid))
                .map(|c| c.addr)
                .collect();
            let backoff = self.config.reconnect_backoff;
            let Some(t) = self.torrents.get_mut(&tid) else {
                continue;
            };
            let waiting = t.dial_candidates(now, &busy, backoff, &self.bans)
                + core::mem::take(&mut t.refused);
            let drop = (n * share / 100).max(1).min(waiting);
            for k in self
                .turnover_candidates(now, tid, interval, false)
                .into_iter()
                .take(drop)
            {
                self.close(k, CloseReason::Peer(PeerError::ConnectionLimit));
            }
        }
        // Refusals count until the next turnover only.
        for t in self.torrents.values_mut() {
            t.refused = 0;
        }
    }

    /// Admits the peer of `conn`, whose handshake named torrent `tid` with `peer_id`
    /// (`conn` itself is not counted). A second connection of a peer id already
    /// connected to the torrent from the same address (IPv6: /64) closes: when the
    /// two are in opposite directions (both sides dialed at once), the one dialed by
    /// the side with the greater peer id stays, so that both ends keep the same one
    /// (libtorrent's rule); otherwise the newer one goes. From another address it is
    /// another peer: a peer id is only what the peer says, and one read from an
    /// honest peer's handshake must not lock that peer out. An incoming connection
    /// must also fit under [`SessionConfig::max_peers_per_ip`],
    /// [`SessionConfig::max_peers_per_ipv6_48`] and
    /// [`SessionConfig::max_peers_per_torrent`]: a full torrent gives up for it its
    /// least useful idle connection (established at least
    /// [`SessionConfig::turnover_min_age`] ago, no payload since, neither side
    /// interested), if it has one; never a connection we dialed still in its
    /// handshake.
    pub(crate) fn admit(
        &mut self,
        now: Instant,
        conn: ConnId,
        tid: TorrentId,
        peer_id: PeerId,
    ) -> Result<(), PeerError> {
        let Some(c) = self.conns.get(&conn) else {
            return Err(PeerError::ConnectionLimit);
        };
        let (addr, outgoing) = (c.addr, c.outgoing);
        let group = netaddr::group(addr.ip());
        let twin = self
            .conns
            .iter()
            .find(|(k, o)| {
                **k != conn
                    && o.torrent == Some(tid)
                    && o.peer.peer_id() == Some(peer_id)
                    && netaddr::group(o.addr.ip()) == group
            })
            .map(|(k, o)| (*k, o.outgoing));
        if let Some((other, other_outgoing)) = twin {
            let crossed = other_outgoing != outgoing;
            // The connection the side with the greater id dialed.
            let keep_ours = self.config.peer_id.0 > peer_id.0;
            if crossed && keep_ours == outgoing {
                self.close(other, CloseReason::Peer(PeerError::Duplicate));
            } else {
                return Err(PeerError::Duplicate);
            }
        }
        if outgoing {
            // Dialed within the caps (`connect_more`).
            if let Some(t) = self.torrents.get_mut(&tid) {
                t.mark_connected(addr);
            }
            return Ok(());
        }
        if !is_loopback(addr.ip()) {
            let caps = self.party_caps();
            for (party, cap) in caps {
                let p = party(addr.ip());
                let same = self
                    .conns
                    .iter()
                    .filter(|(k, o)| {
                        **k != conn && o.torrent == Some(tid) && party(o.addr.ip()) == p
                    })
                    .count();
                if same >= cap.max(1) {
                    return Err(PeerError::ConnectionLimit);
                }
            }
        }
        let attached = self
            .conns
            .iter()
            .filter(|(k, o)| **k != conn && o.torrent == Some(tid))
            .count();
        if attached >= self.peer_cap(tid) {
            let quiet = self.config.turnover_min_age;
            match self.turnover_candidates(now, tid, quiet, true).first() {
                Some(&victim) => self.close(victim, CloseReason::Peer(PeerError::ConnectionLimit)),
                None => {
                    if let Some(t) = self.torrents.get_mut(&tid) {
                        t.refused += 1;
                    }
                    return Err(PeerError::ConnectionLimit);
                }
            }
        }
        Ok(())
    }

    /// Whether the host should read from `conn` now. False while the peer does not
    /// read what we queue for it: the queue is past `max_send_buffer` and half of
    /// `send_allowance` ([`PeerConfig`]), or `ut_metadata`
    /// pieces it asked for wait for room in it. What the peer sends then stays in the
    /// kernel, TCP holds it back, and nothing it asks for can grow our queue. Read
    /// again once [`Session::poll_transmit`] has taken bytes from the queue (the
    /// socket was writable). A peer that never reads is closed by the idle timeout.
    /// True for a connection the session does not know.
    ///
    /// A host that ignores it stays within the caps: a peer whose messages would
    /// make the queue pass [`Session::conn_buffers`]' `send_cap` is closed instead
    /// ([`PeerError::SendOverflow`]).
    pub fn wants_recv(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_none_or(|c| c.peer.wants_recv() && c.metadata_deferred.is_empty())
    }

    /// How many bytes a host may let gather on `conn` before it reads it, to read a
    /// download in fewer, larger batches (one wake-up of the host's loop per 256 KiB
    /// rather than per segment the peer's writes happen to make): half of what the
    /// peer owes on our requests ([`PeerConn::owed_bytes`]) and no more than it sends
    /// in [`RECV_BATCH_MAX_WAIT_MS`] at its measured rate (so from 3.3 MB/s up),
    /// rounded down to 64, 128 or 256 KiB. 0 (read whatever arrives) below that, for a
    /// connection the session does not know, and while we upload to the peer (its
    /// requests are not held back) or its requests wait on us. Half leaves the peer
    /// the other half to send while the host waits, so the batch costs no rate.
    ///
    /// A host that follows it (a TCP host sets the socket's `SO_RCVLOWAT`) must also
    /// read such a connection at least every [`RECV_BATCH_MAX_WAIT_MS`]: a peer can
    /// choke or reject instead of sending what it owes, and the few bytes that say so
    /// would never make the batch.
    pub fn recv_batch(&self, now: Instant, conn: ConnId) -> usize {
        let Some(c) = self.conns.get(&conn) else {
            return 0;
        };
        let uploading = !c.peer.am_choking() && c.peer.peer_interested();
        if uploading || c.peer.peer_requests_queued() > 0 || !c.metadata_deferred.is_empty() {
            return 0;
        }
        // At most what the peer sends in RECV_BATCH_MAX_WAIT_MS: on a slow link a
        // mark it takes longer to reach only delays the bytes (and makes the kernel
        // acknowledge every segment while it waits, which on a 20 Mbit/s link took
        // the bandwidth a competing TCP flow had). The rate with the second in
        // progress: a fast download batches within its first second, when a 400 MB/s
        // stream has moved 40% of a GiB.
        let by_rate = c
            .peer
            .rates_at(now)
            .0
            .saturating_mul(RECV_BATCH_MAX_WAIT_MS)
            / 1000;
        let by_rate = usize::try_from(by_rate).unwrap_or(usize::MAX);
        if by_rate < RECV_BATCH_MAX / 4 {
            // A slow link: no need to count what the peer owes.
            return 0;
        }
        let half = (c.peer.owed_bytes() / 2).min(by_rate);
        match half {
            h if h >= RECV_BATCH_MAX => RECV_BATCH_MAX,
            h if h >= RECV_BATCH_MAX / 2 => RECV_BATCH_MAX / 2,
            h if h >= RECV_BATCH_MAX / 4 => RECV_BATCH_MAX / 4,
            _ => 0,
        }
    }

    /// The buffers of `conn`: what is queued to send and the cap it never passes,
    /// and the bytes of a partial message received.
    pub fn conn_buffers(&self, conn: ConnId) -> Option<ConnBuffers> {
        self.conns.get(&conn).map(|c| ConnBuffers {
            send_queued: c.peer.send_queued(),
            send_cap: c.peer.send_cap(),
            recv_buffered: c.peer.recv_buffered(),
        })
    }

    /// Connections open or being opened.
    pub fn num_connections(&self) -> usize {
        self.conns.len()
    }

    /// An outgoing connection asked with [`Action::Connect`] is open.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.connected = true;
            c.peer = PeerConn::new_outgoing(
                self.config.peer,
                now,
                self.torrents
                    .get(&c.torrent.unwrap_or(TorrentId(0)))
                    .map(|t| t.info_hash)
                    .unwrap_or_default(),
                self.config.peer_id,
                Self::reserved(),
            );
            self.flag_send(conn);
        }
    }

    /// An outgoing connection could not be made.
    /// A failed uTP dial under [`TransportPolicy::Both`] is made again over TCP under
    /// the same id (and that peer is dialed over TCP from then on).
    pub fn handle_connect_failed(&mut self, now: Instant, conn: ConnId) {
        // BEP 55: the peer whose PEX named the address may introduce us.
        holepunch::dial_failed(self, now, conn);
        if self.fall_back_to_tcp(now, conn) {
            return;
        }
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(t) = c.torrent.and_then(|t| self.torrents.get_mut(&t)) {
                t.connect_failed(now, c.addr);
            }
        }
    }

    /// Dials `conn` again over TCP if it is a uTP dial that never came up and the
    /// policy allows TCP; the peer is marked as one without uTP.
    fn fall_back_to_tcp(&mut self, now: Instant, conn: ConnId) -> bool {
        if self.config.transport != TransportPolicy::Both {
            return false;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        // A dial a relay asked for (BEP 55) is uTP or nothing.
        // A uTP connection that came up and then died (in the host's encryption
        // handshake: a duplicate the peer dropped, say) is no sign the peer lacks uTP.
        if !c.outgoing
            || c.connected
            || c.transport_up
            || c.transport != Transport::Utp
            || c.holepunch.punched
        {
            return false;
        }
        let Some(torrent) = c.torrent else {
            return false;
        };
        c.transport = Transport::Tcp;
        c.dialed_at = now;
        let addr = c.addr;
        if let Some(t) = self.torrents.get_mut(&torrent) {
            t.mark_no_utp(addr);
        }
        self.actions.push_back(Action::Connect {
            conn,
            torrent,
            addr,
            transport: Transport::Tcp,
        });
        true
    }

    /// uTP dials unanswered for [`SessionConfig::utp_connect_timeout`]: dialed over
    /// TCP instead (the uTP attempt is closed first), or given up under
    /// [`TransportPolicy::UtpOnly`].
    fn expire_utp_dials(&mut self, now: Instant) {
        let timeout = self.config.utp_connect_timeout;
        let late: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.outgoing
                    && !c.connected
                    && !c.transport_up
                    && c.transport == Transport::Utp
                    && now.since(c.dialed_at) >= timeout
            })
            .map(|(k, _)| *k)
            .collect();
        for conn in late {
            self.actions.push_back(Action::Close {
                conn,
                reason: CloseReason::Peer(PeerError::HandshakeTimeout),
            });
            self.handle_connect_failed(now, conn);
        }
    }

    /// The host's encryption handshake (MSE/PE) of `conn` settled on RC4 (`true`) or
    /// on plain text: shown in [`PeerStatus::encrypted`]. Unknown connections are
    /// ignored.
    pub fn set_encrypted(&mut self, conn: ConnId, encrypted: bool) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.encrypted = encrypted;
        }
    }

    /// The transport of dialed `conn` is up (a uTP connection answered its SYN) while
    /// an encryption handshake still runs: the uTP dial no longer falls back to TCP
    /// for being slow ([`SessionConfig::utp_connect_timeout`]). Optional: a host
    /// without encryption calls [`Session::handle_connected`] at once.
    pub fn handle_transport_connected(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.transport_up = true;
        }
    }

    /// The socket of `conn` closed.
    pub fn handle_disconnected(&mut self, now: Instant, conn: ConnId) {
        self.forget(conn);
        self.connect_more(now);
    }

    /// Bytes read from `conn`.
    pub fn handle_recv(&mut self, now: Instant, conn: ConnId, data: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let r = c.peer.handle_recv(now, data);
        self.process_peer(now, conn);
        if let Err(e) = r {
            self.close(conn, CloseReason::Peer(e));
        }
        self.flush_sends();
    }

    /// Copies bytes to send on `conn` into `out`; returns how many (0: none).
    pub fn poll_transmit(&mut self, now: Instant, conn: ConnId, out: &mut [u8]) -> usize {
        match self.send_next(now, conn, out, false) {
            Transmit::Bytes { len, .. } => len,
            Transmit::Held { .. } | Transmit::Idle => 0,
        }
    }

    /// What to send next to `conn`: bytes copied into `out`, or a block payload the
    /// host holds ([`Session::handle_read_held`]), or nothing. A host that holds
    /// payloads reads its queue with this, not [`Session::poll_transmit`] (which stops
    /// before a held payload).
    pub fn poll_send(&mut self, now: Instant, conn: ConnId, out: &mut [u8]) -> Transmit {
        self.send_next(now, conn, out, true)
    }

    /// [`Session::poll_send`]; with `held` false, never a held payload (the queue
    /// waits before it).
    fn send_next(&mut self, now: Instant, conn: ConnId, out: &mut [u8], held: bool) -> Transmit {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Transmit::Idle;
        };
        let n = c.peer.poll_transmit(now, out);
        let t = if n > 0 {
            Transmit::Bytes {
                len: n,
                held_next: c.peer.held_next(),
            }
        } else if let Some((token, len)) = held.then(|| c.peer.poll_held(now)).flatten() {
            Transmit::Held { token, len }
        } else {
            c.send_flagged = false;
            return Transmit::Idle;
        };
        // Room in the send buffer may let waiting metadata pieces and queued uploads
        // go out.
        if !c.metadata_deferred.is_empty() {
            torrent::serve_metadata(self, conn);
        }
        if self
            .conns
            .get(&conn)
            .is_some_and(|c| c.peer.peer_requests_queued() > 0)
        {
            self.serve_uploads(conn);
        }
        t
    }

    // ---- disk ----

    /// A block asked with [`Action::Write`] is written (or failed).
    pub fn handle_write_done(
        &mut self,
        now: Instant,
        id: TorrentId,
        block: BlockRef,
        result: Result<(), DiskError>,
    ) {
        self.disk_in_flight = self.disk_in_flight.saturating_sub(block.len as usize);
        let Some(t) = self.torrents.get_mut(&id) else {
            return;
        };
        match result {
            Ok(()) => t.write_done(block, &mut self.actions),
            // The first error stops the torrent and is reported; the writes still in
            // flight that fail after it say nothing new.
            Err(e) => {
                if t.fail(e) {
                    push_bounded(&mut self.events, Event::DiskFailed(id, e), MAX_EVENTS);
                    self.stop_announcing(id);
                }
            }
        }
        self.fill_all_requests(now);
        self.flush_sends();
    }

    /// A block asked with [`Action::Read`] was read.
    pub fn handle_read_done(
        &mut self,
        now: Instant,
        id: TorrentId,
        conn: ConnId,
        block: BlockRef,
        result: Result<&[u8], DiskError>,
    ) {
        self.read_done(now, id, conn, block, result.map(ReadPayload::Bytes));
    }

    /// A block asked with [`Action::Read`] is read, and the host holds its bytes to
    /// send them itself (from its buffer, or from the file with `sendfile`): the
    /// session queues the piece message's header and, at its place after it,
    /// [`Transmit::Held`] with `token` ([`Session::poll_send`]). True when queued;
    /// false when not (the peer choked meanwhile, left, or its queue is full), and
    /// the host drops what it holds.
    pub fn handle_read_held(
        &mut self,
        now: Instant,
        id: TorrentId,
        conn: ConnId,
        block: BlockRef,
        token: u64,
    ) -> bool {
        self.read_done(now, id, conn, block, Ok(ReadPayload::Held(token)))
    }

    fn read_done(
        &mut self,
        now: Instant,
        id: TorrentId,
        conn: ConnId,
        block: BlockRef,
        result: Result<ReadPayload<'_>, DiskError>,
    ) -> bool {
        let mut queued = false;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.reads_in_flight = c.reads_in_flight.saturating_sub(1);
            match result {
                Ok(data) if c.torrent == Some(id) && !c.peer.am_choking() => {
                    queued = match data {
                        ReadPayload::Bytes(data) => c.peer.send_block(now, block, data),
                        ReadPayload::Held(token) => c.peer.send_block_held(now, block, token),
                    };
                    if queued {
                        if let Some(t) = self.torrents.get_mut(&id) {
                            t.uploaded += u64::from(block.len);
                            t.last_transfer = now;
                        }
                    }
                    self.flag_send(conn);
                }
                Ok(_) => {}
                Err(e) => {
                    if self.torrents.get_mut(&id).is_some_and(|t| t.fail(e)) {
                        self.push_event(Event::DiskFailed(id, e));
                        self.stop_announcing(id);
                    }
                }
            }
            self.serve_uploads(conn);
        }
        if self
            .torrents
            .get(&id)
            .is_some_and(|t| t.ratio_limit.is_some())
        {
            self.check_ratios(now);
        }
        self.flush_sends();
        queued
    }

    /// A piece of a hybrid torrent asked with [`Action::Verify`] matched one of its
    /// two hashes and not the other: the torrent's v1 and v2 parts describe different
    /// data (BEP 52). The torrent stops with [`DiskError::HashesDisagree`]
    /// ([`Event::DiskFailed`]); no peer is blamed.
    pub fn handle_hashes_disagree(&mut self, now: Instant, id: TorrentId, piece: PieceIndex) {
        let _ = piece;
        let Some(t) = self.torrents.get_mut(&id) else {
            return;
        };
        if t.fail(DiskError::HashesDisagree) {
            self.push_event(Event::DiskFailed(id, DiskError::HashesDisagree));
            self.stop_announcing(id);
        }
        self.fill_all_requests(now);
        self.flush_sends();
    }

    /// A piece asked with [`Action::Verify`] was hashed: `ok` says whether it
    /// matched. The same as [`Session::handle_verified_blocks`] without block
    /// digests: the senders of a failed piece are then only put on parole (a piece
    /// from one address still bans it).
    pub fn handle_verified(&mut self, now: Instant, id: TorrentId, piece: PieceIndex, ok: bool) {
        self.handle_verified_blocks(now, id, piece, ok, &[]);
    }

    /// A piece asked with [`Action::Verify`] was hashed: `ok` says whether it
    /// matched, and `block_digests` holds the SHA-1 of each of its blocks as the host
    /// read them ([`crate::ids::BLOCK_LEN`] bytes each, the last one shorter), or is
    /// empty. Give them when the piece failed, and when it passed if the action's
    /// `block_digests` asked: they tell which peer sent the bad data. Digests of the
    /// wrong count are ignored.
    pub fn handle_verified_blocks(
        &mut self,
        now: Instant,
        id: TorrentId,
        piece: PieceIndex,
        ok: bool,
        block_digests: &[[u8; 20]],
    ) {
        let Some(t) = self.torrents.get(&id) else {
            return;
        };
        // Who sent each block, asked before the picker forgets the piece; a piece
        // that passes with nothing recorded and nobody on parole needs no look.
        let senders = if !ok || !t.smart.is_idle() {
            let conns = &self.conns;
            t.block_senders(piece, |k| {
                conns
                    .get(&ConnId(k))
                    .filter(|c| c.torrent == Some(id))
                    .map(|c| c.addr.ip())
            })
        } else {
            Vec::new()
        };
        let digests = Some(block_digests).filter(|d| !d.is_empty() && d.len() == senders.len());
        let mut ban = Vec::new();
        let Some(t) = self.torrents.get_mut(&id) else {
            return;
        };
        if ok {
            if t.piece_verified(piece) {
                t.smart.piece_passed(piece.0, &senders, digests, &mut ban);
                self.push_event(Event::PieceVerified(id, piece));
                let conns: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.torrent == Some(id) && c.peer.is_established())
                    .map(|(k, _)| *k)
                    .collect();
                for k in conns {
                    if let Some(c) = self.conns.get_mut(&k) {
                        c.peer.send_have(piece);
                    }
                    self.update_interest(k);
                    self.flag_send(k);
                }
                // This piece made the torrent complete (a piece verifies once).
                let complete = self.torrents.get(&id).is_some_and(|t| t.is_complete());
                self.note_finished(id);
                if complete {
                    if let Some(t) = self.torrents.get_mut(&id) {
                        // A torrent a disk error stopped stays stopped.
                        if t.error.is_none() {
                            t.state = TorrentState::Seeding;
                        }
                        t.completed_unsent = true;
                        if let Some(a) = t.announcer.as_mut() {
                            a.on_completed(now);
                        }
                    }
                    self.run_announces(now);
                    // Two seeds have nothing to say to each other.
                    let seeds: Vec<ConnId> = self
                        .conns
                        .iter()
                        .filter(|(_, c)| c.torrent == Some(id) && c.peer.is_seed())
                        .map(|(k, _)| *k)
                        .collect();
                    for k in seeds {
                        self.close(k, CloseReason::BothSeeds);
                    }
                }
            }
        } else {
            // A web seed that sent it alone (with other web seeds) is dropped for good
            // (BEP 19); one that shared it with peers at its second such failure.
            let (bad_web, alone) = t.web_senders(piece);
            let failed = t.piece_failed(piece);
            if failed {
                t.smart.piece_failed(piece.0, &senders, digests, &mut ban);
            }
            for seed in bad_web {
                t.blame_web_seed(seed, piece, alone);
            }
            if failed {
                self.push_event(Event::HashFailed(id, piece));
            }
        }
        for (ip, reason) in ban {
            self.ban_ip(id, ip, reason);
        }
        self.run_web_seeds(now);
        self.fill_all_requests(now);
        self.flush_sends();
    }

    /// Bans `ip` for bad data sent to torrent `id` (an IPv6 address: its /64, or its
    /// /48 once several of them were banned): every connection from it closes (the
    /// blocks it sent of pieces not verified yet are dropped), no torrent dials it,
    /// and it is refused when it connects.
    fn ban_ip(&mut self, id: TorrentId, ip: IpAddr, reason: BanReason) {
        let ip = bans::canonical(ip);
        if !self.bans.insert(ip, reason) && self.config.max_banned_ips > 0 {
            return;
        }
        for (tid, t) in self.torrents.iter_mut() {
            t.forget_ip(ip, *tid == id, &self.bans);
        }
        let bans = &self.bans;
        let conns: Vec<(ConnId, SocketAddr, Option<TorrentId>)> = self
            .conns
            .iter()
            .filter(|(_, c)| bans::canonical(c.addr.ip()) == ip || bans.contains(c.addr.ip()))
            .map(|(k, c)| (*k, c.addr, c.torrent))
            .collect();
        let mut reported = false;
        for (k, addr, tid) in conns {
            if let Some(t) = tid.and_then(|t| self.torrents.get_mut(&t)) {
                t.drop_blocks_of(k.0);
            }
            if tid == Some(id) && !reported && bans::canonical(addr.ip()) == ip {
                self.push_event(Event::PeerBanned(id, addr));
                reported = true;
            }
            self.close(k, CloseReason::Banned);
        }
        if !reported {
            self.push_event(Event::PeerBanned(id, SocketAddr::new(ip, 0)));
        }
    }

    /// Whether the disk is behind: the bytes handed out with [`Action::Write`] and not
    /// yet written reached twice [`SessionConfig::max_disk_bytes_in_flight`] (at the cap
    /// itself no more blocks are requested; what peers still owe on requests already
    /// sent keeps coming). While it is, the host should stop reading from peer
    /// connections (the kernel's socket buffers and then TCP flow control hold the peers
    /// back) and read again once [`Session::handle_write_done`] brought it under: the
    /// bytes waiting for a slow disk then stay at twice the cap, whatever the peers owe.
    /// Measured on loopback: stopping at the cap itself cost about 7% of the download
    /// rate; at twice the cap, nothing measurable.
    pub fn disk_backlogged(&self) -> bool {
        self.disk_in_flight >= 2 * self.config.max_disk_bytes_in_flight
    }

    // ---- time ----

    /// When [`Session::handle_timeout`] next has work (at most a second away while
    /// anything is active).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.torrents.is_empty() && self.conns.is_empty() {
            None
        } else {
            Some(self.next_tick)
        }
    }

    /// Runs timers: peer timeouts and keep-alives, the choker, re-announces, dialing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + Duration::from_secs(1);
        self.expire_utp_dials(now);
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for k in ids {
            let Some(c) = self.conns.get_mut(&k) else {
                continue;
            };
            if !c.connected {
                continue;
            }
            let r = c.peer.handle_timeout(now);
            self.process_peer(now, k);
            if let Err(e) = r {
                self.close(k, CloseReason::Peer(e));
            }
        }
        let magnets: Vec<TorrentId> = self
            .torrents
            .iter()
            .filter(|(_, t)| t.meta.is_none() && !t.is_stopped())
            .map(|(k, _)| *k)
            .collect();
        for id in magnets {
            metadata::tick(self, now, id);
        }
        let fetching: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.their_ut_metadata.is_some()
                    && c.torrent
                        .and_then(|t| self.torrents.get(&t))
                        .is_some_and(|t| t.fetch.is_some())
            })
            .map(|(k, _)| *k)
            .collect();
        for k in fetching {
            torrent::request_metadata(self, now, k);
        }
        self.send_pex(now);
        let tids: Vec<TorrentId> = self.torrents.keys().copied().collect();
        for id in tids {
            self.run_choker(now, id);
        }
        self.run_announces(now);
        self.check_ratios(now);
        self.check_idle(now);
        self.run_queue(now);
        self.run_dht(now);
        self.turnover(now);
        self.connect_more(now);
        self.run_web_seeds(now);
        self.fill_all_requests(now);
        self.flush_sends();
    }

    // ---- output ----

    /// The next piece of work for the host.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- queries ----

    /// A torrent's status.
    pub fn torrent_status(&self, id: TorrentId, now: Instant) -> Option<TorrentStatus> {
        let t = self.torrents.get(&id)?;
        let mut s = t.status();
        s.stalled = queue::is_stalled(t, now, self.config.queue_stalled_after);
        s.download_rate += t.web.rate_at(now);
        for c in self.conns.values().filter(|c| c.torrent == Some(id)) {
            if c.peer.is_established() {
                s.peers += 1;
                let (down, up) = c.peer.rates_at(now);
                s.download_rate += down;
                s.upload_rate += up;
                if c.peer.is_seed() {
                    s.seeds += 1;
                }
            } else {
                s.connecting += 1;
            }
        }
        Some(s)
    }

    /// The torrents in the session.
    pub fn torrents(&self) -> impl Iterator<Item = TorrentId> + '_ {
        self.torrents.keys().copied()
    }

    /// The peers of a torrent: address, rates and flags.
    pub fn peers(&self, id: TorrentId) -> Vec<PeerStatus> {
        self.conns
            .iter()
            .filter(|(_, c)| c.torrent == Some(id))
            .map(|(k, c)| PeerStatus {
                conn: *k,
                addr: c.addr,
                origin: c.origin,
                peer_id: c.peer.peer_id(),
                established: c.peer.is_established(),
                outgoing: c.outgoing,
                transport: c.transport,
                download_rate: c.peer.download_rate(),
                upload_rate: c.peer.upload_rate(),
                downloaded: c.peer.totals().0,
                uploaded: c.peer.totals().1,
                pieces: c.peer.bitfield().count(),
                am_choking: c.peer.am_choking(),
                am_interested: c.peer.am_interested(),
                peer_choking: c.peer.peer_choking(),
                peer_interested: c.peer.peer_interested(),
                encrypted: c.encrypted,
            })
            .collect()
    }

    /// As [`Session::peers`], with each peer's rates at `now` (the second in progress
    /// included, as [`Session::torrent_status`] counts them): what a display shows.
    pub fn peers_at(&self, id: TorrentId, now: Instant) -> Vec<PeerStatus> {
        let mut peers = self.peers(id);
        for p in &mut peers {
            if let Some(c) = self.conns.get(&p.conn) {
                (p.download_rate, p.upload_rate) = c.peer.rates_at(now);
            }
        }
        peers
    }

    /// Whether dialed connection `conn` has a twin: another connection with the same
    /// peer for the same torrent (or none named yet), which dialed us from the very
    /// address we dialed (the crossing uTP dials of a hole punch). A peer that closes one of
    /// two connections with us drops a duplicate; when that happens inside the host's
    /// encryption handshake it is no refusal of encryption, and the host does not dial
    /// again in plain text (a third connection would collide once more).
    pub fn has_twin(&self, conn: ConnId) -> bool {
        let Some(c) = self.conns.get(&conn).filter(|c| c.outgoing) else {
            return false;
        };
        self.conns.iter().any(|(k, o)| {
            *k != conn
                && !o.outgoing
                && o.addr == c.addr
                && (o.torrent.is_none() || o.torrent == c.torrent)
        })
    }

    /// Whether `ip` is banned for bad data (a host may refuse it before accepting;
    /// [`Session::handle_incoming`] refuses it anyway).
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.bans.contains(ip)
    }

    /// The verified pieces of a torrent (the host saves them as resume data).
    pub fn have(&self, id: TorrentId) -> Option<&Bitfield> {
        self.torrents.get(&id)?.meta.as_ref().map(|m| &m.have)
    }

    /// Our external address of one family (`v6`), when known: as the host set it or
    /// as peers of [`EXTERNAL_VOTERS`] distinct subnets see us. Sent to peers in our
    /// extension handshake (`ipv4`, `ipv6`).
    pub fn external_address(&self, v6: bool) -> Option<IpAddr> {
        self.external[usize::from(v6)].decided()
    }

    /// Sets our external address from a source the host trusts (its router's answer to
    /// a port mapping): [`Event::ExternalAddress`] when it changed. Peers' votes can
    /// move it again only by the same quorum.
    pub fn set_external_address(&mut self, ip: IpAddr) {
        let ip = netaddr::canonical(ip);
        if !external_candidate(ip) {
            return;
        }
        let v = &mut self.external[usize::from(ip.is_ipv6())];
        if v.decided() != Some(ip) {
            v.set(ip);
            self.push_event(Event::ExternalAddress(ip));
        }
    }

    /// A peer at `voter` says it sees us at `ip` (its `yourip`).
    fn vote_external(&mut self, voter: IpAddr, ip: IpAddr) {
        let ip = netaddr::canonical(ip);
        if !external_candidate(ip) || ip.is_ipv6() != netaddr::canonical(voter).is_ipv6() {
            return;
        }
        if let Some(ip) = self.external[usize::from(ip.is_ipv6())].vote(voter, ip) {
            self.push_event(Event::ExternalAddress(ip));
        }
    }

    // ---- internals ----

    fn push_event(&mut self, e: Event) {
        push_bounded(&mut self.events, e, MAX_EVENTS);
    }

    /// Asks the host to send what `conn` has queued, or closes it when a message did
    /// not fit in its queue.
    fn flag_send(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.peer.overflowed() {
                self.close(conn, CloseReason::Peer(PeerError::SendOverflow));
            } else if !c.send_flagged && c.connected && c.peer.send_queued() > 0 {
                c.send_flagged = true;
                self.actions.push_back(Action::Send(conn));
            }
        }
    }

    fn flush_sends(&mut self) {
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.peer.overflowed() || (!c.send_flagged && c.connected && c.peer.send_queued() > 0)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in ids {
            self.flag_send(k);
        }
    }

    /// Removes a connection and everything that refers to it.
    fn forget(&mut self, conn: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&conn)?;
        if let Some(t) = c.torrent.and_then(|t| self.torrents.get_mut(&t)) {
            t.peer_gone(conn.0, &c);
        }
        Some(c)
    }

    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        if self.forget(conn).is_some() {
            self.actions.push_back(Action::Close { conn, reason });
        }
    }

    /// Handles everything a connection reported.
    fn process_peer(&mut self, now: Instant, conn: ConnId) {
        while let Some(ev) = self.conns.get_mut(&conn).and_then(|c| c.peer.poll_event()) {
            if let Err(e) = torrent::on_peer_event(self, now, conn, ev) {
                self.close(conn, e);
                return;
            }
        }
        self.fill_requests(now, conn);
        self.serve_uploads(conn);
        self.flag_send(conn);
    }

    fn update_interest(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(t) = c.torrent.and_then(|t| self.torrents.get(&t)) else {
            return;
        };
        let want = t.wants_from(c.peer.bitfield());
        c.peer.set_interested(want);
    }

    fn fill_all_requests(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for k in ids {
            self.fill_requests(now, k);
        }
    }

    /// Keeps the request pipeline of `conn` full, within the disk cap.
    fn fill_requests(&mut self, now: Instant, conn: ConnId) {
        if self.disk_in_flight >= self.config.max_disk_bytes_in_flight {
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(t) = c.torrent.and_then(|t| self.torrents.get_mut(&t)) else {
            return;
        };
        torrent::fill_requests(t, c, now, conn, &mut self.rng);
        self.flag_send(conn);
    }

    /// Turns the peer's queued requests into disk reads.
    fn serve_uploads(&mut self, conn: ConnId) {
        let max_reads = self.config.max_reads_per_peer;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(tid) = c.torrent else { return };
        let Some(t) = self.torrents.get(&tid) else {
            return;
        };
        while c.reads_in_flight < max_reads
            && c.peer.send_space() >= (c.reads_in_flight + 1) * crate::ids::BLOCK_LEN as usize
        {
            let Some(block) = c.peer.next_peer_request() else {
                break;
            };
            if !t.meta.as_ref().is_some_and(|m| m.have.get(block.piece.0)) {
                continue;
            }
            c.reads_in_flight += 1;
            self.actions.push_back(Action::Read {
                torrent: tid,
                conn,
                block,
            });
        }
    }

    fn run_choker(&mut self, now: Instant, id: TorrentId) {
        let Some(t) = self.torrents.get_mut(&id) else {
            return;
        };
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.torrent == Some(id) && c.peer.is_established())
            .map(|(k, _)| *k)
            .collect();
        let changes = torrent::choke_round(t, &self.conns, &conns, now, &mut self.rng);
        for (k, unchoke) in changes {
            if let Some(c) = self.conns.get_mut(&k) {
                c.peer.set_choking(!unchoke);
            }
            self.flag_send(k);
        }
    }

    /// Dials known peers while torrents have room. A dial that finds the session's
    /// table full takes the place of an incoming connection still in its handshake
    /// (see [`Session::least_useful`]); the [`SessionConfig::outgoing_share`] of the
    /// table is never held by incoming connections.
    fn connect_more(&mut self, now: Instant) {
        let tids: Vec<TorrentId> = self.torrents.keys().copied().collect();
        for id in tids {
            let (connected, connecting) = self
                .conns
                .values()
                .filter(|c| c.torrent == Some(id))
                .fold(
                    (0, 0),
                    |(a, b), c| if c.connected { (a + 1, b) } else { (a, b + 1) },
                );
            if self
                .torrents
                .get(&id)
                .is_none_or(|t| t.state == TorrentState::Error)
            {
                continue;
            }
            let mut room = self
                .peer_cap(id)
                .saturating_sub(connected + connecting)
                .min(self.config.max_connecting.saturating_sub(connecting));
            while room > 0 {
                let victim = if self.conns.len() >= self.config.max_connections {
                    match self.least_useful(now, None, |c| !c.outgoing) {
                        Some(v) => Some(v),
                        None => break,
                    }
                } else {
                    None
                };
                let busy: Vec<SocketAddr> = self
                    .conns
                    .values()
                    .filter(|c| c.torrent == Some(id))
                    .map(|c| c.addr)
                    .collect();
                // Addresses (and IPv6 /48s) that hold their share of the torrent's
                // connections.
                let mut per_group: BTreeMap<IpAddr, usize> = BTreeMap::new();
                let mut per_site: BTreeMap<IpAddr, usize> = BTreeMap::new();
                for a in busy.iter().filter(|a| !is_loopback(a.ip())) {
                    *per_group.entry(netaddr::group(a.ip())).or_insert(0) += 1;
                    *per_site.entry(netaddr::site(a.ip())).or_insert(0) += 1;
                }
                let (per_ip, per_48) = (
                    self.config.max_peers_per_ip.max(1),
                    self.config.max_peers_per_ipv6_48.max(1),
                );
                let full = |a: &SocketAddr| {
                    per_group
                        .get(&netaddr::group(a.ip()))
                        .is_some_and(|n| *n >= per_ip)
                        || per_site
                            .get(&netaddr::site(a.ip()))
                            .is_some_and(|n| *n >= per_48)
                };
                let Some(t) = self.torrents.get_mut(&id) else {
                    break;
                };
                let Some(addr) = t.next_peer_to_dial(
                    now,
                    &busy,
                    self.config.reconnect_backoff,
                    &self.bans,
                    &full,
                ) else {
                    break;
                };
                let info_hash = t.info_hash;
                let origin = t.origin_of(addr).unwrap_or(PeerOrigin::User);
                let transport = match self.config.transport {
                    TransportPolicy::TcpOnly => Transport::Tcp,
                    TransportPolicy::UtpOnly => Transport::Utp,
                    TransportPolicy::Both if t.no_utp(addr) => Transport::Tcp,
                    TransportPolicy::Both => Transport::Utp,
                };
                if let Some(v) = victim {
                    self.close(v, CloseReason::Peer(PeerError::ConnectionLimit));
                }
                let conn = ConnId(self.next_conn);
                self.next_conn += 1;
                let peer = PeerConn::new_outgoing(
                    self.config.peer,
                    now,
                    info_hash,
                    self.config.peer_id,
                    Self::reserved(),
                );
                let mut c = Conn::new(Some(id), addr, true, transport, peer);
                c.origin = origin;
                self.conns.insert(conn, c);
                self.actions.push_back(Action::Connect {
                    conn,
                    torrent: id,
                    addr,
                    transport,
                });
                room -= 1;
            }
        }
    }

    pub(crate) fn disk_in_flight_add(&mut self, n: usize) {
        self.disk_in_flight += n;
    }

    /// [`SessionConfig::max_known_peers`] and [`SessionConfig::max_pex_peers_per_ip`].
    pub(crate) fn known_caps(&self) -> (usize, usize) {
        (
            self.config.max_known_peers,
            self.config.max_pex_peers_per_ip,
        )
    }
}

/// One peer of a torrent, for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The connection.
    pub conn: ConnId,
    /// The peer's address.
    pub addr: SocketAddr,
    /// Where we heard of it ([`PeerOrigin::Incoming`]: it dialed us).
    pub origin: PeerOrigin,
    /// The peer's id, after the handshake.
    pub peer_id: Option<PeerId>,
    /// Handshake complete.
    pub established: bool,
    /// We dialed it.
    pub outgoing: bool,
    /// TCP or uTP.
    pub transport: Transport,
    /// Bytes/s from the peer.
    pub download_rate: u64,
    /// Bytes/s to the peer.
    pub upload_rate: u64,
    /// Payload bytes from the peer.
    pub downloaded: u64,
    /// Payload bytes to the peer.
    pub uploaded: u64,
    /// Pieces the peer has.
    pub pieces: u32,
    /// We choke it.
    pub am_choking: bool,
    /// We want its pieces.
    pub am_interested: bool,
    /// It chokes us.
    pub peer_choking: bool,
    /// It wants our pieces.
    pub peer_interested: bool,
    /// Its bytes are encrypted (RC4, as the host reported with
    /// [`Session::set_encrypted`]); false in plain text, and after an encryption
    /// handshake that settled on plain text.
    pub encrypted: bool,
}

/// A [`InfoHash`] is what incoming handshakes are matched on.
impl Session {
    /// The torrent an incoming handshake names: by its info-hash, or a hybrid's by its
    /// truncated v2 info-hash too (BEP 52: it is in both swarms).
    pub(crate) fn torrent_by_hash(&self, ih: &InfoHash) -> Option<TorrentId> {
        self.torrents
            .iter()
            .find(|(_, t)| t.info_hash == *ih || t.info_hash_v2_short() == Some(*ih))
            .map(|(k, _)| *k)
    }
    /// Whether the address of `conn` is banned.
    pub(crate) fn conn_banned(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| self.bans.contains(c.addr.ip()))
    }
    pub(crate) fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(&id)
    }
    pub(crate) fn split(
        &mut self,
        conn: ConnId,
    ) -> Option<(&mut Conn, &mut Torrent, &mut VecDeque<Action>)> {
        let c = self.conns.get_mut(&conn)?;
        let t = self.torrents.get_mut(&c.torrent?)?;
        Some((c, t, &mut self.actions))
    }
    pub(crate) fn push_event_pub(&mut self, e: Event) {
        self.push_event(e);
    }
    pub(crate) fn update_interest_pub(&mut self, conn: ConnId) {
        self.update_interest(conn);
    }
}

#[cfg(test)]
mod tests;
