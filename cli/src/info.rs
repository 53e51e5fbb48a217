//! What `btcore info` and `btcore magnet` print: a torrent or a magnet link as text
//! for a person (in the manner of `transmission-show`) or as one JSON object.

use btcore_core::magnet::Magnet;
use btcore_core::metainfo::Metainfo;
use serde_json::{json, Value};
use std::fmt::Write as _;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `1.50 MiB` and the like.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian calendar). Some
/// creators write milliseconds: a value past the year 5000 is read as such.
pub fn utc(secs: i64) -> String {
    let secs = if secs > 100_000_000_000 {
        secs / 1000
    } else {
        secs
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days to civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The magnet link of a torrent: info-hash, name and trackers.
pub fn magnet_of(m: &Metainfo<'_>) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail.
    let _ = btcore_core::magnet::write_magnet(&mut s, &m.info_hash(), Some(m.name()), m.trackers());
    // BEP 52: the v2 info-hash as a SHA-256 multihash, in place of the v1 one for a
    // v2-only torrent and beside it for a hybrid.
    if let Some(h2) = m.info_hash_v2() {
        let btih = format!("xt=urn:btih:{}", m.info_hash());
        let btmh = format!("xt=urn:btmh:1220{}", hex(&h2));
        s = if m.is_v2_only() {
            s.replacen(&btih, &btmh, 1)
        } else {
            s.replacen(&btih, &format!("{btih}&{btmh}"), 1)
        };
    }
    s
}

/// The torrent as one JSON object.
pub fn torrent_json(m: &Metainfo<'_>) -> Result<Value, btcore_core::metainfo::MetainfoError> {
    let files: Vec<Value> = m
        .layout()?
        .into_iter()
        .map(|f| {
            let mut o = json!({ "path": f.path, "length": f.length, "offset": f.offset });
            if f.attr.pad {
                o["pad"] = json!(true);
            }
            if f.attr.executable {
                o["executable"] = json!(true);
            }
            if f.attr.hidden {
                o["hidden"] = json!(true);
            }
            if let Some(t) = f.symlink_target {
                o["symlink_target"] = json!(t);
            }
            o
        })
        .collect();
    let tiers: Vec<Vec<String>> = m
        .announce_tiers()
        .map(|t| t.map(text).collect::<Vec<_>>())
        .filter(|t| !t.is_empty())
        .collect();
    let mut o = json!({
        "info_hash": m.info_hash().to_string(),
        "name": text(m.name()),
        "total_size": m.total_size(),
        "piece_length": m.piece_length(),
        "num_pieces": m.num_pieces(),
        "num_files": m.num_files(),
        "private": m.is_private(),
        "hybrid": m.is_hybrid(),
        "announce": m.announce().map(text),
        "announce_list": tiers,
        "trackers": m.trackers().map(text).collect::<Vec<_>>(),
        "url_list": m.url_list().map(text).collect::<Vec<_>>(),
        "creation_date": m.creation_date(),
        "comment": m.comment().map(text),
        "created_by": m.created_by().map(text),
        "magnet": magnet_of(m),
        "files": files,
    });
    add_v2_json(m, &mut o)?;
    Ok(o)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// BEP 52 fields: the meta version, both info-hashes, and the v2 file tree with each
/// file's `pieces root` and the number of hashes of its piece layer.
fn add_v2_json(
    m: &Metainfo<'_>,
    o: &mut Value,
) -> Result<(), btcore_core::metainfo::MetainfoError> {
    o["meta_version"] = json!(if m.info_hash_v2().is_some() { 2 } else { 1 });
    o["v2_only"] = json!(m.is_v2_only());
    o["info_hash_v1"] = json!(m.info_hash_v1().map(|h| h.to_string()));
    o["info_hash_v2"] = json!(m.info_hash_v2().map(|h| hex(&h)));
    o["info_hash_v2_truncated"] = json!(m.info_hash_v2_truncated().map(|h| h.to_string()));
    let Some(tree) = m.tree_files() else {
        return Ok(());
    };
    let layout = m.layout()?;
    let paths = layout
        .iter()
        .filter(|f| !f.attr.pad)
        .map(|f| f.path.clone());
    let files: Vec<Value> = tree
        .filter(|f| !f.attr.pad)
        .zip(paths)
        .map(|(f, path)| {
            let root = f.pieces_root();
            let layer = root.and_then(|r| m.piece_layer(r)).map(|l| l.len() / 32);
            json!({
                "path": path,
                "length": f.length,
                "offset": f.offset,
                "pieces_root": root.map(|r| hex(r)),
                "piece_layer_hashes": layer,
            })
        })
        .collect();
    o["file_tree"] = json!(files);
    o["piece_layers"] = json!(m.num_piece_layers());
    Ok(())
}

/// The torrent for a person.
pub fn torrent_text(
    m: &Metainfo<'_>,
    file: &str,
) -> Result<String, btcore_core::metainfo::MetainfoError> {
    let layout = m.layout()?;
    let mut s = String::new();
    let _ = writeln!(s, "Name: {}", text(m.name()));
    let _ = writeln!(s, "File: {file}\n\nGENERAL\n");
    let _ = writeln!(s, "  Name: {}", text(m.name()));
    let _ = writeln!(s, "  Hash: {}", m.info_hash());
    if let Some(c) = m.created_by() {
        let _ = writeln!(s, "  Created by: {}", text(c));
    }
    if let Some(d) = m.creation_date() {
        let _ = writeln!(s, "  Created on: {}", utc(d));
    }
    if let Some(c) = m.comment() {
        let _ = writeln!(s, "  Comment: {}", text(c));
    }
    let _ = writeln!(s, "  Piece Count: {}", m.num_pieces());
    let _ = writeln!(
        s,
        "  Piece Size: {}",
        human_size(u64::from(m.piece_length()))
    );
    let _ = writeln!(s, "  Total Size: {}", human_size(m.total_size()));
    let privacy = if m.is_private() { "Private" } else { "Public" };
    let _ = writeln!(s, "  Privacy: {privacy} torrent");
    if m.is_hybrid() {
        let _ = writeln!(s, "  Format: hybrid v1+v2 (BEP 52)");
    } else if m.is_v2_only() {
        let _ = writeln!(s, "  Format: v2 only (BEP 52)");
    }
    if let Some(h) = m.info_hash_v2() {
        let _ = writeln!(s, "  Hash v2: {}", hex(&h));
    }
    let _ = writeln!(s, "\nTRACKERS");
    let mut any = false;
    for (i, tier) in m.announce_tiers().enumerate() {
        let _ = writeln!(s, "\n  Tier #{}", i + 1);
        for url in tier {
            let _ = writeln!(s, "  {}", text(url));
            any = true;
        }
    }
    if !any {
        if let Some(a) = m.announce() {
            let _ = writeln!(s, "\n  {}", text(a));
        }
    }
    let seeds: Vec<_> = m.url_list().collect();
    if !seeds.is_empty() {
        let _ = writeln!(s, "\nWEBSEEDS\n");
        for u in seeds {
            let _ = writeln!(s, "  {}", text(u));
        }
    }
    let _ = writeln!(s, "\nFILES\n");
    for f in layout.iter().filter(|f| !f.attr.pad) {
        let _ = writeln!(s, "  {} ({})", f.path, human_size(f.length));
    }
    Ok(s)
}

/// A parsed magnet link as one JSON object.
pub fn magnet_json(m: &Magnet<'_>) -> Value {
    let decode = |raw: &[u8]| -> String {
        let bytes: Vec<u8> = btcore_core::magnet::percent_decode(raw)
            .map_while(Result::ok)
            .collect();
        text(&bytes)
    };
    let name = m
        .name()
        .map(|n| text(&n.map_while(Result::ok).collect::<Vec<u8>>()));
    json!({
        "info_hash": m.info_hash().to_string(),
        "name": name,
        "trackers": m.trackers().iter().map(|t| decode(t)).collect::<Vec<_>>(),
        "web_seeds": m.web_seeds().iter().map(|t| decode(t)).collect::<Vec<_>>(),
        "peers": m.peers().map(|p| p.to_string()).collect::<Vec<_>>(),
        "truncated": m.is_truncated(),
        "v2_hash_present": m.has_btmh(),
        "info_hash_v1": m.info_hash_v1().map(|h| h.to_string()),
        "info_hash_v2": m.info_hash_v2().map(|h| hex(&h)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_sizes() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_452_468_725_091), "2016-01-10 23:32:05 UTC");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.50 KiB");
        assert_eq!(human_size(5 << 30), "5.00 GiB");
    }
}
