//! Errors that say what happened: the detail behind a result code.
//!
//! A result code says what kind of thing failed; the detail says which one and why:
//! the OS error number of a socket or file error, the file or address involved, the
//! byte offset and cause of a `.torrent`, bencode or magnet parse error, and a
//! sentence saying it all ("/srv/dl/a/b: Not a directory (os error 20)",
//! "unexpected end of input at byte 8090").
//!
//! Where the detail of a failed call is kept:
//!
//! - **per handle**: every call on a session or sans-IO handle that fails records its
//!   detail in the handle (behind a lock of its own), read with
//!   `btcore_session_last_error` / `btcore_sansio_last_error` from any thread. A
//!   success does not clear it (as `errno`); each failure replaces it.
//! - **per thread**: every call that fails, with a handle or without (creating a
//!   session, `btcore_create_torrent`, a NULL or freed handle), also records it for the
//!   calling thread, read with `btcore_last_error` on that thread.
//!
//! Events whose cause has text (`BTCORE_EVENT_FILE_ERROR`, `BTCORE_EVENT_TRACKER_ERROR`,
//! `BTCORE_EVENT_TRACKER_WARNING`) carry a `detail` number; `btcore_session_event_detail`
//! / `btcore_sansio_event_detail` give that detail while it is among the last
//! [`MAX_EVENT_DETAILS`] of the handle (a bounded ring: the C event array stays plain
//! fixed-size data).
//!
//! Texts are copied into caller buffers NUL-terminated and cut to fit, as with
//! libcurl's `CURLOPT_ERRORBUFFER`; the detail struct says how long the whole text is,
//! so a caller can ask again with a larger buffer.
use crate::*;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// `btcore_error_detail.subject_kind`: no file, address or URL is involved.
pub const BTCORE_SUBJECT_NONE: u32 = 0;
/// `btcore_error_detail.subject_kind`: the subject is a file or directory path (bytes
/// of the platform's path, usually UTF-8).
pub const BTCORE_SUBJECT_PATH: u32 = 1;
/// `btcore_error_detail.subject_kind`: the subject is a socket address
/// (`"0.0.0.0:6881"`, `"[::1]:6881"`) or the address text given.
pub const BTCORE_SUBJECT_ADDRESS: u32 = 2;
/// `btcore_error_detail.subject_kind`: the subject is a tracker URL.
pub const BTCORE_SUBJECT_URL: u32 = 3;

/// `btcore_error_detail.offset` when no byte offset applies (not a parse error).
pub const BTCORE_NO_OFFSET: u64 = 0xFFFF_FFFF_FFFF_FFFF;

/// The detail of a failure, filled by `btcore_last_error`, `btcore_session_last_error`,
/// `btcore_sansio_last_error` and the `_event_detail` calls. All fields are
/// fixed-width integers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct btcore_error_detail {
    /// The result code of the failure (a `btcore_result` value; `BTCORE_OK` when no
    /// failure was recorded).
    pub code: u32,
    /// The OS error number (`errno`, e.g. 98 for `EADDRINUSE`, 2 for `ENOENT`), 0 when
    /// none.
    pub os_error: i32,
    /// For a `.torrent`, bencode or magnet parse error: the byte offset in the input
    /// where it was found; `BTCORE_NO_OFFSET` (`UINT64_MAX`) otherwise.
    pub offset: u64,
    /// What the subject text is: `BTCORE_SUBJECT_*`.
    pub subject_kind: u32,
    /// Zero (room for later use).
    pub reserved: u32,
    /// The length in bytes of the whole message, without the NUL.
    pub message_len: u64,
    /// The length in bytes of the whole subject, without the NUL (0 when none).
    pub subject_len: u64,
}

/// The most event details a handle keeps for `_event_detail` (the oldest go first).
/// cbindgen:ignore
pub(crate) const MAX_EVENT_DETAILS: usize = 256;

/// The most bytes of a message or subject kept (longer texts are cut).
/// cbindgen:ignore
const MAX_TEXT: usize = 4096;

/// A failure with its detail: what the library records and the C calls give back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) code: btcore_result,
    pub(crate) os_error: i32,
    pub(crate) offset: u64,
    pub(crate) message: String,
    pub(crate) subject_kind: u32,
    pub(crate) subject: Vec<u8>,
}

impl From<btcore_result> for Failure {
    fn from(code: btcore_result) -> Self {
        Self {
            code,
            os_error: 0,
            offset: BTCORE_NO_OFFSET,
            message: result_message(code)
                .unwrap_or(c"unknown result code")
                .to_string_lossy()
                .into_owned(),
            subject_kind: BTCORE_SUBJECT_NONE,
            subject: Vec::new(),
        }
    }
}

