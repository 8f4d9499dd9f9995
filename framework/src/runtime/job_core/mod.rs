//! The job coordinator core: a job's deployment, checkpoints, savepoints, attempts and
//! restarts, as a synchronous state machine without I/O (in the manner of quinn-proto's
//! `Connection`).
//!
//! The JobManager actor (`runtime/job_manager.rs`) is its adapter: it turns messages into
//! `handle_*` calls and carries out the [`Output`]s the core produced (spawning subtasks,
//! sending them commands, storage reads and writes, the timer). The core reads no clock (time is
//! an argument), touches no storage (reads are requests whose results come back through
//! [`JobCore::handle_storage_read`], writes are outputs whose results come back through
//! [`JobCore::handle_persisted`] and [`JobCore::handle_metadata_written`]) and spawns nothing,
//! so tests and the simulator drive it directly on virtual time.
//!
//! ## Design
//!
//! - The checkpoint decisions (when to trigger, completion, failure, tolerable failures) are
//!   the pure [`CheckpointCoordinator`]'s; the core wraps the storage around them: where a
//!   checkpoint goes, the state files it waits for, the metadata written last, pruning, and the
//!   notifications that make two-phase-commit sinks commit.
//! - The restart decision (the strategy, and where to restart from, refusing to fall back past
//!   committed output) is the core's ([`restore`]); storage only answers reads.
//! - A subtask acknowledges with a payload `S` the core never looks at: it goes into the
//!   [`Output::Persist`] request as it came (in-memory pending snapshots today, state handles
//!   once TaskManagers write their own files).
//!
//! ## Invariants
//!
//! - A checkpoint completes only after every subtask of the current attempt acknowledged it
//!   and its state was stored; its metadata is written after the last state file, and subtasks
//!   hear of the completion only after the metadata is stored.
//! - At most one checkpoint is in flight; completions are announced in increasing id order.
//! - Messages of an earlier attempt are ignored, except commit reports (a commit is output,
//!   whoever made it) and writes that landed late (their folder is removed unless complete).
//! - Every queue is bounded: savepoint requests ([`SAVEPOINT_REQUESTS_MAX`]), the commit log
//!   ([`restore::COMMITS_DETAILED_MAX`]); one input produces at most a few outputs per subtask.

mod plan;
mod restore;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

pub(crate) use plan::DeploymentPlan;

use crate::checkpoint::storage::{
    CheckpointFolder, CheckpointMetadata, FileMetadata, RestoredCheckpoint, StorageError,
};
use crate::checkpoint::{
    CheckpointBarrier, CheckpointCoordinator, CheckpointId, CheckpointKind, CoordinatorConfig,
    CoordinatorEvent, PendingCheckpoint, RestartDecision, RestartStrategy, RestartTracker,
};
use crate::error::JobError;
use crate::operator::{CommitReport, NodeId, OperatorCounters};
use crate::state::OperatorSnapshot;

use super::result::JobStatus;
use restore::CommitLog;

/// Savepoint requests that may wait at once; more are refused with an error.
pub(crate) const SAVEPOINT_REQUESTS_MAX: usize = 16;

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

/// An attempt to deploy: every subtask with its share of the restored state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Deployment {
    /// The attempt's number (0 first, one more per restart).
    pub(crate) attempt: u32,
    /// The checkpoint the state comes from, if any.
    pub(crate) restored_from: Option<CheckpointId>,
    /// Per subtask (flat index), per operator state id, its share.
    pub(crate) shares: Vec<BTreeMap<String, OperatorSnapshot>>,
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
    fn kind(&self) -> &'static str {
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
}

/// What the core asks its adapter to do, drained with [`JobCore::poll`].
#[derive(Debug)]
pub(crate) enum Output<S> {
    /// Deploy an attempt; answer with [`JobCore::handle_deployed`].
    Deploy(Deployment),
    /// Stop every subtask of `attempt` (it failed); no need to wait.
    StopAttempt {
        /// The failed attempt.
        attempt: u32,
    },
    /// Wait until every subtask of `attempt` is gone and every message it sent was handled,
    /// then call [`JobCore::handle_attempt_drained`].
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
    /// `location`; answer with [`JobCore::handle_persisted`].
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
    /// Answer with [`JobCore::handle_metadata_written`].
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
    /// Read storage; answer with [`JobCore::handle_storage_read`].
    Read(StorageRead),
    /// The core's one timer is now due at this time (`None`: no timer); call
    /// [`JobCore::handle_timeout`] then. Replaces any earlier timer.
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

/// What the core waits for before it can deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PendingRead {
    /// Before the first attempt: the run's own checkpoint ids.
    CheckpointIds,
    /// Before the first attempt: the run's starting point.
    InitialRestore,
    /// Before a restart: the run's newest intact checkpoint.
    Latest,
    /// Before a restart without an intact checkpoint of its own: the starting point, with the
    /// damaged checkpoints the first read skipped.
    FallbackRestore(Vec<StorageError>),
}

