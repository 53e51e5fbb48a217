//! Protocol encryption (MSE/PE) on the host side: the policy, and the per-connection
//! link that sits between a socket and the session.
//!
//! The handshake itself and the RC4 filter are the core's ([`btcore_core::mse`]); this
//! module decides when to run it and moves bytes: an accepted connection is sniffed
//! (a plain BitTorrent handshake starts with `\x13BitTorrent protocol`, anything else
//! is taken for MSE), a dialed one starts with MSE when the policy says so, and once a
//! handshake is done the session only ever sees plain BitTorrent bytes.

use std::fmt;
use std::str::FromStr;

use btcore_core::ids::InfoHash;
use btcore_core::mse::{
    Handshake, Method, MseError, StreamCrypto, CRYPTO_PLAINTEXT, CRYPTO_RC4, PRIVATE_LEN,
};
use sha1::Digest;

/// When connections are encrypted (the names and defaults follow libtorrent's and
/// Transmission's settings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    /// What an outgoing handshake offers (`None`: dial in plain text).
    pub(crate) fn provide(self) -> Option<u32> {
        match self {
            Self::Disabled | Self::Allowed => None,
            Self::Preferred => Some(CRYPTO_PLAINTEXT | CRYPTO_RC4),
            Self::Required => Some(CRYPTO_RC4),
        }
    }
    /// What an incoming handshake may select (`None`: no MSE accepted).
    fn accept(self) -> Option<u32> {
        match self {
            Self::Disabled => None,
            Self::Allowed | Self::Preferred => Some(CRYPTO_PLAINTEXT | CRYPTO_RC4),
            Self::Required => Some(CRYPTO_RC4),
        }
    }
}

impl FromStr for Encryption {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disabled" => Ok(Self::Disabled),
            "allowed" => Ok(Self::Allowed),
            "preferred" => Ok(Self::Preferred),
            "required" => Ok(Self::Required),
            _ => Err(format!(
                "unknown encryption mode {s:?} (disabled, allowed, preferred, required)"
            )),
        }
    }
}

impl fmt::Display for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Disabled => "disabled",
            Self::Allowed => "allowed",
            Self::Preferred => "preferred",
            Self::Required => "required",
        })
    }
}

/// Secret DH private keys and pad seeds: SHA-1 over a 32-byte secret from the OS and a
/// counter.
pub(crate) struct KeySource {
    secret: [u8; 32],
    counter: u64,
}

impl KeySource {
    pub(crate) fn new() -> Self {
        let secret = crate::os::random_array();
        Self { secret, counter: 0 }
    }

    /// A private key and, from a separate hash, the seed of the pads (which go out in
    /// the clear and so must tell nothing about the key).
    fn next(&mut self) -> ([u8; PRIVATE_LEN], u64) {
        self.counter += 1;
        let digest = |tag: &[u8]| {
            let mut h = sha1::Sha1::new();
            h.update(tag);
            h.update(self.secret);
            h.update(self.counter.to_le_bytes());
            h.finalize()
        };
        let mut private = [0u8; PRIVATE_LEN];
        private.copy_from_slice(&digest(b"key"));
        let d = digest(b"pad");
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&d[..8]);
        (private, u64::from_le_bytes(seed))
    }
}

const PLAIN_PREFIX: &[u8; 20] = b"\x13BitTorrent protocol";

/// How a connection's bytes are carried.
pub(crate) enum Link {
    /// Plain BitTorrent.
    Plain,
    /// Accepted, not yet known: the first bytes seen.
    Sniff { seen: [u8; 20], len: usize },
    /// An MSE handshake in progress.
    Handshake(Box<Handshake>),
    /// Established with MSE; RC4 in at least one direction.
    Crypto(Box<StreamCrypto>),
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain => "Plain",
            Self::Sniff { .. } => "Sniff",
            Self::Handshake(_) => "Handshake",
            Self::Crypto(_) => "Crypto",
        })
    }
}

/// Why a link gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkError {
    /// A plain peer while encryption is required, or MSE while it is disabled.
    Refused,
    /// The encryption handshake failed.
    Mse(MseError),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused => f.write_str("connection refused by the encryption policy"),
            Self::Mse(e) => e.fmt(f),
        }
    }
}

/// What a link hands up to the session, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Up<'a> {
    /// An encryption handshake completed (`outgoing` when we dialed): for a dialed
    /// connection, the session learns of it now, before any of its bytes.
    /// `info_hash`: the torrent the peer named in it.
    Established {
        outgoing: bool,
        method: Method,
        info_hash: Option<InfoHash>,
    },
    /// Plain BitTorrent bytes.
    Data(&'a [u8]),
}

