//! Prints the per-frame decision inputs of one corpus clip: level, predicted echo, noise floor,
//! VAD, caller-speech and smoothed state. For tuning and debugging barge-in.
//!
//! `cargo run --release --example trace_clip -- tests/data/manifest.json bargein_001 [from_ms to_ms]`

use std::path::Path;
use std::time::{Duration, Instant};

use voicegate::core::spectrum::BandAnalyzer;
use voicegate::core::{Command, Event, ExternalReference, Session, SessionConfig};
use voicegate::corpus::{ClipAudio, Manifest};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (path, id) = (
        args.get(1).ok_or("manifest path")?,
        args.get(2).ok_or("clip id")?,
    );
    let from: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    let to: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
    let m = Manifest::load(Path::new(path))?;
    let clip = m.clips.iter().find(|c| &c.id == id).ok_or("no such clip")?;
    let audio = ClipAudio::load(&m, clip)?;
    let mut config = SessionConfig::new(audio.rate, audio.rate);
    config.call_rate = audio.rate;
    let (mut s, mut link) = Session::new(config)?;
    let n = audio.rate.frame_samples();
    let t0 = Instant::now();
    let start = clip.outbound.as_ref().map_or(u64::MAX, |o| o.start_ms / 20);
    let reference = audio.outbound.clone().unwrap_or_default();
    let mut pos = 0;
    let mut buf = [0u8; 960];
    let mut sink = [0i16; 960];
    let mut analyser = BandAnalyzer::new(audio.rate);
    println!(
        "echo {:?} noise {:?} onsets {:?} speech {:?}",
        clip.echo, clip.noise, clip.expect.bargein_onsets_ms, clip.speech_segments_ms
    );
    for k in 0..(audio.inbound.len() / n) as u64 {
        if k >= start && pos < reference.len() {
            pos += link.write(&reference[pos..]);
        }
        while s
            .poll_transmit(t0 + Duration::from_millis(20 * k), &mut buf)
            .is_some()
        {}
        let now = t0 + Duration::from_millis(20 * (k + 1));
        // The recording's own reference, as `voicegate eval` feeds it.
        let j = k.saturating_sub(start) as usize * n;
        let r = ExternalReference::of_frame(
            reference.get(j..j + n).filter(|_| k >= start),
            &mut analyser,
        );
        s.set_external_reference(Some(r));
        s.handle_caller_samples(now, &audio.inbound[k as usize * n..(k as usize + 1) * n])?;
        while let Some(c) = s.poll_command() {
            if c == Command::ClearPlayback {
                let _ = s.handle_text(now, r#"{"event":"websocket:cleared"}"#);
            }
        }
        let f = s.last_features();
        let ms = 20 * (k + 1);
        if ms >= from && ms <= to {
            println!(
                "{ms:6} lvl {:6.1} echo {:6.1} excess {:6.1} floor {:6.1} voiced {} caller {} own {:6.1} mod {} speaking {} path {:?}",
                f.level_dbfs,
                s.last_echo_dbfs(),
                s.last_excess_db(),
                f.noise_floor_dbfs,
                u8::from(f.voiced),
                u8::from(s.last_frame_was_speech()),
                s.last_evidence().caller_dbfs,
                u8::from(s.last_evidence().modulated),
                u8::from(s.is_speech_now()),
                s.echo_path()
                    .map(|p| (p.delay.as_millis(), p.gain_db as i32, p.spread_db as i32))
            );
        }
        while let Some(e) = s.poll_event() {
            match e {
                Event::BargeIn(b) => println!("BARGE-IN at {ms}: speech {:?}", b.speech),
                Event::PlaybackPaused { .. } => println!("PAUSED at {ms}"),
                Event::FalseInterruption { paused, .. } => {
                    println!("RESUMED at {ms} after {paused:?} of silence")
                }
                _ => {}
            }
        }
        while link.read(&mut sink) > 0 {}
    }
    Ok(())
}
