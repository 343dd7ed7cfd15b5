//! Session configuration: every duration in milliseconds of audio, validated once in
//! [`SessionConfig::validate`] (called by `Session::new`), so the media path never checks again.
//!
//! Not real-time (construction only).

use std::fmt;
use std::time::Duration;

use super::audio::SampleRate;
use super::vad::VadAggressiveness;

/// Which inbound audio the agent receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Forward {
    /// Only caller speech, each utterance preceded by its pre-roll: what an STT that bills per
    /// second, or a simple agent like the echo agent, wants.
    #[default]
    Speech,
    /// Every frame, continuously: what a speech-to-speech model with its own turn detection wants.
    All,
}

/// How the session reacts to the caller talking over the bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BargeInMode {
    /// Decide once: after [`BargeInConfig::min_speech`] of caller speech, clear playback and
    /// discard the turn. Simple, but every cough long enough to trigger costs the bot its turn,
    /// and a longer `min_speech` makes the bot talk over the caller for that long.
    OneStage,
    /// Decide twice (the default). **Suspect** after [`BargeInConfig::suspect`] of caller energy
    /// the echo model cannot explain: *pause* the bot (stop handing frames to Vonage; the caller
    /// stops hearing it once the pacing lead has played). **Confirm** once the episode holds
    /// [`BargeInConfig::confirm`] of caller speech: clear and discard, as one-stage does.
    /// **Release** after [`BargeInConfig::release`] without caller energy: resume the turn from
    /// the frame where it paused and report a false interruption.
    #[default]
    TwoStage,
}

/// Barge-in (caller talks over the bot) parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BargeInConfig {
    /// Off: the caller can never interrupt the bot (the agent may still call `interrupt`).
    pub enabled: bool,
    /// One decision or two (suspect/pause, then confirm or release).
    pub mode: BargeInMode,
    /// One-stage: caller speech needed, while the bot plays, before it counts as an
    /// interruption. Shorter reacts faster; longer ignores more coughs and clicks.
    pub min_speech: Duration,
    /// How far (dB) a frame must rise above the predicted echo plus noise to count as the
    /// caller rather than the bot's own voice coming back.
    pub echo_margin_db: f32,
    /// Two-stage: unexplained caller energy (consecutive frames) that pauses the bot. Part of
    /// what the caller waits before the bot goes quiet, with the pacing lead.
    pub suspect: Duration,
    /// Two-stage: caller speech within one suspicion that confirms the interruption. Longer
    /// than a backchannel ("mm-hm", "yeah": under 400 ms), shorter than any real interruption.
    pub confirm: Duration,
    /// Two-stage: silence (no unexplained energy) that ends a suspicion and resumes the bot.
    pub release: Duration,
    /// Two-stage: on resume, play again this much of what the caller heard just before the
    /// pause (0 = resume exactly where the pause began).
    pub resume_rewind: Duration,
    /// A voice that never gets this loud (dBFS, the caller's level above the predicted echo and
    /// the noise) does not confirm a barge-in: a TV or a colleague across the room, not the
    /// caller into the mouthpiece (phone speech is −28…−18 dBFS active; ITU nominal −26 dBov).
    /// The bot still pauses for it, and resumes.
    pub min_level_dbfs: f32,
}

impl Default for BargeInConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: BargeInMode::TwoStage,
            min_speech: Duration::from_millis(80),
            echo_margin_db: 4.0,
            suspect: Duration::from_millis(40),
            confirm: Duration::from_millis(360),
            release: Duration::from_millis(100),
            resume_rewind: Duration::ZERO,
            min_level_dbfs: -40.0,
        }
    }
}

