//! Per-torrent controls of the session API: the file list with each file's progress,
//! file priorities (wanted files), sequential order, a torrent's own rate limits, the
//! ratio at which it stops seeding, moving and renaming its data, and saving its
//! metadata (a magnet link's) as a `.torrent` file.
//!
//! Every call is thread-safe (serialized on the session's lock). Moving and renaming
//! wait for the torrent's disk writes in flight and rename (or, across file systems,
//! copy) the files while the lock is held: the loop waits meanwhile.
use crate::session::with_client;
use crate::*;
use btcore_core::session::TorrentId;
use btcore_host::client::{Client, ControlError};
use std::ffi::c_char;

/// `btcore_file_info.flags`: a BEP 47 pad file (never written; skip it in a UI).
pub const BTCORE_FILE_PAD: u32 = 1;

/// The lowest file priority: the file is skipped (not downloaded).
pub const BTCORE_PRIORITY_SKIP: u8 = 0;
/// The priority of every file until set (libtorrent's default; Transmission's
/// "normal").
pub const BTCORE_PRIORITY_DEFAULT: u8 = 4;
/// The highest file priority (Transmission's "high"; its "low" is 1).
pub const BTCORE_PRIORITY_MAX: u8 = 7;

/// One file of a torrent, filled by `btcore_session_files()`. Its path comes from
/// `btcore_session_file_name()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct btcore_file_info {
    /// Its length in bytes.
    pub size: u64,
    /// Its bytes verified (those lying in pieces the torrent has).
    pub done: u64,
    /// Its priority: 0 (skipped) to 7.
    pub priority: u32,
    /// `BTCORE_FILE_PAD` or 0.
    pub flags: u32,
}

// SAFETY: integers only, no padding (8 + 8 + 4 + 4 bytes).
unsafe impl AnyBits for btcore_file_info {}

fn control_error(e: &ControlError) -> btcore_result {
    match e {
        ControlError::UnknownTorrent => BTCORE_NOT_FOUND,
        ControlError::NoMetadata | ControlError::Busy => BTCORE_WRONG_STATE,
        ControlError::Session(_) | ControlError::InvalidName(_) => BTCORE_INVALID_PARAMETER,
        ControlError::Exists(_) | ControlError::Io(..) => BTCORE_IO,
        ControlError::Storage(_) => BTCORE_STORAGE,
    }
}

/// Runs `f` on torrent `id` of `session`: `BTCORE_NOT_FOUND` when there is none.
///
/// # Safety
/// `session` as [`with_client`] requires.
pub(crate) unsafe fn on_torrent<R>(
    session: *const btcore_session,
    id: u32,
    f: impl FnOnce(&mut Client, TorrentId) -> Result<R, btcore_result>,
) -> Result<R, btcore_result> {
    // SAFETY: `session` is NULL or a handle that no free races with, as the caller's
    // contract requires; anything else is refused before a read.
    unsafe {
        with_client(session, |c| {
            if c.info_hash(TorrentId(id)).is_none() {
                return Err(BTCORE_NOT_FOUND);
            }
            f(c, TorrentId(id))
        })
    }
}

/// A required path argument.
///
/// # Safety
/// `p` is NULL or NUL-terminated.
unsafe fn path(p: *const c_char) -> Result<std::path::PathBuf, btcore_result> {
    // SAFETY: `p` is NULL or NUL-terminated, as the caller's contract requires.
    unsafe { opt_path(p) }?.ok_or(BTCORE_NULL_PARAMETER)
}

/// Writes the number of files of torrent `id` (pad files included) to `*out`: the
/// length `btcore_session_set_file_priorities` expects. `BTCORE_NOT_FOUND` for an
/// unknown id, `BTCORE_WRONG_STATE` for a magnet link whose metadata has not arrived.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `out` is NULL or valid for writing one `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_file_count(
    session: *const btcore_session,
    id: u32,
    out: *mut u32,
) -> btcore_result {
    guard(|| {
        let out = non_null(out)?;
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        let n = unsafe {
            on_torrent(session, id, |c, t| {
                c.files(t).map(|f| f.len()).ok_or(BTCORE_WRONG_STATE)
            })
        }?;
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(n as u32) };
        Ok(())
    })
}

