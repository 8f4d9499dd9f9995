//! User metrics, as Flink's metric group: counters, gauges, histograms and meters a function
//! registers in `open` through its [`RuntimeContext`](crate::operator::RuntimeContext) and
//! updates while it runs.
//!
//! Registration takes a short lock (in `open`, never on the record path); updates are relaxed
//! atomics on the metric's own cell.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// User metrics one subtask may register; more are handed out detached (counted, never
/// reported) with a warning, so a function that registers per key cannot grow memory forever.
pub const USER_METRICS_PER_SUBTASK_MAX: usize = 256;

/// Buckets of a [`Histogram`]: bucket `i < 63` counts values up to `2^i`; the last counts
/// larger ones.
pub const HISTOGRAM_BUCKETS: usize = 64;

/// What a user metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserMetricKind {
    /// A count that only grows.
    Counter,
    /// A value set by the user.
    Gauge,
    /// A distribution of values.
    Histogram,
    /// Events whose rate is of interest (the count is reported; readers derive the rate).
    Meter,
}

#[derive(Debug)]
enum Cell {
    Counter(Arc<AtomicU64>),
    /// An `f64` as its bits.
    Gauge(Arc<AtomicU64>),
    Histogram(Arc<HistogramCells>),
    Meter(Arc<AtomicU64>),
}

#[derive(Debug)]
struct Registered {
    operator: String,
    name: String,
    cell: Cell,
}

/// The user metrics of one subtask.
#[derive(Debug, Default)]
pub(crate) struct UserMetrics {
    metrics: Mutex<Vec<Registered>>,
}

impl UserMetrics {
    fn register(&self, operator: &str, name: &str, make: impl FnOnce() -> Cell) -> Option<Cell> {
        // A poisoned lock only means another registration panicked; the list is still whole.
        let mut metrics = self
            .metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = make();
        if let Some(existing) = metrics
            .iter()
            .find(|m| m.operator == operator && m.name == name)
        {
            // The same name twice gives the same metric (Flink warns and keeps the first).
            return match (&existing.cell, &fresh) {
                (Cell::Counter(c), Cell::Counter(_)) => Some(Cell::Counter(Arc::clone(c))),
                (Cell::Gauge(c), Cell::Gauge(_)) => Some(Cell::Gauge(Arc::clone(c))),
                (Cell::Meter(c), Cell::Meter(_)) => Some(Cell::Meter(Arc::clone(c))),
                (Cell::Histogram(c), Cell::Histogram(_)) => Some(Cell::Histogram(Arc::clone(c))),
                _ => {
                    tracing::warn!(
                        operator,
                        name,
                        "a metric of another kind has this name; the new one is not reported"
                    );
                    None
                }
            };
        }
        if metrics.len() >= USER_METRICS_PER_SUBTASK_MAX {
            tracing::warn!(
                operator,
                name,
                "more than {USER_METRICS_PER_SUBTASK_MAX} user metrics in one subtask; \
                 this one is not reported"
            );
            return None;
        }
        let shared = match &fresh {
            Cell::Counter(c) => Cell::Counter(Arc::clone(c)),
            Cell::Gauge(c) => Cell::Gauge(Arc::clone(c)),
            Cell::Meter(c) => Cell::Meter(Arc::clone(c)),
            Cell::Histogram(c) => Cell::Histogram(Arc::clone(c)),
        };
        metrics.push(Registered {
            operator: operator.to_string(),
            name: name.to_string(),
            cell: fresh,
        });
        Some(shared)
    }

    pub(crate) fn snapshot(&self) -> Vec<UserMetricSnapshot> {
        let metrics = self
            .metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        metrics
            .iter()
            .map(|m| {
                let (kind, value, histogram) = match &m.cell {
                    Cell::Counter(c) => (
                        UserMetricKind::Counter,
                        c.load(Ordering::Relaxed) as f64,
                        None,
                    ),
                    Cell::Gauge(c) => (
                        UserMetricKind::Gauge,
                        f64::from_bits(c.load(Ordering::Relaxed)),
                        None,
                    ),
                    Cell::Meter(c) => (
                        UserMetricKind::Meter,
                        c.load(Ordering::Relaxed) as f64,
                        None,
                    ),
                    Cell::Histogram(h) => {
                        let snapshot = h.snapshot();
                        (
                            UserMetricKind::Histogram,
                            snapshot.count as f64,
                            Some(snapshot),
                        )
                    }
                };
                UserMetricSnapshot {
                    operator: m.operator.clone(),
                    name: m.name.clone(),
                    kind,
                    value,
                    histogram,
                }
            })
            .collect()
    }
}

