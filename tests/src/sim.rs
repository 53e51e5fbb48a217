//! A deterministic in-memory swarm: many btcore sessions against each other with a
//! simulated clock, per-link bandwidth and latency, disconnects, peers joining and
//! leaving, and hostile peers. No socket, no thread: the same seed gives the same run,
//! byte for byte.
//!
//! Each node has a [`Session`] and its own storage (a byte vector per torrent). The
//! simulator carries the session's actions out: it delivers bytes over links after
//! latency plus serialization time, writes and reads storage, hashes pieces, and plays
//! a tracker that hands every node the addresses of the others.
//!
//! A node's uplink is one FIFO queue of at most [`LinkSpec::send_buffer`] bytes (the
//! socket buffers): while it is full the simulator stops calling
//! [`Session::poll_transmit`] for the node's connections and comes back when the queue
//! has drained to half, as a host does on a writable socket. The session therefore
//! sees back-pressure, and its send buffers and upload rates are those of a real link.
//! The other way, a node reads a connection only while its session says
//! [`Session::wants_recv`]: what arrives meanwhile waits, in order.
//!
//! Nodes whose session dials over uTP ([`TransportPolicy::Both`] or
//! [`TransportPolicy::UtpOnly`]) also get a uTP socket ([`UtpSocket`]) on their
//! address: an [`Action::Connect`] over [`Transport::Utp`] opens a uTP connection
//! there, a SYN that reaches the socket becomes [`Session::handle_incoming_over`], bytes
//! read from the connection go to [`Session::handle_recv`] (only while the session
//! [`Session::wants_recv`]: what it does not read stays in the uTP receive buffer and
//! closes the window), what [`Session::poll_transmit`] gives is written into the
//! connection within its [`Connection::writable`] room, and closes map both ways (a FIN
//! read to its end is [`Session::handle_disconnected`], an [`Action::Close`] sends a
//! FIN; a RESET, a timeout or an eviction ends it at once). The datagrams share the
//! node's uplink with its TCP bytes (bandwidth, queue) and then take its latency plus
//! the loss, duplication and jitter (reordering) of its [`UdpSpec`]. A node without a
//! uTP socket drops uTP datagrams, or answers them with a RESET when
//! [`Sim::refuse_utp_with_reset`] is set. The uTP timers run on the simulated clock.
//! Hostile behaviours, [`Sim::cut_links`] and the link counters ([`Sim::open_links`],
//! [`Sim::peak_links`]) concern the TCP connections only.
//!
//! The simulator also checks the session against the ground truth (the content):
//! every verified piece must hold the right bytes, no write may change a verified
//! piece, and the hash the session asks to check must be the torrent's.

use btcore_core::bitfield::Bitfield;
use btcore_core::hash::{Sha1, SmolSha1};
use btcore_core::ids::{BlockRef, PeerId, BLOCK_LEN};
use btcore_core::metainfo::{Limits, Metainfo};
use btcore_core::peer::PeerError;
use btcore_core::rng::Rng;
use btcore_core::session::{
    Action, AnnounceEvent, AnnounceOutcome, CloseReason, ConnId, Event, HolepunchEvent, Session,
    SessionConfig, TorrentId, Transport, TransportPolicy,
};
use btcore_core::time::{Duration, Instant};
use btcore_core::utp::packet::{self, Header, PacketType};
use btcore_core::utp::{ConnHandle, Connection, Incoming, State as UtpState, UtpConfig, UtpSocket};
use btcore_core::wire::HANDSHAKE_LEN;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// How a node behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// An honest btcore session.
    Honest,
    /// Serves blocks with flipped bytes (give it the content: `seed = true`).
    Corrupt,
    /// Sends a genuine handshake, then only random bytes: everything its session
    /// sends after the handshake is replaced by random bytes of the same length, and
    /// every chunk it receives after its handshake is answered with 64 random bytes.
    Garbage,
    /// Completes handshakes, claims every piece (whatever `seed` says), never answers a
    /// request: the reads its session asks for are dropped.
    Silent,
    /// Takes connection slots from one address: see [`Sim::add_hog`].
    Hog,
    /// Serves blocks with flipped bytes like [`Behaviour::Corrupt`], and dodges bans:
    /// every connection it makes comes from a new source port and carries a new peer
    /// id (give its session a short `reconnect_backoff` so that it dials again soon
    /// after each close).
    Rejoining,
    /// Lies about the metadata (BEP 9): its extension handshake announces a
    /// `metadata_size` off by `size_delta` bytes from the truth, and every metadata
    /// piece it sends is random bytes of the length that size implies, with that
    /// `total_size` (a reject for a piece beyond it). With `size_delta` 0 it announces
    /// the right size and still sends random pieces. Give it the content.
    MetadataLiar {
        /// Added to the true size.
        size_delta: i32,
    },
}

/// Link properties of a node (applied to both directions of its links).
#[derive(Clone, Copy, Debug)]
pub struct LinkSpec {
    /// Upload bandwidth in bytes per second.
    pub up_bps: u64,
    /// One-way latency.
    pub latency: Duration,
    /// Most bytes waiting on the uplink (socket buffers) before the node's sends block.
    pub send_buffer: u64,
}

impl Default for LinkSpec {
    fn default() -> Self {
        Self {
            up_bps: 1_000_000,
            latency: Duration::from_millis(20),
            send_buffer: 64 * 1024,
        }
    }
}

/// Datagram properties of a node's uplink, on top of its [`LinkSpec`] (which gives the
/// bandwidth and the latency): applied to every uTP datagram it sends.
#[derive(Clone, Copy, Debug, Default)]
pub struct UdpSpec {
    /// Loss probability, per million.
    pub loss_ppm: u32,
    /// Duplication probability, per million.
    pub dup_ppm: u32,
    /// Extra random delay of each datagram (and each copy), 0 to this: reorders.
    pub jitter: Duration,
    /// Bytes waiting on the uplink beyond which a datagram is dropped (tail drop); 0:
    /// the link's `send_buffer`.
    pub queue: u64,
}

/// Datagram counters of the whole simulation.
#[derive(Clone, Copy, Debug, Default)]
pub struct UdpStats {
    /// Datagrams sent by uTP sockets (and RESETs of nodes without one).
    pub sent: u64,
    /// Lost by the link model.
    pub lost: u64,
    /// Duplicated by the link model.
    pub duplicated: u64,
    /// Dropped because the sender's uplink queue was full.
    pub queue_drops: u64,
    /// Arrived at a node without a uTP socket.
    pub no_socket: u64,
    /// Addressed to no live node.
    pub unreachable: u64,
    /// Dropped by the receiver's NAT (no mapping towards the sender).
    pub nat_drops: u64,
}

/// One uTP connection of a node, known to its session as a [`ConnId`].
#[derive(Debug)]
struct UtpConn {
    handle: ConnHandle,
    peer: SocketAddr,
    /// The session was told the outgoing connection is open (incoming: always).
    reported: bool,
    /// Bytes the session gave that the connection did not take yet.
    pending: Vec<u8>,
    /// The send buffer was full: pump again when it has room.
    blocked: bool,
}

/// A node's uTP socket and the connections of its session on it.
#[derive(Debug)]
struct UtpHost {
    socket: UtpSocket<SocketAddr>,
    conns: BTreeMap<ConnId, UtpConn>,
    /// Connections the session closed, finishing their FIN exchange.
    closing: Vec<ConnHandle>,
}

