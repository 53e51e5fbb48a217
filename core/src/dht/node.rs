//! The [`Dht`] state machine; see the [module docs](super) for the poll order.

use crate::bencode::Token;
use crate::ids::InfoHash;
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

use super::addr;
use super::bep42::{self, IpVoter};
use super::krpc::{
    self, Body, CompactNodes, ErrorMsg, Message, Method, Query, Response, Values, Want,
};
use super::krpc::{NodeId, NodeInfo};
use super::limit::{ByteBudget, SourceLimiter};
use super::lookup::{Lookup, LookupId, LookupKind};
use super::store::{PeerStore, StoreLimits, Tokens};
use super::table::{self, Contact, Insert, RoutingTable, TableConfig};

/// The most bootstrap nodes [`Dht::add_bootstrap`] keeps.
pub const MAX_BOOTSTRAP: usize = 64;

/// Settings of a [`Dht`]; [`DhtConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct DhtConfig {
    /// Our node id (from the host's randomness), in both DHTs (BEP 32) until BEP 42
    /// derives one per family from our external address of that family.
    pub id: NodeId,
    /// Key for write tokens (from the host's randomness; never sent).
    pub token_key: [u8; 20],
    /// Addresses asked first, and again while the routing table holds fewer than k
    /// nodes (after 10 s, then backing off to every 2 minutes).
    pub bootstrap: Vec<SocketAddr>,
    /// Routing table settings (k = 8, one entry per host: IPv4 address, IPv6 /64),
    /// for each of the two tables (IPv4 and IPv6 nodes, BEP 32).
    pub table: TableConfig,
    /// One lookup candidate per subnet (IPv4 /24, IPv6 /48), loopback exempt
    /// (libtorrent's `dht_restrict_search_ips`). Default on.
    pub restrict_search_ips: bool,
    /// Queries in flight per lookup (BEP 5 practice: 3).
    pub alpha: usize,
    /// How long a query waits for its answer. Default 2 s.
    pub query_timeout: Duration,
    /// Lookups running at once, a lookup in both DHTs (IPv4 and IPv6) counting
    /// twice; more are refused. Default 32.
    pub max_lookups: usize,
    /// Queries in flight over all. Default 256.
    pub max_outstanding: usize,
    /// Datagrams queued for sending; more are dropped. Default 512.
    pub max_transmit_queue: usize,
    /// Events queued for the host; more are dropped. Default 1024.
    pub max_events: usize,
    /// Queries answered per source per second, a source being an IPv4 /24 or an
    /// IPv6 /64 (a loopback address: each `IP:port`), with a second's worth at
    /// once; more are dropped unanswered. Counted in a fixed table that rotating
    /// sources cannot flush (see [`DhtConfig::rate_limit_slots`]). Default 20.
    pub max_queries_per_source_per_sec: u32,
    /// Cells in each of the two rows of the query rate table (8 bytes each),
    /// indexed by a keyed hash of the source: more cells, fewer honest sources
    /// sharing one with a flooder. Default 2,048 (32 KiB).
    pub rate_limit_slots: usize,
    /// Bytes a second of answers, and of pings of queriers, to sources that never
    /// answered a query of ours from their address (with three seconds' worth of
    /// burst); past it their queries go unanswered. A flood from spoofed sources
    /// costs at most this much upload. Default 16,384.
    pub unconfirmed_reply_bytes_per_sec: u32,
    /// Most bytes one query makes the node send (its answer and any ping of the
    /// querier), as a multiple of the query's own size; answers are trimmed to it
    /// (fewer nodes or values). Loopback sources exempt. Default 4.
    pub max_reply_ratio: u32,
    /// Peers in one `get_peers` answer (fewer when the answer would pass
    /// [`DhtConfig::max_reply_ratio`]). Default 32.
    pub max_values_per_response: usize,
    /// Announce storage limits.
    pub store: StoreLimits,
    /// How often maintenance runs (bucket refresh, pings, expiry). Default 5 s.
    pub maintenance_interval: Duration,
    /// A bucket unchanged this long is refreshed (BEP 5: 15 minutes).
    pub refresh_after: Duration,
    /// BEP 42: how many voters, each from a subnet of its own (IPv4 /24, IPv6 /48),
    /// must report the same external address of ours (the `ip` of their answers to
    /// our queries) before we believe it and, if our id does not match it, take an
    /// id derived from it. Default 4: one party, or a few, cannot move our id.
    pub external_ip_votes: usize,
}

impl DhtConfig {
    /// Defaults around an id and a token key, both from the host's randomness.
    pub fn new(id: [u8; 20], token_key: [u8; 20]) -> Self {
        Self {
            id: NodeId(id),
            token_key,
            bootstrap: Vec::new(),
            table: TableConfig::default(),
            restrict_search_ips: true,
            alpha: 3,
            query_timeout: Duration::from_secs(2),
            max_lookups: 32,
            max_outstanding: 256,
            max_transmit_queue: 512,
            max_events: 1024,
            max_queries_per_source_per_sec: 20,
            rate_limit_slots: 2048,
            unconfirmed_reply_bytes_per_sec: 16_384,
            max_reply_ratio: 4,
            max_values_per_response: 32,
            store: StoreLimits::default(),
            maintenance_interval: Duration::from_secs(5),
            refresh_after: table::GOOD_FOR,
            external_ip_votes: 4,
        }
    }

