//! uTP (BEP 29) against real clients, both ways: libtorrent (python3-libtorrent through
//! `tests/interop/lt.py --utp-only`, its TCP off both ways) and transmission-cli 3.00
//! (uTP on), a single large file and the many-file torrent, in plain text and with RC4
//! encryption, the data compared byte for byte. btcore runs with `--transport utp`.
//!
//! No case can pass over TCP by accident: libtorrent refuses TCP and prints the
//! transport of each peer from its own peer flags (`peer IP:PORT: uTP, rc4`), and
//! transmission's debug log names the socket of each peer (`socket (utp) is`); btcore
//! dials over uTP only. The encryption each connection settled on is checked the same
//! way (btcore's debug log, libtorrent's flags). A few cases check the policy's edges:
//! `--transport utp` gets nothing from a peer without uTP, `--transport tcp` takes no
//! uTP, and the default (`both`) takes uTP when there is and TCP when there is not.
//!
//! transmission dials no 127.x peer it hears of, so the two cases where it dials btcore
//! run in a network namespace of their own with 10.77.0.1 on its loopback (root needed),
//! btcore's tracker introducing them.
//!
//! Gated like `interop.rs`: a client that is not installed skips its cases unless
//! `BTCORE_INTEROP=1` is set. Every wait has a deadline, every process is killed by its
//! own handle when a case ends. See `tests/interop/README.md`.

use common::{
    btcore, btcore_create, btcore_download, btcore_has_dht, btcore_seed, free_port, libtorrent,
    make_multi, require, transmission, write_file, Case, Config, Deadline, Empties, Rng, Tool,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;

/// The longest any one step may take (the transfers take a few seconds; transmission
/// waits about 10 s before it says `interested`).
const STEP: Duration = Duration::from_secs(45);
/// Given to the clients that can stop themselves, a little past `STEP`.
const CLIENT_TIMEOUT_SECS: u64 = 60;
/// 16 MiB and a partial last piece.
const SINGLE_SIZE: usize = 16 * 1024 * 1024 + 12_345;
const INSTALL: &str = "apt-get install transmission-cli python3-libtorrent";
/// btcore's log level: the connection layer at debug level (the encryption method).
const LOG: &str = "info,btcore_host::client=debug,btcore_host::utp=debug";

const CONFIG: Config = Config {
    dir_prefix: "btcore-utp",
    deadline: Deadline::Step(STEP),
    poll: Duration::from_millis(200),
    log_tail: 4000,
    btcore_exit_hint: true,
};

// ------------------------------------------------------------------ payloads

#[derive(Clone, Copy, Debug)]
enum Payload {
    /// One file of `SINGLE_SIZE` bytes.
    Single,
    /// A folder of 62 files (the layout of `interop.rs`).
    Multi,
}

/// The payload under `DIR/src`, and a btcore-made torrent of it.
fn make(case: &Case, p: Payload) -> (PathBuf, PathBuf) {
    let src = case.path("src");
    let data = match p {
        Payload::Single => {
            let path = src.join("big.bin");
            write_file(&path, &Rng(0x0075_7470).bytes(SINGLE_SIZE));
            path
        }
        Payload::Multi => make_multi(&src),
    };
    let torrent = btcore_create(case, &data, None);
    (data, torrent)
}

fn parent(data: &Path) -> PathBuf {
    data.parent().expect("src dir").to_path_buf()
}

// ------------------------------------------------------------------ encryption

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Enc {
    /// Encryption off on both sides.
    Plain,
    /// RC4 required on both sides.
    Rc4,
}

impl Enc {
    /// btcore's `--encryption`.
    fn btcore(self) -> &'static str {
        match self {
            Self::Plain => "disabled",
            Self::Rc4 => "required",
        }
    }

    /// `lt.py --enc`.
    fn libtorrent(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Rc4 => "rc4",
        }
    }

    /// transmission's `encryption` setting: 0 tolerated (prefers plain text), 2 required.
    fn transmission(self) -> u8 {
        match self {
            Self::Plain => 0,
            Self::Rc4 => 2,
        }
    }
}

