//! Per-call media tokens: everything the media socket needs to know about its call, signed, in
//! the websocket URI the answer webhook puts in the NCCO (`/voice-stream/{call_id}?token=…`).
//!
//! The answer webhook, the event webhooks and the media socket of one call can each land on a
//! different instance behind a load balancer. So the answer webhook keeps nothing: it writes the
//! call's facts ([`MediaCall`]: call id, media rate, agent, caller, called number, conversation,
//! REST region, extra endpoint headers) into the token, and any instance holding the same key
//! (`--media-token-key`) can accept the socket from the token alone.
//!
//! Wire format: `base64url(claims) "." base64url(tag)`, where `tag` is the first 128 bits of
//! HMAC-SHA-256 over a context string and the claims, compared in constant time. The claims are
//! binary, checked before parsed (the tag first, then every length against what is left):
//!
//! ```text
//! version u8 (2) | rate u8 | expiry u64 BE (Unix s) | nonce u64 BE
//! | call_id | agent | from | to | conversation_uuid | region_url    (each: len u8, bytes)
//! | headers                                                          (len u16 BE, compact JSON)
//! ```
//!
//! An empty string field is "absent". Each field has a bound ([`MAX_FIELD_BYTES`] and friends),
//! so a token is never longer than [`MAX_MEDIA_TOKEN_BYTES`]; values from a webhook that exceed
//! their bound are left out of the token rather than truncated. The token is signed, not
//! encrypted: it carries nothing Vonage does not already know about the call.
//!
//! The token is single-use (its `nonce` is recorded by the shared state when its socket is
//! claimed, see `server::shared`); this module only says whether a token is ours and what it
//! says.
//!
//! Not real-time (once per answer webhook and per socket upgrade).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::agent::{CallId, MAX_CALL_ID_LEN};
use crate::core::SampleRate;

/// Longest media token accepted, bytes (a typical one is about 250).
pub const MAX_MEDIA_TOKEN_BYTES: usize = 1_536;
/// Longest `from`, `to` or `region_url` carried in a token, bytes.
pub const MAX_FIELD_BYTES: usize = 128;
/// Longest agent name or conversation id carried in a token, bytes.
pub const MAX_SHORT_FIELD_BYTES: usize = 64;
/// Longest serialised extra headers carried in a token (Vonage caps endpoint headers at 512).
pub const MAX_HEADERS_BYTES: usize = 512;
/// Query parameter of the websocket URI that carries the media token.
pub const MEDIA_TOKEN_PARAM: &str = "token";

const MEDIA_TOKEN_VERSION: u8 = 2;
const MEDIA_TOKEN_CONTEXT: &[u8] = b"voicegate/media-token/v2\0";
/// Bytes of the HMAC-SHA-256 tag kept in a media token (128 bits).
const MEDIA_TAG_BYTES: usize = 16;
/// version, rate code, expiry (u64), nonce (u64).
const FIXED_BYTES: usize = 1 + 1 + 8 + 8;
/// The endpoint header keys voicegate fills itself (rebuilt from the token's fields).
const OWN_HEADERS: [&str; 3] = ["call_uuid", "from", "to"];

/// What the media socket needs to know about its call: what the answer webhook learnt.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaCall {
    /// The caller leg's uuid, our call id.
    pub call_id: CallId,
    /// The media rate the NCCO asked for.
    pub rate: SampleRate,
    /// The agent the answering instance was configured with (`echo`, `bridge:…`), for a check
    /// on the socket's instance; empty when unknown.
    pub agent: String,
    /// The caller (or the Client SDK user).
    pub from: Option<String>,
    /// What was called.
    pub to: Option<String>,
    /// The conversation (`CON-…`).
    pub conversation_uuid: Option<String>,
    /// The Vonage API host that controls this call (the answer webhook's `region_url`).
    pub region_url: Option<String>,
    /// Endpoint headers besides `call_uuid`, `from` and `to`.
    pub extra_headers: Map<String, Value>,
}

impl MediaCall {
    /// A call with only its id and rate.
    pub fn new(call_id: CallId, rate: SampleRate) -> Self {
        Self {
            call_id,
            rate,
            agent: String::new(),
            from: None,
            to: None,
            conversation_uuid: None,
            region_url: None,
            extra_headers: Map::new(),
        }
    }

