//! Interoperability with real BitTorrent clients: transmission-cli, aria2c and
//! libtorrent (python3-libtorrent, driven by `tests/interop/lt.py`), with opentracker as
//! the tracker. Everything runs on 127.0.0.1; every wait has a deadline; every process
//! started here is killed (by its own handle) and every temporary directory removed
//! when a case ends, failed or not. Received data is compared byte for byte with the
//! source files.
//!
//! A client that is not installed skips its cases with `skipped: <client> not
//! installed`, unless `BTCORE_INTEROP=1` is set (CI sets it): then the case fails. See
//! `tests/interop/README.md`.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

const BTCORE: &str = env!("CARGO_BIN_EXE_btcore");
const PYTHON: &str = "/usr/bin/python3";
/// The longest any one step (a client getting ready, a download) may take.
const STEP: Duration = Duration::from_secs(90);
/// Given to the clients that can stop themselves, a little past `STEP`.
const CLIENT_TIMEOUT_SECS: u64 = 120;
const SINGLE_SIZE: usize = 20 * 1024 * 1024;

// ------------------------------------------------------------------ gating

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Transmission,
    Aria2,
    Libtorrent,
    Opentracker,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Self::Transmission => "transmission-cli",
            Self::Aria2 => "aria2c",
            Self::Libtorrent => "python3-libtorrent",
            Self::Opentracker => "opentracker",
        }
    }

    fn installed(self) -> bool {
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
/// skipped, or fails under `BTCORE_INTEROP=1`.
fn require(tools: &[Tool]) -> bool {
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
        panic!(
            "BTCORE_INTEROP=1 but {list} not installed (apt-get install transmission-cli \
             aria2 python3-libtorrent opentracker)"
        );
    }
    println!("skipped: {list} not installed");
    false
}

// ------------------------------------------------------------------ ports

/// A port free for TCP and UDP on 127.0.0.1, never handed out twice in this process.
fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..200 {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = t.local_addr().expect("local addr").port();
        if !given.contains(&port) && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port on 127.0.0.1");
}

fn local(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

// ------------------------------------------------------------------ content

/// xorshift64*: deterministic content without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        for chunk in v.chunks_mut(8) {
            let x = self.next().to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
        v
    }
}

fn write_file(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create dirs");
    }
    fs::write(path, data).expect("write content");
}

/// One 20 MiB file, `DIR/big.bin`.
fn make_single(dir: &Path) -> PathBuf {
    let path = dir.join("big.bin");
    write_file(&path, &Rng(0x00b1_6f11e).bytes(SINGLE_SIZE));
    path
}

/// `DIR/multi`: 62 files in nested folders, sizes around block and piece boundaries,
/// three empty files (one alone in its folders), names with spaces and non-ASCII.
fn make_multi(dir: &Path) -> PathBuf {
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

/// Whether empty files of the source must exist at the receiver.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Empties {
    Required,
    /// Not checked (transmission 3.00 does not create them).
    Ignored,
}

