//! Operator chains: operators calling each other directly, inside one subtask.
//!
//! A chain is a tree of [`Chained`] endpoints rooted at the chain's head: every operator owns the
//! endpoints of its outputs (the next chained operators, and record writers for edges that leave
//! the chain). Records flow down by plain method calls, with no message, in *runs*: a `Vec` of
//! consecutive records with no control element among them. Each operator loops over its run with
//! its user function inlined and hands its output run to the next endpoint, so the cost of a
//! dynamic call is paid per run and operator, not per record. Control (watermarks, barriers, end
//! of input, flush) flows down the same tree between runs, so every operator sees control elements
//! in order with its records.
//!
//! Operators are written against [`OneInputOperator`] and wrapped in [`OneInputNode`], which
//! does the bookkeeping the operator must not: counting records, naming the running operator for
//! panic reports, forwarding control elements, feeding side outputs.

use std::any::Any;

use super::checkpointing::{SharedTaskStateInit, StateInitContext, StateSnapshotContext};
use super::context::{FunctionError, NodeId, RuntimeContext, TaskCx, UnrecoverableError};
use crate::checkpoint::{CheckpointBarrier, CheckpointId};
use crate::exchange::{ChannelBatch, Control, Record, Segment};
use crate::time::{Watermark, WatermarkStatus};

/// Records in and out of one operator instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OperatorCounters {
    /// Records the operator received.
    pub records_in: u64,
    /// Records the operator emitted (main output and side outputs).
    pub records_out: u64,
    /// Records that arrived too late for any window (dropped, or sent to the late side output).
    pub late_records: u64,
    /// Records the operator dropped by its semantics without them being late (a record that
    /// falls between sliding windows whose slide exceeds their size).
    pub dropped_records: u64,
}

/// The input endpoint of (part of) a chain, for elements of type `T`.
pub trait Chained<T>: Send {
    /// Opens this endpoint and everything below it.
    ///
    /// # Errors
    ///
    /// The first user function whose `open` failed, with the operator's name.
    fn open(&mut self, ctx: &OpenContext) -> Result<(), OperatorError>;
    /// Processes a run of consecutive records, in order (no control element among them).
    fn process_batch(&mut self, records: Vec<Record<T>>, cx: &mut TaskCx);
    /// Processes a watermark (after every record before it).
    fn process_watermark(&mut self, watermark: Watermark, cx: &mut TaskCx);
    /// The input became idle or active again (after every record before it).
    fn process_watermark_status(&mut self, status: WatermarkStatus, cx: &mut TaskCx);
    /// Processing time reached `now_ms`: operators whose requested time has come are called
    /// back, then the call passes on down the chain.
    fn on_processing_time(&mut self, now_ms: i64, cx: &mut TaskCx);
    /// Processes a checkpoint barrier: every operator snapshots its state (into
    /// [`TaskCx`]), then passes the barrier on.
    fn process_barrier(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx);
    /// Snapshots every operator at and below this endpoint without passing a barrier on (the
    /// final checkpoint of a bounded job, taken after the end of input).
    fn snapshot_state(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx);
    /// Checkpoint `id` completed: operators may publish what it covers (two-phase commit).
    fn notify_checkpoint_complete(&mut self, id: CheckpointId, cx: &mut TaskCx);
    /// All inputs ended: emit what is pending and pass the end on.
    fn end_of_input(&mut self, cx: &mut TaskCx);
    /// Hands partially filled batches to the outbox (the linger timer fired).
    fn flush(&mut self, cx: &mut TaskCx);
    /// Closes this endpoint and everything below it.
    ///
    /// # Errors
    ///
    /// The first user function whose `close` failed.
    fn close(&mut self) -> Result<(), OperatorError>;
    /// Appends the counters of every operator at and below this endpoint.
    fn metrics(&self, out: &mut Vec<(NodeId, OperatorCounters)>);
}

/// A type-erased `Box<dyn Chained<T>>`, used while assembling chains from the graph.
pub(crate) type ErasedChained = Box<dyn Any + Send>;

/// What `open` needs to build each operator's [`RuntimeContext`].
#[derive(Debug, Clone)]
pub struct OpenContext {
    pub(crate) job_name: String,
    pub(crate) job_id: crate::checkpoint::JobId,
    pub(crate) subtask_index: u32,
    pub(crate) max_parallelism: u32,
    pub(crate) attempt_number: u32,
    /// Restored state and backend settings of the subtask.
    pub(crate) state: SharedTaskStateInit,
    /// The subtask's live metrics, whose user metric groups the operators get.
    pub(crate) metrics: Option<std::sync::Arc<crate::metrics::SubtaskMetrics>>,
}

impl OpenContext {
    /// The state context of the operator described by `info`.
    pub(crate) fn state_init(&self, info: &OperatorInfo) -> StateInitContext {
        StateInitContext::new(
            &self.state,
            &info.state_id(),
            self.max_parallelism,
            info.parallelism,
            self.subtask_index,
        )
    }

    pub(crate) fn runtime_context(&self, info: &OperatorInfo) -> RuntimeContext {
        RuntimeContext {
            job_name: self.job_name.clone(),
            job_id: self.job_id,
            operator_name: info.name.clone(),
            uid: info.uid.clone(),
            subtask_index: self.subtask_index,
            parallelism: info.parallelism,
            max_parallelism: self.max_parallelism,
            attempt_number: self.attempt_number,
            metrics: self
                .metrics
                .as_ref()
                .map_or_else(crate::metrics::MetricGroup::detached, |cells| {
                    cells.metric_group(&info.name)
                }),
        }
    }
}

