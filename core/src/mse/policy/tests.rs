//! The policy against real frames: two links (or a link and a scripted peer) joined
//! by in-memory byte queues, each with a stand-in session that sends its BitTorrent
//! handshake when told of the connection and answers the peer's.

extern crate std;

use std::vec::Vec;

use super::*;
use crate::mse::req2_hash;

type L = Link;

const A: InfoHash = InfoHash([0xa1; 20]);
const B: InfoHash = InfoHash([0xb2; 20]);
const OTHER: InfoHash = InfoHash([0xee; 20]);
const OURS: &[InfoHash] = &[A, B];
const T0: Instant = Instant::from_millis(1_000);

fn keys(n: u8) -> Keys {
    let mut private = [0u8; PRIVATE_LEN];
    for (i, b) in private.iter_mut().enumerate() {
        *b = n.wrapping_mul(37).wrapping_add(i as u8 * 11) | 1;
    }
    Keys {
        private,
        pad_seed: u64::from(n) * 1_000_003,
    }
}

/// A BitTorrent handshake (BEP 3) for `ih`, from a peer id ending in `who`.
fn bt_handshake(ih: InfoHash, who: u8) -> [u8; 68] {
    let mut h = [0u8; 68];
    h[..20].copy_from_slice(PLAIN_PREFIX);
    h[28..48].copy_from_slice(&ih.0);
    h[48..67].copy_from_slice(b"-XX0001-policytest-");
    h[67] = who;
    h
}

/// One end: its link, what it sent that the other end has not read, what its session
/// received, and what happened.
struct End {
    link: L,
    wire: Vec<u8>,
    session: Vec<u8>,
    /// The session learnt of the connection (and sent its handshake).
    told: bool,
    method: Option<Method>,
    error: Option<LinkError>,
}

impl End {
    fn new(link: L) -> Self {
        Self {
            link,
            wire: Vec::new(),
            session: Vec::new(),
            told: false,
            method: None,
            error: None,
        }
    }

    /// The session's bytes, through the link, onto the wire.
    fn session_send(&mut self, bytes: &[u8]) {
        assert!(
            !self.link.negotiating(),
            "the session spoke during a handshake"
        );
        let mut b = bytes.to_vec();
        self.link.encrypt(&mut b);
        self.wire.extend_from_slice(&b);
    }

    /// Feeds bytes from the peer; false once the link refused the connection.
    fn recv(&mut self, bytes: &[u8], torrents: &[InfoHash], hello: [u8; 68]) -> bool {
        let mut b = bytes.to_vec();
        let mut out = Vec::new();
        let mut data = Vec::new();
        let mut established = None;
        let r = self.link.handle_recv(&mut b, torrents, &mut |up| match up {
            Up::Transmit(t) => {
                assert!(data.is_empty() && established.is_none(), "reply after data");
                out.extend_from_slice(t)
            }
            Up::Established { outgoing, method } => established = Some((outgoing, method)),
            Up::Data(d) => data.extend_from_slice(d),
        });
        self.wire.extend_from_slice(&out);
        if let Some((outgoing, method)) = established {
            self.method = Some(method);
            if outgoing {
                self.told = true;
                self.session_send(&hello);
            }
        }
        let had = self.session.len();
        self.session.extend_from_slice(&data);
        // An accepting session answers a handshake once it has one.
        if !self.link.is_outgoing() && had < 68 && self.session.len() >= 68 {
            self.told = true;
            self.session_send(&hello);
        }
        if let Err(e) = r {
            self.error = Some(e);
            return false;
        }
        true
    }
}

/// How a connection attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Both sessions have each other's handshake; the method if MSE ran.
    Connected(Option<Method>),
    /// The acceptor refused (`LinkError`) and closed; the dialer's verdict.
    Refused(LinkError, Close),
    /// The dialer gave up (a bad answer); its verdict.
    DialerFailed(LinkError, Close),
}

