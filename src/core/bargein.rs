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

use super::audio::{SILENCE_DBFS, dbfs_to_power, power_to_dbfs};
use super::config::{BargeInConfig, BargeInMode};
use super::spectrum::{BANDS, Bands};
use super::vad::{FrameFeatures, frames_of};

/// Whether a frame is caller speech: voiced, `snr_min_db` above the noise floor, and
/// `echo_margin_db` above the predicted echo and noise together.
pub fn is_caller_speech(
    f: &FrameFeatures,
    echo_dbfs: f32,
    snr_min_db: f32,
    echo_margin_db: f32,
) -> bool {
    f.voiced && is_unexplained_energy(f, echo_dbfs, snr_min_db, echo_margin_db)
}

/// Whether a frame holds energy that neither the noise floor nor the bot's echo explains:
/// `snr_min_db` above the floor and `echo_margin_db` above echo and noise together. Voiced or
/// not: the first frame of a word often is not yet, and this is the early evidence.
pub fn is_unexplained_energy(
    f: &FrameFeatures,
    echo_dbfs: f32,
    snr_min_db: f32,
    echo_margin_db: f32,
) -> bool {
    if f.snr_db() < snr_min_db {
        return false;
    }
    let explained = power_to_dbfs(dbfs_to_power(echo_dbfs) + dbfs_to_power(f.noise_floor_dbfs));
    f.level_dbfs >= explained + echo_margin_db || echo_dbfs <= f.noise_floor_dbfs - echo_margin_db
}

/// The band-by-band test behind [`is_unexplained_energy`]'s spectral twin: per band, the power
/// the noise (`noise_k` times its floor) and the echo (`echo_k[b]` times its prediction) cannot
/// account for, summed over the bands, against what they do account for. Returns the excess
/// over the explained power in dB (`SILENCE_DBFS`-like large negative when nothing is left).
pub fn band_excess_db(
    inbound: &Bands,
    noise: &Bands,
    echo: &Bands,
    noise_k: f32,
    echo_k: &Bands,
) -> f32 {
    let excess = unexplained_power(inbound, noise, noise_k, echo, echo_k);
    let explained: f32 = (0..BANDS).map(|b| noise[b] + echo[b]).sum();
    power_to_dbfs(excess) - power_to_dbfs(explained.max(1e-10))
}

/// Per band, the power that `noise_k` times the noise floor and `echo_k[b]` times the predicted
/// echo do not account for, summed over the bands.
fn unexplained_power(
    inbound: &Bands,
    noise: &Bands,
    noise_k: f32,
    echo: &Bands,
    echo_k: &Bands,
) -> f32 {
    (0..BANDS)
        .map(|b| (inbound[b] - (noise_k * noise[b] + echo_k[b] * echo[b])).max(0.0))
        .sum()
}

/// The power of `inbound` that neither the noise floor nor the predicted echo accounts for,
/// summed over the bands, dBFS: an estimate of the caller's own level in this frame.
pub fn unexplained_dbfs(inbound: &Bands, noise: &Bands, echo: &Bands) -> f32 {
    power_to_dbfs(unexplained_power(inbound, noise, 1.0, echo, &[1.0; BANDS]))
}

/// One frame's evidence for [`BargeInDetector::update_with`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// Energy that the echo model and the noise floor do not explain, and not a tone (cheap
    /// and early: the first frame of a word is often not voiced yet).
    pub energy: bool,
    /// The stricter [`is_caller_speech`]: that energy, voiced.
    pub speech: bool,
    /// The sound has the syllable-rate level swings of a voice (a steady chord or a hum does
    /// not; an impulse's decay does, and is caught by its level dying away instead).
    pub modulated: bool,
    /// The frame's level that neither echo nor noise explains ([`unexplained_dbfs`]): a voice
    /// this loud is near the phone (see [`BargeInConfig::min_level_dbfs`]), not a TV or a
    /// colleague across the room.
    pub caller_dbfs: f32,
}

impl Default for Evidence {
    fn default() -> Self {
        Self {
            energy: false,
            speech: false,
            modulated: false,
            caller_dbfs: SILENCE_DBFS,
        }
    }
}

/// A barge-in decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Frames since the first speech frame of the run (0 = this frame).
    pub onset_frames_ago: u32,
    /// Speech frames in the run.
    pub speech_frames: u32,
}

