//! A BitTorrent tracker, server side: swarms, HTTP and UDP request handling, state
//! snapshots and peer sync between trackers. Sans-IO: no sockets, no clock, no
//! randomness of its own (`now` and an [`Rng`] come from the host, and so does the
//! secret behind the UDP connection ids).
//!
//! # What a host does
//!
//! ```text
//!   HTTP GET /announce?..  --> Tracker::handle_http_announce(now, query, remote, rng, out)
//!   HTTP GET /scrape?..    --> Tracker::handle_http_scrape(query, out)
//!   UDP datagram           --> Tracker::handle_udp(now, packet, from, rng, out) -> reply?
//!   HTTP POST /sync        --> Tracker::apply_sync(now, body, key)
//!   timer                  --> Tracker::handle_timeout(now) at Tracker::poll_timeout()
//!   then, in this order    --> Tracker::drain_sync(..) (forward to peer trackers),
//!                              Tracker::is_dirty() / encode_state(..) / mark_saved()
//! ```
//!
//! # Swarms and peers
//!
//! A swarm is keyed by info-hash; a peer inside it by its address (IP and port, as
//! opentracker does). Seeds (`left == 0`) and leechers live in two vectors so that a
//! seed's reply is drawn from leechers only (BEP 3 leaves this to the tracker; seeds
//! cannot use each other) and a random sample needs no rejection of ineligible entries.
//! A peer that does not announce again within [`ServerConfig::peer_timeout`] (default
//! twice the interval) is dropped by the sweep. HTTP replies draw from both address
//! families (`peers` and `peers6`), UDP replies from the requester's family only (a
//! BEP 15 reply has room for one).
//!
//! A peer is stored in 10 bytes (IPv4) or 22 bytes (IPv6): its compact address and its
//! expiry in whole seconds, plus a 4-byte index slot once its swarm has more than 128
//! peers (see `swarm.rs`). With vector slack and per-swarm costs that is about 15 bytes
//! per peer with 100 peers per swarm, 22 with 500, 100 with 2 (bench/tracker.sh). Each
//! address group holding a peer costs 16 bytes more in the tracker-wide group table
//! (about 25 with the table's slack; see below), shared by all its peers; a group
//! holding 32 peers or more also lists the swarms it was seen in, about 40 bytes per
//! swarm (at most one per peer of the group). `uploaded`,
//! `downloaded` and the exact `left` are not stored, since nothing reads them; peer ids
//! only with [`ServerConfig::peer_ids`].
//!
//! # Caps, and who gives way
//!
//! Memory is bounded by [`ServerConfig::max_swarms`], [`ServerConfig::max_peers_per_swarm`]
//! and [`ServerConfig::max_peers`], and no address can take a large share of them. An
//! address group is an IPv4 address or an IPv6 /64 (what one subscriber usually
//! holds); an IPv6 /48 (a site) is counted too.
//!
//! - In one swarm, a group holds at most [`ServerConfig::max_peers_per_ip`] peers; a
//!   newcomer from a group at that cap replaces the group's own peer that expires
//!   first.
//! - Over the tracker, a group holds peers in at most [`ServerConfig::max_swarms_per_ip`]
//!   swarms and at most [`ServerConfig::max_total_peers_per_ip`] peers, a /48 at most
//!   [`ServerConfig::max_peers_per_48`] peers. At a peer cap a newcomer replaces the
//!   group's own oldest peer in the same swarm; where the group has none, or at the
//!   swarm cap, it is refused ([`ServerError::AddressFull`]): only that group is held
//!   back. The counts live in a table keyed by the SipHash of the group (`groups.rs`),
//!   updated as peers come and go.
//! - A new peer in a full swarm replaces the peer that expires first in the group
//!   holding the most peers of the swarm ([`FullSwarm::ReplaceBusiest`], the default:
//!   a live swarm keeps turning over, and whoever crowds it displaces its own entries
//!   first, never honest peers while it holds more than they do), or the peer that
//!   expires first whoever holds it ([`FullSwarm::ReplaceOldest`]), or is refused
//!   ([`FullSwarm::Refuse`]). Large swarms keep their groups of two peers or more
//!   ordered by size, so the choice costs O(log n), and with no such group the oldest
//!   of 32 peers taken in turn goes: O(1) ([`Counters::eviction_work`]).
//! - At [`ServerConfig::max_peers`], a newcomer replaces the oldest peer of the group
//!   holding the most peers over the tracker, where that group was last active; the
//!   groups holding 32 peers or more keep the list of swarms they were seen in for
//!   this. With no such group (the table is held by more than `max_peers / 32`
//!   addresses), the newcomer's own swarm turns over as if it were full (by
//!   [`ServerConfig::full_swarm`]), and only a newcomer with a new swarm (or to a
//!   swarm whose policy refuses) is refused ([`ServerError::TrackerFull`]).
//! - At [`ServerConfig::max_swarms`], a new swarm replaces the empty swarm (kept for
//!   its `downloaded` count, not registered) announced to least recently; else a
//!   swarm whose every peer belongs to the group present in the most swarms (among
//!   those of 32 peers or more; that group's peers in the swarms it shares go
//!   meanwhile). Only when neither exists is it refused
//!   ([`ServerError::TooManySwarms`]).
//!
//! Peers learnt through sync from a peer tracker take free room only: they never
//! evict local ones.
//!
//! A swarm left with no peers is swept with them unless it is registered: at once
//! at the next sweep when it has no completed downloads, after [`ServerConfig::empty_swarm_ttl`] since its
//! last announce when it has (so counts survive a restart while clients come back, and
//! `completed` announces cannot pin swarms for good).
//!
//! # UDP connection ids (BEP 15)
//!
//! The connection id is a keyed cookie, `siphash24(k, ip (16 bytes, v4 mapped) ||
//! bucket)` with `k` derived from the host's secret and `bucket` = `now /
//! cookie_bucket` (SipHash is a PRF made for short inputs: a few dozen nanoseconds
//! where SHA-1 took two blocks). An id of the current or the previous bucket is accepted, so
//! it lives between one and two buckets (default 60 s each, covering BEP 15's minute)
//! and the tracker keeps no per-client state. Packets with a wrong id, unknown actions,
//! or too short are dropped without a reply (no reflection off forged sources).
//!
//! # Persistence
//!
//! [`Tracker::encode_state`] writes the allow list and every swarm's `downloaded`
//! counter as bencode; peers are not saved, they come back as they re-announce. The
//! counters are those of the swarms in memory, so at most
//! [`ServerConfig::max_swarms`] of them, and a restored count of an unregistered
//! swarm is swept like any other empty swarm's.
//! [`Tracker::is_dirty`] tells whether anything saved has changed since
//! [`Tracker::mark_saved`]; the host writes on change, coalesced.
//!
//! # Sync between trackers
//!
//! With [`ServerConfig::sync`] on, every local announce queues a [`SyncEntry`]
//! (info-hash, address, seed or not, seconds to live; a `stopped` gives 0 seconds, a
//! removal). The host drains them with [`Tracker::drain_sync`], encodes batches with
//! [`encode_sync`] and sends them to its peer trackers, which [`Tracker::apply_sync`].
//! Peers learnt through sync are not forwarded again, so trackers syncing both ways do
//! not loop. [`Tracker::local_sync_entries`] lists every local peer for a full resync
//! when a peer tracker comes back.
//!
//! A batch is `d3:mac20:<HMAC-SHA1(key, payload)>7:payload<n>:<payload>e`. The MAC
//! proves that the sender knows the shared key and that the payload was not altered
//! (integrity, not secrecy: the payload is readable by anyone on the path), and is
//! compared in constant time. Replaying an old batch only refreshes peers for their
//! time to live. [`sync_auth`] gives the header a host sends with a batch, so that a
//! receiver can refuse a request from someone without the key before reading its body.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::udp::{Action, ANNOUNCE_LEN, MAX_SCRAPE_HASHES, PROTOCOL_ID};
use super::{Event, ScrapeStats, COMPACT_V4_LEN, COMPACT_V6_LEN};
use crate::bencode::{self, Encoder, Limits};
use crate::hash::{sha1, siphash24};
use crate::ids::{InfoHash, PeerId};
use crate::rng::Rng;
use crate::time::{Duration, Instant};

/// Default announce interval (30 minutes, as most public trackers).
pub(crate) const DEFAULT_INTERVAL_SECS: u32 = 1800;
/// Default `numwant` when the client sends none.
pub(crate) const DEFAULT_NUMWANT: u32 = 50;
/// Most peers in one reply whatever `numwant` says.
pub(crate) const MAX_NUMWANT: u32 = 200;
/// Most info-hashes in one HTTP scrape (the UDP limit is BEP 15's 74).
pub(crate) const MAX_HTTP_SCRAPE: usize = 256;
/// Default of [`ServerConfig::max_peers_per_ip`]: a household's few clients behind one
/// address fit, one address cannot take a swarm over.
pub const DEFAULT_MAX_PEERS_PER_IP: usize = 8;
/// Default of [`ServerConfig::max_swarms_per_ip`]: a seedbox with a few thousand
/// torrents fits; one address holds at most 5% of the default swarm table.
pub(crate) const DEFAULT_MAX_SWARMS_PER_IP: usize = 5_000;
/// Default of [`ServerConfig::max_total_peers_per_ip`]: a busy NAT fits; one address
/// holds at most 0.5% of the default peer table.
pub(crate) const DEFAULT_MAX_TOTAL_PEERS_PER_IP: usize = 10_000;
/// Default of [`ServerConfig::max_peers_per_48`]: ten /64s at their cap, 5% of the
/// default peer table.
pub(crate) const DEFAULT_MAX_PEERS_PER_48: usize = 100_000;
/// Most swarms of the busiest group looked at when the swarm table is full and no
/// swarm is empty (see [`Tracker::announce`]).
const SWARM_EVICTION_STEPS: usize = 64;

/// Who may announce.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Any info-hash.
    Open,
    /// Only info-hashes registered with [`Tracker::register`].
    AllowList,
}

/// What happens when a new peer announces to a full swarm.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FullSwarm {
    /// Drop the peer that expires first in the address group (IPv4 address, IPv6 /64)
    /// holding the most peers of the swarm; with one peer per group, simply the peer
    /// that expires first. One address cannot push honest peers out: it only ever
    /// displaces its own.
    ReplaceBusiest,
    /// Drop the peer that expires first (for local peers, the one that announced least
    /// recently), whoever holds it.
    ReplaceOldest,
    /// Refuse the newcomer ([`ServerError::SwarmFull`]).
    Refuse,
}

/// Tracker policy and limits. The defaults suit a public tracker on a small machine.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Open or allow-list. Default open.
    pub mode: Mode,
    /// `interval` sent to clients. Default `DEFAULT_INTERVAL_SECS`.
    pub interval_secs: u32,
    /// `min interval` sent to HTTP clients. Default 60 s.
    pub min_interval_secs: u32,
    /// A peer silent for this long is dropped. Default twice the interval.
    pub peer_timeout: Duration,
    /// Peers returned when the client asks for none. Default `DEFAULT_NUMWANT`.
    pub default_numwant: u32,
    /// Most peers returned. Default `MAX_NUMWANT`.
    pub max_numwant: u32,
    /// Most swarms. Default 100,000. At the cap a new swarm takes the place of the
    /// empty swarm (kept for its `downloaded` count) that was announced to least
    /// recently, else of a swarm held only by the address group present in the most
    /// swarms (see the module docs).
    pub max_swarms: usize,
    /// Most peers in one swarm. Default 20,000.
    pub max_peers_per_swarm: usize,
    /// Most peers in all. Default 2,000,000 (about 250 MB). At the cap a newcomer
    /// takes the place of a peer of the address group holding the most peers.
    pub max_peers: usize,
    /// Most peers of one address group (an IPv4 address, or an IPv6 /64) in one
    /// swarm. A newcomer from a group at the cap replaces that group's peer that
    /// expires first (a client back on a new port takes its old entry's place), so one
    /// address can neither fill a swarm nor refuse itself. Default
    /// [`DEFAULT_MAX_PEERS_PER_IP`].
    pub max_peers_per_ip: usize,
    /// Most swarms one address group (an IPv4 address, or an IPv6 /64) holds peers
    /// in, over the whole tracker; beyond it, its announces to other swarms are
    /// refused ([`ServerError::AddressFull`]: only that group is held back). Default
    /// `DEFAULT_MAX_SWARMS_PER_IP`.
    pub max_swarms_per_ip: usize,
    /// Most peers of one address group in all swarms together. A newcomer from a
    /// group at the cap replaces the group's own peer that expires first in the same
    /// swarm, or is refused ([`ServerError::AddressFull`]) where the group has none.
    /// Default `DEFAULT_MAX_TOTAL_PEERS_PER_IP`.
    pub max_total_peers_per_ip: usize,
    /// Most peers of one IPv6 /48 (a site, which may hold 65,536 /64s) in all swarms
    /// together, with the same replacement. Default `DEFAULT_MAX_PEERS_PER_48`.
    pub max_peers_per_48: usize,
    /// Policy at the swarm cap. Default [`FullSwarm::ReplaceBusiest`].
    pub full_swarm: FullSwarm,
    /// How long an empty swarm that is not registered keeps its `downloaded` count
    /// after its last announce (a swarm with no peers and no count goes at the next
    /// sweep). Registered swarms are kept whatever their peers, as opentracker keeps
    /// its whitelisted torrents. Default one hour.
    pub empty_swarm_ttl: Duration,
    /// Whether the HTTP `ip` parameter (and the UDP `ip` field) is believed. Default
    /// no: anyone could otherwise point a swarm at a third party.
    pub accept_ip_param: bool,
    /// Width of a UDP connection-id time bucket. Default 60 s.
    pub cookie_bucket: Duration,
    /// Whether local announces are queued for peer trackers. Default no.
    pub sync: bool,
    /// Most sync entries waiting to be drained; beyond it new ones are dropped.
    /// Default 100,000.
    pub max_sync_queue: usize,
    /// Most entries accepted in one sync batch. Default 50,000.
    pub max_sync_batch: usize,
    /// How often [`Tracker::handle_timeout`] sweeps expired peers. Default 10 s.
    pub sweep_every: Duration,
    /// Whether peer ids are stored, for the `peer id` of non-compact HTTP replies
    /// (20 more bytes per peer). Default no: compact replies (BEP 23, UDP, nearly
    /// every client) carry no ids, and without them non-compact replies leave the key
    /// out, as BEP 23's `no_peer_id` allows.
    pub peer_ids: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Open,
            interval_secs: DEFAULT_INTERVAL_SECS,
            min_interval_secs: 60,
            peer_timeout: Duration::from_secs(2 * DEFAULT_INTERVAL_SECS as u64),
            default_numwant: DEFAULT_NUMWANT,
            max_numwant: MAX_NUMWANT,
            max_swarms: 100_000,
            max_peers_per_swarm: 20_000,
            max_peers: 2_000_000,
            max_peers_per_ip: DEFAULT_MAX_PEERS_PER_IP,
            max_swarms_per_ip: DEFAULT_MAX_SWARMS_PER_IP,
            max_total_peers_per_ip: DEFAULT_MAX_TOTAL_PEERS_PER_IP,
            max_peers_per_48: DEFAULT_MAX_PEERS_PER_48,
            full_swarm: FullSwarm::ReplaceBusiest,
            empty_swarm_ttl: Duration::from_secs(3600),
            accept_ip_param: false,
            cookie_bucket: Duration::from_secs(60),
            sync: false,
            max_sync_queue: 100_000,
            max_sync_batch: 50_000,
            sweep_every: Duration::from_secs(10),
            peer_ids: false,
        }
    }
}

