//! Voice activity: webrtc-vad behind a `Send` wrapper, a tracked noise floor, and the speech
//! state machine (onset after N ms of voiced audio, end of speech after a hangover of M ms).
//!
//! What it owns: the per-frame "is this caller speech?" feature extraction at the call rate, and
//! the smoothed speech state the rest of the pipeline acts on. What it does not: echo (see
//! [`super::echo`]), barge-in (see [`super::bargein`]).
//!
//! webrtc-vad only runs at 8, 16, 32 or 48 kHz; a 24 kHz call is resampled to 16 kHz for it
//! (causally, through the same 2.5 ms FFT resampler as the media path).
//!
//! Real-time: no allocation after [`VoiceDetector::new`].

use std::time::Duration;

use webrtc_vad::{SampleRate as VadRate, Vad, VadMode};

use super::audio::{FRAME_MS, SampleRate, dbfs_to_power, power_to_dbfs};
use super::resample::{FrameResampler, ResampleError};

/// How eager webrtc-vad is to call a frame voiced (its own four modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadAggressiveness {
    /// Mode 0: most frames voiced; best recall, most false alarms.
    Quality,
    /// Mode 1.
    LowBitrate,
    /// Mode 2.
    Aggressive,
    /// Mode 3: fewest false alarms on noise.
    VeryAggressive,
}

impl VadAggressiveness {
    fn mode(self) -> VadMode {
        match self {
            Self::Quality => VadMode::Quality,
            Self::LowBitrate => VadMode::LowBitrate,
            Self::Aggressive => VadMode::Aggressive,
            Self::VeryAggressive => VadMode::VeryAggressive,
        }
    }

    /// Parses 0–3.
    pub fn from_level(level: u8) -> Option<Self> {
        Some(match level {
            0 => Self::Quality,
            1 => Self::LowBitrate,
            2 => Self::Aggressive,
            3 => Self::VeryAggressive,
            _ => return None,
        })
    }
}

/// Owns one webrtc-vad instance.
///
/// `webrtc_vad::Vad` holds a raw pointer to its C state and so is not `Send`.
struct SendVad(Vad);

// SAFETY: the C state behind the pointer (libfvad's `Fvad`) is plain heap memory with no thread
// affinity and no thread-local or global state; it is owned exclusively by this wrapper (never
// shared, never aliased, freed once in `Vad`'s `Drop`), so moving the owner to another thread
// is sound. It is not `Sync`, and we never hand out `&Vad` across threads.
unsafe impl Send for SendVad {}

/// Per-frame features of the caller's audio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameFeatures {
    /// webrtc-vad's raw decision.
    pub voiced: bool,
    /// Frame level, dBFS.
    pub level_dbfs: f32,
    /// Tracked background noise floor, dBFS.
    pub noise_floor_dbfs: f32,
}

impl FrameFeatures {
    /// Level above the noise floor, dB.
    pub fn snr_db(&self) -> f32 {
        self.level_dbfs - self.noise_floor_dbfs
    }
}

/// Runs webrtc-vad on call-rate frames and tracks the noise floor.
pub struct VoiceDetector {
    vad: SendVad,
    to_vad_rate: Option<FrameResampler>,
    vad_buf: Box<[i16]>,
    floor: NoiseFloor,
}

impl std::fmt::Debug for VoiceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceDetector")
            .field("floor", &self.floor)
            .finish_non_exhaustive()
    }
}

