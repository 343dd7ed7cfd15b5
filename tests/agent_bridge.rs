//! The WebSocket agent bridge (`--agent ws://…`) end to end: the real server, a simulated
//! Vonage side (`tools::vonage_side`: real-time caller frames, a playback FIFO that answers
//! `clear` and `notify` when it gets there, strict frame sizes), and an in-test agent on
//! 127.0.0.1:0 speaking docs/agent-protocol.md. No tight timing assertions: every wait has a
//! 30 s deadline.
//!
//! Also the reference agent, `examples/agent_echo.py`, against the built-in echo agent (skipped
//! with a printed reason when python3 or its `websockets` package is missing).

mod server_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use server_support::{
    clip, config_at, cut, http_get, metric, serve_state, silence, start_with, vonage_call,
    wait_metric,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tower::ServiceExt;
use voicegate::agent::echo::EchoAgent;
use voicegate::core::SampleRate;
use voicegate::server::call_control::VonageCallControl;
use voicegate::server::config::{AgentFailure, AgentKind};
use voicegate::server::{self, AppState, ServerConfig};
use voicegate::tools::vonage_side::CallerScript;
use voicegate::vonage::app_jwt::AppJwt;
use voicegate::vonage::client::VoiceClient;

const WAIT: Duration = Duration::from_secs(30);
/// The caller leg of the §10 vectors (09-event-disconnected names it).
const CALLER_LEG: &str = "63f61863-4a51-4f6b-86e1-46edebcf9356";

// ------------------------------------------------------------------------------ the agent side

type AgentWs = WebSocketStream<TcpStream>;

/// A listener for the in-test agent and the URL to give `--agent`.
async fn agent_listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/agent", l.local_addr().unwrap());
    (l, url)
}

async fn accept(l: &TcpListener) -> AgentWs {
    let (tcp, _) = tokio::time::timeout(WAIT, l.accept())
        .await
        .expect("the bridge connects to the agent")
        .unwrap();
    tokio_tungstenite::accept_async(tcp).await.unwrap()
}

/// One message from the bridge, as the agent sees it.
#[derive(Debug)]
enum FromBridge {
    Json(Value),
    Audio(Vec<i16>),
    Closed(Option<(u16, String)>),
}

async fn next(ws: &mut AgentWs) -> FromBridge {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message from the bridge within 30 s");
        return match msg {
            Some(Ok(Message::Text(t))) => FromBridge::Json(
                serde_json::from_str(t.as_str()).unwrap_or_else(|e| panic!("{t}: {e}")),
            ),
            Some(Ok(Message::Binary(b))) => {
                assert_eq!(b.len() % 2, 0, "odd audio message");
                FromBridge::Audio(
                    b.chunks_exact(2)
                        .map(|s| i16::from_le_bytes([s[0], s[1]]))
                        .collect(),
                )
            }
            Some(Ok(Message::Close(c))) => {
                FromBridge::Closed(c.map(|c| (u16::from(c.code), c.reason.to_string())))
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => FromBridge::Closed(None),
        };
    }
}

/// Reads until a JSON message of type `kind`; audio in between goes to `audio` (checked to be
/// whole frames at `rate`), other JSON to `other`.
async fn until(
    ws: &mut AgentWs,
    kind: &str,
    rate: SampleRate,
    audio: &mut Vec<i16>,
    other: &mut Vec<Value>,
) -> Value {
    loop {
        match next(ws).await {
            FromBridge::Json(v) if v["type"] == kind => return v,
            FromBridge::Json(v) => other.push(v),
            FromBridge::Audio(a) => {
                assert_eq!(a.len(), rate.frame_samples(), "one 20 ms frame per message");
                audio.extend(a);
            }
            FromBridge::Closed(c) => panic!("the bridge closed ({c:?}) while waiting for {kind}"),
        }
    }
}

