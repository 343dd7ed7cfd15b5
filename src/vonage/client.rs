//! An async, typed client for the Vonage Voice REST API (vonage-protocol.md §6): control a live
//! call (hang up, mute, earmuff, transfer, talk, stream, DTMF), create outbound calls, read call
//! records.
//!
//! Owns the HTTP requests, their bodies and replies, authentication with the application JWT
//! ([`AppJwt`]), region routing, retries and timeouts. Does not own deciding *what* to do with a
//! call (that is the agent's, through [`crate::server::call_control`]), nor the NCCO model
//! ([`crate::vonage::ncco`], reused here for inline NCCOs and endpoints).
//!
//! # Regions
//!
//! A call lives in one region and is controlled through the host in its answer webhook's
//! `region_url` (other regions answer `404`). [`VoiceClient::region`] returns a client bound to
//! that host, or to the configured default (`--api-url`) when the call's region is unknown. The
//! region URL comes from a webhook, so it is checked first (an SSRF guard, §6): by default only
//! `https://` hosts under `vonage.com` or `nexmo.com`, or the default API URL's own origin, are
//! accepted ([`RegionPolicy`]).
//!
//! # Retries
//!
//! Every request is sent with a per-attempt timeout ([`VoiceClientBuilder::timeout`]). A `401`
//! drops the cached JWT and tries once more with a fresh one (nothing was done, so this is safe
//! for every request). Beyond that, what is retried depends on whether repeating the request can
//! do harm ([`RetryPolicy`] bounds the count and the backoff, exponential with jitter; a
//! `Retry-After` header in seconds is honoured up to [`RetryPolicy::max_retry_after`]):
//!
//! | request | `429` | `5xx`, timeout, connection failure |
//! | --- | --- | --- |
//! | `GET /v1/calls`, `GET /v1/calls/{uuid}` | retried | retried |
//! | `PUT /v1/calls/{uuid}` hangup, mute, unmute, earmuff, unearmuff | retried | retried |
//! | `DELETE …/talk`, `DELETE …/stream` | retried | retried |
//! | `PUT /v1/calls/{uuid}` transfer, `PUT …/talk`, `PUT …/stream`, `PUT …/dtmf` | retried | **not** retried |
//! | `POST /v1/calls` (create a call) | **not** retried | **not** retried |
//!
//! The first two groups set a state, so repeating them is harmless (idempotent). A `429` means
//! Vonage refused the request without acting on it ("not queued", §6.3), so the third group is
//! retried on `429` only: after a `5xx` or a timeout the first attempt may have taken effect, and a
//! repeat would restart the transfer, speak twice or send the digits twice. Creating a call is
//! never repeated: a duplicate would ring someone twice.
//!
//! Not real-time: every method allocates and awaits the network. Call it from an agent's task,
//! never from the media path.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::app_jwt::{AppJwt, AppJwtError};
use super::ncco::{AdvancedMachineDetection, Endpoint, HttpMethod, MachineDetection, Ncco};
use super::webhooks::CallStatus;

/// The global default API host (§6).
pub const DEFAULT_API_URL: &str = "https://api.nexmo.com";
/// Default per-attempt timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default connection timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest response body read, bytes (a page of 100 call records is well under this).
pub const MAX_RESPONSE_BODY: usize = 1024 * 1024;
/// Longest call uuid accepted in a path (a UUID is 36 characters).
pub const MAX_UUID_LEN: usize = 64;
/// Longest DTMF string accepted.
pub const MAX_DTMF_DIGITS: usize = 256;

// ------------------------------------------------------------------------------------ errors

/// Vonage's problem-details error body (RFC 7807 style, §6.3). Every field is optional: error
/// bodies are parsed defensively, and a body that is not problem details (`{"Error": "…"}`,
/// HTML from a proxy) leaves only what could be salvaged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `type`: a URI naming the error, e.g. `https://developer.vonage.com/api-errors#rate-limit`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `title`: a short summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `detail`: the explanation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `instance`: Vonage's trace id for this request. Worth logging.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// `invalid_parameters`: for validation errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invalid_parameters: Vec<InvalidParameter>,
}

/// One entry of [`Problem::invalid_parameters`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidParameter {
    /// The parameter, e.g. `to[0].number`.
    pub name: String,
    /// Why it was refused.
    pub reason: String,
}

/// Longest string kept from an error body field.
const MAX_PROBLEM_FIELD: usize = 512;

impl Problem {
    /// Parses an error body. Never fails: what is not problem details is salvaged or dropped.
    pub fn parse(body: &[u8]) -> Self {
        let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            return Self {
                detail: (!text.is_empty()).then(|| clip(text)),
                ..Self::default()
            };
        };
        let field = |k: &str| obj.get(k).and_then(Value::as_str).map(clip);
        let invalid_parameters = obj
            .get("invalid_parameters")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .take(32)
                    .filter_map(|p| {
                        Some(InvalidParameter {
                            name: clip(p.get("name")?.as_str()?),
                            reason: clip(p.get("reason").and_then(Value::as_str).unwrap_or("")),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            kind: field("type"),
            // The Python SDK's fixture for a 400 is `{"Error": "Bad Request"}`.
            title: field("title")
                .or_else(|| field("Error"))
                .or_else(|| field("error")),
            detail: field("detail"),
            instance: field("instance"),
            invalid_parameters,
        }
    }
}

fn clip(s: &str) -> String {
    if s.len() <= MAX_PROBLEM_FIELD {
        return s.to_owned();
    }
    let mut end = MAX_PROBLEM_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title.as_deref().unwrap_or("(no title)"))?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        for p in &self.invalid_parameters {
            write!(f, "; {} {}", p.name, p.reason)?;
        }
        if let Some(i) = &self.instance {
            write!(f, " (instance {i})")?;
        }
        Ok(())
    }
}

