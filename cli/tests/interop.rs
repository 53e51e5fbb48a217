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

use common::{
    aria2, btcore, btcore_create, btcore_create_with, btcore_download, btcore_has_dht, btcore_seed,
    free_port, info_hash, interop_script, libtorrent, make_multi, require, transmission,
    write_file, Aria2, Case, Config, Deadline, Empties, Rng, Tool, PYTHON,
};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

mod common;

/// The longest any one step (a client getting ready, a download) may take.
const STEP: Duration = Duration::from_secs(90);
/// Given to the clients that can stop themselves, a little past `STEP`.
const CLIENT_TIMEOUT_SECS: u64 = 120;
const SINGLE_SIZE: usize = 20 * 1024 * 1024;
/// How to install every client these cases use.
const INSTALL: &str = "apt-get install transmission-cli aria2 python3-libtorrent opentracker";

const CONFIG: Config = Config {
    dir_prefix: "btcore-interop",
    deadline: Deadline::Step(STEP),
    poll: Duration::from_millis(200),
    log_tail: 4000,
    btcore_exit_hint: true,
};

// ------------------------------------------------------------------ content

/// One 20 MiB file, `DIR/big.bin`.
fn make_single(dir: &Path) -> PathBuf {
    let path = dir.join("big.bin");
    write_file(&path, &Rng(0x00b1_6f11e).bytes(SINGLE_SIZE));
    path
}

// ------------------------------------------------------------------ btcore

// ------------------------------------------------------------------ other clients

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

/// A torrent made by libtorrent's `create_torrent` (hybrid v1+v2, with pad files).
/// A torrent made by libtorrent's `create_torrent` (by default hybrid v1+v2, with pad
/// files; `--v2-only`, `--v1-only`).
fn libtorrent_create_with(case: &Case, src: &Path, args: &[&str]) -> PathBuf {
    let out = case.dir.join(format!(
        "{}-lt.torrent",
        src.file_name().expect("name").to_string_lossy()
    ));
    let o = Command::new(PYTHON)
        .arg(interop_script("lt.py"))
        .arg("create")
        .arg(src)
        .arg(&out)
        .args(args)
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
    if !require(&[Tool::Transmission], INSTALL) {
        return;
    }
    let mut case = Case::new(name, CONFIG);
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
        btcore_download(
            &torrent,
            &dst,
            bport,
            &[tport],
            false,
            CLIENT_TIMEOUT_SECS,
            false,
        ),
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
    if !require(&[Tool::Aria2], INSTALL) {
        return;
    }
    let mut case = Case::new(name, CONFIG);
    let data = make(&case, p);
    let torrent = btcore_create(&case, &data, None);
    let (aport, bport) = (free_port(), free_port());
    let src = data.parent().expect("src dir").to_path_buf();
    let a = case.spawn(
        "aria2-seed",
        aria2(
            &case,
            &torrent,
            &src,
            aport,
            Aria2::Seed,
            CLIENT_TIMEOUT_SECS,
        ),
        true,
    );
    case.wait_output(a, "SEED");
    case.wait_port(aport);
    let dst = case.path("dst");
    let b = case.spawn(
        "btcore-download",
        btcore_download(
            &torrent,
            &dst,
            bport,
            &[aport],
            false,
            CLIENT_TIMEOUT_SECS,
            false,
        ),
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
    let made = if lt_made {
        Made::Libtorrent(&[])
    } else {
        Made::Btcore(&[])
    };
    btcore_from_libtorrent_made(name, p, made, false);
}

/// Who makes a case's torrent, with which extra arguments.
#[derive(Clone, Copy)]
enum Made {
    /// `btcore create` (`--v2`, `--hybrid`).
    Btcore(&'static [&'static str]),
    /// libtorrent's `create_torrent` through `lt.py create` (`--v2-only`).
    Libtorrent(&'static [&'static str]),
}

fn made(case: &Case, data: &Path, how: Made) -> PathBuf {
    match how {
        Made::Btcore(args) => btcore_create_with(case, data, None, args),
        Made::Libtorrent(args) => libtorrent_create_with(case, data, args),
    }
}

