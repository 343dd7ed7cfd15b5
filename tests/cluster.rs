//! Several real `voicegate` processes (the built binary, each on 127.0.0.1:0) sharing one real
//! Redis, as they would behind a load balancer: the test plays the load balancer by sending
//! each request of a call to the instance it chooses.
//!
//! * a call answered by A whose media socket lands on B works end to end (the echo comes back
//!   as exact 20 ms frames); a second socket for it on A is refused;
//! * a signed webhook accepted by A is refused by B (shared replay cache);
//! * `completed` posted to A ends the socket held by B (pub/sub to the owning instance);
//! * SIGTERM with active calls: readiness false at once, answers still work, the calls finish,
//!   exit 0 before the drain timeout;
//! * Redis killed mid-call: no panic, readiness false, the call goes on, replay protection
//!   never fails open (not even after Redis comes back empty); readiness recovers;
//! * Redis killed, unsigned webhooks: answers and local call ends keep working, new sockets
//!   are refused (503).
//!
//! Every test starts its own `redis-server` on a free port with a temporary directory and no
//! persistence, so tests do not interfere and the fault test can kill it. When `redis-server`
//! cannot be started the Redis tests print why and pass without running (CI installs it:
//! `.ci/run`). The drain test runs without Redis then.

mod server_support;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use server_support::{clip, http_get, metric, parse_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use voicegate::server::auth::unix_now;
use voicegate::tools::vonage_side::{
    self, AuthSettings, CallIdentity, CallerScript, HttpClient, MediaEnd, MediaReport, MediaTarget,
    NoObserver, PlainUrl, StopRule,
};
use voicegate::vonage::signed_webhook::sha256_hex;

const MEDIA_KEY: &str = "cluster-test-media-token-key-0123456789";
const SECRET: &str = "cluster-test-signature-secret-0123456789abcdef";
/// Generous bound for things that take milliseconds on an idle machine.
const SLOW: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------- redis

/// A `redis-server` of this test's own, on a free loopback port, without persistence.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts one, or explains why it cannot (the caller then skips).
    fn start(test: &str) -> Option<Redis> {
        let port = match StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(a) => a.port(),
            Err(e) => {
                eprintln!("SKIPPED {test}: no free port for redis-server: {e}");
                return None;
            }
        };
        let dir =
            std::env::temp_dir().join(format!("voicegate-cluster-{}-{port}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mut r = Redis {
            child: None,
            port,
            dir,
        };
        match r.spawn() {
            Ok(()) => Some(r),
            Err(e) => {
                eprintln!(
                    "SKIPPED {test}: redis-server cannot be started ({e}); `.ci/run` installs it"
                );
                None
            }
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(&self.dir)
            // For `.ci/run`'s clean-up, should this test process be killed before its Drop.
            .arg("--pidfile")
            .arg(self.dir.join("redis.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        // Ready when it answers PING.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(format!("exited at start: {status}"));
            }
            if ping(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("no PONG within 10 s".into())
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: connections drop at once, nothing is saved.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    fn restart(&mut self) {
        self.kill();
        self.spawn().expect("redis-server restarts");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a Redis on `port` answers `PING`.
fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

// ------------------------------------------------------------------------------- voicegate

/// One `voicegate serve` process.
struct Instance {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Instance {
    /// Starts the built binary on 127.0.0.1:0 with `args` and waits for its
    /// `listening on http://ADDR` line.
    async fn start(name: &str, args: &[String]) -> Instance {
        let log = std::env::temp_dir().join(format!(
            "voicegate-cluster-{}-{name}-{}.log",
            std::process::id(),
            unix_now()
        ));
        let mut child = Command::new(env!("CARGO_BIN_EXE_voicegate"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn voicegate");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads every line (so the pipe never fills) and reports the address.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(a.trim().to_owned());
                }
            }
        });
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(SLOW))
            .await
            .unwrap()
            .unwrap_or_else(|_| panic!("{name}: no `listening on` line; log {}", log.display()));
        Instance {
            child,
            addr: addr.parse().expect("an address"),
            log,
        }
    }

    async fn readyz(&self) -> u16 {
        http_get(self.addr, "/readyz").await.0
    }

    /// Waits until `/readyz` says `want`; returns how long it took.
    async fn wait_ready(&self, want: u16, within: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            if self.readyz().await == want {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < within,
                "/readyz never became {want} within {within:?}; log {}\n{}",
                self.log.display(),
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn metrics(&self) -> String {
        http_get(self.addr, "/metrics").await.1
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM");
    }

    /// Waits for the process to exit, at most `within`.
    async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn assert_no_panic(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            !text.contains("panicked"),
            "a panic in {}:\n{text}",
            self.log.display()
        );
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

fn args(redis: Option<&Redis>, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["--media-token-key".into(), MEDIA_KEY.into()];
    if let Some(r) = redis {
        a.push("--redis-url".into());
        a.push(r.url());
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// A and B on one Redis, both ready.
async fn pair(redis: &Redis, extra: &[&str]) -> (Instance, Instance) {
    let a = Instance::start("a", &args(Some(redis), extra)).await;
    let b = Instance::start("b", &args(Some(redis), extra)).await;
    a.wait_ready(200, SLOW).await;
    b.wait_ready(200, SLOW).await;
    (a, b)
}

// ------------------------------------------------------------------------------- a call

/// Vonage's side: the answer webhook on `answer_on`, then the media socket on `socket_on` (the
/// load balancer's choice): the NCCO's URI with its authority replaced.
async fn answer_then_connect(
    answer_on: SocketAddr,
    socket_on: SocketAddr,
    id: &CallIdentity,
) -> (MediaTarget, vonage_side::MediaSocket) {
    let server = PlainUrl::parse(&format!("http://{answer_on}")).unwrap();
    let mut http = HttpClient::new(server.authority());
    let mut target = vonage_side::answer(&mut http, &server, id)
        .await
        .expect("answer webhook");
    target.endpoint.uri = route(&target.endpoint.uri, socket_on);
    let ws = vonage_side::connect_media(&target, &AuthSettings::default())
        .await
        .expect("media socket");
    (target, ws)
}

/// `uri` with its host:port replaced by `to`.
fn route(uri: &str, to: SocketAddr) -> String {
    let (scheme, rest) = uri.split_once("://").unwrap();
    let path = &rest[rest.find('/').unwrap()..];
    format!("{scheme}://{to}{path}")
}

/// What the caller says: the first 4 s of a 16 kHz corpus clip (two speech segments).
fn script(seconds_of_clip: u32) -> (CallerScript, Bytes) {
    let c = clip("speech_001");
    let n = (seconds_of_clip as usize * c.rate.hz() as usize).min(c.samples.len());
    (
        CallerScript::new(c.rate, &c.samples[..n], Duration::ZERO),
        Bytes::from(vec![0u8; c.rate.frame_bytes()]),
    )
}

/// Plays the caller until the echo of what they said has played out.
async fn talk(ws: &mut vonage_side::MediaSocket, seconds: u32) -> MediaReport {
    let (script, silence) = script(seconds);
    vonage_side::run_media(
        ws,
        &script,
        &silence,
        StopRule::ReplyDone {
            timeout: Duration::from_secs(40),
        },
        &mut NoObserver,
    )
    .await
}

/// The echo was heard, every frame was exactly 20 ms, nothing Vonage would refuse, and we hung
/// up (the server did not cut the call).
fn assert_echo_heard(r: &MediaReport) {
    let c = &r.counters;
    assert_eq!(r.end, MediaEnd::HungUp, "{r:?}");
    assert_eq!(c.frame_size_violations, 0, "{r:?}");
    assert_eq!(c.protocol_violations, 0, "{r:?}");
    assert!(
        c.replies >= 1 && c.audible_played >= 25,
        "no echo heard: {r:?}"
    );
    assert!(c.frames_received >= c.audible_played, "{r:?}");
}

/// Opens a socket at `uri` without playing a call; the HTTP status of a refused upgrade.
async fn upgrade_status(uri: &str) -> u16 {
    match tokio_tungstenite::connect_async(uri).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

// ------------------------------------------------------------------------------- webhooks

/// A raw HTTP/1.1 request over a fresh connection; returns (status, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(SLOW, s.read_to_end(&mut buf)).await;
    parse_response(&buf)
}

/// Vonage's signature over `payload` (the body, or the GET query as a JSON object).
fn signed(payload: &[u8]) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let claims = json!({
        "iat": unix_now(), "jti": format!("cluster-{}-{n}", vonage_side::new_uuid()),
        "iss": "Vonage", "payload_hash": sha256_hex(payload), "api_key": "a1b2c3d4",
    });
    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    format!("Bearer {t}")
}

/// A signed answer webhook (GET) for `uuid`: (path, Authorization).
fn signed_answer(uuid: &str) -> (String, String) {
    let q = [
        ("to", "447700900000"),
        ("from", "447700900123"),
        ("uuid", uuid),
        ("conversation_uuid", "CON-cluster"),
    ];
    // The hash covers the query as a JSON object in URL order (vonage-protocol.md §5.3).
    let obj: Vec<String> = q.iter().map(|(k, v)| format!("\"{k}\":\"{v}\"")).collect();
    let query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
    (
        format!("/answer?{}", query.join("&")),
        signed(format!("{{{}}}", obj.join(",")).as_bytes()),
    )
}

fn status_event(uuid: &str, status: &str) -> Vec<u8> {
    json!({"uuid": uuid, "conversation_uuid": "CON-cluster", "status": status,
           "direction": "inbound", "timestamp": "2025-03-14T10:17:02.915Z"})
    .to_string()
    .into_bytes()
}

// ------------------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_on_a_socket_on_b() {
    let Some(redis) = Redis::start("answer_on_a_socket_on_b") else {
        return;
    };
    let (a, b) = pair(&redis, &[]).await;
    let id = CallIdentity::fresh();
    let (target, mut ws) = answer_then_connect(a.addr, b.addr, &id).await;
    // B accepted a socket for a call it never saw: the token carried the call.
    let mut on_a = route(&target.endpoint.uri, a.addr);
    // The same call on A while B holds its socket: refused, with this token and a fresh one.
    assert_eq!(upgrade_status(&on_a).await, 409);
    let (again, _) = answer_then_connect_uri(a.addr, &id).await;
    on_a = route(&again, a.addr);
    assert_eq!(upgrade_status(&on_a).await, 409);
    let report = talk(&mut ws, 4).await;
    assert_echo_heard(&report);
    eprintln!(
        "answer on A, socket on B: {} frames sent, {} received, {} audible, end {:?}",
        report.counters.frames_sent,
        report.counters.frames_received,
        report.counters.audible_played,
        report.end
    );
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    assert_eq!(metric(&ma, "voicegate_answers_total"), Some(2.0), "{ma}");
    assert_eq!(metric(&ma, "voicegate_calls_total"), Some(0.0), "{ma}");
    assert_eq!(metric(&mb, "voicegate_calls_total"), Some(1.0), "{mb}");
    assert_eq!(
        metric(
            &ma,
            r#"voicegate_calls_rejected_total{reason="duplicate_socket"}"#
        ),
        Some(2.0),
        "{ma}"
    );
    assert_eq!(metric(&mb, "voicegate_redis_up"), Some(1.0), "{mb}");
    a.assert_no_panic();
    b.assert_no_panic();
}

/// The answer webhook on `addr` again for `id` (a Vonage retry): the new NCCO's websocket URI.
async fn answer_then_connect_uri(addr: SocketAddr, id: &CallIdentity) -> (String, MediaTarget) {
    let server = PlainUrl::parse(&format!("http://{addr}")).unwrap();
    let mut http = HttpClient::new(server.authority());
    let t = vonage_side::answer(&mut http, &server, id).await.unwrap();
    (t.endpoint.uri.clone(), t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_signed_webhook_is_refused_by_the_other_instance() {
    let Some(redis) = Redis::start("replayed_signed_webhook_is_refused_by_the_other_instance")
    else {
        return;
    };
    let (a, b) = pair(&redis, &["--signature-secret", SECRET]).await;
    // A signed answer: accepted by A, its replay refused by B (and by A).
    let (path, auth) = signed_answer(&vonage_side::new_uuid());
    let (s1, ncco) = http(a.addr, "GET", &path, Some(&auth), b"").await;
    assert_eq!(s1, 200, "{ncco}");
    assert!(ncco.contains("\"connect\""), "{ncco}");
    let (s2, _) = http(b.addr, "GET", &path, Some(&auth), b"").await;
    let (s3, _) = http(a.addr, "GET", &path, Some(&auth), b"").await;
    assert_eq!((s2, s3), (401, 401));
    // A signed event, the same way round.
    let body = status_event(&vonage_side::new_uuid(), "answered");
    let auth = signed(&body);
    assert_eq!(
        http(a.addr, "POST", "/events", Some(&auth), &body).await.0,
        200
    );
    assert_eq!(
        http(b.addr, "POST", "/events", Some(&auth), &body).await.0,
        401
    );
    let mb = b.metrics().await;
    assert_eq!(
        metric(
            &mb,
            r#"voicegate_webhook_auth_failures_total{reason="replayed"}"#
        ),
        Some(2.0),
        "{mb}"
    );
    a.assert_no_panic();
    b.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_on_a_ends_the_socket_on_b() {
    let Some(redis) = Redis::start("completed_on_a_ends_the_socket_on_b") else {
        return;
    };
    let (a, b) = pair(&redis, &[]).await;
    let id = CallIdentity::fresh();
    let (target, mut ws) = answer_then_connect(a.addr, b.addr, &id).await;
    // Let B take the call (websocket:connected) before the caller hangs up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let (status, _) = http(
        a.addr,
        "POST",
        "/events",
        None,
        &status_event(&id.uuid, "completed"),
    )
    .await;
    assert_eq!(status, 200);
    let code = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(c) = m {
                return c.map(|c| u16::from(c.code));
            }
        }
        None
    })
    .await
    .expect("B closes the socket after `completed` reached A");
    eprintln!("completed on A → B closed the socket in {:?}", t0.elapsed());
    assert_eq!(code, Some(1000));
    let mb = b.metrics().await;
    assert_eq!(
        metric(&mb, "voicegate_remote_ends_total"),
        Some(1.0),
        "{mb}"
    );
    // The call is over everywhere: a fresh token for it opens nothing, on either instance.
    let (uri, _) = answer_then_connect_uri(a.addr, &id).await;
    assert_eq!(upgrade_status(&route(&uri, b.addr)).await, 404);
    let _ = target;
    a.assert_no_panic();
    b.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_active_calls_then_exits_0() {
    let redis = Redis::start("sigterm_drains_active_calls_then_exits_0 (with Redis)");
    if redis.is_none() {
        eprintln!("sigterm_drains_active_calls_then_exits_0: runs with in-process state");
    }
    const DRAIN: Duration = Duration::from_secs(25);
    let mut a = Instance::start("drain", &args(redis.as_ref(), &["--drain-timeout-s", "25"])).await;
    a.wait_ready(200, SLOW).await;
    // Three calls in progress.
    let mut calls = Vec::new();
    for _ in 0..3 {
        let id = CallIdentity::fresh();
        let (_, mut ws) = answer_then_connect(a.addr, a.addr, &id).await;
        calls.push(tokio::spawn(async move { talk(&mut ws, 4).await }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    a.sigterm();
    let not_ready = a.wait_ready(503, Duration::from_secs(5)).await;
    eprintln!("SIGTERM → /readyz 503 in {not_ready:?}");
    assert!(
        not_ready < Duration::from_millis(1_000),
        "readiness took {not_ready:?} to turn false"
    );
    // Still answering with a working NCCO while draining.
    let server = PlainUrl::parse(&format!("http://{}", a.addr)).unwrap();
    let mut http = HttpClient::new(server.authority());
    let late = vonage_side::answer(&mut http, &server, &CallIdentity::fresh()).await;
    assert!(late.is_ok(), "draining answer: {late:?}");
    drop(http);
    let m = a.metrics().await;
    assert_eq!(metric(&m, "voicegate_draining"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "voicegate_active_calls"), Some(3.0), "{m}");
    // Every call runs to its end (we hang up after the echo), none is cut.
    for c in calls {
        assert_echo_heard(&c.await.unwrap());
    }
    let status = a
        .wait_exit(DRAIN)
        .await
        .unwrap_or_else(|| panic!("no exit within the drain timeout:\n{}", a.log_tail()));
    eprintln!("exit {status} {:?} after SIGTERM", t0.elapsed());
    assert!(status.success(), "{status}\n{}", a.log_tail());
    assert!(t0.elapsed() < DRAIN, "{:?}", t0.elapsed());
    a.assert_no_panic();
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_and_recovers() {
    let Some(mut redis) = Redis::start("redis_down_fails_closed_and_recovers") else {
        return;
    };
    let (a, b) = pair(&redis, &["--signature-secret", SECRET]).await;
    // A signed event accepted before the outage: its replay must never be accepted.
    let seen = status_event(&vonage_side::new_uuid(), "answered");
    let seen_auth = signed(&seen);
    assert_eq!(
        http(a.addr, "POST", "/events", Some(&seen_auth), &seen)
            .await
            .0,
        200
    );
    // A call in progress: answered on A (signed), socket on B, caller talking for 12 s.
    let uuid = vonage_side::new_uuid();
    let (path, auth) = signed_answer(&uuid);
    let (status, ncco) = http(a.addr, "GET", &path, Some(&auth), b"").await;
    assert_eq!(status, 200, "{ncco}");
    let target = vonage_side::media_target(serde_json::from_str(&ncco).expect("an NCCO")).unwrap();
    let mut target = target;
    target.endpoint.uri = route(&target.endpoint.uri, b.addr);
    let mut ws = vonage_side::connect_media(&target, &AuthSettings::default())
        .await
        .expect("media socket");
    let call = tokio::spawn(async move {
        let (mut script, silence) = script(4);
        script.looped = true;
        vonage_side::run_media(
            &mut ws,
            &script,
            &silence,
            StopRule::After(Duration::from_secs(14)),
            &mut NoObserver,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    // Redis dies.
    redis.kill();
    let ta = a.wait_ready(503, Duration::from_secs(10)).await;
    let tb = b.wait_ready(503, Duration::from_secs(10)).await;
    eprintln!("Redis killed → /readyz 503 on A in {ta:?}, on B in {tb:?}");
    assert!(a.readyz().await == 503 && b.readyz().await == 503);
    // Fail closed: the replay, and even a fresh signed request, are refused (503), never 200.
    for inst in [&a, &b] {
        let (s, _) = http(inst.addr, "POST", "/events", Some(&seen_auth), &seen).await;
        assert_eq!(s, 503, "replay while Redis is down");
        let fresh = status_event(&vonage_side::new_uuid(), "answered");
        let (s, _) = http(inst.addr, "POST", "/events", Some(&signed(&fresh)), &fresh).await;
        assert_eq!(s, 503, "unchecked token while Redis is down");
    }
    let mb = b.metrics().await;
    assert_eq!(metric(&mb, "voicegate_redis_up"), Some(0.0), "{mb}");
    assert!(
        mb.lines()
            .any(|l| l.starts_with("voicegate_redis_errors_total{") && !l.ends_with(" 0")),
        "{mb}"
    );
    assert_eq!(metric(&mb, "voicegate_active_calls"), Some(1.0), "{mb}");

    // Redis comes back, empty.
    redis.restart();
    let ta = a.wait_ready(200, SLOW).await;
    let tb = b.wait_ready(200, SLOW).await;
    eprintln!("Redis back → /readyz 200 on A in {ta:?}, on B in {tb:?}");
    // The token seen before the outage is still refused (Redis forgot it; the epoch says so).
    for inst in [&a, &b] {
        let (s, _) = http(inst.addr, "POST", "/events", Some(&seen_auth), &seen).await;
        assert_ne!(s, 200, "a replay accepted after Redis lost its data");
    }
    // New traffic works again: a fresh signed answer on B, its socket on A.
    let (path, auth) = signed_answer(&vonage_side::new_uuid());
    let (s, ncco) = http(b.addr, "GET", &path, Some(&auth), b"").await;
    assert_eq!(s, 200, "{ncco}");
    let mut t2 = vonage_side::media_target(serde_json::from_str(&ncco).unwrap()).unwrap();
    t2.endpoint.uri = route(&t2.endpoint.uri, a.addr);
    let mut ws2 = vonage_side::connect_media(&t2, &AuthSettings::default())
        .await
        .expect("a socket after recovery");
    assert_echo_heard(&talk(&mut ws2, 3).await);

    // The call in progress went on through all of it.
    let report = call.await.unwrap();
    assert_eq!(report.end, MediaEnd::HungUp, "{report:?}");
    assert_eq!(report.counters.frame_size_violations, 0, "{report:?}");
    assert!(report.counters.replies >= 2, "{report:?}");
    a.assert_no_panic();
    b.assert_no_panic();
}

/// Without signed webhooks there is no replay check to fail closed: with Redis down, answers
/// still get a working NCCO and a terminal event still ends a call whose socket is here (the
/// in-process record), while a new socket is refused (its claim cannot be shared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_unsigned_webhooks_keep_working_where_safe() {
    let Some(mut redis) = Redis::start("redis_down_unsigned_webhooks_keep_working_where_safe")
    else {
        return;
    };
    let a = Instance::start("unsigned", &args(Some(&redis), &[])).await;
    a.wait_ready(200, SLOW).await;
    let id = CallIdentity::fresh();
    let (_, mut ws) = answer_then_connect(a.addr, a.addr, &id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    a.wait_ready(503, Duration::from_secs(10)).await;
    // The answer webhook needs no shared state.
    let other = CallIdentity::fresh();
    let (uri, _) = answer_then_connect_uri(a.addr, &other).await;
    // Its socket does (one socket per call, one use per token): refused, not admitted unchecked.
    assert_eq!(upgrade_status(&uri).await, 503);
    // `completed` for the call in progress ends it here.
    let (status, _) = http(
        a.addr,
        "POST",
        "/events",
        None,
        &status_event(&id.uuid, "completed"),
    )
    .await;
    assert_eq!(status, 200);
    let code = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(c) = m {
                return c.map(|c| u16::from(c.code));
            }
        }
        None
    })
    .await
    .expect("the local call ends on `completed` while Redis is down");
    assert_eq!(code, Some(1000));
    let m = a.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"voicegate_calls_rejected_total{reason="shared_state_unavailable"}"#
        ),
        Some(1.0),
        "{m}"
    );
    a.assert_no_panic();
}
