//! What the daemon keeps across restarts: each torrent's source (its `.torrent`, or
//! the magnet link until the metadata arrives), its settings and its dates and
//! totals, in `STATE_DIR/daemon.json`, written atomically (a `kill -9` leaves the
//! old file or the new one). Verified pieces are the engine's resume data, in the
//! same directory.

use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// Largest `daemon.json` read back (a thousand torrents take about 400 KiB).
const MAX_STATE_FILE: u64 = 64 << 20;

/// One torrent as saved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Saved {
    /// Info-hash, hex (the stable key).
    pub hash: String,
    /// The magnet link, for a torrent whose metadata never arrived (else its
    /// `.torrent` is `torrents/HASH.torrent`).
    pub magnet: Option<String>,
    /// Stopped by the user.
    pub paused: bool,
    /// Where its data goes.
    pub download_dir: PathBuf,
    /// Its tracker list as edited over the RPC (tiers of URLs); `None`: the one its
    /// `.torrent` or magnet link gave.
    pub trackers: Option<Vec<Vec<String>>>,
    /// Where its data is while it downloads, when not `download_dir` (the
    /// incomplete folder): it moves to `download_dir` once done.
    pub data_dir: Option<PathBuf>,
    /// Unix seconds.
    pub added_date: i64,
    /// Unix seconds it completed (0: not yet).
    pub done_date: i64,
    /// User labels.
    pub labels: Vec<String>,
    /// Payload bytes before this run of the daemon.
    pub uploaded: u64,
    /// Payload bytes before this run of the daemon.
    pub downloaded: u64,
    /// Position in the queue.
    pub queue_position: u64,
    /// File priorities (the engine's 0 skip, 1..7); empty: all default.
    pub priorities: Vec<u8>,
    /// Sequential download.
    pub sequential: bool,
    /// Own limits in KiB/s (None: none).
    pub download_limit: Option<u64>,
    pub upload_limit: Option<u64>,
    /// Seed ratio mode (Transmission's: 0 the session's, 1 this torrent's, 2 none)
    /// and this torrent's ratio.
    pub ratio_mode: u8,
    pub ratio_limit: f64,
    /// Idle seeding limit mode (Transmission's: 0 the session's, 1 this torrent's,
    /// 2 none) and this torrent's minutes.
    pub idle_mode: u8,
    pub idle_limit: u32,
    /// Its own connection cap (None: the session's).
    pub peer_limit: Option<u32>,
    /// Unix seconds payload last moved (0: never).
    pub activity_date: i64,
    /// Seconds it has run downloading, and seeding (every run of the daemon).
    pub seconds_downloading: u64,
    pub seconds_seeding: u64,
}

impl Saved {
    fn to_json(&self) -> Value {
        json!({
            "hash": self.hash,
            "magnet": self.magnet,
            "paused": self.paused,
            "download_dir": self.download_dir.to_string_lossy(),
            "data_dir": self.data_dir.as_ref().map(|d| d.to_string_lossy()),
            "trackers": self.trackers,
            "added_date": self.added_date,
            "done_date": self.done_date,
            "labels": self.labels,
            "uploaded": self.uploaded,
            "downloaded": self.downloaded,
            "queue_position": self.queue_position,
            "priorities": self.priorities,
            "sequential": self.sequential,
            "download_limit": self.download_limit,
            "upload_limit": self.upload_limit,
            "ratio_mode": self.ratio_mode,
            "idle_mode": self.idle_mode,
            "idle_limit": self.idle_limit,
            "peer_limit": self.peer_limit,
            "ratio_limit": self.ratio_limit,
            "activity_date": self.activity_date,
            "seconds_downloading": self.seconds_downloading,
            "seconds_seeding": self.seconds_seeding,
        })
    }

