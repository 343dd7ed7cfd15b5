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
//! # Real-time
//!
//! Two things run per frame of audio rather than per response, and both allocate nothing:
//!
//! - [`write_append`], caller audio out every 20–200 ms: base64 straight into the caller's
//!   buffer.
//! - [`parse`] of an audio delta and [`decode_delta`], the assistant's audio in every 20–100 ms
//!   for as long as the bot speaks. [`parse`] first reads only the event's `type` (borrowed),
//!   then an audio delta's `response_id`, `item_id` and `delta` as [`Cow`]s borrowed from the
//!   message text (no copy of the ~6.4 KB of base64 per 100 ms); [`decode_delta`] reuses the
//!   caller's buffer. Proven by tests/openai_alloc.rs. Not allocation-free: a delta whose
//!   strings contain JSON escapes (`\/` from some base64 encoders) is unescaped into an owned
//!   copy (9 allocations for 100 ms: serde_json's scratch buffer grows, then the copy), and a
//!   skipped field nested two or more levels deep (the API sends none in a delta) makes
//!   serde_json grow a nesting stack.
//!
//! Everything else runs per response or per event and allocates freely: other server events
//! are read through serde's internally tagged [`ServerEvent`] (which buffers the whole message
//! first, and owns its strings), and the client events other than `input_audio_buffer.append`
//! are built as [`Value`]s.

use std::borrow::Cow;
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

/// `type` of an audio delta (GA).
const AUDIO_DELTA: &str = "response.output_audio.delta";
/// `type` of an audio delta (beta alias).
const AUDIO_DELTA_BETA: &str = "response.audio.delta";

/// A server event this adapter acts on. An audio delta's strings borrow from the message text
/// when [`parse`] reads it (see the module docs); everything else is owned.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum ServerEvent<'a> {
    /// A chunk of the assistant's audio (base64 PCM16 at 24 kHz).
    #[serde(rename = "response.output_audio.delta", alias = "response.audio.delta")]
    AudioDelta {
        /// The response it belongs to.
        #[serde(borrow)]
        response_id: Cow<'a, str>,
        /// The assistant message item.
        #[serde(borrow)]
        item_id: Cow<'a, str>,
        /// Base64 audio.
        #[serde(borrow)]
        delta: Cow<'a, str>,
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

/// The first pass of [`parse`]: only the event's type, borrowed (every other field is skipped
/// without being buffered).
#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(borrow)]
    r#type: Cow<'a, str>,
}

/// An audio delta's fields, borrowed from the message text unless they hold escapes.
#[derive(Deserialize)]
struct AudioDeltaFields<'a> {
    #[serde(borrow)]
    response_id: Cow<'a, str>,
    #[serde(borrow)]
    item_id: Cow<'a, str>,
    #[serde(borrow)]
    delta: Cow<'a, str>,
}

