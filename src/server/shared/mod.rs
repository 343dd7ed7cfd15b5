//! State that several voicegate instances behind one load balancer must agree on, behind one
//! small trait ([`SharedState`]) with two implementations: [`MemoryState`] (in-process, the
//! default: one instance, zero configuration) and [`RedisState`] (`--redis-url`).
//!
//! Vonage sends the answer webhook, the event webhooks and the media socket of one call as
//! independent requests, which a load balancer may spread over different instances. The media
//! token (`server::media_token`) carries what the socket needs, so admission is stateless;
//! what must still be shared is small:
//!
//! * the **`jti` replay cache** of signed webhooks, with a TTL equal to the age window, so a
//!   token accepted by one instance is refused by every other ([`SharedState::record_jti`]);
//! * the **socket claim**: one media socket per call across the cluster, and each media token
//!   used once ([`SharedState::claim_socket`], released on close);
//! * the **call record** that event webhooks landing on any instance update: a terminal status
//!   marks the call over and is published to the instance that owns its socket, which ends it
//!   ([`SharedState::end_call`]); `disconnected` counts reconnects
//!   ([`SharedState::note_disconnected`]).
//!
//! Failure policy (Redis unreachable): replay checks and socket claims **fail closed**
//! ([`StateError::Unavailable`]: the request is refused with a 503, never accepted unchecked);
//! the call record falls back to the in-process one (ending a local call, counting a
//! reconnect), which is safe because it grants nothing. Readiness turns red while the shared
//! state is unavailable, and every failure is logged and counted
//! (`voicegate_redis_errors_total{op}`).
//!
//! Not real-time: used on webhooks and at socket set-up and teardown, never per frame.

pub mod memory;
pub mod redis;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelValue;
use tokio::sync::mpsc;

pub use self::memory::{MemoryReplayGuard, MemoryState};
pub use self::redis::{RedisConfigError, RedisState};
use super::config::ServerConfig;
use super::media_token::MediaClaims;
use super::metrics::Metrics;
use crate::agent::CallId;

/// Ends from other instances queued for the local registry before new ones are dropped (the
/// Redis keepalive finds a dropped one within seconds).
const ENDS_QUEUE: usize = 1_024;

/// What the shared state must do for a cluster of voicegate instances (see the module docs).
/// Every method answers from the shared store or returns [`StateError::Unavailable`]; none
/// panics, whatever the store returns.
pub trait SharedState: Send + Sync + fmt::Debug {
    /// `memory` or `redis`, for logs.
    fn backend(&self) -> &'static str;

    /// Whether the shared state can be used now (readiness): always for the in-process one;
    /// for Redis, the last health check passed and the end-of-call subscription is live.
    fn is_available(&self) -> bool;

    /// Records the webhook token id `jti` (of a token issued at `issued_at_unix`) as used for
    /// `ttl`; [`StateError::Replayed`] when it was already recorded by any instance. A store
    /// that may have forgotten ids (Redis restarted without its data) refuses tokens issued
    /// before it noticed, with [`StateError::Unavailable`], for one window.
    fn record_jti<'a>(
        &'a self,
        jti: &'a str,
        issued_at_unix: u64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StateError>>;

    /// Claims the media socket of the call that `claims` names for this instance, and uses
    /// up the token's nonce. Refused with [`StateError::CallEnded`] when a terminal status was
    /// recorded, [`StateError::SocketTaken`] when a socket is open for the call anywhere,
    /// [`StateError::TokenUsed`] when this token opened a socket before. `token` is kept in
    /// the call record (a `disconnected` on any instance can re-mint it).
    fn claim_socket<'a>(
        &'a self,
        claims: &'a MediaClaims,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>>;

    /// Releases this instance's socket claim for `call` (the socket closed).
    fn release_socket<'a>(&'a self, call: &'a CallId) -> BoxFuture<'a, Result<(), StateError>>;

    /// Records that `call` is over and tells the instance owning its socket, if another one,
    /// to end it. The in-process record is updated even when the shared one cannot be.
    fn end_call<'a>(&'a self, call: &'a CallId) -> BoxFuture<'a, Result<(), StateError>>;

    /// Counts one `disconnected` of `call`'s socket and returns the call record after it.
    /// Falls back to the in-process record when the shared one is unavailable.
    fn note_disconnected<'a>(
        &'a self,
        call: &'a CallId,
    ) -> BoxFuture<'a, Result<CallRecord, StateError>>;

    /// Forgets what this process remembers past its expiry (ended calls after their linger,
    /// used ids after their window) and gives the memory back to the allocator; returns how
    /// many entries went. Called now and then by [`crate::server::heap`]; entries are also
    /// forgotten lazily when a map is full.
    fn forget_expired(&self) -> usize {
        0
    }
}

