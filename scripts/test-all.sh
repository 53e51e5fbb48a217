#!/usr/bin/env bash
# Every check btcore's CI runs, in one command, on a fresh machine:
#   bash scripts/test-all.sh
# It installs what it needs (rustup targets and components, cargo-fuzz, cargo-nextest),
# then runs: format check, clippy with warnings denied, the no_std build for
# thumbv7em-none-eabihf (no allocator), doc tests, the API docs, short fuzz runs of every target,
# then the whole test suite, and last the C tests against the release library (a
# test summary is the last thing printed).
# FUZZ_SECONDS (default 8) sets the length of each fuzz run; SKIP_FUZZ=1 skips them;
# SKIP_CROSS=1 skips the ARM and musl builds, the packages and the tests under qemu
# (scripts/cross.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*"; }

# Debian packages the tests use: real clients and a tracker for interop tests,
# network namespaces, C compilers with sanitizers, valgrind; a browser and its driver
# for the daemon's web page (with Transmission's web client from transmission-common,
# and node for the page's JavaScript tests).
PKGS="transmission-cli aria2 opentracker python3-libtorrent iproute2 util-linux miniupnpd-nftables nftables iptables valgrind gcc g++ make pkg-config chromium chromium-driver python3-selenium transmission-common nodejs"
step "Debian packages"
missing=""
for p in $PKGS; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
        echo "missing packages (not root, cannot install):$missing"
    fi
fi

step "toolchain"
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
rustup target list --installed | grep -q '^thumbv7em-none-eabihf$' || rustup target add thumbv7em-none-eabihf
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked
# The C header is checked against a fresh cbindgen run (ffi/tests/c_api.rs).
command -v cbindgen >/dev/null || cargo install cbindgen --locked
if [ "${SKIP_FUZZ:-0}" != 1 ]; then
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
fi
cargo --version

step "lock files current (the workspace, fuzz/, examples/embedded/)"
for d in . fuzz examples/embedded; do
    (cd "$d" && cargo metadata --locked --format-version 1 >/dev/null) ||
        { echo "$d/Cargo.lock is stale: run cargo update -w in $d and commit it"; exit 1; }
done

step "format"
cargo fmt --all -- --check

step "clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "the command with each optional part left out (features), warnings denied"
cargo clippy -p btcore-cli --no-default-features --locked -- -D warnings
for f in https tracker-server dht lsd; do
    cargo clippy -p btcore-cli --no-default-features --features "$f" --locked -- -D warnings
done

step "core for thumbv7em-none-eabihf, no allocator"
cargo build -p btcore-core --no-default-features --target thumbv7em-none-eabihf --locked
step "core for thumbv7em-none-eabihf, with alloc"
cargo build -p btcore-core --features alloc --target thumbv7em-none-eabihf --locked

if [ "${SKIP_CROSS:-0}" != 1 ]; then
    step "static musl and ARM builds, their tests under qemu, the packages (installed when root), bare metal on qemu"
    bash scripts/cross.sh
fi

step "doc tests"
cargo test --workspace --doc --locked

step "API docs (warnings denied: no broken or private links)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
    # Short runs catch what breaks a target's first paths; fuzzing for real is done
    # by hand, for hours (fuzz/README.md).
    export FUZZ_SECONDS=${FUZZ_SECONDS:-8}
    step "fuzz smoke runs ($FUZZ_SECONDS s per target)"
    bash fuzz/smoke.sh
fi

# Runs cargo with its arguments in a private network namespace with only loopback up
# (so nothing can leave the machine), or on the host's loopback where there is none.
in_private_net() {
    if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
        unshare -n -- bash -c 'ip link set lo up && exec "$@"' bash "$@"
    else
        echo "no network namespace available: running on the host's loopback"
        "$@"
    fi
}

# Every package of the lock file, for every target: cbindgen's `cargo metadata` (the
# header check) resolves them all, and the tests run with no network.
cargo fetch --locked
export BTCORE_INTEROP=1

step "tests"
# Build first (the network may be needed for crates), then run every test in a private
# network namespace; the interop tests must find their real clients (BTCORE_INTEROP=1).
cargo nextest run --workspace --locked --no-run
in_private_net cargo nextest run --workspace --locked --offline --no-fail-fast

step "the C and C++ tests again, against the release library (sanitizers, valgrind, install)"
# The seeders and trackers they start are the debug `btcore` the run above built.
cargo nextest run -p btcore-ffi --release --locked --no-run
BTCORE_BIN="$PWD/target/debug/btcore" in_private_net \
    cargo nextest run -p btcore-ffi --release --locked --offline --no-fail-fast
