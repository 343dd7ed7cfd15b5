//! The OpenAI Realtime API's events as this adapter speaks them: the generally available (GA)
//! interface over WebSocket (`wss://api.openai.com/v1/realtime?model=…`, no `OpenAI-Beta`
//! header).
//!
//! Client events written: `session.update` (GA shape: `session.type = "realtime"`, audio
//! formats under `session.audio.input|output.format` as `{"type":"audio/pcm","rate":24000}`,
//! the voice under `audio.output.voice`, turn detection under `audio.input.turn_detection`),
//! `input_audio_buffer.append` (base64 PCM16), `input_audio_buffer.commit`, `response.create`,
//! `conversation.item.truncate` (`item_id`, `content_index`, `audio_end_ms`) and
//! `response.cancel`.
//!
//! Server events read ([`ServerEvent`]): `response.output_audio.delta` and `.done` (the beta
//! interface's `response.audio.delta`/`.done` are accepted as aliases), `response.created`,
//! `response.done`, `input_audio_buffer.speech_started`, `error`, `rate_limits.updated`,
//! `session.created`/`session.updated`; everything else is [`ServerEvent::Other`] and ignored.
//!
//! Real-time: [`write_append`] allocates nothing (base64 straight into the caller's buffer);
//! the rest runs per response or per event, not per frame.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{OpenAiConfig, TurnDetection};

/// The only rate the Realtime API's PCM format has.
pub const REALTIME_RATE_HZ: u32 = 24_000;

/// The `session.update` sent first on every call.
pub fn session_update(c: &OpenAiConfig) -> String {
    let turn_detection = match c.turn_detection {
        TurnDetection::Off => Value::Null,
        TurnDetection::ServerVad => {
            json!({"type": "server_vad", "create_response": true, "interrupt_response": true})
        }
        TurnDetection::SemanticVad => {
            json!({"type": "semantic_vad", "create_response": true, "interrupt_response": true})
        }
    };
    let format = json!({"type": "audio/pcm", "rate": REALTIME_RATE_HZ});
    let mut session = json!({
        "type": "realtime",
        "model": c.model,
        "output_modalities": ["audio"],
        "audio": {
            "input": {"format": format, "turn_detection": turn_detection},
            "output": {"format": format, "voice": c.voice},
        },
    });
    if let Some(i) = &c.instructions {
        session["instructions"] = Value::String(i.clone());
    }
    json!({"type": "session.update", "session": session}).to_string()
}

/// Writes `{"type":"input_audio_buffer.append","audio":"<base64 of samples as L16>"}` into
/// `out`, using `scratch` for the bytes (at least `2 * samples.len()` long).
pub fn write_append(out: &mut BytesMut, samples: &[i16], scratch: &mut [u8]) -> std::fmt::Result {
    let bytes = &mut scratch[..samples.len() * 2];
    for (b, s) in bytes.chunks_exact_mut(2).zip(samples) {
        b.copy_from_slice(&s.to_le_bytes());
    }
    out.write_str(r#"{"type":"input_audio_buffer.append","audio":""#)?;
    let start = out.len();
    let n = base64::encoded_len(bytes.len(), true).ok_or(std::fmt::Error)?;
    out.resize(start + n, 0);
    STANDARD
        .encode_slice(&*bytes, &mut out[start..])
        .map_err(|_| std::fmt::Error)?;
    out.write_str(r#""}"#)
}

/// `input_audio_buffer.commit`: the caller's turn is over (turn detection off).
pub const COMMIT: &str = r#"{"type":"input_audio_buffer.commit"}"#;
/// `response.create`: answer now (turn detection off).
pub const RESPONSE_CREATE: &str = r#"{"type":"response.create"}"#;

/// `conversation.item.truncate` at `audio_end_ms` of the item's first content part.
pub fn truncate(item_id: &str, audio_end_ms: u64) -> String {
    json!({
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": audio_end_ms,
    })
    .to_string()
}

/// `response.cancel` for `response_id`.
pub fn cancel(response_id: &str) -> String {
    json!({"type": "response.cancel", "response_id": response_id}).to_string()
}

/// A server event this adapter acts on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum ServerEvent {
    /// A chunk of the assistant's audio (base64 PCM16 at 24 kHz).
    #[serde(rename = "response.output_audio.delta", alias = "response.audio.delta")]
    AudioDelta {
        /// The response it belongs to.
        response_id: String,
        /// The assistant message item.
        item_id: String,
        /// Base64 audio.
        delta: String,
    },
    /// The item's audio is complete.
    #[serde(rename = "response.output_audio.done", alias = "response.audio.done")]
    AudioDone {
        /// The item.
        item_id: String,
    },
    /// A response started.
    #[serde(rename = "response.created")]
    ResponseCreated {
        /// It.
        response: ResponseInfo,
    },
    /// A response ended (`completed`, `cancelled`, `failed`, `incomplete`).
    #[serde(rename = "response.done")]
    ResponseDone {
        /// It.
        response: ResponseInfo,
    },
    /// Server-side turn detection heard the caller start speaking.
    #[serde(rename = "input_audio_buffer.speech_started")]
    SpeechStarted {
        /// Where in the input buffer, ms.
        #[serde(default)]
        audio_start_ms: u64,
    },
    /// Something went wrong (usually not fatal to the session).
    #[serde(rename = "error")]
    Error {
        /// The details.
        error: ApiError,
    },
    /// The account's limits after a response.
    #[serde(rename = "rate_limits.updated")]
    RateLimits {
        /// One entry per limit.
        rate_limits: Vec<RateLimit>,
    },
    /// The session was created (first event) or updated (our `session.update` took).
    #[serde(rename = "session.created", alias = "session.updated")]
    Session,
    /// Any other event: transcripts, item bookkeeping, …
    #[serde(other)]
    Other,
}

/// The part of a response object the adapter reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ResponseInfo {
    /// `resp_…`.
    pub id: String,
    /// `in_progress`, `completed`, `cancelled`, `failed`, `incomplete`.
    #[serde(default)]
    pub status: Option<String>,
    /// Why, for `failed` and `incomplete`.
    #[serde(default)]
    pub status_details: Option<Value>,
}

