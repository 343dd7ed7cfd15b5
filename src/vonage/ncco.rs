//! NCCO (Call Control Object): the JSON array of actions voicegate returns from the answer and
//! event webhooks and embeds in REST requests (vonage-protocol.md §2).
//!
//! Owns the typed actions (`talk`, `stream`, `input`, `record`, `connect`, `conversation`,
//! `notify`, `wait`, `transfer`), the `connect` endpoints (`phone`, `websocket`, `sip`, `app`,
//! `vbc`) and their exact wire spelling. Does not own deciding which NCCO to return, HTTP, or the
//! REST bodies that wrap an NCCO.
//!
//! Keys are written exactly as Vonage documents them: camelCase (`eventUrl`, `bargeIn`,
//! `endOnExit`), except the websocket endpoint's hyphenated `content-type` and advanced machine
//! detection's `beep_timeout`. Optional fields are omitted when unset, so Vonage applies its own
//! defaults. Rust field names carry units where the wire name does not (`timeout_secs` for
//! `timeout`).
//!
//! Deserialising rejects unknown keys. An NCCO is voicegate's own output, so a key this model
//! does not know (a typo in a configured fallback NCCO, say) must fail loudly instead of silently
//! vanishing from what is sent to Vonage.
//!
//! Not real-time: built once per webhook response.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A complete NCCO: the actions Vonage runs in order (§2). Serialises as a JSON array.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ncco(pub Vec<Action>);

impl From<Vec<Action>> for Ncco {
    fn from(actions: Vec<Action>) -> Self {
        Self(actions)
    }
}

impl FromIterator<Action> for Ncco {
    fn from_iter<I: IntoIterator<Item = Action>>(actions: I) -> Self {
        Self(actions.into_iter().collect())
    }
}

/// One NCCO action, tagged on the wire by its `"action"` key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    /// `talk`: text-to-speech into the call (§2.1).
    Talk(Talk),
    /// `stream`: play an audio file from a URL (§2.2).
    Stream(Stream),
    /// `input`: collect DTMF and/or speech (§2.3).
    Input(Input),
    /// `record`: record the call; asynchronous (§2.4).
    Record(Record),
    /// `connect`: dial one endpoint into the conversation (§2.5).
    Connect(Connect),
    /// `conversation`: join a named conversation (§2.6).
    Conversation(Conversation),
    /// `notify`: send a payload to a URL; the response may replace the NCCO (§2.7).
    Notify(Notify),
    /// `wait`: pause the NCCO (§2.8; SDK-only evidence).
    Wait(Wait),
    /// `transfer`: move legs into another conversation (§2.8; SDK-only evidence).
    Transfer(Transfer),
}

impl Action {
    /// A `talk` action with only `text` set.
    pub fn talk(text: impl Into<String>) -> Self {
        Talk::new(text).into()
    }

    /// A `connect` action to `endpoint` with nothing else set.
    pub fn connect(endpoint: impl Into<Endpoint>) -> Self {
        Connect::new(endpoint).into()
    }
}

/// `From<ActionStruct> for Action`, so builders end with `.into()`.
macro_rules! into_action {
    ($($variant:ident),* $(,)?) => {
        $(impl From<$variant> for Action {
            fn from(action: $variant) -> Self {
                Self::$variant(action)
            }
        })*
    };
}

into_action!(
    Talk,
    Stream,
    Input,
    Record,
    Connect,
    Conversation,
    Notify,
    Wait,
    Transfer
);

/// `eventMethod`: how Vonage calls an `eventUrl`. Vonage's default is `POST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// `GET`, fields as query parameters.
    Get,
    /// `POST`, fields as a JSON body.
    Post,
}

/// `talk` action (§2.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Talk {
    /// Text to speak: up to 1 500 characters excluding SSML tags; SSML goes in `<speak>..</speak>`.
    pub text: String,
    /// End the action when the caller presses a key or speaks. The next non-talk action must be
    /// `input`, and the setting stays in force until one is reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub barge_in: Option<bool>,
    /// Times to repeat (`loop`); `0` repeats forever. Vonage default 1.
    #[serde(rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_count: Option<u32>,
    /// Volume from -1 to 1. Vonage default 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<f64>,
    /// BCP-47 language code such as `en-GB`. Vonage default `en-US`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Vocal style index for the language. Vonage default 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub style: Option<u32>,
    /// Use the premium voice for the style if there is one (charged extra).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub premium: Option<bool>,
}

