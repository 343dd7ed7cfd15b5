//! `voicegate simulate --server http://127.0.0.1:PORT --wav caller.wav --out heard.wav`: plays
//! Vonage's side of one call against a running server and prints a timeline.
//!
//! The call goes as Vonage would run it (vonage-protocol.md §1, §3, §4): caller-leg events
//! `started`/`ringing`, `GET /answer` with fresh UUIDs, caller `answered`, the NCCO's websocket
//! `connect` (with `Authorization` when it asks), websocket-leg `started`/`answered`, the WAV as
//! exact 20 ms frames in real time, then silence until the reply ends or `--timeout`; the
//! server's frames are played through Vonage's playback model ([`Playback`]); at the end
//! `completed` for both legs (`disconnected` first if the server closed the socket). What the
//! caller heard is written to `--out` at the socket rate, silence where nothing played.
//!
//! `--bargein-at MS` mixes the WAV in again at that time (`--bargein-gain-db` louder: a
//! caller talks into the microphone, louder than the bot's echo could come back) to test
//! interruptions.
//!
//! Not real-time (the tool paces itself against the monotonic clock, but nothing here is on
//! the server's per-frame path).
//!
//! [`Playback`]: super::vonage_side::Playback

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use serde::Serialize;
use serde_json::Map;

use super::vonage_side::{
    self, AuthSettings, CallIdentity, CallObserver, CallerScript, EventPoster, Leg, LineEcho,
    MediaEnd, MediaEvent, PlainUrl, StopRule,
};
use crate::core::SampleRate;

/// Error type of the tools' edges.
pub type ToolError = Box<dyn std::error::Error + Send + Sync>;

/// Flags of `voicegate simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// The server's base URL (plain http, on this host), e.g. `http://127.0.0.1:3000`.
    #[arg(long)]
    pub server: String,
    /// What the caller says: a WAV file in any format hound reads (resampled to the call rate).
    #[arg(long)]
    pub wav: PathBuf,
    /// Where to write what the caller heard (mono L16 WAV at the call rate).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Give up on the reply after this long from the start of the media (e.g. `30s`).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Mix the WAV in again at this many ms after the media starts, to test barge-in.
    #[arg(long, value_name = "MS")]
    pub bargein_at: Option<u64>,
    /// Gain of the barge-in copy, dB.
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    pub bargein_gain_db: f32,
    /// The caller's line echoes what it plays back into the caller's audio this many ms later
    /// (closed loop: the echo stops when the bot pauses). Off by default.
    #[arg(long, value_name = "MS")]
    pub echo_delay_ms: Option<u64>,
    /// Level of that echo relative to what was played, dB (with `--echo-delay-ms`).
    #[arg(long, default_value_t = -20.0, allow_negative_numbers = true)]
    pub echo_db: f32,
    /// Signature secret to mint the handshake JWT when the NCCO asks for `{"type":"vonage"}`.
    #[arg(long, env = "VONAGE_SIGNATURE_SECRET", hide_env_values = true)]
    pub signature_secret: Option<String>,
    /// `api_key` claim of minted tokens.
    #[arg(long)]
    pub api_key: Option<String>,
    /// `application_id` claim of minted tokens.
    #[arg(long)]
    pub application_id: Option<String>,
    /// Print the report as one JSON object after the timeline.
    #[arg(long)]
    pub json: bool,
}

