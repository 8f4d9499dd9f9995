//! A harness that runs whole small jobs on subtask cores and the real job coordinator core,
//! without actors or tokio.
//!
//! In the spirit of quinn-proto's `Pair`: every subtask of the job is a [`SubtaskCore`] and the
//! coordinator is the JobManager's own [`JobCore`], wired in a plain loop on virtual time.
//! Messages travel in ordered queues, one per (sender, receiver) pair, as actor mailboxes
//! deliver them; which non-empty queue delivers next (or which due timer fires) is chosen by a
//! seeded generator, so one seed is one interleaving and many seeds explore many. Time advances
//! by one millisecond per delivered message and jumps to the next timer (a subtask's or the
//! core's one timer) when nothing else is pending.
//!
//! The harness is `JobCore`'s adapter here, as `runtime/job_manager.rs` is in production: it
//! carries out every [`Output`] in place. Storage is the memory [`CheckpointStorage`] (the
//! acknowledged state is encoded and written by the checkpoint writer's own `persist`, the
//! metadata by `complete`, restarts read `latest_restorable`); a deployment builds the
//! attempt's subtask cores, each reading its share of the restored checkpoint by state handle
//! (`read_share`, as a TaskManager does); `StopAttempt` drops the attempt's cores, their
//! timers and every message between them; `DrainAttempt` is answered at once (nothing of the
//! old attempt is left); status events are recorded. Subtask reports (acknowledgements,
//! declines, commits, end of input, finish, failure) travel to the coordinator through the
//! seeded queues, tagged with their attempt, and commands come back the same way: a command
//! for an attempt that is gone is dropped, as a mailbox of a stopped actor drops it.
//!
//! A savepoint (optionally stop-with-savepoint) can be asked for at a virtual time; it goes to
//! the directory named, as with any store; a restore path of the job's configuration is read
//! from disk as the JobManager reads it (no test here starts from one: `job_core`'s own tests
//! and the integration tests do).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::checkpoint_writer::persist;
use super::job_core::{
    DeploymentPlan, JobCore, Output, StatusEvent, StorageRead, StorageReadResult, SubtaskCommand,
    SubtaskFailure,
};
use super::subtask_core::{SubtaskCore, SubtaskCoreArgs, SubtaskOutput, TimerKind};
use crate::api::{ExecutionConfig, StreamEnv};
use crate::checkpoint::restore_plan::read_share;
use crate::checkpoint::storage::{CheckpointStorage, CheckpointStore, load_restore_path};
use crate::checkpoint::{CheckpointId, JobId};
use crate::error::JobError;
use crate::graph::{ExecutionGraph, JobGraph};
use crate::operator::{
    CommitReport, ErasedBatch, NodeId, OperatorCounters, PendingOperatorSnapshot,
};
use crate::runtime::result::JobStatus;

/// Who sends or receives a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Endpoint {
    Subtask(usize),
    Coordinator,
}

/// A message in flight.
enum Message {
    Data {
        channel: usize,
        batch: ErasedBatch,
    },
    Credit {
        channel: usize,
        credits: u32,
    },
    Poll,
    /// A command of the coordinator for a subtask of `attempt`.
    Command {
        attempt: u32,
        command: SubtaskCommand,
    },
    /// A report of a subtask of `attempt` to the coordinator.
    Report {
        attempt: u32,
        report: Report,
    },
}

/// What a subtask tells the coordinator.
enum Report {
    Ack {
        id: CheckpointId,
        snapshots: Vec<(String, PendingOperatorSnapshot)>,
    },
    Decline {
        id: CheckpointId,
        reason: String,
    },
    Committed(Vec<CommitReport>),
    InputFinished,
    Finished(Vec<(NodeId, OperatorCounters)>),
    Stopped,
    Failed(SubtaskFailure),
}

impl Message {
    fn label(&self) -> String {
        match self {
            Self::Data { channel, batch } => format!("data c{channel} n{}", batch.records()),
            Self::Credit { channel, credits } => format!("credit c{channel} +{credits}"),
            Self::Poll => "poll".to_string(),
            Self::Command { attempt, command } => format!("a{attempt} {command:?}"),
            Self::Report { attempt, report } => {
                let report = match report {
                    Report::Ack { id, .. } => format!("ack {}", id.0),
                    Report::Decline { id, reason } => format!("decline {}: {reason}", id.0),
                    Report::Committed(commits) => format!("committed {}", commits.len()),
                    Report::InputFinished => "input finished".to_string(),
                    Report::Finished(_) => "finished".to_string(),
                    Report::Stopped => "stopped".to_string(),
                    Report::Failed(failure) => format!("failed: {}", failure.message),
                };
                format!("a{attempt} {report}")
            }
        }
    }
}

/// How a harness run ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The coordinator concluded: finished, cancelled, or failed with the job's error.
    Concluded(Result<JobStatus, JobError>),
    /// The step budget ran out first (a livelock or a job that never ends).
    OutOfSteps,
}

