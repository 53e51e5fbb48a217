//! The C API tested from C and C++: the header compiles as C99 and C++17 with
//! `-Wall -Wextra -Wpedantic -Werror`, the examples and test programs are built with
//! AddressSanitizer and UBSan and run against real seeders on 127.0.0.1, a full
//! lifecycle runs under valgrind, and only `btcore_*` symbols leave the shared library.
//!
//! The libraries come from this test's own build (`libbtcore.a` and `libbtcore.so` sit
//! next to `deps/`); the `btcore` command (seeder and torrent maker) is built into the
//! same target directory when missing. Every wait is bounded; every process is killed
//! by its PID.

use btcore_tests::free_port;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const CFLAGS: &[&str] = &["-Wall", "-Wextra", "-Wpedantic", "-Werror", "-g"];
const SAN: &[&str] = &["-fsanitize=address,undefined", "-fno-omit-frame-pointer"];
const LIBS: &[&str] = &["-lpthread", "-ldl", "-lm"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `target/<profile>`, where cargo put `libbtcore.a` and `libbtcore.so`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf()
}

/// Builds the C libraries into this target directory: a workspace-wide test run builds
/// only the rlib, and libraries an earlier build left there may be stale (cargo does
/// nothing when they are fresh).
fn ensure_libs() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = profile_dir();
        let target = dir.parent().expect("target dir").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        c.current_dir(root())
            .args([
                "build",
                "--offline",
                "-p",
                "btcore-ffi",
                "--lib",
                "--target-dir",
            ])
            .arg(&target);
        if dir.file_name().is_some_and(|n| n == "release") {
            c.arg("--release");
        }
        run(&mut c);
    });
}

fn static_lib() -> PathBuf {
    ensure_libs();
    let p = profile_dir().join("libbtcore.a");
    assert!(p.exists(), "{} missing", p.display());
    p
}

/// A test's scratch directory, removed when the test ends (pass or fail).
struct Tmp(PathBuf);

