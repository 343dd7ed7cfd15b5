//! Scoring a replayed clip against its labels, following the normative "How to score" rules of
//! the corpus README: 20 ms frames timed at their end, frame truth by half-overlap, a ±tolerance
//! band left unscored, micro-averaged precision/recall/F1, onset and end-of-turn windows,
//! barge-in matching within `[onset - tol, onset + 1000 ms]`, backchannel interrupts within
//! `[start - tol, end + 300 ms]`, nearest-rank percentiles.
//!
//! Not real-time.

use std::collections::BTreeMap;

use serde::Serialize;

use super::manifest::{Clip, Segment};
use super::replay::Replay;

/// Frame length, ms.
const FRAME_MS: u64 = 20;
/// A barge-in counts for an onset up to this long after it.
const BARGEIN_WINDOW_MS: u64 = 1_000;
/// A barge-in up to this long after a backchannel counts as interrupting on it.
const BACKCHANNEL_GRACE_MS: u64 = 300;
/// The bot is playing when its reference was louder than this in the last 200 ms.
const BOT_PLAYING_DBFS: f32 = -50.0;

/// True/false positive and false negative frame counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confusion {
    /// Speech frames called speech.
    pub tp: u64,
    /// Non-speech frames called speech.
    pub fp: u64,
    /// Speech frames missed.
    pub fn_: u64,
}

impl Confusion {
    fn add(&mut self, o: Confusion) {
        self.tp += o.tp;
        self.fp += o.fp;
        self.fn_ += o.fn_;
    }

    /// Precision, recall and F1 (`None` where undefined).
    pub fn prf(&self) -> VadScore {
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let precision = ratio(self.tp, self.tp + self.fp);
        let recall = ratio(self.tp, self.tp + self.fn_);
        let f1 = match (precision, recall) {
            (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
            (Some(_), Some(_)) => Some(0.0),
            _ => None,
        };
        VadScore {
            precision,
            recall,
            f1,
            false_positive_frames: self.fp,
        }
    }
}

/// Frame-level VAD figures.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct VadScore {
    /// TP / (TP + FP).
    pub precision: Option<f64>,
    /// TP / (TP + FN).
    pub recall: Option<f64>,
    /// Harmonic mean.
    pub f1: Option<f64>,
    /// Non-speech frames called speech.
    pub false_positive_frames: u64,
}

/// Everything measured on one clip.
#[derive(Debug, Clone, Default)]
pub struct ClipScore {
    /// Scored-frame confusion of the smoothed speech state.
    pub vad: Confusion,
    /// Delays of detected onsets, ms (may be slightly negative).
    pub onset_delays_ms: Vec<i64>,
    /// Counted onsets that were missed.
    pub onset_misses: u64,
    /// End-of-turn delays, ms.
    pub end_of_turn_delays_ms: Vec<i64>,
    /// Counted ends of turn that were missed.
    pub end_of_turn_misses: u64,
    /// Labelled barge-in onsets.
    pub bargein_onsets: u64,
    /// Of which detected.
    pub bargein_detected: u64,
    /// Reaction times of detected onsets, ms.
    pub bargein_reactions_ms: Vec<i64>,
    /// Barge-ins matching no onset.
    pub unmatched_bargeins: u64,
    /// Whether any barge-in fired.
    pub any_bargein: bool,
    /// Backchannels in the clip.
    pub backchannels: u64,
    /// Backchannels a barge-in fired on.
    pub backchannel_interrupts: u64,
    /// Per detected-or-not barge-in onset with any silencing in its window: labelled onset →
    /// the caller stops hearing the bot (pause plus the queued lead, or clear), ms.
    pub silence_reactions_ms: Vec<i64>,
    /// Per real barge-in onset that ended in a clear: bot audio the caller heard again between
    /// the first silencing and the clear (the pause released, then taken again), ms; 0 when
    /// the bot stayed silent.
    pub resumed_before_clear_ms: Vec<i64>,
    /// Whether any pause happened.
    pub any_pause: bool,
    /// Silence heard on each released pause (a false alarm), ms.
    pub pauses_ms: Vec<i64>,
    /// Backchannels after which the bot still had its turn (no clear in the window).
    pub backchannels_kept: u64,
    /// Bot speech, ms.
    pub bot_speech_ms: u64,
    /// Frames fed.
    pub frames: u64,
}

