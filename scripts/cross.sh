#!/usr/bin/env bash
# btcore on ARM Linux (NAS boxes, routers) and bare metal, in one command:
#   bash scripts/cross.sh
# 1. installs what it needs: Debian cross compilers, cross libc, qemu-user,
#    qemu-system-arm (when root; otherwise names what is missing), the rustup targets,
#    nightly's rust-src, and zig with cargo-zigbuild (from PyPI), the C compiler and linker of every musl target;
# 2. libbtcore (release) for the glibc targets aarch64-unknown-linux-gnu and
#    armv7-unknown-linux-gnueabihf, for C programs linked against the system's glibc;
# 3. the static musl builds, which need no C library on the device: the `btcore`
#    command (profile release-small, every default feature, the daemon's web page
#    included) and libbtcore.a (release) for x86_64-unknown-linux-musl,
#    aarch64-unknown-linux-musl and armv7-unknown-linux-musleabihf (rustup serves no
#    armv7 musl standard library: nightly's -Zbuild-std builds it, zig links); `file`
#    must call each command statically linked, and each prints --version under qemu
#    with no sysroot;
# 4. the unit tests of btcore-host and the integration tests that make sense under
#    emulation (storage, create, large_offsets), and btcore-core's (no_std: no C
#    library in it), for the ARM musl targets (the builds that ship; armv7 is the
#    32-bit one), run by qemu-user through the cargo runners of .cargo/config.toml.
#    The glibc targets build libbtcore and run the C example. Not run there: the interop tests (they need x86 real clients) and
#    cli/tests/cli.rs (it spawns the btcore binary, which qemu-user cannot exec without
#    binfmt_misc). Property tests run PROPTEST_CASES (default 64) cases under
#    emulation: the full count runs natively in the main test run;
# 5. the packages: the OpenWrt .ipk of the armv7 and aarch64 musl commands (read back
#    and run by scripts/test-ipk.sh) and the Debian .deb of each musl command (the
#    x86-64 one installed, started and removed by scripts/test-deb.sh when root);
# 6. the cross-architecture download (cli/tests/cross_arch.rs): a native btcore
#    seeds, the packaged armv7 musl btcore downloads under qemu-arm on 127.0.0.1, and
#    back;
# 7. the C example cross-compiled against the armv7 libbtcore.a (glibc, and musl with
#    zig) and run under qemu-arm against a native seeder;
# 8. the bare-metal example (examples/embedded) for thumbv7em-none-eabihf, run on qemu's
#    Cortex-M4 board (MPS2 AN386) with semihosting when qemu-system-arm is present;
# 9. the size budget: the armv7 musl command (release-small, stripped, static, with
#    the web page) under 2 MiB.
# CARGO_TARGET_DIR is honoured (default: target/). CROSS_TARGETS and
# CROSS_MUSL_TARGETS override the glibc and musl targets, CROSS_TEST_TARGETS the
# targets whose tests run under emulation (default: the ARM musl ones).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TARGETS=${CROSS_TARGETS:-"aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf"}
MUSL_TARGETS=${CROSS_MUSL_TARGETS:-"x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf"}
# x86-64 musl is left out by default: the same code and C library run on the ARM
# targets, and x86-64 natively in the main test run (CI's 45 minutes).
TEST_TARGETS=${CROSS_TEST_TARGETS:-"aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf"}
ARMV7_MUSL=armv7-unknown-linux-musleabihf
# Under emulation, property tests run fewer cases (the main test run has the full count).
export PROPTEST_CASES=${PROPTEST_CASES:-64}
T0=$(date +%s)

step() { printf '\n==> %s  [%ss]\n' "$*" "$(($(date +%s) - T0))"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }

step "Debian packages"
PKGS="gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross qemu-user qemu-system-arm file"
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

step "rustup targets, nightly's rust-src, zig and cargo-zigbuild"
for t in $TARGETS $MUSL_TARGETS thumbv7em-none-eabihf; do
    [ "$t" = "$ARMV7_MUSL" ] && continue
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done
if [[ " $MUSL_TARGETS " == *" $ARMV7_MUSL "* ]]; then
    rustup toolchain list | grep -q '^nightly' ||
        rustup toolchain install nightly --profile minimal
    rustup component list --toolchain nightly --installed | grep -q '^rust-src' ||
        rustup component add rust-src --toolchain nightly
    # rustc asks the linker to look in the target's library folder, which a
    # -Zbuild-std target does not have.
    mkdir -p "$(rustc +nightly --print sysroot)/lib/rustlib/$ARMV7_MUSL/lib"
