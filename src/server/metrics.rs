//! Prometheus metrics, all named `voicegate_*`, served as text on `GET /metrics`.
//!
//! Per-call counters live in the session's plain [`Stats`](crate::core::stats::Stats); the
//! media task adds their deltas to the shared counters here every second and when the call ends
//! ([`CallMetrics::flush`]), so the per-frame path touches no shared counter. The two per-frame
//! histograms work the same way: each call counts into its own [`LocalHistogram`]s and the flush
//! adds them to the shared ones (see [`super::histogram`]: no lock, no atomic per frame).
//!
//! Not real-time, except [`CallMetrics::observe_frame`] and [`CallMetrics::observe_lateness`],
//! which allocate nothing, lock nothing and write nothing shared.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::histogram::{Histogram, LocalHistogram};
use super::shared::StateOp;
use crate::agent::metrics::AgentMetrics;
use crate::core::StageDelays;
use crate::core::stats::Stats;
use crate::vonage::webhooks::CallStatus;

/// Content type of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label of `voicegate_webhook_events_total`: a bounded set, so hostile input cannot grow it.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, missing_docs)]
pub enum EventLabel {
    started,
    ringing,
    answered,
    busy,
    cancelled,
    unanswered,
    disconnected,
    rejected,
    failed,
    human,
    machine,
    timeout,
    completed,
    transfer,
    input,
    record,
    error,
    other_status,
    unknown,
}

