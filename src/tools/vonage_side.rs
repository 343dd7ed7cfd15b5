//! Vonage's side of a call, simulated: what `voicegate simulate` and `voicegate loadtest` play
//! against a running server (vonage-protocol.md §1, §3, §4).
//!
//! - [`answer`] requests the answer URL with realistic webhook fields (GET query, §10.1) and
//!   finds the NCCO's websocket `connect` ([`MediaTarget`]).
//! - [`connect_media`] opens the media socket (plain `ws://`), sends `Authorization` when the
//!   endpoint asks for it (§1.2) and the `websocket:connected` message with the endpoint's
//!   `headers` flattened in (§1.3).
//! - [`Playback`] is Vonage's playback side: received frames go into a FIFO played at 20 ms per
//!   frame (3 072-frame cap), `clear` empties it (answered by `websocket:cleared`), `notify` is
//!   answered when playback reaches it, and a wrong-sized frame is a [`FrameViolation`] after
//!   which the socket is dropped without a close frame (1006), as Vonage does (§1.5).
//! - [`run_media`] drives one call: caller frames out at exactly 20 ms against absolute
//!   deadlines, server frames into the playback, latencies to a [`CallObserver`].
//! - [`EventPoster`] posts the event webhooks Vonage would (`started`, `answered`, `completed`,
//!   `disconnected`; §4, §10.3–§10.15), over its own connection or over an [`HttpPool`] shared
//!   by many simulated calls, as Vonage's webhook senders share theirs.
//!
//! Only plain `http://`/`ws://` are spoken (no TLS): the tool is for a server on this host.
//!
//! Not real-time: this is a test tool; [`run_media`] keeps its per-frame path cheap
//! (shared caller frames, no per-frame allocation besides what the WebSocket library does) so
//! that a thousand calls fit on one small runtime.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::core::SampleRate;
use crate::core::audio::FRAME;
use crate::vonage::ncco::{Action, Ncco, WebsocketAuthorization, WebsocketEndpoint};

/// Vonage's playback buffer: at most this many frames are queued (§1.5, about 60 s).
pub const PLAYBACK_CAP_FRAMES: usize = 3072;
/// A reply starts with the first frame after a silence longer than this (INTERFACE.md,
/// `frame_gap_ms`).
pub const REPLY_GAP: Duration = Duration::from_millis(200);
/// A played frame is audible when a sample exceeds this magnitude (about −40 dBFS peak).
pub const AUDIBLE_PEAK: u16 = 300;
/// Largest HTTP response body read from a webhook.
const MAX_HTTP_BODY: usize = 1 << 20;
/// Largest HTTP response head.
const MAX_HTTP_HEAD: usize = 16 * 1024;
/// One webhook request, connect to last byte.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Media socket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One send on the media socket; a server that stops reading fails the call.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong playing Vonage's side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VonageSideError {
    /// A URL this tool cannot use.
    #[error("bad URL {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: &'static str,
    },
    /// Socket I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An HTTP response that is not HTTP/1.1 as we know it.
    #[error("malformed HTTP response: {0}")]
    BadHttp(&'static str),
    /// A webhook answered with a status we treat as a failure.
    #[error("{what} returned HTTP {status}: {body}")]
    HttpStatus {
        /// Which webhook.
        what: &'static str,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// Timed out.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The answer webhook's body is not an NCCO.
    #[error("the answer is not a valid NCCO: {0}")]
    BadNcco(#[from] serde_json::Error),
    /// The NCCO has no `connect` to a websocket endpoint.
    #[error("the NCCO has no websocket connect (actions: {0})")]
    NoWebsocket(String),
    /// The endpoint's `content-type` is not L16 at 8, 16 or 24 kHz.
    #[error("unsupported content-type {0:?}")]
    BadContentType(String),
    /// The endpoint asks for `{"type":"vonage"}` authorization and no secret was given.
    #[error(
        "the NCCO asks for a Vonage-signed Authorization header (type \"vonage\"); pass \
         --signature-secret to mint one"
    )]
    NeedSignatureSecret,
    /// The WebSocket library failed.
    #[error("media socket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> VonageSideError {
    move |source| VonageSideError::Io { what, source }
}

// ------------------------------------------------------------------------------- ids and time

static ID_COUNTER: AtomicU64 = AtomicU64::new(0);

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fresh random (version 4) UUID, lowercase with dashes. Unique per process and time; not
/// cryptographic.
pub fn new_uuid() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = ID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed =
        nanos ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0xA24B_AED4_963E_E407);
    let a = splitmix(seed);
    let b = splitmix(a ^ n);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut s = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `t` as Vonage writes timestamps: ISO 8601 UTC with milliseconds, e.g.
/// `2025-03-14T10:15:31.482Z` (§4.1).
pub fn iso_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

// ------------------------------------------------------------------------------- URLs and HTTP

/// A parsed `http://` or `ws://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainUrl {
    /// `http` or `ws`.
    pub scheme: &'static str,
    /// Host as written (brackets kept for IPv6).
    pub host: String,
    /// Port (default 80).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl PlainUrl {
    /// Parses `url`; only `http://` and `ws://` are accepted (no TLS in this tool).
    pub fn parse(url: &str) -> Result<Self, VonageSideError> {
        let bad = |reason| VonageSideError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
            ("http", r)
        } else if let Some(r) = url.strip_prefix("ws://") {
            ("ws", r)
        } else if url.starts_with("https://") || url.starts_with("wss://") {
            return Err(bad(
                "TLS is not supported by the simulator; run the server locally over http://",
            ));
        } else {
            return Err(bad("expected http:// or ws://"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("missing host, or user info in the URL"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (h, p.parse::<u16>().map_err(|_| bad("bad port"))?),
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        Ok(Self {
            scheme,
            host: host.to_owned(),
            port,
            path,
        })
    }

    /// `host:port`, for connecting and for the `Host` header.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The same URL without its path: `http://host:port`.
    pub fn base(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.host, self.port)
    }

    /// Whether the host is this machine (loopback name or address).
    pub fn is_loopback(&self) -> bool {
        let h = self.host.trim_start_matches('[').trim_end_matches(']');
        h.eq_ignore_ascii_case("localhost")
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// One HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body (de-chunked), at most 1 MiB.
    pub body: Vec<u8>,
}

/// A minimal HTTP/1.1 client for one host, reusing one keep-alive connection (a call's
/// webhooks go over one connection, so thousands of calls do not exhaust ephemeral ports).
#[derive(Debug)]
pub struct HttpClient {
    authority: String,
    conn: Option<TcpStream>,
    buf: Vec<u8>,
}

impl HttpClient {
    /// A client for `host:port`; connects on the first request.
    pub fn new(authority: impl Into<String>) -> Self {
        Self {
            authority: authority.into(),
            conn: None,
            buf: Vec::new(),
        }
    }

    /// `method path` with an optional JSON body. A reused connection that fails before any
    /// response byte is retried once on a fresh one.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        json: Option<&[u8]>,
    ) -> Result<HttpResponse, VonageSideError> {
        let reused = self.conn.is_some();
        match tokio::time::timeout(HTTP_TIMEOUT, self.request_once(method, path, json)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) if reused => {
                self.conn = None;
                tokio::time::timeout(HTTP_TIMEOUT, self.request_once(method, path, json))
                    .await
                    .map_err(|_| VonageSideError::Timeout("webhook request"))?
            }
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(VonageSideError::Timeout("webhook request"))
            }
        }
    }

    async fn request_once(
        &mut self,
        method: &str,
        path: &str,
        json: Option<&[u8]>,
    ) -> Result<HttpResponse, VonageSideError> {
        if self.conn.is_none() {
            let s = TcpStream::connect(&self.authority)
                .await
                .map_err(io("connecting to the webhook server"))?;
            let _ = s.set_nodelay(true);
            self.conn = Some(s);
            self.buf.clear();
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(VonageSideError::BadHttp("no connection"));
        };
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: voicegate-simulate\r\nAccept: application/json\r\n",
            self.authority
        );
        if let Some(body) = json {
            let _ = write!(
                req,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        req.push_str("\r\n");
        let mut out = req.into_bytes();
        if let Some(body) = json {
            out.extend_from_slice(body);
        }
        conn.write_all(&out)
            .await
            .map_err(io("sending a webhook request"))?;
        let (res, close) = read_response(conn, &mut self.buf).await?;
        if close {
            self.conn = None;
        }
        Ok(res)
    }
}

