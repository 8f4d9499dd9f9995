//! The subtask actor: runs one operator chain instance.
//!
//! A thin adapter (STYLE.md section 1): its state owns the chain and the sans-IO cores (input gate,
//! credit outbox, watermark tracker, barrier tracker); `handle` turns each message into calls on
//! them and sends what they produced. It never awaits inside a handler, so credits, control and
//! cancellation are never stuck behind flow control.
//!
//! ## Message protocol
//!
//! 1. `Wire` (from the JobManager): the actor refs of every channel peer.
//! 2. `Start`: open the chain, grant initial credits upstream, sources start polling.
//! 3. `Data` / `Credit` / `Poll` / `Flush` while running.
//! 4. When all inputs ended (or the source finished) and every batch has been delivered, the
//!    subtask reports the end of its input and waits for the job's final checkpoint; after it
//!    completed, the subtask closes its chain, reports its metrics to the JobManager and stops.
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
//! A panic in user code or an error reported by a function fails the actor with an error that
//! names the operator and subtask; the TaskManager (its supervisor) reports it to the JobManager.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::gauges::ChannelGauges;
use super::head::{Control, InputTask, Step};
use super::job_manager::JobManagerMsg;
use crate::api::{CheckpointingMode, ExecutionConfig, SourcePoll};
use crate::checkpoint::{BarrierAligner, BarrierTracker, CheckpointBarrier, CheckpointId};
use crate::exchange::{CreditOutbox, InputGate};
use crate::graph::{ExecutionGraph, InputSide};
use crate::operator::{
    ErasedBatch, NodeId, OpenContext, OperatorCounters, PendingOperatorSnapshot, SourceTask,
    TaskCx, TaskStateInit,
};
use crate::state::OperatorSnapshot;
use crate::time::{Clock, WatermarkTracker};

