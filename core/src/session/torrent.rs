//! One torrent's state inside the session: what we have, the picker, the choker,
//! known peer addresses, who sent bad data ([`super::smart_ban`]), and the handling of
//! each peer event.

use super::announce::{Announcer, Trackers};
use super::bans::{canonical, BanList};
use super::metadata::{self, FetchState};
use super::smart_ban::SmartBan;
use super::{
    Action, AnnounceEvent, CloseReason, Conn, ConnId, DiskError, Event, MerklePiece, PeerOrigin,
    Session, SessionConfig, TorrentId,
};
use crate::bitfield::Bitfield;
use crate::choker::{ChokeCandidate, Choker};
use crate::ext::{
    metadata_piece, write_ext_handshake, Done, ExtConfig, ExtHandshake, MetadataAssembler,
    MetadataMsg, OurExtensions, EXT_HANDSHAKE_ID, METADATA_PIECE_LEN,
};
use crate::ids::{BlockRef, Geometry, InfoHash, PieceIndex};
use crate::metainfo::Metainfo;
use crate::netaddr;
use crate::peer::PeerEvent;
use crate::picker::{PeerKey, PickHint, Picker};
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

/// Where a torrent stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TorrentState {
    /// The host is checking the data already on disk (added with
    /// [`Session::add_torrent_checking`](super::Session::add_torrent_checking)): no
    /// announce, no peer, until [`Session::handle_checked`](super::Session::handle_checked).
    Checking,
    /// Fetching the info dictionary from peers (a magnet link).
    FetchingMetadata,
    /// Fetching pieces.
    Downloading,
    /// Every piece verified; serving others.
    Seeding,
    /// Stopped by a disk error.
    Error,
}

/// A torrent's progress, for display: the one source of its progress, ETA and error
/// for every host and the C API ([`TorrentStatus::progress_ppm`],
/// [`TorrentStatus::eta_secs`], [`TorrentStatus::error`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TorrentStatus {
    /// The info-hash.
    pub info_hash: InfoHash,
    /// BEP 52: the whole v2 info-hash (SHA-256) of a hybrid torrent; None for a v1
    /// torrent, and for a magnet link until its metadata arrives.
    pub info_hash_v2: Option<[u8; 32]>,
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
    /// Peer addresses this torrent banned for bad data.
    pub banned: u32,
    /// BEP 27: a private torrent uses only its trackers (no DHT, PEX or LSD).
    pub private: bool,
    /// Paused by the application: no connections, no announces.
    pub paused: bool,
    /// Waiting in the download or seed queue ([`SessionConfig::download_queue`],
    /// [`SessionConfig::seed_queue`]): like a paused torrent it holds no connection
    /// and does not announce, and it starts by itself when its turn comes.
    /// Transmission's "queued to download" (`finished` false) or "queued to seed".
    pub queued: bool,
    /// Its place in the queues (0 first; every torrent has one, see
    /// [`Session::set_queue_position`](super::Session::set_queue_position)).
    pub queue_position: u32,
    /// The disk error that stopped the torrent (the first one reported); `Some`
    /// exactly when [`TorrentState::Error`].
    pub error: Option<DiskError>,
    /// Bytes of the pieces wanted (priority above 0, see
    /// [`Session::set_file_priorities`](super::Session::set_file_priorities)):
    /// `total_size` unless files are skipped. Counted by whole pieces: a piece shared
    /// by a wanted and a skipped file is wanted.
    pub wanted_size: u64,
    /// Of which verified.
    pub wanted_have: u64,
    /// Every wanted piece is verified (libtorrent's "finished"): nothing more is
    /// requested until more files become wanted. A seed is finished too.
    pub finished: bool,
    /// Running (not paused or queued) and no payload moved for
    /// [`SessionConfig::queue_stalled_after`]: its queue slot is given away
    /// (Transmission's `isStalled`). Only [`Session::torrent_status`](super::Session::torrent_status) sets it.
    pub stalled: bool,
}

impl TorrentStatus {
    /// Progress in millionths of the wanted bytes verified (of every byte unless files
    /// are skipped, as libtorrent counts it): 1,000,000 once finished, 0 while a
    /// magnet link's metadata is unknown, rounded down in between (999,999 until the
    /// last byte is verified, never 100% early). The progress of the data check while
    /// [`TorrentState::Checking`] is the host's, which runs the check.
    pub fn progress_ppm(&self) -> u32 {
        let (have, size) = self.wanted();
        if self.is_complete() {
            1_000_000
        } else if size == 0 {
            0
        } else {
            // have < size here, so the quotient is below 1,000,000.
            (u128::from(have) * 1_000_000 / u128::from(size)) as u32
        }
    }

    /// Seconds until every wanted byte is verified at the current download rate,
    /// rounded up (never 0 while bytes are missing): `Some(0)` once finished, `None`
    /// when it cannot be told (not downloading: checking, fetching the metadata,
    /// paused, stopped by an error; or no download rate).
    pub fn eta_secs(&self) -> Option<u64> {
        if self.is_complete() {
            return Some(0);
        }
        if self.state != TorrentState::Downloading
            || self.paused
            || self.queued
            || self.download_rate == 0
        {
            return None;
        }
        let (have, size) = self.wanted();
        Some(size.saturating_sub(have).div_ceil(self.download_rate))
    }

    /// (verified, total) of the bytes wanted: of the wanted pieces when files are
    /// skipped, of all otherwise.
    fn wanted(&self) -> (u64, u64) {
        if self.wanted_size > 0 && self.wanted_size < self.total_size {
            (self.wanted_have, self.wanted_size)
        } else {
            (self.bytes_have, self.total_size)
        }
    }

    /// Every wanted byte verified (a seed, or finished with files skipped).
    fn is_complete(&self) -> bool {
        self.state == TorrentState::Seeding
            || self.finished
            || (self.total_size > 0 && self.bytes_have >= self.total_size)
    }
}

/// An address to dial.
#[derive(Clone, Copy, Debug)]
struct KnownPeer {
    last_attempt: Option<Instant>,
    failures: u32,
    /// The address (IPv6: /64) whose PEX message named it; None for a tracker, the
    /// DHT, local service discovery, a magnet link or the user, which rank higher.
    pex_from: Option<IpAddr>,
    /// Where we first heard of it (a better source than PEX replaces PEX).
    origin: PeerOrigin,
    /// When it was added, in order (the oldest goes first).
    seq: u64,
    /// A connection we dialed to it completed its handshake.
    connected: bool,
    /// A uTP dial to it got no answer: it is dialed over TCP.
    no_utp: bool,
    /// The connection (its address) whose PEX message named it last, whatever
    /// source ranks it: the peer asked to relay a rendezvous (BEP 55).
    pex_via: Option<SocketAddr>,
    /// The `added.f` flags that PEX message gave it (BEP 11; 0: none).
    pex_flags: u8,
}

