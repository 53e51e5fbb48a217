//! Per-torrent controls of the std client on 127.0.0.1: skipped files are neither
//! downloaded nor created, a torrent's data moves to another folder and a file or the
//! top folder is renamed (names checked, nothing written outside), and a magnet link's
//! metadata is saved as a `.torrent` that parses back to the same info-hash.

use btcore_core::metainfo::{Limits, Metainfo};
use btcore_core::session::{Event, TorrentId, TorrentState};
use btcore_host::client::{Client, ClientOptions, ControlError};
use btcore_host::create::{create_torrent, CreateOptions};
use btcore_tests::xorshift_bytes;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PIECE: u32 = 16_384;

fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("torrent-control-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Files of the test torrent `pack` under the folder of that name: `a.bin` (5 pieces
/// and a bit), `b.bin` (8 pieces), `c.bin` (3 pieces and a bit).
fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("a.bin", xorshift_bytes(1, 5 * PIECE as usize + 100)),
        ("b.bin", xorshift_bytes(2, 8 * PIECE as usize)),
        ("c.bin", xorshift_bytes(3, 3 * PIECE as usize + 7)),
    ]
}

/// Writes the files under `dir/pack` and returns the `.torrent`.
fn make_pack(dir: &Path) -> Vec<u8> {
    let root = dir.join("pack");
    std::fs::create_dir_all(&root).expect("pack dir");
    for (name, data) in files() {
        std::fs::write(root.join(name), data).expect("write");
    }
    create_torrent(
        &root,
        &CreateOptions {
            piece_length: Some(PIECE),
            trackers: vec![
                vec!["http://127.0.0.1:1/announce".into()],
                vec!["udp://127.0.0.1:2/announce".into()],
            ],
            creation_date: Some(1),
            threads: 1,
            ..CreateOptions::default()
        },
    )
    .expect("create")
}

fn client(save: &Path) -> Client {
    Client::new(ClientOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        save_dir: save.to_path_buf(),
        use_trackers: false,
        // From the clock: two clients of one seed would share a peer id.
        seed: 0,
        ..ClientOptions::default()
    })
    .expect("client")
}

/// Runs both clients until `done` or 60 s.
fn run(a: &mut Client, b: &mut Client, mut done: impl FnMut(&mut Client, &mut Client) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(a, b) {
        assert!(Instant::now() < deadline, "timed out");
        a.run_once(Duration::from_millis(5)).expect("run a");
        b.run_once(Duration::from_millis(5)).expect("run b");
    }
}

fn state(c: &Client, id: TorrentId) -> TorrentState {
    c.torrents()
        .iter()
        .find(|t| t.id == id)
        .expect("torrent")
        .status
        .state
}

/// A seed client holding `pack` under `dir`, checked and seeding.
fn seed(dir: &Path, torrent: &[u8]) -> (Client, TorrentId, SocketAddr) {
    let mut s = client(dir);
    let id = s.add_torrent_file(torrent, None).expect("add");
    let deadline = Instant::now() + Duration::from_secs(30);
    while state(&s, id) != TorrentState::Seeding {
        assert!(Instant::now() < deadline, "seed check");
        s.run_once(Duration::from_millis(5)).expect("run");
    }
    let addr = s.local_addr();
    (s, id, addr)
}