/// btcore with `--transport TRANSPORT --encryption ENC`, its connection layer logging at
/// debug level (unless `BTCORE_INTEROP_LOG` says otherwise).
fn btcore_with(mut c: Command, transport: &str, enc: Enc) -> Command {
    c.args(["--transport", transport, "--encryption", enc.btcore()]);
    if std::env::var_os("BTCORE_INTEROP_LOG").is_none() {
        c.env("RUST_LOG", LOG);
    }
    c
}

/// `lt.py ... --enc ENC`, with `--utp-only` when `utp_only`.
fn lt_with(mut c: Command, enc: Enc, utp_only: bool) -> Command {
    c.args(["--enc", enc.libtorrent()]);
    if utp_only {
        c.arg("--utp-only");
    }
    c
}

/// transmission-cli as `common::transmission` makes it, with uTP on, encryption `enc`,
/// and its debug log (which names each peer's socket, `socket (utp) is`) on its stdout.
fn transmission_utp(
    case: &Case,
    tag: &str,
    torrent: &Path,
    dir: &Path,
    port: u16,
    enc: Enc,
) -> Command {
    let mut c = transmission(case, tag, torrent, dir, port);
    let settings = case
        .path(&format!("transmission-{tag}"))
        .join("settings.json");
    let mut v: serde_json::Value =
        serde_json::from_slice(&fs::read(&settings).expect("settings")).expect("json");
    v["utp-enabled"] = true.into();
    v["encryption"] = enc.transmission().into();
    fs::write(&settings, v.to_string()).expect("settings");
    c.env("TR_DEBUG_FD", "1");
    c
}

// ------------------------------------------------------------------ what ran

/// Fails unless btcore process `i`'s connections settled on `enc`: the debug log names
/// the method of each encrypted handshake, and there is none in plain text.
fn assert_btcore_enc(case: &Case, i: usize, enc: Enc) {
    let p = &case.procs[i];
    match enc {
        Enc::Rc4 if !p.printed("encrypted handshake done, Rc4") => {
            case.fail(&format!("{} never logged an RC4 handshake", p.name));
        }
        Enc::Plain if p.printed("encrypted handshake done") => {
            case.fail(&format!("{} ran an encrypted handshake", p.name));
        }
        _ => {}
    }
}

/// Fails unless btcore process `i` dialed over uTP and never over TCP (its debug log
/// names the transport of each dial).
fn assert_btcore_dialed_utp(case: &Case, i: usize) {
    let p = &case.procs[i];
    if !p.printed(" over Utp as ") {
        case.fail(&format!("{} never dialed over uTP", p.name));
    }
    if p.printed(" over Tcp as ") {
        case.fail(&format!("{} dialed over TCP", p.name));
    }
}

/// Fails unless libtorrent process `i` had a peer over uTP with `enc`, and none over TCP.
fn assert_lt_utp(case: &Case, i: usize, enc: Enc) {
    let p = &case.procs[i];
    let want = format!(": uTP, {}", enc.libtorrent());
    if !p.printed(&want) {
        case.fail(&format!("{} had no peer {want:?}", p.name));
    }
    if p.printed(": TCP, ") || p.printed("(TCP)") {
        case.fail(&format!("{} had a peer over TCP", p.name));
    }
}

/// Fails unless transmission process `i` had a peer over uTP and none over TCP.
fn assert_transmission_utp(case: &Case, i: usize) {
    let p = &case.procs[i];
    if !p.printed("socket (utp) is") {
        case.fail(&format!("{} had no peer over uTP", p.name));
    }
    if p.printed("socket (tcp) is") {
        case.fail(&format!("{} had a peer over TCP", p.name));
    }
}

// ------------------------------------------------------------------ libtorrent

