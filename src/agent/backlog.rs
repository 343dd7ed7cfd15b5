//! [`Backlog`]: agent audio that arrived from the network faster than the outbound ring drains,
//! with the turn markers between it, kept in order.
//!
//! A network agent hands over audio in chunks of any size, usually faster than real time. The
//! outbound ring ([`AgentAudio`]) holds 400 ms by default; the rest waits here, so the adapter
//! can keep reading its socket (and see an `interrupt` or a barge-in) while audio waits for
//! room. [`Backlog::flush`] moves as much as fits, applying each marker exactly between the
//! samples it was sent between. The adapter stops reading its socket while
//! [`Backlog::has_room`] is false: TCP then slows the agent down, and nothing is dropped.
//!
//! Memory: the buffer grows with the largest burst, doubling up to the high-water mark and exactly
//! beyond it, so it never holds more than the high-water mark plus one message (a doubling
//! `VecDeque` would overshoot by up to half again, and never shrinks). An agent that streams at
//! about real time keeps it small; one that sends a whole reply at once fills it once.
//!
//! Real-time: no allocation once the buffer has grown to its working size.

use std::collections::VecDeque;

use super::AgentAudio;
use crate::core::TurnId;

/// Markers waiting at most; beyond it the adapter stops reading (a marker flood is bounded
/// like audio).
pub const MAX_MARKERS: usize = 256;

/// A request in the agent's outbound stream, applied between samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// Start a new turn. `tag` is the adapter's own reference, handed back in
    /// [`Applied::TurnStarted`].
    StartTurn {
        /// The adapter's reference.
        tag: u32,
    },
    /// End the current turn (its last partial frame is padded and played).
    EndTurn,
    /// Ask for a playout report once everything before it was heard. `tag` comes back in
    /// [`Applied::MarkPlaced`].
    Mark {
        /// The adapter's reference.
        tag: u32,
    },
    /// Stop playback now and discard everything written so far.
    Interrupt,
}

/// What [`Backlog::flush`] did, reported as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A [`Marker::StartTurn`] became `turn`.
    TurnStarted {
        /// The session's turn id.
        turn: TurnId,
        /// The marker's tag.
        tag: u32,
    },
    /// A [`Marker::Mark`] was placed as mark `id` (reported later as `MarkReached { id }`).
    MarkPlaced {
        /// The session's mark id.
        id: u32,
        /// The marker's tag.
        tag: u32,
    },
    /// `samples` were written to `turn`.
    Wrote {
        /// The turn they went to.
        turn: TurnId,
        /// How many.
        samples: usize,
    },
}

/// Agent audio and markers waiting for room in the outbound ring, in arrival order.
#[derive(Debug)]
pub struct Backlog {
    samples: VecDeque<i16>,
    /// Markers at absolute positions in the stream of samples ever pushed.
    markers: VecDeque<(u64, Marker)>,
    /// Absolute position of `samples.front()`.
    head: u64,
    high_water: usize,
}

impl Backlog {
    /// An empty backlog that reports no room once `high_water` samples wait.
    pub fn new(high_water: usize) -> Self {
        Self {
            samples: VecDeque::new(),
            markers: VecDeque::with_capacity(16),
            head: 0,
            high_water,
        }
    }

    /// Whether more may be read from the network.
    pub fn has_room(&self) -> bool {
        self.samples.len() < self.high_water && self.markers.len() < MAX_MARKERS
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty() && self.markers.is_empty()
    }

    /// Samples waiting.
    pub fn samples(&self) -> usize {
        self.samples.len()
    }

    fn tail(&self) -> u64 {
        self.head + self.samples.len() as u64
    }

    /// Room for `n` more samples: doubling while under the high-water mark, exact beyond it.
    fn reserve(&mut self, n: usize) {
        let len = self.samples.len();
        let cap = self.samples.capacity();
        if len + n <= cap {
            return;
        }
        let target = (len + n).max(cap.saturating_mul(2).min(self.high_water));
        self.samples.reserve_exact(target - len);
    }

