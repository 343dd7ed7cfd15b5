//! Codec benches: one 20 ms L16 frame decoded (`codec/decode/{8k,16k,24k}`) and encoded
//! (`codec/encode/...`), on real speech.
//!
//! Run: `cargo bench --bench codec` (all benches: `cargo bench`).

mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voicegate::core::codec;

fn codec_benches(c: &mut Criterion) {
    let mut decode = c.benchmark_group("codec/decode");
    for rate in common::CALL_RATES {
        let frames = common::clip_frames(common::CALLER_CLIP, rate);
        let bytes = common::encode_frames(&frames);
        let wire = &bytes[bytes.len() / 2];
        let mut out = vec![0i16; rate.frame_samples()];
        assert_eq!(
            codec::decode_into(wire, rate, &mut out),
            Ok(rate.frame_samples())
        );
        assert_eq!(out, frames[frames.len() / 2]);
        decode.throughput(Throughput::Elements(rate.frame_samples() as u64));
        decode.bench_function(common::rate_name(rate), |b| {
            b.iter(|| codec::decode_into(black_box(wire), rate, black_box(&mut out)))
        });
    }
    decode.finish();

    let mut encode = c.benchmark_group("codec/encode");
    for rate in common::CALL_RATES {
        let frames = common::clip_frames(common::CALLER_CLIP, rate);
        let samples = &frames[frames.len() / 2];
        let mut out = vec![0u8; rate.frame_bytes()];
        assert_eq!(
            codec::encode_into(samples, &mut out),
            Ok(rate.frame_bytes())
        );
        encode.throughput(Throughput::Elements(rate.frame_samples() as u64));
        encode.bench_function(common::rate_name(rate), |b| {
            b.iter(|| codec::encode_into(black_box(samples), black_box(&mut out)))
        });
    }
    encode.finish();
}

criterion_group! { name = benches; config = common::config(); targets = codec_benches }
criterion_main!(benches);
