//! Replays the committed fuzz seeds (`fuzz/corpus/<target>/`) through the same checks
//! as the cargo-fuzz targets in `fuzz/fuzz_targets/` (`btcore_tests::fuzz_checks`), on
//! stable and in every `cargo test`: a crash saved there as a regression seed stays
//! fixed even where no one runs the fuzzer.

use btcore_tests::fuzz_checks;
use std::path::{Path, PathBuf};

/// A target's check: returns whether the parser under test accepted the input
/// (rejection is fine; a panic is the failure).
type Check = fn(&[u8]) -> bool;

/// The fuzz targets, each with its check.
const TARGETS: &[(&str, Check)] = &[
    ("bencode_decode", fuzz_checks::bencode_decode),
    ("bencode_roundtrip", fuzz_checks::bencode_roundtrip),
    ("metainfo", fuzz_checks::metainfo),
    ("metainfo_v2", fuzz_checks::metainfo_v2),
    ("magnet", fuzz_checks::magnet),
    ("wire_framing", fuzz_checks::wire_framing),
    ("krpc", fuzz_checks::krpc),
    ("pex", fuzz_checks::pex),
    ("lsd", fuzz_checks::lsd),
    ("portmap", fuzz_checks::portmap),
    ("upnp", fuzz_checks::upnp),
    ("mse", fuzz_checks::mse),
    ("dht_node", fuzz_checks::dht_node),
    ("tracker_server", fuzz_checks::tracker_server),
    ("session", fuzz_checks::session),
    ("utp_packet", fuzz_checks::utp_packet),
    ("utp_connection", fuzz_checks::utp_connection),
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir().join(target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("seed directory {}: {e}", dir.display()));
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_file() {
            let bytes = std::fs::read(&path).expect("seed file");
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            out.push((name, bytes));
        }
    }
    out.sort();
    out
}

#[test]
fn every_target_has_seeds_and_they_all_pass() {
    for (target, check) in TARGETS {
        let seeds = seeds(target);
        assert!(!seeds.is_empty(), "fuzz/corpus/{target} has no seeds");
        let mut accepted = 0;
        for (name, bytes) in &seeds {
            let ok = std::panic::catch_unwind(|| check(bytes))
                .unwrap_or_else(|_| panic!("fuzz/corpus/{target}/{name} fails the {target} check"));
            accepted += usize::from(ok);
        }
        assert!(
            accepted > 0,
            "no seed in fuzz/corpus/{target} is accepted: the seeds only test errors"
        );
    }
}
