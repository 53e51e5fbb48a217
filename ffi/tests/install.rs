//! `make install-files` into a private prefix, then the installed tree used the ways a
//! product uses it: the shared library stripped, versioned and with its links and
//! soname; a program linked against it with a run-time path runs without
//! `LD_LIBRARY_PATH`, and a whole session lifecycle through it is clean under valgrind;
//! a static program links with and without `--gc-sections`. Under `--release` (as CI
//! runs it too) this is the library a vendor ships.

mod common;

use common::{ensure_libs, profile_dir, root, run, Tmp};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `make install-files` of this profile's libraries into `dir`, with PREFIX `/opt/app`;
/// returns `dir/opt/app`.
fn install(dir: &Path) -> PathBuf {
    ensure_libs();
    run(Command::new("make")
        .current_dir(root())
        .arg("-s")
        .arg("install-files")
        .arg(format!("LIBDIR={}", profile_dir().display()))
        .arg(format!("DESTDIR={}", dir.display()))
        .arg("PREFIX=/opt/app"));
    dir.join("opt/app")
}

fn version() -> String {
    format!(
        "{}.{}.{}",
        btcore::BTCORE_VERSION_MAJOR,
        btcore::BTCORE_VERSION_MINOR,
        btcore::BTCORE_VERSION_PATCH
    )
}

fn readelf(args: &[&str], file: &Path) -> String {
    String::from_utf8_lossy(&run(Command::new("readelf").args(args).arg(file)).stdout).into_owned()
}

#[test]
fn the_shared_library_is_installed_stripped_versioned_and_linked() {
    let dir = Tmp::new("install-so");
    let prefix = install(&dir);
    let lib = prefix.join("lib");
    let real = lib.join(format!("libbtcore.so.{}", version()));
    assert!(
        std::fs::symlink_metadata(&real)
            .expect("versioned library")
            .is_file(),
        "{} is not a regular file",
        real.display()
    );
    let link0 = std::fs::read_link(lib.join("libbtcore.so.0")).expect("libbtcore.so.0 link");
    assert_eq!(link0, Path::new(&format!("libbtcore.so.{}", version())));
    let link = std::fs::read_link(lib.join("libbtcore.so")).expect("libbtcore.so link");
    assert_eq!(link, Path::new("libbtcore.so.0"));
    let sections = readelf(&["-S", "-W"], &real);
    assert!(sections.contains(".dynsym"), "{sections}");
    assert!(!sections.contains(".symtab"), "not stripped:\n{sections}");
    assert!(
        !sections.contains(".debug_"),
        "debug sections left:\n{sections}"
    );
    let dynamic = readelf(&["-d"], &real);
    assert!(dynamic.contains("[libbtcore.so.0]"), "soname:\n{dynamic}");
    let pc = std::fs::read_to_string(lib.join("pkgconfig/btcore.pc")).expect("btcore.pc");
    assert!(pc.contains("prefix=/opt/app") && pc.contains(&format!("Version: {}", version())));
}

/// The installed library, linked as the docs say for a private prefix, and a session
/// lifecycle through it under valgrind: no leak, no use of an uninitialised value.
#[test]
fn a_program_linked_with_an_rpath_runs_clean_under_valgrind() {
    let dir = Tmp::new("install-rpath");
    let prefix = install(&dir);
    let lib = prefix.join("lib");
    let exe = dir.join("lifecycle");
    run(Command::new("cc")
        .args(["-std=c99", "-Wall", "-Werror", "-g"])
        .arg(format!("-I{}", prefix.join("include").display()))
        .arg(root().join("ffi/tests/lifecycle.c"))
        .arg(format!("-L{}", lib.display()))
        .arg("-lbtcore")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&exe));
    let needed = readelf(&["-d"], &exe);
    assert!(needed.contains("[libbtcore.so.0]"), "{needed}");
    let content = dir.join("content.bin");
    std::fs::write(&content, vec![7u8; 100_000]).expect("content");
    let dl = dir.join("dl");
    std::fs::create_dir_all(&dl).expect("dl");
    if Command::new("valgrind").arg("--version").output().is_err() {
        // Still check that it runs through the run-time path.
        let out = run(Command::new(&exe)
            .arg(&content)
            .arg(&dl)
            .env_remove("LD_LIBRARY_PATH"));
        assert!(String::from_utf8_lossy(&out.stdout).contains("lifecycle: ok"));
        eprintln!("valgrind not installed: ran without it");
        return;
    }
    let out = run(Command::new("valgrind")
        .args(["--leak-check=full", "--error-exitcode=1", "-q"])
        .arg(&exe)
        .arg(&content)
        .arg(&dl)
        .env_remove("LD_LIBRARY_PATH"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("lifecycle: ok"), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("=="), "valgrind reported:\n{err}");
}

/// A static program as the docs link it, with and without `--gc-sections`.
#[test]
fn a_static_program_links_with_gc_sections() {
    let dir = Tmp::new("install-static");
    let prefix = install(&dir);
    let mut sizes = Vec::new();
    for gc in [false, true] {
        let exe = dir.join(if gc { "download-gc" } else { "download" });
        let mut c = Command::new("cc");
        c.args(["-std=c99", "-Os"])
            .arg(format!("-I{}", prefix.join("include").display()))
            .arg(root().join("examples/c/download.c"));
        if gc {
            c.args([
                "-ffunction-sections",
                "-fdata-sections",
                "-Wl,--gc-sections",
            ]);
        }
        c.arg(prefix.join("lib/libbtcore.a"))
            .args(["-lpthread", "-ldl", "-lm", "-o"])
            .arg(&exe);
        run(&mut c);
        run(Command::new("strip").arg(&exe));
        // It runs: without arguments it prints its usage and fails.
        let out = Command::new(&exe).output().expect("run the static program");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("usage"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        sizes.push(std::fs::metadata(&exe).expect("size").len());
    }
    eprintln!(
        "static download example, stripped: {} bytes, {} with --gc-sections",
        sizes[0], sizes[1]
    );
    assert!(sizes[1] < sizes[0], "{sizes:?}");
}
