//! [`MemoryState`]: the in-process [`SharedState`], the default for one instance. Every map is
//! bounded and forgets expired entries first, so hostile traffic (unsigned webhooks for made-up
//! calls, thousands of signed tokens) costs bounded memory. [`RedisState`](super::RedisState)
//! also keeps one as its fallback for the call record.
//!
//! Not real-time (webhooks and socket set-up/teardown only).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

use super::{CallRecord, SharedState, StateError};
use crate::agent::CallId;
use crate::server::auth::unix_now;
use crate::server::media_token::MediaClaims;

/// Token ids remembered for replay protection; beyond this the oldest are forgotten.
pub const REPLAY_CAPACITY: usize = 100_000;

/// An in-process set of used ids (webhook `jti`s, media token nonces) with an expiry each and
/// a fixed capacity: it stores a 128-bit digest of each id, forgets expired ones first and,
/// when full of live ones, the oldest (a full guard means more than `capacity` ids inside one
/// window; the count is in [`evicted`](Self::evicted), in the counter given by
/// [`counting_evictions`](Self::counting_evictions), and in a warning at most once a minute).
#[derive(Debug)]
pub struct MemoryReplayGuard {
    capacity: usize,
    inner: Mutex<ReplayInner>,
    evicted: Counter,
    /// Unix seconds of the last eviction warning.
    warned_at_unix: AtomicU64,
}

/// Seconds between two eviction warnings of one guard.
const EVICTION_WARN_EVERY_S: u64 = 60;

#[derive(Debug, Default)]
struct ReplayInner {
    seen: HashMap<[u8; 16], u64>,
    order: VecDeque<([u8; 16], u64)>,
}

impl MemoryReplayGuard {
    /// A guard remembering at most `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(ReplayInner::default()),
            evicted: Counter::default(),
            warned_at_unix: AtomicU64::new(0),
        }
    }

    /// Counts evictions in `counter` (`voicegate_replay_ids_evicted_total`) instead of a
    /// counter of its own.
    pub fn counting_evictions(mut self, counter: Counter) -> Self {
        self.evicted = counter;
        self
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live ids forgotten because the guard was full.
    pub fn evicted(&self) -> u64 {
        self.evicted.get()
    }

    fn lock(&self) -> MutexGuard<'_, ReplayInner> {
        // Every operation leaves the maps consistent; a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `id` as used until `expires_at_unix`; [`StateError::Replayed`] if it is already
    /// recorded and not expired at `now_unix`.
    pub fn check_and_record(
        &self,
        id: &str,
        now_unix: u64,
        expires_at_unix: u64,
    ) -> Result<(), StateError> {
        let digest = Sha256::digest(id.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        let mut g = self.lock();
        while g.order.front().is_some_and(|&(_, exp)| exp <= now_unix) {
            g.pop_front();
        }
        if g.seen.get(&key).is_some_and(|&exp| exp > now_unix) {
            return Err(StateError::Replayed);
        }
        let mut evicted = false;
        while g.seen.len() >= self.capacity || g.order.len() >= self.capacity.saturating_mul(2) {
            if g.pop_front().is_some_and(|exp| exp > now_unix) {
                self.evicted.inc();
                evicted = true;
            }
        }
        g.seen.insert(key, expires_at_unix);
        g.order.push_back((key, expires_at_unix));
        drop(g);
        if evicted {
            self.warn_evicted(now_unix);
        }
        Ok(())
    }

    /// Logs the evictions so far, at most once every [`EVICTION_WARN_EVERY_S`].
    fn warn_evicted(&self, now_unix: u64) {
        let last = self.warned_at_unix.load(Ordering::Relaxed);
        if (last == 0 || now_unix >= last + EVICTION_WARN_EVERY_S)
            && self
                .warned_at_unix
                .compare_exchange(last, now_unix.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                capacity = self.capacity,
                evicted_total = self.evicted.get(),
                "replay guard full: live token ids forgotten before they expired (a replay of one of them would not be caught)"
            );
        }
    }
}

