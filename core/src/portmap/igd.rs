//! The UPnP IGD client: [`UpnpMapper`], one machine for the gateway's TCP and UDP
//! mappings over UPnP. Sans-IO and no allocator: `now`, SSDP datagrams and whole HTTP
//! responses in; datagrams to multicast, HTTP requests to make, events and the next
//! timer out.
//!
//! ```text
//!  host loop:
//!      handle_ssdp(now, from, bytes)            an answer on the search socket
//!      handle_http(now, id, Ok(bytes) | Err(e)) the response to request `id`
//!      while let Some(t) = poll_transmit(now, buf) {
//!          Search: send buf[..len] to 239.255.255.250:1900
//!          Http { id, to }: POST/GET buf[..len] to `to` (TCP, off the loop)
//!      }
//!      while let Some(e) = poll_event() { log it }
//!      wait until poll_timeout()
//!  exit: shutdown(now), then the same loop until is_finished() (or a deadline)
//! ```
//!
//! Policy:
//! - Discovery: an `M-SEARCH` for each of [`IGD_TYPES`], [`SEARCH_ATTEMPTS`] times
//!   (1 s, 2 s, 4 s apart); only an answer from the gateway's address whose LOCATION
//!   is on the gateway's address is taken (a LAN device answering SSDP cannot send us
//!   elsewhere). No answer: a failure, searched again after [`RETRY_MIN`] doubling
//!   up to [`RETRY_MAX`].
//! - The description is fetched and scanned for the port mapping service
//!   ([`SERVICE_TYPES`]); its control URL must be on the gateway's address too.
//! - One HTTP request at a time, each answered within [`HTTP_TIMEOUT`] or failed.
//!   First `GetExternalIPAddress`, then `AddPortMapping` for TCP, then UDP, asking
//!   for the internal port as the external port, lease [`UpnpConfig::lease`].
//! - UPnP error 718 (the port is someone else's): another external port, drawn at
//!   random, up to [`MAX_CONFLICTS`] times. 725 (only permanent leases): asked again
//!   with lease 0, refreshed every [`PERMANENT_REFRESH`]. 724 (the ports must be the
//!   same): asked again with the internal port. Any other error, or none of these
//!   helping: a failure, tried again after the backoff.
//! - Renewal (the same `AddPortMapping`) at half the lease; a mapping whose lease
//!   ends before its renewal is answered is reported lost and asked for again.
//! - An HTTP request that fails (no connection, a timeout, not HTTP) means the
//!   gateway's web server moved or went: the mapping fails and the gateway is searched
//!   for again when it is retried.
//! - [`UpnpMapper::shutdown`] deletes every mapping granted or asked for
//!   (`DeletePortMapping`, one attempt each), after any request in flight is
//!   answered; then the machine is finished.

use super::client::MapState;
use super::upnp::{
    parse_description, parse_http_response, parse_soap, parse_ssdp, parse_url, resolve_url,
    write_get, write_msearch, write_soap, Action, SoapReply, UpnpErrorCode, UpnpParseError,
    IGD_TYPES, MAX_VALUE,
};
use super::wire::Protocol;
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use core::fmt;
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

pub use super::upnp::{MAX_HTTP_RESPONSE, MAX_REQUEST, MAX_SSDP, SERVICE_TYPES, SSDP_ADDR};

/// Searches before discovery gives up (sent at 0 s, 1 s, 3 s; given up at 7 s).
pub const SEARCH_ATTEMPTS: u8 = 3;
/// How long an HTTP request may take, from its handing to the host to its response.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// External ports tried after a 718 conflict before the mapping fails.
pub const MAX_CONFLICTS: u8 = 3;
/// How often a permanent (lease 0) mapping is asked for again (it survives nothing
/// but the gateway's table; a restarted gateway learns it again from this).
pub const PERMANENT_REFRESH: Duration = Duration::from_secs(1800);
/// The first wait before a failure is retried.
pub const RETRY_MIN: Duration = Duration::from_secs(60);
/// The longest wait before a failure is retried.
pub const RETRY_MAX: Duration = Duration::from_secs(3600);
/// The lease asked for unless configured (seconds).
pub const DEFAULT_LEASE: u32 = 7200;
/// The `MX` of the searches: answers within a second.
const SEARCH_MX: u8 = 1;
const SEARCH_RTO: Duration = Duration::from_secs(1);
const MAX_EVENTS: usize = 16;
/// The longest control URL path kept (a prefix and a reference of [`MAX_VALUE`]).
const MAX_PATH: usize = 2 * MAX_VALUE;

/// What to map, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpnpConfig {
    /// The default gateway: the only device whose answers are taken.
    pub gateway: Ipv4Addr,
    /// Our address towards the gateway (the mappings' internal client).
    pub client: Ipv4Addr,
    /// The TCP port to map (None: none).
    pub tcp_port: Option<u16>,
    /// The UDP port to map (None: none).
    pub udp_port: Option<u16>,
    /// Seconds to ask for ([`DEFAULT_LEASE`]); 0 asks for a permanent mapping.
    pub lease: u32,
}

/// Why the host could not get an HTTP response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The connection was refused or could not be made.
    Connect,
    /// No complete response in time.
    Timeout,
    /// Longer than [`MAX_HTTP_RESPONSE`].
    TooLarge,
    /// Another I/O error.
    Io,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "cannot connect",
            Self::Timeout => "timed out",
            Self::TooLarge => "response too large",
            Self::Io => "I/O error",
        })
    }
}

/// Why discovery, the address query or a mapping failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpnpFailure {
    /// No UPnP gateway answered the searches.
    NoGateway,
    /// The HTTP request failed.
    Http(HttpError),
    /// The answer was not understood.
    Parse(UpnpParseError),
    /// A URL (LOCATION, URLBase, control URL) points away from the gateway.
    ForeignUrl,
    /// The gateway refused with a UPnP error.
    Gateway(UpnpErrorCode),
}

