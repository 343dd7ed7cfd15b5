//! The boundary to the AI side: the [`Agent`] trait every agent implements (the built-in
//! [`echo::EchoAgent`], a WebSocket bridge to an agent written in any language, a
//! speech-to-speech adapter), and [`AgentIo`], what one call hands its agent.
//!
//! # Shape
//!
//! An [`Agent`] is a per-call factory that lives as long as the server: it says which sample
//! rate it wants ([`Agent::agent_rate`]) and which caller audio ([`Agent::forward`]), and
//! [`Agent::start`] returns the future that runs one call. The server spawns that future as its
//! own tokio task, next to the call's media task, so a slow agent can never stall the audio path:
//!
//! ```text
//!   media task (owns the Session)                    agent task (runs Agent::start's future)
//!   ─────────────────────────────                    ───────────────────────────────────────
//!   caller audio ─▶ inbound ring (rtrb) ──────────────▶ io.audio.read()
//!                   wake.notify_one()  ───────────────▶ io.audio.ready().await
//!   events ───────▶ bounded mpsc (full: drop + count) ▶ io.events.recv().await
//!   frames out ◀─── outbound ring (rtrb) ◀──────────── io.audio.write() / write_all().await
//!                   flush.notified()   ◀────────────── (pinged by every write and marker)
//!                                                       io.call.hangup() / transfer(to)
//! ```
//!
//! [`AgentIo`] has three public fields so that an agent can `select!` over them without
//! borrow conflicts: [`AgentIo::events`] (facts about the call), [`AgentIo::audio`] (the sample
//! rings and their wake-ups) and [`AgentIo::call`] (call control: hang up, transfer).
//!
//! # Writing an agent
//!
//! The loop of a typical agent waits for *something* (an event, or the media task signalling
//! that audio arrived or room freed up) and then does all the non-blocking work it can:
//!
//! ```no_run
//! use voicegate::agent::{Agent, AgentError, AgentEvent, AgentIo, BoxFuture, CallInfo};
//! use voicegate::core::SampleRate;
//!
//! #[derive(Debug)]
//! struct Silent;
//!
//! impl Agent for Silent {
//!     fn agent_rate(&self, call_rate: SampleRate) -> SampleRate {
//!         call_rate
//!     }
//!     fn start(&self, _call: CallInfo, mut io: AgentIo) -> BoxFuture<'static, Result<(), AgentError>> {
//!         Box::pin(async move {
//!             let mut buf = [0i16; 480];
//!             loop {
//!                 tokio::select! {
//!                     ev = io.events.recv() => match ev {
//!                         Some(AgentEvent::Ended(_)) | None => return Ok(()),
//!                         Some(_) => {}
//!                     },
//!                     () = io.audio.ready() => while io.audio.read(&mut buf) > 0 {},
//!                 }
//!             }
//!         })
//!     }
//! }
//! ```
//!
//! Not real-time as a whole (agents allocate as they like), but the [`AgentAudio`] calls are
//! allocation-free: reading and writing go straight to the lock-free rings.

pub mod backlog;
pub mod bridge;
pub mod connect;
pub mod echo;
pub(crate) mod log_budget;
pub mod metrics;
pub mod openai_realtime;
pub mod signal;
pub mod wire;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::mpsc;

pub use self::signal::Signal;

use self::metrics::AgentMetrics;
use crate::core::dtmf::DtmfDigit;
use crate::core::link::ControlFull;
use crate::core::{AgentLink, BargeIn, Forward, SampleRate, TurnId};

pub use futures_util::future::BoxFuture;

/// A per-call agent factory: one value serves every call of the server.
///
/// Implementations must be cheap to call: [`start`](Agent::start) runs on the media socket's
/// upgrade path, so heavy set-up (connecting to a model) belongs inside the returned future.
pub trait Agent: Send + Sync + fmt::Debug + 'static {
    /// The rate at which this agent reads and writes audio for a call at `call_rate`
    /// (8, 16 or 24 kHz). The session resamples both ways. `--agent-rate` overrides it.
    fn agent_rate(&self, call_rate: SampleRate) -> SampleRate;

    /// Which caller audio reaches the agent: only speech with its pre-roll (the default, what an
    /// STT or the echo agent wants), or every frame (a speech-to-speech model with its own turn
    /// detection).
    fn forward(&self) -> Forward {
        Forward::Speech
    }

    /// Runs one call. The returned future is spawned on its own task and should return when
    /// [`AgentEvent::Ended`] arrives (or [`AgentEvents::recv`] returns `None`). Returning `Ok`
    /// earlier leaves the call up with whatever audio is queued; returning `Err` ends the call.
    fn start(&self, call: CallInfo, io: AgentIo) -> BoxFuture<'static, Result<(), AgentError>>;
}