impl std::ops::Deref for Tmp {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<std::path::Path> for Tmp {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp(name: &str) -> Tmp {
    let d = std::env::temp_dir().join(format!("btcore-c-api-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    Tmp(d)
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Compiles C (`cc -std=c99`) or C++ (`c++ -std=c++17`) sources against the static library.
fn compile(sources: &[PathBuf], out: &Path, cpp: bool, sanitize: bool) {
    let mut c = Command::new(if cpp { "c++" } else { "cc" });
    c.arg(if cpp { "-std=c++17" } else { "-std=c99" })
        .args(CFLAGS)
        .arg("-I")
        .arg(root().join("include"));
    if sanitize {
        c.args(SAN);
    }
    c.args(sources)
        .arg(static_lib())
        .args(LIBS)
        .arg("-o")
        .arg(out);
    run(&mut c);
}

/// A child process killed (by PID) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
fn wait_listening(port: u16, limit: Duration) {
    let start = Instant::now();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    while start.elapsed() < limit {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on 127.0.0.1:{port} after {limit:?}");
}

/// The `btcore` command, built into this target directory when missing.
fn btcore_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // The peers and trackers these tests talk to are real `btcore` processes;
        // which build of the command they are does not matter to the library under
        // test (CI runs the release library against the debug command it built).
        if let Some(b) = std::env::var_os("BTCORE_BIN").filter(|b| !b.is_empty()) {
            return PathBuf::from(b);
        }
        let bin = profile_dir().join("btcore");
        if !bin.exists() {
            let target = profile_dir().parent().expect("target dir").to_path_buf();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            run(Command::new(cargo)
                .current_dir(root())
                .args([
                    "build",
                    "--offline",
                    "-p",
                    "btcore-cli",
                    "--bin",
                    "btcore",
                    "--target-dir",
                ])
                .arg(&target));
        }
        assert!(bin.exists(), "{} missing", bin.display());
        bin
    })
    .clone()
}

/// Random content and its torrent, in `dir/seed/payload.bin` and `dir/payload.torrent`.
fn make_content(dir: &Path, size: usize) -> (PathBuf, PathBuf) {
    let seed_dir = dir.join("seed");
    std::fs::create_dir_all(&seed_dir).expect("seed dir");
    let mut x: u64 = 0x1234_5678_9abc_def1 ^ size as u64;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let payload = seed_dir.join("payload.bin");
    std::fs::write(&payload, &data).expect("payload");
    let torrent = dir.join("payload.torrent");
    run(Command::new(btcore_bin())
        .arg("create")
        .arg(&payload)
        .arg("-o")
        .arg(&torrent)
        .args(["--piece-kib", "32"]));
    (payload, torrent)
}

fn libtorrent_available() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import libtorrent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

const LT_SEED: &str = r#"
import sys, time, libtorrent as lt
torrent, save, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = lt.session({'listen_interfaces': '127.0.0.1:%d' % port, 'enable_dht': False,
    'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False,
    'allow_multiple_connections_per_ip': True, 'alert_mask': 0})
h = s.add_torrent({'ti': lt.torrent_info(torrent), 'save_path': save})
deadline = time.time() + 600
# Checked and serving: say so (the test waits for this line).
while not h.status().is_seeding:
    if time.time() > deadline:
        sys.exit('never seeding')
    time.sleep(0.05)
sys.stderr.write('libtorrent: seeding\n')
sys.stderr.flush()
while time.time() < deadline:
    time.sleep(0.5)
"#;

/// A seeder for `torrent` on 127.0.0.1: libtorrent when importable, else `btcore seed`.
/// `btcore_only` forces the btcore seeder.
fn seeder(dir: &Path, torrent: &Path, btcore_only: bool) -> (Proc, u16) {
    let port = free_port();
    let child = if !btcore_only && libtorrent_available() {
        let script = dir.join("lt_seed.py");
        std::fs::write(&script, LT_SEED).expect("script");
        Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(torrent)
            .arg(dir.join("seed"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3")
    } else {
        Command::new(btcore_bin())
            .arg("seed")
            .arg(torrent)
            .arg(dir.join("seed"))
            .args([
                "--bind",
                "127.0.0.1",
                "--no-trackers",
                "--progress",
                "none",
                "-p",
            ])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("btcore seed")
    };
    let mut p = Proc(child);
    // Both check the data before they serve it, then say so on stderr.
    wait_for_line(&mut p.0, ": seeding", Duration::from_secs(60));
    wait_listening(port, Duration::from_secs(20));
    (p, port)
}

/// Waits at most `limit` for a line containing `needle` on the child's (piped) stderr,
/// which is copied to the test's stderr all along; fails when the child ends first.
fn wait_for_line(child: &mut Child, needle: &'static str, limit: Duration) {
    let err = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            if line.contains(needle) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    if let Err(e) = rx.recv_timeout(limit) {
        panic!("no line with {needle:?} from the seeder within {limit:?} ({e})");
    }
}

/// Runs a program with a bounded wait; returns its stdout.
fn run_bounded(cmd: &mut Command, limit: Duration) -> String {
    let mut child = Proc(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}")),
    );
    let start = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            let mut out = String::new();
            let mut err = String::new();
            use std::io::Read;
            if let Some(mut o) = child.0.stdout.take() {
                let _ = o.read_to_string(&mut out);
            }
            if let Some(mut e) = child.0.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            assert!(status.success(), "{cmd:?}: {status}\n{out}\n{err}");
            return out;
        }
        assert!(
            start.elapsed() < limit,
            "{cmd:?} still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn same_file(a: &Path, b: &Path) {
    let x = std::fs::read(a).unwrap_or_else(|e| panic!("{}: {e}", a.display()));
    let y = std::fs::read(b).unwrap_or_else(|e| panic!("{}: {e}", b.display()));
    assert!(x == y, "{} differs from {}", a.display(), b.display());
}

#[test]
fn header_compiles_as_c99_and_cpp17() {
    let dir = tmp("header");
    let src = "#include <btcore.h>\nint main(void) { return btcore_version()[0] == 0 && BTCORE_VERSION_MAJOR == 0 && BTCORE_OK == 0; }\n";
    for (name, cpp) in [("h.c", false), ("h.cpp", true)] {
        let p = dir.join(name);
        std::fs::write(&p, src).expect("source");
        compile(&[p], &dir.join(format!("{name}.out")), cpp, false);
    }
}

#[test]
fn header_matches_cbindgen() {
    let Ok(out) = Command::new("cbindgen")
        .current_dir(root())
        .args([
            "--config",
            "ffi/cbindgen.toml",
            "--crate",
            "btcore-ffi",
            "--quiet",
            "ffi",
        ])
        .output()
    else {
        // CI installs cbindgen (scripts/test-all.sh) and sets BTCORE_INTEROP=1: there a
        // missing cbindgen is a failure, never a silent skip.
        assert!(
            std::env::var("BTCORE_INTEROP").as_deref() != Ok("1"),
            "cbindgen is not installed (cargo install cbindgen --locked)"
        );
        eprintln!("cbindgen not installed: skipping");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = std::fs::read(root().join("include/btcore.h")).expect("header");
    assert!(
        out.stdout == committed,
        "include/btcore.h is stale: regenerate it with cbindgen (see ffi/cbindgen.toml)"
    );
}

#[test]
fn shared_library_exports_only_btcore_symbols() {
    ensure_libs();
    let so = profile_dir().join("libbtcore.so");
    assert!(so.exists(), "{} missing", so.display());
    let out = run(Command::new("nm").args(["-D", "--defined-only"]).arg(&so));
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert!(names.contains(&"btcore_session_new"), "{text}");
    let foreign: Vec<&&str> = names.iter().filter(|n| !n.starts_with("btcore_")).collect();
    assert!(foreign.is_empty(), "exported: {foreign:?}");
    let dynamic = run(Command::new("readelf").arg("-d").arg(&so));
    assert!(
        String::from_utf8_lossy(&dynamic.stdout).contains("[libbtcore.so.0]"),
        "soname is not libbtcore.so.0"
    );
}

#[test]
fn misuse_returns_error_codes() {
    let dir = tmp("misuse");
    let exe = dir.join("misuse");
    compile(&[root().join("ffi/tests/misuse.c")], &exe, false, true);
    let out = run_bounded(
        Command::new(&exe).current_dir(&dir),
        Duration::from_secs(60),
    );
    assert!(out.contains("all checks passed"), "{out}");

    // The same program against the shared library, installed under its soname.
    let so_exe = dir.join("misuse_shared");
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib).expect("lib dir");
    std::fs::copy(
        profile_dir().join("libbtcore.so"),
        lib.join("libbtcore.so.0"),
    )
    .expect("copy");
    std::os::unix::fs::symlink("libbtcore.so.0", lib.join("libbtcore.so")).expect("symlink");
    run(Command::new("cc")
        .arg("-std=c99")
        .args(CFLAGS)
        .arg("-I")
        .arg(root().join("include"))
        .arg(root().join("ffi/tests/misuse.c"))
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lbtcore")
        .arg("-o")
        .arg(&so_exe));
    let out = run_bounded(
        Command::new(&so_exe).current_dir(&dir),
        Duration::from_secs(60),
    );
    assert!(out.contains("all checks passed"), "{out}");
}

#[test]
fn valgrind_finds_no_leak_in_a_session_lifecycle() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("valgrind not installed: skipping");
        return;
    }
    let dir = tmp("valgrind");
    let exe = dir.join("lifecycle");
    compile(&[root().join("ffi/tests/lifecycle.c")], &exe, false, false);
    let content = dir.join("content.bin");
    std::fs::write(&content, vec![7u8; 100_000]).expect("content");
    let dl = dir.join("dl");
    std::fs::create_dir_all(&dl).expect("dl");
    let out = run_bounded(
        Command::new("valgrind")
            .args(["--leak-check=full", "--error-exitcode=1", "-q"])
            .arg(&exe)
            .arg(&content)
            .arg(&dl),
        Duration::from_secs(300),
    );
    assert!(out.contains("lifecycle: ok"), "{out}");
}

#[test]
fn c_example_downloads_from_a_seeder() {
    let dir = tmp("download");
    let (payload, torrent) = make_content(&dir, 1_500_000);
    let exe = dir.join("download");
    compile(&[root().join("examples/c/download.c")], &exe, false, true);
    let (_seed, port) = seeder(&dir, &torrent, false);
    let out_dir = dir.join("out");
    let out = run_bounded(
        Command::new(&exe)
            .arg(&torrent)
            .arg(&out_dir)
            .arg(format!("127.0.0.1:{port}"))
            .env("BTCORE_TIMEOUT_S", "90"),
        Duration::from_secs(120),
    );
    assert!(out.contains("complete"), "{out}");
    same_file(&payload, &out_dir.join("payload.bin"));
}

#[test]
fn cpp_example_downloads_from_a_seeder() {
    let dir = tmp("cpp");
    let (payload, torrent) = make_content(&dir, 700_000);
    let exe = dir.join("download_cpp");
    compile(
        &[root().join("examples/cpp/download.cpp")],
        &exe,
        true,
        true,
    );
    let (_seed, port) = seeder(&dir, &torrent, false);
    let out_dir = dir.join("out");
    let out = run_bounded(
        Command::new(&exe)
            .arg(&torrent)
            .arg(&out_dir)
            .arg(format!("127.0.0.1:{port}"))
            .env("BTCORE_TIMEOUT_S", "90"),
        Duration::from_secs(120),
    );
    assert!(out.contains("complete"), "{out}");
    same_file(&payload, &out_dir.join("payload.bin"));
}

#[test]
fn sansio_example_downloads_from_a_btcore_seeder() {
    let dir = tmp("sansio");
    let (payload, torrent) = make_content(&dir, 1_200_000);
    let exe = dir.join("sansio");
    compile(&[root().join("examples/c/sansio.c")], &exe, false, true);
    let (_seed, port) = seeder(&dir, &torrent, true);
    let out_file = dir.join("out.bin");
    let out = run_bounded(
        Command::new(&exe)
            .arg(&torrent)
            .arg(&out_file)
            .arg(format!("127.0.0.1:{port}"))
            .env("BTCORE_TIMEOUT_S", "90"),
        Duration::from_secs(120),
    );
    assert!(out.contains("complete"), "{out}");
    same_file(&payload, &out_file);
}

/// `examples/c/sansio_seed.c` seeds to a `btcore download` over plain TCP and then
/// over MSE: the plain leecher gets every block of 4 KiB or more from the bytes the
/// program read and held (`btcore_sansio_read_held`, `btcore_sansio_transmit_held`),
/// the encrypted one gets them copied in (held payloads are refused on RC4 links);
/// both downloads match the payload.
#[test]
fn sansio_seed_example_sends_held_blocks_to_a_plain_leecher_and_copies_for_an_encrypted_one() {
    let dir = tmp("sansio_seed");
    let (payload, torrent) = make_content(&dir, 1_200_000);
    let exe = dir.join("sansio_seed");
    compile(
        &[root().join("examples/c/sansio_seed.c")],
        &exe,
        false,
        true,
    );
    // 1,200,000 bytes: 73 whole blocks and a last one of 3,712 bytes (under 4 KiB).
    // At least those (a block asked again after a timeout goes out twice).
    for (encryption, held, copied) in [("allowed", 73, 1), ("required", 0, 74)] {
        let port = free_port();
        let mut seed = Proc(
            Command::new(&exe)
                .arg(&torrent)
                .arg(&payload)
                .arg(port.to_string())
                .env("BTCORE_TIMEOUT_S", "90")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("sansio_seed"),
        );
        wait_listening(port, Duration::from_secs(20));
        let out_dir = dir.join(format!("out-{encryption}"));
        run_bounded(
            Command::new(btcore_bin())
                .arg("download")
                .arg(&torrent)
                .args(["-o"])
                .arg(&out_dir)
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--no-trackers",
                    "--no-dht",
                    "--progress",
                    "none",
                ])
                .args(["--encryption", encryption])
                .arg("--peer")
                .arg(format!("127.0.0.1:{port}")),
            Duration::from_secs(120),
        );
        same_file(&payload, &out_dir.join("payload.bin"));
        // The seeder ends once its peer has gone; the probe of `wait_listening` came
        // and went before.
        let start = Instant::now();
        let status = loop {
            if let Some(s) = seed.0.try_wait().expect("wait") {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the seeder still runs after its peer left"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        use std::io::Read;
        if let Some(mut o) = seed.0.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        assert!(status.success(), "{status}\n{out}");
        let counts: Vec<u64> = out
            .lines()
            .find_map(|l| l.strip_prefix("blocks sent: "))
            .unwrap_or_else(|| panic!("no counts: {out}"))
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        let [got_held, got_copied] = counts[..] else {
            panic!("{out}");
        };
        if held == 0 {
            assert_eq!(got_held, 0, "{encryption}: nothing held on RC4: {out}");
        } else {
            assert!(got_held >= held, "{encryption}: {out}");
        }
        assert!(got_copied >= copied, "{encryption}: {out}");
        // A plain leecher gets the small last block copied, no other.
        if held > 0 {
            assert!(got_copied <= got_held / 10 + 1, "{encryption}: {out}");
        }
    }
}

// ---- The sans-IO layer with encryption, a tracker and a multi-file torrent ----

/// Random files under `dir/seed/multi/` (a nested one and an empty one) and their
/// torrent, announcing to `tracker`, in `dir/multi.torrent`.
fn make_multi_file_content(dir: &Path, tracker: &str) -> (Vec<(PathBuf, Vec<u8>)>, PathBuf) {
    let root = dir.join("seed").join("multi");
    std::fs::create_dir_all(root.join("sub/deeper")).expect("seed dirs");
    let mut x: u64 = 0x0bad_5eed_1234_5678;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    // Sizes that put file boundaries inside pieces and inside blocks.
    let files = [
        ("a.bin", 300_001),
        ("sub/b.bin", 70_000),
        ("sub/deeper/c.bin", 555_555),
        ("sub/empty.txt", 0),
        ("z.bin", 123),
    ];
    let mut out = Vec::new();
    for (rel, size) in files {
        let data = random(size);
        std::fs::write(root.join(rel), &data).expect("seed file");
        out.push((PathBuf::from("multi").join(rel), data));
    }
    let torrent = dir.join("multi.torrent");
    run(Command::new(btcore_bin())
        .arg("create")
        .arg(&root)
        .arg("-o")
        .arg(&torrent)
        .args(["--piece-kib", "32", "-t", tracker]));
    (out, torrent)
}

#[test]
fn sansio_full_example_downloads_a_multi_file_torrent_through_a_tracker_from_an_encrypting_seeder()
{
    let dir = tmp("sansio-full");
    let exe = dir.join("sansio_full");
    compile(
        &[root().join("examples/c/sansio_full.c")],
        &exe,
        false,
        true,
    );

    // The project's tracker on 127.0.0.1 (HTTP only).
    let tracker_port = free_port();
    let _tracker = Proc(
        Command::new(btcore_bin())
            .arg("tracker")
            .arg("--http")
            .arg(format!("127.0.0.1:{tracker_port}"))
            .arg("--no-udp")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("btcore tracker"),
    );
    wait_listening(tracker_port, Duration::from_secs(20));
    let (files, torrent) =
        make_multi_file_content(&dir, &format!("http://127.0.0.1:{tracker_port}/announce"));

    // A seeder that refuses plain connections and is known only to the tracker.
    let port = free_port();
    let mut seed = Proc(
        Command::new(btcore_bin())
            .arg("seed")
            .arg(&torrent)
            .arg(dir.join("seed"))
            .args([
                "--bind",
                "127.0.0.1",
                "--encryption",
                "required",
                "--no-dht",
                "--progress",
                "none",
                "-p",
            ])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("btcore seed"),
    );
    wait_for_line(&mut seed.0, ": seeding", Duration::from_secs(60));
    wait_listening(port, Duration::from_secs(20));

    let out_dir = dir.join("out");
    let out = run_bounded(
        Command::new(&exe)
            .arg(&torrent)
            .arg(&out_dir)
            .env("BTCORE_TIMEOUT_S", "90"),
        Duration::from_secs(120),
    );
    assert!(out.contains("complete"), "{out}");
    assert!(out.contains("in 5 files"), "{out}");
    for (rel, data) in &files {
        let got =
            std::fs::read(out_dir.join(rel)).unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
        assert!(&got == data, "{} differs", rel.display());
    }
}

#[test]
fn sansio_extra_entry_points_refuse_misuse_and_dht_nodes_meet_over_udp() {
    let dir = tmp("sansio-extra");
    let exe = dir.join("sansio_extra");
    compile(
        &[root().join("ffi/tests/sansio_extra.c")],
        &exe,
        false,
        true,
    );
    let out = run_bounded(
        Command::new(&exe).current_dir(&dir),
        Duration::from_secs(60),
    );
    assert!(out.contains("all checks passed"), "{out}");
}

/// uTP from C: two `btcore_utp` endpoints on real UDP sockets on 127.0.0.1 carry 4 MiB
/// and 3 MiB at once, compared byte for byte, and close cleanly; garbage, truncated and
/// crafted datagrams give typed results; the sans-IO session's `CONNECT` names the
/// transport its dial policy picks.
#[test]
fn utp_endpoints_carry_mibs_over_udp_and_type_garbage() {
    let dir = tmp("utp");
    let exe = dir.join("utp");
    compile(&[root().join("ffi/tests/utp.c")], &exe, false, true);
    let out = run_bounded(
        Command::new(&exe).current_dir(&dir),
        Duration::from_secs(120),
    );
    assert!(out.contains("all checks passed"), "{out}");
}

// ---- errors that say what happened ----

/// An HTTP tracker on 127.0.0.1 that answers every announce with a `failure reason`
/// ("nope"), on a thread that lives as long as the test process; returns its port.
fn refusing_tracker() -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tracker");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            // Read the request head, then answer and close.
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let body = b"d14:failure reason4:nopee";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        }
    });
    port
}

