//! The media WebSocket loop: one task per call owns that call's [`Session`] (no mutex) and
//! drives it in real time.
//!
//! 1. Wait for `websocket:connected` (with a deadline). It must agree with the NCCO (rate, and
//!    `call_uuid` when present) or the socket is closed before any audio reaches the session.
//!    Binary frames before it are tolerated (vonage-protocol.md §1.3): up to
//!    [`MAX_EARLY_FRAMES`] are held and processed once `connected` checked out, the rest are
//!    counted and dropped.
//! 2. Spawn the agent's task ([`Agent::start`](crate::agent::Agent::start)) with its
//!    [`AgentIo`].
//! 3. Loop: drain the session (frames due → binary messages, each followed by its commands:
//!    `clear`, `notify`; events → metrics and the agent), then wait for whichever comes first:
//!    a WebSocket message, the pacing deadline ([`Session::poll_timeout`], only while audio is
//!    waiting), the agent's "I wrote audio" ping (only while no frame is scheduled), the
//!    call's end signal, the agent's task ending, or the idle deadline (no caller audio for
//!    `--media-idle-timeout-s`).
//!
//! Limits: messages over `max_message_bytes` (8 KiB) end the socket in the WebSocket layer;
//! frames of the wrong size are counted and dropped by the session; the write buffer is capped
//! at [`MAX_WRITE_BUFFER`] and a send that does not complete in 5 s ends the call, so a peer
//! that never reads costs bounded memory and stalls no other call; the agent's event queue,
//! the audio rings and the outbound arena are bounded.
//! 4. On every exit path: tell the agent ([`AgentEvent::Ended`] has a reserved queue slot),
//!    close the socket if we are the ones ending the call, flush metrics, give the agent a short
//!    grace period, and release the call's slot (the [`SocketGuard`] does that in `Drop`).
//!
//! Pacing is the session's schedule against the monotonic clock, never `sleep(20 ms)` in a loop;
//! this task only sleeps until the instant the session names.
//!
//! Real-time: after set-up, the per-frame path (receive, `handle_caller_frame`, `poll_transmit`,
//! send) allocates nothing in this module: outbound frames and `notify` commands are written into
//! one [`BytesMut`] arena whose memory is reclaimed once the previous frames were sent, events
//! are `Copy`, the timer is one reused `Sleep`. What the WebSocket library allocates per message
//! is measured in `tests/server_alloc.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::{Bytes, BytesMut};
use serde_json::Map;
use tokio::sync::mpsc;

use super::metrics::{CallMetrics, RejectLabel};
use super::state::{AppState, SocketGuard};
use crate::agent::{AgentEvent, AgentIo, CallHandle, CallInfo, EndReason, Signal};
use crate::core::session::TextRejected;
use crate::core::{Command, Event, Session};
use crate::vonage::media_protocol::{self, CLEAR_COMMAND};

/// Size of the outbound arena. Frames are at most 960 bytes and each is sent (copied into the
/// WebSocket's own buffer and dropped) before the next is staged, so the arena is reclaimed
/// every few frames; 4 KiB holds a frame, its `notify` and room to spare.
const ARENA_BYTES: usize = 4 * 1024;
/// A send that takes longer than this means Vonage stopped reading: the call is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the agent may take to return after the call ended before it is aborted.
const AGENT_GRACE: Duration = Duration::from_secs(2);
/// Shared counters are updated this often (and at the end of the call).
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Warnings about bad input logged per call; the rest are only counted.
const MAX_WARNINGS: u32 = 5;
/// Binary frames held while waiting for `websocket:connected` (1 s of audio); later ones are
/// dropped until it arrives.
pub const MAX_EARLY_FRAMES: usize = 50;
/// The agent is woken for outbound room once a 1/`ROOM_WAKE_DIVISOR` of the ring is free.
const ROOM_WAKE_DIVISOR: usize = 4;
/// Bytes the WebSocket layer may hold unsent before a send fails.
pub const MAX_WRITE_BUFFER: usize = 256 * 1024;

