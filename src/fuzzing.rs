//! Fuzzing entry points, shared by the cargo-fuzz targets in `fuzz/` and by the stable seed
//! replay in `tests/fuzz_seeds.rs`. Not part of the public API (hidden from the docs, may change
//! at any time).
//!
//! Each function takes raw bytes, drives one public surface of the crate, and panics (through
//! `assert!`) when an invariant breaks; a clean return means the input is fine.
//!
//! * [`frame_parse`]: the bytes as one binary media message at 8, 16 and 24 kHz, through
//!   [`codec::decode_into`] and [`Session::handle_caller_frame`].
//! * [`ws_text`]: the bytes (lossy UTF-8) as one Vonage text message, through
//!   [`media_protocol::parse_text`], [`media_protocol::connected_headers`] and
//!   [`Session::handle_text`].
//! * [`session_ops`]: the bytes as a small program for a whole [`Session`] and its
//!   [`AgentLink`]: caller frames, text messages, agent writes, turns, marks, interrupts, clock
//!   advances, transmits and reads (see [`session_ops`] for the encoding and the invariants).
//! * [`webhook_body`]: the bytes as an event body, an answer body and an answer query, through
//!   [`webhooks::parse_event`] and [`AnswerWebhook`].
//! * [`jwt_verify`]: the bytes as an `Authorization` header and a body, or as the claims of a
//!   token signed with the test secret, through [`WebhookVerifier`].
//!
//! # Why a byte interpreter and not `arbitrary`
//!
//! The operation sequence of [`session_ops`] is decoded by hand (first byte of each operation
//! chooses it, the following bytes are its arguments; running out of bytes reads zeros and ends
//! the program) instead of deriving `arbitrary::Arbitrary`. This module therefore needs no
//! optional dependency and always compiles, so `cargo test` replays the committed corpus on
//! stable without `--features fuzzing`, and seed files can be written by hand (see
//! [`ops`], whose helpers build them). The `fuzzing` feature is left for future structured
//! targets.
//!
//! # Running
//!
//! ```text
//! cargo install cargo-fuzz
//! cargo +nightly fuzz run session_ops -- -max_total_time=600 -jobs=1   # from the crate root
//! cargo test --test fuzz_seeds                                          # replay the corpus
//! ```
//!
//! Not real-time: the harness allocates freely.

use std::time::{Duration, Instant};

use crate::core::audio::{FRAME, MAX_FRAME_SAMPLES, SampleRate};
use crate::core::codec;
use crate::core::config::{Forward, SessionConfig};
use crate::core::events::{Command, Event};
use crate::core::link::AgentLink;
use crate::core::session::{Session, TextRejected};
use crate::core::vad::VadAggressiveness;
use crate::vonage::media_protocol::{self, MediaEvent};
use crate::vonage::signed_webhook::{self, JwtError, Payload, WebhookVerifier};
use crate::vonage::webhooks::{self, AnswerWebhook};

const CALL_RATES: [SampleRate; 3] = [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz24000];
const AGENT_RATES: [SampleRate; 4] = [
    SampleRate::Hz8000,
    SampleRate::Hz16000,
    SampleRate::Hz24000,
    SampleRate::Hz48000,
];

/// Most events or commands one step may produce before we call the queues unbounded.
const MAX_OUTPUTS_PER_STEP: usize = 1_000;
/// Most operations one [`session_ops`] input runs.
const MAX_OPS: usize = 4_096;
/// Most caller frames one [`session_ops`] input processes (bounds the time per input).
const MAX_FRAMES: u32 = 3_000;

/// The agent rate [`frame_parse`] uses for each call rate, so the inbound resampler runs.
fn frame_parse_agent_rate(call: SampleRate) -> SampleRate {
    match call {
        SampleRate::Hz8000 => SampleRate::Hz16000,
        SampleRate::Hz16000 => SampleRate::Hz24000,
        _ => SampleRate::Hz48000,
    }
}

/// `data` as one binary media message at each call rate (8, 16, 24 kHz).
///
/// Checks: [`codec::decode_into`] succeeds exactly when `data` is one 20 ms frame at that rate,
/// and then decodes every sample and re-encodes to the same bytes; a [`Session`] (call rate →
/// a higher agent rate, so the resampler runs too) accepts the frame exactly then, counts it,
/// and never panics.
pub fn frame_parse(data: &[u8]) {
    let t0 = Instant::now();
    let mut samples = [0i16; MAX_FRAME_SAMPLES];
    let mut bytes = [0u8; MAX_FRAME_SAMPLES * 2];
    for rate in CALL_RATES {
        let valid = data.len() == rate.frame_bytes();
        let decoded = codec::decode_into(data, rate, &mut samples);
        assert_eq!(
            decoded.is_ok(),
            valid,
            "decode_into at {rate} of {} bytes: {decoded:?}",
            data.len()
        );
        if let Ok(n) = decoded {
            assert_eq!(n, rate.frame_samples());
            let m = codec::encode_into(&samples[..n], &mut bytes).expect("buffer holds a frame");
            assert_eq!(&bytes[..m], data, "encode(decode(b)) != b");
        }

        let config = SessionConfig::new(rate, frame_parse_agent_rate(rate));
        let (mut session, mut link) = Session::new(config).expect("default config is valid");
        for k in 0..2u32 {
            let r = session.handle_caller_frame(t0 + FRAME * k, data);
            assert_eq!(
                r.is_ok(),
                valid,
                "handle_caller_frame at {rate} of {} bytes: {r:?}",
                data.len()
            );
        }
        let stats = *session.stats();
        assert_eq!(stats.frames_in + stats.frames_invalid, 2);
        assert_eq!(stats.frames_in, if valid { 2 } else { 0 });
        while session.poll_event().is_some() {}
        let mut sink = [0i16; MAX_FRAME_SAMPLES];
        while link.read(&mut sink) > 0 {}
    }
}

