//! The default agent: after each caller utterance ends, it plays the utterance back.
//!
//! It exercises the whole loop a real agent uses (VAD and end of turn, resampling both ways,
//! turns, pacing, barge-in when the caller talks over the echo), so a newcomer calling the
//! server hears everything working before writing any agent code.
//!
//! The caller's audio arrives speech-only with its pre-roll ([`Forward::Speech`]); the agent
//! keeps at most [`EchoAgent::max_utterance`] of it and at most what its 64 KiB tape holds
//! packed (about 4 s of telephone speech at 16 kHz, less when it is noisy or at 24 kHz); a
//! longer utterance keeps its last part.
//! On barge-in it stops writing the interrupted echo; the new utterance is echoed in turn.
//!
//! Key presses drive call control, for trying it by hand: `0` transfers the caller to the
//! number set with [`EchoAgent::with_transfer_to`] (`--transfer-to`), `#` hangs up. Both need the
//! Vonage REST API (`--application-id`, `--private-key`); without it the refusal is logged. An
//! action runs on its own task, so the echo carries on while the request is in flight. At most
//! one is in flight per call: a key pressed meanwhile is moot (a hangup ends the call, a transfer
//! takes the caller away) and is ignored, as is any key after a hangup succeeded; ignored keys are
//! counted in `voicegate_agent_actions_ignored_total`, and the lines about keys have a per-call
//! allowance (`agent::log_budget`), so a flood of key presses costs neither requests nor log lines.
//!
//! Memory: the caller's audio waits on one tape, packed losslessly (about half the bytes of
//! plain samples, see [`Tape`]) into a ring of at most 64 KiB ([`TAPE_BYTES`]) allocated when
//! the agent starts and reused for the whole call; audio that does not fit (beyond
//! [`EchoAgent::max_utterance`] or the ring) drops the oldest first, and the call's total of
//! dropped audio is logged when it ends. Real-time: recording and playing back allocate nothing;
//! a key press allocates for its REST request (the keypad's state is made at the first press, so
//! a call without keys holds nothing for it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::log_budget::LogBudget;
use super::metrics::AgentMetrics;
use super::{Agent, AgentAction, AgentError, AgentEvent, AgentIo, BoxFuture, CallHandle, CallInfo};
use crate::core::dtmf::DtmfDigit;
use crate::core::{Forward, SampleRate};

/// Plays each caller utterance back once it ends.
#[derive(Debug, Clone)]
pub struct EchoAgent {
    max_utterance: Duration,
    transfer_to: Option<Arc<str>>,
}

impl Default for EchoAgent {
    fn default() -> Self {
        Self {
            max_utterance: Duration::from_secs(10),
            transfer_to: None,
        }
    }
}

impl EchoAgent {
    /// An echo agent that keeps at most `max_utterance` of each utterance (at least 1 s), and
    /// at most what fits on its tape (64 KiB packed, allocated per call: see [`TAPE_BYTES`]).
    pub fn new(max_utterance: Duration) -> Self {
        Self {
            max_utterance: max_utterance.max(Duration::from_secs(1)),
            transfer_to: None,
        }
    }

    /// Transfers the caller to `number` (E.164 digits) when they press `0`.
    pub fn with_transfer_to(mut self, number: Option<String>) -> Self {
        self.transfer_to = number.map(Arc::from);
        self
    }

    /// Where `0` transfers the caller.
    pub fn transfer_to(&self) -> Option<&str> {
        self.transfer_to.as_deref()
    }

    /// The longest utterance echoed in full, if it also fits on the tape (64 KiB packed: about
    /// 4 s of clean speech at 16 kHz, less for noisy audio; see [`TAPE_BYTES`]).
    pub fn max_utterance(&self) -> Duration {
        self.max_utterance
    }
}

impl Agent for EchoAgent {
    fn agent_rate(&self, call_rate: SampleRate) -> SampleRate {
        call_rate
    }

    fn forward(&self) -> Forward {
        Forward::Speech
    }

    fn start(&self, call: CallInfo, io: AgentIo) -> BoxFuture<'static, Result<(), AgentError>> {
        let cap =
            (u128::from(call.agent_rate.hz()) * self.max_utterance.as_millis() / 1_000) as usize;
        Box::pin(run(io, cap, self.transfer_to.clone()))
    }
}

/// Key presses logged per call (a request's line and its refusal count as one; ignored keys are
/// logged at debug level only); the rest are counted.
const MAX_KEY_LOGS: u32 = 10;

/// Call control from the keys: `0` transfers, `#` hangs up, other keys do nothing. At most one
/// request is in flight; it runs on its own task, which clears `in_flight` when it is done. After
/// a hangup succeeded (`CallHandle::is_hung_up`) keys do nothing more.
struct Keypad {
    in_flight: Arc<AtomicBool>,
    logs: LogBudget,
}

