#!/usr/bin/env python3
"""How often btcore announces: N small torrents seeded by one `btcore download --seed`,
all on an HTTP tracker (this script) that answers `interval` and `min interval` with no
peers. Prints the announces per torrent over the run, the busiest second, and the
shortest gap between two announces of one torrent.

    bench/announce.py --btcore target/release/btcore [--torrents 500] [--seconds 600]
                      [--interval 1800] [--min-interval 900] [--btcore-b OTHER]

A polite client makes one announce per torrent (`started`) in a run shorter than
`min interval`.
"""

import argparse
import hashlib
import http.server
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse


def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        return b"d" + b"".join(bencode(k) + bencode(v[k]) for k in sorted(v)) + b"e"
    raise TypeError(type(v))


class Tracker(http.server.BaseHTTPRequestHandler):
    log_lock = threading.Lock()
    announces = []  # (time, info_hash, event)
    interval = 1800
    min_interval = 900

    def do_GET(self):
        q = urllib.parse.urlsplit(self.path).query
        fields = urllib.parse.parse_qs(q, keep_blank_values=True, encoding="latin-1")
        ih = fields.get("info_hash", [""])[0].encode("latin-1")
        event = fields.get("event", [""])[0]
        with Tracker.log_lock:
            Tracker.announces.append((time.monotonic(), ih, event))
        body = bencode(
            {
                "interval": Tracker.interval,
                "min interval": Tracker.min_interval,
                "peers": b"",
            }
        )
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def make_torrents(root, n, url):
    data = os.path.join(root, "data")
    tors = os.path.join(root, "torrents")
    os.makedirs(data)
    os.makedirs(tors)
    paths = []
    for i in range(n):
        content = (b"btcore announce bench %d " % i) * 64
        name = "f%04d.bin" % i
        with open(os.path.join(data, name), "wb") as f:
            f.write(content)
        info = {
            "name": name,
            "length": len(content),
            "piece length": 16384,
            "pieces": hashlib.sha1(content).digest(),
        }
        p = os.path.join(tors, name + ".torrent")
        with open(p, "wb") as f:
            f.write(bencode({"announce": url, "info": info}))
        paths.append(p)
    return data, paths


def run(binary, n, seconds, port):
    Tracker.announces = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tracker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d/announce" % server.server_address[1]
    with tempfile.TemporaryDirectory() as root:
        data, paths = make_torrents(root, n, url)
        cmd = [binary, "download", *paths, "-o", data, "--seed", "--no-dht",
               "--bind", "127.0.0.1", "--port", str(port), "--progress", "none"]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < seconds and p.poll() is None:
                time.sleep(1)
        finally:
            # Stop the measurement before the `stopped` announces of the shutdown.
            with Tracker.log_lock:
                log = list(Tracker.announces)
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    server.shutdown()
    per = {}
    for t, ih, ev in log:
        per.setdefault(ih, []).append((t, ev))
    counts = sorted(len(v) for v in per.values())
    seconds_hist = {}
    for t, _, _ in log:
        seconds_hist[int(t - t0)] = seconds_hist.get(int(t - t0), 0) + 1
    gaps = [b[0] - a[0] for v in per.values() for a, b in zip(v, v[1:])]
    return {
        "torrents announced": len(per),
        "announces": len(log),
        "per torrent min/median/max": (
            "%d/%d/%d" % (counts[0], counts[len(counts) // 2], counts[-1]) if counts else "-"
        ),
        "busiest second": max(seconds_hist.values()) if seconds_hist else 0,
        "first to last started (s)": (
            "%.1f" % (max(v[0][0] for v in per.values()) - min(v[0][0] for v in per.values()))
            if per else "-"
        ),
        "shortest gap (s)": "%.0f" % min(gaps) if gaps else "none",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--btcore", required=True)
    ap.add_argument("--btcore-b", help="a second build, run after the first")
    ap.add_argument("--torrents", type=int, default=500)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--interval", type=int, default=1800)
    ap.add_argument("--min-interval", type=int, default=900)
    ap.add_argument("--port", type=int, default=46881)
    a = ap.parse_args()
    Tracker.interval = a.interval
    Tracker.min_interval = a.min_interval
    print("%d torrents seeded, tracker interval %d s, min interval %d s, %d s run"
          % (a.torrents, a.interval, a.min_interval, a.seconds))
    for label, b in (("A", a.btcore), ("B", a.btcore_b)):
        if not b:
            continue
        r = run(b, a.torrents, a.seconds, a.port)
        print("%s %s" % (label, b))
        for k, v in r.items():
            print("   %-28s %s" % (k, v))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