impl KnownPeer {
    /// 0 for an address from PEX, 1 from a better source.
    fn rank(&self) -> u8 {
        u8::from(self.pex_from.is_none())
    }
}

/// What a torrent has once its info dictionary is known.
#[derive(Debug)]
pub(crate) struct Meta {
    pub(crate) have: Bitfield,
    pub(crate) geometry: Geometry,
    /// The v1 SHA-1 of each piece, end to end (empty for a v2-only torrent).
    hashes: Vec<u8>,
    /// BEP 52: what each piece hashes to in the v2 merkle trees (a v2-only or hybrid
    /// torrent whose piece layers are known; empty otherwise).
    pub(crate) merkle: Vec<MerklePiece>,
    /// BEP 52: the files larger than a piece (those with a piece layer), for the hash
    /// requests of peers: their layer is the roots of their pieces in `merkle`.
    pub(crate) layered: Vec<super::layers::LayeredFile>,
    pub(crate) picker: Picker<'static>,
    /// The raw info dictionary, served to others with `ut_metadata`.
    pub(crate) info: Vec<u8>,
    /// BEP 52: the v2 info-hash of a hybrid torrent (SHA-256 of `info`).
    pub(crate) info_hash_v2: Option<[u8; 32]>,
    /// Each file's (offset, length) in the torrent's bytes, in torrent order.
    pub(crate) files: Vec<(u64, u64)>,
    /// Pieces of priority 0 (no file of theirs wanted).
    pub(crate) skipped_pieces: u32,
    /// The pieces of priority above 0, while any is skipped: interest in a peer is
    /// then one pass over three bitfields, as without skipped files.
    pub(crate) wanted_mask: Option<Bitfield>,
    /// Each file's priority as last set (empty: all at the default).
    pub(crate) file_prio: Vec<u8>,
}

impl Meta {
    fn new(m: &Metainfo<'_>, have: Option<&Bitfield>, config: &SessionConfig) -> Option<Self> {
        let geometry = m.geometry();
        let n = geometry.num_pieces();
        let mut picker = Self::new_picker(geometry, config)?;
        let have = match have {
            Some(h) if h.len() != n => return None,
            Some(h) => h.clone(),
            None => Bitfield::new(n),
        };
        for i in have.iter_set() {
            picker.we_have(PieceIndex(i)).ok()?;
        }
        let mut hashes = Vec::new();
        if !m.is_v2_only() {
            hashes.reserve_exact(n as usize * 20);
            for i in 0..n {
                hashes.extend_from_slice(m.piece_hash(PieceIndex(i))?);
            }
        }
        let merkle = match merkle_pieces(m) {
            Some(p) => p,
            // Without piece layers (metadata from a magnet link) a hybrid is checked
            // by its v1 hashes alone; a v2-only torrent cannot be checked at all.
            None if m.is_v2_only() => return None,
            None => Vec::new(),
        };
        let layered = if merkle.is_empty() {
            Vec::new()
        } else {
            super::layers::layered_files(m)
        };
        Some(Self {
            have,
            geometry,
            hashes,
            merkle,
            layered,
            picker,
            info: m.info_bytes().to_vec(),
            info_hash_v2: m.info_hash_v2(),
            files: m.files().map(|f| (f.offset, f.length)).collect(),
            skipped_pieces: 0,
            wanted_mask: None,
            file_prio: Vec::new(),
        })
    }

    /// The piece's v1 SHA-1 from the torrent (`None` for a v2-only torrent).
    pub(crate) fn sha1(&self, piece: PieceIndex) -> Option<[u8; 20]> {
        let i = piece.get().checked_mul(20)?;
        self.hashes.get(i..i + 20)?.try_into().ok()
    }

    fn new_picker(geometry: Geometry, config: &SessionConfig) -> Option<Picker<'static>> {
        let mut picker_config = config.picker;
        // No more pieces in progress than the torrent has: a small torrent does not
        // carry the slots of a large one (a thousand small seeding torrents would
        // hold 3.6 MiB of them).
        picker_config.max_partials = picker_config
            .max_partials
            .max(config.max_peers_per_torrent * 2)
            .min((geometry.num_pieces() as usize).max(1));
        Picker::new_alloc(geometry, picker_config).ok()
    }

    /// Forgets every piece and partial piece (before a check of the data on disk):
    /// a fresh picker, with no piece, the file priorities kept. False when the
    /// picker cannot be made (as [`Meta::new`] would fail).
    pub(crate) fn forget_pieces(&mut self, config: &SessionConfig) -> bool {
        let Some(picker) = Self::new_picker(self.geometry, config) else {
            return false;
        };
        self.picker = picker;
        self.have = Bitfield::new(self.geometry.num_pieces());
        true
    }

    pub(crate) fn bytes_have(&self) -> u64 {
        // Every piece is whole but the last one.
        let n = self.geometry.num_pieces();
        let whole = u64::from(self.have.count()) * u64::from(self.geometry.piece_len());
        if n > 0 && self.have.get(n - 1) {
            let last = PieceIndex(n - 1);
            whole - u64::from(self.geometry.piece_len() - self.geometry.piece_size(last))
        } else {
            whole
        }
    }

    pub(crate) fn wanted(&self, piece: u32) -> bool {
        self.wanted_mask.as_ref().is_none_or(|w| w.get(piece))
    }

    /// (bytes of the wanted pieces, of which verified).
    fn wanted_bytes(&self) -> (u64, u64) {
        if self.skipped_pieces == 0 {
            return (self.geometry.total_len(), self.bytes_have());
        }
        let (mut size, mut have) = (0, 0);
        for i in (0..self.geometry.num_pieces()).filter(|&i| self.wanted(i)) {
            let n = u64::from(self.geometry.piece_size(PieceIndex(i)));
            size += n;
            if self.have.get(i) {
                have += n;
            }
        }
        (size, have)
    }

    /// Every wanted piece is verified.
    pub(crate) fn is_finished(&self) -> bool {
        self.have.is_full() || (self.skipped_pieces > 0 && self.picker.is_finished())
    }
}

