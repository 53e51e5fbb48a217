#!/usr/bin/python3
"""A python3-libtorrent driver for btcore's interoperability tests.

    lt.py create PATH OUT.torrent [--tracker URL] [--v1-only|--v2-only] [--piece-kib N]
    lt.py seed TORRENT DIR --port P [--peer PORT]... [--timeout S] [--enc MODE] [--utp-only] [--ipv6]
    lt.py download TORRENT|MAGNET DIR --port P [--peer PORT]... [--timeout S] [--enc MODE] [--utp-only] [--ipv6]

Everything listens on and talks to 127.0.0.1 only (--ipv6: ::1 only). `seed` checks the data in DIR and
seeds until killed or the timeout; `download` exits 0 once the torrent is complete,
1 on timeout. Status goes to stdout, one line a second; alerts worth seeing to stderr.
--enc sets protocol encryption: "default" (libtorrent's: try it first, allow plain
text), "rc4" (forced both ways, RC4 only) or "plain" (disabled both ways).
--utp-only turns TCP off both ways (no TCP dial, incoming TCP refused) and uTP on; by
default uTP is off and TCP on. From libtorrent's own peer flags (polled every 0.1 s),
each peer is printed once connected as "peer IP:PORT: uTP|TCP, rc4|plain", and each status line counts the
connected peers so (utp_peers, tcp_peers, rc4_peers, plain_peers): a test can tell what
a connection really ran over. The alerts (on stderr) name the transport of every
connection, however short: "incoming connection from IP:PORT (uTP)", "(TCP)".
"""

import argparse
import os
import sys
import time

import libtorrent as lt


ENC = {
    "default": {},
    "rc4": {
        "out_enc_policy": 0,  # forced
        "in_enc_policy": 0,
        "allowed_enc_level": 2,  # rc4 only
        "prefer_rc4": True,
    },
    "plain": {
        "out_enc_policy": 2,  # disabled
        "in_enc_policy": 2,
    },
}


TCP_ONLY = {
    "enable_incoming_utp": False,
    "enable_outgoing_utp": False,
}

UTP_ONLY = {
    "enable_incoming_utp": True,
    "enable_outgoing_utp": True,
    "enable_incoming_tcp": False,
    "enable_outgoing_tcp": False,
}

# peer_info's utp_socket flag (libtorrent 2.0's peer_flags_t bit 17): the bindings do
# not name it.
UTP_SOCKET = 1 << 17


# The loopback address the session listens on and dials (--ipv6: ::1).
LOCAL = "127.0.0.1"


def make_session(port, enc="default", utp_only=False):
    listen = "[%s]:%d" % (LOCAL, port) if ":" in LOCAL else "%s:%d" % (LOCAL, port)
    settings = dict(
        {
            "listen_interfaces": listen,
            "outgoing_interfaces": LOCAL,
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "allow_multiple_connections_per_ip": True,
            "alert_mask": lt.alert.category_t.error_notification
            | lt.alert.category_t.peer_notification
            | lt.alert.category_t.status_notification
            | lt.alert.category_t.tracker_notification
            | lt.alert.category_t.connect_notification,
            "user_agent": "btcore-interop/libtorrent-" + lt.__version__,
        },
        **ENC[enc],
        **(UTP_ONLY if utp_only else TCP_ONLY)
    )
    return lt.session(settings)


def log_alerts(s):
    for a in s.pop_alerts():
        print("alert: %s: %s" % (type(a).__name__, a.message()), file=sys.stderr, flush=True)


def add(s, torrent, save_dir):
    if torrent.startswith("magnet:"):
        atp = lt.parse_magnet_uri(torrent)
    else:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(torrent)
    atp.save_path = save_dir
    return s.add_torrent(atp)


def connect(h, peers):
    for p in peers:
        try:
            h.connect_peer((LOCAL, p))
        except RuntimeError as e:  # the torrent may still be checking
            print("connect_peer %d: %s" % (p, e), file=sys.stderr, flush=True)


