//! The DHT lookup schedule and the check of a magnet link's data, decided by the
//! session on its own clock.
//!
//! DHT: over a simulated hour, a session with a DHT-running host asks for lookups
//! ([`Action::DhtLookup`]) of its public running torrents: spread out at the start and
//! capped in rate, every `dht_announce_interval`, sooner while a torrent is short of
//! peers but never within `dht_short_of_peers_interval`, backing off when lookups
//! reach nobody, and never for private, paused or checking torrents.
//!
//! Magnet: when the info dictionary arrives the torrent checks what is on disk
//! ([`Action::CheckData`]) and downloads only what is missing.

use btcore_core::bencode::Encoder;
use btcore_core::bitfield::Bitfield;
use btcore_core::hash::{Sha1, SmolSha1};
use btcore_core::ids::PeerId;
use btcore_core::session::{
    Action, AnnounceOutcome, DhtOutcome, Session, SessionConfig, TorrentId, TorrentState,
    DHT_LOOKUP_TIMEOUT,
};
use btcore_core::time::{Duration, Instant};
use btcore_tests::sim::{content, Behaviour, LinkSpec, Sim};
use std::collections::BTreeMap;

const HOUR_SECS: u64 = 3600;

/// A single-piece torrent, distinct per `i`, private or not.
fn torrent(i: usize, private: bool) -> Vec<u8> {
    let data: Vec<u8> = (0..16_384u32)
        .map(|b| (b as usize * 31 + i * 7919) as u8 ^ (i >> 8) as u8)
        .collect();
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out);
    let r = (|| {
        e.dict()?;
        e.bytes(b"info")?;
        e.dict()?;
        e.key_int(b"length", data.len() as i64)?;
        e.key_bytes(b"name", b"t.bin")?;
        e.key_int(b"piece length", 16_384)?;
        e.key_bytes(b"pieces", &SmolSha1::digest(&data))?;
        if private {
            e.key_int(b"private", 1)?;
        }
        e.end()?;
        e.end()
    })();
    r.expect("encode");
    out
}

fn config() -> SessionConfig {
    let mut c = SessionConfig::new(PeerId([7; 20]));
    c.dht = true;
    c
}

/// Lookups asked for, per torrent: when, and whether with `announce_peer`.
type Log = BTreeMap<TorrentId, Vec<Instant>>;

/// How the test's DHT node answers a lookup.
#[derive(Clone, Copy, PartialEq)]
enum Node {
    /// It reaches nodes.
    Reaches,
    /// It reaches nobody (an empty routing table).
    Fails,
    /// It never reports.
    Silent,
}

/// A session driven for a while, its timers run every second; trackers answer every
/// announce with a 30-minute interval, the DHT node as `node` says.
struct Run {
    session: Session,
    now: Instant,
    log: Log,
    node: Node,
    /// The most lookups outstanding at once.
    peak_in_flight: usize,
    outstanding: usize,
}

impl Run {
    fn new(config: SessionConfig, node: Node) -> Self {
        Self {
            session: Session::new(config, 1),
            now: Instant::from_millis(1_000),
            log: Log::new(),
            node,
            peak_in_flight: 0,
            outstanding: 0,
        }
    }

    fn seeds(&mut self, range: std::ops::Range<usize>) -> Vec<TorrentId> {
        range
            .map(|i| {
                self.session
                    .add_torrent(self.now, &torrent(i, false), Some(&Bitfield::full(1)))
                    .expect("add")
            })
            .collect()
    }

    fn leechers(&mut self, range: std::ops::Range<usize>) -> Vec<TorrentId> {
        range
            .map(|i| {
                self.session
                    .add_torrent(self.now, &torrent(i, false), None)
                    .expect("add")
            })
            .collect()
    }

    fn run_for(&mut self, secs: u64) {
        let end = self.now + Duration::from_secs(secs);
        while self.now < end {
            self.session.handle_timeout(self.now);
            self.drain();
            self.now = self.now + Duration::from_secs(1);
        }
    }

    fn drain(&mut self) {
        let now = self.now;
        while let Some(a) = self.session.poll_action() {
            match a {
                Action::DhtLookup {
                    torrent,
                    announce,
                    seq,
                    ..
                } => {
                    assert!(announce, "we listen: announce_peer too");
                    self.log.entry(torrent).or_default().push(now);
                    let outcome = match self.node {
                        Node::Reaches => DhtOutcome::Reached,
                        Node::Fails => DhtOutcome::Failed,
                        Node::Silent => {
                            self.outstanding += 1;
                            continue;
                        }
                    };
                    assert!(self.session.handle_dht_done(now, torrent, seq, outcome));
                }
                Action::Announce { torrent, seq, .. } => {
                    self.session.handle_announced(
                        now,
                        torrent,
                        seq,
                        AnnounceOutcome::Answered {
                            interval: 1800,
                            min_interval: Some(900),
                        },
                    );
                }
                _ => {}
            }
        }
        self.peak_in_flight = self
            .peak_in_flight
            .max(self.session.dht_lookups_in_flight());
    }

