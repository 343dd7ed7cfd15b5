//! `voicegate eval --manifest PATH [--json]`: runs the core pipeline, exactly the session the
//! server runs with the server's defaults (or the tuning flags given), over every clip of a
//! `voicegate-corpus` manifest, faster than real time, and scores it by the corpus' rules.
//!
//! Not real-time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::pipeline_args::PipelineArgs;
use crate::core::{SampleRate, SessionConfig};
use crate::corpus::score::{self, ClipScore, GroupReport, VadScore};
use crate::corpus::{ClipAudio, Manifest, replay_clip};

/// Flags of `voicegate eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// The corpus manifest (`voicegate-corpus` format).
    #[arg(long)]
    pub manifest: PathBuf,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Only clips whose id contains this.
    #[arg(long)]
    pub only: Option<String>,
    /// Also print one line per clip: labelled onsets and what the session did (pauses,
    /// releases, barge-ins), for tuning and debugging.
    #[arg(long)]
    pub per_clip: bool,
    /// Pipeline parameters (the server's flags).
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// The `--json` report.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Clips scored.
    pub clips: usize,
    /// Frames fed.
    pub frames: u64,
    /// Session CPU per 20 ms frame, µs (both directions).
    pub cpu_us_per_frame: f64,
    /// The pacing lead, ms (part of what the caller hears after a barge-in).
    pub lead_ms: u64,
    /// The resampler that feeds webrtc-vad on 24 kHz calls.
    pub vad_resampler: &'static str,
    /// Per clip, with `--per-clip`: labelled barge-in onsets and the session's decisions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_clip: Vec<ClipLine>,
    /// All clips.
    pub overall: GroupReport,
    /// Per scenario.
    pub by_scenario: BTreeMap<String, GroupReport>,
    /// Per SNR bucket: VAD only.
    pub by_snr: BTreeMap<String, VadScore>,
}

/// One clip's decisions, ms from the clip start.
#[derive(Debug, Clone, Serialize)]
pub struct ClipLine {
    /// Clip id.
    pub id: String,
    /// Labelled barge-in onsets.
    pub onsets: Vec<u64>,
    /// Pauses: decision time.
    pub pauses: Vec<u64>,
    /// Releases: decision time and the silence heard.
    pub releases: Vec<(u64, u64)>,
    /// Barge-ins (clears): decision time.
    pub bargeins: Vec<u64>,
    /// Speech onset delays, one per labelled speech segment detected (ms after the label).
    pub onset_delays_ms: Vec<i64>,
    /// End-of-turn delays, one per labelled end of turn scored (`SpeechEnded` after the label's
    /// end, hangover included).
    pub end_of_turn_delays_ms: Vec<i64>,
}

/// Evaluates every clip of the manifest.
pub fn evaluate(args: &EvalArgs) -> Result<EvalReport, Box<dyn std::error::Error + Send + Sync>> {
    let manifest = Manifest::load(&args.manifest)?;
    let mut config = SessionConfig::new(SampleRate::Hz16000, SampleRate::Hz16000);
    args.pipeline.apply(&mut config);
    config
        .validate()
        .map_err(|e| format!("invalid pipeline configuration: {e}"))?;
    let tol = manifest.label.tolerance_ms;
    let mut scores: Vec<ClipScore> = Vec::new();
    let mut clips = Vec::new();
    let mut busy = Duration::ZERO;
    let mut frames = 0u64;
    let mut per_clip = Vec::new();
    for clip in &manifest.clips {
        if args.only.as_deref().is_some_and(|o| !clip.id.contains(o)) {
            continue;
        }
        let audio = ClipAudio::load(&manifest, clip)?;
        let r = replay_clip(clip, &audio, config)?;
        busy += r.session_time;
        frames += r.frames as u64;
        let score = score::score_clip(
            clip,
            &r,
            tol,
            audio.outbound.as_deref(),
            audio.rate.frame_samples(),
        );
        if args.per_clip {
            per_clip.push(ClipLine {
                id: clip.id.clone(),
                onsets: clip.expect.bargein_onsets_ms.clone(),
                pauses: r.pauses_ms.iter().map(|&(at, _)| at).collect(),
                releases: r.releases_ms.clone(),
                bargeins: r.bargein_ms.clone(),
                onset_delays_ms: score.onset_delays_ms.clone(),
                end_of_turn_delays_ms: score.end_of_turn_delays_ms.clone(),
            });
        }
        scores.push(score);
        clips.push(clip);
    }
    let pairs: Vec<_> = clips.iter().copied().zip(scores.iter()).collect();
    let by_scenario = score::by_key(&pairs, |c| c.scenario.clone())
        .into_iter()
        .map(|(k, v)| (k, score::group(&v)))
        .collect();
    let by_snr = score::by_key(&pairs, |c| c.snr_bucket())
        .into_iter()
        .map(|(k, v)| (k, score::group(&v).vad))
        .collect();
    Ok(EvalReport {
        clips: pairs.len(),
        frames,
        cpu_us_per_frame: if frames > 0 {
            busy.as_secs_f64() * 1e6 / frames as f64
        } else {
            0.0
        },
        lead_ms: config.lead.as_millis() as u64,
        vad_resampler: "rubato Fft 24->16 kHz, 4 sub-chunks (2.5 ms)",
        per_clip,
        overall: score::group(&pairs),
        by_scenario,
        by_snr,
    })
}

