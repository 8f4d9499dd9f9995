//! The JobManager actor: deploys a job's subtasks onto a TaskManager, coordinates checkpoints,
//! restarts the job from the latest completed checkpoint when a subtask fails, and reports the
//! job's result.
//!
//! ## Deployment
//!
//! Two-phase, so no message can reach a subtask before it knows its peers: every subtask is
//! spawned (with its share of the restored state), then every subtask gets `Wire`, then `Start`.
//!
//! ## Checkpoints
//!
//! The [`CheckpointCoordinator`] decides; this actor acts. A periodic `Tick` asks it whether a
//! checkpoint is due; its trigger goes to every subtask. A running source snapshots its position
//! and chain and sends the barrier downstream; a subtask that finished its input (a finished
//! source, or a task all of whose inputs ended) snapshots its final state directly, since no
//! barrier can reach it any more and its outputs already carry the end of input, which
//! downstream aligners count as aligned (Flink's checkpoints after tasks finished, FLIP-147).
//! Other running subtasks wait for the barrier, or snapshot at their end of input if that
//! comes first. Each subtask acknowledges with its pending snapshots;
//! the checkpoint writer (a child actor) completes and stores them, off the data path, and
//! reports them persisted. When every subtask's state is stored the metadata is written last,
//! older checkpoints are pruned, and every subtask is told the checkpoint completed.
//!
//! A bounded job ends with a **final checkpoint**: every subtask reports the end of its input
//! and waits; the JobManager then asks all of them to snapshot (no barrier travels, nothing is
//! in flight), completes it, and the completion makes two-phase-commit sinks commit before the
//! subtasks close. Without periodic checkpoints the final checkpoint only commits: its state
//! is not stored.
//!
//! ## Failures
//!
//! The first failure of the current attempt goes to the restart strategy. A restart stops every
//! subtask of the attempt (and waits until they stopped), waits the strategy's delay, and
//! deploys a new attempt restored from the newest complete checkpoint (damaged ones are
//! reported and skipped). Messages from earlier attempts are ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

use super::checkpoint_writer::{CheckpointWriter, WriterMsg};
use super::gauges::ChannelGauges;
use super::result::{JobResult, JobStatus, OperatorMetrics};
use super::subtask::{SubtaskArgs, SubtaskMsg};
use super::task_manager::{TaskManagerActor, TaskManagerMsg};
use crate::api::ExecutionConfig;
use crate::checkpoint::storage::{
    CheckpointFolder, CheckpointMetadata, CheckpointStore, FileMetadata, OperatorMetadata,
    RestoredCheckpoint, describe_problems,
};
use crate::checkpoint::{
    CheckpointBarrier, CheckpointCoordinator, CheckpointId, CheckpointKind, CoordinatorConfig,
    CoordinatorEvent, JobId, RestartDecision, RestartTracker,
};
use crate::error::JobError;
use crate::graph::ExecutionGraph;
use crate::operator::{
    CommitReport, NodeId, OperatorCounters, PendingOperatorSnapshot, TRANSACTIONS_STATE,
};
use crate::state::OperatorSnapshot;
use crate::state::snapshot::redistribute;

/// How often the JobManager checks checkpoint timeouts when nothing else is due.
const TICK_MS: u64 = 100;

/// Messages of the JobManager.
pub(crate) enum JobManagerMsg {
    /// A subtask processed its whole input and delivered its output; it waits for the final
    /// checkpoint.
    InputFinished { attempt: u32, index: usize },
    /// A subtask closed after the final checkpoint.
    SubtaskFinished {
        attempt: u32,
        index: usize,
        metrics: Vec<(NodeId, OperatorCounters)>,
    },
    /// A subtask closed on request (stop-with-savepoint).
    SubtaskStopped { attempt: u32, index: usize },
    /// A subtask failed.
    SubtaskFailed {
        attempt: u32,
        index: usize,
        operator: Option<String>,
        task: Option<String>,
        message: String,
        /// False when a restart cannot fix it: the job fails at once.
        recoverable: bool,
    },
    /// A subtask took its snapshot for `barrier`.
    Acknowledge {
        attempt: u32,
        index: usize,
        barrier: CheckpointBarrier,
        snapshots: Vec<(String, PendingOperatorSnapshot)>,
    },
    /// A subtask cannot take part in checkpoint `id`.
    Decline {
        attempt: u32,
        index: usize,
        id: CheckpointId,
        reason: String,
    },
    /// The writer stored (or failed to store) a subtask's state for checkpoint `id` in
    /// `folder`.
    Persisted {
        attempt: u32,
        index: usize,
        id: CheckpointId,
        folder: CheckpointFolder,
        result: Result<FileMetadata, String>,
    },
    /// Exactly-once sinks of a subtask committed transactions: per checkpoint, the sink and
    /// its records. Accepted from any attempt: a commit is output, whoever made it.
    Committed {
        index: usize,
        commits: Vec<CommitReport>,
    },
    /// Time to check checkpoint triggers and timeouts.
    Tick,
    /// The restart delay passed: stop what is left of the failed attempt.
    Redeploy,
    /// The failed attempt is gone (and every message it sent is handled, commit reports
    /// included, since they were queued before this): deploy the next attempt.
    DeployNext,
    /// Take a savepoint into `target`; with `stop`, cancel the job once it is complete.
    TriggerSavepoint {
        target: PathBuf,
        stop: bool,
        reply: oneshot::Sender<Result<PathBuf, JobError>>,
    },
    /// Cancel the job.
    Cancel,
}

