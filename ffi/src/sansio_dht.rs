//! A sans-IO DHT node (BEP 5) for C: the core's [`Dht`] state machine behind a handle.
//! The host owns the UDP socket and the clock; the node decides every query, answer,
//! routing-table change and rate limit.
//!
//! ```text
//! datagram in        -> btcore_dht_recv(h, &from, data, len, now)
//! timer due          -> btcore_dht_handle_timeout(h, now)   (btcore_dht_next_timeout)
//! then, until empty  -> btcore_dht_poll_transmit(h, now, buf, cap, &len, &to): send it
//!                       btcore_dht_poll_event(h, &ev, peers, cap): lookup results
//! ```
//!
//! A sans-IO session with `settings.dht` asks for lookups with
//! `BTCORE_ACTION_DHT_LOOKUP`: start one with `btcore_dht_lookup` (announcing `port`
//! when the action's `dht_announce` is set), give the peers of its
//! `BTCORE_DHT_EVENT_PEERS` events to `btcore_sansio_add_peer`, and on its
//! `BTCORE_DHT_EVENT_DONE` answer `btcore_sansio_dht_done` (`BTCORE_DHT_REACHED` when
//! `nodes` is not 0).
//!
//! Every cap is the core's ([`DhtConfig`]): lookups at once (32; 8 in the low-memory
//! profile), queries in flight (256; 64), queued datagrams (512; 128), queued events
//! (1,024; 256), per-source query rate, reply bytes, announce storage.
use crate::*;
use btcore_core::dht::{Dht, DhtConfig, DhtEvent};
use btcore_core::ids::InfoHash;
use btcore_core::time::Instant;
use std::mem::MaybeUninit;
use std::sync::Mutex;

/// An opaque DHT node. Made by `btcore_dht_new`, freed by `btcore_dht_free`. Every call
/// may come from any thread (calls on one handle are serialized on its lock; none does
/// I/O); never free it while another call on it runs.
#[derive(Debug)]
pub struct btcore_dht {
    _private: [u8; 0],
}

/// Settings of a DHT node. Fill it with `btcore_dht_settings_default()` first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct btcore_dht_settings {
    /// Our node id: 20 random bytes (keep it across restarts).
    pub node_id: [u8; 20],
    /// The key of the write tokens we hand out: 20 secret random bytes, never sent.
    pub token_key: [u8; 20],
    /// Seed for the node's random choices (transaction ids, ...).
    pub random_seed: u64,
    /// 1: the low-memory profile (fewer lookups, queries in flight, queued datagrams
    /// and events; a smaller peer store).
    pub low_memory: u8,
}

/// `btcore_dht_event.kind`: peers for a lookup (may come several times per lookup).
pub const BTCORE_DHT_EVENT_PEERS: u32 = 1;
/// `btcore_dht_event.kind`: a lookup is over.
pub const BTCORE_DHT_EVENT_DONE: u32 = 2;

/// One result of the node, from `btcore_dht_poll_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct btcore_dht_event {
    /// `BTCORE_DHT_EVENT_PEERS` or `BTCORE_DHT_EVENT_DONE`.
    pub kind: u32,
    /// The lookup (as `btcore_dht_lookup` gave it).
    pub lookup: u64,
    /// The torrent (`PEERS`; `DONE` of a torrent lookup).
    pub info_hash: [u8; 20],
    /// Peers written to the caller's buffer (`PEERS`).
    pub num_peers: u32,
    /// Peers in the answer (more than `num_peers` when the buffer was too small: the
    /// rest are dropped).
    pub total_peers: u32,
    /// `DONE`: the closest nodes that answered (0: the lookup reached no node).
    pub nodes: u32,
    /// `DONE`: `announce_peer` queries sent.
    pub announced: u32,
}

/// cbindgen:ignore
struct DhtBox {
    inner: Mutex<Dht>,
}

/// The locked node behind a handle, once the live-handle set knows it.
///
/// # Safety
/// `p` is NULL, not a live handle (refused without a read), or a live DHT handle that
/// no `btcore_dht_free` frees while the guard is held.
unsafe fn node(p: *const btcore_dht) -> Result<std::sync::MutexGuard<'static, Dht>, btcore_result> {
    if p.is_null() {
        return Err(BTCORE_NULL_PARAMETER);
    }
    if !is_live_handle(p.cast(), HandleKind::Dht) {
        return Err(BTCORE_WRONG_HANDLE);
    }
    // SAFETY: a live DHT handle is a `DhtBox` made by `Box::into_raw` in `btcore_dht_new`
    // and not freed yet (the caller makes no call that races with its free).
    let b = unsafe { &*(p as *const DhtBox) };
    b.inner.lock().map_err(|_| BTCORE_PANIC)
}