/// `data` (lossy UTF-8) as one text message from Vonage.
///
/// Checks: [`media_protocol::parse_text`] and [`media_protocol::connected_headers`] never panic;
/// a parsed `connected` carries a call rate; a parsed mark re-encodes with
/// [`media_protocol::encode_notify`] and parses back the same; [`Session::handle_text`] agrees
/// with `parse_text` on what is invalid, and a second identical message never panics either.
pub fn ws_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = media_protocol::parse_text(&text);
    let _ = media_protocol::connected_headers(&text);
    match &parsed {
        Ok(MediaEvent::Connected { rate }) => assert!(rate.is_call_rate(), "connected at {rate}"),
        Ok(MediaEvent::Notify(m)) => {
            let mut buf = [0u8; 96];
            let n = media_protocol::encode_notify(
                crate::core::TurnId(m.turn),
                m.frame,
                m.mark,
                &mut buf,
            )
            .expect("96 bytes hold any notify");
            let cmd: serde_json::Value =
                serde_json::from_slice(&buf[..n]).expect("encode_notify writes JSON");
            let echoed = format!(
                r#"{{"event":"websocket:notify","payload":{}}}"#,
                cmd["payload"]
            );
            assert_eq!(
                media_protocol::parse_text(&echoed),
                Ok(MediaEvent::Notify(*m))
            );
        }
        _ => {}
    }

    let t0 = Instant::now();
    let config = SessionConfig::new(SampleRate::Hz16000, SampleRate::Hz16000);
    let (mut session, _link) = Session::new(config).expect("default config is valid");
    let handled = session.handle_text(t0, &text);
    match (&parsed, &handled) {
        (Err(e), Err(TextRejected::Invalid(h))) => assert_eq!(e, h),
        (Err(e), h) => panic!("parse_text rejected ({e:?}) but handle_text gave {h:?}"),
        (Ok(_), Err(TextRejected::Invalid(h))) => {
            panic!("parse_text accepted but handle_text said {h:?}")
        }
        (Ok(_), _) => {}
    }
    let _ = session.handle_text(t0 + FRAME, &text);
    let mut n = 0;
    while session.poll_event().is_some() {
        n += 1;
    }
    assert!(n <= 4, "two text messages gave {n} events");
    assert!(
        session.poll_command().is_none(),
        "a text message produced a command"
    );
}

/// What one [`session_ops`] run did (for the seed tests, which check that each seed exercises
/// what it is meant to).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpsSummary {
    /// Operations run.
    pub ops: u32,
    /// Caller frames accepted.
    pub frames_in: u32,
    /// Frames `poll_transmit` produced.
    pub frames_out: u32,
    /// `BargeIn` events.
    pub barge_ins: u32,
    /// `SpeechStarted` events.
    pub speech_started: u32,
    /// `ClearPlayback` commands.
    pub clears: u32,
    /// `Notify` commands.
    pub notifies: u32,
    /// `PlayoutReached` and `MarkReached` events.
    pub playout_events: u32,
    /// DTMF events.
    pub dtmf: u32,
    /// Whether the session config was valid (always, by construction of the header).
    pub configured: bool,
}

/// Operation codes of [`session_ops`] (the low nibble of an operation's first byte) and
/// helpers that encode operations, for writing seeds by hand.
pub mod ops {
    /// A caller frame of the right size: `[FRAME, kind, a, b]` (kind: see [`super::Kind`]).
    pub const FRAME: u8 = 0;
    /// Same as [`FRAME`] (weighted twice).
    pub const FRAME2: u8 = 1;
    /// A caller frame of a wrong size: `[BAD_FRAME, len_lo, len_hi, fill]` (len mod 2049; bytes
    /// `fill, fill + 1, ...`).
    pub const BAD_FRAME: u8 = 2;
    /// Decoded caller samples: `[SAMPLES, kind, a, b, delta]`; delta 0 is the right length,
    /// otherwise the length is off by `delta - 128`.
    pub const SAMPLES: u8 = 3;
    /// A text message: `[TEXT, form, x, y, z]` (see [`super::text_message`]).
    pub const TEXT: u8 = 4;
    /// Agent audio: `[WRITE, len_lo, len_hi, kind, a, b]` (len mod 8192 samples).
    pub const WRITE: u8 = 5;
    /// Same as [`WRITE`].
    pub const WRITE2: u8 = 6;
    /// `AgentLink::start_turn`.
    pub const START_TURN: u8 = 7;
    /// `AgentLink::end_turn`.
    pub const END_TURN: u8 = 8;
    /// `AgentLink::mark`.
    pub const MARK: u8 = 9;
    /// `AgentLink::interrupt`.
    pub const INTERRUPT: u8 = 10;
    /// Advance the clock: `[ADVANCE, ms]` (ms mod 101).
    pub const ADVANCE: u8 = 11;
    /// `poll_transmit` until nothing is due.
    pub const TRANSMIT: u8 = 12;
    /// Agent reads: `[READ, n]` (up to 8·n samples).
    pub const READ: u8 = 13;
    /// A realistic stretch of call: `[TICK, count, kind, a, b]`: `count mod 50 + 1` times
    /// advance 20 ms, send a caller frame, transmit what is due, read what the agent got.
    pub const TICK: u8 = 14;
    /// `[OTHER, x]`: x = 0 drops the agent's link (the agent hangs up); otherwise a clock jump
    /// of `20 ms · (x mod 50)`.
    pub const OTHER: u8 = 15;

