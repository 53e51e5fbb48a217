#!/usr/bin/env bash
# Checks an OpenWrt package of btcore made by scripts/package-ipk.sh, then runs what it
# holds:
#   bash scripts/test-ipk.sh IPK TARGET
# e.g. bash scripts/test-ipk.sh dist/out/btcore_0.1.0_arm_cortex-a7_neon-vfpv4.ipk \
#          armv7-unknown-linux-musleabihf
# 1. the archive, read with python3's tarfile: the outer gzip'd tar holds ./debian-binary
#    ("2.0"), ./data.tar.gz, ./control.tar.gz in ipkg-build's order; every member owned by
#    0:0, one date, sorted; the control fields (Architecture that of the file name and of
#    TARGET's ISA, Installed-Size the size of the data tar, Version the workspace's),
#    conffiles; the init script (#!/bin/sh /etc/rc.common, USE_PROCD=1, executable) and
#    postinst/prerm pass `sh -n` under busybox ash (OpenWrt's shell) and dash;
# 2. usr/bin/btcore: an ELF for TARGET's machine (ARM 32-bit hard-float, AArch64 or
#    x86-64), static (no PT_INTERP, no DT_NEEDED), mode 0755;
# 3. the package script gives the same bytes twice from the same binary (reproducible),
#    and refuses a dynamically linked binary (the native one) and one for another target;
# 4. the packaged binary runs, under qemu-arm / qemu-aarch64 with no sysroot (-L), or
#    natively for x86_64: `btcore --version`; `btcore info` on a torrent made by the native
#    btcore prints what the native one prints; a download on 127.0.0.1 from a native
#    `btcore seed`, the files compared with cmp;
# 5. the init script's start_service, run with stand-ins for procd's and UCI's shell
#    functions (this host has no procd) on the packaged /etc/config/btcore, gives a daemon
#    command line (an RPC password set: it must reach the daemon in a 0600 file, not on
#    the command line); the packaged binary runs it: the RPC answers 401 without the
#    password, session-get with it (after the 409 session-id handshake), the web page is
#    served at /, and SIGTERM stops it. With the download folder's disk missing, the
#    script starts nothing and makes no folder.
# The native btcore: $BTCORE_NATIVE, else CARGO_TARGET_DIR (default target/)/debug/btcore,
# built with cargo when missing. Every wait is bounded; every process started is killed by
# its PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ $# -eq 2 ] || { echo "usage: $0 IPK TARGET" >&2; exit 2; }
IPK=$(realpath "$1")
TARGET=$2
T0=$(date +%s)
step() { printf '\n==> %s  [%ss]\n' "$*" "$(($(date +%s) - T0))"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

case "$TARGET" in
armv7-unknown-linux-musleabihf) RUNNER=(qemu-arm) QEMU_PKG=qemu-user ;;
aarch64-unknown-linux-musl) RUNNER=(qemu-aarch64) QEMU_PKG=qemu-user ;;
x86_64-unknown-linux-musl) RUNNER=() QEMU_PKG= ;;
*) fail "unsupported target: $TARGET" ;;
esac

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