/// Static facts about one operator in a chain.
#[derive(Debug, Clone)]
pub struct OperatorInfo {
    /// The graph node.
    pub node: NodeId,
    /// Display name.
    pub name: String,
    /// User-set uid.
    pub uid: Option<String>,
    /// Parallelism.
    pub parallelism: u32,
}

impl OperatorInfo {
    /// The id under which the operator's state is stored in checkpoints and savepoints: its uid
    /// when one was set (stable across program changes, as in Flink), else one derived from its
    /// position in the graph.
    pub fn state_id(&self) -> String {
        self.uid
            .clone()
            .unwrap_or_else(|| format!("node-{}", self.node.0))
    }
}

/// A user function failed in `open` or `close`.
#[derive(Debug, thiserror::Error)]
#[error("operator '{operator}' failed in {phase}: {source}")]
pub struct OperatorError {
    /// The operator's name.
    pub operator: String,
    /// `open` or `close`.
    pub phase: &'static str,
    /// The function's error.
    #[source]
    pub source: FunctionError,
}

impl OperatorError {
    /// Whether a restart can fix this error: not for an [`UnrecoverableError`] anywhere in its
    /// source chain, nor for restored state that does not decode or has another type while
    /// state is initialized (the same checkpoint gives the same error on every restart).
    pub fn restart_can_fix(&self) -> bool {
        let restored_state_unreadable = self.phase == "initialize_state"
            && matches!(
                self.source.downcast_ref::<crate::state::StateError>(),
                Some(
                    crate::state::StateError::TypeMismatch { .. }
                        | crate::state::StateError::Corrupt(_)
                )
            );
        !(restored_state_unreadable || UnrecoverableError::is_in(self.source.as_ref()))
    }
}

/// Side outputs of one operator: per tag, a typed buffer and the chain that consumes it.
///
/// Operators write side-output records into the buffer (through their context) while the main
/// collector is borrowed; the node drains the buffers right after the operator call.
#[derive(Default)]
pub struct SideOutputs {
    ports: Vec<(String, Box<dyn ErasedSidePort>)>,
    pending: bool,
}

impl std::fmt::Debug for SideOutputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideOutputs")
            .field(
                "tags",
                &self.ports.iter().map(|(t, _)| t).collect::<Vec<_>>(),
            )
            .finish()
    }
}

pub(crate) trait ErasedSidePort: Send {
    fn as_any(&mut self) -> &mut dyn Any;
    fn drain(&mut self, cx: &mut TaskCx) -> u64;
    fn endpoint(&mut self) -> &mut dyn ChainedControl;
    fn metrics(&self, out: &mut Vec<(NodeId, OperatorCounters)>);
}

/// The type-independent part of [`Chained`]: control and lifecycle.
pub(crate) trait ChainedControl {
    fn open(&mut self, ctx: &OpenContext) -> Result<(), OperatorError>;
    fn process_watermark(&mut self, watermark: Watermark, cx: &mut TaskCx);
    fn process_watermark_status(&mut self, status: WatermarkStatus, cx: &mut TaskCx);
    fn on_processing_time(&mut self, now_ms: i64, cx: &mut TaskCx);
    fn process_barrier(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx);
    fn snapshot_state(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx);
    fn notify_checkpoint_complete(&mut self, id: CheckpointId, cx: &mut TaskCx);
    fn end_of_input(&mut self, cx: &mut TaskCx);
    fn flush(&mut self, cx: &mut TaskCx);
    fn close(&mut self) -> Result<(), OperatorError>;
}

impl<T> ChainedControl for Box<dyn Chained<T>> {
    fn open(&mut self, ctx: &OpenContext) -> Result<(), OperatorError> {
        (**self).open(ctx)
    }
    fn process_watermark(&mut self, watermark: Watermark, cx: &mut TaskCx) {
        (**self).process_watermark(watermark, cx);
    }
    fn process_watermark_status(&mut self, status: WatermarkStatus, cx: &mut TaskCx) {
        (**self).process_watermark_status(status, cx);
    }
    fn on_processing_time(&mut self, now_ms: i64, cx: &mut TaskCx) {
        (**self).on_processing_time(now_ms, cx);
    }
    fn process_barrier(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        (**self).process_barrier(barrier, cx);
    }
    fn snapshot_state(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        (**self).snapshot_state(barrier, cx);
    }
    fn notify_checkpoint_complete(&mut self, id: CheckpointId, cx: &mut TaskCx) {
        (**self).notify_checkpoint_complete(id, cx);
    }
    fn end_of_input(&mut self, cx: &mut TaskCx) {
        (**self).end_of_input(cx);
    }
    fn flush(&mut self, cx: &mut TaskCx) {
        (**self).flush(cx);
    }
    fn close(&mut self) -> Result<(), OperatorError> {
        (**self).close()
    }
}

struct SidePort<U> {
    buffer: Vec<Record<U>>,
    chain: Box<dyn Chained<U>>,
}

