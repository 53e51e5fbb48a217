//! The RPC methods, on the engine's thread: one request body in, one answer out.
//! Both envelopes are read: Transmission's own (`method`, `arguments`, `tag`;
//! `result` is `"success"` or the error) and JSON-RPC 2.0 (`jsonrpc`, `method`,
//! `params`, `id`; `result` or `error`), with the names of either era (see
//! [`super::names`]).

use super::names::{self, Place, Style};
use super::Daemon;
use base64::Engine as _;
use btcore_core::session::{TorrentId, TorrentState};
use serde_json::{json, Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most requests in one JSON-RPC batch.
const MAX_BATCH: usize = 64;
/// Largest answer (a `torrent-get` of everything about thousands of torrents fits).
const MAX_ANSWER: usize = 64 << 20;
/// Largest speed limit in kB/s (about 4 TB/s).
const MAX_KIB_LIMIT: u64 = u32::MAX as u64;
/// Most ids in one `ids` list.
const MAX_IDS: usize = 100_000;
/// A torrent is "recently active" (and a removed one listed) for this long.
pub const RECENT: Duration = Duration::from_secs(60);

/// The integer rpc-version (17: Transmission 4.0; 18 with the snake_case names).
pub const RPC_VERSION: u64 = 18;
pub const RPC_VERSION_SEMVER: &str = "6.0.0";
pub const RPC_VERSION_MINIMUM: u64 = 14;

/// A method's failure: the message Transmission would put in `result`.
type Failure = String;

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What to do with a request body: its answer, or first a download of the `.torrent`
/// at a URL (a `torrent-add` by URL, sent alone), after which the same body is answered
/// with [`Daemon::fetched`] holding the download.
pub enum Outcome {
    Answer(Vec<u8>),
    Fetch(String),
}

/// Answers one request body, unless it adds a torrent by a URL not downloaded yet.
pub fn call_or_fetch(d: &mut Daemon, body: &[u8]) -> Outcome {
    if let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) {
        let method = req.get("method").and_then(Value::as_str).unwrap_or("");
        let args = req.get("arguments").or_else(|| req.get("params"));
        if names::to_snake(method) == "torrent_add" {
            if let Some(url) = args
                .and_then(|a| a.get("filename"))
                .and_then(Value::as_str)
                .filter(|f| is_url(f) && !d.fetched.contains_key(*f))
            {
                return Outcome::Fetch(url.to_string());
            }
        }
    }
    Outcome::Answer(call(d, body))
}

fn is_url(f: &str) -> bool {
    f.starts_with("http://") || f.starts_with("https://")
}

/// Answers one request body.
pub fn call(d: &mut Daemon, body: &[u8]) -> Vec<u8> {
    let answer = match serde_json::from_slice::<Value>(body) {
        Err(e) => {
            // No envelope to tell which: Transmission's own, which every client reads.
            json!({"result": format!("invalid JSON: {e}"), "arguments": {}})
        }
        Ok(Value::Array(batch)) => {
            if batch.is_empty() || batch.len() > MAX_BATCH {
                rpc_error(Value::Null, -32600, "Invalid Request")
            } else {
                let answers: Vec<Value> = batch.into_iter().filter_map(|r| one(d, r)).collect();
                Value::Array(answers)
            }
        }
        Ok(v) => one(d, v).unwrap_or(Value::Null),
    };
    let out =
        serde_json::to_vec(&answer).unwrap_or_else(|_| b"{\"result\":\"internal error\"}".to_vec());
    if out.len() > MAX_ANSWER {
        return serde_json::to_vec(&json!({
            "result": format!("the answer would be larger than {MAX_ANSWER} bytes: ask for fewer torrents or fields"),
            "arguments": {},
        }))
        .unwrap_or_default();
    }
    out
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id})
}

/// One request; `None` for a JSON-RPC notification (no `id`).
fn one(d: &mut Daemon, req: Value) -> Option<Value> {
    let Value::Object(mut req) = req else {
        return Some(json!({"result": "the request is not a JSON object", "arguments": {}}));
    };
    let jsonrpc = req.get("jsonrpc").and_then(Value::as_str) == Some("2.0");
    let method = req
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let style = if jsonrpc || method.contains('_') {
        Style::Snake
    } else {
        Style::Legacy
    };
    let args = match req.remove(if jsonrpc { "params" } else { "arguments" }) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(names::snake_keys(&m)),
        Some(_) => Err("arguments must be an object".to_string()),
    };
    let result = args.and_then(|a| dispatch(d, &names::to_snake(&method), a, style));
    if jsonrpc {
        let id = req.get("id").cloned();
        let id_v = id.clone().unwrap_or(Value::Null);
        let out = match result {
            Ok(args) => json!({"jsonrpc": "2.0", "result": Value::Object(args), "id": id_v}),
            Err(msg) if msg == UNKNOWN_METHOD => rpc_error(id_v, -32601, "Method not found"),
            Err(msg) => json!({
                "jsonrpc": "2.0",
                "error": {"code": 1, "message": msg, "data": {"error_string": msg}},
                "id": id_v,
            }),
        };
        return id.map(|_| out);
    }
    let mut out = Map::new();
    match result {
        Ok(args) => {
            let args = match style {
                Style::Snake => Value::Object(args),
                Style::Legacy => {
                    let place = match method.as_str() {
                        "session-get" => Place::Session,
                        "session-stats" => Place::Stats,
                        _ => Place::Other,
                    };
                    names::to_legacy(Value::Object(args), place)
                }
            };
            out.insert("arguments".into(), args);
            out.insert("result".into(), "success".into());
        }
        Err(msg) => {
            out.insert("arguments".into(), json!({}));
            out.insert("result".into(), msg.into());
        }
    }
    if let Some(tag) = req.get("tag") {
        out.insert("tag".into(), tag.clone());
    }
    Some(Value::Object(out))
}

