//! Message stream encryption (MSE, also called PE or protocol encryption).
//!
//! libtorrent, Transmission, qBittorrent and aria2 can wrap the peer wire protocol in
//! an obfuscation layer: a 768-bit Diffie-Hellman exchange, then RC4 keyed from the
//! shared secret and the torrent's info-hash. By default libtorrent and Transmission
//! try it first when they dial; a peer that cannot answer costs them a reconnect.
//!
//! The exchange (A dials B; `S` is the DH secret, `SKEY` the info-hash):
//!
//! ```text
//! 1 A->B: Ya, PadA
//! 2 B->A: Yb, PadB
//! 3 A->B: SHA1("req1", S), SHA1("req2", SKEY) ^ SHA1("req3", S),
//!         RC4a(VC, crypto_provide, len(PadC), PadC, len(IA)), RC4a(IA)
//! 4 B->A: RC4b(VC, crypto_select, len(PadD), PadD), then the payload stream
//! 5 A->B: the payload stream
//! ```
//!
//! `VC` is 8 zero bytes, the pads 0 to 512 bytes, the RC4 keys `SHA1("keyA", S, SKEY)`
//! (what A sends) and `SHA1("keyB", S, SKEY)` (what B sends), each with its first 1024
//! keystream bytes discarded. Since the pads have no length prefix, each side finds
//! its place by scanning: B for `SHA1("req1", S)` within 532 bytes after `Ya`, A for
//! `RC4b(VC)` within 520 bytes after `Yb`. After step 4 the payload is RC4 or plain
//! text, as B selected from what A provided; the initial payload `IA` is RC4 in
//! both cases.
//!
//! [`Handshake`] runs one side of this as a sans-IO state machine: bytes in through
//! [`Handshake::handle_recv`] (which consumes exactly the handshake's bytes and never
//! more), bytes out through [`Handshake::poll_transmit`]. When [`Handshake::is_done`],
//! [`Handshake::finish`] gives the [`StreamCrypto`] that filters the rest of the
//! connection in place. Nothing allocates; the state is a few kilobytes for the short
//! life of a handshake and 2 x 258 bytes of RC4 state after it when RC4 was selected.
//! The caller supplies the randomness ([`Handshake::initiator`],
//! [`Handshake::responder`]): the core draws none of its own.
//!
//! The policy lives here too: [`Encryption`] (disabled, allowed, preferred, required)
//! and [`Link`], the per-connection state machine that applies it. A link sniffs an
//! accepted connection (plain or MSE, refused by the policy or not), starts a dialed
//! one with MSE or in plain text, runs the [`Handshake`] and then the
//! [`StreamCrypto`], checks the torrent the peer's handshakes name, and on a failed
//! dial says whether to dial again in plain text ([`Close::RedialPlain`], once) or
//! give up. A host only moves bytes, arms the link's timer and dials when told.

use core::fmt;

use crypto_bigint::modular::{MontyForm, MontyParams};
use crypto_bigint::{Odd, U768};
use rc4::{KeyInit, Rc4, StreamCipher};

use crate::hash::sha1;
use crate::ids::InfoHash;
use crate::rng::Rng;

mod policy;

pub use policy::{Close, Encryption, Keys, Link, LinkError, Torrents, UnknownEncryption, Up};

/// The 768-bit prime of the exchange (generator 2).
const PRIME_HEX: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";

/// Length of a public key and of the shared secret on the wire.
pub(crate) const KEY_LEN: usize = 96;
/// Length of a private key (160 bits, as libtorrent and Transmission use).
pub const PRIVATE_LEN: usize = 20;
/// The longest pad either side may send.
pub(crate) const MAX_PAD: usize = 512;
/// `crypto_provide` / `crypto_select` bit: plain text after the handshake.
pub const CRYPTO_PLAINTEXT: u32 = 0x01;
/// `crypto_provide` / `crypto_select` bit: RC4 for the whole connection.
pub const CRYPTO_RC4: u32 = 0x02;
/// The longest pad this side sends (any length up to [`MAX_PAD`] is valid; shorter
/// pads keep the transmit buffer small).
const OUR_MAX_PAD: usize = 128;
/// What one handshake may queue for sending at most: step 1 or 2 plus step 3 or 4.
const OUT_CAP: usize = KEY_LEN + OUR_MAX_PAD + 40 + 16 + OUR_MAX_PAD;