#[test]
fn a_skipped_file_is_not_downloaded_nor_created() {
    let dir = scratch("skip");
    let torrent = make_pack(&dir.join("seed"));
    let (mut s, _, addr) = seed(&dir.join("seed"), &torrent);
    let mut l = client(&dir.join("leech"));
    let id = l.add_torrent_file(&torrent, None).expect("add");
    l.set_file_priorities(id, &[4, 0, 7]).expect("priorities");
    assert!(matches!(
        l.set_file_priorities(id, &[4, 0]),
        Err(ControlError::Session(_))
    ));
    l.add_peer(id, addr);
    let mut finished = false;
    run(&mut s, &mut l, |_, l| {
        finished |= l.take_events().contains(&Event::TorrentFinished(id));
        finished
    });
    let root = dir.join("leech/pack");
    let f = files();
    assert_eq!(std::fs::read(root.join("a.bin")).expect("a"), f[0].1);
    assert_eq!(std::fs::read(root.join("c.bin")).expect("c"), f[2].1);
    // b.bin shares a piece with a.bin (piece 5) and one with c.bin (piece 13): only
    // those bytes may be there, sparse; none of its own pieces.
    let b = std::fs::read(root.join("b.bin")).unwrap_or_default();
    let own = (PIECE as usize - 100)..(8 * PIECE as usize - 100);
    assert!(
        b.get(own.clone()).is_none_or(|s| s.iter().all(|&x| x == 0)),
        "bytes of the skipped file's own pieces were written"
    );
    let views = l.files(id).expect("files");
    assert_eq!(views[1].priority, 0);
    assert_eq!(views[0].done, views[0].size);
    assert!(views[1].done < PIECE as u64 * 2);
    let status = &l.torrents()[0].status;
    assert!(status.finished && status.state == TorrentState::Downloading);
}

#[test]
fn data_moves_to_another_folder_and_still_seeds() {
    let dir = scratch("move");
    let torrent = make_pack(&dir.join("old"));
    let (mut s, sid, addr) = seed(&dir.join("old"), &torrent);
    // Something in the way refuses the move before anything moved.
    std::fs::create_dir_all(dir.join("busy/pack")).expect("mkdir");
    std::fs::write(dir.join("busy/pack/b.bin"), b"mine").expect("write");
    assert!(matches!(
        s.move_storage(sid, &dir.join("busy")),
        Err(ControlError::Exists(_))
    ));
    assert!(dir.join("old/pack/a.bin").exists());
    assert_eq!(
        std::fs::read(dir.join("busy/pack/b.bin")).expect("b"),
        b"mine"
    );
    s.move_storage(sid, &dir.join("new")).expect("move");
    assert!(
        !dir.join("old/pack").exists(),
        "the old folder is left empty and removed"
    );
    for (name, data) in files() {
        assert_eq!(
            std::fs::read(dir.join("new/pack").join(name)).expect(name),
            data
        );
    }
    // It serves from the new place.
    let mut l = client(&dir.join("leech"));
    let id = l.add_torrent_file(&torrent, None).expect("add");
    l.add_peer(id, addr);
    run(&mut s, &mut l, |_, l| state(l, id) == TorrentState::Seeding);
}

#[test]
fn a_file_and_the_top_folder_are_renamed_and_bad_names_refused() {
    let dir = scratch("rename");
    let torrent = make_pack(&dir.join("d"));
    let (mut s, id, _) = seed(&dir.join("d"), &torrent);
    for bad in ["..", "../escape", "x/y", "/abs", ""] {
        assert!(
            matches!(s.rename_file(id, 0, bad), Err(ControlError::InvalidName(_))),
            "{bad:?}"
        );
        assert!(matches!(
            s.rename_folder(id, bad),
            Err(ControlError::InvalidName(_))
        ));
    }
    assert!(matches!(
        s.rename_file(id, 9, "x"),
        Err(ControlError::InvalidName(_))
    ));
    assert!(matches!(
        s.rename_file(id, 1, "c.bin"),
        Err(ControlError::Storage(_))
    ));
    s.rename_file(id, 0, "renamed.bin").expect("rename file");
    s.rename_folder(id, "folder").expect("rename folder");
    let f = files();
    assert_eq!(
        std::fs::read(dir.join("d/folder/renamed.bin")).expect("renamed"),
        f[0].1
    );
    assert_eq!(
        std::fs::read(dir.join("d/folder/b.bin")).expect("b"),
        f[1].1
    );
    assert!(!dir.join("d/pack").exists());
    assert!(!dir.join("escape").exists() && !dir.join("d/escape").exists());
    let views = s.files(id).expect("files");
    assert_eq!(views[0].path, "folder/renamed.bin");
    // It still reads its data: a recheck-free read of every piece through the new
    // names happens when a leecher downloads.
    let mut l = client(&dir.join("leech"));
    let lid = l.add_torrent_file(&torrent, None).expect("add");
    l.add_peer(lid, s.local_addr());
    run(&mut s, &mut l, |_, l| {
        state(l, lid) == TorrentState::Seeding
    });
}