#[derive(Debug)]
pub(crate) struct Torrent {
    pub(crate) id: TorrentId,
    pub(crate) info_hash: InfoHash,
    pub(crate) state: TorrentState,
    /// Everything that needs the info dictionary; `None` while a magnet link's
    /// metadata is being fetched.
    pub(crate) meta: Option<Meta>,
    /// The metadata download of a magnet link: the size being assembled.
    pub(crate) fetch: Option<MetadataAssembler>,
    /// BEP 52: a v2 magnet link's info dictionary, while its piece layers are fetched.
    pub(crate) layers: Option<super::layers::LayerFetch>,
    /// Added from a `btmh`-only magnet link: `info_hash` is the truncated v2 one.
    pub(crate) v2_link: bool,
    /// What the metadata download learned across attempts.
    pub(crate) meta_fetch: FetchState,
    pub(crate) private: bool,
    /// Paused by the application.
    pub(crate) paused: bool,
    choker: Choker,
    known: BTreeMap<SocketAddr, KnownPeer>,
    /// The order of the next known address.
    known_seq: u64,
    /// Incoming peers refused for lack of room since the last peer turnover.
    pub(crate) refused: usize,
    /// Who sent the data of failed pieces.
    pub(crate) smart: SmartBan,
    /// Addresses this torrent banned.
    bans: u32,
    pub(crate) uploaded: u64,
    pub(crate) downloaded: u64,
    hash_failures: u32,
    /// When to announce; `None` while the torrent does not run (checking, paused).
    pub(crate) announcer: Option<Announcer>,
    /// The trackers, in BEP 12 tiers, with their backoff; kept across pauses.
    pub(crate) trackers: Trackers,
    /// The download finished in this session and no tracker acknowledged `completed`
    /// yet.
    pub(crate) completed_unsent: bool,
    /// The disk error that stopped the torrent ([`TorrentState::Error`]).
    pub(crate) error: Option<DiskError>,
    /// Every wanted piece was verified, and [`Event::TorrentFinished`] said so; back
    /// to false when more pieces become wanted.
    pub(crate) finished: bool,
    /// Stop seeding (pause) once uploaded bytes reach this many thousandths of the
    /// downloaded ones ([`Session::set_ratio_limit`]).
    pub(crate) ratio_limit: Option<u32>,
    /// Waiting for its turn in a queue (see `queue.rs`).
    pub(crate) queued: bool,
    /// Started with [`Session::resume_now`]: never queued, not counted in the queues.
    pub(crate) force_start: bool,
    /// Its place in the queues: the torrents' places are 0..n, each once.
    pub(crate) queue_pos: u32,
    /// Its idle seeding limit ([`Session::set_idle_limit`]).
    pub(crate) idle_limit: super::IdleLimit,
    /// Its own connection cap ([`Session::set_peer_limit`]); `None`: the session's
    /// [`SessionConfig::max_peers_per_torrent`].
    pub(crate) max_peers: Option<usize>,
    /// When payload last moved either way (a block received or sent).
    pub(crate) last_transfer: Instant,
    /// When it last started running (added, resumed, checked, left a queue): idle
    /// and stalled time count from the later of this and `last_transfer`.
    pub(crate) active_since: Instant,
    /// Its web seeds (BEP 19, see `webseed.rs`).
    pub(crate) web: super::webseed::WebSeeds,
}

impl Torrent {
    pub(crate) fn new(
        id: TorrentId,
        m: &Metainfo<'_>,
        have: Option<&Bitfield>,
        config: &SessionConfig,
    ) -> Option<Self> {
        let meta = Meta::new(m, have, config)?;
        let mut t = Self::new_magnet(id, m.info_hash(), config);
        t.private = m.is_private();
        t.state = if meta.have.is_full() {
            TorrentState::Seeding
        } else {
            TorrentState::Downloading
        };
        t.meta = Some(meta);
        Some(t)
    }

    /// A torrent known only by its info-hash (a magnet link): it fetches the info
    /// dictionary from peers first.
    pub(crate) fn new_magnet(id: TorrentId, info_hash: InfoHash, config: &SessionConfig) -> Self {
        Self {
            id,
            info_hash,
            state: TorrentState::FetchingMetadata,
            meta: None,
            fetch: None,
            layers: None,
            v2_link: false,
            meta_fetch: FetchState::default(),
            private: false,
            paused: false,
            choker: Choker::new(config.choker),
            known: BTreeMap::new(),
            known_seq: 0,
            refused: 0,
            smart: SmartBan::new(config.max_failed_block_records),
            bans: 0,
            uploaded: 0,
            downloaded: 0,
            hash_failures: 0,
            announcer: None,
            trackers: Trackers::new(Vec::<Vec<super::announce::Tracker>>::new(), &mut |_| 0),
            error: None,
            completed_unsent: false,
            finished: false,
            ratio_limit: None,
            queued: false,
            force_start: false,
            queue_pos: 0,
            idle_limit: super::IdleLimit::Session,
            max_peers: None,
            last_transfer: Instant::ZERO,
            active_since: Instant::ZERO,
            web: super::webseed::WebSeeds::default(),
        }
    }

    /// Paused or queued: no connection, no announce.
    pub(crate) fn is_stopped(&self) -> bool {
        self.paused || self.queued
    }

    /// How long no payload moved while it ran.
    pub(crate) fn idle_for(&self, now: Instant) -> Duration {
        now.since(if self.last_transfer > self.active_since {
            self.last_transfer
        } else {
            self.active_since
        })
    }

    /// The host's check of the data on disk found `have`: the torrent leaves
    /// [`TorrentState::Checking`]. False when `have` does not fit.
    pub(crate) fn set_checked(&mut self, have: &Bitfield) -> bool {
        let Some(meta) = self.meta.as_mut() else {
            return false;
        };
        if have.len() != meta.have.len() {
            return false;
        }
        for i in have.iter_set() {
            if !meta.have.get(i) {
                if meta.picker.we_have(PieceIndex(i)).is_err() {
                    return false;
                }
                meta.have.set(i);
            }
        }
        self.state = if meta.have.is_full() {
            TorrentState::Seeding
        } else {
            TorrentState::Downloading
        };
        true
    }

    /// The info dictionary arrived (magnet link): becomes a normal torrent, or for a
    /// v2-only torrent starts fetching its piece layers ([`MetaOutcome::NeedLayers`]).
    pub(crate) fn metadata_received(&mut self, info: &[u8], config: &SessionConfig) -> MetaOutcome {
        let mut file = Vec::with_capacity(info.len() + 8);
        file.extend_from_slice(b"d4:info");
        file.extend_from_slice(info);
        file.push(b'e');
        self.metainfo_received(&file, config)
    }

    /// As [`Torrent::metadata_received`], from a whole metainfo (the info dictionary
    /// and, for a v2 torrent, the piece layers fetched from peers).
    pub(crate) fn metainfo_received(&mut self, file: &[u8], config: &SessionConfig) -> MetaOutcome {
        let mut tokens = Vec::new();
        let Ok(m) = Metainfo::parse_vec(file, &mut tokens, &crate::metainfo::Limits::default())
        else {
            return MetaOutcome::Bad;
        };
        if m.info_hash() != self.info_hash && m.info_hash_v2_truncated() != Some(self.info_hash) {
            return MetaOutcome::Bad;
        }
        // A v2-only torrent needs its piece layers, which `ut_metadata` does not carry:
        // they come from peers (BEP 52 hash requests).
        if m.is_v2_only() && merkle_pieces(&m).is_none() {
            return match super::layers::LayerFetch::new(&m) {
                Some(f) => {
                    self.layers = Some(f);
                    self.fetch = None;
                    MetaOutcome::NeedLayers
                }
                None => MetaOutcome::Bad,
            };
        }
        let Some(meta) = Meta::new(&m, None, config) else {
            return MetaOutcome::Bad;
        };
        self.layers = None;
        self.private = m.is_private();
        self.meta = Some(meta);
        self.web.set_layout(&m);
        self.fetch = None;
        self.state = TorrentState::Downloading;
        MetaOutcome::Ready
    }

