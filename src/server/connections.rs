//! The HTTP listener: accepts TCP connections and serves each with hyper's HTTP/1 server,
//! with the limits a server that faces the internet needs.
//!
//! `axum::serve` has none of them: a client that opens a connection and sends nothing (or a
//! byte a minute) holds a file descriptor and a task for ever, so a few hundred such clients
//! exhaust the descriptor limit, `/healthz` stops answering, and a graceful shutdown waits on
//! them for ever. Here:
//!
//! - **request head deadline** (`--http-header-timeout-s`): the request line and headers must
//!   arrive within it, or the connection is closed. hyper starts the clock when it starts
//!   reading a head, which includes an idle keep-alive connection waiting for its next
//!   request, so the same deadline is the idle timeout;
//! - **request body deadline** (`--http-body-timeout-s`): enforced where a body is read (the
//!   webhook extractor, [`super::auth`]), answered with 408;
//! - **connection cap** (`--max-connections`): HTTP connections at once, media sockets not
//!   counted (they leave this count at the upgrade and are capped by `--max-calls`). Beyond
//!   it a connection gets a fixed `503` and is closed at once, so a flood costs no task and
//!   no buffer;
//! - **accept errors**: out of descriptors (`EMFILE`/`ENFILE`), accept fails while the
//!   connection waits in the backlog; the loop backs off 100 ms instead of spinning, counts
//!   it, and logs it at most once a second;
//! - **shutdown**: on the stop signal the listener closes, every connection is asked to finish
//!   its request in progress and close (hyper's graceful shutdown), and after
//!   [`SHUTDOWN_GRACE`] the rest are dropped, so a client that never finishes cannot hold the
//!   process up.
//!
//! TCP_NODELAY is set on every connection: frames are small and latency-bound, and Nagle's
//! algorithm would hold the second frame of a burst until the peer's ACK arrives.
//!
//! Not real-time.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::metrics::{HttpTimeout, Metrics};

/// How long connections may take to finish once the server stops, before they are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Back-off after an accept error that is not about one connection (out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a connection over the cap gets before it is closed.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
content-type: text/plain\r\ncontent-length: 22\r\nretry-after: 1\r\n\r\ntoo many connections\r\n";

/// Largest request head (request line and headers) accepted, bytes. Vonage's webhook
/// requests carry a few hundred bytes of headers and a signed JWT of under 1 KiB.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The HTTP limits (`--http-header-timeout-s`, `--http-body-timeout-s`, `--max-connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Deadline for a request's line and headers, and for an idle keep-alive connection.
    pub header_timeout: Duration,
    /// Deadline for reading a request body.
    pub body_timeout: Duration,
    /// HTTP connections served at once (media sockets not counted once upgraded).
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// Serves `router` on `listener` under `limits` until `stop` completes, then shuts the
/// connections down (at most [`SHUTDOWN_GRACE`]) and returns.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: Metrics,
    stop: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    // At most u32::MAX, so the shutdown can wait for every permit in one `acquire_many`, and
    // at most what a semaphore holds.
    let max = limits
        .max_connections
        .clamp(1, (u32::MAX as usize).min(Semaphore::MAX_PERMITS));
    let permits = Arc::new(Semaphore::new(max));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut accept_log = AcceptErrorLog::default();
    tokio::pin!(stop);
    loop {
        let tcp = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => tcp,
                Err(e) => {
                    if !is_per_connection(&e) {
                        metrics.http_accept_errors.inc();
                        accept_log.log(&e);
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            metrics.http_connections_refused.inc();
            refuse(tcp);
            continue;
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let conn = http
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(router.clone()))
            .with_upgrades();
        let mut shutdown = shutdown_rx.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            metrics.http_connections.inc();
            tokio::pin!(conn);
            // Resolves once the server stops (or is gone); the guard is not held across awaits.
            let stopping = async move {
                let _ = shutdown.wait_for(|stop| *stop).await.is_ok();
            };
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stopping => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    metrics.http_timeout(HttpTimeout::headers);
                }
                tracing::debug!(error = %e, "http connection ended with an error");
            }
            metrics.http_connections.dec();
            drop(permit);
        });
    }
    drop(listener);
    let _ = shutdown_tx.send(true);
    // Every permit back means every connection has ended.
    let all = u32::try_from(max).unwrap_or(u32::MAX); // `max` fits, by the clamp above
    if tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = max - permits.available_permits(),
            "shutdown: dropping HTTP connections that did not finish in time"
        );
    }
}

/// Accept errors about one connection (it went away before we took it): nothing to wait for.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A connection over the cap: a fixed 503 if the socket takes it now, then closed.
fn refuse(tcp: TcpStream) {
    let _ = tcp.try_write(OVER_CAPACITY);
    drop(tcp);
}

/// Logs accept errors at most once a second, with the count since the last line.
#[derive(Default)]
struct AcceptErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrorLog {
    fn log(&mut self, e: &io::Error) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            error = %e,
            suppressed = self.suppressed,
            "accept failed (out of file descriptors? raise `ulimit -n` or lower --max-connections); retrying"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_over_capacity_answer_is_well_formed() {
        let text = std::str::from_utf8(OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), len);
        assert!(head.starts_with("HTTP/1.1 503 "));
    }

    #[test]
    fn only_errors_about_one_connection_skip_the_back_off() {
        assert!(is_per_connection(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        // EMFILE
        assert!(!is_per_connection(&io::Error::from_raw_os_error(24)));
    }
}