impl Keypad {
    fn new(call: &CallHandle, metrics: &AgentMetrics) -> Self {
        Self {
            in_flight: Arc::new(AtomicBool::new(false)),
            logs: LogBudget::new(
                "lines about key presses",
                MAX_KEY_LOGS,
                call.id().clone(),
                metrics.log_lines_suppressed.clone(),
            ),
        }
    }

    fn press(
        &mut self,
        call: &CallHandle,
        metrics: &AgentMetrics,
        digit: DtmfDigit,
        transfer_to: Option<&Arc<str>>,
    ) {
        let key = digit.as_char();
        let action = match (key, transfer_to) {
            ('#', _) => AgentAction::Hangup,
            ('0', Some(to)) => AgentAction::Transfer { to: to.to_string() },
            ('0', None) => {
                if self.logs.allow() {
                    tracing::warn!(call_id = %call.id(), "key 0: no transfer number configured (--transfer-to, VOICEGATE_TRANSFER_TO)");
                }
                return;
            }
            _ => return,
        };
        // Only the agent's task (here) sets `in_flight`, only the request's task clears it (after
        // the handle has recorded a successful hangup).
        let hung_up = call.is_hung_up();
        if hung_up || self.in_flight.load(Ordering::Acquire) {
            metrics.actions_ignored.inc();
            if tracing::enabled!(tracing::Level::DEBUG) && self.logs.allow() {
                let why = if hung_up {
                    "the call is hanging up"
                } else {
                    "a call-control request is in flight"
                };
                tracing::debug!(call_id = %call.id(), "key {key}: ignored, {why}");
            }
            return;
        }
        self.in_flight.store(true, Ordering::Release);
        // One allowance for both lines of a request: asked for, and refused.
        let log = self.logs.allow();
        if log {
            tracing::info!(call_id = %call.id(), %action, "key {key}: requesting {action}");
        }
        let call = call.clone();
        let in_flight = self.in_flight.clone();
        tokio::spawn(async move {
            let result = call.act(action).await;
            if let Err(e) = &result
                && log
            {
                tracing::warn!(call_id = %call.id(), error = %e, "call control refused");
            }
            in_flight.store(false, Ordering::Release);
        });
    }
}

/// Samples read per ring access (one 20 ms frame at 48 kHz).
const CHUNK: usize = 960;

async fn run(mut io: AgentIo, cap: usize, transfer_to: Option<Arc<str>>) -> Result<(), AgentError> {
    let mut scratch = [0i16; CHUNK];
    // Everything read and not yet echoed or dropped; `tape.end()` is the count of samples read.
    let mut tape = Tape::new(cap);
    // The utterance being heard starts at this stream position.
    let mut rec_start: u64 = 0;
    // While echoing: the utterance being played back is the tape's front, up to this position.
    let mut play_end: Option<u64> = None;
    // Made at the first key press.
    let mut keypad: Option<Keypad> = None;

    loop {
        tokio::select! {
            ev = io.events.recv() => match ev {
                None | Some(AgentEvent::Ended(_)) => break,
                Some(AgentEvent::SpeechStarted { stream_pos }) => {
                    // Audio and events travel separately, so the utterance's first samples may
                    // already be read. What lies before `stream_pos` (there is some only with
                    // Forward::All) is dropped now, or with the echo still playing in front of it.
                    read_upto(&mut io, &mut scratch, &mut tape, stream_pos);
                    if play_end.is_none() {
                        tape.drop_until(stream_pos);
                    }
                    rec_start = stream_pos;
                }
                Some(AgentEvent::SpeechEnded { stream_pos, .. }) => {
                    read_upto(&mut io, &mut scratch, &mut tape, stream_pos);
                    if play_end.is_some() {
                        // A new utterance replaces the rest of the one still playing.
                        let _ = io.audio.end_turn();
                    }
                    // The utterance is what was recorded from its start to its end; audio read
                    // past the end (a new utterance already starting) stays on the tape.
                    tape.drop_until(rec_start);
                    let end = stream_pos.min(tape.end());
                    play_end = (end > tape.start).then_some(end);
                    rec_start = stream_pos;
                    if play_end.is_some() && io.audio.start_turn().is_err() {
                        tape.drop_until(end);
                        play_end = None;
                    }
                }
                // Other keys do nothing (and make no keypad).
                Some(AgentEvent::Dtmf { digit, .. }) if matches!(digit.as_char(), '#' | '0') => {
                    keypad
                        .get_or_insert_with(|| Keypad::new(&io.call, &io.metrics))
                        .press(&io.call, &io.metrics, digit, transfer_to.as_ref());
                }
                Some(AgentEvent::BargeIn(_)) => {
                    // The session already cleared playback; stop feeding the interrupted turn.
                    if let Some(end) = play_end.take() {
                        tape.drop_until(end);
                    }
                }
                Some(_) => {}
            },
            () = io.audio.ready() => {
                if io.audio.is_closed() {
                    break;
                }
            }
        }
        read_upto(&mut io, &mut scratch, &mut tape, u64::MAX);
        if let Some(end) = play_end {
            loop {
                let left = end.saturating_sub(tape.start).min(CHUNK as u64) as usize;
                let front = tape.front(left);
                if front.is_empty() {
                    break;
                }
                let n = io.audio.write(front);
                let whole = n == front.len();
                tape.drop_front(n);
                if !whole {
                    break;
                }
            }
            if tape.start >= end {
                let _ = io.audio.end_turn();
                play_end = None;
            }
        }
    }
    if tape.overflowed > 0 {
        let rate = u64::from(io.audio.rate().hz());
        tracing::info!(
            call_id = %io.call.id(),
            dropped_ms = tape.overflowed * 1_000 / rate,
            max_utterance_ms = cap as u64 * 1_000 / rate,
            tape_bytes = tape.ring.len(),
            "the caller's audio did not all fit on the echo tape: the oldest was dropped"
        );
    }
    Ok(())
}