/// Everything a [`Session`](super::session::Session) needs to know up front.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionConfig {
    /// The call's media rate (from the NCCO's `content-type`; `websocket:connected` confirms it).
    pub call_rate: SampleRate,
    /// The rate the agent reads and writes.
    pub agent_rate: SampleRate,
    /// Which inbound audio reaches the agent.
    pub forward: Forward,
    /// webrtc-vad mode.
    pub vad_aggressiveness: VadAggressiveness,
    /// Speech needed before an utterance starts.
    pub onset: Duration,
    /// Silence needed before an utterance ends (end of the caller's turn).
    pub hangover: Duration,
    /// Audio before the onset that the agent receives with each utterance, so no first syllable
    /// is cut.
    pub preroll: Duration,
    /// A frame must be this far (dB) above the tracked noise floor to count as speech.
    pub snr_min_db: f32,
    /// Barge-in detection.
    pub bargein: BargeInConfig,
    /// Audio kept queued at Vonage ahead of real time, to ride out network jitter. Also the
    /// longest the caller keeps hearing the bot after we stop sending.
    pub lead: Duration,
    /// A `notify` mark every this many frames of a turn (0 = only after the last frame); the
    /// finer, the more exact the playout truth on barge-in.
    pub notify_every_frames: u32,
    /// Capacity of the caller-audio ring towards the agent: how long the agent may fall behind
    /// reading before caller audio is dropped (and counted). Default 400 ms: an utterance's
    /// onset pushes the whole pre-roll (240 ms) at once, which leaves the agent 160 ms to be
    /// scheduled and read; after that it reads a frame every 20 ms and has the full 400 ms. Keep
    /// it above `preroll` if that is raised. Memory: 19 KiB per call at 24 kHz, all of it
    /// resident once the ring has wrapped.
    pub inbound_buffer: Duration,
    /// Capacity of the agent-audio ring towards the caller: how far ahead of playback the agent
    /// may write. Default 400 ms; an agent writes the rest as playback drains
    /// ([`AgentAudio::write_all`](crate::agent::AgentAudio::write_all)). The ring only has to
    /// absorb the agent's burstiness: playback is paced at real time, a full ring makes the agent
    /// wait (its surplus stays in its own backlog, so a bigger ring holds no more audio, only
    /// more memory), and the agent is woken for room when a quarter is free, so it then has
    /// 300 ms of queued audio to be scheduled and write again (tokio wake-ups are milliseconds,
    /// even at 800 calls on two cores). Memory: 19 KiB per call at 24 kHz, all of it resident
    /// once the ring has wrapped (the 1 s of earlier versions was 47 KiB).
    pub outbound_buffer: Duration,
}

impl SessionConfig {
    /// Defaults for a call at `call_rate` with an agent at `agent_rate`.
    pub fn new(call_rate: SampleRate, agent_rate: SampleRate) -> Self {
        Self {
            call_rate,
            agent_rate,
            forward: Forward::Speech,
            vad_aggressiveness: VadAggressiveness::Aggressive,
            onset: Duration::from_millis(60),
            hangover: Duration::from_millis(500),
            preroll: Duration::from_millis(240),
            snr_min_db: 3.0,
            bargein: BargeInConfig::default(),
            lead: Duration::from_millis(40),
            notify_every_frames: 10,
            inbound_buffer: Duration::from_millis(400),
            outbound_buffer: Duration::from_millis(400),
        }
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.call_rate.is_call_rate() {
            return Err(ConfigError::UnsupportedCallRate {
                hz: self.call_rate.hz(),
            });
        }
        check("onset", self.onset, 20, 2_000)?;
        check("hangover", self.hangover, 20, 10_000)?;
        check("preroll", self.preroll, 0, 2_000)?;
        check("lead", self.lead, 0, 1_000)?;
        check("bargein_min_speech", self.bargein.min_speech, 20, 5_000)?;
        check("bargein_suspect", self.bargein.suspect, 20, 1_000)?;
        check("bargein_confirm", self.bargein.confirm, 20, 5_000)?;
        check("bargein_release", self.bargein.release, 20, 2_000)?;
        check(
            "bargein_resume_rewind",
            self.bargein.resume_rewind,
            0,
            1_000,
        )?;
        check("inbound_buffer", self.inbound_buffer, 100, 60_000)?;
        check("outbound_buffer", self.outbound_buffer, 100, 60_000)?;
        if !(0.0..=40.0).contains(&self.snr_min_db) {
            return Err(ConfigError::OutOfRangeDb {
                name: "snr_min_db",
                value: self.snr_min_db,
                min: 0.0,
                max: 40.0,
            });
        }
        if !(0.0..=40.0).contains(&self.bargein.echo_margin_db) {
            return Err(ConfigError::OutOfRangeDb {
                name: "echo_margin_db",
                value: self.bargein.echo_margin_db,
                min: 0.0,
                max: 40.0,
            });
        }
        if !(-96.0..=0.0).contains(&self.bargein.min_level_dbfs) {
            return Err(ConfigError::OutOfRangeDb {
                name: "bargein_min_level_dbfs",
                value: self.bargein.min_level_dbfs,
                min: -96.0,
                max: 0.0,
            });
        }
        if self.notify_every_frames > 3_000 {
            return Err(ConfigError::OutOfRange {
                name: "notify_every_frames",
                value_ms: u64::from(self.notify_every_frames),
                min_ms: 0,
                max_ms: 3_000,
            });
        }
        Ok(())
    }
}

