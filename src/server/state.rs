//! [`AppState`]: what every handler shares (configuration, the agent, metrics, authentication,
//! the shared state) and the registry of the media sockets live **on this instance**.
//!
//! Nothing about a call is kept here before its socket opens: the answer webhook writes the
//! call's facts into the media token (`server::media_token`), so any instance can accept the
//! socket. [`AppState::attach_socket`] takes one of `--max-calls` permits, claims the socket in
//! the shared state (one socket per call across the cluster, each token once: `server::shared`)
//! and registers the live socket with its end signal. The returned [`SocketGuard`] frees the
//! permit, the registry entry and the claim on every exit path of the media task, because it
//! does so in `Drop`.
//!
//! A terminal event webhook ends the call wherever its socket is ([`AppState::end_call`]): the
//! end signal here, and the shared state, which tells the owning instance; ends published by
//! other instances arrive on a channel and end the local socket.
//!
//! Not real-time: the registry's mutex is taken on webhooks and socket set-up and teardown
//! only, never per frame.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::auth::{Auth, MediaToken, unix_now};
use super::config::ServerConfig;
use super::end_signal::EndSignal;
use super::error::ServerError;
use super::media_token::MediaCall;
use super::metrics::{Metrics, RejectLabel};
use super::shared::{InstanceId, SharedSetup, SharedState, StateError};
use crate::agent::{Agent, CallControl, CallId, EndReason, NoCallControl};

/// Whether the instance takes new calls, and if not why (`GET /readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// New calls are welcome.
    Ready,
    /// Shutting down: active calls are finishing.
    Draining,
    /// The shared state (Redis) cannot be reached.
    SharedStateUnavailable,
    /// Every `--max-calls` slot is in use.
    AtCapacity,
}

impl Readiness {
    /// The reason as a short phrase.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::SharedStateUnavailable => "shared state unavailable",
            Self::AtCapacity => "at capacity",
        }
    }
}

/// How long a failed agent is remembered for the `disconnected` webhook that follows.
const AGENT_FAILED_TTL: Duration = Duration::from_secs(120);

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
    shared: Arc<dyn SharedState>,
    instance: InstanceId,
    sockets: Mutex<HashMap<CallId, LiveSocket>>,
    /// Calls whose agent failed on this instance, and when: the `disconnected` that follows our
    /// close gets `--agent-failure`'s answer. Kept [`AGENT_FAILED_TTL`]. (Per instance: a
    /// `disconnected` landing on another instance gets `--on-disconnect`'s answer instead.)
    agent_failed: Mutex<HashMap<CallId, Instant>>,
    capacity: Arc<Semaphore>,
    draining: watch::Sender<bool>,
    /// Socket claims being released in the shared state.
    releasing: AtomicUsize,
}

/// A media socket served by this instance.
#[derive(Debug)]
struct LiveSocket {
    call: MediaCall,
    end: Arc<EndSignal>,
}

impl AppState {
    /// State for a server with `config`, serving calls with `agent`, with no call control (no
    /// REST client) and the in-process shared state.
    pub fn new(config: ServerConfig, agent: Arc<dyn Agent>) -> Self {
        Self::with_control(config, agent, Arc::new(NoCallControl))
    }

    /// Like [`new`](Self::new), performing agent actions through `control`.
    pub fn with_control(
        config: ServerConfig,
        agent: Arc<dyn Agent>,
        control: Arc<dyn CallControl>,
    ) -> Self {
        let shared = SharedSetup::memory(&config);
        Self::with_shared(config, agent, control, shared)
    }

