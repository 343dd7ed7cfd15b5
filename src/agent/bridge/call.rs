//! One call's bridge: connects to the agent, then moves caller audio and events out and the
//! agent's audio and requests in until the call or the connection ends.
//!
//! The loop waits for whichever comes first (an event, the socket, the media task's wake-up, a
//! call-control result, the not-reading deadline) and then does all the non-blocking work it
//! can: backlog into the outbound ring, inbound ring into binary messages. Ordering promise to
//! the agent: the audio of an utterance is sent before its `speech_ended` (an event that names a
//! stream position is held until the audio up to it is queued).
//!
//! Bounded against an agent that misbehaves without breaking the protocol: the only messages the
//! agent can make the bridge queue for it are answers to its own requests (`action_failed`), so
//! the socket is not read while the queue towards the agent is full ([`READ_CAP`]) and TCP slows
//! down an agent that asks faster than it reads; a repeated `hangup` is moot and ignored; the
//! log lines an agent causes (its `log` messages, its requests and their failures) have a
//! per-call allowance ([`LogBudget`]).
//!
//! Not real-time as a whole; the per-frame path allocates nothing in steady state.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message};

use super::BridgeConfig;
use super::error::BridgeError;
use super::protocol::{
    self, AgentMessage, CLOSE_NORMAL, CLOSE_POLICY, LogLevel, MAX_MESSAGE_BYTES, Playout,
    ProtocolError,
};
use crate::agent::backlog::{Applied, Backlog, Marker};
use crate::agent::connect::{self, AgentSocket};
use crate::agent::log_budget::LogBudget;
use crate::agent::metrics::AgentMetrics;
use crate::agent::wire::{Io, Wire};
use crate::agent::{
    ActionError, AgentAction, AgentAudio, AgentError, AgentEvent, AgentIo, CallId, CallInfo,
    EndReason,
};
use crate::core::audio::MAX_FRAME_SAMPLES;

/// Binary messages queued towards the agent before caller audio waits in the inbound ring.
const AUDIO_HIGH_WATER: usize = 64;
/// Messages queued towards the agent before events wait in their queue.
const QUEUE_CAP: usize = 128;
/// Messages queued towards the agent before the bridge stops reading the agent's socket. Caller
/// audio and events stop at [`QUEUE_CAP`] (plus a held event), so only answers to the agent's
/// requests get here, and at most [`MAX_ACTIONS`] results arrive past it: the queue never
/// holds more than `READ_CAP + MAX_ACTIONS` messages (and then the final `stop`).
const READ_CAP: usize = QUEUE_CAP + 16;
/// Agent audio held beyond the outbound ring before the bridge stops reading the socket.
const BACKLOG: Duration = Duration::from_secs(2);
/// Queued messages that do not move for this long mean the agent stopped reading.
const NOT_READING: Duration = Duration::from_secs(10);
/// Time for `stop` and the close handshake when the call ends (the server waits 2 s).
const STOP_GRACE: Duration = Duration::from_millis(1_500);
/// Time for the close handshake after a protocol violation.
const ABORT_GRACE: Duration = Duration::from_secs(1);
/// Call-control requests in flight at once.
const MAX_ACTIONS: usize = 4;
/// Mark names remembered (marks placed and not yet reached).
const MAX_MARK_NAMES: usize = 512;
/// Agent `log` messages written to the log per call; the rest are counted.
const MAX_AGENT_LOG_LINES: u32 = 200;
/// Log lines per call about the agent's call-control requests (asked for, done, failed,
/// ignored); the rest are counted.
const MAX_ACTION_LOG_LINES: u32 = 20;

/// Runs one call. `Err` ends the call (the server applies `--agent-failure`).
pub(super) async fn run(
    config: Arc<BridgeConfig>,
    call: CallInfo,
    mut io: AgentIo,
) -> Result<(), AgentError> {
    let metrics = io.metrics.clone();
    let url = connect::redacted(config.url());
    let connecting = connect::connect(config.url(), &[], MAX_MESSAGE_BYTES, config.connect_timeout);
    let ws = tokio::select! {
        r = connecting => r,
        () = io.audio.closed() => {
            tracing::info!(call_id = %call.call_id, agent = %url, "call ended while connecting to the agent");
            return Ok(());
        }
    };
    let result = match ws {
        Ok(ws) => {
            metrics.connections.inc();
            tracing::info!(call_id = %call.call_id, agent = %url, "agent connected");
            CallBridge::new(ws, &call, &io).run(&mut io).await
        }
        Err(e) => Err(BridgeError::from(e)),
    };
    result.map_err(|e| {
        metrics.failure(e.label());
        tracing::warn!(call_id = %call.call_id, agent = %url, error = %e, "agent bridge failed");
        AgentError::failed(e)
    })
}