    /// The 4-byte header: call rate index (8/16/24 kHz), agent rate index (8/16/24/48 kHz),
    /// forward all, lead in 10 ms steps (0–10), notify every (0, 1, 3, 10 frames), VAD mode
    /// (0–3), barge-in minimum in frames (1–8), outbound buffer index (100, 300, 1000, 2000 ms).
    #[allow(clippy::too_many_arguments)]
    pub fn header(
        call: u8,
        agent: u8,
        forward_all: bool,
        lead_10ms: u8,
        notify: u8,
        vad: u8,
        min_frames: u8,
        outbound: u8,
    ) -> [u8; 4] {
        let b0 = call % 3 + 3 * (agent % 4) + 12 * u8::from(forward_all);
        let b1 = lead_10ms % 11 + 11 * (notify % 4);
        let b2 = vad % 4 + 4 * ((min_frames.max(1) - 1) % 8) + 32 * (outbound % 4);
        // onset 60 ms, hangover 300 ms, preroll 240 ms
        let b3 = 2 + 4 * 14 + 100;
        [b0, b1, b2, b3]
    }

    /// `n` ticks of caller frames of `kind` with arguments `a`, `b`.
    pub fn tick(n: u8, kind: u8, a: u8, b: u8) -> [u8; 5] {
        [TICK, n.saturating_sub(1), kind, a, b]
    }

    /// An agent write of `len` samples of `kind`.
    pub fn write(len: u16, kind: u8, a: u8, b: u8) -> [u8; 6] {
        let [lo, hi] = len.to_le_bytes();
        [WRITE, lo, hi, kind, a, b]
    }
}

/// How the content of a frame or an agent write is made (first argument byte, mod 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Digital silence.
    Silence = 0,
    /// A synthetic vowel (glottal pulses through three formant resonators): pitch 80 + a Hz,
    /// level from b (b = 255 is about −6 dBFS, each step down 0.25 dB).
    Voice = 1,
    /// White noise at level b.
    Noise = 2,
    /// The input's own bytes as L16 samples.
    Raw = 3,
    /// A pure tone of 50 + 10·a Hz at level b.
    Tone = 4,
}

impl Kind {
    fn from_byte(b: u8) -> Self {
        match b % 5 {
            0 => Self::Silence,
            1 => Self::Voice,
            2 => Self::Noise,
            3 => Self::Raw,
            _ => Self::Tone,
        }
    }
}

/// Reads operation bytes; past the end everything reads as zero.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// Up to `n` raw bytes (fewer at the end).
    fn take(&mut self, n: usize) -> &[u8] {
        let start = self.pos.min(self.data.len());
        let end = (start + n).min(self.data.len());
        self.pos = start + n;
        &self.data[start..end]
    }
}

/// Deterministic sample generators with state carried across frames (continuous phase).
#[derive(Debug, Default)]
struct Synth {
    phase: f32,
    pulse_pos: f32,
    res: [[f32; 2]; 3],
    rng: u32,
}

