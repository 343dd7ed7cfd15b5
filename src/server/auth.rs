//! Who may talk to the server: authentication as axum extractors, so a handler that takes one
//! cannot run for an unauthenticated request.
//!
//! * [`VerifiedWebhook<T>`]: the answer, event and fallback webhooks. With a signature secret
//!   configured, the request must carry Vonage's HS256 JWT (vonage-protocol.md §5, verified by
//!   [`WebhookVerifier`]) whose `payload_hash` covers the body (or the GET query), whose `jti`
//!   was not seen inside the window ([`ReplayGuard`]); then the payload is parsed into `T`.
//!   Refusals are `401`, one log line with the reason (never the token) and
//!   `voicegate_webhook_auth_failures_total{reason}`. Without a secret the payload is parsed
//!   unverified (the server warns at start).
//! * [`MediaToken`]: the media socket upgrade `GET /voice-stream/{call_id}?token=…`. The answer
//!   webhook mints a per-call token ([`MediaTokens::mint`]): HMAC-SHA-256 over the call id, the
//!   media rate, an expiry and a nonce, so the token alone says which call it opens (a later
//!   stateless scale-out can trust it without the registry). The upgrade is refused (`401`,
//!   before the `101`) without a valid, unexpired token for that call id; the registry then
//!   refuses an unknown or ended call, a second socket, and a token already used
//!   ([`AppState::attach_socket`]). With `--signed-media-socket` the NCCO also asks Vonage to
//!   sign the handshake and its JWT is verified like a webhook's, without `payload_hash` (§1.2).
//!   The media token needs no Vonage secret: its key is `--media-token-key` or random per
//!   process.
//!
//! Not real-time (once per webhook and per socket upgrade).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::config::ServerConfig;
use super::error::ServerError;
use super::state::AppState;
use crate::agent::CallId;
use crate::core::SampleRate;
use crate::vonage::signed_webhook::{JwtError, Payload, VerifiedToken, WebhookVerifier};
use crate::vonage::webhooks::{AnswerWebhook, WebhookEvent, parse_event};

/// `jti` values remembered for replay protection; beyond this the oldest are forgotten.
pub const REPLAY_CAPACITY: usize = 100_000;
/// Longest media token accepted, bytes.
pub const MAX_MEDIA_TOKEN_BYTES: usize = 256;
/// Query parameter of the websocket URI that carries the media token.
pub const MEDIA_TOKEN_PARAM: &str = "token";

const MEDIA_TOKEN_VERSION: u8 = 1;
const MEDIA_TOKEN_CONTEXT: &[u8] = b"voicegate/media-token/v1\0";
/// Bytes of the HMAC-SHA-256 tag kept in a media token (128 bits).
const MEDIA_TAG_BYTES: usize = 16;
/// version, rate code, expiry (u64), nonce (u64).
const MEDIA_FIXED_BYTES: usize = 1 + 1 + 8 + 8;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ------------------------------------------------------------------------------- replay

/// Remembers token ids (`jti`) until they expire, to refuse a token seen twice. A trait so a
/// shared store (Redis, for several instances) can replace [`MemoryReplayGuard`].
pub trait ReplayGuard: Send + Sync + fmt::Debug {
    /// Records `jti` as used until `expires_at_unix`; [`JwtError::Replayed`] if it is already
    /// recorded and not expired at `now_unix`.
    fn check_and_record(
        &self,
        jti: &str,
        now_unix: u64,
        expires_at_unix: u64,
    ) -> Result<(), JwtError>;
}

/// An in-process [`ReplayGuard`] with fixed capacity: it stores a 128-bit digest of each `jti`
/// with its expiry, forgets expired ones first and, when full of live ones, the oldest (a full
/// guard means more than `capacity` signed requests inside one window; the count is in
/// [`evicted`](Self::evicted)).
#[derive(Debug)]
pub struct MemoryReplayGuard {
    capacity: usize,
    inner: Mutex<ReplayInner>,
    evicted: AtomicU64,
}

#[derive(Debug, Default)]
struct ReplayInner {
    seen: HashMap<[u8; 16], u64>,
    order: VecDeque<([u8; 16], u64)>,
}

impl MemoryReplayGuard {
    /// A guard remembering at most `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(ReplayInner::default()),
            evicted: AtomicU64::new(0),
        }
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live ids forgotten because the guard was full.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReplayInner> {
        // Every operation leaves the maps consistent; a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ReplayInner {
    /// Drops the front entry, and its map entry if it still belongs to it.
    fn pop_front(&mut self) -> Option<u64> {
        let (k, exp) = self.order.pop_front()?;
        if self.seen.get(&k) == Some(&exp) {
            self.seen.remove(&k);
        }
        Some(exp)
    }
}