/// Why a REST request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Vonage answered with an error status.
    #[error("Vonage API answered {status}: {problem}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error body.
        problem: Box<Problem>,
        /// Requests sent, retries included.
        attempts: u32,
        /// The `Retry-After` of the last answer, when given in seconds.
        retry_after: Option<Duration>,
    },
    /// No answer within the per-attempt timeout.
    #[error("no answer from the Vonage API within {timeout:?} ({attempts} attempts)")]
    Timeout {
        /// The per-attempt timeout.
        timeout: Duration,
        /// Requests sent.
        attempts: u32,
    },
    /// The request could not be sent or its answer not read (DNS, connection, TLS, …).
    #[error("cannot reach the Vonage API: {source} ({attempts} attempts)")]
    Transport {
        /// The underlying error.
        #[source]
        source: reqwest::Error,
        /// Requests sent.
        attempts: u32,
    },
    /// A success answer whose body is not what the API documents.
    #[error("unexpected answer from the Vonage API ({status}): {source}")]
    Decode {
        /// The HTTP status.
        status: u16,
        /// Why it did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The answer body is larger than [`MAX_RESPONSE_BODY`].
    #[error("answer body larger than {MAX_RESPONSE_BODY} bytes")]
    BodyTooLarge,
    /// The application JWT could not be made.
    #[error(transparent)]
    Jwt(#[from] AppJwtError),
    /// A call uuid that cannot go into a URL path.
    #[error("invalid call uuid ({len} bytes): expected 1 to {MAX_UUID_LEN} of [0-9A-Za-z_-]")]
    InvalidUuid {
        /// Length of what was given, bytes.
        len: usize,
    },
    /// A phone number that is not 7 to 15 digits once `+`, spaces and dashes are removed.
    #[error("invalid phone number {given:?}: expected 7 to 15 digits (E.164, + optional)")]
    InvalidNumber {
        /// What was given.
        given: String,
    },
    /// DTMF digits outside `0-9 * # p`.
    #[error("invalid DTMF digits: expected 1 to {MAX_DTMF_DIGITS} of 0-9, *, #, p")]
    InvalidDigits,
    /// A request that breaks the documented schema.
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// A base URL that is not `http(s)://host[:port][/path]`.
    #[error("invalid API base URL {0:?}")]
    InvalidBaseUrl(String),
    /// A `region_url` that [`RegionPolicy`] does not trust.
    #[error("untrusted region_url {0:?}: expected https://… under vonage.com or nexmo.com")]
    UntrustedRegion(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

impl ClientError {
    /// The HTTP status Vonage answered with, if it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Vonage's error body, if it answered with an error.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Api { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// Whether the call (leg) is unknown or already over (`404`, §6.3).
    pub fn is_call_gone(&self) -> bool {
        self.status() == Some(404)
    }

    /// Requests sent before giving up (0 when nothing was sent).
    pub fn attempts(&self) -> u32 {
        match self {
            Self::Api { attempts, .. }
            | Self::Timeout { attempts, .. }
            | Self::Transport { attempts, .. } => *attempts,
            _ => 0,
        }
    }
}

// ------------------------------------------------------------------------------------ policy

/// Bounds for retrying (see the module docs for *which* requests are retried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so at most `max_retries + 1` requests).
    pub max_retries: u32,
    /// Backoff before retry `n` (from 0) is `base_delay · 2ⁿ`, capped at `max_delay`, then
    /// jittered uniformly into its upper half.
    pub base_delay: Duration,
    /// Cap of the computed backoff.
    pub max_delay: Duration,
    /// Longest `Retry-After` waited for; a longer one ends the retries and returns the error.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(4),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// No retries at all (the `401` token refresh still happens).
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The jittered backoff before retry `retry` (from 0).
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        let half = exp / 2;
        half + half.mul_f64(jitter_unit())
    }
}

/// A number in `[0, 1)` from the standard library's per-process random hasher keys: enough to
/// spread retries apart, no extra dependency.
fn jitter_unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// How far a request may be repeated; see the table in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idempotency {
    /// Sets a state or reads: retried on `429`, `5xx`, timeouts and connection failures.
    Idempotent,
    /// Acts once per request: retried on `429` only (Vonage did not act on it).
    RateLimitOnly,
    /// Creates a call: never retried.
    Never,
}

/// Which `region_url` hosts the client agrees to send the application JWT to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RegionPolicy {
    /// `https://` hosts that are `vonage.com`, `nexmo.com` or under them, and the default API
    /// URL's own origin.
    #[default]
    VonageHosts,
    /// Any `http(s)://` URL. For tests with local stand-ins only.
    Any,
}

// ------------------------------------------------------------------------------------ client

/// A Vonage Voice REST API client. Cheap to clone (everything is behind `Arc`s); clones share
/// the connection pool and the cached JWT.
#[derive(Debug, Clone)]
pub struct VoiceClient {
    inner: Arc<Inner>,
    /// This client's base URL, without a trailing slash.
    base: Arc<str>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    jwt: Arc<AppJwt>,
    default_base: Arc<str>,
    default_origin: Url,
    retry: RetryPolicy,
    timeout: Duration,
    region_policy: RegionPolicy,
}

/// Configures a [`VoiceClient`].
#[derive(Debug)]
pub struct VoiceClientBuilder {
    jwt: Arc<AppJwt>,
    api_url: String,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    region_policy: RegionPolicy,
}

