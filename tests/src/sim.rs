//! A deterministic in-memory swarm: many btcore sessions against each other with a
//! simulated clock, per-link bandwidth and latency, disconnects, peers joining and
//! leaving, and hostile peers. No socket, no thread: the same seed gives the same run,
//! byte for byte.
//!
//! Each node has a [`Session`] and its own storage (a byte vector per torrent). The
//! simulator carries the session's actions out: it delivers bytes over links after
//! latency plus serialization time, writes and reads storage, hashes pieces, and plays
//! a tracker that hands every node the addresses of the others.

use btcore_core::bitfield::Bitfield;
use btcore_core::hash::{Sha1, SmolSha1};
use btcore_core::ids::PeerId;
use btcore_core::metainfo::{Limits, Metainfo};
use btcore_core::rng::Rng;
use btcore_core::session::{Action, ConnId, Event, Session, SessionConfig, TorrentId};
use btcore_core::time::{Duration, Instant};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// How a node behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// An honest btcore session.
    Honest,
    /// Serves blocks with flipped bytes.
    Corrupt,
    /// Answers with garbage frames after the handshake.
    Garbage,
    /// Completes handshakes, claims every piece, never answers a request.
    Silent,
}

/// Link properties of a node (applied to both directions of its links).
#[derive(Clone, Copy, Debug)]
pub struct LinkSpec {
    /// Upload bandwidth in bytes per second.
    pub up_bps: u64,
    /// One-way latency.
    pub latency: Duration,
}

impl Default for LinkSpec {
    fn default() -> Self {
        Self {
            up_bps: 1_000_000,
            latency: Duration::from_millis(20),
        }
    }
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
    /// When it finished, if it did.
    pub finished_at: Option<Instant>,
    /// Whether it is still running.
    pub alive: bool,
    /// Payload bytes it uploaded to other nodes (block messages).
    pub uploaded: u64,
    /// Pieces verified (events), to check no corrupt piece is ever verified.
    pub verified: Vec<u32>,
    /// Peers it banned.
    pub banned: Vec<SocketAddr>,
    /// Upload link busy until.
    busy_until: Instant,
}

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
}