const UNKNOWN_METHOD: &str = "method name not recognized";

fn dispatch(
    d: &mut Daemon,
    method: &str,
    a: Map<String, Value>,
    style: Style,
) -> Result<Map<String, Value>, Failure> {
    match method {
        "session_get" => session_get(d, &a),
        "session_set" => session_set(d, &a),
        "session_stats" => Ok(session_stats(d)),
        "session_close" => {
            d.close_requested = true;
            Ok(Map::new())
        }
        "torrent_get" => torrent_get(d, &a, style),
        "torrent_add" => torrent_add(d, &a),
        "torrent_start" => each(d, &a, |d, id| {
            d.set_paused(id, false);
            Ok(())
        }),
        // Past the queue.
        "torrent_start_now" => each(d, &a, |d, id| {
            d.set_paused(id, false);
            d.client.resume_now(id);
            Ok(())
        }),
        "torrent_stop" => each(d, &a, |d, id| {
            d.set_paused(id, true);
            Ok(())
        }),
        "torrent_remove" => {
            let delete = a
                .get("delete_local_data")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let ids = select(d, &a)?;
            for id in ids {
                d.remove(id, delete);
            }
            Ok(Map::new())
        }
        "torrent_set" => torrent_set(d, &a),
        "free_space" => free_space(&a),
        "port_test" => Err(
            "port-test is not available: btcore does not ask a third party to probe its port"
                .into(),
        ),
        "blocklist_update" => Err("no blocklist is configured".into()),
        "queue_move_top" | "queue_move_up" | "queue_move_down" | "queue_move_bottom" => {
            let ids = select(d, &a)?;
            d.queue_move(&ids, method);
            Ok(Map::new())
        }
        "torrent_set_location" => set_location(d, &a),
        "torrent_rename_path" => rename_path(d, &a),
        "torrent_verify" => {
            for id in select(d, &a)? {
                // A torrent without metadata yet, or already checking: nothing to
                // do, as Transmission does.
                match d.verify(id) {
                    Ok(()) => {}
                    Err(e) if e.contains("metadata") || e.contains("busy") => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(Map::new())
        }
        "torrent_reannounce" => {
            // As Transmission: asked of every selected torrent; one that may not
            // announce yet (min interval) announces when it may, a paused one not.
            for id in select(d, &a)? {
                d.client.reannounce(id);
            }
            Ok(Map::new())
        }
        "group_get" => Ok(Map::from_iter([("group".to_string(), json!([]))])),
        "group_set" => Err("bandwidth groups are not supported by btcore".into()),
        _ => Err(UNKNOWN_METHOD.into()),
    }
}

/// Runs `f` on each selected torrent.
fn each(
    d: &mut Daemon,
    a: &Map<String, Value>,
    mut f: impl FnMut(&mut Daemon, TorrentId) -> Result<(), Failure>,
) -> Result<Map<String, Value>, Failure> {
    for id in select(d, a)? {
        f(d, id)?;
    }
    Ok(Map::new())
}

/// The torrents `ids` names: all when absent; a number, a hash, a list of both, or
/// `recently-active`. Unknown ids and hashes are skipped, as Transmission does.
fn select(d: &Daemon, a: &Map<String, Value>) -> Result<Vec<TorrentId>, Failure> {
    let all = || d.torrents.keys().copied().collect::<Vec<_>>();
    let Some(ids) = a.get("ids") else {
        return Ok(all());
    };
    // Hashes are looked up in a map made once per request, not one pass per hash.
    let by_hash: std::collections::HashMap<&str, TorrentId> = match ids {
        Value::Array(l) if l.iter().any(Value::is_string) => d
            .torrents
            .iter()
            .map(|(id, e)| (e.saved.hash.as_str(), *id))
            .collect(),
        _ => std::collections::HashMap::new(),
    };
    let one = |v: &Value| -> Option<TorrentId> {
        match v {
            Value::Number(n) => {
                let id = TorrentId(u32::try_from(n.as_u64()?).ok()?);
                d.torrents.contains_key(&id).then_some(id)
            }
            Value::String(s) if by_hash.is_empty() => d.by_hash(s),
            Value::String(s) => by_hash.get(s.to_ascii_lowercase().as_str()).copied(),
            _ => None,
        }
    };
    match ids {
        Value::String(s) if s == "recently-active" || s == "recently_active" => Ok(d
            .torrents
            .iter()
            .filter(|(_, e)| e.last_active.elapsed() < RECENT)
            .map(|(id, _)| *id)
            .collect()),
        Value::Array(list) => {
            if list.len() > MAX_IDS {
                return Err("too many ids".into());
            }
            let mut v: Vec<TorrentId> = list.iter().filter_map(one).collect();
            v.sort();
            v.dedup();
            Ok(v)
        }
        Value::Number(_) | Value::String(_) => Ok(one(ids).into_iter().collect()),
        Value::Null => Ok(all()),
        _ => Err("ids must be a number, a string or a list".into()),
    }
}

fn fields_of(a: &Map<String, Value>) -> Result<Vec<String>, Failure> {
    match a.get("fields") {
        Some(Value::Array(f)) => {
            if f.len() > 512 {
                return Err("too many fields".into());
            }
            // Each field once, in the order asked: a list of duplicates cannot
            // multiply the work or the answer.
            let mut out: Vec<String> = Vec::new();
            for name in f.iter().filter_map(Value::as_str).map(names::to_snake) {
                if !out.contains(&name) {
                    out.push(name);
                }
            }
            Ok(out)
        }
        None => Err("no fields were given".into()),
        Some(_) => Err("fields must be a list".into()),
    }
}

fn torrent_get(
    d: &mut Daemon,
    a: &Map<String, Value>,
    style: Style,
) -> Result<Map<String, Value>, Failure> {
    let fields = fields_of(a)?;
    let recently = matches!(a.get("ids"), Some(Value::String(s)) if s.starts_with("recently"));
    let ids = select(d, a)?;
    let table = a.get("format").and_then(Value::as_str) == Some("table");
    let views: std::collections::BTreeMap<TorrentId, _> =
        d.client.torrents().into_iter().map(|v| (v.id, v)).collect();
    let rows: Vec<Map<String, Value>> = ids
        .iter()
        .map(|id| d.torrent_fields(*id, &fields, &views))
        .collect();
    let mut out = Map::new();
    let torrents = if table {
        let mut t = vec![Value::Array(
            fields
                .iter()
                .map(|f| Value::String(names::field_name(style, f)))
                .collect(),
        )];
        for r in rows {
            t.push(Value::Array(
                fields
                    .iter()
                    .map(|f| r.get(f).cloned().unwrap_or(Value::Null))
                    .collect(),
            ));
        }
        // The first row names the fields as the client asked; the values are renamed
        // with the rest of the answer.
        Value::Array(t)
    } else {
        Value::Array(rows.into_iter().map(Value::Object).collect())
    };
    out.insert("torrents".into(), torrents);
    if recently {
        out.insert(
            "removed".into(),
            Value::Array(d.recently_removed().into_iter().map(Value::from).collect()),
        );
    }
    Ok(out)
}

fn torrent_add(d: &mut Daemon, a: &Map<String, Value>) -> Result<Map<String, Value>, Failure> {
    let paused = a.get("paused").and_then(Value::as_bool).unwrap_or(false);
    let dir = match a.get("download_dir").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => {
            if !std::path::Path::new(s).is_absolute() {
                return Err("download-dir must be an absolute path".into());
            }
            Some(std::path::PathBuf::from(s))
        }
        _ => None,
    };
    let labels = a
        .get("labels")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .take(64)
                .map(|s| s.chars().take(256).collect())
                .collect::<Vec<String>>()
        })
        .unwrap_or_default();
    let added =
        if let Some(m) = a.get("metainfo").and_then(Value::as_str) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(m.trim().replace(['\n', '\r'], ""))
                .map_err(|e| format!("invalid or corrupt torrent file (bad base64: {e})"))?;
            d.add_torrent_bytes(&bytes, dir, paused, labels)?
        } else if let Some(f) = a.get("filename").and_then(Value::as_str) {
            if f.starts_with("magnet:") {
                d.add_magnet(f, dir, paused, labels)?
            } else if is_url(f) {
                match d.fetched.remove(f) {
                    Some(Ok(bytes)) => d.add_torrent_bytes(&bytes, dir, paused, labels)?,
                    Some(Err(e)) => return Err(format!("could not download {f}: {e}")),
                    // Only in a batch: the download happens for a request of its own.
                    None => return Err(
                        "a torrent-add by URL must be a request of its own, not part of a batch"
                            .into(),
                    ),
                }
            } else {
                // A regular file only: a FIFO or a device would block the engine.
                let path = std::path::Path::new(f);
                match std::fs::metadata(path) {
                    Ok(m) if m.is_file() => {}
                    _ => return Err(format!("{f}: no such torrent file")),
                }
                let bytes = crate::read_torrent_file(path).map_err(|e| format!("{f}: {e}"))?;
                d.add_torrent_bytes(&bytes, dir, paused, labels)?
            }
        } else {
            return Err("no filename or metainfo specified".into());
        };
    let (id, dup) = added;
    if !dup {
        let count = d.client.files(id).map_or(0, |f| f.len());
        let mut prio = Vec::new();
        let changed = match file_args(a, &mut prio, count.max(1)) {
            _ if count == 0 => false,
            Ok(c) => c,
            Err(e) => {
                // Nothing half-done: the torrent the request added goes again.
                d.remove(id, false);
                return Err(e);
            }
        };
        if changed {
            if let Some(e) = d.torrents.get_mut(&id) {
                e.saved.priorities = prio;
            }
            d.apply_torrent(id);
        }
        if let Some(v) = a.get("sequential_download").and_then(Value::as_bool) {
            if let Some(e) = d.torrents.get_mut(&id) {
                e.saved.sequential = v;
            }
            d.apply_torrent(id);
        }
    }
    let e = &d.torrents[&id];
    let obj = json!({
        "id": id.0,
        "name": d.name_of(id),
        "hash_string": e.saved.hash,
    });
    let key = if dup {
        "torrent_duplicate"
    } else {
        "torrent_added"
    };
    Ok(Map::from_iter([(key.to_string(), obj)]))
}