/// A failure says what happened, from C: a port in use (EADDRINUSE and the address),
/// an unwritable download folder (ENOTDIR and the path, which holds for root too: the
/// folder is under a regular file), a missing `.torrent` file (ENOENT and the path), a
/// truncated torrent (the byte offset and the cause), a tracker's failure reason as an
/// event with its URL and message, and one file-error event (ENOTDIR and the path) for
/// a torrent whose folder cannot be written, not one per block in flight.
#[test]
fn errors_say_what_happened() {
    let dir = tmp("errors");
    std::fs::create_dir_all(dir.join("content")).expect("content dir");
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("content/data.bin"), &data).expect("content");
    std::fs::write(dir.join("afile"), b"a regular file").expect("afile");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind busy port");
    let busy_port = busy.local_addr().expect("addr").port();
    let tracker_port = refusing_tracker();
    let exe = dir.join("errors");
    compile(&[root().join("ffi/tests/errors.c")], &exe, false, true);
    let out = run_bounded(
        Command::new(&exe)
            .arg(&*dir)
            .arg(busy_port.to_string())
            .arg(tracker_port.to_string())
            .current_dir(&dir),
        Duration::from_secs(120),
    );
    assert!(out.contains("all checks passed"), "{out}");
    eprintln!("{out}");
    drop(busy);
}

