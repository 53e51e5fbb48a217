//! The HTTP(S) side of BEP 19 web seeds: performs the session's
//! [`Action::WebSeedRequest`](btcore_core::session::Action::WebSeedRequest)s.
//!
//! Each request runs on a thread of its own, with `ureq` (the HTTP client the
//! trackers use; HTTPS with the `https` feature): the session bounds how many run
//! (web seeds per torrent × requests per web seed), and a blocking client on a thread
//! needs no second HTTP/TLS stack on the event loop. The bytes come back through a
//! bounded channel in chunks of at most [`CHUNK`] bytes and the loop's waker; the loop
//! takes a chunk only while the disk is not behind and the download rate limits have
//! room, so a full channel holds the thread (and TCP the server) back: web seed bytes
//! count against the rate limits and the disk queue as peers' bytes do.
//!
//! Each range is one `GET` with `Range: bytes=a-b`:
//!
//! - `206` with a `Content-Range` that starts where asked: the body is read up to the
//!   bytes asked and no further (a server that sends fewer is asked again for the
//!   rest, on the same connection);
//! - `200` (the server ignores `Range`): taken only for a range that starts at the
//!   file's first byte, read up to the bytes asked, and the connection is then closed;
//! - `301`, `302`, `303`, `307`, `308`: followed, at most [`MAX_REDIRECTS`] per
//!   range, `http://` and `https://` only;
//! - `429` and `503`: a failure with the server's `Retry-After` (seconds), which the
//!   session honours;
//! - anything else fails the request, which the session retries with backoff.
//!
//! Connections are kept alive between ranges and requests (`ureq`'s pool, a few per
//! host). Deadlines: 10 s to connect, 20 s for the response's head, 20 s for each read
//! of the body; the session fails a request that sent nothing for longer still.
//!
//! A web seed URL comes from a torrent, a stranger's file. As libtorrent's
//! `ssrf_mitigation` does for web seeds, a URL (or a redirect) with a query string
//! is refused when its host is, or resolves to, a local address
//! ([`crate::tracker::is_local_address`]), and a redirect from a public host to a
//! local one is refused: a torrent cannot make btcore send a GET with parameters to a
//! router's admin page. A path to a local web seed (the common case of a LAN mirror)
//! is allowed. The host is resolved once per hop, for the check, and the request
//! connects to the addresses checked and no other (pinned, as trackers' are): a name
//! that resolves to a public address for the check and to a local one a moment later
//! (DNS rebinding) cannot send the request inside.

use crate::tracker::Pin;
use btcore_core::session::{TorrentId, WebSeedId, WebSeedRange};
use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// The most bytes of one chunk handed to the loop.
pub const CHUNK: usize = 64 << 10;
/// Chunks waiting for the loop, over all requests (1 MiB with [`CHUNK`]).
pub const CHANNEL: usize = 16;
/// The most redirects followed for one range.
pub const MAX_REDIRECTS: u32 = 5;
/// Time to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the response's head, and for each read of its body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// A partly filled chunk waits at most this long before it is handed on.
pub const HANDOFF: Duration = Duration::from_secs(1);
/// The longest `Retry-After` taken (the session caps it too).
const MAX_RETRY_AFTER_SECS: u64 = 3600;

/// What a request thread reports.
#[derive(Debug)]
pub enum WebMsg {
    /// The next bytes of the request, in order.
    Data {
        /// The torrent.
        torrent: TorrentId,
        /// The web seed.
        seed: WebSeedId,
        /// The request.
        req: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The request ended: `Ok` when every byte was sent, else why not and the
    /// server's `Retry-After`.
    End {
        /// The torrent.
        torrent: TorrentId,
        /// The web seed.
        seed: WebSeedId,
        /// The request.
        req: u64,
        /// How it went.
        result: Result<(), (String, Option<Duration>)>,
    },
}

/// The web seed HTTP client: an agent shared by the request threads (its pool keeps
/// connections alive) and the channel back to the loop.
pub struct WebSeedClient {
    agent: ureq::Agent,
    /// For hops the SSRF rule checks: no pooled connections.
    strict: ureq::Agent,
    tx: SyncSender<WebMsg>,
    rx: Receiver<WebMsg>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for WebSeedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSeedClient").finish_non_exhaustive()
    }
}

