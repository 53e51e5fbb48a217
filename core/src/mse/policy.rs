//! The encryption policy: which connections run the MSE handshake, what they offer and
//! accept, what a failed attempt leads to, and the check of the torrent a peer names.
//!
//! [`Encryption`] is the setting (the names and meanings follow libtorrent's and
//! Transmission's). [`Link`] applies it to one connection, between the socket and the
//! session: a host feeds it what it reads ([`Link::handle_recv`]), what it is about to
//! send ([`Link::encrypt`]), the TCP connect ([`Link::handle_connected`]), the clock
//! ([`Link::handle_timeout`]) and the end of the connection ([`Link::close`]); the link
//! answers with [`Up`] events (handshake bytes to send, the handshake's completion,
//! plain BitTorrent bytes for the session) and a [`Close`] verdict that says what the
//! session is told and whether to dial again in plain text. The host moves bytes, arms
//! the timer of [`Link::poll_timeout`] and dials when told; it decides nothing.
//!
//! ```text
//! accepted:  Sniff --"\x13BitTorrent protocol"--> Plain        (required: refused)
//!              '----anything else---> Handshake --> Crypto/Plain (disabled: refused)
//!            then the first 48 bytes of the BitTorrent handshake are held until its
//!            info-hash is checked: a torrent of ours (plain), the one named by SKEY (MSE)
//!
//! dialed:    Plain                                     (disabled, allowed; a redial)
//!            Handshake --done--> Crypto/Plain          (preferred, required)
//!                |-- closed, timed out, garbage; preferred --> Close::RedialPlain (once)
//!                '-- closed, timed out, garbage; required  --> Close::ConnectFailed
//! ```
//!
//! The redial is what libtorrent and Transmission do for a peer that does not speak
//! MSE: the link made for it by [`Link::outgoing_plain`] never asks for another one, so
//! an address costs at most one extra connection per dial. The handshake timeout
//! ([`HANDSHAKE_TIMEOUT`], 10 s as in libtorrent) covers the TCP connect and the
//! handshake of a dialed connection; an accepted one is timed by the session's
//! incoming handshake timeout, which covers both handshakes together.
//!
//! Sniffing follows the spec's advice: a plain handshake starts with byte 19 and the
//! protocol string, an MSE one with a random public key, so the first byte that differs
//! from `\x13BitTorrent protocol` makes it MSE. The link holds at most 48 bytes of the
//! peer's BitTorrent handshake (the info-hash ends at byte 48) and delivers them only
//! once the check passed, so a session never sees a handshake the policy refuses.
//!
//! The link needs no allocator: its handshake (about 2 KiB for a few round trips) and
//! its RC4 filter (about 0.5 KiB for the connection's life) live in the storage the
//! host picks, `Link<Box<Handshake>, Box<StreamCrypto>>` for a host with a heap, the
//! plain types inline otherwise.

use core::fmt;
use core::str::FromStr;

use super::{Handshake, Method, MseError, StreamCrypto, CRYPTO_PLAINTEXT, CRYPTO_RC4, PRIVATE_LEN};
use crate::ids::InfoHash;
use crate::time::{Duration, Instant};

/// How long a dialed connection has for its TCP connect and encryption handshake
/// before it counts as failed (and, under [`Encryption::Preferred`], is dialed again
/// in plain text). libtorrent gives its handshakes 10 s too.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The start of every plain BitTorrent handshake (BEP 3).
const PLAIN_PREFIX: &[u8; 20] = b"\x13BitTorrent protocol";
/// A BitTorrent handshake's bytes up to the end of its info-hash (bytes 28..48).
const HEAD_LEN: usize = 48;

/// When connections are encrypted (the names and defaults follow libtorrent's and
/// Transmission's settings).
///
/// | policy | dials | accepts plain | accepts MSE | after MSE |
/// |---|---|---|---|---|
/// | `Disabled` | plain | yes | no | - |
/// | `Allowed` | plain | yes | yes | plain text or RC4, plain text preferred |
/// | `Preferred` | MSE, then plain once if it fails | yes | yes | plain text or RC4, plain text preferred |
/// | `Required` | MSE, never plain | no | yes | RC4 only |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Encryption {
    /// Never: plain BitTorrent only; encrypted peers are refused.
    Disabled,
    /// Accept encrypted peers, dial in plain text.
    Allowed,
    /// Dial with an encryption handshake first (offering plain text or RC4 after it)
    /// and fall back to plain text when the peer does not answer it; accept both.
    /// Plain text is selected whenever the other side allows it: it costs nothing.
    #[default]
    Preferred,
    /// RC4 on every connection; plain peers are refused.
    Required,
}

