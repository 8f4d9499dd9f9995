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

mod checkpoints;
mod io;
mod plan;
mod restore;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

pub(crate) use io::{
    CheckpointLocation, Deployment, JobCoreConfig, Output, SavepointRequestId, StatusEvent,
    StorageRead, StorageReadResult, SubtaskCommand, SubtaskFailure,
};
pub(crate) use plan::DeploymentPlan;

use crate::checkpoint::storage::{
    CheckpointFolder, FileMetadata, RestoredCheckpoint, StorageError,
};
use crate::checkpoint::{
    CheckpointBarrier, CheckpointCoordinator, CheckpointId, CheckpointKind, CoordinatorEvent,
    PendingCheckpoint, RestartDecision, RestartTracker,
};
use crate::error::JobError;
use crate::operator::{CommitReport, NodeId, OperatorCounters};

use super::result::JobStatus;
use restore::CommitLog;

/// Savepoint requests that may wait at once; more are refused with an error.
pub(crate) const SAVEPOINT_REQUESTS_MAX: usize = 16;

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
            Some("the job already ended (finished, cancelled or failed) before the savepoint was taken".to_string())
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
        let restore = match &restored {
            Some(restored) => match self
                .plan
                .restore_plans(restored, self.config.allow_non_restored_state)
            {
                Ok(plans) => plans,
                Err(message) => {
                    self.conclude(Err(JobError::Restore(message)));
                    return;
                }
            },
            None => self.plan.no_restore(),
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
            restore,
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