impl WebSeedClient {
    /// A client whose threads call `wake` after each message.
    pub fn new(wake: Arc<dyn Fn() + Send + Sync>) -> Self {
        let user_agent = format!("btcore/{}", env!("CARGO_PKG_VERSION"));
        let config = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(READ_TIMEOUT))
            .timeout_per_read(Some(READ_TIMEOUT))
            .max_idle_connections(16)
            .max_idle_connections_per_host(4)
            .user_agent(user_agent.as_str())
            .proxy(ureq::Proxy::try_from_env())
            .build();
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL);
        // Hops the SSRF rule checks (a query string, or after a public hop) keep no
        // connection and take none from the pool: a pooled connection to a name is
        // reused whatever the name resolves to now, so it could carry a checked
        // request to the local address an earlier, unchecked request reached.
        let strict = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(READ_TIMEOUT))
            .timeout_per_read(Some(READ_TIMEOUT))
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .user_agent(user_agent.as_str())
            .proxy(ureq::Proxy::try_from_env())
            .build();
        Self {
            strict: crate::tracker::pinned_agent(strict),
            agent: crate::tracker::pinned_agent(config),
            tx,
            rx,
            wake,
        }
    }

    /// Starts a request; its [`Switches`] stop it (it then reports nothing more) or
    /// hold it between chunks.
    pub fn start(
        &self,
        torrent: TorrentId,
        seed: WebSeedId,
        req: u64,
        ranges: Vec<WebSeedRange>,
        switches: Arc<Switches>,
    ) {
        let job = Job {
            agent: self.agent.clone(),
            strict: self.strict.clone(),
            tx: self.tx.clone(),
            wake: self.wake.clone(),
            switches,
            torrent,
            seed,
            req,
        };
        let spawned = std::thread::Builder::new()
            .name("btcore-webseed".into())
            .spawn(move || job.run(&ranges));
        if let Err(e) = spawned {
            // No thread: the request fails at once (the session backs off).
            let _ = self.tx.try_send(WebMsg::End {
                torrent,
                seed,
                req,
                result: Err((format!("no thread: {e}"), None)),
            });
            (self.wake)();
        }
    }

    /// The next message, if any.
    pub fn try_recv(&self) -> Option<WebMsg> {
        self.rx.try_recv().ok()
    }
}

struct Job {
    agent: ureq::Agent,
    strict: ureq::Agent,
    tx: SyncSender<WebMsg>,
    wake: Arc<dyn Fn() + Send + Sync>,
    switches: Arc<Switches>,
    torrent: TorrentId,
    seed: WebSeedId,
    req: u64,
}

/// A request's switches, shared by the loop and the request's thread.
#[derive(Debug, Default)]
pub struct Switches {
    /// Stop: the session no longer wants the request.
    pub cancel: AtomicBool,
    /// Hold the next chunk back: the loop holds one of this request's, for its
    /// torrent's download limit.
    pub pause: AtomicBool,
}

/// Why a request stopped.
enum Stop {
    Cancelled,
    Failed(String, Option<Duration>),
}

impl Job {
    fn run(self, ranges: &[WebSeedRange]) {
        let result = ranges.iter().try_for_each(|r| self.range(r));
        let result = match result {
            Ok(()) => Ok(()),
            Err(Stop::Cancelled) => return,
            Err(Stop::Failed(e, retry)) => Err((e, retry)),
        };
        let end = WebMsg::End {
            torrent: self.torrent,
            seed: self.seed,
            req: self.req,
            result,
        };
        let _ = self.send(end);
    }

    /// Hands a message to the loop, waiting while the channel is full or the loop
    /// holds the request (its torrent's limit); an error once cancelled.
    fn send(&self, mut msg: WebMsg) -> Result<(), Stop> {
        loop {
            if self.switches.cancel.load(Ordering::Relaxed) {
                return Err(Stop::Cancelled);
            }
            if self.switches.pause.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            match self.tx.try_send(msg) {
                Ok(()) => {
                    (self.wake)();
                    return Ok(());
                }
                Err(TrySendError::Full(m)) => {
                    msg = m;
                    (self.wake)();
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Disconnected(_)) => return Err(Stop::Cancelled),
            }
        }
    }

