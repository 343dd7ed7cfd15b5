//! The agent bridge's wire format (docs/agent-protocol.md): the limits, the close codes, the
//! agent's messages as parsed ([`AgentMessage`], [`parse_text`], [`check_binary`]) and
//! voicegate's messages as written ([`write_event`], [`start_message`]).
//!
//! Parsing is strict about the fields of the types it knows and ignores fields it does not
//! (agents may be newer than us); a `type` it does not know is [`AgentMessage::Unknown`],
//! counted and ignored by the caller. Anything else wrong is a [`ProtocolError`], which ends the
//! agent connection with the error's [`close_code`](ProtocolError::close_code).
//!
//! Writing never allocates: events are fixed shapes of numbers and known words, written with
//! `write!` into the caller's buffer; the one agent-supplied string that comes back (a mark's
//! name) is stored JSON-encoded when it arrives.
//!
//! Real-time: [`write_event`] and [`check_binary`] allocate nothing; [`parse_text`] does (text
//! messages are control messages, not audio).

use std::fmt::{self, Write};
use std::time::Duration;

use serde_json::{Value, json};

use crate::agent::metrics::FailureLabel;
use crate::agent::{AgentEvent, CallInfo};
use crate::core::{Forward, TurnId};

/// The protocol version voicegate speaks, sent in `start`. Additions (new fields, new message
/// types) keep the version; a change that breaks an agent written against it bumps it.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest message accepted from the agent, text or binary (256 KiB: 8 s of audio at 16 kHz).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Longest mark name, bytes.
pub const MAX_MARK_NAME_BYTES: usize = 256;
/// Longest `log` text kept; longer text is cut.
pub const MAX_LOG_BYTES: usize = 2_048;

/// Close code: the call ended normally.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code: a message that breaks the protocol (malformed JSON, odd byte length).
pub const CLOSE_INVALID: u16 = 1007;
/// Close code: the agent stopped reading.
pub const CLOSE_POLICY: u16 = 1008;
/// Close code: a message over [`MAX_MESSAGE_BYTES`].
pub const CLOSE_TOO_BIG: u16 = 1009;

/// A message from the agent that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Not JSON, not an object with a string `type`, or a known type with a missing or
    /// mistyped field.
    #[error("malformed JSON message: {0}")]
    MalformedJson(String),
    /// Binary audio whose length is not a whole number of 16-bit samples.
    #[error("binary message of {len} bytes: L16 audio needs an even number of bytes")]
    OddLength {
        /// Bytes received.
        len: usize,
    },
    /// A message over [`MAX_MESSAGE_BYTES`].
    #[error("message over {max} bytes")]
    Oversized {
        /// The limit.
        max: usize,
    },
}

impl ProtocolError {
    /// The WebSocket close code the agent socket is closed with.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::MalformedJson(_) | Self::OddLength { .. } => CLOSE_INVALID,
            Self::Oversized { .. } => CLOSE_TOO_BIG,
        }
    }

    /// The metric label.
    pub fn label(&self) -> FailureLabel {
        match self {
            Self::MalformedJson(_) => FailureLabel::malformed_json,
            Self::OddLength { .. } => FailureLabel::odd_length,
            Self::Oversized { .. } => FailureLabel::oversized,
        }
    }
}

/// Severity of an agent's `log` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// `debug`.
    Debug,
    /// `info` (the default).
    Info,
    /// `warn`.
    Warn,
    /// `error`.
    Error,
}

/// A text message from the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentMessage {
    /// `{"type":"turn"}`: start a new turn; audio of an interrupted turn still arriving is
    /// dropped until the agent does this.
    Turn,
    /// `{"type":"end_turn"}`: the turn's audio is complete (its last partial frame is padded).
    EndTurn,
    /// `{"type":"interrupt"}`: stop playback now and discard everything sent so far.
    Interrupt,
    /// `{"type":"mark","name":"…"}`: report playout once everything sent so far was heard.
    Mark {
        /// The name, JSON-encoded (with its quotes), ready to be written back.
        name_json: String,
    },
    /// `{"type":"hangup"}`.
    Hangup,
    /// `{"type":"transfer","to":"447700900999"}`.
    Transfer {
        /// The number.
        to: String,
    },
    /// `{"type":"log","message":"…","level":"info"}`.
    Log {
        /// Severity.
        level: LogLevel,
        /// The text, cut to [`MAX_LOG_BYTES`].
        message: String,
    },
    /// A `type` this version does not know: counted and ignored.
    Unknown,
}

