//! Port mapping against real router software: Debian's `miniupnpd` (which serves PCP,
//! NAT-PMP and UPnP IGD) on a router between two private networks, in network
//! namespaces of their own:
//!
//! ```text
//!  inside 10.77.N.2 ── veth ── 10.77.N.1  router  44.1.N.1 ── veth ── 44.1.N.2 outside
//!  btcore seed                 iptables MASQUERADE, miniupnpd         btcore download
//! ```
//!
//! The outside has no route to the inside: it reaches the seeder only through a
//! mapping on the router's external address. miniupnpd grants at most 6 s
//! (`max_lifetime`), so btcore renews every 3 s and the test sees the mapping outlive
//! its first lifetime.
//!
//! 1. btcore seeds inside with port mapping on (the default): it maps its TCP and UDP
//!    port with PCP; the outside downloads from `44.1.N.1:PORT`; the mapping is still
//!    there after its lifetime (renewed); after SIGTERM it is gone from the router's
//!    rules and lease file.
//! 2. With `--no-port-mapping` the seeder listens (the router reaches it) but the
//!    outside cannot download (a bounded wait: its `--timeout`).
//! 3. A DHT on a port of its own (`--dht-port`) is mapped beside the TCP and uTP port
//!    (by a mapper of its own), and deleted with them.
//!
//! And, with a router of its own, UPnP alone (`port_mapping_with_upnp_alone`):
//! miniupnpd with NAT-PMP and PCP off (`enable_natpmp=no` turns both off in this
//! version) and UPnP on, listening (SSDP and HTTP) on its inside interface. btcore
//! finds it by SSDP (the inside's default route carries the multicast search), maps
//! both ports with `AddPortMapping`, the outside downloads through the external
//! address, and after SIGTERM `DeletePortMapping` has removed the rule and the lease.
//!
//! Needs root, `ip netns`, `miniupnpd` (nftables backend), `nft` and `iptables`;
//! without them the test prints "skipped" and passes, unless `BTCORE_INTEROP=1`.
//! Every process is stopped by its PID, the namespaces are deleted at the end.

mod common;

use common::{btcore, btcore_create, compare, Case, Config, Deadline, Empties, Rng};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG: Config = Config {
    dir_prefix: "btcore-portmap",
    deadline: Deadline::Step(Duration::from_secs(30)),
    poll: Duration::from_millis(50),
    log_tail: 6000,
    btcore_exit_hint: true,
};

const PORT: u16 = 6881;
/// The lifetime miniupnpd grants at most (seconds): renewals every 3 s.
const LIFETIME: u64 = 6;

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

/// The three namespaces; deleted when dropped.
struct Net {
    names: [String; 3],
    /// The third octet of the networks (distinct per run).
    n: u32,
}

impl Net {
    fn inside(&self) -> &str {
        &self.names[0]
    }
    fn router(&self) -> &str {
        &self.names[1]
    }
    fn outside(&self) -> &str {
        &self.names[2]
    }
    fn inside_ip(&self) -> String {
        format!("10.77.{}.2", self.n)
    }
    fn external_ip(&self) -> String {
        format!("44.1.{}.1", self.n)
    }

