//! Creating `.torrent` files.
use crate::error::Failure;
use crate::*;
use btcore_host::create::{create_torrent, CreateError, CreateOptions};

/// How to create a torrent. Fill it with `btcore_create_options_default()` first.
/// Strings are NUL-terminated UTF-8; NULL means "none".
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct btcore_create_options {
    /// Tracker URLs, `trackers_len` of them, each its own tier (NULL when 0).
    pub trackers: *const *const c_char,
    /// The number of `trackers`.
    pub trackers_len: usize,
    /// Web seed URLs (BEP 19), `web_seeds_len` of them (NULL when 0).
    pub web_seeds: *const *const c_char,
    /// The number of `web_seeds`.
    pub web_seeds_len: usize,
    /// A comment, or NULL.
    pub comment: *const c_char,
    /// The torrent's name, or NULL for the file or directory name.
    pub name: *const c_char,
    /// Piece length in bytes, a power of two from 16 KiB to 64 MiB (0: automatic).
    pub piece_length: u32,
    /// Hashing threads (0: one per CPU).
    pub threads: u32,
    /// `creation date` in seconds since the epoch; -1: now (give a fixed value for
    /// reproducible output).
    pub creation_date: i64,
    /// Mark the torrent private (BEP 27).
    pub private_: bool,
}

/// Fills `out` with the defaults: no trackers, automatic piece length, now, public.
/// Thread-safe.
///
/// # Safety
///
/// `out` is NULL or valid for writing one `btcore_create_options`.
#[no_mangle]
pub unsafe extern "C" fn btcore_create_options_default(
    out: *mut btcore_create_options,
) -> btcore_result {
    guard(|| {
        let out = non_null(out)?;
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe {
            out.write(btcore_create_options {
                trackers: std::ptr::null(),
                trackers_len: 0,
                web_seeds: std::ptr::null(),
                web_seeds_len: 0,
                comment: std::ptr::null(),
                name: std::ptr::null(),
                piece_length: 0,
                threads: 0,
                creation_date: -1,
                private_: false,
            })
        };
        Ok(())
    })
}

/// An owned UTF-8 string from a C string; NULL gives None.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
unsafe fn string(p: *const c_char) -> Result<Option<String>, btcore_result> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: not NULL (checked above), and NUL-terminated by this function's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map(|s| Some(s.to_owned()))
        .map_err(|_| BTCORE_INVALID_PARAMETER)
}

/// `n` owned strings from an array of C strings (none may be NULL).
///
/// # Safety
/// `p` is valid for reads of `n` pointers (it may be NULL when `n` is 0), each NULL or
/// pointing to a NUL-terminated string.
unsafe fn strings(p: *const *const c_char, n: usize) -> Result<Vec<String>, btcore_result> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(BTCORE_NULL_PARAMETER);
    }
    // SAFETY: not NULL (checked above), and valid for reads of `n` pointers by this
    // function's contract (so `n` pointers fit in `isize::MAX` bytes).
    let ptrs = unsafe { std::slice::from_raw_parts(p, n) };
    ptrs.iter()
        // SAFETY: each pointer is NULL or NUL-terminated, by this function's contract.
        .map(|&s| unsafe { string(s) }?.ok_or(BTCORE_NULL_PARAMETER))
        .collect()
}

/// The options behind `o` (NULL: the defaults).
///
/// # Safety
/// `o` is NULL or valid for reading one `btcore_create_options` as
/// `btcore_create_torrent` requires.
unsafe fn options(o: *const btcore_create_options) -> Result<CreateOptions, btcore_result> {
    if o.is_null() {
        return Ok(CreateOptions::default());
    }
    // SAFETY: `o` is non-NULL (checked above) and valid for one read, as this function's
    // contract requires.
    let o = unsafe { *o };
    Ok(CreateOptions {
        // SAFETY: `o.trackers` holds `o.trackers_len` strings, by this function's contract.
        trackers: unsafe { strings(o.trackers, o.trackers_len) }?
            .into_iter()
            .map(|t| vec![t])
            .collect(),
        // SAFETY: `o.web_seeds` holds `o.web_seeds_len` strings, by this function's
        // contract.
        web_seeds: unsafe { strings(o.web_seeds, o.web_seeds_len) }?,
        private: o.private_,
        piece_length: (o.piece_length != 0).then_some(o.piece_length),
        // SAFETY: `o.comment` is NULL or NUL-terminated, by this function's contract.
        comment: unsafe { string(o.comment) }?,
        created_by: None,
        creation_date: (o.creation_date >= 0).then_some(o.creation_date),
        threads: o.threads as usize,
        // SAFETY: `o.name` is NULL or NUL-terminated, by this function's contract.
        name: unsafe { string(o.name) }?,
        // The C API creates v1 torrents (v2 and hybrid are not in its options yet).
        format: btcore_host::create::Format::V1,
    })
}

