#!/usr/bin/env bash
# btcore's size and memory budgets, in one command (prints a table at the end):
#   bash scripts/budgets.sh
# - stripped size of the `btcore` command (profile release-small: opt-level "z", fat LTO,
#   panic = "abort") and of libbtcore.so (profile release, unwinding) for x86-64,
#   aarch64 and armv7 (libbtcore: "n/a" while the ffi does not build for a target);
# - .text/.data/.bss of examples/embedded for thumbv7em-none-eabihf (btcore-core's
#   bencode, metainfo, wire, picker and SHA-1 with no allocator, plus semihosting);
# - peak RSS (/usr/bin/time -v, "Maximum resident set size") of `btcore download` of a
#   1 GiB torrent on 127.0.0.1, default and --low-memory profiles:
#     a) 1 btcore seeder;
#     b) 50 connections: 4 btcore seeders + 46 idle peers (a Python listener that
#        completes the handshake, has no piece and stays connected), --max-peers 50;
# - bytes of state per peer and per piece (core::mem::size_of from a throw-away crate
#   built under $CARGO_TARGET_DIR, plus the configured buffer caps).
# - the shipped router build: the static armv7 musl command (scripts/cross.sh's recipe:
#   nightly -Zbuild-std with zig as the linker; measured when cargo-zigbuild is installed).
# Budgets checked: the armv7 musl `btcore` < 2 MiB stripped; low-memory peak RSS < 8 MiB.
# Needs: the cross toolchains of scripts/cross.sh (installed here too when root),
# binutils-arm-none-eabi (for arm-none-eabi-size), python3, /usr/bin/time.
# BUDGET_TARGETS overrides the cross targets; BUDGET_GIB the payload size (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export CARGO_TARGET_DIR=$TARGET_DIR
CROSS=${BUDGET_TARGETS:-"aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf"}
GIB=${BUDGET_GIB:-1}
T0=$(date +%s)
step() { printf '\n==> %s  [%ss]\n' "$*" "$(($(date +%s) - T0))" >&2; }

step "packages and targets"
PKGS="gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross binutils-arm-none-eabi time python3"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ] && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
elif [ -n "$missing" ]; then
    echo "missing packages (not root, cannot install):$missing" >&2
fi
for t in $CROSS thumbv7em-none-eabihf; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t" >&2
done

strip_of() {
    case "$1" in
    host) echo strip ;;
    aarch64-unknown-linux-gnu) echo aarch64-linux-gnu-strip ;;
    armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf-strip ;;
    esac
}
# Artifact directory of a target ("host": the native build, no --target).
dir_of() { if [ "$1" = host ]; then echo "$TARGET_DIR/$2"; else echo "$TARGET_DIR/$1/$2"; fi; }
target_args() { if [ "$1" != host ]; then echo "--target $1"; fi; }
stripped_size() { # FILE TARGET
    local tmp
    tmp=$(mktemp)
    cp "$1" "$tmp"
    "$(strip_of "$2")" "$tmp"
    stat -c %s "$tmp"
    rm -f "$tmp"
}
human() { awk -v b="$1" 'BEGIN { if (b >= 1048576) printf "%.2f MiB", b / 1048576; else printf "%.0f KiB", b / 1024 }'; }

declare -A CMD LIB
for t in host $CROSS; do
    step "build for $t: btcore (release-small), libbtcore (release)"
    # shellcheck disable=SC2046
    cargo build --locked --profile release-small $(target_args "$t") -p btcore-cli >&2
    CMD[$t]=$(stripped_size "$(dir_of "$t" release-small)/btcore" "$t")
    # shellcheck disable=SC2046
    if cargo build --locked --release $(target_args "$t") -p btcore-ffi >/dev/null 2>&1 &&
        [ -f "$(dir_of "$t" release)/libbtcore.so" ]; then
        LIB[$t]=$(human "$(stripped_size "$(dir_of "$t" release)/libbtcore.so" "$t")")
    else
        LIB[$t]="n/a (no build)"
    fi
done

MUSL7=armv7-unknown-linux-musleabihf
if command -v cargo-zigbuild >/dev/null; then
    step "build for $MUSL7: btcore (release-small, static)"
    RUSTUP_TOOLCHAIN=nightly cargo-zigbuild zigbuild -Zbuild-std=std,panic_abort --locked \
        --target "$MUSL7" --profile release-small -p btcore-cli >&2
    CMD[musl7]=$(stripped_size "$TARGET_DIR/$MUSL7/release-small/btcore" armv7-unknown-linux-gnueabihf)