/// How a handshake failed. Each is the remote peer's fault (or not an MSE peer at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MseError {
    /// The peer's public key is out of range (0, 1, p-1 or not below p).
    BadPublicKey,
    /// The synchronisation marker was not found where it must be: not an MSE peer, or
    /// a different secret.
    NoSync,
    /// The obfuscated info-hash matches no torrent of ours.
    UnknownTorrent,
    /// The verification constant decrypted to something else than zeros.
    BadVerification,
    /// A pad length over 512.
    PadTooLong,
    /// No encryption method both sides accept.
    NoCommonMethod,
    /// The peer selected a method that was not offered, or several.
    BadSelect,
}

impl fmt::Display for MseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadPublicKey => "encryption handshake: bad public key",
            Self::NoSync => "encryption handshake: synchronisation marker not found",
            Self::UnknownTorrent => "encryption handshake: unknown torrent",
            Self::BadVerification => "encryption handshake: bad verification constant",
            Self::PadTooLong => "encryption handshake: pad longer than 512 bytes",
            Self::NoCommonMethod => "encryption handshake: no common method",
            Self::BadSelect => "encryption handshake: bad method selected",
        })
    }
}

impl core::error::Error for MseError {}

/// The method a finished handshake settled on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Plain text after the handshake (the initial payload is still RC4).
    Plaintext,
    /// RC4 in both directions for the whole connection.
    Rc4,
}

/// `SHA1("req2", info_hash)`: what an incoming handshake is matched against, one per
/// torrent. A host with many torrents may keep these precomputed.
pub fn req2_hash(info_hash: &InfoHash) -> [u8; 20] {
    hash2(b"req2", &info_hash.0)
}

fn hash2(tag: &[u8; 4], data: &[u8]) -> [u8; 20] {
    let mut buf = [0u8; 4 + KEY_LEN];
    buf[..4].copy_from_slice(tag);
    buf[4..4 + data.len()].copy_from_slice(data);
    sha1(&buf[..4 + data.len()])
}

fn rc4_key(tag: &[u8; 4], secret: &[u8; KEY_LEN], skey: &InfoHash) -> Rc4 {
    let mut buf = [0u8; 4 + KEY_LEN + 20];
    buf[..4].copy_from_slice(tag);
    buf[4..4 + KEY_LEN].copy_from_slice(secret);
    buf[4 + KEY_LEN..].copy_from_slice(&skey.0);
    let key = sha1(&buf);
    let mut rc4 = match Rc4::new_from_slice(&key) {
        Ok(c) => c,
        // A 20-byte key is always within RC4's 1..=256.
        Err(_) => unreachable_key(),
    };
    let mut discard = [0u8; 1024];
    rc4.apply_keystream(&mut discard);
    rc4
}

#[cold]
fn unreachable_key() -> ! {
    unreachable!("RC4 accepts 20-byte keys")
}

fn prime() -> Odd<U768> {
    Odd::new(U768::from_be_hex(PRIME_HEX)).expect("the MSE prime is odd")
}

/// `2^private mod p`, big-endian.
fn public_key(private: &[u8; PRIVATE_LEN]) -> [u8; KEY_LEN] {
    let params = MontyParams::new_vartime(prime());
    let exp = U768::from_be_slice(&pad_to_768(private));
    let y = MontyForm::new(&U768::from_u8(2), params)
        .pow_bounded_exp(&exp, (PRIVATE_LEN * 8) as u32)
        .retrieve();
    y.to_be_bytes()
}

/// `their^private mod p`, big-endian; refuses keys a peer could use to force the secret.
fn shared_secret(
    private: &[u8; PRIVATE_LEN],
    their: &[u8; KEY_LEN],
) -> Result<[u8; KEY_LEN], MseError> {
    let p = prime();
    let y = U768::from_be_slice(their);
    let p_minus_1 = p.wrapping_sub(&U768::ONE);
    if y <= U768::ONE || y >= p_minus_1 {
        return Err(MseError::BadPublicKey);
    }
    let params = MontyParams::new_vartime(p);
    let exp = U768::from_be_slice(&pad_to_768(private));
    let s = MontyForm::new(&y, params)
        .pow_bounded_exp(&exp, (PRIVATE_LEN * 8) as u32)
        .retrieve();
    Ok(s.to_be_bytes())
}