/// Parses `30s`, `500ms`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (try 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" | "" => v,
        "m" | "min" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s or m)")),
    };
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What one simulated call measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimulationReport {
    /// The call rate from the NCCO.
    pub rate_hz: u32,
    /// The NCCO's actions, in order.
    pub ncco_actions: Vec<String>,
    /// The `websocket:connected` message sent.
    pub connected_message: String,
    /// Whether an `Authorization` header was sent in the handshake.
    pub authorization_sent: bool,
    /// How the media ended: `hung_up`, `server_closed`, `frame_size_violation`, `socket_error`.
    pub end: String,
    /// Caller frames sent.
    pub frames_sent: u64,
    /// Frames received from the server.
    pub frames_received: u64,
    /// Audible frames played.
    pub audible_frames_played: u64,
    /// Replies that started playing.
    pub replies: u64,
    /// End of caller speech → first audible reply frame, ms, per reply.
    pub first_reply_ms: Vec<f64>,
    /// Barge-in onset sent → `clear` received, ms.
    pub clear_ms: Vec<f64>,
    /// `clear` commands received.
    pub clears: u64,
    /// `notify` commands received.
    pub notifies: u64,
    /// `websocket:notify` answers sent.
    pub notifies_answered: u64,
    /// Playback underruns in the middle of a reply.
    pub underruns: u64,
    /// Gaps in a reply while the caller talked over it (the app paused it), not underruns.
    pub paused_gaps: u64,
    /// Wrong-sized frames (fatal).
    pub frame_size_violations: u64,
    /// Other protocol violations.
    pub protocol_violations: u64,
    /// Every violation, described.
    pub violations: Vec<String>,
    /// Event webhook requests that failed.
    pub webhook_failures: u32,
    /// The timeline, one line per event: `+ms what`.
    pub timeline: Vec<String>,
}

/// Records the timeline and what the caller heard.
struct Recorder {
    t0: Instant,
    rate: SampleRate,
    heard: Vec<i16>,
    lines: Vec<(Instant, String)>,
    first_reply: Vec<f64>,
    clear: Vec<f64>,
    violations: Vec<String>,
}

impl Recorder {
    fn note(&mut self, at: Instant, what: impl Into<String>) {
        self.lines.push((at, what.into()));
    }
}

impl CallObserver for Recorder {
    fn first_reply(&mut self, latency: Duration) {
        self.first_reply.push(latency.as_secs_f64() * 1000.0);
    }

    fn clear_latency(&mut self, latency: Duration) {
        self.clear.push(latency.as_secs_f64() * 1000.0);
    }

    fn played(&mut self, start: Instant, frame: &[u8]) {
        let Some(dt) = start.checked_duration_since(self.t0) else {
            return;
        };
        let at = (dt.as_secs_f64() * f64::from(self.rate.hz())).round() as usize;
        let n = frame.len() / 2;
        // Bounded by the timeout: at most a few minutes of audio.
        if at + n > self.heard.len() {
            self.heard.resize(at + n, 0);
        }
        for (i, s) in frame.chunks_exact(2).enumerate() {
            self.heard[at + i] = i16::from_le_bytes([s[0], s[1]]);
        }
    }

    fn event(&mut self, at: Instant, event: &MediaEvent) {
        let text = match event {
            MediaEvent::CallerSpeechStart => "caller speech starts".to_owned(),
            MediaEvent::CallerSpeechEnd => "caller speech ends".to_owned(),
            MediaEvent::ReplyStart { latency: Some(d) } => format!(
                "reply starts playing (first-reply latency {} ms)",
                d.as_millis()
            ),
            MediaEvent::ReplyStart { latency: None } => "reply starts playing".to_owned(),
            MediaEvent::ReplyEnd => "reply ends".to_owned(),
            MediaEvent::Cleared { discarded } => match self.clear.last() {
                Some(ms) => format!(
                    "clear received: {discarded} queued frames discarded, websocket:cleared sent \
                     (barge-in → clear {ms:.0} ms)"
                ),
                None => format!(
                    "clear received: {discarded} queued frames discarded, websocket:cleared sent"
                ),
            },
            MediaEvent::NotifyAnswered { first: true } => {
                "notify reached: websocket:notify sent (later ones are only counted)".to_owned()
            }
            MediaEvent::NotifyAnswered { first: false } => return,
            MediaEvent::Violation(v) => {
                self.violations.push(v.clone());
                format!("PROTOCOL VIOLATION: {v}")
            }
        };
        self.note(at, text);
    }
}

