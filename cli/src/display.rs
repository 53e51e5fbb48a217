//! The progress display of `btcore download`, `seed` and `demo`: a live table on a
//! terminal, a plain line per second otherwise, or JSON lines for scripts.

use crate::info::human_size;
use btcore_core::session::{DiskError, TorrentState};
use btcore_host::client::TorrentView;
use std::fmt::Write as _;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Redraws a table in place (stdout is a terminal).
    Live,
    /// One line per torrent per second.
    Plain,
    /// One JSON object per torrent per second.
    Json,
}

fn rate(n: u64) -> String {
    format!("{}/s", human_size(n))
}

/// The core's ETA (rounded up), for a human.
fn eta(v: &TorrentView) -> String {
    let s = match v.status.eta_secs() {
        Some(0) => return "done".into(),
        None => return "-".into(),
        Some(s) => s,
    };
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

fn state(s: TorrentState) -> &'static str {
    match s {
        TorrentState::Checking => "checking",
        TorrentState::FetchingMetadata => "metadata",
        TorrentState::Downloading => "downloading",
        TorrentState::Seeding => "seeding",
        TorrentState::Error => "error",
        _ => "?",
    }
}

fn state_of(v: &TorrentView) -> &'static str {
    if v.status.paused {
        "paused"
    } else {
        state(v.status.state)
    }
}

/// The disk error that stopped the torrent, if one did.
fn error_of(v: &TorrentView) -> Option<&'static str> {
    v.status.error.map(|e| match e {
        DiskError::NoSpace => "disk full",
        _ => "disk error",
    })
}

/// Percent complete: the core's progress (rounded down: 100% only when done).
pub fn percent(v: &TorrentView) -> f64 {
    f64::from(v.status.progress_ppm()) / 10_000.0
}

/// Percent of the data check done, while the torrent is checked.
pub fn check_percent(v: &TorrentView) -> Option<f64> {
    v.checking.map(|(done, total)| {
        if total == 0 {
            100.0
        } else {
            f64::from(done) * 100.0 / f64::from(total)
        }
    })
}

/// Renders the torrents in `mode`; `lines_before` is how many lines the previous
/// live frame took (to move the cursor back up).
pub fn render(views: &[TorrentView], mode: Mode, lines_before: usize) -> String {
    let mut s = String::new();
    match mode {
        Mode::Json => {
            for v in views {
                let o = serde_json::json!({
                    "name": v.name,
                    "info_hash": v.status.info_hash.to_string(),
                    "state": state_of(v),
                    "error": error_of(v),
                    "eta_seconds": v.status.eta_secs(),
                    "progress": (percent(v) * 100.0).round() / 100.0,
                    "bytes_have": v.status.bytes_have,
                    "total_size": v.status.total_size,
                    "download_rate": v.status.download_rate,
                    "upload_rate": v.status.upload_rate,
                    "peers": v.status.peers,
                    "seeds": v.status.seeds,
                    "downloaded": v.status.downloaded,
                    "uploaded": v.status.uploaded,
                    "hash_failures": v.status.hash_failures,
                    "banned": v.status.banned,
                    "checked": check_percent(v).map(|p| (p * 100.0).round() / 100.0),
                });
                let _ = writeln!(s, "{o}");
            }
        }
        Mode::Plain | Mode::Live => {
            if mode == Mode::Live && lines_before > 0 {
                let _ = write!(s, "\x1b[{lines_before}A");
            }
            for v in views {
                let bar_len = 24;
                // While checking, the bar and the figure are the check's.
                let shown = check_percent(v).unwrap_or_else(|| percent(v));
                let filled = (shown / 100.0 * bar_len as f64) as usize;
                let bar: String = (0..bar_len)
                    .map(|i| if i < filled { '#' } else { '.' })
                    .collect();
                let name: String = v.name.chars().take(28).collect();
                let _ = write!(
                    s,
                    "{name:<28} [{bar}] {:>6.2}%  {:<11} down {:>12}  up {:>12}  peers {:>3} ({} seeds)  eta {}",
                    shown,
                    error_of(v).unwrap_or_else(|| state_of(v)),
                    rate(v.status.download_rate),
                    rate(v.status.upload_rate),
                    v.status.peers,
                    v.status.seeds,
                    eta(v),
                );
                if mode == Mode::Live {
                    s.push_str("\x1b[K");
                }
                s.push('\n');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use btcore_core::ids::InfoHash;
    use btcore_core::session::{TorrentId, TorrentStatus};

    fn view(state: TorrentState, bytes_have: u64, total_size: u64, rate: u64) -> TorrentView {
        TorrentView {
            id: TorrentId(1),
            name: "t".into(),
            status: TorrentStatus {
                info_hash: InfoHash([0; 20]),
                info_hash_v2: None,
                state,
                pieces_have: 0,
                num_pieces: 1,
                bytes_have,
                total_size,
                peers: 0,
                seeds: 0,
                connecting: 0,
                download_rate: rate,
                upload_rate: 0,
                downloaded: 0,
                uploaded: 0,
                hash_failures: 0,
                banned: 0,
                private: false,
                paused: false,
                error: None,
                wanted_size: total_size,
                wanted_have: bytes_have,
                finished: false,
                stalled: false,
                queued: false,
                queue_position: 0,
            },
            checking: None,
        }
    }

    #[test]
    fn the_display_shows_the_cores_progress_eta_and_error() {
        // 1001 bytes at 100 B/s: 11 s, not 10 (the core rounds up).
        let v = view(TorrentState::Downloading, 0, 1001, 100);
        assert_eq!(eta(&v), "0m11s");
        let v = view(TorrentState::Downloading, 0, 1001, 0);
        assert_eq!(eta(&v), "-");
        let v = view(TorrentState::Seeding, 1001, 1001, 0);
        assert_eq!((eta(&v), percent(&v)), ("done".to_string(), 100.0));
        // One byte short is not 100%.
        let v = view(TorrentState::Downloading, 999_999, 1_000_000, 0);
        assert!(percent(&v) < 100.0);
        let mut v = view(TorrentState::Error, 500, 1000, 0);
        v.status.error = Some(DiskError::NoSpace);
        assert!(render(&[v.clone()], Mode::Plain, 0).contains("disk full"));
        let json: serde_json::Value =
            serde_json::from_str(render(&[v], Mode::Json, 0).trim()).expect("json");
        assert_eq!(json["error"], "disk full");
        assert_eq!(json["state"], "error");
        assert_eq!(json["progress"], 50.0);
    }
}
