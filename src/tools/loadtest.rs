//! `voicegate loadtest --server … --calls N --duration 60s --wav caller.wav [--ramp 10s]
//! [--json] [--server-pid PID]`: N simulated Vonage calls at once on one tokio runtime, and a
//! report (INTERFACE.md, `loadtest --json`).
//!
//! Each call is one task doing what `voicegate simulate` does ([`run_media`]), with the WAV
//! looped (plus `--gap` of silence after each pass) for `--duration`, then a normal hang-up.
//! Calls start evenly over `--ramp`. With `--total M` (M > N), each of the N slots runs calls
//! back to back until M calls have been made (the 10 000-short-calls memory test).
//!
//! The generator is cheap: the caller frames are computed once and shared ([`CallerScript`],
//! slices of one `Bytes`), each call's WebSocket has small buffers and writes each frame at
//! once, frame gaps go into one shared lock-free histogram, and the playback model is advanced
//! lazily (no timer per call besides the 20 ms send deadline).
//!
//! Server CPU and RSS come from `/proc/PID/stat` and `/proc/PID/status` (`--server-pid`, or the
//! process listening on the server's local port), else from `/metrics` when the server exports
//! `process_cpu_seconds_total`/`process_resident_memory_bytes`; the generator's CPU from
//! `/proc/self/stat`.
//!
//! Not real-time.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use serde::Serialize;
use serde_json::Map;

use super::simulate::{READY_WAIT, ToolError, parse_duration, wait_until_ready};
use super::vonage_side::{
    self, AuthSettings, CallIdentity, CallObserver, CallerScript, EventPoster, HttpPool, Leg,
    MediaEnd, MediaReport, PlainUrl, StopRule, run_media,
};
use crate::core::SampleRate;

/// Flags of `voicegate loadtest`.
#[derive(Debug, Clone, Args)]
pub struct LoadtestArgs {
    /// The server's base URL (plain http, on this host), e.g. `http://127.0.0.1:3000`.
    #[arg(long)]
    pub server: String,
    /// Concurrent calls.
    #[arg(long, default_value_t = 10)]
    pub calls: usize,
    /// How long each call lasts (e.g. `60s`).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// What each caller says, looped: a WAV file in any format hound reads.
    #[arg(long)]
    pub wav: PathBuf,
    /// Calls start evenly over this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub ramp: Duration,
    /// Silence after each pass of the WAV.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub gap: Duration,
    /// Calls to make in all (default: `--calls`); slots run calls back to back until then.
    #[arg(long)]
    pub total: Option<usize>,
    /// Gain of the caller audio, dB (the barge-ins are the caller talking over the replies).
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    pub gain_db: f32,
    /// The server's process id, for CPU and RSS from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Worker threads of the generator's runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Signature secret to mint handshake JWTs when the NCCO asks for `{"type":"vonage"}`.
    #[arg(long, env = "VONAGE_SIGNATURE_SECRET", hide_env_values = true)]
    pub signature_secret: Option<String>,
}

/// Two percentiles.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct P50P95 {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
}

