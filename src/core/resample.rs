//! Streaming sample-rate conversion between the call rate and the agent rate, one 20 ms frame
//! at a time, on top of rubato's synchronous FFT resampler.
//!
//! Every rate voicegate handles is a multiple of 8 kHz, so one 20 ms frame in is always a whole
//! number of samples out (160, 320, 480 or 960). rubato's [`rubato::Fft`] with a fixed input size
//! therefore produces exactly one output frame per input frame: over any number of frames no
//! sample is lost or invented, by construction. The resampler is split into four 5 ms
//! sub-chunks, which keeps its delay at 2.5 ms (an unsplit FFT resampler holds back 10 ms, and
//! the soxr "VHQ" stream default of the popular Python framework 37.5 ms). See
//! [`FrameResampler::delay`].
//!
//! Equal rates bypass rubato entirely (a copy).
//!
//! Real-time: no allocation after [`FrameResampler::new`]; rubato's `process_into_buffer` writes
//! into buffers sized here.

use std::fmt;
use std::time::Duration;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

use super::audio::SampleRate;

/// Sub-chunks per 20 ms frame: 5 ms each, for a 2.5 ms delay (measured by `benches/resample.rs`
/// and the `delay_matches_impulse` test).
const SUB_CHUNKS: usize = 4;

/// Why a resampler could not be built. Happens only at construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResampleError {
    /// rubato refused the configuration.
    Construction {
        /// Input rate in Hz.
        from: u32,
        /// Output rate in Hz.
        to: u32,
    },
}

impl fmt::Display for ResampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Construction { from, to } => {
                write!(f, "cannot build a resampler from {from} Hz to {to} Hz")
            }
        }
    }
}

impl std::error::Error for ResampleError {}

/// Converts a stream of 20 ms frames from one rate to another, one frame per call.
pub struct FrameResampler {
    from: SampleRate,
    to: SampleRate,
    inner: Option<Box<Fft<f32>>>,
    buf_in: Box<[f32]>,
    buf_out: Box<[f32]>,
}

impl fmt::Debug for FrameResampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameResampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("bypass", &self.inner.is_none())
            .finish()
    }
}

impl FrameResampler {
    /// Builds a resampler for `from` → `to`; all buffers are allocated here.
    pub fn new(from: SampleRate, to: SampleRate) -> Result<Self, ResampleError> {
        let inner = if from == to {
            None
        } else {
            let r = Fft::<f32>::new_custom(
                from.hz() as usize,
                to.hz() as usize,
                from.frame_samples(),
                SUB_CHUNKS,
                1,
                WindowFunction::BlackmanHarris2,
                FixedSync::Input,
            )
            .map_err(|_| ResampleError::Construction {
                from: from.hz(),
                to: to.hz(),
            })?;
            // The whole design rests on one frame in giving exactly one frame out.
            if r.input_frames_next() != from.frame_samples()
                || r.output_frames_next() != to.frame_samples()
            {
                return Err(ResampleError::Construction {
                    from: from.hz(),
                    to: to.hz(),
                });
            }
            Some(Box::new(r))
        };
        // One frame each way; a bypass needs none.
        let (n_in, n_out) = if inner.is_some() {
            (from.frame_samples(), to.frame_samples())
        } else {
            (0, 0)
        };
        Ok(Self {
            from,
            to,
            inner,
            buf_in: vec![0.0; n_in].into_boxed_slice(),
            buf_out: vec![0.0; n_out].into_boxed_slice(),
        })
    }

    /// Input rate.
    pub fn from_rate(&self) -> SampleRate {
        self.from
    }

    /// Output rate.
    pub fn to_rate(&self) -> SampleRate {
        self.to
    }

    /// Whether this is a plain copy (equal rates).
    pub fn is_bypass(&self) -> bool {
        self.inner.is_none()
    }

    /// The delay this resampler adds: how late an input event appears in the output.
    pub fn delay(&self) -> Duration {
        match &self.inner {
            None => Duration::ZERO,
            Some(r) => self.to.duration_of(r.output_delay() as u64),
        }
    }