fn pad_to_768(private: &[u8; PRIVATE_LEN]) -> [u8; KEY_LEN] {
    let mut b = [0u8; KEY_LEN];
    b[KEY_LEN - PRIVATE_LEN..].copy_from_slice(private);
    b
}

/// One direction of an established connection: RC4 for the first `left` bytes (all of
/// them when `left` is `u64::MAX`), plain text after.
struct Direction {
    rc4: Option<Rc4>,
    left: u64,
}

impl Direction {
    fn apply(&mut self, buf: &mut [u8]) {
        if let Some(c) = self.rc4.as_mut() {
            let n = if self.left == u64::MAX {
                buf.len()
            } else {
                buf.len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX))
            };
            c.apply_keystream(&mut buf[..n]);
            if self.left != u64::MAX {
                self.left -= n as u64;
                if self.left == 0 {
                    self.rc4 = None;
                }
            }
        }
    }
}

/// The filter an established connection's bytes go through, in place.
pub struct StreamCrypto {
    recv: Direction,
    send: Direction,
}

impl fmt::Debug for StreamCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamCrypto")
            .field("recv_rc4", &self.recv.rc4.is_some())
            .field("send_rc4", &self.send.rc4.is_some())
            .finish()
    }
}

/// Lets a [`Link`] hold its filter inline (`Link<_, StreamCrypto>`).
impl AsMut<StreamCrypto> for StreamCrypto {
    fn as_mut(&mut self) -> &mut StreamCrypto {
        self
    }
}

impl StreamCrypto {
    /// Decrypts bytes just received, in place.
    pub fn decrypt(&mut self, buf: &mut [u8]) {
        self.recv.apply(buf);
    }
    /// Encrypts bytes about to be sent, in place.
    pub fn encrypt(&mut self, buf: &mut [u8]) {
        self.send.apply(buf);
    }
    /// True when nothing more is transformed in either direction (plain text
    /// selected and the initial payload passed): the host may drop the filter.
    pub(crate) fn is_passthrough(&self) -> bool {
        self.recv.rc4.is_none() && self.send.rc4.is_none()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the other side's 96-byte public key.
    AwaitKey,
    /// Responder: scanning for `SHA1("req1", S)`.
    AwaitReq1,
    /// Responder: the 20 bytes naming the torrent.
    AwaitSkey,
    /// Responder: `VC, crypto_provide, len(PadC)` (14 bytes).
    AwaitProvide,
    /// Skipping (and decrypting) a pad of this many bytes more.
    SkipPad(u16),
    /// Responder: `len(IA)` (2 bytes).
    AwaitIaLen,
    /// Initiator: scanning for `RC4b(VC)`.
    AwaitVc,
    /// Initiator: `crypto_select, len(PadD)` (6 bytes).
    AwaitSelect,
    Done,
}

/// One side of an MSE handshake.
pub struct Handshake {
    initiator: bool,
    state: State,
    /// Initiator: the torrent; responder: the one identified.
    skey: Option<InfoHash>,
    /// Initiator: methods offered; responder: methods accepted.
    methods: u32,
    /// Responder: prefer plain text when both are possible.
    prefer_plaintext: bool,
    private: [u8; PRIVATE_LEN],
    secret: [u8; KEY_LEN],
    /// Responder: `SHA1("req1", S)`; initiator: `RC4b(VC)` in its first 8 bytes.
    marker: [u8; 20],
    /// Bytes scanned or collected in the current state.
    input: heapless::Vec<u8, { KEY_LEN + MAX_PAD + 20 }>,
    out: heapless::Vec<u8, OUT_CAP>,
    out_pos: usize,
    /// Our RC4 (what we send) and theirs (what we receive).
    send: Option<Rc4>,
    recv: Option<Rc4>,
    selected: u32,
    ia_len: u16,
    /// Set when the responder's pad was PadC (then `len(IA)` follows), not PadD.
    pad_is_c: bool,
    rng: Rng,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("initiator", &self.initiator)
            .field("state", &self.state)
            .field("skey", &self.skey)
            .finish()
    }
}

/// Lets a [`Link`] hold its handshake inline (`Link<Handshake, _>`).
impl AsMut<Handshake> for Handshake {
    fn as_mut(&mut self) -> &mut Handshake {
        self
    }
}

