//! Whole-path benches through [`Session`], one 20 ms frame each, on real audio:
//!
//! * `session/caller_frame/{8k,16k,24k}` (agent rate = call rate) and
//!   `session/caller_frame/16k_to_24k`: the whole inbound path: decode, level, echo model, VAD,
//!   barge-in, speech state, resample to the agent rate, push to the agent's ring (and the agent
//!   reading it, and the shell draining events);
//! * `session/transmit/{8k,16k,24k}` and `session/transmit/24k_to_16k`: the whole outbound
//!   path: the agent writes one frame into its [`AgentLink`], then `poll_transmit` at the time
//!   the pacer says the frame is due (markers, chunker, resample, encode, pacing, notify).
//!
//! The caller clip is speech over a playing bot, looped; the VAD does real work.
//!
//! Run: `cargo bench --bench session`.

mod common;

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voicegate::core::{Event, FRAME, SampleRate, Session, SessionConfig};

const INBOUND: [(SampleRate, SampleRate); 4] = [
    (SampleRate::Hz8000, SampleRate::Hz8000),
    (SampleRate::Hz16000, SampleRate::Hz16000),
    (SampleRate::Hz24000, SampleRate::Hz24000),
    (SampleRate::Hz16000, SampleRate::Hz24000),
];

const OUTBOUND: [(SampleRate, SampleRate); 4] = [
    (SampleRate::Hz8000, SampleRate::Hz8000),
    (SampleRate::Hz16000, SampleRate::Hz16000),
    (SampleRate::Hz24000, SampleRate::Hz24000),
    (SampleRate::Hz24000, SampleRate::Hz16000),
];

fn name(from: SampleRate, to: SampleRate) -> String {
    if from == to {
        common::rate_name(from)
    } else {
        common::pair_name(from, to)
    }
}

fn caller_frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("session/caller_frame");
    for (call, agent) in INBOUND {
        let wire = common::encode_frames(&common::clip_frames(common::CALLER_CLIP, call));
        let (mut session, mut link) =
            Session::new(SessionConfig::new(call, agent)).expect("config");
        let mut read = vec![0i16; 4 * agent.frame_samples()];
        let mut now = Instant::now();
        // It works: the clip's speech is detected and reaches the agent.
        let mut started = 0;
        let mut received = 0;
        for bytes in &wire {
            now += FRAME;
            session
                .handle_caller_frame(now, bytes)
                .expect("valid frame");
            while let Some(e) = session.poll_event() {
                started += usize::from(matches!(e, Event::SpeechStarted { .. }));
            }
            received += link.read(&mut read);
        }
        assert!(started >= 1, "{call}: no speech detected in the clip");
        assert!(
            received >= agent.frame_samples() * 10,
            "{call}->{agent}: the agent got {received} samples"
        );

        g.throughput(Throughput::Elements(call.frame_samples() as u64));
        let mut i = 0;
        g.bench_function(name(call, agent), |b| {
            b.iter(|| {
                i = (i + 1) % wire.len();
                now += FRAME;
                let r = session.handle_caller_frame(now, black_box(&wire[i]));
                while session.poll_event().is_some() {}
                while session.poll_command().is_some() {}
                link.read(&mut read);
                r
            })
        });
    }
    g.finish();
}

fn transmit(c: &mut Criterion) {
    let mut g = c.benchmark_group("session/transmit");
    for (agent, call) in OUTBOUND {
        let bot = common::clip_frames(common::BOT_CLIP, agent);
        let (mut session, mut link) =
            Session::new(SessionConfig::new(call, agent)).expect("config");
        let mut out = vec![0u8; call.frame_bytes()];
        let mut now = Instant::now();
        let mut i = 0;
        let mut step =
            |session: &mut Session, link: &mut voicegate::core::AgentLink, now: &mut Instant| {
                i = (i + 1) % bot.len();
                link.write(black_box(&bot[i]));
                if let Some(due) = session.poll_timeout() {
                    *now = (*now).max(due);
                }
                let sent = session.poll_transmit(*now, black_box(&mut out));
                while session.poll_command().is_some() {}
                sent
            };
        // It works: every write of one frame yields exactly one exact frame, on schedule.
        for _ in 0..200 {
            assert_eq!(
                step(&mut session, &mut link, &mut now),
                Some(call.frame_bytes())
            );
        }
        g.throughput(Throughput::Elements(agent.frame_samples() as u64));
        g.bench_function(name(agent, call), |b| {
            b.iter(|| step(&mut session, &mut link, &mut now))
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = caller_frame, transmit }
criterion_main!(benches);
