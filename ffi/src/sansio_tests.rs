//! Tests of the sans-IO layer's encryption, tracker, file and DHT entry points, through
//! the C functions: two sans-IO sessions wired together in memory (no socket), the
//! test carrying bytes and actions between them as a C host would.
use crate::*;
use std::mem::MaybeUninit;
use std::ptr::{null, null_mut};

/// A single-file torrent of 32 KiB (two pieces), announcing to a local tracker.
fn torrent() -> Vec<u8> {
    let mut t = b"d8:announce30:http://127.0.0.1:6969/announce4:infod6:lengthi32768e4:name1:x12:piece lengthi16384e6:pieces40:".to_vec();
    t.extend_from_slice(&[7u8; 40]);
    t.extend_from_slice(b"ee");
    t
}

/// A multi-file torrent: `t/a` (10 bytes), `t/b` (empty), `t/sub/c` (5 bytes).
fn multi_torrent() -> Vec<u8> {
    let mut t = b"d4:infod5:filesld6:lengthi10e4:pathl1:aeed6:lengthi0e4:pathl1:beed6:lengthi5e4:pathl3:sub1:ceee4:name1:t12:piece lengthi16384e6:pieces20:".to_vec();
    t.extend_from_slice(&[9u8; 20]);
    t.extend_from_slice(b"ee");
    t
}

struct H(*mut btcore_sansio);

impl Drop for H {
    fn drop(&mut self) {
        // SAFETY: a live handle, freed once.
        unsafe { btcore_sansio_free(self.0) };
    }
}

fn new(encryption: u32, port: u16, dht: u8) -> H {
    let mut s = MaybeUninit::uninit();
    // SAFETY: valid out-pointers.
    unsafe {
        assert_eq!(btcore_sansio_settings_default(s.as_mut_ptr()), BTCORE_OK);
        let mut s = s.assume_init();
        s.encryption = encryption;
        s.listen_port = port;
        s.random_seed = u64::from(port) + 1;
        s.entropy = [port as u8; 32];
        s.dht = dht;
        let mut h = null_mut();
        assert_eq!(btcore_sansio_new(&s, &mut h), BTCORE_OK);
        H(h)
    }
}

fn add(h: &H, t: &[u8]) -> u32 {
    let mut id = 0;
    // SAFETY: valid buffers and out-pointer.
    let r = unsafe { btcore_sansio_add_torrent(h.0, t.as_ptr(), t.len(), null(), 0, 0, &mut id) };
    assert_eq!(r, BTCORE_OK);
    id
}

fn actions(h: &H) -> Vec<btcore_action> {
    let mut out = Vec::new();
    loop {
        let mut buf = [MaybeUninit::<btcore_action>::uninit(); 16];
        let mut n = 0;
        // SAFETY: a buffer of 16 actions.
        let r = unsafe { btcore_sansio_poll_actions(h.0, buf[0].as_mut_ptr(), 16, &mut n) };
        assert_eq!(r, BTCORE_OK);
        if n == 0 {
            return out;
        }
        // SAFETY: the first `n` were written.
        out.extend(buf[..n].iter().map(|a| unsafe { a.assume_init() }));
    }
}

fn first_poll(h: &H) -> Vec<btcore_action> {
    let mut buf = [MaybeUninit::<btcore_action>::uninit(); 16];
    let mut n = 0;
    // SAFETY: a buffer of 16 actions.
    let r = unsafe { btcore_sansio_poll_actions(h.0, buf[0].as_mut_ptr(), 16, &mut n) };
    assert_eq!(r, BTCORE_OK);
    // SAFETY: the first `n` were written.
    buf[..n]
        .iter()
        .map(|a| unsafe { a.assume_init() })
        .collect()
}

fn events(h: &H) -> Vec<btcore_event> {
    let mut out = Vec::new();
    loop {
        let mut buf = [MaybeUninit::<btcore_event>::uninit(); 16];
        let mut n = 0;
        // SAFETY: a buffer of 16 events.
        let r = unsafe { btcore_sansio_events(h.0, buf[0].as_mut_ptr(), 16, &mut n) };
        assert_eq!(r, BTCORE_OK);
        if n == 0 {
            return out;
        }
        // SAFETY: the first `n` were written.
        out.extend(buf[..n].iter().map(|e| unsafe { e.assume_init() }));
    }
}

fn addr(port: u16) -> btcore_addr {
    btcore_addr::from_socket(([127, 0, 0, 1], port).into())
}