/// Dials from `dialer` to `acceptor` (for torrent `ih`), moving at most `chunk` bytes
/// a step each way, until both sessions have each other's handshake or one side
/// closes.
fn run(dialer: L, acceptor: L, ih: InfoHash, chunk: usize) -> (Outcome, End, End) {
    let mut d = End::new(dialer);
    let mut a = End::new(acceptor);
    let mut buf = [0u8; 1024];
    loop {
        let n = d.link.poll_transmit(&mut buf);
        if n == 0 {
            break;
        }
        d.wire.extend_from_slice(&buf[..n]);
    }
    if d.link.handle_connected() {
        d.told = true;
        d.session_send(&bt_handshake(ih, 1));
    }
    for _ in 0..100_000 {
        if d.session.len() >= 68 && a.session.len() >= 68 {
            let method = d.method;
            assert_eq!(method, a.method, "both ends agree on the method");
            return (Outcome::Connected(method), d, a);
        }
        let moved = !d.wire.is_empty() || !a.wire.is_empty();
        assert!(moved, "stalled: {:?} / {:?}", d.link, a.link);
        let n = chunk.min(d.wire.len());
        let bytes: Vec<u8> = d.wire.drain(..n).collect();
        if !a.recv(&bytes, OURS, bt_handshake(ih, 2)) {
            let e = a.error.expect("error");
            let _ = a.link.close();
            // The acceptor closed: the dialer sees the connection end.
            let v = d.link.close();
            return (Outcome::Refused(e, v), d, a);
        }
        let n = chunk.min(a.wire.len());
        let bytes: Vec<u8> = a.wire.drain(..n).collect();
        if !d.recv(&bytes, &[], bt_handshake(ih, 1)) {
            let e = d.error.expect("error");
            let v = d.link.close();
            return (Outcome::DialerFailed(e, v), d, a);
        }
    }
    panic!("no end after 100000 steps");
}

fn dial(policy: Encryption, ih: InfoHash, n: u8) -> L {
    L::outgoing(policy, ih, keys(n), T0)
}

fn accept(policy: Encryption, n: u8) -> L {
    L::incoming(policy, keys(n))
}

/// What a dialer under `dial` meets at an acceptor under `accept`, and after the
/// redial if one is asked for: every pair of policies.
#[test]
fn every_policy_pair() {
    use Encryption::*;
    use Method::{Plaintext as P, Rc4};
    #[derive(Debug, PartialEq, Eq)]
    enum Want {
        Plain,
        Mse(Method),
        /// Refused by the acceptor, the dialer's verdict, and then (after a redial)
        /// plain text.
        RefusedThenPlain(LinkError),
        Refused(LinkError, Close),
    }
    let table = [
        (Disabled, Disabled, Want::Plain),
        (Disabled, Allowed, Want::Plain),
        (Disabled, Preferred, Want::Plain),
        (
            Disabled,
            Required,
            Want::Refused(LinkError::PlainRefused, Close::Disconnected),
        ),
        (Allowed, Disabled, Want::Plain),
        (Allowed, Allowed, Want::Plain),
        (Allowed, Preferred, Want::Plain),
        (
            Allowed,
            Required,
            Want::Refused(LinkError::PlainRefused, Close::Disconnected),
        ),
        (
            Preferred,
            Disabled,
            Want::RefusedThenPlain(LinkError::EncryptionRefused),
        ),
        (Preferred, Allowed, Want::Mse(P)),
        (Preferred, Preferred, Want::Mse(P)),
        (Preferred, Required, Want::Mse(Rc4)),
        (
            Required,
            Disabled,
            Want::Refused(LinkError::EncryptionRefused, Close::ConnectFailed),
        ),
        (Required, Allowed, Want::Mse(Rc4)),
        (Required, Preferred, Want::Mse(Rc4)),
        (Required, Required, Want::Mse(Rc4)),
    ];
    for (i, (dp, ap, want)) in table.into_iter().enumerate() {
        for chunk in [1, 7, 100, 4096] {
            let n = i as u8 * 2;
            let (got, d, a) = run(dial(dp, A, n), accept(ap, n + 1), A, chunk);
            let ctx = (dp, ap, chunk);
            match &want {
                Want::Plain => assert_eq!(got, Outcome::Connected(None), "{ctx:?}"),
                Want::Mse(m) => assert_eq!(got, Outcome::Connected(Some(*m)), "{ctx:?}"),
                Want::Refused(e, v) => {
                    assert_eq!(got, Outcome::Refused(*e, *v), "{ctx:?}");
                    assert!(
                        a.session.is_empty(),
                        "{ctx:?}: refused bytes reached the session"
                    );
                }
                Want::RefusedThenPlain(e) => {
                    assert_eq!(got, Outcome::Refused(*e, Close::RedialPlain), "{ctx:?}");
                    assert!(!d.told, "{ctx:?}: the session learnt of the failed attempt");
                    assert!(a.session.is_empty(), "{ctx:?}");
                    let redial = L::outgoing_plain(dp);
                    let (got, _, _) = run(redial, accept(ap, n + 3), A, chunk);
                    assert_eq!(got, Outcome::Connected(None), "{ctx:?}: the redial");
                }
            }
            if let Outcome::Connected(_) = got {
                // What follows the handshakes reaches the other side intact, both ways.
                assert_eq!(d.session, bt_handshake(A, 2), "{ctx:?}");
                assert_eq!(a.session, bt_handshake(A, 1), "{ctx:?}");
            }
        }
    }
}