/// Why a request was refused. Each maps to a `failure reason` (HTTP) or the text of
/// an error packet (UDP) through [`ServerError::as_str`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ServerError {
    /// No `info_hash`.
    MissingInfoHash,
    /// An `info_hash` that is not 20 bytes once percent-decoded.
    BadInfoHash,
    /// No `peer_id`.
    MissingPeerId,
    /// A `peer_id` that is not 20 bytes.
    BadPeerId,
    /// No `port`.
    MissingPort,
    /// A port that is not a number in 1..=65535.
    BadPort,
    /// No `left`.
    MissingLeft,
    /// `uploaded`, `downloaded`, `left`, `numwant` or `compact` is not a number.
    BadNumber,
    /// An unknown `event`.
    BadEvent,
    /// A malformed `%XX` escape or a query parameter that is too long.
    BadEncoding,
    /// A scrape without info-hashes (full scrapes are not served).
    NoScrapeHashes,
    /// More info-hashes than one scrape may carry.
    TooManyHashes,
    /// Allow-list mode and the info-hash is not registered.
    NotRegistered,
    /// The swarm cap is reached.
    TooManySwarms,
    /// The swarm is full and the policy is to refuse.
    SwarmFull,
    /// The total peer cap is reached and no peer could be evicted.
    TrackerFull,
    /// The client's address group holds as many peers or swarms as the tracker lets
    /// one address hold ([`ServerConfig::max_total_peers_per_ip`],
    /// [`ServerConfig::max_swarms_per_ip`], [`ServerConfig::max_peers_per_48`]).
    AddressFull,
}

/// Who is at fault for a [`ServerError`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fault {
    /// The request was malformed.
    Client,
    /// The tracker's policy refuses it.
    Policy,
    /// A capacity limit was reached: retrying later may work.
    Capacity,
}

impl ServerError {
    /// The `failure reason` text.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingInfoHash => "missing info_hash",
            Self::BadInfoHash => "invalid info_hash",
            Self::MissingPeerId => "missing peer_id",
            Self::BadPeerId => "invalid peer_id",
            Self::MissingPort => "missing port",
            Self::BadPort => "invalid port",
            Self::MissingLeft => "missing left",
            Self::BadNumber => "invalid numeric parameter",
            Self::BadEvent => "invalid event",
            Self::BadEncoding => "malformed query string",
            Self::NoScrapeHashes => "full scrape not supported",
            Self::TooManyHashes => "too many info_hash values",
            Self::NotRegistered => "torrent not registered",
            Self::TooManySwarms => "tracker is tracking too many torrents",
            Self::SwarmFull => "swarm is full",
            Self::TrackerFull => "tracker is full",
            Self::AddressFull => "too many peers from this address",
        }
    }

    /// Who is at fault.
    pub const fn fault(self) -> Fault {
        match self {
            Self::NotRegistered => Fault::Policy,
            Self::TooManySwarms | Self::SwarmFull | Self::TrackerFull | Self::AddressFull => {
                Fault::Capacity
            }
            _ => Fault::Client,
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for ServerError {}

/// One announce as the tracker sees it, from either transport.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Announce {
    /// The torrent.
    pub info_hash: InfoHash,
    /// The client's peer id.
    pub peer_id: PeerId,
    /// The client's listening port.
    pub port: u16,
    /// Bytes uploaded.
    pub uploaded: u64,
    /// Bytes downloaded.
    pub downloaded: u64,
    /// Bytes missing; 0 makes the peer a seed.
    pub left: u64,
    /// `None` for a regular announce.
    pub event: Option<Event>,
    /// Peers wanted (`None`: the default).
    pub numwant: Option<u32>,
    /// Compact reply wanted (HTTP; UDP always is).
    pub compact: bool,
    /// The `ip` the client claims (used only with [`ServerConfig::accept_ip_param`]).
    pub ip: Option<IpAddr>,
    /// The client's key.
    pub key: Option<u32>,
}

/// The outcome of an announce.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct AnnounceReply {
    /// Seconds until the next announce.
    pub interval_secs: u32,
    /// Seeds in the swarm.
    pub complete: u32,
    /// Leechers in the swarm.
    pub incomplete: u32,
    /// Completed downloads seen.
    pub downloaded: u32,
    /// The chosen peers (address and peer id), at most the capped `numwant`.
    pub peers: Vec<(SocketAddr, PeerId)>,
}

/// One announce forwarded between trackers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SyncEntry {
    /// The torrent.
    pub info_hash: InfoHash,
    /// The peer.
    pub addr: SocketAddr,
    /// Whether it is a seed (`left == 0`).
    pub seed: bool,
    /// Seconds it stays listed; 0 removes it.
    pub ttl_secs: u32,
}

/// Why a snapshot or a sync batch was rejected.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum StateError {
    /// Not valid bencode.
    Bencode(bencode::DecodeError),
    /// Valid bencode, wrong shape (missing or mistyped fields).
    Malformed,
    /// The MAC does not match the key (a sync batch).
    BadMac,
    /// More entries than allowed.
    TooLarge,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bencode(e) => write!(f, "state: {e}"),
            Self::Malformed => f.write_str("state: malformed"),
            Self::BadMac => f.write_str("sync: bad MAC"),
            Self::TooLarge => f.write_str("state: too many entries"),
        }
    }
}

impl core::error::Error for StateError {}

impl From<bencode::DecodeError> for StateError {
    fn from(e: bencode::DecodeError) -> Self {
        Self::Bencode(e)
    }
}

// ---------------------------------------------------------------- swarms

mod groups;
mod swarm;

use groups::Groups;
use swarm::{compact_addr, Families, Ids, Key, Place, Secs, Swarm};

fn swarm_stats(s: &Swarm) -> ScrapeStats {
    let (seeds, leechers) = s.counts();
    ScrapeStats {
        complete: seeds as u32,
        downloaded: s.downloaded,
        incomplete: leechers as u32,
    }
}

/// `now` in whole seconds (the clock peer records keep).
fn secs(now: Instant) -> Secs {
    u32::try_from(now.as_millis() / 1000).unwrap_or(u32::MAX)
}

/// The second at which a peer seen at `now` with `ttl` to live expires, rounded up:
/// a peer is never dropped early.
fn expiry(now: Instant, ttl: Duration) -> Secs {
    let ms = now.as_millis().saturating_add(ttl.as_millis());
    u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)
}

/// Counters of what the tracker did, for statistics pages.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Counters {
    /// Announces answered.
    pub announces: u64,
    /// Scrapes answered.
    pub scrapes: u64,
    /// Requests refused with a failure.
    pub failures: u64,
    /// UDP datagrams dropped without reply.
    pub dropped: u64,
    /// Sync entries dropped because the queue was full.
    pub sync_dropped: u64,
    /// Peers removed by expiry.
    pub expired: u64,
    /// Peers and swarms dropped to make room for newcomers (in full swarms and at the
    /// tracker's caps; not an address's own entries giving way to its newer ones).
    pub evicted: u64,
    /// Peer records read to choose whom to evict from full swarms: a measure of the
    /// cost of eviction (with [`FullSwarm::ReplaceBusiest`], O(log n) per newcomer
    /// while some address holds two peers of the swarm, a sample of 32 when none does;
    /// one pass over the swarm with [`FullSwarm::ReplaceOldest`]).
    pub eviction_work: u64,
}

/// The tracker: swarms, the allow list and the sync queue.
///
/// Methods: getters (`stats`, `swarm_count`, ...), `handle_*` for requests,
/// commands (`register`, `announce`, `mark_saved`) and `poll_timeout` / `drain_sync`
/// for output. See the module docs for the order a host calls them in.
#[derive(Debug)]
pub struct Tracker {
    config: ServerConfig,
    /// SipHash key of the UDP connection ids.
    cookie_key: [u8; 16],
    /// SipHash key of the peer indexes.
    index_key: [u8; 16],
    swarms: BTreeMap<InfoHash, Swarm>,
    allow: BTreeSet<InfoHash>,
    peers: usize,
    /// Every address group's peers and swarms over the tracker.
    groups: Groups,
    /// `(last_seen, info-hash)` of every empty swarm not registered: the first to go
    /// when the swarm table is full.
    idle: BTreeSet<(Secs, InfoHash)>,
    /// Scratch space of the sweep.
    gone: Vec<Key>,
    dirty: bool,
    sync_queue: Vec<SyncEntry>,
    next_sweep: Option<Instant>,
    counters: Counters,
    /// Scratch space of the peer sampling.
    picked: Vec<u32>,
}

impl Tracker {
    /// A tracker with no swarms; `secret` keys the UDP connection ids (the host draws it
    /// from the OS at start: ids do not survive a restart, clients reconnect).
    pub fn new(config: ServerConfig, secret: [u8; 32]) -> Self {
        let key = |label: &[u8]| {
            let mut m = [0u8; 32 + 8];
            m[..32].copy_from_slice(&secret);
            m[32..32 + label.len()].copy_from_slice(label);
            let d = sha1(&m);
            let mut k = [0u8; 16];
            k.copy_from_slice(&d[..16]);
            k
        };
        Self {
            config,
            cookie_key: key(b"cookie"),
            index_key: key(b"index"),
            swarms: BTreeMap::new(),
            allow: BTreeSet::new(),
            peers: 0,
            groups: Groups::default(),
            idle: BTreeSet::new(),
            gone: Vec::new(),
            dirty: false,
            sync_queue: Vec::new(),
            next_sweep: None,
            counters: Counters::default(),
            picked: Vec::new(),
        }
    }

    // ------------------------------------------------------------ getters

    /// The configuration.
    pub const fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Swarms tracked.
    pub fn swarm_count(&self) -> usize {
        self.swarms.len()
    }

    /// Peers tracked in all swarms.
    pub const fn peer_count(&self) -> usize {
        self.peers
    }

    /// What the tracker did so far.
    pub const fn counters(&self) -> Counters {
        self.counters
    }

    /// Counts of one swarm (`None` if unknown).
    pub fn stats(&self, info_hash: &InfoHash) -> Option<ScrapeStats> {
        self.swarms.get(info_hash).map(swarm_stats)
    }

