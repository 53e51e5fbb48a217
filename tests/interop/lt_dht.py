#!/usr/bin/python3
"""A python3-libtorrent driver for btcore's DHT interoperability tests.

    lt_dht.py node --port P --bootstrap HOST:PORT[,HOST:PORT...] [--timeout S]
    lt_dht.py seed TORRENT DIR --port P --bootstrap ... [--timeout S]
    lt_dht.py download MAGNET DIR --port P --bootstrap ... [--timeout S]

Everything listens on and talks to 127.0.0.1 only, with the DHT as the only way to find
peers (no trackers, LSD, UPnP or NAT-PMP; libtorrent's DHT checks that would refuse
nodes on one loopback address are off).

`node` is a DHT node and nothing else; it prints `dht_nodes=N` once a second. `seed`
checks the data in DIR, seeds it and announces it to the DHT again and again
(force_dht_announce), looking its own info-hash up too: it prints `announced` once a
lookup returns its own address (the announce is stored somewhere). `download` adds the
magnet link, announces (which looks for peers) every few seconds until it has peers,
and exits 0 once the torrent is complete, 1 on timeout. `node` and `seed` run until
killed or the timeout. Status goes to stdout; alerts worth seeing go to stderr.
"""

import argparse
import warnings
import sys
import time

import libtorrent as lt

# session.status() (for dht_nodes) is deprecated in 2.0 but still right.
warnings.filterwarnings("ignore", category=DeprecationWarning)

# Alerts shown on stderr (the rest, e.g. per-block progress, are dropped).
SHOWN = (
    "listen_succeeded_alert",
    "listen_failed_alert",
    "dht_bootstrap_alert",
    "dht_announce_alert",
    "dht_get_peers_alert",
    "dht_reply_alert",
    "dht_error_alert",
    "metadata_received_alert",
    "metadata_failed_alert",
    "torrent_finished_alert",
    "torrent_error_alert",
    "peer_connect_alert",
    "peer_disconnected_alert",
    "peer_error_alert",
    "peer_ban_alert",
    "hash_failed_alert",
    "file_error_alert",
    "state_changed_alert",
    "udp_error_alert",
)


def make_session(port, bootstrap):
    cat = lt.alert.category_t
    return lt.session(
        {
            "listen_interfaces": "127.0.0.1:%d" % port,
            "outgoing_interfaces": "127.0.0.1",
            "enable_dht": True,
            "dht_bootstrap_nodes": bootstrap,
            # Every node here is on 127.0.0.1: allow many nodes per IP in the routing
            # table and in lookups, and never rate-limit or block that one address.
            "dht_restrict_routing_ips": False,
            "dht_restrict_search_ips": False,
            "dht_ignore_dark_internet": False,
            "dht_prefer_verified_node_ids": False,
            "dht_enforce_node_id": False,
            "dht_block_ratelimit": 1000000,
            "dht_upload_rate_limit": 1000000,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "allow_multiple_connections_per_ip": True,
            # btcore speaks TCP only.
            "enable_incoming_utp": False,
            "enable_outgoing_utp": False,
            "alert_mask": cat.error_notification
            | cat.peer_notification
            | cat.status_notification
            | cat.connect_notification
            | cat.dht_notification
            | cat.dht_operation_notification,
            "user_agent": "btcore-interop/libtorrent-" + lt.__version__,
        }
    )


def dht_nodes(s):
    return s.status().dht_nodes


def pop_alerts(s):
    """Logs the alerts worth seeing; returns the peers of dht_get_peers replies."""
    peers = []
    for a in s.pop_alerts():
        name = type(a).__name__
        if name == "dht_get_peers_reply_alert":
            got = a.peers()
            peers.extend(got)
            print(
                "alert: %s: %d peers: %s" % (name, len(got), got[:10]),
                file=sys.stderr,
                flush=True,
            )
        elif name in SHOWN:
            print("alert: %s: %s" % (name, a.message()), file=sys.stderr, flush=True)
    return peers


def status_line(s, st):
    return "state=%s progress=%.4f peers=%d seeds=%d down=%d up=%d dht_nodes=%d" % (
        st.state,
        st.progress,
        st.num_peers,
        st.num_seeds,
        st.total_payload_download,
        st.total_payload_upload,
        dht_nodes(s),
    )


def checking(st):
    return st.state in (
        lt.torrent_status.checking_files,
        lt.torrent_status.checking_resume_data,
    )


def node(args):
    s = make_session(args.port, args.bootstrap)
    end = time.monotonic() + args.timeout
    while time.monotonic() < end:
        pop_alerts(s)
        print("dht_nodes=%d" % dht_nodes(s), flush=True)
        time.sleep(1.0)
    print("timeout", flush=True)
    return 0


def seed(args):
    s = make_session(args.port, args.bootstrap)
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(args.torrent)
    atp.save_path = args.dir
    h = s.add_torrent(atp)
    info_hash = atp.ti.info_hashes().v1
    end = time.monotonic() + args.timeout
    last_announce = 0.0
    announced = False
    while time.monotonic() < end:
        st = h.status()
        for ip, port in pop_alerts(s):
            if port == args.port and not announced:
                announced = True
                print("announced", flush=True)
        print(status_line(s, st), flush=True)
        now = time.monotonic()
        # Announce often until a lookup sees the announce, then now and then (other
        # nodes join the DHT later and the closest nodes change).
        every = 10.0 if announced else 2.0
        if st.is_seeding and now - last_announce > every:
            h.force_dht_announce()
            s.dht_get_peers(info_hash)
            last_announce = now
        time.sleep(0.5)
    print("timeout", flush=True)
    return 0


def download(args):
    s = make_session(args.port, args.bootstrap)
    atp = lt.parse_magnet_uri(args.magnet)
    atp.save_path = args.dir
    h = s.add_torrent(atp)
    end = time.monotonic() + args.timeout
    last_announce = 0.0
    while time.monotonic() < end:
        st = h.status()
        pop_alerts(s)
        print(status_line(s, st), flush=True)
        if st.is_seeding:
            print("complete", flush=True)
            s.pause()
            return 0
        now = time.monotonic()
        if not checking(st) and st.num_peers == 0 and now - last_announce > 3.0:
            h.force_dht_announce()
            last_announce = now
        time.sleep(0.25)
    print("timeout", flush=True)
    return 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    n = sub.add_parser("node")
    sd = sub.add_parser("seed")
    sd.add_argument("torrent")
    sd.add_argument("dir")
    d = sub.add_parser("download")
    d.add_argument("magnet")
    d.add_argument("dir")
    for r in (n, sd, d):
        r.add_argument("--port", type=int, required=True)
        r.add_argument("--bootstrap", required=True, help="HOST:PORT[,HOST:PORT...]")
        r.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args()
    return {"node": node, "seed": seed, "download": download}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