impl fmt::Display for UpnpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoGateway => f.write_str("no UPnP gateway answered"),
            Self::Http(e) => write!(f, "HTTP: {e}"),
            Self::Parse(e) => write!(f, "bad answer: {e}"),
            Self::ForeignUrl => f.write_str("a URL not on the gateway"),
            Self::Gateway(c) => write!(f, "gateway refused: {c}"),
        }
    }
}

/// What happened, for the host to log and show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpnpEvent {
    /// The gateway's port mapping service was found.
    Found {
        /// Where its control URL is.
        control: SocketAddrV4,
        /// Which service (one of [`SERVICE_TYPES`]).
        service_type: &'static str,
    },
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
        /// Seconds granted (0: permanent).
        lease: u32,
        /// A renewal of a mapping that was still valid.
        renewed: bool,
    },
    /// Discovery or the address query (None) or a mapping failed; tried again after
    /// `retry_in` (the address query: with the next mapping).
    Failed {
        /// The transport (None: discovery or the address query).
        protocol: Option<Protocol>,
        /// Why.
        error: UpnpFailure,
        /// When it is tried again.
        retry_in: Duration,
    },
    /// A mapping's lease ended before its renewal was answered.
    Lost {
        /// The transport.
        protocol: Protocol,
    },
    /// A mapping was deleted at shutdown (`confirmed`: the gateway said so).
    Deleted {
        /// The transport.
        protocol: Protocol,
        /// Whether the gateway acknowledged it.
        confirmed: bool,
    },
}

/// One mapping as the status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpnpMappingStatus {
    /// The transport.
    pub protocol: Protocol,
    /// Our port.
    pub internal_port: u16,
    /// Where it stands.
    pub state: MapState,
    /// The external port while granted.
    pub external_port: Option<u16>,
    /// Seconds granted (0: permanent, or none yet).
    pub lease: u32,
    /// When the grant ends (None: not granted, or permanent).
    pub expires: Option<Instant>,
    /// The last failure (cleared by a grant).
    pub last_error: Option<UpnpFailure>,
}

/// What [`UpnpMapper::poll_transmit`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpnpTransmit {
    /// An SSDP search of `len` bytes, for [`SSDP_ADDR`] (from the interface towards
    /// the gateway).
    Search {
        /// Its length.
        len: usize,
    },
    /// An HTTP request of `len` bytes for `to`; its response (read up to the close,
    /// at most [`MAX_HTTP_RESPONSE`] bytes) goes to [`UpnpMapper::handle_http`] with
    /// `id`.
    Http {
        /// Names the request.
        id: u64,
        /// The gateway's web server.
        to: SocketAddrV4,
        /// Its length.
        len: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Searching: `sent` searches of this attempt written, the next attempt at `due`.
    Search { attempts: u8, sent: u8 },
    /// The description is to be fetched (or is being).
    Describe,
    /// The control URL is known.
    Ready,
    /// Waiting for a retry at `phase_due`.
    Idle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Describe,
    ExternalAddress,
    Map(usize),
    Delete(usize),
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    id: u64,
    op: Op,
    action: Action,
    deadline: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    protocol: Protocol,
    enabled: bool,
    internal_port: u16,
    state: MapState,
    send_now: bool,
    due: Option<Instant>,
    /// The external port asked for (the granted one once mapped).
    external_port: u16,
    granted: bool,
    permanent: bool,
    lease: u32,
    expires: Option<Instant>,
    failures: u32,
    conflicts: u8,
    asked: bool,
    last_error: Option<UpnpFailure>,
}

impl Slot {
    fn new(protocol: Protocol, port: Option<u16>) -> Self {
        Self {
            protocol,
            enabled: port.is_some(),
            internal_port: port.unwrap_or(0),
            state: MapState::Requesting,
            send_now: port.is_some(),
            due: None,
            external_port: port.unwrap_or(0),
            granted: false,
            permanent: false,
            lease: 0,
            expires: None,
            failures: 0,
            conflicts: 0,
            asked: false,
            last_error: None,
        }
    }
}

/// The gateway's port mapping service.
#[derive(Clone, Debug)]
struct Control {
    addr: SocketAddrV4,
    path: heapless::String<MAX_PATH>,
    service_type: &'static str,
}

/// The UPnP IGD client of one gateway.
#[derive(Clone, Debug)]
pub struct UpnpMapper {
    cfg: UpnpConfig,
    rng: Rng,
    phase: Phase,
    phase_due: Option<Instant>,
    /// Failed discoveries in a row (for the backoff).
    search_failures: u32,
    location: Option<(SocketAddrV4, heapless::String<MAX_VALUE>)>,
    control: Option<Control>,
    in_flight: Option<InFlight>,
    next_id: u64,
    slots: [Slot; 2],
    external: Option<Ipv4Addr>,
    want_address: bool,
    events: heapless::Deque<UpnpEvent, MAX_EVENTS>,
    stopping: bool,
    ignored: u64,
}

fn retry_after(failures: u32) -> Duration {
    let ms = RETRY_MIN
        .as_millis()
        .saturating_mul(1u64 << failures.saturating_sub(1).min(16));
    Duration::from_millis(ms.min(RETRY_MAX.as_millis()))
}

impl UpnpMapper {
    /// A client for `cfg`; `seed` draws the external ports tried after a conflict.
    /// Nothing is sent before the first [`UpnpMapper::poll_transmit`].
    pub fn new(cfg: UpnpConfig, seed: u64) -> Self {
        Self {
            cfg,
            rng: Rng::new(seed),
            phase: Phase::Search {
                attempts: 0,
                sent: 0,
            },
            phase_due: Some(Instant::ZERO),
            search_failures: 0,
            location: None,
            control: None,
            in_flight: None,
            next_id: 1,
            slots: [
                Slot::new(Protocol::Tcp, cfg.tcp_port),
                Slot::new(Protocol::Udp, cfg.udp_port),
            ],
            external: None,
            want_address: true,
            events: heapless::Deque::new(),
            stopping: false,
            ignored: 0,
        }
    }

