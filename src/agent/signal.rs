//! [`Signal`]: the lock-free wake-up between the media task and the agent task.
//!
//! Each direction has one waiter: the agent waits for caller audio or outbound room (through
//! [`AgentAudio`](super::AgentAudio), whose waits take `&mut self`, so one at a time), and the
//! media task waits for the agent's writes. `tokio::sync::Notify`, used before, keeps its
//! waiters in a list behind a mutex: registering a waiter and notifying one both took it, on
//! every wake-up of either task. A flag and an [`AtomicWaker`] do the same for one waiter with
//! atomics only, and allocate nothing (registering clones the task's waker, a reference count).
//!
//! Real-time: [`Signal::notify`] and the future of [`Signal::wait`] lock nothing and allocate
//! nothing.

use std::future::{Future, poll_fn};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use futures_util::task::AtomicWaker;

/// A wake-up for one waiting task. A `notify` with nobody waiting is kept (one, not counted):
/// the next `wait` completes at once, as with `Notify::notify_one`.
#[derive(Debug, Default)]
pub struct Signal {
    set: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    /// A signal with no wake-up pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the waiting task, or the next one to wait.
    pub fn notify(&self) {
        self.set.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Completes once a wake-up is pending (and consumes it). Cancel-safe: a wake-up is only
    /// consumed by a wait that completes. For one task at a time: a second task waiting at the
    /// same time takes the first one's place, and the first may not be woken.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + '_ {
        poll_fn(move |cx| {
            if self.set.swap(false, Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // A notify between the check and the registration found no waker: check again.
            if self.set.swap(false, Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_notify_before_the_wait_is_kept_once() {
        let s = Signal::new();
        s.notify();
        s.notify();
        s.wait().await;
        let again = tokio::time::timeout(Duration::from_millis(20), s.wait()).await;
        assert!(again.is_err(), "two notifies are one wake-up");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_notify_from_another_thread_wakes_the_waiter() {
        // Ping-pong: each side waits for the other's notify; a lost wake-up hangs the test.
        let (a, b) = (Arc::new(Signal::new()), Arc::new(Signal::new()));
        let (a2, b2) = (a.clone(), b.clone());
        let other = tokio::spawn(async move {
            for _ in 0..20_000 {
                a2.wait().await;
                b2.notify();
            }
        });
        for _ in 0..20_000 {
            a.notify();
            tokio::time::timeout(Duration::from_secs(10), b.wait())
                .await
                .expect("lost wake-up");
        }
        other.await.unwrap();
    }
}
