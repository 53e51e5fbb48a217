//! `btcore daemon`: a long-running session driven over Transmission's RPC.
//!
//! Two threads: the engine's (the [`Client`] loop, the RPC methods, the state file,
//! the watch folder) and the RPC's HTTP side ([`http::Server`]). The HTTP thread
//! checks each request (host, login, session id, size) and hands its body to the
//! engine through a channel and the client's waker; the engine answers between two
//! turns of its loop and wakes the HTTP thread. Nothing else is shared.

mod http;
mod methods;
mod names;
mod state;
mod web;

use btcore_core::metainfo::{Limits, Metainfo};
use btcore_core::session::{Event, PeerOrigin, TorrentId, TorrentState};
use btcore_host::client::{Client, ClientOptions, TorrentView};
use btcore_host::encryption::Encryption;
use serde_json::{json, Map, Value};
use state::{Saved, Store};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the state file is written when only totals changed (a change of the
/// torrent list or of a setting writes it at once).
const SAVE_EVERY: Duration = Duration::from_secs(60);
/// How often the daemon looks at its torrents for what changed (dates, totals, the
/// recently-active list) when nothing asked it to.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(2);
/// How often a torrent's seconds downloading or seeding reach its record when
/// nothing else changes it (a `kill -9` loses at most this much of them).
const TIMES_SAVE_EVERY: Duration = Duration::from_secs(3600);
/// How often the watch folder is scanned.
const WATCH_EVERY: Duration = Duration::from_secs(5);
/// A file in the watch folder is read once its size has not changed for this long
/// (it may still be being copied).
const WATCH_SETTLE: Duration = Duration::from_secs(2);
/// Largest `.torrent` read from the watch folder.
const MAX_WATCHED_FILE: u64 = 16 << 20;
/// Most torrents the daemon holds.
const MAX_TORRENTS: usize = 100_000;

/// `btcore daemon`'s options (each also a key of the `--config` file).
#[derive(clap::Args, Debug, Clone)]
pub struct DaemonArgs {
    /// A JSON settings file: an object whose keys are these options' long names
    /// (`"download-dir": "/srv/torrents"`, `"low-memory": true`); options given on
    /// the command line win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The RPC's address.
    #[arg(long, default_value = "127.0.0.1:9091")]
    pub rpc: SocketAddr,
    /// `USER:PASSWORD` for the RPC (HTTP basic auth).
    #[arg(long, value_name = "USER:PASSWORD")]
    pub rpc_auth: Option<String>,
    /// Serve the RPC on a non-loopback address without --rpc-auth (anyone who can
    /// reach the port controls the daemon).
    #[arg(long)]
    pub rpc_allow_unauthenticated: bool,
    /// Host names a browser may use to reach the RPC (besides IP addresses and
    /// localhost; DNS-rebinding protection). Repeatable; `*` turns the check off.
    #[arg(long = "rpc-host-whitelist", value_name = "HOST")]
    pub rpc_host_whitelist: Vec<String>,
    /// Where torrents' data goes.
    #[arg(long, default_value = ".")]
    pub download_dir: PathBuf,
    /// Where the torrent list, settings and resume data go (default:
    /// DOWNLOAD_DIR/.btcore).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// A folder whose `.torrent` files are added (then renamed `.added`, or deleted
    /// with --trash-original-torrent-files; a bad one is renamed `.invalid`).
    #[arg(long)]
    pub watch: Option<PathBuf>,
    /// Delete a watch folder's `.torrent` once it is added, instead of renaming it
    /// `.added` (Transmission's `trash-original-torrent-files`).
    #[arg(long)]
    pub trash_original_torrent_files: bool,
    /// Where torrents' data stays while they download; each moves to its download
    /// folder once done.
    #[arg(long, value_name = "DIR")]
    pub incomplete_dir: Option<PathBuf>,
    /// Peer listen port.
    #[arg(short = 'p', long, default_value_t = 51413)]
    pub port: u16,
    /// The small-memory profile (routers, small NAS boxes).
    #[arg(long)]
    pub low_memory: bool,
    /// Do not use the DHT.
    #[arg(long)]
    pub no_dht: bool,
    /// Do not ask the gateway to forward the peer port (PCP, NAT-PMP).
    #[arg(long)]
    pub no_port_mapping: bool,
    /// Protocol encryption: disabled, allowed, preferred or required.
    #[arg(long, default_value = "preferred")]
    pub encryption: Encryption,
    /// Peer transports: both (uTP first, TCP fallback), utp (dial uTP only) or tcp
    /// (no uTP). `utp-enabled` of session-set turns uTP on (both) and off (tcp).
    #[arg(long, default_value = "both", value_parser = crate::parse_transport)]
    pub transport: btcore_host::client::TransportPolicy,
    /// Download limit in KiB/s (0: none).
    #[arg(long, default_value_t = 0)]
    pub download_limit: u64,
    /// Upload limit in KiB/s (0: none).
    #[arg(long, default_value_t = 0)]
    pub upload_limit: u64,
    /// Most connections per torrent.
    #[arg(long)]
    pub max_peers: Option<usize>,
    /// Most connections over all torrents.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Serve the web page from this folder instead of the built-in one (another
    /// front-end, such as Transmission's web client, whose files are at the top).
    #[arg(long, value_name = "DIR")]
    pub web_root: Option<PathBuf>,
}

/// Turns a `--config` file into command-line options placed before the real ones
/// (which, coming later, win).
pub fn config_args(path: &Path) -> Result<Vec<String>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > 1 << 20 {
        return Err(format!("{}: larger than 1 MiB", path.display()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let Value::Object(m) = v else {
        return Err(format!("{}: not a JSON object", path.display()));
    };
    let mut out = Vec::new();
    for (k, v) in m {
        if k == "config" || !k.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
            return Err(format!("{}: unknown setting {k:?}", path.display()));
        }
        let flag = format!("--{k}");
        match v {
            Value::Bool(true) => out.push(flag),
            Value::Bool(false) | Value::Null => {}
            Value::String(s) => {
                out.push(flag);
                out.push(s);
            }
            Value::Number(n) => {
                out.push(flag);
                out.push(n.to_string());
            }
            Value::Array(a) => {
                for x in a {
                    out.push(flag.clone());
                    out.push(match x {
                        Value::String(s) => s,
                        x => x.to_string(),
                    });
                }
            }
            Value::Object(_) => {
                return Err(format!(
                    "{}: {k}: an object is not a setting",
                    path.display()
                ))
            }
        }
    }
    Ok(out)
}

/// What the daemon knows of a torrent besides the engine.
pub struct Entry {
    pub saved: Saved,
    pub meta: Option<Meta>,
    /// Last change seen (for `recently-active`).
    pub last_active: Instant,
    /// Payload totals of this run when last looked at.
    pub seen: (u64, u64),
    /// Stopped by its seed ratio limit.
    pub ratio_reached: bool,
    /// The byte totals its record holds on disk.
    pub written_totals: (u64, u64),
    /// Its activity date as its record holds it: it changes with the byte totals and
    /// is written with them.
    pub written_activity: i64,
    /// What it does now and since when: that time is added to its record's seconds
    /// when this changes and at exit, so that the record is not rewritten every
    /// second.
    pub phase: (Phase, Instant),
    /// Unix seconds it was last started (0: not since the daemon started).
    pub start_date: i64,
}

/// What a torrent is doing, for its seconds downloading and seeding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Downloading,
    Seeding,
}

impl Entry {
    /// Its seconds downloading or seeding, this phase's included.
    pub fn seconds_in(&self, phase: Phase) -> u64 {
        let base = match phase {
            Phase::Downloading => self.saved.seconds_downloading,
            Phase::Seeding => self.saved.seconds_seeding,
            Phase::Idle => 0,
        };
        let now = if self.phase.0 == phase {
            self.phase.1.elapsed().as_secs()
        } else {
            0
        };
        base.saturating_add(now)
    }

    /// Adds the time of the phase that ends now to its record.
    fn close_phase(&mut self) {
        let secs = self.phase.1.elapsed().as_secs();
        match self.phase.0 {
            Phase::Downloading => {
                self.saved.seconds_downloading = self.saved.seconds_downloading.saturating_add(secs)
            }
            Phase::Seeding => {
                self.saved.seconds_seeding = self.saved.seconds_seeding.saturating_add(secs)
            }
            Phase::Idle => {}
        }
        // The part of a second not counted stays in the phase.
        self.phase.1 += Duration::from_secs(secs);
    }
}

/// `.torrent` downloads for `torrent-add` by URL at once (more are refused).
const MAX_FETCHES: usize = 4;
/// How long one may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// A download done: its request, the URL, the file or why not.
type Fetched = (http::Job, String, Result<Vec<u8>, String>);

/// Downloads `url` off the loop, then hands it back with its request (and wakes the
/// loop).
fn spawn_fetch(
    job: http::Job,
    url: String,
    limit: u64,
    fetches: &Arc<AtomicUsize>,
    tx: &std::sync::mpsc::Sender<Fetched>,
    waker: Arc<mio::Waker>,
) {
    fetches.fetch_add(1, Ordering::Relaxed);
    let (counter, sender) = (fetches.clone(), tx.clone());
    // The request comes back if the thread cannot start: it is answered with why.
    let slot = Arc::new(Mutex::new(Some((job, url))));
    let taken = slot.clone();
    let spawned = std::thread::Builder::new()
        .name("btcore-fetch".into())
        .spawn(move || {
            let Some((job, url)) = taken.lock().ok().and_then(|mut s| s.take()) else {
                return;
            };
            let result = btcore_host::tracker::fetch(&url, limit, FETCH_TIMEOUT);
            counter.fetch_sub(1, Ordering::Relaxed);
            let _ = sender.send((job, url, result));
            let _ = waker.wake();
        });
    if let Err(e) = spawned {
        fetches.fetch_sub(1, Ordering::Relaxed);
        if let Some((job, url)) = slot.lock().ok().and_then(|mut s| s.take()) {
            let _ = tx.send((job, url, Err(format!("cannot start a download: {e}"))));
        }
    }
}

/// The parts of the metainfo the RPC shows.
pub struct Meta {
    pub name: String,
    pub files: Vec<(String, u64)>,
    pub piece_length: u32,
    pub total_size: u64,
    pub comment: String,
    pub creator: String,
    pub date_created: i64,
    pub private: bool,
}

impl Meta {
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut tokens = Vec::new();
        let m = Metainfo::parse_vec(bytes, &mut tokens, &Limits::default())
            .map_err(|e| format!("invalid or corrupt torrent file ({e})"))?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let name = text(m.name());
        let files = if m.is_multi_file() {
            m.files()
                .map(|f| {
                    // The torrent's name first, then the file's path.
                    let parts: Vec<String> = f
                        .raw_path()
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                        .collect();
                    (parts.join("/"), f.length)
                })
                .collect()
        } else {
            vec![(name.clone(), m.total_size())]
        };
        Ok(Self {
            name,
            files,
            piece_length: m.piece_length(),
            total_size: m.total_size(),
            comment: m.comment().map(text).unwrap_or_default(),
            creator: m.created_by().map(text).unwrap_or_default(),
            date_created: m.creation_date().unwrap_or(0),
            private: m.is_private(),
        })
    }
}

