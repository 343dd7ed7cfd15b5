//! [`StageDelays`]: what each stage of a call's pipeline holds audio back or waits before it
//! decides, by design (not CPU time). A caller's words reach the agent, an end of turn is
//! announced and a barge-in silences the bot each at least this late; the server exports them
//! as `voicegate_stage_delay_seconds{stage,call_rate,agent_rate}` so that a latency budget can
//! be read off the running system rather than guessed.

use std::time::Duration;

use super::config::{BargeInMode, SessionConfig};

/// The designed delays of one call's pipeline (see [`Session::stage_delays`]).
///
/// [`Session::stage_delays`]: super::Session::stage_delays
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageDelays {
    /// Caller audio on its way to the agent: the resampler's delay (zero when the rates match).
    pub resample_in: Duration,
    /// Agent audio on its way to Vonage: the resampler's delay.
    pub resample_out: Duration,
    /// The resampler in front of webrtc-vad (24 kHz calls only).
    pub vad_resample: Duration,
    /// Speech needed before an utterance starts (`SpeechStarted` comes at least this late).
    pub speech_onset: Duration,
    /// Silence before the caller's turn ends (`SpeechEnded`).
    pub end_of_turn: Duration,
    /// Audio queued at Vonage ahead of real time: the caller hears the bot this much longer
    /// after a pause or a clear is decided.
    pub pacing_lead: Duration,
    /// Caller energy the echo model cannot explain before the bot goes quiet (two-stage: the
    /// pause; one-stage: the clear). Zero with barge-in off.
    pub bargein_silence: Duration,
    /// Caller speech before an interruption is confirmed and the turn discarded (one-stage:
    /// the same as `bargein_silence`). Zero with barge-in off.
    pub bargein_confirm: Duration,
}

impl StageDelays {
    /// The delays of a session with `config` whose resamplers (in, out, VAD) delay by these.
    pub(crate) fn new(
        config: &SessionConfig,
        resample_in: Duration,
        resample_out: Duration,
        vad_resample: Duration,
    ) -> Self {
        let b = &config.bargein;
        let (silence, confirm) = match (b.enabled, b.mode) {
            (false, _) => (Duration::ZERO, Duration::ZERO),
            (true, BargeInMode::TwoStage) => (b.suspect, b.confirm),
            (true, BargeInMode::OneStage) => (b.min_speech, b.min_speech),
        };
        Self {
            resample_in,
            resample_out,
            vad_resample,
            speech_onset: config.onset,
            end_of_turn: config.hangover,
            pacing_lead: config.lead,
            bargein_silence: silence,
            bargein_confirm: confirm,
        }
    }

    /// Each stage by its metric label, in pipeline order.
    pub fn stages(&self) -> [(&'static str, Duration); 8] {
        [
            ("resample_in", self.resample_in),
            ("vad_resample", self.vad_resample),
            ("speech_onset", self.speech_onset),
            ("end_of_turn", self.end_of_turn),
            ("bargein_silence", self.bargein_silence),
            ("bargein_confirm", self.bargein_confirm),
            ("resample_out", self.resample_out),
            ("pacing_lead", self.pacing_lead),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{SampleRate, Session};

    fn delays(
        call: SampleRate,
        agent: SampleRate,
        f: impl FnOnce(&mut SessionConfig),
    ) -> StageDelays {
        let mut c = SessionConfig::new(call, agent);
        f(&mut c);
        Session::new(c).expect("valid config").0.stage_delays()
    }

    #[test]
    fn resamplers_count_only_where_the_rates_differ() {
        let same = delays(SampleRate::Hz16000, SampleRate::Hz16000, |_| {});
        assert_eq!(same.resample_in, Duration::ZERO);
        assert_eq!(same.resample_out, Duration::ZERO);
        assert_eq!(same.vad_resample, Duration::ZERO);
        let up = delays(SampleRate::Hz16000, SampleRate::Hz24000, |_| {});
        assert!(up.resample_in > Duration::ZERO && up.resample_in < Duration::from_millis(10));
        assert!(up.resample_out > Duration::ZERO && up.resample_out < Duration::from_millis(10));
        assert_eq!(up.vad_resample, Duration::ZERO);
        // A 24 kHz call feeds webrtc-vad at 16 kHz.
        let wide = delays(SampleRate::Hz24000, SampleRate::Hz24000, |_| {});
        assert!(wide.vad_resample > Duration::ZERO);
    }

    #[test]
    fn decisions_follow_the_configuration() {
        let d = delays(SampleRate::Hz16000, SampleRate::Hz16000, |_| {});
        let c = SessionConfig::new(SampleRate::Hz16000, SampleRate::Hz16000);
        assert_eq!(d.end_of_turn, c.hangover);
        assert_eq!(d.pacing_lead, c.lead);
        assert_eq!(d.bargein_silence, c.bargein.suspect);
        assert_eq!(d.bargein_confirm, c.bargein.confirm);
        let one = delays(SampleRate::Hz16000, SampleRate::Hz16000, |c| {
            c.bargein.mode = BargeInMode::OneStage;
        });
        assert_eq!(one.bargein_silence, c.bargein.min_speech);
        assert_eq!(one.bargein_confirm, c.bargein.min_speech);
        let off = delays(SampleRate::Hz16000, SampleRate::Hz16000, |c| {
            c.bargein.enabled = false
        });
        assert_eq!(off.bargein_silence, Duration::ZERO);
        let names: Vec<_> = d.stages().iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), 8);
        assert!(names.contains(&"end_of_turn"));
    }
}
