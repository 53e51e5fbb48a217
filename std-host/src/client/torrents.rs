//! The torrents themselves: adding one from a `.torrent` file or a magnet link (with
//! the data check that finds which pieces are already on disk), the check's result,
//! the metadata of a magnet arriving, removing, pausing and resuming, and the views of
//! torrents and peers the public API returns.

use super::{Client, ClientError, HostTorrent, Start, TorrentView};
use crate::disk::{CheckProgress, DiskJob};
use crate::resume::{self, ResumeData, ResumeWriter};
use crate::storage::{Storage, StorageConfig};
use btcore_core::bitfield::Bitfield;
use btcore_core::ids::InfoHash;
use btcore_core::metainfo::{Limits, Metainfo};
use btcore_core::session::{PeerSource, TorrentId, TorrentState};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Client {
    /// Adds a `.torrent` file, saving into `save_dir` (the client's by default). Resume
    /// data whose files are unchanged since it was saved is trusted as it is; otherwise
    /// (files changed, or no resume data) whatever is on disk is checked. A check runs
    /// off the loop, one torrent at a time: the torrent waits in
    /// [`TorrentState::Checking`] (no announce, no peer) while the others run on.
    pub fn add_torrent_file(
        &mut self,
        torrent_file: &[u8],
        save_dir: Option<&Path>,
    ) -> Result<TorrentId, ClientError> {
        let mut tokens = Vec::new();
        let m = Metainfo::parse_vec(torrent_file, &mut tokens, &Limits::default())
            .map_err(|e| ClientError::Add(btcore_core::session::AddError::Metainfo(e)))?;
        if m.is_v2_only() && btcore_core::session::merkle_pieces(&m).is_none() {
            // Refused before any file is created: its pieces could not be checked.
            return Err(ClientError::Add(btcore_core::session::AddError::Metainfo(
                btcore_core::metainfo::MetainfoError {
                    offset: 0,
                    kind: btcore_core::metainfo::ErrorKind::MissingPieceLayer,
                },
            )));
        }
        let save_dir = save_dir.unwrap_or(&self.opts.save_dir).to_path_buf();
        let storage = Arc::new(
            Storage::new(
                &save_dir,
                m.layout()
                    .map_err(|e| ClientError::Add(btcore_core::session::AddError::Metainfo(e)))?,
                m.geometry(),
                StorageConfig {
                    state_dir: self.opts.state_dir.clone(),
                    parts_file: self.parts_file(&m.info_hash()),
                    ..StorageConfig::default()
                },
            )
            .map_err(ClientError::Storage)?,
        );
        storage.set_sha1_pieces(!m.is_v2_only());
        // Empty files have no piece to write them: create them now.
        storage.ensure_files().map_err(ClientError::Storage)?;
        let now = self.now();
        let (id, check) = match self.initial_have(&m, &storage) {
            Start::Ready(have) => (
                self.session
                    .add_torrent(now, torrent_file, Some(&have))
                    .map_err(ClientError::Add)?,
                None,
            ),
            Start::Check => {
                let id = self
                    .session
                    .add_torrent_checking(now, torrent_file)
                    .map_err(ClientError::Add)?;
                let progress = self.submit_check(id, &m, &storage);
                (id, Some(progress))
            }
        };
        self.torrents.insert(
            id,
            HostTorrent {
                name: String::from_utf8_lossy(m.name()).into_owned(),
                info_hash: m.info_hash(),
                info_hash_v2: m.info_hash_v2_truncated().filter(|_| m.is_hybrid()),
                storage: Some(storage),
                resume: ResumeWriter::default(),
                save_dir,
                check,
                disk_error: None,
            },
        );
        self.pump();
        Ok(id)
    }

    /// Adds a magnet link.
    pub fn add_magnet(
        &mut self,
        uri: &str,
        save_dir: Option<&Path>,
    ) -> Result<TorrentId, ClientError> {
        let m = btcore_core::magnet::Magnet::parse_str(uri)
            .map_err(|e| ClientError::Add(btcore_core::session::AddError::Magnet(e)))?;
        let name = m.info_hash().to_string();
        let info_hash = m.info_hash();
        let now = self.now();
        let id = self
            .session
            .add_magnet(now, uri.as_bytes())
            .map_err(ClientError::Add)?;
        self.torrents.insert(
            id,
            HostTorrent {
                name,
                info_hash,
                info_hash_v2: None,
                storage: None,
                resume: ResumeWriter::default(),
                save_dir: save_dir.unwrap_or(&self.opts.save_dir).to_path_buf(),
                check: None,
                disk_error: None,
            },
        );
        self.pump();
        Ok(id)
    }

    /// Where a torrent keeps the bytes of skipped files that share a piece with wanted
    /// ones: `STATE_DIR/<info-hash>.parts` (none without a state directory).
    pub(super) fn parts_file(&self, hash: &InfoHash) -> Option<PathBuf> {
        self.opts
            .state_dir
            .as_ref()
            .map(|d| d.join(format!("{hash}.parts")))
    }

    /// Hashes every piece of `m` on disk off the loop; the result comes back as
    /// `DiskDone::Checked`, for [`Session::handle_checked`].
    pub(super) fn submit_check(
        &mut self,
        id: TorrentId,
        m: &Metainfo<'_>,
        storage: &Arc<Storage>,
    ) -> Arc<CheckProgress> {
        let n = m.num_pieces();
        let progress = Arc::new(CheckProgress::new(n));
        log::info!(
            "{}: checking {} pieces on disk",
            String::from_utf8_lossy(m.name()),
            progress.total
        );
        self.disk.submit(DiskJob::Check {
            torrent: id,
            storage: storage.clone(),
            hashes: crate::storage::expected_hashes(m),
            progress: progress.clone(),
        });
        progress
    }

    /// How a torrent starts: with the resume file's pieces as they are when no file
    /// changed since it was saved (same lengths and mtimes), with nothing when no file
    /// holds data; otherwise after a check of every piece on disk (as libtorrent does
    /// when resume data does not match): after a `kill -9` that finds the pieces
    /// verified since the last save too, and a piece whose data is all holes costs no
    /// read.
    pub(super) fn initial_have(&self, m: &Metainfo<'_>, storage: &Storage) -> Start {
        let n = m.num_pieces();
        let resume = self
            .opts
            .state_dir
            .as_deref()
            .and_then(|d| resume::load(d, &m.info_hash()).ok().flatten())
            .filter(|r| r.num_pieces() == n);
        match resume {
            // No file changed since the data was synced, and the claims can hold.
            Some(r) if resume::trusted(&r, storage) => {
                log::debug!("resume data trusted: no file changed since it was saved");
                Start::Ready(r.pieces)
            }
            _ if !storage.has_data() => Start::Ready(Bitfield::new(n)),
            Some(_) => {
                log::debug!("resume data not trusted: a file changed since it was saved");
                Start::Check
            }
            None => Start::Check,
        }
    }

    /// Adds a peer by hand.
    pub fn add_peer(&mut self, id: TorrentId, addr: SocketAddr) {
        let now = self.now();
        self.session
            .handle_peers(now, id, &[addr], PeerSource::User);
        self.pump();
    }

    /// The torrents with their status.
    pub fn torrents(&self) -> Vec<TorrentView> {
        // One clock reading for them all.
        let now = self.now();
        let mut v: Vec<TorrentView> = self
            .session
            .torrents()
            .filter_map(|id| self.view_at(id, now))
            .collect();
        v.sort_by_key(|t| t.id);
        v
    }

    /// The view of torrent `id` (None: no such torrent).
    pub fn torrent(&self, id: TorrentId) -> Option<TorrentView> {
        self.view_at(id, self.now())
    }

    fn view_at(&self, id: TorrentId, now: btcore_core::time::Instant) -> Option<TorrentView> {
        let status = self.session.torrent_status(id, now)?;
        let t = self.torrents.get(&id);
        let name = t.map(|t| t.name.clone()).unwrap_or_default();
        let checking = t
            .and_then(|t| t.check.as_ref())
            .map(|c| (c.checked.load(Ordering::Relaxed).min(c.total), c.total));
        Some(TorrentView {
            id,
            name,
            status,
            checking,
        })
    }

    /// Per-peer status of a torrent.
    pub fn peers(&self, id: TorrentId) -> Vec<btcore_core::session::PeerStatus> {
        self.session.peers_at(id, self.now())
    }

    /// A torrent's check is done: it starts with the pieces found.
    pub(super) fn checked(&mut self, id: TorrentId, have: &Bitfield) {
        let Some(t) = self.torrents.get_mut(&id) else {
            return;
        };
        if t.check.take().is_none() {
            return;
        }
        log::info!(
            "{}: check done, {} of {} pieces",
            t.name,
            have.count(),
            have.len()
        );
        // What the check found is worth keeping (a later start trusts it).
        t.resume.mark_dirty(std::time::Instant::now());
        let now = self.now();
        self.session.handle_checked(now, id, have);
    }

    /// A magnet link's info dictionary arrived ([`Action::CheckData`]): the storage is
    /// made, and what is already on disk is checked as for a torrent added from a file
    /// (resume data trusted if no file changed, nothing to check when no file holds
    /// data) before the session downloads what is missing.
    pub(super) fn metadata_received(&mut self, id: TorrentId) {
        let now = self.now();
        let Some(file) = self.session.metainfo_bytes(id) else {
            return;
        };
        let mut tokens = Vec::new();
        let parsed = Metainfo::parse_vec(&file, &mut tokens, &Limits::default());
        let parts_file = parsed
            .as_ref()
            .ok()
            .and_then(|m| self.parts_file(&m.info_hash()));
        let storage = match (&parsed, self.torrents.get_mut(&id)) {
            (Ok(m), Some(t)) => {
                t.name = String::from_utf8_lossy(m.name()).into_owned();
                t.info_hash_v2 = m.info_hash_v2_truncated().filter(|_| m.is_hybrid());
                let config = StorageConfig {
                    state_dir: self.opts.state_dir.clone(),
                    parts_file,
                    ..StorageConfig::default()
                };
                let made = m.layout().map_err(|e| e.to_string()).and_then(|layout| {
                    Storage::new(&t.save_dir, layout, m.geometry(), config)
                        .map_err(|e| e.to_string())
                });
                match made {
                    Ok(s) => {
                        s.set_sha1_pieces(!m.is_v2_only());
                        let s = Arc::new(s);
                        // Empty files have no piece to write them: create them now.
                        if let Err(e) = s.ensure_files() {
                            log::warn!("{}: {e}", t.name);
                        }
                        t.storage = Some(s.clone());
                        Some(s)
                    }
                    Err(e) => {
                        log::warn!("{}: no storage: {e}", t.name);
                        None
                    }
                }
            }
            _ => None,
        };
        let (Ok(m), Some(storage)) = (parsed, storage) else {
            // Nothing to check: the torrent starts empty (its writes will fail and
            // stop it with a disk error if there is no storage).
            let n = self
                .session
                .torrent_status(id, now)
                .map_or(0, |s| s.num_pieces);
            self.session.handle_checked(now, id, &Bitfield::new(n));
            return;
        };
        match self.initial_have(&m, &storage) {
            Start::Ready(have) => {
                self.session.handle_checked(now, id, &have);
            }
            Start::Check => {
                let progress = self.submit_check(id, &m, &storage);
                if let Some(t) = self.torrents.get_mut(&id) {
                    t.check = Some(progress);
                }
            }
        }
    }

    /// Removes a torrent: closes its peers, announces `stopped`, forgets its resume
    /// data, and with `delete_data` deletes its files (empty folders are left). Returns
    /// whether the torrent existed. A disk write still in flight may land after the
    /// files are deleted; call it on a settled torrent when that matters.
    pub fn remove_torrent(&mut self, id: TorrentId, delete_data: bool) -> bool {
        let now = self.now();
        if !self.session.torrents().any(|t| t == id) {
            return false;
        }
        self.session.remove_torrent(now, id);
        self.torrent_buckets.remove(&id);
        self.pump();
        self.disk.submit(DiskJob::Forget { torrent: id });
        self.disk.flush();
        let Some(t) = self.torrents.remove(&id) else {
            return true;
        };
        if let Some(c) = &t.check {
            c.cancel.store(true, Ordering::Relaxed);
        }
        if let Some(dir) = &self.opts.state_dir {
            let _ = std::fs::remove_file(dir.join(ResumeData::file_name(&t.info_hash)));
        }
        // Its parts file goes with its resume data.
        if let Some(s) = &t.storage {
            s.remove_parts();
        }
        if delete_data {
            if let Some(s) = &t.storage {
                let paths: Vec<PathBuf> = (0..s.files().count() as u32)
                    .filter_map(|i| s.file_path(i).map(Path::to_path_buf))
                    .collect();
                for p in paths {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        true
    }

    /// Pauses a torrent (closes its peers, announces `stopped`); false if unknown.
    pub fn pause(&mut self, id: TorrentId) -> bool {
        let now = self.now();
        let ok = self.session.pause_torrent(now, id);
        self.pump();
        ok
    }

    /// Resumes a paused torrent; false if unknown.
    pub fn resume(&mut self, id: TorrentId) -> bool {
        let now = self.now();
        let ok = self.session.resume_torrent(now, id);
        self.pump();
        ok
    }

    /// Whether every torrent is seeding.
    pub fn all_complete(&self) -> bool {
        self.torrents()
            .iter()
            .all(|t| t.status.state == TorrentState::Seeding)
    }

    /// The verified pieces of a torrent (None: unknown torrent, or a magnet link whose
    /// metadata has not arrived).
    pub fn pieces(&self, id: TorrentId) -> Option<Bitfield> {
        self.session.have(id).cloned()
    }

    /// The info-hash of a torrent.
    pub fn info_hash(&self, id: TorrentId) -> Option<InfoHash> {
        self.session
            .torrent_status(id, self.now())
            .map(|s| s.info_hash)
    }

    pub(super) fn storage(&self, id: TorrentId) -> Option<Arc<Storage>> {
        self.torrents.get(&id)?.storage.clone()
    }
}
