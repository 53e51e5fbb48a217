//! DHT interoperability on 127.0.0.1: btcore finds peers of tracker-less torrents
//! through the Mainline DHT (BEP 5), among its own nodes and with libtorrent's
//! (python3-libtorrent, driven by `tests/interop/lt_dht.py`).
//!
//! - `btcore_seed_to_btcore_download_over_dht`: a `btcore dht` node, a `btcore seed`
//!   and a `btcore download` of a tracker-less magnet link (needs nothing external);
//! - `libtorrent_seed_to_btcore_download_over_dht`: libtorrent seeds and announces,
//!   btcore bootstraps from a libtorrent node, fetches the metadata (BEP 9) and data;
//! - `btcore_seed_to_libtorrent_download_over_dht`: the reverse.
//!
//! The libtorrent cases print `skipped: ...` when `import libtorrent` fails, or fail
//! under `BTCORE_INTEROP=1`. Every wait has a deadline; every process started here is
//! killed by its PID when its guard drops and every temporary directory is removed
//! (`BTCORE_INTEROP_KEEP=1` keeps them). Processes log to files in the case directory;
//! btcore runs with `RUST_LOG=debug` (`BTCORE_INTEROP_LOG` to change) so a failure
//! shows dialing, closing and DHT lookup lines.

use std::collections::HashSet;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

const BTCORE: &str = env!("CARGO_BIN_EXE_btcore");
const PYTHON: &str = "/usr/bin/python3";
/// The longest one step (a node answering, a download) may take.
const STEP: Duration = Duration::from_secs(45);
/// Given to the processes that stop themselves, a little past what a case may take.
const PROC_SECS: u64 = 90;
const SIZE: usize = 3 * 1024 * 1024;

// ------------------------------------------------------------------ gating