impl ReplayGuard for MemoryReplayGuard {
    fn check_and_record(
        &self,
        jti: &str,
        now_unix: u64,
        expires_at_unix: u64,
    ) -> Result<(), JwtError> {
        let digest = Sha256::digest(jti.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        let mut g = self.lock();
        while g.order.front().is_some_and(|&(_, exp)| exp <= now_unix) {
            g.pop_front();
        }
        if g.seen.get(&key).is_some_and(|&exp| exp > now_unix) {
            return Err(JwtError::Replayed);
        }
        while g.seen.len() >= self.capacity || g.order.len() >= self.capacity.saturating_mul(2) {
            if g.pop_front().is_some_and(|exp| exp > now_unix) {
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        g.seen.insert(key, expires_at_unix);
        g.order.push_back((key, expires_at_unix));
        Ok(())
    }
}

// ------------------------------------------------------------------------------- media tokens

/// What a media token says about its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaClaims {
    /// The call the token opens a socket for.
    pub call_id: CallId,
    /// The media rate the NCCO asked for.
    pub rate: SampleRate,
    /// Unix seconds after which the token is refused.
    pub expires_at_unix: u64,
    /// Unique per minted token; the registry accepts each once.
    pub nonce: u64,
}

/// Why a media socket upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaAuthError {
    /// No `token` query parameter (or more than one).
    MissingToken,
    /// Not a token of ours (shape, length, version, rate).
    Malformed,
    /// The tag does not match: forged or altered.
    BadTag,
    /// A valid token for another call.
    WrongCall,
    /// The token expired.
    Expired,
    /// The token was already used, or a newer one was minted for the call.
    Used,
    /// Vonage's signed handshake (`--signed-media-socket`) was refused.
    Jwt(JwtError),
}

impl MediaAuthError {
    /// A short, fixed name for logs and the metric label `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Malformed => "malformed_token",
            Self::BadTag => "bad_token",
            Self::WrongCall => "wrong_call",
            Self::Expired => "expired_token",
            Self::Used => "used_token",
            Self::Jwt(e) => e.reason(),
        }
    }
}

impl fmt::Display for MediaAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Jwt(e) => write!(f, "media socket handshake: {e}"),
            other => write!(f, "media token refused: {}", other.reason()),
        }
    }
}

impl std::error::Error for MediaAuthError {}

/// Mints and checks per-call media tokens: `base64url(claims) "." base64url(tag)`, where the
/// claims are version, rate, expiry, nonce and call id, and the tag is the first 128 bits of
/// HMAC-SHA-256 over a context string and the claims, compared in constant time.
pub struct MediaTokens {
    key: [u8; 32],
    ttl: Duration,
    next_nonce: AtomicU64,
}

impl fmt::Debug for MediaTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn rate_code(rate: SampleRate) -> u8 {
    match rate {
        SampleRate::Hz8000 => 0,
        SampleRate::Hz16000 => 1,
        SampleRate::Hz24000 => 2,
        _ => 3,
    }
}

fn rate_of(code: u8) -> Option<SampleRate> {
    match code {
        0 => Some(SampleRate::Hz8000),
        1 => Some(SampleRate::Hz16000),
        2 => Some(SampleRate::Hz24000),
        _ => None,
    }
}

impl MediaTokens {
    /// Tokens keyed by `key` (any length: it is hashed to 32 bytes), valid for `ttl`.
    pub fn new(key: &[u8], ttl: Duration) -> Self {
        let key: [u8; 32] = Sha256::digest(key).into();
        let mut seed = [0u8; 8];
        // A failed OS RNG only makes nonces predictable, not tokens forgeable (they are MACed).
        let _ = getrandom::getrandom(&mut seed);
        Self {
            key,
            ttl,
            next_nonce: AtomicU64::new(u64::from_le_bytes(seed)),
        }
    }

    /// Tokens under a fresh random key (tokens die with the process).
    pub fn random(ttl: Duration) -> Self {
        let mut key = [0u8; 32];
        if getrandom::getrandom(&mut key).is_err() {
            // No OS randomness: fall back to what is unique to this process and instant; logged
            // loudly because tokens are then guessable by a local observer.
            tracing::error!("no OS randomness for the media token key; set --media-token-key");
            let seed = format!("{:?}{}", SystemTime::now(), std::process::id());
            key = Sha256::digest(seed.as_bytes()).into();
        }
        Self::new(&key, ttl)
    }