/// Keep-alive connections to one host, shared by many simulated calls.
///
/// Vonage posts webhooks from shared infrastructure, not from one connection per call: the load
/// generator takes a connection for each request and puts it back afterwards, so the server
/// holds a few idle keep-alive connections in all (about as many as requests were in flight at
/// once), not two per active call (hyper keeps an 8 KiB read buffer and a task for each).
#[derive(Debug)]
pub struct HttpPool {
    authority: String,
    idle: std::sync::Mutex<Vec<HttpClient>>,
}

/// Idle connections an [`HttpPool`] keeps at most; more are closed when put back.
const POOL_MAX_IDLE: usize = 64;

impl HttpPool {
    /// A pool for `host:port`; connections are opened as requests need them.
    pub fn new(authority: impl Into<String>) -> Self {
        Self {
            authority: authority.into(),
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// An idle connection's client, or a new one (it connects on its first request).
    pub fn take(&self) -> HttpClient {
        self.idle
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_else(|| HttpClient::new(self.authority.clone()))
    }

    /// Puts `client` back for the next request, if its connection is still open.
    pub fn put_back(&self, client: HttpClient) {
        if client.conn.is_none() {
            return;
        }
        if let Ok(mut v) = self.idle.lock()
            && v.len() < POOL_MAX_IDLE
        {
            v.push(client);
        }
    }

    /// `method path` with an optional JSON body, over a pooled connection.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        json: Option<&[u8]>,
    ) -> Result<HttpResponse, VonageSideError> {
        let mut client = self.take();
        let res = client.request(method, path, json).await;
        self.put_back(client);
        res
    }
}

/// Reads one response from `conn`; `buf` holds bytes read past it (kept for the next one).
/// Returns the response and whether the server closes the connection.
async fn read_response(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<(HttpResponse, bool), VonageSideError> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HTTP_HEAD {
            return Err(VonageSideError::BadHttp("response head too long"));
        }
        fill(conn, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| VonageSideError::BadHttp("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or(VonageSideError::BadHttp("no status line"))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse::<usize>()
                    .map_err(|_| VonageSideError::BadHttp("bad content-length"))?,
            );
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.to_ascii_lowercase().contains("chunked");
        } else if k.eq_ignore_ascii_case("connection") {
            close = v.eq_ignore_ascii_case("close");
        }
    }
    buf.drain(..head_end + 4);
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                if buf.len() > MAX_HTTP_HEAD {
                    return Err(VonageSideError::BadHttp("chunk size line too long"));
                }
                fill(conn, buf).await?;
            };
            let size_text = std::str::from_utf8(&buf[..line_end])
                .map_err(|_| VonageSideError::BadHttp("bad chunk size"))?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| VonageSideError::BadHttp("bad chunk size"))?;
            // `body` never exceeds the cap, so this cannot wrap (`size` is the peer's number).
            if size > MAX_HTTP_BODY - body.len() {
                return Err(VonageSideError::BadHttp("response body too large"));
            }
            while buf.len() < line_end + 2 + size + 2 {
                fill(conn, buf).await?;
            }
            body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break body;
            }
        }
    } else if let Some(n) = length {
        if n > MAX_HTTP_BODY {
            return Err(VonageSideError::BadHttp("response body too large"));
        }
        while buf.len() < n {
            fill(conn, buf).await?;
        }
        buf.drain(..n).collect()
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else {
        // Delimited by the end of the connection.
        close = true;
        loop {
            if buf.len() > MAX_HTTP_BODY {
                return Err(VonageSideError::BadHttp("response body too large"));
            }
            let mut chunk = [0u8; 4096];
            let n = conn
                .read(&mut chunk)
                .await
                .map_err(io("reading a webhook response"))?;
            if n == 0 {
                break std::mem::take(buf);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    Ok((HttpResponse { status, body }, close))
}

async fn fill(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), VonageSideError> {
    let mut chunk = [0u8; 4096];
    let n = conn
        .read(&mut chunk)
        .await
        .map_err(io("reading a webhook response"))?;
    if n == 0 {
        return Err(VonageSideError::BadHttp("connection closed mid-response"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

// ------------------------------------------------------------------------------- the call

/// Who calls whom: the caller leg's identity, fresh per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallIdentity {
    /// The caller leg's `uuid`.
    pub uuid: String,
    /// `CON-` + UUID.
    pub conversation_uuid: String,
    /// The websocket leg's `uuid` (a leg of its own, §1).
    pub ws_uuid: String,
    /// Caller number (E.164 digits).
    pub from: String,
    /// Called number (our Vonage number).
    pub to: String,
}

impl CallIdentity {
    /// Fresh UUIDs, with the numbers of the protocol's test vectors (§10).
    pub fn fresh() -> Self {
        Self {
            uuid: new_uuid(),
            conversation_uuid: format!("CON-{}", new_uuid()),
            ws_uuid: new_uuid(),
            from: "447700900123".to_owned(),
            to: "447700900000".to_owned(),
        }
    }

    /// The answer webhook's query string, as Vonage sends it with `GET` (§3.2, §10.1).
    pub fn answer_query(&self) -> String {
        format!(
            "to={}&from={}&uuid={}&conversation_uuid={}&region_url={}&endpoint_type=phone",
            percent_encode(&self.to),
            percent_encode(&self.from),
            percent_encode(&self.uuid),
            percent_encode(&self.conversation_uuid),
            percent_encode("https://api-us-3.vonage.com"),
        )
    }
}

/// Where the NCCO sends the media, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaTarget {
    /// The whole NCCO as parsed.
    pub ncco: Ncco,
    /// The websocket endpoint of the first `connect` that has one.
    pub endpoint: WebsocketEndpoint,
    /// The negotiated rate (from `content-type`).
    pub rate: SampleRate,
    /// Where the websocket leg's events go: the `connect` action's `eventUrl`, if any.
    pub event_url: Option<String>,
}

/// Requests `GET {server}/answer?…` for `id` and finds the websocket `connect` in the NCCO.
pub async fn answer(
    http: &mut HttpClient,
    server: &PlainUrl,
    id: &CallIdentity,
) -> Result<MediaTarget, VonageSideError> {
    let base_path = server.path.trim_end_matches('/');
    let path = format!("{base_path}/answer?{}", id.answer_query());
    let res = http.request("GET", &path, None).await?;
    if res.status != 200 {
        return Err(VonageSideError::HttpStatus {
            what: "the answer webhook",
            status: res.status,
            body: String::from_utf8_lossy(&res.body[..res.body.len().min(200)]).into_owned(),
        });
    }
    media_target(serde_json::from_slice(&res.body)?)
}

/// The first websocket `connect` of `ncco`.
pub fn media_target(ncco: Ncco) -> Result<MediaTarget, VonageSideError> {
    let found = ncco.0.iter().find_map(|a| match a {
        Action::Connect(c) => match &c.endpoint {
            crate::vonage::ncco::Endpoint::Websocket(ws) => Some((
                ws.clone(),
                c.event_url.as_ref().and_then(|u| u.first().cloned()),
            )),
            _ => None,
        },
        _ => None,
    });
    let Some((endpoint, event_url)) = found else {
        let names: Vec<String> = serde_json::to_value(&ncco)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|a| a["action"].as_str().unwrap_or("?").to_owned())
            .collect();
        return Err(VonageSideError::NoWebsocket(names.join(", ")));
    };
    let rate = SampleRate::from_content_type(&endpoint.content_type)
        .filter(|r| r.is_call_rate())
        .ok_or_else(|| VonageSideError::BadContentType(endpoint.content_type.clone()))?;
    Ok(MediaTarget {
        ncco,
        endpoint,
        rate,
        event_url,
    })
}

/// The `websocket:connected` message for `endpoint`: `event`, `content-type`, then every key
/// of `headers` at the top level (§1.3, §10.21). Our own keys win a collision, as the server
/// must not rely on either.
pub fn connected_message(endpoint: &WebsocketEndpoint) -> String {
    let mut m = Map::new();
    for (k, v) in &endpoint.headers {
        m.insert(k.clone(), v.clone());
    }
    m.insert("event".into(), "websocket:connected".into());
    m.insert("content-type".into(), endpoint.content_type.clone().into());
    Value::Object(m).to_string()
}

/// Mints the HS256 JWT Vonage sends as `Authorization: Bearer …` for `{"type":"vonage"}`
/// (§1.2, claims of §5.2; `payload_hash` of an empty body for the `GET` upgrade).
pub fn mint_vonage_jwt(secret: &[u8], api_key: &str, application_id: Option<&str>) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let hash = Sha256::digest(b"");
    let mut payload_hash = String::with_capacity(64);
    for b in hash {
        let _ = write!(payload_hash, "{b:02x}");
    }
    let mut claims = json!({
        "iat": iat,
        "jti": new_uuid(),
        "iss": "Vonage",
        "payload_hash": payload_hash,
        "api_key": api_key,
    });
    if let Some(app) = application_id {
        claims["application_id"] = app.into();
    }
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{body}");
    // HMAC accepts keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return signing_input;
    };
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// How to fill the handshake's `Authorization` header when the NCCO asks for one.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// The account signature secret, to mint `{"type":"vonage"}` tokens.
    pub signature_secret: Option<String>,
    /// `api_key` claim.
    pub api_key: Option<String>,
    /// `application_id` claim.
    pub application_id: Option<String>,
}

/// The media socket, client side.
pub type MediaSocket = WebSocketStream<TcpStream>;

/// Opens the media socket of `target` (with `Authorization` when the endpoint asks for it) and
/// sends `websocket:connected`. Small WebSocket buffers: a thousand of these share one process.
pub async fn connect_media(
    target: &MediaTarget,
    auth: &AuthSettings,
) -> Result<MediaSocket, VonageSideError> {
    let url = PlainUrl::parse(&target.endpoint.uri)?;
    if url.scheme != "ws" {
        return Err(VonageSideError::BadUrl {
            url: target.endpoint.uri.clone(),
            reason: "the websocket uri must be ws://",
        });
    }
    let mut req = target.endpoint.uri.as_str().into_client_request()?;
    let value = match &target.endpoint.authorization {
        None => None,
        Some(WebsocketAuthorization::Custom { value }) => Some(value.clone()),
        Some(WebsocketAuthorization::Vonage) => {
            let secret = auth
                .signature_secret
                .as_deref()
                .ok_or(VonageSideError::NeedSignatureSecret)?;
            Some(format!(
                "Bearer {}",
                mint_vonage_jwt(
                    secret.as_bytes(),
                    auth.api_key.as_deref().unwrap_or("voicegate-simulate"),
                    auth.application_id.as_deref(),
                )
            ))
        }
    };
    if let Some(v) = value {
        let v = HeaderValue::from_str(&v).map_err(|_| VonageSideError::BadUrl {
            url: target.endpoint.uri.clone(),
            reason: "authorization value is not a valid header value",
        })?;
        req.headers_mut().insert("authorization", v);
    }
    let cfg = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024));
    let handshake = async {
        let tcp = TcpStream::connect(url.authority())
            .await
            .map_err(io("connecting the media socket"))?;
        let _ = tcp.set_nodelay(true);
        let (ws, _res) = tokio_tungstenite::client_async_with_config(req, tcp, Some(cfg)).await?;
        Ok::<_, VonageSideError>(ws)
    };
    let mut ws = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| VonageSideError::Timeout("media socket handshake"))??;
    ws.send(Message::text(connected_message(&target.endpoint)))
        .await?;
    Ok(ws)
}