// ---- per-torrent controls (ffi/tests/torrent.c) ----

/// The files `ffi/tests/torrent.c` serves: `dir/pack/{a,b,c}.bin` (16 KiB pieces: b.bin
/// shares piece 5 with a.bin and piece 13 with c.bin). Returns their contents.
fn make_pack(dir: &Path) -> Vec<Vec<u8>> {
    let pack = dir.join("pack");
    std::fs::create_dir_all(&pack).expect("pack");
    let sizes = [5 * 16_384 + 100, 8 * 16_384, 3 * 16_384 + 7];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::new();
    for (name, size) in ["a.bin", "b.bin", "c.bin"].iter().zip(sizes) {
        let data: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(pack.join(name), &data).expect("write");
        out.push(data);
    }
    out
}

fn torrent_c(dir: &Path) -> PathBuf {
    let exe = dir.join("torrent");
    compile(&[root().join("ffi/tests/torrent.c")], &exe, false, true);
    exe
}

/// A download already complete on disk: the check finds every piece and
/// `BTCORE_EVENT_TORRENT_FINISHED` comes (before, it never did and a client waiting for
/// it hung).
#[test]
fn c_finished_event_after_adding_a_complete_download() {
    let dir = tmp("finished");
    make_pack(&dir.join("seed"));
    let exe = torrent_c(&dir);
    let out = run_bounded(
        Command::new(&exe).arg("finished").arg(dir.join("seed")),
        Duration::from_secs(120),
    );
    assert!(out.contains("finished: ok"), "{out}");
}

