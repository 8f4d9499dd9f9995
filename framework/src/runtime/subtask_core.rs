//! The subtask core: one operator chain instance as a sans-IO state machine.
//!
//! In the manner of quinn-proto's `Connection`: [`SubtaskCore`] owns the chain, its input gate
//! (credits), watermark tracker, barrier aligner (or tracker) and output writers, and all of a
//! subtask's protocol logic: opening, driving input under flow control, polling a source,
//! triggering, taking and acknowledging checkpoints, the final checkpoint, finishing, stopping
//! and failing. It never sends a message, reads a clock, arms a timer or spawns anything.
//! Inputs go in through the `handle_*` methods, each with the current processing time; what the
//! subtask must do in the world comes out of [`SubtaskCore::poll_output`] as [`SubtaskOutput`]s.
//!
//! The subtask actor (`runtime/subtask.rs`) is a thin adapter around it: it calls `handle_*` for
//! each mailbox message, then drains `poll_output` and carries each output out (a batch to a
//! peer's mailbox, a credit back, an acknowledgement to the JobManager, a timer on the clock).
//! The test harness (`runtime/harness.rs`) drives the same core in a plain loop on virtual time.
//!
//! ## Call order
//!
//! 1. [`SubtaskCore::build`] assembles the chain; nothing runs yet.
//! 2. [`SubtaskCore::handle_start`] opens the chain, grants the initial credits upstream
//!    ([`SubtaskOutput::ReturnCredit`]) and, for a source, asks to be polled
//!    ([`SubtaskOutput::PollSoon`]).
//! 3. While running, in any order: [`handle_batch`](SubtaskCore::handle_batch),
//!    [`handle_credit`](SubtaskCore::handle_credit), [`handle_poll`](SubtaskCore::handle_poll),
//!    [`handle_timer`](SubtaskCore::handle_timer) (for a [`SubtaskOutput::ArmTimer`] that came
//!    due), [`handle_trigger_checkpoint`](SubtaskCore::handle_trigger_checkpoint),
//!    [`handle_checkpoint_complete`](SubtaskCore::handle_checkpoint_complete),
//!    [`handle_peer_gone`](SubtaskCore::handle_peer_gone) (a transmit could not be delivered).
//!    Drain [`poll_output`](SubtaskCore::poll_output) after every call, in order.
//! 4. When its input has ended and everything was delivered, the core emits
//!    [`SubtaskOutput::InputFinished`]; the coordinator answers with
//!    [`handle_final_checkpoint`](SubtaskCore::handle_final_checkpoint) and, once that completed,
//!    [`handle_checkpoint_complete`](SubtaskCore::handle_checkpoint_complete) with `is_final`:
//!    the core closes the chain and emits [`SubtaskOutput::Finished`] with its metrics.
//!    [`handle_stop`](SubtaskCore::handle_stop) closes at once ([`SubtaskOutput::Stopped`]).
//! 5. After [`SubtaskOutput::Failed`], `Finished` or `Stopped` the core is done: further inputs
//!    are ignored.
//!
//! ## Checkpoints
//!
//! The JobManager triggers every checkpoint at every subtask. A running source snapshots and
//! injects the barrier. A subtask that finished its input snapshots its final state at once: no
//! barrier can reach it any more, and its outputs already carry the end of input, which
//! downstream barrier handlers count as aligned. Any other subtask takes the checkpoint when the
//! barrier has arrived on all its live input channels or, if its last input ends first (every
//! producer finished before the trigger reached it), at its end of input. Each checkpoint is
//! taken at most once: `last_checkpoint` remembers the newest one taken.
//!
//! A panic in user code or an error reported by a function fails the core with a
//! [`SubtaskError`] that names the operator and subtask.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;

use super::assemble::{AssembledHead, assemble};
use super::head::{Control, InputTask, Step};
use crate::api::{CheckpointingMode, ExecutionConfig, SourcePoll};
use crate::checkpoint::{BarrierAligner, BarrierTracker, CheckpointBarrier, CheckpointId, JobId};
use crate::error::GraphError;
use crate::exchange::{CreditOutbox, InputGate};
use crate::graph::{ExecutionGraph, InputSide};
use crate::metrics::{SubtaskMetrics, SubtaskMetricsWriter};
use crate::operator::{
    CommitReport, ErasedBatch, NodeId, OpenContext, OperatorCounters, PendingOperatorSnapshot,
    SourceTask, TaskCx, TaskStateInit,
};
use crate::state::OperatorSnapshot;
use crate::time::WatermarkTracker;