    fn count(&self, id: TorrentId) -> usize {
        self.log.get(&id).map_or(0, Vec::len)
    }

    fn min_gap(&self, id: TorrentId) -> Duration {
        self.log[&id]
            .windows(2)
            .map(|w| w[1].since(w[0]))
            .min()
            .expect("two lookups")
    }

    /// Lookups of all torrents in `[from, from + len)`.
    fn in_window(&self, from: Instant, len: Duration) -> usize {
        self.log
            .values()
            .flatten()
            .filter(|t| **t >= from && t.since(from) < len)
            .count()
    }
}

#[test]
fn a_thousand_torrents_reach_the_dht_spread_out_and_capped() {
    let c = config();
    let (per_minute, interval) = (c.dht_lookups_per_minute as usize, c.dht_announce_interval);
    let mut run = Run::new(c, Node::Reaches);
    let ids = run.seeds(0..1000);
    let start = run.now;
    run.run_for(HOUR_SECS);
    // No burst: at most the five-second burst, then one a second.
    assert!(run.in_window(start, Duration::from_secs(10)) <= 5 + 10);
    let mut t = start;
    while t.since(start) < Duration::from_secs(HOUR_SECS) {
        let n = run.in_window(t, Duration::from_secs(60));
        assert!(n <= per_minute + 5, "{n} lookups in a minute");
        t = t + Duration::from_secs(10);
    }
    // Everyone is looked up, and three times at least in the hour (1,000 at one a
    // second take 17 minutes a round), never twice within the interval.
    for id in &ids {
        assert!(run.count(*id) >= 3, "{id:?}: {} lookups", run.count(*id));
        assert!(run.min_gap(*id) >= interval);
    }
    let total: usize = run.log.values().map(Vec::len).sum();
    assert!(total <= 5 + HOUR_SECS as usize, "{total}");
}

#[test]
fn seeds_are_looked_up_every_interval() {
    let mut run = Run::new(config(), Node::Reaches);
    let ids = run.seeds(0..10);
    run.run_for(HOUR_SECS);
    for id in &ids {
        // At 0, 15, 30 and 45 minutes.
        assert_eq!(run.count(*id), 4, "{:?}", run.log[id]);
        let gap = run.min_gap(*id);
        assert!(
            (900..=902).contains(&(gap.as_millis() / 1000)),
            "{gap:?} between two lookups"
        );
    }
}

#[test]
fn short_of_peers_sooner_but_never_within_the_floor() {
    let c = config();
    let floor = c.dht_short_of_peers_interval;
    let mut run = Run::new(c, Node::Reaches);
    // Downloading with no peer at all: short of peers for the whole hour.
    let short = run.leechers(0..10);
    let seeds = run.seeds(10..20);
    run.run_for(HOUR_SECS);
    let per_hour = (HOUR_SECS / (floor.as_millis() / 1000)) as usize;
    for id in &short {
        assert!(run.session.short_of_peers(*id));
        let n = run.count(*id);
        assert!(
            (per_hour - 2..=per_hour).contains(&n),
            "{id:?}: {n} lookups, every {floor:?} would be {per_hour}"
        );
        assert!(run.min_gap(*id) >= floor);
    }
    // Seeds are never short of peers: the regular interval.
    for id in &seeds {
        assert_eq!(run.count(*id), 4);
    }
}

#[test]
fn no_lookup_for_private_paused_or_checking_torrents() {
    let mut run = Run::new(config(), Node::Reaches);
    let now = run.now;
    let private = run
        .session
        .add_torrent(now, &torrent(1, true), None)
        .expect("private");
    let paused = run.leechers(2..3)[0];
    assert!(run.session.pause_torrent(now, paused));
    let checking = run
        .session
        .add_torrent_checking(now, &torrent(3, false))
        .expect("checking");
    let public = run.leechers(4..5)[0];
    run.run_for(HOUR_SECS / 2);
    assert_eq!(run.count(private), 0);
    assert_eq!(run.count(paused), 0);
    assert_eq!(run.count(checking), 0);
    assert!(run.count(public) > 0);
    // Resumed, checked: looked up from then on, at once.
    let now = run.now;
    assert!(run.session.resume_torrent(now, paused));
    assert!(run.session.handle_checked(now, checking, &Bitfield::new(1)));
    run.run_for(5);
    assert_eq!(run.count(paused), 1);
    assert_eq!(run.count(checking), 1);
    // Paused again: no more lookups.
    let now = run.now;
    assert!(run.session.pause_torrent(now, paused));
    let before = run.count(paused);
    run.run_for(HOUR_SECS / 2);
    assert_eq!(run.count(paused), before);
    assert_eq!(run.count(private), 0);
}

