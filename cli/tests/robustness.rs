//! Robustness of the `btcore` command as a user runs it: killed mid-download (resume
//! data never claims a piece the disk lacks, and a restart fetches only what is
//! missing), bad torrents, an unreachable tracker, a port in use, a full disk, hostile
//! file paths, and Ctrl-C.
//!
//! Everything runs on 127.0.0.1. Every wait is bounded, every process started here is
//! killed by PID when its guard drops, and every scratch directory is removed. Payloads
//! are deterministic pseudo-random bytes.
//!
//! A download is kept slow enough to interrupt with the seeder's `--upload-limit`
//! (checked on its own by `rate_limits_are_enforced`).

use btcore_core::bencode::Encoder;
use btcore_core::hash::sha1;
use btcore_core::ids::PieceIndex;
use btcore_core::metainfo::{Limits, Metainfo};
use btcore_host::resume::ResumeData;
use btcore_host::storage::{Storage, StorageConfig};
use btcore_tests::free_port;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_btcore");

// ---------------------------------------------------------------------------------
// Scratch directories, processes and mounts, each with a guard.
// ---------------------------------------------------------------------------------

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!(
            "btcore-robust-{}-{tag}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("scratch dir");
        Self(d)
    }

    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running `btcore`, killed (SIGKILL, by PID) and reaped on drop. Its stdout lines
/// arrive on a channel as they are printed; its stderr is collected.
struct Proc {
    child: Child,
    what: String,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Proc {
        let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        let what = format!(
            "btcore {}",
            args.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut child = Command::new(BIN)
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("btcore starts");
        let out = child.stdout.take().expect("stdout pipe");
        let mut err = child.stderr.take().expect("stderr pipe");
        let (tx, lines) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(String::new()));
        let e2 = stderr.clone();
        let readers = vec![
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }),
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match err.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => e2
                            .lock()
                            .expect("stderr lock")
                            .push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
            }),
        ];
        Proc {
            child,
            what,
            lines,
            seen: Vec::new(),
            stderr,
            readers,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, waiting at most until `deadline`.
    fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(l) => {
                self.seen.push(l.clone());
                Some(l)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The next JSON progress line (other lines are skipped), until `deadline`.
    fn next_json(&mut self, deadline: Instant) -> Option<serde_json::Value> {
        while let Some(l) = self.next_line(deadline) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) {
                if v.is_object() {
                    return Some(v);
                }
            }
        }
        None
    }

    /// The next JSON status line once the check of the data on disk is over (while
    /// it runs, the lines say `"state": "checking"`).
    fn next_json_checked(&mut self, deadline: Instant) -> Option<serde_json::Value> {
        while let Some(v) = self.next_json(deadline) {
            if v["state"] != "checking" {
                return Some(v);
            }
        }
        None
    }

    /// Waits at most `limit` for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits at most `limit` for the exit, then returns the status (None: still
    /// running, killed now), every stdout line and the whole stderr.
    fn finish(&mut self, limit: Duration) -> (Option<ExitStatus>, Vec<String>, String) {
        let st = self.wait_exit(limit);
        if st.is_none() {
            eprintln!("still running after {limit:?}, killed: {}", self.what);
            self.kill();
        }
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        let err = self.stderr.lock().expect("stderr lock").clone();
        (st, self.seen.clone(), err)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {} failed", self.pid());
    }

    /// SIGKILL (by PID) and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            self.kill();
        }
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
    }
}

