//! Answer and event webhook bodies (vonage-protocol.md §3, §4), parsed into types.
//!
//! Owns [`AnswerWebhook`] (from a `GET` query or a `POST` JSON body), [`parse_event`] and the
//! event types it returns, and [`WebhookError`]. Does not own HTTP, percent-decoding the query,
//! signature verification, or deciding what to answer.
//!
//! Lenient where Vonage is loose: unknown keys are kept in `extra`, unknown statuses land in
//! [`CallStatus::Other`], numbers may arrive as JSON numbers or strings (§4.3), and nearly every
//! field is optional (§4.1). Strict at the edge: bodies over [`MAX_WEBHOOK_BODY`] are refused
//! before parsing, JSON nesting is capped by serde_json's recursion limit (128), and no input
//! panics.
//!
//! Not real-time: runs once per webhook request.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// Largest webhook body (or total query length) accepted, in bytes. Vonage's bodies are well
/// under 2 KiB; websocket `headers` are capped at 512 bytes (§1.1).
pub const MAX_WEBHOOK_BODY: usize = 64 * 1024;

/// Longest `uuid` accepted in an answer webhook. A UUID is 36 characters (32 without dashes);
/// the cap keeps the value bounded before it goes into URIs and logs.
const MAX_UUID_LEN: usize = 64;

/// Prefix of the answer-webhook keys that carry SIP INVITE headers (§3.2).
const SIP_HEADER_PREFIX: &str = "SipHeader_";

/// Why a webhook body was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The body (or query) is larger than [`MAX_WEBHOOK_BODY`].
    #[error("webhook body is {size} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Size received, in bytes (for a query: the bytes of keys and values counted).
        size: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// The body is empty or only whitespace.
    #[error("webhook body is empty")]
    Empty,
    /// The body is not JSON, or nests deeper than serde_json's recursion limit (128).
    #[error("webhook body is not valid JSON: {source}")]
    InvalidJson {
        /// What serde_json reported, with line and column.
        source: serde_json::Error,
    },
    /// The body is valid JSON but not an object.
    #[error("webhook body is a JSON {found}, expected an object")]
    NotAnObject {
        /// JSON type found: `array`, `string`, `number`, `boolean` or `null`.
        found: &'static str,
    },
    /// A field the answer webhook cannot do without is absent (or `null`).
    #[error("answer webhook has no `{field}`")]
    MissingField {
        /// The wire name of the field.
        field: &'static str,
    },
    /// A field of the answer webhook has the wrong type or an unusable value.
    #[error("answer webhook field `{field}` is invalid: {reason}")]
    InvalidField {
        /// The wire name of the field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An event was recognised by its keys but a field has an unusable type.
    #[error("{kind} event has an unexpected shape: {source}")]
    InvalidEvent {
        /// Which kind the body was recognised as (see [`WebhookEvent::kind`]).
        kind: &'static str,
        /// What serde_json reported.
        source: serde_json::Error,
    },
}

/// The answer webhook (§3): Vonage asking for the NCCO of a newly answered leg.
///
/// Required: `uuid` and `conversation_uuid`. `uuid` is the leg voicegate controls: it names the
/// media socket route and every REST call (§3.5, §6.1), so a request without one cannot be served;
/// it is also checked to be hex digits and `-` (§3.2) because it goes into URIs.
/// `conversation_uuid` is documented as always present, and it is the only way to tie a later
/// error event, which carries no leg `uuid` (§4.4), back to this call.
///
/// Optional: `from` is absent for Client SDK callers (`from_user` instead) and may be odd for
/// withheld numbers; `to` is present in every documented example but may be a user name or URI
/// (§7.4), and a call must not be dropped for want of it; the rest depend on the endpoint type.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerWebhook {
    /// This leg's UUID (opaque; with or without dashes).
    pub uuid: String,
    /// The conversation, `CON-` + UUID.
    pub conversation_uuid: String,
    /// What was called: our number for inbound PSTN, or a user name or URI.
    pub to: Option<String>,
    /// The caller: E.164 digits without `+`, or a SIP URI; absent for Client SDK users.
    pub from: Option<String>,
    /// Client SDK user name, present instead of `from` for app-originated calls.
    pub from_user: Option<String>,
    /// Regional REST base URL for controlling this call (§6).
    pub region_url: Option<String>,
    /// Calling endpoint type: `phone`, `sip`, `websocket`, `app` or `vbc`.
    pub endpoint_type: Option<String>,
    /// Client SDK `callServer` data. From a query string it is parsed as JSON text when it is
    /// valid JSON and kept as a JSON string otherwise (the `GET` encoding is unconfirmed).
    pub custom_data: Option<Value>,
    /// SIP headers from `SipHeader_*` keys, keyed without the prefix (`X-UserId`,
    /// `User-to-User`). Only string values; anything else stays in `extra`.
    pub sip_headers: BTreeMap<String, String>,
    /// Every other key, unmodified (for example `reason` and `original_request` on a fallback
    /// request, §3.4).
    pub extra: Map<String, Value>,
}

impl AnswerWebhook {
    /// Parses a `POST` body (JSON object).
    pub fn from_json(body: &[u8]) -> Result<Self, WebhookError> {
        Self::from_object(parse_object(body)?)
    }