/// A finished call-control request.
struct ActionDone {
    action: AgentAction,
    result: Result<(), ActionError>,
}

/// Mark names by the tag given when the mark arrived, and the session's id once placed.
#[derive(Default)]
struct MarkNames {
    names: VecDeque<(u32, Option<u32>, String)>,
    next_tag: u32,
}

impl MarkNames {
    fn add(&mut self, name_json: String) -> u32 {
        if self.names.len() == MAX_MARK_NAMES {
            self.names.pop_front();
        }
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        self.names.push_back((tag, None, name_json));
        tag
    }

    fn placed(&mut self, tag: u32, id: u32) {
        if let Some(e) = self.names.iter_mut().find(|e| e.0 == tag) {
            e.1 = Some(id);
        }
    }

    fn take(&mut self, id: u32) -> Option<String> {
        let i = self.names.iter().position(|e| e.1 == Some(id))?;
        self.names.remove(i).map(|e| e.2)
    }
}

struct CallBridge {
    /// For the log events: they carry it as a field (the bridge runs without a span, see
    /// `BridgeAgent::start`).
    call_id: CallId,
    wire: Wire,
    backlog: Backlog,
    scratch: [i16; MAX_FRAME_SAMPLES],
    /// Samples per inbound message (one frame at the agent rate).
    frame: usize,
    /// Caller samples read from the inbound ring so far: the agent's stream position.
    read_pos: u64,
    /// An event waiting until the audio up to its stream position is queued.
    held: Option<(AgentEvent, u64)>,
    marks: MarkNames,
    last_playout: Playout,
    metrics: AgentMetrics,
    actions_tx: mpsc::Sender<ActionDone>,
    actions_rx: mpsc::Receiver<ActionDone>,
    actions_in_flight: usize,
    /// The agent's `hangup` is in flight (once one succeeded, `io.call.is_hung_up()` says so).
    hangup_in_flight: bool,
    /// Allowance for the agent's `log` messages.
    agent_logs: LogBudget,
    /// Allowance for lines about call-control requests.
    action_logs: LogBudget,
}

impl CallBridge {
    fn new(ws: AgentSocket, call: &CallInfo, io: &AgentIo) -> Self {
        let mut wire = Wire::new(ws, READ_CAP + MAX_ACTIONS);
        wire.text(protocol::start_message(call, call.forward));
        let rate = io.audio.rate();
        let (actions_tx, actions_rx) = mpsc::channel(MAX_ACTIONS);
        Self {
            call_id: call.call_id.clone(),
            wire,
            backlog: Backlog::new((u128::from(rate.hz()) * BACKLOG.as_millis() / 1_000) as usize),
            scratch: [0; MAX_FRAME_SAMPLES],
            frame: rate.frame_samples().min(MAX_FRAME_SAMPLES),
            read_pos: 0,
            held: None,
            marks: MarkNames::default(),
            last_playout: Playout::default(),
            metrics: io.metrics.clone(),
            actions_tx,
            actions_rx,
            actions_in_flight: 0,
            hangup_in_flight: false,
            agent_logs: LogBudget::new(
                "agent log lines",
                MAX_AGENT_LOG_LINES,
                call.call_id.clone(),
                io.metrics.log_lines_suppressed.clone(),
            ),
            action_logs: LogBudget::new(
                "lines about the agent's call-control requests",
                MAX_ACTION_LOG_LINES,
                call.call_id.clone(),
                io.metrics.log_lines_suppressed.clone(),
            ),
        }
    }