/// Identifies a call: the `uuid` of the caller's leg from the answer webhook, which also names
/// the media socket's route `/voice-stream/{call_id}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(Arc<str>);

/// Longest call id accepted (a UUID is 36 characters).
pub const MAX_CALL_ID_LEN: usize = 64;

impl CallId {
    /// Parses a call id: 1 to [`MAX_CALL_ID_LEN`] characters of `[0-9A-Za-z_-]` (it goes into
    /// URIs and log lines, so nothing else is let in).
    pub fn parse(s: &str) -> Result<Self, InvalidCallId> {
        let ok = !s.is_empty()
            && s.len() <= MAX_CALL_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(Arc::from(s)))
        } else {
            Err(InvalidCallId { len: s.len() })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallId({})", &*self.0)
    }
}

/// A call id that is empty, too long or has characters outside `[0-9A-Za-z_-]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid call id ({len} bytes; expected 1 to {MAX_CALL_ID_LEN} of [0-9A-Za-z_-])")]
pub struct InvalidCallId {
    /// Length of what was given, bytes.
    pub len: usize,
}

/// What an agent knows about its call when it starts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CallInfo {
    /// The caller leg's uuid.
    pub call_id: CallId,
    /// The conversation (`CON-…`), when the answer webhook was seen.
    pub conversation_uuid: Option<String>,
    /// The caller (E.164 digits without `+`, a SIP URI, or absent).
    pub from: Option<String>,
    /// What was called (our number).
    pub to: Option<String>,
    /// The custom headers Vonage flattened into `websocket:connected` (the NCCO endpoint's
    /// `headers`; voicegate puts `call_uuid`, `from` and `to` there).
    pub headers: Map<String, Value>,
    /// The call's media rate.
    pub call_rate: SampleRate,
    /// The rate of the audio the agent reads and writes.
    pub agent_rate: SampleRate,
    /// Which caller audio the agent receives (the agent's [`Agent::forward`], unless the server
    /// overrides it with `--forward-all`).
    pub forward: Forward,
}

impl CallInfo {
    /// Call info with only the required parts, for tests and tools.
    pub fn new(call_id: CallId, call_rate: SampleRate, agent_rate: SampleRate) -> Self {
        Self {
            call_id,
            conversation_uuid: None,
            from: None,
            to: None,
            headers: Map::new(),
            call_rate,
            agent_rate,
            forward: Forward::Speech,
        }
    }
}

/// A fact about the call, delivered to the agent in order.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum AgentEvent {
    /// The caller started speaking. `stream_pos` is the position, in the agent's inbound sample
    /// stream, of the first sample of this utterance (its pre-roll when only speech is forwarded).
    SpeechStarted {
        /// Inbound stream position of the utterance's first sample.
        stream_pos: u64,
    },
    /// The caller stopped speaking: the end of their turn.
    SpeechEnded {
        /// Utterance length, first to last speech frame.
        duration: Duration,
        /// Inbound stream position just after the utterance's last sample.
        stream_pos: u64,
    },
    /// The caller talked over the agent: playback was cleared and the rest of `turn` will be
    /// discarded until the agent starts a new turn.
    BargeIn(BargeIn),
    /// Two-stage barge-in: the caller may be talking over the agent; playback of `turn` is
    /// paused (nothing discarded). A [`AgentEvent::BargeIn`] or [`AgentEvent::FalseInterruption`]
    /// follows. An agent that streams from a model may hold off generating meanwhile.
    Paused {
        /// The paused turn.
        turn: TurnId,
        /// Audio still queued at Vonage when the pause began: the caller hears this much more.
        silent_in: Duration,
    },
    /// Two-stage barge-in: it was not an interruption (a backchannel, a cough); playback of
    /// `turn` resumed where it paused, after `paused` of silence.
    FalseInterruption {
        /// The resumed turn.
        turn: TurnId,
        /// Silence the caller heard.
        paused: Duration,
    },
    /// A key press.
    Dtmf {
        /// The key.
        digit: DtmfDigit,
        /// How long it was held, when reported.
        duration: Option<Duration>,
    },
    /// Playout truth: the caller has heard `heard` of `turn` (from Vonage's `notify` echo).
    Playout {
        /// The turn.
        turn: TurnId,
        /// Audio of the turn the caller has heard.
        heard: Duration,
        /// Whether that was the whole turn.
        complete: bool,
    },
    /// Playback reached a mark the agent placed with [`AgentAudio::mark`].
    MarkReached {
        /// The mark's id.
        id: u32,
    },
    /// The call is over; nothing more will arrive. Always the last event.
    Ended(EndReason),
}