/// btcore (`--transport utp`) downloads from a libtorrent seed (TCP off) that it dials.
fn btcore_from_libtorrent(name: &'static str, p: Payload, enc: Enc) {
    if !require(&[Tool::Libtorrent], INSTALL) {
        return;
    }
    let mut case = Case::new(name, CONFIG);
    let (data, torrent) = make(&case, p);
    let (lport, bport) = (free_port(), free_port());
    let l = case.spawn(
        "libtorrent-seed",
        lt_with(
            libtorrent(
                "seed",
                &torrent,
                &parent(&data),
                lport,
                &[],
                CLIENT_TIMEOUT_SECS,
            ),
            enc,
            true,
        ),
        true,
    );
    case.wait_output(l, "state=seeding");
    let dst = case.path("dst");
    let b = case.spawn(
        "btcore-download",
        btcore_with(
            btcore_download(
                &torrent,
                &dst,
                bport,
                &[lport],
                false,
                CLIENT_TIMEOUT_SECS,
                false,
            ),
            "utp",
            enc,
        ),
        false,
    );
    case.wait_success(b);
    case.check_data(&data, &dst, Empties::Required);
    // The seed polls its peers every 0.1 s: give it that long to print this one.
    std::thread::sleep(Duration::from_millis(300));
    assert_lt_utp(&case, l, enc);
    assert_btcore_dialed_utp(&case, b);
    assert_btcore_enc(&case, b, enc);
    case.finish();
}

#[test]
fn btcore_downloads_single_from_libtorrent_over_utp() {
    btcore_from_libtorrent("btcore-from-lt-single", Payload::Single, Enc::Plain);
}

#[test]
fn btcore_downloads_single_from_libtorrent_over_utp_rc4() {
    btcore_from_libtorrent("btcore-from-lt-single-rc4", Payload::Single, Enc::Rc4);
}

#[test]
fn btcore_downloads_multi_from_libtorrent_over_utp() {
    btcore_from_libtorrent("btcore-from-lt-multi", Payload::Multi, Enc::Plain);
}

#[test]
fn btcore_downloads_multi_from_libtorrent_over_utp_rc4() {
    btcore_from_libtorrent("btcore-from-lt-multi-rc4", Payload::Multi, Enc::Rc4);
}

/// libtorrent (TCP off) downloads from a `btcore seed --transport utp` that it dials:
/// over uTP, its only way.
fn libtorrent_from_btcore(name: &'static str, p: Payload, enc: Enc) {
    if !require(&[Tool::Libtorrent], INSTALL) {
        return;
    }
    let mut case = Case::new(name, CONFIG);
    let (data, torrent) = make(&case, p);
    let (lport, bport) = (free_port(), free_port());
    let b = case.spawn(
        "btcore-seed",
        btcore_with(
            btcore_seed(&torrent, &parent(&data), bport, &[], false),
            "utp",
            enc,
        ),
        true,
    );
    case.wait_port(bport);
    let dst = case.path("dst");
    let l = case.spawn(
        "libtorrent-leech",
        lt_with(
            libtorrent(
                "download",
                &torrent,
                &dst,
                lport,
                &[bport],
                CLIENT_TIMEOUT_SECS,
            ),
            enc,
            true,
        ),
        false,
    );
    case.wait_success(l);
    case.check_data(&data, &dst, Empties::Required);
    assert_lt_utp(&case, l, enc);
    assert_btcore_enc(&case, b, enc);
    case.finish();
}

#[test]
fn libtorrent_downloads_single_from_btcore_over_utp() {
    libtorrent_from_btcore("lt-from-btcore-single", Payload::Single, Enc::Plain);
}

#[test]
fn libtorrent_downloads_single_from_btcore_over_utp_rc4() {
    libtorrent_from_btcore("lt-from-btcore-single-rc4", Payload::Single, Enc::Rc4);
}

#[test]
fn libtorrent_downloads_multi_from_btcore_over_utp() {
    libtorrent_from_btcore("lt-from-btcore-multi", Payload::Multi, Enc::Plain);
}

#[test]
fn libtorrent_downloads_multi_from_btcore_over_utp_rc4() {
    libtorrent_from_btcore("lt-from-btcore-multi-rc4", Payload::Multi, Enc::Rc4);
}

// ------------------------------------------------------------------ IPv6

