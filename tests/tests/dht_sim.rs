//! A deterministic in-memory network of Mainline DHT nodes (`btcore_core::dht::Dht`):
//! a simulated clock, datagrams delivered with 10 to 80 ms of latency and 2 % loss,
//! no sockets. Each test builds a few hundred nodes bootstrapped from three seeds and
//! checks what a real network must do: tables fill, lookups find the true closest
//! nodes, announced peers are found, churn heals, and a hostile sender changes nothing.

use btcore_core::dht::krpc::{self, Body, Message, Method, Query, Want};
use btcore_core::dht::{bep42, Dht, DhtConfig, DhtEvent, LookupId, NodeId};
use btcore_core::ids::InfoHash;
use btcore_core::rng::Rng;
use btcore_core::time::Instant;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// A datagram in flight: (deliver at, sequence, from, to, bytes).
type InFlight = Reverse<(u64, u64, SocketAddr, SocketAddr, Vec<u8>)>;

struct SimNode {
    dht: Dht,
    /// Its first address (IPv4 unless it has none).
    addr: SocketAddr,
    /// Its address of each family, [IPv4, IPv6]: a socket of each (BEP 32).
    addrs: [Option<SocketAddr>; 2],
    alive: bool,
    events: Vec<DhtEvent>,
}

struct Net {
    now: u64,
    rng: Rng,
    nodes: Vec<SimNode>,
    by_addr: HashMap<SocketAddr, usize>,
    wire: BinaryHeap<InFlight>,
    timers: BinaryHeap<Reverse<(u64, usize)>>,
    seq: u64,
    loss_per_mille: u64,
    delivered: u64,
    /// Datagrams sent to addresses outside the simulation (the hostile tester's).
    captured: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    seeds: Vec<SocketAddr>,
}

/// Node `i`'s address: 10.x.y.1, each node in a /24 of its own as on the internet
/// (nodes limit what one /24 may hold in their tables and lookups).
fn ip_of(i: usize) -> SocketAddr {
    let i = i as u32 + 1;
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(0x0a00_0001 | (i << 8)),
        6881,
    ))
}

/// Node `i`'s IPv6 address: 2001:db8:x::1, each node in a /48 of its own.
fn ip6_of(i: usize) -> SocketAddr {
    let i = i as u16 + 1;
    SocketAddr::new(
        std::net::IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 1)),
        6881,
    )
}

fn random_id(rng: &mut Rng) -> [u8; 20] {
    let mut id = [0u8; 20];
    for c in id.chunks_mut(8) {
        let r = rng.next_u64().to_be_bytes();
        c.copy_from_slice(&r[..c.len()]);
    }
    id
}

impl Net {
    fn new(seed: u64) -> Self {
        Self {
            now: 0,
            rng: Rng::new(seed),
            nodes: Vec::new(),
            by_addr: HashMap::new(),
            wire: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            seq: 0,
            loss_per_mille: 20,
            delivered: 0,
            captured: Vec::new(),
            seeds: Vec::new(),
        }
    }

    fn t(&self) -> Instant {
        Instant::from_millis(self.now)
    }

    /// Adds a node and bootstraps it from `bootstrap`.
    fn join(&mut self, bootstrap: Vec<SocketAddr>) -> usize {
        self.join_with(true, false, bootstrap)
    }

    /// Adds a node with an IPv4 address, an IPv6 address or both, bootstrapped from
    /// the addresses of `bootstrap` of its families. Its IPv6 address is a public
    /// one (2001:db8::/32, which BEP 42 does not exempt): its id is derived from it.
    fn join_with(&mut self, v4: bool, v6: bool, bootstrap: Vec<SocketAddr>) -> usize {
        let i = self.nodes.len();
        let addrs = [v4.then(|| ip_of(i)), v6.then(|| ip6_of(i))];
        let mut id = random_id(&mut self.rng);
        if let Some(a) = addrs[1] {
            id = bep42::node_id(a.ip(), id).0;
        }
        let mut cfg = DhtConfig::new(id, random_id(&mut self.rng));
        cfg.bootstrap = bootstrap
            .into_iter()
            .filter(|a| !addrs.contains(&Some(*a)))
            .filter(|a| addrs[usize::from(a.is_ipv6())].is_some())
            .collect();
        let seed = self.rng.next_u64();
        let mut dht = Dht::new(cfg, self.t(), seed);
        let _ = dht.bootstrap(self.t());
        let addr = addrs.into_iter().flatten().next().expect("an address");
        self.nodes.push(SimNode {
            dht,
            addr,
            addrs,
            alive: true,
            events: Vec::new(),
        });
        for a in addrs.into_iter().flatten() {
            self.by_addr.insert(a, i);
        }
        self.flush(i);
        i
    }

    /// A network of `n` nodes joining 50 ms apart from three seeds, then `settle` ms.
    fn build(seed: u64, n: usize, settle: u64) -> Self {
        let mut net = Net::new(seed);
        net.seeds = (0..3).map(ip_of).collect();
        for _ in 0..n {
            let seeds = net.seeds.clone();
            net.join(seeds);
            let until = net.now + 50;
            net.run_until(until);
        }
        let until = net.now + settle;
        net.run_until(until);
        net
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        if self.rng.below(1000) < self.loss_per_mille {
            return;
        }
        let at = self.now + 10 + self.rng.below(71);
        self.seq += 1;
        self.wire.push(Reverse((at, self.seq, from, to, bytes)));
    }

    /// Drains a node's output: datagrams onto the wire, events aside, its next timer.
    fn flush(&mut self, i: usize) {
        let now = self.t();
        let mut buf = [0u8; krpc::MAX_DATAGRAM];
        let mut out = Vec::new();
        let node = &mut self.nodes[i];
        while let Some((to, n)) = node.dht.poll_transmit(now, &mut buf) {
            out.push((to, buf[..n].to_vec()));
        }
        while let Some(ev) = node.dht.poll_event() {
            node.events.push(ev);
        }
        let addrs = node.addrs;
        if let Some(t) = node.dht.poll_timeout() {
            self.timers.push(Reverse((t.as_millis().max(self.now), i)));
        }
        for (to, bytes) in out {
            // No socket of that family: the datagram goes nowhere.
            if let Some(from) = addrs[usize::from(to.is_ipv6())] {
                self.send(from, to, bytes);
            }
        }
    }

    fn run_until(&mut self, end: u64) {
        loop {
            let w = self.wire.peek().map(|Reverse(x)| x.0);
            let t = self.timers.peek().map(|Reverse(x)| x.0);
            let next = match (w, t) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            self.now = next;
            if w == Some(next) {
                let Some(Reverse((_, _, from, to, bytes))) = self.wire.pop() else {
                    break;
                };
                match self.by_addr.get(&to).copied() {
                    Some(i) if self.nodes[i].alive => {
                        self.delivered += 1;
                        let now = self.t();
                        self.nodes[i].dht.handle_datagram(now, from, &bytes);
                        self.flush(i);
                    }
                    Some(_) => {}
                    None => self.captured.push((from, to, bytes)),
                }
            } else {
                let Some(Reverse((at, i))) = self.timers.pop() else {
                    break;
                };
                let now = self.t();
                let node = &mut self.nodes[i];
                if node.alive && node.dht.poll_timeout().is_some_and(|d| d.as_millis() <= at) {
                    node.dht.handle_timeout(now);
                    self.flush(i);
                }
            }
        }
        self.now = self.now.max(end);
    }