impl MemoryReplayGuard {
    /// Forgets the ids expired at `now_unix`; returns how many went.
    pub fn forget_expired(&self, now_unix: u64) -> usize {
        let mut g = self.lock();
        let before = g.seen.len();
        while g.order.front().is_some_and(|&(_, exp)| exp <= now_unix) {
            g.pop_front();
        }
        let gone = before - g.seen.len();
        if gone > 0 {
            shrink_if_sparse(&mut g.seen);
            let len = g.order.len();
            if g.order.capacity() > 4 * len.max(64) {
                g.order.shrink_to(2 * len);
            }
        }
        gone
    }
}

/// Gives a map's memory back once it holds under a quarter of its capacity (a burst of calls
/// grew it; it never shrinks by itself).
fn shrink_if_sparse<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 4 * map.len().max(64) {
        map.shrink_to(2 * map.len());
    }
}

impl ReplayInner {
    /// Drops the front entry, and its map entry if it still belongs to it.
    fn pop_front(&mut self) -> Option<u64> {
        let (k, exp) = self.order.pop_front()?;
        if self.seen.get(&k) == Some(&exp) {
            self.seen.remove(&k);
        }
        Some(exp)
    }
}

/// One call's record in process memory.
#[derive(Debug, Default)]
struct Record {
    claimed: bool,
    ended: bool,
    disconnects: u32,
    token: Option<String>,
    /// Unix seconds after which an unclaimed record may be forgotten.
    expires_at_unix: u64,
}

/// The in-process [`SharedState`]: correct for one instance (and as Redis's fallback for the
/// call record), bounded in memory.
#[derive(Debug)]
pub struct MemoryState {
    jti: MemoryReplayGuard,
    nonces: MemoryReplayGuard,
    calls: Mutex<HashMap<CallId, Record>>,
    /// Most records kept; claimed ones (at most `--max-calls`) are never dropped.
    capacity: usize,
    /// How long an ended or released call is remembered (late events, late sockets).
    linger: Duration,
}

impl MemoryState {
    /// A state remembering at most `capacity` calls (at least 16) and an ended or released
    /// call for `linger`.
    pub fn new(capacity: usize, linger: Duration) -> Self {
        Self {
            jti: MemoryReplayGuard::new(REPLAY_CAPACITY),
            nonces: MemoryReplayGuard::new(REPLAY_CAPACITY),
            calls: Mutex::new(HashMap::new()),
            capacity: capacity.max(16),
            linger,
        }
    }

    /// Counts the replay guards' evictions (webhook `jti`s and media token nonces) in
    /// `counter`: `voicegate_replay_ids_evicted_total`.
    pub fn counting_evictions(mut self, counter: Counter) -> Self {
        self.jti = self.jti.counting_evictions(counter.clone());
        self.nonces = self.nonces.counting_evictions(counter);
        self
    }

    fn calls(&self) -> MutexGuard<'_, HashMap<CallId, Record>> {
        // Each operation is a single insert/update; a poisoned map is still consistent.
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The record of `call`, created (within the capacity) if new.
    fn with_record<T>(&self, call: &CallId, f: impl FnOnce(&mut Record) -> T) -> T {
        let now = unix_now();
        let mut calls = self.calls();
        if !calls.contains_key(call) && calls.len() >= self.capacity {
            calls.retain(|_, r| r.claimed || r.expires_at_unix > now);
            if calls.len() >= self.capacity {
                // Still full of live records: keep only the calls with a socket.
                let before = calls.len();
                calls.retain(|_, r| r.claimed);
                // Rare (more calls answered within the linger than the capacity) and worth
                // knowing: an ended call forgotten here would accept a late socket.
                tracing::warn!(
                    forgotten = before - calls.len(),
                    capacity = self.capacity,
                    "call records full: forgot the calls without a socket before their linger ended"
                );
            }
        }
        let r = calls.entry(call.clone()).or_default();
        r.expires_at_unix = r
            .expires_at_unix
            .max(now.saturating_add(self.linger.as_secs()));
        f(r)
    }

    /// Records `jti` (see [`SharedState::record_jti`]), synchronously.
    pub fn record_jti_now(&self, jti: &str, ttl: Duration) -> Result<(), StateError> {
        let now = unix_now();
        let until = now.saturating_add(ttl.as_secs().max(1));
        self.jti.check_and_record(jti, now, until)
    }

