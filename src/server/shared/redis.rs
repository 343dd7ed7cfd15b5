//! [`RedisState`]: the [`SharedState`] of a cluster, in Redis (`--redis-url`).
//!
//! One [`ConnectionManager`] (a multiplexed connection that reconnects by itself) carries every
//! command; one dedicated pub/sub connection receives the ends of this instance's calls. Every
//! command has a deadline ([`OP_TIMEOUT`]); while Redis is known to be down, commands fail at
//! once instead of waiting for it.
//!
//! Keys (the `{call id}` hash tag keeps one call's keys in one slot):
//!
//! | key | value | expiry |
//! | --- | --- | --- |
//! | `voicegate:jti:{sha256 hex}` | `1` | the webhook age window |
//! | `voicegate:{call}:socket` | owner instance id | [`CLAIM_TTL`], renewed every [`KEEPALIVE_EVERY`] while the socket lives |
//! | `voicegate:{call}:nonce:{n}` | `1` | until the media token expires |
//! | `voicegate:{call}:record` | hash: `token`, `ended`, `disconnects` | [`RECORD_TTL`] while live, then the linger time |
//!
//! Each multi-step operation is one Lua script, so it is atomic: the claim checks `ended`, sets
//! the socket key `NX` and the nonce key `NX` together; the end sets `ended` and publishes the
//! call id to `voicegate:instance:{owner}` together. A published end can be missed (this
//! instance's subscription was reconnecting): the keepalive, which renews this instance's claims
//! every [`KEEPALIVE_EVERY`], also reads `ended`, so such a call still ends within that time.
//!
//! Redis restarted without its data forgets the replay cache. So the first instance to reach a
//! Redis without the `voicegate:epoch` key writes a random one, and every instance that finds
//! the epoch missing or changed refuses, for one age window, webhook tokens issued before it
//! noticed ([`StateError::Unavailable`], a 503 Vonage retries with a fresh token): a token seen
//! before the loss is never accepted again. Run Redis with `maxmemory-policy noeviction` so it
//! never drops keys of its own accord.
//!
//! Three background tasks per instance, each holding only a weak reference (they stop when the
//! state is dropped): the health check (`PING` every [`HEALTH_EVERY`], the readiness input), the
//! subscription (reconnects with backoff) and the keepalive.
//!
//! Not real-time (webhooks, socket set-up and teardown, background tasks).

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{CallRecord, InstanceId, MemoryState, SharedState, StateError, StateOp};
use crate::agent::CallId;
use crate::server::media_token::MediaClaims;
use crate::server::metrics::Metrics;

/// Deadline of one Redis command.
pub const OP_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How often Redis is pinged (the readiness input).
pub const HEALTH_EVERY: Duration = Duration::from_millis(500);
/// How long a socket claim lives without renewal (an instance that dies frees its calls' claims
/// after this long).
pub const CLAIM_TTL: Duration = Duration::from_secs(30);
/// How often this instance renews its claims and looks for calls ended elsewhere.
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(5);
/// Expiry of a call record while its socket lives (renewed by the keepalive).
pub const RECORD_TTL: Duration = Duration::from_secs(600);
/// Longest wait between two attempts to re-subscribe.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Renewals in flight at once in one keepalive round.
const KEEPALIVE_CONCURRENCY: usize = 64;
/// Failure lines logged per kind before only the counter goes on (per outage).
const MAX_LOGGED_FAILURES: u32 = 5;

const PREFIX: &str = "voicegate";

/// KEYS: record, socket, nonce. ARGV: owner, claim ms, nonce ms, token, record ms.
const CLAIM_LUA: &str = r"
if redis.call('HEXISTS', KEYS[1], 'ended') == 1 then return 'ended' end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'taken' end
if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[3]) then
  redis.call('DEL', KEYS[2])
  return 'used'