/// Everything `conn` of `h` has to send.
fn transmit(h: &H, conn: u32, now: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        let mut n = 0;
        // SAFETY: a 4096-byte buffer.
        let r = unsafe { btcore_sansio_transmit(h.0, conn, now, buf.as_mut_ptr(), 4096, &mut n) };
        assert_eq!(r, BTCORE_OK);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn recv(h: &H, conn: u32, data: &[u8], now: u64) {
    assert_eq!(
        // SAFETY: a live handle and valid pointers.
        unsafe { btcore_sansio_recv(h.0, conn, data.as_ptr(), data.len(), now) },
        BTCORE_OK
    );
}

/// What happened on one connection from dialer `a` to acceptor `b`.
#[derive(Default)]
struct Outcome {
    /// Bytes `a` sent on the wire.
    a_wire: Vec<u8>,
    a_connected: bool,
    b_connected: bool,
    a_closed: Option<btcore_result>,
    b_closed: Option<btcore_result>,
    /// `a`'s plain-text redial of its connection.
    redial: Option<btcore_action>,
}

/// Runs one TCP connection from `a` (its `CONNECT` action `dial`) to `b`, carrying
/// bytes both ways until both sides are connected or one closes.
fn connect(a: &H, b: &H, dial: &btcore_action, a_port: u16) -> Outcome {
    let mut o = Outcome::default();
    let mut bconn = 0;
    // SAFETY: valid pointers.
    unsafe {
        assert_eq!(
            btcore_sansio_incoming(b.0, &addr(a_port), 1, &mut bconn),
            BTCORE_OK
        );
        assert_eq!(btcore_sansio_connected(a.0, dial.conn, 1), BTCORE_OK);
    }
    for step in 0..50 {
        let now = 2 + step;
        let x = transmit(a, dial.conn, now);
        o.a_wire.extend_from_slice(&x);
        if !x.is_empty() && o.b_closed.is_none() {
            recv(b, bconn, &x, now);
        }
        let y = transmit(b, bconn, now);
        if !y.is_empty() && o.a_closed.is_none() {
            recv(a, dial.conn, &y, now);
        }
        for act in actions(a) {
            match act.kind {
                BTCORE_ACTION_CLOSE if act.conn == dial.conn => o.a_closed = Some(act.error),
                BTCORE_ACTION_CONNECT if act.redial == 1 => o.redial = Some(act),
                _ => {}
            }
        }
        for act in actions(b) {
            if act.kind == BTCORE_ACTION_CLOSE && act.conn == bconn {
                o.b_closed = Some(act.error);
            }
        }
        let connected = |h: &H| {
            events(h)
                .iter()
                .any(|e| e.kind == BTCORE_EVENT_PEER_CONNECTED)
        };
        o.a_connected |= connected(a);
        o.b_connected |= connected(b);
        if (o.a_connected && o.b_connected) || o.b_closed.is_some() || o.a_closed.is_some() {
            break;
        }
    }
    o
}

/// `a` (policy `pa`) learns of `b` (policy `pb`) and dials it: its `CONNECT`.
fn pair(pa: u32, pb: u32) -> (H, H, btcore_action) {
    let (a, b) = (new(pa, 7001, 0), new(pb, 7002, 0));
    let t = torrent();
    let (ta, _) = (add(&a, &t), add(&b, &t));
    assert_eq!(
        // SAFETY: a live handle and valid pointers.
        unsafe { btcore_sansio_add_peer(a.0, ta, &addr(7002), 1) },
        BTCORE_OK
    );
    let dial = actions(&a)
        .into_iter()
        .find(|x| x.kind == BTCORE_ACTION_CONNECT)
        .expect("a CONNECT");
    assert_eq!(dial.redial, 0);
    (a, b, dial)
}

#[test]
fn required_encryption_on_both_sides_hides_the_handshake() {
    let (a, b, dial) = pair(BTCORE_ENCRYPTION_REQUIRED, BTCORE_ENCRYPTION_REQUIRED);
    let o = connect(&a, &b, &dial, 7001);
    assert!(
        o.a_connected && o.b_connected,
        "{:?} {:?}",
        o.a_closed,
        o.b_closed
    );
    // RC4 all along: not one plain BitTorrent handshake on the wire.
    assert!(!o.a_wire.windows(19).any(|w| w == b"BitTorrent protocol"));
    // And both say so in their peer lists.
    assert_ne!(peer_flags(&a) & BTCORE_PEER_ENCRYPTED, 0);
    assert_ne!(peer_flags(&b) & BTCORE_PEER_ENCRYPTED, 0);
    // Where each heard of the other: `a` was given `b` by the application; `b` was
    // dialed (no origin bit).
    let from = BTCORE_PEER_FROM_TRACKER
        | BTCORE_PEER_FROM_DHT
        | BTCORE_PEER_FROM_PEX
        | BTCORE_PEER_FROM_LSD
        | BTCORE_PEER_FROM_USER;
    assert_eq!(peer_flags(&a) & from, BTCORE_PEER_FROM_USER);
    assert_eq!(peer_flags(&b) & from, 0);
}

/// The flags of the first peer of torrent 1.
fn peer_flags(h: &H) -> u32 {
    let mut buf = [MaybeUninit::<btcore_peer_status>::uninit(); 4];
    let mut n = 0;
    // SAFETY: a live handle; `buf` holds 4 records.
    let r = unsafe { btcore_sansio_peers(h.0, 1, buf[0].as_mut_ptr(), buf.len(), &mut n) };
    assert_eq!((r, n), (BTCORE_OK, 1));
    // SAFETY: the library wrote `n` records.
    unsafe { buf[0].assume_init() }.flags
}

#[test]
fn a_plain_dialer_is_refused_by_a_seeder_that_requires_encryption() {
    let (a, b, dial) = pair(BTCORE_ENCRYPTION_DISABLED, BTCORE_ENCRYPTION_REQUIRED);
    let o = connect(&a, &b, &dial, 7001);
    assert_eq!(o.b_closed, Some(BTCORE_PEER_PROTOCOL));
    assert!(!o.a_connected && !o.b_connected);
}

#[test]
fn preferred_redials_in_plain_text_once_when_the_peer_refuses_encryption() {
    let (a, b, dial) = pair(BTCORE_ENCRYPTION_PREFERRED, BTCORE_ENCRYPTION_DISABLED);
    let o = connect(&a, &b, &dial, 7001);
    assert_eq!(o.b_closed, Some(BTCORE_PEER_PROTOCOL));
    assert!(o.redial.is_none());
    // The host sees the peer close the socket and says so: a redial follows.
    assert_eq!(
        // SAFETY: a live handle and valid pointers.
        unsafe { btcore_sansio_disconnected(a.0, dial.conn, 60) },
        BTCORE_OK
    );
    let redial = actions(&a)
        .into_iter()
        .find(|x| x.kind == BTCORE_ACTION_CONNECT)
        .expect("a plain-text redial");
    assert_eq!((redial.conn, redial.redial), (dial.conn, 1));
    assert_eq!(redial.addr, addr(7002));
    let o = connect(&a, &b, &redial, 7001);
    assert!(
        o.a_connected && o.b_connected,
        "{:?} {:?}",
        o.a_closed,
        o.b_closed
    );
    assert_eq!(peer_flags(&a) & BTCORE_PEER_ENCRYPTED, 0, "plain text");
    // The plain redial is the last: its failure is the session's.
    assert_eq!(
        // SAFETY: a live handle and valid pointers.
        unsafe { btcore_sansio_disconnected(a.0, dial.conn, 70) },
        BTCORE_OK
    );
    assert!(!actions(&a)
        .iter()
        .any(|x| x.kind == BTCORE_ACTION_CONNECT && x.redial == 1));
}

/// Crossing dials (a hole punch's): the peer dialed us from the address we dial, and
/// closes our dial while our encryption handshake runs on it. That is a duplicate
/// dropped, not encryption refused: no plain-text redial.
#[test]
fn a_dial_closed_beside_its_twin_is_not_redialed_in_plain_text() {
    let (a, _b, dial) = pair(BTCORE_ENCRYPTION_PREFERRED, BTCORE_ENCRYPTION_PREFERRED);
    let mut twin = 0;
    // SAFETY: a live handle and valid pointers.
    unsafe {
        assert_eq!(
            btcore_sansio_incoming(a.0, &addr(7002), 2, &mut twin),
            BTCORE_OK
        );
        assert_eq!(btcore_sansio_connected(a.0, dial.conn, 2), BTCORE_OK);
    }
    let _ = transmit(&a, dial.conn, 3);
    assert_eq!(
        // SAFETY: a live handle.
        unsafe { btcore_sansio_disconnected(a.0, dial.conn, 4) },
        BTCORE_OK
    );
    assert!(
        !actions(&a)
            .iter()
            .any(|x| x.kind == BTCORE_ACTION_CONNECT && x.redial == 1),
        "redialed beside its twin"
    );
}

#[test]
fn a_silent_peer_fails_the_handshake_after_its_deadline() {
    for (policy, redials) in [
        (BTCORE_ENCRYPTION_PREFERRED, true),
        (BTCORE_ENCRYPTION_REQUIRED, false),
    ] {
        let (a, _b, dial) = pair(policy, BTCORE_ENCRYPTION_REQUIRED);
        // SAFETY: live handle, valid out-pointer.
        unsafe {
            assert_eq!(btcore_sansio_connected(a.0, dial.conn, 1), BTCORE_OK);
            let mut due = 0;
            assert_eq!(btcore_sansio_next_timeout(a.0, &mut due), BTCORE_OK);
            assert!(due <= 1 + 10_000, "{due}");
            assert_eq!(btcore_sansio_handle_timeout(a.0, 10_002), BTCORE_OK);
        }
        let acts = actions(&a);
        let close = acts
            .iter()
            .position(|x| x.kind == BTCORE_ACTION_CLOSE && x.conn == dial.conn)
            .expect("a CLOSE");
        assert_eq!(acts[close].error, BTCORE_PEER_TIMEOUT);
        let redial = acts
            .iter()
            .position(|x| x.kind == BTCORE_ACTION_CONNECT && x.redial == 1);
        assert_eq!(redial.is_some(), redials, "{policy}");
        if let Some(r) = redial {
            assert!(r > close, "the CLOSE comes first");
        }
    }
}

#[test]
fn settings_with_an_unknown_encryption_policy_are_refused() {
    let mut s = MaybeUninit::uninit();
    // SAFETY: valid out-pointers.
    unsafe {
        assert_eq!(btcore_sansio_settings_default(s.as_mut_ptr()), BTCORE_OK);
        let mut s = s.assume_init();
        assert_eq!(s.encryption, BTCORE_ENCRYPTION_PREFERRED);
        s.encryption = 99;
        let mut h = null_mut();
        assert_eq!(btcore_sansio_new(&s, &mut h), BTCORE_INVALID_PARAMETER);
        assert!(h.is_null());
    }
}

#[test]
fn entropy_refuses_null_and_wrong_handles() {
    let h = new(BTCORE_ENCRYPTION_PREFERRED, 1, 0);
    let x = [1u8; 8];
    let not_a_handle = x.as_ptr() as *mut btcore_sansio;
    // SAFETY: the library checks handles before reading them.
    unsafe {
        assert_eq!(btcore_sansio_entropy(h.0, x.as_ptr(), 8), BTCORE_OK);
        assert_eq!(btcore_sansio_entropy(h.0, null(), 0), BTCORE_OK);
        assert_eq!(btcore_sansio_entropy(h.0, null(), 8), BTCORE_NULL_PARAMETER);
        assert_eq!(
            btcore_sansio_entropy(null_mut(), x.as_ptr(), 8),
            BTCORE_NULL_PARAMETER
        );
        assert_eq!(
            btcore_sansio_entropy(not_a_handle, x.as_ptr(), 8),
            BTCORE_WRONG_HANDLE
        );
    }
}

#[test]
fn an_announce_action_carries_what_a_tracker_request_needs() {
    let h = new(BTCORE_ENCRYPTION_PREFERRED, 6881, 0);
    add(&h, &torrent());
    // One poll: the action's `tracker` is valid until the next one.
    let a = first_poll(&h)
        .into_iter()
        .find(|x| x.kind == BTCORE_ACTION_ANNOUNCE)
        .expect("an ANNOUNCE");
    assert_eq!(a.announce_event, BTCORE_ANNOUNCE_STARTED);
    assert_eq!((a.port, a.numwant), (6881, 50));
    assert_ne!(a.info_hash, [0; 20]);
    assert!(a.peer_id.starts_with(b"-BQ"));

    let mut url = [0 as c_char; 512];
    let mut len = 0;
    // SAFETY: valid buffers; the action's `tracker` is live until the next poll.
    unsafe {
        assert_eq!(
            btcore_tracker_announce_url(&a, url.as_mut_ptr(), 512, &mut len),
            BTCORE_OK
        );
        let s = CStr::from_ptr(url.as_ptr()).to_str().expect("UTF-8");
        assert_eq!(s.len(), len);
        assert!(
            s.starts_with("http://127.0.0.1:6969/announce?info_hash="),
            "{s}"
        );
        for part in [
            "&peer_id=-BQ",
            "&port=6881",
            "&left=32768",
            "&event=started",
            "&numwant=50",
            "&key=",
            "&compact=1",
        ] {
            assert!(s.contains(part), "{part} in {s}");
        }
        let mut small = [0 as c_char; 8];
        let mut need = 0;
        assert_eq!(
            btcore_tracker_announce_url(&a, small.as_mut_ptr(), 8, &mut need),
            BTCORE_BUFFER_TOO_SMALL
        );
        assert_eq!(need, len);
        assert_eq!(
            btcore_tracker_announce_url(null(), url.as_mut_ptr(), 512, &mut len),
            BTCORE_NULL_PARAMETER
        );
        let other = btcore_action::new(BTCORE_ACTION_SEND, 0);
        assert_eq!(
            btcore_tracker_announce_url(&other, url.as_mut_ptr(), 512, &mut len),
            BTCORE_INVALID_PARAMETER
        );

        // The same action as a UDP announce: 98 bytes, our info-hash at 16.
        let mut p = [0u8; 128];
        let mut n = 0;
        assert_eq!(
            btcore_tracker_udp_announce_request(&a, 0x1234, 77, p.as_mut_ptr(), 128, &mut n),
            BTCORE_OK
        );
        assert_eq!(n, 98);
        assert_eq!(&p[16..36], &a.info_hash);
        assert_eq!(&p[96..98], &6881u16.to_be_bytes());
    }
}

#[test]
fn http_announce_answers_are_parsed_into_peers_and_interval() {
    let body = b"d8:intervali900e12:min intervali60e5:peers12:\x7f\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x00\x50e";
    let mut peers = [btcore_addr::default(); 4];
    let mut r = btcore_tracker_reply::default();
    // SAFETY: valid buffers.
    unsafe {
        assert_eq!(
            btcore_tracker_parse_announce(body.as_ptr(), body.len(), peers.as_mut_ptr(), 4, &mut r),
            BTCORE_OK
        );
        assert_eq!(
            (
                r.interval_secs,
                r.min_interval_secs,
                r.num_peers,
                r.total_peers,
                r.failure
            ),
            (900, 60, 2, 2, 0)
        );
        assert_eq!(peers[0], addr(6881));
        // A buffer too small: the count of all, the first ones kept.
        assert_eq!(
            btcore_tracker_parse_announce(body.as_ptr(), body.len(), peers.as_mut_ptr(), 1, &mut r),
            BTCORE_OK
        );
        assert_eq!((r.num_peers, r.total_peers), (1, 2));
        let refused = b"d14:failure reason8:not heree";
        assert_eq!(
            btcore_tracker_parse_announce(refused.as_ptr(), refused.len(), null_mut(), 0, &mut r),
            BTCORE_OK
        );
        assert_eq!(r.failure, 1);
        let at = r.failure_offset as usize;
        assert_eq!(&refused[at..at + r.failure_len as usize], b"not here");
        for bad in [&b"d5:peers5:12345e"[..], b"i3e", b"d8:interval", b""] {
            assert_eq!(
                btcore_tracker_parse_announce(bad.as_ptr(), bad.len(), null_mut(), 0, &mut r),
                BTCORE_INVALID_PARAMETER,
                "{bad:?}"
            );
        }
        assert_eq!(
            btcore_tracker_parse_announce(body.as_ptr(), body.len(), null_mut(), 4, &mut r),
            BTCORE_NULL_PARAMETER
        );
    }
}

#[test]
fn an_http_answer_past_the_token_cap_is_refused_not_parsed() {
    // 20,000 values: more tokens than the 16,384 an answer may take.
    let mut body = b"d5:peersl".to_vec();
    for _ in 0..20_000 {
        body.extend_from_slice(b"i0e");
    }
    body.extend_from_slice(b"ee");
    let mut r = btcore_tracker_reply::default();
    // SAFETY: valid buffers.
    let res =
        unsafe { btcore_tracker_parse_announce(body.as_ptr(), body.len(), null_mut(), 0, &mut r) };
    assert_eq!(res, BTCORE_INVALID_PARAMETER);
}

#[test]
fn udp_tracker_packets_round_trip() {
    let mut p = [0u8; 32];
    let mut n = 0;
    let mut id = 0;
    let mut r = btcore_tracker_reply::default();
    let mut peers = [btcore_addr::default(); 2];
    // SAFETY: valid buffers.
    unsafe {
        assert_eq!(
            btcore_tracker_udp_connect_request(5, p.as_mut_ptr(), 32, &mut n),
            BTCORE_OK
        );
        assert_eq!(n, 16);
        assert_eq!(&p[12..16], &5u32.to_be_bytes());
        assert_eq!(
            btcore_tracker_udp_connect_request(5, p.as_mut_ptr(), 15, &mut n),
            BTCORE_BUFFER_TOO_SMALL
        );

        let mut answer = vec![0, 0, 0, 0, 0, 0, 0, 5];
        answer.extend_from_slice(&0xabcdu64.to_be_bytes());
        assert_eq!(
            btcore_tracker_udp_parse_connect(answer.as_ptr(), answer.len(), 5, &mut id),
            BTCORE_OK
        );
        assert_eq!(id, 0xabcd);
        assert_eq!(
            btcore_tracker_udp_parse_connect(answer.as_ptr(), answer.len(), 6, &mut id),
            BTCORE_INVALID_PARAMETER
        );
        assert_eq!(
            btcore_tracker_udp_parse_connect(answer.as_ptr(), 12, 5, &mut id),
            BTCORE_INVALID_PARAMETER
        );

        let mut ann = vec![
            0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0x07, 0x08, 0, 0, 0, 1, 0, 0, 0, 2,
        ];
        ann.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1]);
        assert_eq!(
            btcore_tracker_udp_parse_announce(
                ann.as_ptr(),
                ann.len(),
                9,
                0,
                peers.as_mut_ptr(),
                2,
                &mut r
            ),
            BTCORE_OK
        );
        assert_eq!(
            (r.interval_secs, r.leechers, r.seeders, r.num_peers),
            (0x708, 1, 2, 1)
        );
        assert_eq!(peers[0], addr(6881));
        let mut err = vec![0, 0, 0, 3, 0, 0, 0, 9];
        err.extend_from_slice(b"go away");
        assert_eq!(
            btcore_tracker_udp_parse_announce(err.as_ptr(), err.len(), 9, 0, null_mut(), 0, &mut r),
            BTCORE_OK
        );
        assert_eq!((r.failure, r.failure_offset, r.failure_len), (1, 8, 7));
    }
}