fi
# Every musl target compiles its C (ring, under rustls) and links with zig: Debian has
# no musl cross compilers, and cc-rs finds no `x86_64-linux-musl-gcc` on a fresh machine.
if [ -n "$MUSL_TARGETS" ]; then
    command -v cargo-zigbuild >/dev/null && python3 -m ziglang version >/dev/null 2>&1 ||
        python3 -m pip install -q --disable-pip-version-check ziglang==0.17.1 cargo-zigbuild==0.24.1
    echo "zig $(python3 -m ziglang version), $(cargo-zigbuild --version)"
fi

# `cargo SUB ARGS` for target $1: armv7 musl through nightly's build-std with zig as
# the linker, the other musl targets with zig as C compiler and linker, the glibc
# targets with plain cargo.
cargo_for() {
    local t=$1 sub=$2
    shift 2
    [ "$sub" = build ] && [[ "$t" == *-musl* ]] && sub=zigbuild
    if [ "$t" = "$ARMV7_MUSL" ]; then
        RUSTUP_TOOLCHAIN=nightly cargo-zigbuild "$sub" -Zbuild-std=std,panic_abort \
            --locked --target "$t" "$@"
    elif [[ "$t" == *-musl* ]]; then
        cargo-zigbuild "$sub" --locked --target "$t" "$@"
    else
        cargo "$sub" --locked --target "$t" "$@"
    fi
}
qemu_of() {
    case "$1" in
    aarch64-unknown-linux-gnu) echo "qemu-aarch64 -L /usr/aarch64-linux-gnu" ;;
    armv7-unknown-linux-gnueabihf) echo "qemu-arm -L /usr/arm-linux-gnueabihf" ;;
    # Static: no sysroot.
    aarch64-unknown-linux-musl) echo "qemu-aarch64" ;;
    armv7-unknown-linux-musleabihf) echo "qemu-arm" ;;
    x86_64-*) echo "" ;;
    esac
}

for t in $TARGETS; do
    step "libbtcore for $t (glibc, release)"
    cargo build --release --locked --target "$t" -p btcore-ffi
done

for t in $MUSL_TARGETS; do
    step "static musl build for $t: btcore (release-small), libbtcore.a (release)"
    cargo_for "$t" build --profile release-small -p btcore-cli
    cargo_for "$t" build --release -p btcore-ffi
    BIN="$TARGET_DIR/$t/release-small/btcore"
    info=$(file -b "$BIN")
    echo "btcore for $t: $(stat -c %s "$BIN") bytes; $info"
    [[ "$info" == *"statically linked"* || "$info" == *"static-pie linked"* ]] ||
        { echo "btcore for $t is not statically linked"; exit 1; }
    ls -l "$TARGET_DIR/$t/release/libbtcore.a"
    # shellcheck disable=SC2046
    env -i $(qemu_of "$t") "$BIN" --version
    # The static aarch64 build finds the ARMv8 SHA extensions at run time (the kernel's
    # HWCAP, read through musl): qemu's Cortex-A72 has them.
    if [ "$t" = aarch64-unknown-linux-musl ]; then
        env -i qemu-aarch64 -cpu cortex-a72 "$BIN" --version | grep -qx "sha1: ARMv8 SHA extensions" ||
            { echo "btcore for $t does not find the ARMv8 SHA extensions"; exit 1; }
    fi
done

# Tests known to fail on 32-bit targets, skipped there until fixed (each line: the test,
# then why). Remove an entry once its fix lands; the run prints what it skipped.
KNOWN_32BIT_FAILURES=(
)
# btcore-core is `no_std` and touches no C library: its tests run once per
# architecture (x86-64 natively in the main run). btcore-host and its integration tests
# run on every test target: the musl builds are what ships, and glibc's differences
# from musl are the C library's, which the C example on armv7 glibc exercises.
CORE_DONE=" x86_64 "
for t in $TEST_TARGETS; do
    arch=${t%%-*}
    pkgs=(-p btcore-host)
    what="btcore-host"
    if [[ "$CORE_DONE" != *" $arch "* ]]; then
        pkgs+=(-p btcore-core)
        what="btcore-core, $what"
        CORE_DONE="$CORE_DONE$arch "
    fi
    runner=$(qemu_of "$t" | cut -d' ' -f1)
    step "tests for $t ($what; storage, create, large_offsets)${runner:+ under $runner}"
    skips=()
    if [[ "$t" == armv7* ]]; then
        for k in "${KNOWN_32BIT_FAILURES[@]+"${KNOWN_32BIT_FAILURES[@]}"}"; do
            warn "$t: skipping $k (known 32-bit failure, see KNOWN_32BIT_FAILURES)"
            skips+=(--skip "$k")
        done
    fi
    cargo_for "$t" test --profile cross-test "${pkgs[@]}" \
        --lib --test storage --test create --test large_offsets -- "${skips[@]}"
done