impl Encryption {
    /// Every policy, from the least to the most encryption.
    pub const ALL: [Self; 4] = [
        Self::Disabled,
        Self::Allowed,
        Self::Preferred,
        Self::Required,
    ];

    /// What an outgoing handshake offers ([`CRYPTO_PLAINTEXT`], [`CRYPTO_RC4`]);
    /// `None`: dial in plain text.
    pub const fn provide(self) -> Option<u32> {
        match self {
            Self::Disabled | Self::Allowed => None,
            Self::Preferred => Some(CRYPTO_PLAINTEXT | CRYPTO_RC4),
            Self::Required => Some(CRYPTO_RC4),
        }
    }

    /// What an incoming handshake may select; `None`: no MSE accepted.
    pub const fn accept(self) -> Option<u32> {
        match self {
            Self::Disabled => None,
            Self::Allowed | Self::Preferred => Some(CRYPTO_PLAINTEXT | CRYPTO_RC4),
            Self::Required => Some(CRYPTO_RC4),
        }
    }

    /// True when a plain BitTorrent handshake is accepted.
    pub const fn accepts_plain(self) -> bool {
        !matches!(self, Self::Required)
    }

    /// The setting's name: `disabled`, `allowed`, `preferred` or `required`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Allowed => "allowed",
            Self::Preferred => "preferred",
            Self::Required => "required",
        }
    }
}

impl fmt::Display for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of [`Encryption`]'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownEncryption;

impl fmt::Display for UnknownEncryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown encryption mode (disabled, allowed, preferred, required)")
    }
}

impl core::error::Error for UnknownEncryption {}

impl FromStr for Encryption {
    type Err = UnknownEncryption;
    fn from_str(s: &str) -> Result<Self, UnknownEncryption> {
        Self::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or(UnknownEncryption)
    }
}

/// The secret material of one handshake: the DH private key and the seed of the pads.
/// The host draws both from a secret random source, fresh for each connection; the
/// pads go out in the clear, so their seed must tell nothing about the key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    /// The Diffie-Hellman private key.
    pub private: [u8; PRIVATE_LEN],
    /// Seeds the pad lengths and contents.
    pub pad_seed: u64,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// The torrents a link accepts connections for.
pub trait Torrents {
    /// The torrent whose `SHA1("req2", info_hash)` ([`super::req2_hash`]) is `req2`:
    /// how an MSE handshake names its torrent (SKEY).
    fn find_req2(&self, req2: &[u8; 20]) -> Option<InfoHash>;
    /// True when `info_hash` is a torrent of ours.
    fn contains(&self, info_hash: &InfoHash) -> bool;
}

impl Torrents for [InfoHash] {
    fn find_req2(&self, req2: &[u8; 20]) -> Option<InfoHash> {
        self.iter()
            .copied()
            .find(|ih| super::req2_hash(ih) == *req2)
    }
    fn contains(&self, info_hash: &InfoHash) -> bool {
        self.iter().any(|ih| ih == info_hash)
    }
}

/// Why a link refused its connection. Each is the remote peer's doing; the host closes
/// the connection and asks [`Link::close`] what follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// A plain BitTorrent handshake while encryption is required.
    PlainRefused,
    /// An encryption handshake while encryption is disabled.
    EncryptionRefused,
    /// The plain BitTorrent handshake names no torrent of ours.
    UnknownTorrent,
    /// The BitTorrent handshake after an encryption handshake names another torrent
    /// than the one the encryption handshake named.
    OtherTorrent,
    /// The encryption handshake failed; [`MseError::UnknownTorrent`] when it named no
    /// torrent of ours.
    Mse(MseError),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PlainRefused => f.write_str("plain connection refused: encryption required"),
            Self::EncryptionRefused => {
                f.write_str("encrypted connection refused: encryption disabled")
            }
            Self::UnknownTorrent => f.write_str("handshake for a torrent we do not have"),
            Self::OtherTorrent => {
                f.write_str("handshake for another torrent than the encryption handshake named")
            }
            Self::Mse(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for LinkError {}

/// What a host does once a connection ended, as [`Link::close`] and
/// [`Link::handle_timeout`] decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Close {
    /// Dial the same address again, in plain text ([`Link::outgoing_plain`]), for the
    /// same connection: the session never learnt of this attempt.
    RedialPlain,
    /// Tell the session the dial failed: it never learnt the connection was open.
    ConnectFailed,
    /// Tell the session the connection closed.
    Disconnected,
}

