extern crate std;

use super::*;
use std::vec;

const T0: Instant = Instant::from_millis(1_000);

fn ih() -> InfoHash {
    InfoHash([7; 20])
}

fn geometry() -> Geometry {
    // 3 pieces of 32 KiB, the last 10 bytes long.
    Geometry::new(2 * 32_768 + 10, 32_768).expect("geometry")
}

fn fast() -> Reserved {
    Reserved::NONE.with_fast(true).with_extension_protocol(true)
}

/// Moves every queued byte from `a` to `b`, returning b's result.
fn pump(now: Instant, a: &mut PeerConn, b: &mut PeerConn) -> Result<(), PeerError> {
    let mut buf = [0u8; 4096];
    loop {
        let n = a.poll_transmit(now, &mut buf);
        if n == 0 {
            return Ok(());
        }
        b.handle_recv(now, &buf[..n])?;
    }
}

fn events(c: &mut PeerConn) -> std::vec::Vec<PeerEvent> {
    core::iter::from_fn(|| c.poll_event()).collect()
}

/// An outgoing and an accepted incoming connection, handshakes done, geometry set.
fn pair(ra: Reserved, rb: Reserved) -> (PeerConn, PeerConn) {
    let mut a = PeerConn::new_outgoing(PeerConfig::default(), T0, ih(), PeerId([1; 20]), ra);
    let mut b = PeerConn::new_incoming(PeerConfig::default(), T0, PeerId([2; 20]), rb);
    pump(T0, &mut a, &mut b).expect("handshake a->b");
    match events(&mut b).as_slice() {
        [PeerEvent::Handshake {
            info_hash, peer_id, ..
        }] => {
            assert_eq!((*info_hash, *peer_id), (ih(), PeerId([1; 20])));
        }
        other => panic!("{other:?}"),
    }
    b.accept(T0, ih()).expect("accept");
    pump(T0, &mut b, &mut a).expect("handshake b->a");
    assert!(matches!(
        events(&mut a).as_slice(),
        [PeerEvent::Handshake { .. }]
    ));
    a.set_geometry(geometry()).expect("geometry");
    b.set_geometry(geometry()).expect("geometry");
    assert!(a.is_established() && b.is_established());
    (a, b)
}

#[test]
fn scripted_download_of_one_block() {
    let (mut a, mut b) = pair(fast(), fast());
    assert!(a.fast() && a.extensions());
    b.send_have_set(&Bitfield::full(3));
    pump(T0, &mut b, &mut a).expect("have all");
    assert_eq!(events(&mut a), [PeerEvent::HaveSet]);
    assert!(a.is_seed() && a.has(PieceIndex(2)));

    a.set_interested(true);
    pump(T0, &mut a, &mut b).expect("interested");
    assert_eq!(events(&mut b), [PeerEvent::Interest(true)]);
    b.set_choking(false);
    pump(T0, &mut b, &mut a).expect("unchoke");
    assert_eq!(events(&mut a), [PeerEvent::Unchoked]);

    let block = geometry().block(PieceIndex(2), 0).expect("block");
    assert_eq!(block.len, 10);
    assert!(a.can_request(PieceIndex(2)));
    assert_eq!(a.request_slots(T0), 4);
    a.request(T0, block);
    assert_eq!(a.request_slots(T0), 3);
    pump(T0, &mut a, &mut b).expect("request");
    assert_eq!(events(&mut b), [PeerEvent::PeerRequest]);
    let req = b.next_peer_request().expect("queued");
    assert_eq!(req, block);
    b.send_block(T0, req, &[9; 10]);
    pump(T0, &mut b, &mut a).expect("piece");
    assert_eq!(
        events(&mut a),
        [PeerEvent::Block {
            block,
            data: vec![9; 10]
        }]
    );
    assert_eq!(a.totals(), (10, 0));
    assert_eq!(b.totals(), (0, 10));
}

