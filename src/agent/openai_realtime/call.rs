//! One call's Realtime session: connect, configure, then move caller audio in, the assistant's
//! audio out, and keep the model's view of what was heard true at every barge-in.
//!
//! Not real-time as a whole; caller audio goes out allocation-free (base64 into the arena), and
//! the assistant's audio deltas are parsed and decoded allocation-free (borrowed from the
//! message, into a reused buffer; tests/openai_alloc.rs).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};

use super::schema::{self, REALTIME_RATE_HZ, ServerEvent};
use super::{OpenAiConfig, TurnDetection};
use crate::agent::backlog::{Applied, Backlog, Marker};
use crate::agent::connect::{self, AgentSocket, ConnectError};
use crate::agent::metrics::{AgentMetrics, FailureLabel, OpenAiErrorLabel, RateLimitLabel};
use crate::agent::wire::{Io, Wire, truncate};
use crate::agent::{AgentAudio, AgentError, AgentEvent, AgentIo, CallId};
use crate::core::{BargeIn, TurnId};

/// Samples per `input_audio_buffer.append` at most (200 ms).
const APPEND_MAX: usize = 4_800;
/// Messages queued towards the API before caller audio waits in the inbound ring.
const QUEUE_HIGH: usize = 32;
/// Messages queued before events wait in their queue.
const QUEUE_CAP: usize = 64;
/// Assistant audio held beyond the outbound ring before the adapter stops reading.
const BACKLOG: Duration = Duration::from_secs(2);
/// Queued messages that do not move for this long mean the connection is stuck.
const NOT_READING: Duration = Duration::from_secs(10);
/// Largest server event accepted (audio deltas are base64).
const MAX_EVENT_BYTES: usize = 4 << 20;
/// Assistant items remembered (for truncation).
const MAX_ITEMS: usize = 8;
/// Time for the close handshake when the call ends (the server waits 2 s).
const CLOSE_GRACE: Duration = Duration::from_millis(1_500);

/// Why the Realtime connection ended the call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RealtimeError {
    /// The API could not be reached (or refused the key: the upgrade fails with 401).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The API closed the socket while the call was up.
    #[error("the Realtime API closed the connection (code {code:?}: {reason:?})")]
    Disconnected {
        /// Close code.
        code: Option<u16>,
        /// Close reason.
        reason: String,
    },
    /// Queued messages did not move for this long.
    #[error("the Realtime connection stopped taking messages for {0:?}")]
    NotReading(Duration),
    /// The socket failed.
    #[error("Realtime socket: {0}")]
    Socket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
}

impl RealtimeError {
    fn label(&self) -> FailureLabel {
        match self {
            Self::Connect(ConnectError::Timeout { .. }) => FailureLabel::connect_timeout,
            Self::Connect(_) => FailureLabel::connect_failed,
            Self::Disconnected { .. } => FailureLabel::disconnected,
            Self::NotReading(_) => FailureLabel::not_reading,
            Self::Socket(_) => FailureLabel::socket_error,
        }
    }
}

pub(super) async fn run(
    config: Arc<OpenAiConfig>,
    connect_timeout: Duration,
    call_id: CallId,
    mut io: AgentIo,
) -> Result<(), AgentError> {
    let metrics = io.metrics.clone();
    let result = async {
        let mut bearer =
            HeaderValue::from_str(&format!("Bearer {}", config.api_key.0)).map_err(|_| {
                RealtimeError::Disconnected {
                    code: None,
                    reason: "the API key is not a valid header value".into(),
                }
            })?;
        bearer.set_sensitive(true);
        let headers = [(header::AUTHORIZATION, bearer)];
        let connecting = connect::connect(&config.url, &headers, MAX_EVENT_BYTES, connect_timeout);
        let ws = tokio::select! {
            r = connecting => r?,
            () = io.audio.closed() => return Ok(()),
        };
        metrics.connections.inc();
        tracing::info!(call_id = %call_id, model = %config.model, "OpenAI Realtime connected");
        Realtime::new(ws, config.clone(), call_id.clone(), &io)
            .run(&mut io)
            .await
    }
    .await;
    result.map_err(|e| {
        metrics.failure(e.label());
        tracing::warn!(call_id = %call_id, error = %e, "OpenAI Realtime failed");
        AgentError::failed(e)
    })
}