/// Parses one server event; `Err` for text that is not an event object at all.
///
/// Audio deltas take an allocation-free path (two passes over the text with borrowed structs);
/// anything that path does not read, including every malformed delta, goes through
/// [`ServerEvent`]'s own `Deserialize`, so the events accepted and the errors are the same as
/// with `serde_json::from_str::<ServerEvent>` alone.
pub fn parse(text: &str) -> Result<ServerEvent<'_>, serde_json::Error> {
    if let Ok(Kind { r#type }) = serde_json::from_str::<Kind<'_>>(text)
        && matches!(&*r#type, AUDIO_DELTA | AUDIO_DELTA_BETA)
        && let Ok(d) = serde_json::from_str::<AudioDeltaFields<'_>>(text)
    {
        return Ok(ServerEvent::AudioDelta {
            response_id: d.response_id,
            item_id: d.item_id,
            delta: d.delta,
        });
    }
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

    const DELTA: &str = r#"{"type":"response.output_audio.delta","event_id":"e","response_id":"r","item_id":"i","output_index":0,"content_index":0,"delta":"AAD/fw=="}"#;

    #[test]
    fn audio_deltas_borrow_from_the_text_unless_escaped() {
        let Ok(ServerEvent::AudioDelta {
            response_id,
            item_id,
            delta,
        }) = parse(DELTA)
        else {
            panic!("not a delta")
        };
        assert!(matches!(
            (&response_id, &item_id, &delta),
            (
                Cow::Borrowed("r"),
                Cow::Borrowed("i"),
                Cow::Borrowed("AAD/fw==")
            )
        ));
        // Some encoders escape '/'; such a delta is unescaped into an owned copy.
        let escaped = DELTA.replace("AAD/fw==", r"AAD\/fw==");
        let Ok(ServerEvent::AudioDelta { delta, .. }) = parse(&escaped) else {
            panic!("not a delta")
        };
        assert!(matches!(delta, Cow::Owned(ref d) if d == "AAD/fw=="));
        let mut bytes = Vec::new();
        decode_delta(&delta, &mut bytes).unwrap();
        assert_eq!(bytes, [0, 0, 0xff, 0x7f]);
    }

    /// `parse` must read exactly what `ServerEvent`'s own `Deserialize` reads: the same events,
    /// the same errors.
    fn same_as_the_enum(text: &str) {
        let enum_only = serde_json::from_str::<ServerEvent<'_>>(text);
        match (parse(text), enum_only) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{text}"),
            (a, b) => panic!("{text}: parse {a:?}, the enum {b:?}"),
        }
    }

    #[test]
    fn parse_accepts_and_rejects_what_the_enum_does() {
        let beta = DELTA.replace("response.output_audio.delta", "response.audio.delta");
        for t in [
            DELTA,
            &beta,
            r#"{"response_id":"r","item_id":"i","delta":"AAA=","type":"response.audio.delta"}"#,
            r#"{"t\u0079pe":"response.output_audio.delta","response_id":"r","item_id":"i","delta":"AAA="}"#,
            r#"{"type":"response.output_audio.delta","response_id":"r","item_id":"i","delta":"AAA=","x":{"y":[1,{"z":null}]}}"#,
            // Malformed deltas.
            r#"{"type":"response.output_audio.delta"}"#,
            r#"{"type":"response.output_audio.delta","response_id":"r","item_id":"i"}"#,
            r#"{"type":"response.output_audio.delta","response_id":1,"item_id":"i","delta":"AAA="}"#,
            r#"{"type":"response.output_audio.delta","response_id":"r","item_id":"i","delta":null}"#,
            r#"{"type":"response.output_audio.delta","response_id":"r","item_id":"i","delta":"A","delta":"B"}"#,
            r#"{"type":"response.output_audio.delta","type":"error","response_id":"r","item_id":"i","delta":"A"}"#,
            r#"{"type":"response.output_audio.delta","response_id":"r","item_id":"i","delta":"AAA="} x"#,
            r#"{"type":"response.output_audio.delta","response_id":"r","item_id":"i","delta":"AAA="#,
            r#"{"type":"response.output_audio.delta","response_id":"r","item_id":"i","delta":"\ud800"}"#,
            // The sequence form serde accepts for internally tagged enums.
            r#"["response.output_audio.delta","r","i","AAA="]"#,
            r#"["response.output_audio.delta"]"#,
            // Not deltas, or not events.
            r#"{"type":"response.output_audio.done","item_id":"i"}"#,
            r#"{"type":"response.output_audio_transcript.delta","delta":"hi"}"#,
            r#"{"type":7}"#,
            r#"{"delta":"AAA="}"#,
            "[]",
            "",
            "null",
            "\"response.output_audio.delta\"",
        ] {
            same_as_the_enum(t);
        }
        // Every truncation and single-character corruption of a delta (bytes from the network
        // never panic, and read the same both ways).
        for end in 0..DELTA.len() {
            same_as_the_enum(&DELTA[..end]);
        }
        for at in 0..DELTA.len() {
            for c in [
                '"', '\\', '{', '}', '[', ',', ':', '0', 'x', ' ', '\u{7f}', '\n', 'é',
            ] {
                let mut t = String::with_capacity(DELTA.len() + 2);
                t.push_str(&DELTA[..at]);
                t.push(c);
                t.push_str(&DELTA[at + 1..]);
                same_as_the_enum(&t);
            }
        }
    }

    #[test]
    fn where_parse_is_more_lenient_than_the_enum() {
        // The fast path skips the fields it does not read without buffering them, so it does not
        // range-check their numbers or limit their nesting; the enum buffers and does both. The
        // API sends neither in a delta; such a delta is read, not dropped.
        let huge = DELTA.replace(r#""output_index":0"#, r#""output_index":1e400"#);
        let deep = DELTA.replace(
            r#""output_index":0"#,
            &format!(r#""output_index":{}{}"#, "[".repeat(200), "]".repeat(200)),
        );
        for t in [huge, deep] {
            assert!(serde_json::from_str::<ServerEvent<'_>>(&t).is_err());
            assert!(matches!(parse(&t), Ok(ServerEvent::AudioDelta { .. })));
        }
    }
}
