//! In-band DTMF: a Goertzel detector for the eight DTMF frequencies, run on every caller frame.
//!
//! A key press that reaches us as audio (Vonage reports most as `websocket:dtmf`, but a caller on
//! a line that passes tones in-band, or a menu played by another system, gives us the tones
//! themselves) is loud, steady and voiced enough for webrtc-vad to call it speech. It must never
//! count as the caller talking over the bot, so every frame is checked for a DTMF pair first.
//!
//! The test per 20 ms frame: the strongest row tone (697–941 Hz) and the strongest column tone
//! (1209–1633 Hz) together hold most of the frame's energy ([`MIN_PAIR_SHARE`]), each stands
//! clear of the other tones of its group ([`MIN_GROUP_MARGIN_DB`]: a voice's harmonics spread
//! over several), and their levels are within the twist a telephone keypad allows
//! ([`MAX_TWIST_DB`]). A frame is "tonal" while that holds and for one frame after, so the partial
//! frame at a tone's end does not look like a new sound.
//!
//! Cost: eight Goertzel recurrences over the frame (one multiply-add pair per sample and
//! frequency), about 2.5 k multiply-adds at 16 kHz. Real-time: no allocation.

use std::f32::consts::PI;

use super::audio::{SampleRate, mean_power};
use super::dtmf::DtmfDigit;

/// Row frequencies of the DTMF matrix, Hz.
const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// Column frequencies, Hz.
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// Keys by row and column.
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];
/// Share of the frame's energy the two tones must hold. A clean key press holds nearly all of
/// it; 0.6 leaves room for line noise and the bot's echo under the tone.
const MIN_PAIR_SHARE: f32 = 0.6;
/// How far each tone must stand above the other three of its group, dB.
const MIN_GROUP_MARGIN_DB: f32 = 8.0;
/// Largest level difference between the two tones, dB (keypads: row up to 4 dB below or
/// 8 dB above the column; symmetric and generous here).
const MAX_TWIST_DB: f32 = 8.0;
/// Frames quieter than this (mean square, full scale = 1) are never tones: −55 dBFS.
const MIN_POWER: f32 = 3.2e-6;

/// Detects DTMF tone pairs in caller frames.
#[derive(Debug, Clone)]
pub struct ToneDetector {
    /// `2 cos(2π f / rate)` for the rows, then the columns.
    coeff: [f32; 8],
    /// Frames the last tone is still held for.
    hold: u8,
    last: Option<DtmfDigit>,
}

impl ToneDetector {
    /// A detector for frames at `rate`.
    pub fn new(rate: SampleRate) -> Self {
        let fs = rate.hz() as f32;
        let mut coeff = [0.0; 8];
        for (c, f) in coeff.iter_mut().zip(ROWS.iter().chain(COLS.iter())) {
            *c = 2.0 * (2.0 * PI * f / fs).cos();
        }
        Self {
            coeff,
            hold: 0,
            last: None,
        }
    }

    /// Analyses one frame; returns the key whose tones fill it, if any.
    pub fn detect(&mut self, frame: &[i16]) -> Option<DtmfDigit> {
        self.detect_with_power(frame, mean_power(frame))
    }

    /// [`detect`](Self::detect) for a caller that has the frame's [`mean_power`] already (the
    /// session measures every frame's level): the frame is not summed a second time.
    pub fn detect_with_power(&mut self, frame: &[i16], power: f32) -> Option<DtmfDigit> {
        let key = self.key_in(frame, power);
        if key.is_some() {
            self.hold = 1;
            self.last = key;
        } else if self.hold > 0 {
            self.hold -= 1;
        } else {
            self.last = None;
        }
        key
    }

    /// Whether the last frame was a tone, or the frame right after one.
    pub fn is_tonal(&self) -> bool {
        self.last.is_some()
    }