impl<U: Send + 'static> ErasedSidePort for SidePort<U> {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
    fn drain(&mut self, cx: &mut TaskCx) -> u64 {
        let drained = self.buffer.len() as u64;
        if drained > 0 {
            self.chain
                .process_batch(std::mem::take(&mut self.buffer), cx);
        }
        drained
    }
    fn endpoint(&mut self) -> &mut dyn ChainedControl {
        &mut self.chain
    }
    fn metrics(&self, out: &mut Vec<(NodeId, OperatorCounters)>) {
        self.chain.metrics(out);
    }
}

impl SideOutputs {
    /// Adds the consumer chain of side output `tag`.
    pub(crate) fn add_port<U: Send + 'static>(&mut self, tag: String, chain: Box<dyn Chained<U>>) {
        self.ports.push((
            tag,
            Box::new(SidePort {
                buffer: Vec::new(),
                chain,
            }),
        ));
    }

    /// Buffers `record` for side output `tag`. Returns `false` if nothing consumes that tag (the
    /// record is then discarded, as in Flink, and counted by the caller).
    pub(crate) fn push<U: 'static>(&mut self, tag: &str, record: Record<U>) -> bool {
        for (name, port) in &mut self.ports {
            if name == tag {
                if let Some(port) = port.as_any().downcast_mut::<SidePort<U>>() {
                    port.buffer.push(record);
                    self.pending = true;
                    return true;
                }
                // Same name, other type: the graph builder rejects this, so it cannot happen.
                debug_assert!(false, "side output '{tag}' has another type");
                return false;
            }
        }
        false
    }

    /// Feeds buffered side-output records to their chains. Called after every operator call,
    /// so the common case (nothing buffered) is an inlined flag test.
    #[inline]
    fn drain(&mut self, cx: &mut TaskCx) -> u64 {
        if self.pending {
            self.drain_pending(cx)
        } else {
            0
        }
    }

    #[cold]
    #[inline(never)]
    fn drain_pending(&mut self, cx: &mut TaskCx) -> u64 {
        self.pending = false;
        self.ports.iter_mut().map(|(_, p)| p.drain(cx)).sum()
    }

    fn for_each(&mut self, mut f: impl FnMut(&mut dyn ChainedControl)) {
        for (_, port) in &mut self.ports {
            f(port.endpoint());
        }
    }

    fn try_for_each(
        &mut self,
        mut f: impl FnMut(&mut dyn ChainedControl) -> Result<(), OperatorError>,
    ) -> Result<(), OperatorError> {
        for (_, port) in &mut self.ports {
            f(port.endpoint())?;
        }
        Ok(())
    }
}

/// Passes a control element emitted by an operator to the next endpoint.
pub(crate) fn forward_control<T>(next: &mut dyn Chained<T>, control: Control, cx: &mut TaskCx) {
    match control {
        Control::Watermark(watermark) => next.process_watermark(watermark, cx),
        Control::WatermarkStatus(status) => next.process_watermark_status(status, cx),
        Control::Barrier(barrier) => next.process_barrier(barrier, cx),
        Control::EndOfInput => next.end_of_input(cx),
    }
}

/// Emits an operator's main output downstream; Flink's `Collector`.
///
/// Records emitted while processing a record inherit its timestamp unless another is given.
pub struct Collector<'a, O> {
    out: &'a mut ChannelBatch<O>,
    timestamp: Option<i64>,
}

impl<O> std::fmt::Debug for Collector<'_, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("timestamp", &self.timestamp)
            .finish()
    }
}

impl<'a, O> Collector<'a, O> {
    pub(crate) fn new(out: &'a mut ChannelBatch<O>, timestamp: Option<i64>) -> Self {
        Self { out, timestamp }
    }

    /// Emits `value` with the current timestamp.
    #[inline]
    pub fn collect(&mut self, value: O) {
        self.out.records.push(Record {
            value,
            timestamp: self.timestamp,
        });
    }

    /// Emits `value` with an explicit event-time timestamp.
    #[inline]
    pub fn collect_with_timestamp(&mut self, value: O, timestamp: i64) {
        self.out
            .records
            .push(Record::with_timestamp(value, timestamp));
    }

    /// Emits a control element after the records emitted so far (operators that generate
    /// watermarks or watermark status, such as the timestamp assigner).
    pub(crate) fn emit_control(&mut self, control: Control) {
        self.out.push_control(control);
    }

    /// The timestamp given to records emitted with [`Collector::collect`].
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// Sets the timestamp given to records emitted with [`Collector::collect`] (a window
    /// operator stamps its results with the window's end).
    pub(crate) fn set_timestamp(&mut self, timestamp: Option<i64>) {
        self.timestamp = timestamp;
    }
}

/// Side outputs and facts about the current element, handed to process functions.
pub struct OperatorContext<'a> {
    side: &'a mut SideOutputs,
    timestamp: Option<i64>,
    unconsumed_side_records: &'a mut u64,
    now_ms: i64,
    wakeup_ms: &'a mut Option<i64>,
    failure: &'a mut Option<String>,
    counters: &'a mut OperatorCounters,
}

impl std::fmt::Debug for OperatorContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorContext")
            .field("timestamp", &self.timestamp)
            .finish()
    }
}

