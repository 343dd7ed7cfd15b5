//! Shared setup for the criterion benches: realistic audio (WAV clips from `tests/data/audio`,
//! resampled once to every rate) and the criterion configuration (short runs, so `cargo bench`
//! as a whole takes a few minutes).
//!
//! Included by each bench file with `mod common;`; not a bench target itself.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use criterion::Criterion;
use voicegate::core::SampleRate;
use voicegate::core::resample::FrameResampler;

/// The criterion settings every bench uses.
pub fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(50)
}

/// Caller speech over a playing bot (the bot's echo is mixed in), 16 kHz.
pub const CALLER_CLIP: &str = "bargein_001.in.wav";
/// The bot's audio of the same clip, 16 kHz.
pub const BOT_CLIP: &str = "bargein_001.out.wav";

/// A clip as whole 20 ms frames at `rate` (the 16 kHz file resampled frame by frame; the first
/// frames of the resampler's delay are kept, they are real audio too).
pub fn clip_frames(name: &str, rate: SampleRate) -> Vec<Vec<i16>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/audio")
        .join(name);
    let mut reader =
        hound::WavReader::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.bits_per_sample),
        (1, 16),
        "{name}: mono L16 expected"
    );
    let from = SampleRate::try_from(spec.sample_rate).expect("clip rate");
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let mut resampler = FrameResampler::new(from, rate).expect("resampler");
    let mut out = vec![0i16; rate.frame_samples()];
    samples
        .chunks_exact(from.frame_samples())
        .map(|f| {
            let n = resampler.process_frame(f, &mut out);
            out[..n].to_vec()
        })
        .collect()
}

/// The same frames encoded as Vonage binary messages (L16 little-endian).
pub fn encode_frames(frames: &[Vec<i16>]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .map(|f| f.iter().flat_map(|s| s.to_le_bytes()).collect())
        .collect()
}

/// `8k`, `16k`, `24k`, `48k`.
pub fn rate_name(rate: SampleRate) -> String {
    format!("{}k", rate.hz() / 1000)
}

/// `16k_to_24k`.
pub fn pair_name(from: SampleRate, to: SampleRate) -> String {
    format!("{}_to_{}", rate_name(from), rate_name(to))
}

/// The call rates.
pub const CALL_RATES: [SampleRate; 3] =
    [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz24000];