    /// Parses a `GET` query given as already percent-decoded `(key, value)` pairs, for example a
    /// `HashMap<String, String>`. A repeated key keeps its last value.
    pub fn from_query_pairs<I, K, V>(pairs: I) -> Result<Self, WebhookError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut object = Map::new();
        let mut size = 0_usize;
        for (key, value) in pairs {
            let (key, value) = (key.into(), value.into());
            size = size.saturating_add(key.len() + value.len());
            // Keep counting past the limit so the error reports the whole size, but stop storing.
            if size <= MAX_WEBHOOK_BODY {
                object.insert(key, Value::String(value));
            }
        }
        if size > MAX_WEBHOOK_BODY {
            return Err(WebhookError::TooLarge {
                size,
                max: MAX_WEBHOOK_BODY,
            });
        }
        if let Some(Value::String(text)) = object.get("custom_data")
            && let Ok(data) = serde_json::from_str::<Value>(text)
        {
            object.insert("custom_data".to_owned(), data);
        }
        Self::from_object(object)
    }

    /// The shared half of both forms: every value is JSON here, strings for a query.
    fn from_object(mut object: Map<String, Value>) -> Result<Self, WebhookError> {
        let uuid = take_string(&mut object, "uuid")?
            .ok_or(WebhookError::MissingField { field: "uuid" })?;
        check_uuid(&uuid)?;
        let conversation_uuid =
            take_string(&mut object, "conversation_uuid")?.ok_or(WebhookError::MissingField {
                field: "conversation_uuid",
            })?;
        let to = take_string(&mut object, "to")?;
        let from = take_string(&mut object, "from")?;
        let from_user = take_string(&mut object, "from_user")?;
        let region_url = take_string(&mut object, "region_url")?;
        let endpoint_type = take_string(&mut object, "endpoint_type")?;
        let custom_data = object.remove("custom_data").filter(|data| !data.is_null());

        let mut sip_headers = BTreeMap::new();
        let mut extra = Map::new();
        for (key, value) in object {
            match (key.strip_prefix(SIP_HEADER_PREFIX), value) {
                (Some(name), Value::String(text)) => {
                    sip_headers.insert(name.to_owned(), text);
                }
                (_, value) => {
                    extra.insert(key, value);
                }
            }
        }
        Ok(Self {
            uuid,
            conversation_uuid,
            to,
            from,
            from_user,
            region_url,
            endpoint_type,
            custom_data,
            sip_headers,
            extra,
        })
    }
}

/// Removes `field`; absent and `null` are `None`, a non-string is an error.
fn take_string(
    object: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, WebhookError> {
    match object.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(WebhookError::InvalidField {
            field,
            reason: "expected a string",
        }),
    }
}

/// A leg UUID ends up in the media socket URI and REST paths, so only `[0-9a-fA-F-]` (§3.2).
fn check_uuid(uuid: &str) -> Result<(), WebhookError> {
    let reason = if uuid.is_empty() {
        "empty"
    } else if uuid.len() > MAX_UUID_LEN {
        "longer than 64 characters"
    } else if !uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        "not only hex digits and '-'"
    } else {
        return Ok(());
    };
    Err(WebhookError::InvalidField {
        field: "uuid",
        reason,
    })
}

/// A body posted to the event URL, by kind (§4).
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookEvent {
    /// A leg changed status (§4.2): the body has a string `status`.
    Status(CallEvent),
    /// An `input` action finished (§4.4): the body has `dtmf` or `speech`.
    Input(InputEvent),
    /// A recording finished (§4.4): the body has `recording_url`.
    Record(RecordEvent),
    /// A leg moved between conversations (§4.4): the body has `conversation_uuid_from` or
    /// `conversation_uuid_to`.
    Transfer(TransferEvent),
    /// Vonage reports an error such as a bad NCCO (§4.4): a string `reason`, no `status`, and no
    /// `original_request` (which marks a fallback retry of another request instead, §3.4).
    Error(ErrorEvent),
    /// Any other JSON object, kept whole. NCCO `notify` callbacks land here: their body is the
    /// app's own payload with nothing added by Vonage (§2.7), so only the URL they were sent to
    /// can tell them apart.
    Unknown(Value),
}

impl WebhookEvent {
    /// Short name of the kind, for logs and metric labels: `status`, `input`, `record`,
    /// `transfer`, `error` or `unknown`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Status(_) => "status",
            Self::Input(_) => "input",
            Self::Record(_) => "record",
            Self::Transfer(_) => "transfer",
            Self::Error(_) => "error",
            Self::Unknown(_) => "unknown",
        }
    }

    /// Classifies by distinctive keys, most specific first. `transfer` and `input` also appear
    /// as status values in the Java SDK, so a transfer or input body might carry a `status` too
    /// (unconfirmed); its specific fields decide.
    fn from_object(object: Map<String, Value>) -> Result<Self, WebhookError> {
        let has = |key: &str| object.contains_key(key);
        let is_string = |key: &str| object.get(key).is_some_and(Value::is_string);
        let is_transfer = has("conversation_uuid_from") || has("conversation_uuid_to");
        let is_input = has("dtmf") || has("speech");
        let is_record = has("recording_url");
        let is_status = is_string("status");
        let is_error = is_string("reason") && !has("original_request");

        let value = Value::Object(object);
        if is_transfer {
            typed("transfer", value).map(Self::Transfer)
        } else if is_input {
            typed("input", value).map(Self::Input)
        } else if is_record {
            typed("record", value).map(Self::Record)
        } else if is_status {
            typed("status", value).map(Self::Status)
        } else if is_error {
            typed("error", value).map(Self::Error)
        } else {
            Ok(Self::Unknown(value))
        }
    }
}

