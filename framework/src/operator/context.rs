//! What a running operator knows about itself, and the per-task context threaded through a chain.

use crate::exchange::CreditOutbox;

/// Identifies an operator (a node of the stream graph) within a job.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct NodeId(pub u32);

/// An error raised by a user function (`open`, `close`, a source poll, a sink write).
pub type FunctionError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error that a restart cannot fix (Flink's `SuppressRestartsException`): restored state
/// that does not fit the job, a source that cannot take the positions of another parallelism,
/// a configuration that can never work. A subtask failing with it fails the job at once,
/// whatever the restart strategy, instead of restarting into the same error forever.
///
/// # Examples
///
/// ```
/// use eichhorn::prelude::*;
///
/// fn check(limit: u64) -> Result<(), FunctionError> {
///     if limit == 0 {
///         return Err(UnrecoverableError::new("limit must be at least 1").into());
///     }
///     Ok(())
/// }
/// let error = check(0).unwrap_err();
/// assert!(UnrecoverableError::is_in(error.as_ref()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UnrecoverableError {
    message: String,
}

impl UnrecoverableError {
    /// An unrecoverable error saying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// Whether `error`, or any error in its `source` chain, is an [`UnrecoverableError`].
    pub fn is_in(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut current = Some(error);
        while let Some(error) = current {
            if error.is::<Self>() {
                return true;
            }
            current = error.source();
        }
        false
    }
}

/// The runtime context of one parallel instance of an operator, as Flink's `RuntimeContext`:
/// handed to every function's `open`.
#[derive(Debug, Clone)]
pub struct RuntimeContext {
    /// The job's name, as given to `execute`.
    pub job_name: String,
    /// The id of this run of the job (its checkpoints are in `<checkpoint dir>/<job id>/`).
    pub job_id: crate::checkpoint::JobId,
    /// The operator's name (`name(..)` or its default).
    pub operator_name: String,
    /// The operator's uid, if one was set.
    pub uid: Option<String>,
    /// This instance's index, `0..parallelism`.
    pub subtask_index: u32,
    /// The operator's parallelism.
    pub parallelism: u32,
    /// The number of key groups (max parallelism).
    pub max_parallelism: u32,
    /// How many times the job was restarted before this attempt (0 on the first run).
    pub attempt_number: u32,
    /// The operator instance's user metrics (see [`RuntimeContext::metric_group`]).
    pub(crate) metrics: crate::metrics::MetricGroup,
}

impl RuntimeContext {
    /// The operator instance's metric group, as Flink's `getMetricGroup()`: register counters,
    /// gauges, histograms and meters in `open`, update them while processing. They appear in
    /// the REST answers, on `GET /metrics` and on the dashboard.
    pub fn metric_group(&self) -> &crate::metrics::MetricGroup {
        &self.metrics
    }

    /// Flink's task name format: `name (index+1/parallelism)`.
    pub fn task_name_with_subtask(&self) -> String {
        format!(
            "{} ({}/{})",
            self.operator_name,
            self.subtask_index + 1,
            self.parallelism
        )
    }
}

/// Per-task mutable context, threaded by `&mut` through every call into a chain.
///
/// It holds what the chained operators share: the credit outbox the writers push full batches
/// into, the operator currently running user code (to name it if that code panics) and whether a
/// partially filled batch waits for the linger timer.
#[derive(Debug)]
pub struct TaskCx {
    pub(crate) outbox: CreditOutbox,
    pub(crate) current_operator: NodeId,
    pub(crate) has_partial_batches: bool,
    pub(crate) failure: Option<TaskFailure>,
    /// Processing time (ms of the runtime's clock) at the start of the current step.
    pub(crate) now_ms: i64,
    /// The earliest processing time an operator asked to be called back at.
    pub(crate) wakeup_ms: Option<i64>,
    /// State snapshots taken while a barrier passed through the chain, per operator state id.
    pub(crate) snapshots: Vec<(String, super::checkpointing::PendingOperatorSnapshot)>,
    /// Whether the checkpoint being taken will be stored (false only for the commit-only
    /// final checkpoint of a job without periodic checkpoints).
    pub(crate) persist_snapshots: bool,
    /// Whether the subtask's input ended: its operators' snapshots say so, so that a restore
    /// from them does not run their end-of-input hooks again (see `NodeCore`).
    pub(crate) input_finished: bool,
    /// What two-phase-commit sinks committed since the subtask last reported it: the
    /// JobManager must know, so that it never falls back past a committed checkpoint silently.
    pub(crate) committed: Vec<CommitReport>,
    /// The largest watermark a record writer of the chain sent downstream (live metrics;
    /// `i64::MIN` before the first).
    pub(crate) output_watermark: i64,
}

/// Records an exactly-once sink committed for one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CommitReport {
    /// The checkpoint whose transactions were committed.
    pub(crate) checkpoint: crate::checkpoint::CheckpointId,
    /// The sink operator.
    pub(crate) operator: String,
    /// Records in the committed transactions.
    pub(crate) records: u64,
}

/// A failure raised inside a chain by a function that reports errors instead of panicking (a
/// sink's `invoke`, a source's `poll_next`): the subtask stops and fails the job with it.
#[derive(Debug, Clone)]
pub struct TaskFailure {
    /// The operator that failed.
    pub operator: NodeId,
    /// What went wrong.
    pub message: String,
}

impl TaskCx {
    pub(crate) fn new(outbox: CreditOutbox, head: NodeId) -> Self {
        Self {
            outbox,
            current_operator: head,
            has_partial_batches: false,
            failure: None,
            now_ms: 0,
            wakeup_ms: None,
            snapshots: Vec::new(),
            persist_snapshots: true,
            input_finished: false,
            committed: Vec::new(),
            output_watermark: i64::MIN,
        }
    }

    /// Asks for an `on_processing_time` walk at processing time `at_ms` (or soon after).
    pub(crate) fn request_wakeup(&mut self, at_ms: i64) {
        self.wakeup_ms = Some(self.wakeup_ms.map_or(at_ms, |t| t.min(at_ms)));
    }

    /// Records a failure of `operator`; the first one wins.
    pub(crate) fn fail(&mut self, operator: NodeId, message: String) {
        if self.failure.is_none() {
            self.failure = Some(TaskFailure { operator, message });
        }
    }

    /// Whether the task must stop processing input now (no credit downstream, or a failure).
    #[inline]
    pub(crate) fn must_pause(&self) -> bool {
        self.outbox.is_backpressured() || self.failure.is_some()
    }
}