    /// Claims a socket (see [`SharedState::claim_socket`]), synchronously.
    pub fn claim_now(&self, claims: &MediaClaims, token: &str) -> Result<(), StateError> {
        let call = &claims.call.call_id;
        let now = unix_now();
        self.with_record(call, |r| {
            if r.ended {
                return Err(StateError::CallEnded);
            }
            if r.claimed {
                return Err(StateError::SocketTaken);
            }
            let nonce = format!("{call}:{}", claims.nonce);
            let until = claims.expires_at_unix.max(now).saturating_add(1);
            self.nonces
                .check_and_record(&nonce, now, until)
                .map_err(|_| StateError::TokenUsed)?;
            r.claimed = true;
            r.token = Some(token.to_owned());
            Ok(())
        })
    }

    /// Releases a claim, synchronously.
    pub fn release_now(&self, call: &CallId) {
        if let Some(r) = self.calls().get_mut(call) {
            r.claimed = false;
            r.expires_at_unix = unix_now().saturating_add(self.linger.as_secs());
        }
    }

    /// Marks a call over, synchronously.
    pub fn end_now(&self, call: &CallId) {
        self.with_record(call, |r| r.ended = true);
    }

    /// Counts a `disconnected`, synchronously.
    pub fn disconnected_now(&self, call: &CallId) -> CallRecord {
        self.with_record(call, |r| {
            r.disconnects = r.disconnects.saturating_add(1);
            CallRecord {
                ended: r.ended,
                disconnects: r.disconnects,
                token: r.token.clone(),
            }
        })
    }

    /// Forgets the calls, tokens and ids past their expiry; returns how many entries went.
    pub fn forget_expired_now(&self) -> usize {
        let now = unix_now();
        let mut gone = self.jti.forget_expired(now) + self.nonces.forget_expired(now);
        let mut calls = self.calls();
        let before = calls.len();
        calls.retain(|_, r| r.claimed || r.expires_at_unix > now);
        if calls.len() < before {
            gone += before - calls.len();
            shrink_if_sparse(&mut calls);
        }
        gone
    }

    /// Calls remembered now.
    pub fn len(&self) -> usize {
        self.calls().len()
    }