/// Where the job is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting for [`JobCore::handle_start`].
    Created,
    /// Waiting for a storage read.
    Reading(PendingRead),
    /// Waiting for [`JobCore::handle_deployed`].
    Deploying,
    /// The current attempt runs.
    Running,
    /// The current attempt failed; the next deploys at `resume_at_ms`.
    Restarting { resume_at_ms: i64 },
    /// Waiting until the failed attempt is gone.
    Draining,
    /// The job ended.
    Ended,
}

/// A savepoint the user waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SavepointRequest {
    id: SavepointRequestId,
    target: PathBuf,
    stop: bool,
}

/// The checkpoint being taken.
#[derive(Debug)]
struct InFlight {
    barrier: CheckpointBarrier,
    location: CheckpointLocation,
    /// The stored state files, per subtask.
    files: BTreeMap<usize, FileMetadata>,
    savepoint: Option<SavepointRequest>,
    is_final: bool,
    /// Whether the subtasks' state is stored (false only for the commit-only final checkpoint
    /// of a job without periodic checkpoints that is not a savepoint).
    persist: bool,
    /// Every subtask acknowledged and the metadata is being written: the coordinator's record
    /// of it, handed back if the metadata cannot be stored.
    finalizing: Option<PendingCheckpoint>,
}

/// The job coordinator: deployment, checkpoints, savepoints, attempts and restarts of one run
/// of a job.
///
/// # Call order
///
/// 1. [`JobCore::new`], then [`JobCore::handle_start`] once.
/// 2. After **every** `handle_*` call, drain [`JobCore::poll`] until it returns `None` and
///    carry out each [`Output`] in order. Requests (`Read`, `Deploy`, `Persist`,
///    `WriteMetadata`, `DrainAttempt`) are answered through their `handle_*` method, at once or
///    later; the core accepts other inputs in between.
/// 3. Keep one timer: [`Output::SetTimer`] replaces it; when it fires, call
///    [`JobCore::handle_timeout`] with the time. A timer that fires early or late is harmless:
///    after `handle_timeout` the core announces the timer again if something is still due.
/// 4. Feed everything subtasks and storage report through the other `handle_*` methods, with
///    the current time. After [`Output::Concluded`] the job is over: stop polling.
#[derive(Debug)]
pub(crate) struct JobCore<S> {
    plan: DeploymentPlan,
    config: JobCoreConfig,
    phase: Phase,
    attempt: u32,
    coordinator: CheckpointCoordinator,
    restarts: RestartTracker,
    in_flight: Option<InFlight>,
    savepoint_requests: VecDeque<SavepointRequest>,
    next_savepoint_request: u64,
    /// Per subtask of the current attempt: it reported the end of its input.
    input_finished: Vec<bool>,
    /// Per subtask of the current attempt: it finished (or stopped).
    finished: Vec<bool>,
    counters: BTreeMap<NodeId, OperatorCounters>,
    commits: CommitLog,
    /// The id of the savepoint or checkpoint the run started from, if any.
    initial_restore_id: Option<CheckpointId>,
    /// The checkpoint or savepoint the current attempt restored from.
    restored_from: Option<String>,
    completed_checkpoints: u64,
    /// A stop-with-savepoint completed: the subtasks close.
    stopping: bool,
    /// The final checkpoint of the current attempt completed.
    final_completed: bool,
    /// The timer last announced.
    timer: Option<i64>,
    outputs: VecDeque<Output<S>>,
}

impl<S> JobCore<S> {
    /// A coordinator for `plan` under `config`; nothing happens before
    /// [`JobCore::handle_start`].
    pub(crate) fn new(plan: DeploymentPlan, config: JobCoreConfig) -> Self {
        let coordinator =
            CheckpointCoordinator::new(config.coordinator.clone(), plan.subtask_count(), 1);
        let restarts = RestartTracker::new(config.restart_strategy.clone());
        Self {
            plan,
            config,
            phase: Phase::Created,
            attempt: 0,
            coordinator,
            restarts,
            in_flight: None,
            savepoint_requests: VecDeque::new(),
            next_savepoint_request: 0,
            input_finished: Vec::new(),
            finished: Vec::new(),
            counters: BTreeMap::new(),
            commits: CommitLog::default(),
            initial_restore_id: None,
            restored_from: None,
            completed_checkpoints: 0,
            stopping: false,
            final_completed: false,
            timer: None,
            outputs: VecDeque::new(),
        }
    }

