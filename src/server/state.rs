//! [`AppState`]: what every handler shares (configuration, the agent, metrics) and the registry
//! of live calls, keyed by call id.
//!
//! A call enters the registry when its answer webhook is served (so the media socket knows who
//! is calling and at which rate) and gets a socket slot when Vonage opens the media socket
//! ([`AppState::attach_socket`], which also takes one of `--max-calls` permits, and accepts
//! only the media token minted last for that call, once: see `server::auth`). The returned
//! [`SocketGuard`] frees the slot, the permit and the gauge on every exit path of the media task,
//! because it does so in `Drop`. A terminal event webhook ends the call through the socket's end
//! signal ([`AppState::end_call`]).
//!
//! Not real-time: the registry's mutex is taken on webhooks and socket set-up and teardown
//! only, never per frame.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use super::auth::{Auth, MediaClaims, unix_now};
use super::config::ServerConfig;
use super::error::ServerError;
use super::metrics::{Metrics, RejectLabel};
use crate::agent::{Agent, CallControl, CallId, EndReason, NoCallControl};
use crate::core::SampleRate;

/// Answered calls whose socket never came are forgotten after this long.
const PENDING_TTL: Duration = Duration::from_secs(120);
/// How long a finished call is remembered for late events (`completed` after `disconnected`).
const LATE_EVENT_TTL: Duration = Duration::from_secs(30);

/// Shared server state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ServerConfig,
    agent: Arc<dyn Agent>,
    control: Arc<dyn CallControl>,
    metrics: Metrics,
    auth: Auth,
    calls: Mutex<HashMap<CallId, CallEntry>>,
    capacity: Arc<Semaphore>,
    draining: watch::Sender<bool>,
}

/// What the server remembers about one call.
#[derive(Debug, Clone)]
pub struct CallEntry {
    /// The caller.
    pub from: Option<String>,
    /// What was called.
    pub to: Option<String>,
    /// The conversation.
    pub conversation_uuid: Option<String>,
    /// The media rate put in the NCCO.
    pub rate: SampleRate,
    /// The websocket URI put in the NCCO.
    pub ws_uri: String,
    /// The endpoint headers put in the NCCO.
    pub headers: Map<String, Value>,
    /// The `eventUrl` put in the NCCO.
    pub event_url: String,
    /// Times the socket was reconnected after `disconnected`.
    pub reconnects: u32,
    /// The Vonage API host that controls this call (the answer webhook's `region_url`).
    pub region_url: Option<String>,
    answered_at: Instant,
    socket: Option<watch::Sender<Option<EndReason>>>,
    ended: bool,
    closed_at: Option<Instant>,
    /// Nonce of the media token that may still open the socket (consumed on use).
    media_nonce: Option<u64>,
    /// The call's agent failed; `disconnected` gets `--agent-failure`'s answer.
    agent_failed: bool,
}

impl CallEntry {
    /// A new entry for an answered call.
    pub fn new(
        rate: SampleRate,
        ws_uri: String,
        headers: Map<String, Value>,
        event_url: String,
    ) -> Self {
        Self {
            from: None,
            to: None,
            conversation_uuid: None,
            rate,
            ws_uri,
            headers,
            event_url,
            reconnects: 0,
            region_url: None,
            answered_at: Instant::now(),
            socket: None,
            ended: false,
            closed_at: None,
            media_nonce: None,
            agent_failed: false,
        }
    }
}

impl AppState {
    /// State for a server with `config`, serving calls with `agent`, with no call control (no
    /// REST client).
    pub fn new(config: ServerConfig, agent: Arc<dyn Agent>) -> Self {
        Self::with_control(config, agent, Arc::new(NoCallControl))
    }

    /// Like [`new`](Self::new), performing agent actions through `control`.
    pub fn with_control(
        config: ServerConfig,
        agent: Arc<dyn Agent>,
        control: Arc<dyn CallControl>,
    ) -> Self {
        let capacity = Arc::new(Semaphore::new(config.max_calls.min(Semaphore::MAX_PERMITS)));
        let auth = Auth::new(&config);
        Self {
            inner: Arc::new(Inner {
                auth,
                config,
                agent,
                control,
                metrics: Metrics::new(),
                calls: Mutex::new(HashMap::new()),
                capacity,
                draining: watch::Sender::new(false),
            }),
        }
    }