/// Reads caller audio onto the tape until it reaches stream position `upto` or the ring is
/// empty.
fn read_upto(io: &mut AgentIo, scratch: &mut [i16; CHUNK], tape: &mut Tape, upto: u64) {
    while tape.end() < upto {
        let want = (upto - tape.end()).min(CHUNK as u64) as usize;
        let n = io.audio.read(&mut scratch[..want]);
        if n == 0 {
            return;
        }
        tape.push(&scratch[..n]);
    }
}

/// The most bytes of packed audio a tape holds: 64 KiB, allocated when the agent starts and
/// reused for the whole call.
///
/// Why this bound: the tape is per-call memory that the server's 128 KiB-per-call target counts,
/// and it is preallocated, so its size is a fixed cost (as far as its pages are written, see
/// [`Tape`]), not an average. The earlier tape, which grew in 2 KiB chunks, was bounded only in
/// samples ([`EchoAgent::max_utterance`], 10 s: 200–480 KiB packed at 24 kHz) and held 50–80 KiB
/// on average in the 300-call load tests; 64 KiB is that average, now a ceiling, and leaves the
/// rest of the call (rings, session, tasks: ~75 KiB) room near the target. What it holds
/// depends on how well the audio packs (measured on the corpus' speech clips through this
/// packing, from band-limited telephone speech to noisy TTS): at 16 kHz, 3.8–4.3 s of
/// `speech_001` (7.6–8.6 bits a sample, as recorded and +10 dB) and ~2 s of the noisiest clips
/// (~15 bits); at 24 kHz 2.8–3.2 s and ~1.4 s; at 8 kHz ~8 s. `max_utterance` stays the other
/// bound, in samples; the smaller one applies. Past either, the oldest audio is dropped (see
/// [`Tape`]).
const TAPE_BYTES: usize = 64 * 1024;
/// Samples per packed block.
const BLOCK: usize = 64;
/// Bits of the widest residual: an order-2 residual of i16 samples lies within ±131 072, so its
/// zigzag form fits in 18 bits.
const MAX_WIDTH: u32 = 18;
/// Bytes of a packed block: the width, two samples as they are, 62 residuals of `width` bits.
const fn block_bytes(width: u32) -> usize {
    1 + 4 + ((BLOCK - 2) * width as usize).div_ceil(8)
}
const MAX_BLOCK_BYTES: usize = block_bytes(MAX_WIDTH);

/// The caller audio the agent holds: one FIFO that both the utterance being recorded and the
/// one being played back live in (the one played is always the oldest), packed losslessly into
/// storage allocated once.
///
/// Why packed: this tape is most of what the echo agent costs per call (seconds of speech at the
/// agent rate; ~100 KiB per call on average in the 300-call load test as plain i16), and the
/// 128 KiB-per-call target counts it. Each block of [`BLOCK`] samples is stored as its first two
/// samples and the order-2 prediction residuals (`x[n] − 2x[n−1] + x[n−2]`, zigzagged) at the
/// width of the block's largest one: speech at 24 kHz (band-limited to the call's 8 kHz) packs
/// to ~8–9 bits a sample, silence and pre-roll to a few, so the tape holds about half the bytes.
/// It is exact: what is played back is bit for bit what was recorded. Costs ~1.8 ns a sample
/// to pack (whole blocks straight from the input into the ring, four bytes at a time; 3.1 ns
/// byte by byte through `tail`) and ~2.4 ns to read back through `front` and `drop_front`
/// (plain shifts, no table; 10 s of loud synthetic audio at 24 kHz pushed in 20 ms pieces,
/// best of five, on this box; measured with the earlier 2 KiB-chunk storage, the packing is the
/// same), i.e. ~0.1 ms of CPU per second of speech per call.
///
/// Layout, oldest first: `head` (the block being played back, unpacked), the packed blocks in
/// `ring` (a ring buffer of [`TAPE_BYTES`] at most; a block may wrap around its end), then `tail`
/// (the block being recorded, not yet packed). Real-time: nothing here allocates after
/// [`Tape::new`]. The ring starts over at its beginning whenever it is empty (every turn the
/// caller does not talk over), so the memory pages a call touches follow the longest audio it
/// held at once: the ring is zeroed memory from the allocator, and pages never written are not
/// resident (the server puts blocks this size in their own mapping, see `server::heap`).
///
/// Full: audio beyond either bound (`cap` samples, the ring's bytes) drops the oldest samples
/// first, so a longer utterance keeps its last part, and an echo still playing loses its rest
/// before the new utterance loses anything. The samples dropped so are counted in `overflowed`
/// (the echo agent logs the call's total at its end).
#[derive(Debug)]
struct Tape {
    /// The packed blocks: `used` bytes from `read` on, wrapping around the end.
    ring: Box<[u8]>,
    /// Byte offset of the oldest packed block.
    read: usize,
    /// Byte offset where the next block goes.
    write: usize,
    /// Bytes of packed blocks stored.
    used: usize,
    /// Packed blocks stored (each [`BLOCK`] samples).
    blocks: usize,
    /// The oldest samples, unpacked: `head[head_pos..head_len]`.
    head: [i16; BLOCK],
    head_pos: usize,
    head_len: usize,
    /// The newest samples, not yet a full block: `tail[..tail_len]`.
    tail: [i16; BLOCK],
    tail_len: usize,
    /// Samples stored.
    len: usize,
    /// Stream position of the oldest sample stored.
    start: u64,
    /// The most samples held; older ones are dropped first.
    cap: usize,
    /// Samples dropped because they did not fit (either bound), over the tape's life.
    overflowed: u64,
}