// ------------------------------------------------------------------------------- events

/// Posts the event webhooks Vonage would for one call (§4.2): the caller leg's to the
/// application's event URL, the websocket leg's to the `connect` action's `eventUrl`.
#[derive(Debug)]
pub struct EventPoster {
    http: Webhooks,
    app_path: String,
    ws_url: Option<PlainUrl>,
    /// Requests that failed or returned a non-2xx status.
    pub failures: u32,
    /// NCCOs returned to events (a fallback after `disconnected`, for instance).
    pub nccos_returned: u32,
}

/// Which leg an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// The caller's phone leg.
    Caller,
    /// The websocket leg.
    Websocket,
}

/// The connection an [`EventPoster`] posts over.
#[derive(Debug)]
enum Webhooks {
    /// Its own keep-alive connection (one simulated call).
    Own(HttpClient),
    /// A connection from a pool shared with other calls (the load test).
    Pooled(Arc<HttpPool>),
}

impl Webhooks {
    fn authority(&self) -> &str {
        match self {
            Self::Own(c) => &c.authority,
            Self::Pooled(p) => &p.authority,
        }
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        json: Option<&[u8]>,
    ) -> Result<HttpResponse, VonageSideError> {
        match self {
            Self::Own(c) => c.request(method, path, json).await,
            Self::Pooled(p) => p.request(method, path, json).await,
        }
    }
}

impl EventPoster {
    /// Posts to `{server}/events` (both legs until [`Self::set_ws_event_url`]) over its own
    /// keep-alive connection.
    pub fn new(server: &PlainUrl) -> Self {
        Self::over(server, Webhooks::Own(HttpClient::new(server.authority())))
    }

    /// Posts to `{server}/events` over connections taken from `pool` (a pool for `server`'s
    /// host).
    pub fn pooled(server: &PlainUrl, pool: Arc<HttpPool>) -> Self {
        Self::over(server, Webhooks::Pooled(pool))
    }

    fn over(server: &PlainUrl, http: Webhooks) -> Self {
        Self {
            http,
            app_path: format!("{}/events", server.path.trim_end_matches('/')),
            ws_url: None,
            failures: 0,
            nccos_returned: 0,
        }
    }

    /// The websocket leg's events go to `url` (the NCCO's `eventUrl`) when it is plain http.
    pub fn set_ws_event_url(&mut self, url: Option<&str>) {
        self.ws_url = url.and_then(|u| PlainUrl::parse(u).ok());
    }

    /// The end of a call: the websocket leg's `ws_status` (`completed`, or `failed` when the
    /// socket never opened), then the caller leg's `completed`.
    pub async fn post_call_end(
        &mut self,
        id: &CallIdentity,
        target: &MediaTarget,
        ws_status: &str,
    ) {
        self.post(id, Some(target), Leg::Websocket, ws_status, Map::new())
            .await;
        self.post(id, None, Leg::Caller, "completed", Map::new())
            .await;
    }

    /// Posts one status event for `leg`; returns the response body if it was an NCCO.
    pub async fn post(
        &mut self,
        id: &CallIdentity,
        target: Option<&MediaTarget>,
        leg: Leg,
        status: &str,
        extra: Map<String, Value>,
    ) -> Option<Value> {
        let ts = iso_timestamp(SystemTime::now());
        let mut ev = match leg {
            Leg::Caller => json!({
                "from": id.from, "to": id.to, "uuid": id.uuid,
                "conversation_uuid": id.conversation_uuid, "status": status,
                "direction": "inbound", "timestamp": ts,
            }),
            Leg::Websocket => {
                let mut v = json!({
                    "from": id.from,
                    "to": target.map(|t| t.endpoint.uri.as_str()).unwrap_or(""),
                    "uuid": id.ws_uuid, "conversation_uuid": id.conversation_uuid,
                    "status": status, "direction": "outbound", "timestamp": ts,
                });
                if let Some(t) = target {
                    v["headers"] = Value::Object(t.endpoint.headers.clone());
                }
                v
            }
        };
        if let Value::Object(m) = &mut ev {
            m.extend(extra);
        }
        let body = ev.to_string();
        let (client, path) = match (&self.ws_url, leg) {
            (Some(u), Leg::Websocket) => {
                if self.http.authority() != u.authority() {
                    // Different host: a one-off client.
                    let mut c = HttpClient::new(u.authority());
                    let res = c.request("POST", &u.path, Some(body.as_bytes())).await;
                    return self.note(res);
                }
                (&mut self.http, u.path.clone())
            }
            _ => (&mut self.http, self.app_path.clone()),
        };
        let res = client.request("POST", &path, Some(body.as_bytes())).await;
        self.note(res)
    }

    fn note(&mut self, res: Result<HttpResponse, VonageSideError>) -> Option<Value> {
        match res {
            Ok(r) if (200..300).contains(&r.status) => {
                let v: Value = serde_json::from_slice(&r.body).ok()?;
                if v.is_array() {
                    self.nccos_returned += 1;
                    Some(v)
                } else {
                    None
                }
            }
            _ => {
                self.failures += 1;
                None
            }
        }
    }
}

// ------------------------------------------------------------------------------- playback

/// A binary message of the wrong size: Vonage drops the leg (§1.5, §9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unexpected frame size {len} bytes, when required {expected}: Vonage would drop the call")]
pub struct FrameViolation {
    /// Bytes received.
    pub len: usize,
    /// Bytes required at the socket's rate.
    pub expected: usize,
}

enum Item {
    Frame(Bytes),
    Notify(Value),
}

/// What the playback did, in time order.
#[derive(Debug, Clone, PartialEq)]
pub enum Played {
    /// A frame started playing at `start` (it plays for 20 ms).
    Frame {
        /// When it started.
        start: Instant,
        /// Its bytes.
        frame: Bytes,
    },
    /// Playback reached a `notify` marker: send `websocket:notify` with this payload.
    Notify(Value),
}