impl Failure {
    /// A failure of `code` saying `message`.
    pub(crate) fn new(code: btcore_result, message: impl std::fmt::Display) -> Self {
        let mut message = message.to_string();
        cut(&mut message);
        Self {
            message,
            ..Self::from(code)
        }
    }

    /// A failure of `code` caused by an OS error: its number and the system's words.
    pub(crate) fn io(code: btcore_result, e: &std::io::Error) -> Self {
        Self {
            os_error: e.raw_os_error().unwrap_or(0),
            ..Self::new(code, e)
        }
    }

    /// With a byte offset in the input.
    pub(crate) fn at(self, offset: usize) -> Self {
        Self {
            offset: offset as u64,
            ..self
        }
    }

    /// With the OS error number `n` (when known).
    pub(crate) fn errno(self, n: Option<i32>) -> Self {
        Self {
            os_error: n.unwrap_or(self.os_error),
            ..self
        }
    }

    /// With a subject of `kind`.
    pub(crate) fn subject(self, kind: u32, bytes: &[u8]) -> Self {
        let n = bytes.len().min(MAX_TEXT);
        Self {
            subject_kind: kind,
            subject: bytes[..n].to_vec(),
            ..self
        }
    }

    /// With a path as the subject.
    pub(crate) fn path(self, p: &Path) -> Self {
        self.subject(BTCORE_SUBJECT_PATH, &path_bytes(p))
    }

    /// With a socket address as the subject.
    pub(crate) fn addr(self, a: SocketAddr) -> Self {
        self.subject(BTCORE_SUBJECT_ADDRESS, a.to_string().as_bytes())
    }

    fn detail(&self) -> btcore_error_detail {
        btcore_error_detail {
            code: self.code,
            os_error: self.os_error,
            offset: self.offset,
            subject_kind: self.subject_kind,
            reserved: 0,
            message_len: self.message.len() as u64,
            subject_len: self.subject.len() as u64,
        }
    }
}

/// Cuts a message to [`MAX_TEXT`] bytes at a character boundary.
fn cut(s: &mut String) {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn path_bytes(p: &Path) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        p.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        p.to_string_lossy().into_owned().into_bytes()
    }
}

/// A handle's last failure, behind a lock of its own (read from any thread).
pub(crate) type Slot = Arc<Mutex<Option<Failure>>>;

thread_local! {
    /// The last failure of a call on this thread.
    static LAST: RefCell<Option<Failure>> = const { RefCell::new(None) };
    /// The handle of the call running on this thread, once its accessor resolved it:
    /// where a failure of the call is recorded too.
    static CURRENT: RefCell<Option<Slot>> = const { RefCell::new(None) };
}

/// Starts a call: what an enclosing call had set as its handle (given back to
/// [`leave`]).
pub(crate) fn enter() -> Option<Slot> {
    CURRENT.with(|c| c.borrow_mut().take())
}

/// Ends a call, restoring the enclosing call's handle.
pub(crate) fn leave(outer: Option<Slot>) {
    CURRENT.with(|c| *c.borrow_mut() = outer);
}

/// The running call's handle is the one whose last error is `slot` (called by the
/// handle accessors once the handle is known to be live).
pub(crate) fn attach(slot: &Slot) {
    CURRENT.with(|c| *c.borrow_mut() = Some(slot.clone()));
}

/// Records the failure of the running call, for its thread and its handle.
pub(crate) fn record(f: Failure) {
    if let Some(slot) = CURRENT.with(|c| c.borrow().clone()) {
        if let Ok(mut s) = slot.lock() {
            *s = Some(f.clone());
        }
    }
    LAST.with(|l| *l.borrow_mut() = Some(f));
}

/// The details of recent events, by number (a bounded ring).
#[derive(Debug, Default)]
pub(crate) struct EventDetails {
    ring: std::collections::VecDeque<(u64, Failure)>,
    next: u64,
}

impl EventDetails {
    /// Keeps `f` and gives its number (never 0), forgetting the oldest past
    /// [`MAX_EVENT_DETAILS`].
    pub(crate) fn push(&mut self, f: Failure) -> u64 {
        self.next += 1;
        if self.ring.len() >= MAX_EVENT_DETAILS {
            self.ring.pop_front();
        }
        self.ring.push_back((self.next, f));
        self.next
    }

    /// The detail numbered `id`, while it is kept.
    pub(crate) fn get(&self, id: u64) -> Option<&Failure> {
        // Numbers rise along the ring: a binary search finds one.
        let i = self.ring.binary_search_by_key(&id, |(n, _)| *n).ok()?;
        self.ring.get(i).map(|(_, f)| f)
    }
}

