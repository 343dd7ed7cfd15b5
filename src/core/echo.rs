//! Echo model: how much of what the caller's side sends back is the bot's own voice.
//!
//! Phone lines without an echo canceller return the bot's audio 15–30 dB down (10 dB on a bad
//! speakerphone) and 20–200 ms late, smeared by the line and the room. We know exactly what we
//! played and when, so we keep the power envelope of the played reference (one value per 20 ms
//! frame, aligned to the inbound timeline) and fit the echo path to it:
//!
//! ```text
//!   inbound power(k) ≈ Σ_j g_j · reference power(k − j)  +  b        j = 0 … TAPS−1 (480 ms)
//! ```
//!
//! a 24-tap filter on the power envelope (it covers any bulk delay up to 480 ms, a delay between
//! two frame boundaries, the line's dispersion and a room's reverberation tail alike) plus a
//! constant `b` for the noise, fitted by recursive least squares (forgetting over ~10 s). The
//! predictions use only the taps that carry the path (a quarter of the strongest and more): the
//! rest is the fit's spill between correlated neighbouring frames, which would hand a loud
//! syllable's echo to the quiet frames around it (10 dB misses and more, where the real echo
//! follows the played envelope within 1–2 dB on a flat line). The caller's voice and the
//! line noise are uncorrelated with what the bot said, so they land in `b` and in the residual,
//! not in the taps: a regression learns the echo even when it lies under the noise, where
//! comparing levels frame by frame learns the noise instead. Frames far above the model's own
//! prediction (the caller, once the model is trusted) are not learned from.
//!
//! The predicted echo level of a frame is the fitted echo power plus the typical spread of real
//! echo frames around the fit (tracked in dB). Until about a second of bot audio has been fitted
//! the model assumes the worst case the product must survive: echo only [`UNLEARNED_GAIN_DB`]
//! below the loudest reference frame of the window, lowered by an observed bound, and per delay
//! and band by what actually came back at that delay (the smallest ratio seen, plus a margin):
//! a caller who talks over the bot's first words is heard as soon as the bot's first loud
//! frames have come back, not after a second.
//!
//! Cost: one rank-one update of a 25 × 25 matrix per learning frame (≈ 2 k multiply-adds, `f64`
//! for numerical safety over hour-long calls; the matrix is kept no larger than its prior so
//! taps the bot has not excited for a while cannot wind up). Real-time: fixed-size arrays only.

use std::time::Duration;

use super::audio::{FRAME_MS, SILENCE_DBFS, dbfs_to_power, power_to_dbfs};
use super::spectrum::{BANDS, Bands, SILENT_BANDS};

/// Taps of the envelope filter: 24 frames, 480 ms of delay plus tail.
pub const TAPS: usize = 24;
/// Largest echo delay we model, in frames (the filter's span).
pub const MAX_DELAY_FRAMES: usize = TAPS - 1;
/// Unknowns of the regression: the taps and the noise constant.
const DIM: usize = TAPS + 1;
/// Input standing for the noise constant (about the power of −20 dBFS, like the references).
const BIAS_INPUT: f64 = 0.01;
/// Reference frames quieter than this carry no usable echo information.
const ACTIVE_REF_DBFS: f32 = -50.0;
/// Assumed echo gain before the path is learned: a loud speakerphone echo.
pub const UNLEARNED_GAIN_DB: f32 = -6.0;
/// Frames of fitting before the learned path is trusted (1 s of bot audio).
const MIN_UPDATES: u32 = 50;
/// Forgetting factor of the recursive least-squares fit: frames older than 1 / (1 − λ) = 500
/// frames (10 s of bot audio) fade out, so the fit follows a line that changes and still
/// averages the caller's and the noise's disturbance over seconds.
const LAMBDA: f64 = 0.998;
/// Taps weaker than this share of the strongest are not used for predictions (see
/// `select_taps`).
const SIGNIFICANT_TAP: f64 = 0.25;
/// Initial inverse correlation (inputs scaled so a −20 dBFS frame is 1): a weak prior, the
/// first frames of bot audio dominate it.
const P0: f64 = 100.0;
/// Inputs and outputs are scaled by this (the power of −20 dBFS) so the matrix stays near 1.
const SCALE: f64 = 100.0;
/// Once trusted, an error above the prediction is capped at this multiple of it (+3 dB), so a
/// caller the detector has not yet caught cannot drag the model up to their level.
const POSITIVE_ERROR_CAP: f64 = 1.0;
/// Once trusted, a frame more than this far above the model's full prediction (echo plus noise
/// constant) is taken for the caller and not learned from, dB.
const OUTLIER_DB: f32 = 6.0;
/// How many standard deviations of the real echo's spread around the fit the prediction adds.
const SPREAD_WEIGHT: f32 = 1.0;
/// Spread assumed before it is measured, dB.
const INITIAL_SPREAD_DB: f32 = 4.0;
/// Weight of one frame in the spread statistics (time constant ≈ 40 frames).
const ALPHA: f32 = 0.025;

