#!/usr/bin/env bash
# An OpenWrt package (.ipk) of the `btcore` command from a static musl binary:
#   bash scripts/package-ipk.sh TARGET BINARY OUTDIR [OPENWRT_ARCH]
# e.g.
#   bash scripts/package-ipk.sh armv7-unknown-linux-musleabihf \
#       target/armv7-unknown-linux-musleabihf/release-small/btcore dist/out
# writes OUTDIR/btcore_VERSION_ARCH.ipk and prints its path on the last line.
#
# The layout is the one of OpenWrt's ipkg-build: a gzip'd tar holding ./debian-binary
# ("2.0"), ./data.tar.gz and ./control.tar.gz, each tar in GNU format, sorted by name,
# owned by 0:0, every date SOURCE_DATE_EPOCH (default: the time of the last commit), gzip
# without names or dates: the same inputs give the same bytes.
#
# Contents: /usr/bin/btcore, /etc/init.d/btcore (procd), /etc/config/btcore (UCI, a
# conffile: an upgrade keeps the owner's edits) and the postinst/prerm scripts, all from
# dist/openwrt/ (docs/openwrt.md).
#
# OPENWRT_ARCH: opkg installs a package only when its Architecture is one of the device's
# (`opkg print-architecture`), by name. A static binary runs on every device of its ISA,
# so the name is a label: the default per target is
#   armv7-unknown-linux-musleabihf  arm_cortex-a7_neon-vfpv4
#   aarch64-unknown-linux-musl      aarch64_generic
#   x86_64-unknown-linux-musl       x86_64
# and another device of the same ISA takes a package built with its own name as the 4th
# argument (e.g. arm_cortex-a9_vfpv3-d16, aarch64_cortex-a53), or this one installed with
# `opkg install --add-arch NAME:100 FILE.ipk`.
#
# Refused: a binary that is not an ELF executable for TARGET's machine, or that is not
# statically linked (a program interpreter or a needed shared library).
# Needs bash, GNU tar, gzip, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() { echo "usage: $0 TARGET BINARY OUTDIR [OPENWRT_ARCH]" >&2; exit 2; }
[ $# -ge 3 ] && [ $# -le 4 ] || usage
TARGET=$1
BINARY=$2
OUTDIR=$3

# ELF class (1: 32-bit, 2: 64-bit), e_machine, default OpenWrt arch.
case "$TARGET" in
armv7-unknown-linux-musleabihf) CLASS=1 MACHINE=40 ARCH_DEFAULT=arm_cortex-a7_neon-vfpv4 ;;
aarch64-unknown-linux-musl) CLASS=2 MACHINE=183 ARCH_DEFAULT=aarch64_generic ;;
x86_64-unknown-linux-musl) CLASS=2 MACHINE=62 ARCH_DEFAULT=x86_64 ;;
*)
    echo "unsupported target: $TARGET (armv7-unknown-linux-musleabihf, aarch64-unknown-linux-musl, x86_64-unknown-linux-musl)" >&2
    exit 2
    ;;
esac
ARCH=${4:-$ARCH_DEFAULT}
if ! [[ $ARCH =~ ^[A-Za-z0-9_.+-]+$ ]]; then
    echo "bad OpenWrt arch name: $ARCH" >&2
    exit 2
fi

for tool in tar gzip python3; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
tar --version 2>/dev/null | grep -q 'GNU tar' || { echo "GNU tar needed (--sort, --owner)" >&2; exit 1; }
[ -f "$BINARY" ] || { echo "no such file: $BINARY" >&2; exit 1; }

echo "== checking $BINARY for $TARGET (ELF class $CLASS, machine $MACHINE, static)"
command -v file >/dev/null && file -b "$BINARY" | sed 's/^/   file: /'
python3 - "$BINARY" "$CLASS" "$MACHINE" <<'PY'
import struct, sys
path, want_class, want_machine = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = open(path, "rb").read()
def fail(msg):
    sys.exit(f"refused: {path}: {msg}")
if data[:4] != b"\x7fELF":
    fail("not an ELF file")
ei_class, ei_data = data[4], data[5]
if ei_data != 1:
    fail("not little-endian")
end = "<"
e_type, e_machine = struct.unpack_from(end + "HH", data, 16)
if ei_class != want_class or e_machine != want_machine:
    fail(f"ELF class {ei_class}, machine {e_machine}; the target needs class {want_class}, machine {want_machine}")
if e_type not in (2, 3):
    fail(f"not an executable (e_type {e_type})")
if ei_class == 1:
    e_phoff, = struct.unpack_from(end + "I", data, 28)
    e_phentsize, e_phnum = struct.unpack_from(end + "HH", data, 42)
    ph = lambda i: struct.unpack_from(end + "IIIIII", data, e_phoff + i * e_phentsize)  # type, off, vaddr, paddr, filesz, memsz
    get = lambda p: (p[0], p[1], p[4])
    dyn_fmt, dyn_size = end + "iI", 8