/// The metrics of one operator instance, as Flink's `MetricGroup`: get it from
/// [`RuntimeContext::metric_group`](crate::operator::RuntimeContext::metric_group) in `open`.
///
/// # Examples
///
/// ```
/// use eichhorn::metrics::SubtaskMetrics;
///
/// let cells = SubtaskMetrics::new(0, 0, "local", Vec::new());
/// let group = cells.metric_group("Parse");
/// let bad = group.counter("bad_lines");
/// bad.inc();
/// group.histogram("line_length").update(42);
/// let reported = cells.snapshot().user;
/// assert_eq!(reported[0].name, "bad_lines");
/// assert_eq!(reported[0].value, 1.0);
/// ```
#[derive(Debug, Clone)]
pub struct MetricGroup {
    registry: Arc<UserMetrics>,
    operator: String,
}

impl MetricGroup {
    pub(crate) fn new(registry: Arc<UserMetrics>, operator: String) -> Self {
        Self { registry, operator }
    }

    /// A group whose metrics are counted but reported nowhere (operators run outside a job).
    pub fn detached() -> Self {
        Self::new(Arc::new(UserMetrics::default()), String::new())
    }

    /// The counter `name` (the same one for the same name).
    pub fn counter(&self, name: &str) -> Counter {
        let cell = self
            .registry
            .register(&self.operator, name, || Cell::Counter(Arc::default()));
        Counter(match cell {
            Some(Cell::Counter(c)) => c,
            _ => Arc::default(),
        })
    }

    /// The gauge `name`.
    pub fn gauge(&self, name: &str) -> Gauge {
        let cell = self.registry.register(&self.operator, name, || {
            Cell::Gauge(Arc::new(AtomicU64::new(0f64.to_bits())))
        });
        Gauge(match cell {
            Some(Cell::Gauge(c)) => c,
            _ => Arc::new(AtomicU64::new(0f64.to_bits())),
        })
    }

    /// The histogram `name`.
    pub fn histogram(&self, name: &str) -> Histogram {
        let cell = self.registry.register(&self.operator, name, || {
            Cell::Histogram(Arc::new(HistogramCells::new()))
        });
        Histogram(match cell {
            Some(Cell::Histogram(c)) => c,
            _ => Arc::new(HistogramCells::new()),
        })
    }

    /// The meter `name`.
    pub fn meter(&self, name: &str) -> Meter {
        let cell = self
            .registry
            .register(&self.operator, name, || Cell::Meter(Arc::default()));
        Meter(match cell {
            Some(Cell::Meter(c)) => c,
            _ => Arc::default(),
        })
    }
}