/// What a link hands up, in order: the host sends the [`Up::Transmit`] bytes before
/// anything the session sends, and passes [`Up::Data`] to the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Up<'a> {
    /// Handshake bytes to send to the peer.
    Transmit(&'a [u8]),
    /// An encryption handshake completed (`outgoing`: on a connection we dialed, which
    /// the session learns of now, before any of its bytes).
    Established {
        /// The connection was dialed.
        outgoing: bool,
        /// Plain text or RC4 from here on.
        method: Method,
    },
    /// Plain BitTorrent bytes for the session.
    Data(&'a [u8]),
}

enum State<H, C> {
    /// Accepted, not yet known to be plain or MSE: the bytes so far are in `head`.
    Sniff,
    /// An MSE handshake in progress.
    Handshake(H),
    /// Established with MSE; RC4 in at least one direction.
    Crypto(C),
    /// Plain BitTorrent (from the start, or once MSE passed to plain text).
    Plain,
    /// Over; what the host was told.
    Closed(Close),
}

/// Incoming: what the BitTorrent handshake must name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Checked, or a dialed connection (the session checks what it dialed for).
    Done,
    /// A torrent of ours (a plain connection).
    Ours,
    /// The torrent the encryption handshake named.
    Named(InfoHash),
}

/// One connection's encryption layer under an [`Encryption`] policy (see the module
/// docs). `H` and `C` hold the handshake and the RC4 filter: `Box<Handshake>` and
/// `Box<StreamCrypto>` keep the link small where there is a heap.
///
/// A host calls, for an accepted connection: [`Link::incoming`], then
/// [`Link::handle_recv`] for every read; for a dialed one: [`Link::outgoing`], sends
/// what [`Link::poll_transmit`] gives, tells the session of the connection when
/// [`Link::handle_connected`] (or [`Up::Established`]) says so, and calls
/// [`Link::handle_timeout`] once [`Link::poll_timeout`] is reached. The session's bytes
/// go out only while [`Link::negotiating`] is false, through [`Link::encrypt`]. When
/// the connection ends for any reason but the session's own close, [`Link::close`]
/// says what to tell the session.
pub struct Link<H = Handshake, C = StreamCrypto> {
    policy: Encryption,
    outgoing: bool,
    /// Dialed: the TCP connect is not done yet.
    connecting: bool,
    /// Dialed under [`Encryption::Preferred`] with MSE: a failed handshake is dialed
    /// again in plain text.
    may_redial: bool,
    state: State<H, C>,
    /// Dialed with MSE: the connect and the handshake must be done by then.
    deadline: Option<Instant>,
    /// Accepted: the keys of the handshake, until one starts.
    keys: Option<Keys>,
    check: Check,
    /// The first bytes of the peer's BitTorrent handshake, held until checked (or
    /// sniffed: the first 20).
    head: [u8; HEAD_LEN],
    head_len: u8,
}

impl<H, C> fmt::Debug for Link<H, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Sniff => "Sniff",
            State::Handshake(_) => "Handshake",
            State::Crypto(_) => "Crypto",
            State::Plain => "Plain",
            State::Closed(_) => "Closed",
        };
        f.debug_struct("Link")
            .field("policy", &self.policy)
            .field("outgoing", &self.outgoing)
            .field("state", &state)
            .finish()
    }
}

