//! The daemon's web page: how it is served (on raw HTTP: gzip and ETags, the same
//! host, login and credentials checks as the RPC, `--web-root` confined to its
//! folder), and the page itself in a real browser (Debian's chromium and
//! chromium-driver through python3-selenium, `web/browser.py`) downloading from a
//! local seeder; then Transmission's own web client served with `--web-root`.
//!
//! The browser cases need chromium, chromium-driver and python3-selenium (skipped
//! without them, failing under `BTCORE_INTEROP=1`); their screenshots go to
//! `target/tmp/web-screenshots/`. Everything runs on 127.0.0.1 with bounded waits.

use common::{
    btcore, btcore_create, btcore_seed, free_port, local, Case, Config, Deadline, Rng, PYTHON,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;

const CONFIG: Config = Config {
    dir_prefix: "btcore-web",
    deadline: Deadline::Case(Duration::from_secs(240)),
    poll: Duration::from_millis(200),
    log_tail: 4000,
    btcore_exit_hint: false,
};

/// A multi-file payload: `DIR/payload/{a.bin, sub/b.bin}` (a.bin ends on a piece
/// boundary, so no piece is shared with b.bin).
fn payload(dir: &Path) -> PathBuf {
    let root = dir.join("payload");
    std::fs::create_dir_all(root.join("sub")).expect("dirs");
    std::fs::write(root.join("a.bin"), Rng(1).bytes(3 << 20)).expect("a");
    std::fs::write(root.join("sub/b.bin"), Rng(2).bytes(1 << 20)).expect("b");
    root
}

/// `btcore daemon` on 127.0.0.1:`rpc`, data in DIR/dl, state in DIR/state.
fn daemon(case: &mut Case, rpc: u16, extra: &[&str]) -> usize {
    let mut c = btcore(&["daemon", "--rpc", &local(rpc), "--port", "0", "--no-dht"]);
    c.arg("--download-dir")
        .arg(case.dir.join("dl"))
        .arg("--state-dir")
        .arg(case.dir.join("state"))
        .args(extra);
    let i = case.spawn("btcore-daemon", c, true);
    case.wait_port(rpc);
    i
}

/// `btcore tracker` on 127.0.0.1:`port` (HTTP).
fn tracker(case: &mut Case, port: u16) {
    let mut c = btcore(&["tracker"]);
    c.args(["--http", &local(port), "--no-udp"]);
    c.arg("--state").arg(case.dir.join("tracker-state"));
    case.spawn("btcore-tracker", c, true);
    case.wait_port(port);
}

/// An HTTP answer: status, headers (lowercase names), body bytes.
struct Resp {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body, gunzipped when it says it is gzip.
    fn content(&self) -> Vec<u8> {
        if self.header("content-encoding") == Some("gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&self.body[..])
                .read_to_end(&mut out)
                .expect("gzip body");
            out
        } else {
            self.body.clone()
        }
    }
}

/// One request on its own connection (raw path: nothing is normalised).
fn get(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req += &format!("Host: 127.0.0.1:{port}\r\n");
    }
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).expect("write");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head");
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        code,
        headers,
        body: resp[split + 4..].to_vec(),
    }
}

fn web_file(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("web").join(name)).expect("web file")
}

