//! The agent's end of a session: two lock-free SPSC rings of samples (rtrb) and one of control
//! markers, so the agent can run on any task or thread while the session stays on its own.
//!
//! Inbound, the agent reads caller audio at its own rate. Outbound, it writes audio in chunks of
//! any size, and places markers in the same stream: [`AgentLink::start_turn`] begins a reply (the
//! session drops late audio of an interrupted turn until a newer turn starts),
//! [`AgentLink::end_turn`] ends one (its last frame is padded), [`AgentLink::mark`] asks for a
//! playout report, [`AgentLink::interrupt`] stops playback at once. Every marker carries its
//! position in the sample stream, so the session applies it exactly between the right samples.
//!
//! Real-time: no allocation after construction on either side; full rings hand back what did
//! not fit rather than grow.

use std::fmt;

use rtrb::{Consumer, Producer, RingBuffer};

use super::audio::{SampleRate, TurnId};

/// Capacity of the control ring, in markers: one for every 6 ms of a 400 ms outbound ring. A
/// marker sits at a position in the agent's audio, and the agent cannot write audio past the
/// ring, so only markers bunched at one spot fill it; the agents' backlogs wait for room then.
pub(crate) const CONTROL_CAPACITY: usize = 64;

/// A marker in the agent's outbound stream, at a sample position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Samples from `pos` on belong to `turn`.
    StartTurn { turn: TurnId, pos: u64 },
    /// The turn's audio ends at `pos`.
    EndTurn { pos: u64 },
    /// Report when playback reaches `pos`.
    Mark { id: u32, pos: u64 },
    /// Stop playback now and discard everything before `pos`.
    Interrupt { pos: u64 },
}

impl Control {
    pub(crate) fn pos(&self) -> u64 {
        match *self {
            Self::StartTurn { pos, .. }
            | Self::EndTurn { pos }
            | Self::Mark { pos, .. }
            | Self::Interrupt { pos } => pos,
        }
    }
}

/// The control ring is full: the agent sends markers far faster than audio plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlFull;

impl fmt::Display for ControlFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "agent control queue is full ({CONTROL_CAPACITY} markers)"
        )
    }
}

impl std::error::Error for ControlFull {}

/// The session's ends of the rings.
#[derive(Debug)]
pub(crate) struct SessionEnds {
    pub(crate) inbound: Producer<i16>,
    pub(crate) outbound: Consumer<i16>,
    pub(crate) control: Consumer<Control>,
}

/// The agent's end of a session. `Send`; move it to the agent's task or thread.
#[derive(Debug)]
pub struct AgentLink {
    inbound: Consumer<i16>,
    outbound: Producer<i16>,
    control: Producer<Control>,
    written: u64,
    turn: TurnId,
    turn_open: bool,
    next_mark: u32,
    agent_rate: SampleRate,
    call_rate: SampleRate,
}

impl AgentLink {
    /// Builds both ends: rings of `inbound` and `outbound` samples.
    pub(crate) fn pair(
        inbound: usize,
        outbound: usize,
        agent_rate: SampleRate,
        call_rate: SampleRate,
    ) -> (SessionEnds, AgentLink) {
        let (in_tx, in_rx) = RingBuffer::new(inbound);
        let (out_tx, out_rx) = RingBuffer::new(outbound);
        let (ctl_tx, ctl_rx) = RingBuffer::new(CONTROL_CAPACITY);
        (
            SessionEnds {
                inbound: in_tx,
                outbound: out_rx,
                control: ctl_rx,
            },
            AgentLink {
                inbound: in_rx,
                outbound: out_tx,
                control: ctl_tx,
                written: 0,
                turn: TurnId(0),
                turn_open: false,
                next_mark: 1,
                agent_rate,
                call_rate,
            },
        )
    }

    /// The rate of the audio the agent reads and writes.
    pub fn agent_rate(&self) -> SampleRate {
        self.agent_rate
    }

    /// The call's media rate (for information).
    pub fn call_rate(&self) -> SampleRate {
        self.call_rate
    }

    /// Caller samples waiting to be read.
    pub fn available(&self) -> usize {
        self.inbound.slots()
    }

    /// Reads caller audio into `out`; returns the number of samples read.
    pub fn read(&mut self, out: &mut [i16]) -> usize {
        let (got, _) = self.inbound.pop_partial_slice(out);
        got.len()
    }

    /// Room for outbound samples right now.
    pub fn space(&self) -> usize {
        self.outbound.slots()
    }

    /// Starts a new reply; audio written from now on belongs to it. Returns its id.
    pub fn start_turn(&mut self) -> Result<TurnId, ControlFull> {
        let turn = TurnId(self.turn.0.wrapping_add(1).max(1));
        self.control
            .push(Control::StartTurn {
                turn,
                pos: self.written,
            })
            .map_err(|_| ControlFull)?;
        self.turn = turn;
        self.turn_open = true;
        Ok(turn)
    }

    /// The turn audio is written to (`TurnId(0)` before the first).
    pub fn current_turn(&self) -> TurnId {
        self.turn
    }

    /// Writes agent audio for the current turn (starting turn 1 implicitly if none was started);
    /// returns how many samples fit. The rest must be offered again later.
    pub fn write(&mut self, samples: &[i16]) -> usize {
        if !self.turn_open && self.start_turn().is_err() {
            return 0;
        }
        let (pushed, _) = self.outbound.push_partial_slice(samples);
        self.written += pushed.len() as u64;
        pushed.len()
    }

    /// Ends the current turn: its last partial frame is padded with silence and played.
    pub fn end_turn(&mut self) -> Result<(), ControlFull> {
        if !self.turn_open {
            return Ok(());
        }
        self.control
            .push(Control::EndTurn { pos: self.written })
            .map_err(|_| ControlFull)?;
        self.turn_open = false;
        Ok(())
    }

    /// Asks for [`Event::MarkReached`](super::events::Event::MarkReached) once the caller has
    /// heard everything written so far. Returns the mark's id.
    pub fn mark(&mut self) -> Result<u32, ControlFull> {
        let id = self.next_mark;
        self.control
            .push(Control::Mark {
                id,
                pos: self.written,
            })
            .map_err(|_| ControlFull)?;
        self.next_mark = self.next_mark.wrapping_add(1).max(1);
        Ok(id)
    }

    /// Stops playback now (the agent's own barge-in decision): everything written so far is
    /// discarded, Vonage's buffer is cleared, and the current turn ends.
    pub fn interrupt(&mut self) -> Result<(), ControlFull> {
        self.control
            .push(Control::Interrupt { pos: self.written })
            .map_err(|_| ControlFull)?;
        self.turn_open = false;
        Ok(())
    }

    /// Whether the session has gone (the call ended).
    pub fn is_closed(&self) -> bool {
        self.outbound.is_abandoned()
    }
}