/// Frame-gap percentiles, ms.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct GapPercentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// The `--json` report (INTERFACE.md lists the required keys; the rest are extras).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// Calls whose media socket was set up.
    pub calls_established: u64,
    /// Calls that could not be set up or that the server ended early, or a protocol failure.
    pub calls_failed: u64,
    /// Wrong-sized frames received (each fatal to its call).
    pub frame_size_violations: u64,
    /// Lateness of received frames over the 20 ms cadence, ms, pooled over calls.
    pub frame_gap_ms: GapPercentiles,
    /// End of caller speech → first audible reply frame played, ms.
    pub first_reply_ms: P50P95,
    /// Barge-in onset sent → `clear` received, ms.
    pub clear_ms: P50P95,
    /// Server CPU time during the test, s.
    pub server_cpu_s: Option<f64>,
    /// Server RSS at full load (largest sample while all calls were up), KiB.
    pub server_rss_kib: Option<u64>,
    /// (RSS at full load − RSS before the test) / concurrent calls, KiB.
    pub rss_per_call_kib: Option<f64>,
    /// The generator's own CPU time, s.
    pub generator_cpu_s: f64,
    /// Times a playback buffer ran empty in the middle of a reply.
    pub underruns: u64,
    /// Gaps in a reply while the caller talked over it (the server paused it on purpose: two-stage
    /// barge-in); left out of `underruns` and `frame_gap_ms`.
    pub paused_gaps: u64,
    /// Concurrent calls asked for.
    pub calls_concurrent: usize,
    /// Calls made in all.
    pub calls_total: usize,
    /// Wall time of the test, s.
    pub wall_s: f64,
    /// Server CPU while every call was up, % of one core.
    pub server_cpu_hold_pct: Option<f64>,
    /// Server RSS before the first call, KiB.
    pub server_rss_baseline_kib: Option<u64>,
    /// Server RSS 3 s after the last call ended, KiB.
    pub server_rss_after_kib: Option<u64>,
    /// Where the server figures came from: `proc:PID`, `metrics`, or `none`.
    pub server_stats_source: String,
    /// Frames sent by the callers.
    pub frames_sent: u64,
    /// Frames received from the server.
    pub frames_received: u64,
    /// Frames received that were pooled into `frame_gap_ms`.
    pub frame_gap_samples: u64,
    /// Received frames more than 5 ms late.
    pub frames_late_5ms: u64,
    /// Text messages from the server that Vonage does not know.
    pub protocol_violations: u64,
    /// Barge-in onsets sent / `clear` received.
    pub bargeins_sent: u64,
    /// `clear` commands received.
    pub clears: u64,
    /// Replies that started playing.
    pub replies: u64,
    /// Times a caller's sender woke more than one frame late.
    pub generator_late_wakeups: u64,
    /// Event webhook requests that failed.
    pub webhook_failures: u64,
    /// Why calls failed, with counts.
    pub failures: Vec<(String, u64)>,
    /// The server's own view of its pacing during the test, from its
    /// `voicegate_pacing_lateness_seconds` histogram: how late its outbound timer woke, p50 and
    /// p99, ms (the upper bound of the histogram bucket each falls in). Next to `frame_gap_ms`
    /// it tells where lateness arose: a server that woke on time while the callers saw late
    /// frames lost them after the send (the network, or a busy generator). `None` when
    /// `/metrics` could not be read.
    pub server_pacing_late_ms: Option<BucketPercentiles>,
}

/// Percentiles read off a cumulative histogram: each the upper bound of its bucket.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct BucketPercentiles {
    /// Median, at most this.
    pub p50: f64,
    /// 99th percentile, at most this.
    pub p99: f64,
    /// Observations in the test.
    pub count: u64,
}

/// The cumulative buckets `(le, count)` of histogram `name` in Prometheus text, in order.
fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, rest) = rest.split_once("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, rest.trim().parse().ok()?))
        })
        .collect()
}

/// p50 and p99 (bucket upper bounds, ms) of what a histogram counted between two scrapes.
fn bucket_percentiles(before: &[(f64, u64)], after: &[(f64, u64)]) -> Option<BucketPercentiles> {
    let diff: Vec<(f64, u64)> = after
        .iter()
        .map(|&(le, n)| {
            let was = before.iter().find(|b| b.0 == le).map_or(0, |b| b.1);
            (le, n.saturating_sub(was))
        })
        .collect();
    let total = diff.iter().map(|d| d.1).max()?;
    if total == 0 {
        return None;
    }
    let at = |q: f64| {
        let want = (q * total as f64).ceil() as u64;
        diff.iter()
            .find(|d| d.1 >= want)
            .map_or(f64::INFINITY, |d| d.0 * 1_000.0)
    };
    Some(BucketPercentiles {
        p50: at(0.50),
        p99: at(0.99),
        count: total,
    })
}