/// File indices of a `files-wanted`-style list (`[]`: all files).
fn file_indices(v: &Value, count: usize) -> Result<Vec<usize>, Failure> {
    let list = v.as_array().ok_or("file indices must be a list")?;
    if list.is_empty() {
        return Ok((0..count).collect());
    }
    list.iter()
        .map(|x| {
            x.as_u64()
                .map(|i| i as usize)
                .filter(|i| *i < count)
                .ok_or_else(|| "file index out of range".to_string())
        })
        .collect()
}

/// Applies the file arguments of `torrent-add`/`torrent-set` to `prio` (the engine's
/// levels: 0 skip, 1 low, 4 normal, 7 high).
fn file_args(a: &Map<String, Value>, prio: &mut Vec<u8>, count: usize) -> Result<bool, Failure> {
    if prio.len() != count {
        *prio = vec![4; count];
    }
    let mut changed = false;
    // Priorities first, then wanted: an unwanted file stays unwanted.
    for (key, level) in [
        ("priority_low", 1u8),
        ("priority_normal", 4),
        ("priority_high", 7),
    ] {
        if let Some(v) = a.get(key) {
            for i in file_indices(v, count)? {
                if prio[i] != 0 {
                    prio[i] = level;
                }
            }
            changed = true;
        }
    }
    if let Some(v) = a.get("files_wanted") {
        for i in file_indices(v, count)? {
            if prio[i] == 0 {
                prio[i] = 4;
            }
        }
        changed = true;
    }
    if let Some(v) = a.get("files_unwanted") {
        for i in file_indices(v, count)? {
            prio[i] = 0;
        }
        changed = true;
    }
    Ok(changed)
}

