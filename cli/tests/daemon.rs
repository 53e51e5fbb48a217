//! `btcore daemon` driven over Transmission's RPC: by Debian's `transmission-remote`
//! (rpc-version 16 names) for a whole download found through a tracker, and by raw
//! HTTP for the protocol itself (the session-id handshake, auth, the host whitelist,
//! old and new names, `format: table`, `recently-active`, every error case), and a
//! restart after `kill -9` that keeps every torrent and finishes the download.
//!
//! Everything runs on 127.0.0.1 with bounded waits; every process is killed by its own
//! handle when a case ends.

use common::{
    btcore, btcore_create, btcore_seed, free_port, local, require, Case, Config, Deadline, Empties,
    Rng, Tool,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;

const CONFIG: Config = Config {
    dir_prefix: "btcore-daemon",
    deadline: Deadline::Case(Duration::from_secs(90)),
    poll: Duration::from_millis(200),
    log_tail: 3000,
    btcore_exit_hint: false,
};

/// A multi-file payload: `DIR/payload/{a.bin, sub/b.bin}`.
fn payload(dir: &Path) -> std::path::PathBuf {
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

/// `transmission-remote 127.0.0.1:PORT ARGS`: its output, or its error.
fn remote(rpc: u16, args: &[&str]) -> Result<String, String> {
    let o = Command::new("transmission-remote")
        .arg(local(rpc))
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if o.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

fn remote_ok(case: &Case, rpc: u16, args: &[&str]) -> String {
    remote(rpc, args).unwrap_or_else(|e| case.fail(&format!("transmission-remote {args:?}: {e}")))
}

/// `btcore tracker` on 127.0.0.1:`port` (HTTP).
fn tracker(case: &mut Case, port: u16) {
    let mut c = btcore(&["tracker"]);
    c.args(["--http", &local(port), "--no-udp"]);
    c.arg("--state").arg(case.dir.join("tracker-state"));
    case.spawn("btcore-tracker", c, true);
    case.wait_port(port);
}

#[test]
fn transmission_remote_drives_a_download() {
    if !require(&[Tool::Transmission], "apt-get install transmission-cli") {
        return;
    }
    let mut case = Case::new("remote", CONFIG);
    let src = payload(&case.path("src"));
    let tport = free_port();
    tracker(&mut case, tport);
    let announce = format!("http://127.0.0.1:{tport}/announce");
    let torrent = btcore_create(&case, &src, Some(&announce));
    let rpc = free_port();
    daemon(&mut case, rpc, &[]);

    // Added before any seeder runs, so the file selection comes first.
    let added = remote_ok(&case, rpc, &["-a", &torrent.to_string_lossy()]);
    assert!(added.contains("success"), "{added}");
    let hash = common::info_hash(&torrent);
    let files = remote_ok(&case, rpc, &["-t", "1", "-if"]);
    assert!(
        files.contains("payload/a.bin") && files.contains("payload/sub/b.bin"),
        "{files}"
    );
    // File 1 (sub/b.bin) unwanted, file 0 high priority.
    remote_ok(&case, rpc, &["-t", "1", "-G", "1"]);
    remote_ok(&case, rpc, &["-t", "1", "-ph", "0"]);
    let files = remote_ok(&case, rpc, &["-t", "1", "-if"]);
    assert!(files.contains("High") && files.contains("No"), "{files}");

    let seed_port = free_port();
    let mut seeder = btcore_seed(&torrent, &case.dir.join("src"), seed_port, &[], true);
    // RC4 only: the peer list must say the connection is encrypted.
    seeder.args(["--encryption", "required"]);
    case.spawn("btcore-seed", seeder, true);
    let dl = case.dir.join("dl");
    // Only the wanted file arrives (a.bin ends on a piece boundary: no piece is shared
    // with b.bin).
    case.wait_data(&src.join("a.bin"), &dl.join("payload"), Empties::Required);
    case.wait_for("the wanted file done in the list", |c| {
        let l = remote_ok(c, rpc, &["-l"]);
        if l.contains("100%") {
            Ok(())
        } else {
            Err(l)
        }
    });
    assert!(
        !dl.join("payload/sub/b.bin").exists(),
        "an unwanted file was written"
    );
    // Wanted again: it arrives.
    remote_ok(&case, rpc, &["-t", "1", "-g", "1"]);
    case.wait_data(&src, &dl, Empties::Required);
    let info = remote_ok(&case, rpc, &["-t", "1", "-i"]);
    assert!(info.contains(&hash), "{info}");
    // The tracker's answer: the peers it gave, its counts.
    let trackers = remote_ok(&case, rpc, &["-t", "1", "-it"]);
    assert!(
        trackers.contains(&format!("127.0.0.1:{tport}")) && trackers.contains("Got a list of"),
        "{trackers}"
    );
    // Tracker edits: one added (a tier of its own), then removed; a reannounce.
    remote_ok(
        &case,
        rpc,
        &["-t", "1", "-td", "http://127.0.0.1:2/announce"],
    );
    let trackers = remote_ok(&case, rpc, &["-t", "1", "-it"]);
    assert!(trackers.contains("127.0.0.1:2"), "{trackers}");
    remote_ok(&case, rpc, &["-t", "1", "-tr", "1"]);
    let trackers = remote_ok(&case, rpc, &["-t", "1", "-it"]);
    assert!(!trackers.contains("127.0.0.1:2"), "{trackers}");
    remote_ok(&case, rpc, &["-t", "1", "--reannounce"]);
    // Limits: the torrent's own, then the session's.
    remote_ok(&case, rpc, &["-t", "1", "-d", "50"]);
    let info = remote_ok(&case, rpc, &["-t", "1", "-i"]);
    assert!(info.contains("Download Limit: 50"), "{info}");
    remote_ok(&case, rpc, &["-u", "300"]);
    let si = remote_ok(&case, rpc, &["-si"]);
    assert!(si.contains("Upload speed limit: 300"), "{si}");
    assert!(si.contains(&dl.to_string_lossy().to_string()), "{si}");
    // The same torrent again is a duplicate, not an error.
    let again = remote_ok(&case, rpc, &["-a", &torrent.to_string_lossy()]);
    assert!(
        again.contains("success") || again.contains("duplicate"),
        "{again}"
    );
    assert_eq!(remote_ok(&case, rpc, &["-l"]).matches("payload").count(), 1);
    // Stop and start, by hash too.
    remote_ok(&case, rpc, &["-t", &hash, "-S"]);
    case.wait_until("the torrent to show Stopped", |c| {
        remote_ok(c, rpc, &["-l"]).contains("Stopped")
    });
    remote_ok(&case, rpc, &["-t", "1", "-s"]);
    // transmission-remote shows a seeding torrent that nobody downloads from as Idle.
    case.wait_until("the torrent to seed again", |c| {
        let l = remote_ok(c, rpc, &["-l"]);
        l.contains("Seeding") || l.contains("Idle")
    });
    // A seed ratio of 0 is reached at once by a complete torrent: it stops seeding.
    remote_ok(&case, rpc, &["-t", "1", "-sr", "0"]);
    case.wait_until("the ratio limit to stop the torrent", |c| {
        let l = remote_ok(c, rpc, &["-l"]);
        l.contains("Stopped") || l.contains("Finished")
    });
    remote_ok(&case, rpc, &["-t", "1", "-SR"]);
    // Move the data while it is known to the daemon.
    let moved = case.dir.join("moved");
    remote_ok(&case, rpc, &["-t", "1", "--move", &moved.to_string_lossy()]);
    case.wait_data(&src, &moved, Empties::Required);
    assert!(!dl.join("payload/a.bin").exists(), "the old copy stayed");
    let info = remote_ok(&case, rpc, &["-t", "1", "-i"]);
    assert!(
        info.contains(&moved.to_string_lossy().to_string()),
        "{info}"
    );
    // Verify finds a damaged piece (the torrent is stopped: it stays short of 100%),
    // and once started it fetches the piece again.
    let a = moved.join("payload/a.bin");
    let mut data = std::fs::read(&a).expect("a.bin");
    data[1000] ^= 0xff;
    std::fs::write(&a, &data).expect("damage");
    remote_ok(&case, rpc, &["-t", "1", "-v"]);
    case.wait_for("the check to find the damage", |c| {
        let l = remote_ok(c, rpc, &["-l"]);
        if l.contains("payload") && !l.contains("100%") && !l.contains("Verifying") {
            Ok(())
        } else {
            Err(l)
        }
    });
    remote_ok(&case, rpc, &["-t", "1", "-s"]);
    case.wait_data(&src, &moved, Empties::Required);
    // Remove with its data.
    remote_ok(&case, rpc, &["-t", "1", "--remove-and-delete"]);
    case.wait_until("the list to be empty", |c| {
        !remote_ok(c, rpc, &["-l"]).contains("payload")
    });
    case.wait_until("the data to be deleted", |_| {
        !moved.join("payload/a.bin").exists() && !moved.join("payload/sub/b.bin").exists()
    });
    // Again by its magnet link: the metadata and the data come from the seeder the
    // tracker names, and the peer list shows it.
    // (The session's limit keeps the download going long enough to see the peer.)
    remote_ok(&case, rpc, &["-d", "500"]);
    let magnet = format!("magnet:?xt=urn:btih:{hash}&dn=payload&tr={announce}");
    let added = remote_ok(&case, rpc, &["-a", &magnet]);
    assert!(added.contains("success"), "{added}");
    // transmission-remote's columns: address, flags, done, down, up, client; the
    // seeder requires RC4, so its flags hold `E` (encrypted).
    case.wait_for("the seeder in the peer list, encrypted", |c| {
        let p = remote_ok(c, rpc, &["-t", &hash, "-ip"]);
        let flags = p
            .lines()
            .find(|l| l.starts_with("127.0.0.1"))
            .and_then(|l| l.split_whitespace().nth(1));
        if flags.is_some_and(|f| f.contains('E')) {
            Ok(())
        } else {
            Err(p)
        }
    });
    // Where that peer came from: the tracker.
    let r = Rpc::new(rpc, None);
    let g = r.call(serde_json::json!({
        "method": "torrent-get", "arguments": {"fields": ["peersFrom"], "ids": [&hash]}
    }));
    let from = &g["arguments"]["torrents"][0]["peersFrom"];
    assert_eq!(from["fromTracker"], 1, "{g}");
    assert_eq!(from["fromIncoming"], 0, "{g}");
    case.wait_data(&src, &dl, Empties::Required);
    case.finish();
}

/// One HTTP request; the status code, the headers (lowercase names) and the body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
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
    req += &format!("Content-Length: {}\r\n\r\n", body.len());
    s.write_all(req.as_bytes()).expect("write");
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let hs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (code, hs, rest.as_bytes().to_vec())
}

/// An RPC client with the session id, optionally with credentials.
struct Rpc {
    port: u16,
    sid: String,
    auth: Option<String>,
}

impl Rpc {
    fn new(port: u16, auth: Option<&str>) -> Self {
        let mut r = Self {
            port,
            sid: String::new(),
            auth: auth.map(|a| format!("Basic {}", b64(a.as_bytes()))),
        };
        let (code, hs, _) = r.raw(b"{}");
        assert_eq!(code, 409, "the first request gets 409");
        r.sid = hs
            .iter()
            .find(|(k, _)| k == "x-transmission-session-id")
            .map(|(_, v)| v.clone())
            .expect("a session id on the 409");
        r
    }

    fn raw(&self, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut h = vec![("X-Transmission-Session-Id", self.sid.as_str())];
        if let Some(a) = &self.auth {
            h.push(("Authorization", a.as_str()));
        }
        http(self.port, "POST", "/transmission/rpc", &h, body)
    }

    fn call(&self, req: serde_json::Value) -> serde_json::Value {
        let (code, _, body) = self.raw(req.to_string().as_bytes());
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("a JSON answer")
    }
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A plain HTTP server on 127.0.0.1 (a thread, for the rest of the test process):
/// `/a.torrent` is `body`, anything else 404. Its port.
fn serve_file(body: Vec<u8>) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().take(16) {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                match s.read(&mut b) {
                    Ok(1) => head.push(b[0]),
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&head);
            let (code, data): (&str, &[u8]) = if head.starts_with("GET /a.torrent ") {
                ("200 OK", &body)
            } else {
                ("404 Not Found", b"")
            };
            let _ = write!(
                s,
                "HTTP/1.1 {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                data.len()
            );
            let _ = s.write_all(data);
        }
    });
    port
}

