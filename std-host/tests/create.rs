//! Torrent creation: the output parses, lists the files as they are on disk, every piece
//! verifies against the content, the bytes are deterministic whatever the thread count,
//! and libtorrent (when its Python binding is installed) reads the same info-hash.

use btcore_core::bencode::Dict;
use btcore_core::hash::Sha1;
use btcore_core::ids::PieceIndex;
use btcore_core::metainfo::{Limits, Metainfo};
use btcore_host::create::{
    create_torrent, create_torrent_with_progress, CreateError, CreateOptions,
};
use btcore_host::hash::FastSha1;
use btcore_tests::xorshift_bytes;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// A fresh, empty scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("create-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Deterministic pseudo-random content.
fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("parent dir");
    }
    std::fs::write(path, data).expect("write file");
}

fn fixed() -> CreateOptions {
    CreateOptions {
        creation_date: Some(1_700_000_000),
        ..CreateOptions::default()
    }
}

fn opts_with(piece_length: u32, threads: usize) -> CreateOptions {
    CreateOptions {
        piece_length: Some(piece_length),
        threads,
        ..fixed()
    }
}

/// What a created torrent says, checked against the content on disk.
#[derive(Debug, PartialEq)]
struct Seen {
    info_hash: String,
    files: Vec<(String, u64)>,
    num_pieces: u32,
    piece_length: u32,
    total: u64,
    multi: bool,
}

/// Parses `torrent`, reads the files back in `layout()` order from under `base` (the
/// directory holding the torrent's name) and checks every piece hash.
fn verify(torrent: &[u8], base: &Path) -> Seen {
    let mut tokens = Vec::new();
    let m = Metainfo::parse_vec(torrent, &mut tokens, &Limits::default()).expect("parses");
    let layout = m.layout().expect("layout");
    let mut all = Vec::new();
    for spec in &layout {
        let data = std::fs::read(base.join(&spec.path)).expect("read back");
        assert_eq!(data.len() as u64, spec.length, "{}", spec.path);
        assert_eq!(spec.offset, all.len() as u64);
        all.extend_from_slice(&data);
    }
    assert_eq!(all.len() as u64, m.total_size());
    let pl = m.piece_length() as usize;
    assert_eq!(all.len().div_ceil(pl), m.num_pieces() as usize);
    for (i, chunk) in all.chunks(pl).enumerate() {
        let want = m.piece_hash(PieceIndex(i as u32)).expect("hash");
        assert_eq!(&FastSha1::digest(chunk), want, "piece {i}");
    }
    Seen {
        info_hash: String::from_utf8(m.info_hash().to_hex().to_vec()).expect("hex"),
        files: layout.iter().map(|s| (s.path.clone(), s.length)).collect(),
        num_pieces: m.num_pieces(),
        piece_length: m.piece_length(),
        total: m.total_size(),
        multi: m.is_multi_file(),
    }
}

fn keys(d: Dict<'_>) -> Vec<String> {
    d.iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect()
}

fn assert_sorted(d: Dict<'_>) {
    let k: Vec<Vec<u8>> = d.iter().map(|(k, _)| k.to_vec()).collect();
    let mut s = k.clone();
    s.sort();
    assert_eq!(k, s, "keys in sorted order");
}

/// Compares with libtorrent's reading, when the Python binding is there.
fn agree_with_libtorrent(torrent: &[u8], seen: &Seen, dir: &Path) {
    let probe = Command::new("/usr/bin/python3")
        .args(["-c", "import libtorrent"])
        .output();
    if !matches!(probe, Ok(ref o) if o.status.success()) {
        println!("skipped: python3-libtorrent is not available");
        return;
    }
    let file = dir.join("out.torrent");
    std::fs::write(&file, torrent).expect("write torrent");
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import libtorrent as lt,sys; ti=lt.torrent_info(sys.argv[1]); \
             print(ti.info_hash(), ti.num_files(), ti.num_pieces(), ti.total_size())",
        ])
        .arg(&file)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "libtorrent refused it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let want = format!(
        "{} {} {} {}",
        seen.info_hash,
        seen.files.len(),
        seen.num_pieces,
        seen.total
    );
    assert_eq!(got, want);
}

