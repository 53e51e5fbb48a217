//! Settings changed while a session runs: `btcore_session_apply_settings`, in the
//! manner of libtorrent's `apply_settings`. The application keeps its
//! `btcore_settings`, changes fields and hands the whole struct back; what can change
//! at run time is applied, the rest keeps the value the session was made with.

use crate::session::{client_failure, client_options, session};
use crate::*;

/// Applies `settings` to a running session (whether its own thread runs it or
/// `btcore_session_poll` does): the rate limits (from the next read or write), the
/// connection caps (`max_peers_per_torrent`, `max_connections`: the least useful
/// connections over a lowered cap are closed at once), `disk_queue_bytes`,
/// `enable_dht`, `dht_port`, `dht_bootstrap`, `enable_lsd`, `enable_pex`, the queues
/// (`download_queue_size`, `seed_queue_size`, `queue_stalled_minutes`: queued torrents
/// start or running ones wait at once), `seed_idle_minutes`, the alternative limits,
/// their switch and schedule (`alt_*`), the
/// `encryption` policy (for connections made from now on), and `listen_address` with
/// `listen_port` (a new listen socket is bound; when that fails, e.g. the port is in
/// use, `BTCORE_IO` is returned, the old socket keeps listening and nothing else
/// changes). Fields that cannot change while running keep the value given to
/// `btcore_session_new` and are not checked: `download_dir`, `state_dir`,
/// `low_memory`, `use_trackers`, `disk_threads`, `random_seed`. An invalid value
/// (an unknown encryption policy, a switch other than 0 or 1, a malformed address or
/// bootstrap list) returns `BTCORE_INVALID_PARAMETER` and changes nothing.
/// Thread-safe.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `settings` is NULL or valid for reading one `btcore_settings` whose strings are
///   NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_apply_settings(
    session: *mut btcore_session,
    settings: *const btcore_settings,
) -> btcore_result {
    guard_detail(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let b = unsafe { self::session(session) }?;
        let settings = non_null(settings.cast_mut())?;
        // SAFETY: `settings` is non-NULL (checked above) and valid for one read, as this
        // function's contract requires.
        let s = unsafe { *settings };
        // SAFETY: the strings of `settings` are NULL or NUL-terminated, as this
        // function's contract requires.
        let opts = unsafe { client_options(&s) }?;
        b.shared
            .client()?
            .apply_settings(&opts)
            .map_err(|e| client_failure(&e))
    })
}