    /// Every known swarm and registered info-hash with its counts, in info-hash order.
    pub fn all_stats(&self) -> impl Iterator<Item = (InfoHash, ScrapeStats)> + '_ {
        let unseen = self
            .allow
            .iter()
            .filter(|h| !self.swarms.contains_key(h))
            .map(|h| (*h, ScrapeStats::default()));
        self.swarms
            .iter()
            .map(|(h, s)| (*h, swarm_stats(s)))
            .chain(unseen)
    }

    /// Peers and swarms held over the whole tracker by the address group of `ip` (its
    /// IPv4 address, or its IPv6 /64), as the per-address caps count them.
    pub fn address_stats(&self, ip: IpAddr) -> (usize, usize) {
        let k = Key::of(SocketAddr::new(ip, 1));
        let (p, s) = self.groups.get(siphash24(&self.index_key, k.group()));
        (p as usize, s as usize)
    }

    /// Address groups holding at least one peer (IPv6 /48s counted besides their /64s).
    pub fn address_groups(&self) -> usize {
        self.groups.len()
    }

    /// Recounts what is kept incrementally (the total of peers, each address group's
    /// peers and swarms, the empty swarms first in line for eviction, where busy
    /// groups are listed) and tells what disagrees, if anything. Costs O(peers): for
    /// tests and fuzzing.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn audit(&self) -> Result<(), &'static str> {
        let key = &self.index_key;
        let mut peers = 0;
        let mut idle = 0;
        let mut counts: BTreeMap<u64, (u32, u32)> = BTreeMap::new();
        let mut here = BTreeSet::new();
        for (h, s) in &self.swarms {
            peers += s.len();
            here.clear();
            for p in s.peers() {
                let k = Key::of(p.addr);
                let g = siphash24(key, k.group());
                let e = counts.entry(g).or_default();
                e.0 += 1;
                if here.insert(g) {
                    e.1 += 1;
                }
                if let Some(g48) = k.group48() {
                    counts.entry(siphash24(key, g48)).or_default().0 += 1;
                }
            }
            let waits = s.len() == 0 && !self.allow.contains(h);
            idle += usize::from(waits);
            if waits != self.idle.contains(&(s.last_seen, *h)) {
                return Err(
                    "an empty swarm is missing from the eviction order, or a live one in it",
                );
            }
        }
        if idle != self.idle.len() {
            return Err("the eviction order lists swarms that are gone");
        }
        if peers != self.peers {
            return Err("the peer count is off");
        }
        if counts.len() != self.groups.len()
            || self
                .groups
                .each()
                .any(|(g, p, s)| counts.get(&g) != Some(&(p, s)))
        {
            return Err("an address group's peers or swarms are off");
        }
        if !self.groups.consistent() {
            return Err("the busy groups' order is off");
        }
        for (rep, h) in self.groups.places() {
            if self
                .swarms
                .get(h)
                .is_none_or(|s| s.group_count(key, rep) == 0)
            {
                return Err("a busy group is listed in a swarm it is not in");
            }
        }
        Ok(())
    }

    /// Whether `info_hash` is on the allow list.
    pub fn is_registered(&self, info_hash: &InfoHash) -> bool {
        self.allow.contains(info_hash)
    }

    /// Whether saved state (allow list, downloaded counters) changed since the last
    /// [`Tracker::mark_saved`].
    pub const fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// When [`Tracker::handle_timeout`] wants to run next.
    pub const fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Sync entries waiting to be drained.
    pub fn sync_pending(&self) -> usize {
        self.sync_queue.len()
    }

    // ------------------------------------------------------------ commands

    /// Adds `info_hash` to the allow list; `false` if it was there.
    pub fn register(&mut self, info_hash: InfoHash) -> bool {
        let new = self.allow.insert(info_hash);
        if new {
            if let Some(s) = self.swarms.get(&info_hash) {
                self.idle.remove(&(s.last_seen, info_hash));
            }
        }
        self.dirty |= new;
        new
    }

    /// Removes `info_hash` from the allow list (and its swarm, in allow-list mode).
    pub fn unregister(&mut self, info_hash: &InfoHash) -> bool {
        let was = self.allow.remove(info_hash);
        if was && self.config.mode == Mode::AllowList {
            self.forget_swarm(info_hash);
        } else if was {
            if let Some(s) = self.swarms.get(info_hash).filter(|s| s.len() == 0) {
                self.idle.insert((s.last_seen, *info_hash));
            }
        }
        self.dirty |= was;
        was
    }

    /// Records that the state was saved.
    pub fn mark_saved(&mut self) {
        self.dirty = false;
    }

    /// Moves up to `max` queued sync entries into `out`, oldest first.
    pub fn drain_sync(&mut self, out: &mut Vec<SyncEntry>, max: usize) {
        let n = max.min(self.sync_queue.len());
        out.extend(self.sync_queue.drain(..n));
    }

    /// Every locally announced peer with its remaining time to live, for a full resync
    /// of a peer tracker.
    pub fn local_sync_entries(&self, now: Instant, out: &mut Vec<SyncEntry>) {
        let now = secs(now);
        for (h, s) in &self.swarms {
            for p in s.peers().filter(|p| !p.remote && p.expires > now) {
                out.push(SyncEntry {
                    info_hash: *h,
                    addr: p.addr,
                    seed: p.seed,
                    ttl_secs: p.expires - now,
                });
            }
        }
    }

    /// Sweeps expired peers when due, and the swarms left empty that are not
    /// registered: at once without completed downloads, after
    /// [`ServerConfig::empty_swarm_ttl`] since their last announce with some.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|t| now < t) {
            return;
        }
        self.next_sweep = Some(now + self.config.sweep_every);
        let mut removed = 0;
        let mut counted_gone = false;
        let ttl = ttl_secs(self.config.empty_swarm_ttl);
        let (key, now) = (&self.index_key, secs(now));
        let mut gone = core::mem::take(&mut self.gone);
        for (h, s) in &mut self.swarms {
            gone.clear();
            let n = s.expire(key, now, &mut gone);
            if n == 0 {
                continue;
            }
            removed += n;
            // The accounting of each peer gone; a group leaves the swarm once.
            gone.sort_unstable_by(|a, b| a.group().cmp(b.group()));
            for (i, k) in gone.iter().enumerate() {
                let last = gone.get(i + 1).is_none_or(|n| n.group() != k.group());
                let left = last && s.group_count(key, k) == 0;
                self.groups.remove(siphash24(key, k.group()), h, left);
                if let Some(g48) = k.group48() {
                    self.groups.remove(siphash24(key, g48), h, false);
                }
            }
            if s.len() == 0 && !self.allow.contains(h) {
                self.idle.insert((s.last_seen, *h));
            }
        }
        gone.clear();
        self.gone = gone;
        let (allow, idle) = (&self.allow, &mut self.idle);
        self.swarms.retain(|h, s| {
            let keep = s.len() > 0
                || allow.contains(h)
                || (s.downloaded > 0 && now < s.last_seen.saturating_add(ttl));
            if !keep {
                idle.remove(&(s.last_seen, *h));
            }
            counted_gone |= !keep && s.downloaded > 0;
            keep
        });
        // A count gone from memory goes from the state file too.
        self.dirty |= counted_gone;
        self.peers -= removed;
        self.counters.expired += removed as u64;
    }

    /// Applies one announce from `source` (the address the request came from); the
    /// reply lists peers of both address families.
    pub fn announce(
        &mut self,
        now: Instant,
        req: &Announce,
        source: IpAddr,
        rng: &mut Rng,
    ) -> Result<AnnounceReply, ServerError> {
        let mut peers = Vec::new();
        let st = self.announce_with(now, req, source, rng, Families::Both, |a, id| {
            peers.push((compact_addr(a), id.copied().unwrap_or_default()));
        })?;
        Ok(AnnounceReply {
            interval_secs: self.config.interval_secs,
            complete: st.complete,
            incomplete: st.incomplete,
            downloaded: st.downloaded,
            peers,
        })
    }

    /// [`Tracker::announce`] handing each chosen peer to `emit` (compact address, peer
    /// id if kept) instead of collecting them; returns the swarm's counts.
    fn announce_with(
        &mut self,
        now: Instant,
        req: &Announce,
        source: IpAddr,
        rng: &mut Rng,
        families: Families,
        emit: impl FnMut(&[u8], Option<&PeerId>),
    ) -> Result<ScrapeStats, ServerError> {
        let r = self.announce_inner(now, req, source, rng, families, emit);
        match r {
            Ok(_) => self.counters.announces += 1,
            Err(_) => self.counters.failures += 1,
        }
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + self.config.sweep_every);
        }
        r
    }

    fn announce_inner(
        &mut self,
        now: Instant,
        req: &Announce,
        source: IpAddr,
        rng: &mut Rng,
        families: Families,
        emit: impl FnMut(&[u8], Option<&PeerId>),
    ) -> Result<ScrapeStats, ServerError> {
        if self.config.mode == Mode::AllowList && !self.allow.contains(&req.info_hash) {
            return Err(ServerError::NotRegistered);
        }
        if req.port == 0 {
            return Err(ServerError::BadPort);
        }
        let ip = match req.ip {
            Some(ip) if self.config.accept_ip_param => ip,
            _ => source,
        };
        let addr = SocketAddr::new(ip.to_canonical(), req.port);
        let k = Key::of(addr);
        let seed = req.left == 0;
        let key = self.index_key;
        let h = req.info_hash;

        if req.event == Some(Event::Stopped) {
            let mut st = ScrapeStats::default();
            if self.swarms.contains_key(&h) {
                self.touch(&h, now);
                if let Some(at) = self.swarms.get(&h).and_then(|s| s.find(&key, &k)) {
                    self.remove_peer(&h, at);
                }
                st = self.stats(&h).unwrap_or_default();
            }
            self.queue_sync(h, addr, seed, 0);
            return Ok(st);
        }

        let expires = expiry(now, self.config.peer_timeout);
        let mut completed = req.event == Some(Event::Completed);
        let me = match self.swarms.get(&h).and_then(|s| s.find(&key, &k)) {
            Some(at) => {
                self.touch(&h, now);
                self.groups.refresh(siphash24(&key, k.group()), &k, &h);
                let ids = self.ids();
                let Some(swarm) = self.swarms.get_mut(&h) else {
                    return Err(ServerError::TooManySwarms);
                };
                if at.is_seed() {
                    // Already a seed: a repeated `completed` is not a new download.
                    completed = false;
                }
                if at.is_seed() == seed {
                    swarm.update(at, expires, false, req.peer_id);
                    Some(at)
                } else {
                    swarm.remove(&key, at);
                    swarm.insert(&key, &k, expires, false, seed, ids, req.peer_id);
                    swarm.find(&key, &k)
                }
            }
            None => self.admit(now, &h, &k, expires, seed, req.peer_id)?,
        };
        let Some(swarm) = self.swarms.get_mut(&h) else {
            return Err(ServerError::TooManySwarms);
        };
        if completed && seed {
            swarm.downloaded = swarm.downloaded.saturating_add(1);
            self.dirty = true;
        }

        let want = req
            .numwant
            .unwrap_or(self.config.default_numwant)
            .min(self.config.max_numwant) as usize;
        let v6 = matches!(k, Key::V6(_));
        swarm.select(me, v6, seed, families, want, rng, &mut self.picked, emit);
        let st = swarm_stats(swarm);
        let ttl = ttl_secs(self.config.peer_timeout);
        self.queue_sync(req.info_hash, addr, seed, ttl);
        Ok(st)
    }

    const fn ids(&self) -> Ids {
        if self.config.peer_ids {
            Ids::Kept
        } else {
            Ids::Dropped
        }
    }

    /// The keys of `k`'s address group and, for IPv6, of its /48.
    fn group_keys(&self, k: &Key) -> (u64, Option<u64>) {
        let key = &self.index_key;
        (
            siphash24(key, k.group()),
            k.group48().map(|g| siphash24(key, g)),
        )
    }

    /// Makes room for the new peer `k` in swarm `h` (created if need be) under every
    /// cap, and adds it; returns where it lives.
    fn admit(
        &mut self,
        now: Instant,
        h: &InfoHash,
        k: &Key,
        expires: Secs,
        seed: bool,
        id: PeerId,
    ) -> Result<Option<Place>, ServerError> {
        let key = self.index_key;
        let cfg = &self.config;
        let per_ip = cfg.max_peers_per_ip.max(1);
        let (g, g48) = self.group_keys(k);
        let (peers, swarms) = self.groups.get(g);
        let peers48 = g48.map_or(0, |g| self.groups.get(g).0);
        let here = self.swarms.get(h).map_or(0, |s| s.group_count(&key, k));
        // The address's own oldest entry here makes room when it is at one of its caps.
        let own = here >= per_ip
            || peers as usize >= cfg.max_total_peers_per_ip.max(1)
            || peers48 as usize >= cfg.max_peers_per_48.max(1);
        if here == 0 && (own || swarms as usize >= cfg.max_swarms_per_ip.max(1)) {
            return Err(ServerError::AddressFull);
        }
        if !self.swarms.contains_key(h) {
            if self.swarms.len() >= cfg.max_swarms && !self.evict_swarm() {
                return Err(ServerError::TooManySwarms);
            }
            if self.peers >= self.config.max_peers && !self.evict_peer(None) {
                return Err(ServerError::TrackerFull);
            }
            let swarm = Swarm::new(secs(now));
            self.swarms.insert(*h, swarm);
        } else {
            let Some(s) = self.swarms.get_mut(h) else {
                return Err(ServerError::TooManySwarms);
            };
            let mut work = 0;
            let victim = if own {
                s.first_in_group(&key, k)
            } else if s.len() >= self.config.max_peers_per_swarm {
                match self.config.full_swarm {
                    FullSwarm::Refuse => return Err(ServerError::SwarmFull),
                    FullSwarm::ReplaceOldest => s.first_to_expire(&mut work),
                    FullSwarm::ReplaceBusiest => s.eviction_victim(&key, per_ip, &mut work),
                }
            } else {
                None
            };
            self.counters.eviction_work += work;
            match victim {
                Some(v) => {
                    if self.remove_peer(h, v) && !own {
                        self.counters.evicted += 1;
                    }
                }
                None => {
                    if self.peers >= self.config.max_peers && !self.evict_peer(Some(h)) {
                        return Err(ServerError::TrackerFull);
                    }
                }
            }
        }
        Ok(self.add_peer(h, k, expires, false, seed, id))
    }

    /// Adds the peer `k`, known absent, to the swarm `h`, with the accounting of its
    /// group; returns where it lives.
    fn add_peer(
        &mut self,
        h: &InfoHash,
        k: &Key,
        expires: Secs,
        remote: bool,
        seed: bool,
        id: PeerId,
    ) -> Option<Place> {
        let (g, g48) = self.group_keys(k);
        let (key, ids) = (self.index_key, self.ids());
        let s = self.swarms.get_mut(h)?;
        if s.len() == 0 {
            self.idle.remove(&(s.last_seen, *h));
        }
        let before = s.group_count(&key, k);
        s.insert(&key, k, expires, remote, seed, ids, id);
        let at = s.find(&key, k);
        self.peers += 1;
        self.groups.add(g, k, h, before == 0, true);
        if let Some(g48) = g48 {
            self.groups.add(g48, k, h, false, false);
        }
        at
    }

    /// Removes the peer at `at` of swarm `h`, with the accounting of its group; a
    /// swarm left empty waits in `idle` unless it is registered.
    fn remove_peer(&mut self, h: &InfoHash, at: Place) -> bool {
        let key = self.index_key;
        let Some(s) = self.swarms.get_mut(h) else {
            return false;
        };
        let Some(k) = s.key_at(at) else {
            return false;
        };
        if !s.remove(&key, at) {
            return false;
        }
        let left = s.group_count(&key, &k) == 0;
        let emptied = (s.len() == 0).then_some(s.last_seen);
        self.peers -= 1;
        let (g, g48) = self.group_keys(&k);
        self.groups.remove(g, h, left);
        if let Some(g48) = g48 {
            self.groups.remove(g48, h, false);
        }
        if let Some(t) = emptied.filter(|_| !self.allow.contains(h)) {
            self.idle.insert((t, *h));
        }
        true
    }

    /// Records an announce (or sync entry) to swarm `h` at `now`.
    fn touch(&mut self, h: &InfoHash, now: Instant) {
        let t = secs(now);
        if let Some(s) = self.swarms.get_mut(h) {
            if s.len() == 0 && s.last_seen != t && self.idle.remove(&(s.last_seen, *h)) {
                self.idle.insert((t, *h));
            }
            s.last_seen = t;
        }
    }

    /// Removes the swarm `h` and its peers, with their accounting.
    fn forget_swarm(&mut self, h: &InfoHash) -> Option<Swarm> {
        let s = self.swarms.remove(h)?;
        self.idle.remove(&(s.last_seen, *h));
        let mut gone = core::mem::take(&mut self.gone);
        gone.clear();
        gone.extend(s.peers().map(|p| Key::of(p.addr)));
        gone.sort_unstable_by(|a, b| a.group().cmp(b.group()));
        for (i, k) in gone.iter().enumerate() {
            let last = gone.get(i + 1).is_none_or(|n| n.group() != k.group());
            let (g, g48) = self.group_keys(k);
            self.groups.remove(g, h, last);
            if let Some(g48) = g48 {
                self.groups.remove(g48, h, false);
            }
        }
        self.peers -= gone.len();
        gone.clear();
        self.gone = gone;
        Some(s)
    }

    /// Frees a peer slot at the tracker's peer cap: the oldest peer of the address
    /// group holding the most peers (among those holding [`groups::HEAVY`] or more),
    /// where it was last active; with no such group, the victim of the newcomer's
    /// swarm `target` as if it were full (by [`ServerConfig::full_swarm`]). `false`
    /// when neither exists.
    fn evict_peer(&mut self, target: Option<&InfoHash>) -> bool {
        let key = self.index_key;
        while let Some((rep, h)) = self.groups.busiest_by_peers() {
            let at = self
                .swarms
                .get(&h)
                .and_then(|s| s.first_in_group(&key, &rep));
            match at {
                Some(at) if self.remove_peer(&h, at) => {
                    self.counters.evicted += 1;
                    return true;
                }
                // Not there (the places are exact; this is defence): look elsewhere.
                _ => self.groups.unlist(siphash24(&key, rep.group()), &h),
            }
        }
        let Some(h) = target else {
            return false;
        };
        let mut work = 0;
        let per_ip = self.config.max_peers_per_ip.max(1);
        let policy = self.config.full_swarm;
        let victim = self.swarms.get_mut(h).and_then(|s| match policy {
            FullSwarm::Refuse => None,
            FullSwarm::ReplaceOldest => s.first_to_expire(&mut work),
            FullSwarm::ReplaceBusiest => s.eviction_victim(&key, per_ip, &mut work),
        });
        self.counters.eviction_work += work;
        if victim.is_some_and(|at| self.remove_peer(h, at)) {
            self.counters.evicted += 1;
            return true;
        }
        false
    }

    /// Frees a swarm slot at the swarm cap: the empty swarm not registered that was
    /// announced to least recently; else a swarm whose every peer belongs to the
    /// address group present in the most swarms (among those holding
    /// [`groups::HEAVY`] peers or more), whose peers in swarms it shares with others
    /// go meanwhile, looking at [`SWARM_EVICTION_STEPS`] of its swarms at most.
    /// `false` when none was found.
    fn evict_swarm(&mut self) -> bool {
        while let Some((_, h)) = self.idle.pop_first() {
            if self.swarms.get(&h).is_some_and(|s| s.len() == 0) && !self.allow.contains(&h) {
                if let Some(s) = self.forget_swarm(&h) {
                    self.dirty |= s.downloaded > 0;
                }
                self.counters.evicted += 1;
                return true;
            }
        }
        let key = self.index_key;
        for _ in 0..SWARM_EVICTION_STEPS {
            let Some((rep, h)) = self.groups.busiest_by_swarms() else {
                break;
            };
            let (mine, all) = self
                .swarms
                .get(&h)
                .map_or((0, 0), |s| (s.group_count(&key, &rep), s.len()));
            if mine == 0 {
                self.groups.unlist(siphash24(&key, rep.group()), &h);
                continue;
            }
            if mine == all && !self.allow.contains(&h) {
                if let Some(s) = self.forget_swarm(&h) {
                    self.dirty |= s.downloaded > 0;
                }
                self.counters.evicted += 1;
                return true;
            }
            while let Some(at) = self
                .swarms
                .get(&h)
                .and_then(|s| s.first_in_group(&key, &rep))
            {
                if !self.remove_peer(&h, at) {
                    break;
                }
                self.counters.evicted += 1;
            }
        }
        false
    }

    fn queue_sync(&mut self, info_hash: InfoHash, addr: SocketAddr, seed: bool, ttl_secs: u32) {
        if !self.config.sync {
            return;
        }
        if self.sync_queue.len() >= self.config.max_sync_queue {
            self.counters.sync_dropped += 1;
            return;
        }
        self.sync_queue.push(SyncEntry {
            info_hash,
            addr,
            seed,
            ttl_secs,
        });
    }

    /// Counts for a scrape of `hashes` (unknown ones are all zero).
    pub fn scrape(&mut self, hashes: &[InfoHash], out: &mut Vec<(InfoHash, ScrapeStats)>) {
        self.counters.scrapes += 1;
        for h in hashes {
            out.push((*h, self.stats(h).unwrap_or_default()));
        }
    }

    // ------------------------------------------------------------ HTTP

    /// Parses the query of `GET /announce?...`, announces, and writes the bencoded
    /// reply (or a `failure reason`) into `out`. Returns the error, if any.
    pub fn handle_http_announce(
        &mut self,
        now: Instant,
        query: &[u8],
        remote: SocketAddr,
        rng: &mut Rng,
        out: &mut Vec<u8>,
    ) -> Option<ServerError> {
        let req = match parse_announce_query(query) {
            Ok(req) => req,
            Err(e) => {
                self.counters.failures += 1;
                encode_failure(e.as_str().as_bytes(), out);
                return Some(e);
            }
        };
        match self.announce(now, &req, remote.ip(), rng) {
            Ok(reply) => {
                encode_announce_reply(&reply, req.compact, self.config.min_interval_secs, out);
                None
            }
            Err(e) => {
                encode_failure(e.as_str().as_bytes(), out);
                Some(e)
            }
        }
    }

    /// Parses the query of `GET /scrape?...` and writes the bencoded `files` dictionary
    /// (or a `failure reason`) into `out`.
    pub fn handle_http_scrape(&mut self, query: &[u8], out: &mut Vec<u8>) -> Option<ServerError> {
        let mut hashes = Vec::new();
        match parse_scrape_query(query, &mut hashes) {
            Ok(()) => {
                let mut stats = Vec::with_capacity(hashes.len());
                self.scrape(&hashes, &mut stats);
                encode_scrape_reply(&stats, out);
                None
            }
            Err(e) => {
                self.counters.failures += 1;
                encode_failure(e.as_str().as_bytes(), out);
                Some(e)
            }
        }
    }

    // ------------------------------------------------------------ UDP

    /// The connection id for `from` in the bucket of `now`.
    pub fn connection_id(&self, now: Instant, from: SocketAddr) -> u64 {
        self.cookie(from, self.bucket(now))
    }

    /// Whether `id` is a connection id given to `from` in this bucket or the last one.
    pub(crate) fn check_connection_id(&self, now: Instant, from: SocketAddr, id: u64) -> bool {
        let b = self.bucket(now);
        self.cookie(from, b) == id || (b > 0 && self.cookie(from, b - 1) == id)
    }

    fn bucket(&self, now: Instant) -> u64 {
        now.as_millis() / self.config.cookie_bucket.as_millis().max(1)
    }

    fn cookie(&self, from: SocketAddr, bucket: u64) -> u64 {
        // Keyed by the client's IP only (as opentracker does): BEP 15's connection id
        // proves the source address is not spoofed, and clients often announce from a
        // new UDP port each time.
        let mut m = [0u8; 16 + 8];
        let ip = match from.ip().to_canonical() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        m[..16].copy_from_slice(&ip.octets());
        m[16..].copy_from_slice(&bucket.to_be_bytes());
        siphash24(&self.cookie_key, &m)
    }

    /// Handles one BEP 15 datagram from `from`; writes the reply into `out` (cleared
    /// first) and returns `true` if there is one to send. Garbage, short packets and
    /// packets with a wrong connection id get no reply.
    pub fn handle_udp(
        &mut self,
        now: Instant,
        packet: &[u8],
        from: SocketAddr,
        rng: &mut Rng,
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        let reply = self.udp_inner(now, packet, from, rng, out);
        if !reply {
            self.counters.dropped += 1;
            out.clear();
        }
        reply
    }

    fn udp_inner(
        &mut self,
        now: Instant,
        p: &[u8],
        from: SocketAddr,
        rng: &mut Rng,
        out: &mut Vec<u8>,
    ) -> bool {
        let (Some(conn), Some(action), Some(txid)) = (be_u64(p, 0), be_u32(p, 8), be_u32(p, 12))
        else {
            return false;
        };
        match Action::from_code(action) {
            Some(Action::Connect) => {
                if conn != PROTOCOL_ID {
                    return false;
                }
                out.extend_from_slice(&Action::Connect.code().to_be_bytes());
                out.extend_from_slice(&txid.to_be_bytes());
                out.extend_from_slice(&self.connection_id(now, from).to_be_bytes());
                true
            }
            Some(Action::Announce) => {
                if p.len() < ANNOUNCE_LEN || !self.check_connection_id(now, from, conn) {
                    return false;
                }
                let req = match parse_udp_announce(p) {
                    Ok(r) => r,
                    Err(e) => {
                        self.counters.failures += 1;
                        encode_udp_error(txid, e.as_str().as_bytes(), out);
                        return true;
                    }
                };
                // The header goes in front once the counts are known; the peers (of the
                // requester's family) are written behind it as they are drawn.
                out.resize(20, 0);
                let r = self.announce_with(now, &req, from.ip(), rng, Families::SameAs, |a, _| {
                    out.extend_from_slice(a);
                });
                match r {
                    Ok(st) => {
                        out[..4].copy_from_slice(&Action::Announce.code().to_be_bytes());
                        out[4..8].copy_from_slice(&txid.to_be_bytes());
                        out[8..12].copy_from_slice(&self.config.interval_secs.to_be_bytes());
                        out[12..16].copy_from_slice(&st.incomplete.to_be_bytes());
                        out[16..20].copy_from_slice(&st.complete.to_be_bytes());
                    }
                    Err(e) => encode_udp_error(txid, e.as_str().as_bytes(), out),
                }
                true
            }
            Some(Action::Scrape) => {
                if !self.check_connection_id(now, from, conn) {
                    return false;
                }
                let body = &p[16..];
                let n = body.len() / 20;
                if n == 0 || body.len() % 20 != 0 {
                    return false;
                }
                if n > MAX_SCRAPE_HASHES {
                    self.counters.failures += 1;
                    encode_udp_error(txid, ServerError::TooManyHashes.as_str().as_bytes(), out);
                    return true;
                }
                self.counters.scrapes += 1;
                out.extend_from_slice(&Action::Scrape.code().to_be_bytes());
                out.extend_from_slice(&txid.to_be_bytes());
                for h in body.chunks_exact(20) {
                    let mut ih = [0u8; 20];
                    ih.copy_from_slice(h);
                    let st = self.stats(&InfoHash(ih)).unwrap_or_default();
                    out.extend_from_slice(&st.complete.to_be_bytes());
                    out.extend_from_slice(&st.downloaded.to_be_bytes());
                    out.extend_from_slice(&st.incomplete.to_be_bytes());
                }
                true
            }
            _ => false,
        }
    }

    // ------------------------------------------------------------ state

    /// Writes the allow list and the `downloaded` counters:
    /// `d5:allowl<hash>...e9:downloadedd<hash>i<n>e...e7:versioni1ee`.
    pub fn encode_state(&self, out: &mut Vec<u8>) {
        let mut e = Encoder::new(out);
        let _ = e.dict();
        let _ = e.bytes(b"allow");
        let _ = e.list();
        for h in &self.allow {
            let _ = e.bytes(&h.0);
        }
        let _ = e.end();
        let _ = e.bytes(b"downloaded");
        let _ = e.dict();
        for (h, s) in self.swarms.iter().filter(|(_, s)| s.downloaded > 0) {
            let _ = e.key_int(&h.0, i64::from(s.downloaded));
        }
        let _ = e.end();
        let _ = e.key_int(b"version", 1);
        let _ = e.end();
    }

    /// Restores what [`Tracker::encode_state`] wrote (merged into the current state;
    /// caps on swarms apply), at `now`. Leaves the tracker clean. A restored count of a
    /// swarm that is not registered lasts [`ServerConfig::empty_swarm_ttl`] unless its
    /// peers announce again: a state file cannot pin swarms for good.
    pub fn restore_state(&mut self, now: Instant, data: &[u8]) -> Result<(), StateError> {
        let limits = Limits {
            max_depth: 4,
            max_tokens: 3 * (self.config.max_swarms as u32).saturating_mul(2) + 16,
            max_string_len: 64,
            allow_trailing: false,
            ..Limits::default()
        };
        let mut tokens = Vec::new();
        let doc = bencode::decode_vec(data, &mut tokens, &limits)?;
        let root = doc.root().as_dict().ok_or(StateError::Malformed)?;
        if root.get_int(b"version") != Some(1) {
            return Err(StateError::Malformed);
        }
        let allow = root.get_list(b"allow").ok_or(StateError::Malformed)?;
        let downloaded = root.get_dict(b"downloaded").ok_or(StateError::Malformed)?;
        for v in allow.iter() {
            let h = v.as_bytes().and_then(hash20).ok_or(StateError::Malformed)?;
            if self.allow.insert(h) {
                if let Some(s) = self.swarms.get(&h) {
                    self.idle.remove(&(s.last_seen, h));
                }
            }
        }
        for (k, v) in downloaded.iter() {
            let h = hash20(k).ok_or(StateError::Malformed)?;
            let n = v.as_int().ok_or(StateError::Malformed)?;
            let n = u32::try_from(n.max(0)).unwrap_or(u32::MAX);
            if let Some(s) = self.swarms.get_mut(&h) {
                s.downloaded = s.downloaded.max(n);
            } else if self.swarms.len() < self.config.max_swarms {
                let mut s = Swarm::new(secs(now));
                s.downloaded = n;
                if !self.allow.contains(&h) {
                    self.idle.insert((s.last_seen, h));
                }
                self.swarms.insert(h, s);
            }
        }
        if self.next_sweep.is_none() && !self.swarms.is_empty() {
            self.next_sweep = Some(now + self.config.sweep_every);
        }
        self.dirty = false;
        Ok(())
    }

    // ------------------------------------------------------------ sync

    /// Verifies and applies a batch from a peer tracker (see [`encode_sync`]); returns
    /// how many entries were applied. Entries for unregistered torrents (allow-list
    /// mode) or beyond the caps are skipped.
    pub fn apply_sync(
        &mut self,
        now: Instant,
        msg: &[u8],
        key: &[u8],
    ) -> Result<usize, StateError> {
        let limits = Limits {
            max_depth: 4,
            max_tokens: (self.config.max_sync_batch as u32).saturating_mul(9) + 16,
            max_string_len: 64 << 20,
            allow_trailing: false,
            ..Limits::default()
        };
        let mut tokens = Vec::new();
        let doc = bencode::decode_vec(msg, &mut tokens, &limits)?;
        let root = doc.root().as_dict().ok_or(StateError::Malformed)?;
        let mac = root.get_bytes(b"mac").ok_or(StateError::Malformed)?;
        let payload = root.get_bytes(b"payload").ok_or(StateError::Malformed)?;
        if !ct_eq(mac, &sync_mac(key, payload)) {
            return Err(StateError::BadMac);
        }
        let mut entries = Vec::new();
        decode_sync_payload(payload, self.config.max_sync_batch, &mut entries)?;
        let mut applied = 0;
        for e in &entries {
            if self.apply_entry(now, e) {
                applied += 1;
            }
        }
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + self.config.sweep_every);
        }
        Ok(applied)
    }

    fn apply_entry(&mut self, now: Instant, e: &SyncEntry) -> bool {
        if self.config.mode == Mode::AllowList && !self.allow.contains(&e.info_hash) {
            return false;
        }
        let k = Key::of(e.addr);
        let key = self.index_key;
        let h = e.info_hash;
        let found = self.swarms.get(&h).and_then(|s| s.find(&key, &k));
        if e.ttl_secs == 0 {
            return found.is_some_and(|at| self.remove_peer(&h, at));
        }
        // A remote entry never lives longer than a local peer would.
        let ttl = Duration::from_secs(u64::from(e.ttl_secs)).min(self.config.peer_timeout);
        let expires = expiry(now, ttl);
        let ids = self.ids();
        if let Some(at) = found {
            self.touch(&h, now);
            let Some(s) = self.swarms.get_mut(&h) else {
                return false;
            };
            // A peer that also announces here stays local and keeps its id.
            let (old, remote, id) = s.meta(at).unwrap_or((0, true, None));
            let (expires, id) = (expires.max(old), id.unwrap_or_default());
            if at.is_seed() == e.seed {
                s.update(at, expires, remote, id);
            } else {
                s.remove(&key, at);
                s.insert(&key, &k, expires, remote, e.seed, ids, id);
            }
            return true;
        }
        // Entries from peer trackers take free room only: they never evict.
        let (g, g48) = self.group_keys(&k);
        let (peers, swarms) = self.groups.get(g);
        let peers48 = g48.map_or(0, |g| self.groups.get(g).0);
        let (here, len) = self
            .swarms
            .get(&h)
            .map_or((0, 0), |s| (s.group_count(&key, &k), s.len()));
        let cfg = &self.config;
        if len >= cfg.max_peers_per_swarm
            || self.peers >= cfg.max_peers
            || here >= cfg.max_peers_per_ip.max(1)
            || peers as usize >= cfg.max_total_peers_per_ip.max(1)
            || peers48 as usize >= cfg.max_peers_per_48.max(1)
            || (here == 0 && swarms as usize >= cfg.max_swarms_per_ip.max(1))
        {
            return false;
        }
        if !self.swarms.contains_key(&h) {
            if self.swarms.len() >= cfg.max_swarms {
                return false;
            }
            let swarm = Swarm::new(secs(now));
            self.swarms.insert(h, swarm);
        }
        self.touch(&h, now);
        self.add_peer(&h, &k, expires, true, e.seed, PeerId::default())
            .is_some()
    }
}