/// The server's `/metrics` text, if it answers.
async fn scrape_metrics(authority: &str) -> Option<String> {
    let mut c = vonage_side::HttpClient::new(authority.to_owned());
    let r = c.request("GET", "/metrics", None).await.ok()?;
    Some(String::from_utf8_lossy(&r.body).into_owned())
}

const PACING_HISTOGRAM: &str = "voicegate_pacing_lateness_seconds";

// ------------------------------------------------------------------------------- histogram

/// 10 µs buckets below 20 ms, then 1 ms buckets to ~2 s; lock-free.
struct GapHistogram {
    buckets: Box<[AtomicU64]>,
    max_us: AtomicU64,
    count: AtomicU64,
    over_5ms: AtomicU64,
}

const FINE: u64 = 2_000; // 10 µs × 2000 = 20 ms
const COARSE: u64 = 1_980;

impl GapHistogram {
    fn new() -> Self {
        Self {
            buckets: (0..FINE + COARSE).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
            over_5ms: AtomicU64::new(0),
        }
    }

    fn record(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = if us < 20_000 {
            us / 10
        } else {
            FINE + ((us - 20_000) / 1_000).min(COARSE - 1)
        };
        self.buckets[i as usize].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        if us > 5_000 {
            self.over_5ms.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Upper edge of the bucket holding quantile `q`, ms (0 for the first bucket).
    fn quantile_ms(&self, q: f64) -> f64 {
        let n = self.count.load(Ordering::Relaxed);
        if n == 0 {
            return 0.0;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                let i = i as u64;
                let upper_us = if i == 0 {
                    0
                } else if i < FINE {
                    (i + 1) * 10
                } else {
                    20_000 + (i - FINE + 1) * 1_000
                };
                let max = self.max_us.load(Ordering::Relaxed);
                return upper_us.min(max) as f64 / 1000.0;
            }
        }
        self.max_us.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

fn p50p95(v: &mut [f64]) -> P50P95 {
    if v.is_empty() {
        return P50P95::default();
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        (v[i] * 10.0).round() / 10.0
    };
    P50P95 {
        p50: Some(at(0.50)),
        p95: Some(at(0.95)),
    }
}

// ------------------------------------------------------------------------------- /proc

/// CPU seconds (user + system) and RSS of a process, from /proc.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// utime + stime, s.
    pub cpu_s: f64,
    /// VmRSS, KiB.
    pub rss_kib: u64,
}

/// Reads /proc/`pid`/stat and /status (`"self"` for this process). Linux only.
pub fn proc_sample(pid: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime are fields 14, 15 of the line: 11, 12 after the state (field 3).
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux architecture we run on.
    let cpu_s = ticks as f64 / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    Some(ProcSample { cpu_s, rss_kib })
}

/// The pid of the process listening on TCP `port` on this host, from /proc/net/tcp{,6} and
/// the /proc/PID/fd links. `None` when not found or not permitted.
pub fn find_listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is "HEXIP:HEXPORT", st 0A is LISTEN, inode is field 9.
            let (Some(local), Some(st), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let p = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if p == Some(port) && *st == "0A" {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && inodes.iter().any(|i| link.as_os_str() == i.as_str())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// Where server figures come from.
#[derive(Debug, Clone)]
enum ServerStats {
    Proc(u32),
    Metrics(String),
    None,
}

impl ServerStats {
    async fn sample(&self) -> Option<ProcSample> {
        match self {
            Self::Proc(pid) => proc_sample(&pid.to_string()),
            Self::Metrics(authority) => {
                let text = scrape_metrics(authority).await?;
                let get = |name: &str| {
                    text.lines().find_map(|l| {
                        l.strip_prefix(name)
                            .and_then(|r| r.strip_prefix(' '))
                            .and_then(|v| v.trim().parse::<f64>().ok())
                    })
                };
                Some(ProcSample {
                    cpu_s: get("process_cpu_seconds_total")?,
                    rss_kib: (get("process_resident_memory_bytes")? / 1024.0) as u64,
                })
            }
            Self::None => None,
        }
    }

    fn label(&self) -> String {
        match self {
            Self::Proc(pid) => format!("proc:{pid}"),
            Self::Metrics(_) => "metrics".to_owned(),
            Self::None => "none".to_owned(),
        }
    }
}

// ------------------------------------------------------------------------------- the calls

struct Shared {
    server: PlainUrl,
    /// Webhook connections shared by all calls (Vonage's senders are shared infrastructure).
    webhooks: Arc<HttpPool>,
    scripts: [Option<Arc<CallerScript>>; 3],
    silences: [Bytes; 3],
    duration: Duration,
    auth: AuthSettings,
    gaps: GapHistogram,
    first_reply: Mutex<Vec<f64>>,
    clear: Mutex<Vec<f64>>,
    counters: Mutex<Totals>,
    next_call: AtomicUsize,
    total: usize,
    active: AtomicUsize,
}

#[derive(Default)]
struct Totals {
    established: u64,
    failed: u64,
    frame_size_violations: u64,
    underruns: u64,
    paused_gaps: u64,
    frames_sent: u64,
    frames_received: u64,
    protocol_violations: u64,
    bargeins_sent: u64,
    clears: u64,
    replies: u64,
    late_wakeups: u64,
    webhook_failures: u64,
    failures: Vec<(String, u64)>,
}

impl Totals {
    fn fail(&mut self, why: &str) {
        self.failed += 1;
        match self.failures.iter_mut().find(|(w, _)| w == why) {
            Some((_, n)) => *n += 1,
            None => self.failures.push((why.to_owned(), 1)),
        }
    }
}

struct LoadObserver<'a> {
    gaps: &'a GapHistogram,
    first_reply: Vec<f64>,
    clear: Vec<f64>,
}

impl CallObserver for LoadObserver<'_> {
    fn frame_gap(&mut self, gap: Duration) {
        self.gaps.record(gap);
    }
    fn first_reply(&mut self, latency: Duration) {
        self.first_reply.push(latency.as_secs_f64() * 1000.0);
    }
    fn clear_latency(&mut self, latency: Duration) {
        self.clear.push(latency.as_secs_f64() * 1000.0);
    }
}

fn rate_index(rate: SampleRate) -> usize {
    match rate {
        SampleRate::Hz8000 => 0,
        SampleRate::Hz16000 => 1,
        _ => 2,
    }
}

/// One call, start to end. Failures are counted, never panicked on.
async fn one_call(sh: &Shared) {
    let id = CallIdentity::fresh();
    let mut events = EventPoster::pooled(&sh.server, sh.webhooks.clone());
    events
        .post(&id, None, Leg::Caller, "started", Map::new())
        .await;
    let mut http = sh.webhooks.take();
    let answered = vonage_side::answer(&mut http, &sh.server, &id).await;
    sh.webhooks.put_back(http);
    let target = match answered {
        Ok(t) => t,
        Err(e) => {
            let why = match e {
                vonage_side::VonageSideError::NoWebsocket(_) => {
                    "answer: no websocket connect (server busy?)"
                }
                _ => "answer webhook failed",
            };
            sh.counters.lock().map(|mut c| c.fail(why)).ok();
            events
                .post(&id, None, Leg::Caller, "completed", Map::new())
                .await;
            return;
        }
    };
    events
        .post(&id, None, Leg::Caller, "answered", Map::new())
        .await;
    events.set_ws_event_url(target.event_url.as_deref());
    let Some(script) = sh.scripts[rate_index(target.rate)].clone() else {
        sh.counters
            .lock()
            .map(|mut c| c.fail("unsupported rate"))
            .ok();
        return;
    };
    let mut ws = match vonage_side::connect_media(&target, &sh.auth).await {
        Ok(ws) => ws,
        Err(_) => {
            sh.counters
                .lock()
                .map(|mut c| c.fail("media socket handshake failed"))
                .ok();
            events.post_call_end(&id, &target, "failed").await;
            return;
        }
    };
    events
        .post(&id, Some(&target), Leg::Websocket, "started", Map::new())
        .await;
    events
        .post(&id, Some(&target), Leg::Websocket, "answered", Map::new())
        .await;
    sh.active.fetch_add(1, Ordering::Relaxed);
    let mut obs = LoadObserver {
        gaps: &sh.gaps,
        first_reply: Vec::new(),
        clear: Vec::new(),
    };
    let silence = &sh.silences[rate_index(target.rate)];
    let rep: MediaReport = run_media(
        &mut ws,
        &script,
        silence,
        StopRule::After(sh.duration),
        &mut obs,
    )
    .await;
    sh.active.fetch_sub(1, Ordering::Relaxed);
    drop(ws);
    let server_closed = matches!(rep.end, MediaEnd::ServerClosed { .. });
    if server_closed {
        events
            .post(
                &id,
                Some(&target),
                Leg::Websocket,
                "disconnected",
                Map::new(),
            )
            .await;
    }
    events.post_call_end(&id, &target, "completed").await;
    if let Ok(mut v) = sh.first_reply.lock() {
        v.extend_from_slice(&obs.first_reply);
    }
    if let Ok(mut v) = sh.clear.lock() {
        v.extend_from_slice(&obs.clear);
    }
    if let Ok(mut t) = sh.counters.lock() {
        let c = rep.counters;
        t.established += 1;
        t.frame_size_violations += c.frame_size_violations;
        t.underruns += c.underruns;
        t.paused_gaps += c.paused_gaps;
        t.frames_sent += c.frames_sent;
        t.frames_received += c.frames_received;
        t.protocol_violations += c.protocol_violations;
        t.bargeins_sent += c.bargeins_sent;
        t.clears += c.clears;
        t.replies += c.replies;
        t.late_wakeups += c.late_sends;
        t.webhook_failures += u64::from(events.failures);
        match rep.end {
            MediaEnd::HungUp => {}
            MediaEnd::ServerClosed { .. } => t.fail("the server ended the call early"),
            MediaEnd::FrameViolation(_) => t.fail("frame size violation"),
            MediaEnd::SocketError => t.fail("media socket error"),
        }
    }
}

/// Runs the load test and returns the report.
pub async fn loadtest(args: &LoadtestArgs) -> Result<LoadReport, ToolError> {
    if args.calls == 0 {
        return Err("--calls must be at least 1".into());
    }
    let server = PlainUrl::parse(&args.server)?;
    // Before anything looks at the server: its pid is found by the port it listens on.
    wait_until_ready(&server.authority(), READY_WAIT).await?;
    let total = args.total.unwrap_or(args.calls).max(args.calls);
    let (mono, from) = vonage_side::read_wav_mono(&args.wav)
        .map_err(|e| format!("cannot read {}: {e}", args.wav.display()))?;
    let gain = 10f32.powf(args.gain_db / 20.0);
    let script_at = |rate: SampleRate| {
        let samples = vonage_side::to_call_rate(&mono, from, rate, gain);
        let mut s = CallerScript::new(rate, &samples, args.gap);
        s.looped = true;
        Some(Arc::new(s))
    };
    // The process listening on a loopback server's port, when /proc shows it (not for another
    // user's process, another network namespace, or a remote server).
    let listener = server
        .is_loopback()
        .then(|| find_listener_pid(server.port))
        .flatten();
    let stats = match (args.server_pid, listener) {
        // A stale server left on the port by an earlier run, or a wrapper such as `heaptrack`
        // instead of the server it started: its CPU and RSS would be reported as the server's.
        (Some(pid), Some(l)) if l != pid => {
            return Err(format!(
                "--server-pid {pid}: port {} is served by pid {l}, not {pid} (a server left \
                 over from an earlier run, or the pid of a wrapper?); its CPU and RSS would be \
                 the wrong process's",
                server.port
            )
            .into());
        }
        (Some(pid), _) => ServerStats::Proc(pid),
        (None, Some(l)) if l != std::process::id() => ServerStats::Proc(l),
        (None, Some(_)) => ServerStats::None, // in-process server: /proc would measure us too
        (None, None) => ServerStats::Metrics(server.authority()),
    };
    let sh = Arc::new(Shared {
        webhooks: Arc::new(HttpPool::new(server.authority())),
        server,
        scripts: [
            script_at(SampleRate::Hz8000),
            script_at(SampleRate::Hz16000),
            script_at(SampleRate::Hz24000),
        ],
        silences: [
            Bytes::from(vec![0u8; SampleRate::Hz8000.frame_bytes()]),
            Bytes::from(vec![0u8; SampleRate::Hz16000.frame_bytes()]),
            Bytes::from(vec![0u8; SampleRate::Hz24000.frame_bytes()]),
        ],
        duration: args.duration,
        auth: AuthSettings {
            signature_secret: args.signature_secret.clone(),
            ..AuthSettings::default()
        },
        gaps: GapHistogram::new(),
        first_reply: Mutex::new(Vec::new()),
        clear: Mutex::new(Vec::new()),
        counters: Mutex::new(Totals::default()),
        next_call: AtomicUsize::new(0),
        total,
        active: AtomicUsize::new(0),
    });

    let gen0 = proc_sample("self");
    let base = stats.sample().await;
    let pacing0 = scrape_metrics(&sh.server.authority())
        .await
        .map(|t| histogram_buckets(&t, PACING_HISTOGRAM));
    let start = Instant::now();
    let n = args.calls;
    let mut slots = tokio::task::JoinSet::new();
    for i in 0..n {
        let sh = sh.clone();
        let at = start + args.ramp.mul_f64(i as f64 / n as f64);
        slots.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            while sh.next_call.fetch_add(1, Ordering::Relaxed) < sh.total {
                one_call(&sh).await;
            }
        });
    }
    // Monitor: server samples once a second; the hold window is while every slot is up.
    let mut peak_rss = None::<u64>;
    let mut hold: Option<(Instant, ProcSample)> = None;
    let mut hold_end: Option<(Instant, ProcSample)> = None;
    let deadline = start
        + args.ramp
        + args.duration.mul_f64((total as f64 / n as f64).ceil())
        + Duration::from_secs(60 + total as u64 / 10);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = slots.join_next() => {
                if r.is_none() {
                    break;
                }
            }
            _ = tick.tick() => {
                if Instant::now() > deadline {
                    // Bounded: whatever is still running is abandoned.
                    slots.abort_all();
                }
                let active = sh.active.load(Ordering::Relaxed);
                if active >= n
                    && let Some(s) = stats.sample().await
                {
                    peak_rss = Some(peak_rss.map_or(s.rss_kib, |p| p.max(s.rss_kib)));
                    let now = Instant::now();
                    if hold.is_none() {
                        hold = Some((now, s));
                    }
                    hold_end = Some((now, s));
                }
            }
        }
    }
    let wall = start.elapsed();
    let end = stats.sample().await;
    let pacing1 = scrape_metrics(&sh.server.authority())
        .await
        .map(|t| histogram_buckets(&t, PACING_HISTOGRAM));
    let server_pacing_late_ms = match (&pacing0, &pacing1) {
        (Some(a), Some(b)) => bucket_percentiles(a, b),
        _ => None,
    };
    let after = if end.is_some() {
        // Give the server a moment to release the calls.
        tokio::time::sleep(Duration::from_secs(3)).await;
        stats.sample().await
    } else {
        None
    };
    let gen1 = proc_sample("self");

    let t = sh
        .counters
        .lock()
        .map(|mut t| std::mem::take(&mut *t))
        .unwrap_or_default();
    let mut first = sh.first_reply.lock().map(|v| v.clone()).unwrap_or_default();
    let mut clear = sh.clear.lock().map(|v| v.clone()).unwrap_or_default();
    let g = &sh.gaps;
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    let server_cpu_hold_pct = match (hold, hold_end) {
        (Some((t0, a)), Some((t1, b))) if t1 > t0 + Duration::from_secs(2) => Some(round2(
            (b.cpu_s - a.cpu_s) / t1.duration_since(t0).as_secs_f64() * 100.0,
        )),
        _ => None,
    };
    // Without a full-load sample (a short test), the RSS right at the end stands in.
    let load_rss = peak_rss.or(end.map(|e| e.rss_kib));
    Ok(LoadReport {
        calls_established: t.established,
        calls_failed: t.failed,
        frame_size_violations: t.frame_size_violations,
        frame_gap_ms: GapPercentiles {
            p50: g.quantile_ms(0.50),
            p90: g.quantile_ms(0.90),
            p99: g.quantile_ms(0.99),
            max: g.max_us.load(Ordering::Relaxed) as f64 / 1000.0,
        },
        first_reply_ms: p50p95(&mut first),
        clear_ms: p50p95(&mut clear),
        server_cpu_s: match (base, end) {
            (Some(a), Some(b)) => Some(round2(b.cpu_s - a.cpu_s)),
            _ => None,
        },
        server_rss_kib: load_rss,
        rss_per_call_kib: match (base, load_rss) {
            (Some(a), Some(l)) => Some(round2((l as f64 - a.rss_kib as f64) / n as f64)),
            _ => None,
        },
        generator_cpu_s: match (gen0, gen1) {
            (Some(a), Some(b)) => round2(b.cpu_s - a.cpu_s),
            _ => 0.0,
        },
        underruns: t.underruns,
        paused_gaps: t.paused_gaps,
        calls_concurrent: n,
        calls_total: total,
        wall_s: round2(wall.as_secs_f64()),
        server_cpu_hold_pct,
        server_rss_baseline_kib: base.map(|b| b.rss_kib),
        server_rss_after_kib: after.map(|a| a.rss_kib),
        server_stats_source: stats.label(),
        frames_sent: t.frames_sent,
        frames_received: t.frames_received,
        frame_gap_samples: g.count.load(Ordering::Relaxed),
        frames_late_5ms: g.over_5ms.load(Ordering::Relaxed),
        protocol_violations: t.protocol_violations,
        bargeins_sent: t.bargeins_sent,
        clears: t.clears,
        replies: t.replies,
        generator_late_wakeups: t.late_wakeups,
        webhook_failures: t.webhook_failures,
        failures: t.failures,
        server_pacing_late_ms,
    })
}

