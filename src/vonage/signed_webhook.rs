//! Signed webhooks (vonage-protocol.md §5): verification of the `Authorization: Bearer <JWT>`
//! Vonage puts on webhook requests, and on the media socket's opening handshake when the NCCO
//! asks for `"authorization": {"type": "vonage"}` (§1.2).
//!
//! [`WebhookVerifier::verify`] is pure: the caller passes the token, what was signed
//! ([`Payload`]) and the current Unix time, so tests and the fuzzer drive it deterministically.
//! The checks, in order (§5.3):
//!
//! 1. the token is at most [`MAX_TOKEN_BYTES`] and has three base64url segments;
//! 2. the header's `alg` is exactly `HS256`: `none`, `RS256`/`ES256`/`EdDSA` (algorithm
//!    confusion) and `HS384`/`HS512` are refused before any key is used;
//! 3. the HMAC-SHA-256 signature over `header.claims`, with the signature secret, compared in
//!    constant time (jsonwebtoken's RustCrypto backend, `Mac::verify_slice`);
//! 4. `iss == "Vonage"`;
//! 5. `iat` is present and within the age window (default 5 min) plus a 30 s clock skew either
//!    way; `exp` and `nbf`, when present, are honoured with the same skew;
//! 6. `payload_hash` is the lowercase hex SHA-256 of the payload when there is one (for a POST
//!    the exact body bytes, then the body with insignificant whitespace removed; for a GET the
//!    query as a compact JSON object in URL order);
//! 7. `api_key` and `application_id`, when pinned by configuration, match.
//!
//! Replay protection (`jti` seen before inside the window) needs memory, so it lives in the
//! server (`server::auth`); this module returns the `jti` for it.
//!
//! A [`JwtError`] says why a token was refused; it never contains the token or any claim value
//! that came from the request, so it is safe to log.
//!
//! Not real-time (once per webhook and per socket upgrade).

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Longest `Authorization` token accepted, bytes (checked before any parsing).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Default age window for `iat`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// Clock difference tolerated between Vonage and us, either way.
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);
/// The only accepted issuer.
pub const ISSUER: &str = "Vonage";

/// Which unsupported algorithm a token named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlgKind {
    /// `none`: an unsigned token.
    None,
    /// An asymmetric algorithm (`RS*`, `PS*`, `ES*`, `EdDSA`): the algorithm-confusion attack.
    Asymmetric,
    /// Another HMAC (`HS384`, `HS512`).
    OtherHmac,
    /// Anything else, or no `alg` at all.
    Unknown,
}

impl AlgKind {
    fn of(alg: Option<&str>) -> Self {
        match alg {
            Some(a) if a.eq_ignore_ascii_case("none") => Self::None,
            Some("HS384" | "HS512") => Self::OtherHmac,
            Some(a)
                if a.starts_with("RS")
                    || a.starts_with("PS")
                    || a.starts_with("ES")
                    || a == "EdDSA" =>
            {
                Self::Asymmetric
            }
            _ => Self::Unknown,
        }
    }
}

/// Why a signed request was refused. Carries no part of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtError {
    /// No `Authorization` header.
    Missing,
    /// The header is not `Bearer <token>` (or not visible ASCII).
    NotBearer,
    /// The token is longer than [`MAX_TOKEN_BYTES`].
    TooLong {
        /// Bytes received.
        len: usize,
    },
    /// Not three base64url segments of JSON.
    Malformed,
    /// `alg` is not `HS256`.
    Algorithm(AlgKind),
    /// The signature does not match the secret.
    BadSignature,
    /// A claim has the wrong type.
    ClaimType,
    /// `iss` is absent or not `Vonage`.
    Issuer,
    /// No `iat`.
    MissingIat,
    /// `iat` is older than the window.
    Stale {
        /// Age, seconds.
        age_s: u64,
    },
    /// `iat` is in the future beyond the skew.
    FromFuture {
        /// Seconds ahead of our clock.
        ahead_s: u64,
    },
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// There is a payload but the token has no `payload_hash`.
    MissingPayloadHash,
    /// `payload_hash` does not match the payload.
    PayloadHash,
    /// `api_key` is not the pinned one.
    ApiKey,
    /// `application_id` is not the pinned one.
    ApplicationId,
    /// No `jti` (replay protection needs one).
    MissingJti,
    /// This `jti` was already used inside the window.
    Replayed,
}