#[test]
fn a_magnets_metadata_is_saved_as_a_torrent_file() {
    let dir = scratch("save");
    let torrent = make_pack(&dir.join("seed"));
    let mut tokens = Vec::new();
    let m = Metainfo::parse_vec(&torrent, &mut tokens, &Limits::default()).expect("parse");
    let ih = m.info_hash();
    let (mut s, _, addr) = seed(&dir.join("seed"), &torrent);
    let mut l = client(&dir.join("leech"));
    let uri = format!("magnet:?xt=urn:btih:{ih}&tr=http%3A%2F%2F127.0.0.1%3A1%2Fannounce");
    let id = l.add_magnet(&uri, None).expect("magnet");
    let out = dir.join("saved.torrent");
    assert!(matches!(
        l.save_torrent_file(id, &out),
        Err(ControlError::NoMetadata)
    ));
    l.add_peer(id, addr);
    run(&mut s, &mut l, |_, l| {
        l.take_events().contains(&Event::MetadataReceived(id)) || l.files(id).is_some()
    });
    l.save_torrent_file(id, &out).expect("save");
    let saved = std::fs::read(&out).expect("read");
    let mut tokens = Vec::new();
    let back = Metainfo::parse_vec(&saved, &mut tokens, &Limits::default()).expect("parses");
    assert_eq!(back.info_hash(), ih);
    assert_eq!(back.announce(), Some(&b"http://127.0.0.1:1/announce"[..]));
    assert_eq!(back.num_files(), 3);
    assert!(!dir.join("saved.torrent.tmp").exists());
}

/// A torrent's own download limit holds beside the client's (none here): over any
/// span, what arrived stays within the rate times the span plus the bucket's one
/// second of burst and one socket read.
#[test]
fn a_torrent_limit_bounds_its_download() {
    let dir = scratch("limit");
    let torrent = make_pack(&dir.join("seed"));
    let (mut s, _, addr) = seed(&dir.join("seed"), &torrent);
    let mut l = client(&dir.join("leech"));
    let id = l.add_torrent_file(&torrent, None).expect("add");
    assert!(!l.set_torrent_limits(TorrentId(id.0 + 9), 1, 1));
    const RATE: u64 = 32 * 1024;
    assert!(l.set_torrent_limits(id, RATE, 0));
    l.add_peer(id, addr);
    let start = Instant::now();
    let mut most_over = i64::MIN;
    // The peer list shows the rate it sends at, the second in progress counted: so
    // within the first second already.
    let mut peer_rate = 0;
    run(&mut s, &mut l, |_, l| {
        if start.elapsed() < Duration::from_millis(900) {
            let max = l.peers(id).iter().map(|p| p.download_rate).max();
            peer_rate = peer_rate.max(max.unwrap_or(0));
        }
        let got = l.torrents()[0].status.downloaded;
        let allowed = RATE as f64 * start.elapsed().as_secs_f64() + RATE as f64 + 65_536.0;
        most_over = most_over.max(got as i64 - allowed as i64);
        start.elapsed() > Duration::from_millis(1500)
    });
    assert!(most_over <= 0, "{most_over} bytes over the torrent's limit");
    let got = l.torrents()[0].status.downloaded;
    assert!(got > 0, "nothing arrived");
    assert!(
        peer_rate > 0,
        "the peer list showed no download rate in the first second"
    );
}

