//! Replays one corpus clip through a real [`Session`], as a call would run it, faster than real
//! time on a virtual clock.
//!
//! Inbound frame `k` covers `[20k, 20k + 20)` ms and is handed to the session at its end,
//! `t0 + 20(k + 1)` ms, which is also the decision time the scoring rules use. The bot's
//! reference is written by a simulated agent through the session's real outbound path (agent
//! ring, chunker, pacer) starting at `outbound.start_ms`, so the session's echo reference is
//! exactly what it would be on a call. The simulated Vonage answers `clear` with
//! `websocket:cleared` at once. After a barge-in the simulated agent starts a new turn and goes on
//! playing the reference from where the clip's bot is: the recording has the bot's voice (and
//! its echo) continue, so the reference must continue too.
//!
//! For the same reason the session's echo model is told the *recording's* reference level
//! ([`Session::set_external_reference`]): when the session pauses the bot (two-stage barge-in),
//! the recorded echo goes on; on a live call the echo would stop with the bot. Feeding the
//! recorded reference keeps the echo model's view consistent with the audio it is judging, as
//! it is on a call.
//!
//! Not real-time (offline tool), but the session inside is the real-time one.

use std::path::Path;
use std::time::{Duration, Instant};

use super::manifest::{Clip, CorpusError, Manifest};
use crate::core::{Command, Event, ExternalReference, SampleRate, Session, SessionConfig};

/// A clip's audio, decoded.
#[derive(Debug, Clone)]
pub struct ClipAudio {
    /// Its rate.
    pub rate: SampleRate,
    /// Inbound samples.
    pub inbound: Vec<i16>,
    /// The bot's reference, if any.
    pub outbound: Option<Vec<i16>>,
}

/// Largest WAV we load, in samples (10 minutes at 24 kHz).
const MAX_WAV_SAMPLES: u32 = 24_000 * 600;

/// Reads a mono 16-bit WAV at `rate`.
pub fn read_wav(path: &Path, rate: u32) -> Result<Vec<i16>, CorpusError> {
    let audio_err = |reason: String| CorpusError::Audio {
        path: path.to_owned(),
        reason,
    };
    let mut r = hound::WavReader::open(path).map_err(|e| audio_err(e.to_string()))?;
    let spec = r.spec();
    if spec.channels != 1
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(audio_err(format!(
            "{} channels, {} bits {:?}: expected mono 16-bit PCM",
            spec.channels, spec.bits_per_sample, spec.sample_format
        )));
    }
    if spec.sample_rate != rate {
        return Err(audio_err(format!(
            "{} Hz, the manifest says {rate} Hz",
            spec.sample_rate
        )));
    }
    if r.duration() > MAX_WAV_SAMPLES {
        return Err(audio_err(format!(
            "{} samples is longer than the {MAX_WAV_SAMPLES} limit",
            r.duration()
        )));
    }
    r.samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| audio_err(e.to_string()))
}

impl ClipAudio {
    /// Loads `clip`'s files.
    pub fn load(manifest: &Manifest, clip: &Clip) -> Result<Self, CorpusError> {
        let rate = SampleRate::try_from(clip.rate).map_err(|e| CorpusError::Invalid {
            field: format!("{}.rate", clip.id),
            reason: e.to_string(),
        })?;
        let inbound = read_wav(&manifest.path_of(&clip.inbound), clip.rate)?;
        let outbound = match &clip.outbound {
            Some(o) => Some(read_wav(&manifest.path_of(&o.file), o.rate)?),
            None => None,
        };
        Ok(Self {
            rate,
            inbound,
            outbound,
        })
    }
}

/// What the session did with a clip.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Frames fed (trailing partial frame dropped).
    pub frames: usize,
    /// Per frame: the smoothed speech state after it.
    pub speech_state: Vec<bool>,
    /// Per frame: whether it counted as caller speech before smoothing.
    pub raw_speech: Vec<bool>,
    /// Decision times (ms from the clip start) of speech onsets, with the reported onset time.
    pub speech_started_ms: Vec<(u64, u64)>,
    /// Decision times of end-of-turn events.
    pub speech_ended_ms: Vec<u64>,
    /// Decision times of barge-ins (playback cleared).
    pub bargein_ms: Vec<u64>,
    /// Two-stage pauses: decision time and when the caller stopped hearing the bot.
    pub pauses_ms: Vec<(u64, u64)>,
    /// Two-stage releases: decision time and the silence the caller heard, ms.
    pub releases_ms: Vec<(u64, u64)>,
    /// Frames sent towards the caller.
    pub frames_out: u64,
    /// Wall time spent inside the session, for CPU-per-frame figures.
    pub session_time: Duration,
}