/// What the detector concluded from one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing changed.
    Nothing,
    /// Two-stage: the caller may be talking; pause the bot. `onset_frames_ago` counts back to
    /// the first frame of the unexplained energy (0 = this frame).
    Suspect {
        /// Frames since the suspicion's first frame.
        onset_frames_ago: u32,
    },
    /// The caller is talking over the bot: clear and discard the turn.
    Confirm(Decision),
    /// Two-stage: the suspicion died (a backchannel, a cough, a door); resume the bot.
    Release {
        /// Frames from the suspicion to its release.
        suspected_frames: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    /// Counting evidence while the bot plays.
    Watching,
    /// Two-stage: the bot is paused; the episode is still open.
    Suspecting {
        frames: u32,
        speech: u32,
        quiet: u32,
        onset_frames_ago: u32,
        /// Frames since the chain's first voiced caller frame as loud as a caller's (this one
        /// counted), if any.
        voiced_span: Option<u32>,
        /// The loudest of those frames, dBFS.
        peak_dbfs: f32,
    },
}

/// Counts caller evidence while the bot plays and decides when it is an interruption, in one
/// stage or two (see [`BargeInMode`]).
///
/// Per frame it takes two answers: `energy` (cheap and early: caller energy the echo model and
/// the noise floor do not explain, and not a tone) and `speech` (the stricter
/// [`is_caller_speech`], voiced). Suspicion needs `suspect` frames of energy in a row; confirmation
/// counts speech frames inside the episode; release needs `release` frames of neither.
#[derive(Debug, Clone)]
pub struct BargeInDetector {
    enabled: bool,
    mode: BargeInMode,
    min_frames: u32,
    suspect_frames: u32,
    confirm_frames: u32,
    release_frames: u32,
    armed: bool,
    stage: Stage,
    /// Speech frames of the last released episode, and frames since its release: a new
    /// suspicion soon after carries them on (a caller who barges in pauses between words; a
    /// backchannel is alone).
    chain_speech: u32,
    chain_frames: u32,
    chain_voiced_span: Option<u32>,
    chain_peak_dbfs: f32,
    /// The caller's level ([`Evidence::caller_dbfs`]) of the last frames, a ring.
    recent: [f32; RECENT_FRAMES],
    recent_head: usize,
    min_level_dbfs: f32,
    since_release: u32,
    run: u32,
    span: u32,
    gap: u32,
}

/// An episode that neither confirms nor releases within this many frames of its confirmation
/// length is released: whatever it is (steady noise the floor has not caught up with), it is
/// not a caller who keeps talking.
const EPISODE_SLACK_FRAMES: u32 = 15;

/// A suspicion that starts within this many frames (300 ms) of the last release continues its
/// count of speech (see [`BargeInDetector`]).
const CHAIN_GAP_FRAMES: u32 = 15;
/// Only an episode with at least this much voiced caller speech (frames) carries on into the
/// next: a lone blip of babble or echo is not a caller pausing between words.
const CHAIN_MIN_SPEECH: u32 = 3;
/// Frames (160 ms) over which a voice must come back near its loudest to be confirmed, or to
/// keep its suspicion: between two syllables it does; an impulse's ringing tail decays for good.
const RECENT_FRAMES: usize = 8;
/// How far under the episode's loudest frame the last [`RECENT_FRAMES`] may all stay, dB.
const SUSTAIN_DB: f32 = 15.0;
/// Of the confirmation length, at least one frame in this many must be voiced caller speech
/// (double talk masks the rest under the bot's echo).
const CONFIRM_VOICED_SHARE: u32 = 3;

impl BargeInDetector {
    /// A detector with `config`'s thresholds.
    pub fn new(config: &BargeInConfig) -> Self {
        Self {
            enabled: config.enabled,
            mode: config.mode,
            min_frames: frames_of(config.min_speech),
            suspect_frames: frames_of(config.suspect),
            confirm_frames: frames_of(config.confirm),
            release_frames: frames_of(config.release),
            armed: true,
            stage: Stage::Watching,
            chain_speech: 0,
            chain_frames: 0,
            chain_voiced_span: None,
            chain_peak_dbfs: SILENCE_DBFS,
            recent: [SILENCE_DBFS; RECENT_FRAMES],
            recent_head: 0,
            min_level_dbfs: config.min_level_dbfs,
            since_release: u32::MAX,
            run: 0,
            span: 0,
            gap: 0,
        }
    }

    /// Feeds one frame. `energy` and `speech` are the frame's evidence (see the type's docs);
    /// `bot_playing` whether the caller can hear the bot now. While a suspicion is open the bot
    /// is paused, so `bot_playing` is not consulted until it closes.
    pub fn update(&mut self, energy: bool, speech: bool, bot_playing: bool) -> Verdict {
        let evidence = Evidence {
            energy,
            speech,
            modulated: true,
            caller_dbfs: if energy || speech { 0.0 } else { SILENCE_DBFS },
        };
        self.update_with(evidence, bot_playing)
    }