/// Why a call ended, as the agent is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// Vonage closed the media socket (the caller hung up, or the call was ended elsewhere).
    SocketClosed,
    /// The event webhook reported the call over (`completed`, `failed`, …).
    CallCompleted,
    /// The server is shutting down.
    Shutdown,
    /// The media socket failed (network error, send timeout, protocol violation).
    SocketError,
    /// The agent returned an error.
    AgentFailed,
}

impl EndReason {
    /// A short name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SocketClosed => "socket_closed",
            Self::CallCompleted => "call_completed",
            Self::Shutdown => "shutdown",
            Self::SocketError => "socket_error",
            Self::AgentFailed => "agent_failed",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an agent stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A call-control action failed.
    #[error(transparent)]
    Action(#[from] ActionError),
    /// The agent's own failure (a model connection dropped, a protocol violation, …).
    #[error("agent failed: {0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AgentError {
    /// Wraps any error as [`AgentError::Failed`].
    pub fn failed(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Failed(e.into())
    }
}

/// The call has ended: its media session is gone, audio can no longer be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the call has ended")]
pub struct CallEnded;

// ---------------------------------------------------------------------------------------- io

/// Everything one call hands its agent. The fields are public so they can be borrowed
/// separately (for example inside one `tokio::select!`).
#[derive(Debug)]
#[non_exhaustive]
pub struct AgentIo {
    /// Facts about the call, in order.
    pub events: AgentEvents,
    /// Caller audio in, agent audio out.
    pub audio: AgentAudio,
    /// Call control.
    pub call: CallHandle,
    /// Counters for agents that talk to the network (the server's, registered under
    /// `voicegate_*`; unregistered ones when built with [`AgentIo::new`] alone).
    pub metrics: AgentMetrics,
}

impl AgentIo {
    /// Assembles the agent's side of a call. The media task keeps the other ends: the session
    /// (which owns the other side of `link`), the event sender, and both [`Signal`]s.
    ///
    /// `wake` is pinged by the media task when caller audio was pushed or outbound room freed up
    /// (the server's media loop: when the room grows past a quarter of the ring, so an agent
    /// that filled the ring wakes with 250 ms of room per 1 s of ring, not after every frame),
    /// and once when the call ends; `flush` is pinged by the agent after every write or marker.
    pub fn new(
        link: AgentLink,
        events: mpsc::Receiver<AgentEvent>,
        wake: Arc<Signal>,
        flush: Arc<Signal>,
        call: CallHandle,
    ) -> Self {
        Self {
            events: AgentEvents { rx: events },
            audio: AgentAudio { link, wake, flush },
            call,
            metrics: AgentMetrics::default(),
        }
    }

