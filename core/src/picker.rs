//! The piece picker: which block to request next, from whom, and what to cancel.
//!
//! The picker knows nothing of sockets, time or disks (libtorrent's `piece_picker` is
//! the model). It keeps, per piece, how many peers have it, its priority and whether we
//! have it; and, per *partial* (in-progress) piece, the state of every block:
//!
//! ```text
//!            mark_requested / pick            mark_received          mark_written
//!   None  ───────────────────────────▶ Requested ──────────▶ Writing ─────────▶ Finished
//!    ▲  ◀─── abort_request (last requester) ──┘                                   │
//!    └────────────────────── piece_failed (every block) ◀────────────────────────┘
//!                                                 piece_verified: piece becomes "have"
//! ```
//!
//! Peers are named by an opaque [`PeerKey`]; a peer's pieces are passed to
//! [`Picker::pick`] as any [`HaveSet`], e.g. its raw BEP 3 bitfield (`&[u8]`, most
//! significant bit first).
//!
//! # Pick order
//!
//! [`Picker::pick`] marks the blocks it returns as requested by the peer (call
//! [`Picker::abort_request`] for any you do not send). For each priority level from 7
//! down to 1 (0 = skip, never picked):
//!
//! 1. **Partial pieces** the peer has, first those this peer already works on (fewer
//!    pieces in flight, libtorrent's "prefer whole pieces"), then the others, oldest
//!    first.
//! 2. **New pieces** the peer has, in one of three orders: *sequential* (lowest index
//!    first, for streaming) if [`Picker::set_sequential`] is on; *random* while we have
//!    fewer than [`PickerConfig::initial_random`] pieces (so that we quickly own a
//!    whole piece to trade); otherwise *rarest first* with a random tie-break drawn from
//!    the caller's `rng` (the core owns no RNG).
//!
//! 3. **Endgame**: once every block of every wanted piece is requested (no free piece,
//!    no `None` block in a partial piece), a block already requested from other peers
//!    may be requested again, fewest requesters first, up to
//!    [`PickerConfig::max_duplicates`] requesters per block. [`Picker::mark_received`]
//!    returns the other requesters so that the session sends them `cancel`s.
//!
//! # Slow peers
//!
//! A slow peer must not hold the last piece hostage. The session, which measures
//! rates, passes [`PickHint::Slow`] for a peer it deems slow *while faster peers are
//! available* (if every peer is slow, pass [`PickHint::Normal`]). A slow peer then
//! only gets blocks of pieces that are already started (step 1), never starts a new
//! piece (step 2) and never duplicates in endgame (step 3). Conversely, normal peers in
//! endgame duplicate the blocks still outstanding at slow peers, and the first copy to
//! arrive wins; the slow peer's request is reported for cancelling.
//!
//! # Peers on parole
//!
//! A peer that sent blocks of a piece that failed its hash check may have sent the bad
//! data, or may be honest and unlucky to share the piece with the one that did. The
//! session passes [`PickHint::Parole`] for such a peer (libtorrent's "parole mode"): it
//! gets blocks only of pieces in which no other peer has a request outstanding, first
//! those it works on, then new pieces, which are *reserved* for it while it has
//! requests in them (other peers do not join them, except as endgame duplicates), and
//! it never duplicates in endgame. Its next piece is then its own: if that fails, it
//! alone sent it. [`Picker::block_senders`] tells who sent each block of a piece, for a
//! finer attribution.
//!
//! # Memory
//!
//! All state lives in caller-provided storage ([`PickerStorage`]), smoltcp style; with
//! the `alloc` feature `Picker::new_alloc` allocates it in `Vec`s instead. Sizes (the
//! `memory_is_bounded` test prints and bounds them):
//!
//! - per piece: one [`PieceState`], **4 bytes** (2^21 pieces = 8 MiB);
//! - per partial piece: one [`PartialPiece`] (**16 bytes**) plus one [`BlockSlot`]
//!   (**20 bytes**, up to `MAX_REQUESTERS` peers) per block of a full piece, i.e.
//!   `16 + 20 * piece_len / 16 KiB` bytes: 5 KiB for a 4 MiB piece.
//!
//! The number of partial pieces is configuration ([`PickerConfig::max_partials`], or
//! the length of the caller's slice). When the table is full no new piece is started
//! until one completes or is aborted, which also bounds the data in flight.
//!
//! # Complexity
//!
//! `n` = pieces, `P` = partial-piece slots, `B` = blocks per piece.
//!
//! - `peer_has`, `peer_has_all`, `peer_lost_all`, `set_piece_priority`: O(1) (a seed is
//!   one counter, as in libtorrent); `peer_has_bitfield`: O(n).
//! - `mark_*`, `abort_request`, `piece_verified`, `piece_failed`, `piece_senders`,
//!   `block_senders`: O(P + B); `abort_peer`, `holds_blocks_from`, `drop_blocks_from`,
//!   `for_each_sender`: O(P·B).
//! - `pick`: O(7·P·B) for partial pieces plus, when new pieces are wanted, one scan of
//!   the pieces per priority level in use that has pieces left to start, each scan
//!   keeping the best 64 free pieces, whoever has them, in a fixed array, held for the
//!   calls after it (each starts those its peer has; a peer needing more scans for its
//!   own best; a piece turning free again joins them at its place, O(64)), so the
//!   O(n) scan is paid once per up to 64 new pieces, not per call: a download of
//!   65,536 pieces picked one at a time would otherwise scan 65,536 times.
//!   No per-peer state: the cost does not grow with the number of peers.
//!
//! # Errors
//!
//! Out-of-range pieces, blocks that are not exactly a block of the [`Geometry`],
//! wrong-length bitfields and priorities above 7 are [`PickerError`]s; nothing panics.
//! Operations that are harmless repeats (aborting a request that is not outstanding,
//! verifying a piece we have) succeed without effect.

use core::fmt;
use core::ops::{Deref, DerefMut};

use crate::ids::{BlockRef, Geometry, PieceIndex, BLOCK_LEN};

#[cfg(feature = "alloc")]
use alloc::vec::Vec;

/// The most peers one block can be requested from at once (endgame duplicates).
pub(crate) const MAX_REQUESTERS: usize = 4;
/// The highest piece priority.
pub(crate) const MAX_PRIORITY: u8 = 7;
/// The priority every piece starts with (libtorrent's default).
pub(crate) const DEFAULT_PRIORITY: u8 = 4;
/// Capacity of a [`PeerSet`].
pub(crate) const PEER_SET_CAP: usize = 8;

/// Candidates kept by one scan for new pieces: those the pick does not take wait for
/// the next picks (see [`Picker::pick_new`]), so a scan of every piece is paid once per
/// up to this many new pieces, not once per pick.
const TOP_K: usize = 64;
const UNUSED: u32 = u32::MAX;
const HAVE: u8 = 1;
const PARTIAL: u8 = 2;

/// An opaque peer handle chosen by the session (an index into its peer table).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct PeerKey(pub u32);

/// The pieces a peer has, as the picker reads them.
pub trait HaveSet {
    /// Whether the peer has `piece`; pieces beyond the set are `false`.
    fn has_piece(&self, piece: PieceIndex) -> bool;
}

/// A BEP 3 bitfield: bit 7 of byte 0 is piece 0.
impl HaveSet for [u8] {
    fn has_piece(&self, piece: PieceIndex) -> bool {
        let i = piece.get();
        self.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
    }
}

/// Every piece: a seed (BEP 6 `have_all`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct AllPieces;

impl HaveSet for AllPieces {
    fn has_piece(&self, _piece: PieceIndex) -> bool {
        true
    }
}

/// How the session rates the peer a pick is for. See "Slow peers" in the module docs.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub enum PickHint {
    /// An ordinary peer.
    #[default]
    Normal,
    /// A peer much slower than the others: it only gets blocks of started pieces.
    Slow,
    /// A peer on parole (it sent blocks of a piece that failed): it only gets pieces no
    /// other peer has requests in, and the pieces it starts are reserved for it. See
    /// "Peers on parole" in the module docs.
    Parole,
}

/// A small set of peers (to cancel, or to suspect of sending bad data).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PeerSet {
    keys: [PeerKey; PEER_SET_CAP],
    len: u8,
    truncated: bool,
}

impl PeerSet {
    /// The peers, in the order first seen.
    pub fn as_slice(&self) -> &[PeerKey] {
        &self.keys[..usize::from(self.len)]
    }
    /// Number of peers held.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }
    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Whether more than `PEER_SET_CAP` distinct peers were involved and some were
    /// left out.
    pub fn truncated(&self) -> bool {
        self.truncated
    }
    /// Whether `peer` is in the set.
    pub fn contains(&self, peer: PeerKey) -> bool {
        self.as_slice().contains(&peer)
    }
    fn insert(&mut self, peer: PeerKey) {
        if self.contains(peer) {
            return;
        }
        match self.keys.get_mut(usize::from(self.len)) {
            Some(k) => {
                *k = peer;
                self.len += 1;
            }
            None => self.truncated = true,
        }
    }
}

/// What [`Picker::mark_received`] learned.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[must_use]
pub struct Received {
    /// Other peers that had this block requested: send them a `cancel`.
    pub cancel: PeerSet,
    /// The block was already received (endgame race) or the piece is already ours:
    /// drop the data.
    pub duplicate: bool,
    /// Every block of the piece is now received: once written, hash it.
    pub piece_complete: bool,
}

/// The state of one block.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum BlockStatus {
    /// Nobody has it and nobody is asked for it.
    #[default]
    None,
    /// Requested from one or more peers.
    Requested,
    /// Received, being written to disk.
    Writing,
    /// Written (or the whole piece is verified).
    Finished,
}

/// Why a picker call was refused. Every variant is the local caller's fault except
/// where noted; none is the remote peer's (the session validates wire input first).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum PickerError {
    /// The piece index is not below the piece count.
    PieceOutOfRange,
    /// The block is not exactly one block of the geometry (offset a multiple of
    /// [`BLOCK_LEN`], length to the end of the block).
    InvalidBlock,
    /// A bitfield is not `ceil(num_pieces / 8)` bytes long.
    BitfieldLength,
    /// A priority above `MAX_PRIORITY`.
    InvalidPriority,
    /// The storage given to [`Picker::new`] is too small for the geometry, or has no
    /// partial-piece slot.
    StorageTooSmall,
    /// Capacity: every partial-piece slot is in use.
    PartialTableFull,
    /// We already have the piece.
    AlreadyHave,
    /// The block was already received.
    BlockDone,
    /// Capacity: the block already has `MAX_REQUESTERS` requesters.
    TooManyRequesters,
    /// `mark_written` for a block that is not being written.
    NotWriting,
}

impl fmt::Display for PickerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PieceOutOfRange => "piece index out of range",
            Self::InvalidBlock => "not a block of this torrent",
            Self::BitfieldLength => "bitfield length does not match the piece count",
            Self::InvalidPriority => "priority above 7",
            Self::StorageTooSmall => "picker storage too small",
            Self::PartialTableFull => "partial piece table full",
            Self::AlreadyHave => "piece already complete",
            Self::BlockDone => "block already received",
            Self::TooManyRequesters => "block has the maximum number of requesters",
            Self::NotWriting => "block is not being written",
        })
    }
}

/// Tunables. Defaults suit a desktop client; shrink `max_partials` on small targets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct PickerConfig {
    /// Partial-piece slots `Picker::new_alloc` allocates (with caller storage, the
    /// length of [`PickerStorage::partials`] decides).
    pub max_partials: usize,
    /// Pick random pieces while we have fewer complete pieces than this.
    pub initial_random: u32,
    /// Most peers one block is requested from in endgame (1 = no duplicates),
    /// clamped to `1..=MAX_REQUESTERS`.
    pub max_duplicates: u8,
    /// Lowest index first (streaming) instead of rarest first.
    pub sequential: bool,
}

impl Default for PickerConfig {
    fn default() -> Self {
        Self {
            max_partials: 64,
            initial_random: 4,
            max_duplicates: 2,
            sequential: false,
        }
    }
}

impl PickerConfig {
    /// Sets [`Self::max_partials`].
    pub fn with_max_partials(mut self, n: usize) -> Self {
        self.max_partials = n;
        self
    }
    /// Sets [`Self::initial_random`].
    pub fn with_initial_random(mut self, n: u32) -> Self {
        self.initial_random = n;
        self
    }
    /// Sets [`Self::max_duplicates`].
    pub fn with_max_duplicates(mut self, n: u8) -> Self {
        self.max_duplicates = n;
        self
    }
    /// Sets [`Self::sequential`].
    pub fn with_sequential(mut self, on: bool) -> Self {
        self.sequential = on;
        self
    }
}

