#!/usr/bin/python3
"""Download benchmark: btcore beside libtorrent, Transmission and aria2, in one run.

Every leecher downloads the same payload on 127.0.0.1 from the same seeder; for each
the script prints MB/s, CPU seconds (user+sys) and peak memory: the largest resident
set (VmHWM) and the largest anonymous resident set (RssAnon, sampled every 20 ms),
which is the figure to compare (libtorrent and Transmission map the payload, so whole
RSS counts file pages). Then btcore seeds for each of them, and a swarm case runs one
seeder and eight leechers.

Usage (needs python3-libtorrent, transmission-cli, aria2; run with Debian's python3):
    /usr/bin/python3 bench/download.py [--size-mib 1024] [--only btcore,libtorrent,...]
        [--cases lt-seed,bt-seed,swarm] [--swarm 8] [--rounds 3] [--btcore PATH]
        [--btcore-b PATH]   (A/B of two builds: --only btcore,btcore-b --cases lt-seed;
                            in the bt-seed case build B also seeds for its own leecher)
        [--attack]          (hostile peers beside the honest ones, bench/attack.py)
        [--transport utp]   (every peer over uTP: libtorrent with TCP off, no aria2)
        [--formats v1,v2,hybrid]  (the same payload as several torrents, see below)

With --attack, each leecher of the lt-seed case is also given a poisoning peer on
127.0.0.2 that serves half its blocks wrong and dials it again from new ports with new
peer ids, and each btcore seeder of the bt-seed case is flooded from 127.0.0.3 by
connections that request without end and never read, plus bare connections that hold
slots. The figures are then those of the honest transfer under attack (btcore and
libtorrent leechers only: the others cannot be handed a peer).

The leecher cases run every client --rounds times, taking turns, and print the median
of each figure with the range of MB/s and CPU seconds: on a shared or virtual machine
one run moves by 20-40%. A row gives the leecher's MB/s, CPU seconds and CPU seconds
per GiB, the seeder's CPU seconds (below), and the leecher's anonymous and peak RSS.

With --formats (v1, v2, hybrid; comma-separated; without it: v1 alone, as always), the
payload is also made into a BitTorrent v2-only torrent (`btcore create --v2`: SHA-256
merkle trees of 16 KiB leaves) and a hybrid one (`btcore create --hybrid`: both SHA-1
pieces and the merkle trees), the v1 one by plain `btcore create`, all with btcore's
automatic piece length (the same for the three). The leecher cases then run every
(client, format) in turn, formats interleaved within each round, and print one table
with a row per client and format: MB/s, the leecher's CPU seconds and CPU seconds per
GiB, and the seeder's CPU seconds during the transfer (from the moment it said it was
ready to the leecher's end) and before it (process start and the check of the payload,
which for libtorrent is hashing it: SHA-1, SHA-256 or both). aria2 1.36 and Transmission
3.00 have no v2: they are left out of the v2-only rows, and of the hybrid ones too (the
output says so): both seeders, libtorrent 2.0.8 and btcore, dial them with the hybrid's
truncated v2 info hash, which they reject ("Unknown info hash"), so they never start
(aria2 then waits for the whole --timeout). The swarm case runs the first format
listed; --attack runs v1 only. For the figures of BENCHMARKS.md ("v2 beside v1"):
    /usr/bin/python3 bench/download.py --cases lt-seed --only btcore,libtorrent \
        --formats v1,v2,hybrid --rounds 3
"""
import argparse
import hashlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def transport():
    """The peer transport of this run (--transport; children inherit it)."""
    return os.environ.get("BTCORE_BENCH_TRANSPORT", "tcp")


def bt_transport():
    """btcore's flags for the run's transport."""
    return ["--transport", transport()]


def lt_session(port):
    import libtorrent as lt
    utp = transport() == "utp"
    return lt.session({
        "listen_interfaces": "127.0.0.1:%d" % port,
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
        "enable_natpmp": False, "allow_multiple_connections_per_ip": True,
        "alert_mask": 0, "unchoke_slots_limit": 32,
        "enable_outgoing_utp": utp, "enable_incoming_utp": utp,
        "enable_outgoing_tcp": not utp, "enable_incoming_tcp": not utp,
    })


