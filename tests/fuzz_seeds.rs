//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same entry points the
//! cargo-fuzz targets call (`voicegate::fuzzing`), on stable, so every seed and every minimized
//! crash stays covered by `cargo test` without nightly.
//!
//! ```text
//! cargo test --test fuzz_seeds                               # replay (runs in `cargo test`)
//! cargo test --test fuzz_seeds -- --ignored write_seeds      # rewrite the hand-made seeds
//! ```
//!
//! The hand-made seeds are defined here ([`frame_parse_seeds`], [`ws_text_seeds`],
//! [`session_ops_seeds`], [`webhook_body_seeds`], [`jwt_verify_seeds`]); `write_seeds` writes them as `seed-*` files and the replay test
//! checks that the files on disk still match, and that each `session_ops` seed exercises what
//! its name says (a barge-in seed must barge in, an echo-only seed must not). Crash inputs found
//! by the fuzzer are committed next to them as `crash-*` files and simply replayed.

use std::fs;
use std::path::{Path, PathBuf};

use voicegate::fuzzing::{self, OpsSummary, ops};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Every file of one target's corpus, sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(&p).unwrap(),
            )
        })
        .collect()
}

fn sine_frame(samples: usize, hz: f32, rate: f32) -> Vec<u8> {
    (0..samples)
        .flat_map(|i| {
            ((8_000.0 * (2.0 * std::f32::consts::PI * hz * i as f32 / rate).sin()) as i16)
                .to_le_bytes()
        })
        .collect()
}

/// Binary messages: one valid frame per rate (silence, the §10.27 prefix, a sine), and lengths
/// that must be rejected.
fn frame_parse_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut prefix = vec![0u8; 640];
    prefix[..6].copy_from_slice(&[0x00, 0x00, 0x01, 0x00, 0xff, 0xff]);
    let full_scale: Vec<u8> = (0..480)
        .flat_map(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN }.to_le_bytes())
        .collect();
    vec![
        ("valid-8k-silence", vec![0; 320]),
        ("valid-8k-sine", sine_frame(160, 440.0, 8_000.0)),
        ("valid-16k-10.27-prefix", prefix),
        ("valid-16k-sine", sine_frame(320, 440.0, 16_000.0)),
        ("valid-24k-sine", sine_frame(480, 440.0, 24_000.0)),
        ("valid-24k-full-scale", full_scale),
        ("empty", vec![]),
        ("one-byte", vec![0x7f]),
        ("odd-641", vec![0x55; 641]),
        ("short-318", vec![1; 318]),
        ("between-642", vec![2; 642]),
        ("long-962", vec![3; 962]),
        ("double-16k-1280", vec![4; 1280]),
    ]
}