/// What one received frame was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Arrival {
    /// Lateness over the 20 ms cadence, `max(0, interarrival − 20 ms)`, when this frame is not
    /// the first of a reply (INTERFACE.md `frame_gap_ms`).
    pub gap: Option<Duration>,
    /// The playback buffer ran empty between this frame and the previous one of the same
    /// reply: the caller heard a gap.
    pub underrun: bool,
    /// The buffer was full (3 072 frames) and the frame was dropped.
    pub dropped: bool,
}

/// Reply to a text command.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandOutcome {
    /// `clear`: playback stopped and emptied; send `{"event":"websocket:cleared"}`.
    Cleared,
    /// `notify`: queued (or, with nothing queued, reached at once; see [`Played::Notify`]).
    Notify,
    /// Not a command Vonage knows (§1.6: the app must send only `clear` and `notify`).
    Unknown,
}

/// The `websocket:cleared` event.
pub const CLEARED_EVENT: &str = r#"{"event":"websocket:cleared"}"#;

/// Vonage's playback side of one socket: a FIFO of 20 ms frames (and `notify` markers) played
/// in order, one frame per 20 ms, capped at [`PLAYBACK_CAP_FRAMES`]. Time is passed in; the
/// playback advances lazily ([`Self::advance`]), so it needs no timer of its own.
pub struct Playback {
    frame_bytes: usize,
    cap: usize,
    queue: VecDeque<Item>,
    frames_queued: usize,
    /// End of the frame playing now; `None` when idle.
    slot_end: Option<Instant>,
    /// Playback ran dry (not by `clear`) since the last frame arrived.
    starved: bool,
    last_arrival: Option<Instant>,
}

impl std::fmt::Debug for Playback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playback")
            .field("frame_bytes", &self.frame_bytes)
            .field("frames_queued", &self.frames_queued)
            .field("playing", &self.slot_end.is_some())
            .finish()
    }
}

impl Playback {
    /// Playback of `rate` frames with Vonage's cap.
    pub fn new(rate: SampleRate) -> Self {
        Self::with_cap(rate, PLAYBACK_CAP_FRAMES)
    }

    /// Playback with a custom cap (tests).
    pub fn with_cap(rate: SampleRate, cap: usize) -> Self {
        Self {
            frame_bytes: rate.frame_bytes(),
            cap,
            queue: VecDeque::with_capacity(16),
            frames_queued: 0,
            slot_end: None,
            starved: false,
            last_arrival: None,
        }
    }

    /// Frames waiting (not counting the one playing).
    pub fn queued_frames(&self) -> usize {
        self.frames_queued
    }

    /// When playback reaches the first queued `notify` marker (the end of the frames queued
    /// before it), if one is queued: the caller should advance the playback then, so the
    /// `websocket:notify` goes out when the audio was played, as Vonage's does.
    pub fn next_notify_at(&self) -> Option<Instant> {
        let end = self.slot_end?;
        let mut frames = 0u32;
        for item in &self.queue {
            match item {
                Item::Notify(_) => return Some(end + FRAME * frames),
                Item::Frame(_) => frames += 1,
            }
        }
        None
    }

    /// Whether a frame is playing now or waiting.
    pub fn is_busy(&self) -> bool {
        self.slot_end.is_some() || self.frames_queued > 0
    }

    /// Plays everything due by `now`.
    pub fn advance(&mut self, now: Instant, out: &mut impl FnMut(Played)) {
        loop {
            let at = match self.slot_end {
                Some(e) if e > now => return,
                Some(e) => e,
                None => {
                    while matches!(self.queue.front(), Some(Item::Notify(_))) {
                        if let Some(Item::Notify(p)) = self.queue.pop_front() {
                            out(Played::Notify(p));
                        }
                    }
                    return;
                }
            };
            match self.queue.pop_front() {
                Some(Item::Notify(p)) => out(Played::Notify(p)),
                Some(Item::Frame(frame)) => {
                    self.frames_queued -= 1;
                    self.slot_end = Some(at + FRAME);
                    out(Played::Frame { start: at, frame });
                }
                None => {
                    self.slot_end = None;
                    self.starved = true;
                    return;
                }
            }
        }
    }

    /// One binary message from the app at `now`. A wrong size is a [`FrameViolation`]: the
    /// caller must drop the socket.
    pub fn on_binary(
        &mut self,
        now: Instant,
        frame: Bytes,
        out: &mut impl FnMut(Played),
    ) -> Result<Arrival, FrameViolation> {
        if frame.len() != self.frame_bytes {
            return Err(FrameViolation {
                len: frame.len(),
                expected: self.frame_bytes,
            });
        }
        self.advance(now, out);
        let mut a = Arrival::default();
        let same_reply = match self.last_arrival {
            Some(prev) => {
                let dt = now.saturating_duration_since(prev);
                if dt > REPLY_GAP {
                    false
                } else {
                    a.gap = Some(dt.saturating_sub(FRAME));
                    true
                }
            }
            None => false,
        };
        self.last_arrival = Some(now);
        if self.slot_end.is_none() {
            a.underrun = same_reply && self.starved;
            self.starved = false;
            self.slot_end = Some(now + FRAME);
            out(Played::Frame { start: now, frame });
        } else if self.frames_queued >= self.cap {
            a.dropped = true;
        } else {
            self.frames_queued += 1;
            self.queue.push_back(Item::Frame(frame));
        }
        Ok(a)
    }

    /// One text command from the app at `now`.
    pub fn on_text(
        &mut self,
        now: Instant,
        text: &str,
        out: &mut impl FnMut(Played),
    ) -> CommandOutcome {
        self.advance(now, out);
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return CommandOutcome::Unknown;
        };
        match v.get("action").and_then(Value::as_str) {
            Some("clear") => {
                self.queue.clear();
                self.frames_queued = 0;
                self.slot_end = None;
                self.starved = false;
                CommandOutcome::Cleared
            }
            Some("notify") => {
                let payload = v.get("payload").cloned().unwrap_or_else(|| json!({}));
                if self.is_busy() {
                    self.queue.push_back(Item::Notify(payload));
                } else {
                    out(Played::Notify(payload));
                }
                CommandOutcome::Notify
            }
            _ => CommandOutcome::Unknown,
        }
    }
}

/// The `websocket:notify` event for `payload`.
pub fn notify_event(payload: Value) -> String {
    json!({"event": "websocket:notify", "payload": payload}).to_string()
}

/// Whether a played L16 frame is audible (a sample above [`AUDIBLE_PEAK`]).
pub fn is_audible(frame: &[u8]) -> bool {
    frame
        .chunks_exact(2)
        .any(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs() > AUDIBLE_PEAK)
}

// ------------------------------------------------------------------------------- caller audio

/// Per-frame marks of the caller's speech, from an energy threshold.
pub mod mark {
    /// The frame starts a speech segment.
    pub const ONSET: u8 = 1;
    /// The frame ends a speech segment (its last loud frame).
    pub const END: u8 = 2;
    /// The frame is inside a speech segment.
    pub const SPEECH: u8 = 4;
}

/// What the caller says: exact 20 ms L16 frames at the socket rate, shared by every call, with
/// speech marks. Built once ([`CallerScript::new`]); frames are slices of one [`Bytes`].
#[derive(Debug, Clone)]
pub struct CallerScript {
    rate: SampleRate,
    audio: Bytes,
    marks: Arc<[u8]>,
    /// The script repeats (loadtest) instead of ending (simulate).
    pub looped: bool,
    /// The caller's phone returns what it plays: an echo of the bot mixed into the caller's
    /// audio (closed loop, so it stops when the bot stops, as on a real line).
    pub echo: Option<LineEcho>,
}

/// A caller-side echo path: what the caller hears comes back `delay` later, `gain_db` down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LineEcho {
    /// Bulk delay from playout to the echo arriving in the caller's audio.
    pub delay: Duration,
    /// Echo level relative to what was played, dB (negative).
    pub gain_db: f32,
}

impl LineEcho {
    /// Mixes the echo of `played` (a played frame) into `caller` (a caller frame), both L16.
    fn mix(&self, caller: &[u8], played: &[u8]) -> Bytes {
        let g = 10f32.powf(self.gain_db / 20.0);
        let out: Vec<u8> = caller
            .chunks_exact(2)
            .zip(played.chunks_exact(2))
            .flat_map(|(c, p)| {
                let c = f32::from(i16::from_le_bytes([c[0], c[1]]));
                let p = f32::from(i16::from_le_bytes([p[0], p[1]]));
                ((c + g * p).clamp(-32_768.0, 32_767.0) as i16).to_le_bytes()
            })
            .collect();
        Bytes::from(out)
    }
}