impl JwtError {
    /// A short, fixed name for logs and the metric label `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::NotBearer => "not_bearer",
            Self::TooLong { .. } => "too_long",
            Self::Malformed => "malformed",
            Self::Algorithm(AlgKind::None) => "alg_none",
            Self::Algorithm(_) => "alg_unsupported",
            Self::BadSignature => "bad_signature",
            Self::ClaimType => "claim_type",
            Self::Issuer => "issuer",
            Self::MissingIat => "missing_iat",
            Self::Stale { .. } => "stale",
            Self::FromFuture { .. } => "from_future",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::MissingPayloadHash => "missing_payload_hash",
            Self::PayloadHash => "payload_hash",
            Self::ApiKey => "api_key",
            Self::ApplicationId => "application_id",
            Self::MissingJti => "missing_jti",
            Self::Replayed => "replayed",
        }
    }
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no Authorization header"),
            Self::NotBearer => f.write_str("Authorization is not a Bearer token"),
            Self::TooLong { len } => write!(f, "token of {len} bytes exceeds {MAX_TOKEN_BYTES}"),
            Self::Malformed => f.write_str("token is not a well-formed JWT"),
            Self::Algorithm(k) => write!(f, "token algorithm {k:?} refused: only HS256"),
            Self::BadSignature => f.write_str("token signature does not match the secret"),
            Self::ClaimType => f.write_str("token claim of the wrong type"),
            Self::Issuer => f.write_str("token issuer is not Vonage"),
            Self::MissingIat => f.write_str("token has no iat"),
            Self::Stale { age_s } => write!(f, "token issued {age_s} s ago, outside the window"),
            Self::FromFuture { ahead_s } => write!(f, "token issued {ahead_s} s in the future"),
            Self::Expired => f.write_str("token exp has passed"),
            Self::NotYetValid => f.write_str("token nbf is in the future"),
            Self::MissingPayloadHash => f.write_str("token has no payload_hash for a body"),
            Self::PayloadHash => f.write_str("payload_hash does not match the request"),
            Self::ApiKey => f.write_str("token api_key is not the configured one"),
            Self::ApplicationId => f.write_str("token application_id is not the configured one"),
            Self::MissingJti => f.write_str("token has no jti"),
            Self::Replayed => f.write_str("token jti was already used"),
        }
    }
}

impl std::error::Error for JwtError {}

/// What the token's `payload_hash` must cover.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// A request body (POST). Empty means no payload: nothing to check.
    Body(&'a [u8]),
    /// The decoded query pairs of a GET, in URL order. Empty means no payload.
    Query(&'a [(String, String)]),
    /// Do not check `payload_hash` (the media socket handshake, §1.2).
    Unchecked,
}

/// What a verified token said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// `jti`, when present.
    pub jti: Option<String>,
    /// `iat`, Unix seconds.
    pub iat: u64,
    /// `api_key`, when present.
    pub api_key: Option<String>,
    /// `application_id`, when present.
    pub application_id: Option<String>,
}

/// Verifies Vonage's HS256 webhook tokens with one signature secret.
#[derive(Clone)]
pub struct WebhookVerifier {
    key: DecodingKey,
    validation: Validation,
    max_age: Duration,
    skew: Duration,
    api_key: Option<String>,
    application_id: Option<String>,
}

impl fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is a secret: never printed.
        f.debug_struct("WebhookVerifier")
            .field("max_age", &self.max_age)
            .field("skew", &self.skew)
            .field("api_key", &self.api_key)
            .field("application_id", &self.application_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawClaims {
    iat: Option<serde_json::Number>,
    exp: Option<serde_json::Number>,
    nbf: Option<serde_json::Number>,
    jti: Option<String>,
    iss: Option<String>,
    payload_hash: Option<String>,
    api_key: Option<String>,
    application_id: Option<String>,
}

/// Whole seconds of a JSON number (`iat` is an integer; tolerate a float), clamped at 0.
fn secs(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.is_finite())
            .map(|f| f.max(0.0) as u64)
    })
}

