//! The Vonage Voice REST client against local stand-ins of the API (axum on 127.0.0.1:0).
//!
//! Each stand-in verifies every request's application JWT with the TEST ONLY public key (RS256,
//! `application_id`, a UUID `jti`, `iat` not in the future, `exp` after now and at most 24 h
//! after `iat`), checks the method, the path and the JSON body against the documented schema
//! (vonage-protocol.md §6.1), and can be told to answer the next requests with `401`, `404`,
//! `429` or `500` and a problem-details body, or to stall. A call exists in one stand-in (its
//! "region") only; the other answers `404`, as Vonage does.
//!
//! Covered: every endpoint (bodies compared with the §10 and X vectors where there is one), error
//! bodies, region routing, the retry policy (what is retried, the bound, `Retry-After`),
//! timeouts, token caching and renewal on a manual clock, and an agent's transfer and hangup
//! (the echo agent's `0` and `#` keys) going from the real server through its call control to
//! the call's region.

// The stand-in's routing returns an early HTTP response as its `Err`: size does not matter here.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use voicegate::agent::echo::EchoAgent;
use voicegate::server::call_control::VonageCallControl;
use voicegate::server::{self, AppState, ServerConfig};
use voicegate::vonage::app_jwt::{AppJwt, Clock, ManualClock, SystemClock};
use voicegate::vonage::client::{
    ClientError, CreateCall, ListCalls, RegionPolicy, RetryPolicy, StreamRequest, TalkRequest,
    VoiceClient,
};
use voicegate::vonage::ncco::{Action, Connect, Endpoint, Ncco, WebsocketEndpoint};
use voicegate::vonage::webhooks::CallStatus;

const APP_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab";
const CALLER_LEG: &str = "63f61863-4a51-4f6b-86e1-46edebcf9356";
// TEST ONLY keys (tests/data/keys/README.md).
const PRIVATE_KEY: &[u8] = include_bytes!("data/keys/TEST-ONLY-app-private.pem");
const PUBLIC_KEY: &[u8] = include_bytes!("data/keys/TEST-ONLY-app-public.pem");
const OTHER_PRIVATE_KEY: &[u8] = include_bytes!("data/keys/TEST-ONLY-other-private.pem");

fn vector(name: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/vectors")
        .join(name);
    let v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    v["content"].clone()
}

// ------------------------------------------------------------------------------ the stand-in

/// How the stand-in answers the next request (before looking at what it asks).
#[derive(Debug, Clone, Copy)]
enum Scripted {
    /// An error status with a problem-details body.
    Status(u16),
    /// `429` with `Retry-After: secs`.
    RateLimited { retry_after_secs: u64 },
    /// Wait this long, then answer normally.
    Stall(Duration),
    /// Wait until the test calls [`StandIn::release`], then answer normally.
    Hold,
}

/// One request the stand-in accepted (its JWT verified).
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    body: Value,
    jti: String,
    iat: u64,
    status: u16,
}

#[derive(Debug)]
struct Mock {
    public_key: DecodingKey,
    clock: Arc<dyn Clock>,
    calls: Mutex<Vec<String>>,
    script: Mutex<VecDeque<Scripted>>,
    seen: Mutex<Vec<Seen>>,
    /// Permits for held requests ([`Scripted::Hold`]).
    release: tokio::sync::Semaphore,
    /// JWT and schema violations, with the reason: must stay empty in good-path tests.
    violations: Mutex<Vec<String>>,
}

struct StandIn {
    base: String,
    mock: Arc<Mock>,
}

impl StandIn {
    async fn start(clock: Arc<dyn Clock>) -> Self {
        let mock = Arc::new(Mock {
            public_key: DecodingKey::from_rsa_pem(PUBLIC_KEY).unwrap(),
            clock,
            calls: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            seen: Mutex::new(Vec::new()),
            release: tokio::sync::Semaphore::new(0),
            violations: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(mock.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            base: format!("http://{addr}"),
            mock,
        }
    }

    fn add_call(&self, uuid: &str) {
        self.mock.calls.lock().unwrap().push(uuid.to_owned());
    }

    fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.mock.script.lock().unwrap().extend(answers);
    }

    /// Lets one held request be answered.
    fn release(&self) {
        self.mock.release.add_permits(1);
    }

    fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.mock.seen.lock().unwrap())
    }

    fn assert_clean(&self) {
        let v = self.mock.violations.lock().unwrap();
        assert!(v.is_empty(), "stand-in saw violations: {v:#?}");
    }
}

