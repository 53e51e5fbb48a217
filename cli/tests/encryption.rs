//! Protocol encryption (MSE/PE) against real clients: libtorrent forcing RC4 in both
//! directions, libtorrent refusing encryption (btcore falls back to plain text),
//! transmission-cli requiring encryption, aria2 requiring RC4, and btcore with itself
//! under every policy. Each case checks the data byte for byte, and btcore's debug log
//! for the method the handshake settled on, so a case cannot pass in plain text by
//! accident.
//!
//! Gated like `interop.rs`: a client that is not installed skips its cases unless
//! `BTCORE_INTEROP=1` is set.

use common::{
    aria2, btcore_create, btcore_download, btcore_seed, free_port, libtorrent, require,
    transmission, write_file, Aria2, Case, Config, Deadline, Empties, Rng, Tool,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;

const STEP: Duration = Duration::from_secs(90);
const CLIENT_TIMEOUT_SECS: u64 = 120;
const SIZE: usize = 12 * 1024 * 1024 + 4321;
const INSTALL: &str = "apt-get install transmission-cli aria2 python3-libtorrent";
/// btcore's log level in these cases: the connection layer at debug level.
const LOG: &str = "info,btcore_host::client=debug";

const CONFIG: Config = Config {
    dir_prefix: "btcore-encryption",
    deadline: Deadline::Step(STEP),
    poll: Duration::from_millis(200),
    log_tail: 4000,
    btcore_exit_hint: true,
};

/// `DIR/src/payload.bin` and a btcore-made torrent of it.
fn payload(case: &Case) -> (PathBuf, PathBuf) {
    let src = case.path("src").join("payload.bin");
    write_file(&src, &Rng(0xE5C1).bytes(SIZE));
    let torrent = btcore_create(case, &src, None);
    (src, torrent)
}

fn with_policy(mut c: Command, policy: &str) -> Command {
    c.args(["--encryption", policy]).env("RUST_LOG", LOG);
    c
}

fn lt_enc(mut c: Command, enc: &str) -> Command {
    c.args(["--enc", enc]);
    c
}

/// Fails unless btcore process `i` logged a handshake that settled on `method`.
fn assert_method(case: &Case, i: usize, method: &str) {
    let needle = format!("encrypted handshake done, {method}");
    if !case.procs[i].printed(&needle) {
        case.fail(&format!("{} never logged {needle:?}", case.procs[i].name));
    }
}

fn dst_of(case: &Case) -> PathBuf {
    case.path("dst")
}

fn src_dir(src: &Path) -> PathBuf {
    src.parent().expect("src dir").to_path_buf()
}

/// btcore (`policy`) leeches from a libtorrent seeder (`lt.py --enc lt_mode`) that it
/// dials; the data must match and btcore's log must show `needle`.
fn btcore_from_libtorrent(name: &'static str, lt_mode: &str, policy: &str, needle: &str) {
    if !require(&[Tool::Libtorrent], INSTALL) {
        return;
    }
    let mut case = Case::new(name, CONFIG);
    let (src, torrent) = payload(&case);
    let (lport, bport) = (free_port(), free_port());
    let l = case.spawn(
        "libtorrent-seed",
        lt_enc(
            libtorrent(
                "seed",
                &torrent,
                &src_dir(&src),
                lport,
                &[],
                CLIENT_TIMEOUT_SECS,
            ),
            lt_mode,
        ),
        true,
    );
    case.wait_output(l, "state=seeding");
    let dst = dst_of(&case);
    let b = case.spawn(
        "btcore-download",
        with_policy(
            btcore_download(
                &torrent,
                &dst,
                bport,
                &[lport],
                false,
                CLIENT_TIMEOUT_SECS,
                false,
            ),
            policy,
        ),
        false,
    );
    case.wait_success(b);
    case.check_data(&src, &dst, Empties::Required);
    if !case.procs[b].printed(needle) {
        case.fail(&format!("btcore-download never logged {needle:?}"));
    }
    case.finish();
}

#[test]
fn btcore_downloads_from_libtorrent_forcing_rc4() {
    btcore_from_libtorrent(
        "from-lt-rc4",
        "rc4",
        "preferred",
        "encrypted handshake done, Rc4",
    );
}

#[test]
fn libtorrent_forcing_rc4_downloads_from_btcore() {
    if !require(&[Tool::Libtorrent], INSTALL) {
        return;
    }
    let mut case = Case::new("lt-rc4-from-btcore", CONFIG);
    let (src, torrent) = payload(&case);
    let (lport, bport) = (free_port(), free_port());
    // btcore only answers: the handshakes are libtorrent's (btcore as responder).
    let b = case.spawn(
        "btcore-seed",
        with_policy(
            btcore_seed(&torrent, &src_dir(&src), bport, &[], false),
            "allowed",
        ),
        true,
    );
    case.wait_port(bport);
    let dst = dst_of(&case);
    let l = case.spawn(
        "libtorrent-leech",
        lt_enc(
            libtorrent(
                "download",
                &torrent,
                &dst,
                lport,
                &[bport],
                CLIENT_TIMEOUT_SECS,
            ),
            "rc4",
        ),
        false,
    );
    case.wait_success(l);
    case.check_data(&src, &dst, Empties::Required);
    assert_method(&case, b, "Rc4");
    case.finish();
}

#[test]
fn btcore_requiring_encryption_with_default_libtorrent() {
    btcore_from_libtorrent(
        "required-with-lt-default",
        "default",
        "required",
        "encrypted handshake done, Rc4",
    );
}

#[test]
fn btcore_falls_back_to_plain_text_when_libtorrent_refuses_encryption() {
    btcore_from_libtorrent(
        "fallback-to-plain",
        "plain",
        "preferred",
        "dialing in plain text",
    );
}

#[test]
fn btcore_downloads_from_transmission_requiring_encryption() {
    if !require(&[Tool::Transmission], INSTALL) {
        return;
    }
    let mut case = Case::new("from-transmission-required", CONFIG);
    let (src, torrent) = payload(&case);
    let (tport, bport) = (free_port(), free_port());
    let t = transmission(&case, "seed", &torrent, &src_dir(&src), tport);
    // settings.json: "encryption": 2 is "require encrypted connections".
    let settings = case.path("transmission-seed").join("settings.json");
    let mut v: serde_json::Value =
        serde_json::from_slice(&fs::read(&settings).expect("settings")).expect("json");
    v["encryption"] = 2.into();
    fs::write(&settings, v.to_string()).expect("settings");
    let ti = case.spawn("transmission-seed", t, true);
    case.wait_output(ti, "Verification is done");
    std::thread::sleep(Duration::from_millis(500));
    let dst = dst_of(&case);
    let b = case.spawn(
        "btcore-download",
        with_policy(
            btcore_download(
                &torrent,
                &dst,
                bport,
                &[tport],
                false,
                CLIENT_TIMEOUT_SECS,
                false,
            ),
            "preferred",
        ),
        false,
    );
    case.wait_success(b);
    case.check_data(&src, &dst, Empties::Required);
    assert_method(&case, b, "Rc4");
    case.finish();
}

#[test]
fn aria2_requiring_rc4_downloads_from_btcore() {
    if !require(&[Tool::Aria2], INSTALL) {
        return;
    }
    let mut case = Case::new("aria2-rc4-from-btcore", CONFIG);
    let (src, torrent) = payload(&case);
    let (aport, bport) = (free_port(), free_port());
    let dst = dst_of(&case);
    let mut a = aria2(
        &case,
        &torrent,
        &dst,
        aport,
        Aria2::Leech,
        CLIENT_TIMEOUT_SECS,
    );
    a.args(["--bt-require-crypto=true", "--bt-min-crypto-level=arc4"]);
    let ai = case.spawn("aria2-leech", a, false);
    case.wait_port(aport);
    let b = case.spawn(
        "btcore-seed",
        with_policy(
            btcore_seed(&torrent, &src_dir(&src), bport, &[aport], false),
            "preferred",
        ),
        true,
    );
    case.wait_success(ai);
    case.check_data(&src, &dst, Empties::Required);
    assert_method(&case, b, "Rc4");
    case.finish();
}

/// btcore with itself: every pair of policies that can talk does, with the method
/// expected; the pairs that cannot must not.
#[test]
fn btcore_with_itself_under_each_policy() {
    let cases = [
        ("preferred", "preferred", Some("Plaintext")),
        ("required", "preferred", Some("Rc4")),
        ("allowed", "required", Some("Rc4")),
        ("disabled", "allowed", None),
        ("disabled", "required", Some("refused")),
        // `allowed` dials in plain text only (Transmission's "tolerated").
        ("required", "allowed", Some("refused")),
    ];
    for (seed_policy, leech_policy, expect) in cases {
        let mut case = Case::new("btcore-policies", CONFIG);
        let (src, torrent) = payload(&case);
        let (sport, lport) = (free_port(), free_port());
        let s = case.spawn(
            "btcore-seed",
            with_policy(
                btcore_seed(&torrent, &src_dir(&src), sport, &[], false),
                seed_policy,
            ),
            true,
        );
        case.wait_port(sport);
        let dst = dst_of(&case);
        let timeout = if expect == Some("refused") { 6 } else { 60 };
        let l = case.spawn(
            "btcore-download",
            with_policy(
                btcore_download(&torrent, &dst, lport, &[sport], false, timeout, false),
                leech_policy,
            ),
            false,
        );
        case.wait_until("the download to end", |c| c.procs[l].poll().is_some());
        let ok = case.procs[l].status.is_some_and(|st| st.success());
        match expect {
            Some("refused") => {
                if ok {
                    case.fail(&format!(
                        "seed {seed_policy} / download {leech_policy} must not connect"
                    ));
                }
            }
            other => {
                if !ok {
                    case.fail(&format!(
                        "seed {seed_policy} / download {leech_policy} failed"
                    ));
                }
                case.check_data(&src, &dst, Empties::Required);
                match other {
                    Some(m) => assert_method(&case, l, m),
                    None => {
                        if case.procs[l].printed("encrypted handshake done")
                            || case.procs[s].printed("encrypted handshake done")
                        {
                            case.fail("an encryption handshake ran with encryption disabled");
                        }
                    }
                }
            }
        }
        case.finish();
    }
}

/// A peer that accepts TCP and never answers the encryption handshake: after the
/// handshake timeout btcore dials it again in plain text (and does not hang on it).
#[test]
fn a_silent_peer_gets_a_plain_redial_after_the_handshake_timeout() {
    use std::io::Read;
    use std::net::TcpListener;
    let mut case = Case::new("silent-peer", CONFIG);
    let (_src, torrent) = payload(&case);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let dst = dst_of(&case);
    let start = std::time::Instant::now();
    case.spawn(
        "btcore-download",
        with_policy(
            btcore_download(&torrent, &dst, free_port(), &[port], false, 60, false),
            "preferred",
        ),
        false,
    );
    listener.set_nonblocking(false).expect("blocking");
    // First connection: an encryption handshake (a 96-byte key, not `\x13BitTorrent`),
    // left unanswered and open.
    let (mut first, _) = listener.accept().expect("first dial");
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut head = [0u8; 20];
    first.read_exact(&mut head).expect("first bytes");
    assert_ne!(
        &head, b"\x13BitTorrent protocol",
        "dialed in plain text first"
    );
    // Second: plain text, once the first gave up.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = listener.accept().map(|(mut s, _)| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = [0u8; 20];
            s.read_exact(&mut head).map(|()| head)
        });
        let _ = tx.send(r);
    });
    let second = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| case.fail("no second dial within 30 s"));
    let elapsed = start.elapsed();
    let head = second
        .expect("second accept")
        .expect("second connection's first bytes");
    assert_eq!(&head, b"\x13BitTorrent protocol");
    assert!(
        elapsed >= Duration::from_secs(9),
        "redialed after {elapsed:?}, before the handshake timeout"
    );
    drop(first);
    case.finish();
}

