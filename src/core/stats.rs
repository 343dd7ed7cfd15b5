//! Plain integer counters the session bumps on the media path; the shell reads and exports them.
//!
//! Real-time: no allocation; plain `u64` fields, no atomics (the session is owned by one task).

/// Counters for one call. All monotonic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Valid caller frames processed.
    pub frames_in: u64,
    /// Caller frames rejected (wrong size, odd length) and dropped.
    pub frames_invalid: u64,
    /// Frames handed to the shell for Vonage.
    pub frames_out: u64,
    /// Inbound agent-rate samples dropped because the agent's ring was full (slow agent).
    pub agent_samples_dropped: u64,
    /// Outbound agent samples discarded because their turn was interrupted.
    pub samples_discarded: u64,
    /// Text messages with an unknown `event`, ignored.
    pub text_unknown: u64,
    /// Text messages that could not be parsed, dropped.
    pub text_invalid: u64,
    /// Barge-ins fired (confirmed: playback cleared).
    pub barge_ins: u64,
    /// Two-stage barge-in: times the bot was paused on a suspicion.
    pub pauses: u64,
    /// Two-stage barge-in: suspicions released (the bot resumed its turn).
    pub false_interruptions: u64,
    /// Outbound frames padded with silence at the end of a turn.
    pub frames_padded: u64,
    /// Times the bot's audio ran dry in the middle of a turn (the agent was late).
    pub underruns: u64,
    /// Events dropped because the shell did not poll them (queue full).
    pub events_dropped: u64,
    /// DTMF key presses.
    pub dtmf: u64,
}
