//! The simulated Vonage of `voicegate simulate` (src/tools/vonage_side.rs), on its own against
//! tiny in-test WebSocket servers (flattened headers, `Authorization`, `clear`, `notify`, strict
//! frame sizes), and the positive path against the real server. No tight timing assertions.

mod server_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use server_support::{config_at, start};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use voicegate::core::SampleRate;
use voicegate::tools::simulate::{SimulateArgs, simulate};
use voicegate::tools::vonage_side::{
    self, AuthSettings, CallerScript, MediaEnd, MediaTarget, NoObserver, StopRule, VonageSideError,
    run_media,
};

type ServerWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A one-connection WebSocket server on 127.0.0.1:0; returns its address and a future that
/// accepts the socket and yields it with the handshake's `Authorization` header.
// The handshake callback's error type is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
async fn ws_server() -> (String, tokio::task::JoinHandle<(ServerWs, Option<String>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let auth = Arc::new(Mutex::new(None));
        let seen = auth.clone();
        let ws = tokio_tungstenite::accept_hdr_async(tcp, move |req: &Request, res: Response| {
            *seen.lock().unwrap() = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok(res)
        })
        .await
        .unwrap();
        let a = auth.lock().unwrap().clone();
        (ws, a)
    });
    (format!("ws://{addr}/voice-stream/abc"), task)
}

fn target(uri: &str, authorization: Option<Value>) -> MediaTarget {
    let mut ep = json!({
        "type": "websocket", "uri": uri, "content-type": "audio/l16;rate=16000",
        "headers": {"call_uuid": "abc", "caller": "447700900123", "nested": {"k": [1, 2]}, "vip": true}
    });
    if let Some(a) = authorization {
        ep["authorization"] = a;
    }
    let ncco = json!([{"action": "talk", "text": "hi"}, {"action": "connect", "endpoint": [ep]}]);
    vonage_side::media_target(serde_json::from_value(ncco).unwrap()).unwrap()
}

async fn first_text(ws: &mut ServerWs) -> Value {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(_)) => {}
            other => panic!("socket ended before a text message: {other:?}"),
        }
    }
}

fn silence_script() -> (CallerScript, Bytes) {
    let r = SampleRate::Hz16000;
    (
        CallerScript::new(r, &[0i16; 3_200], Duration::ZERO),
        Bytes::from(vec![0u8; r.frame_bytes()]),
    )
}

