//! [`AgentMetrics`]: what the network agents (the WebSocket bridge, the OpenAI Realtime adapter)
//! count. The server registers them next to its own metrics (`voicegate_*`, see
//! `server::metrics`) and hands every call a clone through [`AgentIo::metrics`]; an agent run
//! outside the server gets unregistered counters that nobody reads.
//!
//! Every label is a fixed enum, so nothing an agent or a model sends can grow the label set.
//!
//! Not real-time (counting itself is an atomic add and allocates nothing).
//!
//! [`AgentIo::metrics`]: super::AgentIo::metrics

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why an agent connection ended the call (label of `voicegate_agent_failures_total`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, missing_docs)]
pub enum FailureLabel {
    connect_timeout,
    connect_failed,
    disconnected,
    malformed_json,
    odd_length,
    oversized,
    not_reading,
    socket_error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    reason: FailureLabel,
}

/// The `type` of an OpenAI Realtime `error` event (label of `voicegate_openai_errors_total`).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, missing_docs)]
pub enum OpenAiErrorLabel {
    invalid_request_error,
    server_error,
    rate_limit_exceeded,
    /// A `response.done` whose status is `failed`.
    response_failed,
    other,
}

impl OpenAiErrorLabel {
    /// The label for an error `type` (or `code`) string from the API.
    pub fn from_type(t: &str) -> Self {
        match t {
            "invalid_request_error" => Self::invalid_request_error,
            "server_error" => Self::server_error,
            "rate_limit_exceeded" | "rate_limit_error" => Self::rate_limit_exceeded,
            _ => Self::other,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpenAiErrorLabels {
    kind: OpenAiErrorLabel,
}

/// Which limit a `rate_limits.updated` entry describes.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, missing_docs)]
pub enum RateLimitLabel {
    requests,
    tokens,
    other,
}

impl RateLimitLabel {
    /// The label for a rate limit's `name`.
    pub fn from_name(name: &str) -> Self {
        match name {
            "requests" => Self::requests,
            "tokens" => Self::tokens,
            _ => Self::other,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLimitLabels {
    limit: RateLimitLabel,
}

/// Counters of the network agents. Cheap to clone (the metrics are `Arc`s inside).
#[derive(Debug, Clone, Default)]
pub struct AgentMetrics {
    /// `voicegate_agent_connections_total`: agent sockets opened (one per call).
    pub connections: Counter,
    failures: Family<FailureLabels, Counter>,
    /// `voicegate_agent_messages_unknown_total`: agent messages of an unknown `type`, ignored.
    pub messages_unknown: Counter,
    /// `voicegate_agent_actions_failed_total`: hangups and transfers asked for by an agent that
    /// failed (no REST client, REST error, bad number).
    pub actions_failed: Counter,
    /// `voicegate_agent_actions_ignored_total`: hangups and transfers asked for and not started
    /// because they were moot: a hangup while one is in flight or after one succeeded, or (the
    /// echo agent's keys) any request while another is in flight.
    pub actions_ignored: Counter,
    /// `voicegate_agent_log_lines_suppressed_total`: log lines a call did not write because it
    /// had used up its allowance (agent `log` messages, call-control requests and their
    /// failures; see `agent::log_budget`).
    pub log_lines_suppressed: Counter,
    openai_errors: Family<OpenAiErrorLabels, Counter>,
    openai_rate_limit_remaining: Family<RateLimitLabels, Gauge>,
    /// `voicegate_openai_truncations_total`: assistant items truncated at a barge-in.
    pub openai_truncations: Counter,
    /// `voicegate_openai_responses_cancelled_total`: `response.cancel` sent at a barge-in.
    pub openai_cancels: Counter,
}

impl AgentMetrics {
    /// Registers every metric in `r` (the server's registry, prefix `voicegate`).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "agent_connections",
            "Agent sockets opened (agent bridge, OpenAI Realtime)",
            self.connections.clone(),
        );
        r.register(
            "agent_failures",
            "Agent connections that ended the call, by reason",
            self.failures.clone(),
        );
        r.register(
            "agent_messages_unknown",
            "Agent messages of an unknown type, ignored",
            self.messages_unknown.clone(),
        );
        r.register(
            "agent_actions_failed",
            "Hangups and transfers asked for by an agent that failed",
            self.actions_failed.clone(),
        );
        r.register(
            "agent_actions_ignored",
            "Hangups and transfers not started: one was in flight, or the call was hung up",
            self.actions_ignored.clone(),
        );
        r.register(
            "agent_log_lines_suppressed",
            "Log lines about agents not written: the call used up its allowance",
            self.log_lines_suppressed.clone(),
        );
        r.register(
            "openai_errors",
            "OpenAI Realtime error events and failed responses, by kind",
            self.openai_errors.clone(),
        );
        r.register(
            "openai_rate_limit_remaining",
            "Last rate_limits.updated remaining value, by limit",
            self.openai_rate_limit_remaining.clone(),
        );
        r.register(
            "openai_truncations",
            "Assistant items truncated at what the caller heard",
            self.openai_truncations.clone(),
        );
        r.register(
            "openai_responses_cancelled",
            "Responses cancelled at a barge-in",
            self.openai_cancels.clone(),
        );
    }

    /// Counts one agent connection that ended its call.
    pub fn failure(&self, reason: FailureLabel) {
        self.failures.get_or_create(&FailureLabels { reason }).inc();
    }

    /// Counts one OpenAI error.
    pub fn openai_error(&self, kind: OpenAiErrorLabel) {
        self.openai_errors
            .get_or_create(&OpenAiErrorLabels { kind })
            .inc();
    }

    /// Records the remaining amount of one OpenAI rate limit.
    pub fn openai_rate_limit(&self, limit: RateLimitLabel, remaining: i64) {
        self.openai_rate_limit_remaining
            .get_or_create(&RateLimitLabels { limit })
            .set(remaining);
    }
}
