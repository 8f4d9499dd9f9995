//! What goes into the job coordinator core and what comes out: its settings, the requests it
//! makes ([`Output`]) and the answers and reports it takes.

use std::path::PathBuf;

use crate::checkpoint::restore_plan::SubtaskRestorePlan;
use crate::checkpoint::storage::{
    CheckpointFolder, CheckpointMetadata, RestoredCheckpoint, StorageError,
};
use crate::checkpoint::{CheckpointBarrier, CheckpointId, CoordinatorConfig, RestartStrategy};
use crate::error::JobError;
use crate::runtime::result::JobStatus;

/// The coordinator's settings, from the job's configuration.
#[derive(Debug, Clone)]
pub(crate) struct JobCoreConfig {
    /// When checkpoints start, time out and fail the job.
    pub(crate) coordinator: CoordinatorConfig,
    /// Completed checkpoints kept.
    pub(crate) retained: usize,
    /// Whether a restart may fall back past checkpoints whose transactions sinks committed.
    pub(crate) allow_fallback_past_commits: bool,
    /// How the job reacts to a failed attempt.
    pub(crate) restart_strategy: RestartStrategy,
    /// The savepoint or checkpoint the run starts from.
    pub(crate) restore_path: Option<PathBuf>,
    /// Whether state of operators the job no longer has may be skipped on restore.
    pub(crate) allow_non_restored_state: bool,
}

/// Where a checkpoint is stored: a periodic checkpoint of the run, or a savepoint below the
/// directory the user named. The adapter resolves it to a folder of the run's storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckpointLocation {
    /// The checkpoint.
    pub(crate) id: CheckpointId,
    /// For a savepoint, the directory its folder goes below.
    pub(crate) savepoint_target: Option<PathBuf>,
}

/// Names a savepoint request; its [`Output::SavepointDone`] carries the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SavepointRequestId(pub(crate) u64);

/// What the coordinator tells one subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubtaskCommand {
    /// Take part in this checkpoint (a running source injects the barrier, a finished subtask
    /// snapshots its final state, others expect the barrier on their inputs).
    TriggerCheckpoint(CheckpointBarrier),
    /// Take the final checkpoint (the whole job finished its input); `persist`: whether its
    /// state is stored, else it only commits.
    FinalCheckpoint {
        /// The final checkpoint's barrier.
        barrier: CheckpointBarrier,
        /// Whether the state is stored.
        persist: bool,
    },
    /// A checkpoint completed (two-phase-commit sinks commit); after the final one the
    /// subtask closes.
    CheckpointComplete {
        /// The completed checkpoint.
        id: CheckpointId,
        /// Whether it was the final one.
        is_final: bool,
    },
    /// Close and stop (stop-with-savepoint, after the savepoint completed).
    Stop,
}

/// An attempt to deploy: every subtask with the plan of its restore (state handles and what
/// to take from each file; the TaskManager running it reads them).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Deployment {
    /// The attempt's number (0 first, one more per restart).
    pub(crate) attempt: u32,
    /// The checkpoint the state comes from, if any.
    pub(crate) restored_from: Option<CheckpointId>,
    /// Per subtask (flat index), its restore plan; `None`: it starts empty.
    pub(crate) restore: Vec<Option<SubtaskRestorePlan>>,
}

/// A read of the run's checkpoint storage the core waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StorageRead {
    /// The ids of the run's complete checkpoints (a run that finds its own goes on numbering
    /// after them): answer [`StorageReadResult::CheckpointIds`].
    CheckpointIds,
    /// The savepoint, checkpoint or run folder at this path: answer
    /// [`StorageReadResult::RestorePath`] with what `load_restore_path` returned.
    RestorePath(PathBuf),
    /// The run's newest intact checkpoint: answer [`StorageReadResult::LatestRestorable`].
    LatestRestorable,
}

/// The answer to a [`StorageRead`].
#[derive(Debug, Clone)]
pub(crate) enum StorageReadResult {
    /// The run's complete checkpoints, oldest first.
    CheckpointIds(Vec<CheckpointId>),
    /// The checkpoint at a restore path and the newer ones skipped as damaged, or why none.
    RestorePath(Result<(RestoredCheckpoint, Vec<StorageError>), StorageError>),
    /// The run's newest intact checkpoint, if any, and the damaged ones skipped.
    LatestRestorable {
        /// The checkpoint.
        restored: Option<RestoredCheckpoint>,
        /// The damaged checkpoints, newest first.
        problems: Vec<StorageError>,
    },
}

impl StorageReadResult {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Self::CheckpointIds(_) => "the checkpoint ids",
            Self::RestorePath(_) => "a restore path",
            Self::LatestRestorable { .. } => "the newest restorable checkpoint",
        }
    }
}

