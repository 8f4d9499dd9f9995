//! Two-input operators: `co_map`, `co_flat_map` over connected streams.
//!
//! A two-input operator always heads its chain (it cannot be chained to either input); its
//! watermark is the minimum over both inputs, which the subtask's tracker computes across all
//! input channels.

use super::chain::{
    Chained, Collector, NodeCore, OpenContext, OperatorContext, OperatorCounters, OperatorError,
    OperatorInfo, SideOutputs,
};
use super::checkpointing::{StateInitContext, StateSnapshotContext};
use super::context::{FunctionError, NodeId, RuntimeContext, TaskCx};
use crate::api::functions::{CoFlatMapFunction, CoMapFunction};
use crate::checkpoint::{CheckpointBarrier, CheckpointId};
use crate::exchange::Record;
use crate::time::{Watermark, WatermarkStatus};

/// A two-input operator core (the two-input counterpart of [`OneInputOperator`]).
///
/// [`OneInputOperator`]: super::OneInputOperator
pub trait TwoInputOperator<A, B>: Send + 'static {
    /// The output type.
    type Out: Send + 'static;
    /// Called once before the first element.
    ///
    /// # Errors
    ///
    /// The user function's `open` failed.
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Processes a record of the first input.
    fn process1(
        &mut self,
        record: Record<A>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, Self::Out>,
    );
    /// Processes a record of the second input.
    fn process2(
        &mut self,
        record: Record<B>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, Self::Out>,
    );
    /// Called when the combined watermark of both inputs advances, before it is forwarded.
    fn on_watermark(
        &mut self,
        _watermark: Watermark,
        _ctx: &mut OperatorContext<'_>,
        _out: &mut Collector<'_, Self::Out>,
    ) {
    }
    /// Called when processing time reached a requested time.
    fn on_processing_time(
        &mut self,
        _now_ms: i64,
        _ctx: &mut OperatorContext<'_>,
        _out: &mut Collector<'_, Self::Out>,
    ) {
    }
    /// Called once when both inputs ended.
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

    /// Sets up (and restores) the operator's state, before `open` (see
    /// [`OneInputOperator::initialize_state`](super::OneInputOperator::initialize_state)).
    ///
    /// # Errors
    ///
    /// The state cannot be opened or restored.
    fn initialize_state(&mut self, _ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Stores the operator's state when the (aligned) barrier of both inputs reaches it.
    ///
    /// # Errors
    ///
    /// The state cannot be snapshotted.
    fn snapshot_state(&mut self, _ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Checkpoint `id` completed.
    ///
    /// # Errors
    ///
    /// Publishing what the checkpoint covers failed.
    fn notify_checkpoint_complete(&mut self, _id: CheckpointId) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Called once after the last element.
    ///
    /// # Errors
    ///
    /// The user function's `close` failed.
    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// `co_map` over a [`CoMapFunction`].
#[derive(Debug, Clone)]
pub(crate) struct CoMapOperator<F>(pub(crate) F);

impl<A, B, F: CoMapFunction<A, B>> TwoInputOperator<A, B> for CoMapOperator<F>
where
    F::Out: Send + 'static,
{
    type Out = F::Out;

    fn state_schema(&self) -> crate::state::StateSchema {
        crate::api::Operator::state_schema(&self.0)
    }

    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        crate::api::operator::initialize_fields(&mut self.0, ctx)
    }

    fn snapshot_state(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        crate::api::operator::snapshot_fields(&self.0, ctx)
    }
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.0.open(ctx)
    }
    fn process1(
        &mut self,
        record: Record<A>,
        _ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let value = self.0.map1(record.value);
        out.collect(value);
    }
    fn process2(
        &mut self,
        record: Record<B>,
        _ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let value = self.0.map2(record.value);
        out.collect(value);
    }
    fn close(&mut self) -> Result<(), FunctionError> {
        self.0.close()
    }
}

/// `co_flat_map` over a [`CoFlatMapFunction`].
#[derive(Debug, Clone)]
pub(crate) struct CoFlatMapOperator<F>(pub(crate) F);

impl<A, B, F: CoFlatMapFunction<A, B>> TwoInputOperator<A, B> for CoFlatMapOperator<F>
where
    F::Out: Send + 'static,
{
    type Out = F::Out;

    fn state_schema(&self) -> crate::state::StateSchema {
        crate::api::Operator::state_schema(&self.0)
    }

    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        crate::api::operator::initialize_fields(&mut self.0, ctx)
    }

    fn snapshot_state(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        crate::api::operator::snapshot_fields(&self.0, ctx)
    }
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.0.open(ctx)
    }
    fn process1(
        &mut self,
        record: Record<A>,
        _ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.0.flat_map1(record.value, out);
    }
    fn process2(
        &mut self,
        record: Record<B>,
        _ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.0.flat_map2(record.value, out);
    }
    fn close(&mut self) -> Result<(), FunctionError> {
        self.0.close()
    }
}