impl Talk {
    /// A `talk` with only `text` set.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            barge_in: None,
            loop_count: None,
            level: None,
            language: None,
            style: None,
            premium: None,
        }
    }

    /// Sets `language` (BCP-47, e.g. `en-GB`).
    pub fn language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// Sets `bargeIn`.
    pub fn barge_in(mut self, barge_in: bool) -> Self {
        self.barge_in = Some(barge_in);
        self
    }
}

/// `stream` action (§2.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Stream {
    /// URL of an MP3 or 16-bit WAV file; an array holding one URL on the wire.
    pub stream_url: Vec<String>,
    /// Volume from -1 to 1 in steps of 0.1. Vonage default 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<f64>,
    /// Same rules as [`Talk::barge_in`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub barge_in: Option<bool>,
    /// Times to play (`loop`); `0` repeats forever. Vonage default 1.
    #[serde(rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_count: Option<u32>,
}

impl Stream {
    /// A `stream` of the file at `url`, nothing else set.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            stream_url: vec![url.into()],
            level: None,
            barge_in: None,
            loop_count: None,
        }
    }
}

/// `input` action (§2.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Input {
    /// What to collect (`type`): DTMF, speech or both.
    #[serde(rename = "type")]
    pub kinds: Vec<InputKind>,
    /// DTMF settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtmf: Option<DtmfSettings>,
    /// Speech settings; needed when `kinds` has [`InputKind::Speech`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speech: Option<SpeechSettings>,
    /// Where the result goes (one URL in an array); the response should be a new NCCO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_url: Option<Vec<String>>,
    /// Method for `eventUrl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_method: Option<HttpMethod>,
    /// Synchronous (default) or asynchronous digit delivery (newer; Java/Ruby SDKs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<InputMode>,
}

impl Input {
    /// An `input` collecting `kinds`, nothing else set.
    pub fn new(kinds: Vec<InputKind>) -> Self {
        Self {
            kinds,
            dtmf: None,
            speech: None,
            event_url: None,
            event_method: None,
            mode: None,
        }
    }
}

/// One entry of `input.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// `dtmf`: key presses.
    Dtmf,
    /// `speech`: speech recognition.
    Speech,
}

/// `input.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputMode {
    /// Collect, then send one result (Vonage default).
    Synchronous,
    /// Send each digit to the event URL as it arrives; `dtmf` settings are ignored.
    Asynchronous,
}

/// `input.dtmf` settings; unset fields take Vonage's defaults.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DtmfSettings {
    /// Seconds after the last key before the result is sent (`timeOut`), 0–10. Default 3.
    #[serde(rename = "timeOut", skip_serializing_if = "Option::is_none")]
    pub time_out_secs: Option<u32>,
    /// Digits to collect, 1–20. Default 4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_digits: Option<u32>,
    /// Submit on `#` as well as on timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submit_on_hash: Option<bool>,
}

/// `input.speech` settings; unset fields take Vonage's defaults.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpeechSettings {
    /// Leg whose speech is captured (one UUID in an array). Default: the first joined leg.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Vec<String>>,
    /// Silence in seconds that ends the utterance (`endOnSilence`), 0.4–10. Default 2.
    #[serde(rename = "endOnSilence", skip_serializing_if = "Option::is_none")]
    pub end_on_silence_secs: Option<f64>,
    /// BCP-47 language code. Default `en-US`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Recognition hints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<String>>,
    /// Seconds to wait for speech to start (`startTimeout`), 1–60. Default 10.
    #[serde(rename = "startTimeout", skip_serializing_if = "Option::is_none")]
    pub start_timeout_secs: Option<u32>,
    /// Maximum utterance length in seconds (`maxDuration`), 1–60. Default 60.
    #[serde(rename = "maxDuration", skip_serializing_if = "Option::is_none")]
    pub max_duration_secs: Option<u32>,
    /// Add a `recording_url` of the utterance to the result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub save_audio: Option<bool>,
    /// Speech detection sensitivity, 0–100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<u32>,
}