/// A timer the core asks for with [`SubtaskOutput::ArmTimer`]; when it is due, the adapter calls
/// [`SubtaskCore::handle_timer`] with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// Processing time reached a time an operator asked for.
    ProcessingTime,
    /// The linger time of partially filled output batches ran out: send them.
    Flush,
    /// A source that had nothing to read is polled again.
    IdlePoll,
}

/// What the core asks its adapter to do, drained with [`SubtaskCore::poll_output`].
pub(crate) enum SubtaskOutput {
    /// Send `batch` on output channel `output` (an index into this subtask's outputs). The core
    /// spent a credit for it.
    Transmit { output: usize, batch: ErasedBatch },
    /// Give `credits` back to the producer of input channel `input`; the batch consumed held
    /// `records` records.
    ReturnCredit {
        input: usize,
        credits: u32,
        records: u32,
    },
    /// The core took checkpoint `barrier`; these are its operators' snapshots, to be stored.
    Acknowledge {
        barrier: CheckpointBarrier,
        snapshots: Vec<(String, PendingOperatorSnapshot)>,
    },
    /// The core cannot take part in checkpoint `id`.
    Decline { id: CheckpointId, reason: String },
    /// Two-phase-commit sinks committed these transactions.
    Committed(Vec<CommitReport>),
    /// Call [`SubtaskCore::handle_timer`] with `kind` when processing time reaches `at_ms`.
    ArmTimer { kind: TimerKind, at_ms: i64 },
    /// Call [`SubtaskCore::handle_poll`] again after the messages already queued (a source
    /// yields between polls, so credits and control are never stuck behind it).
    PollSoon,
    /// The input ended and everything was delivered downstream; the subtask waits for the
    /// job's final checkpoint.
    InputFinished,
    /// The final checkpoint completed and the chain is closed.
    Finished {
        metrics: Vec<(NodeId, OperatorCounters)>,
    },
    /// The chain was closed on request ([`SubtaskCore::handle_stop`]).
    Stopped,
    /// The subtask failed; nothing more comes out of the core.
    Failed(SubtaskError),
}

impl std::fmt::Debug for SubtaskOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transmit { output, batch } => f
                .debug_struct("Transmit")
                .field("output", output)
                .field("records", &batch.records())
                .finish(),
            Self::ReturnCredit {
                input,
                credits,
                records,
            } => f
                .debug_struct("ReturnCredit")
                .field("input", input)
                .field("credits", credits)
                .field("records", records)
                .finish(),
            Self::Acknowledge { barrier, snapshots } => f
                .debug_struct("Acknowledge")
                .field("barrier", barrier)
                .field("snapshots", &snapshots.len())
                .finish(),
            Self::Decline { id, reason } => f
                .debug_struct("Decline")
                .field("id", id)
                .field("reason", reason)
                .finish(),
            Self::Committed(commits) => f.debug_tuple("Committed").field(&commits.len()).finish(),
            Self::ArmTimer { kind, at_ms } => f
                .debug_struct("ArmTimer")
                .field("kind", kind)
                .field("at_ms", at_ms)
                .finish(),
            Self::PollSoon => f.write_str("PollSoon"),
            Self::InputFinished => f.write_str("InputFinished"),
            Self::Finished { metrics } => f
                .debug_struct("Finished")
                .field("operators", &metrics.len())
                .finish(),
            Self::Stopped => f.write_str("Stopped"),
            Self::Failed(error) => f.debug_tuple("Failed").field(error).finish(),
        }
    }
}

/// A subtask failure, naming the operator and subtask.
#[derive(Debug, Clone, thiserror::Error)]
#[error("operator '{operator}' in task '{task}' failed: {message}")]
pub(crate) struct SubtaskError {
    pub(crate) operator: String,
    pub(crate) task: String,
    pub(crate) message: String,
    /// Whether a restart can fix it (see `OperatorError::restart_can_fix`).
    pub(crate) recoverable: bool,
}

impl SubtaskError {
    fn from_operator_error(error: crate::operator::OperatorError, task: &str) -> Self {
        let recoverable = error.restart_can_fix();
        Self {
            message: format!("{} failed: {}", error.phase, error.source),
            operator: error.operator,
            task: task.to_string(),
            recoverable,
        }
    }
}

/// Decides when a barrier has arrived on every input: aligned (exactly-once) or tracked
/// (at-least-once).
enum BarrierHandler {
    Aligned(BarrierAligner),
    Tracked(BarrierTracker),
}

impl BarrierHandler {
    fn new(mode: CheckpointingMode, channels: usize) -> Self {
        match mode {
            CheckpointingMode::ExactlyOnce => Self::Aligned(BarrierAligner::new(channels)),
            CheckpointingMode::AtLeastOnce => Self::Tracked(BarrierTracker::new(channels)),
        }
    }

