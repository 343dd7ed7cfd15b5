//! Barge-in: the caller talking over the bot.
//!
//! Two questions per inbound frame. First, [`is_caller_speech`]: is this frame the caller's voice,
//! rather than noise or the bot's own voice coming back? It must be voiced (webrtc-vad), above the
//! noise floor, and above what the echo model says the bot's echo can explain, by a margin.
//! Second, [`BargeInDetector::update`]: has such speech, while the bot plays, lasted long enough
//! to be an interruption rather than a click? One missing frame inside the run is forgiven (a
//! plosive or a dip of the VAD), two end it.
//!
//! After firing, the detector stays quiet until the next bot turn starts playing.
//!
//! Real-time: no allocation.

use super::audio::dbfs_to_power;
use super::audio::power_to_dbfs;
use super::config::BargeInConfig;
use super::vad::{FrameFeatures, frames_of};

/// Whether a frame is caller speech: voiced, `snr_min_db` above the noise floor, and
/// `echo_margin_db` above the predicted echo and noise together.
pub fn is_caller_speech(
    f: &FrameFeatures,
    echo_dbfs: f32,
    snr_min_db: f32,
    echo_margin_db: f32,
) -> bool {
    if !f.voiced || f.snr_db() < snr_min_db {
        return false;
    }
    let explained = power_to_dbfs(dbfs_to_power(echo_dbfs) + dbfs_to_power(f.noise_floor_dbfs));
    f.level_dbfs >= explained + echo_margin_db || echo_dbfs <= f.noise_floor_dbfs - echo_margin_db
}

/// A barge-in decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Frames since the first speech frame of the run (0 = this frame).
    pub onset_frames_ago: u32,
    /// Speech frames in the run.
    pub speech_frames: u32,
}

/// Counts caller speech while the bot plays and decides when it is an interruption.
#[derive(Debug, Clone)]
pub struct BargeInDetector {
    enabled: bool,
    min_frames: u32,
    armed: bool,
    run: u32,
    span: u32,
    gap: u32,
}

impl BargeInDetector {
    /// A detector with `config`'s thresholds.
    pub fn new(config: &BargeInConfig) -> Self {
        Self {
            enabled: config.enabled,
            min_frames: frames_of(config.min_speech),
            armed: true,
            run: 0,
            span: 0,
            gap: 0,
        }
    }

    /// Feeds one frame. `speech` is [`is_caller_speech`]; `bot_playing` whether the caller can
    /// hear the bot (or its echo tail) now.
    pub fn update(&mut self, speech: bool, bot_playing: bool) -> Option<Decision> {
        if !self.enabled || !self.armed || !bot_playing {
            self.reset_run();
            return None;
        }
        if speech {
            self.run += 1;
            self.span += 1 + self.gap;
            self.gap = 0;
            if self.run >= self.min_frames {
                self.armed = false;
                let d = Decision {
                    onset_frames_ago: self.span - 1,
                    speech_frames: self.run,
                };
                self.reset_run();
                return Some(d);
            }
        } else if self.run > 0 {
            self.gap += 1;
            if self.gap > 1 {
                self.reset_run();
            }
        }
        None
    }

    /// Speech frames counted so far in the current run.
    pub fn run_frames(&self) -> u32 {
        self.run
    }

    /// Arms the detector for a new bot turn.
    pub fn rearm(&mut self) {
        self.armed = true;
        self.reset_run();
    }

    /// Whether the detector can fire.
    pub fn is_armed(&self) -> bool {
        self.enabled && self.armed
    }

    fn reset_run(&mut self) {
        self.run = 0;
        self.span = 0;
        self.gap = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn features(level: f32, floor: f32, voiced: bool) -> FrameFeatures {
        FrameFeatures {
            voiced,
            level_dbfs: level,
            noise_floor_dbfs: floor,
        }
    }

    #[test]
    fn echo_explains_quiet_frames_but_not_loud_ones() {
        // Echo predicted at -35 dBFS: a -34 dBFS voiced frame is echo, a -22 dBFS one is a caller.
        assert!(!is_caller_speech(
            &features(-34.0, -60.0, true),
            -35.0,
            3.0,
            6.0
        ));
        assert!(is_caller_speech(
            &features(-22.0, -60.0, true),
            -35.0,
            3.0,
            6.0
        ));
        // Unvoiced never counts; too close to the noise floor never counts.
        assert!(!is_caller_speech(
            &features(-22.0, -60.0, false),
            -100.0,
            3.0,
            6.0
        ));
        assert!(!is_caller_speech(
            &features(-40.0, -41.0, true),
            -100.0,
            3.0,
            6.0
        ));
    }

    #[test]
    fn fires_once_after_min_speech_and_rearms_per_turn() {
        let cfg = BargeInConfig {
            enabled: true,
            min_speech: Duration::from_millis(80),
            echo_margin_db: 6.0,
        };
        let mut d = BargeInDetector::new(&cfg);
        assert_eq!(d.update(true, true), None);
        assert_eq!(d.update(true, true), None);
        assert_eq!(d.update(false, true), None);
        assert_eq!(d.update(true, true), None);
        assert_eq!(
            d.update(true, true),
            Some(Decision {
                onset_frames_ago: 4,
                speech_frames: 4
            })
        );
        for _ in 0..10 {
            assert_eq!(d.update(true, true), None);
        }
        d.rearm();
        for _ in 0..3 {
            d.update(true, true);
        }
        assert!(d.update(true, true).is_some());
    }

    #[test]
    fn never_fires_while_the_bot_is_silent_or_disabled() {
        let cfg = BargeInConfig {
            enabled: true,
            ..BargeInConfig::default()
        };
        let mut d = BargeInDetector::new(&cfg);
        for _ in 0..50 {
            assert_eq!(d.update(true, false), None);
        }
        let mut off = BargeInDetector::new(&BargeInConfig {
            enabled: false,
            ..cfg
        });
        for _ in 0..50 {
            assert_eq!(off.update(true, true), None);
        }
    }
}