step "tools"
need=""
command -v busybox >/dev/null || need="$need busybox"
if [ -n "$QEMU_PKG" ] && ! command -v "${RUNNER[0]}" >/dev/null; then need="$need $QEMU_PKG"; fi
if [ -n "$need" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $need >/dev/null
    fi
fi
if [ -n "$QEMU_PKG" ]; then
    command -v "${RUNNER[0]}" >/dev/null || fail "${RUNNER[0]} missing (apt-get install qemu-user)"
    echo "runner: ${RUNNER[*]} (no -L: the binary must need nothing from a sysroot)"
else
    echo "runner: native"
fi
SHELLS=(dash)
if command -v busybox >/dev/null; then SHELLS=("busybox sh" dash); else echo "busybox missing: checking with dash only"; fi

step "archive: layout, control, conffiles, scripts, binary"
mkdir -p "$WORK/pkg"
python3 - "$IPK" "$TARGET" "$WORK/pkg" "$ROOT/Cargo.toml" <<'PY'
import io, os, re, struct, sys, tarfile
ipk, target, out, cargo_toml = sys.argv[1:5]
errors = []
def check(ok, what):
    print(("   ok: " if ok else "   FAILED: ") + what)
    if not ok:
        errors.append(what)

def sorted_like_gnu_tar(names):
    key = lambda n: n.split("/")[1:]
    return names == sorted(names, key=key)

outer = tarfile.open(ipk, "r:gz")
members = outer.getmembers()
names = [m.name for m in members]
check(names == ["./debian-binary", "./data.tar.gz", "./control.tar.gz"],
      f"outer members, in ipkg-build's order: {names}")
def read(tar, name):
    f = tar.extractfile(name)
    if f is None:
        raise SystemExit(f"FAIL: {name} is not a file")
    return f.read()
check(read(outer, "./debian-binary") == b"2.0\n", "debian-binary is 2.0")

def owned_and_dated(tar, label):
    ms = tar.getmembers()
    check(all(m.uid == 0 and m.gid == 0 for m in ms), f"{label}: every member owned by 0:0")
    check(len({m.mtime for m in ms}) == 1, f"{label}: one date for every member ({ms[0].mtime})")
    check(all(m.isfile() or m.isdir() for m in ms), f"{label}: only files and folders")
    return ms[0].mtime
t_outer = owned_and_dated(outer, "outer")

data_raw = read(outer, "./data.tar.gz")
ctrl_raw = read(outer, "./control.tar.gz")
check(data_raw[:2] == b"\x1f\x8b" and ctrl_raw[:2] == b"\x1f\x8b", "data and control are gzip")
import gzip
data_tar_bytes = gzip.decompress(data_raw)
data = tarfile.open(fileobj=io.BytesIO(data_tar_bytes), mode="r:")
ctrl = tarfile.open(fileobj=io.BytesIO(ctrl_raw), mode="r:gz")
t_data = owned_and_dated(data, "data")
t_ctrl = owned_and_dated(ctrl, "control")
check(t_outer == t_data == t_ctrl, "one date in the three tars")

cnames = [m.name for m in ctrl.getmembers()]
# (tarfile shows "./" and "./etc/" as "." and "./etc")
check(cnames == [".", "./conffiles", "./control", "./postinst", "./prerm"], f"control members: {cnames}")
dnames = [m.name for m in data.getmembers()]
want = [".", "./etc", "./etc/config", "./etc/config/btcore", "./etc/init.d",
        "./etc/init.d/btcore", "./usr", "./usr/bin", "./usr/bin/btcore"]
check(dnames == want, f"data members: {dnames}")
check(sorted_like_gnu_tar(dnames) and sorted_like_gnu_tar(cnames), "members sorted by name")

modes = {m.name: m.mode for m in list(data.getmembers()) + list(ctrl.getmembers())}
for name, mode in [("./usr/bin/btcore", 0o755), ("./etc/init.d/btcore", 0o755),
                   ("./etc/config/btcore", 0o600), ("./postinst", 0o755), ("./prerm", 0o755),
                   ("./control", 0o644), ("./conffiles", 0o644)]:
    check(modes.get(name) == mode, f"{name} mode {oct(mode)} (is {oct(modes.get(name) or 0)})")

# control fields
control = read(ctrl, "./control").decode()
fields = {}
last = None
for line in control.splitlines():
    if line.startswith(" ") and last:
        fields[last] += "\n" + line
    else:
        k, _, v = line.partition(":")
        last = k
        fields[k] = v.strip()
print("   control:\n" + "".join("      " + l + "\n" for l in control.splitlines()))
for k in ["Package", "Version", "Source", "SourceName", "License", "Section", "Maintainer",
          "Architecture", "Installed-Size", "Description"]:
    check(bool(fields.get(k)), f"control field {k}")
check(fields.get("Package") == "btcore", "Package: btcore")
check(fields.get("Section") == "net", "Section: net")
check("Depends" not in fields or fields["Depends"] in ("", "libc"), "no dependency but libc at most")
toml = open(cargo_toml).read()
m = re.search(r'\[workspace\.package\][^\[]*?\nversion\s*=\s*"([^"]+)"', toml)
ws_version = m.group(1) if m else None
check(fields.get("Version", "").split("-")[0] == ws_version,
      f"Version {fields.get('Version')} is the workspace's {ws_version}")
arch = fields.get("Architecture", "")
base = os.path.basename(ipk)
check(base == f"btcore_{fields.get('Version')}_{arch}.ipk", f"file name {base} names version and arch")
isa = {"armv7-unknown-linux-musleabihf": lambda a: a.startswith("arm_") and "vfp" in a or a.startswith("arm_") and "neon" in a,
       "aarch64-unknown-linux-musl": lambda a: a.startswith("aarch64"),
       "x86_64-unknown-linux-musl": lambda a: a == "x86_64"}[target]
check(isa(arch), f"Architecture {arch} is an OpenWrt name of {target}'s ISA (hard-float for ARM)")
check(fields.get("Installed-Size") == str(len(data_tar_bytes)),
      f"Installed-Size {fields.get('Installed-Size')} is the data tar's {len(data_tar_bytes)} bytes")
conffiles = read(ctrl, "./conffiles").decode()
check(conffiles == "/etc/config/btcore\n", f"conffiles: {conffiles!r}")
check(all(("." + c) in dnames for c in conffiles.split()), "every conffile is in the data")

# init script
init = read(data, "./etc/init.d/btcore").decode()
lines = init.splitlines()
check(lines[0] == "#!/bin/sh /etc/rc.common", "init: #!/bin/sh /etc/rc.common")
check("USE_PROCD=1" in lines, "init: USE_PROCD=1")
check(any(re.fullmatch(r"START=\d+", l) for l in lines) and any(re.fullmatch(r"STOP=\d+", l) for l in lines),
      "init: START= and STOP=")
check(re.search(r"^start_service\(\)", init, re.M) is not None, "init: start_service")
check("procd_add_reload_trigger btcore" in init, "init: reloads on `uci commit btcore`")
check("procd_set_param user" in init and "procd_set_param respawn" in init, "init: user and respawn")
for s in ["./postinst", "./prerm"]:
    text = read(ctrl, s).decode()
    check(text.startswith("#!/bin/sh\n"), f"{s}: #!/bin/sh")
    check("/lib/functions.sh" in text and "IPKG_INSTROOT" in text, f"{s}: OpenWrt's functions, IPKG_INSTROOT")

# the binary
elf = read(data, "./usr/bin/btcore")
want_class, want_machine = {"armv7-unknown-linux-musleabihf": (1, 40),
                            "aarch64-unknown-linux-musl": (2, 183),
                            "x86_64-unknown-linux-musl": (2, 62)}[target]
check(elf[:4] == b"\x7fELF", "btcore: ELF")
cls, endian = elf[4], elf[5]
e_machine, = struct.unpack_from("<H", elf, 18)
check(cls == want_class and endian == 1,
      f"btcore: {32 if cls == 1 else 64}-bit little-endian (want {32 if want_class == 1 else 64}-bit)")
check(e_machine == want_machine, f"btcore: e_machine {e_machine} (want {want_machine})")
if cls == 1:
    e_phoff, = struct.unpack_from("<I", elf, 28)
    e_flags, = struct.unpack_from("<I", elf, 36)
    e_phentsize, e_phnum = struct.unpack_from("<HH", elf, 42)
    phs = [struct.unpack_from("<IIIIII", elf, e_phoff + i * e_phentsize) for i in range(e_phnum)]
    phs = [(p[0], p[1], p[4]) for p in phs]
    dyn = ("<iI", 8)
else:
    e_phoff, = struct.unpack_from("<Q", elf, 32)
    e_flags, = struct.unpack_from("<I", elf, 48)
    e_phentsize, e_phnum = struct.unpack_from("<HH", elf, 54)
    phs = [struct.unpack_from("<IIQQQQ", elf, e_phoff + i * e_phentsize) for i in range(e_phnum)]
    phs = [(p[0], p[2], p[5]) for p in phs]
    dyn = ("<qQ", 16)
check(e_phnum > 0, f"btcore: {e_phnum} program headers")
check(not any(p[0] == 3 for p in phs), "btcore: no PT_INTERP (static)")
needed = 0
for t, off, size in phs:
    if t == 2:
        for o in range(off, off + size, dyn[1]):
            tag, _ = struct.unpack_from(dyn[0], elf, o)
            if tag == 0:
                break
            needed += tag == 1
check(needed == 0, "btcore: no DT_NEEDED")
if want_machine == 40:
    check(e_flags & 0xFF000000 == 0x05000000, f"btcore: ARM EABI5 (e_flags {e_flags:#x})")
    check(e_flags & 0x400 != 0, "btcore: ARM hard-float ABI")

for name, dest in [("./usr/bin/btcore", "btcore"), ("./etc/init.d/btcore", "btcore.init"),
                   ("./etc/config/btcore", "btcore.config")]:
    with open(os.path.join(out, dest), "wb") as f:
        f.write(read(data, name))
for name in ["postinst", "prerm", "control"]:
    with open(os.path.join(out, name), "wb") as f:
        f.write(read(ctrl, "./" + name))
os.chmod(os.path.join(out, "btcore"), 0o755)
with open(os.path.join(out, "fields"), "w") as f:
    f.write(f"{fields.get('Version','')}\n{arch}\n{fields.get('SourceDateEpoch', t_outer)}\n")
if errors:
    raise SystemExit(f"FAIL: {len(errors)} check(s) failed: " + "; ".join(errors))
PY
{ read -r VERSION; read -r ARCH; read -r EPOCH; } < "$WORK/pkg/fields"
for f in btcore.init postinst prerm; do
    for sh in "${SHELLS[@]}"; do
        $sh -n "$WORK/pkg/$f" || fail "$f: $sh -n"
        echo "   ok: $f passes $sh -n"
    done
done
BIN=$WORK/pkg/btcore

step "reproducible: package-ipk.sh twice from the packaged binary"
RELEASE=
case "$VERSION" in *-*) RELEASE=${VERSION#*-} ;; esac
for i in 1 2; do
    SOURCE_DATE_EPOCH=$EPOCH IPK_RELEASE=$RELEASE bash scripts/package-ipk.sh "$TARGET" "$BIN" "$WORK/re$i" "$ARCH" >/dev/null
done
A=$(ls "$WORK"/re1/*.ipk) B=$(ls "$WORK"/re2/*.ipk)
cmp "$A" "$B" || fail "two builds differ"
echo "   ok: same bytes ($(wc -c < "$A") B)"
if cmp -s "$A" "$IPK"; then echo "   ok: and the same bytes as $IPK"; else echo "   (differs from $IPK: another commit's dist/openwrt or Maintainer)"; fi
rm -rf "$WORK/re1" "$WORK/re2"

step "native btcore"
NATIVE=${BTCORE_NATIVE:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/btcore}
if [ ! -x "$NATIVE" ]; then
    echo "building it: cargo build --locked -p btcore-cli"
    CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-line-tables-only} cargo build --locked -p btcore-cli
fi
[ -x "$NATIVE" ] || fail "no native btcore at $NATIVE"
echo "   $NATIVE"

step "package-ipk.sh refuses what it must"
if file -b "$NATIVE" | grep -q 'dynamically linked'; then
    if bash scripts/package-ipk.sh x86_64-unknown-linux-musl "$NATIVE" "$WORK/refused" > "$WORK/refused.log" 2>&1; then
        fail "package-ipk.sh packaged a dynamically linked binary"
    fi
    grep -q 'dynamically linked' "$WORK/refused.log" || fail "refused the dynamic binary without saying why"
    echo "   ok: the native (dynamic) btcore is refused"
fi
OTHER=aarch64-unknown-linux-musl
[ "$TARGET" != aarch64-unknown-linux-musl ] || OTHER=armv7-unknown-linux-musleabihf
if bash scripts/package-ipk.sh "$OTHER" "$BIN" "$WORK/refused" > "$WORK/refused.log" 2>&1; then
    fail "package-ipk.sh packaged the $TARGET binary for $OTHER"
fi
grep -q 'machine' "$WORK/refused.log" || fail "refused the binary for $OTHER without saying why"
echo "   ok: the packaged binary is refused for $OTHER"
[ ! -e "$WORK/refused" ] || [ -z "$(ls -A "$WORK/refused")" ] || fail "a refused binary left a package"

step "packaged btcore --version"
got=$(timeout 60 "${RUNNER[@]}" "$BIN" --version)
echo "   $got"
[ "$(printf '%s\n' "$got" | head -1)" = "btcore ${VERSION%%-*}" ] || fail "--version says '$got', the package is ${VERSION%%-*}"
# The build it says it is: the package's target, static.
printf '%s\n' "$got" | grep -qx "target: $TARGET (static, needs no C library on the device)" ||
    fail "--version does not name $TARGET as a static build: '$got'"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "packaged btcore info on a torrent made natively"
python3 - "$WORK/seed/payload" <<'PY'
import os, sys, random
root = sys.argv[1]
rng = random.Random(7)
for name, size in [("a.bin", 5 * 1024 * 1024 + 4321), ("sub/b.bin", 1024 * 1024 + 17), ("sub/c.txt", 70001)]:
    p = os.path.join(root, name)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(rng.randbytes(size))
PY
TORRENT=$WORK/payload.torrent
timeout 60 "$NATIVE" create "$WORK/seed/payload" --piece-kib 256 -o "$TORRENT" >/dev/null
timeout 60 "$NATIVE" info "$TORRENT" > "$WORK/info.native"
timeout 60 "${RUNNER[@]}" "$BIN" info "$TORRENT" > "$WORK/info.packaged"
sed 's/^/   /' "$WORK/info.packaged"
diff "$WORK/info.native" "$WORK/info.packaged" || fail "the packaged btcore reads the torrent differently"
grep -q "payload" "$WORK/info.packaged" || fail "info does not name the torrent"
echo "   ok: the same as the native btcore's"

step "download on 127.0.0.1: native seed, packaged btcore downloads"
SEED_PORT=$(free_port)
"$NATIVE" seed "$TORRENT" "$WORK/seed" --bind 127.0.0.1 --port "$SEED_PORT" --no-trackers --no-dht \
    --json > "$WORK/seed.out" 2> "$WORK/seed.err" &
SEED_PID=$!
PIDS+=("$SEED_PID")
deadline=$(($(date +%s) + 60))
until grep -q '"state":"seeding"' "$WORK/seed.out" 2>/dev/null; do
    kill -0 "$SEED_PID" 2>/dev/null || { cat "$WORK/seed.err" >&2; fail "the seeder exited"; }
    [ "$(date +%s)" -lt "$deadline" ] || fail "the seeder did not report seeding within 60 s"
    sleep 0.2
done
echo "   seeder (pid $SEED_PID) on 127.0.0.1:$SEED_PORT"
t=$(date +%s.%N)
timeout 330 "${RUNNER[@]}" "$BIN" download "$TORRENT" -o "$WORK/out" --bind 127.0.0.1 --port "$(free_port)" \
    --peer "127.0.0.1:$SEED_PORT" --no-trackers --no-dht --timeout 300 --progress none \
    > /dev/null 2> "$WORK/download.err" || { cat "$WORK/download.err" >&2; fail "download did not complete"; }
secs=$(python3 -c "import time; print(f'{time.time() - $t:.1f}')")
for f in a.bin sub/b.bin sub/c.txt; do
    cmp "$WORK/seed/payload/$f" "$WORK/out/payload/$f" || fail "$f differs"
done
echo "   ok: $(du -sb "$WORK/out/payload" | cut -f1) bytes in ${secs} s, the same bytes (cmp)"
kill "$SEED_PID" 2>/dev/null || true
wait "$SEED_PID" 2>/dev/null || true

step "the init script's command line, run by the packaged btcore"
RPC_PORT=$(free_port)
PEER_PORT=$(free_port)
DL=$WORK/disk/torrents
mkdir -p "$WORK/disk"
# The packaged UCI file, read as uci would, then the test's own paths and ports.
python3 - "$WORK/pkg/btcore.config" > "$WORK/uci.sh" <<'PY'
import shlex, sys
section = None
for raw in open(sys.argv[1]):
    words = shlex.split(raw, comments=True)
    if not words:
        continue
    if words[0] == "config":
        section = words[2] if len(words) > 2 else words[1]
        print(f"UCI_SECTIONS=\"$UCI_SECTIONS {section}\"")
    elif words[0] == "option":
        print(f"UCI_{section}_{words[1]}={shlex.quote(words[2])}")
    elif words[0] == "list":
        print(f"UCI_{section}_{words[1]}=\"${{UCI_{section}_{words[1]}:+$UCI_{section}_{words[1]} }}\"{shlex.quote(words[2])}")
PY
grep -Eqx "UCI_main_enabled='?1'?" "$WORK/uci.sh" || fail "the packaged config does not enable the service"
cat >> "$WORK/uci.sh" <<EOF
UCI_main_download_dir='$DL'
UCI_main_rpc='127.0.0.1:$RPC_PORT'
UCI_main_port='$PEER_PORT'
UCI_main_dht='0'
UCI_main_user='$(id -un)'
UCI_main_rpc_auth='tester:pa"ss\\w rd'
EOF
# Stand-ins for what /etc/rc.common, /lib/functions.sh and /lib/functions/procd.sh give the
# script on OpenWrt: config_* read the variables above, procd_* write the command line
# (one argument a line) and the instance's parameters.
cat > "$WORK/harness.sh" <<'EOF'
. "$HARNESS_UCI"
config_load() { [ "$1" = btcore ]; }
config_get() { eval "_v=\${UCI_$2_$3-}"; [ -n "$_v" ] || _v=$4; eval "$1=\$_v"; }
config_get_bool() {
	config_get "$@"
	eval "_v=\$$1"
	case "$_v" in 1|on|true|yes|enabled) _v=1 ;; 0|off|false|no|disabled) _v=0 ;; *) _v=$4 ;; esac
	eval "$1=\$_v"
}
config_list_foreach() { eval "_l=\${UCI_$1_$2-}"; for _i in $_l; do "$3" "$_i"; done; }
user_exists() { grep -q "^$1:" /etc/passwd; }
logger() { echo "logger: $*" >&2; }
procd_open_instance() { : > "$HARNESS_CMD"; : > "$HARNESS_PARAMS"; }
procd_set_param() {
	_p=$1; shift
	if [ "$_p" = command ]; then
		: > "$HARNESS_CMD"
		for _a in "$@"; do printf '%s\n' "$_a" >> "$HARNESS_CMD"; done
	else
		echo "$_p $*" >> "$HARNESS_PARAMS"
	fi
}
procd_append_param() {
	_p=$1; shift
	if [ "$_p" = command ]; then
		for _a in "$@"; do printf '%s\n' "$_a" >> "$HARNESS_CMD"; done
	else
		echo "$_p $*" >> "$HARNESS_PARAMS"
	fi
}
procd_close_instance() { echo closed >> "$HARNESS_PARAMS"; }
procd_add_reload_trigger() { echo "reload-trigger $*" >> "$HARNESS_PARAMS"; }
procd_add_restart_mount_trigger() { echo "mount-trigger $*" >> "$HARNESS_PARAMS"; }
. "$HARNESS_INIT"
RUN_DIR=$HARNESS_RUN_DIR
start_service || exit
service_triggers
EOF
export HARNESS_UCI=$WORK/uci.sh HARNESS_CMD=$WORK/cmd HARNESS_PARAMS=$WORK/params HARNESS_INIT=$WORK/pkg/btcore.init \
    HARNESS_RUN_DIR=$WORK/run
HSH=${SHELLS[0]}
$HSH "$WORK/harness.sh" || fail "start_service failed under $HSH"
grep -qx closed "$WORK/params" || fail "start_service opened no procd instance"
grep -q '^stdout 1' "$WORK/params" && grep -q '^stderr 1' "$WORK/params" || fail "output not sent to logd"
grep -q "^user $(id -un)\$" "$WORK/params" || fail "no procd user"
grep -q '^respawn' "$WORK/params" || fail "no respawn"
grep -qx 'reload-trigger btcore' "$WORK/params" || fail "no reload on uci commit btcore"
grep -qx "mount-trigger $DL" "$WORK/params" || fail "no restart when the download disk is mounted"
[ -d "$DL" ] || fail "start_service did not make the download folder"
echo "   procd parameters: $(tr '\n' ' ' < "$WORK/params")"
mapfile -t CMD < "$WORK/cmd"
echo "   command: ${CMD[*]}"
[ "${CMD[0]}" = /usr/bin/btcore ] && [ "${CMD[1]}" = daemon ] || fail "the command is not /usr/bin/btcore daemon"
printf '%s\n' "${CMD[@]}" | grep -qx -- --low-memory || fail "the packaged config does not ask for --low-memory"
! grep -q 'pa"ss' "$WORK/cmd" || fail "the RPC password is on the command line"
[ "$(stat -c %a "$WORK/run/auth.json")" = 600 ] || fail "auth.json is readable by others"
echo "   ok: the RPC password in $(stat -c %a "$WORK/run/auth.json") auth.json, not on the command line"
# A disk that is not mounted: the service does not start, and makes no folder.
sed "s|^UCI_main_download_dir=.*|UCI_main_download_dir='$WORK/nodisk/torrents'|" "$WORK/uci.sh" > "$WORK/uci-nodisk.sh"
if HARNESS_UCI=$WORK/uci-nodisk.sh $HSH "$WORK/harness.sh" 2>/dev/null; then fail "started with the disk missing"; fi
[ ! -e "$WORK/nodisk" ] || fail "made a folder where no disk is mounted"
echo "   ok: not started while the download folder's parent is missing"

"${RUNNER[@]}" "$BIN" "${CMD[@]:1}" > "$WORK/daemon.out" 2> "$WORK/daemon.err" &
DAEMON_PID=$!
PIDS+=("$DAEMON_PID")
python3 - "$RPC_PORT" "$DAEMON_PID" 'tester:pa"ss\w rd' <<'PY' || { sed 's/^/   daemon: /' "$WORK/daemon.err" >&2; fail "the daemon did not answer as it should"; }
import base64, http.client, json, os, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
auth = {"Authorization": "Basic " + base64.b64encode(sys.argv[3].encode()).decode()}
deadline = time.time() + 60
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("POST", "/transmission/rpc", body=json.dumps({"method": "session-get"}))
        r = c.getresponse()
        r.read()
        assert r.status == 401, f"without the password: {r.status}, want 401"
        print("   ok: 401 without the password")
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("POST", "/transmission/rpc", body=json.dumps({"method": "session-get"}), headers=auth)
        r = c.getresponse()
        r.read()
        break
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit("the daemon exited")
        if time.time() > deadline:
            sys.exit("no answer within 60 s")
        time.sleep(0.3)
assert r.status == 409, f"first request: {r.status}, want 409"
sid = r.getheader("X-Transmission-Session-Id")
assert sid, "no X-Transmission-Session-Id"
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
c.request("POST", "/transmission/rpc", body=json.dumps({"method": "session-get"}),
          headers={"X-Transmission-Session-Id": sid, **auth})
r = c.getresponse()
body = json.loads(r.read())
assert r.status == 200 and body.get("result") == "success", f"session-get: {r.status} {body}"
args = body["arguments"]
dd = args.get("download-dir") or args.get("download_dir")
print(f"   ok: session-get: 409, then success; version {args.get('version')}, download-dir {dd}")
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
c.request("GET", "/", headers={"Accept-Encoding": "gzip", **auth})
r = c.getresponse()
page = r.read()
if r.getheader("Content-Encoding") == "gzip":
    import gzip
    page = gzip.decompress(page)
assert r.status == 200 and b"<html" in page.lower(), f"GET /: {r.status}, {page[:80]!r}"
print(f"   ok: GET / serves the web page ({len(page)} bytes, {r.getheader('Content-Type')})")
PY
kill "$DAEMON_PID"
timeout 30 tail --pid="$DAEMON_PID" -f /dev/null || fail "the daemon did not stop on SIGTERM within 30 s"
wait "$DAEMON_PID" 2>/dev/null || true
echo "   ok: stopped on SIGTERM"

step "passed: $(basename "$IPK") ($(wc -c < "$IPK") bytes) for $TARGET"
