//! Two-input operators: `co_map`, `co_flat_map` over connected streams.
//!
//! A two-input operator always heads its chain (it cannot be chained to either input); its
//! watermark is the minimum over both inputs, which the subtask's tracker computes across all
//! input channels.

use super::chain::{
    Chained, Collector, OpenContext, OperatorCounters, OperatorError, OperatorInfo,
};
use super::context::{FunctionError, NodeId, RuntimeContext, TaskCx};
use super::element::Record;
use crate::api::functions::{CoFlatMapFunction, CoMapFunction};
use crate::checkpoint::CheckpointBarrier;
use crate::time::{Watermark, WatermarkStatus};

/// A two-input operator core.
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
    fn process1(&mut self, record: Record<A>, out: &mut Collector<'_, Self::Out>);
    /// Processes a record of the second input.
    fn process2(&mut self, record: Record<B>, out: &mut Collector<'_, Self::Out>);
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
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.0.open(ctx)
    }
    fn process1(&mut self, record: Record<A>, out: &mut Collector<'_, F::Out>) {
        let value = self.0.map1(record.value);
        out.collect(value);
    }
    fn process2(&mut self, record: Record<B>, out: &mut Collector<'_, F::Out>) {
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
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.0.open(ctx)
    }
    fn process1(&mut self, record: Record<A>, out: &mut Collector<'_, F::Out>) {
        self.0.flat_map1(record.value, out);
    }
    fn process2(&mut self, record: Record<B>, out: &mut Collector<'_, F::Out>) {
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
    fn end_of_input(&mut self, cx: &mut TaskCx);
    fn flush(&mut self, cx: &mut TaskCx);
    fn close(&mut self) -> Result<(), OperatorError>;
    fn metrics(&self, out: &mut Vec<(NodeId, OperatorCounters)>);
}

/// Runs a [`TwoInputOperator`] at the head of a chain.
pub(crate) struct TwoInputNode<Op: TwoInputOperator<A, B>, A, B> {
    info: OperatorInfo,
    operator: Op,
    next: Box<dyn Chained<Op::Out>>,
    counters: OperatorCounters,
    _inputs: std::marker::PhantomData<fn(A, B)>,
}

impl<Op: TwoInputOperator<A, B>, A, B> TwoInputNode<Op, A, B> {
    pub(crate) fn new(info: OperatorInfo, operator: Op, next: Box<dyn Chained<Op::Out>>) -> Self {
        Self {
            info,
            operator,
            next,
            counters: OperatorCounters::default(),
            _inputs: std::marker::PhantomData,
        }
    }

    /// Runs `process` (the operator's `process1` or `process2`) over a run of one input.
    #[inline]
    fn run<X>(
        &mut self,
        records: Vec<Record<X>>,
        cx: &mut TaskCx,
        mut process: impl FnMut(&mut Op, Record<X>, &mut Collector<'_, Op::Out>),
    ) {
        self.counters.records_in += records.len() as u64;
        cx.current_operator = self.info.node;
        let mut out = crate::operator::ChannelBatch::with_capacity(records.len());
        for record in records {
            let timestamp = record.timestamp;
            process(
                &mut self.operator,
                record,
                &mut Collector::new(&mut out, timestamp),
            );
        }
        self.emit(out, cx);
    }

    fn emit(&mut self, out: crate::operator::ChannelBatch<Op::Out>, cx: &mut TaskCx) {
        self.counters.records_out += out.records.len() as u64;
        if !out.records.is_empty() {
            self.next.process_batch(out.records, cx);
        }
    }
}

impl<Op: TwoInputOperator<A, B>, A: Send + 'static, B: Send + 'static> TwoInputChained<A, B>
    for TwoInputNode<Op, A, B>
{
    fn open(&mut self, ctx: &OpenContext) -> Result<(), OperatorError> {
        let runtime = ctx.runtime_context(&self.info);
        self.operator
            .open(&runtime)
            .map_err(|source| OperatorError {
                operator: self.info.name.clone(),
                phase: "open",
                source,
            })?;
        self.next.open(ctx)
    }
    fn process_batch1(&mut self, records: Vec<Record<A>>, cx: &mut TaskCx) {
        self.run(records, cx, Op::process1);
    }
    fn process_batch2(&mut self, records: Vec<Record<B>>, cx: &mut TaskCx) {
        self.run(records, cx, Op::process2);
    }
    fn process_watermark(&mut self, watermark: Watermark, cx: &mut TaskCx) {
        self.next.process_watermark(watermark, cx);
    }
    fn process_watermark_status(&mut self, status: WatermarkStatus, cx: &mut TaskCx) {
        self.next.process_watermark_status(status, cx);
    }
    fn on_processing_time(&mut self, now_ms: i64, cx: &mut TaskCx) {
        self.next.on_processing_time(now_ms, cx);
    }
    fn process_barrier(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        self.next.process_barrier(barrier, cx);
    }
    fn end_of_input(&mut self, cx: &mut TaskCx) {
        self.next.end_of_input(cx);
    }
    fn flush(&mut self, cx: &mut TaskCx) {
        self.next.flush(cx);
    }
    fn close(&mut self) -> Result<(), OperatorError> {
        let result = self.operator.close().map_err(|source| OperatorError {
            operator: self.info.name.clone(),
            phase: "close",
            source,
        });
        result.and(self.next.close())
    }
    fn metrics(&self, out: &mut Vec<(NodeId, OperatorCounters)>) {
        out.push((self.info.node, self.counters));
        self.next.metrics(out);
    }
}
