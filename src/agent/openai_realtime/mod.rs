//! A speech-to-speech adapter for the OpenAI Realtime API (`--agent openai-realtime`): one
//! WebSocket per call to `wss://api.openai.com/v1/realtime?model=…`, authenticated with
//! `OPENAI_API_KEY`.
//!
//! The session is configured for 24 kHz PCM both ways (the agent rate is 24 kHz, the core
//! resamples), with the model's own turn detection (`--openai-turn-detection server-vad` or
//! `semantic-vad`, every caller frame appended) or without it (`off`: only caller speech is
//! appended, and voicegate's end of turn commits the buffer and asks for a response). The
//! assistant's audio deltas go through the same backlog, rings and chunker as any agent's audio,
//! one turn per assistant item.
//!
//! On a barge-in (voicegate's own, which knows the bot's echo, or the model's
//! `input_audio_buffer.speech_started`) the item is truncated at exactly the audio the caller
//! heard, taken from the playout truth (`notify` marks reported as [`AgentEvent::Playout`]
//! plus the time since, capped at what was written), never from what was sent; then the response
//! is cancelled and its late deltas dropped. API errors and rate limits become log lines and
//! `voicegate_openai_*` metrics. The event schema is in [`schema`].
//!
//! Not real-time as a whole (it owns a socket); caller audio is base64-encoded into a recycled
//! arena.
//!
//! [`AgentEvent::Playout`]: super::AgentEvent::Playout

mod call;
pub mod schema;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::connect;
use super::{Agent, AgentError, AgentIo, BoxFuture, CallInfo};
use crate::core::{Forward, SampleRate};

/// The API's WebSocket endpoint.
pub const DEFAULT_URL: &str = "wss://api.openai.com/v1/realtime";
/// The default model.
pub const DEFAULT_MODEL: &str = "gpt-realtime";
/// The default voice.
pub const DEFAULT_VOICE: &str = "marin";

/// Who decides that the caller's turn is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TurnDetection {
    /// The model's voice activity detection; every caller frame is appended.
    #[default]
    ServerVad,
    /// The model's semantic turn detection; every caller frame is appended.
    SemanticVad,
    /// voicegate's end of turn: caller speech is appended, then committed with `response.create`.
    Off,
}

/// `--openai-*` flags (used with `--agent openai-realtime`).
#[derive(Debug, Clone, clap::Args)]
pub struct OpenAiArgs {
    /// OpenAI Realtime model.
    #[arg(id = "openai_model",
        long = "openai-model", env = "VOICEGATE_OPENAI_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    /// OpenAI Realtime voice.
    #[arg(id = "openai_voice",
        long = "openai-voice", env = "VOICEGATE_OPENAI_VOICE", default_value = DEFAULT_VOICE)]
    pub voice: String,
    /// System instructions for the model (default: the model's own).
    #[arg(
        id = "openai_instructions",
        long = "openai-instructions",
        env = "VOICEGATE_OPENAI_INSTRUCTIONS"
    )]
    pub instructions: Option<String>,
    /// Who ends the caller's turn: the model (server-vad, semantic-vad) or voicegate (off).
    #[arg(
        id = "openai_turn_detection",
        long = "openai-turn-detection",
        env = "VOICEGATE_OPENAI_TURN_DETECTION",
        value_enum,
        default_value = "server-vad"
    )]
    pub turn_detection: TurnDetection,
    /// Realtime WebSocket URL (wss://; ws:// only to this machine, for a local stand-in).
    #[arg(id = "openai_url",
        long = "openai-url", env = "VOICEGATE_OPENAI_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// API key. Prefer the environment variable, so the key is not in the process list.
    #[arg(
        id = "openai_api_key",
        long = "openai-api-key",
        env = "OPENAI_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
}

impl Default for OpenAiArgs {
    fn default() -> Self {
        Self {
            model: DEFAULT_MODEL.to_owned(),
            voice: DEFAULT_VOICE.to_owned(),
            instructions: None,
            turn_detection: TurnDetection::ServerVad,
            url: DEFAULT_URL.to_owned(),
            api_key: None,
        }
    }
}

/// An API key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(pub String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Why the `--openai-*` flags cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenAiConfigError {
    /// No key.
    #[error("--agent openai-realtime needs an API key: set OPENAI_API_KEY")]
    MissingKey,
    /// The URL is not `wss://`, or `ws://` to somewhere else than this machine.
    #[error(
        "--openai-url {0:?}: expected wss://…, or ws:// to this machine (the key must not travel \
         in clear text)"
    )]
    Url(String),
    /// A model or voice name with characters that do not belong in a URL or a name.
    #[error("--openai-{field} {value:?}: expected letters, digits, '.', '-' or '_'")]
    Name {
        /// `model` or `voice`.
        field: &'static str,
        /// What was given.
        value: String,
    },
}

