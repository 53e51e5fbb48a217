//! Decodes arbitrary bytes as a peer wire stream: `wire::fuzz_decode` (handshake, then
//! frames under default and tight limits, each re-encoded to its source bytes) must
//! hold, and a plain `wire::decode` loop over the stream must make progress and stop
//! cleanly.
#![no_main]

use btcore_core::wire::{self, Handshake, Limits, Status};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert!(wire::fuzz_decode(data), "wire codec invariant failed");

    let mut rest = data;
    if let Ok(Status::Complete((_, used))) = Handshake::parse(data) {
        assert_eq!(used, wire::HANDSHAKE_LEN);
        rest = &data[used..];
    }
    let limits = Limits::default();
    loop {
        match wire::decode(rest, &limits) {
            Ok(Status::Complete((msg, used))) => {
                assert!(used >= 4 && used <= rest.len());
                assert_eq!(msg.encoded_len(), used);
                let mut out = vec![0u8; used];
                assert_eq!(msg.encode(&mut out), Ok(used));
                assert_eq!(out, rest[..used]);
                let _ = (msg.id(), msg.piece_block());
                rest = &rest[used..];
            }
            Ok(Status::Partial { needed }) => {
                assert!(needed >= 1);
                break;
            }
            Err(e) => {
                assert!(e.is_peer_fault());
                break;
            }
        }
    }
});
