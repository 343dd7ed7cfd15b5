//! HTTP handlers: the answer, event and fallback webhooks, the media socket upgrade, health,
//! readiness and metrics.
//!
//! Webhooks answer from local state only and at once (Vonage gives them a few seconds and
//! retries): no handler waits on an agent. Authentication is in the extractors
//! ([`VerifiedWebhook`], [`MediaToken`], `server::auth`): a handler only runs for a request
//! that passed it.
//!
//! Not real-time.

use axum::Json;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::auth::{FromWebhook, MediaToken, RawWebhook, VerifiedWebhook};
use super::config::{AgentFailure, OnDisconnect, is_host_byte};
use super::error::ServerError;
use super::media;
use super::media_token::{MEDIA_TOKEN_PARAM, MediaCall, token_in_uri};
use super::metrics::{self, EventLabel};
use super::state::{AppState, Readiness};
use crate::agent::{CallId, EndReason};
use crate::vonage::ncco::{
    Action, Connect, Endpoint, EventType, Ncco, Talk, WebsocketAuthorization, WebsocketEndpoint,
};
use crate::vonage::webhooks::{AnswerWebhook, CallEvent, CallStatus, WebhookEvent};

/// What callers hear when every agent is busy (vonage-protocol.md §3.3).
pub const BUSY_TEXT: &str = "Sorry, all agents are busy. Please call again later.";
/// What callers hear when the media socket failed and `--on-disconnect apology` is set.
pub const APOLOGY_TEXT: &str =
    "Sorry, we are having technical difficulties. Please call again later.";

/// `GET|POST /answer`: the NCCO for a new call (§3).
pub async fn answer(State(st): State<AppState>, hook: VerifiedWebhook<AnswerWebhook>) -> Response {
    answer_response(&st, &hook.headers, &hook.payload)
}

fn answer_response(st: &AppState, headers: &HeaderMap, hook: &AnswerWebhook) -> Response {
    match build_answer(st, headers, hook) {
        Ok(ncco) => Json(ncco).into_response(),
        Err(e) => {
            st.metrics().webhook_errors.inc();
            e.into_response()
        }
    }
}

/// The NCCO websocket endpoint for `call`: `{ws_base}/voice-stream/{id}` with a freshly
/// minted media token that carries the call, and Vonage's signed handshake when configured.
fn media_endpoint(st: &AppState, ws_base: &str, call: &MediaCall) -> WebsocketEndpoint {
    websocket_endpoint(
        ws_base,
        call,
        &st.mint_media_token(call),
        st.auth().is_signed_socket(),
    )
}

/// The NCCO websocket endpoint for `call` with its media `token`: the answer webhook's and
/// `voicegate call --inline-ncco`'s (which mints with the server's `--media-token-key`).
pub(crate) fn websocket_endpoint(
    ws_base: &str,
    call: &MediaCall,
    token: &str,
    signed_socket: bool,
) -> WebsocketEndpoint {
    let uri = format!(
        "{ws_base}/voice-stream/{}?{MEDIA_TOKEN_PARAM}={token}",
        call.call_id
    );
    let mut endpoint = WebsocketEndpoint::new(uri, call.rate.hz());
    endpoint.headers = call.endpoint_headers();
    if signed_socket {
        endpoint = endpoint.authorization(WebsocketAuthorization::Vonage);
    }
    endpoint
}

/// Builds the answer NCCO for `hook`. Keeps nothing: the call's facts travel in the media
/// token, so any instance can take the socket. A full instance answers with the busy message;
/// a draining one still answers normally (the load balancer sends the socket to a ready
/// instance, or this one still accepts it).
fn build_answer(
    st: &AppState,
    headers: &HeaderMap,
    hook: &AnswerWebhook,
) -> Result<Ncco, ServerError> {
    let id = CallId::parse(&hook.uuid)?;
    let cfg = st.config();
    let m = st.metrics();
    if st.is_full() {
        m.reject(metrics::RejectLabel::at_capacity);
        tracing::warn!(call_id = %id, "refusing call: at capacity");
        return Ok(Ncco(vec![Action::talk(BUSY_TEXT)]));
    }
    let base = public_base(st, headers)?;
    let event_url = format!("{base}/events");
    let mut call = MediaCall::new(id.clone(), cfg.rate);
    call.agent = cfg.agent.label();
    call.from = hook.from.clone().or_else(|| hook.from_user.clone());
    call.to = hook.to.clone();
    call.conversation_uuid = Some(hook.conversation_uuid.clone());
    call.region_url = hook.region_url.clone();
    let endpoint = media_endpoint(st, &ws_base(&base), &call);
    let mut actions = Vec::with_capacity(2);
    if let Some(g) = &cfg.greeting {
        let mut talk = Talk::new(g.text.clone());
        talk.language = g.language.clone();
        talk.style = g.style;
        actions.push(talk.into());
    }
    actions.push(connect_action(
        Endpoint::Websocket(endpoint),
        &event_url,
        hook.to.as_deref(),
    ));
    m.answers.inc();
    tracing::info!(call_id = %id, from = hook.from.as_deref().unwrap_or("-"), to = hook.to.as_deref().unwrap_or("-"), draining = st.is_draining(), "answered");
    Ok(Ncco(actions))
}

