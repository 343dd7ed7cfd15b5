//! The pipeline's tuning knobs as command-line flags (and environment variables), shared by
//! `voicegate serve` and `voicegate eval` so both run exactly the same configuration.
//!
//! Not real-time.

use std::time::Duration;

use clap::Args;

use crate::core::vad::VadAggressiveness;
use crate::core::{BargeInMode, Forward, SessionConfig};

/// VAD, turn-taking and barge-in parameters. Unset flags keep [`SessionConfig::new`]'s defaults
/// (documented there and in the README's configuration table). Each flag's help shows that
/// default as `[default: …]`; the test `shown_defaults_are_the_session_defaults` keeps the two
/// equal.
#[derive(Debug, Clone, Default, Args)]
pub struct PipelineArgs {
    /// webrtc-vad aggressiveness, 0 (most speech) to 3 (fewest false alarms) [default: 2].
    #[arg(long, env = "VOICEGATE_VAD_MODE", value_parser = clap::value_parser!(u8).range(0..=3))]
    pub vad_mode: Option<u8>,
    /// Speech needed before an utterance starts, ms [default: 60].
    #[arg(long, env = "VOICEGATE_ONSET_MS")]
    pub onset_ms: Option<u64>,
    /// Silence that ends the caller's turn, ms [default: 500].
    #[arg(long, env = "VOICEGATE_HANGOVER_MS")]
    pub hangover_ms: Option<u64>,
    /// Audio before the onset sent with each utterance, ms [default: 240].
    #[arg(long, env = "VOICEGATE_PREROLL_MS")]
    pub preroll_ms: Option<u64>,
    /// A frame must be this far above the noise floor to count as speech, dB [default: 3].
    #[arg(long, env = "VOICEGATE_SNR_MIN_DB")]
    pub snr_min_db: Option<f32>,
    /// Barge-in decision: `two-stage` (pause on a suspicion, then clear or resume) or
    /// `one-stage` (clear after `--barge-in-ms` of caller speech) [default: two-stage].
    #[arg(long, env = "VOICEGATE_BARGE_IN_MODE", value_enum)]
    pub barge_in_mode: Option<BargeInModeArg>,
    /// One-stage: caller speech over the bot needed for a barge-in, ms [default: 80].
    #[arg(long, env = "VOICEGATE_BARGE_IN_MS")]
    pub barge_in_ms: Option<u64>,
    /// Two-stage: unexplained caller energy that pauses the bot, ms [default: 40].
    #[arg(long, env = "VOICEGATE_SUSPECT_MS")]
    pub suspect_ms: Option<u64>,
    /// Two-stage: caller speech that confirms a barge-in (clear), ms [default: 360].
    #[arg(long, env = "VOICEGATE_CONFIRM_MS")]
    pub confirm_ms: Option<u64>,
    /// Two-stage: quiet that releases a suspicion (the bot resumes), ms [default: 100].
    #[arg(long, env = "VOICEGATE_RELEASE_MS")]
    pub release_ms: Option<u64>,
    /// Two-stage: on resume, repeat this much of what was played before the pause, ms
    /// [default: 0].
    #[arg(long, env = "VOICEGATE_RESUME_REWIND_MS")]
    pub resume_rewind_ms: Option<u64>,
    /// Margin above the predicted echo for a frame to count as the caller, dB [default: 4].
    #[arg(long, env = "VOICEGATE_ECHO_MARGIN_DB")]
    pub echo_margin_db: Option<f32>,
    /// Quietest voice that can confirm a barge-in (the caller's level above echo and noise),
    /// dBFS: quieter voices (a TV, someone across the room) only pause the bot [default: -40].
    #[arg(long, env = "VOICEGATE_BARGE_IN_MIN_DBFS", allow_hyphen_values = true)]
    pub barge_in_min_dbfs: Option<f32>,
    /// Turn barge-in off (the caller's voice never interrupts the bot).
    #[arg(long, env = "VOICEGATE_NO_BARGE_IN")]
    pub no_barge_in: bool,
    /// Audio kept queued at Vonage ahead of real time, ms [default: 40].
    #[arg(long, env = "VOICEGATE_LEAD_MS")]
    pub lead_ms: Option<u64>,
    /// Forward every inbound frame to the agent instead of speech only.
    #[arg(long, env = "VOICEGATE_FORWARD_ALL")]
    pub forward_all: bool,
}

