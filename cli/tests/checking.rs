//! Checking a torrent's data off the loop: a torrent added over data already on disk
//! (no resume data, or resume data whose files changed) waits in the checking state
//! while a thread of its own hashes it, and starts with what verified; holes in a
//! sparse file are not read.

mod common;

use btcore_core::session::TorrentState;
use btcore_host::client::{Client, ClientOptions, TorrentView};
use btcore_host::create::{create_torrent, CreateOptions};
use common::TempDir;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn payload(len: usize, seed: u64) -> Vec<u8> {
    common::Rng(seed | 1).bytes(len)
}

fn client(save: &Path, state: Option<&Path>) -> Client {
    Client::new(ClientOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        save_dir: save.to_path_buf(),
        state_dir: state.map(Path::to_path_buf),
        use_trackers: false,
        seed: 7,
        ..ClientOptions::default()
    })
    .expect("client")
}

fn view(c: &Client) -> TorrentView {
    c.torrents().into_iter().next().expect("one torrent")
}

/// A client (see [`client`]) with `torrent` added.
fn added(save: &Path, state: Option<&Path>, torrent: &[u8]) -> Client {
    let mut c = client(save, state);
    c.add_torrent_file(torrent, None).expect("add");
    c
}

/// Runs the loop until the torrent's check ends (at most 60 s).
fn run_until_checked(c: &mut Client) -> TorrentView {
    let end = Instant::now() + Duration::from_secs(60);
    while view(c).checking.is_some() {
        assert!(Instant::now() < end, "the check did not end");
        c.run_once(Duration::from_millis(20)).expect("loop");
    }
    view(c)
}

/// A payload of `pieces` pieces of 32 KiB in `dir/data.bin` and its torrent.
fn setup(dir: &Path, pieces: usize) -> (Vec<u8>, Vec<u8>) {
    let data = payload(pieces * 32 * 1024, 5);
    fs::create_dir_all(dir.join("seed")).expect("seed dir");
    fs::write(dir.join("seed/data.bin"), &data).expect("payload");
    (data, torrent_of(&dir.join("seed/data.bin"), 32 * 1024))
}

/// A torrent of the file at `path`, in pieces of `piece_len`.
fn torrent_of(path: &Path, piece_len: u32) -> Vec<u8> {
    create_torrent(
        path,
        &CreateOptions {
            piece_length: Some(piece_len),
            creation_date: Some(0),
            ..CreateOptions::default()
        },
    )
    .expect("torrent")
}

#[test]
fn data_on_disk_is_checked_off_the_loop_then_the_torrent_starts() {
    let dir = TempDir::new("checking-full");
    let (_, torrent) = setup(&dir.0, 64);
    let mut c = added(&dir.0.join("seed"), None, &torrent);
    // Added at once, checking: the hashing has not been waited for.
    let v = view(&c);
    assert_eq!(v.status.state, TorrentState::Checking, "{v:?}");
    assert_eq!((v.status.pieces_have, v.status.peers), (0, 0));
    assert_eq!(v.checking.map(|(_, total)| total), Some(64));
    let v = run_until_checked(&mut c);
    assert_eq!(v.status.state, TorrentState::Seeding, "{v:?}");
    assert_eq!(v.status.pieces_have, 64);
    c.shutdown();
}

#[test]
fn a_damaged_piece_is_left_out_by_the_check() {
    let dir = TempDir::new("checking-damaged");
    let (mut data, torrent) = setup(&dir.0, 16);
    data[5 * 32 * 1024 + 9] ^= 1;
    fs::write(dir.0.join("seed/data.bin"), &data).expect("damage");
    let mut c = added(&dir.0.join("seed"), None, &torrent);
    let v = run_until_checked(&mut c);
    assert_eq!(v.status.state, TorrentState::Downloading, "{v:?}");
    assert_eq!(v.status.pieces_have, 15);
    c.shutdown();
}

#[test]
fn nothing_on_disk_needs_no_check() {
    let dir = TempDir::new("checking-empty");
    let (_, torrent) = setup(&dir.0, 8);
    let mut c = added(&dir.0.join("elsewhere"), None, &torrent);
    let v = view(&c);
    assert_eq!(v.status.state, TorrentState::Downloading, "{v:?}");
    assert!(v.checking.is_none());
    c.shutdown();
}

