//! Builds the daemon's web page into the binary (feature `web`): every file of
//! `web/` that the page serves is compressed here with gzip at the highest level, so
//! nothing is compressed (or fetched) at run time. The daemon keeps only the
//! compressed bytes of each file; `$OUT_DIR/web_assets.rs` lists them with their
//! content type and an ETag (FNV-1a of the uncompressed bytes).

use std::io::Write;
use std::path::Path;

/// The page's files and their content types. Tests (`web/test/`) are not served.
const ASSETS: &[(&str, &str)] = &[
    ("index.html", "text/html; charset=UTF-8"),
    ("style.css", "text/css; charset=UTF-8"),
    ("format.js", "text/javascript; charset=UTF-8"),
    ("app.js", "text/javascript; charset=UTF-8"),
    ("favicon.svg", "image/svg+xml"),
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_WEB");
    build_facts();
    web_page();
}

/// What `btcore --version` says beside the version (with what main.rs knows from its
/// own `cfg`: whether the C library is linked in, the allocator): the target, the
/// optional parts built in and the profile, as the `BTCORE_BUILD_*` variables.
fn build_facts() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let features: Vec<&str> = ["https", "tracker-server", "dht", "lsd", "web"]
        .into_iter()
        .filter(|f| {
            let key = format!("CARGO_FEATURE_{}", f.to_uppercase().replace('-', "_"));
            std::env::var_os(key).is_some()
        })
        .collect();
    let features = if features.is_empty() {
        "none".to_string()
    } else {
        features.join(" ")
    };
    // The profile is the name of the directory above OUT_DIR's `build/`.
    let out = std::env::var("OUT_DIR").unwrap_or_default();
    let profile = Path::new(&out)
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!("cargo:rustc-env=BTCORE_BUILD_TARGET={target}");
    println!("cargo:rustc-env=BTCORE_BUILD_FEATURES={features}");
    println!("cargo:rustc-env=BTCORE_BUILD_PROFILE={profile}");
}

fn web_page() {
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    let mut table = String::from("/// The page's files: (path, content type, ETag, gzip bytes).\n");
    table += "pub static ASSETS: &[(&str, &str, &str, &[u8])] = &[\n";
    if std::env::var_os("CARGO_FEATURE_WEB").is_some() {
        let mut total = 0;
        for (name, ctype) in ASSETS {
            let src = Path::new("web").join(name);
            println!("cargo:rerun-if-changed={}", src.display());
            let raw = std::fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(&raw).expect("gzip");
            let gz = gz.finish().expect("gzip");
            total += gz.len();
            let gz_path = Path::new(&out).join(format!("{name}.gz"));
            std::fs::write(&gz_path, &gz).expect("write");
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in &raw {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
            table += &format!(
                "    ({name:?}, {ctype:?}, \"\\\"{h:016x}\\\"\", include_bytes!({:?})),\n",
                gz_path.display().to_string()
            );
        }
        table += &format!("];\n/// The compressed size of the whole page.\npub const COMPRESSED_SIZE: usize = {total};\n");
    } else {
        table += "];\n/// The compressed size of the whole page.\npub const COMPRESSED_SIZE: usize = 0;\n";
    }
    std::fs::write(Path::new(&out).join("web_assets.rs"), table).expect("write");
}