/// Copies `src` into a caller buffer of `cap` bytes, NUL-terminated and cut to fit
/// (nothing when `cap` is 0).
///
/// # Safety
/// `buf` is valid for writes of `cap` bytes, or `cap` is 0.
unsafe fn copy_text(src: &[u8], buf: *mut c_char, cap: usize) -> Result<(), btcore_result> {
    // SAFETY: `buf` is valid for writes of `cap` bytes or `cap` is 0, as this
    // function's contract requires.
    let dst = unsafe { out_slice(buf.cast::<u8>(), cap) }?;
    if let Some((nul, room)) = dst.split_last_mut() {
        let n = src.len().min(room.len());
        room[..n].copy_from_slice(&src[..n]);
        // A NUL inside the text ends it for C; what follows is cut.
        let end = room[..n].iter().position(|&b| b == 0).unwrap_or(n);
        if end < room.len() {
            room[end] = 0;
        } else {
            *nul = 0;
        }
    }
    Ok(())
}

/// Writes `f` (or "no failure") to the caller's detail and buffers.
///
/// # Safety
/// `out` is NULL or valid for writing one `btcore_error_detail`; `message` and `subject`
/// are valid for writes of their capacities, or those are 0.
pub(crate) unsafe fn write_failure(
    f: Option<&Failure>,
    out: *mut btcore_error_detail,
    message: *mut c_char,
    message_cap: usize,
    subject: *mut c_char,
    subject_cap: usize,
) -> Result<(), btcore_result> {
    let none = Failure::new(BTCORE_OK, "no failure recorded");
    let f = f.unwrap_or(&none);
    // SAFETY: `message` is valid for `message_cap` bytes or it is 0, as this
    // function's contract requires.
    unsafe { copy_text(f.message.as_bytes(), message, message_cap) }?;
    // SAFETY: as above, for `subject`.
    unsafe { copy_text(&f.subject, subject, subject_cap) }?;
    if !out.is_null() {
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(f.detail()) };
    }
    Ok(())
}

/// Runs `f` behind the panic boundary without recording its failure: the calls that
/// read a recorded failure must not replace it with their own.
pub(crate) fn guard_quiet(f: impl FnOnce() -> Result<(), btcore_result>) -> btcore_result {
    let outer = enter();
    let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => BTCORE_OK,
        Ok(Err(e)) => e,
        Err(_) => BTCORE_PANIC,
    };
    leave(outer);
    r
}

/// The detail of the last call that failed on the calling thread (any call: with a
/// handle or without, e.g. `btcore_session_new`, `btcore_create_torrent`, a call given a
/// NULL or freed handle). Fills `*out` (may be NULL) and copies the message into
/// `message` and the path, address or URL involved into `subject`, each
/// NUL-terminated and cut to fit their capacities (`out->message_len` and
/// `out->subject_len` give the whole lengths); a buffer may be NULL when its capacity is
/// 0. With no failure yet, `out->code` is `BTCORE_OK`. This call records nothing of its
/// own.
///
/// # Safety
///
/// - `out` is NULL or valid for writing one `btcore_error_detail`.
/// - `message` is valid for writes of `message_cap` bytes (NULL when `message_cap` is 0),
///   and so is `subject` of `subject_cap`.
#[no_mangle]
pub unsafe extern "C" fn btcore_last_error(
    out: *mut btcore_error_detail,
    message: *mut c_char,
    message_cap: usize,
    subject: *mut c_char,
    subject_cap: usize,
) -> btcore_result {
    guard_quiet(|| {
        let f = LAST.with(|l| l.borrow().clone());
        // SAFETY: the pointers are valid for their capacities, as this function's
        // contract requires.
        unsafe { write_failure(f.as_ref(), out, message, message_cap, subject, subject_cap) }
    })
}

/// The detail of the last call on `session` that failed, from whichever thread made
/// it; as `btcore_last_error` otherwise. Thread-safe; records nothing of its own.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `out` is NULL or valid for writing one `btcore_error_detail`.
/// - `message` is valid for writes of `message_cap` bytes (NULL when `message_cap` is 0),
///   and so is `subject` of `subject_cap`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_last_error(
    session: *const btcore_session,
    out: *mut btcore_error_detail,
    message: *mut c_char,
    message_cap: usize,
    subject: *mut c_char,
    subject_cap: usize,
) -> btcore_result {
    guard_quiet(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires; anything else is refused before a read.
        let slot = unsafe { crate::session::last_error_slot(session) }?;
        let f = slot.lock().map_err(|_| BTCORE_PANIC)?.clone();
        // SAFETY: the pointers are valid for their capacities, as this function's
        // contract requires.
        unsafe { write_failure(f.as_ref(), out, message, message_cap, subject, subject_cap) }
    })
}

