//! The manifest of a `voicegate-corpus` (format version 1): the index and all labels.
//!
//! Only the fields the format documents are read; unknown fields are ignored (new optional fields
//! may appear without a version bump). Anything malformed is a [`CorpusError`] naming the clip and
//! the field.
//!
//! Not real-time.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Largest manifest we read (the dev corpus' is about 200 KiB).
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

/// The largest time a manifest may give, ms (a day): every time and duration is checked against
/// it, so the evaluator's arithmetic on them (frame counts, tolerances added) cannot overflow.
pub const MAX_TIME_MS: u64 = 86_400_000;

/// A `[start_ms, end_ms)` half-open segment.
pub type Segment = [u64; 2];

/// What went wrong with a corpus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorpusError {
    /// The manifest or an audio file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The manifest is larger than [`MAX_MANIFEST_BYTES`].
    #[error("{path} is {size} bytes, more than the {MAX_MANIFEST_BYTES}-byte limit")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The manifest is not valid JSON for the format.
    #[error("{path} is not a voicegate-corpus manifest: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's complaint, with line and column.
        source: serde_json::Error,
    },
    /// A field holds a value the format does not allow.
    #[error("manifest field {field}: {reason}")]
    Invalid {
        /// Where, e.g. `clips[3] (bargein_004).speech_segments_ms`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// An audio file is not what the manifest says.
    #[error("{path}: {reason}")]
    Audio {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The top level of `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// Always `voicegate-corpus`.
    pub format: String,
    /// Format version, 1.
    pub version: u32,
    /// Which set (`dev`, …).
    #[serde(default)]
    pub set: Option<String>,
    /// Labelling parameters.
    pub label: LabelParams,
    /// The clips.
    pub clips: Vec<Clip>,
    /// Directory of the manifest (audio paths are relative to it). Set by [`Manifest::load`].
    #[serde(skip)]
    pub dir: PathBuf,
}

/// Labelling parameters (only those an evaluator needs).
#[derive(Debug, Clone, Deserialize)]
pub struct LabelParams {
    /// Label tolerance, ms (20 in the dev set).
    pub tolerance_ms: u64,
    /// Backchannels are shorter than this, ms.
    #[serde(default)]
    pub backchannel_max_ms: Option<u64>,
}

/// One clip.
#[derive(Debug, Clone, Deserialize)]
pub struct Clip {
    /// Unique id.
    pub id: String,
    /// Scenario name (`speech`, `bargein`, `echo_only`, `distractor`, `backchannel`, `long_call`,
    /// or anything another corpus adds).
    pub scenario: String,
    /// Sample rate of the clip's files, Hz.
    pub rate: u32,
    /// Length of the inbound file, ms.
    pub duration_ms: u64,
    /// Inbound WAV, relative to the manifest.
    pub inbound: String,
    /// The bot's reference, when the bot talks.
    #[serde(default)]
    pub outbound: Option<Outbound>,
    /// Added noise.
    #[serde(default)]
    pub noise: Option<Noise>,
    /// Echo of the bot.
    #[serde(default)]
    pub echo: Option<Echo>,
    /// Ground truth: caller speech.
    #[serde(default)]
    pub speech_segments_ms: Vec<Segment>,
    /// When the bot plays, on the inbound timeline.
    #[serde(default)]
    pub bot_speech_ms: Vec<Segment>,
    /// Caller backchannels (also in `speech_segments_ms`).
    #[serde(default)]
    pub backchannels_ms: Vec<Segment>,
    /// Spans excluded from VAD scoring.
    #[serde(default)]
    pub vad_dont_care_ms: Vec<Segment>,
    /// Non-speech events.
    #[serde(default)]
    pub distractors: Vec<Distractor>,
    /// What should happen.
    pub expect: Expect,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The bot's reference audio.
#[derive(Debug, Clone, Deserialize)]
pub struct Outbound {
    /// WAV, relative to the manifest.
    pub file: String,
    /// Its rate, Hz.
    pub rate: u32,
    /// Inbound time at which its first sample is played, ms.
    pub start_ms: u64,
    /// Its length, ms.
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

/// Added noise.
#[derive(Debug, Clone, Deserialize)]
pub struct Noise {
    /// `white`, `pink`, `babble`, `street`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Caller active level minus noise level, dB; `None` without caller speech.
    #[serde(default)]
    pub snr_db: Option<f64>,
}

/// Echo of the bot.
#[derive(Debug, Clone, Deserialize)]
pub struct Echo {
    /// Bulk delay, ms.
    pub delay_ms: u64,
    /// Bot level minus echo level, dB.
    pub attenuation_db: f64,
}

/// A non-speech event.
#[derive(Debug, Clone, Deserialize)]
pub struct Distractor {
    /// `cough`, `click`, `door`, `dtmf`, `music`, `tv`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Start, ms.
    pub start_ms: u64,
    /// End, ms.
    pub end_ms: u64,
}

/// Expectations.
#[derive(Debug, Clone, Deserialize)]
pub struct Expect {
    /// At least one barge-in should fire.
    pub bargein: bool,
    /// Every onset where a barge-in should fire, ms.
    #[serde(default)]
    pub bargein_onsets_ms: Vec<u64>,
}

impl Clip {
    /// The SNR bucket key of the scoring rules: the integer dB, `clean`, or `no_caller_speech`.
    pub fn snr_bucket(&self) -> String {
        match &self.noise {
            None => "clean".to_owned(),
            Some(Noise { snr_db: None, .. }) => "no_caller_speech".to_owned(),
            Some(Noise {
                snr_db: Some(s), ..
            }) => {
                if s.fract() == 0.0 {
                    format!("{}", *s as i64)
                } else {
                    format!("{s}")
                }
            }
        }
    }
}

impl Manifest {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, CorpusError> {
        let io = |source| CorpusError::Io {
            path: path.to_owned(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_MANIFEST_BYTES {
            return Err(CorpusError::TooLarge {
                path: path.to_owned(),
                size,
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let mut m: Manifest =
            serde_json::from_slice(&bytes).map_err(|source| CorpusError::Json {
                path: path.to_owned(),
                source,
            })?;
        m.dir = path.parent().map(Path::to_owned).unwrap_or_default();
        m.validate()?;
        Ok(m)
    }

    /// Checks what the format promises: format name and version, rates, sorted non-overlapping
    /// segments, unique ids, and every time at most [`MAX_TIME_MS`].
    pub fn validate(&self) -> Result<(), CorpusError> {
        let bad = |field: String, reason: String| Err(CorpusError::Invalid { field, reason });
        if self.format != "voicegate-corpus" {
            return bad(
                "format".into(),
                format!("is {:?}, expected \"voicegate-corpus\"", self.format),
            );
        }
        if self.version != 1 {
            return bad(
                "version".into(),
                format!("is {}, this reader understands version 1", self.version),
            );
        }
        let too_large =
            |v: u64| format!("is {v} ms, more than the {MAX_TIME_MS} ms (a day) allowed");
        for (name, v) in [
            ("label.tolerance_ms", Some(self.label.tolerance_ms)),
            ("label.backchannel_max_ms", self.label.backchannel_max_ms),
        ] {
            if let Some(v) = v.filter(|&v| v > MAX_TIME_MS) {
                return bad(name.into(), too_large(v));
            }
        }
        let mut ids = std::collections::HashSet::new();
        for (i, c) in self.clips.iter().enumerate() {
            let at = |f: &str| format!("clips[{i}] ({}).{f}", c.id);
            if !ids.insert(c.id.as_str()) {
                return bad(at("id"), "duplicate id".into());
            }
            let times = [
                ("duration_ms", Some(c.duration_ms)),
                ("outbound.start_ms", c.outbound.as_ref().map(|o| o.start_ms)),
                (
                    "outbound.duration_ms",
                    c.outbound.as_ref().and_then(|o| o.duration_ms),
                ),
                ("echo.delay_ms", c.echo.as_ref().map(|e| e.delay_ms)),
            ];
            let segments = [
                &c.speech_segments_ms,
                &c.bot_speech_ms,
                &c.backchannels_ms,
                &c.vad_dont_care_ms,
            ];
            let all = times
                .into_iter()
                .chain(
                    segments
                        .into_iter()
                        .flatten()
                        .flat_map(|s| [("a segment", Some(s[0])), ("a segment", Some(s[1]))]),
                )
                .chain(c.distractors.iter().flat_map(|d| {
                    [
                        ("distractors.start_ms", Some(d.start_ms)),
                        ("distractors.end_ms", Some(d.end_ms)),
                    ]
                }))
                .chain(
                    c.expect
                        .bargein_onsets_ms
                        .iter()
                        .map(|&o| ("expect.bargein_onsets_ms", Some(o))),
                );
            for (name, v) in all {
                if let Some(v) = v.filter(|&v| v > MAX_TIME_MS) {
                    return bad(at(name), too_large(v));
                }
            }
            if crate::core::SampleRate::try_from(c.rate).map_or(true, |r| !r.is_call_rate()) {
                return bad(
                    at("rate"),
                    format!("{} Hz is not 8000, 16000 or 24000", c.rate),
                );
            }
            for (name, segs) in [
                ("speech_segments_ms", &c.speech_segments_ms),
                ("bot_speech_ms", &c.bot_speech_ms),
                ("backchannels_ms", &c.backchannels_ms),
                ("vad_dont_care_ms", &c.vad_dont_care_ms),
            ] {
                let mut prev_end = 0;
                for s in segs.iter() {
                    if s[0] >= s[1] || s[0] < prev_end {
                        return bad(
                            at(name),
                            format!("segment {s:?} is empty, unsorted or overlapping"),
                        );
                    }
                    prev_end = s[1];
                }
            }
            if let Some(o) = &c.outbound
                && o.rate != c.rate
            {
                return bad(
                    at("outbound.rate"),
                    format!("{} Hz differs from the clip's {} Hz", o.rate, c.rate),
                );
            }
            if c.expect.bargein && c.expect.bargein_onsets_ms.is_empty() {
                return bad(
                    at("expect.bargein_onsets_ms"),
                    "empty although expect.bargein is true".into(),
                );
            }
        }
        Ok(())
    }

    /// Absolute path of a file named in the manifest.
    pub fn path_of(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(s: &str) -> Result<Manifest, CorpusError> {
        let dir = std::env::temp_dir().join(format!("vg-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("m{}.json", s.len()));
        std::fs::write(&p, s).unwrap();
        Manifest::load(&p)
    }

    #[test]
    fn the_test_subset_loads() {
        let m = Manifest::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/manifest.json"
        )))
        .unwrap();
        assert!(m.clips.len() >= 10);
        assert_eq!(m.label.tolerance_ms, 20);
    }

    #[test]
    fn malformed_manifests_fail_clearly() {
        let e = load_str("{").unwrap_err();
        assert!(matches!(e, CorpusError::Json { .. }), "{e}");
        let e =
            load_str(r#"{"format":"other","version":1,"label":{"tolerance_ms":20},"clips":[]}"#)
                .unwrap_err();
        assert!(e.to_string().contains("format"), "{e}");
        let e = load_str(
            r#"{"format":"voicegate-corpus","version":2,"label":{"tolerance_ms":20},"clips":[]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("version"), "{e}");
        let clip = r#"{"id":"a","scenario":"speech","rate":16000,"duration_ms":1000,"inbound":"a.wav","speech_segments_ms":[[500,600],[100,200]],"expect":{"bargein":false}}"#;
        let e = load_str(&format!(r#"{{"format":"voicegate-corpus","version":1,"label":{{"tolerance_ms":20}},"clips":[{clip}]}}"#)).unwrap_err();
        assert!(e.to_string().contains("speech_segments_ms"), "{e}");
        let clip = r#"{"id":"a","scenario":"speech","rate":16000,"duration_ms":1000,"inbound":"a.wav","speech_segments_ms":[[100,18446744073709551615]],"expect":{"bargein":false}}"#;
        let e = load_str(&format!(r#"{{"format":"voicegate-corpus","version":1,"label":{{"tolerance_ms":20}},"clips":[{clip}]}}"#)).unwrap_err();
        assert!(e.to_string().contains("a day"), "{e}");
        let e = load_str(r#"{"format":"voicegate-corpus","version":1,"label":{"tolerance_ms":18446744073709551615},"clips":[]}"#).unwrap_err();
        assert!(e.to_string().contains("label.tolerance_ms"), "{e}");
        let clip = r#"{"id":"a","scenario":"bargein","rate":16000,"duration_ms":1000,"inbound":"a.wav","expect":{"bargein":true,"bargein_onsets_ms":[18446744073709551615]}}"#;
        let e = load_str(&format!(r#"{{"format":"voicegate-corpus","version":1,"label":{{"tolerance_ms":20}},"clips":[{clip}]}}"#)).unwrap_err();
        assert!(e.to_string().contains("bargein_onsets_ms"), "{e}");
        let clip = r#"{"id":"a","scenario":"speech","rate":44100,"duration_ms":1000,"inbound":"a.wav","expect":{"bargein":false}}"#;
        let e = load_str(&format!(r#"{{"format":"voicegate-corpus","version":1,"label":{{"tolerance_ms":20}},"clips":[{clip}]}}"#)).unwrap_err();
        assert!(e.to_string().contains("44100"), "{e}");
    }
}