    /// The low-memory profile: fewer lookups, queries in flight and queued
    /// datagrams and events, a smaller query rate table (8 KiB) and byte budget
    /// (8,192 bytes a second), and a smaller peer store
    /// ([`StoreLimits::low_memory`]).
    pub fn low_memory(id: [u8; 20], token_key: [u8; 20]) -> Self {
        Self {
            max_lookups: 8,
            max_outstanding: 64,
            max_transmit_queue: 128,
            max_events: 256,
            rate_limit_slots: 512,
            unconfirmed_reply_bytes_per_sec: 8_192,
            store: StoreLimits::low_memory(),
            ..Self::new(id, token_key)
        }
    }
}

/// What a [`Dht`] reports to the host.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DhtEvent {
    /// Peers found by a `get_peers` or announce lookup (may come several times).
    Peers {
        /// The lookup.
        lookup: LookupId,
        /// The torrent.
        info_hash: InfoHash,
        /// Peers from one response (not deduplicated across responses).
        peers: Vec<SocketAddr>,
    },
    /// A lookup finished.
    LookupDone {
        /// The lookup.
        lookup: LookupId,
        /// What was looked up.
        target: NodeId,
        /// What for.
        kind: LookupKind,
        /// The closest nodes that answered, closest first (at most k of each
        /// family: a lookup runs in the IPv4 and the IPv6 DHT when the node has both).
        closest: Vec<NodeInfo>,
        /// Peers reported (with repeats).
        peers: usize,
        /// `announce_peer` queries sent.
        announced: usize,
    },
}

/// Counters for a `btcore dht` display.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DhtStats {
    /// Nodes in the routing tables (both families).
    pub nodes: usize,
    /// Of which in the IPv6 table (BEP 32).
    pub nodes6: usize,
    /// Of which good.
    pub good_nodes: usize,
    /// Replacement cache entries.
    pub replacements: usize,
    /// Buckets of the IPv4 table, and of the IPv6 one when it holds nodes.
    pub buckets: usize,
    /// Lookups running.
    pub lookups_running: usize,
    /// Candidates held by the running lookups.
    pub lookup_candidates: usize,
    /// Lookups finished.
    pub lookups_done: u64,
    /// Queries sent.
    pub queries_sent: u64,
    /// Queries received (answered or not).
    pub queries_received: u64,
    /// Responses matched to a query of ours.
    pub responses_received: u64,
    /// Queries that timed out.
    pub timeouts: u64,
    /// Datagrams refused (malformed, unsolicited, rate-limited, over the byte
    /// budget, wrong sender).
    pub dropped: u64,
    /// Of which queries over their source's rate.
    pub rate_limited: u64,
    /// Of which queries from unconfirmed sources left unanswered for the byte budget.
    pub over_budget: u64,
    /// Peers stored for others.
    pub stored_peers: usize,
    /// Torrents they are stored for.
    pub stored_torrents: usize,
    /// Our queries waiting for an answer.
    pub queries_in_flight: usize,
    /// Datagrams waiting for [`Dht::poll_transmit`].
    pub queued_datagrams: usize,
    /// Events waiting for [`Dht::poll_event`].
    pub queued_events: usize,
    /// Announces refused for a bad token.
    pub bad_tokens: u64,
}

#[derive(Clone, Copy, Debug)]
enum Purpose {
    /// A lookup's query; `seed` when sent to an address without a known id.
    Lookup { lookup: LookupId, seed: bool },
    /// A liveness check.
    Ping,
    /// An `announce_peer`.
    Announce,
}

#[derive(Clone, Copy, Debug)]
struct Outstanding {
    tid: u16,
    addr: SocketAddr,
    id: Option<NodeId>,
    deadline: Instant,
    purpose: Purpose,
}

/// The DHT node state machine. See the [module docs](super) for the poll order.
#[derive(Debug)]
pub struct Dht {
    cfg: DhtConfig,
    rng: Rng,
    /// Our ids, [IPv4 DHT, IPv6 DHT].
    ids: [NodeId; 2],
    /// The routing tables, [IPv4 nodes, IPv6 nodes] (BEP 32: two DHTs).
    tables: [RoutingTable; 2],
    lookups: Vec<Lookup>,
    /// What the first half of a lookup in both DHTs found, until the second ends:
    /// (lookup, closest, peers, announced).
    halves: Vec<(LookupId, Vec<NodeInfo>, usize, usize)>,
    outstanding: Vec<Outstanding>,
    next_tid: u16,
    next_lookup: u64,
    transmit: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<DhtEvent>,
    store: PeerStore,
    tokens: Tokens,
    /// Queries per source.
    limiter: SourceLimiter,
    /// Bytes sent to unconfirmed sources.
    budget: ByteBudget,
    /// Length of our `ping` query (what pinging a querier costs).
    ping_len: usize,
    next_maintenance: Instant,
    /// When a thin table (fewer than k nodes) is next looked up again, and the
    /// wait after that (doubling from [`THIN_RETRY_FIRST`] to [`THIN_RETRY_MAX`]).
    thin_retry: [(Instant, Duration); 2],
    stats: DhtStats,
    /// BEP 42: our external address as answers report it, [IPv4, IPv6].
    voters: [IpVoter; 2],
}

/// First wait before a table with fewer than k nodes looks up our id again.
const THIN_RETRY_FIRST: Duration = Duration::from_secs(10);
/// Longest wait between those lookups.
const THIN_RETRY_MAX: Duration = Duration::from_secs(120);