async fn send_json(ws: &mut AgentWs, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Sends `samples` in binary messages of `chunk` samples (the last may be shorter).
async fn send_audio(ws: &mut AgentWs, samples: &[i16], chunk: usize) {
    for c in samples.chunks(chunk) {
        let bytes: Vec<u8> = c.iter().flat_map(|s| s.to_le_bytes()).collect();
        ws.send(Message::binary(bytes)).await.unwrap();
    }
}

fn tone(rate: SampleRate, ms: u32, hz: f32, amplitude: f32) -> Vec<i16> {
    let n = rate.hz() as usize * ms as usize / 1_000;
    (0..n)
        .map(|i| {
            ((i as f32 * hz * std::f32::consts::TAU / rate.hz() as f32).sin() * amplitude) as i16
        })
        .collect()
}

// ------------------------------------------------------------------------------ the server side

fn bridge_config(rate: SampleRate, url: &str) -> ServerConfig {
    let mut c = config_at(rate);
    c.agent = AgentKind::Bridge(url.to_owned());
    c
}

/// The server with the agent its configuration names, built the way `voicegate serve` does.
async fn bridge_server(config: ServerConfig) -> server_support::TestServer {
    let agent = server::agent_for(&config).unwrap();
    start_with(config, agent).await
}

async fn metrics(addr: SocketAddr) -> String {
    http_get(addr, "/metrics").await.1
}

/// The answer to Vonage's `disconnected` for our socket of call [`CALLER_LEG`].
async fn disconnected_answer(state: &AppState) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/vectors/09-event-disconnected.json");
    let ev: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    let req = Request::post("/events")
        .header("content-type", "application/json")
        .body(Body::from(ev["content"].to_string()))
        .unwrap();
    let res = server::app(state.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

// ------------------------------------------------------------------------------ the tests

/// A whole call through the bridge, call at 16 kHz and agent at 24 kHz: the `start` message,
/// caller audio at the agent rate in whole frames up to `speech_ended`'s position, agent audio
/// in odd-sized chunks reaching the caller as exact frames, a barge-in (`barge_in` to the agent,
/// `clear` to Vonage, the rest of the old turn never heard), playout reports and a mark, and
/// `stop` when the caller hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_call_through_the_bridge() {
    let speech = clip("speech_001");
    let rate = speech.rate;
    let agent_rate = SampleRate::Hz24000;
    let (listener, url) = agent_listener().await;
    let mut cfg = bridge_config(rate, &url);
    cfg.agent_rate = Some(agent_rate);
    cfg.session.agent_rate = agent_rate;
    let server = bridge_server(cfg).await;

    // The caller: an utterance, a pause while the agent answers, then talking over the answer
    // (louder, as into the microphone), a pause, and the hang-up.
    let mut script = silence(rate, 500);
    script.extend(cut(&speech, 800, 3_900, 1));
    script.extend(silence(rate, 2_000));
    script.extend(cut(&speech, 1_580, 3_180, 3));
    let script = CallerScript::new(rate, &script, Duration::ZERO);
    let vonage = vonage_call(server.addr, CALLER_LEG, script, Duration::from_secs(12)).await;

    let mut ag = accept(&listener).await;
    let FromBridge::Json(start) = next(&mut ag).await else {
        panic!("start first")
    };
    assert_eq!(start["type"], "start");
    assert_eq!(start["version"], 1);
    assert_eq!(start["call_id"], CALLER_LEG);
    assert_eq!(start["from"], "447700900123");
    assert_eq!(start["to"], "447700900000");
    assert_eq!(start["headers"]["call_uuid"], CALLER_LEG);
    assert_eq!(start["call_rate"], rate.hz());
    assert_eq!(start["agent_rate"], agent_rate.hz());
    assert_eq!(start["forward"], "speech");
    assert_eq!(start["encoding"], "L16");

    // The utterance: whole 20 ms frames at 24 kHz, and `speech_ended` after the last of them.
    let mut audio = Vec::new();
    let mut other = Vec::new();
    let ended = until(&mut ag, "speech_ended", agent_rate, &mut audio, &mut other).await;
    let started = other
        .iter()
        .find(|v| v["type"] == "speech_started")
        .expect("speech_started before speech_ended");
    assert_eq!(started["stream_pos"], 0);
    assert_eq!(ended["stream_pos"], audio.len() as u64, "{ended}");
    let said_ms = audio.len() as u64 * 1_000 / u64::from(agent_rate.hz());
    assert!(
        (2_500..4_500).contains(&said_ms),
        "{said_ms} ms of caller audio"
    );
    assert!(ended["duration_ms"].as_u64().unwrap() > 2_000, "{ended}");

    // Turn 1: five seconds in chunks of 1 234 samples, no end (so late audio stays in turn 1).
    send_json(&mut ag, json!({"type": "turn"})).await;
    send_audio(&mut ag, &tone(agent_rate, 5_000, 440.0, 8_000.0), 1_234).await;
    other.clear();
    let barge = until(&mut ag, "barge_in", agent_rate, &mut audio, &mut other).await;
    assert_eq!(barge["turn"], 1, "{barge}");
    let heard_ms = barge["heard_ms"].as_u64().unwrap();
    assert!((200..5_000).contains(&heard_ms), "{barge}");
    let playouts: Vec<u64> = other
        .iter()
        .filter(|v| v["type"] == "playout" && v["turn"] == 1)
        .map(|v| v["heard_ms"].as_u64().unwrap())
        .collect();
    assert!(!playouts.is_empty(), "playout reports during turn 1");
    assert!(
        playouts.windows(2).all(|w| w[0] < w[1] && w[1] % 200 == 0),
        "{playouts:?}"
    );
    // Late audio of the interrupted turn: dropped, never heard.
    send_audio(&mut ag, &tone(agent_rate, 2_000, 660.0, 8_000.0), 4_800).await;

    // The caller's interruption ends; turn 2 answers it, with a mark after its end.
    let _ = until(&mut ag, "speech_ended", agent_rate, &mut audio, &mut other).await;
    let turn2_at = Instant::now();
    send_json(&mut ag, json!({"type": "turn"})).await;
    send_audio(&mut ag, &tone(agent_rate, 1_000, 550.0, 8_000.0), 999).await;
    send_json(&mut ag, json!({"type": "end_turn"})).await;
    send_json(&mut ag, json!({"type": "mark", "name": "done"})).await;
    let report = loop {
        let p = until(&mut ag, "playout", agent_rate, &mut audio, &mut other).await;
        if p.get("mark").is_some() {
            break p;
        }
    };
    assert_eq!(
        report,
        json!({"type":"playout","turn":2,"heard_ms":1000,"complete":true,"mark":"done"})
    );

    // The caller hangs up: `stop`, then a normal close.
    let stop = until(&mut ag, "stop", agent_rate, &mut audio, &mut other).await;
    assert_eq!(stop["reason"], "socket_closed");
    match next(&mut ag).await {
        FromBridge::Closed(Some((code, _))) => assert_eq!(code, 1000),
        other => panic!("expected a close after stop, got {other:?}"),
    }

    // What the caller heard.
    let (report, heard) = tokio::time::timeout(WAIT, vonage).await.unwrap().unwrap();
    assert_eq!(report.counters.frame_size_violations, 0);
    assert_eq!(report.counters.protocol_violations, 0);
    assert_eq!(heard.cleared.len(), 1, "one clear");
    let clear_at = heard.cleared[0];
    let turn1 = heard.audible_between(report.t0, clear_at) as u64;
    assert!(
        turn1.abs_diff(heard_ms / 20) <= 2,
        "heard {turn1} frames of turn 1, barge_in says {heard_ms} ms"
    );
    assert_eq!(
        heard.audible_between(clear_at, turn2_at),
        0,
        "audio of the interrupted turn reached the caller"
    );
    let turn2 = heard.audible_between(turn2_at, Instant::now());
    println!(
        "turn 1: {turn1} audible frames before clear, barge_in heard_ms {heard_ms}; turn 2: {turn2} \
         audible frames; {} caller samples at 24 kHz reached the agent",
        audio.len()
    );
    assert!((49..=51).contains(&turn2), "turn 2: {turn2} audible frames");

    let body = wait_metric(server.addr, "voicegate_agent_connections_total", 1.0).await;
    assert_eq!(
        metric(&body, "voicegate_barge_ins_total"),
        Some(1.0),
        "{body}"
    );
    assert!(
        metric(&body, "voicegate_agent_samples_discarded_total").unwrap() > 0.0,
        "{body}"
    );
    let body = wait_metric(server.addr, "voicegate_calls_total", 1.0).await;
    assert!(!body.contains("voicegate_agent_failures_total{"), "{body}");
}

/// A bridge server whose call control goes to the Vonage REST stand-in at `base` (with the
/// client's own request timeout unless `timeout` is given).
async fn server_with_rest(
    rate: SampleRate,
    url: &str,
    base: &str,
    timeout: Option<Duration>,
) -> server_support::TestServer {
    let jwt = AppJwt::from_pem(
        "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        include_bytes!("data/keys/TEST-ONLY-app-private.pem"),
    )
    .unwrap();
    let mut client = VoiceClient::builder(Arc::new(jwt)).api_url(base);
    if let Some(t) = timeout {
        client = client.timeout(t);
    }
    let control = Arc::new(VonageCallControl::new(client.build().unwrap()));
    let mut cfg = bridge_config(rate, url);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    let state = AppState::with_control(
        cfg.clone(),
        server::agent_for(&cfg).unwrap(),
        control.clone(),
    );
    control.bind(&state);
    serve_state(state).await
}

/// Records what reaches the Vonage REST API: `PUT /v1/calls/{uuid}` bodies.
async fn rest_stand_in() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    use axum::extract::{Path, State};
    use axum::routing::put;
    type Seen = Arc<Mutex<Vec<(String, Value)>>>;
    let seen: Seen = Arc::default();
    let app =
        axum::Router::new()
            .route(
                "/v1/calls/{uuid}",
                put(
                    |State(seen): State<Seen>,
                     Path(uuid): Path<String>,
                     body: axum::body::Bytes| async move {
                        let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        seen.lock().unwrap().push((uuid, v));
                        axum::http::StatusCode::NO_CONTENT
                    },
                ),
            )
            .with_state(seen.clone());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (base, seen)
}

