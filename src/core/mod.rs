//! The sans-IO core: one call's audio, synchronous, no tokio, no sockets, no clock.
//!
//! Everything that can be wrong about audio lives here and is testable without a runtime.
//! [`session::Session`] is the entry point; the other modules are its parts, each usable (and
//! benchmarked) on its own.

pub mod audio;
pub mod bargein;
pub mod chunker;
pub mod codec;
pub mod config;
pub mod delays;
pub mod dtmf;
pub mod echo;
pub mod events;
pub mod link;
pub mod pacing;
pub mod preroll;
pub mod resample;
pub mod session;
pub mod spectrum;
pub mod stats;
pub mod tone;
pub mod vad;

pub use audio::{FRAME, FRAME_MS, SampleRate, TurnId};
pub use config::{BargeInConfig, BargeInMode, ConfigError, Forward, SessionConfig};
pub use delays::StageDelays;
pub use events::{BargeIn, Command, Event};
pub use link::AgentLink;
pub use session::{ExternalReference, Session};