    fn key_in(&self, frame: &[i16], power: f32) -> Option<DtmfDigit> {
        let n = frame.len();
        // A quiet frame (the caller silent while the bot talks, most of a call) skips the
        // eight filters.
        if n == 0 || power < MIN_POWER {
            return None;
        }
        let scale = 1.0 / 32_768.0;
        // In the units of the filters' output: the sum of the squared normalised samples.
        let energy = power * n as f32;
        let mut s1 = [0.0f32; 8];
        let mut s2 = [0.0f32; 8];
        for &x in frame {
            let x = f32::from(x) * scale;
            for k in 0..8 {
                let s0 = x + self.coeff[k] * s1[k] - s2[k];
                s2[k] = s1[k];
                s1[k] = s0;
            }
        }
        // Energy of a sinusoid at each frequency, in the units of `energy`: 2|X|²/N.
        let mut p = [0.0f32; 8];
        for k in 0..8 {
            let mag2 = s1[k] * s1[k] + s2[k] * s2[k] - self.coeff[k] * s1[k] * s2[k];
            p[k] = 2.0 * mag2 / n as f32;
        }
        let (row, row_p, row_next) = strongest(&p[..4]);
        let (col, col_p, col_next) = strongest(&p[4..]);
        let margin = 10f32.powf(MIN_GROUP_MARGIN_DB / 10.0);
        let twist = 10f32.powf(MAX_TWIST_DB / 10.0);
        let ok = row_p + col_p >= MIN_PAIR_SHARE * energy
            && row_p >= margin * row_next
            && col_p >= margin * col_next
            && row_p <= twist * col_p
            && col_p <= twist * row_p;
        ok.then(|| DtmfDigit::from_char(KEYS[row][col])).flatten()
    }
}

/// Index and power of the strongest of four tones, and the power of the next strongest.
fn strongest(p: &[f32]) -> (usize, f32, f32) {
    let mut best = 0;
    for k in 1..p.len() {
        if p[k] > p[best] {
            best = k;
        }
    }
    let next = p
        .iter()
        .enumerate()
        .filter(|&(k, _)| k != best)
        .map(|(_, &v)| v)
        .fold(0.0f32, f32::max);
    (best, p[best], next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone_frame(rate: SampleRate, f1: f32, f2: f32, amp: f32, offset: usize) -> Vec<i16> {
        let fs = rate.hz() as f32;
        (0..rate.frame_samples())
            .map(|i| {
                let t = (i + offset) as f32 / fs;
                let v = amp * ((2.0 * PI * f1 * t).sin() + (2.0 * PI * f2 * t).sin());
                (v * 32_767.0) as i16
            })
            .collect()
    }

    #[test]
    fn finds_every_key_at_every_call_rate() {
        for rate in [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz24000] {
            for (r, row) in ROWS.iter().enumerate() {
                for (c, col) in COLS.iter().enumerate() {
                    let mut d = ToneDetector::new(rate);
                    let key = d.detect(&tone_frame(rate, *row, *col, 0.1, 37));
                    assert_eq!(
                        key.map(DtmfDigit::as_char),
                        Some(KEYS[r][c]),
                        "{rate:?} {row} {col}"
                    );
                    assert!(d.is_tonal());
                }
            }
        }
    }

    #[test]
    fn voice_like_harmonics_and_noise_are_not_tones() {
        let rate = SampleRate::Hz16000;
        let fs = rate.hz() as f32;
        // A 120 Hz voice with ten harmonics.
        let voice: Vec<i16> = (0..rate.frame_samples())
            .map(|i| {
                let t = i as f32 / fs;
                let v: f32 = (1..=10)
                    .map(|h| (2.0 * PI * 120.0 * h as f32 * t).sin() / h as f32)
                    .sum();
                (v * 6_000.0) as i16
            })
            .collect();
        let mut d = ToneDetector::new(rate);
        assert_eq!(d.detect(&voice), None);
        // Pseudo-random noise.
        let mut x = 12_345u32;
        let noise: Vec<i16> = (0..rate.frame_samples())
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                ((x >> 16) as i16) / 4
            })
            .collect();
        assert_eq!(d.detect(&noise), None);
        // Silence.
        assert_eq!(d.detect(&[0; 320]), None);
        assert!(!d.is_tonal());
    }

    #[test]
    fn holds_for_one_frame_after_a_tone() {
        let rate = SampleRate::Hz8000;
        let mut d = ToneDetector::new(rate);
        assert!(d.detect(&tone_frame(rate, 852.0, 1477.0, 0.2, 0)).is_some());
        assert!(d.detect(&[0; 160]).is_none());
        assert!(d.is_tonal());
        assert!(d.detect(&[0; 160]).is_none());
        assert!(!d.is_tonal());
    }
}
