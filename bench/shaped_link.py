#!/usr/bin/python3
"""uTP on a shaped link: does btcore's uTP fill a slow link, yield to TCP and keep the
queue short? Beside btcore over TCP and libtorrent's uTP, in one run.

    sudo /usr/bin/python3 bench/shaped_link.py [--cases bt-utp,bt-tcp,lt-utp]
        [--size-mib 200] [--rate-mbit 20] [--buffer-ms 500] [--btcore PATH]
        [--warmup 5] [--alone 15] [--beside 10]

Needs root (network namespaces, tc), iproute2, iperf3, ping (iputils-ping; installed
with apt-get when missing) and, for the lt-utp case, python3-libtorrent (Debian's
/usr/bin/python3). btcore defaults to target/release/btcore
(`cargo build --release -p btcore-cli`).

The setup, made afresh for every case: three network namespaces, seeder, router and
leecher, joined by two veth pairs (10.201.1.0/24 and 10.201.2.0/24); on the router's
egress towards the leecher
`tc qdisc add ... root tbf rate 20mbit burst 32kbit latency 500ms`: a 20 Mbit/s link
whose queue holds 500 ms of data (1.25 MB). The queue is in a router, not in the
seeder's own stack, where TCP Small Queues would keep a local TCP sender from ever
filling it. No netem: the only delay is the queue's, which is what a delay-based
congestion control (LEDBAT) must keep short. TCP in the namespaces is set to cubic, or
reno where the host allows no cubic (--tcp-cc): a loss-based TCP, the kind that fills a
buffer (bbr, some hosts' default, keeps queues short by itself). The leecher is btcore
in every case (`btcore download --transport utp|tcp`); the seeder is btcore
(`btcore seed --transport utp|tcp`) or libtorrent with TCP off.

A baseline first: ping alone (the idle RTT), then iperf3 alone for --beside seconds
(what one TCP flow gets of the link, and the RTT it makes by filling the queue). Then
for each case:
  1. idle ping (3 s);
  2. the seeder and the leecher start; once bytes flow, --warmup seconds pass;
  3. the seeder alone for --alone seconds: link fill (bytes the tbf qdisc sent, headers
     included, over rate x time) and the RTT of a ping every 0.2 s beside it;
  4. an iperf3 TCP flow in the same direction (server in the seeder's namespace,
     client in the leecher's with -R, so the rates are those the receiver saw) for
     --beside seconds beside the transfer: its share of the link second by second,
     the first second it reaches 80%, and the ping RTT.
The payload is large enough that the transfer outlasts the measurement (200 MiB at
20 Mbit/s takes 84 s); a case whose leecher finishes early is flagged.

Every wait is bounded; every process started is killed by its process group; the
namespaces are deleted at the end, also on error or Ctrl-C.
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

NS_S = "btcore-shaped-seed"
NS_R = "btcore-shaped-router"
NS_L = "btcore-shaped-leech"
DEV_S = "vshs"      # seeder's end of the seeder-router veth
DEV_RS = "vshrs"    # router's end of it
DEV_RL = "vshrl"    # router's end of the router-leecher veth: the shaped egress
DEV_L = "vshl"      # leecher's end of it
IP_S = "10.201.1.2"
IP_RS = "10.201.1.1"
IP_RL = "10.201.2.1"
IP_L = "10.201.2.2"
BT_PORT_S = 16881
BT_PORT_L = 16882
IPERF_PORT = 15201


def log(msg):
    print(msg, flush=True)


def run(cmd, check=True, timeout=30):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    if check and r.returncode != 0:
        raise SystemExit("failed (%d): %s\n%s" % (r.returncode, " ".join(cmd), r.stdout.decode()))
    return r.stdout.decode()


def ns(name, cmd):
    return ["ip", "netns", "exec", name] + cmd


# ---------------------------------------------------------------- the link


USED_CC = {}


def teardown():
    for n in (NS_S, NS_R, NS_L):
        if os.path.exists("/run/netns/" + n):
            run(["ip", "netns", "del", n], check=False)


def setup(rate_mbit, buffer_ms, cc):
    teardown()
    for n in (NS_S, NS_R, NS_L):
        run(["ip", "netns", "add", n])
        run(["ip", "-n", n, "link", "set", "lo", "up"])
        # TCP's congestion control is per namespace: the loss-based one (cubic) is the
        # one that fills a buffer; a host whose default is bbr keeps queues short itself.
        # Only a congestion control in the host's tcp_allowed_congestion_control may be
        # set in a namespace: the first of the list given that is.
        for c in cc.split(","):
            if subprocess.run(ns(n, ["sysctl", "-q", "-w", "net.ipv4.tcp_congestion_control=" + c]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=10).returncode == 0:
                break
        else:
            raise SystemExit("none of the congestion controls %s may be set" % cc)
        USED_CC[n] = run(ns(n, ["sysctl", "-n", "net.ipv4.tcp_congestion_control"])).strip()
    for a, b, da, db, ipa, ipb in ((NS_S, NS_R, DEV_S, DEV_RS, IP_S, IP_RS),
                                   (NS_L, NS_R, DEV_L, DEV_RL, IP_L, IP_RL)):
        run(["ip", "link", "add", da, "netns", a, "type", "veth", "peer", "name", db,
             "netns", b])
        run(["ip", "-n", a, "addr", "add", ipa + "/24", "dev", da])
        run(["ip", "-n", b, "addr", "add", ipb + "/24", "dev", db])
        run(["ip", "-n", a, "link", "set", da, "up"])
        run(["ip", "-n", b, "link", "set", db, "up"])
        run(["ip", "-n", a, "route", "add", "default", "via", ipb])
    run(ns(NS_R, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
    run(ns(NS_R, ["tc", "qdisc", "add", "dev", DEV_RL, "root", "tbf", "rate", "%dmbit" % rate_mbit,
                  "burst", "32kbit", "latency", "%dms" % buffer_ms]))
    # Bounded: the veths come up at once, but wait for a ping to pass end to end.
    for _ in range(50):
        if subprocess.run(ns(NS_S, ["ping", "-n", "-c", "1", "-W", "1", IP_L]),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=5).returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit("the link does not pass pings")


def qdisc_stats():
    """(bytes sent, packets dropped, backlog bytes) of the router's tbf qdisc."""
    out = run(ns(NS_R, ["tc", "-s", "qdisc", "show", "dev", DEV_RL]))
    sent = int(re.search(r"Sent (\d+) bytes", out).group(1))
    dropped = int(re.search(r"dropped (\d+)", out).group(1))
    m = re.search(r"backlog (\d+)([KM]?)b", out)
    backlog = int(m.group(1)) * {"": 1, "K": 1000, "M": 1000000}[m.group(2)] if m else 0
    return sent, dropped, backlog