fn connect_action(endpoint: Endpoint, event_url: &str, from: Option<&str>) -> Action {
    let mut c = Connect::new(endpoint)
        .event_type(EventType::Synchronous)
        .event_url(event_url);
    // Vonage's SDK refuses a connect without `from` (§2.9): the number that was called.
    if let Some(from) = from {
        c = c.from(from);
    }
    c.into()
}

/// The public base URL (`http(s)://host[/prefix]`): configured, or derived from the request.
fn public_base(st: &AppState, headers: &HeaderMap) -> Result<String, ServerError> {
    if let Some(u) = &st.config().public_url {
        return Ok(u.clone());
    }
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.split(',').next())
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let proto = match first("x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") || p.eq_ignore_ascii_case("wss") => "https",
        _ => "http",
    };
    let host = first("x-forwarded-host")
        .or_else(|| first("host"))
        .ok_or(ServerError::NoHost)?;
    if host.len() > 255 || !host.bytes().all(is_host_byte) {
        return Err(ServerError::NoHost);
    }
    Ok(format!("{proto}://{host}"))
}

/// `https://` → `wss://`, `http://` → `ws://`.
pub(crate) fn ws_base(http_base: &str) -> String {
    if let Some(rest) = http_base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = http_base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        http_base.to_owned()
    }
}

/// `GET|POST /events`: call status and other events (§4). Answers at once (at most one
/// shared-state round trip).
pub async fn events(State(st): State<AppState>, hook: VerifiedWebhook<WebhookEvent>) -> Response {
    handle_event(&st, &hook.headers, hook.payload).await
}