fi

step "bare metal: examples/embedded for thumbv7em-none-eabihf"
(cd examples/embedded && cargo build --locked --release >&2)
ELF="$TARGET_DIR/thumbv7em-none-eabihf/release/btcore-embedded"
if command -v arm-none-eabi-size >/dev/null; then SIZE=arm-none-eabi-size; else SIZE=llvm-size; fi
read -r TEXT DATA BSS _ < <($SIZE "$ELF" | awk 'NR == 2')

step "state sizes (core::mem::size_of)"
SZ="$TARGET_DIR/budget-sizes"
mkdir -p "$SZ/src"
cat >"$SZ/Cargo.toml" <<EOF
[package]
name = "budget-sizes"
version = "0.0.0"
edition = "2021"
publish = false
[workspace]
[dependencies]
btcore-core = { path = "$ROOT/core" }
EOF
cat >"$SZ/src/main.rs" <<'EOF'
use btcore_core::ids::{BlockRef, PeerId, BLOCK_LEN};
use btcore_core::peer::{PeerConfig, PeerConn};
use btcore_core::picker::{BlockSlot, PartialPiece, PieceState};
use btcore_core::session::{Session, SessionConfig};
use core::mem::size_of;
fn main() {
    let id = PeerId([0; 20]);
    for (name, s) in [("default", SessionConfig::new(id)), ("low-memory", SessionConfig::low_memory(id))] {
        let p: PeerConfig = s.peer;
        let rx = p.wire.max_frame_len() as usize;
        let out = p.max_queue as usize * 24; // an outstanding request: BlockRef + sent time
        let reqs = p.max_peer_requests * size_of::<BlockRef>();
        let inline = size_of::<PeerConn>();
        println!(
            "peer {name}: {} B worst case = PeerConn {inline} + rx {rx} + tx {} + outstanding {out} + their requests {reqs} (+ 1 bit per piece)",
            inline + rx + p.max_send_buffer + out + reqs,
            p.max_send_buffer
        );
        let partial = size_of::<PartialPiece>() + size_of::<BlockSlot>() * (256 * 1024 / BLOCK_LEN as usize);
        println!(
            "piece {name}: {} B per piece (PieceState) + 20 B hash (in the torrent) + 1 bit have; {} B per partial piece of 256 KiB x {} slots; disk in flight {} B",
            size_of::<PieceState>(),
            partial,
            s.picker.max_partials,
            s.max_disk_bytes_in_flight
        );
    }
    println!("session: Session {} B inline", size_of::<Session>());
}
EOF
SIZES=$(cargo run --quiet --release --manifest-path "$SZ/Cargo.toml" 2>/dev/null)

step "peak RSS of btcore download (${GIB} GiB on 127.0.0.1)"
BIN="$(dir_of host release-small)/btcore"
W=$(mktemp -d "${TMPDIR:-/tmp}/btcore-budget.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/data/payload"
head -c $((GIB * 1024 * 1024 * 1024)) /dev/urandom >"$W/data/payload/blob.bin"
"$BIN" create "$W/data/payload" -o "$W/t.torrent" >/dev/null

port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
SEEDS=()
start_seeders() { # N
    local i p
    for i in $(seq "$1"); do
        p=$(port)
        "$BIN" seed "$W/t.torrent" "$W/data" --bind 127.0.0.1 --port "$p" --no-trackers \
            --state-dir "$W/state-$i" --json >"$W/seed-$i.log" 2>&1 &
        PIDS+=($!)
        SEEDS+=("127.0.0.1:$p")
    done
    for i in $(seq "$1"); do
        for _ in $(seq 600); do
            grep -q '"state":"seeding"' "$W/seed-$i.log" && break
            sleep 0.1
        done
    done
}
stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
    SEEDS=()
}
# 46 idle peers: answer the handshake for any info-hash, own nothing, stay connected.
IDLE_PY='
import asyncio, os, sys
async def peer(r, w):
    try:
        hs = await r.readexactly(68)
        w.write(hs[:28] + b"\0" * 8 + hs[28:48] + os.urandom(20))  # no extension bits
        await w.drain()
        while await r.read(65536):
            pass
    except Exception:
        pass