/// The checked adapter configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiConfig {
    /// The URL with `?model=…`.
    pub url: String,
    /// The model.
    pub model: String,
    /// The voice.
    pub voice: String,
    /// Instructions, if any.
    pub instructions: Option<String>,
    /// Turn detection.
    pub turn_detection: TurnDetection,
    /// The key.
    pub api_key: ApiKey,
}

impl TryFrom<OpenAiArgs> for OpenAiConfig {
    type Error = OpenAiConfigError;

    fn try_from(a: OpenAiArgs) -> Result<Self, Self::Error> {
        let api_key = a
            .api_key
            .filter(|k| !k.trim().is_empty())
            .ok_or(OpenAiConfigError::MissingKey)?;
        let tls = connect::check_url(&a.url).map_err(|_| OpenAiConfigError::Url(a.url.clone()))?;
        if !tls && !connect::is_loopback(&a.url) {
            return Err(OpenAiConfigError::Url(a.url));
        }
        for (field, value) in [("model", &a.model), ("voice", &a.voice)] {
            let ok = !value.is_empty()
                && value.len() <= 64
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
            if !ok {
                return Err(OpenAiConfigError::Name {
                    field,
                    value: value.clone(),
                });
            }
        }
        let sep = if a.url.contains('?') { '&' } else { '?' };
        Ok(Self {
            url: format!("{}{sep}model={}", a.url, a.model),
            model: a.model,
            voice: a.voice,
            instructions: a.instructions.filter(|i| !i.trim().is_empty()),
            turn_detection: a.turn_detection,
            api_key: ApiKey(api_key),
        })
    }
}

/// Deadline for the API to accept the connection, unless set with
/// [`OpenAiRealtimeAgent::with_connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The OpenAI Realtime adapter.
#[derive(Debug, Clone)]
pub struct OpenAiRealtimeAgent {
    config: Arc<OpenAiConfig>,
    connect_timeout: Duration,
}

impl OpenAiRealtimeAgent {
    /// The adapter for `config`.
    pub fn new(config: OpenAiConfig) -> Self {
        Self {
            config: Arc::new(config),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Sets the connect deadline.
    pub fn with_connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }
}

impl Agent for OpenAiRealtimeAgent {
    /// Always 24 kHz: the API's PCM rate.
    fn agent_rate(&self, _call_rate: SampleRate) -> SampleRate {
        SampleRate::Hz24000
    }

    /// Every frame when the model detects turns; speech only when voicegate does.
    fn forward(&self) -> Forward {
        match self.config.turn_detection {
            TurnDetection::ServerVad | TurnDetection::SemanticVad => Forward::All,
            TurnDetection::Off => Forward::Speech,
        }
    }

    fn start(&self, call: CallInfo, io: AgentIo) -> BoxFuture<'static, Result<(), AgentError>> {
        // No span around the call's future: an instrumented future enters and leaves its
        // span on every poll, and tracing-subscriber's `EnvFilter` takes a lock (a read of its
        // `by_id` RwLock) on each enter and exit: a lock per wake-up of the per-frame path.
        // Per-call spans also pin heap pages (see `server::media::run`). Every event of the
        // adapter carries `call_id` as a field instead, as the media task's do.
        Box::pin(call::run(
            self.config.clone(),
            self.connect_timeout,
            call.call_id,
            io,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked() {
        let mut a = OpenAiArgs::default();
        assert_eq!(
            OpenAiConfig::try_from(a.clone()),
            Err(OpenAiConfigError::MissingKey)
        );
        a.api_key = Some("sk-test".into());
        let c = OpenAiConfig::try_from(a.clone()).unwrap();
        assert_eq!(c.url, "wss://api.openai.com/v1/realtime?model=gpt-realtime");
        assert!(!format!("{c:?}").contains("sk-test"));
        a.url = "ws://api.openai.com/v1/realtime".into();
        assert!(matches!(
            OpenAiConfig::try_from(a.clone()),
            Err(OpenAiConfigError::Url(_))
        ));
        a.url = "ws://127.0.0.1:1234/v1/realtime?x=1".into();
        assert_eq!(
            OpenAiConfig::try_from(a.clone()).unwrap().url,
            "ws://127.0.0.1:1234/v1/realtime?x=1&model=gpt-realtime"
        );
        a.model = "gpt realtime&x".into();
        assert!(matches!(
            OpenAiConfig::try_from(a),
            Err(OpenAiConfigError::Name { field: "model", .. })
        ));
    }
}