/// The simulation.
#[allow(missing_debug_implementations)]
pub struct Sim {
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The simulated clock.
    pub now: Instant,
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
            torrent_file,
            content,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            links: BTreeMap::new(),
            rng: Rng::new(seed),
            piece_len,
            hashes,
        }
    }

    /// The `.torrent` file of the simulated torrent.
    pub fn torrent_file(&self) -> &[u8] {
        &self.torrent_file
    }

    /// Adds a node; `seed` says whether it starts with the whole content.
    pub fn add_node(
        &mut self,
        seed: bool,
        behaviour: Behaviour,
        link: LinkSpec,
        config: impl FnOnce(&mut SessionConfig),
    ) -> usize {
        let i = self.nodes.len();
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(b"-BC0001-");
        id[8..16].copy_from_slice(&(i as u64).to_be_bytes());
        let mut cfg = SessionConfig::new(PeerId(id));
        config(&mut cfg);
        let mut session = Session::new(cfg, self.rng.next_u64());
        let n = self.hashes.len() as u32;
        let have = if seed {
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
            finished_at: if seed { Some(self.now) } else { None },
            alive: true,
            uploaded: 0,
            verified: Vec::new(),
            banned: Vec::new(),
            busy_until: self.now,
        });
        i
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

    /// Runs until `done` holds or `limit` of simulated time has passed; returns
    /// whether `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            self.drain_all();
            if done(self) {
                return true;
            }
            // The next moment anything happens.
            let next_ev = self
                .queue
                .peek()
                .map(|Reverse((t, _, _))| Instant::from_millis(*t));
            let next_timer = self
                .nodes
                .iter()
                .filter(|n| n.alive)
                .filter_map(|n| n.session.poll_timeout())
                .min();
            let next = match (next_ev, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => return false,
                },
            };
            if next > end {
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
            }
        }
    }

    fn apply(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Deliver { to, conn, data } => {
                if !self.nodes[to].alive || !self.links.contains_key(&(to, conn)) {
                    return;
                }
                match self.nodes[to].behaviour {
                    Behaviour::Honest | Behaviour::Corrupt => {
                        self.nodes[to].session.handle_recv(now, conn, &data)
                    }
                    Behaviour::Garbage | Behaviour::Silent => self.hostile_recv(to, conn, &data),
                }
            }
            Ev::Closed { to, conn } => {
                if self.nodes[to].alive {
                    self.nodes[to].session.handle_disconnected(now, conn);
                }
            }
            Ev::Connected { node, conn, ok } => {
                if !self.nodes[node].alive {
                    return;
                }
                if ok {
                    self.nodes[node].session.handle_connected(now, conn);
                } else {
                    self.nodes[node].session.handle_connect_failed(now, conn);
                }
            }
        }
    }

    /// Hostile nodes run a real session for the handshake, then misbehave.
    fn hostile_recv(&mut self, to: usize, conn: ConnId, data: &[u8]) {
        let now = self.now;
        let behaviour = self.nodes[to].behaviour;
        let node = &mut self.nodes[to];
        node.session.handle_recv(now, conn, data);
        if behaviour == Behaviour::Garbage {
            let junk: Vec<u8> = (0..64).map(|_| self.rng.next_u32() as u8).collect();
            self.send_bytes(to, conn, junk);
        }
    }

    fn send_bytes(&mut self, from: usize, conn: ConnId, data: Vec<u8>) {
        let Some(&(to, oc)) = self.links.get(&(from, conn)) else {
            return;
        };
        let link = self.nodes[from].link;
        let start = self.nodes[from].busy_until.max(self.now);
        let ser = Duration::from_millis(data.len() as u64 * 1000 / link.up_bps.max(1));
        let done = start + ser;
        self.nodes[from].busy_until = done;
        self.schedule(
            done + link.latency,
            Ev::Deliver {
                to: oc_node(to),
                conn: oc,
                data,
            },
        );
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
                    let now = self.now;
                    let n = &mut self.nodes[i];
                    match e {
                        Event::TorrentFinished(_) => n.finished_at = Some(now),
                        Event::PieceVerified(_, p) => n.verified.push(p.0),
                        Event::PeerBanned(_, a) => n.banned.push(a),
                        _ => {}
                    }
                }
            }
            if !any {
                return;
            }
        }
    }

    fn do_action(&mut self, i: usize, a: Action) {
        let now = self.now;
        match a {
            Action::Connect { conn, addr, .. } => {
                let target = self.nodes.iter().position(|n| n.addr == addr && n.alive);
                let latency = self.nodes[i].link.latency;
                match target {
                    Some(j) if j != i => {
                        let from_addr = self.nodes[i].addr;
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
            Action::Send(conn) => {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = self.nodes[i].session.poll_transmit(now, conn, &mut buf);
                    if n == 0 {
                        break;
                    }
                    let data = buf[..n].to_vec();
                    self.send_bytes(i, conn, data);
                }
            }
            Action::Close { conn, .. } => {
                if let Some((j, oc)) = self.links.remove(&(i, conn)) {
                    self.links.remove(&(j, oc));
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
                n.storage[off..off + data.len()].copy_from_slice(&data);
                n.session.handle_write_done(now, torrent, block, Ok(()));
            }
            Action::Read {
                torrent,
                conn,
                block,
            } => {
                let off = block.piece.0 as usize * self.piece_len as usize + block.offset as usize;
                let corrupt = self.nodes[i].behaviour == Behaviour::Corrupt;
                let silent = self.nodes[i].behaviour == Behaviour::Silent;
                if silent {
                    return;
                }
                let mut data = self.nodes[i].storage[off..off + block.len as usize].to_vec();
                if corrupt {
                    data[0] ^= 0xff;
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
            } => {
                let start = piece.0 as usize * self.piece_len as usize;
                let end = (start + self.piece_len as usize).min(self.content.len());
                let ok = SmolSha1::digest(&self.nodes[i].storage[start..end]) == expected;
                self.nodes[i]
                    .session
                    .handle_verified(now, torrent, piece, ok);
            }
            Action::Announce { torrent, .. } => {
                // The tracker: every other live node's address.
                let peers: Vec<SocketAddr> = self
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(j, n)| *j != i && n.alive)
                    .map(|(_, n)| n.addr)
                    .collect();
                self.nodes[i].session.handle_peers(now, torrent, &peers);
            }
            _ => {}
        }
    }

    /// Whether node `i` holds the exact content.
    pub fn has_correct_data(&self, i: usize) -> bool {
        self.nodes[i].storage == self.content
    }

    /// The piece hashes of the torrent.
    pub fn piece_hashes(&self) -> &[[u8; 20]] {
        &self.hashes
    }
}

fn oc_node(n: usize) -> usize {
    n
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

/// Deterministic pseudo-random content.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.next_u32() as u8).collect()
}