    /// How long a minted token is valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn mac(&self) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(MEDIA_TOKEN_CONTEXT);
        mac
    }

    /// A new token for `call_id` at `rate`, valid from `now_unix` for the TTL; returns it with
    /// its nonce (which the registry stores to accept it once).
    pub fn mint(&self, call_id: &CallId, rate: SampleRate, now_unix: u64) -> (String, u64) {
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        let exp = now_unix.saturating_add(self.ttl.as_secs());
        let mut claims = Vec::with_capacity(MEDIA_FIXED_BYTES + call_id.as_str().len());
        claims.push(MEDIA_TOKEN_VERSION);
        claims.push(rate_code(rate));
        claims.extend_from_slice(&exp.to_be_bytes());
        claims.extend_from_slice(&nonce.to_be_bytes());
        claims.extend_from_slice(call_id.as_str().as_bytes());
        let mut mac = self.mac();
        mac.update(&claims);
        let tag = mac.finalize().into_bytes();
        let token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&claims),
            URL_SAFE_NO_PAD.encode(&tag[..MEDIA_TAG_BYTES])
        );
        (token, nonce)
    }

    /// Checks `token` for the socket of `call_id` at `now_unix`.
    pub fn verify(
        &self,
        token: &str,
        call_id: &CallId,
        now_unix: u64,
    ) -> Result<MediaClaims, MediaAuthError> {
        if token.is_empty() || token.len() > MAX_MEDIA_TOKEN_BYTES {
            return Err(MediaAuthError::Malformed);
        }
        let (c, t) = token.split_once('.').ok_or(MediaAuthError::Malformed)?;
        let claims = URL_SAFE_NO_PAD
            .decode(c)
            .map_err(|_| MediaAuthError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(t)
            .map_err(|_| MediaAuthError::Malformed)?;
        if tag.len() != MEDIA_TAG_BYTES || claims.len() <= MEDIA_FIXED_BYTES {
            return Err(MediaAuthError::Malformed);
        }
        let mut mac = self.mac();
        mac.update(&claims);
        // Constant-time comparison of the truncated tag.
        mac.verify_truncated_left(&tag)
            .map_err(|_| MediaAuthError::BadTag)?;
        if claims[0] != MEDIA_TOKEN_VERSION {
            return Err(MediaAuthError::Malformed);
        }
        let rate = rate_of(claims[1]).ok_or(MediaAuthError::Malformed)?;
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&claims[2..10]);
        let mut nonce = [0u8; 8];
        nonce.copy_from_slice(&claims[10..18]);
        let id = &claims[MEDIA_FIXED_BYTES..];
        if id != call_id.as_str().as_bytes() {
            return Err(MediaAuthError::WrongCall);
        }
        let expires_at_unix = u64::from_be_bytes(exp);
        if now_unix > expires_at_unix {
            return Err(MediaAuthError::Expired);
        }
        Ok(MediaClaims {
            call_id: call_id.clone(),
            rate,
            expires_at_unix,
            nonce: u64::from_be_bytes(nonce),
        })
    }
}

// ------------------------------------------------------------------------------- state

/// Everything authentication needs, built once from the configuration.
#[derive(Debug)]
pub struct Auth {
    webhook: Option<WebhookVerifier>,
    replay: Arc<dyn ReplayGuard>,
    media: MediaTokens,
    signed_socket: bool,
}

