//! One call's audio, as a synchronous state machine: inputs are `handle_*`, outputs are `poll_*`,
//! and time is always passed in (no clock reads, no threads, no IO).
//!
//! ```text
//! caller frame ─▶ handle_caller_frame(now, &bytes)
//!                   decode ─▶ level ─▶ echo model (what we played, when) ─▶ VAD + noise floor
//!                   ─▶ caller speech? ─▶ speech state (onset/hangover) ─▶ events, pre-roll
//!                                     └▶ barge-in detector ─▶ clear, discard the turn
//!                   ─▶ resample to the agent rate ─▶ agent's inbound ring
//! agent rings ───▶ poll_transmit(now, &mut buf)  (when the pacer says a frame is due)
//!                   markers (turns, marks, interrupt) ─▶ chunker ─▶ resample ─▶ exact frame
//! text ─────────▶ handle_text(now, &str): connected, dtmf, cleared, notify
//! ```
//!
//! After every `handle_*` and every frame from `poll_transmit`, the shell drains
//! [`Session::poll_command`] (and sends each command right away, so `notify` marks land after the
//! right frame) and [`Session::poll_event`].
//!
//! Real-time: everything is allocated in [`Session::new`]; no `handle_*`/`poll_*` allocates or
//! locks (proved by `tests/no_alloc.rs`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::audio::{
    FRAME, MAX_CALL_FRAME_BYTES, SILENCE_DBFS, SampleRate, TurnId, level_dbfs, mean_power,
    power_to_dbfs,
};
use super::bargein::{BargeInDetector, Evidence, Verdict, band_excess_db, unexplained_dbfs};
use super::chunker::Chunker;
use super::codec::{self, FrameError};
use super::config::{ConfigError, Forward, SessionConfig};
use super::delays::StageDelays;
use super::echo::EchoModel;
use super::events::{BargeIn, Command, Event};
use super::link::{AgentLink, Control, SessionEnds};
use super::pacing::Pacer;
use super::preroll::Preroll;
use super::resample::FrameResampler;
use super::spectrum::{BandAnalyzer, BandNoiseFloor, Bands, SILENT_BANDS};
use super::stats::Stats;
use super::tone::ToneDetector;
use super::vad::{FrameFeatures, SpeechState, SpeechTransition, VoiceDetector};
use crate::vonage::media_protocol::{self, MediaEvent, TextError};

/// Events held for the shell before the oldest are dropped (and counted). The shell drains them
/// after every caller frame and every transmit; one of those raises a few at most.
const EVENT_CAPACITY: usize = 16;
/// Commands held for the shell.
const COMMAND_CAPACITY: usize = 64;
/// Sent frames remembered for the echo reference beyond the pacing lead's: they are taken when
/// the next caller frame arrives, so this is how long inbound may stall (320 ms) before the
/// oldest are forgotten. The log holds `frames_of(lead)` + this many.
const PLAYOUT_SLACK: usize = 16;
/// Inside an utterance, a voiced frame this far above the noise floor continues it (dB).
const CONTINUE_SNR_DB: f32 = 1.0;
/// Inside an utterance, a voiced frame whose band evidence is this much weaker than a new
/// utterance needs still continues it (dB).
const CONTINUE_EXCESS_SLACK_DB: f32 = 6.0;
/// Unvoiced energy this many frames after the last voiced one still belongs to the utterance
/// (a trailing fricative or plosive release: "...facts", "...stop").
const TRAILING_FRAMES: u32 = 3;
/// Band noise floors are minimum statistics, under the noise's mean: each band's noise counts
/// this many times its floor (3 dB) before energy is unexplained.
const BAND_NOISE_K: f32 = 2.0;
/// A frame is unexplained energy when the power left after subtracting noise and echo (each
/// with its margin) is at least this far above... the explained power, dB.
const BAND_EXCESS_DB: f32 = -6.0;
/// Smoothing of the modulation measure (time constant ≈ 7 frames, 140 ms).
const MODULATION_ALPHA: f32 = 0.15;
/// One frame-to-frame step counts at most this much (a click must not look like a voice).
const MODULATION_STEP_CAP_DB: f32 = 12.0;
/// Modulation a voice shows, dB per frame.
const MIN_MODULATION_DB: f32 = 1.0;
/// Frames of played audio that make the bot "playing" (200 ms).
const BOT_PLAYING_FRAMES: usize = 10;
/// How long to wait for `websocket:cleared` before sending audio again anyway (§1.6).
const CLEARED_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a text message was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TextRejected {
    /// It did not parse.
    Invalid(TextError),
    /// `websocket:connected` announced another rate than the NCCO asked for.
    RateMismatch {
        /// The configured rate, Hz.
        expected: u32,
        /// The announced rate, Hz.
        actual: u32,
    },
    /// A second `websocket:connected`.
    DuplicateConnected,
}

impl std::fmt::Display for TextRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(e) => e.fmt(f),
            Self::RateMismatch { expected, actual } => {
                write!(
                    f,
                    "connected at {actual} Hz but the NCCO asked for {expected} Hz"
                )
            }
            Self::DuplicateConnected => write!(f, "second websocket:connected message"),
        }
    }
}

impl std::error::Error for TextRejected {}

#[derive(Debug, Clone, Copy)]
struct Played {
    start: Instant,
    level_dbfs: f32,
    bands: Bands,
}

