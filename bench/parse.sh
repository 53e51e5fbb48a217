#!/usr/bin/env bash
# Parsing throughput, btcore beside libtorrent, on the largest torrents of the corpus.
# Usage: bash bench/parse.sh   (needs python3-libtorrent for the libtorrent column:
#        apt-get install python3-libtorrent)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench -q -p btcore-host --bench parse 2>/dev/null | tee "$out"
echo
py=/usr/bin/python3
if ! "$py" -c 'import libtorrent' 2>/dev/null; then
    echo "libtorrent: python3-libtorrent is not installed; no side-by-side figures"
    exit 0
fi
names=$(awk 'NR>1 && $1 ~ /\.torrent$/ {print $1}' "$out")
"$py" - tests/data/conformance $names <<'PY'
import sys, os, time
import libtorrent as lt
base, names = sys.argv[1], sys.argv[2:]
paths = {}
for root, _, files in os.walk(base):
    for f in files:
        if f in names and f not in paths:
            paths[f] = os.path.join(root, f)
def rate(nbytes, fn, budget=0.5):
    fn(); n = 0; t0 = time.perf_counter()
    while time.perf_counter() - t0 < budget:
        fn(); n += 1
    return nbytes * n / (time.perf_counter() - t0) / 1e6
print("libtorrent %s (python bindings: per-call overhead included)" % lt.__version__)
print("%-46s %8s %13s %13s" % ("torrent", "bytes", "bdecode MB/s", "torrent_info MB/s"))
for name in names:
    data = open(paths[name], "rb").read()
    b = rate(len(data), lambda: lt.bdecode(data))
    t = rate(len(data), lambda: lt.torrent_info(data))
    print("%-46s %8d %13.0f %13.0f" % (name, len(data), b, t))
PY