    fn data(&self, bytes: Vec<u8>) -> Result<(), Stop> {
        self.send(WebMsg::Data {
            torrent: self.torrent,
            seed: self.seed,
            req: self.req,
            bytes,
        })
    }

    /// One range: zeros for a pad file, else GETs until every byte came.
    fn range(&self, r: &WebSeedRange) -> Result<(), Stop> {
        let Some(url) = &r.url else {
            let mut left = r.len;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                self.data(vec![0; n])?;
                left -= n as u64;
            }
            return Ok(());
        };
        let mut done = 0u64;
        while done < r.len {
            let got = self.get(url, r.offset + done, r.len - done)?;
            if got == 0 {
                return Err(Stop::Failed("the server sent no bytes".into(), None));
            }
            done += got;
        }
        Ok(())
    }

    /// One GET of `len` bytes at `offset` of `url`, redirects followed: returns the
    /// bytes handed on (fewer than asked when the server sent a shorter range).
    fn get(&self, url: &str, offset: u64, len: u64) -> Result<u64, Stop> {
        let fail = |e: String| Stop::Failed(e, None);
        let mut url = url.to_owned();
        let mut public = None;
        for _ in 0..=MAX_REDIRECTS {
            let uri: ureq::http::Uri = url.parse().map_err(|_| fail(format!("bad URL {url}")))?;
            let checked = uri.query().is_some() || public == Some(true);
            let pin = check_url(&uri, public)?;
            public = Some(pin.is_public());
            let range = format!("bytes={}-{}", offset, offset + len - 1);
            let resp = crate::tracker::with_pin(&pin, || {
                let agent = if checked { &self.strict } else { &self.agent };
                agent.get(&url).header("Range", &range).call()
            })
            .map_err(|e| fail(e.to_string()))?;
            let status = resp.status().as_u16();
            let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok());
            match status {
                301 | 302 | 303 | 307 | 308 => {
                    let loc = header("location")
                        .ok_or_else(|| fail(format!("HTTP {status} without a location")))?;
                    url = crate::tracker::redirect_target(&uri, loc).map_err(fail)?;
                    continue;
                }
                206 => {
                    let (start, end) = header("content-range")
                        .and_then(content_range)
                        .ok_or_else(|| fail("206 without a usable Content-Range".into()))?;
                    if start != offset || end < start {
                        return Err(fail(format!(
                            "asked bytes {offset}-{}, got {start}-{end}",
                            offset + len - 1
                        )));
                    }
                    // `end >= start` (checked above); a lying `end` of u64::MAX
                    // saturates instead of overflowing.
                    let sent = (end - start).saturating_add(1);
                    let want = sent.min(len);
                    return self.body(resp.into_body().into_reader(), want, want == sent);
                }
                200 if offset == 0 => {
                    return self.body(resp.into_body().into_reader(), len, false);
                }
                200 => return Err(fail("the server ignores Range requests".into())),
                429 | 503 => {
                    let retry = header("retry-after")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(MAX_RETRY_AFTER_SECS)));
                    return Err(Stop::Failed(format!("HTTP {status}"), retry));
                }
                _ => return Err(fail(format!("HTTP {status}"))),
            }
        }
        Err(fail(format!("more than {MAX_REDIRECTS} redirects")))
    }

    /// Reads `want` bytes of a body in chunks, never more: when `want` is the whole
    /// body, the read that finds its end returns the connection to the pool (kept
    /// alive); otherwise the rest stays unread and the connection is closed.
    fn body(&self, mut reader: impl Read, want: u64, whole: bool) -> Result<u64, Stop> {
        let mut got = 0u64;
        while got < want {
            let mut buf = vec![0u8; (want - got).min(CHUNK as u64) as usize];
            let mut n = 0;
            // A chunk is handed on when full, or a second after it started: a server
            // that trickles is seen by the session (its watchdog counts what arrives),
            // so a request it gave up on is never one still running here.
            let started = std::time::Instant::now();
            while n < buf.len() {
                match reader.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Stop::Failed(e.to_string(), None)),
                }
                if self.switches.cancel.load(Ordering::Relaxed) {
                    return Err(Stop::Cancelled);
                }
                if n > 0 && started.elapsed() >= HANDOFF {
                    break;
                }
            }
            if n == 0 {
                // The body ended early: what came is handed on, the caller asks again.
                return Ok(got);
            }
            buf.truncate(n);
            got += n as u64;
            self.data(buf)?;
        }
        if whole {
            // The end of the body (nothing more by its length): the connection goes
            // back to the pool.
            let _ = reader.read(&mut [0u8; 1]);
        }
        Ok(got)
    }
}