/// The echo reference of one caller frame, given from outside (offline evaluation of recordings;
/// see [`Session::set_external_reference`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExternalReference {
    /// Level of what the caller's side heard from the bot during the frame, dBFS.
    pub level_dbfs: f32,
    /// Its band powers.
    pub bands: Bands,
}

impl ExternalReference {
    /// The reference of one recorded bot frame at the call rate (`None`: the bot is silent).
    pub fn of_frame(frame: Option<&[i16]>, analyser: &mut BandAnalyzer) -> Self {
        match frame {
            Some(f) => Self {
                level_dbfs: level_dbfs(f),
                bands: analyser.analyse(f),
            },
            None => Self {
                level_dbfs: SILENCE_DBFS,
                bands: SILENT_BANDS,
            },
        }
    }
}

/// The bot is paused on a barge-in suspicion.
#[derive(Debug, Clone, Copy)]
struct Paused {
    /// When the caller stops hearing the bot (the decision plus what was queued at Vonage).
    silent_at: Instant,
}

/// Frames sent in the current turn, kept for a resume that repeats the last few
/// ([`BargeInConfig::resume_rewind`](super::config::BargeInConfig::resume_rewind)).
#[derive(Debug)]
struct SentHistory {
    /// `capacity` frames of `MAX_CALL_FRAME_BYTES`, a ring.
    bytes: Box<[u8]>,
    capacity: usize,
    /// Frames stored (≤ capacity), the newest at `head - 1`.
    len: usize,
    head: usize,
    frame_bytes: usize,
    /// Frames still to send again, oldest first.
    replay: usize,
}

impl SentHistory {
    fn new(capacity: usize, frame_bytes: usize) -> Self {
        Self {
            bytes: vec![0; capacity * MAX_CALL_FRAME_BYTES].into_boxed_slice(),
            capacity,
            len: 0,
            head: 0,
            frame_bytes,
            replay: 0,
        }
    }

    fn push(&mut self, frame: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        let at = self.head * MAX_CALL_FRAME_BYTES;
        self.bytes[at..at + frame.len()].copy_from_slice(frame);
        self.head = (self.head + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
    }

    fn forget(&mut self) {
        self.len = 0;
        self.replay = 0;
    }

    /// Schedules the last `frames` (at most what is stored) to be sent again; returns how many.
    fn rewind(&mut self, frames: usize) -> usize {
        self.replay = frames.min(self.len);
        self.replay
    }

    /// The next frame to send again, if any.
    fn next_replay(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.replay == 0 || out.len() < self.frame_bytes {
            return None;
        }
        let idx = (self.head + self.capacity - self.replay) % self.capacity;
        self.replay -= 1;
        let at = idx * MAX_CALL_FRAME_BYTES;
        out[..self.frame_bytes].copy_from_slice(&self.bytes[at..at + self.frame_bytes]);
        Some(self.frame_bytes)
    }
}

#[derive(Debug, Clone, Copy)]
struct NotifySeen {
    turn: TurnId,
    frame: u32,
    at: Instant,
}

/// One call's audio pipeline. See the module docs for the run loop.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    call_rate: SampleRate,
    agent_rate: SampleRate,
    connected: bool,
    stats: Stats,

    // inbound
    frame: Box<[i16]>,
    agent_frame: Box<[i16]>,
    to_agent: FrameResampler,
    vad: VoiceDetector,
    speech: SpeechState,
    bargein: BargeInDetector,
    tone: ToneDetector,
    echo: EchoModel,
    /// Offline evaluation of recordings: the echo reference level of the next caller frame,
    /// given from outside instead of taken from what was sent.
    external_reference: Option<ExternalReference>,
    bands_in: BandAnalyzer,
    bands_out: BandAnalyzer,
    band_noise: BandNoiseFloor,
    paused: Option<Paused>,
    history: SentHistory,
    preroll: Preroll,
    stream_pos: u64,
    utterance_start_pos: u64,
    last_features: FrameFeatures,
    last_echo_dbfs: f32,
    last_caller: bool,
    last_excess_db: f32,
    last_evidence: Evidence,
    /// Frames since the last voiced frame of the caller's utterance.
    since_voiced: u32,
    last_level_dbfs: f32,
    modulation_db: f32,

    // outbound
    ends: SessionEnds,
    read_pos: u64,
    chunker: Chunker,
    pacer: Pacer,
    /// Turn of the samples being read from the agent.
    turn: TurnId,
    frames_in_turn: u32,
    /// Turn whose first frame has been sent (re-arms barge-in once per turn).
    armed_turn: TurnId,
    /// A new turn started while the caller was still in the utterance that barged in: re-arm
    /// only once that utterance ends, so one interruption fires once.
    rearm_after_utterance: bool,
    /// After an interruption: drop agent audio until a turn newer than this starts.
    discard_until_after: Option<TurnId>,
    turn_end_pending: bool,
    final_mark: Option<(TurnId, u32)>,
    pending_marks: [u32; 8],
    pending_marks_len: usize,
    awaiting_cleared: Option<Instant>,
    last_notify: Option<NotifySeen>,
    turn_first_play: Option<Instant>,
    playout: VecDeque<Played>,
    /// Frames `playout` holds at most (see [`PLAYOUT_SLACK`]).
    playout_cap: usize,
    was_playing: bool,

    events: VecDeque<Event>,
    commands: VecDeque<Command>,
}