    /// Whether no call is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SharedState for MemoryState {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn forget_expired(&self) -> usize {
        self.forget_expired_now()
    }

    fn is_available(&self) -> bool {
        true
    }

    fn record_jti<'a>(
        &'a self,
        jti: &'a str,
        _issued_at_unix: u64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(std::future::ready(self.record_jti_now(jti, ttl)))
    }

    fn claim_socket<'a>(
        &'a self,
        claims: &'a MediaClaims,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(std::future::ready(self.claim_now(claims, token)))
    }

    fn release_socket<'a>(&'a self, call: &'a CallId) -> BoxFuture<'a, Result<(), StateError>> {
        self.release_now(call);
        Box::pin(std::future::ready(Ok(())))
    }

    fn end_call<'a>(&'a self, call: &'a CallId) -> BoxFuture<'a, Result<(), StateError>> {
        self.end_now(call);
        Box::pin(std::future::ready(Ok(())))
    }

    fn note_disconnected<'a>(
        &'a self,
        call: &'a CallId,
    ) -> BoxFuture<'a, Result<CallRecord, StateError>> {
        Box::pin(std::future::ready(Ok(self.disconnected_now(call))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::SampleRate;
    use crate::server::media_token::MediaCall;

    fn claims(id: &str, nonce: u64) -> MediaClaims {
        MediaClaims {
            call: MediaCall::new(CallId::parse(id).unwrap(), SampleRate::Hz16000),
            expires_at_unix: unix_now() + 60,
            nonce,
        }
    }

    #[test]
    fn expired_entries_are_forgotten_on_request() {
        let g = MemoryReplayGuard::new(1_000);
        for i in 0..500u64 {
            g.check_and_record(&i.to_string(), 1_000, 2_000).unwrap();
        }
        assert_eq!(g.forget_expired(1_999), 0);
        assert_eq!(g.forget_expired(2_000), 500);
        assert!(g.is_empty());
        let s = MemoryState::new(16, Duration::ZERO);
        let c = claims("gone", 1);
        s.claim_now(&c, "token").unwrap();
        // A call with a socket is never forgotten.
        assert_eq!(s.forget_expired_now(), 0);
        assert_eq!(s.len(), 1);
        s.release_now(&c.call.call_id);
        assert_eq!(s.forget_expired_now(), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn replay_guard_is_bounded_and_expires() {
        let g = MemoryReplayGuard::new(3);
        g.check_and_record("a", 100, 200).unwrap();
        assert_eq!(g.check_and_record("a", 150, 250), Err(StateError::Replayed));
        // Expired: usable again.
        g.check_and_record("a", 200, 300).unwrap();
        for (i, j) in ["b", "c", "d", "e"].iter().enumerate() {
            g.check_and_record(j, 201 + i as u64, 400).unwrap();
        }
        assert!(g.len() <= 3, "{}", g.len());
        assert!(g.evicted() >= 1);
        assert_eq!(g.check_and_record("e", 210, 400), Err(StateError::Replayed));
        // Far later, everything expired and the memory is back to one entry.
        g.check_and_record("z", 10_000, 10_100).unwrap();
        assert_eq!(g.len(), 1);
        // Thousands of ids never exceed the capacity.
        let g = MemoryReplayGuard::new(100);
        for i in 0..5_000u64 {
            g.check_and_record(&i.to_string(), 1_000, 2_000).unwrap();
        }
        assert_eq!(g.len(), 100);
    }

    #[test]
    fn evictions_of_live_ids_reach_the_metric() {
        let metrics = crate::server::metrics::Metrics::new();
        let g = MemoryReplayGuard::new(100).counting_evictions(metrics.replay_ids_evicted.clone());
        // 150 live ids into room for 100: the 50 oldest are forgotten while still live.
        for i in 0..150u64 {
            g.check_and_record(&i.to_string(), 1_000, 2_000).unwrap();
        }
        assert_eq!(g.evicted(), 50);
        // Expired ones forgotten to make room are not evictions.
        for i in 0..100u64 {
            g.check_and_record(&format!("later-{i}"), 2_000, 3_000)
                .unwrap();
        }
        assert_eq!(g.evicted(), 50);
        let text = metrics.encode();
        assert!(
            text.contains("voicegate_replay_ids_evicted_total 50"),
            "{text}"
        );
    }

    #[test]
    fn one_socket_per_call_and_one_use_per_token() {
        let s = MemoryState::new(16, Duration::from_secs(30));
        let c = claims("call-1", 7);
        s.claim_now(&c, "t").unwrap();
        assert_eq!(s.claim_now(&c, "t"), Err(StateError::SocketTaken));
        assert_eq!(
            s.claim_now(&claims("call-1", 8), "t2"),
            Err(StateError::SocketTaken)
        );
        s.release_now(&c.call.call_id);
        assert_eq!(s.claim_now(&c, "t"), Err(StateError::TokenUsed));
        // A fresh token for the same call (a reconnect) opens it again.
        s.claim_now(&claims("call-1", 9), "t3").unwrap();
        s.release_now(&c.call.call_id);
        let r = s.disconnected_now(&c.call.call_id);
        assert_eq!(
            (r.ended, r.disconnects, r.token.as_deref()),
            (false, 1, Some("t3"))
        );
        // Ended: no socket any more, and the record says so.
        s.end_now(&c.call.call_id);
        assert_eq!(
            s.claim_now(&claims("call-1", 10), "t4"),
            Err(StateError::CallEnded)
        );
        assert!(s.disconnected_now(&c.call.call_id).ended);
    }

    #[test]
    fn records_are_bounded_but_claims_survive() {
        let s = MemoryState::new(16, Duration::from_secs(30));
        let live = claims("live", 1);
        s.claim_now(&live, "t").unwrap();
        for i in 0..1_000 {
            s.end_now(&CallId::parse(&format!("flood-{i}")).unwrap());
        }
        assert!(s.len() <= 16, "{}", s.len());
        assert_eq!(s.claim_now(&live, "t"), Err(StateError::SocketTaken));
    }
}