#[test]
fn the_file_list_maps_torrent_offsets_to_files() {
    let h = new(BTCORE_ENCRYPTION_PREFERRED, 1, 0);
    let id = add(&h, &multi_torrent());
    let mut count = 0;
    let mut f = btcore_sansio_file_info::default();
    let mut path = [0 as c_char; 64];
    let (mut index, mut at, mut left) = (0u32, 0u64, 0u64);
    // SAFETY: valid buffers and out-pointers; the library checks the handles.
    unsafe {
        assert_eq!(btcore_sansio_file_count(h.0, id, &mut count), BTCORE_OK);
        assert_eq!(count, 3);
        assert_eq!(
            btcore_sansio_file(h.0, id, 2, &mut f, path.as_mut_ptr(), 64),
            BTCORE_OK
        );
        assert_eq!(CStr::from_ptr(path.as_ptr()).to_bytes(), b"t/sub/c");
        assert_eq!((f.offset, f.length, f.path_len, f.pad), (10, 5, 7, 0));
        assert_eq!(
            btcore_sansio_file(h.0, id, 2, &mut f, path.as_mut_ptr(), 7),
            BTCORE_BUFFER_TOO_SMALL
        );
        assert_eq!(f.path_len, 7);
        assert_eq!(
            btcore_sansio_file(h.0, id, 1, &mut f, null_mut(), 0),
            BTCORE_OK
        );
        assert_eq!((f.offset, f.length), (10, 0));
        assert_eq!(
            btcore_sansio_file(h.0, id, 3, &mut f, null_mut(), 0),
            BTCORE_NOT_FOUND
        );

        assert_eq!(
            btcore_sansio_file_at(h.0, id, 9, &mut index, &mut at, &mut left),
            BTCORE_OK
        );
        assert_eq!((index, at, left), (0, 9, 1));
        assert_eq!(
            btcore_sansio_file_at(h.0, id, 10, &mut index, &mut at, &mut left),
            BTCORE_OK
        );
        assert_eq!((index, at, left), (2, 0, 5));
        assert_eq!(
            btcore_sansio_file_at(h.0, id, 15, &mut index, &mut at, &mut left),
            BTCORE_INVALID_PARAMETER
        );
        assert_eq!(
            btcore_sansio_file_at(h.0, id + 1, 0, &mut index, &mut at, &mut left),
            BTCORE_NOT_FOUND
        );
        assert_eq!(
            btcore_sansio_file_at(h.0, id, 0, null_mut(), &mut at, &mut left),
            BTCORE_NULL_PARAMETER
        );
        assert_eq!(
            btcore_sansio_file_count(null(), id, &mut count),
            BTCORE_NULL_PARAMETER
        );
        let bogus = path.as_ptr() as *const btcore_sansio;
        assert_eq!(
            btcore_sansio_file_count(bogus, id, &mut count),
            BTCORE_WRONG_HANDLE
        );
    }
}