impl Outcome {
    /// Whether the job finished.
    pub(crate) fn is_finished(&self) -> bool {
        matches!(self, Self::Concluded(Ok(JobStatus::Finished)))
    }
}

/// A job's subtask cores and its coordinator core, on virtual time.
pub(crate) struct Harness {
    graph: Arc<ExecutionGraph>,
    registry: Arc<super::registry::OperatorRegistry>,
    config: ExecutionConfig,
    core: JobCore<Vec<(String, PendingOperatorSnapshot)>>,
    /// The coordinator core's one timer.
    core_timer: Option<i64>,
    storage: Arc<dyn CheckpointStore>,
    /// The cores of the deployed attempt (empty while none runs).
    cores: Vec<SubtaskCore>,
    /// The attempt `cores` belong to.
    deployed: u32,
    /// Per subtask: job-wide channel numbers of its inputs and outputs, and the peer (subtask,
    /// channel index there) of each.
    inputs: Vec<Vec<(usize, usize, usize)>>,
    outputs: Vec<Vec<(usize, usize, usize)>>,
    queues: BTreeMap<(Endpoint, Endpoint), VecDeque<Message>>,
    timers: BTreeSet<(i64, u64, usize, TimerKind)>,
    timer_seq: u64,
    now_ms: i64,
    rng: u64,
    local_dir: tempfile::TempDir,
    outcome: Option<Outcome>,
    /// A savepoint the user asks for at this virtual time: (time, target directory, stop).
    savepoint_at: Option<(i64, std::path::PathBuf, bool)>,
    // Observations.
    savepoints: Vec<Result<std::path::PathBuf, JobError>>,
    /// Batches sent and not yet given back as credit, per job-wide channel, and the maximum.
    in_flight_batches: Vec<u32>,
    max_in_flight_batches: u32,
    completed: Vec<CheckpointId>,
    statuses: Vec<(i64, StatusEvent)>,
    trace: Vec<String>,
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    crate::state::splitmix64(*state)
}

impl Harness {
    /// Builds the job declared on `env` and starts its coordinator, which deploys the first
    /// attempt. `seed` picks the delivery order; the restart strategy is the job's.
    pub(crate) fn new(env: &StreamEnv, seed: u64) -> Self {
        let (stream, registry, config, _) = env.take_graph().expect("a valid job");
        let registry = Arc::new(registry);
        let job = JobGraph::build(stream, &config).expect("a valid job graph");
        let graph = Arc::new(ExecutionGraph::build(job));
        let inputs = graph
            .subtasks
            .iter()
            .map(|plan| {
                plan.inputs
                    .iter()
                    .map(|c| (c.channel, c.producer, c.producer_output))
                    .collect()
            })
            .collect();
        let outputs = graph
            .subtasks
            .iter()
            .map(|plan| {
                plan.outputs
                    .iter()
                    .map(|c| (c.channel, c.consumer, c.consumer_input))
                    .collect()
            })
            .collect();
        let core = JobCore::new(
            DeploymentPlan::from_graph(&graph, "harness"),
            super::job_manager::core_config(&config),
        );
        let storage: Arc<dyn CheckpointStore> = Arc::new(CheckpointStorage::memory());
        let mut harness = Self {
            in_flight_batches: vec![0; graph.channel_count],
            graph,
            registry,
            config,
            core,
            core_timer: None,
            storage,
            cores: Vec::new(),
            deployed: 0,
            inputs,
            outputs,
            queues: BTreeMap::new(),
            timers: BTreeSet::new(),
            timer_seq: 0,
            now_ms: 0,
            rng: seed,
            local_dir: tempfile::tempdir().expect("a temporary directory"),
            outcome: None,
            savepoint_at: None,
            savepoints: Vec::new(),
            max_in_flight_batches: 0,
            completed: Vec::new(),
            statuses: Vec::new(),
            trace: Vec::new(),
        };
        harness.core.handle_start(0);
        harness.drive_core();
        harness
    }

    /// The trace of delivered messages, one line each: equal for equal seeds.
    pub(crate) fn trace(&self) -> &[String] {
        &self.trace
    }

    /// The checkpoints that completed, in order (the final one included).
    pub(crate) fn completed(&self) -> &[CheckpointId] {
        &self.completed
    }

    /// The coordinator's status events, with the virtual time of each.
    pub(crate) fn statuses(&self) -> &[(i64, StatusEvent)] {
        &self.statuses
    }

    /// Asks for a savepoint below `target` once virtual time reaches `at_ms` (with `stop`, the
    /// job stops once it completed).
    pub(crate) fn request_savepoint(&mut self, at_ms: i64, target: std::path::PathBuf, stop: bool) {
        self.savepoint_at = Some((at_ms, target, stop));
    }

    /// The savepoint requests that ended: each savepoint's folder, or why it failed.
    pub(crate) fn savepoints(&self) -> &[Result<std::path::PathBuf, JobError>] {
        &self.savepoints
    }

