//! The daemon's web page, served on the RPC's port beside `/transmission/rpc`.
//!
//! Two sources: the page built into the binary (feature `web`: the files of `cli/web/`,
//! gzip-compressed at build time by `build.rs`, kept compressed only), or a folder
//! given with `--web-root` (another front-end, such as Transmission's own web client,
//! read from disk at each request). The page talks to the daemon only through the RPC.
//!
//! Paths: `/` is the page's `index.html`; `/transmission/web/` is the same root, the
//! path Transmission's front-ends expect (they reach the RPC as `../rpc`), so with
//! `--web-root` `/` redirects there. A folder's paths are percent-decoded, refused
//! when a component is `.`, `..` or hidden (starts with `.`), resolved with
//! symlinks and refused unless the result lies inside the folder; a file larger than
//! [`MAX_FILE`] is refused (403), and one that would take the answers queued over all
//! connections past their budget (`HttpLimits::max_page_queued`) is answered 503, so
//! many clients asking for big files at once cannot make the daemon hold them all.
//!
//! Caching: every answer has an ETag (built-in: a hash of the file; folder: its size
//! and modification time) and `Cache-Control: no-cache`, so a browser revalidates and
//! gets a 304 without a body when nothing changed. The built-in files exist only
//! compressed: they are sent with `Content-Encoding: gzip` to a client that accepts it
//! or says nothing about encodings (RFC 9110 section 12.5.3), and a client that
//! refuses gzip gets 406.

use std::path::{Component, Path, PathBuf};

#[cfg(feature = "web")]
mod assets {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// Largest file served from `--web-root`.
pub const MAX_FILE: u64 = 8 << 20;
/// Where Transmission's front-ends live.
const TR_WEB: &str = "/transmission/web";

/// Where the page comes from.
#[derive(Clone, Debug)]
pub enum Web {
    /// No page: every path but the RPC's is 404.
    Off,
    /// The page built into the binary.
    Builtin,
    /// Files of this folder (canonical path).
    Dir(PathBuf),
}

impl Web {
    /// The default: the built-in page when the binary has one.
    pub fn default_source() -> Self {
        if cfg!(feature = "web") {
            Web::Builtin
        } else {
            Web::Off
        }
    }

    /// A `--web-root` folder (it must exist).
    pub fn dir(root: &Path) -> Result<Self, String> {
        let c = root
            .canonicalize()
            .map_err(|e| format!("--web-root {}: {e}", root.display()))?;
        if !c.is_dir() {
            return Err(format!("--web-root {}: not a folder", root.display()));
        }
        Ok(Web::Dir(c))
    }

    /// Whether `path` (without its query) is the page's rather than the RPC's.
    pub fn serves(&self, path: &str) -> bool {
        !matches!(self, Web::Off) && path.starts_with('/')
    }

