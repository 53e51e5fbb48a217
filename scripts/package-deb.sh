#!/usr/bin/env bash
# The Debian package `btcore` for one target, from a prebuilt `btcore` binary:
#   bash scripts/package-deb.sh TARGET [BINARY]
# TARGET is a Rust target triple; the package's architecture follows it
# (x86_64-unknown-linux-musl -> amd64, aarch64-unknown-linux-musl -> arm64,
# armv7-unknown-linux-musleabihf -> armhf). BINARY defaults to
# target/TARGET/release/btcore, e.g. from (zig compiles the C of `ring` and links)
#   cargo zigbuild --release --locked --target x86_64-unknown-linux-musl -p btcore-cli
# The binary is packaged as it is (not rebuilt, not stripped): cargo-deb runs with
# --no-build on a staging copy, so a binary built elsewhere (the release builds) is what
# ships. It must be statically linked: the package depends on no C library.
# The package's layout is [package.metadata.deb] in cli/Cargo.toml; the unit and the
# maintainer scripts are in dist/. Installs cargo-deb (cargo install --locked) if missing.
# Prints the .deb's path (last line of stdout), its control fields and its contents.
# DEB_OUT sets the output folder (default target/debian).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 TARGET [BINARY]" >&2
    exit 2
fi
TARGET=$1
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BINARY=${2:-$TARGET_DIR/$TARGET/release/btcore}
OUT=${DEB_OUT:-$TARGET_DIR/debian}

case "$TARGET" in
    x86_64-*) want_machine="x86-64" ;;
    aarch64-*) want_machine="aarch64" ;;
    armv7-*) want_machine="ARM" ;;
    *) want_machine="" ;;
esac

[ -f "$BINARY" ] || { echo "no binary at $BINARY (build it first, see the header)" >&2; exit 1; }
command -v file >/dev/null || {
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq file >/dev/null
    else
        echo "needs file(1)" >&2; exit 1
    fi
}
desc=$(file -b "$BINARY")
echo "binary: $BINARY: $desc" >&2
case "$desc" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) echo "FAIL: $BINARY is not statically linked; the package declares no C library dependency" >&2
       exit 1 ;;
esac
if [ -n "$want_machine" ] && [[ "$desc" != *"$want_machine"* ]]; then
    echo "FAIL: $BINARY is not a $want_machine binary, as $TARGET needs" >&2
    exit 1
fi

if ! command -v cargo-deb >/dev/null; then
    echo "installing cargo-deb" >&2
    cargo install cargo-deb --locked
fi
cargo deb --version >&2

# cargo-deb takes the binary from <target dir>/TARGET/release/btcore (the asset
# target/release/btcore of cli/Cargo.toml): a private target dir holds a copy of the
# given binary there, so the real target dir is never written to.
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/$TARGET/release"
cp "$BINARY" "$STAGE/$TARGET/release/btcore"
chmod 755 "$STAGE/$TARGET/release/btcore"
mkdir -p "$OUT"

deb=$(CARGO_TARGET_DIR=$STAGE cargo deb -p btcore-cli --no-build --no-strip \
    --target "$TARGET" --output "$OUT" | tail -n 1)
[ -f "$deb" ] || { echo "FAIL: cargo deb made no package ($deb)" >&2; exit 1; }

echo "== dpkg-deb -I $deb" >&2
dpkg-deb -I "$deb" >&2
echo "== dpkg-deb -c $deb" >&2
dpkg-deb -c "$deb" >&2
if dpkg-deb -f "$deb" Depends | grep -q libc; then
    echo "FAIL: the package depends on a C library: $(dpkg-deb -f "$deb" Depends)" >&2
    exit 1
fi
echo "$deb"