impl VoiceDetector {
    /// Builds a detector for frames at `call_rate`.
    pub fn new(
        call_rate: SampleRate,
        aggressiveness: VadAggressiveness,
    ) -> Result<Self, ResampleError> {
        let (vad_rate, to_vad_rate) = match call_rate {
            SampleRate::Hz8000 => (VadRate::Rate8kHz, None),
            SampleRate::Hz16000 => (VadRate::Rate16kHz, None),
            SampleRate::Hz24000 => (
                VadRate::Rate16kHz,
                Some(FrameResampler::new(call_rate, SampleRate::Hz16000)?),
            ),
            SampleRate::Hz48000 => (VadRate::Rate48kHz, None),
        };
        // One frame at the VAD's rate when the call's rate needs resampling, else unused.
        let vad_buf_len = match to_vad_rate {
            Some(_) => SampleRate::Hz16000.frame_samples(),
            None => 0,
        };
        Ok(Self {
            vad: SendVad(Vad::new_with_rate_and_mode(vad_rate, aggressiveness.mode())),
            to_vad_rate,
            vad_buf: vec![0; vad_buf_len].into_boxed_slice(),
            floor: NoiseFloor::new(),
        })
    }

    /// Analyses one call-rate frame. `level_dbfs` is the frame's level (computed once by the
    /// caller, who needs it too).
    pub fn analyse(&mut self, frame: &[i16], level_dbfs: f32) -> FrameFeatures {
        let voiced = match self.to_vad_rate.as_mut() {
            None => self.vad.0.is_voice_segment(frame).unwrap_or(false),
            Some(r) => {
                let n = r.process_frame(frame, &mut self.vad_buf);
                self.vad
                    .0
                    .is_voice_segment(&self.vad_buf[..n])
                    .unwrap_or(false)
            }
        };
        let noise_floor_dbfs = self.floor.update(level_dbfs);
        FrameFeatures {
            voiced,
            level_dbfs,
            noise_floor_dbfs,
        }
    }

    /// See [`NoiseFloor::set_hold_speech`].
    pub fn set_floor_hold_speech(&mut self, hold: bool) {
        self.floor.set_hold_speech(hold);
    }

    /// The delay of the VAD's own resampler (zero at 8 and 16 kHz).
    pub fn delay(&self) -> Duration {
        self.to_vad_rate
            .as_ref()
            .map_or(Duration::ZERO, FrameResampler::delay)
    }
}

/// Background level tracker (minimum statistics): blocks of 200 ms, each summarised by the power
/// mean of its quieter half of frames, and the floor is the quietest of the last eight blocks
/// (1.6 s). The quieter half keeps a block that a few frames of speech fall into (the first
/// syllable after a pause, a breath) at the level of the noise between them; a plain mean is
/// ruled by its loudest frame, and a speaker who never pauses for a whole block would lift the
/// floor to their own quiet syllables within 1.6 s. A steady noise bed (or a rise in it) is
/// learned within 1.6 s; half a block's mean is close to the noise's mean level, not to its dips.
/// Until the first block completes, the floor follows the quietest frame so far.
///
/// A caller who talks for two seconds without a pause fills every block with speech, and the
/// floor would climb to their quietest syllables: the end of the sentence, falling towards the
/// real floor, would then look like silence 40–60 ms early, cutting the end of turn short (the
/// corpus' end-of-turn delay, p50, was 470 ms against a 500 ms hangover). So a block that is
/// mostly above the floor *and* swings by more than `SPEECH_SPREAD_DB` between its frames (a
/// talker's syllables; a steady noise swings by a few dB) stays out of the window, for at most
/// `MAX_SKIPPED` blocks in a row (then until the next pause) so that a noise which does swing
/// is learned after 3 s.
#[derive(Debug, Clone, Copy)]
pub struct NoiseFloor {
    blocks: [f32; Self::BLOCKS],
    filled: usize,
    next: usize,
    /// The current block's frame powers.
    frames: [f32; Self::BLOCK_FRAMES as usize],
    acc_frames: u32,
    quietest_db: f32,
    floor_db: f32,
    /// Blocks in a row left out of the window as speech.
    skipped: u32,
    /// Whether speech-like blocks are left out (see [`set_hold_speech`](Self::set_hold_speech)).
    hold_speech: bool,
}