/// Fills `buf` (room for `cap`) with the files of torrent `id`, in torrent order, and
/// writes their number to `*out_len`. When `cap` is too small, returns
/// `BTCORE_BUFFER_TOO_SMALL` with the number needed in `*out_len`. `BTCORE_NOT_FOUND`
/// for an unknown id, `BTCORE_WRONG_STATE` for a magnet link whose metadata has not
/// arrived.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `buf` is valid for writes of `cap` `btcore_file_info`s (it may be NULL when `cap` is
///   0).
/// - `out_len` is NULL or valid for writing one `size_t`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_files(
    session: *const btcore_session,
    id: u32,
    buf: *mut btcore_file_info,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard(|| {
        let out_len = non_null(out_len)?;
        // SAFETY: `buf` is valid for writes of `cap` elements or `cap` is 0, as this
        // function's contract requires.
        let dst = unsafe { out_slice(buf, cap) }?;
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        let files =
            unsafe { on_torrent(session, id, |c, t| c.files(t).ok_or(BTCORE_WRONG_STATE)) }?;
        // SAFETY: `out_len` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out_len.write(files.len()) };
        if dst.len() < files.len() {
            return Err(BTCORE_BUFFER_TOO_SMALL);
        }
        for (d, f) in dst.iter_mut().zip(&files) {
            *d = btcore_file_info {
                size: f.size,
                done: f.done,
                priority: u32::from(f.priority),
                flags: if f.pad { BTCORE_FILE_PAD } else { 0 },
            };
        }
        Ok(())
    })
}

/// Copies the path of file `index` of torrent `id` (relative to the torrent's save
/// folder, `/`-separated, UTF-8; empty for a pad file) into `buf` with a terminating
/// NUL, and its length without the NUL into `*out_len`. When `cap` is too small,
/// returns `BTCORE_BUFFER_TOO_SMALL` with the length needed in `*out_len`.
/// `BTCORE_INVALID_PARAMETER` for an index past the last file.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `buf` is valid for writes of `cap` `char`s (it may be NULL when `cap` is 0).
/// - `out_len` is NULL or valid for writing one `size_t`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_file_name(
    session: *const btcore_session,
    id: u32,
    index: u32,
    buf: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard(|| {
        let out_len = non_null(out_len)?;
        // SAFETY: `buf` is valid for writes of `cap` elements or `cap` is 0, as this
        // function's contract requires.
        let dst = unsafe { out_slice(buf.cast::<u8>(), cap) }?;
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        let name = unsafe {
            on_torrent(session, id, |c, t| {
                let files = c.files(t).ok_or(BTCORE_WRONG_STATE)?;
                files
                    .into_iter()
                    .nth(index as usize)
                    .map(|f| f.path)
                    .ok_or(BTCORE_INVALID_PARAMETER)
            })
        }?;
        let name = name.as_bytes();
        // SAFETY: `out_len` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out_len.write(name.len()) };
        if dst.len() <= name.len() {
            return Err(BTCORE_BUFFER_TOO_SMALL);
        }
        dst[..name.len()].copy_from_slice(name);
        dst[name.len()] = 0;
        Ok(())
    })
}

/// Sets the priority of each file of torrent `id`: `count` priorities in torrent order,
/// one per file (pad files included; `btcore_session_file_count`). 0
/// (`BTCORE_PRIORITY_SKIP`) skips a file: its pieces are not downloaded and the file is
/// not created, except the bytes of a piece it shares with a wanted file. 1 to 7 rank
/// wanted files (7 first); 4 is the default. Transmission's wanted/low/normal/high are
/// 0/1/4/7. A torrent that has every wanted piece is finished
/// (`BTCORE_EVENT_TORRENT_FINISHED`; `btcore_torrent_status` reports the progress of
/// the wanted bytes) and downloads again when more files become wanted.
/// `BTCORE_INVALID_PARAMETER` when `count` is not the file count or a priority is above
/// 7 (nothing changes), `BTCORE_WRONG_STATE` for a magnet link without metadata.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `priorities` is valid for reading `count` bytes (it may be NULL when `count` is 0).
#[no_mangle]
pub unsafe extern "C" fn btcore_session_set_file_priorities(
    session: *mut btcore_session,
    id: u32,
    priorities: *const u8,
    count: usize,
) -> btcore_result {
    guard(|| {
        // SAFETY: `priorities` is valid for `count` bytes, as this function's contract
        // requires.
        let prio = unsafe { bytes(priorities, count) }?;
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        unsafe {
            on_torrent(session, id, |c, t| {
                c.set_file_priorities(t, prio)
                    .map_err(|e| control_error(&e))
            })
        }
    })
}

