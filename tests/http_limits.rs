//! The HTTP listener's limits through real sockets: a client that sends nothing, or a head or
//! a body too slowly, is cut off; connections beyond `--max-connections` get a 503 while the
//! server keeps serving; a shutdown does not wait on a client that never finishes.
//!
//! Deadlines here are 1 s and the assertions only bound them loosely (a shared 2-core machine):
//! what matters is that the server acts at all, where before it waited for ever.

mod server_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use server_support::{TestServer, call, http_get, metric, parse_response, start, wait_metric};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use voicegate::agent::echo::EchoAgent;
use voicegate::server::{self, AppState, ServerConfig};

/// Far beyond any deadline under test, short of hanging the test run.
const PATIENCE: Duration = Duration::from_secs(20);

fn limited(max_connections: usize) -> ServerConfig {
    let mut c = ServerConfig::new();
    c.http.header_timeout = Duration::from_secs(1);
    c.http.body_timeout = Duration::from_secs(1);
    c.http.max_connections = max_connections;
    c
}

/// Reads until the peer closes (or resets); returns what arrived, or `None` if it never did.
async fn read_until_closed(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    match tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf)).await {
        Ok(_) => Some(buf),
        Err(_) => None,
    }
}

async fn metrics_text(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    body
}

#[tokio::test]
async fn a_client_that_sends_nothing_or_half_a_head_is_cut_off() {
    let TestServer { addr, .. } = start(limited(64)).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"POST /events HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    assert!(
        read_until_closed(&mut silent).await.is_some(),
        "never closed"
    );
    assert!(read_until_closed(&mut half).await.is_some(), "never closed");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    let text = metrics_text(addr).await;
    assert!(
        metric(&text, "voicegate_http_timeouts_total{phase=\"headers\"}").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_head_deadline() {
    let TestServer { addr, .. } = start(limited(64)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The response arrives and the connection stays open for a next request …
    let mut first = [0u8; 12];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    // … until the head deadline passes with none.
    let t = Instant::now();
    let rest = read_until_closed(&mut s).await.expect("never closed");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert!(String::from_utf8_lossy(&rest).ends_with("ok\n"), "{rest:?}");
}

#[tokio::test]
async fn a_trickled_webhook_body_gets_408() {
    let TestServer { addr, .. } = start(limited(64)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /events HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
          content-length: 200\r\n\r\n{\"status\":",
    )
    .await
    .unwrap();
    let raw = read_until_closed(&mut s).await.expect("never answered");
    let (status, body) = parse_response(&raw);
    assert_eq!(status, 408, "{body}");
    let text = metrics_text(addr).await;
    assert_eq!(
        metric(&text, "voicegate_http_timeouts_total{phase=\"body\"}"),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_the_server_recovers() {
    let TestServer { addr, .. } = start(limited(4)).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // Let the accept loop take all four before the fifth arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = TcpStream::connect(addr).await.unwrap();
    let raw = read_until_closed(&mut over).await.expect("never closed");
    let (status, body) = parse_response(&raw);
    assert_eq!(status, 503, "{body}");
    // The held connections send nothing, so the head deadline frees their slots.
    for s in &mut held {
        assert!(read_until_closed(s).await.is_some(), "never closed");
    }
    let (status, _) = http_get(addr, "/healthz").await;
    assert_eq!(status, 200);
    let text = metrics_text(addr).await;
    assert!(
        metric(&text, "voicegate_http_connections_refused_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    // This scrape's own connection is the only one open.
    assert_eq!(
        metric(&text, "voicegate_http_connections"),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_shutdown_does_not_wait_on_a_client_that_never_finishes() {
    let mut config = limited(64);
    // Long enough that only the shutdown can end the connection.
    config.http.header_timeout = Duration::from_secs(300);
    config.drain_timeout = Duration::ZERO;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::new(config, std::sync::Arc::new(EchoAgent::default()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server::serve(listener, state, async move {
        let _ = stop_rx.await;
    }));
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (status, _) = http_get(addr, "/healthz").await;
    assert_eq!(status, 200);
    stop_tx.send(()).unwrap();
    let result = tokio::time::timeout(PATIENCE, served)
        .await
        .expect("serve() still waits on the half-sent request");
    assert!(result.unwrap().is_ok());
    drop(half);
}

#[tokio::test]
async fn media_sockets_leave_the_connection_count_when_they_upgrade() {
    // A cap of 2: more calls than that stay up at once, because an upgraded socket is no
    // longer an HTTP connection (`--max-calls` caps calls).
    let TestServer { addr, .. } = start(limited(2)).await;
    let mut legs = Vec::new();
    for i in 0..4 {
        legs.push(call(addr, &format!("cafe000{i}-0000-0000-0000-000000000000")).await);
    }
    let text = wait_metric(addr, "voicegate_active_calls", 4.0).await;
    assert_eq!(
        metric(&text, "voicegate_http_connections"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "voicegate_http_connections_refused_total"),
        Some(0.0),
        "{text}"
    );
    drop(legs);
}