#[test]
fn misbehaviour_is_the_peers_fault() {
    // An unrequested block of a bad length.
    let (mut a, mut b) = pair(fast(), fast());
    b.send_block(
        T0,
        BlockRef {
            piece: PieceIndex(0),
            offset: 0,
            len: 5,
        },
        &[1; 5],
    );
    let mut buf = [0u8; 64];
    let n = b.poll_transmit(T0, &mut buf);
    let mut bogus = buf[..n].to_vec();
    bogus[9..13].copy_from_slice(&32_770u32.to_be_bytes()); // offset past the piece
    let e = a.handle_recv(T0, &bogus).expect_err("unrequested");
    assert!(matches!(e, PeerError::UnrequestedBlock(_)) && e.is_peer_fault());

    // A bitfield with a spare bit set.
    let (mut a, _) = pair(fast(), fast());
    let e = a
        .handle_recv(T0, &[0, 0, 0, 2, 5, 0b1111_0000])
        .expect_err("spare bit");
    assert_eq!(e, PeerError::BadBitfield);

    // A have beyond the torrent.
    let (mut a, _) = pair(fast(), fast());
    let e = a
        .handle_recv(T0, &[0, 0, 0, 5, 4, 0, 0, 0, 3])
        .expect_err("have 3");
    assert_eq!(e, PeerError::BadPiece(3));

    // Fast messages without the fast extension.
    let (mut a, _) = pair(Reserved::NONE, Reserved::NONE);
    assert_eq!(
        a.handle_recv(T0, &[0, 0, 0, 1, 0x0e]),
        Err(PeerError::FastNotNegotiated)
    );

    // A request beyond the piece.
    let (_, mut b) = pair(fast(), fast());
    let mut req = [0u8; 17];
    Message::Request(BlockRef {
        piece: PieceIndex(2),
        offset: 0,
        len: 11,
    })
    .encode(&mut req)
    .expect("encode");
    assert!(matches!(
        b.handle_recv(T0, &req),
        Err(PeerError::BadRequest(_))
    ));

    // Garbage framing.
    let (mut a, _) = pair(fast(), fast());
    assert!(matches!(
        a.handle_recv(T0, &[0xff, 0xff, 0xff, 0xff, 7]),
        Err(PeerError::Wire(_))
    ));
}

#[test]
fn wrong_torrent_and_self_connection() {
    let mut a = PeerConn::new_outgoing(PeerConfig::default(), T0, ih(), PeerId([1; 20]), fast());
    let mut b = PeerConn::new_outgoing(
        PeerConfig::default(),
        T0,
        InfoHash([8; 20]),
        PeerId([2; 20]),
        fast(),
    );
    assert_eq!(pump(T0, &mut b, &mut a), Err(PeerError::InfoHashMismatch));
    let mut a = PeerConn::new_outgoing(PeerConfig::default(), T0, ih(), PeerId([1; 20]), fast());
    let mut me = PeerConn::new_outgoing(PeerConfig::default(), T0, ih(), PeerId([1; 20]), fast());
    assert_eq!(pump(T0, &mut me, &mut a), Err(PeerError::SelfConnection));
}

#[test]
fn choke_drops_requests_without_fast_and_rejects_with_it() {
    for reserved in [Reserved::NONE, fast()] {
        let (mut a, mut b) = pair(reserved, reserved);
        b.send_have_set(&Bitfield::full(3));
        b.set_choking(false);
        pump(T0, &mut b, &mut a).expect("unchoke");
        let blk = geometry().block(PieceIndex(0), 1).expect("block");
        a.request(T0, blk);
        pump(T0, &mut a, &mut b).expect("request");
        let _ = events(&mut a);
        b.set_choking(true);
        pump(T0, &mut b, &mut a).expect("choke");
        assert_eq!(
            events(&mut a),
            [PeerEvent::Choked, PeerEvent::RequestLost(blk)]
        );
        assert_eq!(a.outstanding().count(), 0);
        assert_eq!(b.peer_requests_queued(), 0);
    }
}

