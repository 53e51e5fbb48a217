//! Real clients meet through btcore's own tracker (`btcore tracker`): transmission-cli,
//! aria2c and libtorrent (python3-libtorrent, driven by `tests/interop/lt.py`) download
//! from each other and from btcore, having found each other only through the tracker,
//! over HTTP and over UDP. Afterwards `btcore scrape` must count every completed client
//! still running as a seeder.
//!
//! Everything runs on 127.0.0.1 with a 4 MiB payload; every wait has a deadline (a case
//! takes less than 90 s); every process started here is killed (by its own handle) and
//! every temporary directory removed when a case ends, failed or not. Received data is
//! compared byte for byte with the source.
//!
//! Known limits on 127.0.0.1, which shape the cases:
//! - transmission-cli 3.00 does not dial peers at 127.x that it hears of from a
//!   tracker; it does announce and accept incoming connections, so it takes part as a
//!   leecher that the others dial once the tracker has told them of it.
//! - libtorrent needs `allow_multiple_connections_per_ip` and uTP off (`lt.py` does so).
//! - aria2 1.36 speaks UDP trackers only with its DHT on (the UDP tracker client lives
//!   in its DHT setup); the UDP case turns its DHT on with no entry point and no saved
//!   routing table, so it knows no node and sends no DHT traffic anywhere.
//!
//! A client that is not installed skips its cases with `skipped: <client> not
//! installed`, unless `BTCORE_INTEROP=1` is set: then the case fails.

use std::collections::HashSet;
use std::fs;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

const BTCORE: &str = env!("CARGO_BIN_EXE_btcore");
const PYTHON: &str = "/usr/bin/python3";
/// The longest a whole case may take.
const CASE_LIMIT: Duration = Duration::from_secs(85);
/// Given to the clients that can stop themselves.
const CLIENT_TIMEOUT_SECS: u64 = 85;
const PAYLOAD_SIZE: usize = 4 * 1024 * 1024;

