#!/usr/bin/env bash
# btcore on ARM Linux (NAS boxes, routers) and bare metal, in one command:
#   bash scripts/cross.sh
# 1. installs what it needs: Debian cross compilers, cross libc, qemu-user,
#    qemu-system-arm (when root; otherwise names what is missing) and the rustup targets;
# 2. release builds of the `btcore` command (and libbtcore when the ffi builds) for
#    aarch64-unknown-linux-gnu and armv7-unknown-linux-gnueabihf;
# 3. the unit tests of btcore-core and btcore-host and the integration tests that make
#    sense under emulation (storage, create, large_offsets) for both targets, run by
#    qemu-user through the cargo runner of .cargo/config.toml. Not run there: the
#    interop tests (they need x86 real clients) and cli/tests/cli.rs (it spawns the btcore
#    binary, which qemu-user cannot exec without binfmt_misc);
# 4. the cross-architecture download (cli/tests/cross_arch.rs): a native btcore
#    seeds, the armv7 btcore downloads under qemu-arm on 127.0.0.1, and back;
# 5. the C example cross-compiled against the armv7 libbtcore.a and run under qemu-arm
#    against a native seeder (only when examples/c/download.c exists and the ffi builds);
# 6. the bare-metal example (examples/embedded) for thumbv7em-none-eabihf, run on qemu's
#    Cortex-M4 board (MPS2 AN386) with semihosting when qemu-system-arm is present;
# 7. the size budget: the armv7 command in the release-small profile, stripped, under
#    2 MiB with every feature but the daemon's web page (the default build, with it,
#    is printed too).
# CARGO_TARGET_DIR is honoured (default: target/). CROSS_REQUIRE_FFI=1 makes a failing
# ffi build an error instead of a warning. CROSS_TARGETS overrides the ARM targets.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TARGETS=${CROSS_TARGETS:-"aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf"}
T0=$(date +%s)

step() { printf '\n==> %s  [%ss]\n' "$*" "$(($(date +%s) - T0))"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }

step "Debian packages"
PKGS="gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross qemu-user qemu-system-arm"
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

step "rustup targets"
for t in $TARGETS thumbv7em-none-eabihf; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done

linker_of() {
    case "$1" in
    aarch64-unknown-linux-gnu) echo aarch64-linux-gnu-gcc ;;
    armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf-gcc ;;
    esac
}
qemu_of() {
    case "$1" in
    aarch64-unknown-linux-gnu) echo "qemu-aarch64 -L /usr/aarch64-linux-gnu" ;;
    armv7-unknown-linux-gnueabihf) echo "qemu-arm -L /usr/arm-linux-gnueabihf" ;;
    esac
}

declare -A FFI_OK
for t in $TARGETS; do
    step "release build for $t: btcore, libbtcore"
    # --keep-going: the command is built even while the ffi does not link yet.
    if cargo build --release --locked --keep-going --target "$t" -p btcore-cli -p btcore-ffi; then
        FFI_OK[$t]=1
    else
        FFI_OK[$t]=0
        [ -x "$TARGET_DIR/$t/release/btcore" ] || { echo "btcore did not build for $t"; exit 1; }
        if [ "${CROSS_REQUIRE_FFI:-0}" = 1 ]; then
            echo "libbtcore did not build for $t (CROSS_REQUIRE_FFI=1)"
            exit 1
        fi
        warn "libbtcore did not build for $t; continuing with the btcore command only"
    fi
    # shellcheck disable=SC2086
    $(qemu_of "$t") "$TARGET_DIR/$t/release/btcore" --version
done

# Tests known to fail on 32-bit targets, skipped there until fixed (each line: the test,
# then why). Remove an entry once its fix lands; the run prints what it skipped.
KNOWN_32BIT_FAILURES=(
)
for t in $TARGETS; do
    step "tests for $t under $(qemu_of "$t" | cut -d' ' -f1)"
    skips=()
    if [[ "$t" == armv7* ]]; then
        for k in "${KNOWN_32BIT_FAILURES[@]+"${KNOWN_32BIT_FAILURES[@]}"}"; do
            warn "$t: skipping $k (known 32-bit failure, see KNOWN_32BIT_FAILURES)"
            skips+=(--skip "$k")
        done
    fi
    cargo test --locked --target "$t" -p btcore-core -p btcore-host \
        --lib --test storage --test create -- "${skips[@]}"
    cargo test --locked --target "$t" -p btcore-cli --test large_offsets -- "${skips[@]}"
done