async def main(n):
    servers = [await asyncio.start_server(peer, "127.0.0.1", 0) for _ in range(n)]
    print(" ".join("127.0.0.1:%d" % s.sockets[0].getsockname()[1] for s in servers), flush=True)
    await asyncio.Event().wait()
asyncio.run(main(int(sys.argv[1])))
'
declare -A RSS SECS
measure() { # NAME SEEDERS IDLE EXTRA-ARGS...
    local name=$1 nseed=$2 idle=$3
    shift 3
    start_seeders "$nseed"
    local peers=("${SEEDS[@]}")
    if [ "$idle" -gt 0 ]; then
        python3 -c "$IDLE_PY" "$idle" >"$W/idle.addrs" &
        PIDS+=($!)
        for _ in $(seq 100); do [ -s "$W/idle.addrs" ] && break; sleep 0.1; done
        read -r -a more <"$W/idle.addrs"
        peers+=("${more[@]}")
    fi
    local args=()
    for p in "${peers[@]}"; do args+=(--peer "$p"); done
    rm -rf "$W/out"
    local t1
    t1=$(date +%s.%N)
    /usr/bin/time -v "$BIN" download "$W/t.torrent" -o "$W/out" --bind 127.0.0.1 --port "$(port)" \
        --no-trackers --timeout 600 --progress none "${args[@]}" "$@" 2>"$W/time.log" >/dev/null
    SECS[$name]=$(awk -v a="$t1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    cmp -s "$W/data/payload/blob.bin" "$W/out/payload/blob.bin" || { echo "$name: data differs" >&2; exit 1; }
    RSS[$name]=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$W/time.log")
    stop_all
    echo "$name: ${RSS[$name]} KiB peak RSS, ${SECS[$name]} s" >&2
}
measure "1 seeder, default" 1 0
measure "1 seeder, --low-memory" 1 0 --low-memory
measure "50 peers, default" 4 46 --max-peers 50
measure "50 peers, --low-memory" 4 46 --max-peers 50 --low-memory

# ---- the table ----
kib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
ok() { if [ "$1" = 1 ]; then echo "ok"; else echo "OVER"; fi; }
cell() { if [ -n "${CMD[$1]:-}" ]; then human "${CMD[$1]}"; else echo "-"; fi; }
A7=armv7-unknown-linux-gnueabihf
A64=aarch64-unknown-linux-gnu
echo
echo "btcore budgets ($(rustc --version | cut -d' ' -f1-2), $(date -u +%Y-%m-%d), ${GIB} GiB payload)"
printf '%-46s %-16s %-16s %-16s %s\n' "item" "x86-64" "aarch64" "armv7" "budget"
printf '%-46s %-16s %-16s %-16s\n' "btcore (glibc), release-small, stripped" "$(cell host)" "$(cell $A64)" "$(cell $A7)"
printf '%-46s %-16s %-16s %-16s %s\n' "btcore (musl, static), release-small, stripped" "" "" "$(cell musl7)" \
    "armv7 < 2 MiB: $(ok "$([ "${CMD[musl7]:-99999999}" -lt 2097152 ] && echo 1)")"
printf '%-46s %-16s %-16s %-16s\n' "libbtcore.so, release, stripped" "${LIB[host]}" "${LIB[$A64]:--}" "${LIB[$A7]:--}"
printf '%-46s %s\n' "thumbv7em example .text / .data / .bss" "$TEXT / $DATA / $BSS bytes (examples/embedded, $SIZE)"
for k in "1 seeder, default" "1 seeder, --low-memory" "50 peers, default" "50 peers, --low-memory"; do
    extra=""
    case "$k" in *low-memory*) extra="< 8 MiB: $(ok "$([ "${RSS[$k]}" -lt 8192 ] && echo 1)")" ;; esac
    printf '%-46s %-50s %s\n' "peak RSS, download, $k" "$(kib "${RSS[$k]}") (${SECS[$k]} s, x86-64)" "$extra"
done
echo "$SIZES" | sed 's/^/state: /'
echo "(50 peers = 4 btcore seeders + 46 idle handshake-only peers; libbtcore n/a = the ffi does not build for that target; total $(($(date +%s) - T0)) s)"