/// Converts a classified body into its type; `kind` names it in the error.
fn typed<T: DeserializeOwned>(kind: &'static str, value: Value) -> Result<T, WebhookError> {
    serde_json::from_value(value).map_err(|source| WebhookError::InvalidEvent { kind, source })
}

/// Parses an event-URL body (`POST`, JSON). Never panics: any bytes give an event or an error.
///
/// Bodies over [`MAX_WEBHOOK_BODY`], empty bodies, invalid JSON (including nesting deeper than
/// serde_json's limit of 128) and non-objects are errors. An object is classified as described on
/// [`WebhookEvent`]; a recognised kind whose fields have unusable types is
/// [`WebhookError::InvalidEvent`], anything unrecognised is [`WebhookEvent::Unknown`].
pub fn parse_event(body: &[u8]) -> Result<WebhookEvent, WebhookError> {
    WebhookEvent::from_object(parse_object(body)?)
}

/// Bytes to a JSON object, with the size check first and serde_json's recursion limit in force.
fn parse_object(body: &[u8]) -> Result<Map<String, Value>, WebhookError> {
    if body.len() > MAX_WEBHOOK_BODY {
        return Err(WebhookError::TooLarge {
            size: body.len(),
            max: MAX_WEBHOOK_BODY,
        });
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(WebhookError::Empty);
    }
    let found = match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => return Ok(object),
        Ok(Value::Array(_)) => "array",
        Ok(Value::String(_)) => "string",
        Ok(Value::Number(_)) => "number",
        Ok(Value::Bool(_)) => "boolean",
        Ok(Value::Null) => "null",
        Err(source) => return Err(WebhookError::InvalidJson { source }),
    };
    Err(WebhookError::NotAnObject { found })
}

/// A call-status event (§4.1, §4.2). Every field but `status` is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CallEvent {
    /// The leg's new status.
    pub status: CallStatus,
    /// Leg UUID. `human`/`machine` events carry `call_uuid` instead; use [`CallEvent::call_id`].
    pub uuid: Option<String>,
    /// Leg UUID as sent by `human`/`machine` events (§9.12).
    pub call_uuid: Option<String>,
    /// The conversation, `CON-` + UUID.
    pub conversation_uuid: Option<String>,
    /// Caller: E.164 digits, SIP URI or user name.
    pub from: Option<String>,
    /// Callee: E.164 digits, SIP URI, user name, or the `wss://` URI of a websocket leg.
    pub to: Option<String>,
    /// `inbound` or `outbound`; not on every status.
    pub direction: Option<String>,
    /// ISO 8601 UTC with milliseconds, as sent.
    pub timestamp: Option<String>,
    /// Reason for `unanswered`, `rejected` or `failed` (e.g. `unavailable`, `cannot_route`);
    /// an open set.
    pub detail: Option<String>,
    /// The websocket endpoint's `headers`, echoed on that leg's events (§1.8).
    pub headers: Option<Map<String, Value>>,
    /// When the leg was answered (`answered`, `completed`), as sent.
    pub start_time: Option<String>,
    /// When the leg ended (`completed`), as sent.
    pub end_time: Option<String>,
    /// Call length (`completed`; whole seconds on the wire, string or number).
    #[serde(default, deserialize_with = "lenient::seconds")]
    pub duration: Option<Duration>,
    /// Price per minute in EUR (string or number on the wire).
    #[serde(default, deserialize_with = "lenient::decimal")]
    pub rate: Option<f64>,
    /// Total price in EUR (string or number on the wire).
    #[serde(default, deserialize_with = "lenient::decimal")]
    pub price: Option<f64>,
    /// Network code, e.g. `GB-FIXED` or an MCC-MNC like `23420`.
    pub network: Option<String>,
    /// SIP response code on `failed` (string or number on the wire).
    #[serde(default, deserialize_with = "lenient::sip_code")]
    pub sip_code: Option<u16>,
    /// `platform` or `user` (`completed`).
    pub disconnected_by: Option<String>,
    /// `beep_start` or `beep_timeout` on `machine` with advanced detection.
    pub sub_state: Option<String>,
    /// Every other key, unmodified.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CallEvent {
    /// The leg UUID: `uuid`, or `call_uuid` for `human`/`machine` events.
    pub fn call_id(&self) -> Option<&str> {
        self.uuid.as_deref().or(self.call_uuid.as_deref())
    }
}

