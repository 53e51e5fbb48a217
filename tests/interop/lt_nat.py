#!/usr/bin/python3
"""A python3-libtorrent peer for the hole punching test (cli/tests/holepunch.rs), where
it runs inside a network namespace as the relay, the NATed seed or the NATed downloader:

    lt_nat.py seed|download TORRENT DIR --listen IP:PORT [--peer IP:PORT]...
              [--download-limit BYTES_PER_S] [--timeout S] [--no-trackers]

Listens on IP:PORT for TCP and uTP, dials both (uTP first, libtorrent's default), with
the default plugins (ut_pex, ut_metadata, smart_ban) and libtorrent's built-in
`ut_holepunch` (BEP 55); no DHT, LSD, UPnP or NAT-PMP. The torrent's trackers are used
unless --no-trackers (then it hears of peers only from --peer and from their PEX).
`seed` checks the data in DIR and seeds until killed or the timeout; `download` exits 0
once the torrent is complete, 1 on timeout.

Printed on stdout: each peer once it is past connecting, as
"peer IP:PORT: uTP|TCP, outgoing|incoming[, holepunched], progress P" (again when a
flag changes or its progress reaches 1; "holepunched" is libtorrent's own flag for a
connection made through a BEP 55 rendezvous), and a status line a second. Alerts go to
stderr, with libtorrent's log of the ut_holepunch messages it sends ("==> HOLEPUNCH [ msg:
connect to: IP ..." for a relay's introductions) and receives ("<== HOLEPUNCH [ msg:connect
to: IP ]" for one addressed to it).
"""

import argparse
import sys
import time

import libtorrent as lt

# peer_info's utp_socket flag (libtorrent 2.0's peer_flags_t bit 17): the bindings do
# not name it.
UTP_SOCKET = 1 << 17


def endpoint(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["seed", "download"])
    p.add_argument("torrent")
    p.add_argument("dir")
    p.add_argument("--listen", required=True)
    p.add_argument("--peer", action="append", default=[])
    p.add_argument("--download-limit", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--no-trackers", action="store_true")
    args = p.parse_args()

    s = lt.session(
        {
            "listen_interfaces": args.listen,
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_incoming_utp": True,
            "enable_outgoing_utp": True,
            "enable_incoming_tcp": True,
            "enable_outgoing_tcp": True,
            "announce_to_all_trackers": True,
            # A dial to a NATed peer fails faster than libtorrent's default 15 s, so
            # (as initiator) it asks for a rendezvous within the test's time.
            "peer_connect_timeout": 4,
            "alert_mask": lt.alert.category_t.error_notification
            | lt.alert.category_t.peer_notification
            | lt.alert.category_t.status_notification
            | lt.alert.category_t.tracker_notification
            | lt.alert.category_t.connect_notification
            # For its ut_holepunch messages, in and out (the rest is filtered out).
            | lt.alert.category_t.peer_log_notification,
            # Room for the peer log, so that no ut_holepunch line is dropped.
            "alert_queue_size": 100000,
            "user_agent": "btcore-interop/libtorrent-" + lt.__version__,
        }
    )
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(args.torrent)
    atp.save_path = args.dir
    if args.no_trackers:
        # Added paused, so that no announce goes out before the trackers are gone.
        atp.flags = (atp.flags | lt.torrent_flags.paused) & ~lt.torrent_flags.auto_managed
    h = s.add_torrent(atp)
    if args.no_trackers:
        h.replace_trackers([])
        h.resume()
    if args.download_limit:
        h.set_download_limit(args.download_limit)
    peers = [endpoint(x) for x in args.peer]

    want_complete = args.mode == "download"
    end = time.monotonic() + args.timeout
    last_connect = last_status = 0.0
    seen = set()
    while time.monotonic() < end:
        for a in s.pop_alerts():
            if isinstance(a, lt.peer_log_alert) and "HOLEPUNCH" not in a.message():
                continue
            print("alert: %s: %s" % (type(a).__name__, a.message()), file=sys.stderr, flush=True)
        st = h.status()
        for pi in h.get_peer_info():
            flags = int(pi.flags)
            if flags & int(lt.peer_info.connecting):
                continue
            ep = "%s:%d" % tuple(pi.ip)
            transport = "uTP" if flags & UTP_SOCKET else "TCP"
            way = "outgoing" if flags & int(lt.peer_info.outgoing_connection) else "incoming"
            punched = ", holepunched" if flags & int(lt.peer_info.holepunched) else ""
            done = pi.progress >= 1.0
            key = (ep, transport, way, punched, done)
            if key not in seen:
                seen.add(key)
                print(
                    "peer %s: %s, %s%s, progress %.2f" % (ep, transport, way, punched, pi.progress),
                    flush=True,
                )
        now = time.monotonic()
        if now - last_status >= 1.0:
            print(
                "state=%s progress=%.4f peers=%d down=%d up=%d"
                % (st.state, st.progress, st.num_peers, st.total_payload_download, st.total_payload_upload),
                flush=True,
            )
            last_status = now
        if want_complete and st.is_seeding:
            print("complete", flush=True)
            return 0
        checking = st.state in (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data)
        if peers and not checking and st.num_peers == 0 and now - last_connect > 2:
            for ep in peers:
                try:
                    h.connect_peer(ep)
                except RuntimeError as e:
                    print("connect_peer %s: %s" % (ep, e), file=sys.stderr, flush=True)
            last_connect = now
        time.sleep(0.1)
    print("timeout", flush=True)
    return 1 if want_complete else 0


if __name__ == "__main__":
    sys.exit(main())