impl Auth {
    /// From the configuration: a verifier when a signature secret is set, an in-process replay
    /// guard, media tokens under the configured or a random key.
    pub fn new(config: &ServerConfig) -> Self {
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
            replay: Arc::new(MemoryReplayGuard::new(REPLAY_CAPACITY)),
            media,
            signed_socket: config.signed_media_socket,
        }
    }

    /// Replaces the replay guard (a shared one, for several instances).
    pub fn with_replay_guard(mut self, guard: Arc<dyn ReplayGuard>) -> Self {
        self.replay = guard;
        self
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

    /// Verifies a signed request's `Authorization` header and records its `jti`. `Ok(None)`
    /// when no secret is configured.
    pub fn verify_signed(
        &self,
        headers: &HeaderMap,
        payload: Payload<'_>,
        require_jti: bool,
        now_unix: u64,
    ) -> Result<Option<VerifiedToken>, JwtError> {
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
                self.replay.check_and_record(jti, now_unix, until)?;
            }
            None if require_jti => return Err(JwtError::MissingJti),
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
        let body = match Bytes::from_request(req, st).await {
            Ok(b) => b,
            Err(rejection) => {
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
        let token = match st.auth().verify_signed(&headers, payload, true, unix_now()) {
            Ok(t) => t,
            Err(e) => {
                st.metrics().webhook_auth_failure(e.reason());
                tracing::warn!(path, reason = e.reason(), "webhook refused: {e}");
                return Err(ServerError::Unauthorized(e.reason()).into_response());
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
/// still unused is decided when the socket slot is claimed ([`AppState::attach_socket`]).
#[derive(Debug, Clone)]
pub struct MediaToken {
    /// What the token says.
    pub claims: MediaClaims,
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
            ServerError::Unauthorized(e.reason())
        };
        let now = unix_now();
        let auth = st.auth();
        let vonage = if auth.is_signed_socket() {
            // §1.2: verify like a webhook, without payload_hash; jti (if any) is single-use.
            match auth.verify_signed(&parts.headers, Payload::Unchecked, false, now) {
                Ok(t) => t,
                Err(e) => return Err(refuse(MediaAuthError::Jwt(e))),
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
        Ok(Self { claims, vonage })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> CallId {
        CallId::parse(s).unwrap()
    }

    #[test]
    fn media_token_round_trip_and_refusals() {
        let t = MediaTokens::new(b"0123456789abcdef", Duration::from_secs(60));
        let a = id("63f61863-4a51-4f6b-86e1-46edebcf9356");
        let (tok, nonce) = t.mint(&a, SampleRate::Hz24000, 1_000);
        assert!(tok.len() < 120, "{tok}");
        let c = t.verify(&tok, &a, 1_060).unwrap();
        assert_eq!(c.rate, SampleRate::Hz24000);
        assert_eq!(c.nonce, nonce);
        assert_eq!(c.expires_at_unix, 1_060);
        assert_eq!(t.verify(&tok, &a, 1_061), Err(MediaAuthError::Expired));
        assert_eq!(
            t.verify(&tok, &id("other"), 1_000),
            Err(MediaAuthError::WrongCall)
        );
        // Another key, a flipped bit, a truncated tag, junk.
        let other = MediaTokens::new(b"fedcba9876543210", Duration::from_secs(60));
        assert_eq!(other.verify(&tok, &a, 1_000), Err(MediaAuthError::BadTag));
        let (c64, t64) = tok.split_once('.').unwrap();
        let mut claims = URL_SAFE_NO_PAD.decode(c64).unwrap();
        claims[5] ^= 1;
        let forged = format!("{}.{t64}", URL_SAFE_NO_PAD.encode(&claims));
        assert_eq!(t.verify(&forged, &a, 1_000), Err(MediaAuthError::BadTag));
        assert_eq!(
            t.verify(&tok[..tok.len() - 2], &a, 1_000),
            Err(MediaAuthError::Malformed)
        );
        for junk in ["", ".", "a.b", "!!.!!", &"A".repeat(300)] {
            assert!(t.verify(junk, &a, 1_000).is_err(), "{junk}");
        }
        // Nonces differ per mint.
        assert_ne!(t.mint(&a, SampleRate::Hz8000, 0).1, nonce);
    }

    #[test]
    fn replay_guard_is_bounded_and_expires() {
        let g = MemoryReplayGuard::new(3);
        g.check_and_record("a", 100, 200).unwrap();
        assert_eq!(g.check_and_record("a", 150, 250), Err(JwtError::Replayed));
        // Expired: usable again.
        g.check_and_record("a", 200, 300).unwrap();
        for (i, j) in ["b", "c", "d", "e"].iter().enumerate() {
            g.check_and_record(j, 201 + i as u64, 400).unwrap();
        }
        assert!(g.len() <= 3, "{}", g.len());
        assert!(g.evicted() >= 1);
        assert_eq!(g.check_and_record("e", 210, 400), Err(JwtError::Replayed));
        // Far later, everything expired and the memory is back to one entry.
        g.check_and_record("z", 10_000, 10_100).unwrap();
        assert_eq!(g.len(), 1);
        // Thousands of ids never exceed the capacity.
        let g = MemoryReplayGuard::new(100);
        for i in 0..5_000u64 {
            g.check_and_record(&i.to_string(), 1_000, 2_000).unwrap();
        }
        assert_eq!(g.len(), 100);
    }
}
