//! BEP 55 hole punching in the deterministic simulation: two peers behind NATs that
//! filter what comes in (no TCP dial reaches them, a datagram only from an address
//! they sent one to lately) and a relay both reach. They learn of each other through
//! the relay's PEX, cannot dial each other, rendezvous through the relay, and connect
//! over uTP through the holes their own SYNs opened.

use btcore_core::session::{HolepunchEvent, PeerSource, SessionConfig, TransportPolicy};
use btcore_core::time::Duration;
use btcore_tests::sim::{content, Behaviour, LinkSpec, Sim};

const PIECE: u32 = 32_768;

/// Relay (reachable, a seed with a slow uplink), `a` and `b` (empty, each behind
/// its NAT); `a` and `b` know only the relay. Runs until both finished or 60 s
/// passed. Without each other they need twice the relay's upload (66 s at least).
fn swarm(holepunch: bool, seed: u64) -> (Sim, [usize; 3]) {
    let mut sim = Sim::new(content(32 * PIECE as usize, 3), PIECE, seed);
    sim.tracker = false;
    let cfg = move |c: &mut SessionConfig| {
        c.transport = TransportPolicy::Both;
        c.holepunch = holepunch;
    };
    // 32 KB/s: the 1 MiB take the relay 33 s to upload once, 66 s twice.
    let slow = LinkSpec {
        up_bps: 32_000,
        ..LinkSpec::default()
    };
    let r = sim.add_node(true, Behaviour::Honest, slow, cfg);
    let a = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), cfg);
    let b = sim.add_node(false, Behaviour::Honest, LinkSpec::default(), cfg);
    sim.nodes[a].nat = true;
    sim.nodes[b].nat = true;
    let relay = sim.nodes[r].addr;
    // `a` first; `b` once the relay's first PEX message to `a` went out without it
    // (the next one is a minute later): `a` never dials `b` on its own, only `b`
    // knows of `a`.
    for (i, wait) in [(a, 5), (b, 0)] {
        let t = sim.nodes[i].torrent.expect("torrent");
        let now = sim.now;
        sim.nodes[i]
            .session
            .handle_peers(now, t, &[relay], PeerSource::User);
        sim.run_for(Duration::from_secs(wait));
    }
    sim.run_until(Duration::from_secs(60), |s| {
        s.nodes[a].finished_at.is_some() && s.nodes[b].finished_at.is_some()
    });
    (sim, [r, a, b])
}

#[test]
fn two_nated_peers_meet_through_a_relay() {
    let (sim, [r, a, b]) = swarm(true, 55);
    let (ra, aa, ba) = (sim.nodes[r].addr, sim.nodes[a].addr, sim.nodes[b].addr);
    let hp = |i: usize| -> Vec<HolepunchEvent> {
        sim.nodes[i].holepunch.iter().map(|(_, e)| *e).collect()
    };
    // `b` dialed `a` (named by the relay's PEX), failed, and asked the relay.
    assert!(
        hp(b).contains(&HolepunchEvent::Rendezvous {
            relay: ra,
            target: aa
        }),
        "b: {:?}",
        hp(b)
    );
    assert!(
        hp(r).contains(&HolepunchEvent::Relayed { from: ba, to: aa }),
        "relay: {:?}",
        hp(r)
    );
    assert!(
        hp(a).contains(&HolepunchEvent::Connect {
            relay: ra,
            target: ba
        }),
        "a: {:?}",
        hp(a)
    );
    assert!(sim.udp.nat_drops > 0, "the NATs dropped nothing: no test");
    assert!(
        sim.nodes[b].connected.iter().any(|(_, p)| *p == aa),
        "b never connected to a"
    );
    let got = |i: usize, from: std::net::SocketAddr| {
        sim.nodes[i].received_from.get(&from).copied().unwrap_or(0)
    };
    let (b_from_a, a_from_b) = (got(b, aa), got(a, ba));
    assert!(
        b_from_a > 0 && a_from_b > 0,
        "the punched connection carried {b_from_a} bytes to b, {a_from_b} to a"
    );
    let done_a = sim.nodes[a].finished_at.expect("a finished");
    let done_b = sim.nodes[b].finished_at.expect("b finished");
    assert!(sim.has_correct_data(a) && sim.has_correct_data(b));
    // Faster than the relay alone could serve both.
    assert!(done_a.max(done_b).as_millis() < 60_000);
    println!(
        "finished at {:.1} s and {:.1} s; through the punched connection {b_from_a} bytes to b, {a_from_b} to a; {} datagrams dropped by the NATs",
        done_a.as_millis() as f64 / 1000.0,
        done_b.as_millis() as f64 / 1000.0,
        sim.udp.nat_drops
    );
    for (i, n) in sim.nodes.iter().enumerate() {
        assert!(n.violations.is_empty(), "node {i}: {:?}", n.violations);
    }
}

