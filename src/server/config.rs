//! Server configuration: the `serve` flags and their environment variables ([`ServeArgs`],
//! names from INTERFACE.md), parsed once into a checked [`ServerConfig`].
//!
//! Not real-time (start-up only).

use std::net::SocketAddr;
use std::time::Duration;

use super::connections::HttpLimits;
use crate::agent::openai_realtime::{OpenAiArgs, OpenAiConfig, OpenAiConfigError};
use crate::core::{Forward, SampleRate, SessionConfig};
use crate::tools::pipeline_args::PipelineArgs;

/// What to answer when Vonage reports that our media socket closed unexpectedly
/// (`disconnected`, §1.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnDisconnect {
    /// Return the same `connect` NCCO, so Vonage reconnects the socket (at most a few times).
    Reconnect,
    /// Speak a short apology; the call then ends.
    Apology,
    /// Return nothing; the call ends.
    Nothing,
}

/// What the caller gets when the agent fails: a network agent that cannot be reached within
/// `--agent-connect-timeout-ms`, breaks its protocol, stops reading or disconnects mid-call, or
/// any agent that returns an error.
///
/// Either way voicegate closes the media socket (code 1011); Vonage then asks the event webhook
/// what to do (`disconnected`), and the answer is this choice. No REST credentials are needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AgentFailure {
    /// Answer `disconnected` with a `talk` apology; the call ends after it.
    #[value(alias = "apologize")]
    Apologise,
    /// Answer `disconnected` with no NCCO: the call ends at once.
    Hangup,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `voicegate serve` flags. Every flag can also be set through its environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (use port 0 for any free port).
    #[arg(long, env = "VOICEGATE_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Public base URL Vonage reaches this server at (https://… behind a tunnel). Default:
    /// derived per request from X-Forwarded-Proto / X-Forwarded-Host / Host.
    #[arg(long, env = "VOICEGATE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Media rate of calls, Hz: 8000, 16000 or 24000.
    #[arg(long, env = "VOICEGATE_RATE", default_value_t = 16_000)]
    pub rate: u32,
    /// Agent: `echo` (built in), `ws://…`/`wss://…` (agent bridge) or `openai-realtime`.
    #[arg(long, env = "VOICEGATE_AGENT", default_value = "echo")]
    pub agent: String,
    /// Rate the agent reads and writes, Hz (default: the agent's own choice).
    #[arg(long, env = "VOICEGATE_AGENT_RATE")]
    pub agent_rate: Option<u32>,
    /// What the caller gets when the agent fails (unreachable, protocol violation,
    /// disconnected): a spoken apology, or the call simply ends.
    #[arg(
        long,
        env = "VOICEGATE_AGENT_FAILURE",
        value_enum,
        default_value = "apologise"
    )]
    pub agent_failure: AgentFailure,
    /// Deadline for a network agent (ws://, wss://, openai-realtime) to accept its connection
    /// when a call starts, ms.
    #[arg(
        long,
        env = "VOICEGATE_AGENT_CONNECT_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub agent_connect_timeout_ms: u64,
    /// The OpenAI Realtime adapter's settings (`--agent openai-realtime`).
    #[command(flatten)]
    pub openai: OpenAiArgs,
    /// Text spoken by Vonage before the agent is connected (default: none).
    #[arg(long, env = "VOICEGATE_GREETING")]
    pub greeting: Option<String>,
    /// Language of the greeting, e.g. en-GB.
    #[arg(long, env = "VOICEGATE_GREETING_LANGUAGE")]
    pub greeting_language: Option<String>,
    /// Voice style of the greeting (a number from Vonage's voice list).
    #[arg(long, env = "VOICEGATE_GREETING_STYLE")]
    pub greeting_style: Option<u32>,
    /// Most concurrent calls; beyond it calls get a busy message and sockets a 503.
    #[arg(long, env = "VOICEGATE_MAX_CALLS", default_value_t = 1_000)]
    pub max_calls: usize,
    /// VAD, turn-taking, barge-in and pacing parameters (shared with `voicegate eval`).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// What to answer when our media socket closed unexpectedly.
    #[arg(
        long,
        env = "VOICEGATE_ON_DISCONNECT",
        value_enum,
        default_value = "apology"
    )]
    pub on_disconnect: OnDisconnect,
    /// Time Vonage has to send `websocket:connected` after the upgrade, ms.
    #[arg(long, env = "VOICEGATE_CONNECT_TIMEOUT_MS", default_value_t = 5_000)]
    pub connect_timeout_ms: u64,
    /// On SIGINT/SIGTERM, how long active calls may go on before they are closed, s (at most
    /// 86400).
    #[arg(long, env = "VOICEGATE_DRAIN_TIMEOUT_S", default_value_t = 30)]
    pub drain_timeout_s: u64,
    /// HTTP connections served at once (webhooks, health, metrics, socket handshakes; media
    /// sockets leave the count once upgraded). Beyond it a connection gets a 503 and is closed.
    #[arg(long, env = "VOICEGATE_MAX_CONNECTIONS", default_value_t = 1_024)]
    pub max_connections: usize,
    /// Deadline for a request's line and headers, and for an idle keep-alive connection's next
    /// request, s (1 to 300).
    #[arg(long, env = "VOICEGATE_HTTP_HEADER_TIMEOUT_S", default_value_t = 10)]
    pub http_header_timeout_s: u64,
    /// Deadline for reading a webhook body, s (1 to 300); a slower one gets 408.
    #[arg(long, env = "VOICEGATE_HTTP_BODY_TIMEOUT_S", default_value_t = 10)]
    pub http_body_timeout_s: u64,
    /// Vonage signature secret for signed webhooks.
    #[arg(long, env = "VONAGE_SIGNATURE_SECRET", hide_env_values = true)]
    pub signature_secret: Option<String>,
    /// Refuse to start without a signature secret.
    #[arg(long, env = "VOICEGATE_REQUIRE_SIGNED_WEBHOOKS")]
    pub require_signed_webhooks: bool,
    /// Oldest signed-webhook token accepted (`iat` age; 30 s of clock skew are added), s.
    #[arg(long, env = "VOICEGATE_WEBHOOK_MAX_AGE_S", default_value_t = 300)]
    pub webhook_max_age_s: u64,
    /// Vonage API key that signed webhooks must name (`api_key` claim); default: any.
    #[arg(long, env = "VOICEGATE_API_KEY")]
    pub api_key: Option<String>,
    /// Ask Vonage to sign the media socket's opening handshake (NCCO
    /// `"authorization":{"type":"vonage"}`) and refuse upgrades without a valid token. Needs
    /// --signature-secret.
    #[arg(long, env = "VOICEGATE_SIGNED_MEDIA_SOCKET")]
    pub signed_media_socket: bool,
    /// Lifetime of the per-call media token put in the websocket URI, s.
    #[arg(long, env = "VOICEGATE_MEDIA_TOKEN_TTL_S", default_value_t = 120)]
    pub media_token_ttl_s: u64,
    /// Key for the per-call media tokens (at least 16 bytes; share it between instances behind
    /// one load balancer). Default: a random key per process.
    #[arg(long, env = "VOICEGATE_MEDIA_TOKEN_KEY", hide_env_values = true)]
    pub media_token_key: Option<String>,
    /// A call whose media socket brings no audio for this long is closed, s.
    #[arg(long, env = "VOICEGATE_MEDIA_IDLE_TIMEOUT_S", default_value_t = 20)]
    pub media_idle_timeout_s: u64,
    /// Vonage application id (for the REST API: hangup, transfer, outbound calls).
    #[arg(long, env = "VONAGE_APPLICATION_ID")]
    pub application_id: Option<String>,
    /// Path of the Vonage application's private key (PEM).
    #[arg(long, env = "VONAGE_PRIVATE_KEY_PATH")]
    pub private_key: Option<std::path::PathBuf>,
    /// Vonage REST API base URL.
    #[arg(long, env = "VONAGE_API_URL", default_value = "https://api.nexmo.com")]
    pub api_url: String,
    /// Phone number the echo agent transfers the caller to when they press 0 (needs the REST
    /// API: --application-id and --private-key).
    #[arg(long, env = "VOICEGATE_TRANSFER_TO")]
    pub transfer_to: Option<String>,
    /// Log format.
    #[arg(long, env = "VOICEGATE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Redis URL for the state several instances share (`redis://[:password@]host:6379/0`):
    /// the webhook replay cache, one socket per call, call ends across instances. Needs
    /// --media-token-key (the same on every instance). Default: in-process state.
    #[arg(long, env = "VOICEGATE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
}