    /// A handle that does not keep the state alive (for parts the state owns, such as call
    /// control, that need to read the registry).
    pub fn downgrade(&self) -> WeakAppState {
        WeakAppState(Arc::downgrade(&self.inner))
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The agent factory.
    pub fn agent(&self) -> &Arc<dyn Agent> {
        &self.inner.agent
    }

    /// Call control for agents.
    pub fn control(&self) -> &Arc<dyn CallControl> {
        &self.inner.control
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Webhook verification, replay protection and media tokens.
    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    /// Mints the media token for a registered call's socket, replacing (invalidating) any
    /// earlier one; `None` for an unknown call.
    pub fn mint_media_token(&self, id: &CallId) -> Option<String> {
        let mut calls = self.calls();
        let entry = calls.get_mut(id)?;
        let (token, nonce) = self.inner.auth.media().mint(id, entry.rate, unix_now());
        entry.media_nonce = Some(nonce);
        Some(token)
    }

    /// Media sockets being served.
    pub fn active_calls(&self) -> usize {
        self.inner.config.max_calls.min(Semaphore::MAX_PERMITS)
            - self.inner.capacity.available_permits()
    }

    /// Whether a new call would be refused for lack of capacity.
    pub fn is_full(&self) -> bool {
        self.inner.capacity.available_permits() == 0
    }

    /// Whether the server is draining for shutdown (no new calls).
    pub fn is_draining(&self) -> bool {
        *self.inner.draining.borrow()
    }

    /// Stops taking calls: answers get the busy message, sockets a 503, `/readyz` a 503.
    pub fn begin_drain(&self) {
        self.inner.draining.send_replace(true);
    }

    fn calls(&self) -> MutexGuard<'_, HashMap<CallId, CallEntry>> {
        // A panic while holding this lock would be a bug in this module; the map is still
        // consistent (every operation is a single insert/remove/update), so keep serving.
        self.inner
            .calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers an answered call. Refuses when draining, or when the registry is full of
    /// calls (pending ones included).
    pub fn register_call(&self, id: CallId, entry: CallEntry) -> Result<(), ServerError> {
        if self.is_draining() {
            return Err(ServerError::ShuttingDown);
        }
        let max = self.inner.config.max_calls;
        let mut calls = self.calls();
        if calls.len() >= max {
            // Over the live limit: forget calls that are over, except for a short while so late
            // events still find them, and answered calls whose socket never came.
            let now = Instant::now();
            calls.retain(|_, e| {
                e.socket.is_some()
                    || match e.closed_at {
                        Some(t) => now.duration_since(t) < LATE_EVENT_TTL,
                        None => !e.ended && now.duration_since(e.answered_at) < PENDING_TTL,
                    }
            });
        }
        if calls.len() >= max.saturating_mul(2).saturating_add(16) {
            // Still full: only live sockets and pending answers count against capacity.
            let now = Instant::now();
            calls.retain(|_, e| {
                e.socket.is_some()
                    || (e.closed_at.is_none()
                        && !e.ended
                        && now.duration_since(e.answered_at) < PENDING_TTL)
            });
            if calls.len() >= max.saturating_mul(2).saturating_add(16) {
                return Err(ServerError::AtCapacity { max });
            }
        }
        match calls.get_mut(&id) {
            // Vonage retried the answer webhook: keep the live socket, refresh the rest.
            Some(old) => {
                let socket = old.socket.take();
                let media_nonce = old.media_nonce.take();
                *old = CallEntry {
                    socket,
                    media_nonce,
                    ..entry
                };
            }
            None => {
                calls.insert(id, entry);
            }
        }
        Ok(())
    }

    /// A copy of what is known about a call.
    pub fn call(&self, id: &CallId) -> Option<CallEntry> {
        self.calls().get(id).cloned()
    }

    /// Claims the media socket slot of the call a verified media token names: one of
    /// `--max-calls` permits. Refused while draining (503), at capacity (503), for a call that
    /// is unknown or over (404), when the call already has a live socket (409), and when the
    /// token is not the call's latest unused one (401). The token is consumed on success.
    pub fn attach_socket(&self, token: &MediaClaims) -> Result<SocketGuard, ServerError> {
        let id = token.call_id.clone();
        let m = self.metrics();
        if self.is_draining() {
            m.reject(RejectLabel::shutting_down);
            return Err(ServerError::ShuttingDown);
        }
        let permit = match self.inner.capacity.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                m.reject(RejectLabel::at_capacity);
                return Err(ServerError::AtCapacity {
                    max: self.inner.config.max_calls,
                });
            }
        };
        let (tx, rx) = watch::channel(None);
        let entry = {
            let mut calls = self.calls();
            let Some(entry) = calls.get_mut(&id).filter(|e| !e.ended) else {
                m.reject(RejectLabel::unknown_call);
                return Err(ServerError::UnknownCall);
            };
            if entry.socket.is_some() {
                m.reject(RejectLabel::duplicate_socket);
                return Err(ServerError::DuplicateSocket);
            }
            if entry.media_nonce != Some(token.nonce) || entry.rate != token.rate {
                m.media_auth_failure("used_token");
                tracing::warn!(call_id = %id, reason = "used_token", "media socket refused");
                return Err(ServerError::Unauthorized("used_token"));
            }
            entry.media_nonce = None;
            entry.agent_failed = false;
            entry.socket = Some(tx);
            entry.ended = false;
            entry.closed_at = None;
            entry.clone()
        };
        m.calls.inc();
        m.active_calls.inc();
        Ok(SocketGuard {
            state: self.clone(),
            id,
            entry,
            end: rx,
            _permit: permit,
        })
    }