/// The shell's one clock. `tokio::time::Instant` so paused-time tests drive the session too.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Serves one media socket until the call ends. Never panics on network input.
///
/// Logging: every event of the call carries `call_id` as a field; there is deliberately no
/// per-call span. With tracing-subscriber's registry a span takes a slot of its slab, and the fmt
/// layer gives each slot a small map for the span's formatted fields that lives as long as the
/// process (the slot is reused, its map kept). Those maps are allocated while a burst of calls
/// is coming in, in the middle of the calls' memory, and after the burst each pinned a heap page
/// that `malloc_trim` could not give back (heaptrack after 3 000 calls: ~450 of them, the bulk of
/// what was still allocated). The agent task gets no span either: every agent's events carry
/// `call_id` as a field too (the agent bridge, the OpenAI Realtime agent and the echo agent),
/// which also keeps the per-wake path clear of the `EnvFilter` lock a span enter takes.
pub async fn run(ws: WebSocket, guard: SocketGuard, st: AppState) {
    serve(ws, guard, st).await;
}

async fn serve(mut ws: WebSocket, guard: SocketGuard, st: AppState) {
    let call_id = guard.id().clone();
    let cfg = st.config();
    let agent = st.agent().clone();
    let entry = guard.call().clone();
    let call_rate = entry.rate;
    let agent_rate = cfg
        .agent_rate
        .unwrap_or_else(|| agent.agent_rate(call_rate));
    let mut sc = cfg.session;
    sc.call_rate = call_rate;
    sc.agent_rate = agent_rate;
    sc.forward = cfg.forward.unwrap_or_else(|| agent.forward());
    let (mut session, link) = match boxed_session(sc) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(call_id = %call_id, error = %e, "cannot build the call's session");
            close(&mut ws, 1011, "internal error").await;
            return;
        }
    };
    tracing::info!(
        call_id = %call_id,
        rate = call_rate.hz(),
        agent_rate = agent_rate.hz(),
        "media socket open"
    );
    st.metrics()
        .stage_delays(call_rate.hz(), agent_rate.hz(), &session.stage_delays());

    // 1. websocket:connected
    let expected_id = guard.id().as_str().to_owned();
    let headers = match wait_connected(
        &mut ws,
        &mut session,
        &st,
        cfg.connect_timeout,
        &expected_id,
    )
    .await
    {
        Ok(h) => h,
        Err(()) => {
            CallMetrics::new(st.metrics()).flush(st.metrics(), session.stats());
            return;
        }
    };

    // 2. the agent
    let (ev_tx, ev_rx) = mpsc::channel(cfg.agent_event_queue.max(2));
    // `Ended` always reaches the agent, however far behind it is.
    let end_permit = ev_tx.clone().try_reserve_owned().ok();
    let wake = Arc::new(Signal::new());
    let flush = Arc::new(Signal::new());
    let handle = CallHandle::new(guard.id().clone(), st.control().clone());
    let io = AgentIo::new(link, ev_rx, wake.clone(), flush.clone(), handle)
        .with_metrics(st.metrics().agent.clone());
    let mut info = CallInfo::new(guard.id().clone(), call_rate, agent_rate);
    info.forward = sc.forward;
    info.from = entry.from.clone().or_else(|| {
        headers
            .get("from")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    });
    info.to = entry.to.clone().or_else(|| {
        headers
            .get("to")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    });
    info.conversation_uuid = entry.conversation_uuid.clone();
    info.headers = headers;
    let mut agent_task = tokio::spawn(agent.start(info, io));
    // Audio that arrived before `connected` is waiting in the ring.
    wake.notify();

    // 3. the loop
    let mut d = Driver {
        call_id: call_id.clone(),
        session,
        arena: BytesMut::with_capacity(ARENA_BYTES),
        frame: [0u8; crate::core::audio::MAX_CALL_FRAME_BYTES],
        ev_tx,
        wake: wake.clone(),
        st: st.clone(),
        call_metrics: CallMetrics::new(st.metrics()),
        warnings: 0,
        last_audio: tokio::time::Instant::now(),
    };
    let mut agent_running = true;
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    // Re-armed only when it fires (not per frame): then it checks the time of the last frame.
    let idle = cfg.media_idle_timeout;
    let idle_sleep = tokio::time::sleep(idle);
    tokio::pin!(idle_sleep);
    let mut next_flush = now() + FLUSH_EVERY;
    // Waits kept across iterations and re-created only once they complete. Both are lock-free
    // (a flag and an `AtomicWaker` each): the loop polls them on every wake-up, and a pending
    // tokio `Notify` waiter (what a `watch` receiver's `changed()` is) takes a mutex per poll.
    let end = guard.end_signal().clone();
    let ended = end.wait();
    tokio::pin!(ended);
    let flushed = flush.wait();
    tokio::pin!(flushed);
    let reason = loop {
        if let Err(r) = d.drain(&mut ws).await {
            break r;
        }
        let t = now();
        if t >= next_flush {
            d.call_metrics.flush(st.metrics(), d.session.stats());
            next_flush = t + FLUSH_EVERY;
        }
        // Sleep only while audio waits for its slot; a deadline already past with audio waiting
        // means the chunker lacks a full frame, so wait for the agent instead of spinning.
        let deadline = if d.session.has_outbound() {
            d.session.poll_timeout().filter(|&due| due > t)
        } else {
            None
        };
        // Re-armed only when the next frame's deadline moves.
        if let Some(due) = deadline.map(tokio::time::Instant::from_std)
            && sleep.deadline() != due
        {
            sleep.as_mut().reset(due);
        }
        tokio::select! {
            biased;
            reason = &mut ended => break reason,
            msg = ws.recv() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    d.last_audio = tokio::time::Instant::now();
                    d.on_frame(&b);
                }
                Some(Ok(Message::Text(t))) => d.on_text(t.as_str()),
                Some(Ok(Message::Close(c))) => {
                    tracing::debug!(call_id = %call_id, code = c.as_ref().map(|c| c.code), "Vonage closed the socket");
                    break EndReason::SocketClosed;
                }
                Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
                Some(Err(e)) => {
                    st.metrics().socket_errors.inc();
                    tracing::warn!(call_id = %call_id, error = %e, "media socket error");
                    break EndReason::SocketError;
                }
                None => break EndReason::SocketClosed,
            },
            () = &mut sleep, if deadline.is_some() => {
                if let Some(due) = deadline {
                    d.call_metrics.observe_lateness(now().saturating_duration_since(due));
                }
            }
            () = &mut idle_sleep => {
                let silent_for = d.last_audio.elapsed();
                if silent_for >= idle {
                    st.metrics().idle_timeouts.inc();
                    tracing::warn!(call_id = %call_id, silent_ms = silent_for.as_millis() as u64, "no audio from Vonage; closing");
                    close(&mut ws, 1008, "no audio").await;
                    break EndReason::SocketError;
                }
                idle_sleep.as_mut().reset(d.last_audio + idle);
            }
            // The agent wrote audio or a marker. Only needed while no frame is scheduled: with
            // the pacing timer armed, the next due frame picks it up (one wake-up per frame
            // fewer while the agent streams; an `interrupt` waits at most one frame).
            () = &mut flushed, if deadline.is_none() => flushed.set(flush.wait()),
            res = &mut agent_task, if agent_running => {
                agent_running = false;
                match res {
                    Ok(Ok(())) => tracing::debug!(call_id = %call_id, "agent finished; the call stays up"),
                    Ok(Err(e)) => {
                        st.metrics().agent_errors.inc();
                        tracing::error!(call_id = %call_id, error = %e, "agent failed; ending the call");
                        break EndReason::AgentFailed;
                    }
                    Err(e) => {
                        st.metrics().agent_errors.inc();
                        tracing::error!(call_id = %call_id, error = %e, "agent task panicked; ending the call");
                        break EndReason::AgentFailed;
                    }
                }
            }
        }
    };

    // 4. teardown, on every path
    if let Some(p) = end_permit {
        p.send(AgentEvent::Ended(reason));
    }
    match reason {
        EndReason::SocketClosed | EndReason::SocketError => {}
        EndReason::AgentFailed => {
            // Vonage answers our close with `disconnected`; the event webhook then gives the
            // caller what --agent-failure says (server::routes).
            st.note_agent_failure(guard.id());
            close(&mut ws, 1011, "agent failed").await;
        }
        _ => close(&mut ws, 1000, reason.as_str()).await,
    }
    let Driver {
        session,
        mut call_metrics,
        ev_tx,
        ..
    } = d;
    call_metrics.flush(st.metrics(), session.stats());
    let s = *session.stats();
    drop(ev_tx);
    drop(session);
    wake.notify();
    if agent_running {
        match tokio::time::timeout(AGENT_GRACE, &mut agent_task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                st.metrics().agent_errors.inc();
                tracing::warn!(call_id = %call_id, error = %e, "agent ended with an error");
            }
            Ok(Err(e)) => {
                st.metrics().agent_errors.inc();
                tracing::warn!(call_id = %call_id, error = %e, "agent task panicked");
            }
            Err(_) => {
                tracing::warn!(call_id = %call_id, "agent did not stop within {AGENT_GRACE:?}; aborting it");
                agent_task.abort();
            }
        }
    }
    tracing::info!(
        call_id = %call_id,
        reason = reason.as_str(),
        frames_in = s.frames_in,
        frames_out = s.frames_out,
        frames_invalid = s.frames_invalid,
        barge_ins = s.barge_ins,
        underruns = s.underruns,
        "call ended"
    );
    drop(guard);
}