/// Runs `audio` through a session built from `config` (its rates are set to the clip's rate).
pub fn replay_clip(
    clip: &Clip,
    audio: &ClipAudio,
    mut config: SessionConfig,
) -> Result<Replay, crate::core::ConfigError> {
    config.call_rate = audio.rate;
    config.agent_rate = audio.rate;
    let (mut session, mut link) = Session::new(config)?;
    let n = audio.rate.frame_samples();
    let frames = audio.inbound.len() / n;
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let ms_of = |t: Instant| t.saturating_duration_since(t0).as_millis() as u64;

    let out_start_frame = clip.outbound.as_ref().map_or(u64::MAX, |o| o.start_ms / 20);
    let reference = audio.outbound.as_deref().unwrap_or(&[]);
    let mut ref_pos = 0usize;
    let mut turn_ended = false;
    let mut out_buf = [0u8; crate::core::audio::MAX_CALL_FRAME_BYTES];
    let mut rec = Replay {
        frames,
        ..Replay::default()
    };
    let mut busy = Duration::ZERO;
    let mut analyser = crate::core::spectrum::BandAnalyzer::new(audio.rate);
    let mut ref_at = |k: u64| {
        let j = k.saturating_sub(out_start_frame) as usize * n;
        let frame = reference.get(j..j + n).filter(|_| k >= out_start_frame);
        ExternalReference::of_frame(frame, &mut analyser)
    };

    for k in 0..frames as u64 {
        let frame_start = at(20 * k);
        // The simulated agent keeps the ring topped up with the reference from its start time on.
        if k >= out_start_frame && !turn_ended {
            let t = std::time::Instant::now();
            if ref_pos < reference.len() {
                ref_pos += link.write(&reference[ref_pos..]);
            }
            if ref_pos >= reference.len() {
                let _ = link.end_turn();
                turn_ended = true;
            }
            busy += t.elapsed();
        }
        let reference_now = ref_at(k);
        let t = std::time::Instant::now();
        session.set_external_reference(Some(reference_now));
        while session.poll_transmit(frame_start, &mut out_buf).is_some() {
            rec.frames_out += 1;
            while session.poll_command().is_some() {}
        }
        let s = &audio.inbound[k as usize * n..(k as usize + 1) * n];
        let now = at(20 * (k + 1));
        // The slice is exactly one frame, so this cannot fail.
        let _ = session.handle_caller_samples(now, s);
        busy += t.elapsed();
        rec.speech_state.push(session.is_speech_now());
        rec.raw_speech.push(session.last_frame_was_speech());
        let mut cleared = false;
        while let Some(c) = session.poll_command() {
            cleared |= c == Command::ClearPlayback;
        }
        if cleared {
            let _ = session.handle_text(now, r#"{"event":"websocket:cleared"}"#);
        }
        while let Some(e) = session.poll_event() {
            match e {
                Event::SpeechStarted { at, onset, .. } => {
                    rec.speech_started_ms.push((ms_of(at), ms_of(onset)))
                }
                Event::SpeechEnded { at, .. } => rec.speech_ended_ms.push(ms_of(at)),
                Event::PlaybackPaused { at, silent_at, .. } => {
                    rec.pauses_ms.push((ms_of(at), ms_of(silent_at)))
                }
                Event::FalseInterruption { at, paused, .. } => {
                    rec.releases_ms.push((ms_of(at), paused.as_millis() as u64))
                }
                Event::BargeIn(b) => {
                    rec.bargein_ms.push(ms_of(b.at));
                    // The recorded bot goes on talking: continue the reference in a new turn from
                    // where its playout is now.
                    if k + 1 >= out_start_frame && !turn_ended {
                        let _ = link.start_turn();
                        let played = (k + 1 - out_start_frame) as usize * n;
                        ref_pos = played.min(reference.len());
                    }
                }
                _ => {}
            }
        }
        // The simulated agent reads (and drops) what it is sent, so the ring never fills.
        let mut sink = [0i16; 960];
        while link.read(&mut sink) > 0 {}
    }
    rec.session_time = busy;
    Ok(rec)
}