/// A reference frame this loud (dBFS) bounds the echo gain before the fit is trusted (bot
/// speech is active at −22…−18 dBFS, so its loud frames pass this).
const LOUD_REF_DBFS: f32 = -22.0;
/// Frames of loud bot audio before the observed gain bound replaces the worst case: the whole
/// delay window and then some (600 ms), so the echo of the first loud frame has arrived.
const MIN_BOUND_FRAMES: u32 = TAPS as u32 + 6;
/// How fast the gain bound forgets a loud frame, dB per frame (5 dB per second).
const BOUND_DECAY_DB: f32 = 0.1;
/// Margin over the observed bound.
const BOUND_MARGIN_DB: f32 = 3.0;
/// How fast the unlearned prediction's tail decays after the reference stops, dB per frame.
const TAIL_DECAY_DB: f32 = 6.0;

/// Loud reference frames seen at a delay before that delay's own band bounds are used (see
/// [`EchoModel::observe_lag_bounds`]).
const MIN_LAG_OBSERVATIONS: u16 = 4;
/// Margin over a delay's band bound, as a power ratio (6 dB): the bound is the smallest of a
/// few noisy ratios, and an echo between two frame boundaries splits its power over two delays
/// (−3 dB each at worst).
const LAG_BOUND_MARGIN: f32 = 4.0;
/// A band quieter than this (dBFS) bounds no delay (digital silence says nothing).
const AUDIBLE_BAND_DBFS: f32 = -80.0;
/// Delays (frames) either side whose bounds a delay's prediction also takes (see
/// `predict_bands`).
const LAG_SLACK: usize = 1;
/// How fast a delay's band bound forgets, as a power ratio per observation (0.1 dB).
const LAG_BOUND_DECAY: f32 = 1.023;

/// Step of the per-band gain tracking (time constant ≈ 20 frames of audible echo in the band).
const BAND_MU: f32 = 0.05;
/// A band's echo must be this far above the band's noise to teach its gain (power ratio, 3 dB).
const BAND_VISIBLE: f32 = 2.0;

/// The learned echo path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EchoPath {
    /// Bulk delay of the echo behind the played reference (the strongest tap).
    pub delay: Duration,
    /// Echo power over reference power, all taps together, dB (negative: the echo return loss).
    pub gain_db: f32,
    /// Standard deviation of real echo frames around the fit, dB.
    pub spread_db: f32,
}