impl Link {
    /// The link of an accepted connection.
    pub(crate) fn incoming(policy: Encryption) -> Self {
        match policy {
            Encryption::Disabled => Self::Plain,
            _ => Self::Sniff {
                seen: [0; 20],
                len: 0,
            },
        }
    }

    /// The link of a dialed connection to a peer of `info_hash`.
    pub(crate) fn outgoing(policy: Encryption, info_hash: InfoHash, keys: &mut KeySource) -> Self {
        match policy.provide() {
            Some(provide) => {
                let (private, seed) = keys.next();
                Self::Handshake(Box::new(Handshake::initiator(
                    info_hash, provide, private, seed,
                )))
            }
            None => Self::Plain,
        }
    }

    /// True while the session must not see or send bytes yet.
    pub(crate) fn negotiating(&self) -> bool {
        matches!(self, Self::Sniff { .. } | Self::Handshake(_))
    }

    /// True for a dialed connection still in its encryption handshake.
    pub(crate) fn dialing_handshake(&self) -> bool {
        matches!(self, Self::Handshake(h) if h.is_initiator())
    }

    /// Moves handshake bytes waiting to be sent to `out`.
    pub(crate) fn drain_handshake(&mut self, out: &mut Vec<u8>) {
        if let Self::Handshake(h) = self {
            let mut buf = [0u8; 2048];
            loop {
                let n = h.poll_transmit(&mut buf);
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
    }

    /// Encrypts session bytes about to be sent, in place.
    pub(crate) fn encrypt(&mut self, buf: &mut [u8]) {
        if let Self::Crypto(c) = self {
            c.encrypt(buf);
            if c.is_passthrough() {
                *self = Self::Plain;
            }
        }
    }

    /// Takes received bytes (`data`, decrypted in place as needed) and hands the plain
    /// BitTorrent bytes to `deliver`, in order. Handshake replies are appended to `out`
    /// (the socket's send queue) as they are produced.
    pub(crate) fn on_recv(
        &mut self,
        data: &mut [u8],
        out: &mut Vec<u8>,
        policy: Encryption,
        keys: &mut KeySource,
        lookup: &mut dyn FnMut(&[u8; 20]) -> Option<InfoHash>,
        deliver: &mut dyn FnMut(Up<'_>),
    ) -> Result<(), LinkError> {
        match self {
            Self::Plain => {
                deliver(Up::Data(data));
                Ok(())
            }
            Self::Crypto(c) => {
                c.decrypt(data);
                if c.is_passthrough() {
                    *self = Self::Plain;
                }
                deliver(Up::Data(data));
                Ok(())
            }
            Self::Sniff { seen, len } => {
                let take = (20 - *len).min(data.len());
                seen[*len..*len + take].copy_from_slice(&data[..take]);
                *len += take;
                let seen_now = *seen;
                let n = *len;
                if seen_now[..n] == PLAIN_PREFIX[..n] {
                    if n < 20 {
                        return Ok(());
                    }
                    if policy == Encryption::Required {
                        return Err(LinkError::Refused);
                    }
                    *self = Self::Plain;
                    deliver(Up::Data(&seen_now[..20]));
                    deliver(Up::Data(&data[take..]));
                    return Ok(());
                }
                let Some(accept) = policy.accept() else {
                    return Err(LinkError::Refused);
                };
                let (private, seed) = keys.next();
                let mut h = Box::new(Handshake::responder(accept, true, private, seed));
                // The sniffed bytes are all handshake bytes (a public key is 96 long).
                let used = h
                    .handle_recv(&seen_now[..n], lookup)
                    .map_err(LinkError::Mse)?;
                debug_assert_eq!(used, n);
                *self = Self::Handshake(h);
                let rest = &mut data[take..];
                if rest.is_empty() {
                    Ok(())
                } else {
                    self.on_recv(rest, out, policy, keys, lookup, deliver)
                }
            }
            Self::Handshake(h) => {
                let used = h.handle_recv(data, lookup).map_err(LinkError::Mse)?;
                // Replies (step 2, step 4) leave before any session byte.
                self.drain_handshake(out);
                let Self::Handshake(h) = self else {
                    return Ok(());
                };
                if !h.is_done() {
                    return Ok(());
                }
                let outgoing = h.is_initiator();
                let info_hash = h.info_hash();
                let Some((method, crypto)) = h.finish() else {
                    return Ok(());
                };
                *self = if crypto.is_passthrough() {
                    Self::Plain
                } else {
                    Self::Crypto(Box::new(crypto))
                };
                deliver(Up::Established {
                    outgoing,
                    method,
                    info_hash,
                });
                // The peer may have sent its first payload bytes right behind its
                // last handshake bytes.
                let rest = &mut data[used..];
                if rest.is_empty() {
                    Ok(())
                } else {
                    self.on_recv(rest, out, policy, keys, lookup, deliver)
                }
            }
        }
    }
}
