//! Who may talk to the server: authentication as axum extractors, so a handler that takes one
//! cannot run for an unauthenticated request.
//!
//! * [`VerifiedWebhook<T>`]: the answer, event and fallback webhooks. With a signature secret
//!   configured, the request must carry Vonage's HS256 JWT (vonage-protocol.md §5, verified by
//!   [`WebhookVerifier`]) whose `payload_hash` covers the body (or the GET query), whose `jti`
//!   was not seen inside the window by any instance (the shared state's replay cache,
//!   `server::shared`); then the payload is parsed into `T`. Refusals are `401`, one log line
//!   with the reason (never the token) and `voicegate_webhook_auth_failures_total{reason}`;
//!   when the replay cache cannot be reached the request is refused with `503` (reason
//!   `replay_cache_unavailable`; Vonage retries): a token is never accepted unchecked. Without a
//!   secret the payload is parsed unverified (the server warns at start).
//! * [`MediaToken`]: the media socket upgrade `GET /voice-stream/{call_id}?token=…`. The answer
//!   webhook mints a per-call token (`server::media_token`) that carries the call's facts under
//!   an HMAC, so any instance with the same `--media-token-key` can accept the socket. The
//!   upgrade is refused (`401`, before the `101`) without a valid, unexpired token for that
//!   call id; the shared state then refuses an ended call, a second socket and a token already
//!   used ([`AppState::attach_socket`]). With `--signed-media-socket` the NCCO also asks Vonage
//!   to sign the handshake and its JWT is verified like a webhook's, without `payload_hash`
//!   (§1.2). The media token needs no Vonage secret: its key is `--media-token-key` or random
//!   per process.
//!
//! Not real-time (once per webhook and per socket upgrade).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{self, AUTHORIZATION};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::config::ServerConfig;
use super::error::ServerError;
pub use super::media_token::{
    MAX_MEDIA_TOKEN_BYTES, MEDIA_TOKEN_PARAM, MediaAuthError, MediaCall, MediaClaims, MediaTokens,
};
use super::metrics::HttpTimeout;
pub use super::shared::{MemoryReplayGuard, memory::REPLAY_CAPACITY};
use super::shared::{SharedState, StateError};
use super::state::AppState;
use crate::agent::CallId;
use crate::vonage::signed_webhook::{JwtError, Payload, VerifiedToken, WebhookVerifier};
use crate::vonage::webhooks::{AnswerWebhook, WebhookEvent, parse_event};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ------------------------------------------------------------------------------- state

/// Why a signed request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignedRefusal {
    /// The token itself (signature, claims, replay).
    #[error(transparent)]
    Jwt(#[from] JwtError),
    /// The shared replay cache could not be asked: refused, never accepted unchecked.
    #[error("the shared replay cache is unavailable")]
    ReplayCacheUnavailable,
}

impl SignedRefusal {
    /// A short, fixed name for logs and the metric label `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Jwt(e) => e.reason(),
            Self::ReplayCacheUnavailable => "replay_cache_unavailable",
        }
    }

    /// The response: `401`, or `503` when the replay cache is unavailable (Vonage retries).
    pub fn into_server_error(self) -> ServerError {
        match self {
            Self::Jwt(e) => ServerError::Unauthorized(e.reason()),
            Self::ReplayCacheUnavailable => ServerError::SharedStateUnavailable,
        }
    }
}

/// Everything authentication needs, built once from the configuration.
#[derive(Debug)]
pub struct Auth {
    webhook: Option<WebhookVerifier>,
    shared: Arc<dyn SharedState>,
    media: MediaTokens,
    signed_socket: bool,
}

impl Auth {
    /// From the configuration: a verifier when a signature secret is set, the replay cache of
    /// `shared`, media tokens under the configured or a random key.
    pub fn new(config: &ServerConfig, shared: Arc<dyn SharedState>) -> Self {
        let webhook = config.signature_secret.as_deref().map(|s| {
            let mut v = WebhookVerifier::new(s).max_age(config.webhook_max_age);
            if let Some(k) = &config.api_key {
                v = v.pin_api_key(k.clone());
            }
            if let Some(id) = &config.application_id {
                v = v.pin_application_id(id.clone());
            }
            v
        });
        let media = match &config.media_token_key {
            Some(k) => MediaTokens::new(k.0.as_bytes(), config.media_token_ttl),
            None => MediaTokens::random(config.media_token_ttl),
        };
        Self {
            webhook,
            shared,
            media,
            signed_socket: config.signed_media_socket,
        }
    }

