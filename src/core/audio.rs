//! Sample rates, frame geometry and the unit newtypes every other module speaks in.
//!
//! A *sample* is one `i16`; a *frame* is one 20 ms packet on the wire; a *chunk* is whatever
//! size the agent hands us. Rates are parsed once at the edge ([`SampleRate::try_from`]) and
//! only [`SampleRate`] travels inward.
//!
//! Real-time: no allocation anywhere in this module.

use std::fmt;
use std::time::Duration;

/// Length of one Vonage media frame.
pub const FRAME_MS: u32 = 20;
/// [`FRAME_MS`] as a [`Duration`].
pub const FRAME: Duration = Duration::from_millis(FRAME_MS as u64);
/// Samples in one frame at the highest rate we ever handle (48 kHz agent audio).
pub const MAX_FRAME_SAMPLES: usize = 960;
/// Bytes in one frame at the highest *call* rate (24 kHz): the largest valid binary message.
pub const MAX_CALL_FRAME_BYTES: usize = 960;

/// A sample rate voicegate handles. Calls use 8, 16 or 24 kHz; agents may also use 48 kHz.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SampleRate {
    /// 8 000 Hz, narrow-band telephony.
    Hz8000,
    /// 16 000 Hz, wide-band; Vonage's usual choice.
    Hz16000,
    /// 24 000 Hz, what many TTS engines and speech-to-speech models use.
    Hz24000,
    /// 48 000 Hz, agent side only.
    Hz48000,
}

impl SampleRate {
    /// The rate in Hz.
    pub const fn hz(self) -> u32 {
        match self {
            Self::Hz8000 => 8_000,
            Self::Hz16000 => 16_000,
            Self::Hz24000 => 24_000,
            Self::Hz48000 => 48_000,
        }
    }

    /// Samples in one 20 ms frame at this rate.
    pub const fn frame_samples(self) -> usize {
        (self.hz() / 50) as usize
    }

    /// Bytes in one 20 ms L16 frame at this rate.
    pub const fn frame_bytes(self) -> usize {
        self.frame_samples() * 2
    }

    /// Whether Vonage can stream a call at this rate (8, 16 or 24 kHz).
    pub const fn is_call_rate(self) -> bool {
        !matches!(self, Self::Hz48000)
    }

    /// The media type Vonage uses for this rate, e.g. `audio/l16;rate=16000`.
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Hz8000 => "audio/l16;rate=8000",
            Self::Hz16000 => "audio/l16;rate=16000",
            Self::Hz24000 => "audio/l16;rate=24000",
            Self::Hz48000 => "audio/l16;rate=48000",
        }
    }

    /// Parses a Vonage `content-type` such as `audio/l16;rate=16000`.
    ///
    /// Tolerates case and spaces around `;` and `=`; returns `None` for anything that is not
    /// L16 at a rate we handle.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let mut parts = ct.split(';');
        let media = parts.next()?.trim();
        if !media.eq_ignore_ascii_case("audio/l16") {
            return None;
        }
        for p in parts {
            let (k, v) = p.split_once('=')?;
            if k.trim().eq_ignore_ascii_case("rate") {
                let hz: u32 = v.trim().parse().ok()?;
                return Self::try_from(hz).ok();
            }
        }
        None
    }

    /// Duration of `samples` samples at this rate.
    pub fn duration_of(self, samples: u64) -> Duration {
        Duration::from_micros(samples * 1_000_000 / u64::from(self.hz()))
    }
}

impl TryFrom<u32> for SampleRate {
    type Error = UnsupportedRate;

    fn try_from(hz: u32) -> Result<Self, Self::Error> {
        match hz {
            8_000 => Ok(Self::Hz8000),
            16_000 => Ok(Self::Hz16000),
            24_000 => Ok(Self::Hz24000),
            48_000 => Ok(Self::Hz48000),
            other => Err(UnsupportedRate(other)),
        }
    }
}

impl fmt::Display for SampleRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Hz", self.hz())
    }
}

