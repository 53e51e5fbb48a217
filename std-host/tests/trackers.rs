//! A torrent's tracker list edited through the std client survives a restart the way
//! the client offers: the client keeps no tracker list of its own, and
//! `Client::save_torrent_file` writes the edited list with the metadata, which a new
//! client adds back with the same tiers. Real files; no tracker is reached.

use btcore_core::session::{TorrentId, TrackerListError};
use btcore_host::client::{Client, ClientOptions};
use btcore_host::create::{create_torrent, CreateOptions};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("trackers-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn client(save: &Path) -> Client {
    Client::new(ClientOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        save_dir: save.to_path_buf(),
        use_trackers: false,
        seed: 0,
        ..ClientOptions::default()
    })
    .expect("client")
}

/// The tiers of torrent `id` as sets (a tier's order is shuffled, BEP 12).
fn tiers(c: &Client, id: TorrentId) -> Vec<BTreeSet<String>> {
    let mut out: Vec<BTreeSet<String>> = Vec::new();
    for t in c.tracker_status(id).expect("known") {
        let tier = t.tier as usize;
        while out.len() <= tier {
            out.push(BTreeSet::new());
        }
        out[tier].insert(t.url);
    }
    out
}

#[test]
fn an_edited_tracker_list_is_validated_and_saved_with_the_metadata() {
    let dir = scratch("edit");
    std::fs::write(dir.join("data.bin"), vec![7u8; 40_000]).expect("data");
    let torrent = create_torrent(
        &dir.join("data.bin"),
        &CreateOptions {
            piece_length: Some(16_384),
            trackers: vec![vec!["http://127.0.0.1:1/announce".into()]],
            creation_date: Some(1),
            threads: 1,
            ..CreateOptions::default()
        },
    )
    .expect("create");
    let mut c = client(&dir);
    let id = c.add_torrent_file(&torrent, None).expect("add");
    let (a, b, u) = (
        "http://a.example/announce",
        "https://b.example/announce",
        "udp://c.example:6969/announce",
    );
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        c.set_trackers(id, vec![s(&[a, "wss://x.example/announce"])]),
        Err(TrackerListError::UnsupportedUrl)
    );
    assert_eq!(
        c.set_trackers(TorrentId(id.0 + 7), vec![s(&[a])]),
        Err(TrackerListError::UnknownTorrent)
    );
    assert_eq!(
        tiers(&c, id),
        [BTreeSet::from(["http://127.0.0.1:1/announce".to_string()])],
        "unchanged"
    );
    c.set_trackers(id, vec![s(&[a, b]), vec![], s(&[u, a])])
        .expect("edit");
    let want = vec![
        BTreeSet::from([a.to_string(), b.to_string()]),
        BTreeSet::from([u.to_string()]),
    ];
    assert_eq!(tiers(&c, id), want);
    assert!(c
        .tracker_status(id)
        .expect("known")
        .iter()
        .all(|t| t.last_announce.is_none() && t.last_result.is_empty()));

    // The restart: what the application saved, added to a new client.
    let saved = dir.join("saved.torrent");
    c.save_torrent_file(id, &saved).expect("save");
    drop(c);
    let mut c = client(&dir);
    let id = c
        .add_torrent_file(&std::fs::read(&saved).expect("read"), None)
        .expect("add saved");
    assert_eq!(tiers(&c, id), want);
}
