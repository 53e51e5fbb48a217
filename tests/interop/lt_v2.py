#!/usr/bin/python3
"""libtorrent's view of BitTorrent v2 torrents, for btcore's v2 tests.

  lt_v2.py make SRC OUT --format v2|hybrid --piece-kib N   libtorrent creates a torrent
  lt_v2.py show TORRENT                                      one JSON object on stdout

`show` loads the torrent with torrent_info, adds it paused to a session (no network:
listening on 127.0.0.1 only, DHT/LSD/UPnP off) to run libtorrent's piece-layer checks,
and prints the info-hashes, piece count and files (path, size, pad, pieces root).
"""
import argparse
import json
import os
import sys

sys.path.append("/usr/lib/python3/dist-packages")
import libtorrent as lt  # noqa: E402


def make(a):
    fs = lt.file_storage()
    lt.add_files(fs, a.src)
    flags = lt.create_torrent.v2_only if a.format == "v2" else 0
    t = lt.create_torrent(fs, a.piece_kib * 1024, flags=flags)
    lt.set_piece_hashes(t, os.path.dirname(os.path.abspath(a.src)))
    with open(a.out, "wb") as f:
        f.write(lt.bencode(t.generate()))


def show(a):
    ti = lt.torrent_info(a.torrent)
    ih = ti.info_hashes()
    fs = ti.files()
    files = []
    for i in range(fs.num_files()):
        pad = bool(fs.file_flags(i) & lt.file_storage.flag_pad_file)
        root = fs.root(i).to_bytes().hex()
        files.append({
            "path": fs.file_path(i),
            "size": fs.file_size(i),
            "pad": pad,
            "pieces_root": "" if pad or root == "0" * 64 else root,
        })
    ses = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
    })
    p = lt.add_torrent_params()
    p.ti = ti
    p.save_path = os.path.dirname(os.path.abspath(a.torrent))
    p.flags = lt.torrent_flags.paused
    try:
        ses.add_torrent(p)
        added = "ok"
    except RuntimeError as e:
        added = str(e)
    print(json.dumps({
        "v1": ih.v1.to_bytes().hex() if ih.has_v1() else "",
        "v2": ih.v2.to_bytes().hex() if ih.has_v2() else "",
        "num_pieces": ti.num_pieces(),
        "files": files,
        "session_add": added,
    }))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("src")
    m.add_argument("out")
    m.add_argument("--format", choices=["v2", "hybrid"], required=True)
    m.add_argument("--piece-kib", type=int, default=16)
    s = sub.add_parser("show")
    s.add_argument("torrent")
    a = p.parse_args()
    make(a) if a.cmd == "make" else show(a)


if __name__ == "__main__":
    main()