/// uTP over IPv6, both ways, with libtorrent on `::1` only and its TCP off. The btcore
/// seed runs its DHT (bootstrapping from nobody): uTP shares the node's IPv4 socket and
/// its IPv6 twin. The btcore leecher runs without one: uTP binds a socket and an IPv6
/// twin of its own.
fn over_ipv6(name: &'static str, btcore_seeds: bool) {
    if !require(&[Tool::Libtorrent], INSTALL) {
        return;
    }
    let mut case = Case::new(name, CONFIG);
    let (data, torrent) = make(&case, Payload::Single);
    let (lport, bport) = (free_port(), free_port());
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
        c.args(["--port", &bport.to_string(), "--no-trackers"]);
        c.args(["--progress", "plain"]);
        if btcore_has_dht() {
            if mode == "seed" {
                // A node of our own, sharing its sockets with uTP: bootstrapped
                // from a port where nobody answers.
                c.args(["--bootstrap", &format!("127.0.0.1:{}", free_port())]);
            } else {
                c.arg("--no-dht");
            }
        }
        for p in peers {
            c.args(["--peer", &format!("[::1]:{p}")]);
        }
        btcore_with(c, "utp", Enc::Plain)
    };
    let lt = |mode: &str, dir: &Path, peers: &[u16]| {
        let mut c = lt_with(
            libtorrent(mode, &torrent, dir, lport, peers, CLIENT_TIMEOUT_SECS),
            Enc::Plain,
            true,
        );
        c.arg("--ipv6");
        c
    };
    let (b, l) = if btcore_seeds {
        let b = case.spawn("btcore-seed", btcore_cmd("seed", &parent(&data), &[]), true);
        case.wait_port(bport);
        let l = case.spawn("libtorrent-leech", lt("download", &dst, &[bport]), false);
        case.wait_success(l);
        (b, l)
    } else {
        let l = case.spawn("libtorrent-seed", lt("seed", &parent(&data), &[]), true);
        case.wait_output(l, "state=seeding");
        let b = case.spawn(
            "btcore-download",
            btcore_cmd("download", &dst, &[lport]),
            false,
        );
        case.wait_success(b);
        std::thread::sleep(Duration::from_millis(300));
        assert_btcore_dialed_utp(&case, b);
        (b, l)
    };
    case.check_data(&data, &dst, Empties::Required);
    assert_lt_utp(&case, l, Enc::Plain);
    if !case.procs[l].printed("peer [::1]:") && !case.procs[l].printed("peer ::1") {
        case.fail("libtorrent had no peer at ::1");
    }
    assert_btcore_enc(&case, b, Enc::Plain);
    case.finish();
}

#[test]
fn libtorrent_downloads_from_btcore_over_utp_ipv6() {
    over_ipv6("lt-from-btcore-utp-ipv6", true);
}

#[test]
fn btcore_downloads_from_libtorrent_over_utp_ipv6() {
    over_ipv6("btcore-from-lt-utp-ipv6", false);
}

// ------------------------------------------------------------------ transmission

/// Waits until transmission-cli `i` has checked its data and started the torrent (not
/// by probing its port: see `interop.rs`).
fn transmission_ready(case: &mut Case, i: usize) {
    case.wait_output(i, "Verification is done");
    std::thread::sleep(Duration::from_millis(500));
}

/// btcore (`--transport utp`) downloads from a seeding transmission-cli that it dials.
fn btcore_from_transmission(name: &'static str, p: Payload, enc: Enc) {
    if !require(&[Tool::Transmission], INSTALL) {
        return;
    }
    let mut case = Case::new(name, CONFIG);
    let (data, torrent) = make(&case, p);
    let (tport, bport) = (free_port(), free_port());
    let t = transmission_utp(&case, "seed", &torrent, &parent(&data), tport, enc);
    let ti = case.spawn("transmission-seed", t, true);
    transmission_ready(&mut case, ti);
    let dst = case.path("dst");
    let b = case.spawn(
        "btcore-download",
        btcore_with(
            btcore_download(
                &torrent,
                &dst,
                bport,
                &[tport],
                false,
                CLIENT_TIMEOUT_SECS,
                false,
            ),
            "utp",
            enc,
        ),
        false,
    );
    case.wait_success(b);
    case.check_data(&data, &dst, Empties::Required);
    assert_transmission_utp(&case, ti);
    assert_btcore_dialed_utp(&case, b);
    assert_btcore_enc(&case, b, enc);
    case.finish();
}

#[test]
fn btcore_downloads_single_from_transmission_over_utp() {
    btcore_from_transmission("btcore-from-tr-single", Payload::Single, Enc::Plain);
}

#[test]
fn btcore_downloads_single_from_transmission_over_utp_rc4() {
    btcore_from_transmission("btcore-from-tr-single-rc4", Payload::Single, Enc::Rc4);
}