impl VoiceClientBuilder {
    /// The default base URL, used when a call's region is unknown (`--api-url`). Default
    /// [`DEFAULT_API_URL`].
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = url.into();
        self
    }

    /// Timeout of each attempt, from sending to the end of the answer body. Default
    /// [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Timeout for opening a connection. Default [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The retry bounds. Default [`RetryPolicy::default`].
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Which `region_url` hosts are trusted. Default [`RegionPolicy::VonageHosts`].
    pub fn region_policy(mut self, policy: RegionPolicy) -> Self {
        self.region_policy = policy;
        self
    }

    /// Builds the client. Installs the `ring` rustls crypto provider as the process default if
    /// none is installed yet (reqwest is built without one).
    pub fn build(self) -> Result<VoiceClient, ClientError> {
        let default_origin = parse_base(&self.api_url)?;
        // `Err` means a provider is already installed, which is all we need.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            // A redirect would carry the request elsewhere; Vonage does not redirect API calls.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("voicegate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Build)?;
        let base: Arc<str> = Arc::from(self.api_url.trim_end_matches('/'));
        Ok(VoiceClient {
            inner: Arc::new(Inner {
                http,
                jwt: self.jwt,
                default_base: base.clone(),
                default_origin,
                retry: self.retry,
                timeout: self.timeout,
                region_policy: self.region_policy,
            }),
            base,
        })
    }
}

/// Checks a base URL: `http(s)://host[:port][/path]`, no credentials, query or fragment.
fn parse_base(s: &str) -> Result<Url, ClientError> {
    let bad = || ClientError::InvalidBaseUrl(clip(s));
    let url = Url::parse(s).map_err(|_| bad())?;
    let ok = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    if ok { Ok(url) } else { Err(bad()) }
}

/// Whether `host` is `domain` or a subdomain of it.
fn is_under(host: &str, domain: &str) -> bool {
    host.eq_ignore_ascii_case(domain)
        || host.len() > domain.len()
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
}

/// A successful answer: status and body.
struct Reply {
    status: StatusCode,
    body: Vec<u8>,
}

impl Reply {
    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|source| ClientError::Decode {
            status: self.status.as_u16(),
            source,
        })
    }

    /// The `{"message", "uuid"}` body of talk/stream/DTMF answers; tolerated when empty.
    fn action(&self) -> Result<ActionReply, ClientError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(ActionReply::default());
        }
        self.json()
    }
}