    fn setup(nft: &str, iptables: &str) -> Result<Self, String> {
        let pid = std::process::id();
        let n = pid % 250 + 1;
        let names = ["in", "rt", "out"].map(|s| format!("btpm{pid}-{s}"));
        let net = Self { names, n };
        let (i, r, o) = (net.inside(), net.router(), net.outside());
        for ns in &net.names {
            let _ = run(&["ip", "netns", "del", ns]);
            run(&["ip", "netns", "add", ns])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        let steps: Vec<Vec<String>> = vec![
            format!("ip -n {i} link add lan0 type veth peer name lan1 netns {r}"),
            format!("ip -n {r} link add wan0 type veth peer name wan1 netns {o}"),
            format!("ip -n {i} addr add 10.77.{n}.2/24 dev lan0"),
            format!("ip -n {i} link set lan0 up"),
            format!("ip -n {i} route add default via 10.77.{n}.1"),
            format!("ip -n {r} addr add 10.77.{n}.1/24 dev lan1"),
            format!("ip -n {r} link set lan1 up"),
            format!("ip -n {r} addr add 44.1.{n}.1/24 dev wan0"),
            format!("ip -n {r} link set wan0 up"),
            format!("ip -n {o} addr add 44.1.{n}.2/24 dev wan1"),
            format!("ip -n {o} link set wan1 up"),
            format!("ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1"),
            format!("ip netns exec {r} {iptables} -t nat -A POSTROUTING -o wan0 -j MASQUERADE"),
        ]
        .into_iter()
        .map(|s| s.split(' ').map(String::from).collect())
        .collect();
        for s in steps {
            let args: Vec<&str> = s.iter().map(String::as_str).collect();
            run(&args)?;
        }
        // The chains miniupnpd adds its rules to (its nftables backend's defaults).
        let rules = "table inet filter {\n\
            chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }\n\
            chain miniupnpd { }\n\
            chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }\n\
            chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }\n\
            chain prerouting_miniupnpd { }\n\
            chain postrouting_miniupnpd { }\n\
            }\n";
        let mut c = Command::new("ip");
        c.args(["netns", "exec", r, nft, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| format!("nft: {e}"))?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().ok_or("nft stdin")?;
            stdin
                .write_all(rules.as_bytes())
                .map_err(|e| format!("nft: {e}"))?;
        }
        let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
        if !out.status.success() {
            return Err(format!("nft -f: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(net)
    }

    /// The router's port forwarding rules (nftables' DNAT chain).
    fn forwards(&self, nft: &str) -> String {
        run(&[
            "ip",
            "netns",
            "exec",
            self.router(),
            nft,
            "list",
            "chain",
            "inet",
            "filter",
            "prerouting_miniupnpd",
        ])
        .unwrap_or_else(|e| e)
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

/// SIGTERM to process `i`, which must then exit cleanly (deleting its mappings).
fn stop(case: &mut Case, i: usize) {
    let pid = case.procs[i].child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    case.procs[i].must_live = false;
    case.wait_success(i);
}

/// Tools and privilege, or None (the test is skipped unless `BTCORE_INTEROP=1`).
fn tools() -> Option<(String, String, String)> {
    let tools = (sbin("miniupnpd"), sbin("nft"), sbin("iptables"));
    let root = run(&["id", "-u"]).is_ok_and(|u| u.trim() == "0");
    let netns = root && run(&["ip", "netns", "list"]).is_ok();
    let (Some(miniupnpd), Some(nft), Some(iptables), true) = (tools.0, tools.1, tools.2, netns)
    else {
        assert!(
            std::env::var("BTCORE_INTEROP").as_deref() != Ok("1"),
            "BTCORE_INTEROP=1 but this needs root, `ip netns`, miniupnpd (nftables), nft \
             and iptables (apt-get install miniupnpd-nftables nftables iptables iproute2)"
        );
        println!("skipped: needs root, ip netns, miniupnpd, nft, iptables");
        return None;
    };
    Some((miniupnpd, nft, iptables))
}

/// Starts miniupnpd in the router (NAT-PMP and PCP on or off, UPnP on, listening on
/// the inside interface); returns its lease file.
fn start_miniupnpd(case: &mut Case, net: &Net, miniupnpd: &str, natpmp: bool) -> PathBuf {
    let leases = case.dir.join("upnp.leases");
    let conf = case.dir.join("miniupnpd.conf");
    let natpmp_flag = if natpmp { "yes" } else { "no" };
    fs::write(
        &conf,
        format!(
            "ext_ifname=wan0\nlistening_ip=lan1\nport=0\nenable_natpmp={natpmp_flag}\n\
             enable_upnp=yes\nmin_lifetime=2\nmax_lifetime={LIFETIME}\nlease_file={}\n\
             secure_mode=yes\nsystem_uptime=yes\nuuid=7536a178-8ecd-424a-82fb-9164ebb31c79\n\
             allow 1024-65535 10.77.0.0/16 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
            leases.display()
        ),
    )
    .expect("config");
    let mut mu = Command::new(miniupnpd);
    mu.arg("-f")
        .arg(&conf)
        .arg("-d")
        .arg("-P")
        .arg(case.dir.join("miniupnpd.pid"));
    let mu = case.spawn("miniupnpd", in_ns(net.router(), mu), true);
    if natpmp {
        case.wait_output(mu, "Listening for NAT-PMP/PCP traffic");
    } else {
        case.wait_output(mu, "HTTP listening on port");
    }
    leases
}

/// `btcore seed` of `torrent` from `dir` on [`PORT`], port mapping on or off.
fn seeder(torrent: &Path, dir: &Path, mapping: bool) -> Command {
    let mut c = btcore(&["seed"]);
    c.arg(torrent).arg(dir);
    c.args([
        "--port",
        &PORT.to_string(),
        "--no-trackers",
        "--progress",
        "plain",
    ]);
    if common::btcore_has_dht() {
        c.arg("--no-dht");
    }
    if !mapping {
        c.arg("--no-port-mapping");
    }
    c.env("RUST_LOG", "info,btcore_host::portmap=debug");
    c
}

/// `btcore download` of `torrent` into `dir` from `peer`, from its own `port`.
fn downloader(torrent: &Path, peer: &str, dir: &Path, port: u16, timeout: u64) -> Command {
    let mut c = btcore(&["download"]);
    c.arg(torrent).arg("-o").arg(dir);
    c.args(["--peer", peer, "--no-trackers", "--no-port-mapping"]);
    c.args(["--timeout", &timeout.to_string(), "--progress", "plain"]);
    c.args(["--port", &port.to_string()]);
    c.env("RUST_LOG", "debug");
    if common::btcore_has_dht() {
        c.arg("--no-dht");
    }
    c
}

#[test]
fn port_mapping_through_miniupnpd() {
    let Some((miniupnpd, nft, iptables)) = tools() else {
        return;
    };
    // Dropped last: processes first (the case), then the namespaces.
    let net = Net::setup(&nft, &iptables).unwrap_or_else(|e| panic!("network setup: {e}"));
    let mut case = Case::new("miniupnpd", CONFIG);

    let leases = start_miniupnpd(&mut case, &net, &miniupnpd, true);

    let src = case.path("src").join("payload.bin");
    common::write_file(&src, &Rng(21).bytes(3 << 20));
    let torrent = btcore_create(&case, &src, None);
    let seed_dir = src.parent().expect("dir").to_path_buf();
    let seeder = |mapping: bool| seeder(&torrent, &seed_dir, mapping);
    let peer = format!("{}:{PORT}", net.external_ip());
    // Each download from its own port: the router's connection tracking keeps the
    // translation of a flow (uTP's UDP one for minutes) after its rule is deleted.
    let downloader =
        |dir: &Path, port: u16, timeout: u64| downloader(&torrent, &peer, dir, port, timeout);

    // 1. Mapped: the outside downloads through the router's external address.
    let s = case.spawn("btcore-seed", in_ns(net.inside(), seeder(true)), true);
    let mapped = format!(
        "TCP port {PORT} mapped to {}:{PORT} (PCP, {LIFETIME} s)",
        net.external_ip()
    );
    case.wait_output(s, &mapped);
    let udp_mapped = format!("UDP port {PORT} mapped to {}:{PORT}", net.external_ip());
    case.wait_output(s, &udp_mapped);
    // The router's word on our external address reached the session (and the DHT).
    case.wait_output(s, &format!("external address: {}", net.external_ip()));
    let t_mapped = Instant::now();
    // Its data checked: a peer that comes while the torrent is checking is closed.
    case.wait_output(s, "btcore: seeding ");
    let rule = format!("dnat ip to {}:{PORT}", net.inside_ip());
    let forwards = net.forwards(&nft);
    if !forwards.contains(&rule) {
        case.fail(&format!("no forwarding rule on the router:\n{forwards}"));
    }
    let out = case.path("out1");
    let d = case.spawn(
        "btcore-outside",
        in_ns(net.outside(), downloader(&out, 7000, 30)),
        false,
    );
    case.wait_success(d);
    case.check_data(&src, &out, Empties::Required);
    // Renewed: the mapping outlives the lifetime granted.
    case.wait_output(s, "renewed");
    let past = t_mapped + Duration::from_millis(LIFETIME * 1000 + 1500);
    std::thread::sleep(past.saturating_duration_since(Instant::now()));
    let forwards = net.forwards(&nft);
    if !forwards.contains(&rule) {
        case.fail(&format!(
            "the mapping lapsed after its {LIFETIME} s lifetime (not renewed):\n{forwards}"
        ));
    }
    // Deleted at exit.
    stop(&mut case, s);
    if !case.procs[s].printed("TCP mapping deleted")
        || !case.procs[s].printed("UDP mapping deleted")
    {
        case.fail("btcore did not report both deletions");
    }
    let forwards = net.forwards(&nft);
    if forwards.contains(&rule) {
        case.fail(&format!("the mapping outlived btcore:\n{forwards}"));
    }
    let lease = fs::read_to_string(&leases).unwrap_or_default();
    if lease.contains(&format!(":{PORT}:")) {
        case.fail(&format!("the lease outlived btcore: {lease}"));
    }
    println!(
        "mapped, downloaded, renewed and deleted at {:.1} s",
        case.elapsed()
    );

    // 2. Not mapped: the seeder listens, the router reaches it, the outside cannot.
    let s2 = case.spawn(
        "btcore-seed-unmapped",
        in_ns(net.inside(), seeder(false)),
        true,
    );
    let probe = format!(
        "import socket,time\nfor _ in range(100):\n  try:\n    socket.create_connection(('{}',{PORT}),1).close(); break\n  except OSError: time.sleep(0.1)\nelse: raise SystemExit(1)",
        net.inside_ip()
    );
    let reach = run(&[
        "ip",
        "netns",
        "exec",
        net.router(),
        common::PYTHON,
        "-c",
        &probe,
    ]);
    if let Err(e) = reach {
        case.fail(&format!("the router cannot reach the unmapped seeder: {e}"));
    }
    case.wait_output(s2, "btcore: seeding ");
    let out2 = case.path("out2");
    let d2 = case.spawn(
        "btcore-outside-unmapped",
        in_ns(net.outside(), downloader(&out2, 7001, 4)),
        false,
    );
    case.wait_until("the unmapped download to give up", |c| {
        c.procs[d2].poll().is_some()
    });
    let status = case.procs[d2].status.expect("exited");
    if status.success() || compare(&src, &out2, Empties::Required).is_ok() {
        case.fail("the outside downloaded from a seeder with no mapping");
    }
    if case.procs[s2].printed("port mapping") {
        case.fail("--no-port-mapping still mapped");
    }
    let forwards = net.forwards(&nft);
    if forwards.contains(&rule) {
        case.fail(&format!(
            "a forwarding rule without port mapping:\n{forwards}"
        ));
    }
    stop(&mut case, s2);

    // 3. A DHT on a port of its own is mapped beside the TCP and uTP port, and
    //    deleted with them.
    if common::btcore_has_dht() {
        let dht_port = PORT + 1;
        let mut c = btcore(&["seed"]);
        c.arg(&torrent).arg(&seed_dir);
        c.args([
            "--port",
            &PORT.to_string(),
            "--no-trackers",
            "--progress",
            "plain",
        ]);
        c.args([
            "--dht-port",
            &dht_port.to_string(),
            "--bootstrap",
            "127.0.0.1:9",
        ]);
        c.env("RUST_LOG", "info,btcore_host::portmap=debug");
        let s3 = case.spawn("btcore-seed-dht", in_ns(net.inside(), c), true);
        let ext = net.external_ip();
        case.wait_output(s3, &format!("TCP port {PORT} mapped to {ext}:{PORT}"));
        case.wait_output(s3, &format!("UDP port {PORT} mapped to {ext}:{PORT}"));
        case.wait_output(
            s3,
            &format!("(DHT port): UDP port {dht_port} mapped to {ext}:{dht_port}"),
        );
        let dht_rule = format!("dnat ip to {}:{dht_port}", net.inside_ip());
        let forwards = net.forwards(&nft);
        if !forwards.contains(&dht_rule) {
            case.fail(&format!(
                "no forwarding rule for the DHT's port:\n{forwards}"
            ));
        }
        stop(&mut case, s3);
        let forwards = net.forwards(&nft);
        if forwards.contains(&dht_rule) || forwards.contains(&rule) {
            case.fail(&format!("a mapping outlived btcore:\n{forwards}"));
        }
        println!(
            "the DHT's own port mapped and deleted at {:.1} s",
            case.elapsed()
        );
    }
    case.finish();
    drop(net);
}

#[test]
fn port_mapping_with_upnp_alone() {
    let Some((miniupnpd, nft, iptables)) = tools() else {
        return;
    };
    let net = Net::setup(&nft, &iptables).unwrap_or_else(|e| panic!("network setup: {e}"));
    let mut case = Case::new("miniupnpd-upnp", CONFIG);
    let leases = start_miniupnpd(&mut case, &net, &miniupnpd, false);

    let src = case.path("src").join("payload.bin");
    common::write_file(&src, &Rng(22).bytes(1 << 20));
    let torrent = btcore_create(&case, &src, None);
    let seed_dir = src.parent().expect("dir").to_path_buf();
    let peer = format!("{}:{PORT}", net.external_ip());

    let s = case.spawn(
        "btcore-seed",
        in_ns(net.inside(), seeder(&torrent, &seed_dir, true)),
        true,
    );
    let ext = net.external_ip();
    case.wait_output(
        s,
        &format!("TCP port {PORT} mapped to {ext}:{PORT} (UPnP, "),
    );
    case.wait_output(
        s,
        &format!("UDP port {PORT} mapped to {ext}:{PORT} (UPnP, "),
    );
    case.wait_output(s, &format!("external address: {ext}"));
    if !case.procs[s].printed("port mapping: UPnP gateway found at ") {
        case.fail("no line says where the UPnP gateway was found");
    }
    // miniupnpd would grant its max_lifetime to either.
    let pcp = format!("(PCP, {LIFETIME} s)");
    let natpmp = format!("(NAT-PMP, {LIFETIME} s)");
    if case.procs[s].printed(&pcp) || case.procs[s].printed(&natpmp) {
        case.fail("PCP or NAT-PMP mapped on a router that speaks neither");
    }
    case.wait_output(s, "btcore: seeding ");
    let rule = format!("dnat ip to {}:{PORT}", net.inside_ip());
    let forwards = net.forwards(&nft);
    if !forwards.contains(&rule) {
        case.fail(&format!("no forwarding rule on the router:\n{forwards}"));
    }
    let lease = fs::read_to_string(&leases).unwrap_or_default();
    if !lease.contains(&format!("TCP:{PORT}:{}:{PORT}:", net.inside_ip()))
        || !lease.contains("btcore")
    {
        case.fail(&format!(
            "no UPnP lease for btcore on the router: {lease:?}"
        ));
    }
    let out = case.path("out");
    let d = case.spawn(
        "btcore-outside",
        in_ns(net.outside(), downloader(&torrent, &peer, &out, 7002, 20)),
        false,
    );
    case.wait_success(d);
    case.check_data(&src, &out, Empties::Required);

    // Deleted at exit, with DeletePortMapping.
    stop(&mut case, s);
    if !case.procs[s].printed("TCP mapping deleted (UPnP)")
        || !case.procs[s].printed("UDP mapping deleted (UPnP)")
    {
        case.fail("btcore did not report both UPnP deletions");
    }
    let forwards = net.forwards(&nft);
    if forwards.contains(&rule) {
        case.fail(&format!("the mapping outlived btcore:\n{forwards}"));
    }
    let lease = fs::read_to_string(&leases).unwrap_or_default();
    if lease.contains(&format!(":{PORT}:")) {
        case.fail(&format!("the lease outlived btcore: {lease}"));
    }
    println!(
        "mapped with UPnP, downloaded and deleted at {:.1} s",
        case.elapsed()
    );
    case.finish();
    drop(net);
}