/// The control: without hole punching the two never meet, and `b` gets only what the
/// slow relay passes on.
#[test]
fn without_holepunch_the_nated_peers_never_meet() {
    let (sim, [_, a, b]) = swarm(false, 55);
    let aa = sim.nodes[a].addr;
    assert!(!sim.nodes[b].connected.iter().any(|(_, p)| *p == aa));
    assert!(sim.nodes[a].finished_at.is_none() || sim.nodes[b].finished_at.is_none());
    assert!(sim.nodes.iter().all(|n| n.holepunch.is_empty()));
}

/// Scripted peers against one session: the relay's answers and caps, which `connect`
/// requests it honours, and the rendezvous it sends after a failed dial.
mod scripted {
    use btcore_core::holepunch::{ErrorCode, HolepunchMsg};
    use btcore_core::session::{ConnId, PeerSource, SessionConfig, Transport, TransportPolicy};
    use btcore_core::time::Duration;
    use btcore_tests::scripted::{frames, info_hash_of, peer_id, zero_torrent, Host};
    use std::net::SocketAddr;

    /// Our id for `ut_holepunch` in the scripted peers' handshakes.
    const THEIR: u8 = 7;
    /// btcore's.
    const OURS: u8 = 3;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    fn host() -> Host {
        let mut c = SessionConfig::new(peer_id(999));
        c.transport = TransportPolicy::Both;
        let mut h = Host::new(c, 3);
        let (file, content) = zero_torrent(8, 16_384);
        h.add_torrent(&file, &content, 16_384, false);
        h
    }

    /// A peer from `addr` over uTP that completes both handshakes; `holepunch`:
    /// whether it offers BEP 55.
    fn peer(h: &mut Host, addr: &str, n: u64, holepunch: bool) -> ConnId {
        let (file, _) = zero_torrent(8, 16_384);
        let c = h.incoming_over(sa(addr), Transport::Utp);
        let mut bytes = frames::handshake(info_hash_of(&file), peer_id(n));
        if holepunch {
            bytes.extend(frames::holepunch_ext_handshake(THEIR, sa(addr).port()));
        } else {
            bytes.extend(frames::ext_handshake(2));
        }
        h.recv(c, &bytes);
        let _ = h.read_from(c, 1 << 20);
        c
    }

    /// The `ut_holepunch` messages the session sent to `c` since the last read.
    fn heard(h: &mut Host, c: ConnId) -> Vec<HolepunchMsg> {
        let bytes = h.read_from(c, 1 << 20);
        frames::extended(&bytes)
            .into_iter()
            .filter(|(id, _)| *id == THEIR)
            .map(|(_, p)| HolepunchMsg::parse(&p).expect("a valid message"))
            .collect()
    }