impl EventLabel {
    /// The label for a call status.
    pub fn from_status(s: &CallStatus) -> Self {
        match s {
            CallStatus::Started => Self::started,
            CallStatus::Ringing => Self::ringing,
            CallStatus::Answered => Self::answered,
            CallStatus::Busy => Self::busy,
            CallStatus::Cancelled => Self::cancelled,
            CallStatus::Unanswered => Self::unanswered,
            CallStatus::Disconnected => Self::disconnected,
            CallStatus::Rejected => Self::rejected,
            CallStatus::Failed => Self::failed,
            CallStatus::Human => Self::human,
            CallStatus::Machine => Self::machine,
            CallStatus::Timeout => Self::timeout,
            CallStatus::Completed => Self::completed,
            CallStatus::Transfer => Self::transfer,
            CallStatus::Input => Self::input,
            _ => Self::other_status,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    status: EventLabel,
}

/// Why a call (or a socket attempt) was refused.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, missing_docs)]
pub enum RejectLabel {
    at_capacity,
    shutting_down,
    duplicate_socket,
    bad_request,
    connect_timeout,
    rate_mismatch,
    unknown_call,
    bad_connected,
    shared_state_unavailable,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    reason: RejectLabel,
}

/// Label of the auth-failure counters: a fixed `&'static str` from `JwtError::reason` or
/// `MediaAuthError::reason`, so hostile input cannot grow the set.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    reason: &'static str,
}

/// Label of `voicegate_http_timeouts_total`: which deadline a client missed.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, missing_docs)]
pub enum HttpTimeout {
    /// The request line and headers (or the next request on an idle keep-alive connection).
    headers,
    /// A request body.
    body,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpTimeoutLabels {
    phase: HttpTimeout,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: StateOp,
}

/// Labels of `voicegate_stage_delay_seconds`: a fixed stage name and the call's rate pair, so
/// the set is bounded (eight stages, a few rate pairs).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageDelayLabels {
    stage: &'static str,
    call_rate: u32,
    agent_rate: u32,
}

/// Every metric the server exports. Cheap to clone (the metrics are `Arc`s inside).
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// `voicegate_active_calls`: media sockets being served.
    pub active_calls: Gauge,
    /// `voicegate_calls_total`: media sockets accepted.
    pub calls: Counter,
    rejected: Family<RejectLabels, Counter>,
    /// `voicegate_answers_total`: answer webhooks served.
    pub answers: Counter,
    /// `voicegate_frames_in_total`.
    pub frames_in: Counter,
    /// `voicegate_frames_out_total`.
    pub frames_out: Counter,
    /// `voicegate_frames_invalid_total`: caller frames of the wrong size, dropped.
    pub frames_invalid: Counter,
    /// `voicegate_frames_padded_total`.
    pub frames_padded: Counter,
    /// `voicegate_agent_samples_dropped_total`: caller samples dropped because the agent's
    /// inbound ring was full (a slow agent).
    pub agent_samples_dropped: Counter,
    /// `voicegate_agent_samples_discarded_total`: agent samples of interrupted turns.
    pub agent_samples_discarded: Counter,
    /// `voicegate_agent_events_dropped_total`: events dropped because the agent's queue was full.
    pub agent_events_dropped: Counter,
    /// `voicegate_agent_errors_total`: agent tasks that ended with an error or panicked.
    pub agent_errors: Counter,
    /// `voicegate_barge_ins_total`.
    pub barge_ins: Counter,
    /// `voicegate_bot_pauses_total`: two-stage barge-in suspicions (the bot paused).
    pub pauses: Counter,
    /// `voicegate_false_interruptions_total`: suspicions released (the bot resumed its turn).
    pub false_interruptions: Counter,
    /// `voicegate_underruns_total`: the agent's audio ran dry mid-turn.
    pub underruns: Counter,
    /// `voicegate_dtmf_total`.
    pub dtmf: Counter,
    /// `voicegate_text_messages_invalid_total`: text messages that could not be parsed.
    pub text_invalid: Counter,
    /// `voicegate_text_messages_unknown_total`: text messages with an unknown event, ignored.
    pub text_unknown: Counter,
    /// `voicegate_socket_errors_total`: media socket read/write errors and send timeouts.
    pub socket_errors: Counter,
    /// `voicegate_webhook_errors_total`: webhook bodies that could not be parsed.
    pub webhook_errors: Counter,
    events: Family<EventLabels, Counter>,
    webhook_auth_failures: Family<AuthLabels, Counter>,
    media_auth_failures: Family<AuthLabels, Counter>,
    /// `voicegate_media_idle_timeouts_total`: calls closed because their audio stopped.
    pub idle_timeouts: Counter,
    /// `voicegate_draining`: 1 from SIGTERM/SIGINT until exit (not ready, calls finishing).
    pub draining: Gauge,
    /// `voicegate_redis_up`: 1 while Redis answers (registered with `--redis-url` only).
    pub redis_up: Gauge,
    redis_errors: Family<OpLabels, Counter>,
    /// `voicegate_remote_ends_total`: calls ended here because their terminal event reached
    /// another instance.
    pub remote_ends: Counter,
    /// `voicegate_http_connections`: HTTP connections open (media sockets leave the count
    /// when they upgrade).
    pub http_connections: Gauge,
    /// `voicegate_http_connections_refused_total`: connections closed at once, over
    /// `--max-connections`.
    pub http_connections_refused: Counter,
    /// `voicegate_http_accept_errors_total`: accept failures other than a connection that
    /// went away (out of file descriptors).
    pub http_accept_errors: Counter,
    http_timeouts: Family<HttpTimeoutLabels, Counter>,
    /// `voicegate_replay_ids_evicted_total`: webhook `jti`s and media token nonces forgotten
    /// before they expired because the in-process replay guard was full (a replay of one of
    /// them would not be caught). 0 with Redis, which has no such bound.
    pub replay_ids_evicted: Counter,
    stage_delays: Family<StageDelayLabels, Gauge<f64, AtomicU64>>,
    /// `voicegate_frame_processing_seconds`: time to process one caller frame.
    pub frame_processing: Histogram,
    /// `voicegate_pacing_lateness_seconds`: how late the pacing timer woke.
    pub pacing_lateness: Histogram,
    /// The network agents' counters (`voicegate_agent_*`, `voicegate_openai_*`).
    pub agent: AgentMetrics,
}

impl Metrics {
    /// Registers every metric, without the Redis ones.
    pub fn new() -> Self {
        Self::build(false)
    }