    /// Not private, not paused, past its check and not stopped by an error: the DHT
    /// and local service discovery may speak of it.
    pub(crate) fn is_public_and_running(&self) -> bool {
        !self.private
            && !self.is_stopped()
            && !matches!(self.state, TorrentState::Checking | TorrentState::Error)
    }

    /// A hybrid's v2 info-hash truncated to 20 bytes, its name in the v2 swarm (`None`
    /// for a v1 torrent, a magnet link before its metadata, and a v2-only torrent,
    /// whose `info_hash` it is).
    pub(crate) fn info_hash_v2_short(&self) -> Option<InfoHash> {
        let v2 = self.meta.as_ref()?.info_hash_v2?;
        let mut short = [0u8; 20];
        short.copy_from_slice(&v2[..20]);
        Some(InfoHash(short)).filter(|h| *h != self.info_hash)
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.meta.as_ref().is_some_and(|m| m.have.is_full())
    }

    /// Stops the torrent on a disk error; the first error is the one kept. Returns
    /// whether this is that first one (the torrent was not stopped by an error yet).
    pub(crate) fn fail(&mut self, e: DiskError) -> bool {
        self.state = TorrentState::Error;
        let first = self.error.is_none();
        self.error.get_or_insert(e);
        first
    }

    /// Every wanted piece is verified.
    pub(crate) fn is_finished(&self) -> bool {
        self.meta.as_ref().is_some_and(Meta::is_finished)
    }

    pub(crate) fn status(&self) -> TorrentStatus {
        let (pieces_have, num_pieces, bytes_have, total_size) = match &self.meta {
            Some(m) => (
                m.have.count(),
                m.geometry.num_pieces(),
                m.bytes_have(),
                m.geometry.total_len(),
            ),
            None => (0, 0, 0, 0),
        };
        let (wanted_size, wanted_have) = self.meta.as_ref().map_or((0, 0), Meta::wanted_bytes);
        TorrentStatus {
            info_hash: self.info_hash,
            info_hash_v2: self.meta.as_ref().and_then(|m| m.info_hash_v2),
            state: self.state,
            pieces_have,
            num_pieces,
            bytes_have,
            total_size,
            peers: 0,
            seeds: 0,
            connecting: 0,
            download_rate: 0,
            upload_rate: 0,
            downloaded: self.downloaded,
            uploaded: self.uploaded,
            hash_failures: self.hash_failures,
            banned: self.bans,
            private: self.private,
            paused: self.paused,
            queued: self.queued,
            queue_position: self.queue_pos,
            error: self.error,
            wanted_size,
            wanted_have,
            finished: self.is_finished(),
            stalled: false,
        }
    }

    fn left(&self) -> u64 {
        match &self.meta {
            Some(m) => m.geometry.total_len() - m.bytes_have(),
            // Unknown until the metadata arrives; trackers want a non-zero value for
            // a peer that still downloads.
            None => 1,
        }
    }

    /// Queues an announce carrying `event` (the session's announce schedule decides
    /// when, see `announce.rs`).
    pub(crate) fn push_announce(
        &self,
        event: Option<AnnounceEvent>,
        seq: u64,
        tracker: String,
        out: &mut VecDeque<Action>,
    ) {
        out.push_back(Action::Announce {
            torrent: self.id,
            tracker,
            event,
            uploaded: self.uploaded,
            downloaded: self.downloaded,
            left: self.left(),
            seq,
            info_hash_v2: self.info_hash_v2_short(),
        });
    }

    /// Adds an address to dial (the session filters banned and implausible ones out
    /// first); `pex_from` is the address group whose PEX message named it. Returns
    /// whether it is known now.
    ///
    /// Past `cap` ([`SessionConfig::max_known_peers`]) an entry makes room rather than the
    /// newcomer being refused: one that failed first, then one from PEX, then one
    /// never connected, the oldest first; an entry from a tracker, the DHT or the
    /// user never gives way to one from PEX. The entries one address's PEX holds are
    /// capped at [`SessionConfig::max_pex_peers_per_ip`]: its newest replaces its
    /// oldest. `cap` and `pex_cap` are those two settings ([`Session::known_caps`]).
    pub(crate) fn add_known_peer(
        &mut self,
        addr: SocketAddr,
        pex_from: Option<IpAddr>,
        origin: PeerOrigin,
        (cap, pex_cap): (usize, usize),
    ) -> bool {
        if addr.port() == 0 {
            return false;
        }
        if let Some(k) = self.known.get_mut(&addr) {
            // A better source vouches for it too.
            if pex_from.is_none() {
                if k.pex_from.is_some() {
                    k.origin = origin;
                }
                k.pex_from = None;
            }
            return true;
        }
        if let Some(g) = pex_from {
            if pex_cap == 0 {
                return false;
            }
            let mine = self
                .known
                .values()
                .filter(|k| k.pex_from == Some(g))
                .count();
            if mine >= pex_cap {
                let oldest = self
                    .known
                    .iter()
                    .filter(|(_, k)| k.pex_from == Some(g))
                    .min_by_key(|(_, k)| (k.connected, k.seq))
                    .map(|(a, _)| *a);
                if let Some(a) = oldest {
                    self.known.remove(&a);
                }
            }
        }
        let new_rank = u8::from(pex_from.is_none());
        if self.known.len() >= cap {
            let victim = self
                .known
                .iter()
                .filter(|(_, k)| k.failures > 0 || k.rank() <= new_rank)
                .max_by_key(|(_, k)| {
                    (
                        k.failures > 0,
                        core::cmp::Reverse(k.rank()),
                        !k.connected,
                        core::cmp::Reverse(k.seq),
                    )
                })
                .map(|(a, _)| *a);
            match victim {
                Some(a) => {
                    self.known.remove(&a);
                }
                None => return false,
            }
        }
        self.known_seq += 1;
        self.known.insert(
            addr,
            KnownPeer {
                last_attempt: None,
                failures: 0,
                pex_from,
                origin,
                seq: self.known_seq,
                connected: false,
                no_utp: false,
                pex_via: None,
                pex_flags: 0,
            },
        );
        true
    }

