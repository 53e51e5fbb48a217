//! The `btcore` command: argument parsing (`clap`), the progress display and the
//! subcommands, on top of the library `btcore-host` (which links no command-line
//! parser, logger backend or signal handler, so libbtcore does not either).
//!
//! Exit codes: 0 success; 2 bad command line; 3 the input (torrent file or magnet link)
//! is invalid; 4 a file or socket error (unreadable file, port in use, disk full);
//! 5 stopped (Ctrl-C) or timed out before the downloads completed.

use btcore_core::magnet::Magnet;
use btcore_core::metainfo::{Limits, Metainfo};
use btcore_host::read_torrent_file;
use display::Mode;

/// `println!` for the command's output (see [`write_stdout`]).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for the command's output (see [`write_stdout`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*))
    };
}

mod daemon;
mod display;
mod info;
mod run;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How the C library is linked, for `--version`.
#[cfg(target_feature = "crt-static")]
macro_rules! linkage {
    () => {
        "static, needs no C library on the device"
    };
}
#[cfg(not(target_feature = "crt-static"))]
macro_rules! linkage {
    () => {
        "linked against the system's C library"
    };
}
/// The memory allocator, for `--version`.
#[cfg(target_env = "musl")]
macro_rules! allocator {
    () => {
        "the C library's (musl)"
    };
}
#[cfg(target_env = "gnu")]
macro_rules! allocator {
    () => {
        "the C library's (glibc)"
    };
}
#[cfg(not(any(target_env = "musl", target_env = "gnu")))]
macro_rules! allocator {
    () => {
        "the C library's"
    };
}

/// `btcore --version`: the version, then what this build is (see build.rs).
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ntarget: ",
    env!("BTCORE_BUILD_TARGET"),
    " (",
    linkage!(),
    ")\nfeatures: ",
    env!("BTCORE_BUILD_FEATURES"),
    "\nallocator: ",
    allocator!(),
    "\nprofile: ",
    env!("BTCORE_BUILD_PROFILE"),
);

/// Parses the command line; `--version` also says which SHA-1 code this processor
/// runs (known only at run time).
fn parse_cli<I, T>(args: I) -> Cli
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let long: &'static str = Box::leak(
        format!(
            "{LONG_VERSION}\nsha1: {}",
            btcore_host::hash::sha1_backend()
        )
        .into_boxed_str(),
    );
    let mut cmd = Cli::command().long_version(long);
    let matches = cmd.clone().get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut cmd).exit())
}

