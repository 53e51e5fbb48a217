//! BEP 55 hole punching in the session: every decision about `ut_holepunch`
//! messages (the codec is `crate::holepunch`).
//!
//! - **Relay.** A `rendezvous` from a peer that offered `ut_holepunch` names a peer
//!   of the same torrent; when we hold an established connection to it and it offered
//!   the extension too, each gets a `connect` with the other's address (a uTP
//!   connection's own address, which is the NAT's mapping of the peer's UDP port;
//!   otherwise its listen address). Otherwise an `error` (`NoSuchPeer`,
//!   `NotConnected`, `NoSupport`, `NoSelf`). Rendezvous are taken at most
//!   [`SessionConfig::holepunch_relays_per_peer`] a minute from one connection and
//!   [`SessionConfig::holepunch_relays_per_minute`] over all; past either the
//!   message is dropped without an answer, so a hostile peer cannot make us send
//!   others more than that.
//! - **Initiator.** When a dial of ours to an address that PEX named fails (a uTP
//!   dial unanswered or refused, or the last transport), or PEX names an address
//!   whose dial failed before, and the connection whose PEX
//!   named it is established and offered `ut_holepunch`, it gets a `rendezvous` for
//!   the address, at most once per address per [`SessionConfig::holepunch_retry`];
//!   not when that message's BEP 11 flags say the address has no `ut_holepunch`.
//!   Our own PEX messages carry those flags (uTP, `ut_holepunch`, reachable, seed).
//! - **Target.** A `connect` from a relay starts a uTP dial to the address it names,
//!   an outgoing connection of the relay's torrent, never falling back to TCP. Only
//!   for a running torrent with room for a connection, never to a port below 1024,
//!   to an unspecified, multicast or broadcast address, to an address of this
//!   machine unless the relay is on it too, to a banned address, to the relay
//!   itself, to our own listen address as peers see it, or to a peer we are connected
//!   to; at most [`SessionConfig::holepunch_connects_per_peer`] a minute per relay and
//!   [`SessionConfig::holepunch_connects_per_minute`] over all. Refused ones are
//!   ignored silently (BEP 55: no error goes back).
//!
//! Only for public torrents, and only when the session dials uTP
//! ([`TransportPolicy`] other than TCP only): without uTP there is nothing to punch.

use alloc::collections::BTreeMap;
use core::net::{IpAddr, SocketAddr};

use super::{Action, Conn, ConnId, Event, Session, TorrentState, TransportPolicy};
use crate::holepunch::{ErrorCode, HolepunchMsg, MAX_MESSAGE_LEN};
use crate::netaddr;
use crate::peer::PeerConn;
use crate::session::Transport;
use crate::time::{Duration, Instant};

/// Our local id for `ut_holepunch` messages.
pub(crate) const OUR_UT_HOLEPUNCH: u8 = 3;
/// The window of the rate caps.
const MINUTE: Duration = Duration::from_secs(60);
/// Addresses remembered as asked for ([`SessionConfig::holepunch_retry`]); past it
/// no new rendezvous goes out until old ones expire.
const MAX_ASKED: usize = 1024;
/// The lowest port a relay may make us dial (below it: system services).
pub(crate) const MIN_PORT: u16 = 1024;

/// A count over a one-minute window.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Window {
    start: Option<Instant>,
    count: u32,
}

impl Window {
    /// Counts one if fewer than `cap` were counted in the current minute.
    fn take(&mut self, now: Instant, cap: u32) -> bool {
        if self.start.is_none_or(|s| now.since(s) >= MINUTE) {
            self.start = Some(now);
            self.count = 0;
        }
        if self.count >= cap {
            return false;
        }
        self.count += 1;
        true
    }

    /// Whether one more would fit now (without counting it).
    fn has_room(&self, now: Instant, cap: u32) -> bool {
        self.start.is_none_or(|s| now.since(s) >= MINUTE) || self.count < cap
    }
}

