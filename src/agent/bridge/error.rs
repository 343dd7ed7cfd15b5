//! [`BridgeError`]: why an agent bridge connection ended its call. Each one is counted under
//! `voicegate_agent_failures_total{reason}` ([`BridgeError::label`]) and ends the call the way
//! `--agent-failure` says (a spoken apology or a hangup).
//!
//! Not real-time.

use std::time::Duration;

use super::protocol::ProtocolError;
use crate::agent::connect::ConnectError;
use crate::agent::metrics::FailureLabel;

/// Why the agent connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The agent could not be reached, or did not accept in time.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The agent broke the protocol; its socket was closed with the error's close code.
    #[error("agent protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// The agent closed its socket (or the connection dropped) while the call was up.
    #[error("the agent disconnected mid-call (close code {code:?}: {reason:?})")]
    Disconnected {
        /// The agent's close code, if it sent a close frame.
        code: Option<u16>,
        /// The agent's close reason.
        reason: String,
    },
    /// The agent stopped reading: queued messages did not move for this long.
    #[error("the agent stopped reading its socket for {0:?}")]
    NotReading(Duration),
    /// The socket failed.
    #[error("agent socket: {0}")]
    Socket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
}

impl BridgeError {
    /// The metric label.
    pub fn label(&self) -> FailureLabel {
        match self {
            Self::Connect(ConnectError::Timeout { .. }) => FailureLabel::connect_timeout,
            Self::Connect(_) => FailureLabel::connect_failed,
            Self::Protocol(p) => p.label(),
            Self::Disconnected { .. } => FailureLabel::disconnected,
            Self::NotReading(_) => FailureLabel::not_reading,
            Self::Socket(_) => FailureLabel::socket_error,
        }
    }
}