/// `record` action (§2.4). Asynchronous: the next action starts at once.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Record {
    /// File format. Default mp3 (wav above two channels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<RecordFormat>,
    /// Put sent and received audio in separate channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<RecordSplit>,
    /// Channel count, 1–32; needs `split`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
    /// Stop after this many seconds of silence (`endOnSilence`), 3–10.
    #[serde(rename = "endOnSilence", skip_serializing_if = "Option::is_none")]
    pub end_on_silence_secs: Option<u32>,
    /// Stop when this key (`0`–`9`, `*`, `#`) is pressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_on_key: Option<String>,
    /// Maximum length in seconds (`timeOut`), 3–7200. Default 7200.
    #[serde(rename = "timeOut", skip_serializing_if = "Option::is_none")]
    pub time_out_secs: Option<u32>,
    /// Beep when recording starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beep_start: Option<bool>,
    /// Where the recording event goes (one URL in an array).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_url: Option<Vec<String>>,
    /// Method for `eventUrl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_method: Option<HttpMethod>,
    /// Transcription settings (newer; Java/Ruby SDKs), passed through unmodelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcription: Option<Map<String, Value>>,
}

/// `record.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordFormat {
    /// `mp3`.
    Mp3,
    /// `wav`.
    Wav,
    /// `ogg`.
    Ogg,
}

/// `record.split`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordSplit {
    /// `conversation`: sent and received audio in separate channels.
    Conversation,
}

/// `connect` action (§2.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Connect {
    /// The endpoint to dial. On the wire an array that must hold exactly one endpoint.
    #[serde(with = "one_endpoint")]
    pub endpoint: Endpoint,
    /// Caller ID: E.164 digits of one of the account's numbers. Vonage's Python SDK refuses a
    /// `connect` with neither `from` nor `randomFromNumber` (§2.9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Pick a random number linked to the application as caller ID; excludes `from`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub random_from_number: Option<bool>,
    /// `synchronous`: leg events go to `eventUrl` and may answer with a replacement NCCO (§4.5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<EventType>,
    /// Ring time in seconds before giving up (`timeout`), 3–7200. Default 60.
    #[serde(rename = "timeout", skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
    /// Maximum call length in seconds (`limit`), at most 7200 (also the default).
    #[serde(rename = "limit", skip_serializing_if = "Option::is_none")]
    pub limit_secs: Option<u32>,
    /// Answering-machine detection. Do not set together with `advancedMachineDetection`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_detection: Option<MachineDetection>,
    /// Advanced answering-machine detection; overrides `machineDetection`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advanced_machine_detection: Option<AdvancedMachineDetection>,
    /// Where events for the new leg go (one URL in an array).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_url: Option<Vec<String>>,
    /// Method for `eventUrl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_method: Option<HttpMethod>,
    /// URL of audio looped to the caller until the far end answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ringback_tone: Option<String>,
}

impl Connect {
    /// A `connect` to `endpoint`, nothing else set.
    pub fn new(endpoint: impl Into<Endpoint>) -> Self {
        Self {
            endpoint: endpoint.into(),
            from: None,
            random_from_number: None,
            event_type: None,
            timeout_secs: None,
            limit_secs: None,
            machine_detection: None,
            advanced_machine_detection: None,
            event_url: None,
            event_method: None,
            ringback_tone: None,
        }
    }

    /// Sets the caller ID `from` (E.164 digits without `+`).
    pub fn from(mut self, number: impl Into<String>) -> Self {
        self.from = Some(number.into());
        self
    }

    /// Sets `eventType`.
    pub fn event_type(mut self, event_type: EventType) -> Self {
        self.event_type = Some(event_type);
        self
    }