/// The engine's side of the daemon.
pub struct Daemon {
    pub client: Client,
    store: Store,
    pub torrents: BTreeMap<TorrentId, Entry>,
    removed: Vec<(u32, Instant)>,
    pub download_dir: PathBuf,
    pub settings: Map<String, Value>,
    pub started: Instant,
    pub dirty: bool,
    pub close_requested: bool,
    pub files_added: u64,
    /// Cumulative totals of earlier runs: uploaded, downloaded, files added,
    /// seconds active, sessions.
    pub totals: (u64, u64, u64, u64, u64),
    session_id: String,
    /// `.torrent` files downloaded for a `torrent-add` by URL, by URL, until that
    /// request is answered.
    pub fetched: HashMap<String, Result<Vec<u8>, String>>,
    /// Torrents came or went since the allocator last gave back its free pages.
    pub trim_pending: bool,
    rpc_addr: SocketAddr,
    config_dir: PathBuf,
    args: DaemonArgs,
    /// The engine's options as they are now (session-set changes them).
    pub opts: ClientOptions,
}

impl Daemon {
    pub fn by_hash(&self, hex: &str) -> Option<TorrentId> {
        let hex = hex.to_ascii_lowercase();
        self.torrents
            .iter()
            .find(|(_, e)| e.saved.hash == hex)
            .map(|(id, _)| *id)
    }

    pub fn name_of(&self, id: TorrentId) -> String {
        match self.torrents.get(&id).and_then(|e| e.meta.as_ref()) {
            Some(m) => m.name.clone(),
            None => self
                .client
                .torrents()
                .into_iter()
                .find(|v| v.id == id)
                .map(|v| v.name)
                .unwrap_or_default(),
        }
    }

    pub fn set_paused(&mut self, id: TorrentId, paused: bool) {
        let changed = if paused {
            self.client.pause(id)
        } else {
            self.client.resume(id)
        };
        if let Some(e) = self.torrents.get_mut(&id) {
            if changed || e.saved.paused != paused {
                e.saved.paused = paused;
                e.last_active = Instant::now();
                if !paused {
                    e.start_date = methods::now_unix();
                }
                self.dirty = true;
            }
        }
    }

    pub fn remove(&mut self, id: TorrentId, delete_data: bool) {
        let Some(e) = self.torrents.remove(&id) else {
            return;
        };
        self.client.remove_torrent(id, delete_data);
        self.store.remove(&e.saved.hash);
        self.removed.push((id.0, Instant::now()));
        self.dirty = true;
        self.trim_pending = true;
    }

    pub fn recently_removed(&mut self) -> Vec<u32> {
        self.removed
            .retain(|(_, at)| at.elapsed() < methods::RECENT);
        self.removed.iter().map(|(id, _)| *id).collect()
    }

    pub fn set_queue_position(&mut self, id: TorrentId, pos: u64) {
        let mut order: Vec<TorrentId> = self.queue_order();
        order.retain(|t| *t != id);
        let pos = (pos as usize).min(order.len());
        order.insert(pos, id);
        self.renumber(&order);
    }

    pub fn queue_move(&mut self, ids: &[TorrentId], how: &str) {
        let ids: std::collections::HashSet<TorrentId> = ids.iter().copied().collect();
        let ids = &ids;
        let mut order = self.queue_order();
        match how {
            "queue_move_top" => {
                let (mut front, rest): (Vec<_>, Vec<_>) =
                    order.iter().partition(|t| ids.contains(t));
                front.extend(rest);
                order = front;
            }
            "queue_move_bottom" => {
                let (back, mut rest): (Vec<_>, Vec<_>) =
                    order.iter().partition(|t| ids.contains(t));
                rest.extend(back);
                order = rest;
            }
            "queue_move_up" => {
                for i in 1..order.len() {
                    if ids.contains(&order[i]) && !ids.contains(&order[i - 1]) {
                        order.swap(i, i - 1);
                    }
                }
            }
            _ => {
                for i in (0..order.len().saturating_sub(1)).rev() {
                    if ids.contains(&order[i]) && !ids.contains(&order[i + 1]) {
                        order.swap(i, i + 1);
                    }
                }
            }
        }
        self.renumber(&order);
    }