/// A rate in Hz that voicegate does not handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsupportedRate(pub u32);

impl fmt::Display for UnsupportedRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unsupported sample rate {} Hz (use 8000, 16000, 24000 or 48000)",
            self.0
        )
    }
}

impl std::error::Error for UnsupportedRate {}

/// Identifies one bot turn (one reply of the agent). Audio of an interrupted turn is discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TurnId(pub u32);

impl fmt::Display for TurnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "turn-{}", self.0)
    }
}

/// Level of a block of samples in dB relative to full scale (RMS; a full-scale square wave is
/// 0 dBFS). Digital silence is clamped to [`SILENCE_DBFS`].
pub fn level_dbfs(samples: &[i16]) -> f32 {
    power_to_dbfs(mean_power(samples))
}

/// Level of a frame of L16 (little-endian) bytes, dBFS; a trailing odd byte is ignored.
pub fn level_dbfs_bytes(bytes: &[u8]) -> f32 {
    let n = bytes.len() / 2;
    if n == 0 {
        return SILENCE_DBFS;
    }
    let sum: f64 = bytes
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])).powi(2))
        .sum();
    power_to_dbfs((sum / n as f64 / (32_768.0 * 32_768.0)) as f32)
}

/// The floor used for digital silence.
pub const SILENCE_DBFS: f32 = -100.0;

/// Mean of squared samples, normalised so full scale is 1.0.
pub fn mean_power(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return 0.0;
    }
    // In integers: a square is at most 2³⁰, so the sum is exact (and vectorises, where a
    // floating-point sum must keep its order); as `f64` it is the same value the float sum gave
    // for any frame (exact below 2⁵³, i.e. for up to 8 Mi samples).
    let sum: u64 = samples
        .iter()
        .map(|&s| u64::from(i32::from(s).unsigned_abs().pow(2)))
        .sum();
    (sum as f64 / samples.len() as f64 / (32_768.0 * 32_768.0)) as f32
}

/// Converts a normalised mean power to dBFS, clamped at [`SILENCE_DBFS`].
pub fn power_to_dbfs(p: f32) -> f32 {
    if p <= 1e-10 {
        SILENCE_DBFS
    } else {
        (10.0 * p.log10()).max(SILENCE_DBFS)
    }
}

/// Converts dBFS to a normalised mean power.
pub fn dbfs_to_power(db: f32) -> f32 {
    10f32.powf(db / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_geometry_matches_vonage() {
        assert_eq!(SampleRate::Hz8000.frame_bytes(), 320);
        assert_eq!(SampleRate::Hz16000.frame_bytes(), 640);
        assert_eq!(SampleRate::Hz24000.frame_bytes(), 960);
        assert_eq!(SampleRate::Hz48000.frame_samples(), MAX_FRAME_SAMPLES);
    }

    #[test]
    fn content_type_parses_tolerantly() {
        assert_eq!(
            SampleRate::from_content_type("audio/l16;rate=16000"),
            Some(SampleRate::Hz16000)
        );
        assert_eq!(
            SampleRate::from_content_type("audio/L16; rate = 8000"),
            Some(SampleRate::Hz8000)
        );
        assert_eq!(SampleRate::from_content_type("audio/l16;rate=44100"), None);
        assert_eq!(SampleRate::from_content_type("audio/pcmu;rate=8000"), None);
        assert_eq!(SampleRate::from_content_type("audio/l16"), None);
        assert_eq!(SampleRate::from_content_type(""), None);
        for r in [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz24000] {
            assert_eq!(SampleRate::from_content_type(r.content_type()), Some(r));
        }
    }

    #[test]
    fn levels() {
        assert_eq!(level_dbfs(&[0; 160]), SILENCE_DBFS);
        let full = [i16::MIN; 160];
        assert!(level_dbfs(&full).abs() < 0.01);
        assert!((power_to_dbfs(dbfs_to_power(-30.0)) + 30.0).abs() < 1e-3);
    }
}