    /// Sets `eventUrl` to the one-element array holding `url`.
    pub fn event_url(mut self, url: impl Into<String>) -> Self {
        self.event_url = Some(vec![url.into()]);
        self
    }
}

/// `connect.eventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// `synchronous`, the only documented value.
    Synchronous,
}

/// `connect.machineDetection`, also the `behavior` of advanced detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineDetection {
    /// Report `human`/`machine` on the event webhook and carry on.
    Continue,
    /// Hang up when a machine answers.
    Hangup,
}

/// `connect.advancedMachineDetection`. Its beep timeout key is snake_case on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvancedMachineDetection {
    /// What to do when a machine answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behavior: Option<MachineDetection>,
    /// Detection mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<MachineDetectionMode>,
    /// Seconds to wait for the beep (`beep_timeout`), 45–120.
    #[serde(rename = "beep_timeout", skip_serializing_if = "Option::is_none")]
    pub beep_timeout_secs: Option<u32>,
}

/// `advancedMachineDetection.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineDetectionMode {
    /// `default`: asynchronous detection with beep detection.
    Default,
    /// `detect`: synchronous detection without beep detection.
    Detect,
    /// `detect_beep`: synchronous detection with beep detection.
    DetectBeep,
}

/// A `connect` endpoint, tagged on the wire by its `"type"` key (§2.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Endpoint {
    /// `phone`: a PSTN number.
    Phone(PhoneEndpoint),
    /// `websocket`: the media socket to voicegate (§1.1).
    Websocket(WebsocketEndpoint),
    /// `sip`: a SIP URI.
    Sip(SipEndpoint),
    /// `app`: a Client SDK user.
    App(AppEndpoint),
    /// `vbc`: a Vonage Business Communications extension.
    Vbc(VbcEndpoint),
}

impl Endpoint {
    /// A `phone` endpoint for `number` (E.164 digits without `+`).
    pub fn phone(number: impl Into<String>) -> Self {
        PhoneEndpoint::new(number).into()
    }

    /// A `websocket` endpoint to `uri` carrying L16 audio at `rate_hz`; see
    /// [`WebsocketEndpoint::new`].
    pub fn websocket(uri: impl Into<String>, rate_hz: u32) -> Self {
        WebsocketEndpoint::new(uri, rate_hz).into()
    }

    /// A `sip` endpoint to `uri` (`sip:user@host`).
    pub fn sip(uri: impl Into<String>) -> Self {
        SipEndpoint::new(uri).into()
    }

    /// An `app` endpoint for the Client SDK user `user`.
    pub fn app(user: impl Into<String>) -> Self {
        Self::App(AppEndpoint { user: user.into() })
    }

    /// A `vbc` endpoint for `extension`.
    pub fn vbc(extension: impl Into<String>) -> Self {
        Self::Vbc(VbcEndpoint {
            extension: extension.into(),
        })
    }
}

/// `phone` endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PhoneEndpoint {
    /// E.164 digits without `+`.
    pub number: String,
    /// Digits sent when the callee answers; `p` is a 500 ms pause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtmf_answer: Option<String>,
    /// NCCO run on the callee before joining.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_answer: Option<OnAnswer>,
}

impl PhoneEndpoint {
    /// A `phone` endpoint for `number`, nothing else set.
    pub fn new(number: impl Into<String>) -> Self {
        Self {
            number: number.into(),
            dtmf_answer: None,
            on_answer: None,
        }
    }
}

/// `phone.onAnswer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OnAnswer {
    /// URL of the NCCO to run on the callee (a plain string, not an array).
    pub url: String,
    /// Audio URL played to the caller meanwhile; `ringback` is accepted as an old alias.
    #[serde(alias = "ringback", skip_serializing_if = "Option::is_none")]
    pub ringback_tone: Option<String>,
}