/// Dials `port` with an encryption handshake naming `skey` (offering `provide`), then
/// sends a BitTorrent handshake naming `bt_hash`; returns the peer's BitTorrent
/// handshake, or why there was none.
fn mse_dial(
    port: u16,
    skey: [u8; 20],
    provide: u32,
    bt_hash: [u8; 20],
) -> Result<(btcore_core::mse::Method, [u8; 68]), String> {
    use btcore_core::ids::InfoHash;
    use btcore_core::mse::Handshake;
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut h = Handshake::initiator(InfoHash(skey), provide, [0x5c; 20], 99);
    let mut buf = [0u8; 4096];
    let mut rest = Vec::new();
    while !h.is_done() {
        let n = h.poll_transmit(&mut buf);
        s.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during the encryption handshake".into());
        }
        let used = h
            .handle_recv(&buf[..n], &mut |_| None)
            .map_err(|e| e.to_string())?;
        rest.extend_from_slice(&buf[used..n]);
    }
    let (method, mut crypto) = h.finish().ok_or("not finished")?;
    let mut hs = [0u8; 68];
    hs[0] = 19;
    hs[1..20].copy_from_slice(b"BitTorrent protocol");
    hs[28..48].copy_from_slice(&bt_hash);
    hs[48..68].copy_from_slice(b"-XX0001-encryptiontt");
    crypto.encrypt(&mut hs);
    s.write_all(&hs).map_err(|e| e.to_string())?;
    crypto.decrypt(&mut rest);
    while rest.len() < 68 {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the BitTorrent handshake".into());
        }
        crypto.decrypt(&mut buf[..n]);
        rest.extend_from_slice(&buf[..n]);
    }
    let mut theirs = [0u8; 68];
    theirs.copy_from_slice(&rest[..68]);
    Ok((method, theirs))
}

