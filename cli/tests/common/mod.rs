//! Helpers shared by the interop tests (`interop.rs`, `tracker_interop.rs`,
//! `dht_interop.rs`): gating on installed clients and `BTCORE_INTEROP`, free ports,
//! deterministic content, child processes killed (by their PID, through their own
//! handle) and reaped when dropped, scratch directories, waits with deadlines, and
//! command builders for btcore, transmission-cli, aria2c and libtorrent (`lt.py`).
//!
//! Each test file includes this with `mod common;` and is its own crate, so what one
//! of them does not use would warn as dead code there.
#![allow(dead_code)]

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub const BTCORE: &str = env!("CARGO_BIN_EXE_btcore");
pub const PYTHON: &str = "/usr/bin/python3";

// ------------------------------------------------------------------ gating

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Transmission,
    Aria2,
    Libtorrent,
    Opentracker,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Self::Transmission => "transmission-cli",
            Self::Aria2 => "aria2c",
            Self::Libtorrent => "python3-libtorrent",
            Self::Opentracker => "opentracker",
        }
    }

    pub fn installed(self) -> bool {
        match self {
            Self::Transmission => in_path("transmission-cli"),
            Self::Aria2 => in_path("aria2c"),
            Self::Opentracker => in_path("opentracker"),
            Self::Libtorrent => Command::new(PYTHON)
                .args(["-c", "import libtorrent"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
        }
    }
}

fn in_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(bin).is_file()))
}

/// Whether the case can run: every tool installed. When one is missing the case is
/// skipped, or fails under `BTCORE_INTEROP=1`; `install` says how to install them
/// (e.g. `apt-get install aria2`).
pub fn require(tools: &[Tool], install: &str) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|t| !t.installed())
        .map(|t| t.name())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let list = missing.join(", ");
    if std::env::var("BTCORE_INTEROP").as_deref() == Ok("1") {
        panic!("BTCORE_INTEROP=1 but {list} not installed ({install})");
    }
    println!("skipped: {list} not installed");
    false
}

// ------------------------------------------------------------------ ports

pub use btcore_tests::free_port;

pub fn local(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

// ------------------------------------------------------------------ content

/// xorshift64*: deterministic content without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        for chunk in v.chunks_mut(8) {
            let x = self.next().to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
        v
    }
}

/// A fresh directory under the system's temporary one, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("btcore-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn write_file(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create dirs");
    }
    fs::write(path, data).expect("write content");
}

/// Whether empty files of the source must exist at the receiver.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Empties {
    Required,
    /// Not checked (transmission 3.00 does not create them).
    Ignored,
}

/// Every regular file under `src` (a file or a folder) is at the same place under
/// `dst_dir` with the same bytes. Returns the first difference.
pub fn compare(src: &Path, dst_dir: &Path, empties: Empties) -> Result<(), String> {
    let name = src.file_name().expect("source name");
    compare_at(src, &dst_dir.join(name), empties)
}

fn compare_at(src: &Path, dst: &Path, empties: Empties) -> Result<(), String> {
    let meta = fs::metadata(src).map_err(|e| format!("{}: {e}", src.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(src)
            .map_err(|e| format!("{}: {e}", src.display()))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(fs::DirEntry::file_name);
        for e in entries {
            compare_at(&e.path(), &dst.join(e.file_name()), empties)?;
        }
        return Ok(());
    }
    if meta.len() == 0 && empties == Empties::Ignored {
        return Ok(());
    }
    let got_len = fs::metadata(dst)
        .map_err(|e| format!("{}: {e}", dst.display()))?
        .len();
    if got_len != meta.len() {
        return Err(format!(
            "{}: {got_len} bytes, want {}",
            dst.display(),
            meta.len()
        ));
    }
    let want = fs::read(src).map_err(|e| format!("{}: {e}", src.display()))?;
    let got = fs::read(dst).map_err(|e| format!("{}: {e}", dst.display()))?;
    match want.iter().zip(&got).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(at) => Err(format!("{}: differs at byte {at}", dst.display())),
    }
}

// ------------------------------------------------------------------ processes

