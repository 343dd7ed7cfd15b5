//! The application JWT that authenticates voicegate's own requests to the Vonage Voice REST API
//! (vonage-protocol.md §6.2): RS256, signed with the Vonage application's private key.
//!
//! Owns minting, caching and renewing that token ([`AppJwt::token`]), and the clock it reads
//! ([`Clock`], so tests can move time on). Does not own verifying Vonage's HS256 webhook tokens
//! (those use the signature secret, not this key), nor HTTP.
//!
//! One token is cached and reused until shortly before it expires: a minute before `exp`, or a
//! quarter of its lifetime for lifetimes under four minutes ([`AppJwt::renew_margin`]). After a
//! `401` the client calls [`AppJwt::invalidate`] so the next request signs afresh.
//!
//! The private key and the tokens never appear in `Debug` output or logs.
//!
//! Not real-time (a signature costs about a millisecond in a release build; once per renewal).

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// Default token lifetime: 15 minutes, as Vonage's SDKs use (§6.2).
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
/// Shortest lifetime Vonage accepts.
pub const MIN_TTL: Duration = Duration::from_secs(30);
/// Longest lifetime Vonage accepts.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Renew this long before `exp` (less for short lifetimes, see [`AppJwt::renew_margin`]).
pub const RENEW_BEFORE: Duration = Duration::from_secs(60);
/// Largest private key file read, bytes (a 4096-bit PKCS#8 PEM is about 3.3 KiB).
pub const MAX_KEY_FILE: u64 = 64 * 1024;

