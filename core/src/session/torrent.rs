//! One torrent's state inside the session: what we have, the picker, the choker,
//! known peer addresses, bans, and the handling of each peer event.

use super::{Action, AnnounceEvent, Conn, ConnId, Event, Session, SessionConfig, TorrentId};
use crate::bitfield::Bitfield;
use crate::choker::{ChokeCandidate, Choker};
use crate::ids::{BlockRef, Geometry, InfoHash, PeerId, PieceIndex};
use crate::metainfo::Metainfo;
use crate::peer::{PeerError, PeerEvent};
use crate::picker::{PeerKey, PickHint, Picker};
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::net::SocketAddr;

/// Where a torrent stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TorrentState {
    /// Fetching pieces.
    Downloading,
    /// Every piece verified; serving others.
    Seeding,
    /// Stopped by a disk error.
    Error,
}

/// A torrent's progress, for display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TorrentStatus {
    /// The info-hash.
    pub info_hash: InfoHash,
    /// State.
    pub state: TorrentState,
    /// Verified pieces.
    pub pieces_have: u32,
    /// All pieces.
    pub num_pieces: u32,
    /// Verified bytes.
    pub bytes_have: u64,
    /// Total bytes.
    pub total_size: u64,
    /// Connected peers (handshake done).
    pub peers: u32,
    /// Of which seeds.
    pub seeds: u32,
    /// Connections being set up.
    pub connecting: u32,
    /// Bytes/s received.
    pub download_rate: u64,
    /// Bytes/s sent.
    pub upload_rate: u64,
    /// Payload bytes received in all.
    pub downloaded: u64,
    /// Payload bytes sent in all.
    pub uploaded: u64,
    /// Pieces that failed their hash check.
    pub hash_failures: u32,
    /// Peers banned.
    pub banned: u32,
}

#[derive(Clone, Copy, Debug)]
struct KnownPeer {
    last_attempt: Option<Instant>,
    failures: u32,
}

#[derive(Debug)]
pub(crate) struct Torrent {
    pub(crate) id: TorrentId,
    pub(crate) info_hash: InfoHash,
    pub(crate) state: TorrentState,
    pub(crate) have: Bitfield,
    geometry: Geometry,
    hashes: Vec<u8>,
    picker: Picker<'static>,
    choker: Choker,
    known: BTreeMap<SocketAddr, KnownPeer>,
    banned_addrs: BTreeSet<SocketAddr>,
    banned_ids: BTreeSet<PeerId>,
    strikes: BTreeMap<u32, u32>,
    /// The address behind each picker key (connection), for strikes after it leaves.
    pub(crate) uploaded: u64,
    pub(crate) downloaded: u64,
    hash_failures: u32,
    last_announce: Option<Instant>,
    announce_interval: Duration,
}

impl Torrent {
    pub(crate) fn new(
        id: TorrentId,
        m: &Metainfo<'_>,
        have: Option<&Bitfield>,
        config: &SessionConfig,
    ) -> Option<Self> {
        let geometry = m.geometry();
        let n = geometry.num_pieces();
        let mut picker_config = config.picker;
        picker_config.max_partials = picker_config
            .max_partials
            .max(config.max_peers_per_torrent * 2);
        let mut picker = Picker::new_alloc(geometry, picker_config).ok()?;
        let have = match have {
            Some(h) if h.len() != n => return None,
            Some(h) => h.clone(),
            None => Bitfield::new(n),
        };
        for i in have.iter_set() {
            picker.we_have(PieceIndex(i)).ok()?;
        }
        let mut hashes = Vec::with_capacity(n as usize * 20);
        for i in 0..n {
            hashes.extend_from_slice(m.piece_hash(PieceIndex(i))?);
        }
        let state = if have.is_full() {
            TorrentState::Seeding
        } else {
            TorrentState::Downloading
        };
        Some(Self {
            id,
            info_hash: m.info_hash(),
            state,
            have,
            geometry,
            hashes,
            picker,
            choker: Choker::new(config.choker),
            known: BTreeMap::new(),
            banned_addrs: BTreeSet::new(),
            banned_ids: BTreeSet::new(),
            strikes: BTreeMap::new(),
            uploaded: 0,
            downloaded: 0,
            hash_failures: 0,
            last_announce: None,
            announce_interval: Duration::from_secs(1800),
        })
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.have.is_full()
    }