PKG_OUT="$TARGET_DIR/packages"
mkdir -p "$PKG_OUT"
IPK_ARMV7=""
for t in $MUSL_TARGETS; do
    case "$t" in
    x86_64-*) continue ;;
    esac
    step "OpenWrt package for $t"
    ipk=$(bash scripts/package-ipk.sh "$t" "$TARGET_DIR/$t/release-small/btcore" "$PKG_OUT" | tail -1)
    bash scripts/test-ipk.sh "$ipk" "$t"
    [ "$t" = "$ARMV7_MUSL" ] && IPK_ARMV7=$ipk
done
for t in $MUSL_TARGETS; do
    step "Debian package for $t"
    deb=$(bash scripts/package-deb.sh "$t" "$TARGET_DIR/$t/release-small/btcore" | tail -1)
    if [[ "$t" == x86_64-* ]]; then
        if [ "$(id -u)" = 0 ]; then
            bash scripts/test-deb.sh "$deb"
        else
            echo "not root: the .deb is built, not installed"
        fi
    fi
done

step "cross-architecture download (native seed <-> the packaged armv7 musl btcore under qemu-arm)"
if [ -n "$IPK_ARMV7" ]; then
    W=$(mktemp -d)
    # The binary as the package installs it: out of data.tar.gz in the .ipk.
    tar -xzf "$IPK_ARMV7" -C "$W" ./data.tar.gz
    tar -xzf "$W/data.tar.gz" -C "$W" ./usr/bin/btcore
    BTCORE_ARMV7_BIN="$W/usr/bin/btcore" BTCORE_QEMU_ARM=qemu-arm BTCORE_CROSS=1 \
        cargo test --locked -p btcore-cli --test cross_arch -- --nocapture
    rm -rf "$W"
else
    echo "skipped: $ARMV7_MUSL is not in CROSS_MUSL_TARGETS"
fi

# ---------------------------------------------------------------------------------------
# C example on ARM: examples/c/download.c linked statically against the armv7 libbtcore.a
# (glibc's, with Debian's cross gcc; musl's, with zig), run under qemu-arm, downloading
# from a native `btcore seed` on 127.0.0.1.
# ---------------------------------------------------------------------------------------
step "C example (download.c) on armv7 under qemu-arm, against libbtcore.a for glibc and for musl"
W=$(mktemp -d)
trap 'kill "${SEED_PID:-}" 2>/dev/null || true; rm -rf "$W"' EXIT
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
c_download() { # name, then the command that runs the program
    local name=$1
    shift
    rm -rf "$W/out"
    BTCORE_TIMEOUT_S=120 "$@" "$W/c.torrent" "$W/out" "127.0.0.1:$PORT"
    cmp "$W/seed/cdata/blob.bin" "$W/out/cdata/blob.bin"
    cmp "$W/seed/cdata/note.txt" "$W/out/cdata/note.txt"
    echo "C example on armv7 ($name): download complete, data identical"
}
T=armv7-unknown-linux-gnueabihf
if [[ " $TARGETS " == *" $T "* ]]; then
    arm-linux-gnueabihf-gcc -std=c11 -O2 -Wall -Iinclude examples/c/download.c \
        "$TARGET_DIR/$T/release/libbtcore.a" -lpthread -ldl -lm -o "$W/download-glibc"
    c_download "glibc" qemu-arm -L /usr/arm-linux-gnueabihf "$W/download-glibc"
else
    echo "skipped for glibc: $T is not in CROSS_TARGETS"
fi
if [[ " $MUSL_TARGETS " == *" $ARMV7_MUSL "* ]]; then
    # -lunwind: this archive's standard library was rebuilt (-Zbuild-std), and such a
    # build does not bundle the unwinder; zig brings one.
    python3 -m ziglang cc -target arm-linux-musleabihf -static -std=c11 -O2 -Wall \
        -Iinclude examples/c/download.c "$TARGET_DIR/$ARMV7_MUSL/release/libbtcore.a" \
        -lunwind -o "$W/download-musl"
    file -b "$W/download-musl" | grep -q "statically linked"
    c_download "musl, static" qemu-arm "$W/download-musl"
else
    echo "skipped for musl: $ARMV7_MUSL is not in CROSS_MUSL_TARGETS"
fi
kill "$SEED_PID" 2>/dev/null || true

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

if [[ " $MUSL_TARGETS " == *" $ARMV7_MUSL "* ]]; then
    step "size budget: the armv7 musl command (release-small, stripped, static, with the web page) < 2 MiB"
    SMALL="$TARGET_DIR/$ARMV7_MUSL/release-small/btcore"
    arm-linux-gnueabihf-strip -o "$SMALL.stripped" "$SMALL"
    SIZE=$(stat -c %s "$SMALL.stripped")
    echo "armv7 musl btcore (release-small, stripped): $SIZE bytes (budget 2097152)"
    [ "$SIZE" -lt 2097152 ] || { echo "over the 2 MiB budget"; exit 1; }
fi

step "done: cross builds and tests passed in $(($(date +%s) - T0)) s"