else:
    e_phoff, = struct.unpack_from(end + "Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from(end + "HH", data, 54)
    ph = lambda i: struct.unpack_from(end + "IIQQQQ", data, e_phoff + i * e_phentsize)  # type, flags, off, vaddr, paddr, filesz
    get = lambda p: (p[0], p[2], p[5])
    dyn_fmt, dyn_size = end + "qQ", 16
for i in range(e_phnum):
    p_type, off, size = get(ph(i))
    if p_type == 3:  # PT_INTERP
        interp = data[off:off + size].rstrip(b"\0").decode(errors="replace")
        fail(f"dynamically linked (program interpreter {interp}); build a static musl binary")
    if p_type == 2:  # PT_DYNAMIC (a static-pie has one, without DT_NEEDED)
        for o in range(off, off + size, dyn_size):
            tag, _ = struct.unpack_from(dyn_fmt, data, o)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                fail("needs shared libraries (DT_NEEDED)")
print("   ok: static, machine", e_machine)
PY

VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
LICENSE=$(sed -n '/^\[workspace.package\]/,/^\[/s/^license *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
URL=$(sed -n '/^\[workspace.package\]/,/^\[/s/^\(repository\|homepage\) *= *"\(.*\)"/\2/p' Cargo.toml | head -n1)
[ -n "$VERSION" ] || { echo "no version in Cargo.toml [workspace.package]" >&2; exit 1; }
if [ -n "${IPK_RELEASE:-}" ]; then VERSION="$VERSION-$IPK_RELEASE"; fi
MAINTAINER=${IPK_MAINTAINER:-btcore developers}
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
DATA=$WORK/data
CTRL=$WORK/control
PKG=$WORK/pkg
mkdir -p "$DATA/usr/bin" "$DATA/etc/init.d" "$DATA/etc/config" "$CTRL" "$PKG"

install -m 0755 "$BINARY" "$DATA/usr/bin/btcore"
install -m 0755 dist/openwrt/btcore.init "$DATA/etc/init.d/btcore"
# 0600: it may hold the RPC password.
install -m 0600 dist/openwrt/btcore.config "$DATA/etc/config/btcore"
install -m 0755 dist/openwrt/postinst "$CTRL/postinst"
install -m 0755 dist/openwrt/prerm "$CTRL/prerm"
echo /etc/config/btcore > "$CTRL/conffiles"
chmod 0644 "$CTRL/conffiles"
find "$DATA" "$CTRL" -type d -exec chmod 0755 {} +

# tar as ipkg-build makes it, with the owner set here instead of by fakeroot.
mktar() { tar --format=gnu --numeric-owner --owner=0 --group=0 --sort=name \
    --mtime="@$SOURCE_DATE_EPOCH" "$@"; }

(cd "$DATA" && mktar -cf - .) | gzip -n -9 > "$PKG/data.tar.gz"
INSTALLED_SIZE=$(gzip -dc "$PKG/data.tar.gz" | wc -c)

DESCRIPTION=$(sed -n 's/^description *= *"\(.*\)"/\1/p' cli/Cargo.toml | head -n1 | tr -d '`')
{
    echo "Package: btcore"
    echo "Version: $VERSION"
    echo "Source: btcore"
    echo "SourceName: btcore"
    echo "License: $LICENSE"
    echo "Section: net"
    echo "SourceDateEpoch: $SOURCE_DATE_EPOCH"
    [ -z "$URL" ] || echo "URL: $URL"
    echo "Maintainer: $MAINTAINER"
    echo "Architecture: $ARCH"
    echo "Installed-Size: $INSTALLED_SIZE"
    echo "Description: $DESCRIPTION."
    echo " The daemon (Transmission RPC and a web page on port 9091) runs under procd,"
    echo " configured in /etc/config/btcore. One static binary: no library needed."
} > "$CTRL/control"
chmod 0644 "$CTRL/control"
(cd "$CTRL" && mktar -cf - .) | gzip -n -9 > "$PKG/control.tar.gz"

echo "2.0" > "$PKG/debian-binary"
chmod 0644 "$PKG/debian-binary" "$PKG/data.tar.gz" "$PKG/control.tar.gz"
OUT=$OUTDIR/btcore_${VERSION}_${ARCH}.ipk
rm -f "$OUT"
# The order of ipkg-build: debian-binary, data, control.
(cd "$PKG" && mktar -cf - ./debian-binary ./data.tar.gz ./control.tar.gz) | gzip -n -9 > "$OUT"

echo "== control"
sed 's/^/   /' "$CTRL/control"
echo "== $(basename "$OUT"): $(wc -c < "$OUT") bytes (installed: $INSTALLED_SIZE bytes)"
echo "$OUT"