/// One simulated node.
#[allow(missing_debug_implementations)]
pub struct Node {
    /// Its session.
    pub session: Session,
    /// Its address.
    pub addr: SocketAddr,
    /// Its behaviour.
    pub behaviour: Behaviour,
    /// Its link.
    pub link: LinkSpec,
    /// Its copy of the torrent's content.
    pub storage: Vec<u8>,
    /// Its torrent (None for hostile nodes that have no session torrent).
    pub torrent: Option<TorrentId>,
    /// When it joined.
    pub joined_at: Instant,
    /// When its first received block was written, if one was.
    pub first_block_at: Option<Instant>,
    /// When it finished, if it did.
    pub finished_at: Option<Instant>,
    /// Whether it is still running.
    pub alive: bool,
    /// Payload bytes it uploaded to other nodes (block messages).
    pub uploaded: u64,
    /// Pieces verified (events), in order.
    pub verified: Vec<u32>,
    /// Peers it banned.
    pub banned: Vec<SocketAddr>,
    /// When it banned each of `banned`.
    pub banned_at: Vec<Instant>,
    /// Pieces that failed their hash check (events).
    pub hash_failures: u32,
    /// When it announced to the tracker.
    pub announces: Vec<Instant>,
    /// Checks of data on disk it was asked for (a magnet link's metadata arrived).
    pub checks: u32,
    /// Hash checks that failed on a piece whose blocks were served by more than one
    /// peer (attribution needs more than "who sent it").
    pub mixed_failures: u32,
    /// When each piece with a single sender failed its hash check (the sender alone
    /// is to blame, no digest needed).
    pub single_failures_at: Vec<Instant>,
    /// Who served each block of pieces not verified yet: (piece, offset) → address.
    served_by: BTreeMap<(u32, u32), SocketAddr>,
    /// Ground-truth violations: a piece reported verified (or hashed `ok`) whose
    /// storage does not hold the content, a verify against a hash that is not the
    /// torrent's, a write that changed a verified piece. Must stay empty.
    pub violations: Vec<String>,
    /// Connections it closed: the peer's address and the reason it gave.
    pub closed: Vec<(SocketAddr, CloseReason)>,
    /// When it closed each of `closed`.
    pub closed_at: Vec<Instant>,
    /// Payload bytes other nodes read from storage to send to it, by sender address.
    pub received_from: BTreeMap<SocketAddr, u64>,
    /// Bytes delivered to it (all messages), by sender address.
    pub bytes_from: BTreeMap<SocketAddr, u64>,
    /// Peers whose handshake it completed (`PeerConnected` events), with when.
    pub connected: Vec<(Instant, SocketAddr)>,
    /// Whether its host gives the session the digest of each block of a piece that
    /// fails (or that it asks for): on by default.
    pub block_digests: bool,
    /// Connections it dialed (a [`Behaviour::Rejoining`] node takes a new source port
    /// for each).
    dials: u32,
    /// What a [`Behaviour::MetadataLiar`] node's session sent and is not a whole
    /// message yet, per connection.
    liar_buf: BTreeMap<ConnId, Vec<u8>>,
    /// Uplink busy until (microseconds of simulated time).
    busy_until_us: u64,
    /// Connections that stopped sending because the uplink queue was full.
    blocked: BTreeSet<ConnId>,
    /// A writable event is scheduled.
    wake_pending: bool,
    /// Bytes sent per connection (the garbage node keeps its handshake genuine).
    sent: BTreeMap<ConnId, u64>,
    /// Pieces verified so far (for the write check).
    have: BTreeSet<u32>,
    /// A slow disk: each write completes this long after it was asked (None: at once).
    /// The node then reads as a host should: bytes that arrive while its session says
    /// [`Session::disk_backlogged`] wait, in order, until a write completes.
    pub write_latency: Option<Duration>,
    /// Bytes of writes asked and not completed, now and at most.
    pub writes_pending: u64,
    /// The most `writes_pending` was.
    pub peak_writes_pending: u64,
    /// Deliveries held back because the disk was behind.
    pub held_deliveries: u64,
    held: std::collections::VecDeque<(ConnId, Vec<u8>)>,
    /// Deliveries waiting while the session does not want to read their connection
    /// ([`Session::wants_recv`]), per connection, in order.
    recv_held: BTreeMap<ConnId, std::collections::VecDeque<Vec<u8>>>,
    /// Deliveries that waited for [`Session::wants_recv`].
    pub recv_paused: u64,
    /// Pieces of which it received at least one block.
    pub pieces_received: BTreeSet<u32>,
    /// When its torrent reached its ratio limit and stopped seeding.
    pub ratio_reached_at: Option<Instant>,
    /// When its torrent reached its idle seeding limit and stopped seeding.
    pub idle_reached_at: Option<Instant>,
    /// Its queue events ([`Event::TorrentQueued`], [`Event::TorrentDequeued`]), in
    /// order.
    pub queue_events: Vec<(Instant, Event)>,
    /// The datagram properties of its uplink (uTP).
    pub udp: UdpSpec,
    /// Every [`Action::Connect`] of its session: when, the connection, the address,
    /// the transport.
    pub connects: Vec<(Instant, ConnId, SocketAddr, Transport)>,
    /// uTP connections its socket accepted (SYNs handed to the session).
    pub utp_accepted: u32,
    /// Times bytes were left in a uTP connection's receive buffer because the session
    /// did not want them ([`Session::wants_recv`]) or its disk was behind.
    pub utp_reads_deferred: u64,
    /// Its uTP socket, if it has one.
    utp: Option<UtpHost>,
    /// Behind a NAT that filters what comes in (a home router): no TCP dial reaches
    /// it, and a datagram from an address reaches it only within [`NAT_UDP_TIMEOUT`]
    /// of a datagram it sent there (the router's UDP mapping, as Linux's connection
    /// tracking keeps it). Addresses are not rewritten: the node's own address stands
    /// for the router's mapping of it, as a router that keeps source ports does.
    pub nat: bool,
    /// Where it sent datagrams last (its NAT's open mappings), when `nat`.
    nat_out: BTreeMap<SocketAddr, Instant>,
    /// Its BEP 55 hole punching events ([`Event::Holepunch`]), with when.
    pub holepunch: Vec<(Instant, HolepunchEvent)>,
}

/// How long a NAT keeps a UDP mapping that carries no traffic (Linux's
/// `nf_conntrack_udp_timeout`).
pub const NAT_UDP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
enum Ev {
    Deliver {
        to: usize,
        conn: ConnId,
        data: Vec<u8>,
    },
    Closed {
        to: usize,
        conn: ConnId,
    },
    Connected {
        node: usize,
        conn: ConnId,
        ok: bool,
    },
    Writable {
        node: usize,
    },
    WriteDone {
        node: usize,
        torrent: TorrentId,
        block: BlockRef,
    },
    HogTick {
        hog: usize,
    },
    Datagram {
        to: usize,
        from: SocketAddr,
        data: Vec<u8>,
    },
}

/// A node that takes connection slots of another ([`Sim::add_hog`]).
#[derive(Debug)]
struct Hog {
    node: usize,
    target: usize,
    conns: usize,
    handshake: bool,
    next_port: u16,
    next_conn: u32,
    next_id: u64,
    open: BTreeSet<ConnId>,
}

/// A connection on which a [`Behaviour::Garbage`] node sent noise to another node.
#[derive(Clone, Copy, Debug)]
pub struct GarbageLink {
    /// The node at the other end.
    pub node: usize,
    /// When the first noise was sent.
    pub first_junk: Instant,
    /// When the connection closed, and whether the receiving node closed it.
    pub closed: Option<(Instant, bool)>,
    /// The reason the receiving node gave.
    pub error: Option<PeerError>,
}

/// The simulation.
#[allow(missing_debug_implementations)]
pub struct Sim {
    /// Every connection a garbage node sent noise on.
    pub garbage_links: Vec<GarbageLink>,
    /// (receiving node, its conn) → index in `garbage_links`, while open.
    junk_open: BTreeMap<(usize, ConnId), usize>,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The simulated clock.
    pub now: Instant,
    /// The most connections open at once (both ends established as a link).
    pub peak_links: usize,
    hogs: Vec<Hog>,
    /// Whether a tracker answers announces (off: peers come by hand, PEX or DHT).
    pub tracker: bool,
    torrent_file: Vec<u8>,
    content: Vec<u8>,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: BTreeMap<usize, Ev>,
    seq: u64,
    /// (node, conn) → (node, conn) of the other end.
    links: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    rng: Rng,
    piece_len: u32,
    hashes: Vec<[u8; 20]>,
    scratch: Vec<u8>,
    /// The configuration of the uTP sockets of nodes added from now on.
    pub utp_config: UtpConfig,
    /// Whether a node without a uTP socket answers uTP datagrams with a RESET (as a
    /// uTP stack that refuses); otherwise it drops them (a closed UDP port, no answer).
    pub refuse_utp_with_reset: bool,
    /// Datagram counters.
    pub udp: UdpStats,
}

impl Node {
    /// Connections it dialed.
    pub fn dials(&self) -> u32 {
        self.dials
    }

    /// Whether it has a uTP socket.
    pub fn has_utp(&self) -> bool {
        self.utp.is_some()
    }

    /// Its session's open uTP connections.
    pub fn utp_conns(&self) -> usize {
        self.utp.as_ref().map_or(0, |u| u.conns.len())
    }

    /// Its uTP socket, if it has one.
    pub fn utp_socket(&self) -> Option<&UtpSocket<SocketAddr>> {
        self.utp.as_ref().map(|u| &u.socket)
    }

