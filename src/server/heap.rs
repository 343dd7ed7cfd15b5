//! Hands memory freed by ended calls back to the operating system.
//!
//! A call's buffers are freed when it ends, but glibc's `malloc` keeps freed memory in its
//! arenas (one per thread that allocated, up to 8 per core) for reuse, so after a burst of calls
//! the process would stay at its peak RSS for good. A background task asks `malloc_trim(0)` to
//! release the free pages of every arena once the number of active calls has dropped well below
//! its peak since the last trim (by an eighth, or to zero), on a blocking thread so no media
//! task waits for it; the check runs every [`CHECK_EVERY`]. Every [`FORGET_EVERY`] it also has
//! the shared state forget ended calls and used ids past their expiry (they would otherwise go
//! only when a map fills up), and trims after a large batch. [`tune_allocator`] keeps a call's
//! large buffers out of the shared heap. Other C libraries: neither.
//!
//! Not real-time (a background task).

use std::time::Duration;

use super::state::AppState;

/// How often the active-call count is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How often the shared state forgets what expired (ended calls linger for the media token's
/// lifetime).
pub const FORGET_EVERY: Duration = Duration::from_secs(10);
/// Entries forgotten at once that are worth a trim (each call leaves about 1.5 KiB).
const FORGOTTEN_WORTH_A_TRIM: usize = 256;

/// Runs until the server stops: forgets expired state, trims after calls went away.
pub async fn trim_after_calls(st: AppState) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peak = 0usize;
    let mut next_forget = tokio::time::Instant::now() + FORGET_EVERY;
    loop {
        tick.tick().await;
        let active = st.active_calls();
        peak = peak.max(active);
        let mut forgotten = 0;
        if tokio::time::Instant::now() >= next_forget {
            next_forget += FORGET_EVERY;
            forgotten = st.shared().forget_expired();
            st.shrink_idle_tables();
        }
        if should_trim(peak, active) || forgotten >= FORGOTTEN_WORTH_A_TRIM {
            peak = active;
            let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
            tracing::debug!(active, forgotten, released, "heap trimmed");
        }
    }
}

/// Sets the process's `malloc` policy for a server (the `voicegate serve` binary calls this
/// once at start): with glibc, blocks of 16 KiB and more (a call's audio rings, its task, its
/// WebSocket set-up) get their own mapping, which goes back to the OS the moment the call frees
/// it, instead of the shared heap, where a few long-lived small blocks would pin the pages
/// around them. This also stops glibc from raising that threshold by itself as calls come and
/// go. Returns whether the policy was applied.
pub fn tune_allocator() -> bool {
    tune()
}

/// glibc: the size from which a block is its own mapping.
const MMAP_THRESHOLD: i32 = 16 * 1024;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune() -> bool {
    unsafe extern "C" {
        /// glibc: sets one malloc parameter; returns 1 on success.
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    /// `M_MMAP_THRESHOLD` in glibc's malloc.h.
    const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
    // SAFETY: mallopt takes two integers, is thread-safe and accepts any threshold up to
    // HEAP_MAX/2 (32 MiB); 16 KiB is well inside.
    unsafe { mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune() -> bool {
    false
}

/// Whether enough calls ended since the last trim: all of them, or an eighth of the peak.
fn should_trim(peak: usize, active: usize) -> bool {
    peak > active && (active == 0 || peak - active >= peak.div_ceil(8))
}

/// Releases free heap pages to the OS; returns whether any were released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    unsafe extern "C" {
        /// glibc (since 2.0; all arenas since 2.8): frees whole pages of free memory.
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointers, is thread-safe (it locks each arena in turn) and
    // only returns free memory; it is present in every glibc this target links against.
    unsafe { malloc_trim(0) == 1 }
}

/// Other allocators return memory on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_when_calls_dropped_by_an_eighth_or_to_zero() {
        assert!(!should_trim(0, 0));
        assert!(!should_trim(100, 100));
        assert!(!should_trim(100, 88));
        assert!(should_trim(100, 87));
        assert!(should_trim(1, 0));
        assert!(should_trim(3, 0));
        assert!(!should_trim(3, 3));
        assert!(should_trim(3, 2));
        // Neither panics on any C library.
        let _ = trim();
        let _ = tune_allocator();
    }
}
