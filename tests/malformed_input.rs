//! Hostile input against the real server on 127.0.0.1:0, table-driven: every case names what it
//! sends and the one outcome it must get (an HTTP status, a refused upgrade, a close code, or
//! "counted and dropped, the call goes on"). After every case the server must still answer
//! `/healthz`, `voicegate_active_calls` must be back to 0, and no thread may have panicked.
//!
//! Cases cover the media socket (bad frames at each rate, binary before `connected`, two
//! `connected`, unsupported content type, non-UTF-8 and huge text, deep JSON, unknown events,
//! bad DTMF, abrupt TCP close mid-frame, a peer that never reads, thousands of dropped
//! connections, sockets without or with forged, expired, foreign or used tokens, audio that
//! stops), the webhooks (unknown calls, duplicate and out-of-order events, missing fields,
//! oversized and deeply nested bodies) and signed webhooks (forged, tampered, expired, replayed,
//! `alg: none`, `RS256`, missing), plus the Vonage-signed socket handshake.

mod server_support;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use server_support::{
    TestServer, Ws, answer, config_at, http_get, media_uri, metric, parse_response, start,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use voicegate::core::SampleRate;
use voicegate::server::ServerConfig;
use voicegate::server::auth::unix_now;
use voicegate::vonage::signed_webhook::sha256_hex;

const SECRET: &str = "voicegate-test-signature-secret-0123456789abcdef";

static PANICS: AtomicUsize = AtomicUsize::new(0);

type CaseFn = fn(TestServer) -> Pin<Box<dyn Future<Output = String> + Send>>;

/// One hostile input: the server it needs, what it does, and the outcome it must get.
struct Case {
    name: &'static str,
    server: fn() -> ServerConfig,
    run: CaseFn,
    expect: &'static str,
}

macro_rules! case {
    ($name:literal, $server:expr, $run:ident, $expect:literal) => {
        Case {
            name: $name,
            server: $server,
            run: |s| Box::pin($run(s)),
            expect: $expect,
        }
    };
}

fn unsigned() -> ServerConfig {
    let mut c = config_at(SampleRate::Hz16000);
    c.connect_timeout = Duration::from_millis(400);
    c.media_idle_timeout = Duration::from_secs(1);
    c
}

fn signed() -> ServerConfig {
    let mut c = unsigned();
    c.signature_secret = Some(SECRET.to_owned());
    c
}

fn signed_socket() -> ServerConfig {
    let mut c = signed();
    c.signed_media_socket = true;
    c
}

fn rate_8k() -> ServerConfig {
    let mut c = config_at(SampleRate::Hz8000);
    c.media_idle_timeout = Duration::from_secs(1);
    c
}

fn rate_24k() -> ServerConfig {
    let mut c = config_at(SampleRate::Hz24000);
    c.media_idle_timeout = Duration::from_secs(1);
    c
}

// ------------------------------------------------------------------------------- helpers

fn uuid(n: u32) -> String {
    format!("{n:08x}-aaaa-4bbb-8ccc-000000000000")
}

/// A raw HTTP/1.1 request over a fresh connection; returns (status, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    // The server may answer (413) before reading a large body: ignore a failed write.
    let _ = s.write_all(body).await;
    let mut buf = Vec::new();
    let _ = timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    parse_response(&buf)
}

async fn post_json(addr: SocketAddr, path: &str, body: &[u8], auth: Option<String>) -> u16 {
    let mut h = vec![("Content-Type", "application/json".to_owned())];
    if let Some(a) = auth {
        h.push(("Authorization", a));
    }
    http(addr, "POST", path, &h, body).await.0
}

/// A Vonage-style signed token over `body` with `claims` merged in.
fn vonage_jwt(body: &[u8], extra: Value, alg: Algorithm, secret: &str) -> String {
    let mut c = json!({
        "iat": unix_now(), "jti": format!("jti-{}", rand_id()), "iss": "Vonage",
        "payload_hash": sha256_hex(body), "api_key": "a1b2c3d4",
        "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
    });
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    let t = jsonwebtoken::encode(
        &Header::new(alg),
        &c,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    format!("Bearer {t}")
}

fn rand_id() -> u64 {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed) as u64
}