impl Tape {
    /// A tape of at most `cap` samples and [`TAPE_BYTES`] packed.
    fn new(cap: usize) -> Self {
        Self::with_bytes(cap, TAPE_BYTES)
    }

    /// A tape of at most `cap` samples and `bytes` packed (at least one block of the widest
    /// kind; never more than `cap` samples of it can take, so a short `cap` allocates less).
    fn with_bytes(cap: usize, bytes: usize) -> Self {
        let cap = cap.max(1);
        // The ring holds at most the whole blocks of `cap` samples, plus the one being packed
        // before `push` drops the oldest beyond `cap` (a block's bytes are freed as soon as it
        // is unpacked into `head`).
        let most = (cap / BLOCK + 1) * MAX_BLOCK_BYTES;
        let bytes = bytes.min(most).max(MAX_BLOCK_BYTES);
        Self {
            ring: vec![0; bytes].into_boxed_slice(),
            read: 0,
            write: 0,
            used: 0,
            blocks: 0,
            head: [0; BLOCK],
            head_pos: 0,
            head_len: 0,
            tail: [0; BLOCK],
            tail_len: 0,
            len: 0,
            start: 0,
            cap,
            overflowed: 0,
        }
    }

    /// Stream position just after the newest sample stored.
    fn end(&self) -> u64 {
        self.start + self.len as u64
    }

    /// Appends samples, dropping the oldest beyond either bound.
    fn push(&mut self, mut samples: &[i16]) {
        while !samples.is_empty() {
            // Whole blocks are packed straight from the input; only a partial one waits in
            // `tail` (a copy less, and no load of what was just stored there).
            if self.tail_len == 0
                && let Some((block, rest)) = samples.split_first_chunk::<BLOCK>()
            {
                self.len += BLOCK;
                self.pack(block);
                samples = rest;
            } else {
                let n = samples.len().min(BLOCK - self.tail_len);
                self.tail[self.tail_len..self.tail_len + n].copy_from_slice(&samples[..n]);
                self.tail_len += n;
                self.len += n;
                samples = &samples[n..];
                if self.tail_len == BLOCK {
                    let block = self.tail;
                    self.tail_len = 0;
                    self.pack(&block);
                }
            }
            // Per block, so the ring never holds more than `cap` samples' worth of blocks.
            self.overflow(self.len.saturating_sub(self.cap));
        }
    }

    /// Drops the `n` oldest samples because they did not fit, counted.
    fn overflow(&mut self, n: usize) {
        if n > 0 {
            self.overflowed += n as u64;
            self.drop_front(n);
        }
    }

    /// Packs a block onto the ring (its samples are already counted in `len`): in place when
    /// the ring has room for the widest block before its end, else through a buffer to learn
    /// its size first, after dropping the oldest samples if it does not fit.
    fn pack(&mut self, block: &[i16; BLOCK]) {
        if self.ring.len() - self.used >= MAX_BLOCK_BYTES
            && let Some(out) = self.ring.get_mut(self.write..self.write + MAX_BLOCK_BYTES)
            && let Ok(out) = <&mut [u8; MAX_BLOCK_BYTES]>::try_from(out)
        {
            let n = pack_block(block, out);
            self.stored(n);
            return;
        }
        let mut buf = [0u8; MAX_BLOCK_BYTES];
        let n = pack_block(block, &mut buf);
        self.make_room(n);
        // Around the end of the ring if need be.
        let first = n.min(self.ring.len() - self.write);
        self.ring[self.write..self.write + first].copy_from_slice(&buf[..first]);
        self.ring[..n - first].copy_from_slice(&buf[first..n]);
        self.stored(n);
    }

