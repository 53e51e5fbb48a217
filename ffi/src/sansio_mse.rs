//! Protocol encryption (MSE/PE) in the sans-IO API: the session wraps each connection
//! in the core's [`Link`], so the application moves raw socket bytes and decides
//! nothing.
//!
//! The policy is `btcore_sansio_settings.encryption` (`BTCORE_ENCRYPTION_*`, preferred
//! by default). Per connection:
//!
//! - a dialed one starts with the encryption handshake (preferred, required): the
//!   library learns of the TCP connect from `btcore_sansio_connected`, asks for a
//!   `SEND`, and tells its session of the connection only once the handshake is done;
//!   under `preferred`, a peer that does not answer it (closes, sends garbage, or is
//!   silent for 10 s) is dialed once more in plain text: a `CLOSE` (when the library
//!   saw the failure itself) then a `CONNECT` for the same `conn` with `redial` set;
//! - an accepted one is sniffed (plain or MSE) and refused when the policy says so;
//! - `btcore_sansio_recv` takes the bytes as read from the socket and
//!   `btcore_sansio_transmit` gives the bytes to write to it, RC4 applied.
//!
//! The Diffie-Hellman keys and pads are secret: they are drawn from a pool seeded with
//! `btcore_sansio_settings.entropy` (32 bytes from the device's random source) and
//! `random_seed`, and stirred by `btcore_sansio_entropy`. The core has no random
//! source of its own.
use crate::sansio::{btcore_action, btcore_sansio, handle, Inner};
use crate::*;
use btcore_core::hash::sha1;
use btcore_core::ids::InfoHash;
use btcore_core::mse::{self, Close, Encryption, Handshake, Keys, StreamCrypto, Up};
use btcore_core::session::{ConnId, TorrentId, Transmit, Transport};
use btcore_core::time::Instant;
use std::net::SocketAddr;

/// A connection's encryption layer, its handshake and RC4 filter on the heap.
///
/// cbindgen:ignore
pub(crate) type Link = mse::Link<Box<Handshake>, Box<StreamCrypto>>;

/// The encryption policy named by a `BTCORE_ENCRYPTION_*` value.
pub(crate) fn policy(v: u32) -> Option<Encryption> {
    Some(match v {
        BTCORE_ENCRYPTION_PREFERRED => Encryption::Preferred,
        BTCORE_ENCRYPTION_ALLOWED => Encryption::Allowed,
        BTCORE_ENCRYPTION_REQUIRED => Encryption::Required,
        BTCORE_ENCRYPTION_DISABLED => Encryption::Disabled,
        _ => return None,
    })
}

/// The secret the handshake keys are drawn from: SHA-1 over what the application gave
/// (settings' entropy, seed, every `btcore_sansio_entropy`) and a counter.
pub(crate) struct KeyPool {
    secret: [u8; 20],
    counter: u64,
}

impl std::fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPool(..)")
    }
}

impl KeyPool {
    pub(crate) fn new(entropy: &[u8; 32], seed: u64) -> Self {
        let mut p = Self {
            secret: [0; 20],
            counter: 0,
        };
        p.mix(b"btcore sans-IO MSE keys");
        p.mix(entropy);
        p.mix(&seed.to_le_bytes());
        p
    }

    /// Stirs `bytes` into the secret.
    pub(crate) fn mix(&mut self, bytes: &[u8]) {
        let mut v = Vec::with_capacity(20 + bytes.len());
        v.extend_from_slice(&self.secret);
        v.extend_from_slice(bytes);
        self.secret = sha1(&v);
    }

    /// A fresh private key and, from a separate hash, the seed of the pads (which go
    /// out in the clear and so must tell nothing about the key).
    pub(crate) fn next(&mut self) -> Keys {
        self.counter += 1;
        let digest = |tag: &[u8], secret: &[u8; 20], counter: u64| {
            let mut v = Vec::with_capacity(40);
            v.extend_from_slice(tag);
            v.extend_from_slice(secret);
            v.extend_from_slice(&counter.to_le_bytes());
            sha1(&v)
        };
        let private = digest(b"key", &self.secret, self.counter);
        let pad = digest(b"pad", &self.secret, self.counter);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&pad[..8]);
        Keys {
            private,
            pad_seed: u64::from_le_bytes(seed),
        }
    }
}

/// One connection's link and what the host must know to dial it again.
#[derive(Debug)]
pub(crate) struct ConnLink {
    pub(crate) link: Link,
    /// Handshake bytes handed up by the link, waiting for `btcore_sansio_transmit`
    /// (at most a handshake message or two: a few hundred bytes).
    pub(crate) out: Vec<u8>,
    /// Dialed: the torrent, address and transport, for a redial in plain text.
    pub(crate) dial: Option<(TorrentId, SocketAddr, Transport)>,
}

