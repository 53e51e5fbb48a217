//! The `btcore` command as a user runs it: `info --json` agrees with libtorrent on every
//! torrent of the conformance corpus, and every bad input is one clear line, never a panic.

use btcore_tests::{conformance_dir, manifest};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn btcore(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_btcore"))
        .args(args)
        .output()
        .expect("btcore runs")
}

#[test]
fn info_json_agrees_with_libtorrent_on_the_whole_corpus() {
    let mut problems = Vec::new();
    let mut agreed = 0;
    let mut v2_rows = 0;
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(conformance_dir().join("expected.json")).expect("expected.json"),
    )
    .expect("expected.json is JSON");
    for row in manifest() {
        let path = conformance_dir().join(&row.path);
        let out = btcore(&["info", "--json", path.to_str().expect("utf-8 path")]);
        let code = out.status.code();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if code == Some(101) || stderr.contains("panicked") {
            problems.push(format!("{}: panic: {stderr}", row.path));
            continue;
        }
        if row.expect_ok && out.status.success() {
            let v: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("one JSON object");
            if !row.v2_info_hash.is_empty() {
                v2_rows += 1;
                if let Err(e) = v2_fields_agree(&v, &row, &expected["torrents"][&row.path]) {
                    problems.push(format!("{}: {e}", row.path));
                }
            }
            let got = (
                v["info_hash_v1"].as_str().unwrap_or_default().to_string(),
                v["total_size"].as_u64(),
                v["piece_length"].as_u64(),
                v["num_pieces"].as_u64(),
                v["files"].as_array().map(|f| f.len() as u64),
            );
            let want = (
                row.v1_info_hash.clone(),
                Some(row.total_size),
                Some(row.piece_length),
                Some(row.num_pieces),
                Some(row.num_files),
            );
            if got == want {
                agreed += 1;
            } else {
                problems.push(format!("{}: {got:?} vs libtorrent {want:?}", row.path));
            }
        } else if out.status.success() && !row.expect_ok {
            problems.push(format!("{}: accepted, libtorrent expects error", row.path));
        } else if !out.status.success() {
            // A refusal is exit code 3 and exactly one line naming the byte offset.
            let lines: Vec<&str> = stderr.lines().collect();
            let clean = code == Some(3)
                && lines.len() == 1
                && lines[0].starts_with("btcore: ")
                && lines[0].contains(" at byte ");
            if !clean {
                problems.push(format!("{}: unclear refusal {code:?}: {stderr}", row.path));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(agreed >= 100, "only {agreed} torrents compared");
    assert!(v2_rows >= 20, "only {v2_rows} v2 torrents compared");
}

/// `info --json` on the v2-only and hybrid torrents libtorrent made
/// (`v2-generated/make_v2.py`): the v2 fields agree with libtorrent's verdicts, and
/// the torrent libtorrent refuses is refused.
#[test]
fn info_json_v2_fields_agree_with_libtorrent_on_generated_torrents() {
    let dir = conformance_dir().join("v2-generated");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("EXPECTED.json")).expect("EXPECTED"))
            .expect("JSON");
    let mut problems = Vec::new();
    let torrents = expected["torrents"].as_object().expect("torrents");
    for (name, lt) in torrents {
        let out = btcore(&["info", "--json", dir.join(name).to_str().expect("utf-8")]);
        if lt["expected"] == "error" {
            if out.status.code() != Some(3) {
                problems.push(format!("{name}: not refused"));
            }
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let v2 = s(&lt["v2_info_hash"]);
        let got = (
            v["meta_version"].as_u64(),
            s(&v["info_hash_v1"]),
            s(&v["info_hash_v2"]),
            s(&v["info_hash_v2_truncated"]),
            v["piece_layers"].as_u64(),
        );
        let want = (
            Some(2),
            s(&lt["v1_info_hash"]),
            v2.clone(),
            v2[..40].to_string(),
            lt["piece_layers"].as_object().map(|l| l.len() as u64),
        );
        if got != want {
            problems.push(format!("{name}: {got:?} vs libtorrent {want:?}"));
        }
        // Per file: length, pieces root, and the size of its piece layer.
        let ours: Vec<(u64, String, u64)> = v["file_tree"]
            .as_array()
            .expect("file_tree")
            .iter()
            .map(|f| {
                (
                    f["length"].as_u64().unwrap_or_default(),
                    s(&f["pieces_root"]),
                    f["piece_layer_hashes"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        let theirs: Vec<(u64, String, u64)> = lt["files"]
            .as_array()
            .expect("files")
            .iter()
            .filter(|f| f["pad"] != true)
            .map(|f| {
                let root = s(&f["pieces_root"]);
                let layer = lt["piece_layers"][&root]
                    .as_str()
                    .map_or(0, |l| l.len() / 64);
                (f["size"].as_u64().unwrap_or_default(), root, layer as u64)
            })
            .collect();
        if ours != theirs {
            problems.push(format!("{name}: files {ours:?} vs libtorrent {theirs:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(torrents.len() >= 13);
}

/// The v2 fields of `info --json` against libtorrent's: meta version, the v2
/// info-hash and its truncated form, and every file's `pieces root` in order.
fn v2_fields_agree(
    v: &serde_json::Value,
    row: &btcore_tests::ManifestRow,
    lt: &serde_json::Value,
) -> Result<(), String> {
    let got = (
        v["meta_version"].as_u64(),
        v["v2_only"].as_bool(),
        v["info_hash_v2"].as_str().unwrap_or_default(),
        v["info_hash_v2_truncated"].as_str().unwrap_or_default(),
    );
    let want = (
        Some(2),
        Some(row.is_v2_only),
        row.v2_info_hash.as_str(),
        &row.v2_info_hash[..40],
    );
    if got != want {
        return Err(format!("{got:?} vs libtorrent {want:?}"));
    }
    let magnet = v["magnet"].as_str().unwrap_or_default();
    let btmh = format!("xt=urn:btmh:1220{}", row.v2_info_hash);
    if !magnet.contains(&btmh) || magnet.contains("urn:btih:") == row.is_v2_only {
        return Err(format!("magnet {magnet}"));
    }
    let roots = |files: &serde_json::Value, pad: &dyn Fn(&serde_json::Value) -> bool| {
        files
            .as_array()
            .map(|f| {
                f.iter()
                    .filter(|f| !pad(f))
                    .map(|f| f["pieces_root"].as_str().unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let ours = roots(&v["file_tree"], &|_| false);
    let theirs = roots(&lt["libtorrent_2_0_8"]["files"], &|f| {
        f["pad"].as_bool() == Some(true)
    });
    if ours != theirs || ours.is_empty() {
        return Err(format!("pieces roots {ours:?} vs libtorrent {theirs:?}"));
    }
    Ok(())
}

/// `--version` says what the build is: the target it runs on, whether it needs the
/// system's C library, the optional parts built in, the allocator and the profile;
/// `-V` stays one line.
#[test]
fn version_names_target_features_and_allocator() {
    let out = btcore(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        concat!("btcore ", env!("CARGO_PKG_VERSION")),
        "{text}"
    );
    let target = lines[1].strip_prefix("target: ").expect("a target line");
    assert!(target.starts_with(std::env::consts::ARCH), "{text}");
    assert!(target.contains(if cfg!(target_feature = "crt-static") {
        "(static"
    } else {
        "system's C library"
    }));
    let features = lines[2]
        .strip_prefix("features: ")
        .expect("a features line");
    let built: Vec<&str> = features.split(' ').collect();
    for (name, on) in [
        ("https", cfg!(feature = "https")),
        ("tracker-server", cfg!(feature = "tracker-server")),
        ("dht", cfg!(feature = "dht")),
        ("lsd", cfg!(feature = "lsd")),
        ("web", cfg!(feature = "web")),
    ] {
        assert_eq!(built.contains(&name), on, "{name}: {text}");
    }
    let env = if cfg!(target_env = "musl") {
        "musl"
    } else {
        "glibc"
    };
    assert!(
        lines[3].starts_with("allocator: ") && lines[3].contains(env),
        "{text}"
    );
    assert!(lines[4].starts_with("profile: "), "{text}");
    // The SHA-1 code this processor runs, tested as the `sha1` crate tests it.
    let sha = lines[5].strip_prefix("sha1: ").expect("a sha1 line");
    let hw = if cfg!(any(target_arch = "x86", target_arch = "x86_64")) {
        std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
            c.lines()
                .find(|l| l.starts_with("flags"))
                .is_some_and(|l| l.split_whitespace().any(|f| f == "sha_ni"))
        })
    } else {
        false
    };
    if cfg!(any(target_arch = "x86", target_arch = "x86_64")) {
        assert_eq!(sha, if hw { "SHA-NI" } else { "portable" }, "{text}");
    }
    let short = btcore(&["-V"]);
    assert_eq!(String::from_utf8_lossy(&short.stdout).lines().count(), 1);
}

#[test]
fn text_output_names_the_essentials() {
    let path = conformance_dir().join("with-content/numbers/numbers.torrent");
    let out = btcore(&["info", path.to_str().expect("utf-8 path")]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Hash: 89d97c2261a21b040cf11caa661a3ba7233bb7e6",
        "Piece Count: 1",
        "numbers/3.txt (3 B)",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in\n{s}");
    }
}

#[test]
fn unreadable_and_oversized_files_are_io_errors() {
    let out = btcore(&["info", "/nonexistent/x.torrent"]);
    assert_eq!(out.status.code(), Some(4));
    let dir = std::env::temp_dir().join(format!("btcore-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let big = dir.join("big.torrent");
    let f = std::fs::File::create(&big).expect("create");
    f.set_len(btcore_host::MAX_TORRENT_FILE + 1)
        .expect("sparse");
    let out = btcore(&["info", big.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("larger than"));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn magnet_json() {
    let uri = "magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK&dn=a%20b&tr=udp%3A%2F%2Ft%3A80&tr=http%3A%2F%2Fu%2Fannounce";
    let out = btcore(&["magnet", "--json", uri]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["info_hash"], "c12fe1c06bba254a9dc9f519b335aa7c1367a88a");
    assert_eq!(v["name"], "a b");
    assert_eq!(
        v["trackers"],
        serde_json::json!(["udp://t:80", "http://u/announce"])
    );
    let bad = btcore(&["magnet", "--json", "magnet:?xt=urn:btih:123"]);
    assert_eq!(bad.status.code(), Some(3));
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    // `btcore info FILE | head -1`, with the reader gone before btcore writes: the
    // pipe's only reader (`true`) has exited before btcore starts, so its first write
    // meets a closed pipe, whatever the timing.
    let path = conformance_dir().join("with-content/numbers/numbers.torrent");
    let path = path.to_str().expect("utf-8 path");
    let uri = "magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK&dn=a%20b";
    for args in [
        &["info", path][..],
        &["info", "--json", path],
        &["magnet", uri],
        &["magnet", "--json", uri],
    ] {
        let mut reader = Command::new("true")
            .stdin(Stdio::piped())
            .spawn()
            .expect("true runs");
        let pipe = reader.stdin.take().expect("the pipe's write end");
        reader.wait().expect("true exits");
        let mut child = Command::new(env!("CARGO_BIN_EXE_btcore"))
            .args(args)
            .stdout(Stdio::from(pipe))
            .stderr(Stdio::piped())
            .spawn()
            .expect("btcore runs");
        let end = Instant::now() + Duration::from_secs(20);
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() >= end {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?}: still running after 20 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().expect("output");
        // No message, and 141 = 128 + SIGPIPE, as a shell reports for a Unix tool the
        // signal ended.
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
        assert_eq!(out.status.code(), Some(141), "{args:?}: {}", out.status);
    }
}

/// A v2-only torrent file and a `btmh`-only magnet link parse (`info`, `magnet`) and
/// are taken for download: with nothing to download from they stop at their timeout
/// (exit 5), not with the refusal's exit code 3 that they had before v2.
#[test]
fn v2_only_torrents_and_magnet_links_are_taken() {
    let out_dir = std::env::temp_dir().join(format!("btcore-v2-taken-{}", std::process::id()));
    let torrent = conformance_dir().join("v2-generated/multi-v2.torrent");
    let magnet =
        "magnet:?xt=urn:btmh:1220caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa9f6105232b28ad099f3a302e";
    assert!(btcore(&["info", torrent.to_str().expect("utf-8")])
        .status
        .success());
    assert!(btcore(&["magnet", magnet]).status.success());
    for what in [torrent.to_str().expect("utf-8"), magnet] {
        let o = btcore(&[
            "download",
            what,
            "-o",
            out_dir.to_str().expect("utf-8"),
            "--no-trackers",
            "--no-dht",
            "--timeout",
            "1",
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(5), "{what}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}