async fn handle_event(st: &AppState, headers: &HeaderMap, ev: WebhookEvent) -> Response {
    let m = st.metrics();
    match ev {
        WebhookEvent::Status(ev) => {
            m.webhook_event(EventLabel::from_status(&ev.status));
            status_event(st, headers, &ev).await
        }
        WebhookEvent::Input(_) => {
            m.webhook_event(EventLabel::input);
            StatusCode::OK.into_response()
        }
        WebhookEvent::Record(_) => {
            m.webhook_event(EventLabel::record);
            StatusCode::OK.into_response()
        }
        WebhookEvent::Transfer(_) => {
            m.webhook_event(EventLabel::transfer);
            StatusCode::OK.into_response()
        }
        WebhookEvent::Error(e) => {
            m.webhook_event(EventLabel::error);
            tracing::warn!(reason = %e.reason, "Vonage reported an error");
            StatusCode::OK.into_response()
        }
        // Unknown kinds are counted and acknowledged without content (never a 500).
        _ => {
            m.webhook_event(EventLabel::unknown);
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

/// Our call id for a status event: the websocket leg carries it in its echoed `headers`
/// (`call_uuid`) or in its `to` URI; the caller leg's `uuid` is the call id itself.
fn our_call_id(ev: &CallEvent) -> (Option<CallId>, bool) {
    let from_headers = ev
        .headers
        .as_ref()
        .and_then(|h| h.get("call_uuid"))
        .and_then(Value::as_str);
    let from_uri = ev
        .to
        .as_deref()
        .and_then(|to| to.split_once("/voice-stream/"))
        .map(|(_, rest)| rest.split(['?', '#', '/']).next().unwrap_or(""));
    if let Some(id) = from_headers
        .or(from_uri)
        .and_then(|s| CallId::parse(s).ok())
    {
        return (Some(id), true);
    }
    (ev.call_id().and_then(|s| CallId::parse(s).ok()), false)
}

async fn status_event(st: &AppState, headers: &HeaderMap, ev: &CallEvent) -> Response {
    let (id, ws_leg) = our_call_id(ev);
    let label = id.as_ref().map_or("-", CallId::as_str);
    tracing::info!(
        call_id = label,
        status = ev.status.as_str(),
        ws_leg,
        "call event"
    );
    let Some(id) = id else {
        return StatusCode::OK.into_response();
    };
    if ev.status.is_terminal() {
        // Here, and on the instance that owns the socket (through the shared state).
        st.end_call(&id, EndReason::CallCompleted).await;
        return StatusCode::OK.into_response();
    }
    if ev.status == CallStatus::Disconnected
        && ws_leg
        && let Some(ncco) = disconnected_ncco(st, headers, &id, ev.to.as_deref()).await
    {
        return Json(ncco).into_response();
    }
    StatusCode::OK.into_response()
}

/// The NCCO answering `disconnected` for our socket (§1.8), by `--on-disconnect`. Works on any
/// instance: the call's facts come from the media token in the event's `to` (the websocket
/// URI Vonage connected to) or, failing that, from the shared call record; the reconnect count
/// and "ended on purpose" come from the shared call record (this process's when the shared one
/// cannot be reached).
async fn disconnected_ncco(
    st: &AppState,
    headers: &HeaderMap,
    id: &CallId,
    to: Option<&str>,
) -> Option<Ncco> {
    let record = match st.shared().note_disconnected(id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(call_id = %id, error = %e, "no call record");
            Default::default()
        }
    };
    if record.ended {
        // The call is over on purpose; let it end.
        return None;
    }
    let cfg = st.config();
    let apology = || Some(Ncco(vec![Action::talk(APOLOGY_TEXT)]));
    if st.is_agent_failed(id) {
        // We closed the socket because the agent failed: reconnecting would meet the same agent.
        tracing::info!(call_id = %id, policy = ?cfg.agent_failure, "agent failed; ending the call");
        return match cfg.agent_failure {
            AgentFailure::Apologise => apology(),
            AgentFailure::Hangup => None,
        };
    }
    match cfg.on_disconnect {
        OnDisconnect::Nothing => None,
        OnDisconnect::Apology => apology(),
        OnDisconnect::Reconnect => {
            if record.disconnects > cfg.max_reconnects {
                return apology();
            }
            // The token says which call it opened; a token for another call is not used.
            let media = st.auth().media();
            let call = to
                .and_then(token_in_uri)
                .into_iter()
                .chain(record.token.as_deref())
                .find_map(|t| media.open(t).ok().filter(|c| c.call.call_id == *id));
            let Some(claims) = call else {
                tracing::info!(call_id = %id, "no media token of ours for this call; cannot reconnect");
                return apology();
            };
            let base = match public_base(st, headers) {
                Ok(b) => b,
                Err(_) => return apology(),
            };
            // A new media token: the old one was used by the socket that dropped.
            let endpoint = media_endpoint(st, &ws_base(&base), &claims.call);
            tracing::info!(call_id = %id, attempt = record.disconnects, "reconnecting the media socket");
            Some(Ncco(vec![connect_action(
                Endpoint::Websocket(endpoint),
                &format!("{base}/events"),
                claims.call.to.as_deref(),
            )]))
        }
    }
}

/// `GET|POST /fallback`: Vonage's `fallback_answer_url`, called when the answer or an event
/// webhook failed (§3.4). An event body (it has a `status`) is handled as an event; anything
/// else as an answer.
pub async fn fallback(State(st): State<AppState>, hook: VerifiedWebhook<RawWebhook>) -> Response {
    let RawWebhook { query, body } = &hook.payload;
    let is_event = serde_json::from_slice::<Map<String, Value>>(body).is_ok_and(|o| {
        o.contains_key("status")
            || o.get("original_request")
                .and_then(|r| r.get("type"))
                .and_then(Value::as_str)
                == Some("event")
    });
    tracing::warn!(is_event, "fallback webhook");
    let parsed = if is_event {
        match WebhookEvent::from_webhook(query, body) {
            Ok(ev) => Ok(handle_event(&st, &hook.headers, ev).await),
            Err(e) => Err(e),
        }
    } else {
        AnswerWebhook::from_webhook(query, body).map(|a| answer_response(&st, &hook.headers, &a))
    };
    parsed.unwrap_or_else(|e| {
        st.metrics().webhook_errors.inc();
        e.into_response()
    })
}

/// `GET /voice-stream/{call_id}?token=…`: the media WebSocket, on any instance that shares the
/// media token key. Refused before the upgrade when the id is bad (400), the media token (or
/// Vonage's signed handshake) is missing, forged, expired, for another call or used (401), the
/// call is over (404), the call already has a socket here or elsewhere (409), the server is
/// full or the shared state cannot be reached (503).
pub async fn voice_stream(
    State(st): State<AppState>,
    token: MediaToken,
    ws: WebSocketUpgrade,
) -> Result<Response, ServerError> {
    let guard = st.attach_socket(&token).await?;
    let max = st.config().max_message_bytes;
    Ok(ws
        .max_message_size(max)
        .max_frame_size(max)
        // One call moves ~1 KiB per 20 ms each way: small buffers keep memory per call low
        // (tungstenite's defaults are 128 KiB each). The read buffer holds two 24 kHz frames
        // (960 bytes + header); a larger message (text, up to `max`) grows it once.
        .read_buffer_size(2 * 1024)
        .write_buffer_size(0)
        // A peer that stops reading fills this, then sends fail (and time out): bounded memory.
        .max_write_buffer_size(media::MAX_WRITE_BUFFER)
        .on_failed_upgrade(|e| tracing::warn!(error = %e, "media socket upgrade failed"))
        .on_upgrade(move |socket| media::run(socket, guard, st)))
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 when new calls are welcome; 503 with the reason when draining, when the
/// shared state (Redis) cannot be reached, or when full.
pub async fn readyz(State(st): State<AppState>) -> Response {
    match st.readiness() {
        Readiness::Ready => "ready\n".into_response(),
        r => (StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", r.as_str())).into_response(),
    }
}

/// `GET /metrics`: Prometheus/OpenMetrics text.
pub async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, metrics::CONTENT_TYPE)],
        st.metrics().encode(),
    )
        .into_response()
}
