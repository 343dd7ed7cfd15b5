//! Latency histograms for per-frame observations, without a lock or a shared write per frame.
//!
//! Each call counts into its own plain [`LocalHistogram`] (an array increment, no atomic) and
//! adds it to the shared [`Histogram`] with its other counters, every second and when the call
//! ends ([`CallMetrics::flush`](super::metrics::CallMetrics::flush)): a relaxed atomic add per
//! bucket that changed. prometheus-client's own histogram locks a mutex on every observation,
//! one mutex for all calls on all worker threads: two per frame, ~100 000 a second at 1 000 calls.
//!
//! Bounds are durations that double from a first one (`le` in seconds in the exposition, the
//! same values prometheus-client's `exponential_buckets(first, 2.0, BUCKETS)` gives). Time is
//! summed in whole nanoseconds, so sums are exact.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Finite buckets of every histogram (one more, `+Inf`, catches the rest).
pub const BUCKETS: usize = 12;

/// Upper bounds (inclusive, nanoseconds): `first`, `2·first`, … `2¹¹·first`.
fn doubling(first: Duration) -> [u64; BUCKETS] {
    let first = u64::try_from(first.as_nanos()).unwrap_or(u64::MAX);
    std::array::from_fn(|i| first.saturating_mul(1 << i))
}

/// The bucket `ns` falls in: the first bound at or above it, else `+Inf` (`BUCKETS`).
fn bucket(bounds: &[u64; BUCKETS], ns: u64) -> usize {
    bounds.iter().position(|&b| ns <= b).unwrap_or(BUCKETS)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The shared histogram `/metrics` shows. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Histogram {
    inner: Arc<Inner>,
}

struct Inner {
    bounds: [u64; BUCKETS],
    counts: [AtomicU64; BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("bounds_ns", &self.inner.bounds)
            .finish_non_exhaustive()
    }
}

impl Histogram {
    /// A histogram whose bucket bounds double from `first`.
    pub fn doubling(first: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                bounds: doubling(first),
                counts: std::array::from_fn(|_| AtomicU64::new(0)),
                sum_ns: AtomicU64::new(0),
            }),
        }
    }

    /// An empty per-call histogram with the same buckets.
    pub fn local(&self) -> LocalHistogram {
        LocalHistogram {
            bounds: self.inner.bounds,
            counts: [0; BUCKETS + 1],
            sum_ns: 0,
        }
    }

    /// Records one observation straight into the shared counts (for rare observations; the
    /// per-frame ones go through a [`LocalHistogram`]).
    pub fn observe(&self, d: Duration) {
        let ns = nanos(d);
        self.inner.counts[bucket(&self.inner.bounds, ns)].fetch_add(1, Ordering::Relaxed);
        self.inner.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Adds `local`'s observations and empties it. Allocation-free; no lock.
    pub fn absorb(&self, local: &mut LocalHistogram) {
        debug_assert_eq!(
            local.bounds, self.inner.bounds,
            "a local histogram of another"
        );
        for (shared, n) in self.inner.counts.iter().zip(&mut local.counts) {
            if *n > 0 {
                shared.fetch_add(*n, Ordering::Relaxed);
                *n = 0;
            }
        }
        if local.sum_ns > 0 {
            self.inner.sum_ns.fetch_add(local.sum_ns, Ordering::Relaxed);
            local.sum_ns = 0;
        }
    }

    /// Observations so far (all buckets).
    pub fn count(&self) -> u64 {
        self.inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        // Per-bucket counts; the encoder makes them cumulative and writes the last bound,
        // infinity, as `+Inf`.
        let mut buckets = [(0.0, 0); BUCKETS + 1];
        for (i, (slot, c)) in buckets.iter_mut().zip(&self.inner.counts).enumerate() {
            let le = self
                .inner
                .bounds
                .get(i)
                .map_or(f64::INFINITY, |&ns| ns as f64 / 1e9);
            *slot = (le, c.load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|&(_, n)| n).sum();
        let sum = self.inner.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One call's observations since its last flush into a [`Histogram`]. Plain integers: the
/// per-frame path touches nothing shared.
#[derive(Debug, Clone)]
pub struct LocalHistogram {
    bounds: [u64; BUCKETS],
    counts: [u64; BUCKETS + 1],
    sum_ns: u64,
}

impl LocalHistogram {
    /// Records one observation. Allocation-free, lock-free, no atomic.
    pub fn observe(&mut self, d: Duration) {
        let ns = nanos(d);
        self.counts[bucket(&self.bounds, ns)] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    fn text(h: &Histogram) -> String {
        let mut r = Registry::with_prefix("t");
        r.register("lat_seconds", "latency", h.clone());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        out
    }

    #[test]
    fn bounds_double_and_a_bound_is_inclusive() {
        let h = Histogram::doubling(Duration::from_micros(10));
        let mut l = h.local();
        l.observe(Duration::from_micros(10)); // le 0.00001, inclusive
        l.observe(Duration::from_micros(11)); // le 0.00002
        l.observe(Duration::from_micros(40)); // le 0.00004
        l.observe(Duration::from_secs(1)); // +Inf
        assert_eq!(h.count(), 0, "nothing shared before the flush");
        h.absorb(&mut l);
        assert_eq!(h.count(), 4);
        let t = text(&h);
        for line in [
            "t_lat_seconds_bucket{le=\"0.00001\"} 1",
            "t_lat_seconds_bucket{le=\"0.00002\"} 2",
            "t_lat_seconds_bucket{le=\"0.00004\"} 3",
            "t_lat_seconds_bucket{le=\"0.02048\"} 3",
            "t_lat_seconds_bucket{le=\"+Inf\"} 4",
            "t_lat_seconds_count 4",
            "t_lat_seconds_sum 1.000061",
            "# TYPE t_lat_seconds histogram",
        ] {
            assert!(t.contains(line), "{line} missing from\n{t}");
        }
        // Flushing again adds nothing: the local histogram was emptied.
        h.absorb(&mut l);
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn the_same_bounds_as_prometheus_clients_exponential_buckets() {
        use prometheus_client::metrics::histogram::exponential_buckets;
        for (first, first_ns) in [(10e-6, 10_000), (0.5e-3, 500_000)] {
            let ours = doubling(Duration::from_nanos(first_ns));
            let theirs: Vec<f64> = exponential_buckets(first, 2.0, BUCKETS as u16).collect();
            let ours: Vec<f64> = ours.iter().map(|&ns| ns as f64 / 1e9).collect();
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn direct_observations_and_huge_durations() {
        let h = Histogram::doubling(Duration::from_micros(500));
        h.observe(Duration::from_micros(700));
        h.observe(Duration::MAX);
        assert_eq!(h.count(), 2);
        assert!(text(&h).contains("t_lat_seconds_bucket{le=\"0.001\"} 1"));
    }
}