/// A token whose header says `alg` but which is not signed by the secret.
fn unsigned_jwt(alg: &str, body: &[u8]) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let h = B64.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
    let c = B64.encode(
        json!({"iat": unix_now(), "jti": "x", "iss": "Vonage", "payload_hash": sha256_hex(body)})
            .to_string(),
    );
    format!("Bearer {h}.{c}.")
}

fn completed(id: &str) -> Vec<u8> {
    json!({"uuid": id, "status": "completed", "conversation_uuid": "CON-x"})
        .to_string()
        .into_bytes()
}

/// Opens the media socket at `uri` without sending `connected`.
async fn open(uri: &str) -> Result<Ws, u16> {
    match tokio_tungstenite::connect_async(uri).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

fn connected(rate: u32, id: &str) -> Message {
    Message::text(
        json!({"event": "websocket:connected", "content-type": format!("audio/l16;rate={rate}"),
               "call_uuid": id})
        .to_string(),
    )
}

/// Answers `id` and opens its socket with `connected` at `rate`.
async fn live(s: &TestServer, id: &str, rate: u32) -> Ws {
    let mut ws = open(&media_uri(s.addr, id).await).await.unwrap();
    ws.send(connected(rate, id)).await.unwrap();
    ws
}

/// Waits for the server to close: `close CODE`, or `closed` for a drop without a close frame.
async fn close_of(ws: &mut Ws) -> String {
    let r = timeout(Duration::from_secs(5), async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(c)) => return c.map(|c| u16::from(c.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the server closes");
    r.map_or("closed".to_owned(), |c| format!("close {c}"))
}

/// Whether the server keeps the socket open for `ms` (the call goes on).
async fn stays_open(ws: &mut Ws, ms: u64) -> bool {
    let r = timeout(Duration::from_millis(ms), async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    r.is_err()
}

async fn metrics(s: &TestServer) -> String {
    http_get(s.addr, "/metrics").await.1
}

async fn wait_idle(s: &TestServer) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(8) {
        if metric(&metrics(s).await, "voicegate_active_calls") == Some(0.0) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Sends `msgs` mid-call, then a valid frame; reports whether the call went on and what the
/// counters say once it ended.
async fn mid_call(s: TestServer, rate: u32, msgs: Vec<Message>, counter: &str) -> String {
    let id = uuid(7);
    let mut ws = live(&s, &id, rate).await;
    for m in msgs {
        ws.send(m).await.unwrap();
    }
    ws.send(Message::binary(vec![0u8; rate as usize / 25]))
        .await
        .unwrap();
    let goes_on = stays_open(&mut ws, 300).await;
    let _ = ws.close(None).await;
    wait_idle(&s).await;
    let m = metrics(&s).await;
    let n = metric(&m, counter).unwrap_or(-1.0);
    let frames_in = metric(&m, "voicegate_frames_in_total").unwrap_or(-1.0);
    format!(
        "{} {n}, frames_in {frames_in}, {}",
        counter.trim_start_matches("voicegate_"),
        if goes_on {
            "call goes on"
        } else {
            "call ended"
        }
    )
}

// ------------------------------------------------------------------------------- media cases

async fn odd_length_frame(s: TestServer) -> String {
    mid_call(
        s,
        16_000,
        vec![Message::binary(vec![1u8; 641])],
        "voicegate_frames_invalid_total",
    )
    .await
}

async fn wrong_size_16k(s: TestServer) -> String {
    // 8 kHz and 24 kHz frames on a 16 kHz call.
    let msgs = vec![
        Message::binary(vec![0u8; 320]),
        Message::binary(vec![0u8; 960]),
    ];
    mid_call(s, 16_000, msgs, "voicegate_frames_invalid_total").await
}

async fn wrong_size_8k(s: TestServer) -> String {
    let msgs = vec![
        Message::binary(vec![0u8; 640]),
        Message::binary(vec![0u8; 960]),
    ];
    mid_call(s, 8_000, msgs, "voicegate_frames_invalid_total").await
}

async fn wrong_size_24k(s: TestServer) -> String {
    let msgs = vec![
        Message::binary(vec![0u8; 320]),
        Message::binary(vec![0u8; 640]),
    ];
    mid_call(s, 24_000, msgs, "voicegate_frames_invalid_total").await
}

async fn binary_before_connected(s: TestServer) -> String {
    let id = uuid(8);
    let mut ws = open(&media_uri(s.addr, &id).await).await.unwrap();
    for _ in 0..3 {
        ws.send(Message::binary(vec![0u8; 640])).await.unwrap();
    }
    ws.send(connected(16_000, &id)).await.unwrap();
    let goes_on = stays_open(&mut ws, 300).await;
    let _ = ws.close(None).await;
    wait_idle(&s).await;
    let n = metric(&metrics(&s).await, "voicegate_frames_in_total").unwrap_or(-1.0);
    format!("held then processed: frames_in {n}, call goes on {goes_on}")
}

async fn binary_then_rate_mismatch(s: TestServer) -> String {
    let id = uuid(9);
    let mut ws = open(&media_uri(s.addr, &id).await).await.unwrap();
    for _ in 0..3 {
        ws.send(Message::binary(vec![0u8; 640])).await.unwrap();
    }
    ws.send(connected(8_000, &id)).await.unwrap();
    let c = close_of(&mut ws).await;
    wait_idle(&s).await;
    let n = metric(&metrics(&s).await, "voicegate_frames_in_total").unwrap_or(-1.0);
    format!("{c}, frames_in {n}")
}

async fn two_connected(s: TestServer) -> String {
    mid_call(
        s,
        16_000,
        vec![connected(16_000, &uuid(7)), connected(8_000, &uuid(7))],
        "voicegate_text_messages_invalid_total",
    )
    .await
}

async fn unknown_content_type(s: TestServer) -> String {
    let id = uuid(10);
    let mut ws = open(&media_uri(s.addr, &id).await).await.unwrap();
    ws.send(Message::text(
        json!({"event":"websocket:connected","content-type":"audio/pcmu;rate=8000"}).to_string(),
    ))
    .await
    .unwrap();
    close_of(&mut ws).await
}

async fn connected_for_another_call(s: TestServer) -> String {
    let id = uuid(11);
    let mut ws = open(&media_uri(s.addr, &id).await).await.unwrap();
    ws.send(connected(16_000, &uuid(12))).await.unwrap();
    close_of(&mut ws).await
}

async fn non_utf8_text(s: TestServer) -> String {
    let mut ws = live(&s, &uuid(13), 16_000).await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame)).await.unwrap();
    close_of(&mut ws).await
}

async fn huge_text(s: TestServer) -> String {
    let mut ws = live(&s, &uuid(14), 16_000).await;
    let text = format!(
        r#"{{"event":"websocket:dtmf","pad":"{}"}}"#,
        "x".repeat(100_000)
    );
    let _ = ws.send(Message::text(text)).await;
    close_of(&mut ws).await
}

async fn huge_binary(s: TestServer) -> String {
    let mut ws = live(&s, &uuid(15), 16_000).await;
    let _ = ws.send(Message::binary(vec![0u8; 16 * 1024])).await;
    close_of(&mut ws).await
}

async fn deeply_nested_json(s: TestServer) -> String {
    let deep = format!("{}{}", "[".repeat(3_000), "]".repeat(3_000));
    mid_call(
        s,
        16_000,
        vec![Message::text(deep)],
        "voicegate_text_messages_invalid_total",
    )
    .await
}

async fn unknown_event(s: TestServer) -> String {
    mid_call(
        s,
        16_000,
        vec![Message::text(
            r#"{"event":"websocket:brand-new","x":[1,{"y":2}]}"#,
        )],
        "voicegate_text_messages_unknown_total",
    )
    .await
}

async fn dtmf_bad_digit(s: TestServer) -> String {
    mid_call(
        s,
        16_000,
        vec![
            Message::text(r#"{"event":"websocket:dtmf","digit":"X","duration":100}"#),
            Message::text(r#"{"event":"websocket:dtmf","digit":"55"}"#),
            Message::text(r#"{"event":"websocket:dtmf"}"#),
        ],
        "voicegate_text_messages_invalid_total",
    )
    .await
}

async fn abrupt_close_mid_frame(s: TestServer) -> String {
    let mut ws = live(&s, &uuid(16), 16_000).await;
    ws.send(Message::binary(vec![0u8; 640])).await.unwrap();
    // A masked binary frame header announcing 640 bytes, then 100 of them, then the connection closes.
    let tcp = match ws.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(t) => t,
        _ => unreachable!("plain ws://"),
    };
    let mut head = Vec::new();
    FrameHeader {
        is_final: true,
        opcode: OpCode::Data(Data::Binary),
        mask: Some([1, 2, 3, 4]),
        ..FrameHeader::default()
    }
    .format(640, &mut head)
    .unwrap();
    tcp.write_all(&head).await.unwrap();
    tcp.write_all(&[7u8; 100]).await.unwrap();
    drop(ws);
    if wait_idle(&s).await {
        "call released".to_owned()
    } else {
        "call leaked".to_owned()
    }
}

async fn never_reads(s: TestServer) -> String {
    // A peer that never reads, with a tiny receive buffer, while the echo agent talks to it.
    let id = uuid(17);
    let uri = media_uri(s.addr, &id).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(2048).unwrap();
    let tcp = sock.connect(s.addr).await.unwrap();
    let (mut stuck, _) = tokio_tungstenite::client_async(uri, tcp).await.unwrap();
    stuck.send(connected(16_000, &id)).await.unwrap();
    let speech = server_support::clip("speech_001");
    for f in speech.frames(speech.speech_ms[0].0, speech.speech_ms[0].1 + 600) {
        stuck.send(Message::binary(f)).await.unwrap();
    }
    // Meanwhile another call is served normally.
    let other = uuid(18);
    let mut ws = live(&s, &other, 16_000).await;
    for _ in 0..10 {
        ws.send(Message::binary(vec![0u8; 640])).await.unwrap();
    }
    let other_ok = stays_open(&mut ws, 300).await;
    let (status, _) = http_get(s.addr, "/healthz").await;
    let _ = ws.close(None).await;
    drop(stuck);
    let released = wait_idle(&s).await;
    format!("other call ok {other_ok}, healthz {status}, released {released}")
}

async fn many_sockets_dropped(s: TestServer) -> String {
    let id = uuid(19);
    let uri = media_uri(s.addr, &id).await;
    let path = uri.split_once(&s.addr.to_string()).unwrap().1.to_owned();
    let t0 = Instant::now();
    let mut refused = 0;
    for batch in 0..10 {
        let mut tasks = Vec::new();
        for i in 0..200 {
            let addr = s.addr;
            // Half with the real token (never completing the handshake), half forged.
            let p = if i % 2 == 0 {
                path.clone()
            } else {
                format!("/voice-stream/{}?token=forged{batch}{i}", uuid(i))
            };
            tasks.push(tokio::spawn(async move {
                let Ok(mut t) = TcpStream::connect(addr).await else {
                    return false;
                };
                let req = format!(
                    "GET {p} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                );
                // Send half the request (or all of it, for the forged ones) and drop.
                let cut = if i % 2 == 0 { req.len() / 2 } else { req.len() };
                t.write_all(&req.as_bytes()[..cut]).await.is_ok() && i % 2 == 1
            }));
        }
        for t in tasks {
            refused += usize::from(t.await.unwrap_or(false));
        }
    }
    // No wall-clock assertion (the machine is shared and noisy); the elapsed time is printed.
    println!("2000 sockets opened and dropped in {:?}", t0.elapsed());
    let (status, _) = http_get(s.addr, "/healthz").await;
    // The real token is still unused: the call can still connect.
    let mut ws = open(&uri).await.unwrap();
    ws.send(connected(16_000, &id)).await.unwrap();
    let ok = stays_open(&mut ws, 200).await;
    let _ = ws.close(None).await;
    format!("2000 dropped (forged {refused}), healthz {status}, call still opens {ok}")
}

async fn socket_without_answer(s: TestServer) -> String {
    let a = open(&format!("ws://{}/voice-stream/{}", s.addr, uuid(20))).await;
    let b = open(&format!(
        "ws://{}/voice-stream/{}?token=AAAA.BBBB",
        s.addr,
        uuid(20)
    ))
    .await;
    // A valid token of another call, on this call's path.
    let other = media_uri(s.addr, &uuid(21)).await;
    let token = other.split_once("?token=").unwrap().1;
    let c = open(&format!(
        "ws://{}/voice-stream/{}?token={token}",
        s.addr,
        uuid(20)
    ))
    .await;
    let m = metrics(&s).await;
    format!(
        "{:?} {:?} {:?}, wrong_call counted {:?}",
        a.err(),
        b.err(),
        c.err(),
        metric(
            &m,
            r#"voicegate_media_auth_failures_total{reason="wrong_call"}"#
        )
    )
}

async fn expired_media_token(s: TestServer) -> String {
    let id = uuid(22);
    let _ = media_uri(s.addr, &id).await;
    let cid = voicegate::agent::CallId::parse(&id).unwrap();
    let call = voicegate::server::media_token::MediaCall::new(cid, SampleRate::Hz16000);
    let (token, _) = s.state.auth().media().mint(&call, unix_now() - 3_600);
    let r = open(&format!("ws://{}/voice-stream/{id}?token={token}", s.addr)).await;
    format!("{:?}", r.err())
}

async fn second_socket_and_reuse(s: TestServer) -> String {
    let id = uuid(23);
    let uri = media_uri(s.addr, &id).await;
    let mut first = open(&uri).await.unwrap();
    first.send(connected(16_000, &id)).await.unwrap();
    let second = open(&uri).await.err();
    let _ = first.close(None).await;
    wait_idle(&s).await;
    let reuse = open(&uri).await.err();
    format!("second {second:?}, reused {reuse:?}")
}

async fn audio_stops(s: TestServer) -> String {
    let mut ws = live(&s, &uuid(24), 16_000).await;
    ws.send(Message::binary(vec![0u8; 640])).await.unwrap();
    let c = close_of(&mut ws).await;
    wait_idle(&s).await;
    let n = metric(&metrics(&s).await, "voicegate_media_idle_timeouts_total");
    format!("{c}, idle_timeouts {n:?}")
}

// ------------------------------------------------------------------------------- webhook cases

async fn events_for_unknown_call(s: TestServer) -> String {
    let a = post_json(s.addr, "/events", &completed(&uuid(30)), None).await;
    let b = post_json(
        s.addr,
        "/events",
        json!({"uuid": uuid(30), "status": "disconnected", "to": "ws://x/voice-stream/zzz"})
            .to_string()
            .as_bytes(),
        None,
    )
    .await;
    format!("{a} {b}")
}

async fn duplicate_out_of_order_events(s: TestServer) -> String {
    let id = uuid(31);
    let mut ws = live(&s, &id, 16_000).await;
    let mut codes = Vec::new();
    for status in [
        "answered",
        "completed",
        "started",
        "ringing",
        "completed",
        "answered",
    ] {
        let body = json!({"uuid": id, "status": status}).to_string();
        codes.push(post_json(s.addr, "/events", body.as_bytes(), None).await);
    }
    let c = close_of(&mut ws).await;
    format!("{codes:?}, {c}")
}

async fn answer_missing_fields(s: TestServer) -> String {
    let a = post_json(s.addr, "/answer", br#"{"to":"447700900000"}"#, None).await;
    let b = http_get(s.addr, "/answer?to=1&from=2").await.0;
    let c = post_json(s.addr, "/answer", br#"{"uuid":""}"#, None).await;
    let d = post_json(s.addr, "/answer", br#"{"uuid":"../../etc"}"#, None).await;
    let n = metric(&metrics(&s).await, "voicegate_webhook_errors_total");
    format!("{a} {b} {c} {d}, webhook_errors {n:?}")
}

async fn oversized_webhook(s: TestServer) -> String {
    let mut body = br#"{"uuid":"a","status":"completed","pad":""#.to_vec();
    body.extend(std::iter::repeat_n(b'x', 100_000));
    body.extend(br#""}"#);
    let a = post_json(s.addr, "/events", &body, None).await;
    let b = post_json(s.addr, "/answer", &body, None).await;
    format!("{a} {b}")
}

async fn nested_webhook(s: TestServer) -> String {
    let deep = format!("{}{}", "{\"a\":".repeat(5_000), "}".repeat(5_000));
    let a = post_json(s.addr, "/events", deep.as_bytes(), None).await;
    let b = post_json(s.addr, "/answer", deep.as_bytes(), None).await;
    let c = post_json(s.addr, "/fallback", deep.as_bytes(), None).await;
    format!("{a} {b} {c}")
}

// ------------------------------------------------------------------------------- signed

async fn signed_valid_and_replayed(s: TestServer) -> String {
    let body = completed(&uuid(40));
    let auth = vonage_jwt(&body, json!({}), Algorithm::HS256, SECRET);
    let a = post_json(s.addr, "/events", &body, Some(auth.clone())).await;
    let b = post_json(s.addr, "/events", &body, Some(auth)).await;
    // A signed GET answer: the hash covers the query as a JSON object in URL order.
    let q = [
        ("to", "447700900000"),
        ("from", "447700900123"),
        ("uuid", "abc-1"),
        ("conversation_uuid", "CON-1"),
    ];
    let obj = format!(
        "{{{}}}",
        q.iter()
            .map(|(k, v)| format!("\"{k}\":\"{v}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    let path = format!(
        "/answer?{}",
        q.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    );
    let auth = vonage_jwt(obj.as_bytes(), json!({}), Algorithm::HS256, SECRET);
    let (c, ncco) = http(s.addr, "GET", &path, &[("Authorization", auth)], b"").await;
    let connect = ncco.contains("\"connect\"");
    let m = metrics(&s).await;
    format!(
        "{a} then replay {b} (replayed {:?}); signed GET answer {c} connect {connect}",
        metric(
            &m,
            r#"voicegate_webhook_auth_failures_total{reason="replayed"}"#
        )
    )
}

async fn signed_forged(s: TestServer) -> String {
    let body = completed(&uuid(41));
    let auth = vonage_jwt(&body, json!({}), Algorithm::HS256, "not-the-secret");
    post_json(s.addr, "/events", &body, Some(auth))
        .await
        .to_string()
}

async fn signed_tampered(s: TestServer) -> String {
    let body = completed(&uuid(42));
    let auth = vonage_jwt(&body, json!({}), Algorithm::HS256, SECRET);
    let other = json!({"uuid": uuid(43), "status": "completed"})
        .to_string()
        .into_bytes();
    let a = post_json(s.addr, "/events", &other, Some(auth.clone())).await;
    // The claims segment altered: the signature no longer matches.
    let mut parts: Vec<String> = auth["Bearer ".len()..]
        .split('.')
        .map(str::to_owned)
        .collect();
    parts[1].insert(4, 'A');
    let b = post_json(
        s.addr,
        "/events",
        &body,
        Some(format!("Bearer {}", parts.join("."))),
    )
    .await;
    let m = metrics(&s).await;
    format!(
        "{a} {b} (payload_hash {:?})",
        metric(
            &m,
            r#"voicegate_webhook_auth_failures_total{reason="payload_hash"}"#
        )
    )
}

async fn signed_expired(s: TestServer) -> String {
    let body = completed(&uuid(44));
    let old = vonage_jwt(
        &body,
        json!({"iat": unix_now() - 3_600}),
        Algorithm::HS256,
        SECRET,
    );
    let future = vonage_jwt(
        &body,
        json!({"iat": unix_now() + 3_600}),
        Algorithm::HS256,
        SECRET,
    );
    let a = post_json(s.addr, "/events", &body, Some(old)).await;
    let b = post_json(s.addr, "/events", &body, Some(future)).await;
    format!("{a} {b}")
}

async fn signed_alg_none_and_rs256(s: TestServer) -> String {
    let body = completed(&uuid(45));
    let a = post_json(s.addr, "/events", &body, Some(unsigned_jwt("none", &body))).await;
    let b = post_json(s.addr, "/events", &body, Some(unsigned_jwt("RS256", &body))).await;
    let c = post_json(
        s.addr,
        "/events",
        &body,
        Some(vonage_jwt(&body, json!({}), Algorithm::HS512, SECRET)),
    )
    .await;
    let m = metrics(&s).await;
    format!(
        "{a} {b} {c} (alg_none {:?})",
        metric(
            &m,
            r#"voicegate_webhook_auth_failures_total{reason="alg_none"}"#
        )
    )
}

async fn signed_missing(s: TestServer) -> String {
    let body = completed(&uuid(46));
    let a = post_json(s.addr, "/events", &body, None).await;
    let b = answer(s.addr, &uuid(46)).await.0;
    let c = post_json(s.addr, "/fallback", &body, Some("Basic abc".into())).await;
    let d = post_json(
        s.addr,
        "/events",
        &body,
        Some(format!("Bearer {}", "a".repeat(20_000))),
    )
    .await;
    format!("{a} {b} {c} {d}")
}

async fn signed_socket_handshake(s: TestServer) -> String {
    // The answer asks Vonage to sign the handshake; the token alone is not enough.
    let id = uuid(47);
    let body =
        format!(r#"{{"uuid":"{id}","to":"447700900000","from":"1","conversation_uuid":"C"}}"#);
    let auth = vonage_jwt(body.as_bytes(), json!({}), Algorithm::HS256, SECRET);
    let (status, ncco) = http(
        s.addr,
        "POST",
        "/answer",
        &[
            ("Content-Type", "application/json".into()),
            ("Authorization", auth),
        ],
        body.as_bytes(),
    )
    .await;
    let ncco: Value = serde_json::from_str(&ncco).unwrap_or(Value::Null);
    let ep = &ncco[0]["endpoint"][0];
    let asks = ep["authorization"]["type"] == "vonage";
    let uri = ep["uri"].as_str().unwrap_or("").to_owned();
    let without = open(&uri).await.err();
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = uri.as_str().into_client_request().unwrap();
    // §1.2: the handshake token has no body to hash.
    let jwt = vonage_jwt(b"", json!({}), Algorithm::HS256, SECRET);
    req.headers_mut()
        .insert("Authorization", jwt.parse().unwrap());
    let with = match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, _)) => {
            ws.send(connected(16_000, &id)).await.unwrap();
            let ok = stays_open(&mut ws, 200).await;
            let _ = ws.close(None).await;
            if ok { "101" } else { "closed" }
        }
        Err(_) => "refused",
    };
    format!("answer {status} asks {asks}; without jwt {without:?}; with jwt {with}")
}

// ------------------------------------------------------------------------------- the table

fn cases() -> Vec<Case> {
    vec![
        case!(
            "odd-length frame",
            unsigned,
            odd_length_frame,
            "frames_invalid_total 1, frames_in 1, call goes on"
        ),
        case!(
            "wrong-size frames at 8 kHz",
            rate_8k,
            wrong_size_8k,
            "frames_invalid_total 2, frames_in 1, call goes on"
        ),
        case!(
            "wrong-size frames at 16 kHz",
            unsigned,
            wrong_size_16k,
            "frames_invalid_total 2, frames_in 1, call goes on"
        ),
        case!(
            "wrong-size frames at 24 kHz",
            rate_24k,
            wrong_size_24k,
            "frames_invalid_total 2, frames_in 1, call goes on"
        ),
        case!(
            "binary before connected",
            unsigned,
            binary_before_connected,
            "held then processed: frames_in 3, call goes on true"
        ),
        case!(
            "binary, then connected at another rate",
            unsigned,
            binary_then_rate_mismatch,
            "close 1003, frames_in 0"
        ),
        case!(
            "two connected messages",
            unsigned,
            two_connected,
            "text_messages_invalid_total 2, frames_in 1, call goes on"
        ),
        case!(
            "unknown content-type in connected",
            unsigned,
            unknown_content_type,
            "close 1003"
        ),
        case!(
            "connected for another call",
            unsigned,
            connected_for_another_call,
            "close 1008"
        ),
        case!("non-UTF-8 text frame", unsigned, non_utf8_text, "closed"),
        case!("huge text message (100 KB)", unsigned, huge_text, "closed"),
        case!(
            "huge binary message (16 KiB)",
            unsigned,
            huge_binary,
            "closed"
        ),
        case!(
            "deeply nested JSON text",
            unsigned,
            deeply_nested_json,
            "text_messages_invalid_total 1, frames_in 1, call goes on"
        ),
        case!(
            "unknown event",
            unsigned,
            unknown_event,
            "text_messages_unknown_total 1, frames_in 1, call goes on"
        ),
        case!(
            "DTMF with a bad digit",
            unsigned,
            dtmf_bad_digit,
            "text_messages_invalid_total 3, frames_in 1, call goes on"
        ),
        case!(
            "abrupt TCP close mid-frame",
            unsigned,
            abrupt_close_mid_frame,
            "call released"
        ),
        case!(
            "a peer that never reads",
            unsigned,
            never_reads,
            "other call ok true, healthz 200, released true"
        ),
        case!(
            "2000 sockets opened and dropped",
            unsigned,
            many_sockets_dropped,
            "2000 dropped (forged 1000), healthz 200, call still opens true"
        ),
        case!(
            "socket without, with a forged or a foreign token",
            unsigned,
            socket_without_answer,
            "Some(401) Some(401) Some(401), wrong_call counted Some(1.0)"
        ),
        case!(
            "expired media token",
            unsigned,
            expired_media_token,
            "Some(401)"
        ),
        case!(
            "second socket, then the used token again",
            unsigned,
            second_socket_and_reuse,
            "second Some(409), reused Some(401)"
        ),
        case!(
            "audio stops",
            unsigned,
            audio_stops,
            "close 1008, idle_timeouts Some(1.0)"
        ),
        case!(
            "events for unknown calls",
            unsigned,
            events_for_unknown_call,
            "200 200"
        ),
        case!(
            "duplicate and out-of-order events",
            unsigned,
            duplicate_out_of_order_events,
            "[200, 200, 200, 200, 200, 200], close 1000"
        ),
        case!(
            "answer webhook with missing fields",
            unsigned,
            answer_missing_fields,
            "400 400 400 400, webhook_errors Some(4.0)"
        ),
        case!(
            "oversized webhook body",
            unsigned,
            oversized_webhook,
            "413 413"
        ),
        case!(
            "deeply nested webhook JSON",
            unsigned,
            nested_webhook,
            "400 400 400"
        ),
        case!(
            "signed: valid, then replayed; signed GET",
            signed,
            signed_valid_and_replayed,
            "200 then replay 401 (replayed Some(1.0)); signed GET answer 200 connect true"
        ),
        case!(
            "signed: forged (wrong secret)",
            signed,
            signed_forged,
            "401"
        ),
        case!(
            "signed: tampered body and claims",
            signed,
            signed_tampered,
            "401 401 (payload_hash Some(1.0))"
        ),
        case!(
            "signed: expired and future iat",
            signed,
            signed_expired,
            "401 401"
        ),
        case!(
            "signed: alg none, RS256, HS512",
            signed,
            signed_alg_none_and_rs256,
            "401 401 401 (alg_none Some(1.0))"
        ),
        case!(
            "signed: missing, not Bearer, oversized",
            signed,
            signed_missing,
            "401 401 401 401"
        ),
        case!(
            "signed socket handshake",
            signed_socket,
            signed_socket_handshake,
            "answer 200 asks true; without jwt Some(401); with jwt 101"
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_table() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let cases = cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    // Independent servers: run the cases concurrently, a few at a time.
    for chunk in cases.chunks(6) {
        let mut handles = Vec::new();
        for c in chunk {
            let server = start((c.server)()).await;
            let (addr, state) = (server.addr, server.state.clone());
            let run = c.run;
            handles.push((
                c,
                addr,
                state,
                tokio::spawn(async move { timeout(Duration::from_secs(20), run(server)).await }),
            ));
        }
        for (c, addr, state, h) in handles {
            let got = match h.await {
                Ok(Ok(got)) => got,
                Ok(Err(_)) => "timed out".to_owned(),
                Err(e) => format!("panicked: {e}"),
            };
            let probe = TestServer { addr, state };
            let idle = wait_idle(&probe).await;
            let (health, _) = http_get(addr, "/healthz").await;
            eprintln!("{:<52} {got}", c.name);
            if got != c.expect || !idle || health != 200 {
                failures.push(format!(
                    "{}: expected {:?}, got {got:?} (active calls back to 0: {idle}, healthz {health})",
                    c.name, c.expect
                ));
            }
        }
    }
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a server thread panicked");
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