/// Per-connection hole punching state.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ConnHolepunch {
    /// The peer's id for `ut_holepunch`, from its extension handshake.
    pub(crate) their_id: Option<u8>,
    /// The address the peer says it sees us at (`yourip`).
    pub(crate) our_ip: Option<IpAddr>,
    /// A dial a relay asked for: uTP only, no fallback, no rendezvous of its own.
    pub(crate) punched: bool,
    /// Rendezvous taken from this peer in the current minute.
    relayed: Window,
    /// `connect` messages honoured from this peer in the current minute.
    connects: Window,
}

/// Session-wide hole punching state.
#[derive(Debug, Default)]
pub(crate) struct HolepunchState {
    /// Rendezvous relayed in the current minute, over all peers.
    relayed: Window,
    /// `connect` messages honoured in the current minute, over all relays.
    connects: Window,
    /// Addresses we sent a rendezvous for, and when.
    asked: BTreeMap<SocketAddr, Instant>,
}

/// A step of hole punching, for the application's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HolepunchEvent {
    /// A dial to `target` failed: we asked `relay` to introduce us.
    Rendezvous {
        /// The peer asked.
        relay: SocketAddr,
        /// The peer we could not dial.
        target: SocketAddr,
    },
    /// We introduced `from` (who asked) and `to` to each other.
    Relayed {
        /// The initiator.
        from: SocketAddr,
        /// The peer it wants.
        to: SocketAddr,
    },
    /// `relay` introduced us to `target`: we dial it over uTP.
    Connect {
        /// The relay.
        relay: SocketAddr,
        /// Dialed.
        target: SocketAddr,
    },
    /// `relay` could not introduce us to `target`.
    Failed {
        /// The relay.
        relay: SocketAddr,
        /// The peer we asked for.
        target: SocketAddr,
        /// Its reason.
        code: ErrorCode,
    },
}

impl core::fmt::Display for HolepunchEvent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Rendezvous { relay, target } => {
                write!(f, "asked {relay} to introduce us to {target}")
            }
            Self::Relayed { from, to } => write!(f, "introduced {from} and {to}"),
            Self::Connect { relay, target } => {
                write!(f, "{relay} introduced us to {target}: dialing it over uTP")
            }
            Self::Failed {
                relay,
                target,
                code,
            } => write!(f, "{relay} could not introduce us to {target}: {code}"),
        }
    }
}

impl Session {
    /// Whether `ut_holepunch` is offered for a torrent (`private`: its flag).
    pub(crate) fn holepunch_offered(&self, private: bool) -> bool {
        self.config.holepunch && !private && self.config.transport != TransportPolicy::TcpOnly
    }
}

/// The address to give others for `c`: a uTP connection's own (the NAT's mapping of
/// the peer's UDP port, the one a punch goes through), else where it listens.
fn punch_addr(c: &Conn) -> SocketAddr {
    if c.transport == Transport::Utp {
        c.addr
    } else {
        c.dialable().unwrap_or(c.addr)
    }
}

/// Whether `c` is the peer at `a` (its address, or where it listens).
fn is_at(c: &Conn, a: SocketAddr) -> bool {
    c.addr == a || c.dialable() == Some(a)
}

fn send(s: &mut Session, conn: ConnId, msg: HolepunchMsg) {
    let Some(c) = s.conns.get_mut(&conn) else {
        return;
    };
    let Some(id) = c.holepunch.their_id else {
        return;
    };
    let mut buf = [0u8; MAX_MESSAGE_LEN];
    if let Ok(n) = msg.write(&mut buf) {
        c.peer.send_extended(id, &buf[..n]);
        s.flag_send(conn);
    }
}