end
redis.call('HSET', KEYS[1], 'token', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 'ok'
";

/// KEYS: socket. ARGV: owner.
const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// KEYS: record, socket. ARGV: linger ms, channel prefix, call id, our instance id.
/// Returns the socket's owner ('' when none); another owner is told over pub/sub.
const END_LUA: &str = r"
redis.call('HSET', KEYS[1], 'ended', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local owner = redis.call('GET', KEYS[2])
if not owner then return '' end
if owner ~= ARGV[4] then redis.call('PUBLISH', ARGV[2] .. owner, ARGV[3]) end
return owner
";

/// KEYS: record. ARGV: linger ms. Returns {disconnects, ended, token}.
const DISCONNECTED_LUA: &str = r"
local n = redis.call('HINCRBY', KEYS[1], 'disconnects', 1)
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ended = redis.call('HGET', KEYS[1], 'ended') or ''
local token = redis.call('HGET', KEYS[1], 'token') or ''
return {n, ended, token}
";

/// KEYS: record, socket. ARGV: owner, claim ms, record ms.
/// 'ended', 'ok' (renewed or taken back after it expired), or 'lost' (another instance has it).
const KEEPALIVE_LUA: &str = r"
if redis.call('HEXISTS', KEYS[1], 'ended') == 1 then return 'ended' end
local owner = redis.call('GET', KEYS[2])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 'ok'
end
if not owner then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 'ok'
end
return 'lost'
";

/// `--redis-url` that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisConfigError {
    /// Not a URL the client understands.
    #[error("--redis-url: {0}")]
    Url(String),
    /// `rediss://`: TLS to Redis is not built in.
    #[error(
        "--redis-url: TLS (rediss://) is not built in; reach Redis over a private network or a TLS sidecar"
    )]
    Tls,
}

/// The Redis-backed [`SharedState`] (see the module docs).
#[derive(Debug, Clone)]
pub struct RedisState {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    conn: ConnectionManager,
    instance: InstanceId,
    /// `voicegate:instance:` + our id: where other instances publish our calls' ends.
    channel: String,
    up: AtomicBool,
    subscribed: AtomicBool,
    metrics: Metrics,
    /// The call record when Redis cannot be reached.
    fallback: MemoryState,
    /// Calls whose socket claim this instance holds.
    owned: Mutex<HashSet<CallId>>,
    /// Calls to end locally (ended on another instance).
    ends: mpsc::Sender<CallId>,
    linger: Duration,
    scripts: Scripts,
    logged: Mutex<u32>,
    /// The `voicegate:epoch` value last seen.
    epoch: Mutex<Option<String>>,
    /// Webhook tokens issued before this (Unix s) are refused: the replay cache may have
    /// forgotten them. 0: none.
    replay_floor: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("instance", &self.instance)
            .field("up", &self.up)
            .field("subscribed", &self.subscribed)
            .finish_non_exhaustive()
    }
}

struct Scripts {
    claim: Script,
    release: Script,
    end: Script,
    disconnected: Script,
    keepalive: Script,
}

fn key(call: &CallId, what: &str) -> String {
    format!("{PREFIX}:{{{call}}}:{what}")
}

fn ms(d: Duration) -> u64 {
    d.as_millis().clamp(1, u128::from(u64::MAX)) as u64
}

impl RedisState {
    /// Connects lazily to `url` (the start-up does not wait for Redis: readiness stays red
    /// until it answers) and starts the background tasks. Calls ended on another instance are
    /// sent to `ends`. `linger` is how long an ended call is remembered (at least the media
    /// token lifetime, so its token cannot open a socket any more). Needs a Tokio runtime.
    pub fn start(
        url: &str,
        instance: InstanceId,
        metrics: Metrics,
        ends: mpsc::Sender<CallId>,
        linger: Duration,
        fallback_capacity: usize,
    ) -> Result<Self, RedisConfigError> {
        if url.starts_with("rediss://") || url.starts_with("valkeys://") {
            return Err(RedisConfigError::Tls);
        }
        let client = redis::Client::open(url).map_err(|e| RedisConfigError::Url(e.to_string()))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            // The health check drives reconnection; one quick retry per attempt is enough.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), cfg)
            .map_err(|e| RedisConfigError::Url(e.to_string()))?;
        let channel = format!("{PREFIX}:instance:{instance}");
        let inner = Arc::new(Inner {
            client,
            conn,
            instance,
            channel,
            up: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            metrics,
            fallback: MemoryState::new(fallback_capacity, linger),
            owned: Mutex::new(HashSet::new()),
            ends,
            linger,
            scripts: Scripts {
                claim: Script::new(CLAIM_LUA),
                release: Script::new(RELEASE_LUA),
                end: Script::new(END_LUA),
                disconnected: Script::new(DISCONNECTED_LUA),
                keepalive: Script::new(KEEPALIVE_LUA),
            },
            logged: Mutex::new(0),
            epoch: Mutex::new(None),
            replay_floor: AtomicU64::new(0),
        });
        inner.metrics.redis_up.set(0);
        tokio::spawn(health_loop(Arc::downgrade(&inner)));
        tokio::spawn(subscription_loop(Arc::downgrade(&inner)));
        tokio::spawn(keepalive_loop(Arc::downgrade(&inner)));
        tracing::info!(instance = %inner.instance, "shared state: Redis");
        Ok(Self { inner })
    }