    /// uTP dials of its session that it made again over TCP under the same connection
    /// id (the fallback of [`TransportPolicy::Both`]), with the address.
    pub fn fallbacks(&self) -> Vec<(ConnId, SocketAddr)> {
        let mut out = Vec::new();
        for (k, &(_, conn, addr, t)) in self.connects.iter().enumerate() {
            if t == Transport::Tcp
                && self.connects[..k]
                    .iter()
                    .rev()
                    .find(|c| c.1 == conn)
                    .is_some_and(|c| c.3 == Transport::Utp && c.2 == addr)
            {
                out.push((conn, addr));
            }
        }
        out
    }
}

impl Sim {
    /// A simulation of one torrent over `content` cut into `piece_len` pieces.
    pub fn new(content: Vec<u8>, piece_len: u32, seed: u64) -> Self {
        let torrent_file = make_torrent(&content, piece_len);
        let hashes = content
            .chunks(piece_len as usize)
            .map(SmolSha1::digest)
            .collect();
        Self {
            nodes: Vec::new(),
            now: Instant::from_millis(1),
            peak_links: 0,
            hogs: Vec::new(),
            tracker: true,
            garbage_links: Vec::new(),
            junk_open: BTreeMap::new(),
            torrent_file,
            content,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            links: BTreeMap::new(),
            rng: Rng::new(seed),
            piece_len,
            hashes,
            scratch: vec![0u8; 64 * 1024],
            utp_config: UtpConfig::default(),
            refuse_utp_with_reset: false,
            udp: UdpStats::default(),
        }
    }

    /// The same content as a multi-file torrent of files of `lens` bytes (summing to
    /// the content's length), named `f0`, `f1`... under `sim`. Call before adding
    /// nodes.
    pub fn with_files(mut self, lens: &[u64]) -> Self {
        self.torrent_file = make_multi_torrent(&self.content, self.piece_len, lens);
        self
    }

    /// Pieces in the simulated torrent.
    pub fn num_pieces(&self) -> u32 {
        self.hashes.len() as u32
    }

    /// The `.torrent` file of the simulated torrent.
    pub fn torrent_file(&self) -> &[u8] {
        &self.torrent_file
    }

