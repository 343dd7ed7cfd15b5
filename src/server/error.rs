//! [`ServerError`]: everything an HTTP handler or the server itself can fail with. It is an
//! [`IntoResponse`]: clients get a status and a one-line reason, never internals.
//!
//! Not real-time.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::config::ServerConfigError;
use crate::agent::InvalidCallId;
use crate::vonage::webhooks::WebhookError;

/// A request the server refuses, or a failure of the server itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A webhook body or query that does not parse.
    #[error("bad webhook: {0}")]
    Webhook(#[from] WebhookError),
    /// A body that is not valid (e.g. not UTF-8 form data).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The call id in a media socket path is not acceptable.
    #[error(transparent)]
    CallId(#[from] InvalidCallId),
    /// No public URL is configured and the request carries no usable `Host`.
    #[error("no usable Host header; set --public-url")]
    NoHost,
    /// The concurrent-call limit is reached.
    #[error("at capacity ({max} calls)")]
    AtCapacity {
        /// The limit.
        max: usize,
    },
    /// The server is draining for shutdown.
    #[error("shutting down")]
    ShuttingDown,
    /// A media socket for this call is already open.
    #[error("a media socket for this call is already open")]
    DuplicateSocket,
    /// Authentication failed (a webhook signature, a media token); the reason is a fixed label.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// A media socket for a call that is over.
    #[error("unknown or ended call")]
    UnknownCall,
    /// The shared state (Redis) cannot be reached: replay checks and socket claims fail closed.
    #[error("shared state unavailable; try again")]
    SharedStateUnavailable,
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ServerConfigError),
    /// The agent named in the configuration lacks its settings (a configuration built by hand
    /// without them).
    #[error("agent {0:?} is not configured")]
    AgentUnavailable(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl ServerError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Webhook(WebhookError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Webhook(_) | Self::BadRequest(_) | Self::CallId(_) | Self::NoHost => {
                StatusCode::BAD_REQUEST
            }
            Self::AtCapacity { .. } | Self::ShuttingDown | Self::SharedStateUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::DuplicateSocket => StatusCode::CONFLICT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::UnknownCall => StatusCode::NOT_FOUND,
            Self::Config(_) | Self::AgentUnavailable(_) | Self::Bind { .. } | Self::Io(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, %status, "request refused");
        }
        // Internal errors get a generic reason; client errors say what was wrong.
        let body = if status == StatusCode::INTERNAL_SERVER_ERROR {
            "internal error".to_owned()
        } else {
            self.to_string()
        };
        (status, body).into_response()
    }
}