    fn handle_barrier(
        &mut self,
        channel: usize,
        barrier: CheckpointBarrier,
    ) -> Option<CheckpointBarrier> {
        match self {
            Self::Aligned(aligner) => aligner.handle_barrier(channel, barrier),
            Self::Tracked(tracker) => tracker.handle_barrier(channel, barrier),
        }
    }

    fn handle_end_of_input(&mut self, channel: usize) -> Option<CheckpointBarrier> {
        match self {
            Self::Aligned(aligner) => aligner.handle_end_of_input(channel),
            Self::Tracked(tracker) => tracker.handle_end_of_input(channel),
        }
    }

    fn blocked(&self) -> &[bool] {
        match self {
            Self::Aligned(aligner) => aligner.blocked(),
            Self::Tracked(_) => &[],
        }
    }
}

/// Everything needed to build one subtask core.
pub(crate) struct SubtaskCoreArgs {
    pub(crate) graph: Arc<ExecutionGraph>,
    /// The code that builds the graph's operators.
    pub(crate) registry: Arc<super::registry::OperatorRegistry>,
    /// The subtask's flat index in the execution graph.
    pub(crate) index: usize,
    pub(crate) config: ExecutionConfig,
    pub(crate) job_name: String,
    pub(crate) attempt_number: u32,
    /// The id of the run.
    pub(crate) job_id: JobId,
    /// This subtask's share of the restored checkpoint, per operator state id.
    pub(crate) restored: BTreeMap<String, OperatorSnapshot>,
    /// The checkpoint restored from, if any.
    pub(crate) restored_from: Option<CheckpointId>,
    /// A directory private to this subtask attempt, for state backends.
    pub(crate) local_dir: PathBuf,
    /// The live metrics cells this subtask publishes into (`None`: private cells nobody reads).
    pub(crate) metrics: Option<Arc<SubtaskMetrics>>,
}

enum Head {
    Source(Box<dyn SourceTask>),
    Input(Box<dyn InputTask>),
}

/// Where the core is in its life (step 5 of the call order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Failed, finished or stopped: inputs are ignored.
    Done,
}

/// One subtask's protocol state machine; see the module documentation for the call order.
pub(crate) struct SubtaskCore {
    /// `"Map -> Filter (2/4)"`.
    task_name: String,
    subtask_index: u32,
    parallelism: u32,
    node_names: Vec<(NodeId, String, String)>,
    head: Head,
    cx: TaskCx,
    gate: InputGate,
    input_sides: Vec<InputSide>,
    watermarks: WatermarkTracker,
    barriers: BarrierHandler,
    /// The end of input was reported; waiting for the final checkpoint.
    input_finished_reported: bool,
    /// A checkpoint triggered while this subtask waits for its barrier: taken at the end of
    /// input if every input ends before the barrier arrives.
    expected_checkpoint: Option<CheckpointBarrier>,
    /// The newest checkpoint this subtask took (a checkpoint is taken at most once).
    last_checkpoint: Option<CheckpointId>,
    ended_inputs: usize,
    /// The input channel whose batch is current in the head, with its record count.
    current: Option<(usize, u32)>,
    started: bool,
    /// All input ended (or the source finished) and the end was passed down the chain.
    input_done: bool,
    /// A downstream subtask is gone (the job is failing or cancelled): stop producing.
    peer_gone: bool,
    poll_scheduled: bool,
    flush_armed: bool,
    /// The processing time the armed processing-time timer fires at.
    timer_armed_ms: Option<i64>,
    phase: Phase,
    config: ExecutionConfig,
    open_context: OpenContext,
    outputs: VecDeque<SubtaskOutput>,
    /// Live metrics (issue 17): counted per batch, published once per step.
    metrics: SubtaskMetricsWriter,
}