/// One assistant item with audio: one turn on the phone.
struct Item {
    id: String,
    response_id: String,
    tag: u32,
    turn: Option<TurnId>,
    /// Samples written to the outbound ring.
    written: u64,
    first_write: Option<Instant>,
    ended: bool,
    truncated: bool,
}

/// The last playout report, and when it came.
#[derive(Clone, Copy)]
struct PlayoutSeen {
    turn: TurnId,
    heard: Duration,
    complete: bool,
    at: Instant,
}

struct Realtime {
    /// For the log events: they carry it as a field (the adapter runs without a span, see
    /// `OpenAiRealtimeAgent::start`).
    call_id: CallId,
    wire: Wire,
    backlog: Backlog,
    config: Arc<OpenAiConfig>,
    metrics: AgentMetrics,
    scratch: Box<[i16]>,
    bytes: Box<[u8]>,
    delta: Vec<u8>,
    read_pos: u64,
    /// A caller turn ended at this stream position (turn detection off): commit once the audio
    /// up to it is appended.
    commit_at: Option<u64>,
    items: VecDeque<Item>,
    next_tag: u32,
    active_response: Option<String>,
    cancelled: VecDeque<String>,
    last_playout: Option<PlayoutSeen>,
    /// Two-stage barge-in: playback has been paused since then (nothing plays meanwhile).
    paused_since: Option<Instant>,
}

impl Realtime {
    fn new(ws: AgentSocket, config: Arc<OpenAiConfig>, call_id: CallId, io: &AgentIo) -> Self {
        let mut wire = Wire::new(ws, QUEUE_CAP + 8);
        wire.text(schema::session_update(&config));
        Self {
            call_id,
            wire,
            backlog: Backlog::new(
                (REALTIME_RATE_HZ as u128 * BACKLOG.as_millis() / 1_000) as usize,
            ),
            config,
            metrics: io.metrics.clone(),
            scratch: vec![0; APPEND_MAX].into_boxed_slice(),
            bytes: vec![0; APPEND_MAX * 2].into_boxed_slice(),
            delta: Vec::new(),
            read_pos: 0,
            commit_at: None,
            items: VecDeque::with_capacity(MAX_ITEMS),
            next_tag: 0,
            active_response: None,
            cancelled: VecDeque::with_capacity(MAX_ITEMS),
            last_playout: None,
            paused_since: None,
        }
    }

    async fn run(&mut self, io: &mut AgentIo) -> Result<(), RealtimeError> {
        let stall = tokio::time::sleep(NOT_READING);
        tokio::pin!(stall);
        loop {
            let items = &mut self.items;
            self.backlog.flush(&mut io.audio, |a| match a {
                Applied::TurnStarted { turn, tag } => {
                    if let Some(i) = items.iter_mut().find(|i| i.tag == tag) {
                        i.turn = Some(turn);
                    }
                }
                Applied::Wrote { turn, samples } => {
                    if let Some(i) = items.iter_mut().find(|i| i.turn == Some(turn)) {
                        i.written += samples as u64;
                        i.first_write.get_or_insert_with(Instant::now);
                    }
                }
                Applied::MarkPlaced { .. } => {}
            });
            self.forward(&mut io.audio);
            let read = self.backlog.has_room();
            let take_events = self.commit_at.is_none() && self.wire.queued() < QUEUE_CAP;
            let stalled = self.wire.stalled_since();
            if let Some(since) = stalled {
                stall.as_mut().reset(since + NOT_READING);
            }
            tokio::select! {
                biased;
                ev = io.events.recv(), if take_events => match ev {
                    Some(AgentEvent::Ended(_)) | None => {
                        self.wire.close(1000, "call ended", CLOSE_GRACE).await;
                        return Ok(());
                    }
                    Some(ev) => self.on_event(&io.audio, ev),
                },
                res = self.wire.io(read), if read || !self.wire.is_idle() => match res {
                    Io::Message(Message::Text(t)) => self.on_server(&io.audio, t.as_str()),
                    Io::Message(_) | Io::Progress => {}
                    Io::Closed(frame) => {
                        return Err(RealtimeError::Disconnected {
                            code: frame.as_ref().map(|f| u16::from(f.code)),
                            reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                        });
                    }
                    Io::Error(e) => return Err(RealtimeError::Socket(Box::new(e))),
                },
                () = io.audio.ready(), if !io.audio.is_closed() => {}
                () = &mut stall, if stalled.is_some() => {
                    return Err(RealtimeError::NotReading(NOT_READING));
                }
            }
        }
    }