fn kib_limit(
    a: &Map<String, Value>,
    limit: &str,
    on: &str,
    old: Option<u64>,
) -> Result<Option<u64>, Failure> {
    let value = match a.get(limit) {
        Some(v) => Some(v.as_u64().filter(|k| *k <= MAX_KIB_LIMIT).ok_or_else(|| {
            format!(
                "{} must be a number up to {MAX_KIB_LIMIT}",
                limit.replace('_', "-")
            )
        })?),
        None => None,
    };
    let enabled = match a.get(on) {
        Some(v) => Some(
            v.as_bool()
                .ok_or_else(|| format!("{on} must be a boolean"))?,
        ),
        None => None,
    };
    Ok(match (enabled, value, old) {
        (Some(false), _, _) => None,
        (Some(true), Some(v), _) => Some(v),
        (Some(true), None, old) => Some(old.unwrap_or(100)),
        (None, Some(v), Some(_)) => Some(v),
        (None, Some(_), None) | (None, None, _) => old,
    })
}

fn torrent_set(d: &mut Daemon, a: &Map<String, Value>) -> Result<Map<String, Value>, Failure> {
    let ids = select(d, a)?;
    for (k, _) in a {
        match k.as_str() {
            "ids"
            | "labels"
            | "queue_position"
            | "files_wanted"
            | "files_unwanted"
            | "priority_high"
            | "priority_normal"
            | "priority_low"
            | "sequential_download"
            | "download_limit"
            | "download_limited"
            | "upload_limit"
            | "upload_limited"
            | "seed_ratio_limit"
            | "seed_ratio_mode"
            | "location"
            | "honors_session_limits"
            | "bandwidth_priority"
            | "seed_idle_limit"
            | "seed_idle_mode"
            | "peer_limit"
            | "tracker_add"
            | "tracker_remove"
            | "tracker_replace"
            | "tracker_list" => {}
            other => {
                return Err(format!(
                    "torrent-set: {} is not supported by this version of btcore",
                    other.replace('_', "-")
                ))
            }
        }
    }
    let labels: Option<Vec<String>> = match a.get("labels") {
        Some(v) => Some(
            v.as_array()
                .ok_or("labels must be a list")?
                .iter()
                .filter_map(Value::as_str)
                .take(64)
                .map(|s| s.chars().take(256).collect())
                .collect(),
        ),
        None => None,
    };
    for id in &ids {
        let id = *id;
        let count = d.client.files(id).map_or(0, |f| f.len());
        let Some(e) = d.torrents.get_mut(&id) else {
            continue;
        };
        let mut saved = e.saved.clone();
        if let Some(l) = &labels {
            saved.labels = l.clone();
        }
        if count > 0 {
            file_args(a, &mut saved.priorities, count)?;
        } else if [
            "files_wanted",
            "files_unwanted",
            "priority_high",
            "priority_normal",
            "priority_low",
        ]
        .iter()
        .any(|k| a.contains_key(*k))
        {
            return Err(
                "the torrent's files are not known yet (its metadata has not arrived)".into(),
            );
        }
        if let Some(v) = a.get("sequential_download") {
            saved.sequential = v.as_bool().ok_or("sequential-download must be a boolean")?;
        }
        saved.download_limit = kib_limit(
            a,
            "download_limit",
            "download_limited",
            saved.download_limit,
        )?;
        saved.upload_limit = kib_limit(a, "upload_limit", "upload_limited", saved.upload_limit)?;
        if let Some(v) = a.get("seed_ratio_limit") {
            saved.ratio_limit = v
                .as_f64()
                .filter(|r| *r >= 0.0)
                .ok_or("seed-ratio-limit must be a number")?;
        }
        if let Some(v) = a.get("seed_ratio_mode") {
            saved.ratio_mode = v
                .as_u64()
                .filter(|m| *m <= 2)
                .ok_or("seed-ratio-mode must be 0, 1 or 2")? as u8;
        }
        if let Some(v) = a.get("seed_idle_limit") {
            saved.idle_limit =
                v.as_u64()
                    .filter(|m| *m <= u64::from(u32::MAX))
                    .ok_or("seed-idle-limit must be a number of minutes")? as u32;
        }
        if let Some(v) = a.get("seed_idle_mode") {
            saved.idle_mode = v
                .as_u64()
                .filter(|m| *m <= 2)
                .ok_or("seed-idle-mode must be 0, 1 or 2")? as u8;
        }
        if let Some(v) = a.get("peer_limit") {
            let n = v
                .as_u64()
                .filter(|n| *n <= 100_000)
                .ok_or("peer-limit must be a number up to 100000")?;
            saved.peer_limit = (n > 0).then_some(n as u32);
        }
        e.saved = saved;
        e.last_active = std::time::Instant::now();
        d.dirty = true;
        d.apply_torrent(id);
        if a.contains_key("peer_limit") {
            let limit = d.torrents.get(&id).and_then(|e| e.saved.peer_limit);
            d.client.set_peer_limit(id, limit.map(|n| n as usize));
        }
        if let Some(pos) = a.get("queue_position") {
            let pos = pos.as_u64().ok_or("queue-position must be a number")?;
            d.set_queue_position(id, pos);
        }
        if let Some(tiers) = tracker_edit(d, id, a)? {
            d.set_trackers(id, tiers)?;
        }
        if let Some(loc) = a.get("location").and_then(Value::as_str) {
            d.move_to(id, loc)?;
        }
    }
    Ok(Map::new())
}

