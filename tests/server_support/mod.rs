//! Shared helpers for the real-socket server tests: start a server on 127.0.0.1:0, a minimal
//! HTTP/1.1 client, corpus clips, and a fake Vonage that follows the answer NCCO to the media
//! socket.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use voicegate::agent::Agent;
use voicegate::agent::echo::EchoAgent;
use voicegate::core::SampleRate;
use voicegate::server::{self, AppState, ServerConfig};
use voicegate::tools::vonage_side::{
    self, AuthSettings, CallIdentity, CallObserver, CallerScript, HttpClient, MediaEvent,
    MediaReport, PlainUrl, StopRule, is_audible, run_media,
};

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
}

/// Starts `config` with the echo agent on 127.0.0.1:0 in the current runtime.
pub async fn start(config: ServerConfig) -> TestServer {
    start_with(config, Arc::new(EchoAgent::default())).await
}

/// Starts `config` with `agent` on 127.0.0.1:0 in the current runtime.
pub async fn start_with(mut config: ServerConfig, agent: Arc<dyn Agent>) -> TestServer {
    config.listen = "127.0.0.1:0".parse().unwrap();
    serve_state(AppState::new(config, agent)).await
}

/// Serves `state` on 127.0.0.1:0 in the current runtime.
pub async fn serve_state(state: AppState) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    TestServer { addr, state }
}

pub fn config_at(rate: SampleRate) -> ServerConfig {
    let mut c = ServerConfig::new();
    c.rate = rate;
    c.session.call_rate = rate;
    c.session.agent_rate = rate;
    c
}

/// `GET path` over a fresh connection; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    parse_response(&buf)
}

/// Splits a raw HTTP/1.1 response into (status, body); status 0 when there is none.
pub fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// A value of a metric line (`name value`) in a Prometheus text body.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// One corpus clip: rate, samples, speech segments (ms).
pub struct Clip {
    pub rate: SampleRate,
    pub samples: Vec<i16>,
    pub speech_ms: Vec<(u32, u32)>,
}

