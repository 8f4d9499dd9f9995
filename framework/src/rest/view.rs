//! What the REST server serves about a job: plain serde data, published by whoever runs the
//! job (the local JobManager today, the cluster JobManager next) through [`JobStatusSource`].

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::metrics::{SubtaskMetricsSnapshot, WATERMARK_NONE};

/// Checkpoints kept in a job's history; older ones are dropped (the counts keep counting).
pub const CHECKPOINT_HISTORY_MAX: usize = 32;

/// Exceptions kept per job; older ones are dropped.
pub const EXCEPTIONS_MAX: usize = 16;

/// Where a job is in its life (Flink's job status names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Deploying its first attempt.
    Created,
    /// Running.
    Running,
    /// An attempt failed; the next one is deployed after the restart delay.
    Restarting,
    /// Every source finished and the final checkpoint completed.
    Finished,
    /// Cancelled, or stopped with a savepoint.
    Canceled,
    /// Failed for good.
    Failed,
}

impl JobState {
    /// Whether the job ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Finished | Self::Canceled | Self::Failed)
    }
}

/// A job as `GET /jobs/<id>` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// The run's id.
    pub id: String,
    /// The job's name.
    pub name: String,
    /// Its state.
    pub state: JobState,
    /// When it started, in the runtime clock's ms.
    pub start_ms: i64,
    /// When it ended, if it did.
    pub end_ms: Option<i64>,
    /// The runtime clock when this view was taken (rates are deltas over it).
    pub now_ms: i64,
    /// The current attempt (0 before any restart).
    pub attempt: u32,
    /// Restarts so far.
    pub restarts: u32,
    /// Why the job failed, if it did.
    pub failure: Option<String>,
    /// The operator chains, in topological order.
    pub vertices: Vec<VertexView>,
    /// The edges between chains.
    pub edges: Vec<EdgeView>,
    /// Checkpoint statistics and history.
    pub checkpoints: CheckpointsView,
    /// Failures of subtasks, newest last.
    pub exceptions: Vec<ExceptionView>,
    /// The TaskManagers and their slots.
    pub task_managers: Vec<TaskManagerView>,
}

/// One line of `GET /jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOverview {
    /// The run's id.
    pub id: String,
    /// The job's name.
    pub name: String,
    /// Its state.
    pub state: JobState,
    /// When it started (runtime clock, ms).
    pub start_ms: i64,
    /// When it ended.
    pub end_ms: Option<i64>,
    /// Subtasks (tasks) of the job.
    pub tasks: usize,
}

impl JobView {
    /// The overview line of this job.
    pub fn overview(&self) -> JobOverview {
        JobOverview {
            id: self.id.clone(),
            name: self.name.clone(),
            state: self.state,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            tasks: self.vertices.iter().map(|v| v.subtasks.len()).sum(),
        }
    }
}

/// One operator chain (a job vertex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VertexView {
    /// The vertex index.
    pub id: u32,
    /// `"Source: numbers -> Map"`.
    pub name: String,
    /// The chained operators, head first.
    pub operators: Vec<String>,
    /// Its parallelism.
    pub parallelism: u32,
    /// Sums over the subtasks (watermarks: the minimum).
    pub metrics: VertexMetrics,
    /// Per subtask: where it runs and its metrics.
    pub subtasks: Vec<SubtaskView>,
}

/// A vertex's metrics summed over its subtasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VertexMetrics {
    /// Records in (for a source: records its head operator produced).
    pub records_in: u64,
    /// Records sent downstream (for a sink chain: records its last operator received).
    pub records_out: u64,
    /// Bytes in (in-memory size within one process).
    pub bytes_in: u64,
    /// Bytes out.
    pub bytes_out: u64,
    /// Records in per second, over the subtasks' last rate windows.
    pub records_in_per_s: f64,
    /// Records out per second.
    pub records_out_per_s: f64,
    /// Back-pressured ms, summed over subtasks.
    pub backpressured_ms: u64,
    /// Input batches queued, over subtasks.
    pub input_queue_batches: u64,
    /// Output batches waiting for credit, over subtasks.
    pub output_queue_batches: u64,
    /// The smallest input watermark of the subtasks ([`WATERMARK_NONE`] if one has none).
    pub input_watermark: i64,
    /// The smallest output watermark.
    pub output_watermark: i64,
    /// Late records, over the chain's operators.
    pub late_records: u64,
    /// Dropped records.
    pub dropped_records: u64,
    /// State bytes in the last checkpoint, over the subtasks.
    pub state_bytes: u64,
    /// The longest barrier alignment of the last checkpoint, ms.
    pub last_alignment_ms: u64,
}

