//! The Mainline DHT (BEP 5) on the host: a UDP socket on the client's event loop,
//! and a second one for IPv6 when the node binds all IPv4 addresses and the system
//! has IPv6 (BEP 32: the IPv4 and the IPv6 DHT, each bootstrapped from its own
//! addresses), the core's [`Dht`] state machine, and the routing tables kept in the
//! state directory.
//!
//! The host decides nothing about when torrents are looked up: the session asks for
//! each lookup ([`Action::DhtLookup`](btcore_core::session::Action::DhtLookup), on its
//! schedule), [`DhtHost::lookup`] performs it, and [`DhtHost::service`] reports the
//! peers found and the lookups done, for the session's `handle_peers` and
//! `handle_dht_done`.
//!
//! The table is saved when it changes in a meaningful way (its size moved by a
//! quarter since the last save, or it first reached k nodes), at most every five
//! minutes, and on exit — never rewritten on a short timer, to spare a NAS box's flash.

use crate::udp_batch::UdpBatch;
use btcore_core::bencode::{decode_vec, Encoder, Limits};
use btcore_core::dht::krpc::CompactNodes;
use btcore_core::dht::{Dht, DhtConfig, DhtEvent, DhtStats, LookupId, NodeInfo};
use btcore_core::ids::InfoHash;
use btcore_core::session::{DhtOutcome, TorrentId};
use btcore_core::time::Instant;
use mio::net::UdpSocket;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// The public routers a fresh node asks first (real use; tests pass their own).
pub const DEFAULT_BOOTSTRAP: &[&str] = &[
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
    "dht.libtorrent.org:25401",
];

const SAVE_AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// DHT settings of a client.
#[derive(Clone, Debug, Default)]
pub struct DhtOptions {
    /// UDP port (0: the client's TCP listen port).
    pub port: u16,
    /// `host:port` nodes to bootstrap from (empty: [`DEFAULT_BOOTSTRAP`]).
    pub bootstrap: Vec<String>,
    /// Where the routing table is kept (`dht.state`).
    pub state_dir: Option<PathBuf>,
    /// The low-memory profile's limits ([`DhtConfig::low_memory`]).
    pub low_memory: bool,
}

/// A lookup the session asked for, until the node reports it done.
#[derive(Debug)]
struct Running {
    lookup: LookupId,
    torrent: TorrentId,
    seq: u64,
}

pub use crate::dht_report::{DhtReport, Found};

/// The DHT node of a client.
#[derive(Debug)]
pub struct DhtHost {
    /// The socket (registered by the client).
    pub socket: UdpSocket,
    /// The IPv6 socket beside an IPv4 one bound to all addresses, on the same port
    /// (`[::]`, IPv6 only), when the system has IPv6 ([`DhtHost::register`]).
    pub socket6: Option<UdpSocket>,
    /// `socket` is an IPv6 one, and whether it reaches IPv4 peers (dual stack).
    socket_v6: bool,
    socket_dual: bool,
    dht: Dht,
    state_file: Option<PathBuf>,
    saved_count: usize,
    last_save: Option<std::time::Instant>,
    /// The session's lookups running (at most the node's `max_lookups`).
    running: Vec<Running>,
    /// Datagrams land here, 32 a system call.
    rx: Box<UdpBatch>,
    /// The bootstrap names being resolved off the loop (a resolver that cannot reach
    /// its DNS server takes tens of seconds: a NAS that boots before its network).
    resolving: Option<std::sync::mpsc::Receiver<Vec<SocketAddr>>>,
    /// The last `now` given to [`DhtHost::service`].
    last_service: Instant,
}

/// Resolves `host:port` names to the addresses of one family (IPv4 when `v4`).
type Resolver = fn(&[String], bool) -> Vec<SocketAddr>;

fn resolve_names(names: &[String], v4: bool) -> Vec<SocketAddr> {
    names
        .iter()
        .filter_map(|n| n.to_socket_addrs().ok())
        .flatten()
        .filter(|a| a.is_ipv4() == v4)
        .collect()
}

impl DhtHost {
    /// Binds the UDP socket and starts bootstrapping: from the nodes saved in the
    /// state folder and the bootstrap nodes given as addresses at once, from those
    /// given as names once a thread has resolved them (never on the caller's thread).
    pub fn new(bind: SocketAddr, opts: &DhtOptions, now: Instant, seed: u64) -> io::Result<Self> {
        Self::with_resolver(bind, opts, now, seed, resolve_names)
    }