impl<H, C> Link<H, C>
where
    H: AsMut<Handshake> + From<Handshake>,
    C: AsMut<StreamCrypto> + From<StreamCrypto>,
{
    fn new(policy: Encryption, outgoing: bool, state: State<H, C>) -> Self {
        Self {
            policy,
            outgoing,
            connecting: outgoing,
            may_redial: false,
            state,
            deadline: None,
            keys: None,
            check: Check::Done,
            head: [0; HEAD_LEN],
            head_len: 0,
        }
    }

    /// The link of an accepted connection. `keys` serve the encryption handshake if
    /// the peer starts one.
    pub fn incoming(policy: Encryption, keys: Keys) -> Self {
        let mut l = Self::new(policy, false, State::Sniff);
        l.keys = Some(keys);
        l
    }

    /// The link of a connection dialed at `now` to a peer of `info_hash`: an
    /// encryption handshake when the policy dials with one (its first message is
    /// queued at once: [`Link::poll_transmit`]), plain text otherwise.
    pub fn outgoing(policy: Encryption, info_hash: InfoHash, keys: Keys, now: Instant) -> Self {
        match policy.provide() {
            Some(provide) => {
                let h = Handshake::initiator(info_hash, provide, keys.private, keys.pad_seed);
                let mut l = Self::new(policy, true, State::Handshake(H::from(h)));
                l.deadline = Some(now + HANDSHAKE_TIMEOUT);
                l.may_redial = policy == Encryption::Preferred;
                l
            }
            None => Self::new(policy, true, State::Plain),
        }
    }

    /// The link of a dialed connection in plain text whatever the policy: the redial
    /// that [`Close::RedialPlain`] asks for. It never asks for another one.
    pub fn outgoing_plain(policy: Encryption) -> Self {
        Self::new(policy, true, State::Plain)
    }

    /// The policy this link applies.
    pub fn policy(&self) -> Encryption {
        self.policy
    }

    /// True for a connection we dialed.
    pub fn is_outgoing(&self) -> bool {
        self.outgoing
    }

    /// True while the session must not send yet: the connection is being sniffed or
    /// is in its encryption handshake.
    pub fn negotiating(&self) -> bool {
        matches!(self.state, State::Sniff | State::Handshake(_))
    }

    /// When [`Link::handle_timeout`] is due: a dialed connection's handshake deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Copies handshake bytes to send into `buf`; returns how many (0: none). Only the
    /// first message of a dialed connection waits here; replies come as
    /// [`Up::Transmit`].
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> usize {
        match &mut self.state {
            State::Handshake(h) => h.as_mut().poll_transmit(buf),
            _ => 0,
        }
    }

    /// A dialed connection's TCP connect completed. True when the session learns of
    /// the connection now (plain text); false when it will on [`Up::Established`].
    #[must_use]
    pub fn handle_connected(&mut self) -> bool {
        self.connecting = false;
        self.outgoing && matches!(self.state, State::Plain)
    }

    /// The clock reached `now`: past the handshake deadline, the connection has
    /// failed, and the verdict is what [`Link::close`] would say; the host closes it.
    #[must_use]
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Close> {
        match self.deadline {
            Some(d) if d <= now => Some(self.close()),
            _ => None,
        }
    }

    /// The connection ended (the peer closed it, a read failed, the link refused it,
    /// or its deadline passed): what the host does next. Idempotent.
    pub fn close(&mut self) -> Close {
        let verdict = match &self.state {
            State::Closed(v) => *v,
            _ if !self.outgoing => Close::Disconnected,
            _ if self.connecting => Close::ConnectFailed,
            State::Handshake(_) if self.may_redial => Close::RedialPlain,
            State::Handshake(_) => Close::ConnectFailed,
            _ => Close::Disconnected,
        };
        self.state = State::Closed(verdict);
        self.deadline = None;
        self.keys = None;
        verdict
    }

    /// Whether the link is plain now: no encryption handshake under way or to come,
    /// and nothing to encrypt (also an encrypted handshake that chose plaintext).
    pub fn is_plain(&self) -> bool {
        matches!(self.state, State::Plain)
    }

    /// Encrypts the session's bytes about to be sent, in place.
    pub fn encrypt(&mut self, buf: &mut [u8]) {
        if let State::Crypto(c) = &mut self.state {
            let c = c.as_mut();
            c.encrypt(buf);
            if c.is_passthrough() {
                self.state = State::Plain;
            }
        }
    }

    /// Takes bytes received (`data`, decrypted in place as needed) and hands up, in
    /// order, the handshake bytes to send, the handshake's completion and the plain
    /// BitTorrent bytes for the session. `torrents` are the torrents an accepted
    /// connection may name. An error refuses the connection: the host closes it.
    pub fn handle_recv<T: Torrents + ?Sized>(
        &mut self,
        data: &mut [u8],
        torrents: &T,
        up: &mut dyn FnMut(Up<'_>),
    ) -> Result<(), LinkError> {
        let mut data = data;
        loop {
            match &mut self.state {
                State::Closed(_) => return Ok(()),
                State::Plain => return self.deliver(data, torrents, up),
                State::Crypto(c) => {
                    let c = c.as_mut();
                    c.decrypt(data);
                    if c.is_passthrough() {
                        self.state = State::Plain;
                    }
                    return self.deliver(data, torrents, up);
                }
                State::Sniff => match self.sniff(data)? {
                    Some(used) => data = &mut data[used..],
                    None => return Ok(()),
                },
                State::Handshake(h) => {
                    let h = h.as_mut();
                    let used = h
                        .handle_recv(data, &mut |r| torrents.find_req2(r))
                        .map_err(LinkError::Mse)?;
                    // Replies (steps 2 and 4) go out before any session byte.
                    let mut buf = [0u8; 512];
                    loop {
                        let n = h.poll_transmit(&mut buf);
                        if n == 0 {
                            break;
                        }
                        up(Up::Transmit(&buf[..n]));
                    }
                    if !h.is_done() {
                        return Ok(());
                    }
                    let named = h.info_hash();
                    let Some((method, crypto)) = h.finish() else {
                        return Ok(());
                    };
                    self.deadline = None;
                    if !self.outgoing {
                        // Always set: a responder's handshake is done only once its
                        // SKEY named a torrent.
                        self.check = named.map_or(Check::Ours, Check::Named);
                    }
                    self.state = if crypto.is_passthrough() {
                        State::Plain
                    } else {
                        State::Crypto(C::from(crypto))
                    };
                    up(Up::Established {
                        outgoing: self.outgoing,
                        method,
                    });
                    // The peer's first payload bytes may follow its last handshake
                    // bytes in the same read.
                    data = &mut data[used..];
                }
            }
        }
    }

    /// Sniffs an accepted connection's first bytes. `Some(used)`: decided (plain or
    /// MSE), the rest of `data` from `used` on goes to the new state; `None`: all of
    /// `data` taken, undecided.
    fn sniff(&mut self, data: &[u8]) -> Result<Option<usize>, LinkError> {
        for (i, &b) in data.iter().enumerate() {
            let at = usize::from(self.head_len);
            if b != PLAIN_PREFIX[at] {
                // Not a plain handshake: the bytes so far open an MSE one (a public
                // key is 96 bytes long, so they are all the handshake's).
                let accept = self.policy.accept().ok_or(LinkError::EncryptionRefused)?;
                let keys = self.keys.take().ok_or(LinkError::EncryptionRefused)?;
                let mut h = Handshake::responder(accept, true, keys.private, keys.pad_seed);
                let seen = self.head;
                h.handle_recv(&seen[..at], &mut |_| None)
                    .map_err(LinkError::Mse)?;
                self.head_len = 0;
                self.state = State::Handshake(H::from(h));
                return Ok(Some(i));
            }
            self.head[at] = b;
            self.head_len += 1;
            if at + 1 == PLAIN_PREFIX.len() {
                if !self.policy.accepts_plain() {
                    return Err(LinkError::PlainRefused);
                }
                self.keys = None;
                self.check = Check::Ours;
                self.state = State::Plain;
                return Ok(Some(i + 1));
            }
        }
        Ok(None)
    }

    /// Hands plain bytes up, holding the first [`HEAD_LEN`] of an accepted
    /// connection's BitTorrent handshake until the torrent it names is checked.
    fn deliver<T: Torrents + ?Sized>(
        &mut self,
        data: &[u8],
        torrents: &T,
        up: &mut dyn FnMut(Up<'_>),
    ) -> Result<(), LinkError> {
        let mut data = data;
        if self.check != Check::Done {
            let at = usize::from(self.head_len);
            let take = (HEAD_LEN - at).min(data.len());
            self.head[at..at + take].copy_from_slice(&data[..take]);
            self.head_len += take as u8;
            data = &data[take..];
            if usize::from(self.head_len) < HEAD_LEN {
                return Ok(());
            }
            let mut named = [0u8; 20];
            named.copy_from_slice(&self.head[28..HEAD_LEN]);
            let named = InfoHash(named);
            match self.check {
                Check::Ours if !torrents.contains(&named) => return Err(LinkError::UnknownTorrent),
                Check::Named(skey) if skey != named => return Err(LinkError::OtherTorrent),
                _ => {}
            }
            self.check = Check::Done;
            let head = self.head;
            up(Up::Data(&head));
        }
        if !data.is_empty() {
            up(Up::Data(data));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