    /// A block of `n` bytes was written at `write`.
    fn stored(&mut self, n: usize) {
        self.write = (self.write + n) % self.ring.len();
        self.used += n;
        self.blocks += 1;
    }

    /// Frees at least `n` bytes of the ring, dropping the oldest samples: the rest of `head`
    /// and as many of the oldest blocks as it takes.
    fn make_room(&mut self, n: usize) {
        let mut free = self.ring.len() - self.used;
        let mut drop = self.head_len - self.head_pos;
        let mut at = self.read;
        let mut blocks = 0;
        while free < n && blocks < self.blocks {
            let size = block_bytes(u32::from(self.ring[at]).min(MAX_WIDTH));
            free += size;
            at = (at + size) % self.ring.len();
            blocks += 1;
            drop += BLOCK;
        }
        if blocks > 0 {
            // Exactly the head's rest and whole blocks: `drop_front` skips them unpacked.
            self.overflow(drop);
        }
    }

    /// Takes the oldest packed block off the ring: unpacked into `head` if `unpack`, else
    /// skipped. An empty ring starts over at its beginning.
    fn take_block(&mut self, unpack: bool) {
        if self.blocks == 0 {
            return;
        }
        let size = block_bytes(u32::from(self.ring[self.read]).min(MAX_WIDTH));
        if unpack {
            if let Some(packed) = self.ring.get(self.read..self.read + size) {
                unpack_block(packed, &mut self.head);
            } else {
                // Around the end of the ring.
                let mut buf = [0u8; MAX_BLOCK_BYTES];
                let first = self.ring.len() - self.read;
                buf[..first].copy_from_slice(&self.ring[self.read..]);
                buf[first..size].copy_from_slice(&self.ring[..size - first]);
                unpack_block(&buf[..size], &mut self.head);
            }
            self.head_pos = 0;
            self.head_len = BLOCK;
        }
        self.read = (self.read + size) % self.ring.len();
        self.used -= size;
        self.blocks -= 1;
        if self.blocks == 0 {
            self.read = 0;
            self.write = 0;
        }
    }

    /// Drops the `n` oldest samples (at most all of them).
    fn drop_front(&mut self, n: usize) {
        let mut n = n.min(self.len);
        self.len -= n;
        self.start += n as u64;
        while n > 0 {
            if self.head_pos < self.head_len {
                let k = n.min(self.head_len - self.head_pos);
                self.head_pos += k;
                n -= k;
            } else if self.blocks > 0 {
                // Whole blocks are skipped without unpacking.
                let whole = n >= BLOCK;
                self.take_block(!whole);
                if whole {
                    n -= BLOCK;
                }
            } else {
                self.tail_to_head();
                if self.head_len == 0 {
                    break;
                }
            }
        }
    }