    /// The connection at `via` named `addr` in a PEX message (BEP 55: it may relay).
    pub(crate) fn set_pex_via(&mut self, addr: SocketAddr, via: SocketAddr, flags: u8) {
        if let Some(k) = self.known.get_mut(&addr) {
            k.pex_via = Some(via);
            k.pex_flags = flags;
        }
    }

    /// The connection whose PEX message named `addr` last, and the flags it gave.
    pub(crate) fn pex_via(&self, addr: SocketAddr) -> Option<(SocketAddr, u8)> {
        self.known
            .get(&addr)
            .and_then(|k| Some((k.pex_via?, k.pex_flags)))
    }

    /// Where we heard of `addr` (None: it is not a known address).
    pub(crate) fn origin_of(&self, addr: SocketAddr) -> Option<PeerOrigin> {
        self.known.get(&addr).map(|k| k.origin)
    }

    /// A connection we dialed to `addr` completed its handshake.
    pub(crate) fn mark_connected(&mut self, addr: SocketAddr) {
        if let Some(k) = self.known.get_mut(&addr) {
            k.connected = true;
        }
    }

    /// A uTP dial to `addr` got no answer: dial it over TCP from now on.
    pub(crate) fn mark_no_utp(&mut self, addr: SocketAddr) {
        if let Some(k) = self.known.get_mut(&addr) {
            k.no_utp = true;
        }
    }

    /// Whether a dial to `addr` failed before: its uTP dial, or every transport.
    pub(crate) fn dial_failed_before(&self, addr: SocketAddr) -> bool {
        self.known
            .get(&addr)
            .is_some_and(|k| k.no_utp || k.failures > 0)
    }