    fn queue_order(&self) -> Vec<TorrentId> {
        let mut v: Vec<(u64, TorrentId)> = self
            .torrents
            .iter()
            .map(|(id, e)| (e.saved.queue_position, *id))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// The queue in `order`: kept, and given to the engine (which starts and queues
    /// torrents by it).
    fn renumber(&mut self, order: &[TorrentId]) {
        for (i, id) in order.iter().enumerate() {
            if let Some(e) = self.torrents.get_mut(id) {
                e.saved.queue_position = i as u64;
            }
        }
        self.client.set_queue_order(order);
        self.dirty = true;
    }

    /// Adds a `.torrent`; `(id, true)` when its info-hash was already there.
    pub fn add_torrent_bytes(
        &mut self,
        bytes: &[u8],
        dir: Option<PathBuf>,
        paused: bool,
        labels: Vec<String>,
    ) -> Result<(TorrentId, bool), String> {
        let meta = Meta::parse(bytes)?;
        let mut tokens = Vec::new();
        let hash = Metainfo::parse_vec(bytes, &mut tokens, &Limits::default())
            .map_err(|e| format!("invalid or corrupt torrent file ({e})"))?
            .info_hash();
        let hex = hash.to_string();
        if let Some(id) = self.by_hash(&hex) {
            return Ok((id, true));
        }
        if self.torrents.len() >= MAX_TORRENTS {
            return Err(format!("the daemon holds {MAX_TORRENTS} torrents already"));
        }
        let dir = dir.unwrap_or_else(|| self.download_dir.clone());
        // The incomplete folder, unless some of its data is in the download folder
        // already (then it is checked there, as Transmission does).
        let data_dir = self
            .args
            .incomplete_dir
            .clone()
            .filter(|_| !meta.files.iter().any(|(f, _)| dir.join(f).exists()));
        let id = self
            .client
            .add_torrent_file(bytes, Some(data_dir.as_ref().unwrap_or(&dir)))
            .map_err(|e| e.to_string())?;
        if let Err(e) = btcore_host::os::write_atomic(&self.store.torrent_file(&hex), bytes) {
            self.client.remove_torrent(id, false);
            return Err(format!("saving the torrent: {e}"));
        }
        let saved = Saved {
            hash: hex,
            magnet: None,
            paused,
            download_dir: dir,
            data_dir,
            added_date: methods::now_unix(),
            queue_position: self.torrents.len() as u64,
            labels,
            ..Saved::default()
        };
        self.insert(id, saved, Some(meta));
        self.apply_torrent(id);
        self.files_added += 1;
        Ok((id, false))
    }

    pub fn add_magnet(
        &mut self,
        uri: &str,
        dir: Option<PathBuf>,
        paused: bool,
        labels: Vec<String>,
    ) -> Result<(TorrentId, bool), String> {
        let m = btcore_core::magnet::Magnet::parse_str(uri)
            .map_err(|e| format!("invalid magnet link ({e})"))?;
        let hex = m.info_hash().to_string();
        if let Some(id) = self.by_hash(&hex) {
            return Ok((id, true));
        }
        if self.torrents.len() >= MAX_TORRENTS {
            return Err(format!("the daemon holds {MAX_TORRENTS} torrents already"));
        }
        let dir = dir.unwrap_or_else(|| self.download_dir.clone());
        let data_dir = self.args.incomplete_dir.clone();
        let id = self
            .client
            .add_magnet(uri, Some(data_dir.as_ref().unwrap_or(&dir)))
            .map_err(|e| e.to_string())?;
        if let Err(e) = btcore_host::os::write_atomic(&self.store.magnet_file(&hex), uri.as_bytes())
        {
            self.client.remove_torrent(id, false);
            return Err(format!("saving the magnet link: {e}"));
        }
        let saved = Saved {
            hash: hex,
            magnet: Some(uri.to_string()),
            paused,
            download_dir: dir,
            data_dir,
            added_date: methods::now_unix(),
            queue_position: self.torrents.len() as u64,
            labels,
            ..Saved::default()
        };
        self.insert(id, saved, None);
        self.files_added += 1;
        Ok((id, false))
    }

    fn insert(&mut self, id: TorrentId, saved: Saved, meta: Option<Meta>) {
        let saved_totals = (saved.uploaded, saved.downloaded);
        let saved_activity = saved.activity_date;
        if saved.paused {
            self.client.pause(id);
        }
        let start_date = if saved.paused { 0 } else { methods::now_unix() };
        self.torrents.insert(
            id,
            Entry {
                saved,
                meta,
                last_active: Instant::now(),
                seen: (0, 0),
                ratio_reached: false,
                written_totals: (saved_totals.0, saved_totals.1),
                written_activity: saved_activity,
                phase: (Phase::Idle, Instant::now()),
                start_date,
            },
        );
        self.dirty = true;
        self.trim_pending = true;
    }

    /// Gives the engine a torrent's saved settings: file priorities, sequential
    /// order, its own limits, its seed ratio.
    pub fn apply_torrent(&mut self, id: TorrentId) {
        let Some(e) = self.torrents.get(&id) else {
            return;
        };
        let s = e.saved.clone();
        if !s.priorities.is_empty() {
            if let Err(err) = self.client.set_file_priorities(id, &s.priorities) {
                log::warn!("{}: file priorities: {err}", s.hash);
            }
        }
        if let Some(tiers) = s.trackers.clone() {
            if let Err(err) = self.client.set_trackers(id, tiers) {
                log::warn!("{}: tracker list: {err}", s.hash);
            }
        }
        self.client.set_sequential(id, s.sequential);
        self.client.set_torrent_limits(
            id,
            s.download_limit.map_or(0, |k| k.saturating_mul(1024)),
            s.upload_limit.map_or(0, |k| k.saturating_mul(1024)),
        );
        let ratio = match s.ratio_mode {
            1 => Some(s.ratio_limit),
            2 => None,
            _ => self.session_ratio(),
        };
        self.client.set_ratio_limit(
            id,
            ratio.map(|r| (r.max(0.0) * 1000.0).min(u32::MAX as f64) as u32),
        );
        // Each call looks at every torrent: only when the value is not the one the
        // engine has (a restart of many torrents stays linear).
        use btcore_core::session::IdleLimit;
        let idle = match s.idle_mode {
            1 => IdleLimit::Minutes(s.idle_limit),
            2 => IdleLimit::Unlimited,
            _ => IdleLimit::Session,
        };
        if self.client.idle_limit(id) != Some(idle) {
            self.client.set_idle_limit(id, idle);
        }
        let peers = s.peer_limit.map(|n| n as usize);
        if peers.is_some() {
            self.client.set_peer_limit(id, peers);
        }
    }

    /// The session's seed ratio limit, when on.
    pub fn session_ratio(&self) -> Option<f64> {
        let on = self
            .settings
            .get("seed_ratio_limited")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        on.then(|| {
            self.settings
                .get("seed_ratio_limit")
                .and_then(Value::as_f64)
                .unwrap_or(2.0)
        })
    }

    /// Applies `self.opts` to the engine (after `session-set`).
    pub fn apply_opts(&mut self) -> Result<(), String> {
        self.client
            .apply_settings(&self.opts)
            .map_err(|e| e.to_string())
    }

    /// A magnet link's metadata arrived: its `.torrent` is kept instead of the link.
    fn metadata_arrived(&mut self, id: TorrentId) {
        let Some(hash) = self.torrents.get(&id).map(|e| e.saved.hash.clone()) else {
            return;
        };
        let path = self.store.torrent_file(&hash);
        match self.client.save_torrent_file(id, &path) {
            Ok(()) => {
                let _ = std::fs::remove_file(self.store.magnet_file(&hash));
                let meta = std::fs::read(&path).ok().and_then(|b| Meta::parse(&b).ok());
                if let Some(e) = self.torrents.get_mut(&id) {
                    e.saved.magnet = None;
                    e.meta = meta;
                    e.last_active = Instant::now();
                }
                self.dirty = true;
                self.apply_torrent(id);
            }
            Err(e) => log::warn!("{hash}: saving its metadata: {e}"),
        }
    }

    /// The state directory.
    pub fn config_dir_path(&self) -> PathBuf {
        self.config_dir.clone()
    }

    /// Moves a torrent's data to `dir` (the engine moves it while running).
    pub fn move_to(&mut self, id: TorrentId, dir: &str) -> Result<(), String> {
        let path = PathBuf::from(dir);
        if !path.is_absolute() {
            return Err(format!("{dir}: not an absolute path"));
        }
        std::fs::create_dir_all(&path).map_err(|e| format!("{dir}: {e}"))?;
        self.client
            .move_storage(id, &path)
            .map_err(|e| e.to_string())?;
        if let Some(e) = self.torrents.get_mut(&id) {
            e.saved.download_dir = path;
            e.saved.data_dir = None;
            e.last_active = Instant::now();
        }
        self.dirty = true;
        Ok(())
    }

    /// Points torrent `id` at data already in `dir` and checks it there (nothing
    /// moves).
    pub fn locate_at(&mut self, id: TorrentId, dir: &str) -> Result<(), String> {
        let path = PathBuf::from(dir);
        if !path.is_absolute() {
            return Err(format!("{dir}: not an absolute path"));
        }
        self.client
            .set_location(id, &path)
            .map_err(|e| e.to_string())?;
        if let Some(e) = self.torrents.get_mut(&id) {
            e.saved.download_dir = path;
            e.saved.data_dir = None;
            e.last_active = Instant::now();
        }
        self.dirty = true;
        Ok(())
    }

    /// A torrent done downloading in the incomplete folder: its data moves to its
    /// download folder (a failure is logged, and the data stays where it is).
    fn move_when_done(&mut self, id: TorrentId) {
        let Some(e) = self.torrents.get(&id) else {
            return;
        };
        if e.saved.data_dir.is_none() {
            return;
        }
        let to = e.saved.download_dir.clone();
        let moved = std::fs::create_dir_all(&to)
            .map_err(|e| e.to_string())
            .and_then(|()| self.client.move_storage(id, &to).map_err(|e| e.to_string()));
        match moved {
            Ok(()) => {
                if let Some(e) = self.torrents.get_mut(&id) {
                    e.saved.data_dir = None;
                }
                self.dirty = true;
            }
            Err(err) => log::warn!("{}: moving to {}: {err}", self.name_of(id), to.display()),
        }
    }

    /// Replaces torrent `id`'s tracker list (kept across restarts).
    pub fn set_trackers(&mut self, id: TorrentId, tiers: Vec<Vec<String>>) -> Result<(), String> {
        self.client
            .set_trackers(id, tiers)
            .map_err(|e| e.to_string())?;
        // What the engine kept (deduplicated, capped), in its tiers.
        let mut kept: Vec<Vec<String>> = Vec::new();
        let mut last = None;
        for t in self.client.tracker_status(id).unwrap_or_default() {
            if last != Some(t.tier) {
                kept.push(Vec::new());
                last = Some(t.tier);
            }
            if let Some(tier) = kept.last_mut() {
                tier.push(t.url);
            }
        }
        if let Some(e) = self.torrents.get_mut(&id) {
            e.saved.trackers = Some(kept);
            e.last_active = Instant::now();
        }
        self.dirty = true;
        Ok(())
    }

    /// Checks torrent `id`'s data on disk again.
    pub fn verify(&mut self, id: TorrentId) -> Result<(), String> {
        self.client.recheck(id).map_err(|e| e.to_string())?;
        if let Some(e) = self.torrents.get_mut(&id) {
            e.last_active = Instant::now();
        }
        Ok(())
    }

    /// Renames the file or folder at `path` (as `files` names it) to `name`.
    pub fn rename(&mut self, id: TorrentId, path: &str, name: &str) -> Result<(), String> {
        let files = self
            .torrents
            .get(&id)
            .and_then(|e| e.meta.as_ref())
            .map(|m| m.files.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>())
            .ok_or("the torrent's files are not known yet")?;
        let top = files
            .first()
            .and_then(|f| f.split('/').next())
            .unwrap_or("")
            .to_string();
        let r = if let Some(i) = files.iter().position(|f| f == path) {
            if files.len() == 1 && !files[0].contains('/') {
                self.client.rename_file(id, 0, name)
            } else {
                self.client.rename_file(id, i as u32, name)
            }
        } else if path == top && files.iter().all(|f| f.contains('/')) {
            self.client.rename_folder(id, name)
        } else {
            return Err(format!("{path}: no such file or folder in the torrent"));
        };
        r.map_err(|e| e.to_string())?;
        // The names shown follow the engine's.
        if let Some(m) = self.torrents.get_mut(&id).and_then(|e| e.meta.as_mut()) {
            for f in m.files.iter_mut() {
                if f.0 == path {
                    f.0 = match path.rsplit_once('/') {
                        Some((dir, _)) => format!("{dir}/{name}"),
                        None => name.to_string(),
                    };
                } else if let Some(rest) = f.0.strip_prefix(&format!("{path}/")) {
                    f.0 = format!("{name}/{rest}");
                }
            }
            if path == top {
                m.name = name.to_string();
            }
        }
        self.dirty = true;
        Ok(())
    }

    /// The session's settings, snake_case.
    /// A session setting as set over the RPC, else Transmission's default.
    fn setting(&self, key: &str) -> Value {
        self.settings
            .get(key)
            .cloned()
            .unwrap_or_else(|| methods::default_setting(key))
    }

    pub fn session_fields(&self) -> Map<String, Value> {
        let kib = |b: u64| b / 1024;
        let units = json!({
            "speed_units": ["kB/s", "MB/s", "GB/s", "TB/s"],
            "speed_bytes": 1000,
            "size_units": ["kB", "MB", "GB", "TB"],
            "size_bytes": 1000,
            "memory_units": ["KiB", "MiB", "GiB", "TiB"],
            "memory_bytes": 1024,
        });
        let value = |k: &str, in_force: u64| {
            methods::limit_kib(self.settings.get(k).and_then(Value::as_u64), in_force)
        };
        let dl = value("speed_limit_down", self.opts.download_limit);
        let ul = value("speed_limit_up", self.opts.upload_limit);
        let encryption = match self.opts.encryption {
            Encryption::Required => "required",
            Encryption::Preferred => "preferred",
            _ => "tolerated",
        };
        let mut m = Map::new();
        for part in [
            json!({
            "version": concat!(env!("CARGO_PKG_VERSION"), " (btcore)"),
            "rpc_version": methods::RPC_VERSION,
            "rpc_version_semver": methods::RPC_VERSION_SEMVER,
            "rpc_version_minimum": methods::RPC_VERSION_MINIMUM,
            "session_id": self.session_id,
            "config_dir": self.config_dir.to_string_lossy(),
            "download_dir": self.download_dir.to_string_lossy(),
            "download_dir_free_space": free_bytes(&self.download_dir),
            "incomplete_dir": self.args.incomplete_dir.as_ref().map(|d| d.to_string_lossy().into_owned()).unwrap_or_default(),
            "incomplete_dir_enabled": self.args.incomplete_dir.is_some(),
            "peer_port": self.client.local_addr().port(),
            "peer_port_random_on_start": false,
            "port_forwarding_enabled": self.opts.port_mapping.is_some(),
            "peer_limit_global": if self.opts.max_connections > 0 { self.opts.max_connections } else if self.opts.low_memory { 50 } else { 200 },
            "peer_limit_per_torrent": if self.opts.max_peers > 0 { self.opts.max_peers } else if self.opts.low_memory { 20 } else { 50 },
            "dht_enabled": self.opts.dht.is_some(),
            "pex_enabled": self.opts.pex,
            "lpd_enabled": self.opts.lsd,
            "utp_enabled": self.opts.transport != btcore_host::client::TransportPolicy::TcpOnly,
            "encryption": encryption,
            }),
            json!({
            "speed_limit_down": dl,
            "speed_limit_down_enabled": self.opts.download_limit > 0,
            "speed_limit_up": ul,
            "speed_limit_up_enabled": self.opts.upload_limit > 0,
            "alt_speed_enabled": self.client.alt_speed_enabled(),
            "alt_speed_down": self.setting("alt_speed_down"),
            "alt_speed_up": self.setting("alt_speed_up"),
            "alt_speed_time_enabled": self.setting("alt_speed_time_enabled"),
            "alt_speed_time_begin": self.setting("alt_speed_time_begin"),
            "alt_speed_time_end": self.setting("alt_speed_time_end"),
            "alt_speed_time_day": self.setting("alt_speed_time_day"),
            "seed_ratio_limit": self.settings.get("seed_ratio_limit").and_then(Value::as_f64).unwrap_or(2.0),
            "seed_ratio_limited": self.session_ratio().is_some(),
            "idle_seeding_limit": self.setting("idle_seeding_limit"),
            "idle_seeding_limit_enabled": self.setting("idle_seeding_limit_enabled"),
            "download_queue_enabled": self.setting("download_queue_enabled"),
            "download_queue_size": self.setting("download_queue_size"),
            "seed_queue_enabled": self.setting("seed_queue_enabled"),
            "seed_queue_size": self.setting("seed_queue_size"),
            "queue_stalled_enabled": self.setting("queue_stalled_enabled"),
            "queue_stalled_minutes": self.setting("queue_stalled_minutes"),
            "start_added_torrents": true,
            "trash_original_torrent_files": self.args.trash_original_torrent_files,
            "rename_partial_files": false,
            "blocklist_enabled": false,
            "blocklist_size": 0,
            "blocklist_url": "",
            "cache_size_mb": kib(0),
            "script_torrent_done_enabled": false,
            "script_torrent_done_filename": "",
            "units": units,
            "rpc_host": self.rpc_addr.to_string(),

            }),
        ] {
            if let Value::Object(p) = part {
                m.extend(p);
            }
        }
        m
    }

    /// The fields of one torrent, snake_case.
    /// `views` is [`Client::torrents`] taken once for the whole request.
    pub fn torrent_fields(
        &self,
        id: TorrentId,
        fields: &[String],
        views: &BTreeMap<TorrentId, TorrentView>,
    ) -> Map<String, Value> {
        let mut out = Map::new();
        let Some(e) = self.torrents.get(&id) else {
            return out;
        };
        let Some(view) = views.get(&id) else {
            return out;
        };
        let peers = if fields.iter().any(|f| {
            matches!(
                f.as_str(),
                "peers" | "peers_sending_to_us" | "peers_getting_from_us" | "peers_from"
            )
        }) {
            self.client.peers(id)
        } else {
            Vec::new()
        };
        let st = view.status;
        let pieces = if fields.iter().any(|f| {
            matches!(
                f.as_str(),
                "pieces"
                    | "files"
                    | "file_stats"
                    | "have_valid"
                    | "left_until_done"
                    | "size_when_done"
                    | "desired_available"
                    | "bytes_completed"
            )
        }) {
            self.client.pieces(id)
        } else {
            None
        };
        let meta = e.meta.as_ref();
        let engine_files = if fields
            .iter()
            .any(|f| matches!(f.as_str(), "files" | "file_stats" | "wanted" | "priorities"))
        {
            self.client.files(id)
        } else {
            None
        };
        let total = if st.total_size > 0 {
            st.total_size
        } else {
            meta.map_or(0, |m| m.total_size)
        };
        let file_done = |m: &Meta| -> Vec<u64> {
            let plen = u64::from(m.piece_length.max(1));
            let mut start = 0u64;
            m.files
                .iter()
                .map(|(_, len)| {
                    let (a, b) = (start, start + len);
                    start = b;
                    let Some(have) = &pieces else { return 0 };
                    if *len == 0 {
                        return 0;
                    }
                    let mut done = 0;
                    let first = a / plen;
                    let last = (b - 1) / plen;
                    for p in first..=last {
                        if have.get(p as u32) {
                            let (ps, pe) = (p * plen, (p + 1) * plen);
                            done += pe.min(b) - ps.max(a);
                        }
                    }
                    done
                })
                .collect()
        };
        let eta = match st.eta_secs() {
            Some(s) => s as i64,
            None if st.state == TorrentState::Seeding => -1,
            None => -1,
        };
        let checking = view.checking;
        let trackers = if fields.iter().any(|f| {
            matches!(
                f.as_str(),
                "trackers"
                    | "tracker_stats"
                    | "tracker_list"
                    | "magnet_link"
                    | "error"
                    | "error_string"
            )
        }) {
            self.client.tracker_status(id).unwrap_or_default()
        } else {
            Vec::new()
        };
        let (error, error_string) = match st.error {
            // A local error (3): the disk's, with the file and the OS's words.
            Some(kind) => (
                3,
                match self.client.disk_error(id) {
                    Some(e) => e.to_string(),
                    None if kind == btcore_core::session::DiskError::NoSpace => {
                        "no space left on device".to_string()
                    }
                    None => "disk error".to_string(),
                },
            ),
            None => tracker_error(&trackers),
        };
        for f in fields {
            let v: Value = match f.as_str() {
                "id" => id.0.into(),
                "name" => self.name_of_view(view, e).into(),
                "hash_string" => e.saved.hash.clone().into(),
                "status" => {
                    if checking.is_some() {
                        2.into()
                    } else if st.queued {
                        // Queued to download, or to seed.
                        if st.finished { 5 } else { 3 }.into()
                    } else if st.finished
                        && st.state == TorrentState::Downloading
                        && !(st.paused || e.saved.paused)
                    {
                        // Every wanted file done (some unwanted): seeding, as
                        // Transmission says.
                        6.into()
                    } else {
                        methods::status_code(st.state, st.paused || e.saved.paused).into()
                    }
                }
                "error" => error.into(),
                "error_string" => error_string.clone().into(),
                "eta" => eta.into(),
                "eta_idle" => (-1).into(),
                "rate_download" => st.download_rate.into(),
                "rate_upload" => st.upload_rate.into(),
                "percent_done" | "percent_complete" => (f64::from(st.progress_ppm()) / 1e6).into(),
                "recheck_progress" => match checking {
                    Some((done, all)) if all > 0 => (f64::from(done) / f64::from(all)).into(),
                    _ => 0.0.into(),
                },
                "metadata_percent_complete" => if st.state == TorrentState::FetchingMetadata {
                    0.0
                } else {
                    1.0
                }
                .into(),
                "total_size" => total.into(),
                "size_when_done" => if st.wanted_size > 0 {
                    st.wanted_size
                } else {
                    total
                }
                .into(),
                "left_until_done" => st.wanted_size.saturating_sub(st.wanted_have).into(),
                "have_valid" => st.bytes_have.into(),
                "have_unchecked" | "corrupt_ever" => 0.into(),
                "desired_available" => 0.into(),
                "downloaded_ever" => (e.saved.downloaded + st.downloaded).into(),
                "uploaded_ever" => (e.saved.uploaded + st.uploaded).into(),
                "upload_ratio" => {
                    let down = e.saved.downloaded + st.downloaded;
                    let up = e.saved.uploaded + st.uploaded;
                    if down == 0 {
                        (-1).into()
                    } else {
                        (up as f64 / down as f64).into()
                    }
                }
                "peers_connected" => st.peers.into(),
                "peers_sending_to_us" | "peers_getting_from_us" => {
                    let n = peers
                        .iter()
                        .filter(|p| {
                            if f == "peers_sending_to_us" {
                                p.download_rate > 0
                            } else {
                                p.upload_rate > 0
                            }
                        })
                        .count();
                    n.into()
                }
                "webseeds_sending_to_us" => self
                    .client
                    .web_seeds(id)
                    .iter()
                    .filter(|w| w.download_rate > 0)
                    .count()
                    .into(),
                "max_connected_peers" | "peer_limit" => {
                    self.client.peer_limit(id).unwrap_or(0).into()
                }
                "added_date" => e.saved.added_date.into(),
                "done_date" => e.saved.done_date.into(),
                "activity_date" => e.saved.activity_date.into(),
                "start_date" => e.start_date.into(),
                "edit_date" => e.saved.added_date.into(),
                "manual_announce_time" => (-1).into(),
                "download_dir" => e.saved.download_dir.to_string_lossy().into(),
                "is_finished" => e.ratio_reached.into(),
                "is_private" => (st.private || meta.is_some_and(|m| m.private)).into(),
                "is_stalled" => st.stalled.into(),
                "queue_position" => e.saved.queue_position.into(),
                "labels" => json!(e.saved.labels),
                "piece_count" => st.num_pieces.into(),
                "piece_size" => meta.map_or(0, |m| m.piece_length).into(),
                "pieces" => match &pieces {
                    Some(b) => base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        b.as_bytes(),
                    )
                    .into(),
                    None => "".into(),
                },
                "file_count" => meta.map_or(0, |m| m.files.len()).into(),
                "files" => match meta {
                    Some(m) => {
                        let done = engine_files
                            .as_ref()
                            .map(|f| f.iter().map(|f| f.done).collect())
                            .unwrap_or_else(|| file_done(m));
                        Value::Array(
                            m.files
                                .iter()
                                .zip(done)
                                .map(|((name, len), done)| {
                                    json!({"name": name, "length": len, "bytes_completed": done})
                                })
                                .collect(),
                        )
                    }
                    None => json!([]),
                },
                "file_stats" => match &engine_files {
                    Some(files) => Value::Array(
                        files
                            .iter()
                            .map(|f| {
                                json!({
                                    "bytes_completed": f.done,
                                    "wanted": f.priority > 0,
                                    "priority": tr_priority(f.priority),
                                })
                            })
                            .collect(),
                    ),
                    None => json!([]),
                },
                "wanted" => json!(engine_files
                    .as_ref()
                    .map(|f| f
                        .iter()
                        .map(|f| u8::from(f.priority > 0))
                        .collect::<Vec<_>>())
                    .unwrap_or_default()),
                "priorities" => json!(engine_files
                    .as_ref()
                    .map(|f| f
                        .iter()
                        .map(|f| tr_priority(f.priority))
                        .collect::<Vec<_>>())
                    .unwrap_or_default()),
                "peers" => {
                    let n = f64::from(st.num_pieces.max(1));
                    Value::Array(
                        peers
                            .iter()
                            .filter(|p| p.established)
                            .map(|p| {
                                let mut flags = String::new();
                                if p.download_rate > 0 {
                                    flags.push('D');
                                } else if p.am_interested && p.peer_choking {
                                    flags.push('d');
                                }
                                if p.upload_rate > 0 {
                                    flags.push('U');
                                } else if p.peer_interested && p.am_choking {
                                    flags.push('u');
                                }
                                if p.encrypted {
                                    flags.push('E');
                                }
                                if !p.outgoing {
                                    flags.push('I');
                                }
                                let utp = p.transport == btcore_core::session::Transport::Utp;
                                if utp {
                                    flags.push('T');
                                }
                                json!({
                                    "address": p.addr.ip().to_string(),
                                    "port": p.addr.port(),
                                    "client_name": client_name(p.peer_id.as_ref().map(|i| i.0)),
                                    "flag_str": flags,
                                    "progress": f64::from(p.pieces) / n,
                                    "rate_to_client": p.download_rate,
                                    "rate_to_peer": p.upload_rate,
                                    "is_downloading_from": p.download_rate > 0,
                                    "is_uploading_to": p.upload_rate > 0,
                                    "is_encrypted": p.encrypted,
                                    "is_incoming": !p.outgoing,
                                    "is_utp": utp,
                                    "client_is_choked": p.peer_choking,
                                    "client_is_interested": p.am_interested,
                                    "peer_is_choked": p.am_choking,
                                    "peer_is_interested": p.peer_interested,
                                })
                            })
                            .collect(),
                    )
                }
                "trackers" | "tracker_stats" => {
                    let stats = f == "tracker_stats";
                    let mut list = Vec::new();
                    let mut last_tier = None;
                    for (n, t) in trackers.iter().enumerate() {
                        let host = t
                            .url
                            .split("://")
                            .nth(1)
                            .and_then(|r| r.split('/').next())
                            .unwrap_or("")
                            .to_string();
                        let scrape = t.url.replace("/announce", "/scrape");
                        let mut o = json!({
                            "id": n,
                            "tier": t.tier,
                            "announce": t.url,
                            "scrape": scrape,
                            "sitename": host.split(':').next().unwrap_or(""),
                        });
                        if stats {
                            // The first tracker of a tier is the one asked; the rest
                            // are its backups.
                            let backup = last_tier == Some(t.tier);
                            let extra = json!({
                                "host": host,
                                "is_backup": backup,
                                "announce_state": if t.announcing { 3 } else if t.next_announce.is_some() && !backup { 1 } else { 0 },
                                "has_announced": t.last_announce.is_some(),
                                "last_announce_time": t.last_announce.unwrap_or(0),
                                "last_announce_start_time": t.last_announce.unwrap_or(0),
                                "last_announce_succeeded": t.last_announce_ok,
                                "last_announce_timed_out": t.last_result.contains("no answer in time"),
                                "last_announce_result": if t.last_announce_ok && t.last_result.is_empty() { "Success".to_string() } else { t.last_result.clone() },
                                "last_announce_peer_count": t.last_peers,
                                "next_announce_time": if backup { 0 } else { t.next_announce.unwrap_or(0) },
                                "seeder_count": t.seeders.map_or(-1, i64::from),
                                "leecher_count": t.leechers.map_or(-1, i64::from),
                                "download_count": t.downloaded.map_or(-1, i64::from),
                                "has_scraped": false,
                                "scrape_state": 0,
                                "last_scrape_time": 0,
                                "last_scrape_start_time": 0,
                                "last_scrape_succeeded": false,
                                "last_scrape_timed_out": false,
                                "last_scrape_result": "",
                                "next_scrape_time": 0,
                            });
                            if let (Value::Object(o), Value::Object(x)) = (&mut o, extra) {
                                o.extend(x);
                            }
                        }
                        last_tier = Some(t.tier);
                        list.push(o);
                    }
                    Value::Array(list)
                }
                "tracker_list" => {
                    let mut out = String::new();
                    let mut last_tier = None;
                    for t in &trackers {
                        if last_tier.is_some() {
                            out += if last_tier == Some(t.tier) {
                                "\n"
                            } else {
                                "\n\n"
                            };
                        }
                        out += &t.url;
                        last_tier = Some(t.tier);
                    }
                    out.into()
                }
                "peers_from" => {
                    // Connected peers by where we heard of them; a magnet link's
                    // own peers count as remembered ones (Transmission has no
                    // bucket for them).
                    let mut n = [0u32; 6];
                    for p in peers.iter().filter(|p| p.established) {
                        n[match p.origin {
                            PeerOrigin::Incoming => 0,
                            PeerOrigin::Tracker => 1,
                            PeerOrigin::Dht => 2,
                            PeerOrigin::Pex => 3,
                            PeerOrigin::Lsd => 4,
                            _ => 5,
                        }] += 1;
                    }
                    json!({
                        "from_incoming": n[0], "from_tracker": n[1], "from_dht": n[2],
                        "from_pex": n[3], "from_lpd": n[4], "from_cache": n[5], "from_ltep": 0,
                    })
                }
                "magnet_link" => {
                    let mut m = format!("magnet:?xt=urn:btih:{}", e.saved.hash);
                    let name = self.name_of_view(view, e);
                    m += "&dn=";
                    m += &percent_encode(&name);
                    for t in &trackers {
                        m += "&tr=";
                        m += &percent_encode(&t.url);
                    }
                    m.into()
                }
                "comment" => meta.map_or(String::new(), |m| m.comment.clone()).into(),
                "creator" => meta.map_or(String::new(), |m| m.creator.clone()).into(),
                "date_created" => meta.map_or(0, |m| m.date_created).into(),
                "torrent_file" => self
                    .store
                    .torrent_file(&e.saved.hash)
                    .to_string_lossy()
                    .into(),
                "seed_ratio_limit" => if e.saved.ratio_mode == 1 {
                    e.saved.ratio_limit
                } else {
                    2.0
                }
                .into(),
                "seed_ratio_mode" => e.saved.ratio_mode.into(),
                "seed_idle_mode" => e.saved.idle_mode.into(),
                "seed_idle_limit" => e.saved.idle_limit.into(),
                "bandwidth_priority" => 0.into(),
                "download_limit" => e.saved.download_limit.unwrap_or(0).into(),
                "upload_limit" => e.saved.upload_limit.unwrap_or(0).into(),
                "download_limited" => e.saved.download_limit.is_some().into(),
                "upload_limited" => e.saved.upload_limit.is_some().into(),
                "honors_session_limits" => true.into(),
                "sequential_download" => e.saved.sequential.into(),
                "seconds_downloading" => e.seconds_in(Phase::Downloading).into(),
                "seconds_seeding" => e.seconds_in(Phase::Seeding).into(),
                "webseeds" => self
                    .client
                    .web_seeds(id)
                    .into_iter()
                    .map(|w| w.url)
                    .collect::<Vec<_>>()
                    .into(),
                "group" | "primary_mime_type" => "".into(),
                _ => continue,
            };
            out.insert(f.clone(), v);
        }
        out
    }