/// The tracker list `torrent-set` asks for, if it asks for a change: `tracker_list`
/// (rpc-version 17+: URLs one per line, a blank line between tiers), or the older
/// `tracker_add` (URLs, each a tier of its own after the others), `tracker_remove`
/// (tracker ids as `trackers` numbers them) and `tracker_replace` (id, URL pairs).
fn tracker_edit(
    d: &Daemon,
    id: TorrentId,
    a: &Map<String, Value>,
) -> Result<Option<Vec<Vec<String>>>, Failure> {
    if let Some(v) = a.get("tracker_list") {
        let text = v.as_str().ok_or("tracker-list must be a string")?;
        let mut tiers: Vec<Vec<String>> = vec![Vec::new()];
        for line in text.lines().map(str::trim) {
            match (line.is_empty(), tiers.last_mut()) {
                (true, Some(t)) if !t.is_empty() => tiers.push(Vec::new()),
                (false, Some(t)) => t.push(line.to_string()),
                _ => {}
            }
        }
        tiers.retain(|t| !t.is_empty());
        return Ok(Some(tiers));
    }
    let (add, remove, replace) = (
        a.get("tracker_add"),
        a.get("tracker_remove"),
        a.get("tracker_replace"),
    );
    if add.is_none() && remove.is_none() && replace.is_none() {
        return Ok(None);
    }
    // (id as `trackers` lists it, tier, URL)
    let mut list: Vec<(Option<usize>, u32, String)> = d
        .client
        .tracker_status(id)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, t)| (Some(i), t.tier, t.url))
        .collect();
    if let Some(r) = replace {
        let r = r.as_array().ok_or("tracker-replace must be a list")?;
        for pair in r.chunks(2) {
            let (Some(i), Some(url)) = (
                pair.first().and_then(Value::as_u64),
                pair.get(1).and_then(Value::as_str),
            ) else {
                return Err("tracker-replace must list tracker ids and URLs in pairs".into());
            };
            let t = list
                .iter_mut()
                .find(|t| t.0 == Some(i as usize))
                .ok_or_else(|| format!("no tracker {i}"))?;
            t.2 = url.to_string();
        }
    }
    if let Some(r) = remove {
        let ids: Vec<u64> = r
            .as_array()
            .ok_or("tracker-remove must be a list")?
            .iter()
            .map(|v| v.as_u64().ok_or("tracker-remove must list tracker ids"))
            .collect::<Result<_, _>>()?;
        list.retain(|t| !t.0.is_some_and(|i| ids.contains(&(i as u64))));
    }
    if let Some(r) = add {
        let urls = r.as_array().ok_or("tracker-add must be a list")?;
        let first = list.iter().map(|t| t.1 + 1).max().unwrap_or(0);
        for (tier, u) in (first..).zip(urls) {
            let u = u.as_str().ok_or("tracker-add must list URLs")?;
            list.push((None, tier, u.to_string()));
        }
    }
    let mut tiers: Vec<Vec<String>> = Vec::new();
    let mut last = None;
    list.sort_by_key(|t| t.1);
    for (_, tier, url) in list {
        if last != Some(tier) {
            tiers.push(Vec::new());
            last = Some(tier);
        }
        if let Some(t) = tiers.last_mut() {
            t.push(url);
        }
    }
    Ok(Some(tiers))
}