    /// Moves the unpacked tail to the head (the packed blocks are all gone).
    fn tail_to_head(&mut self) {
        self.head[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
        self.head_pos = 0;
        self.head_len = self.tail_len;
        self.tail_len = 0;
    }

    /// Drops everything before stream position `pos`.
    fn drop_until(&mut self, pos: u64) {
        self.drop_front(pos.saturating_sub(self.start).min(self.len as u64) as usize);
    }

    /// The oldest stored samples, up to `max`, in one slice (at most one block).
    fn front(&mut self, max: usize) -> &[i16] {
        if self.head_pos == self.head_len && self.len > 0 {
            if self.blocks > 0 {
                self.take_block(true);
            } else {
                self.tail_to_head();
            }
        }
        let n = max.min(self.head_len - self.head_pos);
        &self.head[self.head_pos..self.head_pos + n]
    }
}

/// Packs one block into `out`; returns the bytes written.
fn pack_block(x: &[i16; BLOCK], out: &mut [u8; MAX_BLOCK_BYTES]) -> usize {
    let mut zz = [0u32; BLOCK - 2];
    let mut any = 0u32;
    for (i, z) in zz.iter_mut().enumerate() {
        let e = i32::from(x[i + 2]) - 2 * i32::from(x[i + 1]) + i32::from(x[i]);
        *z = ((e << 1) ^ (e >> 31)) as u32;
        any |= *z;
    }
    // At most MAX_WIDTH (18): see there.
    let width = 32 - any.leading_zeros();
    out[0] = width as u8;
    out[1..3].copy_from_slice(&x[0].to_le_bytes());
    out[3..5].copy_from_slice(&x[1].to_le_bytes());
    let mut o = 5;
    let mut acc = 0u64;
    let mut bits = 0u32;
    // Four bytes at a time (fewer than 32 bits wait in `acc`, plus one residual of at most 18:
    // within 64); the stream is the same as byte by byte, little-endian, least bits first.
    for &z in &zz {
        acc |= u64::from(z) << bits;
        bits += width;
        if bits >= 32 {
            out[o..o + 4].copy_from_slice(&(acc as u32).to_le_bytes());
            o += 4;
            acc >>= 32;
            bits -= 32;
        }
    }
    let rest = bits.div_ceil(8) as usize;
    out[o..o + rest].copy_from_slice(&acc.to_le_bytes()[..rest]);
    o + rest
}

/// Unpacks one block written by [`pack_block`].
fn unpack_block(packed: &[u8], x: &mut [i16; BLOCK]) {
    let width = u32::from(packed[0]).min(MAX_WIDTH);
    x[0] = i16::from_le_bytes([packed[1], packed[2]]);
    x[1] = i16::from_le_bytes([packed[3], packed[4]]);
    let mask = (1u64 << width) - 1;
    let data = &packed[5..];
    let mut pos = 0;
    let mut acc = 0u64;
    let mut bits = 0u32;
    let (mut p2, mut p1) = (i32::from(x[0]), i32::from(x[1]));
    for s in &mut x[2..] {
        if bits < width {
            // Four bytes at a time (fewer than 18 bits left plus 32: within 64); past the end
            // of the block, zeros.
            let mut word = [0u8; 4];
            let take = (data.len() - pos).min(4);
            word[..take].copy_from_slice(&data[pos..pos + take]);
            pos += take;
            acc |= u64::from(u32::from_le_bytes(word)) << bits;
            bits += 32;
        }
        let z = (acc & mask) as u32;
        acc >>= width;
        bits -= width;
        let e = (z >> 1) as i32 ^ -((z & 1) as i32);
        let v = e + 2 * p1 - p2;
        *s = v as i16;
        // The stored sample, so a corrupt block could not overflow later steps either.
        (p2, p1) = (p1, i32::from(*s));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::time::Instant;

    use tokio::sync::mpsc;

    use super::*;
    use crate::agent::{CallHandle, CallId, EndReason, NoCallControl};
    use crate::core::{Session, SessionConfig};

    #[test]
    fn blocks_pack_losslessly_at_every_width() {
        let mut rng = 0x1234_5678_u32;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            rng
        };
        let mut packed = [0u8; MAX_BLOCK_BYTES];
        let mut back = [0i16; BLOCK];
        // Silence, full-scale extremes (the widest residuals), random amplitudes.
        let mut cases: Vec<[i16; BLOCK]> = vec![[0; BLOCK], [i16::MAX; BLOCK], [i16::MIN; BLOCK]];
        cases.push(std::array::from_fn(|i| {
            if i % 2 == 0 { i16::MAX } else { i16::MIN }
        }));
        for amp in [1u32, 7, 100, 3_000, 65_536] {
            for _ in 0..50 {
                cases.push(std::array::from_fn(|_| {
                    ((next() % amp) as i32 - (amp / 2) as i32) as i16
                }));
            }
        }
        for x in &cases {
            let n = pack_block(x, &mut packed);
            assert_eq!(n, block_bytes(u32::from(packed[0])));
            assert!(u32::from(packed[0]) <= MAX_WIDTH);
            unpack_block(&packed[..n], &mut back);
            assert_eq!(&back, x);
        }
        // Silence packs to the headers alone.
        assert_eq!(pack_block(&[0; BLOCK], &mut packed), 5);
    }

    #[test]
    fn tape_is_a_capped_fifo_that_frees_what_it_drops() {
        // The tape against a plain FIFO, under random pushes, reads and drops: in a ring with
        // room to spare (only the sample cap drops audio), and in one so small that the byte
        // bound drops audio all the time and blocks wrap around its end.
        for bytes in [TAPE_BYTES, 3_000] {
            fifo_against_a_model(bytes);
        }
        // Packed, a loud second at 24 kHz takes well under its 47 KiB as plain samples.
        let mut t = Tape::new(24_000);
        let s: Vec<i16> = (0..24_000)
            .map(|i| ((i as f32 * 0.05).sin() * 8_000.0 + (i as f32 * 0.31).sin() * 2_000.0) as i16)
            .collect();
        t.push(&s);
        assert!(t.used < 48_000 * 3 / 4, "{} bytes", t.used);
        assert_eq!((t.len, t.overflowed), (24_000, 0));
    }

    fn fifo_against_a_model(bytes: usize) {
        let mut rng = 0x9e37_79b9_u32;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            rng
        };
        let cap = 5_000;
        let mut t = Tape::with_bytes(cap, bytes);
        // 3 000 bytes, or the most `cap` samples can take (full-scale noise included: that ring
        // never drops more than the cap does).
        assert_eq!(t.ring.len(), bytes.min((cap / BLOCK + 1) * MAX_BLOCK_BYTES));
        let mut model: VecDeque<i16> = VecDeque::new();
        let mut start = 0u64;
        let mut overflowed = 0u64;
        let mut wrapped = false;
        let mut phase = 0.0f32;
        for step in 0..20_000 {
            match next() % 8 {
                0..=3 => {
                    let n = (next() % 1_000) as usize;
                    // Loud tone, quiet tone, full-scale noise (the widest blocks).
                    let kind = (step / 500) % 3;
                    let s: Vec<i16> = (0..n)
                        .map(|_| {
                            phase += 0.2;
                            let noise = (next() % 64) as f32 - 32.0;
                            match kind {
                                0 => (phase.sin() * 20_000.0 + noise) as i16,
                                1 => (phase.sin() * 50.0 + noise) as i16,
                                _ => next() as i16,
                            }
                        })
                        .collect();
                    t.push(&s);
                    model.extend(&s);
                    // What did not fit went oldest first, counted; the cap alone drops exactly
                    // the excess, the byte bound more.
                    let dropped = t.start - start;
                    let excess = model.len().saturating_sub(cap) as u64;
                    if bytes == TAPE_BYTES {
                        assert_eq!(dropped, excess, "step {step}");
                    } else {
                        assert!(dropped >= excess, "step {step}");
                    }
                    model.drain(..dropped as usize);
                    start += dropped;
                    overflowed += dropped;
                    assert_eq!(t.overflowed, overflowed, "step {step}");
                    assert!(t.len <= cap && t.used <= t.ring.len(), "step {step}");
                }
                4 | 5 => {
                    let max = (next() % 1_000) as usize;
                    let f = t.front(max).to_vec();
                    assert!(
                        f.len() <= max.min(BLOCK)
                            && (f.is_empty() == (max == 0 || model.is_empty()))
                    );
                    assert!(f.iter().zip(&model).all(|(a, b)| a == b), "step {step}");
                    let n = (next() as usize) % (f.len() + 1);
                    t.drop_front(n);
                    model.drain(..n);
                    start += n as u64;
                }
                6 => {
                    let n = (next() % 3_000) as usize;
                    t.drop_front(n);
                    let n = n.min(model.len());
                    model.drain(..n);
                    start += n as u64;
                }
                _ => {
                    let pos = start + u64::from(next() % 2_000);
                    t.drop_until(pos);
                    let n = (pos - start).min(model.len() as u64) as usize;
                    model.drain(..n);
                    start += n as u64;
                }
            }
            assert_eq!((t.start, t.len), (start, model.len()), "step {step}");
            wrapped |= t.read + t.used > t.ring.len();
        }
        if bytes < TAPE_BYTES {
            assert!(wrapped && t.overflowed > cap as u64, "{}", t.overflowed);
        }
        // Reading the whole tape back front to back gives what is left, in order.
        let mut back = Vec::new();
        while t.len > 0 {
            let f = t.front(700).to_vec();
            back.extend_from_slice(&f);
            t.drop_front(f.len());
        }
        assert!(back.iter().eq(model.iter()));
        // Everything played: the ring is empty and starts over at its beginning.
        assert_eq!((t.used, t.blocks, t.read, t.write), (0, 0, 0, 0));
        assert!(t.front(10).is_empty());
        t.drop_until(u64::MAX);
        t.drop_front(10);
        assert_eq!(t.len, 0);
    }