/// Builds the call's session straight onto the heap. `Session` is ~9 KiB inline; held by value
/// in this task's future it took that space more than once (the local, then the `Driver`, each a
/// separate slot of the state machine), and a tokio task's memory is the size of its whole
/// future for the life of the call. Built here, in a plain function, the value passes only
/// through the thread's stack.
fn boxed_session(
    sc: crate::core::SessionConfig,
) -> Result<(Box<Session>, crate::core::AgentLink), crate::core::ConfigError> {
    Session::new(sc).map(|(s, link)| (Box::new(s), link))
}

/// Waits for `websocket:connected`; returns its custom headers. Binary frames before it are
/// held (up to [`MAX_EARLY_FRAMES`]) and handed to the session only once `connected` agreed with
/// the NCCO, so a socket that announces another rate, an unsupported content type or another
/// call is closed before any of its audio reaches the pipeline. If the deadline passes after
/// audio did arrive, the call goes on at the NCCO's rate without the headers. `Err` means the
/// call is over (already closed and counted).
async fn wait_connected(
    ws: &mut WebSocket,
    session: &mut Session,
    st: &AppState,
    timeout: Duration,
    call_id: &str,
) -> Result<Map<String, serde_json::Value>, ()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut early: Vec<Bytes> = Vec::new();
    let mut early_dropped = 0u32;
    let headers = loop {
        tokio::select! {
            msg = ws.recv() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let text = t.as_str();
                    let is_connected = matches!(
                        media_protocol::parse_text(text),
                        Ok(media_protocol::MediaEvent::Connected { .. })
                            | Err(media_protocol::TextError::BadContentType)
                    );
                    if is_connected {
                        let headers = media_protocol::connected_headers(text).unwrap_or_default();
                        let other_call = headers
                            .get("call_uuid")
                            .and_then(|v| v.as_str())
                            .is_some_and(|c| c != call_id);
                        if other_call {
                            st.metrics().reject(RejectLabel::bad_connected);
                            tracing::warn!(call_id, "websocket:connected names another call; closing");
                            close(ws, 1008, "call_uuid does not match the socket").await;
                            return Err(());
                        }
                    }
                    match session.handle_text(now(), text) {
                        Ok(()) if session.is_connected() => {
                            break media_protocol::connected_headers(text).unwrap_or_default();
                        }
                        Ok(()) => {}
                        Err(TextRejected::RateMismatch { expected, actual }) => {
                            st.metrics().reject(RejectLabel::rate_mismatch);
                            tracing::warn!(call_id, expected, actual, "websocket:connected disagrees with the NCCO rate");
                            close(ws, 1003, "content-type does not match the NCCO").await;
                            return Err(());
                        }
                        Err(e) if is_connected => {
                            st.metrics().reject(RejectLabel::bad_connected);
                            tracing::warn!(call_id, error = %e, "unusable websocket:connected; closing");
                            close(ws, 1003, "unsupported content-type").await;
                            return Err(());
                        }
                        Err(e) => tracing::debug!(call_id, error = %e, "text message before websocket:connected ignored"),
                    }
                }
                Some(Ok(Message::Binary(b))) => {
                    if early.len() < MAX_EARLY_FRAMES {
                        early.push(b);
                    } else {
                        early_dropped += 1;
                    }
                }
                Some(Ok(Message::Close(_))) | None => {
                    tracing::info!(call_id, "socket closed before websocket:connected");
                    return Err(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    st.metrics().socket_errors.inc();
                    tracing::warn!(call_id, error = %e, "media socket error before websocket:connected");
                    return Err(());
                }
            },
            () = tokio::time::sleep_until(deadline) => {
                if !early.is_empty() {
                    tracing::warn!(call_id, early_frames = early.len(), "no websocket:connected; going on at the NCCO rate");
                    break Map::new();
                }
                st.metrics().reject(RejectLabel::connect_timeout);
                tracing::warn!(call_id, "no websocket:connected within {timeout:?}; closing");
                close(ws, 1008, "no websocket:connected").await;
                return Err(());
            }
        }
    };
    if !early.is_empty() || early_dropped > 0 {
        tracing::info!(
            call_id,
            early_frames = early.len(),
            early_dropped,
            "binary frames arrived before websocket:connected"
        );
        st.metrics().frames_invalid.inc_by(u64::from(early_dropped));
    }
    for b in &early {
        let _ = session.handle_caller_frame(now(), b);
    }
    Ok(headers)
}

