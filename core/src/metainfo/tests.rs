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