impl Dht {
    /// A node with an empty routing table; call [`Dht::bootstrap`] or
    /// [`Dht::load_nodes`] next.
    pub fn new(cfg: DhtConfig, now: Instant, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let next_tid = rng.next_u32() as u16;
        // The rate table's hash key, apart from the token secrets.
        let mut k = [0u8; 30];
        k[..20].copy_from_slice(&cfg.token_key);
        k[20..].copy_from_slice(b"query rate");
        let mut key = [0u8; 16];
        key.copy_from_slice(&crate::hash::sha1(&k)[..16]);
        let ping = Message {
            tid: &[0, 0],
            version: Some(krpc::VERSION),
            ip: None,
            body: Body::Query(Query {
                id: cfg.id,
                method: Method::Ping,
                want: Want::default(),
                read_only: false,
            }),
        };
        let ping_len = ping.encode(&mut [0u8; 128]).unwrap_or(128);
        Self {
            limiter: SourceLimiter::new(
                key,
                cfg.rate_limit_slots,
                cfg.max_queries_per_source_per_sec,
            ),
            budget: ByteBudget::new(cfg.unconfirmed_reply_bytes_per_sec, now),
            ping_len,
            ids: [cfg.id; 2],
            tables: [
                RoutingTable::new(cfg.id, cfg.table, now),
                RoutingTable::new(cfg.id, cfg.table, now),
            ],
            halves: Vec::new(),
            store: PeerStore::new(cfg.store),
            tokens: Tokens::new(cfg.token_key, now),
            rng,
            lookups: Vec::new(),
            outstanding: Vec::new(),
            next_tid,
            next_lookup: 1,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            next_maintenance: now + cfg.maintenance_interval,
            thin_retry: [(now + THIN_RETRY_FIRST, THIN_RETRY_FIRST); 2],
            stats: DhtStats::default(),
            voters: [
                IpVoter::new(cfg.external_ip_votes),
                IpVoter::new(cfg.external_ip_votes),
            ],
            cfg,
        }
    }

    // ---- getters ----

    /// Our node id in the IPv4 DHT.
    pub fn id(&self) -> NodeId {
        self.ids[0]
    }
    /// Our node id in the DHT of one family (IPv6 when `v6`).
    pub fn id_of(&self, v6: bool) -> NodeId {
        self.ids[usize::from(v6)]
    }
    /// Counters and table figures.
    pub fn stats(&self, now: Instant) -> DhtStats {
        DhtStats {
            nodes: self.tables.iter().map(RoutingTable::len).sum(),
            nodes6: self.tables[1].len(),
            good_nodes: self.tables.iter().map(|t| t.good_count(now)).sum(),
            replacements: self.tables.iter().map(|t| t.replacement_count()).sum(),
            // The IPv6 table's when it holds nodes.
            buckets: self.tables[0].bucket_count()
                + if self.tables[1].is_empty() {
                    0
                } else {
                    self.tables[1].bucket_count()
                },
            lookups_running: self.lookups.len(),
            lookup_candidates: self.lookups.iter().map(Lookup::candidates).sum(),
            stored_peers: self.store.len(),
            stored_torrents: self.store.hash_count(),
            queries_in_flight: self.outstanding.len(),
            queued_datagrams: self.transmit.len(),
            queued_events: self.events.len(),
            ..self.stats
        }
    }
    /// The routing table of IPv4 nodes (read-only).
    pub fn table(&self) -> &RoutingTable {
        &self.tables[0]
    }
    /// The routing table of IPv6 nodes (read-only; BEP 32).
    pub fn table6(&self) -> &RoutingTable {
        &self.tables[1]
    }
    /// The routing table of `addr`'s family (read-only).
    pub fn table_of(&self, addr: &SocketAddr) -> &RoutingTable {
        &self.tables[fam(addr.ip())]
    }
    /// The peers stored for others (read-only).
    pub fn store(&self) -> &PeerStore {
        &self.store
    }
    /// The settings in force.
    pub fn config(&self) -> &DhtConfig {
        &self.cfg
    }
    /// Nodes worth saving for the next start: every non-bad node of both tables.
    pub fn save_nodes(&self, now: Instant) -> Vec<NodeInfo> {
        let mut v = self.tables[0].closest(&self.ids[0], usize::MAX, now, None);
        v.extend(self.tables[1].closest(&self.ids[1], usize::MAX, now, None));
        v
    }
    /// Compact form of [`Dht::save_nodes`]: 26 bytes per IPv4 node, 38 per IPv6.
    pub fn save_nodes_compact(&self, now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        let mut b = [0u8; krpc::NODE6_LEN];
        for n in self.save_nodes(now) {
            if let Some(len) = n.write_compact(&mut b) {
                out.extend_from_slice(&b[..len]);
            }
        }
        out
    }

    /// Our external address of one family (IPv6 when `v6`), once believed: set by
    /// the host ([`Dht::set_external_ip`]) or voted by the nodes that answer us.
    pub fn external_ip(&self, v6: bool) -> Option<IpAddr> {
        self.voters[usize::from(v6)].decided()
    }

    // ---- commands ----

    /// Our external address, from a source the host trusts (its router's answer to
    /// a port mapping, a setting). BEP 42: if our id does not match it, the node
    /// takes an id derived from it (see [`Dht::external_ip`]).
    pub fn set_external_ip(&mut self, now: Instant, ip: IpAddr) {
        let ip = ip.to_canonical();
        self.voters[usize::from(ip.is_ipv6())].set(ip);
        self.adopt_external_ip(now, ip);
        self.drive(now);
    }