/// Whether python3-libtorrent imports. When it does not, the case is skipped, or fails
/// under `BTCORE_INTEROP=1`.
fn require_libtorrent() -> bool {
    let ok = Command::new(PYTHON)
        .args(["-c", "import libtorrent"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var("BTCORE_INTEROP").as_deref() == Ok("1") {
        panic!(
            "BTCORE_INTEROP=1 but `{PYTHON} -c 'import libtorrent'` fails \
             (apt-get install python3-libtorrent)"
        );
    }
    println!("skipped: python3-libtorrent not installed");
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

// ------------------------------------------------------------------ KRPC probes

/// Sends one KRPC query to 127.0.0.1:`port` and returns the first answer within
/// 500 ms.
fn krpc(port: u16, query: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.send_to(query, ("127.0.0.1", port)).ok()?;
    let mut buf = [0u8; 2048];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// The probe's node id; the probe is read-only (BEP 43 `ro`, put both at the top level
/// and in the arguments), so no node adds it to its routing table.
const PROBE_ID: &[u8; 20] = b"btcore-dht-interop-p";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether a DHT node answers a `ping` on UDP `port`.
fn dht_ping(port: u16) -> bool {
    let mut q = b"d1:ad2:id20:".to_vec();
    q.extend_from_slice(PROBE_ID);
    q.extend_from_slice(b"2:roi1ee1:q4:ping2:roi1e1:t2:pi1:y1:qe");
    krpc(port, &q).is_some_and(|r| contains(&r, b"1:y1:r"))
}

/// The peers the node on UDP `port` holds for `info_hash` (its `get_peers` `values`).
fn dht_values(port: u16, info_hash: &[u8; 20]) -> Vec<SocketAddr> {
    let mut q = b"d1:ad2:id20:".to_vec();
    q.extend_from_slice(PROBE_ID);
    q.extend_from_slice(b"9:info_hash20:");
    q.extend_from_slice(info_hash);
    q.extend_from_slice(b"2:roi1ee1:q9:get_peers2:roi1e1:t2:gp1:y1:qe");
    let Some(r) = krpc(port, &q) else {
        return Vec::new();
    };
    let Some(at) = r.windows(9).position(|w| w == b"6:valuesl") else {
        return Vec::new();
    };
    let mut rest = &r[at + 9..];
    let mut out = Vec::new();
    while rest.len() >= 8 && rest.starts_with(b"6:") {
        let c = &rest[2..8];
        let ip = std::net::Ipv4Addr::new(c[0], c[1], c[2], c[3]);
        out.push(SocketAddr::from((ip, u16::from_be_bytes([c[4], c[5]]))));
        rest = &rest[8..];
    }
    out
}

fn parse_hex20(hex: &str) -> [u8; 20] {
    assert_eq!(hex.len(), 40, "info-hash {hex:?}");
    let mut out = [0u8; 20];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex info-hash");
    }
    out
}

// ------------------------------------------------------------------ content

/// xorshift64*: deterministic content without a dependency.
fn content(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for chunk in v.chunks_mut(8) {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let x = seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&x[..chunk.len()]);
    }
    v
}

// ------------------------------------------------------------------ processes

/// A child process, killed (by its PID, SIGKILL) and reaped when dropped; its output
/// goes to log files.
struct Proc {
    name: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
    /// A seeder or a DHT node: its exit is an error.
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

    fn printed(&self, needle: &str) -> bool {
        [&self.out, &self.err]
            .iter()
            .any(|p| fs::read(p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)))
    }

    fn log_tail(&self) -> String {
        let tail = |p: &Path| {
            let b = fs::read(p).unwrap_or_default();
            let from = b.len().saturating_sub(6000);
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
            "btcore-dht-interop-{name}-{}-{}",
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

    fn secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn fail(&self, msg: &str) -> ! {
        let logs: String = self.procs.iter().map(Proc::log_tail).collect();
        panic!("{}: {msg} (after {:.1} s)\n{logs}", self.name, self.secs())
    }

    /// Polls `cond` until it holds; fails at the deadline or when a process that must
    /// live has exited.
    fn wait_until(&mut self, what: &str, mut cond: impl FnMut(&mut Self) -> bool) {
        let end = Instant::now() + STEP;
        loop {
            if cond(self) {
                println!("{}: {what}: done at {:.1} s", self.name, self.secs());
                return;
            }
            for i in 0..self.procs.len() {
                if self.procs[i].must_live {
                    if let Some(s) = self.procs[i].poll() {
                        let msg = format!(
                            "{} exited ({s}) while waiting for {what}",
                            self.procs[i].name
                        );
                        self.fail(&msg);
                    }
                }
            }
            if Instant::now() >= end {
                self.fail(&format!("timed out waiting for {what}"));
            }
            thread::sleep(Duration::from_millis(100));
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

    fn wait_output(&mut self, i: usize, needle: &str) {
        let what = format!("{needle:?} from {}", self.procs[i].name);
        self.wait_until(&what, |c| c.procs[i].printed(needle));
    }

    fn wait_tcp(&mut self, port: u16) {
        self.wait_until(&format!("TCP port {port} to listen"), |_| {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    fn wait_dht(&mut self, port: u16) {
        self.wait_until(&format!("the DHT node on UDP {port} to answer"), |_| {
            dht_ping(port)
        });
    }

    /// Waits until one of the DHT nodes on `ports` returns `peer` for `info_hash`.
    fn wait_stored(&mut self, ports: &[u16], info_hash: &[u8; 20], peer: u16) {
        let want = SocketAddr::from(([127, 0, 0, 1], peer));
        let what = format!("a DHT node of {ports:?} to hold peer {want}");
        self.wait_until(&what, |_| {
            ports
                .iter()
                .any(|p| dht_values(*p, info_hash).contains(&want))
        });
    }

    /// Fails unless `got` holds exactly `want`.
    fn check_data(&self, got: &Path, want: &[u8]) {
        let data =
            fs::read(got).unwrap_or_else(|e| self.fail(&format!("reading {}: {e}", got.display())));
        if data.len() != want.len() {
            self.fail(&format!(
                "{}: {} bytes, want {}",
                got.display(),
                data.len(),
                want.len()
            ));
        }
        if let Some(at) = data.iter().zip(want).position(|(a, b)| a != b) {
            self.fail(&format!("{}: differs at byte {at}", got.display()));
        }
    }

    fn finish(self) {
        println!("{}: passed in {:.1} s", self.name, self.secs());
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

// ------------------------------------------------------------------ commands

fn btcore(args: &[&str]) -> Command {
    let mut c = Command::new(BTCORE);
    let level = std::env::var("BTCORE_INTEROP_LOG").unwrap_or_else(|_| "debug".into());
    c.args(args).env("RUST_LOG", level);
    c
}

/// A tracker-less torrent of `src` made by `btcore create`: (torrent, magnet link,
/// info-hash).
fn btcore_create(case: &Case, src: &Path) -> (PathBuf, String, [u8; 20]) {
    let out = case.dir.join("data.torrent");
    let o = btcore(&["create"])
        .arg(src)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run btcore create");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let magnet = stdout
        .lines()
        .find(|l| l.starts_with("magnet:"))
        .map(str::to_string);
    let Some(magnet) = magnet.filter(|_| o.status.success()) else {
        case.fail(&format!(
            "btcore create: {}\n{stdout}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ))
    };
    assert!(!magnet.contains("tr="), "a tracker in {magnet}");
    let hex = magnet
        .split("urn:btih:")
        .nth(1)
        .and_then(|r| r.get(..40))
        .unwrap_or_else(|| case.fail(&format!("no info-hash in {magnet}")));
    let info_hash = parse_hex20(hex);
    (out, magnet, info_hash)
}

/// `DIR/src/dht-data.bin` with `SIZE` bytes of content; returns (file, bytes).
fn make_source(case: &Case, seed: u64) -> (PathBuf, Vec<u8>) {
    let data = content(SIZE, seed);
    let file = case.path("src").join("dht-data.bin");
    fs::write(&file, &data).expect("write content");
    (file, data)
}

/// `btcore dht` on UDP `port`, bootstrapping from `boot` (none: a first node).
fn btcore_dht_node(port: u16, boot: &[u16]) -> Command {
    let mut c = btcore(&["dht", "--bind", "127.0.0.1", "--port", &port.to_string()]);
    c.args(["--seconds", &PROC_SECS.to_string()]);
    for b in boot {
        c.args(["--bootstrap", &local(*b)]);
    }
    if boot.is_empty() {
        // The first node: never the public routers. A port nobody listens on; the
        // other nodes come to it.
        c.args(["--bootstrap", &local(free_port())]);
    }
    c
}

/// `--port P --bind 127.0.0.1 --no-trackers --bootstrap ...`: the DHT only.
fn dht_only_args(c: &mut Command, port: u16, boot: &[u16]) {
    c.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--no-trackers",
    ]);
    for b in boot {
        c.args(["--bootstrap", &local(*b)]);
    }
}

fn btcore_seed(torrent: &Path, dir: &Path, port: u16, boot: &[u16]) -> Command {
    let mut c = btcore(&["seed"]);
    c.arg(torrent).arg(dir);
    dht_only_args(&mut c, port, boot);
    c.args(["--progress", "plain"]);
    c
}

fn btcore_download(magnet: &str, dir: &Path, port: u16, boot: &[u16]) -> Command {
    let mut c = btcore(&["download", magnet]);
    c.arg("-o").arg(dir);
    dht_only_args(&mut c, port, boot);
    c.args([
        "--timeout",
        &STEP.as_secs().to_string(),
        "--progress",
        "plain",
    ]);
    c
}

fn lt_dht_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/lt_dht.py")
}

/// `lt_dht.py MODE ARGS... --port P --bootstrap 127.0.0.1:B,...`.
fn libtorrent(mode: &str, args: &[&std::ffi::OsStr], port: u16, boot: &[u16]) -> Command {
    let mut c = Command::new(PYTHON);
    c.arg(lt_dht_py()).arg(mode).args(args);
    c.args(["--port", &port.to_string()]);
    let boot: Vec<String> = boot.iter().map(|b| local(*b)).collect();
    c.args(["--bootstrap", &boot.join(",")]);
    c.args(["--timeout", &PROC_SECS.to_string()]);
    c
}

// ------------------------------------------------------------------ cases

/// btcore alone: a DHT node, a seeder and a downloader of a tracker-less magnet link.
#[test]
fn btcore_seed_to_btcore_download_over_dht() {
    let mut case = Case::new("btcore-btcore");
    let (src, data) = make_source(&case, 0xd47_0001);
    let (torrent, magnet, info_hash) = btcore_create(&case, &src);
    let (boot, seed_port, dl_port) = (free_port(), free_port(), free_port());

    case.spawn("btcore-dht", btcore_dht_node(boot, &[]), true);
    case.wait_dht(boot);
    let src_dir = src.parent().expect("src dir").to_path_buf();
    case.spawn(
        "btcore-seed",
        btcore_seed(&torrent, &src_dir, seed_port, &[boot]),
        true,
    );
    case.wait_tcp(seed_port);
    // The seeder's announce is in the DHT before the downloader's one lookup.
    case.wait_stored(&[boot], &info_hash, seed_port);

    let out = case.path("dl");
    let dl = case.spawn(
        "btcore-download",
        btcore_download(&magnet, &out, dl_port, &[boot]),
        false,
    );
    case.wait_success(dl);
    case.check_data(&out.join("dht-data.bin"), &data);
    case.finish();
}

/// libtorrent seeds a tracker-less torrent and announces it to a DHT of btcore and
/// libtorrent nodes; btcore, bootstrapped from a libtorrent node, finds it, fetches
/// the metadata and the data.
#[test]
fn libtorrent_seed_to_btcore_download_over_dht() {
    if !require_libtorrent() {
        return;
    }
    let mut case = Case::new("lt-btcore");
    let (src, data) = make_source(&case, 0xd47_0002);
    let (torrent, magnet, info_hash) = btcore_create(&case, &src);
    let (boot, lt_node, lt_seed, dl_port) = (free_port(), free_port(), free_port(), free_port());

    // The first node is btcore's; a libtorrent node joins from it. (libtorrent never
    // puts its bootstrap nodes in its routing table, so each libtorrent session is
    // given the first node only and learns the others from it.)
    case.spawn("btcore-dht", btcore_dht_node(boot, &[]), true);
    case.wait_dht(boot);
    case.spawn("lt-node", libtorrent("node", &[], lt_node, &[boot]), true);
    case.wait_dht(lt_node);

    let src_dir = src.parent().expect("src dir").to_path_buf();
    let seed = case.spawn(
        "lt-seed",
        libtorrent(
            "seed",
            &[torrent.as_os_str(), src_dir.as_os_str()],
            lt_seed,
            &[boot],
        ),
        true,
    );
    case.wait_output(seed, "announced");
    // The announce reached a node other than the seeder itself.
    case.wait_stored(&[boot, lt_node], &info_hash, lt_seed);

    // btcore joins the DHT through the libtorrent node.
    let out = case.path("dl");
    let dl = case.spawn(
        "btcore-download",
        btcore_download(&magnet, &out, dl_port, &[lt_node]),
        false,
    );
    case.wait_success(dl);
    case.check_data(&out.join("dht-data.bin"), &data);
    case.finish();
}

/// btcore seeds with the DHT; libtorrent, bootstrapped from the DHT, adds the
/// tracker-less magnet link, finds btcore, fetches the metadata and the data.
#[test]
fn btcore_seed_to_libtorrent_download_over_dht() {
    if !require_libtorrent() {
        return;
    }
    let mut case = Case::new("btcore-lt");
    let (src, data) = make_source(&case, 0xd47_0003);
    let (torrent, magnet, info_hash) = btcore_create(&case, &src);
    let (boot, lt_node, seed_port, lt_dl) = (free_port(), free_port(), free_port(), free_port());

    case.spawn("btcore-dht", btcore_dht_node(boot, &[]), true);
    case.wait_dht(boot);
    case.spawn("lt-node", libtorrent("node", &[], lt_node, &[boot]), true);
    case.wait_dht(lt_node);

    let src_dir = src.parent().expect("src dir").to_path_buf();
    case.spawn(
        "btcore-seed",
        btcore_seed(&torrent, &src_dir, seed_port, &[boot]),
        true,
    );
    case.wait_tcp(seed_port);
    case.wait_stored(&[boot, lt_node], &info_hash, seed_port);

    let out = case.path("dl");
    let dl = case.spawn(
        "lt-download",
        libtorrent(
            "download",
            &[std::ffi::OsStr::new(&magnet), out.as_os_str()],
            lt_dl,
            &[lt_node],
        ),
        false,
    );
    case.wait_success(dl);
    case.check_data(&out.join("dht-data.bin"), &data);
    case.finish();
}