/// A leg status (§4.2). Unknown strings are kept in [`CallStatus::Other`], never rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallStatus {
    /// `started`: leg created.
    Started,
    /// `ringing`: destination reachable and ringing.
    Ringing,
    /// `answered`: leg answered.
    Answered,
    /// `busy`: destination busy.
    Busy,
    /// `cancelled`: outbound leg cancelled before answer.
    Cancelled,
    /// `unanswered`: unreachable, not answered or declined; also a websocket that could not
    /// connect.
    Unanswered,
    /// `disconnected`: the app closed (or lost) the websocket.
    Disconnected,
    /// `rejected`: rejected by Vonage before connecting.
    Rejected,
    /// `failed`: could not be connected; also a websocket connect failure.
    Failed,
    /// `human`: machine detection found a person.
    Human,
    /// `machine`: machine detection found a machine.
    Machine,
    /// `timeout`: ringing outlasted `ringing_timer`.
    Timeout,
    /// `completed`: leg over; the summary event.
    Completed,
    /// `transfer`: listed in the Java SDK's enum only.
    Transfer,
    /// `input`: listed in the Java SDK's enum only.
    Input,
    /// Any other status string, as sent.
    Other(String),
}

impl CallStatus {
    /// The status as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Started => "started",
            Self::Ringing => "ringing",
            Self::Answered => "answered",
            Self::Busy => "busy",
            Self::Cancelled => "cancelled",
            Self::Unanswered => "unanswered",
            Self::Disconnected => "disconnected",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Human => "human",
            Self::Machine => "machine",
            Self::Timeout => "timeout",
            Self::Completed => "completed",
            Self::Transfer => "transfer",
            Self::Input => "input",
            Self::Other(status) => status,
        }
    }

    /// Whether the leg is over: `completed`, or a leg that never connected (`busy`, `cancelled`,
    /// `unanswered`, `rejected`, `failed`, `timeout`). Treat these as final whatever order they
    /// arrive in (§4.6).
    ///
    /// `disconnected` is not terminal: it reports the socket closing, the response may continue
    /// the call with a fallback NCCO (§1.8), and whether a `completed` follows for that leg is
    /// unconfirmed. Whoever owns the media session should end it on `disconnected` as well.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Completed
                | Self::Busy
                | Self::Cancelled
                | Self::Unanswered
                | Self::Rejected
                | Self::Failed
                | Self::Timeout
        )
    }
}

impl From<&str> for CallStatus {
    fn from(status: &str) -> Self {
        match status {
            "started" => Self::Started,
            "ringing" => Self::Ringing,
            "answered" => Self::Answered,
            "busy" => Self::Busy,
            "cancelled" => Self::Cancelled,
            "unanswered" => Self::Unanswered,
            "disconnected" => Self::Disconnected,
            "rejected" => Self::Rejected,
            "failed" => Self::Failed,
            "human" => Self::Human,
            "machine" => Self::Machine,
            "timeout" => Self::Timeout,
            "completed" => Self::Completed,
            "transfer" => Self::Transfer,
            "input" => Self::Input,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CallStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let status = String::deserialize(deserializer)?;
        Ok(Self::from(status.as_str()))
    }
}

/// Result of an `input` action (§4.4). The response to it should be a new NCCO.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InputEvent {
    /// Leg UUID.
    pub uuid: Option<String>,
    /// The conversation.
    pub conversation_uuid: Option<String>,
    /// Caller.
    pub from: Option<String>,
    /// Callee.
    pub to: Option<String>,
    /// ISO 8601 UTC, as sent.
    pub timestamp: Option<String>,
    /// Collected digits.
    pub dtmf: Option<DtmfResult>,
    /// Speech recognition result.
    pub speech: Option<SpeechResult>,
    /// Every other key, unmodified.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `dtmf` of an input result.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DtmfResult {
    /// Digits pressed; `null` or absent when none were.
    pub digits: Option<String>,
    /// Whether collection ended on the timeout (absent or `null` reads as `false`).
    #[serde(default, deserialize_with = "lenient::null_as_default")]
    pub timed_out: bool,
}

/// `speech` of an input result.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SpeechResult {
    /// Why recognition stopped: `end_on_silence_timeout`, `max_duration` or `start_timeout`.
    pub timeout_reason: Option<String>,
    /// Hypotheses, best first (absent or `null` reads as empty).
    #[serde(default, deserialize_with = "lenient::null_as_default")]
    pub results: Vec<SpeechHypothesis>,
    /// Status such as `Speech was not enabled` or `Speech overridden by DTMF`.
    pub error: Option<String>,
    /// Recording of the utterance when `saveAudio` was set.
    pub recording_url: Option<String>,
}

/// One speech recognition hypothesis.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SpeechHypothesis {
    /// Recognised text.
    #[serde(default, deserialize_with = "lenient::null_as_default")]
    pub text: String,
    /// Confidence from 0 to 1 (a string in the docs, a number in SDK tests).
    #[serde(default, deserialize_with = "lenient::decimal")]
    pub confidence: Option<f64>,
}