impl OperatorContext<'_> {
    /// The event-time timestamp of the element being processed, if it has one.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// The current processing time in milliseconds (the runtime's clock at the start of this
    /// processing step).
    pub fn current_processing_time(&self) -> i64 {
        self.now_ms
    }

    /// Asks for a call to `on_processing_time` once processing time reaches `at_ms`.
    pub fn request_processing_time(&mut self, at_ms: i64) {
        *self.wakeup_ms = Some(self.wakeup_ms.map_or(at_ms, |t| t.min(at_ms)));
    }

    /// Fails the task with `message` (bad input the operator cannot process, such as a record
    /// without timestamp in an event-time window). The rest of the current run is still
    /// processed; the job then fails naming this operator.
    pub fn fail(&mut self, message: impl Into<String>) {
        if self.failure.is_none() {
            *self.failure = Some(message.into());
        }
    }

    /// Counts a record that arrived too late (shown as `late_records` in the job result).
    pub fn count_late_record(&mut self) {
        self.counters.late_records += 1;
    }

    /// Counts a record the operator dropped by design without it being late (shown as
    /// `dropped_records` in the job result), so no record disappears unnoticed.
    pub fn count_dropped_record(&mut self) {
        self.counters.dropped_records += 1;
    }

    /// Emits `value` to the side output `tag` (with the current timestamp).
    pub fn output<U: 'static>(&mut self, tag: &crate::api::OutputTag<U>, value: U) {
        let record = Record {
            value,
            timestamp: self.timestamp,
        };
        if !self.side.push(tag.id(), record) {
            *self.unconsumed_side_records += 1;
        }
    }
}

/// An operator's context for a whole run of records: per record, the record's timestamp and a
/// collector emitting with it.
pub struct RunContext<'a, 'b, O> {
    ctx: &'a mut OperatorContext<'b>,
    out: &'a mut ChannelBatch<O>,
}

impl<O> std::fmt::Debug for RunContext<'_, '_, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext").finish_non_exhaustive()
    }
}

impl<'b, O> RunContext<'_, 'b, O> {
    /// Runs `f` for one record, with the context and a collector set to its timestamp.
    #[inline]
    pub fn process_with<I>(
        &mut self,
        record: Record<I>,
        f: impl FnOnce(Record<I>, &mut OperatorContext<'b>, &mut Collector<'_, O>),
    ) {
        let timestamp = record.timestamp;
        self.ctx.timestamp = timestamp;
        f(record, self.ctx, &mut Collector::new(self.out, timestamp));
    }

    /// The operator context, for per-run work (failing the task, counting).
    pub fn context(&mut self) -> &mut OperatorContext<'b> {
        self.ctx
    }

    /// Emits a whole run of output records at once, after whatever was emitted before (an
    /// operator that computes its run in one pass, such as `map` and `filter`: no collector
    /// and no capacity check per record, and the vector it built, often the input's own
    /// buffer reused by an in-place `collect`, becomes the output as it is).
    #[inline]
    pub(crate) fn emit_run(&mut self, records: Vec<Record<O>>) {
        if self.out.records.is_empty() {
            // Controls emitted so far (at position 0) stay before these records.
            self.out.records = records;
        } else {
            self.out.records.extend(records);
        }
    }
}

/// A one-input operator core: what `map`, `filter`, `process`, rolling aggregations are made of.
///
/// The wrapper (`OneInputNode`) counts records, forwards watermarks and barriers, and feeds side
/// outputs; the operator only turns inputs into outputs.
pub trait OneInputOperator<I>: Send + 'static {
    /// The main output type.
    type Out: Send + 'static;

    /// Called once before the first element.
    ///
    /// # Errors
    ///
    /// A user function's `open` failed; the job fails.
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        Ok(())
    }

    /// Processes one record.
    fn process(
        &mut self,
        record: Record<I>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, Self::Out>,
    );

    /// Processes a run of consecutive records in order. The default calls
    /// [`OneInputOperator::process`] for each; an operator overrides it to do per-run work once
    /// (a keyed operator resolves its state table once per run, not once per record).
    #[inline]
    fn process_run(&mut self, records: Vec<Record<I>>, run: &mut RunContext<'_, '_, Self::Out>) {
        for record in records {
            run.process_with(record, |record, ctx, out| self.process(record, ctx, out));
        }
    }

    /// Called when the watermark advances, before it is forwarded downstream.
    fn on_watermark(
        &mut self,
        _watermark: Watermark,
        _ctx: &mut OperatorContext<'_>,
        _out: &mut Collector<'_, Self::Out>,
    ) {
    }

    /// Whether the node forwards incoming watermarks downstream after
    /// [`OneInputOperator::on_watermark`] (default `true`). Operators that generate watermarks
    /// themselves (the timestamp assigner) return `false` and emit their own.
    fn forwards_watermarks(&self) -> bool {
        true
    }

    /// Called when processing time reached a time the operator asked for with
    /// [`OperatorContext::request_processing_time`] (or later). `now` is in milliseconds of
    /// the runtime's clock.
    fn on_processing_time(
        &mut self,
        _now: i64,
        _ctx: &mut OperatorContext<'_>,
        _out: &mut Collector<'_, Self::Out>,
    ) {
    }

    /// Called once when all inputs ended, before the end is forwarded.
    fn on_end_of_input(
        &mut self,
        _ctx: &mut OperatorContext<'_>,
        _out: &mut Collector<'_, Self::Out>,
    ) {
    }

    /// The state its user function declares (the job's fingerprint covers it); none by
    /// default.
    fn state_schema(&self) -> crate::state::StateSchema {
        crate::state::StateSchema::empty()
    }

    /// Sets up (and restores) the operator's state; called once before
    /// [`OneInputOperator::open`]. Keyed operators open their store here.
    ///
    /// # Errors
    ///
    /// The state cannot be opened or restored; the job fails (or recovers).
    fn initialize_state(&mut self, _ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        Ok(())
    }

    /// Stores the operator's state in a checkpoint; called when the barrier reaches the
    /// operator, after every record before it.
    ///
    /// # Errors
    ///
    /// The state cannot be snapshotted; the checkpoint is declined and the job fails.
    fn snapshot_state(&mut self, _ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        Ok(())
    }

    /// Checkpoint `id` completed (every subtask stored its state).
    ///
    /// # Errors
    ///
    /// Publishing what the checkpoint covers failed; the job fails.
    fn notify_checkpoint_complete(&mut self, _id: CheckpointId) -> Result<(), FunctionError> {
        Ok(())
    }

    /// Called once after the last element.
    ///
    /// # Errors
    ///
    /// A user function's `close` failed; the job fails.
    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// What every operator node does besides running its operator: emit into the next endpoint and
