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
//! large buffers out of the shared heap, and [`without_thread_cache`] turns glibc's per-thread
//! cache off (a re-execution at start-up). Other C libraries: none of these.
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

/// glibc's tunable for how many freed blocks of each size class a thread's cache (tcache) keeps.
pub const TCACHE_TUNABLE: &str = "glibc.malloc.tcache_count";

/// With glibc, re-executes this process (same executable, arguments and process id) with
/// `glibc.malloc.tcache_count=0` added to `GLIBC_TUNABLES`, unless the environment sets that
/// tunable already: to keep glibc's default cache, start the server with
/// `GLIBC_TUNABLES=glibc.malloc.tcache_count=7`. Call it first thing, before any thread is
/// started; it returns only when it does not re-execute (the tunable is set, another C
/// library, or the exec failed: the server then runs with the cache, as before).
///
/// Why: every worker thread's tcache keeps up to 7 freed blocks of each small size, freed
/// during a burst of calls and scattered through it, and `malloc_trim` cannot touch another
/// thread's cache, so those blocks pinned ~3 MiB of heap pages after a 500-call burst for
/// good. The server's per-frame path allocates nothing, so the cache only ever sped up call
/// set-up and webhooks. The tunable can only be set in the environment before the process
/// starts (glibc has no `mallopt` for it), hence the re-execution.
pub fn without_thread_cache() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        let Some(tunables) = tunables_without_tcache(std::env::var_os("GLIBC_TUNABLES")) else {
            return;
        };
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let argv0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
        // Only returns on failure; the process carries on as it is.
        let err = std::process::Command::new(&exe)
            .arg0(argv0)
            .args(args)
            .env("GLIBC_TUNABLES", tunables)
            .exec();
        eprintln!("voicegate: could not re-execute without glibc's thread cache: {err}");
    }
}

/// `GLIBC_TUNABLES` with the thread cache off, or `None` when `current` sets the tunable.
fn tunables_without_tcache(current: Option<std::ffi::OsString>) -> Option<std::ffi::OsString> {
    let off = format!("{TCACHE_TUNABLE}=0");
    match current {
        Some(v) if v.to_string_lossy().contains(TCACHE_TUNABLE) => None,
        Some(mut v) if !v.is_empty() => {
            v.push(":");
            v.push(off);
            Some(v)
        }
        _ => Some(off.into()),
    }
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

    #[test]
    fn thread_cache_goes_off_unless_the_environment_sets_it() {
        let off = |v: Option<&str>| tunables_without_tcache(v.map(Into::into));
        assert_eq!(off(None), Some("glibc.malloc.tcache_count=0".into()));
        assert_eq!(off(Some("")), Some("glibc.malloc.tcache_count=0".into()));
        assert_eq!(
            off(Some("glibc.malloc.arena_max=2")),
            Some("glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0".into())
        );
        // Whoever set it keeps their value, and the re-executed process does not loop.
        assert_eq!(off(Some("glibc.malloc.tcache_count=7")), None);
        assert_eq!(off(Some("glibc.malloc.tcache_count=0")), None);
    }
}