    #[test]
    fn the_relay_introduces_answers_errors_and_caps_rendezvous() {
        let mut h = host();
        let (a, b, x) = (
            "198.51.100.1:6881",
            "198.51.100.2:7000",
            "198.51.100.3:6881",
        );
        let pa = peer(&mut h, a, 1, true);
        let pb = peer(&mut h, b, 2, true);
        let px = peer(&mut h, x, 3, false);
        h.recv(
            pa,
            &frames::holepunch(OURS, HolepunchMsg::Rendezvous(sa(b))),
        );
        assert_eq!(heard(&mut h, pa), [HolepunchMsg::Connect(sa(b))]);
        assert_eq!(heard(&mut h, pb), [HolepunchMsg::Connect(sa(a))]);
        let err = |t: &str, code| HolepunchMsg::Error { addr: sa(t), code };
        h.recv(
            pa,
            &frames::holepunch(OURS, HolepunchMsg::Rendezvous(sa(x))),
        );
        assert_eq!(heard(&mut h, pa), [err(x, ErrorCode::NoSupport)]);
        let nobody = "203.0.113.9:6881";
        h.recv(
            pa,
            &frames::holepunch(OURS, HolepunchMsg::Rendezvous(sa(nobody))),
        );
        assert_eq!(heard(&mut h, pa), [err(nobody, ErrorCode::NotConnected)]);
        // A peer that did not offer the extension is ignored (BEP 55).
        h.recv(
            px,
            &frames::holepunch(OURS, HolepunchMsg::Rendezvous(sa(a))),
        );
        assert!(heard(&mut h, pa).is_empty());
        assert!(frames::extended(&h.read_from(px, 1 << 20)).is_empty());
        // A flood: 3 taken so far, 10 a minute from one peer; the rest is dropped
        // unanswered, and `b` hears of at most 10 introductions a minute.
        for _ in 0..50 {
            h.recv(
                pa,
                &frames::holepunch(OURS, HolepunchMsg::Rendezvous(sa(b))),
            );
        }
        assert_eq!(heard(&mut h, pa).len(), 7);
        assert_eq!(heard(&mut h, pb).len(), 7);
        h.advance(Duration::from_secs(61));
        h.recv(
            pa,
            &frames::holepunch(OURS, HolepunchMsg::Rendezvous(sa(b))),
        );
        assert_eq!(heard(&mut h, pb), [HolepunchMsg::Connect(sa(a))]);
        // Malformed messages are ignored, the connection stays.
        h.recv(
            pa,
            &frames::holepunch(OURS, HolepunchMsg::Connect(sa(b)))[..8],
        );
        h.recv(
            pa,
            &[0, 0, 0, 4, 20, OURS, 9, 9], // msg_type 9
        );
        assert!(h.is_open(pa));
    }

    #[test]
    fn connect_requests_are_dialed_over_utp_within_bounds() {
        let mut h = host();
        h.hold_dials = true;
        let r = "198.51.100.1:6881";
        let pr = peer(&mut h, r, 1, true);
        let before = h.dialed.len();
        let connect = |h: &mut Host, t: &str| {
            h.recv(pr, &frames::holepunch(OURS, HolepunchMsg::Connect(sa(t))));
        };
        // Refused: a system port, this machine (the relay is not on it), the relay
        // itself, multicast, unspecified.
        for t in [
            "203.0.113.5:80",
            "127.0.0.1:40000",
            r,
            "224.0.0.1:40000",
            "0.0.0.0:40000",
        ] {
            connect(&mut h, t);
        }
        assert_eq!(h.dialed.len(), before, "{:?}", &h.dialed[before..]);
        connect(&mut h, "203.0.113.5:40000");
        assert_eq!(h.dialed[before..], [sa("203.0.113.5:40000")]);
        assert_eq!(h.dialed_over.last(), Some(&Transport::Utp));
        // Again for the same address while that dial is pending: ignored.
        connect(&mut h, "203.0.113.5:40000");
        assert_eq!(h.dialed.len(), before + 1);
        // At most 5 a minute from one relay.
        for i in 0..20 {
            connect(&mut h, &format!("203.0.113.{}:40000", 10 + i));
        }
        assert_eq!(h.dialed.len(), before + 5);
        // A punched dial that fails is not made again over TCP.
        let pending = std::mem::take(&mut h.pending_dials);
        for c in pending {
            h.session.handle_connect_failed(h.now, c);
            h.drain();
        }
        assert_eq!(h.dialed.len(), before + 5);
    }