impl Session {
    /// Builds a session and the agent's end of it. All allocation happens here.
    pub fn new(config: SessionConfig) -> Result<(Session, AgentLink), ConfigError> {
        config.validate()?;
        let resampler_err = |from: SampleRate, to: SampleRate| ConfigError::Resampler {
            from: from.hz(),
            to: to.hz(),
        };
        let (call, agent) = (config.call_rate, config.agent_rate);
        let inbound_cap = samples_in(agent, config.inbound_buffer);
        let outbound_cap = samples_in(agent, config.outbound_buffer);
        let (ends, link) = AgentLink::pair(inbound_cap, outbound_cap, agent, call);
        let playout_cap = super::vad::frames_of(config.lead) as usize + PLAYOUT_SLACK;
        let session = Session {
            config,
            call_rate: call,
            agent_rate: agent,
            connected: false,
            stats: Stats::default(),
            // One frame each at its own rate, not at the largest one: this is per-call memory.
            frame: vec![0; call.frame_samples()].into_boxed_slice(),
            agent_frame: vec![0; agent.frame_samples()].into_boxed_slice(),
            to_agent: FrameResampler::new(call, agent).map_err(|_| resampler_err(call, agent))?,
            vad: VoiceDetector::new(call, config.vad_aggressiveness)
                .map_err(|_| resampler_err(call, SampleRate::Hz16000))?,
            speech: SpeechState::new(config.onset, config.hangover),
            bargein: BargeInDetector::new(&config.bargein),
            tone: ToneDetector::new(call),
            echo: EchoModel::new(),
            external_reference: None,
            bands_in: BandAnalyzer::new(call),
            bands_out: BandAnalyzer::new(call),
            band_noise: BandNoiseFloor::new(),
            paused: None,
            history: SentHistory::new(
                super::vad::frames_of(config.bargein.resume_rewind) as usize,
                call.frame_samples() * 2,
            ),
            preroll: Preroll::new(preroll_samples(call, config.preroll)),
            stream_pos: 0,
            utterance_start_pos: 0,
            last_features: FrameFeatures {
                voiced: false,
                level_dbfs: SILENCE_DBFS,
                noise_floor_dbfs: SILENCE_DBFS,
            },
            last_echo_dbfs: SILENCE_DBFS,
            last_caller: false,
            last_excess_db: SILENCE_DBFS,
            last_evidence: Evidence::default(),
            since_voiced: u32::MAX,
            last_level_dbfs: SILENCE_DBFS,
            modulation_db: 0.0,
            ends,
            read_pos: 0,
            chunker: Chunker::new(agent, call).map_err(|_| resampler_err(agent, call))?,
            pacer: Pacer::new(config.lead),
            turn: TurnId(0),
            frames_in_turn: 0,
            armed_turn: TurnId(0),
            rearm_after_utterance: false,
            discard_until_after: None,
            turn_end_pending: false,
            final_mark: None,
            pending_marks: [0; 8],
            pending_marks_len: 0,
            awaiting_cleared: None,
            last_notify: None,
            turn_first_play: None,
            playout: VecDeque::with_capacity(playout_cap),
            playout_cap,
            was_playing: false,
            events: VecDeque::with_capacity(EVENT_CAPACITY),
            commands: VecDeque::with_capacity(COMMAND_CAPACITY),
        };
        Ok((session, link))
    }

    /// The configuration the session runs with.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The call's media rate.
    pub fn call_rate(&self) -> SampleRate {
        self.call_rate
    }