/// `websocket` endpoint: where Vonage opens the media socket (§1.1, §1.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebsocketEndpoint {
    /// `wss://` URI Vonage connects to; may carry a query string.
    pub uri: String,
    /// Audio format under the hyphenated key `content-type`, e.g. `audio/l16;rate=16000`.
    #[serde(rename = "content-type")]
    pub content_type: String,
    /// Metadata echoed flattened in `websocket:connected` and as `headers` on this leg's events.
    /// Vonage caps it at 512 bytes serialised; keys `event` and `content-type` would collide with
    /// Vonage's own keys in `websocket:connected` (§1.3). Omitted when empty.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub headers: Map<String, Value>,
    /// How Vonage fills the handshake's `Authorization` header (§1.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<WebsocketAuthorization>,
}

impl WebsocketEndpoint {
    /// A websocket endpoint to `uri` with `content-type` `audio/l16;rate={rate_hz}`.
    ///
    /// Vonage accepts 8 000, 16 000 and 24 000 Hz; pass a rate already validated by the caller
    /// (this wire model does not second-guess it).
    pub fn new(uri: impl Into<String>, rate_hz: u32) -> Self {
        Self {
            uri: uri.into(),
            content_type: format!("audio/l16;rate={rate_hz}"),
            headers: Map::new(),
            authorization: None,
        }
    }

    /// Adds (or replaces) one entry of `headers`.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Sets `authorization`.
    pub fn authorization(mut self, authorization: WebsocketAuthorization) -> Self {
        self.authorization = Some(authorization);
        self
    }
}

/// `websocket.authorization` (§1.2), tagged on the wire by its `"type"` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WebsocketAuthorization {
    /// `{"type":"vonage"}`: Vonage sends `Authorization: Bearer <HS256 JWT>` signed with the
    /// account signature secret (verify as in §5.3).
    Vonage,
    /// `{"type":"custom","value":"..."}`: Vonage sends `value` verbatim as the header value.
    Custom {
        /// Header value: printable ASCII (0x20–0x7E), fewer than 8 192 characters.
        value: String,
    },
}

/// `sip` endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SipEndpoint {
    /// `sip:user@host`, optionally with `;transport=tls` and/or `;media=srtp`.
    pub uri: String,
    /// Custom headers, sent as `X-key: value` in the INVITE. Omitted when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Standard headers sent unprefixed, e.g. `User-to-User`. Omitted when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub standard_headers: BTreeMap<String, String>,
}

impl SipEndpoint {
    /// A `sip` endpoint to `uri` without headers.
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            headers: BTreeMap::new(),
            standard_headers: BTreeMap::new(),
        }
    }
}

/// `app` endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppEndpoint {
    /// Client SDK user name.
    pub user: String,
}

/// `vbc` endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VbcEndpoint {
    /// Vonage Business Communications extension.
    pub extension: String,
}

/// `From<EndpointStruct> for Endpoint`, so builders end with `.into()`.
macro_rules! into_endpoint {
    ($($variant:ident($endpoint:ident)),* $(,)?) => {
        $(impl From<$endpoint> for Endpoint {
            fn from(endpoint: $endpoint) -> Self {
                Self::$variant(endpoint)
            }
        })*
    };
}

into_endpoint!(
    Phone(PhoneEndpoint),
    Websocket(WebsocketEndpoint),
    Sip(SipEndpoint),
    App(AppEndpoint),
    Vbc(VbcEndpoint),
);

/// `conversation` action (§2.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Conversation {
    /// Room name, namespaced per application; the same name joins the same conversation.
    pub name: String,
    /// MP3 played until the conversation starts (one URL in an array).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub music_on_hold_url: Option<Vec<String>>,
    /// `false` for attendees waiting for a moderator. Default `true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_on_enter: Option<bool>,
    /// End the conversation when this (moderator) leg leaves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_on_exit: Option<bool>,
    /// Record the conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<bool>,
    /// Leg UUIDs that hear this participant; `Some(vec![])` means nobody, `None` everyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_speak: Option<Vec<String>>,
    /// Leg UUIDs this participant hears; `Some(vec![])` means nobody, `None` everyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_hear: Option<Vec<String>>,
    /// Mute this participant; not allowed together with `canSpeak`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mute: Option<bool>,
    /// Where recording events go (one URL in an array).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_url: Option<Vec<String>>,
    /// Method for `eventUrl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_method: Option<HttpMethod>,
}