/// An `error` event's `error` object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    /// E.g. `invalid_request_error`, `server_error`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// E.g. `response_cancel_not_active`.
    #[serde(default)]
    pub code: Option<String>,
    /// Human-readable.
    #[serde(default)]
    pub message: String,
}

/// One entry of `rate_limits.updated`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RateLimit {
    /// `requests` or `tokens`.
    pub name: String,
    /// The limit.
    #[serde(default)]
    pub limit: Option<f64>,
    /// What is left.
    #[serde(default)]
    pub remaining: Option<f64>,
    /// Seconds until it resets.
    #[serde(default)]
    pub reset_seconds: Option<f64>,
}

/// Parses one server event; `Err` for text that is not an event object at all.
pub fn parse(text: &str) -> Result<ServerEvent, serde_json::Error> {
    serde_json::from_str(text)
}

/// Decodes a base64 audio delta into `out` (cleared first; its capacity is reused).
pub fn decode_delta(delta: &str, out: &mut Vec<u8>) -> Result<(), base64::DecodeError> {
    out.clear();
    STANDARD.decode_vec(delta, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(td: TurnDetection) -> OpenAiConfig {
        OpenAiConfig {
            url: "wss://api.openai.com/v1/realtime?model=gpt-realtime".into(),
            model: "gpt-realtime".into(),
            voice: "marin".into(),
            instructions: Some("Be brief.".into()),
            turn_detection: td,
            api_key: super::super::ApiKey("k".into()),
        }
    }

    #[test]
    fn session_update_has_the_ga_shape() {
        let v: Value =
            serde_json::from_str(&session_update(&cfg(TurnDetection::ServerVad))).unwrap();
        assert_eq!(v["type"], "session.update");
        let s = &v["session"];
        assert_eq!(s["type"], "realtime");
        assert_eq!(s["instructions"], "Be brief.");
        assert_eq!(s["output_modalities"], json!(["audio"]));
        assert_eq!(
            s["audio"]["input"]["format"],
            json!({"type":"audio/pcm","rate":24000})
        );
        assert_eq!(
            s["audio"]["output"]["format"],
            json!({"type":"audio/pcm","rate":24000})
        );
        assert_eq!(s["audio"]["output"]["voice"], "marin");
        assert_eq!(s["audio"]["input"]["turn_detection"]["type"], "server_vad");
        let v: Value = serde_json::from_str(&session_update(&cfg(TurnDetection::Off))).unwrap();
        assert_eq!(
            v["session"]["audio"]["input"]["turn_detection"],
            Value::Null
        );
    }

    #[test]
    fn append_is_base64_of_little_endian_samples() {
        let mut out = BytesMut::new();
        let mut scratch = [0u8; 8];
        write_append(&mut out, &[1, -2], &mut scratch).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "input_audio_buffer.append");
        let mut bytes = Vec::new();
        decode_delta(v["audio"].as_str().unwrap(), &mut bytes).unwrap();
        assert_eq!(bytes, vec![1, 0, 0xfe, 0xff]);
    }

    #[test]
    fn server_events_parse_with_aliases_and_unknowns() {
        let ga = r#"{"type":"response.output_audio.delta","event_id":"e","response_id":"r","item_id":"i","output_index":0,"content_index":0,"delta":"AAA="}"#;
        let beta = ga.replace("response.output_audio.delta", "response.audio.delta");
        for t in [ga, beta.as_str()] {
            assert_eq!(
                parse(t).unwrap(),
                ServerEvent::AudioDelta {
                    response_id: "r".into(),
                    item_id: "i".into(),
                    delta: "AAA=".into()
                }
            );
        }
        assert_eq!(
            parse(r#"{"type":"response.output_audio_transcript.delta","delta":"hi"}"#).unwrap(),
            ServerEvent::Other
        );
        let e = parse(r#"{"type":"error","error":{"type":"invalid_request_error","code":"x","message":"m","param":null}}"#).unwrap();
        assert!(matches!(e, ServerEvent::Error { error } if error.code.as_deref() == Some("x")));
        let r = parse(r#"{"type":"rate_limits.updated","rate_limits":[{"name":"tokens","limit":100,"remaining":5,"reset_seconds":1.5}]}"#).unwrap();
        assert!(
            matches!(r, ServerEvent::RateLimits { rate_limits } if rate_limits[0].remaining == Some(5.0))
        );
        assert!(parse("[]").is_err());
        assert!(parse(r#"{"type":"response.output_audio.delta"}"#).is_err());
    }
}