    /// BEP 42: when `ip`, our external address, does not allow our id, takes an id
    /// derived from it (random bits from the node's generator): the routing table
    /// is rebuilt around it, and a lookup of the new id fills the buckets near it.
    fn adopt_external_ip(&mut self, now: Instant, ip: IpAddr) {
        let f = fam(ip);
        if bep42::id_matches(&self.ids[f], ip) {
            return;
        }
        let mut random = [0u8; 20];
        for c in random.chunks_mut(8) {
            c.copy_from_slice(&self.rng.next_u64().to_be_bytes()[..c.len()]);
        }
        let id = bep42::node_id(ip, random);
        self.ids[f] = id;
        self.tables[f] = self.tables[f].rebuilt(id, now);
        self.thin_retry[f] = (now + THIN_RETRY_FIRST, THIN_RETRY_FIRST);
        let _ = self.bootstrap_family(now, f);
    }

    /// Adds saved nodes as lookup seeds: they are pinged and enter the table when
    /// they answer.
    pub fn load_nodes(&mut self, now: Instant, nodes: &[NodeInfo]) {
        for n in nodes.iter().take(self.cfg.table.k * 160) {
            if !self.ids.contains(&n.id) {
                self.send_query(now, n.addr, Some(n.id), Method::Ping, Purpose::Ping);
            }
        }
    }

    /// Adds bootstrap nodes learnt after the node started (the host resolves their
    /// names off its loop), at most [`MAX_BOOTSTRAP`] in all, repeats dropped; while
    /// the table holds fewer than k nodes, bootstraps through them at once.
    pub fn add_bootstrap(&mut self, now: Instant, nodes: &[SocketAddr]) {
        let before = self.cfg.bootstrap.len();
        for a in nodes {
            if self.cfg.bootstrap.len() >= MAX_BOOTSTRAP {
                break;
            }
            if !self.cfg.bootstrap.contains(a) {
                self.cfg.bootstrap.push(*a);
            }
        }
        let k = self.cfg.table.k;
        if self.cfg.bootstrap.len() > before && self.tables.iter().any(|t| t.len() < k) {
            self.bootstrap(now);
        }
    }

    /// Looks up our own id from the bootstrap nodes and the table, which fills the
    /// table (BEP 5 "Bootstrapping"): in each DHT (IPv4, IPv6; BEP 32) that has
    /// nodes or bootstrap addresses, apart; the IPv4 one when neither has. Returns
    /// the first lookup started.
    pub fn bootstrap(&mut self, now: Instant) -> Option<LookupId> {
        let active = [self.active(0), self.active(1)];
        let mut first = None;
        for f in 0..2 {
            if active[f] || (f == 0 && !active[1]) {
                let l = self.bootstrap_family(now, f);
                first = first.or(l);
            }
        }
        first
    }

    /// Whether the DHT of family `f` (1: IPv6) is in use: its table holds nodes, or
    /// bootstrap addresses of that family are known.
    fn active(&self, f: usize) -> bool {
        !self.tables[f].is_empty() || self.cfg.bootstrap.iter().any(|a| fam(a.ip()) == f)
    }

    /// The bootstrap lookup of one DHT: our id there, from its bootstrap addresses
    /// and its table.
    fn bootstrap_family(&mut self, now: Instant, f: usize) -> Option<LookupId> {
        let id = self.ids[f];
        let mut targets = [None; 2];
        targets[f] = Some(id);
        let lid = self.start_lookup_in(now, targets, LookupKind::FindNode)?;
        let seeds: Vec<SocketAddr> = self
            .cfg
            .bootstrap
            .iter()
            .filter(|a| fam(a.ip()) == f)
            .copied()
            .collect();
        for addr in seeds {
            let purpose = Purpose::Lookup {
                lookup: lid,
                seed: true,
            };
            if self.send_query(now, addr, None, Method::FindNode { target: id }, purpose) {
                if let Some(l) = self.lookups.iter_mut().find(|l| l.id == lid) {
                    l.seed_sent();
                }
            }
        }
        self.drive(now);
        Some(lid)
    }

    /// Finds the nodes closest to `target`. `None` when too many lookups run.
    pub fn find_node(&mut self, now: Instant, target: NodeId) -> Option<LookupId> {
        let lid = self.start_lookup(now, target, LookupKind::FindNode)?;
        self.drive(now);
        Some(lid)
    }

    /// Finds peers for `info_hash`: [`DhtEvent::Peers`] as they come, then
    /// [`DhtEvent::LookupDone`].
    pub fn get_peers(&mut self, now: Instant, info_hash: InfoHash) -> Option<LookupId> {
        let lid = self.start_lookup(now, info_hash.into(), LookupKind::GetPeers)?;
        self.drive(now);
        Some(lid)
    }

    /// A `get_peers` lookup, then `announce_peer` to the closest nodes that gave a
    /// token (BEP 5). `implied_port` asks them to use our UDP source port.
    pub fn announce(
        &mut self,
        now: Instant,
        info_hash: InfoHash,
        port: u16,
        implied_port: bool,
    ) -> Option<LookupId> {
        let kind = LookupKind::Announce { port, implied_port };
        let lid = self.start_lookup(now, info_hash.into(), kind)?;
        self.drive(now);
        Some(lid)
    }

