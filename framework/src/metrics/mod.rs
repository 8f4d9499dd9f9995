//! Live metrics: per-subtask counters and gauges the runtime updates while a job runs, and user
//! metrics registered through the [`RuntimeContext`](crate::operator::RuntimeContext).
//!
//! Flink reports a job's numbers while it runs (records and bytes in and out, back-pressure,
//! watermarks, checkpoint figures); Eichhorn's `JobResult` only had them after the end. This
//! module is the live half: the REST server (`crate::rest`), Prometheus and the dashboard read
//! it.
//!
//! ## Design
//!
//! - **One [`SubtaskMetrics`] per subtask**, shared (an `Arc`) between the subtask core that
//!   writes it and the readers. Its fields are relaxed atomics, written by exactly one subtask
//!   core and read by anyone: statistics, never synchronisation.
//! - **Nothing on the record path.** The subtask core keeps its counts in plain integers (the
//!   operators' own [`OperatorCounters`](crate::operator::OperatorCounters) and the core's
//!   batch counts) and *publishes* them into the atomics once per step: after a batch, a run
//!   of a source poll, a timer or a checkpoint. A step handles up to `batch_records_max`
//!   records, so the cost is a few dozen relaxed stores per thousands of records.
//! - **Store, not add.** Published values mirror the current attempt's counters, as
//!   [`JobResult`](crate::runtime::JobResult) reports them: after a restart they start again
//!   from the restored attempt's zero.
//! - **Serialisable snapshots** ([`SubtaskMetricsSnapshot`], [`UserMetricSnapshot`]) are what
//!   leaves a process: the REST answers, and later a TaskManager's report to the JobManager.
//! - **User metrics** ([`MetricGroup`]: [`Counter`], [`Gauge`], [`Histogram`], [`Meter`]) are
//!   registered in `open` (a short lock, never on the record path) and updated by the user with
//!   relaxed atomics, as cheap as Flink's `SimpleCounter` on one core.
//!
//! ## Invariants
//!
//! - Only the subtask core of the current attempt writes a subtask's cells.
//! - Every collection is bounded: operators per chain (fixed at build), user metrics per
//!   subtask ([`USER_METRICS_PER_SUBTASK_MAX`]), histogram buckets ([`HISTOGRAM_BUCKETS`]).

pub(crate) mod progress;
mod subtask;
mod user;

pub use subtask::{
    JobMetrics, OperatorMetricsSnapshot, RATE_WINDOW_MS, SubtaskMetrics, SubtaskMetricsSnapshot,
    WATERMARK_NONE,
};
pub(crate) use subtask::{StepFigures, SubtaskMetricsWriter};
pub use user::{
    Counter, Gauge, HISTOGRAM_BUCKETS, Histogram, HistogramSnapshot, Meter, MetricGroup,
    USER_METRICS_PER_SUBTASK_MAX, UserMetricKind, UserMetricSnapshot,
};
