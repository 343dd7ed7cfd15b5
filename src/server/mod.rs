//! The bundled server: an axum shell around the core. Vonage webhooks, the media WebSocket
//! (one task per call driving its [`Session`](crate::core::Session)), health and metrics.
//!
//! | route | what |
//! | --- | --- |
//! | `GET\|POST /answer` | answer webhook: returns the NCCO (greeting, then `connect` to our socket) |
//! | `GET\|POST /events` | event webhook: statuses end calls; `disconnected` gets `--on-disconnect` |
//! | `GET\|POST /fallback` | fallback answer URL: handled as an answer or an event |
//! | `GET /voice-stream/{call_id}?token=…` | the media WebSocket (per-call token from the NCCO) |
//! | `GET /healthz`, `GET /readyz` | liveness; readiness (503 when draining, when the shared state is unreachable, or when full) |
//! | `GET /metrics` | Prometheus text, `voicegate_*` |
//!
//! Webhooks are verified when a signature secret is configured and media sockets always need
//! the token the answer webhook minted: see [`auth`] and [`media_token`].
//!
//! Several instances can serve one Vonage application behind a load balancer: the answer
//! webhook keeps nothing (the call travels in the media token), and what instances must agree
//! on (webhook replay cache, one socket per call, call ends) is in the [`shared`] state, in
//! Redis with `--redis-url`.
//!
//! [`app`] builds the router from an [`AppState`] (tests call it directly); [`serve`] runs it on
//! a listener until a shutdown future completes, then drains; [`run`] is `voicegate serve`.
//!
//! Not real-time, except [`media`], whose per-frame path is.

pub mod auth;
pub mod call_control;
pub mod config;
pub mod connections;
pub mod end_signal;
pub mod error;
pub mod fd_limit;
pub mod heap;
pub mod histogram;
pub mod media;
pub mod media_token;
pub mod metrics;
pub mod routes;
pub mod shared;
pub mod state;
pub mod warmup;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use tokio::net::TcpListener;

pub use self::config::{ServeArgs, ServerConfig};
pub use self::error::ServerError;
use self::shared::SharedSetup;
pub use self::state::AppState;
use crate::agent::bridge::{BridgeAgent, BridgeConfig};
use crate::agent::echo::EchoAgent;
use crate::agent::openai_realtime::OpenAiRealtimeAgent;
use crate::agent::{Agent, EndReason, NoCallControl};
use crate::vonage::webhooks::MAX_WEBHOOK_BODY;
use config::{AgentKind, ServerConfigError};

/// The router with every route, over `state`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/answer", get(routes::answer).post(routes::answer))
        .route("/events", get(routes::events).post(routes::events))
        .route("/fallback", get(routes::fallback).post(routes::fallback))
        .route("/voice-stream/{call_id}", get(routes::voice_stream))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        // One layer: webhook bodies are refused beyond 64 KiB before any handler reads them.
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BODY))
        .with_state(state)
}

/// The agent named by the configuration.
pub fn agent_for(config: &ServerConfig) -> Result<Arc<dyn Agent>, ServerError> {
    match &config.agent {
        AgentKind::Echo => Ok(Arc::new(
            EchoAgent::default().with_transfer_to(config.transfer_to.clone()),
        )),
        AgentKind::Bridge(url) => {
            let mut bridge = BridgeConfig::new(url.clone()).map_err(ServerConfigError::from)?;
            bridge.connect_timeout = config.agent_connect_timeout;
            Ok(Arc::new(BridgeAgent::new(bridge)))
        }
        AgentKind::OpenAiRealtime => {
            let openai = config
                .openai
                .clone()
                .ok_or(ServerError::AgentUnavailable("openai-realtime".to_owned()))?;
            Ok(Arc::new(
                OpenAiRealtimeAgent::new(openai).with_connect_timeout(config.agent_connect_timeout),
            ))
        }
    }
}

/// Serves `state` on `listener` until `shutdown` completes; then drains and returns:
///
/// 1. readiness turns false at once (`/readyz` 503, `voicegate_draining` 1), so the load
///    balancer stops sending new calls; everything else is still served (an answer webhook
///    still gets a working NCCO, a socket is still accepted, events still end calls);
/// 2. active calls run to their end, for up to `--drain-timeout-s`;
/// 3. the calls still up then are closed (1000, `shutdown`), their socket claims released in
///    the shared state, and the listener closes;
/// 4. open HTTP connections finish the request in progress, for up to
///    [`connections::SHUTDOWN_GRACE`], and the rest are dropped.
///
/// Connections are served under `--max-connections` and the HTTP deadlines: see
/// [`connections`].
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_state = state.clone();
    let drain = async move {
        shutdown.await;
        tracing::info!(
            active = drain_state.active_calls(),
            "shutting down: no new calls"
        );
        drain_state.begin_drain();
        let deadline = tokio::time::Instant::now() + drain_state.config().drain_timeout;
        while drain_state.active_calls() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let n = drain_state.end_all(EndReason::Shutdown);
        if n > 0 {
            tracing::warn!(calls = n, "drain timeout: ending the remaining calls");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while drain_state.active_calls() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Claims left in the shared state would block a reconnect elsewhere until they expire.
        drain_state.wait_released(Duration::from_secs(2)).await;
        tracing::info!("drained");
        let _ = stop_tx.send(());
    };
    tokio::spawn(drain);
    // Memory freed by ended calls goes back to the OS (glibc keeps it otherwise).
    let trimmer = tokio::spawn(heap::trim_after_calls(state.clone()));
    let limits = state.config().http;
    let metrics = state.metrics().clone();
    connections::serve_http(listener, app(state), limits, metrics, async move {
        let _ = stop_rx.await;
    })
    .await;
    trimmer.abort();
    Ok(())
}

