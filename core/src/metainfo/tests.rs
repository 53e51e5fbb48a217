extern crate std;

use super::*;
use crate::bencode::Encoder;
use std::string::String;
use std::vec::Vec;

/// A multi-file torrent over `files` (path elements, length), with zeroed hashes.
fn multi(name: &[u8], files: &[(&[&[u8]], u64)], piece_len: u64) -> Vec<u8> {
    let total: u64 = files.iter().map(|f| f.1).sum();
    let pieces = total.div_ceil(piece_len) as usize;
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out);
    e.dict().expect("vec");
    e.key_bytes(b"announce", b"http://t1/announce")
        .expect("vec");
    e.bytes(b"announce-list").expect("vec");
    e.list().expect("vec");
    for tier in [
        &[&b"http://t1/announce"[..], b"udp://t2:80"][..],
        &[b"http://t3/a"],
    ] {
        e.list().expect("vec");
        for t in tier {
            e.bytes(t).expect("vec");
        }
        e.end().expect("vec");
    }
    e.end().expect("vec");
    e.key_bytes(b"comment", b"hello").expect("vec");
    e.key_int(b"creation date", 1_700_000_000).expect("vec");
    e.bytes(b"info").expect("vec");
    e.dict().expect("vec");
    e.bytes(b"files").expect("vec");
    e.list().expect("vec");
    for (path, len) in files {
        e.dict().expect("vec");
        e.key_int(b"length", *len as i64).expect("vec");
        e.bytes(b"path").expect("vec");
        e.list().expect("vec");
        for p in *path {
            e.bytes(p).expect("vec");
        }
        e.end().expect("vec");
        e.end().expect("vec");
    }
    e.end().expect("vec");
    e.key_bytes(b"name", name).expect("vec");
    e.key_int(b"piece length", piece_len as i64).expect("vec");
    e.key_bytes(b"pieces", &std::vec![0xab; pieces * 20])
        .expect("vec");
    e.key_int(b"private", 1).expect("vec");
    e.end().expect("vec");
    e.key_bytes(b"url-list", b"http://seed/").expect("vec");
    e.end().expect("vec");
    out
}

#[test]
fn multi_file_fields_and_offsets() {
    let t = multi(
        b"album",
        &[(&[b"a", b"1.flac"], 40_000), (&[b"2.flac"], 30_000)],
        32_768,
    );
    let mut toks = Vec::new();
    let m = Metainfo::parse_vec(&t, &mut toks, &Limits::default()).expect("loads");
    assert_eq!(m.name(), b"album");
    assert_eq!(
        (m.total_size(), m.num_pieces(), m.num_files()),
        (70_000, 3, 2)
    );
    assert!(m.is_multi_file() && m.is_private() && !m.is_hybrid());
    let files: Vec<_> = m.files().map(|f| (f.offset, f.length)).collect();
    assert_eq!(files, [(0, 40_000), (40_000, 30_000)]);
    let trackers: Vec<_> = m.trackers().collect();
    assert_eq!(
        trackers,
        [&b"http://t1/announce"[..], b"udp://t2:80", b"http://t3/a"]
    );
    assert_eq!(m.announce_tiers().count(), 2);
    assert_eq!(m.url_list().collect::<Vec<_>>(), [&b"http://seed/"[..]]);
    assert_eq!(m.creation_date(), Some(1_700_000_000));
    assert_eq!(m.comment(), Some(&b"hello"[..]));
    assert_eq!(m.piece_hash(PieceIndex(2)), Some(&[0xab; 20]));
    assert_eq!(m.piece_hash(PieceIndex(3)), None);
    // The info-hash is over the raw info span.
    let start = t.windows(6).position(|w| w == b"4:info").expect("info") + 6;
    assert_eq!(m.info_bytes(), &t[start..t.len() - 26]);
    assert_eq!(m.info_hash().0, sha1(m.info_bytes()));
    let mut buf = [0u8; 64];
    let first = m.files().next().expect("file");
    assert_eq!(first.write_path(&mut buf), Ok("album/a/1.flac"));
}