/// btcore downloads from a libtorrent seed, given the torrent file or (`by_magnet`)
/// only its magnet link: the info dictionary then comes with `ut_metadata`, and for a
/// v2-only torrent the layer of each file larger than a piece with BEP 52 hash
/// requests, each range checked against its file's root.
fn btcore_from_libtorrent_made(name: &'static str, p: Payload, how: Made, by_magnet: bool) {
    if !require(&[Tool::Libtorrent], INSTALL) {
        return;
    }
    let mut case = Case::new(name, CONFIG);
    let data = make(&case, p);
    let torrent = made(&case, &data, how);
    let magnet = by_magnet.then(|| magnet_of(&case, &torrent));
    let (lport, bport) = (free_port(), free_port());
    let src = data.parent().expect("src dir").to_path_buf();
    let l = case.spawn(
        "libtorrent-seed",
        libtorrent("seed", &torrent, &src, lport, &[], CLIENT_TIMEOUT_SECS),
        true,
    );
    case.wait_output(l, "state=seeding");
    let dst = case.path("dst");
    let b = case.spawn(
        "btcore-download",
        btcore_download(
            magnet.as_deref().map_or(torrent.as_path(), Path::new),
            &dst,
            bport,
            &[lport],
            false,
            CLIENT_TIMEOUT_SECS,
            false,
        ),
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
    if !require(&[Tool::Transmission], INSTALL) {
        return;
    }
    let mut case = Case::new(name, CONFIG);
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
    if !require(tools, INSTALL) {
        return;
    }
    let mut case = Case::new(name, CONFIG);
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
            aria2(
                &case,
                &torrent,
                &dst,
                aport,
                Aria2::Leech,
                CLIENT_TIMEOUT_SECS,
            ),
            false,
        );
        case.wait_success(a);
    } else {
        let torrent = btcore_create(&case, &data, None);
        let a = case.spawn(
            "aria2-leech",
            aria2(
                &case,
                &torrent,
                &dst,
                aport,
                Aria2::Leech,
                CLIENT_TIMEOUT_SECS,
            ),
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
    libtorrent_from_btcore_made(name, p, Made::Btcore(&[]), false);
}

/// libtorrent downloads from a btcore seed, given the torrent file or (`by_magnet`)
/// only its magnet link: the info dictionary then comes from btcore with
/// `ut_metadata`, and for a v2 torrent the piece layers with BEP 52 hash requests.
fn libtorrent_from_btcore_made(name: &'static str, p: Payload, how: Made, by_magnet: bool) {
    if !require(&[Tool::Libtorrent], INSTALL) {
        return;
    }
    let mut case = Case::new(name, CONFIG);
    let data = make(&case, p);
    let torrent = made(&case, &data, how);
    let magnet = by_magnet.then(|| magnet_of(&case, &torrent));
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
        libtorrent(
            "download",
            magnet.as_deref().map_or(torrent.as_path(), Path::new),
            &dst,
            lport,
            &[bport],
            CLIENT_TIMEOUT_SECS,
        ),
        false,
    );
    case.wait_success(l);
    case.check_data(&data, &dst, Empties::Required);
    case.finish();
}

/// btcore on its default listen address (`0.0.0.0`, with its IPv6 twin `[::]`) and
/// libtorrent on `::1` only: the other side dials over IPv6, either way round.
fn over_ipv6(name: &'static str, btcore_seeds: bool) {
    if !require(&[Tool::Libtorrent], INSTALL) {
        return;
    }
    let mut case = Case::new(name, CONFIG);
    let data = make(&case, Payload::Single);
    let torrent = btcore_create(&case, &data, None);
    let (lport, bport) = (free_port(), free_port());
    let src = data.parent().expect("src dir").to_path_buf();
    let dst = case.path("dst");
    let btcore_cmd = |mode: &str, dir: &Path, peers: &[u16]| {
        let mut c = btcore(&[mode]);
        c.arg(&torrent);
        if mode == "download" {
            c.arg("-o").arg(dir);
            c.args(["--timeout", &CLIENT_TIMEOUT_SECS.to_string()]);
        } else {
            c.arg(dir);
        }
        c.args([
            "--port",
            &bport.to_string(),
            "--no-trackers",
            "--progress",
            "plain",
        ]);
        if btcore_has_dht() {
            c.arg("--no-dht");
        }
        for p in peers {
            c.args(["--peer", &format!("[::1]:{p}")]);
        }
        c
    };
    let lt = |mode: &str, dir: &Path, peers: &[u16]| {
        let mut c = libtorrent(mode, &torrent, dir, lport, peers, CLIENT_TIMEOUT_SECS);
        c.arg("--ipv6");
        c
    };
    if btcore_seeds {
        case.spawn("btcore-seed", btcore_cmd("seed", &src, &[]), true);
        case.wait_port(bport);
        let l = case.spawn("libtorrent-leech", lt("download", &dst, &[bport]), false);
        case.wait_success(l);
    } else {
        let l = case.spawn("libtorrent-seed", lt("seed", &src, &[]), true);
        case.wait_output(l, "state=seeding");
        let b = case.spawn(
            "btcore-download",
            btcore_cmd("download", &dst, &[lport]),
            false,
        );
        case.wait_success(b);
    }
    case.check_data(&data, &dst, Empties::Required);
    case.finish();
}

#[test]
fn libtorrent_downloads_from_btcore_over_ipv6() {
    over_ipv6("libtorrent-from-btcore-ipv6", true);
}

#[test]
fn btcore_downloads_from_libtorrent_over_ipv6() {
    over_ipv6("btcore-from-libtorrent-ipv6", false);
}

// ------------------------------------------------------------------ 3: BitTorrent v2