impl CallerScript {
    /// Frames of `samples` (mono, at `rate`), padded to whole frames, followed by `tail`
    /// of silence.
    pub fn new(rate: SampleRate, samples: &[i16], tail: Duration) -> Self {
        let n = rate.frame_samples();
        let tail_frames = (tail.as_millis() / u128::from(crate::core::audio::FRAME_MS)) as usize;
        let frames = samples.len().div_ceil(n) + tail_frames;
        let mut audio = Vec::with_capacity(frames * n * 2);
        for s in samples {
            audio.extend_from_slice(&s.to_le_bytes());
        }
        audio.resize(frames * n * 2, 0);
        let marks = speech_marks(&audio, n * 2);
        Self {
            rate,
            audio: Bytes::from(audio),
            marks: marks.into(),
            looped: false,
            echo: None,
        }
    }

    /// The same script on a line that echoes what the caller hears.
    pub fn with_echo(mut self, echo: LineEcho) -> Self {
        self.echo = Some(echo);
        self
    }

    /// The socket rate.
    pub fn rate(&self) -> SampleRate {
        self.rate
    }

    /// Frames in one pass.
    pub fn len(&self) -> usize {
        self.marks.len()
    }

    /// Whether the script has no frames.
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    /// Frame `i` (modulo the length when looped) and its marks; `None` past the end.
    pub fn frame(&self, i: usize) -> Option<(Bytes, u8)> {
        if self.marks.is_empty() {
            return None;
        }
        let i = if self.looped {
            i % self.marks.len()
        } else if i < self.marks.len() {
            i
        } else {
            return None;
        };
        let fb = self.rate.frame_bytes();
        Some((self.audio.slice(i * fb..(i + 1) * fb), self.marks[i]))
    }

    /// Speech segments of one pass, as frame ranges `[start, end]`.
    pub fn segments(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut start = None;
        for (i, &m) in self.marks.iter().enumerate() {
            if m & mark::ONSET != 0 {
                start = Some(i);
            }
            if m & mark::END != 0
                && let Some(s) = start.take()
            {
                out.push((s, i));
            }
        }
        out
    }
}

/// Energy-threshold speech marks: a frame is loud when its level is within 35 dB of the loudest
/// frame and above −50 dBFS; segments closer than 300 ms are merged.
fn speech_marks(audio: &[u8], frame_bytes: usize) -> Vec<u8> {
    let levels: Vec<f32> = audio
        .chunks_exact(frame_bytes)
        .map(|f| {
            let p = f
                .chunks_exact(2)
                .map(|s| {
                    let v = f32::from(i16::from_le_bytes([s[0], s[1]])) / 32_768.0;
                    v * v
                })
                .sum::<f32>()
                / (frame_bytes / 2) as f32;
            10.0 * p.max(1e-10).log10()
        })
        .collect();
    let peak = levels.iter().copied().fold(-100.0f32, f32::max);
    let thr = (peak - 35.0).max(-50.0);
    let loud: Vec<bool> = levels.iter().map(|&l| l > thr).collect();
    let mut marks = vec![0u8; loud.len()];
    const MERGE: usize = 15; // 300 ms
    let mut i = 0;
    while i < loud.len() {
        if !loud[i] {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        let mut j = i + 1;
        while j < loud.len() && j <= end + MERGE {
            if loud[j] {
                end = j;
            }
            j += 1;
        }
        // Ignore clicks shorter than 60 ms.
        if end - start >= 2 {
            marks[start] |= mark::ONSET;
            marks[end] |= mark::END;
            for m in &mut marks[start..=end] {
                *m |= mark::SPEECH;
            }
        }
        i = end + 1;
    }
    marks
}

/// Longest caller WAV the tools play, seconds.
pub const MAX_WAV_SECONDS: u32 = 600;
/// Sample rates the tools accept in a WAV, Hz (the header's number is the file's word).
pub const WAV_RATES_HZ: std::ops::RangeInclusive<u32> = 1_000..=384_000;

/// Why a caller WAV could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WavError {
    /// hound could not read it.
    #[error(transparent)]
    Read(#[from] hound::Error),
    /// Its header's sample rate is outside [`WAV_RATES_HZ`].
    #[error("sample rate {0} Hz is outside 1000..=384000 Hz")]
    Rate(u32),
    /// It is longer than [`MAX_WAV_SECONDS`].
    #[error("{seconds} s long; at most {MAX_WAV_SECONDS} s")]
    TooLong {
        /// Its length by the header, seconds.
        seconds: u64,
    },
}

/// A WAV file as mono `f32` samples in [-1, 1] at its own rate (channels averaged), any
/// format hound reads, at a rate in [`WAV_RATES_HZ`] and at most [`MAX_WAV_SECONDS`] long (both
/// checked from the header before any sample is read, so a hostile header cannot make the
/// resampler allocate for hours of audio).
pub fn read_wav_mono(path: &std::path::Path) -> Result<(Vec<f32>, u32), WavError> {
    let mut r = hound::WavReader::open(path)?;
    let spec = r.spec();
    if !WAV_RATES_HZ.contains(&spec.sample_rate) {
        return Err(WavError::Rate(spec.sample_rate));
    }
    let seconds = u64::from(r.duration()) / u64::from(spec.sample_rate);
    if seconds > u64::from(MAX_WAV_SECONDS) {
        return Err(WavError::TooLong { seconds });
    }
    let ch = usize::from(spec.channels.max(1));
    let raw: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()?
        }
    };
    let mono = raw
        .chunks(ch)
        .map(|c| c.iter().sum::<f32>() / c.len() as f32)
        .collect();
    Ok((mono, spec.sample_rate))
}

/// `mono` at `from` Hz as i16 samples at `rate`, scaled by `gain` (linear), saturating.
pub fn to_call_rate(mono: &[f32], from: u32, rate: SampleRate, gain: f32) -> Vec<i16> {
    resample(mono, from, rate.hz())
        .iter()
        .map(|&v| (v * gain * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16)
        .collect()
}

/// Band-limited resampling of `input` from `from` Hz to `to` Hz: a Hann-windowed sinc, cut off
/// below the lower of the two Nyquist frequencies. Offline (not real-time), any rates.
pub fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || from == 0 || to == 0 || input.is_empty() {
        return input.to_vec();
    }
    let ratio = f64::from(to) / f64::from(from);
    let fc = ratio.min(1.0) * 0.95;
    let half = (16.0 / fc).ceil() as i64;
    let n_out = ((input.len() as f64) * ratio).round() as usize;
    let mut out = Vec::with_capacity(n_out);
    for j in 0..n_out {
        let x = j as f64 / ratio;
        let c = x.floor() as i64;
        let mut acc = 0.0f64;
        for k in (c - half + 1)..=(c + half) {
            if k < 0 || k as usize >= input.len() {
                continue;
            }
            let t = x - k as f64;
            let w = t / half as f64;
            if w.abs() >= 1.0 {
                continue;
            }
            let arg = std::f64::consts::PI * fc * t;
            let sinc = if arg.abs() < 1e-9 {
                1.0
            } else {
                arg.sin() / arg
            };
            let win = 0.5 * (1.0 + (std::f64::consts::PI * w).cos());
            acc += f64::from(input[k as usize]) * fc * sinc * win;
        }
        out.push(acc as f32);
    }
    out
}

// ------------------------------------------------------------------------------- the media loop

/// Things worth a line in a timeline, reported to [`CallObserver::event`].
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// The caller started a speech segment (frame sent).
    CallerSpeechStart,
    /// The caller's speech segment ended (last loud frame sent).
    CallerSpeechEnd,
    /// The first audible frame of a reply started playing.
    ReplyStart {
        /// End of the caller's speech → now, when this reply answers it.
        latency: Option<Duration>,
    },
    /// The last audible frame of a reply finished playing (reported when the next reply
    /// starts, on `clear`, or at the end).
    ReplyEnd,
    /// `clear` received; the playback was emptied.
    Cleared {
        /// Frames discarded.
        discarded: usize,
    },
    /// A `notify` marker was reached and answered (`first`: the first since the last reply
    /// started).
    NotifyAnswered {
        /// The first one of this reply.
        first: bool,
    },
    /// Something Vonage would not accept, or would reject.
    Violation(String),
}