/// Messages of a subtask actor.
pub(crate) enum SubtaskMsg {
    /// Channel peers: per output channel the consumer and its input index; per input channel the
    /// producer and its output index.
    Wire {
        outputs: Vec<(ActorRef<Self>, usize)>,
        inputs: Vec<(ActorRef<Self>, usize)>,
    },
    /// Open the chain and start.
    Start,
    /// A batch on input channel `channel`.
    Data { channel: usize, batch: ErasedBatch },
    /// `credits` more batches may be sent on output channel `channel`.
    Credit { channel: usize, credits: u32 },
    /// Poll the source (sources only).
    Poll,
    /// The linger timer fired: send partially filled batches.
    Flush,
    /// Processing time reached a time an operator asked for.
    ProcessingTime,
    /// Take part in this checkpoint: a running source injects the barrier, a finished subtask
    /// snapshots its final state, any other subtask expects the barrier on its inputs.
    TriggerCheckpoint(CheckpointBarrier),
    /// Take the final checkpoint: the whole job finished its input. `persist`: whether its
    /// state is stored (else it only commits).
    FinalCheckpoint {
        barrier: CheckpointBarrier,
        persist: bool,
    },
    /// A checkpoint completed; after the final one the subtask closes and stops.
    CheckpointComplete { id: CheckpointId, is_final: bool },
    /// Close and stop now (stop-with-savepoint; sent after the savepoint's completion, so
    /// two-phase-commit sinks have committed it).
    Stop,
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

/// Everything needed to build one subtask.
pub(crate) struct SubtaskArgs {
    pub(crate) graph: Arc<ExecutionGraph>,
    /// The code that builds the graph's operators.
    pub(crate) registry: Arc<super::registry::OperatorRegistry>,
    pub(crate) index: usize,
    pub(crate) config: ExecutionConfig,
    pub(crate) job_name: String,
    pub(crate) attempt_number: u32,
    /// The id of the run.
    pub(crate) job_id: crate::checkpoint::JobId,
    pub(crate) job_manager: ActorRef<JobManagerMsg>,
    pub(crate) gauges: Arc<ChannelGauges>,
    /// The node's processing-time clock (from its runtime environment).
    pub(crate) clock: Arc<dyn Clock>,
    /// This subtask's share of the restored checkpoint, per operator state id.
    pub(crate) restored: BTreeMap<String, OperatorSnapshot>,
    /// The checkpoint restored from, if any.
    pub(crate) restored_from: Option<CheckpointId>,
    /// A directory private to this subtask attempt, for state backends.
    pub(crate) local_dir: PathBuf,
}

enum Head {
    Source(Box<dyn SourceTask>),
    Input(Box<dyn InputTask>),
}

/// The subtask actor.
pub(crate) struct SubtaskActor;

pub(crate) struct SubtaskState {
    index: usize,
    /// `"Map -> Filter (2/4)"`.
    task_name: String,
    subtask_index: u32,
    parallelism: u32,
    node_names: Vec<(NodeId, String)>,
    head: Head,
    cx: TaskCx,
    gate: InputGate,
    input_sides: Vec<InputSide>,
    input_channels: Vec<usize>,
    output_channels: Vec<usize>,
    watermarks: WatermarkTracker,
    barriers: BarrierHandler,
    attempt: u32,
    /// The end of input was reported to the JobManager; waiting for the final checkpoint.
    input_finished_reported: bool,
    /// A checkpoint triggered while this subtask waits for its barrier: taken at the end of
    /// input if every input ends before the barrier arrives.
    expected_checkpoint: Option<CheckpointBarrier>,
    /// The newest checkpoint this subtask took (a checkpoint is taken at most once).
    last_checkpoint: Option<CheckpointId>,
    ended_inputs: usize,
    /// The input channel whose batch is current in the head.
    current: Option<usize>,
    outputs: Vec<(ActorRef<SubtaskMsg>, usize)>,
    inputs: Vec<(ActorRef<SubtaskMsg>, usize)>,
    started: bool,
    /// All input ended (or the source finished) and the end was passed down the chain.
    input_done: bool,
    /// A downstream subtask is gone (the job is failing or cancelled): stop producing.
    peer_gone: bool,
    poll_scheduled: bool,
    flush_armed: bool,
    /// The processing time the armed processing-time timer fires at.
    timer_armed_ms: Option<i64>,
    clock: Arc<dyn Clock>,
    config: ExecutionConfig,
    open_context: OpenContext,
    job_manager: ActorRef<JobManagerMsg>,
    gauges: Arc<ChannelGauges>,
}

/// A subtask failure, naming the operator and subtask.
#[derive(Debug, thiserror::Error)]
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

impl SubtaskState {
    fn operator_name(&self, node: NodeId) -> String {
        self.node_names
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, name)| name.clone())
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

