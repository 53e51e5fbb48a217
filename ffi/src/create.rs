//! Creating `.torrent` files.

use crate::btcore_result::*;
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
#[no_mangle]
pub extern "C" fn btcore_create_options_default(out: *mut btcore_create_options) -> btcore_result {
    guard(|| {
        let out = non_null(out)?;
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

unsafe fn string(p: *const c_char) -> Result<Option<String>, btcore_result> {
    if p.is_null() {
        return Ok(None);
    }
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map(|s| Some(s.to_owned()))
        .map_err(|_| BTCORE_INVALID_PARAMETER)
}

unsafe fn strings(p: *const *const c_char, n: usize) -> Result<Vec<String>, btcore_result> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(BTCORE_NULL_PARAMETER);
    }
    let ptrs = unsafe { std::slice::from_raw_parts(p, n) };
    ptrs.iter()
        .map(|&s| unsafe { string(s) }?.ok_or(BTCORE_NULL_PARAMETER))
        .collect()
}

fn options(o: *const btcore_create_options) -> Result<CreateOptions, btcore_result> {
    if o.is_null() {
        return Ok(CreateOptions::default());
    }
    let o = unsafe { *o };
    Ok(CreateOptions {
        trackers: unsafe { strings(o.trackers, o.trackers_len) }?
            .into_iter()
            .map(|t| vec![t])
            .collect(),
        web_seeds: unsafe { strings(o.web_seeds, o.web_seeds_len) }?,
        private: o.private_,
        piece_length: (o.piece_length != 0).then_some(o.piece_length),
        comment: unsafe { string(o.comment) }?,
        created_by: None,
        creation_date: (o.creation_date >= 0).then_some(o.creation_date),
        threads: o.threads as usize,
        name: unsafe { string(o.name) }?,
    })
}

fn create(path: *const c_char, o: *const btcore_create_options) -> Result<Vec<u8>, btcore_result> {
    let path = unsafe { opt_path(path) }?.ok_or(BTCORE_NULL_PARAMETER)?;
    let opts = options(o)?;
    create_torrent(&path, &opts).map_err(|e| match e {
        CreateError::Io { .. } => BTCORE_IO,
        CreateError::BadPieceLength(_) => BTCORE_INVALID_PARAMETER,
        _ => BTCORE_CREATE_FAILED,
    })
}

/// Creates a `.torrent` for the file or directory at `path` with `options` (NULL:
/// the defaults) and copies it into `buf` (room for `cap`), its length into
/// `*out_len`. When `cap` is too small, returns `BTCORE_BUFFER_TOO_SMALL` with the
/// length needed in `*out_len` (the data is hashed again on the next call: for large
/// content prefer `btcore_create_torrent_file`). Blocks while hashing. Thread-safe.
#[no_mangle]
pub extern "C" fn btcore_create_torrent(
    path: *const c_char,
    options: *const btcore_create_options,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
) -> btcore_result {
    guard(|| {
        non_null(out_len)?;
        unsafe { out_slice(buf, cap) }?;
        let t = create(path, options)?;
        unsafe { copy_out(&t, buf, cap, out_len) }
    })
}

/// Creates a `.torrent` for the file or directory at `path` with `options` (NULL: the
/// defaults) and writes it to the file `output`. Blocks while hashing. Thread-safe.
#[no_mangle]
pub extern "C" fn btcore_create_torrent_file(
    path: *const c_char,
    options: *const btcore_create_options,
    output: *const c_char,
) -> btcore_result {
    guard(|| {
        let output = unsafe { opt_path(output) }?.ok_or(BTCORE_NULL_PARAMETER)?;
        let t = create(path, options)?;
        std::fs::write(output, t).map_err(|_| BTCORE_IO)
    })
}