/// Receives what a call measures. Every method has a no-op default.
pub trait CallObserver {
    /// One received frame's lateness over the cadence (see [`Arrival::gap`]).
    fn frame_gap(&mut self, _gap: Duration) {}
    /// End of the caller's speech → first audible frame of the reply.
    fn first_reply(&mut self, _latency: Duration) {}
    /// Barge-in onset sent → `clear` received.
    fn clear_latency(&mut self, _latency: Duration) {}
    /// A frame started playing (what the caller hears).
    fn played(&mut self, _start: Instant, _frame: &[u8]) {}
    /// A timeline event at `at`.
    fn event(&mut self, _at: Instant, _event: &MediaEvent) {}
}

/// An observer that keeps nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;
impl CallObserver for NoObserver {}

/// When [`run_media`] stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopRule {
    /// Hang up after this long (loadtest).
    After(Duration),
    /// Stop once the script was sent and the reply to it has finished playing (1 s of quiet
    /// after it), or after the timeout (simulate).
    ReplyDone {
        /// Upper bound.
        timeout: Duration,
    },
}

/// How a call's media ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEnd {
    /// We hung up (the stop rule was met).
    HungUp,
    /// The server closed the socket (a close frame, or the connection ended).
    ServerClosed {
        /// The close code, if a close frame came.
        code: Option<u16>,
    },
    /// A wrong-sized frame arrived; we dropped the socket without a close frame.
    FrameViolation(FrameViolation),
    /// The socket failed.
    SocketError,
}

/// Counters of one call's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MediaCounters {
    /// Caller frames sent.
    pub frames_sent: u64,
    /// Frames received from the server.
    pub frames_received: u64,
    /// Frames that started playing.
    pub frames_played: u64,
    /// Audible frames played.
    pub audible_played: u64,
    /// Times the playback buffer ran empty in the middle of a reply.
    pub underruns: u64,
    /// Gaps in a reply the caller was talking over (the app paused it: two-stage barge-in),
    /// kept out of `underruns` and the frame-gap figures.
    pub paused_gaps: u64,
    /// Frames dropped because the playback buffer was full.
    pub dropped_full: u64,
    /// `clear` commands received.
    pub clears: u64,
    /// `notify` commands received.
    pub notifies: u64,
    /// `websocket:notify` answers sent.
    pub notifies_answered: u64,
    /// Barge-in onsets sent (caller speech starting over a reply).
    pub bargeins_sent: u64,
    /// Replies (audible) that started playing.
    pub replies: u64,
    /// Wrong-sized frames (fatal).
    pub frame_size_violations: u64,
    /// Text messages that are not `clear`/`notify`, or binary/text Vonage would not expect.
    pub protocol_violations: u64,
    /// Times the generator fell behind its 20 ms schedule by more than a frame.
    pub late_sends: u64,
}

/// The outcome of [`run_media`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaReport {
    /// How it ended.
    pub end: MediaEnd,
    /// Counters.
    pub counters: MediaCounters,
    /// When the media started (the first caller frame's deadline).
    pub t0: Instant,
}

/// After the caller starts talking over a reply, gaps in it for this long are the app pausing
/// for them (suspicion, confirmation, release), not lateness.
const TALK_OVER_WINDOW: Duration = Duration::from_millis(1_500);

/// Played frames kept for the simulated line echo (more than any echo delay).
const ECHO_LINE_FRAMES: usize = 64;

struct Tracker<'a, O: CallObserver> {
    obs: &'a mut O,
    /// Recently played frames and when they started, for [`LineEcho`].
    echo_line: std::collections::VecDeque<(Instant, Bytes)>,
    /// When the caller last started talking over a reply.
    talk_over: Option<Instant>,
    c: MediaCounters,
    /// Caller speaking (inside a marked segment).
    speaking: bool,
    /// When the caller's last speech segment ended (its last frame sent), until a reply uses it.
    speech_end: Option<Instant>,
    /// A barge-in onset sent and not yet answered by `clear`.
    onset: Option<Instant>,
    /// End of the last audible frame played.
    last_audible_end: Option<Instant>,
    in_reply: bool,
    /// Playing reply audio that the script's end waits for.
    reply_after_script: bool,
    pending_notifies: Vec<Value>,
}

impl<O: CallObserver> Tracker<'_, O> {
    fn on_played(&mut self, p: Played) {
        match p {
            Played::Frame { start, frame } => {
                if self.echo_line.len() == ECHO_LINE_FRAMES {
                    self.echo_line.pop_front();
                }
                self.echo_line.push_back((start, frame.clone()));
                self.c.frames_played += 1;
                self.obs.played(start, &frame);
                if is_audible(&frame) {
                    self.c.audible_played += 1;
                    let new_reply = self
                        .last_audible_end
                        .is_none_or(|e| start.saturating_duration_since(e) > REPLY_GAP)
                        || !self.in_reply;
                    if new_reply {
                        if self.in_reply
                            && let Some(e) = self.last_audible_end
                        {
                            self.obs.event(e, &MediaEvent::ReplyEnd);
                        }
                        self.in_reply = true;
                        self.c.replies += 1;
                        let latency = match self.speech_end.take() {
                            Some(end) if !self.speaking => {
                                let d = start.saturating_duration_since(end);
                                self.obs.first_reply(d);
                                Some(d)
                            }
                            _ => None,
                        };
                        self.obs.event(start, &MediaEvent::ReplyStart { latency });
                        self.reply_after_script = true;
                    }
                    self.last_audible_end = Some(start + FRAME);
                }
            }
            Played::Notify(payload) => self.pending_notifies.push(payload),
        }
    }

    fn end_reply(&mut self) {
        if self.in_reply {
            self.in_reply = false;
            if let Some(e) = self.last_audible_end {
                self.obs.event(e, &MediaEvent::ReplyEnd);
            }
        }
    }
}