/// A configured media-token key. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct MediaTokenKeyConfig(pub String);

impl std::fmt::Debug for MediaTokenKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MediaTokenKeyConfig(<redacted>)")
    }
}

/// A configured Redis URL. Its `Debug` never shows it (it may hold a password).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(pub String);

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisUrl(<redacted>)")
    }
}

/// Which agent serves calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentKind {
    /// The built-in echo agent.
    Echo,
    /// The WebSocket agent bridge at this URL.
    Bridge(String),
    /// The OpenAI Realtime adapter.
    OpenAiRealtime,
}

impl AgentKind {
    /// A short name, carried in media tokens so the instance that serves a socket can tell a
    /// call answered with another agent (a mixed cluster during a roll-out): `echo`,
    /// `openai-realtime`, or `bridge:` and 16 hex digits of the URL's SHA-256.
    pub fn label(&self) -> String {
        match self {
            Self::Echo => "echo".to_owned(),
            Self::OpenAiRealtime => "openai-realtime".to_owned(),
            Self::Bridge(url) => {
                use sha2::Digest as _;
                let d = sha2::Sha256::digest(url.as_bytes());
                let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
                format!("bridge:{hex}")
            }
        }
    }
}

/// The greeting `talk` action's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// What is said.
    pub text: String,
    /// Language, e.g. `en-GB`.
    pub language: Option<String>,
    /// Vonage voice style.
    pub style: Option<u32>,
}