/// the side outputs, count records, pass on processing-time requests and failures, forward
/// control elements, open and close what is below it.
pub(crate) struct NodeCore<O> {
    pub(crate) info: OperatorInfo,
    next: Box<dyn Chained<O>>,
    side: SideOutputs,
    pub(crate) counters: OperatorCounters,
    unconsumed_side_records: u64,
    /// The processing time the operator asked to be called back at.
    wakeup_ms: Option<i64>,
    failure: Option<String>,
    /// This subtask's index, from `initialize`.
    subtask_index: u32,
    /// Restored from a checkpoint taken after this operator's input ended (see
    /// [`finished_on_restore`]): its end-of-input hook already ran and is not run again.
    pub(crate) finished_on_restore: bool,
}

impl<O: Send + 'static> NodeCore<O> {
    pub(crate) fn new(info: OperatorInfo, next: Box<dyn Chained<O>>, side: SideOutputs) -> Self {
        Self {
            info,
            next,
            side,
            counters: OperatorCounters::default(),
            unconsumed_side_records: 0,
            // Every operator gets one `on_processing_time` call when its subtask starts, so it
            // can schedule itself (the periodic watermark emitter does).
            wakeup_ms: Some(i64::MIN),
            failure: None,
            subtask_index: 0,
            finished_on_restore: false,
        }
    }

    /// Runs `f` once with a context and a collector, then sends what it emitted on.
    pub(crate) fn run(
        &mut self,
        cx: &mut TaskCx,
        f: impl FnOnce(&mut OperatorContext<'_>, &mut Collector<'_, O>),
    ) {
        cx.current_operator = self.info.node;
        let mut out = ChannelBatch::with_capacity(0);
        let mut ctx = OperatorContext {
            side: &mut self.side,
            timestamp: None,
            unconsumed_side_records: &mut self.unconsumed_side_records,
            now_ms: cx.now_ms,
            wakeup_ms: &mut self.wakeup_ms,
            failure: &mut self.failure,
            counters: &mut self.counters,
        };
        f(&mut ctx, &mut Collector::new(&mut out, None));
        self.emit(out, cx);
    }

    /// Runs `f` for each record of a run (user code of this operator runs until the loop ends;
    /// downstream runs after it, so a panic inside the loop is this operator's), then sends what
    /// it emitted on.
    #[inline]
    pub(crate) fn run_batch<I>(
        &mut self,
        records: Vec<Record<I>>,
        cx: &mut TaskCx,
        mut f: impl FnMut(Record<I>, &mut OperatorContext<'_>, &mut Collector<'_, O>),
    ) {
        self.run_whole(records, cx, |records, run| {
            for record in records {
                run.process_with(record, &mut f);
            }
        });
    }

    /// Hands a whole run to `f` (an operator's [`OneInputOperator::process_run`]), then sends
    /// what it emitted on.
    #[inline]
    pub(crate) fn run_whole<I>(
        &mut self,
        records: Vec<Record<I>>,
        cx: &mut TaskCx,
        f: impl FnOnce(Vec<Record<I>>, &mut RunContext<'_, '_, O>),
    ) {
        self.counters.records_in += records.len() as u64;
        cx.current_operator = self.info.node;
        let mut out = ChannelBatch::with_capacity(records.len());
        let mut ctx = OperatorContext {
            side: &mut self.side,
            timestamp: None,
            unconsumed_side_records: &mut self.unconsumed_side_records,
            now_ms: cx.now_ms,
            wakeup_ms: &mut self.wakeup_ms,
            failure: &mut self.failure,
            counters: &mut self.counters,
        };
        f(
            records,
            &mut RunContext {
                ctx: &mut ctx,
                out: &mut out,
            },
        );
        self.emit(out, cx);
    }

    /// Sends what the operator emitted downstream: one run without control elements (the
    /// common case, no copy), or its runs and control elements in order.
    #[inline]
    pub(crate) fn emit(&mut self, out: ChannelBatch<O>, cx: &mut TaskCx) {
        self.counters.records_out += out.records.len() as u64;
        if out.controls.is_empty() {
            if !out.records.is_empty() {
                self.next.process_batch(out.records, cx);
            }
        } else {
            for segment in out.into_segments() {
                match segment {
                    Segment::Records(run) => self.next.process_batch(run, cx),
                    Segment::Control(control) => forward_control(&mut *self.next, control, cx),
                }
            }
        }
        self.counters.records_out += self.side.drain(cx);
        if let Some(at_ms) = self.wakeup_ms {
            cx.request_wakeup(at_ms);
        }
        if let Some(message) = self.failure.take() {
            cx.fail(self.info.node, message);
        }
    }

    /// Whether the operator's requested processing time has come (and forgets the request);
    /// re-requests a later one.
    pub(crate) fn processing_time_due(&mut self, now_ms: i64, cx: &mut TaskCx) -> bool {
        match self.wakeup_ms {
            Some(at_ms) if at_ms <= now_ms => {
                self.wakeup_ms = None;
                true
            }
            Some(at_ms) => {
                cx.request_wakeup(at_ms);
                false
            }
            None => false,
        }
    }

    pub(crate) fn open_below(&mut self, ctx: &OpenContext) -> Result<(), OperatorError> {
        self.next.open(ctx)?;
        self.side.try_for_each(|s| s.open(ctx))
    }

    pub(crate) fn forward_watermark(&mut self, watermark: Watermark, cx: &mut TaskCx) {
        self.next.process_watermark(watermark, cx);
        self.side.for_each(|s| s.process_watermark(watermark, cx));
    }

    pub(crate) fn forward_watermark_status(&mut self, status: WatermarkStatus, cx: &mut TaskCx) {
        self.next.process_watermark_status(status, cx);
        self.side
            .for_each(|s| s.process_watermark_status(status, cx));
    }

    pub(crate) fn forward_processing_time(&mut self, now_ms: i64, cx: &mut TaskCx) {
        self.next.on_processing_time(now_ms, cx);
        self.side.for_each(|s| s.on_processing_time(now_ms, cx));
    }

    pub(crate) fn forward_barrier(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        self.next.process_barrier(barrier, cx);
        self.side.for_each(|s| s.process_barrier(barrier, cx));
    }

    /// Snapshots the operator through `f` into the task's checkpoint parts.
    pub(crate) fn snapshot_operator(
        &mut self,
        barrier: CheckpointBarrier,
        cx: &mut TaskCx,
        f: impl FnOnce(&mut StateSnapshotContext) -> Result<(), FunctionError>,
    ) {
        cx.current_operator = self.info.node;
        let mut ctx = StateSnapshotContext::new(barrier, cx.now_ms, cx.persist_snapshots);
        let finished = if cx.input_finished {
            let mark = (self.subtask_index, self.info.parallelism);
            ctx.add_list_state(
                FINISHED_STATE,
                crate::state::OperatorStateMode::Union,
                &[mark],
            )
            .map_err(FunctionError::from)
        } else {
            Ok(())
        };
        match finished.and_then(|()| f(&mut ctx)) {
            Ok(()) => cx
                .snapshots
                .push((self.info.state_id(), ctx.into_pending())),
            Err(error) => cx.fail(
                self.info.node,
                format!("snapshot of checkpoint {} failed: {error}", barrier.id.0),
            ),
        }
    }

    pub(crate) fn snapshot_below(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        self.next.snapshot_state(barrier, cx);
        self.side.for_each(|s| s.snapshot_state(barrier, cx));
    }

    /// Tells the operator (through `f`) and everything below that checkpoint `id` completed.
    pub(crate) fn notify_complete(
        &mut self,
        id: CheckpointId,
        cx: &mut TaskCx,
        f: impl FnOnce() -> Result<(), FunctionError>,
    ) {
        cx.current_operator = self.info.node;
        if let Err(error) = f() {
            cx.fail(
                self.info.node,
                format!("completing checkpoint {} failed: {error}", id.0),
            );
        }
        self.next.notify_checkpoint_complete(id, cx);
        self.side.for_each(|s| s.notify_checkpoint_complete(id, cx));
    }

    /// Runs the operator's `initialize_state` (through `f`), then reports restored state nobody
    /// took.
    pub(crate) fn initialize(
        &mut self,
        ctx: &OpenContext,
        f: impl FnOnce(&mut StateInitContext) -> Result<(), FunctionError>,
    ) -> Result<(), OperatorError> {
        let mut init = ctx.state_init(&self.info);
        self.subtask_index = ctx.subtask_index;
        let marks = init
            .list_state::<(u32, u32)>(FINISHED_STATE)
            .map_err(|e| OperatorError {
                operator: self.info.name.clone(),
                phase: "initialize_state",
                source: e.into(),
            })?;
        self.finished_on_restore =
            finished_on_restore(&marks, ctx.subtask_index, self.info.parallelism);
        f(&mut init).map_err(|source| OperatorError {
            operator: self.info.name.clone(),
            phase: "initialize_state",
            source,
        })
    }

    pub(crate) fn forward_end_of_input(&mut self, cx: &mut TaskCx) {
        self.next.end_of_input(cx);
        self.side.for_each(|s| s.end_of_input(cx));
    }

    pub(crate) fn forward_flush(&mut self, cx: &mut TaskCx) {
        self.next.flush(cx);
        self.side.for_each(|s| s.flush(cx));
    }

    /// Closes what is below, after the operator's own `close` result.
    pub(crate) fn close_below(
        &mut self,
        own: Result<(), FunctionError>,
    ) -> Result<(), OperatorError> {
        let own = own.map_err(|source| OperatorError {
            operator: self.info.name.clone(),
            phase: "close",
            source,
        });
        // Close everything below even if this operator failed, then report the first error.
        let below = self.next.close();
        let side = self.side.try_for_each(|s| s.close());
        own.and(below).and(side)
    }

    pub(crate) fn open_error(&self, source: FunctionError) -> OperatorError {
        OperatorError {
            operator: self.info.name.clone(),
            phase: "open",
            source,
        }
    }

    pub(crate) fn metrics(&self, out: &mut Vec<(NodeId, OperatorCounters)>) {
        out.push((self.info.node, self.counters));
        self.next.metrics(out);
        for (_, port) in &self.side.ports {
            port.metrics(out);
        }
    }
}

