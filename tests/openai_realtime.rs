//! The OpenAI Realtime adapter (`--agent openai-realtime`) end to end, against a local stand-in
//! that follows the API's documented GA event schema: `session.update` (checked field by field),
//! `input_audio_buffer.append`/`.commit`, `response.create`, `response.created`,
//! `response.output_audio.delta`/`.done`, `response.done`, `input_audio_buffer.speech_started`,
//! `conversation.item.truncate`, `response.cancel`, `error`, `rate_limits.updated`.
//!
//! The real server and the simulated Vonage side (real-time caller frames, a playback that
//! answers `clear` and `notify` when it gets there) measure what the caller heard; the truncation
//! offset must equal it within two frames: one for the frame in flight, one for the `clear`'s
//! way from the adapter's decision to Vonage (a few ms, more on a loaded machine: this box is
//! shared and runs these tests in debug builds). Waits have 30 s deadlines.

/// How far the truncation offset may be from what the caller heard, ms.
const HEARD_TOLERANCE_MS: u64 = 40;

mod server_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use server_support::{clip, config_at, cut, metric, silence, start_with, vonage_call, wait_metric};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use voicegate::agent::openai_realtime::{OpenAiArgs, OpenAiConfig, TurnDetection};
use voicegate::core::SampleRate;
use voicegate::server::config::AgentKind;
use voicegate::server::{self, ServerConfig};
use voicegate::tools::vonage_side::CallerScript;

const WAIT: Duration = Duration::from_secs(30);
const RATE_24K: u32 = 24_000;

// ------------------------------------------------------------------------------ the stand-in

type Ws = WebSocketStream<TcpStream>;

/// Accepts the adapter's connection and checks the handshake: path, model, bearer key.
// The handshake callback's error type is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
async fn accept(l: &TcpListener) -> Ws {
    let (tcp, _) = tokio::time::timeout(WAIT, l.accept())
        .await
        .expect("the adapter connects")
        .unwrap();
    let seen = Arc::new(Mutex::new((String::new(), String::new())));
    let s2 = seen.clone();
    let ws = tokio_tungstenite::accept_hdr_async(tcp, move |req: &Request, res: Response| {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        *s2.lock().unwrap() = (req.uri().to_string(), auth);
        Ok(res)
    })
    .await
    .unwrap();
    let (uri, auth) = seen.lock().unwrap().clone();
    assert_eq!(uri, "/v1/realtime?model=gpt-realtime");
    assert_eq!(auth, "Bearer sk-test-key");
    assert!(
        !uri.contains("sk-test"),
        "the key travels in a header, not the URL"
    );
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next client event (`None` when the adapter closed the socket).
async fn recv(ws: &mut Ws, within: Duration) -> Option<Option<Value>> {
    match tokio::time::timeout(within, ws.next()).await {
        Err(_) => None,
        Ok(Some(Ok(Message::Text(t)))) => Some(Some(serde_json::from_str(t.as_str()).unwrap())),
        Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => Some(None),
        Ok(Some(Ok(other))) => panic!("the adapter sent a non-text message: {other:?}"),
    }
}

/// Samples in an `input_audio_buffer.append`.
fn appended(v: &Value) -> usize {
    let b = STANDARD.decode(v["audio"].as_str().unwrap()).unwrap();
    assert_eq!(b.len() % 2, 0, "whole 16-bit samples");
    b.len() / 2
}

/// Reads until an event of type `kind`, counting appended samples on the way.
async fn until(ws: &mut Ws, kind: &str, appended_samples: &mut usize) -> Value {
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < WAIT, "no {kind} within 30 s");
        match recv(ws, WAIT).await {
            Some(Some(v)) if v["type"] == kind => return v,
            Some(Some(v)) if v["type"] == "input_audio_buffer.append" => {
                *appended_samples += appended(&v);
            }
            Some(Some(_)) => {}
            Some(None) => panic!("the adapter closed while waiting for {kind}"),
            None => panic!("no {kind} within 30 s"),
        }
    }
}