impl VoiceClient {
    /// A builder signing requests with `jwt`.
    pub fn builder(jwt: Arc<AppJwt>) -> VoiceClientBuilder {
        VoiceClientBuilder {
            jwt,
            api_url: DEFAULT_API_URL.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            retry: RetryPolicy::default(),
            region_policy: RegionPolicy::default(),
        }
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The signer.
    pub fn jwt(&self) -> &Arc<AppJwt> {
        &self.inner.jwt
    }

    /// A client for a call in the region `region_url` (from its answer webhook), or for the
    /// default base URL when `None`. Fails for a URL the [`RegionPolicy`] does not trust.
    pub fn region(&self, region_url: Option<&str>) -> Result<VoiceClient, ClientError> {
        let Some(region) = region_url.map(str::trim).filter(|r| !r.is_empty()) else {
            return Ok(self.with_base(self.inner.default_base.clone()));
        };
        let untrusted = || ClientError::UntrustedRegion(clip(region));
        let url = parse_base(region).map_err(|_| untrusted())?;
        let d = &self.inner.default_origin;
        let same_origin = url.scheme() == d.scheme()
            && url.host_str() == d.host_str()
            && url.port_or_known_default() == d.port_or_known_default();
        let trusted = match self.inner.region_policy {
            RegionPolicy::Any => true,
            RegionPolicy::VonageHosts => {
                same_origin
                    || url.scheme() == "https"
                        && url
                            .host_str()
                            .is_some_and(|h| is_under(h, "vonage.com") || is_under(h, "nexmo.com"))
            }
        };
        if !trusted {
            return Err(untrusted());
        }
        Ok(self.with_base(Arc::from(region.trim_end_matches('/'))))
    }

    /// A client sending to `base_url`, unchecked (tests, or a base from trusted configuration).
    pub fn with_base_url(&self, base_url: &str) -> Result<VoiceClient, ClientError> {
        parse_base(base_url)?;
        Ok(self.with_base(Arc::from(base_url.trim_end_matches('/'))))
    }

    fn with_base(&self, base: Arc<str>) -> VoiceClient {
        VoiceClient {
            inner: self.inner.clone(),
            base,
        }
    }

    // --------------------------------------------------------------- PUT /v1/calls/{uuid}

    /// `PUT /v1/calls/{uuid}` with `update`. `204` on success.
    pub async fn update_call(&self, uuid: &str, update: &CallUpdate) -> Result<(), ClientError> {
        let path = format!("/v1/calls/{}", check_uuid(uuid)?);
        let idem = if matches!(update, CallUpdate::Transfer { .. }) {
            Idempotency::RateLimitOnly
        } else {
            Idempotency::Idempotent
        };
        self.send(Method::PUT, &path, None, Some(update), idem)
            .await
            .map(drop)
    }

    /// Ends the leg `uuid` (`{"action":"hangup"}`).
    pub async fn hangup(&self, uuid: &str) -> Result<(), ClientError> {
        self.update_call(uuid, &CallUpdate::Hangup).await
    }

    /// Stops sending the leg's audio into the conversation.
    pub async fn mute(&self, uuid: &str) -> Result<(), ClientError> {
        self.update_call(uuid, &CallUpdate::Mute).await
    }

    /// Resumes sending the leg's audio.
    pub async fn unmute(&self, uuid: &str) -> Result<(), ClientError> {
        self.update_call(uuid, &CallUpdate::Unmute).await
    }

    /// Stops the leg hearing the conversation.
    pub async fn earmuff(&self, uuid: &str) -> Result<(), ClientError> {
        self.update_call(uuid, &CallUpdate::Earmuff).await
    }

    /// Lets the leg hear the conversation again.
    pub async fn unearmuff(&self, uuid: &str) -> Result<(), ClientError> {
        self.update_call(uuid, &CallUpdate::Unearmuff).await
    }

    /// Replaces the leg's NCCO with `ncco` (§10.29).
    pub async fn transfer_ncco(&self, uuid: &str, ncco: Ncco) -> Result<(), ClientError> {
        self.update_call(uuid, &CallUpdate::transfer(TransferDestination::ncco(ncco)))
            .await
    }

    /// Replaces the leg's NCCO with the one fetched from `url` (vector X7).
    pub async fn transfer_url(
        &self,
        uuid: &str,
        url: impl Into<String>,
    ) -> Result<(), ClientError> {
        self.update_call(uuid, &CallUpdate::transfer(TransferDestination::url(url)))
            .await
    }

    // --------------------------------------------------------------- talk, stream, dtmf

    /// `PUT /v1/calls/{uuid}/talk`: speaks into the call (the leg must be answered).
    pub async fn start_talk(
        &self,
        uuid: &str,
        talk: &TalkRequest,
    ) -> Result<ActionReply, ClientError> {
        if talk.text.is_empty() {
            return Err(ClientError::InvalidRequest("talk text is empty"));
        }
        check_level(talk.level)?;
        let path = format!("/v1/calls/{}/talk", check_uuid(uuid)?);
        self.send(
            Method::PUT,
            &path,
            None,
            Some(talk),
            Idempotency::RateLimitOnly,
        )
        .await?
        .action()
    }

    /// `DELETE /v1/calls/{uuid}/talk`: stops speaking.
    pub async fn stop_talk(&self, uuid: &str) -> Result<ActionReply, ClientError> {
        let path = format!("/v1/calls/{}/talk", check_uuid(uuid)?);
        self.send(
            Method::DELETE,
            &path,
            None,
            None::<&()>,
            Idempotency::Idempotent,
        )
        .await?
        .action()
    }

    /// `PUT /v1/calls/{uuid}/stream`: plays an audio file into the call.
    pub async fn start_stream(
        &self,
        uuid: &str,
        stream: &StreamRequest,
    ) -> Result<ActionReply, ClientError> {
        check_http_url(&stream.stream_url[0])?;
        check_level(stream.level)?;
        let path = format!("/v1/calls/{}/stream", check_uuid(uuid)?);
        self.send(
            Method::PUT,
            &path,
            None,
            Some(stream),
            Idempotency::RateLimitOnly,
        )
        .await?
        .action()
    }

    /// `DELETE /v1/calls/{uuid}/stream`: stops the audio file.
    pub async fn stop_stream(&self, uuid: &str) -> Result<ActionReply, ClientError> {
        let path = format!("/v1/calls/{}/stream", check_uuid(uuid)?);
        self.send(
            Method::DELETE,
            &path,
            None,
            None::<&()>,
            Idempotency::Idempotent,
        )
        .await?
        .action()
    }

    /// `PUT /v1/calls/{uuid}/dtmf`: sends `digits` (`0-9`, `*`, `#`, `p` = 500 ms pause).
    pub async fn send_dtmf(&self, uuid: &str, digits: &str) -> Result<ActionReply, ClientError> {
        let ok = !digits.is_empty()
            && digits.len() <= MAX_DTMF_DIGITS
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'*' | b'#' | b'p'));
        if !ok {
            return Err(ClientError::InvalidDigits);
        }
        let path = format!("/v1/calls/{}/dtmf", check_uuid(uuid)?);
        let body = DtmfRequest { digits };
        self.send(
            Method::PUT,
            &path,
            None,
            Some(&body),
            Idempotency::RateLimitOnly,
        )
        .await?
        .action()
    }

    // --------------------------------------------------------------- calls

    /// `POST /v1/calls`: creates an outbound call. Never retried (a repeat would ring twice).
    pub async fn create_call(&self, call: &CreateCall) -> Result<CreatedCall, ClientError> {
        call.validate()?;
        self.send(
            Method::POST,
            "/v1/calls",
            None,
            Some(call),
            Idempotency::Never,
        )
        .await?
        .json()
    }

    /// `GET /v1/calls/{uuid}`: one call record.
    pub async fn get_call(&self, uuid: &str) -> Result<CallRecord, ClientError> {
        let path = format!("/v1/calls/{}", check_uuid(uuid)?);
        self.send(
            Method::GET,
            &path,
            None,
            None::<&()>,
            Idempotency::Idempotent,
        )
        .await?
        .json()
    }

    /// `GET /v1/calls`: one page of call records matching `filter`.
    pub async fn list_calls(&self, filter: &ListCalls) -> Result<CallPage, ClientError> {
        if filter.page_size.is_some_and(|n| !(1..=100).contains(&n)) {
            return Err(ClientError::InvalidRequest("page_size must be 1 to 100"));
        }
        self.send(
            Method::GET,
            "/v1/calls",
            Some(filter),
            None::<&()>,
            Idempotency::Idempotent,
        )
        .await?
        .json()
    }

    // --------------------------------------------------------------- the request loop

    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: Option<&ListCalls>,
        body: Option<&B>,
        idem: Idempotency,
    ) -> Result<Reply, ClientError> {
        let inner = &*self.inner;
        let policy = inner.retry;
        let url = format!("{}{}", self.base, path);
        // Serialised once, so every attempt sends the same bytes.
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|_| ClientError::InvalidRequest("body does not serialise"))?;
        let mut retries = 0u32;
        let mut refreshed_token = false;
        loop {
            let attempts = retries + u32::from(refreshed_token) + 1;
            let token = inner.jwt.token()?;
            let mut req = inner
                .http
                .request(method.clone(), &url)
                .bearer_auth(&*token)
                .header(ACCEPT, "application/json");
            if let Some(q) = query {
                req = req.query(q);
            }
            if let Some(b) = &body {
                req = req.header(CONTENT_TYPE, "application/json").body(b.clone());
            }
            let outcome = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = retry_after(resp.headers());
                    read_body(resp)
                        .await
                        .map(|body| (status, retry_after, body))
                }
                Err(e) => Err(ReadError::Http(e)),
            };
            let (status, retry_after, body) = match outcome {
                Ok(ok) => ok,
                Err(ReadError::TooLarge) => return Err(ClientError::BodyTooLarge),
                Err(ReadError::Http(e)) => {
                    let err = if e.is_timeout() {
                        ClientError::Timeout {
                            timeout: inner.timeout,
                            attempts,
                        }
                    } else {
                        ClientError::Transport {
                            source: e.without_url(),
                            attempts,
                        }
                    };
                    if idem == Idempotency::Idempotent && retries < policy.max_retries {
                        let delay = policy.backoff(retries);
                        tracing::warn!(%method, path, error = %err, retry_in_ms = delay.as_millis() as u64, "Vonage API request failed; retrying");
                        tokio::time::sleep(delay).await;
                        retries += 1;
                        continue;
                    }
                    return Err(err);
                }
            };
            if status.is_success() {
                tracing::debug!(%method, path, status = status.as_u16(), attempts, "Vonage API request done");
                return Ok(Reply { status, body });
            }
            let problem = Problem::parse(&body);
            if status == StatusCode::UNAUTHORIZED && !refreshed_token {
                // Expired or refused token: sign a new one and try once more (§6.3).
                tracing::warn!(%method, path, instance = problem.instance.as_deref().unwrap_or("-"), "Vonage API answered 401; retrying once with a new token");
                inner.jwt.invalidate();
                refreshed_token = true;
                continue;
            }
            let retryable = match status.as_u16() {
                429 => idem != Idempotency::Never,
                500..=599 => idem == Idempotency::Idempotent,
                _ => false,
            };
            let too_long = retry_after.is_some_and(|d| d > policy.max_retry_after);
            if retryable && retries < policy.max_retries && !too_long {
                let delay = retry_after.unwrap_or_else(|| policy.backoff(retries));
                tracing::warn!(%method, path, status = status.as_u16(), instance = problem.instance.as_deref().unwrap_or("-"), retry_in_ms = delay.as_millis() as u64, "Vonage API request refused; retrying");
                tokio::time::sleep(delay).await;
                retries += 1;
                continue;
            }
            return Err(ClientError::Api {
                status: status.as_u16(),
                problem: Box::new(problem),
                attempts,
                retry_after,
            });
        }
    }
}