#[test]
fn btcore_downloads_multi_from_transmission_over_utp() {
    btcore_from_transmission("btcore-from-tr-multi", Payload::Multi, Enc::Plain);
}

#[test]
fn btcore_downloads_multi_from_transmission_over_utp_rc4() {
    btcore_from_transmission("btcore-from-tr-multi-rc4", Payload::Multi, Enc::Rc4);
}

/// transmission-cli downloads from a `btcore seed --transport utp` that dials it
/// (transmission does not dial 127.x peers it hears of).
fn transmission_from_btcore(name: &'static str, p: Payload, enc: Enc) {
    if !require(&[Tool::Transmission], INSTALL) {
        return;
    }
    let mut case = Case::new(name, CONFIG);
    let (data, torrent) = make(&case, p);
    let (tport, bport) = (free_port(), free_port());
    let dst = case.path("dst");
    let t = transmission_utp(&case, "leech", &torrent, &dst, tport, enc);
    let ti = case.spawn("transmission-leech", t, true);
    transmission_ready(&mut case, ti);
    let b = case.spawn(
        "btcore-seed",
        btcore_with(
            btcore_seed(&torrent, &parent(&data), bport, &[tport], false),
            "utp",
            enc,
        ),
        true,
    );
    // transmission 3.00 does not create the empty files of a torrent.
    case.wait_data(&data, &dst, Empties::Ignored);
    assert_transmission_utp(&case, ti);
    assert_btcore_dialed_utp(&case, b);
    assert_btcore_enc(&case, b, enc);
    case.finish();
}

#[test]
fn transmission_downloads_single_from_btcore_over_utp() {
    transmission_from_btcore("tr-from-btcore-single", Payload::Single, Enc::Plain);
}

#[test]
fn transmission_downloads_single_from_btcore_over_utp_rc4() {
    transmission_from_btcore("tr-from-btcore-single-rc4", Payload::Single, Enc::Rc4);
}

#[test]
fn transmission_downloads_multi_from_btcore_over_utp() {
    transmission_from_btcore("tr-from-btcore-multi", Payload::Multi, Enc::Plain);
}

#[test]
fn transmission_downloads_multi_from_btcore_over_utp_rc4() {
    transmission_from_btcore("tr-from-btcore-multi-rc4", Payload::Multi, Enc::Rc4);
}

/// A private network namespace with its loopback up and `ADDR` on it: transmission
/// dials no 127.x peer it hears of, so the case that has it dial btcore runs there.
/// Removed on drop.
struct Netns(String);

/// The address on the namespace's loopback.
const NS_ADDR: &str = "10.77.0.1";

impl Netns {
    /// None when namespaces cannot be made (not root).
    fn new() -> Option<Self> {
        let name = format!("btcore-utp-{}", std::process::id());
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !ok(&["netns", "add", &name]) {
            return None;
        }
        let ns = Netns(name);
        let up = ok(&["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"])
            && ok(&[
                "netns",
                "exec",
                &ns.0,
                "ip",
                "addr",
                "add",
                &format!("{NS_ADDR}/32"),
                "dev",
                "lo",
            ]);
        up.then_some(ns)
    }