impl NoiseFloor {
    /// Frames per block (200 ms).
    const BLOCK_FRAMES: u32 = 10;
    /// Frames of a block this far (dB) above the floor are left out of its mean...
    const OUTLIER_DB: f32 = 10.0;
    /// ...as long as at least this many frames are left.
    const KEPT_FRAMES: usize = 5;
    /// A block mostly above the floor whose frames span more than this (dB) is a talker's
    /// syllables and pauses, not a new noise: it stays out of the window...
    const SPEECH_SPREAD_DB: f32 = 12.0;
    /// ...for at most this many blocks in a row (3 s; then until the next block that is not
    /// speech-like), so a noise that does swing still gets in.
    const MAX_SKIPPED: u32 = 15;
    /// Blocks in the window (1.6 s).
    const BLOCKS: usize = 8;
    /// Never below this: a digitally silent line must not make every breath look like speech.
    const MIN_DB: f32 = -75.0;

    /// A fresh tracker.
    pub fn new() -> Self {
        Self {
            blocks: [0.0; Self::BLOCKS],
            filled: 0,
            next: 0,
            frames: [0.0; Self::BLOCK_FRAMES as usize],
            acc_frames: 0,
            quietest_db: 0.0,
            floor_db: Self::MIN_DB,
            skipped: 0,
            hold_speech: true,
        }
    }

    /// Feeds one frame's level; returns the floor after it.
    pub fn update(&mut self, level_db: f32) -> f32 {
        self.frames[self.acc_frames as usize] = dbfs_to_power(level_db);
        self.acc_frames += 1;
        if self.acc_frames == Self::BLOCK_FRAMES {
            let limit = dbfs_to_power(self.floor_db + Self::OUTLIER_DB);
            let (mut quiet, mut n, mut all) = (0.0, 0usize, 0.0);
            for &p in &self.frames {
                all += p;
                if p <= limit {
                    quiet += p;
                    n += 1;
                }
            }
            let (lo, hi) = self
                .frames
                .iter()
                .fold((f32::MAX, 0.0f32), |(lo, hi), &p| (lo.min(p), hi.max(p)));
            let speech_like = self.hold_speech
                && n < Self::KEPT_FRAMES
                && hi > lo * dbfs_to_power(Self::SPEECH_SPREAD_DB)
                && self.filled > 0;
            self.acc_frames = 0;
            // Held out for at most `MAX_SKIPPED` blocks; after that, speech-like blocks go in
            // until a pause (a block that is not speech-like) comes.
            if speech_like {
                if self.skipped < Self::MAX_SKIPPED {
                    self.skipped += 1;
                    return self.floor_db;
                }
            } else {
                self.skipped = 0;
            }
            self.blocks[self.next] = if n >= Self::KEPT_FRAMES {
                quiet / n as f32
            } else {
                all / Self::BLOCK_FRAMES as f32
            };
            self.next = (self.next + 1) % Self::BLOCKS;
            self.filled = (self.filled + 1).min(Self::BLOCKS);
            let min = self.blocks[..self.filled]
                .iter()
                .copied()
                .fold(f32::MAX, f32::min);
            self.floor_db = power_to_dbfs(min);
        } else if self.filled == 0 {
            self.quietest_db = if self.acc_frames == 1 {
                level_db
            } else {
                self.quietest_db.min(level_db)
            };
            self.floor_db = self.quietest_db;
        }
        self.floor_db = self.floor_db.max(Self::MIN_DB);
        self.floor_db
    }

    /// Whether a block that swings like a talker (see `SPEECH_SPREAD_DB`) is kept out of the
    /// window (the default). The session turns this off while the bot's echo may be coming
    /// back: the echo swings like speech too, and the echo model, not the floor, explains it.
    pub fn set_hold_speech(&mut self, hold: bool) {
        self.hold_speech = hold;
    }

    /// The current floor.
    pub fn floor_dbfs(&self) -> f32 {
        self.floor_db
    }
}