#[test]
fn dht_lookups_are_actions_answered_with_dht_done() {
    let h = new(BTCORE_ENCRYPTION_PREFERRED, 6881, 1);
    let id = add(&h, &torrent());
    assert_eq!(
        // SAFETY: a live handle and valid pointers.
        unsafe { btcore_sansio_handle_timeout(h.0, 1000) },
        BTCORE_OK
    );
    let l = actions(&h)
        .into_iter()
        .find(|x| x.kind == BTCORE_ACTION_DHT_LOOKUP)
        .expect("a DHT lookup");
    assert_eq!((l.torrent, l.port, l.dht_announce), (id, 6881, 1));
    assert_ne!(l.info_hash, [0; 20]);
    // SAFETY: a live handle.
    unsafe {
        assert_eq!(
            btcore_sansio_dht_done(h.0, id, l.id, 7, 1001),
            BTCORE_INVALID_PARAMETER
        );
        assert_eq!(
            btcore_sansio_dht_done(h.0, id, l.id, BTCORE_DHT_REACHED, 1001),
            BTCORE_OK
        );
        assert_eq!(
            btcore_sansio_dht_done(h.0, id, l.id, BTCORE_DHT_REACHED, 1002),
            BTCORE_NOT_FOUND
        );
    }
    // Without `settings.dht`, never.
    let h = new(BTCORE_ENCRYPTION_PREFERRED, 6881, 0);
    add(&h, &torrent());
    assert_eq!(
        // SAFETY: a live handle and valid pointers.
        unsafe { btcore_sansio_handle_timeout(h.0, 1000) },
        BTCORE_OK
    );
    assert!(!actions(&h)
        .iter()
        .any(|x| x.kind == BTCORE_ACTION_DHT_LOOKUP));
}