    /// The next thing to do, if any.
    pub(crate) fn poll(&mut self) -> Option<Output<S>> {
        self.outputs.pop_front()
    }

    /// Restarts granted so far.
    pub(crate) fn restarts(&self) -> u32 {
        self.restarts.restarts()
    }

    /// Periodic checkpoints (not savepoints) that completed with their state stored.
    pub(crate) fn completed_checkpoints(&self) -> u64 {
        self.completed_checkpoints
    }

    /// The checkpoint or savepoint the current attempt restored from.
    pub(crate) fn restored_from(&self) -> Option<&str> {
        self.restored_from.as_deref()
    }

    /// The counters of the subtasks of the current attempt that finished, per operator.
    pub(crate) fn counters(&self) -> &BTreeMap<NodeId, OperatorCounters> {
        &self.counters
    }

    /// Whether the job ended.
    pub(crate) fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// When [`JobCore::handle_timeout`] should next be called, if ever.
    pub(crate) fn next_timeout(&self) -> Option<i64> {
        match self.phase {
            Phase::Restarting { resume_at_ms } => Some(resume_at_ms),
            Phase::Running if !self.stopping => match &self.in_flight {
                Some(in_flight) if in_flight.finalizing.is_none() => self.coordinator.deadline_ms(),
                Some(_) => None,
                None if self.coordinator.is_finishing() => None,
                None => self.coordinator.next_due_ms(),
            },
            _ => None,
        }
    }

    /// Starts the job: reads what it needs from storage, then deploys the first attempt.
    pub(crate) fn handle_start(&mut self, now_ms: i64) {
        if self.phase == Phase::Created {
            self.phase = Phase::Reading(PendingRead::CheckpointIds);
            self.outputs
                .push_back(Output::Read(StorageRead::CheckpointIds));
        }
        self.settle(now_ms);
    }

    /// The answer to an [`Output::Read`].
    pub(crate) fn handle_storage_read(&mut self, result: StorageReadResult, now_ms: i64) {
        let Phase::Reading(pending) = &self.phase else {
            if self.phase != Phase::Ended {
                self.conclude(Err(JobError::Internal(format!(
                    "storage answered with {} while no read was pending",
                    result.kind()
                ))));
            }
            self.settle(now_ms);
            return;
        };
        let pending = pending.clone();
        match (pending, result) {
            (PendingRead::CheckpointIds, StorageReadResult::CheckpointIds(ids)) => {
                if let Some(last) = ids.last() {
                    self.coordinator.skip_past(*last);
                }
                match self.config.restore_path.clone() {
                    Some(path) => {
                        self.read(PendingRead::InitialRestore, StorageRead::RestorePath(path))
                    }
                    None => self.deploy(None),
                }
            }
            (PendingRead::InitialRestore, StorageReadResult::RestorePath(read)) => {
                match self.initial_restore(read) {
                    Ok(restored) => {
                        self.coordinator.skip_past(restored.metadata.id);
                        self.initial_restore_id = Some(restored.metadata.id);
                        self.deploy(Some(restored));
                    }
                    Err(error) => self.conclude(Err(error)),
                }
            }
            (PendingRead::Latest, StorageReadResult::LatestRestorable { restored, problems }) => {
                for problem in &problems {
                    tracing::warn!(
                        job = %self.plan.job_name(),
                        "skipping a damaged checkpoint: {problem}"
                    );
                }
                match (&restored, self.config.restore_path.clone()) {
                    // Without a checkpoint of its own, a run started from a savepoint
                    // restarts from it.
                    (None, Some(path)) => self.read(
                        PendingRead::FallbackRestore(problems),
                        StorageRead::RestorePath(path),
                    ),
                    _ => self.restart_from(restored, &problems),
                }
            }
            (PendingRead::FallbackRestore(problems), StorageReadResult::RestorePath(read)) => {
                match self.initial_restore(read) {
                    Ok(restored) => self.restart_from(Some(restored), &problems),
                    Err(error) => self.conclude(Err(error)),
                }
            }
            (pending, other) => self.conclude(Err(JobError::Internal(format!(
                "storage answered with {} while the coordinator waited for {pending:?}",
                other.kind()
            )))),
        }
        self.settle(now_ms);
    }

