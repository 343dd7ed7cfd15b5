//! L16 codec: Vonage's binary media messages (signed 16-bit little-endian mono PCM, one 20 ms
//! frame per message) to and from `i16` samples.
//!
//! Every length is checked against the negotiated rate before a byte is read, and a bad one is
//! a [`FrameError`] that carries the numbers (and allocates nothing).
//!
//! Real-time: no allocation anywhere in this module.

use std::fmt;

use super::audio::SampleRate;

/// Why a binary media message was rejected. Small, `Copy`, no heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// An odd number of bytes cannot be 16-bit samples.
    OddLength {
        /// Bytes received.
        len: usize,
    },
    /// Even, but not one 20 ms frame at the negotiated rate.
    WrongSize {
        /// Bytes one frame must have at the call rate.
        expected: usize,
        /// Bytes received.
        actual: usize,
    },
    /// The output buffer cannot hold one frame.
    BufferTooSmall {
        /// Samples (or bytes, for encoding) needed.
        required: usize,
        /// Capacity offered.
        capacity: usize,
    },
    /// Audio arrived before the call's rate was known (before `websocket:connected`, with no
    /// rate configured).
    NotConnected,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::OddLength { len } => write!(f, "odd frame length {len} bytes (L16 needs pairs)"),
            Self::WrongSize { expected, actual } => {
                write!(
                    f,
                    "frame is {actual} bytes, expected {expected} (20 ms at the call rate)"
                )
            }
            Self::BufferTooSmall { required, capacity } => {
                write!(f, "buffer holds {capacity}, one frame needs {required}")
            }
            Self::NotConnected => write!(f, "audio before the call rate is known"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Checks that `bytes` is exactly one frame at `rate`, without reading it.
pub fn check_frame(bytes: &[u8], rate: SampleRate) -> Result<(), FrameError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(FrameError::OddLength { len: bytes.len() });
    }
    if bytes.len() != rate.frame_bytes() {
        return Err(FrameError::WrongSize {
            expected: rate.frame_bytes(),
            actual: bytes.len(),
        });
    }
    Ok(())
}

/// Decodes one frame at `rate` into `out`, returning the number of samples written.
pub fn decode_into(bytes: &[u8], rate: SampleRate, out: &mut [i16]) -> Result<usize, FrameError> {
    check_frame(bytes, rate)?;
    let n = rate.frame_samples();
    if out.len() < n {
        return Err(FrameError::BufferTooSmall {
            required: n,
            capacity: out.len(),
        });
    }
    for (dst, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *dst = i16::from_le_bytes([pair[0], pair[1]]);
    }
    Ok(n)
}

/// Encodes `samples` as L16 little-endian into `out`, returning the bytes written.
pub fn encode_into(samples: &[i16], out: &mut [u8]) -> Result<usize, FrameError> {
    let need = samples.len() * 2;
    if out.len() < need {
        return Err(FrameError::BufferTooSmall {
            required: need,
            capacity: out.len(),
        });
    }
    for (pair, s) in out.chunks_exact_mut(2).zip(samples) {
        pair.copy_from_slice(&s.to_le_bytes());
    }
    Ok(need)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn vector_10_27_prefix() {
        // §10.27: bytes 00 00 01 00 ff ff are the samples 0, 1, -1.
        let mut frame = [0u8; 640];
        frame[..6].copy_from_slice(&[0x00, 0x00, 0x01, 0x00, 0xff, 0xff]);
        let mut out = [0i16; 320];
        assert_eq!(decode_into(&frame, SampleRate::Hz16000, &mut out), Ok(320));
        assert_eq!(&out[..3], &[0, 1, -1]);
    }

    #[test]
    fn bad_lengths_are_typed() {
        let mut out = [0i16; 480];
        assert_eq!(
            decode_into(&[0; 641], SampleRate::Hz16000, &mut out),
            Err(FrameError::OddLength { len: 641 })
        );
        assert_eq!(
            decode_into(&[0; 320], SampleRate::Hz16000, &mut out),
            Err(FrameError::WrongSize {
                expected: 640,
                actual: 320
            })
        );
        assert_eq!(
            decode_into(&[0; 960], SampleRate::Hz24000, &mut out[..100]),
            Err(FrameError::BufferTooSmall {
                required: 480,
                capacity: 100
            })
        );
        assert!(decode_into(&[], SampleRate::Hz8000, &mut out).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut out = [0i16; 480];
            for rate in [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz24000] {
                let r = decode_into(&bytes, rate, &mut out);
                prop_assert_eq!(r.is_ok(), bytes.len() == rate.frame_bytes());
            }
        }

        #[test]
        fn encode_decode_is_identity(samples in proptest::collection::vec(any::<i16>(), 320)) {
            let mut bytes = [0u8; 640];
            prop_assert_eq!(encode_into(&samples, &mut bytes), Ok(640));
            let mut back = [0i16; 320];
            prop_assert_eq!(decode_into(&bytes, SampleRate::Hz16000, &mut back), Ok(320));
            prop_assert_eq!(&back[..], &samples[..]);
            let mut again = [0u8; 640];
            encode_into(&back, &mut again).unwrap();
            prop_assert_eq!(&again[..], &bytes[..]);
        }
    }
}