/// The v2 info-hash of hybrid torrents made by libtorrent, through the C API: both
/// info-hashes as libtorrent computed them (the corpus's `EXPECTED.json`); a v1
/// torrent has none.
#[test]
fn c_hybrid_torrents_name_their_v2_info_hash() {
    let dir = tmp("v2hash");
    make_pack(&dir);
    let exe = torrent_c(&dir);
    let corpus = btcore_tests::conformance_dir().join("v2-generated");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(corpus.join("EXPECTED.json")).expect("read"))
            .expect("json");
    for name in ["single-hybrid.torrent", "multi-hybrid.torrent"] {
        let e = &expected["torrents"][name];
        let (v1, v2) = (
            e["v1_info_hash"].as_str().expect("v1"),
            e["v2_info_hash"].as_str().expect("v2"),
        );
        let out = run_bounded(
            Command::new(&exe)
                .arg("v2hash")
                .arg(corpus.join(name))
                .args([v1, v2])
                .arg(&*dir),
            Duration::from_secs(60),
        );
        assert!(out.contains("v2hash: ok"), "{name}: {out}");
    }
}

/// A multi-file download with its middle file skipped: the others arrive whole, the
/// skipped file holds none of its own pieces (at most the bytes of the pieces it
/// shares), and the torrent finishes without being a seed.
#[test]
fn c_download_with_a_skipped_file() {
    let dir = tmp("skip");
    let files = make_pack(&dir.join("seed"));
    let exe = torrent_c(&dir);
    let out = run_bounded(
        Command::new(&exe)
            .arg("skip")
            .arg(dir.join("seed"))
            .arg(dir.join("leech")),
        Duration::from_secs(120),
    );
    assert!(out.contains("skip: ok"), "{out}");
    let got = dir.join("leech/pack");
    assert_eq!(std::fs::read(got.join("a.bin")).expect("a"), files[0]);
    assert_eq!(std::fs::read(got.join("c.bin")).expect("c"), files[2]);
    let b = std::fs::read(got.join("b.bin")).unwrap_or_default();
    // Its own pieces (6 to 12) start 16,284 bytes into it.
    let own = (16_384 - 100)..(7 * 16_384 - 100);
    assert!(
        b.get(own).is_none_or(|s| s.iter().all(|&x| x == 0)),
        "the skipped file was downloaded"
    );
}

