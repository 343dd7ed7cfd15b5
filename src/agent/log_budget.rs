//! [`LogBudget`]: a per-call allowance of log lines, so that a peer repeating itself (an agent
//! flooding `log` messages or call-control requests that fail, a caller flooding key presses)
//! cannot flood the server's log. The media task does the same for bad caller input
//! (`MAX_WARNINGS` in `server::media`).
//!
//! The first lines of a kind are written; the first one over the allowance is replaced by one
//! line saying that further ones are suppressed; the rest are only counted, in
//! `voicegate_agent_log_lines_suppressed_total`, and the call's total is logged once when the
//! budget is dropped (at the end of the call).
//!
//! Not real-time (it decides about log lines, which allocate anyway); a check is a compare and
//! a decrement.

use prometheus_client::metrics::counter::Counter;

use super::CallId;

/// How many lines of one kind a call may still write.
#[derive(Debug)]
pub(crate) struct LogBudget {
    /// What the lines are, for the suppression notice ("agent log lines").
    what: &'static str,
    max: u32,
    left: u32,
    suppressed: u64,
    /// The call, named in the notices (no agent logs inside a per-call span).
    call_id: CallId,
    counter: Counter,
}

impl LogBudget {
    /// An allowance of `max` lines of `what`, counting the rest in `counter`
    /// (`AgentMetrics::log_lines_suppressed`). `call_id` goes into the notices.
    pub(crate) fn new(what: &'static str, max: u32, call_id: CallId, counter: Counter) -> Self {
        Self {
            what,
            max,
            left: max,
            suppressed: 0,
            call_id,
            counter,
        }
    }

    /// Whether the next line may be written. Over the allowance it is counted instead, and the
    /// first time one line says so.
    pub(crate) fn allow(&mut self) -> bool {
        if self.left > 0 {
            self.left -= 1;
            return true;
        }
        if self.suppressed == 0 {
            tracing::warn!(
                call_id = %self.call_id,
                limit = self.max,
                "further {} suppressed for this call (counted in \
                 voicegate_agent_log_lines_suppressed_total)",
                self.what
            );
        }
        self.suppressed += 1;
        self.counter.inc();
        false
    }

    /// Lines suppressed so far.
    #[cfg(test)]
    pub(crate) fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

impl Drop for LogBudget {
    /// The call's total, once, if anything was suppressed (dropped with the call's state, so on
    /// every way out of it).
    fn drop(&mut self) {
        if self.suppressed > 0 {
            tracing::info!(
                call_id = %self.call_id,
                suppressed = self.suppressed,
                "{} suppressed in this call",
                self.what
            );
        }
    }
}

/// For tests: the lines logged at `info` and above through a `tracing` subscriber set as this
/// thread's default (with tokio's current-thread runtime, every task's lines).
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl Captured {
    /// Captures until the guard is dropped.
    pub(crate) fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let w = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    /// The lines so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Asserts that every line carries `call_id=<call>` (the agents log without a per-call
    /// span, so each event must name the call itself).
    pub(crate) fn assert_every_line_names(lines: &[String], call: &str) {
        let field = format!("call_id={call}");
        let unnamed: Vec<_> = lines.iter().filter(|l| !l.contains(&field)).collect();
        assert!(
            unnamed.is_empty(),
            "lines without the call's id: {unnamed:#?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_max_then_counts() {
        let (captured, _guard) = Captured::start();
        let counter = Counter::default();
        let mut b = LogBudget::new(
            "test lines",
            3,
            CallId::parse("budget-test").unwrap(),
            counter.clone(),
        );
        let allowed = (0..10).filter(|_| b.allow()).count();
        assert_eq!(allowed, 3);
        assert_eq!(b.suppressed(), 7);
        assert_eq!(counter.get(), 7);
        drop(b);
        let mut none = LogBudget::new(
            "test lines",
            0,
            CallId::parse("budget-test").unwrap(),
            counter.clone(),
        );
        assert!(!none.allow());
        assert_eq!(counter.get(), 8);
        drop(none);
        let lines = captured.lines();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0].contains("further test lines suppressed for this call"));
        assert!(lines[1].contains("test lines suppressed in this call"));
        assert!(lines[1].contains("suppressed=7"));
        Captured::assert_every_line_names(&lines, "budget-test");
    }
}
