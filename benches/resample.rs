//! Resampler benches: one 20 ms frame through [`FrameResampler`] for every rate pair voicegate
//! uses (call rate 8/16/24 kHz to and from agent rate 8/16/24/48 kHz), as
//! `resample/{from}_to_{to}`; prints each pair's algorithmic delay once (latency the caller
//! feels, on top of the CPU time measured here).
//!
//! `resample_many/*` runs one frame through each of 1 000 resamplers in turn, as a server with a
//! thousand calls does (each resampler's state is cold by the time its next frame comes), once
//! with voicegate's (plans and filter shared by all) and once with rubato's own `Fft` built per
//! call as voicegate did before: both give the same samples (`matches_rubato_bit_for_bit`).
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

/// 1 000 resamplers of one pair, a frame through each in turn (per frame).
fn many_benches(c: &mut Criterion) {
    use rubato::Resampler;
    use rubato::audioadapter_buffers::direct::InterleavedSlice;
    const CALLS: usize = 1_000;
    let mut g = c.benchmark_group("resample_many");
    for (from, to) in [
        (SampleRate::Hz16000, SampleRate::Hz24000),
        (SampleRate::Hz24000, SampleRate::Hz16000),
    ] {
        let frames = common::clip_frames(common::CALLER_CLIP, from);
        let (n_in, n_out) = (from.frame_samples(), to.frame_samples());
        let mut out = vec![0i16; n_out];
        let mut ours: Vec<FrameResampler> = (0..CALLS)
            .map(|_| FrameResampler::new(from, to).expect("builds"))
            .collect();
        let mut i = 0;
        g.bench_function(format!("{}/voicegate", common::pair_name(from, to)), |b| {
            b.iter(|| {
                i = (i + 1) % (CALLS * 7);
                ours[i % CALLS].process_frame(black_box(&frames[i % frames.len()]), &mut out)
            })
        });
        drop(ours);
        let mut theirs: Vec<(rubato::Fft<f32>, Vec<f32>, Vec<f32>)> = (0..CALLS)
            .map(|_| {
                let r = rubato::Fft::<f32>::new_custom(
                    from.hz() as usize,
                    to.hz() as usize,
                    n_in,
                    4,
                    1,
                    rubato::WindowFunction::BlackmanHarris2,
                    rubato::FixedSync::Input,
                )
                .expect("builds");
                (r, vec![0.0; n_in], vec![0.0; n_out])
            })
            .collect();
        g.bench_function(format!("{}/rubato", common::pair_name(from, to)), |b| {
            b.iter(|| {
                i = (i + 1) % (CALLS * 7);
                let (r, x, y) = &mut theirs[i % CALLS];
                for (d, &s) in x.iter_mut().zip(&frames[i % frames.len()]) {
                    *d = f32::from(s) / 32_768.0;
                }
                let inp = InterleavedSlice::new(&x[..], 1, n_in).expect("sized");
                let mut o = InterleavedSlice::new_mut(&mut y[..], 1, n_out).expect("sized");
                let _ = r.process_into_buffer(&inp, &mut o, None);
                for (d, &v) in out.iter_mut().zip(y.iter()) {
                    *d = (v * 32_768.0) as i16;
                }
                black_box(&out);
            })
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = resample_benches, many_benches }
criterion_main!(benches);
