#!/usr/bin/env python3
"""`btcore daemon` beside `transmission-daemon`, in one run: N small torrents whose
data is on disk, added over the RPC to each daemon. Prints for each: the time from the
first add until every torrent seeds, the RSS after settling, the CPU seconds over an
idle minute, and the time of a `torrent-get` of all torrents with the fields
`transmission-remote -l` asks for (median and worst of 20).

    bench/daemon.py --btcore target/release/btcore [--torrents 1000] [--idle-seconds 60]
                    [--only btcore|transmission]

Both run on 127.0.0.1 with no tracker, DHT, LPD, uTP or port mapping, each with its own
copy of the data (a check reads it), in its own directory under a temporary one.
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

LIST_FIELDS = [
    "error", "errorString", "eta", "id", "isFinished", "leftUntilDone", "name",
    "peersGettingFromUs", "peersSendingToUs", "rateDownload", "rateUpload",
    "sizeWhenDone", "status", "uploadRatio",
]
PIECE = 16384


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


def make_torrents(data_dir, n, size):
    """n single-file torrents of `size` bytes, data in data_dir; returns the .torrents."""
    os.makedirs(data_dir, exist_ok=True)
    out = []
    for i in range(n):
        name = "t%05d.bin" % i
        data = hashlib.sha256(b"%d" % i).digest() * (size // 32 + 1)
        data = data[:size]
        with open(os.path.join(data_dir, name), "wb") as f:
            f.write(data)
        pieces = b"".join(
            hashlib.sha1(data[o:o + PIECE]).digest() for o in range(0, size, PIECE))
        info = {"name": name, "length": size, "piece length": PIECE, "pieces": pieces}
        out.append(bencode({"info": info}))
    return out


class Rpc:
    def __init__(self, port):
        self.port = port
        self.sid = ""

    def call(self, method, args):
        body = json.dumps({"method": method, "arguments": args}).encode()
        for _ in range(3):
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            c.request("POST", "/transmission/rpc", body,
                      {"X-Transmission-Session-Id": self.sid,
                       "Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            c.close()
            if r.status == 409:
                self.sid = r.getheader("X-Transmission-Session-Id")
                continue
            if r.status != 200:
                raise RuntimeError("%s: HTTP %d" % (method, r.status))
            return json.loads(data)
        raise RuntimeError("no session id")


def wait_port(port, limit=30):
    end = time.time() + limit
    while time.time() < end:
        try:
            Rpc(port).call("session-get", {})
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError("nothing answers on %d" % port)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(parts[11]) + int(parts[12])) / tick


def run_one(name, cmd, rpc_port, data_dir, torrents, idle):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=os.setsid)
    try:
        wait_port(rpc_port)
        rpc = Rpc(rpc_port)
        start = time.time()
        for t in torrents:
            r = rpc.call("torrent-add", {"metainfo": base64.b64encode(t).decode(),
                                         "download-dir": data_dir})
            if r["result"] != "success":
                raise RuntimeError("%s: torrent-add: %s" % (name, r["result"]))
        added = time.time() - start
        while True:
            r = rpc.call("torrent-get", {"fields": ["status", "percentDone"]})
            ts = r["arguments"]["torrents"]
            if len(ts) == len(torrents) and all(t["status"] == 6 for t in ts):
                break
            if time.time() - start > 600:
                raise RuntimeError("%s: not all seeding after 600 s" % name)
            time.sleep(0.2)
        loaded = time.time() - start
        time.sleep(5)
        rss = rss_kib(proc.pid)
        c0 = cpu_seconds(proc.pid)
        time.sleep(idle)
        cpu = cpu_seconds(proc.pid) - c0
        times = []
        for _ in range(20):
            t0 = time.time()
            r = rpc.call("torrent-get", {"fields": LIST_FIELDS})
            times.append((time.time() - t0) * 1000)
            assert len(r["arguments"]["torrents"]) == len(torrents)
        return {
            "name": name, "add_s": added, "load_s": loaded, "rss_mib": rss / 1024,
            "idle_cpu_s": cpu, "get_ms_median": statistics.median(times),
            "get_ms_max": max(times),
        }
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--btcore", required=True)
    ap.add_argument("--torrents", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64 * 1024)
    ap.add_argument("--idle-seconds", type=int, default=60)
    ap.add_argument("--only", choices=["btcore", "transmission"])
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="btcore-bench-daemon-")
    try:
        torrents = make_torrents(os.path.join(tmp, "data"), a.torrents, a.size)
        results = []
        if a.only in (None, "btcore"):
            d = os.path.join(tmp, "btcore")
            shutil.copytree(os.path.join(tmp, "data"), os.path.join(d, "data"))
            cmd = [a.btcore, "daemon", "--rpc", "127.0.0.1:19391", "--port", "0",
                   "--no-dht", "--download-dir", os.path.join(d, "data"),
                   "--state-dir", os.path.join(d, "state")]
            results.append(run_one("btcore daemon", cmd, 19391, os.path.join(d, "data"),
                                   torrents, a.idle_seconds))
        if a.only in (None, "transmission") and shutil.which("transmission-daemon"):
            d = os.path.join(tmp, "transmission")
            shutil.copytree(os.path.join(tmp, "data"), os.path.join(d, "data"))
            cmd = ["transmission-daemon", "-f", "-g", os.path.join(d, "config"),
                   "-p", "19392", "-P", "51499", "-T", "--no-dht", "--no-lpd",
                   "--no-portmap", "-w", os.path.join(d, "data"), "-e",
                   os.path.join(d, "log")]
            results.append(run_one("transmission-daemon", cmd, 19392,
                                   os.path.join(d, "data"), torrents, a.idle_seconds))
        print("%d torrents of %d KiB, idle %d s" % (a.torrents, a.size // 1024,
                                                   a.idle_seconds))
        print("%-20s %10s %10s %10s %12s %14s %12s" % (
            "daemon", "add s", "seeding s", "RSS MiB", "idle CPU s", "get median ms",
            "get max ms"))
        for r in results:
            print("%-20s %10.2f %10.2f %10.1f %12.2f %14.1f %12.1f" % (
                r["name"], r["add_s"], r["load_s"], r["rss_mib"], r["idle_cpu_s"],
                r["get_ms_median"], r["get_ms_max"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