#[tokio::test]
async fn connected_message_flattens_headers_and_authorization_is_sent() {
    // Custom authorization: the value verbatim.
    let (uri, server) = ws_server().await;
    let t = target(
        &uri,
        Some(json!({"type": "custom", "value": "Bearer 3f9c1b7e0d2a4c5e8f6a"})),
    );
    assert_eq!(t.rate, SampleRate::Hz16000);
    let _client = vonage_side::connect_media(&t, &AuthSettings::default())
        .await
        .unwrap();
    let (mut ws, auth) = server.await.unwrap();
    assert_eq!(auth.as_deref(), Some("Bearer 3f9c1b7e0d2a4c5e8f6a"));
    assert_eq!(
        first_text(&mut ws).await,
        json!({"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
               "call_uuid": "abc", "caller": "447700900123", "nested": {"k": [1, 2]}, "vip": true})
    );

    // `{"type":"vonage"}` needs the signature secret to mint the JWT.
    let t = target(&uri, Some(json!({"type": "vonage"})));
    assert!(matches!(
        vonage_side::connect_media(&t, &AuthSettings::default()).await,
        Err(VonageSideError::NeedSignatureSecret)
    ));
    let (uri, server) = ws_server().await;
    let t = target(&uri, Some(json!({"type": "vonage"})));
    let auth = AuthSettings {
        signature_secret: Some("s3cret".into()),
        ..AuthSettings::default()
    };
    let _client = vonage_side::connect_media(&t, &auth).await.unwrap();
    let (_ws, header) = server.await.unwrap();
    let header = header.expect("authorization sent");
    let token = header.strip_prefix("Bearer ").expect("bearer");
    assert_eq!(token.split('.').count(), 3, "{token}");

    // No authorization asked: none sent.
    let (uri, server) = ws_server().await;
    let _client = vonage_side::connect_media(&target(&uri, None), &AuthSettings::default())
        .await
        .unwrap();
    assert_eq!(server.await.unwrap().1, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_empties_playback_and_notify_waits_for_playback() {
    let (uri, server) = ws_server().await;
    let t = target(&uri, None);
    let mut client = vonage_side::connect_media(&t, &AuthSettings::default())
        .await
        .unwrap();
    let (script, silence) = silence_script();
    let caller = tokio::spawn(async move {
        run_media(
            &mut client,
            &script,
            &silence,
            StopRule::After(Duration::from_secs(20)),
            &mut NoObserver,
        )
        .await
    });
    let (mut ws, _) = server.await.unwrap();
    first_text(&mut ws).await; // connected
    let frame = vec![0x10u8; 640];
    // A 2 s burst, a marker behind it, then `clear`: cleared comes back, the marker never.
    for _ in 0..100 {
        ws.send(Message::binary(frame.clone())).await.unwrap();
    }
    ws.send(Message::text(
        r#"{"action":"notify","payload":{"mark":"a"}}"#,
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws.send(Message::text(r#"{"action":"clear"}"#))
        .await
        .unwrap();
    assert_eq!(
        first_text(&mut ws).await,
        json!({"event": "websocket:cleared"})
    );
    // Five frames and a marker: answered once they have played (about 100 ms), not before.
    let sent = Instant::now();
    for _ in 0..5 {
        ws.send(Message::binary(frame.clone())).await.unwrap();
    }
    ws.send(Message::text(
        r#"{"action":"notify","payload":{"mark":"b","n":5}}"#,
    ))
    .await
    .unwrap();
    let v = tokio::time::timeout(Duration::from_secs(5), first_text(&mut ws))
        .await
        .expect("notify answered");
    assert_eq!(
        v,
        json!({"event": "websocket:notify", "payload": {"mark": "b", "n": 5}}),
        "the cleared marker `a` must not come back"
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(60),
        "answered before playback reached it: {:?}",
        sent.elapsed()
    );
    // An unknown command is a violation, not fatal; then the app closes normally.
    ws.send(Message::text(r#"{"action":"dance"}"#))
        .await
        .unwrap();
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .await
    .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), caller)
        .await
        .expect("caller ends")
        .unwrap();
    assert!(
        matches!(r.end, MediaEnd::ServerClosed { code: Some(1000) }),
        "{:?}",
        r.end
    );
    assert_eq!(r.counters.clears, 1);
    assert_eq!(r.counters.notifies, 2);
    assert_eq!(r.counters.notifies_answered, 1);
    assert_eq!(r.counters.protocol_violations, 1);
    assert_eq!(r.counters.frames_received, 105);
    assert!(r.counters.frames_played < 50, "{:?}", r.counters);
    assert!(r.counters.frames_sent > 0);
}

#[tokio::test]
async fn a_wrong_sized_frame_drops_the_socket_abnormally() {
    let (uri, server) = ws_server().await;
    let mut client = vonage_side::connect_media(&target(&uri, None), &AuthSettings::default())
        .await
        .unwrap();
    let (script, silence) = silence_script();
    let caller = tokio::spawn(async move {
        let r = run_media(
            &mut client,
            &script,
            &silence,
            StopRule::After(Duration::from_secs(20)),
            &mut NoObserver,
        )
        .await;
        drop(client);
        r
    });
    let (mut ws, _) = server.await.unwrap();
    first_text(&mut ws).await;
    ws.send(Message::binary(vec![0u8; 640])).await.unwrap();
    // 160 samples where 320 are required: vocode-core#727's case.
    ws.send(Message::binary(vec![0u8; 320])).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), caller)
        .await
        .expect("caller ends")
        .unwrap();
    assert!(
        matches!(
            r.end,
            MediaEnd::FrameViolation(v) if v.len == 320 && v.expected == 640
        ),
        "{:?}",
        r.end
    );
    assert_eq!(r.counters.frame_size_violations, 1);
    // The app sees the connection end without a close frame (1006).
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(c))) => return Some(c),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("socket ends");
    assert_eq!(closed, None, "no close frame: an abnormal closure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_a_call_with_barge_in_against_the_server() {
    let server = start(config_at(SampleRate::Hz16000)).await;
    let out = std::env::temp_dir().join(format!("voicegate-sim-{}.wav", std::process::id()));
    let args = SimulateArgs {
        server: format!("http://{}", server.addr),
        wav: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/audio/speech_004.in.wav"),
        out: Some(out.clone()),
        timeout: Duration::from_secs(15),
        bargein_at: Some(4_500),
        bargein_gain_db: 10.0,
        // The caller's line echoes the bot back, as phones do: the barge-in still clears.
        echo_delay_ms: Some(60),
        echo_db: -20.0,
        signature_secret: None,
        api_key: None,
        application_id: None,
        json: false,
    };
    let r = simulate(&args).await.expect("simulate runs");
    println!("{}", voicegate::tools::simulate::render(&r));
    assert_eq!(r.rate_hz, 16_000);
    assert_eq!(r.ncco_actions.last().map(String::as_str), Some("connect"));
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.frame_size_violations, 0);
    assert!(r.frames_sent > 200, "{r:?}");
    assert!(r.frames_received > 50, "the echo came back: {r:?}");
    assert!(r.replies >= 1 && !r.first_reply_ms.is_empty(), "{r:?}");
    assert!(
        r.clears >= 1 && !r.clear_ms.is_empty(),
        "barge-in cleared: {r:?}"
    );
    assert!(r.notifies >= 1 && r.notifies_answered >= 1, "{r:?}");
    assert_eq!(r.webhook_failures, 0);
    // What the caller heard: the whole media time, with the echo in it.
    let mut heard = hound::WavReader::open(&out).unwrap();
    assert_eq!(heard.spec().sample_rate, 16_000);
    let samples: Vec<i16> = heard.samples::<i16>().map(Result::unwrap).collect();
    assert!(samples.len() > 16_000 * 5, "{}", samples.len());
    assert!(samples.iter().any(|s| s.unsigned_abs() > 1_000));
    let _ = std::fs::remove_file(out);
    // The server saw the call end.
    let t0 = Instant::now();
    while server.state.active_calls() > 0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "call left over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
