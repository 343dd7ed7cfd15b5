//! What the agent hears: each caller utterance with its pre-roll, resampled to the agent's rate.
//!
//! The session keeps the pre-roll at the call rate and resamples it only when an utterance
//! starts (most of a call is silence, which is then never resampled). The agent must still get
//! exactly the audio a continuously running resampler would have made: this test streams a real
//! clip through a 16 kHz call with a 24 kHz agent and compares every utterance the agent reads
//! with the same stretch of the whole clip resampled in one go. Only each utterance's first
//! resampler block (5 ms, 240 ms before its onset) may differ: the resampler starts afresh there.

use std::path::Path;
use std::time::{Duration, Instant};

use voicegate::core::resample::FrameResampler;
use voicegate::core::{Event, SampleRate, Session, SessionConfig};
use voicegate::tools::vonage_side::{read_wav_mono, to_call_rate};

/// Samples of the resampler's first block at 24 kHz (a 5 ms sub-chunk).
const FIRST_BLOCK: usize = 120;

struct Utterance {
    /// Caller frame on which `SpeechStarted` came.
    started_frame: usize,
    /// Caller frame on which `SpeechEnded` came.
    ended_frame: Option<usize>,
    stream_pos: u64,
}

#[test]
fn utterances_reach_the_agent_with_their_preroll_resampled_as_one_stream() {
    let (call, agent) = (SampleRate::Hz16000, SampleRate::Hz24000);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/audio/speech_001.in.wav");
    let (mono, hz) = read_wav_mono(&path).expect("test clip");
    // Twice over, so that later utterances follow silence of the clip's own pauses.
    let once = to_call_rate(&mono, hz, call, 1.0);
    let caller = [once.as_slice(), once.as_slice()].concat();
    let (n, m) = (call.frame_samples(), agent.frame_samples());
    let frames = caller.len() / n;

    let config = SessionConfig::new(call, agent);
    let preroll_frames = (config.preroll.as_millis() / 20) as usize;
    let (mut s, mut link) = Session::new(config).unwrap();
    let t0 = Instant::now();
    let mut heard = Vec::new();
    let mut buf = [0i16; 4096];
    let mut utterances: Vec<Utterance> = Vec::new();
    for k in 0..frames {
        let now = t0 + Duration::from_millis(20 * k as u64 + 20);
        s.handle_caller_samples(now, &caller[k * n..(k + 1) * n])
            .unwrap();
        while let Some(ev) = s.poll_event() {
            match ev {
                Event::SpeechStarted { stream_pos, .. } => utterances.push(Utterance {
                    started_frame: k,
                    ended_frame: None,
                    stream_pos,
                }),
                Event::SpeechEnded { stream_pos, .. } => {
                    let u = utterances
                        .last_mut()
                        .expect("an utterance ends after it starts");
                    u.ended_frame = Some(k);
                    // The utterance is the stream between its start and its end.
                    assert!(stream_pos > u.stream_pos);
                }
                _ => {}
            }
        }
        loop {
            let got = link.read(&mut buf);
            if got == 0 {
                break;
            }
            heard.extend_from_slice(&buf[..got]);
        }
    }
    assert_eq!(s.stats().agent_samples_dropped, 0);
    assert!(utterances.len() >= 4, "{} utterances", utterances.len());

    // The whole clip through one resampler that never stops.
    let mut r = FrameResampler::new(call, agent).unwrap();
    let mut continuous = vec![0i16; frames * m];
    for k in 0..frames {
        r.process_frame(
            &caller[k * n..(k + 1) * n],
            &mut continuous[k * m..(k + 1) * m],
        );
    }

    let mut full_prerolls = 0;
    for (i, u) in utterances.iter().enumerate() {
        let start = u.stream_pos as usize;
        let end = utterances
            .get(i + 1)
            .map_or(heard.len(), |next| next.stream_pos as usize);
        assert_eq!((end - start) % m, 0, "utterance {i} is whole frames");
        let last = u.ended_frame.unwrap_or(frames - 1);
        let speech_frames = last - u.started_frame + 1;
        let pre = (end - start) / m - speech_frames;
        assert!(
            pre <= preroll_frames,
            "utterance {i}: {pre} frames of pre-roll"
        );
        if pre == preroll_frames {
            full_prerolls += 1;
        }
        let first = u.started_frame - pre;
        let got = &heard[start + FIRST_BLOCK..end];
        let want = &continuous[first * m + FIRST_BLOCK..(last + 1) * m];
        assert!(
            got == want,
            "utterance {i} (frames {first}..={last}) differs from the continuous resample"
        );
    }
    assert!(
        full_prerolls >= 1,
        "no utterance came after a full pre-roll of silence"
    );
}