#[test]
fn single_files_of_edge_sizes() {
    let dir = scratch("single");
    const PL: u32 = 16 << 10;
    for (len, pieces) in [(1usize, 1u32), (PL as usize, 1), (PL as usize + 1, 2)] {
        let path = dir.join(format!("file-{len}.bin"));
        write(&path, &xorshift_bytes(len as u64, len));
        let t = create_torrent(&path, &opts_with(PL, 0)).expect("created");
        let seen = verify(&t, &dir);
        assert!(!seen.multi);
        assert_eq!(seen.files, vec![(format!("file-{len}.bin"), len as u64)]);
        assert_eq!((seen.num_pieces, seen.piece_length), (pieces, PL));
        agree_with_libtorrent(&t, &seen, &dir);
    }
    // Automatic piece length: a small file takes 16 KiB pieces.
    let path = dir.join("auto.bin");
    write(&path, &xorshift_bytes(9, 100_000));
    let t = create_torrent(&path, &fixed()).expect("created");
    let seen = verify(&t, &dir);
    assert_eq!((seen.piece_length, seen.num_pieces), (16 << 10, 7));
}

/// A tree with nested folders, empty files, a hidden file and many small files.
fn make_tree(root: &Path) -> Vec<(String, u64)> {
    let mut files = vec![
        ("a.txt".to_string(), 5000usize),
        ("sub/deeper/deepest/x.bin".into(), 40_000),
        ("sub/empty.dat".into(), 0),
        ("sub/z.bin".into(), 16 << 10),
        (".hidden".into(), 123),
        ("zero".into(), 0),
        ("a/b.txt".into(), 777),
    ];
    for i in 0..150 {
        files.push((format!("many/f{i:03}"), (i * 37) % 300));
    }
    for (i, (p, len)) in files.iter().enumerate() {
        write(&root.join(p), &xorshift_bytes(i as u64 + 100, *len));
    }
    std::fs::create_dir_all(root.join("empty-dir/inner")).expect("dir");
    let name = root.file_name().and_then(|n| n.to_str()).expect("name");
    let mut want: Vec<(Vec<String>, u64)> = files
        .iter()
        .map(|(p, l)| (p.split('/').map(String::from).collect(), *l as u64))
        .collect();
    want.sort();
    want.into_iter()
        .map(|(p, l)| (format!("{name}/{}", p.join("/")), l))
        .collect()
}

#[test]
fn multi_file_tree() {
    let dir = scratch("multi");
    let root = dir.join("tree");
    let want = make_tree(&root);
    let t = create_torrent(&root, &opts_with(16 << 10, 3)).expect("created");
    let seen = verify(&t, &dir);
    assert!(seen.multi);
    assert_eq!(seen.files, want);
    // Ordered element by element: `a/b.txt` before `a.txt`, hidden file first.
    assert_eq!(seen.files[0].0, "tree/.hidden");
    assert_eq!(seen.files[1].0, "tree/a/b.txt");
    assert_eq!(seen.files[2].0, "tree/a.txt");
    agree_with_libtorrent(&t, &seen, &dir);

    // Automatic piece length over the same tree.
    let t = create_torrent(&root, &fixed()).expect("created");
    let seen = verify(&t, &dir);
    assert_eq!(seen.piece_length, 16 << 10);
    agree_with_libtorrent(&t, &seen, &dir);
}

