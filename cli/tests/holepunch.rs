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
    deadline: Deadline::Case(Duration::from_secs(30)),
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
    c.env("RUST_LOG", "info,btcore_host=debug");
    c
}

#[test]
fn two_nated_peers_punch_through_a_relay() {
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

    // The relay: reachable, downloading at 64 KiB/s: in the 25 s `b` has, it gets
    // 1.6 MiB at most of the 8 MiB, so `b` cannot finish without `a` (and the relay
    // stays a leecher, connected to the seed).
    let mut r = peer("download", &torrent);
    r.arg("-o").arg(case.path("relay"));
    r.args(["--download-limit", "64", "--timeout", "60"]);
    let relay = case.spawn("btcore-relay", in_ns(net.ns(0), r), true);

    // Both know the relay by hand too (the tracker may hear of it after them).
    let mut a = peer("seed", &torrent);
    a.arg(&seed_dir).args(["--peer", "44.1.0.1:6881"]);
    let seed = case.spawn("btcore-a-seed", in_ns(net.ns(3), a), true);
    case.wait_output(seed, "btcore: seeding ");
    // The relay's first PEX message to `a` (2 s after their handshake) goes out
    // before `b` arrives: `a` does not hear of `b` for a minute.
    std::thread::sleep(Duration::from_secs(3));

    let out = case.path("out-b");
    let mut b = peer("download", &torrent);
    b.arg("-o").arg(&out);
    b.args(["--timeout", "25", "--peer", "44.1.0.1:6881"]);
    let down = case.spawn("btcore-b", in_ns(net.ns(4), b), false);
    case.wait_success(down);
    case.check_data(&src, &out, Empties::Required);

    let steps = [
        (
            down,
            "holepunch: asked 44.1.0.1:6881 to introduce us to 44.1.0.2:6881",
        ),
        (
            relay,
            "holepunch: introduced 44.1.0.3:6881 and 44.1.0.2:6881",
        ),
        (
            seed,
            "holepunch: 44.1.0.1:6881 introduced us to 44.1.0.3:6881",
        ),
    ];
    for (i, needle) in steps {
        if !case.procs[i].printed(needle) {
            case.fail(&format!("{} never logged {needle:?}", case.procs[i].name));
        }
    }
    println!(
        "b downloaded 8 MiB through the punched connection at {:.1} s",
        case.elapsed()
    );
    case.finish();
    drop(net);
}