#[test]
fn timers_keepalive_idle_and_request_timeout() {
    let (mut a, mut b) = pair(fast(), fast());
    b.send_have_set(&Bitfield::full(3));
    b.set_choking(false);
    pump(T0, &mut b, &mut a).expect("unchoke");
    let _ = events(&mut a);
    let blk = geometry().block(PieceIndex(1), 0).expect("block");
    a.request(T0, blk);
    let mut sink = [0u8; 256];
    while a.poll_transmit(T0, &mut sink) > 0 {}
    assert_eq!(a.poll_timeout(), T0 + Duration::from_secs(30));
    let t30 = T0 + Duration::from_secs(30);
    a.handle_timeout(t30).expect("alive");
    assert_eq!(events(&mut a), [PeerEvent::RequestLost(blk)]);
    // Nothing sent for 90 s: a keep-alive goes out.
    let t90 = T0 + Duration::from_secs(90);
    a.handle_timeout(t90).expect("alive");
    assert_eq!(a.poll_transmit(t90, &mut sink), 4);
    assert_eq!(&sink[..4], &[0, 0, 0, 0]);
    // Nothing received for 180 s: idle.
    assert_eq!(
        a.handle_timeout(T0 + Duration::from_secs(180)),
        Err(PeerError::Idle)
    );
    // An incoming connection with no handshake in 20 s.
    let mut c = PeerConn::new_incoming(PeerConfig::default(), T0, PeerId([3; 20]), fast());
    assert_eq!(
        c.handle_timeout(T0 + Duration::from_secs(20)),
        Err(PeerError::HandshakeTimeout)
    );
}

#[test]
fn pipeline_depth_follows_the_rate_and_snubbing() {
    let (mut a, mut b) = pair(fast(), fast());
    b.send_have_set(&Bitfield::full(3));
    b.set_choking(false);
    pump(T0, &mut b, &mut a).expect("unchoke");
    // 1 MB/s for a few seconds: depth = 3 s * 1 MB/s / 16 KiB = 183.
    for s in 0..8u64 {
        let now = T0 + Duration::from_secs(s);
        let blk = geometry().block(PieceIndex(0), 0).expect("block");
        for i in 0..61 {
            a.request(now, blk);
            b.send_block(now, blk, &[0; 16_384]);
            // The send queue holds 512 KiB of blocks (and a little more).
            if i % 16 == 15 {
                pump(now, &mut b, &mut a).expect("blocks");
            }
        }
        pump(now, &mut a, &mut b).expect("requests");
        while b.next_peer_request().is_some() {}
        pump(now, &mut b, &mut a).expect("blocks");
    }
    let now = T0 + Duration::from_secs(8);
    a.handle_timeout(now).expect("alive");
    let slots = a.request_slots(now);
    assert!((150..=190).contains(&slots), "{slots}");
    // Requests out and no block for 60 s: snubbed, depth 1.
    let blk = geometry().block(PieceIndex(1), 0).expect("block");
    a.request(now, blk);
    let later = now + Duration::from_secs(61);
    assert!(a.is_snubbing(later));
    assert_eq!(a.request_slots(later), 0);
}

#[test]
fn messages_split_at_every_byte_arrive_whole() {
    let (mut a, mut b) = pair(fast(), fast());
    b.send_have_set(&Bitfield::from_wire(&[0b1010_0000], 3).expect("bits"));
    b.set_choking(false);
    b.send_have(PieceIndex(1));
    b.send_extended(3, b"d1:ai1ee");
    let mut bytes = std::vec::Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = b.poll_transmit(T0, &mut buf);
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    for cut in 0..=bytes.len() {
        let (mut a2, _) = pair(fast(), fast());
        a2.handle_recv(T0, &bytes[..cut]).expect("first part");
        a2.handle_recv(T0, &bytes[cut..]).expect("second part");
        assert_eq!(
            events(&mut a2),
            [
                PeerEvent::HaveSet,
                PeerEvent::Unchoked,
                PeerEvent::Have(PieceIndex(1)),
                PeerEvent::Extended {
                    id: 3,
                    payload: b"d1:ai1ee".to_vec()
                },
            ],
            "cut at {cut}"
        );
    }
    a.handle_recv(T0, &bytes).expect("whole");
    assert_eq!(a.bitfield().count(), 3);
}