/// Fills `out` with the defaults: zero id and key (set them from your random source),
/// the desktop profile. Thread-safe.
///
/// # Safety
///
/// `out` is NULL or valid for writing one `btcore_dht_settings`.
#[no_mangle]
pub unsafe extern "C" fn btcore_dht_settings_default(
    out: *mut btcore_dht_settings,
) -> btcore_result {
    guard(|| {
        let out = non_null(out)?;
        // SAFETY: `out` is non-NULL (checked above) and valid for one write, as this
        // function's contract requires.
        unsafe {
            out.write(btcore_dht_settings {
                node_id: [0; 20],
                token_key: [0; 20],
                random_seed: 0,
                low_memory: 0,
            })
        };
        Ok(())
    })
}

/// Creates a DHT node into `*out` and starts its bootstrap from the `n` addresses at
/// `bootstrap` (NULL/0: none; nodes that contact it fill its table then). Free it with
/// `btcore_dht_free`. An all-zero `node_id` or `token_key` is
/// `BTCORE_INVALID_PARAMETER`: both must come from a random source. Thread-safe.
///
/// # Safety
///
/// - `settings` is NULL or valid for reading one `btcore_dht_settings`.
/// - `bootstrap` is valid for reads of `n` `btcore_addr`s (it may be NULL when `n` is 0).
/// - `out` is NULL or valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn btcore_dht_new(
    settings: *const btcore_dht_settings,
    bootstrap: *const btcore_addr,
    n: usize,
    now_ms: u64,
    out: *mut *mut btcore_dht,
) -> btcore_result {
    guard(|| {
        let out = non_null(out)?;
        if settings.is_null() {
            return Err(BTCORE_NULL_PARAMETER);
        }
        // SAFETY: `settings` is non-NULL (checked above) and valid for one read.
        let s = unsafe { *settings };
        if s.node_id == [0; 20] || s.token_key == [0; 20] {
            return Err(BTCORE_INVALID_PARAMETER);
        }
        if n > 1024 {
            return Err(BTCORE_INVALID_PARAMETER);
        }
        let seeds = if n == 0 {
            &[][..]
        } else if bootstrap.is_null() {
            return Err(BTCORE_NULL_PARAMETER);
        } else {
            // SAFETY: `bootstrap` is non-NULL (checked above) and valid for reads of
            // `n` (at most 1024) addresses, as this function's contract requires.
            unsafe { std::slice::from_raw_parts(bootstrap, n) }
        };
        let mut cfg = if s.low_memory != 0 {
            DhtConfig::low_memory(s.node_id, s.token_key)
        } else {
            DhtConfig::new(s.node_id, s.token_key)
        };
        cfg.bootstrap = seeds
            .iter()
            .map(|a| a.to_socket().ok_or(BTCORE_INVALID_PARAMETER))
            .collect::<Result<_, _>>()?;
        let now = Instant::from_millis(now_ms);
        let mut dht = Dht::new(cfg, now, s.random_seed);
        if n != 0 {
            let _ = dht.bootstrap(now);
        }
        let p = Box::into_raw(Box::new(DhtBox {
            inner: Mutex::new(dht),
        })) as *mut btcore_dht;
        register_handle(p.cast_const().cast(), HandleKind::Dht);
        // SAFETY: `out` is non-NULL (checked above) and valid for one write.
        unsafe { out.write(p) };
        Ok(())
    })
}

