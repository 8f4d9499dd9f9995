//! The JobManager actor: the adapter of the job coordinator core ([`super::job_core`]).
//!
//! The core decides everything about the job's life: deployment and attempts, the checkpoint
//! lifecycle (periodic trigger, acknowledgements, declines, timeouts, the metadata written
//! last, retained checkpoints, the final checkpoint at the end of the input), savepoints,
//! restarts and where they restore from, cancellation and the job's end. This actor turns its
//! messages into the core's `handle_*` calls and carries out what the core asks for:
//!
//! | core output | carried out by |
//! |---|---|
//! | `Deploy` | a TaskManager spawns the subtasks; every subtask gets `Wire`, then `Start` |
//! | `ToSubtask` | a [`SubtaskMsg`] to the subtask of the current attempt |
//! | `Persist` | the checkpoint writer (a child actor) stores the state, replies `Persisted` |
//! | `WriteMetadata`, `Discard`, `Prune`, `Read` | the run's [`CheckpointStore`], in place |
//! | `SetTimer` | one `Tick` sent after the delay, on the runtime's clock |
//! | `StopAttempt`, `DrainAttempt` | the failed attempt's TaskManager stops, then is waited for |
//! | `SavepointDone`, `Concluded` | the user's reply channels |
//!
//! ## Deployment
//!
//! Two-phase, so no message can reach a subtask before it knows its peers: every subtask is
//! spawned (with the plan of its restore: the TaskManager reads its share by state handle), then
//! every subtask gets `Wire`, then `Start`.
//!
//! ## Restarts
//!
//! A restart stops every subtask of the failed attempt at once; after the strategy's delay
//! `Redeploy` waits until they stopped and queues `DeployNext` behind every message the old
//! attempt sent (commit reports included), so the core decides where to restart from knowing
//! every commit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

use super::checkpoint_writer::CheckpointWriter;
use super::cluster::job_manager::{ClusterJobManager, DeployFailure};
use super::gauges::ChannelGauges;
use super::job_core::{
    CheckpointLocation, Deployment, DeploymentPlan, JobCore, JobCoreConfig, Output,
    SavepointRequestId, StatusEvent, StorageRead, StorageReadResult, SubtaskCommand,
    SubtaskFailure,
};
use super::protocol::{JobManagerMsg, SubtaskArgs, SubtaskMsg, TaskManagerMsg, WriterMsg};
use super::result::{JobResult, JobStatus, OperatorMetrics};
use super::status::LocalJobStatus;
use super::task_manager::{TaskManagerActor, TaskManagerArgs};
use crate::api::ExecutionConfig;
use crate::checkpoint::storage::{CheckpointFolder, CheckpointStore, load_restore_path};
use crate::checkpoint::{CoordinatorConfig, JobId};
use crate::error::JobError;
use crate::graph::ExecutionGraph;
use crate::net::control::Command;
use crate::operator::PendingOperatorSnapshot;

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
    /// The TaskManagers of a cluster, when the subtasks run on other processes; `None`: in
    /// this process, on one local TaskManager.
    pub(crate) cluster: Option<Arc<ClusterJobManager>>,
    /// What the REST server reads about the job (issue 17).
    pub(crate) status: Arc<LocalJobStatus>,
}

/// The JobManager actor.
pub(crate) struct JobManagerActor;