/// Creates the torrent for `path` with the options behind `o`.
///
/// # Safety
/// `path` is NULL or NUL-terminated; `o` as [`options`].
unsafe fn create(path: *const c_char, o: *const btcore_create_options) -> Result<Vec<u8>, Failure> {
    // SAFETY: `path` is NULL or NUL-terminated, as this function's contract requires.
    let path = unsafe { opt_path(path) }?.ok_or(BTCORE_NULL_PARAMETER)?;
    // SAFETY: `o` is NULL or valid options, by this function's contract.
    let opts = unsafe { options(o) }?;
    create_torrent(&path, &opts).map_err(|e| match &e {
        CreateError::Io { path, source } => Failure::io(BTCORE_IO, source).path(path),
        CreateError::BadPieceLength(_) => Failure::new(BTCORE_INVALID_PARAMETER, &e),
        CreateError::Empty(p) | CreateError::BadName(p) => {
            Failure::new(BTCORE_CREATE_FAILED, &e).path(p)
        }
        _ => Failure::new(BTCORE_CREATE_FAILED, &e).path(&path),
    })
}

/// Creates a `.torrent` for the file or directory at `path` with `options` (NULL:
/// the defaults) and copies it into `buf` (room for `cap`), its length into
/// `*out_len`. When `cap` is too small, returns `BTCORE_BUFFER_TOO_SMALL` with the
/// length needed in `*out_len` (the data is hashed again on the next call: for large
/// content prefer `btcore_create_torrent_file`). Blocks while hashing. Thread-safe.
///
/// # Safety
///
/// - `path` is NULL or points to a NUL-terminated string.
/// - `options` is NULL or valid for reading one `btcore_create_options` whose `trackers`
///   and `web_seeds` hold `trackers_len` and `web_seeds_len` NUL-terminated strings and whose
///   `comment` and `name` are NULL or NUL-terminated.
/// - `buf` is valid for writes of `cap` `u8`s (it may be NULL when `cap` is 0).
/// - `out_len` is NULL or valid for writing one `usize`.
#[no_mangle]
pub unsafe extern "C" fn btcore_create_torrent(
    path: *const c_char,
    options: *const btcore_create_options,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard_detail(|| {
        non_null(out_len)?;
        // SAFETY: `buf` is valid for writes of `cap` elements or `cap` is 0, as this
        // function's contract requires.
        unsafe { out_slice(buf, cap) }?;
        // SAFETY: `path` is NULL or NUL-terminated and `options` NULL or valid, by this
        // function's contract.
        let t = unsafe { create(path, options) }?;
        // SAFETY: `buf` is valid for writes of `cap` bytes or `cap` is 0, and `out_len` is
        // NULL or valid for one write, as this function's contract requires.
        unsafe { copy_out(&t, buf, cap, out_len) }?;
        Ok(())
    })
}

/// Creates a `.torrent` for the file or directory at `path` with `options` (NULL: the
/// defaults) and writes it to the file `output`. Blocks while hashing. Thread-safe.
///
/// # Safety
///
/// - `path` is NULL or points to a NUL-terminated string.
/// - `options` is NULL or valid for reading one `btcore_create_options` whose `trackers`
///   and `web_seeds` hold `trackers_len` and `web_seeds_len` NUL-terminated strings and whose
///   `comment` and `name` are NULL or NUL-terminated.
/// - `output` is NULL or points to a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn btcore_create_torrent_file(
    path: *const c_char,
    options: *const btcore_create_options,
    output: *const c_char,
) -> btcore_result {
    guard_detail(|| {
        // SAFETY: `output` is NULL or NUL-terminated, as this function's contract requires.
        let output = unsafe { opt_path(output) }?.ok_or(BTCORE_NULL_PARAMETER)?;
        // SAFETY: `path` is NULL or NUL-terminated and `options` NULL or valid, by this
        // function's contract.
        let t = unsafe { create(path, options) }?;
        std::fs::write(&output, t).map_err(|e| Failure::io(BTCORE_IO, &e).path(&output))
    })
}