/// A magnet link's metadata saved with `btcore_session_save_torrent_file` parses back
/// to the same torrent (in C, and here).
#[test]
fn c_magnet_metadata_saved_as_a_torrent_file() {
    let dir = tmp("magnet-save");
    make_pack(&dir.join("seed"));
    let exe = torrent_c(&dir);
    let saved = dir.join("saved.torrent");
    let out = run_bounded(
        Command::new(&exe)
            .arg("magnet")
            .arg(dir.join("seed"))
            .arg(dir.join("leech"))
            .arg(&saved),
        Duration::from_secs(120),
    );
    assert!(out.contains("magnet: ok"), "{out}");
    let bytes = std::fs::read(&saved).expect("saved");
    let mut tokens = Vec::new();
    let m = btcore_core::metainfo::Metainfo::parse_vec(
        &bytes,
        &mut tokens,
        &btcore_core::metainfo::Limits::default(),
    )
    .expect("parses");
    assert_eq!(m.num_files(), 3);
    assert_eq!(m.announce(), None, "the magnet link named no tracker");
}

/// A seed's data checked again with `btcore_session_recheck` is whole; pointed at an
/// empty folder with `btcore_session_set_location`, nothing verifies there.
#[test]
fn c_recheck_and_set_location() {
    let dir = tmp("recheck");
    make_pack(&dir.join("seed"));
    std::fs::create_dir_all(dir.join("empty")).expect("mkdir");
    let exe = torrent_c(&dir);
    let out = run_bounded(
        Command::new(&exe)
            .arg("recheck")
            .arg(dir.join("seed"))
            .arg(dir.join("empty")),
        Duration::from_secs(120),
    );
    assert!(out.contains("recheck: ok"), "{out}");
    assert!(dir.join("seed/pack/b.bin").exists(), "nothing moved");
}

// ---- settings: limits that hold and change at run time, apply_settings, the DHT ----

/// `ffi/tests/settings.c`, built with the sanitizers into `dir` (each test process
/// builds its own: a test runner may run these tests in parallel processes).
fn settings_exe(dir: &Path) -> PathBuf {
    let exe = dir.join("settings");
    compile(&[root().join("ffi/tests/settings.c")], &exe, false, true);
    exe
}

/// A download limit changed while the session's thread runs: the rate measured over
/// the 2 s after each change follows it (up and down), and the reported rate tracks
/// the measured one.
#[test]
fn c_runtime_rate_limit_change_is_followed_within_2s() {
    let dir = tmp("rate-change");
    let (_payload, torrent) = make_content(&dir, 12 << 20);
    let (_seed, port) = seeder(&dir, &torrent, true);
    let out = run_bounded(
        Command::new(settings_exe(&dir))
            .arg("rate")
            .arg(&torrent)
            .arg(dir.join("out"))
            .arg(format!("127.0.0.1:{port}")),
        Duration::from_secs(120),
    );
    eprint!("{out}");
    assert!(out.contains("settings: ok"), "{out}");
}

/// Under a 1 MiB/s limit, the first second after the first byte moves at most 1.25 MiB
/// (a bucket that started full with a second of burst let twice the limit through),
/// and the whole download stays within 6% of the limit.
#[test]
fn c_rate_limit_holds_in_the_first_second_and_overall() {
    let dir = tmp("burst");
    let (payload, torrent) = make_content(&dir, 6 << 20);
    let (_seed, port) = seeder(&dir, &torrent, true);
    let out = run_bounded(
        Command::new(settings_exe(&dir))
            .arg("burst")
            .arg(&torrent)
            .arg(dir.join("out"))
            .arg(format!("127.0.0.1:{port}")),
        Duration::from_secs(150),
    );
    eprint!("{out}");
    assert!(out.contains("settings: ok"), "{out}");
    same_file(&payload, &dir.join("out/payload.bin"));
}

/// `btcore_session_apply_settings`: the DHT on and off, the listen port moved, a port
/// in use refused with the old socket kept, invalid values refused.
#[test]
fn c_apply_settings_switches_dht_and_moves_the_port() {
    let dir = tmp("apply");
    let busy = free_port();
    let out = run_bounded(
        Command::new(settings_exe(&dir))
            .arg("apply")
            .arg(free_port().to_string())
            .arg(free_port().to_string())
            .arg(busy.to_string()),
        Duration::from_secs(60),
    );
    eprint!("{out}");
    assert!(out.contains("settings: ok"), "{out}");
}

