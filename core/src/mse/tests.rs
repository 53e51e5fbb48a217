use super::*;

const HASH: InfoHash = InfoHash([0x5a; 20]);

fn private(n: u8) -> [u8; PRIVATE_LEN] {
    let mut p = [0u8; PRIVATE_LEN];
    for (i, b) in p.iter_mut().enumerate() {
        *b = n.wrapping_mul(31).wrapping_add(i as u8 * 7) | 1;
    }
    p
}

fn known(h: &[u8; 20]) -> Option<InfoHash> {
    (*h == req2_hash(&HASH)).then_some(HASH)
}

/// Runs both sides against each other, moving at most `chunk` bytes per step, and
/// returns both finished handshakes.
fn run(
    mut a: Handshake,
    mut b: Handshake,
    chunk: usize,
) -> Result<(Handshake, Handshake), MseError> {
    let mut buf = [0u8; 2048];
    for _ in 0..100_000 {
        if a.is_done() && b.is_done() && !a.wants_transmit() && !b.wants_transmit() {
            return Ok((a, b));
        }
        let n = a.poll_transmit(&mut buf[..chunk]);
        let used = b.handle_recv(&buf[..n], &mut known)?;
        assert_eq!(used, n, "a handshake consumes only handshake bytes");
        let n = b.poll_transmit(&mut buf[..chunk]);
        let used = a.handle_recv(&buf[..n], &mut |_| None)?;
        assert_eq!(used, n);
    }
    panic!("handshake did not finish");
}

#[test]
fn public_key_is_two_to_the_private() {
    let mut p = [0u8; PRIVATE_LEN];
    p[PRIVATE_LEN - 1] = 10;
    let y = public_key(&p);
    assert_eq!(&y[..KEY_LEN - 2], &[0u8; KEY_LEN - 2][..]);
    assert_eq!(&y[KEY_LEN - 2..], &[4, 0]);
}

#[test]
fn both_sides_agree_on_the_secret() {
    let (pa, pb) = (private(1), private(2));
    let (ya, yb) = (public_key(&pa), public_key(&pb));
    assert_ne!(ya, yb);
    let sa = shared_secret(&pa, &yb).expect("test value");
    let sb = shared_secret(&pb, &ya).expect("test value");
    assert_eq!(sa, sb);
    assert_ne!(sa, [0u8; KEY_LEN]);
}

#[test]
fn weak_public_keys_are_refused() {
    let p: [u8; KEY_LEN] = U768::from_be_hex(PRIME_HEX).to_be_bytes();
    let mut p_minus_1 = p;
    p_minus_1[KEY_LEN - 1] -= 1;
    let mut one = [0u8; KEY_LEN];
    one[KEY_LEN - 1] = 1;
    for bad in [[0u8; KEY_LEN], one, p_minus_1, p, [0xff; KEY_LEN]] {
        assert_eq!(
            shared_secret(&private(3), &bad),
            Err(MseError::BadPublicKey)
        );
    }
}

fn exchange(provide: u32, accept: u32, prefer_plain: bool, chunk: usize) -> Method {
    let a = Handshake::initiator(HASH, provide, private(4), 11);
    let b = Handshake::responder(accept, prefer_plain, private(5), 12);
    let (mut a, mut b) = run(a, b, chunk).expect("test value");
    assert_eq!(b.info_hash(), Some(HASH));
    let (ma, mut ca) = a.finish().expect("test value");
    let (mb, mut cb) = b.finish().expect("test value");
    assert_eq!(ma, mb);
    // Payload both ways after the handshake.
    let msg = *b"\x13BitTorrent protocol and then some payload bytes";
    let mut x = msg;
    ca.encrypt(&mut x);
    assert_eq!(
        ma == Method::Rc4,
        x != msg,
        "RC4 changes the bytes, plain text does not"
    );
    cb.decrypt(&mut x);
    assert_eq!(x, msg);
    let mut y = msg;
    cb.encrypt(&mut y);
    ca.decrypt(&mut y);
    assert_eq!(y, msg);
    assert_eq!(ca.is_passthrough(), ma == Method::Plaintext);
    ma
}

#[test]
fn negotiation_picks_the_expected_method() {
    let both = CRYPTO_PLAINTEXT | CRYPTO_RC4;
    assert_eq!(exchange(both, both, true, 2048), Method::Plaintext);
    assert_eq!(exchange(both, both, false, 2048), Method::Rc4);
    assert_eq!(exchange(CRYPTO_RC4, both, true, 2048), Method::Rc4);
    assert_eq!(exchange(both, CRYPTO_RC4, true, 2048), Method::Rc4);
    assert_eq!(
        exchange(CRYPTO_PLAINTEXT, both, false, 2048),
        Method::Plaintext
    );
}

#[test]
fn any_split_of_the_stream_works() {
    for chunk in [1, 2, 3, 7, 19, 20, 21, 95, 96, 97, 500] {
        exchange(CRYPTO_PLAINTEXT | CRYPTO_RC4, CRYPTO_RC4, true, chunk);
        exchange(CRYPTO_PLAINTEXT | CRYPTO_RC4, CRYPTO_PLAINTEXT, true, chunk);
    }
}

#[test]
fn many_seeds_many_pad_lengths() {
    for seed in 0..40u64 {
        let a = Handshake::initiator(HASH, CRYPTO_RC4, private(seed as u8), seed);
        let b = Handshake::responder(CRYPTO_RC4, true, private(seed as u8 + 100), seed * 7 + 1);
        let (mut a, mut b) = run(a, b, 64).expect("test value");
        assert_eq!(a.finish().expect("test value").0, Method::Rc4);
        assert_eq!(b.finish().expect("test value").0, Method::Rc4);
    }
}