#[test]
fn the_built_in_page_is_served_compressed_with_etags() {
    let mut case = Case::new("serve", CONFIG);
    let rpc = free_port();
    daemon(&mut case, rpc, &[]);
    let gz = [("Accept-Encoding", "gzip, deflate, br")];
    for (path, file, ctype) in [
        ("/", "index.html", "text/html"),
        ("/index.html", "index.html", "text/html"),
        ("/app.js", "app.js", "text/javascript"),
        ("/format.js", "format.js", "text/javascript"),
        ("/style.css", "style.css", "text/css"),
        ("/transmission/web/", "index.html", "text/html"),
    ] {
        let r = get(rpc, "GET", path, &gz);
        assert_eq!(r.code, 200, "{path}");
        assert_eq!(r.header("content-encoding"), Some("gzip"), "{path}");
        assert!(
            r.header("content-type").unwrap_or("").starts_with(ctype),
            "{path}"
        );
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
        assert!(
            r.body.len() < web_file(file).len(),
            "{path}: not compressed"
        );
        assert_eq!(r.content(), web_file(file), "{path}: not the page's file");
        // Revalidation: the same ETag gives 304 without a body.
        let etag = r.header("etag").expect("an ETag").to_string();
        let again = get(rpc, "GET", path, &[("If-None-Match", &etag)]);
        assert_eq!(again.code, 304, "{path}");
        assert!(again.body.is_empty(), "{path}");
        assert_eq!(again.header("etag"), Some(etag.as_str()));
    }
    let csp = get(rpc, "GET", "/", &gz);
    assert!(csp
        .header("content-security-policy")
        .is_some_and(|v| v.contains("default-src 'self'")));
    assert_eq!(csp.header("x-frame-options"), Some("DENY"));
    // HEAD: the headers of GET, no body.
    let head = get(rpc, "HEAD", "/app.js", &gz);
    assert_eq!(head.code, 200);
    assert!(head.body.is_empty());
    assert_ne!(head.header("content-length"), Some("0"));
    // A client that refuses gzip: the page exists only compressed.
    assert_eq!(
        get(rpc, "GET", "/", &[("Accept-Encoding", "identity")]).code,
        406
    );
    assert_eq!(
        get(rpc, "GET", "/", &[("Accept-Encoding", "gzip;q=0")]).code,
        406
    );
    // No Accept-Encoding at all: any coding is acceptable (RFC 9110 12.5.3).
    assert_eq!(get(rpc, "GET", "/", &[]).code, 200);
    // What the page does not have, and methods it does not take.
    assert_eq!(get(rpc, "GET", "/nothing.js", &gz).code, 404);
    assert_eq!(get(rpc, "GET", "/../Cargo.toml", &gz).code, 404);
    assert_eq!(get(rpc, "POST", "/", &gz).code, 405);
    // The RPC is still the RPC.
    let r = get(rpc, "GET", "/transmission/rpc", &[]);
    assert_eq!(r.code, 409);
    assert!(r.header("x-transmission-session-id").is_some());
    case.finish();
}