    /// Adds a node, at any time (a node added mid-run announces and finds the others
    /// through the tracker); `seed` says whether it starts with the whole content.
    pub fn add_node(
        &mut self,
        seed: bool,
        behaviour: Behaviour,
        link: LinkSpec,
        config: impl FnOnce(&mut SessionConfig),
    ) -> usize {
        let i = self.nodes.len();
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(btcore_core::PEER_ID_PREFIX);
        id[8..16].copy_from_slice(&(i as u64).to_be_bytes());
        let mut cfg = SessionConfig::new(PeerId(id));
        config(&mut cfg);
        let speaks_utp = cfg.transport != TransportPolicy::TcpOnly;
        let mut session = Session::new(cfg, self.rng.next_u64());
        // Drawn only for a node with uTP, so the runs of TCP-only swarms stay as they were.
        let utp = speaks_utp.then(|| UtpHost {
            socket: UtpSocket::new(self.utp_config, self.rng.next_u64()),
            conns: BTreeMap::new(),
            closing: Vec::new(),
        });
        let n = self.hashes.len() as u32;
        let claims_all = seed || behaviour == Behaviour::Silent;
        let have = if claims_all {
            Bitfield::full(n)
        } else {
            Bitfield::new(n)
        };
        let torrent = session
            .add_torrent(self.now, &self.torrent_file, Some(&have))
            .ok();
        let storage = if seed {
            self.content.clone()
        } else {
            vec![0; self.content.len()]
        };
        let addr = SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8),
            6881,
        ));
        self.nodes.push(Node {
            session,
            addr,
            behaviour,
            link,
            storage,
            torrent,
            joined_at: self.now,
            first_block_at: None,
            finished_at: if claims_all { Some(self.now) } else { None },
            alive: true,
            uploaded: 0,
            verified: Vec::new(),
            banned: Vec::new(),
            banned_at: Vec::new(),
            hash_failures: 0,
            checks: 0,
            announces: Vec::new(),
            mixed_failures: 0,
            single_failures_at: Vec::new(),
            served_by: BTreeMap::new(),
            violations: Vec::new(),
            closed: Vec::new(),
            closed_at: Vec::new(),
            received_from: BTreeMap::new(),
            bytes_from: BTreeMap::new(),
            connected: Vec::new(),
            block_digests: true,
            dials: 0,
            liar_buf: BTreeMap::new(),
            busy_until_us: self.now.as_millis() * 1000,
            blocked: BTreeSet::new(),
            wake_pending: false,
            sent: BTreeMap::new(),
            have: if seed {
                (0..n).collect()
            } else {
                BTreeSet::new()
            },
            write_latency: None,
            writes_pending: 0,
            peak_writes_pending: 0,
            held_deliveries: 0,
            held: std::collections::VecDeque::new(),
            recv_held: BTreeMap::new(),
            recv_paused: 0,
            pieces_received: BTreeSet::new(),
            ratio_reached_at: None,
            idle_reached_at: None,
            queue_events: Vec::new(),
            udp: UdpSpec::default(),
            connects: Vec::new(),
            utp_accepted: 0,
            utp_reads_deferred: 0,
            utp,
            nat: false,
            nat_out: BTreeMap::new(),
            holepunch: Vec::new(),
        });
        i
    }

    /// Adds a leecher that starts from a magnet link (the info-hash only) and fetches
    /// the metadata from its peers (BEP 9).
    pub fn add_magnet_node(&mut self, link: LinkSpec) -> usize {
        let i = self.add_node(false, Behaviour::Honest, link, |_| {});
        let now = self.now;
        let mut tokens = Vec::new();
        let ih = Metainfo::parse_vec(&self.torrent_file, &mut tokens, &Limits::default())
            .expect("sim torrent")
            .info_hash();
        // The torrent's tracker (the session asks the trackers a link names).
        let uri = format!("magnet:?xt=urn:btih:{ih}&tr=http%3A%2F%2Ftracker.invalid%2Fannounce");
        let n = &mut self.nodes[i];
        if let Some(t) = n.torrent.take() {
            n.session.remove_torrent(now, t);
        }
        n.torrent = n.session.add_magnet(now, uri.as_bytes()).ok();
        i
    }

    /// Adds a node that holds the whole content but was added with
    /// [`Session::add_torrent_checking`]: it is in the checking state, with no piece,
    /// until the test calls [`Session::handle_checked`].
    pub fn add_checking_node(&mut self, link: LinkSpec) -> usize {
        let i = self.add_node(true, Behaviour::Honest, link, |_| {});
        let now = self.now;
        let n = &mut self.nodes[i];
        if let Some(t) = n.torrent.take() {
            n.session.remove_torrent(now, t);
        }
        // The removal's `stopped` announce is not the checking node's doing, nor the
        // finished event of the torrent it removed.
        while n.session.poll_action().is_some() {}
        while n.session.poll_event().is_some() {}
        n.torrent = n.session.add_torrent_checking(now, &self.torrent_file).ok();
        n.finished_at = None;
        i
    }

    /// Adds a node that takes connection slots of node `target` from its one address:
    /// it keeps `conns` connections open to it (each from a new source port, opening
    /// new ones every 250 ms as the target closes them), never reads, and sends nothing
    /// on them, or only a handshake for the torrent under a fresh peer id when
    /// `handshake`. It has no torrent of its own.
    pub fn add_hog(&mut self, target: usize, conns: usize, handshake: bool) -> usize {
        let i = self.add_node(false, Behaviour::Hog, LinkSpec::default(), |_| {});
        let now = self.now;
        let n = &mut self.nodes[i];
        if let Some(t) = n.torrent.take() {
            n.session.remove_torrent(now, t);
        }
        while n.session.poll_action().is_some() {}
        n.finished_at = None;
        self.hogs.push(Hog {
            node: i,
            target,
            conns,
            handshake,
            next_port: 20_000,
            next_conn: 1 << 30,
            next_id: 0,
            open: BTreeSet::new(),
        });
        let hog = self.hogs.len() - 1;
        self.schedule(now, Ev::HogTick { hog });
        i
    }

    /// Connections node `hog` ([`Sim::add_hog`]) opened that are still open.
    pub fn hog_conns(&self, hog: usize) -> usize {
        self.hogs
            .iter()
            .filter(|h| h.node == hog)
            .flat_map(|h| h.open.iter().map(move |c| (h.node, *c)))
            .filter(|end| self.links.contains_key(end))
            .count()
    }

    fn hog_tick(&mut self, k: usize) {
        let now = self.now;
        let (node, target) = (self.hogs[k].node, self.hogs[k].target);
        if !self.nodes[node].alive || !self.nodes[target].alive {
            return;
        }
        let links = &self.links;
        self.hogs[k]
            .open
            .retain(|c| links.contains_key(&(node, *c)));
        let ip = self.nodes[node].addr.ip();
        let mut tokens = Vec::new();
        let info_hash = Metainfo::parse_vec(&self.torrent_file, &mut tokens, &Limits::default())
            .expect("sim torrent")
            .info_hash();
        while self.hogs[k].open.len() < self.hogs[k].conns {
            let h = &mut self.hogs[k];
            let ours = ConnId(h.next_conn);
            h.next_conn += 1;
            let from = SocketAddr::new(ip, h.next_port);
            h.next_port = h.next_port.wrapping_add(1).max(20_000);
            h.next_id += 1;
            let (handshake, id) = (h.handshake, h.next_id);
            h.open.insert(ours);
            let theirs = self.nodes[target].session.handle_incoming(now, from);
            self.links.insert((node, ours), (target, theirs));
            self.links.insert((target, theirs), (node, ours));
            if handshake {
                let mut peer_id = *b"-HG0001-000000000000";
                peer_id[8..].copy_from_slice(&format!("{id:012}").as_bytes()[..12]);
                let hs = btcore_core::wire::Handshake {
                    reserved: btcore_core::wire::Reserved::NONE.with_fast(true),
                    info_hash,
                    peer_id: PeerId(peer_id),
                };
                let mut buf = [0u8; HANDSHAKE_LEN];
                let n = hs.encode(&mut buf).expect("a handshake fits");
                let at = now + self.nodes[node].link.latency;
                self.schedule(
                    at,
                    Ev::Deliver {
                        to: target,
                        conn: theirs,
                        data: buf[..n].to_vec(),
                    },
                );
            }
            // The target handles what handle_incoming asked before the next one.
            self.drain_all();
        }
        self.schedule(now + Duration::from_millis(250), Ev::HogTick { hog: k });
    }

    fn schedule(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.events.insert(self.seq as usize, ev);
        self.queue
            .push(Reverse((at.as_millis(), self.seq, self.seq as usize)));
    }

    /// Stops a node: its links close at the other ends.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
        let ends: Vec<_> = self
            .links
            .iter()
            .filter(|((n, _), _)| *n == i)
            .map(|(k, v)| (*k, *v))
            .collect();
        for (k, (other, oc)) in ends {
            self.links.remove(&k);
            self.links.remove(&(other, oc));
            self.junk_closed((other, oc), false, None);
            let at = self.now + self.nodes[i].link.latency;
            self.schedule(
                at,
                Ev::Closed {
                    to: other,
                    conn: oc,
                },
            );
        }
    }

    fn junk_closed(&mut self, end: (usize, ConnId), by_receiver: bool, error: Option<PeerError>) {
        if let Some(k) = self.junk_open.remove(&end) {
            let g = &mut self.garbage_links[k];
            g.closed = Some((self.now, by_receiver));
            g.error = error;
        }
    }

    /// Cuts every connection of node `i` (a network blip): both ends see the close.
    pub fn cut_links(&mut self, i: usize) {
        let ends: Vec<_> = self
            .links
            .iter()
            .filter(|((n, _), _)| *n == i)
            .map(|(k, v)| (*k, *v))
            .collect();
        for ((_, c), (other, oc)) in ends {
            self.links.remove(&(i, c));
            self.links.remove(&(other, oc));
            self.junk_closed((other, oc), false, None);
            self.junk_closed((i, c), false, None);
            let at = self.now + self.nodes[i].link.latency;
            self.schedule(
                at,
                Ev::Closed {
                    to: other,
                    conn: oc,
                },
            );
            self.schedule(at, Ev::Closed { to: i, conn: c });
        }
    }

    /// Connections open now (each counted once).
    pub fn open_links(&self) -> usize {
        self.links.len() / 2
    }

    /// Open connections between nodes `a` and `b`.
    pub fn links_between(&self, a: usize, b: usize) -> usize {
        self.links
            .iter()
            .filter(|((n, _), (m, _))| *n == a && *m == b)
            .count()
    }

    /// Runs until `done` holds or `limit` of simulated time has passed; returns
    /// whether `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            self.drain_all();
            self.peak_links = self.peak_links.max(self.open_links());
            if done(self) {
                return true;
            }
            // The next moment anything happens.
            let next_ev = self
                .queue
                .peek()
                .map(|Reverse((t, _, _))| Instant::from_millis(*t));
            // A uTP timer due now ran already this round: its next turn is a tick on.
            let soonest_utp = self.now + Duration::from_millis(1);
            let next_timer = self
                .nodes
                .iter()
                .filter(|n| n.alive)
                .filter_map(|n| n.session.poll_timeout())
                .chain(
                    self.nodes
                        .iter()
                        .filter(|n| n.alive)
                        .filter_map(|n| n.utp.as_ref()?.socket.poll_timeout())
                        .map(|t| t.max(soonest_utp)),
                )
                .min();
            let next = match (next_ev, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => return false,
                },
            };
            if next > end {
                self.now = end;
                return false;
            }
            self.now = self.now.max(next);
            while let Some(Reverse((t, _, k))) = self.queue.peek().copied() {
                if t > self.now.as_millis() {
                    break;
                }
                self.queue.pop();
                if let Some(ev) = self.events.remove(&k) {
                    self.apply(ev);
                }
            }
            let now = self.now;
            for n in self.nodes.iter_mut().filter(|n| n.alive) {
                if n.session.poll_timeout().is_some_and(|t| t <= now) {
                    n.session.handle_timeout(now);
                }
                if let Some(u) = n.utp.as_mut() {
                    if u.socket.poll_timeout().is_some_and(|t| t <= now) {
                        u.socket.handle_timeout(now);
                    }
                }
            }
        }
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(d, |s| s.now >= end);
    }

    fn apply(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Deliver { to, conn, data } => {
                let Some(&(from, _)) = self.links.get(&(to, conn)) else {
                    return;
                };
                if !self.nodes[to].alive {
                    return;
                }
                let from = self.nodes[from].addr;
                *self.nodes[to].bytes_from.entry(from).or_insert(0) += data.len() as u64;
                let n = &mut self.nodes[to];
                if n.write_latency.is_some() && (!n.held.is_empty() || n.session.disk_backlogged())
                {
                    n.held_deliveries += 1;
                    n.held.push_back((conn, data));
                    return;
                }
                if n.recv_held.contains_key(&conn) || !n.session.wants_recv(conn) {
                    n.recv_paused += 1;
                    n.recv_held.entry(conn).or_default().push_back(data);
                    return;
                }
                self.recv(to, conn, &data);
            }
            Ev::HogTick { hog } => self.hog_tick(hog),
            Ev::Datagram { to, from, data } => self.datagram_in(to, from, &data),
            Ev::Closed { to, conn } => {
                if self.nodes[to].alive {
                    self.nodes[to].blocked.remove(&conn);
                    self.nodes[to].sent.remove(&conn);
                    self.nodes[to].recv_held.remove(&conn);
                    self.nodes[to].session.handle_disconnected(now, conn);
                }
            }
            Ev::Connected { node, conn, ok } => {
                if !self.nodes[node].alive {
                    return;
                }
                if ok && self.links.contains_key(&(node, conn)) {
                    self.nodes[node].session.handle_connected(now, conn);
                } else {
                    self.nodes[node].session.handle_connect_failed(now, conn);
                }
            }
            Ev::WriteDone {
                node,
                torrent,
                block,
            } => {
                let n = &mut self.nodes[node];
                if !n.alive {
                    return;
                }
                n.writes_pending -= u64::from(block.len);
                n.session.handle_write_done(now, torrent, block, Ok(()));
                // Read again what waited, while the disk keeps up.
                while !n.session.disk_backlogged() {
                    let Some((conn, data)) = n.held.pop_front() else {
                        break;
                    };
                    if self.links.contains_key(&(node, conn)) {
                        n.session.handle_recv(now, conn, &data);
                    }
                }
            }
            Ev::Writable { node } => {
                self.nodes[node].wake_pending = false;
                if !self.nodes[node].alive {
                    return;
                }
                let blocked = std::mem::take(&mut self.nodes[node].blocked);
                for conn in blocked {
                    self.pump(node, conn);
                }
            }
        }
    }

    /// Hands bytes that arrived on `conn` to node `to`.
    fn recv(&mut self, to: usize, conn: ConnId, data: &[u8]) {
        let now = self.now;
        match self.nodes[to].behaviour {
            Behaviour::Honest
            | Behaviour::Corrupt
            | Behaviour::Silent
            | Behaviour::Rejoining
            | Behaviour::MetadataLiar { .. } => self.nodes[to].session.handle_recv(now, conn, data),
            Behaviour::Garbage => self.garbage_recv(to, conn, data),
            // It never reads.
            Behaviour::Hog => {}
        }
    }

    /// Reads what waited for [`Session::wants_recv`] on connections that want it now.
    fn release_recv(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].recv_held.is_empty() || !self.nodes[i].alive {
                continue;
            }
            let conns: Vec<ConnId> = self.nodes[i].recv_held.keys().copied().collect();
            for conn in conns {
                while self.nodes[i].session.wants_recv(conn) {
                    let Some(q) = self.nodes[i].recv_held.get_mut(&conn) else {
                        break;
                    };
                    let Some(data) = q.pop_front() else {
                        break;
                    };
                    if q.is_empty() {
                        self.nodes[i].recv_held.remove(&conn);
                    }
                    if self.links.contains_key(&(i, conn)) {
                        self.recv(i, conn, &data);
                    }
                }
            }
        }
    }

    /// The garbage node's session reads normally (it must answer the handshake);
    /// once its own handshake is out it answers everything with random bytes.
    fn garbage_recv(&mut self, to: usize, conn: ConnId, data: &[u8]) {
        let now = self.now;
        self.nodes[to].session.handle_recv(now, conn, data);
        let handshake_out = self.nodes[to]
            .sent
            .get(&conn)
            .is_some_and(|&n| n >= HANDSHAKE_LEN as u64);
        if handshake_out {
            let junk: Vec<u8> = (0..64).map(|_| self.rng.next_u32() as u8).collect();
            self.send_bytes(to, conn, junk);
        }
    }

    /// Bytes waiting on node `i`'s uplink.
    fn backlog(&self, i: usize) -> u64 {
        let n = &self.nodes[i];
        let now_us = self.now.as_millis() * 1000;
        n.busy_until_us.saturating_sub(now_us) * n.link.up_bps / 1_000_000
    }

    /// Moves bytes of `conn` from the session to the uplink while it has room.
    fn pump(&mut self, i: usize, conn: ConnId) {
        let now = self.now;
        let cap = self.nodes[i].link.send_buffer.max(1);
        loop {
            let room = cap.saturating_sub(self.backlog(i)) as usize;
            // Like a socket, wake the writer only for a worthwhile amount of room.
            if room < (cap as usize / 4).clamp(1, 16 * 1024) {
                self.nodes[i].blocked.insert(conn);
                self.wake_when_drained(i);
                return;
            }
            let mut buf = std::mem::take(&mut self.scratch);
            let want = room.min(buf.len());
            let n = self.nodes[i]
                .session
                .poll_transmit(now, conn, &mut buf[..want]);
            let data = buf[..n].to_vec();
            self.scratch = buf;
            if n == 0 {
                return;
            }
            self.send_bytes(i, conn, data);
        }
    }

    /// Schedules a writable event when node `i`'s uplink has drained to half.
    fn wake_when_drained(&mut self, i: usize) {
        if self.nodes[i].wake_pending {
            return;
        }
        self.nodes[i].wake_pending = true;
        let n = &self.nodes[i];
        let half_us = n.link.send_buffer / 2 * 1_000_000 / n.link.up_bps.max(1);
        let at_us = n.busy_until_us.saturating_sub(half_us);
        let at = Instant::from_millis(at_us.div_ceil(1000).max(self.now.as_millis() + 1));
        self.schedule(at, Ev::Writable { node: i });
    }

    fn send_bytes(&mut self, from: usize, conn: ConnId, mut data: Vec<u8>) {
        let Some(&(to, oc)) = self.links.get(&(from, conn)) else {
            return;
        };
        let sent = self.nodes[from].sent.entry(conn).or_insert(0);
        let before = *sent;
        *sent += data.len() as u64;
        if let Behaviour::MetadataLiar { size_delta } = self.nodes[from].behaviour {
            data = self.lie(from, conn, before, &data, size_delta);
            if data.is_empty() {
                return;
            }
        }
        if self.nodes[from].behaviour == Behaviour::Rejoining {
            // A new peer id on every connection: bytes 48..68 of the handshake.
            let mut id = *b"-XX0001-000000000000";
            id[8..].copy_from_slice(format!("{:012}", conn.0).as_bytes());
            for (k, b) in data.iter_mut().enumerate() {
                let at = before as usize + k;
                if (48..HANDSHAKE_LEN).contains(&at) {
                    *b = id[at - 48];
                }
            }
        }
        if self.nodes[from].behaviour == Behaviour::Garbage {
            // Everything after the handshake is noise.
            let keep = (HANDSHAKE_LEN as u64).saturating_sub(before) as usize;
            for b in data.iter_mut().skip(keep) {
                *b = self.rng.next_u32() as u8;
            }
            if keep < data.len() && !self.junk_open.contains_key(&(to, oc)) {
                self.junk_open.insert((to, oc), self.garbage_links.len());
                self.garbage_links.push(GarbageLink {
                    node: to,
                    first_junk: self.now,
                    closed: None,
                    error: None,
                });
            }
        }
        let link = self.nodes[from].link;
        let now_us = self.now.as_millis() * 1000;
        let start = self.nodes[from].busy_until_us.max(now_us);
        let done = start + (data.len() as u64 * 1_000_000).div_ceil(link.up_bps.max(1));
        self.nodes[from].busy_until_us = done;
        self.schedule(
            Instant::from_millis(done.div_ceil(1000)) + link.latency,
            Ev::Deliver { to, conn: oc, data },
        );
    }

    /// A [`Behaviour::MetadataLiar`]'s bytes on `conn` (`before` of them sent
    /// already): the handshake as is, then whole messages, its metadata rewritten.
    fn lie(&mut self, from: usize, conn: ConnId, before: u64, data: &[u8], delta: i32) -> Vec<u8> {
        let keep = ((HANDSHAKE_LEN as u64).saturating_sub(before) as usize).min(data.len());
        let mut out = data[..keep].to_vec();
        let mut buf = self.nodes[from].liar_buf.remove(&conn).unwrap_or_default();
        buf.extend_from_slice(&data[keep..]);
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() < 4 + len {
                break;
            }
            let msg: Vec<u8> = buf.drain(..4 + len).collect();
            out.extend(self.rewrite_metadata(msg, delta));
        }
        self.nodes[from].liar_buf.insert(conn, buf);
        out
    }

    /// One whole message of a metadata liar: its extension handshake claims a size
    /// off by `delta`, its metadata pieces are random bytes.
    fn rewrite_metadata(&mut self, msg: Vec<u8>, delta: i32) -> Vec<u8> {
        use btcore_core::ext::{MetadataMsg, METADATA_PIECE_LEN};
        if msg.len() < 6 || msg[4] != 20 {
            return msg;
        }
        let ext_id = msg[5];
        let payload = &msg[6..];
        let new_payload = if ext_id == 0 {
            // The handshake: `13:metadata_sizei<N>e`.
            let key = b"13:metadata_sizei";
            let Some(at) = payload.windows(key.len()).position(|w| w == key) else {
                return msg;
            };
            let start = at + key.len();
            let Some(end) = payload[start..].iter().position(|&b| b == b'e') else {
                return msg;
            };
            let n: i64 = std::str::from_utf8(&payload[start..start + end])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let mut p = payload[..start].to_vec();
            p.extend_from_slice((n + i64::from(delta)).to_string().as_bytes());
            p.extend_from_slice(&payload[start + end..]);
            p
        } else {
            let Ok(MetadataMsg::Data {
                piece, total_size, ..
            }) = MetadataMsg::parse(payload)
            else {
                return msg;
            };
            let size = (i64::from(total_size) + i64::from(delta)).max(1) as u32;
            let pieces = size.div_ceil(METADATA_PIECE_LEN);
            let reply = if piece >= pieces {
                MetadataMsg::Reject { piece }
            } else {
                let len = if piece + 1 < pieces {
                    METADATA_PIECE_LEN
                } else {
                    size - piece * METADATA_PIECE_LEN
                };
                let junk: Vec<u8> = (0..len).map(|_| self.rng.next_u32() as u8).collect();
                let mut p = vec![0u8; junk.len() + 128];
                let n = MetadataMsg::Data {
                    piece,
                    total_size: size,
                    data: &junk,
                }
                .write(&mut p)
                .expect("fits");
                p.truncate(n);
                return frame_ext(ext_id, &p);
            };
            let mut p = vec![0u8; 128];
            let n = reply.write(&mut p).expect("fits");
            p.truncate(n);
            p
        };
        frame_ext(ext_id, &new_payload)
    }

    /// Carries out every pending action of every node.
    fn drain_all(&mut self) {
        loop {
            let mut any = false;
            for i in 0..self.nodes.len() {
                if !self.nodes[i].alive {
                    continue;
                }
                while let Some(a) = self.nodes[i].session.poll_action() {
                    any = true;
                    self.do_action(i, a);
                }
                while let Some(e) = self.nodes[i].session.poll_event() {
                    self.on_event(i, e);
                }
            }
            for i in 0..self.nodes.len() {
                any |= self.utp_service(i);
            }
            if !any {
                // What waited for `wants_recv` may be read now.
                let held = |s: &Self| -> usize {
                    s.nodes
                        .iter()
                        .flat_map(|n| n.recv_held.values())
                        .map(std::collections::VecDeque::len)
                        .sum()
                };
                let before = held(self);
                if before == 0 {
                    return;
                }
                self.release_recv();
                if held(self) == before {
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, i: usize, e: Event) {
        let now = self.now;
        match e {
            Event::TorrentFinished(_) => self.nodes[i].finished_at = Some(now),
            Event::RatioReached(_) => self.nodes[i].ratio_reached_at = Some(now),
            Event::IdleLimitReached(_) => self.nodes[i].idle_reached_at = Some(now),
            Event::TorrentQueued(_) | Event::TorrentDequeued(_) => {
                self.nodes[i].queue_events.push((now, e));
            }
            Event::PieceVerified(_, p) => {
                if !self.piece_correct(i, p.0) {
                    let msg = format!("piece {} reported verified with wrong data", p.0);
                    self.nodes[i].violations.push(msg);
                }
                let n = &mut self.nodes[i];
                n.verified.push(p.0);
                n.have.insert(p.0);
            }
            Event::PeerBanned(_, a) => {
                self.nodes[i].banned.push(a);
                self.nodes[i].banned_at.push(now);
            }
            Event::PeerConnected(_, a) => self.nodes[i].connected.push((now, a)),
            Event::Holepunch(_, h) => self.nodes[i].holepunch.push((now, h)),
            Event::HashFailed(..) => self.nodes[i].hash_failures += 1,
            _ => {}
        }
    }

    fn piece_range(&self, piece: u32) -> std::ops::Range<usize> {
        let start = piece as usize * self.piece_len as usize;
        let end = (start + self.piece_len as usize).min(self.content.len());
        start..end
    }

    /// Whether node `i`'s storage holds piece `piece` exactly as the content.
    fn piece_correct(&self, i: usize, piece: u32) -> bool {
        (piece as usize) < self.hashes.len()
            && self.nodes[i].storage[self.piece_range(piece)]
                == self.content[self.piece_range(piece)]
    }

    fn do_action(&mut self, i: usize, a: Action) {
        let now = self.now;
        match a {
            Action::Connect {
                conn,
                addr,
                transport,
                ..
            } => {
                self.nodes[i].connects.push((now, conn, addr, transport));
                if transport == Transport::Utp {
                    self.utp_connect(i, conn, addr);
                    return;
                }
                let target = self.nodes.iter().position(|n| n.addr == addr && n.alive);
                let latency = self.nodes[i].link.latency;
                match target {
                    // A NAT drops the SYN: the dial times out.
                    Some(j) if j != i && self.nodes[j].nat => self.schedule(
                        now + Duration::from_secs(5),
                        Ev::Connected {
                            node: i,
                            conn,
                            ok: false,
                        },
                    ),
                    Some(j) if j != i => {
                        let mut from_addr = self.nodes[i].addr;
                        self.nodes[i].dials += 1;
                        if self.nodes[i].behaviour == Behaviour::Rejoining {
                            from_addr.set_port(20_000 + (self.nodes[i].dials % 40_000) as u16);
                        }
                        let their = self.nodes[j].session.handle_incoming(now, from_addr);
                        self.links.insert((i, conn), (j, their));
                        self.links.insert((j, their), (i, conn));
                        self.schedule(
                            now + latency,
                            Ev::Connected {
                                node: i,
                                conn,
                                ok: true,
                            },
                        );
                    }
                    _ => self.schedule(
                        now + latency,
                        Ev::Connected {
                            node: i,
                            conn,
                            ok: false,
                        },
                    ),
                }
            }
            Action::Send(conn) if self.is_utp(i, conn) => self.utp_send(i, conn),
            Action::Send(conn) => self.pump(i, conn),
            Action::Close { conn, reason } if self.is_utp(i, conn) => {
                self.utp_close(i, conn, reason);
            }
            Action::Close { conn, reason } => {
                self.nodes[i].blocked.remove(&conn);
                self.nodes[i].sent.remove(&conn);
                if let Some((j, oc)) = self.links.remove(&(i, conn)) {
                    self.links.remove(&(j, oc));
                    self.junk_closed((i, conn), true, reason.peer_error());
                    self.junk_closed((j, oc), false, None);
                    let peer = self.nodes[j].addr;
                    self.nodes[i].closed.push((peer, reason));
                    self.nodes[i].closed_at.push(now);
                    let at = now + self.nodes[i].link.latency;
                    self.schedule(at, Ev::Closed { to: j, conn: oc });
                }
            }
            Action::Write {
                torrent,
                block,
                data,
            } => {
                let off = block.piece.0 as usize * self.piece_len as usize + block.offset as usize;
                let n = &mut self.nodes[i];
                n.first_block_at.get_or_insert(now);
                let old = &mut n.storage[off..off + data.len()];
                if n.have.contains(&block.piece.0) && *old != *data {
                    n.violations.push(format!(
                        "write into verified piece {} changed its bytes",
                        block.piece.0
                    ));
                }
                old.copy_from_slice(&data);
                match n.write_latency {
                    Some(d) => {
                        n.writes_pending += u64::from(block.len);
                        n.peak_writes_pending = n.peak_writes_pending.max(n.writes_pending);
                        self.schedule(
                            now + d,
                            Ev::WriteDone {
                                node: i,
                                torrent,
                                block,
                            },
                        );
                    }
                    None => n.session.handle_write_done(now, torrent, block, Ok(())),
                }
            }
            Action::Read {
                torrent,
                conn,
                block,
            } => {
                if self.nodes[i].behaviour == Behaviour::Silent {
                    return;
                }
                let off = block.piece.0 as usize * self.piece_len as usize + block.offset as usize;
                let mut data = self.nodes[i].storage[off..off + block.len as usize].to_vec();
                if matches!(
                    self.nodes[i].behaviour,
                    Behaviour::Corrupt | Behaviour::Rejoining
                ) {
                    data[0] ^= 0xff;
                }
                if let Some(j) = self.peer_node(i, conn) {
                    let from = self.nodes[i].addr;
                    *self.nodes[j].received_from.entry(from).or_insert(0) += data.len() as u64;
                    self.nodes[j]
                        .served_by
                        .insert((block.piece.0, block.offset), from);
                    self.nodes[j].pieces_received.insert(block.piece.0);
                }
                let n = &mut self.nodes[i];
                n.uploaded += data.len() as u64;
                n.session
                    .handle_read_done(now, torrent, conn, block, Ok(&data));
            }
            Action::Verify {
                torrent,
                piece,
                expected,
                block_digests,
                ..
            } => {
                let range = self.piece_range(piece.0);
                let data = &self.nodes[i].storage[range];
                let ok = Some(SmolSha1::digest(data)) == expected;
                // The host's part of finding who sent bad data: the digest of each
                // block, for a failed piece or one the session asks about.
                let digests: Vec<[u8; 20]> =
                    if self.nodes[i].block_digests && (!ok || block_digests) {
                        data.chunks(BLOCK_LEN as usize)
                            .map(SmolSha1::digest)
                            .collect()
                    } else {
                        Vec::new()
                    };
                if self.hashes.get(piece.0 as usize) != expected.as_ref() {
                    self.nodes[i]
                        .violations
                        .push(format!("verify of piece {} against a wrong hash", piece.0));
                }
                if ok && !self.piece_correct(i, piece.0) {
                    self.nodes[i]
                        .violations
                        .push(format!("piece {} hashed ok with wrong data", piece.0));
                }
                let n = &mut self.nodes[i];
                let served: BTreeSet<SocketAddr> = n
                    .served_by
                    .range((piece.0, 0)..=(piece.0, u32::MAX))
                    .map(|(_, a)| *a)
                    .collect();
                if !ok && served.len() > 1 {
                    n.mixed_failures += 1;
                } else if !ok {
                    n.single_failures_at.push(now);
                }
                if ok {
                    n.served_by.retain(|k, _| k.0 != piece.0);
                }
                n.session
                    .handle_verified_blocks(now, torrent, piece, ok, &digests);
            }
            Action::CheckData { torrent } => {
                // The check of what a magnet node already holds: every piece whose
                // bytes match the content.
                let n = self.hashes.len() as u32;
                let mut have = Bitfield::new(n);
                for p in 0..n {
                    let range = self.piece_range(p);
                    if SmolSha1::digest(&self.nodes[i].storage[range]) == self.hashes[p as usize] {
                        have.set(p);
                    }
                }
                let node = &mut self.nodes[i];
                node.checks += 1;
                node.session.handle_checked(now, torrent, &have);
            }
            Action::Announce {
                torrent,
                event,
                seq,
                ..
            } if self.tracker => {
                // The tracker: every other live node's address, and libtorrent's default
                // interval.
                let peers: Vec<SocketAddr> = self
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(j, n)| *j != i && n.alive)
                    .map(|(_, n)| n.addr)
                    .collect();
                // The simulated tracker is on the simulated network, not on any
                // node's machine.
                let tracker = std::net::IpAddr::V4(Ipv4Addr::new(10, 255, 255, 1));
                let n = &mut self.nodes[i];
                n.announces.push(now);
                n.session.handle_peers(
                    now,
                    torrent,
                    &peers,
                    btcore_core::session::PeerSource::Tracker(tracker),
                );
                if event != Some(AnnounceEvent::Stopped) {
                    n.session.handle_announced(
                        now,
                        torrent,
                        seq,
                        AnnounceOutcome::Answered {
                            interval: 1800,
                            min_interval: None,
                        },
                    );
                }
            }
            _ => {}
        }
    }

    /// Whether `conn` of node `i` is one of its uTP connections.
    fn is_utp(&self, i: usize, conn: ConnId) -> bool {
        self.nodes[i]
            .utp
            .as_ref()
            .is_some_and(|u| u.conns.contains_key(&conn))
    }

    /// The node at the other end of `conn` of node `i` (TCP or uTP).
    fn peer_node(&self, i: usize, conn: ConnId) -> Option<usize> {
        if let Some(&(j, _)) = self.links.get(&(i, conn)) {
            return Some(j);
        }
        let addr = self.nodes[i].utp.as_ref()?.conns.get(&conn)?.peer;
        self.nodes.iter().position(|n| n.addr == addr && n.alive)
    }

    /// Opens a uTP connection for the session's dial `conn` to `addr`.
    fn utp_connect(&mut self, i: usize, conn: ConnId, addr: SocketAddr) {
        let now = self.now;
        let n = &mut self.nodes[i];
        n.dials += 1;
        let opened = n
            .utp
            .as_mut()
            .and_then(|u| Some((u.socket.connect(now, addr).ok()?, u)));
        match opened {
            Some((handle, u)) => {
                u.conns.insert(
                    conn,
                    UtpConn {
                        handle,
                        peer: addr,
                        reported: false,
                        pending: Vec::new(),
                        blocked: false,
                    },
                );
            }
            // No socket, or it is full: the dial fails.
            None => {
                let at = now + n.link.latency;
                self.schedule(
                    at,
                    Ev::Connected {
                        node: i,
                        conn,
                        ok: false,
                    },
                );
            }
        }
    }

    /// The session of node `i` has bytes for its uTP connection `conn`.
    fn utp_send(&mut self, i: usize, conn: ConnId) {
        let now = self.now;
        let mut buf = std::mem::take(&mut self.scratch);
        let n = &mut self.nodes[i];
        if let Some(u) = n.utp.as_mut() {
            if let Some(c) = u.conns.get_mut(&conn) {
                if let Some(socket_conn) = u.socket.conn_mut(c.handle) {
                    utp_pump(&mut n.session, socket_conn, c, conn, now, &mut buf);
                }
            }
        }
        self.scratch = buf;
    }

    /// The session of node `i` closed its uTP connection `conn`: an open one sends
    /// its queued bytes and a FIN, one not open yet is dropped (a RESET tells the
    /// peer).
    fn utp_close(&mut self, i: usize, conn: ConnId, reason: CloseReason) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let Some(u) = n.utp.as_mut() else { return };
        let Some(c) = u.conns.remove(&conn) else {
            return;
        };
        if c.reported {
            n.closed.push((c.peer, reason));
            n.closed_at.push(now);
        }
        match u.socket.conn_mut(c.handle) {
            Some(sc) if sc.state() == UtpState::Connected => {
                sc.close();
                u.closing.push(c.handle);
            }
            Some(_) => {
                u.socket.remove(c.handle);
            }
            None => {}
        }
    }

    /// A datagram from `from` reaches node `to`.
    fn datagram_in(&mut self, to: usize, from: SocketAddr, data: &[u8]) {
        let now = self.now;
        if !self.nodes[to].alive {
            return;
        }
        let n = &mut self.nodes[to];
        let Some(u) = n.utp.as_mut() else {
            self.udp.no_socket += 1;
            if self.refuse_utp_with_reset {
                if let Some(reset) = reset_for(data) {
                    self.send_datagram(to, from, reset);
                }
            }
            return;
        };
        if let Incoming::Accepted { handle, .. } = u.socket.handle_datagram(now, from, data) {
            // An evicted connection is found gone by `utp_service`.
            let conn = n.session.handle_incoming_over(now, from, Transport::Utp);
            n.utp_accepted += 1;
            u.conns.insert(
                conn,
                UtpConn {
                    handle,
                    peer: from,
                    reported: true,
                    pending: Vec::new(),
                    blocked: false,
                },
            );
        }
    }

    /// Puts a datagram of node `from` on its uplink, through the link model.
    fn send_datagram(&mut self, from: usize, to: SocketAddr, data: Vec<u8>) {
        self.udp.sent += 1;
        let Some(j) = self.nodes.iter().position(|n| n.addr == to && n.alive) else {
            self.udp.unreachable += 1;
            return;
        };
        let now = self.now;
        if self.nodes[from].nat {
            self.nodes[from].nat_out.insert(to, now);
        }
        if self.nodes[j].nat {
            let from_addr = self.nodes[from].addr;
            let open = self.nodes[j]
                .nat_out
                .get(&from_addr)
                .is_some_and(|&t| now.since(t) < NAT_UDP_TIMEOUT);
            if !open {
                self.udp.nat_drops += 1;
                return;
            }
        }
        let (spec, link, addr) = {
            let n = &self.nodes[from];
            (n.udp, n.link, n.addr)
        };
        if spec.loss_ppm > 0 && self.rng.below(1_000_000) < u64::from(spec.loss_ppm) {
            self.udp.lost += 1;
            return;
        }
        let cap = if spec.queue > 0 {
            spec.queue
        } else {
            link.send_buffer.max(1)
        };
        if self.backlog(from) + data.len() as u64 > cap {
            self.udp.queue_drops += 1;
            return;
        }
        let now_us = self.now.as_millis() * 1000;
        let start = self.nodes[from].busy_until_us.max(now_us);
        let done = start + (data.len() as u64 * 1_000_000).div_ceil(link.up_bps.max(1));
        self.nodes[from].busy_until_us = done;
        let copies = if spec.dup_ppm > 0 && self.rng.below(1_000_000) < u64::from(spec.dup_ppm) {
            self.udp.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = match spec.jitter.as_millis() {
                0 => 0,
                j => self.rng.below(j + 1),
            };
            let at = Instant::from_millis(done.div_ceil(1000))
                + link.latency
                + Duration::from_millis(jitter);
            self.schedule(
                at,
                Ev::Datagram {
                    to: j,
                    from: addr,
                    data: data.clone(),
                },
            );
        }
    }

    /// Moves node `i`'s uTP connections along: reports dials that opened or failed,
    /// reads what its session wants, pumps what it has to send where there is room,
    /// reports closes, finishes the closes it asked for, and sends the socket's
    /// datagrams. Returns whether the session was told anything.
    fn utp_service(&mut self, i: usize) -> bool {
        let now = self.now;
        let mut progress = false;
        let mut buf = std::mem::take(&mut self.scratch);
        let mut out: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        let n = &mut self.nodes[i];
        if let (true, Some(u)) = (n.alive, n.utp.as_mut()) {
            let wake = (u.socket.config().send_buffer as usize / 4).clamp(1, 16 * 1024);
            let ids: Vec<ConnId> = u.conns.keys().copied().collect();
            for id in ids {
                let Some(c) = u.conns.get_mut(&id) else {
                    continue;
                };
                let h = c.handle;
                let Some(sc) = u.socket.conn_mut(h) else {
                    // Evicted by the socket.
                    let failed_dial = !c.reported;
                    u.conns.remove(&id);
                    if failed_dial {
                        n.session.handle_connect_failed(now, id);
                    } else {
                        n.session.handle_disconnected(now, id);
                    }
                    progress = true;
                    continue;
                };
                if !c.reported {
                    match sc.state() {
                        UtpState::SynSent => continue,
                        UtpState::Closed(_) => {
                            u.socket.remove(h);
                            u.conns.remove(&id);
                            n.session.handle_connect_failed(now, id);
                            progress = true;
                            continue;
                        }
                        UtpState::Connected | UtpState::Closing => {
                            c.reported = true;
                            n.session.handle_connected(now, id);
                            progress = true;
                        }
                    }
                }
                // Read while the session wants to (and the disk keeps up).
                while sc.readable() > 0
                    && n.session.wants_recv(id)
                    && !(n.write_latency.is_some() && n.session.disk_backlogged())
                {
                    let k = sc.read(&mut buf[..16 * 1024]);
                    *n.bytes_from.entry(c.peer).or_insert(0) += k as u64;
                    n.session.handle_recv(now, id, &buf[..k]);
                    progress = true;
                }
                if sc.readable() > 0 {
                    n.utp_reads_deferred += 1;
                }
                if !c.pending.is_empty() || (c.blocked && sc.writable() >= wake) {
                    progress |= utp_pump(&mut n.session, sc, c, id, now, &mut buf);
                }
                // The peer closed (its FIN read to the end), or the connection ended.
                match sc.state() {
                    UtpState::Closed(_) => {
                        u.socket.remove(h);
                    }
                    _ if sc.is_eof() => {
                        sc.close();
                        u.closing.push(h);
                    }
                    _ => continue,
                }
                u.conns.remove(&id);
                n.session.handle_disconnected(now, id);
                progress = true;
            }
            // Closes under way: what still arrives is read and dropped; a connection
            // is removed once over.
            let socket = &mut u.socket;
            u.closing.retain(|&h| {
                let Some(sc) = socket.conn_mut(h) else {
                    return false;
                };
                while sc.read(&mut buf) > 0 {}
                if matches!(sc.state(), UtpState::Closed(_)) {
                    socket.remove(h);
                    return false;
                }
                true
            });
            while let Some((to, k)) = u.socket.poll_transmit(now, &mut buf) {
                out.push((to, buf[..k].to_vec()));
            }
        }
        self.scratch = buf;
        for (to, d) in out {
            self.send_datagram(i, to, d);
        }
        progress
    }

    /// Whether node `i` holds the exact content.
    pub fn has_correct_data(&self, i: usize) -> bool {
        self.nodes[i].storage == self.content
    }

    /// The pieces node `i` reported verified whose storage does not hash to the
    /// torrent's piece hash (must be empty).
    pub fn wrongly_verified(&self, i: usize) -> Vec<u32> {
        self.nodes[i]
            .verified
            .iter()
            .copied()
            .filter(|&p| {
                self.hashes.get(p as usize)
                    != Some(&SmolSha1::digest(
                        &self.nodes[i].storage[self.piece_range(p)],
                    ))
            })
            .collect()
    }

    /// The piece hashes of the torrent.
    pub fn piece_hashes(&self) -> &[[u8; 20]] {
        &self.hashes
    }
}