/// The union list state in which a subtask whose input ended marks each of its operators'
/// snapshots with `(subtask index, parallelism)`.
pub(crate) const FINISHED_STATE: &str = "_finished";

/// Whether subtask `index` of `parallelism` restores an operator finished (Flink's
/// "finished on restore", FLIP-147): the operator's end-of-input hook ran before the snapshot
/// and must not run again. `marks` are the `(index, parallelism)` marks of the old subtasks
/// whose input had ended. Either every old subtask had finished (the operator is fully
/// finished, at any parallelism), or the parallelism is unchanged and this very subtask had:
/// its inputs are then finished too (a source restores finished, and a subtask finishes only
/// once all its inputs did), so all it will see is the end of its input.
pub(crate) fn finished_on_restore(marks: &[(u32, u32)], index: u32, parallelism: u32) -> bool {
    let Some(&(_, old_parallelism)) = marks.first() else {
        return false;
    };
    if marks.iter().any(|&(_, p)| p != old_parallelism) {
        return false;
    }
    let finished: std::collections::BTreeSet<u32> = marks.iter().map(|&(i, _)| i).collect();
    let fully = (0..old_parallelism).all(|i| finished.contains(&i));
    fully || (old_parallelism == parallelism && finished.contains(&index))
}

/// Runs a [`OneInputOperator`] inside a chain.
pub(crate) struct OneInputNode<I, Op: OneInputOperator<I>> {
    core: NodeCore<Op::Out>,
    operator: Op,
    _input: std::marker::PhantomData<fn(I)>,
}