fn overlap(a: Segment, b0: u64, b1: u64) -> u64 {
    a[1].min(b1).saturating_sub(a[0].max(b0))
}

fn is_speech(segs: &[Segment], k: u64, shrink: i64) -> bool {
    let (f0, f1) = (k * FRAME_MS, k * FRAME_MS + FRAME_MS);
    let inside: u64 = segs
        .iter()
        .map(|s| {
            let a = (s[0] as i64 + shrink).max(0) as u64;
            let b = (s[1] as i64 - shrink).max(0) as u64;
            if b <= a { 0 } else { overlap([a, b], f0, f1) }
        })
        .sum();
    inside * 2 >= FRAME_MS
}

/// Whether the bot is playing at frame `k` (its reference frames `k-9..=k` on the inbound
/// timeline; `ref_levels` holds the reference's per-frame level from its start).
fn bot_playing(ref_levels: &[f32], start_frame: u64, k: u64) -> bool {
    (k.saturating_sub(9)..=k).any(|j| {
        j >= start_frame
            && ref_levels
                .get((j - start_frame) as usize)
                .is_some_and(|&l| l > BOT_PLAYING_DBFS)
    })
}

/// Scores one replayed clip. `reference` is the bot's reference audio (if any).
pub fn score_clip(
    clip: &Clip,
    r: &Replay,
    tol_ms: u64,
    reference: Option<&[i16]>,
    frame_samples: usize,
) -> ClipScore {
    let mut s = ClipScore {
        frames: r.frames as u64,
        ..ClipScore::default()
    };
    let tol = tol_ms as i64;
    let segs = &clip.speech_segments_ms;

    // VAD frames.
    for k in 0..r.frames as u64 {
        let truth = is_speech(segs, k, 0);
        if truth != is_speech(segs, k, tol) || truth != is_speech(segs, k, -tol) {
            continue;
        }
        if clip
            .vad_dont_care_ms
            .iter()
            .any(|d| overlap(*d, k * FRAME_MS, k * FRAME_MS + FRAME_MS) > 0)
        {
            continue;
        }
        match (truth, r.speech_state[k as usize]) {
            (true, true) => s.vad.tp += 1,
            (false, true) => s.vad.fp += 1,
            (true, false) => s.vad.fn_ += 1,
            (false, false) => {}
        }
    }
    let state_at = |t: u64| -> bool {
        // Decision time t = 20(k+1).
        t >= FRAME_MS
            && r.speech_state
                .get((t / FRAME_MS - 1) as usize)
                .copied()
                .unwrap_or(false)
    };
    let end = r.frames as u64 * FRAME_MS;

    // Onsets.
    for (i, seg) in segs.iter().enumerate() {
        let counted = i == 0 || seg[0] >= segs[i - 1][1] + 300;
        if !counted {
            continue;
        }
        let lo = seg[0].saturating_sub(tol_ms).max(FRAME_MS);
        let first_t = lo.div_ceil(FRAME_MS) * FRAME_MS;
        let hit = (first_t..=(seg[0] + 500).min(end))
            .step_by(FRAME_MS as usize)
            .find(|&t| state_at(t));
        match hit {
            Some(t) => s.onset_delays_ms.push(t as i64 - seg[0] as i64),
            None => s.onset_misses += 1,
        }
    }

    // Ends of turn.
    for (i, seg) in segs.iter().enumerate() {
        let next = segs.get(i + 1).map_or(end, |n| n[0]);
        if next < seg[1] + 500 {
            continue;
        }
        // Last speech frame inside the widened segment.
        let last = (0..r.frames as u64).rev().find(|&k| {
            let (f0, t) = (k * FRAME_MS, (k + 1) * FRAME_MS);
            f0 as i64 >= seg[0] as i64 - tol
                && t <= seg[1] + tol_ms + FRAME_MS
                && r.speech_state[k as usize]
        });
        let Some(last) = last else {
            s.end_of_turn_misses += 1;
            continue;
        };
        let last_t = (last + 1) * FRAME_MS;
        match r.speech_ended_ms.iter().find(|&&t| t > last_t && t <= next) {
            Some(&t) => s.end_of_turn_delays_ms.push(t as i64 - seg[1] as i64),
            None => s.end_of_turn_misses += 1,
        }
    }

    // Barge-ins.
    let ref_levels: Vec<f32> = reference
        .map(|x| {
            x.chunks(frame_samples)
                .map(crate::core::audio::level_dbfs)
                .collect()
        })
        .unwrap_or_default();
    let start_frame = clip.outbound.as_ref().map_or(0, |o| o.start_ms / FRAME_MS);
    let playing_bargeins: Vec<u64> = r
        .bargein_ms
        .iter()
        .copied()
        .filter(|&t| bot_playing(&ref_levels, start_frame, (t / FRAME_MS).saturating_sub(1)))
        .collect();
    let mut matched = vec![false; playing_bargeins.len()];
    for &o in &clip.expect.bargein_onsets_ms {
        s.bargein_onsets += 1;
        let mut first = None;
        for (i, &t) in playing_bargeins.iter().enumerate() {
            if t + tol_ms >= o && t <= o + BARGEIN_WINDOW_MS {
                matched[i] = true;
                first.get_or_insert(t);
            }
        }
        if let Some(t) = first {
            s.bargein_detected += 1;
            s.bargein_reactions_ms.push(t as i64 - o as i64);
        }
    }
    for &o in &clip.expect.bargein_onsets_ms {
        // The first moment the caller stopped hearing the bot for this onset: a pause's
        // `silent_at` or a clear, decided inside the onset's window.
        let in_window = |t: u64| t + tol_ms >= o && t <= o + BARGEIN_WINDOW_MS;
        // A pause that began earlier and is still on at the onset counts too: the caller is
        // not hearing the bot when they start (reaction 0).
        let still_paused_at_onset = r.pauses_ms.iter().any(|&(at, _)| {
            at <= o
                && !r.releases_ms.iter().any(|&(rel, _)| rel > at && rel <= o)
                && !r.bargein_ms.iter().any(|&c| c > at && c <= o)
        });
        let pause = r
            .pauses_ms
            .iter()
            .filter(|(at, _)| in_window(*at))
            .map(|&(_, silent)| silent.max(o))
            .min()
            .or(still_paused_at_onset.then_some(o));
        let clear = playing_bargeins.iter().copied().find(|&t| in_window(t));
        let silent = match (pause, clear) {
            (Some(p), Some(c)) => Some(p.min(c)),
            (p, c) => p.or(c),
        };
        if let Some(t) = silent {
            s.silence_reactions_ms.push(t as i64 - o as i64);
        }
        if let (Some(first), Some(c)) = (silent, clear) {
            s.resumed_before_clear_ms
                .push(resumed_between(&r.pauses_ms, &r.releases_ms, first, c) as i64);
        }
    }
    s.any_pause = !r.pauses_ms.is_empty();
    // A false alarm is a released pause that did not begin inside a real barge-in's window
    // (releases there are the detector losing a caller between words, not a false alarm).
    s.pauses_ms = r
        .releases_ms
        .iter()
        .zip(r.pauses_ms.iter())
        .filter(|(_, (paused_at, _))| {
            !clip
                .expect
                .bargein_onsets_ms
                .iter()
                .any(|&o| paused_at + tol_ms >= o && *paused_at <= o + BARGEIN_WINDOW_MS)
        })
        .map(|(&(_, ms), _)| ms as i64)
        .collect();
    s.unmatched_bargeins = matched.iter().filter(|m| !**m).count() as u64;
    s.any_bargein = !playing_bargeins.is_empty();
    for bc in &clip.backchannels_ms {
        s.backchannels += 1;
        if playing_bargeins
            .iter()
            .any(|&t| t + tol_ms >= bc[0] && t <= bc[1] + BACKCHANNEL_GRACE_MS)
        {
            s.backchannel_interrupts += 1;
        } else {
            s.backchannels_kept += 1;
        }
    }
    s.bot_speech_ms = clip.bot_speech_ms.iter().map(|b| b[1] - b[0]).sum();
    s
}