# ---------------------------------------------------------------- processes


class Proc:
    def __init__(self, cmd, logpath):
        self.cmd = cmd
        self.out = open(logpath, "wb")
        self.logpath = logpath
        self.p = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT,
                                  start_new_session=True)

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.alive():
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.out.close()


LIVE = []


def start(cmd, logpath):
    p = Proc(cmd, logpath)
    LIVE.append(p)
    return p


def stop(p):
    p.stop()
    if p in LIVE:
        LIVE.remove(p)


def ping_start(seconds, work, tag):
    """A ping every 0.2 s from the seeder's namespace: its request waits in the shaped queue."""
    return start(ns(NS_S, ["ping", "-n", "-i", "0.2", "-w", str(int(seconds)), IP_L]),
                 os.path.join(work, "ping-%s.log" % tag))


def ping_result(p, seconds):
    try:
        p.p.wait(timeout=seconds + 5)
    except subprocess.TimeoutExpired:
        pass
    stop(p)
    with open(p.logpath) as f:
        rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", f.read())]
    return rtts


def rtt_summary(rtts):
    if not rtts:
        return {"median": float("nan"), "p90": float("nan"), "max": float("nan"), "n": 0}
    s = sorted(rtts)
    return {"median": statistics.median(s), "p90": s[min(len(s) - 1, int(len(s) * 0.9))],
            "max": s[-1], "n": len(s)}