/// The checked server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Public base URL without a trailing slash (`https://host[/prefix]`), or derived per request.
    pub public_url: Option<String>,
    /// The call media rate put in the NCCO.
    pub rate: SampleRate,
    /// Which agent.
    pub agent: AgentKind,
    /// Agent rate override.
    pub agent_rate: Option<SampleRate>,
    /// What the caller gets when the agent fails.
    pub agent_failure: AgentFailure,
    /// Deadline for a network agent's connection.
    pub agent_connect_timeout: Duration,
    /// The OpenAI Realtime adapter's settings, checked when `--agent openai-realtime`.
    pub openai: Option<OpenAiConfig>,
    /// Greeting before the agent connects.
    pub greeting: Option<Greeting>,
    /// Concurrent call limit.
    pub max_calls: usize,
    /// Template for every call's session (rates are filled in per call).
    pub session: SessionConfig,
    /// Overrides the agent's [`Forward`] choice when set.
    pub forward: Option<Forward>,
    /// `disconnected` handling.
    pub on_disconnect: OnDisconnect,
    /// Deadline for `websocket:connected`.
    pub connect_timeout: Duration,
    /// Graceful-shutdown drain time.
    pub drain_timeout: Duration,
    /// HTTP deadlines and the connection cap.
    pub http: HttpLimits,
    /// Signature secret: with one, every webhook must be signed (`server::auth`).
    pub signature_secret: Option<String>,
    /// Age window of signed-webhook tokens (`iat`), before the clock skew.
    pub webhook_max_age: Duration,
    /// `api_key` claim required on signed webhooks.
    pub api_key: Option<String>,
    /// Whether the media socket upgrade must carry Vonage's signed JWT (§1.2).
    pub signed_media_socket: bool,
    /// Lifetime of a per-call media token.
    pub media_token_ttl: Duration,
    /// Key of the per-call media tokens; `None` is a random key per process.
    pub media_token_key: Option<MediaTokenKeyConfig>,
    /// A media socket without audio for this long is closed.
    pub media_idle_timeout: Duration,
    /// Vonage application id.
    pub application_id: Option<String>,
    /// Private key path.
    pub private_key: Option<std::path::PathBuf>,
    /// REST base URL.
    pub api_url: String,
    /// Where the echo agent transfers callers who press 0 (E.164 digits).
    pub transfer_to: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Events queued towards a slow agent before new ones are dropped.
    pub agent_event_queue: usize,
    /// Largest WebSocket message or frame accepted, bytes.
    pub max_message_bytes: usize,
    /// Most times one call's socket is reconnected with `--on-disconnect reconnect`.
    pub max_reconnects: u32,
    /// Redis for the state several instances share; `None` is in-process state.
    pub redis_url: Option<RedisUrl>,
}

