//! The port mapping client: one machine for the gateway, one slot per mapping (the
//! TCP port, the UDP port) and one for NAT-PMP's external address query. Sans-IO:
//! `now` and datagrams from the gateway in; datagrams to send to the gateway's port
//! [`SERVER_PORT`], events and the next timer out. No allocator.
//!
//! ```text
//!  host loop:
//!      handle_datagram(now, from, bytes)      a datagram from the gateway's socket
//!      while let Some(n) = poll_transmit(now, buf) { send buf[..n] to gateway:5351 }
//!      while let Some(e) = poll_event() { log it }
//!      wait until poll_timeout()
//!  exit: shutdown(now), then the same loop until is_finished() (or a deadline)
//! ```
//!
//! Policy:
//! - PCP first ([`MapperConfig::start_with`]); a gateway that answers "unsupported
//!   version" (in either protocol's framing), or never answers the first PCP
//!   requests ([`PCP_ATTEMPTS`]), is asked with NAT-PMP instead, once.
//! - Retransmissions as the RFCs time them, bounded: NAT-PMP 250 ms doubling, 9
//!   sends (RFC 6886 3.1); PCP 3 s doubling, [`PCP_ATTEMPTS`] sends (RFC 6887 8.1.1
//!   lets them go on; ours stop). An exchange that gets no answer, or an error, is a
//!   failure: reported, and tried again after [`RETRY_MIN`] doubling up to
//!   [`RETRY_MAX`] (or, for a PCP error, at least the error's lifetime, capped there).
//! - Renewal at half the lifetime granted (both RFCs), suggesting the port granted;
//!   a mapping whose lifetime ends before a renewal is answered is reported lost and
//!   asked for again.
//! - A gateway whose epoch went back (RFC 6886 3.6, RFC 6887 8.5) lost its table:
//!   every mapping is renewed at once.
//! - [`PortMapper::shutdown`] deletes (lifetime 0) every mapping that was granted or
//!   asked for, [`DELETE_ATTEMPTS`] sends 250 ms apart doubling, then is finished.
//! - Only datagrams from the gateway's address and port are looked at; a PCP answer
//!   must carry the nonce of its request.

use super::wire::{
    decode_response, Protocol, Request, ResultCode, Version, MAX_REQUEST, SERVER_PORT,
};
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use core::fmt;
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// NAT-PMP sends per exchange (RFC 6886 3.1: the first after 250 ms, doubling).
pub const NATPMP_ATTEMPTS: u8 = 9;
/// PCP sends per exchange before giving up (3 s, 6 s, 12 s, 24 s: 45 s).
pub const PCP_ATTEMPTS: u8 = 4;
/// Sends of a deletion at shutdown (250 ms, 500 ms, 1 s).
pub const DELETE_ATTEMPTS: u8 = 3;
/// The first wait before a failed mapping is asked for again.
pub const RETRY_MIN: Duration = Duration::from_secs(60);
/// The longest wait before a failed mapping is asked for again.
pub const RETRY_MAX: Duration = Duration::from_secs(3600);
/// The lifetime asked for unless configured (RFC 6886 recommends two hours).
pub const DEFAULT_LIFETIME: u32 = 7200;
/// Events kept until the host takes them; more are dropped (the status stays right).
const MAX_EVENTS: usize = 16;

const NATPMP_RTO: Duration = Duration::from_millis(250);
const PCP_RTO: Duration = Duration::from_secs(3);

/// What to map, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapperConfig {
    /// The default gateway (requests go to its port [`SERVER_PORT`]).
    pub gateway: Ipv4Addr,
    /// Our address towards the gateway (PCP names it in each request; the gateway
    /// refuses a request whose source differs).
    pub client: Ipv4Addr,
    /// The TCP port to map (None: none).
    pub tcp_port: Option<u16>,
    /// The UDP port to map (None: none).
    pub udp_port: Option<u16>,
    /// Seconds to ask for ([`DEFAULT_LIFETIME`]); at least 1.
    pub lifetime: u32,
    /// The protocol tried first (PCP, with NAT-PMP as the fallback).
    pub start_with: Version,
}

/// Why a mapping (or the address query) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// No answer to any of the exchange's sends.
    NoAnswer,
    /// The gateway said no.
    Gateway(ResultCode),
    /// The gateway said yes with a lifetime of 0 or an external port of 0.
    Unusable,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAnswer => f.write_str("no answer from the gateway"),
            Self::Gateway(c) => write!(f, "gateway refused: {c}"),
            Self::Unusable => f.write_str("gateway granted a zero port or lifetime"),
        }
    }
}