/// Frees a DHT node. NULL, or a handle already freed, is a no-op. No other call on this
/// handle may run meanwhile.
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_dht_new`; a pointer the library did not make, or
/// one already freed, is refused by a look-up in the set of live handles without being
/// read.
#[no_mangle]
pub unsafe extern "C" fn btcore_dht_free(h: *mut btcore_dht) {
    let _ = guard(|| {
        if h.is_null() {
            return Ok(());
        }
        if !unregister_handle(h.cast_const().cast(), HandleKind::Dht) {
            return Err(BTCORE_WRONG_HANDLE);
        }
        // SAFETY: made by `Box::into_raw` in `btcore_dht_new` and live until the line
        // above, which only one free can pass.
        drop(unsafe { Box::from_raw(h as *mut DhtBox) });
        Ok(())
    });
}

/// A datagram of `len` bytes from `*from` arrived on the DHT socket. Malformed,
/// unsolicited or abusive datagrams are dropped (that is not an error).
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_dht_new` that no `btcore_dht_free` frees during
///   the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
/// - `from` is NULL or valid for reading one `btcore_addr`.
/// - `data` is valid for reads of `len` bytes (it may be NULL when `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn btcore_dht_recv(
    h: *mut btcore_dht,
    from: *const btcore_addr,
    data: *const u8,
    len: usize,
    now_ms: u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: as this function's contract requires.
        let mut d = unsafe { node(h) }?;
        if from.is_null() {
            return Err(BTCORE_NULL_PARAMETER);
        }
        // SAFETY: `from` is non-NULL (checked above) and valid for one read.
        let from = unsafe { *from }
            .to_socket()
            .ok_or(BTCORE_INVALID_PARAMETER)?;
        // SAFETY: `data` is valid for reads of `len` bytes or `len` is 0.
        let data = unsafe { bytes(data, len) }?;
        d.handle_datagram(Instant::from_millis(now_ms), from, data);
        Ok(())
    })
}

/// Copies the next datagram to send into `buf` (1,500 bytes always suffice), its length
/// to `*out_len` and its destination to `*out_to`; `*out_len` 0: nothing to send. A
/// datagram larger than `cap` is dropped.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_dht_new` that no `btcore_dht_free` frees during
///   the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
/// - `buf` is valid for writes of `cap` bytes (it may be NULL when `cap` is 0).
/// - `out_len` and `out_to` are NULL or valid for one write each.
#[no_mangle]
pub unsafe extern "C" fn btcore_dht_poll_transmit(
    h: *mut btcore_dht,
    now_ms: u64,
    buf: *mut u8,
    cap: usize,
    out_len: *mut usize,
    out_to: *mut btcore_addr,
) -> btcore_result {
    guard(|| {
        // SAFETY: as this function's contract requires.
        let mut d = unsafe { node(h) }?;
        let out_len = non_null(out_len)?;
        let out_to = non_null(out_to)?;
        // SAFETY: `buf` is valid for writes of `cap` bytes or `cap` is 0.
        let dst = unsafe { out_slice(buf, cap) }?;
        let (to, n) = d
            .poll_transmit(Instant::from_millis(now_ms), dst)
            .map_or((btcore_addr::default(), 0), |(to, n)| {
                (btcore_addr::from_socket(to), n)
            });
        // SAFETY: both are non-NULL (checked above) and valid for one write.
        unsafe {
            out_len.write(n);
            out_to.write(to);
        }
        Ok(())
    })
}

/// Writes when `btcore_dht_handle_timeout` is next due to `*out_ms` (`UINT64_MAX`:
/// nothing scheduled).
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_dht_new` that no `btcore_dht_free` frees during
///   the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
/// - `out_ms` is NULL or valid for writing one `u64`.
#[no_mangle]
pub unsafe extern "C" fn btcore_dht_next_timeout(
    h: *const btcore_dht,
    out_ms: *mut u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: as this function's contract requires.
        let d = unsafe { node(h) }?;
        let out_ms = non_null(out_ms)?;
        let t = d.poll_timeout().map_or(u64::MAX, |t| t.as_millis());
        // SAFETY: non-NULL (checked above) and valid for one write.
        unsafe { out_ms.write(t) };
        Ok(())
    })
}

/// Runs the node's timers (query timeouts, lookups, table maintenance, bootstrap
/// retries); early is harmless.
///
/// # Safety
///
/// `h` is NULL or a handle from `btcore_dht_new` that no `btcore_dht_free` frees during the
/// call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
#[no_mangle]
pub unsafe extern "C" fn btcore_dht_handle_timeout(
    h: *mut btcore_dht,
    now_ms: u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: as this function's contract requires.
        let mut d = unsafe { node(h) }?;
        d.handle_timeout(Instant::from_millis(now_ms));
        Ok(())
    })
}

/// Starts a lookup of the peers of `info_hash` (20 bytes) and writes its id to
/// `*out_lookup`; with a `port` other than 0, announces that port for it to the closest
/// nodes too. Results come as events. `BTCORE_WRONG_STATE` when the most lookups run
/// (32; 8 in the low-memory profile): answer the session's lookup as failed.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_dht_new` that no `btcore_dht_free` frees during
///   the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
/// - `info_hash` is NULL or valid for reading 20 bytes.
/// - `out_lookup` is NULL or valid for writing one `u64`.
#[no_mangle]
pub unsafe extern "C" fn btcore_dht_lookup(
    h: *mut btcore_dht,
    info_hash: *const u8,
    port: u16,
    now_ms: u64,
    out_lookup: *mut u64,
) -> btcore_result {
    guard(|| {
        // SAFETY: as this function's contract requires.
        let mut d = unsafe { node(h) }?;
        let out_lookup = non_null(out_lookup)?;
        if info_hash.is_null() {
            return Err(BTCORE_NULL_PARAMETER);
        }
        // SAFETY: non-NULL (checked above) and valid for reading 20 bytes.
        let ih = InfoHash(unsafe { *(info_hash as *const [u8; 20]) });
        let now = Instant::from_millis(now_ms);
        let id = if port == 0 {
            d.get_peers(now, ih)
        } else {
            d.announce(now, ih, port, false)
        }
        .ok_or(BTCORE_WRONG_STATE)?;
        // SAFETY: non-NULL (checked above) and valid for one write.
        unsafe { out_lookup.write(id.0) };
        Ok(())
    })
}