    fn with_resolver(
        bind: SocketAddr,
        opts: &DhtOptions,
        now: Instant,
        seed: u64,
        resolve: Resolver,
    ) -> io::Result<Self> {
        let socket = UdpSocket::bind(bind)?;
        let socket6 = crate::os::bind_v6_beside(&socket, bind, "dht");
        let socket_dual = crate::utp::dual_stack(&socket, bind);
        // Room for a burst to wait for the next turn of the loop (which handles
        // `DHT_READS_PER_TURN` datagrams a turn) rather than be dropped; the kernel caps
        // it at its `rmem_max`.
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(1 << 20);
        // uTP shares these sockets when it binds the same port: its bursts are read
        // as runs (the coalescing batch below reads plain datagrams too).
        crate::udp_batch::enable_gro(&socket);
        if let Some(s) = socket6.as_ref() {
            crate::udp_batch::enable_gro(s);
        }
        let state_file = opts.state_dir.as_ref().map(|d| d.join("dht.state"));
        let saved = state_file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| load_state(&b));
        let id = saved
            .as_ref()
            .map(|s| s.0)
            .unwrap_or_else(crate::os::random_array::<20>);
        let key = crate::os::random_array::<20>();
        let mut cfg = if opts.low_memory {
            DhtConfig::low_memory(id, key)
        } else {
            DhtConfig::new(id, key)
        };
        let names: Vec<String> = if opts.bootstrap.is_empty() {
            DEFAULT_BOOTSTRAP.iter().map(|s| s.to_string()).collect()
        } else {
            opts.bootstrap.clone()
        };
        // Addresses at once; names off this thread.
        let (addrs, names): (Vec<&String>, Vec<&String>) =
            names.iter().partition(|n| n.parse::<SocketAddr>().is_ok());
        // The families we have a socket for.
        let families = (bind.is_ipv4(), bind.is_ipv6() || socket6.is_some());
        let usable = move |a: &SocketAddr| if a.is_ipv4() { families.0 } else { families.1 };
        cfg.bootstrap = addrs
            .iter()
            .filter_map(|n| n.parse::<SocketAddr>().ok())
            .filter(usable)
            .collect();
        let names: Vec<String> = names.into_iter().cloned().collect();
        let resolving = if names.is_empty() {
            None
        } else {
            let (tx, rx) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("dht-resolve".into())
                .spawn(move || {
                    let mut addrs = Vec::new();
                    if families.0 {
                        addrs.extend(resolve(&names, true));
                    }
                    if families.1 {
                        addrs.extend(resolve(&names, false));
                    }
                    let _ = tx.send(addrs);
                });
            if let Err(e) = spawned {
                log::warn!("dht: no thread to resolve the bootstrap nodes: {e}");
            }
            Some(rx)
        };
        let mut dht = Dht::new(cfg, now, seed);
        let mut saved_count = 0;
        if let Some((_, nodes)) = saved {
            saved_count = nodes.len();
            dht.load_nodes(now, &nodes);
        }
        dht.bootstrap(now);
        Ok(Self {
            socket,
            socket6,
            socket_v6: bind.is_ipv6(),
            socket_dual,
            dht,
            state_file,
            saved_count,
            last_save: None,
            running: Vec::new(),
            rx: Box::new(UdpBatch::coalescing()),
            resolving,
            last_service: now,
        })
    }

    /// The UDP address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The sockets, for uTP to share (no system call).
    pub fn sockets(&self) -> crate::utp::Sockets<'_> {
        crate::utp::Sockets {
            main: Some(&self.socket),
            main_v6: self.socket_v6,
            main_dual: self.socket_dual,
            v6: self.socket6.as_ref(),
        }
    }

    /// The IPv6 socket's address, when there is one beside an IPv4 socket.
    pub fn local_addr6(&self) -> Option<SocketAddr> {
        self.socket6.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// Registers the sockets with `registry`: the first under `token`, the IPv6 one
    /// (if any) under `token6`.
    pub fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        token6: mio::Token,
    ) -> io::Result<()> {
        registry.register(&mut self.socket, token, mio::Interest::READABLE)?;
        if let Some(s) = self.socket6.as_mut() {
            registry.register(s, token6, mio::Interest::READABLE)?;
        }
        Ok(())
    }

    /// Takes the sockets out of `registry`.
    pub fn deregister(&mut self, registry: &mio::Registry) {
        let _ = registry.deregister(&mut self.socket);
        if let Some(s) = self.socket6.as_mut() {
            let _ = registry.deregister(s);
        }
    }

    /// Our external address of one family as the node believes it (BEP 42: voted by
    /// the nodes that answer it, or set with [`DhtHost::set_external_ip`]).
    pub fn external_ip(&self, v6: bool) -> Option<std::net::IpAddr> {
        self.dht.external_ip(v6)
    }

    /// Our external address, as the host learnt it (e.g. from the router that maps
    /// our port): BEP 42, the node takes an id derived from it if its id does not
    /// match it.
    pub fn set_external_ip(&mut self, now: Instant, ip: std::net::IpAddr) {
        self.dht.set_external_ip(now, ip);
        self.transmit(now);
    }

    /// Counters for display.
    pub fn stats(&self, now: Instant) -> DhtStats {
        self.dht.stats(now)
    }

    /// The core node (read-only), e.g. for the routing table.
    pub fn dht(&self) -> &Dht {
        &self.dht
    }

    /// Handles the datagrams waiting on the socket, `budget` at most (one busy source
    /// cannot hold the event loop). True when the budget ran out with datagrams
    /// possibly left: the caller reads again next turn (the socket's readiness is not
    /// reported again for them).
    pub fn read(&mut self, now: Instant, budget: usize) -> bool {
        let more = self.read_with(now, budget, |_, _| {});
        let more6 = self.read6_with(now, budget, |_, _| {});
        more || more6
    }

    /// As [`DhtHost::read_with`], on the IPv6 socket (nothing when there is none).
    pub fn read6_with(
        &mut self,
        now: Instant,
        budget: usize,
        mut utp: impl FnMut(SocketAddr, &[u8]),
    ) -> bool {
        let Some(socket) = self.socket6.as_ref() else {
            return false;
        };
        read_batched(socket, &mut self.rx, &mut self.dht, now, budget, &mut utp)
    }

    /// As [`DhtHost::read`] on a port shared with uTP: a datagram that looks like uTP
    /// ([`btcore_core::utp::classify`]) goes to `utp` instead of the node.
    pub fn read_with(
        &mut self,
        now: Instant,
        budget: usize,
        mut utp: impl FnMut(SocketAddr, &[u8]),
    ) -> bool {
        read_batched(
            &self.socket,
            &mut self.rx,
            &mut self.dht,
            now,
            budget,
            &mut utp,
        )
    }

    /// Runs timers, sends what is queued, and returns the peers found and the
    /// session's lookups that ended since the last call.
    pub fn service(&mut self, now: Instant) -> DhtReport {
        self.last_service = now;
        if let Some(rx) = &self.resolving {
            match rx.try_recv() {
                Ok(addrs) => {
                    log::debug!("dht: {} bootstrap addresses resolved", addrs.len());
                    self.dht.add_bootstrap(now, &addrs);
                    self.resolving = None;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => self.resolving = None,
            }
        }
        if self.dht.poll_timeout().is_some_and(|t| t <= now) {
            self.dht.handle_timeout(now);
        }
        self.transmit(now);
        let mut report = DhtReport::default();
        while let Some(ev) = self.dht.poll_event() {
            match ev {
                DhtEvent::Peers {
                    lookup,
                    info_hash,
                    peers,
                } => {
                    log::debug!("dht: {} peers for {info_hash}", peers.len());
                    let torrent = self
                        .running
                        .iter()
                        .find(|r| r.lookup == lookup)
                        .map(|r| r.torrent);
                    report.found.push(Found {
                        torrent,
                        info_hash,
                        peers,
                    });
                }
                DhtEvent::LookupDone {
                    lookup,
                    closest,
                    peers,
                    announced,
                    ..
                } => {
                    log::debug!(
                        "dht: lookup {lookup:?} done: {} nodes, {peers} peers, {announced} announces",
                        closest.len()
                    );
                    if let Some(i) = self.running.iter().position(|r| r.lookup == lookup) {
                        let r = self.running.swap_remove(i);
                        // A lookup that reached nobody (an empty table while
                        // bootstrapping) is retried after the session's backoff.
                        let outcome = if closest.is_empty() {
                            DhtOutcome::Failed
                        } else {
                            DhtOutcome::Reached
                        };
                        report.done.push((r.torrent, r.seq, outcome));
                    }
                }
                _ => {}
            }
        }
        self.maybe_save(now, false);
        report
    }

    fn transmit(&mut self, now: Instant) {
        let mut out = [0u8; 1500];
        while let Some((to, n)) = self.dht.poll_transmit(now, &mut out) {
            // UDP: a datagram that does not fit the socket buffer is dropped, as on a
            // lossy network; the query times out and is retried elsewhere.
            let socket = match &self.socket6 {
                Some(s) if to.is_ipv6() => s,
                _ => &self.socket,
            };
            let _ = socket.send_to(&out[..n], to);
        }
    }

    /// When the DHT next needs [`DhtHost::service`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = self.dht.poll_timeout();
        if self.resolving.is_none() {
            return t;
        }
        // The resolver's answer is looked for every 100 ms until it comes.
        let soon = self.last_service + btcore_core::time::Duration::from_millis(100);
        Some(t.map_or(soon, |t| t.min(soon)))
    }

    /// Performs lookup `seq` of `torrent` that the session asked for
    /// ([`Action::DhtLookup`](btcore_core::session::Action::DhtLookup)): a `get_peers`
    /// lookup of `info_hash`, with `announce_peer` of `port` to the closest nodes when
    /// `announce`. Its peers and its end come out of [`DhtHost::service`]. False when
    /// the node runs too many lookups to start it: report it failed.
    pub fn lookup(
        &mut self,
        now: Instant,
        torrent: TorrentId,
        info_hash: InfoHash,
        announce: Option<u16>,
        seq: u64,
    ) -> bool {
        let started = match announce {
            Some(port) => self.dht.announce(now, info_hash, port, false),
            None => self.dht.get_peers(now, info_hash),
        };
        let Some(lookup) = started else {
            return false;
        };
        self.running.push(Running {
            lookup,
            torrent,
            seq,
        });
        self.transmit(now);
        true
    }

    /// The session's lookups still running, (torrent, seq) each, forgotten: the node
    /// is about to be closed, and the session hears of them as failed.
    pub fn abandon_lookups(&mut self) -> Vec<(TorrentId, u64)> {
        self.running.drain(..).map(|r| (r.torrent, r.seq)).collect()
    }

    /// Looks for peers of `info_hash` now (e.g. when a torrent runs low on peers).
    pub fn get_peers(&mut self, now: Instant, info_hash: InfoHash) {
        self.dht.get_peers(now, info_hash);
    }

    /// Saves the routing table if it changed enough, or always with `force` (exit).
    pub fn maybe_save(&mut self, now: Instant, force: bool) {
        let Some(file) = self.state_file.clone() else {
            return;
        };
        let nodes = self.dht.save_nodes(now);
        let n = nodes.len();
        let k = 8;
        let changed = (self.saved_count < k && n >= k)
            || n.abs_diff(self.saved_count) * 4 >= self.saved_count.max(k);
        let recent = self
            .last_save
            .is_some_and(|t| t.elapsed() < SAVE_AT_MOST_EVERY);
        if n == 0 || !(force || (changed && !recent)) {
            return;
        }
        let bytes = encode_state(&self.dht.id().0, &nodes);
        if let Err(e) = crate::os::write_atomic(&file, &bytes) {
            log::warn!("saving the DHT routing table: {e}");
            return;
        }
        self.saved_count = n;
        self.last_save = Some(std::time::Instant::now());
    }
}