/// Wall-clock time in whole Unix seconds: what JWT claims are made of.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Seconds since the Unix epoch, UTC.
    fn now_unix(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> u64 {
        // A clock before 1970 is a broken host; 0 then yields tokens Vonage refuses with 401,
        // which is reported, rather than a panic.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock that only moves when told to, for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A clock reading `now_unix`.
    pub fn new(now_unix: u64) -> Self {
        Self {
            now: AtomicU64::new(now_unix),
        }
    }

    /// Moves the clock forward by `by` (whole seconds).
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_secs(), Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, now_unix: u64) {
        self.now.store(now_unix, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_unix(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// The claims of an application JWT (§6.2, vector §10.35).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppClaims {
    /// The Vonage application id.
    pub application_id: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Unique token id (a UUID v4).
    pub jti: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// Why an application JWT could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppJwtError {
    /// The private key file could not be read.
    #[error("cannot read the private key {path}: {source}")]
    KeyFile {
        /// The path given.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The private key file is larger than [`MAX_KEY_FILE`].
    #[error("the private key {path} is {len} bytes; a PEM key is a few KiB")]
    KeyFileTooLarge {
        /// The path given.
        path: std::path::PathBuf,
        /// Its size.
        len: u64,
    },
    /// The key is not an RSA private key in PEM (PKCS#1 or PKCS#8).
    #[error("the private key is not an RSA private key in PEM format: {0}")]
    InvalidKey(#[source] jsonwebtoken::errors::Error),
    /// The application id is empty or not printable ASCII.
    #[error("invalid application id ({len} bytes): expected the application's UUID")]
    InvalidApplicationId {
        /// Length of what was given, bytes.
        len: usize,
    },
    /// The lifetime is outside what Vonage accepts.
    #[error("token lifetime {ttl:?} is outside {MIN_TTL:?}..={MAX_TTL:?}")]
    InvalidTtl {
        /// What was asked.
        ttl: Duration,
    },
    /// Signing failed.
    #[error("cannot sign the application JWT: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// A signed token and what it was made of.
#[derive(Clone)]
struct Cached {
    token: Arc<str>,
    claims: AppClaims,
}

/// Mints, caches and renews the application JWT. Share it behind an `Arc`; every method takes
/// `&self`.
pub struct AppJwt {
    application_id: String,
    key: EncodingKey,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    cached: Mutex<Option<Cached>>,
}

impl fmt::Debug for AppJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key and the token are secrets: never printed.
        f.debug_struct("AppJwt")
            .field("application_id", &self.application_id)
            .field("ttl", &self.ttl)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl AppJwt {
    /// A signer for `application_id` with the RSA private key in `pem` (PKCS#8
    /// `-----BEGIN PRIVATE KEY-----` as Vonage issues it, or PKCS#1), the system clock and the
    /// default 15-minute lifetime.
    pub fn from_pem(application_id: impl Into<String>, pem: &[u8]) -> Result<Self, AppJwtError> {
        let application_id = application_id.into();
        let id_ok = !application_id.is_empty()
            && application_id.len() <= 128
            && application_id.bytes().all(|b| b.is_ascii_graphic());
        if !id_ok {
            return Err(AppJwtError::InvalidApplicationId {
                len: application_id.len(),
            });
        }
        let key = EncodingKey::from_rsa_pem(pem).map_err(AppJwtError::InvalidKey)?;
        Ok(Self {
            application_id,
            key,
            ttl: DEFAULT_TTL,
            clock: Arc::new(SystemClock),
            cached: Mutex::new(None),
        })
    }

    /// Like [`from_pem`](Self::from_pem), reading the key from the file at `path`.
    pub fn from_pem_file(
        application_id: impl Into<String>,
        path: impl AsRef<Path>,
    ) -> Result<Self, AppJwtError> {
        let path = path.as_ref();
        let io = |source| AppJwtError::KeyFile {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_KEY_FILE {
            return Err(AppJwtError::KeyFileTooLarge {
                path: path.to_owned(),
                len,
            });
        }
        let pem = std::fs::read(path).map_err(io)?;
        Self::from_pem(application_id, &pem)
    }

    /// Sets the token lifetime: 30 s to 24 h.
    pub fn with_ttl(mut self, ttl: Duration) -> Result<Self, AppJwtError> {
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(AppJwtError::InvalidTtl { ttl });
        }
        self.ttl = ttl;
        *self.lock() = None;
        Ok(self)
    }

    /// Reads time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        *self.lock() = None;
        self
    }

    /// The application id.
    pub fn application_id(&self) -> &str {
        &self.application_id
    }

    /// The token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How long before `exp` a cached token is replaced: [`RENEW_BEFORE`], or a quarter of the
    /// lifetime when that is shorter.
    pub fn renew_margin(&self) -> Duration {
        RENEW_BEFORE.min(self.ttl / 4)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        // The guarded value is replaced whole, so a poisoned lock still holds a consistent one.
        self.cached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A valid token: the cached one while it has more than [`renew_margin`](Self::renew_margin)
    /// left, else a freshly signed one (which is then cached).
    pub fn token(&self) -> Result<Arc<str>, AppJwtError> {
        Ok(self.token_with_claims()?.0)
    }

    /// Like [`token`](Self::token), also returning the token's claims.
    pub fn token_with_claims(&self) -> Result<(Arc<str>, AppClaims), AppJwtError> {
        let now = self.clock.now_unix();
        let mut cached = self.lock();
        if let Some(c) = cached.as_ref()
            && now.saturating_add(self.renew_margin().as_secs()) < c.claims.exp
            // A clock that went backwards past `iat` would make Vonage see a token from the
            // future (401): sign a new one.
            && now >= c.claims.iat
        {
            return Ok((c.token.clone(), c.claims.clone()));
        }
        let claims = AppClaims {
            application_id: self.application_id.clone(),
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            exp: now.saturating_add(self.ttl.as_secs()),
        };
        let token: Arc<str> =
            jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
                .map_err(AppJwtError::Sign)?
                .into();
        tracing::debug!(jti = %claims.jti, iat = claims.iat, exp = claims.exp, "signed a new application JWT");
        *cached = Some(Cached {
            token: token.clone(),
            claims: claims.clone(),
        });
        Ok((token, claims))
    }

    /// Drops the cached token (after Vonage refused it with `401`), so the next
    /// [`token`](Self::token) signs a new one.
    pub fn invalidate(&self) {
        *self.lock() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = include_bytes!("../../tests/data/keys/TEST-ONLY-app-private.pem");
    const PUBLIC: &[u8] = include_bytes!("../../tests/data/keys/TEST-ONLY-app-public.pem");
    const APP: &str = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab";

    fn claims_of(token: &str) -> AppClaims {
        let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC).unwrap();
        jsonwebtoken::decode::<AppClaims>(token, &key, &v)
            .unwrap()
            .claims
    }

    #[test]
    fn claims_match_the_vector_shape_and_are_cached_then_renewed() {
        let clock = Arc::new(ManualClock::new(1_741_947_331));
        let jwt = AppJwt::from_pem(APP, KEY)
            .unwrap()
            .with_clock(clock.clone());
        let (t1, c1) = jwt.token_with_claims().unwrap();
        let header = jsonwebtoken::decode_header(&*t1).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(claims_of(&t1), c1);
        assert_eq!(c1.application_id, APP);
        assert_eq!(c1.iat, 1_741_947_331);
        assert_eq!(c1.exp, 1_741_948_231, "exp = iat + 900 as in §10.35");
        assert!(uuid::Uuid::parse_str(&c1.jti).is_ok());

        // Reused until a minute before exp.
        clock.advance(Duration::from_secs(900 - 61));
        assert_eq!(jwt.token().unwrap(), t1);
        clock.advance(Duration::from_secs(1));
        let (t2, c2) = jwt.token_with_claims().unwrap();
        assert_ne!(t2, t1);
        assert_ne!(c2.jti, c1.jti);
        assert_eq!(c2.iat, 1_741_947_331 + 840);

        // Invalidation forces a new token at once.
        jwt.invalidate();
        assert_ne!(jwt.token_with_claims().unwrap().1.jti, c2.jti);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(matches!(
            AppJwt::from_pem(APP, b"not a key"),
            Err(AppJwtError::InvalidKey(_))
        ));
        assert!(matches!(
            AppJwt::from_pem("", KEY),
            Err(AppJwtError::InvalidApplicationId { .. })
        ));
        let jwt = AppJwt::from_pem(APP, KEY).unwrap();
        assert!(jwt.with_ttl(Duration::from_secs(10)).is_err());
        let jwt = AppJwt::from_pem(APP, KEY).unwrap();
        let jwt = jwt.with_ttl(Duration::from_secs(40)).unwrap();
        assert_eq!(jwt.renew_margin(), Duration::from_secs(10));
        assert!(!format!("{jwt:?}").contains("PRIVATE"));
        assert!(matches!(
            AppJwt::from_pem_file(APP, "/nonexistent/key.pem"),
            Err(AppJwtError::KeyFile { .. })
        ));
    }
}