    /// The answer to an [`Output::Deploy`]: the attempt's subtasks run (or could not start).
    pub(crate) fn handle_deployed(
        &mut self,
        attempt: u32,
        result: Result<(), JobError>,
        now_ms: i64,
    ) {
        if self.phase == Phase::Deploying && attempt == self.attempt {
            match result {
                Ok(()) => {
                    let count = self.plan.subtask_count();
                    self.input_finished = vec![false; count];
                    self.finished = vec![false; count];
                    self.counters.clear();
                    self.final_completed = false;
                    self.coordinator.reset(now_ms);
                    self.phase = Phase::Running;
                    self.outputs
                        .push_back(Output::Status(StatusEvent::Running { attempt }));
                }
                Err(error) => self.conclude(Err(error)),
            }
        }
        self.settle(now_ms);
    }

    /// Subtask `index` processed its whole input and waits for the final checkpoint.
    pub(crate) fn handle_input_finished(&mut self, attempt: u32, index: usize, now_ms: i64) {
        if self.is_current(attempt, index) {
            self.input_finished[index] = true;
        }
        self.settle(now_ms);
    }

    /// Subtask `index` closed after the final checkpoint, with its operators' counters.
    pub(crate) fn handle_subtask_finished(
        &mut self,
        attempt: u32,
        index: usize,
        metrics: Vec<(NodeId, OperatorCounters)>,
        now_ms: i64,
    ) {
        if self.is_current(attempt, index) && !std::mem::replace(&mut self.finished[index], true) {
            for (node, counters) in metrics {
                let total = self.counters.entry(node).or_default();
                total.records_in += counters.records_in;
                total.records_out += counters.records_out;
                total.late_records += counters.late_records;
                total.dropped_records += counters.dropped_records;
            }
            if self.finished.iter().all(|f| *f) {
                self.conclude(Ok(JobStatus::Finished));
            }
        }
        self.settle(now_ms);
    }

    /// Subtask `index` closed on request (stop-with-savepoint).
    pub(crate) fn handle_subtask_stopped(&mut self, attempt: u32, index: usize, now_ms: i64) {
        if self.is_current(attempt, index) {
            self.mark_stopped(index);
        }
        self.settle(now_ms);
    }

    /// Subtask `index` failed.
    pub(crate) fn handle_subtask_failed(
        &mut self,
        attempt: u32,
        index: usize,
        failure: SubtaskFailure,
        now_ms: i64,
    ) {
        if self.is_current(attempt, index) {
            let error = JobError::TaskFailed {
                task: failure.task.unwrap_or_else(|| self.plan.task_name(index)),
                operator: failure
                    .operator
                    .unwrap_or_else(|| "(unknown operator)".to_string()),
                message: if failure.recoverable {
                    failure.message
                } else {
                    format!(
                        "{} (a restart cannot fix this: the job fails at once)",
                        failure.message
                    )
                },
            };
            if self.stopping {
                // The savepoint completed and was committed before the stop: a subtask that
                // fails while closing has nothing left to lose.
                tracing::warn!(job = %self.plan.job_name(), "{error} (while stopping)");
                self.mark_stopped(index);
            } else if failure.recoverable {
                self.fail(error, now_ms);
            } else {
                self.conclude(Err(error));
            }
        }
        self.settle(now_ms);
    }

    /// Subtask `index` took its snapshot for checkpoint `id`; `state` is what it acknowledged
    /// with.
    pub(crate) fn handle_acknowledge(
        &mut self,
        attempt: u32,
        index: usize,
        id: CheckpointId,
        state: S,
        now_ms: i64,
    ) {
        if self.is_current(attempt, index)
            && let Some(in_flight) = &self.in_flight
            && in_flight.barrier.id == id
            && in_flight.finalizing.is_none()
        {
            if in_flight.persist {
                self.outputs.push_back(Output::Persist {
                    attempt,
                    index,
                    id,
                    location: in_flight.location.clone(),
                    file_name: self.plan.file_name(index),
                    state,
                });
            } else {
                // A commit-only final checkpoint: nothing to store.
                let event = self.coordinator.acknowledge(id, index, now_ms);
                self.on_coordinator_event(event, now_ms);
            }
        }
        self.settle(now_ms);
    }

    /// Subtask `index` cannot take part in checkpoint `id`.
    pub(crate) fn handle_decline(
        &mut self,
        attempt: u32,
        index: usize,
        id: CheckpointId,
        reason: &str,
        now_ms: i64,
    ) {
        if self.is_current(attempt, index) {
            let reason = format!("{} declined it: {reason}", self.plan.task_name(index));
            let event = self.coordinator.fail(id, reason, now_ms);
            self.on_coordinator_event(event, now_ms);
        }
        self.settle(now_ms);
    }