pub(crate) struct JobManagerArgs {
    pub(crate) graph: Arc<ExecutionGraph>,
    /// The code that builds the graph's operators.
    pub(crate) registry: Arc<super::registry::OperatorRegistry>,
    pub(crate) config: ExecutionConfig,
    pub(crate) job_name: String,
    pub(crate) job_id: JobId,
    /// The node's runtime environment: the clock, the executor and blocking policies and
    /// checkpoint storage come from here.
    pub(crate) env: super::RuntimeEnv,
    pub(crate) result: oneshot::Sender<Result<JobResult, JobError>>,
}

/// The JobManager actor.
pub(crate) struct JobManagerActor;

/// A savepoint the user waits for.
struct SavepointRequest {
    target: PathBuf,
    stop: bool,
    reply: oneshot::Sender<Result<PathBuf, JobError>>,
}

/// The checkpoint being stored.
struct InFlight {
    barrier: CheckpointBarrier,
    folder: CheckpointFolder,
    files: BTreeMap<usize, FileMetadata>,
    savepoint: Option<SavepointRequest>,
    is_final: bool,
    /// Whether the subtasks' state is stored (false only for the commit-only final checkpoint
    /// of a job without periodic checkpoints that is not a savepoint).
    persist: bool,
}

pub(crate) struct JobManagerState {
    graph: Arc<ExecutionGraph>,
    registry: Arc<super::registry::OperatorRegistry>,
    config: ExecutionConfig,
    job_name: String,
    job_id: JobId,
    /// This run's checkpoint folder, for directory storage.
    checkpoint_dir: Option<PathBuf>,
    /// The node's runtime environment (its clock is the processing time of checkpoints).
    env: super::RuntimeEnv,
    attempt: u32,
    task_manager: Option<ActorRef<TaskManagerMsg>>,
    /// The task manager of a failed attempt, stopping.
    stopping_task_manager: Option<ActorRef<TaskManagerMsg>>,
    writer: ActorRef<WriterMsg>,
    subtasks: Vec<ActorRef<SubtaskMsg>>,
    finished: Vec<bool>,
    input_finished: Vec<bool>,
    counters: BTreeMap<NodeId, OperatorCounters>,
    started_at: tokio::time::Instant,
    gauges: Arc<ChannelGauges>,
    result: Option<oneshot::Sender<Result<JobResult, JobError>>>,
    coordinator: CheckpointCoordinator,
    restarts: RestartTracker,
    storage: Arc<dyn CheckpointStore>,
    in_flight: Option<InFlight>,
    savepoint_requests: Vec<SavepointRequest>,
    /// The checkpoint or savepoint the current attempt restored from.
    restored_from: Option<String>,
    completed_checkpoints: u64,
    /// A savepoint asked the job to stop once it completes.
    stopping: bool,
    /// What exactly-once sinks committed, per checkpoint of this run: a restart must not fall
    /// back past any of these silently (their output would be written twice).
    commits: BTreeMap<CheckpointId, Vec<String>>,
    /// The id of the savepoint or checkpoint the run started from, if any.
    initial_restore_id: Option<CheckpointId>,
    /// The final checkpoint completed: the subtasks are committing and finishing.
    final_completed: bool,
    /// This JobManager's number in the process (see `local_state_root`).
    instance: u64,
}

impl JobManagerState {
    fn now_ms(&self) -> i64 {
        self.env.clock().now_ms()
    }

    fn report(&self, status: JobStatus) -> JobResult {
        let job = &self.graph.job;
        let operators = job
            .stream
            .nodes
            .iter()
            .map(|node| {
                let counters = self.counters.get(&node.id).copied().unwrap_or_default();
                OperatorMetrics {
                    node: node.id,
                    name: node.name.clone(),
                    parallelism: job.parallelism[node.id.0 as usize],
                    records_in: counters.records_in,
                    records_out: counters.records_out,
                    late_records: counters.late_records,
                    dropped_records: counters.dropped_records,
                }
            })
            .collect();
        JobResult {
            job_name: self.job_name.clone(),
            job_id: self.job_id,
            checkpoint_dir: self.checkpoint_dir.clone(),
            status,
            duration: self.started_at.elapsed(),
            operators,
            max_queued_records: self.gauges.max_queued(),
            restarts: self.restarts.restarts(),
            completed_checkpoints: self.completed_checkpoints,
            restored_from: self.restored_from.clone(),
        }
    }

    /// Ends the job with `outcome`: stops every subtask and this actor.
    fn conclude(&mut self, myself: &ActorRef<JobManagerMsg>, outcome: Result<JobResult, JobError>) {
        if let Some(result) = self.result.take() {
            let _ = result.send(outcome);
        }
        for request in self.savepoint_requests.drain(..) {
            let _ = request.reply.send(Err(JobError::Checkpoint(
                "the job already ended (finished, cancelled or failed) before the savepoint \
                 was taken"
                    .to_string(),
            )));
        }
        if let Some(in_flight) = self.in_flight.take()
            && let Some(request) = in_flight.savepoint
        {
            let _ = request.reply.send(Err(JobError::Checkpoint(
                "the job already ended (cancelled or failed) before the savepoint completed"
                    .to_string(),
            )));
        }
        if let Some(task_manager) = &self.task_manager {
            task_manager.stop(Some("job ended".to_string()));
        }
        self.writer.stop(None);
        myself.stop(None);
    }