/// Waits at most 30 s for a DHT node to answer a `ping` on 127.0.0.1:`port`.
fn wait_dht(port: u16) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let q = b"d1:ad2:id20:btcore-c-apidhtprobee1:q4:ping1:t2:pp1:y1:qe";
    let start = Instant::now();
    let mut buf = [0u8; 1500];
    while start.elapsed() < Duration::from_secs(30) {
        let _ = s.send_to(q, ("127.0.0.1", port));
        if let Ok(n) = s.recv(&mut buf) {
            if buf[..n].windows(6).any(|w| w == b"1:y1:r") {
                return;
            }
        }
    }
    panic!("no DHT node answers on 127.0.0.1:{port} after 30 s");
}

/// A C session downloads a trackerless magnet link through the DHT: libtorrent seeds
/// and announces to a DHT of a `btcore dht` node and a libtorrent node; the C session
/// joins through the libtorrent node. Needs python3-libtorrent: skipped without it,
/// failed without it under `BTCORE_INTEROP=1`.
#[test]
fn c_session_downloads_a_trackerless_magnet_over_libtorrents_dht() {
    if !libtorrent_available() {
        assert!(
            std::env::var("BTCORE_INTEROP").as_deref() != Ok("1"),
            "BTCORE_INTEROP=1 but python3-libtorrent does not import"
        );
        eprintln!("skipped: python3-libtorrent does not import");
        return;
    }
    let dir = tmp("dht-magnet");
    let (payload, torrent) = make_content(&dir, 2 << 20);
    // `btcore create` prints the magnet link; the torrent has no tracker.
    let made = run(Command::new(btcore_bin())
        .arg("create")
        .arg(dir.join("seed/payload.bin"))
        .arg("-o")
        .arg(dir.join("again.torrent"))
        .args(["--piece-kib", "32"]));
    let stdout = String::from_utf8_lossy(&made.stdout).into_owned();
    let magnet = stdout
        .lines()
        .find(|l| l.starts_with("magnet:"))
        .unwrap_or_else(|| panic!("no magnet link in {stdout}"))
        .to_string();
    assert!(!magnet.contains("tr="), "{magnet}");
    let script = root().join("tests/interop/lt_dht.py");
    let local = |p: u16| format!("127.0.0.1:{p}");
    let (boot, lt_node, lt_seed) = (free_port(), free_port(), free_port());
    // The first node (btcore's), a libtorrent node joining from it, the seeder.
    let _boot = Proc(
        Command::new(btcore_bin())
            .args(["dht", "--bind", "127.0.0.1", "--port", &boot.to_string()])
            .args(["--seconds", "150", "--bootstrap", &local(free_port())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("btcore dht"),
    );
    let lt = |mode: &str, args: &[&std::ffi::OsStr], port: u16, boot: u16| {
        let mut c = Command::new("/usr/bin/python3");
        c.arg(&script).arg(mode).args(args);
        c.args(["--port", &port.to_string(), "--bootstrap", &local(boot)]);
        c.args(["--timeout", "150"]);
        c
    };
    wait_dht(boot);
    let _node = Proc(
        lt("node", &[], lt_node, boot)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("lt node"),
    );
    wait_dht(lt_node);
    let mut seed = Proc(
        lt(
            "seed",
            &[torrent.as_os_str(), dir.join("seed").as_os_str()],
            lt_seed,
            boot,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("lt seed"),
    );
    // The seeder prints `announced` once a lookup finds its own announce.
    let so = seed.0.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(so).lines().map_while(Result::ok) {
            if line.contains("announced") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("libtorrent's seeder announced on the DHT within 60 s");
    let out_dir = dir.join("out");
    let out = run_bounded(
        Command::new(settings_exe(&dir))
            .arg("dht")
            .arg(&magnet)
            .arg(&out_dir)
            .arg(local(lt_node))
            .env("BTCORE_TIMEOUT_S", "90"),
        Duration::from_secs(120),
    );
    eprint!("{out}");
    assert!(out.contains("settings: ok"), "{out}");
    same_file(&payload, &out_dir.join("payload.bin"));
}

// ---- a torrent's trackers (ffi/tests/trackers.c) ----

/// An HTTP tracker on 127.0.0.1 answering each announce with `body`, on a thread that
/// lives as long as the test process; returns its port and the number of announces
/// other than `stopped` it answered.
fn scripted_tracker(body: &'static [u8]) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tracker");
    let port = l.local_addr().expect("addr").port();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            if !req.windows(13).any(|w| w == b"event=stopped") {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        }
    });
    (port, count)
}

/// A torrent's trackers from C, against two HTTP trackers on 127.0.0.1: the failure
/// reason of the refusing one and the counts of the answering one show in
/// `btcore_torrent_trackers`, a reannounce waits for the answering tracker's min
/// interval (30 s) and then reaches it, and list edits are validated and keep the
/// record of the trackers that stay.
#[test]
fn c_torrent_trackers_status_reannounce_and_edits() {
    use std::sync::atomic::Ordering;
    let dir = tmp("trackers");
    std::fs::create_dir_all(dir.join("content")).expect("content dir");
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(dir.join("content/data.bin"), &data).expect("content");
    let (refusing, _) = scripted_tracker(b"d14:failure reason7:go awaye");
    let (answering, asked) = scripted_tracker(
        b"d8:completei3e10:incompletei2e8:intervali1800e12:min intervali30e5:peers0:e",
    );
    let exe = dir.join("trackers");
    compile(&[root().join("ffi/tests/trackers.c")], &exe, false, true);
    let out = run_bounded(
        Command::new(&exe)
            .arg(&*dir)
            .arg(refusing.to_string())
            .arg(answering.to_string())
            .current_dir(&dir),
        Duration::from_secs(150),
    );
    eprintln!("{out}");
    assert!(out.contains("all checks passed"), "{out}");
    assert_eq!(
        asked.load(Ordering::SeqCst),
        2,
        "the first announce and the reannounce"
    );
}

// ---- a torrent's web seeds (ffi/tests/webseeds.c) ----

/// An HTTP server on 127.0.0.1 serving the files of `root` with `Range` (one request
/// per connection), on a thread that lives as long as the test process; its port.
fn range_server(root: PathBuf) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind web seed");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let req = String::from_utf8_lossy(&req).into_owned();
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            let name = path.trim_start_matches('/');
            let Ok(data) = std::fs::read(root.join(name))
                .map_err(|_| ())
                .and_then(|d| {
                    (!name.contains("..") && !name.is_empty())
                        .then_some(d)
                        .ok_or(())
                })
            else {
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            };
            let range = req.lines().find_map(|l| {
                let v = l
                    .strip_prefix("Range: bytes=")
                    .or_else(|| l.strip_prefix("range: bytes="))?;
                let (a, b) = v.trim().split_once('-')?;
                Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?))
            });
            let (a, b) = range.unwrap_or((0, data.len().saturating_sub(1)));
            let b = b.min(data.len().saturating_sub(1));
            if a > b {
                let _ = s.write_all(b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            }
            let body = &data[a..=b];
            let _ = write!(
                s,
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                data.len(),
                body.len()
            );
            let _ = s.write_all(body);
        }
    });
    port
}

