//! `voicegate loadtest` against the real server started in-process on 127.0.0.1:0: 50 calls
//! for 5 s must all be established, none may fail, and no frame may have the wrong size. No
//! timing assertions (CI machines are small and noisy); the figures are printed.

mod server_support;

use std::path::Path;
use std::time::Duration;

use server_support::{config_at, start};
use voicegate::core::SampleRate;
use voicegate::tools::loadtest::{LoadtestArgs, loadtest, render};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_calls_for_five_seconds() {
    let server = start(config_at(SampleRate::Hz16000)).await;
    let args = LoadtestArgs {
        server: format!("http://{}", server.addr),
        calls: 50,
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
    };
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