impl SubtaskCore {
    /// Assembles subtask `args.index` of the graph; nothing runs until
    /// [`handle_start`](Self::handle_start).
    pub(crate) fn build(args: SubtaskCoreArgs) -> Result<Self, GraphError> {
        let graph = &args.graph;
        let plan = &graph.subtasks[args.index];
        let vertex = &graph.job.vertices[plan.id.vertex as usize];
        let assembled = assemble(graph, &args.registry, args.index, &args.config)?;
        let outbox = CreditOutbox::new(plan.outputs.len());
        let channel_count = plan.inputs.len();
        let gate = InputGate::new(channel_count.max(1), args.config.credits_per_channel);
        let node_names: Vec<(NodeId, String, String)> = vertex
            .nodes
            .iter()
            .map(|n| {
                let node = graph.job.stream.node(*n);
                (*n, node.name.clone(), node.state_id())
            })
            .collect();
        let cells = args.metrics.unwrap_or_else(|| {
            Arc::new(SubtaskMetrics::new(
                plan.id.vertex,
                plan.id.index,
                "local",
                node_names.clone(),
            ))
        });
        let metrics = SubtaskMetricsWriter::new(
            Arc::clone(&cells),
            args.attempt_number,
            channel_count as u64 * u64::from(args.config.credits_per_channel),
        );
        let task_name = format!(
            "{} ({}/{})",
            vertex.name,
            plan.id.index + 1,
            vertex.parallelism
        );
        let state = TaskStateInit::new(
            args.restored,
            args.restored_from,
            args.config.state_backend,
            args.local_dir,
            args.config.state_cache_entries,
            args.config.lmdb_map_size,
        )
        .allowing_non_restored_state(
            args.config
                .restore
                .as_ref()
                .is_some_and(|r| r.allow_non_restored_state),
        );
        Ok(Self {
            task_name,
            subtask_index: plan.id.index,
            parallelism: vertex.parallelism,
            node_names,
            head: match assembled {
                AssembledHead::Source(s) => Head::Source(s),
                AssembledHead::Input(i) => Head::Input(i),
            },
            cx: TaskCx::new(outbox, vertex.head),
            gate,
            input_sides: plan.inputs.iter().map(|c| c.side).collect(),
            watermarks: WatermarkTracker::new(channel_count),
            barriers: BarrierHandler::new(args.config.checkpointing.mode, channel_count),
            input_finished_reported: false,
            expected_checkpoint: None,
            last_checkpoint: None,
            ended_inputs: 0,
            current: None,
            started: false,
            input_done: false,
            peer_gone: false,
            poll_scheduled: false,
            flush_armed: false,
            timer_armed_ms: None,
            phase: Phase::Running,
            open_context: OpenContext {
                job_name: args.job_name,
                job_id: args.job_id,
                subtask_index: plan.id.index,
                max_parallelism: graph.job.max_parallelism,
                attempt_number: args.attempt_number,
                state: Arc::new(state),
                metrics: Some(cells),
            },
            config: args.config,
            outputs: VecDeque::new(),
            metrics,
        })
    }

    /// The number of output channels.
    pub(crate) fn output_count(&self) -> usize {
        self.cx.outbox.channel_count()
    }

    /// The number of input channels.
    pub(crate) fn input_count(&self) -> usize {
        self.input_sides.len()
    }

    /// The next thing to do in the world, in order.
    pub(crate) fn poll_output(&mut self) -> Option<SubtaskOutput> {
        self.outputs.pop_front()
    }

    /// Opens the chain and grants the initial credits on every input channel.
    pub(crate) fn handle_start(&mut self, now_ms: i64) {
        if !self.enter(now_ms) {
            return;
        }
        let open_context = self.open_context.clone();
        let opened = match &mut self.head {
            Head::Source(source) => source.open(&open_context),
            Head::Input(head) => head.open(&open_context),
        };
        if let Err(error) = opened {
            let error = SubtaskError::from_operator_error(error, &self.task_name);
            self.fail(error);
            return;
        }
        self.started = true;
        // Operators see processing time once at start, to schedule their timers.
        if !self.guarded(Self::on_processing_time) {
            return;
        }
        if let Head::Input(head) = &mut self.head
            && self.input_sides.is_empty()
        {
            // No producer will ever send an end of input: the input is empty.
            head.end_of_input(&mut self.cx);
            self.input_done = true;
        }
        let credits = self.gate.initial_credits();
        for input in 0..self.input_sides.len() {
            self.outputs.push_back(SubtaskOutput::ReturnCredit {
                input,
                credits,
                records: 0,
            });
        }
        self.after_step();
    }

    /// A batch arrived on input channel `channel`.
    pub(crate) fn handle_batch(&mut self, now_ms: i64, channel: usize, batch: ErasedBatch) {
        if !self.enter(now_ms) {
            return;
        }
        self.gate.handle_batch(channel, batch);
        if self.guarded(Self::drive_input_or_fail) {
            self.after_step();
        }
    }

    /// `credits` more batches may be sent on output channel `channel`.
    pub(crate) fn handle_credit(&mut self, now_ms: i64, channel: usize, credits: u32) {
        if !self.enter(now_ms) {
            return;
        }
        self.cx.outbox.handle_credit(channel, credits);
        self.transmit();
        if self.guarded(Self::drive_input_or_fail) {
            self.after_step();
        }
    }