def iperf_run(seconds, work, tag):
    """iperf3 TCP from the seeder's namespace to the leecher's; per-second receiver Mbit/s."""
    srv = start(ns(NS_S, ["iperf3", "-s", "-1", "-B", IP_S, "-p", str(IPERF_PORT)]),
                os.path.join(work, "iperf-server-%s.log" % tag))
    try:
        time.sleep(0.5)
        out = subprocess.run(
            ns(NS_L, ["iperf3", "-c", IP_S, "-B", IP_L, "-p", str(IPERF_PORT), "-R",
                      "-t", str(int(seconds)), "-i", "1", "-J"]),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=seconds + 30).stdout
    finally:
        stop(srv)
    with open(os.path.join(work, "iperf-%s.json" % tag), "wb") as f:
        f.write(out)
    j = json.loads(out)
    if "error" in j:
        raise SystemExit("iperf3: " + j["error"])
    return [iv["sum"]["bits_per_second"] / 1e6 for iv in j["intervals"]]


# ---------------------------------------------------------------- peers


def role_lt_seed(args):
    """libtorrent seeding over uTP only, inside the seeder's namespace."""
    import libtorrent as lt
    ses = lt.session({
        "listen_interfaces": "%s:%d" % (IP_S, args.port),
        "outgoing_interfaces": IP_S,
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False,
        "enable_natpmp": False, "alert_mask": 0,
        "enable_outgoing_utp": True, "enable_incoming_utp": True,
        "enable_outgoing_tcp": False, "enable_incoming_tcp": False,
    })
    h = ses.add_torrent({"ti": lt.torrent_info(args.torrent), "save_path": args.dir})
    deadline = time.time() + 120
    while not h.status().is_seeding and time.time() < deadline:
        time.sleep(0.05)
    print("seeding" if h.status().is_seeding else "not seeding", lt.__version__, flush=True)
    while True:  # dial the leecher again every second (it also dials us)
        try:
            h.connect_peer((IP_L, BT_PORT_L))
        except RuntimeError:
            pass
        time.sleep(1)


def start_case(case, btcore, torrent, data_dir, out_dir, work, timeout):
    transport = "tcp" if case == "bt-tcp" else "utp"
    common = ["--no-trackers", "--no-dht", "--progress", "none", "--transport", transport]
    if case == "lt-utp":
        seeder = start(ns(NS_S, ["/usr/bin/python3", os.path.abspath(__file__), "--role", "lt-seed",
                                 "--torrent", torrent, "--dir", data_dir,
                                 "--port", str(BT_PORT_S)]),
                       os.path.join(work, "seed-%s.log" % case))
    else:
        seeder = start(ns(NS_S, [btcore, "seed", torrent, data_dir, "--port", str(BT_PORT_S),
                                 "--bind", IP_S, "--peer", "%s:%d" % (IP_L, BT_PORT_L)] + common),
                       os.path.join(work, "seed-%s.log" % case))
    leecher = start(ns(NS_L, [btcore, "download", torrent, "-o", out_dir, "--port", str(BT_PORT_L),
                              "--bind", IP_L, "--peer", "%s:%d" % (IP_S, BT_PORT_S),
                              "--timeout", str(timeout)] + common),
                    os.path.join(work, "leech-%s.log" % case))
    return seeder, leecher


def wait_flowing(seeder, leecher, limit_s=60):
    """Bounded: until the link carries at least 1 Mbit/s for a second."""
    t0 = time.time()
    last, _, _ = qdisc_stats()
    while time.time() - t0 < limit_s:
        time.sleep(1)
        now, _, _ = qdisc_stats()
        if (now - last) * 8 > 1e6:
            return time.time() - t0
        last = now
        if not seeder.alive() or not leecher.alive():
            break
    raise SystemExit("no transfer on the link after %.0f s (see %s, %s)"
                     % (time.time() - t0, seeder.logpath, leecher.logpath))