    fn task_name(&self, index: usize) -> String {
        let plan = &self.graph.subtasks[index];
        let vertex = &self.graph.job.vertices[plan.id.vertex as usize];
        format!(
            "{} ({}/{})",
            vertex.name,
            plan.id.index + 1,
            vertex.parallelism
        )
    }

    fn file_name(&self, index: usize) -> String {
        let plan = &self.graph.subtasks[index];
        format!("task-{}-{}.state", plan.id.vertex, plan.id.index)
    }

    /// The state id of every operator, per vertex.
    fn state_ids(&self) -> Vec<Vec<String>> {
        let job = &self.graph.job;
        job.vertices
            .iter()
            .map(|vertex| {
                vertex
                    .nodes
                    .iter()
                    .map(|n| state_id(job.stream.node(*n).uid.as_deref(), *n))
                    .collect()
            })
            .collect()
    }

    /// Deploys a new attempt, restored from `restored` if given.
    async fn deploy(
        &mut self,
        myself: &ActorRef<JobManagerMsg>,
        restored: Option<RestoredCheckpoint>,
    ) -> Result<(), JobError> {
        let plans = match &restored {
            Some(restored) => restore_plan(
                &self.graph,
                restored,
                self.config
                    .restore
                    .as_ref()
                    .is_some_and(|r| r.allow_non_restored_state),
            )
            .map_err(JobError::Restore)?,
            None => vec![BTreeMap::new(); self.graph.subtasks.len()],
        };
        let restored_from = restored.as_ref().map(|r| r.metadata.id);
        self.restored_from = restored.map(|r| r.location);
        let local_root = local_state_root(
            &self.config,
            &self.job_name,
            self.job_id,
            self.instance,
            self.attempt,
        );
        let (task_manager, _) = Actor::spawn_linked(
            None,
            TaskManagerActor,
            (myself.clone(), self.attempt, self.env.executor()),
            myself.get_cell(),
        )
        .await
        .map_err(|e| JobError::Deploy(e.to_string()))?;
        let specs = plans
            .into_iter()
            .enumerate()
            .map(|(index, restored)| SubtaskArgs {
                graph: self.graph.clone(),
                registry: self.registry.clone(),
                index,
                config: self.config.clone(),
                job_name: self.job_name.clone(),
                job_id: self.job_id,
                attempt_number: self.attempt,
                job_manager: myself.clone(),
                gauges: self.gauges.clone(),
                clock: Arc::clone(self.env.clock()),
                restored,
                restored_from,
                local_dir: local_root.join(format!("subtask-{index}")),
                faults: self.env.fault_injector().cloned(),
            })
            .collect();
        let deployed = ractor::call!(task_manager, TaskManagerMsg::Deploy, specs);
        let subtasks = match deployed {
            Ok(Ok(refs)) => refs,
            Ok(Err(message)) => {
                task_manager.stop(None);
                return Err(JobError::Deploy(message));
            }
            Err(error) => {
                task_manager.stop(None);
                return Err(JobError::Deploy(format!(
                    "task manager unavailable: {error}"
                )));
            }
        };
        // Phase two: every subtask learns its peers before any subtask starts.
        for (index, subtask) in subtasks.iter().enumerate() {
            let plan = &self.graph.subtasks[index];
            let outputs = plan
                .outputs
                .iter()
                .map(|c| (subtasks[c.consumer].clone(), c.consumer_input))
                .collect();
            let inputs = plan
                .inputs
                .iter()
                .map(|c| (subtasks[c.producer].clone(), c.producer_output))
                .collect();
            subtask
                .send_message(SubtaskMsg::Wire { outputs, inputs })
                .map_err(|e| JobError::Deploy(e.to_string()))?;
        }
        for subtask in &subtasks {
            subtask
                .send_message(SubtaskMsg::Start)
                .map_err(|e| JobError::Deploy(e.to_string()))?;
        }
        let count = subtasks.len();
        self.task_manager = Some(task_manager);
        self.subtasks = subtasks;
        self.finished = vec![false; count];
        self.input_finished = vec![false; count];
        self.counters.clear();
        let now = self.now_ms();
        self.coordinator.reset(now);
        Ok(())
    }

    /// Triggers `barrier` at every subtask (sources inject it, finished subtasks snapshot their
    /// final state, the others expect it) and starts storing the checkpoint.
    fn start_checkpoint(
        &mut self,
        barrier: CheckpointBarrier,
        savepoint: Option<SavepointRequest>,
    ) {
        let target = savepoint.as_ref().map(|s| s.target.clone());
        let folder = self.storage.folder(barrier.id, target.as_deref());
        self.in_flight = Some(InFlight {
            barrier,
            folder,
            files: BTreeMap::new(),
            savepoint,
            is_final: false,
            persist: true,
        });
        for subtask in &self.subtasks {
            let _ = subtask.send_message(SubtaskMsg::TriggerCheckpoint(barrier));
        }
    }

