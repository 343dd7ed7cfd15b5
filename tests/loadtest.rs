//! `voicegate loadtest` against the real server started in-process on 127.0.0.1:0: 50 calls
//! for 5 s must all be established, none may fail, and no frame may have the wrong size. No
//! timing assertions (CI machines are small and noisy); the figures are printed.

mod server_support;

use std::path::Path;
use std::time::Duration;

use server_support::{config_at, start};
use voicegate::core::SampleRate;
use voicegate::tools::loadtest::{LoadtestArgs, find_listener_pid, loadtest, render};

fn args_for(addr: std::net::SocketAddr, calls: usize) -> LoadtestArgs {
    LoadtestArgs {
        server: format!("http://{addr}"),
        calls,
        duration: Duration::from_secs(5),
        wav: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/audio/speech_001.in.wav"),
        ramp: Duration::from_secs(1),
        gap: Duration::from_secs(1),
        total: None,
        gain_db: 10.0,
        server_pid: None,
        threads: 1,
        json: false,
        signature_secret: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_calls_for_five_seconds() {
    let server = start(config_at(SampleRate::Hz16000)).await;
    let args = args_for(server.addr, 50);
    let r = loadtest(&args).await.expect("loadtest runs");
    println!("{}", render(&r));
    println!("{}", serde_json::to_string(&r).unwrap());
    assert_eq!(r.calls_established, 50, "{r:?}");
    assert_eq!(r.calls_failed, 0, "{r:?}");
    assert_eq!(r.frame_size_violations, 0, "{r:?}");
    assert_eq!(r.protocol_violations, 0, "{r:?}");
    assert!(r.frames_sent >= 50 * 200, "{r:?}");
    assert!(r.frames_received > 0, "the echo came back: {r:?}");
    assert!(r.first_reply_ms.p50.is_some(), "{r:?}");
    // The server's own pacing histogram was read across the test (echo replies were paced).
    let pacing = r
        .server_pacing_late_ms
        .expect("the server's /metrics histogram");
    assert!(pacing.count > 0 && pacing.p50 <= pacing.p99, "{pacing:?}");
    // Every key INTERFACE.md lists is in the JSON.
    let v = serde_json::to_value(&r).unwrap();
    for k in [
        "calls_established",
        "calls_failed",
        "frame_size_violations",
        "frame_gap_ms",
        "first_reply_ms",
        "clear_ms",
        "server_cpu_s",
        "server_rss_kib",
        "rss_per_call_kib",
        "generator_cpu_s",
        "underruns",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    for k in ["p50", "p90", "p99", "max"] {
        assert!(v["frame_gap_ms"][k].is_number(), "frame_gap_ms.{k}");
    }
    // The calls are gone from the server.
    let t0 = tokio::time::Instant::now();
    while server.state.active_calls() > 0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "calls left over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `--server-pid` naming a process other than the one listening on the port (a stale server, a
/// wrapper) is refused before any call is made, naming the real listener. Here the server runs in
/// this test process and the pid given is a child's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_pid_that_is_not_the_listener_is_refused() {
    let server = start(config_at(SampleRate::Hz16000)).await;
    if find_listener_pid(server.addr.port()) != Some(std::process::id()) {
        println!("skipped: this host's /proc does not show which process listens on a port");
        return;
    }
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let mut args = args_for(server.addr, 1);
    args.server_pid = Some(child.id());
    let res = loadtest(&args).await;
    let _ = child.kill();
    let _ = child.wait();
    let err = res.expect_err("a pid that does not listen on the port is refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("--server-pid {}", child.id()))
            && msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    assert_eq!(server.state.active_calls(), 0, "no call was made");
    // The listener's own pid is accepted.
    args.server_pid = Some(std::process::id());
    args.duration = Duration::from_secs(1);
    let r = loadtest(&args)
        .await
        .expect("the listener's pid is accepted");
    assert_eq!(r.calls_failed, 0, "{r:?}");
}