    /// A lookup of `target` in each DHT in use (the IPv4 one when neither is).
    fn start_lookup(&mut self, now: Instant, target: NodeId, kind: LookupKind) -> Option<LookupId> {
        let active = [self.active(0), self.active(1)];
        let targets = if active[1] {
            [active[0].then_some(target), Some(target)]
        } else {
            [Some(target), None]
        };
        self.start_lookup_in(now, targets, kind)
    }

    /// A lookup under one id in the DHT of each family with a target, [IPv4, IPv6].
    fn start_lookup_in(
        &mut self,
        now: Instant,
        targets: [Option<NodeId>; 2],
        kind: LookupKind,
    ) -> Option<LookupId> {
        let needed = targets.iter().flatten().count();
        if self.lookups.len() + needed > self.cfg.max_lookups || needed == 0 {
            return None;
        }
        let lid = LookupId(self.next_lookup);
        self.next_lookup += 1;
        let k = self.cfg.table.k;
        for (f, target) in targets.into_iter().enumerate() {
            let Some(target) = target else { continue };
            let mut l = Lookup::new(lid, target, kind, k, self.cfg.alpha)
                .restrict_ips(self.cfg.restrict_search_ips);
            l.v6 = f == 1;
            for n in self.tables[f].closest(&target, k * 2, now, None) {
                l.add(n);
            }
            self.lookups.push(l);
        }
        Some(lid)
    }

    // ---- input ----