#[test]
fn no_common_method_is_an_error() {
    let a = Handshake::initiator(HASH, CRYPTO_RC4, private(6), 1);
    let b = Handshake::responder(CRYPTO_PLAINTEXT, true, private(7), 2);
    assert_eq!(run(a, b, 2048).err(), Some(MseError::NoCommonMethod));
}

#[test]
fn unknown_torrent_is_an_error() {
    let a = Handshake::initiator(InfoHash([1; 20]), CRYPTO_RC4, private(6), 1);
    let b = Handshake::responder(CRYPTO_RC4, true, private(7), 2);
    assert_eq!(run(a, b, 2048).err(), Some(MseError::UnknownTorrent));
}

#[test]
fn a_plain_bittorrent_handshake_never_syncs() {
    // A responder fed a plain handshake (and more) gives up within the window.
    let mut b = Handshake::responder(CRYPTO_RC4, true, private(8), 3);
    let mut data = [0u8; 1000];
    data[0] = 19;
    data[1..20].copy_from_slice(b"BitTorrent protocol");
    for (i, x) in data[20..].iter_mut().enumerate() {
        *x = i as u8;
    }
    let mut r = Ok(0);
    for chunk in data.chunks(50) {
        r = b.handle_recv(chunk, &mut known);
        if r.is_err() {
            break;
        }
    }
    assert_eq!(r, Err(MseError::NoSync));
    assert!(!b.is_done());
}

#[test]
fn initiator_gives_up_without_the_vc() {
    let mut a = Handshake::initiator(HASH, CRYPTO_RC4, private(9), 4);
    let mut out = [0u8; 2048];
    a.poll_transmit(&mut out);
    let yb = public_key(&private(10));
    assert_eq!(a.handle_recv(&yb, &mut |_| None), Ok(KEY_LEN));
    let junk = [0x33u8; 600];
    assert_eq!(a.handle_recv(&junk, &mut |_| None), Err(MseError::NoSync));
}

/// Plays the initiator by hand, the way libtorrent does: the BitTorrent handshake as
/// the initial payload, `pad_c` bytes of PadC, and returns what the responder made of it.
fn scripted_initiator(
    provide: u32,
    pad_c: u16,
    ia: &[u8],
) -> Result<(Handshake, usize, [u8; KEY_LEN]), MseError> {
    let pa = private(20);
    let mut b = Handshake::responder(CRYPTO_PLAINTEXT | CRYPTO_RC4, true, private(21), 5);
    let mut msg = [0u8; 4096];
    let mut n = 0;
    let put = |m: &mut [u8; 4096], n: &mut usize, d: &[u8]| {
        m[*n..*n + d.len()].copy_from_slice(d);
        *n += d.len();
    };
    put(&mut msg, &mut n, &public_key(&pa));
    put(&mut msg, &mut n, &[0xAB; 77]); // PadA
    let used = b.handle_recv(&msg[..n], &mut known)?;
    assert_eq!(used, n);
    let mut yb = [0u8; 2048];
    let k = b.poll_transmit(&mut yb);
    assert!(k >= KEY_LEN);
    let mut their = [0u8; KEY_LEN];
    their.copy_from_slice(&yb[..KEY_LEN]);
    let s = shared_secret(&pa, &their)?;
    let mut enc = rc4_key(b"keyA", &s, &HASH);
    let mut n = 0;
    put(&mut msg, &mut n, &hash2(b"req1", &s));
    let (r2, r3) = (req2_hash(&HASH), hash2(b"req3", &s));
    let x: [u8; 20] = core::array::from_fn(|i| r2[i] ^ r3[i]);
    put(&mut msg, &mut n, &x);
    let start = n;
    put(&mut msg, &mut n, &[0u8; 8]);
    put(&mut msg, &mut n, &provide.to_be_bytes());
    put(&mut msg, &mut n, &pad_c.to_be_bytes());
    let pad = [0u8; 600];
    put(&mut msg, &mut n, &pad[..usize::from(pad_c).min(600)]);
    put(&mut msg, &mut n, &(ia.len() as u16).to_be_bytes());
    put(&mut msg, &mut n, ia);
    put(&mut msg, &mut n, b"after");
    enc.apply_keystream(&mut msg[start..n - 5]);
    let used = b.handle_recv(&msg[..n], &mut known)?;
    // Everything after the handshake is handed back, IA first, still encrypted.
    let mut rest = [0u8; KEY_LEN];
    let tail = n - used;
    rest[..tail].copy_from_slice(&msg[used..n]);
    Ok((b, tail, rest))
}

#[test]
fn initial_payload_is_decrypted_then_plain_text_follows() {
    let ia = *b"\x13BitTorrent protocol-initial-payload";
    let (mut b, tail, mut rest) =
        scripted_initiator(CRYPTO_PLAINTEXT | CRYPTO_RC4, 3, &ia).expect("test value");
    assert!(b.is_done());
    assert_eq!(tail, ia.len() + 5);
    let (m, mut c) = b.finish().expect("test value");
    assert_eq!(m, Method::Plaintext);
    // Split the decryption across calls: the IA boundary is kept.
    c.decrypt(&mut rest[..10]);
    c.decrypt(&mut rest[10..tail]);
    assert_eq!(&rest[..ia.len()], &ia);
    assert_eq!(&rest[ia.len()..tail], b"after");
    assert!(c.is_passthrough());
}

#[test]
fn long_pads_are_refused() {
    assert_eq!(
        scripted_initiator(CRYPTO_RC4, 513, b"").err(),
        Some(MseError::PadTooLong)
    );
    assert_eq!(
        scripted_initiator(0, 0, b"").err(),
        Some(MseError::NoCommonMethod)
    );
}