fn info_hash_of(torrent: &Path) -> [u8; 20] {
    btcore_core::ids::InfoHash::from_hex(common::info_hash(torrent).as_bytes())
        .expect("hex info-hash")
        .0
}

/// btcore as the responder, spoken to with real frames: the torrent named in the
/// encryption handshake is the one served, over RC4 or plain text as offered, and a
/// BitTorrent handshake that names another torrent (one btcore also has) is refused.
#[test]
fn an_encrypted_peer_gets_the_torrent_it_named_and_only_that_one() {
    use btcore_core::mse::{Method, CRYPTO_PLAINTEXT, CRYPTO_RC4};
    let mut case = Case::new("named-torrent", CONFIG);
    let dir = case.path("src");
    let (a, b) = (dir.join("a.bin"), dir.join("b.bin"));
    write_file(&a, &Rng(1).bytes(300_000));
    write_file(&b, &Rng(2).bytes(200_000));
    let (ta, tb) = (
        btcore_create(&case, &a, None),
        btcore_create(&case, &b, None),
    );
    let (ha, hb) = (info_hash_of(&ta), info_hash_of(&tb));
    let port = free_port();
    // Both torrents complete in `dir`: `download --seed` checks them and seeds both.
    let mut cmd = common::btcore(&["download"]);
    cmd.arg(&ta).arg(&tb).arg("-o").arg(&dir).arg("--seed");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--no-trackers",
    ]);
    cmd.args(["--progress", "plain", "--encryption", "allowed"]);
    if common::btcore_has_dht() {
        cmd.arg("--no-dht");
    }
    let i = case.spawn("btcore-seed-two", cmd, true);
    case.wait_until("both torrents seeding", |c| {
        c.procs[i].printed("seeding") && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // Both torrents answer (the second may still be starting when the first says
    // "seeding"): waited for by dialing, not for a fixed time.
    case.wait_for("both torrents to answer an encrypted dial", |_| {
        for skey in [ha, hb] {
            mse_dial(port, skey, CRYPTO_RC4, skey)?;
        }
        Ok(())
    });
    for (provide, method) in [
        (CRYPTO_RC4, Method::Rc4),
        (CRYPTO_PLAINTEXT, Method::Plaintext),
    ] {
        for (skey, name) in [(ha, "a"), (hb, "b")] {
            let (m, theirs) = mse_dial(port, skey, provide, skey)
                .unwrap_or_else(|e| case.fail(&format!("torrent {name}, {method:?}: {e}")));
            assert_eq!(m, method);
            assert_eq!(&theirs[..20], b"\x13BitTorrent protocol");
            assert_eq!(theirs[28..48], skey, "the torrent named, {name}");
        }
    }
    match mse_dial(port, ha, CRYPTO_RC4, hb) {
        Ok(_) => case.fail("a handshake for b after naming a was answered"),
        Err(e) => assert!(e.contains("closed") || e.contains("reset"), "{e}"),
    }
    case.finish();
}