#[test]
fn the_handshake_deadline_counts_from_the_dial_in_the_hosts_time() {
    // The torrent is added long before the peer comes: the deadline of the dial runs
    // from the call that led to it.
    let t0 = 5_000_000;
    let a = new(BTCORE_ENCRYPTION_REQUIRED, 7001, 0);
    let t = torrent();
    let mut id = 0;
    // SAFETY: valid buffers, pointers and a live handle.
    unsafe {
        assert_eq!(
            btcore_sansio_add_torrent(a.0, t.as_ptr(), t.len(), null(), 0, 1_000, &mut id),
            BTCORE_OK
        );
        assert_eq!(btcore_sansio_add_peer(a.0, id, &addr(7002), t0), BTCORE_OK);
    }
    let dial = actions(&a)
        .into_iter()
        .find(|x| x.kind == BTCORE_ACTION_CONNECT)
        .expect("a CONNECT");
    let closed = |now: u64| {
        // SAFETY: a live handle.
        assert_eq!(unsafe { btcore_sansio_handle_timeout(a.0, now) }, BTCORE_OK);
        actions(&a)
            .iter()
            .any(|x| x.kind == BTCORE_ACTION_CLOSE && x.conn == dial.conn)
    };
    assert_eq!(
        // SAFETY: a live handle and valid pointers.
        unsafe { btcore_sansio_connected(a.0, dial.conn, t0 + 5) },
        BTCORE_OK
    );
    assert!(!closed(t0 + 9_000), "10 s from the dial, not from time 0");
    assert!(closed(t0 + 10_001));
}