    /// [`update`](Self::update) with the whole [`Evidence`]. The confirmation length counts from
    /// the first voiced frame as loud as a caller near the phone; an episode that reaches it
    /// without the swings of a voice (`modulated`) is released, not confirmed, and so is one
    /// whose sound has died down far below its peak for a whole sustain window (the ringing tail
    /// of a door or a dropped object), as soon as that shows.
    pub fn update_with(&mut self, evidence: Evidence, bot_playing: bool) -> Verdict {
        let Evidence {
            energy,
            speech,
            modulated,
            caller_dbfs,
        } = evidence;
        let near = caller_dbfs >= self.min_level_dbfs;
        let heard = if energy || speech {
            caller_dbfs
        } else {
            SILENCE_DBFS
        };
        self.recent_head = (self.recent_head + 1) % RECENT_FRAMES;
        self.recent[self.recent_head] = heard;
        if let Stage::Suspecting {
            frames,
            speech: n,
            quiet,
            onset_frames_ago,
            voiced_span,
            peak_dbfs,
        } = self.stage
        {
            let peak_dbfs = if speech && near {
                peak_dbfs.max(caller_dbfs)
            } else {
                peak_dbfs
            };
            let frames = frames + 1;
            let n = n + u32::from(speech);
            let quiet = if energy || speech { 0 } else { quiet + 1 };
            let voiced_span = match voiced_span {
                Some(v) => Some(v + 1),
                None => (speech && near).then_some(1),
            };
            // Confirmed once the caller has been talking for the confirmation length (from the
            // chain's first voiced frame, through the pauses between words), with enough of it
            // voiced, and is still at it.
            let span = voiced_span.unwrap_or(0);
            let long_enough = quiet == 0
                && span >= self.confirm_frames
                && n >= self.confirm_frames / CONFIRM_VOICED_SHARE;
            let recent = self.recent.iter().copied().fold(SILENCE_DBFS, f32::max);
            let sustained = recent >= peak_dbfs - SUSTAIN_DB;
            // Dying away: the whole sustain window is this episode's and all of it stayed far
            // under the episode's loudest frame. A voice comes back near its loudest between
            // syllables; an impulse's ringing tail (a door, a cough) decays for good, and is
            // released as soon as that shows, not only once it lasts the confirmation length.
            let dying = !sustained && frames >= RECENT_FRAMES as u32;
            if dying || (long_enough && !modulated) {
                // Steady for as long as a real interruption (music, a hum), or dying away.
                self.stage = Stage::Watching;
                self.reset_run();
                self.since_release = u32::MAX;
                return Verdict::Release {
                    suspected_frames: frames,
                };
            }
            if long_enough {
                self.armed = false;
                self.stage = Stage::Watching;
                self.reset_run();
                return Verdict::Confirm(Decision {
                    onset_frames_ago: onset_frames_ago + frames,
                    speech_frames: n,
                });
            }
            if quiet >= self.release_frames || frames >= self.confirm_frames + EPISODE_SLACK_FRAMES
            {
                self.stage = Stage::Watching;
                self.reset_run();
                self.chain_speech = n;
                self.chain_frames = onset_frames_ago + frames;
                self.chain_voiced_span = voiced_span;
                self.chain_peak_dbfs = peak_dbfs;
                self.since_release = 0;
                return Verdict::Release {
                    suspected_frames: frames,
                };
            }
            self.stage = Stage::Suspecting {
                frames,
                speech: n,
                quiet,
                onset_frames_ago,
                voiced_span,
                peak_dbfs,
            };
            return Verdict::Nothing;
        }
        self.since_release = self.since_release.saturating_add(1);
        if !self.enabled || !self.armed || !bot_playing {
            self.reset_run();
            return Verdict::Nothing;
        }
        match self.mode {
            BargeInMode::OneStage => self.update_one_stage(speech),
            BargeInMode::TwoStage => {
                if energy || speech {
                    self.run += 1;
                    self.span += 1;
                } else {
                    self.reset_run();
                }
                if self.run >= self.suspect_frames {
                    let mut onset_frames_ago = self.span - 1;
                    let mut speech_so_far = u32::from(speech);
                    let mut voiced_span = (speech && near).then_some(1);
                    let mut peak_dbfs = if speech && near {
                        caller_dbfs
                    } else {
                        SILENCE_DBFS
                    };
                    if self.since_release <= CHAIN_GAP_FRAMES
                        && self.chain_speech >= CHAIN_MIN_SPEECH
                    {
                        // The same caller, still going: count on from the last episode.
                        speech_so_far += self.chain_speech;
                        onset_frames_ago += self.since_release + self.chain_frames;
                        if let Some(v) = self.chain_voiced_span {
                            voiced_span = Some(v + self.since_release + self.span);
                        }
                        peak_dbfs = peak_dbfs.max(self.chain_peak_dbfs);
                    }
                    self.stage = Stage::Suspecting {
                        frames: 0,
                        speech: speech_so_far,
                        quiet: 0,
                        onset_frames_ago,
                        voiced_span,
                        peak_dbfs,
                    };
                    self.reset_run();
                    return Verdict::Suspect { onset_frames_ago };
                }
                Verdict::Nothing
            }
        }
    }

