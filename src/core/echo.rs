//! Echo model: how much of what the caller's side sends back is the bot's own voice.
//!
//! Phone lines without an echo canceller return the bot's audio 15–30 dB down (10 dB on a bad
//! speakerphone) and 20–200 ms late, smeared by the line and the room. We know exactly what we
//! played and when, so we keep the level envelope of the played reference (one value per 20 ms
//! frame, aligned to the inbound timeline) and learn the echo path from it:
//!
//! * for every candidate bulk delay `d` (0 … `max_delay`, in frames) we track the running mean
//!   and variance of `inbound level − reference level(t − d)` over frames where the reference was
//!   active and the caller was not talking. A real echo path is "the same signal, attenuated", so
//!   the right delay is the one where that difference is steadiest (lowest variance), and its mean
//!   is the echo gain (minus the echo return loss);
//! * the predicted echo level of a frame is the loudest reference level around that delay plus
//!   the gain, with a decaying tail for the line's and the room's reverberation.
//!
//! Until the path is learned (about half a second of bot speech) the model assumes the worst
//! case the product must survive: echo only [`UNLEARNED_GAIN_DB`] below the loudest reference
//! frame of the whole delay window.
//!
//! Real-time: fixed-size arrays only; no allocation at all.

use std::time::Duration;

use super::audio::{FRAME_MS, SILENCE_DBFS, dbfs_to_power, power_to_dbfs};

/// Largest echo delay we model, in frames (400 ms: line + network + far-end buffering).
pub const MAX_DELAY_FRAMES: usize = 20;
/// History slots: the delay window plus the spread around the chosen delay.
const HISTORY: usize = MAX_DELAY_FRAMES + 4;
/// Reference frames quieter than this carry no usable echo information.
const ACTIVE_REF_DBFS: f32 = -50.0;
/// Assumed echo gain before the path is learned: a loud speakerphone echo.
pub const UNLEARNED_GAIN_DB: f32 = -6.0;
/// Frames of observation before the learned path is trusted.
const MIN_OBSERVATIONS: u32 = 25;
/// Weight of one new observation in the running statistics (time constant ≈ 40 frames).
const ALPHA: f32 = 0.025;
/// How fast the predicted tail decays after the reference stops, dB per frame
/// (30 dB per 100 ms: the line's dispersion and a small room; the learned spread covers more).
const TAIL_DECAY_DB: f32 = 6.0;

/// How many standard deviations of the learned echo-to-reference ratio the prediction adds:
/// the echo of one frame varies around the mean (dispersion, the line's nonlinearity, sampling
/// the envelope at 20 ms), and an echo frame louder than predicted looks like the caller.
const SPREAD_WEIGHT: f32 = 1.0;

/// A reference frame this loud (dBFS) bounds the echo gain (bot speech is active at −22…−18
/// dBFS, so its loud frames pass this).
const LOUD_REF_DBFS: f32 = -22.0;
/// Frames of bot audio before the observed gain bound replaces the worst case (200 ms).
const MIN_BOUND_FRAMES: u32 = 10;
/// How fast the gain bound forgets a loud frame, dB per frame (5 dB per second).
const BOUND_DECAY_DB: f32 = 0.1;
/// Margin over the observed bound.
const BOUND_MARGIN_DB: f32 = 3.0;

/// The learned echo path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EchoPath {
    /// Bulk delay of the echo behind the played reference.
    pub delay: Duration,
    /// Echo level minus reference level, dB (negative: the echo return loss).
    pub gain_db: f32,
    /// Standard deviation of that difference, dB: how well the model explains the echo.
    pub spread_db: f32,
}

/// Tracks the played reference and predicts the echo in each inbound frame.
#[derive(Debug, Clone)]
pub struct EchoModel {
    /// Reference level per frame, dBFS; `ref_db[head]` is the current frame.
    ref_db: [f32; HISTORY],
    head: usize,
    mean: [f32; MAX_DELAY_FRAMES + 1],
    mean_sq: [f32; MAX_DELAY_FRAMES + 1],
    count: [u32; MAX_DELAY_FRAMES + 1],
    best: Option<usize>,
    tail_db: f32,
    last_prediction_db: f32,
    bound_db: f32,
    bound_frames: u32,
}

impl Default for EchoModel {
    fn default() -> Self {
        Self::new()
    }
}

