//! The pipeline's tuning knobs as command-line flags (and environment variables), shared by
//! `voicegate serve` and `voicegate eval` so both run exactly the same configuration.
//!
//! Not real-time.

use std::time::Duration;

use clap::Args;

use crate::core::vad::VadAggressiveness;
use crate::core::{Forward, SessionConfig};

/// VAD, turn-taking and barge-in parameters. Unset flags keep [`SessionConfig::new`]'s defaults
/// (documented there and in the README's configuration table).
#[derive(Debug, Clone, Default, Args)]
pub struct PipelineArgs {
    /// webrtc-vad aggressiveness, 0 (most speech) to 3 (fewest false alarms).
    #[arg(long, env = "VOICEGATE_VAD_MODE", value_parser = clap::value_parser!(u8).range(0..=3))]
    pub vad_mode: Option<u8>,
    /// Speech needed before an utterance starts, ms.
    #[arg(long, env = "VOICEGATE_ONSET_MS")]
    pub onset_ms: Option<u64>,
    /// Silence that ends the caller's turn, ms.
    #[arg(long, env = "VOICEGATE_HANGOVER_MS")]
    pub hangover_ms: Option<u64>,
    /// Audio before the onset sent with each utterance, ms.
    #[arg(long, env = "VOICEGATE_PREROLL_MS")]
    pub preroll_ms: Option<u64>,
    /// A frame must be this far above the noise floor to count as speech, dB.
    #[arg(long, env = "VOICEGATE_SNR_MIN_DB")]
    pub snr_min_db: Option<f32>,
    /// Caller speech over the bot needed for a barge-in, ms.
    #[arg(long, env = "VOICEGATE_BARGE_IN_MS")]
    pub barge_in_ms: Option<u64>,
    /// Margin above the predicted echo for a frame to count as the caller, dB.
    #[arg(long, env = "VOICEGATE_ECHO_MARGIN_DB")]
    pub echo_margin_db: Option<f32>,
    /// Turn barge-in off (the caller's voice never interrupts the bot).
    #[arg(long, env = "VOICEGATE_NO_BARGE_IN")]
    pub no_barge_in: bool,
    /// Audio kept queued at Vonage ahead of real time, ms.
    #[arg(long, env = "VOICEGATE_LEAD_MS")]
    pub lead_ms: Option<u64>,
    /// Forward every inbound frame to the agent instead of speech only.
    #[arg(long, env = "VOICEGATE_FORWARD_ALL")]
    pub forward_all: bool,
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
        if let Some(v) = self.barge_in_ms {
            config.bargein.min_speech = ms(v);
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
