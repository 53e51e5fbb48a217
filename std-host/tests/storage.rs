//! File storage: byte mapping across files, pad files, path safety, the open-file cap,
//! hashing and rechecking, and files larger than 4 GiB.

use btcore_core::hash::sha1;
use btcore_core::ids::Geometry;
use btcore_core::metainfo::{FileAttr, FileSpec};
use btcore_host::storage::{Expected, Storage, StorageConfig, StorageErrorKind};
use std::fs;
use std::path::{Path, PathBuf};

const PIECE: u32 = 16_384;

/// A fresh scratch directory for one test (removed by `Scratch::drop`).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("btcore-storage-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("scratch dir");
        Self(d)
    }
    fn save(&self) -> PathBuf {
        self.0.join("save")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn spec(index: u32, path: &str, offset: u64, length: u64, pad: bool) -> FileSpec {
    FileSpec {
        index,
        path: path.into(),
        offset,
        length,
        attr: FileAttr {
            pad,
            ..FileAttr::default()
        },
        symlink_target: None,
    }
}

/// Files of 0, 1, 16383, 16384, 16385 bytes, a pad file up to the next piece boundary,
/// then 40000 bytes: 105,536 bytes in 7 pieces of 16 KiB.
fn layout() -> (Vec<FileSpec>, Geometry) {
    let sizes: [(&str, u64, bool); 7] = [
        ("t/empty", 0, false),
        ("t/one", 1, false),
        ("t/sub/c", 16_383, false),
        ("t/sub/d", 16_384, false),
        ("t/e", 16_385, false),
        ("", 16_383, true),
        ("t/deep/er/f", 40_000, false),
    ];
    let mut off = 0;
    let files = sizes
        .iter()
        .enumerate()
        .map(|(i, &(p, len, pad))| {
            let s = spec(i as u32, p, off, len, pad);
            off += len;
            s
        })
        .collect();
    assert_eq!(off, 105_536);
    (files, Geometry::new(off, PIECE).expect("geometry"))
}

/// The torrent's content: pseudo-random bytes, zeros in pad files.
fn content(files: &[FileSpec], total: u64) -> Vec<u8> {
    let mut v: Vec<u8> = (0..total)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for f in files.iter().filter(|f| f.attr.pad) {
        v[f.offset as usize..(f.offset + f.length) as usize].fill(0);
    }
    v
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

fn write_piece(s: &Storage, data: &[u8], piece: u32) {
    let (off, len) = s.piece_range(piece);
    s.write(off, &data[off as usize..off as usize + len as usize])
        .expect("write piece");
}

fn piece_hashes(g: &Geometry, data: &[u8]) -> Vec<[u8; 20]> {
    (0..g.num_pieces())
        .map(|p| {
            let off = (p * PIECE) as usize;
            let end = (off + PIECE as usize).min(data.len());
            sha1(&data[off..end])
        })
        .collect()
}

/// Every path under `dir`, relative, `/`-separated, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let rel = p
                .strip_prefix(dir)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            if p.is_dir() {
                stack.push(p);
                out.push(format!("{rel}/"));
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn writes_and_reads_across_file_boundaries() {
    let dir = Scratch::new("boundaries");
    let (files, g) = layout();
    let data = content(&files, g.total_len());
    let s = Storage::new(&dir.save(), files.clone(), g, StorageConfig::default()).expect("storage");

    let mut order: Vec<u32> = (0..g.num_pieces()).collect();
    Rng(0x1234_5678_9abc_def1).shuffle(&mut order);
    for &p in &order {
        write_piece(&s, &data, p);
    }

    // The whole torrent, then ranges straddling every boundary.
    let mut all = vec![1u8; data.len()];
    s.read(0, &mut all).expect("read all");
    assert!(all == data, "content differs");
    let mut rng = Rng(42);
    for f in &files {
        for (start, len) in [
            (f.offset.saturating_sub(3), 7u64),
            (f.offset, 1),
            (f.offset.saturating_sub(1), 2),
        ] {
            let len = len.min(g.total_len() - start);
            let mut buf = vec![0xaa; len as usize];
            s.read(start, &mut buf).expect("read across");
            assert_eq!(buf, data[start as usize..(start + len) as usize]);
        }
    }
    for _ in 0..200 {
        let start = rng.next() % g.total_len();
        let len = 1 + rng.next() % (g.total_len() - start).min(50_000);
        let mut buf = vec![0; len as usize];
        s.read(start, &mut buf).expect("random read");
        assert_eq!(buf, data[start as usize..(start + len) as usize]);
    }

    // Pad bytes read as zeros, even when garbage was written there.
    let pad = &files[5];
    s.write(pad.offset, &vec![0xff; pad.length as usize])
        .expect("write into pad");
    let mut buf = vec![0xee; pad.length as usize];
    s.read(pad.offset, &mut buf).expect("read pad");
    assert!(buf.iter().all(|&b| b == 0));

    // Reads and writes past the end are refused.
    let mut one = [0u8; 1];
    assert_eq!(
        s.read(g.total_len(), &mut one).map_err(|e| e.kind),
        Err(StorageErrorKind::OutOfRange)
    );
    assert_eq!(
        s.write(g.total_len() - 1, &[0, 0]).map_err(|e| e.kind),
        Err(StorageErrorKind::OutOfRange)
    );

    // On disk: every data file at its full length, no pad file, the empty file only
    // after ensure_files.
    let save = dir.save();
    assert_eq!(
        tree(&save),
        [
            "t/",
            "t/deep/",
            "t/deep/er/",
            "t/deep/er/f",
            "t/e",
            "t/one",
            "t/sub/",
            "t/sub/c",
            "t/sub/d"
        ]
    );
    for f in files.iter().filter(|f| !f.attr.pad && f.length > 0) {
        let len = fs::metadata(save.join(&f.path)).expect("file").len();
        assert_eq!(len, f.length, "{}", f.path);
    }
    s.ensure_files().expect("ensure_files");
    assert_eq!(
        fs::metadata(save.join("t/empty"))
            .expect("empty file")
            .len(),
        0
    );
    assert_eq!(tree(&save).len(), 10);

    // Hashes agree with a direct SHA-1 of the content; recheck finds everything.
    let hashes = piece_hashes(&g, &data);
    for p in 0..g.num_pieces() {
        assert_eq!(
            s.hash_piece(p).expect("hash"),
            hashes[p as usize],
            "piece {p}"
        );
        let mut buf = vec![0; PIECE as usize];
        let n = s.read_piece(p, &mut buf).expect("read_piece");
        assert_eq!(sha1(&buf[..n]), hashes[p as usize]);
    }
    assert!(s.recheck(|p| Expected::sha1(hashes[p as usize])).is_full());
    assert!(s.hash_piece(g.num_pieces()).is_err());
    s.sync().expect("sync");
}

#[test]
fn recheck_finds_exactly_the_written_pieces() {
    let dir = Scratch::new("recheck");
    let (files, g) = layout();
    let data = content(&files, g.total_len());
    let hashes = piece_hashes(&g, &data);
    let s = Storage::new(&dir.save(), files, g, StorageConfig::default()).expect("storage");

    // Nothing on disk: nothing verifies, reads say "missing".
    assert!(!s.has_data());
    assert_eq!(s.recheck(|p| Expected::sha1(hashes[p as usize])).count(), 0);
    let mut buf = vec![0; 10];
    assert!(s.read(0, &mut buf).expect_err("missing").is_missing());
    assert!(s.hash_piece(0).expect_err("missing").is_missing());

    for p in [1, 4, 6] {
        write_piece(&s, &data, p);
    }
    assert!(s.has_data());
    let have = s.recheck(|p| Expected::sha1(hashes[p as usize]));
    assert_eq!(have.iter_set().collect::<Vec<_>>(), [1, 4, 6]);
    // A check told to stop after its third piece stops there, with no result.
    let mut calls = 0;
    let stopped = s.check(
        None,
        |p| Expected::sha1(hashes[p as usize]),
        || {
            calls += 1;
            calls < 3
        },
    );
    assert!(
        stopped.is_none() && calls == 3,
        "{calls} pieces, {stopped:?}"
    );
    // Of a list, only the pieces listed.
    let some = s.check(
        Some(&[4, 5, 6]),
        |p| Expected::sha1(hashes[p as usize]),
        || true,
    );
    assert_eq!(
        some.map(|b| b.iter_set().collect::<Vec<_>>()),
        Some(vec![4, 6])
    );
    assert_eq!(
        s.check_pieces(&[0, 1, 2, 3, 4, 5, 6, 99], |p| Expected::sha1(
            hashes[p as usize]
        )),
        [1, 4, 6]
    );
    // Piece 5 lies in a file that exists (written through piece 4 and 6) but was never
    // written there: a hole of zeros, which does not verify.
    assert!(s.hash_piece(5).is_ok());

    // A corrupted byte drops the piece.
    s.write(
        u64::from(PIECE) * 4 + 100,
        &[data[4 * PIECE as usize + 100] ^ 1],
    )
    .expect("corrupt");
    let have = s.recheck(|p| Expected::sha1(hashes[p as usize]));
    assert_eq!(have.iter_set().collect::<Vec<_>>(), [1, 6]);

    // After a close, a fresh storage on the same directory sees the same.
    s.close_all();
    let (files, g) = layout();
    let again = Storage::new(&dir.save(), files, g, StorageConfig::default()).expect("storage");
    assert_eq!(again.recheck(|p| Expected::sha1(hashes[p as usize])), have);
}

#[test]
fn open_file_cap_of_two_with_six_files() {
    let dir = Scratch::new("cap");
    let (files, g) = layout();
    let data = content(&files, g.total_len());
    let hashes = piece_hashes(&g, &data);
    let s = Storage::new(
        &dir.save(),
        files,
        g,
        StorageConfig {
            max_open_files: 2,
            ..StorageConfig::default()
        },
    )
    .expect("storage");

    // Several threads at once, each piece touching up to three files.
    std::thread::scope(|sc| {
        for t in 0..4u32 {
            let (s, data) = (&s, &data);
            sc.spawn(move || {
                for p in (0..g.num_pieces()).filter(|p| p % 4 == t) {
                    write_piece(s, data, p);
                    assert!(s.open_files() <= 2);
                }
            });
        }
    });
    std::thread::scope(|sc| {
        for _ in 0..4 {
            let (s, hashes) = (&s, &hashes);
            sc.spawn(move || {
                for p in 0..g.num_pieces() {
                    assert_eq!(s.hash_piece(p).expect("hash"), hashes[p as usize]);
                }
            });
        }
    });
    assert!(s.open_files() <= 2);
    let mut all = vec![0; data.len()];
    s.read(0, &mut all).expect("read");
    assert!(all == data);
    s.sync().expect("sync after handles were closed");
}

#[test]
fn unsafe_paths_are_refused() {
    let dir = Scratch::new("paths");
    let g = Geometry::new(10, PIECE).expect("geometry");
    for bad in [
        "t/../x", "../x", "/etc/x", "t//x", "t/./x", ".", "t/", "", "a\0b",
    ] {
        let err = Storage::new(
            &dir.save(),
            vec![spec(0, bad, 0, 10, false)],
            g,
            StorageConfig::default(),
        )
        .expect_err(bad);
        assert!(
            matches!(err.kind, StorageErrorKind::UnsafePath(_)),
            "{bad:?}: {err}"
        );
    }
    assert!(!dir.save().exists());

    // Layouts that do not add up.
    let gap = vec![spec(0, "a", 0, 4, false), spec(1, "b", 5, 5, false)];
    let short = vec![spec(0, "a", 0, 9, false)];
    let dup = vec![spec(0, "a", 0, 5, false), spec(1, "a", 5, 5, false)];
    let index = vec![spec(1, "a", 0, 10, false)];
    for files in [gap, short, dup, index] {
        let err =
            Storage::new(&dir.save(), files, g, StorageConfig::default()).expect_err("bad layout");
        assert!(matches!(err.kind, StorageErrorKind::BadLayout(_)), "{err}");
    }
}

#[cfg(unix)]
#[test]
fn symlinked_parent_is_refused() {
    let dir = Scratch::new("symlink");
    let save = dir.save();
    let elsewhere = dir.0.join("elsewhere");
    fs::create_dir_all(&save).expect("save");
    fs::create_dir_all(&elsewhere).expect("elsewhere");
    std::os::unix::fs::symlink(&elsewhere, save.join("link")).expect("symlink");
    let g = Geometry::new(10, PIECE).expect("geometry");

    let err = Storage::new(
        &save,
        vec![spec(0, "link/file.bin", 0, 10, false)],
        g,
        StorageConfig::default(),
    )
    .expect_err("symlinked parent");
    assert!(matches!(err.kind, StorageErrorKind::UnsafePath(_)), "{err}");

    // The file itself a link to a file outside.
    fs::write(elsewhere.join("target"), b"x").expect("target");
    std::os::unix::fs::symlink(elsewhere.join("target"), save.join("direct")).expect("symlink");
    let err = Storage::new(
        &save,
        vec![spec(0, "direct", 0, 10, false)],
        g,
        StorageConfig::default(),
    )
    .expect_err("symlinked file");
    assert!(matches!(err.kind, StorageErrorKind::UnsafePath(_)), "{err}");

    // A link that appears after the storage was made is caught when the file is opened.
    let s = Storage::new(
        &save,
        vec![spec(0, "late/file.bin", 0, 10, false)],
        g,
        StorageConfig::default(),
    )
    .expect("no link yet");
    std::os::unix::fs::symlink(&elsewhere, save.join("late")).expect("symlink");
    let err = s.write(0, &[7; 10]).expect_err("late link");
    assert!(matches!(err.kind, StorageErrorKind::UnsafePath(_)), "{err}");

    // Nothing was written outside the save directory.
    assert_eq!(tree(&elsewhere), ["target"]);
    assert_eq!(fs::read(elsewhere.join("target")).expect("target"), b"x");
}

#[test]
fn skipped_and_symlink_files_are_not_created() {
    let dir = Scratch::new("skipped");
    let mut link = spec(2, "t/link", 1, 0, false);
    link.attr.symlink = true;
    link.symlink_target = Some("t/a".into());
    let files = vec![
        spec(0, "t/empty-wanted", 0, 0, false),
        spec(1, "t/a", 0, 1, false),
        link,
        spec(3, "t/empty-skipped", 1, 0, false),
        spec(4, "t/b", 1, 9, false),
    ];
    let g = Geometry::new(10, 4).expect("geometry");
    let s = Storage::new(&dir.save(), files, g, StorageConfig::default()).expect("storage");
    s.set_skipped(3, true);
    s.set_skipped(4, true);
    assert!(s.is_skipped(4));
    s.ensure_files().expect("ensure");
    assert_eq!(tree(&dir.save()), ["t/", "t/empty-wanted"]);
    // A boundary piece (bytes 0..4) creates the skipped file b, sparse, for its part.
    s.write(0, b"abcd").expect("write");
    assert_eq!(fs::read(dir.save().join("t/b")).expect("b"), b"bcd");
    assert_eq!(tree(&dir.save()), ["t/", "t/a", "t/b", "t/empty-wanted"]);
}

#[cfg(unix)]
#[test]
fn file_larger_than_four_gib() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let dir = Scratch::new("big");
    let total = (5u64 << 30) + 5;

    // Probe: does this filesystem keep a 5 GiB hole sparse?
    let probe = dir.0.join("probe");
    let sparse = fs::File::create(&probe)
        .and_then(|f| f.write_all_at(b"x", total - 1).map(|()| f))
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.blocks() * 512 < (64 << 20));
    let _ = fs::remove_file(&probe);
    if !sparse {
        eprintln!("skipping file_larger_than_four_gib: the filesystem has no sparse files");
        return;
    }

    let g = Geometry::new(total, 1 << 22).expect("geometry");
    let last = g.num_pieces() - 1;
    let s = Storage::new(
        &dir.save(),
        vec![spec(0, "big.bin", 0, total, false)],
        g,
        StorageConfig::default(),
    )
    .expect("storage");
    assert_eq!(s.piece_range(last), (5 << 30, 5));
    s.write(5 << 30, b"HELLO").expect("write past 4 GiB");

    let mut buf = [0u8; 5];
    s.read(5 << 30, &mut buf).expect("read back");
    assert_eq!(&buf, b"HELLO");
    assert_eq!(s.hash_piece(last).expect("hash"), sha1(b"HELLO"));

    // At the right place in the file, and nowhere else (a 4 GiB wrap would put it at 1 GiB).
    let path = dir.save().join("big.bin");
    let f = fs::File::open(&path).expect("open");
    assert_eq!(f.metadata().expect("meta").len(), total);
    let mut raw = [0u8; 5];
    f.read_exact_at(&mut raw, 5 << 30).expect("raw read");
    assert_eq!(&raw, b"HELLO");
    f.read_exact_at(&mut raw, 1 << 30).expect("raw read low");
    assert_eq!(raw, [0; 5]);

    let have = s.check_pieces(&[0, last], |p| {
        Expected::sha1(if p == last { sha1(b"HELLO") } else { [0; 20] })
    });
    assert_eq!(have, [last]);
}

/// `write_vectored` puts its buffers where one `write` of their concatenation would:
/// buffers cut by file boundaries and pad files, of every size from 1 byte, at random
/// offsets, with garbage in pad files dropped.
#[test]
fn vectored_writes_match_plain_writes_across_files() {
    let dir = Scratch::new("vectored");
    let (files, g) = layout();
    let data = content(&files, g.total_len());
    let s = Storage::new(&dir.save(), files.clone(), g, StorageConfig::default()).expect("storage");
    let total = g.total_len() as usize;
    let mut rng = Rng(0x0bad_cafe_f00d_d00d);
    // Cover the torrent with runs of random buffers, in a random order of runs.
    let mut runs = Vec::new();
    let mut at = 0;
    while at < total {
        let len = (1 + rng.next() as usize % 40_000).min(total - at);
        runs.push((at, len));
        at += len;
    }
    rng.shuffle(&mut runs);
    for &(start, len) in &runs {
        let mut bufs: Vec<Vec<u8>> = Vec::new();
        let mut pos = start;
        while pos < start + len {
            let n = (1 + rng.next() as usize % 9_000).min(start + len - pos);
            let mut b = data[pos..pos + n].to_vec();
            // Garbage where the torrent has padding: it must not reach any file.
            for f in files.iter().filter(|f| f.attr.pad) {
                let (lo, hi) = (f.offset as usize, (f.offset + f.length) as usize);
                for (i, byte) in b.iter_mut().enumerate() {
                    if (lo..hi).contains(&(pos + i)) {
                        *byte = 0xff;
                    }
                }
            }
            bufs.push(b);
            pos += n;
        }
        let slices: Vec<&[u8]> = bufs.iter().map(Vec::as_slice).collect();
        s.write_vectored(start as u64, &slices)
            .expect("vectored write");
    }
    let mut all = vec![1u8; total];
    s.read(0, &mut all).expect("read all");
    assert!(all == data, "content differs");
    let hashes = piece_hashes(&g, &data);
    assert!(s.recheck(|p| Expected::sha1(hashes[p as usize])).is_full());
    // Empty buffers are fine; past the end is refused.
    s.write_vectored(5, &[&[], &data[5..6], &[]])
        .expect("with empty buffers");
    assert_eq!(
        s.write_vectored(g.total_len() - 1, &[&[0], &[0]])
            .map_err(|e| e.kind),
        Err(StorageErrorKind::OutOfRange)
    );
    // Pad files were never created.
    assert_eq!(tree(&dir.save()).len(), 9);
}

// ---------------------------------------------------------------- the state directory

mod state_dir {
    use super::Scratch;
    use btcore_core::bitfield::Bitfield;
    use btcore_core::metainfo::{Limits, Metainfo};
    use btcore_core::session::TorrentState;
    use btcore_host::client::{Client, ClientOptions, TorrentView};
    use btcore_host::create::{create_torrent, CreateOptions};
    use btcore_host::resume::{path_bytes, FileStamp, ResumeData};
    use btcore_host::storage::{Storage, StorageConfig};
    use std::fs;
    use std::net::SocketAddr;
    use std::path::Path;
    use std::time::{Duration, Instant};

    /// A client on 127.0.0.1; `seed` seeds its engine (and so its peer id).
    fn client(save: &Path, state: Option<&Path>, seed: u64) -> Client {
        Client::new(ClientOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            save_dir: save.to_path_buf(),
            state_dir: state.map(Path::to_path_buf),
            use_trackers: false,
            seed,
            ..ClientOptions::default()
        })
        .expect("client")
    }

    fn view(c: &Client) -> TorrentView {
        c.torrents().into_iter().next_back().expect("a torrent")
    }

    fn torrent(path: &Path, name: Option<&str>) -> Vec<u8> {
        create_torrent(
            path,
            &CreateOptions {
                piece_length: Some(16 * 1024),
                creation_date: Some(0),
                name: name.map(String::from),
                ..CreateOptions::default()
            },
        )
        .expect("torrent")
    }

    fn info_hash(t: &[u8]) -> btcore_core::ids::InfoHash {
        let mut tokens = Vec::new();
        Metainfo::parse_vec(t, &mut tokens, &Limits::default())
            .expect("torrent")
            .info_hash()
    }

    /// `victim.bin` (four pieces) and its torrent, under `dir`.
    fn victim(dir: &Path) -> Vec<u8> {
        fs::create_dir_all(dir).expect("dir");
        let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(dir.join("victim.bin"), data).expect("victim");
        torrent(&dir.join("victim.bin"), None)
    }

    /// Resume data claiming every piece of `t`, with `stamps` as the files' stamps.
    fn claim_all(t: &[u8], save: &Path, stamps: Vec<Option<FileStamp>>) -> Vec<u8> {
        let mut tokens = Vec::new();
        let m = Metainfo::parse_vec(t, &mut tokens, &Limits::default()).expect("torrent");
        let mut r = ResumeData::new(
            m.info_hash(),
            &Bitfield::full(m.num_pieces()),
            &path_bytes(save),
            0,
            0,
            None,
        );
        r.file_stamps = Some(stamps);
        r.encode()
    }

    /// The attack in full: a torrent named `.btcore` carries a resume file for another
    /// torrent; downloaded into OUTPUT with the state in OUTPUT/.btcore (the command's
    /// default), it would land in the state directory, and the other torrent would then
    /// start complete and "seed" with no file on disk.
    #[test]
    fn a_torrent_named_like_the_state_dir_cannot_plant_resume_data() {
        let dir = Scratch::new("plant");
        let t2 = victim(&dir.0.join("victim-src"));
        let out = dir.0.join("out");
        let state = out.join(".btcore");
        let planted = claim_all(&t2, &out, vec![None]);
        let name = ResumeData::file_name(&info_hash(&t2));
        let seed = dir.0.join("seed");
        fs::create_dir_all(seed.join(".btcore")).expect("seed dir");
        fs::write(seed.join(".btcore").join(&name), &planted).expect("planted");
        let t1 = torrent(&seed.join(".btcore"), Some(".btcore"));

        let end = Instant::now() + Duration::from_secs(30);
        let mut a = client(&seed, None, 1);
        a.add_torrent_file(&t1, None).expect("seed");
        while view(&a).status.state != TorrentState::Seeding {
            assert!(Instant::now() < end, "the seeder's check: {:?}", view(&a));
            a.run_once(Duration::from_millis(5)).expect("seeder loop");
        }
        let mut b = client(&out, Some(&state), 2);
        let id = b.add_torrent_file(&t1, None).expect("add");
        b.add_peer(id, a.local_addr());
        while view(&b).status.state != TorrentState::Seeding {
            assert!(Instant::now() < end, "no download: {:?}", view(&b));
            a.run_once(Duration::from_millis(5)).expect("seeder loop");
            b.run_once(Duration::from_millis(5)).expect("leecher loop");
        }
        b.shutdown();
        a.shutdown();

        assert!(
            !state.join(&name).exists(),
            "the torrent wrote {name} into the state directory"
        );
        let landed = out.join("_.btcore").join(&name);
        assert_eq!(fs::read(&landed).expect("saved as _.btcore"), planted);

        // Whatever the state directory holds, the other torrent has no data: it must
        // not start complete.
        fs::write(state.join(&name), &planted).expect("plant by hand");
        let mut c = client(&out, Some(&state), 3);
        c.add_torrent_file(&t2, None).expect("add the victim");
        let v = view(&c);
        assert_ne!(v.status.state, TorrentState::Seeding, "{v:?}");
        assert_eq!(v.status.pieces_have, 0, "{v:?}");
        c.shutdown();
    }

    /// A resume file whose stamps match the files on disk but which claims pieces the
    /// files are too short to hold is not trusted: what is there is checked.
    #[test]
    fn resume_claims_beyond_the_files_on_disk_are_checked() {
        let dir = Scratch::new("short");
        let src = dir.0.join("src");
        let t = victim(&src);
        let save = dir.0.join("save");
        let state = dir.0.join("state");
        fs::create_dir_all(&save).expect("save");
        fs::create_dir_all(&state).expect("state");
        // One piece of the four on disk, and its stamp as the storage reads it.
        let data = fs::read(src.join("victim.bin")).expect("data");
        fs::write(save.join("victim.bin"), &data[..16 * 1024]).expect("short file");
        let stamps = {
            let mut tokens = Vec::new();
            let m = Metainfo::parse_vec(&t, &mut tokens, &Limits::default()).expect("torrent");
            let s = Storage::new(
                &save,
                m.layout().expect("layout"),
                m.geometry(),
                StorageConfig::default(),
            )
            .expect("storage");
            s.stamps()
        };
        assert!(stamps[0].is_some());
        let name = ResumeData::file_name(&info_hash(&t));
        fs::write(state.join(&name), claim_all(&t, &save, stamps)).expect("resume");

        let mut c = client(&save, Some(&state), 4);
        c.add_torrent_file(&t, None).expect("add");
        let end = Instant::now() + Duration::from_secs(30);
        while view(&c).checking.is_some() {
            assert!(Instant::now() < end, "the check did not end");
            c.run_once(Duration::from_millis(10)).expect("loop");
        }
        let v = view(&c);
        assert_eq!(v.status.state, TorrentState::Downloading, "{v:?}");
        assert_eq!(
            v.status.pieces_have, 1,
            "the piece on disk, and only it: {v:?}"
        );
        c.shutdown();
    }

    /// Resume data saved without a data sync (`unsynced-boot-id`) is trusted within the
    /// boot that wrote it and checked after the system restarted: the files here hold
    /// zeros where the claim says every piece is, so a trusted claim starts seeding
    /// and a checked one finds nothing.
    #[test]
    fn an_unsynced_claim_holds_only_within_its_boot() {
        let Some(boot) = btcore_host::os::boot_id() else {
            eprintln!("no boot id on this system: every save syncs");
            return;
        };
        for (saved_in, want) in [(boot.to_vec(), 4), (b"another-boot".to_vec(), 0)] {
            let dir = Scratch::new("unsynced");
            let src = dir.0.join("src");
            let t = victim(&src);
            let save = dir.0.join("save");
            let state = dir.0.join("state");
            fs::create_dir_all(&save).expect("save");
            fs::create_dir_all(&state).expect("state");
            fs::write(save.join("victim.bin"), vec![0u8; 64 * 1024]).expect("zeros");
            let mut tokens = Vec::new();
            let m = Metainfo::parse_vec(&t, &mut tokens, &Limits::default()).expect("torrent");
            let stamps = Storage::new(
                &save,
                m.layout().expect("layout"),
                m.geometry(),
                StorageConfig::default(),
            )
            .expect("storage")
            .stamps();
            let mut r = ResumeData::decode(&claim_all(&t, &save, stamps)).expect("resume");
            r.unsynced_boot_id = Some(saved_in.clone());
            fs::write(
                state.join(ResumeData::file_name(&info_hash(&t))),
                r.encode(),
            )
            .expect("resume");

            let mut c = client(&save, Some(&state), 5);
            c.add_torrent_file(&t, None).expect("add");
            let end = Instant::now() + Duration::from_secs(30);
            while view(&c).checking.is_some() {
                assert!(Instant::now() < end, "the check did not end");
                c.run_once(Duration::from_millis(10)).expect("loop");
            }
            let v = view(&c);
            assert_eq!(
                v.status.pieces_have,
                want,
                "claim saved in boot {:?}: {v:?}",
                String::from_utf8_lossy(&saved_in)
            );
            c.shutdown();
        }
    }

    /// The state directory's name is reserved however a case-insensitive disk spells
    /// it, for a `--state-dir` deeper under the save directory too; when the state
    /// directory is the save directory, the names of its files are.
    #[test]
    fn the_state_dirs_name_is_reserved_in_every_spelling() {
        let dir = Scratch::new("reserved");
        let save = dir.0.join("save");
        fs::create_dir_all(save.join("Meta/state")).expect("dirs");
        let src = dir.0.join("src");
        fs::create_dir_all(src.join("x")).expect("src");
        fs::write(src.join("x/f.bin"), [1u8; 100]).expect("file");
        let cases = [
            (".btcore", ".BTCORE", "_.BTCORE/f.bin"),
            (".btcore", ".btcore. ", "_.btcore/f.bin"),
            ("Meta/state", "meta", "_meta/f.bin"),
            (".btcore", "other", "other/f.bin"),
        ];
        for (state, name, want) in cases {
            let t = torrent(&src.join("x"), Some(name));
            let mut tokens = Vec::new();
            let m = Metainfo::parse_vec(&t, &mut tokens, &Limits::default()).expect("torrent");
            let config = StorageConfig {
                state_dir: Some(save.join(state)),
                ..StorageConfig::default()
            };
            let s = Storage::new(&save, m.layout().expect("layout"), m.geometry(), config)
                .expect("storage");
            let got: Vec<&str> = s.files().map(|f| f.path.as_str()).collect();
            assert_eq!(got, [want], "state {state}, torrent {name:?}");
        }
        let hex = "0123456789abcdef0123456789ABCDEF01234567";
        let same = [
            (format!("{hex}.RESUME"), format!("_{hex}.RESUME/f.bin")),
            (
                format!("{hex}.resume.tmp"),
                format!("_{hex}.resume.tmp/f.bin"),
            ),
            ("DHT.state".to_string(), "_DHT.state/f.bin".to_string()),
            (".btcore".to_string(), ".btcore/f.bin".to_string()),
            (format!("{hex}.resumes"), format!("{hex}.resumes/f.bin")),
        ];
        for (name, want) in same {
            let t = torrent(&src.join("x"), Some(&name));
            let mut tokens = Vec::new();
            let m = Metainfo::parse_vec(&t, &mut tokens, &Limits::default()).expect("torrent");
            let config = StorageConfig {
                state_dir: Some(save.join(".")),
                ..StorageConfig::default()
            };
            let s = Storage::new(&save, m.layout().expect("layout"), m.geometry(), config)
                .expect("storage");
            let got: Vec<&str> = s.files().map(|f| f.path.as_str()).collect();
            assert_eq!(
                got,
                [want.as_str()],
                "state dir = save dir, torrent {name:?}"
            );
        }
    }
}
