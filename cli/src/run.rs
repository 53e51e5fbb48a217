//! The long-running commands: download, seed, create, demo.

use crate::display::{self, Mode};
use btcore_core::session::{Event, TorrentState};
use btcore_host::client::{Client, ClientOptions, TorrentView, DEFAULT_DISK_THREADS};
use btcore_host::read_torrent_file;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const EXIT_INVALID: u8 = 3;
const EXIT_IO: u8 = 4;
const EXIT_STOPPED: u8 = 5;

/// Options of `download` and `seed`.
pub struct Opts {
    pub save_dir: PathBuf,
    pub listen: SocketAddr,
    pub peers: Vec<SocketAddr>,
    pub max_peers: usize,
    pub max_connections: usize,
    pub download_limit: u64,
    pub upload_limit: u64,
    pub low_memory: bool,
    /// Disk worker threads.
    pub disk_threads: usize,
    /// Most bytes received and not yet written (0: the profile's default).
    pub max_disk_queue: usize,
    pub trackers: bool,
    pub state_dir: Option<PathBuf>,
    pub timeout: Option<Duration>,
    pub mode: Option<Mode>,
    pub dht: Option<btcore_host::dht::DhtOptions>,
    pub lsd: bool,
    pub encryption: btcore_host::encryption::Encryption,
    pub transport: btcore_host::client::TransportPolicy,
    /// Ask the gateway to forward the ports (PCP, NAT-PMP).
    pub port_mapping: bool,
    /// Peer exchange (BEP 11) with peers of public torrents.
    pub pex: bool,
}

fn fail(code: u8, msg: std::fmt::Arguments<'_>) -> ExitCode {
    eprintln!("btcore: {msg}");
    ExitCode::from(code)
}

fn client(o: &Opts) -> Result<Client, ExitCode> {
    if let Err(e) = std::fs::create_dir_all(&o.save_dir) {
        return Err(fail(EXIT_IO, format_args!("{}: {e}", o.save_dir.display())));
    }
    let state_dir = o
        .state_dir
        .clone()
        .unwrap_or_else(|| o.save_dir.join(".btcore"));
    if let Err(e) = std::fs::create_dir_all(&state_dir) {
        return Err(fail(EXIT_IO, format_args!("{}: {e}", state_dir.display())));
    }
    let dht = o.dht.clone().map(|mut d| {
        d.state_dir = Some(state_dir.clone());
        d
    });
    let c = Client::new(ClientOptions {
        dht,
        lsd: o.lsd,
        encryption: o.encryption,
        transport: o.transport,
        port_mapping: o
            .port_mapping
            .then(btcore_host::portmap::PortMapOptions::default),
        listen: o.listen,
        save_dir: o.save_dir.clone(),
        state_dir: Some(state_dir),
        low_memory: o.low_memory,
        disk_threads: o.disk_threads,
        max_disk_queue: o.max_disk_queue,
        max_peers: o.max_peers,
        max_connections: o.max_connections,
        use_trackers: o.trackers,
        pex: o.pex,
        download_limit: o.download_limit,
        upload_limit: o.upload_limit,
        ..ClientOptions::default()
    })
    .map_err(|e| fail(EXIT_IO, format_args!("listening on {}: {e}", o.listen)))?;
    let stop = c.stop_flag();
    let _ = ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed));
    Ok(c)
}