    /// Counts into `metrics` (the server passes its registered ones).
    pub fn with_metrics(mut self, metrics: AgentMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Unit tests: a session and the agent's side of it for call `id`, with no call control,
    /// and the sender of the agent's events.
    #[cfg(test)]
    pub(crate) fn for_test(
        config: crate::core::SessionConfig,
        id: &str,
    ) -> (crate::core::Session, Self, mpsc::Sender<AgentEvent>) {
        let (session, link) = crate::core::Session::new(config).unwrap();
        let (tx, rx) = mpsc::channel(16);
        let call = CallHandle::new(CallId::parse(id).unwrap(), Arc::new(NoCallControl));
        let io = Self::new(
            link,
            rx,
            Arc::new(Signal::new()),
            Arc::new(Signal::new()),
            call,
        );
        (session, io, tx)
    }
}

/// The agent's event queue. Bounded: when the agent falls behind, the media task drops new
/// events (and counts them) instead of waiting, except [`AgentEvent::Ended`], whose slot is
/// reserved when the call starts.
#[derive(Debug)]
pub struct AgentEvents {
    rx: mpsc::Receiver<AgentEvent>,
}

impl AgentEvents {
    /// The next event; `None` once the call is over and every event was read. Cancel-safe.
    pub async fn recv(&mut self) -> Option<AgentEvent> {
        self.rx.recv().await
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<AgentEvent> {
        self.rx.try_recv().ok()
    }
}

/// The agent's end of the audio rings, with the wake-ups that go with them.
///
/// Reading and writing never block and never allocate. Every write and marker pings the media
/// task so it sends the audio without waiting for its next timer.
#[derive(Debug)]
pub struct AgentAudio {
    link: AgentLink,
    wake: Arc<Signal>,
    flush: Arc<Signal>,
}

impl AgentAudio {
    /// The rate the agent reads and writes.
    pub fn rate(&self) -> SampleRate {
        self.link.agent_rate()
    }

    /// Waits until the media task signals: caller audio arrived, outbound room freed up (a
    /// quarter of the ring is free again), or the call ended. Wake-ups may be spurious; check
    /// with [`read`](Self::read), [`space`](Self::space) or [`is_closed`](Self::is_closed).
    /// Cancel-safe. Takes `&mut self`, so one wait at a time: the wake-up is a lock-free
    /// [`Signal`] for one waiting task.
    pub fn ready(&mut self) -> impl Future<Output = ()> + Send + '_ {
        // Borrows only the signal: the rings are not `Sync`, so a future holding `&self` would
        // not be `Send`.
        let wake = &*self.wake;
        let closed = self.link.is_closed();
        async move {
            if !closed {
                wake.wait().await;
            }
        }
    }

    /// Completes once the call's media session is gone (for example while an agent is still
    /// connecting to its model). Cancel-safe.
    pub async fn closed(&mut self) {
        while !self.is_closed() {
            self.ready().await;
        }
    }

    /// Caller samples waiting to be read.
    pub fn available(&self) -> usize {
        self.link.available()
    }

    /// Reads caller audio into `out`; returns how many samples were read (0 if none).
    pub fn read(&mut self, out: &mut [i16]) -> usize {
        self.link.read(out)
    }

    /// Waits for caller audio and reads it into `out`. Cancel-safe.
    pub async fn read_some(&mut self, out: &mut [i16]) -> Result<usize, CallEnded> {
        loop {
            let n = self.link.read(out);
            if n > 0 || out.is_empty() {
                return Ok(n);
            }
            if self.link.is_closed() {
                return Err(CallEnded);
            }
            self.wake.wait().await;
        }
    }

    /// Room for outbound samples right now.
    pub fn space(&self) -> usize {
        self.link.space()
    }

    /// Writes as much of `samples` as fits (to the current turn, starting one if none is open)
    /// and returns how many were taken; offer the rest again after [`ready`](Self::ready).
    pub fn write(&mut self, samples: &[i16]) -> usize {
        let n = self.link.write(samples);
        if n > 0 {
            self.flush.notify();
        }
        n
    }

    /// Writes all of `samples`, waiting for room as playback drains. Not cancel-safe (a
    /// cancelled call may have written a prefix); inside `select!` use [`write`](Self::write)
    /// and [`ready`](Self::ready).
    pub async fn write_all(&mut self, mut samples: &[i16]) -> Result<(), CallEnded> {
        while !samples.is_empty() {
            if self.link.is_closed() {
                return Err(CallEnded);
            }
            let n = self.write(samples);
            samples = &samples[n..];
            if !samples.is_empty() {
                self.wake.wait().await;
            }
        }
        Ok(())
    }

    /// Starts a new reply; audio of an interrupted older turn that is still queued is dropped.
    pub fn start_turn(&mut self) -> Result<TurnId, ControlFull> {
        let t = self.link.start_turn()?;
        self.flush.notify();
        Ok(t)
    }

    /// The turn audio is being written to.
    pub fn current_turn(&self) -> TurnId {
        self.link.current_turn()
    }

    /// Ends the current turn: its last partial frame is padded with silence and played.
    pub fn end_turn(&mut self) -> Result<(), ControlFull> {
        self.link.end_turn()?;
        self.flush.notify();
        Ok(())
    }