    #[test]
    fn a_tape_is_allocated_once_and_keeps_the_last_part_of_what_does_not_fit() {
        // The default 10 s at 24 kHz: the byte budget binds; a short cap allocates less.
        assert_eq!(Tape::new(240_000).ring.len(), TAPE_BYTES);
        assert_eq!(
            Tape::new(8_000).ring.len(),
            (8_000 / BLOCK + 1) * MAX_BLOCK_BYTES
        );
        // 10 s of full-scale noise (~18 bits a sample) through the 64 KiB ring.
        let mut rng = 0x2545_f491_u32;
        let s: Vec<i16> = (0..240_000)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                rng as i16
            })
            .collect();
        let mut t = Tape::new(240_000);
        for piece in s.chunks(480) {
            t.push(piece);
            assert!(t.used <= TAPE_BYTES);
        }
        assert_eq!(t.overflowed + t.len as u64, 240_000);
        assert!(t.len > 28_000, "{} samples kept", t.len);
        let mut back = Vec::new();
        while t.len > 0 {
            let f = t.front(960).to_vec();
            back.extend_from_slice(&f);
            t.drop_front(f.len());
        }
        assert_eq!(back, s[s.len() - back.len()..]);
    }

    /// Drives the echo agent through a real session with fake time: a burst of tone as the
    /// caller's "speech" is not needed; we check the mechanics with events injected directly.
    #[tokio::test]
    async fn echoes_what_was_read_up_to_the_end_of_the_utterance() {
        let cfg = SessionConfig::new(SampleRate::Hz16000, SampleRate::Hz16000);
        let (mut session, link) = Session::new(cfg).unwrap();
        let (tx, rx) = mpsc::channel(16);
        let wake = Arc::new(crate::agent::Signal::new());
        let flush = Arc::new(crate::agent::Signal::new());
        let call = CallHandle::new(CallId::parse("t").unwrap(), Arc::new(NoCallControl));
        let io = AgentIo::new(link, rx, wake.clone(), flush.clone(), call);
        let info = CallInfo::new(
            CallId::parse("t").unwrap(),
            SampleRate::Hz16000,
            SampleRate::Hz16000,
        );
        let task = tokio::spawn(EchoAgent::default().start(info, io));

        // Feed loud frames until the session reports the end of an utterance.
        let t0 = Instant::now();
        let mut frame = [0u8; 640];
        let mut ended = None;
        for i in 0..200u32 {
            let speaking = (10..60).contains(&i);
            for (k, b) in frame.chunks_exact_mut(2).enumerate() {
                let s: i16 = if speaking {
                    (((k as f32) * 0.3).sin() * 8_000.0 * (1.0 + (k % 7) as f32 / 7.0)) as i16
                } else {
                    0
                };
                b.copy_from_slice(&s.to_le_bytes());
            }
            session
                .handle_caller_frame(t0 + crate::core::FRAME * i, &frame)
                .unwrap();
            wake.notify();
            while let Some(ev) = session.poll_event() {
                match ev {
                    crate::core::Event::SpeechStarted { stream_pos, .. } => {
                        tx.send(AgentEvent::SpeechStarted { stream_pos })
                            .await
                            .unwrap();
                    }
                    crate::core::Event::SpeechEnded {
                        stream_pos,
                        duration,
                        ..
                    } => {
                        ended = Some(stream_pos);
                        tx.send(AgentEvent::SpeechEnded {
                            stream_pos,
                            duration,
                        })
                        .await
                        .unwrap();
                    }
                    _ => {}
                }
            }
            tokio::task::yield_now().await;
        }
        let ended = ended.expect("the synthetic utterance ends");
        // The agent writes the echo; the session sends it as frames.
        let mut out = [0u8; 960];
        let mut frames = 0u64;
        let mut t = t0 + Duration::from_secs(5);
        for _ in 0..2_000 {
            tokio::task::yield_now().await;
            while let Some(n) = session.poll_transmit(t, &mut out) {
                assert_eq!(n, 640);
                frames += 1;
                wake.notify();
            }
            t += crate::core::FRAME;
        }
        let expected = ended.div_ceil(320);
        assert!(
            frames >= expected && frames <= expected + 1,
            "frames {frames}, utterance {ended} samples"
        );
        tx.send(AgentEvent::Ended(EndReason::SocketClosed))
            .await
            .unwrap();
        task.await.unwrap().unwrap();
    }

    /// A flood of `#` without a REST client (every request is refused at once): each press is
    /// either requested, one at a time, or ignored and counted, and the log holds at most the
    /// allowance of them plus one line saying the rest were suppressed.
    #[tokio::test] // current thread: the subscriber below sees the agent's task
    async fn a_flood_of_keys_writes_a_bounded_number_of_log_lines() {
        let (captured, _guard) = crate::agent::log_budget::Captured::start();

        let cfg = SessionConfig::new(SampleRate::Hz16000, SampleRate::Hz16000);
        let metrics = crate::agent::metrics::AgentMetrics::default();
        let (_session, io, tx) = AgentIo::for_test(cfg, "keys");
        let io = io.with_metrics(metrics.clone());
        let info = CallInfo::new(
            CallId::parse("keys").unwrap(),
            SampleRate::Hz16000,
            SampleRate::Hz16000,
        );
        let task = tokio::spawn(EchoAgent::default().start(info, io));
        const PRESSES: u64 = 1_000;
        let hash = DtmfDigit::from_char('#').unwrap();
        for _ in 0..PRESSES {
            tx.send(AgentEvent::Dtmf {
                digit: hash,
                duration: None,
            })
            .await
            .unwrap();
        }
        // Requests still in flight finish before the call ends.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tx.send(AgentEvent::Ended(EndReason::SocketClosed))
            .await
            .unwrap();
        task.await.unwrap().unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }

        let lines = captured.lines();
        let requested = lines
            .iter()
            .filter(|l| l.contains("requesting hangup"))
            .count() as u64;
        let refused = lines
            .iter()
            .filter(|l| l.contains("call control refused"))
            .count() as u64;
        let notices = lines
            .iter()
            .filter(|l| l.contains("suppressed for this call"))
            .count();
        let suppressed = metrics.log_lines_suppressed.get();
        let ignored = metrics.actions_ignored.get();
        assert!(requested <= u64::from(MAX_KEY_LOGS), "{lines:#?}");
        assert_eq!(refused, requested, "{lines:#?}");
        // Every press is accounted for: requested (logged or counted) or ignored (counted).
        assert_eq!(requested + suppressed + ignored, PRESSES, "{lines:#?}");
        assert_eq!(notices, usize::from(suppressed > 0), "{lines:#?}");
        assert!(lines.len() <= 2 * MAX_KEY_LOGS as usize + 2, "{lines:#?}");
        println!(
            "{PRESSES} presses: {requested} requests logged, {suppressed} more requested without a \
             line, {ignored} ignored while one was in flight; {} log lines",
            lines.len()
        );
    }
}