    async fn run(&mut self, io: &mut AgentIo) -> Result<(), BridgeError> {
        let stall = tokio::time::sleep(NOT_READING);
        tokio::pin!(stall);
        loop {
            let marks = &mut self.marks;
            self.backlog.flush(&mut io.audio, |a| {
                if let Applied::MarkPlaced { id, tag } = a {
                    marks.placed(tag, id);
                }
            });
            self.forward(&mut io.audio);
            // An agent whose answers pile up is not read until it takes them (TCP slows it).
            let read = self.backlog.has_room() && self.wire.queued() < READ_CAP;
            let take_events = self.held.is_none() && self.wire.queued() < QUEUE_CAP;
            let stalled = self.wire.stalled_since();
            if let Some(since) = stalled {
                stall.as_mut().reset(since + NOT_READING);
            }
            if io.audio.is_closed() && !take_events && stalled.is_some() {
                // The call is over and the agent is not taking messages: do not wait for it.
                self.wire
                    .abort(CLOSE_NORMAL, "call ended", Duration::ZERO)
                    .await;
                return Ok(());
            }
            tokio::select! {
                biased;
                ev = io.events.recv(), if take_events => match ev {
                    Some(AgentEvent::Ended(reason)) => return self.finish(io, reason).await,
                    None => return self.finish(io, EndReason::SocketClosed).await,
                    Some(ev) => self.on_event(&io.audio, ev),
                },
                res = self.wire.io(read), if read || !self.wire.is_idle() => {
                    self.on_io(io, res).await?;
                }
                () = io.audio.ready(), if !io.audio.is_closed() => {}
                Some(done) = self.actions_rx.recv() => self.on_action_done(done),
                () = &mut stall, if stalled.is_some() => {
                    self.wire.abort(CLOSE_POLICY, "not reading", ABORT_GRACE).await;
                    return Err(BridgeError::NotReading(NOT_READING));
                }
            }
        }
    }

    /// Caller audio from the inbound ring to the socket, and a held event once its audio is out.
    fn forward(&mut self, audio: &mut AgentAudio) {
        if let Some((ev, pos)) = self.held {
            self.forward_audio(audio, pos);
            if self.read_pos < pos && audio.available() > 0 {
                return;
            }
            self.held = None;
            self.send_event(&ev);
        }
        self.forward_audio(audio, u64::MAX);
    }

    fn forward_audio(&mut self, audio: &mut AgentAudio, upto: u64) {
        while self.wire.queued() < AUDIO_HIGH_WATER && self.read_pos < upto {
            let want = (upto - self.read_pos).min(self.frame as u64) as usize;
            let n = audio.read(&mut self.scratch[..want]);
            if n == 0 {
                return;
            }
            self.read_pos += n as u64;
            self.wire.binary_samples(&self.scratch[..n]);
        }
    }

    fn on_event(&mut self, audio: &AgentAudio, ev: AgentEvent) {
        match ev {
            AgentEvent::BargeIn(b) if b.turn == audio.current_turn() => {
                // The session discards the rest of this turn; do not even queue it.
                self.backlog.drop_current_turn();
            }
            AgentEvent::Playout {
                turn,
                heard,
                complete,
            } => {
                self.last_playout = Playout {
                    turn,
                    heard,
                    complete,
                };
            }
            _ => {}
        }
        let pos = match ev {
            AgentEvent::SpeechStarted { stream_pos }
            | AgentEvent::SpeechEnded { stream_pos, .. } => stream_pos,
            _ => 0,
        };
        if self.read_pos < pos {
            self.held = Some((ev, pos));
        } else {
            self.send_event(&ev);
        }
    }

    fn send_event(&mut self, ev: &AgentEvent) {
        let name = match *ev {
            AgentEvent::MarkReached { id } => self.marks.take(id),
            _ => None,
        };
        let mark = name.as_deref().map(|n| (n, self.last_playout));
        let _ = self
            .wire
            .text_with(128 + name.as_ref().map_or(0, String::len), |buf| {
                protocol::write_event(buf, ev, mark).unwrap_or(Ok(()))
            });
    }

    async fn on_io(&mut self, io: &mut AgentIo, res: Io) -> Result<(), BridgeError> {
        match res {
            Io::Progress => Ok(()),
            Io::Message(Message::Binary(b)) => {
                if let Err(e) = protocol::check_binary(&b) {
                    return Err(self.violation(e).await);
                }
                self.backlog.push_le_bytes(&b);
                Ok(())
            }
            Io::Message(Message::Text(t)) => match protocol::parse_text(t.as_str()) {
                Ok(m) => {
                    self.on_message(io, m);
                    Ok(())
                }
                Err(e) => Err(self.violation(e).await),
            },
            // Pings are answered by tungstenite; pongs and raw frames mean nothing here.
            Io::Message(_) => Ok(()),
            Io::Closed(frame) => Err(BridgeError::Disconnected {
                code: frame.as_ref().map(|f| u16::from(f.code)),
                reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
            }),
            Io::Error(tungstenite::Error::Capacity(_)) => Err(self
                .violation(ProtocolError::Oversized {
                    max: MAX_MESSAGE_BYTES,
                })
                .await),
            Io::Error(tungstenite::Error::Utf8(_)) => Err(self
                .violation(ProtocolError::MalformedJson(
                    "text message is not UTF-8".into(),
                ))
                .await),
            Io::Error(e) => Err(BridgeError::Socket(Box::new(e))),
        }
    }

