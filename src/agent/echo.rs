//! The default agent: after each caller utterance ends, it plays the utterance back.
//!
//! It exercises the whole loop a real agent uses (VAD and end of turn, resampling both ways,
//! turns, pacing, barge-in when the caller talks over the echo), so a newcomer calling the
//! server hears everything working before writing any agent code.
//!
//! The caller's audio arrives speech-only with its pre-roll ([`Forward::Speech`]); the agent
//! keeps at most [`EchoAgent::max_utterance`] of it (a longer utterance keeps its last part).
//! On barge-in it stops writing the interrupted echo; the new utterance is echoed in turn.
//!
//! Key presses drive call control, for trying it by hand: `0` transfers the caller to the
//! number set with [`EchoAgent::with_transfer_to`] (`--transfer-to`), `#` hangs up. Both need the
//! Vonage REST API (`--application-id`, `--private-key`); without it the refusal is logged. An
//! action runs on its own task, so the echo carries on while the request is in flight.
//!
//! Memory: the caller's audio waits on one tape of 2 KiB chunks, freed as soon as they are
//! echoed (or dropped on barge-in), so a call holds only what is still to be played and an idle
//! call holds nothing. Real-time: recording takes a chunk every 43 ms at 24 kHz (one spare is
//! recycled); playing back allocates nothing; a key press allocates for its REST request.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::{Agent, AgentAction, AgentError, AgentEvent, AgentIo, BoxFuture, CallHandle, CallInfo};
use crate::core::dtmf::DtmfDigit;
use crate::core::{Forward, SampleRate};

/// Plays each caller utterance back once it ends.
#[derive(Debug, Clone)]
pub struct EchoAgent {
    max_utterance: Duration,
    transfer_to: Option<Arc<str>>,
}

impl Default for EchoAgent {
    fn default() -> Self {
        Self {
            max_utterance: Duration::from_secs(10),
            transfer_to: None,
        }
    }
}

impl EchoAgent {
    /// An echo agent that keeps at most `max_utterance` of each utterance (at least 1 s).
    pub fn new(max_utterance: Duration) -> Self {
        Self {
            max_utterance: max_utterance.max(Duration::from_secs(1)),
            transfer_to: None,
        }
    }

    /// Transfers the caller to `number` (E.164 digits) when they press `0`.
    pub fn with_transfer_to(mut self, number: Option<String>) -> Self {
        self.transfer_to = number.map(Arc::from);
        self
    }

    /// Where `0` transfers the caller.
    pub fn transfer_to(&self) -> Option<&str> {
        self.transfer_to.as_deref()
    }

    /// The longest utterance echoed in full.
    pub fn max_utterance(&self) -> Duration {
        self.max_utterance
    }
}

impl Agent for EchoAgent {
    fn agent_rate(&self, call_rate: SampleRate) -> SampleRate {
        call_rate
    }

    fn forward(&self) -> Forward {
        Forward::Speech
    }

    fn start(&self, call: CallInfo, io: AgentIo) -> BoxFuture<'static, Result<(), AgentError>> {
        let cap =
            (u128::from(call.agent_rate.hz()) * self.max_utterance.as_millis() / 1_000) as usize;
        Box::pin(run(io, cap, self.transfer_to.clone()))
    }
}

/// `0` transfers, `#` hangs up; other keys do nothing. The action runs on its own task.
fn on_key(call: &CallHandle, digit: DtmfDigit, transfer_to: Option<&Arc<str>>) {
    let action = match (digit.as_char(), transfer_to) {
        ('#', _) => AgentAction::Hangup,
        ('0', Some(to)) => AgentAction::Transfer { to: to.to_string() },
        ('0', None) => {
            tracing::warn!(call_id = %call.id(), "key 0: no transfer number configured (--transfer-to, VOICEGATE_TRANSFER_TO)");
            return;
        }
        _ => return,
    };
    let call = call.clone();
    tokio::spawn(async move {
        tracing::info!(call_id = %call.id(), %action, "key {}: requesting {action}", digit.as_char());
        if let Err(e) = call.act(action).await {
            tracing::warn!(call_id = %call.id(), error = %e, "call control refused");
        }
    });
}