impl Handshake {
    fn new(
        initiator: bool,
        skey: Option<InfoHash>,
        methods: u32,
        private: [u8; PRIVATE_LEN],
        seed: u64,
    ) -> Self {
        let mut h = Self {
            initiator,
            state: State::AwaitKey,
            skey,
            methods,
            prefer_plaintext: true,
            private,
            secret: [0; KEY_LEN],
            marker: [0; 20],
            input: heapless::Vec::new(),
            out: heapless::Vec::new(),
            out_pos: 0,
            send: None,
            recv: None,
            selected: 0,
            ia_len: 0,
            pad_is_c: false,
            rng: Rng::new(seed),
        };
        if initiator {
            h.queue_key_and_pad();
        }
        h
    }

    /// The dialing side for the torrent `info_hash`, offering `provide`
    /// ([`CRYPTO_PLAINTEXT`] and/or [`CRYPTO_RC4`]). `private` must be secret random
    /// bytes, `seed` seeds the pad lengths and contents. Step 1 is queued at once.
    pub fn initiator(
        info_hash: InfoHash,
        provide: u32,
        private: [u8; PRIVATE_LEN],
        seed: u64,
    ) -> Self {
        Self::new(true, Some(info_hash), provide, private, seed)
    }

    /// The accepting side, accepting the methods in `accept`; when both are offered and
    /// accepted, `prefer_plaintext` picks plain text (fast) over RC4.
    pub fn responder(
        accept: u32,
        prefer_plaintext: bool,
        private: [u8; PRIVATE_LEN],
        seed: u64,
    ) -> Self {
        let mut h = Self::new(false, None, accept, private, seed);
        h.prefer_plaintext = prefer_plaintext;
        h
    }

    /// True for the dialing side.
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// True once the handshake is complete: call [`Handshake::finish`].
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The torrent: the initiator's, or the one the responder identified.
    pub fn info_hash(&self) -> Option<InfoHash> {
        self.skey
    }

    /// True while bytes wait to be sent.
    pub fn wants_transmit(&self) -> bool {
        self.out_pos < self.out.len()
    }