/// `bytes a-b/total` (or `/*`) into `(a, b)`.
fn content_range(v: &str) -> Option<(u64, u64)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, _total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// The SSRF rule (see the module docs), the host resolved once: the addresses the
/// request may connect to, pinned for it. `from_public` is whether the hop before was
/// public (`None` for the first).
fn check_url(uri: &ureq::http::Uri, from_public: Option<bool>) -> Result<Pin, Stop> {
    let fail = |e: &str| Stop::Failed(e.to_owned(), None);
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
        _ => return Err(fail("not an http:// or https:// URL")),
    }
    let host = crate::tracker::uri_host(uri).ok_or_else(|| fail("URL without a host"))?;
    let port = crate::tracker::uri_port(uri).ok_or_else(|| fail("URL without a port"))?;
    let found: Vec<SocketAddr> = match crate::tracker::host_literal(host).map_err(|e| fail(&e))? {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => (host, port)
            .to_socket_addrs()
            .map_err(|e| fail(&format!("cannot resolve {host}: {e}")))?
            .take(16)
            .collect(),
    };
    let local = |a: &SocketAddr| crate::tracker::is_local_address(a.ip());
    let query = uri.query().is_some();
    let strict = query || from_public == Some(true);
    let addrs: Vec<SocketAddr> = found
        .iter()
        .filter(|a| !strict || !local(a))
        .copied()
        .collect();
    if addrs.is_empty() {
        return Err(fail(if found.is_empty() {
            "the host resolves to no address"
        } else if query {
            "a local web seed URL with a query string is refused"
        } else {
            "a redirect from a public host to a local one is refused"
        }));
    }
    let public = addrs.iter().any(|a| !local(a));
    Ok(Pin::new(host, port, addrs, public))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(content_range("bytes 0-99/1000"), Some((0, 99)));
        assert_eq!(content_range("bytes 5-9/*"), Some((5, 9)));
        assert_eq!(content_range("bytes */1000"), None);
        assert_eq!(content_range("items 0-1/2"), None);
    }

    #[test]
    fn ssrf_rule() {
        let u = |s: &str| s.parse::<ureq::http::Uri>().expect("uri");
        assert!(check_url(&u("http://127.0.0.1:8/a/b"), None).is_ok_and(|p| !p.is_public()));
        assert!(check_url(&u("http://127.0.0.1:8/a?x=1"), None).is_err());
        assert!(check_url(&u("http://192.168.1.1/a"), Some(true)).is_err());
        assert!(check_url(&u("http://192.0.2.1/a?x=1"), None).is_ok_and(|p| p.is_public()));
        assert!(check_url(&u("ftp://192.0.2.1/a"), None).is_err());
        // A name that resolves to a local address (localhost) is checked as one.
        assert!(check_url(&u("http://localhost:8/a?x=1"), None).is_err());
        assert!(check_url(&u("http://localhost:8/a"), Some(true)).is_err());
    }

    /// The client's requests connect to the addresses checked for them and nowhere
    /// else: a name is "resolved" to the pinned address (here a name no resolver knows),
    /// and a host the pin is not for is refused, not looked up.
    #[test]
    fn requests_reach_the_pinned_addresses_only() {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut buf = [0u8; 2048];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        });
        let client = WebSeedClient::new(Arc::new(|| {}));
        let pin = Pin::new("seed.invalid", addr.port(), vec![addr], false);
        let url = format!("http://seed.invalid:{}/f", addr.port());
        let resp = crate::tracker::with_pin(&pin, || client.agent.get(&url).call());
        assert_eq!(resp.expect("pinned request").status().as_u16(), 200);
        server.join().expect("server");
        let other = format!("http://other.invalid:{}/f", addr.port());
        let err = crate::tracker::with_pin(&pin, || client.agent.get(&other).call())
            .expect_err("a host the pin is not for");
        assert!(err.to_string().contains("not checked"), "{err}");
    }
}