/// A seed whose file was damaged on disk behind its back: a recheck finds the
/// pieces gone (the torrent is no longer finished), a peer serves them again, and
/// the data is whole; a torrent pointed at a folder holding a copy of its data
/// (set-location without moving) finds every piece there.
#[test]
fn a_recheck_finds_damage_and_set_location_finds_data() {
    let dir = scratch("recheck");
    let torrent = make_pack(&dir.join("seed"));
    let _ = make_pack(&dir.join("copy"));
    let (mut s, _, addr) = seed(&dir.join("seed"), &torrent);
    let mut l = client(&dir.join("leech"));
    let id = l.add_torrent_file(&torrent, None).expect("add");
    l.add_peer(id, addr);
    run(&mut s, &mut l, |_, l| state(l, id) == TorrentState::Seeding);
    l.take_events();
    // Damage one byte of b.bin's third piece (piece 7 of the torrent).
    let b = dir.join("leech/pack/b.bin");
    let mut data = std::fs::read(&b).expect("b");
    data[2 * PIECE as usize] ^= 0xff;
    std::fs::write(&b, &data).expect("damage");
    l.recheck(id).expect("recheck");
    assert!(matches!(l.recheck(id), Err(ControlError::Busy)));
    let view = |l: &Client| l.torrents().into_iter().find(|t| t.id == id).expect("t");
    let deadline = Instant::now() + Duration::from_secs(30);
    while view(&l).status.state == TorrentState::Checking {
        assert!(Instant::now() < deadline, "recheck");
        l.run_once(Duration::from_millis(5)).expect("run");
    }
    let status = view(&l).status;
    let total = status.num_pieces;
    assert_eq!(l.pieces(id).expect("pieces").count(), total - 1);
    assert!(!status.finished, "a torrent that lost data is not finished");
    // The peer it was connected to is dialed again at once (not after the 30 s
    // reconnect backoff).
    let mut finished = false;
    let soon = Instant::now() + Duration::from_secs(10);
    run(&mut s, &mut l, |_, l| {
        assert!(
            Instant::now() < soon,
            "the peer was not dialed again at once"
        );
        finished |= l.take_events().contains(&Event::TorrentFinished(id));
        finished
    });
    assert_eq!(std::fs::read(&b).expect("b"), files()[1].1);

    // Pointed at the copy: checked there, every piece found, nothing moved.
    l.set_location(id, &dir.join("copy")).expect("set location");
    let deadline = Instant::now() + Duration::from_secs(30);
    while view(&l).status.state == TorrentState::Checking {
        assert!(Instant::now() < deadline, "check at the new place");
        l.run_once(Duration::from_millis(5)).expect("run");
    }
    assert_eq!(view(&l).status.state, TorrentState::Seeding);
    assert!(dir.join("leech/pack/b.bin").exists(), "nothing moved");
    // An empty folder: nothing verifies there.
    l.set_location(id, &dir.join("empty"))
        .expect("set location");
    let deadline = Instant::now() + Duration::from_secs(30);
    while view(&l).status.state == TorrentState::Checking {
        assert!(Instant::now() < deadline, "check of an empty place");
        l.run_once(Duration::from_millis(5)).expect("run");
    }
    assert_eq!(l.pieces(id).expect("pieces").count(), 0);
}

/// With a state directory, the bytes a skipped file shares with a wanted one go to
/// the torrent's parts file: the skipped file never appears in the save directory;
/// wanted again, its bytes move into it and the rest is downloaded; the parts file
/// goes with the torrent.
#[test]
fn a_skipped_files_shared_bytes_go_to_the_parts_file() {
    let dir = scratch("parts");
    let torrent = make_pack(&dir.join("seed"));
    let (mut s, _, addr) = seed(&dir.join("seed"), &torrent);
    let state_dir = dir.join("state");
    let mut l = Client::new(ClientOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        save_dir: dir.join("leech"),
        state_dir: Some(state_dir.clone()),
        use_trackers: false,
        seed: 0,
        ..ClientOptions::default()
    })
    .expect("client");
    let id = l.add_torrent_file(&torrent, None).expect("add");
    l.set_file_priorities(id, &[4, 0, 4]).expect("priorities");
    l.add_peer(id, addr);
    let mut finished = false;
    run(&mut s, &mut l, |_, l| {
        finished |= l.take_events().contains(&Event::TorrentFinished(id));
        finished
    });
    l.save_resume();
    let root = dir.join("leech/pack");
    let f = files();
    assert_eq!(std::fs::read(root.join("a.bin")).expect("a"), f[0].1);
    assert_eq!(std::fs::read(root.join("c.bin")).expect("c"), f[2].1);
    assert!(
        !root.join("b.bin").exists(),
        "the skipped file was created in the save directory"
    );
    let hash = l.info_hash(id).expect("hash").to_string();
    let parts = state_dir.join(format!("{hash}.parts"));
    assert!(parts.exists(), "no parts file");
    // The shared pieces verify from the parts file (a check reads them there).
    l.recheck(id).expect("recheck");
    let deadline = Instant::now() + Duration::from_secs(30);
    while state(&l, id) == TorrentState::Checking {
        assert!(Instant::now() < deadline, "recheck");
        l.run_once(Duration::from_millis(5)).expect("run");
    }
    let have = l.pieces(id).expect("pieces");
    assert!(
        have.get(5) && have.get(13),
        "the shared pieces did not verify: {:?}",
        (0..have.len()).map(|i| have.get(i)).collect::<Vec<_>>()
    );
    // Wanted again: it arrives whole.
    l.set_file_priorities(id, &[4, 4, 4]).expect("priorities");
    l.add_peer(id, addr);
    run(&mut s, &mut l, |_, l| state(l, id) == TorrentState::Seeding);
    assert_eq!(std::fs::read(root.join("b.bin")).expect("b"), f[1].1);
    l.remove_torrent(id, false);
    assert!(!parts.exists(), "the parts file outlived its torrent");
}