impl Conversation {
    /// A `conversation` named `name`, nothing else set.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            music_on_hold_url: None,
            start_on_enter: None,
            end_on_exit: None,
            record: None,
            can_speak: None,
            can_hear: None,
            mute: None,
            event_url: None,
            event_method: None,
        }
    }
}

/// `notify` action (§2.7). Not the WebSocket `notify` command (§1.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Notify {
    /// JSON object sent as the request body to `eventUrl`.
    pub payload: Map<String, Value>,
    /// Where the payload goes (one URL in an array).
    pub event_url: Vec<String>,
    /// Method for `eventUrl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_method: Option<HttpMethod>,
}

impl Notify {
    /// A `notify` sending `payload` to `event_url`.
    pub fn new(payload: Map<String, Value>, event_url: impl Into<String>) -> Self {
        Self {
            payload,
            event_url: vec![event_url.into()],
            event_method: None,
        }
    }
}

/// `wait` action (§2.8).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    /// Pause in seconds (`timeout`), 0.1–7200, clamped by Vonage. Default 10.
    #[serde(rename = "timeout", skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
}

/// NCCO `transfer` action (§2.8); distinct from the REST transfer of a live call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Transfer {
    /// Target conversation.
    pub conversation_id: String,
    /// Mute the transferred legs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mute: Option<bool>,
    /// Leg UUIDs that hear the transferred legs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_speak: Option<Vec<String>>,
    /// Leg UUIDs the transferred legs hear.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_hear: Option<Vec<String>>,
}

/// `connect.endpoint` is an array on the wire, but Vonage requires exactly one endpoint in it
/// (§2.5; the array form is historical), so the model holds a single [`Endpoint`].
mod one_endpoint {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Endpoint;