    /// Every subtask finished its input: take the final checkpoint. A savepoint in flight or
    /// waiting becomes this final checkpoint, stored into the savepoint's target: the savepoint
    /// then holds the final state, and the sinks commit everything when it completes.
    fn start_final_checkpoint(&mut self) {
        let now = self.now_ms();
        let mut savepoint = None;
        if let Some(aborted) = self.coordinator.job_finishing()
            && self
                .in_flight
                .as_ref()
                .is_some_and(|f| f.barrier.id == aborted.barrier.id)
            && let Some(in_flight) = self.in_flight.take()
        {
            self.storage.discard(&in_flight.folder);
            savepoint = in_flight.savepoint;
        }
        if savepoint.is_none() && !self.savepoint_requests.is_empty() {
            savepoint = Some(self.savepoint_requests.remove(0));
        }
        let barrier = if savepoint.is_some() {
            self.coordinator.trigger_final_savepoint(now)
        } else {
            self.coordinator.trigger_final(now)
        };
        let persist = self.config.checkpointing.interval_ms.is_some() || savepoint.is_some();
        let target = savepoint.as_ref().map(|s| s.target.clone());
        let folder = self.storage.folder(barrier.id, target.as_deref());
        self.in_flight = Some(InFlight {
            barrier,
            folder,
            files: BTreeMap::new(),
            savepoint,
            is_final: true,
            persist,
        });
        for subtask in &self.subtasks {
            let _ = subtask.send_message(SubtaskMsg::FinalCheckpoint { barrier, persist });
        }
    }

    fn abort_in_flight(&mut self, id: CheckpointId, reason: &str) {
        if self.in_flight.as_ref().is_some_and(|f| f.barrier.id == id)
            && let Some(in_flight) = self.in_flight.take()
        {
            self.storage.discard(&in_flight.folder);
            if let Some(request) = in_flight.savepoint {
                let _ = request.reply.send(Err(JobError::Checkpoint(format!(
                    "savepoint {} failed: {reason}",
                    id.0
                ))));
            }
        }
    }

    /// Every subtask's state is stored: write the metadata, prune, notify.
    fn complete_checkpoint(&mut self, myself: &ActorRef<JobManagerMsg>) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        let id = in_flight.barrier.id;
        if in_flight.persist {
            let metadata = self.metadata(&in_flight);
            if let Err(error) = self.storage.complete(&in_flight.folder, &metadata) {
                let now = self.now_ms();
                let event = self.coordinator.fail(id, error.to_string(), now);
                self.storage.discard(&in_flight.folder);
                if let Some(request) = in_flight.savepoint {
                    let _ = request
                        .reply
                        .send(Err(JobError::Checkpoint(error.to_string())));
                }
                if in_flight.is_final
                    || matches!(event, CoordinatorEvent::Failed { fail_job: true, .. })
                {
                    self.fail(
                        myself,
                        JobError::Checkpoint(format!("checkpoint {} failed: {error}", id.0)),
                    );
                }
                return;
            }
            if in_flight.barrier.kind == CheckpointKind::Checkpoint {
                self.completed_checkpoints += 1;
                self.storage.prune(self.config.checkpointing.retained);
            }
            tracing::debug!(job = %self.job_name, checkpoint = id.0, "checkpoint complete");
        }
        self.final_completed |= in_flight.is_final;
        for subtask in &self.subtasks {
            let _ = subtask.send_message(SubtaskMsg::CheckpointComplete {
                id,
                is_final: in_flight.is_final,
            });
        }
        if let Some(request) = in_flight.savepoint {
            let path = in_flight.folder.path.clone().unwrap_or_default();
            let stop = request.stop;
            let _ = request.reply.send(Ok(path));
            // A final savepoint needs no stop: every subtask finishes after committing.
            if stop && !in_flight.is_final {
                // Stop after the completion: every subtask handles it (sinks commit) before
                // the in-band stop, then reports; the job ends when all stopped.
                self.stopping = true;
                self.finished.iter_mut().for_each(|f| *f = false);
                for subtask in &self.subtasks {
                    let _ = subtask.send_message(SubtaskMsg::Stop);
                }
                if self.subtasks.is_empty() {
                    let report = self.report(JobStatus::Canceled);
                    self.conclude(myself, Ok(report));
                }
            }
        }
    }

    fn metadata(&self, in_flight: &InFlight) -> CheckpointMetadata {
        let job = &self.graph.job;
        let ids = self.state_ids();
        let mut operators = Vec::new();
        for (v, vertex) in job.vertices.iter().enumerate() {
            let files: Vec<String> = self
                .graph
                .subtasks
                .iter()
                .enumerate()
                .filter(|(_, plan)| plan.id.vertex as usize == v)
                .map(|(index, _)| self.file_name(index))
                .collect();
            for state_id in &ids[v] {
                operators.push(OperatorMetadata {
                    state_id: state_id.clone(),
                    parallelism: vertex.parallelism,
                    files: files.clone(),
                });
            }
        }
        CheckpointMetadata {
            id: in_flight.barrier.id,
            kind: in_flight.barrier.kind,
            job_name: self.job_name.clone(),
            max_parallelism: job.max_parallelism,
            operators,
            files: in_flight.files.values().cloned().collect(),
        }
    }

    /// The checkpoint the next attempt restores from: the newest intact one of this run, else
    /// the savepoint or checkpoint the run started from, else none (from the beginning).
    /// Damaged checkpoints are reported and skipped, but never silently past a checkpoint
    /// whose transactions exactly-once sinks committed: replaying from before it would write
    /// that output again.
    ///
    /// # Errors
    ///
    /// [`JobError::Restore`], which a restart cannot repair: the fallback would duplicate
    /// committed output (and is not allowed), or the run's starting point cannot be read.
    fn restart_point(&self) -> Result<Option<RestoredCheckpoint>, JobError> {
        let (restored, problems) = self.storage.latest_restorable();
        for problem in &problems {
            tracing::warn!(job = %self.job_name, "skipping a damaged checkpoint: {problem}");
        }
        let allow = self.config.checkpointing.allow_fallback_past_commits;
        let restored = match (restored, &self.config.restore) {
            (Some(restored), _) => Some(restored),
            // Without a checkpoint of its own, a run started from a savepoint restarts from it.
            (None, Some(settings)) => Some(initial_restore(&settings.path, allow)?),
            (None, None) => None,
        };
        let floor = restored.as_ref().map_or(0, |r| r.metadata.id.0);
        let committed: Vec<String> = self
            .commits
            .range(CheckpointId(floor.saturating_add(1))..)
            .map(|(id, what)| format!("checkpoint {}: {}", id.0, what.join(", ")))
            .collect();
        if committed.is_empty() {
            return Ok(restored);
        }
        let target = restored.as_ref().map_or_else(
            || "the beginning".to_string(),
            |r| format!("checkpoint {} ({})", r.metadata.id.0, r.location),
        );
        let damaged = if problems.is_empty() {
            "they are missing".to_string()
        } else {
            describe_problems(&problems)
        };
        let message = format!(
            "cannot restart from {target} without duplicating committed output: the newer \
             checkpoints cannot be used ({damaged}), and exactly-once sinks already committed \
             their transactions ({}); repair the damaged checkpoint, or allow the fallback \
             (allow_fallback_past_commits) to accept that output twice",
            committed.join("; ")
        );
        if !allow {
            return Err(JobError::Restore(message));
        }
        tracing::warn!(job = %self.job_name, "{message}; falling back as allowed");
        Ok(restored)
    }

    /// Restoring `restored` makes the sinks commit the transactions pending in it (their
    /// checkpoint completed): remember that, for a later fallback past it.
    fn note_recovery_commits(&mut self, restored: &RestoredCheckpoint) {
        let id = restored.metadata.id;
        if Some(id) != self.initial_restore_id && holds_transactions(restored) {
            self.commits.entry(id).or_default().push(
                "the transactions pending in it, committed when an attempt restored it".to_string(),
            );
        }
    }

    /// A failure of the current attempt: restart or fail the job.
    fn fail(&mut self, myself: &ActorRef<JobManagerMsg>, error: JobError) {
        if self.result.is_none() || self.stopping {
            return;
        }
        let now = self.now_ms();
        match self.restarts.on_failure(now) {
            RestartDecision::Fail => self.conclude(myself, Err(error)),
            RestartDecision::RestartAfter(delay_ms) => {
                tracing::warn!(
                    job = %self.job_name,
                    attempt = self.attempt + 1,
                    "{error}; restarting the job in {delay_ms} ms"
                );
                if let Some(in_flight) = self.in_flight.take() {
                    self.storage.discard(&in_flight.folder);
                    if let Some(request) = in_flight.savepoint {
                        self.savepoint_requests.push(request);
                    }
                }
                self.attempt += 1;
                if let Some(task_manager) = self.task_manager.take() {
                    task_manager.stop(Some("restarting".to_string()));
                    // The old attempt must be gone before the next one starts (its sinks
                    // must not write while the new ones clean up); `Redeploy` waits for it.
                    self.stopping_task_manager = Some(task_manager);
                }
                self.subtasks.clear();
                drop(
                    myself.send_after(Duration::from_millis(delay_ms), || JobManagerMsg::Redeploy),
                );
            }
        }
    }
}