    /// Copies bytes to send into `buf`; returns how many (0: nothing now).
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        n
    }

    /// The method settled on and the filter for the rest of the connection. The bytes
    /// after the ones [`Handshake::handle_recv`] consumed (and everything received
    /// later) go through [`StreamCrypto::decrypt`]; bytes to send through
    /// [`StreamCrypto::encrypt`], after whatever [`Handshake::poll_transmit`] still has.
    /// `None` before [`Handshake::is_done`].
    pub fn finish(&mut self) -> Option<(Method, StreamCrypto)> {
        if self.state != State::Done {
            return None;
        }
        let method = if self.selected == CRYPTO_RC4 {
            Method::Rc4
        } else {
            Method::Plaintext
        };
        let (recv_left, send_left) = match (method, self.initiator) {
            (Method::Rc4, _) => (u64::MAX, u64::MAX),
            // The responder still decrypts the initiator's IA.
            (Method::Plaintext, false) => (u64::from(self.ia_len), 0),
            // This initiator sends no IA.
            (Method::Plaintext, true) => (0, 0),
        };
        let dir = |rc4: Option<Rc4>, left: u64| Direction {
            rc4: if left == 0 { None } else { rc4 },
            left,
        };
        let crypto = StreamCrypto {
            recv: dir(self.recv.take(), recv_left),
            send: dir(self.send.take(), send_left),
        };
        Some((method, crypto))
    }

    /// Feeds received bytes. Returns how many of `data` belong to the handshake; when
    /// that is less than `data.len()` the handshake is done and the rest is payload.
    /// `lookup` maps `SHA1("req2", info_hash)` to a torrent of ours (responder only;
    /// see [`req2_hash`]).
    pub fn handle_recv(
        &mut self,
        data: &[u8],
        lookup: &mut dyn FnMut(&[u8; 20]) -> Option<InfoHash>,
    ) -> Result<usize, MseError> {
        let mut used = 0;
        while used < data.len() && self.state != State::Done {
            let rest = &data[used..];
            used += match self.state {
                State::AwaitKey => {
                    let n = self.collect(rest, KEY_LEN);
                    if self.input.len() == KEY_LEN {
                        self.on_key()?;
                    }
                    n
                }
                State::AwaitReq1 => {
                    let n = self.scan(rest, 20, MAX_PAD + 20)?;
                    if self.state != State::AwaitReq1 {
                        self.input.clear();
                    }
                    n
                }
                State::AwaitSkey => {
                    let n = self.collect(rest, 20);
                    if self.input.len() == 20 {
                        self.on_skey(lookup)?;
                    }
                    n
                }
                State::AwaitProvide => {
                    let n = self.collect(rest, 14);
                    if self.input.len() == 14 {
                        self.on_provide()?;
                    }
                    n
                }
                State::SkipPad(left) => {
                    let n = rest.len().min(usize::from(left));
                    let mut scratch = [0u8; 64];
                    let mut done = 0;
                    while done < n {
                        let k = (n - done).min(scratch.len());
                        if let Some(c) = self.recv.as_mut() {
                            c.apply_keystream(&mut scratch[..k]);
                        }
                        done += k;
                    }
                    let left = left - n as u16;
                    self.state = if left > 0 {
                        State::SkipPad(left)
                    } else if self.pad_is_c {
                        State::AwaitIaLen
                    } else {
                        State::Done
                    };
                    n
                }
                State::AwaitIaLen => {
                    let n = self.collect(rest, 2);
                    if self.input.len() == 2 {
                        self.on_ia_len();
                    }
                    n
                }
                State::AwaitVc => {
                    let n = self.scan(rest, 8, MAX_PAD + 8)?;
                    if self.state != State::AwaitVc {
                        self.input.clear();
                    }
                    n
                }
                State::AwaitSelect => {
                    let n = self.collect(rest, 6);
                    if self.input.len() == 6 {
                        self.on_select()?;
                    }
                    n
                }
                State::Done => 0,
            };
        }
        Ok(used)
    }

    /// Moves up to `want - input.len()` bytes into `input`.
    fn collect(&mut self, data: &[u8], want: usize) -> usize {
        let n = data.len().min(want - self.input.len());
        // Capacity is above every `want`.
        let _ = self.input.extend_from_slice(&data[..n]);
        n
    }

    /// Moves bytes into `input` one at a time until it ends with the first `len` bytes
    /// of `marker`; fails once `limit` bytes passed without it.
    fn scan(&mut self, data: &[u8], len: usize, limit: usize) -> Result<usize, MseError> {
        for (i, &b) in data.iter().enumerate() {
            if self.input.push(b).is_err() || self.input.len() > limit {
                return Err(MseError::NoSync);
            }
            if self.input.ends_with(&self.marker[..len]) {
                self.state = if self.initiator {
                    State::AwaitSelect
                } else {
                    State::AwaitSkey
                };
                return Ok(i + 1);
            }
        }
        Ok(data.len())
    }

    fn queue_key_and_pad(&mut self) {
        let public = public_key(&self.private);
        let _ = self.out.extend_from_slice(&public);
        let pad = self.rng.below(OUR_MAX_PAD as u64 + 1) as usize;
        for _ in 0..pad {
            let _ = self.out.push(self.rng.next_u32() as u8);
        }
    }

    fn queue_encrypted(&mut self, plain: &[u8]) {
        let start = self.out.len();
        let _ = self.out.extend_from_slice(plain);
        if let Some(c) = self.send.as_mut() {
            c.apply_keystream(&mut self.out[start..]);
        }
    }

    fn on_key(&mut self) -> Result<(), MseError> {
        let mut their = [0u8; KEY_LEN];
        their.copy_from_slice(&self.input);
        self.input.clear();
        self.secret = shared_secret(&self.private, &their)?;
        if self.initiator {
            let skey = self.skey.unwrap_or(InfoHash([0; 20]));
            self.send = Some(rc4_key(b"keyA", &self.secret, &skey));
            let mut recv = rc4_key(b"keyB", &self.secret, &skey);
            // RC4b(VC): the marker step 4 starts with; finding it leaves `recv` in step.
            let mut vc = [0u8; 8];
            recv.apply_keystream(&mut vc);
            self.marker[..8].copy_from_slice(&vc);
            self.recv = Some(recv);
            let req1 = hash2(b"req1", &self.secret);
            let req2 = req2_hash(&skey);
            let req3 = hash2(b"req3", &self.secret);
            let _ = self.out.extend_from_slice(&req1);
            for i in 0..20 {
                let _ = self.out.push(req2[i] ^ req3[i]);
            }
            let pad_c = self.rng.below(OUR_MAX_PAD as u64 + 1) as u16;
            let mut head = [0u8; 14];
            head[8..12].copy_from_slice(&self.methods.to_be_bytes());
            head[12..14].copy_from_slice(&pad_c.to_be_bytes());
            self.queue_encrypted(&head);
            let zeros = [0u8; OUR_MAX_PAD];
            self.queue_encrypted(&zeros[..usize::from(pad_c)]);
            // len(IA) = 0: the BitTorrent handshake follows the negotiation.
            self.queue_encrypted(&[0, 0]);
            self.state = State::AwaitVc;
        } else {
            self.marker = hash2(b"req1", &self.secret);
            self.queue_key_and_pad();
            self.state = State::AwaitReq1;
        }
        Ok(())
    }

    fn on_skey(
        &mut self,
        lookup: &mut dyn FnMut(&[u8; 20]) -> Option<InfoHash>,
    ) -> Result<(), MseError> {
        let req3 = hash2(b"req3", &self.secret);
        let mut req2 = [0u8; 20];
        for i in 0..20 {
            req2[i] = self.input[i] ^ req3[i];
        }
        self.input.clear();
        let skey = lookup(&req2).ok_or(MseError::UnknownTorrent)?;
        self.skey = Some(skey);
        self.recv = Some(rc4_key(b"keyA", &self.secret, &skey));
        self.send = Some(rc4_key(b"keyB", &self.secret, &skey));
        self.state = State::AwaitProvide;
        Ok(())
    }

    fn decrypt_input(&mut self) {
        if let Some(c) = self.recv.as_mut() {
            c.apply_keystream(&mut self.input);
        }
    }

    fn on_provide(&mut self) -> Result<(), MseError> {
        self.decrypt_input();
        if self.input[..8] != [0u8; 8] {
            return Err(MseError::BadVerification);
        }
        let provide =
            u32::from_be_bytes([self.input[8], self.input[9], self.input[10], self.input[11]]);
        let pad = u16::from_be_bytes([self.input[12], self.input[13]]);
        self.input.clear();
        if usize::from(pad) > MAX_PAD {
            return Err(MseError::PadTooLong);
        }
        let common = provide & self.methods;
        self.selected = match (common & CRYPTO_PLAINTEXT != 0, common & CRYPTO_RC4 != 0) {
            (true, true) if self.prefer_plaintext => CRYPTO_PLAINTEXT,
            (_, true) => CRYPTO_RC4,
            (true, false) => CRYPTO_PLAINTEXT,
            (false, false) => return Err(MseError::NoCommonMethod),
        };
        self.pad_is_c = true;
        self.state = if pad > 0 {
            State::SkipPad(pad)
        } else {
            State::AwaitIaLen
        };
        Ok(())
    }

    fn on_ia_len(&mut self) {
        self.decrypt_input();
        self.ia_len = u16::from_be_bytes([self.input[0], self.input[1]]);
        self.input.clear();
        let pad_d = self.rng.below(OUR_MAX_PAD as u64 + 1) as u16;
        let mut head = [0u8; 14];
        head[8..12].copy_from_slice(&self.selected.to_be_bytes());
        head[12..14].copy_from_slice(&pad_d.to_be_bytes());
        self.queue_encrypted(&head);
        let zeros = [0u8; OUR_MAX_PAD];
        self.queue_encrypted(&zeros[..usize::from(pad_d)]);
        self.state = State::Done;
    }

    fn on_select(&mut self) -> Result<(), MseError> {
        self.decrypt_input();
        let select =
            u32::from_be_bytes([self.input[0], self.input[1], self.input[2], self.input[3]]);
        let pad = u16::from_be_bytes([self.input[4], self.input[5]]);
        self.input.clear();
        if !(select == CRYPTO_PLAINTEXT || select == CRYPTO_RC4) || select & self.methods == 0 {
            return Err(MseError::BadSelect);
        }
        if usize::from(pad) > MAX_PAD {
            return Err(MseError::PadTooLong);
        }
        self.selected = select;
        self.pad_is_c = false;
        self.state = if pad > 0 {
            State::SkipPad(pad)
        } else {
            State::Done
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests;