/// A count that only grows.
#[derive(Debug, Clone)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value the user sets.
#[derive(Debug, Clone)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    /// The value.
    pub fn value(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Events whose rate matters: mark them; readers derive the rate from the count over time.
#[derive(Debug, Clone)]
pub struct Meter(Arc<AtomicU64>);

impl Meter {
    /// Marks one event.
    pub fn mark_event(&self) {
        self.mark_events(1);
    }

    /// Marks `n` events.
    pub fn mark_events(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Events so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct HistogramCells {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum: AtomicU64,
}

impl HistogramCells {
    fn new() -> Self {
        Self {
            buckets: (0..HISTOGRAM_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                cumulative += b.load(Ordering::Relaxed);
                (bucket_bound(i), cumulative)
            })
            .collect();
        HistogramSnapshot {
            count: self.count.load(Ordering::Relaxed),
            sum: self.sum.load(Ordering::Relaxed),
            buckets,
        }
    }
}

/// The upper bound of bucket `i` (`+inf` for the last).
fn bucket_bound(i: usize) -> f64 {
    if i + 1 == HISTOGRAM_BUCKETS {
        f64::INFINITY
    } else {
        (1u64 << i) as f64
    }
}

/// The bucket of `value`: the smallest `i` with `value <= 2^i`.
fn bucket_of(value: u64) -> usize {
    if value <= 1 {
        return 0;
    }
    let bits = (u64::BITS - (value - 1).leading_zeros()) as usize;
    bits.min(HISTOGRAM_BUCKETS - 1)
}

/// A distribution of non-negative integer values (latencies in µs, sizes in bytes), in
/// power-of-two buckets.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramCells>);

impl Histogram {
    /// Adds one value.
    pub fn update(&self, value: u64) {
        self.0.buckets[bucket_of(value)].fetch_add(1, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Values added so far.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

/// A histogram's counts, cumulative per bucket as Prometheus wants them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    /// Values added.
    pub count: u64,
    /// Their sum.
    pub sum: u64,
    /// `(upper bound, values <= bound)`, bounds increasing, the last `+inf`.
    pub buckets: Vec<(f64, u64)>,
}

/// One user metric at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserMetricSnapshot {
    /// The operator that registered it.
    pub operator: String,
    /// Its name.
    pub name: String,
    /// What it is.
    pub kind: UserMetricKind,
    /// A counter's or meter's count, a gauge's value, a histogram's count.
    pub value: f64,
    /// A histogram's buckets.
    pub histogram: Option<HistogramSnapshot>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_same_name_gives_the_same_metric_and_other_kinds_are_refused() {
        let registry = Arc::new(UserMetrics::default());
        let group = MetricGroup::new(Arc::clone(&registry), "Map".to_string());
        group.counter("n").inc();
        group.counter("n").inc_by(2);
        group.gauge("n").set(9.0);
        group.gauge("g").set(1.5);
        group.meter("m").mark_events(4);
        let snapshot = registry.snapshot();
        assert_eq!(snapshot.len(), 3);
        assert_eq!(snapshot[0].value, 3.0);
        assert_eq!(snapshot[1].value, 1.5);
        assert_eq!(snapshot[2].kind, UserMetricKind::Meter);
        assert_eq!(snapshot[2].value, 4.0);
    }

    #[test]
    fn registrations_beyond_the_limit_are_counted_but_not_reported() {
        let registry = Arc::new(UserMetrics::default());
        let group = MetricGroup::new(Arc::clone(&registry), "Map".to_string());
        for i in 0..USER_METRICS_PER_SUBTASK_MAX + 5 {
            group.counter(&format!("c{i}")).inc();
        }
        let extra = group.counter("one too many");
        extra.inc();
        assert_eq!(extra.count(), 1);
        assert_eq!(registry.snapshot().len(), USER_METRICS_PER_SUBTASK_MAX);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let group = MetricGroup::detached();
        let h = group.histogram("h");
        for v in [0, 1, 2, 3, 4, 5, 1000] {
            h.update(v);
        }
        let snapshot = h.0.snapshot();
        assert_eq!(snapshot.count, 7);
        assert_eq!(snapshot.sum, 1015);
        assert_eq!(snapshot.buckets[0], (1.0, 2));
        assert_eq!(snapshot.buckets[1], (2.0, 3));
        assert_eq!(snapshot.buckets[2], (4.0, 5));
        assert_eq!(snapshot.buckets[3], (8.0, 6));
        assert_eq!(snapshot.buckets.last().map(|b| b.1), Some(7));
    }

    proptest! {
        #[test]
        fn a_value_falls_in_the_first_bucket_whose_bound_holds_it(value in any::<u64>()) {
            let i = bucket_of(value);
            let bound = |i: usize| if i + 1 == HISTOGRAM_BUCKETS { u128::MAX } else { 1u128 << i };
            prop_assert!(u128::from(value) <= bound(i));
            if i > 0 {
                prop_assert!(u128::from(value) > bound(i - 1));
            }
        }
    }
}