/// Turns sequential order on (`true`: pieces in index order within each priority,
/// for streaming) or off (rarest first, the default) for torrent `id`.
/// `BTCORE_WRONG_STATE` for a magnet link without metadata.
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
/// frees during the call. A freed handle, one of another type or any other pointer is a
/// checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
/// handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_set_sequential(
    session: *mut btcore_session,
    id: u32,
    sequential: bool,
) -> btcore_result {
    guard(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        unsafe {
            on_torrent(session, id, |c, t| {
                if c.set_sequential(t, sequential) {
                    Ok(())
                } else {
                    Err(BTCORE_WRONG_STATE)
                }
            })
        }
    })
}

/// Limits torrent `id` to `download_bps` and `upload_bps` bytes per second of its own
/// (0: no limit of its own), on top of the session's limits: a byte moves when both
/// allow it.
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
/// frees during the call. A freed handle, one of another type or any other pointer is a
/// checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
/// handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_set_torrent_limits(
    session: *mut btcore_session,
    id: u32,
    download_bps: u64,
    upload_bps: u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        unsafe {
            on_torrent(session, id, |c, t| {
                c.set_torrent_limits(t, download_bps, upload_bps);
                Ok(())
            })
        }
    })
}

/// Stops torrent `id` seeding once it is finished and has uploaded `ratio_permille`
/// thousandths of what it downloaded (1000: ratio 1.0; the downloaded bytes count at
/// least the bytes it has, so a torrent added complete stops after uploading its size
/// times the ratio): it is paused (`BTCORE_STATE_PAUSED`) and
/// `BTCORE_EVENT_RATIO_REACHED` is sent. 0 lifts the limit. A torrent resumed past its
/// limit stops again: raise or lift the limit first.
///
/// # Safety
///
/// `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
/// frees during the call. A freed handle, one of another type or any other pointer is a
/// checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
/// handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_set_ratio_limit(
    session: *mut btcore_session,
    id: u32,
    ratio_permille: u32,
) -> btcore_result {
    guard(|| {
        let limit = Some(ratio_permille).filter(|&r| r > 0);
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        unsafe {
            on_torrent(session, id, |c, t| {
                c.set_ratio_limit(t, limit);
                Ok(())
            })
        }
    })
}

/// Moves the data of torrent `id` to the folder `path` (created if needed): each file
/// goes to the same relative path under it, nothing is written outside it, and nothing
/// there is replaced (a file in the way refuses the move with `BTCORE_IO` before any
/// file moved; a failure midway puts back the files moved). The torrent keeps running
/// from the new place. Returns when the data is moved: across file systems the data is
/// copied, and the loop waits. `BTCORE_WRONG_STATE` while the torrent's data is being
/// checked or its metadata has not arrived. The new place is not remembered in resume
/// data: add the torrent with it next time.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_move_storage(
    session: *mut btcore_session,
    id: u32,
    path: *const c_char,
) -> btcore_result {
    guard(|| {
        // SAFETY: `path` is NULL or NUL-terminated, as this function's contract requires.
        let dir = unsafe { self::path(path) }?;
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        unsafe {
            on_torrent(session, id, |c, t| {
                c.move_storage(t, &dir).map_err(|e| control_error(&e))
            })
        }
    })
}

/// Renames file `index` of torrent `id` to `name`: the last component of its path,
/// one plain name (UTF-8; not empty, `.` or `..`; no `/`, `\` or NUL; at most 255
/// bytes; nothing a `.torrent` path would have changed). The file moves on disk if it
/// exists. `BTCORE_INVALID_PARAMETER` for a bad name or index, `BTCORE_STORAGE` when
/// the new path is taken by another file of the torrent, `BTCORE_IO` when a file is in
/// the way on disk.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_rename_file(
    session: *mut btcore_session,
    id: u32,
    index: u32,
    name: *const c_char,
) -> btcore_result {
    guard(|| {
        // SAFETY: `name` is NULL or NUL-terminated, as this function's contract requires.
        let name = unsafe { cstr(name) }?
            .to_str()
            .map_err(|_| BTCORE_INVALID_PARAMETER)?;
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        unsafe {
            on_torrent(session, id, |c, t| {
                c.rename_file(t, index, name).map_err(|e| control_error(&e))
            })
        }
    })
}