/// `ms` of a tone at 24 kHz as base64 deltas of 100 ms.
fn tone_deltas(ms: u32, hz: f32) -> Vec<String> {
    let n = RATE_24K as usize * ms as usize / 1_000;
    let samples: Vec<u8> = (0..n)
        .flat_map(|i| {
            (((i as f32 * hz * std::f32::consts::TAU / RATE_24K as f32).sin() * 8_000.0) as i16)
                .to_le_bytes()
        })
        .collect();
    samples
        .chunks(RATE_24K as usize / 10 * 2)
        .map(|c| STANDARD.encode(c))
        .collect()
}

/// Streams one response's audio the way the API does.
async fn respond(ws: &mut Ws, response: &str, item: &str, ms: u32, hz: f32) {
    send(
        ws,
        json!({"type": "response.created", "event_id": "ev_1", "response": {
            "id": response, "object": "realtime.response", "status": "in_progress",
            "output": [], "conversation_id": "conv_1"}}),
    )
    .await;
    send(
        ws,
        json!({"type": "response.output_item.added", "response_id": response, "output_index": 0,
            "item": {"id": item, "object": "realtime.item", "type": "message",
                     "status": "in_progress", "role": "assistant", "content": []}}),
    )
    .await;
    for d in tone_deltas(ms, hz) {
        send(
            ws,
            json!({"type": "response.output_audio.delta", "event_id": "ev_d",
                "response_id": response, "item_id": item, "output_index": 0, "content_index": 0,
                "delta": d}),
        )
        .await;
    }
    send(
        ws,
        json!({"type": "response.output_audio.done", "response_id": response, "item_id": item,
            "output_index": 0, "content_index": 0}),
    )
    .await;
}

async fn response_done(ws: &mut Ws, response: &str, status: &str) {
    send(
        ws,
        json!({"type": "response.done", "event_id": "ev_done", "response": {
            "id": response, "object": "realtime.response", "status": status,
            "status_details": null, "output": []}}),
    )
    .await;
}

/// Checks the `session.update` against the GA schema.
fn check_session_update(v: &Value, turn_detection: Option<&str>) {
    assert_eq!(v["type"], "session.update", "{v}");
    let s = &v["session"];
    assert_eq!(s["type"], "realtime");
    assert_eq!(s["model"], "gpt-realtime");
    assert_eq!(s["instructions"], "You are a test. Be brief.");
    assert_eq!(s["output_modalities"], json!(["audio"]));
    let pcm = json!({"type": "audio/pcm", "rate": 24000});
    assert_eq!(s["audio"]["input"]["format"], pcm);
    assert_eq!(s["audio"]["output"]["format"], pcm);
    assert_eq!(s["audio"]["output"]["voice"], "cedar");
    match turn_detection {
        None => assert_eq!(s["audio"]["input"]["turn_detection"], Value::Null, "{v}"),
        Some(t) => {
            let td = &s["audio"]["input"]["turn_detection"];
            assert_eq!(td["type"], t, "{v}");
            assert_eq!(td["create_response"], true);
        }
    }
}

// ------------------------------------------------------------------------------ the phone side

/// A server with the adapter pointed at the stand-in `listener`.
async fn server_for(
    listener: &TcpListener,
    rate: SampleRate,
    td: TurnDetection,
) -> server_support::TestServer {
    let mut cfg: ServerConfig = config_at(rate);
    cfg.agent = AgentKind::OpenAiRealtime;
    cfg.openai = Some(
        OpenAiConfig::try_from(OpenAiArgs {
            voice: "cedar".into(),
            instructions: Some("You are a test. Be brief.".into()),
            turn_detection: td,
            url: format!("ws://{}/v1/realtime", listener.local_addr().unwrap()),
            api_key: Some("sk-test-key".into()),
            ..OpenAiArgs::default()
        })
        .unwrap(),
    );
    let agent = server::agent_for(&cfg).unwrap();
    start_with(cfg, agent).await
}

// ------------------------------------------------------------------------------ the tests