    /// This instance's id (the owner written in its socket claims).
    pub fn instance(&self) -> &InstanceId {
        &self.inner.instance
    }
}

impl Inner {
    fn owned(&self) -> std::sync::MutexGuard<'_, HashSet<CallId>> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_available(&self) -> bool {
        self.up.load(Ordering::Acquire) && self.subscribed.load(Ordering::Acquire)
    }

    /// Counts a failure, logs the first few of an outage, and marks Redis down when the
    /// connection itself failed.
    fn failed(&self, op: StateOp, error: &dyn std::fmt::Display, connection: bool) -> StateError {
        self.metrics.redis_error(op);
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if *logged < MAX_LOGGED_FAILURES {
            *logged += 1;
            tracing::warn!(op = op.as_str(), error = %error, "Redis operation failed");
        }
        drop(logged);
        if connection {
            self.set_up(false, Some(&error.to_string()));
        }
        StateError::Unavailable(op)
    }

    fn set_up(&self, up: bool, reason: Option<&str>) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            self.metrics.redis_up.set(i64::from(up));
            if up {
                *self.logged.lock().unwrap_or_else(|p| p.into_inner()) = 0;
                tracing::info!("Redis reachable: shared state available");
            } else {
                tracing::error!(
                    reason = reason.unwrap_or("-"),
                    "Redis unreachable: not ready; replay checks and new sockets are refused \
                     until it is back"
                );
            }
        }
    }

    /// Runs one command with the deadline; fails at once while Redis is known to be down.
    async fn run<T>(
        &self,
        op: StateOp,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StateError> {
        if !self.up.load(Ordering::Acquire) {
            self.metrics.redis_error(op);
            return Err(StateError::Unavailable(op));
        }
        match tokio::time::timeout(OP_TIMEOUT, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let connection = e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout();
                Err(self.failed(op, &e, connection))
            }
            Err(_) => Err(self.failed(op, &"timed out", true)),
        }
    }

    async fn claim(&self, claims: &MediaClaims, token: &str) -> Result<(), StateError> {
        let call = &claims.call.call_id;
        let nonce_ttl = Duration::from_secs(
            claims
                .expires_at_unix
                .saturating_sub(crate::server::auth::unix_now())
                .saturating_add(1),
        );
        let mut conn = self.conn.clone();
        let reply: String = self
            .run(
                StateOp::claim,
                self.scripts
                    .claim
                    .key(key(call, "record"))
                    .key(key(call, "socket"))
                    .key(key(call, &format!("nonce:{}", claims.nonce)))
                    .arg(self.instance.as_str())
                    .arg(ms(CLAIM_TTL))
                    .arg(ms(nonce_ttl))
                    .arg(token)
                    .arg(ms(RECORD_TTL))
                    .invoke_async(&mut conn),
            )
            .await?;
        match reply.as_str() {
            "ok" => {
                self.owned().insert(call.clone());
                Ok(())
            }
            "ended" => Err(StateError::CallEnded),
            "taken" => Err(StateError::SocketTaken),
            "used" => Err(StateError::TokenUsed),
            other => Err(self.failed(
                StateOp::claim,
                &format!("unexpected reply {other:?}"),
                false,
            )),
        }
    }

    async fn release(&self, call: &CallId) -> Result<(), StateError> {
        self.owned().remove(call);
        let mut conn = self.conn.clone();
        let _: i64 = self
            .run(
                StateOp::release,
                self.scripts
                    .release
                    .key(key(call, "socket"))
                    .arg(self.instance.as_str())
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn end(&self, call: &CallId) -> Result<(), StateError> {
        self.fallback.end_now(call);
        let mut conn = self.conn.clone();
        let owner: String = self
            .run(
                StateOp::end,
                self.scripts
                    .end
                    .key(key(call, "record"))
                    .key(key(call, "socket"))
                    .arg(ms(self.linger))
                    .arg(format!("{PREFIX}:instance:"))
                    .arg(call.as_str())
                    .arg(self.instance.as_str())
                    .invoke_async(&mut conn),
            )
            .await?;
        if !owner.is_empty() && owner != self.instance.as_str() {
            tracing::info!(call_id = %call, owner, "call ended here; its socket's instance was told");
        }
        Ok(())
    }

    async fn disconnected(&self, call: &CallId) -> Result<CallRecord, StateError> {
        let mut conn = self.conn.clone();
        let reply = self
            .run(
                StateOp::disconnected,
                self.scripts
                    .disconnected
                    .key(key(call, "record"))
                    .arg(ms(self.linger))
                    .invoke_async::<(i64, String, String)>(&mut conn),
            )
            .await;
        match reply {
            Ok((n, ended, token)) => {
                let local = self.fallback.disconnected_now(call);
                Ok(CallRecord {
                    ended: !ended.is_empty() || local.ended,
                    disconnects: u32::try_from(n.max(0)).unwrap_or(u32::MAX),
                    token: (!token.is_empty()).then_some(token).or(local.token),
                })
            }
            // What this instance knows: safe, since a reconnect NCCO only names a call whose
            // socket then still needs the (fail-closed) claim.
            Err(_) => Ok(self.fallback.disconnected_now(call)),
        }
    }

    async fn record_jti(&self, jti: &str, iat: u64, ttl: Duration) -> Result<(), StateError> {
        if iat < self.replay_floor.load(Ordering::Acquire) {
            // Possibly seen before Redis lost its data: never accepted (Vonage retries with a
            // fresh token).
            self.metrics.redis_error(StateOp::jti);
            tracing::warn!("signed token issued before the replay cache was reset: refused");
            return Err(StateError::Unavailable(StateOp::jti));
        }
        let digest = Sha256::digest(jti.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        let mut conn = self.conn.clone();
        let set: Option<String> = self
            .run(
                StateOp::jti,
                redis::cmd("SET")
                    .arg(format!("{PREFIX}:jti:{hex}"))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms(ttl))
                    .query_async(&mut conn),
            )
            .await?;
        match set {
            Some(_) => Ok(()),
            None => Err(StateError::Replayed),
        }
    }

    /// Renews this instance's claims; returns the calls found ended.
    async fn keepalive(&self) -> Vec<CallId> {
        let calls: Vec<CallId> = self.owned().iter().cloned().collect();
        let mut ended = Vec::new();
        for chunk in calls.chunks(KEEPALIVE_CONCURRENCY) {
            let replies = futures_util::future::join_all(chunk.iter().map(|call| async move {
                let mut conn = self.conn.clone();
                let r: Result<String, StateError> = self
                    .run(
                        StateOp::keepalive,
                        self.scripts
                            .keepalive
                            .key(key(call, "record"))
                            .key(key(call, "socket"))
                            .arg(self.instance.as_str())
                            .arg(ms(CLAIM_TTL))
                            .arg(ms(RECORD_TTL))
                            .invoke_async(&mut conn),
                    )
                    .await;
                (call, r)
            }))
            .await;
            for (call, r) in replies {
                match r.as_deref() {
                    Ok("ended") => ended.push(call.clone()),
                    Ok("lost") => tracing::warn!(
                        call_id = %call,
                        "another instance holds this call's socket claim (ours expired during an outage)"
                    ),
                    _ => {}
                }
            }
        }
        ended
    }

    /// Reads (or writes) `voicegate:epoch`; when it is missing or changed, Redis lost its data:
    /// refuse webhook tokens issued before now for one window (see the module docs).
    async fn check_epoch(&self) -> Result<(), RedisError> {
        const KEY: &str = "voicegate:epoch";
        let mut conn = self.conn.clone();
        let mut current: Option<String> = redis::cmd("GET").arg(KEY).query_async(&mut conn).await?;
        let mut created = false;
        if current.is_none() {
            let mut r = [0u8; 16];
            let _ = getrandom::getrandom(&mut r);
            let fresh: String = r.iter().map(|b| format!("{b:02x}")).collect();
            let set: Option<String> = redis::cmd("SET")
                .arg(KEY)
                .arg(&fresh)
                .arg("NX")
                .query_async(&mut conn)
                .await?;
            created = set.is_some();
            current = redis::cmd("GET").arg(KEY).query_async(&mut conn).await?;
        }
        let mut seen = self.epoch.lock().unwrap_or_else(|p| p.into_inner());
        let changed = seen.is_some() && *seen != current;
        if created || changed {
            let now = crate::server::auth::unix_now();
            self.replay_floor.fetch_max(now, Ordering::AcqRel);
            if changed {
                tracing::warn!(
                    "Redis lost its data (restarted without persistence?): signed webhooks \
                     issued before now are refused for one age window"
                );
            }
        }
        *seen = current;
        Ok(())
    }

    /// Hands a call ended elsewhere to the local registry.
    fn end_locally(&self, call: CallId) {
        if self.owned().contains(&call) {
            self.metrics.remote_ends.inc();
            // A full queue means thousands of ends at once; the keepalive catches any dropped.
            let _ = self.ends.try_send(call);
        }
    }
}

async fn health_loop(weak: Weak<Inner>) {
    let mut tick = tokio::time::interval(HEALTH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let mut conn = inner.conn.clone();
        let ping = tokio::time::timeout(
            OP_TIMEOUT,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        match ping {
            Ok(Ok(_)) => match inner.check_epoch().await {
                Ok(()) => inner.set_up(true, None),
                Err(e) => {
                    inner.failed(StateOp::ping, &e, true);
                }
            },
            Ok(Err(e)) => {
                inner.failed(StateOp::ping, &e, true);
            }
            Err(_) => {
                inner.failed(StateOp::ping, &"timed out", true);
            }
        }
    }
}

async fn subscription_loop(weak: Weak<Inner>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let client = inner.client.clone();
        let channel = inner.channel.clone();
        drop(inner);
        let attempt = async {
            let pubsub = client.get_async_pubsub().await?;
            let (mut sink, stream) = pubsub.split();
            sink.subscribe(&channel).await?;
            Ok::<_, RedisError>((sink, stream))
        };
        match tokio::time::timeout(OP_TIMEOUT, attempt).await {
            Ok(Ok((mut sink, mut stream))) => {
                backoff = Duration::from_millis(50);
                if let Some(inner) = weak.upgrade() {
                    inner.subscribed.store(true, Ordering::Release);
                    tracing::info!(channel, "subscribed to this instance's call ends");
                }
                // Until the connection drops (the stream ends) or stops answering pings.
                let mut ping = tokio::time::interval(HEALTH_EVERY * 4);
                ping.tick().await;
                loop {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Some(msg) => {
                                let Some(inner) = weak.upgrade() else { return };
                                match std::str::from_utf8(msg.get_payload_bytes()).ok().and_then(|s| CallId::parse(s).ok()) {
                                    Some(call) => inner.end_locally(call),
                                    None => tracing::debug!("ignoring a malformed end message"),
                                }
                            }
                            None => break,
                        },
                        _ = ping.tick() => {
                            let alive = tokio::time::timeout(OP_TIMEOUT, sink.ping::<Value>()).await;
                            if !matches!(alive, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                let Some(inner) = weak.upgrade() else { return };
                inner.subscribed.store(false, Ordering::Release);
                inner.failed(StateOp::subscribe, &"subscription connection lost", true);
            }
            Ok(Err(e)) => {
                let Some(inner) = weak.upgrade() else { return };
                inner.failed(StateOp::subscribe, &e, true);
            }
            Err(_) => {
                let Some(inner) = weak.upgrade() else { return };
                inner.failed(StateOp::subscribe, &"timed out", true);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn keepalive_loop(weak: Weak<Inner>) {
    let mut tick = tokio::time::interval(KEEPALIVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        if !inner.up.load(Ordering::Acquire) {
            continue;
        }
        for call in inner.keepalive().await {
            tracing::info!(call_id = %call, "call ended elsewhere (found by the keepalive)");
            inner.end_locally(call);
        }
    }
}

impl SharedState for RedisState {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn forget_expired(&self) -> usize {
        self.inner.fallback.forget_expired_now()
    }

    fn is_available(&self) -> bool {
        self.inner.is_available()
    }

    fn record_jti<'a>(
        &'a self,
        jti: &'a str,
        issued_at_unix: u64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(self.inner.record_jti(jti, issued_at_unix, ttl))
    }

    fn claim_socket<'a>(
        &'a self,
        claims: &'a MediaClaims,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(self.inner.claim(claims, token))
    }

    fn release_socket<'a>(&'a self, call: &'a CallId) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(self.inner.release(call))
    }

    fn end_call<'a>(&'a self, call: &'a CallId) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(self.inner.end(call))
    }

    fn note_disconnected<'a>(
        &'a self,
        call: &'a CallId,
    ) -> BoxFuture<'a, Result<CallRecord, StateError>> {
        Box::pin(self.inner.disconnected(call))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_hash_tag() {
        let c = CallId::parse("abc-1").unwrap();
        assert_eq!(key(&c, "socket"), "voicegate:{abc-1}:socket");
        assert_eq!(key(&c, "nonce:7"), "voicegate:{abc-1}:nonce:7");
    }

    #[tokio::test]
    async fn tls_and_bad_urls_are_refused() {
        let (tx, _rx) = mpsc::channel(1);
        let m = Metrics::new();
        for (url, tls) in [("rediss://h:6380", true), ("nonsense://x", false)] {
            let r = RedisState::start(
                url,
                InstanceId::generate(),
                m.clone(),
                tx.clone(),
                Duration::from_secs(60),
                16,
            );
            match r {
                Err(RedisConfigError::Tls) => assert!(tls, "{url}"),
                Err(RedisConfigError::Url(_)) => assert!(!tls, "{url}"),
                Ok(_) => panic!("{url} accepted"),
            }
        }
    }

    /// An unreachable Redis: every operation fails closed at once (or falls back where safe),
    /// nothing panics, and the state is not available.
    #[tokio::test]
    async fn unreachable_redis_fails_closed() {
        let (tx, _rx) = mpsc::channel(1);
        // Port 1 on loopback: nothing listens there.
        let s = RedisState::start(
            "redis://127.0.0.1:1",
            InstanceId::generate(),
            Metrics::new(),
            tx,
            Duration::from_secs(60),
            16,
        )
        .unwrap();
        tokio::time::sleep(HEALTH_EVERY * 2).await;
        assert!(!s.is_available());
        assert!(matches!(
            s.record_jti(
                "j",
                crate::server::auth::unix_now(),
                Duration::from_secs(60)
            )
            .await,
            Err(StateError::Unavailable(StateOp::jti))
        ));
        let call = CallId::parse("c").unwrap();
        let claims = MediaClaims {
            call: crate::server::media_token::MediaCall::new(
                call.clone(),
                crate::core::SampleRate::Hz16000,
            ),
            expires_at_unix: crate::server::auth::unix_now() + 60,
            nonce: 1,
        };
        assert!(matches!(
            s.claim_socket(&claims, "t").await,
            Err(StateError::Unavailable(StateOp::claim))
        ));
        assert!(s.end_call(&call).await.is_err());
        // The record falls back to this process: the end above is remembered.
        let r = s.note_disconnected(&call).await.unwrap();
        assert!(r.ended);
        assert_eq!(r.disconnects, 1);
    }
}