    fn alive(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].alive)
    }

    /// The `k` ids of live nodes other than `except` closest to `target`.
    fn true_closest(&self, target: &NodeId, k: usize, except: usize) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .alive()
            .filter(|&i| i != except)
            .map(|i| self.nodes[i].dht.id())
            .collect();
        ids.sort_by_key(|id| id.distance(target));
        ids.truncate(k);
        ids
    }

    fn take_done(&mut self, i: usize, lookup: LookupId) -> Option<DhtEvent> {
        let ev = &mut self.nodes[i].events;
        let pos = ev
            .iter()
            .position(|e| matches!(e, DhtEvent::LookupDone { lookup: l, .. } if *l == lookup))?;
        Some(ev.remove(pos))
    }

    /// Runs `count` find_node lookups for random ids from random live nodes; returns
    /// the mean recall of the true 8 closest live nodes.
    fn lookup_recall(&mut self, count: usize) -> f64 {
        let alive: Vec<usize> = self.alive().collect();
        let mut started = Vec::new();
        for _ in 0..count {
            let i = alive[self.rng.below(alive.len() as u64) as usize];
            let target = NodeId(random_id(&mut self.rng));
            let now = self.t();
            let l = self.nodes[i]
                .dht
                .find_node(now, target)
                .expect("lookup slot");
            self.flush(i);
            started.push((i, target, l));
        }
        let until = self.now + 20_000;
        self.run_until(until);
        let mut total = 0.0;
        for (i, target, l) in started {
            let Some(DhtEvent::LookupDone { closest, .. }) = self.take_done(i, l) else {
                panic!("lookup {l:?} of node {i} did not finish");
            };
            let truth = self.true_closest(&target, 8, i);
            let found: HashSet<NodeId> = closest.iter().map(|n| n.id).collect();
            let hits = truth.iter().filter(|id| found.contains(id)).count();
            total += hits as f64 / truth.len() as f64;
        }
        total / count as f64
    }

    /// Runs a get_peers from node `i` and returns the peers found.
    fn find_peers(&mut self, i: usize, ih: InfoHash) -> HashSet<SocketAddr> {
        let now = self.t();
        let l = self.nodes[i].dht.get_peers(now, ih).expect("lookup slot");
        self.flush(i);
        let until = self.now + 20_000;
        self.run_until(until);
        assert!(self.take_done(i, l).is_some(), "get_peers finished");
        let mut found = HashSet::new();
        self.nodes[i].events.retain(|e| match e {
            DhtEvent::Peers { lookup, peers, .. } if *lookup == l => {
                found.extend(peers.iter().copied());
                false
            }
            _ => true,
        });
        found
    }

    fn announce(&mut self, i: usize, ih: InfoHash, port: u16) {
        let now = self.t();
        self.nodes[i]
            .dht
            .announce(now, ih, port, false)
            .expect("lookup slot");
        self.flush(i);
    }

    fn table_sizes(&self) -> (usize, f64, usize) {
        let sizes: Vec<usize> = self
            .alive()
            .map(|i| self.nodes[i].dht.stats(self.t()).nodes)
            .collect();
        let min = sizes.iter().copied().min().unwrap_or(0);
        let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
        let max = sizes.iter().copied().max().unwrap_or(0);
        (min, mean, max)
    }
}

#[test]
fn tables_converge_and_lookups_find_the_closest_nodes() {
    let mut net = Net::build(1, 300, 30_000);
    let (min, mean, max) = net.table_sizes();
    let buckets: f64 = net
        .alive()
        .map(|i| net.nodes[i].dht.stats(net.t()).buckets as f64)
        .sum::<f64>()
        / 300.0;
    let sent: u64 = net
        .alive()
        .map(|i| net.nodes[i].dht.stats(net.t()).queries_sent)
        .sum();
    println!(
        "300 nodes after {} s: table nodes min {min} mean {mean:.1} max {max}, buckets mean {buckets:.1}, \
         {sent} queries, {} datagrams delivered",
        net.now / 1000,
        net.delivered
    );
    assert!(min >= 8, "every table holds nodes (min {min})");
    let recall = net.lookup_recall(40);
    println!("find_node recall of the true 8 closest over 40 random ids: {recall:.3}");
    assert!(recall >= 0.9, "recall {recall}");
}

/// BEP 32: IPv4 and IPv6 nodes form two DHTs. A quarter of the nodes have only
/// IPv4, a quarter only IPv6 (a public address, its id derived from it as BEP 42
/// asks), the rest both; they bootstrap from three dual-stack seeds, each family
/// apart. Each table holds nodes of its own family only and fills; lookups in the
/// IPv6 DHT find the true closest IPv6 nodes; the nodes learn their IPv6 address
/// from the `ip` of answers; a peer announced in one DHT is found by the nodes in
/// that DHT and not by the others.
#[test]
fn ipv6_nodes_form_a_dht_of_their_own() {
    let mut net = Net::new(9);
    let n = 160;
    let seeds: Vec<SocketAddr> = (0..3).flat_map(|j| [ip_of(j), ip6_of(j)]).collect();
    let kind = |i: usize| match i {
        0..=2 => (true, true),
        _ => match i % 4 {
            0 => (true, false),
            1 => (false, true),
            _ => (true, true),
        },
    };
    for i in 0..n {
        let (v4, v6) = kind(i);
        net.join_with(v4, v6, seeds.clone());
        let until = net.now + 50;
        net.run_until(until);
    }
    let until = net.now + 30_000;
    net.run_until(until);
    let mut sizes = [Vec::new(), Vec::new()];
    let mut learnt = 0;
    for i in 0..n {
        let d = &net.nodes[i].dht;
        let (v4, v6) = kind(i);
        let t4: Vec<_> = d.table().nodes().map(|x| x.info).collect();
        let t6: Vec<_> = d.table6().nodes().map(|x| x.info).collect();
        assert!(
            t4.iter().all(|x| x.addr.is_ipv4()),
            "node {i}: IPv6 in the IPv4 table"
        );
        assert!(
            t6.iter().all(|x| x.addr.is_ipv6()),
            "node {i}: IPv4 in the IPv6 table"
        );
        assert!(
            t6.iter().all(|x| bep42::id_matches(&x.id, x.addr.ip())),
            "node {i}: an IPv6 node whose id does not match its address"
        );
        assert_eq!(
            v4,
            !t4.is_empty(),
            "node {i} ({v4}, {v6}): {} IPv4 nodes",
            t4.len()
        );
        assert_eq!(
            v6,
            !t6.is_empty(),
            "node {i} ({v4}, {v6}): {} IPv6 nodes",
            t6.len()
        );
        if v4 {
            sizes[0].push(t4.len());
        }
        if v6 {
            sizes[1].push(t6.len());
            assert!(bep42::id_matches(&d.id_of(true), ip6_of(i).ip()));
            if d.external_ip(true) == Some(ip6_of(i).ip()) {
                learnt += 1;
            }
        }
    }
    let min = |v: &Vec<usize>| v.iter().copied().min().unwrap_or(0);
    let mean = |v: &Vec<usize>| v.iter().sum::<usize>() as f64 / v.len() as f64;
    let v6_nodes = sizes[1].len();
    println!(
        "{n} nodes, {} with IPv4, {v6_nodes} with IPv6: IPv4 tables min {} mean {:.1}, \
         IPv6 tables min {} mean {:.1}; {learnt} learnt their IPv6 address by vote",
        sizes[0].len(),
        min(&sizes[0]),
        mean(&sizes[0]),
        min(&sizes[1]),
        mean(&sizes[1]),
    );
    assert!(min(&sizes[0]) >= 8 && min(&sizes[1]) >= 8, "{sizes:?}");
    assert!(
        learnt * 10 >= v6_nodes * 9,
        "{learnt} of {v6_nodes} learnt their address"
    );

    // Lookups in the IPv6 DHT, from IPv6-only and dual-stack nodes.
    let with6: Vec<usize> = (0..n).filter(|&i| kind(i).1).collect();
    let mut started = Vec::new();
    for k in 0..30 {
        let i = with6[(k * 7) % with6.len()];
        let target = NodeId(random_id(&mut net.rng));
        let now = net.t();
        let l = net.nodes[i]
            .dht
            .find_node(now, target)
            .expect("lookup slot");
        net.flush(i);
        started.push((i, target, l));
    }
    let until = net.now + 20_000;
    net.run_until(until);
    let mut total = 0.0;
    for (i, target, l) in started {
        let Some(DhtEvent::LookupDone { closest, .. }) = net.take_done(i, l) else {
            panic!("lookup {l:?} of node {i} did not finish");
        };
        let mut truth: Vec<NodeId> = with6
            .iter()
            .filter(|&&j| j != i)
            .map(|&j| net.nodes[j].dht.id_of(true))
            .collect();
        truth.sort_by_key(|id| id.distance(&target));
        truth.truncate(8);
        let found: HashSet<NodeId> = closest
            .iter()
            .filter(|x| x.addr.is_ipv6())
            .map(|x| x.id)
            .collect();
        let hits = truth.iter().filter(|id| found.contains(id)).count();
        total += hits as f64 / 8.0;
    }
    let recall = total / 30.0;
    println!("IPv6 find_node recall of the true 8 closest over 30 random ids: {recall:.3}");
    assert!(recall >= 0.9, "recall {recall}");

    // A peer announced in each DHT: by an IPv6-only node, and by an IPv4-only one.
    let ih = InfoHash([0x46; 20]);
    net.announce(5, ih, 6006);
    net.announce(8, ih, 4004);
    let until = net.now + 20_000;
    net.run_until(until);
    let p6 = SocketAddr::new(ip6_of(5).ip(), 6006);
    let p4 = SocketAddr::new(ip_of(8).ip(), 4004);
    // Dual-stack nodes find both; IPv4-only ones the IPv4 peer; IPv6-only ones the
    // IPv6 peer.
    for (i, expected) in [
        (6usize, vec![p4, p6]),
        (10, vec![p4, p6]),
        (12, vec![p4]),
        (16, vec![p4]),
        (9, vec![p6]),
        (13, vec![p6]),
    ] {
        let found = net.find_peers(i, ih);
        assert_eq!(
            found,
            expected.into_iter().collect::<HashSet<_>>(),
            "node {i} {:?}",
            kind(i)
        );
    }
}