/// Moves bytes of the session's connection `id` into the uTP connection `sc` while it
/// takes them; what it does not take waits in `c.pending`. Returns whether any moved.
fn utp_pump(
    session: &mut Session,
    sc: &mut Connection,
    c: &mut UtpConn,
    id: ConnId,
    now: Instant,
    buf: &mut [u8],
) -> bool {
    let mut moved = false;
    if !c.pending.is_empty() {
        let k = sc.write(&c.pending);
        c.pending.drain(..k);
        moved |= k > 0;
        if !c.pending.is_empty() {
            c.blocked = true;
            return moved;
        }
    }
    loop {
        let room = sc.writable().min(buf.len());
        if room == 0 {
            c.blocked = true;
            return moved;
        }
        let k = session.poll_transmit(now, id, &mut buf[..room]);
        if k == 0 {
            c.blocked = false;
            return moved;
        }
        moved = true;
        let w = sc.write(&buf[..k]);
        if w < k {
            c.pending.extend_from_slice(&buf[w..k]);
            c.blocked = true;
            return moved;
        }
    }
}

/// The RESET a node without uTP answers a uTP packet with (none for a RESET).
fn reset_for(datagram: &[u8]) -> Option<Vec<u8>> {
    let p = packet::decode(datagram).ok()?;
    if p.header.ty == PacketType::Reset {
        return None;
    }
    let h = Header {
        ty: PacketType::Reset,
        conn_id: p.header.conn_id,
        timestamp_us: 0,
        timestamp_diff_us: 0,
        wnd_size: 0,
        seq_nr: 0,
        ack_nr: p.header.seq_nr,
    };
    let mut buf = [0u8; 64];
    let n = packet::encode(&h, None, &[], &mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// An extended message (BEP 10): length, id 20, the extended id, the payload.
fn frame_ext(ext_id: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = ((payload.len() + 2) as u32).to_be_bytes().to_vec();
    m.push(20);
    m.push(ext_id);
    m.extend_from_slice(payload);
    m
}

/// A single-file `.torrent` for `content`.
pub fn make_torrent(content: &[u8], piece_len: u32) -> Vec<u8> {
    use btcore_core::bencode::Encoder;
    let mut pieces = Vec::new();
    for c in content.chunks(piece_len as usize) {
        pieces.extend_from_slice(&SmolSha1::digest(c));
    }
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out);
    let r = (|| {
        e.dict()?;
        e.key_bytes(b"announce", b"http://tracker.invalid/announce")?;
        e.bytes(b"info")?;
        e.dict()?;
        e.key_int(b"length", content.len() as i64)?;
        e.key_bytes(b"name", b"sim.bin")?;
        e.key_int(b"piece length", i64::from(piece_len))?;
        e.key_bytes(b"pieces", &pieces)?;
        e.end()?;
        e.end()
    })();
    r.expect("vec");
    let mut t = Vec::new();
    assert!(Metainfo::parse_vec(&out, &mut t, &Limits::default()).is_ok());
    out
}

/// A multi-file `.torrent` for `content`: files of `lens` bytes named `f0`, `f1`...
/// under the folder `sim`.
pub fn make_multi_torrent(content: &[u8], piece_len: u32, lens: &[u64]) -> Vec<u8> {
    use btcore_core::bencode::Encoder;
    assert_eq!(lens.iter().sum::<u64>(), content.len() as u64);
    let mut pieces = Vec::new();
    for c in content.chunks(piece_len as usize) {
        pieces.extend_from_slice(&SmolSha1::digest(c));
    }
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out);
    let r = (|| {
        e.dict()?;
        e.key_bytes(b"announce", b"http://tracker.invalid/announce")?;
        e.bytes(b"info")?;
        e.dict()?;
        e.bytes(b"files")?;
        e.list()?;
        for (i, len) in lens.iter().enumerate() {
            e.dict()?;
            e.key_int(b"length", *len as i64)?;
            e.bytes(b"path")?;
            e.list()?;
            e.bytes(format!("f{i}").as_bytes())?;
            e.end()?;
            e.end()?;
        }
        e.end()?;
        e.key_bytes(b"name", b"sim")?;
        e.key_int(b"piece length", i64::from(piece_len))?;
        e.key_bytes(b"pieces", &pieces)?;
        e.end()?;
        e.end()
    })();
    r.expect("vec");
    let mut t = Vec::new();
    assert!(Metainfo::parse_vec(&out, &mut t, &Limits::default()).is_ok());
    out
}

/// Deterministic pseudo-random content.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.next_u32() as u8).collect()
}