    /// A datagram from `from`. Malformed, unsolicited or abusive datagrams are
    /// dropped (and counted); nothing from the network can panic or grow memory
    /// beyond the configured caps.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let mut tokens = [Token::default(); krpc::TOKENS_NEEDED];
        let Ok(msg) = krpc::parse(bytes, &mut tokens) else {
            self.stats.dropped += 1;
            return;
        };
        match msg.body {
            Body::Query(q) => self.on_query(now, from, msg.tid, &q, bytes.len()),
            Body::Response(r) => self.on_response(now, from, msg.tid, &r, msg.ip),
            Body::Error(e) => self.on_error(now, from, msg.tid, &e),
        }
        self.drive(now);
    }

    /// A query of `len` bytes. In order: the source's rate; our answer, trimmed to
    /// [`DhtConfig::max_reply_ratio`] times `len`; for a source we have not
    /// confirmed, the byte budget; then the querier as a routing-table candidate,
    /// pinged only if the ping fits in what is left of the ratio and the budget.
    fn on_query(&mut self, now: Instant, from: SocketAddr, tid: &[u8], q: &Query<'_>, len: usize) {
        self.stats.queries_received += 1;
        if from.port() == 0 || !self.limiter.allow(now, &from) {
            self.stats.dropped += 1;
            self.stats.rate_limited += 1;
            return;
        }
        let exempt = addr::exempt(from.ip());
        // Every byte this query makes us send to its (maybe forged) source.
        let allowance = if exempt {
            usize::MAX
        } else {
            len.saturating_mul(self.cfg.max_reply_ratio as usize)
        };
        let f = fam(from.ip());
        let confirmed = exempt || self.tables[f].is_confirmed(&from);
        // When the querier is to be pinged (a candidate for a bucket with room), the
        // answer leaves room for the ping: an IPv6 answer of 8 nodes would take it
        // all, and queriers would never be checked and enter the table.
        let info = NodeInfo {
            id: q.id,
            addr: from,
        };
        let reserve = if !q.read_only
            && self.outstanding.len() < self.cfg.max_outstanding / 2
            && self.tables[f].would_ping(&info, now)
        {
            self.ping_len
        } else {
            0
        };
        let mut buf = [0u8; krpc::MAX_DATAGRAM];
        let room = allowance.saturating_sub(reserve);
        let Some(n) = self.answer(now, from, tid, q, room, &mut buf) else {
            self.stats.dropped += 1;
            return;
        };
        if !confirmed && !self.budget.take(now, n) {
            self.stats.dropped += 1;
            self.stats.over_budget += 1;
            return;
        }
        if self.transmit.len() < self.cfg.max_transmit_queue {
            self.transmit.push_back((from, buf[..n].to_vec()));
        }
        if q.read_only {
            return;
        }
        // The source address may be forged: the querier is only a candidate,
        // pinged before it can enter a bucket (see the table's docs). Pings of
        // queriers take at most half of the queries in flight, so that a flood of
        // them cannot hold back our own lookups.
        let ping = match self.tables[f].heard_from(info, now, Contact::Queried) {
            Insert::Full { ping: Some(p) } | Insert::Pending { ping: Some(p) } => p,
            _ => return,
        };
        if self.outstanding.len() >= self.cfg.max_outstanding / 2 {
            return;
        }
        if ping.addr == from {
            let fits = allowance.saturating_sub(n) >= self.ping_len;
            if !fits || !(confirmed || self.budget.take(now, self.ping_len)) {
                // Not now: it stays a candidate, offered again on its next query.
                return;
            }
        }
        // Otherwise a questionable node of ours, pinged at most once a minute.
        self.ping(now, ping);
    }

    /// Our answer to `q` from `from`, encoded into `buf` in at most `allowance`
    /// bytes: returns its length (`None` if it cannot fit). Does what the query asks
    /// (stores an announce).
    ///
    /// BEP 5: `get_peers` is answered with `values` when we store peers of the
    /// querier's family for the torrent, else with the closest `nodes`; BEP 32:
    /// nodes of the families in `want` (without it, the querier's family), the
    /// querier's family first. What does not fit in `allowance` is left out.
    fn answer(
        &mut self,
        now: Instant,
        from: SocketAddr,
        tid: &[u8],
        q: &Query<'_>,
        allowance: usize,
        buf: &mut [u8; krpc::MAX_DATAGRAM],
    ) -> Option<usize> {
        let limit = allowance.min(buf.len());
        let error = |code: i64, text: &'static [u8]| {
            Body::Error(ErrorMsg {
                code,
                message: text,
            })
        };
        let v6 = from.is_ipv6();
        let token;
        let peers;
        let mut n4 = [0u8; krpc::NODE4_LEN * 8];
        let mut n6 = [0u8; krpc::NODE6_LEN * 8];
        let mut resp = Response {
            id: self.ids[fam(from.ip())],
            nodes: CompactNodes::default(),
            nodes6: CompactNodes::default(),
            values: Values::None,
            token: None,
        };
        let msg = |body| Message {
            tid,
            version: Some(krpc::VERSION),
            ip: Some(from),
            body,
        };
        let body = match q.method {
            Method::Ping => Body::Response(resp),
            Method::FindNode { target: t } | Method::GetPeers { info_hash: t } => {
                let get_peers = matches!(q.method, Method::GetPeers { .. });
                if get_peers {
                    token = self.tokens.issue(from.ip());
                    resp.token = Some(&token);
                }
                let base = msg(Body::Response(resp)).encode(&mut buf[..limit]).ok()?;
                let mut room = limit - base;
                peers = if get_peers {
                    let max = self.cfg.max_values_per_response;
                    self.store.get(&t, now, max, v6)
                } else {
                    Vec::new()
                };
                if !peers.is_empty() {
                    // "6:values" "l" ... "e", each peer "6:" + 6 or "18:" + 18.
                    let each = if v6 { 21 } else { 8 };
                    let n = peers.len().min(room.saturating_sub(10) / each);
                    if n > 0 {
                        resp.values = Values::Addrs(&peers[..n]);
                    }
                } else {
                    let want = if q.want.n4 || q.want.n6 {
                        q.want
                    } else {
                        Want { n4: !v6, n6: v6 }
                    };
                    // Bytes of nodes written: [IPv4, IPv6].
                    let mut lens = [0usize; 2];
                    for fam6 in [v6, !v6] {
                        if !(if fam6 { want.n6 } else { want.n4 }) {
                            continue;
                        }
                        let (len, used) = if fam6 {
                            self.fill_nodes(now, &t, true, room, &mut n6)
                        } else {
                            self.fill_nodes(now, &t, false, room, &mut n4)
                        };
                        room -= used;
                        lens[usize::from(fam6)] = len;
                    }
                    resp.nodes = CompactNodes::v4(&n4[..lens[0]]).unwrap_or_default();
                    resp.nodes6 = CompactNodes::v6(&n6[..lens[1]]).unwrap_or_default();
                }
                Body::Response(resp)
            }
            Method::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token: tok,
            } => {
                let port = if implied_port { from.port() } else { port };
                if !self.tokens.check(from.ip(), tok) {
                    self.stats.bad_tokens += 1;
                    error(krpc::code::PROTOCOL, b"bad token")
                } else if port == 0
                    || !self
                        .store
                        .announce(info_hash, SocketAddr::new(from.ip(), port), now)
                {
                    error(krpc::code::SERVER, b"not stored")
                } else {
                    Body::Response(resp)
                }
            }
            Method::Unknown(_) => error(krpc::code::METHOD_UNKNOWN, b"method unknown"),
        };
        // Errors carry no `ip`.
        let m = match body {
            Body::Error(_) => Message {
                ip: None,
                ..msg(body)
            },
            _ => msg(body),
        };
        m.encode(&mut buf[..limit]).ok()
    }

    /// Writes the closest nodes of one family to `target` into `out`, as many as
    /// fit, with their key, in `room` bytes of an answer (at most 8, and k).
    /// Returns the bytes written to `out` and the bytes they take in the answer.
    fn fill_nodes(
        &self,
        now: Instant,
        target: &NodeId,
        v6: bool,
        room: usize,
        out: &mut [u8],
    ) -> (usize, usize) {
        let (entry, key) = if v6 {
            (krpc::NODE6_LEN, b"6:nodes6".len())
        } else {
            (krpc::NODE4_LEN, b"5:nodes".len())
        };
        // The key, then the string: its length in digits, ':', the nodes.
        let cost = |n: usize| key + digits(n * entry) + 1 + n * entry;
        let mut most = self.cfg.table.k.min(8);
        while most > 0 && cost(most) > room {
            most -= 1;
        }
        if most == 0 {
            return (0, 0);
        }
        let mut len = 0;
        for n in self.tables[usize::from(v6)].closest(target, most, now, Some(v6)) {
            len += n.write_compact(&mut out[len..]).unwrap_or(0);
        }
        let used = if len == 0 { 0 } else { cost(len / entry) };
        (len, used)
    }

    fn take_outstanding(&mut self, from: SocketAddr, tid: &[u8]) -> Option<Outstanding> {
        let tid: [u8; 2] = tid.try_into().ok()?;
        let tid = u16::from_be_bytes(tid);
        let i = self
            .outstanding
            .iter()
            .position(|o| o.tid == tid && o.addr == from)?;
        Some(self.outstanding.swap_remove(i))
    }

    fn on_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        tid: &[u8],
        r: &Response<'_>,
        ip: Option<SocketAddr>,
    ) {
        let Some(o) = self.take_outstanding(from, tid) else {
            self.stats.dropped += 1;
            return;
        };
        // BEP 42: how the responder sees us, from the address we asked (so not a
        // forged source), one vote per subnet; an address of the other family is
        // not about this socket.
        if let Some(ip) = ip.map(|a| a.ip().to_canonical()) {
            let v6 = from.ip().to_canonical().is_ipv6();
            if ip.is_ipv6() == v6 && !ip.is_unspecified() {
                if let Some(ours) = self.voters[usize::from(v6)].vote(from.ip(), ip) {
                    self.adopt_external_ip(now, ours);
                }
            }
        }
        let f = fam(from.ip());
        if o.id.is_some_and(|id| id != r.id) || r.id == self.ids[f] {
            // Someone else answers at that address: treat as a failure.
            self.query_failed(now, o);
            return;
        }
        self.stats.responses_received += 1;
        let info = NodeInfo {
            id: r.id,
            addr: from,
        };
        if let Insert::Full { ping: Some(p) } | Insert::Pending { ping: Some(p) } =
            self.tables[f].heard_from(info, now, Contact::Replied)
        {
            self.ping(now, p);
        }
        let Purpose::Lookup { lookup, seed } = o.purpose else {
            return;
        };
        let own = self.ids[f];
        // The lookup of this id in the responder's DHT, with the nodes of that DHT.
        let Some(l) = self
            .lookups
            .iter_mut()
            .find(|l| l.id == lookup && usize::from(l.v6) == f)
        else {
            return;
        };
        let nodes = if l.v6 { r.nodes6 } else { r.nodes };
        for n in nodes.iter() {
            if n.id != own && addr::plausible(&from, &n.addr) {
                l.add(n);
            }
        }
        // BEP 42 "Enforcement": a node whose id does not match its address is not a
        // storage target; its answer counts as one without a token.
        let token = match l.kind {
            LookupKind::FindNode => None,
            _ if self.cfg.table.enforce_node_id && !bep42::id_matches(&r.id, from.ip()) => None,
            _ => r.token,
        };
        l.replied(info, token, seed);
        if l.kind != LookupKind::FindNode && !r.values.is_empty() {
            let peers: Vec<SocketAddr> = r
                .values
                .iter()
                .filter(|a| addr::plausible(&from, a))
                .collect();
            if !peers.is_empty() {
                l.peers += peers.len();
                let ev = DhtEvent::Peers {
                    lookup,
                    info_hash: InfoHash(l.target.0),
                    peers,
                };
                self.push_event(ev);
            }
        }
    }

    fn on_error(&mut self, now: Instant, from: SocketAddr, tid: &[u8], _e: &ErrorMsg<'_>) {
        let Some(o) = self.take_outstanding(from, tid) else {
            self.stats.dropped += 1;
            return;
        };
        self.stats.responses_received += 1;
        // It is alive, but this query failed.
        if let Purpose::Lookup { lookup, .. } = o.purpose {
            let f = fam(from.ip());
            if let Some(l) = self
                .lookups
                .iter_mut()
                .find(|l| l.id == lookup && usize::from(l.v6) == f)
            {
                l.failed(&from);
            }
        }
        let _ = now;
    }

    fn query_failed(&mut self, now: Instant, o: Outstanding) {
        let f = fam(o.addr.ip());
        if let Some(id) = o.id {
            self.tables[f].failed(&id, now);
        }
        if let Purpose::Lookup { lookup, .. } = o.purpose {
            if let Some(l) = self
                .lookups
                .iter_mut()
                .find(|l| l.id == lookup && usize::from(l.v6) == f)
            {
                l.failed(&o.addr);
            }
        }
    }

    // ---- timers ----

    /// When [`Dht::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let q = self.outstanding.iter().map(|o| o.deadline).min();
        Some(q.map_or(self.next_maintenance, |q| q.min(self.next_maintenance)))
    }

    /// Expires queries and runs maintenance when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.outstanding.len() {
            if self.outstanding[i].deadline <= now {
                let o = self.outstanding.swap_remove(i);
                self.stats.timeouts += 1;
                self.query_failed(now, o);
            } else {
                i += 1;
            }
        }
        if now >= self.next_maintenance {
            self.next_maintenance = now + self.cfg.maintenance_interval;
            self.maintain(now);
        }
        self.drive(now);
    }

    fn maintain(&mut self, now: Instant) {
        self.tokens.tick(now);
        self.store.expire(now);
        // A table with fewer than k nodes (bootstrapped through a node that knew
        // few others, or from routers that did not answer) looks up our id again
        // through the bootstrap nodes and what it has, backing off while it stays
        // thin (as libtorrent refreshes its own id while its table is shallow).
        // Each DHT (IPv4, IPv6) in use on its own.
        for f in 0..2 {
            if self.tables[f].len() >= self.cfg.table.k {
                self.thin_retry[f] = (now, THIN_RETRY_FIRST);
            } else if now >= self.thin_retry[f].0 && self.active(f) {
                let wait = self.thin_retry[f].1;
                let next = Duration::from_millis(wait.as_millis().saturating_mul(2));
                self.thin_retry[f] = (now + wait, next.min(THIN_RETRY_MAX));
                let _ = self.bootstrap_family(now, f);
            }
        }
        for f in 0..2 {
            if self.lookups.len() < self.cfg.max_lookups / 2 {
                let stale = self.cfg.refresh_after;
                if let Some(target) = self.tables[f].refresh_target(now, stale, &mut self.rng) {
                    let mut targets = [None; 2];
                    targets[f] = Some(target);
                    let _ = self.start_lookup_in(now, targets, LookupKind::FindNode);
                }
            }
            for n in self.tables[f].to_ping(now, Duration::from_secs(5 * 60), 4) {
                self.send_query(now, n.addr, Some(n.id), Method::Ping, Purpose::Ping);
            }
        }
    }

    // ---- output ----

    /// The next datagram to send: written into `buf` (which should hold
    /// [`krpc::MAX_DATAGRAM`] bytes), returns the destination and length. A datagram
    /// too large for `buf` is dropped.
    #[must_use]
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        loop {
            let (to, bytes) = self.transmit.pop_front()?;
            if let Some(out) = buf.get_mut(..bytes.len()) {
                out.copy_from_slice(&bytes);
                return Some((to, bytes.len()));
            }
        }
    }

    /// The next event for the host.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<DhtEvent> {
        self.events.pop_front()
    }

    fn push_event(&mut self, ev: DhtEvent) {
        if self.events.len() < self.cfg.max_events {
            self.events.push_back(ev);
        }
    }

    fn queue(&mut self, to: SocketAddr, msg: &Message<'_>) -> bool {
        if self.transmit.len() >= self.cfg.max_transmit_queue {
            return false;
        }
        let mut buf = [0u8; krpc::MAX_DATAGRAM];
        match msg.encode(&mut buf) {
            Ok(n) => {
                self.transmit.push_back((to, buf[..n].to_vec()));
                true
            }
            Err(_) => false,
        }
    }

    fn ping(&mut self, now: Instant, n: NodeInfo) {
        self.tables[fam(n.addr.ip())].pinged(&n.id, now);
        self.send_query(now, n.addr, Some(n.id), Method::Ping, Purpose::Ping);
    }

    fn send_query(
        &mut self,
        now: Instant,
        to: SocketAddr,
        id: Option<NodeId>,
        method: Method<'_>,
        purpose: Purpose,
    ) -> bool {
        if self.outstanding.len() >= self.cfg.max_outstanding {
            return false;
        }
        let mut tid = self.next_tid;
        while self.outstanding.iter().any(|o| o.tid == tid) {
            tid = tid.wrapping_add(1);
        }
        self.next_tid = tid.wrapping_add(1);
        let tid_bytes = tid.to_be_bytes();
        let msg = Message {
            tid: &tid_bytes,
            version: Some(krpc::VERSION),
            ip: None,
            body: Body::Query(Query {
                id: self.ids[fam(to.ip())],
                method,
                want: Want::default(),
                read_only: false,
            }),
        };
        if !self.queue(to, &msg) {
            return false;
        }
        self.stats.queries_sent += 1;
        self.outstanding.push(Outstanding {
            tid,
            addr: to,
            id,
            deadline: now + self.cfg.query_timeout,
            purpose,
        });
        true
    }

    /// Sends what lookups can send and finishes those that are done.
    fn drive(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.lookups.len() {
            loop {
                let l = &mut self.lookups[i];
                if self.outstanding.len() >= self.cfg.max_outstanding {
                    break;
                }
                let Some(n) = l.next_query() else { break };
                let (lookup, target, kind) = (l.id, l.target, l.kind);
                let method = match kind {
                    LookupKind::FindNode => Method::FindNode { target },
                    _ => Method::GetPeers { info_hash: target },
                };
                let purpose = Purpose::Lookup {
                    lookup,
                    seed: false,
                };
                if !self.send_query(now, n.addr, Some(n.id), method, purpose) {
                    self.lookups[i].failed(&n.addr);
                }
            }
            if self.lookups[i].is_done() {
                let l = self.lookups.swap_remove(i);
                self.finish(now, l);
            } else {
                i += 1;
            }
        }
    }

    fn finish(&mut self, now: Instant, l: Lookup) {
        self.stats.lookups_done += 1;
        let mut announced = 0;
        if let LookupKind::Announce { port, implied_port } = l.kind {
            for (n, token) in l.announce_targets() {
                let method = Method::AnnouncePeer {
                    info_hash: l.target,
                    port,
                    implied_port,
                    token: &token,
                };
                if self.send_query(now, n.addr, Some(n.id), method, Purpose::Announce) {
                    announced += 1;
                }
            }
        }
        let mut closest = l.closest();
        let mut peers = l.peers;
        if self.lookups.iter().any(|o| o.id == l.id) {
            // The same lookup runs on in the other DHT: report both at its end.
            self.halves.push((l.id, closest, peers, announced));
            return;
        }
        if let Some(i) = self.halves.iter().position(|h| h.0 == l.id) {
            let (_, c, p, a) = self.halves.swap_remove(i);
            closest.extend(c);
            closest.sort_unstable_by_key(|n| n.id.distance(&l.target));
            peers += p;
            announced += a;
        }
        self.push_event(DhtEvent::LookupDone {
            lookup: l.id,
            target: l.target,
            kind: l.kind,
            closest,
            peers,
            announced,
        });
    }
}

/// The family of `ip`'s DHT, as an index of [IPv4, IPv6] (an IPv4-mapped IPv6
/// address is IPv4).
fn fam(ip: IpAddr) -> usize {
    usize::from(ip.to_canonical().is_ipv6())
}

/// Decimal digits of `n` (as in a bencoded string's length).
fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}
