//! BEP 55 hole punching between two btcore peers behind NATs, in network namespaces:
//!
//! ```text
//!  a 10.77.1.2 ── rt-a (NAT 44.1.0.2) ──┐            ┌── rt-b (NAT 44.1.0.3) ── b 10.77.2.2
//!  btcore seed                          bridge in `out`                       btcore download
//!                                       44.1.0.1: btcore tracker, btcore relay
//!                                       (download, 64 KiB/s)
//! ```
//!
//! Each router masquerades its inside behind its outside address and drops what comes
//! in unasked (a new flow, to the router or through it), as a home router does: a
//! router that answered instead would leave a connection-tracking entry that makes
//! the next mapping of that port take another one. Nobody outside can dial `a` or
//! `b`; each reaches the outside and its own router.
//!
//! `a` seeds, the relay downloads at 64 KiB/s (it never has much to give), `b` starts
//! empty three seconds after `a`, so only `b` hears of `a` (from the tracker and the
//! relay's PEX). `b` dials `a` and fails, asks the relay for a rendezvous, the relay
//! sends both a `connect`, both dial over uTP, the routers let each other's SYN in
//! after their own went out, and `b` downloads the 8 MiB from `a`. Checked: `b` has
//! the data, and the logs of `b`, the relay and `a` show each step.
//!
//! Needs root, `ip netns` and `iptables`; without them the test prints "skipped" and
//! passes, unless `BTCORE_INTEROP=1`. Every process is stopped by its PID, the
//! namespaces are deleted at the end.

mod common;

use common::{btcore, btcore_create, Case, Config, Deadline, Empties, Rng};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const CONFIG: Config = Config {
    dir_prefix: "btcore-holepunch",
    deadline: Deadline::Case(Duration::from_secs(75)),
    poll: Duration::from_millis(50),
    log_tail: 6000,
    btcore_exit_hint: true,
};

const PORT: u16 = 6881;

fn sbin(name: &str) -> Option<String> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| Path::new(p).is_file())
}