    /// Closes the agent socket with the violation's code and reason.
    async fn violation(&mut self, e: ProtocolError) -> BridgeError {
        let reason = e.to_string();
        self.wire.abort(e.close_code(), &reason, ABORT_GRACE).await;
        BridgeError::Protocol(e)
    }

    fn on_message(&mut self, io: &mut AgentIo, m: AgentMessage) {
        match m {
            AgentMessage::Turn => self.backlog.push_marker(Marker::StartTurn { tag: 0 }),
            AgentMessage::EndTurn => self.backlog.push_marker(Marker::EndTurn),
            AgentMessage::Interrupt => {
                // Everything sent before the interrupt is void, queued here or in the ring.
                self.backlog.clear();
                self.backlog.push_marker(Marker::Interrupt);
            }
            AgentMessage::Mark { name_json } => {
                let tag = self.marks.add(name_json);
                self.backlog.push_marker(Marker::Mark { tag });
            }
            AgentMessage::Hangup => self.act(io, AgentAction::Hangup),
            AgentMessage::Transfer { to } => self.act(io, AgentAction::Transfer { to }),
            AgentMessage::Log { level, message } => {
                // Only lines that would be written count against the allowance.
                macro_rules! agent_log {
                    ($level:expr, $log:ident) => {
                        if tracing::enabled!($level) && self.agent_logs.allow() {
                            tracing::$log!(call_id = %self.call_id, agent_log = %message, "agent");
                        }
                    };
                }
                match level {
                    LogLevel::Debug => agent_log!(tracing::Level::DEBUG, debug),
                    LogLevel::Info => agent_log!(tracing::Level::INFO, info),
                    LogLevel::Warn => agent_log!(tracing::Level::WARN, warn),
                    LogLevel::Error => agent_log!(tracing::Level::ERROR, error),
                }
            }
            AgentMessage::Unknown => {
                self.metrics.messages_unknown.inc();
                tracing::debug!(call_id = %self.call_id, "agent message of an unknown type ignored");
            }
        }
    }

    /// Runs a call-control request on its own task; the result comes back to the loop. A hangup
    /// is final: asked for again while one is in flight or done, it is ignored (the agent hears
    /// the first one's outcome), and a transfer asked for meanwhile fails.
    fn act(&mut self, io: &AgentIo, action: AgentAction) {
        if self.hangup_in_flight || io.call.is_hung_up() {
            if action == AgentAction::Hangup {
                self.metrics.actions_ignored.inc();
                if tracing::enabled!(tracing::Level::DEBUG) && self.action_logs.allow() {
                    tracing::debug!(
                        call_id = %self.call_id,
                        "agent asks for hangup again: ignored, the call is hanging up"
                    );
                }
            } else {
                self.action_failed(&action, "the call is being hung up");
            }
            return;
        }
        if self.actions_in_flight >= MAX_ACTIONS {
            self.action_failed(&action, "too many call-control requests in flight");
            return;
        }
        self.actions_in_flight += 1;
        if action == AgentAction::Hangup {
            self.hangup_in_flight = true;
        }
        if self.action_logs.allow() {
            tracing::info!(call_id = %self.call_id, %action, "agent asks for {action}");
        }
        let call = io.call.clone();
        let tx = self.actions_tx.clone();
        tokio::spawn(async move {
            let result = call.act(action.clone()).await;
            let _ = tx.send(ActionDone { action, result }).await;
        });
    }

    fn on_action_done(&mut self, done: ActionDone) {
        self.actions_in_flight = self.actions_in_flight.saturating_sub(1);
        if done.action == AgentAction::Hangup {
            self.hangup_in_flight = false;
        }
        match done.result {
            Ok(()) => {
                if self.action_logs.allow() {
                    tracing::info!(call_id = %self.call_id, action = %done.action, "agent's {} done", done.action);
                }
            }
            Err(e) => self.action_failed(&done.action, &e.to_string()),
        }
    }

    /// Tells the agent (queued even past [`READ_CAP`]: the socket is not read while the queue
    /// is that long, so this is bounded by what was read before).
    fn action_failed(&mut self, action: &AgentAction, error: &str) {
        self.metrics.actions_failed.inc();
        if self.action_logs.allow() {
            tracing::warn!(call_id = %self.call_id, %action, error, "agent's call-control request failed");
        }
        let name = match action {
            AgentAction::Hangup => "hangup",
            AgentAction::Transfer { .. } => "transfer",
        };
        let _ = self.wire.text_with(128 + error.len(), |buf| {
            protocol::write_action_failed(buf, name, error)
        });
    }