fn encode_state(id: &[u8; 20], nodes: &[NodeInfo]) -> Vec<u8> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut b = [0u8; 38];
    for n in nodes {
        if let Some(len) = n.write_compact(&mut b) {
            if n.addr.is_ipv4() {
                v4.extend_from_slice(&b[..len]);
            } else {
                v6.extend_from_slice(&b[..len]);
            }
        }
    }
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out);
    let _ = (|| {
        e.dict()?;
        e.key_bytes(b"id", id)?;
        e.key_bytes(b"nodes", &v4)?;
        e.key_bytes(b"nodes6", &v6)?;
        e.end()
    })();
    out
}

/// Our saved id and nodes; `None` for anything malformed (then we start afresh).
fn load_state(bytes: &[u8]) -> Option<([u8; 20], Vec<NodeInfo>)> {
    let mut tokens = Vec::new();
    let doc = decode_vec(bytes, &mut tokens, &Limits::default()).ok()?;
    let d = doc.root().as_dict()?;
    let id: [u8; 20] = d.get_bytes(b"id")?.try_into().ok()?;
    let mut nodes = Vec::new();
    if let Some(n) = d.get_bytes(b"nodes").and_then(CompactNodes::v4) {
        nodes.extend(n.iter());
    }
    if let Some(n) = d.get_bytes(b"nodes6").and_then(CompactNodes::v6) {
        nodes.extend(n.iter());
    }
    Some((id, nodes))
}