/// A pair of closures as a [`CoMapFunction`].
#[derive(Debug, Clone)]
pub(crate) struct FnCoMap<F1, F2>(pub(crate) F1, pub(crate) F2);

impl<A, B, O, F1, F2> CoMapFunction<A, B> for FnCoMap<F1, F2>
where
    F1: FnMut(A) -> O + Clone + Send + 'static,
    F2: FnMut(B) -> O + Clone + Send + 'static,
{
    type Out = O;
    fn map1(&mut self, value: A) -> O {
        (self.0)(value)
    }
    fn map2(&mut self, value: B) -> O {
        (self.1)(value)
    }
}

/// A pair of iterator-returning closures as a [`CoFlatMapFunction`].
#[derive(Debug, Clone)]
pub(crate) struct FnCoFlatMap<F1, F2>(pub(crate) F1, pub(crate) F2);

impl<A, B, O, I1, I2, F1, F2> CoFlatMapFunction<A, B> for FnCoFlatMap<F1, F2>
where
    I1: IntoIterator<Item = O>,
    I2: IntoIterator<Item = O>,
    F1: FnMut(A) -> I1 + Clone + Send + 'static,
    F2: FnMut(B) -> I2 + Clone + Send + 'static,
{
    type Out = O;
    fn flat_map1(&mut self, value: A, out: &mut Collector<'_, O>) {
        for item in (self.0)(value) {
            out.collect(item);
        }
    }
    fn flat_map2(&mut self, value: B, out: &mut Collector<'_, O>) {
        for item in (self.1)(value) {
            out.collect(item);
        }
    }
}

/// The chain head interface of a two-input operator.
pub(crate) trait TwoInputChained<A, B>: Send {
    fn open(&mut self, ctx: &OpenContext) -> Result<(), OperatorError>;
    fn process_batch1(&mut self, records: Vec<Record<A>>, cx: &mut TaskCx);
    fn process_batch2(&mut self, records: Vec<Record<B>>, cx: &mut TaskCx);
    fn process_watermark(&mut self, watermark: Watermark, cx: &mut TaskCx);
    fn process_watermark_status(&mut self, status: WatermarkStatus, cx: &mut TaskCx);
    fn on_processing_time(&mut self, now_ms: i64, cx: &mut TaskCx);
    fn process_barrier(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx);
    fn snapshot_state(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx);
    fn notify_checkpoint_complete(&mut self, id: CheckpointId, cx: &mut TaskCx);
    fn end_of_input(&mut self, cx: &mut TaskCx);
    fn flush(&mut self, cx: &mut TaskCx);
    fn close(&mut self) -> Result<(), OperatorError>;
    fn metrics(&self, out: &mut Vec<(NodeId, OperatorCounters)>);
}

/// Runs a [`TwoInputOperator`] at the head of a chain.
pub(crate) struct TwoInputNode<Op: TwoInputOperator<A, B>, A, B> {
    core: NodeCore<Op::Out>,
    operator: Op,
    _inputs: std::marker::PhantomData<fn(A, B)>,
}

impl<Op: TwoInputOperator<A, B>, A, B> TwoInputNode<Op, A, B> {
    pub(crate) fn new(
        info: OperatorInfo,
        operator: Op,
        next: Box<dyn Chained<Op::Out>>,
        side: SideOutputs,
    ) -> Self {
        Self {
            core: NodeCore::new(info, next, side),
            operator,
            _inputs: std::marker::PhantomData,
        }
    }
}

impl<Op: TwoInputOperator<A, B>, A: Send + 'static, B: Send + 'static> TwoInputChained<A, B>
    for TwoInputNode<Op, A, B>
{
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
    fn process_batch1(&mut self, records: Vec<Record<A>>, cx: &mut TaskCx) {
        let operator = &mut self.operator;
        self.core.run_batch(records, cx, |record, ctx, out| {
            operator.process1(record, ctx, out)
        });
    }
    fn process_batch2(&mut self, records: Vec<Record<B>>, cx: &mut TaskCx) {
        let operator = &mut self.operator;
        self.core.run_batch(records, cx, |record, ctx, out| {
            operator.process2(record, ctx, out)
        });
    }
    fn process_watermark(&mut self, watermark: Watermark, cx: &mut TaskCx) {
        let operator = &mut self.operator;
        self.core
            .run(cx, |ctx, out| operator.on_watermark(watermark, ctx, out));
        self.core.forward_watermark(watermark, cx);
    }
    fn process_watermark_status(&mut self, status: WatermarkStatus, cx: &mut TaskCx) {
        self.core.forward_watermark_status(status, cx);
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

crate::api::operator::impl_plain_operator!(FnCoMap<F1, F2>; F1, F2);
crate::api::operator::impl_plain_operator!(FnCoFlatMap<F1, F2>; F1, F2);