/// `hangup` and `transfer` reach the REST API through the server's call control; without a REST
/// client the agent gets `action_failed` with the reason. `log` and unknown types keep the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangup_and_transfer_reach_the_rest_api_or_fail_clearly() {
    let (listener, url) = agent_listener().await;
    let rate = SampleRate::Hz16000;

    // Without REST credentials.
    let server = bridge_server(bridge_config(rate, &url)).await;
    let leg = server_support::call(server.addr, "aaaa0001-0000-0000-0000-000000000001").await;
    let mut ag = accept(&listener).await;
    let (mut audio, mut other) = (Vec::new(), Vec::new());
    assert!(matches!(next(&mut ag).await, FromBridge::Json(v) if v["type"] == "start"));
    send_json(
        &mut ag,
        json!({"type": "log", "message": "hello from the agent"}),
    )
    .await;
    send_json(&mut ag, json!({"type": "dance", "tempo": 120})).await;
    send_json(&mut ag, json!({"type": "hangup"})).await;
    let failed = until(&mut ag, "action_failed", rate, &mut audio, &mut other).await;
    assert_eq!(failed["action"], "hangup");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("--application-id"),
        "{failed}"
    );
    send_json(&mut ag, json!({"type": "transfer", "to": "not a number"})).await;
    let failed = until(&mut ag, "action_failed", rate, &mut audio, &mut other).await;
    assert_eq!(failed["action"], "transfer");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("invalid transfer target"),
        "{failed}"
    );
    let body = wait_metric(server.addr, "voicegate_agent_actions_failed_total", 2.0).await;
    assert_eq!(
        metric(&body, "voicegate_agent_messages_unknown_total"),
        Some(1.0)
    );
    assert_eq!(
        metric(&body, "voicegate_active_calls"),
        Some(1.0),
        "the call goes on"
    );
    drop(leg);

    // With REST credentials: both requests reach the API.
    let (base, seen) = rest_stand_in().await;
    let server = server_with_rest(rate, &url, &base, None).await;
    let uuid = "aaaa0002-0000-0000-0000-000000000002";
    let _leg = server_support::call(server.addr, uuid).await;
    let mut ag = accept(&listener).await;
    assert!(matches!(next(&mut ag).await, FromBridge::Json(v) if v["type"] == "start"));
    send_json(&mut ag, json!({"type": "transfer", "to": "+447700900999"})).await;
    send_json(&mut ag, json!({"type": "hangup"})).await;
    let t0 = Instant::now();
    while seen.lock().unwrap().len() < 2 {
        assert!(
            t0.elapsed() < WAIT,
            "REST requests: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.lock().unwrap().clone();
    let transfer = seen
        .iter()
        .find(|(_, b)| b["action"] == "transfer")
        .unwrap();
    assert_eq!(transfer.0, uuid);
    let connect = &transfer.1["destination"]["ncco"];
    assert!(connect.to_string().contains("447700900999"), "{connect}");
    let hangup = seen.iter().find(|(_, b)| b["action"] == "hangup").unwrap();
    assert_eq!(hangup.0, uuid);
}

/// One way for an agent to fail, and what the agent socket is closed with (`None`: the agent
/// side goes away itself).
#[derive(Debug, Clone, Copy)]
enum Fault {
    MalformedJson,
    OddLength,
    Oversized,
    Disconnect,
    NeverAccepts,
}

/// Every agent failure ends the call the same way: the agent socket is closed with the
/// documented code, the media socket with 1011, the failure is counted, and the `disconnected`
/// that Vonage sends next is answered with the apology (or nothing, with `--agent-failure
/// hangup`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_failures_end_the_call_as_configured() {
    let rate = SampleRate::Hz16000;
    let cases = [
        (
            Fault::MalformedJson,
            AgentFailure::Apologise,
            "malformed_json",
        ),
        (Fault::OddLength, AgentFailure::Hangup, "odd_length"),
        (Fault::Oversized, AgentFailure::Apologise, "oversized"),
        (Fault::Disconnect, AgentFailure::Hangup, "disconnected"),
        (
            Fault::NeverAccepts,
            AgentFailure::Apologise,
            "connect_timeout",
        ),
    ];
    for (fault, policy, label) in cases {
        let (listener, url) = agent_listener().await;
        let mut cfg = bridge_config(rate, &url);
        cfg.agent_failure = policy;
        cfg.agent_connect_timeout = Duration::from_millis(500);
        let server = bridge_server(cfg).await;
        let mut leg = server_support::call(server.addr, CALLER_LEG).await;

        let closed_with = match fault {
            Fault::NeverAccepts => {
                // TCP is accepted, the WebSocket handshake never answered.
                let (_tcp, _) = tokio::time::timeout(WAIT, listener.accept())
                    .await
                    .unwrap()
                    .unwrap();
                wait_metric(server.addr, "voicegate_agent_errors_total", 1.0).await;
                None
            }
            _ => {
                let mut ag = accept(&listener).await;
                assert!(matches!(next(&mut ag).await, FromBridge::Json(v) if v["type"] == "start"));
                match fault {
                    Fault::MalformedJson => {
                        ag.send(Message::text("{\"type\": \"turn\"")).await.unwrap()
                    }
                    Fault::OddLength => ag.send(Message::binary(vec![0u8; 641])).await.unwrap(),
                    Fault::Oversized => ag
                        .send(Message::binary(vec![0u8; 256 * 1024 + 2]))
                        .await
                        .unwrap(),
                    Fault::Disconnect => ag.close(None).await.unwrap(),
                    Fault::NeverAccepts => unreachable!(),
                }
                loop {
                    match next(&mut ag).await {
                        FromBridge::Closed(c) => break c,
                        FromBridge::Json(_) | FromBridge::Audio(_) => {}
                    }
                }
            }
        };
        match fault {
            Fault::MalformedJson | Fault::OddLength => {
                let (code, reason) = closed_with.expect("a close frame");
                assert_eq!(code, 1007, "{fault:?}: {reason}");
                assert!(!reason.is_empty());
            }
            Fault::Oversized => assert_eq!(closed_with.map(|c| c.0), Some(1009), "{fault:?}"),
            Fault::Disconnect | Fault::NeverAccepts => {}
        }

        // The media socket is closed with 1011.
        let code = loop {
            match tokio::time::timeout(WAIT, leg.ws.next()).await.unwrap() {
                Some(Ok(Message::Close(c))) => break c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            }
        };
        assert_eq!(code, Some(1011), "{fault:?}");
        let body = wait_metric(server.addr, "voicegate_agent_errors_total", 1.0).await;
        let counted = format!("voicegate_agent_failures_total{{reason=\"{label}\"}}");
        assert_eq!(metric(&body, &counted), Some(1.0), "{fault:?}: {body}");

        // Vonage reports the closed socket; the answer follows --agent-failure.
        let answer = disconnected_answer(&server.state).await;
        match policy {
            AgentFailure::Apologise => {
                assert_eq!(answer[0]["action"], "talk", "{fault:?}: {answer}");
                assert!(answer[0]["text"].as_str().unwrap().starts_with("Sorry"));
            }
            AgentFailure::Hangup => assert_eq!(answer, Value::Null, "{fault:?}"),
        }
    }
}

