//! Linker settings for the shared library: only `btcore_*` symbols are exported
//! (`btcore.map`) and the soname is `libbtcore.so.0`, so a program linked today keeps
//! working with later 0.x releases that keep the ABI.

fn main() {
    let map = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("btcore.map");
    println!("cargo:rerun-if-changed={}", map.display());
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "android" || os.ends_with("bsd") {
        println!(
            "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
            map.display()
        );
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libbtcore.so.0");
    }
}
