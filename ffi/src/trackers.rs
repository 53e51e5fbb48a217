//! A torrent's trackers in the session API: what each last said (Transmission's
//! `trackerStats`), an announce now, and replacing the list.
//!
//! `btcore_torrent_trackers` copies everything into caller buffers in one call under
//! the session's lock: the records into an array of `btcore_tracker_status`, their
//! strings (URL, last result) NUL-terminated into one byte buffer that the records
//! point into by offset and length, so nothing the library owns outlives the call.
use crate::error::Failure;
use crate::torrent::on_torrent;
use crate::*;
use btcore_core::session::TrackerListError;
use btcore_host::client::TrackerInfo;
use std::ffi::c_char;

/// `btcore_tracker_status.flags`: an announce to this tracker is on its way.
pub const BTCORE_TRACKER_ANNOUNCING: u32 = 1;
/// `btcore_tracker_status.flags`: its last announce was answered (a failure, a
/// timeout or a transport error otherwise; see `last_announce`).
pub const BTCORE_TRACKER_LAST_OK: u32 = 2;

/// The most URLs `btcore_torrent_set_trackers` reads in one call (the session keeps
/// at most its `max_trackers` distinct ones).
pub const BTCORE_MAX_TRACKER_URLS: usize = 4096;

/// One tracker of a torrent, filled by `btcore_torrent_trackers()`. Times are Unix
/// seconds; counts the tracker did not give are -1.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct btcore_tracker_status {
    /// When its last announce ended (answered, failed or timed out); 0: never since
    /// the torrent was added.
    pub last_announce: i64,
    /// When it may be asked next; 0 when the torrent does not announce (paused,
    /// checking, no tracker client).
    pub next_announce: i64,
    /// Where its URL starts in the text buffer of the call.
    pub url_offset: u32,
    /// Its URL's length in bytes (a NUL follows it in the text buffer).
    pub url_len: u32,
    /// Where the text of its last announce starts in the text buffer: the tracker's
    /// failure reason or warning, or the transport error; empty when it answered
    /// without a word.
    pub result_offset: u32,
    /// That text's length in bytes (a NUL follows it).
    pub result_len: u32,
    /// Its BEP 12 tier (0 first).
    pub tier: u32,
    /// `BTCORE_TRACKER_ANNOUNCING`, `BTCORE_TRACKER_LAST_OK`.
    pub flags: u32,
    /// Seeders in its last answer, or -1.
    pub seeders: i32,
    /// Leechers in its last answer, or -1.
    pub leechers: i32,
    /// Completed downloads it reported, or -1.
    pub downloaded: i32,
    /// Peers its last answer gave.
    pub last_peers: u32,
    /// Its last `interval` in seconds (0: no answer yet).
    pub interval: u32,
    /// Its last `min interval` in seconds (0: no answer yet).
    pub min_interval: u32,
    /// Its failures in a row.
    pub failures: u32,
    /// Always 0.
    pub reserved: u32,
}

// SAFETY: integers only, no padding (2 * 8 + 14 * 4 bytes, 8-aligned).
unsafe impl AnyBits for btcore_tracker_status {}

fn count(n: Option<u32>) -> i32 {
    n.map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX))
}

fn unix(t: Option<u64>) -> i64 {
    t.map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX))
}

/// The bytes of the text buffer the strings of `trackers` need (each NUL-terminated).
fn text_len(trackers: &[TrackerInfo]) -> usize {
    trackers
        .iter()
        .map(|t| t.url.len() + 1 + t.last_result.len() + 1)
        .sum()
}

/// Fills `buf` (room for `cap` records) with the trackers of torrent `id`, in announce
/// order (tier by tier), and their strings into `text` (room for `text_cap` bytes):
/// each record's URL and last result are at its offsets there, NUL-terminated. Writes
/// the number of trackers to `*out_len` and the text bytes used to `*out_text_len`.
/// When either buffer is too small, returns `BTCORE_BUFFER_TOO_SMALL` with both sizes
/// needed written (and nothing else). A torrent has at most the session's
/// `max_trackers` trackers (64 by default), each result at most `max_tracker_text`
/// bytes (512). `BTCORE_NOT_FOUND` for an unknown id.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `buf` is valid for writes of `cap` `btcore_tracker_status`es (it may be NULL when
///   `cap` is 0); `text` is valid for writes of `text_cap` bytes (it may be NULL when
///   `text_cap` is 0).
/// - `out_len` and `out_text_len` are NULL or each valid for writing one `size_t`.
#[no_mangle]
pub unsafe extern "C" fn btcore_torrent_trackers(
    session: *const btcore_session,
    id: u32,
    buf: *mut btcore_tracker_status,
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
        let trackers = unsafe {
            on_torrent(session, id, |c, t| {
                c.tracker_status(t).ok_or(BTCORE_NOT_FOUND)
            })
        }?;
        let need = text_len(&trackers);
        if need > u32::MAX as usize {
            return Err(BTCORE_INVALID_PARAMETER);
        }
        // SAFETY: both non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe {
            out_len.write(trackers.len());
            out_text_len.write(need);
        }
        if dst.len() < trackers.len() || txt.len() < need {
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
        for (d, t) in dst.iter_mut().zip(&trackers) {
            let (url_offset, url_len) = put(&t.url);
            let (result_offset, result_len) = put(&t.last_result);
            let mut flags = 0;
            if t.announcing {
                flags |= BTCORE_TRACKER_ANNOUNCING;
            }
            if t.last_announce_ok {
                flags |= BTCORE_TRACKER_LAST_OK;
            }
            *d = btcore_tracker_status {
                last_announce: unix(t.last_announce),
                next_announce: unix(t.next_announce),
                url_offset,
                url_len,
                result_offset,
                result_len,
                tier: t.tier,
                flags,
                seeders: count(t.seeders),
                leechers: count(t.leechers),
                downloaded: count(t.downloaded),
                last_peers: t.last_peers,
                interval: t.interval.unwrap_or(0),
                min_interval: t.min_interval.unwrap_or(0),
                failures: t.failures,
                reserved: 0,
            };
        }
        Ok(())
    })
}