/// A configuration the server refuses to start with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerConfigError {
    /// `--rate` is not 8000, 16000 or 24000.
    #[error("--rate {0}: Vonage streams calls at 8000, 16000 or 24000 Hz")]
    Rate(u32),
    /// `--agent-rate` is not a supported rate.
    #[error("--agent-rate {0}: use 8000, 16000, 24000 or 48000")]
    AgentRate(u32),
    /// `--public-url` is not an http(s) URL.
    #[error("--public-url {0:?}: expected http://host or https://host[/prefix]")]
    PublicUrl(String),
    /// `--agent` is not a known agent.
    #[error("--agent {0:?}: expected echo, ws://…, wss://… or openai-realtime")]
    Agent(String),
    /// `--openai-*` settings that cannot be used.
    #[error(transparent)]
    OpenAi(#[from] OpenAiConfigError),
    /// `--agent-rate` other than 24000 with `--agent openai-realtime`.
    #[error("--agent-rate {0}: the OpenAI Realtime API speaks 24000 Hz only")]
    OpenAiRate(u32),
    /// `--agent ws://…` with a URL that cannot be used.
    #[error("--agent: {0}")]
    AgentUrl(#[from] crate::agent::connect::ConnectError),
    /// `--max-calls 0`.
    #[error("--max-calls must be at least 1")]
    MaxCalls,
    /// `--max-connections 0`.
    #[error("--max-connections must be at least 1")]
    MaxConnections,
    /// `--require-signed-webhooks` without a secret.
    #[error("--require-signed-webhooks needs --signature-secret (VONAGE_SIGNATURE_SECRET)")]
    MissingSecret,
    /// `--transfer-to` is not a phone number.
    #[error("--transfer-to {0:?}: expected a phone number, 7 to 15 digits (E.164, + optional)")]
    TransferTo(String),
    /// The Vonage REST client cannot be set up (credentials, key file, API URL).
    #[error(transparent)]
    Rest(#[from] super::call_control::RestConfigError),
    /// `--signed-media-socket` without a secret.
    #[error("--signed-media-socket needs --signature-secret (VONAGE_SIGNATURE_SECRET)")]
    SignedSocketWithoutSecret,
    /// `--media-token-key` shorter than 16 bytes.
    #[error("--media-token-key must be at least 16 bytes")]
    MediaTokenKey,
    /// `--redis-url` without `--media-token-key`: tokens minted by one instance would not
    /// open sockets on another.
    #[error(
        "--redis-url needs --media-token-key (VOICEGATE_MEDIA_TOKEN_KEY), the same on every \
         instance: a socket must be accepted by an instance that did not answer the call"
    )]
    RedisWithoutMediaTokenKey,
    /// `--redis-url` is empty.
    #[error("--redis-url is empty")]
    EmptyRedisUrl,
    /// `--signature-secret` given but empty.
    #[error("--signature-secret is empty")]
    EmptySecret,
    /// `--redis-url` cannot be used.
    #[error(transparent)]
    Redis(#[from] super::shared::RedisConfigError),
    /// A session parameter out of range.
    #[error("{0}")]
    Session(#[from] crate::core::ConfigError),
}

impl TryFrom<ServeArgs> for ServerConfig {
    type Error = ServerConfigError;

    fn try_from(a: ServeArgs) -> Result<Self, Self::Error> {
        let rate = SampleRate::try_from(a.rate)
            .ok()
            .filter(|r| r.is_call_rate())
            .ok_or(ServerConfigError::Rate(a.rate))?;
        let agent_rate = a
            .agent_rate
            .map(|hz| SampleRate::try_from(hz).map_err(|_| ServerConfigError::AgentRate(hz)))
            .transpose()?;
        let public_url = a.public_url.map(|u| normalise_public_url(&u)).transpose()?;
        let agent = match a.agent.as_str() {
            "echo" => AgentKind::Echo,
            "openai-realtime" => AgentKind::OpenAiRealtime,
            u if u.starts_with("ws://") || u.starts_with("wss://") => {
                crate::agent::connect::check_url(u)?;
                AgentKind::Bridge(u.to_owned())
            }
            other => return Err(ServerConfigError::Agent(other.to_owned())),
        };
        let openai = match agent {
            AgentKind::OpenAiRealtime => {
                if let Some(r) = agent_rate.filter(|r| *r != SampleRate::Hz24000) {
                    return Err(ServerConfigError::OpenAiRate(r.hz()));
                }
                Some(OpenAiConfig::try_from(a.openai)?)
            }
            _ => None,
        };
        if a.max_calls == 0 {
            return Err(ServerConfigError::MaxCalls);
        }
        if a.max_connections == 0 {
            return Err(ServerConfigError::MaxConnections);
        }
        if a.signature_secret.as_deref() == Some("") {
            return Err(ServerConfigError::EmptySecret);
        }
        if a.require_signed_webhooks && a.signature_secret.is_none() {
            return Err(ServerConfigError::MissingSecret);
        }
        let transfer_to = a
            .transfer_to
            .filter(|t| !t.trim().is_empty())
            .map(|t| {
                crate::vonage::client::normalize_number(&t)
                    .map_err(|_| ServerConfigError::TransferTo(t))
            })
            .transpose()?;
        if a.signed_media_socket && a.signature_secret.is_none() {
            return Err(ServerConfigError::SignedSocketWithoutSecret);
        }
        let media_token_key = match a.media_token_key {
            Some(k) if k.len() < 16 => return Err(ServerConfigError::MediaTokenKey),
            Some(k) => Some(MediaTokenKeyConfig(k)),
            None => None,
        };
        let redis_url = match a.redis_url {
            Some(u) if u.trim().is_empty() => return Err(ServerConfigError::EmptyRedisUrl),
            Some(_) if media_token_key.is_none() => {
                return Err(ServerConfigError::RedisWithoutMediaTokenKey);
            }
            Some(u) => Some(RedisUrl(u.trim().to_owned())),
            None => None,
        };
        let mut session = SessionConfig::new(rate, agent_rate.unwrap_or(rate));
        a.pipeline.apply(&mut session);
        session.validate()?;
        Ok(Self {
            listen: a.listen,
            public_url,
            rate,
            agent,
            agent_rate,
            agent_failure: a.agent_failure,
            agent_connect_timeout: Duration::from_millis(
                a.agent_connect_timeout_ms.clamp(100, 120_000),
            ),
            openai,
            greeting: a
                .greeting
                .filter(|t| !t.trim().is_empty())
                .map(|text| Greeting {
                    text,
                    language: a.greeting_language,
                    style: a.greeting_style,
                }),
            max_calls: a.max_calls,
            session,
            forward: a.pipeline.forward_all.then_some(Forward::All),
            on_disconnect: a.on_disconnect,
            connect_timeout: Duration::from_millis(a.connect_timeout_ms.clamp(100, 60_000)),
            // Clamped: a deadline of u64::MAX seconds would overflow `Instant + Duration`.
            drain_timeout: Duration::from_secs(a.drain_timeout_s.min(86_400)),
            http: HttpLimits {
                header_timeout: Duration::from_secs(a.http_header_timeout_s.clamp(1, 300)),
                body_timeout: Duration::from_secs(a.http_body_timeout_s.clamp(1, 300)),
                max_connections: a.max_connections,
            },
            signature_secret: a.signature_secret,
            webhook_max_age: Duration::from_secs(a.webhook_max_age_s.clamp(1, 86_400)),
            api_key: a.api_key.filter(|k| !k.is_empty()),
            signed_media_socket: a.signed_media_socket,
            media_token_ttl: Duration::from_secs(a.media_token_ttl_s.clamp(1, 86_400)),
            media_token_key,
            media_idle_timeout: Duration::from_secs(a.media_idle_timeout_s.clamp(1, 3_600)),
            application_id: a.application_id,
            private_key: a.private_key,
            api_url: a.api_url,
            transfer_to,
            log_format: a.log_format,
            agent_event_queue: 256,
            // Audio frames are at most 960 bytes; text messages at most MAX_TEXT_BYTES.
            max_message_bytes: crate::vonage::media_protocol::MAX_TEXT_BYTES,
            max_reconnects: 3,
            redis_url,
        })
    }
}

impl ServerConfig {
    /// The defaults: what `voicegate serve` with no flags and no environment gives.
    pub fn new() -> Self {
        // The defaults are valid by construction (checked by the test below).
        Self::try_from(ServeArgs::default()).expect("default configuration is valid")
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl Default for ServeArgs {
    /// The documented defaults, as clap would give them with an empty environment.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            public_url: None,
            rate: 16_000,
            agent: "echo".to_owned(),
            agent_rate: None,
            agent_failure: AgentFailure::Apologise,
            agent_connect_timeout_ms: 5_000,
            openai: OpenAiArgs::default(),
            greeting: None,
            greeting_language: None,
            greeting_style: None,
            max_calls: 1_000,
            pipeline: PipelineArgs::default(),
            on_disconnect: OnDisconnect::Apology,
            connect_timeout_ms: 5_000,
            drain_timeout_s: 30,
            max_connections: 1_024,
            http_header_timeout_s: 10,
            http_body_timeout_s: 10,
            signature_secret: None,
            require_signed_webhooks: false,
            webhook_max_age_s: 300,
            api_key: None,
            signed_media_socket: false,
            media_token_ttl_s: 120,
            media_token_key: None,
            media_idle_timeout_s: 20,
            application_id: None,
            private_key: None,
            api_url: "https://api.nexmo.com".to_owned(),
            transfer_to: None,
            log_format: LogFormat::Text,
            redis_url: None,
        }
    }
}

/// Checks a public base URL and drops a trailing slash.
fn normalise_public_url(u: &str) -> Result<String, ServerConfigError> {
    let bad = || ServerConfigError::PublicUrl(u.to_owned());
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .ok_or_else(bad)?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || !host.bytes().all(is_host_byte) || rest.contains(['?', '#', ' ']) {
        return Err(bad());
    }
    Ok(u.trim_end_matches('/').to_owned())
}

/// Bytes allowed in a host[:port] taken from configuration or request headers.
pub(crate) fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let c = ServerConfig::new();
        assert_eq!(c.rate, SampleRate::Hz16000);
        assert_eq!(c.agent, AgentKind::Echo);
        assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(c.max_calls, 1_000);
        assert_eq!(
            normalise_public_url("https://a.example.com/").unwrap(),
            "https://a.example.com"
        );
        assert!(normalise_public_url("ftp://x").is_err());
        assert!(normalise_public_url("https://").is_err());
        assert!(normalise_public_url("https://a b").is_err());
        assert_eq!(c.redis_url, None);
        assert_eq!(AgentKind::Echo.label(), "echo");
        assert!(
            AgentKind::Bridge("ws://a/agent".into())
                .label()
                .starts_with("bridge:")
        );
    }

    #[test]
    fn redis_needs_a_shared_media_key() {
        let mut a = ServeArgs {
            redis_url: Some("redis://127.0.0.1:6379".into()),
            ..ServeArgs::default()
        };
        assert!(matches!(
            ServerConfig::try_from(a.clone()),
            Err(ServerConfigError::RedisWithoutMediaTokenKey)
        ));
        a.media_token_key = Some("0123456789abcdef".into());
        let c = ServerConfig::try_from(a.clone()).unwrap();
        assert_eq!(c.redis_url.unwrap().0, "redis://127.0.0.1:6379");
        a.redis_url = Some(" ".into());
        assert!(matches!(
            ServerConfig::try_from(a),
            Err(ServerConfigError::EmptyRedisUrl)
        ));
    }
}