step "cross-architecture download (native seed <-> armv7 download under qemu-arm)"
if [[ " $TARGETS " == *" armv7-unknown-linux-gnueabihf "* ]]; then
    BTCORE_CROSS=1 cargo test --locked -p btcore-cli --test cross_arch -- --nocapture
else
    echo "skipped: armv7-unknown-linux-gnueabihf is not in CROSS_TARGETS"
fi

# ---------------------------------------------------------------------------------------
# C example on ARM: examples/c/download.c linked statically against the armv7 libbtcore.a,
# run under qemu-arm, downloading from a native `btcore seed` on 127.0.0.1.
# Runs only when the example exists and the ffi built for armv7.
# ---------------------------------------------------------------------------------------
step "C example (download.c) on armv7 under qemu-arm"
T=armv7-unknown-linux-gnueabihf
LIB="$TARGET_DIR/$T/release/libbtcore.a"
if [ -f examples/c/download.c ] && [ "${FFI_OK[$T]:-0}" = 1 ] && [ -f "$LIB" ]; then
    W=$(mktemp -d)
    trap 'kill "${SEED_PID:-}" 2>/dev/null || true; rm -rf "$W"' EXIT
    arm-linux-gnueabihf-gcc -std=c11 -O2 -Wall -Iinclude examples/c/download.c "$LIB" \
        -lpthread -ldl -lm -o "$W/download-armv7"
    mkdir -p "$W/seed/cdata"
    head -c $((6 * 1024 * 1024 + 333)) /dev/urandom >"$W/seed/cdata/blob.bin"
    head -c 10007 /dev/urandom >"$W/seed/cdata/note.txt"
    NATIVE="$TARGET_DIR/debug/btcore" # built by the cross_arch test above
    [ -x "$NATIVE" ] || cargo build --locked -q -p btcore-cli
    "$NATIVE" create "$W/seed/cdata" --piece-kib 256 -o "$W/c.torrent" >/dev/null
    PORT=$((20000 + RANDOM % 20000))
    "$NATIVE" seed "$W/c.torrent" "$W/seed" --bind 127.0.0.1 --port "$PORT" \
        --no-trackers --json >"$W/seed.log" &
    SEED_PID=$!
    for _ in $(seq 100); do
        grep -q '"state":"seeding"' "$W/seed.log" && break
        sleep 0.2
    done
    BTCORE_TIMEOUT_S=120 qemu-arm -L /usr/arm-linux-gnueabihf "$W/download-armv7" \
        "$W/c.torrent" "$W/out" "127.0.0.1:$PORT"
    kill "$SEED_PID" 2>/dev/null || true
    cmp "$W/seed/cdata/blob.bin" "$W/out/cdata/blob.bin"
    cmp "$W/seed/cdata/note.txt" "$W/out/cdata/note.txt"
    echo "C example on armv7: download complete, data identical"
else
    echo "skipped: needs examples/c/download.c and libbtcore for $T (ffi built: ${FFI_OK[$T]:-0})"
fi

step "bare metal: examples/embedded for thumbv7em-none-eabihf"
(
    cd examples/embedded
    cargo build --release --locked
    if command -v qemu-system-arm >/dev/null; then
        timeout 120 cargo run --release --locked
    else
        echo "qemu-system-arm not installed: built only"
    fi
)

if [[ " $TARGETS " == *" armv7-unknown-linux-gnueabihf "* ]]; then
    step "size budget: the armv7 router build, profile release-small, stripped, < 2 MiB"
    SMALL="$TARGET_DIR/armv7-unknown-linux-gnueabihf/release-small/btcore"
    # Every feature but the daemon's built-in web page (its own feature, `web`): the
    # build for routers, the one the budget is for.
    cargo build --profile release-small --locked --target armv7-unknown-linux-gnueabihf \
        -p btcore-cli --no-default-features --features https,tracker-server,dht,lsd
    arm-linux-gnueabihf-strip -o "$SMALL.stripped" "$SMALL"
    SIZE=$(stat -c %s "$SMALL.stripped")
    # The default build (with the web page), for the record.
    cargo build --profile release-small --locked --target armv7-unknown-linux-gnueabihf -p btcore-cli
    arm-linux-gnueabihf-strip -o "$SMALL.stripped" "$SMALL"
    FULL=$(stat -c %s "$SMALL.stripped")
    echo "armv7 btcore (release-small, stripped), without the web page: $SIZE bytes" \
        "(budget 2097152); with it (the default features): $FULL bytes"
    [ "$SIZE" -lt 2097152 ] || { echo "over the 2 MiB budget"; exit 1; }
fi

step "done: cross builds and tests passed in $(($(date +%s) - T0)) s"