/// Parses one text message from the agent.
pub fn parse_text(text: &str) -> Result<AgentMessage, ProtocolError> {
    let bad = |why: &str| ProtocolError::MalformedJson(why.to_owned());
    let value: Value =
        serde_json::from_str(text).map_err(|e| ProtocolError::MalformedJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(bad("not a JSON object"));
    };
    let Some(kind) = obj.get("type").and_then(Value::as_str) else {
        return Err(bad("no string \"type\""));
    };
    let string = |field: &'static str| -> Result<Option<&str>, ProtocolError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ProtocolError::MalformedJson(format!(
                "{kind}: \"{field}\" must be a string"
            ))),
        }
    };
    Ok(match kind {
        "turn" => AgentMessage::Turn,
        "end_turn" => AgentMessage::EndTurn,
        "interrupt" => AgentMessage::Interrupt,
        "hangup" => AgentMessage::Hangup,
        "mark" => {
            let name = string("name")?.unwrap_or("");
            if name.len() > MAX_MARK_NAME_BYTES {
                return Err(bad("mark: \"name\" over 256 bytes"));
            }
            AgentMessage::Mark {
                name_json: Value::String(name.to_owned()).to_string(),
            }
        }
        "transfer" => {
            let to = string("to")?.ok_or_else(|| bad("transfer: \"to\" is required"))?;
            AgentMessage::Transfer { to: to.to_owned() }
        }
        "log" => {
            let message = string("message")?.ok_or_else(|| bad("log: \"message\" is required"))?;
            let level = match string("level")? {
                Some("debug") => LogLevel::Debug,
                Some("warn" | "warning") => LogLevel::Warn,
                Some("error") => LogLevel::Error,
                _ => LogLevel::Info,
            };
            AgentMessage::Log {
                level,
                message: crate::agent::wire::truncate(message, MAX_LOG_BYTES),
            }
        }
        _ => AgentMessage::Unknown,
    })
}

/// Checks one binary message from the agent: a whole number of L16 samples.
pub fn check_binary(bytes: &[u8]) -> Result<(), ProtocolError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::Oversized {
            max: MAX_MESSAGE_BYTES,
        });
    }
    if !bytes.len().is_multiple_of(2) {
        return Err(ProtocolError::OddLength { len: bytes.len() });
    }
    Ok(())
}

/// The `start` message: the first one on every agent socket.
pub fn start_message(call: &CallInfo, forward: Forward) -> String {
    let headers = Value::Object(call.headers.clone());
    json!({
        "type": "start",
        "version": PROTOCOL_VERSION,
        "call_id": call.call_id.as_str(),
        "conversation_uuid": call.conversation_uuid,
        "from": call.from,
        "to": call.to,
        "headers": headers,
        "call_rate": call.call_rate.hz(),
        "agent_rate": call.agent_rate.hz(),
        "encoding": "L16",
        "forward": match forward {
            Forward::Speech => "speech",
            Forward::All => "all",
        },
    })
    .to_string()
}

/// What a `playout` message says about a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Playout {
    /// The turn.
    pub turn: TurnId,
    /// How much of it the caller has heard.
    pub heard: Duration,
    /// Whether that is all of it.
    pub complete: bool,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// Writes the message for `ev` into `w`. `mark` is the report for [`AgentEvent::MarkReached`]:
/// the mark's JSON-encoded name and the playout it was reached at. Returns `None` for events this
/// protocol version does not carry (nothing is written).
///
/// One arm per event: a new [`AgentEvent`] variant is carried by adding its line here (and a
/// paragraph to docs/agent-protocol.md; agents ignore types they do not know).
pub fn write_event(
    w: &mut impl Write,
    ev: &AgentEvent,
    mark: Option<(&str, Playout)>,
) -> Option<fmt::Result> {
    Some(match *ev {
        AgentEvent::SpeechStarted { stream_pos } => {
            write!(
                w,
                r#"{{"type":"speech_started","stream_pos":{stream_pos}}}"#
            )
        }
        AgentEvent::SpeechEnded {
            duration,
            stream_pos,
        } => write!(
            w,
            r#"{{"type":"speech_ended","duration_ms":{},"stream_pos":{stream_pos}}}"#,
            ms(duration)
        ),
        AgentEvent::BargeIn(b) => write!(
            w,
            r#"{{"type":"barge_in","turn":{},"heard_ms":{}}}"#,
            b.turn.0,
            ms(b.heard)
        ),
        AgentEvent::Paused { turn, .. } => {
            write!(w, r#"{{"type":"paused","turn":{}}}"#, turn.0)
        }
        AgentEvent::FalseInterruption { turn, paused } => write!(
            w,
            r#"{{"type":"false_interruption","turn":{},"paused_ms":{}}}"#,
            turn.0,
            ms(paused)
        ),
        AgentEvent::Dtmf { digit, duration } => match duration {
            Some(d) => write!(
                w,
                r#"{{"type":"dtmf","digit":"{}","duration_ms":{}}}"#,
                digit.as_char(),
                ms(d)
            ),
            None => write!(w, r#"{{"type":"dtmf","digit":"{}"}}"#, digit.as_char()),
        },
        AgentEvent::Playout {
            turn,
            heard,
            complete,
        } => write_playout(
            w,
            Playout {
                turn,
                heard,
                complete,
            },
            None,
        ),
        AgentEvent::MarkReached { .. } => {
            let (name, p) = mark.unwrap_or((r#""""#, Playout::default()));
            write_playout(w, p, Some(name))
        }
        AgentEvent::Ended(reason) => {
            write!(w, r#"{{"type":"stop","reason":"{}"}}"#, reason.as_str())
        }
        // Events added to the core after this protocol version are not forwarded until they get
        // their line above.
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

fn write_playout(w: &mut impl Write, p: Playout, mark: Option<&str>) -> fmt::Result {
    write!(
        w,
        r#"{{"type":"playout","turn":{},"heard_ms":{},"complete":{}"#,
        p.turn.0,
        ms(p.heard),
        p.complete
    )?;
    if let Some(name) = mark {
        write!(w, r#","mark":{name}"#)?;
    }
    w.write_char('}')
}

/// Writes `{"type":"action_failed","action":…,"error":…}`.
pub fn write_action_failed(w: &mut impl Write, action: &str, error: &str) -> fmt::Result {
    write!(
        w,
        r#"{{"type":"action_failed","action":{},"error":{}}}"#,
        Value::String(action.to_owned()),
        Value::String(error.to_owned())
    )
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::agent::{CallId, EndReason};
    use crate::core::dtmf::DtmfDigit;
    use crate::core::{BargeIn, SampleRate};

    fn json(ev: AgentEvent, mark: Option<(&str, Playout)>) -> Value {
        let mut s = String::new();
        write_event(&mut s, &ev, mark).unwrap().unwrap();
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn every_event_is_valid_json_with_its_documented_fields() {
        let ms = Duration::from_millis;
        assert_eq!(
            json(AgentEvent::SpeechStarted { stream_pos: 42 }, None),
            json!({"type":"speech_started","stream_pos":42})
        );
        assert_eq!(
            json(
                AgentEvent::SpeechEnded {
                    duration: ms(1_240),
                    stream_pos: 99
                },
                None
            ),
            json!({"type":"speech_ended","duration_ms":1240,"stream_pos":99})
        );
        let t = Instant::now();
        let b = BargeIn {
            at: t,
            onset: t,
            turn: TurnId(3),
            heard: ms(820),
            caller_level_dbfs: -20.0,
            echo_dbfs: -40.0,
            noise_floor_dbfs: -60.0,
            speech: ms(80),
        };
        assert_eq!(
            json(AgentEvent::BargeIn(b), None),
            json!({"type":"barge_in","turn":3,"heard_ms":820})
        );
        let d = DtmfDigit::parse("#").unwrap();
        assert_eq!(
            json(
                AgentEvent::Dtmf {
                    digit: d,
                    duration: Some(ms(250))
                },
                None
            ),
            json!({"type":"dtmf","digit":"#","duration_ms":250})
        );
        assert_eq!(
            json(
                AgentEvent::Dtmf {
                    digit: d,
                    duration: None
                },
                None
            ),
            json!({"type":"dtmf","digit":"#"})
        );
        assert_eq!(
            json(
                AgentEvent::Playout {
                    turn: TurnId(2),
                    heard: ms(1_200),
                    complete: false
                },
                None
            ),
            json!({"type":"playout","turn":2,"heard_ms":1200,"complete":false})
        );
        let p = Playout {
            turn: TurnId(2),
            heard: ms(2_000),
            complete: true,
        };
        assert_eq!(
            json(
                AgentEvent::MarkReached { id: 1 },
                Some((r#""bye \"now\"""#, p))
            ),
            json!({"type":"playout","turn":2,"heard_ms":2000,"complete":true,"mark":"bye \"now\""})
        );
        assert_eq!(
            json(AgentEvent::Ended(EndReason::SocketClosed), None),
            json!({"type":"stop","reason":"socket_closed"})
        );
        let mut s = String::new();
        write_action_failed(&mut s, "hangup", "no \"REST\"").unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&s).unwrap(),
            json!({"type":"action_failed","action":"hangup","error":"no \"REST\""})
        );
    }

    #[test]
    fn agent_messages_parse_strictly_and_tolerate_additions() {
        assert_eq!(parse_text(r#"{"type":"turn"}"#), Ok(AgentMessage::Turn));
        assert_eq!(
            parse_text(r#"{"type":"end_turn","future":1}"#),
            Ok(AgentMessage::EndTurn)
        );
        assert_eq!(
            parse_text(r#"{"type":"interrupt"}"#),
            Ok(AgentMessage::Interrupt)
        );
        assert_eq!(parse_text(r#"{"type":"hangup"}"#), Ok(AgentMessage::Hangup));
        assert_eq!(
            parse_text(r#"{"type":"mark","name":"a\"b"}"#),
            Ok(AgentMessage::Mark {
                name_json: r#""a\"b""#.into()
            })
        );
        assert_eq!(
            parse_text(r#"{"type":"mark"}"#),
            Ok(AgentMessage::Mark {
                name_json: r#""""#.into()
            })
        );
        assert_eq!(
            parse_text(r#"{"type":"transfer","to":"+447700900999"}"#),
            Ok(AgentMessage::Transfer {
                to: "+447700900999".into()
            })
        );
        assert_eq!(
            parse_text(r#"{"type":"log","message":"hi","level":"warn"}"#),
            Ok(AgentMessage::Log {
                level: LogLevel::Warn,
                message: "hi".into()
            })
        );
        assert_eq!(
            parse_text(r#"{"type":"dance","speed":3}"#),
            Ok(AgentMessage::Unknown)
        );
        for bad in [
            "",
            "not json",
            "[1,2]",
            r#"{"kind":"turn"}"#,
            r#"{"type":7}"#,
            r#"{"type":"transfer"}"#,
            r#"{"type":"transfer","to":5}"#,
            r#"{"type":"log"}"#,
            r#"{"type":"mark","name":{}}"#,
        ] {
            let e = parse_text(bad).unwrap_err();
            assert_eq!(e.close_code(), CLOSE_INVALID, "{bad}: {e}");
        }
        let long = format!(r#"{{"type":"mark","name":"{}"}}"#, "x".repeat(257));
        assert!(parse_text(&long).is_err());
    }

    #[test]
    fn binary_audio_needs_whole_samples_within_the_limit() {
        assert!(check_binary(&[0; 640]).is_ok());
        assert!(check_binary(&[]).is_ok());
        assert_eq!(
            check_binary(&[0; 641]),
            Err(ProtocolError::OddLength { len: 641 })
        );
        let e = check_binary(&vec![0; MAX_MESSAGE_BYTES + 2]).unwrap_err();
        assert_eq!(e.close_code(), CLOSE_TOO_BIG);
    }

    #[test]
    fn start_names_the_call_and_the_rates() {
        let mut info = CallInfo::new(
            CallId::parse("abc").unwrap(),
            SampleRate::Hz16000,
            SampleRate::Hz24000,
        );
        info.from = Some("447700900123".into());
        info.headers.insert("x".into(), json!({"y": [1]}));
        let v: Value = serde_json::from_str(&start_message(&info, Forward::Speech)).unwrap();
        assert_eq!(v["type"], "start");
        assert_eq!(v["version"], PROTOCOL_VERSION);
        assert_eq!(v["call_id"], "abc");
        assert_eq!(v["from"], "447700900123");
        assert_eq!(v["to"], Value::Null);
        assert_eq!(v["headers"]["x"]["y"][0], 1);
        assert_eq!(v["call_rate"], 16_000);
        assert_eq!(v["agent_rate"], 24_000);
        assert_eq!(v["forward"], "speech");
    }
}