#[test]
fn the_page_passes_the_rpc_checks() {
    let mut case = Case::new("checks", CONFIG);
    let rpc = free_port();
    daemon(
        &mut case,
        rpc,
        &[
            "--rpc-auth",
            "user:secret",
            "--rpc-host-whitelist",
            "nas.lan",
        ],
    );
    let gz = ("Accept-Encoding", "gzip");
    // Credentials: asked for, then accepted; no session id is needed for the page.
    let r = get(rpc, "GET", "/", &[gz]);
    assert_eq!(r.code, 401);
    assert!(r
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Basic")));
    let ok = ("Authorization", "Basic dXNlcjpzZWNyZXQ="); // user:secret
    assert_eq!(get(rpc, "GET", "/", &[gz, ok]).code, 200);
    assert_eq!(
        get(rpc, "GET", "/app.js", &[gz, ok, ("Host", "nas.lan:9091")]).code,
        200
    );
    // DNS rebinding: a name off the whitelist is refused before the credentials.
    assert_eq!(
        get(rpc, "GET", "/", &[gz, ok, ("Host", "evil.example:9091")]).code,
        421
    );
    // Failed logins count for the page as for the RPC: past the limit, 429.
    let bad = ("Authorization", "Basic dXNlcjp3cm9uZw=="); // user:wrong
    let mut codes = Vec::new();
    for _ in 0..12 {
        codes.push(get(rpc, "GET", "/", &[gz, bad]).code);
    }
    assert_eq!(codes[0], 401);
    assert_eq!(codes.last(), Some(&429), "{codes:?}");
    assert_eq!(get(rpc, "GET", "/", &[gz, ok]).code, 429);
    case.finish();
}

#[test]
fn web_root_serves_a_folder_and_nothing_outside_it() {
    let mut case = Case::new("web-root", CONFIG);
    let root = case.path("front");
    std::fs::create_dir_all(root.join("javascript")).expect("dir");
    std::fs::write(root.join("index.html"), "<p>another front-end</p>").expect("index");
    std::fs::write(root.join("javascript/app.js"), "let x = 1;").expect("js");
    std::fs::write(root.join(".hidden"), "h").expect("hidden");
    std::fs::write(case.dir.join("secret.txt"), "secret").expect("secret");
    std::os::unix::fs::symlink(case.dir.join("secret.txt"), root.join("link.txt")).expect("link");
    // Larger than the cap (8 MiB): refused, not read into memory.
    let big = std::fs::File::create(root.join("big.bin")).expect("big");
    big.set_len(9 << 20).expect("sparse file");
    let rpc = free_port();
    let root_arg = root.to_string_lossy().to_string();
    daemon(&mut case, rpc, &["--web-root", &root_arg]);
    // `/` goes where Transmission's front-ends live (they reach the RPC as ../rpc).
    let r = get(rpc, "GET", "/", &[]);
    assert_eq!(r.code, 301);
    assert_eq!(r.header("location"), Some("/transmission/web/"));
    let r = get(rpc, "GET", "/transmission/web", &[]);
    assert_eq!(r.header("location"), Some("/transmission/web/"));
    let r = get(rpc, "GET", "/transmission/web/", &[]);
    assert_eq!(r.code, 200);
    assert_eq!(r.body, b"<p>another front-end</p>");
    assert!(r
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/html")));
    let r = get(rpc, "GET", "/transmission/web/javascript/app.js?v=3", &[]);
    assert_eq!(r.code, 200);
    assert_eq!(r.body, b"let x = 1;");
    let etag = r.header("etag").expect("etag").to_string();
    assert_eq!(
        get(
            rpc,
            "GET",
            "/transmission/web/javascript/app.js",
            &[("If-None-Match", &etag)]
        )
        .code,
        304
    );
    for bad in [
        "/transmission/web/../secret.txt",
        "/transmission/web/%2e%2e/secret.txt",
        "/transmission/web/javascript/..%2f..%2fsecret.txt",
        "/transmission/web/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/../secret.txt",
        "/transmission/web/.hidden",
        "/transmission/web/link.txt",
        "/transmission/web/nothing.html",
        "/transmission/web/javascript/app.js%00.html",
    ] {
        let r = get(rpc, "GET", bad, &[]);
        assert_eq!(r.code, 404, "{bad}");
        assert!(
            !String::from_utf8_lossy(&r.body).contains("secret"),
            "{bad}"
        );
    }
    assert_eq!(get(rpc, "GET", "/transmission/web/big.bin", &[]).code, 403);
    // A --web-root that does not exist stops the daemon at start, with the reason.
    let mut c = btcore(&[
        "daemon",
        "--rpc",
        &local(free_port()),
        "--port",
        "0",
        "--no-dht",
    ]);
    c.arg("--download-dir").arg(case.dir.join("dl2"));
    c.arg("--web-root").arg(case.dir.join("missing"));
    let o = c.output().expect("run");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--web-root"));
    case.finish();
}

// ---------------------------------------------------------------- the browser

/// Whether the browser cases can run: chromium, chromedriver and selenium. Skipped
/// without them, a failure under `BTCORE_INTEROP=1`.
fn browser_ready() -> bool {
    let missing: Vec<&str> = [
        ("/usr/bin/chromium", "chromium"),
        ("/usr/bin/chromedriver", "chromium-driver"),
    ]
    .iter()
    .filter(|(p, _)| !Path::new(p).exists())
    .map(|(_, n)| *n)
    .chain(
        (!Command::new(PYTHON)
            .args(["-c", "import selenium"])
            .output()
            .is_ok_and(|o| o.status.success()))
        .then_some("python3-selenium"),
    )
    .collect();
    if missing.is_empty() {
        return true;
    }
    let list = missing.join(", ");
    if std::env::var("BTCORE_INTEROP").as_deref() == Ok("1") {
        panic!("BTCORE_INTEROP=1 but {list} not installed (apt-get install chromium chromium-driver python3-selenium)");
    }
    println!("skipped: {list} not installed");
    false
}

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots")
}

/// The scene of a browser case: a tracker, a seeder of the payload, a daemon.
struct Scene {
    torrent: PathBuf,
    /// The seeder's copy of the payload.
    src: PathBuf,
    rpc: u16,
}

fn scene(case: &mut Case, daemon_args: &[&str]) -> Scene {
    let src = payload(&case.path("src"));
    let tport = free_port();
    tracker(case, tport);
    let announce = format!("http://127.0.0.1:{tport}/announce");
    let torrent = btcore_create(case, &src, Some(&announce));
    let seeder = btcore_seed(&torrent, &case.dir.join("src"), free_port(), &[], true);
    case.spawn("btcore-seed", seeder, true);
    let rpc = free_port();
    daemon(case, rpc, daemon_args);
    Scene { torrent, src, rpc }
}

/// Runs `browser.py ARGS` to its end (killed past the case's deadline) and fails the
/// case unless it passes.
fn run_browser(case: &mut Case, args: &[String]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/browser.py");
    let mut c = Command::new(PYTHON);
    c.arg(script).args(args);
    // Chromium's profile and caches stay in the case's directory.
    c.env("HOME", case.path("home"));
    let i = case.spawn("browser", c, false);
    case.wait_until("the browser script to finish", |c| {
        c.procs[i].poll().is_some()
    });
    let p = &mut case.procs[i];
    let status = p.status.expect("exited");
    let out = p.log_tail(20_000);
    println!("{out}");
    if !status.success() {
        case.fail(&format!("the browser test failed ({status})"));
    }
}

#[test]
fn the_page_in_a_browser_downloads_from_a_seeder() {
    if !browser_ready() {
        return;
    }
    let mut case = Case::new("browser", CONFIG);
    let s = scene(&mut case, &[]);
    let bad_file = case.dir.join("notes.torrent");
    std::fs::write(&bad_file, "these are notes, not a torrent\n").expect("bad file");
    // A folder that cannot be made: its parent is a file.
    std::fs::write(case.dir.join("afile"), "x").expect("afile");
    let bad_dir = case.dir.join("afile/sub");
    // Names that are markup: shown as text, never run.
    let markup = case
        .path("markup")
        .join("<img src=x onerror=window.pwned=1>");
    std::fs::create_dir_all(&markup).expect("markup dir");
    std::fs::write(markup.join("<svg onload=window.pwned=2>.txt"), "x").expect("markup file");
    let markup_torrent = btcore_create(&case, &markup, None);
    let js_tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/test/format_test.js");
    let args: Vec<String> = vec![
        "btcore".into(),
        "--rpc".into(),
        s.rpc.to_string(),
        "--torrent".into(),
        s.torrent.to_string_lossy().into(),
        "--src".into(),
        s.src.to_string_lossy().into(),
        "--bad-file".into(),
        bad_file.to_string_lossy().into(),
        "--markup-torrent".into(),
        markup_torrent.to_string_lossy().into(),
        "--dl".into(),
        case.dir.join("dl").to_string_lossy().into(),
        "--bad-dir".into(),
        bad_dir.to_string_lossy().into(),
        "--shots".into(),
        screenshots().to_string_lossy().into(),
        "--js-tests".into(),
        js_tests.to_string_lossy().into(),
    ];
    run_browser(&mut case, &args);
    case.finish();
}

#[test]
fn transmissions_web_client_drives_the_daemon_through_web_root() {
    if !browser_ready() {
        return;
    }
    let web = Path::new("/usr/share/transmission/web");
    if !web.join("index.html").exists() {
        if std::env::var("BTCORE_INTEROP").as_deref() == Ok("1") {
            panic!("BTCORE_INTEROP=1 but transmission-common is not installed");
        }
        println!("skipped: transmission-common not installed");
        return;
    }
    let mut case = Case::new("transmission-web", CONFIG);
    let web_arg = web.to_string_lossy().to_string();
    let s = scene(&mut case, &["--web-root", &web_arg]);
    let args: Vec<String> = vec![
        "transmission".into(),
        "--rpc".into(),
        s.rpc.to_string(),
        "--torrent".into(),
        s.torrent.to_string_lossy().into(),
        "--src".into(),
        s.src.to_string_lossy().into(),
        "--dl".into(),
        case.dir.join("dl").to_string_lossy().into(),
        "--shots".into(),
        screenshots().to_string_lossy().into(),
    ];
    run_browser(&mut case, &args);
    case.finish();
}

#[test]
fn the_page_behind_basic_auth_reaches_the_rpc() {
    if !browser_ready() {
        return;
    }
    let mut case = Case::new("auth", CONFIG);
    let rpc = free_port();
    daemon(&mut case, rpc, &["--rpc-auth", "user:secret"]);
    let args: Vec<String> = vec![
        "auth".into(),
        "--rpc".into(),
        rpc.to_string(),
        "--torrent".into(),
        "-".into(),
        "--dl".into(),
        case.dir.join("dl").to_string_lossy().into(),
        "--shots".into(),
        screenshots().to_string_lossy().into(),
    ];
    run_browser(&mut case, &args);
    case.finish();
}

/// The page's JavaScript tests under node, where node is installed (the browser
/// case runs the same tests in chromium).
#[test]
fn javascript_unit_tests_under_node() {
    let Ok(o) = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("web/test/format_test.js"))
        .output()
    else {
        if std::env::var("BTCORE_INTEROP").as_deref() == Ok("1") {
            panic!("BTCORE_INTEROP=1 but node is not installed (apt-get install nodejs)");
        }
        println!("skipped: node not installed");
        return;
    };
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    println!("{out}");
    assert!(o.status.success(), "{out}");
    assert!(out.contains(" 0 failed"), "{out}");
}
