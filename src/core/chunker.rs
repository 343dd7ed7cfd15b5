//! Agent audio (any chunk size, agent rate) to exact 20 ms L16 frames at the call rate.
//!
//! A wrong-sized frame ends a real Vonage call, so the only way out of this module is
//! [`Chunker::take_frame`], which writes exactly `call_rate.frame_bytes()` bytes, always: samples
//! are gathered into one agent-rate frame, a short last frame of a turn is padded with silence,
//! and the resampler maps one frame to one frame.
//!
//! When resampling, the resampler holds back 2.5 ms of the turn; [`Chunker::finish_turn`] makes
//! the next frame push silence through to flush that tail, so it is never played at the start of
//! the next turn.
//!
//! Real-time: no allocation after [`Chunker::new`].

use super::audio::{SampleRate, level_dbfs};
use super::codec;
use super::resample::{FrameResampler, ResampleError};

/// Gathers agent samples into frames and emits them resampled and encoded.
#[derive(Debug)]
pub struct Chunker {
    agent_rate: SampleRate,
    call_rate: SampleRate,
    partial: Box<[i16]>,
    filled: usize,
    /// The turn ended: the partial frame is complete (padded) and a flush frame may follow.
    finishing: bool,
    /// A resampler tail is pending after the last frame of a turn.
    tail_pending: bool,
    /// Audio was pushed since the last end of turn.
    turn_has_audio: bool,
    resampler: FrameResampler,
    call_frame: Box<[i16]>,
}

impl Chunker {
    /// A chunker from `agent_rate` chunks to `call_rate` frames.
    pub fn new(agent_rate: SampleRate, call_rate: SampleRate) -> Result<Self, ResampleError> {
        Ok(Self {
            agent_rate,
            call_rate,
            partial: vec![0; agent_rate.frame_samples()].into_boxed_slice(),
            filled: 0,
            finishing: false,
            tail_pending: false,
            turn_has_audio: false,
            resampler: FrameResampler::new(agent_rate, call_rate)?,
            call_frame: vec![0; call_rate.frame_samples()].into_boxed_slice(),
        })
    }

    /// The delay of its resampler (zero when the rates match).
    pub fn delay(&self) -> std::time::Duration {
        self.resampler.delay()
    }

    /// Samples still needed to complete the current agent-rate frame.
    pub fn space(&self) -> usize {
        if self.finishing {
            0
        } else {
            self.agent_rate.frame_samples() - self.filled
        }
    }

    /// Takes as many of `samples` as fit in the current frame; returns how many it took.
    pub fn push(&mut self, samples: &[i16]) -> usize {
        let n = samples.len().min(self.space());
        self.partial[self.filled..self.filled + n].copy_from_slice(&samples[..n]);
        self.filled += n;
        self.turn_has_audio |= n > 0;
        n
    }

    /// Marks the end of a turn: a partial frame will be padded with silence.
    pub fn finish_turn(&mut self) {
        if self.filled > 0 {
            self.finishing = true;
        }
        self.tail_pending =
            !self.resampler.is_bypass() && (self.turn_has_audio || self.tail_pending);
        self.turn_has_audio = false;
    }

    /// Whether a frame is ready (a full frame, a padded last frame, or a resampler flush).
    pub fn has_frame(&self) -> bool {
        self.filled == self.agent_rate.frame_samples()
            || self.finishing
            || (self.tail_pending && self.filled == 0)
    }

    /// Whether samples of an unfinished frame are waiting.
    pub fn has_partial(&self) -> bool {
        self.filled > 0
    }

    /// Writes the next frame into `out` (exactly `call_rate.frame_bytes()` bytes) and returns
    /// that length, or `None` when no frame is ready. Returns whether the frame was padded via
    /// [`FrameOut`].
    pub fn take_frame(&mut self, out: &mut [u8]) -> Option<FrameOut> {
        if !self.has_frame() {
            return None;
        }
        let n_agent = self.agent_rate.frame_samples();
        let padded = self.filled < n_agent;
        let flush = self.filled == 0;
        self.partial[self.filled..n_agent].fill(0);
        let n_call = self
            .resampler
            .process_frame(&self.partial[..n_agent], &mut self.call_frame);
        let bytes = codec::encode_into(&self.call_frame[..n_call], out).ok()?;
        debug_assert_eq!(bytes, self.call_rate.frame_bytes());
        let level_dbfs = level_dbfs(&self.call_frame[..n_call]);
        self.filled = 0;
        if flush {
            self.tail_pending = false;
            self.resampler.reset();
        } else if self.finishing {
            self.finishing = false;
            if !self.tail_pending {
                self.resampler.reset();
            }
        }
        Some(FrameOut {
            bytes,
            padded: padded && !flush,
            flush,
            level_dbfs,
        })
    }