    /// The run's checkpoint storage.
    pub(crate) fn storage(&self) -> &dyn CheckpointStore {
        self.storage.as_ref()
    }

    /// The most batches ever sent on one channel and not yet credited back.
    pub(crate) fn max_in_flight_batches(&self) -> u32 {
        self.max_in_flight_batches
    }

    /// The attempt number deployed last (0 before any restart).
    pub(crate) fn attempt(&self) -> u32 {
        self.deployed
    }

    /// Runs until the job ends or `max_steps` messages were delivered.
    pub(crate) fn run(&mut self, max_steps: u64) -> Outcome {
        for _ in 0..max_steps {
            if let Some(outcome) = self.outcome.take() {
                return outcome;
            }
            if !self.step() {
                break;
            }
        }
        self.outcome.take().unwrap_or(Outcome::OutOfSteps)
    }

    /// Delivers one message or fires one timer; false when nothing can ever happen again.
    fn step(&mut self) -> bool {
        if self
            .savepoint_at
            .as_ref()
            .is_some_and(|(at, ..)| *at <= self.now_ms)
            && let Some((_, target, stop)) = self.savepoint_at.take()
        {
            self.trace.push(format!(
                "{} savepoint requested (stop: {stop})",
                self.now_ms
            ));
            self.core
                .handle_savepoint_request(target, stop, self.now_ms);
            self.drive_core();
        }
        let ready: Vec<(Endpoint, Endpoint)> = self
            .queues
            .iter()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(key, _)| *key)
            .collect();
        let subtask_timer_due = self
            .timers
            .first()
            .is_some_and(|(at, ..)| *at <= self.now_ms);
        let core_timer_due = self.core_timer.is_some_and(|at| at <= self.now_ms);
        let choices = ready.len() + usize::from(subtask_timer_due) + usize::from(core_timer_due);
        if choices == 0 {
            // Idle: jump to the next timer.
            let next = self
                .timers
                .first()
                .map(|(at, ..)| *at)
                .into_iter()
                .chain(self.core_timer)
                .chain(self.savepoint_at.as_ref().map(|(at, ..)| *at))
                .min();
            return match next {
                Some(at) => {
                    self.now_ms = self.now_ms.max(at);
                    true
                }
                None => false,
            };
        }
        let pick = usize::try_from(splitmix64(&mut self.rng) % choices as u64).unwrap_or(0);
        self.now_ms += 1;
        if pick >= ready.len() {
            if subtask_timer_due && pick == ready.len() {
                let (_, _, index, kind) = self.timers.pop_first().expect("a due timer");
                self.trace
                    .push(format!("{} -> s{index}: timer {kind:?}", self.now_ms));
                self.cores[index].handle_timer(self.now_ms, kind);
                self.collect(index);
            } else {
                self.trace
                    .push(format!("{} -> coordinator: timer", self.now_ms));
                self.core_timer = None;
                self.core.handle_timeout(self.now_ms);
                self.drive_core();
            }
            return true;
        }
        let (from, to) = ready[pick];
        let message = self
            .queues
            .get_mut(&(from, to))
            .and_then(VecDeque::pop_front)
            .expect("a non-empty queue");
        self.trace.push(format!(
            "{} {from:?} -> {to:?}: {}",
            self.now_ms,
            message.label()
        ));
        match (from, to, message) {
            (
                Endpoint::Subtask(index),
                Endpoint::Coordinator,
                Message::Report { attempt, report },
            ) => {
                self.report(attempt, index, report);
            }
            (_, Endpoint::Subtask(index), message) => self.deliver_to_subtask(index, message),
            (from, to, message) => unreachable!("{from:?} -> {to:?}: {}", message.label()),
        }
        true
    }

    fn deliver_to_subtask(&mut self, index: usize, message: Message) {
        let now = self.now_ms;
        let Some(core) = self.cores.get_mut(index) else {
            return;
        };
        match message {
            Message::Data { channel, batch } => core.handle_batch(now, channel, batch),
            Message::Credit { channel, credits } => core.handle_credit(now, channel, credits),
            Message::Poll => core.handle_poll(now),
            Message::Command { attempt, command } => {
                if attempt != self.deployed {
                    // The attempt is gone: its mailbox drops the command.
                    return;
                }
                match command {
                    SubtaskCommand::TriggerCheckpoint(barrier) => {
                        core.handle_trigger_checkpoint(now, barrier);
                    }
                    SubtaskCommand::FinalCheckpoint { barrier, persist } => {
                        core.handle_final_checkpoint(now, barrier, persist);
                    }
                    SubtaskCommand::CheckpointComplete { id, is_final } => {
                        core.handle_checkpoint_complete(now, id, is_final);
                    }
                    SubtaskCommand::Stop => core.handle_stop(now),
                }
            }
            Message::Report { .. } => unreachable!("a subtask does not receive reports"),
        }
        self.collect(index);
    }

    /// Hands a subtask's report to the coordinator core.
    fn report(&mut self, attempt: u32, index: usize, report: Report) {
        let now = self.now_ms;
        let core = &mut self.core;
        match report {
            Report::Ack { id, snapshots } => {
                core.handle_acknowledge(attempt, index, id, snapshots, now);
            }
            Report::Decline { id, reason } => core.handle_decline(attempt, index, id, &reason, now),
            Report::Committed(commits) => core.handle_committed(index, commits, now),
            Report::InputFinished => core.handle_input_finished(attempt, index, now),
            Report::Finished(metrics) => core.handle_subtask_finished(attempt, index, metrics, now),
            Report::Stopped => core.handle_subtask_stopped(attempt, index, now),
            Report::Failed(failure) => core.handle_subtask_failed(attempt, index, failure, now),
        }
        self.drive_core();
    }

    /// Carries out everything the coordinator core asked for, as the JobManager does, until it
    /// asks for nothing more.
    fn drive_core(&mut self) {
        while let Some(output) = self.core.poll() {
            let now = self.now_ms;
            match output {
                Output::Deploy(deployment) => {
                    let attempt = deployment.attempt;
                    self.deploy(attempt, deployment.restored_from, deployment.restore);
                    self.core.handle_deployed(attempt, Ok(()), now);
                }
                Output::StopAttempt { attempt } => {
                    if attempt == self.deployed {
                        self.stop_attempt();
                    }
                }
                // The stopped attempt left nothing behind (`stop_attempt`).
                Output::DrainAttempt { .. } => self.core.handle_attempt_drained(now),
                Output::ToSubtask {
                    attempt,
                    index,
                    command,
                } => self
                    .queues
                    .entry((Endpoint::Coordinator, Endpoint::Subtask(index)))
                    .or_default()
                    .push_back(Message::Command { attempt, command }),
                Output::Persist {
                    attempt,
                    index,
                    id,
                    location,
                    file_name,
                    state,
                } => {
                    let folder = self
                        .storage
                        .folder(location.id, location.savepoint_target.as_deref());
                    let result = persist(self.storage.as_ref(), &folder, &file_name, state)
                        .map(|stored| stored.file);
                    self.core
                        .handle_persisted(attempt, index, id, folder, result, now);
                }
                Output::WriteMetadata { location, metadata } => {
                    let folder = self
                        .storage
                        .folder(location.id, location.savepoint_target.as_deref());
                    let result = self.storage.complete(&folder, &metadata);
                    self.core.handle_metadata_written(location.id, result, now);
                }
                Output::Discard(location) => {
                    let folder = self
                        .storage
                        .folder(location.id, location.savepoint_target.as_deref());
                    self.storage.discard(&folder);
                }
                Output::DiscardIncomplete(folder) => self.storage.discard_incomplete(&folder),
                Output::Prune { retained } => self.storage.prune(retained),
                Output::Read(read) => {
                    let result = match read {
                        StorageRead::CheckpointIds => {
                            StorageReadResult::CheckpointIds(self.storage.checkpoint_ids())
                        }
                        StorageRead::LatestRestorable => {
                            let (restored, problems) = self.storage.latest_restorable();
                            StorageReadResult::LatestRestorable { restored, problems }
                        }
                        StorageRead::RestorePath(path) => {
                            StorageReadResult::RestorePath(load_restore_path(&path))
                        }
                    };
                    self.core.handle_storage_read(result, now);
                }
                Output::SetTimer(at_ms) => self.core_timer = at_ms,
                Output::SavepointDone { request, result } => {
                    self.trace
                        .push(format!("{now} savepoint {}: {result:?}", request.0));
                    let result = result.map(|location| {
                        self.storage
                            .folder(location.id, location.savepoint_target.as_deref())
                            .path
                            .unwrap_or_default()
                    });
                    self.savepoints.push(result);
                }
                Output::Status(status) => {
                    if let StatusEvent::CheckpointCompleted { id } = &status {
                        self.completed.push(*id);
                    }
                    self.trace.push(format!("{now} status {status:?}"));
                    self.statuses.push((now, status));
                }
                Output::Concluded(outcome) => {
                    self.stop_attempt();
                    self.core_timer = None;
                    self.outcome = Some(Outcome::Concluded(outcome));
                }
            }
        }
    }

    /// Drops every subtask of the running attempt, its timers and every message between its
    /// subtasks or to them (a stopped actor's mailbox is gone). Reports already sent to the
    /// coordinator stay: the core ignores those of an earlier attempt.
    fn stop_attempt(&mut self) {
        self.trace
            .push(format!("{} stop attempt {}", self.now_ms, self.deployed));
        self.cores.clear();
        self.timers.clear();
        self.queues
            .retain(|(_, to), _| *to == Endpoint::Coordinator);
        self.in_flight_batches.iter_mut().for_each(|n| *n = 0);
    }

    /// Builds and starts every subtask core of `attempt`, each restored from its share of the
    /// checkpoint by state handle, as a TaskManager does.
    fn deploy(
        &mut self,
        attempt: u32,
        restored_from: Option<CheckpointId>,
        restore: Vec<Option<crate::checkpoint::restore_plan::SubtaskRestorePlan>>,
    ) {
        self.trace.push(format!(
            "{} deploy attempt {attempt} from {restored_from:?}",
            self.now_ms
        ));
        self.deployed = attempt;
        let mut failures = Vec::new();
        self.cores = restore
            .into_iter()
            .enumerate()
            .map(|(index, plan)| {
                let restored = match plan {
                    Some(plan) => {
                        read_share(self.storage.as_ref(), &plan).unwrap_or_else(|error| {
                            failures.push((index, error.to_string()));
                            BTreeMap::new()
                        })
                    }
                    None => BTreeMap::new(),
                };
                SubtaskCore::build(SubtaskCoreArgs {
                    graph: Arc::clone(&self.graph),
                    registry: Arc::clone(&self.registry),
                    index,
                    config: self.config.clone(),
                    job_name: "harness".to_string(),
                    attempt_number: attempt,
                    job_id: JobId::from_seed(0xE1C4),
                    restored,
                    restored_from,
                    local_dir: self
                        .local_dir
                        .path()
                        .join(format!("attempt-{attempt}/subtask-{index}")),
                    metrics: None,
                })
                .expect("the chain assembles")
            })
            .collect();
        for index in 0..self.cores.len() {
            self.cores[index].handle_start(self.now_ms);
        }
        for (index, error) in failures {
            self.cores[index].handle_restore_failure(error);
        }
        for index in 0..self.cores.len() {
            self.collect(index);
        }
    }

    /// Carries out what core `index` produced.
    fn collect(&mut self, index: usize) {
        let me = Endpoint::Subtask(index);
        let attempt = self.deployed;
        while let Some(output) = self.cores[index].poll_output() {
            let report = |report| (Endpoint::Coordinator, Message::Report { attempt, report });
            let (to, message) = match output {
                SubtaskOutput::Transmit { output, batch } => {
                    let (channel, consumer, consumer_input) = self.outputs[index][output];
                    self.in_flight_batches[channel] += 1;
                    self.max_in_flight_batches = self
                        .max_in_flight_batches
                        .max(self.in_flight_batches[channel]);
                    (
                        Endpoint::Subtask(consumer),
                        Message::Data {
                            channel: consumer_input,
                            batch,
                        },
                    )
                }
                SubtaskOutput::ReturnCredit { input, credits, .. } => {
                    let (channel, producer, producer_output) = self.inputs[index][input];
                    self.in_flight_batches[channel] =
                        self.in_flight_batches[channel].saturating_sub(credits);
                    (
                        Endpoint::Subtask(producer),
                        Message::Credit {
                            channel: producer_output,
                            credits,
                        },
                    )
                }
                SubtaskOutput::Acknowledge { barrier, snapshots } => report(Report::Ack {
                    id: barrier.id,
                    snapshots,
                }),
                SubtaskOutput::Decline { id, reason } => report(Report::Decline { id, reason }),
                SubtaskOutput::Committed(commits) => report(Report::Committed(commits)),
                SubtaskOutput::ArmTimer { kind, at_ms } => {
                    self.timer_seq += 1;
                    self.timers.insert((at_ms, self.timer_seq, index, kind));
                    continue;
                }
                SubtaskOutput::PollSoon => (me, Message::Poll),
                SubtaskOutput::InputFinished => report(Report::InputFinished),
                SubtaskOutput::Finished { metrics } => report(Report::Finished(metrics)),
                SubtaskOutput::Stopped => report(Report::Stopped),
                SubtaskOutput::Failed(error) => report(Report::Failed(SubtaskFailure {
                    operator: Some(error.operator),
                    task: Some(error.task),
                    message: error.message,
                    recoverable: error.recoverable,
                })),
            };
            self.queues.entry((me, to)).or_default().push_back(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use super::{Harness, Outcome, StatusEvent};
    use crate::api::{Operator, SinkContext, TwoPhaseCommitSink, Unkeyed};
    use crate::checkpoint::CheckpointKind;
    use crate::checkpoint::RestartStrategy;
    use crate::error::JobError;
    use crate::operator::window::{TimeDomain, WindowAssigner};
    use crate::prelude::*;
    use crate::runtime::result::JobStatus;

    const SEEDS: u64 = 24;
    const STEPS: u64 = 2_000_000;

    /// Committed rows per transaction name.
    type Table = Arc<Mutex<BTreeMap<String, Vec<(u64, u64)>>>>;

    /// An exactly-once sink into a shared table: a transaction's rows become visible when it
    /// commits, under its unique name, so a repeated commit stores the same rows again.
    #[derive(Clone, Default)]
    struct TableSink {
        table: Table,
        prefix: String,
        next: u64,
    }

    impl Operator for TableSink {}
    impl Unkeyed for TableSink {}

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct Staged {
        name: String,
        rows: Vec<(u64, u64)>,
    }

    impl TwoPhaseCommitSink<(u64, u64)> for TableSink {
        type Txn = Staged;

        fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
            self.prefix = format!("{}-{}", ctx.subtask_index, ctx.attempt_number);
            Ok(())
        }
        fn begin_transaction(&mut self) -> Result<Staged, FunctionError> {
            self.next += 1;
            Ok(Staged {
                name: format!("{}-{}", self.prefix, self.next),
                rows: Vec::new(),
            })
        }
        fn invoke(
            &mut self,
            txn: &mut Staged,
            value: (u64, u64),
            _ctx: &SinkContext,
        ) -> Result<(), FunctionError> {
            txn.rows.push(value);
            Ok(())
        }
        fn pre_commit(&mut self, _txn: &mut Staged) -> Result<(), FunctionError> {
            Ok(())
        }
        fn commit(&mut self, txn: Staged) -> Result<(), FunctionError> {
            if !txn.rows.is_empty() {
                self.table
                    .lock()
                    .map_err(|_| "table poisoned")?
                    .insert(txn.name, txn.rows);
            }
            Ok(())
        }
        fn abort(&mut self, _txn: Staged) -> Result<(), FunctionError> {
            Ok(())
        }
    }

    /// Panics at the `at`-th record it sees over all attempts (once).
    fn failing_at(at: u64) -> impl Fn(u64) -> u64 + Clone + Send + 'static {
        let seen = Arc::new(AtomicU64::new(0));
        move |value| {
            if seen.fetch_add(1, Ordering::SeqCst) + 1 == at {
                panic!("injected failure at record {at}");
            }
            value
        }
    }

    /// A harness whose job survives `restarts` failures, restarting at once.
    fn harness_with_restarts(env: &StreamEnv, seed: u64, restarts: u32) -> Harness {
        env.set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: restarts,
            delay_ms: 0,
        });
        Harness::new(env, seed)
    }

    fn small_batches(env: &StreamEnv) {
        env.configure(|c| {
            c.batch_records_max = 4;
            c.credits_per_channel = 2;
            c.source_poll_records_max = 8;
        });
    }

    /// Per key `value % 5`: the running sum of the values `1..=records`.
    fn rolling_sums(env: &StreamEnv, records: u64, fail_at: Option<u64>) -> TableSink {
        let sink = TableSink::default();
        env.from_generator(records, |i| i + 1)
            .map(fail_at.map_or_else(|| failing_at(0), failing_at))
            .map(|v: u64| (v % 5, v))
            .key_by(|pair: &(u64, u64)| pair.0)
            .reduce(|a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1))
            .add_two_phase_sink(sink.clone());
        sink
    }

    /// Checks exactly-once rolling sums: per key one output per input record (nothing lost,
    /// nothing twice), the largest being the key's total.
    fn check_rolling_sums(sink: &TableSink, records: u64, seed: u64) {
        let mut per_key: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (key, sum) in sink.table.lock().unwrap().values().flatten() {
            per_key.entry(*key).or_default().push(*sum);
        }
        for key in 0..5 {
            let values: Vec<u64> = (1..=records).filter(|v| v % 5 == key).collect();
            let outputs = per_key.remove(&key).unwrap_or_default();
            assert_eq!(
                outputs.len(),
                values.len(),
                "seed {seed}: key {key} has {} outputs for {} records",
                outputs.len(),
                values.len()
            );
            assert_eq!(
                outputs.iter().max().copied(),
                Some(values.iter().sum()),
                "seed {seed}: key {key}'s total"
            );
        }
    }

    #[test]
    fn a_keyed_job_commits_every_record_once_under_many_interleavings() {
        for parallelism in [1, 2, 4] {
            for seed in 0..SEEDS {
                let env = StreamEnv::new();
                env.set_parallelism(parallelism);
                env.enable_checkpointing(7);
                small_batches(&env);
                let sink = rolling_sums(&env, 300, None);
                let mut harness = harness_with_restarts(&env, seed, 0);
                let outcome = harness.run(STEPS);
                assert!(outcome.is_finished(), "seed {seed}: {outcome:?}");
                check_rolling_sums(&sink, 300, seed);
                assert!(
                    harness.completed().len() > 1,
                    "seed {seed}: periodic checkpoints completed before the final one"
                );
            }
        }
    }

    /// A failure in the middle restarts every subtask from the newest completed checkpoint;
    /// the aligned barriers made that checkpoint consistent, so the committed output is still
    /// every record exactly once, whatever the interleaving.
    #[test]
    fn a_failure_restarts_from_the_last_checkpoint_exactly_once() {
        for parallelism in [2, 4] {
            for seed in 0..SEEDS {
                let env = StreamEnv::new();
                env.set_parallelism(parallelism);
                env.enable_checkpointing(5);
                small_batches(&env);
                let sink = rolling_sums(&env, 400, Some(250));
                let mut harness = harness_with_restarts(&env, seed, 1);
                let outcome = harness.run(STEPS);
                assert!(outcome.is_finished(), "seed {seed}: {outcome:?}");
                assert_eq!(harness.attempt(), 1, "seed {seed}: one restart");
                check_rolling_sums(&sink, 400, seed);
            }
        }
    }

    #[test]
    fn without_a_restart_left_the_failure_names_the_operator() {
        let env = StreamEnv::new();
        env.set_parallelism(2);
        small_batches(&env);
        let _sink = rolling_sums(&env, 100, Some(30));
        let outcome = harness_with_restarts(&env, 7, 0).run(STEPS);
        let Outcome::Concluded(Err(JobError::TaskFailed {
            operator, message, ..
        })) = outcome
        else {
            panic!("expected a failure, got {outcome:?}");
        };
        assert_eq!(operator, "Map");
        assert!(
            message.contains("injected failure at record 30"),
            "{message}"
        );
    }

    #[test]
    fn credits_bound_the_batches_in_flight_on_every_channel() {
        for seed in 0..SEEDS {
            let env = StreamEnv::new();
            env.set_parallelism(2);
            small_batches(&env);
            let _sink = rolling_sums(&env, 500, None);
            let mut harness = harness_with_restarts(&env, seed, 0);
            assert!(harness.run(STEPS).is_finished());
            let max = harness.max_in_flight_batches();
            assert!(max <= 2, "seed {seed}: {max} batches in flight, 2 credits");
            assert!(max > 0);
        }
    }

    /// Event-time windows fire from the minimum watermark over all input channels: the sums
    /// per key and window equal a sequential computation, whatever the interleaving.
    #[test]
    fn watermarks_fire_every_window_once_with_its_whole_content() {
        let records = 400u64;
        let mut expected: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        for v in 1..=records {
            *expected.entry((v % 3, v / 20)).or_default() += v;
        }
        let mut expected: Vec<(u64, u64)> = expected
            .into_iter()
            .map(|((key, _), sum)| (key, sum))
            .collect();
        expected.sort_unstable();
        for parallelism in [1, 2, 4] {
            for seed in 0..SEEDS {
                let env = StreamEnv::new();
                env.set_parallelism(parallelism);
                small_batches(&env);
                let sums = env
                    .from_generator(records, |i| i + 1)
                    .assign_timestamps_and_watermarks(
                        WatermarkStrategy::for_bounded_out_of_orderness(0)
                            .with_timestamp_assigner(|v: &u64, _| i64::try_from(*v).unwrap()),
                    )
                    .map(|v: u64| (v % 3, v))
                    .key_by(|pair: &(u64, u64)| pair.0)
                    .window(WindowAssigner::tumbling(TimeDomain::EventTime, 20, 0).unwrap())
                    .reduce(|a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1))
                    .collect_sink();
                let outcome = harness_with_restarts(&env, seed, 0).run(STEPS);
                assert!(outcome.is_finished(), "seed {seed}: {outcome:?}");
                let mut got = sums.take();
                got.sort_unstable();
                assert_eq!(got, expected, "parallelism {parallelism}, seed {seed}");
            }
        }
    }

    /// The restart strategy's verdict, from the real coordinator: a record that fails every
    /// attempt exhausts `FixedDelay`'s attempts, each restart waits its delay on virtual time,
    /// and the job then fails with the operator's error.
    #[test]
    fn fixed_delay_fails_the_job_once_its_attempts_are_spent() {
        for seed in 0..8 {
            let env = StreamEnv::new();
            env.set_parallelism(2);
            env.enable_checkpointing(5);
            small_batches(&env);
            env.set_restart_strategy(RestartStrategy::FixedDelay {
                attempts: 2,
                delay_ms: 40,
            });
            let _sink = TableSink::default();
            env.from_generator(200, |i| i + 1)
                .map(|v: u64| {
                    assert!(v != 150, "poison record {v}");
                    (v % 5, v)
                })
                .key_by(|pair: &(u64, u64)| pair.0)
                .reduce(|a: (u64, u64), b: (u64, u64)| (a.0, a.1 + b.1))
                .add_two_phase_sink(_sink.clone());
            let mut harness = Harness::new(&env, seed);
            let outcome = harness.run(STEPS);
            let Outcome::Concluded(Err(JobError::TaskFailed {
                operator, message, ..
            })) = &outcome
            else {
                panic!("seed {seed}: expected the job to fail, got {outcome:?}");
            };
            assert_eq!(operator, "Map", "seed {seed}");
            assert!(
                message.contains("poison record 150"),
                "seed {seed}: {message}"
            );
            assert_eq!(
                harness.attempt(),
                2,
                "seed {seed}: two restarts, then no more"
            );
            let restarts: Vec<(i64, u64)> = harness
                .statuses()
                .iter()
                .filter_map(|(at, status)| match status {
                    StatusEvent::Restarting { delay_ms, .. } => Some((*at, *delay_ms)),
                    _ => None,
                })
                .collect();
            assert_eq!(restarts.len(), 2, "seed {seed}: {restarts:?}");
            for (failed_at, delay_ms) in restarts {
                assert_eq!(delay_ms, 40);
                let redeployed_at = harness
                    .statuses()
                    .iter()
                    .find_map(|(at, status)| {
                        (matches!(status, StatusEvent::Deploying { .. }) && *at > failed_at)
                            .then_some(*at)
                    })
                    .expect("a redeployment after each restart");
                assert!(
                    redeployed_at >= failed_at + 40,
                    "seed {seed}: redeployed at {redeployed_at}, failed at {failed_at}"
                );
            }
        }
    }

    /// At the end of input the coordinator takes the final checkpoint: with periodic
    /// checkpoints it is stored (the newest in storage) and commits the rest of the output;
    /// without them it stores nothing and still commits everything.
    #[test]
    fn the_final_checkpoint_commits_all_output() {
        for (interval, seed) in [(Some(6), 1), (Some(6), 2), (None, 3), (None, 4)] {
            let env = StreamEnv::new();
            env.set_parallelism(2);
            if let Some(ms) = interval {
                env.enable_checkpointing(ms);
            }
            small_batches(&env);
            let sink = rolling_sums(&env, 150, None);
            let mut harness = Harness::new(&env, seed);
            let outcome = harness.run(STEPS);
            assert!(outcome.is_finished(), "seed {seed}: {outcome:?}");
            check_rolling_sums(&sink, 150, seed);
            let final_id = harness
                .statuses()
                .iter()
                .find_map(|(_, status)| match status {
                    StatusEvent::CheckpointTriggered {
                        id, is_final: true, ..
                    } => Some(*id),
                    _ => None,
                })
                .expect("a final checkpoint");
            assert_eq!(harness.completed().last(), Some(&final_id), "seed {seed}");
            let stored = harness.storage().checkpoint_ids();
            match interval {
                Some(_) => assert_eq!(stored.last(), Some(&final_id), "seed {seed}: {stored:?}"),
                None => assert!(stored.is_empty(), "seed {seed}: {stored:?}"),
            }
        }
    }

    /// Stop-with-savepoint through the coordinator: the savepoint lands in the directory
    /// named, the job ends cancelled before its input ran out, and what the sinks committed is
    /// one running sum per record (none twice, none foreign).
    #[test]
    fn stop_with_savepoint_commits_each_record_at_most_once() {
        for seed in 0..6 {
            let env = StreamEnv::new();
            env.set_parallelism(2);
            env.enable_checkpointing(1_000_000);
            small_batches(&env);
            let records = 3_000;
            let sink = rolling_sums(&env, records, None);
            let target = tempfile::tempdir().expect("a temporary directory");
            let mut harness = Harness::new(&env, seed);
            harness.request_savepoint(60, target.path().to_path_buf(), true);
            let outcome = harness.run(STEPS);
            assert!(
                matches!(outcome, Outcome::Concluded(Ok(JobStatus::Canceled))),
                "seed {seed}: {outcome:?}"
            );
            let [Ok(folder)] = harness.savepoints() else {
                panic!("seed {seed}: {:?}", harness.savepoints());
            };
            assert!(folder.starts_with(target.path()), "seed {seed}: {folder:?}");
            let (restored, problems) =
                crate::checkpoint::storage::load_restore_path(folder).expect("a savepoint");
            assert!(problems.is_empty());
            assert_eq!(restored.metadata.kind, CheckpointKind::Savepoint);
            let mut per_key: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            for (key, sum) in sink.table.lock().unwrap().values().flatten() {
                per_key.entry(*key).or_default().push(*sum);
            }
            let committed: usize = per_key.values().map(Vec::len).sum();
            assert!(
                0 < committed && committed < records as usize,
                "seed {seed}: {committed} outputs: stopped in the middle"
            );
            for (key, mut sums) in per_key {
                // The sources' shares interleave, so which records came before the cut is
                // not known; but consecutive running sums differ by one record each, of this
                // key, every record at most once.
                sums.sort_unstable();
                let mut seen = std::collections::BTreeSet::new();
                let mut previous = 0;
                for sum in sums {
                    let record = sum - previous;
                    previous = sum;
                    assert!(
                        record % 5 == key && (1..=records).contains(&record),
                        "seed {seed}: key {key}: a step of {record}"
                    );
                    assert!(seen.insert(record), "seed {seed}: record {record} twice");
                }
            }
        }
    }

    #[test]
    fn one_seed_is_one_interleaving() {
        let trace = |seed| {
            let env = StreamEnv::new();
            env.set_parallelism(2);
            env.enable_checkpointing(5);
            small_batches(&env);
            let _sink = rolling_sums(&env, 200, Some(120));
            let mut harness = harness_with_restarts(&env, seed, 1);
            assert!(harness.run(STEPS).is_finished());
            harness.trace().to_vec()
        };
        assert_eq!(trace(3), trace(3));
        assert_ne!(trace(3), trace(4), "another seed, another interleaving");
    }
}