// ------------------------------------------------------------------------------ the reference agent

/// Whether `python3` with the `websockets` package is here; the reason when not.
fn python_with_websockets() -> Result<(), String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import websockets.asyncio.server"])
        .output()
        .map_err(|e| format!("python3 is not available ({e})"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "python3 has no `websockets` package of version 13 or newer ({}); install it with \
             `python3 -m pip install --user websockets`",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ))
    }
}

/// Kills the reference agent when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Frames of the caller's clip and what they heard back.
async fn echo_experience(addr: SocketAddr, uuid: &str, script: &CallerScript) -> Vec<bool> {
    let vonage = vonage_call(addr, uuid, script.clone(), Duration::from_secs(9)).await;
    let (report, heard) = tokio::time::timeout(WAIT, vonage).await.unwrap().unwrap();
    assert_eq!(report.counters.frame_size_violations, 0);
    heard.played.iter().map(|&(_, audible)| audible).collect()
}

/// `examples/agent_echo.py` behind the bridge gives the caller what the built-in echo agent
/// gives: the utterance back, as many audible frames within a few, after the same pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_reference_agent_echoes_like_the_built_in_one() {
    if let Err(why) = python_with_websockets() {
        println!("SKIPPED the_python_reference_agent_echoes_like_the_built_in_one: {why}");
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let _agent = Child(
        std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/agent_echo.py"
            ))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            t0.elapsed() < WAIT,
            "agent_echo.py never listened on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let speech = clip("speech_001");
    let rate = speech.rate;
    let mut samples = silence(rate, 300);
    samples.extend(cut(&speech, 800, 3_900, 1));
    let script = CallerScript::new(rate, &samples, Duration::ZERO);

    let url = format!("ws://127.0.0.1:{port}/agent");
    let bridged = bridge_server(bridge_config(rate, &url)).await;
    let via_python = echo_experience(
        bridged.addr,
        "bbbb0001-0000-0000-0000-000000000001",
        &script,
    )
    .await;
    let built_in = start_with(config_at(rate), Arc::new(EchoAgent::default())).await;
    let via_echo = echo_experience(
        built_in.addr,
        "bbbb0002-0000-0000-0000-000000000002",
        &script,
    )
    .await;

    let first = |v: &[bool]| v.iter().position(|&a| a);
    let count = |v: &[bool]| v.iter().filter(|&&a| a).count();
    let (p, e) = (count(&via_python), count(&via_echo));
    println!("audible frames heard: python agent {p}, built-in echo {e}");
    assert!(e > 100, "the built-in echo played {e} audible frames");
    assert!(
        p.abs_diff(e) <= 3,
        "python {p} vs built-in {e} audible frames"
    );
    let (fp, fe) = (first(&via_python).unwrap(), first(&via_echo).unwrap());
    assert!(
        fp.abs_diff(fe) <= 10,
        "the echo starts at frame {fp} (python) vs {fe} (built-in)"
    );
    let body = metrics(bridged.addr).await;
    assert!(!body.contains("voicegate_agent_failures_total{"), "{body}");
}