    /// The call is over: the caller's last audio, `stop`, and a normal close.
    async fn finish(&mut self, io: &mut AgentIo, reason: EndReason) -> Result<(), BridgeError> {
        if let Some((ev, pos)) = self.held.take() {
            self.forward_audio(&mut io.audio, pos);
            self.send_event(&ev);
        }
        self.send_event(&AgentEvent::Ended(reason));
        self.wire
            .close(CLOSE_NORMAL, "call ended", STOP_GRACE)
            .await;
        tracing::debug!(call_id = %self.call_id, reason = reason.as_str(), "agent told the call ended");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures_util::SinkExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::agent::CallId;
    use crate::agent::log_budget::Captured;
    use crate::core::{SampleRate, SessionConfig};

    /// An agent that floods `log` messages and requests that fail at once (transfers to a bad
    /// number) and never reads: the bridge's queue towards it stops growing at its bound, the
    /// bridge stops reading it (TCP holds the rest back), and the log holds the allowances.
    #[tokio::test] // current thread: the subscriber below sees every task
    async fn an_agent_that_asks_and_does_not_read_gets_a_bounded_queue_and_log() {
        const LOGS: usize = 1_000;
        const REQUESTS: usize = 100_000;
        let (captured, _guard) = Captured::start();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/agent", listener.local_addr().unwrap());
        let agent = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let line = "x".repeat(1_000);
            for i in 0..LOGS {
                let log = format!(r#"{{"type":"log","level":"warn","message":"{i} {line}"}}"#);
                ws.feed(Message::text(log)).await.unwrap();
            }
            for _ in 0..REQUESTS {
                let transfer = r#"{"type":"transfer","to":"not a number"}"#;
                ws.feed(Message::text(transfer)).await.unwrap();
            }
            ws.flush().await.unwrap();
            // Hold the socket open without reading.
            std::future::pending::<()>().await;
        });
        let ws = connect::connect(&url, &[], MAX_MESSAGE_BYTES, Duration::from_secs(5))
            .await
            .unwrap();

        let rate = SampleRate::Hz16000;
        let metrics = AgentMetrics::default();
        let (_session, io, _events) = AgentIo::for_test(SessionConfig::new(rate, rate), "flood");
        let mut io = io.with_metrics(metrics.clone());
        let id = CallId::parse("flood").unwrap();
        let mut bridge = CallBridge::new(ws, &CallInfo::new(id, rate, rate), &io);

        // Run the bridge until it stops answering (the sockets' buffers are full), well within
        // its not-reading deadline, then look at its queue.
        let settled = async {
            let mut last = (u64::MAX, 0);
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let n = metrics.actions_failed.get();
                last = if n == last.0 { (n, last.1 + 1) } else { (n, 0) };
                if n > 0 && last.1 == 5 {
                    return n;
                }
            }
        };
        let answered = tokio::select! {
            r = bridge.run(&mut io) => panic!("the bridge ended: {:?}", r.err()),
            n = settled => n,
        };
        let queued = bridge.wire.queued();
        println!(
            "{answered} of {REQUESTS} requests answered (most of them in the sockets' buffers), \
             {queued} answers queued"
        );
        assert!(
            queued <= READ_CAP + MAX_ACTIONS,
            "{queued} messages queued towards an agent that does not read"
        );
        assert!(answered < REQUESTS as u64, "the bridge read everything");

        // The log: each allowance in full, one notice each.
        drop(bridge);
        agent.abort();
        let lines = captured.lines();
        let count = |s: &str| lines.iter().filter(|l| l.contains(s)).count();
        assert_eq!(count("agent_log="), MAX_AGENT_LOG_LINES as usize);
        assert_eq!(count("further agent log lines suppressed"), 1);
        let about_requests = count("agent asks for") + count("call-control request failed");
        assert_eq!(about_requests, MAX_ACTION_LOG_LINES as usize);
        assert_eq!(count("further lines about the agent's call-control"), 1);
        assert_eq!(count("suppressed in this call"), 2, "{lines:#?}");
        assert!(lines.len() < 250);
        // No span: every line names the call itself, the notices and totals included.
        Captured::assert_every_line_names(&lines, "flood");
        assert!(
            metrics.log_lines_suppressed.get()
                >= (LOGS as u64 - u64::from(MAX_AGENT_LOG_LINES)) + answered
                    - u64::from(MAX_ACTION_LOG_LINES)
        );
    }
}