    /// Caller audio to the input buffer; a pending commit once its audio is appended.
    fn forward(&mut self, audio: &mut AgentAudio) {
        if let Some(pos) = self.commit_at {
            self.append(audio, pos);
            if self.read_pos < pos && audio.available() > 0 {
                return;
            }
            self.commit_at = None;
            if let Some(r) = self.active_response.take() {
                // One response at a time: the new turn replaces an answer still generating.
                self.cancel(r);
            }
            self.wire.text(schema::COMMIT.to_owned());
            self.wire.text(schema::RESPONSE_CREATE.to_owned());
        }
        self.append(audio, u64::MAX);
    }

    fn append(&mut self, audio: &mut AgentAudio, upto: u64) {
        while self.wire.queued() < QUEUE_HIGH && self.read_pos < upto {
            let want = (upto - self.read_pos).min(APPEND_MAX as u64) as usize;
            let n = audio.read(&mut self.scratch[..want]);
            if n == 0 {
                return;
            }
            self.read_pos += n as u64;
            let hint = 64 + n * 8 / 3;
            let _ = self.wire.text_with(hint, |buf| {
                schema::write_append(buf, &self.scratch[..n], &mut self.bytes)
            });
        }
    }

    fn on_event(&mut self, audio: &AgentAudio, ev: AgentEvent) {
        match ev {
            AgentEvent::SpeechEnded { stream_pos, .. }
                if self.config.turn_detection == TurnDetection::Off =>
            {
                self.commit_at = Some(stream_pos);
            }
            AgentEvent::BargeIn(b) => {
                self.interrupt("barge-in", Some(b), audio);
                self.paused_since = None;
            }
            AgentEvent::Paused { silent_in, .. } => {
                // The caller goes on hearing what was queued at Vonage when the pause began.
                self.paused_since
                    .get_or_insert_with(|| Instant::now() + silent_in);
            }
            AgentEvent::FalseInterruption { .. } => {
                // Nothing played while paused: move the playout clock on by the pause.
                if let (Some(since), Some(p)) =
                    (self.paused_since.take(), self.last_playout.as_mut())
                {
                    p.at += Instant::now().saturating_duration_since(since);
                }
            }
            AgentEvent::Playout {
                turn,
                heard,
                complete,
            } => {
                self.last_playout = Some(PlayoutSeen {
                    turn,
                    heard,
                    complete,
                    at: Instant::now(),
                });
            }
            _ => {}
        }
    }

