//! The open-file limit: raised at start to what the system allows, and checked against what
//! the configuration can hold open.
//!
//! Every call holds one descriptor (its media socket), every HTTP connection one, a network
//! agent one more per call; many systems start processes with a soft limit of 1024 (some
//! 256), far below a server's needs, while the hard limit is much higher. Raising the soft
//! limit to the hard one is what `ulimit -n` in a start script would do (Go's runtime does it
//! for every program since 1.19).
//!
//! Not real-time (start-up only).

/// Descriptors the server needs besides calls and connections: the listener, the runtime's
/// epoll and wake-up descriptors, log files, Redis, the REST client's pool.
pub const RESERVED: u64 = 64;

/// The soft limit before and after raising it to the hard limit (at most 2^20), or `None`
/// where there is no such limit (not Unix) or it cannot be read.
// `rlim_t` is u64 on 64-bit targets (the conversions are then no-ops) but not everywhere.
#[allow(clippy::useless_conversion)]
pub fn raise_open_files() -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `rlimit` through a valid pointer.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        let before = u64::from(lim.rlim_cur);
        let want = lim.rlim_max.min(1 << 20);
        if want <= lim.rlim_cur {
            return Some((before, before));
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one `rlimit` through a valid pointer; a soft limit at or
        // below the hard limit needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Some((before, before));
        }
        Some((before, u64::from(want)))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Descriptors `max_calls` calls and `max_connections` HTTP connections can hold at once:
/// two per call (media socket, and a network agent's socket), one per connection, and
/// [`RESERVED`].
pub fn needed(max_calls: usize, max_connections: usize) -> u64 {
    let calls = u64::try_from(max_calls).unwrap_or(u64::MAX);
    let conns = u64::try_from(max_connections).unwrap_or(u64::MAX);
    calls
        .saturating_mul(2)
        .saturating_add(conns)
        .saturating_add(RESERVED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_need_about_three_thousand_descriptors() {
        assert_eq!(needed(1_000, 1_024), 3_088);
        assert_eq!(needed(usize::MAX, usize::MAX), u64::MAX);
    }

    #[cfg(unix)]
    #[test]
    fn raising_never_lowers_the_limit() {
        let (before, after) = raise_open_files().expect("getrlimit works on Unix");
        assert!(after >= before);
        assert_eq!(raise_open_files().map(|(b, _)| b), Some(after));
    }
}