    /// The NCCO endpoint's `headers`: `call_uuid`, then `from` and `to` when known, then the
    /// extra ones (Vonage echoes them flattened in `websocket:connected`, §1.3).
    pub fn endpoint_headers(&self) -> Map<String, Value> {
        let mut h = Map::new();
        h.insert("call_uuid".into(), self.call_id.as_str().into());
        if let Some(f) = &self.from {
            h.insert("from".into(), f.as_str().into());
        }
        if let Some(t) = &self.to {
            h.insert("to".into(), t.as_str().into());
        }
        for (k, v) in &self.extra_headers {
            if !OWN_HEADERS.contains(&k.as_str()) {
                h.insert(k.clone(), v.clone());
            }
        }
        h
    }
}

/// A verified media token: its call and its own validity.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaClaims {
    /// What the token says about its call.
    pub call: MediaCall,
    /// Unix seconds after which the token is refused.
    pub expires_at_unix: u64,
    /// Unique per minted token; the shared state accepts each once.
    pub nonce: u64,
}

/// Why a media socket upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaAuthError {
    /// No `token` query parameter (or more than one).
    #[error("media token refused: missing_token")]
    MissingToken,
    /// Not a token of ours: shape, length, version, rate, or a field that does not parse.
    #[error("media token refused: malformed_token")]
    Malformed,
    /// The tag does not match: forged, or altered after it was minted.
    #[error("media token refused: bad_token (forged or altered)")]
    BadTag,
    /// A valid token for another call.
    #[error("media token refused: wrong_call")]
    WrongCall,
    /// The token expired.
    #[error("media token refused: expired_token")]
    Expired,
    /// The token was already used.
    #[error("media token refused: used_token")]
    Used,
    /// Vonage's signed handshake (`--signed-media-socket`) was refused.
    #[error("media socket handshake: {0}")]
    Jwt(crate::vonage::signed_webhook::JwtError),
    /// The handshake's `jti` could not be checked: the shared replay cache is unavailable
    /// (refused: replay checks fail closed).
    #[error("media socket handshake: the shared replay cache is unavailable")]
    ReplayCacheUnavailable,
}

impl MediaAuthError {
    /// A short, fixed name for logs and the metric label `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Malformed => "malformed_token",
            Self::BadTag => "bad_token",
            Self::WrongCall => "wrong_call",
            Self::Expired => "expired_token",
            Self::Used => "used_token",
            Self::Jwt(e) => e.reason(),
            Self::ReplayCacheUnavailable => "replay_cache_unavailable",
        }
    }
}

/// Mints and checks media tokens (see the module docs for the format).
pub struct MediaTokens {
    key: [u8; 32],
    ttl: Duration,
    next_nonce: AtomicU64,
}

impl fmt::Debug for MediaTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn rate_code(rate: SampleRate) -> u8 {
    match rate {
        SampleRate::Hz8000 => 0,
        SampleRate::Hz16000 => 1,
        SampleRate::Hz24000 => 2,
        _ => 3,
    }
}

fn rate_of(code: u8) -> Option<SampleRate> {
    match code {
        0 => Some(SampleRate::Hz8000),
        1 => Some(SampleRate::Hz16000),
        2 => Some(SampleRate::Hz24000),
        _ => None,
    }
}

/// Appends `s` with a one-byte length, or an empty field when `s` is absent or over `max`.
fn put_str(out: &mut Vec<u8>, s: Option<&str>, max: usize) {
    match s.filter(|s| s.len() <= max.min(usize::from(u8::MAX))) {
        Some(s) => {
            out.push(s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        }
        None => out.push(0),
    }
}

/// Reads the claims after the tag checked out; `None` when anything does not parse.
fn parse_claims(claims: &[u8]) -> Option<MediaClaims> {
    let mut r = Reader(claims);
    if r.u8()? != MEDIA_TOKEN_VERSION {
        return None;
    }
    let rate = rate_of(r.u8()?)?;
    let expires_at_unix = r.u64()?;
    let nonce = r.u64()?;
    let call_id = CallId::parse(r.str(MAX_CALL_ID_LEN)?).ok()?;
    let agent = r.str(MAX_SHORT_FIELD_BYTES)?.to_owned();
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let from = opt(r.str(MAX_FIELD_BYTES)?);
    let to = opt(r.str(MAX_FIELD_BYTES)?);
    let conversation_uuid = opt(r.str(MAX_SHORT_FIELD_BYTES)?);
    let region_url = opt(r.str(MAX_FIELD_BYTES)?);
    let hlen = usize::from(u16::from_be_bytes(r.take(2)?.try_into().ok()?));
    if hlen > MAX_HEADERS_BYTES {
        return None;
    }
    let extra_headers = match r.take(hlen)? {
        [] => Map::new(),
        json => serde_json::from_slice::<Map<String, Value>>(json).ok()?,
    };
    if !r.0.is_empty() {
        return None;
    }
    Some(MediaClaims {
        call: MediaCall {
            call_id,
            rate,
            agent,
            from,
            to,
            conversation_uuid,
            region_url,
            extra_headers,
        },
        expires_at_unix,
        nonce,
    })
}

/// A cursor over the claims that never reads past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn str(&mut self, max: usize) -> Option<&'a str> {
        let n = usize::from(self.u8()?);
        if n > max {
            return None;
        }
        std::str::from_utf8(self.take(n)?).ok()
    }
}

