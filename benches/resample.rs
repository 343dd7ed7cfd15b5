//! Resampler benches: one 20 ms frame through [`FrameResampler`] for every rate pair voicegate
//! uses (call rate 8/16/24 kHz to and from agent rate 8/16/24/48 kHz), as
//! `resample/{from}_to_{to}`; prints each pair's algorithmic delay once (latency the caller
//! feels, on top of the CPU time measured here).
//!
//! Run: `cargo bench --bench resample`.

mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voicegate::core::SampleRate;
use voicegate::core::resample::FrameResampler;

/// Every pair with a call rate on at least one side, in both directions (equal rates bypass).
fn pairs() -> Vec<(SampleRate, SampleRate)> {
    let all = [
        SampleRate::Hz8000,
        SampleRate::Hz16000,
        SampleRate::Hz24000,
        SampleRate::Hz48000,
    ];
    let mut v = Vec::new();
    for from in all {
        for to in all {
            if from != to && (from.is_call_rate() || to.is_call_rate()) {
                v.push((from, to));
            }
        }
    }
    v
}

fn resample_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("resample");
    for (from, to) in pairs() {
        let frames = common::clip_frames(common::CALLER_CLIP, from);
        let mut r = FrameResampler::new(from, to).expect("every used pair builds");
        let mut out = vec![0i16; to.frame_samples()];
        // It works: one frame in, one whole frame out, and speech in gives non-silence out.
        let mut energy = 0i64;
        for f in &frames[..50] {
            assert_eq!(r.process_frame(f, &mut out), to.frame_samples());
            energy += out.iter().map(|&s| i64::from(s).abs()).sum::<i64>();
        }
        assert!(energy > 0, "{from} -> {to} produced silence");
        println!(
            "resample/{}: delay {:?}",
            common::pair_name(from, to),
            r.delay()
        );
        g.throughput(Throughput::Elements(from.frame_samples() as u64));
        let mut i = 0;
        g.bench_function(common::pair_name(from, to), |b| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                r.process_frame(black_box(&frames[i]), black_box(&mut out))
            })
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = resample_benches }
criterion_main!(benches);