// ------------------------------------------------------------------------------ a flooding agent

/// Lines written through a `tracing` subscriber set as the test thread's default.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures what this thread logs at `info` and above until the guard is dropped. With the
    /// current-thread runtime, that is the whole server's logging.
    fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let w = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// An agent that floods requests that fail at once (transfers to a bad number) and `log`
/// messages while not reading, then reads: the bridge stops reading it while its answers pile
/// up (the bound on the bridge's queue itself is checked in `agent::bridge::call`'s unit test:
/// from here the sockets' buffers hide it), yet once the agent reads, every request is answered,
/// before `stop`; and the server's log holds a bounded number of lines about it (200 agent `log`
/// lines and 20 about requests, as docs/agent-protocol.md says), the rest counted.
#[tokio::test] // current thread: the log capture sees the server's tasks
async fn an_agent_flooding_requests_and_logs_gets_every_answer_and_a_capped_log() {
    const LOGS: u64 = 1_000;
    const REQUESTS: u64 = 20_000;
    let (captured, _guard) = Captured::start();
    let (listener, url) = agent_listener().await;
    let rate = SampleRate::Hz16000;
    let server = bridge_server(bridge_config(rate, &url)).await;
    let mut leg = server_support::call(server.addr, "cccc0001-0000-0000-0000-000000000001").await;
    let mut ag = accept(&listener).await;
    assert!(matches!(next(&mut ag).await, FromBridge::Json(v) if v["type"] == "start"));

    let (mut tx, mut rx) = ag.split();
    let sender = tokio::spawn(async move {
        let line = "x".repeat(1_000);
        for i in 0..LOGS {
            let log = json!({"type": "log", "level": "warn", "message": format!("{i} {line}")});
            tx.feed(Message::text(log.to_string())).await.unwrap();
        }
        let transfer = json!({"type": "transfer", "to": "not a number"}).to_string();
        for _ in 0..REQUESTS {
            tx.feed(Message::text(transfer.clone())).await.unwrap();
        }
        tx.flush().await.unwrap();
        tx
    });

    // While the agent does not read, the bridge answers as many requests as fit in its queue
    // and the sockets' buffers (all of them, if the buffers are large), then stops reading.
    let failed = "voicegate_agent_actions_failed_total";
    let t0 = Instant::now();
    let mut seen = Vec::new();
    let held = loop {
        let n = metric(&metrics(server.addr).await, failed).unwrap_or(0.0) as u64;
        seen.push(n);
        if n > 0 && seen.len() >= 4 && seen[seen.len() - 4..].iter().all(|&m| m == n) {
            break n;
        }
        assert!(t0.elapsed() < WAIT, "{failed}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    println!("requests answered while the agent did not read: {held} of {REQUESTS}");

    // The agent reads: every request gets its answer, then `stop` once the caller hangs up.
    let mut answered = 0u64;
    while answered < REQUESTS {
        let msg = tokio::time::timeout(WAIT, rx.next())
            .await
            .expect("an answer within 30 s")
            .expect("the socket stays open")
            .unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            assert_eq!(v["type"], "action_failed", "{v}");
            assert_eq!(v["action"], "transfer", "{v}");
            answered += 1;
        }
    }
    let tx = tokio::time::timeout(WAIT, sender).await.unwrap().unwrap();
    let body = wait_metric(server.addr, failed, REQUESTS as f64).await;
    assert_eq!(metric(&body, failed), Some(REQUESTS as f64));
    leg.ws.close(None).await.unwrap();
    let mut ag = tx.reunite(rx).unwrap();
    let (mut audio, mut other) = (Vec::new(), Vec::new());
    let stop = until(&mut ag, "stop", rate, &mut audio, &mut other).await;
    assert_eq!(stop["reason"], "socket_closed");
    assert!(other.is_empty(), "{other:?}");
    assert!(matches!(
        next(&mut ag).await,
        FromBridge::Closed(Some((1000, _)))
    ));
    // The bridge logs its totals as it goes.
    let t0 = Instant::now();
    while !captured
        .lines()
        .iter()
        .any(|l| l.contains("agent log lines suppressed in this"))
    {
        assert!(t0.elapsed() < WAIT, "no totals at the end of the call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = wait_metric(server.addr, "voicegate_calls_total", 1.0).await;
    assert!(!body.contains("voicegate_agent_failures_total{"), "{body}");

    // The log: the allowance of each kind, one notice each, the call's totals at its end.
    let suppressed = metric(&body, "voicegate_agent_log_lines_suppressed_total").unwrap() as u64;
    let lines = captured.lines();
    let count = |s: &str| lines.iter().filter(|l| l.contains(s)).count() as u64;
    assert_eq!(count("agent_log="), 200);
    assert_eq!(count("further agent log lines suppressed"), 1);
    let about_requests = count("agent asks for") + count("call-control request failed");
    assert_eq!(about_requests, 20);
    assert_eq!(
        count("further lines about the agent's call-control requests suppressed"),
        1
    );
    // Each request makes one line (refused: too many in flight) or two (asked for, failed),
    // every one written or counted.
    let over = suppressed - (LOGS - 200);
    assert!(
        (REQUESTS - 20..=2 * REQUESTS - 20).contains(&over),
        "{suppressed} suppressed"
    );
    assert_eq!(count("suppressed in this call"), 2);
    let about_the_call = lines
        .iter()
        .filter(|l| l.contains("call_id=cccc0001-0000-0000-0000-000000000001"))
        .count();
    println!(
        "{} log lines in all, {about_the_call} naming the call; {suppressed} suppressed",
        lines.len()
    );
    // Every line written names the call: the 200 + 20 allowed, their two notices and two
    // totals, and the call's few own lines; nothing else grew.
    assert!(
        (224..250).contains(&about_the_call),
        "{about_the_call} lines"
    );
}

/// A REST stand-in that records each `PUT /v1/calls/{uuid}` when it arrives and answers `204`
/// only once the test adds a permit to the returned semaphore.
async fn held_rest_stand_in() -> (String, Arc<Mutex<Vec<Value>>>, Arc<tokio::sync::Semaphore>) {
    use axum::extract::State;
    use axum::routing::put;
    type Shared = (Arc<Mutex<Vec<Value>>>, Arc<tokio::sync::Semaphore>);
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let app = axum::Router::new()
        .route(
            "/v1/calls/{uuid}",
            put(
                |State((seen, gate)): State<Shared>, body: axum::body::Bytes| async move {
                    seen.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                    gate.acquire().await.unwrap().forget();
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state((seen.clone(), gate.clone()));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (base, seen, gate)
}

/// A hangup is final: an agent that repeats it while the first is in flight (or after it
/// succeeded) makes no further request, each repeat is counted as ignored, and a transfer asked
/// for meanwhile fails with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_hangup_is_ignored_while_one_is_in_flight() {
    const HANGUPS: u64 = 1_000;
    let (listener, url) = agent_listener().await;
    let rate = SampleRate::Hz16000;
    let (base, seen, gate) = held_rest_stand_in().await;
    // Longer than the test holds the request, so the client never retries it.
    let server = server_with_rest(rate, &url, &base, Some(Duration::from_secs(60))).await;
    let _leg = server_support::call(server.addr, "cccc0002-0000-0000-0000-000000000002").await;
    let mut ag = accept(&listener).await;
    assert!(matches!(next(&mut ag).await, FromBridge::Json(v) if v["type"] == "start"));

    let hangup = json!({"type": "hangup"}).to_string();
    for _ in 0..HANGUPS {
        ag.feed(Message::text(hangup.clone())).await.unwrap();
    }
    ag.flush().await.unwrap();
    let ignored = "voicegate_agent_actions_ignored_total";
    // Every hangup was handled (one asked for, the rest ignored): the one request arrives, and
    // no other can follow.
    wait_metric(server.addr, ignored, (HANGUPS - 1) as f64).await;
    let t0 = Instant::now();
    while seen.lock().unwrap().is_empty() {
        assert!(t0.elapsed() < WAIT, "no hangup request");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["action"], "hangup");

    // The request succeeds; a later hangup is ignored too, a transfer fails with the reason.
    gate.add_permits(1);
    send_json(&mut ag, json!({"type": "hangup"})).await;
    send_json(&mut ag, json!({"type": "transfer", "to": "+447700900999"})).await;
    let (mut audio, mut other) = (Vec::new(), Vec::new());
    let failed = until(&mut ag, "action_failed", rate, &mut audio, &mut other).await;
    assert_eq!(failed["action"], "transfer", "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("hung up"),
        "{failed}"
    );
    let body = metrics(server.addr).await;
    assert_eq!(metric(&body, ignored), Some(HANGUPS as f64), "{body}");
    assert_eq!(
        metric(&body, "voicegate_agent_actions_failed_total"),
        Some(1.0),
        "{body}"
    );
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
}