/// Reads the savepoint or checkpoint a run starts from (see
/// [`load_restore_path`](crate::checkpoint::storage::load_restore_path)). Given an earlier run's
/// folder whose newest checkpoints are damaged, it falls back to the newest intact one only if
/// that run had no exactly-once sink (whose commits at the damaged checkpoint would be
/// duplicated) or the fallback is allowed.
///
/// # Errors
///
/// [`JobError::Restore`]: nothing to restore, or a fallback that would duplicate output.
fn initial_restore(
    path: &std::path::Path,
    allow_fallback: bool,
) -> Result<RestoredCheckpoint, JobError> {
    let (restored, problems) = crate::checkpoint::storage::load_restore_path(path)
        .map_err(|e| JobError::Restore(e.to_string()))?;
    if problems.is_empty() {
        return Ok(restored);
    }
    let damaged = describe_problems(&problems);
    let message = format!(
        "{}: newer checkpoints are damaged ({damaged}); the newest intact one is checkpoint {} \
         ({})",
        path.display(),
        restored.metadata.id.0,
        restored.location
    );
    if holds_transactions(&restored) && !allow_fallback {
        return Err(JobError::Restore(format!(
            "{message}; the run's exactly-once sinks committed the transactions of the damaged \
             checkpoints when they completed, so restoring an older one would write that output \
             again: repair the damaged checkpoint, restore a chk-<n> folder by name, or allow the \
             fallback (allow_fallback_past_commits)"
        )));
    }
    tracing::warn!("{message}: restoring it");
    Ok(restored)
}

/// Whether a checkpoint holds transactions of an exactly-once (two-phase-commit) sink.
fn holds_transactions(restored: &RestoredCheckpoint) -> bool {
    restored.operators.values().flatten().any(|snapshot| {
        snapshot
            .operator
            .iter()
            .any(|list| list.name == TRANSACTIONS_STATE && !list.elements.is_empty())
    })
}