/// Why an answer body could not be read.
enum ReadError {
    Http(reqwest::Error),
    TooLarge,
}

/// Reads the answer body, at most [`MAX_RESPONSE_BODY`] bytes.
async fn read_body(mut resp: reqwest::Response) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Http)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BODY {
            // Dropping the response closes the connection.
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `Retry-After` in whole seconds (the HTTP-date form is ignored: backoff applies then).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().map(Duration::from_secs)
}

fn check_uuid(uuid: &str) -> Result<&str, ClientError> {
    let ok = !uuid.is_empty()
        && uuid.len() <= MAX_UUID_LEN
        && uuid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(uuid)
    } else {
        Err(ClientError::InvalidUuid { len: uuid.len() })
    }
}

fn check_level(level: Option<f64>) -> Result<(), ClientError> {
    match level {
        Some(l) if !(-1.0..=1.0).contains(&l) => {
            Err(ClientError::InvalidRequest("level must be -1 to 1"))
        }
        _ => Ok(()),
    }
}

fn check_http_url(url: &str) -> Result<(), ClientError> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(ClientError::InvalidRequest(
            "URLs must be http:// or https://",
        ))
    }
}

/// Normalises a phone number typed by a person (`+44 7700-900000`, `(415) 555 0100`) to the
/// bare E.164 digits the API wants (§7.4): 7 to 15 digits.
pub fn normalize_number(number: &str) -> Result<String, ClientError> {
    let digits: String = number
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = digits.strip_prefix('+').unwrap_or(&digits);
    if (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(digits.to_owned())
    } else {
        Err(ClientError::InvalidNumber {
            given: clip(number),
        })
    }
}

// ------------------------------------------------------------------------------------ bodies

/// The body of `PUT /v1/calls/{uuid}` (§6.1), tagged by `"action"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
#[non_exhaustive]
pub enum CallUpdate {
    /// End this leg.
    Hangup,
    /// Stop sending this leg's audio to the conversation.
    Mute,
    /// Resume sending it.
    Unmute,
    /// Stop this leg hearing the conversation.
    Earmuff,
    /// Let it hear again.
    Unearmuff,
    /// Replace the leg's NCCO.
    Transfer {
        /// The new NCCO, inline or by URL.
        destination: TransferDestination,
    },
}