impl ConnLink {
    /// The link's own bytes into `dst` (what its handshake left, then its handshake
    /// messages): how many, and whether the session's bytes may follow them (all of
    /// them out, and the handshake over).
    fn own_bytes(&mut self, dst: &mut [u8]) -> (usize, bool) {
        let n = self.out.len().min(dst.len());
        dst[..n].copy_from_slice(&self.out[..n]);
        self.out.drain(..n);
        if !self.out.is_empty() {
            return (n, false);
        }
        let n = n + self.link.poll_transmit(&mut dst[n..]);
        (n, !self.link.negotiating())
    }
}

impl Inner {
    /// The info-hashes a link accepts connections for.
    fn info_hashes(&self) -> Vec<InfoHash> {
        self.info
            .values()
            .flat_map(|t| core::iter::once(t.info_hash).chain(t.info_hash_v2))
            .collect()
    }

    /// A `CONNECT` action is handed out: the connection gets its link (an encryption
    /// handshake first when the policy dials with one).
    pub(crate) fn link_dial(
        &mut self,
        conn: ConnId,
        torrent: TorrentId,
        addr: SocketAddr,
        transport: Transport,
    ) {
        let link = match self.info.get(&torrent) {
            Some(t) if self.policy.provide().is_some() => {
                let keys = self.keys.next();
                Link::outgoing(self.policy, t.info_hash, keys, self.now)
            }
            _ => Link::outgoing_plain(self.policy),
        };
        self.links.insert(
            conn,
            ConnLink {
                link,
                out: Vec::new(),
                dial: Some((torrent, addr, transport)),
            },
        );
    }

    /// An accepted connection gets its link (sniffing plain from MSE).
    pub(crate) fn link_incoming(&mut self, conn: ConnId) {
        let keys = self.keys.next();
        self.links.insert(
            conn,
            ConnLink {
                link: Link::incoming(self.policy, keys),
                out: Vec::new(),
                dial: None,
            },
        );
    }

    /// The TCP connect of `conn` completed.
    pub(crate) fn link_connected(&mut self, now: Instant, conn: ConnId) {
        self.now = now;
        let plain = self
            .links
            .get_mut(&conn)
            .is_none_or(|c| c.link.handle_connected());
        if plain {
            self.session.handle_connected(now, conn);
        } else {
            // The encryption handshake's first message waits for a transmit.
            self.extra.push_back(send_action(conn));
        }
    }

    /// `conn` ended on the host's side (a failed connect, a closed or failed socket):
    /// what its link says follows.
    pub(crate) fn link_closed(&mut self, now: Instant, conn: ConnId, connect_failed: bool) {
        self.now = now;
        match self.links.remove(&conn) {
            Some(mut c) => {
                let verdict = c.link.close();
                self.apply(now, conn, verdict, c.dial);
            }
            None if connect_failed => self.session.handle_connect_failed(now, conn),
            None => self.session.handle_disconnected(now, conn),
        }
    }

    /// Carries out a link's verdict on its ended connection (already out of `links`).
    fn apply(
        &mut self,
        now: Instant,
        conn: ConnId,
        verdict: Close,
        dial: Option<(TorrentId, SocketAddr, Transport)>,
    ) {
        match (verdict, dial) {
            (Close::RedialPlain, Some(_)) if self.session.has_twin(conn) => {
                self.session.handle_connect_failed(now, conn)
            }
            (Close::RedialPlain, Some((torrent, addr, transport))) => {
                self.links.insert(
                    conn,
                    ConnLink {
                        link: Link::outgoing_plain(self.policy),
                        out: Vec::new(),
                        dial: Some((torrent, addr, transport)),
                    },
                );
                self.extra.push_back(btcore_action {
                    conn: conn.0,
                    addr: btcore_addr::from_socket(addr),
                    redial: 1,
                    transport: crate::sansio::transport_code(transport),
                    ..btcore_action::new(BTCORE_ACTION_CONNECT, torrent.0)
                });
            }
            (Close::RedialPlain | Close::ConnectFailed, _) => {
                self.session.handle_connect_failed(now, conn)
            }
            (Close::Disconnected, _) => self.session.handle_disconnected(now, conn),
        }
    }

    /// Bytes read from `conn`'s socket.
    pub(crate) fn link_recv(&mut self, now: Instant, conn: ConnId, data: &[u8]) {
        if !self.links.contains_key(&conn) {
            self.session.handle_recv(now, conn, data);
            return;
        }
        let hashes = self.info_hashes();
        let Inner {
            session,
            links,
            extra,
            ..
        } = self;
        let Some(c) = links.get_mut(&conn) else {
            return;
        };
        let mut buf = data.to_vec();
        let mut wake = false;
        let ConnLink { link, out, .. } = c;
        let r = link.handle_recv(&mut buf, &hashes[..], &mut |up| match up {
            Up::Transmit(b) => {
                out.extend_from_slice(b);
                wake = true;
            }
            Up::Established { outgoing, method } => {
                session.set_encrypted(conn, method == btcore_core::mse::Method::Rc4);
                if outgoing {
                    session.handle_connected(now, conn);
                }
                // Whatever the session queued meanwhile may go out now.
                wake = true;
            }
            Up::Data(d) => session.handle_recv(now, conn, d),
        });
        if wake {
            extra.push_back(send_action(conn));
        }
        if r.is_err() {
            // The link refused the connection (the policy, a failed handshake, another
            // torrent): the host closes the socket, and the verdict says what follows.
            if let Some(mut c) = self.links.remove(&conn) {
                let verdict = c.link.close();
                self.extra
                    .push_back(close_action(conn, BTCORE_PEER_PROTOCOL));
                self.apply(now, conn, verdict, c.dial);
            }
        }
    }