def role_lt(args):
    """Run as a libtorrent seeder or leecher (a separate process, measured alone)."""
    import libtorrent as lt
    ses = lt_session(args.port)
    ti = lt.torrent_info(args.torrent)
    h = ses.add_torrent({"ti": ti, "save_path": args.dir})
    for p in args.peer or []:
        host, port = p.rsplit(":", 1)
        h.connect_peer((host, int(port)))
    if args.role == "lt-seed":
        while not h.status().is_seeding:
            time.sleep(0.05)
        print("ready", flush=True)
        # Dial the leechers we were given, again every second (they accept incoming).
        while True:
            time.sleep(1)
            for p in args.peer or []:
                host, port = p.rsplit(":", 1)
                h.connect_peer((host, int(port)))
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        st = h.status()
        if st.is_seeding:
            return 0
        time.sleep(0.02)
    return 1


class Proc:
    """A child process whose CPU and memory are watched until it ends or is stopped."""

    def __init__(self, cmd, cwd=None, log=None):
        self.out = open(log, "wb") if log else subprocess.DEVNULL
        self.p = subprocess.Popen(cmd, cwd=cwd, stdout=self.out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        self.peak_anon = 0
        self.peak_rss = 0
        self.cpu = 0.0
        self.start = time.time()

    def sample(self):
        try:
            with open("/proc/%d/status" % self.p.pid) as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        self.peak_anon = max(self.peak_anon, int(line.split()[1]) * 1024)
                    elif line.startswith("VmHWM:"):
                        self.peak_rss = max(self.peak_rss, int(line.split()[1]) * 1024)
            with open("/proc/%d/stat" % self.p.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
                self.cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.alive():
            self.sample()
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.p.wait()
        if self.out is not subprocess.DEVNULL:
            self.out.close()


def sha1_file(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 22)
            if not b:
                return h.hexdigest()
            h.update(b)


def leech(kind, torrent, name, out_dir, seeder_port, btcore, timeout, work, peers=()):
    port = free_port()
    extra = [a for p in peers for a in ("--peer", p)]
    marker = os.path.join(work, "done-%s-%d" % (kind, port))
    if kind in ("btcore", "btcore-b"):
        cmd = [btcore, "download", torrent, "-o", out_dir, "--port", str(port),
               "--bind", "127.0.0.1", "--no-trackers", "--no-dht", "--progress", "none"] + extra + bt_transport()
    elif kind == "libtorrent":
        cmd = [sys.executable, __file__, "--role", "lt-leech", "--torrent", torrent, "--dir", out_dir,
               "--port", str(port), "--timeout", str(timeout)] + extra
    elif kind == "aria2":
        cmd = ["aria2c", "--no-conf=true", "--dir", out_dir, "--listen-port=%d" % port,
               "--seed-time=0", "--enable-dht=false", "--enable-dht6=false",
               "--bt-enable-lpd=false", "--enable-peer-exchange=false", "--disable-ipv6=true",
               "--file-allocation=none", "--auto-save-interval=0", "--bt-save-metadata=false",
               "--follow-torrent=false", "--summary-interval=0", "--console-log-level=error",
               torrent]
    elif kind == "transmission":
        script = os.path.join(work, "fin-%d.sh" % port)
        with open(script, "w") as f:
            f.write("#!/bin/sh\ntouch '%s'\n" % marker)
        os.chmod(script, 0o755)
        home = os.path.join(work, "tr-home-%d" % port)
        os.makedirs(home, exist_ok=True)
        import json
        with open(os.path.join(home, "settings.json"), "w") as f:
            json.dump({"dht-enabled": False, "lpd-enabled": False, "pex-enabled": False,
                       "utp-enabled": transport() == "utp", "port-forwarding-enabled": False,
                       "rename-partial-files": False, "bind-address-ipv4": "127.0.0.1",
                       "peer-port": port, "peer-port-random-on-start": False,
                       "blocklist-enabled": False, "encryption": 0}, f)
        cmd = ["transmission-cli", "-g", home, "-w", out_dir, "-p", str(port), "-f", script,
               "-B", "-M", "-D", "-U", "-et", torrent]
    else:
        raise SystemExit("unknown client " + kind)
    os.makedirs(out_dir, exist_ok=True)
    return Proc(cmd, log=os.path.join(work, "%s-%d.log" % (kind, port))), marker, port


def measure(procs_markers, size, deadline_s, seeder, dial=None):
    """Waits for every leecher; returns [(mbps, cpu, peak_anon, peak_rss, ok)]."""
    results = [None] * len(procs_markers)
    start = time.time()
    while time.time() - start < deadline_s and any(r is None for r in results):
        for i, (p, marker, _) in enumerate(procs_markers):
            if results[i] is not None:
                continue
            p.sample()
            done = (not p.alive() and p.p.returncode == 0) or os.path.exists(marker)
            if done:
                wall = time.time() - p.start
                p.stop()
                results[i] = (size / 1e6 / wall, p.cpu, p.peak_anon, p.peak_rss, True, wall)
            elif not p.alive():
                results[i] = (0, p.cpu, p.peak_anon, p.peak_rss, False, 0)
        if dial:
            dial()
        if seeder is not None:
            seeder.sample()
            # A seeder that died (e.g. at `import libtorrent`) serves nobody: the
            # leechers still waiting fail now instead of at the deadline.
            if not seeder.alive():
                print("  the seeder exited (%s): its leechers fail" % seeder.p.returncode,
                      file=sys.stderr)
                break
        time.sleep(0.02)
    for i, (p, _, _) in enumerate(procs_markers):
        if results[i] is None:
            p.stop()
            results[i] = (0, p.cpu, p.peak_anon, p.peak_rss, False, 0)
    return results


# --formats: the torrent each format is made into, and the clients that cannot use it
# (no v2; a hybrid's seeder dials them with its v2 hash: see the module docs).
FORMATS = {"v1": [], "v2": ["--v2"], "hybrid": ["--hybrid"]}
NO_V2 = ("aria2", "transmission")

FHEADER = "%-12s %-7s %8s %7s %9s %10s %10s %9s %9s" % (
    "leecher", "format", "MB/s", "CPU s", "CPU s/GiB", "seeder CPU", "seed check", "anon MiB",
    "peak MiB")


def frow(kind, fmt, r, gib):
    """A row of a leecher table: r is (MB/s, CPU, anon, rss, ok, wall, seeder CPU during
    the transfer, seeder CPU before it)."""
    mbps, cpu, anon, rss, ok, _, scpu, scheck = r
    if not ok:
        return "%-12s %-7s %8s %7.2f %9s %10.2f %10.2f %9s %9s" % (
            kind, fmt, "FAILED", cpu, "-", scpu, scheck, "-", "-")
    return "%-12s %-7s %8.1f %7.2f %9.2f %10.2f %10.2f %9.1f %9.1f" % (
        kind, fmt, mbps, cpu, cpu / gib, scpu, scheck, anon / 2**20, rss / 2**20)


def piece_length(torrent):
    """The piece length a .torrent states (bytes), or 0."""
    with open(torrent, "rb") as f:
        data = f.read()
    at = data.find(b"12:piece lengthi")
    if at < 0:
        return 0
    at += len(b"12:piece lengthi")
    return int(data[at:data.index(b"e", at)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--role")
    ap.add_argument("--torrent")
    ap.add_argument("--dir")
    ap.add_argument("--port", type=int)
    ap.add_argument("--peer", action="append")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--only", default="btcore,libtorrent,transmission,aria2")
    ap.add_argument("--swarm", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3,
                    help="leecher cases: each client this many times, in turn; medians printed")
    ap.add_argument("--cases", default="lt-seed,bt-seed,swarm",
                    help="which cases to run: lt-seed, bt-seed, swarm (comma-separated)")
    ap.add_argument("--btcore", default=os.path.join(ROOT, "target", "release", "btcore"))
    ap.add_argument("--attack", action="store_true",
                    help="hostile peers beside the honest ones (see the module docs)")
    ap.add_argument("--btcore-b", dest="btcore_b",
                    help="a second btcore build, run as the leecher `btcore-b` (A/B runs: "
                         "--only btcore,btcore-b --cases lt-seed)")
    ap.add_argument("--formats",
                    help="comma-separated torrent formats of the payload: v1, v2 (v2-only), "
                         "hybrid; each leecher downloads each, formats interleaved, one table "
                         "row per client and format (default: v1 alone, the usual tables)")
    ap.add_argument("--transport", choices=("tcp", "utp"),
                    help="peer transport: tcp (the default) or utp (btcore --transport utp, "
                         "libtorrent with TCP off; Transmission with uTP on; aria2, which has "
                         "no uTP, left out)")
    args = ap.parse_args()
    if args.transport:
        os.environ["BTCORE_BENCH_TRANSPORT"] = args.transport
    if args.role:
        sys.exit(role_lt(args))
    clients = args.only.split(",")
    if transport() == "utp":
        clients = [c for c in clients if c != "aria2"]
    if "btcore-b" in clients and not args.btcore_b:
        raise SystemExit("--only btcore-b needs --btcore-b PATH")
    formats = args.formats.split(",") if args.formats else ["v1"]
    for fmt in formats:
        if fmt not in FORMATS:
            raise SystemExit("unknown format %r (v1, v2, hybrid)" % fmt)
    if args.attack and formats != ["v1"]:
        raise SystemExit("--attack runs v1 torrents only")
    if not os.path.exists(args.btcore):
        subprocess.check_call(["cargo", "build", "--release", "-p", "btcore-cli"], cwd=ROOT)
    work = tempfile.mkdtemp(prefix="btcore-bench-")
    try:
        seed_dir = os.path.join(work, "seed")
        os.makedirs(seed_dir)
        payload = os.path.join(seed_dir, "payload.bin")
        size = args.size_mib * 2**20
        with open(payload, "wb") as f:
            left = size
            while left:
                n = min(left, 1 << 24)
                f.write(os.urandom(n))
                left -= n
        digest = sha1_file(payload)
        torrent = os.path.join(work, "payload.torrent")
        torrents = {}
        for fmt in formats:
            path = torrent if fmt == "v1" else os.path.join(work, "payload-%s.torrent" % fmt)
            t0 = os.times()
            subprocess.check_call([args.btcore, "create", payload, "-o", path] + FORMATS[fmt],
                                  stdout=subprocess.DEVNULL)
            t1 = os.times()
            torrents[fmt] = path
            if args.formats:
                print("%-6s `btcore create %s`: piece length %d KiB, %.2f CPU s to hash the payload"
                      % (fmt, " ".join(FORMATS[fmt] + ["PAYLOAD"]), piece_length(path) // 1024,
                         t1.children_user + t1.children_system - t0.children_user - t0.children_system))
        # The swarm case runs the first format listed.
        torrent = torrents[formats[0]]
        # The payload's write-back would otherwise run during the first case and charge
        # its leecher for it.
        os.sync()
        # On a virtual machine, the first write into memory the guest has never used
        # costs a fault in the host (seen: several CPU seconds per GiB, charged to
        # whichever leecher runs first). Write and drop 2 GiB first, so every case
        # starts from page cache the host already backs.
        warm = os.path.join(work, "warm-up")
        with open(warm, "wb") as f:
            block = b"\0" * (1 << 24)
            for _ in range(2 * 64):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        os.remove(warm)
        print("payload %d MiB, %s clients on 127.0.0.1; machine: %d cores" % (args.size_mib, len(clients), os.cpu_count()))

        def run_case(title, seeder_cmd, kinds):
            """Each leecher listens first; the seeder then dials it (every client
            accepts incoming connections); the clock starts with the seeder. With
            --rounds N, the clients take turns N times and each figure is the median."""
            return run_formats(title, seeder_cmd, kinds)

        def run_formats(title, seeder_cmd, kinds):
            """Every (client, format) in turn (v1 alone without --formats), the formats
            interleaved within each round; one table row per client and format."""
            gib = size / 2**30
            pairs = [(k, f) for k in kinds for f in formats if f == "v1" or k not in NO_V2]
            print("\n" + title + ", formats " + ",".join(formats)
                  + (" (median of %d rounds, formats and clients in turn)" % args.rounds
                     if args.rounds > 1 else ""))
            left_out = [k for k in kinds if k in NO_V2]
            if left_out and formats != ["v1"]:
                print("(%s: no BitTorrent v2, left out of the v2 and hybrid rows; the seeder dials "
                      "a hybrid's peers with its v2 hash, which they reject)" % ", ".join(left_out))
            print("leecher CPU s/GiB = CPU s / %.3f GiB; seeder CPU: during the transfer; "
                  "seed check: seeder start and check" % gib)
            print(FHEADER + ("   MB/s range   CPU s/GiB range" if args.rounds > 1 else ""))
            runs = {p: [] for p in pairs}
            for rnd in range(args.rounds):
                for fmt in formats:
                    for kind in kinds:
                        if (kind, fmt) not in runs:
                            continue
                        runs[(kind, fmt)].append(run_one(kind, seeder_cmd, fmt))
                        if args.rounds > 1:
                            print("  round %d %s" % (rnd + 1, frow(kind, fmt, runs[(kind, fmt)][-1], gib)),
                                  flush=True)
            for kind, fmt in pairs:
                rs = runs[(kind, fmt)]
                if not all(r[4] for r in rs):
                    print(frow(kind, fmt, next(r for r in rs if not r[4]), gib), flush=True)
                    continue
                med = [statistics.median(r[i] for r in rs) for i in range(len(rs[0]))]
                med[4] = True
                line = frow(kind, fmt, med, gib)
                if args.rounds > 1:
                    line += "  %5.0f-%-5.0f  %5.2f-%-5.2f" % (
                        min(r[0] for r in rs), max(r[0] for r in rs),
                        min(r[1] for r in rs) / gib, max(r[1] for r in rs) / gib)
                print(line, flush=True)

        attacker = os.path.join(HERE, "attack.py")

        def run_one(kind, seeder_cmd, fmt="v1"):
            """One leecher of `kind` against a fresh seeder, for the torrent of `fmt`:
            (MB/s, CPU, anon, rss, ok, wall, seeder CPU during the transfer, seeder CPU
            before it)."""
            torrent = torrents[fmt]
            out = os.path.join(work, "leech-%s" % kind)
            exe = args.btcore_b if kind == "btcore-b" else args.btcore
            attack = args.attack and kind in ("btcore", "btcore-b", "libtorrent")
            poison = attack and seeder_cmd is lt_seed
            flood = attack and seeder_cmd is bt_seed
            poison_addr = "127.0.0.2:%d" % free_port()
            pm = leech(kind, torrent, "payload.bin", out, free_port(), exe, args.timeout, work,
                       peers=[poison_addr] if poison else [])
            hostile = None
            if poison:
                hostile = Proc([sys.executable, attacker, "poison", torrent, "--listen", poison_addr,
                                "--dial", "127.0.0.1:%d" % pm[2], "--data", seed_dir, "--share", "0.5"],
                               log=os.path.join(work, "attack-%s.log" % kind))
            time.sleep(1.5)
            slog = os.path.join(work, "seeder-%s.log" % kind)
            seeder_port = free_port()
            cmd = seeder_cmd(seeder_port, pm[2], torrent)
            if kind == "btcore-b" and seeder_cmd is bt_seed:
                # A/B: build B seeds for its own leecher, so the seeder is compared too.
                cmd[0] = args.btcore_b
            seeder = Proc(cmd, log=slog)
            # The clock starts when the seeder has checked its data and dials.
            t_wait = time.time()
            while time.time() - t_wait < 120 and seeder.alive():
                with open(slog, "rb") as f:
                    text = f.read()
                if b"ready" in text or b"btcore: seeding" in text:
                    break
                time.sleep(0.01)
            seeder.sample()
            seed_check = seeder.cpu
            if flood:
                hostile = Proc([sys.executable, attacker, "flood", torrent, "127.0.0.1:%d" % seeder_port,
                                "--source", "127.0.0.3"], log=os.path.join(work, "attack-%s.log" % kind))
            pm[0].start = time.time()
            r = measure([pm], size, args.timeout, seeder)[0]
            seeder.stop()
            if hostile:
                hostile.p.send_signal(signal.SIGTERM)
                try:
                    hostile.p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                hostile.stop()
                with open(os.path.join(work, "attack-%s.log" % kind), "rb") as f:
                    lines = f.read().decode("utf-8", "replace").strip().splitlines()
                print("    %s: %s; seeder peak anon RSS %.1f MiB" % (
                    kind, lines[-1] if lines else "attacker silent", seeder.peak_anon / 2**20), flush=True)
            got = os.path.join(out, "payload.bin")
            ok = r[4] and os.path.exists(got) and sha1_file(got) == digest
            shutil.rmtree(out, ignore_errors=True)
            return r[:4] + (ok,) + r[5:] + (seeder.cpu - seed_check, seed_check)

        lt_seed = lambda port, peer, torrent: [sys.executable, __file__, "--role", "lt-seed", "--torrent", torrent,
                                               "--dir", seed_dir, "--port", str(port), "--peer", "127.0.0.1:%d" % peer]
        # btcore as the seeder, dialing each leecher the same way.
        bt_seed = lambda port, peer, torrent: [args.btcore, "seed", torrent, seed_dir, "--port", str(port), "--bind",
                                               "127.0.0.1", "--no-trackers", "--no-dht", "--progress", "none",
                                               "--peer", "127.0.0.1:%d" % peer] + bt_transport()
        cases = args.cases.split(",")
        if "lt-seed" in cases:
            run_case("leechers downloading from a libtorrent seeder", lt_seed, clients)

        if "bt-seed" in cases:
            run_case("leechers downloading from a btcore seeder", bt_seed, clients)

        # Swarm: one btcore seeder and N leechers of one kind who all know each other.
        for kind in [c for c in ("btcore", "libtorrent") if c in clients and args.swarm > 0 and "swarm" in cases]:
            print("\nswarm: 1 btcore seeder, %d %s leechers (all know each other)" % (args.swarm, kind))
            sp = free_port()
            ports = [free_port() for _ in range(args.swarm)]
            seeder = Proc([args.btcore, "seed", torrent, seed_dir, "--port", str(sp), "--bind", "127.0.0.1",
                           "--no-trackers", "--no-dht", "--progress", "none"] + bt_transport())
            time.sleep(1.0)
            pms = []
            for i, port in enumerate(ports):
                out = os.path.join(work, "swarm-%s-%d" % (kind, i))
                os.makedirs(out, exist_ok=True)
                peers = ["127.0.0.1:%d" % sp] + ["127.0.0.1:%d" % q for q in ports[:i]]
                if kind == "btcore":
                    cmd = [args.btcore, "download", torrent, "-o", out, "--port", str(port), "--bind",
                           "127.0.0.1", "--no-trackers", "--no-dht", "--progress", "none"] + bt_transport()
                    for p in peers:
                        cmd += ["--peer", p]
                else:
                    cmd = [sys.executable, __file__, "--role", "lt-leech", "--torrent", torrent, "--dir", out,
                           "--port", str(port), "--timeout", str(args.timeout)]
                    for p in peers:
                        cmd += ["--peer", p]
                pms.append((Proc(cmd), os.path.join(work, "never"), port))
            t0 = time.time()
            rs = measure(pms, size, args.timeout, seeder)
            seeder.stop()
            total = time.time() - t0
            ok = sum(1 for r in rs if r[4])
            walls = sorted(r[5] for r in rs if r[4])
            cpu = sum(r[1] for r in rs)
            print("%d/%d complete; last at %.1f s; median %.1f s; %.0f MB/s aggregate; CPU %.1f s in all; max anon RSS %.1f MiB"
                  % (ok, len(rs), total, walls[len(walls) // 2] if walls else 0,
                     size * ok / 1e6 / total, cpu, max(r[2] for r in rs) / 2**20), flush=True)
            for i in range(args.swarm):
                shutil.rmtree(os.path.join(work, "swarm-%s-%d" % (kind, i)), ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