def peer_kinds(h):
    """(endpoint, transport, encryption) of each peer past the connecting stage."""
    out = []
    for p in h.get_peer_info():
        flags = int(p.flags)
        if flags & int(lt.peer_info.connecting):
            continue
        transport = "uTP" if flags & UTP_SOCKET else "TCP"
        enc = "rc4" if flags & int(lt.peer_info.rc4_encrypted) else "plain"
        out.append(("%s:%d" % tuple(p.ip), transport, enc))
    return out


def status_line(st, kinds):
    count = lambda v: sum(1 for k in kinds if v in k)
    return (
        "state=%s progress=%.4f peers=%d seeds=%d down=%d up=%d "
        "utp_peers=%d tcp_peers=%d rc4_peers=%d plain_peers=%d"
        % (
            st.state,
            st.progress,
            st.num_peers,
            st.num_seeds,
            st.total_payload_download,
            st.total_payload_upload,
            count("uTP"),
            count("TCP"),
            count("rc4"),
            count("plain"),
        )
    )


def run(args, want_complete):
    s = make_session(args.port, args.enc, args.utp_only)
    h = add(s, args.torrent, args.dir)
    end = time.monotonic() + args.timeout
    last_connect = 0.0
    last_status = 0.0
    seen = set()
    while time.monotonic() < end:
        st = h.status()
        log_alerts(s)
        kinds = peer_kinds(h)
        for k in kinds:
            if k not in seen:
                seen.add(k)
                print("peer %s: %s, %s" % k, flush=True)
        if want_complete or time.monotonic() - last_status >= 1.0:
            print(status_line(st, kinds), flush=True)
            last_status = time.monotonic()
        if want_complete and st.is_seeding:
            print("complete", flush=True)
            s.pause()
            return 0
        # Dial the given peers again while none is connected (a peer may not be
        # listening yet when we start).
        now = time.monotonic()
        checking = st.state in (
            lt.torrent_status.checking_files,
            lt.torrent_status.checking_resume_data,
        )
        if args.peer and not checking and st.num_peers == 0 and now - last_connect > 2:
            connect(h, args.peer)
            last_connect = now
        time.sleep(0.1)
    print("timeout", flush=True)
    return 0 if not want_complete else 1


def create(args):
    fs = lt.file_storage()
    lt.add_files(fs, args.path)
    flags = 0
    if args.v1_only:
        flags = lt.create_torrent.v1_only
    elif args.v2_only:
        flags = lt.create_torrent.v2_only
    t = lt.create_torrent(fs, args.piece_kib * 1024, flags=flags)
    if args.tracker:
        t.add_tracker(args.tracker)
    t.set_creator("libtorrent " + lt.__version__)
    lt.set_piece_hashes(t, os.path.dirname(os.path.abspath(args.path)))
    with open(args.out, "wb") as f:
        f.write(lt.bencode(t.generate()))
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("path")
    c.add_argument("out")
    c.add_argument("--tracker")
    c.add_argument("--v1-only", action="store_true")
    c.add_argument("--v2-only", action="store_true")
    c.add_argument("--piece-kib", type=int, default=0)
    for name in ("seed", "download"):
        r = sub.add_parser(name)
        r.add_argument("torrent")
        r.add_argument("dir")
        r.add_argument("--port", type=int, required=True)
        r.add_argument("--peer", type=int, action="append", default=[])
        r.add_argument("--timeout", type=float, default=120.0)
        r.add_argument("--enc", choices=sorted(ENC), default="default")
        r.add_argument("--utp-only", action="store_true")
        r.add_argument("--ipv6", action="store_true", help="listen on and dial ::1 only")
    args = p.parse_args()
    if getattr(args, "ipv6", False):
        global LOCAL
        LOCAL = "::1"
    if args.cmd == "create":
        return create(args)
    return run(args, want_complete=args.cmd == "download")


if __name__ == "__main__":
    sys.exit(main())
