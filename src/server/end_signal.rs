//! [`EndSignal`]: how a call is ended from outside its media task (a terminal status on the
//! event webhook, the drain timeout), without a lock on the media loop's path.
//!
//! The media loop polls its end signal on every wake-up (every caller frame, every paced send).
//! A `tokio::sync::watch` receiver did this before: the pending `changed()` future is a
//! `Notify` waiter, and each poll of a pending `Notified` takes the `Notify`'s waiter-list
//! mutex to refresh its waker (tokio 1.x, `sync/notify.rs`), so every frame took a lock. Here
//! the reason is set once and read with an atomic load, and the one waiting task is woken
//! through an [`agent::Signal`](crate::agent::Signal) (a flag and an `AtomicWaker`).
//!
//! Real-time: [`EndSignal::reason`] and the future of [`EndSignal::wait`] lock nothing and
//! allocate nothing.

use std::sync::OnceLock;

use crate::agent::{EndReason, Signal};

/// The end of one live call: the first reason given wins, later ones are ignored. One task
/// waits on it (the call's media task).
#[derive(Debug, Default)]
pub struct EndSignal {
    reason: OnceLock<EndReason>,
    wake: Signal,
}

impl EndSignal {
    /// A call not ended yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends the call with `reason`, unless it was ended already; wakes the waiting task.
    pub fn end(&self, reason: EndReason) {
        let _ = self.reason.set(reason);
        self.wake.notify();
    }

    /// Why the call was ended, once it was.
    pub fn reason(&self) -> Option<EndReason> {
        self.reason.get().copied()
    }

    /// Completes with the reason once the call is ended. Cancel-safe; for one task at a time
    /// (see [`Signal::wait`]).
    pub async fn wait(&self) -> EndReason {
        loop {
            if let Some(r) = self.reason() {
                return r;
            }
            self.wake.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn an_end_before_the_wait_completes_it_and_the_first_reason_wins() {
        let e = EndSignal::new();
        assert_eq!(e.reason(), None);
        e.end(EndReason::CallCompleted);
        e.end(EndReason::SocketError);
        assert_eq!(e.wait().await, EndReason::CallCompleted);
        assert_eq!(e.wait().await, EndReason::CallCompleted, "it stays ended");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_end_from_another_task_wakes_the_waiter() {
        let e = Arc::new(EndSignal::new());
        let waiter = tokio::spawn({
            let e = e.clone();
            async move { e.wait().await }
        });
        // The waiter is parked (or about to be): no end yet.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        e.end(EndReason::SocketError);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.ok().and_then(Result::ok), Some(EndReason::SocketError));
    }
}
