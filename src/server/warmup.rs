//! One throwaway call through the audio pipeline at start-up, before the first real one.
//!
//! The first call at a rate pays for building what all calls share (the resampler filters and
//! FFT plans per rate pair, the band analyser's window and plan: `core::resample`,
//! `core::spectrum`) and for paging in the DSP code. Done here instead, (1) that first call
//! does not stall its media task with it, and (2) the shared tables are allocated at start-up,
//! at the bottom of the main heap, instead of in the middle of the first burst of calls, where
//! these few long-lived blocks pinned heap pages that `malloc_trim` could otherwise give back
//! once the burst was over; and the code they page in counts in the baseline RSS rather than
//! looking like memory the calls kept.
//!
//! Not real-time: runs once, synchronously, before the listener is bound (~1 ms per rate).

use std::time::{Duration, Instant};

use crate::core::{FRAME, SampleRate, Session, SessionConfig};

/// Frames run through each session: enough for an utterance to start and end (60 ms onset,
/// 500 ms hangover by default) and a reply to be paced out.
const FRAMES: u32 = 100;

/// Runs a throwaway session at the configured call rate and its agent rate, plus the other
/// common call rates (8 and 16 kHz) with the same agent rate, through caller speech and an agent
/// reply. `agent_rate_for` is the agent's choice when `--agent-rate` is not set. Errors (a
/// configuration the calls would reject too) are ignored: the calls report them.
pub fn warm_up(
    session: &SessionConfig,
    call_rate: SampleRate,
    agent_rate: Option<SampleRate>,
    agent_rate_for: impl Fn(SampleRate) -> SampleRate,
) {
    let mut rates = vec![call_rate];
    for r in [SampleRate::Hz16000, SampleRate::Hz8000] {
        if !rates.contains(&r) {
            rates.push(r);
        }
    }
    for call in rates {
        let mut sc = *session;
        sc.call_rate = call;
        sc.agent_rate = agent_rate.unwrap_or_else(|| agent_rate_for(call));
        run_one(sc);
    }
}

/// One session: caller speech in (a voiced, syllable-modulated tone), read by the "agent", which
/// writes it back as a reply; the frames it sends are polled out as the media loop would.
/// Returns the reply frames sent.
fn run_one(sc: SessionConfig) -> u32 {
    let Ok((mut session, mut link)) = Session::new(sc) else {
        return 0;
    };
    let mut sent = 0;
    let n = sc.call_rate.frame_samples();
    let agent_n = sc.agent_rate.frame_samples();
    let hz = sc.call_rate.hz() as f32;
    let mut frame = vec![0i16; n];
    let mut agent_buf = vec![0i16; agent_n * 4];
    let mut out = [0u8; crate::core::audio::MAX_CALL_FRAME_BYTES];
    let t0 = Instant::now();
    let mut turn = false;
    for k in 0..FRAMES {
        // Speech for the first 30 frames (600 ms), silence after.
        let speaking = k < 30;
        for (i, s) in frame.iter_mut().enumerate() {
            let t = (k as usize * n + i) as f32 / hz;
            let syllable = 0.6 + 0.4 * (t * 2.0 * std::f32::consts::PI * 4.0).sin();
            let voice = (t * 2.0 * std::f32::consts::PI * 180.0).sin()
                + 0.5 * (t * 2.0 * std::f32::consts::PI * 720.0).sin();
            *s = if speaking {
                (voice * syllable * 6_000.0) as i16
            } else {
                0
            };
        }
        let now = t0 + FRAME * (k + 1);
        let _ = session.handle_caller_samples(now, &frame);
        let read = link.read(&mut agent_buf);
        if read > 0 {
            if !turn {
                turn = link.start_turn().is_ok();
            }
            link.write(&agent_buf[..read]);
        }
        while session.poll_transmit(now, &mut out).is_some() {
            sent += 1;
            while session.poll_command().is_some() {}
        }
        while session.poll_event().is_some() {}
    }
    let _ = link.end_turn();
    let _ = session.poll_transmit(t0 + FRAME * FRAMES + Duration::from_secs(1), &mut out);
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_every_rate_pair_without_panicking() {
        let sc = SessionConfig::new(SampleRate::Hz16000, SampleRate::Hz16000);
        for agent in [None, Some(SampleRate::Hz24000), Some(SampleRate::Hz48000)] {
            warm_up(&sc, SampleRate::Hz16000, agent, |r| r);
            warm_up(&sc, SampleRate::Hz8000, agent, |_| SampleRate::Hz24000);
        }
        // The synthetic caller is heard as speech and the reply goes out: the whole path ran.
        let sent = run_one(SessionConfig::new(SampleRate::Hz16000, SampleRate::Hz24000));
        assert!(sent > 10, "{sent} reply frames");
    }
}