/// A child process, killed (by its PID, SIGKILL) and reaped when dropped; its output
/// goes to log files.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub out: PathBuf,
    pub err: PathBuf,
    /// A seeder, tracker or DHT node: its exit is an error.
    pub must_live: bool,
    pub status: Option<ExitStatus>,
}

impl Proc {
    pub fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Whether `needle` is in its stdout or stderr so far.
    pub fn printed(&self, needle: &str) -> bool {
        [&self.out, &self.err]
            .iter()
            .any(|p| fs::read(p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)))
    }

    /// The last `bytes` of its stdout and stderr, for a failure message.
    pub fn log_tail(&self, bytes: usize) -> String {
        let tail = |p: &Path| {
            let b = fs::read(p).unwrap_or_default();
            let from = b.len().saturating_sub(bytes);
            String::from_utf8_lossy(&b[from..]).replace('\r', "\n")
        };
        format!(
            "----- {} ({}) stdout:\n{}\n----- {} stderr:\n{}\n",
            self.name,
            match self.status {
                Some(s) => format!("exited: {s}"),
                None => format!("running, pid {}", self.child.id()),
            },
            tail(&self.out),
            self.name,
            tail(&self.err)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.poll().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// When a wait gives up.
#[derive(Clone, Copy, Debug)]
pub enum Deadline {
    /// This long after each wait starts.
    Step(Duration),
    /// This long after the case starts.
    Case(Duration),
}

/// How a test file's cases run.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The scratch directory is `$TMP/PREFIX-NAME-PID-N`.
    pub dir_prefix: &'static str,
    pub deadline: Deadline,
    /// How often a wait polls.
    pub poll: Duration,
    /// How many bytes of each log a failure shows.
    pub log_tail: usize,
    /// When a `btcore` process that must live exits with status 0, say what can cause
    /// that.
    pub btcore_exit_hint: bool,
}

/// One case: a scratch directory, the processes it started, its clock.
pub struct Case {
    pub name: &'static str,
    pub dir: PathBuf,
    pub procs: Vec<Proc>,
    pub start: Instant,
    pub config: Config,
}

impl Case {
    pub fn new(name: &'static str, config: Config) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "{}-{name}-{}-{}",
            config.dir_prefix,
            std::process::id(),
            free_port()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        Self {
            name,
            dir,
            procs: Vec::new(),
            start: Instant::now(),
            config,
        }
    }

    /// `DIR/rel`, created.
    pub fn path(&self, rel: &str) -> PathBuf {
        let p = self.dir.join(rel);
        fs::create_dir_all(&p).expect("create dir");
        p
    }

    /// Starts `cmd` with its output in `DIR/logs/NAME.{out,err}`; returns its index.
    pub fn spawn(&mut self, name: &str, mut cmd: Command, must_live: bool) -> usize {
        let logs = self.path("logs");
        let out = logs.join(format!("{name}.out"));
        let err = logs.join(format!("{name}.err"));
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&out).expect("log file"))
            .stderr(fs::File::create(&err).expect("log file"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| self.fail(&format!("starting {name}: {e}")));
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            out,
            err,
            must_live,
            status: None,
        });
        self.procs.len() - 1
    }

    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|p| p.log_tail(self.config.log_tail))
            .collect()
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    pub fn fail(&self, msg: &str) -> ! {
        panic!(
            "{}: {msg} (after {:.1} s)\n{}",
            self.name,
            self.elapsed(),
            self.logs()
        )
    }

    /// Polls `cond` until it holds; fails at the deadline or when a process that must
    /// live has exited.
    pub fn wait_until(&mut self, what: &str, mut cond: impl FnMut(&mut Self) -> bool) {
        self.wait_for(what, |c| if cond(c) { Ok(()) } else { Err(String::new()) });
    }

    /// Polls `cond` until it is `Ok`; fails at the deadline, with the last error, or
    /// when a process that must live has exited.
    pub fn wait_for(&mut self, what: &str, mut cond: impl FnMut(&mut Self) -> Result<(), String>) {
        let end = match self.config.deadline {
            Deadline::Step(d) => Instant::now() + d,
            Deadline::Case(d) => self.start + d,
        };
        loop {
            let last = match cond(self) {
                Ok(()) => {
                    println!("{}: {what}: done at {:.1} s", self.name, self.elapsed());
                    return;
                }
                Err(e) => e,
            };
            for i in 0..self.procs.len() {
                let p = &mut self.procs[i];
                if p.must_live {
                    if let Some(s) = p.poll() {
                        let hint = if self.config.btcore_exit_hint
                            && s.success()
                            && p.name.starts_with("btcore")
                        {
                            " (btcore seed exits 0 only on SIGINT, SIGTERM or SIGHUP: \
                             did something else signal it?)"
                        } else {
                            ""
                        };
                        let msg = format!("{} exited ({s}) while waiting for {what}{hint}", p.name);
                        self.fail(&msg);
                    }
                }
            }
            if Instant::now() >= end {
                let why = if last.is_empty() {
                    last
                } else {
                    format!(": {last}")
                };
                self.fail(&format!("timed out waiting for {what}{why}"));
            }
            thread::sleep(self.config.poll);
        }
    }

    /// Waits for process `i` to exit, and fails unless it exits with status 0.
    pub fn wait_success(&mut self, i: usize) {
        let name = self.procs[i].name.clone();
        self.wait_until(&format!("{name} to finish"), |c| {
            c.procs[i].poll().is_some()
        });
        let status = self.procs[i].status.expect("exited");
        if !status.success() {
            self.fail(&format!("{name} exited with {status}"));
        }
    }

    /// Waits for `needle` in process `i`'s output.
    pub fn wait_output(&mut self, i: usize, needle: &str) {
        let what = format!("{:?} from {}", needle, self.procs[i].name);
        self.wait_until(&what, |c| c.procs[i].printed(needle));
    }

    /// Waits until something accepts TCP connections on `port`.
    pub fn wait_port(&mut self, port: u16) {
        self.wait_until(&format!("TCP port {port} to listen"), |_| {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Waits until `dst_dir` holds `src` exactly.
    pub fn wait_data(&mut self, src: &Path, dst_dir: &Path, empties: Empties) {
        let what = format!("{} in {}", src.display(), dst_dir.display());
        self.wait_for(&what, |_| compare(src, dst_dir, empties));
    }

    /// Fails unless `dst_dir` holds `src` exactly now.
    pub fn check_data(&self, src: &Path, dst_dir: &Path, empties: Empties) {
        if let Err(e) = compare(src, dst_dir, empties) {
            self.fail(&format!("wrong data: {e}"));
        }
    }

    pub fn finish(self) {
        println!("{}: passed in {:.1} s", self.name, self.elapsed());
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        // Processes first (they may hold files in the directory), then the directory.
        self.procs.clear();
        if std::env::var_os("BTCORE_INTEROP_KEEP").is_some() {
            println!("{}: kept {}", self.name, self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

// ------------------------------------------------------------------ btcore

/// The btcore under test: this build's, or `BTCORE_INTEROP_BIN` (e.g. a release build).
pub fn btcore_bin() -> PathBuf {
    std::env::var_os("BTCORE_INTEROP_BIN").map_or_else(|| PathBuf::from(BTCORE), PathBuf::from)
}

/// `BIN ARGS` with `RUST_LOG` from `BTCORE_INTEROP_LOG`, else `default_log`.
pub fn btcore_cmd(bin: impl AsRef<std::ffi::OsStr>, default_log: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    let level = std::env::var("BTCORE_INTEROP_LOG").unwrap_or_else(|_| default_log.into());
    c.args(args).env("RUST_LOG", level);
    c
}

/// `btcore ARGS` (`btcore_bin`), logging at `info` unless `BTCORE_INTEROP_LOG` says.
pub fn btcore(args: &[&str]) -> Command {
    btcore_cmd(btcore_bin(), "info", args)
}

/// The torrent's info-hash in lowercase hex, from `btcore info --json`.
pub fn info_hash(torrent: &Path) -> String {
    let o = btcore(&["info", "--json"])
        .arg(torrent)
        .output()
        .expect("run btcore info");
    assert!(o.status.success(), "btcore info: {}", o.status);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("info json");
    v["info_hash"].as_str().expect("info_hash").to_string()
}

/// Whether this btcore has a DHT (and so `--no-dht`).
pub fn btcore_has_dht() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        btcore(&["seed", "--help"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--no-dht"))
    })
}

/// `btcore create PATH -o OUT [-t TRACKER]`.
pub fn btcore_create(case: &Case, src: &Path, tracker: Option<&str>) -> PathBuf {
    btcore_create_with(case, src, tracker, &[])
}

/// As [`btcore_create`], with more `btcore create` arguments (`--v2`, `--hybrid`).
pub fn btcore_create_with(
    case: &Case,
    src: &Path,
    tracker: Option<&str>,
    args: &[&str],
) -> PathBuf {
    let out = case.dir.join(format!(
        "{}.torrent",
        src.file_name().expect("name").to_string_lossy()
    ));
    let mut c = btcore(&["create"]);
    c.arg(src).arg("-o").arg(&out).args(args);
    if let Some(t) = tracker {
        c.args(["-t", t]);
    }
    let o = c.output().expect("run btcore create");
    if !o.status.success() {
        case.fail(&format!(
            "btcore create: {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    out
}

/// `btcore seed TORRENT DIR` on `port`, dialing `peers`; `trackers`: announce to the
/// torrent's trackers (else `--no-trackers`).
pub fn btcore_seed(
    torrent: &Path,
    dir: &Path,
    port: u16,
    peers: &[u16],
    trackers: bool,
) -> Command {
    let mut c = btcore(&["seed"]);
    c.arg(torrent).arg(dir);
    net_args(&mut c, port, peers, trackers);
    c
}

/// `btcore download TORRENT -o DIR --timeout SECS [--seed]` on `port`, dialing
/// `peers`; `trackers` as for `btcore_seed`.
pub fn btcore_download(
    torrent: &Path,
    dir: &Path,
    port: u16,
    peers: &[u16],
    trackers: bool,
    timeout_secs: u64,
    keep_seeding: bool,
) -> Command {
    let mut c = btcore(&["download"]);
    c.arg(torrent).arg("-o").arg(dir);
    c.args(["--timeout", &timeout_secs.to_string()]);
    if keep_seeding {
        c.arg("--seed");
    }
    net_args(&mut c, port, peers, trackers);
    c
}

fn net_args(c: &mut Command, port: u16, peers: &[u16], trackers: bool) {
    c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
    if btcore_has_dht() {
        // Its default bootstrap nodes are public: stay on 127.0.0.1.
        c.arg("--no-dht");
    }
    c.args(["--progress", "plain"]);
    for p in peers {
        c.args(["--peer", &local(*p)]);
    }
    if !trackers {
        c.arg("--no-trackers");
    }
}

// ------------------------------------------------------------------ other clients

/// transmission-cli with its own config dir `DIR/transmission-TAG` (no DHT, LPD, PEX,
/// uTP or port mapping; listening on 127.0.0.1 only); seeds when the data is in `dir`.
pub fn transmission(case: &Case, tag: &str, torrent: &Path, dir: &Path, port: u16) -> Command {
    let config = case.path(&format!("transmission-{tag}"));
    let settings = serde_json::json!({
        "dht-enabled": false,
        "lpd-enabled": false,
        "pex-enabled": false,
        "utp-enabled": false,
        "port-forwarding-enabled": false,
        "rename-partial-files": false,
        "bind-address-ipv4": "127.0.0.1",
        "bind-address-ipv6": "::1",
        "peer-port": port,
        "peer-port-random-on-start": false,
        "blocklist-enabled": false,
        "message-level": 3,
    });
    fs::write(config.join("settings.json"), settings.to_string()).expect("settings.json");
    let mut c = Command::new("transmission-cli");
    c.arg("-g").arg(&config).arg("-w").arg(dir);
    c.args(["-p", &port.to_string(), "-B", "-M", "-D", "-U"]);
    c.arg(torrent);
    c.env("HOME", &config);
    c
}

/// What an aria2c is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aria2 {
    /// Seeds from its `dir` until killed.
    Seed,
    /// Leeches into its `dir` and exits when done.
    Leech,
    /// As `Leech`, with its DHT on (aria2 speaks UDP trackers only then), with no entry
    /// point and a fresh routing table file, on UDP `port`.
    LeechUdpTracker,
}

/// aria2c on `port`, saving into (or seeding from) `dir`, with its own `HOME`; it stops
/// itself after `timeout_secs`.
pub fn aria2(
    case: &Case,
    torrent: &Path,
    dir: &Path,
    port: u16,
    role: Aria2,
    timeout_secs: u64,
) -> Command {
    let home = case.path(if role == Aria2::Seed {
        "aria2-seed-home"
    } else {
        "aria2-leech-home"
    });
    let mut c = Command::new("aria2c");
    c.args([
        "--no-conf=true",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--disable-ipv6=true",
        "--enable-color=false",
        "--summary-interval=1",
        "--console-log-level=notice",
        "--file-allocation=none",
        "--check-integrity=true",
        "--auto-save-interval=0",
        "--bt-save-metadata=false",
        "--follow-torrent=false",
    ]);
    if role == Aria2::LeechUdpTracker {
        c.arg("--enable-dht=true");
        c.arg(format!("--dht-listen-port={port}"));
        c.arg(format!(
            "--dht-file-path={}",
            home.join("dht.dat").display()
        ));
    } else {
        c.arg("--enable-dht=false");
    }
    c.arg(format!("--stop={timeout_secs}"));
    c.arg(format!("--listen-port={port}"));
    c.arg(format!("--dir={}", dir.display()));
    if role == Aria2::Seed {
        // Seed until killed.
        c.args(["--seed-ratio=0.0", "--bt-seed-unverified=false"]);
    } else {
        c.arg("--seed-time=0");
    }
    c.arg(torrent);
    c.env("HOME", home);
    c
}

/// A script in `tests/interop/` (`lt.py`, `lt_dht.py`).
pub fn interop_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/interop")
        .join(name)
}

/// `lt.py seed|download TORRENT DIR --port P --timeout SECS [--peer P]...`; with no
/// `peers`, libtorrent finds its peers through the torrent's tracker.
pub fn libtorrent(
    mode: &str,
    torrent: &Path,
    dir: &Path,
    port: u16,
    peers: &[u16],
    timeout_secs: u64,
) -> Command {
    let mut c = Command::new(PYTHON);
    c.arg(interop_script("lt.py"))
        .arg(mode)
        .arg(torrent)
        .arg(dir);
    c.args(["--port", &port.to_string()]);
    c.args(["--timeout", &timeout_secs.to_string()]);
    for p in peers {
        c.args(["--peer", &p.to_string()]);
    }
    c
}

/// `DIR/multi`: 62 files in nested folders, sizes around block and piece boundaries,
/// three empty files (one alone in its folders), names with spaces and non-ASCII.
pub fn make_multi(dir: &Path) -> PathBuf {
    let root = dir.join("multi");
    let mut r = Rng(0x3417_1f11e5);
    let fixed: [usize; 8] = [1, 100, 16_383, 16_384, 16_385, 65_536, 262_145, 1_000_000];
    for i in 0..57 {
        let size = if i < fixed.len() {
            fixed[i]
        } else {
            (r.next() % 150_000) as usize
        };
        let rel = match i % 5 {
            0 => format!("file-{i:02}.dat"),
            1 => format!("a/file-{i:02}.dat"),
            2 => format!("a/b/file-{i:02}.dat"),
            3 => format!("a/b/c/deep-{i:02}.bin"),
            _ => format!("d{}/part {i:02}.txt", i % 3),
        };
        write_file(&root.join(rel), &r.bytes(size));
    }
    write_file(&root.join("name with spaces.txt"), &r.bytes(4_321));
    write_file(&root.join("ünïcödé/ファイル.bin"), &r.bytes(54_321));
    write_file(&root.join("empty-top"), b"");
    write_file(&root.join("a/empty-in-a"), b"");
    write_file(&root.join("only-empty/inner/empty"), b"");
    root
}