/// Shows progress once a second until `done`, a stop or the timeout.
fn watch(c: &mut Client, o: &Opts, mut done: impl FnMut(&[TorrentView]) -> bool) -> bool {
    let start = Instant::now();
    let mut last_print = Instant::now() - Duration::from_secs(2);
    let mut lines = 0;
    let mut out = std::io::stdout();
    let mut reported = std::collections::HashSet::new();
    // Views cost a status per torrent: taken when something may have changed a state,
    // and at least every 250 ms, not on every turn of the loop.
    let mut views = c.torrents();
    let mut refreshed = Instant::now();
    loop {
        let events = c.take_events();
        let changed = events.iter().any(|e| {
            !matches!(
                e,
                Event::PieceVerified(..) | Event::PeerConnected(..) | Event::HashFailed(..)
            )
        });
        if changed || refreshed.elapsed() >= Duration::from_millis(250) {
            views = c.torrents();
            refreshed = Instant::now();
        }
        // Port mapping outcomes: what was mapped where, what failed (status lines).
        for line in c.take_port_mapping_lines() {
            eprintln!("btcore: {line}");
        }
        for e in events {
            match e {
                Event::TorrentFinished(id) => log::info!("torrent {id:?} complete"),
                Event::PeerBanned(_, a) => log::warn!("banned {a} for bad data"),
                Event::DiskFailed(id, e) if reported.insert(id) => match c.disk_error(id) {
                    // The file and the system's words: "a/b: Not a directory (os error 20)".
                    Some(d) => log::error!("{}: disk error: {d}", name_of(&views, id)),
                    None => log::error!(
                        "{}: disk error: {}",
                        name_of(&views, id),
                        disk_error_text(e)
                    ),
                },
                Event::TrackerError {
                    torrent,
                    tracker,
                    message,
                    ..
                } => log::warn!("{}: tracker {tracker}: {message}", name_of(&views, torrent)),
                Event::TrackerWarning {
                    torrent,
                    tracker,
                    message,
                    ..
                } => log::warn!(
                    "{}: tracker {tracker} warns: {message}",
                    name_of(&views, torrent)
                ),
                _ => {}
            }
        }
        let finished = done(&views);
        if let Some(mode) = o.mode {
            if finished || last_print.elapsed() >= Duration::from_secs(1) {
                let _ = out.write_all(display::render(&views, mode, lines).as_bytes());
                let _ = out.flush();
                lines = views.len();
                last_print = Instant::now();
            }
        }
        if finished {
            return true;
        }
        if c.stop_flag().load(Ordering::Relaxed) || o.timeout.is_some_and(|t| start.elapsed() >= t)
        {
            return false;
        }
        if let Err(e) = c.run_once(Duration::from_millis(200)) {
            log::error!("event loop: {e}");
            return false;
        }
    }
}

fn name_of(views: &[TorrentView], id: btcore_core::session::TorrentId) -> String {
    views
        .iter()
        .find(|v| v.id == id)
        .map_or_else(|| format!("{id:?}"), |v| v.name.clone())
}

fn disk_error_text(e: btcore_core::session::DiskError) -> &'static str {
    match e {
        btcore_core::session::DiskError::NoSpace => "no space left on device",
        _ => "input/output error",
    }
}

pub fn download(torrents: &[String], o: &Opts, keep_seeding: bool) -> ExitCode {
    let mut c = match client(o) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for t in torrents {
        let added = if t.starts_with("magnet:") {
            c.add_magnet(t, None)
        } else {
            match read_torrent_file(Path::new(t)) {
                Ok(bytes) => c.add_torrent_file(&bytes, None),
                Err(e) => return fail(EXIT_IO, format_args!("{t}: {e}")),
            }
        };
        match added {
            Ok(id) => {
                for p in &o.peers {
                    c.add_peer(id, *p);
                }
            }
            Err(btcore_host::client::ClientError::Io(e)) => {
                return fail(EXIT_IO, format_args!("{t}: {e}"))
            }
            Err(btcore_host::client::ClientError::Storage(e)) => {
                return fail(EXIT_IO, format_args!("{t}: {e}"))
            }
            Err(e) => return fail(EXIT_INVALID, format_args!("{t}: {e}")),
        }
    }
    // Done when every torrent is complete, or stopped by a disk error (then exit 4).
    let complete = watch(&mut c, o, |v| {
        let settled = v
            .iter()
            .all(|t| matches!(t.status.state, TorrentState::Seeding | TorrentState::Error));
        let failed = v.iter().any(|t| t.status.state == TorrentState::Error);
        (settled && (!keep_seeding || failed))
            || v.iter().all(|t| t.status.state == TorrentState::Error)
    });
    let errors = c
        .torrents()
        .iter()
        .any(|t| t.status.state == TorrentState::Error);
    report_web_seeds(&c);
    c.shutdown();
    if errors {
        return fail(
            EXIT_IO,
            format_args!(
                "a torrent stopped on a disk error in {}",
                o.save_dir.display()
            ),
        );
    }
    if complete || (keep_seeding && c.all_complete()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_STOPPED)
    }
}

/// What each web seed did (BEP 19): its URL, state, bytes and last error.
fn report_web_seeds(c: &Client) {
    for v in c.torrents() {
        for w in c.web_seeds(v.id) {
            let error = w
                .last_error
                .map_or_else(String::new, |e| format!(", last error: {e}"));
            eprintln!(
                "btcore: {}: web seed {}: {}, {} bytes, {} failures{error}",
                v.name,
                w.url,
                w.state.as_str(),
                w.downloaded,
                w.failures
            );
        }
    }
}