    /// Like [`with_control`](Self::with_control), with `shared` as the shared state. When it
    /// delivers ends from other instances, this spawns the task that applies them (so it needs
    /// a Tokio runtime then).
    pub fn with_shared(
        config: ServerConfig,
        agent: Arc<dyn Agent>,
        control: Arc<dyn CallControl>,
        shared: SharedSetup,
    ) -> Self {
        let capacity = Arc::new(Semaphore::new(config.max_calls.min(Semaphore::MAX_PERMITS)));
        let auth = Auth::new(&config, shared.state.clone());
        let st = Self {
            inner: Arc::new(Inner {
                auth,
                config,
                agent,
                control,
                metrics: shared.metrics,
                shared: shared.state,
                instance: shared.instance,
                sockets: Mutex::new(HashMap::new()),
                agent_failed: Mutex::new(HashMap::new()),
                capacity,
                draining: watch::Sender::new(false),
                releasing: AtomicUsize::new(0),
            }),
        };
        if let Some(mut ends) = shared.ends {
            let weak = st.downgrade();
            tokio::spawn(async move {
                while let Some(id) = ends.recv().await {
                    let Some(st) = weak.upgrade() else { return };
                    if st.end_local(&id, EndReason::CallCompleted) {
                        tracing::info!(call_id = %id, "call ended by an event on another instance");
                    }
                }
            });
        }
        st
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

    /// The shared state.
    pub fn shared(&self) -> &Arc<dyn SharedState> {
        &self.inner.shared
    }

    /// This process's id in the cluster.
    pub fn instance(&self) -> &InstanceId {
        &self.inner.instance
    }

    /// A media token for `call`'s socket, valid for `--media-token-ttl-s` from now.
    pub fn mint_media_token(&self, call: &MediaCall) -> String {
        self.inner.auth.media().mint(call, unix_now()).0
    }

    /// Media sockets being served here.
    pub fn active_calls(&self) -> usize {
        self.inner.config.max_calls.min(Semaphore::MAX_PERMITS)
            - self.inner.capacity.available_permits()
    }

    /// Whether a new call would be refused for lack of capacity.
    pub fn is_full(&self) -> bool {
        self.inner.capacity.available_permits() == 0
    }

    /// Whether the server is draining for shutdown.
    pub fn is_draining(&self) -> bool {
        *self.inner.draining.borrow()
    }

    /// Starts draining: `/readyz` turns 503 at once (the load balancer stops sending new
    /// calls); answer webhooks still get a working NCCO and sockets are still accepted, so a
    /// call caught in the switch-over is not lost; active calls run on.
    pub fn begin_drain(&self) {
        self.inner.draining.send_replace(true);
        self.inner.metrics.draining.set(1);
    }

    /// Whether new calls are welcome here, and if not why: draining first, then the shared
    /// state, then capacity.
    pub fn readiness(&self) -> Readiness {
        if self.is_draining() {
            Readiness::Draining
        } else if !self.inner.shared.is_available() {
            Readiness::SharedStateUnavailable
        } else if self.is_full() {
            Readiness::AtCapacity
        } else {
            Readiness::Ready
        }
    }

    /// Remembers that the agent of `id` failed, so the `disconnected` that follows our close gets
    /// `--agent-failure`'s answer rather than `--on-disconnect`'s.
    pub fn note_agent_failure(&self, id: &CallId) {
        let now = Instant::now();
        let mut m = self.recent_agent_failures(now);
        if m.len() < self.inner.config.max_calls.saturating_mul(4).max(1_024) {
            m.insert(id.clone(), now);
        }
    }

    /// Whether the agent of `id` failed here lately.
    pub fn is_agent_failed(&self, id: &CallId) -> bool {
        self.inner
            .agent_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_some_and(|at| at.elapsed() < AGENT_FAILED_TTL)
    }

    /// Gives back the memory of this instance's call tables once a burst of calls is over: a
    /// `HashMap` keeps the capacity of its peak for good (the socket table at 500 calls is a
    /// ~60 KiB block). Called by the housekeeping in [`super::heap`]; not on any call's path.
    pub fn shrink_idle_tables(&self) {
        shrink_if_sparse(&mut self.sockets());
        shrink_if_sparse(&mut self.recent_agent_failures(Instant::now()));
    }

    /// The agent-failure table, locked, with the entries older than [`AGENT_FAILED_TTL`] gone.
    fn recent_agent_failures(&self, now: Instant) -> MutexGuard<'_, HashMap<CallId, Instant>> {
        let mut m = self
            .inner
            .agent_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        m.retain(|_, at| now.duration_since(*at) < AGENT_FAILED_TTL);
        m
    }

    fn sockets(&self) -> MutexGuard<'_, HashMap<CallId, LiveSocket>> {
        // A panic while holding this lock would be a bug in this module; the map is still
        // consistent (every operation is a single insert/remove/lookup), so keep serving.
        self.inner
            .sockets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What the media token of a call whose socket is live here said.
    pub fn call(&self, id: &CallId) -> Option<MediaCall> {
        self.sockets().get(id).map(|s| s.call.clone())
    }

