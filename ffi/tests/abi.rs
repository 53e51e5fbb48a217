//! The C view of every struct in `include/btcore.h` against Rust's: size, alignment and
//! the offset of every field, with the C compiler's defaults and with `-fshort-enums`
//! (the default of some ARM toolchains, under which a C `enum` field shrinks to the
//! smallest integer that holds its values). The header is parsed for its structs and
//! fields, so a field added on one side only fails here too.

mod common;

use btcore::*;
use common::{root, Tmp};
use std::collections::BTreeMap;
use std::mem::{align_of, offset_of, size_of};
use std::process::Command;

/// `name -> value` for `sizeof S`, `alignof S` and `S.field` (its offset).
type Layout = BTreeMap<String, usize>;

macro_rules! rust_layout {
    ($($s:ident { $($f:ident),* $(,)? })*) => {{
        let mut m = Layout::new();
        $(
            m.insert(format!("sizeof {}", stringify!($s)), size_of::<$s>());
            m.insert(format!("alignof {}", stringify!($s)), align_of::<$s>());
            $( m.insert(format!("{}.{}", stringify!($s), stringify!($f)), offset_of!($s, $f)); )*
        )*
        m
    }};
}

/// Every struct the header defines with fields, and every field, as Rust lays them out.
fn rust() -> Layout {
    rust_layout! {
        btcore_create_options {
             trackers, trackers_len, web_seeds, web_seeds_len, comment, name, piece_length,
             threads, creation_date, private_,
        }
        btcore_error_detail {
             code, os_error, offset, subject_kind, reserved, message_len, subject_len,
        }
        btcore_sansio_settings {
             peer_id, random_seed, listen_port, low_memory, max_peers_per_torrent,
             max_disk_bytes_in_flight, encryption, entropy, dht, transport,
             utp_connect_timeout_ms,
        }
        btcore_addr {
             family, port, ip,
        }
        btcore_action {
             kind, torrent, id, conn, piece, offset, length, torrent_offset, addr,
             expected_hash, error, announce_event, uploaded, downloaded, left, tracker,
             tracker_len, block_digests, redial, dht_announce, port, numwant, key, info_hash,
             peer_id, transport,
        }
        btcore_event {
             kind, torrent, piece, error, peer, count, detail, os_error,
        }
        btcore_torrent_status {
             id, state, info_hash, progress_ppm, pieces_have, num_pieces, bytes_have,
             total_size, download_rate, upload_rate, downloaded, uploaded, eta_seconds,
             peers, seeds, connecting, hash_failures, banned, error, wanted_size,
             wanted_have, finished,
        }
        btcore_peer_status {
             conn, flags, addr, peer_id, client, download_rate, upload_rate, downloaded,
             uploaded, pieces,
        }
        btcore_dht_settings {
             node_id, token_key, random_seed, low_memory,
        }
        btcore_dht_event {
             kind, lookup, info_hash, num_peers, total_peers, nodes, announced,
        }
        btcore_utp_settings {
             random_seed, send_buffer, recv_buffer, max_connections, max_packet_size,
             reorder_slots, max_packets_in_flight, max_pending_resets, low_memory,
             confirm_timeout_ms, linger_ms,
        }
        btcore_utp_incoming {
             kind, invalid, conn, evicted,
        }
        btcore_transmit {
             len, held_token, held_len,
        }
        btcore_utp_conn_status {
             state, close_reason, readable, writable, unacked, addr, eof, outgoing,
             reserved, rtt_ms,
        }
        btcore_sansio_file_info {
             offset, length, path_len, pad, executable,
        }
        btcore_tracker_reply {
             interval_secs, min_interval_secs, num_peers, total_peers, seeders, leechers,
             failure, failure_offset, failure_len,
        }
        btcore_settings {
             download_dir, state_dir, listen_address, listen_port, low_memory, use_trackers,
             max_peers_per_torrent, disk_threads, download_rate_limit, upload_rate_limit,
             random_seed, encryption, enable_dht, enable_lsd, enable_pex, dht_port,
             max_connections, dht_bootstrap, disk_queue_bytes, download_queue_size,
             seed_queue_size, queue_stalled_minutes, seed_idle_minutes,
             alt_download_rate_limit, alt_upload_rate_limit, alt_speed_enabled,
             alt_speed_schedule, alt_speed_days, alt_speed_begin_minute,
             alt_speed_end_minute,
        }
        btcore_file_info {
             size, done, priority, flags,
        }
        btcore_tracker_status {
             last_announce, next_announce, url_offset, url_len, result_offset, result_len,
             tier, flags, seeders, leechers, downloaded, last_peers, interval, min_interval,
             failures, reserved,
        }
        btcore_web_seed_status {
             downloaded, download_rate, retry_in_ms, url_offset, url_len, error_offset,
             error_len, state, requests, failures, reserved,
        }
    }
}