    /// The gateway's external address, once learned.
    pub fn external_address(&self) -> Option<Ipv4Addr> {
        self.external
    }

    /// The control URL's host and the service type, once found.
    pub fn service(&self) -> Option<(SocketAddrV4, &'static str)> {
        self.control.as_ref().map(|c| (c.addr, c.service_type))
    }

    /// Answers and responses ignored: not from the gateway, not understood, late.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// Whether any mapping is granted now.
    pub fn is_mapped(&self) -> bool {
        self.slots.iter().any(|s| s.enabled && s.granted)
    }

    /// Whether the machine is searching (the host listens for answers then).
    pub fn is_searching(&self) -> bool {
        matches!(self.phase, Phase::Search { .. }) && !self.stopping
    }

    /// The mappings (TCP, then UDP), as the status shows them.
    pub fn mappings(&self) -> impl Iterator<Item = UpnpMappingStatus> + '_ {
        self.slots
            .iter()
            .filter(|s| s.enabled)
            .map(|s| UpnpMappingStatus {
                protocol: s.protocol,
                internal_port: s.internal_port,
                state: s.state,
                external_port: s.granted.then_some(s.external_port),
                lease: s.lease,
                expires: s.expires,
                last_error: s.last_error,
            })
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<UpnpEvent> {
        self.events.pop_front()
    }

    fn emit(&mut self, e: UpnpEvent) {
        let _ = self.events.push_back(e);
    }