#[test]
fn a_torrent_of_unknown_size_claims_nothing() {
    // A magnet link's torrent has an empty have-set: it must say "have none", never
    // "have all" (which would make a seed drop us as a fellow seed).
    let (mut a, mut b) = pair(fast(), fast());
    a.send_have_set(&Bitfield::new(0));
    pump(T0, &mut a, &mut b).expect("have none");
    assert_eq!(events(&mut b), [PeerEvent::HaveSet]);
    assert_eq!(b.bitfield().count(), 0);
    assert!(!b.is_seed());
}

#[test]
fn slow_start_grows_before_the_first_rate_measurement() {
    let (mut a, mut b) = pair(fast(), fast());
    b.send_have_set(&Bitfield::full(3));
    b.set_choking(false);
    pump(T0, &mut b, &mut a).expect("unchoke");
    assert_eq!(a.request_slots(T0), 4);
    // Eight blocks answered within the first second: the depth grows by one each.
    let blk = geometry().block(PieceIndex(0), 0).expect("block");
    for _ in 0..8 {
        a.request(T0, blk);
        pump(T0, &mut a, &mut b).expect("request");
        let r = b.next_peer_request().expect("queued");
        b.send_block(T0, r, &[0; 16_384]);
        pump(T0, &mut b, &mut a).expect("block");
    }
    assert_eq!(a.request_slots(T0), 12);
}

#[test]
fn a_partial_message_is_completed_without_buffering_the_whole_read() {
    let (_, mut b) = pair(fast(), fast());
    let payload = vec![b'x'; 8_000];
    for _ in 0..12 {
        b.send_extended(3, &payload);
    }
    let mut bytes = std::vec::Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = b.poll_transmit(T0, &mut buf);
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    // Cuts inside a length prefix, inside a body, and three reads in a row.
    for cuts in [[2usize, 3], [5, 9_000], [8_010, 8_020], [100, 50_000]] {
        let (mut a, _) = pair(fast(), fast());
        a.handle_recv(T0, &bytes[..cuts[0]]).expect("first");
        a.handle_recv(T0, &bytes[cuts[0]..cuts[1]]).expect("second");
        a.handle_recv(T0, &bytes[cuts[1]..]).expect("rest");
        let got = events(&mut a);
        assert_eq!(got.len(), 12, "cuts {cuts:?}");
        assert!(got.iter().all(|e| matches!(
            e,
            PeerEvent::Extended { id: 3, payload: p } if p.len() == 8_000
        )));
        // One message at most was ever held, never the ~90 KB read after it.
        assert!(a.rx.capacity() < 20_000, "rx grew to {}", a.rx.capacity());
        assert!(a.rx.is_empty());
    }
}

/// A peer's `request` and `cancel` cost O(log n) comparisons against a full queue (a
/// linear search of it cost up to n per 17-byte message), and the queue keeps the
/// order of arrival.
#[test]
fn request_and_cancel_cost_logarithmic_work() {
    let n = 2000u32;
    let config = PeerConfig {
        max_peer_requests: n as usize,
        ..PeerConfig::default()
    };
    let mut a = PeerConn::new_outgoing(config, T0, ih(), PeerId([1; 20]), fast());
    let mut b = PeerConn::new_incoming(config, T0, PeerId([2; 20]), fast());
    pump(T0, &mut a, &mut b).expect("handshake");
    b.accept(T0, ih()).expect("accept");
    pump(T0, &mut b, &mut a).expect("handshake back");
    a.set_geometry(geometry()).expect("geometry");
    b.set_geometry(geometry()).expect("geometry");
    b.set_choking(false);
    let blk = |i: u32| BlockRef {
        piece: PieceIndex(0),
        offset: i,
        len: 1,
    };
    let frame = |m: Message<'_>| {
        let mut buf = [0u8; 17];
        let len = m.encode(&mut buf).expect("encode");
        buf[..len].to_vec()
    };
    for i in 0..n {
        b.handle_recv(T0, &frame(Message::Request(blk(i))))
            .expect("request");
    }
    assert_eq!(b.peer_requests_queued(), n as usize);
    // Cancel every other one and ask for as many new ones, one message at a time.
    let comparisons = || super::KEY_COMPARISONS.with(core::cell::Cell::get);
    let log2 = u64::from(u32::BITS - n.leading_zeros());
    let mut worst = 0;
    for i in 0..n / 2 {
        for m in [
            Message::Cancel(blk(2 * i)),
            Message::Request(blk(n + i)),
            // A duplicate: already queued, not queued twice.
            Message::Request(blk(n + i)),
        ] {
            let before = comparisons();
            b.handle_recv(T0, &frame(m)).expect("message");
            worst = worst.max(comparisons() - before);
        }
    }
    assert!(
        worst <= 4 * log2 + 4,
        "one message cost {worst} comparisons (queue of {n})"
    );
    assert_eq!(b.peer_requests_queued(), n as usize);
    // Served in the order asked: the odd ones first, then the new ones.
    let served: std::vec::Vec<u32> =
        core::iter::from_fn(|| b.next_peer_request().map(|r| r.offset)).collect();
    let want: std::vec::Vec<u32> = (0..n / 2).map(|i| 2 * i + 1).chain(n..n + n / 2).collect();
    assert_eq!(served, want);
}