/// Turn detection off: voicegate's end of turn commits the caller's speech and asks for a
/// response; voicegate's barge-in truncates the answer at what the caller heard (within one
/// frame) and cancels it; the cancelled response's late audio is never heard; the next answer
/// plays in full. Errors and rate limits show in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_truncates_at_what_the_caller_heard() {
    let speech = clip("speech_001");
    let rate = speech.rate;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = server_for(&listener, rate, TurnDetection::Off).await;

    let mut script = silence(rate, 500);
    script.extend(cut(&speech, 800, 3_900, 1));
    script.extend(silence(rate, 2_000));
    script.extend(cut(&speech, 1_580, 3_180, 3));
    let script = CallerScript::new(rate, &script, Duration::ZERO);
    let uuid = "cccc0001-0000-0000-0000-000000000001";
    let vonage = vonage_call(server.addr, uuid, script, Duration::from_secs(12)).await;

    let mut ws = accept(&listener).await;
    send(
        &mut ws,
        json!({"type": "session.created", "event_id": "ev_0", "session": {}}),
    )
    .await;
    let mut samples = 0usize;
    let update = recv(&mut ws, WAIT)
        .await
        .flatten()
        .expect("session.update first");
    check_session_update(&update, None);
    send(
        &mut ws,
        json!({"type": "session.updated", "session": update["session"]}),
    )
    .await;

    // The caller's utterance, appended at 24 kHz, then committed with a response asked for.
    until(&mut ws, "input_audio_buffer.commit", &mut samples).await;
    let said_ms = samples * 1_000 / RATE_24K as usize;
    assert!((2_500..4_500).contains(&said_ms), "{said_ms} ms appended");
    until(&mut ws, "response.create", &mut samples).await;

    send(
        &mut ws,
        json!({"type": "rate_limits.updated", "rate_limits": [
            {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60},
            {"name": "tokens", "limit": 50000, "remaining": 49000, "reset_seconds": 1.2}]}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "error", "event_id": "ev_e", "error": {"type": "invalid_request_error",
            "code": "unknown_parameter", "message": "a test error", "param": "x"}}),
    )
    .await;
    respond(&mut ws, "resp_1", "item_1", 6_000, 440.0).await;

    // The caller talks over the answer.
    let truncate = until(&mut ws, "conversation.item.truncate", &mut samples).await;
    let cancel = until(&mut ws, "response.cancel", &mut samples).await;
    assert_eq!(truncate["item_id"], "item_1");
    assert_eq!(truncate["content_index"], 0);
    assert_eq!(cancel["response_id"], "resp_1");
    let audio_end_ms = truncate["audio_end_ms"].as_u64().unwrap();
    response_done(&mut ws, "resp_1", "cancelled").await;
    // Late audio of the cancelled answer.
    send(
        &mut ws,
        json!({"type": "response.output_audio.delta", "response_id": "resp_1",
            "item_id": "item_1", "output_index": 0, "content_index": 0,
            "delta": tone_deltas(100, 700.0)[0]}),
    )
    .await;

    // The interruption ends: a new answer, played in full.
    until(&mut ws, "input_audio_buffer.commit", &mut samples).await;
    until(&mut ws, "response.create", &mut samples).await;
    let resp2_at = Instant::now();
    respond(&mut ws, "resp_2", "item_2", 1_000, 550.0).await;
    response_done(&mut ws, "resp_2", "completed").await;

    // The caller hangs up: the adapter closes its socket.
    let t0 = Instant::now();
    loop {
        match recv(&mut ws, WAIT).await {
            Some(Some(_)) => assert!(t0.elapsed() < WAIT, "never closed"),
            Some(None) => break,
            None => panic!("the adapter did not close within 30 s of the call's end"),
        }
    }

    let (report, heard) = tokio::time::timeout(WAIT, vonage).await.unwrap().unwrap();
    assert_eq!(report.counters.frame_size_violations, 0);
    assert_eq!(heard.cleared.len(), 1, "one clear");
    let heard_ms = heard.heard_before_clear().as_millis() as u64;
    println!("truncated at {audio_end_ms} ms; the caller heard {heard_ms} ms before clear");
    assert!(
        audio_end_ms.abs_diff(heard_ms) <= HEARD_TOLERANCE_MS,
        "truncate audio_end_ms {audio_end_ms} vs heard {heard_ms} ms"
    );
    assert_eq!(
        heard.audible_between(heard.cleared[0], resp2_at),
        0,
        "audio of the cancelled answer reached the caller"
    );
    let second = heard.audible_between(resp2_at, Instant::now());
    assert!(
        (49..=51).contains(&second),
        "answer 2: {second} audible frames"
    );

    let body = wait_metric(server.addr, "voicegate_openai_truncations_total", 1.0).await;
    assert_eq!(
        metric(&body, "voicegate_openai_responses_cancelled_total"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "voicegate_openai_errors_total{kind=\"invalid_request_error\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "voicegate_openai_rate_limit_remaining{limit=\"tokens\"}"
        ),
        Some(49_000.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "voicegate_agent_connections_total"),
        Some(1.0)
    );
    assert!(!body.contains("voicegate_agent_failures_total{"), "{body}");
}

