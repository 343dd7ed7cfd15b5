//! Per-frame detection benches on real speech: webrtc-vad plus the noise floor through
//! [`VoiceDetector::analyse`] (`vad/webrtc/{8k,16k,24k}`; 24 kHz includes the resample to
//! 16 kHz for webrtc-vad), the echo model's per-frame update and prediction
//! (`echo/model/16k`), and the barge-in decision (`bargein/decision/16k`: caller-speech test plus
//! detector update).
//!
//! Run: `cargo bench --bench vad`.

mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voicegate::core::audio::level_dbfs;
use voicegate::core::bargein::{BargeInDetector, is_caller_speech};
use voicegate::core::echo::EchoModel;
use voicegate::core::vad::{FrameFeatures, VadAggressiveness, VoiceDetector};
use voicegate::core::{BargeInConfig, SampleRate};

fn vad_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("vad/webrtc");
    for rate in common::CALL_RATES {
        let frames = common::clip_frames(common::CALLER_CLIP, rate);
        let levels: Vec<f32> = frames.iter().map(|f| level_dbfs(f)).collect();
        let mut vad = VoiceDetector::new(rate, VadAggressiveness::Aggressive).expect("vad");
        // It works: the clip holds both speech and pauses, and the VAD sees both.
        let voiced = frames
            .iter()
            .zip(&levels)
            .filter(|(f, l)| vad.analyse(f, **l).voiced)
            .count();
        assert!(
            voiced > frames.len() / 10 && voiced < frames.len(),
            "{rate}: {voiced} of {} voiced",
            frames.len()
        );
        g.throughput(Throughput::Elements(rate.frame_samples() as u64));
        let mut i = 0;
        g.bench_function(common::rate_name(rate), |b| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                vad.analyse(black_box(&frames[i]), black_box(levels[i]))
            })
        });
    }
    g.finish();

    // Realistic per-frame inputs for the echo and barge-in stages: features of the caller clip
    // and the level of the bot's clip as the played reference.
    let rate = SampleRate::Hz16000;
    let caller = common::clip_frames(common::CALLER_CLIP, rate);
    let bot = common::clip_frames(common::BOT_CLIP, rate);
    let mut vad = VoiceDetector::new(rate, VadAggressiveness::Aggressive).expect("vad");
    let features: Vec<FrameFeatures> = caller
        .iter()
        .map(|f| vad.analyse(f, level_dbfs(f)))
        .collect();
    let played: Vec<f32> = (0..caller.len())
        .map(|i| bot.get(i).map_or(-100.0, |f| level_dbfs(f)))
        .collect();
    let n = features.len();

    let mut g = c.benchmark_group("echo/model");
    g.throughput(Throughput::Elements(rate.frame_samples() as u64));
    let mut echo = EchoModel::new();
    let mut echoes = Vec::with_capacity(n);
    for (f, p) in features.iter().zip(&played) {
        let e = echo.push_reference(*p);
        if !is_caller_speech(f, e, 3.0, 6.0) && echo.is_reference_recent() {
            echo.observe(f.level_dbfs, f.noise_floor_dbfs);
        }
        echoes.push(e);
    }
    assert!(
        echoes.iter().any(|&e| e > -100.0),
        "the echo model never predicted echo"
    );
    let mut i = 0;
    g.bench_function("16k", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            let e = echo.push_reference(black_box(played[i]));
            if !is_caller_speech(&features[i], e, 3.0, 6.0) && echo.is_reference_recent() {
                echo.observe(
                    black_box(features[i].level_dbfs),
                    features[i].noise_floor_dbfs,
                );
            }
            e
        })
    });
    g.finish();

    let mut g = c.benchmark_group("bargein/decision");
    g.throughput(Throughput::Elements(rate.frame_samples() as u64));
    let cfg = BargeInConfig::default();
    let mut detector = BargeInDetector::new(&cfg);
    let fired = (0..n)
        .filter(|&i| {
            detector
                .update(
                    is_caller_speech(&features[i], echoes[i], 3.0, cfg.echo_margin_db),
                    played[i] > -50.0,
                )
                .is_some()
        })
        .count();
    assert!(fired >= 1, "the barge-in clip never barged in");
    let mut i = 0;
    g.bench_function("16k", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            let speech = is_caller_speech(
                black_box(&features[i]),
                black_box(echoes[i]),
                3.0,
                cfg.echo_margin_db,
            );
            let d = detector.update(speech, played[i] > -50.0);
            if d.is_some() {
                detector.rearm();
            }
            d
        })
    });
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = vad_benches }
criterion_main!(benches);
