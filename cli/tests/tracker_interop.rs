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

use common::{
    aria2, btcore, btcore_create, btcore_download, btcore_seed, free_port, libtorrent, local,
    require, transmission, Aria2, Case, Config, Deadline, Empties, Rng, Tool,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

mod common;

/// The longest a whole case may take.
const CASE_LIMIT: Duration = Duration::from_secs(85);
/// Given to the clients that can stop themselves.
const CLIENT_TIMEOUT_SECS: u64 = 85;
const PAYLOAD_SIZE: usize = 4 * 1024 * 1024;
/// How to install every client these cases use.
const INSTALL: &str = "apt-get install transmission-cli aria2 python3-libtorrent";

const CONFIG: Config = Config {
    dir_prefix: "btcore-trinterop",
    deadline: Deadline::Case(CASE_LIMIT),
    poll: Duration::from_millis(200),
    log_tail: 3000,
    btcore_exit_hint: false,
};

// ------------------------------------------------------------------ content

/// One 4 MiB file, `DIR/payload.bin` (the seed picks the content).
fn make_payload(dir: &Path, seed: u64) -> PathBuf {
    fs::create_dir_all(dir).expect("create dirs");
    let path = dir.join("payload.bin");
    fs::write(&path, Rng(seed).bytes(PAYLOAD_SIZE)).expect("write content");
    path
}

// ------------------------------------------------------------------ btcore

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

impl Case {
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

// ------------------------------------------------------------------ cases

/// The source file under `case/src`, the torrent (announcing to `url`) and a running
/// btcore tracker on `tport`.
fn setup(case: &mut Case, scheme: &str, seed: u64) -> (PathBuf, PathBuf) {
    let data = make_payload(&case.path("src"), seed);
    let tport = free_port();
    let url = format!("{scheme}://127.0.0.1:{tport}/announce");
    let torrent = btcore_create(case, &data, Some(&url));
    btcore_tracker(case, &torrent, tport);
    (data, torrent)
}

/// A libtorrent seeder of `data`, seeding and announced to the tracker.
fn libtorrent_seeder(case: &mut Case, data: &Path, torrent: &Path) {
    let src = data.parent().expect("src dir").to_path_buf();
    let l = case.spawn(
        "libtorrent-seed",
        libtorrent("seed", torrent, &src, free_port(), &[], CLIENT_TIMEOUT_SECS),
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
    if !require(
        &[Tool::Libtorrent, Tool::Aria2, Tool::Transmission],
        INSTALL,
    ) {
        return;
    }
    let mut case = Case::new("http-swarm", CONFIG);
    let (data, torrent) = setup(&mut case, "http", 0x4854_5450);

    let t_dst = case.path("transmission");
    let t = transmission(&case, "config", &torrent, &t_dst, free_port());
    let ti = case.spawn("transmission-leech", t, true);
    // Logged at message-level 3 once its (empty) data is checked; it announces then.
    case.wait_output(ti, "Verification is done");
    case.wait_scrape(&torrent, "transmission's announce", |s| s.leechers >= 1);

    libtorrent_seeder(&mut case, &data, &torrent);

    let b_dst = case.path("btcore");
    let b = case.spawn(
        "btcore-leech",
        btcore_download(
            &torrent,
            &b_dst,
            free_port(),
            &[],
            true,
            CLIENT_TIMEOUT_SECS,
            true,
        ),
        false,
    );
    let a_dst = case.path("aria2");
    let a = case.spawn(
        "aria2-leech",
        aria2(
            &case,
            &torrent,
            &a_dst,
            free_port(),
            Aria2::Leech,
            CLIENT_TIMEOUT_SECS,
        ),
        false,
    );
    let l_dst = case.path("libtorrent");
    let l = case.spawn(
        "libtorrent-leech",
        libtorrent(
            "download",
            &torrent,
            &l_dst,
            free_port(),
            &[],
            CLIENT_TIMEOUT_SECS,
        ),
        false,
    );

    case.wait_success(l);
    case.check_data(&data, &l_dst, Empties::Required);
    case.wait_success(a);
    case.check_data(&data, &a_dst, Empties::Required);
    // btcore and transmission keep running as seeders once complete.
    case.wait_data(&data, &b_dst, Empties::Required);
    case.wait_data(&data, &t_dst, Empties::Required);
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
    if !require(&[Tool::Libtorrent, Tool::Aria2], INSTALL) {
        return;
    }
    let mut case = Case::new("udp-swarm", CONFIG);
    let (data, torrent) = setup(&mut case, "udp", 0x0055_4450);
    libtorrent_seeder(&mut case, &data, &torrent);

    let b_dst = case.path("btcore");
    let b = case.spawn(
        "btcore-leech",
        btcore_download(
            &torrent,
            &b_dst,
            free_port(),
            &[],
            true,
            CLIENT_TIMEOUT_SECS,
            false,
        ),
        false,
    );
    let a_dst = case.path("aria2");
    let a = case.spawn(
        "aria2-leech",
        aria2(
            &case,
            &torrent,
            &a_dst,
            free_port(),
            Aria2::LeechUdpTracker,
            CLIENT_TIMEOUT_SECS,
        ),
        false,
    );
    let l_dst = case.path("libtorrent");
    let l = case.spawn(
        "libtorrent-leech",
        libtorrent(
            "download",
            &torrent,
            &l_dst,
            free_port(),
            &[],
            CLIENT_TIMEOUT_SECS,
        ),
        false,
    );
    for (i, dst) in [(b, &b_dst), (a, &a_dst), (l, &l_dst)] {
        case.wait_success(i);
        case.check_data(&data, dst, Empties::Required);
    }
    // Running and complete: the libtorrent seeder.
    case.wait_scrape(&torrent, "a seeder in a scrape", |s| s.seeders >= 1);
    case.finish();
}

/// btcore seeds through the btcore tracker (HTTP); libtorrent and aria2 leechers find
/// it there.
#[test]
fn btcore_seeds_through_its_tracker() {
    if !require(&[Tool::Libtorrent, Tool::Aria2], INSTALL) {
        return;
    }
    let mut case = Case::new("btcore-seeds", CONFIG);
    let (data, torrent) = setup(&mut case, "http", 0x5345_4544);
    let src = data.parent().expect("src dir").to_path_buf();
    let sport = free_port();
    case.spawn(
        "btcore-seed",
        btcore_seed(&torrent, &src, sport, &[], true),
        true,
    );
    case.wait_port(sport);
    case.wait_scrape(&torrent, "btcore's announce as a seeder", |s| {
        s.seeders >= 1
    });

    let a_dst = case.path("aria2");
    let a = case.spawn(
        "aria2-leech",
        aria2(
            &case,
            &torrent,
            &a_dst,
            free_port(),
            Aria2::Leech,
            CLIENT_TIMEOUT_SECS,
        ),
        false,
    );
    let l_dst = case.path("libtorrent");
    let l = case.spawn(
        "libtorrent-leech",
        libtorrent(
            "download",
            &torrent,
            &l_dst,
            free_port(),
            &[],
            CLIENT_TIMEOUT_SECS,
        ),
        false,
    );
    for (i, dst) in [(a, &a_dst), (l, &l_dst)] {
        case.wait_success(i);
        case.check_data(&data, dst, Empties::Required);
    }
    // Running and complete: the btcore seeder.
    case.wait_scrape(&torrent, "a seeder in a scrape", |s| s.seeders >= 1);
    case.finish();
}

/// A `btcore download` that completes and exits leaves the tracker's counts as they
/// were before it joined, plus one completed download: its `completed` and `stopped`
/// announces both reach the tracker (one btcore seeder stays).
fn btcore_leecher_is_counted(name: &'static str, scheme: &str) {
    let mut case = Case::new(name, CONFIG);
    let (data, torrent) = setup(&mut case, scheme, 0x434f_554e);
    let src = data.parent().expect("src dir").to_path_buf();
    let sport = free_port();
    case.spawn(
        "btcore-seed",
        btcore_seed(&torrent, &src, sport, &[], true),
        true,
    );
    case.wait_port(sport);
    case.wait_scrape(&torrent, "btcore's announce as a seeder", |s| {
        s.seeders >= 1
    });
    let dst = case.path("btcore");
    let b = case.spawn(
        "btcore-leech",
        btcore_download(
            &torrent,
            &dst,
            free_port(),
            &[],
            true,
            CLIENT_TIMEOUT_SECS,
            false,
        ),
        false,
    );
    case.wait_success(b);
    case.check_data(&data, &dst, Empties::Required);
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