/// Plays one call's media on `ws`: sends `script` as exact 20 ms frames against absolute
/// deadlines (silence after a non-looped script ends), plays what the server sends through a
/// [`Playback`], answers `clear` and `notify`, and reports to `obs` until `stop`.
/// Never panics on network input; a wrong-sized frame drops the socket (close code 1006 at the
/// server) and ends the call.
pub async fn run_media<O: CallObserver>(
    ws: &mut MediaSocket,
    script: &CallerScript,
    silence: &Bytes,
    stop: StopRule,
    obs: &mut O,
) -> MediaReport {
    let t0 = Instant::now();
    let mut pb = Playback::new(script.rate());
    let mut tr = Tracker {
        obs,
        echo_line: std::collections::VecDeque::with_capacity(ECHO_LINE_FRAMES),
        talk_over: None,
        c: MediaCounters::default(),
        speaking: false,
        speech_end: None,
        onset: None,
        last_audible_end: None,
        in_reply: false,
        reply_after_script: false,
        pending_notifies: Vec::new(),
    };
    let hard_stop = t0
        + match stop {
            StopRule::After(d) => d,
            StopRule::ReplyDone { timeout } => timeout,
        };
    let mut n: u64 = 0; // next caller frame index
    let mut notified_replies = 0u64;
    let mut script_done_at: Option<Instant> = None;
    // Reused for what the playback emits; holds a handful of entries at most.
    let mut sink: Vec<Played> = Vec::with_capacity(8);
    let sleep = tokio::time::sleep_until(t0.into());
    tokio::pin!(sleep);
    let end = 'call: loop {
        tokio::select! {
            biased;
            msg = ws.next() => {
                let now = Instant::now();
                match msg {
                    Some(Ok(Message::Binary(b))) => {
                        tr.c.frames_received += 1;
                        let r = pb.on_binary(now, b, &mut |p| sink.push(p));
                        for p in sink.drain(..) {
                            tr.on_played(p);
                        }
                        match r {
                            Ok(a) => {
                                // While the caller talks over a reply the app may pause it
                                // (two-stage barge-in) and resume it: that silence is the app's
                                // choice, not lateness or starvation.
                                let talked_over = tr
                                    .talk_over
                                    .is_some_and(|t| now.saturating_duration_since(t) < TALK_OVER_WINDOW);
                                if talked_over {
                                    tr.c.paused_gaps += u64::from(a.underrun);
                                } else {
                                    if let Some(g) = a.gap {
                                        tr.obs.frame_gap(g);
                                    }
                                    tr.c.underruns += u64::from(a.underrun);
                                }
                                tr.c.dropped_full += u64::from(a.dropped);
                            }
                            Err(v) => {
                                tr.c.frame_size_violations += 1;
                                tr.obs.event(now, &MediaEvent::Violation(v.to_string()));
                                break 'call MediaEnd::FrameViolation(v);
                            }
                        }
                    }
                    Some(Ok(Message::Text(t))) => {
                        let before = pb.queued_frames();
                        let outcome = pb.on_text(now, t.as_str(), &mut |p| sink.push(p));
                        for p in sink.drain(..) {
                            tr.on_played(p);
                        }
                        match outcome {
                            CommandOutcome::Cleared => {
                                tr.c.clears += 1;
                                tr.end_reply();
                                tr.obs.event(now, &MediaEvent::Cleared { discarded: before });
                                if let Some(o) = tr.onset.take() {
                                    tr.obs.clear_latency(now.saturating_duration_since(o));
                                }
                                if send(ws, Message::text(CLEARED_EVENT)).await.is_err() {
                                    break 'call MediaEnd::SocketError;
                                }
                            }
                            CommandOutcome::Notify => tr.c.notifies += 1,
                            CommandOutcome::Unknown => {
                                tr.c.protocol_violations += 1;
                                let shown: String = t.as_str().chars().take(120).collect();
                                tr.obs.event(now, &MediaEvent::Violation(format!(
                                    "unknown text command from the app: {shown}"
                                )));
                            }
                        }
                    }
                    Some(Ok(Message::Close(c))) => {
                        break 'call MediaEnd::ServerClosed { code: c.map(|c| u16::from(c.code)) };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break 'call MediaEnd::ServerClosed { code: None },
                }
                // A `notify` reached (or queued) answers when playback gets there, not at the
                // next caller frame.
                let wake = if tr.pending_notifies.is_empty() {
                    pb.next_notify_at()
                } else {
                    Some(now)
                };
                if let Some(t) = wake.map(tokio::time::Instant::from_std)
                    && t < sleep.deadline()
                {
                    sleep.as_mut().reset(t);
                }
            }
            () = &mut sleep => {
                let now = Instant::now();
                pb.advance(now, &mut |p| sink.push(p));
                for p in sink.drain(..) {
                    tr.on_played(p);
                }
                // Every frame due by now; a late wake-up sends the owed frames at once.
                let mut due = 0u32;
                loop {
                    let deadline = t0 + FRAME * (n as u32);
                    if deadline > now || due >= 50 {
                        break;
                    }
                    let (frame, m) = match script.frame(n as usize) {
                        Some(x) => x,
                        None => {
                            script_done_at.get_or_insert(now);
                            (silence.clone(), 0)
                        }
                    };
                    // The line's echo: the frame that played `delay` before this caller frame
                    // was captured ([deadline − 20 ms, deadline)) comes back inside it.
                    let frame = match script.echo {
                        Some(e) => {
                            let from = deadline.checked_sub(FRAME + e.delay);
                            let played = from.and_then(|from| {
                                tr.echo_line
                                    .iter()
                                    .find(|(start, _)| *start >= from && *start < from + FRAME)
                            });
                            match played {
                                Some((_, p)) => e.mix(&frame, p),
                                None => frame,
                            }
                        }
                        None => frame,
                    };
                    if m & mark::ONSET != 0 {
                        tr.speaking = true;
                        tr.speech_end = None;
                        tr.obs.event(now, &MediaEvent::CallerSpeechStart);
                        if tr.in_reply || pb.is_busy() {
                            tr.c.bargeins_sent += 1;
                            tr.onset = Some(now);
                            tr.talk_over = Some(now);
                        }
                    }
                    if m & mark::END != 0 {
                        tr.speaking = false;
                        tr.speech_end = Some(now);
                        tr.obs.event(now, &MediaEvent::CallerSpeechEnd);
                    }
                    if ws.feed(Message::Binary(frame)).await.is_err() {
                        break 'call MediaEnd::SocketError;
                    }
                    tr.c.frames_sent += 1;
                    n += 1;
                    due += 1;
                }
                if due > 1 {
                    tr.c.late_sends += 1;
                }
                for p in tr.pending_notifies.drain(..) {
                    tr.c.notifies_answered += 1;
                    let first = tr.c.replies > notified_replies;
                    notified_replies = tr.c.replies;
                    tr.obs.event(now, &MediaEvent::NotifyAnswered { first });
                    if ws.feed(Message::text(notify_event(p))).await.is_err() {
                        break 'call MediaEnd::SocketError;
                    }
                }
                match tokio::time::timeout(SEND_TIMEOUT, ws.flush()).await {
                    Ok(Ok(())) => {}
                    _ => break 'call MediaEnd::SocketError,
                }
                // An onset never answered by `clear` within 3 s is not a barge-in the server took.
                if tr.onset.is_some_and(|o| now.saturating_duration_since(o) > Duration::from_secs(3)) {
                    tr.onset = None;
                }
                if tr.in_reply
                    && tr.last_audible_end.is_some_and(|e| now.saturating_duration_since(e) > REPLY_GAP)
                {
                    tr.end_reply();
                }
                if now >= hard_stop {
                    break 'call MediaEnd::HungUp;
                }
                if let (StopRule::ReplyDone { .. }, Some(done)) = (stop, script_done_at) {
                    let quiet = tr.last_audible_end.is_none_or(|e| now.saturating_duration_since(e) > Duration::from_secs(1));
                    let replied_after = tr.last_audible_end.is_some_and(|e| e > done)
                        || (tr.reply_after_script && tr.speech_end.is_none() && !tr.speaking);
                    if quiet && replied_after && !pb.is_busy() && !tr.speaking {
                        break 'call MediaEnd::HungUp;
                    }
                }
                // Wake for the next caller frame, or earlier when playback reaches a `notify`.
                let next_frame = t0 + FRAME * (n as u32);
                let wake = pb.next_notify_at().map_or(next_frame, |t| t.min(next_frame));
                sleep.as_mut().reset(wake.into());
            }
        }
    };
    // Flush any pending notify answers; the socket may be gone already.
    for p in tr.pending_notifies.drain(..) {
        tr.c.notifies_answered += 1;
        let _ = ws.feed(Message::text(notify_event(p))).await;
    }
    tr.end_reply();
    // A frame violation sends no close frame: the socket is dropped by the caller, which the
    // server sees as an abnormal closure (1006), as with Vonage.
    if end == MediaEnd::HungUp {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            ws.close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "call completed".into(),
            })),
        )
        .await;
        // Read until the server's close answer (bounded).
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(m)) = ws.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    MediaReport {
        end,
        counters: tr.c,
        t0,
    }
}