    fn name_of_view(&self, view: &TorrentView, e: &Entry) -> String {
        e.meta
            .as_ref()
            .map_or_else(|| view.name.clone(), |m| m.name.clone())
    }

    /// After a turn of the loop: events, totals, the state file.
    fn housekeeping(&mut self, force_save: bool, last_save: &mut Instant) {
        // Port mapping outcomes, as status lines on stderr (the journal under systemd).
        for line in self.client.take_port_mapping_lines() {
            eprintln!("btcore: {line}");
        }
        for ev in self.client.take_events() {
            match ev {
                Event::TorrentFinished(id) => {
                    if let Some(e) = self.torrents.get_mut(&id) {
                        if e.saved.done_date == 0 {
                            e.saved.done_date = methods::now_unix();
                        }
                        e.last_active = Instant::now();
                        self.dirty = true;
                    }
                    self.move_when_done(id);
                }
                Event::RatioReached(id) | Event::IdleLimitReached(id) => {
                    if let Some(e) = self.torrents.get_mut(&id) {
                        e.ratio_reached = true;
                        e.saved.paused = true;
                        e.last_active = Instant::now();
                        self.dirty = true;
                    }
                }
                Event::MetadataReceived(id) => {
                    self.metadata_arrived(id);
                }
                Event::DiskFailed(id, _) => {
                    if let Some(e) = self.torrents.get_mut(&id) {
                        e.last_active = Instant::now();
                    }
                }
                _ => {}
            }
        }
        for v in self.client.torrents() {
            if let Some(e) = self.torrents.get_mut(&v.id) {
                let st = &v.status;
                let now = (st.uploaded, st.downloaded);
                if now != e.seen {
                    e.seen = now;
                    e.last_active = Instant::now();
                    e.saved.activity_date = methods::now_unix();
                }
                let runs = !(st.paused || st.queued || e.saved.paused) && v.checking.is_none();
                let phase = match st.state {
                    TorrentState::Downloading | TorrentState::FetchingMetadata
                        if runs && !st.finished =>
                    {
                        Phase::Downloading
                    }
                    TorrentState::Downloading | TorrentState::Seeding if runs => Phase::Seeding,
                    _ => Phase::Idle,
                };
                if phase != e.phase.0 || force_save || e.phase.1.elapsed() >= TIMES_SAVE_EVERY {
                    e.close_phase();
                    e.phase.0 = phase;
                    self.dirty = true;
                }
            }
        }
        if force_save || last_save.elapsed() >= SAVE_EVERY {
            self.save(true);
            *last_save = Instant::now();
        } else if self.dirty {
            self.save(false);
        }
        // After torrents came or went, the allocator gives back the free pages the
        // requests left (their JSON, base64 and metainfo copies): glibc keeps them
        // otherwise, a few MiB after a thousand adds.
        if self.trim_pending {
            self.trim_pending = false;
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only walks the allocator's own free lists.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    /// Writes what changed. The byte totals, which change all the time, are written
    /// with `totals` (every [`SAVE_EVERY`] and at exit); a change of settings is
    /// written at once, with the totals as last written.
    fn save(&mut self, totals: bool) {
        if totals {
            for e in self.torrents.values_mut() {
                e.written_totals = (e.saved.uploaded + e.seen.0, e.saved.downloaded + e.seen.1);
                e.written_activity = e.saved.activity_date;
            }
        }
        let list: Vec<Saved> = self
            .torrents
            .values()
            .map(|e| {
                let mut s = e.saved.clone();
                (s.uploaded, s.downloaded) = e.written_totals;
                s.activity_date = e.written_activity;
                s
            })
            .collect();
        let mut settings = self.settings.clone();
        let secs = self.started.elapsed().as_secs();
        let (ul, dl): (u64, u64) = self
            .torrents
            .values()
            .fold((0, 0), |a, e| (a.0 + e.seen.0, a.1 + e.seen.1));
        settings.insert(
            "cumulative".into(),
            json!([
                self.totals.0 + ul,
                self.totals.1 + dl,
                self.totals.2 + self.files_added,
                self.totals.3 + secs,
                self.totals.4 + 1
            ]),
        );
        match self.store.save(&list, &settings) {
            Ok(()) => self.dirty = false,
            Err(e) => log::error!("saving the daemon's state: {e}"),
        }
    }

    /// Adds the `.torrent` files of the watch folder that stopped growing.
    fn scan_watch(&mut self, dir: &Path, sizes: &mut BTreeMap<PathBuf, (u64, Instant)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut seen = std::collections::HashSet::new();
        // Only `.torrent` files count toward the cap: `.added` and `.invalid` ones
        // piling up cannot hide new ones.
        let torrents = rd
            .flatten()
            .filter(|e| e.path().extension().and_then(|e| e.to_str()) == Some("torrent"))
            .take(10_000);
        for ent in torrents {
            let p = ent.path();
            let Ok(meta) = ent.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            seen.insert(p.clone());
            let len = meta.len();
            let entry = sizes.entry(p.clone()).or_insert((len, Instant::now()));
            if entry.0 != len {
                *entry = (len, Instant::now());
                continue;
            }
            if entry.1.elapsed() < WATCH_SETTLE {
                continue;
            }
            sizes.remove(&p);
            let result = if len > MAX_WATCHED_FILE {
                Err(format!("larger than {MAX_WATCHED_FILE} bytes"))
            } else {
                read_watched(&p)
                    .map_err(|e| e.to_string())
                    .and_then(|b| self.add_torrent_bytes(&b, None, false, Vec::new()))
            };
            let suffix = match &result {
                Ok(_) if self.args.trash_original_torrent_files => {
                    if let Err(e) = std::fs::remove_file(&p) {
                        log::warn!("watch: deleting {}: {e}", p.display());
                    }
                    continue;
                }
                Ok(_) => "added",
                Err(e) => {
                    log::warn!("watch: {}: {e}", p.display());
                    "invalid"
                }
            };
            let mut to = p.clone().into_os_string();
            to.push(".");
            to.push(suffix);
            if let Err(e) = std::fs::rename(&p, &to) {
                log::warn!("watch: renaming {}: {e}", p.display());
            }
        }
        sizes.retain(|p, _| seen.contains(p));
    }
}

/// A watched file's bytes, read so that swapping it for something else after it was
/// looked at gains nothing: a symlink is not followed, a FIFO or device is not
/// waited on or read, and no more than [`MAX_WATCHED_FILE`] bytes are read.
fn read_watched(p: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut out = Vec::new();
    f.take(MAX_WATCHED_FILE + 1).read_to_end(&mut out)?;
    if out.len() as u64 > MAX_WATCHED_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_WATCHED_FILE} bytes"
        )));
    }
    Ok(out)
}