#[test]
fn get_peers_finds_what_others_announced() {
    let mut net = Net::build(2, 200, 20_000);
    let ih = InfoHash([0x42; 20]);
    let announcers = [5usize, 50, 100, 150, 199];
    for (k, &i) in announcers.iter().enumerate() {
        net.announce(i, ih, 7000 + k as u16);
    }
    let until = net.now + 20_000;
    net.run_until(until);
    let expected: HashSet<SocketAddr> = announcers
        .iter()
        .enumerate()
        .map(|(k, &i)| SocketAddr::new(net.nodes[i].addr.ip(), 7000 + k as u16))
        .collect();
    let mut recalls = Vec::new();
    for i in [3usize, 30, 60, 90, 120, 180] {
        let found = net.find_peers(i, ih);
        assert!(found.is_subset(&expected), "no invented peers: {found:?}");
        recalls.push(found.len());
    }
    println!("get_peers found {recalls:?} of 5 announced peers");
    assert!(recalls.iter().all(|&n| n == 5), "{recalls:?}");
    // Nobody stores peers for an info-hash no one announced.
    assert!(net.find_peers(7, InfoHash([0x43; 20])).is_empty());
}

#[test]
fn churn_does_not_break_lookups() {
    let mut net = Net::build(3, 200, 20_000);
    // 20 % of the nodes leave (not the seeds), 40 join from random live nodes.
    let mut left = 0;
    while left < 40 {
        let i = 3 + net.rng.below(197) as usize;
        if net.nodes[i].alive {
            net.nodes[i].alive = false;
            left += 1;
        }
    }
    for _ in 0..40 {
        let alive: Vec<usize> = net.alive().collect();
        let via = alive[net.rng.below(alive.len() as u64) as usize];
        let addr = net.nodes[via].addr;
        net.join(vec![addr]);
        let until = net.now + 100;
        net.run_until(until);
    }
    let until = net.now + 30_000;
    net.run_until(until);
    let recall = net.lookup_recall(30);
    let (min, mean, _) = net.table_sizes();
    println!("after churn (40 left, 40 joined): recall {recall:.3}, table nodes min {min} mean {mean:.1}");
    assert!(recall >= 0.85, "recall {recall}");
    assert!(min >= 8);
    let ih = InfoHash([0x77; 20]);
    net.announce(210, ih, 9000);
    let until = net.now + 20_000;
    net.run_until(until);
    let found = net.find_peers(20, ih);
    assert!(
        found.contains(&SocketAddr::new(net.nodes[210].addr.ip(), 9000)),
        "{found:?}"
    );
}

#[test]
fn hostile_traffic_changes_nothing() {
    let mut net = Net::build(4, 100, 20_000);
    net.loss_per_mille = 0;
    let evil: SocketAddr = "192.0.2.66:6666".parse().expect("addr");
    let victim = 10;
    let to = net.nodes[victim].addr;
    let before = net.nodes[victim].dht.stats(net.t());
    let ih = InfoHash([0x99; 20]);
    let evil_id = NodeId([0xee; 20]);
    let query = |method: Method<'_>, tid: &[u8]| {
        let m = Message {
            tid,
            version: None,
            ip: None,
            body: Body::Query(Query {
                id: evil_id,
                method,
                want: Want::default(),
                read_only: true,
            }),
        };
        let mut out = [0u8; 1500];
        let n = m.encode(&mut out).expect("fits");
        out[..n].to_vec()
    };
    // Garbage of every sort: random bytes, truncations, an oversized datagram, an
    // unsolicited response with too many values and one with fine values.
    let mut garbage: Vec<Vec<u8>> = Vec::new();
    for len in [0usize, 1, 7, 100, 1400, 4000] {
        garbage.push((0..len).map(|_| net.rng.next_u32() as u8).collect());
    }
    let ping = query(Method::Ping, b"p1");
    for cut in 1..ping.len() {
        garbage.push(ping[..cut].to_vec());
    }
    let mut many = b"d1:rd2:id20:eeeeeeeeeeeeeeeeeeee6:valuesl".to_vec();
    for _ in 0..500 {
        many.extend_from_slice(b"6:\x01\x02\x03\x04\x05\x06");
    }
    many.extend_from_slice(b"ee1:t2:aa1:y1:re");
    garbage.push(many);
    garbage.push(
        b"d1:rd2:id20:eeeeeeeeeeeeeeeeeeee6:valuesl6:\x01\x02\x03\x04\x05\x06ee1:t2:aa1:y1:re"
            .to_vec(),
    );
    garbage.push(b"d1:eli201e1:xe1:t2:aa1:y1:ee".to_vec());
    let n_garbage = garbage.len() as u64;
    for g in garbage {
        net.send(evil, to, g);
    }
    // Announces with wrong tokens: made up, and one issued to another address.
    let real_token = {
        net.send(
            evil,
            to,
            query(
                Method::GetPeers {
                    info_hash: ih.into(),
                },
                b"g1",
            ),
        );
        let until = net.now + 200;
        net.run_until(until);
        let (_, _, reply) = net
            .captured
            .iter()
            .find(|(_, d, _)| *d == evil)
            .expect("get_peers answered")
            .clone();
        let mut tokens = [btcore_core::bencode::Token::default(); krpc::TOKENS_NEEDED];
        let m = krpc::parse(&reply, &mut tokens).expect("valid reply");
        let Body::Response(r) = m.body else {
            panic!("{m:?}")
        };
        r.token.expect("a token").to_vec()
    };
    net.captured.clear();
    let bad_tokens: [&[u8]; 2] = [b"wrongtok", b"x"];
    for (k, tok) in bad_tokens.iter().enumerate() {
        let tid = [b'a', k as u8];
        let m = Method::AnnouncePeer {
            info_hash: ih.into(),
            port: 1234,
            implied_port: false,
            token: tok,
        };
        net.send(evil, to, query(m, &tid));
    }
    // The real token, used by someone else at another address, is refused too.
    let other: SocketAddr = "192.0.2.67:6666".parse().expect("addr");
    let m = Method::AnnouncePeer {
        info_hash: ih.into(),
        port: 1234,
        implied_port: false,
        token: &real_token,
    };
    net.send(other, to, query(m, b"o1"));
    let until = net.now + 1_000;
    net.run_until(until);
    let errors: Vec<i64> = net
        .captured
        .iter()
        .filter_map(|(_, _, b)| {
            let mut tokens = [btcore_core::bencode::Token::default(); krpc::TOKENS_NEEDED];
            match krpc::parse(b, &mut tokens).ok()?.body {
                Body::Error(e) => Some(e.code),
                _ => None,
            }
        })
        .collect();
    assert_eq!(
        errors,
        [203, 203, 203],
        "announces with wrong tokens are refused with 203"
    );
    let after = net.nodes[victim].dht.stats(net.t());
    assert_eq!(after.stored_peers, 0);
    assert_eq!(after.bad_tokens, before.bad_tokens + 3);
    assert!(
        after.dropped >= before.dropped + n_garbage,
        "{before:?} {after:?}"
    );
    assert!(
        net.nodes[victim].dht.table().get(&evil_id).is_none(),
        "read-only querier not added"
    );
    // A flood of queries is answered only up to the per-address rate.
    net.captured.clear();
    for k in 0..200u16 {
        net.send(evil, to, query(Method::Ping, &k.to_be_bytes()));
    }
    let until = net.now + 100;
    net.run_until(until);
    assert!(
        net.captured.len() <= 40,
        "{} answers to a flood",
        net.captured.len()
    );
    // The network is unaffected: nobody finds the refused peer, a real announce works.
    assert!(net.find_peers(50, ih).is_empty());
    net.announce(60, ih, 5555);
    let until = net.now + 20_000;
    net.run_until(until);
    let found = net.find_peers(50, ih);
    assert_eq!(
        found,
        HashSet::from([SocketAddr::new(net.nodes[60].addr.ip(), 5555)])
    );
}

// ---------------------------------------------------------------------------------------
// One node and scripted remote parties
// ---------------------------------------------------------------------------------------

/// One node driven directly by scripted remote parties (no network, no loss): what a
/// remote address sends goes in as it is, and what the node sends is kept for the
/// test to read or answer.
struct Solo {
    dht: Dht,
    now: u64,
    /// Datagrams the node sent and nobody read yet: (to, bytes).
    out: Vec<(SocketAddr, Vec<u8>)>,
}

fn krpc_query(id: NodeId, method: Method<'_>, tid: &[u8], read_only: bool) -> Vec<u8> {
    let m = Message {
        tid,
        version: None,
        ip: None,
        body: Body::Query(Query {
            id,
            method,
            want: Want::default(),
            read_only,
        }),
    };
    let mut out = [0u8; krpc::MAX_DATAGRAM];
    let n = m.encode(&mut out).expect("fits");
    out[..n].to_vec()
}