/// Sends a close frame, bounded in time; errors are irrelevant at this point.
async fn close(ws: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ =
        tokio::time::timeout(Duration::from_secs(1), ws.send(Message::Close(Some(frame)))).await;
}

/// The per-call state of the loop besides the socket.
struct Driver {
    /// For the log events (see [`run`]).
    call_id: crate::agent::CallId,
    /// Boxed: see [`boxed_session`].
    session: Box<Session>,
    /// Outbound frames and `notify` commands are written here and split off as `Bytes`.
    arena: BytesMut,
    frame: [u8; crate::core::audio::MAX_CALL_FRAME_BYTES],
    ev_tx: mpsc::Sender<AgentEvent>,
    wake: Arc<Signal>,
    st: AppState,
    call_metrics: CallMetrics,
    warnings: u32,
    /// When the last caller frame arrived (for the idle timeout).
    last_audio: tokio::time::Instant,
}

impl Driver {
    /// One caller frame.
    fn on_frame(&mut self, bytes: &[u8]) {
        let t0 = now();
        let before = self.session.agent_stream_pos();
        if let Err(e) = self.session.handle_caller_frame(t0, bytes)
            && self.warnings < MAX_WARNINGS
        {
            self.warnings += 1;
            tracing::warn!(call_id = %self.call_id, error = %e, "bad caller frame dropped");
        }
        if self.session.agent_stream_pos() != before {
            self.wake.notify();
        }
        self.call_metrics
            .observe_frame(now().saturating_duration_since(t0));
    }

