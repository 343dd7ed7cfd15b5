//! Band powers of a 20 ms frame: the spectral view the echo model and the barge-in evidence use.
//!
//! The caller and the bot are different voices: at any moment their energy sits in different
//! places of the spectrum (pitch harmonics, formants, a fricative against a vowel). Comparing
//! what came back with what we played band by band finds a caller who, frame by frame in total,
//! is no louder than the bot's echo. Nine bands, narrow where speech has its formants and the
//! telephone band its energy, wide above it:
//!
//! ```text
//!   125–300  300–500  500–750  750–1000  1000–1400  1400–2000  2000–2800  2800–4000  4000–8000 Hz
//! ```
//!
//! (the last only exists at 16 and 24 kHz). One Hann-windowed real FFT per frame, bins summed
//! into bands; powers are normalised like [`mean_power`](super::audio::mean_power) (full scale
//! sine = 0.5 summed over all bands, near enough).
//!
//! Real-time: the FFT plan, the window and the band edges of a rate are built once per process
//! and shared by every analyser ([`BandAnalyzer::new`] builds them on first use); the FFT's work
//! buffers are per thread (fixed-size, const-initialised), so an analyser is one pointer and
//! `analyse` allocates nothing and takes no lock. Cost: one real FFT of 160/320/480 points.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use super::audio::{SampleRate, dbfs_to_power, power_to_dbfs};
use super::vad::NoiseFloor;

/// Number of bands.
pub const BANDS: usize = 9;
/// Band edges, Hz.
const EDGES_HZ: [f32; BANDS + 1] = [
    125.0, 300.0, 500.0, 750.0, 1000.0, 1400.0, 2000.0, 2800.0, 4000.0, 8000.0,
];

/// Power per band, full scale = 1 (the sum over bands approximates the frame's mean power).
pub type Bands = [f32; BANDS];

/// Silence in every band.
pub const SILENT_BANDS: Bands = [0.0; BANDS];

/// Longest frame analysed (20 ms at 48 kHz).
const MAX_N: usize = 960;
/// Largest FFT scratch accepted (complex values); checked when a rate's tables are built.
const MAX_SCRATCH: usize = MAX_N;

/// What every analyser of one rate shares.
struct Tables {
    fft: Arc<dyn RealToComplex<f32>>,
    /// Scratch the plan asks for.
    scratch_len: usize,
    window: Box<[f32]>,
    /// Bin range (start, end exclusive) of each band; empty above Nyquist.
    bins: [(usize, usize); BANDS],
    /// Converts a sum of squared bin magnitudes into mean power.
    norm: f32,
}

impl Tables {
    fn new(rate: SampleRate) -> Option<Self> {
        let n = rate.frame_samples();
        let fft = {
            static PLANNER: OnceLock<Mutex<RealFftPlanner<f32>>> = OnceLock::new();
            let planner = PLANNER.get_or_init(|| Mutex::new(RealFftPlanner::new()));
            planner.lock().ok()?.plan_fft_forward(n)
        };
        if n > MAX_N || fft.get_scratch_len() > MAX_SCRATCH {
            return None;
        }
        let window: Box<[f32]> = (0..n)
            .map(|i| {
                let x = std::f32::consts::PI * 2.0 * i as f32 / n as f32;
                0.5 - 0.5 * x.cos()
            })
            .collect();
        let window_power: f32 = window.iter().map(|w| w * w).sum::<f32>() / n as f32;
        let hz_per_bin = rate.hz() as f32 / n as f32;
        let last_bin = n / 2;
        let mut bins = [(0, 0); BANDS];
        for (b, range) in bins.iter_mut().enumerate() {
            // The Nyquist bin is left out: at 8 kHz the 4–8 kHz band is empty, as it should be.
            let lo = ((EDGES_HZ[b] / hz_per_bin).round() as usize).min(last_bin);
            let hi = ((EDGES_HZ[b + 1] / hz_per_bin).round() as usize).min(last_bin);
            *range = (lo, hi.max(lo));
        }
        let scale = 1.0 / 32_768.0;
        // Parseval for a real FFT keeping bins 0..=n/2: mean power ≈ 2 Σ|X_k|² / n² (window
        // power compensated); in full-scale units.
        let norm = 2.0 * scale * scale / (n as f32 * n as f32 * window_power);
        Some(Self {
            scratch_len: fft.get_scratch_len(),
            fft,
            window,
            bins,
            norm,
        })
    }

