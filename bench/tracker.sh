#!/usr/bin/env bash
# Tracker throughput and memory: btcore's tracker beside Debian's opentracker, same run.
#
#   bench/tracker.sh            (SECS=5 CONNS=4 TORRENTS=1000 PEERS=100000 to change)
#
# Prints announces per second over HTTP (keep-alive when the server allows it) and UDP
# (16 requests in flight per socket), and the peak RSS grown by PEERS distinct peers
# (UDP announces over TORRENTS torrents), scaled to 100,000 peers.
# Not part of `cargo test`. Everything listens on 127.0.0.1 and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-5}
CONNS=${CONNS:-4}
TORRENTS=${TORRENTS:-1000}
PEERS=${PEERS:-100000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

cargo build -q --release -p btcore-host --example tracker_load
LOAD=$CARGO_TARGET_DIR/release/examples/tracker_load
TMP=$(mktemp -d)
chmod 755 "$TMP"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2; return 1
}

kb() { awk -v k="$2" '$1==k":" {print $2}' "/proc/$1/status"; }

"$LOAD" hashes "$TORRENTS" > "$TMP/whitelist.txt"
echo "access.whitelist $TMP/whitelist.txt" > "$TMP/opentracker.conf"

start() { # name port -> sets PID
    case $1 in
        btcore) "$LOAD" serve "$2" >/dev/null 2>&1 & ;;
        opentracker) opentracker -f "$TMP/opentracker.conf" -d / -i 127.0.0.1 -p "$2" -P "$2" >/dev/null 2>&1 & ;;
    esac
    PID=$!
    PIDS+=("$PID")
    wait_port "$2"
    sleep 0.3 # opentracker reads its whitelist just after binding
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

TRACKERS=(btcore)
if command -v opentracker >/dev/null; then TRACKERS+=(opentracker); else
    echo "opentracker not installed (apt-get install opentracker): btcore only" >&2; fi

printf '%-12s %14s %14s %16s\n' tracker "http ann/s" "udp ann/s" "MiB/100k peers"
for t in "${TRACKERS[@]}"; do
    port=$(free_port)
    start "$t" "$port"
    http=$("$LOAD" http "127.0.0.1:$port" "$SECS" "$CONNS" "$TORRENTS" | awk '{print $2}')
    udp=$("$LOAD" udp "127.0.0.1:$port" "$SECS" "$CONNS" "$TORRENTS" | awk '{print $2}')
    stop "$PID"

    port=$(free_port)
    start "$t" "$port"
    base=$(kb "$PID" VmRSS)
    "$LOAD" fill "127.0.0.1:$port" "$PEERS" "$TORRENTS" >"$TMP/fill.txt"
    sleep 0.5
    peak=$(kb "$PID" VmHWM)
    stop "$PID"
    mib=$(awk -v b="$base" -v p="$peak" -v n="$PEERS" 'BEGIN{printf "%.1f", (p-b)/1024*100000/n}')
    printf '%-12s %14s %14s %16s   (%s; base RSS %s KiB, peak %s KiB)\n' \
        "$t" "$http" "$udp" "$mib" "$(cat "$TMP/fill.txt")" "$base" "$peak"
done