/// Resume data whose files changed: what is on disk is checked, and a stop during the
/// check leaves that resume file as it was.
#[test]
fn changed_files_are_checked_and_a_stop_keeps_the_resume_file() {
    let dir = TempDir::new("checking-claims");
    let (_, torrent) = setup(&dir.0, 32);
    let state = dir.0.join("state");
    {
        let mut c = added(&dir.0.join("seed"), Some(&state), &torrent);
        assert_eq!(run_until_checked(&mut c).status.pieces_have, 32);
        c.shutdown();
    }
    let resume: Vec<PathBuf> = fs::read_dir(&state)
        .expect("state dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "resume"))
        .collect();
    assert_eq!(resume.len(), 1, "one resume file: {resume:?}");
    let saved = fs::read(&resume[0]).expect("resume file");
    // Touch the file: its mtime no longer matches the resume data.
    let f = fs::OpenOptions::new()
        .append(true)
        .open(dir.0.join("seed/data.bin"))
        .expect("open");
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .expect("mtime");
    drop(f);
    let mut c = added(&dir.0.join("seed"), Some(&state), &torrent);
    let v = view(&c);
    assert_eq!(v.status.state, TorrentState::Checking);
    assert_eq!(v.checking.map(|(_, total)| total), Some(32));
    // Stopped while checking: the resume file is left as it was.
    c.shutdown();
    assert_eq!(fs::read(&resume[0]).expect("resume file"), saved);
    let mut c = added(&dir.0.join("seed"), Some(&state), &torrent);
    let v = run_until_checked(&mut c);
    assert_eq!(v.status.state, TorrentState::Seeding);
    c.shutdown();
}

/// A torrent removed while it is checked is gone at once; the check's result, when
/// it comes, changes nothing.
#[test]
fn removing_a_torrent_while_it_is_checked() {
    let dir = TempDir::new("checking-remove");
    let (_, torrent) = setup(&dir.0, 64);
    let mut c = client(&dir.0.join("seed"), None);
    let id = c.add_torrent_file(&torrent, None).expect("add");
    assert!(c.remove_torrent(id, false));
    assert!(c.torrents().is_empty());
    for _ in 0..20 {
        c.run_once(Duration::from_millis(10)).expect("loop");
    }
    assert!(c.torrents().is_empty());
    // Added again, it is checked again and starts.
    c.add_torrent_file(&torrent, None).expect("add again");
    assert_eq!(
        run_until_checked(&mut c).status.state,
        TorrentState::Seeding
    );
    c.shutdown();
}

/// A sparse, partly written file: the check finds the pieces written and a piece of
/// zeros that lies in a hole (it verifies without a read), not the other holes.
#[test]
fn holes_in_a_sparse_file_are_missing_pieces_unless_zeros() {
    let dir = TempDir::new("checking-holes");
    let piece = 32 * 1024;
    let mut data = payload(8 * piece, 9);
    // Piece 5 is all zeros.
    data[5 * piece..6 * piece].fill(0);
    fs::create_dir_all(dir.0.join("seed")).expect("seed dir");
    fs::write(dir.0.join("seed/data.bin"), &data).expect("payload");
    let torrent = torrent_of(&dir.0.join("seed/data.bin"), piece as u32);
    // The download directory holds pieces 1 and 3 only, the rest holes, the file at
    // its full length.
    let down = dir.0.join("down");
    fs::create_dir_all(&down).expect("down dir");
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(down.join("data.bin")).expect("create");
        f.set_len(data.len() as u64).expect("set_len");
        for p in [1, 3] {
            f.write_all_at(&data[p * piece..(p + 1) * piece], (p * piece) as u64)
                .expect("write");
        }
    }
    let mut c = added(&down, None, &torrent);
    let v = run_until_checked(&mut c);
    // Pieces 1 and 3, and 5 (zeros in a hole); the other holes are not zeros.
    assert_eq!(v.status.pieces_have, 3, "{v:?}");
    c.shutdown();
}