fn set_location(d: &mut Daemon, a: &Map<String, Value>) -> Result<Map<String, Value>, Failure> {
    let loc = a
        .get("location")
        .and_then(Value::as_str)
        .ok_or("no location was given")?;
    let mv = a.get("move").and_then(Value::as_bool).unwrap_or(false);
    for id in select(d, a)? {
        if mv {
            d.move_to(id, loc)?;
        } else {
            d.locate_at(id, loc)?;
        }
    }
    Ok(Map::new())
}

fn rename_path(d: &mut Daemon, a: &Map<String, Value>) -> Result<Map<String, Value>, Failure> {
    let ids = select(d, a)?;
    let [id] = ids.as_slice() else {
        return Err("torrent-rename-path needs exactly one torrent".into());
    };
    let path = a
        .get("path")
        .and_then(Value::as_str)
        .ok_or("no path was given")?;
    let name = a
        .get("name")
        .and_then(Value::as_str)
        .ok_or("no name was given")?;
    d.rename(*id, path, name)?;
    Ok(Map::from_iter([
        ("path".to_string(), json!(path)),
        ("name".to_string(), json!(name)),
        ("id".to_string(), json!(id.0)),
    ]))
}

fn session_get(d: &Daemon, a: &Map<String, Value>) -> Result<Map<String, Value>, Failure> {
    let all = d.session_fields();
    match a.get("fields") {
        Some(Value::Array(f)) => {
            let want: Vec<String> = f
                .iter()
                .filter_map(Value::as_str)
                .map(names::to_snake)
                .collect();
            Ok(all
                .into_iter()
                .filter(|(k, _)| want.iter().any(|w| w == k))
                .collect())
        }
        _ => Ok(all),
    }
}

fn session_set(d: &mut Daemon, a: &Map<String, Value>) -> Result<Map<String, Value>, Failure> {
    // Checked on a copy first: nothing changes unless everything can.
    let mut settings = d.settings.clone();
    // A limit in force that no request set (a flag's) is remembered as the limit's
    // value, so that turning it off and on again keeps it.
    for (key, in_force) in [
        ("speed_limit_down", d.opts.download_limit),
        ("speed_limit_up", d.opts.upload_limit),
    ] {
        if in_force > 0 && !settings.contains_key(key) {
            settings.insert(key.into(), json!(in_force / 1024));
        }
    }
    for (k, v) in a {
        match k.as_str() {
            "download_dir" => {
                let s = v.as_str().ok_or("download-dir must be a string")?;
                if !std::path::Path::new(s).is_absolute() {
                    return Err("download-dir must be an absolute path".into());
                }
            }
            "speed_limit_down"
            | "speed_limit_up"
            | "peer_port"
            | "peer_limit_global"
            | "peer_limit_per_torrent" => {
                v.as_u64()
                    .filter(|n| *n <= MAX_KIB_LIMIT)
                    .ok_or_else(|| format!("{} must be a number", k.replace('_', "-")))?;
            }
            "download_queue_size"
            | "seed_queue_size"
            | "queue_stalled_minutes"
            | "idle_seeding_limit" => {
                v.as_u64().filter(|n| *n <= 100_000).ok_or_else(|| {
                    format!("{} must be a number up to 100000", k.replace('_', "-"))
                })?;
            }
            "alt_speed_down" | "alt_speed_up" => {
                v.as_u64()
                    .filter(|n| *n <= MAX_KIB_LIMIT)
                    .ok_or_else(|| format!("{} must be a number", k.replace('_', "-")))?;
            }
            "alt_speed_time_begin" | "alt_speed_time_end" => {
                v.as_u64().filter(|n| *n < 24 * 60).ok_or_else(|| {
                    format!(
                        "{} must be a minute of the day (0-1439)",
                        k.replace('_', "-")
                    )
                })?;
            }
            "alt_speed_time_day" => {
                v.as_u64()
                    .filter(|n| *n <= 127)
                    .ok_or("alt-speed-time-day must be a set of day bits (0-127)")?;
            }
            "speed_limit_down_enabled"
            | "speed_limit_up_enabled"
            | "dht_enabled"
            | "pex_enabled"
            | "utp_enabled"
            | "lpd_enabled"
            | "port_forwarding_enabled"
            | "seed_ratio_limited"
            | "download_queue_enabled"
            | "seed_queue_enabled"
            | "queue_stalled_enabled"
            | "idle_seeding_limit_enabled"
            | "alt_speed_enabled"
            | "alt_speed_time_enabled" => {
                v.as_bool()
                    .ok_or_else(|| format!("{} must be a boolean", k.replace('_', "-")))?;
            }
            "seed_ratio_limit" => {
                v.as_f64()
                    .filter(|r| *r >= 0.0)
                    .ok_or("seedRatioLimit must be a number")?;
            }
            "encryption" => {
                let e = v.as_str().ok_or("encryption must be a string")?;
                if !matches!(e, "required" | "preferred" | "tolerated" | "allowed") {
                    return Err(format!("unknown encryption mode {e:?}"));
                }
            }
            // Read-only or informational: ignored as Transmission ignores them.
            "version"
            | "rpc_version"
            | "rpc_version_minimum"
            | "rpc_version_semver"
            | "session_id"
            | "config_dir"
            | "units"
            | "blocklist_size" => continue,
            other => {
                return Err(format!(
                    "session-set: {} cannot be changed in this version of btcore",
                    other.replace('_', "-")
                ))
            }
        }
        settings.insert(k.clone(), v.clone());
    }
    let mut opts = d.opts.clone();
    settings_into_opts(&settings, &mut opts, &d.config_dir_path())?;
    // The switch as it is now (the schedule may have flipped it) unless this
    // request flips it.
    if !a.contains_key("alt_speed_enabled") {
        opts.alt_speed_enabled = d.client.alt_speed_enabled();
    }
    d.opts = opts;
    d.apply_opts()?;
    if let Some(dir) = settings.get("download_dir").and_then(Value::as_str) {
        d.download_dir = std::path::PathBuf::from(dir);
    }
    let ratio_changed = a.contains_key("seed_ratio_limit") || a.contains_key("seed_ratio_limited");
    d.settings = settings;
    d.dirty = true;
    if ratio_changed {
        let ids: Vec<TorrentId> = d.torrents.keys().copied().collect();
        for id in ids {
            d.apply_torrent(id);
        }
    }
    Ok(Map::new())
}

