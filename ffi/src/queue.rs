//! Queues and limits of the session API: each torrent's place in the download and
//! seed queues (`btcore_settings.download_queue_size`, `seed_queue_size`), starting a
//! torrent past them, its idle seeding limit, its own connection cap, and the
//! alternative ("turtle") speed limits' switch. The session-wide values (queue sizes,
//! stalled minutes, the default idle limit, the alternative limits and their
//! schedule) are fields of `btcore_settings`.
//!
//! Every call is thread-safe (serialized on the session's lock).
use crate::session::with_client;
use crate::*;
use btcore_core::session::{IdleLimit, QueueMove, TorrentId};
use btcore_host::client::Client;

/// `btcore_session_queue_move`: to the first place.
pub const BTCORE_QUEUE_MOVE_TOP: u32 = 0;
/// `btcore_session_queue_move`: one place earlier.
pub const BTCORE_QUEUE_MOVE_UP: u32 = 1;
/// `btcore_session_queue_move`: one place later.
pub const BTCORE_QUEUE_MOVE_DOWN: u32 = 2;
/// `btcore_session_queue_move`: to the last place.
pub const BTCORE_QUEUE_MOVE_BOTTOM: u32 = 3;

/// `btcore_session_set_idle_limit`: the session's `seed_idle_minutes` (Transmission's
/// `seedIdleMode` 0).
pub const BTCORE_IDLE_LIMIT_GLOBAL: u32 = 0;
/// `btcore_session_set_idle_limit`: the torrent's own minutes (`seedIdleMode` 1).
pub const BTCORE_IDLE_LIMIT_SINGLE: u32 = 1;
/// `btcore_session_set_idle_limit`: no idle limit, whatever the session says
/// (`seedIdleMode` 2).
pub const BTCORE_IDLE_LIMIT_UNLIMITED: u32 = 2;

/// Runs `f` on torrent `id` of `session`: `BTCORE_NOT_FOUND` when there is none.
///
/// # Safety
/// `session` as [`with_client`] requires.
unsafe fn on_torrent<R>(
    session: *const btcore_session,
    id: u32,
    f: impl FnOnce(&mut Client, TorrentId) -> Result<R, btcore_result>,
) -> Result<R, btcore_result> {
    // SAFETY: `session` is NULL or a handle that no free races with, as the caller's
    // contract requires; anything else is refused before a read.
    unsafe {
        with_client(session, |c| {
            if c.queue_position(TorrentId(id)).is_none() {
                return Err(BTCORE_NOT_FOUND);
            }
            f(c, TorrentId(id))
        })
    }
}

/// Writes the place of torrent `id` in the queues (0 first; every torrent has one, a
/// new torrent the last) to `*out`. `BTCORE_NOT_FOUND` for an unknown id.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `out` is NULL or valid for writing one `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_queue_position(
    session: *const btcore_session,
    id: u32,
    out: *mut u32,
) -> btcore_result {
    guard(|| {
        let out = non_null(out)?;
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        let pos = unsafe {
            on_torrent(session, id, |c, t| {
                c.queue_position(t).ok_or(BTCORE_NOT_FOUND)
            })
        }?;
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(pos) };
        Ok(())
    })
}

/// Moves torrent `id` to place `pos` of the queues (past the last place: the last);
/// the torrents between shift by one. A queued torrent moved first starts when a slot
/// frees; running torrents are not stopped for it. `BTCORE_NOT_FOUND` for an unknown
/// id.
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
/// frees during the call. A freed handle, one of another type or any other pointer is a
/// checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
/// handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_set_queue_position(
    session: *mut btcore_session,
    id: u32,
    pos: u32,
) -> btcore_result {
    guard(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        unsafe {
            on_torrent(session, id, |c, t| {
                c.set_queue_position(t, pos);
                Ok(())
            })
        }
    })
}

/// Moves torrent `id` in the queues: `how` is one of `BTCORE_QUEUE_MOVE_*` (top, up
/// one, down one, bottom; Transmission's `queue-move-*`). `BTCORE_NOT_FOUND` for an
/// unknown id, `BTCORE_INVALID_PARAMETER` for another `how`.
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
/// frees during the call. A freed handle, one of another type or any other pointer is a
/// checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
/// handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_queue_move(
    session: *mut btcore_session,
    id: u32,
    how: u32,
) -> btcore_result {
    guard(|| {
        let to = match how {
            BTCORE_QUEUE_MOVE_TOP => QueueMove::Top,
            BTCORE_QUEUE_MOVE_UP => QueueMove::Up,
            BTCORE_QUEUE_MOVE_DOWN => QueueMove::Down,
            BTCORE_QUEUE_MOVE_BOTTOM => QueueMove::Bottom,
            _ => return Err(BTCORE_INVALID_PARAMETER),
        };
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        unsafe {
            on_torrent(session, id, |c, t| {
                c.move_in_queue(t, to);
                Ok(())
            })
        }
    })
}