    /// The answer to an [`Output::Persist`]: subtask `index`'s state for checkpoint `id` is
    /// stored in `folder` (or could not be).
    pub(crate) fn handle_persisted(
        &mut self,
        attempt: u32,
        index: usize,
        id: CheckpointId,
        folder: CheckpointFolder,
        result: Result<FileMetadata, String>,
        now_ms: i64,
    ) {
        let current = self.is_current(attempt, index);
        match self.in_flight.as_mut() {
            Some(in_flight) if current && in_flight.barrier.id == id => {
                if in_flight.finalizing.is_none() && in_flight.persist {
                    let event = match result {
                        Ok(file) => {
                            in_flight.files.insert(index, file);
                            self.coordinator.acknowledge(id, index, now_ms)
                        }
                        Err(message) => self.coordinator.fail(id, message, now_ms),
                    };
                    self.on_coordinator_event(event, now_ms);
                }
            }
            // A write for a checkpoint that was aborted (or of an earlier attempt) landed
            // after its folder was removed and made it again: remove it, so no partial
            // checkpoint or savepoint folder stays behind.
            _ if self.phase != Phase::Ended => {
                self.outputs.push_back(Output::DiscardIncomplete(folder));
            }
            _ => {}
        }
        self.settle(now_ms);
    }

    /// The answer to an [`Output::WriteMetadata`] for checkpoint `id`.
    pub(crate) fn handle_metadata_written(
        &mut self,
        id: CheckpointId,
        result: Result<(), StorageError>,
        now_ms: i64,
    ) {
        let finalizing = self.phase == Phase::Running
            && self
                .in_flight
                .as_ref()
                .is_some_and(|f| f.barrier.id == id && f.finalizing.is_some());
        if finalizing && let Some(mut in_flight) = self.in_flight.take() {
            match result {
                Ok(()) => {
                    if in_flight.barrier.kind == CheckpointKind::Checkpoint {
                        self.completed_checkpoints += 1;
                        self.outputs.push_back(Output::Prune {
                            retained: self.config.retained,
                        });
                    }
                    tracing::debug!(job = %self.plan.job_name(), checkpoint = id.0, "checkpoint complete");
                    self.finish_completion(in_flight);
                }
                Err(error) => {
                    tracing::warn!(job = %self.plan.job_name(), "checkpoint {} failed: {error}", id.0);
                    let event = match in_flight.finalizing.take() {
                        Some(pending) => {
                            self.coordinator
                                .finalization_failed(pending, error.to_string(), now_ms)
                        }
                        None => CoordinatorEvent::Nothing,
                    };
                    self.outputs
                        .push_back(Output::Discard(in_flight.location.clone()));
                    if let Some(request) = in_flight.savepoint {
                        self.outputs.push_back(Output::SavepointDone {
                            request: request.id,
                            result: Err(JobError::Checkpoint(error.to_string())),
                        });
                    }
                    if in_flight.is_final
                        || matches!(event, CoordinatorEvent::Failed { fail_job: true, .. })
                    {
                        self.fail(
                            JobError::Checkpoint(format!("checkpoint {} failed: {error}", id.0)),
                            now_ms,
                        );
                    }
                }
            }
        }
        self.settle(now_ms);
    }

    /// Exactly-once sinks of subtask `index` committed transactions. Accepted from any
    /// attempt: a commit is output, whoever made it.
    pub(crate) fn handle_committed(
        &mut self,
        index: usize,
        commits: Vec<CommitReport>,
        now_ms: i64,
    ) {
        if self.phase != Phase::Ended {
            let task = self.plan.task_name(index);
            for commit in commits {
                self.commits.record(
                    commit.checkpoint,
                    format!("{} in {task}: {} records", commit.operator, commit.records),
                );
            }
        }
        self.settle(now_ms);
    }

    /// The timer fired (or the adapter looks in): act on what is due at `now_ms`. The timer is
    /// spent: if something is still due later, a new [`Output::SetTimer`] says when.
    pub(crate) fn handle_timeout(&mut self, now_ms: i64) {
        self.timer = None;
        self.settle(now_ms);
    }

    /// The user asks for a savepoint below `target`; with `stop`, the job stops once it
    /// completed. Its end comes as an [`Output::SavepointDone`] with the returned id.
    pub(crate) fn handle_savepoint_request(
        &mut self,
        target: PathBuf,
        stop: bool,
        now_ms: i64,
    ) -> SavepointRequestId {
        let id = SavepointRequestId(self.next_savepoint_request);
        self.next_savepoint_request += 1;
        let refusal = if self.phase == Phase::Ended {
            Some("the job ended before the savepoint".to_string())
        } else if self.final_completed || self.in_flight.as_ref().is_some_and(|f| f.is_final) {
            // The final checkpoint already runs: it commits all output, and nothing is left
            // to save (a savepoint waiting before it would have become it).
            Some(
                "the job already finished its input: its final checkpoint commits all its \
                 output, so no savepoint was taken (join() returns its result)"
                    .to_string(),
            )
        } else if self.savepoint_requests.len() >= SAVEPOINT_REQUESTS_MAX {
            Some(format!(
                "{SAVEPOINT_REQUESTS_MAX} savepoints are already waiting; ask again once one \
                 completed"
            ))
        } else {
            None
        };
        match refusal {
            Some(message) => self.outputs.push_back(Output::SavepointDone {
                request: id,
                result: Err(JobError::Checkpoint(message)),
            }),
            None => self
                .savepoint_requests
                .push_back(SavepointRequest { id, target, stop }),
        }
        self.settle(now_ms);
        id
    }