impl EchoModel {
    /// A model that has heard nothing yet.
    pub fn new() -> Self {
        Self {
            ref_db: [SILENCE_DBFS; HISTORY],
            head: 0,
            mean: [0.0; MAX_DELAY_FRAMES + 1],
            mean_sq: [0.0; MAX_DELAY_FRAMES + 1],
            count: [0; MAX_DELAY_FRAMES + 1],
            best: None,
            tail_db: SILENCE_DBFS,
            last_prediction_db: SILENCE_DBFS,
            bound_db: UNLEARNED_GAIN_DB,
            bound_frames: 0,
        }
    }

    fn ref_at(&self, delay: usize) -> f32 {
        self.ref_db[(self.head + HISTORY - delay) % HISTORY]
    }

    /// Advances one frame: `played_dbfs` is the level of the bot audio being played to the
    /// caller during this inbound frame ([`SILENCE_DBFS`] when nothing plays). Returns the
    /// predicted echo level in this frame, dBFS.
    pub fn push_reference(&mut self, played_dbfs: f32) -> f32 {
        self.head = (self.head + 1) % HISTORY;
        self.ref_db[self.head] = played_dbfs;
        let direct = match self.best {
            Some(d) => {
                // The envelope is sampled every 20 ms while the true delay is arbitrary and the
                // path disperses, so take the loudest frame around the learned delay.
                let lo = d.saturating_sub(1);
                let hi = (d + 1).min(HISTORY - 1);
                let peak = (lo..=hi)
                    .map(|k| self.ref_at(k))
                    .fold(SILENCE_DBFS, f32::max);
                peak + self.mean[d] + SPREAD_WEIGHT * self.spread_db(d)
            }
            None => {
                let peak = (0..=MAX_DELAY_FRAMES)
                    .map(|k| self.ref_at(k))
                    .fold(SILENCE_DBFS, f32::max);
                peak + self.unlearned_gain_db()
            }
        };
        self.tail_db = direct.max(self.tail_db - TAIL_DECAY_DB);
        self.last_prediction_db = if self.tail_db < SILENCE_DBFS + 10.0 {
            SILENCE_DBFS
        } else {
            self.tail_db
        };
        self.last_prediction_db
    }

    /// The prediction made by the last [`push_reference`](Self::push_reference).
    pub fn predicted_dbfs(&self) -> f32 {
        self.last_prediction_db
    }

    /// Whether any reference was active within the modelled delay window: the echo of the bot
    /// may be arriving now.
    pub fn is_reference_recent(&self) -> bool {
        self.is_reference_active_within(MAX_DELAY_FRAMES + 1)
    }

    /// Whether the reference was active in any of the last `frames` frames (this one included).
    pub fn is_reference_active_within(&self, frames: usize) -> bool {
        (0..frames.min(HISTORY)).any(|k| self.ref_at(k) > ACTIVE_REF_DBFS)
    }

    /// Learns from the current frame's inbound level. Call only for frames that are believed to
    /// hold no caller speech (echo and noise only), or the caller's voice would be learned as echo.
    ///
    /// `noise_floor_dbfs` is subtracted (in power) first: only the part of the frame above the
    /// noise can be echo, and frames less than 3 dB above the floor say nothing about the echo.
    pub fn observe(&mut self, inbound_dbfs: f32, noise_floor_dbfs: f32) {
        self.observe_bound(inbound_dbfs, noise_floor_dbfs);
        // Once the path is known, a frame far louder than the echo it predicts is more likely the
        // caller than the echo: learning from it would teach the model to explain the caller away.
        let trusted = self.best.is_some() || self.bound_frames >= MIN_BOUND_FRAMES;
        if trusted && inbound_dbfs > self.last_prediction_db + 6.0 {
            return;
        }
        if inbound_dbfs < noise_floor_dbfs + 3.0 {
            return;
        }
        let inbound_dbfs =
            power_to_dbfs(dbfs_to_power(inbound_dbfs) - dbfs_to_power(noise_floor_dbfs));
        let mut updated = false;
        for d in 0..=MAX_DELAY_FRAMES {
            let r = self.ref_at(d);
            if r <= ACTIVE_REF_DBFS {
                continue;
            }
            let x = inbound_dbfs - r;
            if self.count[d] == 0 {
                self.mean[d] = x;
                self.mean_sq[d] = x * x;
            } else {
                self.mean[d] += ALPHA * (x - self.mean[d]);
                self.mean_sq[d] += ALPHA * (x * x - self.mean_sq[d]);
            }
            self.count[d] = self.count[d].saturating_add(1);
            updated = true;
        }
        if updated {
            self.best = (0..=MAX_DELAY_FRAMES)
                .filter(|&d| self.count[d] >= MIN_OBSERVATIONS)
                .min_by(|&a, &b| self.spread_db(a).total_cmp(&self.spread_db(b)));
        }
    }

