//! Draws the two-stage barge-in timeline of corpus clips as one SVG: per clip, the caller's
//! inbound level, the bot's outbound level, when the bot was paused (suspicion) and when an
//! interruption was confirmed (clear), from a real replay through the session the server runs.
//!
//! `cargo run --release --example timeline_svg -- tests/data/manifest.json docs/turn-taking.svg \
//!     bargein_004 backchannel_004`

use std::fmt::Write as _;
use std::path::Path;

use voicegate::core::audio::level_dbfs;
use voicegate::core::{SampleRate, SessionConfig};
use voicegate::corpus::{ClipAudio, Manifest, replay_clip};

const WIDTH: f64 = 900.0;
const PANEL: f64 = 190.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const MIN_DB: f64 = -70.0;
const MAX_DB: f64 = -10.0;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let manifest = args.get(1).ok_or("manifest path")?;
    let out = args.get(2).ok_or("output .svg")?;
    let ids = &args[3..];
    if ids.is_empty() {
        return Err("clip ids".into());
    }
    let m = Manifest::load(Path::new(manifest))?;
    let height = PANEL * ids.len() as f64 + 40.0;
    let mut svg = String::new();
    writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"##
    )?;
    writeln!(svg, r##"<rect width="100%" height="100%" fill="white"/>"##)?;
    for (p, id) in ids.iter().enumerate() {
        let clip = m
            .clips
            .iter()
            .find(|c| &c.id == id)
            .ok_or_else(|| format!("no clip {id}"))?;
        let audio = ClipAudio::load(&m, clip)?;
        let config = SessionConfig::new(SampleRate::Hz16000, SampleRate::Hz16000);
        let r = replay_clip(clip, &audio, config)?;
        let n = audio.rate.frame_samples();
        let frames = r.frames;
        let inbound: Vec<f64> = audio
            .inbound
            .chunks_exact(n)
            .map(|f| f64::from(level_dbfs(f)))
            .collect();
        let start = clip.outbound.as_ref().map_or(0, |o| o.start_ms / 20) as usize;
        let reference = audio.outbound.as_deref().unwrap_or(&[]);
        let outbound: Vec<f64> = (0..frames)
            .map(|k| {
                k.checked_sub(start)
                    .and_then(|j| reference.get(j * n..(j + 1) * n))
                    .map_or(-100.0, |f| f64::from(level_dbfs(f)))
            })
            .collect();
        let top = 30.0 + PANEL * p as f64;
        let plot_h = PANEL - 50.0;
        let dur_ms = frames as f64 * 20.0;
        let x = |ms: f64| LEFT + (WIDTH - LEFT - RIGHT) * ms / dur_ms;
        let y = |db: f64| {
            top + plot_h * (1.0 - (db.clamp(MIN_DB, MAX_DB) - MIN_DB) / (MAX_DB - MIN_DB))
        };
        writeln!(
            svg,
            r##"<text x="{LEFT}" y="{:.1}" font-size="13" font-weight="bold">{} ({})</text>"##,
            top - 8.0,
            clip.id,
            clip.scenario
        )?;
        // Labelled caller speech.
        for s in &clip.speech_segments_ms {
            writeln!(
                svg,
                r##"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{plot_h:.1}" fill="#e8f0fe"/>"##,
                x(s[0] as f64),
                x(s[1] as f64) - x(s[0] as f64)
            )?;
        }
        // Paused spans: from each pause to its release or confirmation.
        for &(at, _) in &r.pauses_ms {
            let end = r
                .releases_ms
                .iter()
                .map(|&(t, _)| t)
                .chain(r.bargein_ms.iter().copied())
                .filter(|&t| t >= at)
                .min()
                .unwrap_or(at + 20);
            writeln!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="10" fill="#f9ab00"/>"##,
                x(at as f64),
                top + plot_h + 4.0,
                (x(end as f64) - x(at as f64)).max(1.5)
            )?;
        }
        for &t in &r.bargein_ms {
            writeln!(
                svg,
                r##"<line x1="{0:.1}" x2="{0:.1}" y1="{top:.1}" y2="{1:.1}" stroke="#d93025" stroke-width="2"/>"##,
                x(t as f64),
                top + plot_h + 14.0
            )?;
            writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" fill="#d93025">confirmed: clear</text>"##,
                x(t as f64) + 3.0,
                top + 12.0
            )?;
        }
        for &o in &clip.expect.bargein_onsets_ms {
            writeln!(
                svg,
                r##"<line x1="{0:.1}" x2="{0:.1}" y1="{top:.1}" y2="{1:.1}" stroke="#188038" stroke-dasharray="4 3"/>"##,
                x(o as f64),
                top + plot_h
            )?;
        }
        for (series, colour) in [(&outbound, "#9aa0a6"), (&inbound, "#1a73e8")] {
            let mut d = String::new();
            for (k, db) in series.iter().enumerate() {
                let cmd = if k == 0 { 'M' } else { 'L' };
                write!(d, "{cmd}{:.1},{:.1} ", x(k as f64 * 20.0 + 10.0), y(*db))?;
            }
            writeln!(
                svg,
                r##"<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.2"/>"##
            )?;
        }
        // Axes.
        for db in [-60.0, -40.0, -20.0] {
            writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#5f6368">{db} dB</text>"##,
                LEFT - 4.0,
                y(db) + 4.0
            )?;
        }
        let mut s = 0.0;
        while s * 1000.0 <= dur_ms {
            writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#5f6368">{s} s</text>"##,
                x(s * 1000.0),
                top + plot_h + 28.0
            )?;
            s += 1.0;
        }
    }
    let legend_y = height - 8.0;
    writeln!(
        svg,
        r##"<text x="{LEFT}" y="{legend_y}"><tspan fill="#1a73e8">■ inbound (caller + echo + noise)</tspan>  <tspan fill="#9aa0a6">■ outbound (bot)</tspan>  <tspan fill="#7baaf7">■ labelled caller speech</tspan>  <tspan fill="#f9ab00">■ bot paused (suspicion)</tspan>  <tspan fill="#d93025">| confirmed barge-in (clear)</tspan>  <tspan fill="#188038">¦ labelled barge-in onset</tspan></text>"##
    )?;
    writeln!(svg, "</svg>")?;
    std::fs::write(out, svg)?;
    println!("wrote {out}");
    Ok(())
}