/// How long the in-process shared state remembers an ended or released call (late events;
/// a token of an ended call must not open a socket before it expires either).
pub fn linger(config: &ServerConfig) -> Duration {
    config.media_token_ttl.max(Duration::from_secs(30)) + Duration::from_secs(10)
}

/// The shared state a server runs with, and what comes with it.
#[derive(Debug)]
pub struct SharedSetup {
    /// The shared state.
    pub state: Arc<dyn SharedState>,
    /// Calls ended on another instance whose socket is here (Redis only).
    pub ends: Option<mpsc::Receiver<CallId>>,
    /// The metrics (with the Redis ones when Redis is used).
    pub metrics: Metrics,
    /// This process in the cluster.
    pub instance: InstanceId,
}

impl SharedSetup {
    /// The in-process shared state (one instance).
    pub fn memory(config: &ServerConfig) -> Self {
        let metrics = Metrics::new();
        let state = MemoryState::new(fallback_capacity(config), linger(config))
            .counting_evictions(metrics.replay_ids_evicted.clone());
        Self {
            state: Arc::new(state),
            ends: None,
            metrics,
            instance: InstanceId::generate(),
        }
    }

    /// The shared state the configuration asks for: Redis with `--redis-url` (connecting in
    /// the background; needs a Tokio runtime), else in-process.
    pub fn from_config(config: &ServerConfig) -> Result<Self, RedisConfigError> {
        let Some(url) = &config.redis_url else {
            return Ok(Self::memory(config));
        };
        let metrics = Metrics::build(true);
        let instance = InstanceId::generate();
        let (tx, rx) = mpsc::channel(ENDS_QUEUE);
        let state = RedisState::start(
            &url.0,
            instance.clone(),
            metrics.clone(),
            tx,
            linger(config),
            fallback_capacity(config),
        )?;
        Ok(Self {
            state: Arc::new(state),
            ends: Some(rx),
            metrics,
            instance,
        })
    }
}

fn fallback_capacity(config: &ServerConfig) -> usize {
    config.max_calls.saturating_mul(4).saturating_add(1_024)
}

/// What is known about a call across the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallRecord {
    /// A terminal status was recorded: the call is over on purpose.
    pub ended: bool,
    /// `disconnected` events counted so far.
    pub disconnects: u32,
    /// The media token its socket last opened with.
    pub token: Option<String>,
}

/// A refusal by the shared state, or its absence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// This webhook token id was already used.
    #[error("token id already used")]
    Replayed,
    /// The call already has a media socket (on this or another instance).
    #[error("the call already has a media socket")]
    SocketTaken,
    /// This media token already opened a socket.
    #[error("the media token was already used")]
    TokenUsed,
    /// The call is over (a terminal status was recorded).
    #[error("the call is over")]
    CallEnded,
    /// The shared state could not answer (Redis unreachable, timed out, or an unexpected
    /// reply); the operation is counted under its label.
    #[error("shared state unavailable ({})", .0.as_str())]
    Unavailable(StateOp),
}

/// A shared-state operation, the label of `voicegate_redis_errors_total{op}`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, missing_docs)]
pub enum StateOp {
    ping,
    subscribe,
    jti,
    claim,
    release,
    end,
    disconnected,
    keepalive,
}

impl StateOp {
    /// The label text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ping => "ping",
            Self::subscribe => "subscribe",
            Self::jti => "jti",
            Self::claim => "claim",
            Self::release => "release",
            Self::end => "end",
            Self::disconnected => "disconnected",
            Self::keepalive => "keepalive",
        }
    }
}

/// This process's name in the cluster: who owns a socket claim, and the pub/sub channel other
/// instances publish its calls' ends to. `HOSTNAME` (the pod name on Kubernetes), sanitised,
/// plus 8 random hex digits so a restarted process never inherits its predecessor's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceId(String);

impl InstanceId {
    /// A fresh id for this process.
    pub fn generate() -> Self {
        let host: String = std::env::var("HOSTNAME")
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
            .take(48)
            .collect();
        let mut r = [0u8; 4];
        if getrandom::getrandom(&mut r).is_err() {
            // Unique enough within one host: the process id and the clock.
            r = (std::process::id() ^ crate::server::auth::unix_now() as u32).to_le_bytes();
        }
        let suffix: String = r.iter().map(|b| format!("{b:02x}")).collect();
        Self(if host.is_empty() {
            format!("voicegate-{suffix}")
        } else {
            format!("{host}-{suffix}")
        })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_unique_and_tame() {
        let a = InstanceId::generate();
        let b = InstanceId::generate();
        assert_ne!(a, b);
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.'),
            "{a}"
        );
        assert!(a.as_str().len() <= 48 + 9);
    }
}