#[test]
fn hostile_paths_are_sanitized_and_deduplicated() {
    let t = multi(
        b"x",
        &[
            (&[b"..", b"..", b"etc", b"passwd"], 10),
            (&[b"etc", b"passwd"], 10),
            (&[b"ETC", b"PASSWD"], 10),
            (&[b"etc"], 10),
            (&[b"/abs"], 10),
            (&[b"", b""], 10),
        ],
        16_384,
    );
    let mut toks = Vec::new();
    let m = Metainfo::parse_vec(&t, &mut toks, &Limits::default()).expect("loads");
    let paths: Vec<String> = m
        .layout()
        .expect("layout")
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(
        paths,
        [
            "x/etc/passwd",
            "x/etc/passwd.1",
            "x/ETC/PASSWD.2",
            "x/etc.1",
            "x/_abs",
            "x/_"
        ]
    );
}

#[test]
fn duplicate_renames_are_bounded() {
    const F: &[&[u8]] = &[b"f.txt"];
    let same: Vec<(&[&[u8]], u64)> = (0..40).map(|_| (F, 1)).collect();
    let t = multi(b"d", &same, 16_384);
    let mut toks = Vec::new();
    let m = Metainfo::parse_vec(&t, &mut toks, &Limits::default()).expect("loads");
    assert_eq!(m.layout().expect("within budget").len(), 40);
    let tight = LayoutLimits {
        max_duplicate_renames: 100,
    };
    assert_eq!(
        m.layout_with(&tight).expect_err("over budget").kind,
        ErrorKind::TooManyDuplicateFilenames
    );
}