fn ttl_secs(d: Duration) -> u32 {
    u32::try_from(d.as_millis().div_ceil(1000)).unwrap_or(u32::MAX)
}

fn hash20(b: &[u8]) -> Option<InfoHash> {
    <[u8; 20]>::try_from(b).ok().map(InfoHash)
}

// ---------------------------------------------------------------- parsing

/// Decodes a percent-encoded query value into `out`; `None` on a bad escape or when
/// it does not fit. `+` is kept as is (clients escape it; BEP 3 values are bytes).
fn pct_decode<'o>(v: &[u8], out: &'o mut [u8]) -> Option<&'o [u8]> {
    crate::magnet::decode_into(v, out).ok()
}

/// The `key=value` pairs of a query string (values still percent-encoded).
pub fn query_pairs(q: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    q.split(|&b| b == b'&').filter(|p| !p.is_empty()).map(|p| {
        match p.iter().position(|&b| b == b'=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &p[p.len()..]),
        }
    })
}

/// Decodes a 20-byte value (info-hash or peer id): percent-encoded raw bytes, or 40 hex
/// digits.
pub fn decode_id20(v: &[u8]) -> Option<[u8; 20]> {
    let mut buf = [0u8; 40];
    let d = pct_decode(v, &mut buf)?;
    match d.len() {
        20 => <[u8; 20]>::try_from(d).ok(),
        40 => crate::ids::hex_decode::<20>(d),
        _ => None,
    }
}

fn pct_str<'o>(v: &[u8], out: &'o mut [u8; 64]) -> Result<&'o str, ServerError> {
    let d = pct_decode(v, out).ok_or(ServerError::BadEncoding)?;
    core::str::from_utf8(d).map_err(|_| ServerError::BadEncoding)
}

fn num<T: core::str::FromStr>(v: &[u8]) -> Result<T, ServerError> {
    let mut buf = [0u8; 64];
    pct_str(v, &mut buf)?
        .parse()
        .map_err(|_| ServerError::BadNumber)
}

/// Parses an announce query string (the part after `?`).
pub(crate) fn parse_announce_query(q: &[u8]) -> Result<Announce, ServerError> {
    let mut info_hash = None;
    let mut peer_id = None;
    let mut port = None;
    let mut left = None;
    let mut a = Announce {
        info_hash: InfoHash::default(),
        peer_id: PeerId::default(),
        port: 0,
        uploaded: 0,
        downloaded: 0,
        left: 0,
        event: None,
        numwant: None,
        compact: true,
        ip: None,
        key: None,
    };
    for (k, v) in query_pairs(q) {
        match k {
            b"info_hash" => {
                let mut buf = [0u8; 20];
                let d = pct_decode(v, &mut buf).ok_or(ServerError::BadInfoHash)?;
                info_hash = Some(hash20(d).ok_or(ServerError::BadInfoHash)?);
            }
            b"peer_id" => {
                let mut buf = [0u8; 20];
                let d = pct_decode(v, &mut buf).ok_or(ServerError::BadPeerId)?;
                let id = <[u8; 20]>::try_from(d).map_err(|_| ServerError::BadPeerId)?;
                peer_id = Some(PeerId(id));
            }
            b"port" => {
                let p: u32 = num(v).map_err(|_| ServerError::BadPort)?;
                port = Some(u16::try_from(p).map_err(|_| ServerError::BadPort)?);
            }
            b"uploaded" => a.uploaded = num(v)?,
            b"downloaded" => a.downloaded = num(v)?,
            b"left" => left = Some(num::<u64>(v)?),
            b"event" => {
                a.event = match v {
                    b"started" => Some(Event::Started),
                    b"completed" => Some(Event::Completed),
                    b"stopped" => Some(Event::Stopped),
                    b"" | b"empty" | b"paused" => None,
                    _ => return Err(ServerError::BadEvent),
                }
            }
            b"numwant" => {
                let n: i64 = num(v)?;
                a.numwant = (n >= 0).then(|| u32::try_from(n).unwrap_or(u32::MAX));
            }
            b"compact" => a.compact = num::<u8>(v)? != 0,
            b"ip" => {
                let mut buf = [0u8; 64];
                a.ip = pct_str(v, &mut buf).ok().and_then(|s| s.parse().ok());
            }
            b"key" => {
                let mut buf = [0u8; 64];
                a.key = pct_str(v, &mut buf)
                    .ok()
                    .and_then(|s| u32::from_str_radix(s, 16).ok());
            }
            _ => {}
        }
    }
    a.info_hash = info_hash.ok_or(ServerError::MissingInfoHash)?;
    a.peer_id = peer_id.ok_or(ServerError::MissingPeerId)?;
    a.port = port.ok_or(ServerError::MissingPort)?;
    a.left = left.ok_or(ServerError::MissingLeft)?;
    Ok(a)
}

