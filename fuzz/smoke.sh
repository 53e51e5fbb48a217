#!/usr/bin/env bash
# Short fuzz run of every target, for CI: FUZZ_SECONDS (default 20) per target.
#
# New inputs go to a temporary corpus (libFuzzer writes into the FIRST corpus
# directory; the committed seeds are passed second and only read), so a run never
# adds files to the repository. Crash inputs land in fuzz/artifacts/<target>/
# (gitignored). Exits non-zero if any target crashes.
set -euo pipefail

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$FUZZ_DIR"

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
RSS_LIMIT_MB="${RSS_LIMIT_MB:-2048}"
# Its own target dir: sanitizer builds never collide with the main workspace's.
export CARGO_TARGET_DIR="$FUZZ_DIR/target"

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    FUZZ=(cargo +nightly fuzz)
    echo "smoke: using the nightly toolchain"
else
    # cargo-fuzz needs nightly flags (-Zsanitizer); let stable accept them.
    export RUSTC_BOOTSTRAP=1 CARGO_CACHE_RUSTC_INFO=0
    FUZZ=(cargo fuzz)
    echo "smoke: no nightly toolchain, using stable with RUSTC_BOOTSTRAP=1"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/btcore-fuzz-smoke.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

mapfile -t TARGETS < <("${FUZZ[@]}" list --fuzz-dir "$FUZZ_DIR")
if [ "${#TARGETS[@]}" -eq 0 ]; then
    echo "smoke: no fuzz targets found" >&2
    exit 1
fi

# Build every target once, up front, so build errors are reported as such.
"${FUZZ[@]}" build --fuzz-dir "$FUZZ_DIR"

seed_state() {
    find "$FUZZ_DIR/corpus" -type f -printf '%P %s %T@\n' | sort
}
before="$(seed_state)"

failed=()
start_all=$SECONDS
for target in "${TARGETS[@]}"; do
    seeds="$FUZZ_DIR/corpus/$target"
    if [ ! -d "$seeds" ] || [ -z "$(ls -A "$seeds")" ]; then
        echo "smoke: $target has no committed seeds in corpus/$target" >&2
        failed+=("$target (no seeds)")
        continue
    fi
    scratch="$WORK/$target"
    mkdir -p "$scratch"
    args=(-max_total_time="$FUZZ_SECONDS" -rss_limit_mb="$RSS_LIMIT_MB" -timeout=10)
    case "$target" in
        bencode_* | metainfo*) dict="$FUZZ_DIR/dict/bencode.dict" ;;
        *) dict="$FUZZ_DIR/dict/$target.dict" ;;
    esac
    if [ -f "$dict" ]; then
        args+=(-dict="$dict")
    fi
    echo "smoke: fuzzing $target for ${FUZZ_SECONDS}s"
    t0=$SECONDS
    if "${FUZZ[@]}" run --fuzz-dir "$FUZZ_DIR" "$target" "$scratch" "$seeds" -- "${args[@]}" \
        >"$WORK/$target.log" 2>&1; then
        echo "smoke: $target ok ($((SECONDS - t0))s, $(ls "$scratch" | wc -l) new inputs, not kept)"
    else
        echo "smoke: $target FAILED; last lines of its log:" >&2
        tail -n 60 "$WORK/$target.log" >&2
        failed+=("$target")
    fi
done

if [ "$(seed_state)" != "$before" ]; then
    echo "smoke: the committed corpus was modified during the run" >&2
    failed+=("corpus modified")
fi

echo "smoke: ${#TARGETS[@]} targets in $((SECONDS - start_all))s of fuzzing"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "smoke: FAILED: ${failed[*]} (crash inputs are in fuzz/artifacts/<target>/)" >&2
    exit 1
fi
echo "smoke: all targets passed"