    /// Whether a uTP dial to `addr` got no answer before.
    pub(crate) fn no_utp(&self, addr: SocketAddr) -> bool {
        self.known.get(&addr).is_some_and(|k| k.no_utp)
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

    /// Whether `a` may be dialed now: not in `busy`, not banned, not `full` (its
    /// address has its share of connections), and not waiting out its backoff.
    fn dialable(
        a: &SocketAddr,
        k: &KnownPeer,
        now: Instant,
        busy: &[SocketAddr],
        backoff: Duration,
        bans: &BanList,
        full: &dyn Fn(&SocketAddr) -> bool,
    ) -> bool {
        !busy.contains(a)
            && !bans.contains(a.ip())
            && !full(a)
            && k.last_attempt.is_none_or(|t| {
                now.since(t).as_millis() >= backoff.as_millis() * u64::from(k.failures.max(1))
            })
    }

    /// After a data check closed them: the peers we were connected to may be dialed
    /// again as soon as the check is done.
    pub(crate) fn redial_connected(&mut self) {
        for k in self.known.values_mut().filter(|k| k.connected) {
            k.last_attempt = None;
            k.failures = 0;
        }
    }

    /// How many known addresses could be dialed now (peer turnover makes room only
    /// for peers that wait for it).
    pub(crate) fn dial_candidates(
        &self,
        now: Instant,
        busy: &[SocketAddr],
        backoff: Duration,
        bans: &BanList,
    ) -> usize {
        if matches!(self.state, TorrentState::Error | TorrentState::Checking) || self.is_stopped() {
            return 0;
        }
        self.known
            .iter()
            .filter(|(a, k)| Self::dialable(a, k, now, busy, backoff, bans, &|_| false))
            .count()
    }

    /// The next address worth dialing: never tried first, then the longest waiting;
    /// among equals, one from a tracker, the DHT or the user before one from PEX, then
    /// the oldest known. None in `busy`, never a banned one, and none for which
    /// `full` holds (its address has its share of connections).
    pub(crate) fn next_peer_to_dial(
        &mut self,
        now: Instant,
        busy: &[SocketAddr],
        backoff: Duration,
        bans: &BanList,
        full: &dyn Fn(&SocketAddr) -> bool,
    ) -> Option<SocketAddr> {
        if matches!(self.state, TorrentState::Error | TorrentState::Checking) || self.is_stopped() {
            return None;
        }
        // A seed dials too: a peer behind a firewall (or a client that will not dial
        // loopback addresses) reaches us only that way; seeds are dropped once known.
        let pick = self
            .known
            .iter()
            .filter(|(a, k)| Self::dialable(a, k, now, busy, backoff, bans, full))
            .min_by_key(|(_, k)| {
                (
                    k.last_attempt.map_or(0, |t| t.as_millis() + 1),
                    core::cmp::Reverse(k.rank()),
                    k.seq,
                )
            })
            .map(|(a, _)| *a)?;
        if let Some(k) = self.known.get_mut(&pick) {
            k.last_attempt = Some(now);
        }
        Some(pick)
    }

    /// `ip` is banned (by this torrent when `ours`; `bans` holds the ban, which may
    /// cover its /64 or /48): it is dialed no more, and the
    /// blocks of pieces not verified yet that its departed connections sent are
    /// dropped (its live connections' blocks are dropped as they close).
    pub(crate) fn forget_ip(&mut self, ip: IpAddr, ours: bool, bans: &BanList) {
        let ip = canonical(ip);
        if ours {
            self.bans += 1;
        }
        self.known
            .retain(|a, _| canonical(a.ip()) != ip && !bans.contains(a.ip()));
        if let Some(m) = self.meta.as_mut() {
            for k in self.smart.departed_keys(ip) {
                m.picker.drop_blocks_from(PeerKey(k));
            }
        }
        self.smart.forget_ip(ip);
    }

    /// A banned connection closes: the blocks it sent of pieces not verified yet are
    /// dropped (they are suspect) and fetched again.
    pub(crate) fn drop_blocks_of(&mut self, key: u32) {
        if let Some(m) = self.meta.as_mut() {
            m.picker.drop_blocks_from(PeerKey(key));
        }
    }

    /// The sender's address of each block of `piece` (`None`: not received, or sent
    /// by a connection gone and forgotten); `live` gives the address of a
    /// connection still open.
    pub(crate) fn block_senders(
        &self,
        piece: PieceIndex,
        live: impl Fn(u32) -> Option<IpAddr>,
    ) -> Vec<Option<IpAddr>> {
        let Some(m) = self.meta.as_ref() else {
            return Vec::new();
        };
        let n = m.geometry.blocks_in_piece(piece) as usize;
        let mut keys = alloc::vec![None; n];
        if m.picker.block_senders(piece, &mut keys).is_err() {
            return Vec::new();
        }
        keys.iter()
            .map(|k| k.and_then(|k| live(k.0).or_else(|| self.smart.departed(k.0))))
            .collect()
    }

    /// Whether `theirs` holds a piece we lack.
    pub(crate) fn wants_from(&self, theirs: &Bitfield) -> bool {
        let Some(m) = self.meta.as_ref() else {
            return false;
        };
        if self.state != TorrentState::Downloading {
            return false;
        }
        if let Some(w) = &m.wanted_mask {
            // Only a wanted piece makes a peer interesting.
            return theirs
                .as_bytes()
                .iter()
                .zip(m.have.as_bytes())
                .zip(w.as_bytes())
                .any(|((t, h), w)| t & !h & w != 0);
        }
        theirs
            .as_bytes()
            .iter()
            .zip(m.have.as_bytes())
            .any(|(t, h)| t & !h != 0)
    }

    pub(crate) fn peer_gone(&mut self, key: u32, c: &Conn) {
        if let Some(m) = self.meta.as_mut() {
            m.picker.abort_peer(PeerKey(key));
            if c.counted {
                let _ = m.picker.peer_lost_bitfield(c.peer.bitfield().as_bytes());
            }
            // Who sent blocks still unverified is remembered, should their piece fail.
            if m.picker.holds_blocks_from(PeerKey(key)) {
                let picker = &m.picker;
                self.smart.peer_left(key, c.addr.ip(), || {
                    let mut keys = alloc::collections::BTreeSet::new();
                    picker.for_each_sender(|k| {
                        keys.insert(k.0);
                    });
                    keys
                });
            }
        }
        if let Some(f) = self.fetch.as_mut() {
            f.forget_peer(key);
        }
        self.choker.peer_gone(key);
    }

    pub(crate) fn write_done(&mut self, block: BlockRef, out: &mut VecDeque<Action>) {
        let Some(m) = self.meta.as_mut() else { return };
        if let Ok(true) = m.picker.mark_written(&block) {
            if !m.have.get(block.piece.0) {
                out.push_back(Action::Verify {
                    torrent: self.id,
                    piece: block.piece,
                    expected: m.sha1(block.piece),
                    merkle: m.merkle.get(block.piece.get()).copied(),
                    block_digests: self.smart.wants_digests(block.piece.0),
                });
            }
        }
    }

    /// Returns whether the piece is newly ours.
    pub(crate) fn piece_verified(&mut self, piece: PieceIndex) -> bool {
        let Some(m) = self.meta.as_mut() else {
            return false;
        };
        if m.have.get(piece.0) || piece.0 >= m.geometry.num_pieces() {
            return false;
        }
        let _ = m.picker.piece_verified(piece);
        m.have.set(piece.0);
        true
    }

    /// The piece failed its check: its blocks are fetched again. Returns false when
    /// it was not a piece in progress (nothing changed).
    pub(crate) fn piece_failed(&mut self, piece: PieceIndex) -> bool {
        let Some(m) = self.meta.as_mut() else {
            return false;
        };
        if m.picker.piece_failed(piece).is_err() {
            return false;
        }
        self.hash_failures += 1;
        true
    }
}

/// Our local id for `ut_metadata` messages.
pub(crate) const OUR_UT_METADATA: u8 = 2;
/// Our local id for `ut_pex` messages.
pub(crate) const OUR_UT_PEX: u8 = 1;
const CLIENT: &[u8] = b"btcore 0.1.0";

/// Handles one event of one connection.
pub(super) fn on_peer_event(
    s: &mut Session,
    now: Instant,
    conn: ConnId,
    ev: PeerEvent,
) -> Result<(), CloseReason> {
    match ev {
        PeerEvent::Handshake {
            info_hash, peer_id, ..
        } => {
            let tid = match s.conn_mut(conn).and_then(|c| c.torrent) {
                Some(t) => t,
                None => {
                    let t = s
                        .torrent_by_hash(&info_hash)
                        .ok_or(CloseReason::UnknownTorrent)?;
                    let c = s.conn_mut(conn).ok_or(CloseReason::TorrentStopped)?;
                    c.torrent = Some(t);
                    c.peer.accept(now, info_hash)?;
                    t
                }
            };
            let listen_port = s.config().listen_port;
            let pex = s.config().pex;
            let holepunch = s.holepunch_offered(false);
            // `reqq`: how many requests from the peer we queue (BEP 10).
            let reqq = s.config().peer.max_peer_requests as u32;
            let banned = s.conn_banned(conn);
            let ours4 = match s.external_address(false) {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            };
            let ours6 = match s.external_address(true) {
                Some(IpAddr::V6(a)) => Some(a),
                _ => None,
            };
            let (_, t, _) = s.split(conn).ok_or(CloseReason::TorrentStopped)?;
            if banned {
                return Err(CloseReason::Banned);
            }
            if t.is_stopped() || t.state == TorrentState::Checking {
                return Err(CloseReason::TorrentStopped);
            }
            // Duplicates, and the caps per address and per torrent.
            s.admit(now, conn, tid, peer_id)?;
            let (c, t, _) = s.split(conn).ok_or(CloseReason::TorrentStopped)?;
            if c.peer.extensions() {
                let ours = OurExtensions {
                    // BEP 27: a private torrent's metadata is not handed out.
                    ut_metadata: (!t.private).then_some(OUR_UT_METADATA),
                    ut_pex: (!t.private && pex).then_some(OUR_UT_PEX),
                    ut_holepunch: (!t.private && holepunch)
                        .then_some(super::holepunch::OUR_UT_HOLEPUNCH),
                    metadata_size: t.meta.as_ref().map(|m| m.info.len() as u32),
                    listen_port: Some(listen_port),
                    client: CLIENT,
                    reqq: Some(reqq),
                    yourip: Some(c.addr.ip()),
                    ipv4: ours4,
                    ipv6: ours6,
                };
                let mut buf = [0u8; 256];
                if let Ok(n) = write_ext_handshake(&mut buf, &ours) {
                    c.peer.send_extended(EXT_HANDSHAKE_ID, &buf[..n]);
                }
            }
            match t.meta.as_ref() {
                Some(m) => {
                    c.peer.set_geometry(m.geometry)?;
                    c.peer.send_have_set(&m.have);
                }
                None => c.peer.send_have_set(&Bitfield::new(0)),
            }
            let addr = c.addr;
            s.push_event_pub(Event::PeerConnected(tid, addr));
            // The peer's have-set may have arrived with the handshake.
            count_availability(s, conn);
        }
        PeerEvent::HaveSet => {
            count_availability(s, conn);
            // Two seeds have nothing to say to each other.
            let both_seeds = s
                .split(conn)
                .is_some_and(|(c, t, _)| t.is_complete() && c.peer.is_seed());
            if both_seeds {
                return Err(CloseReason::BothSeeds);
            }
        }
        PeerEvent::Have(piece) => {
            if let Some((c, t, _)) = s.split(conn) {
                if let (true, Some(m)) = (c.counted, t.meta.as_mut()) {
                    let _ = m.picker.peer_has(piece);
                }
            }
            s.update_interest_pub(conn);
        }
        PeerEvent::Choked => {
            if let Some((c, t, _)) = s.split(conn) {
                if let (false, Some(m)) = (c.peer.fast(), t.meta.as_mut()) {
                    m.picker.abort_peer(PeerKey(conn.0));
                }
            }
        }
        PeerEvent::RequestLost(block) => {
            if let Some(m) = s.split(conn).and_then(|(_, t, _)| t.meta.as_mut()) {
                let _ = m.picker.abort_request(&block, PeerKey(conn.0));
            }
        }
        PeerEvent::Block { block, data } => {
            let Some((_, t, actions)) = s.split(conn) else {
                return Ok(());
            };
            let Some(m) = t.meta.as_mut() else {
                return Ok(());
            };
            let Ok(r) = m.picker.mark_received(&block, PeerKey(conn.0)) else {
                return Ok(());
            };
            t.downloaded += data.len() as u64;
            t.last_transfer = now;
            if !r.duplicate {
                let len = data.len();
                actions.push_back(Action::Write {
                    torrent: t.id,
                    block,
                    data,
                });
                s.disk_in_flight_add(len);
            }
            for p in r.cancel.as_slice() {
                if let Some(other) = s.conn_mut(ConnId(p.0)) {
                    other.peer.cancel(block);
                }
            }
        }
        PeerEvent::Extended { id, payload } => on_extended(s, now, conn, id, &payload)?,
        PeerEvent::HashRequest(req) => super::layers::on_hash_request(s, conn, &req),
        PeerEvent::Hashes { req, hashes } => {
            super::layers::on_hashes(s, now, conn, &req, &hashes)?;
        }
        PeerEvent::HashReject(req) => super::layers::on_hash_reject(s, now, conn, &req),
        // A peer that becomes interested gets a free upload slot at once rather than
        // at the next choker round (libtorrent does the same).
        PeerEvent::Interest(true) => s.unchoke_if_room(conn),
        PeerEvent::Unchoked
        | PeerEvent::Interest(false)
        | PeerEvent::AllowedFast(_)
        | PeerEvent::Suggest(_)
        | PeerEvent::PeerRequest
        | PeerEvent::DhtPort(_) => {}
    }
    Ok(())
}

/// BEP 10 extension messages: the handshake and BEP 9 `ut_metadata`.
fn on_extended(
    s: &mut Session,
    now: Instant,
    conn: ConnId,
    id: u8,
    payload: &[u8],
) -> Result<(), CloseReason> {
    let ext_config = ExtConfig::default();
    let pex = s.config().pex;
    let Some((c, t, _)) = s.split(conn) else {
        return Ok(());
    };
    if id == EXT_HANDSHAKE_ID {
        // A malformed handshake only means no extensions with this peer.
        let Ok(hs) = ExtHandshake::parse(payload, &ext_config) else {
            return Ok(());
        };
        let vote = hs.yourip.map(|ip| (c.addr.ip(), ip));
        c.their_ut_metadata = hs.ut_metadata_id();
        c.their_ut_pex = hs.ut_pex_id().filter(|_| !t.private);
        c.holepunch.their_id = hs.ut_holepunch_id().filter(|_| !t.private);
        c.holepunch.our_ip = hs.yourip;
        c.listen_port = hs.listen_port;
        c.peer.set_peer_reqq(hs.reqq);
        // Only a claim: which size to fetch is decided over every peer's.
        c.metadata_size = hs.metadata_size;
        if t.meta.is_none() {
            let tid = t.id;
            metadata::claims_changed(s, now, tid);
        }
        request_metadata(s, now, conn);
        if let Some((voter, ip)) = vote {
            s.vote_external(voter, ip);
        }
        return Ok(());
    }
    if id == OUR_UT_PEX {
        // BEP 11: peers from PEX are candidates (ranked below those of trackers, the
        // DHT and the user), never for a private torrent; a malformed message is
        // ignored.
        if !t.private && pex {
            if let Ok(m) = crate::pex::PexMessage::parse(payload) {
                // An address of this machine only from a peer on it; what one
                // address's PEX holds of the known list is capped.
                let from = c.addr.ip();
                let via = c.addr;
                let added: Vec<(SocketAddr, u8)> = m
                    .added_with_flags()
                    .filter(|(a, _)| netaddr::plausible_from(from, a) && !s.is_banned(a.ip()))
                    .collect();
                let caps = s.known_caps();
                let mut failed = Vec::new();
                if let Some((_, t, _)) = s.split(conn) {
                    for (a, flags) in added {
                        if t.add_known_peer(a, Some(netaddr::group(from)), PeerOrigin::Pex, caps) {
                            t.set_pex_via(a, via, flags);
                            if t.dial_failed_before(a) {
                                failed.push(a);
                            }
                        }
                    }
                    let tid = t.id;
                    // BEP 55: the sender may introduce us to those we could not dial.
                    super::holepunch::named_after_failure(s, now, tid, &failed);
                }
            }
        }
        return Ok(());
    }
    if id == super::holepunch::OUR_UT_HOLEPUNCH {
        super::holepunch::on_message(s, now, conn, payload);
        return Ok(());
    }
    if id != OUR_UT_METADATA {
        return Ok(());
    }
    let msg = match MetadataMsg::parse(payload) {
        Ok(m) => m,
        Err(e) if e.is_peer_fault() => return Err(CloseReason::BadMetadata),
        Err(_) => return Ok(()),
    };
    let Some(their_id) = c.their_ut_metadata else {
        return Ok(());
    };
    match msg {
        MetadataMsg::Request { piece } => {
            // As libtorrent: a piece goes out at once while the send queue has room
            // for it (beside the blocks being read for the peer), waits while a few
            // others wait, and is rejected beyond them. A request for a piece already
            // waiting is the same request. A peer that asks without reading thus
            // never makes us queue more than the send queue holds.
            let have = t
                .meta
                .as_ref()
                .filter(|_| !t.private)
                .is_some_and(|m| metadata_piece(&m.info, piece).is_some());
            let max_waiting = s.config().max_metadata_requests;
            let Some((c, _, _)) = s.split(conn) else {
                return Ok(());
            };
            if !have {
                let mut buf = [0u8; 64];
                if let Ok(n) = (MetadataMsg::Reject { piece }).write(&mut buf) {
                    c.peer.send_extended(their_id, &buf[..n]);
                }
            } else if c.metadata_deferred.contains(&piece) {
                // Already waiting.
            } else if c.metadata_deferred.len() < max_waiting {
                c.metadata_deferred.push(piece);
                serve_metadata(s, conn);
            } else {
                let mut buf = [0u8; 64];
                if let Ok(n) = (MetadataMsg::Reject { piece }).write(&mut buf) {
                    c.peer.send_extended(their_id, &buf[..n]);
                }
            }
        }
        MetadataMsg::Reject { piece } => {
            if let Some(f) = t.fetch.as_mut() {
                f.reject(piece, conn.0);
            }
        }
        MetadataMsg::Data {
            piece,
            total_size,
            data,
        } => {
            if c.metadata_size.is_none() && total_size <= ext_config.max_metadata_size {
                c.metadata_size = Some(total_size);
            }
            let tid = t.id;
            let Some(f) = t.fetch.as_mut() else {
                return Ok(());
            };
            // Data of another size than the one assembled: not ours to judge.
            if total_size != f.total_size() {
                return Ok(());
            }
            let had = f.pieces_have();
            match f.add_piece(piece, data, conn.0) {
                Ok(Some(Done::Complete(info))) => {
                    let config = s.config().clone();
                    s.metadata_complete(now, tid, &info, &config);
                    return Ok(());
                }
                Ok(Some(Done::HashMismatch { contributors })) => {
                    metadata::hash_mismatch(s, now, tid, total_size, &contributors);
                    return Ok(());
                }
                Ok(None) => {
                    if f.pieces_have() > had {
                        t.meta_fetch.progress(now);
                    }
                }
                Err(e) if e.is_peer_fault() => return Err(CloseReason::BadMetadata),
                Err(_) => {}
            }
            request_metadata(s, now, conn);
        }
    }
    Ok(())
}

/// Sends the `ut_metadata` pieces `conn` asked for, in order, while its send queue
/// has room for them beside the blocks being read for it.
pub(super) fn serve_metadata(s: &mut Session, conn: ConnId) {
    let Some((c, t, _)) = s.split(conn) else {
        return;
    };
    let (Some(m), Some(their_id)) = (t.meta.as_ref(), c.their_ut_metadata) else {
        c.metadata_deferred.clear();
        return;
    };
    let mut buf = alloc::vec::Vec::new();
    while let Some(&piece) = c.metadata_deferred.first() {
        let Some(data) = metadata_piece(&m.info, piece) else {
            c.metadata_deferred.remove(0);
            continue;
        };
        // At most: the piece, its dictionary (under 64 bytes) and the frame (length,
        // id 20, extension id).
        let most = data.len() + 64 + 6;
        let reads = c.reads_in_flight * crate::ids::BLOCK_LEN as usize;
        if c.peer.send_space() < reads + most {
            break;
        }
        c.metadata_deferred.remove(0);
        let reply = MetadataMsg::Data {
            piece,
            total_size: m.info.len() as u32,
            data,
        };
        buf.resize(64 + METADATA_PIECE_LEN as usize, 0);
        if let Ok(n) = reply.write(&mut buf) {
            c.peer.send_extended(their_id, &buf[..n]);
        }
    }
}

/// Keeps up to two metadata requests in flight to a peer that has `ut_metadata` and
/// claims the size being assembled.
pub(super) fn request_metadata(s: &mut Session, now: Instant, conn: ConnId) {
    let Some((c, t, _)) = s.split(conn) else {
        return;
    };
    let (Some(f), Some(their_id)) = (t.fetch.as_mut(), c.their_ut_metadata) else {
        return;
    };
    if c.metadata_size != Some(f.total_size()) {
        return;
    }
    let mut buf = [0u8; 64];
    for _ in 0..2 {
        let Some(piece) = f.next_request(conn.0, now.as_millis()) else {
            break;
        };
        if let Ok(n) = (MetadataMsg::Request { piece }).write(&mut buf) {
            c.peer.send_extended(their_id, &buf[..n]);
        }
    }
}

/// Adds the peer's pieces to the picker's availability (once) and updates interest.
pub(super) fn count_availability(s: &mut Session, conn: ConnId) {
    if let Some((c, t, _)) = s.split(conn) {
        if let Some(m) = t.meta.as_mut() {
            if !c.counted
                && c.peer.is_established()
                && c.peer.bitfield().len() == m.geometry.num_pieces()
                && m.picker
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
    let Some(m) = t.meta.as_mut() else { return };
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
    let hint = if t.smart.on_parole(c.addr.ip()) {
        PickHint::Parole
    } else if c.peer.is_snubbing(now) {
        PickHint::Slow
    } else {
        PickHint::Normal
    };
    let mut out = [BlockRef {
        piece: PieceIndex(0),
        offset: 0,
        len: 0,
    }; 64];
    let n = if c.peer.peer_choking() {
        // Choked: only what it lets us have anyway (BEP 6 allowed fast), each of those
        // few pieces looked at directly; a pick over its whole bitfield would rarely
        // land on them.
        m.picker.pick_among(
            c.peer.allowed_fast(),
            c.peer.bitfield().as_bytes(),
            PeerKey(conn.0),
            hint == PickHint::Parole,
            slots,
            &mut out,
        )
    } else {
        m.picker.pick(
            c.peer.bitfield().as_bytes(),
            PeerKey(conn.0),
            hint,
            slots,
            &mut out,
            &mut || rng.next_u32(),
        )
    };
    for b in &out[..n] {
        if c.peer.can_request(b.piece) {
            c.peer.request(now, *b);
        } else {
            let _ = m.picker.abort_request(b, PeerKey(conn.0));
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

/// What a magnet link's metadata came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetaOutcome {
    /// The torrent is whole: it downloads.
    Ready,
    /// A v2-only torrent: its piece layers are fetched first.
    NeedLayers,
    /// Not this torrent's metadata, or not usable.
    Bad,
}

/// BEP 52: each piece's [`MerklePiece`], from the v2 `file tree` and `piece layers`;
/// `None` for a v1 torrent, or when a file larger than a piece has no layer (metadata
/// fetched with `ut_metadata`, which carries only the info dictionary).
pub fn merkle_pieces(m: &Metainfo<'_>) -> Option<Vec<MerklePiece>> {
    let files = m.tree_files()?;
    let geometry = m.geometry();
    let pl = geometry.piece_len();
    let mut out = Vec::with_capacity(geometry.num_pieces() as usize);
    for f in files {
        if f.attr.pad || f.length == 0 {
            continue;
        }
        let root = *f.pieces_root()?;
        // v2 files start on piece boundaries, in order: the next piece is this file's.
        if f.offset != out.len() as u64 * u64::from(pl) {
            return None;
        }
        if f.length <= u64::from(pl) {
            let blocks = f.length.div_ceil(u64::from(crate::merkle::BLOCK_SIZE));
            out.push(MerklePiece {
                root,
                len: f.length as u32,
                width: blocks.next_power_of_two() as u32,
            });
            continue;
        }
        let layer = m.piece_layer(&root)?;
        let count = f.length.div_ceil(u64::from(pl));
        if layer.len() as u64 != count * 32 {
            return None;
        }
        for (k, h) in layer.chunks_exact(32).enumerate() {
            let start = k as u64 * u64::from(pl);
            out.push(MerklePiece {
                root: h.try_into().ok()?,
                len: (f.length - start).min(u64::from(pl)) as u32,
                width: pl / crate::merkle::BLOCK_SIZE,
            });
        }
    }
    (out.len() == geometry.num_pieces() as usize).then_some(out)
}
