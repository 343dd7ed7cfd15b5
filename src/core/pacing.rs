//! Outbound pacing: when the next frame is due so that Vonage always holds about `lead` of audio,
//! never more, without drift.
//!
//! We model Vonage's playback queue: `playout_end` is when everything sent so far will have been
//! played. Each frame sent extends it by exactly 20 ms (absolute deadlines, no accumulated sleep
//! error, so no drift over an hour), and a frame is due when sending it keeps the queue within
//! `lead + 20 ms`. When the queue has run dry (the agent was silent, or late), the next frame
//! starts a new talk spurt at `now`. `clear` empties the model like it empties Vonage's queue.
//!
//! Real-time: no allocation.

use std::time::{Duration, Instant};

use super::audio::FRAME;

/// Schedules outbound frames against a monotonic clock the caller passes in.
#[derive(Debug, Clone)]
pub struct Pacer {
    lead: Duration,
    playout_end: Option<Instant>,
}

impl Pacer {
    /// A pacer keeping `lead` of audio queued at Vonage.
    pub fn new(lead: Duration) -> Self {
        Self {
            lead,
            playout_end: None,
        }
    }

    /// The configured lead.
    pub fn lead(&self) -> Duration {
        self.lead
    }

    /// When the next frame may be sent; `None` means now (nothing queued).
    pub fn next_due(&self) -> Option<Instant> {
        self.playout_end
            .map(|end| end.checked_sub(self.lead).unwrap_or(end))
    }

    /// Whether a frame may be sent at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.next_due().is_none_or(|due| due <= now)
    }

    /// Records one frame sent at `now`; returns when Vonage will start playing it.
    pub fn on_sent(&mut self, now: Instant) -> Instant {
        let start = match self.playout_end {
            Some(end) if end > now => end,
            _ => now,
        };
        self.playout_end = Some(start + FRAME);
        start
    }

    /// Audio queued at Vonage at `now`.
    pub fn queued(&self, now: Instant) -> Duration {
        self.playout_end
            .map_or(Duration::ZERO, |end| end.saturating_duration_since(now))
    }

    /// Whether the queue at Vonage has run dry by `now`.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.queued(now).is_zero()
    }

    /// Vonage's queue was emptied (`clear`).
    pub fn clear(&mut self) {
        self.playout_end = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_lead_then_paces_without_drift() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_millis(60));
        // At t0 the burst fills the lead: frames playing at 0, 20, 40 and 60 ms.
        let mut sent_at_t0 = 0;
        while p.is_due(t0) {
            p.on_sent(t0);
            sent_at_t0 += 1;
        }
        assert_eq!(sent_at_t0, 4);
        // Then exactly one frame per 20 ms for an hour, always due at t0 + n*20 ms - lead.
        let mut now = t0;
        let mut sent = sent_at_t0;
        for _ in 0..180_000 {
            now = p.next_due().unwrap();
            assert!(p.is_due(now));
            p.on_sent(now);
            sent += 1;
            assert!(p.queued(now) <= Duration::from_millis(80));
        }
        assert_eq!(now, t0 + FRAME * (sent - 4));
    }

    #[test]
    fn late_sender_catches_up_capped_at_the_lead_and_clear_empties() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_millis(40));
        p.on_sent(t0);
        // The task stalled for 500 ms: the queue ran dry, a new spurt starts.
        let later = t0 + Duration::from_millis(500);
        assert!(p.is_idle(later));
        let mut burst = 0;
        while p.is_due(later) {
            p.on_sent(later);
            burst += 1;
        }
        assert_eq!(burst, 3);
        p.clear();
        assert!(p.is_due(later) && p.is_idle(later));
    }
}