#[test]
fn refusals_name_the_cause_and_place() {
    let cases: &[(&[u8], ErrorKind, usize)] = &[
        (b"le", ErrorKind::NotADict, 0),
        (b"d4:infoi1ee", ErrorKind::MissingInfo, 7),
        (b"d4:infod6:lengthi5e12:piece lengthi0eee", ErrorKind::MissingName, 7),
        (
            b"d4:infod6:lengthi5e4:name1:a12:piece lengthi0eee",
            ErrorKind::InvalidPieceLength,
            43,
        ),
        (
            b"d4:infod6:lengthi-5e4:name1:a12:piece lengthi16eee",
            ErrorKind::InvalidLength,
            16,
        ),
        (b"d4:infod6:lengthi5e4:name1:a12:piece lengthi16eee", ErrorKind::MissingPieces, 7),
        (
            b"d4:infod6:lengthi5e4:name1:a12:piece lengthi16e6:pieces3:abcee",
            ErrorKind::InvalidHashes,
            55,
        ),
        (
            b"d4:infod9:file treed1:ad0:d6:lengthi1eeee12:meta versioni2e4:name1:a12:piece lengthi16eee",
            ErrorKind::InvalidPieceLength,
            83,
        ),
        (
            b"d4:infod9:file treed1:ad0:d6:lengthi1eeee12:meta versioni2e4:name1:a12:piece lengthi16384eee",
            ErrorKind::MissingPiecesRoot,
            26,
        ),
        (b"d4:infod5:filesle4:name1:a12:piece lengthi16eee", ErrorKind::NoFiles, 15),
    ];
    for (input, kind, offset) in cases {
        let mut toks = Vec::new();
        let e = Metainfo::parse_vec(input, &mut toks, &Limits::default()).expect_err("refused");
        assert_eq!(
            (e.kind, e.offset),
            (*kind, *offset),
            "{}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn limits_are_configuration() {
    let t = multi(b"a", &[(&[b"f"], 100_000)], 16_384);
    let mut toks = Vec::new();
    let few = Limits {
        max_pieces: 4,
        ..Limits::default()
    };
    assert_eq!(
        Metainfo::parse_vec(&t, &mut toks, &few)
            .expect_err("pieces")
            .kind,
        ErrorKind::TooManyPieces
    );
    let mut small = [Token::default(); 8];
    assert!(matches!(
        Metainfo::parse(&t, &mut small, &Limits::default())
            .expect_err("tokens")
            .kind,
        ErrorKind::Bencode(crate::bencode::ErrorKind::TooManyTokens)
    ));
    let mut enough = [Token::default(); 64];
    assert!(Metainfo::parse(&t, &mut enough, &Limits::default()).is_ok());
}

/// A name as Windows, SMB, macOS or ext4 with casefolding would file it: trailing
/// dots and spaces dropped, NFD, case folded (the reference crate's NFD, and Rust's
/// case mappings, not the code under test).
fn disk_name(elem: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let trimmed = elem.trim_end_matches(['.', ' ']);
    let folded: String = trimmed
        .nfd()
        .flat_map(char::to_lowercase)
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect();
    folded.nfd().collect()
}

/// Whether Windows takes `elem` for a device.
fn is_device(elem: &str) -> bool {
    let stem = elem.split('.').next().unwrap_or_default().trim_end();
    let up = stem.to_uppercase();
    ["CON", "PRN", "AUX", "NUL", "CLOCK$", "CONIN$", "CONOUT$"].contains(&up.as_str())
        || ((up.starts_with("COM") || up.starts_with("LPT"))
            && up.chars().count() == 4
            && up
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_digit() || "¹²³".contains(c)))
}

/// Every path is a distinct file on such a disk, no file takes a directory's place,
/// and no element is a device.
fn assert_distinct_on_disk(paths: &[String]) {
    let mut files = std::collections::BTreeSet::new();
    let mut dirs = std::collections::BTreeSet::new();
    for p in paths {
        let elems: Vec<String> = p.split('/').map(disk_name).collect();
        for e in p.split('/') {
            assert!(!is_device(e), "{p:?}: {e:?} is a device on Windows");
            assert_eq!(
                e,
                e.trim_end_matches(['.', ' ']),
                "{p:?}: trailing dot or space"
            );
        }
        for i in 1..elems.len() {
            dirs.insert(elems[..i].join("/"));
        }
        assert!(
            files.insert(elems.join("/")),
            "{p:?} is another file's path on disk"
        );
    }
    if let Some(clash) = files.iter().find(|f| dirs.contains(*f)) {
        panic!("a file takes a directory's place: {clash:?}");
    }
}

#[test]
fn names_one_file_on_case_insensitive_disks_are_told_apart() {
    let cases: &[(&[&[u8]], u64)] = &[
        (&["Äpfel.txt".as_bytes()], 1),
        (&["äPFEL.TXT".as_bytes()], 1),
        // NFC and NFD of one name.
        (&["caf\u{e9}.txt".as_bytes()], 1),
        (&["cafe\u{301}.txt".as_bytes()], 1),
        (&["CAFE\u{301}.TXT".as_bytes()], 1),
        // Unicode case: the Kelvin sign, final sigma, sharp s.
        (&["\u{212a}elvin".as_bytes()], 1),
        (&[b"kelvin"], 1),
        (&["ΟΔΟΣ".as_bytes()], 1),
        (&["οδος".as_bytes()], 1),
        (&["οδοσ".as_bytes()], 1),
        (&["straße".as_bytes()], 1),
        (&["STRASSE".as_bytes()], 1),
        // Trailing dots and spaces.
        (&[b"notes"], 1),
        (&[b"notes."], 1),
        (&[b"notes "], 1),
        (&[b"notes. ."], 1),
        // Devices, and a name that is what a device is renamed to.
        (&[b"CONIN$"], 1),
        (&[b"conout$.log"], 1),
        (&[b"nul.tar.gz"], 1),
        (&["COM¹".as_bytes()], 1),
        (&[b"lpt0"], 1),
        (&[b"CON ", b"x"], 1),
        (&[b"_con", b"x"], 1),
        // A file on a directory's path, in another case.
        (&["Ünder".as_bytes()], 1),
        (&["u\u{308}nder".as_bytes(), b"leaf"], 1),
        (&["u\u{308}nder.".as_bytes(), b"leaf"], 1),
    ];
    let t = multi(b"t", cases, 16_384);
    let mut toks = Vec::new();
    let m = Metainfo::parse_vec(&t, &mut toks, &Limits::default()).expect("loads");
    let paths: Vec<String> = m
        .layout()
        .expect("layout")
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_distinct_on_disk(&paths);
    // The first of each group keeps its name (libtorrent's rule), later ones are
    // numbered; devices get a `_` in front.
    assert_eq!(paths[0], "t/Äpfel.txt");
    assert_eq!(paths[1], "t/äPFEL.1.TXT");
    assert_eq!(paths[2], "t/caf\u{e9}.txt");
    assert_eq!(paths[3], "t/cafe\u{301}.1.txt");
    assert_eq!(paths[12], "t/notes");
    assert_eq!(paths[13], "t/notes.1");
    assert_eq!(paths[16], "t/_CONIN$");
    assert_eq!(paths[18], "t/_nul.tar.gz");
    assert_eq!(paths[21], "t/_CON/x");
    assert_eq!(paths[22], "t/_con/x.1");
    assert_eq!(
        paths[23], "t/Ünder.1",
        "a file on a directory's path is renamed"
    );
    assert_eq!(paths[24], "t/u\u{308}nder/leaf");
    assert_eq!(paths[25], "t/u\u{308}nder/leaf.1");
}

#[test]
fn total_path_bytes_are_bounded_before_layout() {
    let name = [b'n'; 300];
    const F: &[&[u8]] = &[b"f"];
    let files: Vec<(&[&[u8]], u64)> = (0..100).map(|_| (F, 1)).collect();
    let t = multi(&name, &files, 16_384);
    let mut toks = Vec::new();
    // Each path counts the name (cut to 255) once more.
    let tight = Limits {
        max_total_path_bytes: 100 * 255,
        ..Limits::default()
    };
    assert_eq!(
        Metainfo::parse_vec(&t, &mut toks, &tight)
            .expect_err("over the bound")
            .kind,
        ErrorKind::PathsTooLong
    );
    let mut toks = Vec::new();
    let enough = Limits {
        max_total_path_bytes: 100 * 300,
        ..Limits::default()
    };
    assert!(Metainfo::parse_vec(&t, &mut toks, &enough).is_ok());
}

/// A v2-only torrent of `files` (path under the torrent's directory, content), in the
/// order given (sorted unless a test wants otherwise); `layers` is written as given.
fn v2_torrent(
    files: &[(&[&[u8]], &[u8])],
    piece_len: u32,
    layers: &[([u8; 32], Vec<u8>)],
    attr: Option<&[u8]>,
) -> Vec<u8> {
    fn node(
        e: &mut Encoder<&mut Vec<u8>>,
        files: &[(&[&[u8]], &[u8])],
        depth: usize,
        pl: u32,
        attr: Option<&[u8]>,
    ) {
        e.dict().expect("vec");
        let mut i = 0;
        while i < files.len() {
            let key = files[i].0[depth];
            let mut j = i + 1;
            while j < files.len() && files[j].0.get(depth) == Some(&key) {
                j += 1;
            }
            e.bytes(key).expect("vec");
            if files[i].0.len() == depth + 1 {
                let data = files[i].1;
                e.dict().expect("vec");
                e.bytes(b"").expect("vec");
                e.dict().expect("vec");
                if let Some(a) = attr {
                    e.key_bytes(b"attr", a).expect("vec");
                }
                e.key_int(b"length", data.len() as i64).expect("vec");
                if let (Some(root), _) = crate::merkle::file_tree(data, pl) {
                    e.key_bytes(b"pieces root", &root).expect("vec");
                }
                e.end().expect("vec");
                e.end().expect("vec");
            } else {
                node(e, &files[i..j], depth + 1, pl, attr);
            }
            i = j;
        }
        e.end().expect("vec");
    }
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out);
    e.dict().expect("vec");
    e.bytes(b"info").expect("vec");
    e.dict().expect("vec");
    e.bytes(b"file tree").expect("vec");
    node(&mut e, files, 0, piece_len, attr);
    e.key_int(b"meta version", 2).expect("vec");
    e.key_bytes(b"name", b"v2").expect("vec");
    e.key_int(b"piece length", i64::from(piece_len))
        .expect("vec");
    e.end().expect("vec");
    e.bytes(b"piece layers").expect("vec");
    e.dict().expect("vec");
    for (root, layer) in layers {
        e.key_bytes(root, layer).expect("vec");
    }
    e.end().expect("vec");
    e.end().expect("vec");
    out
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

#[test]
fn v2_only_torrents_parse_with_implicit_pads() {
    let pl = 16_384;
    let big = data(3 * 16_384 + 100, 1);
    let small = data(700, 2);
    let (root, layer) = crate::merkle::file_tree(&big, pl);
    let root = root.expect("root");
    let files: &[(&[&[u8]], &[u8])] = &[
        (&[b"a", b"big.bin"], &big),
        (&[b"a", b"empty"], b""),
        (&[b"z.txt"], &small),
    ];
    let t = v2_torrent(files, pl, &[(root, layer.clone())], None);
    let mut toks = Vec::new();
    let m = Metainfo::parse_vec(&t, &mut toks, &Limits::default()).expect("loads");
    assert!(m.is_v2_only() && !m.is_hybrid() && m.meta_version() == MetaVersion::V2);
    assert_eq!(m.info_hash_v2(), Some(sha256(m.info_bytes())));
    assert_eq!(m.info_hash_v1(), None);
    assert_eq!(m.info_hash().0[..], sha256(m.info_bytes())[..20]);
    assert_eq!(m.info_hash_v2_truncated(), Some(m.info_hash()));
    // big (4 pieces, a pad), empty, small (1 piece, a pad): 5 pieces, 5 entries.
    assert_eq!(
        (m.num_pieces(), m.num_files(), m.total_size()),
        (5, 5, 5 * 16_384)
    );
    let mut buf = [0u8; 64];
    let listed: Vec<(u64, u64, bool, String)> = m
        .files()
        .map(|f| {
            let p = if f.attr.pad {
                String::new()
            } else {
                String::from(f.write_path(&mut buf).expect("fits"))
            };
            (f.offset, f.length, f.attr.pad, p)
        })
        .collect();
    assert_eq!(
        listed,
        [
            (0, big.len() as u64, false, "v2/a/big.bin".into()),
            (
                big.len() as u64,
                4 * 16_384 - big.len() as u64,
                true,
                String::new()
            ),
            (4 * 16_384, 0, false, "v2/a/empty".into()),
            (4 * 16_384, 700, false, "v2/z.txt".into()),
            (4 * 16_384 + 700, 16_384 - 700, true, String::new()),
        ]
    );
    let roots: Vec<_> = m.files().map(|f| f.pieces_root().copied()).collect();
    assert_eq!(roots[0], Some(root));
    assert_eq!(roots[2], None, "an empty file has no root");
    assert_eq!(m.piece_layer(&root), Some(&layer[..]));
    assert_eq!(m.num_piece_layers(), 1);
    let layout: Vec<_> = m
        .layout()
        .expect("layout")
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(layout, ["v2/a/big.bin", "", "v2/a/empty", "v2/z.txt", ""]);
    // A layer is optional (it can come from peers).
    let t = v2_torrent(files, pl, &[], None);
    assert!(Metainfo::parse_vec(&t, &mut Vec::new(), &Limits::default()).is_ok());
}

#[test]
fn v2_refusals_name_the_cause() {
    let pl = 16_384;
    let big = data(2 * 16_384 + 1, 3);
    let big2 = data(5 * 16_384, 4);
    let (root, layer) = crate::merkle::file_tree(&big, pl);
    let root = root.expect("root");
    let one: &[(&[&[u8]], &[u8])] = &[(&[b"f"], &big)];
    let kind = |t: Vec<u8>| {
        Metainfo::parse_vec(&t, &mut Vec::new(), &Limits::default())
            .map(|_| ())
            .expect_err("refused")
            .kind
    };
    let mut bad = layer.clone();
    bad[40] ^= 1;
    assert_eq!(
        kind(v2_torrent(one, pl, &[(root, bad)], None)),
        ErrorKind::InvalidPieceLayer
    );
    // A layer no file owns, even if it hashes up to its key.
    let (root2, layer2) = crate::merkle::file_tree(&big2, pl);
    let stray = [(root, layer.clone()), (root2.expect("root"), layer2)];
    assert_eq!(
        kind(v2_torrent(one, pl, &stray, None)),
        ErrorKind::InvalidPieceLayer
    );
    // Unsorted keys in the file tree.
    let unsorted: &[(&[&[u8]], &[u8])] = &[(&[b"b"], b"x"), (&[b"a"], b"y")];
    assert_eq!(
        kind(v2_torrent(unsorted, pl, &[], None)),
        ErrorKind::InvalidFileTree
    );
    // Pad files are implicit in v2.
    assert_eq!(
        kind(v2_torrent(one, pl, &[], Some(b"p"))),
        ErrorKind::InvalidPadFile
    );
    // Piece length: a power of two, at least 16 KiB.
    assert_eq!(
        kind(v2_torrent(one, 3 * 16_384, &[], None)),
        ErrorKind::InvalidPieceLength
    );
    assert_eq!(
        kind(v2_torrent(one, 8_192, &[], None)),
        ErrorKind::InvalidPieceLength
    );
    // A non-empty file needs a non-zero root.
    let t = v2_torrent(one, pl, &[], None);
    let at = t
        .windows(11)
        .position(|w| w == b"pieces root")
        .expect("root")
        + 14;
    let mut zero = t.clone();
    zero[at..at + 32].fill(0);
    assert_eq!(kind(zero), ErrorKind::MissingPiecesRoot);
}