    fn on_server(&mut self, audio: &AgentAudio, text: &str) {
        let ev = match schema::parse(text) {
            Ok(ev) => ev,
            Err(e) => {
                self.metrics.openai_error(OpenAiErrorLabel::other);
                tracing::warn!(call_id = %self.call_id, error = %e, "unreadable Realtime event ignored");
                return;
            }
        };
        match ev {
            ServerEvent::AudioDelta {
                response_id,
                item_id,
                delta,
            } => self.on_audio(&response_id, &item_id, &delta),
            ServerEvent::AudioDone { item_id } => {
                if let Some(i) = self.items.back_mut()
                    && i.id == item_id
                    && !i.ended
                {
                    i.ended = true;
                    self.backlog.push_marker(Marker::EndTurn);
                }
            }
            ServerEvent::ResponseCreated { response } => self.active_response = Some(response.id),
            ServerEvent::ResponseDone { response } => {
                if self.active_response.as_deref() == Some(response.id.as_str()) {
                    self.active_response = None;
                }
                if let Some(i) = self.items.back_mut()
                    && i.response_id == response.id
                    && !i.ended
                {
                    i.ended = true;
                    self.backlog.push_marker(Marker::EndTurn);
                }
                if response.status.as_deref() == Some("failed") {
                    self.metrics.openai_error(OpenAiErrorLabel::response_failed);
                    let details = response
                        .status_details
                        .map(|d| d.to_string())
                        .unwrap_or_default();
                    tracing::warn!(call_id = %self.call_id, response = %response.id, details = %truncate(&details, 300), "Realtime response failed");
                }
            }
            ServerEvent::SpeechStarted { audio_start_ms } => {
                tracing::debug!(call_id = %self.call_id, audio_start_ms, "the model heard the caller start speaking");
                self.interrupt("the model heard the caller", None, audio);
            }
            ServerEvent::Error { error } => {
                let code = error.code.as_deref().unwrap_or("");
                if code == "response_cancel_not_active" {
                    // The model had already stopped (its own turn detection cancels too).
                    tracing::debug!(call_id = %self.call_id, "response.cancel after the response ended");
                    return;
                }
                // Labelled by the error's type (a short fixed list); codes are many.
                let kind = if error.kind.is_empty() {
                    code
                } else {
                    &error.kind
                };
                self.metrics.openai_error(OpenAiErrorLabel::from_type(kind));
                tracing::warn!(call_id = %self.call_id, kind = %error.kind, code, message = %truncate(&error.message, 300), "Realtime API error");
            }
            ServerEvent::RateLimits { rate_limits } => {
                for l in rate_limits {
                    let remaining = l.remaining.unwrap_or(0.0);
                    self.metrics
                        .openai_rate_limit(RateLimitLabel::from_name(&l.name), remaining as i64);
                    if remaining <= 0.0 {
                        tracing::warn!(call_id = %self.call_id, limit = %truncate(&l.name, 32), reset_seconds = l.reset_seconds.unwrap_or(0.0), "Realtime rate limit reached");
                    } else {
                        tracing::debug!(call_id = %self.call_id, limit = %truncate(&l.name, 32), remaining, "Realtime rate limit");
                    }
                }
            }
            _ => {}
        }
    }

    /// Per delta: the ids, borrowed from the message, are compared as they are and copied only
    /// when a new item starts.
    fn on_audio(&mut self, response_id: &str, item_id: &str, delta: &str) {
        if self.cancelled.iter().any(|r| r == response_id)
            || self.items.iter().any(|i| i.id == item_id && i.truncated)
        {
            return; // late audio of an answer the caller interrupted
        }
        if schema::decode_delta(delta, &mut self.delta).is_err()
            || !self.delta.len().is_multiple_of(2)
        {
            self.metrics.openai_error(OpenAiErrorLabel::other);
            tracing::warn!(call_id = %self.call_id, bytes = self.delta.len(), "undecodable audio delta dropped");
            return;
        }
        if self.items.back().is_none_or(|i| i.id != item_id) {
            if self.items.len() == MAX_ITEMS {
                self.items.pop_front();
            }
            let tag = self.next_tag;
            self.next_tag = self.next_tag.wrapping_add(1);
            self.backlog.push_marker(Marker::StartTurn { tag });
            self.items.push_back(Item {
                id: item_id.to_owned(),
                response_id: response_id.to_owned(),
                tag,
                turn: None,
                written: 0,
                first_write: None,
                ended: false,
                truncated: false,
            });
        }
        self.backlog.push_le_bytes(&self.delta);
    }