/// What happened, for the host to log and show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortMapEvent {
    /// The gateway's external address, learned or changed.
    ExternalAddress(Ipv4Addr),
    /// A mapping was granted or renewed.
    Mapped {
        /// The transport.
        protocol: Protocol,
        /// Our port.
        internal_port: u16,
        /// The port peers dial on the external address.
        external_port: u16,
        /// Seconds granted.
        lifetime: u32,
        /// The protocol that granted it.
        version: Version,
        /// A renewal of a mapping that was still valid.
        renewed: bool,
    },
    /// A mapping (None: NAT-PMP's address query) failed; asked again after `retry_in`.
    Failed {
        /// The transport (None: the address query).
        protocol: Option<Protocol>,
        /// Why.
        error: MapError,
        /// When it is tried again.
        retry_in: Duration,
    },
    /// A mapping's lifetime ended before its renewal was answered.
    Lost {
        /// The transport.
        protocol: Protocol,
    },
    /// A mapping was deleted at shutdown (`confirmed`: the gateway answered).
    Deleted {
        /// The transport.
        protocol: Protocol,
        /// Whether the gateway acknowledged it.
        confirmed: bool,
    },
    /// The gateway does not speak `from`; asking with `to` instead.
    FellBack {
        /// The protocol given up.
        from: Version,
        /// The protocol used from now on.
        to: Version,
    },
    /// The gateway's epoch went back: it lost its mappings; renewing them all.
    GatewayRestarted,
}

/// Where a slot stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapState {
    /// Asking (the first time, after a failure, or renewing).
    Requesting,
    /// Granted; renewed at half its lifetime.
    Mapped,
    /// The last exchange failed; asked again later.
    Failed,
    /// Being deleted (shutdown).
    Deleting,
    /// Deleted or given up at shutdown.
    Done,
}

/// One mapping as the status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappingStatus {
    /// The transport.
    pub protocol: Protocol,
    /// Our port.
    pub internal_port: u16,
    /// Where it stands.
    pub state: MapState,
    /// The external port while granted.
    pub external_port: Option<u16>,
    /// Seconds granted by the last answer (0: none yet).
    pub lifetime: u32,
    /// When the grant ends (None: not granted).
    pub expires: Option<Instant>,
    /// The protocol in use.
    pub version: Version,
    /// The last failure (cleared by a grant).
    pub last_error: Option<MapError>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Address,
    Map(Protocol),
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    kind: Kind,
    enabled: bool,
    internal_port: u16,
    nonce: [u8; 12],
    state: MapState,
    /// When something is next done: a retransmission (or the exchange's end), a
    /// renewal, a retry.
    due: Option<Instant>,
    /// A datagram is waiting for [`PortMapper::poll_transmit`].
    send_now: bool,
    /// Sends in the current exchange.
    attempts: u8,
    /// Failed exchanges in a row (for the retry backoff).
    failures: u32,
    /// Whether any request was sent for it (a deletion is then due at shutdown).
    asked: bool,
    external_port: u16,
    lifetime: u32,
    expires: Option<Instant>,
    last_error: Option<MapError>,
}

impl Slot {
    fn new(kind: Kind, port: Option<u16>) -> Self {
        Self {
            kind,
            enabled: port.is_some(),
            internal_port: port.unwrap_or(0),
            nonce: [0; 12],
            state: MapState::Requesting,
            due: None,
            send_now: false,
            attempts: 0,
            failures: 0,
            asked: false,
            external_port: 0,
            lifetime: 0,
            expires: None,
            last_error: None,
        }
    }
    fn start_exchange(&mut self, state: MapState) {
        self.state = state;
        self.attempts = 0;
        self.send_now = true;
        self.due = None;
    }
}

/// The port mapping client of one gateway.
#[derive(Clone, Debug)]
pub struct PortMapper {
    cfg: MapperConfig,
    version: Version,
    /// Whether any PCP answer came (then a silent PCP exchange is not a reason to
    /// fall back).
    heard_pcp: bool,
    fell_back: bool,
    slots: [Slot; 3],
    external: Option<Ipv4Addr>,
    /// The last epoch heard, and when.
    epoch: Option<(u32, Instant)>,
    events: heapless::Deque<PortMapEvent, MAX_EVENTS>,
    stopping: bool,
    /// Datagrams refused (wrong source, undecodable, unexpected).
    ignored: u64,
}

const ADDRESS: usize = 0;
const TCP: usize = 1;
const UDP: usize = 2;

impl PortMapper {
    /// A client for `cfg`; `seed` draws the PCP nonces (seed it from the OS: the nonce
    /// is what keeps an off-path host from answering for the gateway). Nothing is
    /// sent before the first [`PortMapper::poll_transmit`].
    pub fn new(cfg: MapperConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut slots = [
            Slot::new(Kind::Address, Some(0)),
            Slot::new(Kind::Map(Protocol::Tcp), cfg.tcp_port),
            Slot::new(Kind::Map(Protocol::Udp), cfg.udp_port),
        ];
        for s in &mut slots {
            let a = rng.next_u64().to_be_bytes();
            let b = rng.next_u32().to_be_bytes();
            s.nonce[..8].copy_from_slice(&a);
            s.nonce[8..].copy_from_slice(&b);
            s.send_now = s.enabled;
        }
        let cfg = MapperConfig {
            lifetime: cfg.lifetime.max(1),
            ..cfg
        };
        let mut m = Self {
            version: cfg.start_with,
            cfg,
            heard_pcp: false,
            fell_back: false,
            slots,
            external: None,
            epoch: None,
            events: heapless::Deque::new(),
            stopping: false,
            ignored: 0,
        };
        m.slots[ADDRESS].enabled = m.version == Version::NatPmp;
        m
    }

