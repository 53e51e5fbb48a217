//! A torrent's web seeds (BEP 19) in the session API: what each sent and where it
//! stands, as the command's summary and the daemon's `webseeds` show them.
//!
//! `btcore_torrent_web_seeds` copies everything into caller buffers in one call under
//! the session's lock, as `btcore_torrent_trackers` does: the records into an array of
//! `btcore_web_seed_status`, their strings (URL, last error) NUL-terminated into one
//! byte buffer that the records point into by offset and length.
use crate::torrent::on_torrent;
use crate::*;
use btcore_core::session::{WebSeedState, WebSeedStatus};
use std::ffi::c_char;

/// `btcore_web_seed_status.state`: no request in flight (nothing to ask of it, or the
/// torrent does not download).
pub const BTCORE_WEB_SEED_IDLE: u32 = 0;
/// `btcore_web_seed_status.state`: requests in flight.
pub const BTCORE_WEB_SEED_ACTIVE: u32 = 1;
/// `btcore_web_seed_status.state`: waiting after a failure (`retry_in_ms`).
pub const BTCORE_WEB_SEED_BACKOFF: u32 = 2;
/// `btcore_web_seed_status.state`: dropped for data that failed the hash check; never
/// asked again.
pub const BTCORE_WEB_SEED_DROPPED: u32 = 3;

/// One web seed of a torrent, filled by `btcore_torrent_web_seeds()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct btcore_web_seed_status {
    /// Payload bytes it sent (handed on as blocks).
    pub downloaded: u64,
    /// Bytes per second it sends now.
    pub download_rate: u64,
    /// Milliseconds until it is asked again, while in backoff (0 otherwise).
    pub retry_in_ms: u64,
    /// Where its URL starts in the text buffer of the call.
    pub url_offset: u32,
    /// Its URL's length in bytes (a NUL follows it in the text buffer).
    pub url_len: u32,
    /// Where the text of its last error starts in the text buffer (empty: none).
    pub error_offset: u32,
    /// That text's length in bytes (a NUL follows it; at most 256).
    pub error_len: u32,
    /// `BTCORE_WEB_SEED_IDLE`, `_ACTIVE`, `_BACKOFF` or `_DROPPED`.
    pub state: u32,
    /// Requests in flight.
    pub requests: u32,
    /// Its failures in a row.
    pub failures: u32,
    /// Always 0.
    pub reserved: u32,
}

// SAFETY: integers only, no padding (3 * 8 + 8 * 4 bytes, 8-aligned).
unsafe impl AnyBits for btcore_web_seed_status {}

fn state_code(s: WebSeedState) -> u32 {
    match s {
        WebSeedState::Idle => BTCORE_WEB_SEED_IDLE,
        WebSeedState::Active => BTCORE_WEB_SEED_ACTIVE,
        WebSeedState::Backoff => BTCORE_WEB_SEED_BACKOFF,
        WebSeedState::Dropped => BTCORE_WEB_SEED_DROPPED,
        // A state added later reads as idle until it has a code of its own.
        _ => BTCORE_WEB_SEED_IDLE,
    }
}

/// The bytes of the text buffer the strings of `seeds` need (each NUL-terminated).
fn text_len(seeds: &[WebSeedStatus]) -> usize {
    seeds
        .iter()
        .map(|w| w.url.len() + 1 + w.last_error.as_ref().map_or(0, String::len) + 1)
        .sum()
}

/// Fills `buf` (room for `cap` records) with the web seeds of torrent `id`, in the
/// torrent's order, and their strings into `text` (room for `text_cap` bytes): each
/// record's URL and last error are at its offsets there, NUL-terminated. Writes the
/// number of web seeds to `*out_len` and the text bytes used to `*out_text_len`. When
/// either buffer is too small, returns `BTCORE_BUFFER_TOO_SMALL` with both sizes needed
/// written (and nothing else). A torrent keeps at most 8 web seeds (the first of its
/// `url-list`), each error at most 256 bytes. `BTCORE_NOT_FOUND` for an unknown id.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `buf` is valid for writes of `cap` `btcore_web_seed_status`es (it may be NULL when
///   `cap` is 0); `text` is valid for writes of `text_cap` bytes (it may be NULL when
///   `text_cap` is 0).
/// - `out_len` and `out_text_len` are NULL or each valid for writing one `size_t`.
#[no_mangle]
pub unsafe extern "C" fn btcore_torrent_web_seeds(
    session: *const btcore_session,
    id: u32,
    buf: *mut btcore_web_seed_status,
    cap: usize,
    text: *mut c_char,
    text_cap: usize,
    out_len: *mut usize,
    out_text_len: *mut usize,
) -> btcore_result {
    guard(|| {
        let out_len = non_null(out_len)?;
        let out_text_len = non_null(out_text_len)?;
        // SAFETY: `buf` is valid for writes of `cap` elements or `cap` is 0, as this
        // function's contract requires.
        let dst = unsafe { out_slice(buf, cap) }?;
        // SAFETY: `text` is valid for writes of `text_cap` bytes or `text_cap` is 0, as
        // this function's contract requires.
        let txt = unsafe { out_slice(text.cast::<u8>(), text_cap) }?;
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        let seeds = unsafe { on_torrent(session, id, |c, t| Ok(c.web_seeds(t))) }?;
        let need = text_len(&seeds);
        if need > u32::MAX as usize {
            return Err(BTCORE_INVALID_PARAMETER);
        }
        // SAFETY: both non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe {
            out_len.write(seeds.len());
            out_text_len.write(need);
        }
        if dst.len() < seeds.len() || txt.len() < need {
            return Err(BTCORE_BUFFER_TOO_SMALL);
        }
        let mut at = 0usize;
        let mut put = |s: &str| {
            let off = at;
            txt[at..at + s.len()].copy_from_slice(s.as_bytes());
            txt[at + s.len()] = 0;
            at += s.len() + 1;
            // Within `need`, checked to fit in a u32 above.
            (off as u32, s.len() as u32)
        };
        for (d, w) in dst.iter_mut().zip(&seeds) {
            let (url_offset, url_len) = put(&w.url);
            let (error_offset, error_len) = put(w.last_error.as_deref().unwrap_or(""));
            *d = btcore_web_seed_status {
                downloaded: w.downloaded,
                download_rate: w.download_rate,
                retry_in_ms: w.retry_in.map_or(0, |d| d.as_millis()),
                url_offset,
                url_len,
                error_offset,
                error_len,
                state: state_code(w.state),
                requests: w.requests,
                failures: w.failures,
                reserved: 0,
            };
        }
        Ok(())
    })
}