pub fn seed(torrent: &Path, o: &Opts) -> ExitCode {
    let bytes = match read_torrent_file(torrent) {
        Ok(b) => b,
        Err(e) => return fail(EXIT_IO, format_args!("{}: {e}", torrent.display())),
    };
    let mut c = match client(o) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let id = match c.add_torrent_file(&bytes, None) {
        Ok(id) => id,
        Err(e) => return fail(EXIT_INVALID, format_args!("{}: {e}", torrent.display())),
    };
    // The data is checked first, off the loop (the display shows how far).
    if !watch(&mut c, o, |v| v.iter().all(|t| t.checking.is_none())) {
        c.shutdown();
        return ExitCode::from(EXIT_STOPPED);
    }
    // The data is checked: say so (scripts wait for this line).
    eprintln!(
        "btcore: seeding {} on {}",
        torrent.display(),
        c.local_addr()
    );
    for p in &o.peers {
        c.add_peer(id, *p);
    }
    let incomplete = c
        .torrents()
        .iter()
        .any(|t| t.status.state != TorrentState::Seeding);
    if incomplete {
        log::warn!(
            "the data in {} is incomplete: seeding what verifies, downloading the rest",
            o.save_dir.display()
        );
    }
    watch(&mut c, o, |_| false);
    c.shutdown();
    ExitCode::SUCCESS
}

