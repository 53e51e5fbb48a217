#!/usr/bin/python3
"""Regenerates the v2-only and hybrid torrents of this folder and libtorrent's verdicts.

The content is deterministic pseudo-random bytes written to a temporary folder (not
kept: only the torrents are); the torrents are made by libtorrent's create_torrent
(python3-libtorrent 2.0) with a fixed creation date, then each is loaded with
torrent_info and added, paused, to a session with no network, and libtorrent's answer
is written to EXPECTED.json: info-hashes v1/v2, name, sizes, piece counts, files (path,
size, pad, pieces root) and each piece layer. A corrupted copy (one flipped byte in a
piece layer) records libtorrent's refusal.

    /usr/bin/python3 make_v2.py      # run in this folder; idempotent
"""
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile

sys.path.append("/usr/lib/python3/dist-packages")
import libtorrent as lt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
KIB = 1024

# name -> (files {relative path: size}, piece length); one top-level entry each
CASES = {
    "single": ({"single.bin": 50_000}, 16 * KIB),
    "single-one-piece": ({"one-piece.bin": 16 * KIB}, 16 * KIB),
    "single-tiny": ({"tiny.txt": 100}, 16 * KIB),
    "single-two-pieces": ({"two.bin": 64 * KIB}, 32 * KIB),
    "multi": (
        {
            "multi/a.bin": 40_000,
            "multi/empty.txt": 0,
            "multi/exact.bin": 16 * KIB,
            "multi/x/y/z/deep.bin": 70_000,
            "multi/x/small.txt": 3,
            "multi/zz.bin": 16 * KIB + 1,
        },
        16 * KIB,
    ),
    "multi-64k": (
        {
            "multi64/big.bin": 200_000,
            "multi64/dir/one.bin": 64 * KIB,
            "multi64/dir/two.bin": 5_000,
            "multi64/empty": 0,
        },
        64 * KIB,
    ),
}
DATE = 1_760_000_000


def write_content(root, files, seed):
    rng = random.Random(seed)
    for rel, size in files.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(bytes(rng.getrandbits(8) for _ in range(size)))


def make(src, piece_len, v2_only):
    fs = lt.file_storage()
    lt.add_files(fs, src)
    flags = lt.create_torrent.v2_only if v2_only else 0
    t = lt.create_torrent(fs, piece_len, flags=flags)
    t.set_creator("libtorrent " + lt.__version__)
    lt.set_piece_hashes(t, os.path.dirname(src))
    e = t.generate()
    e[b"creation date"] = DATE
    return lt.bencode(e)


def verdict(path):
    try:
        ti = lt.torrent_info(path)
    except RuntimeError as e:
        return {"torrent_info": "error", "message": str(e)}
    ih = ti.info_hashes()
    fs = ti.files()
    files = []
    for i in range(fs.num_files()):
        pad = bool(fs.file_flags(i) & lt.file_storage.flag_pad_file)
        root = fs.root(i).to_bytes().hex()
        f = {"path": fs.file_path(i), "size": fs.file_size(i), "offset": fs.file_offset(i)}
        if pad:
            f["pad"] = True
        elif root != "0" * 64:
            f["pieces_root"] = root
        files.append(f)
    with open(path, "rb") as fh:
        raw = lt.bdecode(fh.read())
    layers = {k.hex(): v.hex() for k, v in sorted(raw.get(b"piece layers", {}).items())}
    ses = lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False,
                      "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False})
    p = lt.add_torrent_params()
    p.ti = ti
    p.save_path = tempfile.gettempdir()
    p.flags = lt.torrent_flags.paused
    try:
        ses.add_torrent(p)
        added = "ok"
    except RuntimeError as e:
        added = "error: " + str(e)
    return {
        "torrent_info": "ok",
        "session_add": added,
        "v1_info_hash": ih.v1.to_bytes().hex() if ih.has_v1() else "",
        "v2_info_hash": ih.v2.to_bytes().hex() if ih.has_v2() else "",
        "name": ti.name(),
        "total_size": ti.total_size(),
        "piece_length": ti.piece_length(),
        "num_pieces": ti.num_pieces(),
        "num_files": fs.num_files(),
        "files": files,
        "piece_layers": layers,
    }


def main():
    out = {"generator": "make_v2.py, libtorrent " + lt.__version__, "torrents": {}}
    for f in os.listdir(HERE):
        if f.endswith(".torrent"):
            os.remove(os.path.join(HERE, f))
    tmp = tempfile.mkdtemp(prefix="make-v2-")
    try:
        for seed, (name, (files, piece_len)) in enumerate(sorted(CASES.items())):
            case_dir = os.path.join(tmp, name)
            write_content(case_dir, files, seed)
            top = sorted({rel.split("/")[0] for rel in files})
            assert len(top) == 1
            src = os.path.join(case_dir, top[0])
            for kind, v2_only in (("v2", True), ("hybrid", False)):
                fname = f"{name}-{kind}.torrent"
                with open(os.path.join(HERE, fname), "wb") as f:
                    f.write(make(src, piece_len, v2_only))
        # Corrupted copies: btcore must refuse what libtorrent refuses.
        with open(os.path.join(HERE, "multi-v2.torrent"), "rb") as f:
            good = lt.bdecode(f.read())
        bad = dict(good)
        layers = dict(bad[b"piece layers"])
        k = sorted(layers)[0]
        layer = bytearray(layers[k])
        layer[-1] ^= 1
        layers[k] = bytes(layer)
        bad[b"piece layers"] = layers
        with open(os.path.join(HERE, "bad-layer-v2.torrent"), "wb") as f:
            f.write(lt.bencode(bad))
        for name in sorted(os.listdir(HERE)):
            if name.endswith(".torrent"):
                v = verdict(os.path.join(HERE, name))
                v["expected"] = "ok" if v.get("session_add") == "ok" else "error"
                with open(os.path.join(HERE, name), "rb") as f:
                    v["sha256_of_file"] = hashlib.sha256(f.read()).hexdigest()
                out["torrents"][name] = v
    finally:
        shutil.rmtree(tmp)
    with open(os.path.join(HERE, "EXPECTED.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{len(out['torrents'])} torrents, verdicts in EXPECTED.json")


if __name__ == "__main__":
    main()