impl VertexMetrics {
    /// Sums `subtasks`' metrics.
    pub fn sum(subtasks: &[SubtaskMetricsSnapshot]) -> Self {
        let mut total = Self {
            input_watermark: i64::MAX,
            output_watermark: i64::MAX,
            ..Self::default()
        };
        for s in subtasks {
            total.records_in += s.records_in;
            total.records_out += s.records_out;
            total.bytes_in += s.bytes_in;
            total.bytes_out += s.bytes_out;
            total.records_in_per_s += s.records_in_per_s;
            total.records_out_per_s += s.records_out_per_s;
            total.backpressured_ms += s.backpressured_ms;
            total.input_queue_batches += s.input_queue_batches;
            total.output_queue_batches += s.output_queue_batches;
            total.input_watermark = total.input_watermark.min(s.input_watermark);
            total.output_watermark = total.output_watermark.min(s.output_watermark);
            total.last_alignment_ms = total.last_alignment_ms.max(s.last_alignment_ms);
            total.state_bytes += s.state_bytes;
            for op in &s.operators {
                total.late_records += op.late_records;
                total.dropped_records += op.dropped_records;
            }
            // A chain without input channels (a source) reads what its head produced; one
            // without output channels (a sink) writes what its last operator took.
            if s.input_queue_capacity == 0
                && let Some(head) = s.operators.first()
            {
                total.records_in += head.records_out;
            }
        }
        if subtasks.is_empty() {
            total.input_watermark = WATERMARK_NONE;
            total.output_watermark = WATERMARK_NONE;
        }
        total
    }
}

/// One subtask of a vertex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtaskView {
    /// Its index in the vertex.
    pub index: u32,
    /// The TaskManager it runs on.
    pub task_manager: String,
    /// Its metrics.
    pub metrics: SubtaskMetricsSnapshot,
}

/// An edge between two chains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeView {
    /// The producing vertex.
    pub source: u32,
    /// The consuming vertex.
    pub target: u32,
    /// Flink's name of the partitioning (`HASH`, `FORWARD`, `REBALANCE`, ...).
    pub partitioning: String,
}

/// What kind of snapshot a checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointType {
    /// A periodic checkpoint.
    Checkpoint,
    /// A savepoint.
    Savepoint,
    /// The checkpoint at the end of a bounded job.
    Final,
}

/// Where a checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckpointStatus {
    /// Triggered, not complete.
    InProgress,
    /// Complete.
    Completed,
    /// Failed or aborted.
    Failed,
}

/// One checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointView {
    /// Its id.
    pub id: u64,
    /// What kind.
    pub kind: CheckpointType,
    /// Where it is.
    pub status: CheckpointStatus,
    /// When it was triggered (runtime clock, ms).
    pub trigger_ms: i64,
    /// When it completed or failed.
    pub end_ms: Option<i64>,
    /// Bytes of state stored.
    pub state_bytes: u64,
    /// Subtasks that acknowledged it.
    pub acknowledged: usize,
    /// Why it failed.
    pub failure: Option<String>,
}

impl CheckpointView {
    /// From trigger to completion or failure, ms.
    pub fn duration_ms(&self) -> Option<i64> {
        self.end_ms.map(|end| end - self.trigger_ms)
    }
}

/// A job's checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointsView {
    /// Completed checkpoints and savepoints.
    pub completed: u64,
    /// Failed ones.
    pub failed: u64,
    /// The newest checkpoints, oldest first (at most [`CHECKPOINT_HISTORY_MAX`]).
    pub history: Vec<CheckpointView>,
    /// The latest completed one.
    pub latest_completed: Option<CheckpointView>,
    /// The latest failed one.
    pub latest_failed: Option<CheckpointView>,
}

/// A subtask failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionView {
    /// When (runtime clock, ms).
    pub time_ms: i64,
    /// The attempt that failed.
    pub attempt: u32,
    /// The failing subtask, `"Map (2/4)"`.
    pub task: String,
    /// The failing operator.
    pub operator: String,
    /// What went wrong.
    pub message: String,
    /// Whether a restart could fix it.
    pub recoverable: bool,
}

/// A TaskManager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskManagerView {
    /// Its id (`"local"` in one process).
    pub id: String,
    /// The node it runs on.
    pub host: String,
    /// Slots offered.
    pub slots: u32,
    /// Slots taken by the job's subtasks.
    pub slots_used: u32,
    /// Milliseconds since the JobManager started, at the TaskManager's last heartbeat (a
    /// cluster's TaskManagers; `None` in one process).
    #[serde(default)]
    pub last_heartbeat_ms: Option<u64>,
}

/// A boxed future, for the object-safe [`JobStatusSource`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the REST server reads a job through: a view it can serialise, and the few commands
/// it can give. The local JobManager implements it; the cluster JobManager implements it the
/// same way, so the server never reaches into actors.
pub trait JobStatusSource: Send + Sync {
    /// The job's id.
    fn id(&self) -> String;
    /// The job as it is now, with live metrics.
    fn view(&self) -> JobView;
    /// Cancels the job (it may have ended already: then nothing happens).
    ///
    /// # Errors
    ///
    /// The job cannot be cancelled from here.
    fn cancel(&self) -> Result<(), String>;
    /// Takes a savepoint below `target` (and then stops the job, with `stop`); resolves to
    /// the savepoint's folder.
    fn savepoint(&self, target: PathBuf, stop: bool) -> BoxFuture<Result<PathBuf, String>>;
}