/// Per-piece state (4 bytes): availability (saturating at 65535 peers, seeds counted
/// apart), priority, have/partial flags.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PieceState {
    avail: u16,
    prio: u8,
    flags: u8,
}

impl PieceState {
    /// A piece nobody has, at the default priority.
    pub const EMPTY: Self = Self {
        avail: 0,
        prio: DEFAULT_PRIORITY,
        flags: 0,
    };
    fn is_free(&self) -> bool {
        self.flags & (HAVE | PARTIAL) == 0 && self.prio > 0
    }
}

impl Default for PieceState {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// One slot of the partial-piece table (16 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PartialPiece {
    piece: u32,
    none: u32,
    requested: u32,
    /// Started by a peer on parole: reserved for it while it has requests in it.
    reserved: bool,
}

impl PartialPiece {
    /// An unused slot.
    pub const EMPTY: Self = Self {
        piece: UNUSED,
        none: 0,
        requested: 0,
        reserved: false,
    };
}

impl Default for PartialPiece {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// The state of one block of a partial piece (20 bytes): status and the peers that
/// requested it, or the one that sent it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BlockSlot {
    status: BlockStatus,
    n: u8,
    peers: [PeerKey; MAX_REQUESTERS],
}

impl BlockSlot {
    /// A block in state `None`.
    pub const EMPTY: Self = Self {
        status: BlockStatus::None,
        n: 0,
        peers: [PeerKey(0); MAX_REQUESTERS],
    };
    fn peers(&self) -> &[PeerKey] {
        &self.peers[..usize::from(self.n)]
    }
    fn has_peer(&self, peer: PeerKey) -> bool {
        self.peers().contains(&peer)
    }
}

impl Default for BlockSlot {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// Caller-allocated storage for a [`Picker`].
///
/// `pieces` needs at least `num_pieces` entries, `partials` at least one (its length is
/// the number of partial-piece slots), `blocks` at least
/// `partials.len() * blocks_per_piece` (see [`PickerStorage::blocks_needed`]).
#[derive(Debug)]
pub struct PickerStorage<'s> {
    /// One entry per piece.
    pub pieces: &'s mut [PieceState],
    /// The partial-piece table.
    pub partials: &'s mut [PartialPiece],
    /// Block states, `blocks_per_piece` per partial slot.
    pub blocks: &'s mut [BlockSlot],
}

impl PickerStorage<'_> {
    /// Block slots needed for `max_partials` partial pieces of `geometry`.
    pub fn blocks_needed(geometry: &Geometry, max_partials: usize) -> Option<usize> {
        let bpp = usize::try_from(geometry.piece_len().div_ceil(BLOCK_LEN)).ok()?;
        bpp.checked_mul(max_partials)
    }
}

/// Borrowed or owned slice, as smoltcp's `ManagedSlice`.
enum Store<'s, T> {
    Borrowed(&'s mut [T]),
    #[cfg(feature = "alloc")]
    Owned(Vec<T>),
}

impl<T> Deref for Store<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Self::Borrowed(s) => s,
            #[cfg(feature = "alloc")]
            Self::Owned(v) => v,
        }
    }
}

impl<T> DerefMut for Store<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Self::Borrowed(s) => s,
            #[cfg(feature = "alloc")]
            Self::Owned(v) => v,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    Sequential,
    Random,
    Rarest,
}

/// The piece picker. See the module documentation for the policy.
pub struct Picker<'s> {
    geo: Geometry,
    cfg: PickerConfig,
    bpp: usize,
    pieces: Store<'s, PieceState>,
    partials: Store<'s, PartialPiece>,
    blocks: Store<'s, BlockSlot>,
    seeds: u32,
    num_have: u32,
    partials_used: usize,
    /// Pieces neither had nor partial, per priority (index 0 unused).
    free_by_prio: [u32; 8],
    /// The best candidates of the last scan for new pieces not taken yet, best first,
    /// for priority `ahead_prio` in order `ahead_order`: checked again when used; a
    /// piece turning free again joins them at its place (`hold_again`).
    ahead: [u32; TOP_K],
    ahead_len: usize,
    ahead_prio: u8,
    ahead_order: Order,
}

impl fmt::Debug for Picker<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picker")
            .field("num_pieces", &self.geo.num_pieces())
            .field("num_have", &self.num_have)
            .field("seeds", &self.seeds)
            .field("partials_used", &self.partials_used)
            .field("partial_slots", &self.partials.len())
            .field("free_by_prio", &self.free_by_prio)
            .finish()
    }
}

impl<'s> Picker<'s> {
    /// A picker over caller storage. Every entry of the storage is reset.
    pub fn new(
        geometry: Geometry,
        config: PickerConfig,
        storage: PickerStorage<'s>,
    ) -> Result<Self, PickerError> {
        Self::build(
            geometry,
            config,
            Store::Borrowed(storage.pieces),
            Store::Borrowed(storage.partials),
            Store::Borrowed(storage.blocks),
        )
    }

    fn build(
        geo: Geometry,
        cfg: PickerConfig,
        mut pieces: Store<'s, PieceState>,
        mut partials: Store<'s, PartialPiece>,
        mut blocks: Store<'s, BlockSlot>,
    ) -> Result<Self, PickerError> {
        let n = geo.num_pieces() as usize;
        let bpp = geo.piece_len().div_ceil(BLOCK_LEN) as usize;
        let need = bpp
            .checked_mul(partials.len())
            .ok_or(PickerError::StorageTooSmall)?;
        if pieces.len() < n || partials.is_empty() || blocks.len() < need {
            return Err(PickerError::StorageTooSmall);
        }
        pieces.fill(PieceState::EMPTY);
        partials.fill(PartialPiece::EMPTY);
        blocks.fill(BlockSlot::EMPTY);
        let mut free_by_prio = [0; 8];
        free_by_prio[usize::from(DEFAULT_PRIORITY)] = geo.num_pieces();
        Ok(Self {
            geo,
            cfg,
            bpp,
            pieces,
            partials,
            blocks,
            seeds: 0,
            num_have: 0,
            partials_used: 0,
            free_by_prio,
            ahead: [0; TOP_K],
            ahead_len: 0,
            ahead_prio: 0,
            ahead_order: Order::Rarest,
        })
    }

