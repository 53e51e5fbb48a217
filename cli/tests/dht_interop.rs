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

use common::{
    btcore_cmd, free_port, local, require, Case, Config, Deadline, Rng, Tool, BTCORE, PYTHON,
};
use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;

/// The longest one step (a node answering, a download) may take.
const STEP: Duration = Duration::from_secs(45);
/// Given to the processes that stop themselves, a little past what a case may take.
const PROC_SECS: u64 = 90;
const SIZE: usize = 3 * 1024 * 1024;

const CONFIG: Config = Config {
    dir_prefix: "btcore-dht-interop",
    deadline: Deadline::Step(STEP),
    poll: Duration::from_millis(100),
    log_tail: 6000,
    btcore_exit_hint: false,
};

/// Whether python3-libtorrent imports. When it does not, the case is skipped, or fails
/// under `BTCORE_INTEROP=1`.
fn require_libtorrent() -> bool {
    require(&[Tool::Libtorrent], "apt-get install python3-libtorrent")
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

impl Case {
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
    fn check_bytes(&self, got: &Path, want: &[u8]) {
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
}

// ------------------------------------------------------------------ commands

/// `btcore ARGS` (this build's), logging at `debug` unless `BTCORE_INTEROP_LOG` says.
fn btcore(args: &[&str]) -> Command {
    btcore_cmd(BTCORE, "debug", args)
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
    let data = Rng(seed).bytes(SIZE);
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

/// `lt_dht.py MODE ARGS... --port P --bootstrap 127.0.0.1:B,...`.
fn libtorrent(mode: &str, args: &[&std::ffi::OsStr], port: u16, boot: &[u16]) -> Command {
    let mut c = Command::new(PYTHON);
    c.arg(common::interop_script("lt_dht.py"))
        .arg(mode)
        .args(args);
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
    let mut case = Case::new("btcore-btcore", CONFIG);
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
    case.wait_port(seed_port);
    // The seeder's announce is in the DHT before the downloader's one lookup.
    case.wait_stored(&[boot], &info_hash, seed_port);

    let out = case.path("dl");
    let dl = case.spawn(
        "btcore-download",
        btcore_download(&magnet, &out, dl_port, &[boot]),
        false,
    );
    case.wait_success(dl);
    case.check_bytes(&out.join("dht-data.bin"), &data);
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
    let mut case = Case::new("lt-btcore", CONFIG);
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
    case.check_bytes(&out.join("dht-data.bin"), &data);
    case.finish();
}

/// btcore seeds with the DHT; libtorrent, bootstrapped from the DHT, adds the
/// tracker-less magnet link, finds btcore, fetches the metadata and the data.
#[test]
fn btcore_seed_to_libtorrent_download_over_dht() {
    if !require_libtorrent() {
        return;
    }
    let mut case = Case::new("btcore-lt", CONFIG);
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
    case.wait_port(seed_port);
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
    case.check_bytes(&out.join("dht-data.bin"), &data);
    case.finish();
}