/// A payload stream after the handshakes, both ways, in odd chunks: what each
/// session sends is what the other receives, RC4 or not.
#[test]
fn payload_crosses_an_established_link() {
    for (dp, ap) in [
        (Encryption::Required, Encryption::Allowed),
        (Encryption::Preferred, Encryption::Preferred),
        (Encryption::Allowed, Encryption::Allowed),
    ] {
        let (got, mut d, mut a) = run(dial(dp, B, 9), accept(ap, 10), B, 33);
        assert!(matches!(got, Outcome::Connected(_)));
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let (d0, a0) = (d.session.len(), a.session.len());
        for part in payload.chunks(333) {
            d.session_send(part);
            a.session_send(part);
        }
        for part in d.wire.clone().chunks(17) {
            assert!(a.recv(part, OURS, [0; 68]));
        }
        for part in a.wire.clone().chunks(19) {
            assert!(d.recv(part, &[], [0; 68]));
        }
        assert!(a.session[a0..] == payload[..], "{dp:?} -> {ap:?}");
        assert!(d.session[d0..] == payload[..], "{ap:?} -> {dp:?}");
    }
}

/// A peer that closes the connection as soon as it reads something that is not a
/// plain handshake (what a client without MSE does): under `Preferred` the dialer is
/// told to redial in plain text, and the redial, whatever becomes of it, never asks
/// for another one.
#[test]
fn preferred_falls_back_to_plain_once_and_only_once() {
    let mut l = dial(Encryption::Preferred, A, 1);
    let mut opening = [0u8; 1024];
    assert!(
        l.poll_transmit(&mut opening) >= 96,
        "an MSE opening, not plain"
    );
    assert_ne!(&opening[..20], PLAIN_PREFIX);
    assert!(!l.handle_connected(), "the session waits for the handshake");
    // The peer reads the opening, sees no `\x13BitTorrent protocol` and closes.
    assert_eq!(l.close(), Close::RedialPlain);
    assert_eq!(l.close(), Close::RedialPlain, "close is idempotent");
    // The redial: plain from the first byte, known to the session at once.
    let mut r = L::outgoing_plain(Encryption::Preferred);
    assert_eq!(
        r.poll_transmit(&mut opening),
        0,
        "nothing before the session"
    );
    assert_eq!(r.poll_timeout(), None);
    assert!(r.handle_connected());
    assert!(!r.negotiating());
    // The plain-only peer closes this one too (or it dies later): no second redial.
    assert_eq!(r.close(), Close::Disconnected);
    // A redial whose TCP connect fails: the dial failed, no second redial either.
    let mut r = L::outgoing_plain(Encryption::Preferred);
    assert_eq!(r.close(), Close::ConnectFailed);
}