/// `--barge-in-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BargeInModeArg {
    /// Clear after `--barge-in-ms` of caller speech.
    OneStage,
    /// Pause on a suspicion; clear on confirmation, resume on release.
    TwoStage,
}

impl PipelineArgs {
    /// Applies the flags that were given to `config`. Validation happens in `Session::new`.
    pub fn apply(&self, config: &mut SessionConfig) {
        let ms = Duration::from_millis;
        if let Some(m) = self.vad_mode.and_then(VadAggressiveness::from_level) {
            config.vad_aggressiveness = m;
        }
        if let Some(v) = self.onset_ms {
            config.onset = ms(v);
        }
        if let Some(v) = self.hangover_ms {
            config.hangover = ms(v);
        }
        if let Some(v) = self.preroll_ms {
            config.preroll = ms(v);
        }
        if let Some(v) = self.snr_min_db {
            config.snr_min_db = v;
        }
        if let Some(m) = self.barge_in_mode {
            config.bargein.mode = match m {
                BargeInModeArg::OneStage => BargeInMode::OneStage,
                BargeInModeArg::TwoStage => BargeInMode::TwoStage,
            };
        }
        if let Some(v) = self.barge_in_ms {
            config.bargein.min_speech = ms(v);
        }
        if let Some(v) = self.suspect_ms {
            config.bargein.suspect = ms(v);
        }
        if let Some(v) = self.confirm_ms {
            config.bargein.confirm = ms(v);
        }
        if let Some(v) = self.release_ms {
            config.bargein.release = ms(v);
        }
        if let Some(v) = self.resume_rewind_ms {
            config.bargein.resume_rewind = ms(v);
        }
        if let Some(v) = self.barge_in_min_dbfs {
            config.bargein.min_level_dbfs = v;
        }
        if let Some(v) = self.echo_margin_db {
            config.bargein.echo_margin_db = v;
        }
        if self.no_barge_in {
            config.bargein.enabled = false;
        }
        if let Some(v) = self.lead_ms {
            config.lead = ms(v);
        }
        if self.forward_all {
            config.forward = Forward::All;
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{ArgAction, CommandFactory, Parser};

    use super::*;
    use crate::core::SampleRate;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        pipeline: PipelineArgs,
    }

    /// The `[default: …]` each flag's help shows is the value [`SessionConfig::new`] uses: given
    /// explicitly, it leaves the default configuration as it is. Every flag that takes a value
    /// shows one.
    #[test]
    fn shown_defaults_are_the_session_defaults() {
        let defaults = SessionConfig::new(SampleRate::Hz16000, SampleRate::Hz16000);
        let mut checked = 0;
        for arg in Cli::command().get_arguments() {
            if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::Help) {
                continue;
            }
            let long = arg.get_long().expect("every pipeline flag is a long flag");
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let shown = help
                .split_once("[default: ")
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(value, _)| value)
                .unwrap_or_else(|| panic!("--{long} shows no default: {help:?}"));
            let cli = Cli::try_parse_from(["voicegate", format!("--{long}").as_str(), shown])
                .unwrap_or_else(|e| panic!("--{long} {shown}: {e}"));
            let mut config = defaults;
            cli.pipeline.apply(&mut config);
            assert_eq!(config, defaults, "--{long} shows [default: {shown}]");
            checked += 1;
        }
        assert_eq!(checked, 14, "flags with a value");
    }
}
