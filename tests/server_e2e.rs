//! End to end through the real server: webhooks through `app()` with the protocol's JSON vectors
//! (vonage-protocol.md §10), and full calls over real sockets at 8, 16 and 24 kHz with a
//! tokio-tungstenite client playing Vonage: answer → NCCO → media socket → connected → a corpus
//! speech clip as exact 20 ms frames → the echo comes back as exact frames → caller speech over
//! the echo → `{"action":"clear"}` → close → `/metrics` back to zero active calls.

mod server_support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use server_support::{call, clip, config_at, http_get, media_uri, metric, start};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tower::ServiceExt;
use voicegate::agent::echo::EchoAgent;
use voicegate::core::SampleRate;
use voicegate::server::{AppState, ServerConfig, app};

// ------------------------------------------------------------------------------- webhooks

fn vector(name: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/vectors")
        .join(name);
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn state() -> AppState {
    AppState::new(
        ServerConfig::new(),
        std::sync::Arc::new(EchoAgent::default()),
    )
}

fn state_at(public_url: &str) -> AppState {
    let mut cfg = ServerConfig::new();
    cfg.public_url = Some(public_url.into());
    AppState::new(cfg, std::sync::Arc::new(EchoAgent::default()))
}

async fn send(st: &AppState, req: Request<Body>) -> (StatusCode, String) {
    let res = app(st.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn post(path: &str, body: &Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn check_answer_ncco(body: &str, ws_base: &str, http_base: &str) {
    let ncco: Value = serde_json::from_str(body).unwrap();
    let actions = ncco.as_array().unwrap();
    let connect = actions.last().unwrap();
    assert_eq!(connect["action"], "connect");
    assert_eq!(connect["eventType"], "synchronous");
    assert_eq!(
        connect["eventUrl"],
        serde_json::json!([format!("{http_base}/events")])
    );
    assert_eq!(connect["from"], "447700900000");
    let ep = &connect["endpoint"][0];
    assert_eq!(ep["type"], "websocket");
    // The URI carries the call's media token.
    let uri = ep["uri"].as_str().unwrap();
    let prefix = format!("{ws_base}/voice-stream/63f61863-4a51-4f6b-86e1-46edebcf9356?token=");
    assert!(
        uri.starts_with(&prefix) && uri.len() > prefix.len() + 40,
        "{uri}"
    );
    assert_eq!(ep["content-type"], "audio/l16;rate=16000");
    assert_eq!(
        ep["headers"]["call_uuid"],
        "63f61863-4a51-4f6b-86e1-46edebcf9356"
    );
    assert_eq!(ep["headers"]["from"], "447700900123");
    assert_eq!(ep["headers"]["to"], "447700900000");
}

#[tokio::test]
async fn answer_get_and_post_vectors() {
    let st = state();
    // §10.1, through a TLS tunnel that sets X-Forwarded-*.
    let line = vector("01-answer-get.json")["http_request_line"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = line.split(' ').nth(1).unwrap();
    let req = Request::get(path)
        .header("host", "127.0.0.1:3000")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "gw.example.com")
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(&st, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    check_answer_ncco(&body, "wss://gw.example.com", "https://gw.example.com");

    // §10.2, plain HTTP with only a Host header.
    let mut req = post("/answer", &vector("02-answer-post.json")["content"]);
    req.headers_mut()
        .insert("host", "localhost:3000".parse().unwrap());
    let (status, body) = send(&st, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    check_answer_ncco(&body, "ws://localhost:3000", "http://localhost:3000");

    // A greeting comes first; a configured public URL wins over the headers.
    let mut cfg = ServerConfig::new();
    cfg.public_url = Some("https://voice.example.org/vg".into());
    cfg.greeting = Some(voicegate::server::config::Greeting {
        text: "Hello".into(),
        language: Some("en-GB".into()),
        style: Some(2),
    });
    let st2 = AppState::new(cfg, std::sync::Arc::new(EchoAgent::default()));
    let (status, body) = send(
        &st2,
        post("/answer", &vector("02-answer-post.json")["content"]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let ncco: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        ncco[0],
        serde_json::json!({"action":"talk","text":"Hello","language":"en-GB","style":2})
    );
    check_answer_ncco(
        &body,
        "wss://voice.example.org/vg",
        "https://voice.example.org/vg",
    );

    // Missing uuid: a 400 with a reason, never a 500.
    let (status, body) = send(&st, post("/answer", &serde_json::json!({"to": "1"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("uuid"), "{body}");
}

#[tokio::test]
async fn event_vectors_are_acknowledged() {
    let st = state();
    // §10.9: our socket dropped; the default answer is a spoken apology. (Before §10.15 for
    // the same call: once `completed` is recorded, a `disconnected` needs no fallback.)
    let (status, body) = send(
        &st,
        post("/events", &vector("09-event-disconnected.json")["content"]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let ncco: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ncco[0]["action"], "talk", "{body}");
    for name in [
        "03-event-started.json",
        "04-event-ringing.json",
        "05-event-answered.json",
        "06-event-busy.json",
        "07-event-cancelled.json",
        "08-event-unanswered.json",
        "10-event-rejected.json",
        "11-event-failed.json",
        "12-event-human.json",
        "13-event-machine.json",
        "14-event-timeout.json",
        "15-event-completed.json",
        "16-event-input.json",
        "17-event-record.json",
        "18-event-transfer.json",
        "19-event-error.json",
        "x02-event-ws-started.json",
        "x03-event-ws-unanswered.json",
        "x04-event-input-speech.json",
    ] {
        let (status, body) = send(&st, post("/events", &vector(name)["content"])).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
    }
    // §10.20 (a notify payload) is no known kind: 204 and a counter.
    let (status, _) = send(
        &st,
        post("/events", &vector("20-event-notify-action.json")["content"]),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // After `completed`, the same `disconnected` gets no fallback.
    let (status, body) = send(
        &st,
        post("/events", &vector("09-event-disconnected.json")["content"]),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    // GET form, unknown fields and statuses are tolerated.
    let req = Request::get("/events?status=something-new&uuid=abc&extra=1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&st, req).await.0, StatusCode::OK);
    // Garbage is a 400, and counted.
    let (status, _) = send(
        &st,
        Request::post("/events").body(Body::from("{nope")).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let text = send(&st, Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .1;
    assert_eq!(
        metric(
            &text,
            r#"voicegate_webhook_events_total{status="completed"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, r#"voicegate_webhook_events_total{status="unknown"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"voicegate_webhook_events_total{status="other_status"}"#
        ),
        Some(1.0)
    );
    assert_eq!(metric(&text, "voicegate_webhook_errors_total"), Some(1.0));
}

#[tokio::test]
async fn reconnect_policy_returns_the_same_connect() {
    let mut cfg = ServerConfig::new();
    cfg.on_disconnect = voicegate::server::config::OnDisconnect::Reconnect;
    cfg.public_url = Some("https://gateway.example.com".into());
    let st = AppState::new(cfg, std::sync::Arc::new(EchoAgent::default()));
    let (_, body) = send(
        &st,
        post("/answer", &vector("02-answer-post.json")["content"]),
    )
    .await;
    let ncco: Value = serde_json::from_str(&body).unwrap();
    // Vonage reports the websocket leg's events with `to` = the URI it connected to (§1.8),
    // media token included: that is how any instance can re-mint it.
    let mut ev = vector("09-event-disconnected.json")["content"].clone();
    ev["to"] = ncco[0]["endpoint"][0]["uri"].clone();
    for _ in 0..3 {
        let (status, body) = send(&st, post("/events", &ev)).await;
        assert_eq!(status, StatusCode::OK);
        let ncco: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(ncco[0]["action"], "connect", "{body}");
        // Each reconnect gets a fresh media token (the last one was used).
        let uri = ncco[0]["endpoint"][0]["uri"].as_str().unwrap();
        assert!(
            uri.starts_with(
                "wss://gateway.example.com/voice-stream/63f61863-4a51-4f6b-86e1-46edebcf9356?token="
            ),
            "{uri}"
        );
    }
    // Bounded: after three reconnects the caller gets the apology.
    let (_, body) = send(&st, post("/events", &ev)).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()[0]["action"],
        "talk"
    );
    // After `completed`, a `disconnected` needs no fallback.
    send(
        &st,
        post("/events", &vector("15-event-completed.json")["content"]),
    )
    .await;
    let (status, body) = send(&st, post("/events", &ev)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
}

#[tokio::test]
async fn health_and_readiness() {
    let st = state_at("https://gateway.example.com");
    assert_eq!(
        send(&st, Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&st, Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .0,
        StatusCode::OK
    );
    st.begin_drain();
    assert_eq!(
        send(&st, Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Draining: not ready, but an answer webhook still gets a working NCCO (the load balancer
    // sends the socket to a ready instance; this one would still accept it).
    let (status, body) = send(
        &st,
        post("/answer", &vector("02-answer-post.json")["content"]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    check_answer_ncco(
        &body,
        "wss://gateway.example.com",
        "https://gateway.example.com",
    );
    let text = send(&st, Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .1;
    assert_eq!(metric(&text, "voicegate_draining"), Some(1.0), "{text}");
}

// ------------------------------------------------------------------------------- calls

/// What the fake Vonage saw.
#[derive(Debug, Default)]
struct Seen {
    frames: usize,
    loud_frames: usize,
    wrong_size: usize,
    clear_after_frames: Option<usize>,
    notifies: usize,
}

async fn full_call(rate: SampleRate, clip_id: &str) {
    let server = start(config_at(rate)).await;
    let clip = clip(clip_id);
    assert_eq!(clip.rate, rate);
    let uuid = format!("0000{}-aaaa-bbbb-cccc-000000000000", rate.hz());
    let leg = call(server.addr, &uuid).await;
    assert_eq!(leg.rate, rate);
    let frame_bytes = rate.frame_bytes();
    let (mut tx, mut rx) = leg.ws.split();

    // Reader: checks every message, answers `clear` like Vonage does.
    let (cleared_tx, mut cleared_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (seen_tx, seen_rx) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut seen = Seen::default();
        while let Some(Ok(msg)) = rx.next().await {
            match msg {
                Message::Binary(b) => {
                    seen.frames += 1;
                    if b.len() != frame_bytes {
                        seen.wrong_size += 1;
                    }
                    let loud = b
                        .chunks_exact(2)
                        .any(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs() > 500);
                    seen.loud_frames += usize::from(loud);
                    let _ = seen_tx.send(seen.loud_frames);
                }
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    match v["action"].as_str() {
                        Some("clear") => {
                            seen.clear_after_frames.get_or_insert(seen.frames);
                            let _ = cleared_tx.send(());
                        }
                        Some("notify") => seen.notifies += 1,
                        other => panic!("unexpected command {other:?}: {t}"),
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        seen
    });

    // The caller's first utterance, faster than real time (VAD and turn-taking count frames).
    let (s0, _) = clip.speech_ms[0];
    let end = clip
        .speech_ms
        .iter()
        .map(|s| s.1)
        .take_while(|&e| e < s0 + 3_500)
        .last()
        .unwrap();
    let utterance = clip.frames(s0.saturating_sub(400), end + 100);
    for f in &utterance {
        tx.send(Message::binary(f.clone())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Then silence in real time, as Vonage streams continuously, until the echo is playing.
    let silence = vec![0u8; frame_bytes];
    let mut seen_rx2 = seen_rx.clone();
    let t0 = Instant::now();
    while *seen_rx2.borrow_and_update() < 15 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no echo within 10 s at {rate}"
        );
        tx.send(Message::binary(silence.clone())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Barge in: speech over the echo, in real time, until the server sends `clear`. The caller
    // speaks into the microphone, so louder (+10 dB) than the echo of the bot could come back;
    // at the same level the echo guard rightly hesitates.
    let loud: Vec<Vec<u8>> = utterance
        .iter()
        .map(|f| {
            f.chunks_exact(2)
                .flat_map(|s| {
                    let v = (i32::from(i16::from_le_bytes([s[0], s[1]])) * 3).clamp(-32_768, 32_767)
                        as i16;
                    v.to_le_bytes()
                })
                .collect()
        })
        .collect();
    let t0 = Instant::now();
    let mut i = 0;
    let cleared = loop {
        if let Ok(()) = cleared_rx.try_recv() {
            break true;
        }
        if t0.elapsed() > Duration::from_secs(8) {
            break false;
        }
        let f = &loud[(20 + i) % loud.len()];
        tx.send(Message::binary(f.clone())).await.unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        cleared,
        "no clear after caller speech over the echo at {rate}; loud frames seen {}",
        *seen_rx.borrow()
    );
    tx.send(Message::text(r#"{"event":"websocket:cleared"}"#))
        .await
        .unwrap();
    // A DTMF press and an unknown event are fine mid-call.
    tx.send(Message::text(
        r#"{"event":"websocket:dtmf","digit":"5","duration":260}"#,
    ))
    .await
    .unwrap();
    tx.send(Message::text(r#"{"event":"websocket:whatever"}"#))
        .await
        .unwrap();

    let (status, body) = http_get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(metric(&body, "voicegate_active_calls"), Some(1.0), "{body}");
    // The call's designed delays, at its rate pair (the echo agent runs at the call's rate).
    let hz = rate.hz();
    let stage = |name: &str| {
        metric(
            &body,
            &format!(
                "voicegate_stage_delay_seconds{{stage=\"{name}\",call_rate=\"{hz}\",agent_rate=\"{hz}\"}}"
            ),
        )
    };
    let defaults = voicegate::core::SessionConfig::new(rate, rate);
    assert_eq!(
        stage("end_of_turn"),
        Some(defaults.hangover.as_secs_f64()),
        "{body}"
    );
    assert_eq!(
        stage("pacing_lead"),
        Some(defaults.lead.as_secs_f64()),
        "{body}"
    );
    assert_eq!(stage("resample_in"), Some(0.0), "{body}");
    let vad_resample = stage("vad_resample").expect("vad_resample exported");
    assert_eq!(vad_resample > 0.0, rate == SampleRate::Hz24000, "{body}");

    tx.send(Message::Close(None)).await.unwrap();
    let seen = timeout(Duration::from_secs(5), reader)
        .await
        .expect("server closes")
        .unwrap();
    assert_eq!(seen.wrong_size, 0, "{seen:?}");
    assert!(seen.loud_frames >= 15, "{seen:?}");
    assert!(seen.clear_after_frames.is_some(), "{seen:?}");
    assert!(seen.notifies > 0, "{seen:?}");

    // The call's resources are released.
    let t0 = Instant::now();
    loop {
        let (_, body) = http_get(server.addr, "/metrics").await;
        if metric(&body, "voicegate_active_calls") == Some(0.0) {
            assert!(
                metric(&body, "voicegate_frames_in_total").unwrap() >= utterance.len() as f64,
                "{body}"
            );
            assert!(
                metric(&body, "voicegate_frames_out_total").unwrap() >= 15.0,
                "{body}"
            );
            assert!(
                metric(&body, "voicegate_barge_ins_total").unwrap() >= 1.0,
                "{body}"
            );
            assert_eq!(metric(&body, "voicegate_dtmf_total"), Some(1.0), "{body}");
            assert_eq!(metric(&body, "voicegate_calls_total"), Some(1.0), "{body}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "active calls never returned to 0: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.state.active_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_call_8k() {
    full_call(SampleRate::Hz8000, "speech_004").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_call_16k() {
    full_call(SampleRate::Hz16000, "speech_001").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_call_24k() {
    full_call(SampleRate::Hz24000, "speech_013").await;
}

#[tokio::test]
async fn limits_and_bad_sockets() {
    let mut cfg = config_at(SampleRate::Hz16000);
    cfg.max_calls = 1;
    cfg.connect_timeout = Duration::from_millis(300);
    let server = start(cfg).await;
    let url = |id: &str| format!("ws://{}/voice-stream/{id}", server.addr);

    // A bad call id is refused before the upgrade.
    assert!(
        tokio_tungstenite::connect_async(url("bad%20id"))
            .await
            .is_err()
    );
    // One call fills the server; the next socket gets a 503 before the upgrade.
    // (The second call is answered first: a full server answers with the busy message.)
    let second = media_uri(server.addr, "99999999-2222-3333-4444-555555555555").await;
    let mut first = call(server.addr, "11111111-2222-3333-4444-555555555555").await;
    match tokio_tungstenite::connect_async(second).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    // Wrong-size and odd frames are counted and dropped; the call goes on.
    first
        .ws
        .send(Message::binary(vec![0u8; 641]))
        .await
        .unwrap();
    first
        .ws
        .send(Message::binary(vec![0u8; 320]))
        .await
        .unwrap();
    first.ws.send(Message::text("{not json")).await.unwrap();
    first
        .ws
        .send(Message::binary(vec![0u8; 640]))
        .await
        .unwrap();
    // Let the server read them before the call is ended from outside.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A terminal event webhook ends the call: the server closes the socket.
    let ev =
        serde_json::json!({"uuid": "11111111-2222-3333-4444-555555555555", "status": "completed"});
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let body = ev.to_string();
    let req = format!(
        "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
        .await
        .unwrap();
    let closed = timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = first.ws.next().await {
            if let Message::Close(c) = m {
                return c.map(|c| u16::from(c.code));
            }
        }
        None
    })
    .await
    .expect("socket closed after completed");
    assert_eq!(closed, Some(1000));

    // A socket that never sends `websocket:connected` is closed after the deadline.
    let t0 = Instant::now();
    loop {
        if server.state.active_calls() == 0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let silent_uri = media_uri(server.addr, "77777777-2222-3333-4444-555555555555").await;
    let (mut silent, _) = tokio_tungstenite::connect_async(silent_uri).await.unwrap();
    let closed = timeout(Duration::from_secs(5), silent.next())
        .await
        .expect("closed after the connect deadline");
    assert!(
        matches!(closed, Some(Ok(Message::Close(_))) | None | Some(Err(_))),
        "{closed:?}"
    );

    let (_, body) = http_get(server.addr, "/metrics").await;
    assert_eq!(
        metric(&body, "voicegate_frames_invalid_total"),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            r#"voicegate_calls_rejected_total{reason="at_capacity"}"#
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            r#"voicegate_calls_rejected_total{reason="connect_timeout"}"#
        ),
        Some(1.0),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_then_ends_calls() {
    let mut cfg = config_at(SampleRate::Hz8000);
    cfg.drain_timeout = Duration::from_millis(300);
    let state = AppState::new(cfg, std::sync::Arc::new(EchoAgent::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(voicegate::server::serve(
        listener,
        state.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let mut leg = call(addr, "5eeeeeee-1111-2222-3333-444444444444").await;
    leg.ws.send(Message::binary(vec![0u8; 320])).await.unwrap();
    stop_tx.send(()).unwrap();
    // Draining: new calls hear the busy message; the live call goes on until the drain timeout
    // and is then closed normally.
    let t0 = Instant::now();
    let code = timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = leg.ws.next().await {
            if let Message::Close(c) = m {
                return c.map(|c| u16::from(c.code));
            }
        }
        None
    })
    .await
    .expect("the call is ended after the drain timeout");
    assert_eq!(code, Some(1000));
    assert!(t0.elapsed() >= Duration::from_millis(250));
    timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
    assert_eq!(state.active_calls(), 0);
}

/// `voicegate call --inline-ncco`: the NCCO it sends Vonage connects straight to the media
/// socket; the running server (its own process, the same `--media-token-key`) must accept it.
#[tokio::test]
async fn an_inline_outbound_ncco_is_accepted_by_the_server() {
    use voicegate::server::call_control::{OutboundNcco, outbound_call};
    use voicegate::server::config::MediaTokenKeyConfig;
    let key = || Some(MediaTokenKeyConfig("an inline-ncco test key".into()));
    let mut server_cfg = config_at(SampleRate::Hz16000);
    server_cfg.media_token_key = key();
    let s = start(server_cfg).await;
    // The `call` process: the same flags, so the same key and public URL.
    let mut call_cfg = config_at(SampleRate::Hz16000);
    call_cfg.media_token_key = key();
    call_cfg.public_url = Some(format!("http://{}", s.addr));
    let body = outbound_call(&call_cfg, "14155550123", None, OutboundNcco::Inline).unwrap();
    let v = serde_json::to_value(&body).unwrap();
    let ep = &v["ncco"][0]["endpoint"][0];
    let uri = ep["uri"].as_str().unwrap();
    assert!(
        uri.starts_with(&format!("ws://{}/voice-stream/out-", s.addr)),
        "{uri}"
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(uri)
        .await
        .expect("the server accepts the inline NCCO's socket");
    let mut connected = serde_json::Map::new();
    connected.insert("event".into(), "websocket:connected".into());
    connected.insert("content-type".into(), ep["content-type"].clone());
    for (k, v) in ep["headers"].as_object().unwrap() {
        connected.insert(k.clone(), v.clone());
    }
    ws.send(Message::text(Value::Object(connected).to_string()))
        .await
        .unwrap();
    for _ in 0..10 {
        ws.send(Message::binary(vec![0u8; 640])).await.unwrap();
    }
    server_support::wait_metric(s.addr, "voicegate_active_calls", 1.0).await;
    let (_, m) = http_get(s.addr, "/metrics").await;
    assert_eq!(
        metric(&m, "voicegate_media_auth_failures_total"),
        None,
        "{m}"
    );

    // Without the server's key the same NCCO is refused at the upgrade.
    call_cfg.media_token_key = Some(MediaTokenKeyConfig(
        "some other key, not the server's".into(),
    ));
    let body = outbound_call(&call_cfg, "14155550123", None, OutboundNcco::Inline).unwrap();
    let v = serde_json::to_value(&body).unwrap();
    let uri = v["ncco"][0]["endpoint"][0]["uri"].as_str().unwrap();
    assert!(tokio_tungstenite::connect_async(uri).await.is_err());
}
