#!/usr/bin/env bash
# Installs, runs and removes the btcore Debian package, as root:
#   bash scripts/test-deb.sh target/debian/btcore_*_amd64.deb
# (the package from scripts/package-deb.sh, for this machine's architecture).
#
# What it checks: `dpkg -i` puts the binary, the unit, the settings file (a conffile) and
# the docs in place and makes the system user and group btcore with /var/lib/btcore and
# its state/ and downloads/ folders (owners, modes); `systemd-analyze verify` finds no
# fault in the unit; the unit starts the daemon, which answers transmission-remote and
# the RPC's session-id handshake (409) and serves its web page, runs as btcore (not
# root) and holds the RPC port itself; a port set in /etc/btcore/daemon.json, as a user
# would set it, is where it listens after a restart; `dpkg -r` stops it (prerm), removes
# the binary and the unit and keeps the (changed) settings file and the user's data;
# `dpkg -P` removes the settings file and the daemon's state and keeps downloaded data.
#
# How the unit is started, by what this machine is (printed as "start path"):
# - systemd is PID 1: for real, as on a NAS: postinst starts the unit with systemctl,
#   prerm stops it. The RPC must be free on 127.0.0.1:9091 (the package's default).
# - systemd is installed but not PID 1 (a CI VM or container whose init is something
#   else): a container booted with systemd-nspawn (package systemd-container, installed
#   here if missing) whose root is an overlay of this machine's root over a tmpfs, in a
#   mount namespace of its own, with a private network (loopback only). Its PID 1 is
#   systemd, booted to basic.target; this script runs again inside it and takes the path
#   above. In the overlay only, two things of this machine's image that a booted NAS does
#   not have are taken away: /usr/sbin/policy-rc.d (it forbids starting services) and the
#   wait-online services (with no network they hold network-online.target, which the
#   unit wants, for 2 minutes). Nothing the test does there reaches this machine's files
#   or network: the package is never installed here, and the container is stopped by its
#   PID on exit.
# - neither, or no container can be had here (nspawn, a mount namespace or an overlay
#   refused: the script says which and falls back), or TEST_DEB_MODE=manual: no systemd
#   to start the unit. The daemon is started exactly as the installed unit says: User=,
#   Group= and ExecStart= read from /usr/lib/systemd/system/btcore.service, run with
#   setpriv (the unit's sandboxing options are not applied on this path). prerm cannot
#   stop a daemon that no service manager started, so the test stops it by its PID
#   before `dpkg -r`, and says so. The RPC port is moved off 9091 first (TEST_DEB_PORT,
#   default 19091) through the settings file, as a user would.
# TEST_DEB_MODE=systemd|container|manual forces a path. Every wait is bounded; the daemon
# and the container are stopped by PID, and the package purged, on any exit.
set -euo pipefail