/// A speed limit's value in kB/s: the one set, else the one in force, else
/// Transmission's default.
pub fn limit_kib(set: Option<u64>, in_force: u64) -> u64 {
    set.unwrap_or(if in_force > 0 { in_force / 1024 } else { 100 })
}

/// Transmission's default for a session setting the daemon keeps in its settings
/// (`Null` for the others).
pub fn default_setting(key: &str) -> Value {
    match key {
        "download_queue_enabled" | "queue_stalled_enabled" => true.into(),
        "seed_queue_enabled"
        | "idle_seeding_limit_enabled"
        | "alt_speed_enabled"
        | "alt_speed_time_enabled" => false.into(),
        "download_queue_size" => 5.into(),
        "seed_queue_size" => 10.into(),
        "queue_stalled_minutes" | "idle_seeding_limit" => 30.into(),
        "alt_speed_down" | "alt_speed_up" => 50.into(),
        "alt_speed_time_begin" => 540.into(),
        "alt_speed_time_end" => 1020.into(),
        "alt_speed_time_day" => 127.into(),
        _ => Value::Null,
    }
}

/// Sets the engine's options from the session settings changed over the RPC.
pub fn settings_into_opts(
    settings: &Map<String, Value>,
    opts: &mut btcore_host::client::ClientOptions,
    state_dir: &std::path::Path,
) -> Result<(), Failure> {
    let num = |k: &str| settings.get(k).and_then(Value::as_u64);
    let on = |k: &str| settings.get(k).and_then(Value::as_bool);
    // A limit's value and its switch are two settings, as in Transmission: the value
    // is kept while the switch is off (Transmission's 100 kB/s until one is set), and
    // a value set alone changes the limit only when it is on.
    let limit = |value: &str, enabled: &str, old: u64| -> u64 {
        if on(enabled).unwrap_or(old > 0) {
            limit_kib(num(value), old).saturating_mul(1024)
        } else {
            0
        }
    };
    opts.download_limit = limit(
        "speed_limit_down",
        "speed_limit_down_enabled",
        opts.download_limit,
    );
    opts.upload_limit = limit(
        "speed_limit_up",
        "speed_limit_up_enabled",
        opts.upload_limit,
    );
    if let Some(p) = num("peer_port") {
        let p = u16::try_from(p).map_err(|_| "peer-port must be below 65536")?;
        opts.listen.set_port(p);
    }
    if let Some(n) = num("peer_limit_global") {
        opts.max_connections = n.min(100_000) as usize;
    }
    if let Some(n) = num("peer_limit_per_torrent") {
        opts.max_peers = n.min(100_000) as usize;
    }
    if let Some(v) = on("pex_enabled") {
        opts.pex = v;
    }
    if let Some(v) = on("port_forwarding_enabled") {
        opts.port_mapping = v.then(|| opts.port_mapping.clone().unwrap_or_default());
    }
    if let Some(v) = on("utp_enabled") {
        use btcore_host::client::TransportPolicy;
        opts.transport = match (v, opts.transport) {
            (false, _) => TransportPolicy::TcpOnly,
            (true, TransportPolicy::TcpOnly) => TransportPolicy::Both,
            (true, keep) => keep,
        };
    }
    #[cfg(feature = "lsd")]
    if let Some(v) = on("lpd_enabled") {
        opts.lsd = v;
    }
    if let Some(v) = on("dht_enabled") {
        #[cfg(feature = "dht")]
        {
            if v && opts.dht.is_none() {
                opts.dht = Some(btcore_host::dht::DhtOptions {
                    state_dir: Some(state_dir.to_path_buf()),
                    low_memory: opts.low_memory,
                    ..btcore_host::dht::DhtOptions::default()
                });
            } else if !v {
                opts.dht = None;
            }
        }
        #[cfg(not(feature = "dht"))]
        if v {
            let _ = state_dir;
            return Err("this build of btcore has no DHT".into());
        }
    }
    // Queues, the idle seeding limit and the alternative speeds, with
    // Transmission's defaults for what was never set.
    let num_or = |k: &str| num(k).unwrap_or_else(|| default_setting(k).as_u64().unwrap_or(0));
    let on_or = |k: &str| on(k).unwrap_or_else(|| default_setting(k).as_bool().unwrap_or(false));
    let queue = |size: &str, enabled: &str| {
        on_or(enabled).then(|| num_or(size).min(u64::from(u32::MAX)) as u32)
    };
    opts.download_queue = queue("download_queue_size", "download_queue_enabled");
    opts.seed_queue = queue("seed_queue_size", "seed_queue_enabled");
    opts.queue_stalled_minutes = queue("queue_stalled_minutes", "queue_stalled_enabled");
    opts.seed_idle_minutes = queue("idle_seeding_limit", "idle_seeding_limit_enabled");
    opts.alt_download_limit = num_or("alt_speed_down").saturating_mul(1024);
    opts.alt_upload_limit = num_or("alt_speed_up").saturating_mul(1024);
    opts.alt_speed_enabled = on_or("alt_speed_enabled");
    opts.alt_speed_schedule =
        on_or("alt_speed_time_enabled").then(|| btcore_core::alt_speed::Schedule {
            begin_minute: num_or("alt_speed_time_begin").min(1439) as u16,
            end_minute: num_or("alt_speed_time_end").min(1439) as u16,
            days: num_or("alt_speed_time_day").min(127) as u8,
        });
    if let Some(e) = settings.get("encryption").and_then(Value::as_str) {
        use btcore_host::encryption::Encryption;
        opts.encryption = match e {
            "required" => Encryption::Required,
            "preferred" => Encryption::Preferred,
            _ => Encryption::Allowed,
        };
    }
    Ok(())
}