    /// Whether webhooks are verified (a signature secret is configured).
    pub fn is_verifying(&self) -> bool {
        self.webhook.is_some()
    }

    /// Whether the media socket handshake must carry Vonage's JWT.
    pub fn is_signed_socket(&self) -> bool {
        self.signed_socket
    }

    /// The media token minter.
    pub fn media(&self) -> &MediaTokens {
        &self.media
    }

    /// Verifies a signed request's `Authorization` header and records its `jti` in the shared
    /// replay cache. `Ok(None)` when no secret is configured.
    pub async fn verify_signed(
        &self,
        headers: &HeaderMap,
        payload: Payload<'_>,
        require_jti: bool,
        now_unix: u64,
    ) -> Result<Option<VerifiedToken>, SignedRefusal> {
        let Some(v) = &self.webhook else {
            return Ok(None);
        };
        let header = headers.get(AUTHORIZATION).map(|h| h.as_bytes());
        let token = v.verify_header(header, payload, now_unix)?;
        match token.jti.as_deref() {
            Some(jti) => {
                let until = token
                    .iat
                    .saturating_add(v.replay_window().as_secs())
                    .max(now_unix.saturating_add(1));
                let ttl = std::time::Duration::from_secs(until - now_unix);
                match self.shared.record_jti(jti, token.iat, ttl).await {
                    Ok(()) => {}
                    Err(StateError::Replayed) => return Err(JwtError::Replayed.into()),
                    Err(_) => return Err(SignedRefusal::ReplayCacheUnavailable),
                }
            }
            None if require_jti => return Err(JwtError::MissingJti.into()),
            None => {}
        }
        Ok(Some(token))
    }
}

// ------------------------------------------------------------------------------- webhooks

/// A webhook payload type: built from the decoded query pairs (GET) or the body (POST).
pub trait FromWebhook: Sized {
    /// Parses the payload; an error is a `400` (and counted).
    fn from_webhook(query: &[(String, String)], body: &[u8]) -> Result<Self, ServerError>;
}

fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

impl FromWebhook for AnswerWebhook {
    fn from_webhook(query: &[(String, String)], body: &[u8]) -> Result<Self, ServerError> {
        Ok(if is_blank(body) {
            AnswerWebhook::from_query_pairs(query.iter().cloned())?
        } else {
            AnswerWebhook::from_json(body)?
        })
    }
}

impl FromWebhook for WebhookEvent {
    fn from_webhook(query: &[(String, String)], body: &[u8]) -> Result<Self, ServerError> {
        let parsed = if !is_blank(body) {
            parse_event(body)
        } else if query.is_empty() {
            parse_event(b"")
        } else {
            let obj: Map<String, Value> = query
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            parse_event(&serde_json::to_vec(&obj).unwrap_or_default())
        };
        Ok(parsed?)
    }
}

/// A webhook payload left unparsed (the fallback URL decides what it is).
#[derive(Debug, Clone)]
pub struct RawWebhook {
    /// Decoded query pairs, in URL order.
    pub query: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl FromWebhook for RawWebhook {
    fn from_webhook(query: &[(String, String)], body: &[u8]) -> Result<Self, ServerError> {
        Ok(Self {
            query: query.to_vec(),
            body: Bytes::copy_from_slice(body),
        })
    }
}

/// A webhook whose signature (when a secret is configured) was verified, with its payload.
#[derive(Debug)]
pub struct VerifiedWebhook<T> {
    /// The parsed payload.
    pub payload: T,
    /// The request headers (for the public URL).
    pub headers: HeaderMap,
    /// The verified token; `None` when no secret is configured.
    pub token: Option<VerifiedToken>,
}

fn query_pairs(uri: &Uri) -> Result<Vec<(String, String)>, ServerError> {
    match uri.query() {
        None | Some("") => Ok(Vec::new()),
        Some(_) => Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|Query(q)| q)
            .map_err(|_| ServerError::BadRequest("query string is not valid form data")),
    }
}

impl<T: FromWebhook + Send> FromRequest<AppState> for VerifiedWebhook<T> {
    type Rejection = Response;