    fn update_one_stage(&mut self, speech: bool) -> Verdict {
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
                return Verdict::Confirm(d);
            }
        } else if self.run > 0 {
            self.gap += 1;
            if self.gap > 1 {
                self.reset_run();
            }
        }
        Verdict::Nothing
    }

    /// Whether a suspicion is open (the bot is paused on its account).
    pub fn is_suspecting(&self) -> bool {
        matches!(self.stage, Stage::Suspecting { .. })
    }

    /// Speech frames counted so far in the current run or episode.
    pub fn run_frames(&self) -> u32 {
        match self.stage {
            Stage::Suspecting { speech, .. } => speech,
            Stage::Watching => self.run,
        }
    }

    /// Arms the detector for a new bot turn. An open suspicion stays open.
    pub fn rearm(&mut self) {
        self.since_release = u32::MAX;
        self.armed = true;
        if !self.is_suspecting() {
            self.reset_run();
        }
    }

    /// Closes any open suspicion without a verdict (the turn it paused is gone).
    pub fn abandon(&mut self) {
        self.stage = Stage::Watching;
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
            mode: BargeInMode::OneStage,
            min_speech: Duration::from_millis(80),
            echo_margin_db: 6.0,
            ..BargeInConfig::default()
        };
        let mut d = BargeInDetector::new(&cfg);
        assert_eq!(d.update(true, true, true), Verdict::Nothing);
        assert_eq!(d.update(true, true, true), Verdict::Nothing);
        assert_eq!(d.update(false, false, true), Verdict::Nothing);
        assert_eq!(d.update(true, true, true), Verdict::Nothing);
        assert_eq!(
            d.update(true, true, true),
            Verdict::Confirm(Decision {
                onset_frames_ago: 4,
                speech_frames: 4
            })
        );
        for _ in 0..10 {
            assert_eq!(d.update(true, true, true), Verdict::Nothing);
        }
        d.rearm();
        for _ in 0..3 {
            d.update(true, true, true);
        }
        assert!(matches!(d.update(true, true, true), Verdict::Confirm(_)));
    }

    #[test]
    fn never_fires_while_the_bot_is_silent_or_disabled() {
        let cfg = BargeInConfig {
            mode: BargeInMode::OneStage,
            ..BargeInConfig::default()
        };
        let mut d = BargeInDetector::new(&cfg);
        for _ in 0..50 {
            assert_eq!(d.update(true, true, false), Verdict::Nothing);
        }
        let mut off = BargeInDetector::new(&BargeInConfig {
            enabled: false,
            ..cfg
        });
        for _ in 0..50 {
            assert_eq!(off.update(true, true, true), Verdict::Nothing);
        }
    }

    fn two_stage() -> BargeInDetector {
        BargeInDetector::new(&BargeInConfig {
            suspect: Duration::from_millis(40),
            confirm: Duration::from_millis(200),
            release: Duration::from_millis(60),
            ..BargeInConfig::default()
        })
    }

    #[test]
    fn two_stage_suspects_early_and_confirms_on_sustained_speech() {
        let mut d = two_stage();
        assert_eq!(d.update(true, false, true), Verdict::Nothing);
        assert_eq!(
            d.update(true, false, true),
            Verdict::Suspect {
                onset_frames_ago: 1
            }
        );
        assert!(d.is_suspecting());
        // The bot is paused now, so the reference goes quiet: the episode goes on regardless.
        for _ in 0..9 {
            assert_eq!(d.update(true, true, false), Verdict::Nothing);
        }
        assert_eq!(
            d.update(true, true, false),
            Verdict::Confirm(Decision {
                onset_frames_ago: 11,
                speech_frames: 10
            })
        );
        assert!(!d.is_suspecting());
        assert!(!d.is_armed());
    }

    #[test]
    fn two_stage_releases_a_short_sound_and_stays_armed() {
        let mut d = two_stage();
        d.update(true, true, true);
        assert!(matches!(
            d.update(true, true, true),
            Verdict::Suspect { .. }
        ));
        // A 100 ms "mm-hm": 5 speech frames, then quiet.
        for _ in 0..5 {
            assert_eq!(d.update(true, true, false), Verdict::Nothing);
        }
        assert_eq!(d.update(false, false, false), Verdict::Nothing);
        assert_eq!(d.update(false, false, false), Verdict::Nothing);
        assert_eq!(
            d.update(false, false, false),
            Verdict::Release {
                suspected_frames: 8
            }
        );
        assert!(d.is_armed());
        // Energy while the bot is silent never suspects.
        for _ in 0..10 {
            assert_eq!(d.update(true, true, false), Verdict::Nothing);
        }
    }

    #[test]
    fn a_dying_impulse_is_released_a_voice_is_confirmed() {
        // A door slam: loud, voiced by the VAD, swinging frame to frame as it rattles, but
        // decaying 2 dB a frame from its peak (default lengths: confirmation after 360 ms).
        let frame = |caller_dbfs: f32| Evidence {
            energy: true,
            speech: true,
            modulated: true,
            caller_dbfs,
        };
        let mut d = BargeInDetector::new(&BargeInConfig::default());
        let mut verdicts = Vec::new();
        for k in 0..40 {
            verdicts.push(d.update_with(frame(-20.0 - 2.0 * k as f32), true));
        }
        assert!(
            verdicts
                .iter()
                .any(|v| matches!(v, Verdict::Suspect { .. }))
        );
        assert!(
            !verdicts.iter().any(|v| matches!(v, Verdict::Confirm(_))),
            "{verdicts:?}"
        );
        // Released once the sustain window has all stayed 15 dB under the peak (frame 15 here),
        // not only at the confirmation length: the caller hears the bot again sooner.
        let confirm_frames = frames_of(BargeInConfig::default().confirm) as usize;
        let released = verdicts
            .iter()
            .position(|v| matches!(v, Verdict::Release { .. }));
        assert!(
            released.is_some_and(|k| k < confirm_frames),
            "released at {released:?}, confirmation after {confirm_frames}: {verdicts:?}"
        );
        // A voice: syllables every 200 ms, 15 dB dips between them.
        let mut d = BargeInDetector::new(&BargeInConfig::default());
        let confirmed = (0..40)
            .map(|k| d.update_with(frame(if k % 10 < 5 { -22.0 } else { -37.0 }), true))
            .any(|v| matches!(v, Verdict::Confirm(_)));
        assert!(confirmed);
    }

    #[test]
    fn a_distant_voice_pauses_but_never_confirms() {
        // A TV across the room: voiced, modulated, as long as any interruption, but quiet.
        let far = Evidence {
            energy: true,
            speech: true,
            modulated: true,
            caller_dbfs: -50.0,
        };
        let mut d = two_stage();
        assert_eq!(d.update_with(far, true), Verdict::Nothing);
        assert!(matches!(d.update_with(far, true), Verdict::Suspect { .. }));
        let mut verdict = Verdict::Nothing;
        for _ in 0..100 {
            verdict = d.update_with(far, false);
            if verdict != Verdict::Nothing {
                break;
            }
        }
        assert!(matches!(verdict, Verdict::Release { .. }), "{verdict:?}");
        // The same voice near the phone confirms.
        let near = Evidence {
            caller_dbfs: -25.0,
            ..far
        };
        let mut d = two_stage();
        let verdicts: Vec<_> = (0..20).map(|_| d.update_with(near, true)).collect();
        assert!(verdicts.iter().any(|v| matches!(v, Verdict::Confirm(_))));
    }

    #[test]
    fn two_stage_releases_an_episode_that_never_becomes_speech() {
        let mut d = two_stage();
        d.update(true, false, true);
        d.update(true, false, true);
        assert!(d.is_suspecting());
        // Unexplained energy that is never voiced (steady noise): released after the slack.
        let mut verdict = Verdict::Nothing;
        for _ in 0..100 {
            verdict = d.update(true, false, false);
            if verdict != Verdict::Nothing {
                break;
            }
        }
        assert!(matches!(verdict, Verdict::Release { .. }), "{verdict:?}");
    }
}