/// A bare response (`id` only) with transaction id `tid`, telling the querier it is
/// seen at `ip` (BEP 42) when given.
fn krpc_reply_ip(id: NodeId, tid: &[u8], ip: Option<SocketAddr>) -> Vec<u8> {
    let m = Message {
        tid,
        version: None,
        ip,
        body: Body::Response(krpc::Response {
            id,
            nodes: krpc::CompactNodes::default(),
            nodes6: krpc::CompactNodes::default(),
            values: krpc::Values::None,
            token: None,
        }),
    };
    let mut out = [0u8; krpc::MAX_DATAGRAM];
    let n = m.encode(&mut out).expect("fits");
    out[..n].to_vec()
}

/// `f` applied to the parsed datagram (`None` when it does not parse).
fn parsed<T>(bytes: &[u8], f: impl FnOnce(&Message<'_>) -> T) -> Option<T> {
    let mut tokens = [btcore_core::bencode::Token::default(); krpc::TOKENS_NEEDED];
    krpc::parse(bytes, &mut tokens).ok().map(|m| f(&m))
}

impl Solo {
    fn new(seed: u64) -> Self {
        Self::with(seed, DhtConfig::new)
    }

    /// A node with the settings `cfg` makes from an id and a token key.
    fn with(seed: u64, cfg: fn([u8; 20], [u8; 20]) -> DhtConfig) -> Self {
        let mut rng = Rng::new(seed);
        let cfg = cfg(random_id(&mut rng), random_id(&mut rng));
        Self {
            dht: Dht::new(cfg, Instant::from_millis(0), seed),
            now: 0,
            out: Vec::new(),
        }
    }

    fn t(&self) -> Instant {
        Instant::from_millis(self.now)
    }

    fn drain(&mut self) {
        let now = self.t();
        let mut buf = [0u8; krpc::MAX_DATAGRAM];
        while let Some((to, n)) = self.dht.poll_transmit(now, &mut buf) {
            self.out.push((to, buf[..n].to_vec()));
        }
        while self.dht.poll_event().is_some() {}
    }

    fn recv(&mut self, from: SocketAddr, bytes: &[u8]) {
        let now = self.t();
        self.dht.handle_datagram(now, from, bytes);
        self.drain();
    }

    /// Moves the clock `ms` on, running the node's timers on the way.
    fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        while let Some(t) = self.dht.poll_timeout().map(|t| t.as_millis()) {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            let now = self.t();
            self.dht.handle_timeout(now);
            self.drain();
        }
        self.now = end;
    }

    /// Sends `bytes` from `from` and returns what the node answered `from`.
    fn ask(&mut self, from: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
        self.recv(from, bytes);
        let i = self.out.iter().position(|(to, _)| *to == from)?;
        Some(self.out.remove(i).1)
    }

    /// Answers every query the node sent to an address of `nodes`, as that node
    /// (a bare response with its id); other datagrams are dropped. Returns how many.
    fn answer(&mut self, nodes: &HashMap<SocketAddr, NodeId>) -> usize {
        self.answer_ip(nodes, None)
    }

    /// As [`Solo::answer`], each response saying the node is seen at `ip`.
    fn answer_ip(&mut self, nodes: &HashMap<SocketAddr, NodeId>, ip: Option<SocketAddr>) -> usize {
        let mut answered = 0;
        for (to, bytes) in std::mem::take(&mut self.out) {
            let Some(&id) = nodes.get(&to) else { continue };
            let tid = parsed(&bytes, |m| {
                matches!(m.body, Body::Query(_)).then(|| m.tid.to_vec())
            });
            if let Some(Some(tid)) = tid {
                self.recv(to, &krpc_reply_ip(id, &tid, ip));
                answered += 1;
            }
        }
        answered
    }

    /// The nodes of the node's answer to a read-only `find_node(target)` from `probe`.
    fn find_node_answer(
        &mut self,
        probe: SocketAddr,
        target: NodeId,
    ) -> Vec<btcore_core::dht::NodeInfo> {
        let q = krpc_query(NodeId([0x77; 20]), Method::FindNode { target }, b"fn", true);
        let r = self.ask(probe, &q).expect("find_node answered");
        parsed(&r, |m| match m.body {
            Body::Response(r) => r.nodes.iter().chain(r.nodes6.iter()).collect(),
            _ => Vec::new(),
        })
        .expect("answer parses")
    }

    /// The token and peers of the node's answer to `get_peers(ih)` from `from`.
    fn get_peers_answer(&mut self, from: SocketAddr, ih: NodeId) -> (Vec<u8>, Vec<SocketAddr>) {
        let q = krpc_query(
            NodeId([0x78; 20]),
            Method::GetPeers { info_hash: ih },
            b"gp",
            true,
        );
        let r = self.ask(from, &q).expect("get_peers answered");
        parsed(&r, |m| match m.body {
            Body::Response(r) => (
                r.token.map(<[u8]>::to_vec).unwrap_or_default(),
                r.values.iter().collect(),
            ),
            _ => (Vec::new(), Vec::new()),
        })
        .expect("answer parses")
    }

    /// Announces `ih` at `port` from `from` with `token`; returns whether the node
    /// answered with a response (stored) rather than an error.
    fn announce_from(&mut self, from: SocketAddr, ih: NodeId, port: u16, token: &[u8]) -> bool {
        let m = Method::AnnouncePeer {
            info_hash: ih,
            port,
            implied_port: false,
            token,
        };
        let q = krpc_query(NodeId([0x79; 20]), m, b"ap", true);
        let r = self.ask(from, &q).expect("announce answered");
        parsed(&r, |m| matches!(m.body, Body::Response(_))).unwrap_or(false)
    }
}

/// An id sharing the first `bit` bits with `own`, differing at `bit`, random after:
/// it falls in bucket `bit` of `own`'s table once that bucket exists.
fn id_in_bucket(own: NodeId, bit: usize, rng: &mut Rng) -> NodeId {
    let mut id = random_id(rng);
    for b in 0..=bit {
        let (byte, mask) = (b / 8, 0x80u8 >> (b % 8));
        let want = if b == bit {
            !own.0[byte] & mask
        } else {
            own.0[byte] & mask
        };
        id[byte] = (id[byte] & !mask) | want;
    }
    NodeId(id)
}

/// An id valid for `addr` under BEP 42 (its first 21 bits from the address), the
/// other bits random.
fn bep42_id(addr: SocketAddr, rng: &mut Rng) -> NodeId {
    btcore_core::dht::bep42::node_id(addr.ip(), random_id(rng))
}

/// An id for the attackers below: every other one valid for its address under
/// BEP 42 (where it falls is up to the address), the rest of the attacker's choosing
/// (spread over the node's nearest buckets), which BEP 42 refuses.
fn attacker_id(addr: SocketAddr, own: NodeId, k: u16, rng: &mut Rng) -> NodeId {
    if k % 2 == 0 {
        bep42_id(addr, rng)
    } else {
        id_in_bucket(own, usize::from(k % 20), rng)
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port))
}

