//! The text half of Vonage's media WebSocket (§1.3, §1.6, §1.7): events Vonage sends
//! (`websocket:connected`, `websocket:dtmf`, `websocket:cleared`, `websocket:notify`) and the two
//! commands we send (`clear`, `notify`).
//!
//! Parsing borrows from the message (no allocation for the messages that arrive mid-call: DTMF,
//! cleared, notify), ignores fields it does not know, and turns anything malformed into a
//! [`TextError`]; it never panics. The `connected` message's custom headers are extracted
//! separately by [`connected_headers`], which allocates (once per call).
//!
//! Real-time: [`parse_text`] allocates nothing for well-formed mid-call messages; the encoders
//! write into a caller-provided buffer.

use std::fmt;
use std::io::Write;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::core::audio::SampleRate;
use crate::core::audio::TurnId;
use crate::core::dtmf::DtmfDigit;

/// Largest text message we parse. Vonage's are tens of bytes; `connected` carries at most 512
/// bytes of custom headers.
pub const MAX_TEXT_BYTES: usize = 8 * 1024;

/// A text message from Vonage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// `websocket:connected`, with the rate parsed from its `content-type`.
    Connected {
        /// The negotiated rate.
        rate: SampleRate,
    },
    /// `websocket:dtmf`, flat or nested form.
    Dtmf {
        /// The key.
        digit: DtmfDigit,
        /// Held for, ms, when reported.
        duration_ms: Option<u32>,
    },
    /// `websocket:cleared`: the playback buffer is empty.
    Cleared,
    /// `websocket:notify` for one of our marks.
    Notify(NotifyMark),
    /// `websocket:notify` whose payload is not one of ours.
    ForeignNotify,
    /// An event we do not know; ignore it.
    Unknown,
}

/// The payload voicegate puts in its `notify` commands:
/// `{"vg_turn":T,"vg_frame":F,"vg_mark":M}` (prefixed so no other payload is mistaken for ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyMark {
    /// Turn id.
    pub turn: u32,
    /// Frames of the turn sent before the mark.
    pub frame: u32,
    /// Agent mark id, 0 for none.
    pub mark: u32,
}

/// Why a text message was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TextError {
    /// Longer than [`MAX_TEXT_BYTES`].
    TooLong {
        /// Bytes received.
        len: usize,
    },
    /// Not JSON, or not an object, or a field of the wrong type.
    Malformed {
        /// Line of the first error.
        line: usize,
        /// Column of the first error.
        column: usize,
    },
    /// No `event` field.
    MissingEvent,
    /// `websocket:connected` without a usable `content-type`.
    BadContentType,
    /// `websocket:dtmf` whose digit is not a key.
    BadDigit,
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { len } => {
                write!(f, "text message of {len} bytes exceeds {MAX_TEXT_BYTES}")
            }
            Self::Malformed { line, column } => write!(f, "malformed JSON at {line}:{column}"),
            Self::MissingEvent => write!(f, "text message without an `event`"),
            Self::BadContentType => write!(f, "connected message without a supported content-type"),
            Self::BadDigit => write!(f, "dtmf message without a valid digit"),
        }
    }
}

impl std::error::Error for TextError {}

/// One text message's fields, over the string type `S`. [`parse_text`] reads `&str`, which
/// borrows from the message and allocates nothing; a JSON string with escapes cannot be
/// borrowed (`"audio\/l16;rate=16000"` is valid JSON for `audio/l16;rate=16000`, and some
/// encoders write it), so a message the borrowed parse refuses is read again with `String`.
/// (serde deserialises an `Option<Cow<str>>` into an owned `String` either way.)
#[derive(Deserialize)]
#[serde(bound(deserialize = "S: Deserialize<'de>"))]
struct RawEvent<S> {
    event: Option<S>,
    #[serde(rename = "content-type")]
    content_type: Option<S>,
    digit: Option<S>,
    duration: Option<f64>,
    dtmf: Option<RawDtmf<S>>,
    payload: Option<RawPayload>,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "S: Deserialize<'de>"))]
struct RawDtmf<S> {
    digit: Option<S>,
    duration: Option<f64>,
}