/// `voicegate serve`: binds, prints `listening on http://ADDR`, serves until SIGINT or SIGTERM.
pub async fn run(config: ServerConfig) -> Result<(), ServerError> {
    heap::tune_allocator();
    check_open_files(&config);
    let agent = agent_for(&config)?;
    // Shared DSP tables and code paged in before the first call (and before the RSS baseline).
    warmup::warm_up(&config.session, config.rate, config.agent_rate, |r| {
        agent.agent_rate(r)
    });
    if config.signature_secret.is_none() {
        tracing::warn!(
            "no signature secret: webhooks are NOT verified. Set --signature-secret \
             (VONAGE_SIGNATURE_SECRET) in production"
        );
        eprintln!(
            "WARNING: no signature secret: anyone who can reach this server can post webhooks. \
             Set --signature-secret (VONAGE_SIGNATURE_SECRET) and --require-signed-webhooks."
        );
    } else {
        tracing::info!(
            max_age_s = config.webhook_max_age.as_secs(),
            api_key_pinned = config.api_key.is_some(),
            signed_media_socket = config.signed_media_socket,
            "webhooks must be signed (HS256)"
        );
    }
    let addr = config.listen;
    // Before binding, so a bad key, API URL or Redis URL stops the start-up.
    let shared = SharedSetup::from_config(&config).map_err(config::ServerConfigError::from)?;
    tracing::info!(
        backend = shared.state.backend(),
        instance = %shared.instance,
        "shared state"
    );
    // Bound before the warm-up call: a port in use fails at once, and a webhook or socket that
    // arrives during the warm-up (a restart under traffic, a load test started with the server)
    // waits in the listen backlog for a second or two instead of being refused.
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener.local_addr()?;
    // One call through a throwaway instance, so the code only calls reach is paged in too.
    let replied = warmup::loopback_call(&config).await;
    tracing::debug!(replied, "warm-up call done");
    let state = state_with_call_control(config, agent, shared)?;
    println!("listening on http://{local}");
    print_setup_hint(state.config(), local);
    serve(listener, state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Raises the open-file limit and warns when it still cannot hold `--max-calls` calls and
/// `--max-connections` connections (they would then fail with "too many open files").
fn check_open_files(config: &ServerConfig) {
    let Some((before, after)) = fd_limit::raise_open_files() else {
        return;
    };
    let needed = fd_limit::needed(config.max_calls, config.http.max_connections);
    if after < needed {
        tracing::warn!(
            limit = after,
            needed,
            "the open-file limit is below what --max-calls and --max-connections can hold \
             open: raise the hard limit (`ulimit -Hn`, LimitNOFILE= in systemd) or lower them"
        );
    } else if after > before {
        tracing::debug!(before, after, "raised the open-file limit");
    }
}

/// The server state over `shared`, with call control through the Vonage REST API when
/// `--application-id` and `--private-key` are given (else agent actions fail with a clear "not
/// configured" error).
pub fn state_with_call_control(
    config: ServerConfig,
    agent: Arc<dyn Agent>,
    shared: SharedSetup,
) -> Result<AppState, ServerError> {
    let control =
        call_control::control_from_config(&config).map_err(config::ServerConfigError::from)?;
    Ok(match control {
        Some(control) => {
            tracing::info!(
                api = control.client().base_url(),
                "call control: Vonage REST API"
            );
            let state = AppState::with_shared(config, agent, control.clone(), shared);
            control.bind(&state);
            state
        }
        None => {
            tracing::info!(
                "call control off: agents cannot hang up or transfer (set --application-id and \
                 --private-key)"
            );
            AppState::with_shared(config, agent, Arc::new(NoCallControl), shared)
        }
    })
}

fn print_setup_hint(config: &ServerConfig, local: std::net::SocketAddr) {
    let base = config
        .public_url
        .clone()
        .unwrap_or_else(|| "https://YOUR-TUNNEL-HOST".to_owned());
    let agent = match &config.agent {
        AgentKind::Echo => "echo".to_owned(),
        // The URL's query may hold the agent's token.
        AgentKind::Bridge(url) => format!("bridge to {}", crate::agent::connect::redacted(url)),
        AgentKind::OpenAiRealtime => "openai-realtime".to_owned(),
    };
    println!("agent: {agent}, call rate: {} Hz", config.rate.hz());
    println!(
        "To take calls, expose this server over HTTPS (e.g. `cloudflared tunnel --url http://{local}`)"
    );
    println!("and set your Vonage application's Voice webhooks to:");
    println!("  Answer URL:   GET  {base}/answer");
    println!("  Event URL:    POST {base}/events");
    println!("  Fallback URL: GET  {base}/fallback");
    println!("then call the number linked to the application.");
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