    /// Ends a call: marks it over and signals its media socket (if any) with `reason`.
    /// Returns whether a live socket was signalled.
    pub fn end_call(&self, id: &CallId, reason: EndReason) -> bool {
        let mut calls = self.calls();
        let Some(entry) = calls.get_mut(id) else {
            return false;
        };
        // The entry stays (pruned later) so a late `disconnected` knows the call is over.
        entry.ended = true;
        entry
            .socket
            .as_ref()
            .is_some_and(|tx| tx.send(Some(reason)).is_ok())
    }

    /// Whether the call was ended on purpose (terminal status, shutdown), so a `disconnected`
    /// for it needs no fallback.
    pub fn is_ended(&self, id: &CallId) -> bool {
        self.calls().get(id).is_some_and(|e| e.ended)
    }

    /// Remembers that the agent of `id` failed, so the `disconnected` that follows our close gets
    /// `--agent-failure`'s answer rather than `--on-disconnect`'s.
    pub fn note_agent_failure(&self, id: &CallId) {
        if let Some(e) = self.calls().get_mut(id) {
            e.agent_failed = true;
        }
    }

    /// Whether the agent of `id` failed.
    pub fn is_agent_failed(&self, id: &CallId) -> bool {
        self.calls().get(id).is_some_and(|e| e.agent_failed)
    }

    /// Counts one reconnect of `id`; returns the count so far, or `None` for an unknown call.
    pub fn note_reconnect(&self, id: &CallId) -> Option<u32> {
        self.calls().get_mut(id).map(|e| {
            e.reconnects += 1;
            e.reconnects
        })
    }

    /// Signals every live socket to end (after the drain timeout).
    pub fn end_all(&self, reason: EndReason) -> usize {
        let mut n = 0;
        for e in self.calls().values() {
            if let Some(tx) = &e.socket
                && tx.send(Some(reason)).is_ok()
            {
                n += 1;
            }
        }
        n
    }

    fn release_socket(&self, id: &CallId) {
        // The entry stays (without a socket) for late events; `register_call` prunes old ones.
        if let Some(e) = self.calls().get_mut(id) {
            e.socket = None;
            e.closed_at = Some(Instant::now());
        }
    }
}

/// A non-owning [`AppState`] handle, from [`AppState::downgrade`].
#[derive(Debug, Clone)]
pub struct WeakAppState(Weak<Inner>);

impl WeakAppState {
    /// The state, while the server still holds it.
    pub fn upgrade(&self) -> Option<AppState> {
        self.0.upgrade().map(|inner| AppState { inner })
    }
}

/// A claimed media socket slot. Dropping it frees the slot, the `--max-calls` permit and the
/// active-calls gauge.
#[derive(Debug)]
pub struct SocketGuard {
    state: AppState,
    id: CallId,
    entry: CallEntry,
    end: watch::Receiver<Option<EndReason>>,
    _permit: OwnedSemaphorePermit,
}

impl SocketGuard {
    /// The call.
    pub fn id(&self) -> &CallId {
        &self.id
    }

    /// What was known about the call when the socket opened.
    pub fn entry(&self) -> &CallEntry {
        &self.entry
    }

    /// The end signal: changes when the call is ended from outside the media task.
    pub fn end_signal(&mut self) -> &mut watch::Receiver<Option<EndReason>> {
        &mut self.end
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.state.release_socket(&self.id);
        self.state.metrics().active_calls.dec();
    }
}