/// The readable summary.
pub fn render(r: &LoadReport) -> String {
    let mut s = String::new();
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.1}"));
    let kib =
        |v: Option<u64>| v.map_or("-".to_owned(), |x| format!("{:.1} MiB", x as f64 / 1024.0));
    let _ = writeln!(
        s,
        "calls: {} established, {} failed ({} concurrent, {} in all, {:.1} s)",
        r.calls_established, r.calls_failed, r.calls_concurrent, r.calls_total, r.wall_s
    );
    for (why, n) in &r.failures {
        let _ = writeln!(s, "  failed: {n} × {why}");
    }
    let _ = writeln!(
        s,
        "frames: {} sent, {} received; frame-size violations: {}{}",
        r.frames_sent,
        r.frames_received,
        r.frame_size_violations,
        if r.frame_size_violations > 0 {
            "  !!! Vonage would have dropped these calls"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "frame gap ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  ({} frames, {} over 5 ms); underruns {}; paused for the caller {}",
        r.frame_gap_ms.p50,
        r.frame_gap_ms.p90,
        r.frame_gap_ms.p99,
        r.frame_gap_ms.max,
        r.frame_gap_samples,
        r.frames_late_5ms,
        r.underruns,
        r.paused_gaps
    );
    let _ = writeln!(
        s,
        "first reply ms: p50 {}  p95 {}; barge-in → clear ms: p50 {}  p95 {} ({} clears / {} onsets over a reply)",
        opt(r.first_reply_ms.p50),
        opt(r.first_reply_ms.p95),
        opt(r.clear_ms.p50),
        opt(r.clear_ms.p95),
        r.clears,
        r.bargeins_sent
    );
    let _ = writeln!(
        s,
        "server ({}): CPU {} s ({} % of a core at full load), RSS {} at load, baseline {}, after {}; {} KiB per call",
        r.server_stats_source,
        opt(r.server_cpu_s),
        opt(r.server_cpu_hold_pct),
        kib(r.server_rss_kib),
        kib(r.server_rss_baseline_kib),
        kib(r.server_rss_after_kib),
        opt(r.rss_per_call_kib)
    );
    if let Some(p) = r.server_pacing_late_ms {
        let _ = writeln!(
            s,
            "server pacing timer late (its /metrics histogram, {} wake-ups): p50 ≤ {} ms, p99 ≤ {} ms",
            p.count, p.p50, p.p99
        );
    }
    let _ = writeln!(
        s,
        "generator: CPU {:.1} s, {} late wake-ups; webhook failures {}; protocol violations {}",
        r.generator_cpu_s, r.generator_late_wakeups, r.webhook_failures, r.protocol_violations
    );
    s
}