/// btcore: an embeddable BitTorrent engine.
#[derive(Parser, Debug)]
#[command(name = "btcore", version, long_version = LONG_VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show what a .torrent file holds: name, info-hash, sizes, trackers, files.
    Info {
        /// The .torrent file.
        file: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Download torrents (files or magnet links), showing progress; keeps seeding
    /// with --seed.
    Download {
        /// .torrent files or magnet links.
        #[arg(required = true)]
        torrents: Vec<String>,
        #[command(flatten)]
        net: NetArgs,
        /// Keep seeding after the downloads complete (until Ctrl-C).
        #[arg(long)]
        seed: bool,
    },
    /// Seed a torrent whose data is in DIR (checked first).
    Seed {
        /// The .torrent file.
        torrent: PathBuf,
        /// The directory holding the data (the torrent's name inside it).
        dir: PathBuf,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Create a .torrent from a file or folder.
    Create {
        /// The file or folder.
        path: PathBuf,
        /// Tracker URL (repeat for several; each its own tier).
        #[arg(short = 't', long = "tracker")]
        trackers: Vec<String>,
        /// Web seed URL (BEP 19; repeatable).
        #[arg(short = 'w', long = "web-seed")]
        web_seeds: Vec<String>,
        /// Where to write the .torrent.
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Mark the torrent private (BEP 27).
        #[arg(long)]
        private: bool,
        /// Piece length in KiB (a power of two; default: automatic).
        #[arg(long)]
        piece_kib: Option<u32>,
        /// A comment.
        #[arg(long)]
        comment: Option<String>,
        /// Write a BitTorrent v2-only torrent (BEP 52; clients without v2 cannot use it).
        #[arg(long, conflicts_with = "hybrid")]
        v2: bool,
        /// Write a hybrid v1+v2 torrent (BEP 52, with BEP 47 pad files, as libtorrent).
        #[arg(long)]
        hybrid: bool,
    },
    /// A long-running session driven over Transmission's RPC (transmission-remote,
    /// web and phone front-ends), keeping its torrents across restarts.
    Daemon(daemon::DaemonArgs),
    /// A seeder and leechers on 127.0.0.1 in one process, with a generated payload:
    /// watch btcore work with no torrent at hand.
    Demo {
        /// Number of leechers.
        #[arg(long, default_value_t = 4)]
        leechers: usize,
        /// Payload size in MiB.
        #[arg(long, default_value_t = 64)]
        size_mib: u64,
        #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
        progress: ProgressArg,
    },
    #[cfg(feature = "tracker-server")]
    /// Run a tracker (HTTP and UDP announce and scrape), keeping its state in a file.
    Tracker {
        /// HTTP listen address.
        #[arg(long, default_value = "0.0.0.0:6969")]
        http: std::net::SocketAddr,
        /// UDP listen address.
        #[arg(long, default_value = "0.0.0.0:6969")]
        udp: std::net::SocketAddr,
        /// No HTTP.
        #[arg(long)]
        no_http: bool,
        /// No UDP.
        #[arg(long)]
        no_udp: bool,
        /// State file (allowed torrents, counters): restored at start, saved on change.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Serve only the info-hashes listed in FILE (hex, one per line) or registered.
        #[arg(long)]
        allow: Option<PathBuf>,
        /// Serve only registered info-hashes.
        #[arg(long)]
        allow_list: bool,
        /// Key for /admin/register.
        #[arg(long)]
        admin_key: Option<String>,
        /// Register an info-hash at start (repeatable).
        #[arg(long)]
        register: Vec<String>,
        /// Another tracker to share announces with, http://host:port (repeatable).
        #[arg(long = "sync-peer")]
        sync_peers: Vec<String>,
        /// The key shared by trackers that sync.
        #[arg(long)]
        sync_key: Option<String>,
        /// Announce interval in seconds.
        #[arg(long, default_value_t = 1800)]
        interval: u32,
        /// Keep peer ids (20 more bytes per peer) for the `peer id` of non-compact
        /// HTTP replies; without it they leave the key out.
        #[arg(long)]
        peer_ids: bool,
        /// Most peers of one address (IPv4, or IPv6 /64) in one swarm; a newcomer from
        /// an address at the cap replaces that address's oldest entry.
        #[arg(long, default_value_t = btcore_core::tracker::server::DEFAULT_MAX_PEERS_PER_IP)]
        max_peers_per_ip: usize,
        /// Most open HTTP connections (newcomers evict the least useful at the cap).
        #[arg(long, default_value_t = 4096)]
        max_connections: usize,
        /// Most open HTTP connections from one address (IPv4, or IPv6 /64).
        #[arg(long, default_value_t = 32)]
        max_connections_per_ip: usize,
    },
    #[cfg(feature = "tracker-server")]
    /// Create a torrent for PATH, register it with the tracker, print its magnet link
    /// and seed it.
    Share {
        /// The file or folder to share.
        path: PathBuf,
        /// Tracker URL (repeatable; each its own tier).
        #[arg(short = 't', long = "tracker", required = true)]
        trackers: Vec<String>,
        /// Where to write the .torrent (default: NAME.torrent in the current directory).
        #[arg(long = "torrent")]
        torrent_out: Option<PathBuf>,
        /// The tracker's admin key, when it serves only registered torrents.
        #[arg(long)]
        admin_key: Option<String>,
        /// Mark the torrent private (BEP 27).
        #[arg(long)]
        private: bool,
        /// Listen port.
        #[arg(short = 'p', long, default_value_t = 6881)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        bind: std::net::IpAddr,
        /// How to show progress.
        #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
        progress: ProgressArg,
    },
    #[cfg(feature = "dht")]
    /// Run a DHT node for a while and show its routing table and lookup statistics.
    Dht {
        /// UDP port.
        #[arg(short = 'p', long, default_value_t = 6881)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0")]
        bind: std::net::IpAddr,
        /// Node to bootstrap from, HOST:PORT (repeatable; default: the public routers).
        #[arg(long = "bootstrap")]
        bootstrap: Vec<String>,
        /// Seconds to run.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Also look up peers of this info-hash (40 hex).
        #[arg(long)]
        lookup: Option<String>,
        /// Where the routing table is kept.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    #[cfg(feature = "tracker-server")]
    /// Ask a tracker for a torrent's swarm counts.
    Scrape {
        /// .torrent files or 40-hex info-hashes.
        #[arg(required = true)]
        torrents: Vec<String>,
        /// The tracker (default: each torrent's first tracker).
        #[arg(short = 't', long)]
        tracker: Option<String>,
        /// Seconds to wait.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Parse a magnet link (BEP 9) and show what it names.
    Magnet {
        /// The magnet URI (quote it in the shell).
        uri: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Network and progress options shared by `download` and `seed`.
#[derive(clap::Args, Debug, Clone)]
struct NetArgs {
    /// Where to save (download) — default: the current directory.
    #[arg(short = 'o', long = "output", default_value = ".")]
    output: PathBuf,
    /// Listen port (0: any free port).
    #[arg(short = 'p', long, default_value_t = 6881)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    /// Add a peer by hand (repeatable).
    #[arg(long = "peer")]
    peers: Vec<std::net::SocketAddr>,
    /// Most connections per torrent (default 50; 20 with --low-memory).
    #[arg(long)]
    max_peers: Option<usize>,
    /// Most connections over all torrents (default 200; 50 with --low-memory).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Download limit in KiB/s (0: none).
    #[arg(long, default_value_t = 0)]
    download_limit: u64,
    /// Upload limit in KiB/s (0: none).
    #[arg(long, default_value_t = 0)]
    upload_limit: u64,
    /// The small-memory profile (routers, small NAS boxes).
    #[arg(long)]
    low_memory: bool,
    /// Threads that write, read and hash pieces.
    #[arg(long, default_value_t = btcore_host::client::DEFAULT_DISK_THREADS)]
    disk_threads: usize,
    /// Most KiB received and not yet written (default 1024; 512 with --low-memory):
    /// no block is requested past it, and reading from peers pauses at twice it.
    #[arg(long, value_name = "KIB")]
    disk_queue_kib: Option<usize>,
    /// Do not contact trackers.
    #[arg(long)]
    no_trackers: bool,
    /// Do not use the DHT (private torrents never do; accepted by a build without it).
    #[arg(long)]
    no_dht: bool,
    /// Do not ask the gateway to forward the ports (PCP, then NAT-PMP; on by default).
    #[arg(long)]
    no_port_mapping: bool,
    /// Do not exchange peers with peers (BEP 11 PEX; never for private torrents).
    #[arg(long)]
    no_pex: bool,
    #[cfg(feature = "lsd")]
    /// Find peers on the local network (BEP 14 multicast; never for private torrents).
    #[arg(long)]
    lsd: bool,
    /// Protocol encryption (MSE/PE): disabled, allowed (accept it, dial plain),
    /// preferred (dial with it, fall back to plain) or required (RC4 only).
    #[arg(long, default_value = "preferred")]
    encryption: btcore_host::encryption::Encryption,
    /// Peer transports: both (dial uTP first, TCP when it gets no answer; accept
    /// both), utp (dial uTP only) or tcp (no uTP at all). uTP uses the UDP port of
    /// the listen port's number, shared with the DHT.
    #[arg(long, default_value = "both", value_parser = parse_transport)]
    transport: btcore_host::client::TransportPolicy,
    #[cfg(feature = "dht")]
    /// DHT UDP port (default: the listen port).
    #[arg(long, default_value_t = 0)]
    dht_port: u16,
    #[cfg(feature = "dht")]
    /// DHT node to bootstrap from, HOST:PORT (repeatable; default: the public routers).
    #[arg(long = "bootstrap")]
    bootstrap: Vec<String>,
    /// Where resume files and the DHT state go (default: OUTPUT/.btcore; a torrent
    /// named like it, or like a file in it when it is OUTPUT, is saved as `_NAME`).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Give up after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// How to show progress.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,
    /// Print one JSON status line per torrent per second (same as --progress json).
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ProgressArg {
    Auto,
    Live,
    Plain,
    Json,
    None,
}

const EXIT_INVALID: u8 = 3;
const EXIT_IO: u8 = 4;

fn fail(code: u8, msg: std::fmt::Arguments<'_>) -> ExitCode {
    eprintln!("btcore: {msg}");
    ExitCode::from(code)
}

fn info_cmd(file: &Path, json: bool) -> ExitCode {
    let shown = file.display();
    let bytes = match read_torrent_file(file) {
        Ok(b) => b,
        Err(e) => return fail(EXIT_IO, format_args!("{shown}: {e}")),
    };
    let mut tokens = Vec::new();
    let m = match Metainfo::parse_vec(&bytes, &mut tokens, &Limits::default()) {
        Ok(m) => m,
        Err(e) => return fail(EXIT_INVALID, format_args!("{shown}: {e}")),
    };
    let out = if json {
        info::torrent_json(&m).map(|v| v.to_string())
    } else {
        info::torrent_text(&m, &shown.to_string())
    };
    match out {
        Ok(s) => {
            outln!("{}", s.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_INVALID, format_args!("{shown}: {e}")),
    }
}

fn magnet_cmd(uri: &str, json: bool) -> ExitCode {
    let m = match Magnet::parse_str(uri) {
        Ok(m) => m,
        Err(e) => return fail(EXIT_INVALID, format_args!("magnet link: {e}")),
    };
    let v = info::magnet_json(&m);
    if json {
        outln!("{v}");
    } else {
        outln!("Hash: {}", m.info_hash());
        if let Some(n) = v["name"].as_str() {
            outln!("Name: {n}");
        }
        for (label, key) in [
            ("Tracker", "trackers"),
            ("Web seed", "web_seeds"),
            ("Peer", "peers"),
        ] {
            for t in v[key].as_array().into_iter().flatten() {
                outln!("{label}: {}", t.as_str().unwrap_or_default());
            }
        }
        if m.is_truncated() {
            outln!("(more entries than btcore keeps were dropped)");
        }
    }
    ExitCode::SUCCESS
}

/// Writes the command's output and flushes it. When stdout is gone (a closed pipe, as
/// in `btcore info FILE | head -1`) the process ends quietly with status 141 (128 +
/// SIGPIPE, what a shell shows for a Unix tool the signal ended) instead of panicking
/// like `println!`; another write error is one line on stderr and status 4.
fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("btcore: cannot write the output: {e}");
        std::process::exit(4);
    }
}

/// glibc gives the top of its heap back to the kernel whenever 128 KiB of it is free.
/// Blocks (16 KiB each, allocated by the loop, freed by the disk workers once written)
/// make the heap top rise and fall thousands of times a gigabyte, every rise a run of
/// page faults: keep up to 4 MiB of free heap instead (the `brk` calls of a 1 GiB
/// download: 1,400 -> 40).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of glibc's allocator; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
        // Setting one threshold turns off glibc's adjustment of the other, which would
        // leave every buffer of 128 KiB or more (a piece read back to be checked, a
        // peer's send buffer) to an `mmap` and `munmap` of its own: a seeder served 20%
        // slower that way.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// For `btcore daemon --config FILE`: the command line with the file's settings
/// placed before the options given (which win); None for any other command line.
fn daemon_config_args() -> Result<Option<Vec<String>>, String> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) != Some("daemon") {
        return Ok(None);
    }
    let mut file = None;
    for (i, a) in argv.iter().enumerate() {
        if let Some(v) = a.strip_prefix("--config=") {
            file = Some(PathBuf::from(v));
        } else if a == "--config" {
            file = argv.get(i + 1).map(PathBuf::from);
        }
    }
    let Some(file) = file else {
        return Ok(None);
    };
    let mut out = argv[..2].to_vec();
    out.extend(daemon::config_args(&file)?);
    out.extend(argv[2..].iter().cloned());
    Ok(Some(out))
}

fn main() -> ExitCode {
    tune_allocator();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_target(false)
        .format_timestamp_millis()
        .init();
    let cli = match daemon_config_args() {
        Ok(Some(args)) => parse_cli(args),
        Ok(None) => parse_cli(std::env::args_os()),
        Err(e) => return fail(EXIT_INVALID, format_args!("{e}")),
    };
    match cli.command {
        Command::Daemon(args) => daemon::run(args),
        Command::Info { file, json } => info_cmd(&file, json),
        Command::Magnet { uri, json } => magnet_cmd(&uri, json),
        Command::Download {
            torrents,
            net,
            seed,
        } => run::download(&torrents, &net_opts(&net), seed),
        Command::Seed { torrent, dir, net } => {
            let mut o = net_opts(&net);
            o.save_dir = dir;
            run::seed(&torrent, &o)
        }
        Command::Create {
            path,
            trackers,
            web_seeds,
            output,
            private,
            piece_kib,
            comment,
            v2,
            hybrid,
        } => {
            use btcore_host::create::Format;
            let format = match (v2, hybrid) {
                (true, _) => Format::V2,
                (_, true) => Format::Hybrid,
                _ => Format::V1,
            };
            run::create(
                &path, trackers, web_seeds, &output, private, piece_kib, comment, format,
            )
        }
        #[cfg(feature = "tracker-server")]
        Command::Tracker {
            http,
            udp,
            no_http,
            no_udp,
            state,
            allow,
            allow_list,
            admin_key,
            register,
            sync_peers,
            sync_key,
            interval,
            peer_ids,
            max_peers_per_ip,
            max_connections,
            max_connections_per_ip,
        } => run::tracker(run::TrackerArgs {
            http: (!no_http).then_some(http),
            udp: (!no_udp).then_some(udp),
            state,
            allow,
            allow_list,
            admin_key,
            register,
            sync_peers,
            sync_key,
            interval,
            peer_ids,
            max_peers_per_ip,
            max_connections,
            max_connections_per_ip,
        }),
        #[cfg(feature = "tracker-server")]
        Command::Share {
            path,
            trackers,
            torrent_out,
            admin_key,
            private,
            port,
            bind,
            progress,
        } => run::share(run::ShareArgs {
            path,
            trackers,
            torrent_out,
            admin_key,
            private,
            listen: std::net::SocketAddr::new(bind, port),
            mode: mode_of(progress, false),
        }),
        #[cfg(feature = "dht")]
        Command::Dht {
            port,
            bind,
            bootstrap,
            seconds,
            lookup,
            state_dir,
        } => run::dht(
            std::net::SocketAddr::new(bind, port),
            btcore_host::dht::DhtOptions {
                port,
                bootstrap,
                state_dir,
                low_memory: false,
            },
            std::time::Duration::from_secs(seconds),
            lookup,
        ),
        #[cfg(feature = "tracker-server")]
        Command::Scrape {
            torrents,
            tracker,
            timeout,
        } => run::scrape(&torrents, tracker, std::time::Duration::from_secs(timeout)),
        Command::Demo {
            leechers,
            size_mib,
            progress,
        } => run::demo(leechers, size_mib, mode_of(progress, false)),
    }
}

fn mode_of(p: ProgressArg, json: bool) -> Option<Mode> {
    use std::io::IsTerminal;
    if json {
        return Some(Mode::Json);
    }
    match p {
        ProgressArg::Auto if std::io::stdout().is_terminal() => Some(Mode::Live),
        ProgressArg::Auto | ProgressArg::Plain => Some(Mode::Plain),
        ProgressArg::Live => Some(Mode::Live),
        ProgressArg::Json => Some(Mode::Json),
        ProgressArg::None => None,
    }
}

fn net_opts(n: &NetArgs) -> run::Opts {
    run::Opts {
        save_dir: n.output.clone(),
        listen: std::net::SocketAddr::new(n.bind, n.port),
        peers: n.peers.clone(),
        max_peers: n.max_peers.unwrap_or(0),
        max_connections: n.max_connections.unwrap_or(0),
        download_limit: n.download_limit * 1024,
        upload_limit: n.upload_limit * 1024,
        low_memory: n.low_memory,
        disk_threads: n.disk_threads,
        max_disk_queue: n.disk_queue_kib.map_or(0, |k| k.saturating_mul(1024)),
        trackers: !n.no_trackers,
        #[cfg(feature = "lsd")]
        lsd: n.lsd,
        #[cfg(not(feature = "lsd"))]
        lsd: false,
        encryption: n.encryption,
        transport: n.transport,
        port_mapping: !n.no_port_mapping,
        pex: !n.no_pex,
        dht: dht_opts(n),
        state_dir: n.state_dir.clone(),
        timeout: n.timeout.map(std::time::Duration::from_secs),
        mode: mode_of(n.progress, n.json),
    }
}

#[cfg(feature = "dht")]
fn dht_opts(n: &NetArgs) -> Option<btcore_host::dht::DhtOptions> {
    (!n.no_dht).then(|| btcore_host::dht::DhtOptions {
        port: n.dht_port,
        bootstrap: n.bootstrap.clone(),
        state_dir: None,
        low_memory: n.low_memory,
    })
}

/// No DHT in this build: `--no-dht` changes nothing.
#[cfg(not(feature = "dht"))]
fn dht_opts(_: &NetArgs) -> Option<btcore_host::dht::DhtOptions> {
    None
}

/// `--transport`: both, utp or tcp.
pub(crate) fn parse_transport(s: &str) -> Result<btcore_host::client::TransportPolicy, String> {
    use btcore_host::client::TransportPolicy;
    match s {
        "both" => Ok(TransportPolicy::Both),
        "utp" => Ok(TransportPolicy::UtpOnly),
        "tcp" => Ok(TransportPolicy::TcpOnly),
        _ => Err(format!("{s:?}: expected both, utp or tcp")),
    }
}