    /// Registers every metric, and the Redis ones (`voicegate_redis_up`,
    /// `voicegate_redis_errors_total{op}`) when `redis` is set.
    pub fn build(redis: bool) -> Self {
        let mut r = Registry::with_prefix("voicegate");
        let m = Self {
            registry: Arc::new(Registry::default()),
            active_calls: Gauge::default(),
            calls: Counter::default(),
            rejected: Family::default(),
            answers: Counter::default(),
            frames_in: Counter::default(),
            frames_out: Counter::default(),
            frames_invalid: Counter::default(),
            frames_padded: Counter::default(),
            agent_samples_dropped: Counter::default(),
            agent_samples_discarded: Counter::default(),
            agent_events_dropped: Counter::default(),
            agent_errors: Counter::default(),
            barge_ins: Counter::default(),
            pauses: Counter::default(),
            false_interruptions: Counter::default(),
            underruns: Counter::default(),
            dtmf: Counter::default(),
            text_invalid: Counter::default(),
            text_unknown: Counter::default(),
            socket_errors: Counter::default(),
            webhook_errors: Counter::default(),
            events: Family::default(),
            webhook_auth_failures: Family::default(),
            media_auth_failures: Family::default(),
            idle_timeouts: Counter::default(),
            draining: Gauge::default(),
            redis_up: Gauge::default(),
            redis_errors: Family::default(),
            remote_ends: Counter::default(),
            http_connections: Gauge::default(),
            http_connections_refused: Counter::default(),
            http_accept_errors: Counter::default(),
            http_timeouts: Family::default(),
            replay_ids_evicted: Counter::default(),
            stage_delays: Family::default(),
            // 10 µs .. ~20 ms
            frame_processing: Histogram::doubling(Duration::from_micros(10)),
            // 0.5 ms .. ~1 s
            pacing_lateness: Histogram::doubling(Duration::from_micros(500)),
            agent: AgentMetrics::default(),
        };
        r.register(
            "active_calls",
            "Media sockets being served",
            m.active_calls.clone(),
        );
        r.register("calls", "Media sockets accepted", m.calls.clone());
        r.register(
            "calls_rejected",
            "Calls or sockets refused, by reason",
            m.rejected.clone(),
        );
        r.register("answers", "Answer webhooks served", m.answers.clone());
        r.register("frames_in", "Caller frames processed", m.frames_in.clone());
        r.register("frames_out", "Frames sent to Vonage", m.frames_out.clone());
        r.register(
            "frames_invalid",
            "Caller frames of the wrong size, dropped",
            m.frames_invalid.clone(),
        );
        r.register(
            "frames_padded",
            "Outbound frames padded with silence at a turn's end",
            m.frames_padded.clone(),
        );
        r.register(
            "agent_samples_dropped",
            "Caller samples dropped: agent ring full",
            m.agent_samples_dropped.clone(),
        );
        r.register(
            "agent_samples_discarded",
            "Agent samples of interrupted turns, discarded",
            m.agent_samples_discarded.clone(),
        );
        r.register(
            "agent_events_dropped",
            "Events dropped: agent queue full",
            m.agent_events_dropped.clone(),
        );
        r.register(
            "agent_errors",
            "Agent tasks that failed or panicked",
            m.agent_errors.clone(),
        );
        r.register(
            "barge_ins",
            "Barge-ins (caller talked over the bot)",
            m.barge_ins.clone(),
        );
        r.register(
            "bot_pauses",
            "Times the bot paused on a suspected barge-in",
            m.pauses.clone(),
        );
        r.register(
            "false_interruptions",
            "Suspected barge-ins released: the bot resumed its turn",
            m.false_interruptions.clone(),
        );
        r.register(
            "underruns",
            "Times the agent's audio ran dry mid-turn",
            m.underruns.clone(),
        );
        r.register("dtmf", "DTMF key presses", m.dtmf.clone());
        r.register(
            "text_messages_invalid",
            "Text messages from Vonage that did not parse",
            m.text_invalid.clone(),
        );
        r.register(
            "text_messages_unknown",
            "Text messages from Vonage with an unknown event",
            m.text_unknown.clone(),
        );
        r.register(
            "socket_errors",
            "Media socket errors",
            m.socket_errors.clone(),
        );
        r.register(
            "webhook_errors",
            "Webhook bodies that could not be parsed",
            m.webhook_errors.clone(),
        );
        r.register(
            "webhook_events",
            "Event webhooks, by status or kind",
            m.events.clone(),
        );
        r.register(
            "webhook_auth_failures",
            "Webhooks refused by signature verification, by reason",
            m.webhook_auth_failures.clone(),
        );
        r.register(
            "media_auth_failures",
            "Media socket upgrades refused by authentication, by reason",
            m.media_auth_failures.clone(),
        );
        r.register(
            "media_idle_timeouts",
            "Calls closed because their audio stopped",
            m.idle_timeouts.clone(),
        );
        r.register(
            "draining",
            "1 while shutting down: not ready, active calls finishing",
            m.draining.clone(),
        );
        r.register(
            "remote_ends",
            "Calls ended here because their terminal event reached another instance",
            m.remote_ends.clone(),
        );
        r.register(
            "http_connections",
            "HTTP connections open (media sockets leave the count when they upgrade)",
            m.http_connections.clone(),
        );
        r.register(
            "http_connections_refused",
            "HTTP connections closed at once: over --max-connections",
            m.http_connections_refused.clone(),
        );
        r.register(
            "http_accept_errors",
            "Accept failures other than a connection that went away (out of file descriptors)",
            m.http_accept_errors.clone(),
        );
        r.register(
            "http_timeouts",
            "HTTP requests whose head or body did not arrive in time, by phase",
            m.http_timeouts.clone(),
        );
        r.register(
            "replay_ids_evicted",
            "Webhook jti / media token nonces forgotten before expiry: the in-process replay guard was full",
            m.replay_ids_evicted.clone(),
        );
        r.register(
            "stage_delay_seconds",
            "Designed delay of each pipeline stage, per call and agent rate (not CPU time): resamplers, speech onset, end of turn, barge-in silence and confirmation, pacing lead",
            m.stage_delays.clone(),
        );
        if redis {
            r.register(
                "redis_up",
                "1 while Redis (the shared state) answers",
                m.redis_up.clone(),
            );
            r.register(
                "redis_errors",
                "Redis operations that failed or timed out, by operation",
                m.redis_errors.clone(),
            );
        }
        r.register(
            "frame_processing_seconds",
            "Time to process one caller frame",
            m.frame_processing.clone(),
        );
        r.register(
            "pacing_lateness_seconds",
            "Lateness of the outbound pacing timer",
            m.pacing_lateness.clone(),
        );
        m.agent.register(&mut r);
        Self {
            registry: Arc::new(r),
            ..m
        }
    }