    fn from_json(v: &Value) -> Option<Self> {
        let o = v.as_object()?;
        let hash = o.get("hash")?.as_str()?.to_string();
        if hash.len() != 40 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let num = |k: &str| o.get(k).and_then(Value::as_u64).unwrap_or(0);
        Some(Self {
            hash,
            magnet: o.get("magnet").and_then(Value::as_str).map(str::to_string),
            paused: o.get("paused").and_then(Value::as_bool).unwrap_or(false),
            download_dir: PathBuf::from(o.get("download_dir")?.as_str()?),
            data_dir: o.get("data_dir").and_then(Value::as_str).map(PathBuf::from),
            trackers: o.get("trackers").and_then(Value::as_array).map(|tiers| {
                tiers
                    .iter()
                    .filter_map(Value::as_array)
                    .map(|t| {
                        t.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .collect()
            }),
            added_date: o.get("added_date").and_then(Value::as_i64).unwrap_or(0),
            done_date: o.get("done_date").and_then(Value::as_i64).unwrap_or(0),
            labels: o
                .get("labels")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            uploaded: num("uploaded"),
            downloaded: num("downloaded"),
            queue_position: num("queue_position"),
            priorities: o
                .get("priorities")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|v| v.as_u64().unwrap_or(4).min(7) as u8)
                        .collect()
                })
                .unwrap_or_default(),
            sequential: o
                .get("sequential")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            download_limit: o.get("download_limit").and_then(Value::as_u64),
            upload_limit: o.get("upload_limit").and_then(Value::as_u64),
            ratio_mode: num("ratio_mode").min(2) as u8,
            ratio_limit: o.get("ratio_limit").and_then(Value::as_f64).unwrap_or(2.0),
            idle_mode: num("idle_mode").min(2) as u8,
            idle_limit: o
                .get("idle_limit")
                .and_then(Value::as_u64)
                .map_or(30, |m| m.min(u64::from(u32::MAX)) as u32),
            peer_limit: o
                .get("peer_limit")
                .and_then(Value::as_u64)
                .map(|n| n.min(100_000) as u32),
            activity_date: o.get("activity_date").and_then(Value::as_i64).unwrap_or(0),
            seconds_downloading: num("seconds_downloading"),
            seconds_seeding: num("seconds_seeding"),
        })
    }
}

/// The daemon's files in its state directory: `daemon.json` (the session's
/// settings and totals) and, in `torrents/`, each torrent's `HASH.json` (its
/// settings), `HASH.torrent` or `HASH.magnet`. Each is written atomically, and only
/// when it changed: a change to one torrent costs one small file.
pub struct Store {
    dir: PathBuf,
    /// What each file holds on disk now.
    written: std::collections::HashMap<PathBuf, Vec<u8>>,
}