def measure_case(case, a, btcore, torrent, data_dir, work):
    setup(a.rate_mbit, a.buffer_ms, a.tcp_cc)
    cap = a.rate_mbit * 1e6
    r = {"case": case}
    p = ping_start(3, work, case + "-idle")
    r["idle"] = rtt_summary(ping_result(p, 3))
    out_dir = os.path.join(work, "out-" + case)
    os.makedirs(out_dir, exist_ok=True)
    seeder, leecher = start_case(case, btcore, torrent, data_dir, out_dir, work, timeout=300)
    try:
        r["start_s"] = wait_flowing(seeder, leecher)
        time.sleep(a.warmup)
        # The seeder alone.
        p = ping_start(a.alone, work, case + "-alone")
        b0, d0, _ = qdisc_stats()
        t0 = time.time()
        backlogs = []
        while time.time() - t0 < a.alone:
            time.sleep(0.5)
            backlogs.append(qdisc_stats()[2])
        b1, d1, _ = qdisc_stats()
        t1 = time.time()
        r["fill"] = (b1 - b0) * 8 / (t1 - t0) / cap
        r["drops_alone"] = d1 - d0
        r["backlog_alone_kb"] = statistics.median(backlogs) / 1000
        r["alone"] = rtt_summary(ping_result(p, a.alone))
        # Beside an iperf3 TCP flow.
        p = ping_start(a.beside, work, case + "-beside")
        b0, d0, _ = qdisc_stats()
        t0 = time.time()
        mbit = iperf_run(a.beside, work, case)
        b1, d1, _ = qdisc_stats()
        t1 = time.time()
        r["beside"] = rtt_summary(ping_result(p, a.beside))
        r["iperf"] = [m * 1e6 / cap for m in mbit]
        r["link_beside"] = (b1 - b0) * 8 / (t1 - t0) / cap
        r["drops_beside"] = d1 - d0
        r["ended_early"] = not leecher.alive()
    finally:
        stop(leecher)
        stop(seeder)
        teardown()
    return r


def baseline(a, work):
    setup(a.rate_mbit, a.buffer_ms, a.tcp_cc)
    try:
        cap = a.rate_mbit * 1e6
        p = ping_start(3, work, "base-idle")
        idle = rtt_summary(ping_result(p, 3))
        p = ping_start(a.beside, work, "base-iperf")
        mbit = iperf_run(a.beside, work, "base")
        rtt = rtt_summary(ping_result(p, a.beside))
        return {"idle": idle, "iperf": [m * 1e6 / cap for m in mbit], "rtt": rtt}
    finally:
        teardown()