    // ---- getters ----

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }
    /// Number of pieces we have.
    pub fn num_have(&self) -> u32 {
        self.num_have
    }
    /// Whether we have every piece.
    pub fn is_seed(&self) -> bool {
        self.num_have == self.geo.num_pieces()
    }
    /// Whether we have every piece of priority above 0.
    pub fn is_finished(&self) -> bool {
        self.free_by_prio.iter().all(|&c| c == 0)
            && self
                .used_slots()
                .all(|s| self.pieces[self.partials[s].piece as usize].prio == 0)
    }
    /// Whether we have `piece`.
    pub fn have(&self, piece: PieceIndex) -> Result<bool, PickerError> {
        Ok(self.pieces[self.check_piece(piece)?].flags & HAVE != 0)
    }
    /// Peers known to have `piece` (seeds included).
    pub fn availability(&self, piece: PieceIndex) -> Result<u32, PickerError> {
        let i = self.check_piece(piece)?;
        Ok(u32::from(self.pieces[i].avail).saturating_add(self.seeds))
    }
    /// The priority of `piece`.
    pub fn piece_priority(&self, piece: PieceIndex) -> Result<u8, PickerError> {
        Ok(self.pieces[self.check_piece(piece)?].prio)
    }
    /// Partial-piece slots in use and in total.
    pub fn partial_usage(&self) -> (usize, usize) {
        (self.partials_used, self.partials.len())
    }
    /// Whether picks are in endgame: every block of every wanted piece is requested
    /// or received.
    pub fn in_endgame(&self) -> bool {
        self.free_by_prio.iter().all(|&c| c == 0)
            && self.used_slots().all(|s| {
                self.partials[s].none == 0 || self.pieces[self.partials[s].piece as usize].prio == 0
            })
    }
    /// The state of a block (`Finished` for pieces we have).
    pub fn block_status(&self, block: &BlockRef) -> Result<BlockStatus, PickerError> {
        let (pi, bi) = self.check_block(block)?;
        if self.pieces[pi].flags & HAVE != 0 {
            return Ok(BlockStatus::Finished);
        }
        Ok(match self.find_slot(pi) {
            Some(s) => self.blocks[s * self.bpp + bi].status,
            None => BlockStatus::None,
        })
    }
    /// The peers a block is requested from, or the one that sent it.
    pub fn block_peers(&self, block: &BlockRef) -> Result<PeerSet, PickerError> {
        let (pi, bi) = self.check_block(block)?;
        let mut set = PeerSet::default();
        if let Some(s) = self.find_slot(pi) {
            for &p in self.blocks[s * self.bpp + bi].peers() {
                set.insert(p);
            }
        }
        Ok(set)
    }

    /// Whether `piece` is in progress (a partial piece: some block requested or
    /// received and the piece not verified yet).
    pub fn in_progress(&self, piece: PieceIndex) -> bool {
        self.check_piece(piece)
            .is_ok_and(|i| self.pieces[i].flags & PARTIAL != 0)
    }

    /// The peers that sent the blocks of `piece` received so far (being written or
    /// written), in block order, without duplicates (at most `PEER_SET_CAP`; see
    /// [`PeerSet::truncated`]). Empty for a piece that is not partial.
    pub fn piece_senders(&self, piece: PieceIndex) -> Result<PeerSet, PickerError> {
        let i = self.check_piece(piece)?;
        let mut set = PeerSet::default();
        if let Some(s) = self.find_slot(i) {
            let nb = self.nblocks(i);
            for b in &self.blocks[s * self.bpp..s * self.bpp + nb] {
                if matches!(b.status, BlockStatus::Writing | BlockStatus::Finished) {
                    set.insert(b.peers[0]);
                }
            }
        }
        Ok(set)
    }

    /// Writes the sender of each block of `piece` into `out` (index = block index):
    /// `Some` for a block received (being written or written), `None` otherwise.
    /// Returns the number of blocks of the piece; `out` must hold that many
    /// ([`PickerError::StorageTooSmall`] otherwise).
    pub fn block_senders(
        &self,
        piece: PieceIndex,
        out: &mut [Option<PeerKey>],
    ) -> Result<usize, PickerError> {
        let i = self.check_piece(piece)?;
        let nb = self.nblocks(i);
        let out = out.get_mut(..nb).ok_or(PickerError::StorageTooSmall)?;
        out.fill(None);
        if let Some(s) = self.find_slot(i) {
            for (o, b) in out
                .iter_mut()
                .zip(&self.blocks[s * self.bpp..s * self.bpp + nb])
            {
                if matches!(b.status, BlockStatus::Writing | BlockStatus::Finished) {
                    *o = Some(b.peers[0]);
                }
            }
        }
        Ok(nb)
    }

    /// Whether `peer` sent a block of a piece not verified yet (so that who it was
    /// must be remembered after it leaves, should the piece fail). O(P·B).
    pub fn holds_blocks_from(&self, peer: PeerKey) -> bool {
        self.used_slots().any(|s| {
            let nb = self.nblocks(self.partials[s].piece as usize);
            self.blocks[s * self.bpp..s * self.bpp + nb]
                .iter()
                .any(|b| {
                    matches!(b.status, BlockStatus::Writing | BlockStatus::Finished)
                        && b.peers[0] == peer
                })
        })
    }

    /// Calls `f` with the sender of every block received of pieces not verified yet
    /// (a sender once per block it sent). O(P·B).
    pub fn for_each_sender(&self, mut f: impl FnMut(PeerKey)) {
        for s in self.used_slots() {
            let nb = self.nblocks(self.partials[s].piece as usize);
            for b in &self.blocks[s * self.bpp..s * self.bpp + nb] {
                if matches!(b.status, BlockStatus::Writing | BlockStatus::Finished) {
                    f(b.peers[0]);
                }
            }
        }
    }

    // ---- availability (handle_* of peer messages) ----

    /// A peer announced `piece` (`have`).
    pub fn peer_has(&mut self, piece: PieceIndex) -> Result<(), PickerError> {
        let i = self.check_piece(piece)?;
        self.pieces[i].avail = self.pieces[i].avail.saturating_add(1);
        Ok(())
    }
    /// A peer that had `piece` left.
    pub fn peer_lost(&mut self, piece: PieceIndex) -> Result<(), PickerError> {
        let i = self.check_piece(piece)?;
        self.pieces[i].avail = self.pieces[i].avail.saturating_sub(1);
        Ok(())
    }
    /// A peer's BEP 3 bitfield (MSB first). Spare bits past the last piece are
    /// ignored (the wire layer rejects them).
    pub fn peer_has_bitfield(&mut self, bits: &[u8]) -> Result<(), PickerError> {
        self.apply_bitfield(bits, true)
    }
    /// A peer with this bitfield left.
    pub fn peer_lost_bitfield(&mut self, bits: &[u8]) -> Result<(), PickerError> {
        self.apply_bitfield(bits, false)
    }
    /// A seed (`have_all` or a full bitfield the session chose to count as one):
    /// O(1), counted apart from per-piece availability.
    pub fn peer_has_all(&mut self) {
        self.seeds = self.seeds.saturating_add(1);
    }
    /// A seed counted by [`Self::peer_has_all`] left.
    pub fn peer_lost_all(&mut self) {
        self.seeds = self.seeds.saturating_sub(1);
    }

    fn apply_bitfield(&mut self, bits: &[u8], add: bool) -> Result<(), PickerError> {
        let n = self.geo.num_pieces() as usize;
        if bits.len() != n.div_ceil(8) {
            return Err(PickerError::BitfieldLength);
        }
        for (byte_i, &byte) in bits.iter().enumerate() {
            if byte == 0 {
                continue;
            }
            for bit in 0..8 {
                let i = byte_i * 8 + bit;
                if i < n && byte & (0x80 >> bit) != 0 {
                    let a = &mut self.pieces[i].avail;
                    *a = if add {
                        a.saturating_add(1)
                    } else {
                        a.saturating_sub(1)
                    };
                }
            }
        }
        Ok(())
    }

    // ---- commands ----

    /// Sets a piece's priority: 0 = skip, 1..=7, higher first. A partial piece set
    /// to 0 keeps its blocks but gets no new requests.
    pub fn set_piece_priority(&mut self, piece: PieceIndex, prio: u8) -> Result<(), PickerError> {
        let i = self.check_piece(piece)?;
        if prio > MAX_PRIORITY {
            return Err(PickerError::InvalidPriority);
        }
        self.update_piece(i, |s| s.prio = prio);
        Ok(())
    }

    /// Turns sequential (streaming) order on or off.
    pub fn set_sequential(&mut self, on: bool) {
        self.cfg.sequential = on;
    }

    /// We have `piece` (from resume data or a recheck). Its partial state, if any, is
    /// dropped.
    pub fn we_have(&mut self, piece: PieceIndex) -> Result<(), PickerError> {
        let i = self.check_piece(piece)?;
        if self.pieces[i].flags & HAVE != 0 {
            return Ok(());
        }
        // Partial to had in one step: never free in between (which would drop the
        // candidates held ahead, on every piece verified).
        if let Some(s) = self.find_slot(i) {
            self.release_slot_as(s, HAVE);
        }
        self.update_piece(i, |s| s.flags |= HAVE);
        self.num_have += 1;
        Ok(())
    }

    /// The piece passed its hash check: it is ours. Same as [`Self::we_have`].
    pub fn piece_verified(&mut self, piece: PieceIndex) -> Result<(), PickerError> {
        self.we_have(piece)
    }

    /// The piece failed its hash check: every block goes back to `None` and the
    /// piece can be picked again. Returns the peers that sent its blocks (ask
    /// [`Self::block_senders`] first for who sent which).
    pub fn piece_failed(&mut self, piece: PieceIndex) -> Result<PeerSet, PickerError> {
        let i = self.check_piece(piece)?;
        let mut set = PeerSet::default();
        if self.pieces[i].flags & HAVE != 0 {
            return Err(PickerError::AlreadyHave);
        }
        if let Some(s) = self.find_slot(i) {
            let nb = self.nblocks(i);
            for b in &self.blocks[s * self.bpp..s * self.bpp + nb] {
                if matches!(b.status, BlockStatus::Writing | BlockStatus::Finished) {
                    for &p in b.peers() {
                        set.insert(p);
                    }
                }
            }
            self.release_slot(s);
        }
        Ok(set)
    }

    /// Forgets the written blocks `peer` sent of pieces not verified yet (it was banned:
    /// its data is suspect): they go back to `None` and are picked again. Blocks still
    /// being written are left alone (their write completion would find them gone), and
    /// so are pieces whose blocks are all written: their check is under way, and its
    /// result must find the senders that wrote what was checked (were the blocks
    /// fetched again from another peer meanwhile, a failure would name that peer alone
    /// and ban it). Returns how many were dropped. O(P·B).
    pub fn drop_blocks_from(&mut self, peer: PeerKey) -> usize {
        let mut count = 0;
        for s in 0..self.partials.len() {
            let piece = self.partials[s].piece;
            if piece == UNUSED {
                continue;
            }
            let nb = self.nblocks(piece as usize);
            if self.blocks[s * self.bpp..s * self.bpp + nb]
                .iter()
                .all(|b| b.status == BlockStatus::Finished)
            {
                continue;
            }
            for bi in 0..nb {
                let b = &mut self.blocks[s * self.bpp + bi];
                if b.status == BlockStatus::Finished && b.peers[0] == peer {
                    *b = BlockSlot::EMPTY;
                    self.partials[s].none += 1;
                    count += 1;
                }
            }
            let pp = self.partials[s];
            if pp.none as usize == self.nblocks(piece as usize) {
                self.release_slot(s);
            }
        }
        count
    }

    /// Records that `block` was requested from `peer` (outside [`Self::pick`], e.g.
    /// requests the session restores). Idempotent for the same peer.
    pub fn mark_requested(&mut self, block: &BlockRef, peer: PeerKey) -> Result<(), PickerError> {
        let (pi, bi) = self.check_block(block)?;
        if self.pieces[pi].flags & HAVE != 0 {
            return Err(PickerError::AlreadyHave);
        }
        let s = match self.find_slot(pi) {
            Some(s) => s,
            None => self.alloc_slot(pi)?,
        };
        let b = self.blocks[s * self.bpp + bi];
        match b.status {
            BlockStatus::Writing | BlockStatus::Finished => Err(PickerError::BlockDone),
            _ if b.has_peer(peer) => Ok(()),
            _ if usize::from(b.n) >= MAX_REQUESTERS => Err(PickerError::TooManyRequesters),
            _ => {
                self.request(s, bi, peer);
                Ok(())
            }
        }
    }

    /// `peer` sent `block`. The block becomes `Writing`; the other peers that had it
    /// requested are returned for cancelling. A block we did not request (say, after
    /// a timeout aborted it) is accepted if we still need it.
    pub fn mark_received(
        &mut self,
        block: &BlockRef,
        peer: PeerKey,
    ) -> Result<Received, PickerError> {
        let (pi, bi) = self.check_block(block)?;
        let mut r = Received::default();
        if self.pieces[pi].flags & HAVE != 0 {
            r.duplicate = true;
            return Ok(r);
        }
        let s = match self.find_slot(pi) {
            Some(s) => s,
            None => self.alloc_slot(pi)?,
        };
        let b = &mut self.blocks[s * self.bpp + bi];
        let pp = &mut self.partials[s];
        match b.status {
            BlockStatus::Writing | BlockStatus::Finished => {
                r.duplicate = true;
                return Ok(r);
            }
            BlockStatus::None => pp.none -= 1,
            BlockStatus::Requested => {
                pp.requested -= 1;
                for &p in b.peers() {
                    if p != peer {
                        r.cancel.insert(p);
                    }
                }
            }
        }
        *b = BlockSlot {
            status: BlockStatus::Writing,
            n: 1,
            peers: [peer; MAX_REQUESTERS],
        };
        r.piece_complete = pp.none == 0 && pp.requested == 0;
        Ok(r)
    }

    /// The block's data is on disk. Returns whether every block of the piece is now
    /// written (time to hash it).
    pub fn mark_written(&mut self, block: &BlockRef) -> Result<bool, PickerError> {
        let (pi, bi) = self.check_block(block)?;
        if self.pieces[pi].flags & HAVE != 0 {
            return Ok(true);
        }
        let s = self.find_slot(pi).ok_or(PickerError::NotWriting)?;
        let b = &mut self.blocks[s * self.bpp + bi];
        if b.status != BlockStatus::Writing {
            return Err(PickerError::NotWriting);
        }
        b.status = BlockStatus::Finished;
        let nb = self.nblocks(pi);
        Ok(self.blocks[s * self.bpp..s * self.bpp + nb]
            .iter()
            .all(|b| b.status == BlockStatus::Finished))
    }

    /// `peer` will not deliver `block` (choked, rejected, timed out). Returns whether
    /// a request was removed; a request that is not outstanding is ignored. When the
    /// last request of an untouched piece goes, its partial slot is freed.
    pub fn abort_request(&mut self, block: &BlockRef, peer: PeerKey) -> Result<bool, PickerError> {
        let (pi, bi) = self.check_block(block)?;
        if self.pieces[pi].flags & HAVE != 0 {
            return Ok(false);
        }
        Ok(match self.find_slot(pi) {
            Some(s) => self.unrequest(s, bi, peer),
            None => false,
        })
    }

    /// Aborts every outstanding request of `peer` (it disconnected or choked us
    /// without BEP 6 rejects). Returns the number removed. O(P·B).
    pub fn abort_peer(&mut self, peer: PeerKey) -> usize {
        let mut count = 0;
        for s in 0..self.partials.len() {
            let piece = self.partials[s].piece;
            if piece == UNUSED {
                continue;
            }
            for bi in 0..self.nblocks(piece as usize) {
                if self.partials[s].piece == piece && self.unrequest(s, bi, peer) {
                    count += 1;
                }
            }
        }
        count
    }

    /// Chooses up to `min(max, out.len())` blocks for `peer`, whose pieces are `has`,
    /// writes them to `out`, marks them requested by `peer` and returns how many.
    /// `rng` breaks ties (any decent 32-bit generator seeded by the host).
    pub fn pick<H: HaveSet + ?Sized>(
        &mut self,
        has: &H,
        peer: PeerKey,
        hint: PickHint,
        max: usize,
        out: &mut [BlockRef],
        rng: &mut impl FnMut() -> u32,
    ) -> usize {
        let max = max.min(out.len());
        let mut n = 0;
        let parole = hint == PickHint::Parole;
        for prio in (1..=MAX_PRIORITY).rev() {
            if n >= max {
                return n;
            }
            if parole {
                // Its own pieces, new ones (reserved for it), then pieces others left.
                self.pick_partials(has, peer, prio, &[true], true, &mut n, max, out);
                self.pick_new(has, peer, prio, true, &mut n, max, out, rng);
                self.pick_partials(has, peer, prio, &[false], true, &mut n, max, out);
            } else {
                self.pick_partials(has, peer, prio, &[true, false], false, &mut n, max, out);
                if hint != PickHint::Slow {
                    self.pick_new(has, peer, prio, false, &mut n, max, out, rng);
                }
            }
        }
        if n < max && hint == PickHint::Normal && self.in_endgame() {
            self.pick_endgame(has, peer, &mut n, max, out);
        }
        n
    }

    /// Chooses up to `min(max, out.len())` blocks for `peer` among `pieces` alone (a
    /// choking peer's allowed-fast set, BEP 6), those of them `has` holds, each piece
    /// looked at directly rather than found by a scan. As [`Picker::pick`] does: first
    /// the free blocks of pieces in progress that `peer` works on, then of the others,
    /// then free pieces started, each pass in the order given. `reserve`: a peer on
    /// parole (see [`PickHint::Parole`]) joins only pieces in which no other peer has a
    /// request, and the pieces it starts are reserved for it. O(`pieces` · (partial
    /// slots + blocks per piece)); marks the blocks requested like [`Picker::pick`].
    pub fn pick_among<H: HaveSet + ?Sized>(
        &mut self,
        pieces: &[PieceIndex],
        has: &H,
        peer: PeerKey,
        reserve: bool,
        max: usize,
        out: &mut [BlockRef],
    ) -> usize {
        let max = max.min(out.len());
        let mut n = 0;
        for pass in 0..3 {
            for &p in pieces {
                if n >= max {
                    return n;
                }
                let Ok(pi) = self.check_piece(p) else {
                    continue;
                };
                if !has.has_piece(p) {
                    continue;
                }
                let st = self.pieces[pi];
                if pass == 2 {
                    if st.is_free() {
                        if let Ok(s) = self.alloc_slot(pi) {
                            self.partials[s].reserved = reserve;
                            self.take_free_blocks(s, peer, &mut n, max, out);
                        }
                    }
                    continue;
                }
                if st.prio == 0 {
                    continue;
                }
                let Some(s) = self.find_slot(pi) else {
                    continue;
                };
                let pp = self.partials[s];
                let blocks = &self.blocks[s * self.bpp..s * self.bpp + self.nblocks(pi)];
                // Each pass takes its own pieces in progress: `peer`'s, then the others.
                if pp.none == 0 || blocks.iter().any(|b| b.has_peer(peer)) != (pass == 0) {
                    continue;
                }
                let open = if reserve {
                    !blocks.iter().any(|b| {
                        b.status == BlockStatus::Requested && b.peers().iter().any(|&q| q != peer)
                    })
                } else {
                    !(pp.reserved && pp.requested > 0)
                };
                if open {
                    self.take_free_blocks(s, peer, &mut n, max, out);
                }
            }
        }
        n
    }

    /// Blocks of partial pieces: for each of `order` (`true`: pieces `peer` already
    /// works on, `false`: the others). `parole`: only pieces in which no other peer has
    /// a request; otherwise pieces reserved for a peer on parole that still has
    /// requests in them are skipped.
    #[allow(clippy::too_many_arguments)]
    fn pick_partials<H: HaveSet + ?Sized>(
        &mut self,
        has: &H,
        peer: PeerKey,
        prio: u8,
        order: &[bool],
        parole: bool,
        n: &mut usize,
        max: usize,
        out: &mut [BlockRef],
    ) {
        for &mine in order {
            for s in 0..self.partials.len() {
                if *n >= max {
                    return;
                }
                let pp = self.partials[s];
                if pp.piece == UNUSED || pp.none == 0 {
                    continue;
                }
                if !parole && pp.reserved && pp.requested > 0 {
                    continue;
                }
                let pi = pp.piece as usize;
                if self.pieces[pi].prio != prio || !has.has_piece(PieceIndex(pp.piece)) {
                    continue;
                }
                let nb = self.nblocks(pi);
                let blocks = &self.blocks[s * self.bpp..s * self.bpp + nb];
                if parole
                    && blocks.iter().any(|b| {
                        b.status == BlockStatus::Requested && b.peers().iter().any(|&p| p != peer)
                    })
                {
                    continue;
                }
                let involved = blocks.iter().any(|b| b.has_peer(peer));
                if involved == mine {
                    self.take_free_blocks(s, peer, n, max, out);
                }
            }
        }
    }

    /// New pieces; `reserve`: for a peer on parole (see [`PickHint::Parole`]).
    ///
    /// The best [`TOP_K`] free pieces of a priority, whoever has them, are held from
    /// one scan of every piece for the picks after it: each pick starts those its peer
    /// has, in order, so a download of many small pieces, picked a piece or two at a
    /// time, is not a scan of every piece per pick. A peer that needs more than it
    /// finds there scans for its own best, as every pick used to. Any free piece
    /// better than the last held one is held (in rarity, up to the changes of
    /// availability since the scan); a piece turning free again joins them at its
    /// place.
    #[allow(clippy::too_many_arguments)]
    fn pick_new<H: HaveSet + ?Sized>(
        &mut self,
        has: &H,
        peer: PeerKey,
        prio: u8,
        reserve: bool,
        n: &mut usize,
        max: usize,
        out: &mut [BlockRef],
        rng: &mut impl FnMut() -> u32,
    ) {
        let order = if self.cfg.sequential {
            Order::Sequential
        } else if self.num_have < self.cfg.initial_random {
            Order::Random
        } else {
            Order::Rarest
        };
        if self.free_by_prio[usize::from(prio)] == 0 {
            return;
        }
        if self.ahead_order != order || self.ahead_prio != prio {
            self.ahead_len = 0;
        }
        let room = |p: &Self, n: usize| n < max && p.partials_used < p.partials.len();
        // Each turn either starts every held piece (a fresh list holds only free pieces
        // of this priority), ends, or leaves for the peer's own scan.
        loop {
            if !room(self, *n) {
                return;
            }
            if self.ahead_len == 0 {
                let (top, len, _) = self.scan(None::<&H>, prio, order, TOP_K, rng);
                if len == 0 {
                    return;
                }
                for (slot, &(_, piece)) in self.ahead.iter_mut().zip(&top[..len]) {
                    *slot = piece;
                }
                self.ahead_len = len;
                self.ahead_prio = prio;
                self.ahead_order = order;
            }
            self.take_ahead(has, peer, prio, reserve, n, max, out);
            if !room(self, *n) {
                return;
            }
            if self.ahead_len > 0 {
                // What is left held, this peer lacks.
                break;
            }
        }
        loop {
            let free_slots = self.partials.len() - self.partials_used;
            if *n >= max || free_slots == 0 {
                return;
            }
            let want = (max - *n)
                .div_ceil(self.bpp.max(1))
                .min(TOP_K)
                .min(free_slots);
            let (top, len, more) = self.scan(Some(has), prio, order, want, rng);
            if len == 0 {
                return;
            }
            for &(_, piece) in &top[..len] {
                if *n >= max {
                    return;
                }
                let Ok(s) = self.alloc_slot(piece as usize) else {
                    return;
                };
                self.partials[s].reserved = reserve;
                self.take_free_blocks(s, peer, n, max, out);
            }
            if !more {
                return;
            }
        }
    }

    /// The best `want` (at most [`TOP_K`]) free pieces of priority `prio` in `order`,
    /// of those `has` holds when given, sorted by key (lower is better); and whether
    /// more were left out.
    fn scan<H: HaveSet + ?Sized>(
        &self,
        has: Option<&H>,
        prio: u8,
        order: Order,
        want: usize,
        rng: &mut impl FnMut() -> u32,
    ) -> ([(u64, u32); TOP_K], usize, bool) {
        let want = want.clamp(1, TOP_K);
        let np = self.geo.num_pieces() as usize;
        let mut top = [(u64::MAX, 0u32); TOP_K];
        let mut len = 0;
        let mut more = false;
        for (i, s) in self.pieces[..np].iter().enumerate() {
            if !s.is_free()
                || s.prio != prio
                || has.is_some_and(|h| !h.has_piece(PieceIndex(i as u32)))
            {
                continue;
            }
            let key = match order {
                Order::Sequential => {
                    if len == want {
                        more = true;
                        break;
                    }
                    i as u64
                }
                Order::Random => u64::from(rng()),
                Order::Rarest => {
                    let hi = u64::from(s.avail) << 32;
                    if len == want && hi > top[len - 1].0 & !0xffff_ffff {
                        more = true;
                        continue;
                    }
                    hi | u64::from(rng())
                }
            };
            if len == want {
                more = true;
                if key >= top[len - 1].0 {
                    continue;
                }
                len -= 1;
            }
            let pos = top[..len].iter().position(|e| e.0 > key).unwrap_or(len);
            top.copy_within(pos..len, pos + 1);
            top[pos] = (key, i as u32);
            len += 1;
        }
        (top, len, more)
    }

    /// New pieces from the candidates held ahead ([`Self::pick_new`]), best first:
    /// those `peer` has, while requests and partial slots last. Candidates no longer
    /// free (or no longer of this priority) are dropped; those `peer` lacks stay.
    #[allow(clippy::too_many_arguments)]
    fn take_ahead<H: HaveSet + ?Sized>(
        &mut self,
        has: &H,
        peer: PeerKey,
        prio: u8,
        reserve: bool,
        n: &mut usize,
        max: usize,
        out: &mut [BlockRef],
    ) {
        let mut kept = 0;
        for i in 0..self.ahead_len {
            let piece = self.ahead[i];
            let st = self.pieces[piece as usize];
            if !st.is_free() || st.prio != prio {
                continue;
            }
            let room = *n < max && self.partials_used < self.partials.len();
            if room && has.has_piece(PieceIndex(piece)) {
                if let Ok(s) = self.alloc_slot(piece as usize) {
                    self.partials[s].reserved = reserve;
                    self.take_free_blocks(s, peer, n, max, out);
                    continue;
                }
            }
            self.ahead[kept] = piece;
            kept += 1;
        }
        self.ahead_len = kept;
    }

    fn pick_endgame<H: HaveSet + ?Sized>(
        &mut self,
        has: &H,
        peer: PeerKey,
        n: &mut usize,
        max: usize,
        out: &mut [BlockRef],
    ) {
        let dup = usize::from(self.cfg.max_duplicates).clamp(1, MAX_REQUESTERS);
        for round in 1..dup {
            for s in 0..self.partials.len() {
                let piece = self.partials[s].piece;
                if piece == UNUSED
                    || self.pieces[piece as usize].prio == 0
                    || !has.has_piece(PieceIndex(piece))
                {
                    continue;
                }
                for bi in 0..self.nblocks(piece as usize) {
                    if *n >= max {
                        return;
                    }
                    let b = &self.blocks[s * self.bpp + bi];
                    if b.status == BlockStatus::Requested
                        && usize::from(b.n) == round
                        && !b.has_peer(peer)
                    {
                        self.request(s, bi, peer);
                        self.emit(piece, bi, n, out);
                    }
                }
            }
        }
    }

    // ---- internals ----

    fn check_piece(&self, piece: PieceIndex) -> Result<usize, PickerError> {
        if piece.0 < self.geo.num_pieces() {
            Ok(piece.get())
        } else {
            Err(PickerError::PieceOutOfRange)
        }
    }

    fn check_block(&self, b: &BlockRef) -> Result<(usize, usize), PickerError> {
        let pi = self.check_piece(b.piece)?;
        if b.offset % BLOCK_LEN != 0 || self.geo.block(b.piece, b.offset / BLOCK_LEN) != Some(*b) {
            return Err(PickerError::InvalidBlock);
        }
        Ok((pi, (b.offset / BLOCK_LEN) as usize))
    }

    fn nblocks(&self, pi: usize) -> usize {
        self.geo.blocks_in_piece(PieceIndex(pi as u32)) as usize
    }

    fn used_slots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.partials.len()).filter(|&s| self.partials[s].piece != UNUSED)
    }

    fn update_piece(&mut self, i: usize, f: impl FnOnce(&mut PieceState)) {
        let before = self.pieces[i];
        f(&mut self.pieces[i]);
        let after = self.pieces[i];
        if before.is_free() {
            self.free_by_prio[usize::from(before.prio)] -= 1;
        }
        if after.is_free() {
            self.free_by_prio[usize::from(after.prio)] += 1;
            // A piece back among the candidates may beat those held ahead.
            if !before.is_free() || before.prio != after.prio {
                self.hold_again(i);
            }
        }
    }

    /// Piece `i` turned free (again: a failed hash, a request aborted), or a free piece
    /// changed priority: it joins the candidates held ahead at its place (in rarest
    /// order, first among those as rare) when it is no worse than the last of them.
    /// O(`TOP_K`): a pick aborted on every turn (a choked peer's allowed-fast pieces)
    /// costs no scan of every piece. One after the last held, or of another priority,
    /// waits for a later scan; in random order none is better.
    fn hold_again(&mut self, i: usize) {
        let len = self.ahead_len;
        let st = self.pieces[i];
        if len == 0 || st.prio != self.ahead_prio || self.ahead_order == Order::Random {
            return;
        }
        let piece = i as u32;
        let held = &self.ahead[..len];
        if held.contains(&piece) {
            return;
        }
        let pos = match self.ahead_order {
            Order::Sequential => held.iter().position(|&p| p > piece),
            _ => held
                .iter()
                .position(|&p| self.pieces[p as usize].avail >= st.avail),
        };
        let Some(pos) = pos else {
            return;
        };
        // Full: the last held drops out (a later scan finds it again).
        let end = len.min(TOP_K - 1);
        self.ahead.copy_within(pos..end, pos + 1);
        self.ahead[pos] = piece;
        self.ahead_len = end + 1;
    }

    fn find_slot(&self, pi: usize) -> Option<usize> {
        if self.pieces[pi].flags & PARTIAL == 0 {
            return None;
        }
        self.partials.iter().position(|p| p.piece as usize == pi)
    }

    fn alloc_slot(&mut self, pi: usize) -> Result<usize, PickerError> {
        let s = self
            .partials
            .iter()
            .position(|p| p.piece == UNUSED)
            .ok_or(PickerError::PartialTableFull)?;
        let nb = self.nblocks(pi);
        self.blocks[s * self.bpp..s * self.bpp + nb].fill(BlockSlot::EMPTY);
        self.partials[s] = PartialPiece {
            piece: pi as u32,
            none: nb as u32,
            requested: 0,
            reserved: false,
        };
        self.partials_used += 1;
        self.update_piece(pi, |p| p.flags |= PARTIAL);
        Ok(s)
    }

    fn release_slot(&mut self, s: usize) {
        self.release_slot_as(s, 0);
    }

    /// Frees slot `s`; its piece is no longer partial and gets `flags`.
    fn release_slot_as(&mut self, s: usize, flags: u8) {
        let pi = self.partials[s].piece as usize;
        self.partials[s] = PartialPiece::EMPTY;
        self.partials_used -= 1;
        self.update_piece(pi, |p| p.flags = (p.flags & !PARTIAL) | flags);
    }

    /// Adds `peer` as a requester; the caller checked it is not one and there is room.
    fn request(&mut self, s: usize, bi: usize, peer: PeerKey) {
        let b = &mut self.blocks[s * self.bpp + bi];
        if b.status == BlockStatus::None {
            self.partials[s].none -= 1;
            self.partials[s].requested += 1;
            b.status = BlockStatus::Requested;
            b.n = 0;
        }
        if let Some(k) = b.peers.get_mut(usize::from(b.n)) {
            *k = peer;
            b.n += 1;
        }
    }

    fn unrequest(&mut self, s: usize, bi: usize, peer: PeerKey) -> bool {
        let b = &mut self.blocks[s * self.bpp + bi];
        if b.status != BlockStatus::Requested {
            return false;
        }
        let Some(pos) = b.peers().iter().position(|&p| p == peer) else {
            return false;
        };
        let n = usize::from(b.n);
        b.peers.copy_within(pos + 1..n, pos);
        b.n -= 1;
        if b.n == 0 {
            b.status = BlockStatus::None;
            let pp = &mut self.partials[s];
            pp.requested -= 1;
            pp.none += 1;
            let (none, piece) = (pp.none as usize, pp.piece as usize);
            if none == self.nblocks(piece) {
                self.release_slot(s);
            }
        }
        true
    }

    fn take_free_blocks(
        &mut self,
        s: usize,
        peer: PeerKey,
        n: &mut usize,
        max: usize,
        out: &mut [BlockRef],
    ) {
        let piece = self.partials[s].piece;
        for bi in 0..self.nblocks(piece as usize) {
            if *n >= max || self.partials[s].none == 0 {
                return;
            }
            if self.blocks[s * self.bpp + bi].status == BlockStatus::None {
                self.request(s, bi, peer);
                self.emit(piece, bi, n, out);
            }
        }
    }

    fn emit(&self, piece: u32, bi: usize, n: &mut usize, out: &mut [BlockRef]) {
        if let (Some(b), Some(o)) = (
            self.geo.block(PieceIndex(piece), bi as u32),
            out.get_mut(*n),
        ) {
            *o = b;
            *n += 1;
        }
    }
}