    /// Tracks an upper bound of the echo gain for as long as no path is learned: the loudest
    /// `inbound − loudest reference in the delay window` seen lately. On a line whose echo hides
    /// under the noise, no frame ever rises 3 dB above the floor to teach the path, but the bound
    /// still shows that the echo is at least that far down, so the caller is not masked by the
    /// worst-case assumption for the whole call.
    fn observe_bound(&mut self, inbound_dbfs: f32, noise_floor_dbfs: f32) {
        // Only frames in which the bot was clearly loud bound anything: at the quiet start of a
        // word the reference says little about the echo.
        let peak = (0..=MAX_DELAY_FRAMES)
            .map(|k| self.ref_at(k))
            .fold(SILENCE_DBFS, f32::max);
        if peak <= LOUD_REF_DBFS {
            return;
        }
        // The part of the frame above the noise is the most the echo can be; a frame at the noise
        // floor says the echo is under it.
        let echo_at_most = if inbound_dbfs < noise_floor_dbfs + 3.0 {
            noise_floor_dbfs
        } else {
            power_to_dbfs(dbfs_to_power(inbound_dbfs) - dbfs_to_power(noise_floor_dbfs))
        };
        let r = echo_at_most - peak;
        self.bound_db = if self.bound_frames == 0 {
            r
        } else {
            (self.bound_db - BOUND_DECAY_DB).max(r)
        };
        self.bound_frames = self.bound_frames.saturating_add(1);
    }

    /// The gain assumed before the path is learned: the worst case, lowered to the observed
    /// bound (plus a margin) once enough frames of bot audio were heard.
    fn unlearned_gain_db(&self) -> f32 {
        if self.bound_frames >= MIN_BOUND_FRAMES {
            UNLEARNED_GAIN_DB.min(self.bound_db + BOUND_MARGIN_DB)
        } else {
            UNLEARNED_GAIN_DB
        }
    }

    fn spread_db(&self, d: usize) -> f32 {
        (self.mean_sq[d] - self.mean[d] * self.mean[d])
            .max(0.0)
            .sqrt()
    }

    /// The learned path, once there is one.
    pub fn path(&self) -> Option<EchoPath> {
        self.best.map(|d| EchoPath {
            delay: Duration::from_millis(u64::from(FRAME_MS) * d as u64),
            gain_db: self.mean[d],
            spread_db: self.spread_db(d),
        })
    }

    /// Forgets the reference history but keeps the learned path (the line has not changed).
    pub fn clear_reference(&mut self) {
        self.ref_db = [SILENCE_DBFS; HISTORY];
        self.tail_db = SILENCE_DBFS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bot envelope with syllable-rate swings, deterministic.
    fn bot_level(k: usize) -> f32 {
        let phase = (k * 7919 % 13) as f32;
        if k % 9 == 8 { -70.0 } else { -20.0 - phase }
    }

    #[test]
    fn learns_delay_and_gain_of_a_clean_echo() {
        let mut m = EchoModel::new();
        let delay = 6; // 120 ms
        let gain = -18.0;
        let mut played = Vec::new();
        for k in 0..200 {
            let lvl = bot_level(k);
            played.push(lvl);
            m.push_reference(lvl);
            let echo = if k >= delay {
                played[k - delay] + gain
            } else {
                -90.0
            };
            m.observe(echo.max(-70.0), -90.0);
        }
        let p = m.path().unwrap();
        assert_eq!(p.delay, Duration::from_millis(120));
        assert!((p.gain_db - gain).abs() < 1.0, "{p:?}");
        // Prediction explains the echo within a few dB.
        let pred = m.push_reference(bot_level(200));
        let actual = played[200 - delay] + gain;
        assert!(
            pred >= actual - 0.5 && pred <= actual + 15.0,
            "pred {pred} actual {actual}"
        );
    }

    #[test]
    fn unlearned_model_is_conservative() {
        let mut m = EchoModel::new();
        let p = m.push_reference(-20.0);
        assert_eq!(p, -20.0 + UNLEARNED_GAIN_DB);
        assert!(m.is_reference_recent());
        // The reference leaves the 400 ms window after 21 frames; the tail then decays.
        for _ in 0..60 {
            m.push_reference(SILENCE_DBFS);
        }
        assert!(!m.is_reference_recent());
        assert_eq!(m.predicted_dbfs(), SILENCE_DBFS);
    }
}