    /// Resamples one frame: `input` must hold exactly `from.frame_samples()` samples and `output`
    /// at least `to.frame_samples()`. Returns the samples written (always one output frame).
    ///
    /// # Panics
    ///
    /// Only on a caller bug (wrong slice lengths); the session always passes whole frames.
    pub fn process_frame(&mut self, input: &[i16], output: &mut [i16]) -> usize {
        let n_in = self.from.frame_samples();
        let n_out = self.to.frame_samples();
        assert!(
            input.len() == n_in && output.len() >= n_out,
            "resampler given a partial frame"
        );
        let Some(r) = self.inner.as_mut() else {
            output[..n_in].copy_from_slice(input);
            return n_in;
        };
        for (d, &s) in self.buf_in.iter_mut().zip(input) {
            *d = f32::from(s) / 32_768.0;
        }
        let produced = {
            // Both adapters wrap preallocated slices of the right length, so neither the
            // constructor nor rubato can fail here; a failure would be an internal bug, and we
            // degrade to silence rather than panic on the media path.
            let inp = InterleavedSlice::new(&self.buf_in[..n_in], 1, n_in);
            let out = InterleavedSlice::new_mut(&mut self.buf_out[..n_out], 1, n_out);
            match (inp, out) {
                (Ok(inp), Ok(mut out)) => match r.process_into_buffer(&inp, &mut out, None) {
                    Ok((_, produced)) => produced,
                    Err(_) => 0,
                },
                _ => 0,
            }
        };
        // Straight loops without per-sample bounds checks or branches, so they vectorise.
        let (head, tail) = output[..n_out].split_at_mut(produced.min(n_out));
        for (d, &x) in head.iter_mut().zip(self.buf_out.iter()) {
            *d = to_i16(x);
        }
        tail.fill(0);
        n_out
    }

    /// Forgets all history (used when a turn is discarded, so no tail of it leaks into the next).
    pub fn reset(&mut self) {
        if let Some(r) = self.inner.as_mut() {
            r.reset();
        }
    }
}