/// Tracks the played reference and predicts the echo in each inbound frame.
#[derive(Debug, Clone)]
pub struct EchoModel {
    /// Reference power per frame (full scale = 1); `ref_pow[head]` is the current frame.
    ref_pow: [f32; TAPS],
    head: usize,
    /// The fit: taps, then the noise constant.
    w: [f64; DIM],
    /// The echo path the predictions use: the fit's taps, keeping only those at least
    /// [`SIGNIFICANT_TAP`] of the strongest.
    taps: [f32; TAPS],
    /// Inverse correlation matrix of the (scaled) inputs, forgetting old frames.
    p: [[f64; DIM]; DIM],
    updates: u32,
    spread_mean: f32,
    spread_sq: f32,
    spread_n: u32,
    /// The fitted echo power of the current frame (without the spread), full scale = 1.
    echo_pow: f32,
    /// Reference band powers per frame, aligned with `ref_pow`.
    ref_bands: [Bands; TAPS],
    /// Per band: the echo's power relative to the full-band fit (the line's colour: a
    /// telephone band-pass takes the low and high bands down).
    band_gain: Bands,
    /// Per band: the moving sums of real echo and of the full-band fit's prediction in frames
    /// that taught its gain (zero until the first).
    band_real: Bands,
    band_base: Bands,
    /// Per band: mean and mean square of `log10(real / predicted)` echo, dB.
    band_dev: Bands,
    band_dev_sq: Bands,
    /// The predicted echo per band of the current frame, before margins.
    echo_bands: Bands,
    tail_db: f32,
    last_prediction_db: f32,
    bound_db: f32,
    bound_frames: u32,
    /// Per delay (frames) and band, while the fit is young: the smallest ratio of what came
    /// back (above the noise) to what was played that long before (infinite until the echo has
    /// stood above the noise there), and per delay how many loud reference frames it has seen.
    lag_bound: [Bands; TAPS],
    lag_observations: [u16; TAPS],
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
            ref_pow: [0.0; TAPS],
            head: 0,
            w: [0.0; DIM],
            taps: [0.0; TAPS],
            p: initial_p(),
            updates: 0,
            spread_mean: 0.0,
            spread_sq: INITIAL_SPREAD_DB * INITIAL_SPREAD_DB,
            spread_n: 0,
            echo_pow: 0.0,
            ref_bands: [SILENT_BANDS; TAPS],
            band_gain: [1.0; BANDS],
            band_real: SILENT_BANDS,
            band_base: SILENT_BANDS,
            band_dev: SILENT_BANDS,
            band_dev_sq: [INITIAL_SPREAD_DB * INITIAL_SPREAD_DB; BANDS],
            echo_bands: SILENT_BANDS,
            tail_db: SILENCE_DBFS,
            last_prediction_db: SILENCE_DBFS,
            bound_db: UNLEARNED_GAIN_DB,
            bound_frames: 0,
            lag_bound: [[f32::INFINITY; BANDS]; TAPS],
            lag_observations: [0; TAPS],
        }
    }

    fn ref_at(&self, delay: usize) -> f32 {
        self.ref_pow[(self.head + TAPS - delay) % TAPS]
    }

    fn ref_db_at(&self, delay: usize) -> f32 {
        power_to_dbfs(self.ref_at(delay))
    }

    /// The loudest reference frame of the window, dBFS (one conversion, not one per frame).
    fn peak_ref_db(&self) -> f32 {
        power_to_dbfs(self.ref_pow.iter().copied().fold(0.0, f32::max))
    }

    /// The regression input of the current frame.
    fn input(&self) -> [f64; DIM] {
        let mut x = [0.0; DIM];
        for (j, v) in x.iter_mut().take(TAPS).enumerate() {
            *v = f64::from(self.ref_at(j));
        }
        x[TAPS] = BIAS_INPUT;
        x
    }

    fn is_trusted(&self) -> bool {
        self.updates >= MIN_UPDATES
    }

    /// Advances one frame: `played_dbfs` is the level of the bot audio being played to the
    /// caller during this inbound frame ([`SILENCE_DBFS`] when nothing plays). Returns the
    /// predicted echo level in this frame, dBFS.
    pub fn push_reference(&mut self, played_dbfs: f32, played_bands: &Bands) -> f32 {
        self.head = (self.head + 1) % TAPS;
        self.ref_pow[self.head] = if played_dbfs <= SILENCE_DBFS {
            0.0
        } else {
            dbfs_to_power(played_dbfs)
        };
        self.ref_bands[self.head] = *played_bands;
        let fitted: f32 = (0..TAPS).map(|j| self.taps[j] * self.ref_at(j)).sum();
        self.echo_pow = fitted;
        self.predict_bands();
        let predicted = if self.is_trusted() {
            power_to_dbfs(self.echo_pow) + SPREAD_WEIGHT * self.spread_db()
        } else {
            let peak = self.peak_ref_db();
            let direct = peak + self.unlearned_gain_db();
            self.tail_db = direct.max(self.tail_db - TAIL_DECAY_DB);
            self.tail_db
        };
        self.last_prediction_db = if predicted < SILENCE_DBFS + 10.0 {
            SILENCE_DBFS
        } else {
            predicted
        };
        self.last_prediction_db
    }

    /// Per band, the echo the full-band fit predicts, coloured by the band gains; before the fit
    /// is trusted, the loudest reference of the window at the assumed worst-case gain.
    fn predict_bands(&mut self) {
        let mut out = SILENT_BANDS;
        if self.is_trusted() {
            for j in 0..TAPS {
                let g = self.taps[j];
                if g <= 0.0 {
                    continue;
                }
                let r = &self.ref_bands[(self.head + TAPS - j) % TAPS];
                for (o, x) in out.iter_mut().zip(r.iter()) {
                    *o += g * x;
                }
            }
            for (o, gain) in out.iter_mut().zip(self.band_gain.iter()) {
                *o *= gain;
            }
        } else {
            // The loudest reference band of the window at the worst-case gain, or lower where
            // that delay's echo has been seen ([`observe_lag_bounds`](Self::observe_lag_bounds)).
            let g = dbfs_to_power(self.unlearned_gain_db());
            // A delay counts with its neighbours' bounds too: on a live socket the echo's
            // alignment with what we think was played drifts by a frame as Vonage's buffer
            // fills and drains, and a bound learned one frame off is as low as the envelope's
            // dips between syllables.
            for d in 0..TAPS {
                let r = &self.ref_bands[(self.head + TAPS - d) % TAPS];
                let near = d.saturating_sub(LAG_SLACK)..(d + LAG_SLACK + 1).min(TAPS);
                let bounded = self.lag_observations[near.clone()]
                    .iter()
                    .all(|&n| n >= MIN_LAG_OBSERVATIONS);
                for (b, (o, x)) in out.iter_mut().zip(r.iter()).enumerate() {
                    let gain = if bounded {
                        let bound = self.lag_bound[near.clone()]
                            .iter()
                            .fold(0.0f32, |m, l| m.max(l[b]));
                        g.min(LAG_BOUND_MARGIN * bound)
                    } else {
                        g
                    };
                    *o = o.max(gain * x);
                }
            }
        }
        self.echo_bands = out;
    }

    /// The predicted echo power per band of the current frame, before any margin.
    pub fn predicted_bands(&self) -> &Bands {
        &self.echo_bands
    }

    /// How far real echo scatters around the prediction in each band, dB (mean excess plus one
    /// standard deviation): the margin a band needs before its energy counts as the caller.
    pub fn band_spread_db(&self, b: usize) -> f32 {
        if !self.is_trusted() {
            return 0.0;
        }
        spread(self.band_dev[b], self.band_dev_sq[b])
    }

    /// Learns the line's colour from an echo-only frame: per band, the ratio of the real echo
    /// (above the band's noise) to the full-band prediction.
    pub fn observe_bands(&mut self, inbound: &Bands, noise: &Bands) {
        if !self.is_trusted() {
            return;
        }
        for b in 0..BANDS {
            let predicted = self.echo_bands[b];
            if predicted <= 0.0 || predicted < noise[b] * BAND_VISIBLE / self.band_gain[b].max(1e-3)
            {
                continue;
            }
            let real = (inbound[b] - noise[b]).max(0.0);
            let base = predicted / self.band_gain[b].max(1e-6);
            // A band far louder than predicted is more likely the caller: cap its pull.
            let capped = real.min(4.0 * self.band_gain[b] * base);
            // The gain is a ratio of moving sums, so loud frames weigh most (an average of
            // per-frame ratios lets quiet, noisy frames swing it); the sums start from the flat
            // line's prior.
            if self.band_base[b] == 0.0 {
                self.band_real[b] = base;
                self.band_base[b] = base;
            }
            self.band_real[b] += BAND_MU * (capped - self.band_real[b]);
            self.band_base[b] += BAND_MU * (base - self.band_base[b]);
            if self.band_base[b] > 0.0 {
                self.band_gain[b] = self.band_real[b] / self.band_base[b];
            }
            if real > 0.0 {
                let d = 10.0 * (real / predicted).log10();
                let d = d.clamp(-30.0, 30.0);
                self.band_dev[b] += ALPHA * (d - self.band_dev[b]);
                self.band_dev_sq[b] += ALPHA * (d * d - self.band_dev_sq[b]);
            }
        }
    }

    /// The prediction made by the last [`push_reference`](Self::push_reference).
    pub fn predicted_dbfs(&self) -> f32 {
        self.last_prediction_db
    }

    /// Whether any reference was active within the modelled delay window: the echo of the bot
    /// may be arriving now.
    pub fn is_reference_recent(&self) -> bool {
        self.is_reference_active_within(TAPS)
    }

    /// Whether the reference was active in any of the last `frames` frames (this one included).
    pub fn is_reference_active_within(&self, frames: usize) -> bool {
        (0..frames.min(TAPS)).any(|k| self.ref_db_at(k) > ACTIVE_REF_DBFS)
    }

    /// Learns from the current frame's inbound level. Call for every frame that may hold the
    /// bot's echo, except while the caller is most likely talking: a frame far above the
    /// prediction is left out (once trusted; before, capped at the worst-case echo), and one a
    /// little above it pulls the fit up only a little.
    pub fn observe(&mut self, inbound_dbfs: f32, noise_floor_dbfs: f32) {
        let x = self.input();
        let y = f64::from(dbfs_to_power(inbound_dbfs));
        let full: f64 = (0..DIM).map(|i| self.w[i] * x[i]).sum();
        if self.is_trusted() && inbound_dbfs > power_to_dbfs(full.max(0.0) as f32) + OUTLIER_DB {
            return;
        }
        self.track_spread(inbound_dbfs, noise_floor_dbfs);
        // Recursive least squares: it resolves the strongly correlated neighbouring reference
        // frames where a gradient fit smears the path over them. Least squares has no defence
        // against outliers, so a frame is first capped at what echo and known noise can be at
        // most: the worst-case echo of the loudest reference in the window (a caller that
        // slipped past the detector is far louder than any echo).
        let peak = self.peak_ref_db();
        let ceiling = f64::from(dbfs_to_power(peak + UNLEARNED_GAIN_DB))
            + (self.w[TAPS] * BIAS_INPUT).max(0.0);
        let mut e = y.min(ceiling.max(full)) - full;
        if self.is_trusted() {
            // Once the path is known, a frame louder than predicted is more likely the caller
            // (masked, not yet detected) than a change of the line: learn from it only a little.
            e = e.min(full.max(0.0) * POSITIVE_ERROR_CAP);
        }
        let xs = x.map(|v| v * SCALE);
        let mut px = [0.0; DIM];
        for (i, out) in px.iter_mut().enumerate() {
            *out = (0..DIM).map(|j| self.p[i][j] * xs[j]).sum();
        }
        let denom = LAMBDA + (0..DIM).map(|i| xs[i] * px[i]).sum::<f64>();
        if !denom.is_finite() || denom <= 0.0 {
            return;
        }
        let k = px.map(|v| v / denom);
        for (g, ki) in self.w.iter_mut().zip(k.iter()) {
            *g += ki * e * SCALE;
        }
        // P ← (P − k·(P x)ᵀ) / λ (P is symmetric, so xᵀP = (P x)ᵀ), in one pass. Taps the
        // reference has not excited lately would grow without bound (1/λ per frame): the same
        // pass keeps the matrix no larger than the prior (its trace, known beforehand).
        let trace: f64 = (0..DIM).map(|i| self.p[i][i] - k[i] * px[i]).sum::<f64>() / LAMBDA;
        let cap = P0 * DIM as f64;
        if trace.is_finite() {
            let scale = if trace > cap { cap / trace } else { 1.0 } / LAMBDA;
            for (row, ki) in self.p.iter_mut().zip(k.iter()) {
                for (v, pxj) in row.iter_mut().zip(px.iter()) {
                    *v = (*v - ki * pxj) * scale;
                }
            }
        } else {
            self.p = initial_p();
        }
        self.updates = self.updates.saturating_add(1);
        self.select_taps();
    }

    /// The path the predictions use. Neighbouring reference frames are strongly correlated, so
    /// the fit spills a little of the path onto the taps around it (with either sign); predicted
    /// from those, the quiet frame after a loud syllable gets the syllable's echo and the
    /// prediction misses by 10 dB and more in both directions. A real path at 20 ms resolution
    /// puts nearly all its power in one or two frames (a delay between frame boundaries) and a
    /// reverberation tail decays by about 5 dB per frame, so taps under a quarter of the
    /// strongest are dropped.
    fn select_taps(&mut self) {
        let strongest = self.w[..TAPS].iter().fold(0.0f64, |a, &g| a.max(g));
        for (t, &g) in self.taps.iter_mut().zip(self.w.iter()) {
            *t = if g >= SIGNIFICANT_TAP * strongest && g > 0.0 {
                g as f32
            } else {
                0.0
            };
        }
    }

    /// How far real echo frames scatter around the fit: only frames whose echo clearly stands
    /// above the noise say anything about that.
    fn track_spread(&mut self, inbound_dbfs: f32, noise_floor_dbfs: f32) {
        if !self.is_trusted() {
            return;
        }
        let echo_db = power_to_dbfs(self.echo_pow);
        if echo_db < noise_floor_dbfs + 6.0 {
            return;
        }
        let above_noise =
            power_to_dbfs(dbfs_to_power(inbound_dbfs) - dbfs_to_power(noise_floor_dbfs));
        let d = above_noise - echo_db;
        self.spread_mean += ALPHA * (d - self.spread_mean);
        self.spread_sq += ALPHA * (d * d - self.spread_sq);
        self.spread_n = self.spread_n.saturating_add(1);
    }

    fn spread_db(&self) -> f32 {
        spread(self.spread_mean, self.spread_sq)
    }

    /// Tracks an upper bound of the echo gain while the fit is young: the loudest
    /// `inbound − loudest reference in the window` seen lately. Feed it every frame while the
    /// reference is recent, the caller's included: they can only raise the bound (the safe side),
    /// and leaving out frames the model cannot explain would keep it from ever learning that the
    /// echo is louder than it thought.
    pub fn observe_bound(&mut self, inbound_dbfs: f32, noise_floor_dbfs: f32) {
        let peak = self.peak_ref_db();
        if peak <= LOUD_REF_DBFS {
            return;
        }
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

    /// Bounds the echo per delay and band while the fit is young: an echo at delay `d` is at most
    /// what came back in a band (where it stands above the band's noise) over what was played in
    /// that band `d` frames before. A caller talking only loosens a
    /// ratio, and the smallest one counts, so an interruption in the bot's first words is heard
    /// as soon as a few of the bot's loud frames have come back at each delay, not after the
    /// fit's second of learning. Per band, because the line's colour (a telephone band-pass)
    /// makes the full-band ratio swing with the spectrum of each syllable.
    pub fn observe_lag_bounds(&mut self, inbound: &Bands, noise: &Bands) {
        if self.is_trusted() {
            return;
        }
        let audible = dbfs_to_power(AUDIBLE_BAND_DBFS);
        for d in 0..TAPS {
            if self.ref_db_at(d) <= LOUD_REF_DBFS {
                continue;
            }
            let played = &self.ref_bands[(self.head + TAPS - d) % TAPS];
            for b in 0..BANDS {
                // Only what stands above the noise bounds anything: a frame at the noise floor
                // may be one whose echo has not come back yet (Vonage started playing it later
                // than we count), and taken as a bound it would claim the echo is no louder
                // than the noise.
                if played[b] <= 0.0 || inbound[b] < BAND_VISIBLE * noise[b] || inbound[b] < audible
                {
                    continue;
                }
                let r = (inbound[b] - noise[b]) / played[b];
                let bound = &mut self.lag_bound[d][b];
                *bound = (*bound * LAG_BOUND_DECAY).min(r);
            }
            self.lag_observations[d] = self.lag_observations[d].saturating_add(1);
        }
    }

    /// The gain assumed before the fit is trusted: the worst case, lowered to the observed bound
    /// (plus a margin) once enough frames of bot audio were heard.
    fn unlearned_gain_db(&self) -> f32 {
        if self.bound_frames >= MIN_BOUND_FRAMES {
            UNLEARNED_GAIN_DB.min(self.bound_db + BOUND_MARGIN_DB)
        } else {
            UNLEARNED_GAIN_DB
        }
    }

    /// The learned path, once the fit is trusted.
    pub fn path(&self) -> Option<EchoPath> {
        if !self.is_trusted() {
            return None;
        }
        let (delay, _) = (0..TAPS)
            .map(|j| (j, self.w[j]))
            .fold((0, f64::MIN), |a, b| if b.1 > a.1 { b } else { a });
        let total: f32 = self.taps.iter().sum();
        Some(EchoPath {
            delay: Duration::from_millis(u64::from(FRAME_MS) * delay as u64),
            gain_db: power_to_dbfs(total),
            spread_db: self.spread_db(),
        })
    }

    /// Forgets the reference history but keeps the learned path (the line has not changed).
    pub fn clear_reference(&mut self) {
        self.ref_pow = [0.0; TAPS];
        self.ref_bands = [SILENT_BANDS; TAPS];
        self.echo_bands = SILENT_BANDS;
        self.tail_db = SILENCE_DBFS;
    }
}