impl<I, Op: OneInputOperator<I>> std::fmt::Debug for OneInputNode<I, Op> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneInputNode")
            .field("info", &self.core.info)
            .finish()
    }
}

impl<I, Op: OneInputOperator<I>> OneInputNode<I, Op> {
    /// Wraps `operator`, emitting into `next` and `side`.
    pub(crate) fn new(
        info: OperatorInfo,
        operator: Op,
        next: Box<dyn Chained<Op::Out>>,
        side: SideOutputs,
    ) -> Self {
        Self {
            core: NodeCore::new(info, next, side),
            operator,
            _input: std::marker::PhantomData,
        }
    }
}

impl<I: Send + 'static, Op: OneInputOperator<I>> Chained<I> for OneInputNode<I, Op> {
    fn open(&mut self, ctx: &OpenContext) -> Result<(), OperatorError> {
        let operator = &mut self.operator;
        self.core
            .initialize(ctx, |init| operator.initialize_state(init))?;
        let runtime = ctx.runtime_context(&self.core.info);
        self.operator
            .open(&runtime)
            .map_err(|source| self.core.open_error(source))?;
        self.core.open_below(ctx)
    }

    fn process_batch(&mut self, records: Vec<Record<I>>, cx: &mut TaskCx) {
        let operator = &mut self.operator;
        self.core.run_whole(records, cx, |records, run| {
            operator.process_run(records, run)
        });
    }

    fn process_watermark(&mut self, watermark: Watermark, cx: &mut TaskCx) {
        let operator = &mut self.operator;
        self.core
            .run(cx, |ctx, out| operator.on_watermark(watermark, ctx, out));
        if self.operator.forwards_watermarks() {
            self.core.forward_watermark(watermark, cx);
        }
    }

    fn process_watermark_status(&mut self, status: WatermarkStatus, cx: &mut TaskCx) {
        // An operator that makes its own watermarks also decides its own status.
        if self.operator.forwards_watermarks() {
            self.core.forward_watermark_status(status, cx);
        }
    }

    fn on_processing_time(&mut self, now_ms: i64, cx: &mut TaskCx) {
        if self.core.processing_time_due(now_ms, cx) {
            let operator = &mut self.operator;
            self.core
                .run(cx, |ctx, out| operator.on_processing_time(now_ms, ctx, out));
        }
        self.core.forward_processing_time(now_ms, cx);
    }

    fn process_barrier(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        let operator = &mut self.operator;
        self.core
            .snapshot_operator(barrier, cx, |ctx| operator.snapshot_state(ctx));
        self.core.forward_barrier(barrier, cx);
    }

    fn snapshot_state(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        let operator = &mut self.operator;
        self.core
            .snapshot_operator(barrier, cx, |ctx| operator.snapshot_state(ctx));
        self.core.snapshot_below(barrier, cx);
    }

    fn notify_checkpoint_complete(&mut self, id: CheckpointId, cx: &mut TaskCx) {
        let operator = &mut self.operator;
        self.core
            .notify_complete(id, cx, || operator.notify_checkpoint_complete(id));
    }

    fn end_of_input(&mut self, cx: &mut TaskCx) {
        if !self.core.finished_on_restore {
            let operator = &mut self.operator;
            self.core
                .run(cx, |ctx, out| operator.on_end_of_input(ctx, out));
        }
        self.core.forward_end_of_input(cx);
    }

    fn flush(&mut self, cx: &mut TaskCx) {
        self.core.forward_flush(cx);
    }

    fn close(&mut self) -> Result<(), OperatorError> {
        let own = self.operator.close();
        self.core.close_below(own)
    }

    fn metrics(&self, out: &mut Vec<(NodeId, OperatorCounters)>) {
        self.core.metrics(out);
    }
}