/// A tmpfs mounted on a directory, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    /// Mounts a tmpfs of `size` (like "8m") on `dir`, or says why it cannot.
    fn tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if out.status.success() {
            Ok(Mount(dir.to_path_buf()))
        } else {
            Err(format!(
                "mount -t tmpfs: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

// ---------------------------------------------------------------------------------
// Content, torrents and checks.
// ---------------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (splitmix64).
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        v.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    v.truncate(len);
    v
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

/// `btcore create` of `path` into `out` with `piece_kib`, checked.
fn create_torrent(path: &Path, out: &Path, piece_kib: u32, trackers: &[String]) -> Vec<u8> {
    let mut args = vec![
        "create".to_owned(),
        s(path),
        "-o".into(),
        s(out),
        "--piece-kib".into(),
        piece_kib.to_string(),
    ];
    for t in trackers {
        args.push("-t".into());
        args.push(t.clone());
    }
    let o = Command::new(BIN)
        .args(&args)
        .output()
        .expect("btcore create runs");
    assert!(
        o.status.success(),
        "btcore create failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    fs::read(out).expect("torrent written")
}

/// A payload in `dir/seed/data.bin` and its torrent in `dir/data.torrent`.
struct Seeded {
    seed_dir: PathBuf,
    data: Vec<u8>,
    tpath: PathBuf,
    torrent: Vec<u8>,
}

/// `size` bytes of payload (content `seed`) and a torrent of it in pieces of
/// `piece_kib`, under `dir`.
fn seeded(dir: &TempDir, size: usize, seed: u64, piece_kib: u32) -> Seeded {
    let seed_dir = dir.join("seed");
    fs::create_dir_all(&seed_dir).expect("seed dir");
    let data = payload(size, seed);
    fs::write(seed_dir.join("data.bin"), &data).expect("payload");
    let tpath = dir.join("data.torrent");
    let torrent = create_torrent(&seed_dir.join("data.bin"), &tpath, piece_kib, &[]);
    Seeded {
        seed_dir,
        data,
        tpath,
        torrent,
    }
}

/// Parses a torrent and hands it to `f`.
fn with_meta<R>(torrent: &[u8], f: impl FnOnce(&Metainfo<'_>) -> R) -> R {
    let mut tokens = Vec::new();
    let m = Metainfo::parse_vec(torrent, &mut tokens, &Limits::default()).expect("valid torrent");
    f(&m)
}

/// Starts `btcore seed` on a free 127.0.0.1 port and waits until it reports seeding.
fn start_seeder(torrent: &Path, dir: &Path) -> (Proc, SocketAddr) {
    start_seeder_with(torrent, dir, &[])
}

/// [`start_seeder`] with extra arguments.
fn start_seeder_with(torrent: &Path, dir: &Path, extra: &[&str]) -> (Proc, SocketAddr) {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        let mut args = vec![
            "seed".to_owned(),
            s(torrent),
            s(dir),
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--no-trackers".into(),
            "--progress".into(),
            "json".into(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut p = Proc::spawn(&args);
        let deadline = Instant::now() + Duration::from_secs(60);
        if let Some(v) = p.next_json_checked(deadline) {
            assert_eq!(v["state"], "seeding", "the seeder lacks data: {v}");
            return (p, SocketAddr::from(([127, 0, 0, 1], port)));
        }
        // The port was taken meanwhile (or the seeder failed): try another.
        let (st, _, err) = p.finish(Duration::from_secs(5));
        last = format!("{st:?}: {err}");
    }
    panic!("the seeder did not start: {last}");
}

/// Common `download` arguments: a local ephemeral port, no trackers, JSON progress.
fn download_args(torrent: &Path, out: &Path, peer: SocketAddr, timeout: u64) -> Vec<String> {
    vec![
        "download".to_owned(),
        s(torrent),
        "-o".into(),
        s(out),
        "--peer".into(),
        peer.to_string(),
        "--no-trackers".into(),
        "--port".into(),
        "0".into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--json".into(),
        "--progress".into(),
        "json".into(),
        "--timeout".into(),
        timeout.to_string(),
    ]
}

fn assert_no_panic(what: &str, stderr: &str, st: Option<ExitStatus>) {
    assert!(
        !stderr.contains("panicked") && st.and_then(|s| s.code()) != Some(101),
        "{what} panicked: {stderr}"
    );
}

/// Reads and checks the resume file of `torrent` saved under `state_dir`: it decodes,
/// names the torrent, and every piece it claims verifies on disk under `save_dir`.
/// Returns the claimed pieces.
fn check_resume(torrent: &[u8], state_dir: &Path, save_dir: &Path) -> Vec<u32> {
    with_meta(torrent, |m| {
        let path = state_dir.join(ResumeData::file_name(&m.info_hash()));
        let bytes =
            fs::read(&path).unwrap_or_else(|e| panic!("resume file {}: {e}", path.display()));
        let r = ResumeData::decode(&bytes).expect("resume data decodes");
        assert_eq!(
            r.info_hash,
            m.info_hash(),
            "resume file names another torrent"
        );
        assert_eq!(r.num_pieces(), m.num_pieces(), "resume bitfield length");
        let storage = Storage::new(
            save_dir,
            m.layout().expect("layout"),
            m.geometry(),
            StorageConfig::default(),
        )
        .expect("storage");
        let claimed: Vec<u32> = r.have().iter_set().collect();
        let bad: Vec<u32> = claimed
            .iter()
            .copied()
            .filter(|&i| {
                let want = m.piece_hash(PieceIndex(i)).copied();
                storage.hash_piece(i).ok() != want
            })
            .collect();
        assert!(
            bad.is_empty(),
            "the resume file claims {} pieces of which {} do not verify on disk: {bad:?}",
            claimed.len(),
            bad.len()
        );
        claimed
    })
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------------------------
// 1. kill -9 mid-download, then resume.
// ---------------------------------------------------------------------------------

#[test]
fn kill_9_mid_download_loses_no_verified_piece_and_resumes_only_the_rest() {
    let t0 = Instant::now();
    const SIZE: usize = 32 << 20;
    const PIECE_KIB: u32 = 256;
    let dir = TempDir::new("kill9");
    let out = dir.join("out");
    let Seeded {
        seed_dir,
        data,
        tpath,
        torrent,
    } = seeded(&dir, SIZE, 1, PIECE_KIB);
    let (piece_len, num_pieces) = with_meta(&torrent, |m| (m.piece_length(), m.num_pieces()));

    // 2 MiB/s: the 32 MiB take about 15 s, so several progress lines (one a second)
    // fall in 30-70 %, and the resume file (saved at most every 2 s) is saved a few
    // times meanwhile.
    let (seeder, seed_addr) = start_seeder_with(&tpath, &seed_dir, &["--upload-limit", "2048"]);
    let resume_path = out.join(".btcore").join(with_meta(&torrent, |m| {
        ResumeData::file_name(&m.info_hash())
    }));
    let claimed_now = || {
        fs::read(&resume_path)
            .ok()
            .and_then(|b| ResumeData::decode(&b).ok())
            .map_or(0, |r| r.have().iter_set().count())
    };

    let mut leech = Proc::spawn(&download_args(&tpath, &out, seed_addr, 120));
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut at_kill = None;
    while let Some(v) = leech.next_json(deadline) {
        let p = v["progress"].as_f64().unwrap_or(0.0);
        assert!(p <= 70.0, "progress jumped past 70 % unseen: {v}");
        // Once in 30-70 %, kill when the resume file claims a fair share (a kill
        // right after the first save would prove little), or before leaving the window.
        if p >= 30.0 && (claimed_now() * 5 >= num_pieces as usize || p >= 55.0) {
            leech.kill(); // SIGKILL
            at_kill = Some(v);
            break;
        }
    }
    let at_kill = at_kill.unwrap_or_else(|| {
        let (st, lines, err) = leech.finish(Duration::from_secs(1));
        panic!("no progress line in 30-70 %: {st:?} {lines:?} {err}")
    });
    let (st, _, err) = leech.finish(Duration::from_secs(5));
    assert!(
        st.is_some_and(|s| s.code().is_none()),
        "killed by a signal: {st:?}"
    );
    assert_no_panic("killed leecher", &err, st);

    // No verified piece is lost: every claimed piece verifies on disk.
    let claimed = check_resume(&torrent, &out.join(".btcore"), &out);
    assert!(
        !claimed.is_empty(),
        "no piece claimed at {}",
        at_kill["progress"]
    );
    let missing_bytes: u64 = with_meta(&torrent, |m| {
        (0..num_pieces)
            .filter(|i| !claimed.contains(i))
            .map(|i| u64::from(m.geometry().piece_size(PieceIndex(i))))
            .sum()
    });

    // The restart (from an unlimited seeder) completes, and fetches only what the
    // resume file did not claim.
    drop(seeder);
    let (_seeder, seed_addr) = start_seeder(&tpath, &seed_dir);
    let t1 = Instant::now();
    let mut again = Proc::spawn(&download_args(&tpath, &out, seed_addr, 120));
    let (st, lines, err) = again.finish(Duration::from_secs(150));
    assert_no_panic("restarted leecher", &err, st);
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(0),
        "the restart did not complete: {err}\n{lines:?}"
    );
    let last: serde_json::Value = lines
        .iter()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("a JSON progress line");
    assert_eq!(last["state"], "seeding", "{last}");
    let downloaded = last["downloaded"].as_u64().expect("downloaded field");
    let slack = 2 * u64::from(piece_len);
    assert!(
        downloaded <= missing_bytes + slack,
        "the restart downloaded {downloaded} bytes, but only {missing_bytes} were missing \
         (+{slack} slack): verified pieces were fetched again"
    );
    // Nor those verified after the last resume save: the data written before the kill
    // is still there (a kill keeps the page cache) and the restart's check of what is
    // on disk finds them. At most what the last progress line before the kill lacked.
    let total = SIZE as u64;
    let had = at_kill["bytes_have"].as_u64().expect("bytes_have field");
    assert!(
        downloaded <= total - had + slack,
        "the restart downloaded {downloaded} bytes, but only {} were missing at the kill \
         (+{slack} slack): pieces verified after the last resume save were fetched again",
        total - had
    );
    let got = fs::read(out.join("data.bin")).expect("downloaded file");
    assert!(got == data, "the resumed download differs from the payload");
    println!(
        "case 1 kill -9: killed at {}% ({} of {num_pieces} pieces claimed, all verify); \
         restart fetched {downloaded} B for {missing_bytes} B missing in {:.1} s; total {:.1} s",
        at_kill["progress"],
        claimed.len(),
        secs(t1),
        secs(t0)
    );
}

// ---------------------------------------------------------------------------------
// 2. Bad torrents.
// ---------------------------------------------------------------------------------

/// A single-file info dictionary with `pieces` as given, wrapped in a torrent.
fn torrent_with_pieces(length: i64, piece_len: i64, pieces: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let mut e = Encoder::new(&mut out);
    let r: Result<(), core::convert::Infallible> = (|| {
        e.dict()?;
        e.bytes(b"info")?;
        e.dict()?;
        e.key_int(b"length", length)?;
        e.key_bytes(b"name", b"bad.bin")?;
        e.key_int(b"piece length", piece_len)?;
        e.key_bytes(b"pieces", pieces)?;
        e.end()?;
        e.end()
    })();
    r.expect("encoding into a Vec");
    out
}

/// Files under `dir` (relative paths), recursively; directories end with '/'.
fn walk(dir: &Path) -> Vec<String> {
    fn go(root: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                out.push(format!("{rel}/"));
                go(root, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut v = Vec::new();
    go(dir, dir, &mut v);
    v.sort();
    v
}

#[test]
fn bad_torrents_fail_cleanly_and_create_nothing() {
    let t0 = Instant::now();
    let dir = TempDir::new("bad");
    let content = payload(40_000, 2);
    let good = torrent_with_pieces(
        40_000,
        16_384,
        &[
            sha1(&content[..16_384]),
            sha1(&content[16_384..32_768]),
            sha1(&content[32_768..]),
        ]
        .concat(),
    );
    with_meta(&good, |m| assert_eq!(m.num_pieces(), 3));

    let cases: Vec<(&str, Option<Vec<u8>>, u8)> = vec![
        ("truncated", Some(good[..good.len() / 2].to_vec()), 3),
        ("truncated-by-one", Some(good[..good.len() - 1].to_vec()), 3),
        ("empty", Some(Vec::new()), 3),
        (
            "pieces-not-a-multiple-of-20",
            Some(torrent_with_pieces(40_000, 16_384, &[7u8; 59])),
            3,
        ),
        (
            "pieces-count-mismatch",
            Some(torrent_with_pieces(40_000, 16_384, &[7u8; 40])),
            3,
        ),
        ("missing-file", None, 4),
        ("a-directory", None, 4),
    ];
    let mut problems = Vec::new();
    for (name, bytes, want) in &cases {
        let tpath = dir.join(&format!("{name}.torrent"));
        match (bytes, *name) {
            (Some(b), _) => fs::write(&tpath, b).expect("bad torrent written"),
            (None, "a-directory") => fs::create_dir_all(&tpath).expect("dir"),
            (None, _) => {}
        }
        for cmd in ["download", "seed"] {
            let out = dir.join(&format!("out-{cmd}-{name}"));
            let args: Vec<String> = if cmd == "download" {
                download_args(&tpath, &out, SocketAddr::from(([127, 0, 0, 1], 9)), 10)
            } else {
                vec![
                    "seed".into(),
                    s(&tpath),
                    s(&out),
                    "--port".into(),
                    "0".into(),
                    "--bind".into(),
                    "127.0.0.1".into(),
                    "--no-trackers".into(),
                    "--timeout".into(),
                    "10".into(),
                ]
            };
            let mut p = Proc::spawn(&args);
            let (st, _, err) = p.finish(Duration::from_secs(20));
            let code = st.and_then(|s| s.code());
            let lines: Vec<&str> = err.lines().collect();
            let left: Vec<String> = walk(&out).into_iter().filter(|f| f != ".btcore/").collect();
            let ok = code == Some(i32::from(*want))
                && lines.len() == 1
                && lines[0].starts_with("btcore: ")
                && !err.contains("panicked")
                && left.is_empty();
            if !ok {
                problems.push(format!(
                    "{cmd} {name}: exit {code:?} (want {want}), stderr {err:?}, created {left:?}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    println!(
        "case 2 bad torrents: {} torrents x download/seed refused cleanly in {:.1} s",
        cases.len(),
        secs(t0)
    );
}

// ---------------------------------------------------------------------------------
// 3. Unreachable tracker.
// ---------------------------------------------------------------------------------

#[test]
fn unreachable_tracker_times_out_with_a_warning() {
    let dir = TempDir::new("tracker");
    let file = dir.join("small.bin");
    fs::write(&file, payload(100_000, 3)).expect("payload");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/announce");
    let tpath = dir.join("small.torrent");
    create_torrent(&file, &tpath, 16, std::slice::from_ref(&url));
    let out = dir.join("out");
    let t0 = Instant::now();
    let mut p = Proc::spawn(&[
        "download".to_owned(),
        s(&tpath),
        "-o".into(),
        s(&out),
        "--port".into(),
        "0".into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--timeout".into(),
        "5".into(),
        "--progress".into(),
        "json".into(),
    ]);
    let (st, _, err) = p.finish(Duration::from_secs(20));
    let took = secs(t0);
    assert_no_panic("download", &err, st);
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(5),
        "exit code; stderr: {err}"
    );
    assert!(took < 10.0, "took {took:.1} s to give up after --timeout 5");
    let warned = err
        .lines()
        .any(|l| l.contains("tracker") && l.contains(&format!("127.0.0.1:{port}")));
    assert!(warned, "no warning naming the tracker in stderr: {err:?}");
    println!("case 3 unreachable tracker: exit 5 in {took:.1} s, warned: {err:?}");
}

// ---------------------------------------------------------------------------------
// 4. Port in use.
// ---------------------------------------------------------------------------------

#[test]
fn port_in_use_is_an_io_error_naming_the_address() {
    let t0 = Instant::now();
    let dir = TempDir::new("port");
    let file = dir.join("small.bin");
    fs::write(&file, payload(50_000, 4)).expect("payload");
    let tpath = dir.join("small.torrent");
    create_torrent(&file, &tpath, 16, &[]);
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let mut p = Proc::spawn(&[
        "download".to_owned(),
        s(&tpath),
        "-o".into(),
        s(&dir.join("out")),
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--no-trackers".into(),
        "--timeout".into(),
        "10".into(),
    ]);
    let (st, _, err) = p.finish(Duration::from_secs(20));
    drop(busy);
    assert_no_panic("download", &err, st);
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(4),
        "exit code; stderr: {err}"
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {err:?}");
    assert!(
        lines[0].contains(&format!("127.0.0.1:{port}")) && lines[0].contains("in use"),
        "the message names the address and the cause: {err:?}"
    );
    println!(
        "case 4 port in use: exit 4 in {:.2} s: {}",
        secs(t0),
        lines[0]
    );
}

// ---------------------------------------------------------------------------------
// 5. Full disk.
// ---------------------------------------------------------------------------------

/// Mounts an 8 MiB tmpfs and starts a seeder of 32 MiB; `None` (after a skip line) when
/// mounting is impossible, unless `BTCORE_INTEROP=1` demands it.
struct FullDisk {
    // Field order is drop order: the processes die before the unmount, the unmount
    // before the directory is removed.
    _seeder: Proc,
    mount: Mount,
    _dir: TempDir,
    tpath: PathBuf,
    seed_addr: SocketAddr,
}

fn full_disk_setup(tag: &str) -> Option<FullDisk> {
    let dir = TempDir::new(tag);
    let mount = match Mount::tmpfs(&dir.join("small-disk"), "8m") {
        Ok(m) => m,
        Err(why) => {
            assert!(
                std::env::var("BTCORE_INTEROP").as_deref() != Ok("1"),
                "BTCORE_INTEROP=1 but a tmpfs cannot be mounted: {why}"
            );
            println!("SKIP {tag}: cannot mount a tmpfs ({why})");
            return None;
        }
    };
    let seed_dir = dir.join("seed");
    fs::create_dir_all(&seed_dir).expect("seed dir");
    fs::write(seed_dir.join("big.bin"), payload(32 << 20, 5)).expect("payload");
    let tpath = dir.join("big.torrent");
    create_torrent(&seed_dir.join("big.bin"), &tpath, 256, &[]);
    let (seeder, seed_addr) = start_seeder(&tpath, &seed_dir);
    Some(FullDisk {
        _seeder: seeder,
        mount,
        _dir: dir,
        tpath,
        seed_addr,
    })
}

fn says_no_space(err: &str) -> bool {
    let l = err.to_lowercase();
    l.contains("no space") || l.contains("nospace")
}

#[test]
fn full_disk_is_an_io_error_saying_no_space() {
    let Some(f) = full_disk_setup("fulldisk") else {
        return;
    };
    let t0 = Instant::now();
    // --timeout bounds the run: see the ignored test below for why it is needed.
    let mut p = Proc::spawn(&download_args(&f.tpath, &f.mount.0, f.seed_addr, 8));
    let (st, _, err) = p.finish(Duration::from_secs(40));
    let took = secs(t0);
    assert_no_panic("download", &err, st);
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(4),
        "exit code; stderr: {err}"
    );
    assert!(says_no_space(&err), "no 'no space' message: {err:?}");
    println!(
        "case 5 full disk (--timeout 8): exit 4 in {took:.1} s, {} stderr lines, last: {:?}",
        err.lines().count(),
        err.lines().last()
    );
}

#[test]
fn full_disk_stops_the_download_without_a_timeout() {
    let Some(f) = full_disk_setup("fulldisk-notimeout") else {
        return;
    };
    let t0 = Instant::now();
    let mut args = download_args(&f.tpath, &f.mount.0, f.seed_addr, 0);
    args.truncate(args.len() - 2); // no --timeout
    let mut p = Proc::spawn(&args);
    let (st, _, err) = p.finish(Duration::from_secs(30));
    let took = secs(t0);
    assert_no_panic("download", &err, st);
    assert!(
        st.is_some(),
        "still running {took:.0} s after the disk filled up: {err:?}"
    );
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(4),
        "exit code; stderr: {err}"
    );
    assert!(says_no_space(&err), "no 'no space' message: {err:?}");
    println!("case 5b full disk (no --timeout): exit 4 in {took:.1} s");
}

// ---------------------------------------------------------------------------------
// 6. Hostile paths: nothing is written outside the download directory.
// ---------------------------------------------------------------------------------

/// A multi-file torrent named `name` with the given raw path lists and lengths.
fn multi_file_torrent(name: &[u8], files: &[(Vec<&[u8]>, usize)], piece_len: usize) -> Vec<u8> {
    let total: usize = files.iter().map(|f| f.1).sum();
    let content = payload(total, 6);
    let pieces: Vec<u8> = content.chunks(piece_len).flat_map(sha1).collect();
    let mut out: Vec<u8> = Vec::new();
    let mut e = Encoder::new(&mut out);
    let r: Result<(), core::convert::Infallible> = (|| {
        e.dict()?;
        e.bytes(b"info")?;
        e.dict()?;
        e.bytes(b"files")?;
        e.list()?;
        for (path, len) in files {
            e.dict()?;
            e.key_int(b"length", *len as i64)?;
            e.bytes(b"path")?;
            e.list()?;
            for el in path {
                e.bytes(el)?;
            }
            e.end()?;
            e.end()?;
        }
        e.end()?;
        e.key_bytes(b"name", name)?;
        e.key_int(b"piece length", piece_len as i64)?;
        e.key_bytes(b"pieces", &pieces)?;
        e.end()?;
        e.end()
    })();
    r.expect("encoding into a Vec");
    out
}

/// Every file and directory under `dir` with a digest of each file's content.
fn snapshot(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, Option<[u8; 20]>> {
    fn go(d: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, Option<[u8; 20]>>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p == skip {
                continue;
            }
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                out.insert(p.clone(), None);
                go(&p, skip, out);
            } else {
                out.insert(p.clone(), Some(sha1(&fs::read(&p).unwrap_or_default())));
            }
        }
    }
    let mut m = BTreeMap::new();
    go(dir, skip, &mut m);
    m
}

#[test]
fn hostile_paths_stay_inside_the_download_directory() {
    let t0 = Instant::now();
    // dir/seed: the seeder's data; dir/work: the parent of OUT, with a sentinel.
    let dir = TempDir::new("hostile");
    let base = &dir.join("work");
    fs::create_dir_all(base).expect("work dir");
    let abs_escape = format!("{}/abs-escape.txt", base.display());
    let sentinel = base.join("sentinel.txt");
    fs::write(&sentinel, b"do not touch").expect("sentinel");
    let files: Vec<(Vec<&[u8]>, usize)> = vec![
        (vec![b"..", b"..", b"..", b"sentinel.txt"], 20_000),
        (vec![b"..", b"..", b"..", b"dotdot-escape.txt"], 3_000),
        (vec![abs_escape.as_bytes()], 17_000),
        (vec![b"/", b"etc", b"abs-element.txt"], 1_000),
        (vec![b"a\\..\\..\\..\\..\\backslash.txt"], 9_000),
        (vec![b"C:", b"drive.txt"], 4_000),
        (vec![b"C:\\Windows\\evil.txt"], 5_000),
        (vec![b"nul\0byte.txt"], 6_000),
        (vec![b"x\0/../../../nul-escape.txt"], 7_000),
        (vec![b".", b"dot.txt"], 2_000),
        (vec![b"ok", b"normal.txt"], 30_000),
    ];
    let torrent = multi_file_torrent(b"..", &files, 16_384);
    let tpath = dir.join("hostile.torrent");
    fs::write(&tpath, &torrent).expect("torrent");

    // The seeder's data, at the paths the sanitizer gives.
    let seed_dir = dir.join("seed");
    let total: usize = files.iter().map(|f| f.1).sum();
    let content = payload(total, 6);
    let layout = with_meta(&torrent, |m| m.layout().expect("layout"));
    for f in &layout {
        let p = Path::new(&f.path);
        assert!(
            p.is_relative()
                && p.components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
                && !f.path.contains('\0'),
            "unsafe sanitized path {:?}",
            f.path
        );
        let at = seed_dir.join(p);
        fs::create_dir_all(at.parent().expect("parent")).expect("seed subdir");
        let (o, l) = (f.offset as usize, f.length as usize);
        fs::write(&at, &content[o..o + l]).expect("seed file");
    }
    let paths: Vec<&str> = layout.iter().map(|f| f.path.as_str()).collect();

    let out = base.join("out");
    let inner = out.join("inner");
    let before = snapshot(base, &out);
    let (_seeder, seed_addr) = start_seeder(&tpath, &seed_dir);
    let mut leech = Proc::spawn(&download_args(&tpath, &inner, seed_addr, 60));
    let (st, lines, err) = leech.finish(Duration::from_secs(90));
    assert_no_panic("download", &err, st);
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(0),
        "download incomplete: {err}\n{lines:?}"
    );

    // OUT holds only `inner`; `inner` only the torrent's files and `.btcore`.
    let top: Vec<String> = fs::read_dir(&out)
        .expect("out")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, ["inner"], "OUT holds more than inner");
    for f in walk(&inner) {
        let ok = f.starts_with(".btcore/")
            || paths
                .iter()
                .any(|p| *p == f || (f.ends_with('/') && p.starts_with(f.as_str())));
        assert!(ok, "unexpected {f:?} under OUT/inner (layout: {paths:?})");
    }
    for f in &layout {
        let got = fs::read(inner.join(&f.path)).expect("downloaded file");
        let (o, l) = (f.offset as usize, f.length as usize);
        assert!(got == content[o..o + l], "{} differs", f.path);
    }
    // Nothing next to OUT changed or appeared (the sentinel included).
    let after = snapshot(base, &out);
    assert_eq!(before, after, "files outside OUT changed");
    assert_eq!(fs::read(&sentinel).expect("sentinel"), b"do not touch");
    println!(
        "case 6 hostile paths: {} files, saved as {paths:?}, nothing outside OUT/inner, {:.1} s",
        layout.len(),
        secs(t0)
    );
}

// ---------------------------------------------------------------------------------
// 7. Ctrl-C.
// ---------------------------------------------------------------------------------

#[test]
fn sigint_stops_within_5_s_with_valid_resume_data() {
    let t0 = Instant::now();
    let dir = TempDir::new("sigint");
    let out = dir.join("out");
    let Seeded {
        seed_dir,
        tpath,
        torrent,
        ..
    } = seeded(&dir, 16 << 20, 7, 256);
    // 2 MiB/s: 8 s for the whole, so the download is under way when interrupted.
    let (_seeder, seed_addr) = start_seeder_with(&tpath, &seed_dir, &["--upload-limit", "2048"]);
    let mut leech = Proc::spawn(&download_args(&tpath, &out, seed_addr, 120));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut have = None;
    while let Some(v) = leech.next_json(deadline) {
        let b = v["bytes_have"].as_u64().unwrap_or(0);
        assert_ne!(v["state"], "seeding", "finished before the interrupt: {v}");
        if b > 0 {
            have = Some(b);
            break;
        }
    }
    let have = have.expect("the download never got under way");
    let t_int = Instant::now();
    leech.signal("-INT");
    let (st, lines, err) = leech.finish(Duration::from_secs(5));
    let took = secs(t_int);
    assert_no_panic("download", &err, st);
    assert!(st.is_some(), "still running 5 s after SIGINT");
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(5),
        "exit code; stderr: {err}"
    );
    let claimed = check_resume(&torrent, &out.join(".btcore"), &out);
    let piece_len = with_meta(&torrent, |m| u64::from(m.piece_length()));
    // The final save holds at least what the last progress line showed.
    let shown = lines
        .iter()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["bytes_have"].as_u64())
        .unwrap_or(have);
    assert!(
        claimed.len() as u64 * piece_len >= shown,
        "the resume file claims {} pieces, the last progress line showed {shown} bytes",
        claimed.len()
    );
    println!(
        "case 7 SIGINT: exit 5 {took:.2} s after the signal; resume claims {} valid pieces; \
         total {:.1} s",
        claimed.len(),
        secs(t0)
    );
}

// ---------------------------------------------------------------------------------
// Rate limits (what keeps the downloads above slow enough to interrupt).
// ---------------------------------------------------------------------------------

#[test]
fn rate_limits_are_enforced() {
    let dir = TempDir::new("limits");
    let Seeded {
        seed_dir, tpath, ..
    } = seeded(&dir, 8 << 20, 8, 256);
    let mut report = Vec::new();
    // 8 MiB at 2 MiB/s with one second of burst: 3 s.
    let limit = ["--upload-limit", "2048"];
    let none: [&str; 0] = [];
    for (i, (side, seed_extra, leech_extra)) in [
        ("--upload-limit 2048 on seed", &limit[..], &none[..]),
        (
            "--download-limit 2048 on download",
            &none[..],
            &["--download-limit", "2048"][..],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let (_seeder, addr) = start_seeder_with(&tpath, &seed_dir, seed_extra);
        let out = dir.join(&format!("out-{i}"));
        let mut args = download_args(&tpath, &out, addr, 60);
        args.extend(leech_extra.iter().map(|a| (*a).to_owned()));
        let t0 = Instant::now();
        let mut p = Proc::spawn(&args);
        let (st, _, err) = p.finish(Duration::from_secs(90));
        let took = secs(t0);
        assert_eq!(st.and_then(|s| s.code()), Some(0), "{side}: {err}");
        report.push(format!("{side}: 8 MiB in {took:.1} s"));
        assert!(
            (2.5..20.0).contains(&took),
            "{side}: 8 MiB arrived in {took:.1} s, 3 s expected"
        );
    }
    println!("rate limits: {}", report.join("; "));
}

/// A disk queue of 16 KiB: every socket read of up to 64 KiB leaves the disk behind, so
/// the leecher stops reading after nearly every read and must pick each connection up
/// again when writes complete (the poll is edge-triggered: a connection forgotten there
/// would hang until the timeout). The download completes, byte for byte.
#[test]
fn tiny_disk_queue_pauses_reading_and_completes() {
    const SIZE: usize = 24 << 20;
    let dir = TempDir::new("diskq");
    let Seeded {
        seed_dir,
        data,
        tpath,
        ..
    } = seeded(&dir, SIZE, 7, 256);
    let (_seeder, addr) = start_seeder(&tpath, &seed_dir);
    let out = dir.join("out");
    let mut args = download_args(&tpath, &out, addr, 60);
    args.extend(["--disk-queue-kib".to_owned(), "16".to_owned()]);
    let mut p = Proc::spawn(&args);
    let (st, _, err) = p.finish(Duration::from_secs(90));
    assert_no_panic("tiny disk queue", &err, st);
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{err}");
    let got = fs::read(out.join("data.bin")).expect("downloaded file");
    assert!(got == data, "downloaded bytes differ");
}

/// Resume data records each file's length and mtime once its data is synced. A restart
/// that finds them unchanged trusts the pieces it claims without reading them (a damaged
/// byte behind an unchanged mtime goes unnoticed, as in libtorrent and Transmission);
/// a file whose mtime moved is checked, and the damaged piece is fetched again.
#[test]
fn restart_trusts_unchanged_files_and_checks_changed_ones() {
    const SIZE: usize = 4 << 20;
    let dir = TempDir::new("stamps");
    let Seeded {
        seed_dir,
        data,
        tpath,
        ..
    } = seeded(&dir, SIZE, 11, 256);
    let out = dir.join("out");
    {
        let (_seeder, addr) = start_seeder(&tpath, &seed_dir);
        let mut p = Proc::spawn(&download_args(&tpath, &out, addr, 60));
        let (st, _, err) = p.finish(Duration::from_secs(90));
        assert_eq!(st.and_then(|s| s.code()), Some(0), "first download: {err}");
    }
    let file = out.join("data.bin");
    // Damage one byte of piece 5, writing through a handle: the mtime moves.
    let damage = |restore_mtime: bool| {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("open");
        let mtime = f.metadata().and_then(|m| m.modified()).expect("mtime");
        let at = 5 * 256 * 1024 + 77;
        f.write_all_at(&[data[at] ^ 0xff], at as u64)
            .expect("damage");
        if restore_mtime {
            f.set_modified(mtime).expect("set mtime");
        }
    };
    // The first progress line of a restart with no peer to fetch from.
    let first_progress = || {
        let nowhere = SocketAddr::from(([127, 0, 0, 1], 1));
        let mut p = Proc::spawn(&download_args(&tpath, &out, nowhere, 3));
        let v = p.next_json_checked(Instant::now() + Duration::from_secs(30));
        let _ = p.finish(Duration::from_secs(30));
        v.and_then(|v| v["progress"].as_f64())
            .expect("a progress line")
    };
    damage(true);
    assert_eq!(
        first_progress(),
        100.0,
        "unchanged stamps: the claims stand"
    );
    damage(false);
    let p = first_progress();
    assert!(
        p < 100.0 && p > 90.0,
        "the changed file's pieces were hashed and the damaged one dropped: {p}"
    );
}