    /// Asks for [`AgentEvent::MarkReached`] once the caller has heard everything written so far.
    pub fn mark(&mut self) -> Result<u32, ControlFull> {
        let id = self.link.mark()?;
        self.flush.notify();
        Ok(id)
    }

    /// The agent's own barge-in: stop playback now and discard everything written so far.
    pub fn interrupt(&mut self) -> Result<(), ControlFull> {
        self.link.interrupt()?;
        self.flush.notify();
        Ok(())
    }

    /// Whether the call's media session is gone.
    pub fn is_closed(&self) -> bool {
        self.link.is_closed()
    }

    /// The raw link, for agents that manage the rings themselves. Call
    /// [`flush`](Self::flush) after writing through it.
    pub fn link(&mut self) -> &mut AgentLink {
        &mut self.link
    }

    /// Tells the media task that audio or markers were written through [`link`](Self::link).
    pub fn flush(&self) {
        self.flush.notify();
    }
}

// ---------------------------------------------------------------------------------------- control

/// Something an agent asks of the call (as opposed to audio).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentAction {
    /// End the call.
    Hangup,
    /// Hand the caller over to a phone number (E.164 digits without `+`), e.g. a human.
    Transfer {
        /// The number to connect the caller to.
        to: String,
    },
}

impl fmt::Display for AgentAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hangup => f.write_str("hangup"),
            Self::Transfer { to } => write!(f, "transfer to {to}"),
        }
    }
}

/// Why a call-control action failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// No Vonage REST client is configured, so calls cannot be controlled.
    #[error(
        "cannot {action}: call control needs the Vonage REST API; start the server with \
         --application-id and --private-key (VONAGE_APPLICATION_ID, VONAGE_PRIVATE_KEY_PATH)"
    )]
    NotConfigured {
        /// The action that was refused.
        action: AgentAction,
    },
    /// The transfer target is not a phone number.
    #[error("invalid transfer target {to:?}: expected 1 to 20 digits, optionally with a leading +")]
    InvalidNumber {
        /// What was given, cut to its first [`MAX_SHOWN_TARGET`] bytes (it goes into log lines
        /// and back to the agent).
        to: String,
    },
    /// The call was hung up (a hangup through this call's handle succeeded): nothing more can
    /// be done to it.
    #[error("cannot {action}: the call has been hung up")]
    HungUp {
        /// The action that was refused.
        action: AgentAction,
    },
    /// The REST call failed.
    #[error("{action} failed: {reason}")]
    Failed {
        /// The action.
        action: AgentAction,
        /// What went wrong.
        reason: String,
    },
}

/// Bytes of an invalid transfer target kept in [`ActionError::InvalidNumber`].
pub const MAX_SHOWN_TARGET: usize = 32;

/// Performs call-control actions for the server (the Vonage REST client implements this).
pub trait CallControl: Send + Sync + fmt::Debug + 'static {
    /// Performs `action` on `call`.
    fn perform<'a>(
        &'a self,
        call: &'a CallId,
        action: AgentAction,
    ) -> BoxFuture<'a, Result<(), ActionError>>;
}

/// The [`CallControl`] used while no REST client is configured: every action fails with
/// [`ActionError::NotConfigured`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCallControl;

impl CallControl for NoCallControl {
    fn perform<'a>(
        &'a self,
        _call: &'a CallId,
        action: AgentAction,
    ) -> BoxFuture<'a, Result<(), ActionError>> {
        Box::pin(async move { Err(ActionError::NotConfigured { action }) })
    }
}

/// One call's handle on call control.
///
/// A hangup is final: once one succeeds through this handle (or a clone of it), every later
/// action fails with [`ActionError::HungUp`] without a request, whatever the agent asks.
#[derive(Debug, Clone)]
pub struct CallHandle {
    call_id: CallId,
    control: Arc<dyn CallControl>,
    hung_up: Arc<AtomicBool>,
}