impl Default for NoiseFloor {
    fn default() -> Self {
        Self::new()
    }
}

/// A change of the smoothed speech state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeechTransition {
    /// Speech confirmed. `onset_frames_ago` frames ago (counting this one as 0) the first
    /// speech frame of the run arrived.
    Started {
        /// How many frames before this one the utterance began.
        onset_frames_ago: u32,
    },
    /// The hangover ran out: the utterance is over.
    Ended {
        /// Frames from the first speech frame to the last one (inclusive).
        speech_frames: u32,
    },
}

/// The smoothed speech state: onset after `onset_frames` speech frames (one non-speech frame
/// inside the run is forgiven), end after `hangover_frames` non-speech frames in a row.
#[derive(Debug, Clone)]
pub struct SpeechState {
    onset_frames: u32,
    hangover_frames: u32,
    speaking: bool,
    run: u32,
    run_len: u32,
    gap: u32,
    utterance_frames: u32,
    since_last_speech: u32,
}

impl SpeechState {
    /// `onset` and `hangover` are rounded to whole 20 ms frames (at least one).
    pub fn new(onset: Duration, hangover: Duration) -> Self {
        Self {
            onset_frames: frames_of(onset),
            hangover_frames: frames_of(hangover),
            speaking: false,
            run: 0,
            run_len: 0,
            gap: 0,
            utterance_frames: 0,
            since_last_speech: 0,
        }
    }

    /// Whether the smoothed state is "speech": inside an utterance and no more than
    /// [`RELEASE_FRAMES`] frames after its last speech frame. (The utterance itself goes on until
    /// the hangover ends the turn; see [`Self::is_in_utterance`].)
    pub fn is_speaking(&self) -> bool {
        self.speaking && self.since_last_speech < RELEASE_FRAMES
    }

    /// Whether an utterance is open (between its onset and the end of its hangover).
    pub fn is_in_utterance(&self) -> bool {
        self.speaking
    }

    /// Feeds one frame's decision; returns a transition when the state changes.
    pub fn update(&mut self, speech: bool) -> Option<SpeechTransition> {
        if self.speaking {
            self.utterance_frames += 1;
            if speech {
                self.since_last_speech = 0;
                return None;
            }
            self.since_last_speech += 1;
            if self.since_last_speech >= self.hangover_frames {
                self.speaking = false;
                let speech_frames = self.utterance_frames - self.since_last_speech;
                self.reset_run();
                return Some(SpeechTransition::Ended { speech_frames });
            }
            return None;
        }
        if speech {
            self.run += 1;
            self.run_len += 1 + self.gap;
            self.gap = 0;
            if self.run >= self.onset_frames {
                self.speaking = true;
                self.utterance_frames = self.run_len;
                self.since_last_speech = 0;
                let onset_frames_ago = self.run_len - 1;
                return Some(SpeechTransition::Started { onset_frames_ago });
            }
        } else if self.run > 0 {
            self.gap += 1;
            if self.gap > 1 {
                self.reset_run();
            }
        }
        None
    }

    fn reset_run(&mut self) {
        self.run = 0;
        self.run_len = 0;
        self.gap = 0;
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.speaking = false;
        self.reset_run();
        self.utterance_frames = 0;
        self.since_last_speech = 0;
    }
}

/// Frames after the last speech frame for which the smoothed state stays "speech": 120 ms bridges
/// the short gaps between words and the weak word endings (fricatives, breath) that energy labels
/// and webrtc-vad both miss, without holding the state through real pauses. The turn ends later,
/// after the configured hangover.
pub const RELEASE_FRAMES: u32 = 6;