/// A finished recording (§4.4). Downloading `recording_url` needs an application JWT.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RecordEvent {
    /// Where to download the file.
    pub recording_url: String,
    /// Recording UUID (not the file id in the URL).
    pub recording_uuid: Option<String>,
    /// Leg UUID, if sent (not in the documented field list).
    pub uuid: Option<String>,
    /// The conversation.
    pub conversation_uuid: Option<String>,
    /// Recording start, as sent.
    pub start_time: Option<String>,
    /// Recording end, as sent.
    pub end_time: Option<String>,
    /// File size in bytes (string or number on the wire).
    #[serde(default, deserialize_with = "lenient::integer")]
    pub size: Option<u64>,
    /// ISO 8601 UTC, as sent.
    pub timestamp: Option<String>,
    /// Every other key, unmodified.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A leg moved between conversations (§4.4).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TransferEvent {
    /// Leg UUID.
    pub uuid: Option<String>,
    /// Conversation the leg left.
    pub conversation_uuid_from: Option<String>,
    /// Conversation the leg joined.
    pub conversation_uuid_to: Option<String>,
    /// ISO 8601 UTC, as sent.
    pub timestamp: Option<String>,
    /// Every other key, unmodified.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An error reported by Vonage, e.g. an NCCO it could not parse (§4.4).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ErrorEvent {
    /// What went wrong, e.g. `Syntax error in NCCO. Invalid value type or action.`
    pub reason: String,
    /// The conversation; there is no leg `uuid` on this event.
    pub conversation_uuid: Option<String>,
    /// ISO 8601 UTC, as sent.
    pub timestamp: Option<String>,
    /// Every other key, unmodified.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Field deserialisers for values Vonage sends loosely (§4.3). None of them fails: a value of
/// the wrong type or out of range reads as absent, so one odd field never loses the event.
mod lenient {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// A finite number from a JSON number or a numeric string.
    fn number(value: &Value) -> Option<f64> {
        let number = match value {
            Value::Number(number) => number.as_f64(),
            Value::String(text) => text.trim().parse().ok(),
            _ => None,
        };
        number.filter(|n| n.is_finite())
    }