/// Text messages: each Vonage vector of §10.21–10.26, the nested DTMF form, our own notify, and
/// malformed ones.
fn ws_text_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let t = |s: &str| s.as_bytes().to_vec();
    vec![
        (
            "10.21-connected",
            t(
                r#"{"event":"websocket:connected","content-type":"audio/l16;rate=16000","call_uuid":"63f61863-4a51-4f6b-86e1-46edebcf9356","caller":"447700900123"}"#,
            ),
        ),
        (
            "10.22-dtmf",
            t(r#"{"event": "websocket:dtmf", "digit": "5", "duration": 260}"#),
        ),
        ("10.23-clear-command", t(r#"{"action": "clear"}"#)),
        ("10.24-cleared", t(r#"{"event": "websocket:cleared"}"#)),
        (
            "10.25-notify-command",
            t(r#"{"action": "notify", "payload": {"mark": "utt-0007", "frames": 143}}"#),
        ),
        (
            "10.26-notify",
            t(r#"{"event": "websocket:notify", "payload": {"mark": "utt-0007", "frames": 143}}"#),
        ),
        (
            "dtmf-nested",
            t(r##"{"event":"websocket:dtmf","dtmf":{"digit":"#","duration":130}}"##),
        ),
        (
            "notify-ours",
            t(r#"{"event":"websocket:notify","payload":{"turn":3,"frame":17,"mark":2}}"#),
        ),
        (
            "connected-8k",
            t(r#"{"event":"websocket:connected","content-type":"audio/L16; rate = 8000"}"#),
        ),
        (
            "connected-48k",
            t(r#"{"event":"websocket:connected","content-type":"audio/l16;rate=48000"}"#),
        ),
        (
            "unknown-event",
            t(r#"{"event":"websocket:something-new","x":[1,2]}"#),
        ),
        ("truncated", t(r#"{"event":"websocket:dt"#)),
        ("not-utf8", vec![b'{', b'"', 0xff, 0xfe, b'"', b'}']),
        ("deep-nesting", t(&"[".repeat(300))),
    ]
}

fn vector(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/vectors")
        .join(name);
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

/// Webhook bodies: every answer and event vector of §10 (and the X vectors), the §10.1 query,
/// and hostile ones.
fn webhook_body_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vectors");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-answer-") || n.contains("-event-") || n.starts_with("x0"))
        .collect();
    names.sort();
    for name in names {
        let v = vector(&name);
        if let Some(line) = v["http_request_line"].as_str() {
            let query = line
                .split(' ')
                .nth(1)
                .and_then(|p| p.split_once('?'))
                .map(|x| x.1);
            if let Some(q) = query {
                seeds.push((
                    format!("{}-query", name.trim_end_matches(".json")),
                    q.as_bytes().to_vec(),
                ));
            }
        }
        if v["content"].is_object() {
            seeds.push((
                name.trim_end_matches(".json").to_owned(),
                v["content"].to_string().into_bytes(),
            ));
        }
    }
    let t = |s: &str| s.as_bytes().to_vec();
    seeds.push((
        "answer-missing-uuid".into(),
        t(r#"{"to":"447700900000","from":"447700900123"}"#),
    ));
    seeds.push((
        "answer-uuid-number".into(),
        t(r#"{"uuid":42,"conversation_uuid":"CON-1"}"#),
    ));
    seeds.push(("event-unknown-kind".into(), t(r#"{"something":"new"}"#)));
    seeds.push((
        "event-status-number".into(),
        t(r#"{"uuid":"a","status":7}"#),
    ));
    seeds.push((
        "deep-nesting".into(),
        t(&format!("{}{}", "{\"a\":".repeat(200), "}".repeat(200))),
    ));
    seeds.push((
        "not-utf8".into(),
        vec![b'{', b'"', 0xff, b'"', b':', b'1', b'}'],
    ));
    seeds.push(("array".into(), t("[1,2,3]")));
    seeds.push(("whitespace".into(), t(" \n\t ")));
    seeds
}

/// Signed-webhook verifier inputs (see `voicegate::fuzzing::jwt_verify` for the encoding):
/// the §10.34 request, its negative cases, `alg: none` and `RS256` tokens, and claim sets
/// signed by the harness.
fn jwt_verify_seeds() -> Vec<(String, Vec<u8>)> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let v = vector("34-signed-webhook.json");
    let c = &v["content"];
    let auth = c["request"]["headers"]["Authorization"].as_str().unwrap();
    let body = c["request"]["body"].as_str().unwrap();
    let altered = c["negative"][1]["body"].as_str().unwrap();
    let token = auth.strip_prefix("Bearer ").unwrap();
    let claims_b64 = token.split('.').nth(1).unwrap();
    let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(claims_b64).unwrap()).unwrap();
    let unsigned = |alg: &str| {
        format!(
            "Bearer {}.{}.",
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)),
            claims_b64
        )
    };
    let header_mode = |mode: u8, header: &str, body: &str| {
        let mut b = vec![mode];
        b.extend(header.as_bytes());
        b.push(0);
        b.extend(body.as_bytes());
        b
    };
    let fresh_claims = r#"{"iat":1741947331,"jti":"j-1","iss":"Vonage","payload_hash":"44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","api_key":"k"}"#;
    vec![
        ("10.34-valid".into(), header_mode(0, auth, body)),
        ("10.34-body-altered".into(), header_mode(0, auth, altered)),
        ("alg-none".into(), header_mode(0, &unsigned("none"), body)),
        ("alg-rs256".into(), header_mode(0, &unsigned("RS256"), body)),
        (
            "not-bearer".into(),
            header_mode(0, &format!("Basic {token}"), body),
        ),
        (
            "query-get".into(),
            header_mode(2, auth, "to=447700900000&from=447700900001&uuid=abc"),
        ),
        ("signed-10.34-claims".into(), header_mode(1, &claims, body)),
        (
            "signed-fresh-no-body".into(),
            header_mode(1, fresh_claims, ""),
        ),
        (
            "signed-exp-nbf".into(),
            header_mode(
                1,
                r#"{"iat":1741947331,"iss":"Vonage","exp":1741947000,"nbf":1}"#,
                "",
            ),
        ),
        (
            "signed-stale".into(),
            header_mode(1, r#"{"iat":1741940000,"iss":"Vonage"}"#, ""),
        ),
        (
            "signed-float-iat".into(),
            header_mode(1, r#"{"iat":1741947331.5,"iss":"Vonage"}"#, ""),
        ),
        ("signed-not-object".into(), header_mode(1, "[1,2]", "")),
        ("signed-alg-choice".into(), header_mode(5, &claims, body)),
    ]
}

/// Programs for `session_ops`, and what each must show.
struct OpsSeed {
    name: &'static str,
    bytes: Vec<u8>,
    check: fn(&OpsSummary) -> bool,
}

/// A bot turn: start, `frames` frames of quiet voice (the bot), end.
fn bot_turn(p: &mut Vec<u8>, agent_frame: u16, frames: u16, level: u8) {
    p.push(ops::START_TURN);
    let mut left = u32::from(agent_frame) * u32::from(frames);
    while left > 0 {
        let n = left.min(8_000);
        p.extend(ops::write(n as u16, 1, 40, level));
        left -= n;
    }
    p.push(ops::MARK);
    p.push(ops::END_TURN);
}

fn session_ops_seeds() -> Vec<OpsSeed> {
    let mut seeds = Vec::new();

    // Barge-in at 16 kHz: the bot plays a quiet turn, the caller talks loudly over it.
    let mut p = ops::header(1, 1, false, 6, 3, 2, 4, 3).to_vec();
    bot_turn(&mut p, 320, 100, 180);
    p.extend(ops::tick(10, 0, 0, 0));
    p.extend(ops::tick(30, 1, 40, 240));
    p.extend(ops::tick(10, 0, 0, 0));
    p.extend([ops::TEXT, 3, 0, 0, 0]); // websocket:cleared
    bot_turn(&mut p, 320, 10, 180);
    p.extend(ops::tick(20, 0, 0, 0));
    seeds.push(OpsSeed {
        name: "bargein-16k",
        bytes: p,
        check: |s| s.barge_ins >= 1 && s.clears >= 1 && s.frames_out > 10,
    });

    // Barge-in with resampling: 16 kHz call, 24 kHz agent, every frame forwarded.
    let mut p = ops::header(1, 2, true, 4, 2, 1, 3, 2).to_vec();
    bot_turn(&mut p, 480, 60, 170);
    p.extend(ops::tick(8, 2, 0, 60));
    // Syllables (a steady vowel is not a voice to the two-stage detector: it has no modulation).
    for _ in 0..8 {
        p.extend(ops::tick(5, 1, 90, 250));
        p.extend(ops::tick(2, 0, 0, 0));
    }
    p.extend(ops::tick(20, 0, 0, 0));
    seeds.push(OpsSeed {
        name: "bargein-16k-to-24k",
        bytes: p,
        check: |s| s.barge_ins >= 1 && s.frames_out > 0,
    });

    // Echo only: the bot plays loudly and the caller line carries only a faint version of it.
    let mut p = ops::header(0, 0, false, 6, 3, 2, 4, 3).to_vec();
    bot_turn(&mut p, 160, 60, 230);
    p.extend(ops::tick(50, 1, 40, 150));
    p.extend(ops::tick(20, 0, 0, 0));
    p.extend([ops::TEXT, 4, 0, 30, 0]); // notify for the current turn
    seeds.push(OpsSeed {
        name: "echo-only-8k",
        bytes: p,
        check: |s| s.barge_ins == 0 && s.frames_out >= 60 && s.notifies > 0,
    });

    // The agent interrupts itself mid-turn, then starts a new turn; marks, notifies, cleared.
    let mut p = ops::header(2, 3, false, 10, 1, 3, 2, 3).to_vec();
    bot_turn(&mut p, 960, 40, 150);
    p.extend(ops::tick(10, 0, 0, 0));
    p.push(ops::INTERRUPT);
    p.push(ops::TRANSMIT);
    p.extend([ops::ADVANCE, 100]);
    p.extend([ops::TEXT, 3, 0, 0, 0]);
    p.push(ops::START_TURN);
    p.extend(ops::write(1_000, 4, 30, 200));
    p.push(ops::MARK);
    p.extend(ops::write(333, 2, 0, 150));
    p.push(ops::END_TURN);
    p.extend(ops::tick(20, 0, 0, 0));
    p.extend([ops::TEXT, 4, 0, 5, 1]);
    p.extend([ops::TEXT, 1, 11, 26, 0]); // dtmf '#'
    seeds.push(OpsSeed {
        name: "interrupt-24k-48k",
        bytes: p,
        check: |s| s.clears >= 1 && s.frames_out > 10 && s.dtmf == 1,
    });

    // Odd chunk sizes across turns without end_turn, lead 0, bad frames and garbage text, then
    // the agent hangs up.
    let mut p = ops::header(0, 3, true, 0, 0, 0, 1, 1).to_vec();
    p.extend([ops::TEXT, 0, 0, 0, 0]); // connected at 8 kHz
    p.extend([ops::TEXT, 0, 1, 0, 0]); // a second one, at 16 kHz
    p.push(ops::START_TURN);
    p.extend(ops::write(1, 1, 10, 200));
    p.extend(ops::write(959, 1, 10, 200));
    p.extend(ops::write(7_000, 1, 10, 200));
    p.push(ops::START_TURN);
    p.extend(ops::write(481, 2, 0, 100));
    p.extend([ops::BAD_FRAME, 0x41, 0x01, 7]);
    p.extend([ops::SAMPLES, 1, 10, 200, 129]);
    p.extend([ops::SAMPLES, 1, 10, 200, 0]);
    p.extend([ops::TEXT, 7, 12, 0, 0]);
    p.extend(b"{\"event\":\"we");
    p.extend(ops::tick(40, 2, 0, 60));
    p.extend([ops::READ, 255]);
    p.extend([ops::OTHER, 0]);
    p.extend(ops::tick(10, 1, 30, 220));
    seeds.push(OpsSeed {
        name: "chunks-8k-48k-hangup",
        bytes: p,
        check: |s| s.frames_out >= 8 && s.frames_in > 40,
    });

    seeds
}

#[test]
fn frame_parse_corpus() {
    let files = corpus("frame_parse");
    assert!(files.len() >= frame_parse_seeds().len());
    for (name, data) in &files {
        eprintln!("frame_parse {name}");
        fuzzing::frame_parse(data);
    }
}

#[test]
fn ws_text_corpus() {
    let files = corpus("ws_text");
    assert!(files.len() >= ws_text_seeds().len());
    for (name, data) in &files {
        eprintln!("ws_text {name}");
        fuzzing::ws_text(data);
    }
}

#[test]
fn session_ops_corpus() {
    let files = corpus("session_ops");
    assert!(files.len() >= session_ops_seeds().len());
    for (name, data) in &files {
        let s = fuzzing::session_ops(data);
        eprintln!("session_ops {name}: {s:?}");
    }
}

#[test]
fn webhook_body_corpus() {
    let files = corpus("webhook_body");
    assert!(files.len() >= webhook_body_seeds().len());
    for (name, data) in &files {
        eprintln!("webhook_body {name}");
        fuzzing::webhook_body(data);
    }
}

#[test]
fn jwt_verify_corpus() {
    let files = corpus("jwt_verify");
    assert!(files.len() >= jwt_verify_seeds().len());
    for (name, data) in &files {
        eprintln!("jwt_verify {name}");
        fuzzing::jwt_verify(data);
    }
}

#[test]
fn signed_webhook_seeds_on_disk_match() {
    for (target, seeds) in [
        ("webhook_body", webhook_body_seeds()),
        ("jwt_verify", jwt_verify_seeds()),
    ] {
        for (name, bytes) in seeds {
            let path = corpus_dir(target).join(format!("seed-{name}"));
            assert_eq!(
                fs::read(&path).ok().as_deref(),
                Some(&bytes[..]),
                "{} is stale: run write_seeds",
                path.display()
            );
        }
    }
}

#[test]
fn seeds_on_disk_match_and_do_what_they_say() {
    for (target, seeds) in [
        ("frame_parse", frame_parse_seeds()),
        ("ws_text", ws_text_seeds()),
    ] {
        for (name, bytes) in seeds {
            let path = corpus_dir(target).join(format!("seed-{name}"));
            assert_eq!(
                fs::read(&path).ok().as_deref(),
                Some(&bytes[..]),
                "{} is stale: run write_seeds",
                path.display()
            );
        }
    }
    for seed in session_ops_seeds() {
        let path = corpus_dir("session_ops").join(format!("seed-{}", seed.name));
        assert_eq!(
            fs::read(&path).ok().as_deref(),
            Some(&seed.bytes[..]),
            "{} is stale: run write_seeds",
            path.display()
        );
        let s = fuzzing::session_ops(&seed.bytes);
        assert!(
            (seed.check)(&s),
            "seed {} no longer exercises its case: {s:?}",
            seed.name
        );
    }
}

#[test]
#[ignore = "writes the hand-made seeds into fuzz/corpus/"]
fn write_seeds() {
    for (target, seeds) in [
        ("frame_parse", frame_parse_seeds()),
        ("ws_text", ws_text_seeds()),
    ] {
        fs::create_dir_all(corpus_dir(target)).unwrap();
        for (name, bytes) in seeds {
            fs::write(corpus_dir(target).join(format!("seed-{name}")), bytes).unwrap();
        }
    }
    for (target, seeds) in [
        ("webhook_body", webhook_body_seeds()),
        ("jwt_verify", jwt_verify_seeds()),
    ] {
        fs::create_dir_all(corpus_dir(target)).unwrap();
        for (name, bytes) in seeds {
            fs::write(corpus_dir(target).join(format!("seed-{name}")), bytes).unwrap();
        }
    }
    fs::create_dir_all(corpus_dir("session_ops")).unwrap();
    for seed in session_ops_seeds() {
        fs::write(
            corpus_dir("session_ops").join(format!("seed-{}", seed.name)),
            &seed.bytes,
        )
        .unwrap();
    }
}