/// Asks torrent `id` to announce now: to each tracker as soon as its `min interval`
/// allows (at once when it has passed; otherwise when it does, as Transmission does),
/// and on the DHT. `BTCORE_NOT_FOUND` for an unknown id, `BTCORE_WRONG_STATE` when the
/// torrent does not run (paused, checking) or has nothing to ask (no tracker and no
/// DHT).
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
/// frees during the call. A freed handle, one of another type or any other pointer is a
/// checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
/// handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_torrent_reannounce(
    session: *mut btcore_session,
    id: u32,
) -> btcore_result {
    guard(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        unsafe {
            on_torrent(session, id, |c, t| {
                if c.reannounce(t) {
                    Ok(())
                } else {
                    Err(BTCORE_WRONG_STATE)
                }
            })
        }
    })
}

/// Replaces the trackers of torrent `id` with the `count` URLs of `urls` (UTF-8,
/// NUL-terminated), URL `i` in tier `tiers[i]` (tiers in ascending number, first
/// first; gaps do not matter). Repeated URLs are dropped. A tracker that stays keeps
/// its record; the list is what `btcore_session_save_torrent_file` writes afterwards
/// (the session itself keeps no tracker list across restarts). `count` 0 removes
/// every tracker. Refused as a whole with `BTCORE_INVALID_PARAMETER` (the detail
/// says why) when a URL is not UTF-8, empty, longer than 1024 bytes or not an
/// `http://`, `https://` or `udp://` URL with a host, when there are more distinct
/// URLs than the session's `max_trackers`, or `count` is above
/// `BTCORE_MAX_TRACKER_URLS`; `BTCORE_NOT_FOUND` for an unknown id.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `urls` is valid for reading `count` pointers, each NULL or NUL-terminated, and
///   `tiers` for reading `count` `uint32_t`s (both may be NULL when `count` is 0).
#[no_mangle]
pub unsafe extern "C" fn btcore_torrent_set_trackers(
    session: *mut btcore_session,
    id: u32,
    urls: *const *const c_char,
    tiers: *const u32,
    count: usize,
) -> btcore_result {
    guard_detail(|| {
        if count > BTCORE_MAX_TRACKER_URLS {
            return Err(Failure::new(
                BTCORE_INVALID_PARAMETER,
                format_args!("more than {BTCORE_MAX_TRACKER_URLS} tracker URLs"),
            ));
        }
        // SAFETY: `urls` is valid for reading `count` pointers, as this function's
        // contract requires (`count` is bounded above).
        let ptrs = unsafe { in_slice(urls, count) }?;
        // SAFETY: `tiers` is valid for reading `count` `uint32_t`s, as this function's
        // contract requires.
        let nums = unsafe { in_slice(tiers, count) }?;
        let mut list: Vec<(u32, String)> = Vec::with_capacity(count);
        for (&p, &tier) in ptrs.iter().zip(nums) {
            // SAFETY: each pointer is NULL or NUL-terminated, as this function's
            // contract requires.
            let s = unsafe { cstr(p) }?;
            let s = s.to_str().map_err(|_| {
                Failure::new(BTCORE_INVALID_PARAMETER, "a tracker URL is not UTF-8")
            })?;
            list.push((tier, s.to_owned()));
        }
        // Stable: the order within a tier is kept.
        list.sort_by_key(|(tier, _)| *tier);
        let mut grouped: Vec<Vec<String>> = Vec::new();
        let mut last = None;
        for (tier, url) in list {
            if last != Some(tier) {
                grouped.push(Vec::new());
                last = Some(tier);
            }
            if let Some(g) = grouped.last_mut() {
                g.push(url);
            }
        }
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        let r = unsafe { on_torrent(session, id, |c, t| Ok(c.set_trackers(t, grouped))) }?;
        r.map_err(|e| match e {
            TrackerListError::UnknownTorrent => Failure::from(BTCORE_NOT_FOUND),
            e => Failure::new(BTCORE_INVALID_PARAMETER, e),
        })
    })
}

/// A slice of `count` `T`s from a caller pointer (NULL allowed when `count` is 0).
///
/// # Safety
/// `p` must point to `count` readable `T`s when not NULL, unchanged during the call.
unsafe fn in_slice<'a, T>(p: *const T, count: usize) -> Result<&'a [T], btcore_result> {
    if count == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(BTCORE_NULL_PARAMETER);
    }
    if count
        .checked_mul(std::mem::size_of::<T>().max(1))
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(BTCORE_INVALID_PARAMETER);
    }
    // SAFETY: `p` is not NULL and `count` elements fit in `isize::MAX` bytes (both
    // checked above); the caller promises `count` readable `T`s at `p`.
    Ok(unsafe { std::slice::from_raw_parts(p, count) })
}