    /// When [`UpnpMapper::poll_transmit`] next has work (None: nothing scheduled).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let flight = self.in_flight.map(|f| f.deadline);
        let ready = self.phase == Phase::Ready || self.stopping;
        let slots = self
            .slots
            .iter()
            .filter(|s| s.enabled && s.state != MapState::Done)
            .flat_map(|s| {
                let now =
                    (s.send_now && ready && self.in_flight.is_none()).then_some(Instant::ZERO);
                [now, s.due, s.expires]
            });
        let phase = match self.phase {
            Phase::Describe if self.in_flight.is_none() => Some(Instant::ZERO),
            Phase::Ready if self.want_address && self.in_flight.is_none() => Some(Instant::ZERO),
            _ => self.phase_due,
        };
        let phase = phase.filter(|_| !self.stopping);
        [flight, phase].into_iter().chain(slots).flatten().min()
    }

    /// Whether the shutdown is over: no request in flight, every deletion answered
    /// or given up.
    pub fn is_finished(&self) -> bool {
        self.stopping
            && self.in_flight.is_none()
            && self
                .slots
                .iter()
                .all(|s| !s.enabled || s.state == MapState::Done)
    }

    /// Starts the shutdown: every mapping granted or asked for is deleted; nothing
    /// else is asked from now on.
    pub fn shutdown(&mut self, _now: Instant) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.phase_due = None;
        let have_control = self.control.is_some();
        for s in &mut self.slots {
            if !s.enabled {
                continue;
            }
            s.due = None;
            if s.asked && have_control {
                s.state = MapState::Deleting;
                s.send_now = true;
            } else {
                s.state = MapState::Done;
                s.send_now = false;
            }
        }
    }

    /// Stops asking for `protocol`'s mapping without deleting it (another protocol
    /// holds the same mapping on the gateway, and a deletion would end that one).
    pub fn forget(&mut self, protocol: Protocol) {
        for s in &mut self.slots {
            if s.protocol == protocol {
                s.enabled = false;
            }
        }
    }

    fn fail(&mut self, i: usize, now: Instant, error: UpnpFailure) {
        let s = &mut self.slots[i];
        s.failures = s.failures.saturating_add(1);
        let mut retry_in = retry_after(s.failures);
        if let Some(left) = s.expires.filter(|e| *e > now).map(|e| e.since(now)) {
            retry_in = retry_in.min(Duration::from_millis((left.as_millis() / 2).max(1000)));
        }
        s.state = MapState::Failed;
        s.last_error = Some(error);
        s.send_now = false;
        s.conflicts = 0;
        s.due = Some(now + retry_in);
        let protocol = s.protocol;
        self.emit(UpnpEvent::Failed {
            protocol: Some(protocol),
            error,
            retry_in,
        });
    }

    /// Discovery (or the description) failed: searched again after the backoff.
    fn fail_discovery(&mut self, now: Instant, error: UpnpFailure) {
        self.search_failures = self.search_failures.saturating_add(1);
        let retry_in = retry_after(self.search_failures);
        self.phase = Phase::Idle;
        self.phase_due = Some(now + retry_in);
        self.control = None;
        self.emit(UpnpEvent::Failed {
            protocol: None,
            error,
            retry_in,
        });
    }

    /// The control URL stopped answering: search again when the mapping is retried.
    fn lose_control(&mut self, retry_at: Option<Instant>) {
        self.control = None;
        self.phase = Phase::Idle;
        self.phase_due = retry_at;
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(f) = self.in_flight.filter(|f| f.deadline <= now) {
            self.on_http_error(now, f, HttpError::Timeout);
        }
        if self.stopping {
            return;
        }
        for i in 0..self.slots.len() {
            let s = self.slots[i];
            if !s.enabled || s.state == MapState::Done {
                continue;
            }
            if s.expires.is_some_and(|e| e <= now) {
                let s = &mut self.slots[i];
                s.expires = None;
                s.granted = false;
                if s.state == MapState::Mapped {
                    s.state = MapState::Requesting;
                    s.send_now = true;
                    s.due = None;
                }
                let protocol = s.protocol;
                self.emit(UpnpEvent::Lost { protocol });
            }
            let s = &mut self.slots[i];
            if s.due.is_some_and(|d| d <= now)
                && matches!(s.state, MapState::Mapped | MapState::Failed)
            {
                s.due = None;
                s.state = MapState::Requesting;
                s.send_now = true;
                if i == 0 || !self.slots[0].enabled {
                    // The address is asked again with each renewal of the first mapping.
                    self.want_address = true;
                }
            }
        }
        // A mapping to ask for while the control URL is lost: search again when due.
        if self.phase == Phase::Idle && self.control.is_none() {
            let wanted = self
                .slots
                .iter()
                .any(|s| s.enabled && s.send_now && s.state == MapState::Requesting);
            if wanted && self.phase_due.is_none() {
                self.phase_due = Some(now);
            }
        }
        if self.phase_due.is_some_and(|d| d <= now) {
            match self.phase {
                Phase::Idle => {
                    self.phase = Phase::Search {
                        attempts: 0,
                        sent: 0,
                    };
                    self.phase_due = Some(now);
                }
                Phase::Search { attempts, .. } if attempts >= SEARCH_ATTEMPTS => {
                    self.fail_discovery(now, UpnpFailure::NoGateway);
                }
                _ => {}
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Runs the timers that are due, then writes the next thing to send into `out` (at
    /// least [`MAX_REQUEST`] bytes); None when nothing is to be sent now.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<UpnpTransmit> {
        self.handle_timeout(now);
        if self.in_flight.is_some() {
            return None;
        }
        if self.stopping {
            let i = self.slots.iter().position(|s| s.enabled && s.send_now)?;
            let s = &mut self.slots[i];
            s.send_now = false;
            let action = Action::DeletePortMapping {
                protocol: s.protocol,
                external_port: s.external_port,
            };
            return self.http_action(now, Op::Delete(i), action, out);
        }
        match self.phase {
            Phase::Search { attempts, sent } => {
                if self.phase_due.is_none_or(|d| d > now) || attempts >= SEARCH_ATTEMPTS {
                    return None;
                }
                let n = write_msearch(out, IGD_TYPES[usize::from(sent)], SEARCH_MX).ok()?;
                let sent = sent + 1;
                if usize::from(sent) == IGD_TYPES.len() {
                    let attempts = attempts + 1;
                    self.phase = Phase::Search { attempts, sent: 0 };
                    let wait = SEARCH_RTO.as_millis() << (attempts - 1).min(8);
                    self.phase_due = Some(now + Duration::from_millis(wait));
                } else {
                    self.phase = Phase::Search { attempts, sent };
                }
                Some(UpnpTransmit::Search { len: n })
            }
            Phase::Describe => {
                let (to, path) = self.location.as_ref()?;
                let to = *to;
                let n = write_get(out, to, ("", path)).ok()?;
                let id = self.next_id();
                self.in_flight = Some(InFlight {
                    id,
                    op: Op::Describe,
                    action: Action::GetExternalIpAddress,
                    deadline: now + HTTP_TIMEOUT,
                });
                Some(UpnpTransmit::Http { id, to, len: n })
            }
            Phase::Ready => {
                if self.want_address {
                    self.want_address = false;
                    return self.http_action(
                        now,
                        Op::ExternalAddress,
                        Action::GetExternalIpAddress,
                        out,
                    );
                }
                let i = self.slots.iter().position(|s| s.enabled && s.send_now)?;
                let s = &mut self.slots[i];
                s.send_now = false;
                s.asked = true;
                let action = Action::AddPortMapping {
                    protocol: s.protocol,
                    external_port: s.external_port,
                    internal_port: s.internal_port,
                    client: self.cfg.client,
                    lease: if s.permanent { 0 } else { self.cfg.lease },
                };
                self.http_action(now, Op::Map(i), action, out)
            }
            Phase::Idle => None,
        }
    }

    fn http_action(
        &mut self,
        now: Instant,
        op: Op,
        action: Action,
        out: &mut [u8],
    ) -> Option<UpnpTransmit> {
        let c = self.control.as_ref()?;
        let n = write_soap(out, c.addr, ("", &c.path), c.service_type, &action).ok()?;
        let to = c.addr;
        let id = self.next_id();
        self.in_flight = Some(InFlight {
            id,
            op,
            action,
            deadline: now + HTTP_TIMEOUT,
        });
        Some(UpnpTransmit::Http { id, to, len: n })
    }

    /// An SSDP answer that arrived on the search socket. Taken only while searching,
    /// from the gateway's address, for an Internet gateway, with a LOCATION on the
    /// gateway's address; anything else is ignored (counted in
    /// [`UpnpMapper::ignored`]).
    pub fn handle_ssdp(&mut self, _now: Instant, from: SocketAddr, data: &[u8]) {
        if !self.is_searching() || from.ip() != self.cfg.gateway {
            self.ignored += 1;
            return;
        }
        let Ok(a) = parse_ssdp(data) else {
            self.ignored += 1;
            return;
        };
        if *a.location.addr.ip() != self.cfg.gateway {
            self.ignored += 1;
            return;
        }
        let mut path = heapless::String::new();
        if path.push_str(a.location.path).is_err() {
            self.ignored += 1;
            return;
        }
        self.location = Some((a.location.addr, path));
        self.phase = Phase::Describe;
        self.phase_due = None;
    }

    /// The response to HTTP request `id` (the bytes read up to the close), or why
    /// there is none. A response to no request in flight is ignored.
    pub fn handle_http(&mut self, now: Instant, id: u64, response: Result<&mut [u8], HttpError>) {
        let Some(f) = self.in_flight.filter(|f| f.id == id) else {
            self.ignored += 1;
            return;
        };
        let b = match response {
            Ok(b) => b,
            Err(e) => return self.on_http_error(now, f, e),
        };
        self.in_flight = None;
        let parsed = parse_http_response(b);
        let (status, body) = match parsed {
            Ok((s, r)) => (s, &b[r]),
            Err(e) => return self.on_bad_answer(now, f, UpnpFailure::Parse(e)),
        };
        match f.op {
            Op::Describe => self.on_description(now, status, body),
            op => match parse_soap(status, body, &f.action) {
                Ok(reply) => self.on_reply(now, op, reply),
                Err(e) => self.on_bad_answer(now, f, UpnpFailure::Parse(e)),
            },
        }
    }

    fn on_description(&mut self, now: Instant, status: u16, body: &[u8]) {
        if self.stopping {
            return;
        }
        if status != 200 {
            return self.fail_discovery(now, UpnpFailure::Parse(UpnpParseError::Status(status)));
        }
        let service = match parse_description(body) {
            Ok(s) => s,
            Err(e) => return self.fail_discovery(now, UpnpFailure::Parse(e)),
        };
        let Some((loc_addr, loc_path)) = self.location.as_ref() else {
            return;
        };
        let base = match service.url_base {
            Some(u) => match parse_url(u) {
                Ok(u) => u,
                Err(e) => return self.fail_discovery(now, UpnpFailure::Parse(e)),
            },
            None => super::upnp::HttpUrl {
                addr: *loc_addr,
                path: loc_path,
            },
        };
        let (addr, prefix, rest) = match resolve_url(base, service.control_url) {
            Ok(r) => r,
            Err(e) => return self.fail_discovery(now, UpnpFailure::Parse(e)),
        };
        if *addr.ip() != self.cfg.gateway {
            return self.fail_discovery(now, UpnpFailure::ForeignUrl);
        }
        let mut path = heapless::String::new();
        if path.push_str(prefix).is_err() || path.push_str(rest).is_err() {
            return self.fail_discovery(now, UpnpFailure::Parse(UpnpParseError::BadUrl));
        }
        self.control = Some(Control {
            addr,
            path,
            service_type: service.service_type,
        });
        self.phase = Phase::Ready;
        self.phase_due = None;
        self.search_failures = 0;
        self.want_address = true;
        // Everything not held is asked for now; what is held is renewed at once (the
        // gateway may be a new one).
        for s in &mut self.slots {
            if s.enabled && s.state != MapState::Done {
                s.state = MapState::Requesting;
                s.send_now = true;
                s.due = None;
            }
        }
        self.emit(UpnpEvent::Found {
            control: addr,
            service_type: service.service_type,
        });
    }

    fn on_reply(&mut self, now: Instant, op: Op, reply: SoapReply) {
        match op {
            Op::Describe => {}
            Op::ExternalAddress => match reply {
                SoapReply::ExternalAddress(Some(a)) => {
                    if self.external != Some(a) {
                        self.external = Some(a);
                        self.emit(UpnpEvent::ExternalAddress(a));
                    }
                }
                SoapReply::Fault(c) => self.address_failed(UpnpFailure::Gateway(c)),
                _ => self.address_failed(UpnpFailure::Parse(UpnpParseError::BadSoap)),
            },
            Op::Delete(i) => {
                let s = &mut self.slots[i];
                s.state = MapState::Done;
                s.granted = false;
                s.expires = None;
                let confirmed = matches!(
                    reply,
                    SoapReply::Done | SoapReply::Fault(UpnpErrorCode::NO_SUCH_ENTRY)
                );
                let protocol = s.protocol;
                self.emit(UpnpEvent::Deleted {
                    protocol,
                    confirmed,
                });
            }
            Op::Map(i) => {
                if self.stopping {
                    // Answered after the shutdown began: deleted all the same.
                    return;
                }
                match reply {
                    SoapReply::Done => self.on_granted(now, i),
                    SoapReply::Fault(code) => self.on_refused(now, i, code),
                    SoapReply::ExternalAddress(_) => {
                        self.fail(i, now, UpnpFailure::Parse(UpnpParseError::BadSoap));
                    }
                }
            }
        }
    }

    fn address_failed(&mut self, error: UpnpFailure) {
        self.emit(UpnpEvent::Failed {
            protocol: None,
            error,
            retry_in: Duration::ZERO,
        });
    }

    fn on_granted(&mut self, now: Instant, i: usize) {
        let lease = if self.slots[i].permanent {
            0
        } else {
            self.cfg.lease
        };
        let s = &mut self.slots[i];
        let renewed = s.granted && s.expires.is_none_or(|e| e > now);
        s.state = MapState::Mapped;
        s.granted = true;
        s.lease = lease;
        s.failures = 0;
        s.conflicts = 0;
        s.last_error = None;
        if lease == 0 {
            s.expires = None;
            s.due = Some(now + PERMANENT_REFRESH);
        } else {
            s.expires = Some(now + Duration::from_secs(u64::from(lease)));
            s.due = Some(now + Duration::from_millis((u64::from(lease) * 500).max(1000)));
        }
        let (protocol, internal_port, external_port) =
            (s.protocol, s.internal_port, s.external_port);
        self.emit(UpnpEvent::Mapped {
            protocol,
            internal_port,
            external_port,
            lease,
            renewed,
        });
    }

    fn on_refused(&mut self, now: Instant, i: usize, code: UpnpErrorCode) {
        let s = &mut self.slots[i];
        match code {
            UpnpErrorCode::CONFLICT if s.conflicts < MAX_CONFLICTS && !s.granted => {
                s.conflicts += 1;
                // Another port, above the well-known and registered-by-many range.
                s.external_port = 1025 + self.rng.below(65535 - 1025 + 1) as u16;
                s.send_now = true;
            }
            UpnpErrorCode::ONLY_PERMANENT_LEASES if !s.permanent => {
                s.permanent = true;
                s.send_now = true;
            }
            UpnpErrorCode::SAME_PORT_VALUES_REQUIRED if s.external_port != s.internal_port => {
                s.external_port = s.internal_port;
                s.send_now = true;
            }
            _ => {
                // A grant still held is kept until it lapses; otherwise the next try
                // asks for the internal port again.
                if !s.granted {
                    s.external_port = s.internal_port;
                }
                self.fail(i, now, UpnpFailure::Gateway(code));
            }
        }
    }

    /// A response that came but was not understood: the operation failed.
    fn on_bad_answer(&mut self, now: Instant, f: InFlight, error: UpnpFailure) {
        match f.op {
            Op::Describe => {
                if !self.stopping {
                    self.fail_discovery(now, error);
                }
            }
            Op::ExternalAddress => self.address_failed(error),
            Op::Map(i) => {
                if !self.stopping {
                    self.fail(i, now, error);
                }
            }
            Op::Delete(i) => self.deleted_unconfirmed(i),
        }
    }

    fn deleted_unconfirmed(&mut self, i: usize) {
        let s = &mut self.slots[i];
        s.state = MapState::Done;
        s.granted = false;
        s.expires = None;
        let protocol = s.protocol;
        self.emit(UpnpEvent::Deleted {
            protocol,
            confirmed: false,
        });
    }

    /// No response: the gateway's web server is gone or moved.
    fn on_http_error(&mut self, now: Instant, f: InFlight, e: HttpError) {
        self.in_flight = None;
        let error = UpnpFailure::Http(e);
        match f.op {
            Op::Describe => {
                if !self.stopping {
                    self.fail_discovery(now, error);
                }
            }
            Op::ExternalAddress => {
                self.address_failed(error);
                if !self.stopping {
                    self.lose_control(Some(now + retry_after(1)));
                }
            }
            Op::Map(i) => {
                if !self.stopping {
                    self.fail(i, now, error);
                    let due = self.slots[i].due;
                    self.lose_control(due);
                }
            }
            Op::Delete(i) => self.deleted_unconfirmed(i),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    const GW: Ipv4Addr = Ipv4Addr::new(10, 78, 1, 1);
    const ME: Ipv4Addr = Ipv4Addr::new(10, 78, 1, 2);
    const SSDP: &[u8] = include_bytes!("testdata/miniupnpd_ssdp1.http");
    const DESC: &[u8] = include_bytes!("testdata/miniupnpd_desc.http");
    const EXTIP: &[u8] = include_bytes!("testdata/miniupnpd_extip.http");
    const ADD: &[u8] = include_bytes!("testdata/miniupnpd_add.http");
    const DEL: &[u8] = include_bytes!("testdata/miniupnpd_del.http");
    const E718: &[u8] = include_bytes!("testdata/miniupnpd_718.http");

    fn cfg() -> UpnpConfig {
        UpnpConfig {
            gateway: GW,
            client: ME,
            tcp_port: Some(6881),
            udp_port: Some(6881),
            lease: 120,
        }
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn gw_ssdp() -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(GW, 1900))
    }

    #[derive(Debug)]
    enum Sent {
        Search(String),
        Http(u64, SocketAddrV4, String),
    }

    fn sends(m: &mut UpnpMapper, now: Instant) -> Vec<Sent> {
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_REQUEST];
        while let Some(x) = m.poll_transmit(now, &mut buf) {
            match x {
                UpnpTransmit::Search { len } => {
                    out.push(Sent::Search(
                        String::from_utf8_lossy(&buf[..len]).into_owned(),
                    ));
                }
                UpnpTransmit::Http { id, to, len } => {
                    out.push(Sent::Http(
                        id,
                        to,
                        String::from_utf8_lossy(&buf[..len]).into_owned(),
                    ));
                }
            }
        }
        out
    }

    fn events(m: &mut UpnpMapper) -> Vec<UpnpEvent> {
        core::iter::from_fn(|| m.poll_event()).collect()
    }

    fn http(s: &[Sent]) -> (u64, &str) {
        match s {
            [Sent::Http(id, to, r)] => {
                assert_eq!(
                    *to,
                    "10.78.1.1:42951".parse().expect("addr"),
                    "to the gateway"
                );
                (*id, r.as_str())
            }
            _ => panic!("one HTTP request expected: {s:?}"),
        }
    }

    fn answer(m: &mut UpnpMapper, now: Instant, id: u64, bytes: &[u8]) {
        let mut b = bytes.to_vec();
        m.handle_http(now, id, Ok(&mut b));
    }

    /// Searches, finds miniupnpd, reads its description: ready to map.
    fn found(m: &mut UpnpMapper) -> u64 {
        let s = sends(m, t(0));
        assert_eq!(s.len(), 2, "a search per device type");
        m.handle_ssdp(t(10), gw_ssdp(), SSDP);
        let s = sends(m, t(10));
        let (id, req) = http(&s);
        assert!(req.starts_with("GET /rootDesc.xml HTTP/1.1\r\nHost: 10.78.1.1:42951\r\n"));
        answer(m, t(20), id, DESC);
        assert_eq!(
            events(m),
            [UpnpEvent::Found {
                control: "10.78.1.1:42951".parse().expect("addr"),
                service_type: SERVICE_TYPES[0]
            }]
        );
        20
    }

    #[test]
    fn discovers_maps_both_ports_learns_the_address_renews_and_deletes() {
        let mut m = UpnpMapper::new(cfg(), 1);
        let now = found(&mut m);
        let s = sends(&mut m, t(now));
        let (id, req) = http(&s);
        assert!(req.contains("#GetExternalIPAddress\""));
        assert!(req.starts_with("POST /ctl/IPConn HTTP/1.1"));
        answer(&mut m, t(30), id, EXTIP);
        assert_eq!(
            events(&mut m),
            [UpnpEvent::ExternalAddress(Ipv4Addr::new(44, 2, 1, 1))]
        );
        for proto in ["TCP", "UDP"] {
            let s = sends(&mut m, t(30));
            let (id, req) = http(&s);
            assert!(req.contains(&std::format!("<NewProtocol>{proto}</NewProtocol>")));
            assert!(req.contains("<NewInternalClient>10.78.1.2</NewInternalClient>"));
            assert!(req.contains("<NewLeaseDuration>120</NewLeaseDuration>"));
            answer(&mut m, t(40), id, ADD);
        }
        let ev = events(&mut m);
        assert!(matches!(
            ev[..],
            [
                UpnpEvent::Mapped {
                    protocol: Protocol::Tcp,
                    external_port: 6881,
                    lease: 120,
                    renewed: false,
                    ..
                },
                UpnpEvent::Mapped {
                    protocol: Protocol::Udp,
                    ..
                }
            ]
        ));
        assert!(m.is_mapped());
        // Renewal at half the lease (with the address asked again).
        assert_eq!(m.poll_timeout(), Some(t(40 + 60_000)));
        assert!(sends(&mut m, t(59_000)).is_empty());
        let s = sends(&mut m, t(60_040));
        let (id, req) = http(&s);
        assert!(req.contains("#GetExternalIPAddress\""));
        answer(&mut m, t(60_050), id, EXTIP);
        let s = sends(&mut m, t(60_050));
        let (id, req) = http(&s);
        assert!(req.contains("AddPortMapping"));
        answer(&mut m, t(60_060), id, ADD);
        assert!(matches!(
            events(&mut m)[..],
            [UpnpEvent::Mapped { renewed: true, .. }]
        ));
        // Shutdown: both deleted, one at a time.
        m.shutdown(t(70_000));
        assert!(!m.is_finished());
        let mut deleted = Vec::new();
        for _ in 0..2 {
            let s = sends(&mut m, t(70_000));
            let (id, req) = http(&s);
            assert!(req.contains("#DeletePortMapping\""));
            assert!(req.contains("<NewExternalPort>6881</NewExternalPort>"));
            answer(&mut m, t(70_010), id, DEL);
            deleted.extend(events(&mut m));
        }
        assert_eq!(
            deleted,
            [
                UpnpEvent::Deleted {
                    protocol: Protocol::Tcp,
                    confirmed: true
                },
                UpnpEvent::Deleted {
                    protocol: Protocol::Udp,
                    confirmed: true
                }
            ]
        );
        assert!(m.is_finished());
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn searches_three_times_then_fails_and_backs_off() {
        let mut m = UpnpMapper::new(cfg(), 2);
        let mut at = Vec::new();
        let mut now = 0;
        while now < 10_000 {
            for s in sends(&mut m, t(now)) {
                assert!(
                    matches!(s, Sent::Search(ref r) if r.starts_with("M-SEARCH * HTTP/1.1\r\n"))
                );
                at.push(now);
            }
            if !events(&mut m).is_empty() {
                break;
            }
            now = m.poll_timeout().expect("a timer").as_millis();
        }
        assert_eq!(at, [0, 0, 1000, 1000, 3000, 3000]);
        assert_eq!(now, 7000);
        assert_eq!(m.poll_timeout(), Some(t(7000 + 60_000)));
        // Not searching now: an answer is not taken.
        m.handle_ssdp(t(8000), gw_ssdp(), SSDP);
        assert_eq!(m.ignored(), 1);
        assert_eq!(sends(&mut m, t(67_000)).len(), 2);
    }

    #[test]
    fn only_the_gateway_is_heard() {
        let mut m = UpnpMapper::new(cfg(), 3);
        sends(&mut m, t(0));
        let other = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 78, 1, 66), 1900));
        m.handle_ssdp(t(1), other, SSDP);
        // From the gateway, but sending us to another host.
        let elsewhere = String::from_utf8_lossy(SSDP).replace("10.78.1.1:42951", "10.78.1.66:80");
        m.handle_ssdp(t(1), gw_ssdp(), elsewhere.as_bytes());
        m.handle_ssdp(t(1), gw_ssdp(), b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(m.ignored(), 3);
        assert!(m.is_searching());
        // A description whose control URL is on another host.
        m.handle_ssdp(t(2), gw_ssdp(), SSDP);
        let s = sends(&mut m, t(2));
        let (id, _) = http(&s);
        let foreign = String::from_utf8_lossy(DESC).replace(
            "<controlURL>/ctl/IPConn</controlURL>",
            "<controlURL>http://10.9.9.9:80/ctl/IPConn</controlURL>",
        );
        // The Content-Length still fits: the body grew; fix it up.
        let (head, body) = foreign.split_once("\r\n\r\n").expect("head");
        let head = head.replace(
            "Content-Length: 3090",
            &std::format!("Content-Length: {}", body.len()),
        );
        answer(
            &mut m,
            t(3),
            id,
            std::format!("{head}\r\n\r\n{body}").as_bytes(),
        );
        assert!(matches!(
            events(&mut m)[..],
            [UpnpEvent::Failed {
                protocol: None,
                error: UpnpFailure::ForeignUrl,
                ..
            }]
        ));
        // A response to a request not in flight.
        answer(&mut m, t(4), 999, ADD);
        assert_eq!(m.ignored(), 4);
    }

    #[test]
    fn conflict_tries_another_port_and_725_asks_for_a_permanent_lease() {
        let mut m = UpnpMapper::new(
            UpnpConfig {
                udp_port: None,
                ..cfg()
            },
            4,
        );
        found(&mut m);
        let s = sends(&mut m, t(20));
        let (id, _) = http(&s);
        answer(&mut m, t(21), id, EXTIP);
        events(&mut m);
        let s = sends(&mut m, t(21));
        let (id, _) = http(&s);
        answer(&mut m, t(22), id, E718);
        assert!(events(&mut m).is_empty(), "not a failure yet");
        let s = sends(&mut m, t(22));
        let (id, req) = http(&s);
        assert!(
            !req.contains("<NewExternalPort>6881<"),
            "another port: {req}"
        );
        assert!(req.contains("<NewInternalPort>6881<"));
        let e725 = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 111\r\n\r\n<s:Envelope><s:Body><s:Fault><detail><UPnPError><errorCode>725</errorCode></UPnPError></detail></s:Fault></s:Body></s:Envelope>";
        let mut e = e725.to_vec();
        let body_len = e.len() - e.windows(4).position(|w| w == b"\r\n\r\n").expect("head") - 4;
        let fixed = String::from_utf8_lossy(&e).replace(
            "Content-Length: 111",
            &std::format!("Content-Length: {body_len}"),
        );
        e = fixed.into_bytes();
        answer(&mut m, t(23), id, &e);
        let s = sends(&mut m, t(23));
        let (id, req) = http(&s);
        assert!(req.contains("<NewLeaseDuration>0</NewLeaseDuration>"));
        answer(&mut m, t(24), id, ADD);
        assert!(matches!(
            events(&mut m)[..],
            [UpnpEvent::Mapped { lease: 0, .. }]
        ));
        let st = m.mappings().next().expect("a mapping");
        assert_eq!((st.state, st.expires), (MapState::Mapped, None));
        assert_eq!(m.poll_timeout(), Some(t(24) + PERMANENT_REFRESH));
        // Three conflicts in a row: a failure.
        let mut m = UpnpMapper::new(
            UpnpConfig {
                udp_port: None,
                ..cfg()
            },
            5,
        );
        found(&mut m);
        let s = sends(&mut m, t(20));
        let (id, _) = http(&s);
        answer(&mut m, t(21), id, EXTIP);
        events(&mut m);
        for _ in 0..=MAX_CONFLICTS {
            let s = sends(&mut m, t(21));
            let (id, _) = http(&s);
            answer(&mut m, t(22), id, E718);
        }
        assert_eq!(
            events(&mut m),
            [UpnpEvent::Failed {
                protocol: Some(Protocol::Tcp),
                error: UpnpFailure::Gateway(UpnpErrorCode::CONFLICT),
                retry_in: RETRY_MIN
            }]
        );
    }

    #[test]
    fn a_lost_web_server_is_searched_for_again_and_timeouts_are_bounded() {
        let mut m = UpnpMapper::new(
            UpnpConfig {
                udp_port: None,
                ..cfg()
            },
            6,
        );
        found(&mut m);
        let s = sends(&mut m, t(20));
        let (id, _) = http(&s);
        answer(&mut m, t(21), id, EXTIP);
        events(&mut m);
        let s = sends(&mut m, t(21));
        let (_id, _) = http(&s);
        // No response: failed at the timeout.
        assert_eq!(m.poll_timeout(), Some(t(21) + HTTP_TIMEOUT));
        assert!(sends(&mut m, t(21) + HTTP_TIMEOUT).is_empty());
        assert!(matches!(
            events(&mut m)[..],
            [UpnpEvent::Failed {
                protocol: Some(Protocol::Tcp),
                error: UpnpFailure::Http(HttpError::Timeout),
                ..
            }]
        ));
        // At the retry: searched for again.
        let at = m.poll_timeout().expect("a timer");
        assert_eq!(at, t(21) + HTTP_TIMEOUT + RETRY_MIN);
        let s = sends(&mut m, at);
        assert!(matches!(s[..], [Sent::Search(_), Sent::Search(_)]));
    }

    #[test]
    fn shutdown_waits_for_the_request_in_flight_then_deletes() {
        let mut m = UpnpMapper::new(
            UpnpConfig {
                udp_port: None,
                ..cfg()
            },
            7,
        );
        found(&mut m);
        let s = sends(&mut m, t(20));
        let (id, _) = http(&s);
        answer(&mut m, t(21), id, EXTIP);
        let s = sends(&mut m, t(21));
        let (id, _) = http(&s);
        m.shutdown(t(22));
        assert!(sends(&mut m, t(22)).is_empty());
        answer(&mut m, t(23), id, ADD);
        let s = sends(&mut m, t(23));
        let (id, req) = http(&s);
        assert!(req.contains("DeletePortMapping"));
        m.handle_http(t(24), id, Err(HttpError::Connect));
        assert!(events(&mut m).contains(&UpnpEvent::Deleted {
            protocol: Protocol::Tcp,
            confirmed: false
        }));
        assert!(m.is_finished());
        // Nothing asked: finished at once.
        let mut m = UpnpMapper::new(cfg(), 8);
        sends(&mut m, t(0));
        m.shutdown(t(1));
        assert!(m.is_finished());
        assert!(sends(&mut m, t(1)).is_empty());
    }

    #[test]
    fn garbage_anywhere_never_panics() {
        let inputs: [&[u8]; 6] = [
            b"",
            b"HTTP/1.1 200 OK\r\n\r\n",
            SSDP,
            DESC,
            E718,
            b"\xff\x00<<>>",
        ];
        for x in inputs {
            let mut m = UpnpMapper::new(cfg(), 9);
            sends(&mut m, t(0));
            m.handle_ssdp(t(1), gw_ssdp(), x);
            m.handle_ssdp(t(1), gw_ssdp(), SSDP);
            for n in 0..50 {
                let s = sends(&mut m, t(n * 1000));
                for s in s {
                    if let Sent::Http(id, _, _) = s {
                        answer(&mut m, t(n * 1000), id, x);
                    }
                }
                events(&mut m);
            }
        }
    }
}
