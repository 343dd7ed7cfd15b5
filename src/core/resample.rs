//! Streaming sample-rate conversion between the call rate and the agent rate, one 20 ms frame
//! at a time: rubato's synchronous FFT resampler (`rubato::Fft`, overlap-add of FFT blocks with
//! a windowed-sinc anti-aliasing filter), with its transforms and filter shared by every call.
//!
//! Every rate voicegate handles is a multiple of 8 kHz, so one 20 ms frame in is always a whole
//! number of samples out (160, 320, 480 or 960): with a fixed input size of one frame, one frame
//! in gives exactly one frame out, and over any number of frames no sample is lost or invented,
//! by construction. Each frame is split into four 5 ms sub-chunks, which keeps the delay at
//! 2.5 ms (an unsplit FFT resampler holds back 10 ms, and the soxr "VHQ" stream default of the
//! popular Python framework 37.5 ms). See [`FrameResampler::delay`].
//!
//! The algorithm and its numbers are rubato's (`Fft::new_custom(from, to, frame, 4, 1,
//! BlackmanHarris2, FixedSync::Input)`): the same block sizes, filter design, FFT plans
//! (realfft) and operations in the same order, so the output is bit for bit rubato's (the test
//! `matches_rubato_bit_for_bit` runs both side by side for every rate pair). What differs is
//! where things live: rubato builds an FFT planner, plans and a filter per resampler and copies
//! each frame through four buffers; here the plans and the filter of a rate pair are built once
//! per process and shared ([`Kernel`]), the work buffers are per thread, and a resampler owns
//! only its overlap (at most 960 bytes). With a thousand calls that keeps the tables in cache
//! instead of a thousand copies of them out of it.
//!
//! Equal rates bypass the FFT entirely (a copy).
//!
//! Real-time: no allocation and no lock after [`FrameResampler::new`] (the shared kernel is
//! built on first use of a rate pair, under a `OnceLock`; the per-thread work buffers are
//! fixed-size arrays with a const initialiser).

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

use super::audio::SampleRate;

/// Sub-chunks per 20 ms frame: 5 ms each, for a 2.5 ms delay (measured by `benches/resample.rs`
/// and the `delay_matches_impulse` test).
const SUB_CHUNKS: usize = 4;

/// Largest FFT block (one sub-chunk) on either side: 5 ms at 48 kHz.
const MAX_BLOCK: usize = 240;
/// Largest scratch a block's real FFT may ask for (complex values); checked at construction.
const MAX_SCRATCH: usize = 2 * MAX_BLOCK;

/// Why a resampler could not be built. Happens only at construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResampleError {
    /// The rate pair has no usable configuration.
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

/// What every resampler of one rate pair shares: block sizes, the filter's spectrum and the two
/// FFT plans. Read-only once built.
struct Kernel {
    /// Samples per block in and out (one sub-chunk).
    block_in: usize,
    block_out: usize,
    /// Spectrum bins kept from the input block (the rest of the output spectrum is zero).
    keep: usize,
    /// The anti-aliasing filter's spectrum, `block_in + 1` bins.
    filter: Box<[Complex<f32>]>,
    fft: Arc<dyn RealToComplex<f32>>,
    ifft: Arc<dyn ComplexToReal<f32>>,
    /// Scratch each transform asks for (exactly that much is passed, as rubato does).
    fft_scratch: usize,
    ifft_scratch: usize,
}

const RATES: [SampleRate; 4] = [
    SampleRate::Hz8000,
    SampleRate::Hz16000,
    SampleRate::Hz24000,
    SampleRate::Hz48000,
];

fn rate_index(rate: SampleRate) -> usize {
    RATES.iter().position(|&r| r == rate).unwrap_or(0)
}

/// The shared kernel of `from` → `to` (built on first use).
fn kernel(from: SampleRate, to: SampleRate) -> Option<Arc<Kernel>> {
    static KERNELS: [OnceLock<Option<Arc<Kernel>>>; 16] = [const { OnceLock::new() }; 16];
    KERNELS[rate_index(from) * 4 + rate_index(to)]
        .get_or_init(|| Kernel::new(from, to).map(Arc::new))
        .clone()
}