#[test]
fn output_is_canonical_and_deterministic() {
    let dir = scratch("determinism");
    let one = dir.join("one");
    let two = dir.join("two");
    make_tree(&one);
    // The same files written in another order.
    let mut listing: Vec<PathBuf> = Vec::new();
    fn collect(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                collect(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    collect(&one, &mut listing);
    listing.sort();
    for p in listing.iter().rev() {
        let rel = p.strip_prefix(&one).expect("under one");
        write(&two.join(rel), &std::fs::read(p).expect("read"));
    }
    let opts = CreateOptions {
        name: Some("same".into()),
        trackers: vec![vec!["http://t/a".into()], vec!["udp://t:1".into()]],
        web_seeds: vec!["http://seed/".into()],
        comment: Some("hi".into()),
        ..opts_with(16 << 10, 2)
    };
    let a = create_torrent(&one, &opts).expect("created");
    let b = create_torrent(&one, &opts).expect("created");
    let c = create_torrent(&two, &opts).expect("created");
    assert_eq!(a, b);
    assert_eq!(a, c);

    let mut tokens = Vec::new();
    let m = Metainfo::parse_vec(&a, &mut tokens, &Limits::default()).expect("parses");
    assert_eq!(
        keys(m.root()),
        [
            "announce",
            "announce-list",
            "comment",
            "created by",
            "creation date",
            "info",
            "url-list"
        ]
    );
    assert_sorted(m.root());
    assert_eq!(keys(m.info()), ["files", "name", "piece length", "pieces"]);
    for f in m.info().get_list(b"files").expect("files").iter() {
        assert_eq!(keys(f.as_dict().expect("dict")), ["length", "path"]);
    }
    assert_eq!(m.name(), b"same");
    assert_eq!(m.creation_date(), Some(1_700_000_000));
}

#[test]
fn thread_counts_agree() {
    let dir = scratch("threads");
    let root = dir.join("t");
    // 13 pieces of 16 KiB and a short last one, spread over uneven files.
    for (i, len) in [70_000usize, 1, 0, 90_000, 50_000].iter().enumerate() {
        write(&root.join(format!("f{i}")), &xorshift_bytes(i as u64, *len));
    }
    let one = create_torrent(&root, &opts_with(16 << 10, 1)).expect("created");
    verify(&one, &dir);
    for threads in [2, 4, 7, 64] {
        let t = create_torrent(&root, &opts_with(16 << 10, threads)).expect("created");
        assert_eq!(t, one, "{threads} threads");
    }
    let auto = create_torrent(&root, &opts_with(16 << 10, 0)).expect("created");
    assert_eq!(auto, one);
}

#[test]
fn large_pieces_read_in_several_buffers() {
    // A piece larger than the read buffer is hashed across several reads.
    let dir = scratch("large");
    let root = dir.join("big");
    write(&root.join("a"), &xorshift_bytes(1, 3 << 20));
    write(&root.join("b"), &xorshift_bytes(2, (6 << 20) + 5));
    let t1 = create_torrent(&root, &opts_with(8 << 20, 1)).expect("created");
    let seen = verify(&t1, &dir);
    assert_eq!(seen.num_pieces, 2);
    let t2 = create_torrent(&root, &opts_with(8 << 20, 2)).expect("created");
    assert_eq!(t1, t2);
}

#[test]
fn private_flag() {
    let dir = scratch("private");
    let path = dir.join("f");
    write(&path, b"hello");
    let public = create_torrent(&path, &fixed()).expect("created");
    let private = create_torrent(
        &path,
        &CreateOptions {
            private: true,
            ..fixed()
        },
    )
    .expect("created");
    let (mut t1, mut t2) = (Vec::new(), Vec::new());
    let p = Metainfo::parse_vec(&public, &mut t1, &Limits::default()).expect("parses");
    let q = Metainfo::parse_vec(&private, &mut t2, &Limits::default()).expect("parses");
    assert!(!p.is_private());
    assert!(q.is_private());
    assert_eq!(
        keys(q.info()),
        ["length", "name", "piece length", "pieces", "private"]
    );
    assert_ne!(p.info_hash(), q.info_hash());
    let seen = verify(&private, &dir);
    agree_with_libtorrent(&private, &seen, &dir);
}

#[test]
fn trackers_web_seeds_and_defaults() {
    let dir = scratch("trackers");
    let path = dir.join("f");
    write(&path, b"data");

    // One tracker: `announce` only.
    let t = create_torrent(
        &path,
        &CreateOptions {
            trackers: vec![vec!["http://one/announce".into()], vec![]],
            ..fixed()
        },
    )
    .expect("created");
    let mut tok = Vec::new();
    let m = Metainfo::parse_vec(&t, &mut tok, &Limits::default()).expect("parses");
    assert_eq!(m.announce(), Some(&b"http://one/announce"[..]));
    assert!(m.root().get(b"announce-list").is_none());
    assert!(m.root().get(b"url-list").is_none());
    assert!(m.root().get(b"comment").is_none());
    let by = String::from_utf8_lossy(m.created_by().expect("created by")).into_owned();
    assert!(by.starts_with("btcore "), "{by}");

    // Tiers: `announce` is the first tracker, `announce-list` keeps the tiers.
    let t = create_torrent(
        &path,
        &CreateOptions {
            trackers: vec![
                vec!["http://a/1".into(), "http://a/2".into()],
                vec![String::new()],
                vec!["udp://b:80".into()],
            ],
            web_seeds: vec!["http://s1/".into(), "http://s2/".into()],
            comment: Some("a comment".into()),
            created_by: Some("me".into()),
            ..fixed()
        },
    )
    .expect("created");
    let mut tok = Vec::new();
    let m = Metainfo::parse_vec(&t, &mut tok, &Limits::default()).expect("parses");
    assert_eq!(m.announce(), Some(&b"http://a/1"[..]));
    let tiers: Vec<Vec<&[u8]>> = m.announce_tiers().map(|t| t.collect()).collect();
    assert_eq!(
        tiers,
        vec![
            vec![&b"http://a/1"[..], &b"http://a/2"[..]],
            vec![&b"udp://b:80"[..]]
        ]
    );
    let seeds: Vec<&[u8]> = m.url_list().collect();
    assert_eq!(seeds, [&b"http://s1/"[..], &b"http://s2/"[..]]);
    assert_eq!(m.comment(), Some(&b"a comment"[..]));
    assert_eq!(m.created_by(), Some(&b"me"[..]));
    assert_sorted(m.root());

    // No fixed date: now.
    let t = create_torrent(&path, &CreateOptions::default()).expect("created");
    let mut tok = Vec::new();
    let m = Metainfo::parse_vec(&t, &mut tok, &Limits::default()).expect("parses");
    assert!(m.creation_date().expect("date") > 1_700_000_000);
}

#[test]
fn progress_reaches_the_total() {
    let dir = scratch("progress");
    let root = dir.join("p");
    write(&root.join("a"), &xorshift_bytes(1, 300_000));
    write(&root.join("b"), &xorshift_bytes(2, 123_457));
    let calls = Mutex::new(Vec::new());
    let cb = |done: u64, total: u64| calls.lock().expect("lock").push((done, total));
    create_torrent_with_progress(&root, &opts_with(16 << 10, 3), Some(&cb)).expect("created");
    let calls = calls.into_inner().expect("lock");
    assert!(!calls.is_empty());
    assert!(calls.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(calls.iter().all(|&(_, t)| t == 423_457));
    assert_eq!(calls.last(), Some(&(423_457, 423_457)));
}

#[cfg(unix)]
#[test]
fn symlinks_are_skipped() {
    let dir = scratch("symlinks");
    let root = dir.join("s");
    write(&root.join("real"), b"real content");
    write(&dir.join("outside"), b"outside content");
    std::os::unix::fs::symlink(dir.join("outside"), root.join("link")).expect("symlink");
    std::os::unix::fs::symlink(&root, root.join("loop")).expect("symlink");
    let t = create_torrent(&root, &fixed()).expect("created");
    let seen = verify(&t, &dir);
    assert_eq!(seen.files, vec![("s/real".to_string(), 12)]);
    // The path given may itself be a link; it is followed.
    let t = create_torrent(&root.join("link"), &fixed()).expect("created");
    let seen = verify(&t, &root);
    assert_eq!(seen.files, vec![("link".to_string(), 15)]);
}

#[test]
fn refusals() {
    let dir = scratch("refusals");
    let empty = dir.join("empty");
    std::fs::create_dir_all(empty.join("nested")).expect("dir");
    let e = create_torrent(&empty, &fixed()).expect_err("empty dir");
    assert!(matches!(e, CreateError::Empty(_)), "{e}");
    assert!(e.to_string().contains("nothing to share"), "{e}");

    let zeros = dir.join("zeros");
    write(&zeros.join("a"), b"");
    write(&zeros.join("b/c"), b"");
    assert!(matches!(
        create_torrent(&zeros, &fixed()),
        Err(CreateError::Empty(_))
    ));
    assert!(matches!(
        create_torrent(&zeros.join("a"), &fixed()),
        Err(CreateError::Empty(_))
    ));

    let missing = dir.join("missing");
    let e = create_torrent(&missing, &fixed()).expect_err("missing");
    assert!(matches!(e, CreateError::Io { ref path, .. } if path == &missing));
    assert!(e.to_string().contains("missing"), "{e}");

    let file = dir.join("f");
    write(&file, b"x");
    for bad in [0, 1000, (16 << 10) | 1, 8 << 10, 2 << 30] {
        assert!(
            matches!(
                create_torrent(&file, &opts_with(bad, 1)),
                Err(CreateError::BadPieceLength(n)) if n == bad
            ),
            "{bad}"
        );
    }
    for bad in ["", ".", "..", "a/b"] {
        let o = CreateOptions {
            name: Some(bad.into()),
            ..fixed()
        };
        assert!(
            matches!(create_torrent(&file, &o), Err(CreateError::BadName(_))),
            "{bad:?}"
        );
    }
}

#[cfg(target_os = "linux")]
#[test]
fn non_utf8_names_are_refused() {
    use std::os::unix::ffi::OsStrExt;
    let dir = scratch("nonutf8");
    let root = dir.join("n");
    let bad = root.join(std::ffi::OsStr::from_bytes(b"bad\xff"));
    write(&bad, b"x");
    assert!(matches!(
        create_torrent(&root, &fixed()),
        Err(CreateError::BadName(p)) if p == bad
    ));
}

#[test]
fn name_of_dot_is_the_directory_name() {
    let dir = scratch("dot");
    let root = dir.join("named");
    write(&root.join("f"), b"abc");
    write(&root.join("sub/g"), b"defg");
    // `named/.` has the file name `named`; `named/sub/..` has none and is resolved.
    for p in [root.join("."), root.join("sub/..")] {
        let t = create_torrent(&p, &fixed()).expect("created");
        let mut tok = Vec::new();
        let m = Metainfo::parse_vec(&t, &mut tok, &Limits::default()).expect("parses");
        assert_eq!(m.name(), b"named", "{}", p.display());
        assert_eq!(m.num_files(), 2);
    }
}