/// A peer that answers the MSE opening with garbage (a plain handshake of its own,
/// then bytes that never hold the sync marker): the initiator gives up within the
/// spec's bound and, under `Preferred`, redials in plain text; under `Required` it
/// does not.
#[test]
fn garbage_answer_redials_plain_only_when_preferred() {
    for (policy, verdict) in [
        (Encryption::Preferred, Close::RedialPlain),
        (Encryption::Required, Close::ConnectFailed),
    ] {
        let mut l = dial(policy, A, 3);
        let mut buf = [0u8; 1024];
        let _ = l.poll_transmit(&mut buf);
        assert!(!l.handle_connected());
        let mut answer = bt_handshake(A, 7).to_vec();
        answer.extend((0..1200u32).map(|i| (i * 31 + 5) as u8));
        let mut err = None;
        for part in answer.chunks_mut(50) {
            match l.handle_recv(part, OURS, &mut |_| {}) {
                Ok(()) => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let err = err.expect("garbage must fail the handshake");
        assert!(matches!(err, LinkError::Mse(_)), "{err:?}");
        assert_eq!(l.close(), verdict, "{policy:?}");
    }
}

/// A peer that accepts TCP and never answers: the deadline is the policy's, and past
/// it `Preferred` redials in plain text, `Required` gives up; a connect still pending
/// at the deadline is a failed dial under both.
#[test]
fn handshake_timeout_redials_plain_only_when_preferred() {
    for (policy, verdict) in [
        (Encryption::Preferred, Close::RedialPlain),
        (Encryption::Required, Close::ConnectFailed),
    ] {
        let mut l = dial(policy, A, 5);
        assert_eq!(l.poll_timeout(), Some(T0 + HANDSHAKE_TIMEOUT));
        assert!(!l.handle_connected());
        let just_before = Instant::from_millis((T0 + HANDSHAKE_TIMEOUT).as_millis() - 1);
        assert_eq!(l.handle_timeout(just_before), None, "{policy:?}");
        assert_eq!(
            l.handle_timeout(T0 + HANDSHAKE_TIMEOUT),
            Some(verdict),
            "{policy:?}"
        );
        assert_eq!(l.poll_timeout(), None, "{policy:?}: no second timeout");
        // TCP never connected: the dial failed, no plain redial.
        let mut l = dial(policy, A, 6);
        assert_eq!(
            l.handle_timeout(T0 + HANDSHAKE_TIMEOUT),
            Some(Close::ConnectFailed),
            "{policy:?}"
        );
    }
    // Plain dials have no deadline of the link's.
    for policy in [Encryption::Disabled, Encryption::Allowed] {
        let l = dial(policy, A, 7);
        assert_eq!(l.poll_timeout(), None);
    }
}

/// Once the handshake is done, the deadline is gone and a close is an ordinary
/// disconnection: the session knew of the connection.
#[test]
fn an_established_dial_is_not_redialed() {
    for policy in [Encryption::Preferred, Encryption::Required] {
        let (got, mut d, _) = run(dial(policy, A, 11), accept(Encryption::Allowed, 12), A, 64);
        assert!(matches!(got, Outcome::Connected(Some(_))));
        assert!(d.told);
        assert_eq!(d.link.poll_timeout(), None);
        assert_eq!(d.link.handle_timeout(T0 + HANDSHAKE_TIMEOUT), None);
        assert_eq!(d.link.close(), Close::Disconnected);
    }
}

/// `Required` refuses a plain handshake as soon as its 20 bytes are in, and hands none
/// of it to the session; `Disabled` refuses MSE at its first byte.
#[test]
fn required_refuses_plain_and_disabled_refuses_mse() {
    let mut l = accept(Encryption::Required, 1);
    let mut hs = bt_handshake(A, 3);
    let mut seen = Vec::new();
    let r = l.handle_recv(&mut hs[..19], OURS, &mut |u| seen.push(format_up(u)));
    assert_eq!(r, Ok(()), "undecided before the 20th byte");
    let r = l.handle_recv(&mut hs[19..], OURS, &mut |u| seen.push(format_up(u)));
    assert_eq!(r, Err(LinkError::PlainRefused));
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(l.close(), Close::Disconnected);

    let mut l = accept(Encryption::Disabled, 2);
    let mut d = dial(Encryption::Preferred, A, 3);
    let mut opening = [0u8; 1024];
    let n = d.poll_transmit(&mut opening);
    let first = opening[..n]
        .iter()
        .position(|&b| b != 0x13)
        .expect("a key byte");
    let r = l.handle_recv(&mut opening[..n], OURS, &mut |u| seen.push(format_up(u)));
    assert_eq!(r, Err(LinkError::EncryptionRefused));
    assert!(seen.is_empty(), "{seen:?}");
    assert!(first < 20);
}

fn format_up(u: Up<'_>) -> &'static str {
    match u {
        Up::Transmit(_) => "transmit",
        Up::Established { .. } => "established",
        Up::Data(_) => "data",
    }
}

/// An encryption handshake naming (through SKEY) a torrent we do not have is refused
/// at the SKEY, before anything is answered after it.
#[test]
fn unknown_skey_is_refused() {
    for policy in [
        Encryption::Allowed,
        Encryption::Preferred,
        Encryption::Required,
    ] {
        let (got, _, a) = run(
            dial(Encryption::Required, OTHER, 21),
            accept(policy, 22),
            OTHER,
            40,
        );
        assert_eq!(
            got,
            Outcome::Refused(
                LinkError::Mse(MseError::UnknownTorrent),
                Close::ConnectFailed
            ),
            "{policy:?}"
        );
        assert!(a.session.is_empty());
        // Under `Preferred` the dialer would try plain text next, where the plain
        // check refuses the same torrent.
        let (got, _, _) = run(
            dial(Encryption::Preferred, OTHER, 23),
            accept(policy, 24),
            OTHER,
            40,
        );
        assert_eq!(
            got,
            Outcome::Refused(LinkError::Mse(MseError::UnknownTorrent), Close::RedialPlain),
            "{policy:?}"
        );
    }
    assert_ne!(req2_hash(&OTHER), req2_hash(&A));
}

/// A plain handshake naming a torrent we do not have is refused once its info-hash is
/// in, and the session sees none of it.
#[test]
fn unknown_plain_info_hash_is_refused() {
    for policy in [
        Encryption::Disabled,
        Encryption::Allowed,
        Encryption::Preferred,
    ] {
        for chunk in [1, 20, 48, 68] {
            let (got, _, a) = run(
                dial(Encryption::Allowed, OTHER, 31),
                accept(policy, 32),
                OTHER,
                chunk,
            );
            assert_eq!(
                got,
                Outcome::Refused(LinkError::UnknownTorrent, Close::Disconnected),
                "{policy:?} {chunk}"
            );
            assert!(a.session.is_empty(), "{policy:?} {chunk}");
        }
        // And one we have goes through, byte for byte.
        let (got, _, a) = run(dial(Encryption::Allowed, B, 33), accept(policy, 34), B, 5);
        assert_eq!(got, Outcome::Connected(None));
        assert_eq!(a.session, bt_handshake(B, 1));
    }
}

/// After naming torrent A in the encryption handshake, a peer's BitTorrent handshake
/// must name A too: B (which we also have) is refused.
#[test]
fn bt_handshake_must_name_the_skey_torrent() {
    for (provide_policy, chunk) in [
        (Encryption::Preferred, 3),
        (Encryption::Required, 48),
        (Encryption::Required, 4096),
    ] {
        // The dialer names A in SKEY, and its session then sends a handshake for B.
        let mut d = End::new(dial(provide_policy, A, 41));
        let mut a = End::new(accept(Encryption::Allowed, 42));
        let mut buf = [0u8; 1024];
        let n = d.link.poll_transmit(&mut buf);
        d.wire.extend_from_slice(&buf[..n]);
        assert!(!d.link.handle_connected());
        let mut refused = None;
        for _ in 0..10_000 {
            let n = chunk.min(d.wire.len());
            let bytes: Vec<u8> = d.wire.drain(..n).collect();
            if !a.recv(&bytes, OURS, bt_handshake(A, 2)) {
                refused = a.error;
                break;
            }
            let n = chunk.min(a.wire.len());
            let bytes: Vec<u8> = a.wire.drain(..n).collect();
            assert!(d.recv(&bytes, &[], bt_handshake(B, 1)));
        }
        assert_eq!(refused, Some(LinkError::OtherTorrent), "{provide_policy:?}");
        assert!(a.session.is_empty(), "the session saw the wrong handshake");
        assert_eq!(a.link.close(), Close::Disconnected);
    }
}

/// A plain peer's first bytes may arrive one at a time: nothing is decided, sent or
/// delivered until the policy can tell, and the bytes held come out in order.
#[test]
fn sniffing_holds_partial_bytes() {
    let mut l = accept(Encryption::Preferred, 51);
    let hs = bt_handshake(A, 9);
    let mut got = Vec::new();
    for (i, &b) in hs.iter().enumerate() {
        let mut one = [b];
        let r = l.handle_recv(&mut one, OURS, &mut |u| match u {
            Up::Data(d) => got.extend_from_slice(d),
            other => panic!("{other:?}"),
        });
        assert_eq!(r, Ok(()));
        assert_eq!(l.negotiating(), i < 19, "byte {i}");
        if i < 47 {
            assert!(got.is_empty(), "byte {i}: delivered before the check");
        }
    }
    assert_eq!(got, hs);
}

/// The setting's names, as the command line and config files spell them.
#[test]
fn names_round_trip() {
    for e in Encryption::ALL {
        let name = std::format!("{e}");
        assert_eq!(name.parse::<Encryption>(), Ok(e));
    }
    assert_eq!("Preferred".parse::<Encryption>(), Err(UnknownEncryption));
    assert_eq!("".parse::<Encryption>(), Err(UnknownEncryption));
    assert_eq!(Encryption::default(), Encryption::Preferred);
}

/// The link needs no heap: with the handshake and the filter inline it works the same.
#[test]
fn inline_storage_works() {
    let d: Link<Handshake, StreamCrypto> = Link::outgoing(Encryption::Required, A, keys(61), T0);
    let a: Link<Handshake, StreamCrypto> = Link::incoming(Encryption::Required, keys(62));
    let mut d = d;
    let mut a = a;
    let mut buf = [0u8; 1024];
    let mut to_a = Vec::new();
    let n = d.poll_transmit(&mut buf);
    to_a.extend_from_slice(&buf[..n]);
    assert!(!d.handle_connected());
    let mut done = (false, false);
    for _ in 0..100 {
        let mut to_d = Vec::new();
        a.handle_recv(&mut to_a, OURS, &mut |u| match u {
            Up::Transmit(t) => to_d.extend_from_slice(t),
            Up::Established { .. } => done.1 = true,
            Up::Data(_) => {}
        })
        .expect("responder");
        to_a.clear();
        d.handle_recv(&mut to_d, OURS, &mut |u| match u {
            Up::Transmit(t) => to_a.extend_from_slice(t),
            Up::Established { method, .. } => {
                assert_eq!(method, Method::Rc4);
                done.0 = true;
            }
            Up::Data(_) => {}
        })
        .expect("initiator");
        if done == (true, true) {
            return;
        }
    }
    panic!("no handshake");
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever an accepting peer is sent, in whatever pieces, under any policy:
        /// no panic, and the session sees bytes only once they open with a plain
        /// handshake naming a torrent of ours (plain text accepted by the policy) or
        /// an encryption handshake completed.
        #[test]
        fn an_accepted_link_hands_up_only_checked_handshakes(
            policy in 0usize..4,
            plain in any::<bool>(),
            which in 0usize..3,
            tail in proptest::collection::vec(any::<u8>(), 0..700),
            cuts in proptest::collection::vec(1usize..90, 1..12),
        ) {
            let policy = Encryption::ALL[policy];
            let mut bytes = Vec::new();
            if plain {
                bytes.extend_from_slice(&bt_handshake([A, B, OTHER][which], 4)[..48]);
            }
            bytes.extend_from_slice(&tail);
            let mut l = accept(policy, 71);
            let mut data = Vec::new();
            let mut established = false;
            let mut at = 0;
            let mut cut = cuts.iter().cycle();
            while at < bytes.len() {
                let n = (*cut.next().expect("cycle")).min(bytes.len() - at);
                let mut part = bytes[at..at + n].to_vec();
                at += n;
                let r = l.handle_recv(&mut part, OURS, &mut |u| match u {
                    Up::Data(d) => data.extend_from_slice(d),
                    Up::Established { .. } => established = true,
                    Up::Transmit(_) => {}
                });
                if r.is_err() {
                    let _ = l.close();
                    break;
                }
            }
            if !data.is_empty() && !established {
                prop_assert!(policy.accepts_plain());
                prop_assert_eq!(&data[..20], &PLAIN_PREFIX[..]);
                prop_assert!(data.len() >= 48);
                let mut ih = [0u8; 20];
                ih.copy_from_slice(&data[28..48]);
                prop_assert!(OURS.contains(&InfoHash(ih)));
            }
            // Random bytes never complete an encryption handshake naming our torrent.
            prop_assert!(!established);
        }
    }
}