    /// The caller interrupted: truncate the item that was playing at what they heard, and
    /// cancel the response. `barge` is voicegate's barge-in (playback already stopped); `None`
    /// is the model's speech_started (playback is stopped here).
    fn interrupt(&mut self, why: &'static str, barge: Option<BargeIn>, audio: &AgentAudio) {
        let turn = barge.map_or(audio.current_turn(), |b| b.turn);
        let now = Instant::now();
        let playout = self.last_playout.filter(|p| p.turn == turn);
        let Some(item) = self.items.iter_mut().find(|i| i.turn == Some(turn)) else {
            // Nothing of the answer has reached the phone yet: drop it and stop the model.
            if let Some(r) = self.active_response.take() {
                self.backlog.clear();
                self.cancel(r);
            }
            return;
        };
        if item.truncated || (barge.is_none() && playout.is_some_and(|p| p.complete)) {
            return; // already done, or the caller speaks after the answer finished
        }
        let written = Duration::from_micros(item.written * 1_000_000 / u64::from(REALTIME_RATE_HZ));
        // Playout truth: on voicegate's barge-in, the session's own figure (the last `notify`
        // report plus the time played since, capped at what was sent: a pause before the
        // confirmation is not counted as heard); otherwise the last report plus the time played
        // since (up to a pause), never more than was written.
        let played_until = self.paused_since.map_or(now, |p| p.min(now));
        let heard = match (playout, barge) {
            (_, Some(b)) => b.heard,
            (Some(p), None) => p.heard + played_until.saturating_duration_since(p.at),
            (None, None) => item
                .first_write
                .map_or(Duration::ZERO, |f| now.saturating_duration_since(f)),
        }
        .min(written);
        let still_playing = heard < written || !item.ended || !self.backlog.is_empty();
        if barge.is_none() && !still_playing {
            return;
        }
        item.truncated = true;
        let heard_ms = heard.as_millis() as u64;
        let msg = schema::truncate(&item.id, heard_ms);
        let item_id = truncate(&item.id, 64);
        if barge.is_some() {
            self.backlog.drop_current_turn();
        } else {
            self.backlog.clear();
            self.backlog.push_marker(Marker::Interrupt);
        }
        self.wire.text(msg);
        self.metrics.openai_truncations.inc();
        tracing::info!(call_id = %self.call_id, reason = why, item = %item_id, heard_ms, written_ms = written.as_millis() as u64, "truncated the answer at what the caller heard");
        if let Some(r) = self.active_response.take() {
            self.cancel(r);
        }
    }

    fn cancel(&mut self, response_id: String) {
        self.wire.text(schema::cancel(&response_id));
        self.metrics.openai_cancels.inc();
        if self.cancelled.len() == MAX_ITEMS {
            self.cancelled.pop_front();
        }
        self.cancelled.push_back(response_id);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::SinkExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::agent::log_budget::Captured;
    use crate::agent::openai_realtime::OpenAiArgs;
    use crate::core::{SampleRate, SessionConfig};

    /// The adapter runs without a span, so each of its log lines must name the call: a stand-in
    /// API sends one event of each kind the adapter warns about, then hangs up.
    #[tokio::test] // current thread: the subscriber below sees every task
    async fn every_log_line_names_the_call() {
        let (captured, _guard) = Captured::start();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/v1/realtime", listener.local_addr().unwrap());
        let api = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            for event in [
                "not json",
                r#"{"type":"error","error":{"type":"server_error","code":"x","message":"m"}}"#,
                r#"{"type":"rate_limits.updated","rate_limits":[{"name":"tokens","limit":100,"remaining":0,"reset_seconds":1.5}]}"#,
                r#"{"type":"response.done","response":{"id":"resp_1","status":"failed","status_details":{"why":"test"}}}"#,
                r#"{"type":"response.output_audio.delta","response_id":"resp_2","item_id":"item_2","delta":"!!"}"#,
            ] {
                ws.send(Message::text(event)).await.unwrap();
            }
            ws.close(None).await.unwrap();
            // Read until the adapter has seen the close.
            while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
        });
        let args = OpenAiArgs {
            url,
            api_key: Some("sk-test".into()),
            ..OpenAiArgs::default()
        };
        let config = Arc::new(OpenAiConfig::try_from(args).unwrap());
        let rate = SampleRate::Hz24000;
        let (_session, io, _events) = AgentIo::for_test(SessionConfig::new(rate, rate), "rt-log");
        let id = CallId::parse("rt-log").unwrap();
        let result = run(config, Duration::from_secs(5), id, io).await;
        assert!(result.is_err(), "the API hung up: the call fails");
        api.await.unwrap();

        let lines = captured.lines();
        for what in [
            "OpenAI Realtime connected",
            "unreadable Realtime event ignored",
            "Realtime API error",
            "Realtime rate limit reached",
            "Realtime response failed",
            "undecodable audio delta dropped",
            "OpenAI Realtime failed",
        ] {
            assert!(
                lines.iter().any(|l| l.contains(what)),
                "no {what:?} in {lines:#?}"
            );
        }
        Captured::assert_every_line_names(&lines, "rt-log");
    }
}