    /// The whole response to a GET or HEAD of `path`, given the request's
    /// `Accept-Encoding` and `If-None-Match` headers; a file from a folder larger
    /// than `budget` bytes is answered 503.
    pub fn respond(
        &self,
        head_only: bool,
        path: &str,
        accept_encoding: Option<&[u8]>,
        if_none_match: Option<&[u8]>,
        budget: usize,
    ) -> Vec<u8> {
        let rel = if path == TR_WEB {
            return redirect(&format!("{TR_WEB}/"));
        } else if let Some(r) = path.strip_prefix(TR_WEB).and_then(|r| r.strip_prefix('/')) {
            r
        } else if path == "/" && matches!(self, Web::Dir(_)) {
            return redirect(&format!("{TR_WEB}/"));
        } else {
            &path[1..]
        };
        match self {
            Web::Off => error(404, "Not Found"),
            Web::Builtin => builtin(head_only, rel, if_none_match, accept_encoding),
            Web::Dir(root) => from_dir(root, head_only, rel, if_none_match, budget),
        }
    }
}

/// The compressed size of the built-in page (0 without it).
pub fn compressed_size() -> usize {
    #[cfg(feature = "web")]
    return assets::COMPRESSED_SIZE;
    #[cfg(not(feature = "web"))]
    0
}

#[cfg(feature = "web")]
fn builtin(
    head_only: bool,
    rel: &str,
    etag_given: Option<&[u8]>,
    accept: Option<&[u8]>,
) -> Vec<u8> {
    let rel = if rel.is_empty() { "index.html" } else { rel };
    let Some((_, ctype, etag, gz)) = assets::ASSETS.iter().find(|a| a.0 == rel) else {
        return error(404, "Not Found");
    };
    if etag_given.is_some_and(|g| etag_matches(g, etag)) {
        return not_modified(etag);
    }
    if accept.is_some_and(|a| !accepts_gzip(a)) {
        return error(406, "Not Acceptable");
    }
    let mut headers = vec![
        ("Content-Type", *ctype),
        ("Content-Encoding", "gzip"),
        ("Vary", "Accept-Encoding"),
        ("ETag", *etag),
        (
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
             object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        ),
    ];
    headers.extend(COMMON);
    ok(&headers, gz, head_only)
}

#[cfg(not(feature = "web"))]
fn builtin(_: bool, _: &str, _: Option<&[u8]>, _: Option<&[u8]>) -> Vec<u8> {
    error(404, "Not Found")
}

/// Headers of every page answer.
const COMMON: [(&str, &str); 3] = [
    ("Cache-Control", "no-cache"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
];

fn from_dir(
    root: &Path,
    head_only: bool,
    rel: &str,
    etag_given: Option<&[u8]>,
    budget: usize,
) -> Vec<u8> {
    let Some(file) = confine(root, rel) else {
        return error(404, "Not Found");
    };
    let meta = match std::fs::metadata(&file) {
        Ok(m) if m.is_file() => m,
        _ => return error(404, "Not Found"),
    };
    if meta.len() > MAX_FILE {
        return error(403, "Forbidden");
    }
    if !head_only && meta.len() > budget as u64 {
        return error_with(503, "Service Unavailable", &[("Retry-After", "1")]);
    }
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let etag = format!("\"{:x}-{mtime:x}\"", meta.len());
    if etag_given.is_some_and(|g| etag_matches(g, &etag)) {
        return not_modified(&etag);
    }
    let body = if head_only {
        Vec::new()
    } else {
        use std::io::Read;
        let mut body = Vec::new();
        let read = std::fs::File::open(&file).and_then(|f| f.take(MAX_FILE).read_to_end(&mut body));
        if read.is_err() {
            return error(404, "Not Found");
        }
        body
    };
    let mut headers = vec![
        ("Content-Type", content_type(&file)),
        ("ETag", etag.as_str()),
    ];
    headers.extend(COMMON);
    let mut r = head(
        200,
        "OK",
        &headers,
        if head_only {
            meta.len() as usize
        } else {
            body.len()
        },
    );
    r.extend_from_slice(&body);
    r
}

/// The file `rel` names under `root`, or None when it would leave `root` (by `..`, an
/// absolute path or a symlink), names a hidden file, or is not valid UTF-8 once
/// decoded. A folder stands for its `index.html`.
fn confine(root: &Path, rel: &str) -> Option<PathBuf> {
    let rel = percent_decode(rel)?;
    if rel.contains('\0') || rel.contains('\\') {
        return None;
    }
    let mut p = root.to_path_buf();
    for part in rel.split('/').filter(|s| !s.is_empty()) {
        let comp = Path::new(part).components().next();
        if part.starts_with('.') || !matches!(comp, Some(Component::Normal(_))) {
            return None;
        }
        p.push(part);
    }
    if p.is_dir() {
        p.push("index.html");
    }
    let real = p.canonicalize().ok()?;
    real.starts_with(root).then_some(real)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn content_type(p: &Path) -> &'static str {
    let ext = p
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=UTF-8",
        "css" => "text/css; charset=UTF-8",
        "js" | "mjs" => "text/javascript; charset=UTF-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "gif" => "image/gif",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=UTF-8",
        _ => "application/octet-stream",
    }
}

#[cfg(feature = "web")]
/// Whether an `Accept-Encoding` value allows gzip (`gzip`, `x-gzip` or `*`, with no
/// `q=0`).
fn accepts_gzip(v: &[u8]) -> bool {
    let Ok(v) = std::str::from_utf8(v) else {
        return false;
    };
    let mut star = None;
    for item in v.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let zero = parts.any(|p| {
            let p = p.trim().replace(' ', "");
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        match name.as_str() {
            "gzip" | "x-gzip" => return !zero,
            "*" => star = Some(!zero),
            _ => {}
        }
    }
    star.unwrap_or(false)
}

/// Whether an `If-None-Match` value names `etag` (or is `*`).
fn etag_matches(given: &[u8], etag: &str) -> bool {
    std::str::from_utf8(given).is_ok_and(|g| {
        g.split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == etag || t == "*")
    })
}

fn head(code: u16, reason: &str, headers: &[(&str, &str)], len: usize) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {code} {reason}\r\nServer: btcore\r\n");
    for (k, v) in headers {
        r += &format!("{k}: {v}\r\n");
    }
    r += &format!("Content-Length: {len}\r\n\r\n");
    r.into_bytes()
}