/// Starts torrent `id` now, paused or queued, past the queues (Transmission's
/// `torrent-start-now`): it never waits in a queue and does not count in one until it
/// is paused. `BTCORE_NOT_FOUND` for an unknown id.
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
/// frees during the call. A freed handle, one of another type or any other pointer is a
/// checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
/// handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_start_now(
    session: *mut btcore_session,
    id: u32,
) -> btcore_result {
    guard(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        unsafe {
            on_torrent(session, id, |c, t| {
                c.resume_now(t);
                Ok(())
            })
        }
    })
}

/// Sets the idle seeding limit of torrent `id`: `mode` is one of
/// `BTCORE_IDLE_LIMIT_*` (the session's `seed_idle_minutes`, `minutes` of its own, or
/// none). Once finished, a torrent that uploaded nothing for that long is paused
/// (`BTCORE_STATE_PAUSED`) and `BTCORE_EVENT_IDLE_LIMIT_REACHED` is sent.
/// `BTCORE_NOT_FOUND` for an unknown id, `BTCORE_INVALID_PARAMETER` for another mode
/// or `BTCORE_IDLE_LIMIT_SINGLE` with 0 minutes.
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
/// frees during the call. A freed handle, one of another type or any other pointer is a
/// checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
/// handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_set_idle_limit(
    session: *mut btcore_session,
    id: u32,
    mode: u32,
    minutes: u32,
) -> btcore_result {
    guard(|| {
        let limit = match mode {
            BTCORE_IDLE_LIMIT_GLOBAL => IdleLimit::Session,
            BTCORE_IDLE_LIMIT_SINGLE if minutes > 0 => IdleLimit::Minutes(minutes),
            BTCORE_IDLE_LIMIT_UNLIMITED => IdleLimit::Unlimited,
            _ => return Err(BTCORE_INVALID_PARAMETER),
        };
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        unsafe {
            on_torrent(session, id, |c, t| {
                c.set_idle_limit(t, limit);
                Ok(())
            })
        }
    })
}

/// Caps the connections of torrent `id` at `limit` (Transmission's `peer-limit`; 0:
/// back to the session's `max_peers_per_torrent`). Lowered, the least useful
/// connections over it are closed at once. `max_connections` still holds over all
/// torrents. `BTCORE_NOT_FOUND` for an unknown id.
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
/// frees during the call. A freed handle, one of another type or any other pointer is a
/// checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
/// handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_set_peer_limit(
    session: *mut btcore_session,
    id: u32,
    limit: u32,
) -> btcore_result {
    guard(|| {
        let limit = Some(limit as usize).filter(|&n| n > 0);
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        unsafe {
            on_torrent(session, id, |c, t| {
                c.set_peer_limit(t, limit);
                Ok(())
            })
        }
    })
}

/// Writes the connection cap of torrent `id` in force (its own, or the session's) to
/// `*out`. `BTCORE_NOT_FOUND` for an unknown id.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `out` is NULL or valid for writing one `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_peer_limit(
    session: *const btcore_session,
    id: u32,
    out: *mut u32,
) -> btcore_result {
    guard(|| {
        let out = non_null(out)?;
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        let n = unsafe { on_torrent(session, id, |c, t| c.peer_limit(t).ok_or(BTCORE_NOT_FOUND)) }?;
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(u32::try_from(n).unwrap_or(u32::MAX)) };
        Ok(())
    })
}

/// Turns the alternative speed limits (`btcore_settings.alt_download_rate_limit`,
/// `alt_upload_rate_limit`) on (`on` 1) or off (0) by hand; with a schedule, until its
/// next edge. `BTCORE_INVALID_PARAMETER` for another value.
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
/// frees during the call. A freed handle, one of another type or any other pointer is a
/// checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
/// handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_set_alt_speed(
    session: *mut btcore_session,
    on: u8,
) -> btcore_result {
    guard(|| {
        let on = match on {
            0 => false,
            1 => true,
            _ => return Err(BTCORE_INVALID_PARAMETER),
        };
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        unsafe {
            with_client(session, |c| {
                c.set_alt_speed(on);
                Ok(())
            })
        }
    })
}

/// Writes 1 to `*out` while the alternative speed limits apply (set by hand or by
/// their schedule), else 0.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `out` is NULL or valid for writing one `uint8_t`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_alt_speed_enabled(
    session: *const btcore_session,
    out: *mut u8,
) -> btcore_result {
    guard(|| {
        let out = non_null(out)?;
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        let on = unsafe { with_client(session, |c| Ok(c.alt_speed_enabled())) }?;
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(u8::from(on)) };
        Ok(())
    })
}