impl MediaTokens {
    /// Tokens keyed by `key` (any length: it is hashed to 32 bytes), valid for `ttl`.
    pub fn new(key: &[u8], ttl: Duration) -> Self {
        let key: [u8; 32] = Sha256::digest(key).into();
        let mut seed = [0u8; 8];
        // A failed OS RNG only makes nonces predictable, not tokens forgeable (they are MACed).
        let _ = getrandom::getrandom(&mut seed);
        Self {
            key,
            ttl,
            next_nonce: AtomicU64::new(u64::from_le_bytes(seed)),
        }
    }

    /// Tokens under a fresh random key (tokens die with the process).
    pub fn random(ttl: Duration) -> Self {
        let mut key = [0u8; 32];
        if getrandom::getrandom(&mut key).is_err() {
            // No OS randomness: fall back to what is unique to this process and instant; logged
            // loudly because tokens are then guessable by a local observer.
            tracing::error!("no OS randomness for the media token key; set --media-token-key");
            let seed = format!("{:?}{}", SystemTime::now(), std::process::id());
            key = Sha256::digest(seed.as_bytes()).into();
        }
        Self::new(&key, ttl)
    }

    /// How long a minted token is valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn mac(&self) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(MEDIA_TOKEN_CONTEXT);
        mac
    }

    /// A new token for `call`, valid from `now_unix` for the TTL; returns it with its nonce.
    /// Fields over their bound are left out (see the module docs), so this cannot fail.
    pub fn mint(&self, call: &MediaCall, now_unix: u64) -> (String, u64) {
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        let exp = now_unix.saturating_add(self.ttl.as_secs());
        let mut claims = Vec::with_capacity(256);
        claims.push(MEDIA_TOKEN_VERSION);
        claims.push(rate_code(call.rate));
        claims.extend_from_slice(&exp.to_be_bytes());
        claims.extend_from_slice(&nonce.to_be_bytes());
        put_str(&mut claims, Some(call.call_id.as_str()), MAX_CALL_ID_LEN);
        put_str(&mut claims, Some(&call.agent), MAX_SHORT_FIELD_BYTES);
        put_str(&mut claims, call.from.as_deref(), MAX_FIELD_BYTES);
        put_str(&mut claims, call.to.as_deref(), MAX_FIELD_BYTES);
        put_str(
            &mut claims,
            call.conversation_uuid.as_deref(),
            MAX_SHORT_FIELD_BYTES,
        );
        put_str(&mut claims, call.region_url.as_deref(), MAX_FIELD_BYTES);
        let extra: Map<String, Value> = call
            .extra_headers
            .iter()
            .filter(|(k, _)| !OWN_HEADERS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let headers = if extra.is_empty() {
            Vec::new()
        } else {
            serde_json::to_vec(&extra).unwrap_or_default()
        };
        let headers: &[u8] = if headers.len() <= MAX_HEADERS_BYTES {
            &headers
        } else {
            tracing::warn!(
                call_id = %call.call_id,
                bytes = headers.len(),
                "endpoint headers over {MAX_HEADERS_BYTES} bytes left out of the media token"
            );
            &[]
        };
        claims.extend_from_slice(&(headers.len() as u16).to_be_bytes());
        claims.extend_from_slice(headers);
        let mut mac = self.mac();
        mac.update(&claims);
        let tag = mac.finalize().into_bytes();
        let token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&claims),
            URL_SAFE_NO_PAD.encode(&tag[..MEDIA_TAG_BYTES])
        );
        (token, nonce)
    }

    /// Checks that `token` is ours and unaltered and says what it says, whatever its expiry
    /// (a reconnect re-mints the token of a call whose socket dropped).
    pub fn open(&self, token: &str) -> Result<MediaClaims, MediaAuthError> {
        if token.is_empty() || token.len() > MAX_MEDIA_TOKEN_BYTES {
            return Err(MediaAuthError::Malformed);
        }
        let (c, t) = token.split_once('.').ok_or(MediaAuthError::Malformed)?;
        let claims = URL_SAFE_NO_PAD
            .decode(c)
            .map_err(|_| MediaAuthError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(t)
            .map_err(|_| MediaAuthError::Malformed)?;
        if tag.len() != MEDIA_TAG_BYTES || claims.len() <= FIXED_BYTES {
            return Err(MediaAuthError::Malformed);
        }
        let mut mac = self.mac();
        mac.update(&claims);
        // Constant-time comparison of the truncated tag, before any field is read.
        mac.verify_truncated_left(&tag)
            .map_err(|_| MediaAuthError::BadTag)?;
        parse_claims(&claims).ok_or(MediaAuthError::Malformed)
    }

    /// Checks `token` for the socket of `call_id` at `now_unix`: ours, unaltered, for this
    /// call, not expired.
    pub fn verify(
        &self,
        token: &str,
        call_id: &CallId,
        now_unix: u64,
    ) -> Result<MediaClaims, MediaAuthError> {
        let claims = self.open(token)?;
        if claims.call.call_id != *call_id {
            return Err(MediaAuthError::WrongCall);
        }
        if now_unix > claims.expires_at_unix {
            return Err(MediaAuthError::Expired);
        }
        Ok(claims)
    }
}