struct D(*mut btcore_dht, u16);

impl Drop for D {
    fn drop(&mut self) {
        // SAFETY: a live handle, freed once.
        unsafe { btcore_dht_free(self.0) };
    }
}

fn dht(port: u16, bootstrap: &[u16]) -> D {
    let mut s = MaybeUninit::uninit();
    let seeds: Vec<btcore_addr> = bootstrap.iter().map(|p| addr(*p)).collect();
    let mut h = null_mut();
    // SAFETY: valid pointers and lengths.
    unsafe {
        assert_eq!(btcore_dht_settings_default(s.as_mut_ptr()), BTCORE_OK);
        let mut s = s.assume_init();
        assert_eq!(
            btcore_dht_new(&s, null(), 0, 0, &mut h),
            BTCORE_INVALID_PARAMETER,
            "a zero id"
        );
        s.node_id = [port as u8; 20];
        s.node_id[0] = (port >> 8) as u8;
        s.token_key = [3; 20];
        s.random_seed = u64::from(port);
        assert_eq!(
            btcore_dht_new(&s, seeds.as_ptr(), seeds.len(), 0, &mut h),
            BTCORE_OK
        );
    }
    D(h, port)
}

/// Carries every queued datagram to its node (by port) and runs the timers, `steps`
/// times 50 ms from `*now`; collects each node's events.
fn pump(
    nodes: &[&D],
    now: &mut u64,
    steps: usize,
    events: &mut Vec<(u16, btcore_dht_event, Vec<btcore_addr>)>,
) {
    for _ in 0..steps {
        *now += 50;
        for n in nodes {
            loop {
                let mut buf = [0u8; 1500];
                let mut len = 0;
                let mut to = btcore_addr::default();
                // SAFETY: a live handle and valid buffers.
                let r = unsafe {
                    btcore_dht_poll_transmit(n.0, *now, buf.as_mut_ptr(), 1500, &mut len, &mut to)
                };
                assert_eq!(r, BTCORE_OK);
                if len == 0 {
                    break;
                }
                if let Some(dst) = nodes.iter().find(|d| addr(d.1) == to) {
                    // SAFETY: a live handle and valid buffers.
                    let r = unsafe { btcore_dht_recv(dst.0, &addr(n.1), buf.as_ptr(), len, *now) };
                    assert_eq!(r, BTCORE_OK);
                }
            }
            // SAFETY: a live handle.
            assert_eq!(unsafe { btcore_dht_handle_timeout(n.0, *now) }, BTCORE_OK);
            loop {
                let mut e = btcore_dht_event::default();
                let mut peers = [btcore_addr::default(); 200];
                let mut some = 0;
                // SAFETY: a live handle and valid buffers.
                let r = unsafe {
                    btcore_dht_poll_event(n.0, &mut e, peers.as_mut_ptr(), 200, &mut some)
                };
                assert_eq!(r, BTCORE_OK);
                if some == 0 {
                    break;
                }
                events.push((n.1, e, peers[..e.num_peers as usize].to_vec()));
            }
        }
    }
}