// BEP 52 torrents both ways: v2-only and hybrid, made by libtorrent and by btcore. A
// v2-only torrent's swarm is its truncated SHA-256 info-hash and its pieces are checked
// against the merkle trees alone; a hybrid's pieces against both kinds of hash.

#[test]
fn btcore_downloads_libtorrent_made_v2_only_multi_from_libtorrent() {
    let how = Made::Libtorrent(&["--v2-only"]);
    btcore_from_libtorrent_made(
        "btcore-from-libtorrent-v2-multi",
        Payload::Multi,
        how,
        false,
    );
}

#[test]
fn btcore_downloads_libtorrent_made_v2_only_single_from_libtorrent() {
    let how = Made::Libtorrent(&["--v2-only"]);
    btcore_from_libtorrent_made(
        "btcore-from-libtorrent-v2-single",
        Payload::Single,
        how,
        false,
    );
}

#[test]
fn libtorrent_downloads_btcore_made_v2_only_multi_from_btcore() {
    let how = Made::Btcore(&["--v2"]);
    libtorrent_from_btcore_made(
        "libtorrent-from-btcore-v2-multi",
        Payload::Multi,
        how,
        false,
    );
}

#[test]
fn libtorrent_downloads_btcore_made_hybrid_multi_from_btcore() {
    let how = Made::Btcore(&["--hybrid"]);
    let name = "libtorrent-from-btcore-hybrid-multi";
    libtorrent_from_btcore_made(name, Payload::Multi, how, false);
}

/// The magnet link of a torrent, from `btcore info --json`.
fn magnet_of(case: &Case, torrent: &Path) -> String {
    let o = btcore(&["info", "--json"])
        .arg(torrent)
        .output()
        .expect("run btcore info");
    let text = String::from_utf8_lossy(&o.stdout);
    let Some(at) = text.find("\"magnet\":") else {
        case.fail(&format!("no magnet in btcore info --json: {text}"));
    };
    let rest = &text[at + 9..];
    let start = rest.find('"').expect("quote") + 1;
    let end = start + rest[start..].find('"').expect("quote");
    rest[start..end].replace("\\u0026", "&")
}

#[test]
fn btcore_downloads_a_v2_only_magnet_from_libtorrent() {
    let how = Made::Libtorrent(&["--v2-only"]);
    btcore_from_libtorrent_made(
        "btcore-magnet-from-libtorrent-v2",
        Payload::Single,
        how,
        true,
    );
}

#[test]
fn btcore_downloads_a_v2_only_multi_magnet_from_libtorrent() {
    let how = Made::Libtorrent(&["--v2-only"]);
    let name = "btcore-magnet-from-libtorrent-v2-multi";
    btcore_from_libtorrent_made(name, Payload::Multi, how, true);
}

/// A hybrid's magnet link names both info-hashes: btcore joins by the v1 one and checks
/// the pieces by their SHA-1 (`ut_metadata` carries no piece layers).
#[test]
fn btcore_downloads_a_hybrid_magnet_from_libtorrent() {
    let how = Made::Libtorrent(&[]);
    let name = "btcore-magnet-from-libtorrent-hybrid";
    btcore_from_libtorrent_made(name, Payload::Multi, how, true);
}

#[test]
fn libtorrent_downloads_a_v2_only_magnet_from_btcore() {
    let how = Made::Btcore(&["--v2"]);
    libtorrent_from_btcore_made(
        "libtorrent-magnet-from-btcore-v2",
        Payload::Multi,
        how,
        true,
    );
}

#[test]
fn libtorrent_downloads_a_hybrid_magnet_from_btcore() {
    let how = Made::Btcore(&["--hybrid"]);
    let name = "libtorrent-magnet-from-btcore-hybrid";
    libtorrent_from_btcore_made(name, Payload::Multi, how, true);
}

#[test]
fn btcore_downloads_btcore_made_v2_only_single_from_libtorrent() {
    let how = Made::Btcore(&["--v2"]);
    let name = "btcore-from-libtorrent-v2-btcore-made";
    btcore_from_libtorrent_made(name, Payload::Single, how, false);
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
    if !require(&[Tool::Libtorrent, Tool::Opentracker], INSTALL) {
        return;
    }
    let mut case = Case::new("swarm-opentracker", CONFIG);
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
            btcore_download(&torrent, &dst, port, &[], true, CLIENT_TIMEOUT_SECS, false),
            false,
        );
        leechers.push((b, dst));
    }
    let dst = case.path("libtorrent");
    let l = case.spawn(
        "libtorrent-leech",
        libtorrent(
            "download",
            &torrent,
            &dst,
            free_port(),
            &[],
            CLIENT_TIMEOUT_SECS,
        ),
        false,
    );
    leechers.push((l, dst));
    for (i, dst) in &leechers {
        case.wait_success(*i);
        case.check_data(&data, dst, Empties::Required);
    }
    case.finish();
}