    /// Opens the media socket of the call a verified media token names: one of `--max-calls`
    /// permits (503 when full), then the claim in the shared state: refused for a call that is
    /// over (404), that has a socket here or on another instance (409), a token already used
    /// (401), or when the shared state cannot be reached (503: fails closed).
    pub async fn attach_socket(&self, token: &MediaToken) -> Result<SocketGuard, ServerError> {
        let call = &token.claims.call;
        let id = call.call_id.clone();
        let m = self.metrics();
        let permit = match self.inner.capacity.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                m.reject(RejectLabel::at_capacity);
                return Err(ServerError::AtCapacity {
                    max: self.inner.config.max_calls,
                });
            }
        };
        if self.sockets().contains_key(&id) {
            m.reject(RejectLabel::duplicate_socket);
            return Err(ServerError::DuplicateSocket);
        }
        match self
            .inner
            .shared
            .claim_socket(&token.claims, &token.token)
            .await
        {
            Ok(()) => {}
            Err(StateError::SocketTaken) => {
                m.reject(RejectLabel::duplicate_socket);
                return Err(ServerError::DuplicateSocket);
            }
            Err(StateError::CallEnded) => {
                m.reject(RejectLabel::unknown_call);
                return Err(ServerError::UnknownCall);
            }
            Err(StateError::TokenUsed | StateError::Replayed) => {
                m.media_auth_failure("used_token");
                tracing::warn!(call_id = %id, reason = "used_token", "media socket refused");
                return Err(ServerError::Unauthorized("used_token"));
            }
            Err(e @ StateError::Unavailable(_)) => {
                m.reject(RejectLabel::shared_state_unavailable);
                tracing::warn!(call_id = %id, error = %e, "media socket refused: shared state unavailable");
                return Err(ServerError::SharedStateUnavailable);
            }
        }
        if !call.agent.is_empty() && call.agent != self.inner.config.agent.label() {
            tracing::warn!(
                call_id = %id,
                answered_with = call.agent,
                serving_with = self.inner.config.agent.label(),
                "the call was answered by an instance with another agent; serving it with ours"
            );
        }
        let end = Arc::new(EndSignal::new());
        self.sockets().insert(
            id.clone(),
            LiveSocket {
                call: call.clone(),
                end: end.clone(),
            },
        );
        m.calls.inc();
        m.active_calls.inc();
        Ok(SocketGuard {
            state: self.clone(),
            call: call.clone(),
            end,
            _permit: permit,
        })
    }

    /// Ends a call because its terminal status arrived: signals its socket if it is here, and
    /// records the end in the shared state, which tells the instance owning the socket. An
    /// unreachable shared state is logged and counted; the local part is done regardless.
    /// Returns whether a socket here was signalled.
    pub async fn end_call(&self, id: &CallId, reason: EndReason) -> bool {
        let local = self.end_local(id, reason);
        if let Err(e) = self.inner.shared.end_call(id).await {
            tracing::warn!(call_id = %id, local, error = %e, "call end not recorded in the shared state");
        }
        local
    }

    /// Signals the socket of `id`, if it is live here, to end with `reason`.
    pub fn end_local(&self, id: &CallId, reason: EndReason) -> bool {
        // A socket is in the registry exactly while its guard lives (the guard's drop removes it).
        self.sockets().get(id).map(|s| s.end.end(reason)).is_some()
    }

    /// Signals every live socket to end (after the drain timeout).
    pub fn end_all(&self, reason: EndReason) -> usize {
        let mut n = 0;
        for s in self.sockets().values() {
            s.end.end(reason);
            n += 1;
        }
        n
    }

    /// Waits until the claims of closed sockets are released in the shared state, at most
    /// `timeout` (a claim not released expires by itself).
    pub async fn wait_released(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.inner.releasing.load(Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn release_socket(&self, id: &CallId) {
        self.sockets().remove(id);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.inner.shared.clone();
        let st = self.clone();
        let id = id.clone();
        self.inner.releasing.fetch_add(1, Ordering::AcqRel);
        rt.spawn(async move {
            if let Err(e) = shared.release_socket(&id).await {
                tracing::warn!(call_id = %id, error = %e, "socket claim not released (it expires by itself)");
            }
            st.inner.releasing.fetch_sub(1, Ordering::AcqRel);
        });
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

/// A claimed media socket. Dropping it frees the registry entry, the `--max-calls` permit, the
/// active-calls gauge and the claim in the shared state.
#[derive(Debug)]
pub struct SocketGuard {
    state: AppState,
    call: MediaCall,
    end: Arc<EndSignal>,
    _permit: OwnedSemaphorePermit,
}

impl SocketGuard {
    /// The call.
    pub fn id(&self) -> &CallId {
        &self.call.call_id
    }

    /// What the media token said about the call.
    pub fn call(&self) -> &MediaCall {
        &self.call
    }

    /// The end signal: set when the call is ended from outside the media task.
    pub fn end_signal(&self) -> &Arc<EndSignal> {
        &self.end
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.state.release_socket(&self.call.call_id);
        self.state.metrics().active_calls.dec();
    }
}

/// Shrinks a map that holds under a quarter of its capacity (to twice its length).
fn shrink_if_sparse<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 4 * map.len().max(16) {
        map.shrink_to(2 * map.len());
    }
}