    /// The answer to an [`Output::DrainAttempt`]: the failed attempt is gone.
    pub(crate) fn handle_attempt_drained(&mut self, now_ms: i64) {
        if self.phase == Phase::Draining {
            self.read(PendingRead::Latest, StorageRead::LatestRestorable);
        }
        self.settle(now_ms);
    }

    /// The user cancels the job.
    pub(crate) fn handle_cancel(&mut self, now_ms: i64) {
        self.conclude(Ok(JobStatus::Canceled));
        self.settle(now_ms);
    }

    /// Something the job cannot run without failed (the TaskManager, the checkpoint writer):
    /// the job fails at once with `error`.
    pub(crate) fn handle_internal_failure(&mut self, error: JobError, now_ms: i64) {
        self.conclude(Err(error));
        self.settle(now_ms);
    }

    /// Whether a message of `attempt` about subtask `index` concerns the running attempt.
    fn is_current(&self, attempt: u32, index: usize) -> bool {
        self.phase == Phase::Running && attempt == self.attempt && index < self.finished.len()
    }

    fn read(&mut self, pending: PendingRead, read: StorageRead) {
        self.phase = Phase::Reading(pending);
        self.outputs.push_back(Output::Read(read));
    }

    fn initial_restore(
        &self,
        read: Result<(RestoredCheckpoint, Vec<StorageError>), StorageError>,
    ) -> Result<RestoredCheckpoint, JobError> {
        let Some(path) = &self.config.restore_path else {
            return Err(JobError::Internal(
                "a restore path was read, but the job has none".to_string(),
            ));
        };
        restore::initial_restore(path, read, self.config.allow_fallback_past_commits)
    }

    /// Deploys the next attempt from `restored`, if the restart point allows it.
    fn restart_from(&mut self, restored: Option<RestoredCheckpoint>, problems: &[StorageError]) {
        match restore::restart_point(
            restored,
            problems,
            &self.commits,
            self.config.allow_fallback_past_commits,
        ) {
            Ok(restored) => {
                if let Some(restored) = &restored {
                    // Restoring it makes the sinks commit the transactions pending in it
                    // (their checkpoint completed): remember that, for a later fallback.
                    let id = restored.metadata.id;
                    if Some(id) != self.initial_restore_id && restore::holds_transactions(restored)
                    {
                        self.commits.record(
                            id,
                            "the transactions pending in it, committed when an attempt \
                             restored it"
                                .to_string(),
                        );
                    }
                }
                self.deploy(restored);
            }
            // A restart cannot repair this: fail at once.
            Err(error) => self.conclude(Err(error)),
        }
    }

    /// Asks for the current attempt to be deployed, restored from `restored` if given.
    fn deploy(&mut self, restored: Option<RestoredCheckpoint>) {
        let shares = match &restored {
            Some(restored) => match self
                .plan
                .restore_shares(restored, self.config.allow_non_restored_state)
            {
                Ok(shares) => shares,
                Err(message) => {
                    self.conclude(Err(JobError::Restore(message)));
                    return;
                }
            },
            None => self.plan.empty_shares(),
        };
        self.restored_from = restored.as_ref().map(|r| r.location.clone());
        let restored_from = restored.as_ref().map(|r| r.metadata.id);
        self.phase = Phase::Deploying;
        self.outputs
            .push_back(Output::Status(StatusEvent::Deploying {
                attempt: self.attempt,
                restored: restored.map(|r| (r.metadata.id, r.location)),
            }));
        self.outputs.push_back(Output::Deploy(Deployment {
            attempt: self.attempt,
            restored_from,
            shares,
        }));
    }

    /// Runs what is due at `now_ms`, then announces the timer if it moved.
    fn settle(&mut self, now_ms: i64) {
        self.advance(now_ms);
        let timer = self.next_timeout();
        if timer != self.timer {
            self.timer = timer;
            self.outputs.push_back(Output::SetTimer(timer));
        }
    }