    pub(super) fn decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(number(&Value::deserialize(d)?))
    }

    pub(super) fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let seconds = number(&Value::deserialize(d)?);
        Ok(seconds.and_then(|s| Duration::try_from_secs_f64(s).ok()))
    }

    pub(super) fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Number(number) => number.as_u64(),
            Value::String(text) => text.trim().parse().ok(),
            _ => None,
        })
    }

    pub(super) fn sip_code<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        Ok(integer(d)?.and_then(|code| u16::try_from(code).ok()))
    }

    /// `null` reads as the type's default; other values must still have the right type.
    pub(super) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Default + Deserialize<'de>,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Reads a whole §10 vector file from `tests/data/vectors/` (a copy of `../shared/vonage-vectors/`).
    fn vector_file(file: &str) -> Value {
        let path = format!("{}/tests/data/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).expect("vector file is JSON")
    }

    /// The `content` of a vector file: the body Vonage sends.
    fn vector(file: &str) -> Value {
        vector_file(file)["content"].take()
    }

    fn vector_bytes(file: &str) -> Vec<u8> {
        serde_json::to_vec(&vector(file)).expect("serialises")
    }

    fn parse_vector(file: &str) -> WebhookEvent {
        parse_event(&vector_bytes(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    fn status_event(file: &str) -> CallEvent {
        match parse_vector(file) {
            WebhookEvent::Status(event) => event,
            other => panic!("{file}: expected a status event, got {other:?}"),
        }
    }

    /// Test-only percent-decoding of a query; the server's HTTP layer does this for real.
    fn decode_query(query: &str) -> Vec<(String, String)> {
        fn decode(text: &str) -> String {
            let bytes = text.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'%' if i + 2 < bytes.len() => {
                        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                        out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                        i += 3;
                    }
                    b'+' => {
                        out.push(b' ');
                        i += 1;
                    }
                    byte => {
                        out.push(byte);
                        i += 1;
                    }
                }
            }
            String::from_utf8(out).expect("utf-8")
        }
        query
            .split('&')
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(key), decode(value))
            })
            .collect()
    }

    const CALLER_LEG: &str = "63f61863-4a51-4f6b-86e1-46edebcf9356";
    const CALLER_CONV: &str = "CON-f972836a-550f-45fa-956c-12a2ab5b7d22";
    const OUTBOUND_LEG: &str = "106a581a-34d0-432a-a625-220221fd434f";
    const WS_LEG: &str = "b5f3c0de-7a1e-4c2b-9d84-3e6f1a2b9c70";

    #[test]
    fn answer_get_10_1_equals_post_10_2() {
        let file = vector_file("01-answer-get.json");
        let request_line = file["http_request_line"].as_str().expect("request line");
        let target = request_line
            .strip_prefix("GET ")
            .and_then(|rest| rest.strip_suffix(" HTTP/1.1"))
            .expect("request line");
        let (_, query) = target.split_once('?').expect("query");
        let get = AnswerWebhook::from_query_pairs(decode_query(query)).expect("GET parses");
        let post = AnswerWebhook::from_json(&vector_bytes("02-answer-post.json")).expect("POST");
        assert_eq!(get, post);
        assert_eq!(post.uuid, CALLER_LEG);
        assert_eq!(post.conversation_uuid, CALLER_CONV);
        assert_eq!(post.to.as_deref(), Some("447700900000"));
        assert_eq!(post.from.as_deref(), Some("447700900123"));
        assert_eq!(
            post.region_url.as_deref(),
            Some("https://api-us-3.vonage.com")
        );
        assert_eq!(post.endpoint_type.as_deref(), Some("phone"));
        assert!(post.sip_headers.is_empty() && post.extra.is_empty());
    }

    #[test]
    fn answer_from_hash_map() {
        let pairs: HashMap<String, String> = [
            ("uuid", CALLER_LEG),
            ("conversation_uuid", CALLER_CONV),
            ("from_user", "alice"),
            ("to", "447700900000"),
            ("custom_data", r#"{"ticket":"T-1234"}"#),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let answer = AnswerWebhook::from_query_pairs(pairs).expect("parses");
        assert_eq!(answer.from, None);
        assert_eq!(answer.from_user.as_deref(), Some("alice"));
        assert_eq!(
            answer.custom_data,
            Some(serde_json::json!({"ticket": "T-1234"}))
        );
    }

    #[test]
    fn answer_sip_x01_collects_sip_headers() {
        let answer =
            AnswerWebhook::from_json(&vector_bytes("x01-answer-post-sip.json")).expect("parses");
        assert_eq!(answer.uuid, "9d2f6a10-3b7c-4e8d-a1f5-6c0b2e4d8a37");
        assert_eq!(answer.endpoint_type.as_deref(), Some("sip"));
        assert_eq!(answer.from.as_deref(), Some("sip:alice@pbx.example.com"));
        assert_eq!(
            answer.sip_headers.get("X-UserId").map(String::as_str),
            Some("1938ND9")
        );
        assert!(answer.extra.is_empty());
    }

    #[test]
    fn answer_missing_or_bad_required_fields_are_typed_errors() {
        let no_uuid = br#"{"conversation_uuid":"CON-1","to":"1"}"#;
        assert!(matches!(
            AnswerWebhook::from_json(no_uuid),
            Err(WebhookError::MissingField { field: "uuid" })
        ));
        let no_conv = format!(r#"{{"uuid":"{CALLER_LEG}"}}"#);
        assert!(matches!(
            AnswerWebhook::from_json(no_conv.as_bytes()),
            Err(WebhookError::MissingField {
                field: "conversation_uuid"
            })
        ));
        let pairs = [("uuid", "../../admin"), ("conversation_uuid", "CON-1")];
        assert!(matches!(
            AnswerWebhook::from_query_pairs(pairs),
            Err(WebhookError::InvalidField { field: "uuid", .. })
        ));
        let number_uuid = br#"{"uuid":5,"conversation_uuid":"CON-1"}"#;
        assert!(matches!(
            AnswerWebhook::from_json(number_uuid),
            Err(WebhookError::InvalidField { field: "uuid", .. })
        ));
        // No `to` and no `from` is still a call we can answer.
        let minimal = format!(r#"{{"uuid":"{CALLER_LEG}","conversation_uuid":"CON-1"}}"#);
        let answer = AnswerWebhook::from_json(minimal.as_bytes()).expect("parses");
        assert_eq!((answer.to, answer.from), (None, None));
    }

    #[test]
    fn answer_rejects_oversized_query_and_non_object_body() {
        let huge = "x".repeat(MAX_WEBHOOK_BODY);
        let pairs = [("uuid", CALLER_LEG), ("junk", huge.as_str())];
        assert!(matches!(
            AnswerWebhook::from_query_pairs(pairs),
            Err(WebhookError::TooLarge { size, max: MAX_WEBHOOK_BODY }) if size > MAX_WEBHOOK_BODY
        ));
        assert!(matches!(
            AnswerWebhook::from_json(b"[]"),
            Err(WebhookError::NotAnObject { found: "array" })
        ));
    }

    #[test]
    fn status_vectors_parse_with_expected_status_and_ids() {
        use CallStatus::*;
        let cases = [
            ("03-event-started.json", Started, CALLER_LEG),
            ("04-event-ringing.json", Ringing, CALLER_LEG),
            ("05-event-answered.json", Answered, CALLER_LEG),
            ("x02-event-ws-started.json", Started, WS_LEG),
            ("06-event-busy.json", Busy, OUTBOUND_LEG),
            ("07-event-cancelled.json", Cancelled, OUTBOUND_LEG),
            ("08-event-unanswered.json", Unanswered, OUTBOUND_LEG),
            ("x03-event-ws-unanswered.json", Unanswered, WS_LEG),
            ("09-event-disconnected.json", Disconnected, WS_LEG),
            ("10-event-rejected.json", Rejected, OUTBOUND_LEG),
            ("11-event-failed.json", Failed, OUTBOUND_LEG),
            ("12-event-human.json", Human, OUTBOUND_LEG),
            ("13-event-machine.json", Machine, OUTBOUND_LEG),
            ("14-event-timeout.json", Timeout, OUTBOUND_LEG),
            ("15-event-completed.json", Completed, CALLER_LEG),
        ];
        for (file, status, leg) in cases {
            let event = status_event(file);
            assert_eq!(event.status, status, "{file}");
            assert_eq!(event.call_id(), Some(leg), "{file}");
            assert!(
                event
                    .conversation_uuid
                    .as_deref()
                    .is_some_and(|c| c.starts_with("CON-")),
                "{file}"
            );
            assert!(event.timestamp.is_some(), "{file}");
            assert!(event.extra.is_empty(), "{file}: {:?}", event.extra);
        }
    }

    #[test]
    fn status_vector_details() {
        let answered = status_event("05-event-answered.json");
        assert_eq!((answered.rate, answered.start_time), (None, None));
        assert_eq!(answered.direction.as_deref(), Some("inbound"));

        let unanswered = status_event("08-event-unanswered.json");
        assert_eq!(unanswered.detail.as_deref(), Some("unavailable"));

        let disconnected = status_event("09-event-disconnected.json");
        let headers = disconnected.headers.expect("websocket leg headers");
        assert_eq!(headers["call_uuid"], CALLER_LEG);
        assert!(disconnected.direction.is_none());

        let rejected = status_event("10-event-rejected.json");
        assert_eq!(rejected.detail.as_deref(), Some("invalid_number"));

        let failed = status_event("11-event-failed.json");
        assert_eq!(failed.detail.as_deref(), Some("cannot_route"));
        assert_eq!(failed.sip_code, Some(404));

        let human = status_event("12-event-human.json");
        assert_eq!(
            (human.uuid, human.call_uuid.as_deref()),
            (None, Some(OUTBOUND_LEG))
        );

        let machine = status_event("13-event-machine.json");
        assert_eq!(machine.sub_state.as_deref(), Some("beep_start"));

        let completed = status_event("15-event-completed.json");
        assert_eq!(completed.duration, Some(Duration::from_secs(82)));
        assert_eq!(completed.rate, Some(0.0045));
        assert_eq!(completed.price, Some(0.00615));
        assert_eq!(completed.network.as_deref(), Some("23420"));
        assert_eq!(completed.disconnected_by.as_deref(), Some("user"));
        assert_eq!(
            completed.end_time.as_deref(),
            Some("2025-03-14T10:16:53.000Z")
        );
    }

    #[test]
    fn numbers_accepted_as_strings_or_numbers() {
        let as_numbers = br#"{"status":"completed","uuid":"a","duration":82,"rate":0.0045,
            "price":0.00615,"sip_code":"404"}"#;
        let WebhookEvent::Status(event) = parse_event(as_numbers).expect("parses") else {
            panic!("status event");
        };
        assert_eq!(event.duration, Some(Duration::from_secs(82)));
        assert_eq!((event.rate, event.price), (Some(0.0045), Some(0.00615)));
        assert_eq!(event.sip_code, Some(404));

        // Junk in a loose numeric field drops that field, not the event.
        let junk = br#"{"status":"completed","duration":"-3","rate":"abc","price":true,
            "sip_code":70000}"#;
        let WebhookEvent::Status(event) = parse_event(junk).expect("parses") else {
            panic!("status event");
        };
        assert_eq!(event.status, CallStatus::Completed);
        assert_eq!(
            (event.duration, event.rate, event.price),
            (None, None, None)
        );
        assert_eq!(event.sip_code, None);
    }

    #[test]
    fn headers_are_optional_on_status_events() {
        let without = br#"{"status":"ringing","uuid":"a"}"#;
        let WebhookEvent::Status(event) = parse_event(without).expect("parses") else {
            panic!("status event");
        };
        assert_eq!(event.headers, None);
        assert_eq!(
            status_event("03-event-started.json").headers,
            Some(Map::new())
        );
    }

    #[test]
    fn terminal_statuses() {
        let terminal = [
            "completed",
            "busy",
            "cancelled",
            "unanswered",
            "rejected",
            "failed",
        ];
        for status in terminal.iter().chain(&["timeout"]) {
            assert!(CallStatus::from(*status).is_terminal(), "{status}");
        }
        for status in [
            "started",
            "ringing",
            "answered",
            "disconnected",
            "human",
            "machine",
            "transfer",
            "input",
            "on_hold",
        ] {
            assert!(!CallStatus::from(status).is_terminal(), "{status}");
        }
    }

    #[test]
    fn unknown_status_lands_in_other() {
        let body = br#"{"status":"on_hold_with_music","uuid":"a","brand_new_field":[1,2]}"#;
        let WebhookEvent::Status(event) = parse_event(body).expect("parses") else {
            panic!("status event");
        };
        assert_eq!(event.status, CallStatus::Other("on_hold_with_music".into()));
        assert_eq!(event.status.as_str(), "on_hold_with_music");
        assert_eq!(event.extra["brand_new_field"], serde_json::json!([1, 2]));
    }

    #[test]
    fn status_names_round_trip_through_as_str() {
        let names = [
            "started",
            "ringing",
            "answered",
            "busy",
            "cancelled",
            "unanswered",
            "disconnected",
            "rejected",
            "failed",
            "human",
            "machine",
            "timeout",
            "completed",
            "transfer",
            "input",
        ];
        for name in names {
            let status = CallStatus::from(name);
            assert!(!matches!(status, CallStatus::Other(_)), "{name}");
            assert_eq!(status.to_string(), name);
        }
    }

    #[test]
    fn input_dtmf_10_16() {
        let WebhookEvent::Input(event) = parse_vector("16-event-input.json") else {
            panic!("input event");
        };
        let dtmf = event.dtmf.expect("dtmf");
        assert_eq!(dtmf.digits.as_deref(), Some("1234"));
        assert!(dtmf.timed_out);
        assert!(event.speech.expect("speech").results.is_empty());
        assert_eq!(event.uuid.as_deref(), Some(CALLER_LEG));
    }

    #[test]
    fn input_speech_x04() {
        let WebhookEvent::Input(event) = parse_vector("x04-event-input-speech.json") else {
            panic!("input event");
        };
        let dtmf = event.dtmf.expect("dtmf");
        assert_eq!((dtmf.digits, dtmf.timed_out), (None, false));
        let speech = event.speech.expect("speech");
        assert_eq!(
            speech.timeout_reason.as_deref(),
            Some("end_on_silence_timeout")
        );
        assert_eq!(speech.results.len(), 2);
        assert_eq!(speech.results[0].text, "sales");
        assert_eq!(speech.results[0].confidence, Some(0.9405097));
    }

    #[test]
    fn record_10_17() {
        let WebhookEvent::Record(event) = parse_vector("17-event-record.json") else {
            panic!("record event");
        };
        assert_eq!(
            event.recording_url,
            "https://api.nexmo.com/v1/files/2d6f9b4e-8c1a-4e7f-b3d5-9a0c6e2f1b48"
        );
        assert_eq!(event.size, Some(603_423));
        assert_eq!(
            event.recording_uuid.as_deref(),
            Some("7c3e1a9f-5b2d-4f80-8e6a-1d4b9c7f0e25")
        );
        assert_eq!(event.conversation_uuid.as_deref(), Some(CALLER_CONV));
    }

    #[test]
    fn transfer_10_18() {
        let WebhookEvent::Transfer(event) = parse_vector("18-event-transfer.json") else {
            panic!("transfer event");
        };
        assert_eq!(event.uuid.as_deref(), Some(CALLER_LEG));
        assert_eq!(event.conversation_uuid_from.as_deref(), Some(CALLER_CONV));
        assert_eq!(
            event.conversation_uuid_to.as_deref(),
            Some("CON-8b1d4e7a-2f6c-4a39-9e05-c7d3b1a6f284")
        );
    }

    #[test]
    fn error_10_19() {
        let WebhookEvent::Error(event) = parse_vector("19-event-error.json") else {
            panic!("error event");
        };
        assert_eq!(
            event.reason,
            "Syntax error in NCCO. Invalid value type or action."
        );
        assert_eq!(event.conversation_uuid.as_deref(), Some(CALLER_CONV));
    }

    #[test]
    fn notify_callback_10_20_is_unknown_and_kept_whole() {
        let event = parse_vector("20-event-notify-action.json");
        assert_eq!(event.kind(), "unknown");
        assert_eq!(
            event,
            WebhookEvent::Unknown(vector("20-event-notify-action.json"))
        );
    }

    #[test]
    fn fallback_retry_with_reason_is_not_an_error_event() {
        let body = br#"{"stage":"x","reason":"Connection closed.",
            "original_request":{"url":"https://x/n","type":"event"}}"#;
        assert_eq!(parse_event(body).expect("parses").kind(), "unknown");
        let status = br#"{"status":"answered","uuid":"a","reason":"Connection closed.",
            "original_request":{"url":"https://x/e","type":"event"}}"#;
        assert_eq!(parse_event(status).expect("parses").kind(), "status");
    }

    #[test]
    fn recognised_event_with_wrong_field_type_is_a_typed_error() {
        let body = br#"{"status":"answered","uuid":42}"#;
        assert!(matches!(
            parse_event(body),
            Err(WebhookError::InvalidEvent { kind: "status", .. })
        ));
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        assert!(matches!(parse_event(b""), Err(WebhookError::Empty)));
        assert!(matches!(parse_event(b" \r\n\t"), Err(WebhookError::Empty)));
        assert!(matches!(
            parse_event(b"\xff\xfe\x00garbage{"),
            Err(WebhookError::InvalidJson { .. })
        ));
        assert!(matches!(
            parse_event(br#"{"status":"answered""#),
            Err(WebhookError::InvalidJson { .. })
        ));
        assert!(matches!(
            parse_event(b"null"),
            Err(WebhookError::NotAnObject { found: "null" })
        ));

        let huge = vec![b' '; MAX_WEBHOOK_BODY + 1];
        assert!(matches!(
            parse_event(&huge),
            Err(WebhookError::TooLarge { size, max: MAX_WEBHOOK_BODY }) if size == MAX_WEBHOOK_BODY + 1
        ));

        let depth = 10_000;
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(matches!(
            parse_event(deep.as_bytes()),
            Err(WebhookError::InvalidJson { .. })
        ));
        let deep_in_object = format!(r#"{{"a":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
        assert!(matches!(
            parse_event(deep_in_object.as_bytes()),
            Err(WebhookError::InvalidJson { .. })
        ));
    }

    #[test]
    fn body_of_exactly_the_limit_is_accepted() {
        let mut body = br#"{"status":"ringing"}"#.to_vec();
        body.resize(MAX_WEBHOOK_BODY, b' ');
        assert_eq!(parse_event(&body).expect("parses").kind(), "status");
    }

    #[test]
    fn every_prefix_of_every_vector_is_handled() {
        let files = [
            "03-event-started.json",
            "05-event-answered.json",
            "09-event-disconnected.json",
            "12-event-human.json",
            "15-event-completed.json",
            "16-event-input.json",
            "x04-event-input-speech.json",
            "17-event-record.json",
            "18-event-transfer.json",
            "19-event-error.json",
        ];
        for file in files {
            let body = vector_bytes(file);
            for end in 0..body.len() {
                // Any result is fine; reaching the next iteration proves there was no panic.
                let _ = parse_event(&body[..end]);
                let _ = AnswerWebhook::from_json(&body[..end]);
            }
        }
    }
}