    /// `c`, run inside the namespace (`ip netns exec` execs it: the PID is its own).
    fn wrap(&self, c: &Command) -> Command {
        let mut w = Command::new("ip");
        w.args(["netns", "exec", &self.0]).arg(c.get_program());
        w.args(c.get_args());
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => w.env(k, v),
                None => w.env_remove(k),
            };
        }
        if let Some(d) = c.get_current_dir() {
            w.current_dir(d);
        }
        w
    }

    /// Whether an HTTP GET of `url` inside the namespace answers with `needle` in it.
    fn http_has(&self, url: &str, needle: &str) -> bool {
        let script = format!(
            "import sys,urllib.request\ntry:\n  b=urllib.request.urlopen({url:?},timeout=2).read()\nexcept Exception:\n  sys.exit(1)\nsys.exit(0 if {needle:?}.encode() in b else 1)"
        );
        Command::new("ip")
            .args(["netns", "exec", &self.0, "python3", "-c", &script])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// transmission-cli dials a `btcore seed --transport utp` over uTP: both on a
/// namespace's 10.77.0.1, btcore's tracker between them. btcore announces first and
/// hears of no one (its next announce is half an hour away), so the connection can
/// only be transmission's dial: btcore's log names it accepted over uTP and shows no
/// dial at all.
fn transmission_dials_btcore(name: &'static str, enc: Enc) {
    if !require(&[Tool::Transmission], INSTALL) {
        return;
    }
    let Some(ns) = Netns::new() else {
        if std::env::var_os("BTCORE_INTEROP").is_some() {
            panic!("{name}: cannot make a network namespace (root is needed)");
        }
        eprintln!("skipped: {name} needs root for a network namespace");
        return;
    };
    let mut case = Case::new(name, CONFIG);
    let (data, _) = make(&case, Payload::Single);
    let (tport, bport, rport) = (free_port(), free_port(), free_port());
    let mut tracker = common::btcore(&["tracker"]);
    tracker
        .args(["--http", &format!("{NS_ADDR}:{rport}"), "--no-udp"])
        .arg("--state")
        .arg(case.dir.join("tracker-state"));
    case.spawn("btcore-tracker", ns.wrap(&tracker), true);
    let base = format!("http://{NS_ADDR}:{rport}");
    case.wait_until("the tracker to answer", |_| {
        ns.http_has(&format!("{base}/scrape"), "d")
    });
    let torrent = btcore_create(&case, &data, Some(&format!("{base}/announce")));
    // As `btcore_seed` makes it, on the namespace's address.
    let mut seed = common::btcore(&["seed"]);
    seed.arg(&torrent).arg(parent(&data));
    seed.args([
        "--port",
        &bport.to_string(),
        "--bind",
        NS_ADDR,
        "--progress",
        "plain",
    ]);
    if common::btcore_has_dht() {
        seed.arg("--no-dht");
    }
    let b = case.spawn("btcore-seed", ns.wrap(&btcore_with(seed, "utp", enc)), true);
    let hash = common::info_hash(&torrent);
    let escaped: String = (0..hash.len() / 2)
        .map(|i| format!("%{}", &hash[2 * i..2 * i + 2]))
        .collect();
    case.wait_until("btcore's announce", |_| {
        ns.http_has(
            &format!("{base}/scrape?info_hash={escaped}"),
            "8:completei1e",
        )
    });
    let dst = case.path("dst");
    let mut t = transmission_utp(&case, "leech", &torrent, &dst, tport, enc);
    let settings = case.path("transmission-leech").join("settings.json");
    let mut v: serde_json::Value =
        serde_json::from_slice(&fs::read(&settings).expect("settings")).expect("json");
    v["bind-address-ipv4"] = NS_ADDR.into();
    fs::write(&settings, v.to_string()).expect("settings");
    t.env("TR_DEBUG_FD", "1");
    let ti = case.spawn("transmission-leech", ns.wrap(&t), true);
    case.wait_data(&data, &dst, Empties::Ignored);
    assert_transmission_utp(&case, ti);
    let p = &case.procs[b];
    if !p.printed("over uTP as") || p.printed("dialing ") {
        case.fail("btcore did not take transmission's uTP dial (or dialed itself)");
    }
    assert_btcore_enc(&case, b, enc);
    case.finish();
    drop(ns);
}

#[test]
fn transmission_dials_btcore_over_utp() {
    transmission_dials_btcore("tr-dials-btcore", Enc::Plain);
}

#[test]
fn transmission_dials_btcore_over_utp_rc4() {
    transmission_dials_btcore("tr-dials-btcore-rc4", Enc::Rc4);
}

// ------------------------------------------------------------------ the policy's edges

/// `--transport utp` gets nothing from a libtorrent without uTP (its default here): it
/// never falls back to TCP.
#[test]
fn transport_utp_never_falls_back_to_tcp() {
    if !require(&[Tool::Libtorrent], INSTALL) {
        return;
    }
    let mut case = Case::new("utp-no-fallback", CONFIG);
    let (data, torrent) = make(&case, Payload::Multi);
    let (lport, bport) = (free_port(), free_port());
    let l = case.spawn(
        "libtorrent-seed-tcp",
        lt_with(
            libtorrent(
                "seed",
                &torrent,
                &parent(&data),
                lport,
                &[],
                CLIENT_TIMEOUT_SECS,
            ),
            Enc::Plain,
            false,
        ),
        true,
    );
    case.wait_output(l, "state=seeding");
    let dst = case.path("dst");
    let b = case.spawn(
        "btcore-download",
        btcore_with(
            btcore_download(&torrent, &dst, bport, &[lport], false, 8, false),
            "utp",
            Enc::Plain,
        ),
        false,
    );
    case.wait_until("btcore to give up", |c| c.procs[b].poll().is_some());
    if case.procs[b].status.is_some_and(|s| s.success()) {
        case.fail("btcore --transport utp downloaded from a peer without uTP");
    }
    if case.procs[l].printed("peer 127.0.0.1") {
        case.fail("libtorrent without uTP had a peer");
    }
    case.finish();
}

/// `--transport tcp` takes no uTP: a libtorrent with TCP off cannot reach it.
#[test]
fn transport_tcp_takes_no_utp() {
    if !require(&[Tool::Libtorrent], INSTALL) {
        return;
    }
    let mut case = Case::new("tcp-no-utp", CONFIG);
    let (data, torrent) = make(&case, Payload::Multi);
    let (lport, bport) = (free_port(), free_port());
    case.spawn(
        "btcore-seed",
        btcore_with(
            btcore_seed(&torrent, &parent(&data), bport, &[], false),
            "tcp",
            Enc::Plain,
        ),
        true,
    );
    case.wait_port(bport);
    let dst = case.path("dst");
    let l = case.spawn(
        "libtorrent-leech-utp",
        lt_with(
            libtorrent("download", &torrent, &dst, lport, &[bport], 8),
            Enc::Plain,
            true,
        ),
        false,
    );
    case.wait_until("libtorrent to give up", |c| c.procs[l].poll().is_some());
    if case.procs[l].status.is_some_and(|s| s.success()) {
        case.fail("a uTP-only libtorrent downloaded from btcore --transport tcp");
    }
    if case.procs[l].printed("peer 127.0.0.1") {
        case.fail("a uTP-only libtorrent had a peer with btcore --transport tcp");
    }
    case.finish();
}

/// The default, `both`: uTP with a libtorrent that has only uTP, TCP (after the uTP
/// dial goes unanswered) with one that has only TCP.
#[test]
fn transport_both_takes_utp_first_and_falls_back_to_tcp() {
    if !require(&[Tool::Libtorrent], INSTALL) {
        return;
    }
    // libtorrent's alerts name the transport of every connection, however short (a TCP
    // download can end between two polls of its peer list).
    for (utp_only, want, not) in [(true, "(uTP)", "(TCP)"), (false, "(TCP)", "(uTP)")] {
        let mut case = Case::new("both", CONFIG);
        let (data, torrent) = make(&case, Payload::Multi);
        let (lport, bport) = (free_port(), free_port());
        let l = case.spawn(
            "libtorrent-seed",
            lt_with(
                libtorrent(
                    "seed",
                    &torrent,
                    &parent(&data),
                    lport,
                    &[],
                    CLIENT_TIMEOUT_SECS,
                ),
                Enc::Plain,
                utp_only,
            ),
            true,
        );
        case.wait_output(l, "state=seeding");
        let dst = case.path("dst");
        let b = case.spawn(
            "btcore-download",
            btcore_with(
                btcore_download(&torrent, &dst, bport, &[lport], false, 40, false),
                "both",
                Enc::Plain,
            ),
            false,
        );
        case.wait_success(b);
        case.check_data(&data, &dst, Empties::Required);
        std::thread::sleep(Duration::from_millis(300));
        if !case.procs[l].printed(want) || case.procs[l].printed(not) {
            case.fail(&format!(
                "libtorrent (uTP only: {utp_only}): want a connection {want}, none {not}"
            ));
        }
        // uTP is dialed first either way; TCP only after it got no answer.
        let (utp, tcp) = (
            case.procs[b].printed(" over Utp as "),
            case.procs[b].printed(" over Tcp as "),
        );
        if !utp || tcp == utp_only {
            case.fail(&format!(
                "btcore dialed over uTP: {utp}, over TCP: {tcp} (libtorrent uTP only: {utp_only})"
            ));
        }
        case.finish();
    }
}