/// Block payloads the host holds take their place in the send queue: the bytes around
/// them and the payloads, sent in order, make the stream a queue of copied blocks
/// makes, through small reads and the queue's compaction past 64 KiB.
#[test]
fn held_payloads_keep_their_place_in_the_stream() {
    let blk = |piece: u32, offset: u32, len: u32| BlockRef {
        piece: PieceIndex(piece),
        offset,
        len,
    };
    let data = |b: &BlockRef| -> std::vec::Vec<u8> {
        (0..b.len)
            .map(|i| (i as u8) ^ (b.piece.0 as u8) ^ (b.offset >> 8) as u8)
            .collect()
    };
    let plan = [
        (blk(0, 0, 16_384), false),
        (blk(0, 16_384, 16_384), false),
        (blk(1, 0, 16_384), false),
        (blk(1, 16_384, 16_384), false),
        (blk(2, 0, 10), true),
        (blk(0, 0, 16_384), true),
        (blk(1, 0, 16_384), false),
        (blk(0, 16_384, 16_384), true),
    ];
    let (_, mut copied) = pair(fast(), fast());
    let (_, mut held) = pair(fast(), fast());
    let mut want = std::vec::Vec::new();
    let mut buf = [0u8; 4096];
    while copied.poll_transmit(T0, &mut buf) > 0 {}
    while held.poll_transmit(T0, &mut buf) > 0 {}
    let mut tokens = std::vec::Vec::new();
    for (i, (b, by_ref)) in plan.iter().enumerate() {
        assert!(copied.send_block(T0, *b, &data(b)));
        if *by_ref {
            assert!(held.send_block_held(T0, *b, 100 + i as u64));
            tokens.push((100 + i as u64, *b));
        } else {
            assert!(held.send_block(T0, *b, &data(b)));
        }
        if i == 5 {
            copied.send_have(PieceIndex(2));
            held.send_have(PieceIndex(2));
        }
    }
    assert_eq!(held.send_queued(), copied.send_queued());
    loop {
        let n = copied.poll_transmit(T0, &mut buf);
        if n == 0 {
            break;
        }
        want.extend_from_slice(&buf[..n]);
    }
    let mut got = std::vec::Vec::new();
    let mut next = tokens.iter();
    loop {
        let n = held.poll_transmit(T0, &mut buf);
        got.extend_from_slice(&buf[..n]);
        if n > 0 {
            continue;
        }
        let Some((token, len)) = held.poll_held(T0) else {
            break;
        };
        let &(t, b) = next.next().expect("a held payload we queued");
        assert_eq!((token, len), (t, b.len));
        got.extend_from_slice(&data(&b));
    }
    assert!(next.next().is_none(), "every held payload was given");
    assert_eq!(held.send_queued(), 0);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the streams differ");
}