    pub(crate) fn status(&self) -> TorrentStatus {
        let bytes_have = self
            .have
            .iter_set()
            .map(|i| u64::from(self.geometry.piece_size(PieceIndex(i))))
            .sum();
        TorrentStatus {
            info_hash: self.info_hash,
            state: self.state,
            pieces_have: self.have.count(),
            num_pieces: self.geometry.num_pieces(),
            bytes_have,
            total_size: self.geometry.total_len(),
            peers: 0,
            seeds: 0,
            connecting: 0,
            download_rate: 0,
            upload_rate: 0,
            downloaded: self.downloaded,
            uploaded: self.uploaded,
            hash_failures: self.hash_failures,
            banned: self.banned_addrs.len() as u32,
        }
    }

    fn left(&self) -> u64 {
        self.geometry.total_len()
            - self
                .have
                .iter_set()
                .map(|i| u64::from(self.geometry.piece_size(PieceIndex(i))))
                .sum::<u64>()
    }

    pub(crate) fn announce(
        &mut self,
        now: Instant,
        event: Option<AnnounceEvent>,
        out: &mut VecDeque<Action>,
    ) {
        self.last_announce = Some(now);
        out.push_back(Action::Announce {
            torrent: self.id,
            event,
            uploaded: self.uploaded,
            downloaded: self.downloaded,
            left: self.left(),
        });
    }

    /// Re-announces on the interval, or sooner (but not more than once a minute) when
    /// peers run low.
    pub(crate) fn maybe_reannounce(
        &mut self,
        now: Instant,
        connected: usize,
        low: usize,
        out: &mut VecDeque<Action>,
    ) {
        let Some(last) = self.last_announce else {
            return;
        };
        let since = now.since(last);
        if since >= self.announce_interval || (connected < low && since >= Duration::from_secs(60))
        {
            self.announce(now, None, out);
        }
    }

    pub(crate) fn add_known_peer(&mut self, addr: SocketAddr, cap: usize) {
        if self.banned_addrs.contains(&addr) || addr.port() == 0 {
            return;
        }
        if self.known.len() < cap || self.known.contains_key(&addr) {
            self.known.entry(addr).or_insert(KnownPeer {
                last_attempt: None,
                failures: 0,
            });
        }
    }

    pub(crate) fn connect_failed(&mut self, now: Instant, addr: SocketAddr) {
        if let Some(k) = self.known.get_mut(&addr) {
            k.failures += 1;
            k.last_attempt = Some(now);
            if k.failures >= 5 {
                self.known.remove(&addr);
            }
        }
    }

    /// The next address worth dialing: never tried first, then the longest waiting.
    pub(crate) fn next_peer_to_dial(
        &mut self,
        now: Instant,
        busy: &[SocketAddr],
        backoff: Duration,
    ) -> Option<SocketAddr> {
        if self.state == TorrentState::Seeding {
            return None;
        }
        let pick = self
            .known
            .iter()
            .filter(|(a, _)| !busy.contains(a) && !self.banned_addrs.contains(a))
            .filter(|(_, k)| {
                k.last_attempt.is_none_or(|t| {
                    now.since(t).as_millis() >= backoff.as_millis() * u64::from(k.failures.max(1))
                })
            })
            .min_by_key(|(_, k)| k.last_attempt.map_or(0, |t| t.as_millis() + 1))
            .map(|(a, _)| *a)?;
        if let Some(k) = self.known.get_mut(&pick) {
            k.last_attempt = Some(now);
        }
        Some(pick)
    }

    pub(crate) fn is_banned(&self, addr: &SocketAddr, id: Option<PeerId>) -> bool {
        self.banned_addrs.contains(addr) || id.is_some_and(|i| self.banned_ids.contains(&i))
    }

    pub(crate) fn ban(&mut self, addr: SocketAddr, id: Option<PeerId>) {
        self.banned_addrs.insert(addr);
        self.known.remove(&addr);
        if let Some(i) = id {
            self.banned_ids.insert(i);
        }
    }