/// Converts a float sample in [-1, 1) to `i16`, rounding half away from zero and saturating
/// (FFT resampling can overshoot a full-scale input slightly); NaN gives 0.
///
/// Exactly `(x * 32768).round()` clamped, without `f32::round`: on the x86-64 baseline (no
/// SSE4.1) that is a libm call per sample, which made this loop ~9 % of the server's CPU at
/// 800 calls. Truncation and the comparisons here are inline and vectorise.
fn to_i16(x: f32) -> i16 {
    if x.is_nan() {
        return 0;
    }
    // `max`/`min` (not `clamp`) give the compiler a value that cannot be NaN, so the
    // conversion below needs no saturation checks and the loop vectorises.
    #[allow(clippy::manual_clamp)]
    let y = (x * 32_768.0).max(-32_768.0).min(32_767.0);
    // Exact: |y| <= 32768, so the truncation and the difference lose nothing.
    let t = y as i32;
    let frac = y - t as f32;
    let r = t + i32::from(frac >= 0.5) - i32::from(frac <= -0.5);
    r.clamp(-32_768, 32_767) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_i16_matches_round_then_clamp() {
        let reference = |x: f32| (x * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16;
        let mut xs = vec![
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1.0,
            -1.0,
            1.5,
            -1.5,
            0.5 / 32_768.0,
            -0.5 / 32_768.0,
            1.5 / 32_768.0,
            -2.5 / 32_768.0,
            0.499_999_97 / 32_768.0,
            32_767.5 / 32_768.0,
            -32_768.5 / 32_768.0,
        ];
        // Every half step over the whole range, and neighbours of each.
        for i in -65_540..=65_540 {
            let x = i as f32 / 65_536.0;
            xs.extend([x, x.next_up(), x.next_down()]);
        }
        for x in xs {
            assert_eq!(to_i16(x), reference(x), "x = {x:e}");
        }
    }

    const RATES: [SampleRate; 4] = [
        SampleRate::Hz8000,
        SampleRate::Hz16000,
        SampleRate::Hz24000,
        SampleRate::Hz48000,
    ];

    fn sine(rate: SampleRate, hz: f32, n: usize, offset: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = (i + offset) as f32 / rate.hz() as f32;
                (8_000.0 * (2.0 * std::f32::consts::PI * hz * t).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn every_pair_builds_with_small_delay() {
        for from in RATES {
            for to in RATES {
                let r = FrameResampler::new(from, to).unwrap();
                assert_eq!(r.is_bypass(), from == to);
                assert!(
                    r.delay() <= Duration::from_millis(3),
                    "{from}->{to}: {:?}",
                    r.delay()
                );
            }
        }
    }

    #[test]
    fn sample_count_is_conserved_over_ten_minutes() {
        // 10 minutes = 30 000 frames; exact output count, no drift.
        let mut r = FrameResampler::new(SampleRate::Hz16000, SampleRate::Hz24000).unwrap();
        let input = sine(SampleRate::Hz16000, 440.0, 320, 0);
        let mut out = [0i16; 960];
        let mut total = 0u64;
        for _ in 0..30_000 {
            total += r.process_frame(&input, &mut out) as u64;
        }
        assert_eq!(total, 30_000 * 480);
    }

    #[test]
    fn delay_matches_impulse() {
        for (from, to) in [
            (SampleRate::Hz16000, SampleRate::Hz24000),
            (SampleRate::Hz24000, SampleRate::Hz8000),
        ] {
            let mut r = FrameResampler::new(from, to).unwrap();
            let mut input = vec![0i16; from.frame_samples()];
            input[40] = 20_000;
            let mut out = vec![0i16; to.frame_samples()];
            r.process_frame(&input, &mut out);
            let peak = out
                .iter()
                .enumerate()
                .max_by_key(|(_, v)| v.unsigned_abs())
                .unwrap()
                .0;
            let expected_pos = 40 * to.hz() as usize / from.hz() as usize
                + (r.delay().as_micros() as usize * to.hz() as usize / 1_000_000);
            assert!(
                peak.abs_diff(expected_pos) <= 1,
                "{from}->{to}: peak {peak}, expected {expected_pos}"
            );
        }
    }

    #[test]
    fn no_clicks_at_frame_edges() {
        // A continuous sine resampled frame by frame must stay continuous: the largest step
        // between neighbouring output samples stays near the sine's own largest step.
        for (from, to) in [
            (SampleRate::Hz16000, SampleRate::Hz24000),
            (SampleRate::Hz24000, SampleRate::Hz16000),
            (SampleRate::Hz8000, SampleRate::Hz16000),
        ] {
            let mut r = FrameResampler::new(from, to).unwrap();
            let mut out_all = Vec::new();
            let mut out = vec![0i16; to.frame_samples()];
            let n = from.frame_samples();
            for k in 0..50 {
                let input = sine(from, 300.0, n, k * n);
                r.process_frame(&input, &mut out);
                out_all.extend_from_slice(&out);
            }
            let settled = &out_all[to.frame_samples() * 2..];
            let max_step = settled
                .windows(2)
                .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
                .max()
                .unwrap();
            let ideal = (8_000.0 * 2.0 * std::f32::consts::PI * 300.0 / to.hz() as f32) as i32;
            assert!(
                max_step <= ideal + ideal / 5 + 2,
                "{from}->{to}: step {max_step} vs ideal {ideal}"
            );
        }
    }

    #[test]
    fn reset_clears_history() {
        let mut r = FrameResampler::new(SampleRate::Hz16000, SampleRate::Hz24000).unwrap();
        let loud = vec![10_000i16; 320];
        let mut out = vec![0i16; 480];
        r.process_frame(&loud, &mut out);
        r.reset();
        r.process_frame(&[0; 320], &mut out);
        assert!(out.iter().all(|&s| s == 0));
    }
}