def first_at(shares, level):
    for i, s in enumerate(shares):
        if s >= level:
            return i + 1
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--role")
    ap.add_argument("--torrent")
    ap.add_argument("--dir")
    ap.add_argument("--port", type=int)
    ap.add_argument("--cases", default="bt-utp,bt-tcp,lt-utp")
    ap.add_argument("--size-mib", type=int, default=200)
    ap.add_argument("--rate-mbit", type=int, default=20)
    ap.add_argument("--buffer-ms", type=int, default=500)
    ap.add_argument("--btcore", default=os.path.join(ROOT, "target", "release", "btcore"))
    ap.add_argument("--tcp-cc", default="cubic,reno",
                    help="TCP congestion control in the namespaces (iperf3's and BitTorrent's):"
                    " the first of the list the host allows")
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--alone", type=float, default=15)
    ap.add_argument("--beside", type=int, default=10)
    a = ap.parse_args()
    if a.role == "lt-seed":
        return role_lt_seed(a)

    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces and tc)")
    if shutil.which("ping") is None:
        log("installing iputils-ping")
        run(["apt-get", "install", "-y", "iputils-ping"], timeout=300)
    for tool in ("ip", "tc", "iperf3", "ping"):
        if shutil.which(tool) is None:
            raise SystemExit("missing: " + tool)
    btcore = os.path.abspath(a.btcore)
    if not os.access(btcore, os.X_OK):
        raise SystemExit("no btcore at %s (cargo build --release -p btcore-cli)" % btcore)
    cases = [c for c in a.cases.split(",") if c]
    for c in cases:
        if c not in ("bt-utp", "bt-tcp", "lt-utp"):
            raise SystemExit("unknown case " + c)
    if "lt-utp" in cases:
        run(["/usr/bin/python3", "-c", "import libtorrent"])

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    work = tempfile.mkdtemp(prefix="btcore-shaped-")
    os.chmod(work, 0o755)
    results = []
    try:
        data_dir = os.path.join(work, "data")
        os.makedirs(data_dir)
        payload = os.path.join(data_dir, "payload.bin")
        log("payload: %d MiB of random data" % a.size_mib)
        with open(payload, "wb") as f:
            for _ in range(a.size_mib):
                f.write(os.urandom(1 << 20))
        torrent = os.path.join(work, "payload.torrent")
        run([btcore, "create", "-o", torrent, payload], timeout=120)
        log("link: veth, tbf rate %d Mbit/s, buffer %d ms (%.2f MB)"
            % (a.rate_mbit, a.buffer_ms, a.rate_mbit * 1e6 / 8 * a.buffer_ms / 1000 / 1e6))

        log("baseline: ping idle, then iperf3 alone for %d s" % a.beside)
        base = baseline(a, work)
        log("  idle RTT median %.2f ms; iperf3 alone: mean %.0f%% of the link, RTT median %.0f ms"
            % (base["idle"]["median"], 100 * statistics.mean(base["iperf"]), base["rtt"]["median"]))
        log("  iperf3 alone per second: " + " ".join("%.0f" % (100 * s) for s in base["iperf"]))
        for c in cases:
            log("case %s: setting up, seeder and leecher starting" % c)
            r = measure_case(c, a, btcore, torrent, data_dir, work)
            results.append(r)
            log("  fill alone %.1f%% (drops %d, median backlog %.0f kB); RTT idle %.2f / alone "
                "median %.0f p90 %.0f ms; beside iperf3: link %.1f%%, iperf3 per second %s; "
                "RTT median %.0f ms%s"
                % (100 * r["fill"], r["drops_alone"], r["backlog_alone_kb"], r["idle"]["median"],
                   r["alone"]["median"], r["alone"]["p90"], 100 * r["link_beside"],
                   " ".join("%.0f" % (100 * s) for s in r["iperf"]), r["beside"]["median"],
                   " (the download ENDED during the measurement)" if r["ended_early"] else ""))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        for p in list(LIVE):
            stop(p)
        teardown()
        shutil.rmtree(work, ignore_errors=True)

    names = {"bt-utp": "btcore uTP", "bt-tcp": "btcore TCP", "lt-utp": "libtorrent uTP"}
    print()
    print("Link %d Mbit/s, queue %d ms, TCP %s; idle RTT %.2f ms; iperf3 alone: %.0f%% of the link "
          "(mean of %d s), ping RTT %.0f ms beside it"
          % (a.rate_mbit, a.buffer_ms, USED_CC.get(NS_S, "?"), base["idle"]["median"], 100 * statistics.mean(base["iperf"]),
             len(base["iperf"]), base["rtt"]["median"]))
    print()
    print("| seeder | fill alone | RTT idle ms | RTT alone ms (median / p90) | rise ms | RTT max alone "
          "| iperf3 share s 1-%d (%%) | iperf3 >= 80%% from s | iperf3 mean last 5 s "
          "| link beside | RTT beside ms |" % a.beside)
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in results:
        sh = r["iperf"]
        fa = first_at(sh, 0.8)
        print("| %s%s | %.1f%% | %.2f | %.0f / %.0f | %.0f | %.0f | %s | %s | %.0f%% | %.1f%% | %.0f |"
              % (names[r["case"]], " (ended early)" if r["ended_early"] else "",
                 100 * r["fill"], r["idle"]["median"], r["alone"]["median"], r["alone"]["p90"],
                 r["alone"]["median"] - r["idle"]["median"], r["alone"]["max"],
                 " ".join("%.0f" % (100 * s) for s in sh), fa if fa else "never",
                 100 * statistics.mean(sh[-5:]), 100 * r["link_beside"], r["beside"]["median"]))
    print()
    print("Targets (issue: uTP): fill >= 90%%; iperf3 >= 80%% within 10 s; RTT rise <= ~100 ms "
          "(TCP BitTorrent: about the whole %d ms buffer)" % a.buffer_ms)
    for r in results:
        late = statistics.mean(r["iperf"][-5:])
        rise = r["alone"]["median"] - r["idle"]["median"]
        print("  %-15s fill %s, TCP yield %s (iperf3 mean of its last 5 s), RTT rise %s"
              % (names[r["case"]], "met" if r["fill"] >= 0.9 else "MISSED",
                 "met" if late >= 0.8 else "MISSED",
                 "met" if rise <= 110 else "MISSED"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