/// Bot audio audible again between `from` (the caller stopped hearing the bot) and `clear`:
/// from each release in that span to the next silencing (a pause's `silent_at`, or the clear).
fn resumed_between(pauses: &[(u64, u64)], releases: &[(u64, u64)], from: u64, clear: u64) -> u64 {
    releases
        .iter()
        .map(|&(rel, _)| rel)
        .filter(|&rel| rel >= from && rel < clear)
        .map(|rel| {
            let next = pauses
                .iter()
                .map(|&(_, silent)| silent)
                .filter(|&t| t > rel)
                .min()
                .unwrap_or(clear)
                .min(clear);
            next - rel
        })
        .sum()
}

/// Nearest-rank percentile (`p` in 0–100); with fewer than 20 values p95 is the maximum, which
/// nearest-rank gives anyway.
pub fn percentile(values: &[i64], p: f64) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

/// p50 and p95 of a distribution, `null` when empty.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<i64>,
    /// 95th percentile.
    pub p95: Option<i64>,
}

impl Percentiles {
    fn of(v: &[i64]) -> Self {
        Self {
            p50: percentile(v, 50.0),
            p95: percentile(v, 95.0),
        }
    }
}

/// A group's figures (one `--json` block).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupReport {
    /// Clips in the group.
    pub clips: usize,
    /// Frame-level VAD.
    pub vad: VadScore,
    /// Speech-onset delay.
    pub onset_delay_ms: Percentiles,
    /// Onsets missed.
    pub onset_misses: u64,
    /// End-of-turn delay.
    pub end_of_turn_delay_ms: Percentiles,
    /// Ends of turn missed.
    pub end_of_turn_misses: u64,
    /// Detected barge-in onsets / all (`null` without any).
    pub bargein_recall: Option<f64>,
    /// Reaction time, labelled onset → BargeIn.
    pub bargein_reaction_ms: Percentiles,
    /// Share of clips without an expected barge-in that had one (`null` without such clips).
    pub false_bargein_rate: Option<f64>,
    /// Unmatched barge-ins per minute of bot speech.
    pub unmatched_bargeins_per_bot_minute: Option<f64>,
    /// Backchannels interrupted / all.
    pub backchannel_interrupt_rate: Option<f64>,
    /// Labelled barge-in onset → the caller stops hearing the bot (pause decision plus the
    /// pacing lead still queued at Vonage, or a clear).
    pub silence_reaction_ms: Percentiles,
    /// Share of clips without a real barge-in where the bot lost its turn (clear sent).
    pub false_interruption_rate: Option<f64>,
    /// Share of clips without a real barge-in where the bot paused at all.
    pub pause_rate: Option<f64>,
    /// Silence the caller heard on a false alarm (a released pause), ms.
    pub pause_ms: Percentiles,
    /// Backchannels after which the bot kept its turn / all backchannels.
    pub backchannel_turn_kept_rate: Option<f64>,
    /// Share of real barge-ins ending in a clear where the bot was heard again between the
    /// first pause and the clear (the suspicion released in a word gap, then confirmed).
    pub resumed_before_clear_rate: Option<f64>,
    /// How long it was heard again, over those barge-ins, ms.
    pub resumed_before_clear_ms: Percentiles,
}