    /// Whether `theirs` holds a piece we lack.
    pub(crate) fn wants_from(&self, theirs: &Bitfield) -> bool {
        if self.state != TorrentState::Downloading {
            return false;
        }
        theirs
            .as_bytes()
            .iter()
            .zip(self.have.as_bytes())
            .any(|(t, h)| t & !h != 0)
    }

    pub(crate) fn peer_gone(&mut self, key: u32, c: &Conn) {
        self.picker.abort_peer(PeerKey(key));
        if c.counted {
            let _ = self.picker.peer_lost_bitfield(c.peer.bitfield().as_bytes());
        }
        self.choker.peer_gone(key);
    }

    pub(crate) fn write_done(&mut self, block: BlockRef, out: &mut VecDeque<Action>) {
        if let Ok(true) = self.picker.mark_written(&block) {
            if !self.have.get(block.piece.0) {
                let i = block.piece.get() * 20;
                let mut expected = [0u8; 20];
                expected.copy_from_slice(&self.hashes[i..i + 20]);
                out.push_back(Action::Verify {
                    torrent: self.id,
                    piece: block.piece,
                    expected,
                });
            }
        }
    }

    /// Returns whether the piece is newly ours.
    pub(crate) fn piece_verified(&mut self, piece: PieceIndex) -> bool {
        if self.have.get(piece.0) || piece.0 >= self.geometry.num_pieces() {
            return false;
        }
        let _ = self.picker.piece_verified(piece);
        self.have.set(piece.0);
        true
    }

    /// Returns the connection keys to ban: the sole sender of a bad piece, or anyone
    /// who reached the strike limit.
    pub(crate) fn piece_failed(&mut self, piece: PieceIndex, limit: u32) -> Vec<u32> {
        self.hash_failures += 1;
        let Ok(peers) = self.picker.piece_failed(piece) else {
            return Vec::new();
        };
        let sole = peers.len() == 1 && !peers.truncated();
        let mut ban = Vec::new();
        for p in peers.as_slice() {
            let s = self.strikes.entry(p.0).or_insert(0);
            *s += 1;
            if sole || *s >= limit {
                ban.push(p.0);
            }
        }
        ban
    }
}

/// Handles one event of one connection.
pub(super) fn on_peer_event(
    s: &mut Session,
    now: Instant,
    conn: ConnId,
    ev: PeerEvent,
) -> Result<(), Option<PeerError>> {
    match ev {
        PeerEvent::Handshake {
            info_hash, peer_id, ..
        } => {
            let tid = match s.conn_mut(conn).and_then(|c| c.torrent) {
                Some(t) => t,
                None => {
                    let t = s.torrent_by_hash(&info_hash).ok_or(None)?;
                    let max = s.config().max_peers_per_torrent;
                    let count = s.peers(t).len();
                    if count >= max {
                        return Err(None);
                    }
                    let c = s.conn_mut(conn).ok_or(None)?;
                    c.torrent = Some(t);
                    c.peer.accept(now, info_hash).map_err(Some)?;
                    t
                }
            };
            let (c, t, _) = s.split(conn).ok_or(None)?;
            if t.is_banned(&c.addr, Some(peer_id)) {
                return Err(None);
            }
            c.peer.set_geometry(t.geometry).map_err(Some)?;
            c.peer.send_have_set(&t.have);
            let addr = c.addr;
            s.push_event_pub(Event::PeerConnected(tid, addr));
            // The peer's have-set may have arrived with the handshake.
            count_availability(s, conn);
        }
        PeerEvent::HaveSet => count_availability(s, conn),
        PeerEvent::Have(piece) => {
            if let Some((c, t, _)) = s.split(conn) {
                if c.counted {
                    let _ = t.picker.peer_has(piece);
                }
            }
            s.update_interest_pub(conn);
        }
        PeerEvent::Choked => {
            if let Some((c, t, _)) = s.split(conn) {
                if !c.peer.fast() {
                    t.picker.abort_peer(PeerKey(conn.0));
                }
            }
        }
        PeerEvent::RequestLost(block) => {
            if let Some((_, t, _)) = s.split(conn) {
                let _ = t.picker.abort_request(&block, PeerKey(conn.0));
            }
        }
        PeerEvent::Block { block, data } => {
            let Some((c, t, actions)) = s.split(conn) else {
                return Ok(());
            };
            let r = t.picker.mark_received(&block, PeerKey(conn.0));
            let Ok(r) = r else { return Ok(()) };
            t.downloaded += data.len() as u64;
            let cancels: Vec<PeerKey> = r.cancel.as_slice().to_vec();
            let _ = c;
            if !r.duplicate {
                let len = data.len();
                actions.push_back(Action::Write {
                    torrent: t.id,
                    block,
                    data,
                });
                s.disk_in_flight_add(len);
            }
            for p in cancels {
                if let Some(other) = s.conn_mut(ConnId(p.0)) {
                    other.peer.cancel(block);
                }
            }
        }
        PeerEvent::Unchoked
        | PeerEvent::Interest(_)
        | PeerEvent::AllowedFast(_)
        | PeerEvent::Suggest(_)
        | PeerEvent::PeerRequest
        | PeerEvent::Extended { .. }
        | PeerEvent::DhtPort(_) => {}
    }
    Ok(())
}