/// Renames the top folder of multi-file torrent `id` to `name` (checked as in
/// `btcore_session_rename_file`); every file moves with it. `BTCORE_INVALID_PARAMETER`
/// for a bad name or a single-file torrent.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_rename_folder(
    session: *mut btcore_session,
    id: u32,
    name: *const c_char,
) -> btcore_result {
    guard(|| {
        // SAFETY: `name` is NULL or NUL-terminated, as this function's contract requires.
        let name = unsafe { cstr(name) }?
            .to_str()
            .map_err(|_| BTCORE_INVALID_PARAMETER)?;
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        unsafe {
            on_torrent(session, id, |c, t| {
                c.rename_folder(t, name).map_err(|e| control_error(&e))
            })
        }
    })
}

/// Writes torrent `id` as a `.torrent` file at `path`: its info dictionary as received
/// (same info-hash) with its trackers (`announce`, and `announce-list` when there are
/// several). The file is replaced atomically (a reader sees the old file or the whole
/// new one). What saves a magnet link's metadata once `BTCORE_EVENT_METADATA_RECEIVED`
/// came; `BTCORE_WRONG_STATE` before, `BTCORE_IO` when the file cannot be written.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_save_torrent_file(
    session: *const btcore_session,
    id: u32,
    path: *const c_char,
) -> btcore_result {
    guard(|| {
        // SAFETY: `path` is NULL or NUL-terminated, as this function's contract requires.
        let file = unsafe { self::path(path) }?;
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        unsafe {
            on_torrent(session, id, |c, t| {
                c.save_torrent_file(t, &file).map_err(|e| control_error(&e))
            })
        }
    })
}

/// Checks the data of torrent `id` on disk again (Transmission's "verify"): its disk
/// writes in flight finish, its peers are closed, and every piece is hashed off the
/// loop while the torrent is in `BTCORE_STATE_CHECKING` (progress in
/// `btcore_torrent_status`); then it runs on with what verified, downloading what did
/// not (peers it was connected to are dialed again at once). A paused torrent stays
/// paused. `BTCORE_WRONG_STATE` while a check runs or a magnet link's metadata has not
/// arrived.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_recheck(
    session: *mut btcore_session,
    id: u32,
) -> btcore_result {
    guard(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        unsafe {
            on_torrent(session, id, |c, t| {
                c.recheck(t).map_err(|e| control_error(&e))
            })
        }
    })
}

/// Points torrent `id` at data already in the folder `path` (Transmission's
/// set-location without moving): nothing moves; the torrent's files are looked for
/// under `path` from now on and every piece is checked there, as
/// `btcore_session_recheck` does. `BTCORE_WRONG_STATE` while a check runs or a magnet
/// link's metadata has not arrived; `BTCORE_STORAGE` when the files cannot live there.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_set_location(
    session: *mut btcore_session,
    id: u32,
    path: *const c_char,
) -> btcore_result {
    guard(|| {
        // SAFETY: `path` is NULL or NUL-terminated, as this function's contract requires.
        let dir = unsafe { self::path(path) }?;
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires.
        unsafe {
            on_torrent(session, id, |c, t| {
                c.set_location(t, &dir).map_err(|e| control_error(&e))
            })
        }
    })
}

/// Writes a v2 info-hash (when there is one) and whether there is one.
///
/// # Safety
///
/// `out` is valid for writing 32 bytes and `has_v2` for one `bool`.
pub(crate) unsafe fn write_info_hash_v2(h: Option<[u8; 32]>, out: *mut u8, has_v2: *mut bool) {
    if let Some(h) = h {
        // SAFETY: valid for 32 bytes, as this function's contract requires.
        unsafe { core::ptr::copy_nonoverlapping(h.as_ptr(), out, 32) };
    }
    // SAFETY: valid for one write, as this function's contract requires.
    unsafe { has_v2.write(h.is_some()) };
}