    #[test]
    fn a_failed_dial_to_a_peer_from_pex_asks_the_peer_that_named_it() {
        let mut h = host();
        let r = "198.51.100.1:6881";
        let pr = peer(&mut h, r, 1, true);
        let target = sa("203.0.113.7:51413");
        h.recv(pr, &frames::pex(1, &[target]));
        // Dialed over uTP (failed at once by the host), then TCP (failed too).
        h.advance(Duration::from_secs(2));
        assert!(h.dialed.contains(&target), "{:?}", h.dialed);
        assert_eq!(heard(&mut h, pr), [HolepunchMsg::Rendezvous(target)]);
        // Once per address per five minutes, however often the dial fails.
        h.advance(Duration::from_secs(120));
        assert!(heard(&mut h, pr).is_empty());
        // A peer named with BEP 11 flags that say it has no `ut_holepunch`: no use
        // asking (the relay could only answer NoSupport).
        let t3 = sa("203.0.113.9:51413");
        let mut payload = Vec::new();
        btcore_core::pex::write_pex_with_flags(
            &mut payload,
            &[t3],
            &[btcore_core::pex::FLAG_UTP],
            &[],
        )
        .expect("vec");
        let msg = frames::message(&btcore_core::wire::Message::Extended {
            id: 1,
            payload: &payload,
        });
        h.recv(pr, &msg);
        h.advance(Duration::from_secs(2));
        assert!(h.dialed.contains(&t3));
        assert!(heard(&mut h, pr).is_empty());
        // A peer learned from a tracker has nobody to ask.
        let t2 = sa("203.0.113.8:51413");
        let tid = h.session.torrents().next().expect("torrent");
        let now = h.now;
        h.session.handle_peers(
            now,
            tid,
            &[t2],
            PeerSource::Tracker(sa("192.0.2.1:80").ip()),
        );
        h.advance(Duration::from_secs(2));
        assert!(h.dialed.contains(&t2));
        assert!(heard(&mut h, pr).is_empty());
        // Until a peer that can relay names it: then it is asked at once.
        h.recv(pr, &frames::pex(1, &[t2]));
        assert_eq!(heard(&mut h, pr), [HolepunchMsg::Rendezvous(t2)]);
    }
}

/// Simultaneous open on the uTP sockets, as a punch makes it: both sides dial each
/// other, the first SYN of one is dropped by the other's NAT. Each socket accepts the
/// other's SYN beside its own dial (either connection may win; the session keeps one
/// by its duplicate rule), and data flows both ways on both.
#[test]
fn utp_sockets_accept_a_syn_while_dialing_the_same_peer() {
    use btcore_core::time::Instant;
    use btcore_core::utp::{Incoming, State, UtpConfig, UtpSocket};
    let (aa, ba): (std::net::SocketAddr, std::net::SocketAddr) = (
        "192.0.2.1:6881".parse().expect("addr"),
        "192.0.2.2:6881".parse().expect("addr"),
    );
    let cfg = UtpConfig::default();
    let (mut a, mut b) = (UtpSocket::new(cfg, 1), UtpSocket::new(cfg, 2));
    let mut now = Instant::from_millis(1000);
    let da = a.connect(now, ba).expect("dial");
    let db = b.connect(now, aa).expect("dial");
    let mut buf = vec![0u8; 2048];
    let mut first_from_a = true;
    let (mut acc_a, mut acc_b) = (None, None);
    for _ in 0..50 {
        while let Some((to, n)) = a.poll_transmit(now, &mut buf) {
            assert_eq!(to, ba);
            if std::mem::take(&mut first_from_a) {
                continue; // b's NAT had no mapping yet
            }
            if let Incoming::Accepted { handle, .. } = b.handle_datagram(now, aa, &buf[..n]) {
                acc_b = Some(handle);
            }
        }
        while let Some((to, n)) = b.poll_transmit(now, &mut buf) {
            assert_eq!(to, aa);
            if let Incoming::Accepted { handle, .. } = a.handle_datagram(now, ba, &buf[..n]) {
                acc_a = Some(handle);
            }
        }
        for (s, d, acc) in [(&mut a, da, acc_a), (&mut b, db, acc_b)] {
            if let Some(c) = s.conn_mut(d) {
                if c.state() == State::Connected && c.writable() > 0 {
                    c.write(b"dialed");
                }
            }
            if let Some(c) = acc.and_then(|h| s.conn_mut(h)) {
                if c.state() == State::Connected && c.writable() > 0 {
                    c.write(b"accepted");
                }
            }
        }
        now = now + btcore_core::time::Duration::from_millis(100);
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    let (acc_a, acc_b) = (
        acc_a.expect("a accepted b's SYN"),
        acc_b.expect("b accepted"),
    );
    let read = |s: &mut UtpSocket<std::net::SocketAddr>, h| {
        let c = s.conn_mut(h).expect("alive");
        assert_eq!(c.state(), State::Connected);
        let mut out = vec![0u8; 64];
        let n = c.read(&mut out);
        out.truncate(n);
        String::from_utf8(out).expect("text")
    };
    // What one side wrote on its dial arrives on the other's accepted connection.
    assert!(read(&mut a, da).starts_with("accepted"));
    assert!(read(&mut b, acc_b).starts_with("dialed"));
    assert!(read(&mut b, db).starts_with("accepted"));
    assert!(read(&mut a, acc_a).starts_with("dialed"));
    assert_eq!((a.len(), b.len()), (2, 2));
}