    /// The shared tables of `rate` (built on first use).
    fn of(rate: SampleRate) -> Option<Arc<Self>> {
        static TABLES: [OnceLock<Option<Arc<Tables>>>; 4] = [const { OnceLock::new() }; 4];
        let i = match rate {
            SampleRate::Hz8000 => 0,
            SampleRate::Hz16000 => 1,
            SampleRate::Hz24000 => 2,
            SampleRate::Hz48000 => 3,
        };
        TABLES[i]
            .get_or_init(|| Self::new(rate).map(Arc::new))
            .clone()
    }
}

/// Per-thread FFT buffers (nothing in them outlives one frame).
struct Work {
    input: [f32; MAX_N],
    output: [Complex<f32>; MAX_N / 2 + 1],
    scratch: [Complex<f32>; MAX_SCRATCH],
}

const ZERO: Complex<f32> = Complex::new(0.0, 0.0);

thread_local! {
    static WORK: RefCell<Work> = const {
        RefCell::new(Work {
            input: [0.0; MAX_N],
            output: [ZERO; MAX_N / 2 + 1],
            scratch: [ZERO; MAX_SCRATCH],
        })
    };
}

/// Computes [`Bands`] of frames at one rate.
pub struct BandAnalyzer {
    /// `None` only if the rate's FFT could not be planned (never for the rates voicegate uses):
    /// every frame is then silent.
    tables: Option<Arc<Tables>>,
}

impl std::fmt::Debug for BandAnalyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("BandAnalyzer");
        if let Some(t) = &self.tables {
            d.field("len", &t.window.len()).field("bins", &t.bins);
        }
        d.finish()
    }
}

impl BandAnalyzer {
    /// An analyser for frames of `rate`.
    pub fn new(rate: SampleRate) -> Self {
        Self {
            tables: Tables::of(rate),
        }
    }

    /// Band powers of one frame (exactly one frame at the analyser's rate; a shorter slice is
    /// zero-padded, a longer one cut).
    pub fn analyse(&mut self, frame: &[i16]) -> Bands {
        self.bands_of(|input, window| {
            for (i, (x, w)) in input.iter_mut().zip(window.iter()).enumerate() {
                *x = frame.get(i).map_or(0.0, |&s| f32::from(s) * w);
            }
        })
    }

    /// Band powers of one frame of L16 little-endian bytes.
    pub fn analyse_bytes(&mut self, bytes: &[u8]) -> Bands {
        self.bands_of(|input, window| {
            for (i, (x, w)) in input.iter_mut().zip(window.iter()).enumerate() {
                *x = bytes
                    .get(2 * i..2 * i + 2)
                    .map_or(0.0, |b| f32::from(i16::from_le_bytes([b[0], b[1]])) * w);
            }
        })
    }

    /// Fills the windowed input with `fill`, FFT, bins summed into bands.
    fn bands_of(&self, fill: impl FnOnce(&mut [f32], &[f32])) -> Bands {
        let Some(t) = self.tables.as_deref() else {
            return SILENT_BANDS;
        };
        let n = t.window.len();
        WORK.with(|w| {
            let Ok(mut w) = w.try_borrow_mut() else {
                return SILENT_BANDS;
            };
            let w = &mut *w;
            let input = &mut w.input[..n];
            fill(input, &t.window);
            let output = &mut w.output[..n / 2 + 1];
            if t.fft
                .process_with_scratch(input, output, &mut w.scratch[..t.scratch_len])
                .is_err()
            {
                // Lengths are fixed at construction, so this cannot happen; silence is the safe
                // answer.
                return SILENT_BANDS;
            }
            let mut out = SILENT_BANDS;
            for (b, &(lo, hi)) in t.bins.iter().enumerate() {
                out[b] = output[lo..hi].iter().map(|c| c.norm_sqr()).sum::<f32>() * t.norm;
            }
            out
        })
    }
}