    fn advance(&mut self, now_ms: i64) {
        if let Phase::Restarting { resume_at_ms } = self.phase
            && now_ms >= resume_at_ms
        {
            self.phase = Phase::Draining;
            self.outputs.push_back(Output::DrainAttempt {
                attempt: self.attempt.saturating_sub(1),
            });
        }
        if self.phase != Phase::Running || self.stopping {
            return;
        }
        if self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.finalizing.is_none())
        {
            let event = self.coordinator.tick(now_ms);
            self.on_coordinator_event(event, now_ms);
            if self.phase != Phase::Running {
                return;
            }
        }
        let final_started =
            self.final_completed || self.in_flight.as_ref().is_some_and(|f| f.is_final);
        if !final_started
            && self.input_finished.iter().all(|f| *f)
            && self
                .in_flight
                .as_ref()
                .is_none_or(|f| f.finalizing.is_none())
        {
            self.start_final_checkpoint(now_ms);
            return;
        }
        if self.in_flight.is_none() {
            if !self.savepoint_requests.is_empty() {
                self.coordinator.request_savepoint();
            }
            if let Some(barrier) = self.coordinator.trigger_due(now_ms) {
                let savepoint = if barrier.kind == CheckpointKind::Savepoint {
                    self.savepoint_requests.pop_front()
                } else {
                    None
                };
                debug_assert!(
                    savepoint.is_some() || barrier.kind == CheckpointKind::Checkpoint,
                    "a savepoint barrier without a request"
                );
                self.start_checkpoint(barrier, savepoint, false, true);
            }
        }
    }

    /// Every subtask finished its input: take the final checkpoint. A savepoint in flight or
    /// waiting becomes this final checkpoint, stored into the savepoint's target: the savepoint
    /// then holds the final state, and the sinks commit everything when it completes.
    fn start_final_checkpoint(&mut self, now_ms: i64) {
        let mut savepoint = None;
        if let Some(aborted) = self.coordinator.job_finishing()
            && self
                .in_flight
                .as_ref()
                .is_some_and(|f| f.barrier.id == aborted.barrier.id)
            && let Some(in_flight) = self.in_flight.take()
        {
            self.outputs.push_back(Output::Discard(in_flight.location));
            savepoint = in_flight.savepoint;
        }
        if savepoint.is_none() {
            savepoint = self.savepoint_requests.pop_front();
        }
        let barrier = if savepoint.is_some() {
            self.coordinator.trigger_final_savepoint(now_ms)
        } else {
            self.coordinator.trigger_final(now_ms)
        };
        let persist = self.config.coordinator.interval_ms.is_some() || savepoint.is_some();
        self.start_checkpoint(barrier, savepoint, true, persist);
    }

    /// Tells every subtask to take checkpoint `barrier` and starts collecting its state.
    fn start_checkpoint(
        &mut self,
        barrier: CheckpointBarrier,
        savepoint: Option<SavepointRequest>,
        is_final: bool,
        persist: bool,
    ) {
        let location = CheckpointLocation {
            id: barrier.id,
            savepoint_target: savepoint.as_ref().map(|s| s.target.clone()),
        };
        self.in_flight = Some(InFlight {
            barrier,
            location,
            files: BTreeMap::new(),
            savepoint,
            is_final,
            persist,
            finalizing: None,
        });
        let command = if is_final {
            SubtaskCommand::FinalCheckpoint { barrier, persist }
        } else {
            SubtaskCommand::TriggerCheckpoint(barrier)
        };
        self.to_every_subtask(command);
    }

    fn to_every_subtask(&mut self, command: SubtaskCommand) {
        for index in 0..self.plan.subtask_count() {
            self.outputs.push_back(Output::ToSubtask {
                attempt: self.attempt,
                index,
                command,
            });
        }
    }

    fn on_coordinator_event(&mut self, event: CoordinatorEvent, now_ms: i64) {
        match event {
            CoordinatorEvent::Nothing => {}
            CoordinatorEvent::Completed(pending) => self.complete_checkpoint(pending),
            CoordinatorEvent::Failed {
                checkpoint,
                reason,
                fail_job,
            } => {
                let id = checkpoint.barrier.id;
                tracing::warn!(job = %self.plan.job_name(), "checkpoint {} failed: {reason}", id.0);
                self.abort_in_flight(id, &reason);
                if fail_job {
                    self.fail(
                        JobError::Checkpoint(format!(
                            "checkpoint {} failed and the tolerable failures are exceeded: \
                             {reason}",
                            id.0
                        )),
                        now_ms,
                    );
                }
            }
        }
    }

    fn abort_in_flight(&mut self, id: CheckpointId, reason: &str) {
        if self.in_flight.as_ref().is_some_and(|f| f.barrier.id == id)
            && let Some(in_flight) = self.in_flight.take()
        {
            self.outputs.push_back(Output::Discard(in_flight.location));
            if let Some(request) = in_flight.savepoint {
                self.outputs.push_back(Output::SavepointDone {
                    request: request.id,
                    result: Err(JobError::Checkpoint(format!(
                        "savepoint {} failed: {reason}",
                        id.0
                    ))),
                });
            }
        }
    }

    /// Every subtask acknowledged: write the metadata (it completes the checkpoint), or
    /// complete a checkpoint that stores nothing at once.
    fn complete_checkpoint(&mut self, pending: PendingCheckpoint) {
        let Some(in_flight) = self.in_flight.as_mut() else {
            return;
        };
        if in_flight.barrier.id != pending.barrier.id {
            return;
        }
        if in_flight.persist {
            let metadata = self.plan.metadata(in_flight.barrier, &in_flight.files);
            let location = in_flight.location.clone();
            in_flight.finalizing = Some(pending);
            self.outputs
                .push_back(Output::WriteMetadata { location, metadata });
        } else if let Some(in_flight) = self.in_flight.take() {
            self.finish_completion(in_flight);
        }
    }

    /// The checkpoint is complete: tell the subtasks (sinks commit), answer its savepoint
    /// request, and stop the job if the savepoint asked for it.
    fn finish_completion(&mut self, in_flight: InFlight) {
        self.final_completed |= in_flight.is_final;
        self.to_every_subtask(SubtaskCommand::CheckpointComplete {
            id: in_flight.barrier.id,
            is_final: in_flight.is_final,
        });
        if let Some(request) = in_flight.savepoint {
            self.outputs.push_back(Output::SavepointDone {
                request: request.id,
                result: Ok(in_flight.location),
            });
            // A final savepoint needs no stop: every subtask finishes after committing.
            if request.stop && !in_flight.is_final {
                // Stop after the completion: every subtask handles it (sinks commit) before
                // the in-band stop, then reports; the job ends when all stopped.
                self.stopping = true;
                self.finished.iter_mut().for_each(|f| *f = false);
                self.to_every_subtask(SubtaskCommand::Stop);
                if self.finished.is_empty() {
                    self.conclude(Ok(JobStatus::Canceled));
                }
            }
        }
    }

    fn mark_stopped(&mut self, index: usize) {
        self.finished[index] = true;
        if self.finished.iter().all(|f| *f) {
            self.conclude(Ok(JobStatus::Canceled));
        }
    }

    /// A failure of the current attempt: restart or fail the job.
    fn fail(&mut self, error: JobError, now_ms: i64) {
        if self.phase != Phase::Running || self.stopping {
            return;
        }
        match self.restarts.on_failure(now_ms) {
            RestartDecision::Fail => self.conclude(Err(error)),
            RestartDecision::RestartAfter(delay_ms) => {
                if let Some(in_flight) = self.in_flight.take() {
                    self.outputs.push_back(Output::Discard(in_flight.location));
                    if let Some(request) = in_flight.savepoint {
                        // It was asked for before those still waiting.
                        self.savepoint_requests.push_front(request);
                    }
                }
                self.outputs.push_back(Output::StopAttempt {
                    attempt: self.attempt,
                });
                self.attempt += 1;
                self.outputs
                    .push_back(Output::Status(StatusEvent::Restarting {
                        attempt: self.attempt,
                        delay_ms,
                        cause: error.to_string(),
                    }));
                self.phase = Phase::Restarting {
                    resume_at_ms: now_ms
                        .saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX)),
                };
            }
        }
    }

    /// Ends the job with `outcome`; every savepoint still waiting fails.
    fn conclude(&mut self, outcome: Result<JobStatus, JobError>) {
        if self.phase == Phase::Ended {
            return;
        }
        self.phase = Phase::Ended;
        for request in std::mem::take(&mut self.savepoint_requests) {
            self.outputs.push_back(Output::SavepointDone {
                request: request.id,
                result: Err(JobError::Checkpoint(
                    "the job already ended (finished, cancelled or failed) before the \
                     savepoint was taken"
                        .to_string(),
                )),
            });
        }
        if let Some(in_flight) = self.in_flight.take() {
            if in_flight.finalizing.is_none() {
                self.outputs.push_back(Output::Discard(in_flight.location));
            }
            if let Some(request) = in_flight.savepoint {
                self.outputs.push_back(Output::SavepointDone {
                    request: request.id,
                    result: Err(JobError::Checkpoint(
                        "the job already ended (cancelled or failed) before the savepoint \
                         completed"
                            .to_string(),
                    )),
                });
            }
        }
        self.outputs.push_back(Output::Concluded(outcome));
    }
}