    /// Counts one refused call or socket.
    pub fn reject(&self, reason: RejectLabel) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }

    /// Counts one event webhook.
    pub fn webhook_event(&self, status: EventLabel) {
        self.events.get_or_create(&EventLabels { status }).inc();
    }

    /// Counts one webhook refused by signature verification.
    pub fn webhook_auth_failure(&self, reason: &'static str) {
        self.webhook_auth_failures
            .get_or_create(&AuthLabels { reason })
            .inc();
    }

    /// Counts one media socket upgrade refused by authentication.
    pub fn media_auth_failure(&self, reason: &'static str) {
        self.media_auth_failures
            .get_or_create(&AuthLabels { reason })
            .inc();
    }

    /// Counts one HTTP request whose head or body missed its deadline.
    pub fn http_timeout(&self, phase: HttpTimeout) {
        self.http_timeouts
            .get_or_create(&HttpTimeoutLabels { phase })
            .inc();
    }

    /// Publishes the designed delays of a call's pipeline at its rate pair (the same for every
    /// call with that pair and configuration).
    pub fn stage_delays(&self, call_rate: u32, agent_rate: u32, delays: &StageDelays) {
        for (stage, d) in delays.stages() {
            self.stage_delays
                .get_or_create(&StageDelayLabels {
                    stage,
                    call_rate,
                    agent_rate,
                })
                .set(d.as_secs_f64());
        }
    }

    /// Counts one failed shared-state operation.
    pub fn redis_error(&self, op: StateOp) {
        self.redis_errors.get_or_create(&OpLabels { op }).inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            // Writing to a String cannot fail; keep the scrape useful anyway.
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// One call's view: the last [`Stats`] flushed, so only deltas are added, and its histograms
/// since the last flush.
#[derive(Debug)]
pub struct CallMetrics {
    last: Stats,
    frame_processing: LocalHistogram,
    pacing_lateness: LocalHistogram,
}

impl CallMetrics {
    /// Nothing counted yet, with histograms shaped like `m`'s.
    pub fn new(m: &Metrics) -> Self {
        Self {
            last: Stats::default(),
            frame_processing: m.frame_processing.local(),
            pacing_lateness: m.pacing_lateness.local(),
        }
    }

    /// Records one caller frame's processing time (`voicegate_frame_processing_seconds` at the
    /// next flush). Allocation-free, lock-free.
    pub fn observe_frame(&mut self, d: Duration) {
        self.frame_processing.observe(d);
    }

    /// Records how late the pacing timer fired (`voicegate_pacing_lateness_seconds` at the next
    /// flush). Allocation-free, lock-free.
    pub fn observe_lateness(&mut self, d: Duration) {
        self.pacing_lateness.observe(d);
    }

    /// Adds what changed since the last flush to the shared counters and histograms.
    pub fn flush(&mut self, m: &Metrics, now: &Stats) {
        m.frame_processing.absorb(&mut self.frame_processing);
        m.pacing_lateness.absorb(&mut self.pacing_lateness);
        let d = |new: u64, old: u64| new.saturating_sub(old);
        let l = &self.last;
        m.frames_in.inc_by(d(now.frames_in, l.frames_in));
        m.frames_out.inc_by(d(now.frames_out, l.frames_out));
        m.frames_invalid
            .inc_by(d(now.frames_invalid, l.frames_invalid));
        m.frames_padded
            .inc_by(d(now.frames_padded, l.frames_padded));
        m.agent_samples_dropped
            .inc_by(d(now.agent_samples_dropped, l.agent_samples_dropped));
        m.agent_samples_discarded
            .inc_by(d(now.samples_discarded, l.samples_discarded));
        m.barge_ins.inc_by(d(now.barge_ins, l.barge_ins));
        m.pauses.inc_by(d(now.pauses, l.pauses));
        m.false_interruptions
            .inc_by(d(now.false_interruptions, l.false_interruptions));
        m.underruns.inc_by(d(now.underruns, l.underruns));
        m.dtmf.inc_by(d(now.dtmf, l.dtmf));
        m.text_invalid.inc_by(d(now.text_invalid, l.text_invalid));
        m.text_unknown.inc_by(d(now.text_unknown, l.text_unknown));
        m.agent_events_dropped
            .inc_by(d(now.events_dropped, l.events_dropped));
        self.last = *now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed() {
        let m = Metrics::new();
        m.active_calls.inc();
        m.webhook_event(EventLabel::completed);
        m.reject(RejectLabel::at_capacity);
        let text = m.encode();
        assert!(text.contains("voicegate_active_calls 1"), "{text}");
        assert!(text.contains("voicegate_frames_in_total 0"));
        assert!(text.contains(r#"voicegate_webhook_events_total{status="completed"} 1"#));
        assert!(text.contains(r#"voicegate_calls_rejected_total{reason="at_capacity"} 1"#));
        assert!(text.contains("voicegate_frame_processing_seconds_bucket"));
        assert!(text.contains("voicegate_pacing_lateness_seconds_bucket"));
        assert!(text.contains("voicegate_draining 0"));
        assert!(!text.contains("voicegate_redis_up"));
        let m = Metrics::build(true);
        m.redis_up.set(1);
        m.redis_error(StateOp::claim);
        let text = m.encode();
        assert!(text.contains("voicegate_redis_up 1"), "{text}");
        assert!(
            text.contains(r#"voicegate_redis_errors_total{op="claim"} 1"#),
            "{text}"
        );
    }
}