/// Aggregates clip scores into a group report.
pub fn group(scores: &[(&Clip, &ClipScore)]) -> GroupReport {
    let mut vad = Confusion::default();
    let (mut on, mut eot, mut react) = (Vec::new(), Vec::new(), Vec::new());
    let (mut on_miss, mut eot_miss, mut onsets, mut det, mut unmatched, mut bot_ms) =
        (0, 0, 0, 0, 0, 0);
    let (mut neg, mut neg_fired, mut bcs, mut bc_int) = (0u64, 0u64, 0, 0);
    let (mut silence, mut pauses, mut neg_paused, mut bc_kept) = (Vec::new(), Vec::new(), 0u64, 0);
    let (mut cleared, mut resumed) = (0u64, Vec::new());
    for (clip, s) in scores {
        vad.add(s.vad);
        on.extend_from_slice(&s.onset_delays_ms);
        eot.extend_from_slice(&s.end_of_turn_delays_ms);
        react.extend_from_slice(&s.bargein_reactions_ms);
        on_miss += s.onset_misses;
        eot_miss += s.end_of_turn_misses;
        onsets += s.bargein_onsets;
        det += s.bargein_detected;
        unmatched += s.unmatched_bargeins;
        bot_ms += s.bot_speech_ms;
        silence.extend_from_slice(&s.silence_reactions_ms);
        pauses.extend_from_slice(&s.pauses_ms);
        cleared += s.resumed_before_clear_ms.len() as u64;
        resumed.extend(
            s.resumed_before_clear_ms
                .iter()
                .copied()
                .filter(|&ms| ms > 0),
        );
        bc_kept += s.backchannels_kept;
        if !clip.expect.bargein {
            neg += 1;
            neg_fired += u64::from(s.any_bargein);
            neg_paused += u64::from(s.any_pause || s.any_bargein);
        }
        bcs += s.backchannels;
        bc_int += s.backchannel_interrupts;
    }
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    GroupReport {
        clips: scores.len(),
        vad: vad.prf(),
        onset_delay_ms: Percentiles::of(&on),
        onset_misses: on_miss,
        end_of_turn_delay_ms: Percentiles::of(&eot),
        end_of_turn_misses: eot_miss,
        bargein_recall: ratio(det, onsets),
        bargein_reaction_ms: Percentiles::of(&react),
        false_bargein_rate: ratio(neg_fired, neg),
        unmatched_bargeins_per_bot_minute: (bot_ms > 0)
            .then(|| unmatched as f64 * 60_000.0 / bot_ms as f64),
        backchannel_interrupt_rate: ratio(bc_int, bcs),
        silence_reaction_ms: Percentiles::of(&silence),
        false_interruption_rate: ratio(neg_fired, neg),
        pause_rate: ratio(neg_paused, neg),
        pause_ms: Percentiles::of(&pauses),
        backchannel_turn_kept_rate: ratio(bc_kept, bcs),
        resumed_before_clear_rate: ratio(resumed.len() as u64, cleared),
        resumed_before_clear_ms: Percentiles::of(&resumed),
    }
}