#[cfg(test)]
impl Picker<'_> {
    /// How many pieces may be in progress at once (the partial slots it holds).
    pub(crate) fn partial_capacity(&self) -> usize {
        self.partials.len()
    }
}

#[cfg(feature = "alloc")]
impl Picker<'static> {
    /// A picker with its storage allocated in `Vec`s: `num_pieces` piece entries and
    /// `config.max_partials` partial slots.
    pub(crate) fn new_alloc(geometry: Geometry, config: PickerConfig) -> Result<Self, PickerError> {
        let np = geometry.num_pieces() as usize;
        let nb = PickerStorage::blocks_needed(&geometry, config.max_partials)
            .ok_or(PickerError::StorageTooSmall)?;
        Self::build(
            geometry,
            config,
            Store::Owned(alloc::vec![PieceState::EMPTY; np]),
            Store::Owned(alloc::vec![PartialPiece::EMPTY; config.max_partials]),
            Store::Owned(alloc::vec![BlockSlot::EMPTY; nb]),
        )
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    const OTHER: PeerKey = PeerKey(99);
    const ME: PeerKey = PeerKey(1);

    fn rng(seed: u32) -> impl FnMut() -> u32 {
        let mut x = seed.wrapping_mul(2_654_435_761) | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        }
    }

    fn bits(s: &str) -> Vec<u8> {
        let mut v = vec![0u8; s.len().div_ceil(8)];
        for (i, c) in s.bytes().enumerate() {
            if c != b' ' {
                v[i / 8] |= 0x80 >> (i % 8);
            }
        }
        v
    }

    fn all(n: usize) -> Vec<u8> {
        bits(&"*".repeat(n))
    }

    /// Builds a picker from string tables, one character per piece:
    /// `avail` digits = availability; `have` `*` = we have it; `partial`: `r` block 0
    /// requested by OTHER, `w` block 0 writing (from OTHER), `+` block 0 finished;
    /// `prio` digits (empty = default). Pieces are `bpp` blocks long.
    fn build(
        avail: &str,
        have: &str,
        partial: &str,
        prio: &str,
        bpp: u32,
        cfg: PickerConfig,
    ) -> Picker<'static> {
        let n = avail.len() as u64;
        let geo = Geometry::new(n * u64::from(bpp * BLOCK_LEN), bpp * BLOCK_LEN).expect("geometry");
        let mut p = Picker::new_alloc(geo, cfg).expect("picker");
        for (i, c) in avail.bytes().enumerate() {
            for _ in 0..(c - b'0') {
                p.peer_has(PieceIndex(i as u32)).expect("has");
            }
        }
        for (i, c) in have.bytes().enumerate() {
            if c == b'*' {
                p.we_have(PieceIndex(i as u32)).expect("have");
            }
        }
        for (i, c) in prio.bytes().enumerate() {
            p.set_piece_priority(PieceIndex(i as u32), c - b'0')
                .expect("prio");
        }
        for (i, c) in partial.bytes().enumerate() {
            let b = geo.block(PieceIndex(i as u32), 0).expect("block");
            match c {
                b'r' => p.mark_requested(&b, OTHER).expect("req"),
                b'w' | b'+' => {
                    p.mark_requested(&b, OTHER).expect("req");
                    let _ = p.mark_received(&b, OTHER).expect("recv");
                    if c == b'+' {
                        p.mark_written(&b).expect("written");
                    }
                }
                _ => {}
            }
        }
        p
    }

    fn cfg() -> PickerConfig {
        PickerConfig::default().with_initial_random(0)
    }

    fn pick(
        p: &mut Picker<'_>,
        has: &[u8],
        peer: PeerKey,
        hint: PickHint,
        max: usize,
        seed: u32,
    ) -> Vec<BlockRef> {
        let mut out = vec![
            BlockRef {
                piece: PieceIndex(0),
                offset: 0,
                len: 0
            };
            max
        ];
        let n = p.pick(has, peer, hint, max, &mut out, &mut rng(seed));
        out.truncate(n);
        out
    }

    fn pieces(blocks: &[BlockRef]) -> Vec<u32> {
        let mut v: Vec<u32> = Vec::new();
        for b in blocks {
            if v.last() != Some(&b.piece.0) {
                v.push(b.piece.0);
            }
        }
        v
    }

    #[test]
    fn rarest_first() {
        let mut p = build("1223333", "", "", "", 1, cfg());
        let got = pieces(&pick(&mut p, &all(7), ME, PickHint::Normal, 7, 1));
        assert_eq!(got.len(), 7);
        assert_eq!(got[0], 0);
        let mut mid = got[1..3].to_vec();
        mid.sort_unstable();
        assert_eq!(mid, [1, 2]);
        let mut rest = got[3..].to_vec();
        rest.sort_unstable();
        assert_eq!(rest, [3, 4, 5, 6]);
    }

    #[test]
    fn rarest_first_skips_have_and_missing() {
        let mut p = build("1223333", "*      ", "", "", 1, cfg());
        let got = pieces(&pick(&mut p, &bits("** ****"), ME, PickHint::Normal, 1, 1));
        assert_eq!(got, [1]);
    }

    #[test]
    fn random_tie_break_stays_rarest() {
        let mut firsts = std::collections::BTreeSet::new();
        for seed in 1..40 {
            let mut p = build("3111113", "", "", "", 1, cfg());
            let got = pieces(&pick(&mut p, &all(7), ME, PickHint::Normal, 5, seed));
            let mut s = got.clone();
            s.sort_unstable();
            assert_eq!(s, [1, 2, 3, 4, 5], "seed {seed}: {got:?}");
            firsts.insert(got[0]);
        }
        assert!(firsts.len() >= 3, "{firsts:?}");
    }

    #[test]
    fn initial_pieces_are_random() {
        let mut firsts = std::collections::BTreeSet::new();
        for seed in 1..40 {
            let mut p = build("1999999", "", "", "", 1, PickerConfig::default());
            firsts.insert(pieces(&pick(&mut p, &all(7), ME, PickHint::Normal, 1, seed))[0]);
        }
        assert!(firsts.iter().any(|&f| f != 0), "{firsts:?}");
        // After 4 pieces, rarest first again.
        let mut p = build(
            "1999999999",
            "  ****    ",
            "",
            "",
            1,
            PickerConfig::default(),
        );
        assert_eq!(
            pieces(&pick(&mut p, &all(10), ME, PickHint::Normal, 1, 7)),
            [0]
        );
    }

    #[test]
    fn partial_pieces_first() {
        let mut p = build("1111111", "", "   +   ", "", 4, cfg());
        let got = pick(&mut p, &all(7), ME, PickHint::Normal, 3, 1);
        assert_eq!(pieces(&got), [3]);
        assert_eq!(
            got.iter().map(|b| b.offset / BLOCK_LEN).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        // Next pick starts a new piece.
        let got = pick(&mut p, &all(7), ME, PickHint::Normal, 1, 1);
        assert_ne!(got[0].piece.0, 3);
    }

    #[test]
    fn partial_not_had_by_peer_is_skipped() {
        let mut p = build("1111111", "", "   +   ", "", 4, cfg());
        let got = pick(&mut p, &bits("*** ***"), ME, PickHint::Normal, 2, 1);
        assert!(!pieces(&got).contains(&3));
    }

    #[test]
    fn prefers_pieces_this_peer_works_on() {
        let mut p = build("1111111", "", "  r  r ", "", 4, cfg());
        let b = p.geometry().block(PieceIndex(5), 1).expect("block");
        p.mark_requested(&b, ME).expect("req");
        let got = pick(&mut p, &all(7), ME, PickHint::Normal, 3, 1);
        assert_eq!(pieces(&got), [5, 2]);
        assert_eq!(got[0].offset, 2 * BLOCK_LEN);
    }

    #[test]
    fn priorities_and_skip() {
        let mut p = build("1111111", "", "", "1703111", 1, cfg());
        let got = pieces(&pick(&mut p, &all(7), ME, PickHint::Normal, 7, 3));
        assert_eq!(got.len(), 6, "{got:?}");
        assert_eq!(got[..2], [1, 3]);
        assert!(!got.contains(&2));
        // Higher priority new piece beats a lower priority partial.
        let mut p = build("1111", "", "+   ", "1171", 2, cfg());
        let got = pieces(&pick(&mut p, &all(4), ME, PickHint::Normal, 6, 3));
        assert_eq!(got[..2], [2, 0]);
        let mut rest = got[2..].to_vec();
        rest.sort_unstable();
        assert_eq!(rest, [1, 3]);
        // Priority 0 everywhere: nothing, and we are finished.
        let mut p = build("11", "", "", "00", 1, cfg());
        assert!(pick(&mut p, &all(2), ME, PickHint::Normal, 2, 3).is_empty());
        assert!(p.is_finished());
        assert!(!p.is_seed());
    }

    #[test]
    fn sequential() {
        let mut p = build("3213121", " *     ", "", "", 1, cfg().with_sequential(true));
        let got = pieces(&pick(&mut p, &all(7), ME, PickHint::Normal, 7, 1));
        assert_eq!(got, [0, 2, 3, 4, 5, 6]);
        let mut p = build("3213121", "", "", "", 1, cfg());
        p.set_sequential(true);
        assert_eq!(
            pieces(&pick(&mut p, &bits("  *** *"), ME, PickHint::Normal, 2, 1)),
            [2, 3]
        );
    }

    #[test]
    fn endgame_duplicates_and_cancels() {
        let mut p = build("222", "*  ", "", "", 1, cfg());
        let a = PeerKey(10);
        let b = PeerKey(11);
        let c = PeerKey(12);
        assert!(!p.in_endgame());
        let got = pick(&mut p, &all(3), a, PickHint::Normal, 8, 1);
        assert_eq!(got.len(), 2);
        assert!(p.in_endgame());
        // A again: nothing new (it already requested both).
        assert!(pick(&mut p, &all(3), a, PickHint::Normal, 8, 1).is_empty());
        let dup = pick(&mut p, &all(3), b, PickHint::Normal, 8, 1);
        assert_eq!(dup, got);
        // max_duplicates = 2: a third peer gets nothing.
        assert!(pick(&mut p, &all(3), c, PickHint::Normal, 8, 1).is_empty());
        let r = p.mark_received(&dup[0], b).expect("recv");
        assert_eq!(r.cancel.as_slice(), [a]);
        assert!(!r.duplicate);
        assert!(r.piece_complete);
        let late = p.mark_received(&dup[0], a).expect("recv");
        assert!(late.duplicate);
        assert_eq!(p.block_peers(&dup[0]).expect("peers").as_slice(), [b]);
    }

    #[test]
    fn piece_failed_returns_contributors() {
        let mut p = build("1", "", "", "", 3, cfg());
        let (a, b) = (PeerKey(5), PeerKey(6));
        let blocks = pick(&mut p, &all(1), a, PickHint::Normal, 3, 1);
        assert_eq!(blocks.len(), 3);
        p.abort_request(&blocks[1], a).expect("abort");
        p.mark_requested(&blocks[1], b).expect("req");
        for (blk, peer) in blocks.iter().zip([a, b, a]) {
            let _ = p.mark_received(blk, peer).expect("recv");
            p.mark_written(blk).expect("written");
        }
        let bad = p.piece_failed(PieceIndex(0)).expect("failed");
        assert_eq!(bad.as_slice(), [a, b]);
        assert!(!bad.truncated());
        for blk in &blocks {
            assert_eq!(p.block_status(blk), Ok(BlockStatus::None));
        }
        assert_eq!(p.partial_usage().0, 0);
        assert_eq!(pick(&mut p, &all(1), b, PickHint::Normal, 3, 1), blocks);
        assert_eq!(p.piece_verified(PieceIndex(0)), Ok(()));
        assert_eq!(p.piece_failed(PieceIndex(0)), Err(PickerError::AlreadyHave));
    }

    #[test]
    fn senders_per_block_and_dropping_a_peers_blocks() {
        let mut p = build("11", "", "", "", 4, cfg());
        let (a, b) = (PeerKey(5), PeerKey(6));
        let blocks = pick(&mut p, &all(2), a, PickHint::Normal, 4, 1);
        assert_eq!(pieces(&blocks), [blocks[0].piece.0]);
        let piece = blocks[0].piece;
        // Block 1 comes from b, block 3 is still being written, block 2 is missing.
        p.abort_request(&blocks[1], a).expect("abort");
        p.mark_requested(&blocks[1], b).expect("req");
        for (blk, peer) in [(blocks[0], a), (blocks[1], b), (blocks[3], a)] {
            let _ = p.mark_received(&blk, peer).expect("recv");
        }
        p.mark_written(&blocks[0]).expect("written");
        p.mark_written(&blocks[1]).expect("written");
        let mut out = [Some(PeerKey(77)); 6];
        assert_eq!(p.block_senders(piece, &mut out), Ok(4));
        assert_eq!(out[..4], [Some(a), Some(b), None, Some(a)]);
        assert_eq!(
            p.block_senders(piece, &mut out[..3]),
            Err(PickerError::StorageTooSmall)
        );
        assert_eq!(p.piece_senders(piece).expect("senders").as_slice(), [a, b]);
        assert!(p.holds_blocks_from(a) && p.holds_blocks_from(b));
        assert!(!p.holds_blocks_from(OTHER));
        let mut all = Vec::new();
        p.for_each_sender(|k| all.push(k));
        assert_eq!(all, [a, b, a]);
        // Dropping b's blocks: its written block goes back to None.
        assert_eq!(p.drop_blocks_from(b), 1);
        assert_eq!(p.block_status(&blocks[1]), Ok(BlockStatus::None));
        assert!(!p.holds_blocks_from(b));
        // a's written block goes, its block being written stays.
        assert_eq!(p.drop_blocks_from(a), 1);
        assert_eq!(p.block_status(&blocks[3]), Ok(BlockStatus::Writing));
        assert_eq!(p.block_senders(piece, &mut out), Ok(4));
        assert_eq!(out[..4], [None, None, None, Some(a)]);
        // A piece left with nothing received and no request frees its slot.
        p.abort_peer(a);
        p.mark_written(&blocks[3]).expect("written");
        assert_eq!(p.drop_blocks_from(a), 1);
        assert_eq!(p.partial_usage().0, 0);
        let other = PieceIndex(1 - piece.0);
        assert_eq!(p.block_senders(other, &mut out), Ok(4));
        assert_eq!(out[..4], [None; 4]);
    }

    #[test]
    fn a_piece_being_checked_keeps_its_senders_when_one_is_banned() {
        let mut p = build("1", "", "", "", 4, cfg());
        let (bad, good) = (PeerKey(5), PeerKey(6));
        let blocks = pick(&mut p, &all(1), good, PickHint::Normal, 4, 1);
        let piece = blocks[0].piece;
        p.abort_request(&blocks[0], good).expect("abort");
        p.mark_requested(&blocks[0], bad).expect("req");
        let mut last = false;
        for (i, blk) in blocks.iter().enumerate() {
            let from = if i == 0 { bad } else { good };
            let _ = p.mark_received(blk, from).expect("recv");
            last = p.mark_written(blk).expect("written");
        }
        assert!(last, "every block written: the piece goes to its check");
        // `bad` is banned while the check runs: the piece keeps its blocks, so a
        // failure names both senders (not `good` alone, after fetching block 0 again
        // from it).
        assert_eq!(p.drop_blocks_from(bad), 0);
        let mut out = [None; 4];
        assert_eq!(p.block_senders(piece, &mut out), Ok(4));
        assert_eq!(out, [Some(bad), Some(good), Some(good), Some(good)]);
        // The check fails: every block is fetched again.
        assert!(p.piece_failed(piece).is_ok());
        assert_eq!(p.block_status(&blocks[0]), Ok(BlockStatus::None));
    }

    #[test]
    fn parole_peer_gets_pieces_of_its_own() {
        let (parole, honest) = (PeerKey(5), PeerKey(6));
        let mut p = build("1111", "", "", "", 4, cfg());
        // The honest peer starts piece x with 2 of its 4 blocks.
        let h = pick(&mut p, &all(4), honest, PickHint::Normal, 2, 1);
        let x = h[0].piece;
        // The peer on parole does not join x: it starts a piece of its own.
        let got = pick(&mut p, &all(4), parole, PickHint::Parole, 2, 1);
        assert_eq!(got.len(), 2);
        let y = got[0].piece;
        assert_ne!(y, x);
        assert!(got.iter().all(|b| b.piece == y));
        // Its piece is reserved: the honest peer finishes x, then starts a third piece
        // rather than join y.
        let h2 = pick(&mut p, &all(4), honest, PickHint::Normal, 4, 1);
        assert_eq!(h2[..2].iter().map(|b| b.piece).collect::<Vec<_>>(), [x, x]);
        assert!(h2[2..].iter().all(|b| b.piece != y && b.piece != x));
        // The peer on parole goes on with its own piece first.
        let got2 = pick(&mut p, &all(4), parole, PickHint::Parole, 2, 1);
        assert!(got2.iter().all(|b| b.piece == y), "{got2:?}");
        // Once it has no request in y any more, y is open to everyone.
        let _ = p.mark_received(&got[0], parole).expect("recv");
        p.abort_peer(parole);
        let h3 = pick(&mut p, &all(4), honest, PickHint::Normal, 16, 1);
        assert!(h3.iter().any(|b| b.piece == y), "{h3:?}");
        // A peer on parole never duplicates in endgame, nor joins pieces others have
        // requests in.
        assert!(p.in_endgame());
        assert!(pick(&mut p, &all(4), parole, PickHint::Parole, 16, 1).is_empty());
        assert!(!pick(&mut p, &all(4), OTHER, PickHint::Normal, 16, 1).is_empty());
    }

    #[test]
    fn parole_peer_finishes_a_piece_others_left() {
        let (parole, gone) = (PeerKey(5), PeerKey(6));
        let mut p = build("1", "", "", "", 4, cfg());
        let g = pick(&mut p, &all(1), gone, PickHint::Normal, 2, 1);
        let _ = p.mark_received(&g[0], gone).expect("recv");
        p.mark_written(&g[0]).expect("written");
        p.abort_peer(gone);
        // Nothing else to pick: the peer on parole takes what the other left.
        let got = pick(&mut p, &all(1), parole, PickHint::Parole, 4, 1);
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn abort_returns_blocks_and_frees_slot() {
        let mut p = build("11", "", "", "", 2, cfg());
        let got = pick(&mut p, &all(2), ME, PickHint::Normal, 2, 1);
        assert_eq!(p.partial_usage().0, 1);
        assert_eq!(p.abort_request(&got[0], OTHER), Ok(false));
        assert_eq!(p.abort_request(&got[0], ME), Ok(true));
        assert_eq!(p.abort_request(&got[0], ME), Ok(false));
        assert_eq!(p.abort_peer(ME), 1);
        assert_eq!(p.partial_usage().0, 0);
        assert_eq!(pick(&mut p, &all(2), OTHER, PickHint::Normal, 2, 1), got);
    }

    #[test]
    fn slow_peer_does_not_start_pieces() {
        let slow = PeerKey(7);
        let mut p = build("1111", "", "", "", 4, cfg());
        assert!(pick(&mut p, &all(4), slow, PickHint::Slow, 4, 1).is_empty());
        let mut p = build("1111", "", " r  ", "", 4, cfg());
        let got = pick(&mut p, &all(4), slow, PickHint::Slow, 8, 1);
        assert_eq!(pieces(&got), [1]);
        assert_eq!(got.len(), 3);
        // Endgame: the slow peer holds the last blocks; a fast peer duplicates them,
        // the slow peer gets no duplicates.
        let mut p = build("1", "", "", "", 2, cfg());
        let fast = PeerKey(8);
        let mut out = [BlockRef {
            piece: PieceIndex(0),
            offset: 0,
            len: 0,
        }; 2];
        let b0 = p.geometry().block(PieceIndex(0), 0).expect("block");
        let b1 = p.geometry().block(PieceIndex(0), 1).expect("block");
        p.mark_requested(&b0, fast).expect("req");
        p.mark_requested(&b1, slow).expect("req");
        assert!(p.in_endgame());
        assert_eq!(
            p.pick(&all(1)[..], slow, PickHint::Slow, 2, &mut out, &mut rng(1)),
            0
        );
        assert_eq!(pick(&mut p, &all(1), fast, PickHint::Normal, 2, 1), [b1]);
        let r = p.mark_received(&b1, fast).expect("recv");
        assert_eq!(r.cancel.as_slice(), [slow]);
    }

    #[test]
    fn last_piece_shorter() {
        let geo = Geometry::new(3 * 32_768 + 1_000, 32_768).expect("geometry");
        let mut p = Picker::new_alloc(geo, cfg()).expect("picker");
        p.peer_has_all();
        let mut out = [BlockRef {
            piece: PieceIndex(0),
            offset: 0,
            len: 0,
        }; 16];
        let n = p.pick(&AllPieces, ME, PickHint::Normal, 16, &mut out, &mut rng(3));
        assert_eq!(n, 7);
        let last: Vec<_> = out[..n].iter().filter(|b| b.piece.0 == 3).collect();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].len, 1_000);
        assert!(out[..n].iter().all(|b| geo.is_valid_block(b, BLOCK_LEN)));
        let bad = BlockRef {
            piece: PieceIndex(3),
            offset: 0,
            len: BLOCK_LEN,
        };
        assert_eq!(p.mark_received(&bad, ME), Err(PickerError::InvalidBlock));
        assert_eq!(p.availability(PieceIndex(3)), Ok(1));
    }

    #[test]
    fn out_of_range_rejected() {
        let mut p = build("11", "", "", "", 2, cfg());
        let past = PieceIndex(2);
        assert_eq!(p.peer_has(past), Err(PickerError::PieceOutOfRange));
        assert_eq!(p.peer_lost(past), Err(PickerError::PieceOutOfRange));
        assert_eq!(p.we_have(past), Err(PickerError::PieceOutOfRange));
        assert_eq!(p.piece_failed(past), Err(PickerError::PieceOutOfRange));
        assert_eq!(
            p.set_piece_priority(past, 1),
            Err(PickerError::PieceOutOfRange)
        );
        assert_eq!(
            p.set_piece_priority(PieceIndex(0), 8),
            Err(PickerError::InvalidPriority)
        );
        assert_eq!(
            p.peer_has_bitfield(&[0, 0]),
            Err(PickerError::BitfieldLength)
        );
        assert_eq!(p.peer_lost_bitfield(&[]), Err(PickerError::BitfieldLength));
        let blk = |piece, offset, len| BlockRef {
            piece: PieceIndex(piece),
            offset,
            len,
        };
        for b in [
            blk(2, 0, BLOCK_LEN),
            blk(0, 1, BLOCK_LEN),
            blk(0, 2 * BLOCK_LEN, BLOCK_LEN),
            blk(0, 0, 5),
            blk(0, u32::MAX, 2),
        ] {
            assert!(p.mark_requested(&b, ME).is_err());
            assert!(p.mark_received(&b, ME).is_err());
            assert!(p.abort_request(&b, ME).is_err());
            assert!(p.mark_written(&b).is_err());
            assert!(p.block_status(&b).is_err());
        }
        // Spare bits and out-of-range peer bitfields are ignored.
        p.peer_has_bitfield(&[0xff]).expect("bitfield");
        assert_eq!(p.availability(PieceIndex(1)), Ok(2));
        let n = pick(&mut p, &[0xff, 0xff, 0xff][..], ME, PickHint::Normal, 10, 1).len();
        assert_eq!(n, 4);
        let b = BlockRef {
            piece: PieceIndex(0),
            offset: 0,
            len: BLOCK_LEN,
        };
        assert_eq!(p.mark_written(&b), Err(PickerError::NotWriting));
    }

    #[test]
    fn caller_storage_and_errors() {
        let geo = Geometry::new(10 * 65_536, 65_536).expect("geometry");
        let mut piece_st = [PieceState::EMPTY; 10];
        let mut partials = [PartialPiece::EMPTY; 2];
        let mut blocks = [BlockSlot::EMPTY; 8];
        assert_eq!(PickerStorage::blocks_needed(&geo, 2), Some(8));
        let st = PickerStorage {
            pieces: &mut piece_st,
            partials: &mut partials,
            blocks: &mut blocks[..7],
        };
        assert_eq!(
            Picker::new(geo, cfg(), st).err(),
            Some(PickerError::StorageTooSmall)
        );
        let st = PickerStorage {
            pieces: &mut piece_st,
            partials: &mut partials,
            blocks: &mut blocks,
        };
        let mut p = Picker::new(geo, cfg(), st).expect("picker");
        p.peer_has_all();
        let mut out = [BlockRef {
            piece: PieceIndex(0),
            offset: 0,
            len: 0,
        }; 16];
        // Two partial slots: at most two pieces in flight.
        let n = p.pick(&AllPieces, ME, PickHint::Normal, 16, &mut out, &mut rng(1));
        assert_eq!(n, 8);
        assert_eq!(p.partial_usage(), (2, 2));
        let used = pieces(&out[..n]);
        let unused = (0..10).find(|i| !used.contains(i)).expect("unused piece");
        let free = geo.block(PieceIndex(unused), 0).expect("block");
        assert_eq!(
            p.mark_requested(&free, ME),
            Err(PickerError::PartialTableFull)
        );
        for k in 0..3 {
            p.mark_requested(&out[0], PeerKey(100 + k)).expect("req");
        }
        assert_eq!(
            p.mark_requested(&out[0], PeerKey(200)),
            Err(PickerError::TooManyRequesters)
        );
        let _ = std::format!("{p:?} {}", PickerError::PartialTableFull);
    }

    #[test]
    fn two_million_pieces() {
        let n = 1u32 << 21;
        let geo = Geometry::new(u64::from(n) * u64::from(BLOCK_LEN), BLOCK_LEN).expect("geometry");
        let mut p = Picker::new_alloc(geo, cfg()).expect("picker");
        p.peer_has_bitfield(&vec![0xff; n as usize / 8])
            .expect("bitfield");
        p.peer_has_all();
        let rare = PieceIndex(n - 3);
        p.peer_lost(rare).expect("lost");
        let mut out = [BlockRef {
            piece: PieceIndex(0),
            offset: 0,
            len: 0,
        }; 32];
        let k = p.pick(&AllPieces, ME, PickHint::Normal, 32, &mut out, &mut rng(9));
        assert_eq!(k, 32);
        assert_eq!(out[0].piece, rare);
        assert_eq!(p.availability(rare), Ok(1));
    }

    #[test]
    fn memory_is_bounded() {
        use core::mem::size_of;
        let piece = size_of::<PieceState>();
        let partial = size_of::<PartialPiece>();
        let block = size_of::<BlockSlot>();
        std::println!(
            "picker memory: {piece} B/piece, {partial} B + {block} B/block per partial piece \
             ({} B for a 4 MiB piece)",
            partial + 256 * block
        );
        assert!(piece <= 4);
        assert!(partial <= 16);
        assert!(block <= 20);
    }

    #[test]
    fn seed_completes_in_num_blocks_picks() {
        let geo = Geometry::new(13 * 32_768 + 5_000, 32_768).expect("geometry");
        let mut p =
            Picker::new_alloc(geo, PickerConfig::default().with_max_partials(3)).expect("picker");
        p.peer_has_bitfield(&all(14)).expect("bitfield");
        let num_blocks: u32 = (0..14).map(|i| geo.blocks_in_piece(PieceIndex(i))).sum();
        let mut picks = 0;
        let mut g = rng(5);
        let mut out = [BlockRef {
            piece: PieceIndex(0),
            offset: 0,
            len: 0,
        }; 1];
        while !p.is_seed() {
            assert!(picks < num_blocks, "too many picks");
            let n = p.pick(&all(14)[..], ME, PickHint::Normal, 1, &mut out, &mut g);
            picks += 1;
            assert_eq!(n, 1);
            let r = p.mark_received(&out[0], ME).expect("recv");
            assert!(r.cancel.is_empty());
            if p.mark_written(&out[0]).expect("written") {
                assert!(r.piece_complete);
                p.piece_verified(out[0].piece).expect("verify");
            }
        }
        assert_eq!(picks, num_blocks);
        assert!(p.is_finished());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Has(usize, u32),
        HasAll(usize),
        Pick(usize, usize, u8, u32),
        Receive(usize),
        Abort(usize),
        AbortPeer(usize),
        DropBlocks(usize),
        Fail(u32),
        Prio(u32, u8),
        Among(usize, usize, bool, Vec<u32>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3usize, 0..12u32).prop_map(|(a, b)| Op::Has(a, b)),
            (0..3usize).prop_map(Op::HasAll),
            (0..3usize, 1..6usize, 0..3u8, any::<u32>())
                .prop_map(|(a, b, c, d)| Op::Pick(a, b, c, d)),
            any::<usize>().prop_map(Op::Receive),
            any::<usize>().prop_map(Op::Abort),
            (0..3usize).prop_map(Op::AbortPeer),
            (0..3usize).prop_map(Op::DropBlocks),
            (0..12u32).prop_map(Op::Fail),
            (0..12u32, 0..8u8).prop_map(|(a, b)| Op::Prio(a, b)),
            (
                0..3usize,
                1..6usize,
                any::<bool>(),
                proptest::collection::vec(0..14u32, 0..6)
            )
                .prop_map(|(a, b, c, d)| Op::Among(a, b, c, d)),
        ]
    }

    impl Picker<'_> {
        fn check_invariants(&self) {
            let np = self.geo.num_pieces() as usize;
            let mut free = [0u32; 8];
            let mut have = 0;
            for (i, s) in self.pieces[..np].iter().enumerate() {
                if s.is_free() {
                    free[usize::from(s.prio)] += 1;
                }
                have += u32::from(s.flags & HAVE != 0);
                assert!(!(s.flags & HAVE != 0 && s.flags & PARTIAL != 0));
                assert_eq!(
                    s.flags & PARTIAL != 0,
                    self.partials.iter().any(|p| p.piece as usize == i)
                );
            }
            assert_eq!(free, self.free_by_prio);
            assert_eq!(have, self.num_have);
            assert_eq!(self.used_slots().count(), self.partials_used);
            for s in self.used_slots() {
                let pp = self.partials[s];
                let nb = self.nblocks(pp.piece as usize);
                let bl = &self.blocks[s * self.bpp..s * self.bpp + nb];
                let none = bl.iter().filter(|b| b.status == BlockStatus::None).count();
                let req = bl
                    .iter()
                    .filter(|b| b.status == BlockStatus::Requested)
                    .count();
                assert_eq!((none as u32, req as u32), (pp.none, pp.requested));
                assert!(none < nb, "an all-None piece keeps no slot");
                for b in bl {
                    match b.status {
                        BlockStatus::None => assert_eq!(b.n, 0),
                        BlockStatus::Requested => {
                            assert!(b.n >= 1 && usize::from(b.n) <= MAX_REQUESTERS);
                            let ps = b.peers();
                            assert!(ps.iter().enumerate().all(|(i, p)| !ps[..i].contains(p)));
                        }
                        BlockStatus::Writing | BlockStatus::Finished => assert_eq!(b.n, 1),
                    }
                }
            }
        }
    }

    proptest! {
        #[test]
        fn random_operations_keep_invariants(ops in proptest::collection::vec(op(), 1..120)) {
            let geo = Geometry::new(11 * 32_768 + 777, 32_768).expect("geometry");
            let mut p = Picker::new_alloc(geo, PickerConfig::default().with_max_partials(4)).expect("picker");
            let mut peers = [vec![0u8; 2], vec![0u8; 2], vec![0u8; 2]];
            let mut seeds = [false; 3];
            let mut outstanding: Vec<(BlockRef, PeerKey)> = Vec::new();
            for op in ops {
                match op {
                    Op::Has(pe, piece) => {
                        let r = p.peer_has(PieceIndex(piece));
                        if piece < 12 {
                            prop_assert!(r.is_ok());
                            peers[pe][piece as usize / 8] |= 0x80 >> (piece % 8);
                        } else {
                            prop_assert_eq!(r, Err(PickerError::PieceOutOfRange));
                        }
                    }
                    Op::HasAll(pe) => {
                        if !seeds[pe] {
                            seeds[pe] = true;
                            p.peer_has_all();
                        }
                    }
                    Op::Pick(pe, max, hint, seed) => {
                        let key = PeerKey(pe as u32);
                        let hint = [PickHint::Normal, PickHint::Slow, PickHint::Parole][usize::from(hint)];
                        let mut out = [BlockRef { piece: PieceIndex(0), offset: 0, len: 0 }; 8];
                        let n = if seeds[pe] {
                            p.pick(&AllPieces, key, hint, max, &mut out, &mut rng(seed))
                        } else {
                            p.pick(&peers[pe][..], key, hint, max, &mut out, &mut rng(seed))
                        };
                        prop_assert!(n <= max);
                        for b in &out[..n] {
                            prop_assert!(geo.is_valid_block(b, BLOCK_LEN));
                            prop_assert!(seeds[pe] || peers[pe][..].has_piece(b.piece));
                            prop_assert_eq!(p.have(b.piece), Ok(false));
                            prop_assert!(p.piece_priority(b.piece).expect("prio") > 0);
                            prop_assert_eq!(p.block_status(b), Ok(BlockStatus::Requested));
                            prop_assert!(!outstanding.contains(&(*b, key)), "picked twice for one peer");
                            outstanding.push((*b, key));
                        }
                    }
                    Op::Among(pe, max, reserve, list) => {
                        let key = PeerKey(pe as u32);
                        let list: Vec<PieceIndex> = list.into_iter().map(PieceIndex).collect();
                        let mut out = [BlockRef { piece: PieceIndex(0), offset: 0, len: 0 }; 8];
                        let n = if seeds[pe] {
                            p.pick_among(&list, &AllPieces, key, reserve, max, &mut out)
                        } else {
                            p.pick_among(&list, &peers[pe][..], key, reserve, max, &mut out)
                        };
                        prop_assert!(n <= max);
                        for b in &out[..n] {
                            prop_assert!(list.contains(&b.piece));
                            prop_assert!(geo.is_valid_block(b, BLOCK_LEN));
                            prop_assert!(seeds[pe] || peers[pe][..].has_piece(b.piece));
                            prop_assert_eq!(p.have(b.piece), Ok(false));
                            prop_assert!(p.piece_priority(b.piece).expect("prio") > 0);
                            prop_assert_eq!(p.block_status(b), Ok(BlockStatus::Requested));
                            prop_assert!(!outstanding.contains(&(*b, key)), "picked twice for one peer");
                            outstanding.push((*b, key));
                        }
                    }
                    Op::Receive(i) => {
                        if !outstanding.is_empty() {
                            let (b, key) = outstanding.swap_remove(i % outstanding.len());
                            let was = p.block_status(&b).expect("status");
                            let r = p.mark_received(&b, key).expect("recv");
                            prop_assert_eq!(r.duplicate, was != BlockStatus::Requested && was != BlockStatus::None);
                            for c in r.cancel.as_slice() {
                                let pos = outstanding.iter().position(|o| *o == (b, *c));
                                prop_assert!(pos.is_some());
                                if let Some(pos) = pos { outstanding.swap_remove(pos); }
                            }
                            if !r.duplicate && p.mark_written(&b).expect("written") {
                                p.piece_verified(b.piece).expect("verify");
                                outstanding.retain(|o| o.0.piece != b.piece);
                            }
                        }
                    }
                    Op::Abort(i) => {
                        if !outstanding.is_empty() {
                            let (b, key) = outstanding.swap_remove(i % outstanding.len());
                            let requested = p.block_peers(&b).expect("peers").contains(key)
                                && p.block_status(&b) == Ok(BlockStatus::Requested);
                            prop_assert_eq!(p.abort_request(&b, key), Ok(requested));
                        }
                    }
                    Op::AbortPeer(pe) => {
                        let key = PeerKey(pe as u32);
                        p.abort_peer(key);
                        outstanding.retain(|o| o.1 != key);
                    }
                    Op::DropBlocks(pe) => {
                        let key = PeerKey(pe as u32);
                        p.drop_blocks_from(key);
                        // Every received block is written at once here: none remains.
                        prop_assert!(!p.holds_blocks_from(key));
                    }
                    Op::Fail(piece) => {
                        let had = p.have(PieceIndex(piece));
                        let r = p.piece_failed(PieceIndex(piece));
                        match had {
                            Err(e) => prop_assert_eq!(r.err(), Some(e)),
                            Ok(true) => prop_assert_eq!(r.err(), Some(PickerError::AlreadyHave)),
                            Ok(false) => prop_assert!(r.is_ok()),
                        }
                        if piece < 12 {
                            let nb = geo.blocks_in_piece(PieceIndex(piece));
                            for k in 0..nb {
                                let b = geo.block(PieceIndex(piece), k).expect("block");
                                if had == Ok(false) {
                                    prop_assert_eq!(p.block_status(&b), Ok(BlockStatus::None));
                                }
                            }
                            if had == Ok(false) {
                                outstanding.retain(|o| o.0.piece.0 != piece);
                            }
                        }
                    }
                    Op::Prio(piece, prio) => {
                        let r = p.set_piece_priority(PieceIndex(piece), prio);
                        prop_assert_eq!(r.is_ok(), piece < 12 && prio <= 7);
                    }
                }
                p.check_invariants();
            }
        }
    }

    /// Counts the picker's questions about what a peer has.
    struct Counting(core::cell::Cell<u64>);
    impl HaveSet for Counting {
        fn has_piece(&self, _: PieceIndex) -> bool {
            self.0.set(self.0.get() + 1);
            true
        }
    }

    /// A download of many one-block pieces, picked one block at a time, each verified
    /// before the next pick: the scan of every piece is paid once per many picks, not
    /// per pick (a 1 GiB torrent of 16 KiB pieces took 16 CPU s in such scans).
    #[test]
    fn picking_many_small_pieces_one_at_a_time_is_not_a_scan_per_pick() {
        let np = 4096u32;
        let geo = Geometry::new(u64::from(np * BLOCK_LEN), BLOCK_LEN).expect("geometry");
        let mut p = Picker::new_alloc(geo, cfg()).expect("picker");
        p.peer_has_all();
        let has = Counting(core::cell::Cell::new(0));
        let mut out = [geo.block(PieceIndex(0), 0).expect("block")];
        let mut r = rng(3);
        let mut seen = vec![false; np as usize];
        for _ in 0..np {
            assert_eq!(p.pick(&has, ME, PickHint::Normal, 1, &mut out, &mut r), 1);
            let b = out[0];
            assert!(
                !seen[b.piece.0 as usize],
                "piece {} picked twice",
                b.piece.0
            );
            seen[b.piece.0 as usize] = true;
            let _ = p.mark_received(&b, ME).expect("received");
            p.mark_written(&b).expect("written");
            p.piece_verified(b.piece).expect("verified");
        }
        assert_eq!(p.num_have(), np);
        // A scan per pick asks about np * np / 2 pieces (8.4 million here).
        let asked = has.0.get();
        assert!(
            asked < 64 * u64::from(np),
            "{asked} questions for {np} pieces"
        );
    }

    /// A piece that turns free again (its hash failed) is among the candidates of the
    /// very next pick: in sequential order it comes before pieces held ahead.
    #[test]
    fn a_failed_piece_is_picked_again_before_the_candidates_held_ahead() {
        let mut p = build("11111111", "", "", "", 1, cfg().with_sequential(true));
        let mut got = Vec::new();
        for _ in 0..3 {
            let b = pick(&mut p, &all(8), ME, PickHint::Normal, 1, 1);
            got.extend(pieces(&b));
            let _ = p.mark_received(&b[0], ME).expect("received");
            p.mark_written(&b[0]).expect("written");
        }
        assert_eq!(got, [0, 1, 2]);
        p.piece_failed(PieceIndex(0)).expect("failed");
        let next = pieces(&pick(&mut p, &all(8), ME, PickHint::Normal, 1, 1));
        assert_eq!(next, [0], "the failed piece waits behind those held ahead");
    }

    /// A pick aborted on every turn (a choked peer's allowed-fast piece asked and given
    /// back) keeps the candidates held ahead: the piece given back goes back among them
    /// at its place, and the next pick takes it again without a scan of every piece.
    #[test]
    fn a_piece_given_back_rejoins_the_candidates_held_ahead() {
        for sequential in [true, false] {
            let c = cfg().with_sequential(sequential).with_initial_random(0);
            let mut p = build(&"1".repeat(200), "", "", "", 1, c);
            let first = pick(&mut p, &all(200), ME, PickHint::Normal, 1, 1);
            let held = p.ahead_len;
            assert!(held > 0, "a scan holds candidates");
            for _ in 0..5 {
                assert!(p.abort_request(&first[0], ME).expect("aborted"));
                assert_eq!(p.ahead_len, held + 1, "the piece given back is held again");
                assert_eq!(p.ahead[0], first[0].piece.0, "at its place, first");
                let again = pick(&mut p, &all(200), ME, PickHint::Normal, 1, 1);
                assert_eq!(again, first, "the same piece again");
                assert_eq!(p.ahead_len, held);
            }
        }
    }

    /// A peer on parole that keeps us choked goes on with the piece it started among
    /// its allowed-fast pieces, as `pick(.., PickHint::Parole, ..)` does, rather than
    /// start another (one more partial slot, and the first left for others to finish,
    /// its senders mixed: what parole exists to prevent).
    #[test]
    fn a_parole_pick_among_continues_its_own_piece() {
        const PAROLE: PeerKey = PeerKey(5);
        let blk = |piece: u32, i: u32| BlockRef {
            piece: PieceIndex(piece),
            offset: i * BLOCK_LEN,
            len: BLOCK_LEN,
        };
        // What pick(Parole) does with the same two pieces: piece 7's rest second.
        let mut q = build("1111111111", "", "", "", 4, cfg());
        let only = bits("       ** ");
        let first = pick(&mut q, &only, PAROLE, PickHint::Parole, 2, 1);
        let second = pick(&mut q, &only, PAROLE, PickHint::Parole, 2, 1);
        assert_eq!(
            pieces(&first),
            pieces(&second),
            "pick(Parole) continues its piece"
        );

        let mut p = build("1111111111", "", "", "", 4, cfg());
        let has = all(10);
        let allowed = [PieceIndex(7), PieceIndex(8)];
        let mut out = [blk(0, 0); 8];
        let n = p.pick_among(&allowed, &has[..], PAROLE, true, 2, &mut out);
        assert_eq!(&out[..n], &[blk(7, 0), blk(7, 1)]);
        let n = p.pick_among(&allowed, &has[..], PAROLE, true, 2, &mut out);
        assert_eq!(
            &out[..n],
            &[blk(7, 2), blk(7, 3)],
            "a parole peer continues its own reserved piece; partials used: {:?}",
            p.partial_usage()
        );
    }

    /// The parole peer's blocks of piece 7 arrive and it asks again, still choked: it
    /// takes the rest of 7, so an ordinary peer finds nothing of 7 left and the piece
    /// is the parole peer's alone.
    #[test]
    fn a_parole_peers_allowed_fast_piece_keeps_one_sender() {
        const PAROLE: PeerKey = PeerKey(5);
        let mut p = build("1111111111", "", "", "", 4, cfg());
        let has = all(10);
        let allowed = [PieceIndex(7), PieceIndex(8)];
        let mut out = [BlockRef {
            piece: PieceIndex(0),
            offset: 0,
            len: 0,
        }; 8];
        let n = p.pick_among(&allowed, &has[..], PAROLE, true, 2, &mut out);
        for b in &out[..n] {
            let _ = p.mark_received(b, PAROLE).expect("recv");
            p.mark_written(b).expect("written");
        }
        // The parole peer asks again (still choked); what it gets, it sends.
        let n = p.pick_among(&allowed, &has[..], PAROLE, true, 2, &mut out);
        for b in &out[..n] {
            let _ = p.mark_received(b, PAROLE).expect("recv");
            p.mark_written(b).expect("written");
        }
        // An ordinary unchoked peer, which has only 7, takes whatever of 7 is left.
        let got = pick(&mut p, &bits("       *  "), OTHER, PickHint::Normal, 4, 1);
        for b in &got {
            let _ = p.mark_received(b, OTHER).expect("recv");
            p.mark_written(b).expect("written");
        }
        let senders = p.piece_senders(PieceIndex(7)).expect("senders");
        assert_eq!(
            senders.as_slice(),
            &[PAROLE],
            "a parole peer's piece is its own"
        );
    }

    /// A pick among a few named pieces (a choking peer's allowed-fast set) takes
    /// only those: the free blocks of one in progress, a free one started, none of
    /// one we have, one the peer lacks or one at priority 0; a peer on parole starts
    /// new pieces only.
    #[test]
    fn a_pick_among_named_pieces_takes_only_those() {
        // Pieces: 0 we have, 1 in progress (block 0 requested by OTHER), 2 free,
        // 3 free but skipped (priority 0), 4 free but the peer lacks it, 5..9 free
        // (better by rarity than any named one: a whole pick would take them).
        let mut p = build("5555511111", "*", " r", "1110111111", 2, cfg());
        let has = bits("**** *****");
        let named: Vec<PieceIndex> = [0, 1, 2, 3, 4].map(PieceIndex).to_vec();
        let mut out = [BlockRef {
            piece: PieceIndex(0),
            offset: 0,
            len: 0,
        }; 8];
        let n = p.pick_among(&named, &has[..], ME, false, 8, &mut out);
        let got: Vec<(u32, u32)> = out[..n]
            .iter()
            .map(|b| (b.piece.0, b.offset / BLOCK_LEN))
            .collect();
        assert_eq!(got, [(1, 1), (2, 0), (2, 1)]);
        for b in &out[..n] {
            assert_eq!(
                p.block_status(b).expect("block"),
                BlockStatus::Requested,
                "marked requested"
            );
        }
        // Nothing left among them: nothing more, whatever else is free.
        assert_eq!(p.pick_among(&named, &has[..], ME, false, 8, &mut out), 0);
        // At most `max`.
        let more: Vec<PieceIndex> = [5, 6].map(PieceIndex).to_vec();
        assert_eq!(p.pick_among(&more, &has[..], ME, false, 3, &mut out), 3);
        // On parole: piece 6's second block (in progress) is left; 7 is started,
        // reserved.
        let rest: Vec<PieceIndex> = [6, 7].map(PieceIndex).to_vec();
        let n = p.pick_among(&rest, &has[..], PeerKey(5), true, 8, &mut out);
        assert_eq!(
            out[..n].iter().map(|b| b.piece.0).collect::<Vec<_>>(),
            [7, 7]
        );
    }

    /// The candidates held after one peer's pick are the best of all, not of what that
    /// peer has: in sequential order a peer that has the first pieces gets them even
    /// after a peer lacking them picked.
    #[test]
    fn candidates_held_after_one_peer_are_the_best_for_the_next() {
        let mut p = build(&"1".repeat(100), "", "", "", 1, cfg().with_sequential(true));
        let lacks_first_ten = bits(&(" ".repeat(10) + &"*".repeat(90)));
        assert_eq!(
            pieces(&pick(
                &mut p,
                &lacks_first_ten,
                OTHER,
                PickHint::Normal,
                1,
                1
            )),
            [10]
        );
        assert_eq!(
            pieces(&pick(&mut p, &all(100), ME, PickHint::Normal, 1, 1)),
            [0]
        );
        assert_eq!(
            pieces(&pick(
                &mut p,
                &lacks_first_ten,
                OTHER,
                PickHint::Normal,
                1,
                1
            )),
            [11]
        );
        assert_eq!(
            pieces(&pick(&mut p, &all(100), ME, PickHint::Normal, 1, 1)),
            [1]
        );
    }
}