    /// Runs `f` on the state, turning a panic into an error naming the running operator.
    fn guarded(&mut self, f: impl FnOnce(&mut Self)) -> Result<(), SubtaskError> {
        let result = catch_unwind(AssertUnwindSafe(|| f(self)));
        if let Err(payload) = result {
            let message = panic_message(payload.as_ref());
            return Err(self.error(self.cx.current_operator, format!("panicked: {message}")));
        }
        if let Some(failure) = self.cx.failure.clone() {
            return Err(self.error(failure.operator, failure.message));
        }
        Ok(())
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
            if let Some(channel) = self.current {
                match head.resume(&mut self.cx) {
                    Step::Exhausted => {
                        self.current = None;
                        let credits = self.gate.consumed(channel);
                        let (producer, producer_output) = &self.inputs[channel];
                        // The producer may have finished after sending its last batch; a credit
                        // for a finished producer is moot.
                        let _ = producer.send_message(SubtaskMsg::Credit {
                            channel: *producer_output,
                            credits,
                        });
                    }
                    Step::Paused => return Ok(()),
                    Step::Control(control) => self.handle_control(channel, control),
                }
            } else if let Some((channel, batch)) = self.gate.poll_unblocked(self.barriers.blocked())
            {
                self.gauges
                    .consumed(self.input_channels[channel], batch.records());
                let side = self.input_sides[channel];
                if let Err(error) = head.begin(side, batch) {
                    return Err(SubtaskError {
                        operator: error.operator.clone(),
                        task: self.task_name.clone(),
                        message: error.to_string(),
                        recoverable: true,
                    });
                }
                self.current = Some(channel);
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

    /// Sends the snapshots the chain took for `barrier` to the JobManager, which has them
    /// stored; the subtask goes on processing meanwhile. A failed snapshot declines instead
    /// (the failure itself fails the task).
    fn acknowledge(&mut self, barrier: CheckpointBarrier) {
        self.last_checkpoint = self.last_checkpoint.max(Some(barrier.id));
        let snapshots: Vec<(String, PendingOperatorSnapshot)> =
            std::mem::take(&mut self.cx.snapshots);
        if self.cx.failure.is_some() {
            return;
        }
        let _ = self.job_manager.send_message(JobManagerMsg::Acknowledge {
            attempt: self.attempt,
            index: self.index,
            barrier,
            snapshots,
        });
    }

    /// Takes part in checkpoint `barrier`: a running source injects it, a finished subtask
    /// snapshots its final state, any other subtask expects it on its inputs.
    fn trigger_checkpoint(&mut self, barrier: CheckpointBarrier) {
        if self.last_checkpoint.is_some_and(|last| barrier.id <= last) {
            // The barrier came through the inputs before the trigger did.
            return;
        }
        if !self.started {
            // Cannot happen (the JobManager starts every subtask before it triggers), but a
            // checkpoint without this subtask's state must not complete.
            let _ = self.job_manager.send_message(JobManagerMsg::Decline {
                attempt: self.attempt,
                index: self.index,
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

    /// Tells the JobManager what exactly-once sinks committed since the last report.
    fn report_commits(&mut self) {
        if self.cx.committed.is_empty() {
            return;
        }
        let commits = std::mem::take(&mut self.cx.committed);
        let _ = self.job_manager.send_message(JobManagerMsg::Committed {
            index: self.index,
            commits,
        });
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

    /// Sends every batch the outbox has credit for.
    fn transmit(&mut self) {
        while let Some((channel, batch)) = self.cx.outbox.poll_transmit() {
            let (consumer, consumer_input) = &self.outputs[channel];
            self.gauges
                .sent(self.output_channels[channel], batch.records());
            let message = SubtaskMsg::Data {
                channel: *consumer_input,
                batch,
            };
            if consumer.send_message(message).is_err() {
                // The consumer stopped before the end of its input: the job is failing or being
                // cancelled, and the JobManager learns the cause from the consumer's supervisor.
                self.peer_gone = true;
            }
        }
    }

    fn metrics(&self) -> Vec<(NodeId, OperatorCounters)> {
        let mut metrics = Vec::new();
        match &self.head {
            Head::Source(source) => source.metrics(&mut metrics),
            Head::Input(head) => head.metrics(&mut metrics),
        }
        metrics
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

impl SubtaskActor {
    /// After each message: send batches, arm the linger timer, schedule source polls, finish.
    fn after_step(
        &self,
        myself: &ActorRef<SubtaskMsg>,
        state: &mut SubtaskState,
    ) -> Result<(), ActorProcessingErr> {
        state.transmit();
        if let Some(at_ms) = state.cx.wakeup_ms
            && state.timer_armed_ms.is_none_or(|armed| at_ms < armed)
            && !state.input_done
        {
            state.timer_armed_ms = Some(at_ms);
            let delay_ms = u64::try_from(at_ms.saturating_sub(state.cx.now_ms)).unwrap_or(0);
            drop(myself.send_after(Duration::from_millis(delay_ms), || {
                SubtaskMsg::ProcessingTime
            }));
        }
        if state.cx.has_partial_batches && !state.flush_armed && !state.peer_gone {
            if state.config.buffer_timeout_ms == 0 || state.input_done {
                state.flush();
                state.transmit();
            } else {
                state.flush_armed = true;
                // The timer task runs detached; the handle is not needed.
                drop(myself.send_after(
                    Duration::from_millis(state.config.buffer_timeout_ms),
                    || SubtaskMsg::Flush,
                ));
            }
        }
        if matches!(state.head, Head::Source(_))
            && state.started
            && !state.input_done
            && !state.poll_scheduled
            && !state.cx.must_pause()
            && !state.peer_gone
        {
            state.poll_scheduled = true;
            myself.send_message(SubtaskMsg::Poll)?;
        }
        if state.input_done && state.cx.outbox.is_idle() && !state.input_finished_reported {
            // Everything was delivered downstream. The subtask stays up for the final
            // checkpoint, which commits what its operators hold (two-phase-commit sinks).
            state.input_finished_reported = true;
            let _ = state
                .job_manager
                .send_message(JobManagerMsg::InputFinished {
                    attempt: state.attempt,
                    index: state.index,
                });
        }
        Ok(())
    }

    /// The final checkpoint completed: close the chain, report, stop.
    fn finish(
        &self,
        myself: &ActorRef<SubtaskMsg>,
        state: &mut SubtaskState,
    ) -> Result<(), ActorProcessingErr> {
        state.close()?;
        let metrics = state.metrics();
        let _ = state
            .job_manager
            .send_message(JobManagerMsg::SubtaskFinished {
                attempt: state.attempt,
                index: state.index,
                metrics,
            });
        myself.stop(None);
        Ok(())
    }
}

impl Actor for SubtaskActor {
    type Msg = SubtaskMsg;
    type State = SubtaskState;
    type Arguments = SubtaskArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SubtaskMsg>,
        args: SubtaskArgs,
    ) -> Result<SubtaskState, ActorProcessingErr> {
        let graph = &args.graph;
        let plan = &graph.subtasks[args.index];
        let vertex = &graph.job.vertices[plan.id.vertex as usize];
        let assembled = super::assemble::assemble(graph, &args.registry, args.index, &args.config)?;
        let outbox = CreditOutbox::new(plan.outputs.len());
        let channel_count = plan.inputs.len();
        let gate = InputGate::new(channel_count.max(1), args.config.credits_per_channel);
        let task_name = format!(
            "{} ({}/{})",
            vertex.name,
            plan.id.index + 1,
            vertex.parallelism
        );
        Ok(SubtaskState {
            index: args.index,
            task_name,
            subtask_index: plan.id.index,
            parallelism: vertex.parallelism,
            node_names: vertex
                .nodes
                .iter()
                .map(|n| (*n, graph.job.stream.node(*n).name.clone()))
                .collect(),
            head: match assembled {
                super::assemble::AssembledHead::Source(s) => Head::Source(s),
                super::assemble::AssembledHead::Input(i) => Head::Input(i),
            },
            cx: TaskCx::new(outbox, vertex.head),
            gate,
            input_sides: plan.inputs.iter().map(|c| c.side).collect(),
            input_channels: plan.inputs.iter().map(|c| c.channel).collect(),
            output_channels: plan.outputs.iter().map(|c| c.channel).collect(),
            watermarks: WatermarkTracker::new(channel_count),
            barriers: BarrierHandler::new(args.config.checkpointing.mode, channel_count),
            attempt: args.attempt_number,
            input_finished_reported: false,
            expected_checkpoint: None,
            last_checkpoint: None,
            ended_inputs: 0,
            current: None,
            outputs: Vec::new(),
            inputs: Vec::new(),
            started: false,
            input_done: false,
            peer_gone: false,
            poll_scheduled: false,
            flush_armed: false,
            timer_armed_ms: None,
            clock: args.clock,
            open_context: OpenContext {
                job_name: args.job_name.clone(),
                job_id: args.job_id,
                subtask_index: plan.id.index,
                max_parallelism: graph.job.max_parallelism,
                attempt_number: args.attempt_number,
                state: Arc::new(
                    TaskStateInit::new(
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
                    ),
                ),
            },
            config: args.config,
            job_manager: args.job_manager,
            gauges: args.gauges,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SubtaskMsg>,
        message: SubtaskMsg,
        state: &mut SubtaskState,
    ) -> Result<(), ActorProcessingErr> {
        state.cx.now_ms = state.clock.now_ms();
        match message {
            SubtaskMsg::Wire { outputs, inputs } => {
                assert_eq!(outputs.len(), state.cx.outbox.channel_count());
                assert_eq!(inputs.len(), state.input_sides.len());
                state.outputs = outputs;
                state.inputs = inputs;
                return Ok(());
            }
            SubtaskMsg::Start => {
                let open_context = state.open_context.clone();
                let opened = match &mut state.head {
                    Head::Source(source) => source.open(&open_context),
                    Head::Input(head) => head.open(&open_context),
                };
                if let Err(error) = opened {
                    return Err(Box::new(SubtaskError::from_operator_error(
                        error,
                        &state.task_name,
                    )));
                }
                state.started = true;
                // Operators see processing time once at start, to schedule their timers.
                state.guarded(SubtaskState::on_processing_time)?;
                if let Head::Input(head) = &mut state.head
                    && state.inputs.is_empty()
                {
                    // No producer will ever send an end of input: the input is empty.
                    head.end_of_input(&mut state.cx);
                    state.input_done = true;
                }
                let credits = state.gate.initial_credits();
                for (producer, producer_output) in &state.inputs {
                    let _ = producer.send_message(SubtaskMsg::Credit {
                        channel: *producer_output,
                        credits,
                    });
                }
            }
            SubtaskMsg::Data { channel, batch } => {
                state.gate.handle_batch(channel, batch);
                state.guarded(|s| {
                    if let Err(error) = s.drive_input() {
                        s.cx.fail(s.cx.current_operator, error.message);
                    }
                })?;
            }
            SubtaskMsg::Credit { channel, credits } => {
                state.cx.outbox.handle_credit(channel, credits);
                state.transmit();
                state.guarded(|s| {
                    if let Err(error) = s.drive_input() {
                        s.cx.fail(s.cx.current_operator, error.message);
                    }
                })?;
            }
            SubtaskMsg::Poll => {
                state.poll_scheduled = false;
                let mut poll = None;
                state.guarded(|s| poll = s.poll_source())?;
                if poll == Some(SourcePoll::Idle) && !state.input_done {
                    state.poll_scheduled = true;
                    drop(myself.send_after(
                        Duration::from_millis(state.config.source_idle_poll_ms),
                        || SubtaskMsg::Poll,
                    ));
                }
            }
            SubtaskMsg::Flush => {
                state.flush_armed = false;
                state.guarded(SubtaskState::flush)?;
            }
            SubtaskMsg::ProcessingTime => {
                state.guarded(SubtaskState::on_processing_time)?;
            }
            SubtaskMsg::TriggerCheckpoint(barrier) => {
                state.guarded(|s| s.trigger_checkpoint(barrier))?;
            }
            SubtaskMsg::FinalCheckpoint { barrier, persist } => {
                state.cx.persist_snapshots = persist;
                state.guarded(|s| s.final_checkpoint(barrier))?;
                state.cx.persist_snapshots = true;
            }
            SubtaskMsg::Stop => {
                // Open transactions are aborted by `close`; the savepoint covers their records.
                let _ = state.close();
                let _ = state
                    .job_manager
                    .send_message(JobManagerMsg::SubtaskStopped {
                        attempt: state.attempt,
                        index: state.index,
                    });
                myself.stop(None);
                return Ok(());
            }
            SubtaskMsg::CheckpointComplete { id, is_final } => {
                let outcome = state.guarded(|s| s.notify_checkpoint_complete(id));
                // Reported before a failure propagates: a commit may have been partly done.
                state.report_commits();
                outcome?;
                if is_final && state.input_finished_reported {
                    return self.finish(&myself, state);
                }
            }
        }
        self.after_step(&myself, state)
    }
}

impl std::fmt::Debug for SubtaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubtaskState")
            .field("task", &self.task_name)
            .field("subtask", &(self.subtask_index, self.parallelism))
            .finish()
    }
}
