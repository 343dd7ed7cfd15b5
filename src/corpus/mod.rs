//! Labelled telephone-audio corpora in the `voicegate-corpus` format (see the corpus README
//! shipped beside the project in `../shared/corpus/README.md`, and the subset in `tests/data/`):
//! reading and validating a manifest, loading a clip's audio, and replaying a clip through the
//! exact [`Session`](crate::core::Session) the server runs.
//!
//! Not real-time: this is the offline side used by `voicegate eval` and the corpus tests.

pub mod manifest;
pub mod replay;
pub mod score;

pub use manifest::{Clip, CorpusError, Manifest};
pub use replay::{ClipAudio, Replay, replay_clip};