async fn send(ws: &mut MediaSocket, msg: Message) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, ws.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(rate: SampleRate, v: i16) -> Bytes {
        let mut b = Vec::with_capacity(rate.frame_bytes());
        for _ in 0..rate.frame_samples() {
            b.extend_from_slice(&v.to_le_bytes());
        }
        Bytes::from(b)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fifo_plays_one_frame_per_20ms_and_notifies_when_reached() {
        let r = SampleRate::Hz16000;
        let mut pb = Playback::new(r);
        let t = Instant::now();
        let mut played = Vec::new();
        // A burst of 5 frames, then a notify marker.
        for _ in 0..5 {
            pb.on_binary(t, frame(r, 1000), &mut |p| played.push(p))
                .unwrap();
        }
        assert_eq!(
            pb.on_text(t, r#"{"action":"notify","payload":{"m":1}}"#, &mut |p| {
                played.push(p)
            }),
            CommandOutcome::Notify
        );
        assert_eq!(played.len(), 1, "the first frame starts at once");
        pb.advance(t + ms(59), &mut |p| played.push(p));
        assert_eq!(played.len(), 3, "frames at 0, 20, 40 ms");
        pb.advance(t + ms(99), &mut |p| played.push(p));
        assert_eq!(played.len(), 5);
        assert!(!played.iter().any(|p| matches!(p, Played::Notify(_))));
        pb.advance(t + ms(100), &mut |p| played.push(p));
        assert_eq!(played.last(), Some(&Played::Notify(json!({"m":1}))));
        let starts: Vec<Duration> = played
            .iter()
            .filter_map(|p| match p {
                Played::Frame { start, .. } => Some(start.duration_since(t)),
                _ => None,
            })
            .collect();
        assert_eq!(starts, [ms(0), ms(20), ms(40), ms(60), ms(80)]);
        // Notify with nothing queued is answered at once.
        let mut n = 0;
        pb.advance(t + ms(200), &mut |_| {});
        pb.on_text(
            t + ms(200),
            r#"{"action":"notify","payload":{}}"#,
            &mut |p| n += usize::from(matches!(p, Played::Notify(_))),
        );
        assert_eq!(n, 1);
    }

    #[test]
    fn clear_empties_the_queue_and_drops_markers() {
        let r = SampleRate::Hz8000;
        let mut pb = Playback::new(r);
        let t = Instant::now();
        let mut notes = 0;
        for _ in 0..50 {
            pb.on_binary(t, frame(r, 500), &mut |_| {}).unwrap();
        }
        pb.on_text(t, r#"{"action":"notify","payload":{"x":1}}"#, &mut |_| {});
        assert_eq!(pb.queued_frames(), 49);
        assert_eq!(
            pb.on_text(t + ms(30), r#"{"action":"clear"}"#, &mut |_| {}),
            CommandOutcome::Cleared
        );
        assert_eq!(pb.queued_frames(), 0);
        assert!(!pb.is_busy());
        pb.advance(t + ms(5_000), &mut |p| {
            notes += usize::from(matches!(p, Played::Notify(_)))
        });
        assert_eq!(notes, 0, "markers behind cleared audio are discarded");
        assert_eq!(
            pb.on_text(t, r#"{"action":"dance"}"#, &mut |_| {}),
            CommandOutcome::Unknown
        );
        assert_eq!(
            pb.on_text(t, "not json", &mut |_| {}),
            CommandOutcome::Unknown
        );
    }

    #[test]
    fn cap_gap_underrun_and_strict_size() {
        let r = SampleRate::Hz16000;
        let mut pb = Playback::with_cap(r, 3);
        let t = Instant::now();
        let mut dropped = 0;
        for _ in 0..6 {
            dropped += usize::from(pb.on_binary(t, frame(r, 1), &mut |_| {}).unwrap().dropped);
        }
        assert_eq!(dropped, 2, "one playing, three queued, two dropped");
        assert_eq!(
            pb.on_binary(t, Bytes::from(vec![0u8; 320]), &mut |_| {}),
            Err(FrameViolation {
                len: 320,
                expected: 640
            })
        );
        assert!(pb.on_binary(t, Bytes::new(), &mut |_| {}).is_err());

        // Paced frames: gaps are lateness over 20 ms; a starved buffer mid-reply is an underrun.
        let mut pb = Playback::new(r);
        let a = pb.on_binary(t, frame(r, 1), &mut |_| {}).unwrap();
        assert_eq!(a.gap, None, "first frame of a reply");
        let a = pb.on_binary(t + ms(10), frame(r, 1), &mut |_| {}).unwrap();
        assert_eq!(a.gap, Some(Duration::ZERO), "early frames count as 0");
        let a = pb.on_binary(t + ms(33), frame(r, 1), &mut |_| {}).unwrap();
        assert_eq!(a.gap, Some(ms(3)));
        assert!(!a.underrun, "still two frames of audio queued");
        // Queue ran out at 60 ms; the next frame at 150 ms is the same reply: an underrun.
        let a = pb.on_binary(t + ms(150), frame(r, 1), &mut |_| {}).unwrap();
        assert_eq!(a.gap, Some(ms(97)));
        assert!(a.underrun);
        // After 300 ms of nothing a new reply starts: no gap, no underrun.
        let a = pb.on_binary(t + ms(450), frame(r, 1), &mut |_| {}).unwrap();
        assert_eq!(a, Arrival::default());
    }

    #[test]
    fn urls_ids_and_messages() {
        let u = PlainUrl::parse("http://127.0.0.1:3000/base?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 3000, "/base?x=1")
        );
        assert!(u.is_loopback());
        assert_eq!(PlainUrl::parse("ws://localhost").unwrap().port, 80);
        assert!(PlainUrl::parse("wss://x.example/a").is_err());
        assert!(PlainUrl::parse("ftp://x").is_err());
        assert!(PlainUrl::parse("http://:80").is_err());
        assert!(PlainUrl::parse("http://h:99999").is_err());
        let id = new_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, new_uuid());
        assert_eq!(
            iso_timestamp(UNIX_EPOCH + Duration::from_millis(1_741_947_331_482)),
            "2025-03-14T10:15:31.482Z"
        );
        let ep = WebsocketEndpoint::new("ws://127.0.0.1:1/voice-stream/a", 16_000)
            .header("call_uuid", "abc")
            .header("nested", json!({"k": [1, 2]}));
        let v: Value = serde_json::from_str(&connected_message(&ep)).unwrap();
        assert_eq!(
            v,
            json!({"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
                   "call_uuid": "abc", "nested": {"k": [1, 2]}})
        );
    }

    #[test]
    fn resampler_keeps_a_tone_and_speech_marks_find_segments() {
        let tone: Vec<f32> = (0..44_100)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 44_100.0).sin())
            .collect();
        let out = resample(&tone, 44_100, 16_000);
        assert_eq!(out.len(), 16_000);
        let rms = (out[1000..15_000].iter().map(|v| v * v).sum::<f32>() / 14_000.0).sqrt();
        assert!((rms - 0.5 / 2f32.sqrt()).abs() < 0.02, "rms {rms}");
        // 0.5 s silence, 1 s tone, 1 s silence, 0.4 s tone.
        let r = SampleRate::Hz16000;
        let mut s = vec![0i16; 8_000];
        s.extend((0..16_000).map(|i| ((i as f32 * 0.2).sin() * 8_000.0) as i16));
        s.extend(vec![0i16; 16_000]);
        s.extend((0..6_400).map(|i| ((i as f32 * 0.2).sin() * 8_000.0) as i16));
        let script = CallerScript::new(r, &s, ms(200));
        assert_eq!(script.segments(), [(25, 74), (125, 144)]);
        assert_eq!(script.len(), 145 + 10);
        assert!(script.frame(155).is_none());
        let mut looped = script.clone();
        looped.looped = true;
        assert_eq!(
            looped.frame(155 + 25).map(|f| f.1 & mark::ONSET),
            Some(mark::ONSET)
        );
    }

    #[test]
    fn minted_jwt_has_the_signed_webhook_shape() {
        use base64::Engine as _;
        let t = mint_vonage_jwt(b"secret", "key1", Some("app1"));
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let dec = |s: &str| {
            serde_json::from_slice::<Value>(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(s)
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(dec(parts[0])["alg"], "HS256");
        let c = dec(parts[1]);
        assert_eq!(c["iss"], "Vonage");
        assert_eq!(c["api_key"], "key1");
        assert_eq!(c["application_id"], "app1");
        assert_eq!(
            c["payload_hash"],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// Serves `response` once on a local port and returns what a client got from it.
    fn answer_with(response: &'static [u8]) -> Result<HttpResponse, VonageSideError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let (mut s, _) = l.accept().await.unwrap();
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req).await;
                let _ = s.write_all(response).await;
                // Keep the socket open: a client that waits for more must not get an EOF.
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
            let mut c = HttpClient::new(addr.to_string());
            tokio::time::timeout(Duration::from_secs(3), c.request("GET", "/readyz", None))
                .await
                .expect("the client gave up in time")
        })
    }

    #[test]
    fn a_hostile_chunked_response_is_a_typed_error() {
        // A chunk size that would wrap `len + size` past the body cap.
        let r = answer_with(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nFFFFFFFFFFFFFFFD\r\n",
        );
        assert!(
            matches!(r, Err(VonageSideError::BadHttp("response body too large"))),
            "{r:?}"
        );
        // A chunk-size line that never ends.
        static LONG: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
            let mut v = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            v.extend(std::iter::repeat_n(b'0', 64 * 1024));
            v
        });
        let r = answer_with(LONG.as_slice());
        assert!(
            matches!(r, Err(VonageSideError::BadHttp("chunk size line too long"))),
            "{r:?}"
        );
        // A well-formed one still reads.
        let r = answer_with(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"hello");
    }

    #[test]
    fn a_wav_header_with_an_absurd_rate_or_length_is_refused_before_reading() {
        let dir = std::env::temp_dir();
        let write = |name: &str, rate: u32, frames: u32| {
            let path = dir.join(format!("voicegate-{name}-{}.wav", std::process::id()));
            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: rate,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let mut w = hound::WavWriter::create(&path, spec).unwrap();
            for _ in 0..frames {
                w.write_sample(0i16).unwrap();
            }
            w.finalize().unwrap();
            path
        };
        // 2 000 000 samples at 1 Hz: resampled to 16 kHz that was 128 GB.
        let p = write("rate1", 1, 2_000);
        assert!(matches!(read_wav_mono(&p), Err(WavError::Rate(1))));
        let p2 = write("long", 1_000, 1_000 * (MAX_WAV_SECONDS + 1));
        let e = read_wav_mono(&p2).unwrap_err();
        assert!(matches!(e, WavError::TooLong { seconds: 601 }), "{e}");
        assert!(e.to_string().contains("at most 600 s"), "{e}");
        let p3 = write("ok", 8_000, 800);
        assert_eq!(read_wav_mono(&p3).unwrap().0.len(), 800);
        for p in [p, p2, p3] {
            let _ = std::fs::remove_file(p);
        }
    }
}
