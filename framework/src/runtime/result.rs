//! What a finished job reports.

use std::time::Duration;

use crate::operator::NodeId;

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Every source finished and every operator processed its whole input.
    Finished,
    /// The job was cancelled through its handle.
    Canceled,
}

/// Records in and out of one operator, summed over its subtasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorMetrics {
    /// The operator's graph node.
    pub node: NodeId,
    /// The operator's name.
    pub name: String,
    /// The operator's parallelism.
    pub parallelism: u32,
    /// Records received.
    pub records_in: u64,
    /// Records emitted (main and side outputs).
    pub records_out: u64,
    /// Records that arrived too late for any window: dropped, or sent to the late side output.
    pub late_records: u64,
    /// Records dropped by the operator's semantics without being late (between sliding windows
    /// whose slide exceeds their size).
    pub dropped_records: u64,
}

/// The result of a job that ran to its end (or was cancelled).
#[derive(Debug, Clone)]
pub struct JobResult {
    /// The name given to `execute`.
    pub job_name: String,
    /// The id of this run.
    pub job_id: crate::checkpoint::JobId,
    /// Where this run's checkpoints are (`<checkpoint dir>/<job id>`), when they are written
    /// to a directory: pass it, or one of its `chk-<n>` folders, to
    /// [`StreamEnv::restore_from`](crate::api::StreamEnv::restore_from) to resume from them.
    pub checkpoint_dir: Option<std::path::PathBuf>,
    /// How it ended.
    pub status: JobStatus,
    /// From deployment to the end, in the runtime's clock (virtual under a paused runtime).
    pub duration: Duration,
    /// Per operator, in graph order. For a cancelled job: the subtasks that finished.
    pub operators: Vec<OperatorMetrics>,
    /// The most records that were ever queued on one channel (sent, not yet consumed); bounded
    /// by `credits_per_channel * batch_records_max`.
    pub max_queued_records: u64,
    /// How many times the job restarted after a failure.
    pub restarts: u32,
    /// Periodic checkpoints (not savepoints) that completed, the final one included when it
    /// was stored.
    pub completed_checkpoints: u64,
    /// The checkpoint or savepoint the last attempt restored from, if any.
    pub restored_from: Option<String>,
}

impl JobResult {
    /// The metrics of the first operator called `name`.
    pub fn operator(&self, name: &str) -> Option<&OperatorMetrics> {
        self.operators.iter().find(|m| m.name == name)
    }
}