/// Runs the tool: prints the table or the JSON.
pub fn run(args: &EvalArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let report = evaluate(args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.3}"))
}

fn ms(v: Option<i64>) -> String {
    v.map_or("-".into(), |x| x.to_string())
}

/// The readable report.
pub fn table(r: &EvalReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} clips, {} frames, {:.2} us CPU per frame, lead {} ms",
        r.clips, r.frames, r.cpu_us_per_frame, r.lead_ms
    );
    let _ = writeln!(
        s,
        "\n{:<12} {:>5} {:>6} {:>6} {:>6} {:>11} {:>11} {:>8} {:>11} {:>8} {:>8}",
        "group",
        "clips",
        "P",
        "R",
        "F1",
        "onset50/95",
        "eot50/95",
        "bi-rec",
        "react50/95",
        "false-bi",
        "bc-int"
    );
    let mut row = |name: &str, g: &GroupReport| {
        let _ = writeln!(
            s,
            "{:<12} {:>5} {:>6} {:>6} {:>6} {:>11} {:>11} {:>8} {:>11} {:>8} {:>8}",
            name,
            g.clips,
            num(g.vad.precision),
            num(g.vad.recall),
            num(g.vad.f1),
            format!("{}/{}", ms(g.onset_delay_ms.p50), ms(g.onset_delay_ms.p95)),
            format!(
                "{}/{}",
                ms(g.end_of_turn_delay_ms.p50),
                ms(g.end_of_turn_delay_ms.p95)
            ),
            pct(g.bargein_recall),
            format!(
                "{}/{}",
                ms(g.bargein_reaction_ms.p50),
                ms(g.bargein_reaction_ms.p95)
            ),
            pct(g.false_bargein_rate),
            pct(g.backchannel_interrupt_rate),
        );
    };
    row("overall", &r.overall);
    for (k, g) in &r.by_scenario {
        row(k, g);
    }
    let _ = writeln!(
        s,
        "\n{:<12} {:>13} {:>9} {:>7} {:>11} {:>8} {:>8} {:>12}",
        "turn-taking",
        "silence50/95",
        "false-int",
        "paused",
        "pause50/95",
        "bc-kept",
        "resumed",
        "resumed50/95"
    );
    let mut row = |name: &str, g: &GroupReport| {
        let _ = writeln!(
            s,
            "{:<12} {:>13} {:>9} {:>7} {:>11} {:>8} {:>8} {:>12}",
            name,
            format!(
                "{}/{}",
                ms(g.silence_reaction_ms.p50),
                ms(g.silence_reaction_ms.p95)
            ),
            pct(g.false_interruption_rate),
            pct(g.pause_rate),
            format!("{}/{}", ms(g.pause_ms.p50), ms(g.pause_ms.p95)),
            pct(g.backchannel_turn_kept_rate),
            pct(g.resumed_before_clear_rate),
            format!(
                "{}/{}",
                ms(g.resumed_before_clear_ms.p50),
                ms(g.resumed_before_clear_ms.p95)
            ),
        );
    };
    row("overall", &r.overall);
    for (k, g) in &r.by_scenario {
        row(k, g);
    }
    if !r.per_clip.is_empty() {
        let _ = writeln!(
            s,
            "\nper clip (ms): barge-in onsets | pauses | releases (at, silence) | barge-ins | speech onset delays | end-of-turn delays"
        );
        for c in &r.per_clip {
            let _ = writeln!(
                s,
                "{:<16} {:?} | {:?} | {:?} | {:?} | {:?} | {:?}",
                c.id,
                c.onsets,
                c.pauses,
                c.releases,
                c.bargeins,
                c.onset_delays_ms,
                c.end_of_turn_delays_ms
            );
        }
    }
    let _ = writeln!(
        s,
        "\n{:<18} {:>6} {:>6} {:>6} {:>8}",
        "SNR bucket", "P", "R", "F1", "FP frames"
    );
    for (k, v) in &r.by_snr {
        let _ = writeln!(
            s,
            "{:<18} {:>6} {:>6} {:>6} {:>8}",
            k,
            num(v.precision),
            num(v.recall),
            num(v.f1),
            v.false_positive_frames
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        eval: EvalArgs,
    }

    #[test]
    fn per_clip_lines_give_each_end_of_turn_near_the_hangover() {
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/manifest.json");
        let args = Cli::parse_from([
            "eval",
            "--manifest",
            manifest,
            "--per-clip",
            "--only",
            "speech_00",
        ])
        .eval;
        let report = evaluate(&args).expect("the bundled clips evaluate");
        assert!(!report.per_clip.is_empty());
        let hangover = SessionConfig::new(SampleRate::Hz16000, SampleRate::Hz16000)
            .hangover
            .as_millis() as i64;
        for c in &report.per_clip {
            assert!(
                !c.end_of_turn_delays_ms.is_empty(),
                "{}: no end of turn scored",
                c.id
            );
            for &d in &c.end_of_turn_delays_ms {
                assert!(
                    (hangover - 100..=hangover + 200).contains(&d),
                    "{}: end of turn {d} ms after the label, hangover {hangover}",
                    c.id
                );
            }
        }
        // The table shows them, at the end of each clip's line.
        let text = table(&report);
        for c in &report.per_clip {
            let shown = format!("{:?}", c.end_of_turn_delays_ms);
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&c.id) && l.ends_with(&shown)),
                "{}: {shown} not in\n{text}",
                c.id
            );
        }
    }
}
