//! The WebSocket agent bridge (`--agent ws://…` or `wss://…`): an agent written in any language,
//! reached over one WebSocket per call, speaking the protocol in docs/agent-protocol.md.
//!
//! ```text
//!   media task ──rings, events──▶ bridge task (one per call) ──WebSocket──▶ your agent
//!                                  start, binary L16 at the agent rate,
//!                                  speech_started, speech_ended, barge_in, dtmf, playout, stop
//!              ◀──rings, markers── binary L16 (any even size), turn, end_turn, interrupt,
//!                                  mark, hangup, transfer, log
//! ```
//!
//! [`BridgeAgent`] is an ordinary [`Agent`]: the server spawns its future next to the media task
//! and talks to it through the same rings and queue as any agent, so the bridge can never stall
//! the audio path. Inside, every direction is bounded: caller audio waits in the inbound ring
//! while the agent's socket is slow (the ring then drops and counts), events in their queue
//! (likewise), the agent's audio in a [`Backlog`](super::backlog::Backlog) of about two
//! seconds beyond the outbound ring (beyond it the bridge stops reading the socket, so TCP slows
//! the agent down).
//!
//! When the agent cannot be reached within the connect timeout, breaks the protocol, stops
//! reading or disconnects while the call is up, the bridge returns an error ([`BridgeError`],
//! counted in `voicegate_agent_failures_total{reason}`) and the server ends the call as
//! `--agent-failure` says.
//!
//! Not real-time as a whole (it owns a socket); the per-frame path (caller audio out, agent
//! audio in, events) allocates nothing in steady state: messages are built in a recycled arena.

mod call;
pub mod error;
#[doc = include_str!("../../../docs/agent-protocol.md")]
///
/// ---
///
pub mod protocol;

use std::sync::Arc;
use std::time::Duration;

pub use self::error::BridgeError;
use super::connect::{self, ConnectError};
use super::{Agent, AgentError, AgentIo, BoxFuture, CallInfo};
use crate::core::{Forward, SampleRate};

/// Default deadline for the agent to accept its connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the agent is and how long it may take to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    url: String,
    /// Deadline for TCP, TLS and the WebSocket upgrade together.
    pub connect_timeout: Duration,
}

impl BridgeConfig {
    /// The agent at `url` (`ws://…` or `wss://…`), with the default connect timeout.
    pub fn new(url: impl Into<String>) -> Result<Self, ConnectError> {
        let url = url.into();
        connect::check_url(&url)?;
        Ok(Self {
            url,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        })
    }

    /// The agent's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The agent bridge: one WebSocket per call to the agent at [`BridgeConfig::url`].
#[derive(Debug, Clone)]
pub struct BridgeAgent {
    config: Arc<BridgeConfig>,
}

impl BridgeAgent {
    /// A bridge to the agent `config` names.
    pub fn new(config: BridgeConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BridgeConfig {
        &self.config
    }
}

impl Agent for BridgeAgent {
    /// The call's rate: no resampling unless `--agent-rate` asks for it.
    fn agent_rate(&self, call_rate: SampleRate) -> SampleRate {
        call_rate
    }

    /// Speech with its pre-roll, what an STT wants; `--forward-all` sends every frame.
    fn forward(&self) -> Forward {
        Forward::Speech
    }

    fn start(&self, call: CallInfo, io: AgentIo) -> BoxFuture<'static, Result<(), AgentError>> {
        // No span around the call's future: an instrumented future enters and leaves its
        // span on every poll, and tracing-subscriber's `EnvFilter` takes a lock (a read of its
        // `by_id` RwLock) on each enter and exit: a lock per wake-up of the per-frame path.
        // Per-call spans also pin heap pages (see `server::media::run`). Every event of the
        // bridge carries `call_id` as a field instead, as the media task's do.
        Box::pin(call::run(self.config.clone(), call, io))
    }
}