impl Store {
    /// The store in `dir` (created if missing).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("torrents"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            written: std::collections::HashMap::new(),
        })
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("daemon.json")
    }

    /// Where a torrent's `.torrent` is kept.
    pub fn torrent_file(&self, hash: &str) -> PathBuf {
        self.dir.join("torrents").join(format!("{hash}.torrent"))
    }

    fn record_file(&self, hash: &str) -> PathBuf {
        self.dir.join("torrents").join(format!("{hash}.json"))
    }

    /// Forgets a removed torrent's files.
    pub fn remove(&mut self, hash: &str) {
        for p in [
            self.record_file(hash),
            self.torrent_file(hash),
            self.magnet_file(hash),
        ] {
            let _ = std::fs::remove_file(&p);
            self.written.remove(&p);
        }
    }

    /// Where a magnet link is kept until its metadata arrives.
    pub fn magnet_file(&self, hash: &str) -> PathBuf {
        self.dir.join("torrents").join(format!("{hash}.magnet"))
    }

    /// The torrents whose `.torrent` or `.magnet` is in the store but not in `known`
    /// (added less than a second before a `kill -9`), with default settings.
    pub fn orphans(&self, known: &[Saved], download_dir: &Path) -> Vec<Saved> {
        let Ok(rd) = std::fs::read_dir(self.dir.join("torrents")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut have: std::collections::HashSet<String> =
            known.iter().map(|s| s.hash.clone()).collect();
        for ent in rd.flatten().take(200_000) {
            let name = ent.file_name().to_string_lossy().into_owned();
            let Some((hash, ext)) = name.split_once('.') else {
                continue;
            };
            if hash.len() != 40
                || !hash.bytes().all(|b| b.is_ascii_hexdigit())
                || have.contains(hash)
            {
                continue;
            }
            let magnet = match ext {
                "torrent" => None,
                "magnet" => match std::fs::read_to_string(ent.path()) {
                    Ok(m) if m.len() < 64 * 1024 => Some(m.trim().to_string()),
                    _ => continue,
                },
                _ => continue,
            };
            let added = ent
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            have.insert(hash.to_string());
            out.push(Saved {
                hash: hash.to_string(),
                magnet,
                download_dir: download_dir.to_path_buf(),
                added_date: added,
                queue_position: (known.len() + out.len()) as u64,
                ..Saved::default()
            });
        }
        out
    }

    /// The saved torrents and session settings; empty when there is nothing yet. A
    /// `daemon.json` that cannot be read is an error (the daemon will not start over
    /// it); a torrent record that cannot be read is skipped with a warning (its
    /// `.torrent` is then picked up with default settings).
    pub fn load(&mut self) -> Result<(Vec<Saved>, Map<String, Value>), String> {
        let path = self.state_file();
        let settings = match read_capped(&path, MAX_STATE_FILE) {
            Ok(Some(bytes)) => {
                let v: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                self.written.insert(path.clone(), bytes);
                v.get("settings")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default()
            }
            Ok(None) => Map::new(),
            Err(e) => return Err(e),
        };
        let mut torrents = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.dir.join("torrents")) else {
            return Ok((torrents, settings));
        };
        for ent in rd.flatten().take(200_000) {
            let p = ent.path();
            if p.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match read_capped(&p, MAX_RECORD) {
                Ok(Some(bytes)) => {
                    match serde_json::from_slice::<Value>(&bytes)
                        .ok()
                        .as_ref()
                        .and_then(Saved::from_json)
                    {
                        Some(s) => {
                            torrents.push(s);
                            self.written.insert(p, bytes);
                        }
                        None => log::warn!("{}: not a torrent record", p.display()),
                    }
                }
                Ok(None) => {}
                Err(e) => log::warn!("{e}"),
            }
        }
        Ok((torrents, settings))
    }

    /// Writes what changed: each torrent's record, and `daemon.json`.
    pub fn save(
        &mut self,
        torrents: &[Saved],
        settings: &Map<String, Value>,
    ) -> std::io::Result<()> {
        for t in torrents {
            let bytes = serde_json::to_vec_pretty(&t.to_json()).map_err(std::io::Error::other)?;
            self.write(self.record_file(&t.hash), bytes)?;
        }
        let v = json!({"version": 2, "settings": settings});
        let bytes = serde_json::to_vec_pretty(&v).map_err(std::io::Error::other)?;
        self.write(self.state_file(), bytes)
    }

    fn write(&mut self, path: PathBuf, bytes: Vec<u8>) -> std::io::Result<()> {
        if self.written.get(&path) == Some(&bytes) {
            return Ok(());
        }
        btcore_host::os::write_atomic(&path, &bytes)?;
        self.written.insert(path, bytes);
        Ok(())
    }
}

/// Largest torrent record read back.
const MAX_RECORD: u64 = 1 << 20;

/// A file's bytes if it is no larger than `max`; None when it does not exist.
fn read_capped(path: &Path, max: u64) -> Result<Option<Vec<u8>>, String> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > max => Err(format!("{}: larger than {max} bytes", path.display())),
        Ok(_) => std::fs::read(path)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("btcore-state-{}", std::process::id()));
        let mut store = Store::open(&dir).expect("store");
        let t = Saved {
            hash: "0123456789abcdef0123456789abcdef01234567".into(),
            magnet: Some("magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567".into()),
            paused: true,
            download_dir: "/data".into(),
            added_date: 5,
            done_date: 0,
            labels: vec!["a".into()],
            uploaded: 7,
            downloaded: 9,
            queue_position: 2,
            priorities: vec![0, 4, 7],
            sequential: true,
            download_limit: Some(100),
            upload_limit: None,
            ratio_mode: 1,
            ratio_limit: 1.5,
            data_dir: Some("/data/incomplete".into()),
            trackers: Some(vec![
                vec!["http://a/announce".into()],
                vec!["udp://b:1".into()],
            ]),
            idle_mode: 1,
            idle_limit: 45,
            peer_limit: Some(12),
            activity_date: 11,
            seconds_downloading: 60,
            seconds_seeding: 3600,
        };
        let mut settings = Map::new();
        settings.insert("speed_limit_down".into(), json!(100));
        store
            .save(std::slice::from_ref(&t), &settings)
            .expect("save");
        let (ts, s) = store.load().expect("load");
        assert_eq!(ts, vec![t.clone()]);
        assert_eq!(s, settings);
        let mut again = Store::open(&dir).expect("store");
        assert_eq!(again.load().expect("load").0, vec![t]);
        std::fs::write(dir.join("daemon.json"), b"{not json").expect("write");
        assert!(again.load().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