impl CallUpdate {
    /// A transfer to `destination`.
    pub fn transfer(destination: TransferDestination) -> Self {
        Self::Transfer { destination }
    }
}

/// `destination` of a transfer: `{"type":"ncco"}` with exactly one of `ncco` and `url`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransferDestination {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ncco: Option<Ncco>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<[String; 1]>,
}

impl TransferDestination {
    /// An inline NCCO.
    pub fn ncco(ncco: Ncco) -> Self {
        Self {
            kind: "ncco",
            ncco: Some(ncco),
            url: None,
        }
    }

    /// An NCCO Vonage fetches from `url`.
    pub fn url(url: impl Into<String>) -> Self {
        Self {
            kind: "ncco",
            ncco: None,
            url: Some([url.into()]),
        }
    }
}

/// The body of `PUT /v1/calls/{uuid}/talk`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TalkRequest {
    /// What to say (SSML in `<speak>` allowed).
    pub text: String,
    /// Language, e.g. `en-GB` (Vonage's default `en-US`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Voice style number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub style: Option<u32>,
    /// Use the premium voice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub premium: Option<bool>,
    /// Repetitions (`loop`); 0 = until stopped.
    #[serde(rename = "loop", skip_serializing_if = "Option::is_none")]
    pub repeat: Option<u32>,
    /// Volume, −1 to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<f64>,
}

impl TalkRequest {
    /// Says `text` once with Vonage's defaults.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            language: None,
            style: None,
            premium: None,
            repeat: None,
            level: None,
        }
    }
}

/// The body of `PUT /v1/calls/{uuid}/stream`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamRequest {
    /// The audio file's URL (an array of one on the wire).
    pub stream_url: [String; 1],
    /// Repetitions (`loop`); 0 = forever.
    #[serde(rename = "loop", skip_serializing_if = "Option::is_none")]
    pub repeat: Option<u32>,
    /// Volume, −1 to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<f64>,
}

impl StreamRequest {
    /// Plays `url` once.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            stream_url: [url.into()],
            repeat: None,
            level: None,
        }
    }
}

#[derive(Serialize)]
struct DtmfRequest<'a> {
    digits: &'a str,
}

/// The answer to talk, stream and DTMF requests: `{"message":"Talk started","uuid":"…"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ActionReply {
    /// What happened.
    #[serde(default)]
    pub message: Option<String>,
    /// The leg.
    #[serde(default)]
    pub uuid: Option<String>,
}

/// How the new call gets its NCCO: inline, or fetched from an answer URL when answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum CallAnswer {
    /// `ncco`: run this NCCO.
    Ncco {
        /// The NCCO.
        ncco: Ncco,
    },
    /// `answer_url` (+ `answer_method`): fetch the NCCO when the callee answers.
    Url {
        /// The answer URL (an array of one on the wire).
        answer_url: [String; 1],
        /// `GET` (Vonage's default) or `POST`.
        #[serde(skip_serializing_if = "Option::is_none")]
        answer_method: Option<HttpMethod>,
    },
}

/// The body of `POST /v1/calls` (§6.1, vectors §10.30 and X9).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreateCall {
    /// Who to call (an array of one on the wire): phone, sip, websocket, app or vbc.
    #[serde(serialize_with = "one_endpoint")]
    pub to: Endpoint,
    /// The caller id: a phone endpoint with one of the account's Vonage numbers. Required
    /// unless [`random_from_number`](Self::random_from_number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Endpoint>,
    /// Use a random number of the account as caller id (excludes `from`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_from_number: Option<bool>,
    /// Where the NCCO comes from.
    #[serde(flatten)]
    pub answer: CallAnswer,
    /// Where status events go (an array of one on the wire).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_url: Option<[String; 1]>,
    /// `POST` (Vonage's default) or `GET`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_method: Option<HttpMethod>,
    /// Answering-machine detection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_detection: Option<MachineDetection>,
    /// Advanced answering-machine detection (overrides `machine_detection`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advanced_machine_detection: Option<AdvancedMachineDetection>,
    /// Hang up this many seconds after `answered` (`length_timer`).
    #[serde(rename = "length_timer", skip_serializing_if = "Option::is_none")]
    pub length_timer_secs: Option<u32>,
    /// Hang up this many seconds after `ringing` (`ringing_timer`), 1 to 120.
    #[serde(rename = "ringing_timer", skip_serializing_if = "Option::is_none")]
    pub ringing_timer_secs: Option<u32>,
}

fn one_endpoint<S: Serializer>(e: &Endpoint, s: S) -> Result<S::Ok, S::Error> {
    [e].serialize(s)
}

impl CreateCall {
    /// A call to `to` that runs `ncco` when answered. Set a caller id next
    /// ([`from_number`](Self::from_number) or [`random_from_number`](Self::random_from_number)).
    pub fn with_ncco(to: impl Into<Endpoint>, ncco: Ncco) -> Self {
        Self::new(to.into(), CallAnswer::Ncco { ncco })
    }

    /// A call to `to` whose NCCO is fetched from `answer_url` when answered.
    pub fn with_answer_url(to: impl Into<Endpoint>, answer_url: impl Into<String>) -> Self {
        Self::new(
            to.into(),
            CallAnswer::Url {
                answer_url: [answer_url.into()],
                answer_method: None,
            },
        )
    }

    fn new(to: Endpoint, answer: CallAnswer) -> Self {
        Self {
            to,
            from: None,
            random_from_number: None,
            answer,
            event_url: None,
            event_method: None,
            machine_detection: None,
            advanced_machine_detection: None,
            length_timer_secs: None,
            ringing_timer_secs: None,
        }
    }