/// The structs of the header with fields, and their field names, in order.
fn header_structs() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(root().join("include/btcore.h")).expect("the header");
    // Comments out: field names are then the last identifier before `;` or `[`.
    let mut code = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("/*") {
        code.push_str(&rest[..i]);
        let j = rest[i..].find("*/").expect("unterminated comment") + i + 2;
        rest = &rest[j..];
    }
    code.push_str(rest);
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("typedef struct ") {
        rest = &rest[i + "typedef struct ".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let after = rest[name.len()..].trim_start();
        if !after.starts_with('{') {
            continue; // an opaque handle
        }
        let end = after.find('}').expect("unterminated struct");
        let fields = after[1..end]
            .split(';')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(|f| {
                let f = f.split('[').next().unwrap_or(f).trim_end();
                let id: String = f
                    .chars()
                    .rev()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                id.chars().rev().collect()
            })
            .collect();
        out.push((name, fields));
    }
    out
}

/// The layout a C compiler gives the header's structs, with `flags`.
fn c_layout(structs: &[(String, Vec<String>)], flags: &[&str], tag: &str) -> Layout {
    let dir = Tmp::new(&format!("abi-{tag}"));
    let mut src = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include \"btcore.h\"\nint main(void) {\n",
    );
    for (s, fields) in structs {
        src += &format!("  printf(\"sizeof {s} %zu\\n\", sizeof({s}));\n");
        src += &format!("  printf(\"alignof {s} %zu\\n\", _Alignof({s}));\n");
        for f in fields {
            src += &format!("  printf(\"{s}.{f} %zu\\n\", offsetof({s}, {f}));\n");
        }
    }
    src += "  return 0;\n}\n";
    let c = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&c, src).expect("write layout.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Werror"])
        .args(flags)
        .arg("-I")
        .arg(root().join("include"))
        .arg(&c)
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("a C compiler");
    assert!(status.success(), "{cc} {flags:?} failed");
    let out = Command::new(&exe).output().expect("run layout");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("name value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

fn diff(want: &Layout, got: &Layout) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            Some(g) if g == v => {}
            Some(g) => d.push(format!("{k}: Rust {v}, C {g}")),
            None => d.push(format!("{k}: only in Rust")),
        }
    }
    for k in got.keys().filter(|k| !want.contains_key(*k)) {
        d.push(format!("{k}: only in the header"));
    }
    d
}

#[test]
fn every_header_struct_is_in_the_rust_table() {
    let rust = rust();
    let structs = header_structs();
    assert!(
        structs.len() >= 8,
        "the header parse found too few structs: {structs:?}"
    );
    let mut missing = Vec::new();
    for (s, fields) in &structs {
        for f in fields {
            if !rust.contains_key(&format!("{s}.{f}")) {
                missing.push(format!("{s}.{f}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "fields of the header missing from rust(): {missing:?}"
    );
}

#[test]
fn c_layouts_match_rust_with_default_flags() {
    let d = diff(&rust(), &c_layout(&header_structs(), &[], "default"));
    assert!(d.is_empty(), "layout differences:\n{}", d.join("\n"));
}

#[test]
fn c_layouts_match_rust_under_short_enums() {
    let d = diff(
        &rust(),
        &c_layout(&header_structs(), &["-fshort-enums"], "short"),
    );
    assert!(
        d.is_empty(),
        "layout differences under -fshort-enums:\n{}",
        d.join("\n")
    );
}

/// The C tests that exercise every struct crossing the boundary, built with
/// `-fshort-enums` against the library and run: the misuse checks, the sans-IO
/// entry points and uTP, whose structs (actions, events, statuses, files, uTP
/// results) the library fills.
#[test]
fn c_tests_built_with_short_enums_pass() {
    common::ensure_libs();
    let dir = Tmp::new("abi-short-enums-run");
    for name in ["misuse", "sansio_extra", "utp"] {
        let exe = dir.join(name);
        common::run(
            Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
                .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-fshort-enums"])
                .arg("-I")
                .arg(root().join("include"))
                .arg(root().join(format!("ffi/tests/{name}.c")))
                .arg(common::profile_dir().join("libbtcore.a"))
                .args(["-lpthread", "-ldl", "-lm", "-o"])
                .arg(&exe),
        );
        let out = common::run(Command::new(&exe).current_dir(&*dir));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("all checks passed"), "{name}: {text}");
    }
}
