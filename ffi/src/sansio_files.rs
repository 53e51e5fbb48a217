//! The file list of a sans-IO torrent, so that a host maps the torrent offsets of its
//! `READ`, `WRITE` and `VERIFY` actions to files without a `.torrent` parser of its
//! own.
//!
//! The paths are the ones the std host creates: relative, `/`-separated, each element
//! sanitized (no `..`, no absolute path, no reserved or invalid names) and unique
//! within the torrent, the torrent's name first for a multi-file torrent. Pad files
//! (BEP 47) are listed with `pad` set and an empty path: their bytes are zeros that
//! are never written, and reads of them give zeros.
use crate::sansio::{btcore_sansio, handle};
use crate::*;
use btcore_core::metainfo::FileSpec;
use btcore_core::session::TorrentId;

/// One file of a torrent (`btcore_sansio_file`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct btcore_sansio_file_info {
    /// Byte offset of the file in the torrent's data (all files end to end).
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// Length of the path in bytes, without its NUL (0 for a pad file).
    pub path_len: u32,
    /// 1 for a pad file (BEP 47): never written, read as zeros.
    pub pad: u8,
    /// 1 for an executable file (BEP 47 attribute `x`).
    pub executable: u8,
}

/// The files of torrent `id` (a magnet link's: once its metadata arrived).
fn files(s: &crate::sansio::Inner, id: u32) -> Result<&[FileSpec], btcore_result> {
    let t = s.info.get(&TorrentId(id)).ok_or(BTCORE_NOT_FOUND)?;
    if t.files.is_empty() {
        return Err(BTCORE_NOT_FOUND);
    }
    Ok(&t.files)
}

/// Writes the number of files of torrent `id` to `*out_count`. `BTCORE_NOT_FOUND` for
/// an unknown id, and for a magnet link until `BTCORE_EVENT_METADATA_RECEIVED`.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `out_count` is NULL or valid for writing one `u32`.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_file_count(
    h: *const btcore_sansio,
    id: u32,
    out_count: *mut u32,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let s = unsafe { handle(h) }?;
        let out_count = non_null(out_count)?;
        let n = files(&s, id)?.len();
        // SAFETY: `out_count` is non-NULL (checked above) and valid for one write, as
        // this function's contract requires.
        unsafe { out_count.write(u32::try_from(n).unwrap_or(u32::MAX)) };
        Ok(())
    })
}

/// Fills `*out` with file `index` of torrent `id` and copies its path, NUL-terminated,
/// into `path` (`path_cap` bytes; NULL/0 to skip the path). A `path_cap` of at most
/// `path_len` is `BTCORE_BUFFER_TOO_SMALL`, with `*out` written all the same so that
/// `out->path_len + 1` tells the size needed. `BTCORE_NOT_FOUND` for an unknown torrent
/// or an index past the last file.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `out` is NULL or valid for writing one `btcore_sansio_file_info`.
/// - `path` is valid for writes of `path_cap` bytes (it may be NULL when `path_cap` is 0).
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_file(
    h: *const btcore_sansio,
    id: u32,
    index: u32,
    out: *mut btcore_sansio_file_info,
    path: *mut c_char,
    path_cap: usize,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let s = unsafe { handle(h) }?;
        let out = non_null(out)?;
        // SAFETY: `path` is valid for writes of `path_cap` bytes or `path_cap` is 0, as
        // this function's contract requires.
        let dst = unsafe { out_slice(path.cast::<u8>(), path_cap) }?;
        let f = files(&s, id)?.get(index as usize).ok_or(BTCORE_NOT_FOUND)?;
        let p = f.path.as_bytes();
        let info = btcore_sansio_file_info {
            offset: f.offset,
            length: f.length,
            path_len: u32::try_from(p.len()).map_err(|_| BTCORE_INVALID_PARAMETER)?,
            pad: u8::from(f.attr.pad),
            executable: u8::from(f.attr.executable),
        };
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe { out.write(info) };
        if dst.is_empty() && path.is_null() {
            return Ok(());
        }
        if dst.len() <= p.len() {
            return Err(BTCORE_BUFFER_TOO_SMALL);
        }
        dst[..p.len()].copy_from_slice(p);
        dst[p.len()] = 0;
        Ok(())
    })
}

/// Maps byte `torrent_offset` of torrent `id` (as the `torrent_offset` of a `READ`,
/// `WRITE` or `VERIFY` action) to a file: writes its index to `*out_index`, the offset
/// inside it to `*out_file_offset` and the bytes of the file from there on to
/// `*out_len`, so a block that crosses into the next file is split by calling again at
/// `torrent_offset + *out_len`. Empty files hold no offset and are never the answer.
/// `BTCORE_NOT_FOUND` for an unknown torrent, `BTCORE_INVALID_PARAMETER` for an offset
/// at or past the end of the torrent.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_sansio_new` that no `btcore_sansio_free` frees
///   during the call. A freed handle, one of another type or any other pointer is a checked
///   error (`BTCORE_WRONG_HANDLE`): the library looks it up in its set of live handles before
///   reading anything behind it.
/// - `out_index`, `out_file_offset` and `out_len` are each NULL or valid for writing one
///   value of their type.
#[no_mangle]
pub unsafe extern "C" fn btcore_sansio_file_at(
    h: *const btcore_sansio,
    id: u32,
    torrent_offset: u64,
    out_index: *mut u32,
    out_file_offset: *mut u64,
    out_len: *mut u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: `h` is NULL or a handle that no free races with, as this function's
        // contract requires; anything else is refused before a read.
        let s = unsafe { handle(h) }?;
        let out_index = non_null(out_index)?;
        let out_file_offset = non_null(out_file_offset)?;
        let out_len = non_null(out_len)?;
        let files = files(&s, id)?;
        let (index, at, len) = file_at(files, torrent_offset).ok_or(BTCORE_INVALID_PARAMETER)?;
        // SAFETY: the three pointers are non-NULL (checked above) and each valid for one
        // write, as this function's contract requires.
        unsafe {
            out_index.write(index);
            out_file_offset.write(at);
            out_len.write(len);
        }
        Ok(())
    })
}

/// The file holding byte `offset`: its index, the offset in it, the bytes left in it.
fn file_at(files: &[FileSpec], offset: u64) -> Option<(u32, u64, u64)> {
    // The last file starting at or before `offset` (files are in offset order; among
    // empty files sharing an offset, the non-empty one after them is found).
    let i = files
        .partition_point(|f| f.offset <= offset)
        .checked_sub(1)?;
    let f = &files[i];
    let at = offset - f.offset;
    (at < f.length).then(|| (f.index, at, f.length - at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use btcore_core::metainfo::FileAttr;

    fn spec(index: u32, offset: u64, length: u64) -> FileSpec {
        FileSpec {
            index,
            path: format!("t/{index}"),
            offset,
            length,
            attr: FileAttr::default(),
            symlink_target: None,
        }
    }

    #[test]
    fn offsets_map_to_files_skipping_empty_ones() {
        let files = [
            spec(0, 0, 10),
            spec(1, 10, 0),
            spec(2, 10, 5),
            spec(3, 15, 1),
        ];
        assert_eq!(file_at(&files, 0), Some((0, 0, 10)));
        assert_eq!(file_at(&files, 9), Some((0, 9, 1)));
        assert_eq!(file_at(&files, 10), Some((2, 0, 5)));
        assert_eq!(file_at(&files, 14), Some((2, 4, 1)));
        assert_eq!(file_at(&files, 15), Some((3, 0, 1)));
        assert_eq!(file_at(&files, 16), None);
        assert_eq!(file_at(&[], 0), None);
    }
}