/// The caller's audio at `rate`: the WAV, plus the barge-in copy when asked.
fn caller_samples(args: &SimulateArgs, rate: SampleRate) -> Result<Vec<i16>, ToolError> {
    let (mono, from) = vonage_side::read_wav_mono(&args.wav)
        .map_err(|e| format!("cannot read {}: {e}", args.wav.display()))?;
    let mut samples = vonage_side::to_call_rate(&mono, from, rate, 1.0);
    if let Some(ms) = args.bargein_at {
        if ms > 600_000 {
            return Err("--bargein-at is past 10 minutes".into());
        }
        let gain = 10f32.powf(args.bargein_gain_db / 20.0);
        let copy = vonage_side::to_call_rate(&mono, from, rate, gain);
        let off = (ms * u64::from(rate.hz()) / 1000) as usize;
        if samples.len() < off + copy.len() {
            samples.resize(off + copy.len(), 0);
        }
        for (d, s) in samples[off..].iter_mut().zip(&copy) {
            *d = d.saturating_add(*s);
        }
    }
    Ok(samples)
}

/// How long `simulate` and `loadtest` wait for the server to answer `GET /readyz` before they
/// start: a server started together with them takes a moment to bind its port and a second or
/// two (its warm-up call) before it serves.
pub const READY_WAIT: Duration = Duration::from_secs(20);