/// A torrent's web seeds from C: a torrent whose only source is its web seed (an HTTP
/// server with `Range` on 127.0.0.1) completes from it, and `btcore_torrent_web_seeds`
/// shows what it sent, and the refused second web seed's failures and error.
#[test]
fn c_torrent_web_seeds_status() {
    let dir = tmp("webseeds");
    std::fs::create_dir_all(dir.join("src")).expect("src dir");
    let data: Vec<u8> = (0..3 * 16384 + 1000u32)
        .map(|i| (i * 29 % 251) as u8)
        .collect();
    std::fs::write(dir.join("src/data.bin"), &data).expect("payload");
    let serving = range_server(dir.join("src"));
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let exe = dir.join("webseeds");
    compile(&[root().join("ffi/tests/webseeds.c")], &exe, false, true);
    let out = run_bounded(
        Command::new(&exe)
            .arg(&*dir)
            .arg(serving.to_string())
            .arg(refused.to_string())
            .current_dir(&dir),
        Duration::from_secs(90),
    );
    eprintln!("{out}");
    assert!(out.contains("all checks passed"), "{out}");
    assert_eq!(
        std::fs::read(dir.join("dst/data.bin")).expect("downloaded"),
        data
    );
}

/// A download queue of 1 through the C API: of two torrents added together, the
/// second waits (`BTCORE_STATE_QUEUED_DOWNLOAD`, no connection) until the first
/// finishes, then downloads by itself; with the queue calls and limits along the way.
#[test]
fn c_download_queue_of_one_keeps_the_second_torrent_waiting() {
    let dir = tmp("queue");
    let seed = dir.join("seed");
    let first = make_pack(&seed);
    // A second folder with other bytes: another torrent.
    let pack2 = seed.join("pack2");
    std::fs::create_dir_all(&pack2).expect("pack2");
    let second: Vec<u8> = first[1].iter().map(|b| b ^ 0x5a).collect();
    std::fs::write(pack2.join("d.bin"), &second).expect("write");
    let exe = dir.join("queue");
    compile(&[root().join("ffi/tests/queue.c")], &exe, false, true);
    let out = run_bounded(
        Command::new(&exe)
            .arg("queue")
            .arg(&seed)
            .arg(dir.join("leech")),
        Duration::from_secs(180),
    );
    assert!(out.contains("queue: ok"), "{out}");
    let got = dir.join("leech");
    assert_eq!(std::fs::read(got.join("pack/a.bin")).expect("a"), first[0]);
    assert_eq!(std::fs::read(got.join("pack2/d.bin")).expect("d"), second);
}

/// A `.torrent` added by its URL through `btcore_session_add_torrent_url` (served on
/// 127.0.0.1); a URL that cannot be downloaded gives `BTCORE_IO` with the URL in the
/// detail.
#[test]
fn c_add_torrent_by_url() {
    let dir = tmp("url");
    make_pack(&dir.join("seed"));
    let torrent = btcore_host::create::create_torrent(
        &dir.join("seed/pack"),
        &btcore_host::create::CreateOptions {
            piece_length: Some(16384),
            threads: 1,
            ..btcore_host::create::CreateOptions::default()
        },
    )
    .expect("create");
    let (port, _) = scripted_tracker(Box::leak(torrent.into_boxed_slice()));
    // Nothing listens there: the connection is refused.
    let refused = free_port();
    let exe = torrent_c(&dir);
    let out = run_bounded(
        Command::new(&exe)
            .arg("url")
            .arg(format!("http://127.0.0.1:{port}/pack.torrent"))
            .arg(format!("http://127.0.0.1:{refused}/gone.torrent"))
            .arg(dir.join("leech")),
        Duration::from_secs(120),
    );
    assert!(out.contains("url: ok"), "{out}");
}