fn initial_p() -> [[f64; DIM]; DIM] {
    let mut p = [[0.0; DIM]; DIM];
    for (i, row) in p.iter_mut().enumerate() {
        row[i] = P0;
    }
    p
}

/// The margin a prediction needs from running statistics of `real − predicted` (dB): the mean
/// excess (when the prediction runs low) plus one standard deviation.
fn spread(mean: f32, mean_sq: f32) -> f32 {
    (mean_sq - mean * mean).max(0.0).sqrt() + mean.max(0.0)
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
        for k in 0..600 {
            let lvl = bot_level(k);
            played.push(lvl);
            m.push_reference(lvl, &SILENT_BANDS);
            let echo = if k >= delay {
                played[k - delay] + gain
            } else {
                -90.0
            };
            m.observe(echo.max(-70.0), -90.0);
        }
        let p = m.path().unwrap();
        assert_eq!(p.delay, Duration::from_millis(120));
        assert!((p.gain_db - gain).abs() < 1.5, "{p:?}");
        // Prediction explains the echo within a few dB.
        let pred = m.push_reference(bot_level(600), &SILENT_BANDS);
        let actual = played[600 - delay] + gain;
        assert!(
            pred >= actual - 0.5 && pred <= actual + 15.0,
            "pred {pred} actual {actual}"
        );
    }

    #[test]
    fn predicts_the_quiet_frames_after_loud_ones() {
        // A delay between two frame boundaries (70 ms: half the power 3 frames back, half 4).
        // The fitted path must not spill a loud syllable's echo onto the quiet frames around it.
        let mut m = EchoModel::new();
        let mut played: Vec<f32> = Vec::new();
        let echo_of = |played: &[f32], k: usize| {
            let at = |d: usize| {
                k.checked_sub(d)
                    .map_or(0.0, |i| 0.5 * dbfs_to_power(played[i] - 20.0))
            };
            power_to_dbfs(at(3) + at(4))
        };
        let mut worst: f32 = 0.0;
        for k in 0..900 {
            played.push(bot_level(k));
            let predicted = m.push_reference(bot_level(k), &SILENT_BANDS);
            let actual = echo_of(&played, k).max(-90.0);
            if k >= 600 && actual > -60.0 {
                let spread = m.path().unwrap().spread_db;
                worst = worst.max((predicted - spread - actual).abs());
            }
            m.observe(actual, -90.0);
        }
        assert!(worst < 3.0, "worst miss {worst} dB");
    }

    /// Deterministic noise in [-1, 1).
    fn jitter(k: usize) -> f32 {
        ((k * 2_654_435_761) % 1_000) as f32 / 500.0 - 1.0
    }

    #[test]
    fn learns_an_echo_under_the_noise_and_ignores_the_caller() {
        // Echo 24 dB down at 60 ms, noise at about -42 dBFS (so the echo is mostly under it), and
        // a caller talking at -20 dBFS in bursts that have nothing to do with the bot; the
        // session keeps detected caller frames away from the model, and one in ten slips through.
        let mut m = EchoModel::new();
        let (delay, gain) = (3, -24.0);
        let mut played = Vec::new();
        for k in 0..1_500 {
            let lvl = bot_level(k);
            played.push(lvl);
            m.push_reference(lvl, &SILENT_BANDS);
            let echo = if k >= delay {
                dbfs_to_power(played[k - delay] + gain)
            } else {
                0.0
            };
            let noise = dbfs_to_power(-42.0 + 2.0 * jitter(k));
            let caller = if (k / 40) % 3 == 0 {
                dbfs_to_power(-20.0 + 6.0 * jitter(k + 7))
            } else {
                0.0
            };
            if caller == 0.0 || k % 10 == 0 {
                m.observe(power_to_dbfs(echo + noise + caller), -44.0);
            }
        }
        // The echo is too weak to pin down exactly, but what the model explains stays far under
        // the caller: a −20 dBFS reference predicts an echo at least 14 dB under the caller.
        let p = m.path().unwrap();
        assert!(p.gain_db < gain + 10.0, "{p:?}");
    }

    /// Band powers of a frame at `dbfs`, shaped by `tilt` (dB per band, from the lowest).
    fn bands_at(dbfs: f32, tilt: f32) -> Bands {
        let mut b = SILENT_BANDS;
        for (i, v) in b.iter_mut().enumerate() {
            *v = dbfs_to_power(dbfs + tilt * i as f32) / BANDS as f32;
        }
        b
    }

    /// Learns from one inbound frame of `echo` over `noise`, as the session does while the
    /// reference is recent and no suspicion is open.
    fn learn(m: &mut EchoModel, echo: &Bands, noise: &Bands) {
        let mut inbound = *echo;
        for (i, n) in inbound.iter_mut().zip(noise.iter()) {
            *i += n;
        }
        let level = power_to_dbfs(inbound.iter().sum());
        let floor = power_to_dbfs(noise.iter().sum());
        m.observe_bound(level, floor);
        m.observe_lag_bounds(&inbound, noise);
        m.observe(level, floor);
    }

    #[test]
    fn a_caller_in_the_bots_first_words_is_not_taken_for_echo() {
        // The bot's first 800 ms on a line that returns it 20 dB down at 60 ms, band-limited
        // (the high bands 6 dB lower still); then the caller starts talking as loud as the bot.
        // The fit is not trusted yet (a second of bot audio), but the per-delay bounds bring the
        // predicted echo down to what the line returned, where the worst case (6 dB under the
        // bot) would hide the caller.
        let mut m = EchoModel::new();
        let (delay, gain) = (3, -20.0);
        let noise = bands_at(-70.0, 0.0);
        let mut played = Vec::new();
        let mut predicted = SILENT_BANDS;
        for k in 0..41 {
            let lvl = -18.0 - ((k * 7919 % 13) as f32);
            played.push(lvl);
            m.push_reference(lvl, &bands_at(lvl, 0.0));
            predicted = *m.predicted_bands();
            let echo_lvl = if k >= delay {
                played[k - delay] + gain
            } else {
                -90.0
            };
            if k == 40 {
                break;
            }
            learn(&mut m, &bands_at(echo_lvl, -0.75), &noise);
        }
        assert!(m.path().is_none(), "the fit is still young");
        let echo_db = power_to_dbfs(predicted.iter().sum());
        let loudest_recent = played[played.len() - TAPS..]
            .iter()
            .copied()
            .fold(-100.0, f32::max);
        assert!(
            echo_db < loudest_recent - 12.0,
            "predicted echo {echo_db} dBFS against the bot at {loudest_recent}"
        );
        // And never under what the line really returns.
        let real = played[played.len() - 1 - delay] + gain;
        assert!(
            echo_db >= real,
            "predicted {echo_db} under the real echo {real}"
        );
    }

    #[test]
    fn a_loud_echo_keeps_the_worst_case_before_the_fit_is_trusted() {
        // A speakerphone returning the bot only 7 dB down: the bounds must not talk the model
        // into expecting less than that.
        let mut m = EchoModel::new();
        let (delay, gain) = (5, -7.0);
        let noise = bands_at(-70.0, 0.0);
        let mut played = Vec::new();
        for k in 0..45 {
            let lvl = -18.0 - ((k * 7919 % 13) as f32);
            played.push(lvl);
            m.push_reference(lvl, &bands_at(lvl, 0.0));
            let echo_lvl = if k >= delay {
                played[k - delay] + gain
            } else {
                -90.0
            };
            if k >= 2 * delay {
                let predicted = m.predicted_bands();
                let real = bands_at(echo_lvl, 0.0);
                for b in 0..BANDS {
                    assert!(predicted[b] >= real[b], "frame {k} band {b}");
                }
            }
            learn(&mut m, &bands_at(echo_lvl, 0.0), &noise);
        }
    }

    #[test]
    fn unlearned_model_is_conservative() {
        let mut m = EchoModel::new();
        let p = m.push_reference(-20.0, &SILENT_BANDS);
        assert_eq!(p, -20.0 + UNLEARNED_GAIN_DB);
        assert!(m.is_reference_recent());
        // The reference leaves the 480 ms window after 24 frames; the tail then decays.
        for _ in 0..60 {
            m.push_reference(SILENCE_DBFS, &SILENT_BANDS);
        }
        assert!(!m.is_reference_recent());
        assert_eq!(m.predicted_dbfs(), SILENCE_DBFS);
    }
}