fn free_bytes(dir: &Path) -> u64 {
    methods::statvfs(&dir.to_string_lossy()).map_or(0, |(free, _)| free)
}

/// Transmission's `error` and `errorString` from the trackers: a tracker error (2)
/// when every tracker that was asked failed its last announce (its text is the
/// latest failure's), a warning (1) when the latest answer carried a `warning
/// message`; else none.
fn tracker_error(trackers: &[btcore_host::client::TrackerInfo]) -> (u8, String) {
    let asked = || trackers.iter().filter(|t| t.last_announce.is_some());
    let Some(latest) = asked().max_by_key(|t| t.last_announce) else {
        return (0, String::new());
    };
    if asked().all(|t| !t.last_announce_ok) {
        (2, latest.last_result.clone())
    } else if latest.last_announce_ok && !latest.last_result.is_empty() {
        (1, latest.last_result.clone())
    } else {
        (0, String::new())
    }
}

/// Transmission's priority (-1 low, 0 normal, 1 high) of an engine priority (1..7).
pub fn tr_priority(p: u8) -> i64 {
    match p {
        0 | 4 => 0,
        1..=3 => -1,
        _ => 1,
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

/// A client's name from its peer id (Azureus style `-XX1234-`).
fn client_name(id: Option<[u8; 20]>) -> String {
    let Some(id) = id else {
        return String::new();
    };
    if id[0] != b'-' || id[7] != b'-' {
        return String::new();
    }
    let code = &id[1..3];
    let v = &id[3..7];
    let name = match code {
        b"LT" => "libtorrent",
        b"TR" => "Transmission",
        b"qB" => "qBittorrent",
        b"UT" => "\u{b5}Torrent",
        b"DE" => "Deluge",
        b"AZ" => "Vuze",
        b"BT" => "BitTorrent",
        b"BC" => "btcore",
        b"lt" => "libTorrent (rakshasa)",
        _ => return String::from_utf8_lossy(&id[1..7]).into_owned(),
    };
    let ver: Vec<String> = v
        .iter()
        .map(|c| match c {
            b'0'..=b'9' => (c - b'0').to_string(),
            b'A'..=b'Z' => (c - b'A' + 10).to_string(),
            _ => "?".into(),
        })
        .collect();
    format!("{name} {}", ver.join("."))
}

/// Runs the daemon until a signal or `session-close`.
pub fn run(args: DaemonArgs) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("btcore daemon: {msg}");
        ExitCode::from(crate::EXIT_IO)
    };
    if args.rpc_auth.is_none() && !args.rpc.ip().is_loopback() && !args.rpc_allow_unauthenticated {
        return fail(format!(
            "refusing to serve the RPC on {} without --rpc-auth: anyone who reaches it \
             could control the daemon (give --rpc-allow-unauthenticated to do it anyway)",
            args.rpc
        ));
    }
    if let Some(a) = &args.rpc_auth {
        if !a.contains(':') {
            return fail("--rpc-auth takes USER:PASSWORD".into());
        }
    }
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| args.download_dir.join(".btcore"));
    if let Err(e) = std::fs::create_dir_all(&args.download_dir) {
        return fail(format!("{}: {e}", args.download_dir.display()));
    }
    // The incomplete and watch folders too (a service that starts the daemon as its own
    // user leaves the folders inside the download folder to it).
    for d in [&args.incomplete_dir, &args.watch].into_iter().flatten() {
        if let Err(e) = std::fs::create_dir_all(d) {
            log::warn!("{}: {e}", d.display());
        }
    }
    let mut store = match Store::open(&state_dir) {
        Ok(s) => s,
        Err(e) => return fail(format!("{}: {e}", state_dir.display())),
    };
    let (saved, mut settings) = match store.load() {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let mut dht = None;
    #[cfg(feature = "dht")]
    if !args.no_dht {
        dht = Some(btcore_host::dht::DhtOptions {
            state_dir: Some(state_dir.clone()),
            low_memory: args.low_memory,
            ..btcore_host::dht::DhtOptions::default()
        });
    }
    #[cfg(not(feature = "dht"))]
    let _ = &mut dht;
    let listen = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), args.port);
    let mut opts = ClientOptions {
        listen,
        save_dir: args.download_dir.clone(),
        state_dir: Some(state_dir.clone()),
        low_memory: args.low_memory,
        max_peers: args.max_peers.unwrap_or(0),
        max_connections: args.max_connections.unwrap_or(0),
        download_limit: args.download_limit * 1024,
        upload_limit: args.upload_limit * 1024,
        encryption: args.encryption,
        transport: args.transport,
        dht,
        port_mapping: (!args.no_port_mapping).then(btcore_host::portmap::PortMapOptions::default),
        ..ClientOptions::default()
    };
    // What session-set changed in an earlier run wins over the flags.
    if let Err(e) = methods::settings_into_opts(&settings, &mut opts, &state_dir) {
        log::warn!("saved settings: {e}");
    }
    let client = match Client::new(opts.clone()) {
        Ok(c) => c,
        Err(e) => return fail(format!("listening on {listen}: {e}")),
    };
    let stop = client.stop_flag();
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed));
    }
    let session_id = {
        let bytes: [u8; 24] = btcore_host::os::random_array();
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let totals = settings
        .remove("cumulative")
        .and_then(|v| {
            let a = v.as_array()?;
            let n = |i: usize| a.get(i).and_then(Value::as_u64).unwrap_or(0);
            Some((n(0), n(1), n(2), n(3), n(4)))
        })
        .unwrap_or_default();
    let download_dir = settings
        .get("download_dir")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .unwrap_or_else(|| args.download_dir.clone());
    let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<http::Job>();
    let limits = http::HttpLimits {
        max_body: if args.low_memory { 4 << 20 } else { 16 << 20 },
        max_page_queued: if args.low_memory { 4 << 20 } else { 16 << 20 },
        ..http::HttpLimits::default()
    };
    let access = http::Access {
        credentials: args.rpc_auth.clone(),
        host_whitelist: if args.rpc_host_whitelist.iter().any(|h| h == "*") {
            None
        } else {
            Some(args.rpc_host_whitelist.clone())
        },
    };
    let (server, replies) = match http::Server::bind(
        args.rpc,
        limits,
        access,
        session_id.clone(),
        jobs_tx,
        client.waker(),
    ) {
        Ok(x) => x,
        Err(e) => return fail(format!("RPC on {}: {e}", args.rpc)),
    };
    let server = match &args.web_root {
        Some(dir) => match web::Web::dir(dir) {
            Ok(w) => server.with_web(w),
            Err(e) => return fail(e),
        },
        None => server,
    };
    let rpc_addr = server.local_addr().unwrap_or(args.rpc);
    let mut d = Daemon {
        client,
        store,
        torrents: BTreeMap::new(),
        removed: Vec::new(),
        download_dir,
        settings,
        started: Instant::now(),
        dirty: false,
        close_requested: false,
        files_added: 0,
        totals,
        session_id,
        fetched: HashMap::new(),
        trim_pending: true,
        rpc_addr,
        config_dir: state_dir.clone(),
        args: args.clone(),
        opts,
    };
    // The saved torrents, in their queue order, then any added too late to be listed.
    let mut saved = saved;
    let orphans = d.store.orphans(&saved, &d.download_dir);
    saved.extend(orphans);
    saved.sort_by_key(|s| s.queue_position);
    for s in saved {
        let r = match &s.magnet {
            Some(uri) => d
                .client
                .add_magnet(uri, Some(s.data_dir.as_ref().unwrap_or(&s.download_dir)))
                .map(|id| (id, None))
                .map_err(|e| e.to_string()),
            None => std::fs::read(d.store.torrent_file(&s.hash))
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    let meta = Meta::parse(&b)?;
                    d.client
                        .add_torrent_file(&b, Some(s.data_dir.as_ref().unwrap_or(&s.download_dir)))
                        .map(|id| (id, Some(meta)))
                        .map_err(|e| e.to_string())
                }),
        };
        match r {
            Ok((id, meta)) => {
                d.insert(id, s, meta);
                d.apply_torrent(id);
            }
            Err(e) => log::error!("restoring {}: {e}", s.hash),
        }
    }
    d.dirty = false;
    let srv_stop = Arc::new(AtomicBool::new(false));
    let http_thread = {
        let srv_stop = srv_stop.clone();
        std::thread::Builder::new()
            .name("btcore-rpc".into())
            .spawn(move || server.run(srv_stop))
    };
    let http_thread = match http_thread {
        Ok(h) => h,
        Err(e) => return fail(format!("starting the RPC thread: {e}")),
    };
    eprintln!(
        "btcore daemon: RPC on http://{rpc_addr}{}, peers on port {}, {} torrents",
        http::RPC_PATH,
        d.client.local_addr().port(),
        d.torrents.len()
    );
    let (fetch_tx, fetch_rx) = std::sync::mpsc::channel::<Fetched>();
    let fetches = Arc::new(AtomicUsize::new(0));
    let fetch_limit = if args.low_memory { 4 << 20 } else { 16 << 20 };
    let mut last_save = Instant::now();
    let mut last_watch = Instant::now() - WATCH_EVERY;
    let mut watch_sizes = BTreeMap::new();
    let mut last_housekeeping = Instant::now();
    while !stop.load(Ordering::Relaxed) && !d.close_requested {
        if let Err(e) = d.client.run_once(Duration::from_millis(500)) {
            log::error!("loop: {e}");
            std::thread::sleep(Duration::from_millis(100));
        }
        while let Ok(job) = jobs_rx.try_recv() {
            match methods::call_or_fetch(&mut d, &job.body) {
                methods::Outcome::Answer(body) => replies.send(http::Answer {
                    conn: job.conn,
                    generation: job.generation,
                    body,
                }),
                methods::Outcome::Fetch(url) => {
                    let result = if fetches.load(Ordering::Relaxed) >= MAX_FETCHES {
                        Some(Err(format!(
                            "{MAX_FETCHES} torrent files are being downloaded already"
                        )))
                    } else {
                        None
                    };
                    match result {
                        Some(r) => {
                            d.fetched.insert(url.clone(), r);
                            let body = methods::call(&mut d, &job.body);
                            d.fetched.remove(&url);
                            replies.send(http::Answer {
                                conn: job.conn,
                                generation: job.generation,
                                body,
                            });
                        }
                        None => spawn_fetch(
                            job,
                            url,
                            fetch_limit,
                            &fetches,
                            &fetch_tx,
                            d.client.waker(),
                        ),
                    }
                }
            }
        }
        // Downloads done: their requests are answered now.
        while let Ok((job, url, result)) = fetch_rx.try_recv() {
            d.fetched.insert(url.clone(), result);
            let body = methods::call(&mut d, &job.body);
            d.fetched.remove(&url);
            replies.send(http::Answer {
                conn: job.conn,
                generation: job.generation,
                body,
            });
        }
        if last_housekeeping.elapsed() >= HOUSEKEEPING_EVERY || d.dirty {
            d.housekeeping(false, &mut last_save);
            last_housekeeping = Instant::now();
        }
        if let Some(w) = args.watch.clone() {
            if last_watch.elapsed() >= WATCH_EVERY {
                d.scan_watch(&w, &mut watch_sizes);
                last_watch = Instant::now();
            }
        }
    }
    d.housekeeping(true, &mut last_save);
    // Release: the answers sent before (session-close's) are there when the HTTP
    // thread sees the flag.
    srv_stop.store(true, Ordering::Release);
    let _ = replies.waker.wake();
    d.client.shutdown();
    let _ = http_thread.join();
    eprintln!("btcore daemon: stopped");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::{read_watched, MAX_WATCHED_FILE};

    /// What a watched file may be swapped for is refused: a symlink (to a file or to
    /// an endless device), a FIFO (never waited on), a file past the cap.
    #[test]
    fn a_watched_file_is_read_only_as_a_bounded_regular_file() {
        let dir = std::env::temp_dir().join(format!("btcore-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let plain = dir.join("a.torrent");
        std::fs::write(&plain, b"d4:infod4:name1:aee").expect("write");
        assert_eq!(read_watched(&plain).expect("read"), b"d4:infod4:name1:aee");
        let link = dir.join("zero.torrent");
        std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
        assert!(read_watched(&link).is_err());
        let to_file = dir.join("link.torrent");
        std::os::unix::fs::symlink(&plain, &to_file).expect("symlink");
        assert!(read_watched(&to_file).is_err());
        let fifo = dir.join("fifo.torrent");
        let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).expect("path");
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(read_watched(&fifo).is_err());
        let big = dir.join("big.torrent");
        std::fs::File::create(&big)
            .and_then(|f| f.set_len(MAX_WATCHED_FILE + 1))
            .expect("sparse file");
        assert!(read_watched(&big).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