    /// Calls from the Vonage number `number` (E.164 digits).
    pub fn from_number(mut self, number: impl Into<String>) -> Self {
        self.from = Some(Endpoint::phone(number));
        self.random_from_number = None;
        self
    }

    /// Calls from a random number of the account.
    pub fn random_from_number(mut self) -> Self {
        self.from = None;
        self.random_from_number = Some(true);
        self
    }

    /// Sends status events to `url`.
    pub fn event_url(mut self, url: impl Into<String>) -> Self {
        self.event_url = Some([url.into()]);
        self
    }

    /// Checks the documented constraints (§6.1) before anything is sent.
    pub fn validate(&self) -> Result<(), ClientError> {
        let bad = ClientError::InvalidRequest;
        match (&self.from, self.random_from_number) {
            (Some(_), Some(true)) => {
                return Err(bad("from and random_from_number exclude each other"));
            }
            (None, None | Some(false)) => {
                return Err(bad("set from (a Vonage number) or random_from_number"));
            }
            _ => {}
        }
        if let Some(from) = &self.from {
            let Endpoint::Phone(p) = from else {
                return Err(bad("from must be a phone endpoint"));
            };
            check_digits(&p.number)?;
        }
        if let Endpoint::Phone(p) = &self.to {
            check_digits(&p.number)?;
        }
        if let CallAnswer::Url { answer_url, .. } = &self.answer {
            check_http_url(&answer_url[0])?;
        }
        if let Some([u]) = &self.event_url {
            check_http_url(u)?;
        }
        if self
            .ringing_timer_secs
            .is_some_and(|t| !(1..=120).contains(&t))
        {
            return Err(bad("ringing_timer must be 1 to 120 s"));
        }
        if self
            .length_timer_secs
            .is_some_and(|t| !(1..=86_400).contains(&t))
        {
            return Err(bad("length_timer must be 1 to 86400 s"));
        }
        Ok(())
    }
}

fn check_digits(number: &str) -> Result<(), ClientError> {
    if (7..=15).contains(&number.len()) && number.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(ClientError::InvalidNumber {
            given: clip(number),
        })
    }
}

/// The answer to `POST /v1/calls` (`201`, §10.31).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CreatedCall {
    /// The new leg's uuid.
    pub uuid: String,
    /// Usually `started`.
    #[serde(default)]
    pub status: Option<CallStatus>,
    /// `outbound`.
    #[serde(default)]
    pub direction: Option<String>,
    /// The conversation (`CON-…`).
    #[serde(default)]
    pub conversation_uuid: Option<String>,
}

/// One side of a call record (`to`/`from`): `{"type":"phone","number":"…"}` and the like.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CallParty {
    /// `phone`, `sip`, `websocket`, `app`, `vbc`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Phone number (E.164 digits).
    #[serde(default, deserialize_with = "lenient_string")]
    pub number: Option<String>,
    /// SIP or websocket URI.
    #[serde(default)]
    pub uri: Option<String>,
    /// Client SDK user.
    #[serde(default)]
    pub user: Option<String>,
    /// VBC extension.
    #[serde(default, deserialize_with = "lenient_string")]
    pub extension: Option<String>,
}

/// A call record (`GET /v1/calls/{uuid}`, and each entry of a [`CallPage`]). Unknown fields are
/// ignored; numbers Vonage sends as strings (`rate`, `price`, `duration`) are kept as text,
/// whichever JSON type they arrive as.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CallRecord {
    /// The leg's uuid.
    pub uuid: String,
    /// The conversation.
    #[serde(default)]
    pub conversation_uuid: Option<String>,
    /// Callee.
    #[serde(default)]
    pub to: Option<CallParty>,
    /// Caller.
    #[serde(default)]
    pub from: Option<CallParty>,
    /// Leg status.
    #[serde(default)]
    pub status: Option<CallStatus>,
    /// `inbound` or `outbound`.
    #[serde(default)]
    pub direction: Option<String>,
    /// Price per minute (once completed).
    #[serde(default, deserialize_with = "lenient_string")]
    pub rate: Option<String>,
    /// Total price (once completed).
    #[serde(default, deserialize_with = "lenient_string")]
    pub price: Option<String>,
    /// Seconds (once completed).
    #[serde(default, deserialize_with = "lenient_string")]
    pub duration: Option<String>,
    /// ISO 8601 start.
    #[serde(default)]
    pub start_time: Option<String>,
    /// ISO 8601 end.
    #[serde(default)]
    pub end_time: Option<String>,
    /// Mobile network code.
    #[serde(default, deserialize_with = "lenient_string")]
    pub network: Option<String>,
}

/// A string, a number (kept as its text) or null.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// Sort order of [`ListCalls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first (Vonage's default).
    Asc,
    /// Newest first.
    Desc,
}

/// Query of `GET /v1/calls`. Every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListCalls {
    /// Only calls in this status.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "status_str")]
    pub status: Option<CallStatus>,
    /// From this time (ISO 8601, e.g. `2025-03-14T00:00:00Z`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_start: Option<String>,
    /// Until this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_end: Option<String>,
    /// Records per page, 1 to 100 (Vonage's default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
    /// Index of the first record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_index: Option<u32>,
    /// Sort order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
    /// Only legs of this conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_uuid: Option<String>,
}

fn status_str<S: Serializer>(s: &Option<CallStatus>, ser: S) -> Result<S::Ok, S::Error> {
    match s {
        Some(st) => ser.serialize_str(st.as_str()),
        None => ser.serialize_none(),
    }
}