#[cfg(feature = "web")]
fn ok(headers: &[(&str, &str)], body: &[u8], head_only: bool) -> Vec<u8> {
    let mut r = head(200, "OK", headers, body.len());
    if !head_only {
        r.extend_from_slice(body);
    }
    r
}

fn not_modified(etag: &str) -> Vec<u8> {
    let mut headers = vec![("ETag", etag)];
    headers.extend(COMMON);
    let mut r = String::from("HTTP/1.1 304 Not Modified\r\nServer: btcore\r\n");
    for (k, v) in headers {
        r += &format!("{k}: {v}\r\n");
    }
    r += "\r\n";
    r.into_bytes()
}

fn redirect(to: &str) -> Vec<u8> {
    head(301, "Moved Permanently", &[("Location", to)], 0)
}

fn error(code: u16, reason: &str) -> Vec<u8> {
    error_with(code, reason, &[])
}

fn error_with(code: u16, reason: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let body = format!("{code} {reason}\n");
    let mut headers = vec![
        ("Content-Type", "text/plain; charset=UTF-8"),
        ("X-Content-Type-Options", "nosniff"),
    ];
    headers.extend_from_slice(extra);
    let mut r = head(code, reason, &headers, body.len());
    r.extend_from_slice(body.as_bytes());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "web")]
    #[test]
    fn gzip_acceptance() {
        assert!(accepts_gzip(b"gzip, deflate, br"));
        assert!(accepts_gzip(b"br;q=1.0, gzip;q=0.8"));
        assert!(accepts_gzip(b"*"));
        assert!(!accepts_gzip(b"identity"));
        assert!(!accepts_gzip(b"gzip;q=0"));
        assert!(!accepts_gzip(b"*;q=0"));
    }

    #[test]
    fn etags() {
        assert!(etag_matches(b"\"ab\"", "\"ab\""));
        assert!(etag_matches(b"W/\"ab\", \"cd\"", "\"ab\""));
        assert!(etag_matches(b"*", "\"ab\""));
        assert!(!etag_matches(b"\"abc\"", "\"ab\""));
    }

    #[test]
    fn confined_to_the_root() {
        let dir = std::env::temp_dir().join(format!("btcore-web-confine-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("sub")).expect("test setup");
        std::fs::write(root.join("index.html"), "i").expect("test setup");
        std::fs::write(root.join("sub/a.js"), "a").expect("test setup");
        std::fs::write(root.join(".secret"), "s").expect("test setup");
        std::fs::write(dir.join("outside"), "o").expect("test setup");
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.join("outside"), root.join("link")).expect("test setup");
        let root = root.canonicalize().expect("test setup");
        assert_eq!(confine(&root, ""), Some(root.join("index.html")));
        assert_eq!(confine(&root, "sub/a.js"), Some(root.join("sub/a.js")));
        assert_eq!(confine(&root, "sub/%61.js"), Some(root.join("sub/a.js")));
        for bad in [
            "../outside",
            "sub/../../outside",
            "%2e%2e/outside",
            "..%2foutside",
            ".secret",
            "link",
            "sub/%00",
            "a%zz",
            "..\\outside",
        ] {
            assert_eq!(confine(&root, bad), None, "{bad}");
        }
        // Past the budget of queued answers: 503, and nothing read.
        let r = from_dir(&root, false, "sub/a.js", None, 0);
        assert!(r.starts_with(b"HTTP/1.1 503 "));
        assert!(String::from_utf8_lossy(&r).contains("Retry-After: 1\r\n"));
        let r = from_dir(&root, false, "sub/a.js", None, 1);
        assert!(r.starts_with(b"HTTP/1.1 200 ") && r.ends_with(b"\r\n\r\na"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