/// Samples read per ring access (one 20 ms frame at 48 kHz).
const CHUNK: usize = 960;

async fn run(mut io: AgentIo, cap: usize, transfer_to: Option<Arc<str>>) -> Result<(), AgentError> {
    let mut scratch = [0i16; CHUNK];
    // Everything read and not yet echoed or dropped; `tape.end()` is the count of samples read.
    let mut tape = Tape::new(cap);
    // The utterance being heard starts at this stream position.
    let mut rec_start: u64 = 0;
    // While echoing: the utterance being played back is the tape's front, up to this position.
    let mut play_end: Option<u64> = None;

    loop {
        tokio::select! {
            ev = io.events.recv() => match ev {
                None | Some(AgentEvent::Ended(_)) => return Ok(()),
                Some(AgentEvent::SpeechStarted { stream_pos }) => {
                    // Audio and events travel separately, so the utterance's first samples may
                    // already be read. What lies before `stream_pos` (there is some only with
                    // Forward::All) is dropped now, or with the echo still playing in front of it.
                    read_upto(&mut io, &mut scratch, &mut tape, stream_pos);
                    if play_end.is_none() {
                        tape.drop_until(stream_pos);
                    }
                    rec_start = stream_pos;
                }
                Some(AgentEvent::SpeechEnded { stream_pos, .. }) => {
                    read_upto(&mut io, &mut scratch, &mut tape, stream_pos);
                    if play_end.is_some() {
                        // A new utterance replaces the rest of the one still playing.
                        let _ = io.audio.end_turn();
                    }
                    // The utterance is what was recorded from its start to its end; audio read
                    // past the end (a new utterance already starting) stays on the tape.
                    tape.drop_until(rec_start);
                    let end = stream_pos.min(tape.end());
                    play_end = (end > tape.start).then_some(end);
                    rec_start = stream_pos;
                    if play_end.is_some() && io.audio.start_turn().is_err() {
                        tape.drop_until(end);
                        play_end = None;
                    }
                }
                Some(AgentEvent::Dtmf { digit, .. }) => on_key(&io.call, digit, transfer_to.as_ref()),
                Some(AgentEvent::BargeIn(_)) => {
                    // The session already cleared playback; stop feeding the interrupted turn.
                    if let Some(end) = play_end.take() {
                        tape.drop_until(end);
                    }
                }
                Some(_) => {}
            },
            () = io.audio.ready() => {
                if io.audio.is_closed() {
                    return Ok(());
                }
            }
        }
        read_upto(&mut io, &mut scratch, &mut tape, u64::MAX);
        if let Some(end) = play_end {
            loop {
                let left = end.saturating_sub(tape.start).min(CHUNK as u64) as usize;
                let front = tape.front(left);
                if front.is_empty() {
                    break;
                }
                let n = io.audio.write(front);
                let whole = n == front.len();
                tape.drop_front(n);
                if !whole {
                    break;
                }
            }
            if tape.start >= end {
                let _ = io.audio.end_turn();
                play_end = None;
            }
        }
    }
}

/// Reads caller audio onto the tape until it reaches stream position `upto` or the ring is
/// empty.
fn read_upto(io: &mut AgentIo, scratch: &mut [i16; CHUNK], tape: &mut Tape, upto: u64) {
    while tape.end() < upto {
        let want = (upto - tape.end()).min(CHUNK as u64) as usize;
        let n = io.audio.read(&mut scratch[..want]);
        if n == 0 {
            return;
        }
        tape.push(&scratch[..n]);
    }
}

/// Samples per tape chunk (2 KiB; 43 ms at 24 kHz).
const TAPE_CHUNK: usize = 1024;