/// The detail of the last call on the sans-IO handle `h` that failed; as
/// `btcore_session_last_error` otherwise. Thread-safe; records nothing of its own.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles
///   before reading anything behind it.
/// - `out` is NULL or valid for writing one `btcore_error_detail`.
/// - `message` is valid for writes of `message_cap` bytes (NULL when `message_cap` is 0),
///   and so is `subject` of `subject_cap`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_last_error(
    h: *const btcore_sansio,
    out: *mut btcore_error_detail,
    message: *mut c_char,
    message_cap: usize,
    subject: *mut c_char,
    subject_cap: usize,
) -> btcore_result {
    guard_quiet(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let slot = unsafe { crate::sansio::last_error_slot(h) }?;
        let f = slot.lock().map_err(|_| BTCORE_PANIC)?.clone();
        // SAFETY: the pointers are valid for their capacities, as this function's
        // contract requires.
        unsafe { write_failure(f.as_ref(), out, message, message_cap, subject, subject_cap) }
    })
}

/// The detail of an event drained from `session` whose `detail` field is not 0
/// (`BTCORE_EVENT_FILE_ERROR`: the file and the OS error; `BTCORE_EVENT_TRACKER_ERROR`
/// and `_WARNING`: the tracker's URL as the subject and its message). The session keeps
/// the details of its last 256 such events: an older one gives `BTCORE_NOT_FOUND`.
/// Buffers as in `btcore_last_error`. Thread-safe; records nothing of its own.
///
/// # Safety
///
/// - `session` is NULL or a handle from `btcore_session_new` that no `btcore_session_free`
///   frees during the call. A freed handle, one of another type or any other pointer is a
///   checked error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live
///   handles before reading anything behind it.
/// - `out` is NULL or valid for writing one `btcore_error_detail`.
/// - `message` is valid for writes of `message_cap` bytes (NULL when `message_cap` is 0),
///   and so is `subject` of `subject_cap`.
#[no_mangle]
pub unsafe extern "C" fn btcore_session_event_detail(
    session: *const btcore_session,
    detail: u64,
    out: *mut btcore_error_detail,
    message: *mut c_char,
    message_cap: usize,
    subject: *mut c_char,
    subject_cap: usize,
) -> btcore_result {
    guard_quiet(|| {
        // SAFETY: `session` is NULL or a handle that no free races with, as this
        // function's contract requires; anything else is refused before a read.
        let f = unsafe { crate::session::event_detail(session, detail) }?;
        // SAFETY: the pointers are valid for their capacities, as this function's
        // contract requires.
        unsafe { write_failure(Some(&f), out, message, message_cap, subject, subject_cap) }
    })
}

/// The detail of an event drained from the sans-IO handle `h` whose `detail` field is
/// not 0 (`BTCORE_EVENT_TRACKER_ERROR` and `_WARNING`); as
/// `btcore_session_event_detail` otherwise.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles
///   before reading anything behind it.
/// - `out` is NULL or valid for writing one `btcore_error_detail`.
/// - `message` is valid for writes of `message_cap` bytes (NULL when `message_cap` is 0),
///   and so is `subject` of `subject_cap`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_event_detail(
    h: *const btcore_sansio,
    detail: u64,
    out: *mut btcore_error_detail,
    message: *mut c_char,
    message_cap: usize,
    subject: *mut c_char,
    subject_cap: usize,
) -> btcore_result {
    guard_quiet(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let f = unsafe { crate::sansio::event_detail(h, detail) }?;
        // SAFETY: the pointers are valid for their capacities, as this function's
        // contract requires.
        unsafe { write_failure(Some(&f), out, message, message_cap, subject, subject_cap) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_details_are_a_bounded_ring_found_by_number() {
        let mut d = EventDetails::default();
        let first = d.push(Failure::new(BTCORE_IO, "first"));
        assert_eq!(first, 1);
        for i in 0..MAX_EVENT_DETAILS {
            d.push(Failure::new(BTCORE_IO, i));
        }
        assert_eq!(d.ring.len(), MAX_EVENT_DETAILS);
        assert!(d.get(first).is_none(), "the oldest went");
        assert_eq!(d.get(first + 1).map(|f| f.message.as_str()), Some("0"));
        assert!(d.get(0).is_none());
    }

    #[test]
    fn texts_are_cut_to_the_buffer_and_nul_terminated() {
        let mut buf = [b'x' as c_char; 4];
        // SAFETY: `buf` holds 4 bytes.
        unsafe { copy_text(b"hello", buf.as_mut_ptr(), 4) }.expect("copy");
        assert_eq!(buf.map(|c| c as u8), *b"hel\0");
        // SAFETY: `buf` holds 4 bytes.
        unsafe { copy_text(b"a", buf.as_mut_ptr(), 4) }.expect("copy");
        assert_eq!(
            buf[..2].iter().map(|&c| c as u8).collect::<Vec<_>>(),
            b"a\0"
        );
        // SAFETY: a capacity of 0 writes nothing.
        unsafe { copy_text(b"a", std::ptr::null_mut(), 0) }.expect("nothing");
    }
}