/// A notify payload: ours when it has our keys. Other keys are skipped without allocating (an
/// untagged enum would buffer the whole payload first).
#[derive(Deserialize)]
struct RawPayload {
    vg_turn: Option<u32>,
    vg_frame: Option<u32>,
    vg_mark: Option<u32>,
}

/// Parses one text message from Vonage.
pub fn parse_text(text: &str) -> Result<MediaEvent, TextError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(TextError::TooLong { len: text.len() });
    }
    match serde_json::from_str::<RawEvent<&str>>(text) {
        Ok(raw) => event_of(raw),
        // Escaped strings, or not JSON at all: the owned parse tells them apart.
        Err(_) => match serde_json::from_str::<RawEvent<String>>(text) {
            Ok(raw) => event_of(raw),
            Err(e) => Err(TextError::Malformed {
                line: e.line(),
                column: e.column(),
            }),
        },
    }
}

fn event_of<S: AsRef<str>>(raw: RawEvent<S>) -> Result<MediaEvent, TextError> {
    let event = raw.event.ok_or(TextError::MissingEvent)?;
    Ok(match event.as_ref() {
        "websocket:connected" => {
            let ct = raw.content_type.ok_or(TextError::BadContentType)?;
            let rate = SampleRate::from_content_type(ct.as_ref())
                .filter(|r| r.is_call_rate())
                .ok_or(TextError::BadContentType)?;
            MediaEvent::Connected { rate }
        }
        "websocket:dtmf" => {
            let (digit, duration) = match (raw.digit, raw.dtmf) {
                (Some(d), _) => (d, raw.duration),
                (None, Some(n)) => (n.digit.ok_or(TextError::BadDigit)?, n.duration),
                (None, None) => return Err(TextError::BadDigit),
            };
            let digit = DtmfDigit::parse(digit.as_ref()).ok_or(TextError::BadDigit)?;
            let duration_ms = duration
                .filter(|d| d.is_finite() && *d >= 0.0)
                .map(|d| d.min(f64::from(u32::MAX)) as u32);
            MediaEvent::Dtmf { digit, duration_ms }
        }
        "websocket:cleared" => MediaEvent::Cleared,
        "websocket:notify" => match raw.payload {
            Some(RawPayload {
                vg_turn: Some(turn),
                vg_frame: Some(frame),
                vg_mark,
            }) => MediaEvent::Notify(NotifyMark {
                turn,
                frame,
                mark: vg_mark.unwrap_or(0),
            }),
            _ => MediaEvent::ForeignNotify,
        },
        _ => MediaEvent::Unknown,
    })
}

/// The custom headers of a `websocket:connected` message: every key but `event` and
/// `content-type` (Vonage flattens the NCCO endpoint's `headers` into the message).
pub fn connected_headers(text: &str) -> Result<Map<String, Value>, TextError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(TextError::TooLong { len: text.len() });
    }
    let mut map: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| TextError::Malformed {
            line: e.line(),
            column: e.column(),
        })?;
    map.remove("event");
    map.remove("content-type");
    Ok(map)
}

/// The `clear` command.
pub const CLEAR_COMMAND: &str = r#"{"action":"clear"}"#;

