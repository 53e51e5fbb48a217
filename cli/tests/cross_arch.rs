//! A download between two architectures on 127.0.0.1: the native (x86-64) `btcore seed`
//! serves, the armv7 `btcore download` runs under qemu-user and must finish with the
//! exact bytes; then the other way round (armv7 seeds, native downloads).
//!
//! The armv7 binary is `$BTCORE_ARMV7_BIN`, or
//! `$CARGO_TARGET_DIR/armv7-unknown-linux-gnueabihf/release/btcore` (the target directory
//! next to this test's own when `CARGO_TARGET_DIR` is unset); build it with
//! `cargo build --release --target armv7-unknown-linux-gnueabihf -p btcore-cli`
//! (`scripts/cross.sh` does). The emulator is `$BTCORE_QEMU_ARM`, default
//! `qemu-arm -L /usr/arm-linux-gnueabihf`. When either is missing the tests print why
//! and pass, unless `BTCORE_CROSS=1`, which makes a missing piece a failure.

mod common;

use btcore_tests::free_port;
use common::TempDir;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const ARMV7: &str = "armv7-unknown-linux-gnueabihf";

fn required() -> bool {
    std::env::var("BTCORE_CROSS").is_ok_and(|v| v == "1")
}

/// Skips (or fails under `BTCORE_CROSS=1`) with a reason.
fn skip(why: &str) {
    assert!(!required(), "BTCORE_CROSS=1 but {why}");
    eprintln!("skipping the cross-architecture download: {why}");
}

fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    // This test runs from TARGET/<profile>/deps/cross_arch-*.
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn armv7_bin() -> Option<PathBuf> {
    let p = std::env::var_os("BTCORE_ARMV7_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join(ARMV7).join("release").join("btcore"));
    p.is_file().then_some(p)
}

/// The emulator command line, split on spaces.
fn qemu() -> Vec<String> {
    std::env::var("BTCORE_QEMU_ARM")
        .unwrap_or_else(|_| "qemu-arm -L /usr/arm-linux-gnueabihf".into())
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Everything needed, or why not.
fn setup() -> Option<(PathBuf, Vec<String>)> {
    if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        // Built for another target (e.g. under qemu itself): the native side is missing.
        eprintln!("skipping the cross-architecture download: runs on x86-64 Linux hosts");
        return None;
    }
    let Some(bin) = armv7_bin() else {
        skip("no armv7 btcore (build it: cargo build --release --target armv7-unknown-linux-gnueabihf -p btcore-cli, or set BTCORE_ARMV7_BIN)");
        return None;
    };
    let q = qemu();
    let runs = Command::new(&q[0])
        .args(&q[1..])
        .arg(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !runs {
        skip(&format!("{} cannot run {}", q.join(" "), bin.display()));
        return None;
    }
    Some((bin, q))
}

/// Kills the child on drop (a failed assertion must not leave a seeder running).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Files of the payload: odd sizes, a nested directory, a file smaller than a piece.
/// (No zero-length file: `btcore download` does not create those yet, an engine issue
/// unrelated to the architecture.)
const FILES: [(&str, usize); 3] = [
    ("payload/a.bin", 9 * 1024 * 1024 + 4_321),
    ("payload/sub/b.bin", 3 * 1024 * 1024 + 17),
    ("payload/sub/c.txt", 70_001),
];

fn make_payload(dir: &Path) {
    for (i, (name, len)) in FILES.iter().enumerate() {
        let p = dir.join(name);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(&p, content(i as u64 + 1, *len)).expect("write payload");
    }
}
/// `btcore` natively, or the armv7 one under qemu.
fn btcore(arm: Option<&(PathBuf, Vec<String>)>) -> Command {
    match arm {
        None => Command::new(env!("CARGO_BIN_EXE_btcore")),
        Some((bin, q)) => {
            let mut c = Command::new(&q[0]);
            c.args(&q[1..]).arg(bin);
            c
        }
    }
}

fn wait_timeout(c: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(s)) = c.try_wait() {
            return Some(s);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `seeder_arm` / `leecher_arm`: which side runs the armv7 binary.
fn transfer(name: &str, arm: &(PathBuf, Vec<String>), seeder_arm: bool) {
    let dir = TempDir::new(&format!("xarch-{name}"));
    let seed_dir = dir.0.join("seed");
    let out_dir = dir.0.join("out");
    make_payload(&seed_dir);
    let torrent = dir.0.join("payload.torrent");
    let created = Command::new(env!("CARGO_BIN_EXE_btcore"))
        .arg("create")
        .arg(seed_dir.join("payload"))
        .args(["--piece-kib", "256", "-o"])
        .arg(&torrent)
        .output()
        .expect("btcore create");
    assert!(created.status.success(), "create: {created:?}");

    let (seeder_side, leecher_side) = if seeder_arm {
        (Some(arm), None)
    } else {
        (None, Some(arm))
    };
    let seed_port = free_port();
    let seeder = btcore(seeder_side)
        .arg("seed")
        .arg(&torrent)
        .arg(&seed_dir)
        .args(["--bind", "127.0.0.1", "--port", &seed_port.to_string()])
        .args(["--no-trackers", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("seeder starts");
    let mut seeder = Guard(seeder);
    // Start the leecher once the seeder has checked its data and listens (under qemu that
    // takes a moment; a leecher started earlier waits out a reconnect delay).
    let (tx, rx) = std::sync::mpsc::channel();
    let out = seeder.0.stdout.take().expect("seeder stdout");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("\"state\":\"seeding\"") {
                let _ = tx.send(());
            }
        }
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(120)).is_ok(),
        "{name}: the seeder did not report seeding"
    );

    let start = Instant::now();
    let leecher = btcore(leecher_side)
        .arg("download")
        .arg(&torrent)
        .arg("-o")
        .arg(&out_dir)
        .args(["--bind", "127.0.0.1", "--port", &free_port().to_string()])
        .args(["--peer", &format!("127.0.0.1:{seed_port}")])
        .args(["--no-trackers", "--timeout", "300", "--progress", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("leecher starts");
    let mut leecher = Guard(leecher);
    let status = wait_timeout(&mut leecher.0, Duration::from_secs(330));
    let secs = start.elapsed().as_secs_f64();
    let leecher_err = {
        use std::io::Read;
        let mut s = String::new();
        if let Some(e) = leecher.0.stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    };
    if !matches!(seeder.0.try_wait(), Ok(None)) {
        let mut s = String::new();
        if let Some(e) = seeder.0.stderr.as_mut() {
            use std::io::Read;
            let _ = e.read_to_string(&mut s);
        }
        panic!("{name}: the seeder exited early: {s}");
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "{name}: download did not complete ({status:?}): {leecher_err}"
    );
    for (i, (file, len)) in FILES.iter().enumerate() {
        let got = fs::read(out_dir.join(file)).expect("downloaded file");
        assert_eq!(got.len(), *len, "{name}: length of {file}");
        assert!(got == content(i as u64 + 1, *len), "{name}: {file} differs");
    }
    let total: usize = FILES.iter().map(|f| f.1).sum();
    eprintln!(
        "{name}: {total} bytes in {secs:.1} s ({:.1} MB/s), byte for byte",
        total as f64 / 1e6 / secs
    );
}

#[test]
fn native_seed_to_armv7_download() {
    if let Some(arm) = setup() {
        transfer("x86-to-armv7", &arm, false);
    }
}

#[test]
fn armv7_seed_to_native_download() {
    if let Some(arm) = setup() {
        transfer("armv7-to-x86", &arm, true);
    }
}