impl CallHandle {
    /// A handle for `call_id` performing actions through `control`.
    pub fn new(call_id: CallId, control: Arc<dyn CallControl>) -> Self {
        Self {
            call_id,
            control,
            hung_up: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether a hangup through this handle succeeded.
    pub fn is_hung_up(&self) -> bool {
        self.hung_up.load(Ordering::Acquire)
    }

    /// The call.
    pub fn id(&self) -> &CallId {
        &self.call_id
    }

    /// Performs `action`.
    pub async fn act(&self, action: AgentAction) -> Result<(), ActionError> {
        if let AgentAction::Transfer { to } = &action {
            let digits = to.strip_prefix('+').unwrap_or(to);
            if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(ActionError::InvalidNumber {
                    to: wire::truncate(to, MAX_SHOWN_TARGET),
                });
            }
        }
        if self.is_hung_up() {
            return Err(ActionError::HungUp { action });
        }
        let hangup = action == AgentAction::Hangup;
        let result = self.control.perform(&self.call_id, action).await;
        if hangup && result.is_ok() {
            self.hung_up.store(true, Ordering::Release);
        }
        result
    }

    /// Ends the call.
    pub async fn hangup(&self) -> Result<(), ActionError> {
        self.act(AgentAction::Hangup).await
    }

    /// Hands the caller over to the phone number `to`.
    pub async fn transfer(&self, to: impl Into<String>) -> Result<(), ActionError> {
        self.act(AgentAction::Transfer { to: to.into() }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_are_checked() {
        assert_eq!(
            CallId::parse("63f61863-4a51-4f6b-86e1-46edebcf9356")
                .unwrap()
                .as_str()
                .len(),
            36
        );
        assert!(CallId::parse("").is_err());
        assert!(CallId::parse("a/b").is_err());
        assert!(CallId::parse(&"a".repeat(65)).is_err());
    }

    #[tokio::test]
    async fn actions_without_rest_client_fail_clearly() {
        let h = CallHandle::new(CallId::parse("abc").unwrap(), Arc::new(NoCallControl));
        let e = h.hangup().await.unwrap_err();
        assert!(e.to_string().contains("--application-id"), "{e}");
        assert!(matches!(
            h.transfer("not a number").await,
            Err(ActionError::InvalidNumber { .. })
        ));
        let long = "9".repeat(100_000);
        match h.transfer(long).await {
            Err(ActionError::InvalidNumber { to }) => assert_eq!(to.len(), MAX_SHOWN_TARGET),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            h.transfer("+447700900999").await,
            Err(ActionError::NotConfigured { .. })
        ));
    }

    /// A control whose actions succeed unless `fail` is set, counting the requests it gets.
    #[derive(Debug, Default)]
    struct Counting {
        requests: std::sync::atomic::AtomicU32,
        fail: AtomicBool,
    }

    impl CallControl for Counting {
        fn perform<'a>(
            &'a self,
            _call: &'a CallId,
            action: AgentAction,
        ) -> BoxFuture<'a, Result<(), ActionError>> {
            self.requests.fetch_add(1, Ordering::SeqCst);
            let fail = self.fail.load(Ordering::SeqCst);
            Box::pin(async move {
                if fail {
                    Err(ActionError::Failed {
                        action,
                        reason: "test".into(),
                    })
                } else {
                    Ok(())
                }
            })
        }
    }

    #[tokio::test]
    async fn a_successful_hangup_is_final_for_every_clone_of_the_handle() {
        let control = Arc::new(Counting::default());
        let h = CallHandle::new(CallId::parse("abc").unwrap(), control.clone());
        let clone = h.clone();
        // A failed hangup may be retried.
        control.fail.store(true, Ordering::SeqCst);
        assert!(matches!(h.hangup().await, Err(ActionError::Failed { .. })));
        assert!(!h.is_hung_up());
        control.fail.store(false, Ordering::SeqCst);
        h.transfer("+447700900999").await.unwrap();
        assert!(!h.is_hung_up(), "a transfer does not end the handle");
        h.hangup().await.unwrap();
        assert!(clone.is_hung_up());
        assert_eq!(control.requests.load(Ordering::SeqCst), 3);
        // After it: refused without a request, on the clone too.
        let e = clone.transfer("+447700900999").await.unwrap_err();
        assert!(matches!(e, ActionError::HungUp { .. }), "{e}");
        assert!(e.to_string().contains("hung up"), "{e}");
        assert!(matches!(h.hangup().await, Err(ActionError::HungUp { .. })));
        assert_eq!(control.requests.load(Ordering::SeqCst), 3);
    }
}