impl WebhookVerifier {
    /// A verifier for tokens signed with `secret` (its UTF-8 bytes), with the default window.
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Time, issuer and the other claims are checked here against the caller's clock.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            max_age: DEFAULT_MAX_AGE,
            skew: CLOCK_SKEW,
            api_key: None,
            application_id: None,
        }
    }

    /// Sets the `iat` age window.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Requires `api_key == key`.
    pub fn pin_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Requires `application_id == id` when the claim is present (it is optional, §5.2).
    pub fn pin_application_id(mut self, id: impl Into<String>) -> Self {
        self.application_id = Some(id.into());
        self
    }

    /// The `iat` window plus the skew: how long a `jti` must be remembered.
    pub fn replay_window(&self) -> Duration {
        self.max_age + self.skew
    }

    /// Verifies the value of an `Authorization` header (`Bearer <token>`).
    pub fn verify_header(
        &self,
        header: Option<&[u8]>,
        payload: Payload<'_>,
        now_unix: u64,
    ) -> Result<VerifiedToken, JwtError> {
        let token = bearer_token(header)?;
        self.verify(token, payload, now_unix)
    }

    /// Verifies one token against `payload` at `now_unix` (seconds).
    pub fn verify(
        &self,
        token: &str,
        payload: Payload<'_>,
        now_unix: u64,
    ) -> Result<VerifiedToken, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::TooLong { len: token.len() });
        }
        let mut parts = token.split('.');
        let (Some(h), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        // The algorithm is checked on our own decoding of the header, before any key is used.
        let header = URL_SAFE_NO_PAD.decode(h).map_err(|_| JwtError::Malformed)?;
        let header: RawHeader<'_> =
            serde_json::from_slice(&header).map_err(|_| JwtError::Malformed)?;
        if header.alg.as_deref() != Some("HS256") {
            return Err(JwtError::Algorithm(AlgKind::of(header.alg.as_deref())));
        }
        let data =
            jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidSignature => JwtError::BadSignature,
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        JwtError::Algorithm(AlgKind::Unknown)
                    }
                    ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => JwtError::ClaimType,
                    _ => JwtError::Malformed,
                }
            })?;
        let c = data.claims;
        if c.iss.as_deref() != Some(ISSUER) {
            return Err(JwtError::Issuer);
        }
        let iat = c.iat.as_ref().ok_or(JwtError::MissingIat)?;
        let iat = secs(iat).ok_or(JwtError::ClaimType)?;
        let skew = self.skew.as_secs();
        if iat > now_unix.saturating_add(skew) {
            return Err(JwtError::FromFuture {
                ahead_s: iat - now_unix,
            });
        }
        let age = now_unix.saturating_sub(iat);
        if age > self.max_age.as_secs().saturating_add(skew) {
            return Err(JwtError::Stale { age_s: age });
        }
        if let Some(exp) = &c.exp {
            let exp = secs(exp).ok_or(JwtError::ClaimType)?;
            if exp.saturating_add(skew) < now_unix {
                return Err(JwtError::Expired);
            }
        }
        if let Some(nbf) = &c.nbf {
            let nbf = secs(nbf).ok_or(JwtError::ClaimType)?;
            if nbf > now_unix.saturating_add(skew) {
                return Err(JwtError::NotYetValid);
            }
        }
        check_payload(c.payload_hash.as_deref(), payload)?;
        if let Some(pinned) = &self.api_key
            && c.api_key.as_deref() != Some(pinned.as_str())
        {
            return Err(JwtError::ApiKey);
        }
        if let (Some(pinned), Some(got)) = (&self.application_id, &c.application_id)
            && got != pinned
        {
            return Err(JwtError::ApplicationId);
        }
        Ok(VerifiedToken {
            jti: c.jti,
            iat,
            api_key: c.api_key,
            application_id: c.application_id,
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header: Option<&[u8]>) -> Result<&str, JwtError> {
    let value = header.ok_or(JwtError::Missing)?;
    if value.len() > MAX_TOKEN_BYTES + 16 {
        return Err(JwtError::TooLong { len: value.len() });
    }
    let value = std::str::from_utf8(value).map_err(|_| JwtError::NotBearer)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(JwtError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(JwtError::NotBearer);
    }
    let token = token.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(JwtError::NotBearer);
    }
    Ok(token)
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        use fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn check_payload(claim: Option<&str>, payload: Payload<'_>) -> Result<(), JwtError> {
    let matches = |bytes: &[u8], claim: &str| sha256_hex(bytes).eq_ignore_ascii_case(claim);
    match payload {
        Payload::Unchecked => Ok(()),
        Payload::Body(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(()),
        Payload::Query([]) => Ok(()),
        Payload::Body(body) => {
            let claim = claim.ok_or(JwtError::MissingPayloadHash)?;
            if matches(body, claim) || matches(&compact_json(body), claim) {
                Ok(())
            } else {
                Err(JwtError::PayloadHash)
            }
        }
        Payload::Query(pairs) => {
            let claim = claim.ok_or(JwtError::MissingPayloadHash)?;
            if matches(query_json(pairs).as_bytes(), claim) {
                Ok(())
            } else {
                Err(JwtError::PayloadHash)
            }
        }
    }
}

/// `body` without the whitespace outside JSON strings (key order and escapes kept), the
/// second form §5.3 step 6 hashes when the exact bytes do not match.
pub fn compact_json(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
            out.push(b);
        } else if !b.is_ascii_whitespace() {
            out.push(b);
        }
    }
    out
}