    async fn from_request(req: Request, st: &AppState) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let uri = req.uri().clone();
        let path = uri.path().to_owned();
        // The body limit layer applies here: a body over MAX_WEBHOOK_BODY is a 413.
        // A client that trickles its body would hold the connection and the task: deadline.
        let read = Bytes::from_request(req, st);
        let body = match tokio::time::timeout(st.config().http.body_timeout, read).await {
            Ok(Ok(b)) => b,
            Err(_elapsed) => {
                st.metrics().http_timeout(HttpTimeout::body);
                tracing::warn!(path, "webhook body refused: not received in time");
                return Err((
                    StatusCode::REQUEST_TIMEOUT,
                    [(header::CONNECTION, "close")],
                    "request body not received in time",
                )
                    .into_response());
            }
            Ok(Err(rejection)) => {
                st.metrics().webhook_errors.inc();
                tracing::warn!(path, status = %rejection.status(), "webhook body refused");
                return Err(rejection.into_response());
            }
        };
        let query = query_pairs(&uri);
        let empty = Vec::new();
        let pairs = query.as_ref().unwrap_or(&empty);
        let payload = if is_blank(&body) {
            Payload::Query(pairs)
        } else {
            Payload::Body(&body)
        };
        let token = match st
            .auth()
            .verify_signed(&headers, payload, true, unix_now())
            .await
        {
            Ok(t) => t,
            Err(e) => {
                st.metrics().webhook_auth_failure(e.reason());
                tracing::warn!(path, reason = e.reason(), "webhook refused: {e}");
                return Err(e.into_server_error().into_response());
            }
        };
        let parsed = query
            .and_then(|q| T::from_webhook(&q, &body))
            .or_else(|e| match e {
                // A query that is not form data does not matter when the body carries the payload.
                ServerError::BadRequest(_) if !is_blank(&body) => T::from_webhook(&[], &body),
                e => Err(e),
            });
        match parsed {
            Ok(payload) => Ok(Self {
                payload,
                headers,
                token,
            }),
            Err(e) => {
                st.metrics().webhook_errors.inc();
                Err(e.into_response())
            }
        }
    }
}

// ------------------------------------------------------------------------------- media socket

/// An authorised media socket upgrade: a valid, unexpired media token for the call in the path
/// (and, with `--signed-media-socket`, Vonage's verified handshake JWT). Whether the token is
/// still unused is decided when the socket is claimed ([`AppState::attach_socket`]).
#[derive(Debug, Clone)]
pub struct MediaToken {
    /// What the token says.
    pub claims: MediaClaims,
    /// The token as received (kept in the call record so a reconnect can re-mint it).
    pub token: String,
    /// Vonage's handshake token, when required.
    pub vonage: Option<VerifiedToken>,
}

impl FromRequestParts<AppState> for MediaToken {
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ServerError> {
        let Path(raw_id) = Path::<String>::from_request_parts(parts, st)
            .await
            .map_err(|_| ServerError::BadRequest("bad media socket path"))?;
        let id = CallId::parse(&raw_id)?;
        let refuse = |e: MediaAuthError| {
            st.metrics().media_auth_failure(e.reason());
            tracing::warn!(call_id = %id, reason = e.reason(), "media socket refused: {e}");
            match e {
                MediaAuthError::ReplayCacheUnavailable => ServerError::SharedStateUnavailable,
                e => ServerError::Unauthorized(e.reason()),
            }
        };
        let now = unix_now();
        let auth = st.auth();
        let vonage = if auth.is_signed_socket() {
            // §1.2: verify like a webhook, without payload_hash; jti (if any) is single-use.
            match auth
                .verify_signed(&parts.headers, Payload::Unchecked, false, now)
                .await
            {
                Ok(t) => t,
                Err(SignedRefusal::Jwt(e)) => return Err(refuse(MediaAuthError::Jwt(e))),
                Err(SignedRefusal::ReplayCacheUnavailable) => {
                    return Err(refuse(MediaAuthError::ReplayCacheUnavailable));
                }
            }
        } else {
            None
        };
        let pairs = query_pairs(&parts.uri).unwrap_or_default();
        let mut tokens = pairs.iter().filter(|(k, _)| k == MEDIA_TOKEN_PARAM);
        let token = match (tokens.next(), tokens.next()) {
            (Some((_, t)), None) => t,
            _ => return Err(refuse(MediaAuthError::MissingToken)),
        };
        let claims = auth.media().verify(token, &id, now).map_err(refuse)?;
        Ok(Self {
            claims,
            token: token.clone(),
            vonage,
        })
    }
}