/// One page of `GET /v1/calls` (HAL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPage {
    /// Records matching the filter, all pages.
    pub count: u64,
    /// Records per page.
    pub page_size: u32,
    /// Index of this page's first record.
    pub record_index: u32,
    /// This page's records.
    pub calls: Vec<CallRecord>,
    /// `_links.next.href`, present when more records exist.
    pub next_href: Option<String>,
}

impl CallPage {
    /// The query for the next page, or `None` on the last page.
    pub fn next_query(&self, filter: &ListCalls) -> Option<ListCalls> {
        self.next_href.as_ref()?;
        let mut next = filter.clone();
        let size = if self.page_size == 0 {
            10
        } else {
            self.page_size
        };
        next.record_index = Some(self.record_index.saturating_add(size));
        next.page_size = Some(size);
        Some(next)
    }
}

impl<'de> Deserialize<'de> for CallPage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Href {
            href: Option<String>,
        }
        #[derive(Deserialize, Default)]
        struct Links {
            next: Option<Href>,
        }
        #[derive(Deserialize, Default)]
        struct Embedded {
            #[serde(default)]
            calls: Vec<CallRecord>,
        }
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            count: u64,
            #[serde(default)]
            page_size: u32,
            #[serde(default)]
            record_index: u32,
            #[serde(rename = "_links", default)]
            links: Links,
            #[serde(rename = "_embedded", default)]
            embedded: Embedded,
        }
        let raw = Raw::deserialize(d)?;
        Ok(Self {
            count: raw.count,
            page_size: raw.page_size,
            record_index: raw.record_index,
            calls: raw.embedded.calls,
            next_href: raw.links.next.and_then(|h| h.href),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_bodies_are_parsed_defensively() {
        let p = Problem::parse(
            br#"{"type":"https://developer.nexmo.com/api-errors#bad-request","title":"Bad Request",
            "detail":"The request failed due to validation errors",
            "invalid_parameters":[{"name":"to[0].number","reason":"must match \"\\d{7,15}\""}],
            "instance":"bf0ca0bf927b3b52e3cb03217e1a1ddf"}"#,
        );
        assert_eq!(p.title.as_deref(), Some("Bad Request"));
        assert_eq!(p.invalid_parameters[0].name, "to[0].number");
        assert!(p.to_string().contains("instance bf0ca0bf"));
        assert_eq!(
            Problem::parse(br#"{"Error":"Bad Request"}"#)
                .title
                .as_deref(),
            Some("Bad Request")
        );
        assert_eq!(Problem::parse(b"").title, None);
        assert_eq!(
            Problem::parse(b"<html>oops</html>").detail.as_deref(),
            Some("<html>oops</html>")
        );
        let long = "é".repeat(1000);
        assert!(Problem::parse(long.as_bytes()).detail.unwrap().len() <= MAX_PROBLEM_FIELD + 3);
        assert_eq!(
            Problem::parse(br#"{"title":5,"invalid_parameters":[1,{"name":"x"}]}"#),
            Problem {
                invalid_parameters: vec![InvalidParameter {
                    name: "x".into(),
                    reason: String::new()
                }],
                ..Problem::default()
            }
        );
    }

    #[test]
    fn numbers_and_uuids_are_checked() {
        assert_eq!(normalize_number("+44 7700-900000").unwrap(), "447700900000");
        assert_eq!(normalize_number("(415) 555.0100").unwrap(), "4155550100");
        assert!(normalize_number("+123").is_err());
        assert!(normalize_number("4477009000001234").is_err());
        assert!(normalize_number("44770090000a").is_err());
        assert!(check_uuid("63f61863-4a51-4f6b-86e1-46edebcf9356").is_ok());
        assert!(check_uuid("../admin").is_err());
        assert!(check_uuid("").is_err());
        assert!(is_under("api-us-3.vonage.com", "vonage.com"));
        assert!(is_under("VONAGE.COM", "vonage.com"));
        assert!(!is_under("evilvonage.com", "vonage.com"));
        assert!(!is_under("vonage.com.evil.io", "vonage.com"));
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy::default();
        for n in 0..40 {
            let full = (p.base_delay * 2u32.saturating_pow(n.min(20))).min(p.max_delay);
            let d = p.backoff(n);
            assert!(d >= full / 2 && d <= full, "{n}: {d:?} vs {full:?}");
        }
        let spread: std::collections::HashSet<_> = (0..20).map(|_| p.backoff(3)).collect();
        assert!(spread.len() > 1, "jitter varies");
    }

    #[test]
    fn bodies_serialise_as_documented() {
        let v = serde_json::to_value(CallUpdate::Hangup).unwrap();
        assert_eq!(v, serde_json::json!({"action": "hangup"}));
        let v = serde_json::to_value(CallUpdate::transfer(TransferDestination::url(
            "https://gateway.example.com/ncco/handoff.json",
        )))
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"action":"transfer","destination":{"type":"ncco","url":["https://gateway.example.com/ncco/handoff.json"]}})
        );
        let c = CreateCall::with_answer_url(
            Endpoint::phone("14155550123"),
            "https://gateway.example.com/answer",
        )
        .from_number("447700900000");
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["to"][0]["number"], "14155550123");
        assert_eq!(v["answer_url"][0], "https://gateway.example.com/answer");
        assert!(v.get("ncco").is_none());
        assert!(c.validate().is_ok());
        assert!(c.clone().random_from_number().validate().is_ok());
        let mut both = c.clone();
        both.random_from_number = Some(true);
        assert!(both.validate().is_err());
    }
}