/// One address with many ports and ids, answering every query of the node (so each
/// of them looks alive), cannot take more than one routing-table entry; one /24 takes
/// at most one per bucket; what the node hands out in `nodes` follows. Half of the
/// attackers' ids are valid for their address under BEP 42, the other half of their
/// choosing near the node's id: those never enter at all.
#[test]
fn one_address_cannot_fill_the_routing_table() {
    let mut s = Solo::new(21);
    let own = s.dht.id();
    let mut rng = Rng::new(22);
    // 60 honest nodes over the node's 12 nearest buckets: they query it and answer.
    let mut honest: HashMap<SocketAddr, NodeId> = HashMap::new();
    for k in 0..60u8 {
        let addr = v4(10, 1, k, 1, 6881);
        let id = id_in_bucket(own, usize::from(k % 12), &mut rng);
        honest.insert(addr, id);
        s.recv(addr, &krpc_query(id, Method::Ping, b"h1", false));
        s.advance(10);
        while s.answer(&honest) > 0 {}
    }
    let honest_in = s.dht.table().len();
    assert!(honest_in >= 48, "{honest_in} honest nodes in the table");
    let mut attackers: HashMap<SocketAddr, NodeId> = HashMap::new();
    // 400 ports of 192.0.2.66, with ids spread over the node's 20 nearest buckets.
    for k in 0..400u16 {
        let addr = v4(192, 0, 2, 66, 20_000 + k);
        let id = attacker_id(addr, own, k, &mut rng);
        attackers.insert(addr, id);
        let q = krpc_query(id, Method::FindNode { target: id }, &k.to_be_bytes(), false);
        s.recv(addr, &q);
        // Below the per-source query rate.
        s.advance(60);
        while s.answer(&attackers) > 0 {}
    }
    let from_one_ip = s
        .dht
        .table()
        .nodes()
        .filter(|n| n.info.addr.ip() == v4(192, 0, 2, 66, 0).ip())
        .count();
    println!(
        "one IP, 400 ports: {from_one_ip} routing-table entries of {}",
        s.dht.table().len()
    );
    assert!(from_one_ip <= 1, "{from_one_ip} entries from one IP");
    let honest_left = s
        .dht
        .table()
        .nodes()
        .filter(|n| honest.contains_key(&n.info.addr))
        .count();
    assert_eq!(honest_left, honest_in, "honest nodes keep their places");
    let handed: usize = (0..20)
        .map(|b| {
            let target = id_in_bucket(own, b, &mut rng);
            s.find_node_answer(v4(203, 0, 113, 9, 4000), target)
                .iter()
                .filter(|n| n.addr.ip() == v4(192, 0, 2, 66, 0).ip())
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(handed <= 1, "{handed} nodes of one IP in one answer");

    // 200 addresses of one /24, one port each, ids spread the same way.
    let mut subnet: HashMap<SocketAddr, NodeId> = HashMap::new();
    for k in 0..200u16 {
        let addr = v4(198, 51, 100, 1 + k as u8, 6881);
        let id = attacker_id(addr, own, k, &mut rng);
        subnet.insert(addr, id);
        let q = krpc_query(id, Method::FindNode { target: id }, &k.to_be_bytes(), false);
        s.recv(addr, &q);
        s.advance(10);
        while s.answer(&subnet) > 0 {}
    }
    let from_subnet = s
        .dht
        .table()
        .nodes()
        .filter(|n| matches!(n.info.addr.ip(), std::net::IpAddr::V4(a) if a.octets()[..3] == [198, 51, 100]))
        .count();
    let buckets = s.dht.stats(s.t()).buckets;
    println!(
        "one /24, 200 addresses: {from_subnet} entries in {buckets} buckets of {} nodes",
        s.dht.table().len()
    );
    assert!(
        from_subnet <= buckets,
        "{from_subnet} entries from one /24 in {buckets} buckets"
    ); // BEP 42: what got in has an id valid for its address; the ids the attackers
       // chose (every other one) stayed out, buckets and replacement caches alike.
    let entries = || s.dht.table().nodes().chain(s.dht.table().replacements());
    let invalid = entries()
        .filter(|n| !bep42::id_matches(&n.info.id, n.info.addr.ip()))
        .count();
    assert_eq!(invalid, 0, "entries whose id does not match their address");
}

/// Queriers that never answer a query of ours (spoofed sources, or nodes that cannot
/// be reached) are neither in the routing table nor handed out to others; a querier
/// that answers our check gets in.
#[test]
fn unverified_queriers_are_never_handed_out() {
    let mut s = Solo::new(31);
    let mut rng = Rng::new(32);
    // 20 honest nodes: they query us, and answer what we ask.
    let mut honest: HashMap<SocketAddr, NodeId> = HashMap::new();
    for k in 0..20u8 {
        let addr = v4(10, 1, k, 1, 6881);
        let id = NodeId(random_id(&mut rng));
        honest.insert(addr, id);
        s.recv(addr, &krpc_query(id, Method::Ping, b"h1", false));
        while s.answer(&honest) > 0 {}
    }
    let in_table = s.dht.table().len();
    assert!(
        in_table >= 8,
        "honest nodes that answer get in ({in_table})"
    );
    // 60 spoofed queriers with ids right next to a target, at addresses of their
    // choosing (one per /24), which never answer.
    let target = NodeId(random_id(&mut rng));
    let mut spoofed = HashSet::new();
    for k in 0..60u8 {
        let addr = v4(100, 64 + k, 7, 7, 6881);
        let mut id = target.0;
        id[19] ^= k + 1;
        spoofed.insert(addr);
        s.recv(addr, &krpc_query(NodeId(id), Method::Ping, b"s1", false));
    }
    s.out.clear();
    let answer = s.find_node_answer(v4(203, 0, 113, 9, 4000), target);
    let leaked = answer.iter().filter(|n| spoofed.contains(&n.addr)).count();
    assert_eq!(leaked, 0, "unverified nodes handed out: {answer:?}");
    let listed = s
        .dht
        .table()
        .nodes()
        .filter(|n| spoofed.contains(&n.info.addr))
        .count();
    assert_eq!(listed, 0, "unverified nodes in the routing table");
    // Their checks time out; still nothing of them, and the honest nodes stay.
    s.advance(10_000);
    s.out.clear();
    let answer = s.find_node_answer(v4(203, 0, 113, 9, 4000), target);
    assert!(answer.iter().all(|n| !spoofed.contains(&n.addr)));
    assert_eq!(s.dht.table().len(), in_table);
    // A new querier that answers our check gets in (an id near ours: its bucket
    // has room).
    let late = v4(10, 9, 9, 9, 6881);
    let late_id = id_in_bucket(s.dht.id(), 30, &mut rng);
    honest.insert(late, late_id);
    s.recv(late, &krpc_query(late_id, Method::Ping, b"l1", false));
    assert!(
        s.dht.table().get(&late_id).is_none(),
        "not before it answers"
    );
    while s.answer(&honest) > 0 {}
    assert!(
        s.dht.table().get(&late_id).is_some(),
        "an answering querier gets in"
    );
}

/// One address with one token cannot fill a torrent's peer store: one entry per IP,
/// the newest port wins.
#[test]
fn one_address_cannot_fill_a_torrents_peer_store() {
    let mut s = Solo::new(41);
    let evil = v4(192, 0, 2, 66, 6881);
    let ih = NodeId([0x42; 20]);
    let (token, _) = s.get_peers_answer(evil, ih);
    assert!(!token.is_empty());
    for k in 0..300u16 {
        s.announce_from(evil, ih, 1000 + k, &token);
        s.advance(60);
    }
    let stored = s.dht.stats(s.t()).stored_peers;
    let (_, peers) = s.get_peers_answer(v4(203, 0, 113, 9, 4000), ih);
    println!("one IP, 300 ports, one torrent: {stored} stored, answer {peers:?}");
    assert_eq!(stored, 1, "one entry per IP and torrent");
    assert_eq!(peers, [v4(192, 0, 2, 66, 1299)], "the newest port wins");
}

/// One address with one token cannot take the peer store's torrents (a per-IP cap
/// over all torrents): others' announces of a new torrent are still stored and found.
#[test]
fn one_address_cannot_fill_the_peer_stores_torrents() {
    let mut s = Solo::new(42);
    let evil = v4(192, 0, 2, 66, 6881);
    let (token, _) = s.get_peers_answer(evil, NodeId([0x42; 20]));
    // 2,500 torrents from one address and token.
    for k in 0..2_500u32 {
        let mut h = [0x55u8; 20];
        h[..4].copy_from_slice(&k.to_be_bytes());
        s.announce_from(evil, NodeId(h), 6881, &token);
        s.advance(60);
    }
    let stored = s.dht.stats(s.t()).stored_peers;
    println!("one IP, 2,500 torrents: {stored} peers stored");
    // Honest announcers of a new torrent, from their own addresses, are stored.
    let fresh = NodeId([0x43; 20]);
    let mut expected = HashSet::new();
    for k in 0..5u8 {
        let from = v4(10, 2, k, 1, 6881);
        let (tok, _) = s.get_peers_answer(from, fresh);
        assert!(
            s.announce_from(from, fresh, 7000, &tok),
            "announce {k} stored"
        );
        expected.insert(v4(10, 2, k, 1, 7000));
    }
    let (_, found) = s.get_peers_answer(v4(203, 0, 113, 9, 4000), fresh);
    assert_eq!(found.into_iter().collect::<HashSet<_>>(), expected);
    assert!(stored <= 100, "{stored} peers stored for one IP");
}

// ---------------------------------------------------------------------------------------
// IPv6 parties, rate limits and amplification
// ---------------------------------------------------------------------------------------

/// `[2001:db8:a:b:c::d]:port`: within the documentation prefix, the /48 is `a`,
/// the /64 `a:b`.
fn v6(a: u16, b: u16, c: u16, d: u16, port: u16) -> SocketAddr {
    SocketAddr::new(
        std::net::IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0x0db8, a, b, c, 0, 0, d)),
        port,
    )
}

/// `[fd00:a::1]:port`: a unique local address (BEP 42 exempts it, as 10/8), each
/// `a` in a /48 of its own.
fn ula(a: u16, port: u16) -> SocketAddr {
    SocketAddr::new(
        std::net::IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, a, 0, 0, 0, 0, 0, 1)),
        port,
    )
}