/// Parses a scrape query: every `info_hash` into `out` (deduplicated, at most
/// [`MAX_HTTP_SCRAPE`]).
pub(crate) fn parse_scrape_query(q: &[u8], out: &mut Vec<InfoHash>) -> Result<(), ServerError> {
    for (k, v) in query_pairs(q) {
        if k == b"info_hash" {
            let mut buf = [0u8; 20];
            let d = pct_decode(v, &mut buf).ok_or(ServerError::BadInfoHash)?;
            let h = hash20(d).ok_or(ServerError::BadInfoHash)?;
            if !out.contains(&h) {
                if out.len() >= MAX_HTTP_SCRAPE {
                    return Err(ServerError::TooManyHashes);
                }
                out.push(h);
            }
        }
    }
    if out.is_empty() {
        return Err(ServerError::NoScrapeHashes);
    }
    Ok(())
}

fn parse_udp_announce(p: &[u8]) -> Result<Announce, ServerError> {
    let mut ih = [0u8; 20];
    ih.copy_from_slice(&p[16..36]);
    let mut pid = [0u8; 20];
    pid.copy_from_slice(&p[36..56]);
    let event = match be_u32(p, 80).unwrap_or(0) {
        0 => None,
        1 => Some(Event::Completed),
        2 => Some(Event::Started),
        3 => Some(Event::Stopped),
        _ => return Err(ServerError::BadEvent),
    };
    let ip = be_u32(p, 84).unwrap_or(0);
    let numwant = be_u32(p, 92).unwrap_or(u32::MAX) as i32;
    Ok(Announce {
        info_hash: InfoHash(ih),
        peer_id: PeerId(pid),
        downloaded: be_u64(p, 56).unwrap_or(0),
        left: be_u64(p, 64).unwrap_or(0),
        uploaded: be_u64(p, 72).unwrap_or(0),
        event,
        ip: (ip != 0).then(|| IpAddr::V4(Ipv4Addr::from(ip))),
        key: be_u32(p, 88),
        numwant: u32::try_from(numwant).ok(),
        port: p
            .get(96..98)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .unwrap_or(0),
        compact: true,
    })
}