    pub(super) fn serialize<S: Serializer>(
        endpoint: &Endpoint,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        std::slice::from_ref(endpoint).serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Endpoint, D::Error> {
        let endpoints = Vec::<Endpoint>::deserialize(deserializer)?;
        let count = endpoints.len();
        match <[Endpoint; 1]>::try_from(endpoints) {
            Ok([endpoint]) => Ok(endpoint),
            Err(_) => Err(D::Error::invalid_length(
                count,
                &"an array of exactly one endpoint",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Reads the `content` of a §10 vector file from `tests/data/vectors/` (a copy of `../shared/vonage-vectors/`).
    fn vector(file: &str) -> Value {
        let path = format!("{}/tests/data/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut vector: Value = serde_json::from_str(&text).expect("vector file is JSON");
        vector["content"].take()
    }

    /// Parses `wire` as an NCCO, serialises it again and checks nothing changed.
    fn assert_round_trip(wire: &Value) -> Ncco {
        let ncco: Ncco = serde_json::from_value(wire.clone()).expect("NCCO parses");
        let again = serde_json::to_value(&ncco).expect("NCCO serialises");
        assert_eq!(&again, wire);
        ncco
    }

    #[test]
    fn full_ncco_10_28_round_trips() {
        let ncco = assert_round_trip(&vector("28-ncco-full.json"));
        let Action::Connect(connect) = &ncco.0[1] else {
            panic!("second action is connect: {ncco:?}");
        };
        assert_eq!(connect.event_type, Some(EventType::Synchronous));
        let Endpoint::Websocket(ws) = &connect.endpoint else {
            panic!("websocket endpoint: {connect:?}");
        };
        assert_eq!(ws.content_type, "audio/l16;rate=16000");
        assert_eq!(ws.authorization, Some(WebsocketAuthorization::Vonage));
    }

    #[test]
    fn transfer_ncco_10_29_round_trips() {
        let body = vector("29-rest-transfer.json");
        assert_round_trip(&body["destination"]["ncco"]);
    }

    #[test]
    fn fallback_ncco_x06_round_trips() {
        assert_round_trip(&vector("x06-ncco-fallback.json"));
    }

    #[test]
    fn create_call_ncco_x09_round_trips() {
        let body = vector("x09-rest-create-ncco.json");
        assert_round_trip(&body["ncco"]);
    }

    #[test]
    fn builders_reproduce_10_28() {
        let uuid = "63f61863-4a51-4f6b-86e1-46edebcf9356";
        let socket = WebsocketEndpoint::new(
            format!("wss://gateway.example.com/voice-stream/{uuid}?t=q7Zk3vN1pR8sT2wX"),
            16_000,
        )
        .header("call_uuid", uuid)
        .header("caller", "447700900123")
        .authorization(WebsocketAuthorization::Vonage);
        let ncco = Ncco(vec![
            Talk::new("Hello, connecting you to our assistant.")
                .language("en-GB")
                .into(),
            Connect::new(socket)
                .event_type(EventType::Synchronous)
                .event_url("https://gateway.example.com/events")
                .from("447700900000")
                .into(),
        ]);
        assert_eq!(
            serde_json::to_value(&ncco).expect("serialises"),
            vector("28-ncco-full.json")
        );
    }

    #[test]
    fn websocket_content_type_key_is_hyphenated() {
        let wire = serde_json::to_value(Endpoint::websocket("wss://x/y", 24_000)).expect("json");
        assert_eq!(
            wire,
            json!({"type": "websocket", "uri": "wss://x/y", "content-type": "audio/l16;rate=24000"})
        );
        let text = serde_json::to_string(&Endpoint::websocket("wss://x/y", 16_000)).expect("json");
        assert!(
            text.contains(r#""content-type":"audio/l16;rate=16000""#),
            "{text}"
        );
        assert!(!text.contains("content_type") && !text.contains("contentType"));
    }

    #[test]
    fn websocket_authorization_shapes() {
        let custom = WebsocketAuthorization::Custom {
            value: "Bearer 3f9c1b7e0d2a4c5e8f6a".into(),
        };
        assert_eq!(
            serde_json::to_value(&custom).expect("json"),
            json!({"type": "custom", "value": "Bearer 3f9c1b7e0d2a4c5e8f6a"})
        );
        assert_eq!(
            serde_json::to_value(WebsocketAuthorization::Vonage).expect("json"),
            json!({"type": "vonage"})
        );
    }

    #[test]
    fn every_action_serialises_its_action_name() {
        let actions: Vec<(Action, &str)> = vec![
            (Action::talk("hi"), "talk"),
            (Stream::new("https://x/a.mp3").into(), "stream"),
            (Input::new(vec![InputKind::Dtmf]).into(), "input"),
            (Record::default().into(), "record"),
            (Action::connect(Endpoint::phone("447700900999")), "connect"),
            (Conversation::new("room").into(), "conversation"),
            (Notify::new(Map::new(), "https://x/n").into(), "notify"),
            (Wait::default().into(), "wait"),
            (
                Transfer {
                    conversation_id: "CON-1".into(),
                    mute: None,
                    can_speak: None,
                    can_hear: None,
                }
                .into(),
                "transfer",
            ),
        ];
        for (action, name) in actions {
            let wire = serde_json::to_value(&action).expect("json");
            assert_eq!(wire["action"], name, "{wire}");
            let back: Action = serde_json::from_value(wire).expect("parses back");
            assert_eq!(back, action);
        }
    }

    #[test]
    fn every_endpoint_serialises_its_type_name() {
        let endpoints = [
            (Endpoint::phone("447700900999"), "phone"),
            (Endpoint::websocket("wss://x", 8_000), "websocket"),
            (Endpoint::sip("sip:alice@example.com"), "sip"),
            (Endpoint::app("alice"), "app"),
            (Endpoint::vbc("1234"), "vbc"),
        ];
        for (endpoint, name) in endpoints {
            let wire = serde_json::to_value(&endpoint).expect("json");
            assert_eq!(wire["type"], name, "{wire}");
            let back: Endpoint = serde_json::from_value(wire).expect("parses back");
            assert_eq!(back, endpoint);
        }
    }

    #[test]
    fn unset_options_and_empty_headers_are_omitted() {
        assert_eq!(
            serde_json::to_value(Action::talk("hi")).expect("json"),
            json!({"action": "talk", "text": "hi"})
        );
        assert_eq!(
            serde_json::to_value(Action::connect(Endpoint::sip("sip:a@b"))).expect("json"),
            json!({"action": "connect", "endpoint": [{"type": "sip", "uri": "sip:a@b"}]})
        );
    }

    #[test]
    fn camel_case_and_renamed_keys() {
        let talk = Talk {
            barge_in: Some(true),
            loop_count: Some(0),
            ..Talk::new("hi")
        };
        let conversation = Conversation {
            end_on_exit: Some(true),
            can_hear: Some(vec![]),
            music_on_hold_url: Some(vec!["https://x/m.mp3".into()]),
            ..Conversation::new("room")
        };
        let input = Input {
            dtmf: Some(DtmfSettings {
                time_out_secs: Some(5),
                max_digits: Some(1),
                submit_on_hash: Some(true),
            }),
            event_method: Some(HttpMethod::Post),
            ..Input::new(vec![InputKind::Dtmf, InputKind::Speech])
        };
        let connect = Connect {
            advanced_machine_detection: Some(AdvancedMachineDetection {
                behavior: Some(MachineDetection::Continue),
                mode: Some(MachineDetectionMode::DetectBeep),
                beep_timeout_secs: Some(45),
            }),
            random_from_number: Some(true),
            timeout_secs: Some(30),
            ..Connect::new(Endpoint::phone("14155550123"))
        };
        let wire = serde_json::to_value(Ncco(vec![
            talk.into(),
            conversation.into(),
            input.into(),
            connect.into(),
        ]))
        .expect("json");
        assert_eq!(
            wire,
            json!([
                {"action": "talk", "text": "hi", "bargeIn": true, "loop": 0},
                {"action": "conversation", "name": "room", "endOnExit": true, "canHear": [],
                 "musicOnHoldUrl": ["https://x/m.mp3"]},
                {"action": "input", "type": ["dtmf", "speech"], "eventMethod": "POST",
                 "dtmf": {"timeOut": 5, "maxDigits": 1, "submitOnHash": true}},
                {"action": "connect", "endpoint": [{"type": "phone", "number": "14155550123"}],
                 "randomFromNumber": true, "timeout": 30,
                 "advancedMachineDetection":
                    {"behavior": "continue", "mode": "detect_beep", "beep_timeout": 45}}
            ])
        );
    }

    #[test]
    fn connect_needs_exactly_one_endpoint() {
        let phone = json!({"type": "phone", "number": "447700900999"});
        for (endpoints, count) in [(json!([]), "0"), (json!([phone.clone(), phone]), "2")] {
            let wire = json!([{"action": "connect", "endpoint": endpoints}]);
            let error = serde_json::from_value::<Ncco>(wire).expect_err("rejected");
            assert!(
                error
                    .to_string()
                    .contains(&format!("invalid length {count}")),
                "{error}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_actions_are_rejected() {
        for wire in [
            json!([{"action": "talk", "text": "hi", "langauge": "en-GB"}]),
            json!([{"action": "dance"}]),
            json!([{"action": "connect", "endpoint": [{"type": "fax", "number": "1"}]}]),
            json!([{"action": "connect", "endpoint":
                [{"type": "websocket", "uri": "wss://x", "content_type": "audio/l16;rate=16000"}]}]),
        ] {
            assert!(
                serde_json::from_value::<Ncco>(wire.clone()).is_err(),
                "{wire}"
            );
        }
    }

    #[test]
    fn on_answer_accepts_old_ringback_alias() {
        let wire = json!({"type": "phone", "number": "1", "onAnswer":
            {"url": "https://x/n", "ringback": "https://x/r.mp3"}});
        let Endpoint::Phone(phone) = serde_json::from_value(wire).expect("parses") else {
            panic!("phone endpoint");
        };
        let on_answer = phone.on_answer.expect("onAnswer");
        assert_eq!(on_answer.ringback_tone.as_deref(), Some("https://x/r.mp3"));
    }
}