    /// Polls the source once (a [`SubtaskOutput::PollSoon`] came due).
    pub(crate) fn handle_poll(&mut self, now_ms: i64) {
        if !self.enter(now_ms) {
            return;
        }
        self.poll_scheduled = false;
        let mut poll = None;
        if !self.guarded(|s| poll = s.poll_source()) {
            return;
        }
        if poll == Some(SourcePoll::Idle) && !self.input_done {
            self.poll_scheduled = true;
            self.outputs.push_back(SubtaskOutput::ArmTimer {
                kind: TimerKind::IdlePoll,
                at_ms: now_ms.saturating_add(
                    i64::try_from(self.config.source_idle_poll_ms).unwrap_or(i64::MAX),
                ),
            });
        }
        self.after_step();
    }

    /// A timer the core armed came due.
    pub(crate) fn handle_timer(&mut self, now_ms: i64, kind: TimerKind) {
        match kind {
            TimerKind::IdlePoll => self.handle_poll(now_ms),
            TimerKind::Flush => {
                if !self.enter(now_ms) {
                    return;
                }
                self.flush_armed = false;
                if self.guarded(Self::flush) {
                    self.after_step();
                }
            }
            TimerKind::ProcessingTime => {
                if !self.enter(now_ms) {
                    return;
                }
                if self.guarded(Self::on_processing_time) {
                    self.after_step();
                }
            }
        }
    }

    /// Takes part in checkpoint `barrier`: a running source injects it, a finished subtask
    /// snapshots its final state, any other subtask expects it on its inputs.
    pub(crate) fn handle_trigger_checkpoint(&mut self, now_ms: i64, barrier: CheckpointBarrier) {
        if !self.enter(now_ms) {
            return;
        }
        if self.guarded(|s| s.trigger_checkpoint(barrier)) {
            self.after_step();
        }
    }

    /// Takes the job's final checkpoint: the whole job finished its input. `persist`: whether
    /// its state is stored (else it only commits).
    pub(crate) fn handle_final_checkpoint(
        &mut self,
        now_ms: i64,
        barrier: CheckpointBarrier,
        persist: bool,
    ) {
        if !self.enter(now_ms) {
            return;
        }
        self.cx.persist_snapshots = persist;
        let taken = self.guarded(|s| s.final_checkpoint(barrier));
        self.cx.persist_snapshots = true;
        if taken {
            self.after_step();
        }
    }