pub fn clip(id: &str) -> Clip {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(root.join("manifest.json")).unwrap()).unwrap();
    let c = manifest["clips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .expect("clip in manifest");
    let mut reader = hound::WavReader::open(root.join(c["inbound"].as_str().unwrap())).unwrap();
    let rate = SampleRate::try_from(reader.spec().sample_rate).unwrap();
    let samples = reader.samples::<i16>().map(Result::unwrap).collect();
    let speech_ms = c["speech_segments_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s[0].as_u64().unwrap() as u32, s[1].as_u64().unwrap() as u32))
        .collect();
    Clip {
        rate,
        samples,
        speech_ms,
    }
}

impl Clip {
    /// Exact 20 ms frames of samples `[from_ms, to_ms)`, as L16 little-endian bytes.
    pub fn frames(&self, from_ms: u32, to_ms: u32) -> Vec<Vec<u8>> {
        let n = self.rate.frame_samples();
        let per_ms = self.rate.hz() as usize / 1000;
        let a = (from_ms as usize * per_ms).min(self.samples.len());
        let b = (to_ms as usize * per_ms).min(self.samples.len());
        self.samples[a..b]
            .chunks(n)
            .map(|c| {
                let mut f: Vec<u8> = c.iter().flat_map(|s| s.to_le_bytes()).collect();
                f.resize(n * 2, 0);
                f
            })
            .collect()
    }
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// What the fake Vonage learnt from the NCCO.
pub struct Leg {
    pub ws: Ws,
    pub rate: SampleRate,
    pub ncco: Value,
}

/// Fetches `/answer` for `uuid` (unsigned GET) and returns the NCCO's websocket `uri` (with its
/// media token).
pub async fn media_uri(addr: SocketAddr, uuid: &str) -> String {
    let (_, ncco) = answer(addr, uuid).await;
    ncco.as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "connect")
        .expect("connect action")["endpoint"][0]["uri"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `GET /answer` for `uuid` as Vonage sends it; returns (status, NCCO or `Null`).
pub async fn answer(addr: SocketAddr, uuid: &str) -> (u16, Value) {
    let (status, body) = http_get(
        addr,
        &format!("/answer?to=447700900000&from=447700900123&uuid={uuid}&conversation_uuid=CON-{uuid}&endpoint_type=phone"),
    )
    .await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Plays Vonage: fetches `/answer` for `uuid`, follows the NCCO's websocket `uri`, and sends
/// `websocket:connected` with the endpoint's headers flattened in.
pub async fn call(addr: SocketAddr, uuid: &str) -> Leg {
    let (status, body) = http_get(
        addr,
        &format!("/answer?to=447700900000&from=447700900123&uuid={uuid}&conversation_uuid=CON-{uuid}&endpoint_type=phone"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ncco: Value = serde_json::from_str(&body).unwrap();
    let connect = ncco
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "connect")
        .expect("connect action")
        .clone();
    let ep = &connect["endpoint"][0];
    assert_eq!(ep["type"], "websocket");
    let uri = ep["uri"].as_str().unwrap();
    let ct = ep["content-type"].as_str().unwrap();
    let rate = SampleRate::from_content_type(ct).unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(uri)
        .await
        .expect("media socket upgrade");
    let mut connected = serde_json::Map::new();
    connected.insert("event".into(), "websocket:connected".into());
    connected.insert("content-type".into(), ct.into());
    for (k, v) in ep["headers"].as_object().unwrap() {
        connected.insert(k.clone(), v.clone());
    }
    ws.send_text(Value::Object(connected).to_string()).await;
    Leg { ws, rate, ncco }
}

/// `send` for text without importing the sink trait at every call site.
pub trait SendText {
    async fn send_text(&mut self, text: String);
}

impl SendText for Ws {
    async fn send_text(&mut self, text: String) {
        use futures_util::SinkExt;
        self.send(Message::text(text)).await.unwrap();
    }
}

/// Polls `/metrics` until `name` reaches `want` (30 s); returns the body.
pub async fn wait_metric(addr: SocketAddr, name: &str, want: f64) -> String {
    let t0 = std::time::Instant::now();
    loop {
        let (_, body) = http_get(addr, "/metrics").await;
        if metric(&body, name).is_some_and(|v| v >= want) {
            return body;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "{name} never reached {want}: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `ms` of silence at `rate`.
pub fn silence(rate: SampleRate, ms: u32) -> Vec<i16> {
    vec![0; rate.hz() as usize * ms as usize / 1_000]
}

/// Samples `[from_ms, to_ms)` of `clip`, times `gain` (clipped).
pub fn cut(clip: &Clip, from_ms: u32, to_ms: u32, gain: i32) -> Vec<i16> {
    let per_ms = clip.rate.hz() as usize / 1_000;
    clip.samples[from_ms as usize * per_ms..to_ms as usize * per_ms]
        .iter()
        .map(|&s| (i32::from(s) * gain).clamp(-32_768, 32_767) as i16)
        .collect()
}

/// What the simulated caller heard.
#[derive(Default)]
pub struct Heard {
    /// Every frame that started playing: when, and whether it was audible.
    pub played: Vec<(std::time::Instant, bool)>,
    /// When `clear` arrived.
    pub cleared: Vec<std::time::Instant>,
}

impl CallObserver for Heard {
    fn played(&mut self, start: std::time::Instant, frame: &[u8]) {
        self.played.push((start, is_audible(frame)));
    }
    fn event(&mut self, at: std::time::Instant, ev: &MediaEvent) {
        if let MediaEvent::Cleared { .. } = ev {
            self.cleared.push(at);
        }
    }
}

impl Heard {
    /// Audible frames that started playing in `[from, to)`.
    pub fn audible_between(&self, from: std::time::Instant, to: std::time::Instant) -> usize {
        self.played
            .iter()
            .filter(|(t, a)| *a && *t >= from && *t < to)
            .count()
    }

    /// Audio the caller heard before the first `clear` arrived: every audible frame that started
    /// before it, the last one only up to the clear.
    pub fn heard_before_clear(&self) -> std::time::Duration {
        let clear = self.cleared[0];
        self.played
            .iter()
            .filter(|(t, a)| *a && *t < clear)
            .map(|(t, _)| (clear - *t).min(std::time::Duration::from_millis(20)))
            .sum()
    }
}

/// Plays Vonage's side of call `uuid` on its own task (`tools::vonage_side`): answer, media
/// socket, `script` in real time, hang-up after `duration`; yields the report and what was heard.
pub async fn vonage_call(
    addr: SocketAddr,
    uuid: &str,
    script: CallerScript,
    duration: std::time::Duration,
) -> tokio::task::JoinHandle<(MediaReport, Heard)> {
    let server = PlainUrl::parse(&format!("http://{addr}")).unwrap();
    let mut http = HttpClient::new(server.authority());
    let id = CallIdentity {
        uuid: uuid.to_owned(),
        ..CallIdentity::fresh()
    };
    let target = vonage_side::answer(&mut http, &server, &id).await.unwrap();
    let rate = target.rate;
    let mut ws = vonage_side::connect_media(&target, &AuthSettings::default())
        .await
        .unwrap();
    tokio::spawn(async move {
        let mut heard = Heard::default();
        let silence = bytes::Bytes::from(vec![0u8; rate.frame_bytes()]);
        let report = run_media(
            &mut ws,
            &script,
            &silence,
            StopRule::After(duration),
            &mut heard,
        )
        .await;
        (report, heard)
    })
}