fn be_u32(p: &[u8], at: usize) -> Option<u32> {
    p.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be_u64(p: &[u8], at: usize) -> Option<u64> {
    let b = p.get(at..at + 8)?;
    Some(u64::from_be_bytes([
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
    ]))
}

// ---------------------------------------------------------------- encoding

fn push_v4(a: &SocketAddrV4, out: &mut Vec<u8>) {
    out.extend_from_slice(&a.ip().octets());
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn push_v6(a: &SocketAddrV6, out: &mut Vec<u8>) {
    out.extend_from_slice(&a.ip().octets());
    out.extend_from_slice(&a.port().to_be_bytes());
}

/// Writes `d14:failure reason<n>:<text>e`.
pub(crate) fn encode_failure(reason: &[u8], out: &mut Vec<u8>) {
    let mut e = Encoder::new(out);
    let _ = e.dict();
    let _ = e.key_bytes(b"failure reason", reason);
    let _ = e.end();
}

/// Writes a BEP 15 error packet (action 3).
pub(crate) fn encode_udp_error(txid: u32, reason: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&Action::Error.code().to_be_bytes());
    out.extend_from_slice(&txid.to_be_bytes());
    out.extend_from_slice(reason);
}

/// Writes the bencoded announce reply: `complete`, `downloaded`, `incomplete`,
/// `interval`, `min interval` and either compact `peers` (BEP 23) and `peers6` (BEP 7)
/// or a list of `ip`/`peer id`/`port` dictionaries (`peer id` left out where unknown:
/// all zeros, as for peers learnt through sync or when ids are not kept).
pub(crate) fn encode_announce_reply(
    r: &AnnounceReply,
    compact: bool,
    min_interval_secs: u32,
    out: &mut Vec<u8>,
) {
    let mut v4 = Vec::with_capacity(r.peers.len() * COMPACT_V4_LEN);
    let mut v6 = Vec::new();
    if compact {
        for (a, _) in &r.peers {
            match a {
                SocketAddr::V4(a) => push_v4(a, &mut v4),
                SocketAddr::V6(a) => {
                    v6.reserve(COMPACT_V6_LEN);
                    push_v6(a, &mut v6);
                }
            }
        }
    }
    let mut e = Encoder::new(out);
    let _ = e.dict();
    let _ = e.key_int(b"complete", i64::from(r.complete));
    let _ = e.key_int(b"downloaded", i64::from(r.downloaded));
    let _ = e.key_int(b"incomplete", i64::from(r.incomplete));
    let _ = e.key_int(b"interval", i64::from(r.interval_secs));
    let _ = e.key_int(
        b"min interval",
        i64::from(min_interval_secs.min(r.interval_secs)),
    );
    if compact {
        let _ = e.key_bytes(b"peers", &v4);
        if !v6.is_empty() {
            let _ = e.key_bytes(b"peers6", &v6);
        }
    } else {
        let _ = e.bytes(b"peers");
        let _ = e.list();
        for (a, id) in &r.peers {
            let mut ip = heapless::String::<48>::new();
            let _ = fmt::Write::write_fmt(&mut ip, format_args!("{}", a.ip()));
            let _ = e.dict();
            let _ = e.key_bytes(b"ip", ip.as_bytes());
            if *id != PeerId::default() {
                let _ = e.key_bytes(b"peer id", &id.0);
            }
            let _ = e.key_int(b"port", i64::from(a.port()));
            let _ = e.end();
        }
        let _ = e.end();
    }
    let _ = e.end();
}

/// Writes `d5:filesd<hash>d8:completei..e10:downloadedi..e10:incompletei..eeee`, hashes
/// sorted as bencode requires.
pub(crate) fn encode_scrape_reply(stats: &[(InfoHash, ScrapeStats)], out: &mut Vec<u8>) {
    let sorted: BTreeMap<InfoHash, ScrapeStats> = stats.iter().copied().collect();
    let mut e = Encoder::new(out);
    let _ = e.dict();
    let _ = e.bytes(b"files");
    let _ = e.dict();
    for (h, s) in &sorted {
        let _ = e.bytes(&h.0);
        let _ = e.dict();
        let _ = e.key_int(b"complete", i64::from(s.complete));
        let _ = e.key_int(b"downloaded", i64::from(s.downloaded));
        let _ = e.key_int(b"incomplete", i64::from(s.incomplete));
        let _ = e.end();
    }
    let _ = e.end();
    let _ = e.end();
}

// ---------------------------------------------------------------- sync codec

/// HMAC-SHA1 (RFC 2104) of the concatenation of `parts` under `key`.
fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    use crate::hash::{Sha1 as _, SmolSha1};
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..20].copy_from_slice(&sha1(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = SmolSha1::default();
    inner.update(&k.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let inner = inner.finish();
    let mut outer = SmolSha1::default();
    outer.update(&k.map(|b| b ^ 0x5c));
    outer.update(&inner);
    outer.finish()
}

/// The MAC of a sync batch: HMAC-SHA1 of `payload` under the shared `key`. Integrity
/// between trackers sharing `key`, not secrecy; unlike `sha1(key || payload)`, not
/// open to length extension.
pub(crate) fn sync_mac(key: &[u8], payload: &[u8]) -> [u8; 20] {
    hmac_sha1(key, &[payload])
}

/// The value of the `X-Btcore-Sync-Auth` header of a `POST /sync` whose body is
/// `content_length` bytes: 40 hex digits of HMAC-SHA1 under the shared `key` of
/// `"btcore-sync-auth " || content_length` in decimal. It lets the receiving tracker
/// refuse a request at its head, before reading a body, when the sender does not
/// know the key (or claims a longer body than it was given a token for); the batch's
/// own MAC still proves the body. Replaying a seen head only buys a body of the
/// same length, which the receiver bounds anyway.
pub fn sync_auth(key: &[u8], content_length: u64) -> [u8; 40] {
    let mut n = heapless::String::<20>::new();
    let _ = fmt::Write::write_fmt(&mut n, format_args!("{content_length}"));
    let mac = hmac_sha1(key, &[b"btcore-sync-auth ", n.as_bytes()]);
    let mut hex = [0u8; 40];
    for (i, b) in mac.iter().enumerate() {
        hex[2 * i] = HEX[usize::from(b >> 4)];
        hex[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `header` (a `X-Btcore-Sync-Auth` value) is [`sync_auth`] of `key` and
/// `content_length`, compared in constant time (hex digits in either case).
pub fn check_sync_auth(key: &[u8], content_length: u64, header: &[u8]) -> bool {
    let want = sync_auth(key, content_length);
    let got: [u8; 40] = match <[u8; 40]>::try_from(header) {
        Ok(h) => h.map(|c| c.to_ascii_lowercase()),
        Err(_) => return false,
    };
    ct_eq(&want, &got)
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Writes a sync batch: `d3:mac20:..7:payload<n>:<payload>e` with the payload
/// `d1:eld1:a<6 or 18 bytes>1:h20:<hash>1:si0|1e1:ti<ttl>ee...ee`.
pub fn encode_sync(entries: &[SyncEntry], key: &[u8], out: &mut Vec<u8>) {
    let mut payload = Vec::with_capacity(entries.len() * 56 + 8);
    {
        let mut e = Encoder::new(&mut payload);
        let _ = e.dict();
        let _ = e.bytes(b"e");
        let _ = e.list();
        for s in entries {
            let mut a = Vec::with_capacity(COMPACT_V6_LEN);
            match s.addr {
                SocketAddr::V4(v4) => push_v4(&v4, &mut a),
                SocketAddr::V6(v6) => push_v6(&v6, &mut a),
            }
            let _ = e.dict();
            let _ = e.key_bytes(b"a", &a);
            let _ = e.key_bytes(b"h", &s.info_hash.0);
            let _ = e.key_int(b"s", i64::from(s.seed));
            let _ = e.key_int(b"t", i64::from(s.ttl_secs));
            let _ = e.end();
        }
        let _ = e.end();
        let _ = e.end();
    }
    let mac = sync_mac(key, &payload);
    let mut e = Encoder::new(out);
    let _ = e.dict();
    let _ = e.key_bytes(b"mac", &mac);
    let _ = e.key_bytes(b"payload", &payload);
    let _ = e.end();
}

fn decode_sync_payload(
    payload: &[u8],
    max: usize,
    out: &mut Vec<SyncEntry>,
) -> Result<(), StateError> {
    let limits = Limits {
        max_depth: 4,
        max_tokens: (max as u32).saturating_mul(9) + 8,
        max_string_len: 64,
        allow_trailing: false,
        ..Limits::default()
    };
    let mut tokens = Vec::new();
    let doc = bencode::decode_vec(payload, &mut tokens, &limits)?;
    let root = doc.root().as_dict().ok_or(StateError::Malformed)?;
    let list = root.get_list(b"e").ok_or(StateError::Malformed)?;
    if list.len() > max {
        return Err(StateError::TooLarge);
    }
    for v in list.iter() {
        let d = v.as_dict().ok_or(StateError::Malformed)?;
        let a = d.get_bytes(b"a").ok_or(StateError::Malformed)?;
        let addr = match a.len() {
            COMPACT_V4_LEN => SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(a[0], a[1], a[2], a[3]),
                u16::from_be_bytes([a[4], a[5]]),
            )),
            COMPACT_V6_LEN => {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&a[..16]);
                SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(ip),
                    u16::from_be_bytes([a[16], a[17]]),
                    0,
                    0,
                ))
            }
            _ => return Err(StateError::Malformed),
        };
        if addr.port() == 0 {
            return Err(StateError::Malformed);
        }
        let h = d
            .get_bytes(b"h")
            .and_then(hash20)
            .ok_or(StateError::Malformed)?;
        let seed = d.get_int(b"s").ok_or(StateError::Malformed)? != 0;
        let t = d.get_int(b"t").ok_or(StateError::Malformed)?;
        out.push(SyncEntry {
            info_hash: h,
            addr,
            seed,
            ttl_secs: u32::try_from(t.max(0)).unwrap_or(u32::MAX),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::tracker::http::{parse_announce_response, parse_scrape_response};
    use crate::tracker::udp::{
        encode_announce, encode_connect, encode_scrape, parse_response, UdpResponse,
    };
    use crate::tracker::AnnounceRequest;
    use alloc::vec;
    use std::collections::HashSet;

    const H: InfoHash = InfoHash([0x11; 20]);
    const SECRET: [u8; 32] = [7; 32];

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// The defaults without the per-address cap, for tests of many peers on one IP.
    fn one_ip_many_ports() -> ServerConfig {
        ServerConfig {
            max_peers_per_ip: usize::MAX,
            ..ServerConfig::default()
        }
    }

    fn ann(port: u16, left: u64, event: Option<Event>) -> Announce {
        let mut id = [b'p'; 20];
        id[..2].copy_from_slice(&port.to_be_bytes());
        Announce {
            info_hash: H,
            peer_id: PeerId(id),
            port,
            uploaded: 0,
            downloaded: 0,
            left,
            event,
            numwant: None,
            compact: true,
            ip: None,
            key: None,
        }
    }

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

    fn ports(r: &AnnounceReply) -> Vec<u16> {
        let mut v: Vec<u16> = r.peers.iter().map(|(a, _)| a.port()).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn peer_ids_in_non_compact_replies_only_when_kept() {
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        for keep in [false, true] {
            let cfg = ServerConfig {
                peer_ids: keep,
                ..ServerConfig::default()
            };
            let mut tr = Tracker::new(cfg, SECRET);
            let mut rng = Rng::new(1);
            tr.announce(t(0), &ann(1, 10, None), LO, &mut rng)
                .expect("1");
            tr.announce(t(0), &ann(2, 10, None), v6, &mut rng)
                .expect("2");
            let r = tr
                .announce(t(1), &ann(3, 10, None), LO, &mut rng)
                .expect("3");
            let mut out = Vec::new();
            encode_announce_reply(&r, false, 60, &mut out);
            let mut id = [b'p'; 20];
            id[..2].copy_from_slice(&1u16.to_be_bytes());
            let has = |id: &[u8]| out.windows(id.len()).any(|w| w == id);
            assert_eq!(has(&id), keep, "peer id of port 1");
            id[..2].copy_from_slice(&2u16.to_be_bytes());
            assert_eq!(has(&id), keep, "peer id of the IPv6 peer");
            assert_eq!(has(b"7:peer id"), keep);
            // A re-announce under a new id replaces the stored one.
            let mut again = ann(1, 10, None);
            again.peer_id = PeerId([b'n'; 20]);
            tr.announce(t(2), &again, LO, &mut rng).expect("again");
            let r = tr
                .announce(t(3), &ann(3, 10, None), LO, &mut rng)
                .expect("3");
            let ids: Vec<PeerId> = r.peers.iter().map(|(_, id)| *id).collect();
            assert_eq!(ids.contains(&PeerId([b'n'; 20])), keep);
        }
    }

    #[test]
    fn udp_replies_carry_the_requesters_family_up_to_numwant() {
        let mut tr = Tracker::new(one_ip_many_ports(), SECRET);
        let mut rng = Rng::new(5);
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        for p in 1..=30 {
            tr.announce(t(0), &ann(p, 1, None), v6, &mut rng)
                .expect("v6");
            tr.announce(t(0), &ann(p, 1, None), LO, &mut rng)
                .expect("v4");
        }
        let from: SocketAddr = "10.0.0.1:4000".parse().expect("addr");
        let mut out = Vec::new();
        let id = tr.connection_id(t(1), from);
        let mut req = AnnounceRequest::new(H, PeerId([1; 20]), 31);
        req.left = 1;
        req.numwant = Some(20);
        let mut pkt = [0u8; 98];
        let n = encode_announce(id, 9, &req, &mut pkt).expect("enc");
        assert!(tr.handle_udp(t(1), &pkt[..n], from, &mut rng, &mut out));
        let Ok(UdpResponse::Announce(a)) = parse_response(&out, 9, Action::Announce, false) else {
            panic!("announce {out:?}");
        };
        assert_eq!((a.leechers, a.seeders), (61, 0));
        let peers: Vec<SocketAddr> = a.peers.collect();
        assert_eq!(peers.len(), 20, "20 IPv4 peers, none lost to IPv6 ones");
        assert!(peers.iter().all(|p| p.ip() == LO && p.port() != 31));
        // Over HTTP the same swarm gives both families.
        let r = tr
            .announce(t(2), &ann(31, 1, None), LO, &mut rng)
            .expect("http");
        assert_eq!(r.peers.len(), 50);
        assert!(r.peers.iter().any(|(a, _)| a.is_ipv6()));
        assert!(r.peers.iter().any(|(a, _)| a.is_ipv4()));
    }

    #[test]
    fn two_peers_see_each_other_and_seeds_skip_seeds() {
        let mut tr = Tracker::new(ServerConfig::default(), SECRET);
        let mut rng = Rng::new(1);
        let r = tr.announce(t(0), &ann(1, 10, Some(Event::Started)), LO, &mut rng);
        assert_eq!(r.expect("a").peers, vec![]);
        let r = tr
            .announce(t(1), &ann(2, 10, Some(Event::Started)), LO, &mut rng)
            .expect("b");
        assert_eq!(ports(&r), [1]);
        assert_eq!((r.complete, r.incomplete), (0, 2));
        // Two seeds: a seed sees only the leecher.
        tr.announce(t(2), &ann(3, 0, None), LO, &mut rng)
            .expect("s1");
        let r = tr
            .announce(t(3), &ann(4, 0, Some(Event::Completed)), LO, &mut rng)
            .expect("s2");
        assert_eq!(ports(&r), [1, 2]);
        assert_eq!((r.complete, r.incomplete, r.downloaded), (2, 2, 1));
        assert!(tr.is_dirty());
        // A leecher sees everybody else.
        let r = tr
            .announce(t(4), &ann(1, 5, None), LO, &mut rng)
            .expect("a");
        assert_eq!(ports(&r), [2, 3, 4]);
        // Leecher 2 completes: moves to the seeds, downloaded counts once.
        tr.announce(t(5), &ann(2, 0, Some(Event::Completed)), LO, &mut rng)
            .expect("c");
        let r = tr
            .announce(t(6), &ann(2, 0, Some(Event::Completed)), LO, &mut rng)
            .expect("c again");
        assert_eq!((r.complete, r.incomplete, r.downloaded), (3, 1, 2));
        assert_eq!(ports(&r), [1]);
        // Stopped removes.
        let r = tr
            .announce(t(7), &ann(1, 5, Some(Event::Stopped)), LO, &mut rng)
            .expect("stop");
        assert_eq!((r.complete, r.incomplete), (3, 0));
        assert_eq!(tr.peer_count(), 3);
        assert_eq!(
            tr.announce(t(8), &ann(0, 5, None), LO, &mut rng),
            Err(ServerError::BadPort)
        );
    }

    #[test]
    fn expiry_after_timeout() {
        let cfg = ServerConfig {
            peer_timeout: Duration::from_secs(60),
            sweep_every: Duration::from_secs(1),
            ..ServerConfig::default()
        };
        let mut tr = Tracker::new(cfg, SECRET);
        let mut rng = Rng::new(1);
        tr.announce(t(0), &ann(1, 1, None), LO, &mut rng)
            .expect("a");
        tr.announce(t(30_000), &ann(2, 1, None), LO, &mut rng)
            .expect("b");
        assert_eq!(tr.poll_timeout(), Some(t(1_000)));
        tr.handle_timeout(t(59_999));
        assert_eq!(tr.peer_count(), 2);
        assert_eq!(tr.poll_timeout(), Some(t(60_999)));
        // Swept at most once per `sweep_every`.
        tr.handle_timeout(t(60_500));
        assert_eq!(tr.peer_count(), 2);
        tr.handle_timeout(t(60_999));
        assert_eq!(tr.peer_count(), 1);
        assert_eq!(tr.stats(&H).map(|s| s.incomplete), Some(1));
        tr.handle_timeout(t(91_000));
        assert_eq!(tr.peer_count(), 0);
        // The empty swarm with nothing to keep is gone.
        assert_eq!(tr.swarm_count(), 0);
        assert_eq!(tr.counters().expired, 2);
    }

    #[test]
    fn caps_bound_memory() {
        let cfg = ServerConfig {
            max_swarms: 2,
            max_peers_per_swarm: 3,
            max_peers: 5,
            ..ServerConfig::default()
        };
        let mut tr = Tracker::new(cfg.clone(), SECRET);
        let mut rng = Rng::new(1);
        for (i, p) in (1..=4).enumerate() {
            tr.announce(t(i as u64), &ann(p, 1, None), LO, &mut rng)
                .expect("fill");
        }
        // Replace-oldest: port 1 (the oldest) is gone, 4 is in.
        let r = tr
            .announce(t(10), &ann(2, 1, None), LO, &mut rng)
            .expect("2");
        assert_eq!(ports(&r), [3, 4]);
        assert_eq!(tr.peer_count(), 3);
        let mut other = ann(1, 1, None);
        other.info_hash = InfoHash([2; 20]);
        tr.announce(t(11), &other, LO, &mut rng).expect("swarm 2");
        other.port = 2;
        tr.announce(t(12), &other, LO, &mut rng).expect("swarm 2");
        // At the peer cap with no busy address to take from, the newcomer's swarm
        // turns over (its oldest peer goes) rather than refusing it.
        other.port = 3;
        let r = tr.announce(t(13), &other, LO, &mut rng).expect("turnover");
        assert_eq!(ports(&r), [2]);
        assert_eq!(tr.peer_count(), 5);
        // A new swarm has nothing to take from: no empty swarm, no busy address.
        other.info_hash = InfoHash([3; 20]);
        assert_eq!(
            tr.announce(t(14), &other, LO, &mut rng),
            Err(ServerError::TooManySwarms)
        );
        assert_eq!(tr.swarm_count(), 2);
        tr.audit().expect("audit");

        let mut tr = Tracker::new(
            ServerConfig {
                full_swarm: FullSwarm::Refuse,
                ..cfg
            },
            SECRET,
        );
        for p in 1..=3 {
            tr.announce(t(0), &ann(p, 1, None), LO, &mut rng)
                .expect("fill");
        }
        assert_eq!(
            tr.announce(t(1), &ann(4, 1, None), LO, &mut rng),
            Err(ServerError::SwarmFull)
        );
        // A known peer may still re-announce.
        tr.announce(t(2), &ann(3, 0, None), LO, &mut rng)
            .expect("again");
        assert_eq!(ServerError::SwarmFull.fault(), Fault::Capacity);
    }

    #[test]
    fn random_selection_is_uniform_and_capped() {
        let mut tr = Tracker::new(one_ip_many_ports(), SECRET);
        let mut rng = Rng::new(42);
        for p in 1..=300u16 {
            tr.announce(t(0), &ann(p, 1, None), LO, &mut rng)
                .expect("fill");
        }
        let mut hits = [0u32; 301];
        for _ in 0..1000 {
            let r = tr
                .announce(t(1), &ann(7, 1, None), LO, &mut rng)
                .expect("a");
            assert_eq!(r.peers.len(), 50);
            let set: HashSet<u16> = r.peers.iter().map(|(a, _)| a.port()).collect();
            assert_eq!(set.len(), 50, "no duplicates");
            assert!(!set.contains(&7), "never yourself");
            for p in set {
                hits[usize::from(p)] += 1;
            }
        }
        // 1000 * 50 / 299 ~ 167 each.
        for (p, &h) in hits.iter().enumerate().skip(1) {
            if p != 7 {
                assert!((100..250).contains(&h), "port {p}: {h}");
            }
        }
        let mut req = ann(7, 1, None);
        req.numwant = Some(1_000_000);
        let r = tr.announce(t(2), &req, LO, &mut rng).expect("a");
        assert_eq!(r.peers.len(), MAX_NUMWANT as usize);
        req.numwant = Some(3);
        let r = tr.announce(t(2), &req, LO, &mut rng).expect("a");
        assert_eq!(r.peers.len(), 3);
        // Same seed, same choice.
        let a = tr.announce(t(3), &req, LO, &mut Rng::new(9)).expect("a");
        let b = tr.announce(t(3), &req, LO, &mut Rng::new(9)).expect("b");
        assert_eq!(a.peers, b.peers);
    }

    #[test]
    fn cookies_live_one_to_two_buckets() {
        let tr = Tracker::new(ServerConfig::default(), SECRET);
        let a: SocketAddr = "10.0.0.1:4000".parse().expect("addr");
        let b: SocketAddr = "10.0.0.2:4000".parse().expect("addr");
        let same_ip: SocketAddr = "10.0.0.1:4001".parse().expect("addr");
        let id = tr.connection_id(t(61_000), a);
        assert!(tr.check_connection_id(t(61_000), same_ip, id));
        assert!(tr.check_connection_id(t(61_000), a, id));
        assert!(tr.check_connection_id(t(179_999), a, id));
        assert!(!tr.check_connection_id(t(180_000), a, id));
        assert!(!tr.check_connection_id(t(61_000), b, id));
        assert!(!tr.check_connection_id(t(61_000), a, id ^ 1));
        let other = Tracker::new(ServerConfig::default(), [8; 32]);
        assert!(!other.check_connection_id(t(61_000), a, id));
        // IPv4-mapped IPv6 is the same client.
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:4000".parse().expect("addr");
        assert!(tr.check_connection_id(t(61_000), mapped, id));
    }

    #[test]
    fn udp_round_trip_with_the_client_codec() {
        let mut tr = Tracker::new(ServerConfig::default(), SECRET);
        let mut rng = Rng::new(3);
        let from: SocketAddr = "10.0.0.1:4000".parse().expect("addr");
        let mut out = Vec::new();
        let mut pkt = [0u8; 98];
        let n = encode_connect(77, &mut pkt).expect("enc");
        assert!(tr.handle_udp(t(0), &pkt[..n], from, &mut rng, &mut out));
        let Ok(UdpResponse::Connect { connection_id, .. }) =
            parse_response(&out, 77, Action::Connect, false)
        else {
            panic!("connect {out:?}");
        };
        let mut req = AnnounceRequest::new(H, PeerId([1; 20]), 6881);
        req.left = 5;
        let n = encode_announce(connection_id, 78, &req, &mut pkt).expect("enc");
        assert!(tr.handle_udp(t(1), &pkt[..n], from, &mut rng, &mut out));
        assert!(matches!(
            parse_response(&out, 78, Action::Announce, false),
            Ok(UdpResponse::Announce(a)) if a.leechers == 1 && a.peers.len() == 0
        ));
        // Forged id, garbage, short packets: no reply.
        let n = encode_announce(connection_id ^ 0xff, 79, &req, &mut pkt).expect("enc");
        assert!(!tr.handle_udp(t(2), &pkt[..n], from, &mut rng, &mut out));
        let n = encode_announce(connection_id, 79, &req, &mut pkt).expect("enc");
        assert!(!tr.handle_udp(t(2), &pkt[..n - 1], from, &mut rng, &mut out));
        assert!(!tr.handle_udp(t(2), &pkt[..3], from, &mut rng, &mut out));
        assert!(!tr.handle_udp(t(2), &[0xff; 200], from, &mut rng, &mut out));
        assert!(out.is_empty());
        // Bad event: an error packet.
        pkt[80..84].copy_from_slice(&9u32.to_be_bytes());
        assert!(tr.handle_udp(t(2), &pkt[..n], from, &mut rng, &mut out));
        assert!(matches!(
            parse_response(&out, 79, Action::Announce, false),
            Ok(UdpResponse::Error(f)) if f.reason == b"invalid event"
        ));
        // Scrape.
        let mut s = [0u8; 64];
        let n = encode_scrape(connection_id, 80, &[H, InfoHash([9; 20])], &mut s).expect("enc");
        assert!(tr.handle_udp(t(3), &s[..n], from, &mut rng, &mut out));
        let Ok(UdpResponse::Scrape(sc)) = parse_response(&out, 80, Action::Scrape, false) else {
            panic!("scrape");
        };
        let stats: Vec<_> = sc.collect();
        assert_eq!(stats[0].incomplete, 1);
        assert_eq!(stats[1], ScrapeStats::default());
        assert!(!tr.handle_udp(t(3), &s[..n - 1], from, &mut rng, &mut out));
    }

    #[test]
    fn http_query_parsing_and_reply() {
        let q = b"info_hash=%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11\
&peer_id=-BT0001-abcdefghijkl&port=6881&uploaded=0&downloaded=0&left=10\
&event=started&numwant=-1&compact=1&key=1A2B3C4D&ip=1.2.3.4";
        let a = parse_announce_query(q).expect("parse");
        assert_eq!(a.info_hash, H);
        assert_eq!(&a.peer_id.0, b"-BT0001-abcdefghijkl");
        assert_eq!((a.port, a.left, a.event), (6881, 10, Some(Event::Started)));
        assert_eq!((a.numwant, a.key), (None, Some(0x1A2B_3C4D)));
        assert_eq!(a.ip, Some("1.2.3.4".parse().expect("ip")));

        let bad: [(&[u8], ServerError); 9] = [
            (b"peer_id=-BT0001-abcdefghijkl&port=1&left=0", ServerError::MissingInfoHash),
            (b"info_hash=abc&peer_id=-BT0001-abcdefghijkl&port=1&left=0", ServerError::BadInfoHash),
            (b"info_hash=%1&port=1", ServerError::BadInfoHash),
            (b"info_hash=aaaaaaaaaaaaaaaaaaaa&port=1&left=0", ServerError::MissingPeerId),
            (b"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=x&port=1", ServerError::BadPeerId),
            (b"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=aaaaaaaaaaaaaaaaaaaa&left=0", ServerError::MissingPort),
            (b"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=aaaaaaaaaaaaaaaaaaaa&port=70000", ServerError::BadPort),
            (b"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=aaaaaaaaaaaaaaaaaaaa&port=1&left=x", ServerError::BadNumber),
            (b"info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=aaaaaaaaaaaaaaaaaaaa&port=1&left=1&event=x", ServerError::BadEvent),
        ];
        for (q, e) in bad {
            assert_eq!(
                parse_announce_query(q),
                Err(e),
                "{}",
                core::str::from_utf8(q).unwrap_or("?")
            );
        }

        let mut tr = Tracker::new(ServerConfig::default(), SECRET);
        let mut rng = Rng::new(3);
        let mut out = Vec::new();
        let remote: SocketAddr = "10.0.0.9:1000".parse().expect("addr");
        assert_eq!(
            tr.handle_http_announce(t(0), q, remote, &mut rng, &mut out),
            None
        );
        out.clear();
        let q2 = b"info_hash=%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11\
&peer_id=-BT0001-zzzzzzzzzzzz&port=6882&left=0";
        let v6: SocketAddr = "[2001:db8::1]:1000".parse().expect("addr");
        assert_eq!(
            tr.handle_http_announce(t(1), q2, v6, &mut rng, &mut out),
            None
        );
        out.clear();
        // The first one again sees the v6 seed in peers6; `ip` was ignored.
        assert_eq!(
            tr.handle_http_announce(t(2), q, remote, &mut rng, &mut out),
            None
        );
        let mut tokens = [crate::bencode::Token::default(); 64];
        let r = parse_announce_response(&out, &mut tokens).expect("parse");
        let ok = r.ok().expect("ok");
        assert_eq!((ok.complete, ok.incomplete), (Some(1), Some(1)));
        assert_eq!(ok.min_interval_secs, Some(60));
        let p6: Vec<_> = ok.peers6().collect();
        assert_eq!(p6, ["[2001:db8::1]:6882".parse::<SocketAddr>().expect("a")]);
        assert_eq!(ok.peers_field().count(), 0);

        out.clear();
        assert_eq!(
            tr.handle_http_announce(t(3), b"info_hash=x", remote, &mut rng, &mut out),
            Some(ServerError::BadInfoHash)
        );
        assert_eq!(out, b"d14:failure reason17:invalid info_hashe");

        // Non-compact.
        out.clear();
        let q3 = [&q2[..], b"&compact=0"].concat();
        assert_eq!(
            tr.handle_http_announce(t(4), &q3, v6, &mut rng, &mut out),
            None
        );
        let r = parse_announce_response(&out, &mut tokens).expect("parse");
        let ok = r.ok().expect("ok");
        let peers: Vec<_> = ok.peers().collect();
        assert_eq!(peers, ["10.0.0.9:6881".parse::<SocketAddr>().expect("a")]);

        // Scrape.
        out.clear();
        let sq = b"info_hash=%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11%11&info_hash=bbbbbbbbbbbbbbbbbbbb";
        assert_eq!(tr.handle_http_scrape(sq, &mut out), None);
        let s = parse_scrape_response(&out, &mut tokens)
            .expect("scrape")
            .ok()
            .expect("ok");
        assert_eq!(s.get(&H).map(|s| (s.complete, s.incomplete)), Some((1, 1)));
        assert_eq!(
            s.get(&InfoHash(*b"bbbbbbbbbbbbbbbbbbbb")),
            Some(ScrapeStats::default())
        );
        out.clear();
        assert_eq!(
            tr.handle_http_scrape(b"", &mut out),
            Some(ServerError::NoScrapeHashes)
        );
    }

    #[test]
    fn allow_list_and_state_round_trip() {
        let cfg = ServerConfig {
            mode: Mode::AllowList,
            ..ServerConfig::default()
        };
        let mut tr = Tracker::new(cfg.clone(), SECRET);
        let mut rng = Rng::new(3);
        assert_eq!(
            tr.announce(t(0), &ann(1, 0, None), LO, &mut rng),
            Err(ServerError::NotRegistered)
        );
        assert!(!tr.is_dirty());
        assert!(tr.register(H));
        assert!(!tr.register(H));
        assert!(tr.is_dirty());
        tr.announce(t(0), &ann(1, 0, Some(Event::Completed)), LO, &mut rng)
            .expect("ok");
        let mut state = Vec::new();
        tr.encode_state(&mut state);
        tr.mark_saved();
        let mut back = Tracker::new(cfg, SECRET);
        back.restore_state(t(0), &state).expect("restore");
        assert!(back.is_registered(&H));
        assert_eq!(back.stats(&H).map(|s| s.downloaded), Some(1));
        assert!(!back.is_dirty());
        let mut again = Vec::new();
        back.encode_state(&mut again);
        assert_eq!(state, again);
        assert!(back.restore_state(t(0), b"de").is_err());
        assert!(back
            .restore_state(t(0), b"d5:allowli1ee9:downloadeddee7:versioni1ee")
            .is_err());
        assert!(back.restore_state(t(0), &state[..state.len() - 1]).is_err());
    }

    fn ip(a: u8, b: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 1, a, b))
    }

    /// Addresses of every peer of `h`, sorted.
    fn members(tr: &Tracker, h: InfoHash) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = tr
            .swarms
            .get(&h)
            .map(|s| s.peers().map(|p| p.addr).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn one_address_cannot_take_over_a_swarm() {
        // A swarm of 20 with 12 honest peers, each at its own address.
        let cfg = ServerConfig {
            max_peers_per_swarm: 20,
            ..ServerConfig::default()
        };
        let mut tr = Tracker::new(cfg, SECRET);
        let mut rng = Rng::new(4);
        let honest: Vec<SocketAddr> = (1..=12).map(|i| SocketAddr::new(ip(1, i), 6881)).collect();
        for a in &honest {
            tr.announce(t(0), &ann(a.port(), 5, None), a.ip(), &mut rng)
                .expect("honest");
        }
        // One address announces a thousand ports, then a thousand more later on: it
        // holds its cap, the honest peers all stay.
        let bad = ip(9, 9);
        for p in 1..=2000u16 {
            tr.announce(
                t(1000 * u64::from(p)),
                &ann(10_000 + p, 5, None),
                bad,
                &mut rng,
            )
            .expect("flood");
        }
        let got = members(&tr, H);
        let from_bad = got.iter().filter(|a| a.ip() == bad).count();
        assert_eq!(from_bad, DEFAULT_MAX_PEERS_PER_IP);
        assert!(honest.iter().all(|a| got.contains(a)), "{got:?}");
        // The newest of its ports are the ones kept.
        assert!(got
            .iter()
            .filter(|a| a.ip() == bad)
            .all(|a| a.port() > 11_992));
        assert_eq!(tr.peer_count(), 12 + DEFAULT_MAX_PEERS_PER_IP);

        // Full, then a newcomer: the busiest address (the flood's) gives way, not the
        // oldest honest peer.
        tr.announce(t(2_100_000), &ann(7000, 5, None), ip(2, 1), &mut rng)
            .expect("newcomer");
        let got = members(&tr, H);
        assert!(honest.iter().all(|a| got.contains(a)), "{got:?}");
        assert_eq!(got.iter().filter(|a| a.ip() == bad).count(), 7);
        assert!(got.contains(&SocketAddr::new(ip(2, 1), 7000)));

        // The IPv6 group is the /64: addresses inside one prefix share the cap.
        let mut tr = Tracker::new(ServerConfig::default(), SECRET);
        for i in 1..=50u16 {
            let a: IpAddr = alloc::format!("2001:db8:1:2::{i:x}").parse().expect("v6");
            tr.announce(t(0), &ann(i, 5, None), a, &mut rng)
                .expect("v6");
        }
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        tr.announce(t(0), &ann(1, 5, None), other, &mut rng)
            .expect("other /64");
        assert_eq!(tr.peer_count(), DEFAULT_MAX_PEERS_PER_IP + 1);
    }

    #[test]
    fn busiest_address_gives_way_in_large_indexed_swarms() {
        // Beyond 128 peers the swarm has its index; counts come from it.
        let cfg = ServerConfig {
            max_peers_per_swarm: 300,
            max_peers_per_ip: 4,
            ..ServerConfig::default()
        };
        let mut tr = Tracker::new(cfg, SECRET);
        let mut rng = Rng::new(6);
        // 260 honest peers first (the oldest), then 10 addresses with 4 ports each.
        for i in 0..260u16 {
            let a = ip((i / 200) as u8, (i % 200) as u8 + 1);
            tr.announce(t(0), &ann(6881, 5, None), a, &mut rng)
                .expect("honest");
        }
        for b in 0..10u8 {
            for p in 0..4u16 {
                tr.announce(t(1000), &ann(20_000 + p, 5, None), ip(100, b), &mut rng)
                    .expect("crowd");
            }
        }
        assert_eq!(tr.peer_count(), 300);
        // 20 newcomers: each evicts a crowding address's entry, no honest one.
        for i in 0..20u8 {
            tr.announce(t(2000), &ann(6881, 5, None), ip(50, i), &mut rng)
                .expect("newcomer");
        }
        assert_eq!(tr.peer_count(), 300);
        let swarm = tr.swarms.get(&H).expect("swarm");
        let per =
            |pred: &dyn Fn(IpAddr) -> bool| swarm.peers().filter(|p| pred(p.addr.ip())).count();
        assert_eq!(
            per(&|a| matches!(a, IpAddr::V4(v) if v.octets()[2] < 2)),
            260
        );
        assert_eq!(
            per(&|a| matches!(a, IpAddr::V4(v) if v.octets()[2] == 50)),
            20
        );
        assert_eq!(
            per(&|a| matches!(a, IpAddr::V4(v) if v.octets()[2] == 100)),
            20
        );
    }

    #[test]
    fn empty_swarms_are_swept_even_with_completed_counts() {
        let cfg = ServerConfig {
            peer_timeout: Duration::from_secs(60),
            empty_swarm_ttl: Duration::from_secs(120),
            sweep_every: Duration::from_secs(1),
            ..ServerConfig::default()
        };
        let mut tr = Tracker::new(cfg.clone(), SECRET);
        let mut rng = Rng::new(2);
        // One address, 500 `completed` announces on 500 torrents, then gone.
        for i in 0..500u32 {
            let mut q = ann(1, 0, Some(Event::Completed));
            q.info_hash = InfoHash(sha1(&i.to_be_bytes()));
            tr.announce(t(0), &q, LO, &mut rng).expect("completed");
        }
        assert_eq!(tr.swarm_count(), 500);
        let mut state = Vec::new();
        tr.encode_state(&mut state);
        // Peers expire at 60 s; the counts last 120 s after the last announce.
        tr.handle_timeout(t(61_000));
        assert_eq!((tr.peer_count(), tr.swarm_count()), (0, 500));
        tr.mark_saved();
        tr.handle_timeout(t(120_000));
        assert_eq!(tr.swarm_count(), 0, "completed announces pin no swarm");
        assert!(tr.is_dirty());
        let mut after = Vec::new();
        tr.encode_state(&mut after);
        assert!(after.len() < 100, "the saved state shrinks with them");

        // Restored from the state file: the same, unless registered.
        let mut back = Tracker::new(cfg, SECRET);
        let kept = InfoHash(sha1(&7u32.to_be_bytes()));
        back.register(kept);
        back.restore_state(t(500_000), &state).expect("restore");
        assert_eq!(back.swarm_count(), 500);
        back.handle_timeout(t(619_000));
        assert_eq!(
            back.swarm_count(),
            500,
            "counts live on while clients come back"
        );
        back.handle_timeout(t(620_000));
        assert_eq!(back.swarm_count(), 1);
        assert_eq!(back.stats(&kept).map(|s| s.downloaded), Some(1));
    }

    #[test]
    fn sync_mac_is_hmac_sha1() {
        // RFC 2202, test cases 1, 2 and 6.
        let hex = |d: [u8; 20]| -> alloc::string::String {
            d.iter().map(|b| alloc::format!("{b:02x}")).collect()
        };
        assert_eq!(
            hex(sync_mac(&[0x0b; 20], b"Hi There")),
            "b617318655057264e28bc0b6fb378c8ef146be00"
        );
        assert_eq!(
            hex(sync_mac(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            hex(sync_mac(
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
        // Not the length-extensible sha1(key || payload) of before.
        assert_ne!(sync_mac(b"key", b"payload"), sha1(b"keypayload"));
        // The head token: bound to the key and the length, either case of hex.
        let tok = sync_auth(b"key", 1234);
        assert!(check_sync_auth(b"key", 1234, &tok));
        assert!(check_sync_auth(
            b"key",
            1234,
            &tok.map(|c| c.to_ascii_uppercase())
        ));
        assert!(!check_sync_auth(b"key", 1235, &tok));
        assert!(!check_sync_auth(b"other", 1234, &tok));
        assert!(!check_sync_auth(b"key", 1234, &tok[..39]));
    }

    /// SHA-1's Merkle-Damgard padding of a message of `len` bytes.
    fn md_pad(len: usize) -> Vec<u8> {
        let mut p = vec![0x80u8];
        while (len + p.len()) % 64 != 56 {
            p.push(0);
        }
        p.extend_from_slice(&((len as u64) * 8).to_be_bytes());
        p
    }

    /// SHA-1 resumed from the digest of a padded message of `prior` bytes, over `ext`:
    /// what a length-extension attacker computes without the key.
    fn sha1_extend(digest: [u8; 20], prior: usize, ext: &[u8]) -> [u8; 20] {
        let mut h: [u32; 5] = core::array::from_fn(|i| {
            u32::from_be_bytes([
                digest[4 * i],
                digest[4 * i + 1],
                digest[4 * i + 2],
                digest[4 * i + 3],
            ])
        });
        let mut data = ext.to_vec();
        data.extend(md_pad(prior + ext.len()));
        for block in data.chunks(64) {
            let mut w = [0u32; 80];
            for i in 0..16 {
                w[i] = u32::from_be_bytes([
                    block[4 * i],
                    block[4 * i + 1],
                    block[4 * i + 2],
                    block[4 * i + 3],
                ]);
            }
            for i in 16..80 {
                w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
            }
            let [mut a, mut b, mut c, mut d, mut e] = h;
            for (i, wi) in w.iter().enumerate() {
                let (f, k) = match i {
                    0..=19 => ((b & c) | (!b & d), 0x5a82_7999),
                    20..=39 => (b ^ c ^ d, 0x6ed9_eba1),
                    40..=59 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
                    _ => (b ^ c ^ d, 0xca62_c1d6_u32),
                };
                let t = a
                    .rotate_left(5)
                    .wrapping_add(f)
                    .wrapping_add(e)
                    .wrapping_add(k)
                    .wrapping_add(*wi);
                (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
            }
            for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
                *x = x.wrapping_add(y);
            }
        }
        let mut out = [0u8; 20];
        for (i, x) in h.iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
        }
        out
    }

    /// A batch with `mac` over `payload`, as [`encode_sync`] frames it.
    fn framed_batch(mac: &[u8; 20], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = Encoder::new(&mut out);
        let _ = e.dict();
        let _ = e.key_bytes(b"mac", mac);
        let _ = e.key_bytes(b"payload", payload);
        let _ = e.end();
        out
    }

    /// Length extension: from one batch seen on the wire, an outsider appends entries
    /// of its own and computes their MAC without the key. That signs under
    /// `sha1(key || payload)`; under HMAC the forged batch is refused.
    #[test]
    fn sync_batches_cannot_be_extended() {
        let key = b"shared sync key";
        let cfg = ServerConfig {
            sync: true,
            ..ServerConfig::default()
        };
        let mut a = Tracker::new(cfg.clone(), SECRET);
        let mut rng = Rng::new(3);
        a.announce(t(0), &ann(1, 5, None), LO, &mut rng).expect("a");
        let mut q = Vec::new();
        a.drain_sync(&mut q, 100);
        let mut msg = Vec::new();
        encode_sync(&q, key, &mut msg);
        let mut tokens = Vec::new();
        let doc = bencode::decode_vec(&msg, &mut tokens, &Limits::default()).expect("a batch");
        let root = doc.root().as_dict().expect("a dictionary");
        let seen_mac: [u8; 20] = root
            .get_bytes(b"mac")
            .and_then(|m| m.try_into().ok())
            .expect("a MAC");
        let payload = root.get_bytes(b"payload").expect("a payload").to_vec();

        // The attacker's extension: padding as glue, then bytes of its choice.
        let prior = key.len() + payload.len();
        let glue = md_pad(prior);
        let ext = b"1:xd1:a6:\x7f\0\0\x01\x1a\xe1ee";
        let forged_payload = [&payload[..], &glue, ext].concat();

        // The attack is real against the old scheme.
        let old_mac = sha1(&[&key[..], &payload].concat());
        assert_eq!(
            sha1_extend(old_mac, prior + glue.len(), ext),
            sha1(&[&key[..], &forged_payload].concat()),
            "sha1(key || payload) is open to length extension"
        );

        // Under HMAC the same computation gives no valid MAC.
        let forged_mac = sha1_extend(seen_mac, prior + glue.len(), ext);
        assert_ne!(forged_mac, sync_mac(key, &forged_payload));
        let mut b = Tracker::new(cfg, SECRET);
        assert_eq!(
            b.apply_sync(t(0), &framed_batch(&forged_mac, &forged_payload), key),
            Err(StateError::BadMac)
        );
        assert_eq!(b.swarm_count(), 0);
        assert_eq!(b.apply_sync(t(0), &msg, key), Ok(1));
    }

    #[test]
    fn sync_between_two_trackers() {
        let cfg = ServerConfig {
            sync: true,
            ..ServerConfig::default()
        };
        let mut a = Tracker::new(cfg.clone(), SECRET);
        let mut b = Tracker::new(cfg, SECRET);
        let mut rng = Rng::new(3);
        a.announce(t(0), &ann(1, 5, None), LO, &mut rng).expect("a");
        let mut q = Vec::new();
        a.drain_sync(&mut q, 100);
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].ttl_secs, 3600);
        let mut msg = Vec::new();
        encode_sync(&q, b"key", &mut msg);
        assert_eq!(b.apply_sync(t(0), &msg, b"wrong"), Err(StateError::BadMac));
        let mut forged = msg.clone();
        let last = forged.len() - 3;
        forged[last] ^= 1;
        assert!(b.apply_sync(t(0), &forged, b"key").is_err());
        assert_eq!(b.apply_sync(t(0), &msg, b"key"), Ok(1));
        let r = b.announce(t(1), &ann(2, 5, None), LO, &mut rng).expect("b");
        assert_eq!(ports(&r), [1]);
        // Remote peers are not forwarded again; b's own announce is.
        let mut qb = Vec::new();
        b.drain_sync(&mut qb, 100);
        assert_eq!(qb.len(), 1);
        assert_eq!(qb[0].addr.port(), 2);
        let mut full = Vec::new();
        b.local_sync_entries(t(1), &mut full);
        assert_eq!(full.len(), 1);
        // A stop on a removes the peer on b.
        a.announce(t(2), &ann(1, 5, Some(Event::Stopped)), LO, &mut rng)
            .expect("stop");
        q.clear();
        a.drain_sync(&mut q, 100);
        msg.clear();
        encode_sync(&q, b"key", &mut msg);
        assert_eq!(b.apply_sync(t(3), &msg, b"key"), Ok(1));
        assert_eq!(b.stats(&H).map(|s| s.incomplete), Some(1));
        // Remote entries expire after their ttl.
        let e = [SyncEntry {
            info_hash: H,
            addr: "10.0.0.3:3".parse().expect("a"),
            seed: true,
            ttl_secs: 5,
        }];
        msg.clear();
        encode_sync(&e, b"key", &mut msg);
        assert_eq!(b.apply_sync(t(10_000), &msg, b"key"), Ok(1));
        b.handle_timeout(t(14_999));
        b.handle_timeout(t(30_000));
        assert_eq!(b.stats(&H).map(|s| s.complete), Some(0));
        a.audit().expect("a");
        b.audit().expect("b");
    }

    fn hash_of(tag: u32, i: u32) -> InfoHash {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&tag.to_be_bytes());
        b[4..].copy_from_slice(&i.to_be_bytes());
        InfoHash(sha1(&b))
    }

    fn ann_to(h: InfoHash, port: u16) -> Announce {
        let mut a = ann(port, 5, None);
        a.info_hash = h;
        a.numwant = Some(0);
        a
    }

    /// One address announcing random info-hashes with eight ports each filled the
    /// swarm table, and then every new torrent was refused (`TooManySwarms`); three
    /// addresses filled the peer table (`TrackerFull`). Now the newcomers take the
    /// place of the flooders' entries, and honest swarms and peers all stay.
    #[test]
    fn floods_of_swarms_and_peers_make_room_instead_of_refusing() {
        let cfg = ServerConfig {
            max_swarms: 1_000,
            max_peers: 12_000,
            ..ServerConfig::default()
        };
        let mut tr = Tracker::new(cfg, SECRET);
        let mut rng = Rng::new(3);
        // 50 honest torrents of one seeder each, and one of 20 peers.
        let honest =
            |i: u32| IpAddr::V4(Ipv4Addr::new(10, 9, (i / 250) as u8, (i % 250) as u8 + 1));
        let shared = hash_of(1, 0);
        for i in 0..50 {
            tr.announce(t(0), &ann_to(hash_of(2, i), 6881), honest(i), &mut rng)
                .expect("lone seeder");
        }
        for i in 0..20 {
            tr.announce(t(0), &ann_to(shared, 6881), honest(100 + i), &mut rng)
                .expect("shared swarm");
        }
        // The flood: 1,500 random torrents with 8 ports each, from one address.
        let a = IpAddr::V4(Ipv4Addr::new(10, 66, 0, 1));
        for j in 0..1_500 {
            for p in 0..8 {
                let _ = tr.announce(t(1_000), &ann_to(hash_of(3, j), 20_000 + p), a, &mut rng);
            }
        }
        assert_eq!(tr.swarm_count(), 1_000, "the table is full");
        // A newcomer's new torrent gets in; the honest ones all stay.
        let fresh = hash_of(4, 0);
        tr.announce(t(2_000), &ann_to(fresh, 6881), honest(200), &mut rng)
            .expect("a new torrent is not refused");
        for i in 0..50 {
            assert_eq!(
                tr.stats(&hash_of(2, i)).map(|s| s.complete + s.incomplete),
                Some(1),
                "honest torrent {i}"
            );
        }
        assert_eq!(tr.stats(&shared).map(|s| s.incomplete), Some(20));
        tr.audit().expect("audit");

        // Two more addresses fill the peer table in the flooder's torrents.
        for (n, b) in [[10, 67, 0, 1], [10, 68, 0, 1]].into_iter().enumerate() {
            let b = IpAddr::V4(Ipv4Addr::from(b));
            for j in 0..1_500 {
                for p in 0..8 {
                    let q = ann_to(hash_of(3, j), 30_000 + 8 * n as u16 + p);
                    let _ = tr.announce(t(3_000), &q, b, &mut rng);
                }
            }
        }
        let before = tr.counters().evicted;
        // Newcomers to an honest torrent and to a new one are admitted.
        for i in 0..30 {
            tr.announce(t(4_000), &ann_to(shared, 6881), honest(300 + i), &mut rng)
                .expect("a newcomer to a live torrent");
            tr.announce(
                t(4_000),
                &ann_to(hash_of(5, i), 6881),
                honest(400 + i),
                &mut rng,
            )
            .expect("a newcomer with a new torrent");
        }
        assert!(tr.counters().evicted > before, "room was made");
        assert!(tr.peer_count() <= 12_000 && tr.swarm_count() <= 1_000);
        assert_eq!(tr.stats(&shared).map(|s| s.incomplete), Some(50));
        for i in 0..50 {
            assert_eq!(
                tr.stats(&hash_of(2, i)).map(|s| s.complete + s.incomplete),
                Some(1),
                "honest torrent {i}"
            );
        }
        tr.audit().expect("audit");
    }

    /// Each address group holds at most its share of the whole tracker: swarms and
    /// peers per IPv4 address or IPv6 /64, peers per IPv6 /48; an address at a cap
    /// replaces its own entries where it can and is refused elsewhere, and no one
    /// else is held back. At the global peer cap the busiest group gives way.
    #[test]
    fn address_groups_hold_their_share_of_the_tracker() {
        let cfg = ServerConfig {
            max_swarms_per_ip: 10,
            max_total_peers_per_ip: 40,
            max_peers_per_48: 60,
            max_peers: 101,
            ..ServerConfig::default()
        };
        let mut tr = Tracker::new(cfg, SECRET);
        let mut rng = Rng::new(5);
        let a = IpAddr::V4(Ipv4Addr::new(10, 66, 0, 1));
        let mut refused = 0;
        for j in 0..20 {
            for p in 0..8 {
                match tr.announce(t(0), &ann_to(hash_of(3, j), 20_000 + p), a, &mut rng) {
                    Ok(_) => {}
                    Err(e) => {
                        assert_eq!(e, ServerError::AddressFull);
                        refused += 1;
                    }
                }
            }
        }
        let (peers, swarms) = tr.address_stats(a);
        assert!(
            swarms <= 10 && peers <= 40,
            "{peers} peers in {swarms} swarms"
        );
        assert_eq!(peers, 40);
        assert!(refused > 0);
        // In a swarm where it has peers, a new port replaces its own oldest one.
        let r = tr.announce(t(1_000), &ann_to(hash_of(3, 0), 29_999), a, &mut rng);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(tr.address_stats(a).0, 40);
        // Others are not held back.
        let b = IpAddr::V4(Ipv4Addr::new(10, 67, 0, 1));
        tr.announce(t(1_000), &ann_to(hash_of(3, 19), 1), b, &mut rng)
            .expect("another address");

        // IPv6: 20 /64s of one /48 share its cap.
        for i in 0..20u16 {
            let ip: IpAddr = alloc::format!("2001:db8:7:{i:x}::1").parse().expect("v6");
            for p in 0..8 {
                let _ = tr.announce(
                    t(2_000),
                    &ann_to(hash_of(6, u32::from(i)), 1 + p),
                    ip,
                    &mut rng,
                );
            }
        }
        let in48: usize = (0..20u16)
            .map(|i| {
                let ip: IpAddr = alloc::format!("2001:db8:7:{i:x}::1").parse().expect("v6");
                tr.address_stats(ip).0
            })
            .sum();
        assert_eq!(in48, 60);
        tr.audit().expect("audit");

        // The table is full (101 peers): 40 of the busy address, 60 of the /48, one
        // of b. A newcomer takes the place of the busiest group's oldest peer.
        assert_eq!(tr.peer_count(), 101);
        let c = IpAddr::V4(Ipv4Addr::new(10, 68, 0, 1));
        tr.announce(t(3_000), &ann_to(hash_of(7, 0), 1), c, &mut rng)
            .expect("a newcomer at the peer cap");
        assert_eq!(tr.peer_count(), 101);
        assert_eq!(tr.address_stats(a).0, 39, "the busiest address gave way");
        assert_eq!(tr.address_stats(b).0, 1);
        tr.audit().expect("audit");
    }

    /// A full swarm of 20,000 peers in pairs (every address two ports): choosing whom
    /// a newcomer replaces read a group count per peer, about 60,000 records for each
    /// of 2,000 newcomers (1.7 ms an announce); now the pairs are kept ordered and the
    /// choice reads the busiest pair.
    #[test]
    fn choosing_whom_a_full_swarm_evicts_is_logarithmic() {
        let cfg = ServerConfig {
            max_peers_per_swarm: 20_000,
            ..ServerConfig::default()
        };
        let mut tr = Tracker::new(cfg, SECRET);
        let mut rng = Rng::new(8);
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            for p in 0..2 {
                tr.announce(t(0), &ann_to(H, 1000 + p), ip, &mut rng)
                    .expect("fill");
            }
        }
        assert_eq!(tr.peer_count(), 20_000);
        let before = tr.counters();
        for i in 0..2_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i));
            tr.announce(t(1_000), &ann_to(H, 7), ip, &mut rng)
                .expect("newcomer");
        }
        let c = tr.counters();
        assert_eq!(c.evicted - before.evicted, 2_000);
        let per = (c.eviction_work - before.eviction_work) / 2_000;
        assert!(per <= 16, "{per} records read per newcomer");
        // Each newcomer took one port of a pair: no address lost both.
        let swarm = tr.swarms.get(&H).expect("swarm");
        let mut left = BTreeMap::new();
        for p in swarm.peers() {
            *left.entry(p.addr.ip()).or_insert(0) += 1;
        }
        assert_eq!(left.len(), 12_000);
        tr.audit().expect("audit");
    }

    /// A full swarm of 20,000 peers from 20,000 addresses under churn: with no address
    /// holding two, choosing whom a newcomer replaces read every record (20,000 for
    /// each newcomer); now it reads a sample of 32 taken in turn, and evicts the
    /// oldest of it: no newcomer is evicted by the next.
    #[test]
    fn a_full_swarm_of_distinct_addresses_turns_over_in_constant_work() {
        let mut tr = Tracker::new(ServerConfig::default(), SECRET);
        let mut rng = Rng::new(9);
        for i in 0..20_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            tr.announce(t(u64::from(i) * 50), &ann_to(H, 1000), ip, &mut rng)
                .expect("fill");
        }
        assert_eq!(tr.peer_count(), 20_000);
        let before = tr.counters();
        for i in 0..2_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i));
            tr.announce(t(1_000_000 + u64::from(i)), &ann_to(H, 7), ip, &mut rng)
                .expect("newcomer");
        }
        let c = tr.counters();
        assert_eq!(c.evicted - before.evicted, 2_000);
        let per = (c.eviction_work - before.eviction_work) / 2_000;
        assert!(per <= 64, "{per} records read per newcomer");
        let swarm = tr.swarms.get(&H).expect("swarm");
        let newcomers = swarm
            .peers()
            .filter(|p| matches!(p.addr.ip(), IpAddr::V4(v) if v.octets()[0] == 11))
            .count();
        assert_eq!(newcomers, 2_000, "the newcomers stay");
        tr.audit().expect("audit");
    }

    /// Random announces, stops, sync entries and sweeps over small caps: every
    /// incremental count agrees with a recount after each step.
    #[test]
    fn incremental_counts_survive_random_traffic() {
        let cfg = ServerConfig {
            max_swarms: 12,
            max_peers: 150,
            max_peers_per_swarm: 40,
            max_peers_per_ip: 3,
            max_swarms_per_ip: 8,
            max_total_peers_per_ip: 36,
            max_peers_per_48: 50,
            peer_timeout: Duration::from_secs(20),
            empty_swarm_ttl: Duration::from_secs(30),
            sweep_every: Duration::from_secs(1),
            sync: true,
            ..ServerConfig::default()
        };
        for (seed, policy) in [
            (1, FullSwarm::ReplaceBusiest),
            (2, FullSwarm::ReplaceOldest),
            (3, FullSwarm::Refuse),
        ] {
            let mut tr = Tracker::new(
                ServerConfig {
                    full_swarm: policy,
                    ..cfg.clone()
                },
                SECRET,
            );
            let mut rng = Rng::new(seed);
            let mut now = 0u64;
            for step in 0..5_000u32 {
                let r = rng.below(1 << 30) as u32;
                let ip: IpAddr = match r % 5 {
                    0 | 1 => Ipv4Addr::new(10, 0, 0, (r >> 8) as u8 % 6).into(),
                    2 => Ipv4Addr::new(10, 1, (r >> 8) as u8, 1).into(),
                    3 => alloc::format!("2001:db8:{:x}:{:x}::1", (r >> 8) % 2, (r >> 10) % 8)
                        .parse()
                        .expect("v6"),
                    _ => Ipv4Addr::new(10, 2, 0, 1).into(),
                };
                let h = hash_of(9, (r >> 13) % 20);
                let mut q = ann_to(h, 1 + ((r >> 18) % 12) as u16);
                q.left = u64::from((r >> 22) & 1);
                q.event = match (r >> 23) % 8 {
                    0 => Some(Event::Stopped),
                    1 => Some(Event::Completed),
                    _ => None,
                };
                match (r >> 26) % 16 {
                    0 => {
                        now += u64::from(r % 5_000);
                        tr.handle_timeout(t(now));
                    }
                    1 => {
                        let e = [SyncEntry {
                            info_hash: h,
                            addr: SocketAddr::new(ip, q.port),
                            seed: q.left == 0,
                            ttl_secs: (r >> 4) % 30,
                        }];
                        let mut msg = Vec::new();
                        encode_sync(&e, b"k", &mut msg);
                        let _ = tr.apply_sync(t(now), &msg, b"k");
                    }
                    2 => {
                        if r & 1 == 0 {
                            tr.register(h);
                        } else {
                            tr.unregister(&h);
                        }
                    }
                    _ => {
                        let _ = tr.announce(t(now), &q, ip, &mut rng);
                    }
                }
                let mut q = Vec::new();
                tr.drain_sync(&mut q, 1000);
                assert!(tr.swarm_count() <= 12 && tr.peer_count() <= 150);
                if let Err(e) = tr.audit() {
                    panic!("seed {seed}, step {step}: {e}");
                }
            }
            let c = tr.counters();
            assert!(c.evicted > 0 && c.failures > 0, "{policy:?}: {c:?}");
        }
    }
}