    /// Appends audio given as L16 little-endian bytes; a trailing odd byte is ignored (callers
    /// reject odd lengths first).
    pub fn push_le_bytes(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len() / 2);
        self.samples.extend(
            bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]])),
        );
    }

    /// Appends samples.
    pub fn push_samples(&mut self, samples: &[i16]) {
        self.reserve(samples.len());
        self.samples.extend(samples.iter().copied());
    }

    /// Appends a marker after everything pushed so far.
    pub fn push_marker(&mut self, marker: Marker) {
        let at = self.tail();
        self.markers.push_back((at, marker));
    }

    /// Drops everything waiting (the agent interrupted itself).
    pub fn clear(&mut self) {
        self.head = self.tail();
        self.samples.clear();
        self.markers.clear();
    }

    /// Drops the waiting audio that belongs to the turn being written (everything before the
    /// next [`Marker::StartTurn`]); markers stay. Returns how many samples were dropped. Called
    /// when that turn was barged in on: the session would discard the audio anyway.
    pub fn drop_current_turn(&mut self) -> usize {
        let upto = self
            .markers
            .iter()
            .find(|(_, m)| matches!(m, Marker::StartTurn { .. }))
            .map_or(self.tail(), |&(pos, _)| pos);
        let n = (upto - self.head) as usize;
        self.samples.drain(..n);
        self.head = upto;
        n
    }

    /// Moves as much as fits into `audio`, applying markers in order, and reports each step to
    /// `on`. Stops when the ring or the control queue is full; call again once the media task
    /// signals room ([`AgentAudio::ready`]).
    pub fn flush(&mut self, audio: &mut AgentAudio, mut on: impl FnMut(Applied)) {
        loop {
            if let Some(&(pos, marker)) = self.markers.front()
                && pos <= self.head
            {
                let done = match marker {
                    Marker::StartTurn { tag } => audio
                        .start_turn()
                        .map(|turn| on(Applied::TurnStarted { turn, tag })),
                    Marker::EndTurn => audio.end_turn(),
                    Marker::Mark { tag } => {
                        audio.mark().map(|id| on(Applied::MarkPlaced { id, tag }))
                    }
                    Marker::Interrupt => audio.interrupt(),
                };
                if done.is_err() {
                    // The control queue is full; the marker stays first in line.
                    return;
                }
                self.markers.pop_front();
                continue;
            }
            let limit = self
                .markers
                .front()
                .map_or(self.samples.len(), |&(pos, _)| (pos - self.head) as usize);
            let (front, _) = self.samples.as_slices();
            let chunk = &front[..limit.min(front.len())];
            let want = chunk.len();
            if want == 0 {
                return;
            }
            let n = audio.write(chunk);
            if n > 0 {
                on(Applied::Wrote {
                    turn: audio.current_turn(),
                    samples: n,
                });
                self.samples.drain(..n);
                self.head += n as u64;
            }
            if n < want {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::AgentIo;
    use crate::core::{SampleRate, Session, SessionConfig};

    fn io() -> (Session, AgentIo) {
        let mut cfg = SessionConfig::new(SampleRate::Hz16000, SampleRate::Hz16000);
        cfg.outbound_buffer = std::time::Duration::from_millis(100);
        let (session, io, _events) = AgentIo::for_test(cfg, "t");
        (session, io)
    }

    #[test]
    fn markers_land_between_the_right_samples_and_full_rings_wait() {
        let (_session, mut io) = io();
        let cap = io.audio.space();
        let mut b = Backlog::new(cap * 4);
        b.push_marker(Marker::StartTurn { tag: 7 });
        b.push_samples(&vec![1; cap + 100]);
        b.push_marker(Marker::Mark { tag: 9 });
        b.push_marker(Marker::EndTurn);
        b.push_marker(Marker::StartTurn { tag: 8 });
        b.push_samples(&[2; 10]);
        let mut log = Vec::new();
        b.flush(&mut io.audio, |a| log.push(a));
        assert_eq!(
            log,
            vec![
                Applied::TurnStarted {
                    turn: TurnId(1),
                    tag: 7
                },
                Applied::Wrote {
                    turn: TurnId(1),
                    samples: cap
                },
            ]
        );
        assert_eq!(b.samples(), 110);
        assert!(!b.is_empty());
        // Nothing drains the ring here, so nothing more moves.
        log.clear();
        b.flush(&mut io.audio, |a| log.push(a));
        assert!(log.is_empty());
    }

    #[test]
    fn a_barge_in_drops_only_the_current_turn_and_clear_drops_everything() {
        let (_session, mut io) = io();
        let mut b = Backlog::new(1_000_000);
        b.push_samples(&[1; 5_000]);
        b.push_marker(Marker::EndTurn);
        b.push_marker(Marker::StartTurn { tag: 2 });
        b.push_samples(&[2; 300]);
        assert_eq!(b.drop_current_turn(), 5_000);
        let mut log = Vec::new();
        b.flush(&mut io.audio, |a| log.push(a));
        assert_eq!(
            log,
            vec![
                Applied::TurnStarted {
                    turn: TurnId(1),
                    tag: 2
                },
                Applied::Wrote {
                    turn: TurnId(1),
                    samples: 300
                },
            ]
        );
        assert!(b.is_empty());
        b.push_samples(&[3; 10]);
        b.push_marker(Marker::Mark { tag: 1 });
        b.clear();
        assert!(b.is_empty());
        assert!(b.has_room());
    }

    #[test]
    fn the_buffer_never_grows_past_the_high_water_mark_plus_one_message() {
        // An agent sending a whole reply at once, 2 048 samples a message, into the bridge's
        // 2 s backlog at 24 kHz: read while there is room, as the adapters do.
        let (high_water, message) = (48_000, 2_048);
        let mut b = Backlog::new(high_water);
        let mut pushed = 0;
        while b.has_room() {
            b.push_samples(&vec![1; message]);
            pushed += message;
        }
        assert_eq!(b.samples(), pushed);
        let cap = b.samples.capacity();
        assert!(
            (pushed..high_water + message).contains(&cap),
            "capacity {cap} for {pushed} samples waiting (high-water mark {high_water})"
        );
        // A doubling buffer would have grown to 65 536 here.
        assert!(cap < 65_536, "capacity {cap}");
    }

    #[test]
    fn odd_trailing_bytes_are_ignored_and_room_is_bounded() {
        let mut b = Backlog::new(4);
        b.push_le_bytes(&[1, 0, 2, 0, 3]);
        assert_eq!(b.samples(), 2);
        assert!(b.has_room());
        b.push_le_bytes(&[0; 4]);
        assert!(!b.has_room());
    }
}