/// A noise floor per band (minimum statistics, like the full-band
/// [`NoiseFloor`](super::vad::NoiseFloor)).
#[derive(Debug, Clone)]
pub struct BandNoiseFloor {
    floors: [NoiseFloor; BANDS],
    current: Bands,
}

impl Default for BandNoiseFloor {
    fn default() -> Self {
        Self::new()
    }
}

impl BandNoiseFloor {
    /// Fresh trackers.
    pub fn new() -> Self {
        Self {
            floors: [NoiseFloor::new(); BANDS],
            current: SILENT_BANDS,
        }
    }

    /// Feeds one frame's band powers; returns the floors after it (power, full scale = 1).
    pub fn update(&mut self, bands: &Bands) -> &Bands {
        for (b, f) in self.floors.iter_mut().enumerate() {
            self.current[b] = dbfs_to_power(f.update(power_to_dbfs(bands[b])));
        }
        &self.current
    }

    /// The current floors.
    pub fn floors(&self) -> &Bands {
        &self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::audio::mean_power;

    fn sine(rate: SampleRate, hz: f32, amp: f32) -> Vec<i16> {
        (0..rate.frame_samples())
            .map(|i| {
                let t = i as f32 / rate.hz() as f32;
                (amp * 32_767.0 * (2.0 * std::f32::consts::PI * hz * t).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn a_tone_lands_in_its_band_with_its_power() {
        for rate in [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz24000] {
            let mut a = BandAnalyzer::new(rate);
            let x = sine(rate, 1200.0, 0.25);
            let bands = a.analyse(&x);
            let total: f32 = bands.iter().sum();
            assert!(bands[4] > 0.9 * total, "{rate:?} {bands:?}");
            let p = mean_power(&x);
            assert!((total / p - 1.0).abs() < 0.2, "{rate:?} {total} vs {p}");
            let bytes: Vec<u8> = x.iter().flat_map(|s| s.to_le_bytes()).collect();
            assert_eq!(a.analyse_bytes(&bytes), bands);
        }
    }

    #[test]
    fn shared_tables_give_what_a_private_plan_gives() {
        // The analyser as it was (its own planner, plan and buffers), bit for bit.
        for rate in [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz24000] {
            let n = rate.frame_samples();
            let t = Tables::new(rate).unwrap();
            let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n);
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            let mut a = BandAnalyzer::new(rate);
            for _ in 0..20 {
                let frame: Vec<i16> = (0..n)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        (seed >> 48) as i16
                    })
                    .collect();
                let mut input: Vec<f32> = frame
                    .iter()
                    .zip(t.window.iter())
                    .map(|(&s, w)| f32::from(s) * w)
                    .collect();
                let mut output = fft.make_output_vec();
                fft.process(&mut input, &mut output).unwrap();
                let mut want = SILENT_BANDS;
                for (b, &(lo, hi)) in t.bins.iter().enumerate() {
                    want[b] = output[lo..hi].iter().map(|c| c.norm_sqr()).sum::<f32>() * t.norm;
                }
                assert_eq!(a.analyse(&frame), want, "{rate:?}");
            }
        }
    }

    #[test]
    fn the_top_band_is_empty_at_8_khz() {
        let mut a = BandAnalyzer::new(SampleRate::Hz8000);
        let bands = a.analyse(&sine(SampleRate::Hz8000, 3900.0, 0.25));
        assert_eq!(bands[BANDS - 1], 0.0);
        assert!(bands[BANDS - 2] > 0.0);
    }
}