/// `voicegate loadtest`: runs on a runtime of `--threads` workers and prints the summary or
/// the JSON report.
pub fn run(args: &LoadtestArgs) -> Result<(), ToolError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let r = rt.block_on(loadtest(args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", render(&r));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_prometheus_histogram_between_two_scrapes() {
        let text = |n: [u64; 4]| {
            format!(
                "# TYPE x histogram\nx_sum 1.0\nx_count {}\nx_bucket{{le=\"0.0005\"}} {}\n\
                 x_bucket{{le=\"0.001\"}} {}\nx_bucket{{le=\"0.002\"}} {}\nx_bucket{{le=\"+Inf\"}} {}\n",
                n[3], n[0], n[1], n[2], n[3]
            )
        };
        let before = histogram_buckets(&text([10, 10, 10, 10]), "x");
        assert_eq!(before.len(), 4);
        assert_eq!(before[3], (f64::INFINITY, 10));
        // 100 more: 60 under 0.5 ms, 39 more under 1 ms, the last one over 2 ms.
        let after = histogram_buckets(&text([70, 109, 109, 110]), "x");
        let p = bucket_percentiles(&before, &after).unwrap();
        assert_eq!(
            p,
            BucketPercentiles {
                p50: 0.5,
                p99: 1.0,
                count: 100
            }
        );
        // Nothing new: no percentiles.
        assert_eq!(bucket_percentiles(&after, &after), None);
        assert!(histogram_buckets("x_bucket{le=\"oops\"} 1\n", "x").is_empty());
    }

    #[test]
    fn histogram_quantiles() {
        let h = GapHistogram::new();
        for _ in 0..98 {
            h.record(Duration::ZERO);
        }
        h.record(Duration::from_micros(3_456));
        h.record(Duration::from_millis(40));
        assert_eq!(h.quantile_ms(0.5), 0.0);
        assert_eq!(h.quantile_ms(0.99), 3.46);
        assert_eq!(h.quantile_ms(1.0), 40.0);
        assert_eq!(h.max_us.load(Ordering::Relaxed), 40_000);
    }

    #[test]
    fn percentiles_of_samples() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(
            p50p95(&mut v),
            P50P95 {
                p50: Some(50.0),
                p95: Some(95.0)
            }
        );
        assert_eq!(p50p95(&mut []), P50P95::default());
    }

    #[test]
    fn proc_self_reads() {
        let s = proc_sample("self").expect("linux /proc");
        assert!(s.rss_kib > 0);
    }
}