/// Takes the next event of the node into `*out` (its peers into `peers`, `cap` of
/// them: 200 always suffice) and writes 1 to `*out_some`, or 0 when there is none.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_dht_new` that no `btcore_dht_free` frees during
///   the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
/// - `out` is NULL or valid for writing one `btcore_dht_event`.
/// - `peers` is valid for writes of `cap` `btcore_addr`s (it may be NULL when `cap` is 0).
/// - `out_some` is NULL or valid for writing one `u8`.
#[no_mangle]
pub unsafe extern "C" fn btcore_dht_poll_event(
    h: *mut btcore_dht,
    out: *mut btcore_dht_event,
    peers: *mut btcore_addr,
    cap: usize,
    out_some: *mut u8,
) -> btcore_result {
    guard(|| {
        // SAFETY: as this function's contract requires.
        let mut d = unsafe { node(h) }?;
        let out = non_null(out)?;
        let out_some = non_null(out_some)?;
        // SAFETY: `peers` is valid for writes of `cap` elements or `cap` is 0.
        let dst: &mut [MaybeUninit<btcore_addr>] = unsafe { out_uninit(peers, cap) }?;
        let Some(ev) = d.poll_event() else {
            // SAFETY: non-NULL (checked above) and valid for one write.
            unsafe { out_some.write(0) };
            return Ok(());
        };
        let mut e = btcore_dht_event::default();
        match ev {
            DhtEvent::Peers {
                lookup,
                info_hash,
                peers,
            } => {
                e.kind = BTCORE_DHT_EVENT_PEERS;
                e.lookup = lookup.0;
                e.info_hash = info_hash.0;
                e.total_peers = u32::try_from(peers.len()).unwrap_or(u32::MAX);
                for (slot, p) in dst.iter_mut().zip(&peers) {
                    slot.write(btcore_addr::from_socket(*p));
                    e.num_peers += 1;
                }
            }
            DhtEvent::LookupDone {
                lookup,
                target,
                closest,
                announced,
                ..
            } => {
                e.kind = BTCORE_DHT_EVENT_DONE;
                e.lookup = lookup.0;
                e.info_hash = target.0;
                e.nodes = u32::try_from(closest.len()).unwrap_or(u32::MAX);
                e.announced = u32::try_from(announced).unwrap_or(u32::MAX);
            }
            _ => {}
        }
        // SAFETY: both non-NULL (checked above) and valid for one write.
        unsafe {
            out.write(e);
            out_some.write(1);
        }
        Ok(())
    })
}

/// Writes the number of nodes in the routing table to `*out_nodes`.
///
/// # Safety
///
/// - `h` is NULL or a handle from `btcore_dht_new` that no `btcore_dht_free` frees during
///   the call; any other pointer is refused (`BTCORE_WRONG_HANDLE`) before a read.
/// - `out_nodes` is NULL or valid for writing one `u32`.
#[no_mangle]
pub unsafe extern "C" fn btcore_dht_node_count(
    h: *const btcore_dht,
    now_ms: u64,
    out_nodes: *mut u32,
) -> btcore_result {
    guard(|| {
        // SAFETY: as this function's contract requires.
        let d = unsafe { node(h) }?;
        let out = non_null(out_nodes)?;
        let n = d.stats(Instant::from_millis(now_ms)).nodes;
        // SAFETY: non-NULL (checked above) and valid for one write.
        unsafe { out.write(u32::try_from(n).unwrap_or(u32::MAX)) };
        Ok(())
    })
}