    /// The agent's rate.
    pub fn agent_rate(&self) -> SampleRate {
        self.agent_rate
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether the caller's turn is open: between [`Event::SpeechStarted`] and
    /// [`Event::SpeechEnded`] (speech plus its hangover).
    pub fn is_caller_speaking(&self) -> bool {
        self.speech.is_in_utterance()
    }

    /// The smoothed frame-level speech state (what VAD scoring measures): speech, bridged over
    /// gaps of up to 120 ms, without the end-of-turn hangover.
    pub fn is_speech_now(&self) -> bool {
        self.speech.is_speaking()
    }

    /// Features of the last caller frame (for metrics and debugging).
    pub fn last_features(&self) -> FrameFeatures {
        self.last_features
    }

    /// Whether the last caller frame counted as caller speech (before smoothing).
    pub fn last_frame_was_speech(&self) -> bool {
        self.last_caller
    }

    /// Band evidence of the last caller frame: power neither noise nor echo explains, over the
    /// power they explain, dB.
    pub fn last_excess_db(&self) -> f32 {
        self.last_excess_db
    }

    /// The barge-in evidence of the last caller frame.
    pub fn last_evidence(&self) -> Evidence {
        self.last_evidence
    }

    /// Predicted echo level of the last caller frame, dBFS.
    pub fn last_echo_dbfs(&self) -> f32 {
        self.last_echo_dbfs
    }

    /// The learned echo path, if any.
    pub fn echo_path(&self) -> Option<super::echo::EchoPath> {
        self.echo.path()
    }

    /// Whether the bot is paused on a barge-in suspicion (two-stage barge-in).
    pub fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    /// For offline evaluation of recorded calls only: from now on the echo model's reference is
    /// `reference` for every caller frame (until called again; `None` returns to what was
    /// actually sent). A recording cannot react to the session: when the session pauses or
    /// clears the bot, the bot's echo in the recording goes on, so the echo model must be told
    /// what the recorded caller's side really heard. On a live call the sent audio *is* that.
    pub fn set_external_reference(&mut self, reference: Option<ExternalReference>) {
        self.external_reference = reference;
    }

    /// Algorithmic delay the pipeline adds to caller audio on its way to the agent.
    pub fn inbound_delay(&self) -> Duration {
        self.to_agent.delay()
    }

    /// What each stage of this call's pipeline holds audio back or waits before it decides.
    pub fn stage_delays(&self) -> StageDelays {
        StageDelays::new(
            &self.config,
            self.to_agent.delay(),
            self.chunker.delay(),
            self.vad.delay(),
        )
    }

    /// Whether the agent has gone (its link was dropped).
    pub fn is_agent_gone(&self) -> bool {
        self.ends.outbound.is_abandoned()
    }

    // ---------------------------------------------------------------- inbound

    /// Handles one binary message from Vonage, received at `now`. A bad frame is counted,
    /// dropped and returned as an error; the call goes on.
    pub fn handle_caller_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<(), FrameError> {
        let n = match codec::decode_into(bytes, self.call_rate, &mut self.frame) {
            Ok(n) => n,
            Err(e) => {
                self.stats.frames_invalid += 1;
                return Err(e);
            }
        };
        self.stats.frames_in += 1;
        self.process_caller_frame(now, n);
        Ok(())
    }

    /// Handles one frame of already-decoded samples (exactly one frame at the call rate), e.g.
    /// from a WAV file in `voicegate eval`.
    pub fn handle_caller_samples(
        &mut self,
        now: Instant,
        samples: &[i16],
    ) -> Result<(), FrameError> {
        let n = self.call_rate.frame_samples();
        if samples.len() != n {
            self.stats.frames_invalid += 1;
            return Err(FrameError::WrongSize {
                expected: n * 2,
                actual: samples.len() * 2,
            });
        }
        self.frame[..n].copy_from_slice(samples);
        self.stats.frames_in += 1;
        self.process_caller_frame(now, n);
        Ok(())
    }

    fn process_caller_frame(&mut self, now: Instant, n: usize) {
        let power = mean_power(&self.frame[..n]);
        let level = power_to_dbfs(power);

        // What the caller heard from us during this frame: the echo reference.
        let mut played = SILENCE_DBFS;
        let mut played_bands = SILENT_BANDS;
        while let Some(p) = self.playout.front() {
            if p.start >= now {
                break;
            }
            played = played.max(p.level_dbfs);
            for (m, b) in played_bands.iter_mut().zip(p.bands.iter()) {
                *m = m.max(*b);
            }
            self.playout.pop_front();
        }
        if let Some(r) = self.external_reference {
            played = r.level_dbfs;
            played_bands = r.bands;
        }
        let echo_dbfs = self.echo.push_reference(played, &played_bands);

        self.vad
            .set_floor_hold_speech(!self.echo.is_reference_recent());
        let features = self.vad.analyse(&self.frame[..n], level);
        let bands = self.bands_in.analyse(&self.frame[..n]);
        let band_noise = *self.band_noise.update(&bands);
        // A DTMF tone pair is never the caller talking (and a tone's last partial frame neither).
        self.tone.detect_with_power(&self.frame[..n], power);
        let tonal = self.tone.is_tonal();
        let (snr_min, margin) = (self.config.snr_min_db, self.config.bargein.echo_margin_db);
        let mut echo_k = [0.0f32; super::spectrum::BANDS];
        for (b, k) in echo_k.iter_mut().enumerate() {
            *k = super::audio::dbfs_to_power(margin + self.echo.band_spread_db(b));
        }
        let excess_db = band_excess_db(
            &bands,
            &band_noise,
            self.echo.predicted_bands(),
            BAND_NOISE_K,
            &echo_k,
        );
        let energy = !tonal && features.snr_db() >= snr_min && excess_db >= BAND_EXCESS_DB;
        let caller = energy && features.voiced;
        // Learn the echo from every frame while the bot's audio may be coming back, except while
        // a suspicion is open (the caller, most likely). Not only from frames the detector calls
        // echo: a model that under-predicts takes the echo for the caller and, kept away from
        // those frames, would never learn better. The caller's louder frames stay out through
        // the model's own outlier test and error cap.
        if self.echo.is_reference_recent() {
            self.echo.observe_bound(level, features.noise_floor_dbfs);
            self.echo.observe_lag_bounds(&bands, &band_noise);
        }
        if !self.bargein.is_suspecting() && self.echo.is_reference_recent() {
            self.echo.observe(level, features.noise_floor_dbfs);
            self.echo.observe_bands(&bands, &band_noise);
        }
        self.last_features = features;
        self.last_echo_dbfs = echo_dbfs;
        self.last_caller = caller;
        self.last_excess_db = excess_db;

        // Hysteresis: inside an utterance a weaker frame still continues it (word endings and
        // fricatives sit close to the noise), so the end of turn is timed from the real end of
        // speech rather than from the last loud syllable.
        let voiced_continues = features.voiced
            && features.snr_db() >= CONTINUE_SNR_DB
            && excess_db >= BAND_EXCESS_DB - CONTINUE_EXCESS_SLACK_DB;
        let tail_continues = self.since_voiced < TRAILING_FRAMES
            && features.snr_db() >= CONTINUE_SNR_DB
            && excess_db >= BAND_EXCESS_DB - CONTINUE_EXCESS_SLACK_DB;
        let continues =
            self.speech.is_in_utterance() && !tonal && (voiced_continues || tail_continues);
        self.since_voiced = if caller || (continues && voiced_continues) {
            0
        } else {
            self.since_voiced.saturating_add(1)
        };
        let transition = self.speech.update(caller || continues);
        match transition {
            Some(SpeechTransition::Started { onset_frames_ago }) => {
                let onset = now
                    .checked_sub(FRAME * (onset_frames_ago + 1))
                    .unwrap_or(now);
                if self.config.forward == Forward::Speech {
                    self.utterance_start_pos = self.stream_pos;
                    self.flush_preroll();
                    self.forward_frame(n);
                } else {
                    let m = self.forward_frame(n);
                    let back = u64::from(onset_frames_ago) * m as u64;
                    self.utterance_start_pos = self.stream_pos.saturating_sub(back + m as u64);
                }
                let stream_pos = self.utterance_start_pos;
                self.push_event(Event::SpeechStarted {
                    at: now,
                    onset,
                    stream_pos,
                });
            }
            Some(SpeechTransition::Ended { speech_frames }) => {
                if self.rearm_after_utterance {
                    self.rearm_after_utterance = false;
                    self.bargein.rearm();
                }
                self.forward_frame(n);
                let duration = FRAME * speech_frames;
                let stream_pos = self.stream_pos;
                self.push_event(Event::SpeechEnded {
                    at: now,
                    duration,
                    stream_pos,
                });
            }
            None => {
                if self.config.forward == Forward::All || self.speech.is_in_utterance() {
                    self.forward_frame(n);
                } else {
                    // Kept at the call rate, not resampled: most of a call is silence, and the
                    // pre-roll is resampled only if an utterance starts.
                    self.preroll.push(&self.frame[..n]);
                }
            }
        }

        // The bot is playing when what we played in the last 200 ms was audible (the corpus
        // scoring rule, and what a caller means by "talking over the bot"); its echo tail after
        // that is still explained by the echo model, but speech then is a new turn, not a barge-in.
        let bot_playing = self.echo.is_reference_active_within(BOT_PLAYING_FRAMES);
        // Syllable-rate modulation: the smoothed size of frame-to-frame level changes. A voice
        // swings by several dB between syllables; music and a hum do not.
        let step = (level - self.last_level_dbfs)
            .abs()
            .min(MODULATION_STEP_CAP_DB);
        self.last_level_dbfs = level;
        self.modulation_db += MODULATION_ALPHA * (step - self.modulation_db);
        let modulated = self.modulation_db >= MIN_MODULATION_DB;
        let evidence = Evidence {
            energy,
            speech: caller,
            modulated,
            caller_dbfs: unexplained_dbfs(&bands, &band_noise, self.echo.predicted_bands()),
        };
        self.last_evidence = evidence;
        match self.bargein.update_with(evidence, bot_playing) {
            Verdict::Nothing => {}
            Verdict::Suspect { onset_frames_ago } => {
                let onset = now
                    .checked_sub(FRAME * (onset_frames_ago + 1))
                    .unwrap_or(now);
                self.pause(now, onset);
            }
            Verdict::Release { .. } => self.resume(now),
            Verdict::Confirm(d) => {
                let onset = now
                    .checked_sub(FRAME * (d.onset_frames_ago + 1))
                    .unwrap_or(now);
                let info = BargeIn {
                    at: now,
                    onset,
                    turn: self.turn,
                    heard: self.heard(now),
                    caller_level_dbfs: features.level_dbfs,
                    echo_dbfs,
                    noise_floor_dbfs: features.noise_floor_dbfs,
                    speech: FRAME * d.speech_frames,
                };
                self.stats.barge_ins += 1;
                self.paused = None;
                self.interrupt_playback(now);
                self.push_event(Event::BargeIn(info));
            }
        }
    }

    /// Two-stage barge-in, first stage: stop handing frames to the shell. What is queued at
    /// Vonage (the pacing lead) still plays; nothing is discarded.
    fn pause(&mut self, now: Instant, onset: Instant) {
        let silent_at = now + self.pacer.queued(now);
        self.paused = Some(Paused { silent_at });
        self.stats.pauses += 1;
        self.push_event(Event::PlaybackPaused {
            at: now,
            onset,
            silent_at,
            turn: self.turn,
        });
    }

    /// The suspicion died: carry on from the frame where the pause began (or a little before it,
    /// with `resume_rewind`).
    fn resume(&mut self, now: Instant) {
        let Some(p) = self.paused.take() else {
            return;
        };
        let rewind = super::vad::frames_of(self.config.bargein.resume_rewind) as usize;
        if rewind > 0 {
            let n = self.history.rewind(rewind);
            self.frames_in_turn = self.frames_in_turn.saturating_sub(n as u32);
        }
        self.stats.false_interruptions += 1;
        self.push_event(Event::FalseInterruption {
            at: now,
            paused: now.saturating_duration_since(p.silent_at),
            turn: self.turn,
        });
    }

    /// An utterance starts (speech-only forwarding): its pre-roll goes to the agent, resampled
    /// now, frame by frame, by a resampler that starts afresh (it last ran at the end of the
    /// previous utterance, seconds ago). Up to `preroll / 20 ms` frames through the resampler at
    /// once (12 by default, ~30 µs at 16 → 24 kHz), on this one frame.
    fn flush_preroll(&mut self) {
        self.to_agent.reset();
        let f = self.call_rate.frame_samples();
        let (a, b) = self.preroll.as_slices();
        // The ring holds whole frames (its capacity is a whole number of them and every push is
        // one), so both slices split on frame boundaries.
        for frame in a.chunks_exact(f).chain(b.chunks_exact(f)) {
            let m = self.to_agent.process_frame(frame, &mut self.agent_frame);
            let (pushed, rest) = self.ends.inbound.push_partial_slice(&self.agent_frame[..m]);
            self.stream_pos += pushed.len() as u64;
            self.stats.agent_samples_dropped += rest.len() as u64;
        }
        self.preroll.clear();
    }

    /// The caller frame in `self.frame[..n]`, resampled to the agent's rate, into the ring.
    /// Returns the agent-rate samples it made.
    fn forward_frame(&mut self, n: usize) -> usize {
        let m = self
            .to_agent
            .process_frame(&self.frame[..n], &mut self.agent_frame);
        let (pushed, rest) = self.ends.inbound.push_partial_slice(&self.agent_frame[..m]);
        self.stream_pos += pushed.len() as u64;
        self.stats.agent_samples_dropped += rest.len() as u64;
        m
    }

    /// Handles one text message from Vonage.
    pub fn handle_text(&mut self, now: Instant, text: &str) -> Result<(), TextRejected> {
        let msg = match media_protocol::parse_text(text) {
            Ok(m) => m,
            Err(e) => {
                self.stats.text_invalid += 1;
                return Err(TextRejected::Invalid(e));
            }
        };
        match msg {
            MediaEvent::Connected { rate } => {
                if self.connected {
                    self.stats.text_invalid += 1;
                    return Err(TextRejected::DuplicateConnected);
                }
                if rate != self.call_rate {
                    self.stats.text_invalid += 1;
                    return Err(TextRejected::RateMismatch {
                        expected: self.call_rate.hz(),
                        actual: rate.hz(),
                    });
                }
                self.connected = true;
                self.push_event(Event::Connected { rate });
            }
            MediaEvent::Dtmf { digit, duration_ms } => {
                self.stats.dtmf += 1;
                let duration = duration_ms.map(|ms| Duration::from_millis(u64::from(ms)));
                self.push_event(Event::Dtmf {
                    digit,
                    duration,
                    at: now,
                });
            }
            MediaEvent::Cleared => {
                self.awaiting_cleared = None;
                self.push_event(Event::Cleared);
            }
            MediaEvent::Notify(mark) => {
                let turn = TurnId(mark.turn);
                self.last_notify = Some(NotifySeen {
                    turn,
                    frame: mark.frame,
                    at: now,
                });
                let complete = self.final_mark == Some((turn, mark.frame));
                self.push_event(Event::PlayoutReached {
                    turn,
                    heard: FRAME * mark.frame,
                    complete,
                });
                if mark.mark != 0 {
                    self.push_event(Event::MarkReached { id: mark.mark });
                }
            }
            MediaEvent::ForeignNotify | MediaEvent::Unknown => self.stats.text_unknown += 1,
        }
        Ok(())
    }

    /// Whether `websocket:connected` has been seen.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    // ---------------------------------------------------------------- outbound

    /// How much of the current turn the caller has heard by `now`: the last `notify` for it plus
    /// the time played since, capped at what was sent; without a `notify`, the pacer's model.
    fn heard(&self, now: Instant) -> Duration {
        let sent = self.frames_in_turn;
        let frames = match self.last_notify {
            Some(n) if n.turn == self.turn => {
                let since =
                    (now.saturating_duration_since(n.at).as_millis() / FRAME.as_millis()) as u32;
                n.frame.saturating_add(since).min(sent)
            }
            _ => {
                let queued = self
                    .pacer
                    .queued(now)
                    .as_millis()
                    .div_ceil(FRAME.as_millis()) as u32;
                sent.saturating_sub(queued)
            }
        };
        FRAME * frames
    }

    /// Stops the bot: clear Vonage's buffer, drop what is queued here, discard the rest of the
    /// turn until the agent starts a new one.
    fn interrupt_playback(&mut self, now: Instant) {
        self.push_command(Command::ClearPlayback);
        self.awaiting_cleared = Some(now + CLEARED_TIMEOUT);
        self.pacer.clear();
        self.chunker.clear();
        self.history.forget();
        self.playout.clear();
        self.echo.clear_reference();
        self.discard_until_after = Some(self.turn);
        self.turn_end_pending = false;
        self.final_mark = None;
        self.pending_marks_len = 0;
        self.drain_discarded();
    }

    /// Drops queued agent audio of the interrupted turn, up to the next newer turn's start.
    fn drain_discarded(&mut self) {
        loop {
            let limit = match self.ends.control.peek() {
                Ok(ctl) if ctl.pos() <= self.read_pos => {
                    let ctl = *ctl;
                    let _ = self.ends.control.pop();
                    if self.apply_control(ctl) {
                        return;
                    }
                    continue;
                }
                Ok(ctl) => ctl.pos() - self.read_pos,
                Err(_) => u64::MAX,
            };
            let avail = self.ends.outbound.slots() as u64;
            let n = avail.min(limit) as usize;
            if n == 0 {
                return;
            }
            if let Ok(chunk) = self.ends.outbound.read_chunk(n) {
                chunk.commit_all();
            }
            self.read_pos += n as u64;
            self.stats.samples_discarded += n as u64;
        }
    }

    /// Applies one marker. Returns true when discarding ended (a newer turn started).
    fn apply_control(&mut self, ctl: Control) -> bool {
        match ctl {
            Control::StartTurn { turn, .. } => {
                if self.chunker.has_partial() {
                    // A new turn without an end to the last one: pad out the old one first.
                    self.chunker.finish_turn();
                }
                self.turn = turn;
                self.frames_in_turn = 0;
                self.history.forget();
                self.turn_first_play = None;
                if let Some(old) = self.discard_until_after
                    && turn > old
                {
                    self.discard_until_after = None;
                    return true;
                }
                false
            }
            Control::EndTurn { .. } => {
                if self.discard_until_after.is_none() {
                    self.chunker.finish_turn();
                    self.turn_end_pending = true;
                }
                false
            }
            Control::Mark { id, .. } => {
                if self.pending_marks_len < self.pending_marks.len() {
                    self.pending_marks[self.pending_marks_len] = id;
                    self.pending_marks_len += 1;
                }
                false
            }
            Control::Interrupt { .. } => false,
        }
    }

    /// Handles an agent `interrupt` anywhere in the control queue: it takes effect now, not
    /// after the audio queued before it.
    fn check_agent_interrupt(&mut self, now: Instant) {
        let n = self.ends.control.slots();
        if n == 0 {
            return;
        }
        let Ok(chunk) = self.ends.control.read_chunk(n) else {
            return;
        };
        let (a, b) = chunk.as_slices();
        let Some(idx) = a
            .iter()
            .chain(b.iter())
            .enumerate()
            .filter(|(_, c)| matches!(c, Control::Interrupt { .. }))
            .map(|(i, _)| i)
            .last()
        else {
            return;
        };
        let (upto, last_turn) = {
            let mut last_turn = None;
            let mut pos = 0;
            for (i, c) in a.iter().chain(b.iter()).enumerate().take(idx + 1) {
                if let Control::StartTurn { turn, .. } = c {
                    last_turn = Some(*turn);
                }
                if i == idx {
                    pos = c.pos();
                }
            }
            (pos, last_turn)
        };
        chunk.commit(idx + 1);
        if let Some(t) = last_turn {
            self.turn = t;
        }
        // Discard audio before the interrupt position, then stop playback.
        let avail = self.ends.outbound.slots() as u64;
        let n = upto.saturating_sub(self.read_pos).min(avail) as usize;
        if n > 0 {
            if let Ok(chunk) = self.ends.outbound.read_chunk(n) {
                chunk.commit_all();
            }
            self.read_pos += n as u64;
            self.stats.samples_discarded += n as u64;
        }
        self.push_command(Command::ClearPlayback);
        self.awaiting_cleared = Some(now + CLEARED_TIMEOUT);
        self.pacer.clear();
        self.chunker.clear();
        self.history.forget();
        self.playout.clear();
        // The agent decided for itself: any suspicion on the old audio is moot.
        self.paused = None;
        self.bargein.abandon();
        self.turn_end_pending = false;
        self.final_mark = None;
        self.pending_marks_len = 0;
        // Audio after the interrupt belongs to whatever turn the agent starts next; an agent that
        // keeps writing to the old turn is playing on purpose (it interrupted itself to restart).
    }

    /// Moves agent audio into the chunker until a frame is ready or the ring is empty.
    fn fill_chunker(&mut self) {
        while self.chunker.space() > 0 {
            let limit = match self.ends.control.peek() {
                Ok(ctl) if ctl.pos() <= self.read_pos => {
                    let ctl = *ctl;
                    let _ = self.ends.control.pop();
                    self.apply_control(ctl);
                    continue;
                }
                Ok(ctl) => ctl.pos() - self.read_pos,
                Err(_) => u64::MAX,
            };
            if self.discard_until_after.is_some() {
                let before = self.read_pos;
                self.drain_discarded();
                if self.read_pos == before && self.discard_until_after.is_some() {
                    return;
                }
                continue;
            }
            let avail = self.ends.outbound.slots() as u64;
            let n = avail.min(limit).min(self.chunker.space() as u64) as usize;
            if n == 0 {
                return;
            }
            let Ok(chunk) = self.ends.outbound.read_chunk(n) else {
                return;
            };
            let (a, b) = chunk.as_slices();
            let took = self.chunker.push(a) + self.chunker.push(b);
            debug_assert_eq!(took, n);
            chunk.commit_all();
            self.read_pos += n as u64;
        }
    }

    /// When the next outbound frame is due: `None` means now (if there is audio). The shell
    /// sleeps until then, or until the agent writes.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.awaiting_cleared, self.pacer.next_due()) {
            (Some(c), Some(d)) => Some(c.max(d)),
            (Some(c), None) => Some(c),
            (None, d) => d,
        }
    }

    /// Whether agent audio is waiting to be sent.
    pub fn has_outbound(&self) -> bool {
        self.chunker.has_frame()
            || self.chunker.has_partial()
            || !self.ends.outbound.is_empty()
            || !self.ends.control.is_empty()
    }

    /// Room in the outbound ring, samples at the agent rate (what the agent could write now).
    pub fn outbound_room(&self) -> usize {
        self.ends.outbound.buffer().capacity() - self.ends.outbound.slots()
    }

    /// Size of the outbound ring, samples at the agent rate.
    pub fn outbound_capacity(&self) -> usize {
        self.ends.outbound.buffer().capacity()
    }

    /// Writes the next outbound frame into `out` if one is due at `now` and audio is ready;
    /// returns its length (always exactly one frame at the call rate). After sending it, drain
    /// [`poll_command`](Self::poll_command).
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        self.check_agent_interrupt(now);
        if let Some(deadline) = self.awaiting_cleared {
            if now < deadline {
                // Still drop interrupted audio while we wait, so the ring never backs up.
                if self.discard_until_after.is_some() {
                    self.drain_discarded();
                }
                return None;
            }
            self.awaiting_cleared = None;
        }
        if self.paused.is_some() {
            if self.discard_until_after.is_some() {
                self.drain_discarded();
            }
            return None;
        }
        if !self.pacer.is_due(now) {
            return None;
        }
        let len = out.len().min(MAX_CALL_FRAME_BYTES);
        if let Some(bytes) = self.history.next_replay(&mut out[..len]) {
            // Resuming with a rewind: the last frames before the pause, again.
            let start = self.pacer.on_sent(now);
            let bands = self.bands_out.analyse_bytes(&out[..bytes]);
            self.record_sent(
                start,
                crate::core::audio::level_dbfs_bytes(&out[..bytes]),
                bands,
            );
            self.frames_in_turn += 1;
            return Some(bytes);
        }
        self.fill_chunker();
        let Some(f) = self.chunker.take_frame(&mut out[..len]) else {
            self.note_idle(now);
            self.emit_pending_marks_if_idle();
            return None;
        };
        self.history.push(&out[..f.bytes]);
        let start = self.pacer.on_sent(now);
        let bands = self.bands_out.analyse_bytes(&out[..f.bytes]);
        self.record_sent(start, f.level_dbfs, bands);
        if f.padded {
            self.stats.frames_padded += 1;
        }
        if !f.flush {
            self.frames_in_turn += 1;
        }
        if self.turn_first_play.is_none() {
            self.turn_first_play = Some(start);
        }
        if self.armed_turn != self.turn {
            self.armed_turn = self.turn;
            if self.bargein.is_armed() || !self.speech.is_in_utterance() {
                self.bargein.rearm();
            } else {
                self.rearm_after_utterance = true;
            }
        }
        self.was_playing = true;
        let every = self.config.notify_every_frames;
        let turn_done = self.turn_end_pending && !self.chunker.has_frame();
        if turn_done {
            self.turn_end_pending = false;
            self.final_mark = Some((self.turn, self.frames_in_turn));
            self.push_command(Command::Notify {
                turn: self.turn,
                frame: self.frames_in_turn,
                mark: 0,
            });
        } else if every > 0 && !f.flush && self.frames_in_turn.is_multiple_of(every) {
            self.push_command(Command::Notify {
                turn: self.turn,
                frame: self.frames_in_turn,
                mark: 0,
            });
        }
        if self.pending_marks_len > 0 && !self.chunker.has_partial() {
            self.emit_pending_marks();
        }
        Some(f.bytes)
    }

    /// Notes a frame handed to the shell: the echo reference and the counters.
    fn record_sent(&mut self, start: Instant, level_dbfs: f32, bands: Bands) {
        if self.playout.len() == self.playout_cap {
            self.playout.pop_front();
        }
        self.playout.push_back(Played {
            start,
            level_dbfs,
            bands,
        });
        self.stats.frames_out += 1;
    }

    /// No frame was ready at `now`. If a turn is still open (not ended, not interrupted) and
    /// Vonage's queue has run dry, the caller hears a gap: count one underrun per dry spell.
    fn note_idle(&mut self, now: Instant) {
        if self.was_playing && self.pacer.is_idle(now) {
            self.was_playing = false;
            if self.final_mark.is_none_or(|(t, _)| t != self.turn)
                && self.discard_until_after.is_none()
            {
                self.stats.underruns += 1;
            }
        }
    }

    fn emit_pending_marks_if_idle(&mut self) {
        if self.pending_marks_len > 0 && !self.chunker.has_partial() {
            self.emit_pending_marks();
        }
    }

    fn emit_pending_marks(&mut self) {
        for i in 0..self.pending_marks_len {
            let mark = self.pending_marks[i];
            self.push_command(Command::Notify {
                turn: self.turn,
                frame: self.frames_in_turn,
                mark,
            });
        }
        self.pending_marks_len = 0;
    }

    // ---------------------------------------------------------------- outputs

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next command for Vonage, oldest first.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() == EVENT_CAPACITY {
            self.stats.events_dropped += 1;
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    fn push_command(&mut self, c: Command) {
        if self.commands.len() == COMMAND_CAPACITY {
            // A shell that never drains commands is a bug; keep the newest (clear matters most).
            self.commands.pop_front();
        }
        self.commands.push_back(c);
    }

    /// Samples queued towards the agent, for tests and metrics.
    pub fn agent_stream_pos(&self) -> u64 {
        self.stream_pos
    }

    /// Audio queued at Vonage by our model, at `now`.
    pub fn queued_at_vonage(&self, now: Instant) -> Duration {
        self.pacer.queued(now)
    }
}

/// The pre-roll ring's size: `d` at the call rate, rounded up to whole frames (the ring is
/// resampled frame by frame when an utterance starts).
fn preroll_samples(call: SampleRate, d: Duration) -> usize {
    let frames = d.as_millis().div_ceil(FRAME.as_millis()) as usize;
    frames * call.frame_samples()
}

/// Samples of `d` at `rate`, at least one frame.
fn samples_in(rate: SampleRate, d: Duration) -> usize {
    ((u128::from(rate.hz()) * d.as_millis() / 1_000) as usize).max(rate.frame_samples())
}