/// A `ut_holepunch` message from `conn`. Malformed ones are ignored (BEP 55 asks
/// nothing else, and a peer that sends junk gains nothing by it).
pub(crate) fn on_message(s: &mut Session, now: Instant, conn: ConnId, payload: &[u8]) {
    let Some(c) = s.conns.get(&conn) else {
        return;
    };
    let Some(tid) = c.torrent else { return };
    let Some(t) = s.torrents.get(&tid) else {
        return;
    };
    // BEP 55: a peer that did not offer the extension is ignored, and so is anyone
    // when we did not offer it.
    if !s.holepunch_offered(t.private) || c.holepunch.their_id.is_none() {
        return;
    }
    if !c.peer.is_established() {
        return;
    }
    let Ok(msg) = HolepunchMsg::parse(payload) else {
        return;
    };
    match msg {
        HolepunchMsg::Rendezvous(target) => relay(s, now, conn, tid, target),
        HolepunchMsg::Connect(target) => connect(s, now, conn, tid, target),
        HolepunchMsg::Error { addr, code } => {
            let relay = c.addr;
            s.push_event(Event::Holepunch(
                tid,
                HolepunchEvent::Failed {
                    relay,
                    target: addr,
                    code,
                },
            ));
        }
    }
}

/// Whether `a` is one of our own listen addresses: our external address (the
/// router's word or peers' vote), or what a connected peer told us (`yourip`).
fn is_ours(s: &Session, a: SocketAddr) -> bool {
    a.port() == s.config.listen_port
        && (s.external_address(a.is_ipv6()) == Some(a.ip())
            || s.conns.values().any(|c| c.holepunch.our_ip == Some(a.ip())))
}

fn relay(s: &mut Session, now: Instant, from: ConnId, tid: super::TorrentId, target: SocketAddr) {
    let (per_peer, total) = (
        s.config.holepunch_relays_per_peer,
        s.config.holepunch_relays_per_minute,
    );
    let Some(c) = s.conns.get(&from) else { return };
    if !c.holepunch.relayed.has_room(now, per_peer) || !s.holepunch.relayed.has_room(now, total) {
        return;
    }
    let from_addr = punch_addr(c);
    if let Some(c) = s.conns.get_mut(&from) {
        c.holepunch.relayed.take(now, per_peer);
    }
    s.holepunch.relayed.take(now, total);
    let err = |code| HolepunchMsg::Error { addr: target, code };
    if target.port() == 0 || target.ip().is_unspecified() {
        return send(s, from, err(ErrorCode::NoSuchPeer));
    }
    if is_ours(s, target) {
        return send(s, from, err(ErrorCode::NoSelf));
    }
    let found = s
        .conns
        .iter()
        .filter(|(k, o)| {
            **k != from && o.torrent == Some(tid) && o.peer.is_established() && is_at(o, target)
        })
        .map(|(k, o)| (*k, o.holepunch.their_id.is_some(), punch_addr(o)))
        .max_by_key(|(_, supports, _)| *supports);
    match found {
        None => send(s, from, err(ErrorCode::NotConnected)),
        Some((_, false, _)) => send(s, from, err(ErrorCode::NoSupport)),
        Some((to, true, to_addr)) => {
            send(s, from, HolepunchMsg::Connect(to_addr));
            send(s, to, HolepunchMsg::Connect(from_addr));
            s.push_event(Event::Holepunch(
                tid,
                HolepunchEvent::Relayed {
                    from: from_addr,
                    to: to_addr,
                },
            ));
        }
    }
}