/// Polls `GET /readyz` until the server answers with anything but 503, or `wait` has passed.
/// Any answer means it serves (a webhook server other than voicegate may have no `/readyz`
/// and say 404); 503 is voicegate draining or full, and is reported as such once `wait` is up,
/// as is a connection that keeps failing.
pub async fn wait_until_ready(authority: &str, wait: Duration) -> Result<(), ToolError> {
    let deadline = Instant::now() + wait;
    let mut client = vonage_side::HttpClient::new(authority);
    loop {
        let last = match client.request("GET", "/readyz", None).await {
            Ok(r) if r.status != 503 => return Ok(()),
            Ok(_) => "GET /readyz answered 503 (draining or at --max-calls)".to_owned(),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "the server at {authority} is not ready after {} s: {last}",
                wait.as_secs()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs one simulated call and returns what it measured (the `--out` file is written too).
pub async fn simulate(args: &SimulateArgs) -> Result<SimulationReport, ToolError> {
    let server = PlainUrl::parse(&args.server)?;
    wait_until_ready(&server.authority(), READY_WAIT).await?;
    let id = CallIdentity::fresh();
    let mut rep = SimulationReport::default();
    let start = Instant::now();
    let mut lines: Vec<(Instant, String)> = Vec::new();
    let mut events = EventPoster::new(&server);

    events
        .post(&id, None, Leg::Caller, "started", Map::new())
        .await;
    events
        .post(&id, None, Leg::Caller, "ringing", Map::new())
        .await;
    let mut http = vonage_side::HttpClient::new(server.authority());
    let t = Instant::now();
    let target = vonage_side::answer(&mut http, &server, &id).await?;
    lines.push((
        Instant::now(),
        format!(
            "answer webhook: 200 in {} ms, NCCO with {} action(s)",
            t.elapsed().as_millis(),
            target.ncco.0.len()
        ),
    ));
    rep.ncco_actions = serde_json::to_value(&target.ncco)?
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["action"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default();
    rep.rate_hz = target.rate.hz();
    rep.connected_message = vonage_side::connected_message(&target.endpoint);
    rep.authorization_sent = target.endpoint.authorization.is_some();
    events
        .post(&id, None, Leg::Caller, "answered", Map::new())
        .await;
    events.set_ws_event_url(target.event_url.as_deref());

    let samples = caller_samples(args, target.rate)?;
    let mut script = CallerScript::new(target.rate, &samples, Duration::ZERO);
    if let Some(ms) = args.echo_delay_ms {
        // A line returns less than it plays: gains above 0 dB are taken as 0 dB.
        script = script.with_echo(LineEcho {
            delay: Duration::from_millis(ms.min(1_000)),
            gain_db: args.echo_db.min(0.0),
        });
    }
    let auth = AuthSettings {
        signature_secret: args.signature_secret.clone(),
        api_key: args.api_key.clone(),
        application_id: args.application_id.clone(),
    };
    let mut ws = match vonage_side::connect_media(&target, &auth).await {
        Ok(ws) => ws,
        Err(e) => {
            events.post_call_end(&id, &target, "failed").await;
            return Err(e.into());
        }
    };
    lines.push((
        Instant::now(),
        format!(
            "media socket connected to {} at {} Hz; sent {}",
            target.endpoint.uri,
            target.rate.hz(),
            rep.connected_message
        ),
    ));
    events
        .post(&id, Some(&target), Leg::Websocket, "started", Map::new())
        .await;
    events
        .post(&id, Some(&target), Leg::Websocket, "answered", Map::new())
        .await;

    let mut rec = Recorder {
        t0: Instant::now(),
        rate: target.rate,
        heard: Vec::new(),
        lines: Vec::new(),
        first_reply: Vec::new(),
        clear: Vec::new(),
        violations: Vec::new(),
    };
    let silence = Bytes::from(vec![0u8; target.rate.frame_bytes()]);
    let report = vonage_side::run_media(
        &mut ws,
        &script,
        &silence,
        StopRule::ReplyDone {
            timeout: args.timeout,
        },
        &mut rec,
    )
    .await;
    let c = report.counters;
    rep.end = match report.end {
        MediaEnd::HungUp => "hung_up",
        MediaEnd::ServerClosed { .. } => "server_closed",
        MediaEnd::FrameViolation(_) => "frame_size_violation",
        MediaEnd::SocketError => "socket_error",
    }
    .to_owned();
    let end_line = match report.end {
        MediaEnd::HungUp => "caller hangs up: close 1000".to_owned(),
        MediaEnd::ServerClosed { code } => format!(
            "the server closed the media socket (code {})",
            code.map_or("none".to_owned(), |c| c.to_string())
        ),
        MediaEnd::FrameViolation(v) => format!(
            "PROTOCOL VIOLATION: {v}; socket dropped without a close frame (1006), as Vonage does"
        ),
        MediaEnd::SocketError => "media socket error".to_owned(),
    };
    rec.note(Instant::now(), end_line);
    drop(ws);
    if matches!(report.end, MediaEnd::ServerClosed { .. }) {
        let ncco = events
            .post(
                &id,
                Some(&target),
                Leg::Websocket,
                "disconnected",
                Map::new(),
            )
            .await;
        if let Some(n) = ncco {
            rec.note(
                Instant::now(),
                format!("disconnected event answered with an NCCO: {n}"),
            );
        }
    }
    events.post_call_end(&id, &target, "completed").await;

    rep.frames_sent = c.frames_sent;
    rep.frames_received = c.frames_received;
    rep.audible_frames_played = c.audible_played;
    rep.replies = c.replies;
    rep.clears = c.clears;
    rep.notifies = c.notifies;
    rep.notifies_answered = c.notifies_answered;
    rep.underruns = c.underruns;
    rep.paused_gaps = c.paused_gaps;
    rep.frame_size_violations = c.frame_size_violations;
    rep.protocol_violations = c.protocol_violations;
    rep.webhook_failures = events.failures;
    rep.first_reply_ms = rec.first_reply.clone();
    rep.clear_ms = rec.clear.clone();
    rep.violations = rec.violations.clone();

    if let Some(out) = &args.out {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: target.rate.hz(),
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        // The heard track spans the whole media time, silence where nothing played.
        let total = (rec.t0.elapsed().as_secs_f64() * f64::from(target.rate.hz())).round() as usize;
        if rec.heard.len() < total {
            rec.heard.resize(total, 0);
        }
        let mut w = hound::WavWriter::create(out, spec)
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        for s in &rec.heard {
            w.write_sample(*s)?;
        }
        w.finalize()?;
    }

    // Timeline: set-up lines relative to the start, media lines relative to the media start.
    let mut timeline = Vec::new();
    for (at, what) in &lines {
        timeline.push(format!(
            "{:>7} ms  {what}",
            at.saturating_duration_since(start).as_millis()
        ));
    }
    let media_off = rec.t0.saturating_duration_since(start);
    let mut media = std::mem::take(&mut rec.lines);
    media.sort_by_key(|l| l.0);
    for (at, what) in media {
        timeline.push(format!(
            "{:>7} ms  {what}",
            (media_off + at.saturating_duration_since(rec.t0)).as_millis()
        ));
    }
    rep.timeline = timeline;
    Ok(rep)
}

/// The readable report: the timeline, then the figures.
pub fn render(r: &SimulationReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "NCCO: {}", r.ncco_actions.join(" → "));
    for l in &r.timeline {
        let _ = writeln!(s, "{l}");
    }
    let list = |v: &[f64]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let _ = writeln!(s, "---");
    let _ = writeln!(
        s,
        "frames: {} sent, {} received ({} audible played), {} replies, {} underruns, {} paused \
         while the caller talked over a reply",
        r.frames_sent,
        r.frames_received,
        r.audible_frames_played,
        r.replies,
        r.underruns,
        r.paused_gaps
    );
    let _ = writeln!(s, "first-reply latency ms: {}", list(&r.first_reply_ms));
    let _ = writeln!(
        s,
        "barge-in → clear ms: {} ({} clear, {} notify / {} answered)",
        list(&r.clear_ms),
        r.clears,
        r.notifies,
        r.notifies_answered
    );
    if r.webhook_failures > 0 {
        let _ = writeln!(s, "event webhooks failed: {}", r.webhook_failures);
    }
    if r.violations.is_empty() {
        let _ = writeln!(s, "protocol violations: none");
    } else {
        let _ = writeln!(
            s,
            "!!! {} PROTOCOL VIOLATION(S) — Vonage would have dropped or rejected this:",
            r.violations.len()
        );
        for v in &r.violations {
            let _ = writeln!(s, "!!!   {v}");
        }
    }
    s
}

/// `voicegate simulate`: runs the call on a small runtime, prints the timeline (and JSON with
/// `--json`). A protocol violation is an error.
pub fn run(args: &SimulateArgs) -> Result<(), ToolError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(simulate(args))?;
    print!("{}", render(&r));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    if !r.violations.is_empty() {
        return Err(format!("{} protocol violation(s)", r.violations.len()).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener that is bound but serves nothing for a while, then answers `/readyz` with
    /// `status`, one connection at a time.
    async fn late_server(delay: Duration, status: u16) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = if status == 503 { "draining\n" } else { "ok\n" };
                let r = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(r.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn waits_for_a_server_that_is_still_warming_up() {
        let addr = late_server(Duration::from_millis(300), 200).await;
        wait_until_ready(&addr, Duration::from_secs(10))
            .await
            .expect("ready once it serves");
        // Not voicegate: no `/readyz`, but it serves.
        let addr = late_server(Duration::ZERO, 404).await;
        wait_until_ready(&addr, Duration::from_secs(10))
            .await
            .expect("a 404 is a server that serves");
    }

    #[tokio::test]
    async fn gives_up_on_a_server_that_never_gets_ready() {
        let addr = late_server(Duration::ZERO, 503).await;
        let e = wait_until_ready(&addr, Duration::from_millis(300))
            .await
            .expect_err("503 is not ready");
        assert!(e.to_string().contains("503"), "{e}");
        // Nothing listening at all: refused, reported with the address.
        let free = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let e = wait_until_ready(&free, Duration::from_millis(200))
            .await
            .expect_err("nothing listens");
        assert!(e.to_string().contains(&free), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