SELF=$(readlink -f "$0")
[ $# -eq 1 ] || { echo "usage: $0 PACKAGE.deb" >&2; exit 2; }
DEB=$(readlink -f "$1")
[ -f "$DEB" ] || { echo "no package at $1" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root (dpkg -i)" >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH

UNIT=/usr/lib/systemd/system/btcore.service
CONF=/etc/btcore/daemon.json
PORT_DEFAULT=9091
ALT_PORT=${TEST_DEB_PORT:-19091}
T0=$(date +%s)
failures=0
step() { printf '\n==> %s  [%ss]\n' "$*" "$(($(date +%s) - T0))"; }
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; failures=$((failures + 1)); }
die() { echo "FAIL: $*"; exit 1; }
check() { # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}

need_pkg() { # need_pkg COMMAND PACKAGE
    command -v "$1" >/dev/null && return 0
    echo "installing $2 (for $1)"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}

pid1_is_systemd() {
    [ -d /run/systemd/system ] && [ "$(basename "$(readlink /proc/1/exe)")" = systemd ]
}

mode=${TEST_DEB_MODE:-}
forced=${TEST_DEB_MODE:+1}
if [ -z "$mode" ]; then
    if pid1_is_systemd; then
        mode=systemd
    elif [ -x /lib/systemd/systemd ] && command -v unshare >/dev/null; then
        mode=container
    else
        mode=manual
    fi
fi

# ---------------------------------------------------------------- container path
if [ "$mode" = container ]; then
    no_container() { # the container cannot be had here: the manual path, unless forced
        echo "no container: $*"
        [ -z "$forced" ] || die "TEST_DEB_MODE=container, and no container could be started"
        if declare -F stop_container >/dev/null; then stop_container; trap - EXIT; fi
        echo "falling back to the manual path"
        TEST_DEB_MODE=manual exec bash "$SELF" "$DEB"
    }
    if [ "${TEST_DEB_IN_NS:-}" != 1 ]; then
        need_pkg systemd-nspawn systemd-container || no_container "systemd-container could not be installed"
        # The container has no network: what the test uses comes from this machine.
        need_pkg transmission-remote transmission-cli
        need_pkg curl curl
        need_pkg ss iproute2
        step "start path: systemd-nspawn container (PID 1 here is $(cat /proc/1/comm), not systemd)"
        # A mount namespace of its own: the overlay and every mount below vanish with it.
        unshare --mount true 2>/dev/null || no_container "no mount namespace for the overlay"
        TEST_DEB_IN_NS=1 exec unshare --mount --propagation private -- bash "$SELF" "$DEB"
    fi
    W=$(mktemp -d /tmp/btcore-test-deb.XXXXXX)
    NSPAWN_PID=""
    stop_container() {
        if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
            # SIGTERM: nspawn asks the container's systemd to halt.
            kill -TERM "$NSPAWN_PID" 2>/dev/null || true
            for _ in $(seq 1 60); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.5; done
            if kill -0 "$NSPAWN_PID" 2>/dev/null; then
                echo "container did not halt in 30 s: SIGKILL"
                kill -KILL "$NSPAWN_PID" 2>/dev/null || true
                wait "$NSPAWN_PID" 2>/dev/null || true
            fi
        fi
        NSPAWN_PID=""
        umount -R "$W" 2>/dev/null || true
        rmdir "$W" 2>/dev/null || true
    }
    trap stop_container EXIT
    mount -t tmpfs -o mode=0700 btcore-test-deb "$W" || no_container "cannot mount a tmpfs"
    mkdir "$W/upper" "$W/work" "$W/root"
    mount -t overlay overlay -o "lowerdir=/,upperdir=$W/upper,workdir=$W/work" "$W/root" ||
        no_container "cannot mount an overlay of /"
    # The host's machine id would make journald link journals across: a fresh one.
    rm -f "$W/root/etc/machine-id"
    # The container's network is loopback only: a wait-online service of the image would
    # hold network-online.target (which the unit wants) for its whole timeout (2 min).
    for u in systemd-networkd-wait-online NetworkManager-wait-online ifupdown-wait-online; do
        if [ -e "$W/root/usr/lib/systemd/system/$u.service" ] || [ -e "$W/root/lib/systemd/system/$u.service" ]; then
            ln -sf /dev/null "$W/root/etc/systemd/system/$u.service"
            echo "container: $u.service masked in the overlay (no network to wait for)"
        fi
    done
    # An image's policy-rc.d (101: start no service, for image builds) would keep postinst
    # from starting the unit; the booted container is a system like a NAS, which has none.
    if [ -e "$W/root/usr/sbin/policy-rc.d" ]; then
        echo "container: /usr/sbin/policy-rc.d removed in the overlay (it forbids starting services)"
        rm -f "$W/root/usr/sbin/policy-rc.d"
    fi
    systemd-nspawn --quiet -D "$W/root" --private-network --register=no --keep-unit \
        --console=passive -M btcore-test-deb \
        --bind-ro="$DEB:/opt/btcore-test/btcore.deb" \
        --bind-ro="$SELF:/opt/btcore-test/test-deb.sh" \
        -b -- systemd.unit=basic.target >"$W.log" 2>&1 &
    NSPAWN_PID=$!
    leader=""
    for _ in $(seq 1 60); do
        # The container's PID 1 (nspawn's child; an intermediate child comes and goes).
        leader=$(pgrep -P "$NSPAWN_PID" -x systemd | head -n 1 || true)
        [ -n "$leader" ] && break
        kill -0 "$NSPAWN_PID" 2>/dev/null || break
        sleep 0.5
    done
    if [ -z "$leader" ]; then
        cat "$W.log"; rm -f "$W.log"; no_container "systemd-nspawn did not start systemd"
    fi
    in_ct() { nsenter -t "$leader" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb "$@"; }
    state=""
    deadline=$((SECONDS + 120))
    while [ "$SECONDS" -lt "$deadline" ]; do
        # Blocks until the boot is done; fails at once while systemd is not reachable yet.
        state=$(timeout $((deadline - SECONDS + 1)) nsenter -t "$leader" -a \
            systemctl is-system-running --wait 2>/dev/null || true)
        case "$state" in running | degraded) break ;; esac
        kill -0 "$NSPAWN_PID" 2>/dev/null || break
        sleep 0.5
    done
    echo "container: PID 1 $(in_ct cat /proc/1/comm), system state: ${state:-unknown}"
    case "$state" in
        running | degraded) ;;
        *) cat "$W.log"; rm -f "$W.log"; no_container "the container's systemd did not finish booting in 120 s" ;;
    esac
    rc=0
    timeout 600 nsenter -t "$leader" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb \
        TEST_DEB_CONTAINER=1 bash /opt/btcore-test/test-deb.sh /opt/btcore-test/btcore.deb || rc=$?
    stop_container
    rm -f "$W.log"
    trap - EXIT
    [ "$rc" = 0 ] || die "the test inside the container failed (exit $rc)"
    echo "deb test passed (start path: systemd in a systemd-nspawn container)"
    exit 0