#[test]
fn sans_io_dht_nodes_find_the_peer_another_one_announced() {
    let a = dht(9001, &[]);
    let b = dht(9002, &[9001]);
    let c = dht(9003, &[9001]);
    let nodes = [&a, &b, &c];
    let (mut now, mut events) = (0, Vec::new());
    pump(&nodes, &mut now, 20, &mut events);
    let mut count = 0;
    assert_eq!(
        // SAFETY: a live handle and valid pointers.
        unsafe { btcore_dht_node_count(b.0, now, &mut count) },
        BTCORE_OK
    );
    assert!(count >= 1, "b bootstrapped through a");

    let ih = [0x42u8; 20];
    let (mut announce, mut lookup) = (0, 0);
    // SAFETY: live handles and valid pointers.
    unsafe {
        assert_eq!(
            btcore_dht_lookup(b.0, ih.as_ptr(), 7777, now, &mut announce),
            BTCORE_OK
        );
        assert_eq!(
            btcore_dht_lookup(b.0, null(), 7777, now, &mut announce),
            BTCORE_NULL_PARAMETER
        );
    }
    pump(&nodes, &mut now, 60, &mut events);
    assert!(
        events.iter().any(|(p, e, _)| *p == 9002
            && e.kind == BTCORE_DHT_EVENT_DONE
            && e.lookup == announce
            && e.announced >= 1),
        "b announced"
    );
    assert_eq!(
        // SAFETY: a live handle and valid pointers.
        unsafe { btcore_dht_lookup(c.0, ih.as_ptr(), 0, now, &mut lookup) },
        BTCORE_OK
    );
    pump(&nodes, &mut now, 60, &mut events);
    let found = events.iter().any(|(p, e, peers)| {
        *p == 9003
            && e.kind == BTCORE_DHT_EVENT_PEERS
            && e.lookup == lookup
            && e.info_hash == ih
            && peers.contains(&addr(7777))
    });
    assert!(found, "c found b's announced port through a");
    assert!(events.iter().any(|(p, e, _)| *p == 9003
        && e.kind == BTCORE_DHT_EVENT_DONE
        && e.lookup == lookup
        && e.nodes >= 1));

    // Handles are checked.
    let mut ms = 0;
    // SAFETY: the library checks handles before reading them.
    unsafe {
        assert_eq!(
            btcore_dht_next_timeout(null(), &mut ms),
            BTCORE_NULL_PARAMETER
        );
        let sansio = new(BTCORE_ENCRYPTION_PREFERRED, 1, 0);
        assert_eq!(
            btcore_dht_next_timeout(sansio.0 as *const btcore_dht, &mut ms),
            BTCORE_WRONG_HANDLE
        );
        assert_eq!(btcore_dht_next_timeout(a.0, &mut ms), BTCORE_OK);
    }
}

