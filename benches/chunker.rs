//! Outbound chunker benches: one agent-rate frame of real speech pushed into the [`Chunker`] and
//! one exact call-rate L16 frame taken out (gather, resample, encode), as
//! `chunker/chunk_encode/{agent}_to_{call}` for the rate pairs agents use.
//!
//! Run: `cargo bench --bench chunker`.

mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voicegate::core::SampleRate;
use voicegate::core::chunker::Chunker;

const PAIRS: [(SampleRate, SampleRate); 8] = [
    (SampleRate::Hz8000, SampleRate::Hz8000),
    (SampleRate::Hz16000, SampleRate::Hz16000),
    (SampleRate::Hz24000, SampleRate::Hz24000),
    (SampleRate::Hz24000, SampleRate::Hz16000),
    (SampleRate::Hz16000, SampleRate::Hz24000),
    (SampleRate::Hz24000, SampleRate::Hz8000),
    (SampleRate::Hz48000, SampleRate::Hz16000),
    (SampleRate::Hz48000, SampleRate::Hz24000),
];

fn chunker_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunker/chunk_encode");
    for (agent, call) in PAIRS {
        let frames = common::clip_frames(common::BOT_CLIP, agent);
        let mut chunker = Chunker::new(agent, call).expect("chunker");
        let mut out = vec![0u8; call.frame_bytes()];
        for f in &frames[..20] {
            assert_eq!(chunker.push(f), agent.frame_samples());
            let got = chunker.take_frame(&mut out).expect("a full frame is ready");
            assert_eq!(got.bytes, call.frame_bytes());
        }
        g.throughput(Throughput::Elements(agent.frame_samples() as u64));
        let mut i = 0;
        g.bench_function(common::pair_name(agent, call), |b| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                chunker.push(black_box(&frames[i]));
                chunker.take_frame(black_box(&mut out))
            })
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = chunker_benches }
criterion_main!(benches);