/// Whether `a` is in the IPv6 /64 of `b`.
fn in_64(a: &SocketAddr, b: &SocketAddr) -> bool {
    match (a.ip(), b.ip()) {
        (std::net::IpAddr::V6(x), std::net::IpAddr::V6(y)) => x.octets()[..8] == y.octets()[..8],
        _ => false,
    }
}

/// The peers the node stores for `ih`.
fn stored_peers(s: &Solo, ih: &NodeId) -> Vec<SocketAddr> {
    s.dht
        .store()
        .iter()
        .find(|(h, _)| *h == ih)
        .map(|(_, peers)| peers.collect())
        .unwrap_or_default()
}

impl Solo {
    /// `get_peers` then `announce_peer` from `from` (its own token), 120 ms later.
    /// Returns whether the announce was stored.
    fn announce_with_token(&mut self, from: SocketAddr, ih: NodeId, port: u16) -> bool {
        let (token, _) = self.get_peers_answer(from, ih);
        self.advance(60);
        let stored = self.announce_from(from, ih, port, &token);
        self.advance(60);
        stored
    }
}

/// One IPv6 /64 announcing from 300 of its addresses, each with the token it was
/// given, is one party: it takes one place in the torrent, and the 20 honest peers
/// (each in a /48 of its own) keep theirs.
#[test]
fn one_ipv6_64_takes_one_place_in_a_torrent() {
    let mut s = Solo::new(61);
    let ih = NodeId([0x42; 20]);
    let honest: Vec<SocketAddr> = (0..20u16).map(|k| v6(0x100 + k, 0, 0, 1, 6881)).collect();
    for &h in &honest {
        assert!(s.announce_with_token(h, ih, 7000));
    }
    let evil = v6(0x66, 0, 0, 1, 6881);
    for k in 0..300u16 {
        s.announce_with_token(v6(0x66, 0, k, 1, 6881), ih, 1000 + k);
    }
    let peers = stored_peers(&s, &ih);
    let from_64 = peers.iter().filter(|p| in_64(p, &evil)).count();
    let honest_left = honest
        .iter()
        .filter(|h| peers.iter().any(|p| p.ip() == h.ip()))
        .count();
    println!(
        "one /64, 300 addresses: {from_64} entries in the torrent, {honest_left} of 20 honest peers kept"
    );
    assert!(from_64 <= 1, "{from_64} entries of one /64 in one torrent");
    assert_eq!(honest_left, 20, "honest peers evicted: {peers:?}");
}

/// One IPv6 /64 storing over many torrents from many of its addresses is held to
/// the per-address cap (`StoreLimits::per_ip`, 64), not 64 per address: it cannot
/// flush the store.
#[test]
fn one_ipv6_64_is_capped_over_all_torrents() {
    let mut s = Solo::new(62);
    let per_ip = s.dht.store().limits().per_ip;
    for k in 0..300u16 {
        let mut h = [0x55u8; 20];
        h[..2].copy_from_slice(&k.to_be_bytes());
        s.announce_with_token(v6(0x66, 0, k, 1, 6881), NodeId(h), 6881);
    }
    let stored = s.dht.stats(s.t()).stored_peers;
    println!("one /64, 300 addresses, 300 torrents: {stored} peers stored (per_ip {per_ip})");
    assert!(stored <= per_ip, "{stored} peers stored for one /64");
}

/// A whole IPv4 /24 or IPv6 /48 (254 or 300 hosts, each announcing once with its
/// own token) fills a full torrent only at its own expense: a full torrent evicts
/// from its most represented subnet, so the honest peers stay.
#[test]
fn one_subnet_cannot_evict_a_torrents_honest_peers() {
    for v6_attack in [false, true] {
        let mut s = Solo::new(63);
        let ih = NodeId([0x42; 20]);
        let honest: Vec<SocketAddr> = (0..20u8)
            .map(|k| {
                if v6_attack {
                    v6(0x100 + u16::from(k), 0, 0, 1, 6881)
                } else {
                    v4(10, 3, k, 1, 6881)
                }
            })
            .collect();
        for &h in &honest {
            assert!(s.announce_with_token(h, ih, 7000));
        }
        let attackers: Vec<SocketAddr> = if v6_attack {
            (0..300u16).map(|k| v6(0x66, k, 0, 1, 6881)).collect()
        } else {
            (1..=254u8).map(|k| v4(198, 51, 100, k, 6881)).collect()
        };
        for (k, &a) in attackers.iter().enumerate() {
            s.announce_with_token(a, ih, 1000 + k as u16);
        }
        let peers = stored_peers(&s, &ih);
        let honest_left = honest
            .iter()
            .filter(|h| peers.iter().any(|p| p.ip() == h.ip()))
            .count();
        println!(
            "one {} subnet, {} hosts: {} entries in the torrent, {honest_left} of 20 honest peers kept",
            if v6_attack { "IPv6 /48" } else { "IPv4 /24" },
            attackers.len(),
            peers.len()
        );
        assert_eq!(honest_left, 20, "honest peers evicted");
    }
}

