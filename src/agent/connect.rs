//! Opening an agent's WebSocket: the one client socket per call that the agent bridge and the
//! OpenAI Realtime adapter talk through.
//!
//! `ws://` is plain TCP; `wss://` is TLS through rustls with the `ring` provider and the
//! platform's trust store (`rustls-platform-verifier`, as the Vonage REST client trusts), built
//! once per process. No OpenSSL. Every socket gets the same limits: a connect deadline, a largest
//! incoming message (checked by tungstenite before it buffers the payload), small buffers, and
//! no Nagle delay (20 ms frames are latency-bound).
//!
//! URLs can carry secrets in their query (`?token=…`); errors and logs show
//! [`redacted`] URLs only.
//!
//! Not real-time (connection set-up).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::ClientConfig;
use rustls_platform_verifier::BuilderVerifierExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// An agent's socket.
pub type AgentSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bytes tungstenite may buffer unsent before a send fails: a peer that stops reading costs at
/// most this much.
const MAX_WRITE_BUFFER: usize = 512 * 1024;

/// Why an agent socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not `ws://host…` or `wss://host…`.
    #[error("invalid agent URL {url:?}: {reason}")]
    BadUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The TLS configuration could not be built (no usable trust store).
    #[error("cannot set up TLS for wss:// agents: {0}")]
    Tls(String),
    /// Nothing answered, or the handshake did not finish, in time.
    #[error("agent {url} did not accept the connection within {after:?}")]
    Timeout {
        /// The URL, redacted.
        url: String,
        /// The deadline.
        after: Duration,
    },
    /// TCP, TLS or the WebSocket handshake failed.
    #[error("cannot connect to agent {url}: {source}")]
    Failed {
        /// The URL, redacted.
        url: String,
        /// Why.
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
}

/// Checks an agent URL: `ws://` or `wss://`, a host, no spaces or fragment. Returns whether it
/// is TLS.
pub fn check_url(url: &str) -> Result<bool, ConnectError> {
    let bad = |reason| ConnectError::BadUrl {
        url: redacted(url),
        reason,
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else {
        return Err(bad("expected ws://… or wss://…"));
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if url.len() > 2_048 || url.bytes().any(|b| b <= b' ' || b == b'#' || b >= 0x7f) {
        return Err(bad("spaces, control characters, non-ASCII or a fragment"));
    }
    Ok(tls)
}

/// Whether a `ws://`/`wss://` URL names this machine (`localhost`, `127.0.0.0/8`, `[::1]`).
pub fn is_loopback(url: &str) -> bool {
    let rest = url
        .strip_prefix("wss://")
        .or_else(|| url.strip_prefix("ws://"))
        .unwrap_or("");
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `url` without its query string (which may hold a token), for errors and logs.
pub fn redacted(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_owned(),
    }
}

/// The process-wide TLS client configuration: ring, TLS 1.2 and 1.3, the platform verifier.
fn tls_config() -> Result<Arc<ClientConfig>, ConnectError> {
    static TLS: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    TLS.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_platform_verifier())
            .map(|b| Arc::new(b.with_no_client_auth()))
            .map_err(|e| e.to_string())
    })
    .clone()
    .map_err(ConnectError::Tls)
}

/// Opens the WebSocket at `url` with extra request `headers`, accepting incoming messages of at
/// most `max_message` bytes, within `deadline` (TCP, TLS and the upgrade together).
pub async fn connect(
    url: &str,
    headers: &[(HeaderName, HeaderValue)],
    max_message: usize,
    deadline: Duration,
) -> Result<AgentSocket, ConnectError> {
    let tls = check_url(url)?;
    let failed = |source| ConnectError::Failed {
        url: redacted(url),
        source: Box::new(source),
    };
    let mut request = url.into_client_request().map_err(failed)?;
    for (name, value) in headers {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    let connector = if tls {
        Connector::Rustls(tls_config()?)
    } else {
        Connector::Plain
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        // Per call: the buffer a frame is read into is shared with the message until it is
        // dropped, so bursts grow it by doublings. 4 KiB (against 16) took the agent bridge from
        // 327 to 282 KiB of RSS a call (300 calls, `examples/agent_echo.py`'s 4 KiB chunks) at the
        // same CPU; a larger message still gets a buffer of its length, in more reads.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER);
    let attempt = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(config),
        true,
        Some(connector),
    );
    match tokio::time::timeout(deadline, attempt).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(e)) => Err(failed(e)),
        Err(_) => Err(ConnectError::Timeout {
            url: redacted(url),
            after: deadline,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_redacted() {
        assert_eq!(check_url("ws://127.0.0.1:9000/agent").ok(), Some(false));
        assert_eq!(
            check_url("wss://agent.example.com/a?token=x").ok(),
            Some(true)
        );
        assert!(check_url("http://x/agent").is_err());
        assert!(check_url("ws:///agent").is_err());
        assert!(check_url("ws://a b/agent").is_err());
        assert!(check_url("ws://host/agent#frag").is_err());
        assert_eq!(
            redacted("wss://h/agent?token=secret"),
            "wss://h/agent?…".to_owned()
        );
        let e = check_url("ftp://h/?token=secret").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
        assert!(is_loopback("ws://127.0.0.1:9000/x"));
        assert!(is_loopback("ws://localhost/x"));
        assert!(is_loopback("ws://[::1]:80/x"));
        assert!(!is_loopback("ws://api.openai.com/v1/realtime"));
        assert!(!is_loopback("ws://127.0.0.1.evil.example/x"));
    }

    #[test]
    fn the_tls_configuration_builds() {
        assert!(tls_config().is_ok());
    }

    #[tokio::test]
    async fn wss_to_a_plain_socket_fails_in_tls_without_panicking() {
        // Speaks TLS to a server that answers plain HTTP: rustls must refuse the reply.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let e = connect(
            &format!("wss://127.0.0.1:{}/agent", addr.port()),
            &[],
            1024,
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ConnectError::Failed { .. }), "{e}");
    }
}