/// The same planner for every kernel, so plans of equal length are shared too.
fn planner() -> &'static std::sync::Mutex<RealFftPlanner<f32>> {
    static PLANNER: OnceLock<std::sync::Mutex<RealFftPlanner<f32>>> = OnceLock::new();
    PLANNER.get_or_init(|| std::sync::Mutex::new(RealFftPlanner::new()))
}

impl Kernel {
    /// rubato's `Fft::new_custom(from, to, frame, SUB_CHUNKS, 1, BlackmanHarris2,
    /// FixedSync::Input)` and its `FftResampler::new`, step by step.
    fn new(from: SampleRate, to: SampleRate) -> Option<Self> {
        let (rate_in, rate_out) = (from.hz() as usize, to.hz() as usize);
        let gcd = gcd(rate_in, rate_out);
        let min_in = rate_in / gcd;
        let chunks = (from.frame_samples() / SUB_CHUNKS).div_ceil(min_in).max(1);
        let block_in = chunks * rate_in / gcd;
        let block_out = chunks * rate_out / gcd;
        // The whole design rests on one frame in giving exactly one frame out, in whole blocks.
        if block_in * SUB_CHUNKS != from.frame_samples()
            || block_out * SUB_CHUNKS != to.frame_samples()
            || block_in > MAX_BLOCK
            || block_out > MAX_BLOCK
        {
            return None;
        }
        let window = rubato::WindowFunction::BlackmanHarris2;
        let cutoff = if block_in > block_out {
            rubato::calculate_cutoff::<f32>(block_out, window) * block_out as f32 / block_in as f32
        } else {
            rubato::calculate_cutoff::<f32>(block_in, window)
        };
        let sinc = windowed_sinc(block_in, cutoff);
        let mut filter_t = vec![0.0f32; 2 * block_in];
        for (f, s) in filter_t.iter_mut().zip(&sinc) {
            *f = s / (2 * block_in) as f32;
        }
        let (fft, ifft) = {
            let mut p = planner().lock().ok()?;
            (
                p.plan_fft_forward(2 * block_in),
                p.plan_fft_inverse(2 * block_out),
            )
        };
        if fft.get_scratch_len() > MAX_SCRATCH || ifft.get_scratch_len() > MAX_SCRATCH {
            return None;
        }
        let mut filter = vec![Complex::new(0.0, 0.0); block_in + 1].into_boxed_slice();
        fft.process(&mut filter_t, &mut filter).ok()?;
        Some(Self {
            block_in,
            block_out,
            keep: if block_in < block_out {
                block_in + 1
            } else {
                block_out
            },
            filter,
            fft_scratch: fft.get_scratch_len(),
            ifft_scratch: ifft.get_scratch_len(),
            fft,
            ifft,
        })
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// rubato's `make_sincs(n, 1, cutoff, BlackmanHarris2)`: a windowed sinc of `n` points,
/// normalised to a sum of one, in the same f32 operations.
fn windowed_sinc(n: usize, cutoff: f32) -> Vec<f32> {
    use windowfunctions::{Symmetry, WindowFunction, window};
    let pi = std::f32::consts::PI;
    let sinc = |x: f32| {
        if x == 0.0 {
            1.0
        } else {
            (x * pi).sin() / (x * pi)
        }
    };
    // BlackmanHarris2: the periodic Blackman-Harris window (f64, then f32), squared.
    let mut y: Vec<f32> = window::<f64>(n, WindowFunction::BlackmanHarris, Symmetry::Periodic)
        .map(|w| {
            let w = w as f32;
            w * w
        })
        .zip(0..n)
        .map(|(w, x)| w * sinc((x as f32 - (n / 2) as f32) * cutoff / 1.0))
        .collect();
    let mut sum = 0.0f32;
    for v in &y {
        sum += *v;
    }
    sum /= 1.0;
    for v in &mut y {
        *v /= sum;
    }
    y
}

/// Per-thread work buffers of the FFT blocks (nothing in them outlives one block).
struct Work {
    time_in: [f32; 2 * MAX_BLOCK],
    spec_in: [Complex<f32>; MAX_BLOCK + 1],
    spec_out: [Complex<f32>; MAX_BLOCK + 1],
    time_out: [f32; 2 * MAX_BLOCK],
    scratch: [Complex<f32>; MAX_SCRATCH],
}

const ZERO: Complex<f32> = Complex::new(0.0, 0.0);

thread_local! {
    static WORK: RefCell<Work> = const {
        RefCell::new(Work {
            time_in: [0.0; 2 * MAX_BLOCK],
            spec_in: [ZERO; MAX_BLOCK + 1],
            spec_out: [ZERO; MAX_BLOCK + 1],
            time_out: [0.0; 2 * MAX_BLOCK],
            scratch: [ZERO; MAX_SCRATCH],
        })
    };
}

/// Converts a stream of 20 ms frames from one rate to another, one frame per call.
pub struct FrameResampler {
    from: SampleRate,
    to: SampleRate,
    /// `None`: equal rates, a copy.
    kernel: Option<Arc<Kernel>>,
    /// The second half of the last block's output, added to the next block's first half.
    overlap: Box<[f32]>,
}

impl fmt::Debug for FrameResampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameResampler")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("bypass", &self.kernel.is_none())
            .finish()
    }
}