    /// One text message after `connected`.
    fn on_text(&mut self, text: &str) {
        if let Err(e) = self.session.handle_text(now(), text)
            && self.warnings < MAX_WARNINGS
        {
            self.warnings += 1;
            tracing::warn!(call_id = %self.call_id, error = %e, "text message dropped");
        }
    }

    /// Sends every frame that is due (each followed by its commands), then hands events out.
    async fn drain(&mut self, ws: &mut WebSocket) -> Result<(), EndReason> {
        let t = now();
        let room_before = self.session.outbound_room();
        loop {
            self.send_commands(ws).await?;
            let Some(n) = self.session.poll_transmit(t, &mut self.frame) else {
                break;
            };
            let bytes = self.stage(n);
            send(ws, Message::Binary(bytes), &self.st, &self.call_id).await?;
        }
        self.send_commands(ws).await?;
        // Outbound room freed up: the agent hears of it when the room reaches a quarter of the
        // ring, not after every frame. An agent only waits for room once it filled the ring, so
        // it is woken with 100 ms of room and 300 ms still queued (400 ms ring): one wake-up per
        // five frames instead of one per frame while it streams ahead of playback.
        let room_after = self.session.outbound_room();
        let wake_at = (self.session.outbound_capacity() / ROOM_WAKE_DIVISOR).max(1);
        if room_before < wake_at && room_after >= wake_at {
            self.wake.notify();
        }
        while let Some(ev) = self.session.poll_event() {
            self.on_event(ev);
        }
        Ok(())
    }