/// Adds the peer's pieces to the picker's availability (once) and updates interest.
fn count_availability(s: &mut Session, conn: ConnId) {
    if let Some((c, t, _)) = s.split(conn) {
        if c.peer.is_established() && c.peer.bitfield().len() == t.geometry.num_pieces() {
            if c.counted {
                // A fresh have-set replaces what was counted.
                return;
            }
            if t.picker
                .peer_has_bitfield(c.peer.bitfield().as_bytes())
                .is_ok()
            {
                c.counted = true;
            }
        }
    }
    s.update_interest_pub(conn);
}

/// Requests blocks from one peer up to its pipeline depth.
pub(super) fn fill_requests(
    t: &mut Torrent,
    c: &mut Conn,
    now: Instant,
    conn: ConnId,
    rng: &mut Rng,
) {
    if t.state != TorrentState::Downloading || !c.peer.is_established() || !c.counted {
        return;
    }
    if c.peer.peer_choking() && c.peer.allowed_fast().is_empty() {
        return;
    }
    let slots = c.peer.request_slots(now).min(64);
    if slots == 0 {
        return;
    }
    let hint = if c.peer.is_snubbing(now) {
        PickHint::Slow
    } else {
        PickHint::Normal
    };
    let mut out = [BlockRef {
        piece: PieceIndex(0),
        offset: 0,
        len: 0,
    }; 64];
    let n = t.picker.pick(
        c.peer.bitfield().as_bytes(),
        PeerKey(conn.0),
        hint,
        slots,
        &mut out,
        &mut || rng.next_u32(),
    );
    for b in &out[..n] {
        if c.peer.can_request(b.piece) {
            c.peer.request(now, *b);
        } else {
            let _ = t.picker.abort_request(b, PeerKey(conn.0));
        }
    }
}

/// One choker round; returns the connections whose choke state must change
/// (`true`: unchoke).
pub(super) fn choke_round(
    t: &mut Torrent,
    conns: &BTreeMap<ConnId, Conn>,
    ids: &[ConnId],
    now: Instant,
    rng: &mut Rng,
) -> Vec<(ConnId, bool)> {
    let now_ms = now.as_millis();
    if !t.choker.should_run(now_ms) {
        return Vec::new();
    }
    let seeding = t.state == TorrentState::Seeding;
    let cands: Vec<ChokeCandidate> = ids
        .iter()
        .filter_map(|k| conns.get(k).map(|c| (k, c)))
        .map(|(k, c)| ChokeCandidate {
            key: k.0,
            interested: c.peer.peer_interested(),
            download_rate: c.peer.download_rate(),
            upload_rate: c.peer.upload_rate(),
            snubbed: c.peer.is_snubbing(now),
            is_new: now.since(c.peer.created()) < Duration::from_secs(60),
            currently_unchoked: !c.peer.am_choking(),
        })
        .collect();
    let mut out = alloc::vec![false; cands.len()];
    if t.choker
        .run(now_ms, seeding, &cands, &mut out, &mut || rng.next_u32())
        .is_err()
    {
        return Vec::new();
    }
    cands
        .iter()
        .zip(out)
        .filter(|(c, u)| c.currently_unchoked != *u)
        .map(|(c, u)| (ConnId(c.key), u))
        .collect()
}
