//! BEP 19 web seeds with real processes on loopback: a multi-file torrent (62 files in
//! nested folders, names with spaces and non-ASCII) served by a small HTTP server in
//! Python (`http.server` with `Range` support, keep-alive, written by this test into
//! its scratch directory), downloaded by a `btcore download` process:
//!
//! - the web seed as the only source: the download completes byte for byte, with
//!   `Range` requests on kept-alive connections;
//! - a web seed and a `btcore seed` peer, both throttled: both contribute;
//! - a web seed whose first response is corrupted: it is dropped (never asked again)
//!   and the download completes from the peer, which is not banned;
//! - web seeds that are down (connection refused, 404, 503 with `Retry-After`) beside
//!   a peer: the download completes from the peer in its own time, and the web seeds
//!   were retried: the 503 one no sooner than its `Retry-After`, the 404 one after the
//!   session's backoff;
//! - a web seed that answers 503 with `Retry-After: 1` twice, then serves: the download
//!   completes from it alone.
//!
//! Every wait has a deadline; every process is killed by its own handle (PID) when the
//! case ends; the scratch directory is removed.

use common::{
    btcore, btcore_download, btcore_seed, free_port, local, make_multi, Case, Config, Deadline,
    Empties, PYTHON,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;

const CONFIG: Config = Config {
    dir_prefix: "btcore-webseed",
    deadline: Deadline::Case(Duration::from_secs(60)),
    poll: Duration::from_millis(50),
    log_tail: 3000,
    btcore_exit_hint: true,
};

/// The HTTP server: `serve.py ROOT PORT LOG [--rate B/s] [--fail N STATUS RETRY]
/// [--corrupt-first]`. Answers `GET` with `Range: bytes=a-b` (206 and
/// `Content-Range`), without it (200), 404 for what is missing; `--fail`: the first N
/// requests (-1: all) get STATUS with `Retry-After: RETRY`; `--corrupt-first`: one
/// byte of the first 206 answer is flipped; `--rate`: bytes per second per
/// connection. Each request is logged: time, client port, path, range, status.
const SERVER: &str = r#"
import os, sys, time, threading, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

root, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
args = sys.argv[4:]
rate = 0
fail_n, fail_status, fail_retry = 0, 503, "1"
corrupt = False
i = 0
while i < len(args):
    if args[i] == "--rate":
        rate = int(args[i + 1]); i += 2
    elif args[i] == "--fail":
        fail_n, fail_status, fail_retry = int(args[i + 1]), int(args[i + 2]), args[i + 3]; i += 4
    elif args[i] == "--corrupt-first":
        corrupt = True; i += 1
    else:
        sys.exit("bad argument " + args[i])
lock = threading.Lock()
state = {"n": 0, "corrupted": False}

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def note(self, rng, status):
        with lock, open(log, "a") as f:
            f.write("%.3f %d %s %s %d\n" % (time.time(), self.client_address[1],
                    urllib.parse.quote(self.path), rng or "-", status))

    def empty(self, status, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        rng = self.headers.get("Range")
        with lock:
            n = state["n"]; state["n"] += 1
        if fail_n < 0 or n < fail_n:
            self.note(rng, fail_status)
            return self.empty(fail_status, [("Retry-After", fail_retry)])
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        full = os.path.join(root, path.lstrip("/"))
        if ".." in path.split("/") or not os.path.isfile(full):
            self.note(rng, 404)
            return self.empty(404)
        size = os.path.getsize(full)
        start, end, status = 0, size - 1, 200
        if rng:
            a, b = rng.strip().split("=", 1)[1].split("-", 1)
            start, end, status = int(a), min(int(b), size - 1), 206
            if start > end:
                self.note(rng, 416)
                return self.empty(416, [("Content-Range", "bytes */%d" % size)])
        self.note(rng, status)
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        with open(full, "rb") as f:
            f.seek(start)
            data = bytearray(f.read(end - start + 1))
        if corrupt and status == 206:
            with lock:
                flip = not state["corrupted"]; state["corrupted"] = True
            if flip:
                data[len(data) // 2] ^= 0xFF
        t0 = time.time()
        try:
            for off in range(0, len(data), 16384):
                self.wfile.write(data[off:off + 16384])
                if rate:
                    ahead = (off + 16384) / rate - (time.time() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
        except (BrokenPipeError, ConnectionResetError):
            pass

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

/// One logged request: seconds, client port, path, range, status.
#[derive(Debug)]
struct Hit {
    at: f64,
    port: u16,
    path: String,
    range: String,
    status: u16,
}

struct Server {
    port: u16,
    log: PathBuf,
}

impl Server {
    /// Starts the server on `root` (the folder that holds the torrent's folder).
    fn start(case: &mut Case, tag: &str, root: &Path, extra: &[&str]) -> Self {
        let script = case.dir.join("serve.py");
        if !script.exists() {
            std::fs::write(&script, SERVER).expect("write server");
        }
        let port = free_port();
        let log = case.dir.join(format!("{tag}.log"));
        std::fs::write(&log, "").expect("log");
        let mut c = Command::new(PYTHON);
        c.arg(&script)
            .arg(root)
            .arg(port.to_string())
            .arg(&log)
            .args(extra);
        case.spawn(tag, c, true);
        case.wait_port(port);
        // The probe of `wait_port` is no request; the log stays empty.
        Self { port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    fn hits(&self) -> Vec<Hit> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                Some(Hit {
                    at: f.first()?.parse().ok()?,
                    port: f.get(1)?.parse().ok()?,
                    path: f.get(2)?.to_string(),
                    range: f.get(3)?.to_string(),
                    status: f.get(4)?.parse().ok()?,
                })
            })
            .collect()
    }
}

/// The data (`DIR/src/multi`) and its torrent with `web_seeds`.
fn torrent(case: &Case, web_seeds: &[String]) -> (PathBuf, PathBuf) {
    let src = case.path("src");
    let data = if src.join("multi").exists() {
        src.join("multi")
    } else {
        make_multi(&src)
    };
    let out = case.dir.join("multi.torrent");
    let mut c = btcore(&["create"]);
    c.arg(&data).arg("-o").arg(&out).args(["--piece-kib", "32"]);
    for w in web_seeds {
        c.args(["-w", w]);
    }
    let o = c.output().expect("btcore create");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (data, out)
}

/// The downloader's report line of the web seed at `url`.
fn report(case: &Case, proc_name: &str, url: &str) -> String {
    let err =
        std::fs::read_to_string(case.dir.join(format!("logs/{proc_name}.err"))).unwrap_or_default();
    err.lines()
        .find(|l| l.contains(&format!("web seed {url}:")))
        .map(str::to_owned)
        .unwrap_or_else(|| case.fail(&format!("no report of web seed {url}")))
}

/// The bytes a report line says the web seed sent.
fn reported_bytes(line: &str) -> u64 {
    line.split(", ")
        .find_map(|p| p.strip_suffix(" bytes"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {line:?}"))
}

fn total_size(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("read dir") {
        let e = e.expect("entry");
        let m = e.metadata().expect("metadata");
        n += if m.is_dir() {
            total_size(&e.path())
        } else {
            m.len()
        };
    }
    n
}

/// A seeder of the torrent (its data is the source), upload limited to `kib` KiB/s.
fn seeder(case: &mut Case, torrent: &Path, src: &Path, kib: u32) -> u16 {
    let port = free_port();
    let mut c = btcore_seed(torrent, src, port, &[], false);
    c.args(["--upload-limit", &kib.to_string()]);
    let i = case.spawn("seeder", c, true);
    case.wait_output(i, "seeding");
    port
}

fn download(case: &mut Case, torrent: &Path, peers: &[u16]) -> (usize, PathBuf) {
    let dst = case.path("dst");
    let c = btcore_download(torrent, &dst, free_port(), peers, false, 50, false);
    let i = case.spawn("leecher", c, false);
    (i, dst)
}

/// The web seed as the only source: byte for byte, with `Range` requests that span
/// the files, several on one kept-alive connection.
#[test]
fn web_seed_alone_completes_the_download() {
    let mut case = Case::new("alone", CONFIG);
    let src = case.path("src");
    make_multi(&src);
    let server = Server::start(&mut case, "http", &src, &[]);
    let ws = server.url("");
    let (data, t) = torrent(&case, std::slice::from_ref(&ws));
    let (i, dst) = download(&mut case, &t, &[]);
    case.wait_success(i);
    case.check_data(&data, &dst, Empties::Required);
    let hits = server.hits();
    assert!(
        hits.iter()
            .all(|h| h.status == 206 && h.range.starts_with("bytes=")),
        "{hits:?}"
    );
    // A file with spaces and non-ASCII in its name was asked for by its escaped URL.
    assert!(
        hits.iter()
            .any(|h| h.path.contains("name%2520with%2520spaces.txt")),
        "{:?}",
        hits.iter().map(|h| &h.path).collect::<Vec<_>>()
    );
    let ports: std::collections::HashSet<u16> = hits.iter().map(|h| h.port).collect();
    assert!(
        ports.len() * 4 <= hits.len(),
        "{} requests on {} connections: not kept alive",
        hits.len(),
        ports.len()
    );
    let line = report(&case, "leecher", &ws);
    assert_eq!(reported_bytes(&line), total_size(&data), "{line}");
    println!(
        "{} requests on {} connections; {line}",
        hits.len(),
        ports.len()
    );
    case.finish();
}

/// A web seed and a peer, both throttled to about 1 MiB/s: both send a share.
#[test]
fn web_seed_and_peer_both_contribute() {
    let mut case = Case::new("both", CONFIG);
    let src = case.path("src");
    make_multi(&src);
    let server = Server::start(&mut case, "http", &src, &["--rate", "1000000"]);
    let ws = server.url("");
    let (data, t) = torrent(&case, std::slice::from_ref(&ws));
    let seed = seeder(&mut case, &t, &src, 1024);
    let (i, dst) = download(&mut case, &t, &[seed]);
    case.wait_success(i);
    case.check_data(&data, &dst, Empties::Required);
    let line = report(&case, "leecher", &ws);
    let web = reported_bytes(&line);
    let total = total_size(&data);
    println!("web seed sent {web} of {total} bytes; {line}");
    assert!(
        web >= total / 10 && web <= total * 9 / 10,
        "{line}: not both sources"
    );
    case.finish();
}

/// A web seed whose first answer has one byte flipped is dropped for good; the peer
/// sends the rest and is not banned.
#[test]
fn corrupt_web_seed_is_dropped_and_the_peer_completes() {
    let mut case = Case::new("corrupt", CONFIG);
    let src = case.path("src");
    make_multi(&src);
    let server = Server::start(
        &mut case,
        "http",
        &src,
        &["--corrupt-first", "--rate", "4000000"],
    );
    let ws = server.url("");
    let (data, t) = torrent(&case, std::slice::from_ref(&ws));
    let seed = seeder(&mut case, &t, &src, 2048);
    let (i, dst) = download(&mut case, &t, &[seed]);
    case.wait_success(i);
    case.check_data(&data, &dst, Empties::Required);
    let line = report(&case, "leecher", &ws);
    assert!(
        line.contains(": dropped,") && line.contains("failed its hash check"),
        "{line}"
    );
    let out = std::fs::read_to_string(case.dir.join("logs/leecher.err")).unwrap_or_default();
    assert!(!out.contains("banned"), "the peer was banned:\n{out}");
    // Dropped at the first piece checked: the server saw a few requests (those of
    // the two connections in flight), not a download's worth.
    let hits = server.hits();
    let total = total_size(&data);
    println!("{} requests; {line}", hits.len());
    assert!(reported_bytes(&line) < total / 2, "{line}");
    case.finish();
}

/// Web seeds that are down never hold the peers back, and are retried: the 503 one
/// after its `Retry-After`, the 404 one after the session's backoff (3 s, doubling).
#[test]
fn web_seeds_that_are_down_are_retried_and_never_stall_the_peer() {
    let mut case = Case::new("down", CONFIG);
    let src = case.path("src");
    make_multi(&src);
    let missing = Server::start(&mut case, "http404", &src.join("nowhere"), &[]);
    let busy = Server::start(&mut case, "http503", &src, &["--fail", "-1", "503", "1"]);
    let refused = format!("http://{}/", local(free_port()));
    let urls = [refused.clone(), missing.url("pub/"), busy.url("")];
    let (data, t) = torrent(&case, &urls);
    // About 10 s of download from the peer alone: the 404 server's retry (3 s in) must
    // find pieces the peer has not been asked for yet. At 1 MiB/s the peer's queue
    // covered the rest by then in a loaded CI run, and the retry never came.
    const KIB_S: u32 = 512;
    let seed = seeder(&mut case, &t, &src, KIB_S);
    let start = std::time::Instant::now();
    let (i, dst) = download(&mut case, &t, &[seed]);
    case.wait_success(i);
    let took = start.elapsed().as_secs_f64();
    case.check_data(&data, &dst, Empties::Required);
    let total = total_size(&data) as f64;
    println!("{total} bytes from the peer in {took:.1} s");
    // The peer alone needs total / its rate; the web seeds cost it no more than 50%.
    assert!(
        took < total / f64::from(KIB_S * 1024) * 1.5 + 2.0,
        "{took:.1} s: stalled"
    );
    let gaps = |h: &[Hit]| -> Vec<f64> { h.windows(2).map(|w| w[1].at - w[0].at).collect() };
    let b = busy.hits();
    assert!(b.len() >= 2 && b.iter().all(|h| h.status == 503), "{b:?}");
    // Two connections may fail together; then each retry waits out Retry-After.
    let mut starts: Vec<f64> = b.iter().map(|h| h.at).collect();
    starts.dedup_by(|x, y| *x - *y < 0.2);
    assert!(starts.len() >= 2, "{b:?}");
    assert!(
        gaps(&b).iter().all(|g| *g >= 0.9 || *g < 0.2),
        "Retry-After ignored: {b:?}"
    );
    let m = missing.hits();
    assert!(m.len() >= 2 && m.iter().all(|h| h.status == 404), "{m:?}");
    let mut ms: Vec<f64> = m.iter().map(|h| h.at).collect();
    ms.dedup_by(|x, y| *x - *y < 0.2);
    assert!(ms.len() >= 2, "404 not retried: {m:?}");
    assert!(
        ms.windows(2).all(|w| w[1] - w[0] >= 2.9),
        "no backoff: {m:?}"
    );
    for (url, what) in [
        (&refused, "refused"),
        (&urls[1], "HTTP 404"),
        (&urls[2], "HTTP 503"),
    ] {
        let line = report(&case, "leecher", url);
        assert!(line.contains("last error"), "{line}");
        assert!(what == "refused" || line.contains(what), "{line}");
        assert_eq!(reported_bytes(&line), 0, "{line}");
    }
    case.finish();
}

/// A web seed that is busy twice (503, `Retry-After: 1`) and then serves: the
/// download completes from it alone, no sooner than the two waits.
#[test]
fn busy_web_seed_is_retried_after_retry_after() {
    let mut case = Case::new("busy", CONFIG);
    let src = case.path("src");
    make_multi(&src);
    let server = Server::start(&mut case, "http", &src, &["--fail", "2", "503", "1"]);
    let ws = server.url("");
    let (data, t) = torrent(&case, std::slice::from_ref(&ws));
    let (i, dst) = download(&mut case, &t, &[]);
    case.wait_success(i);
    case.check_data(&data, &dst, Empties::Required);
    let hits = server.hits();
    let first_ok = hits
        .iter()
        .find(|h| h.status == 206)
        .unwrap_or_else(|| case.fail("no 206"));
    assert!(
        first_ok.at - hits[0].at >= 0.9,
        "retried before Retry-After: {hits:?}"
    );
    let line = report(&case, "leecher", &ws);
    assert_eq!(reported_bytes(&line), total_size(&data), "{line}");
    case.finish();
}

/// Web seed bytes count against the download limit: 2 MiB/s makes the download last
/// its time.
#[test]
fn web_seed_bytes_count_against_the_download_limit() {
    let mut case = Case::new("limit", CONFIG);
    let src = case.path("src");
    make_multi(&src);
    let server = Server::start(&mut case, "http", &src, &[]);
    let ws = server.url("");
    let (data, t) = torrent(&case, std::slice::from_ref(&ws));
    let dst = case.path("dst");
    let mut c = btcore_download(&t, &dst, free_port(), &[], false, 50, false);
    c.args(["--download-limit", "2048"]);
    let start = std::time::Instant::now();
    let i = case.spawn("leecher", c, false);
    case.wait_success(i);
    let took = start.elapsed().as_secs_f64();
    case.check_data(&data, &dst, Empties::Required);
    let total = total_size(&data) as f64;
    let rate = total / took;
    println!("{total} bytes in {took:.1} s: {rate:.0} B/s under a 2 MiB/s limit");
    // The burst and the chunks in flight allow a little more than the limit.
    assert!(
        rate < 2.0 * 1_048_576.0 * 1.15,
        "{rate:.0} B/s: the limit was not applied"
    );
    case.finish();
}