#[test]
fn lookups_that_reach_nobody_back_off() {
    let mut run = Run::new(config(), Node::Fails);
    let ids = run.leechers(0..5);
    run.run_for(HOUR_SECS);
    for id in &ids {
        // 2, 4, ..., 256 s (8 retries within 9 minutes), then every 5 minutes: about
        // 20 in the hour, where a lookup every second would be 3,600.
        let n = run.count(*id);
        assert!((15..=22).contains(&n), "{id:?}: {n} lookups");
        let gaps: Vec<u64> = run.log[id]
            .windows(2)
            .map(|w| w[1].since(w[0]).as_millis() / 1000)
            .collect();
        assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
        assert!(gaps.iter().all(|g| *g >= 2 && *g <= 301), "{gaps:?}");
    }
}

#[test]
fn lookups_in_flight_are_capped_and_unreported_ones_expire() {
    let c = config();
    let cap = c.max_dht_lookups_in_flight;
    let mut run = Run::new(c, Node::Silent);
    let ids = run.seeds(0..100);
    run.run_for(60);
    assert_eq!(run.peak_in_flight, cap);
    assert_eq!(run.outstanding, cap, "no more asked while they run");
    // Given up on after the timeout, then retried (2 s later).
    run.run_for(DHT_LOOKUP_TIMEOUT.as_millis() / 1000 + 5);
    assert!(run.outstanding > cap);
    assert!(run.peak_in_flight <= cap);
    assert!(ids.iter().filter(|id| run.count(**id) > 0).count() >= 2 * cap);
}

#[test]
fn no_dht_no_lookups() {
    let mut c = config();
    c.dht = false;
    let mut run = Run::new(c, Node::Reaches);
    run.seeds(0..10);
    run.leechers(10..20);
    run.run_for(600);
    assert!(run.log.is_empty());
}

// ---------------------------------------------------------------- magnet links

/// A magnet link whose data is already on disk: the metadata arrives, the node checks
/// its data and seeds without downloading a piece.
#[test]
fn magnet_with_the_data_on_disk_downloads_nothing() {
    let data = content(40 * 16_384 + 5, 4);
    let mut sim = Sim::new(data.clone(), 16_384, 8);
    sim.add_node(true, Behaviour::Honest, LinkSpec::default(), |_| {});
    let m = sim.add_magnet_node(LinkSpec::default());
    sim.nodes[m].storage = data;
    let t = sim.nodes[m].torrent.expect("torrent");
    let ok = sim.run_until(Duration::from_secs(60), |s| {
        s.nodes[m]
            .session
            .torrent_status(t, s.now)
            .is_some_and(|st| st.state == TorrentState::Seeding)
    });
    assert!(ok, "the magnet node did not start seeding");
    let st = sim.nodes[m].session.torrent_status(t, sim.now).expect("st");
    assert_eq!(sim.nodes[m].checks, 1);
    assert_eq!(st.pieces_have, sim.num_pieces());
    assert_eq!(st.downloaded, 0, "downloaded what it had: {st:?}");
    assert!(sim.has_correct_data(m));
}

/// Half the data on disk: only the other half is downloaded.
#[test]
fn magnet_with_half_the_data_downloads_the_rest() {
    let piece = 16_384usize;
    let data = content(40 * piece, 5);
    let mut sim = Sim::new(data.clone(), piece as u32, 9);
    sim.add_node(true, Behaviour::Honest, LinkSpec::default(), |_| {});
    let m = sim.add_magnet_node(LinkSpec::default());
    sim.nodes[m].storage[..20 * piece].copy_from_slice(&data[..20 * piece]);
    let t = sim.nodes[m].torrent.expect("torrent");
    let ok = sim.run_until(Duration::from_secs(120), |s| {
        s.nodes[m].finished_at.is_some()
    });
    assert!(ok, "the magnet node did not finish");
    assert!(sim.has_correct_data(m));
    let st = sim.nodes[m].session.torrent_status(t, sim.now).expect("st");
    assert_eq!(sim.nodes[m].checks, 1);
    assert!(
        st.downloaded <= (20 * piece) as u64,
        "downloaded {} of the 20 missing pieces' {} bytes",
        st.downloaded,
        20 * piece
    );
}
