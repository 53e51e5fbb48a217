//! A magnet link over data already on disk, on 127.0.0.1: when the metadata arrives
//! the client checks what is in its save directory and downloads only what is
//! missing, as libtorrent does (it used to download everything again).

mod common;

use btcore_core::session::{TorrentId, TorrentState};
use btcore_host::client::{Client, ClientOptions};
use btcore_host::create::{create_torrent, CreateOptions};
use common::TempDir;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const PIECE: usize = 32 * 1024;
const PIECES: usize = 64;

fn client(save: &Path, seed: u64) -> Client {
    Client::new(ClientOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        save_dir: save.to_path_buf(),
        use_trackers: false,
        seed,
        ..ClientOptions::default()
    })
    .expect("client")
}

/// A seed of `PIECES` pieces and a client that adds it by magnet link over a save
/// directory holding the first `on_disk` bytes of it (the right file name); runs both
/// until the second seeds (at most 60 s) and returns what it downloaded.
fn magnet_over(tag: &str, on_disk: usize) -> u64 {
    let dir = TempDir::new(tag);
    let data = common::Rng(0x6d61_676e).bytes(PIECES * PIECE);
    let seed_dir = dir.0.join("seed");
    let leech_dir = dir.0.join("leech");
    fs::create_dir_all(&seed_dir).expect("seed dir");
    fs::create_dir_all(&leech_dir).expect("leech dir");
    fs::write(seed_dir.join("data.bin"), &data).expect("payload");
    if on_disk > 0 {
        fs::write(leech_dir.join("data.bin"), &data[..on_disk]).expect("partial payload");
    }
    let torrent = create_torrent(
        &seed_dir.join("data.bin"),
        &CreateOptions {
            piece_length: Some(PIECE as u32),
            creation_date: Some(0),
            ..CreateOptions::default()
        },
    )
    .expect("torrent");
    let mut seed = client(&seed_dir, 11);
    let st = seed.add_torrent_file(&torrent, None).expect("seed add");
    let ih = seed.info_hash(st).expect("info hash");
    // The seed checks its own data first (it takes no peer meanwhile).
    let end = Instant::now() + Duration::from_secs(60);
    while seed.torrents()[0].status.state != TorrentState::Seeding {
        assert!(Instant::now() < end, "the seed's check did not end");
        seed.run_once(Duration::from_millis(5)).expect("seed loop");
    }
    let mut leech = client(&leech_dir, 12);
    let id: TorrentId = leech
        .add_magnet(&format!("magnet:?xt=urn:btih:{ih}"), None)
        .expect("magnet");
    leech.add_peer(id, seed.local_addr());
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let v = leech.torrents().into_iter().next().expect("torrent");
        if v.status.state == TorrentState::Seeding {
            break;
        }
        assert!(Instant::now() < end, "the magnet did not complete: {v:?}");
        seed.run_once(Duration::from_millis(5)).expect("seed loop");
        leech
            .run_once(Duration::from_millis(5))
            .expect("leech loop");
    }
    let v = leech.torrents().into_iter().next().expect("torrent");
    assert_eq!(v.status.pieces_have as usize, PIECES);
    assert_eq!(
        fs::read(leech_dir.join("data.bin")).expect("read back"),
        data,
        "the data on disk is the torrent's"
    );
    seed.shutdown();
    leech.shutdown();
    v.status.downloaded
}

#[test]
fn a_magnet_over_complete_data_downloads_nothing() {
    let downloaded = magnet_over("magnet-check-full", PIECES * PIECE);
    assert!(
        downloaded < PIECE as u64,
        "downloaded {downloaded} bytes of data already on disk"
    );
}

#[test]
fn a_magnet_over_half_the_data_downloads_the_other_half() {
    let half = PIECES / 2 * PIECE;
    let downloaded = magnet_over("magnet-check-half", half);
    assert!(
        downloaded <= (half + PIECE) as u64,
        "downloaded {downloaded} bytes for {half} missing"
    );
}