/// A subtask failed: what its supervisor reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubtaskFailure {
    /// The operator that failed, if known.
    pub(crate) operator: Option<String>,
    /// The task's name, if the subtask gave it.
    pub(crate) task: Option<String>,
    /// The panic message or error.
    pub(crate) message: String,
    /// False when a restart cannot fix it: the job fails at once.
    pub(crate) recoverable: bool,
}

/// A change of the job's status, for logs and observers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StatusEvent {
    /// Attempt `attempt` is being deployed, restored from the checkpoint named, if any.
    Deploying {
        /// The attempt.
        attempt: u32,
        /// The checkpoint's id and location.
        restored: Option<(CheckpointId, String)>,
    },
    /// Attempt `attempt` runs.
    Running {
        /// The attempt.
        attempt: u32,
    },
    /// The current attempt failed with `cause`; attempt `attempt` deploys after `delay_ms`.
    Restarting {
        /// The next attempt.
        attempt: u32,
        /// The restart strategy's delay.
        delay_ms: u64,
        /// The failure.
        cause: String,
    },
    /// Checkpoint `id` was triggered at every subtask (live metrics and the REST history).
    CheckpointTriggered {
        /// The checkpoint.
        id: CheckpointId,
        /// A savepoint.
        savepoint: bool,
        /// The final checkpoint of a bounded job.
        is_final: bool,
    },
    /// Checkpoint `id` completed.
    CheckpointCompleted {
        /// The checkpoint.
        id: CheckpointId,
    },
    /// Checkpoint `id` failed or was aborted.
    CheckpointFailed {
        /// The checkpoint.
        id: CheckpointId,
        /// Why.
        reason: String,
    },
}

/// What the core asks its adapter to do, drained with [`JobCore::poll`](super::JobCore::poll).
#[derive(Debug)]
pub(crate) enum Output<S> {
    /// Deploy an attempt; answer with
    /// [`JobCore::handle_deployed`](super::JobCore::handle_deployed).
    Deploy(Deployment),
    /// Stop every subtask of `attempt` (it failed); no need to wait.
    StopAttempt {
        /// The failed attempt.
        attempt: u32,
    },
    /// Wait until every subtask of `attempt` is gone and every message it sent was handled,
    /// then call [`JobCore::handle_attempt_drained`](super::JobCore::handle_attempt_drained).
    DrainAttempt {
        /// The failed attempt.
        attempt: u32,
    },
    /// Send `command` to subtask `index` of `attempt`.
    ToSubtask {
        /// The attempt.
        attempt: u32,
        /// The subtask's flat index.
        index: usize,
        /// What to tell it.
        command: SubtaskCommand,
    },
    /// Store subtask `index`'s acknowledged state for checkpoint `id` as file `file_name` at
    /// `location`; answer with [`JobCore::handle_persisted`](super::JobCore::handle_persisted).
    Persist {
        /// The attempt that acknowledged.
        attempt: u32,
        /// The subtask.
        index: usize,
        /// The checkpoint.
        id: CheckpointId,
        /// Where the checkpoint goes.
        location: CheckpointLocation,
        /// The subtask's state file.
        file_name: String,
        /// What the subtask acknowledged with.
        state: S,
    },
    /// Write `metadata` last, atomically: the checkpoint is complete once it is stored.
    /// Answer with [`JobCore::handle_metadata_written`](super::JobCore::handle_metadata_written).
    WriteMetadata {
        /// Where the checkpoint is.
        location: CheckpointLocation,
        /// Its metadata.
        metadata: CheckpointMetadata,
    },
    /// Remove a checkpoint's folder (it failed or was aborted).
    Discard(CheckpointLocation),
    /// Remove this folder unless it is complete: a write that landed after its checkpoint was
    /// aborted.
    DiscardIncomplete(CheckpointFolder),
    /// Keep the newest `retained` complete checkpoints, remove older ones.
    Prune {
        /// How many to keep.
        retained: usize,
    },
    /// Read storage; answer with
    /// [`JobCore::handle_storage_read`](super::JobCore::handle_storage_read).
    Read(StorageRead),
    /// The core's one timer is now due at this time (`None`: no timer); call
    /// [`JobCore::handle_timeout`](super::JobCore::handle_timeout) then. Replaces any earlier
    /// timer.
    SetTimer(Option<i64>),
    /// A savepoint request ended: its location, or why it failed.
    SavepointDone {
        /// The request.
        request: SavepointRequestId,
        /// Where it is stored, or the error.
        result: Result<CheckpointLocation, JobError>,
    },
    /// The job's status changed.
    Status(StatusEvent),
    /// The job ended: finished or cancelled, or failed with its error. Stop everything; no
    /// input changes anything from here on.
    Concluded(Result<JobStatus, JobError>),
}
