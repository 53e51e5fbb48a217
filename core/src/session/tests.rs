//! Unit tests of the session's private helpers (its behaviour is tested end to end
//! in the simulation, `tests/`).

#[test]
fn a_full_event_queue_drops_progress_events_never_state_changes() {
    use super::{push_bounded, Event, TorrentId};
    use crate::ids::PieceIndex;
    use alloc::collections::VecDeque;
    use alloc::vec::Vec;
    let t = TorrentId(1);
    let mut q = VecDeque::new();
    push_bounded(&mut q, Event::MetadataReceived(t), 4);
    for p in 0..10 {
        push_bounded(&mut q, Event::PieceVerified(t, PieceIndex(p)), 4);
    }
    push_bounded(&mut q, Event::TorrentFinished(t), 4);
    push_bounded(&mut q, Event::PieceVerified(t, PieceIndex(10)), 4);
    assert_eq!(
        q.iter().cloned().collect::<Vec<_>>(),
        [
            Event::MetadataReceived(t),
            Event::PieceVerified(t, PieceIndex(9)),
            Event::TorrentFinished(t),
            Event::PieceVerified(t, PieceIndex(10)),
        ]
    );
    // Only state changes: the oldest goes, the queue stays bounded.
    let mut q = VecDeque::new();
    for i in 0..6 {
        push_bounded(&mut q, Event::TorrentFinished(TorrentId(i)), 4);
    }
    assert_eq!(q.len(), 4);
    assert_eq!(q.front(), Some(&Event::TorrentFinished(TorrentId(2))));
}