    /// The protocol in use.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The gateway's external address, once learned.
    pub fn external_address(&self) -> Option<Ipv4Addr> {
        self.external
    }

    /// The gateway's address and port, where requests go.
    pub fn server(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.cfg.gateway, SERVER_PORT)
    }

    /// Datagrams ignored: not from the gateway's port, undecodable, or answering
    /// nothing asked.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// The mappings (TCP, then UDP), as the status shows them.
    pub fn mappings(&self) -> impl Iterator<Item = MappingStatus> + '_ {
        self.slots[TCP..].iter().filter(|s| s.enabled).map(|s| {
            let Kind::Map(protocol) = s.kind else {
                unreachable!("slots past the first are mappings")
            };
            MappingStatus {
                protocol,
                internal_port: s.internal_port,
                state: s.state,
                external_port: (s.external_port != 0).then_some(s.external_port),
                lifetime: s.lifetime,
                expires: s.expires,
                version: self.version,
                last_error: s.last_error,
            }
        })
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<PortMapEvent> {
        self.events.pop_front()
    }

    fn emit(&mut self, e: PortMapEvent) {
        let _ = self.events.push_back(e);
    }

    /// When [`PortMapper::poll_transmit`] next has work (None: nothing scheduled).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter(|s| s.enabled)
            .flat_map(|s| {
                let now_due = s.send_now.then_some(Instant::ZERO);
                let lapse = s.expires.filter(|_| s.state != MapState::Done);
                [now_due, s.due, lapse]
            })
            .flatten()
            .min()
    }

    /// Whether the shutdown is over: every deletion answered or given up.
    pub fn is_finished(&self) -> bool {
        self.stopping
            && self
                .slots
                .iter()
                .all(|s| !s.enabled || s.state == MapState::Done)
    }

    /// Starts the shutdown: every mapping that was granted or asked for is deleted
    /// (lifetime 0); nothing else is asked from now on.
    pub fn shutdown(&mut self, _now: Instant) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        for s in &mut self.slots {
            if !s.enabled {
                continue;
            }
            if s.kind != Kind::Address && s.asked {
                s.start_exchange(MapState::Deleting);
            } else {
                s.state = MapState::Done;
                s.send_now = false;
                s.due = None;
            }
        }
    }

    fn rto(&self, state: MapState, attempts: u8) -> Duration {
        let base = if state == MapState::Deleting || self.version == Version::NatPmp {
            NATPMP_RTO
        } else {
            PCP_RTO
        };
        Duration::from_millis(base.as_millis() << attempts.saturating_sub(1).min(12))
    }

    fn max_attempts(&self, state: MapState) -> u8 {
        match (state, self.version) {
            (MapState::Deleting, _) => DELETE_ATTEMPTS,
            (_, Version::NatPmp) => NATPMP_ATTEMPTS,
            (_, Version::Pcp) => PCP_ATTEMPTS,
        }
    }

    fn retry_after(failures: u32) -> Duration {
        let ms = RETRY_MIN
            .as_millis()
            .saturating_mul(1u64 << failures.saturating_sub(1).min(16));
        Duration::from_millis(ms.min(RETRY_MAX.as_millis()))
    }

    /// Switches every slot to `to` and asks again at once.
    fn fall_back(&mut self, to: Version) {
        let from = self.version;
        self.version = to;
        self.fell_back = true;
        self.slots[ADDRESS].enabled = to == Version::NatPmp;
        for s in &mut self.slots {
            if s.enabled && s.state != MapState::Done {
                s.failures = 0;
                s.start_exchange(MapState::Requesting);
            }
        }
        self.emit(PortMapEvent::FellBack { from, to });
    }

    fn fail(&mut self, i: usize, now: Instant, error: MapError, at_least: Duration) {
        let s = &mut self.slots[i];
        s.failures = s.failures.saturating_add(1);
        let mut retry_in = Self::retry_after(s.failures).max(at_least.min(RETRY_MAX));
        // A renewal that failed is tried again while the mapping still holds.
        if let Some(left) = s.expires.filter(|e| *e > now).map(|e| e.since(now)) {
            let half = Duration::from_millis((left.as_millis() / 2).max(1000));
            retry_in = retry_in.min(half);
        }
        s.state = MapState::Failed;
        s.last_error = Some(error);
        s.send_now = false;
        s.due = Some(now + retry_in);
        let protocol = match s.kind {
            Kind::Address => None,
            Kind::Map(p) => Some(p),
        };
        self.emit(PortMapEvent::Failed {
            protocol,
            error,
            retry_in,
        });
    }

    /// Timers: retransmissions, exchanges given up, renewals, retries, lapses.
    fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let s = self.slots[i];
            if !s.enabled || s.state == MapState::Done {
                continue;
            }
            if let (Some(exp), Kind::Map(protocol)) = (s.expires, s.kind) {
                if exp <= now {
                    let s = &mut self.slots[i];
                    s.expires = None;
                    s.external_port = 0;
                    if s.state == MapState::Mapped {
                        s.start_exchange(MapState::Requesting);
                    }
                    if !self.stopping {
                        self.emit(PortMapEvent::Lost { protocol });
                    }
                }
            }
            let s = self.slots[i];
            if s.send_now || s.due.is_none_or(|d| d > now) {
                continue;
            }
            match s.state {
                MapState::Requesting | MapState::Deleting
                    if s.attempts < self.max_attempts(s.state) =>
                {
                    self.slots[i].send_now = true;
                }
                MapState::Deleting => {
                    let s = &mut self.slots[i];
                    s.state = MapState::Done;
                    s.due = None;
                    if let Kind::Map(protocol) = s.kind {
                        self.emit(PortMapEvent::Deleted {
                            protocol,
                            confirmed: false,
                        });
                    }
                }
                MapState::Requesting => {
                    if self.version == Version::Pcp && !self.heard_pcp && !self.fell_back {
                        self.fall_back(Version::NatPmp);
                        return;
                    }
                    self.fail(i, now, MapError::NoAnswer, Duration::ZERO);
                }
                MapState::Mapped | MapState::Failed => {
                    self.slots[i].start_exchange(MapState::Requesting);
                }
                MapState::Done => {}
            }
        }
    }

    fn request(&self, s: &Slot) -> Request {
        let deleting = s.state == MapState::Deleting;
        let lifetime = if deleting { 0 } else { self.cfg.lifetime };
        let protocol = match s.kind {
            Kind::Address => return Request::NatPmpAddress,
            Kind::Map(p) => p,
        };
        // Renewals (and PCP deletions) suggest what was granted.
        let granted = if s.external_port != 0 {
            s.external_port
        } else {
            s.internal_port
        };
        match self.version {
            Version::NatPmp => Request::NatPmpMap {
                protocol,
                internal_port: s.internal_port,
                suggested_port: if deleting { 0 } else { granted },
                lifetime,
            },
            Version::Pcp => Request::PcpMap {
                client: self.cfg.client,
                nonce: s.nonce,
                protocol,
                internal_port: s.internal_port,
                suggested_port: granted,
                suggested_address: self.external.unwrap_or(Ipv4Addr::UNSPECIFIED),
                lifetime,
            },
        }
    }

    /// Runs the timers that are due, then writes the next datagram to send to
    /// [`PortMapper::server`] into `out` (at least [`MAX_REQUEST`] bytes) and returns
    /// its length; None when nothing is to be sent now.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        self.handle_timeout(now);
        let i = self.slots.iter().position(|s| s.enabled && s.send_now)?;
        let req = self.request(&self.slots[i]);
        let n = req.encode(out).ok()?;
        debug_assert!(n <= MAX_REQUEST);
        let rto = {
            let s = &self.slots[i];
            self.rto(s.state, s.attempts + 1)
        };
        let s = &mut self.slots[i];
        s.send_now = false;
        s.attempts = s.attempts.saturating_add(1);
        s.asked = true;
        s.due = Some(now + rto);
        Some(n)
    }

    /// Notes the gateway's epoch; true when it went back (RFC 6886 3.6: by more than
    /// 7/8 of the time elapsed, less 2 s of slack).
    fn epoch_went_back(&mut self, now: Instant, epoch: u32) -> bool {
        let back = match self.epoch {
            Some((e, at)) => {
                let elapsed = now.since(at).as_millis() / 1000;
                u64::from(epoch) + 2 < u64::from(e) + elapsed * 7 / 8
            }
            None => false,
        };
        self.epoch = Some((epoch, now));
        back
    }

    fn learn_address(&mut self, a: Ipv4Addr) {
        if a.is_unspecified() || self.external == Some(a) {
            return;
        }
        self.external = Some(a);
        self.emit(PortMapEvent::ExternalAddress(a));
    }

    /// A datagram that arrived on the socket that sends to the gateway. Anything not
    /// from [`PortMapper::server`], undecodable, or answering nothing asked is
    /// ignored (counted in [`PortMapper::ignored`]).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if from != SocketAddr::V4(self.server()) {
            self.ignored += 1;
            return;
        }
        let Ok(resp) = decode_response(data) else {
            self.ignored += 1;
            return;
        };
        use super::wire::Response as R;
        let epoch = match resp {
            R::NatPmpAddress { epoch, .. }
            | R::NatPmpMap { epoch, .. }
            | R::NatPmpError { epoch, .. }
            | R::PcpMap { epoch, .. }
            | R::PcpOther { epoch, .. } => epoch,
        };
        let unsupported = matches!(
            resp,
            R::NatPmpAddress {
                result: ResultCode::UnsupportedVersion,
                ..
            } | R::NatPmpMap {
                result: ResultCode::UnsupportedVersion,
                ..
            } | R::NatPmpError {
                result: ResultCode::UnsupportedVersion,
                ..
            } | R::PcpMap {
                result: ResultCode::UnsupportedVersion,
                ..
            } | R::PcpOther {
                result: ResultCode::UnsupportedVersion,
                ..
            }
        );
        if unsupported {
            if self.version == Version::Pcp && !self.fell_back && !self.stopping {
                self.fall_back(Version::NatPmp);
            } else {
                self.ignored += 1;
            }
            return;
        }
        let restarted = self.epoch_went_back(now, epoch);
        match resp {
            R::PcpMap { .. } | R::PcpOther { .. } if self.version == Version::Pcp => {
                self.heard_pcp = true;
            }
            R::NatPmpAddress { .. } | R::NatPmpMap { .. } if self.version == Version::NatPmp => {}
            _ => {
                self.ignored += 1;
                return;
            }
        }
        let handled = match resp {
            R::NatPmpAddress {
                result, address, ..
            } => self.on_address(now, result, address),
            R::NatPmpMap {
                protocol,
                result,
                internal_port,
                external_port,
                lifetime,
                ..
            } => {
                let i = if protocol == Protocol::Tcp { TCP } else { UDP };
                let s = &self.slots[i];
                // An error response may stop before the port (then it is 0).
                let ours = internal_port == s.internal_port
                    || (internal_port == 0 && result != ResultCode::Success);
                ours && self.on_map(now, i, result, external_port, lifetime, None, 0)
            }
            R::PcpMap {
                result,
                lifetime,
                nonce,
                protocol,
                internal_port,
                external_port,
                external_address,
                ..
            } => {
                let i = if protocol == Protocol::Tcp { TCP } else { UDP };
                let s = &self.slots[i];
                if nonce != s.nonce || internal_port != s.internal_port {
                    false
                } else {
                    let a = external_address.to_ipv4_mapped();
                    self.on_map(now, i, result, external_port, lifetime, a, lifetime)
                }
            }
            _ => false,
        };
        if !handled {
            self.ignored += 1;
        }
        if restarted && !self.stopping {
            self.emit(PortMapEvent::GatewayRestarted);
            for s in &mut self.slots {
                if s.enabled && s.state == MapState::Mapped && s.kind != Kind::Address {
                    s.start_exchange(MapState::Requesting);
                }
            }
        }
    }

    fn on_address(&mut self, now: Instant, result: ResultCode, a: Option<Ipv4Addr>) -> bool {
        let s = &self.slots[ADDRESS];
        if !s.enabled || s.state != MapState::Requesting {
            return false;
        }
        match (result, a) {
            (ResultCode::Success, Some(a)) => {
                let s = &mut self.slots[ADDRESS];
                s.state = MapState::Mapped;
                s.due = None;
                s.failures = 0;
                s.last_error = None;
                self.learn_address(a);
            }
            _ => self.fail(ADDRESS, now, MapError::Gateway(result), Duration::ZERO),
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn on_map(
        &mut self,
        now: Instant,
        i: usize,
        result: ResultCode,
        external_port: u16,
        lifetime: u32,
        address: Option<Ipv4Addr>,
        error_lifetime: u32,
    ) -> bool {
        let s = self.slots[i];
        let Kind::Map(protocol) = s.kind else {
            return false;
        };
        match s.state {
            MapState::Deleting => {
                let s = &mut self.slots[i];
                s.state = MapState::Done;
                s.due = None;
                s.external_port = 0;
                s.expires = None;
                self.emit(PortMapEvent::Deleted {
                    protocol,
                    confirmed: result == ResultCode::Success,
                });
                true
            }
            MapState::Requesting => {
                if result != ResultCode::Success {
                    let hold = Duration::from_secs(u64::from(error_lifetime));
                    self.fail(i, now, MapError::Gateway(result), hold);
                    return true;
                }
                if lifetime == 0 || external_port == 0 {
                    self.fail(i, now, MapError::Unusable, Duration::ZERO);
                    return true;
                }
                if let Some(a) = address {
                    self.learn_address(a);
                }
                let renewed = s.expires.is_some_and(|e| e > now);
                let s = &mut self.slots[i];
                s.state = MapState::Mapped;
                s.external_port = external_port;
                s.lifetime = lifetime;
                s.expires = Some(now + Duration::from_secs(u64::from(lifetime)));
                // Renewed at half the lifetime, at least a second from now.
                s.due = Some(now + Duration::from_millis((u64::from(lifetime) * 500).max(1000)));
                s.failures = 0;
                s.last_error = None;
                let internal_port = s.internal_port;
                let version = self.version;
                self.emit(PortMapEvent::Mapped {
                    protocol,
                    internal_port,
                    external_port,
                    lifetime,
                    version,
                    renewed,
                });
                true
            }
            // A late duplicate of an answer already taken.
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const EXT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);

    fn gw() -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(GW, SERVER_PORT))
    }

    fn cfg(start_with: Version) -> MapperConfig {
        MapperConfig {
            gateway: GW,
            client: ME,
            tcp_port: Some(6881),
            udp_port: Some(6881),
            lifetime: 120,
            start_with,
        }
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// Every datagram due at `now`.
    fn sends(m: &mut PortMapper, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_REQUEST];
        while let Some(n) = m.poll_transmit(now, &mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
    }

    fn events(m: &mut PortMapper) -> Vec<PortMapEvent> {
        core::iter::from_fn(|| m.poll_event()).collect()
    }

    extern crate std;
    use std::vec::Vec;

    /// A PCP gateway's answer to the MAP request `req`.
    fn pcp_answer(req: &[u8], result: u8, lifetime: u32, epoch: u32, port: u16) -> Vec<u8> {
        assert_eq!((req[0], req[1], req.len()), (2, 1, 60));
        let mut b = req.to_vec();
        b[1] = 0x81;
        b[2] = 0;
        b[3] = result;
        b[4..8].copy_from_slice(&lifetime.to_be_bytes());
        b[8..12].copy_from_slice(&epoch.to_be_bytes());
        b[12..24].fill(0);
        b[42..44].copy_from_slice(&port.to_be_bytes());
        b[44..60].copy_from_slice(&EXT.to_ipv6_mapped().octets());
        b
    }

    fn natpmp_answer(req: &[u8], epoch: u32, lifetime: u32) -> Vec<u8> {
        let mut b = std::vec![0, req[1] + 128, 0, 0];
        b.extend_from_slice(&epoch.to_be_bytes());
        if req[1] == 0 {
            b.extend_from_slice(&EXT.octets());
        } else {
            b.extend_from_slice(&req[4..6]);
            b.extend_from_slice(&req[4..6]);
            b.extend_from_slice(&lifetime.to_be_bytes());
        }
        b
    }

    fn lifetime_of(req: &[u8]) -> u32 {
        match req[0] {
            2 => u32::from_be_bytes([req[4], req[5], req[6], req[7]]),
            _ => u32::from_be_bytes([req[8], req[9], req[10], req[11]]),
        }
    }

    #[test]
    fn pcp_maps_both_ports_learns_the_address_and_renews_at_half_the_lifetime() {
        let mut m = PortMapper::new(cfg(Version::Pcp), 1);
        let reqs = sends(&mut m, t(1));
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0][36], 6, "TCP first");
        assert_eq!(reqs[1][36], 17);
        assert_eq!(&reqs[0][8..24], &ME.to_ipv6_mapped().octets());
        assert_ne!(&reqs[0][24..36], &reqs[1][24..36], "a nonce per mapping");
        assert!(sends(&mut m, t(1)).is_empty());
        for r in &reqs {
            m.handle_datagram(t(50), gw(), &pcp_answer(r, 0, 120, 1000, 16881));
        }
        let ev = events(&mut m);
        assert_eq!(ev[0], PortMapEvent::ExternalAddress(EXT));
        assert!(matches!(
            ev[1],
            PortMapEvent::Mapped {
                protocol: Protocol::Tcp,
                external_port: 16881,
                lifetime: 120,
                renewed: false,
                ..
            }
        ));
        assert_eq!(ev.len(), 3);
        assert_eq!(m.external_address(), Some(EXT));
        let st: Vec<_> = m.mappings().collect();
        assert_eq!(st[0].state, MapState::Mapped);
        assert_eq!(st[1].external_port, Some(16881));
        // Renewal at 60 s: same nonce, the granted port suggested.
        assert_eq!(m.poll_timeout(), Some(t(50 + 60_000)));
        assert!(sends(&mut m, t(59_000)).is_empty());
        let renew = sends(&mut m, t(60_050));
        assert_eq!(renew.len(), 2);
        assert_eq!(&renew[0][24..36], &reqs[0][24..36]);
        assert_eq!(&renew[0][42..44], &16881u16.to_be_bytes());
        assert_eq!(&renew[0][44..60], &EXT.to_ipv6_mapped().octets());
        m.handle_datagram(t(60_100), gw(), &pcp_answer(&renew[0], 0, 120, 1060, 16881));
        assert!(matches!(
            events(&mut m)[..],
            [PortMapEvent::Mapped { renewed: true, .. }]
        ));
    }

    #[test]
    fn unsupported_version_falls_back_to_natpmp() {
        let mut m = PortMapper::new(cfg(Version::Pcp), 2);
        let reqs = sends(&mut m, t(1));
        // What a NAT-PMP-only gateway answers a PCP request with (RFC 6887 section 9).
        m.handle_datagram(t(10), gw(), &[0, 129, 0, 1, 0, 0, 0, 7]);
        assert_eq!(
            events(&mut m),
            [PortMapEvent::FellBack {
                from: Version::Pcp,
                to: Version::NatPmp
            }]
        );
        assert_eq!(m.version(), Version::NatPmp);
        let reqs2 = sends(&mut m, t(10));
        assert_eq!(reqs2.len(), 3, "address, TCP, UDP");
        assert_eq!(reqs2[0], [0, 0]);
        assert_eq!(&reqs2[1][..2], &[0, 2]);
        assert_eq!(&reqs2[2][..2], &[0, 1]);
        assert_eq!(lifetime_of(&reqs2[1]), 120);
        // A late PCP answer is not taken now.
        m.handle_datagram(t(20), gw(), &pcp_answer(&reqs[0], 0, 120, 7, 6881));
        assert!(events(&mut m).is_empty());
        for r in &reqs2 {
            m.handle_datagram(t(30), gw(), &natpmp_answer(r, 8, 120));
        }
        let ev = events(&mut m);
        assert_eq!(ev[0], PortMapEvent::ExternalAddress(EXT));
        assert!(matches!(
            ev[1],
            PortMapEvent::Mapped {
                version: Version::NatPmp,
                ..
            }
        ));
        assert_eq!(ev.len(), 3);
        // A second "unsupported version" does not flip back and forth.
        m.handle_datagram(t(40), gw(), &[0, 129, 0, 1, 0, 0, 0, 7]);
        assert_eq!(m.version(), Version::NatPmp);
    }

    #[test]
    fn silence_backs_off_as_the_rfcs_say_then_falls_back_then_fails_bounded() {
        let mut m = PortMapper::new(
            MapperConfig {
                udp_port: None,
                ..cfg(Version::Pcp)
            },
            3,
        );
        // PCP: sends at 0, 3, 9, 21 s; given up at 45 s. Then NAT-PMP: 250 ms
        // doubling, 9 sends each for the address and the TCP port.
        let mut pcp_at = Vec::new();
        let mut tcp_at = Vec::new();
        let mut failed = Vec::new();
        let mut now = 0;
        while failed.len() < 2 && now < 400_000 {
            for r in sends(&mut m, t(now)) {
                match (r[0], r[1]) {
                    (2, _) => pcp_at.push(now),
                    (0, 2) => tcp_at.push(now - 45_000),
                    _ => {}
                }
            }
            failed.extend(
                events(&mut m)
                    .into_iter()
                    .filter(|e| matches!(e, PortMapEvent::Failed { .. })),
            );
            now = m.poll_timeout().expect("a timer").as_millis();
        }
        assert_eq!(pcp_at, [0, 3000, 9000, 21000]);
        assert_eq!(tcp_at, [0, 250, 750, 1750, 3750, 7750, 15750, 31750, 63750]);
        let start = 45_000;
        assert!(failed.contains(&PortMapEvent::Failed {
            protocol: Some(Protocol::Tcp),
            error: MapError::NoAnswer,
            retry_in: RETRY_MIN
        }));
        let st = m.mappings().next().expect("a mapping");
        assert_eq!(st.state, MapState::Failed);
        assert_eq!(st.last_error, Some(MapError::NoAnswer));
        // Tried again after a minute, and the next failure waits twice as long.
        let at = m.poll_timeout().expect("a timer");
        assert_eq!(at, t(start + 127_750 + 60_000));
        assert!(!sends(&mut m, at).is_empty());
        let mut now = at.as_millis();
        loop {
            sends(&mut m, t(now));
            let f: Vec<_> = events(&mut m);
            if let Some(PortMapEvent::Failed { retry_in, .. }) = f.iter().find(|e| {
                matches!(
                    e,
                    PortMapEvent::Failed {
                        protocol: Some(_),
                        ..
                    }
                )
            }) {
                assert_eq!(*retry_in, Duration::from_secs(120));
                break;
            }
            now = m.poll_timeout().expect("a timer").as_millis();
        }
    }

    #[test]
    fn shutdown_deletes_with_lifetime_zero() {
        let mut m = PortMapper::new(cfg(Version::Pcp), 4);
        let reqs = sends(&mut m, t(1));
        m.handle_datagram(t(5), gw(), &pcp_answer(&reqs[0], 0, 120, 10, 6881));
        events(&mut m);
        // UDP was asked but never answered: deleted too (the answer may have been lost).
        m.shutdown(t(10));
        assert!(!m.is_finished());
        let dels = sends(&mut m, t(10));
        assert_eq!(dels.len(), 2);
        for d in &dels {
            assert_eq!(lifetime_of(d), 0);
        }
        assert_eq!(&dels[0][24..36], &reqs[0][24..36], "the mapping's nonce");
        m.handle_datagram(t(20), gw(), &pcp_answer(&dels[0], 0, 0, 10, 6881));
        assert_eq!(
            events(&mut m),
            [PortMapEvent::Deleted {
                protocol: Protocol::Tcp,
                confirmed: true
            }]
        );
        // UDP: 3 sends (250 ms, 500 ms, 1 s), then given up.
        let mut now = 20;
        let mut n = 0;
        while !m.is_finished() {
            n += sends(&mut m, t(now)).len();
            let Some(next) = m.poll_timeout() else { break };
            now = next.as_millis();
            assert!(now < 5000);
        }
        assert_eq!(n, 2, "two more sends after the first");
        assert_eq!(
            events(&mut m),
            [PortMapEvent::Deleted {
                protocol: Protocol::Udp,
                confirmed: false
            }]
        );
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn natpmp_deletion_suggests_port_zero_and_a_mapper_that_asked_nothing_is_finished() {
        let mut m = PortMapper::new(cfg(Version::NatPmp), 5);
        m.shutdown(t(1));
        assert!(m.is_finished());
        assert!(sends(&mut m, t(1)).is_empty());
        let mut m = PortMapper::new(cfg(Version::NatPmp), 5);
        for r in sends(&mut m, t(1)) {
            m.handle_datagram(t(2), gw(), &natpmp_answer(&r, 1, 100));
        }
        m.shutdown(t(3));
        let dels = sends(&mut m, t(3));
        assert_eq!(dels.len(), 2);
        assert_eq!(&dels[0][..], &[0, 2, 0, 0, 0x1a, 0xe1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn only_the_gateway_with_the_right_nonce_is_heard() {
        let mut m = PortMapper::new(cfg(Version::Pcp), 6);
        let reqs = sends(&mut m, t(1));
        let good = pcp_answer(&reqs[0], 0, 120, 10, 6881);
        let other = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 99), SERVER_PORT));
        m.handle_datagram(t(2), other, &good);
        let wrong_port = SocketAddr::V4(SocketAddrV4::new(GW, 5350));
        m.handle_datagram(t(2), wrong_port, &good);
        let mut forged = good.clone();
        forged[30] ^= 1;
        m.handle_datagram(t(2), gw(), &forged);
        m.handle_datagram(t(2), gw(), &good[..40]);
        // A refusal by a forger cannot make us fall back either.
        m.handle_datagram(t(2), other, &[0, 129, 0, 1, 0, 0, 0, 7]);
        assert!(events(&mut m).is_empty());
        assert_eq!(m.ignored(), 5);
        assert_eq!(m.version(), Version::Pcp);
        m.handle_datagram(t(2), gw(), &good);
        assert_eq!(events(&mut m).len(), 2);
        // A duplicate is ignored.
        m.handle_datagram(t(3), gw(), &good);
        assert!(events(&mut m).is_empty());
    }

    #[test]
    fn a_refusal_is_a_failure_retried_no_sooner_than_pcp_says() {
        let mut m = PortMapper::new(
            MapperConfig {
                udp_port: None,
                ..cfg(Version::Pcp)
            },
            7,
        );
        let reqs = sends(&mut m, t(1));
        m.handle_datagram(t(2), gw(), &pcp_answer(&reqs[0], 2, 600, 10, 0));
        assert_eq!(
            events(&mut m),
            [PortMapEvent::Failed {
                protocol: Some(Protocol::Tcp),
                error: MapError::Gateway(ResultCode::NotAuthorized),
                retry_in: Duration::from_secs(600),
            }]
        );
        assert_eq!(m.poll_timeout(), Some(t(600_002)));
    }

    #[test]
    fn a_renewal_unanswered_until_the_end_of_the_lifetime_loses_the_mapping() {
        let mut m = PortMapper::new(
            MapperConfig {
                udp_port: None,
                lifetime: 8,
                ..cfg(Version::NatPmp)
            },
            8,
        );
        for r in sends(&mut m, t(0)) {
            m.handle_datagram(t(0), gw(), &natpmp_answer(&r, 1, 8));
        }
        events(&mut m);
        let mut now = 0;
        let mut lost = false;
        let mut renew_sends = 0;
        while now < 30_000 && !lost {
            renew_sends += sends(&mut m, t(now)).len();
            lost = events(&mut m).contains(&PortMapEvent::Lost {
                protocol: Protocol::Tcp,
            });
            now = m.poll_timeout().expect("a timer").as_millis();
        }
        assert!(lost);
        assert!(renew_sends >= 4, "renewal sent from 4 s on: {renew_sends}");
        let st = m.mappings().next().expect("a mapping");
        assert_eq!(st.external_port, None);
        assert_ne!(st.state, MapState::Mapped);
    }

    #[test]
    fn an_epoch_that_goes_back_renews_everything() {
        let mut m = PortMapper::new(cfg(Version::NatPmp), 9);
        for r in sends(&mut m, t(0)) {
            m.handle_datagram(t(0), gw(), &natpmp_answer(&r, 5000, 3600));
        }
        events(&mut m);
        assert!(sends(&mut m, t(10_000)).is_empty());
        // 10 s later the gateway says it started 3 s ago.
        let probe = [0u8, 0];
        m.handle_datagram(t(10_000), gw(), &natpmp_answer(&probe, 3, 0));
        assert!(events(&mut m).contains(&PortMapEvent::GatewayRestarted));
        assert_eq!(sends(&mut m, t(10_000)).len(), 2);
    }
}
