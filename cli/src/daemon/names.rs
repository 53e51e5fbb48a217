//! Transmission's RPC names, old and new. rpc-version 18 (Transmission 4.1) writes
//! every method, argument and field in snake_case; older clients send a mix of
//! kebab-case (methods, session settings, `torrent-add` arguments) and camelCase
//! (torrent fields), with a few exceptions. Requests are read in any of them (every
//! key is turned to snake_case); answers are written in the style the request used.

use serde_json::{Map, Value};

/// The naming of a request, and so of its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// rpc-version 18: snake_case everywhere.
    Snake,
    /// rpc-version 17 and older: kebab-case and camelCase.
    Legacy,
}

/// A key in snake_case: `percentDone` and `download-dir` become `percent_done` and
/// `download_dir`.
pub fn to_snake(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for (i, c) in key.chars().enumerate() {
        if c == '-' {
            out.push('_');
        } else if c.is_ascii_uppercase() {
            if i > 0 && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Every key of an object (not of nested values) in snake_case.
pub fn snake_keys(args: &Map<String, Value>) -> Map<String, Value> {
    args.iter().map(|(k, v)| (to_snake(k), v.clone())).collect()
}

/// Where a key sits in an answer: the legacy names differ by place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A torrent of `torrent-get` and what it nests (camelCase).
    Torrent,
    /// `session-get` (kebab-case).
    Session,
    /// `session-stats` (camelCase; the two stats objects' keys are kebab-case).
    Stats,
    /// Anything else (`torrent-add`, `free-space`, `port-test`: kebab-case).
    Other,
}

fn camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The legacy name of a snake_case key at `place`.
pub fn legacy(place: Place, key: &str) -> String {
    match place {
        Place::Torrent => match key {
            "file_count" | "peer_limit" | "primary_mime_type" => key.replace('_', "-"),
            "is_utp" => "isUTP".into(),
            _ => camel(key),
        },
        Place::Session => match key {
            "seed_ratio_limit" | "seed_ratio_limited" => camel(key),
            _ => key.replace('_', "-"),
        },
        Place::Stats => match key {
            "current_stats" | "cumulative_stats" => key.replace('_', "-"),
            _ => camel(key),
        },
        Place::Other => match key {
            "hash_string" => "hashString".into(),
            // free-space's, as rpc-version 17 added it.
            "total_size" => key.into(),
            _ => key.replace('_', "-"),
        },
    }
}

/// Rewrites the keys of an answer's `arguments` for a legacy client: `place` is
/// where the object sits; nested objects keep their place (a torrent's files and
/// peers are camelCase like it).
pub fn to_legacy(v: Value, place: Place) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let inner = match (place, k.as_str()) {
                        (Place::Other, "torrents") => Place::Torrent,
                        (Place::Stats, _) => Place::Stats,
                        (p, _) => p,
                    };
                    (legacy(place, &k), to_legacy(v, inner))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| to_legacy(v, place)).collect()),
        v => v,
    }
}

/// The name of a field to show a client of `style` in a table's first row.
pub fn field_name(style: Style, snake: &str) -> String {
    match style {
        Style::Snake => snake.to_string(),
        Style::Legacy => legacy(Place::Torrent, snake),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways() {
        for (old, new) in [
            ("percentDone", "percent_done"),
            ("download-dir", "download_dir"),
            ("hashString", "hash_string"),
            ("peer-limit", "peer_limit"),
            ("seedRatioLimit", "seed_ratio_limit"),
            ("torrent-get", "torrent_get"),
            ("ids", "ids"),
        ] {
            assert_eq!(to_snake(old), new);
        }
        assert_eq!(legacy(Place::Torrent, "percent_done"), "percentDone");
        assert_eq!(legacy(Place::Torrent, "peer_limit"), "peer-limit");
        assert_eq!(legacy(Place::Torrent, "is_utp"), "isUTP");
        assert_eq!(legacy(Place::Session, "download_dir"), "download-dir");
        assert_eq!(legacy(Place::Session, "seed_ratio_limit"), "seedRatioLimit");
        assert_eq!(
            legacy(Place::Stats, "active_torrent_count"),
            "activeTorrentCount"
        );
        assert_eq!(legacy(Place::Stats, "cumulative_stats"), "cumulative-stats");
        assert_eq!(legacy(Place::Other, "torrent_added"), "torrent-added");
    }
}
