//! Per-frame detection benches on real speech: webrtc-vad plus the noise floor through
//! [`VoiceDetector::analyse`] (`vad/webrtc/{8k,16k,24k}`; 24 kHz includes the resample to
//! 16 kHz for webrtc-vad), the band analysis (`spectrum/bands/{8k,16k,24k}`: one FFT; the
//! session runs it on every caller frame and every sent frame), the DTMF tone gate
//! (`tone/dtmf/16k`), the echo model's per-frame update and prediction, full band and per band
//! (`echo/model/16k`; `echo/model/16k_young` in the first second, before the fit is trusted),
//! and the two-stage barge-in decision (`bargein/decision/16k`: the band evidence plus the
//! detector update).
//!
//! Run: `cargo bench --bench vad`.

mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voicegate::core::audio::level_dbfs;
use voicegate::core::bargein::{BargeInDetector, Verdict, band_excess_db, is_caller_speech};
use voicegate::core::echo::EchoModel;
use voicegate::core::spectrum::{BANDS, BandAnalyzer, BandNoiseFloor, Bands};
use voicegate::core::tone::ToneDetector;
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

    let mut g = c.benchmark_group("spectrum/bands");
    for rate in common::CALL_RATES {
        let frames = common::clip_frames(common::CALLER_CLIP, rate);
        let mut a = BandAnalyzer::new(rate);
        assert!(a.analyse(&frames[frames.len() / 2]).iter().sum::<f32>() > 0.0);
        g.throughput(Throughput::Elements(rate.frame_samples() as u64));
        let mut i = 0;
        g.bench_function(common::rate_name(rate), |b| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                a.analyse(black_box(&frames[i]))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("tone/dtmf");
    {
        let rate = SampleRate::Hz16000;
        let frames = common::clip_frames(common::CALLER_CLIP, rate);
        let mut t = ToneDetector::new(rate);
        // Speech is never a tone.
        assert!(frames.iter().all(|f| t.detect(f).is_none()));
        g.throughput(Throughput::Elements(rate.frame_samples() as u64));
        let mut i = 0;
        g.bench_function("16k", |b| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                t.detect(black_box(&frames[i]))
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
    let mut analyser = BandAnalyzer::new(rate);
    let played_bands: Vec<Bands> = (0..caller.len())
        .map(|i| bot.get(i).map_or([0.0; BANDS], |f| analyser.analyse(f)))
        .collect();
    let caller_bands: Vec<Bands> = caller.iter().map(|f| analyser.analyse(f)).collect();
    let mut band_floor = BandNoiseFloor::new();
    let noise_bands: Vec<Bands> = caller_bands.iter().map(|b| *band_floor.update(b)).collect();
    let n = features.len();

    let mut g = c.benchmark_group("echo/model");
    g.throughput(Throughput::Elements(rate.frame_samples() as u64));
    // One frame through the echo model, as the session feeds it.
    let step = |echo: &mut EchoModel, i: usize| {
        let e = echo.push_reference(black_box(played[i]), black_box(&played_bands[i]));
        let f = &features[i];
        if echo.is_reference_recent() {
            echo.observe_bound(f.level_dbfs, f.noise_floor_dbfs);
            echo.observe_lag_bounds(&caller_bands[i], &noise_bands[i]);
            if !is_caller_speech(f, e, 3.0, 6.0) {
                echo.observe(black_box(f.level_dbfs), f.noise_floor_dbfs);
                echo.observe_bands(&caller_bands[i], &noise_bands[i]);
            }
        }
        e
    };
    let mut echo = EchoModel::new();
    let mut echoes = Vec::with_capacity(n);
    let mut echo_bands = Vec::with_capacity(n);
    for i in 0..n {
        let e = step(&mut echo, i);
        echoes.push(e);
        echo_bands.push(*echo.predicted_bands());
    }
    assert!(
        echoes.iter().any(|&e| e > -100.0),
        "the echo model never predicted echo"
    );
    let mut i = 0;
    g.bench_function("16k", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            step(&mut echo, i)
        })
    });
    // The first second of bot audio, before the fit is trusted: the per-delay band bounds are
    // updated and predict instead of the fitted taps. A fresh model every 45 frames (the copy
    // of its state, ~3 KiB, is part of the figure).
    let fresh = EchoModel::new();
    let first = n.min(45);
    let mut young = fresh.clone();
    let mut k = 0;
    g.bench_function("16k_young", |b| {
        b.iter(|| {
            k = (k + 1) % first;
            if k == 0 {
                young.clone_from(&fresh);
            }
            step(&mut young, k)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("bargein/decision");
    g.throughput(Throughput::Elements(rate.frame_samples() as u64));
    let cfg = BargeInConfig::default();
    let echo_k = [2.5f32; BANDS];
    let evidence = |i: usize| {
        let x = band_excess_db(
            &caller_bands[i],
            &noise_bands[i],
            &echo_bands[i],
            2.0,
            &echo_k,
        );
        let energy = features[i].snr_db() >= 3.0 && x >= -6.0;
        (energy, energy && features[i].voiced)
    };
    let mut detector = BargeInDetector::new(&cfg);
    let fired = (0..n)
        .filter(|&i| {
            let (energy, speech) = evidence(i);
            let v = detector.update(energy, speech, played[i] > -50.0);
            if matches!(v, Verdict::Confirm(_)) {
                detector.rearm();
            }
            v != Verdict::Nothing
        })
        .count();
    assert!(fired >= 1, "the barge-in clip never paused the bot");
    let mut i = 0;
    g.bench_function("16k", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            let (energy, speech) = evidence(black_box(i));
            let v = detector.update(energy, speech, played[i] > -50.0);
            if matches!(v, Verdict::Confirm(_)) {
                detector.rearm();
            }
            v
        })
    });
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = vad_benches }
criterion_main!(benches);