impl FrameResampler {
    /// Builds a resampler for `from` → `to`; all buffers are allocated here.
    pub fn new(from: SampleRate, to: SampleRate) -> Result<Self, ResampleError> {
        let kernel = if from == to {
            None
        } else {
            Some(kernel(from, to).ok_or(ResampleError::Construction {
                from: from.hz(),
                to: to.hz(),
            })?)
        };
        let overlap = vec![0.0; kernel.as_ref().map_or(0, |k| k.block_out)].into_boxed_slice();
        Ok(Self {
            from,
            to,
            kernel,
            overlap,
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
        self.kernel.is_none()
    }

    /// The delay this resampler adds: how late an input event appears in the output (half an
    /// output block, as rubato's `output_delay`).
    pub fn delay(&self) -> Duration {
        match &self.kernel {
            None => Duration::ZERO,
            Some(k) => self.to.duration_of((k.block_out / 2) as u64),
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
        let Some(k) = self.kernel.as_deref() else {
            output[..n_in].copy_from_slice(input);
            return n_in;
        };
        let output = &mut output[..n_out];
        let overlap = &mut self.overlap;
        let done = WORK.with(|w| {
            let Ok(mut w) = w.try_borrow_mut() else {
                return false;
            };
            let w = &mut *w;
            for (block_in, block_out) in input
                .chunks_exact(k.block_in)
                .zip(output.chunks_exact_mut(k.block_out))
            {
                if !k.block(w, block_in, block_out, overlap) {
                    return false;
                }
            }
            true
        });
        if !done {
            // Cannot happen (fixed lengths, no re-entry); silence rather than a panic.
            output.fill(0);
        }
        n_out
    }

    /// Forgets all history (used when a turn is discarded, so no tail of it leaks into the next).
    pub fn reset(&mut self) {
        self.overlap.fill(0.0);
    }
}

impl Kernel {
    /// rubato's `FftResampler::resample_unit` on one block, with the i16 conversions on the way
    /// in and out. `false` if a transform refused its buffers (a bug; never on valid input).
    fn block(&self, w: &mut Work, input: &[i16], output: &mut [i16], overlap: &mut [f32]) -> bool {
        let (n_in, n_out) = (self.block_in, self.block_out);
        let time_in = &mut w.time_in[..2 * n_in];
        let (head, pad) = time_in.split_at_mut(n_in);
        for (d, &s) in head.iter_mut().zip(input) {
            *d = f32::from(s) / 32_768.0;
        }
        pad.fill(0.0);
        let spec_in = &mut w.spec_in[..n_in + 1];
        if self
            .fft
            .process_with_scratch(time_in, spec_in, &mut w.scratch[..self.fft_scratch])
            .is_err()
        {
            return false;
        }
        let keep = self.keep;
        for (s, f) in spec_in[..keep].iter_mut().zip(self.filter.iter()) {
            *s *= f;
        }
        let spec_out = &mut w.spec_out[..n_out + 1];
        spec_out[..keep].copy_from_slice(&spec_in[..keep]);
        spec_out[keep..].fill(ZERO);
        let time_out = &mut w.time_out[..2 * n_out];
        if self
            .ifft
            .process_with_scratch(spec_out, time_out, &mut w.scratch[..self.ifft_scratch])
            .is_err()
        {
            return false;
        }
        let (first, second) = time_out.split_at(n_out);
        // Straight loops without per-sample bounds checks or branches, so they vectorise.
        for ((d, &x), &o) in output.iter_mut().zip(first).zip(overlap.iter()) {
            *d = to_i16(x + o);
        }
        overlap.copy_from_slice(second);
        true
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

    /// The reference: rubato's own `Fft`, configured as this module describes.
    struct Rubato {
        r: rubato::Fft<f32>,
        from: SampleRate,
        to: SampleRate,
    }

    impl Rubato {
        fn new(from: SampleRate, to: SampleRate) -> Self {
            let r = rubato::Fft::<f32>::new_custom(
                from.hz() as usize,
                to.hz() as usize,
                from.frame_samples(),
                SUB_CHUNKS,
                1,
                rubato::WindowFunction::BlackmanHarris2,
                rubato::FixedSync::Input,
            )
            .unwrap();
            Self { r, from, to }
        }

        fn process(&mut self, input: &[i16], output: &mut [i16]) {
            use rubato::Resampler;
            use rubato::audioadapter_buffers::direct::InterleavedSlice;
            let (n_in, n_out) = (self.from.frame_samples(), self.to.frame_samples());
            let x: Vec<f32> = input.iter().map(|&s| f32::from(s) / 32_768.0).collect();
            let mut y = vec![0.0f32; n_out];
            let inp = InterleavedSlice::new(&x[..], 1, n_in).unwrap();
            let mut out = InterleavedSlice::new_mut(&mut y[..], 1, n_out).unwrap();
            let (_, produced) = self.r.process_into_buffer(&inp, &mut out, None).unwrap();
            assert_eq!(produced, n_out);
            for (d, &v) in output.iter_mut().zip(&y) {
                *d = to_i16(v);
            }
        }
    }

    #[test]
    fn matches_rubato_bit_for_bit() {
        // Every pair, noise and a loud sweep (so the output clips sometimes), a reset halfway.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut noise = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 48) as i16
        };
        for from in RATES {
            for to in RATES {
                if from == to {
                    continue;
                }
                let mut ours = FrameResampler::new(from, to).unwrap();
                let mut theirs = Rubato::new(from, to);
                assert_eq!(
                    ours.delay(),
                    to.duration_of(rubato::Resampler::output_delay(&theirs.r) as u64)
                );
                let n = from.frame_samples();
                let mut a = vec![0i16; to.frame_samples()];
                let mut b = vec![0i16; to.frame_samples()];
                for k in 0..60 {
                    let input: Vec<i16> = if k % 2 == 0 {
                        (0..n).map(|_| noise()).collect()
                    } else {
                        sine(from, 150.0 + 90.0 * k as f32, n, k * n)
                            .iter()
                            .map(|&s| s.saturating_mul(4))
                            .collect()
                    };
                    if k == 30 {
                        ours.reset();
                        rubato::Resampler::reset(&mut theirs.r);
                    }
                    ours.process_frame(&input, &mut a);
                    theirs.process(&input, &mut b);
                    assert_eq!(a, b, "{from}->{to}, frame {k}");
                }
            }
        }
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