    /// Drops the partial frame and the resampler's history (barge-in).
    pub fn clear(&mut self) {
        self.filled = 0;
        self.finishing = false;
        self.tail_pending = false;
        self.turn_has_audio = false;
        self.resampler.reset();
    }

    /// The call rate frames are emitted at.
    pub fn call_rate(&self) -> SampleRate {
        self.call_rate
    }
}

/// What [`Chunker::take_frame`] produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameOut {
    /// Bytes written: always one frame at the call rate.
    pub bytes: usize,
    /// The last frame of a turn, padded with silence.
    pub padded: bool,
    /// A pure flush of the resampler's tail after a turn.
    pub flush: bool,
    /// Level of the frame, dBFS (the echo reference).
    pub level_dbfs: f32,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn drain(c: &mut Chunker, frames: &mut Vec<Vec<u8>>) {
        let mut buf = [0u8; 960];
        while let Some(f) = c.take_frame(&mut buf) {
            frames.push(buf[..f.bytes].to_vec());
        }
    }

    proptest! {
        /// For any split of a stream, only exact frames come out, and (at equal rates) their
        /// concatenation is the input plus end-of-turn padding.
        #[test]
        fn any_split_gives_exact_frames(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<i16>(), 0..700), 0..12)
        ) {
            let mut c = Chunker::new(SampleRate::Hz16000, SampleRate::Hz16000).unwrap();
            let mut frames = Vec::new();
            let mut input = Vec::new();
            for chunk in &chunks {
                input.extend_from_slice(chunk);
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    let took = c.push(rest);
                    rest = &rest[took..];
                    drain(&mut c, &mut frames);
                }
            }
            c.finish_turn();
            drain(&mut c, &mut frames);
            prop_assert!(frames.iter().all(|f| f.len() == 640));
            let out: Vec<i16> = frames.concat().chunks_exact(2).map(|p| i16::from_le_bytes([p[0], p[1]])).collect();
            prop_assert_eq!(out.len(), input.len().div_ceil(320) * 320);
            prop_assert_eq!(&out[..input.len()], &input[..]);
            prop_assert!(out[input.len()..].iter().all(|&s| s == 0));
        }

        #[test]
        fn resampling_path_emits_exact_frames(
            chunks in proptest::collection::vec(1usize..1500, 1..10),
            agent in 0usize..4, call in 0usize..3,
        ) {
            let rates = [SampleRate::Hz8000, SampleRate::Hz16000, SampleRate::Hz24000, SampleRate::Hz48000];
            let (a, k) = (rates[agent], rates[call]);
            let mut c = Chunker::new(a, k).unwrap();
            let mut frames = Vec::new();
            let mut total = 0;
            for n in chunks {
                total += n;
                let data = vec![1000i16; n];
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let took = c.push(rest);
                    rest = &rest[took..];
                    drain(&mut c, &mut frames);
                }
            }
            c.finish_turn();
            drain(&mut c, &mut frames);
            prop_assert!(frames.iter().all(|f| f.len() == k.frame_bytes()));
            let audio_frames = total.div_ceil(a.frame_samples());
            let flush = usize::from(a != k);
            prop_assert_eq!(frames.len(), audio_frames + flush);
        }
    }

    #[test]
    fn nothing_out_until_a_frame_is_complete() {
        let mut c = Chunker::new(SampleRate::Hz24000, SampleRate::Hz16000).unwrap();
        let mut buf = [0u8; 960];
        assert_eq!(c.push(&[1; 100]), 100);
        assert!(c.take_frame(&mut buf).is_none());
        assert_eq!(c.push(&[1; 500]), 380);
        let f = c.take_frame(&mut buf).unwrap();
        assert_eq!((f.bytes, f.padded, f.flush), (640, false, false));
        c.clear();
        assert!(c.take_frame(&mut buf).is_none());
    }
}