fn session_stats(d: &Daemon) -> Map<String, Value> {
    let views = d.client.torrents();
    let (mut down, mut up, mut active, mut paused) = (0u64, 0u64, 0u64, 0u64);
    let (mut dl, mut ul) = (0u64, 0u64);
    for v in &views {
        down += v.status.download_rate;
        up += v.status.upload_rate;
        dl += v.status.downloaded;
        ul += v.status.uploaded;
        if v.status.paused {
            paused += 1;
        } else if v.status.download_rate > 0 || v.status.upload_rate > 0 {
            active += 1;
        }
    }
    let secs = d.started.elapsed().as_secs();
    let current = json!({
        "uploaded_bytes": ul,
        "downloaded_bytes": dl,
        "files_added": d.files_added,
        "seconds_active": secs,
        "session_count": 1,
    });
    let cumulative = json!({
        "uploaded_bytes": d.totals.0 + ul,
        "downloaded_bytes": d.totals.1 + dl,
        "files_added": d.totals.2 + d.files_added,
        "seconds_active": d.totals.3 + secs,
        "session_count": d.totals.4 + 1,
    });
    Map::from_iter([
        ("torrent_count".to_string(), json!(views.len())),
        ("active_torrent_count".to_string(), json!(active)),
        ("paused_torrent_count".to_string(), json!(paused)),
        ("download_speed".to_string(), json!(down)),
        ("upload_speed".to_string(), json!(up)),
        ("current_stats".to_string(), current),
        ("cumulative_stats".to_string(), cumulative),
    ])
}

fn free_space(a: &Map<String, Value>) -> Result<Map<String, Value>, Failure> {
    let path = a
        .get("path")
        .and_then(Value::as_str)
        .ok_or("directory path argument is missing")?;
    let (free, total) = statvfs(path).map_err(|e| format!("{path}: {e}"))?;
    Ok(Map::from_iter([
        ("path".to_string(), json!(path)),
        ("size_bytes".to_string(), json!(free)),
        ("total_size".to_string(), json!(total)),
    ]))
}

/// Free and total bytes of the file system holding `path`.
// The block counts are 32 bits wide on some targets (armv7).
#[allow(clippy::useless_conversion)]
pub fn statvfs(path: &str) -> std::io::Result<(u64, u64)> {
    let c = std::ffi::CString::new(path)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated string and `s` is valid for one `statvfs`,
    // which the call fills when it returns 0.
    let r = unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the call returned 0, so it wrote the whole struct.
    let s = unsafe { s.assume_init() };
    let bsize = u64::from(s.f_frsize);
    Ok((u64::from(s.f_bavail) * bsize, u64::from(s.f_blocks) * bsize))
}

/// Transmission's status number of a torrent.
pub fn status_code(state: TorrentState, paused: bool) -> u64 {
    if paused {
        return 0;
    }
    match state {
        TorrentState::Checking => 2,
        TorrentState::FetchingMetadata | TorrentState::Downloading => 4,
        TorrentState::Seeding => 6,
        TorrentState::Error => 0,
        #[allow(unreachable_patterns)]
        _ => 0,
    }
}