fn run(args: &[&str]) -> Result<String, String> {
    let o = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!(
            "{args:?}: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// The five namespaces; deleted when dropped.
struct Net {
    /// out, rt-a, rt-b, a, b.
    names: [String; 5],
}

impl Net {
    fn ns(&self, i: usize) -> &str {
        &self.names[i]
    }

    fn setup(iptables: &str) -> Result<Self, String> {
        let pid = std::process::id();
        let names = ["out", "rta", "rtb", "a", "b"].map(|s| format!("bthp{pid}-{s}"));
        let net = Self { names };
        for ns in &net.names {
            let _ = run(&["ip", "netns", "del", ns]);
            run(&["ip", "netns", "add", ns])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        // The outside is one network: a bridge in `out` (44.1.0.1, the relay and the
        // tracker) with each router's outside port on it. (With a routed outside the
        // relay's UDP answers to the far router would leave from the address of the
        // other interface, and that router would drop them as unasked.)
        let o = net.ns(0).to_string();
        let mut steps: Vec<String> = vec![
            format!("ip -n {o} link add br0 type bridge"),
            format!("ip -n {o} addr add 44.1.0.1/24 dev br0"),
            format!("ip -n {o} link set br0 up"),
        ];
        for (k, rt, inside) in [(1, net.ns(1), net.ns(3)), (2, net.ns(2), net.ns(4))] {
            let ext = k + 1;
            steps.extend([
                // The outside port: router 44.1.0.(K+1) on the bridge.
                format!("ip -n {rt} link add wan0 type veth peer name wan{k} netns {o}"),
                format!("ip -n {o} link set wan{k} master br0"),
                format!("ip -n {o} link set wan{k} up"),
                format!("ip -n {rt} addr add 44.1.0.{ext}/24 dev wan0"),
                format!("ip -n {rt} link set wan0 up"),
                format!("ip -n {rt} route add default via 44.1.0.1"),
                // The inside: router 10.77.K.1, peer 10.77.K.2.
                format!("ip -n {inside} link add lan0 type veth peer name lan1 netns {rt}"),
                format!("ip -n {rt} addr add 10.77.{k}.1/24 dev lan1"),
                format!("ip -n {rt} link set lan1 up"),
                format!("ip -n {inside} addr add 10.77.{k}.2/24 dev lan0"),
                format!("ip -n {inside} link set lan0 up"),
                format!("ip -n {inside} route add default via 10.77.{k}.1"),
                format!("ip netns exec {rt} sysctl -qw net.ipv4.ip_forward=1"),
                format!("ip netns exec {rt} {iptables} -t nat -A POSTROUTING -o wan0 -j MASQUERADE"),
                format!("ip netns exec {rt} {iptables} -A INPUT -i wan0 -m conntrack --ctstate NEW -j DROP"),
                format!("ip netns exec {rt} {iptables} -A FORWARD -i wan0 -m conntrack --ctstate NEW -j DROP"),
            ]);
        }
        for s in steps {
            let args: Vec<&str> = s.split(' ').collect();
            run(&args)?;
        }
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

/// `ip netns exec NS` + `cmd`'s program and arguments.
fn in_ns(ns: &str, cmd: Command) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(cmd.get_program());
    c.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// `btcore SUB TORRENT ...` on PORT, trackers on, no DHT, no port mapping, with
/// the hole punching steps (and the rest at info) in its log.
fn peer(sub: &str, torrent: &Path) -> Command {
    let mut c = btcore(&[sub]);
    c.arg(torrent);
    c.args(["--port", &PORT.to_string(), "--no-port-mapping"]);
    c.args(["--progress", "plain"]);
    if common::btcore_has_dht() {
        c.arg("--no-dht");
    }
    c.env(
        "RUST_LOG",
        std::env::var("BTCORE_INTEROP_LOG").unwrap_or_else(|_| "info,btcore_host=debug".into()),
    );
    c
}

/// Who plays a role: btcore, or libtorrent (`tests/interop/lt_nat.py`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Btcore,
    Libtorrent,
}

/// The libtorrent peer of `tests/interop/lt_nat.py` on PORT of `ip`.
fn lt_peer(mode: &str, torrent: &Path, dir: &Path, ip: &str) -> Command {
    let mut c = Command::new(common::PYTHON);
    c.arg(common::interop_script("lt_nat.py"))
        .arg(mode)
        .arg(torrent)
        .arg(dir);
    c.args(["--listen", &format!("{ip}:{PORT}")]);
    c
}

/// Whether python3-libtorrent imports; without it a case with libtorrent prints
/// "skipped" and passes, unless `BTCORE_INTEROP=1`.
fn have_libtorrent() -> bool {
    let ok = Command::new(common::PYTHON)
        .args(["-c", "import libtorrent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("BTCORE_INTEROP").as_deref() != Ok("1"),
            "BTCORE_INTEROP=1 but python3-libtorrent does not import \
             (apt-get install python3-libtorrent)"
        );
        println!("skipped: needs python3-libtorrent");
    }
    ok
}

/// The network, the tracker, the relay, the seed `a` and the downloader `b`, each
/// played by `relay_by`, `seed_by`, `down_by`; `b` must get the 8 MiB from `a`, and
/// each role's log must show its step of the punch.
fn punch(relay_by: Who, seed_by: Who, down_by: Who) {
    let tool = sbin("iptables");
    let root = run(&["id", "-u"]).is_ok_and(|u| u.trim() == "0");
    let netns = root && run(&["ip", "netns", "list"]).is_ok();
    let (Some(iptables), true) = (tool, netns) else {
        assert!(
            std::env::var("BTCORE_INTEROP").as_deref() != Ok("1"),
            "BTCORE_INTEROP=1 but this needs root, `ip netns` and iptables \
             (apt-get install iptables iproute2)"
        );
        println!("skipped: needs root, ip netns, iptables");
        return;
    };
    let with_lt = [relay_by, seed_by, down_by].contains(&Who::Libtorrent);
    if with_lt && !have_libtorrent() {
        return;
    }
    // Dropped last: processes first (the case), then the namespaces.
    let net = Net::setup(&iptables).unwrap_or_else(|e| panic!("network setup: {e}"));
    let mut case = Case::new("holepunch", CONFIG);

    let src = case.path("src").join("payload.bin");
    common::write_file(&src, &Rng(55).bytes(8 << 20));
    let tracker_url = "http://44.1.0.1:6969/announce";
    let torrent = btcore_create(&case, &src, Some(tracker_url));
    let seed_dir = src.parent().expect("dir").to_path_buf();

    let mut t = btcore(&["tracker", "--http", "0.0.0.0:6969", "--udp", "0.0.0.0:6969"]);
    t.args(["--interval", "60"]);
    let tr = case.spawn("btcore-tracker", in_ns(net.ns(0), t), true);
    case.wait_output(tr, "tracker: http://");

    // The relay: reachable, downloading at 64 KiB/s: in the time `b` has, it gets
    // a fraction of the 8 MiB, so `b` cannot finish without `a` (and the relay stays
    // a leecher, connected to the seed).
    let relay_dir = case.path("relay");
    let r = match relay_by {
        Who::Btcore => {
            let mut r = peer("download", &torrent);
            r.arg("-o").arg(&relay_dir);
            r.args(["--download-limit", "64", "--timeout", "90"]);
            r
        }
        Who::Libtorrent => {
            let mut r = lt_peer("download", &torrent, &relay_dir, "44.1.0.1");
            r.args(["--download-limit", "65536", "--timeout", "90"]);
            r
        }
    };
    let relay = case.spawn(&format!("{relay_by:?}-relay"), in_ns(net.ns(0), r), true);
    if relay_by == Who::Libtorrent {
        case.wait_output(relay, "state=");
    }

    // Both know the relay by hand too (the tracker may hear of it after them).
    let a = match seed_by {
        Who::Btcore => {
            let mut a = peer("seed", &torrent);
            a.arg(&seed_dir).args(["--peer", "44.1.0.1:6881"]);
            // libtorrent's first PEX message to `a` may name `b` while `b`'s own
            // dial of `a` is still in the NATs' tables, and `a` would reach `b`
            // without a rendezvous: without PEX, `a` hears of `b` only from the relay's
            // `connect`.
            if relay_by == Who::Libtorrent {
                a.arg("--no-pex");
            }
            a
        }
        Who::Libtorrent => {
            let mut a = lt_peer("seed", &torrent, &seed_dir, "0.0.0.0");
            a.args(["--peer", "44.1.0.1:6881", "--timeout", "90"]);
            a
        }
    };
    let seed = case.spawn(&format!("{seed_by:?}-a-seed"), in_ns(net.ns(3), a), true);
    match seed_by {
        Who::Btcore => case.wait_output(seed, "btcore: seeding "),
        Who::Libtorrent => case.wait_output(seed, "peer 44.1.0.1:6881"),
    }
    // The relay's first PEX message to `a` goes out before `b` arrives: `a` does not
    // hear of `b` for a minute.
    std::thread::sleep(Duration::from_secs(3));

    let out = case.path("out-b");
    let b = match down_by {
        Who::Btcore => {
            let mut b = peer("download", &torrent);
            b.arg("-o").arg(&out);
            b.args(["--timeout", "50", "--peer", "44.1.0.1:6881"]);
            b
        }
        Who::Libtorrent => {
            // libtorrent asks for a rendezvous only when its uTP dial fails to a peer
            // that a connected peer's PEX named: from the tracker it would dial `a`
            // (and fail) before the relay's PEX arrives.
            let mut b = lt_peer("download", &torrent, &out, "0.0.0.0");
            b.args([
                "--peer",
                "44.1.0.1:6881",
                "--timeout",
                "50",
                "--no-trackers",
            ]);
            b
        }
    };
    let down = case.spawn(&format!("{down_by:?}-b"), in_ns(net.ns(4), b), false);
    case.wait_success(down);
    case.check_data(&src, &out, Empties::Required);

    // Each role's step, in its own log: btcore's holepunch lines; libtorrent's log of
    // the ut_holepunch messages it sent and received (which of the two crossing uTP
    // dials survives is libtorrent's choice, so its "holepunched" flag is not asked for).
    let mut steps = Vec::new();
    match down_by {
        Who::Btcore => steps.push((
            down,
            "holepunch: asked 44.1.0.1:6881 to introduce us to 44.1.0.2:6881",
        )),
        Who::Libtorrent => {
            steps.push((down, "==> HOLEPUNCH [ msg: rendezvous to: 44.1.0.2 "));
            steps.push((down, "<== HOLEPUNCH [ msg:connect to: 44.1.0.2 ]"));
        }
    }
    match relay_by {
        Who::Btcore => steps.push((
            relay,
            "holepunch: introduced 44.1.0.3:6881 and 44.1.0.2:6881",
        )),
        Who::Libtorrent => {
            steps.push((relay, "==> HOLEPUNCH [ msg: connect to: 44.1.0.2 "));
            steps.push((relay, "==> HOLEPUNCH [ msg: connect to: 44.1.0.3 "));
        }
    }
    match seed_by {
        Who::Btcore => steps.push((
            seed,
            "holepunch: 44.1.0.1:6881 introduced us to 44.1.0.3:6881",
        )),
        Who::Libtorrent => steps.push((seed, "<== HOLEPUNCH [ msg:connect to: 44.1.0.3 ]")),
    }
    for (i, needle) in steps {
        if !case.procs[i].printed(needle) {
            case.fail(&format!("{} never logged {needle:?}", case.procs[i].name));
        }
    }
    println!(
        "b ({down_by:?}) downloaded 8 MiB from a ({seed_by:?}) through a connection \
         punched by the relay ({relay_by:?}) at {:.1} s",
        case.elapsed()
    );
    case.finish();
    drop(net);
}

#[test]
fn two_nated_peers_punch_through_a_relay() {
    punch(Who::Btcore, Who::Btcore, Who::Btcore);
}

#[test]
fn libtorrent_relays_the_punch_between_two_nated_btcore_peers() {
    punch(Who::Libtorrent, Who::Btcore, Who::Btcore);
}

/// libtorrent as the NATed seed. The two uTP dials that cross through the punch are a
/// connection each way between btcore and libtorrent; libtorrent keeps one by peer
/// id and closes the other, at times while btcore's encryption handshake runs on it.
/// btcore took that for a refusal of encryption and redialed in plain text, a third
/// connection that collided again, and at times none survived: now a dial closed
/// beside its twin is not redialed (`Session::has_twin`).
#[test]
fn a_nated_libtorrent_seed_answers_the_punch_of_a_nated_btcore() {
    punch(Who::Btcore, Who::Libtorrent, Who::Btcore);
}

/// libtorrent as the NATed downloader. Its uTP connection to the btcore relay (which
/// downloads under a 64 KiB/s limit) took 4 to 10 s or more to get through the
/// encryption handshake, at times past the relay's 10 s deadline: the relay read the
/// handshake's bytes only when the limit had tokens, and the seed's payload took
/// them all. Handshake bytes no longer wait for tokens.
#[test]
fn a_nated_libtorrent_asks_btcore_to_relay_and_downloads_from_a_nated_btcore() {
    punch(Who::Btcore, Who::Btcore, Who::Libtorrent);
}