/// The caller audio the agent holds: one FIFO of fixed-size chunks that both the utterance
/// being recorded and the one being played back live in (the one played is always the oldest).
/// Chunks are freed as soon as their samples are played or dropped (one is kept as a spare), so
/// a call holds only the audio that still has to be echoed, never an utterance twice, and an
/// idle call holds nothing.
#[derive(Debug)]
struct Tape {
    chunks: VecDeque<Box<[i16; TAPE_CHUNK]>>,
    /// Offset of the oldest sample in the front chunk.
    head: usize,
    /// Samples stored.
    len: usize,
    /// Stream position of the oldest sample stored.
    start: u64,
    /// The most samples held; older ones are dropped first.
    cap: usize,
    spare: Option<Box<[i16; TAPE_CHUNK]>>,
}

impl Tape {
    fn new(cap: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            head: 0,
            len: 0,
            start: 0,
            cap: cap.max(1),
            spare: None,
        }
    }

    /// Stream position just after the newest sample stored.
    fn end(&self) -> u64 {
        self.start + self.len as u64
    }

    /// Appends samples, dropping the oldest beyond the cap.
    fn push(&mut self, mut samples: &[i16]) {
        while !samples.is_empty() {
            let tail = (self.head + self.len) % TAPE_CHUNK;
            if tail == 0 && self.head + self.len == self.chunks.len() * TAPE_CHUNK {
                let chunk = self
                    .spare
                    .take()
                    .unwrap_or_else(|| Box::new([0; TAPE_CHUNK]));
                self.chunks.push_back(chunk);
            }
            let n = samples.len().min(TAPE_CHUNK - tail);
            if let Some(last) = self.chunks.back_mut() {
                last[tail..tail + n].copy_from_slice(&samples[..n]);
            }
            self.len += n;
            samples = &samples[n..];
        }
        self.drop_front(self.len.saturating_sub(self.cap));
    }

    /// Drops the `n` oldest samples (at most all of them).
    fn drop_front(&mut self, n: usize) {
        let n = n.min(self.len);
        self.len -= n;
        self.start += n as u64;
        self.head += n;
        while self.head >= TAPE_CHUNK || (self.len == 0 && !self.chunks.is_empty()) {
            let Some(chunk) = self.chunks.pop_front() else {
                break;
            };
            self.head = self.head.saturating_sub(TAPE_CHUNK);
            if self.spare.is_none() {
                self.spare = Some(chunk);
            }
        }
        if self.len == 0 {
            self.head = 0;
        }
    }

    /// Drops everything before stream position `pos`.
    fn drop_until(&mut self, pos: u64) {
        self.drop_front(pos.saturating_sub(self.start).min(self.len as u64) as usize);
    }

    /// The oldest stored samples, up to `max`, in one slice (up to the end of the front chunk).
    fn front(&self, max: usize) -> &[i16] {
        let n = max.min(self.len).min(TAPE_CHUNK - self.head);
        match self.chunks.front() {
            Some(c) => &c[self.head..self.head + n],
            None => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use tokio::sync::{Notify, mpsc};

    use super::*;
    use crate::agent::{CallHandle, CallId, EndReason, NoCallControl};
    use crate::core::{Session, SessionConfig};

    #[test]
    fn tape_is_a_capped_fifo_that_frees_what_it_drops() {
        let mut t = Tape::new(3 * TAPE_CHUNK);
        let samples: Vec<i16> = (0..5_000).map(|i| (i % 30_000) as i16).collect();
        t.push(&samples[..10]);
        assert_eq!((t.start, t.len, t.end()), (0, 10, 10));
        assert_eq!(t.front(4), &samples[..4]);
        t.push(&samples[10..2_500]);
        assert_eq!(t.chunks.len(), 3);
        // Over the cap: the oldest go.
        t.push(&samples[2_500..]);
        assert_eq!(
            (t.start, t.len),
            (5_000 - 3 * TAPE_CHUNK as u64, 3 * TAPE_CHUNK)
        );
        let first = t.start as usize;
        assert_eq!(
            t.front(usize::MAX),
            &samples[first..first + t.front(usize::MAX).len()]
        );
        // Reading the whole tape back front to back gives the newest samples in order.
        let mut back = Vec::new();
        while t.len > 0 {
            let n = t.front(700).len();
            back.extend_from_slice(t.front(700));
            t.drop_front(n);
        }
        assert_eq!(back, &samples[first..]);
        assert!(t.chunks.is_empty() && t.spare.is_some());
        assert_eq!(t.end(), 5_000);
        // Dropping up to a position, past the end, on an empty tape: no panic, nothing left.
        t.push(&samples[..100]);
        t.drop_until(5_050);
        assert_eq!((t.start, t.len), (5_050, 50));
        t.drop_until(u64::MAX);
        t.drop_front(10);
        assert_eq!((t.len, t.end()), (0, 5_100));
        assert!(t.front(10).is_empty());
    }

    /// Drives the echo agent through a real session with fake time: a burst of tone as the
    /// caller's "speech" is not needed; we check the mechanics with events injected directly.
    #[tokio::test]
    async fn echoes_what_was_read_up_to_the_end_of_the_utterance() {
        let cfg = SessionConfig::new(SampleRate::Hz16000, SampleRate::Hz16000);
        let (mut session, link) = Session::new(cfg).unwrap();
        let (tx, rx) = mpsc::channel(16);
        let wake = Arc::new(Notify::new());
        let flush = Arc::new(Notify::new());
        let call = CallHandle::new(CallId::parse("t").unwrap(), Arc::new(NoCallControl));
        let io = AgentIo::new(link, rx, wake.clone(), flush.clone(), call);
        let info = CallInfo::new(
            CallId::parse("t").unwrap(),
            SampleRate::Hz16000,
            SampleRate::Hz16000,
        );
        let task = tokio::spawn(EchoAgent::default().start(info, io));

        // Feed loud frames until the session reports the end of an utterance.
        let t0 = Instant::now();
        let mut frame = [0u8; 640];
        let mut ended = None;
        for i in 0..200u32 {
            let speaking = (10..60).contains(&i);
            for (k, b) in frame.chunks_exact_mut(2).enumerate() {
                let s: i16 = if speaking {
                    (((k as f32) * 0.3).sin() * 8_000.0 * (1.0 + (k % 7) as f32 / 7.0)) as i16
                } else {
                    0
                };
                b.copy_from_slice(&s.to_le_bytes());
            }
            session
                .handle_caller_frame(t0 + crate::core::FRAME * i, &frame)
                .unwrap();
            wake.notify_one();
            while let Some(ev) = session.poll_event() {
                match ev {
                    crate::core::Event::SpeechStarted { stream_pos, .. } => {
                        tx.send(AgentEvent::SpeechStarted { stream_pos })
                            .await
                            .unwrap();
                    }
                    crate::core::Event::SpeechEnded {
                        stream_pos,
                        duration,
                        ..
                    } => {
                        ended = Some(stream_pos);
                        tx.send(AgentEvent::SpeechEnded {
                            stream_pos,
                            duration,
                        })
                        .await
                        .unwrap();
                    }
                    _ => {}
                }
            }
            tokio::task::yield_now().await;
        }
        let ended = ended.expect("the synthetic utterance ends");
        // The agent writes the echo; the session sends it as frames.
        let mut out = [0u8; 960];
        let mut frames = 0u64;
        let mut t = t0 + Duration::from_secs(5);
        for _ in 0..2_000 {
            tokio::task::yield_now().await;
            while let Some(n) = session.poll_transmit(t, &mut out) {
                assert_eq!(n, 640);
                frames += 1;
                wake.notify_one();
            }
            t += crate::core::FRAME;
        }
        let expected = ended.div_ceil(320);
        assert!(
            frames >= expected && frames <= expected + 1,
            "frames {frames}, utterance {ended} samples"
        );
        tx.send(AgentEvent::Ended(EndReason::SocketClosed))
            .await
            .unwrap();
        task.await.unwrap().unwrap();
    }
}