/// Several consumers of one output inside a chain (a stream used twice): each gets every element.
pub(crate) struct Fanout<T> {
    parts: Vec<Box<dyn Chained<T>>>,
}

impl<T: Clone + Send + 'static> Fanout<T> {
    pub(crate) fn new(parts: Vec<Box<dyn Chained<T>>>) -> Self {
        Self { parts }
    }
}

impl<T: Clone + Send + 'static> Chained<T> for Fanout<T> {
    fn open(&mut self, ctx: &OpenContext) -> Result<(), OperatorError> {
        self.parts.iter_mut().try_for_each(|p| p.open(ctx))
    }
    fn process_batch(&mut self, records: Vec<Record<T>>, cx: &mut TaskCx) {
        if let Some((last, rest)) = self.parts.split_last_mut() {
            for part in rest {
                part.process_batch(records.clone(), cx);
            }
            last.process_batch(records, cx);
        }
    }
    fn process_watermark(&mut self, watermark: Watermark, cx: &mut TaskCx) {
        for part in &mut self.parts {
            part.process_watermark(watermark, cx);
        }
    }
    fn process_watermark_status(&mut self, status: WatermarkStatus, cx: &mut TaskCx) {
        for part in &mut self.parts {
            part.process_watermark_status(status, cx);
        }
    }
    fn on_processing_time(&mut self, now_ms: i64, cx: &mut TaskCx) {
        for part in &mut self.parts {
            part.on_processing_time(now_ms, cx);
        }
    }
    fn process_barrier(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        for part in &mut self.parts {
            part.process_barrier(barrier, cx);
        }
    }
    fn snapshot_state(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        for part in &mut self.parts {
            part.snapshot_state(barrier, cx);
        }
    }
    fn notify_checkpoint_complete(&mut self, id: CheckpointId, cx: &mut TaskCx) {
        for part in &mut self.parts {
            part.notify_checkpoint_complete(id, cx);
        }
    }
    fn end_of_input(&mut self, cx: &mut TaskCx) {
        for part in &mut self.parts {
            part.end_of_input(cx);
        }
    }
    fn flush(&mut self, cx: &mut TaskCx) {
        for part in &mut self.parts {
            part.flush(cx);
        }
    }
    fn close(&mut self) -> Result<(), OperatorError> {
        let mut first = Ok(());
        for part in &mut self.parts {
            let result = part.close();
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
    fn metrics(&self, out: &mut Vec<(NodeId, OperatorCounters)>) {
        for part in &self.parts {
            part.metrics(out);
        }
    }
}

/// The output of an operator nobody consumes: elements end here (counted as the operator's
/// output, as in Flink, where a dangling operator still runs).
#[derive(Debug, Default)]
pub(crate) struct Discard;

impl<T: Send> Chained<T> for Discard {
    fn open(&mut self, _ctx: &OpenContext) -> Result<(), OperatorError> {
        Ok(())
    }
    fn process_batch(&mut self, _records: Vec<Record<T>>, _cx: &mut TaskCx) {}
    fn process_watermark(&mut self, _watermark: Watermark, _cx: &mut TaskCx) {}
    fn process_watermark_status(&mut self, _status: WatermarkStatus, _cx: &mut TaskCx) {}
    fn on_processing_time(&mut self, _now_ms: i64, _cx: &mut TaskCx) {}
    fn process_barrier(&mut self, _barrier: CheckpointBarrier, _cx: &mut TaskCx) {}
    fn snapshot_state(&mut self, _barrier: CheckpointBarrier, _cx: &mut TaskCx) {}
    fn notify_checkpoint_complete(&mut self, _id: CheckpointId, _cx: &mut TaskCx) {}
    fn end_of_input(&mut self, _cx: &mut TaskCx) {}
    fn flush(&mut self, _cx: &mut TaskCx) {}
    fn close(&mut self) -> Result<(), OperatorError> {
        Ok(())
    }
    fn metrics(&self, _out: &mut Vec<(NodeId, OperatorCounters)>) {}
}

#[cfg(test)]
mod finished_on_restore_tests {
    use super::finished_on_restore;

    #[test]
    fn fully_finished_operators_restore_finished_at_any_parallelism() {
        let all = [(1, 3), (0, 3), (2, 3)];
        for (index, parallelism) in [(0, 3), (2, 3), (0, 1), (4, 5)] {
            assert!(finished_on_restore(&all, index, parallelism));
        }
    }

    #[test]
    fn a_finished_subtask_restores_finished_only_at_the_same_parallelism() {
        let some = [(1, 3)];
        assert!(finished_on_restore(&some, 1, 3));
        assert!(!finished_on_restore(&some, 0, 3));
        assert!(!finished_on_restore(&some, 1, 2));
        assert!(!finished_on_restore(&some, 0, 1));
    }

    #[test]
    fn no_or_inconsistent_marks_are_not_finished() {
        assert!(!finished_on_restore(&[], 0, 1));
        // Marks of two parallelisms cannot come from one checkpoint: run the hooks.
        assert!(!finished_on_restore(&[(0, 1), (0, 2), (1, 2)], 0, 1));
    }
}