/// Server-side turn detection: every caller frame is appended; the model's
/// `input_audio_buffer.speech_started` while its answer plays stops playback (`clear`) and
/// truncates the answer at what the caller heard, within two frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_models_speech_started_stops_and_truncates() {
    let rate = SampleRate::Hz16000;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = server_for(&listener, rate, TurnDetection::ServerVad).await;
    let script = CallerScript::new(rate, &silence(rate, 200), Duration::ZERO);
    let uuid = "cccc0002-0000-0000-0000-000000000002";
    let vonage = vonage_call(server.addr, uuid, script, Duration::from_secs(7)).await;

    let mut ws = accept(&listener).await;
    let update = recv(&mut ws, WAIT)
        .await
        .flatten()
        .expect("session.update first");
    check_session_update(&update, Some("server_vad"));

    // Silence streams in continuously (every frame is appended).
    let mut samples = 0usize;
    while samples < RATE_24K as usize {
        let v = recv(&mut ws, WAIT).await.flatten().expect("appends");
        assert_eq!(v["type"], "input_audio_buffer.append", "{v}");
        samples += appended(&v);
    }
    respond(&mut ws, "resp_a", "item_a", 5_000, 440.0).await;
    // Let 1.5 s of it play, reading the appends meanwhile, then "hear" the caller.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1_500) {
        if let Some(Some(v)) = recv(&mut ws, Duration::from_millis(50)).await {
            assert_eq!(v["type"], "input_audio_buffer.append", "{v}");
        }
    }
    send(
        &mut ws,
        json!({"type": "input_audio_buffer.speech_started", "event_id": "ev_s",
            "audio_start_ms": 2_600, "item_id": "item_user_1"}),
    )
    .await;
    let truncate = until(&mut ws, "conversation.item.truncate", &mut samples).await;
    assert_eq!(truncate["item_id"], "item_a");
    let audio_end_ms = truncate["audio_end_ms"].as_u64().unwrap();
    let cancel = until(&mut ws, "response.cancel", &mut samples).await;
    assert_eq!(cancel["response_id"], "resp_a");
    // As the API does with interrupt_response: the response ends cancelled; a second cancel
    // would be answered with an error the adapter takes calmly.
    response_done(&mut ws, "resp_a", "cancelled").await;
    send(
        &mut ws,
        json!({"type": "error", "error": {"type": "invalid_request_error",
            "code": "response_cancel_not_active", "message": "no active response"}}),
    )
    .await;

    let (report, heard) = tokio::time::timeout(WAIT, vonage).await.unwrap().unwrap();
    assert_eq!(report.counters.frame_size_violations, 0);
    assert_eq!(
        heard.cleared.len(),
        1,
        "the adapter's interrupt clears Vonage's buffer"
    );
    let heard_ms = heard.heard_before_clear().as_millis() as u64;
    println!("truncated at {audio_end_ms} ms; the caller heard {heard_ms} ms before clear");
    assert!(
        (1_000..3_000).contains(&heard_ms),
        "the answer played for {heard_ms} ms"
    );
    assert!(
        audio_end_ms.abs_diff(heard_ms) <= HEARD_TOLERANCE_MS,
        "truncate audio_end_ms {audio_end_ms} vs heard {heard_ms} ms"
    );
    assert_eq!(
        heard.audible_between(heard.cleared[0], Instant::now()),
        0,
        "the answer went on after the interruption"
    );
    let body = wait_metric(server.addr, "voicegate_openai_truncations_total", 1.0).await;
    assert!(
        !body.contains("voicegate_openai_errors_total{"),
        "response_cancel_not_active is not an error: {body}"
    );
}