/// The state id of an operator: its uid, or one derived from its graph node.
pub(crate) fn state_id(uid: Option<&str>, node: NodeId) -> String {
    uid.map_or_else(|| format!("node-{}", node.0), str::to_string)
}

/// A directory private to one attempt of one run of a job, for state backends' working files.
///
/// Named by the process, the job, the run's id, the JobManager's number in this process and the
/// attempt: two runs never share one, even runs with the same name and a fixed job id (the
/// simulator replays a seed several times in one process), whose subtasks of an earlier run may
/// still be closing their LMDB environments when the next run opens its own.
fn local_state_root(
    config: &ExecutionConfig,
    job_name: &str,
    job_id: JobId,
    instance: u64,
    attempt: u32,
) -> PathBuf {
    let base = config
        .local_state_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let job: String = job_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    base.join(format!(
        "eichhorn-{}-{job}-{job_id}-{instance}-attempt-{attempt}",
        std::process::id()
    ))
}

/// JobManagers started in this process, numbering their local state directories.
static JOB_MANAGERS_STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Each subtask's share of a restored checkpoint: per operator in its chain, the state of the
/// key groups it owns and its part of the operator state.
fn restore_plan(
    graph: &ExecutionGraph,
    restored: &RestoredCheckpoint,
    allow_non_restored_state: bool,
) -> Result<Vec<BTreeMap<String, OperatorSnapshot>>, String> {
    let job = &graph.job;
    if restored.metadata.max_parallelism != job.max_parallelism {
        return Err(format!(
            "{} was taken with max parallelism {}, the job has {}: keyed state cannot move \
             between different numbers of key groups",
            restored.location, restored.metadata.max_parallelism, job.max_parallelism
        ));
    }
    let mut known = std::collections::BTreeSet::new();
    for vertex in &job.vertices {
        for node in &vertex.nodes {
            known.insert(state_id(job.stream.node(*node).uid.as_deref(), *node));
        }
    }
    if !allow_non_restored_state {
        for (id, snapshots) in &restored.operators {
            if !known.contains(id) && snapshots.iter().any(|s| !s.is_empty()) {
                return Err(format!(
                    "{} holds state of operator '{id}', which is not in this job; set \
                     allow_non_restored_state to start without it",
                    restored.location
                ));
            }
        }
    }
    let mut plans = Vec::with_capacity(graph.subtasks.len());
    for plan in &graph.subtasks {
        let vertex = &job.vertices[plan.id.vertex as usize];
        let mut mine = BTreeMap::new();
        for node in &vertex.nodes {
            let id = state_id(job.stream.node(*node).uid.as_deref(), *node);
            if let Some(old) = restored.operators.get(&id) {
                let share =
                    redistribute(old, job.max_parallelism, vertex.parallelism, plan.id.index)
                        .map_err(|e| format!("{}: operator '{id}': {e}", restored.location))?;
                if !share.is_empty() {
                    mine.insert(id, share);
                }
            }
        }
        plans.push(mine);
    }
    Ok(plans)
}