fn check(name: &'static str, d: Duration, min_ms: u64, max_ms: u64) -> Result<(), ConfigError> {
    let v = d.as_millis() as u64;
    if v < min_ms || v > max_ms {
        return Err(ConfigError::OutOfRange {
            name,
            value_ms: v,
            min_ms,
            max_ms,
        });
    }
    Ok(())
}

/// A configuration the session refuses to run with.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// Vonage streams calls at 8, 16 or 24 kHz only.
    UnsupportedCallRate {
        /// The rate asked for.
        hz: u32,
    },
    /// A duration outside its sensible range.
    OutOfRange {
        /// The field.
        name: &'static str,
        /// The value given, ms.
        value_ms: u64,
        /// Smallest allowed, ms.
        min_ms: u64,
        /// Largest allowed, ms.
        max_ms: u64,
    },
    /// A level outside its sensible range.
    OutOfRangeDb {
        /// The field.
        name: &'static str,
        /// The value given, dB.
        value: f32,
        /// Smallest allowed.
        min: f32,
        /// Largest allowed.
        max: f32,
    },
    /// rubato refused a rate pair.
    Resampler {
        /// From, Hz.
        from: u32,
        /// To, Hz.
        to: u32,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::UnsupportedCallRate { hz } => {
                write!(
                    f,
                    "call rate {hz} Hz is not one Vonage streams (8000, 16000, 24000)"
                )
            }
            Self::OutOfRange {
                name,
                value_ms,
                min_ms,
                max_ms,
            } => {
                write!(
                    f,
                    "{name} = {value_ms} ms is outside {min_ms}..={max_ms} ms"
                )
            }
            Self::OutOfRangeDb {
                name,
                value,
                min,
                max,
            } => {
                write!(f, "{name} = {value} dB is outside {min}..={max} dB")
            }
            Self::Resampler { from, to } => write!(f, "cannot resample {from} Hz to {to} Hz"),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        let c = SessionConfig::new(SampleRate::Hz16000, SampleRate::Hz24000);
        assert_eq!(c.validate(), Ok(()));
        let mut bad = c;
        bad.hangover = Duration::from_millis(5);
        assert_eq!(
            bad.validate(),
            Err(ConfigError::OutOfRange {
                name: "hangover",
                value_ms: 5,
                min_ms: 20,
                max_ms: 10_000
            })
        );
        let mut bad = c;
        bad.call_rate = SampleRate::Hz48000;
        assert_eq!(
            bad.validate(),
            Err(ConfigError::UnsupportedCallRate { hz: 48_000 })
        );
        assert!(bad.validate().unwrap_err().to_string().contains("48000"));
    }
}