fn problem(status: u16, instance: &str) -> Response {
    let body = match status {
        401 => vector("32-problem-401.json"),
        429 => vector("x12-problem-429.json"),
        404 => json!({
            "type": "https://developer.nexmo.com/api-errors#not-found", "title": "Not Found",
            "detail": "Call not found or already completed", "instance": instance,
        }),
        400 => json!({
            "type": "https://developer.nexmo.com/api-errors#bad-request", "title": "Bad Request",
            "detail": "The request failed due to validation errors", "instance": instance,
        }),
        // Vonage's 500 bodies may carry only type, title and instance (§6.3).
        _ => json!({
            "type": "https://developer.nexmo.com/api-errors#internal-error",
            "title": "Internal Server Error", "instance": instance,
        }),
    };
    let status = StatusCode::from_u16(status).unwrap();
    (
        status,
        [("content-type", "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

fn violation(m: &Mock, what: String) -> Response {
    m.violations.lock().unwrap().push(what.clone());
    let mut r = problem(400, "violation");
    *r.body_mut() = json!({"title": "Bad Request", "detail": what})
        .to_string()
        .into();
    r
}

/// The claims the stand-in checks: returns (jti, iat).
fn verify_jwt(m: &Mock, headers: &HeaderMap) -> Result<(String, u64), String> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Authorization header")?;
    let token = auth.strip_prefix("Bearer ").ok_or("not a Bearer token")?;
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    if header.alg != Algorithm::RS256 || header.typ.as_deref() != Some("JWT") {
        return Err(format!("header {header:?}"));
    }
    let mut v = Validation::new(Algorithm::RS256);
    v.validate_exp = false; // checked below against the stand-in's clock
    v.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(token, &m.public_key, &v)
        .map_err(|e| format!("signature: {e}"))?
        .claims;
    let now = m.clock.now_unix();
    let obj = claims.as_object().ok_or("claims are not an object")?;
    for k in obj.keys() {
        if !["application_id", "iat", "jti", "exp", "nbf"].contains(&k.as_str()) {
            return Err(format!("unexpected claim {k}"));
        }
    }
    if claims["application_id"] != APP_ID {
        return Err("application_id".into());
    }
    let iat = claims["iat"].as_u64().ok_or("iat")?;
    let exp = claims["exp"].as_u64().ok_or("exp")?;
    let jti = claims["jti"].as_str().ok_or("jti")?;
    uuid::Uuid::parse_str(jti).map_err(|_| "jti is not a UUID")?;
    if iat > now {
        return Err(format!("iat {iat} is in the future (now {now})"));
    }
    if exp <= now {
        return Err(format!("expired: exp {exp} <= now {now}"));
    }
    if !(30..=86_400).contains(&(exp - iat)) {
        return Err(format!("lifetime {} s", exp - iat));
    }
    Ok((jti.to_owned(), iat))
}

async fn handle(
    State(m): State<Arc<Mock>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (jti, iat) = match verify_jwt(&m, &headers) {
        Ok(c) => c,
        Err(why) => {
            m.violations.lock().unwrap().push(format!("jwt: {why}"));
            return problem(401, "a813c536-43f6-4568-acbf-f36ef2db955a");
        }
    };
    if headers.get("accept").and_then(|v| v.to_str().ok()) != Some("application/json") {
        return violation(&m, "Accept is not application/json".into());
    }
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
            return violation(&m, "Content-Type is not application/json".into());
        }
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return violation(&m, format!("body is not JSON: {e}")),
        }
    };
    let query: Vec<(String, String)> = reqwest::Url::parse(&format!("http://x{uri}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let path = uri.path().to_owned();
    let scripted = m.script.lock().unwrap().pop_front();
    let response = match scripted {
        Some(Scripted::Status(s)) => problem(s, "bf0ca0bf927b3b52e3cb03217e1a1ddf"),
        Some(Scripted::RateLimited { retry_after_secs }) => {
            let mut r = problem(429, "bf0ca0bf927b3b52e3cb03217e1a1ddf");
            r.headers_mut()
                .insert("retry-after", retry_after_secs.to_string().parse().unwrap());
            r
        }
        Some(Scripted::Stall(d)) => {
            tokio::time::sleep(d).await;
            route(&m, &method, &path, &query, &body)
        }
        Some(Scripted::Hold) => {
            m.release.acquire().await.unwrap().forget();
            route(&m, &method, &path, &query, &body)
        }
        None => route(&m, &method, &path, &query, &body),
    };
    m.seen.lock().unwrap().push(Seen {
        method,
        path,
        query,
        body,
        jti,
        iat,
        status: response.status().as_u16(),
    });
    response
}

fn route(
    m: &Mock,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    body: &Value,
) -> Response {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let known = |uuid: &str| m.calls.lock().unwrap().iter().any(|c| c == uuid);
    let check =
        |r: Result<(), String>| r.map_err(|e| violation(m, format!("{method} {path}: {e}")));
    let no_body = || {
        if body.is_null() {
            Ok(())
        } else {
            Err("unexpected body".to_owned())
        }
    };
    let result: Result<Response, Response> = (|| match (method.as_str(), segs.as_slice()) {
        ("POST", ["v1", "calls"]) => {
            check(schema_create(body))?;
            let uuid = uuid::Uuid::new_v4().to_string();
            m.calls.lock().unwrap().push(uuid.clone());
            Ok((
                StatusCode::CREATED,
                axum::Json(
                    json!({"uuid": uuid, "status": "started", "direction": "outbound",
                    "conversation_uuid": format!("CON-{uuid}")}),
                ),
            )
                .into_response())
        }
        ("GET", ["v1", "calls"]) => {
            check(no_body().and_then(|()| schema_list(query)))?;
            let get = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
            let size: usize = get("page_size").map_or(10, |s| s.parse().unwrap());
            let index: usize = get("record_index").map_or(0, |s| s.parse().unwrap());
            let calls = m.calls.lock().unwrap().clone();
            let page: Vec<Value> = calls
                .iter()
                .skip(index)
                .take(size)
                .map(|u| record(u))
                .collect();
            let mut links = json!({"self": {"href": format!("/v1/calls?page_size={size}&record_index={index}&order=asc")}});
            if index + size < calls.len() {
                links["next"] = json!({"href": format!("/v1/calls?page_size={size}&record_index={}&order=asc", index + size)});
            }
            Ok(axum::Json(
                json!({"count": calls.len(), "page_size": size, "record_index": index,
                "_links": links, "_embedded": {"calls": page}}),
            )
            .into_response())
        }
        ("GET", ["v1", "calls", uuid]) => {
            check(no_body())?;
            if !known(uuid) {
                return Ok(problem(404, uuid));
            }
            Ok(axum::Json(record(uuid)).into_response())
        }
        ("PUT", ["v1", "calls", uuid]) => {
            check(schema_update(body))?;
            if !known(uuid) {
                return Ok(problem(404, uuid));
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (m2 @ ("PUT" | "DELETE"), ["v1", "calls", uuid, what @ ("talk" | "stream" | "dtmf")]) => {
            let put = m2 == "PUT";
            check(match (put, *what) {
                (true, "talk") => schema_talk(body),
                (true, "stream") => schema_stream(body),
                (true, _) => schema_dtmf(body),
                (false, "dtmf") => Err("DELETE dtmf is not an endpoint".into()),
                (false, _) => no_body(),
            })?;
            if !known(uuid) {
                return Ok(problem(404, uuid));
            }
            let message = match (*what, put) {
                ("talk", true) => "Talk started",
                ("talk", false) => "Talk stopped",
                ("stream", true) => "Stream started",
                ("stream", false) => "Stream stopped",
                _ => "DTMF sent",
            };
            Ok(axum::Json(json!({"message": message, "uuid": uuid})).into_response())
        }
        _ => Err(violation(m, format!("no such endpoint: {method} {path}"))),
    })();
    result.unwrap_or_else(|r| r)
}

/// A call record shaped like §6.1's example.
fn record(uuid: &str) -> Value {
    json!({
        "_links": {"self": {"href": format!("/v1/calls/{uuid}")}},
        "uuid": uuid, "conversation_uuid": "CON-f972836a-550f-45fa-956c-12a2ab5b7d22",
        "to": {"type": "phone", "number": "447700900000"},
        "from": {"type": "phone", "number": "447700900123"},
        "status": "completed", "direction": "inbound",
        "rate": "0.00450000", "price": "0.00615000", "duration": "82",
        "start_time": "2025-03-14T10:15:31.000Z", "end_time": "2025-03-14T10:16:53.000Z",
        "network": "23420"
    })
}

// ------------------------------------------------------------------ §6.1 schema checks

type Check = Result<(), String>;

fn only_keys(v: &Value, allowed: &[&str]) -> Check {
    let obj = v.as_object().ok_or("body is not an object")?;
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("unknown key {k}")),
        None => Ok(()),
    }
}

fn is_digits(s: &Value, min: usize, max: usize) -> bool {
    s.as_str()
        .is_some_and(|s| (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
}

fn is_url_array(v: &Value) -> bool {
    v.as_array().is_some_and(|a| {
        a.len() == 1
            && a[0]
                .as_str()
                .is_some_and(|u| u.starts_with("https://") || u.starts_with("http://"))
    })
}

fn is_level(v: Option<&Value>) -> bool {
    v.is_none_or(|l| l.as_f64().is_some_and(|l| (-1.0..=1.0).contains(&l)))
}

fn schema_endpoint(e: &Value) -> Check {
    match e["type"].as_str() {
        Some("phone") => {
            only_keys(e, &["type", "number", "dtmfAnswer"])?;
            is_digits(&e["number"], 7, 15)
                .then_some(())
                .ok_or("number must match \\d{7,15}".into())
        }
        Some("sip") => e["uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("sip:"))
            .then_some(())
            .ok_or("sip uri".into()),
        Some("websocket") => {
            only_keys(e, &["type", "uri", "content-type", "headers"])?;
            let uri_ok = e["uri"]
                .as_str()
                .is_some_and(|u| u.starts_with("wss://") || u.starts_with("ws://"));
            let ct_ok = [
                "audio/l16;rate=8000",
                "audio/l16;rate=16000",
                "audio/l16;rate=24000",
            ]
            .contains(&e["content-type"].as_str().unwrap_or(""));
            (uri_ok && ct_ok)
                .then_some(())
                .ok_or("websocket endpoint".into())
        }
        Some("app") => e["user"].is_string().then_some(()).ok_or("app user".into()),
        Some("vbc") => e["extension"]
            .is_string()
            .then_some(())
            .ok_or("vbc extension".into()),
        other => Err(format!("endpoint type {other:?}")),
    }
}

fn schema_ncco(n: &Value) -> Check {
    let actions = n.as_array().ok_or("ncco is not an array")?;
    if actions.is_empty() || !actions.iter().all(|a| a["action"].is_string()) {
        return Err("ncco actions".into());
    }
    Ok(())
}

fn schema_create(b: &Value) -> Check {
    only_keys(
        b,
        &[
            "to",
            "from",
            "random_from_number",
            "ncco",
            "answer_url",
            "answer_method",
            "event_url",
            "event_method",
            "machine_detection",
            "advanced_machine_detection",
            "length_timer",
            "ringing_timer",
        ],
    )?;
    let to = b["to"].as_array().ok_or("to is not an array")?;
    if to.len() != 1 {
        return Err("to must hold one endpoint".into());
    }
    schema_endpoint(&to[0])?;
    match (b.get("from"), b.get("random_from_number")) {
        (Some(f), None) => {
            only_keys(f, &["type", "number"])?;
            if f["type"] != "phone" || !is_digits(&f["number"], 7, 15) {
                return Err("from".into());
            }
        }
        (None, Some(Value::Bool(true))) => {}
        _ => return Err("exactly one of from / random_from_number".into()),
    }
    match (b.get("ncco"), b.get("answer_url")) {
        (Some(n), None) => {
            schema_ncco(n)?;
            if b.get("answer_method").is_some() {
                return Err("answer_method without answer_url".into());
            }
        }
        (None, Some(u)) if is_url_array(u) => {}
        _ => return Err("exactly one of ncco / answer_url (an array of one URL)".into()),
    }
    for (k, ok) in [
        ("event_url", b.get("event_url").is_none_or(is_url_array)),
        (
            "answer_method",
            b.get("answer_method")
                .is_none_or(|m| m == "GET" || m == "POST"),
        ),
        (
            "event_method",
            b.get("event_method")
                .is_none_or(|m| m == "GET" || m == "POST"),
        ),
        (
            "machine_detection",
            b.get("machine_detection")
                .is_none_or(|m| m == "continue" || m == "hangup"),
        ),
        (
            "length_timer",
            b.get("length_timer")
                .is_none_or(|t| t.as_u64().is_some_and(|t| t >= 1)),
        ),
        (
            "ringing_timer",
            b.get("ringing_timer")
                .is_none_or(|t| t.as_u64().is_some_and(|t| (1..=120).contains(&t))),
        ),
    ] {
        if !ok {
            return Err(format!("{k} out of schema"));
        }
    }
    Ok(())
}

fn schema_update(b: &Value) -> Check {
    match b["action"].as_str() {
        Some("hangup" | "mute" | "unmute" | "earmuff" | "unearmuff") => only_keys(b, &["action"]),
        Some("transfer") => {
            only_keys(b, &["action", "destination"])?;
            let d = &b["destination"];
            if d["type"] != "ncco" {
                return Err("destination.type must be ncco".into());
            }
            match (d.get("ncco"), d.get("url")) {
                (Some(n), None) => schema_ncco(n),
                (None, Some(u)) if is_url_array(u) => Ok(()),
                _ => Err("exactly one of destination.ncco / destination.url".into()),
            }
        }
        other => Err(format!("action {other:?}")),
    }
}

fn schema_talk(b: &Value) -> Check {
    only_keys(
        b,
        &["text", "language", "style", "premium", "loop", "level"],
    )?;
    let ok = b["text"].as_str().is_some_and(|t| !t.is_empty())
        && b.get("language").is_none_or(Value::is_string)
        && b.get("style").is_none_or(|s| s.as_u64().is_some())
        && b.get("premium").is_none_or(Value::is_boolean)
        && b.get("loop").is_none_or(|s| s.as_u64().is_some())
        && is_level(b.get("level"));
    ok.then_some(()).ok_or("talk body".into())
}

fn schema_stream(b: &Value) -> Check {
    only_keys(b, &["stream_url", "loop", "level"])?;
    let ok = is_url_array(&b["stream_url"])
        && b.get("loop").is_none_or(|s| s.as_u64().is_some())
        && is_level(b.get("level"));
    ok.then_some(()).ok_or("stream body".into())
}

fn schema_dtmf(b: &Value) -> Check {
    only_keys(b, &["digits"])?;
    b["digits"]
        .as_str()
        .is_some_and(|d| {
            !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit() || b"*#p".contains(&c))
        })
        .then_some(())
        .ok_or("digits".into())
}

fn schema_list(q: &[(String, String)]) -> Check {
    for (k, v) in q {
        let ok = match k.as_str() {
            "status" => [
                "started",
                "ringing",
                "answered",
                "machine",
                "completed",
                "busy",
                "cancelled",
                "failed",
                "rejected",
                "timeout",
                "unanswered",
            ]
            .contains(&v.as_str()),
            "page_size" => v.parse::<u32>().is_ok_and(|n| (1..=100).contains(&n)),
            "record_index" => v.parse::<u32>().is_ok(),
            "order" => v == "asc" || v == "desc",
            "date_start" | "date_end" => v.ends_with('Z') && v.contains('T'),
            "conversation_uuid" => v.starts_with("CON-"),
            _ => false,
        };
        if !ok {
            return Err(format!("query {k}={v}"));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------ helpers

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(2),
    }
}

fn jwt_with(clock: Arc<dyn Clock>) -> Arc<AppJwt> {
    Arc::new(
        AppJwt::from_pem(APP_ID, PRIVATE_KEY)
            .unwrap()
            .with_clock(clock),
    )
}

fn client_at(base: &str, jwt: Arc<AppJwt>) -> VoiceClient {
    VoiceClient::builder(jwt)
        .api_url(base)
        .retry(fast_retries())
        .timeout(Duration::from_secs(5))
        .region_policy(RegionPolicy::Any)
        .build()
        .unwrap()
}

async fn setup() -> (StandIn, VoiceClient) {
    let s = StandIn::start(Arc::new(SystemClock)).await;
    s.add_call(CALLER_LEG);
    let c = client_at(&s.base, jwt_with(Arc::new(SystemClock)));
    (s, c)
}

fn api_status(e: &ClientError) -> (u16, u32) {
    match e {
        ClientError::Api {
            status, attempts, ..
        } => (*status, *attempts),
        other => panic!("expected an API error, got {other:?}"),
    }
}

// ------------------------------------------------------------------------------ tests

#[tokio::test]
async fn every_endpoint_sends_the_documented_request() {
    let (s, c) = setup().await;

    // PUT /v1/calls/{uuid}: every action; bodies as in vectors X8, §10.29, X7.
    c.hangup(CALLER_LEG).await.unwrap();
    c.mute(CALLER_LEG).await.unwrap();
    c.unmute(CALLER_LEG).await.unwrap();
    c.earmuff(CALLER_LEG).await.unwrap();
    c.unearmuff(CALLER_LEG).await.unwrap();
    let v29 = vector("29-rest-transfer.json");
    let ncco: Ncco = serde_json::from_value(v29["destination"]["ncco"].clone()).unwrap();
    c.transfer_ncco(CALLER_LEG, ncco).await.unwrap();
    c.transfer_url(CALLER_LEG, "https://gateway.example.com/ncco/handoff.json")
        .await
        .unwrap();
    let seen = s.take_seen();
    let put = format!("/v1/calls/{CALLER_LEG}");
    assert!(
        seen.iter()
            .all(|r| r.method == Method::PUT && r.path == put && r.status == 204)
    );
    let actions: Vec<&str> = seen
        .iter()
        .map(|r| r.body["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "hangup",
            "mute",
            "unmute",
            "earmuff",
            "unearmuff",
            "transfer",
            "transfer"
        ]
    );
    assert_eq!(seen[0].body, vector("x08-rest-hangup.json"));
    assert_eq!(seen[5].body, v29);
    assert_eq!(seen[6].body, vector("x07-rest-transfer-url.json"));

    // talk, stream, DTMF (vectors X10, X11).
    let x10 = vector("x10-rest-talk.json");
    let mut talk = TalkRequest::new("Your call is being recorded.");
    talk.language = Some("en-GB".into());
    talk.style = Some(0);
    talk.repeat = Some(1);
    talk.level = Some(0.0);
    let r = c.start_talk(CALLER_LEG, &talk).await.unwrap();
    assert_eq!(
        serde_json::to_value(&r.message).unwrap(),
        x10["response_200"]["message"]
    );
    assert_eq!(r.uuid.as_deref(), Some(CALLER_LEG));
    let r = c.stop_talk(CALLER_LEG).await.unwrap();
    assert_eq!(r.message.as_deref(), Some("Talk stopped"));
    let mut stream = StreamRequest::new("https://gateway.example.com/hold.mp3");
    stream.repeat = Some(0);
    stream.level = Some(-0.5);
    let r = c.start_stream(CALLER_LEG, &stream).await.unwrap();
    assert_eq!(r.message.as_deref(), Some("Stream started"));
    let r = c.stop_stream(CALLER_LEG).await.unwrap();
    assert_eq!(r.message.as_deref(), Some("Stream stopped"));
    let x11 = vector("x11-rest-dtmf.json");
    let r = c.send_dtmf(CALLER_LEG, "p1234#").await.unwrap();
    assert_eq!(
        r.message.as_deref(),
        x11["response_200"]["message"].as_str()
    );
    let seen = s.take_seen();
    let ops: Vec<(Method, &str)> = seen
        .iter()
        .map(|r| (r.method.clone(), r.path.rsplit('/').next().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [
            (Method::PUT, "talk"),
            (Method::DELETE, "talk"),
            (Method::PUT, "stream"),
            (Method::DELETE, "stream"),
            (Method::PUT, "dtmf"),
        ]
    );
    let body = &seen[0].body;
    for k in ["text", "language", "style", "loop"] {
        assert_eq!(body[k], x10["request"][k], "{k}");
    }
    assert_eq!(body["level"].as_f64(), Some(0.0));
    assert_eq!(
        seen[2].body,
        json!({"stream_url": ["https://gateway.example.com/hold.mp3"], "loop": 0, "level": -0.5})
    );
    assert!(seen[1].body.is_null() && seen[3].body.is_null());
    assert_eq!(seen[4].body, x11["request"]);

    // POST /v1/calls: answer_url (vector §10.30), inline NCCO (X9), and sip / websocket callees.
    let mut create = CreateCall::with_answer_url(
        Endpoint::phone("14155550123"),
        "https://gateway.example.com/answer",
    )
    .from_number("447700900000")
    .event_url("https://gateway.example.com/events");
    if let voicegate::vonage::client::CallAnswer::Url { answer_method, .. } = &mut create.answer {
        *answer_method = Some(voicegate::vonage::ncco::HttpMethod::Post);
    }
    create.event_method = Some(voicegate::vonage::ncco::HttpMethod::Post);
    create.machine_detection = Some(voicegate::vonage::ncco::MachineDetection::Continue);
    create.length_timer_secs = Some(3600);
    create.ringing_timer_secs = Some(45);
    let created = c.create_call(&create).await.unwrap();
    assert_eq!(created.status, Some(CallStatus::Started));
    assert_eq!(created.direction.as_deref(), Some("outbound"));
    assert!(created.conversation_uuid.unwrap().starts_with("CON-"));

    let ws = WebsocketEndpoint::new("wss://gateway.example.com/voice-stream/out-7f3a", 16_000)
        .header("campaign", "renewals");
    let inline = CreateCall::with_ncco(
        Endpoint::phone("14155550123"),
        Ncco(vec![Action::from(Connect::new(Endpoint::Websocket(
            ws.clone(),
        )))]),
    )
    .random_from_number()
    .event_url("https://gateway.example.com/events");
    c.create_call(&inline).await.unwrap();
    let sip = CreateCall::with_ncco(
        Endpoint::sip("sip:alice@example.com"),
        Ncco(vec![Action::talk("Hello")]),
    )
    .from_number("447700900000");
    c.create_call(&sip).await.unwrap();
    let to_ws = CreateCall::with_answer_url(
        Endpoint::Websocket(ws),
        "https://gateway.example.com/answer",
    )
    .from_number("447700900000");
    c.create_call(&to_ws).await.unwrap();
    let seen = s.take_seen();
    assert!(
        seen.iter()
            .all(|r| r.method == Method::POST && r.path == "/v1/calls" && r.status == 201)
    );
    assert_eq!(seen[0].body, vector("30-rest-create.json"));
    assert_eq!(seen[1].body, vector("x09-rest-create-ncco.json"));
    assert_eq!(seen[2].body["to"][0]["type"], "sip");
    assert_eq!(seen[3].body["to"][0]["type"], "websocket");

    // Checked before sending: nothing reaches the API.
    let bad = CreateCall::with_answer_url(Endpoint::phone("123"), "https://x.example.com/a")
        .random_from_number();
    assert!(matches!(
        c.create_call(&bad).await,
        Err(ClientError::InvalidNumber { .. })
    ));
    assert!(matches!(
        c.send_dtmf(CALLER_LEG, "12x").await,
        Err(ClientError::InvalidDigits)
    ));
    assert!(matches!(
        c.hangup("../../v1/account").await,
        Err(ClientError::InvalidUuid { .. })
    ));
    assert!(s.take_seen().is_empty());

    // GET one call, GET a list with paging.
    let rec = c.get_call(CALLER_LEG).await.unwrap();
    assert_eq!(rec.uuid, CALLER_LEG);
    assert_eq!(rec.status, Some(CallStatus::Completed));
    assert_eq!(rec.duration.as_deref(), Some("82"));
    assert_eq!(rec.to.unwrap().number.as_deref(), Some("447700900000"));
    let filter = ListCalls {
        page_size: Some(3),
        order: Some(voicegate::vonage::client::Order::Asc),
        status: Some(CallStatus::Completed),
        date_start: Some("2025-03-14T00:00:00Z".into()),
        ..ListCalls::default()
    };
    let page = c.list_calls(&filter).await.unwrap();
    assert_eq!(page.count, 5);
    assert_eq!(page.calls.len(), 3);
    let next = page.next_query(&filter).expect("a second page");
    let page2 = c.list_calls(&next).await.unwrap();
    assert_eq!((page2.record_index, page2.calls.len()), (3, 2));
    assert!(page2.next_query(&next).is_none());
    let seen = s.take_seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        (seen[0].method.clone(), seen[0].path.as_str()),
        (Method::GET, put.as_str())
    );
    assert!(
        seen[1]
            .query
            .contains(&("status".into(), "completed".into()))
    );
    assert!(seen[2].query.contains(&("record_index".into(), "3".into())));
    s.assert_clean();
}

#[tokio::test]
async fn errors_carry_the_problem_details() {
    let (s, c) = setup().await;

    // 404: unknown call.
    let e = c
        .get_call("106a581a-34d0-432a-a625-220221fd434f")
        .await
        .unwrap_err();
    assert!(e.is_call_gone(), "{e}");
    assert_eq!(e.problem().unwrap().title.as_deref(), Some("Not Found"));
    assert_eq!(e.attempts(), 1, "404 is not retried");
    assert_eq!(s.take_seen().len(), 1);

    // 401 twice: the client re-signs once, then gives up with Vonage's body (§10.32).
    s.script([Scripted::Status(401), Scripted::Status(401)]);
    let e = c.hangup(CALLER_LEG).await.unwrap_err();
    assert_eq!(api_status(&e), (401, 2));
    let p = e.problem().unwrap();
    // Vonage's body as in §10.32, instance included.
    assert_eq!(
        p.instance.as_deref(),
        Some("a813c536-43f6-4568-acbf-f36ef2db955a")
    );
    assert_eq!(
        p.detail.as_deref(),
        Some("You did not provide correct credentials.")
    );
    let seen = s.take_seen();
    assert_ne!(seen[0].jti, seen[1].jti, "a 401 drops the cached token");
    // 401 once: the fresh token gets through.
    s.script([Scripted::Status(401)]);
    c.hangup(CALLER_LEG).await.unwrap();
    assert_eq!(s.take_seen().len(), 2);

    // A token signed with another key is refused by the stand-in (real verification).
    let wrong = Arc::new(AppJwt::from_pem(APP_ID, OTHER_PRIVATE_KEY).unwrap());
    let e = client_at(&s.base, wrong)
        .hangup(CALLER_LEG)
        .await
        .unwrap_err();
    assert_eq!(api_status(&e), (401, 2));
    assert_eq!(e.problem().unwrap().title.as_deref(), Some("Unauthorized"));
    assert!(
        e.to_string()
            .contains("You did not provide correct credentials."),
        "{e}"
    );
    // An expired token too (client clock 1000 s behind the API's).
    let behind = Arc::new(ManualClock::new(SystemClock.now_unix() - 1_000));
    let e = client_at(&s.base, jwt_with(behind))
        .hangup(CALLER_LEG)
        .await
        .unwrap_err();
    assert_eq!(api_status(&e), (401, 2));
    let v = std::mem::take(&mut *s.mock.violations.lock().unwrap());
    assert_eq!(v.len(), 4, "{v:?}");
    assert!(
        v[0].contains("signature") && v[2].contains("expired"),
        "{v:?}"
    );

    // 400 from a schema violation reaches the caller with its detail (the stand-in is strict).
    s.script([Scripted::Status(400)]);
    let e = c.mute(CALLER_LEG).await.unwrap_err();
    assert_eq!(api_status(&e), (400, 1));
    s.take_seen();
    s.assert_clean();
}

#[tokio::test]
async fn requests_go_to_the_calls_region() {
    let global = StandIn::start(Arc::new(SystemClock)).await;
    let region = StandIn::start(Arc::new(SystemClock)).await;
    region.add_call(CALLER_LEG);
    let c = client_at(&global.base, jwt_with(Arc::new(SystemClock)));

    // Unknown region: the default host, where this call does not exist.
    let e = c.hangup(CALLER_LEG).await.unwrap_err();
    assert!(e.is_call_gone());
    assert_eq!(global.take_seen().len(), 1);
    // The call's region_url: found.
    let rc = c.region(Some(&region.base)).unwrap();
    assert_eq!(rc.base_url(), region.base);
    rc.hangup(CALLER_LEG).await.unwrap();
    rc.get_call(CALLER_LEG).await.unwrap();
    assert_eq!(region.take_seen().len(), 2);
    assert!(global.take_seen().is_empty());
    assert_eq!(c.region(None).unwrap().base_url(), global.base);

    // The SSRF guard of the default policy: only Vonage hosts over https, or the default origin.
    let guarded = VoiceClient::builder(jwt_with(Arc::new(SystemClock)))
        .api_url(&global.base)
        .build()
        .unwrap();
    for ok in [
        "https://api-us-3.vonage.com",
        "https://api-eu-1.nexmo.com/",
        global.base.as_str(),
    ] {
        assert!(guarded.region(Some(ok)).is_ok(), "{ok}");
    }
    for bad in [
        region.base.as_str(),
        "http://api-us-3.vonage.com",
        "https://vonage.com.evil.example",
        "https://user:pw@api.nexmo.com",
        "file:///etc/passwd",
        "not a url",
    ] {
        assert!(
            matches!(
                guarded.region(Some(bad)),
                Err(ClientError::UntrustedRegion(_))
            ),
            "{bad}"
        );
    }
    global.assert_clean();
    region.assert_clean();
}

#[tokio::test]
async fn retries_follow_the_policy() {
    let (s, c) = setup().await;

    // 429 then success: an idempotent PUT succeeds after one retry.
    s.script([Scripted::Status(429)]);
    c.hangup(CALLER_LEG).await.unwrap();
    let seen = s.take_seen();
    assert_eq!(
        seen.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 204]
    );

    // Retry-After is honoured (1 s here; the policy's own backoff is at most 20 ms).
    s.script([Scripted::RateLimited {
        retry_after_secs: 1,
    }]);
    let t = std::time::Instant::now();
    c.get_call(CALLER_LEG).await.unwrap();
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(s.take_seen().len(), 2);
    // A Retry-After beyond the policy's limit ends the retries at once.
    s.script([Scripted::RateLimited {
        retry_after_secs: 60,
    }]);
    let e = c.get_call(CALLER_LEG).await.unwrap_err();
    assert_eq!(api_status(&e), (429, 1));
    assert!(
        matches!(e, ClientError::Api { retry_after: Some(d), .. } if d == Duration::from_secs(60))
    );
    s.take_seen();

    // 500 every time: gives up after max_retries (2) retries, 3 requests.
    s.script([Scripted::Status(500); 5]);
    let e = c.get_call(CALLER_LEG).await.unwrap_err();
    assert_eq!(api_status(&e), (500, 3));
    assert_eq!(
        e.problem().unwrap().title.as_deref(),
        Some("Internal Server Error")
    );
    assert_eq!(s.take_seen().len(), 3);
    s.mock.script.lock().unwrap().clear();

    // POST /v1/calls is never retried: not on 500, not on 429.
    let create = CreateCall::with_answer_url(
        Endpoint::phone("14155550123"),
        "https://gw.example.com/answer",
    )
    .random_from_number();
    for status in [500, 429] {
        s.script([Scripted::Status(status)]);
        let e = c.create_call(&create).await.unwrap_err();
        assert_eq!(api_status(&e), (status, 1));
        assert_eq!(s.take_seen().len(), 1);
    }

    // Acting requests (transfer, talk, stream, DTMF): retried on 429 (Vonage did nothing), not
    // on 500 (it may have acted).
    s.script([Scripted::Status(500)]);
    let e = c
        .transfer_url(CALLER_LEG, "https://gw.example.com/ncco")
        .await
        .unwrap_err();
    assert_eq!(api_status(&e), (500, 1));
    s.script([Scripted::Status(500)]);
    assert_eq!(
        api_status(&c.send_dtmf(CALLER_LEG, "1").await.unwrap_err()),
        (500, 1)
    );
    s.script([Scripted::Status(429)]);
    c.start_talk(CALLER_LEG, &TalkRequest::new("hi"))
        .await
        .unwrap();
    assert_eq!(
        s.take_seen().iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 500, 429, 200]
    );

    // Stopping talk is idempotent: retried on 500.
    s.script([Scripted::Status(503)]);
    c.stop_talk(CALLER_LEG).await.unwrap();
    assert_eq!(s.take_seen().len(), 2);

    // Per-attempt timeout: a stalled API gives a Timeout after the retries.
    let impatient = VoiceClient::builder(jwt_with(Arc::new(SystemClock)))
        .api_url(&s.base)
        .timeout(Duration::from_millis(200))
        .retry(RetryPolicy {
            max_retries: 1,
            ..fast_retries()
        })
        .region_policy(RegionPolicy::Any)
        .build()
        .unwrap();
    s.script([Scripted::Stall(Duration::from_secs(1)); 2]);
    let e = impatient.get_call(CALLER_LEG).await.unwrap_err();
    assert!(
        matches!(e, ClientError::Timeout { attempts: 2, .. }),
        "{e:?}"
    );
    s.assert_clean();
}

#[tokio::test]
async fn the_token_is_cached_then_renewed_before_expiry() {
    let clock = Arc::new(ManualClock::new(SystemClock.now_unix()));
    let s = StandIn::start(clock.clone()).await;
    s.add_call(CALLER_LEG);
    let c = client_at(&s.base, jwt_with(clock.clone()));
    let t0 = clock.now_unix();

    c.hangup(CALLER_LEG).await.unwrap();
    clock.advance(Duration::from_secs(10 * 60));
    c.hangup(CALLER_LEG).await.unwrap();
    // exp = t0 + 900; renewal a minute before: t0 + 840 still reuses, t0 + 841 renews.
    clock.set(t0 + 840 - 1);
    c.hangup(CALLER_LEG).await.unwrap();
    clock.set(t0 + 841);
    c.hangup(CALLER_LEG).await.unwrap();
    clock.advance(Duration::from_secs(60));
    c.hangup(CALLER_LEG).await.unwrap();

    let seen = s.take_seen();
    let ids: Vec<(&str, u64)> = seen.iter().map(|r| (r.jti.as_str(), r.iat)).collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0], ids[2]);
    assert_eq!(ids[0].1, t0);
    assert_ne!(ids[3].0, ids[0].0, "renewed: a new jti");
    assert_eq!(ids[3].1, t0 + 841, "renewed: iat is now");
    assert_eq!(ids[4], ids[3]);
    // Long after expiry the stand-in would refuse the old token; the client never sends it.
    clock.advance(Duration::from_secs(3 * 3600));
    c.hangup(CALLER_LEG).await.unwrap();
    assert_eq!(s.take_seen()[0].status, 204);
    s.assert_clean();
}

/// The real server with the echo agent (`0` transfers to 447700900999) and REST call control
/// through `client`, and Vonage's side of call [`CALLER_LEG`] in `region`: the answer webhook,
/// then the media socket, connected. Returns the server's address and the media socket.
async fn echo_call_with_call_control(
    client: VoiceClient,
    region: &StandIn,
) -> (
    SocketAddr,
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) {
    let control = Arc::new(VonageCallControl::new(client));
    let mut cfg = ServerConfig::new();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    let agent = Arc::new(EchoAgent::default().with_transfer_to(Some("447700900999".into())));
    let state = AppState::with_control(cfg, agent, control.clone());
    control.bind(&state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(listener, state, std::future::pending()));

    // Vonage fetches the NCCO; the answer webhook names the call's region.
    let mut answer = vector("02-answer-post.json");
    answer["region_url"] = json!(region.base);
    let http = reqwest::Client::new();
    let ncco: Value = http
        .post(format!("http://{addr}/answer"))
        .json(&answer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let connect = ncco
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "connect")
        .unwrap();
    let ep = &connect["endpoint"][0];
    let (mut ws, _) = tokio_tungstenite::connect_async(ep["uri"].as_str().unwrap())
        .await
        .unwrap();
    let mut connected = ep["headers"].as_object().unwrap().clone();
    connected.insert("event".into(), "websocket:connected".into());
    connected.insert("content-type".into(), ep["content-type"].clone());
    ws.send(Message::text(Value::Object(connected).to_string()))
        .await
        .unwrap();

    (addr, ws)
}

/// Presses `digit` on the media socket.
async fn press(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    digit: &str,
) {
    let mut dtmf = vector("22-ws-dtmf.json");
    dtmf["digit"] = json!(digit);
    ws.send(Message::text(dtmf.to_string())).await.unwrap();
}

/// A value on the server's `/metrics` (0 when absent).
async fn server_metric(addr: SocketAddr, name: &str) -> f64 {
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The real server with the echo agent and REST call control: the caller presses 0 (transfer
/// to `--transfer-to`) then # (hang up); both requests reach the call's region, with the
/// documented transfer NCCO (§10.29) and caller id = the number that was called.
#[tokio::test]
async fn agent_actions_reach_the_calls_region_through_the_server() {
    let global = StandIn::start(Arc::new(SystemClock)).await;
    let region = StandIn::start(Arc::new(SystemClock)).await;
    region.add_call(CALLER_LEG);
    let client = client_at(&global.base, jwt_with(Arc::new(SystemClock)));
    let (_addr, mut ws) = echo_call_with_call_control(client, &region).await;

    // A key pressed while the transfer is still in flight is ignored (one request at a time),
    // so `#` is pressed again until its request arrives.
    for (digit, want) in [("0", 1), ("#", 2)] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        'pressing: loop {
            press(&mut ws, digit).await;
            for _ in 0..10 {
                if region.mock.seen.lock().unwrap().len() >= want {
                    break 'pressing;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no request for key {digit}"
            );
        }
    }
    let seen = region.take_seen();
    assert_eq!(seen.len(), 2);
    let put = format!("/v1/calls/{CALLER_LEG}");
    assert_eq!(
        (
            seen[0].method.clone(),
            seen[0].path.as_str(),
            seen[0].status
        ),
        (Method::PUT, put.as_str(), 204)
    );
    assert_eq!(seen[0].body, vector("29-rest-transfer.json"));
    assert_eq!(seen[1].body, vector("x08-rest-hangup.json"));
    assert!(
        global.take_seen().is_empty(),
        "nothing went to the default host"
    );
    let _ = ws.close(None).await;
    region.assert_clean();
}

/// The echo agent's keys make at most one request at a time: a flood of `#` while the hangup is
/// in flight (the region holds it) makes no other request, each press is counted as ignored,
/// and once the hangup succeeded further presses do nothing either.
#[tokio::test]
async fn a_flood_of_hash_keys_makes_one_hangup_request() {
    const PRESSES: u64 = 100;
    let global = StandIn::start(Arc::new(SystemClock)).await;
    let region = StandIn::start(Arc::new(SystemClock)).await;
    region.add_call(CALLER_LEG);
    region.script([Scripted::Hold]);
    // A timeout well beyond the hold, so that the client never retries the request.
    let client = VoiceClient::builder(jwt_with(Arc::new(SystemClock)))
        .api_url(&global.base)
        .retry(fast_retries())
        .timeout(Duration::from_secs(60))
        .region_policy(RegionPolicy::Any)
        .build()
        .unwrap();
    let (addr, mut ws) = echo_call_with_call_control(client, &region).await;

    for _ in 0..PRESSES {
        press(&mut ws, "#").await;
    }
    // Every press was handled: one request, the rest ignored while it is held.
    let ignored = "voicegate_agent_actions_ignored_total";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while server_metric(addr, ignored).await < (PRESSES - 1) as f64 {
        assert!(tokio::time::Instant::now() < deadline, "{ignored}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    region.release();
    while region.mock.seen.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no hangup request");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The hangup succeeded (or is answering): a later press is ignored too.
    press(&mut ws, "#").await;
    while server_metric(addr, ignored).await < PRESSES as f64 {
        assert!(tokio::time::Instant::now() < deadline, "{ignored}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server_metric(addr, ignored).await, PRESSES as f64);
    let seen = region.take_seen();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].body, vector("x08-rest-hangup.json"));
    assert_eq!(seen[0].status, 204);
    assert!(global.take_seen().is_empty());
    let _ = ws.close(None).await;
    region.assert_clean();
}