fn connect(
    s: &mut Session,
    now: Instant,
    relay: ConnId,
    tid: super::TorrentId,
    target: SocketAddr,
) {
    let Some(rc) = s.conns.get(&relay) else {
        return;
    };
    let relay_addr = rc.addr;
    let Some(t) = s.torrents.get(&tid) else {
        return;
    };
    if t.is_stopped() || t.state == TorrentState::Checking || t.state == TorrentState::Error {
        return;
    }
    let ip = target.ip();
    let bad_ip = ip.is_unspecified()
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if target.port() < MIN_PORT
        || bad_ip
        || !netaddr::plausible_from(relay_addr.ip(), &target)
        || s.is_banned(ip)
        || is_at(rc, target)
        || is_ours(s, target)
    {
        return;
    }
    // BEP 55: already connected to it: ignore. A dial of ours still pending (a TCP
    // attempt through the NAT that will time out) does not count.
    let busy = s.conns.values().any(|o| {
        o.torrent == Some(tid) && is_at(o, target) && (o.connected || o.holepunch.punched)
    });
    if busy {
        return;
    }
    // Room for one more connection of the torrent and of the session.
    let attached = s.conns.values().filter(|o| o.torrent == Some(tid)).count();
    if attached >= s.peer_cap(tid) || s.conns.len() >= s.config.max_connections {
        return;
    }
    let (per_peer, total) = (
        s.config.holepunch_connects_per_peer,
        s.config.holepunch_connects_per_minute,
    );
    if !rc.holepunch.connects.has_room(now, per_peer) || !s.holepunch.connects.has_room(now, total)
    {
        return;
    }
    if let Some(rc) = s.conns.get_mut(&relay) {
        rc.holepunch.connects.take(now, per_peer);
    }
    s.holepunch.connects.take(now, total);
    let info_hash = t.info_hash;
    let conn = ConnId(s.next_conn);
    s.next_conn += 1;
    let peer = PeerConn::new_outgoing(
        s.config.peer,
        now,
        info_hash,
        s.config.peer_id,
        Session::reserved(),
    );
    let mut c = Conn::new(Some(tid), target, true, Transport::Utp, peer);
    c.holepunch.punched = true;
    // A relay named it: a peer's word, as PEX is.
    c.origin = super::PeerOrigin::Pex;
    s.conns.insert(conn, c);
    s.actions.push_back(Action::Connect {
        conn,
        torrent: tid,
        addr: target,
        transport: Transport::Utp,
    });
    s.push_event(Event::Holepunch(
        tid,
        HolepunchEvent::Connect {
            relay: relay_addr,
            target,
        },
    ));
}

/// Our dial `conn` failed (before the session forgets it or falls back to TCP): when
/// the peer that told us of the address by PEX can relay, ask it to.
pub(crate) fn dial_failed(s: &mut Session, now: Instant, conn: ConnId) {
    let Some(c) = s.conns.get(&conn) else { return };
    if !c.outgoing || c.connected || c.holepunch.punched {
        return;
    }
    let (target, Some(tid)) = (c.addr, c.torrent) else {
        return;
    };
    ask(s, now, tid, target);
}

/// A PEX message from a relay named `targets`, addresses our dials to failed before
/// (their uTP dial, or every one): ask it now rather than at the next failure.
pub(crate) fn named_after_failure(
    s: &mut Session,
    now: Instant,
    tid: super::TorrentId,
    targets: &[SocketAddr],
) {
    for &t in targets {
        ask(s, now, tid, t);
    }
}

/// Sends the peer whose PEX named `target` a rendezvous for it, when it can relay
/// and we did not ask lately.
fn ask(s: &mut Session, now: Instant, tid: super::TorrentId, target: SocketAddr) {
    // Already connected to it (the PEX message came after a dial that worked).
    if s.conns
        .values()
        .any(|o| o.torrent == Some(tid) && o.connected && is_at(o, target))
    {
        return;
    }
    let Some(t) = s.torrents.get(&tid) else {
        return;
    };
    if !s.holepunch_offered(t.private) {
        return;
    }
    let Some((via, flags)) = t.pex_via(target) else {
        return;
    };
    // BEP 11 flags that say the peer has no `ut_holepunch`: the relay could only
    // answer `NoSupport`. (A message without flags says nothing either way.)
    if flags != 0 && flags & crate::pex::FLAG_HOLEPUNCH == 0 {
        return;
    }
    let retry = s.config.holepunch_retry;
    s.holepunch.asked.retain(|_, at| now.since(*at) < retry);
    if s.holepunch.asked.contains_key(&target) || s.holepunch.asked.len() >= MAX_ASKED {
        return;
    }
    let relay = s
        .conns
        .iter()
        .find(|(_, o)| {
            o.torrent == Some(tid)
                && o.peer.is_established()
                && o.holepunch.their_id.is_some()
                && is_at(o, via)
        })
        .map(|(k, o)| (*k, o.addr));
    let Some((relay, relay_addr)) = relay else {
        return;
    };
    s.holepunch.asked.insert(target, now);
    send(s, relay, HolepunchMsg::Rendezvous(target));
    s.push_event(Event::Holepunch(
        tid,
        HolepunchEvent::Rendezvous {
            relay: relay_addr,
            target,
        },
    ));
}