/// What a subtask acknowledges a checkpoint with: its operators' pending snapshots.
type AcknowledgedState = Vec<(String, PendingOperatorSnapshot)>;

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
    /// The decisions.
    core: JobCore<AcknowledgedState>,
    task_manager: Option<ActorRef<TaskManagerMsg>>,
    /// The task manager of a failed attempt, stopping.
    stopping_task_manager: Option<ActorRef<TaskManagerMsg>>,
    writer: ActorRef<WriterMsg>,
    /// The subtasks of the deployed attempt `deployed_attempt`.
    subtasks: Vec<ActorRef<SubtaskMsg>>,
    deployed_attempt: u32,
    started_at: tokio::time::Instant,
    gauges: Arc<ChannelGauges>,
    result: Option<oneshot::Sender<Result<JobResult, JobError>>>,
    storage: Arc<dyn CheckpointStore>,
    /// The user's reply channels of savepoint requests the core holds.
    savepoint_replies: BTreeMap<SavepointRequestId, oneshot::Sender<Result<PathBuf, JobError>>>,
    /// The `Tick` armed for the core's timer.
    timer: Option<tokio::task::JoinHandle<Result<(), ractor::MessagingErr<JobManagerMsg>>>>,
    /// Set while `pre_start` drives the core: an end then is the start's error.
    startup_outcome: Option<Result<JobStatus, JobError>>,
    starting: bool,
    /// This JobManager's number in the process (see `local_state_root`).
    instance: u64,
    /// The cluster's TaskManagers, when the subtasks run on other processes.
    cluster: Option<Arc<ClusterJobManager>>,
    /// The attempt a cluster is stopping (a restart).
    stopping_attempt: Option<u32>,
    /// The published status (issue 17): updated in the hooks marked "status:".
    status: Arc<LocalJobStatus>,
}

impl JobManagerState {
    fn now_ms(&self) -> i64 {
        self.env.clock().now_ms()
    }