impl Synth {
    fn fill(&mut self, kind: Kind, a: u8, b: u8, rate: SampleRate, raw: &[u8], out: &mut [i16]) {
        let fs = rate.hz() as f32;
        let amp = 16_000.0 * 10f32.powf(-(255.0 - f32::from(b)) / 80.0);
        match kind {
            Kind::Silence => out.fill(0),
            Kind::Raw => {
                for (i, s) in out.iter_mut().enumerate() {
                    let lo = raw.get(2 * i).copied().unwrap_or(0);
                    let hi = raw.get(2 * i + 1).copied().unwrap_or(0);
                    *s = i16::from_le_bytes([lo, hi]);
                }
            }
            Kind::Noise => {
                if self.rng == 0 {
                    self.rng = 0x9e37_79b9;
                }
                for s in out.iter_mut() {
                    self.rng ^= self.rng << 13;
                    self.rng ^= self.rng >> 17;
                    self.rng ^= self.rng << 5;
                    let u = (self.rng >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
                    *s = (u * amp) as i16;
                }
            }
            Kind::Tone => {
                let step = 2.0 * std::f32::consts::PI * (50.0 + 10.0 * f32::from(a)) / fs;
                for s in out.iter_mut() {
                    *s = (amp * self.phase.sin()) as i16;
                    self.phase = (self.phase + step) % (2.0 * std::f32::consts::PI);
                }
            }
            Kind::Voice => {
                let period = fs / (80.0 + f32::from(a));
                let formants = [(700.0f32, 110.0f32), (1_220.0, 120.0), (2_600.0, 160.0)];
                let coef = formants.map(|(f, bw)| {
                    let f = f.min(fs * 0.45);
                    let r = (-std::f32::consts::PI * bw / fs).exp();
                    (
                        2.0 * r * (2.0 * std::f32::consts::PI * f / fs).cos(),
                        -r * r,
                        1.0 - r,
                    )
                });
                for s in out.iter_mut() {
                    self.pulse_pos += 1.0;
                    let x = if self.pulse_pos >= period {
                        self.pulse_pos -= period;
                        1.0
                    } else {
                        0.0
                    };
                    let mut y = 0.0;
                    for (st, (c1, c2, g)) in self.res.iter_mut().zip(coef) {
                        let v = g * x + c1 * st[0] + c2 * st[1];
                        st[1] = st[0];
                        st[0] = v;
                        y += v;
                    }
                    *s = (y * amp * 6.5).clamp(-32_768.0, 32_767.0) as i16;
                }
            }
        }
    }
}

/// The text message for `[TEXT, form, x, y, z]`: `form mod 8` picks connected (x: rate, y:
/// spelling), flat dtmf, nested dtmf (x: key, y: duration), cleared, our notify (x: turn, 0 =
/// the agent's current turn; y: frame; z: mark), a foreign notify (§10.26), an unknown event,
/// or (7) up to x bytes of the input as lossy UTF-8.
pub fn text_message(form: u8, x: u8, y: u8, z: u8, current_turn: u32, raw: &[u8]) -> String {
    const KEYS: &[u8] = b"0123456789*#ABCDabx%";
    let key = KEYS[usize::from(x) % KEYS.len()] as char;
    let duration = match y % 5 {
        0 => String::new(),
        1 => format!(r#","duration":{}"#, u32::from(y) * 10),
        2 => r#","duration":-5"#.to_owned(),
        3 => r#","duration":1e300"#.to_owned(),
        _ => r#","duration":"long""#.to_owned(),
    };
    match form % 8 {
        0 => {
            let hz = [8_000u32, 16_000, 24_000, 48_000, 44_100, 0][usize::from(x) % 6];
            match y % 3 {
                0 => format!(
                    r#"{{"event":"websocket:connected","content-type":"audio/l16;rate={hz}","call_uuid":"63f61863-4a51-4f6b-86e1-46edebcf9356","caller":"447700900123"}}"#
                ),
                1 => format!(
                    r#"{{"event":"websocket:connected","content-type":"audio/L16; rate = {hz}"}}"#
                ),
                _ => r#"{"event":"websocket:connected"}"#.to_owned(),
            }
        }
        1 => format!(r#"{{"event":"websocket:dtmf","digit":"{key}"{duration}}}"#),
        2 => format!(r#"{{"event":"websocket:dtmf","dtmf":{{"digit":"{key}"{duration}}}}}"#),
        3 => r#"{"event":"websocket:cleared"}"#.to_owned(),
        4 => {
            let turn = if x == 0 { current_turn } else { u32::from(x) };
            let frame = if y == 255 { u32::MAX } else { u32::from(y) };
            format!(
                r#"{{"event":"websocket:notify","payload":{{"turn":{turn},"frame":{frame},"mark":{z}}}}}"#
            )
        }
        5 => {
            r#"{"event":"websocket:notify","payload":{"mark":"utt-0007","frames":143}}"#.to_owned()
        }
        6 => r#"{"event":"websocket:something-new","x":[1,2]}"#.to_owned(),
        _ => String::from_utf8_lossy(&raw[..raw.len().min(usize::from(x))]).into_owned(),
    }
}

/// The state of one [`session_ops`] run.
struct Harness {
    session: Session,
    link: Option<AgentLink>,
    call: SampleRate,
    agent: SampleRate,
    lead: Duration,
    t0: Instant,
    now: Instant,
    caller_synth: Synth,
    agent_synth: Synth,
    frame: Vec<i16>,
    bytes: Vec<u8>,
    agent_buf: Vec<i16>,
    out: Vec<u8>,
    /// Start of the current pacing window (first frame sent since the last clear).
    window_start: Option<Instant>,
    window_frames: u64,
    speaking: bool,
    frames_budget: u32,
    summary: OpsSummary,
    /// `VOICEGATE_FUZZ_TRACE` is set: print every step (for debugging a seed or a crash).
    trace: bool,
}

impl Harness {
    /// Drains events and commands as the shell does after every step, checking them.
    fn drain(&mut self) {
        let mut n = 0;
        while let Some(e) = self.session.poll_event() {
            if self.trace {
                eprintln!("  event {e:?}");
            }
            n += 1;
            assert!(
                n < MAX_OUTPUTS_PER_STEP,
                "more than {MAX_OUTPUTS_PER_STEP} events in one step"
            );
            match e {
                Event::BargeIn(b) => {
                    self.summary.barge_ins += 1;
                    assert!(b.onset <= b.at, "barge-in onset after the decision");
                }
                Event::SpeechStarted { onset, at, .. } => {
                    assert!(!self.speaking, "SpeechStarted twice without SpeechEnded");
                    assert!(onset <= at);
                    self.speaking = true;
                    self.summary.speech_started += 1;
                }
                Event::SpeechEnded { .. } => {
                    assert!(self.speaking, "SpeechEnded without SpeechStarted");
                    self.speaking = false;
                }
                Event::PlayoutReached { .. } | Event::MarkReached { .. } => {
                    self.summary.playout_events += 1
                }
                Event::Dtmf { .. } => self.summary.dtmf += 1,
                _ => {}
            }
        }
        let mut n = 0;
        while let Some(c) = self.session.poll_command() {
            if self.trace {
                eprintln!("  command {c:?}");
            }
            n += 1;
            assert!(
                n < MAX_OUTPUTS_PER_STEP,
                "more than {MAX_OUTPUTS_PER_STEP} commands in one step"
            );
            match c {
                Command::ClearPlayback => {
                    // Vonage's queue is empty again: a new burst up to the lead is allowed.
                    self.summary.clears += 1;
                    self.window_start = None;
                    self.window_frames = 0;
                }
                Command::Notify { .. } => self.summary.notifies += 1,
            }
        }
        assert_eq!(
            self.session.is_caller_speaking(),
            self.speaking,
            "speech events disagree with the state"
        );
    }

    /// One `poll_transmit` at the current time; checks the frame and the pacing bound.
    fn transmit_once(&mut self) -> bool {
        let due_later = self.session.poll_timeout().is_some_and(|d| d > self.now);
        let Some(n) = self.session.poll_transmit(self.now, &mut self.out) else {
            // An agent interrupt takes effect inside poll_transmit and queues a clear.
            self.drain();
            return false;
        };
        assert!(
            !due_later,
            "a frame came out before poll_timeout said it was due"
        );
        assert_eq!(
            n,
            self.call.frame_bytes(),
            "outbound frame of {n} bytes at {}",
            self.call
        );
        let start = *self.window_start.get_or_insert(self.now);
        self.window_frames += 1;
        let elapsed = (self.now - start).as_millis() as u64;
        let lead = (self.lead.as_millis() as u64).div_ceil(20);
        let bound = elapsed / 20 + lead + 2;
        assert!(
            self.window_frames <= bound,
            "{} frames sent in {elapsed} ms with a lead of {:?} (bound {bound})",
            self.window_frames,
            self.lead
        );
        self.summary.frames_out += 1;
        self.drain();
        true
    }

    /// Transmits until nothing is due (bounded: a runaway pacer trips the bound long before).
    fn transmit_all(&mut self) {
        for _ in 0..256 {
            if !self.transmit_once() {
                break;
            }
        }
    }

    fn caller_frame(&mut self, kind: Kind, a: u8, b: u8, raw: &[u8]) {
        let n = self.call.frame_samples();
        self.caller_synth
            .fill(kind, a, b, self.call, raw, &mut self.frame[..n]);
        let m = codec::encode_into(&self.frame[..n], &mut self.bytes).expect("frame buffer");
        let r = self.session.handle_caller_frame(self.now, &self.bytes[..m]);
        assert!(r.is_ok(), "a valid frame was rejected: {r:?}");
        if self.trace {
            let f = self.session.last_features();
            eprintln!(
                "  caller frame {kind:?} voiced={} level={:.1} floor={:.1} echo={:.1} queued={:?}",
                f.voiced,
                f.level_dbfs,
                f.noise_floor_dbfs,
                self.session.last_echo_dbfs(),
                self.session.queued_at_vonage(self.now)
            );
        }
        self.summary.frames_in += 1;
        self.frames_budget = self.frames_budget.saturating_sub(1);
        self.drain();
    }

    fn agent_read(&mut self, max: usize) {
        if let Some(link) = self.link.as_mut() {
            let max = max.min(self.agent_buf.len());
            let got = link.read(&mut self.agent_buf[..max]);
            assert!(got <= max);
        }
    }

    fn step(&mut self, r: &mut Reader<'_>) {
        let op = r.u8() & 0x0f;
        if self.trace {
            eprintln!(
                "op {op} at byte {} ({:?} since start)",
                r.pos - 1,
                self.now - self.t0
            );
        }
        match op {
            ops::FRAME | ops::FRAME2 => {
                let (kind, a, b) = (Kind::from_byte(r.u8()), r.u8(), r.u8());
                let raw = if kind == Kind::Raw {
                    r.take(self.call.frame_bytes())
                } else {
                    &[]
                };
                self.caller_frame(kind, a, b, raw);
            }
            ops::BAD_FRAME => {
                let len = usize::from(r.u16()) % 2049;
                let len = if len == self.call.frame_bytes() {
                    len + 1
                } else {
                    len
                };
                let fill = r.u8();
                let frame: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
                let res = self.session.handle_caller_frame(self.now, &frame);
                assert!(
                    res.is_err(),
                    "a {len}-byte frame at {} was accepted",
                    self.call
                );
                self.drain();
            }
            ops::SAMPLES => {
                let (kind, a, b, delta) = (Kind::from_byte(r.u8()), r.u8(), r.u8(), r.u8());
                let n = self.call.frame_samples();
                let len = if delta == 0 {
                    n
                } else {
                    (n as isize + isize::from(delta) - 128).clamp(0, 2048) as usize
                };
                let mut samples = vec![0i16; len];
                self.caller_synth
                    .fill(kind, a, b, self.call, &[], &mut samples);
                let res = self.session.handle_caller_samples(self.now, &samples);
                assert_eq!(
                    res.is_ok(),
                    len == n,
                    "handle_caller_samples of {len} at {}: {res:?}",
                    self.call
                );
                if res.is_ok() {
                    self.summary.frames_in += 1;
                    self.frames_budget = self.frames_budget.saturating_sub(1);
                }
                self.drain();
            }
            ops::TEXT => {
                let (form, x, y, z) = (r.u8(), r.u8(), r.u8(), r.u8());
                let raw = if form % 8 == 7 {
                    r.take(usize::from(x))
                } else {
                    &[]
                };
                let turn = self.link.as_ref().map_or(0, |l| l.current_turn().0);
                let text = text_message(form, x, y, z, turn, raw);
                let _ = self.session.handle_text(self.now, &text);
                self.drain();
            }
            ops::WRITE | ops::WRITE2 => {
                let len = usize::from(r.u16()) % 8192;
                let (kind, a, b) = (Kind::from_byte(r.u8()), r.u8(), r.u8());
                let raw = if kind == Kind::Raw {
                    r.take(2 * len.min(64))
                } else {
                    &[]
                };
                let mut samples = vec![0i16; len];
                self.agent_synth
                    .fill(kind, a, b, self.agent, raw, &mut samples);
                if let Some(link) = self.link.as_mut() {
                    let space = link.space();
                    let took = link.write(&samples);
                    assert!(
                        took <= len && took <= space,
                        "write took {took} of {len} with {space} free"
                    );
                }
            }
            ops::START_TURN => {
                if let Some(link) = self.link.as_mut() {
                    let before = link.current_turn();
                    if let Ok(t) = link.start_turn() {
                        assert!(t != before && link.current_turn() == t);
                    }
                }
            }
            ops::END_TURN => {
                if let Some(link) = self.link.as_mut() {
                    let _ = link.end_turn();
                }
            }
            ops::MARK => {
                if let Some(Ok(id)) = self.link.as_mut().map(AgentLink::mark) {
                    assert!(id != 0, "mark ids start at 1");
                }
            }
            ops::INTERRUPT => {
                if let Some(link) = self.link.as_mut() {
                    let _ = link.interrupt();
                }
            }
            ops::ADVANCE => self.now += Duration::from_millis(u64::from(r.u8() % 101)),
            ops::TRANSMIT => self.transmit_all(),
            ops::READ => self.agent_read(usize::from(r.u8()) * 8),
            ops::TICK => {
                let n = r.u8() % 50 + 1;
                let (kind, a, b) = (Kind::from_byte(r.u8()), r.u8(), r.u8());
                for _ in 0..n {
                    if self.frames_budget == 0 {
                        break;
                    }
                    self.now += FRAME;
                    self.caller_frame(kind, a, b, &[]);
                    self.transmit_all();
                    self.agent_read(usize::MAX);
                }
            }
            _ => {
                let x = r.u8();
                if x == 0 {
                    self.link = None;
                    assert!(self.session.is_agent_gone());
                } else {
                    self.now += FRAME * u32::from(x % 50);
                }
            }
        }
        let _ = self.session.has_outbound();
        let _ = self.session.queued_at_vonage(self.now);
        self.summary.ops += 1;
    }
}

/// The session configuration encoded by the 4-byte header (see [`ops::header`]).
pub fn config_from_header(h: [u8; 4]) -> SessionConfig {
    let [b0, b1, b2, b3] = h;
    let call = CALL_RATES[usize::from(b0 % 3)];
    let agent = AGENT_RATES[usize::from((b0 / 3) % 4)];
    let mut c = SessionConfig::new(call, agent);
    c.forward = if (b0 / 12) % 2 == 1 {
        Forward::All
    } else {
        Forward::Speech
    };
    c.lead = Duration::from_millis(u64::from(b1 % 11) * 10);
    c.notify_every_frames = [0, 1, 3, 10][usize::from((b1 / 11) % 4)];
    c.bargein.enabled = b1 < 240;
    c.vad_aggressiveness =
        VadAggressiveness::from_level(b2 % 4).unwrap_or(VadAggressiveness::Aggressive);
    c.bargein.min_speech = FRAME * (1 + u32::from((b2 / 4) % 8));
    c.outbound_buffer = Duration::from_millis([100, 300, 1_000, 2_000][usize::from((b2 / 32) % 4)]);
    c.inbound_buffer = Duration::from_millis(if b2 >= 128 { 100 } else { 1_000 });
    c.onset = FRAME * (1 + u32::from(b3 % 4));
    c.hangover = FRAME * (1 + u32::from((b3 / 4) % 25));
    c.preroll = Duration::from_millis([0, 240, 480][usize::from((b3 / 100) % 3)]);
    c
}

/// `data` as a program for one [`Session`] and its [`AgentLink`].
///
/// The first 4 bytes choose the configuration ([`config_from_header`], built by
/// [`ops::header`]); then each operation is one byte (low nibble = [`ops`] code) and its
/// arguments. Runs at most 4096 operations and 3000 caller frames.
///
/// Invariants (each an `assert!`): no panic anywhere; every frame from `poll_transmit` is exactly
/// `call_rate.frame_bytes()` bytes; no frame comes out while `poll_timeout` is in the future;
/// frames sent since the first send after the last `clear` never exceed
/// `elapsed / 20 ms + ceil(lead / 20 ms) + 2`; each step yields fewer than 1000 events and 1000
/// commands; valid frames are accepted and invalid ones rejected; `SpeechStarted` and
/// `SpeechEnded` alternate and agree with `is_caller_speaking`; the session's counters agree
/// with what the harness saw.
pub fn session_ops(data: &[u8]) -> OpsSummary {
    let mut r = Reader { data, pos: 0 };
    let header = [r.u8(), r.u8(), r.u8(), r.u8()];
    let config = config_from_header(header);
    let Ok((session, link)) = Session::new(config) else {
        panic!("header {header:?} gave an invalid config {config:?}");
    };
    let t0 = Instant::now();
    let mut h = Harness {
        session,
        link: Some(link),
        call: config.call_rate,
        agent: config.agent_rate,
        lead: config.lead,
        t0,
        now: t0,
        caller_synth: Synth::default(),
        agent_synth: Synth::default(),
        frame: vec![0; MAX_FRAME_SAMPLES],
        bytes: vec![0; MAX_FRAME_SAMPLES * 2],
        agent_buf: vec![0; 4 * MAX_FRAME_SAMPLES],
        out: vec![0; 2 * MAX_FRAME_SAMPLES],
        window_start: None,
        window_frames: 0,
        speaking: false,
        frames_budget: MAX_FRAMES,
        summary: OpsSummary {
            configured: true,
            ..OpsSummary::default()
        },
        trace: std::env::var_os("VOICEGATE_FUZZ_TRACE").is_some(),
    };
    for _ in 0..MAX_OPS {
        if r.done() || h.frames_budget == 0 {
            break;
        }
        h.step(&mut r);
    }
    // Let whatever is queued play out, still under the same checks.
    for _ in 0..200 {
        h.now += FRAME;
        h.transmit_all();
    }
    let stats = *h.session.stats();
    assert_eq!(
        stats.frames_out,
        u64::from(h.summary.frames_out),
        "stats.frames_out disagrees"
    );
    assert_eq!(
        stats.frames_in,
        u64::from(h.summary.frames_in),
        "stats.frames_in disagrees"
    );
    assert_eq!(
        stats.barge_ins,
        u64::from(h.summary.barge_ins),
        "stats.barge_ins disagrees"
    );
    h.summary
}

/// The signature secret [`jwt_verify`] signs and verifies with (the §10.34 test secret).
pub const JWT_FUZZ_SECRET: &str = "voicegate-test-signature-secret-0123456789abcdef";
/// The clock [`jwt_verify`] verifies at (the §10.34 `iat`).
pub const JWT_FUZZ_NOW: u64 = 1_741_947_331;

/// `data` as webhook bodies: an event-URL body ([`webhooks::parse_event`]), an answer body
/// ([`AnswerWebhook::from_json`]) and, read as `k=v&k=v` (lossy UTF-8), an answer query
/// ([`AnswerWebhook::from_query_pairs`]).
///
/// Checks: no panic on any bytes; a body over [`webhooks::MAX_WEBHOOK_BODY`] is always
/// `TooLarge`; an accepted body is a JSON object whose answer `uuid` is non-empty; every error
/// and event kind displays.
pub fn webhook_body(data: &[u8]) {
    let too_large = data.len() > webhooks::MAX_WEBHOOK_BODY;
    let event = webhooks::parse_event(data);
    let answer = AnswerWebhook::from_json(data);
    for e in [event.as_ref().err(), answer.as_ref().err()]
        .into_iter()
        .flatten()
    {
        let _ = e.to_string();
    }
    if too_large {
        assert!(
            matches!(event, Err(webhooks::WebhookError::TooLarge { .. })),
            "{event:?}"
        );
        assert!(
            matches!(answer, Err(webhooks::WebhookError::TooLarge { .. })),
            "{answer:?}"
        );
    }
    if let Ok(ev) = &event {
        assert!(!ev.kind().is_empty());
        assert!(
            matches!(
                serde_json::from_slice::<serde_json::Value>(data),
                Ok(serde_json::Value::Object(_))
            ),
            "an event from a body that is not a JSON object"
        );
    }
    if let Ok(a) = &answer {
        assert!(!a.uuid.is_empty(), "an answer without a uuid");
    }
    let text = String::from_utf8_lossy(data);
    let pairs: Vec<(String, String)> = text
        .split('&')
        .take(256)
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (kv.to_owned(), String::new()),
        })
        .collect();
    if let Ok(a) = AnswerWebhook::from_query_pairs(pairs.clone()) {
        assert!(!a.uuid.is_empty(), "an answer without a uuid");
    }
    let _ = signed_webhook::query_json(&pairs);
}

/// `data` as input to the signed-webhook verifier ([`WebhookVerifier`]).
///
/// Byte 0 picks the mode, the rest is split at the first `0x00` into a token part and a body:
///
/// * even byte 0: the token part (lossy UTF-8) is an `Authorization` header value, verified
///   against the body (odd bit 1: as a GET query `k=v&…` instead);
/// * odd byte 0: the token part is the *claims segment* of a token that this function signs
///   with [`JWT_FUZZ_SECRET`] under an `HS256` header (bit 2 set: under a header of the fuzzed
///   algorithm name in byte 1), so the fuzzer reaches the claim checks behind the signature.
///
/// Checks: no panic; a token is only accepted when its header says `HS256`, its claims are a
/// JSON object with `iss == "Vonage"` and an `iat` inside the window, and its `payload_hash`
/// matches a non-empty body; an error never contains the token; a wrong secret never verifies.
pub fn jwt_verify(data: &[u8]) {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::{Hmac, Mac};

    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (token_part, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let verifier = WebhookVerifier::new(JWT_FUZZ_SECRET);
    let pairs: Vec<(String, String)> = String::from_utf8_lossy(body)
        .split('&')
        .filter(|s| !s.is_empty())
        .take(64)
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (kv.to_owned(), String::new()),
        })
        .collect();
    let payload = if mode & 2 != 0 {
        Payload::Query(&pairs)
    } else {
        Payload::Body(body)
    };
    let token = if mode & 1 == 0 {
        let header = String::from_utf8_lossy(token_part).into_owned();
        let r = verifier.verify_header(Some(header.as_bytes()), payload, JWT_FUZZ_NOW);
        if let Ok(t) = signed_webhook::bearer_token(Some(header.as_bytes())) {
            check_jwt_outcome(&verifier, t, &r, payload);
        }
        return;
    } else {
        let alg = if mode & 4 != 0 {
            const ALGS: [&str; 8] = [
                "HS256", "none", "RS256", "HS512", "ES256", "NONE", "hs256", "PS256",
            ];
            ALGS[usize::from(rest.first().copied().unwrap_or(0)) % ALGS.len()]
        } else {
            "HS256"
        };
        let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        let c = URL_SAFE_NO_PAD.encode(token_part);
        let signing_input = format!("{h}.{c}");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(JWT_FUZZ_SECRET.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    };
    let r = verifier.verify(&token, payload, JWT_FUZZ_NOW);
    check_jwt_outcome(&verifier, &token, &r, payload);
    // The same token under another secret never verifies.
    let other = WebhookVerifier::new("not-the-secret");
    assert!(
        other.verify(&token, payload, JWT_FUZZ_NOW).is_err(),
        "verified under the wrong secret"
    );
}

fn check_jwt_outcome(
    verifier: &WebhookVerifier,
    token: &str,
    r: &Result<signed_webhook::VerifiedToken, JwtError>,
    payload: Payload<'_>,
) {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    match r {
        Err(e) => {
            let shown = format!("{e} {e:?} {}", e.reason());
            for part in token.split('.').filter(|p| p.len() >= 8) {
                assert!(!shown.contains(part), "an error shows the token: {shown}");
            }
        }
        Ok(v) => {
            // serde_json skips the strings of ignored fields without checking their UTF-8, so a
            // verified token may carry invalid UTF-8 there (crash-claims-invalid-utf8): read the
            // segments lossily, which keeps the JSON structure.
            let json = |seg: Option<&str>| {
                seg.and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
                    .and_then(|b| {
                        serde_json::from_str::<serde_json::Value>(&String::from_utf8_lossy(&b)).ok()
                    })
            };
            let mut parts = token.split('.');
            let header = json(parts.next()).expect("an accepted token has a JSON header");
            assert_eq!(header["alg"], "HS256", "accepted alg {}", header["alg"]);
            let claims = json(parts.next()).expect("an accepted token has JSON claims");
            assert_eq!(claims["iss"], signed_webhook::ISSUER);
            let window = verifier.replay_window().as_secs();
            assert!(
                v.iat <= JWT_FUZZ_NOW + 30 && JWT_FUZZ_NOW - v.iat.min(JWT_FUZZ_NOW) <= window,
                "iat {} outside the window",
                v.iat
            );
            let needs_hash = match payload {
                Payload::Body(b) => !b.iter().all(u8::is_ascii_whitespace),
                Payload::Query(q) => !q.is_empty(),
                Payload::Unchecked => false,
            };
            if needs_hash {
                assert!(
                    claims["payload_hash"].is_string(),
                    "a body accepted without payload_hash"
                );
            }
        }
    }
}