/// Groups clip scores by a key.
pub fn by_key<'a, F: Fn(&Clip) -> String>(
    scores: &[(&'a Clip, &'a ClipScore)],
    key: F,
) -> BTreeMap<String, Vec<(&'a Clip, &'a ClipScore)>> {
    let mut m: BTreeMap<String, Vec<(&Clip, &ClipScore)>> = BTreeMap::new();
    for &(c, s) in scores {
        m.entry(key(c)).or_default().push((c, s));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[5], 95.0), Some(5));
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
        assert_eq!(percentile(&[4, 3, 2, 1], 95.0), Some(4));
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 95.0), Some(95));
    }

    #[test]
    fn resumed_audio_runs_from_each_release_to_the_next_silencing() {
        // Paused (silent at 120), released at 300, paused again (silent at 380), released at
        // 500, cleared at 560: heard again 300..380 and 500..560.
        let pauses = [(100, 120), (360, 380)];
        let releases = [(300, 180), (500, 120)];
        assert_eq!(resumed_between(&pauses, &releases, 120, 560), 80 + 60);
        // A release before the onset's first silencing, or after the clear, does not count.
        assert_eq!(resumed_between(&pauses, &releases, 400, 560), 60);
        assert_eq!(resumed_between(&pauses, &releases, 120, 300), 0);
        assert_eq!(resumed_between(&[], &[], 120, 300), 0);
    }

    #[test]
    fn frame_truth_by_half_overlap() {
        let segs = [[100, 210]];
        assert!(!is_speech(&segs, 4, 0)); // 80..100
        assert!(is_speech(&segs, 5, 0)); // 100..120
        assert!(is_speech(&segs, 10, 0)); // 200..220: 10 ms inside
        assert!(!is_speech(&segs, 11, 0));
    }
}