    /// Copies `self.frame[..n]` into the arena and splits it off. Allocation-free once the
    /// arena's earlier frames were sent and dropped (`reserve` then reclaims the buffer).
    fn stage(&mut self, n: usize) -> Bytes {
        self.arena.reserve(n);
        self.arena.extend_from_slice(&self.frame[..n]);
        self.arena.split().freeze()
    }

    async fn send_commands(&mut self, ws: &mut WebSocket) -> Result<(), EndReason> {
        while let Some(cmd) = self.session.poll_command() {
            let msg = match cmd {
                Command::ClearPlayback => Message::Text(Utf8Bytes::from_static(CLEAR_COMMAND)),
                Command::Notify { turn, frame, mark } => {
                    let Some(n) = media_protocol::encode_notify(turn, frame, mark, &mut self.frame)
                    else {
                        continue;
                    };
                    let bytes = self.stage(n);
                    // encode_notify writes ASCII JSON, so this cannot fail; skip it if it did.
                    let Ok(text) = Utf8Bytes::try_from(bytes) else {
                        continue;
                    };
                    Message::Text(text)
                }
            };
            send(ws, msg, &self.st, &self.call_id).await?;
        }
        Ok(())
    }

    fn on_event(&mut self, ev: Event) {
        let out = match ev {
            Event::SpeechStarted { stream_pos, .. } => AgentEvent::SpeechStarted { stream_pos },
            Event::SpeechEnded {
                duration,
                stream_pos,
                ..
            } => AgentEvent::SpeechEnded {
                duration,
                stream_pos,
            },
            Event::BargeIn(b) => {
                tracing::info!(
                    call_id = %self.call_id,
                    turn = b.turn.0,
                    heard_ms = b.heard.as_millis() as u64,
                    "barge-in"
                );
                AgentEvent::BargeIn(b)
            }
            Event::Dtmf {
                digit, duration, ..
            } => AgentEvent::Dtmf { digit, duration },
            Event::PlayoutReached {
                turn,
                heard,
                complete,
            } => AgentEvent::Playout {
                turn,
                heard,
                complete,
            },
            Event::MarkReached { id } => AgentEvent::MarkReached { id },
            Event::PlaybackPaused {
                turn,
                at,
                silent_at,
                ..
            } => AgentEvent::Paused {
                turn,
                silent_in: silent_at.saturating_duration_since(at),
            },
            Event::FalseInterruption { turn, paused, .. } => {
                tracing::debug!(
                    call_id = %self.call_id,
                    turn = turn.0,
                    paused_ms = paused.as_millis() as u64,
                    "false interruption: resumed"
                );
                AgentEvent::FalseInterruption { turn, paused }
            }
            _ => return,
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = self.ev_tx.try_send(out) {
            // A slow agent loses events, never the audio path's time.
            self.st.metrics().agent_events_dropped.inc();
        }
    }
}

/// Sends one message, bounded in time: a peer that stops reading ends the call.
async fn send(
    ws: &mut WebSocket,
    msg: Message,
    st: &AppState,
    call_id: &crate::agent::CallId,
) -> Result<(), EndReason> {
    match tokio::time::timeout(SEND_TIMEOUT, ws.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            st.metrics().socket_errors.inc();
            tracing::warn!(call_id = %call_id, error = %e, "media socket send failed");
            Err(EndReason::SocketError)
        }
        Err(_) => {
            st.metrics().socket_errors.inc();
            tracing::warn!(call_id = %call_id, "media socket send timed out");
            Err(EndReason::SocketError)
        }
    }
}

#[cfg(test)]
mod tests {
    /// A tokio task holds its whole future for the life of the call, so the media loop's future
    /// is per-call memory. It was 31 KiB while the `Session` lived in it by value (three slots);
    /// now ~5 KiB. This catches a large value creeping back in.
    #[test]
    fn media_task_future_stays_small() {
        fn future_size<A, B, C, R>(_: fn(A, B, C) -> R) -> usize {
            std::mem::size_of::<R>()
        }
        let size = future_size(super::run as fn(_, _, _) -> _);
        assert!(size <= 8 * 1024, "media task future is {size} bytes");
    }
}