/// Reads `socket` in batches of one `recvmmsg(2)` ([`UdpBatch::read_all`]): uTP
/// datagrams ([`btcore_core::utp::classify`]) to `utp`, the rest to the node.
fn read_batched(
    socket: &UdpSocket,
    rx: &mut UdpBatch,
    dht: &mut Dht,
    now: Instant,
    budget: usize,
    utp: &mut impl FnMut(SocketAddr, &[u8]),
) -> bool {
    rx.read_all(socket, budget, |d, from| {
        if btcore_core::utp::classify(d) == btcore_core::utp::DatagramKind::Utp {
            utp(from, d);
        } else {
            dht.handle_datagram(now, from, d);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(bootstrap: SocketAddr, seed: u64, now: Instant) -> DhtHost {
        let opts = DhtOptions {
            bootstrap: vec![bootstrap.to_string()],
            ..DhtOptions::default()
        };
        DhtHost::new("127.0.0.1:0".parse().expect("addr"), &opts, now, seed).expect("bind")
    }

    /// Runs both nodes until `done` holds for `a`'s reports (at most 10 s).
    fn run_until(
        a: &mut DhtHost,
        b: &mut DhtHost,
        epoch: std::time::Instant,
        mut done: impl FnMut(&DhtHost, &DhtHost, &DhtReport) -> bool,
    ) -> DhtReport {
        let mut all = DhtReport::default();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = Instant::from_millis(epoch.elapsed().as_millis() as u64 + 1);
            b.read(now, 64);
            b.service(now);
            a.read(now, 64);
            let r = a.service(now);
            all.found.extend(r.found);
            all.done.extend(r.done);
            if done(a, b, &all) {
                return all;
            }
            assert!(std::time::Instant::now() < end, "timed out: {all:?}");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// The node performs every lookup it is given, when it is given, and reports each
    /// with its torrent and number; it schedules none of its own (the session does):
    /// a second lookup of the same torrent right after the first is not held back.
    #[test]
    fn performs_the_lookups_it_is_given_and_no_other() {
        let epoch = std::time::Instant::now();
        let t0 = Instant::from_millis(1);
        let nowhere: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let mut b = node(nowhere, 2, t0);
        let mut a = node(b.local_addr().expect("addr"), 1, t0);
        run_until(&mut a, &mut b, epoch, |a, _, _| a.stats(t0).nodes > 0);
        let bootstrap_lookups = a.stats(t0).lookups_done;
        let ih = InfoHash([0x42; 20]);
        let torrent = TorrentId(3);
        let now = Instant::from_millis(epoch.elapsed().as_millis() as u64 + 1);
        assert!(a.lookup(now, torrent, ih, Some(6881), 7));
        // It ends, and its announce reaches b's store.
        let r = run_until(&mut a, &mut b, epoch, |_, b, r| {
            !r.done.is_empty() && b.dht().store().hash_count() == 1
        });
        assert_eq!(r.done, vec![(torrent, 7, DhtOutcome::Reached)]);
        // At once again: performed, not put off to a schedule of the host's.
        let now = Instant::from_millis(epoch.elapsed().as_millis() as u64 + 1);
        assert!(a.lookup(now, torrent, ih, None, 8));
        let r = run_until(&mut a, &mut b, epoch, |_, _, r| !r.done.is_empty());
        assert_eq!(r.done, vec![(torrent, 8, DhtOutcome::Reached)]);
        assert!(r.found.iter().all(|f| f.torrent == Some(torrent)));
        // Exactly the two lookups asked for ran (no lookup of its own for a torrent).
        let later = Instant::from_millis(epoch.elapsed().as_millis() as u64 + 1);
        assert_eq!(a.stats(later).lookups_done, bootstrap_lookups + 2);
        assert_eq!(a.stats(later).lookups_running, 0);
    }

    /// Bootstrap names are resolved off the caller's thread: a resolver that takes
    /// seconds (no DNS server reachable) holds up neither the start nor the loop, and
    /// the node bootstraps through what it returns once it does.
    #[test]
    fn a_slow_resolver_holds_up_nothing() {
        static PEER: std::sync::Mutex<Option<SocketAddr>> = std::sync::Mutex::new(None);
        fn slow(names: &[String], _v4: bool) -> Vec<SocketAddr> {
            assert_eq!(names, ["bootstrap.invalid:6881"]);
            std::thread::sleep(std::time::Duration::from_secs(3));
            PEER.lock().expect("lock").iter().copied().collect()
        }
        let epoch = std::time::Instant::now();
        let t0 = Instant::from_millis(1);
        let nowhere: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let mut b = node(nowhere, 2, t0);
        *PEER.lock().expect("lock") = Some(b.local_addr().expect("addr"));
        let opts = DhtOptions {
            bootstrap: vec!["bootstrap.invalid:6881".into()],
            ..DhtOptions::default()
        };
        let started = std::time::Instant::now();
        let mut a =
            DhtHost::with_resolver("127.0.0.1:0".parse().expect("addr"), &opts, t0, 1, slow)
                .expect("bind");
        let now = Instant::from_millis(epoch.elapsed().as_millis() as u64 + 1);
        a.service(now);
        assert!(a
            .poll_timeout()
            .is_some_and(|t| t <= now + btcore_core::time::Duration::from_millis(100)));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "the start waited for the resolver: {:?}",
            started.elapsed()
        );
        assert_eq!(a.stats(now).nodes, 0);
        run_until(&mut a, &mut b, epoch, |a, _, _| a.stats(t0).nodes > 0);
        assert!(a.resolving.is_none());
    }

    /// BEP 32 on real sockets: a node bound to all IPv4 addresses has an IPv6 socket
    /// on the same port; bootstrapped from an IPv6 address only, it fills its IPv6
    /// table (its IPv4 one stays empty), and a lookup with an announce goes through
    /// the IPv6 DHT to the other node's store.
    #[test]
    fn an_ipv6_socket_beside_the_ipv4_one() {
        if std::net::UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("skipped: this system has no IPv6 loopback");
            return;
        }
        let epoch = std::time::Instant::now();
        let t0 = Instant::from_millis(1);
        let all: SocketAddr = "0.0.0.0:0".parse().expect("addr");
        let opts = DhtOptions {
            bootstrap: vec!["127.0.0.1:9".into()],
            ..DhtOptions::default()
        };
        let mut b = DhtHost::new(all, &opts, t0, 2).expect("bind");
        let port = b.local_addr().expect("addr").port();
        let v6 = b.local_addr6().expect("an IPv6 socket beside the IPv4 one");
        assert_eq!(v6.port(), port);
        assert!(v6.is_ipv6());
        let opts = DhtOptions {
            bootstrap: vec![format!("[::1]:{port}")],
            ..DhtOptions::default()
        };
        let mut a = DhtHost::new(all, &opts, t0, 1).expect("bind");
        run_until(&mut a, &mut b, epoch, |a, b, _| {
            !a.dht().table6().is_empty() && !b.dht().table6().is_empty()
        });
        assert!(
            a.dht().table().is_empty(),
            "IPv4 nodes from an IPv6 bootstrap"
        );
        assert!(a.stats(t0).nodes6 >= 1);
        let ih = InfoHash([0x66; 20]);
        let now = Instant::from_millis(epoch.elapsed().as_millis() as u64 + 1);
        assert!(a.lookup(now, TorrentId(1), ih, Some(6881), 1));
        let r = run_until(&mut a, &mut b, epoch, |_, b, r| {
            !r.done.is_empty() && b.dht().store().hash_count() == 1
        });
        assert_eq!(r.done, vec![(TorrentId(1), 1, DhtOutcome::Reached)]);
        let stored: Vec<SocketAddr> = b
            .dht()
            .store()
            .iter()
            .flat_map(|(_, peers)| peers.collect::<Vec<_>>())
            .collect();
        assert_eq!(
            stored,
            vec!["[::1]:6881".parse::<SocketAddr>().expect("addr")]
        );
    }

    #[test]
    fn state_round_trip_and_garbage() {
        let nodes = vec![
            NodeInfo {
                id: btcore_core::dht::NodeId([7; 20]),
                addr: "10.1.2.3:6881".parse().expect("addr"),
            },
            NodeInfo {
                id: btcore_core::dht::NodeId([9; 20]),
                addr: "[2001:db8::1]:51413".parse().expect("addr"),
            },
        ];
        let bytes = encode_state(&[1; 20], &nodes);
        let (id, back) = load_state(&bytes).expect("loads");
        assert_eq!((id, back), ([1; 20], nodes));
        assert!(load_state(b"garbage").is_none());
        assert!(load_state(b"d2:id3:abce").is_none());
    }
}