    /// Checkpoint `id` completed; after the final one (`is_final`) the core closes its chain and
    /// finishes.
    pub(crate) fn handle_checkpoint_complete(
        &mut self,
        now_ms: i64,
        id: CheckpointId,
        is_final: bool,
    ) {
        if !self.enter(now_ms) {
            return;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| self.notify_checkpoint_complete(id)));
        // Reported before a failure propagates: a commit may have been partly done.
        self.report_commits();
        if !self.check(outcome) {
            return;
        }
        if is_final && self.input_finished_reported {
            self.finish();
            return;
        }
        self.after_step();
    }

    /// Closes the chain now (stop-with-savepoint: sent after the savepoint's completion, so
    /// two-phase-commit sinks have committed it). Open transactions are aborted by the close;
    /// the savepoint covers their records.
    pub(crate) fn handle_stop(&mut self, now_ms: i64) {
        if !self.enter(now_ms) {
            return;
        }
        // A failing close changes nothing: the savepoint is complete.
        let _ = self.close();
        self.phase = Phase::Done;
        self.outputs.push_back(SubtaskOutput::Stopped);
    }

    /// Fails the subtask here on purpose (the simulator's fault plan), as a panic in its head
    /// operator would: a recoverable failure naming `reason`.
    pub(crate) fn handle_injected_failure(&mut self, reason: &str) {
        if self.phase != Phase::Running {
            return;
        }
        let error = self.error(
            self.cx.current_operator,
            format!("injected fault: {reason}"),
        );
        self.fail(error);
    }

    /// The TaskManager could not read this subtask's share of the restored checkpoint
    /// (`error` names the file and the checkpoint): the subtask fails before anything runs, and
    /// the job restarts by its strategy (the JobManager then checks the checkpoint again, and
    /// falls back or fails as the restore rules say).
    pub(crate) fn handle_restore_failure(&mut self, error: String) {
        if self.phase != Phase::Running {
            return;
        }
        let error = SubtaskError {
            operator: "(state restore)".to_string(),
            task: self.task_name.clone(),
            message: error,
            recoverable: true,
        };
        self.fail(error);
    }

    /// A batch could not be delivered: the consumer stopped before the end of its input, so the
    /// job is failing or being cancelled (the coordinator learns the cause elsewhere). The core
    /// stops producing.
    pub(crate) fn handle_peer_gone(&mut self) {
        self.peer_gone = true;
    }

    /// Starts handling an input at `now_ms`; false when the core is done.
    fn enter(&mut self, now_ms: i64) -> bool {
        self.cx.now_ms = now_ms;
        self.phase == Phase::Running
    }

    fn fail(&mut self, error: SubtaskError) {
        self.phase = Phase::Done;
        self.outputs.push_back(SubtaskOutput::Failed(error));
    }

    fn operator_name(&self, node: NodeId) -> String {
        self.node_names
            .iter()
            .find(|(n, _, _)| *n == node)
            .map(|(_, name, _)| name.clone())
            .unwrap_or_else(|| format!("node {}", node.0))
    }

    fn error(&self, node: NodeId, message: String) -> SubtaskError {
        SubtaskError {
            operator: self.operator_name(node),
            task: self.task_name.clone(),
            message,
            recoverable: true,
        }
    }

    /// Runs `f`, turning a panic or a failure an operator reported into
    /// [`SubtaskOutput::Failed`]; false if it failed.
    fn guarded(&mut self, f: impl FnOnce(&mut Self)) -> bool {
        let result = catch_unwind(AssertUnwindSafe(|| f(self)));
        self.check(result)
    }

    fn check(&mut self, result: std::thread::Result<()>) -> bool {
        if let Err(payload) = result {
            let message = panic_message(payload.as_ref());
            let error = self.error(self.cx.current_operator, format!("panicked: {message}"));
            self.fail(error);
            return false;
        }
        if let Some(failure) = self.cx.failure.clone() {
            let error = self.error(failure.operator, failure.message);
            self.fail(error);
            return false;
        }
        true
    }

    fn drive_input_or_fail(&mut self) {
        if let Err(error) = self.drive_input() {
            self.cx.fail(self.cx.current_operator, error.message);
        }
    }

    /// Processes queued input until it runs out or downstream is out of credit.
    fn drive_input(&mut self) -> Result<(), SubtaskError> {
        loop {
            if self.cx.must_pause() || self.peer_gone {
                return Ok(());
            }
            let Head::Input(head) = &mut self.head else {
                return Ok(());
            };
            if let Some((channel, records)) = self.current {
                match head.resume(&mut self.cx) {
                    Step::Exhausted => {
                        self.current = None;
                        let credits = self.gate.consumed(channel);
                        self.outputs.push_back(SubtaskOutput::ReturnCredit {
                            input: channel,
                            credits,
                            records,
                        });
                    }
                    Step::Paused => return Ok(()),
                    Step::Control(control) => self.handle_control(channel, control),
                }
            } else if let Some((channel, batch)) = self.gate.poll_unblocked(self.barriers.blocked())
            {
                let records = batch.records();
                self.metrics.batch_in(records, batch.bytes());
                let side = self.input_sides[channel];
                if let Err(error) = head.begin(side, batch) {
                    return Err(SubtaskError {
                        operator: error.operator.clone(),
                        task: self.task_name.clone(),
                        message: error.to_string(),
                        recoverable: true,
                    });
                }
                self.current = Some((channel, records));
            } else {
                return Ok(());
            }
        }
    }

    fn handle_control(&mut self, channel: usize, control: Control) {
        if let Some(complete) = self.handle_control_in_head(channel, control) {
            self.acknowledge(complete);
        }
        if self.input_done {
            self.take_expected_checkpoint();
        }
    }

    /// The input ended before the barrier of an expected checkpoint arrived (its producers
    /// finished before the trigger reached them): take it now, with the final state.
    fn take_expected_checkpoint(&mut self) {
        let Some(barrier) = self.expected_checkpoint.take() else {
            return;
        };
        if self.last_checkpoint.is_some_and(|last| barrier.id <= last) {
            return;
        }
        self.snapshot_finished(barrier);
    }

    /// Snapshots the chain of a subtask that finished its input, without a barrier (no input
    /// can deliver one, and the outputs already carry the end of input), and acknowledges.
    fn snapshot_finished(&mut self, barrier: CheckpointBarrier) {
        self.cx.input_finished = true;
        match &mut self.head {
            Head::Source(source) => source.snapshot_state(barrier, &mut self.cx),
            Head::Input(head) => head.snapshot_state(barrier, &mut self.cx),
        }
        self.acknowledge(barrier);
    }

    /// Handles a control element; returns a checkpoint whose barrier the chain just took.
    fn handle_control_in_head(
        &mut self,
        channel: usize,
        control: Control,
    ) -> Option<CheckpointBarrier> {
        let Head::Input(head) = &mut self.head else {
            return None;
        };
        let mut taken = None;
        match control {
            Control::Watermark(watermark) => {
                if let Some(advanced) = self.watermarks.handle_watermark(channel, watermark) {
                    head.process_watermark(advanced, &mut self.cx);
                }
            }
            Control::WatermarkStatus(status) => {
                let update = self.watermarks.handle_status(channel, status);
                if let Some(advanced) = update.watermark {
                    head.process_watermark(advanced, &mut self.cx);
                }
                if let Some(status) = update.status {
                    head.process_watermark_status(status, &mut self.cx);
                }
            }
            Control::Barrier(barrier) => {
                self.metrics.barrier_arrived(barrier.id.0, self.cx.now_ms);
                if let Some(complete) = self.barriers.handle_barrier(channel, barrier) {
                    head.process_barrier(complete, &mut self.cx);
                    taken = Some(complete);
                }
            }
            Control::EndOfInput => {
                self.ended_inputs += 1;
                if let Some(advanced) = self.watermarks.handle_end_of_input(channel) {
                    head.process_watermark(advanced, &mut self.cx);
                }
                if let Some(complete) = self.barriers.handle_end_of_input(channel) {
                    head.process_barrier(complete, &mut self.cx);
                    taken = Some(complete);
                }
                if self.ended_inputs == self.gate.channel_count() {
                    head.end_of_input(&mut self.cx);
                    self.input_done = true;
                }
            }
        }
        taken
    }

    /// Hands the snapshots the chain took for `barrier` out to be stored; the subtask goes on
    /// processing meanwhile. After a failed snapshot nothing is acknowledged (the failure
    /// itself fails the task).
    fn acknowledge(&mut self, barrier: CheckpointBarrier) {
        self.last_checkpoint = self.last_checkpoint.max(Some(barrier.id));
        let snapshots: Vec<(String, PendingOperatorSnapshot)> =
            std::mem::take(&mut self.cx.snapshots);
        if self.cx.failure.is_some() {
            return;
        }
        self.metrics.acknowledged(barrier.id.0, self.cx.now_ms);
        self.outputs
            .push_back(SubtaskOutput::Acknowledge { barrier, snapshots });
    }

    fn trigger_checkpoint(&mut self, barrier: CheckpointBarrier) {
        if self.last_checkpoint.is_some_and(|last| barrier.id <= last) {
            // The barrier came through the inputs before the trigger did.
            return;
        }
        if !self.started {
            // The coordinator starts every subtask before it triggers, but a checkpoint without
            // this subtask's state must not complete.
            self.outputs.push_back(SubtaskOutput::Decline {
                id: barrier.id,
                reason: "the subtask has not started".to_string(),
            });
            return;
        }
        if self.input_done {
            self.snapshot_finished(barrier);
            return;
        }
        match &mut self.head {
            Head::Source(source) => {
                source.trigger_checkpoint(barrier, &mut self.cx);
                self.acknowledge(barrier);
            }
            Head::Input(_) => {
                if self
                    .expected_checkpoint
                    .is_none_or(|expected| expected.id < barrier.id)
                {
                    self.expected_checkpoint = Some(barrier);
                }
            }
        }
    }

    /// Snapshots the whole chain for the final checkpoint (no barrier goes downstream: every
    /// input has ended).
    fn final_checkpoint(&mut self, barrier: CheckpointBarrier) {
        self.expected_checkpoint = None;
        self.snapshot_finished(barrier);
    }

    /// Hands out what exactly-once sinks committed since the last report.
    fn report_commits(&mut self) {
        if self.cx.committed.is_empty() {
            return;
        }
        let commits = std::mem::take(&mut self.cx.committed);
        self.outputs.push_back(SubtaskOutput::Committed(commits));
    }

    fn notify_checkpoint_complete(&mut self, id: CheckpointId) {
        match &mut self.head {
            Head::Source(source) => source.notify_checkpoint_complete(id, &mut self.cx),
            Head::Input(head) => head.notify_checkpoint_complete(id, &mut self.cx),
        }
    }

    /// Polls the source once (sources only).
    fn poll_source(&mut self) -> Option<SourcePoll> {
        let Head::Source(source) = &mut self.head else {
            return None;
        };
        if self.input_done || self.cx.must_pause() || self.peer_gone {
            return None;
        }
        let poll = source.poll(&mut self.cx, self.config.source_poll_records_max);
        if poll == SourcePoll::Finished {
            source.finish(&mut self.cx);
            self.input_done = true;
        }
        Some(poll)
    }

    /// Calls back the operators whose requested processing time has come.
    fn on_processing_time(&mut self) {
        self.timer_armed_ms = None;
        self.cx.wakeup_ms = None;
        let now_ms = self.cx.now_ms;
        match &mut self.head {
            Head::Source(source) => source.on_processing_time(now_ms, &mut self.cx),
            Head::Input(head) => head.on_processing_time(now_ms, &mut self.cx),
        }
    }

    fn flush(&mut self) {
        self.cx.has_partial_batches = false;
        match &mut self.head {
            Head::Source(source) => source.flush(&mut self.cx),
            Head::Input(head) => head.flush(&mut self.cx),
        }
    }

    /// Hands out every batch the outbox has credit for.
    fn transmit(&mut self) {
        while let Some((output, batch)) = self.cx.outbox.poll_transmit() {
            self.metrics.batch_out(batch.records(), batch.bytes());
            self.outputs
                .push_back(SubtaskOutput::Transmit { output, batch });
        }
    }

    /// After each input: hand out batches, arm the processing-time and linger timers, ask for
    /// source polls, report the end of input.
    fn after_step(&mut self) {
        self.transmit();
        if let Some(at_ms) = self.cx.wakeup_ms
            && self.timer_armed_ms.is_none_or(|armed| at_ms < armed)
            && !self.input_done
        {
            self.timer_armed_ms = Some(at_ms);
            self.outputs.push_back(SubtaskOutput::ArmTimer {
                kind: TimerKind::ProcessingTime,
                at_ms,
            });
        }
        if self.cx.has_partial_batches && !self.flush_armed && !self.peer_gone {
            if self.config.buffer_timeout_ms == 0 || self.input_done {
                if !self.guarded(Self::flush) {
                    return;
                }
                self.transmit();
            } else {
                self.flush_armed = true;
                self.outputs.push_back(SubtaskOutput::ArmTimer {
                    kind: TimerKind::Flush,
                    at_ms: self.cx.now_ms.saturating_add(
                        i64::try_from(self.config.buffer_timeout_ms).unwrap_or(i64::MAX),
                    ),
                });
            }
        }
        if matches!(self.head, Head::Source(_))
            && self.started
            && !self.input_done
            && !self.poll_scheduled
            && !self.cx.must_pause()
            && !self.peer_gone
        {
            self.poll_scheduled = true;
            self.outputs.push_back(SubtaskOutput::PollSoon);
        }
        self.publish_metrics();
        if self.input_done && self.cx.outbox.is_idle() && !self.input_finished_reported {
            // Everything was delivered downstream. The subtask stays up for the final
            // checkpoint, which commits what its operators hold (two-phase-commit sinks).
            self.input_finished_reported = true;
            self.outputs.push_back(SubtaskOutput::InputFinished);
        }
    }

    /// The final checkpoint completed: close the chain and hand out the metrics.
    fn finish(&mut self) {
        if let Err(error) = self.close() {
            self.fail(error);
            return;
        }
        let mut metrics = Vec::new();
        match &self.head {
            Head::Source(source) => source.metrics(&mut metrics),
            Head::Input(head) => head.metrics(&mut metrics),
        }
        self.phase = Phase::Done;
        self.publish_metrics();
        self.outputs.push_back(SubtaskOutput::Finished { metrics });
    }

    /// Publishes the live metrics (once per step: never per record).
    fn publish_metrics(&mut self) {
        let figures = crate::metrics::StepFigures {
            backpressured: self.cx.outbox.is_backpressured(),
            input_queue_batches: self.gate.queued_batches() as u64,
            output_queue_batches: self.cx.outbox.backlogged_batches() as u64,
            input_watermark: if self.input_sides.is_empty() {
                self.cx.output_watermark
            } else {
                self.watermarks.current().timestamp
            },
            has_inputs: !self.input_sides.is_empty(),
        };
        self.metrics.output_watermark(self.cx.output_watermark);
        let head = &self.head;
        self.metrics
            .publish(self.cx.now_ms, figures, |out| match head {
                Head::Source(source) => source.metrics(out),
                Head::Input(head) => head.metrics(out),
            });
    }

    fn close(&mut self) -> Result<(), SubtaskError> {
        let result = match &mut self.head {
            Head::Source(source) => source.close(),
            Head::Input(head) => head.close(),
        };
        result.map_err(|error| SubtaskError::from_operator_error(error, &self.task_name))
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

impl std::fmt::Debug for SubtaskCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubtaskCore")
            .field("task", &self.task_name)
            .field("subtask", &(self.subtask_index, self.parallelism))
            .finish()
    }
}
