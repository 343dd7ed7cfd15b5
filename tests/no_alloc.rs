//! Proves the real-time claim: after construction, a session and its agent link allocate
//! nothing, through every state of a call (silence, caller speech, bot playback, barge-in, end of
//! turn, resampling both ways, text messages from Vonage, agent marks and interrupts).
//!
//! Its own test binary, so the counting allocator affects nothing else. Counts are thread-local
//! (after Windfisch/rust-assert-no-alloc), so the test harness's other threads do not count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant};

use voicegate::core::{Command, Event, SampleRate, Session, SessionConfig};
use voicegate::corpus::{ClipAudio, Manifest};

struct Counting;

thread_local!(static EVENTS: Cell<u64> = const { Cell::new(0) });

fn bump() {
    let _ = EVENTS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded unchanged to `System`; counting touches only a thread-local
// `Cell` (no allocation, no re-entrancy into the allocator).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        bump();
        // SAFETY: forwarded with the caller's layout, which upholds `alloc`'s contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        bump();
        // SAFETY: `p` was allocated by `System` with layout `l` (we forward every allocation).
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        bump();
        // SAFETY: forwarded unchanged; `p` and `l` come from a previous forwarded allocation.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocations() -> u64 {
    EVENTS.with(Cell::get)
}

/// What the scripted call went through, so the test proves what it says.
#[derive(Debug, Default)]
struct Visited {
    frames: u64,
    speech_started: u64,
    speech_ended: u64,
    barge_ins: u64,
    frames_out: u64,
    notifies: u64,
    turns: u64,
    marks: u64,
    pauses: u64,
    false_interruptions: u64,
}