/// An HTTP server on 127.0.0.1 serving the files under `root` with `Range`, a
/// connection per request, on a thread that lives as long as the test process.
fn range_server(root: PathBuf) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&req).into_owned();
                let path = req.split_whitespace().nth(1).unwrap_or("/");
                let name = path.trim_start_matches('/');
                let data = match std::fs::read(root.join(name)) {
                    Ok(d) if !name.contains("..") => d,
                    _ => {
                        let _ = s.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        return;
                    }
                };
                let (a, b) = req
                    .lines()
                    .find_map(|l| {
                        let v = l.to_ascii_lowercase();
                        let v = v.strip_prefix("range: bytes=")?.to_string();
                        let (a, b) = v.trim().split_once('-')?;
                        Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?))
                    })
                    .unwrap_or((0, data.len() - 1));
                let b = b.min(data.len() - 1);
                let _ = write!(
                    s,
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{}\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    data.len(),
                    b + 1 - a
                );
                let _ = s.write_all(&data[a..=b]);
            });
        }
    });
    port
}

/// Web seed bytes of a torrent held back by its own download limit do not hold back
/// another torrent's: of two torrents served by one web seed, the one without a limit
/// completes while the limited one has fetched less than half.
#[test]
fn a_torrent_held_by_its_own_limit_does_not_hold_web_seed_bytes_of_another() {
    let dir = scratch("webseed-limits");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).expect("src");
    let (len, slow_len) = (8 << 20, 16 << 20);
    std::fs::write(src.join("slow.bin"), xorshift_bytes(11, slow_len)).expect("slow");
    std::fs::write(src.join("fast.bin"), xorshift_bytes(12, len)).expect("fast");
    let port = range_server(src.clone());
    let make = |name: &str| {
        create_torrent(
            &src.join(name),
            &CreateOptions {
                piece_length: Some(PIECE),
                web_seeds: vec![format!("http://127.0.0.1:{port}/")],
                creation_date: Some(1),
                threads: 1,
                ..CreateOptions::default()
            },
        )
        .expect("create")
    };
    let mut c = client(&dir.join("leech"));
    let slow = c.add_torrent_file(&make("slow.bin"), None).expect("slow");
    assert!(c.set_torrent_limits(slow, 64 * 1024, 0));
    let fast = c.add_torrent_file(&make("fast.bin"), None).expect("fast");
    let deadline = Instant::now() + Duration::from_secs(60);
    while state(&c, fast) != TorrentState::Seeding {
        assert!(
            Instant::now() < deadline,
            "the unlimited torrent did not complete"
        );
        c.run_once(Duration::from_millis(5)).expect("run");
    }
    let have = |id| {
        c.torrents()
            .iter()
            .find(|t| t.id == id)
            .expect("torrent")
            .status
            .bytes_have
    };
    assert!(
        have(slow) < slow_len as u64 / 2,
        "the limited torrent had {} of {slow_len} bytes when the other completed",
        have(slow)
    );
    assert_eq!(
        std::fs::read(dir.join("leech/fast.bin")).expect("fast"),
        xorshift_bytes(12, len)
    );
}