/// One IPv6 /64 with many addresses, answering every query of the node, takes one
/// routing-table entry (like one IPv4 address), and the node hands out at most one
/// of it.
#[test]
fn one_ipv6_64_takes_one_routing_table_entry() {
    let mut s = Solo::new(64);
    let own = s.dht.id_of(true);
    let mut rng = Rng::new(65);
    let mut honest: HashMap<SocketAddr, NodeId> = HashMap::new();
    for k in 0..60u16 {
        let addr = ula(0x100 + k, 6881);
        let id = id_in_bucket(own, usize::from(k % 12), &mut rng);
        honest.insert(addr, id);
        s.recv(addr, &krpc_query(id, Method::Ping, b"h1", false));
        s.advance(10);
        while s.answer(&honest) > 0 {}
    }
    let honest_in = s.dht.table6().len();
    assert!(honest_in >= 48, "{honest_in} honest nodes in the table");
    let evil = v6(0x66, 0, 0, 1, 6881);
    let mut attackers: HashMap<SocketAddr, NodeId> = HashMap::new();
    for k in 0..200u16 {
        let addr = v6(0x66, 0, k, 1, 20_000 + k);
        let id = attacker_id(addr, own, k, &mut rng);
        attackers.insert(addr, id);
        let q = krpc_query(id, Method::FindNode { target: id }, &k.to_be_bytes(), false);
        s.recv(addr, &q);
        s.advance(60);
        while s.answer(&attackers) > 0 {}
    }
    let from_64 = s
        .dht
        .table()
        .nodes()
        .chain(s.dht.table6().replacements())
        .filter(|n| in_64(&n.info.addr, &evil))
        .count();
    println!(
        "one /64, 200 addresses: {from_64} routing-table entries of {}",
        s.dht.table6().len()
    );
    assert!(from_64 <= 1, "{from_64} entries from one /64");
    let handed: usize = (0..20)
        .map(|b| {
            let target = id_in_bucket(own, b, &mut rng);
            s.find_node_answer(v6(0x200, 0, 0, 9, 4000), target)
                .iter()
                .filter(|n| in_64(&n.addr, &evil))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(handed <= 1, "{handed} nodes of one /64 in one answer");
}

/// A flooding address whose queries are interleaved with queries from ever new
/// addresses (more than any small table of addresses holds) is still answered only
/// up to the per-source rate: rotation cannot flush the limiter.
#[test]
fn rotating_sources_cannot_flush_the_query_rate_limit() {
    let mut s = Solo::new(71);
    let evil = v4(192, 0, 2, 66, 6881);
    let ping = |tid: u16| krpc_query(NodeId([0xee; 20]), Method::Ping, &tid.to_be_bytes(), true);
    // 100 addresses (each in its own /24) query first, then the flooder alternates
    // with 200 more: 400 queries within one second.
    let mut fresh = (0..300u16).map(|k| v4(100, 64 + (k / 250) as u8, (k % 250) as u8, 1, 6881));
    for _ in 0..100 {
        let a = fresh.next().expect("address");
        s.recv(a, &ping(0));
    }
    let mut answered = 0;
    for k in 0..200u16 {
        if s.ask(evil, &ping(k)).is_some() {
            answered += 1;
        }
        let a = fresh.next().expect("address");
        s.recv(a, &ping(k));
        s.out.clear();
        s.advance(2);
    }
    println!(
        "flooder interleaved with 300 other sources: {answered} of 200 queries answered in 0.4 s"
    );
    // A second's worth at once (20), then 20 a second.
    assert!(answered <= 29, "{answered} of 200 answered");
}

/// What the node's `get_peers` and `find_node` answers hold for IPv4 and IPv6
/// queriers (BEP 5: values when it has peers of the querier's family, else nodes;
/// BEP 32: the families `want` names, else the querier's own), and that the
/// reply-size ratio still leaves room for a full answer to a usual query.
#[test]
fn answers_follow_bep5_values_or_nodes() {
    let mut s = Solo::new(72);
    let own = s.dht.id();
    let mut rng = Rng::new(73);
    // 30 IPv4 and 30 IPv6 nodes in the table.
    let mut honest: HashMap<SocketAddr, NodeId> = HashMap::new();
    for k in 0..30u16 {
        for addr in [v4(10, 4, k as u8, 1, 6881), ula(0x300 + k, 6881)] {
            let id = id_in_bucket(own, usize::from(k % 10), &mut rng);
            honest.insert(addr, id);
            s.recv(addr, &krpc_query(id, Method::Ping, b"h1", false));
            s.advance(10);
            while s.answer(&honest) > 0 {}
        }
    }
    let ih = NodeId([0x42; 20]);
    for k in 0..10u8 {
        assert!(s.announce_with_token(v4(10, 5, k, 1, 6881), ih, 7000));
    }
    let probe = v4(203, 0, 113, 9, 4000);
    let probe6 = v6(0x2001, 0xdb8, 0, 9, 4000);
    // A query as libtorrent sends it (with its version).
    let ask_from = |s: &mut Solo, from: SocketAddr, target: NodeId, get_peers: bool, want: Want| {
        let m = Message {
            tid: b"q1",
            version: Some(b"LT\x02\x00"),
            ip: None,
            body: Body::Query(Query {
                id: NodeId([0x78; 20]),
                method: if get_peers {
                    Method::GetPeers { info_hash: target }
                } else {
                    Method::FindNode { target }
                },
                want,
                read_only: true,
            }),
        };
        let mut out = [0u8; krpc::MAX_DATAGRAM];
        let n = m.encode(&mut out).expect("fits");
        s.advance(100);
        let r = s.ask(from, &out[..n]).expect("answered");
        parsed(&r, |m| match m.body {
            Body::Response(r) => (
                r.nodes.len(),
                r.nodes6.len(),
                r.values.len(),
                r.token.is_some(),
            ),
            _ => panic!("not a response"),
        })
        .expect("parses")
    };
    let ask = |s: &mut Solo, target: NodeId, get_peers: bool, want: Want| {
        ask_from(s, probe, target, get_peers, want)
    };
    let none = Want::default();
    let both = Want { n4: true, n6: true };
    // get_peers of a stored torrent: values and a token, no nodes.
    assert_eq!(ask(&mut s, ih, true, none), (0, 0, 10, true));
    assert_eq!(ask(&mut s, ih, true, both), (0, 0, 10, true));
    // get_peers of anything else: nodes of the querier's family and a token.
    let (n4, n6, values, token) = ask(&mut s, NodeId([0x43; 20]), true, none);
    assert!(
        n4 == 8 && n6 == 0 && values == 0 && token,
        "{n4} {n6} {values} {token}"
    );
    // find_node: nodes of the querier's family, nodes6 only when asked.
    let (n4, n6, _, token) = ask(&mut s, NodeId([0x43; 20]), false, none);
    assert!(n4 == 8 && n6 == 0 && !token, "{n4} {n6}");
    let (n4, n6, _, _) = ask(
        &mut s,
        NodeId([0x43; 20]),
        false,
        Want {
            n4: false,
            n6: true,
        },
    );
    assert!(n4 == 0 && n6 > 0, "{n4} {n6}");
    // An IPv6 querier: without `want`, a full answer of IPv6 nodes only (the
    // reply-size ratio leaves room for 8 of them); IPv4 peers are not its values.
    let other = NodeId([0x43; 20]);
    assert_eq!(
        ask_from(&mut s, probe6, other, false, none),
        (0, 8, 0, false)
    );
    assert_eq!(ask_from(&mut s, probe6, ih, true, none), (0, 8, 0, true));
    // With `want` of both: its own family in full first, then the IPv4 nodes that
    // still fit in the ratio.
    let (n4, n6, _, _) = ask_from(&mut s, probe6, other, false, both);
    assert!(n6 == 8 && (1..8).contains(&n4), "{n4} {n6}");
}

/// Spoofed sources rotating over thousands of addresses (each query from an address
/// the node never heard of, as a reflection attack looks) ask for everything:
/// `get_peers` of a torrent the node stores peers for and of others, `find_node`,
/// `want` both families, not read-only (the node would ping them). Every byte the
/// node sends in answer is at most a small multiple of the bytes it was sent, and
/// at a flood's rate the node's answers stay within its byte budget.
#[test]
fn spoofed_sources_get_no_amplification() {
    amplification(DhtConfig::new);
}

/// The same with the low-memory profile (a smaller rate table and byte budget).
#[test]
fn spoofed_sources_get_no_amplification_low_memory() {
    amplification(DhtConfig::low_memory);
}

fn amplification(cfg: fn([u8; 20], [u8; 20]) -> DhtConfig) {
    let mut s = Solo::with(74, cfg);
    let budget = f64::from(s.dht.config().unconfirmed_reply_bytes_per_sec);
    let own = s.dht.id();
    let mut rng = Rng::new(75);
    let mut honest: HashMap<SocketAddr, NodeId> = HashMap::new();
    for k in 0..40u16 {
        for addr in [v4(10, 4, k as u8, 1, 6881), ula(0x300 + k, 6881)] {
            let id = id_in_bucket(own, usize::from(k % 12), &mut rng);
            honest.insert(addr, id);
            s.recv(addr, &krpc_query(id, Method::Ping, b"h1", false));
            s.advance(10);
            while s.answer(&honest) > 0 {}
        }
    }
    let ih = NodeId([0x42; 20]);
    for k in 0..40u8 {
        s.announce_with_token(v4(10, 5, k, 1, 6881), ih, 7000);
        s.announce_with_token(v6(0x500 + u16::from(k), 0, 0, 1, 6881), ih, 7000);
    }
    s.advance(5_000);
    s.out.clear();
    let query = |k: u32| {
        let target = match k % 3 {
            0 => ih,
            _ => NodeId(random_id(&mut Rng::new(u64::from(k)))),
        };
        let m = Message {
            tid: &k.to_be_bytes()[2..],
            version: Some(b"LT\x01\x02"),
            ip: None,
            body: Body::Query(Query {
                id: NodeId(random_id(&mut Rng::new(u64::from(k) + 1_000_000))),
                method: if k % 3 == 2 {
                    Method::FindNode { target }
                } else {
                    Method::GetPeers { info_hash: target }
                },
                want: Want { n4: true, n6: true },
                read_only: false,
            }),
        };
        let mut out = [0u8; krpc::MAX_DATAGRAM];
        let n = m.encode(&mut out).expect("fits");
        out[..n].to_vec()
    };
    let spoofed = |k: u32| {
        if k % 2 == 0 {
            v4(
                100,
                64 + (k / 65_536 % 64) as u8,
                (k / 256) as u8,
                k as u8,
                6881,
            )
        } else {
            v6(0x1000 + (k / 65_536) as u16, k as u16, 0, 1, 6881)
        }
    };
    // At 20 queries a second for 20 s, then at 1,000 a second for 10 s.
    for (phase, count, gap_ms) in [("slow", 400u32, 50u64), ("flood", 10_000, 1)] {
        let (mut bytes_in, mut bytes_out, mut answered) = (0usize, 0usize, 0usize);
        // The largest ratio of bytes sent to a query's source to the query's bytes.
        let mut worst = 0.0f64;
        let first = if phase == "slow" { 0 } else { 1_000_000 };
        for k in first..first + count {
            let q = query(k);
            bytes_in += q.len();
            let from = spoofed(k);
            s.recv(from, &q);
            answered += s.out.iter().filter(|(to, _)| *to == from).count().min(1);
            bytes_out += s.out.iter().map(|(_, b)| b.len()).sum::<usize>();
            let back: usize = s
                .out
                .iter()
                .filter(|(to, _)| *to == from)
                .map(|(_, b)| b.len())
                .sum();
            worst = worst.max(back as f64 / q.len() as f64);
            s.out.clear();
            s.advance(gap_ms);
        }
        let ratio = bytes_out as f64 / bytes_in as f64;
        let secs = (u64::from(count) * gap_ms) as f64 / 1000.0;
        println!(
            "{phase}: {count} spoofed queries over {secs} s, {bytes_in} B in, {bytes_out} B out \
             (ratio {ratio:.2}, {:.0} B/s; to one source at most {worst:.2} times its query), \
             {answered} answered",
            bytes_out as f64 / secs
        );
        assert!(ratio <= 4.0, "{phase}: amplification {ratio:.2}");
        assert!(
            worst <= 4.0,
            "{phase}: one query answered with {worst:.2} times its size"
        );
        if phase == "slow" {
            assert!(
                answered as u32 >= count * 9 / 10,
                "honest-rate queries answered"
            );
        } else {
            // The flood is answered within the byte budget for unconfirmed sources
            // (its rate and three seconds of burst over 10 s: 1.3 times its rate),
            // plus the node's own maintenance queries: far less than it was sent.
            assert!(ratio <= 1.0, "flood: amplification {ratio:.2}");
            assert!(
                bytes_out as f64 / secs <= budget * 1.3 + 2_000.0,
                "flood answered at {:.0} B/s",
                bytes_out as f64 / secs
            );
        }
    }
}

/// Spoofed queriers with ids next to the node's own (where its table has room, so
/// each would be pinged) cannot fill its queries in flight with pings that are never
/// answered: a lookup started during the flood still sends its queries.
#[test]
fn spoofed_queriers_cannot_starve_our_lookups() {
    let mut s = Solo::new(76);
    let own = s.dht.id();
    let mut rng = Rng::new(77);
    let mut honest: HashMap<SocketAddr, NodeId> = HashMap::new();
    for k in 0..20u8 {
        let addr = v4(10, 6, k, 1, 6881);
        let id = id_in_bucket(own, usize::from(k % 4), &mut rng);
        honest.insert(addr, id);
        s.recv(addr, &krpc_query(id, Method::Ping, b"h1", false));
        while s.answer(&honest) > 0 {}
    }
    s.advance(5_000);
    s.out.clear();
    // 300 spoofed queriers in half a second, each from a /24 of its own.
    for k in 0..300u16 {
        let mut id = own.0;
        id[19] ^= (k & 0xff) as u8;
        id[18] ^= (k >> 8) as u8 + 1;
        let from = v4(100, 64, k as u8, (k >> 8) as u8 + 1, 6881);
        s.recv(from, &krpc_query(NodeId(id), Method::Ping, b"s1", false));
        s.advance(1);
    }
    let in_flight = s.dht.stats(s.t()).queries_in_flight;
    s.out.clear();
    let target = NodeId(random_id(&mut rng));
    s.dht.find_node(s.t(), target).expect("lookup slot");
    s.drain();
    let asked = s
        .out
        .iter()
        .filter(|(to, _)| honest.contains_key(to))
        .count();
    println!("300 spoofed queriers: {in_flight} queries in flight, a new lookup sent {asked}");
    assert!(asked >= 3, "a lookup during the flood sent {asked} queries");
}

// ---------------------------------------------------------------------------------------
// BEP 42: our own id from our external address
// ---------------------------------------------------------------------------------------

/// The node learns its external address from the `ip` of answers to its queries,
/// believes it once four subnets agree (one subnet repeating it, or three, are not
/// enough), and then takes an id derived from it, keeping its routing table; an
/// address the host sets is taken at once.
#[test]
fn our_id_follows_our_external_address() {
    let mut s = Solo::new(81);
    let first = s.dht.id();
    let ours: SocketAddr = "198.51.100.7:6881".parse().expect("addr");
    assert!(
        !bep42::id_matches(&first, ours.ip()),
        "a random id (seed 81) fails"
    );
    let mut rng = Rng::new(82);
    // Nodes query us, we ping them back, they answer with `ip` = ours.
    let mut voters = |s: &mut Solo, addrs: &[SocketAddr]| {
        let nodes: HashMap<SocketAddr, NodeId> =
            addrs.iter().map(|&a| (a, bep42_id(a, &mut rng))).collect();
        for (&a, &id) in &nodes {
            s.recv(a, &krpc_query(id, Method::Ping, b"v1", false));
            s.advance(10);
        }
        while s.answer_ip(&nodes, Some(ours)) > 0 {}
    };
    // Ten addresses of one /24, then two more /24s: three subnets.
    let one_24: Vec<SocketAddr> = (1..=10u8).map(|k| v4(203, 0, 113, k, 6881)).collect();
    voters(&mut s, &one_24);
    voters(&mut s, &[v4(192, 0, 2, 1, 6881), v4(100, 64, 0, 1, 6881)]);
    assert_eq!(s.dht.id(), first, "three subnets do not move our id");
    assert_eq!(s.dht.external_ip(false), None);
    let before = s.dht.table().len();
    assert!(before >= 3, "{before} voters in the table");
    // A fourth subnet.
    voters(&mut s, &[v4(100, 65, 0, 1, 6881)]);
    let id = s.dht.id();
    println!("external address voted by 4 subnets: id {first:?} -> {id:?}");
    assert_eq!(s.dht.external_ip(false), Some(ours.ip()));
    assert_ne!(id, first);
    assert!(bep42::id_matches(&id, ours.ip()));
    assert_eq!(s.dht.table().own_id(), id);
    assert!(s.dht.table().len() >= before, "the table is kept");
    // Our answers carry the new id.
    let r = s
        .ask(
            v4(10, 9, 9, 9, 1),
            &krpc_query(NodeId([1; 20]), Method::Ping, b"p", true),
        )
        .expect("answered");
    let answered_id = parsed(&r, |m| match m.body {
        Body::Response(r) => Some(r.id),
        _ => None,
    });
    assert_eq!(answered_id, Some(Some(id)));
    // The host knows better (its router told it): taken at once.
    let new: std::net::IpAddr = "203.0.113.200".parse().expect("ip");
    let now = s.t();
    s.dht.set_external_ip(now, new);
    assert_eq!(s.dht.external_ip(false), Some(new));
    assert!(bep42::id_matches(&s.dht.id(), new));
    // A local address needs no particular id: nothing changes.
    let id = s.dht.id();
    s.dht
        .set_external_ip(now, "192.168.1.2".parse().expect("ip"));
    assert_eq!(s.dht.id(), id);
}

/// BEP 42 "Enforcement": a `get_peers` answer from a node whose id does not match
/// its address counts as one without a token, so an announce goes to the closest
/// nodes that gave a token and whose ids match; the node with a made-up id at a
/// public address is still asked (it may know nodes), never announced to.
#[test]
fn announces_go_only_to_nodes_whose_id_matches_their_address() {
    let mut s = Solo::new(91);
    let mut rng = Rng::new(92);
    let g = v4(192, 0, 2, 7, 6881);
    let g_id = bep42_id(g, &mut rng);
    let mut known = HashMap::from([(g, g_id)]);
    s.recv(g, &krpc_query(g_id, Method::Ping, b"g1", false));
    while s.answer(&known) > 0 {}
    assert!(s.dht.table().get(&g_id).is_some(), "g in the table");
    let bad = v4(198, 51, 100, 9, 6881);
    let bad_id = NodeId([0x42; 20]);
    assert!(!bep42::id_matches(&bad_id, bad.ip()));
    let good = v4(203, 0, 113, 5, 6881);
    let good_id = bep42_id(good, &mut rng);
    known.insert(bad, bad_id);
    known.insert(good, good_id);
    let mut named = [0u8; 2 * krpc::NODE4_LEN];
    let mut len = 0;
    for (id, addr) in [(bad_id, bad), (good_id, good)] {
        let n = btcore_core::dht::NodeInfo { id, addr };
        len += n.write_compact(&mut named[len..]).expect("fits");
    }
    let ih = InfoHash([0x42; 20]);
    let now = s.t();
    s.dht.announce(now, ih, 7000, false).expect("lookup");
    s.drain();
    let mut asked = HashSet::new();
    let mut announced = HashSet::new();
    for _ in 0..10 {
        for (to, bytes) in std::mem::take(&mut s.out) {
            let q = parsed(&bytes, |m| match m.body {
                Body::Query(q) => Some((
                    m.tid.to_vec(),
                    matches!(q.method, Method::GetPeers { .. }),
                    matches!(q.method, Method::AnnouncePeer { .. }),
                )),
                _ => None,
            })
            .flatten();
            let Some((tid, get_peers, announce)) = q else {
                continue;
            };
            match (get_peers, announce) {
                (true, _) => {
                    asked.insert(to);
                    let Some(&id) = known.get(&to) else { continue };
                    let nodes = if to == g { &named[..len] } else { &[][..] };
                    let m = Message {
                        tid: &tid,
                        version: None,
                        ip: None,
                        body: Body::Response(krpc::Response {
                            id,
                            nodes: krpc::CompactNodes::v4(nodes).expect("nodes"),
                            nodes6: krpc::CompactNodes::default(),
                            values: krpc::Values::None,
                            token: Some(b"tk"),
                        }),
                    };
                    let mut out = [0u8; krpc::MAX_DATAGRAM];
                    let n = m.encode(&mut out).expect("fits");
                    s.recv(to, &out[..n]);
                }
                (_, true) => {
                    announced.insert(to);
                }
                _ => {}
            }
        }
    }
    println!("asked {asked:?}, announced to {announced:?}");
    assert!(asked.contains(&bad), "the node with a made-up id is asked");
    assert_eq!(announced, HashSet::from([g, good]));
}