/// Drives a call for `frames` frames: the caller audio of a barge-in clip, looped; the agent
/// plays the clip's bot reference as turns, starts a new turn after every barge-in, ends turns,
/// asks for marks, and once in a while interrupts itself. Vonage answers `clear` and `notify`.
fn drive(
    s: &mut Session,
    link: &mut voicegate::core::AgentLink,
    audio: &Clip,
    t0: Instant,
    first: u64,
    frames: u64,
    v: &mut Visited,
) {
    let n = audio.rate.frame_samples();
    let inbound = &audio.inbound;
    let reference = &audio.outbound_at_agent_rate[..];
    let clip_frames = (inbound.len() / n) as u64;
    let mut out = [0u8; 960];
    let mut sink = [0i16; 960];
    let mut ref_pos = 0usize;
    let mut notify_buf = [0u8; 96];
    for k in first..first + frames {
        let now = t0 + Duration::from_millis(20 * k);
        // Agent: a turn every clip loop, from 1 s into the loop on.
        let in_clip = k % clip_frames;
        if in_clip == 50 {
            let _ = link.start_turn();
            ref_pos = 0;
            v.turns += 1;
        }
        if in_clip >= 50 && ref_pos < reference.len() {
            // Chunks of an odd size, faster than real time, so the ring fills and wraps.
            let chunk = link.agent_rate().frame_samples() * 3 / 2 + 7;
            ref_pos += link.write(&reference[ref_pos..(ref_pos + chunk).min(reference.len())]);
            if ref_pos >= reference.len() {
                let _ = link.end_turn();
                let _ = link.mark();
                v.marks += 1;
            }
        }
        if in_clip == clip_frames - 5 && k % 3 == 0 {
            let _ = link.interrupt();
        }
        while s.poll_transmit(now, &mut out).is_some() {
            v.frames_out += 1;
            while let Some(c) = s.poll_command() {
                if let Command::Notify { turn, frame, mark } = c {
                    // Vonage echoes the mark back at once (the buffer is short in this test).
                    let len = voicegate::vonage::media_protocol::encode_notify(
                        turn,
                        frame,
                        mark,
                        &mut notify_buf,
                    )
                    .unwrap();
                    let cmd = std::str::from_utf8(&notify_buf[..len]).unwrap();
                    let payload_at = cmd.find("\"payload\":").unwrap() + 10;
                    let mut reply = [0u8; 160];
                    let head = br#"{"event":"websocket:notify","payload":"#;
                    reply[..head.len()].copy_from_slice(head);
                    let p = &notify_buf[payload_at..len - 1];
                    reply[head.len()..head.len() + p.len()].copy_from_slice(p);
                    reply[head.len() + p.len()] = b'}';
                    let text = std::str::from_utf8(&reply[..head.len() + p.len() + 1]).unwrap();
                    s.handle_text(now, text).unwrap();
                    v.notifies += 1;
                }
            }
        }
        let i = (in_clip as usize) * n;
        s.handle_caller_samples(now + Duration::from_millis(20), &inbound[i..i + n])
            .unwrap();
        if k % 500 == 7 {
            s.handle_text(
                now,
                r#"{"event":"websocket:dtmf","digit":"5","duration":260}"#,
            )
            .unwrap();
            s.handle_text(now, r#"{"event":"websocket:something-new"}"#)
                .unwrap();
        }
        let mut clear = false;
        while let Some(c) = s.poll_command() {
            clear |= c == Command::ClearPlayback;
        }
        if clear {
            s.handle_text(now, r#"{"event":"websocket:cleared"}"#)
                .unwrap();
        }
        while let Some(e) = s.poll_event() {
            match e {
                Event::SpeechStarted { .. } => v.speech_started += 1,
                Event::SpeechEnded { .. } => v.speech_ended += 1,
                Event::PlaybackPaused { .. } => v.pauses += 1,
                Event::FalseInterruption { .. } => v.false_interruptions += 1,
                Event::BargeIn(_) => {
                    v.barge_ins += 1;
                    let _ = link.start_turn();
                    v.turns += 1;
                }
                _ => {}
            }
        }
        while link.read(&mut sink) > 0 {}
        v.frames += 1;
    }
}

/// A clip with its bot reference at the agent's rate (nearest-sample; the audio only has to be
/// loud in the right places).
struct Clip {
    rate: SampleRate,
    inbound: Vec<i16>,
    outbound_at_agent_rate: Vec<i16>,
}

fn clip(id: &str, agent: SampleRate) -> Clip {
    let m = Manifest::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/manifest.json"))
        .unwrap();
    let c = m.clips.iter().find(|c| c.id == id).unwrap();
    let a = ClipAudio::load(&m, c).unwrap();
    let r = a.outbound.unwrap();
    let len = r.len() * agent.hz() as usize / a.rate.hz() as usize;
    let outbound_at_agent_rate = (0..len)
        .map(|i| r[i * a.rate.hz() as usize / agent.hz() as usize])
        .collect();
    Clip {
        rate: a.rate,
        inbound: a.inbound,
        outbound_at_agent_rate,
    }
}

fn steady_state_allocations(
    call: SampleRate,
    agent: SampleRate,
    clip_id: &str,
    rewind: Duration,
) -> (u64, Visited) {
    let audio = clip(clip_id, agent);
    assert_eq!(audio.rate, call);
    let mut config = SessionConfig::new(call, agent);
    config.bargein.resume_rewind = rewind;
    // The script's agent writes each turn up to 1 s ahead of playback so that it finishes
    // writing (and asks for its mark) before the clip loops; the default ring (400 ms) would
    // hold it back until the turn is cut.
    config.outbound_buffer = Duration::from_secs(1);
    let (mut s, mut link) = Session::new(config).unwrap();
    let t0 = Instant::now();
    let mut v = Visited::default();
    // Warm-up: one pass through every state lets lazily initialised library state settle.
    drive(&mut s, &mut link, &audio, t0, 0, 1_000, &mut v);
    let mut v = Visited::default();
    let before = allocations();
    drive(&mut s, &mut link, &audio, t0, 1_000, 12_000, &mut v);
    (allocations() - before, v)
}

#[test]
fn a_call_in_steady_state_allocates_nothing() {
    let mut released = 0;
    for (call, agent, clip, rewind_ms) in [
        (SampleRate::Hz16000, SampleRate::Hz24000, "bargein_001", 0),
        (SampleRate::Hz16000, SampleRate::Hz16000, "bargein_005", 300),
        (SampleRate::Hz8000, SampleRate::Hz48000, "bargein_004", 0),
        (SampleRate::Hz16000, SampleRate::Hz8000, "bargein_009", 300),
    ] {
        let rewind = Duration::from_millis(rewind_ms);
        let (allocs, v) = steady_state_allocations(call, agent, clip, rewind);
        released += v.false_interruptions;
        println!("{call} -> {agent} ({clip}): {allocs} allocations over {v:?}");
        // The script must visit every state, or this proves less than it says.
        assert!(v.frames >= 10_000);
        assert!(v.speech_started > 10 && v.speech_ended > 10, "{v:?}");
        assert!(
            v.barge_ins > 5 && v.frames_out > 1_000 && v.notifies > 10 && v.marks > 0,
            "{v:?}"
        );
        assert!(
            v.pauses >= v.barge_ins,
            "two-stage: every barge-in pauses first: {v:?}"
        );
        assert_eq!(allocs, 0, "{call} -> {agent}: the media path allocated");
    }
    // Pauses that were released (the bot resumed, with and without a rewind) happened too.
    assert!(released > 0, "no suspicion was ever released");
}

#[test]
fn the_counter_counts() {
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 16]);
    drop(v);
    assert_eq!(allocations() - before, 2);
}