    /// The bytes to write to `conn`'s socket: handshake bytes first, then the session's
    /// (RC4 applied) once the handshake is over.
    pub(crate) fn link_transmit(&mut self, now: Instant, conn: ConnId, dst: &mut [u8]) -> usize {
        let Some(c) = self.links.get_mut(&conn) else {
            return self.session.poll_transmit(now, conn, dst);
        };
        let (mut n, more) = c.own_bytes(dst);
        if more && n < dst.len() {
            let m = self.session.poll_transmit(now, conn, &mut dst[n..]);
            c.link.encrypt(&mut dst[n..n + m]);
            n += m;
        }
        n
    }

    /// Whether `conn` sends in plain text from now on (no link, or one that ended
    /// plain): the connections whose block payloads the application may hold.
    pub(crate) fn link_plain(&self, conn: ConnId) -> bool {
        self.links.get(&conn).is_none_or(|c| c.link.is_plain())
    }

    /// [`Self::link_transmit`] for an application that holds block payloads: the bytes
    /// copied into `dst`, then the held payload to send right after them, if one is
    /// next (`(token, length)`). Encrypted connections never hold one.
    pub(crate) fn link_send(
        &mut self,
        now: Instant,
        conn: ConnId,
        dst: &mut [u8],
    ) -> (usize, Option<(u64, u32)>) {
        let mut n = 0;
        if let Some(c) = self.links.get_mut(&conn) {
            if !c.link.is_plain() {
                return (self.link_transmit(now, conn, dst), None);
            }
            // A plain link's own bytes (what its handshake left) go first; when they
            // fill `dst`, the session's (or a held payload) next time.
            let more;
            (n, more) = c.own_bytes(dst);
            if !more || n == dst.len() {
                return (n, None);
            }
        }
        match self.session.poll_send(now, conn, &mut dst[n..]) {
            Transmit::Bytes { len, held_next } => {
                n += len;
                let held = match held_next.then(|| self.session.poll_send(now, conn, &mut [])) {
                    Some(Transmit::Held { token, len }) => Some((token, len)),
                    _ => None,
                };
                (n, held)
            }
            Transmit::Held { token, len } => (n, Some((token, len))),
            Transmit::Idle => (n, None),
        }
    }

    /// The session closed `conn` (a `CLOSE` action): its link goes.
    pub(crate) fn link_forget(&mut self, conn: ConnId) {
        self.links.remove(&conn);
    }

    /// The earliest handshake deadline.
    pub(crate) fn link_timeout(&self) -> Option<Instant> {
        self.links
            .values()
            .filter_map(|c| c.link.poll_timeout())
            .min()
    }

    /// Handshakes past their deadline fail: `CLOSE`, then what the verdict says.
    pub(crate) fn link_handle_timeout(&mut self, now: Instant) {
        let due: Vec<ConnId> = self
            .links
            .iter()
            .filter(|(_, c)| c.link.poll_timeout().is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for conn in due {
            let Some(mut c) = self.links.remove(&conn) else {
                continue;
            };
            let Some(verdict) = c.link.handle_timeout(now) else {
                self.links.insert(conn, c);
                continue;
            };
            self.extra
                .push_back(close_action(conn, BTCORE_PEER_TIMEOUT));
            self.apply(now, conn, verdict, c.dial);
        }
    }
}

fn send_action(conn: ConnId) -> btcore_action {
    btcore_action {
        conn: conn.0,
        ..btcore_action::new(BTCORE_ACTION_SEND, 0)
    }
}

fn close_action(conn: ConnId, error: btcore_result) -> btcore_action {
    btcore_action {
        conn: conn.0,
        error,
        ..btcore_action::new(BTCORE_ACTION_CLOSE, 0)
    }
}

/// Stirs `len` bytes from the device's random source into the secret that encryption
/// handshake keys are drawn from. `btcore_sansio_settings.entropy` seeds it; call this
/// too when more randomness comes (any length, any time). Never fails for a live
/// handle.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `data` is valid for reads of `len` bytes (it may be NULL when `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_entropy(
    h: *mut btcore_sansio,
    data: *const u8,
    len: usize,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let mut s = unsafe { handle(h) }?;
        // SAFETY: `data` is valid for reads of `len` bytes or `len` is 0, as this
        // function's contract requires.
        let data = unsafe { bytes(data, len) }?;
        s.keys.mix(data);
        Ok(())
    })
}
