//! What a [`Session`](super::session::Session) tells the shell: [`Event`]s are facts (the caller
//! started speaking, barged in, pressed a key), [`Command`]s are requests (send `clear`, send a
//! `notify` mark). Both are `Copy` and hold no heap memory, so queueing them allocates nothing.
//!
//! Real-time: no allocation anywhere in this module.

use std::time::{Duration, Instant};

use super::audio::{SampleRate, TurnId};
use super::dtmf::DtmfDigit;

/// A fact about the call, for the shell and the agent.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// `websocket:connected` arrived and agrees with the configured rate.
    Connected {
        /// The call's media rate.
        rate: SampleRate,
    },
    /// The caller started speaking (onset confirmed).
    SpeechStarted {
        /// When the decision was taken.
        at: Instant,
        /// When the first speech frame of the utterance arrived (before `at` by the onset time).
        onset: Instant,
        /// Position in the agent's inbound sample stream of the first sample delivered for this
        /// utterance (the start of its pre-roll when only speech is forwarded).
        stream_pos: u64,
    },
    /// The caller stopped speaking: the hangover ran out. This is the end of the caller's turn.
    SpeechEnded {
        /// When the decision was taken (last speech + hangover).
        at: Instant,
        /// Utterance length, first to last speech frame.
        duration: Duration,
        /// Position in the agent's inbound stream just after the utterance's last sample.
        stream_pos: u64,
    },
    /// The caller talked over the bot: playback was cleared and the turn discarded.
    BargeIn(BargeIn),
    /// Two-stage barge-in: caller energy the echo cannot explain; the bot is paused (no frames
    /// go out) until the suspicion is confirmed ([`Event::BargeIn`]) or released
    /// ([`Event::FalseInterruption`]). Nothing is discarded yet.
    PlaybackPaused {
        /// When the decision was taken.
        at: Instant,
        /// When the unexplained energy began.
        onset: Instant,
        /// When the caller stops hearing the bot: `at` plus what was still queued at Vonage.
        silent_at: Instant,
        /// The paused turn.
        turn: TurnId,
    },
    /// Two-stage barge-in: the suspicion died (a backchannel, a cough, a door). The paused turn
    /// resumes from the frame where it stopped.
    FalseInterruption {
        /// When playback resumed.
        at: Instant,
        /// How long the caller heard silence instead of the bot (from `silent_at` to `at`).
        paused: Duration,
        /// The resumed turn.
        turn: TurnId,
    },
    /// A key press reported by Vonage.
    Dtmf {
        /// The key.
        digit: DtmfDigit,
        /// How long it was held, when reported.
        duration: Option<Duration>,
        /// When it arrived.
        at: Instant,
    },
    /// Playback reached a mark: the caller has heard `heard` of `turn`.
    PlayoutReached {
        /// The turn the mark belongs to.
        turn: TurnId,
        /// Audio of that turn the caller has heard so far.
        heard: Duration,
        /// Whether that was the whole turn (the mark after its last frame).
        complete: bool,
    },
    /// The agent asked for a mark (`AgentLink::mark`) and playback has now reached it.
    MarkReached {
        /// The agent's mark id.
        id: u32,
    },
    /// `websocket:cleared`: Vonage confirmed that its playback buffer is empty.
    Cleared,
}

/// Why and when a barge-in fired, with the inputs of the decision for debugging.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BargeIn {
    /// When the decision was taken.
    pub at: Instant,
    /// When the caller's interrupting speech began.
    pub onset: Instant,
    /// The bot turn that was interrupted.
    pub turn: TurnId,
    /// How much of that turn the caller heard before playback stopped (playout truth: the last
    /// `notify` mark plus the time played since, capped at what was sent).
    pub heard: Duration,
    /// Caller frame level at the decision, dBFS.
    pub caller_level_dbfs: f32,
    /// Predicted echo level of the bot at the decision, dBFS.
    pub echo_dbfs: f32,
    /// Tracked noise floor at the decision, dBFS.
    pub noise_floor_dbfs: f32,
    /// Caller speech accumulated before firing.
    pub speech: Duration,
}

/// A request to the shell: send this text message to Vonage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Send `{"action":"clear"}`: empty Vonage's playback buffer now.
    ClearPlayback,
    /// Send `{"action":"notify","payload":{"vg_turn":T,"vg_frame":F,"vg_mark":M}}` right after the frame most
    /// recently sent; Vonage answers `websocket:notify` when playback reaches it.
    Notify {
        /// Turn of the frames before the mark.
        turn: TurnId,
        /// Frames of that turn sent before the mark.
        frame: u32,
        /// Agent mark id (0 = none) to report with [`Event::MarkReached`].
        mark: u32,
    },
}