#[test]
fn the_rpc_protocol_and_its_errors() {
    let mut case = Case::new("protocol", CONFIG);
    let src = payload(&case.path("src"));
    let torrent = btcore_create(&case, &src, Some("http://127.0.0.1:1/announce"));
    let rpc = free_port();
    daemon(
        &mut case,
        rpc,
        &[
            "--rpc-auth",
            "admin:secret",
            "--rpc-host-whitelist",
            "nas.lan",
        ],
    );
    // Auth: none, wrong, right.
    let (code, hs, _) = http(rpc, "POST", "/transmission/rpc", &[], b"{}");
    assert_eq!(code, 401);
    assert!(hs.iter().any(|(k, _)| k == "www-authenticate"));
    let (code, _, _) = http(
        rpc,
        "POST",
        "/transmission/rpc",
        &[("Authorization", &format!("Basic {}", b64(b"admin:wrong")))],
        b"{}",
    );
    assert_eq!(code, 401);
    let r = Rpc::new(rpc, Some("admin:secret"));
    // The host whitelist: a name not on it is refused, an IP, localhost or a listed
    // name pass.
    let auth = format!("Basic {}", b64(b"admin:secret"));
    let with_host = |host: &str| {
        http(
            rpc,
            "POST",
            "/transmission/rpc",
            &[
                ("Host", host),
                ("Authorization", &auth),
                ("X-Transmission-Session-Id", &r.sid),
            ],
            br#"{"method":"session-get"}"#,
        )
        .0
    };
    assert_eq!(with_host("evil.example:9091"), 421);
    assert_eq!(with_host("nas.lan:9091"), 200);
    assert_eq!(with_host("localhost:9091"), 200);
    // A wrong session id: 409 again.
    let (code, _, _) = http(
        rpc,
        "POST",
        "/transmission/rpc",
        &[
            ("Authorization", &auth),
            ("X-Transmission-Session-Id", "nope"),
        ],
        b"{}",
    );
    assert_eq!(code, 409);

    // Add with base64 metainfo, old names; the answer in old names, the tag echoed.
    let meta = b64(&std::fs::read(&torrent).expect("torrent"));
    let a = r.call(serde_json::json!({
        "method": "torrent-add", "tag": 7,
        "arguments": {"metainfo": meta, "paused": true, "labels": ["linux"]}
    }));
    assert_eq!(a["result"], "success", "{a}");
    assert_eq!(a["tag"], 7);
    let id = a["arguments"]["torrent-added"]["id"].as_u64().expect("id");
    assert!(
        a["arguments"]["torrent-added"]["hashString"].is_string(),
        "{a}"
    );
    let dup = r.call(serde_json::json!({"method": "torrent-add", "arguments": {"metainfo": meta}}));
    assert!(dup["arguments"]["torrent-duplicate"].is_object(), "{dup}");
    // New names: snake_case in, snake_case out.
    let g = r.call(serde_json::json!({
        "method": "torrent_get",
        "arguments": {"fields": ["id", "hash_string", "percent_done", "file_stats", "labels", "status"]}
    }));
    let t = &g["arguments"]["torrents"][0];
    assert_eq!(t["id"], id);
    assert!(
        t["hash_string"].is_string() && t["percent_done"].is_number(),
        "{g}"
    );
    assert_eq!(t["file_stats"].as_array().map(Vec::len), Some(2), "{g}");
    assert_eq!(t["labels"][0], "linux");
    assert_eq!(t["status"], 0, "added paused: {g}");
    // Old names: camelCase out.
    let g = r.call(serde_json::json!({
        "method": "torrent-get",
        "arguments": {"fields": ["id", "hashString", "percentDone", "fileStats", "peer-limit"]}
    }));
    let t = &g["arguments"]["torrents"][0];
    assert!(
        t["hashString"].is_string() && t["fileStats"].is_array(),
        "{g}"
    );
    assert!(t["fileStats"][0]["bytesCompleted"].is_number(), "{g}");
    assert!(t["peer-limit"].is_number(), "{g}");
    // The table format.
    let g = r.call(serde_json::json!({
        "method": "torrent-get",
        "arguments": {"fields": ["id", "name"], "format": "table"}
    }));
    assert_eq!(
        g["arguments"]["torrents"][0],
        serde_json::json!(["id", "name"]),
        "{g}"
    );
    assert_eq!(g["arguments"]["torrents"][1][0], id, "{g}");
    // recently-active lists the torrent just added and what was removed.
    let g = r.call(serde_json::json!({
        "method": "torrent-get", "arguments": {"fields": ["id"], "ids": "recently-active"}
    }));
    assert_eq!(g["arguments"]["torrents"][0]["id"], id, "{g}");
    assert!(g["arguments"]["removed"].is_array(), "{g}");
    // JSON-RPC 2.0.
    let j = r.call(serde_json::json!({
        "jsonrpc": "2.0", "method": "session_get", "params": {"fields": ["rpc_version", "download_dir"]}, "id": 3
    }));
    assert_eq!(j["id"], 3);
    assert!(j["result"]["rpc_version"].is_number(), "{j}");
    assert!(j["result"]["download_dir"].is_string(), "{j}");
    let j = r.call(serde_json::json!({"jsonrpc": "2.0", "method": "no_such", "id": 4}));
    assert_eq!(j["error"]["code"], -32601, "{j}");
    // Errors: each a result that is not "success", and the daemon keeps serving.
    for (body, what) in [
        (r#"{"method":"#.to_string(), "malformed JSON"),
        (r#"{"method":"no-such-method"}"#.into(), "an unknown method"),
        (
            r#"{"method":"torrent-add","arguments":{"metainfo":"!!!"}}"#.into(),
            "bad base64",
        ),
        (
            format!(
                r#"{{"method":"torrent-add","arguments":{{"metainfo":"{}"}}}}"#,
                b64(b"d4:infoi1ee")
            ),
            "an invalid torrent",
        ),
        (
            r#"{"method":"torrent-add","arguments":{"filename":"/no/such/file.torrent"}}"#.into(),
            "a missing file",
        ),
        (
            r#"{"method":"torrent-get","arguments":{"fields":"id"}}"#.into(),
            "a wrong type",
        ),
        (
            r#"{"method":"torrent-add","arguments":{}}"#.into(),
            "no torrent given",
        ),
        (r#"[]"#.into(), "an empty batch"),
    ] {
        let (code, _, body) = r.raw(body.as_bytes());
        assert_eq!(code, 200, "{what}");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        let failed = v["result"].as_str().is_some_and(|s| s != "success") || v["error"].is_object();
        assert!(failed, "{what}: {v}");
    }
    // Each field once however often it is asked for.
    let many = vec!["files"; 512];
    let (code, _, body) = r.raw(
        serde_json::json!({"method": "torrent-get", "arguments": {"fields": many, "format": "table"}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        v["arguments"]["torrents"][0],
        serde_json::json!(["files"]),
        "{v}"
    );
    // Thousands of pipelined requests on one connection (refused before any
    // credentials are asked) are answered one turn at a time, and the daemon lives.
    {
        let mut s = TcpStream::connect(("127.0.0.1", rpc)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let flood = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(60_000);
        let mut w = s.try_clone().expect("clone");
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&flood);
        });
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0usize;
        while got < 60_000 * 50 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        let _ = writer.join();
        assert!(got > 0, "no answers to the pipelined requests");
    }
    let alive =
        r.call(serde_json::json!({"method": "session-get", "arguments": {"fields": ["version"]}}));
    assert_eq!(alive["result"], "success", "{alive}");
    // Ids that do not exist select nothing.
    let g = r.call(serde_json::json!({
        "method": "torrent-get", "arguments": {"fields": ["id"], "ids": [999, "00"]}
    }));
    assert_eq!(g["arguments"]["torrents"], serde_json::json!([]), "{g}");
    // A body past the cap is refused at its head.
    let (code, _, _) = http(
        rpc,
        "POST",
        "/transmission/rpc",
        &[
            ("Authorization", &auth),
            ("X-Transmission-Session-Id", &r.sid),
            ("Content-Length", "999999999"),
        ],
        b"",
    );
    assert_eq!(code, 413);
    // The tracker at 127.0.0.1:1 refuses: its status says so. The list is edited in
    // rpc-version 18's form (a blank line between tiers) and kept.
    r.call(serde_json::json!({"method": "torrent-start", "arguments": {"ids": [id]}}));
    case.wait_for("the failed announce in trackerStats", |_| {
        let g = r.call(serde_json::json!({
            "method": "torrent_get", "arguments": {"fields": ["tracker_stats"], "ids": [id]}
        }));
        let t = &g["arguments"]["torrents"][0]["tracker_stats"][0];
        if t["has_announced"] == true
            && t["last_announce_succeeded"] == false
            && !t["last_announce_result"].as_str().unwrap_or("").is_empty()
        {
            Ok(())
        } else {
            Err(g.to_string())
        }
    });
    // Its only tracker failing is the torrent's error (2, a tracker error), in its
    // words.
    let g = r.call(serde_json::json!({
        "method": "torrent-get", "arguments": {"fields": ["error", "errorString"], "ids": [id]}
    }));
    let t = &g["arguments"]["torrents"][0];
    assert_eq!(t["error"], 2, "{g}");
    assert!(!t["errorString"].as_str().unwrap_or("").is_empty(), "{g}");
    let list =
        "http://127.0.0.1:1/announce\nhttp://127.0.0.1:3/announce\n\nudp://127.0.0.1:4/announce";
    let set = r.call(serde_json::json!({
        "method": "torrent_set", "arguments": {"ids": [id], "tracker_list": list}
    }));
    assert_eq!(set["result"], "success", "{set}");
    let g = r.call(serde_json::json!({
        "method": "torrent_get", "arguments": {"fields": ["tracker_list", "trackers"], "ids": [id]}
    }));
    let t = &g["arguments"]["torrents"][0];
    assert_eq!(t["trackers"].as_array().map(Vec::len), Some(3), "{g}");
    assert_eq!(t["trackers"][2]["tier"], 1, "{g}");
    assert_eq!(
        t["tracker_list"]
            .as_str()
            .map(|l| l.matches("\n\n").count()),
        Some(1),
        "{g}"
    );
    let bad = r.call(serde_json::json!({
        "method": "torrent_set", "arguments": {"ids": [id], "tracker_list": "ftp://x/announce"}
    }));
    assert_ne!(bad["result"], "success", "{bad}");
    let again =
        r.call(serde_json::json!({"method": "torrent-reannounce", "arguments": {"ids": [id]}}));
    assert_eq!(again["result"], "success", "{again}");
    r.call(serde_json::json!({"method": "torrent-stop", "arguments": {"ids": [id]}}));
    // Added by URL: the daemon downloads the .torrent (off its loop) and answers
    // when it has it; a URL that fails says why.
    let single = btcore_create(&case, &src.join("a.bin"), None);
    let served = serve_file(std::fs::read(&single).expect("torrent"));
    let url = |path: &str| format!("http://127.0.0.1:{served}{path}");
    let a = r.call(serde_json::json!({
        "method": "torrent-add", "arguments": {"filename": url("/a.torrent"), "paused": true}
    }));
    assert_eq!(a["result"], "success", "{a}");
    assert_eq!(
        a["arguments"]["torrent-added"]["hashString"],
        common::info_hash(&single).as_str(),
        "{a}"
    );
    let a = r.call(serde_json::json!({
        "method": "torrent-add", "arguments": {"filename": url("/missing.torrent")}
    }));
    assert!(a["result"].as_str().unwrap_or("").contains("404"), "{a}");
    // A download queue of one: of the two torrents started, the second waits
    // (status 3) until started past the queue (start-now).
    let set = r.call(serde_json::json!({
        "method": "session-set",
        "arguments": {"download-queue-enabled": true, "download-queue-size": 1,
                      "alt-speed-down": 20, "alt-speed-enabled": true}
    }));
    assert_eq!(set["result"], "success", "{set}");
    let s = r.call(serde_json::json!({"method": "session-get", "arguments": {}}));
    assert_eq!(s["arguments"]["download-queue-size"], 1, "{s}");
    assert_eq!(s["arguments"]["alt-speed-enabled"], true, "{s}");
    assert_eq!(s["arguments"]["alt-speed-down"], 20, "{s}");
    // uTP: on by default, off and on again at run time.
    assert_eq!(s["arguments"]["utp-enabled"], true, "{s}");
    for on in [false, true] {
        let set = r.call(serde_json::json!({
            "method": "session-set", "arguments": {"utp-enabled": on}
        }));
        assert_eq!(set["result"], "success", "{set}");
        let s = r.call(serde_json::json!({"method": "session-get", "arguments": {}}));
        assert_eq!(s["arguments"]["utp-enabled"], on, "{s}");
    }
    let bad = r.call(serde_json::json!({
        "method": "session-set", "arguments": {"alt-speed-time-begin": 5000}
    }));
    assert_ne!(bad["result"], "success", "{bad}");
    r.call(serde_json::json!({"method": "torrent-start", "arguments": {}}));
    let statuses = |r: &Rpc| {
        let g = r.call(serde_json::json!({
            "method": "torrent-get", "arguments": {"fields": ["id", "status", "queuePosition"]}
        }));
        let mut v: Vec<u64> = g["arguments"]["torrents"]
            .as_array()
            .expect("torrents")
            .iter()
            .map(|t| t["status"].as_u64().unwrap_or(99))
            .collect();
        v.sort();
        v
    };
    case.wait_for("one running, one queued", |_| {
        match statuses(&r).as_slice() {
            [3, 4] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    r.call(serde_json::json!({"method": "torrent-start-now", "arguments": {}}));
    case.wait_for("both running", |_| match statuses(&r).as_slice() {
        [4, 4] => Ok(()),
        other => Err(format!("{other:?}")),
    });
    r.call(serde_json::json!({"method": "torrent-stop", "arguments": {}}));
    // Remove; it shows in recently-active's removed list.
    r.call(serde_json::json!({"method": "torrent-remove", "arguments": {"ids": [id]}}));
    let g = r.call(serde_json::json!({
        "method": "torrent-get", "arguments": {"fields": ["id"], "ids": "recently-active"}
    }));
    assert_eq!(g["arguments"]["removed"], serde_json::json!([id]), "{g}");
    // Failed logins are limited: after ten wrong passwords, even the right one waits.
    for _ in 0..12 {
        http(
            rpc,
            "POST",
            "/transmission/rpc",
            &[("Authorization", &format!("Basic {}", b64(b"admin:guess")))],
            b"{}",
        );
    }
    let (code, _, _) = r.raw(br#"{"method":"session-get"}"#);
    assert_eq!(code, 429);
    case.finish();
}

#[test]
fn a_daemon_killed_mid_download_comes_back_and_finishes() {
    let mut case = Case::new("restart", CONFIG);
    let src = payload(&case.path("src"));
    let tport = free_port();
    tracker(&mut case, tport);
    let announce = format!("http://127.0.0.1:{tport}/announce");
    let torrent = btcore_create(&case, &src, Some(&announce));
    let rpc = free_port();
    // The seeder comes later: first the daemon holds two torrents, one paused.
    let other = btcore_create(&case, &src.join("sub"), Some("http://127.0.0.1:1/announce"));
    // Data stays in an incomplete folder until done.
    let inc = case.dir.join("inc");
    let inc_arg = inc.to_string_lossy().to_string();
    let first = daemon(
        &mut case,
        rpc,
        &["--download-limit", "512", "--incomplete-dir", &inc_arg],
    );
    let r = Rpc::new(rpc, None);
    let add = |path: &Path, paused: bool| {
        r.call(serde_json::json!({
            "method": "torrent-add",
            "arguments": {"filename": path.to_string_lossy(), "paused": paused, "labels": ["x"]}
        }))
    };
    assert_eq!(add(&torrent, false)["result"], "success");
    assert_eq!(add(&other, true)["result"], "success");
    // The paused torrent's own settings, which the restart must keep.
    let settings = serde_json::json!({
        "priorities": [1],
        "downloadLimit": 77,
        "downloadLimited": true,
        "uploadLimit": 33,
        "uploadLimited": true,
        "seedRatioLimit": 1.5,
        "seedRatioMode": 1,
        "seedIdleLimit": 9,
        "seedIdleMode": 1,
        "peer-limit": 13,
    });
    let mut set = settings.clone();
    set["ids"] = serde_json::json!([2]);
    set["priority-high"] = serde_json::json!([0]);
    set.as_object_mut().expect("object").remove("priorities");
    let s = r.call(serde_json::json!({"method": "torrent-set", "arguments": set}));
    assert_eq!(s["result"], "success", "{s}");
    let s = r.call(serde_json::json!({
        "method": "torrent-set", "arguments": {"ids": [2], "sequential_download": true}
    }));
    assert_eq!(s["result"], "success", "{s}");
    let seed_port = free_port();
    let seeder = btcore_seed(&torrent, &case.dir.join("src"), seed_port, &[], true);
    case.spawn("btcore-seed", seeder, true);
    // Some of it, not all (the limit keeps it slow), then kill -9.
    case.wait_until("part of the download", |_| {
        let g = r.call(serde_json::json!({
            "method": "torrent-get", "arguments": {"fields": ["percentDone"], "ids": [1]}
        }));
        g["arguments"]["torrents"][0]["percentDone"]
            .as_f64()
            .is_some_and(|p| p > 0.05)
    });
    case.procs[first].must_live = false;
    let pid = case.procs[first].child.id();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    case.wait_until("the daemon to die", |c| c.procs[first].poll().is_some());
    assert!(
        inc.join("payload/a.bin").exists(),
        "not in the incomplete folder"
    );
    assert!(
        !case.dir.join("dl/payload").exists(),
        "in the download folder too early"
    );
    // Back, without the limit: both torrents, the paused one still paused, labels kept.
    daemon(&mut case, rpc, &["--incomplete-dir", &inc_arg]);
    let r = Rpc::new(rpc, None);
    let g = r.call(serde_json::json!({
        "method": "torrent-get",
        "arguments": {"fields": ["hashString", "status", "labels", "name"]}
    }));
    let ts = g["arguments"]["torrents"]
        .as_array()
        .expect("torrents")
        .clone();
    assert_eq!(ts.len(), 2, "{g}");
    let paused = ts
        .iter()
        .find(|t| t["name"] == "sub")
        .expect("the paused torrent");
    assert_eq!(paused["status"], 0, "{g}");
    assert!(ts.iter().all(|t| t["labels"][0] == "x"), "{g}");
    // Its own settings too.
    let mut fields: Vec<&str> = settings
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    fields.push("name");
    let g = r.call(serde_json::json!({
        "method": "torrent-get", "arguments": {"fields": fields, "ids": [2]}
    }));
    let t = &g["arguments"]["torrents"][0];
    for (k, v) in settings.as_object().expect("object") {
        assert_eq!(&t[k], v, "{k} after the restart: {g}");
    }
    let g = r.call(serde_json::json!({
        "method": "torrent-get", "arguments": {"fields": ["sequential_download"], "ids": [2]}
    }));
    // Asked with `torrent-get` (rpc 17's method name), answered in rpc 17's names.
    assert_eq!(
        g["arguments"]["torrents"][0]["sequentialDownload"], true,
        "{g}"
    );
    let dl = case.dir.join("dl");
    // Done: moved to the download folder.
    case.wait_data(&src, &dl, Empties::Required);
    case.wait_until("the incomplete folder to be left", |_| {
        !inc.join("payload/a.bin").exists()
    });
    case.finish();
}

/// Without `--rpc-auth` the RPC listens only on loopback: another address is refused
/// at start, unless `--rpc-allow-unauthenticated` says so in so many words; with
/// auth it serves, and asks for it.
#[test]
fn an_rpc_off_loopback_needs_auth_or_an_explicit_flag() {
    let mut case = Case::new("rpc-open", CONFIG);
    let cmd = |case: &Case, rpc: u16, extra: &[&str]| {
        let mut c = btcore(&["daemon", "--rpc", &format!("0.0.0.0:{rpc}"), "--port", "0"]);
        c.args(["--no-dht", "--no-port-mapping", "--download-dir"])
            .arg(case.dir.join("dl"))
            .arg("--state-dir")
            .arg(case.dir.join("state"))
            .args(extra);
        c
    };
    let rpc = free_port();
    let out = cmd(&case, rpc, &[]).output().expect("run btcore daemon");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&format!(
            "refusing to serve the RPC on 0.0.0.0:{rpc} without --rpc-auth"
        )),
        "{err}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", rpc)).is_err(),
        "it listened"
    );
    // With auth: it serves, and a request without the password gets 401.
    let authed = free_port();
    case.spawn(
        "daemon-auth",
        cmd(&case, authed, &["--rpc-auth", "u:p"]),
        true,
    );
    case.wait_port(authed);
    let (code, _, _) = http(authed, "POST", "/transmission/rpc", &[], b"{}");
    assert_eq!(code, 401);
    // Said in so many words: it serves without auth.
    let open = free_port();
    let c = cmd(&case, open, &["--rpc-allow-unauthenticated"]);
    case.spawn("daemon-open", c, true);
    case.wait_port(open);
    let (code, _, _) = http(open, "POST", "/transmission/rpc", &[], b"{}");
    assert_eq!(code, 409, "the session-id handshake, not auth");
    case.finish();
}

/// The watch folder: a `.torrent` dropped in is added and renamed `.added` (or deleted
/// with `--trash-original-torrent-files`); one still being written is not read before
/// it stops growing; a bad one is renamed `.invalid` and the daemon serves on.
#[test]
fn the_watch_folder_adds_settled_torrents_and_sets_bad_ones_aside() {
    let mut case = Case::new("watch", CONFIG);
    let src = payload(&case.path("src"));
    let good = std::fs::read(btcore_create(&case, &src, None)).expect("torrent");
    let other = std::fs::read(btcore_create(&case, &src.join("sub"), None)).expect("torrent");
    let count = |rpc: u16| -> usize {
        let r = Rpc::new(rpc, None);
        let v = r.call(serde_json::json!({
            "method": "torrent-get", "arguments": {"fields": ["id"]}
        }));
        v["arguments"]["torrents"].as_array().map_or(0, Vec::len)
    };
    for trash in [false, true] {
        let watch = case.dir.join(format!("watch-{trash}"));
        std::fs::create_dir_all(&watch).expect("mkdir");
        let rpc = free_port();
        let mut c = btcore(&["daemon", "--rpc", &local(rpc), "--port", "0", "--no-dht"]);
        c.arg("--download-dir")
            .arg(case.dir.join(format!("dl-{trash}")))
            .arg("--state-dir")
            .arg(case.dir.join(format!("state-{trash}")))
            .arg("--watch")
            .arg(&watch);
        if trash {
            c.arg("--trash-original-torrent-files");
        }
        case.spawn(&format!("daemon-{trash}"), c, true);
        case.wait_port(rpc);
        // Half a torrent now, the rest after 1 s: read early, it would be invalid.
        let slow = watch.join("slow.torrent");
        std::fs::write(&slow, &good[..good.len() / 2]).expect("write");
        std::thread::sleep(Duration::from_secs(1));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&slow)
            .expect("open");
        f.write_all(&good[good.len() / 2..]).expect("append");
        drop(f);
        std::fs::write(watch.join("junk.torrent"), b"d4:infoi1ee").expect("write");
        std::fs::write(watch.join("other.torrent"), &other).expect("write");
        case.wait_until("the watch folder handled", |_| {
            watch.join("junk.torrent.invalid").exists()
                && !slow.exists()
                && !watch.join("other.torrent").exists()
        });
        assert!(
            !watch.join("slow.torrent.invalid").exists(),
            "read while growing"
        );
        for name in ["slow", "other"] {
            let added = watch.join(format!("{name}.torrent.added"));
            assert_eq!(added.exists(), !trash, "{name}: {trash}");
        }
        assert_eq!(count(rpc), 2, "both good torrents added, the junk not");
    }
    case.finish();
}

/// The methods that manage torrents in place: `torrent-set-location` without a move,
/// `torrent-rename-path`, the `queue-move-*` family, `free-space`, `session-stats`,
/// JSON-RPC batches, the honest refusals (`port-test`, `blocklist-update`), the
/// status fields a front-end shows (`error`, `activityDate`, `secondsSeeding`,
/// `isStalled`), and `session-close`, which ends the daemon.
#[test]
fn the_rpc_methods_that_manage_torrents_in_place() {
    let mut case = Case::new("manage", CONFIG);
    let src = payload(&case.path("src"));
    let whole = btcore_create(&case, &src, None);
    let a_only = btcore_create(&case, &src.join("a.bin"), None);
    let b_only = btcore_create(&case, &src.join("sub/b.bin"), None);
    let rpc = free_port();
    let mut c = btcore(&["daemon", "--rpc", &local(rpc), "--port", "0", "--no-dht"]);
    c.arg("--download-dir")
        .arg(case.dir.join("dl"))
        .arg("--state-dir")
        .arg(case.dir.join("state"))
        .env("TZ", "UTC");
    // Not `must_live`: `session-close` ends it.
    let d = case.spawn("btcore-daemon", c, false);
    case.wait_port(rpc);
    let r = Rpc::new(rpc, None);
    let add = |t: &Path, dir: &Path| {
        let a = r.call(serde_json::json!({
            "method": "torrent-add",
            "arguments": {"metainfo": b64(&std::fs::read(t).expect("torrent")),
                          "download-dir": dir.to_string_lossy()}
        }));
        assert_eq!(a["result"], "success", "{a}");
        a["arguments"]["torrent-added"]["id"].as_u64().expect("id")
    };
    // Its data is where it is added: it seeds after its check.
    let data = case.dir.join("src");
    let id = add(&whole, &data);
    let get = |r: &Rpc, fields: serde_json::Value| {
        let g = r.call(serde_json::json!({
            "method": "torrent-get", "arguments": {"fields": fields, "ids": [id]}
        }));
        g["arguments"]["torrents"][0].clone()
    };
    let done = |r: &Rpc| get(r, serde_json::json!(["percentDone", "status"]));
    case.wait_for("the data checked in place", |_| {
        let t = done(&r);
        (t["percentDone"] == 1.0 && t["status"] == 6)
            .then_some(())
            .ok_or(t.to_string())
    });
    // Nothing went wrong, nothing moved yet, it has seeded some seconds, and it is
    // not stalled (it started less than the stalled minutes ago).
    case.wait_for("a second of seeding counted", |_| {
        let t = get(
            &r,
            serde_json::json!([
                "error",
                "errorString",
                "secondsSeeding",
                "secondsDownloading",
                "isStalled",
                "activityDate",
                "startDate"
            ]),
        );
        let ok = t["error"] == 0
            && t["errorString"] == ""
            && t["secondsSeeding"].as_u64() >= Some(1)
            && t["secondsDownloading"] == 0
            && t["isStalled"] == false
            && t["activityDate"] == 0
            && t["startDate"].as_i64() > Some(1_600_000_000);
        ok.then_some(()).ok_or(t.to_string())
    });

    // set-location without `move`: the torrent looks for its data in the new folder
    // (none there: 0%), and nothing is moved; back where the data is, 100% again.
    let empty = case.path("empty");
    let set = r.call(serde_json::json!({
        "method": "torrent-set-location",
        "arguments": {"ids": [id], "location": empty.to_string_lossy(), "move": false}
    }));
    assert_eq!(set["result"], "success", "{set}");
    case.wait_for("0% in the empty folder", |_| {
        let t = done(&r);
        (t["percentDone"] == 0.0 && t["status"] != 2)
            .then_some(())
            .ok_or(t.to_string())
    });
    case.check_data(&src, &data, Empties::Required);
    assert!(
        !empty.join("payload").join("a.bin").exists(),
        "data was moved"
    );
    let t = get(&r, serde_json::json!(["downloadDir"]));
    assert_eq!(t["downloadDir"], empty.to_string_lossy().as_ref(), "{t}");
    let set = r.call(serde_json::json!({
        "method": "torrent-set-location",
        "arguments": {"ids": [id], "location": data.to_string_lossy()}
    }));
    assert_eq!(set["result"], "success", "{set}");
    case.wait_for("100% back with the data", |_| {
        let t = done(&r);
        (t["percentDone"] == 1.0).then_some(()).ok_or(t.to_string())
    });
    let bad = r.call(serde_json::json!({
        "method": "torrent-set-location", "arguments": {"ids": [id], "location": "relative/dir"}
    }));
    assert_ne!(bad["result"], "success", "{bad}");

    // rename-path: a file, on disk and in the list; then the top folder.
    let ren = r.call(serde_json::json!({
        "method": "torrent-rename-path",
        "arguments": {"ids": [id], "path": "payload/a.bin", "name": "c.bin"}
    }));
    assert_eq!(ren["result"], "success", "{ren}");
    assert_eq!(ren["arguments"]["name"], "c.bin", "{ren}");
    assert_eq!(ren["arguments"]["id"], id, "{ren}");
    assert!(data.join("payload/c.bin").is_file() && !data.join("payload/a.bin").exists());
    let ren = r.call(serde_json::json!({
        "method": "torrent-rename-path",
        "arguments": {"ids": [id], "path": "payload", "name": "renamed"}
    }));
    assert_eq!(ren["result"], "success", "{ren}");
    assert!(data.join("renamed/c.bin").is_file() && data.join("renamed/sub/b.bin").is_file());
    let t = get(&r, serde_json::json!(["files", "name"]));
    let names: Vec<&str> = t["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(names, ["renamed/c.bin", "renamed/sub/b.bin"], "{t}");
    for (path, name) in [
        ("no/such.bin", "x"),
        ("renamed/c.bin", "../escape"),
        ("renamed/c.bin", ""),
    ] {
        let bad = r.call(serde_json::json!({
            "method": "torrent-rename-path", "arguments": {"ids": [id], "path": path, "name": name}
        }));
        assert_ne!(bad["result"], "success", "{path} -> {name}: {bad}");
    }
    assert!(!case.dir.join("src/escape").exists());
    // And the data verifies under its new names.
    r.call(serde_json::json!({"method": "torrent-verify", "arguments": {"ids": [id]}}));
    case.wait_for("the renamed data verified", |_| {
        let t = done(&r);
        (t["percentDone"] == 1.0 && t["status"] != 2)
            .then_some(())
            .ok_or(t.to_string())
    });

    // The queue: three torrents, moved about.
    let ida = add(&a_only, &case.path("qa"));
    let idb = add(&b_only, &case.path("qb"));
    let order = |r: &Rpc| {
        let g = r.call(serde_json::json!({
            "method": "torrent-get", "arguments": {"fields": ["id", "queuePosition"]}
        }));
        let mut v: Vec<(u64, u64)> = g["arguments"]["torrents"]
            .as_array()
            .expect("torrents")
            .iter()
            .map(|t| {
                (
                    t["queuePosition"].as_u64().unwrap_or(99),
                    t["id"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect::<Vec<u64>>()
    };
    assert_eq!(order(&r), [id, ida, idb]);
    for (method, ids, want) in [
        ("queue-move-bottom", [id], [ida, idb, id]),
        ("queue-move-top", [idb], [idb, ida, id]),
        ("queue-move-down", [idb], [ida, idb, id]),
        ("queue-move-up", [id], [ida, id, idb]),
        ("queue_move_up", [id], [id, ida, idb]),
    ] {
        let m = r.call(serde_json::json!({"method": method, "arguments": {"ids": ids}}));
        assert_eq!(m["result"], "success", "{method}: {m}");
        assert_eq!(order(&r), want, "after {method}");
    }

    // free-space, in both names; a folder that is not there is an error.
    let f = r.call(serde_json::json!({
        "method": "free-space", "arguments": {"path": case.dir.to_string_lossy()}
    }));
    let (free, total) = (
        f["arguments"]["size-bytes"].as_u64().expect("size-bytes"),
        f["arguments"]["total_size"].as_u64().expect("total_size"),
    );
    assert!(free > 0 && total >= free, "{f}");
    let f = r.call(serde_json::json!({
        "method": "free_space", "arguments": {"path": case.dir.to_string_lossy()}
    }));
    assert!(f["arguments"]["size_bytes"].as_u64().is_some(), "{f}");
    let f = r.call(serde_json::json!({
        "method": "free-space", "arguments": {"path": "/no/such/folder"}
    }));
    assert_ne!(f["result"], "success", "{f}");

    // session-stats: the counts, this run's and all runs' totals.
    let s = r.call(serde_json::json!({"method": "session-stats"}));
    let a = &s["arguments"];
    assert_eq!(a["torrentCount"], 3, "{s}");
    assert_eq!(a["current-stats"]["filesAdded"], 3, "{s}");
    assert_eq!(a["cumulative-stats"]["sessionCount"], 1, "{s}");
    assert!(
        a["downloadSpeed"].is_number() && a["pausedTorrentCount"].is_number(),
        "{s}"
    );

    // A JSON-RPC batch: one answer per call with an id, in order; none for a
    // notification.
    let (code, _, body) = r.raw(
        serde_json::json!([
            {"jsonrpc": "2.0", "method": "session_get", "params": {"fields": ["version"]}, "id": "a"},
            {"jsonrpc": "2.0", "method": "torrent_stop", "params": {"ids": [ida]}},
            {"jsonrpc": "2.0", "method": "no_such_method", "id": 9},
            {"jsonrpc": "2.0", "method": "torrent_get", "params": {"fields": ["id", "status"], "ids": [ida]}, "id": 10}
        ])
        .to_string()
        .as_bytes(),
    );
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let answers = v.as_array().expect("a batch answer");
    assert_eq!(answers.len(), 3, "{v}");
    assert_eq!(answers[0]["id"], "a", "{v}");
    assert!(answers[0]["result"]["version"].is_string(), "{v}");
    assert_eq!(answers[1]["error"]["code"], -32601, "{v}");
    assert_eq!(
        answers[2]["result"]["torrents"][0]["status"], 0,
        "the notification ran: {v}"
    );

    // A speed limit's switch and value are two settings (as Transmission's
    // preferences set them, one at a time): the value is kept while it is off.
    for (args, want) in [
        (
            serde_json::json!({"speed-limit-down-enabled": true}),
            (true, 100),
        ),
        (serde_json::json!({"speed-limit-down": 256}), (true, 256)),
        (
            serde_json::json!({"speed-limit-down-enabled": false}),
            (false, 256),
        ),
        (serde_json::json!({"speed-limit-down": 300}), (false, 300)),
        (
            serde_json::json!({"speed-limit-down-enabled": true}),
            (true, 300),
        ),
    ] {
        let set = r.call(serde_json::json!({"method": "session-set", "arguments": args}));
        assert_eq!(set["result"], "success", "{set}");
        let s = r.call(serde_json::json!({"method": "session-get"}));
        let got = (
            s["arguments"]["speed-limit-down-enabled"]
                .as_bool()
                .unwrap_or(false),
            s["arguments"]["speed-limit-down"].as_u64().unwrap_or(0),
        );
        assert_eq!(got, want, "after {args}");
    }

    // The turtle schedule (the daemon's clock in UTC): a window that holds this
    // minute turns the alternative limits on, one that does not turns them off.
    let minute = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 60
        % 1440) as i64;
    for (begin, end, on) in [
        (minute - 60, minute + 60, true),
        (minute + 120, minute + 180, false),
    ] {
        let set = r.call(serde_json::json!({
            "method": "session-set",
            "arguments": {"alt-speed-time-enabled": true, "alt-speed-time-day": 127,
                          "alt-speed-time-begin": begin.rem_euclid(1440),
                          "alt-speed-time-end": end.rem_euclid(1440)}
        }));
        assert_eq!(set["result"], "success", "{set}");
        let s = r.call(serde_json::json!({
            "method": "session-get", "arguments": {"fields": ["alt-speed-enabled"]}
        }));
        assert_eq!(
            s["arguments"]["alt-speed-enabled"], on,
            "{begin}..{end} at {minute}: {s}"
        );
    }

    // What cannot be done here is said, not faked.
    for m in ["port-test", "blocklist-update"] {
        let x = r.call(serde_json::json!({"method": m}));
        assert_ne!(x["result"], "success", "{m}: {x}");
        assert!(!x["result"].as_str().unwrap_or("").is_empty(), "{m}: {x}");
    }

    // session-close: answered, then the daemon ends cleanly, and its state keeps
    // the queue order for the next start.
    let x = r.call(serde_json::json!({"method": "session-close"}));
    assert_eq!(x["result"], "success", "{x}");
    case.wait_success(d);
    let mut c = btcore(&["daemon", "--rpc", &local(rpc), "--port", "0", "--no-dht"]);
    c.arg("--download-dir")
        .arg(case.dir.join("dl"))
        .arg("--state-dir")
        .arg(case.dir.join("state"));
    case.spawn("btcore-daemon-again", c, true);
    case.wait_port(rpc);
    let r = Rpc::new(rpc, None);
    let by_hash = |r: &Rpc| {
        let g = r.call(serde_json::json!({
            "method": "torrent-get", "arguments": {"fields": ["hashString", "queuePosition", "secondsSeeding"]}
        }));
        g["arguments"]["torrents"].clone()
    };
    let list = by_hash(&r);
    let pos = |t: &Path| {
        let h = common::info_hash(t);
        list.as_array()
            .expect("torrents")
            .iter()
            .find(|x| x["hashString"] == h.as_str())
            .map(|x| x["queuePosition"].as_u64().unwrap_or(99))
    };
    assert_eq!(
        (pos(&whole), pos(&a_only), pos(&b_only)),
        (Some(0), Some(1), Some(2)),
        "{list}"
    );
    case.finish();
}
