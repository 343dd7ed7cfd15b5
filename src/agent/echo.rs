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
//! Real-time: the two buffers are allocated when the call starts; the audio loop allocates
//! nothing (a key press allocates for its REST request).

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
    // The utterance being heard: the last `cap` samples read, starting at stream position
    // `rec_start` (the count of samples read before its first one).
    // Both buffers grow with the utterance (up to `cap`) instead of reserving the maximum up
    // front: an idle call costs almost nothing. This is the agent's task, not the media path.
    let mut recording: VecDeque<i16> = VecDeque::new();
    let mut rec_start: u64 = 0;
    let mut read_pos: u64 = 0;
    // The utterance being played back, and how much of it is written.
    let mut playback: Vec<i16> = Vec::new();
    let mut played = 0usize;

    loop {
        tokio::select! {
            ev = io.events.recv() => match ev {
                None | Some(AgentEvent::Ended(_)) => return Ok(()),
                Some(AgentEvent::SpeechStarted { stream_pos }) => {
                    // Audio and events travel separately, so the utterance's first samples may
                    // already be read: keep what lies at or after `stream_pos`, drop the rest
                    // (there is some only with Forward::All).
                    read_upto(&mut io, &mut scratch, &mut recording, &mut read_pos, cap, stream_pos);
                    let keep = read_pos.saturating_sub(stream_pos) as usize;
                    recording.drain(..recording.len().saturating_sub(keep));
                    rec_start = stream_pos;
                }
                Some(AgentEvent::SpeechEnded { stream_pos, .. }) => {
                    read_upto(&mut io, &mut scratch, &mut recording, &mut read_pos, cap, stream_pos);
                    // The utterance is what was recorded up to its end; audio read past the end
                    // (a new utterance already starting) stays in `recording`.
                    let keep_after = read_pos.saturating_sub(stream_pos.max(rec_start)) as usize;
                    let utterance_len = recording.len().saturating_sub(keep_after);
                    if played < playback.len() {
                        // A new utterance replaces the rest of the one still playing.
                        let _ = io.audio.end_turn();
                    }
                    playback.clear();
                    playback.extend(recording.drain(..utterance_len));
                    rec_start = stream_pos;
                    played = 0;
                    if !playback.is_empty() && io.audio.start_turn().is_err() {
                        playback.clear();
                    }
                }
                Some(AgentEvent::Dtmf { digit, .. }) => on_key(&io.call, digit, transfer_to.as_ref()),
                Some(AgentEvent::BargeIn(_)) => {
                    // The session already cleared playback; stop feeding the interrupted turn.
                    playback.clear();
                    played = 0;
                }
                Some(_) => {}
            },
            () = io.audio.ready() => {
                if io.audio.is_closed() {
                    return Ok(());
                }
            }
        }
        read_upto(
            &mut io,
            &mut scratch,
            &mut recording,
            &mut read_pos,
            cap,
            u64::MAX,
        );
        if played < playback.len() {
            played += io.audio.write(&playback[played..]);
            if played == playback.len() {
                let _ = io.audio.end_turn();
            }
        }
    }
}

/// Reads caller audio into `recording` until `read_pos` reaches `upto` or the ring is empty,
/// keeping only the newest `cap` samples.
fn read_upto(
    io: &mut AgentIo,
    scratch: &mut [i16; CHUNK],
    recording: &mut VecDeque<i16>,
    read_pos: &mut u64,
    cap: usize,
    upto: u64,
) {
    while *read_pos < upto {
        let want = (upto - *read_pos).min(CHUNK as u64) as usize;
        let n = io.audio.read(&mut scratch[..want]);
        if n == 0 {
            return;
        }
        *read_pos += n as u64;
        let overflow = (recording.len() + n).saturating_sub(cap);
        recording.drain(..overflow.min(recording.len()));
        let skip = n.saturating_sub(cap);
        recording.extend(&scratch[skip..n]);
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