/// Whole 20 ms frames in `d`, at least one.
pub fn frames_of(d: Duration) -> u32 {
    ((d.as_millis() as u32).div_ceil(FRAME_MS)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn onset_and_hangover() {
        let mut s = SpeechState::new(ms(60), ms(200));
        assert_eq!(s.update(true), None);
        assert_eq!(s.update(true), None);
        assert_eq!(
            s.update(true),
            Some(SpeechTransition::Started {
                onset_frames_ago: 2
            })
        );
        for _ in 0..20 {
            assert_eq!(s.update(true), None);
        }
        for _ in 0..9 {
            assert_eq!(s.update(false), None);
        }
        assert_eq!(
            s.update(false),
            Some(SpeechTransition::Ended { speech_frames: 23 })
        );
        assert!(!s.is_speaking());
    }

    #[test]
    fn one_gap_frame_is_forgiven_two_are_not() {
        let mut s = SpeechState::new(ms(60), ms(200));
        s.update(true);
        s.update(false);
        s.update(true);
        assert_eq!(
            s.update(true),
            Some(SpeechTransition::Started {
                onset_frames_ago: 3
            })
        );
        let mut s = SpeechState::new(ms(60), ms(200));
        s.update(true);
        s.update(false);
        s.update(false);
        s.update(true);
        assert_eq!(s.update(true), None);
    }

    #[test]
    fn noise_floor_learns_a_steady_bed_but_not_speech() {
        let mut f = NoiseFloor::new();
        for _ in 0..500 {
            f.update(-45.0);
        }
        assert!((f.floor_dbfs() + 45.0).abs() < 0.5);
        for _ in 0..25 {
            f.update(-20.0);
        }
        assert!(
            f.floor_dbfs() < -42.0,
            "half a second of speech lifted the floor to {}",
            f.floor_dbfs()
        );
    }

    /// Two seconds of syllables (−20 and −32 dBFS alternating every 100 ms) over a −60 dBFS
    /// bed: the floor stays at the bed while the bot is silent, and follows the old way
    /// (climbing onto the quiet syllables) when told not to hold. A swinging noise that never
    /// stops is learned after the longest hold.
    #[test]
    fn noise_floor_does_not_climb_onto_a_long_sentence() {
        let syllables = |f: &mut NoiseFloor, frames: usize| {
            for k in 0..frames {
                f.update(if (k / 5) % 2 == 0 { -20.0 } else { -32.0 });
            }
        };
        let mut held = NoiseFloor::new();
        let mut free = NoiseFloor::new();
        free.set_hold_speech(false);
        for f in [&mut held, &mut free] {
            for _ in 0..100 {
                f.update(-60.0);
            }
            syllables(f, 100);
        }
        assert!(held.floor_dbfs() < -55.0, "held: {}", held.floor_dbfs());
        assert!(free.floor_dbfs() > -40.0, "free: {}", free.floor_dbfs());
        // 6 s more of the same: past the longest hold, it is the new background.
        syllables(&mut held, 300);
        assert!(held.floor_dbfs() > -40.0, "held: {}", held.floor_dbfs());
    }

    #[test]
    fn vad_hears_a_voice_like_signal_and_not_silence() {
        for rate in [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz24000] {
            let mut d = VoiceDetector::new(rate, VadAggressiveness::Aggressive).unwrap();
            let n = rate.frame_samples();
            let silent = vec![0i16; n];
            assert!(!d.analyse(&silent, -100.0).voiced);
            // A harmonic-rich 150 Hz buzz is enough for webrtc-vad's speech model.
            let mut voiced = 0;
            for k in 0..50 {
                let frame: Vec<i16> = (0..n)
                    .map(|i| {
                        let t = (k * n + i) as f32 / rate.hz() as f32;
                        let s: f32 = (1..12)
                            .map(|h| {
                                (2.0 * std::f32::consts::PI * 150.0 * h as f32 * t).sin() / h as f32
                            })
                            .sum();
                        (s * 4_000.0) as i16
                    })
                    .collect();
                if d.analyse(&frame, -20.0).voiced {
                    voiced += 1;
                }
            }
            assert!(voiced > 25, "{rate}: {voiced}/50 voiced");
        }
    }
}