/// Every regular file under `src` (a file or a folder) is at the same place under
/// `dst_dir` with the same bytes. Returns the first difference.
fn compare(src: &Path, dst_dir: &Path, empties: Empties) -> Result<(), String> {
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

/// A child process, killed and reaped when dropped; its output goes to log files.
struct Proc {
    name: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
    /// A seeder or tracker: its exit is an error.
    must_live: bool,
    status: Option<ExitStatus>,
}

impl Proc {
    fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Whether `needle` is in its stdout or stderr so far.
    fn printed(&self, needle: &str) -> bool {
        [&self.out, &self.err]
            .iter()
            .any(|p| fs::read(p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)))
    }

    fn log_tail(&self) -> String {
        let tail = |p: &Path| {
            let b = fs::read(p).unwrap_or_default();
            let from = b.len().saturating_sub(4000);
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
        if self.status.is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// One case: a scratch directory, the processes it started, its clock.
struct Case {
    name: &'static str,
    dir: PathBuf,
    procs: Vec<Proc>,
    start: Instant,
}

impl Case {
    fn new(name: &'static str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "btcore-interop-{name}-{}-{}",
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
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        let p = self.dir.join(rel);
        fs::create_dir_all(&p).expect("create dir");
        p
    }

    fn spawn(&mut self, name: &str, mut cmd: Command, must_live: bool) -> usize {
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

    fn logs(&self) -> String {
        self.procs.iter().map(Proc::log_tail).collect()
    }

    fn fail(&self, msg: &str) -> ! {
        panic!(
            "{}: {msg} (after {:.1} s)\n{}",
            self.name,
            self.start.elapsed().as_secs_f64(),
            self.logs()
        )
    }

    /// Polls `cond` until it holds; fails at the deadline or when a process that must
    /// live has exited.
    fn wait_until(&mut self, what: &str, mut cond: impl FnMut(&mut Self) -> bool) {
        self.wait_for(what, |c| if cond(c) { Ok(()) } else { Err(String::new()) });
    }

    /// Polls `cond` until it is `Ok`; fails at the deadline, with the last error, or
    /// when a process that must live has exited.
    fn wait_for(&mut self, what: &str, mut cond: impl FnMut(&mut Self) -> Result<(), String>) {
        let end = Instant::now() + STEP;
        loop {
            let last = match cond(self) {
                Ok(()) => {
                    println!(
                        "{}: {what}: done at {:.1} s",
                        self.name,
                        self.start.elapsed().as_secs_f64()
                    );
                    return;
                }
                Err(e) => e,
            };
            for i in 0..self.procs.len() {
                let p = &mut self.procs[i];
                if p.must_live {
                    if let Some(s) = p.poll() {
                        let hint = if s.success() && p.name.starts_with("btcore") {
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
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for process `i` to exit, and fails unless it exits with status 0.
    fn wait_success(&mut self, i: usize) {
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
    fn wait_output(&mut self, i: usize, needle: &str) {
        let what = format!("{:?} from {}", needle, self.procs[i].name);
        self.wait_until(&what, |c| c.procs[i].printed(needle));
    }

    /// Waits until something accepts TCP connections on `port`.
    fn wait_port(&mut self, port: u16) {
        self.wait_until(&format!("port {port} to listen"), |_| {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Waits until `dst_dir` holds `src` exactly.
    fn wait_data(&mut self, src: &Path, dst_dir: &Path, empties: Empties) {
        let what = format!("{} in {}", src.display(), dst_dir.display());
        self.wait_for(&what, |_| compare(src, dst_dir, empties));
    }

    /// Fails unless `dst_dir` holds `src` exactly now.
    fn check_data(&self, src: &Path, dst_dir: &Path, empties: Empties) {
        if let Err(e) = compare(src, dst_dir, empties) {
            self.fail(&format!("wrong data: {e}"));
        }
    }

    fn finish(self) {
        println!(
            "{}: passed in {:.1} s",
            self.name,
            self.start.elapsed().as_secs_f64()
        );
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
fn btcore_bin() -> PathBuf {
    std::env::var_os("BTCORE_INTEROP_BIN").map_or_else(|| PathBuf::from(BTCORE), PathBuf::from)
}

fn btcore(args: &[&str]) -> Command {
    let mut c = Command::new(btcore_bin());
    let level = std::env::var("BTCORE_INTEROP_LOG").unwrap_or_else(|_| "info".into());
    c.args(args).env("RUST_LOG", level);
    c
}

/// Whether this btcore has a DHT (and so `--no-dht`).
fn btcore_has_dht() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        btcore(&["seed", "--help"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--no-dht"))
    })
}

/// `btcore create PATH -o OUT [-t TRACKER]`.
fn btcore_create(case: &Case, src: &Path, tracker: Option<&str>) -> PathBuf {
    let out = case.dir.join(format!(
        "{}.torrent",
        src.file_name().expect("name").to_string_lossy()
    ));
    let mut c = btcore(&["create"]);
    c.arg(src).arg("-o").arg(&out);
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

/// The torrent's info-hash in lowercase hex, from `btcore info --json`.
fn info_hash(torrent: &Path) -> String {
    let o = btcore(&["info", "--json"])
        .arg(torrent)
        .output()
        .expect("run btcore info");
    assert!(o.status.success(), "btcore info: {}", o.status);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("info json");
    v["info_hash"].as_str().expect("info_hash").to_string()
}

/// `btcore seed TORRENT DIR` on `port`, dialing `peers`.
fn btcore_seed(torrent: &Path, dir: &Path, port: u16, peers: &[u16], trackers: bool) -> Command {
    let mut c = btcore(&["seed"]);
    c.arg(torrent).arg(dir);
    net_args(&mut c, port, peers, trackers);
    c
}

/// `btcore download TORRENT -o DIR` on `port`, dialing `peers`.
fn btcore_download(
    torrent: &Path,
    dir: &Path,
    port: u16,
    peers: &[u16],
    trackers: bool,
) -> Command {
    let mut c = btcore(&["download"]);
    c.arg(torrent).arg("-o").arg(dir);
    c.args(["--timeout", &CLIENT_TIMEOUT_SECS.to_string()]);
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

/// transmission-cli with its own config dir (no DHT, LPD, PEX, uTP or port mapping;
/// listening on 127.0.0.1 only); seeds when the data is in `dir`.
fn transmission(case: &Case, tag: &str, torrent: &Path, dir: &Path, port: u16) -> Command {
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

/// Waits until transmission-cli `i` has checked its data and started the torrent.
///
/// Not by connecting to its port: transmission 3.00 refuses an incoming connection
/// while another from the same IP address is still in its handshake, so a probe can
/// make it refuse btcore's dial, and btcore then waits 30 s before dialing again.
fn transmission_ready(case: &mut Case, i: usize) {
    // Logged at message-level 3; the torrent starts right after.
    case.wait_output(i, "Verification is done");
    thread::sleep(Duration::from_millis(500));
}

/// aria2c on `port`, saving into (or seeding from) `dir`, with its own `HOME`.
fn aria2(case: &Case, torrent: &Path, dir: &Path, port: u16, seed: bool) -> Command {
    let mut c = Command::new("aria2c");
    c.args([
        "--no-conf=true",
        "--enable-dht=false",
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
    c.arg(format!("--stop={CLIENT_TIMEOUT_SECS}"));
    c.arg(format!("--listen-port={port}"));
    c.arg(format!("--dir={}", dir.display()));
    if seed {
        // Seed until killed.
        c.args(["--seed-ratio=0.0", "--bt-seed-unverified=false"]);
    } else {
        c.arg("--seed-time=0");
    }
    c.arg(torrent);
    c.env(
        "HOME",
        case.path(if seed {
            "aria2-seed-home"
        } else {
            "aria2-leech-home"
        }),
    );
    c
}

fn lt_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/lt.py")
}

/// `lt.py seed|download TORRENT DIR --port P [--peer P]...`.
fn libtorrent(mode: &str, torrent: &Path, dir: &Path, port: u16, peers: &[u16]) -> Command {
    let mut c = Command::new(PYTHON);
    c.arg(lt_py()).arg(mode).arg(torrent).arg(dir);
    c.args(["--port", &port.to_string()]);
    c.args(["--timeout", &CLIENT_TIMEOUT_SECS.to_string()]);
    for p in peers {
        c.args(["--peer", &p.to_string()]);
    }
    c
}

/// A torrent made by libtorrent's `create_torrent` (hybrid v1+v2, with pad files).
fn libtorrent_create(case: &Case, src: &Path) -> PathBuf {
    let out = case.dir.join(format!(
        "{}-lt.torrent",
        src.file_name().expect("name").to_string_lossy()
    ));
    let o = Command::new(PYTHON)
        .arg(lt_py())
        .arg("create")
        .arg(src)
        .arg(&out)
        .output()
        .expect("run lt.py create");
    if !o.status.success() {
        case.fail(&format!(
            "lt.py create: {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    out
}

/// opentracker on `port` (HTTP and UDP), serving the whitelisted `info_hash`.
fn opentracker(case: &mut Case, info_hash: &str, port: u16) {
    use std::os::unix::fs::PermissionsExt;
    let dir = case.path("opentracker");
    // opentracker may drop privileges: let anyone read the whitelist.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let whitelist = dir.join("whitelist.txt");
    fs::write(&whitelist, format!("{info_hash}\n")).expect("whitelist");
    let conf = dir.join("opentracker.conf");
    fs::write(&conf, format!("access.whitelist {}\n", whitelist.display())).expect("conf");
    let mut c = Command::new("opentracker");
    c.arg("-f").arg(&conf).args(["-d", "/", "-i", "127.0.0.1"]);
    c.args(["-p", &port.to_string(), "-P", &port.to_string()]);
    case.spawn("opentracker", c, true);
    case.wait_port(port);
    // The whitelist is read a moment after the port opens: wait until an announce of
    // this info-hash (a `stopped` one, which adds no peer) is accepted.
    let mut hash = String::new();
    for pair in info_hash.as_bytes().chunks(2) {
        hash.push('%');
        hash.push_str(std::str::from_utf8(pair).expect("hex"));
    }
    let target = format!(
        "/announce?info_hash={hash}&peer_id=-XX0000-000000000000&port=9&uploaded=0\
         &downloaded=0&left=0&compact=1&event=stopped"
    );
    case.wait_until("opentracker to accept the info-hash", |_| {
        http_get(port, &target).is_some_and(|body| !body.contains("failure"))
    });
}

/// A bare HTTP/1.0 GET on 127.0.0.1, the body as text.
fn http_get(port: u16, target: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    text.starts_with("HTTP/1.").then_some(body)
}

// ------------------------------------------------------------------ payloads

#[derive(Clone, Copy, Debug)]
enum Payload {
    /// One 20 MiB file.
    Single,
    /// A folder of 62 files.
    Multi,
}

fn make(case: &Case, p: Payload) -> PathBuf {
    let src = case.path("src");
    match p {
        Payload::Single => make_single(&src),
        Payload::Multi => make_multi(&src),
    }
}

// ------------------------------------------------------------------ 1: btcore leeches

/// btcore downloads from a seeding transmission-cli that it dials.
fn btcore_from_transmission(name: &'static str, p: Payload) {
    if !require(&[Tool::Transmission]) {
        return;
    }
    let mut case = Case::new(name);
    let data = make(&case, p);
    let torrent = btcore_create(&case, &data, None);
    let (tport, bport) = (free_port(), free_port());
    let src = data.parent().expect("src dir").to_path_buf();
    let t = transmission(&case, "seed", &torrent, &src, tport);
    let ti = case.spawn("transmission-seed", t, true);
    transmission_ready(&mut case, ti);
    let dst = case.path("dst");
    let b = case.spawn(
        "btcore-download",
        btcore_download(&torrent, &dst, bport, &[tport], false),
        false,
    );
    case.wait_success(b);
    case.check_data(&data, &dst, Empties::Required);
    case.finish();
}

#[test]
fn btcore_downloads_single_from_transmission() {
    btcore_from_transmission("btcore-from-transmission-single", Payload::Single);
}

#[test]
fn btcore_downloads_multi_from_transmission() {
    btcore_from_transmission("btcore-from-transmission-multi", Payload::Multi);
}

/// btcore downloads from a seeding aria2c that it dials.
fn btcore_from_aria2(name: &'static str, p: Payload) {
    if !require(&[Tool::Aria2]) {
        return;
    }
    let mut case = Case::new(name);
    let data = make(&case, p);
    let torrent = btcore_create(&case, &data, None);
    let (aport, bport) = (free_port(), free_port());
    let src = data.parent().expect("src dir").to_path_buf();
    let a = case.spawn(
        "aria2-seed",
        aria2(&case, &torrent, &src, aport, true),
        true,
    );
    case.wait_output(a, "SEED");
    case.wait_port(aport);
    let dst = case.path("dst");
    let b = case.spawn(
        "btcore-download",
        btcore_download(&torrent, &dst, bport, &[aport], false),
        false,
    );
    case.wait_success(b);
    case.check_data(&data, &dst, Empties::Required);
    case.finish();
}

#[test]
fn btcore_downloads_single_from_aria2() {
    btcore_from_aria2("btcore-from-aria2-single", Payload::Single);
}

#[test]
fn btcore_downloads_multi_from_aria2() {
    btcore_from_aria2("btcore-from-aria2-multi", Payload::Multi);
}

/// btcore downloads from a seeding libtorrent that it dials; `lt_made`: the torrent
/// comes from libtorrent's `create_torrent` (hybrid v1+v2 with pad files).
fn btcore_from_libtorrent(name: &'static str, p: Payload, lt_made: bool) {
    if !require(&[Tool::Libtorrent]) {
        return;
    }
    let mut case = Case::new(name);
    let data = make(&case, p);
    let torrent = if lt_made {
        libtorrent_create(&case, &data)
    } else {
        btcore_create(&case, &data, None)
    };
    let (lport, bport) = (free_port(), free_port());
    let src = data.parent().expect("src dir").to_path_buf();
    let l = case.spawn(
        "libtorrent-seed",
        libtorrent("seed", &torrent, &src, lport, &[]),
        true,
    );
    case.wait_output(l, "state=seeding");
    let dst = case.path("dst");
    let b = case.spawn(
        "btcore-download",
        btcore_download(&torrent, &dst, bport, &[lport], false),
        false,
    );
    case.wait_success(b);
    case.check_data(&data, &dst, Empties::Required);
    case.finish();
}

#[test]
fn btcore_downloads_single_from_libtorrent() {
    btcore_from_libtorrent("btcore-from-libtorrent-single", Payload::Single, false);
}

#[test]
fn btcore_downloads_libtorrent_made_multi_from_libtorrent() {
    btcore_from_libtorrent("btcore-from-libtorrent-multi-lt-made", Payload::Multi, true);
}

// ------------------------------------------------------------------ 2: btcore seeds

/// transmission-cli downloads from a `btcore seed` that dials it (transmission does
/// not dial 127.x peers it hears of).
fn transmission_from_btcore(name: &'static str, p: Payload) {
    if !require(&[Tool::Transmission]) {
        return;
    }
    let mut case = Case::new(name);
    let data = make(&case, p);
    let torrent = btcore_create(&case, &data, None);
    let (tport, bport) = (free_port(), free_port());
    let dst = case.path("dst");
    let t = transmission(&case, "leech", &torrent, &dst, tport);
    let ti = case.spawn("transmission-leech", t, true);
    transmission_ready(&mut case, ti);
    let src = data.parent().expect("src dir").to_path_buf();
    case.spawn(
        "btcore-seed",
        btcore_seed(&torrent, &src, bport, &[tport], false),
        true,
    );
    // transmission 3.00 does not create the empty files of a torrent.
    case.wait_data(&data, &dst, Empties::Ignored);
    case.finish();
}

#[test]
fn transmission_downloads_single_from_btcore() {
    transmission_from_btcore("transmission-from-btcore-single", Payload::Single);
}

#[test]
fn transmission_downloads_multi_from_btcore() {
    transmission_from_btcore("transmission-from-btcore-multi", Payload::Multi);
}

/// aria2c downloads from a `btcore seed`: btcore dials it, or both meet through
/// opentracker.
fn aria2_from_btcore(name: &'static str, p: Payload, via_tracker: bool) {
    let tools: &[Tool] = if via_tracker {
        &[Tool::Aria2, Tool::Opentracker]
    } else {
        &[Tool::Aria2]
    };
    if !require(tools) {
        return;
    }
    let mut case = Case::new(name);
    let data = make(&case, p);
    let (aport, bport) = (free_port(), free_port());
    let src = data.parent().expect("src dir").to_path_buf();
    let dst = case.path("dst");
    if via_tracker {
        // The torrent names the tracker, so it is made before the tracker starts:
        // the tracker's port is picked first.
        let tport = free_port();
        let url = format!("http://127.0.0.1:{tport}/announce");
        let torrent = btcore_create(&case, &data, Some(&url));
        opentracker(&mut case, &info_hash(&torrent), tport);
        case.spawn(
            "btcore-seed",
            btcore_seed(&torrent, &src, bport, &[], true),
            true,
        );
        let a = case.spawn(
            "aria2-leech",
            aria2(&case, &torrent, &dst, aport, false),
            false,
        );
        case.wait_success(a);
    } else {
        let torrent = btcore_create(&case, &data, None);
        let a = case.spawn(
            "aria2-leech",
            aria2(&case, &torrent, &dst, aport, false),
            false,
        );
        case.wait_port(aport);
        case.spawn(
            "btcore-seed",
            btcore_seed(&torrent, &src, bport, &[aport], false),
            true,
        );
        case.wait_success(a);
    }
    case.check_data(&data, &dst, Empties::Required);
    case.finish();
}

#[test]
fn aria2_downloads_single_from_btcore() {
    aria2_from_btcore("aria2-from-btcore-single", Payload::Single, false);
}

#[test]
fn aria2_downloads_multi_from_btcore_via_opentracker() {
    aria2_from_btcore("aria2-from-btcore-multi-tracker", Payload::Multi, true);
}

/// libtorrent downloads from a `btcore seed`, dialing it (`connect_peer`).
fn libtorrent_from_btcore(name: &'static str, p: Payload) {
    if !require(&[Tool::Libtorrent]) {
        return;
    }
    let mut case = Case::new(name);
    let data = make(&case, p);
    let torrent = btcore_create(&case, &data, None);
    let (lport, bport) = (free_port(), free_port());
    let src = data.parent().expect("src dir").to_path_buf();
    case.spawn(
        "btcore-seed",
        btcore_seed(&torrent, &src, bport, &[], false),
        true,
    );
    case.wait_port(bport);
    let dst = case.path("dst");
    let l = case.spawn(
        "libtorrent-leech",
        libtorrent("download", &torrent, &dst, lport, &[bport]),
        false,
    );
    case.wait_success(l);
    case.check_data(&data, &dst, Empties::Required);
    case.finish();
}

#[test]
fn libtorrent_downloads_single_from_btcore() {
    libtorrent_from_btcore("libtorrent-from-btcore-single", Payload::Single);
}

#[test]
fn libtorrent_downloads_multi_from_btcore() {
    libtorrent_from_btcore("libtorrent-from-btcore-multi", Payload::Multi);
}

// ------------------------------------------------------------------ 3: a swarm

/// One btcore seeder, two btcore leechers and one libtorrent leecher meet through
/// opentracker; every leecher ends with the exact data.
#[test]
fn swarm_with_opentracker() {
    if !require(&[Tool::Libtorrent, Tool::Opentracker]) {
        return;
    }
    let mut case = Case::new("swarm-opentracker");
    let data = make(&case, Payload::Single);
    let tport = free_port();
    let url = format!("http://127.0.0.1:{tport}/announce");
    let torrent = btcore_create(&case, &data, Some(&url));
    opentracker(&mut case, &info_hash(&torrent), tport);
    let src = data.parent().expect("src dir").to_path_buf();
    let seed_port = free_port();
    case.spawn(
        "btcore-seed",
        btcore_seed(&torrent, &src, seed_port, &[], true),
        true,
    );
    case.wait_port(seed_port);
    let mut leechers = Vec::new();
    for i in 1..=2 {
        let dst = case.path(&format!("btcore-{i}"));
        let port = free_port();
        let b = case.spawn(
            &format!("btcore-leech-{i}"),
            btcore_download(&torrent, &dst, port, &[], true),
            false,
        );
        leechers.push((b, dst));
    }
    let dst = case.path("libtorrent");
    let l = case.spawn(
        "libtorrent-leech",
        libtorrent("download", &torrent, &dst, free_port(), &[]),
        false,
    );
    leechers.push((l, dst));
    for (i, dst) in &leechers {
        case.wait_success(*i);
        case.check_data(&data, dst, Empties::Required);
    }
    case.finish();
}