/// The v2 info-hash of a hybrid torrent made by libtorrent, as libtorrent computed it
/// (the corpus's `EXPECTED.json`); none for a v1 torrent.
#[test]
fn a_hybrid_torrent_names_its_v2_info_hash() {
    let dir = btcore_tests::conformance_dir().join("v2-generated");
    let t = std::fs::read(dir.join("single-hybrid.torrent")).expect("corpus");
    let want = "0146b7f4855399f93824fefe9ef64852b3d9e4215fada174b7712c5daed0d9d9";
    let h = new(BTCORE_ENCRYPTION_ALLOWED, 7301, 0);
    let hybrid = add(&h, &t);
    let v1 = add(&h, &torrent());
    let mut out = [0u8; 32];
    let mut has = false;
    // SAFETY: valid out-pointers.
    let r =
        unsafe { btcore_sansio_torrent_info_hash_v2(h.0, hybrid, 0, out.as_mut_ptr(), &mut has) };
    assert_eq!(r, BTCORE_OK);
    assert!(has);
    let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, want);
    // SAFETY: valid out-pointers.
    let r = unsafe { btcore_sansio_torrent_info_hash_v2(h.0, v1, 0, out.as_mut_ptr(), &mut has) };
    assert_eq!((r, has), (BTCORE_OK, false));
    // SAFETY: valid out-pointers; the id is unknown.
    let r = unsafe { btcore_sansio_torrent_info_hash_v2(h.0, 99, 0, out.as_mut_ptr(), &mut has) };
    assert_eq!(r, BTCORE_NOT_FOUND);
}

#[test]
fn recv_batch_is_zero_for_a_fresh_or_unknown_connection_and_checks_its_arguments() {
    let h = new(BTCORE_ENCRYPTION_PREFERRED, 3, 0);
    let x = [1u8; 8];
    let not_a_handle = x.as_ptr() as *mut btcore_sansio;
    let mut batch = usize::MAX;
    // SAFETY: the library checks handles and out-pointers before using them.
    unsafe {
        assert_eq!(
            btcore_sansio_recv_batch(h.0, 77, 1_000, &mut batch),
            BTCORE_OK
        );
        assert_eq!(batch, 0, "a connection the library does not know");
        assert_eq!(
            btcore_sansio_recv_batch(h.0, 77, 1_000, null_mut()),
            BTCORE_NULL_PARAMETER
        );
        assert_eq!(
            btcore_sansio_recv_batch(null_mut(), 77, 1_000, &mut batch),
            BTCORE_NULL_PARAMETER
        );
        assert_eq!(
            btcore_sansio_recv_batch(not_a_handle, 77, 1_000, &mut batch),
            BTCORE_WRONG_HANDLE
        );
    }
}