fi

# ---------------------------------------------------------------- systemd / manual
case "$mode" in
    systemd)
        pid1_is_systemd || die "TEST_DEB_MODE=systemd but PID 1 is not systemd"
        if [ "${TEST_DEB_CONTAINER:-}" = 1 ]; then
            step "start path: systemctl, systemd as PID 1 of the container"
        else
            step "start path: systemctl, systemd as PID 1 of this machine"
        fi ;;
    manual)
        step "start path: the installed unit's User/Group/ExecStart run with setpriv (no systemd as PID 1 here)" ;;
    *) die "unknown TEST_DEB_MODE=$mode" ;;
esac

dpkg -s btcore >/dev/null 2>&1 && die "a btcore package is installed already: remove it first (dpkg -P btcore)"
if [ "$mode" = systemd ] && [ -x /usr/sbin/policy-rc.d ]; then
    rc=0; /usr/sbin/policy-rc.d btcore.service start >/dev/null 2>&1 || rc=$?
    [ "$rc" != 101 ] || die "/usr/sbin/policy-rc.d forbids starting services here: postinst could not start the unit"
fi
need_pkg transmission-remote transmission-cli
need_pkg curl curl
need_pkg ss iproute2

user_existed=0
getent passwd btcore >/dev/null && user_existed=1
DAEMON_PID=""
cleanup() {
    local rc=$?
    set +e
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID"
        for _ in $(seq 1 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$DAEMON_PID" 2>/dev/null
    fi
    if dpkg -s btcore >/dev/null 2>&1; then
        echo "cleanup: purging the package"
        timeout 120 dpkg -P btcore >/dev/null 2>&1
    fi
    rm -f /var/lib/btcore/downloads/kept-by-purge.txt
    rmdir /var/lib/btcore/downloads /var/lib/btcore 2>/dev/null
    if [ "$user_existed" = 0 ] && getent passwd btcore >/dev/null; then
        userdel btcore 2>/dev/null
        getent group btcore >/dev/null && groupdel btcore 2>/dev/null
    fi
    exit "$rc"
}
trap cleanup EXIT

listener_pid() { # the PID holding 127.0.0.1:PORT, or nothing
    ss -Hltnp "sport = :$1" | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2
}
wait_listen() { # wait_listen PORT PID: up to 60 s for PID to listen on PORT
    # (60 s: with no DNS server reachable, as in the container, the daemon's RPC comes up
    # only once the DHT bootstrap names fail to resolve, about 20 s after the start)
    for _ in $(seq 1 300); do
        [ "$(listener_pid "$1")" = "$2" ] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}
wait_gone() { # wait_gone PID: up to 20 s
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.2; done
    return 1
}
installed_btcore_pids() { # processes running the package's binary (even once deleted);
    # other btcore processes on this machine (tests run from a build tree) are not ours
    local p
    for p in $(pgrep -x btcore || true); do
        case "$(readlink "/proc/$p/exe" 2>/dev/null)" in /usr/bin/btcore*) echo "$p" ;; esac
    done
}
main_pid() { systemctl show -p MainPID --value btcore; }
wait_active() { # up to 20 s for the unit to be active with a main PID
    local pid
    for _ in $(seq 1 100); do
        pid=$(main_pid)
        if [ "$(systemctl is-active btcore || true)" = active ] && [ "${pid:-0}" != 0 ]; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

check_daemon() { # check_daemon PORT PID: it answers, as btcore, from /usr/bin/btcore
    local port=$1 pid=$2 out code hdr uid
    if wait_listen "$port" "$pid"; then ok "PID $pid listens on 127.0.0.1:$port"
    else bad "PID $pid does not listen on 127.0.0.1:$port"; return; fi
    out=$(timeout 20 transmission-remote "127.0.0.1:$port" -si 2>&1) || true
    grep -E "Daemon version|RPC version:|directory" <<<"$out" | sed 's/^ */  transmission-remote -si: /' || true
    if grep -q "RPC version" <<<"$out" && grep -q "Download directory: /var/lib/btcore/downloads" <<<"$out"; then
        ok "transmission-remote 127.0.0.1:$port -si: the daemon's session, its download folder from $CONF"
    else
        bad "transmission-remote 127.0.0.1:$port -si did not show the session"
    fi
    hdr=$(timeout 10 curl -s -o /dev/null -D - -X POST "http://127.0.0.1:$port/transmission/rpc" || true)
    code=$(head -n 1 <<<"$hdr" | awk '{print $2}')
    if [ "$code" = 409 ] && grep -qi '^X-Transmission-Session-Id: ' <<<"$hdr"; then
        ok "POST /transmission/rpc without a session id: 409 with X-Transmission-Session-Id"
    else
        bad "the session-id handshake: got '${code:-nothing}'"
    fi
    page=$(timeout 10 curl -sf --compressed "http://127.0.0.1:$port/" || true)
    if grep -q "<title>btcore</title>" <<<"$page"; then
        ok "GET / serves the web page"
    else
        bad "GET / did not serve the web page"
    fi
    uid=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")
    local bt; bt=$(id -u btcore)
    check "the daemon (PID $pid) runs as btcore (uid $bt), not root: real/effective/saved/fs uids $uid" \
        test "$uid" = "$bt $bt $bt $bt"
    check "its user name is btcore ($(ps -o user= -p "$pid"))" test "$(ps -o user= -p "$pid")" = btcore
    check "its gid is btcore's" test "$(awk '/^Gid:/ {print $3}' "/proc/$pid/status")" = "$(getent group btcore | cut -d: -f3)"
    check "it is /usr/bin/btcore ($(readlink "/proc/$pid/exe"))" test "$(readlink "/proc/$pid/exe")" = /usr/bin/btcore
}

# ---------------------------------------------------------------- install
if [ "$mode" = systemd ] && [ -n "$(listener_pid "$PORT_DEFAULT")" ]; then
    die "127.0.0.1:$PORT_DEFAULT is taken (another daemon?): the package's daemon could not listen there"
fi
step "dpkg -i $(basename "$DEB")"
dpkg-deb -f "$DEB" Package Version Architecture Depends
timeout 300 dpkg -i "$DEB"

step "files"
check "/usr/bin/btcore is an executable that runs ($(/usr/bin/btcore --version 2>&1 | head -n 1))" \
    /usr/bin/btcore --version
check "$UNIT installed" test -f "$UNIT"
check "$CONF installed" test -f "$CONF"
check "$CONF is a conffile" bash -c "dpkg-query -W -f='\${Conffiles}\n' btcore | grep -q ' $CONF '"
for f in README.md daemon.md copyright; do
    check "/usr/share/doc/btcore/$f" test -s "/usr/share/doc/btcore/$f"
done
check "the unit runs btcore daemon --config $CONF" grep -q "^ExecStart=/usr/bin/btcore daemon --config $CONF\$" "$UNIT"

step "user, group, folders"
pw=$(getent passwd btcore || true)
echo "  $pw"
check "user btcore exists" test -n "$pw"
check "group btcore exists" getent group btcore
check "btcore is a system user (uid $(cut -d: -f3 <<<"$pw") < 1000)" test "$(cut -d: -f3 <<<"$pw")" -lt 1000
check "its home is /var/lib/btcore" test "$(cut -d: -f6 <<<"$pw")" = /var/lib/btcore
check "it has no login shell ($(cut -d: -f7 <<<"$pw"))" bash -c "case '$(cut -d: -f7 <<<"$pw")' in */nologin|*/false) ;; *) exit 1;; esac"
for d in /var/lib/btcore:750 /var/lib/btcore/state:700 /var/lib/btcore/downloads:750; do
    dir=${d%:*}
    got=$(stat -c '%U:%G %a' "$dir" 2>/dev/null || echo missing)
    check "$dir is btcore:btcore ${d#*:} ($got)" test "$got" = "btcore:btcore ${d#*:}"
done

if command -v systemd-analyze >/dev/null; then
    step "systemd-analyze verify $UNIT"
    out=$(systemd-analyze verify "$UNIT" 2>&1) && rc=0 || rc=$?
    if [ -n "$out" ]; then printf '  %s\n' "${out//$'\n'/$'\n'  }"; fi
    if [ "$rc" != 0 ]; then bad "systemd-analyze verify exited $rc"
    elif grep -q "btcore.service" <<<"$out"; then bad "systemd-analyze verify complains about btcore.service"
    else ok "systemd-analyze verify: no fault in the unit"; fi
else
    echo "systemd-analyze not installed: unit not verified"
fi

# ---------------------------------------------------------------- run
if [ "$mode" = systemd ]; then
    step "the unit, started by postinst"
    check "btcore.service is enabled ($(systemctl is-enabled btcore || true))" \
        test "$(systemctl is-enabled btcore || true)" = enabled
    if wait_active; then ok "btcore.service is active"
    else systemctl status --no-pager btcore || true; journalctl -u btcore --no-pager | tail -n 20 || true
        die "btcore.service did not become active"; fi
    pid=$(main_pid)
    check_daemon "$PORT_DEFAULT" "$pid"
    check "the unit's sandbox applies (NoNewPrivs: $(awk '/^NoNewPrivs:/ {print $2}' "/proc/$pid/status"))" \
        test "$(awk '/^NoNewPrivs:/ {print $2}' "/proc/$pid/status")" = 1

    step "another port in $CONF, as a user sets it, then systemctl restart"
    sed -i "s/127\.0\.0\.1:$PORT_DEFAULT/127.0.0.1:$ALT_PORT/" "$CONF"
    grep -q "127.0.0.1:$ALT_PORT" "$CONF" || die "could not set the port in $CONF"
    timeout 60 systemctl restart btcore
    wait_active || die "btcore.service did not come back after the restart"
    check "a new process after the restart" test "$(main_pid)" != "$pid"
    check_daemon "$ALT_PORT" "$(main_pid)"
    check "nothing listens on $PORT_DEFAULT any more" test -z "$(listener_pid "$PORT_DEFAULT")"
    DAEMON_PID=$(main_pid)
    # From here on the test only watches: DAEMON_PID is for cleanup if prerm fails.
else
    step "the unit's command, run as the unit says (no systemd as PID 1)"
    u=$(sed -n 's/^User=//p' "$UNIT" | tail -n 1)
    g=$(sed -n 's/^Group=//p' "$UNIT" | tail -n 1)
    cmd=$(sed -n 's/^ExecStart=//p' "$UNIT" | tail -n 1)
    echo "  User=$u Group=$g ExecStart=$cmd"
    if [ -z "$u" ] || [ -z "$g" ] || [ -z "$cmd" ]; then die "User/Group/ExecStart missing from $UNIT"; fi
    echo "  the port moved to $ALT_PORT in $CONF, as a user would, so no daemon on 9091 collides"
    sed -i "s/127\.0\.0\.1:$PORT_DEFAULT/127.0.0.1:$ALT_PORT/" "$CONF"
    grep -q "127.0.0.1:$ALT_PORT" "$CONF" || die "could not set the port in $CONF"
    [ -z "$(listener_pid "$ALT_PORT")" ] || die "127.0.0.1:$ALT_PORT is taken: set TEST_DEB_PORT"
    log=$(mktemp)
    home=$(getent passwd "$u" | cut -d: -f6)
    # shellcheck disable=SC2086 # ExecStart is split into words as systemd splits it here
    (cd / && exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$home" USER="$u" LOGNAME="$u" \
        setpriv --reuid="$u" --regid="$g" --init-groups --no-new-privs -- $cmd) >"$log" 2>&1 &
    DAEMON_PID=$!
    check_daemon "$ALT_PORT" "$DAEMON_PID"
    step "stopping the daemon by its PID before dpkg -r: prerm cannot, with no systemd to ask"
    kill -TERM "$DAEMON_PID"
    if wait_gone "$DAEMON_PID"; then ok "the daemon exited on SIGTERM"; else bad "the daemon ignored SIGTERM for 20 s"; fi
    wait "$DAEMON_PID" 2>/dev/null || true
    sed 's/^/  daemon: /' "$log" | tail -n 5; rm -f "$log"
fi

# ---------------------------------------------------------------- remove
step "dpkg -r btcore"
echo "a downloaded file" >/var/lib/btcore/downloads/kept-by-purge.txt
chown btcore:btcore /var/lib/btcore/downloads/kept-by-purge.txt
timeout 120 dpkg -r btcore
if [ "$mode" = systemd ]; then
    if wait_gone "$DAEMON_PID"; then ok "prerm stopped the daemon (PID $DAEMON_PID gone)"
    else bad "the daemon (PID $DAEMON_PID) still runs after dpkg -r"; fi
    check "btcore.service is not active" test "$(systemctl is-active btcore || true)" != active
fi
left=$(pgrep -u btcore || true)
check "no process of user btcore left${left:+ ($left)}" test -z "$left"
left=$(installed_btcore_pids)
check "no process of /usr/bin/btcore left${left:+ ($left)}" test -z "$left"
check "/usr/bin/btcore removed" test ! -e /usr/bin/btcore
check "$UNIT removed" test ! -e "$UNIT"
check "$CONF kept, with the user's change" grep -q "127.0.0.1:$ALT_PORT" "$CONF"
check "package state: config-files" test "$(dpkg-query -W -f='${db:Status-Status}' btcore)" = config-files
check "the daemon's state kept" test -d /var/lib/btcore/state
check "user btcore kept" getent passwd btcore

step "dpkg -P btcore"
timeout 120 dpkg -P btcore
check "$CONF removed" test ! -e "$CONF"
check "/etc/btcore removed" test ! -e /etc/btcore
check "the package is gone from dpkg's list" bash -c '! dpkg -s btcore >/dev/null 2>&1'
check "the daemon's state removed" test ! -e /var/lib/btcore/state
check "downloaded data kept" test -f /var/lib/btcore/downloads/kept-by-purge.txt
if [ "$mode" = systemd ]; then
    check "no unit left enabled" test ! -e /etc/systemd/system/multi-user.target.wants/btcore.service
fi

echo
if [ "$failures" != 0 ]; then
    echo "deb test: $failures check(s) failed"
    exit 1
fi
echo "deb test passed (start path: $mode${TEST_DEB_CONTAINER:+, in a container})"