#[allow(clippy::too_many_arguments)] // one per command-line option
pub fn create(
    path: &Path,
    trackers: Vec<String>,
    web_seeds: Vec<String>,
    output: &Path,
    private: bool,
    piece_kib: Option<u32>,
    comment: Option<String>,
    format: btcore_host::create::Format,
) -> ExitCode {
    use btcore_host::create::{create_torrent, CreateOptions};
    let opts = CreateOptions {
        format,
        trackers: trackers.into_iter().map(|t| vec![t]).collect(),
        web_seeds,
        private,
        piece_length: piece_kib.map(|k| k * 1024),
        comment,
        ..CreateOptions::default()
    };
    match create_torrent(path, &opts) {
        Ok(bytes) => {
            if let Err(e) = std::fs::write(output, &bytes) {
                return fail(EXIT_IO, format_args!("{}: {e}", output.display()));
            }
            let mut tokens = Vec::new();
            if let Ok(m) = btcore_core::metainfo::Metainfo::parse_vec(
                &bytes,
                &mut tokens,
                &btcore_core::metainfo::Limits::default(),
            ) {
                outln!("{}", output.display());
                outln!("{}", crate::info::magnet_of(&m));
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_IO, format_args!("{}: {e}", path.display())),
    }
}

/// Deterministic demo content.
fn payload(len: usize) -> Vec<u8> {
    let mut r = btcore_core::rng::Rng::new(0x5eed);
    let mut v = vec![0u8; len];
    for chunk in v.chunks_mut(8) {
        let x = r.next_u64().to_le_bytes();
        chunk.copy_from_slice(&x[..chunk.len()]);
    }
    v
}

pub fn demo(leechers: usize, size_mib: u64, mode: Option<Mode>) -> ExitCode {
    let base = std::env::temp_dir().join(format!("btcore-demo-{}", std::process::id()));
    let seed_dir = base.join("seed");
    if let Err(e) = std::fs::create_dir_all(&seed_dir) {
        return fail(EXIT_IO, format_args!("{}: {e}", seed_dir.display()));
    }
    let data = payload((size_mib * 1024 * 1024) as usize);
    let file = seed_dir.join("demo.bin");
    if let Err(e) = std::fs::write(&file, &data) {
        return fail(EXIT_IO, format_args!("{}: {e}", file.display()));
    }
    let opts = btcore_host::create::CreateOptions {
        creation_date: Some(0),
        ..Default::default()
    };
    let torrent = match btcore_host::create::create_torrent(&file, &opts) {
        Ok(t) => t,
        Err(e) => return fail(EXIT_IO, format_args!("{e}")),
    };
    outln!(
        "btcore demo: 1 seeder and {leechers} leechers on 127.0.0.1, {size_mib} MiB payload, in {}",
        base.display()
    );
    let local = |dir: PathBuf| ClientOptions {
        listen: "127.0.0.1:0".parse().expect("address"),
        save_dir: dir,
        state_dir: None,
        use_trackers: false,
        disk_threads: DEFAULT_DISK_THREADS,
        ..ClientOptions::default()
    };
    let mut seeder = match Client::new(local(seed_dir.clone())) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_IO, format_args!("{e}")),
    };
    if let Err(e) = seeder.add_torrent_file(&torrent, None) {
        return fail(EXIT_IO, format_args!("seeder: {e}"));
    }
    // The seeder checks its payload (off its loop) before the leechers come.
    let checking = Instant::now();
    while seeder.torrents().iter().any(|t| t.checking.is_some()) {
        if checking.elapsed() > Duration::from_secs(600) {
            return fail(
                EXIT_IO,
                format_args!("seeder: the check of its data did not end"),
            );
        }
        let _ = seeder.run_once(Duration::from_millis(20));
    }
    let mut clients = vec![seeder];
    for i in 0..leechers {
        let dir = base.join(format!("leecher-{}", i + 1));
        let mut c = match Client::new(local(dir)) {
            Ok(c) => c,
            Err(e) => return fail(EXIT_IO, format_args!("{e}")),
        };
        if let Err(e) = c.add_torrent_file(&torrent, None) {
            return fail(EXIT_IO, format_args!("leecher: {e}"));
        }
        clients.push(c);
    }
    // Everyone knows the seeder and the leechers before them (a tracker's job).
    let addrs: Vec<SocketAddr> = clients.iter().map(Client::local_addr).collect();
    for (i, c) in clients.iter_mut().enumerate().skip(1) {
        let id = c.torrents()[0].id;
        for a in &addrs[..i] {
            c.add_peer(id, *a);
        }
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let _ = ctrlc::set_handler(move || s2.store(true, Ordering::Relaxed));
    let start = Instant::now();
    let mut last = Instant::now() - Duration::from_secs(2);
    let mut lines = 0;
    let done = loop {
        for c in clients.iter_mut() {
            let _ = c.run_once(Duration::from_millis(1));
        }
        let views: Vec<TorrentView> = clients
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, c)| {
                let mut v = c.torrents().remove(0);
                v.name = format!("leecher {i}");
                v
            })
            .collect();
        let all = views
            .iter()
            .all(|v| v.status.state == TorrentState::Seeding);
        if let Some(m) = mode {
            if all || last.elapsed() >= Duration::from_millis(500) {
                out!("{}", display::render(&views, m, lines));
                let _ = std::io::stdout().flush();
                lines = views.len();
                last = Instant::now();
            }
        }
        if all {
            break true;
        }
        if stop.load(Ordering::Relaxed) || start.elapsed() > Duration::from_secs(600) {
            break false;
        }
    };
    let secs = start.elapsed().as_secs_f64();
    for c in clients.iter_mut() {
        c.shutdown();
    }
    let mut verified = 0;
    for i in 1..=leechers {
        let got =
            std::fs::read(base.join(format!("leecher-{i}")).join("demo.bin")).unwrap_or_default();
        if got == data {
            verified += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    if done && verified == leechers {
        outln!(
            "all {leechers} leechers complete in {secs:.1} s ({:.0} MB/s each on average); data verified byte for byte",
            size_mib as f64 * 1.048_576 / secs
        );
        ExitCode::SUCCESS
    } else {
        eprintln!("btcore: demo incomplete: {verified}/{leechers} leechers have the data");
        ExitCode::from(EXIT_STOPPED)
    }
}

#[cfg(feature = "tracker-server")]
/// Options of `btcore tracker`.
pub struct TrackerArgs {
    pub http: Option<SocketAddr>,
    pub udp: Option<SocketAddr>,
    pub state: Option<PathBuf>,
    pub allow: Option<PathBuf>,
    pub allow_list: bool,
    pub admin_key: Option<String>,
    pub register: Vec<String>,
    pub sync_peers: Vec<String>,
    pub sync_key: Option<String>,
    pub interval: u32,
    pub peer_ids: bool,
    pub max_peers_per_ip: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

#[cfg(any(feature = "tracker-server", feature = "dht"))]
fn parse_hash(s: &str) -> Option<btcore_core::ids::InfoHash> {
    btcore_core::ids::InfoHash::from_btih(s.trim().as_bytes())
}

#[cfg(feature = "tracker-server")]
pub fn tracker(a: TrackerArgs) -> ExitCode {
    use btcore_host::tracker_server::{run, TrackerOptions};
    let mut register = Vec::new();
    for h in &a.register {
        match parse_hash(h) {
            Some(ih) => register.push(ih),
            None => {
                return fail(
                    EXIT_INVALID,
                    format_args!("--register {h}: not an info-hash"),
                )
            }
        }
    }
    if let Some(f) = &a.allow {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => return fail(EXIT_IO, format_args!("{}: {e}", f.display())),
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            match parse_hash(line) {
                Some(ih) => register.push(ih),
                None => {
                    return fail(
                        EXIT_INVALID,
                        format_args!("{}:{}: not an info-hash", f.display(), n + 1),
                    )
                }
            }
        }
    }
    let opts = TrackerOptions {
        http: a.http,
        udp: a.udp,
        state: a.state,
        allow_list: a.allow_list || a.allow.is_some(),
        admin_key: a.admin_key,
        register,
        sync_peers: a.sync_peers,
        sync_key: a.sync_key,
        interval_secs: a.interval,
        peer_ids: a.peer_ids,
        max_peers_per_ip: a.max_peers_per_ip,
        limits: btcore_host::tracker_server::HttpLimits {
            max_connections: a.max_connections,
            max_connections_per_ip: a.max_connections_per_ip,
            ..Default::default()
        },
        ..TrackerOptions::default()
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let _ = ctrlc::set_handler(move || s2.store(true, Ordering::SeqCst));
    if let Some(h) = opts.http {
        outln!("tracker: http://{h}/announce");
    }
    if let Some(u) = opts.udp {
        outln!("tracker: udp://{u}/announce");
    }
    match run(opts, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_IO, format_args!("tracker: {e}")),
    }
}

#[cfg(feature = "tracker-server")]
/// Options of `btcore share`.
pub struct ShareArgs {
    pub path: PathBuf,
    pub trackers: Vec<String>,
    pub torrent_out: Option<PathBuf>,
    pub admin_key: Option<String>,
    pub private: bool,
    pub listen: SocketAddr,
    pub mode: Option<Mode>,
}

#[cfg(feature = "tracker-server")]
pub fn share(a: ShareArgs) -> ExitCode {
    use btcore_host::create::{create_torrent, CreateOptions};
    let opts = CreateOptions {
        trackers: a.trackers.iter().map(|t| vec![t.clone()]).collect(),
        private: a.private,
        ..CreateOptions::default()
    };
    let bytes = match create_torrent(&a.path, &opts) {
        Ok(b) => b,
        Err(e) => return fail(EXIT_IO, format_args!("{}: {e}", a.path.display())),
    };
    let mut tokens = Vec::new();
    let m = match btcore_core::metainfo::Metainfo::parse_vec(
        &bytes,
        &mut tokens,
        &btcore_core::metainfo::Limits::default(),
    ) {
        Ok(m) => m,
        Err(e) => return fail(EXIT_INVALID, format_args!("{e}")),
    };
    let name = String::from_utf8_lossy(m.name()).into_owned();
    let out = a
        .torrent_out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{name}.torrent")));
    if let Err(e) = std::fs::write(&out, &bytes) {
        return fail(EXIT_IO, format_args!("{}: {e}", out.display()));
    }
    if let Some(key) = &a.admin_key {
        for t in &a.trackers {
            let r =
                btcore_host::tracker_server::share(&btcore_host::tracker_server::ShareOptions {
                    tracker: t.clone(),
                    admin_key: key.clone(),
                    info_hashes: vec![m.info_hash()],
                    timeout: Duration::from_secs(10),
                });
            if let Err(e) = r {
                return fail(EXIT_IO, format_args!("registering with {t}: {e}"));
            }
        }
    }
    outln!("{}", out.display());
    outln!("{}", crate::info::magnet_of(&m));
    let dir = a
        .path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let o = Opts {
        save_dir: dir,
        listen: a.listen,
        peers: Vec::new(),
        max_peers: 50,
        max_connections: 0,
        download_limit: 0,
        upload_limit: 0,
        low_memory: false,
        disk_threads: DEFAULT_DISK_THREADS,
        max_disk_queue: 0,
        trackers: true,
        state_dir: None,
        timeout: None,
        mode: a.mode,
        dht: cfg!(feature = "dht").then(btcore_host::dht::DhtOptions::default),
        lsd: false,
        encryption: btcore_host::encryption::Encryption::default(),
        transport: btcore_host::client::TransportPolicy::Both,
        port_mapping: false,
        pex: true,
    };
    seed(&out, &o)
}

#[cfg(feature = "tracker-server")]
pub fn scrape(torrents: &[String], tracker: Option<String>, timeout: Duration) -> ExitCode {
    use btcore_host::tracker_server::{scrape, ScrapeOptions};
    let mut code = ExitCode::SUCCESS;
    for t in torrents {
        let (ih, url) = match parse_hash(t) {
            Some(ih) => (ih, tracker.clone()),
            None => {
                let bytes = match read_torrent_file(Path::new(t)) {
                    Ok(b) => b,
                    Err(e) => return fail(EXIT_IO, format_args!("{t}: {e}")),
                };
                let mut tokens = Vec::new();
                let m = match btcore_core::metainfo::Metainfo::parse_vec(
                    &bytes,
                    &mut tokens,
                    &btcore_core::metainfo::Limits::default(),
                ) {
                    Ok(m) => m,
                    Err(e) => return fail(EXIT_INVALID, format_args!("{t}: {e}")),
                };
                let first = m
                    .trackers()
                    .next()
                    .map(|u| String::from_utf8_lossy(u).into_owned());
                (m.info_hash(), tracker.clone().or(first))
            }
        };
        let Some(url) = url else {
            return fail(
                EXIT_INVALID,
                format_args!("{t}: no tracker to ask (use --tracker)"),
            );
        };
        match scrape(&ScrapeOptions {
            tracker: url.clone(),
            info_hashes: vec![ih],
            timeout,
        }) {
            Ok(v) => {
                for (h, s) in v {
                    outln!(
                        "{h} seeders {} leechers {} downloaded {}  ({url})",
                        s.complete,
                        s.incomplete,
                        s.downloaded
                    );
                }
            }
            Err(e) => {
                eprintln!("btcore: {t}: {url}: {e}");
                code = ExitCode::from(EXIT_IO);
            }
        }
    }
    code
}

#[cfg(feature = "dht")]
pub fn dht(
    bind: SocketAddr,
    opts: btcore_host::dht::DhtOptions,
    run_for: Duration,
    lookup: Option<String>,
) -> ExitCode {
    use btcore_core::time::Instant as CoreInstant;
    let start = Instant::now();
    let now = || CoreInstant::from_millis(start.elapsed().as_millis() as u64 + 1);
    let mut node = match btcore_host::dht::DhtHost::new(bind, &opts, now(), 0x64_68_74) {
        Ok(n) => n,
        Err(e) => return fail(EXIT_IO, format_args!("dht on {bind}: {e}")),
    };
    let target = match lookup.as_deref().map(parse_hash) {
        Some(Some(h)) => Some(h),
        Some(None) => return fail(EXIT_INVALID, format_args!("--lookup: not an info-hash")),
        None => None,
    };
    let mut poll = match mio::Poll::new() {
        Ok(p) => p,
        Err(e) => return fail(EXIT_IO, format_args!("{e}")),
    };
    if let Err(e) = node.register(poll.registry(), mio::Token(0), mio::Token(1)) {
        return fail(EXIT_IO, format_args!("{e}"));
    }
    let mut events = mio::Events::with_capacity(64);
    let mut peers = std::collections::BTreeSet::new();
    let mut looked = false;
    while start.elapsed() < run_for {
        let _ = poll.poll(&mut events, Some(Duration::from_millis(100)));
        node.read(now(), btcore_host::client::DHT_READS_PER_TURN);
        for f in node.service(now()).found {
            peers.extend(f.peers);
        }
        if let (Some(t), false) = (target, looked) {
            if start.elapsed() > Duration::from_secs(3) {
                node.get_peers(now(), t);
                looked = true;
            }
        }
    }
    node.maybe_save(now(), true);
    let s = node.stats(now());
    outln!(
        "node id   {}",
        btcore_core::ids::InfoHash(node.dht().id().0)
    );
    outln!(
        "nodes     {} ({} IPv6; {} good, {} replacements) in {} buckets",
        s.nodes,
        s.nodes6,
        s.good_nodes,
        s.replacements,
        s.buckets
    );
    outln!(
        "queries   {} sent, {} received; {} responses, {} timeouts, {} dropped",
        s.queries_sent,
        s.queries_received,
        s.responses_received,
        s.timeouts,
        s.dropped
    );
    outln!(
        "lookups   {} done, {} running",
        s.lookups_done,
        s.lookups_running
    );
    outln!(
        "store     {} peers for others, {} bad tokens refused",
        s.stored_peers,
        s.bad_tokens
    );
    if let Some(t) = target {
        outln!("peers of {t}: {}", peers.len());
        for p in peers.iter().take(50) {
            outln!("  {p}");
        }
    }
    ExitCode::SUCCESS
}