impl Actor for JobManagerActor {
    type Msg = JobManagerMsg;
    type State = JobManagerState;
    type Arguments = JobManagerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<JobManagerMsg>,
        args: JobManagerArgs,
    ) -> Result<JobManagerState, ActorProcessingErr> {
        let graph = args.graph;
        let gauges = Arc::new(ChannelGauges::new(graph.channel_count));
        // Each run keeps its checkpoints in a folder of its own: it restarts only from those,
        // and starts from another run's only when told to (`restore_from`).
        let checkpoint_dir = args
            .config
            .checkpointing
            .directory
            .as_ref()
            .map(|dir| dir.join(args.job_id.to_string()));
        let storage = args
            .env
            .checkpoint_stores()
            .open_run(args.job_id, checkpoint_dir.as_deref());
        // A run with a fixed job id that finds its own checkpoints continues their numbering.
        let first_id = storage.checkpoint_ids().last().map_or(1, |id| id.0 + 1);
        let restored = match &args.config.restore {
            Some(settings) => Some(initial_restore(
                &settings.path,
                args.config.checkpointing.allow_fallback_past_commits,
            )?),
            None => None,
        };
        let first_id = first_id.max(restored.as_ref().map_or(1, |r| r.metadata.id.0 + 1));
        tracing::info!(
            job = %args.job_name,
            job_id = %args.job_id,
            "job '{}' runs as {}{}{}",
            args.job_name,
            args.job_id,
            checkpoint_dir
                .as_ref()
                .map(|d| format!("; checkpoints in {}", d.display()))
                .unwrap_or_default(),
            restored
                .as_ref()
                .map(|r| format!("; restored from {}", r.location))
                .unwrap_or_default(),
        );
        let (writer, _) = Actor::spawn_linked(
            None,
            CheckpointWriter,
            (Arc::clone(&storage), args.env.clone(), myself.clone()),
            myself.get_cell(),
        )
        .await?;
        let checkpointing = &args.config.checkpointing;
        let coordinator = CheckpointCoordinator::new(
            CoordinatorConfig {
                interval_ms: checkpointing.interval_ms,
                timeout_ms: checkpointing.timeout_ms,
                min_pause_ms: checkpointing.min_pause_ms,
                tolerable_failures: checkpointing.tolerable_failures,
            },
            graph.subtasks.len(),
            first_id,
        );
        let restarts = RestartTracker::new(args.config.effective_restart_strategy());
        let mut state = JobManagerState {
            graph,
            registry: args.registry,
            config: args.config,
            job_name: args.job_name,
            job_id: args.job_id,
            checkpoint_dir,
            env: args.env,
            attempt: 0,
            task_manager: None,
            stopping_task_manager: None,
            writer,
            subtasks: Vec::new(),
            finished: Vec::new(),
            input_finished: Vec::new(),
            counters: BTreeMap::new(),
            started_at: tokio::time::Instant::now(),
            gauges,
            result: Some(args.result),
            coordinator,
            restarts,
            storage,
            in_flight: None,
            savepoint_requests: Vec::new(),
            restored_from: None,
            completed_checkpoints: 0,
            stopping: false,
            commits: BTreeMap::new(),
            initial_restore_id: restored.as_ref().map(|r| r.metadata.id),
            final_completed: false,
            instance: JOB_MANAGERS_STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        if let Err(error) = state.deploy(&myself, restored).await {
            state.writer.stop(None);
            return Err(Box::new(error));
        }
        myself.send_message(JobManagerMsg::Tick)?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<JobManagerMsg>,
        message: JobManagerMsg,
        state: &mut JobManagerState,
    ) -> Result<(), ActorProcessingErr> {
        if state.result.is_none() {
            return Ok(());
        }
        let current = state.attempt;
        match message {
            JobManagerMsg::InputFinished { attempt, index } if attempt == current => {
                // Periodic checkpoints go on: a finished subtask acknowledges them with its
                // final state until the whole job finished its input.
                state.input_finished[index] = true;
                if state.input_finished.iter().all(|f| *f) {
                    state.start_final_checkpoint();
                }
            }
            JobManagerMsg::SubtaskFinished {
                attempt,
                index,
                metrics,
            } if attempt == current => {
                if !std::mem::replace(&mut state.finished[index], true) {
                    for (node, counters) in metrics {
                        let total = state.counters.entry(node).or_default();
                        total.records_in += counters.records_in;
                        total.records_out += counters.records_out;
                        total.late_records += counters.late_records;
                        total.dropped_records += counters.dropped_records;
                    }
                }
                if state.finished.iter().all(|f| *f) {
                    let report = state.report(JobStatus::Finished);
                    state.conclude(&myself, Ok(report));
                }
            }
            JobManagerMsg::SubtaskStopped { attempt, index } if attempt == current => {
                state.finished[index] = true;
                if state.finished.iter().all(|f| *f) {
                    let report = state.report(JobStatus::Canceled);
                    state.conclude(&myself, Ok(report));
                }
            }
            JobManagerMsg::SubtaskFailed {
                attempt,
                index,
                operator,
                task,
                message,
                recoverable,
            } if attempt == current && state.task_manager.is_some() => {
                let error = JobError::TaskFailed {
                    task: task.unwrap_or_else(|| state.task_name(index)),
                    operator: operator.unwrap_or_else(|| "(unknown operator)".to_string()),
                    message: if recoverable {
                        message
                    } else {
                        format!("{message} (a restart cannot fix this: the job fails at once)")
                    },
                };
                if recoverable {
                    state.fail(&myself, error);
                } else if !state.stopping {
                    state.conclude(&myself, Err(error));
                }
            }
            JobManagerMsg::Acknowledge {
                attempt,
                index,
                barrier,
                snapshots,
            } if attempt == current => {
                let Some(in_flight) = &state.in_flight else {
                    return Ok(());
                };
                if in_flight.barrier.id != barrier.id {
                    return Ok(());
                }
                if in_flight.persist {
                    state.writer.send_message(WriterMsg::Persist {
                        attempt,
                        index,
                        id: barrier.id,
                        folder: in_flight.folder.clone(),
                        file_name: state.file_name(index),
                        snapshots,
                    })?;
                } else {
                    // A commit-only final checkpoint: nothing to store.
                    let now = state.now_ms();
                    if let CoordinatorEvent::Completed(_) =
                        state.coordinator.acknowledge(barrier.id, index, now)
                    {
                        state.complete_checkpoint(&myself);
                    }
                }
            }
            JobManagerMsg::Persisted {
                attempt,
                index: _,
                id,
                folder,
                result: _,
            } if attempt != current
                || state.in_flight.as_ref().is_none_or(|f| f.barrier.id != id) =>
            {
                // A write for a checkpoint that was aborted (or of an earlier attempt) landed
                // after its folder was removed and made it again: remove it, so no partial
                // checkpoint or savepoint folder stays behind.
                state.storage.discard_incomplete(&folder);
            }
            JobManagerMsg::Persisted {
                attempt,
                index,
                id,
                folder: _,
                result,
            } if attempt == current => {
                let now = state.now_ms();
                let event = match result {
                    Ok(file) => {
                        if let Some(in_flight) = state.in_flight.as_mut()
                            && in_flight.barrier.id == id
                        {
                            in_flight.files.insert(index, file);
                        }
                        state.coordinator.acknowledge(id, index, now)
                    }
                    Err(message) => state.coordinator.fail(id, message, now),
                };
                state.on_coordinator_event(&myself, event);
            }
            JobManagerMsg::Decline {
                attempt,
                index,
                id,
                reason,
            } if attempt == current => {
                let reason = format!("{} declined it: {reason}", state.task_name(index));
                let now = state.now_ms();
                let event = state.coordinator.fail(id, reason, now);
                state.on_coordinator_event(&myself, event);
            }
            JobManagerMsg::Tick => {
                let now = state.now_ms();
                let event = state.coordinator.tick(now);
                state.on_coordinator_event(&myself, event);
                if state.task_manager.is_some()
                    && state.in_flight.is_none()
                    && !state.savepoint_requests.is_empty()
                {
                    state.coordinator.request_savepoint();
                }
                if state.task_manager.is_some()
                    && let Some(barrier) = state.coordinator.trigger_due(now)
                {
                    let savepoint = (barrier.kind == CheckpointKind::Savepoint)
                        .then(|| state.savepoint_requests.remove(0));
                    state.start_checkpoint(barrier, savepoint);
                }
                let next = state.coordinator.next_due_ms().map_or(TICK_MS, |due| {
                    u64::try_from(due.saturating_sub(now))
                        .unwrap_or(0)
                        .clamp(1, TICK_MS)
                });
                drop(myself.send_after(Duration::from_millis(next), || JobManagerMsg::Tick));
            }
            JobManagerMsg::Redeploy => {
                if let Some(old) = state.stopping_task_manager.take() {
                    let _ = old
                        .get_cell()
                        .stop_and_wait(None, Some(Duration::from_secs(60)))
                        .await;
                }
                // Queued behind every message the old attempt sent before it stopped.
                myself.send_message(JobManagerMsg::DeployNext)?;
            }
            JobManagerMsg::DeployNext => {
                let restored = match state.restart_point() {
                    Ok(restored) => restored,
                    Err(error) => {
                        // A restart cannot repair this: fail at once.
                        state.conclude(&myself, Err(error));
                        return Ok(());
                    }
                };
                match &restored {
                    Some(r) => tracing::warn!(
                        job = %state.job_name,
                        "restoring attempt {} from checkpoint {} ({})",
                        state.attempt,
                        r.metadata.id.0,
                        r.location
                    ),
                    None => tracing::warn!(
                        job = %state.job_name,
                        "no completed checkpoint: attempt {} restarts from the beginning",
                        state.attempt
                    ),
                }
                if let Some(r) = &restored {
                    state.note_recovery_commits(r);
                }
                if let Err(error) = state.deploy(&myself, restored).await {
                    state.conclude(&myself, Err(error));
                }
            }
            JobManagerMsg::Committed { index, commits } => {
                let task = state.task_name(index);
                for commit in commits {
                    state
                        .commits
                        .entry(commit.checkpoint)
                        .or_default()
                        .push(format!(
                            "{} in {task}: {} records",
                            commit.operator, commit.records
                        ));
                }
            }
            JobManagerMsg::TriggerSavepoint {
                target,
                stop,
                reply,
            } => {
                if state.final_completed || state.in_flight.as_ref().is_some_and(|f| f.is_final) {
                    // The final checkpoint already runs: it commits all output, and nothing is
                    // left to save (a savepoint waiting before it would have become it).
                    let _ = reply.send(Err(JobError::Checkpoint(
                        "the job already finished its input: its final checkpoint commits all \
                         its output, so no savepoint was taken (join() returns its result)"
                            .to_string(),
                    )));
                    return Ok(());
                }
                state.savepoint_requests.push(SavepointRequest {
                    target,
                    stop,
                    reply,
                });
                myself.send_message(JobManagerMsg::Tick)?;
            }
            JobManagerMsg::Cancel => {
                let report = state.report(JobStatus::Canceled);
                state.conclude(&myself, Ok(report));
            }
            // A message of an earlier attempt.
            _ => {}
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<JobManagerMsg>,
        event: SupervisionEvent,
        state: &mut JobManagerState,
    ) -> Result<(), ActorProcessingErr> {
        let current: Option<ActorId> = state.task_manager.as_ref().map(|t| t.get_id());
        match event {
            SupervisionEvent::ActorFailed(cell, error) if Some(cell.get_id()) == current => {
                let error = JobError::Internal(format!("task manager failed: {error}"));
                state.conclude(&myself, Err(error));
            }
            SupervisionEvent::ActorFailed(cell, error)
                if cell.get_id() == state.writer.get_id() =>
            {
                let error = JobError::Internal(format!("checkpoint writer failed: {error}"));
                state.conclude(&myself, Err(error));
            }
            SupervisionEvent::ActorTerminated(cell, _, _)
                if Some(cell.get_id()) == current && state.result.is_some() =>
            {
                let error = JobError::Internal("task manager stopped unexpectedly".to_string());
                state.conclude(&myself, Err(error));
            }
            _ => {}
        }
        Ok(())
    }
}

impl JobManagerState {
    fn on_coordinator_event(&mut self, myself: &ActorRef<JobManagerMsg>, event: CoordinatorEvent) {
        match event {
            CoordinatorEvent::Nothing => {}
            CoordinatorEvent::Completed(_) => self.complete_checkpoint(myself),
            CoordinatorEvent::Failed {
                checkpoint,
                reason,
                fail_job,
            } => {
                tracing::warn!(job = %self.job_name, "checkpoint {} failed: {reason}", checkpoint.barrier.id.0);
                self.abort_in_flight(checkpoint.barrier.id, &reason);
                if fail_job {
                    self.fail(
                        myself,
                        JobError::Checkpoint(format!(
                            "checkpoint {} failed and the tolerable failures are exceeded: {reason}",
                            checkpoint.barrier.id.0
                        )),
                    );
                }
            }
        }
    }
}