// ------------------------------------------------------------------ gating

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Transmission,
    Aria2,
    Libtorrent,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Self::Transmission => "transmission-cli",
            Self::Aria2 => "aria2c",
            Self::Libtorrent => "python3-libtorrent",
        }
    }

    fn installed(self) -> bool {
        match self {
            Self::Transmission => in_path("transmission-cli"),
            Self::Aria2 => in_path("aria2c"),
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
             aria2 python3-libtorrent)"
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

/// One 4 MiB file, `DIR/payload.bin` (the seed picks the content).
fn make_payload(dir: &Path, seed: u64) -> PathBuf {
    fs::create_dir_all(dir).expect("create dirs");
    let path = dir.join("payload.bin");
    fs::write(&path, Rng(seed).bytes(PAYLOAD_SIZE)).expect("write content");
    path
}

/// `dst_dir` holds the file `src` with the same name and bytes; else the difference.
fn compare(src: &Path, dst_dir: &Path) -> Result<(), String> {
    let dst = dst_dir.join(src.file_name().expect("source name"));
    let want = fs::read(src).map_err(|e| format!("{}: {e}", src.display()))?;
    let got = fs::read(&dst).map_err(|e| format!("{}: {e}", dst.display()))?;
    if got.len() != want.len() {
        return Err(format!(
            "{}: {} bytes, want {}",
            dst.display(),
            got.len(),
            want.len()
        ));
    }
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
    /// A seeder or the tracker: its exit is an error.
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
            let from = b.len().saturating_sub(3000);
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

/// One case: a scratch directory, the processes it started, its clock and deadline.
struct Case {
    name: &'static str,
    dir: PathBuf,
    procs: Vec<Proc>,
    start: Instant,
}

impl Case {
    fn new(name: &'static str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "btcore-trinterop-{name}-{}-{}",
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

    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Polls `cond` until it holds; fails at the case's deadline or when a process that
    /// must live has exited.
    fn wait_until(&mut self, what: &str, mut cond: impl FnMut(&mut Self) -> bool) {
        self.wait_for(what, |c| if cond(c) { Ok(()) } else { Err(String::new()) });
    }

    /// Polls `cond` until it is `Ok`; fails at the case's deadline, with the last error,
    /// or when a process that must live has exited.
    fn wait_for(&mut self, what: &str, mut cond: impl FnMut(&mut Self) -> Result<(), String>) {
        let end = self.start + CASE_LIMIT;
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
                        let msg = format!("{} exited ({s}) while waiting for {what}", p.name);
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
    fn wait_data(&mut self, src: &Path, dst_dir: &Path) {
        let what = format!("{} in {}", src.display(), dst_dir.display());
        self.wait_for(&what, |_| compare(src, dst_dir));
    }

    /// Fails unless `dst_dir` holds `src` exactly now.
    fn check_data(&self, src: &Path, dst_dir: &Path) {
        if let Err(e) = compare(src, dst_dir) {
            self.fail(&format!("wrong data: {e}"));
        }
    }

    /// Waits until the tracker's counts for `torrent` (asked with `btcore scrape`)
    /// satisfy `ok`; returns them.
    fn wait_scrape(&mut self, torrent: &Path, what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
        let mut got = None;
        self.wait_for(what, |_| match scrape(torrent) {
            Ok(s) if ok(&s) => {
                got = Some(s);
                Ok(())
            }
            Ok(s) => Err(format!("scrape: {s:?}")),
            Err(e) => Err(e),
        });
        let s = got.expect("scraped");
        println!("{}: scrape: {s:?}", self.name);
        s
    }

    fn finish(self) {
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
fn btcore_bin() -> PathBuf {
    std::env::var_os("BTCORE_INTEROP_BIN").map_or_else(|| PathBuf::from(BTCORE), PathBuf::from)
}

fn btcore(args: &[&str]) -> Command {
    let mut c = Command::new(btcore_bin());
    let level = std::env::var("BTCORE_INTEROP_LOG").unwrap_or_else(|_| "info".into());
    c.args(args).env("RUST_LOG", level);
    c
}

/// `btcore create PATH -o OUT -t TRACKER`.
fn btcore_create(case: &Case, src: &Path, tracker: &str) -> PathBuf {
    let out = case.dir.join(format!(
        "{}.torrent",
        src.file_name().expect("name").to_string_lossy()
    ));
    let mut c = btcore(&["create"]);
    c.arg(src).arg("-o").arg(&out).args(["-t", tracker]);
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

/// `btcore tracker` with HTTP and UDP on 127.0.0.1:`port`, ready to answer.
fn btcore_tracker(case: &mut Case, torrent: &Path, port: u16) {
    let mut c = btcore(&["tracker"]);
    c.args(["--http", &local(port), "--udp", &local(port)]);
    c.arg("--state").arg(case.dir.join("tracker-state"));
    let i = case.spawn("btcore-tracker", c, true);
    case.wait_output(i, "tracker: udp://");
    case.wait_port(port);
    // It answers a scrape (over the torrent's own tracker URL, HTTP or UDP).
    case.wait_scrape(torrent, "the tracker to answer a scrape", |_| true);
}

/// A tracker's counts for one torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Scrape {
    seeders: u64,
    leechers: u64,
    downloaded: u64,
}

/// `btcore scrape TORRENT` (to the torrent's first tracker), parsed.
fn scrape(torrent: &Path) -> Result<Scrape, String> {
    let o = btcore(&["scrape", "--timeout", "3"])
        .arg(torrent)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run btcore scrape: {e}"))?;
    let out = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        return Err(format!(
            "btcore scrape: {}: {out}{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    // "<hash> seeders N leechers N downloaded N  (<url>)"
    let words: Vec<&str> = out.split_whitespace().collect();
    let num = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("btcore scrape: no {key} in {out:?}"))
    };
    Ok(Scrape {
        seeders: num("seeders")?,
        leechers: num("leechers")?,
        downloaded: num("downloaded")?,
    })
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

/// `btcore seed TORRENT DIR` on `port`, finding peers through the tracker only.
fn btcore_seed(torrent: &Path, dir: &Path, port: u16) -> Command {
    let mut c = btcore(&["seed"]);
    c.arg(torrent).arg(dir);
    net_args(&mut c, port);
    c
}

/// `btcore download TORRENT -o DIR [--seed]` on `port`, finding peers through the
/// tracker only.
fn btcore_download(torrent: &Path, dir: &Path, port: u16, keep_seeding: bool) -> Command {
    let mut c = btcore(&["download"]);
    c.arg(torrent).arg("-o").arg(dir);
    c.args(["--timeout", &CLIENT_TIMEOUT_SECS.to_string()]);
    if keep_seeding {
        c.arg("--seed");
    }
    net_args(&mut c, port);
    c
}

fn net_args(c: &mut Command, port: u16) {
    c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
    if btcore_has_dht() {
        // Its default bootstrap nodes are public: stay on 127.0.0.1.
        c.arg("--no-dht");
    }
    c.args(["--progress", "plain"]);
}

// ------------------------------------------------------------------ other clients

/// transmission-cli with its own config dir (no DHT, LPD, PEX, uTP or port mapping;
/// listening on 127.0.0.1 only), leeching into `dir`.
fn transmission(case: &Case, torrent: &Path, dir: &Path, port: u16) -> Command {
    let config = case.path("transmission-config");
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

/// aria2c on `port`, leeching into `dir` and exiting when done, with its own `HOME`.
/// `udp_tracker`: turn its DHT on (aria2 speaks UDP trackers only then), with no entry
/// point and a fresh routing table file, on UDP `port`.
fn aria2(case: &Case, torrent: &Path, dir: &Path, port: u16, udp_tracker: bool) -> Command {
    let home = case.path("aria2-home");
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
        "--seed-time=0",
    ]);
    if udp_tracker {
        c.arg("--enable-dht=true");
        c.arg(format!("--dht-listen-port={port}"));
        c.arg(format!(
            "--dht-file-path={}",
            home.join("dht.dat").display()
        ));
    } else {
        c.arg("--enable-dht=false");
    }
    c.arg(format!("--stop={CLIENT_TIMEOUT_SECS}"));
    c.arg(format!("--listen-port={port}"));
    c.arg(format!("--dir={}", dir.display()));
    c.arg(torrent);
    c.env("HOME", home);
    c
}

fn lt_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/lt.py")
}

/// `lt.py seed|download TORRENT DIR --port P`: libtorrent finds its peers through the
/// torrent's tracker.
fn libtorrent(mode: &str, torrent: &Path, dir: &Path, port: u16) -> Command {
    let mut c = Command::new(PYTHON);
    c.arg(lt_py()).arg(mode).arg(torrent).arg(dir);
    c.args(["--port", &port.to_string()]);
    c.args(["--timeout", &CLIENT_TIMEOUT_SECS.to_string()]);
    c
}

// ------------------------------------------------------------------ cases

/// The source file under `case/src`, the torrent (announcing to `url`) and a running
/// btcore tracker on `tport`.
fn setup(case: &mut Case, scheme: &str, seed: u64) -> (PathBuf, PathBuf) {
    let data = make_payload(&case.path("src"), seed);
    let tport = free_port();
    let url = format!("{scheme}://127.0.0.1:{tport}/announce");
    let torrent = btcore_create(case, &data, &url);
    btcore_tracker(case, &torrent, tport);
    (data, torrent)
}

/// A libtorrent seeder of `data`, seeding and announced to the tracker.
fn libtorrent_seeder(case: &mut Case, data: &Path, torrent: &Path) {
    let src = data.parent().expect("src dir").to_path_buf();
    let l = case.spawn(
        "libtorrent-seed",
        libtorrent("seed", torrent, &src, free_port()),
        true,
    );
    case.wait_output(l, "state=seeding");
    case.wait_scrape(torrent, "the libtorrent seeder's announce", |s| {
        s.seeders >= 1
    });
}

/// Over HTTP: transmission, then a libtorrent seeder, then btcore, aria2 and libtorrent
/// leechers, all peers found through the btcore tracker only.
///
/// transmission (which does not dial 127.x peers from a tracker) joins first, so that
/// every later client hears of it in its first announce and dials it; the libtorrent
/// seeder is the first of those. btcore keeps seeding after it completes (`--seed`),
/// so at the end three completed clients are running: the libtorrent seeder,
/// transmission and btcore.
#[test]
fn http_tracker_swarm() {
    if !require(&[Tool::Libtorrent, Tool::Aria2, Tool::Transmission]) {
        return;
    }
    let mut case = Case::new("http-swarm");
    let (data, torrent) = setup(&mut case, "http", 0x4854_5450);

    let t_dst = case.path("transmission");
    let t = transmission(&case, &torrent, &t_dst, free_port());
    let ti = case.spawn("transmission-leech", t, true);
    // Logged at message-level 3 once its (empty) data is checked; it announces then.
    case.wait_output(ti, "Verification is done");
    case.wait_scrape(&torrent, "transmission's announce", |s| s.leechers >= 1);

    libtorrent_seeder(&mut case, &data, &torrent);

    let b_dst = case.path("btcore");
    let b = case.spawn(
        "btcore-leech",
        btcore_download(&torrent, &b_dst, free_port(), true),
        false,
    );
    let a_dst = case.path("aria2");
    let a = case.spawn(
        "aria2-leech",
        aria2(&case, &torrent, &a_dst, free_port(), false),
        false,
    );
    let l_dst = case.path("libtorrent");
    let l = case.spawn(
        "libtorrent-leech",
        libtorrent("download", &torrent, &l_dst, free_port()),
        false,
    );

    case.wait_success(l);
    case.check_data(&data, &l_dst);
    case.wait_success(a);
    case.check_data(&data, &a_dst);
    // btcore and transmission keep running as seeders once complete.
    case.wait_data(&data, &b_dst);
    case.wait_data(&data, &t_dst);
    if case.procs[b].poll().is_some() {
        case.fail("btcore download --seed exited after completing");
    }
    // Running and complete: the libtorrent seeder, transmission, btcore.
    case.wait_scrape(&torrent, "3 seeders in a scrape", |s| s.seeders >= 3);
    case.finish();
}

/// Over UDP: a libtorrent seeder, then btcore, aria2 and libtorrent leechers, all peers
/// found through the btcore tracker only. Each leecher exits once complete.
#[test]
fn udp_tracker_swarm() {
    if !require(&[Tool::Libtorrent, Tool::Aria2]) {
        return;
    }
    let mut case = Case::new("udp-swarm");
    let (data, torrent) = setup(&mut case, "udp", 0x0055_4450);
    libtorrent_seeder(&mut case, &data, &torrent);

    let b_dst = case.path("btcore");
    let b = case.spawn(
        "btcore-leech",
        btcore_download(&torrent, &b_dst, free_port(), false),
        false,
    );
    let a_dst = case.path("aria2");
    let a = case.spawn(
        "aria2-leech",
        aria2(&case, &torrent, &a_dst, free_port(), true),
        false,
    );
    let l_dst = case.path("libtorrent");
    let l = case.spawn(
        "libtorrent-leech",
        libtorrent("download", &torrent, &l_dst, free_port()),
        false,
    );
    for (i, dst) in [(b, &b_dst), (a, &a_dst), (l, &l_dst)] {
        case.wait_success(i);
        case.check_data(&data, dst);
    }
    // Running and complete: the libtorrent seeder.
    case.wait_scrape(&torrent, "a seeder in a scrape", |s| s.seeders >= 1);
    case.finish();
}

/// btcore seeds through the btcore tracker (HTTP); libtorrent and aria2 leechers find
/// it there.
#[test]
fn btcore_seeds_through_its_tracker() {
    if !require(&[Tool::Libtorrent, Tool::Aria2]) {
        return;
    }
    let mut case = Case::new("btcore-seeds");
    let (data, torrent) = setup(&mut case, "http", 0x5345_4544);
    let src = data.parent().expect("src dir").to_path_buf();
    let sport = free_port();
    case.spawn("btcore-seed", btcore_seed(&torrent, &src, sport), true);
    case.wait_port(sport);
    case.wait_scrape(&torrent, "btcore's announce as a seeder", |s| {
        s.seeders >= 1
    });

    let a_dst = case.path("aria2");
    let a = case.spawn(
        "aria2-leech",
        aria2(&case, &torrent, &a_dst, free_port(), false),
        false,
    );
    let l_dst = case.path("libtorrent");
    let l = case.spawn(
        "libtorrent-leech",
        libtorrent("download", &torrent, &l_dst, free_port()),
        false,
    );
    for (i, dst) in [(a, &a_dst), (l, &l_dst)] {
        case.wait_success(i);
        case.check_data(&data, dst);
    }
    // Running and complete: the btcore seeder.
    case.wait_scrape(&torrent, "a seeder in a scrape", |s| s.seeders >= 1);
    case.finish();
}

/// A `btcore download` that completes and exits leaves the tracker's counts as they
/// were before it joined, plus one completed download: its `completed` and `stopped`
/// announces both reach the tracker (one btcore seeder stays).
fn btcore_leecher_is_counted(name: &'static str, scheme: &str) {
    let mut case = Case::new(name);
    let (data, torrent) = setup(&mut case, scheme, 0x434f_554e);
    let src = data.parent().expect("src dir").to_path_buf();
    let sport = free_port();
    case.spawn("btcore-seed", btcore_seed(&torrent, &src, sport), true);
    case.wait_port(sport);
    case.wait_scrape(&torrent, "btcore's announce as a seeder", |s| {
        s.seeders >= 1
    });
    let dst = case.path("btcore");
    let b = case.spawn(
        "btcore-leech",
        btcore_download(&torrent, &dst, free_port(), false),
        false,
    );
    case.wait_success(b);
    case.check_data(&data, &dst);
    let want = Scrape {
        seeders: 1,
        leechers: 0,
        downloaded: 1,
    };
    case.wait_scrape(&torrent, "the leecher's completed and stopped", |s| {
        *s == want
    });
    case.finish();
}

#[test]
fn btcore_leecher_is_counted_over_http() {
    btcore_leecher_is_counted("counted-http", "http");
}

/// btcore's tracker accepts a UDP connection id only from the address (IP and port) it
/// gave it to; btcore's tracker client caches connection ids per tracker and sends
/// every announce from a fresh socket (a new port). So each announce after the first
/// is dropped and retried after a timeout; a download that completes within seconds
/// exits with its `completed` announce unanswered and its `stopped` never sent, and the
/// tracker keeps counting it as a leecher, with no completed download.
#[test]
fn btcore_leecher_is_counted_over_udp() {
    btcore_leecher_is_counted("counted-udp", "udp");
}
