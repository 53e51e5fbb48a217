//! The progress display of `btcore download`, `seed` and `demo`: a live table on a
//! terminal, a plain line per second otherwise, or JSON lines for scripts.

use crate::info::human_size;
use btcore_core::session::TorrentState;
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

fn eta(v: &TorrentView) -> String {
    let left = v.status.total_size.saturating_sub(v.status.bytes_have);
    if v.status.state == TorrentState::Seeding {
        return "done".into();
    }
    if v.status.download_rate == 0 {
        return "-".into();
    }
    let s = left / v.status.download_rate;
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

/// Percent complete.
pub fn percent(v: &TorrentView) -> f64 {
    if v.status.total_size == 0 {
        0.0
    } else {
        v.status.bytes_have as f64 * 100.0 / v.status.total_size as f64
    }
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
                    state_of(v),
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