/// The media token in a websocket URI's query (`…?token=…`), if there is exactly one.
pub fn token_in_uri(uri: &str) -> Option<&str> {
    let query = uri.split_once('?')?.1.split('#').next()?;
    let mut found = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix(MEDIA_TOKEN_PARAM)?.strip_prefix('='));
    match (found.next(), found.next()) {
        // Our tokens are base64url and '.', which need no percent-encoding.
        (Some(t), None) if !t.is_empty() => Some(t),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(s: &str) -> CallId {
        CallId::parse(s).unwrap()
    }

    fn full_call() -> MediaCall {
        let mut c = MediaCall::new(
            id("63f61863-4a51-4f6b-86e1-46edebcf9356"),
            SampleRate::Hz24000,
        );
        c.agent = "echo".into();
        c.from = Some("447700900123".into());
        c.to = Some("447700900000".into());
        c.conversation_uuid = Some("CON-f972836a-550f-45fa-956c-12a2ab5b7d22".into());
        c.region_url = Some("https://api-us-3.vonage.com".into());
        c
    }

    #[test]
    fn round_trip_carries_the_call() {
        let t = MediaTokens::new(b"0123456789abcdef", Duration::from_secs(60));
        let mut call = full_call();
        call.extra_headers
            .insert("ticket".into(), Value::from("T-1234"));
        let (tok, nonce) = t.mint(&call, 1_000);
        assert!(tok.len() < 300, "{} bytes: {tok}", tok.len());
        let c = t.verify(&tok, &call.call_id, 1_060).unwrap();
        assert_eq!(c.call, call);
        assert_eq!(c.nonce, nonce);
        assert_eq!(c.expires_at_unix, 1_060);
        let h = c.call.endpoint_headers();
        assert_eq!(h["call_uuid"], "63f61863-4a51-4f6b-86e1-46edebcf9356");
        assert_eq!(h["from"], "447700900123");
        assert_eq!(h["ticket"], "T-1234");
        // Nonces differ per mint.
        assert_ne!(t.mint(&call, 0).1, nonce);
        // A minimal call round-trips too.
        let bare = MediaCall::new(id("a"), SampleRate::Hz8000);
        let (tok, _) = t.mint(&bare, 5);
        assert_eq!(t.verify(&tok, &bare.call_id, 5).unwrap().call, bare);
    }

    #[test]
    fn refusals_are_typed() {
        let t = MediaTokens::new(b"0123456789abcdef", Duration::from_secs(60));
        let call = full_call();
        let a = call.call_id.clone();
        let (tok, _) = t.mint(&call, 1_000);
        assert_eq!(t.verify(&tok, &a, 1_061), Err(MediaAuthError::Expired));
        // Expiry does not matter to `open`.
        assert!(t.open(&tok).is_ok());
        assert_eq!(
            t.verify(&tok, &id("other"), 1_000),
            Err(MediaAuthError::WrongCall)
        );
        // Another key, a flipped bit anywhere in the claims, a truncated tag, junk.
        let other = MediaTokens::new(b"fedcba9876543210", Duration::from_secs(60));
        assert_eq!(other.verify(&tok, &a, 1_000), Err(MediaAuthError::BadTag));
        let (c64, t64) = tok.split_once('.').unwrap();
        let claims = URL_SAFE_NO_PAD.decode(c64).unwrap();
        for i in 0..claims.len() {
            let mut forged = claims.clone();
            forged[i] ^= 1;
            let forged = format!("{}.{t64}", URL_SAFE_NO_PAD.encode(&forged));
            assert_eq!(
                t.verify(&forged, &a, 1_000),
                Err(MediaAuthError::BadTag),
                "byte {i}"
            );
        }
        assert_eq!(
            t.verify(&tok[..tok.len() - 2], &a, 1_000),
            Err(MediaAuthError::Malformed)
        );
        let long = "A".repeat(MAX_MEDIA_TOKEN_BYTES + 1);
        for junk in ["", ".", "a.b", "!!.!!", &long] {
            assert!(t.verify(junk, &a, 1_000).is_err(), "{junk}");
        }
    }

    #[test]
    fn oversized_values_stay_out_and_the_token_is_bounded() {
        let t = MediaTokens::new(b"0123456789abcdef", Duration::from_secs(60));
        let mut call = full_call();
        call.call_id = id(&"x".repeat(MAX_CALL_ID_LEN));
        call.from = Some("9".repeat(MAX_FIELD_BYTES + 1));
        call.to = Some("8".repeat(MAX_FIELD_BYTES));
        call.agent = "a".repeat(MAX_SHORT_FIELD_BYTES);
        call.region_url = Some("r".repeat(MAX_FIELD_BYTES));
        call.conversation_uuid = Some("c".repeat(MAX_SHORT_FIELD_BYTES));
        call.extra_headers
            .insert("big".into(), Value::from("h".repeat(MAX_HEADERS_BYTES)));
        let (tok, _) = t.mint(&call, 0);
        assert!(tok.len() <= MAX_MEDIA_TOKEN_BYTES, "{}", tok.len());
        let got = t.open(&tok).unwrap().call;
        assert_eq!(got.from, None, "over the bound: left out");
        assert_eq!(got.to, call.to);
        assert!(got.extra_headers.is_empty());
        // The largest token that fits every bound is still accepted.
        call.from = Some("9".repeat(MAX_FIELD_BYTES));
        call.extra_headers.clear();
        call.extra_headers
            .insert("h".into(), Value::from("h".repeat(MAX_HEADERS_BYTES - 8)));
        let (tok, _) = t.mint(&call, 0);
        assert!(tok.len() <= MAX_MEDIA_TOKEN_BYTES, "{}", tok.len());
        assert_eq!(t.open(&tok).unwrap().call, call);
    }

    #[test]
    fn token_in_uri_finds_exactly_one() {
        assert_eq!(
            token_in_uri("wss://h/voice-stream/a?token=x.y"),
            Some("x.y")
        );
        assert_eq!(
            token_in_uri("wss://h/voice-stream/a?a=1&token=x.y#f"),
            Some("x.y")
        );
        assert_eq!(token_in_uri("wss://h/voice-stream/a?t=x.y"), None);
        assert_eq!(token_in_uri("wss://h/voice-stream/a?token=a&token=b"), None);
        assert_eq!(token_in_uri("wss://h/voice-stream/a"), None);
        assert_eq!(token_in_uri("wss://h/voice-stream/a?token="), None);
    }

    proptest! {
        /// The post-tag parser never panics and never reads past the end, whatever the bytes.
        #[test]
        fn parse_claims_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_claims(&bytes);
        }

        /// Any call that fits the bounds round-trips exactly.
        #[test]
        fn fitting_calls_round_trip(
            from in proptest::option::of("[0-9]{1,20}"),
            to in proptest::option::of("[a-z:@.]{1,40}"),
            rate in 0u8..3,
            now in 0u64..4_000_000_000,
        ) {
            let t = MediaTokens::new(b"k", Duration::from_secs(120));
            let mut call = MediaCall::new(id("c-1"), rate_of(rate).unwrap());
            call.from = from;
            call.to = to;
            let (tok, nonce) = t.mint(&call, now);
            let c = t.verify(&tok, &call.call_id, now).unwrap();
            prop_assert_eq!(c.call, call);
            prop_assert_eq!(c.nonce, nonce);
        }
    }
}