/// Writes a `notify` command for one of our marks into `out`; returns its length.
/// A 96-byte buffer always suffices.
pub fn encode_notify(turn: TurnId, frame: u32, mark: u32, out: &mut [u8]) -> Option<usize> {
    let cap = out.len();
    let mut cursor = std::io::Cursor::new(out);
    write!(
        cursor,
        r#"{{"action":"notify","payload":{{"vg_turn":{},"vg_frame":{frame},"vg_mark":{mark}}}}}"#,
        turn.0
    )
    .ok()?;
    let n = cursor.position() as usize;
    (n <= cap).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_parse() {
        // §10.21
        let connected = r#"{"event":"websocket:connected","content-type":"audio/l16;rate=16000","call_uuid":"63f61863-4a51-4f6b-86e1-46edebcf9356","caller":"447700900123"}"#;
        assert_eq!(
            parse_text(connected),
            Ok(MediaEvent::Connected {
                rate: SampleRate::Hz16000
            })
        );
        let h = connected_headers(connected).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h["caller"], "447700900123");
        // §10.22 and X5
        assert_eq!(
            parse_text(r#"{"event": "websocket:dtmf", "digit": "5", "duration": 260}"#),
            Ok(MediaEvent::Dtmf {
                digit: DtmfDigit::parse("5").unwrap(),
                duration_ms: Some(260)
            })
        );
        assert_eq!(
            parse_text(r##"{"event":"websocket:dtmf","dtmf":{"digit":"#","duration":130}}"##),
            Ok(MediaEvent::Dtmf {
                digit: DtmfDigit::parse("#").unwrap(),
                duration_ms: Some(130)
            })
        );
        // §10.24, §10.26
        assert_eq!(
            parse_text(r#"{"event":"websocket:cleared"}"#),
            Ok(MediaEvent::Cleared)
        );
        assert_eq!(
            parse_text(
                r#"{"event":"websocket:notify","payload":{"mark":"utt-0007","frames":143}}"#
            ),
            Ok(MediaEvent::ForeignNotify)
        );
        assert_eq!(
            parse_text(
                r#"{"event":"websocket:notify","payload":{"vg_turn":3,"vg_frame":17,"vg_mark":0}}"#
            ),
            Ok(MediaEvent::Notify(NotifyMark {
                turn: 3,
                frame: 17,
                mark: 0
            }))
        );
        assert_eq!(
            parse_text(r#"{"event":"websocket:something-new","x":[1,2]}"#),
            Ok(MediaEvent::Unknown)
        );
    }

    #[test]
    fn escaped_strings_are_read_like_plain_ones() {
        // `\/` is JSON for `/`, `\u0063` for `c`: the borrowed parse cannot take them.
        assert_eq!(
            parse_text(
                r#"{"event":"websocket:connected","content-type":"audio\/l16;rate=16000","x":"a\"b"}"#
            ),
            Ok(MediaEvent::Connected {
                rate: SampleRate::Hz16000
            })
        );
        assert_eq!(
            parse_text(r#"{"event":"websocket:\u0063leared"}"#),
            Ok(MediaEvent::Cleared)
        );
        assert!(matches!(
            parse_text(r#"{"event":"websocket:\uZZZZ"}"#),
            Err(TextError::Malformed { .. })
        ));
    }

    #[test]
    fn bad_messages_are_errors() {
        assert!(matches!(parse_text("{"), Err(TextError::Malformed { .. })));
        assert!(matches!(
            parse_text("[1,2]"),
            Err(TextError::Malformed { .. })
        ));
        assert_eq!(parse_text("{}"), Err(TextError::MissingEvent));
        assert_eq!(
            parse_text(r#"{"event":"websocket:dtmf","digit":"55"}"#),
            Err(TextError::BadDigit)
        );
        assert_eq!(
            parse_text(r#"{"event":"websocket:dtmf"}"#),
            Err(TextError::BadDigit)
        );
        assert_eq!(
            parse_text(r#"{"event":"websocket:connected","content-type":"audio/l16;rate=48000"}"#),
            Err(TextError::BadContentType)
        );
        let huge = format!(r#"{{"event":"x","pad":"{}"}}"#, "a".repeat(MAX_TEXT_BYTES));
        assert!(matches!(parse_text(&huge), Err(TextError::TooLong { .. })));
        let deep = "[".repeat(100_000);
        assert!(parse_text(&deep).is_err());
    }

    #[test]
    fn notify_round_trips() {
        let mut buf = [0u8; 96];
        let n = encode_notify(TurnId(u32::MAX), u32::MAX, u32::MAX, &mut buf).unwrap();
        let cmd: Value = serde_json::from_slice(&buf[..n]).unwrap();
        assert_eq!(cmd["action"], "notify");
        let echoed = format!(
            r#"{{"event":"websocket:notify","payload":{}}}"#,
            cmd["payload"]
        );
        assert_eq!(
            parse_text(&echoed),
            Ok(MediaEvent::Notify(NotifyMark {
                turn: u32::MAX,
                frame: u32::MAX,
                mark: u32::MAX
            }))
        );
    }
}