    fn report(&self, status: JobStatus) -> JobResult {
        let job = &self.graph.job;
        let counters = self.core.counters();
        let operators = job
            .stream
            .nodes
            .iter()
            .map(|node| {
                let counters = counters.get(&node.id).copied().unwrap_or_default();
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
            restarts: self.core.restarts(),
            completed_checkpoints: self.core.completed_checkpoints(),
            restored_from: self.core.restored_from().map(str::to_string),
        }
    }

    /// The folder of `location` in the run's storage.
    fn folder(&self, location: &CheckpointLocation) -> CheckpointFolder {
        self.storage
            .folder(location.id, location.savepoint_target.as_deref())
    }

    /// Carries out everything the core asked for, feeding back the answers it waits for,
    /// until it asks for nothing more.
    async fn drive(&mut self, myself: &ActorRef<JobManagerMsg>) {
        while let Some(output) = self.core.poll() {
            self.carry_out(myself, output).await;
        }
    }

    async fn carry_out(
        &mut self,
        myself: &ActorRef<JobManagerMsg>,
        output: Output<AcknowledgedState>,
    ) {
        match output {
            Output::Deploy(deployment) => {
                let attempt = deployment.attempt;
                if let Some(cluster) = self.cluster.clone() {
                    self.deploy_on_cluster(&cluster, deployment).await;
                    return;
                }
                let result = self.deploy(myself, deployment).await;
                let now = self.now_ms();
                self.core.handle_deployed(attempt, result, now);
            }
            Output::StopAttempt { attempt } if self.cluster.is_some() => {
                if let Some(cluster) = &self.cluster {
                    cluster.stop_attempt(attempt).await;
                }
                self.stopping_attempt = Some(attempt);
            }
            Output::StopAttempt { attempt } => {
                if attempt == self.deployed_attempt
                    && let Some(task_manager) = self.task_manager.take()
                {
                    task_manager.stop(Some("restarting".to_string()));
                    // The old attempt must be gone before the next one starts (its sinks
                    // must not write while the new ones clean up); `Redeploy` waits for it.
                    self.stopping_task_manager = Some(task_manager);
                }
                self.subtasks.clear();
            }
            Output::DrainAttempt { attempt } => {
                let job = &self.job_name;
                tracing::debug!(job = %job, attempt, "waiting for the failed attempt to stop");
                let _ = myself.send_message(JobManagerMsg::Redeploy);
            }
            Output::ToSubtask {
                attempt,
                index,
                command,
            } if self.cluster.is_some() => {
                if let Some(cluster) = &self.cluster {
                    let command = match command {
                        SubtaskCommand::TriggerCheckpoint(barrier) => {
                            Command::TriggerCheckpoint(barrier)
                        }
                        SubtaskCommand::FinalCheckpoint { barrier, persist } => {
                            Command::FinalCheckpoint { barrier, persist }
                        }
                        SubtaskCommand::CheckpointComplete { id, is_final } => {
                            Command::CheckpointComplete { id, is_final }
                        }
                        SubtaskCommand::Stop => Command::Stop,
                    };
                    cluster.command(attempt, index, command).await;
                }
            }
            Output::ToSubtask {
                attempt,
                index,
                command,
            } => {
                if attempt == self.deployed_attempt
                    && let Some(subtask) = self.subtasks.get(index)
                {
                    let message = match command {
                        SubtaskCommand::TriggerCheckpoint(barrier) => {
                            SubtaskMsg::TriggerCheckpoint(barrier)
                        }
                        SubtaskCommand::FinalCheckpoint { barrier, persist } => {
                            SubtaskMsg::FinalCheckpoint { barrier, persist }
                        }
                        SubtaskCommand::CheckpointComplete { id, is_final } => {
                            SubtaskMsg::CheckpointComplete { id, is_final }
                        }
                        SubtaskCommand::Stop => SubtaskMsg::Stop,
                    };
                    // A subtask that is gone failed, and its failure reaches the core
                    // through supervision.
                    let _ = subtask.send_message(message);
                }
            }
            Output::Persist {
                attempt,
                index,
                id,
                location,
                file_name,
                state: _,
            } if self.cluster.is_some() => {
                let folder = self.folder(&location);
                let now = self.now_ms();
                if folder.path.is_none() {
                    // Each TaskManager writes its own subtasks' state: only a directory every
                    // node reaches can hold a checkpoint of the whole job.
                    self.core.handle_persisted(
                        attempt,
                        index,
                        id,
                        folder,
                        Err(
                            "a cluster job keeps its checkpoints in a directory every node \
                             reaches: set a checkpoint directory"
                                .to_string(),
                        ),
                        now,
                    );
                } else if let Some(cluster) = &self.cluster
                    && !cluster
                        .persist(attempt, index, id, folder.clone(), file_name)
                        .await
                {
                    self.core.handle_persisted(
                        attempt,
                        index,
                        id,
                        folder,
                        Err(format!("the task manager of subtask {index} is gone")),
                        now,
                    );
                }
            }
            Output::Persist {
                attempt,
                index,
                id,
                location,
                file_name,
                state,
            } => {
                let folder = self.folder(&location);
                let sent = self.writer.send_message(WriterMsg::Persist {
                    attempt,
                    index,
                    id,
                    folder,
                    file_name,
                    snapshots: state,
                });
                if sent.is_err() {
                    let now = self.now_ms();
                    self.core.handle_internal_failure(
                        JobError::Internal("the checkpoint writer stopped".to_string()),
                        now,
                    );
                }
            }
            Output::WriteMetadata { location, metadata } => {
                let folder = self.folder(&location);
                let result = self.storage.complete(&folder, &metadata);
                let now = self.now_ms();
                self.core.handle_metadata_written(location.id, result, now);
            }
            Output::Discard(location) => {
                let folder = self.folder(&location);
                self.storage.discard(&folder);
            }
            Output::DiscardIncomplete(folder) => self.storage.discard_incomplete(&folder),
            Output::Prune { retained } => self.storage.prune(retained),
            Output::Read(read) => {
                let result = match read {
                    StorageRead::CheckpointIds => {
                        StorageReadResult::CheckpointIds(self.storage.checkpoint_ids())
                    }
                    StorageRead::RestorePath(path) => {
                        StorageReadResult::RestorePath(load_restore_path(&path))
                    }
                    StorageRead::LatestRestorable => {
                        let (restored, problems) = self.storage.latest_restorable();
                        StorageReadResult::LatestRestorable { restored, problems }
                    }
                };
                let now = self.now_ms();
                self.core.handle_storage_read(result, now);
            }
            Output::SetTimer(at_ms) => self.set_timer(myself, at_ms),
            Output::SavepointDone { request, result } => {
                let result = result.map(|location| self.folder(&location).path.unwrap_or_default());
                if let Some(reply) = self.savepoint_replies.remove(&request) {
                    let _ = reply.send(result);
                }
            }
            Output::Status(status) => {
                self.publish_status(&status);
                self.log_status(&status);
            }
            Output::Concluded(outcome) => self.conclude(myself, outcome),
        }
    }

    /// Status: the coordinator's events, to the published status.
    fn publish_status(&self, event: &StatusEvent) {
        match event {
            StatusEvent::Deploying { .. } => {}
            StatusEvent::Running { attempt } => self.status.on_running(*attempt),
            StatusEvent::Restarting { attempt, .. } => self.status.on_restarting(*attempt),
            StatusEvent::CheckpointTriggered {
                id,
                savepoint,
                is_final,
            } => self
                .status
                .on_checkpoint_triggered(*id, *savepoint, *is_final),
            StatusEvent::CheckpointCompleted { id } => self.status.on_checkpoint_completed(*id),
            StatusEvent::CheckpointFailed { id, reason } => {
                self.status.on_checkpoint_failed(*id, reason);
            }
        }
    }

    fn log_status(&self, status: &StatusEvent) {
        match status {
            StatusEvent::Deploying {
                attempt: 0,
                restored,
            } => tracing::info!(
                job = %self.job_name,
                job_id = %self.job_id,
                "job '{}' runs as {}{}{}",
                self.job_name,
                self.job_id,
                self.checkpoint_dir
                    .as_ref()
                    .map(|d| format!("; checkpoints in {}", d.display()))
                    .unwrap_or_default(),
                restored
                    .as_ref()
                    .map(|(_, location)| format!("; restored from {location}"))
                    .unwrap_or_default(),
            ),
            StatusEvent::Deploying {
                attempt,
                restored: Some((id, location)),
            } => tracing::warn!(
                job = %self.job_name,
                "restoring attempt {attempt} from checkpoint {} ({location})",
                id.0
            ),
            StatusEvent::Deploying {
                attempt,
                restored: None,
            } => tracing::warn!(
                job = %self.job_name,
                "no completed checkpoint: attempt {attempt} restarts from the beginning"
            ),
            StatusEvent::Running { attempt } => {
                tracing::debug!(job = %self.job_name, attempt, "running");
            }
            StatusEvent::Restarting {
                attempt,
                delay_ms,
                cause,
            } => tracing::warn!(
                job = %self.job_name,
                attempt,
                "{cause}; restarting the job in {delay_ms} ms"
            ),
            StatusEvent::CheckpointTriggered { id, .. } => {
                tracing::trace!(job = %self.job_name, checkpoint = id.0, "checkpoint triggered");
            }
            StatusEvent::CheckpointCompleted { .. } | StatusEvent::CheckpointFailed { .. } => {}
        }
    }

    /// Replaces the armed `Tick` by one at `at_ms`, if any.
    fn set_timer(&mut self, myself: &ActorRef<JobManagerMsg>, at_ms: Option<i64>) {
        if let Some(old) = self.timer.take() {
            old.abort();
        }
        if let Some(at_ms) = at_ms {
            // At least 1 ms: a deadline the clock already passed is handled on the next turn.
            let delay_ms = u64::try_from(at_ms.saturating_sub(self.now_ms()))
                .unwrap_or(0)
                .max(1);
            self.timer =
                Some(myself.send_after(Duration::from_millis(delay_ms), || JobManagerMsg::Tick));
        }
    }

    /// Ends the job with `outcome`: stops every subtask and this actor.
    fn conclude(&mut self, myself: &ActorRef<JobManagerMsg>, outcome: Result<JobStatus, JobError>) {
        for (_, reply) in std::mem::take(&mut self.savepoint_replies) {
            let _ = reply.send(Err(JobError::Checkpoint(
                "the job already ended (finished, cancelled or failed) before the savepoint was taken".to_string(),
            )));
        }
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
        if let Some(task_manager) = &self.task_manager {
            task_manager.stop(Some("job ended".to_string()));
        }
        self.writer.stop(None);
        if self.starting {
            // `pre_start` returns the error; the actor never runs.
            self.startup_outcome = Some(outcome);
            return;
        }
        // Status: the end, before the user hears of it.
        match &outcome {
            Ok(JobStatus::Finished) => self.status.on_ended(crate::rest::JobState::Finished, None),
            Ok(JobStatus::Canceled) => self.status.on_ended(crate::rest::JobState::Canceled, None),
            Err(error) => self
                .status
                .on_ended(crate::rest::JobState::Failed, Some(error.to_string())),
        }
        let outcome = outcome.map(|status| self.report(status));
        if let Some(cluster) = self.cluster.clone() {
            // The TaskManagers hear of the end before the caller does (and maybe exits).
            let status = match &outcome {
                Ok(result) => format!("{:?}", result.status),
                Err(error) => format!("failed: {error}"),
            };
            let result = self.result.take();
            tokio::spawn(async move {
                cluster.job_ended(status).await;
                if let Some(result) = result {
                    let _ = result.send(outcome);
                }
            });
            myself.stop(None);
            return;
        }
        if let Some(result) = self.result.take() {
            let _ = result.send(outcome);
        }
        myself.stop(None);
    }

    /// Deploys `deployment` on the cluster's TaskManagers. A TaskManager lost on the way fails
    /// the attempt as a lost TaskManager does later (a restart, by the restart strategy); an
    /// attempt that cannot be placed at all fails the job.
    async fn deploy_on_cluster(&mut self, cluster: &ClusterJobManager, deployment: Deployment) {
        let Deployment {
            attempt,
            restored_from,
            restore,
        } = deployment;
        self.deployed_attempt = attempt;
        let result = cluster
            .deploy(&self.graph, attempt, self.job_id, restored_from, restore)
            .await;
        let now = self.now_ms();
        match result {
            Ok(()) => self.core.handle_deployed(attempt, Ok(()), now),
            Err(DeployFailure::Retry(reason)) => {
                self.core.handle_deployed(attempt, Ok(()), now);
                self.core.handle_subtask_failed(
                    attempt,
                    0,
                    SubtaskFailure {
                        operator: None,
                        task: None,
                        message: format!("deployment failed: {reason}"),
                        recoverable: true,
                    },
                    now,
                );
            }
            Err(DeployFailure::Fatal(reason)) => {
                self.core
                    .handle_deployed(attempt, Err(JobError::Deploy(reason)), now);
            }
        }
    }

    /// Deploys `deployment`: spawns a TaskManager and its subtasks, wires and starts them.
    async fn deploy(
        &mut self,
        myself: &ActorRef<JobManagerMsg>,
        deployment: Deployment,
    ) -> Result<(), JobError> {
        let Deployment {
            attempt,
            restored_from,
            restore,
        } = deployment;
        let local_root = local_state_root(
            &self.config,
            &self.job_name,
            self.job_id,
            self.instance,
            attempt,
        );
        let (task_manager, _) = Actor::spawn_linked(
            None,
            TaskManagerActor,
            TaskManagerArgs {
                job_manager: myself.clone(),
                attempt,
                env: self.env.clone(),
                storage: Arc::clone(&self.storage),
            },
            myself.get_cell(),
        )
        .await
        .map_err(|e| JobError::Deploy(e.to_string()))?;
        let specs = restore
            .into_iter()
            .enumerate()
            .map(|(index, restore)| SubtaskArgs {
                graph: self.graph.clone(),
                registry: self.registry.clone(),
                index,
                config: self.config.clone(),
                job_name: self.job_name.clone(),
                job_id: self.job_id,
                attempt_number: attempt,
                job_manager: myself.clone(),
                gauges: self.gauges.clone(),
                clock: Arc::clone(self.env.clock()),
                restore,
                restored: Ok(BTreeMap::new()),
                restored_from,
                local_dir: local_root.join(format!("subtask-{index}")),
                faults: self.env.fault_injector().cloned(),
                metrics: Arc::clone(&self.status.metrics().subtasks()[index]),
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
            let wired = subtask.send_message(SubtaskMsg::Wire { outputs, inputs });
            if let Err(error) = wired {
                task_manager.stop(None);
                return Err(JobError::Deploy(error.to_string()));
            }
        }
        for subtask in &subtasks {
            if let Err(error) = subtask.send_message(SubtaskMsg::Start) {
                task_manager.stop(None);
                return Err(JobError::Deploy(error.to_string()));
            }
        }
        self.task_manager = Some(task_manager);
        self.subtasks = subtasks;
        self.deployed_attempt = attempt;
        Ok(())
    }
}

/// The core's settings from the job's configuration (also the test harness's).
pub(super) fn core_config(config: &ExecutionConfig) -> JobCoreConfig {
    let checkpointing = &config.checkpointing;
    JobCoreConfig {
        coordinator: CoordinatorConfig {
            interval_ms: checkpointing.interval_ms,
            timeout_ms: checkpointing.timeout_ms,
            min_pause_ms: checkpointing.min_pause_ms,
            tolerable_failures: checkpointing.tolerable_failures,
        },
        retained: checkpointing.retained,
        allow_fallback_past_commits: checkpointing.allow_fallback_past_commits,
        restart_strategy: config.effective_restart_strategy(),
        restore_path: config.restore.as_ref().map(|r| r.path.clone()),
        allow_non_restored_state: config
            .restore
            .as_ref()
            .is_some_and(|r| r.allow_non_restored_state),
    }
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
        let (writer, _) = Actor::spawn_linked(
            None,
            CheckpointWriter,
            (Arc::clone(&storage), args.env.clone(), myself.clone()),
            myself.get_cell(),
        )
        .await?;
        let core = JobCore::new(
            DeploymentPlan::from_graph(&graph, &args.job_name),
            core_config(&args.config),
        );
        let mut state = JobManagerState {
            graph,
            registry: args.registry,
            config: args.config,
            job_name: args.job_name,
            job_id: args.job_id,
            checkpoint_dir,
            env: args.env,
            core,
            task_manager: None,
            stopping_task_manager: None,
            writer,
            subtasks: Vec::new(),
            deployed_attempt: 0,
            started_at: tokio::time::Instant::now(),
            gauges,
            result: Some(args.result),
            storage,
            savepoint_replies: BTreeMap::new(),
            timer: None,
            startup_outcome: None,
            starting: true,
            instance: JOB_MANAGERS_STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            cluster: args.cluster,
            stopping_attempt: None,
            status: args.status,
        };
        state.status.attach(myself.clone());
        if let Some(cluster) = &state.cluster {
            cluster.set_job_manager(myself.clone());
        }
        // Reads the run's checkpoints and its starting point, and deploys the first attempt.
        let now = state.now_ms();
        state.core.handle_start(now);
        state.drive(&myself).await;
        state.starting = false;
        match state.startup_outcome.take() {
            None => Ok(state),
            Some(Err(error)) => Err(Box::new(error)),
            Some(Ok(status)) => Err(Box::new(JobError::Internal(format!(
                "the job ended ({status:?}) while it was deployed"
            )))),
        }
    }

    async fn handle(
        &self,
        myself: ActorRef<JobManagerMsg>,
        message: JobManagerMsg,
        state: &mut JobManagerState,
    ) -> Result<(), ActorProcessingErr> {
        if state.core.is_ended() {
            return Ok(());
        }
        let now = state.now_ms();
        let core = &mut state.core;
        match message {
            JobManagerMsg::InputFinished { attempt, index } => {
                core.handle_input_finished(attempt, index, now);
            }
            JobManagerMsg::SubtaskFinished {
                attempt,
                index,
                metrics,
            } => core.handle_subtask_finished(attempt, index, metrics, now),
            JobManagerMsg::SubtaskStopped { attempt, index } => {
                core.handle_subtask_stopped(attempt, index, now);
            }
            JobManagerMsg::SubtaskFailed {
                attempt,
                index,
                operator,
                task,
                message,
                recoverable,
            } => {
                // Status: the exception, with the failing subtask.
                if attempt == state.deployed_attempt {
                    let task_name = task.clone().unwrap_or_else(|| format!("subtask {index}"));
                    state.status.on_exception(
                        attempt,
                        &task_name,
                        operator.as_deref().unwrap_or("(unknown)"),
                        &message,
                        recoverable,
                    );
                }
                core.handle_subtask_failed(
                    attempt,
                    index,
                    SubtaskFailure {
                        operator,
                        task,
                        message,
                        recoverable,
                    },
                    now,
                );
            }
            JobManagerMsg::Acknowledge {
                attempt,
                index,
                barrier,
                snapshots,
            } => core.handle_acknowledge(attempt, index, barrier.id, snapshots, now),
            JobManagerMsg::Persisted {
                attempt,
                index,
                id,
                folder,
                result,
            } => {
                // Status: the stored state's size, in all and per operator.
                if let Ok(stored) = &result {
                    state.status.on_state_stored(index, id, stored);
                }
                let result = result.map(|stored| stored.file);
                core.handle_persisted(attempt, index, id, folder, result, now);
            }
            JobManagerMsg::Decline {
                attempt,
                index,
                id,
                reason,
            } => core.handle_decline(attempt, index, id, &reason, now),
            JobManagerMsg::Committed { index, commits } => {
                core.handle_committed(index, commits, now);
            }
            JobManagerMsg::Tick => {
                // The timer fired; the core announces the next one.
                state.timer = None;
                state.core.handle_timeout(now);
            }
            JobManagerMsg::Redeploy => {
                if let (Some(cluster), Some(attempt)) =
                    (state.cluster.clone(), state.stopping_attempt.take())
                {
                    cluster.wait_attempt_stopped(attempt).await;
                }
                if let Some(old) = state.stopping_task_manager.take() {
                    let _ = old
                        .get_cell()
                        .stop_and_wait(None, Some(Duration::from_secs(60)))
                        .await;
                }
                // Queued behind every message the old attempt sent before it stopped.
                myself.send_message(JobManagerMsg::DeployNext)?;
            }
            JobManagerMsg::DeployNext => core.handle_attempt_drained(now),
            JobManagerMsg::TriggerSavepoint {
                target,
                stop,
                reply,
            } => {
                let request = core.handle_savepoint_request(target, stop, now);
                state.savepoint_replies.insert(request, reply);
            }
            JobManagerMsg::Cancel => core.handle_cancel(now),
            JobManagerMsg::TaskManagerLost {
                node,
                incarnation,
                reason,
            } => {
                let failed = state
                    .cluster
                    .as_ref()
                    .and_then(|cluster| cluster.first_subtask_on(&node, incarnation));
                if let Some(index) = failed {
                    state.core.handle_subtask_failed(
                        state.deployed_attempt,
                        index,
                        SubtaskFailure {
                            operator: None,
                            task: None,
                            message: format!("task manager '{node}' was lost: {reason}"),
                            recoverable: true,
                        },
                        now,
                    );
                }
            }
            JobManagerMsg::Sync(done) => {
                let _ = done.send(());
                return Ok(());
            }
        }
        state.drive(&myself).await;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<JobManagerMsg>,
        event: SupervisionEvent,
        state: &mut JobManagerState,
    ) -> Result<(), ActorProcessingErr> {
        if state.core.is_ended() {
            return Ok(());
        }
        let current: Option<ActorId> = state.task_manager.as_ref().map(|t| t.get_id());
        let error = match event {
            SupervisionEvent::ActorFailed(cell, error) if Some(cell.get_id()) == current => {
                JobError::Internal(format!("task manager failed: {error}"))
            }
            SupervisionEvent::ActorFailed(cell, error)
                if cell.get_id() == state.writer.get_id() =>
            {
                JobError::Internal(format!("checkpoint writer failed: {error}"))
            }
            SupervisionEvent::ActorTerminated(cell, _, _) if Some(cell.get_id()) == current => {
                JobError::Internal("task manager stopped unexpectedly".to_string())
            }
            _ => return Ok(()),
        };
        let now = state.now_ms();
        state.core.handle_internal_failure(error, now);
        state.drive(&myself).await;
        Ok(())
    }
}