/// The query pairs as the compact JSON object §5.3 step 8 hashes: keys in order of first
/// appearance, a repeated key keeps its last value, every value a string.
pub fn query_json(pairs: &[(String, String)]) -> String {
    let mut kept: Vec<(&str, &str)> = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        match kept.iter_mut().find(|(kk, _)| *kk == k.as_str()) {
            Some(slot) => slot.1 = v.as_str(),
            None => kept.push((k.as_str(), v.as_str())),
        }
    }
    let mut out = String::from("{");
    for (i, (k, v)) in kept.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Serialising a &str cannot fail.
        out.push_str(&serde_json::to_string(k).unwrap_or_default());
        out.push(':');
        out.push_str(&serde_json::to_string(v).unwrap_or_default());
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::{Value, json};

    fn vector() -> Value {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/vectors/34-signed-webhook.json");
        serde_json::from_slice(&std::fs::read(p).expect("vector")).expect("json")
    }

    const SECRET: &str = "voicegate-test-signature-secret-0123456789abcdef";
    const IAT: u64 = 1_741_947_331;

    fn sign(claims: &Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    }

    fn claims(body: &[u8]) -> Value {
        json!({"iat": IAT, "jti": "j-1", "iss": "Vonage", "payload_hash": sha256_hex(body),
               "api_key": "a1b2c3d4", "application_id": "app-1"})
    }

    #[test]
    fn vector_10_34() {
        let v = vector();
        let c = &v["content"];
        let secret = c["signature_secret"].as_str().unwrap();
        let auth = c["request"]["headers"]["Authorization"].as_str().unwrap();
        let body = c["request"]["body"].as_str().unwrap().as_bytes();
        let ver = WebhookVerifier::new(secret)
            .pin_api_key("a1b2c3d4")
            .pin_application_id("aaaaaaaa-bbbb-cccc-dddd-0123456789ab");
        let ok = ver
            .verify_header(Some(auth.as_bytes()), Payload::Body(body), IAT)
            .expect("valid");
        assert_eq!(
            ok.jti.as_deref(),
            Some("c5ba8f24-1a14-4c10-bfdf-3fbe8ce511b5")
        );
        assert_eq!(ok.iat, IAT);
        assert_eq!(
            sha256_hex(body),
            "731777d8804a786094e184b6fae1ed7c4924724be105c47a8e063dd201014ac4"
        );
        // Negative cases of the vector.
        let token = bearer_token(Some(auth.as_bytes())).unwrap();
        assert_eq!(
            WebhookVerifier::new("not-the-secret").verify(token, Payload::Body(body), IAT),
            Err(JwtError::BadSignature)
        );
        let altered = c["negative"][1]["body"].as_str().unwrap().as_bytes();
        assert_eq!(
            sha256_hex(altered),
            c["negative"][1]["computed_payload_hash"].as_str().unwrap()
        );
        assert_eq!(
            ver.verify(token, Payload::Body(altered), IAT),
            Err(JwtError::PayloadHash)
        );
        assert_eq!(
            ver.verify(token, Payload::Body(body), IAT + 3600),
            Err(JwtError::Stale { age_s: 3600 })
        );
        // Within the skew either way.
        assert!(ver.verify(token, Payload::Body(body), IAT + 330).is_ok());
        assert!(ver.verify(token, Payload::Body(body), IAT - 30).is_ok());
        assert_eq!(
            ver.verify(token, Payload::Body(body), IAT - 31),
            Err(JwtError::FromFuture { ahead_s: 31 })
        );
        // Pins.
        assert_eq!(
            WebhookVerifier::new(secret).pin_api_key("other").verify(
                token,
                Payload::Body(body),
                IAT
            ),
            Err(JwtError::ApiKey)
        );
        assert_eq!(
            WebhookVerifier::new(secret)
                .pin_application_id("other")
                .verify(token, Payload::Body(body), IAT),
            Err(JwtError::ApplicationId)
        );
        // The same body pretty-printed still matches (the compact form is hashed too).
        let pretty =
            serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(body).unwrap())
                .unwrap();
        assert_eq!(compact_json(&pretty).len(), body.len());
    }

    #[test]
    fn algorithms_other_than_hs256_are_refused() {
        let body = br#"{"a":1}"#;
        let c = claims(body);
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let ver = WebhookVerifier::new(SECRET);
        for (alg, kind) in [
            ("none", AlgKind::None),
            ("None", AlgKind::None),
            ("RS256", AlgKind::Asymmetric),
            ("ES256", AlgKind::Asymmetric),
            ("EdDSA", AlgKind::Asymmetric),
            ("HS512", AlgKind::OtherHmac),
            ("hs256", AlgKind::Unknown),
        ] {
            let t = format!("{}.{}.", b64(&json!({"alg": alg, "typ": "JWT"})), b64(&c));
            assert_eq!(
                ver.verify(&t, Payload::Body(body), IAT),
                Err(JwtError::Algorithm(kind)),
                "{alg}"
            );
            let t = format!("{t}c2ln");
            assert_eq!(
                ver.verify(&t, Payload::Body(body), IAT),
                Err(JwtError::Algorithm(kind)),
                "{alg}"
            );
        }
        // No alg at all.
        let t = format!("{}.{}.x", b64(&json!({"typ": "JWT"})), b64(&c));
        assert_eq!(
            ver.verify(&t, Payload::Body(body), IAT),
            Err(JwtError::Algorithm(AlgKind::Unknown))
        );
        // A real HS512 token with the right secret is still refused.
        let t = encode(
            &Header::new(Algorithm::HS512),
            &c,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            ver.verify(&t, Payload::Body(body), IAT),
            Err(JwtError::Algorithm(AlgKind::OtherHmac))
        );
    }

    #[test]
    fn claims_and_shapes() {
        let body = br#"{"a":1}"#;
        let ver = WebhookVerifier::new(SECRET);
        let ok = sign(&claims(body), SECRET);
        assert!(ver.verify(&ok, Payload::Body(body), IAT).is_ok());
        let mut c = claims(body);
        c["iss"] = json!("Nexmo");
        assert_eq!(
            ver.verify(&sign(&c, SECRET), Payload::Body(body), IAT),
            Err(JwtError::Issuer)
        );
        let mut c = claims(body);
        c.as_object_mut().unwrap().remove("iat");
        assert_eq!(
            ver.verify(&sign(&c, SECRET), Payload::Body(body), IAT),
            Err(JwtError::MissingIat)
        );
        let mut c = claims(body);
        c["iat"] = json!("yesterday");
        assert_eq!(
            ver.verify(&sign(&c, SECRET), Payload::Body(body), IAT),
            Err(JwtError::ClaimType)
        );
        let mut c = claims(body);
        c["exp"] = json!(IAT - 100);
        assert_eq!(
            ver.verify(&sign(&c, SECRET), Payload::Body(body), IAT),
            Err(JwtError::Expired)
        );
        let mut c = claims(body);
        c["nbf"] = json!(IAT + 100);
        assert_eq!(
            ver.verify(&sign(&c, SECRET), Payload::Body(body), IAT),
            Err(JwtError::NotYetValid)
        );
        let mut c = claims(body);
        c.as_object_mut().unwrap().remove("payload_hash");
        let no_hash = sign(&c, SECRET);
        assert_eq!(
            ver.verify(&no_hash, Payload::Body(body), IAT),
            Err(JwtError::MissingPayloadHash)
        );
        // No payload: nothing to hash; the socket handshake never checks it.
        assert!(ver.verify(&no_hash, Payload::Body(b""), IAT).is_ok());
        assert!(ver.verify(&no_hash, Payload::Unchecked, IAT).is_ok());
        assert!(ver.verify(&ok, Payload::Unchecked, IAT).is_ok());
        // Tampered claims segment, truncated tokens, junk.
        let mut parts: Vec<&str> = ok.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            json!({"iat": IAT, "iss": "Vonage", "jti": "x", "payload_hash": sha256_hex(b"{}")})
                .to_string(),
        );
        parts[1] = &forged;
        assert_eq!(
            ver.verify(&parts.join("."), Payload::Body(b"{}"), IAT),
            Err(JwtError::BadSignature)
        );
        for junk in [
            "",
            ".",
            "..",
            "a.b",
            "a.b.c.d",
            "!!!.b.c",
            &ok[..ok.len() / 2],
        ] {
            assert!(
                ver.verify(junk, Payload::Body(body), IAT).is_err(),
                "{junk}"
            );
        }
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            ver.verify(&long, Payload::Unchecked, IAT),
            Err(JwtError::TooLong { len: long.len() })
        );
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer_token(None), Err(JwtError::Missing));
        assert_eq!(bearer_token(Some(b"Basic abc")), Err(JwtError::NotBearer));
        assert_eq!(bearer_token(Some(b"Bearer")), Err(JwtError::NotBearer));
        assert_eq!(bearer_token(Some(b"Bearer \xff")), Err(JwtError::NotBearer));
        assert_eq!(bearer_token(Some(b"bearer  a.b.c ")), Ok("a.b.c"));
    }

    #[test]
    fn get_query_hash() {
        // §5.3 step 8's example.
        let pairs: Vec<(String, String)> = [
            ("to", "447700900000"),
            ("from", "447700900001"),
            ("uuid", "abc"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            query_json(&pairs),
            r#"{"to":"447700900000","from":"447700900001","uuid":"abc"}"#
        );
        let mut c = claims(b"");
        c["payload_hash"] = json!(sha256_hex(query_json(&pairs).as_bytes()));
        let t = sign(&c, SECRET);
        let ver = WebhookVerifier::new(SECRET);
        assert!(ver.verify(&t, Payload::Query(&pairs), IAT).is_ok());
        let mut other = pairs.clone();
        other[2].1 = "abd".into();
        assert_eq!(
            ver.verify(&t, Payload::Query(&other), IAT),
            Err(JwtError::PayloadHash)
        );
        let dup = vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".into(), "2".into()),
            ("a".into(), "3".into()),
        ];
        assert_eq!(query_json(&dup), r#"{"a":"3","b":"2"}"#);
    }

    #[test]
    fn errors_never_carry_the_token() {
        let t = sign(&claims(b"x"), "wrong");
        let e = WebhookVerifier::new(SECRET)
            .verify(&t, Payload::Body(b"x"), IAT)
            .unwrap_err();
        let shown = format!("{e} {e:?} {}", e.reason());
        for part in t.split('.') {
            assert!(!shown.contains(part), "{shown}");
        }
        let dbg = format!("{:?}", WebhookVerifier::new(SECRET));
        assert!(!dbg.contains(SECRET), "{dbg}");
    }
}
