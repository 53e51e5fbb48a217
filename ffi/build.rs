//! Linker settings for the shared library: the soname is `libbtcore.so.0`, so a
//! program linked today keeps working with later 0.x releases that keep the ABI.
//! rustc itself exports only the `#[no_mangle] extern "C"` functions of a cdylib (all
//! named `btcore_*`); a version script of our own would clash with rustc's under GNU
//! ld, so there is none (`ffi/tests/c_api.rs` checks the exported symbols).

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "android" || os.ends_with("bsd") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libbtcore.so.0");
    }
}
