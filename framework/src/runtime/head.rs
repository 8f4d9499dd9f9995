//! Chain heads that consume type-erased batches from input channels.
//!
//! The subtask actor is type-agnostic: it moves [`ErasedBatch`]es between its input gate and the
//! head. The head downcasts each batch once, then feeds records to its chain one at a time,
//! stopping early when downstream is out of credit, and hands control elements (watermarks,
//! barriers, end of input) back to the actor, which owns the per-channel bookkeeping.

use std::collections::VecDeque;

use crate::checkpoint::{CheckpointBarrier, CheckpointId};
use crate::graph::InputSide;
pub(crate) use crate::operator::Control;
use crate::operator::{
    Chained, ErasedBatch, NodeId, OpenContext, OperatorCounters, OperatorError, Record, Segment,
    TaskCx, TwoInputChained,
};
use crate::time::{Watermark, WatermarkStatus};

/// Where processing of the current batch stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The batch is fully processed.
    Exhausted,
    /// Downstream is out of credit (or a function failed): resume later.
    Paused,
    /// A control element; the rest of the batch stays current.
    Control(Control),
}

/// A wiring bug: a batch of the wrong type reached a head.
#[derive(Debug, thiserror::Error)]
#[error("input batch of unexpected type on {side:?} input of {operator}")]
pub(crate) struct BatchTypeError {
    pub(crate) side: InputSide,
    pub(crate) operator: String,
}

/// The runtime's view of a chain head with inputs.
pub(crate) trait InputTask: Send {
    fn open(&mut self, ctx: &OpenContext) -> Result<(), OperatorError>;
    /// Makes `batch` current. Requires that no batch is current.
    fn begin(&mut self, side: InputSide, batch: ErasedBatch) -> Result<(), BatchTypeError>;
    /// Processes the current batch until it is exhausted, paused or at a control element.
    fn resume(&mut self, cx: &mut TaskCx) -> Step;
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

/// Feeds the runs of the current batch to `process` until it is exhausted, downstream is out of
/// credit (checked after every run) or a control element comes up.
#[inline]
fn drive<T>(
    segments: &mut VecDeque<Segment<T>>,
    cx: &mut TaskCx,
    mut process: impl FnMut(Vec<Record<T>>, &mut TaskCx),
) -> Step {
    while let Some(segment) = segments.pop_front() {
        match segment {
            Segment::Records(run) => {
                process(run, cx);
                if cx.must_pause() {
                    return Step::Paused;
                }
            }
            Segment::Control(control) => return Step::Control(control),
        }
    }
    Step::Exhausted
}

/// The head of a chain with one input of type `T`.
pub(crate) struct OneInputHead<T> {
    name: String,
    chain: Box<dyn Chained<T>>,
    current: VecDeque<Segment<T>>,
}

impl<T> OneInputHead<T> {
    pub(crate) fn new(name: String, chain: Box<dyn Chained<T>>) -> Self {
        Self {
            name,
            chain,
            current: VecDeque::new(),
        }
    }
}

impl<T: Send + 'static> InputTask for OneInputHead<T> {
    fn open(&mut self, ctx: &OpenContext) -> Result<(), OperatorError> {
        self.chain.open(ctx)
    }
    fn begin(&mut self, side: InputSide, batch: ErasedBatch) -> Result<(), BatchTypeError> {
        debug_assert!(self.current.is_empty());
        let batch = batch.downcast::<T>().ok_or_else(|| BatchTypeError {
            side,
            operator: self.name.clone(),
        })?;
        self.current = batch.into_segments();
        Ok(())
    }
    fn resume(&mut self, cx: &mut TaskCx) -> Step {
        let chain = &mut self.chain;
        drive(&mut self.current, cx, |run, cx| {
            chain.process_batch(run, cx)
        })
    }
    fn process_watermark(&mut self, watermark: Watermark, cx: &mut TaskCx) {
        self.chain.process_watermark(watermark, cx);
    }
    fn process_watermark_status(&mut self, status: WatermarkStatus, cx: &mut TaskCx) {
        self.chain.process_watermark_status(status, cx);
    }
    fn on_processing_time(&mut self, now_ms: i64, cx: &mut TaskCx) {
        self.chain.on_processing_time(now_ms, cx);
    }
    fn process_barrier(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        self.chain.process_barrier(barrier, cx);
    }
    fn snapshot_state(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        self.chain.snapshot_state(barrier, cx);
    }
    fn notify_checkpoint_complete(&mut self, id: CheckpointId, cx: &mut TaskCx) {
        self.chain.notify_checkpoint_complete(id, cx);
    }
    fn end_of_input(&mut self, cx: &mut TaskCx) {
        self.chain.end_of_input(cx);
    }
    fn flush(&mut self, cx: &mut TaskCx) {
        self.chain.flush(cx);
    }
    fn close(&mut self) -> Result<(), OperatorError> {
        self.chain.close()
    }
    fn metrics(&self, out: &mut Vec<(NodeId, OperatorCounters)>) {
        self.chain.metrics(out);
    }
}

enum TwoInputBatch<A, B> {
    None,
    First(VecDeque<Segment<A>>),
    Second(VecDeque<Segment<B>>),
}

/// The head of a chain whose first operator has two inputs.
pub(crate) struct TwoInputHead<A, B> {
    name: String,
    node: Box<dyn TwoInputChained<A, B>>,
    current: TwoInputBatch<A, B>,
}

impl<A, B> TwoInputHead<A, B> {
    pub(crate) fn new(name: String, node: Box<dyn TwoInputChained<A, B>>) -> Self {
        Self {
            name,
            node,
            current: TwoInputBatch::None,
        }
    }
}

impl<A: Send + 'static, B: Send + 'static> InputTask for TwoInputHead<A, B> {
    fn open(&mut self, ctx: &OpenContext) -> Result<(), OperatorError> {
        self.node.open(ctx)
    }
    fn begin(&mut self, side: InputSide, batch: ErasedBatch) -> Result<(), BatchTypeError> {
        let error = || BatchTypeError {
            side,
            operator: self.name.clone(),
        };
        self.current = match side {
            InputSide::First => {
                TwoInputBatch::First(batch.downcast::<A>().ok_or_else(error)?.into_segments())
            }
            InputSide::Second => {
                TwoInputBatch::Second(batch.downcast::<B>().ok_or_else(error)?.into_segments())
            }
        };
        Ok(())
    }
    fn resume(&mut self, cx: &mut TaskCx) -> Step {
        let node = &mut self.node;
        let step = match &mut self.current {
            TwoInputBatch::None => Step::Exhausted,
            TwoInputBatch::First(batch) => drive(batch, cx, |r, cx| node.process_batch1(r, cx)),
            TwoInputBatch::Second(batch) => drive(batch, cx, |r, cx| node.process_batch2(r, cx)),
        };
        if step == Step::Exhausted {
            self.current = TwoInputBatch::None;
        }
        step
    }
    fn process_watermark(&mut self, watermark: Watermark, cx: &mut TaskCx) {
        self.node.process_watermark(watermark, cx);
    }
    fn process_watermark_status(&mut self, status: WatermarkStatus, cx: &mut TaskCx) {
        self.node.process_watermark_status(status, cx);
    }
    fn on_processing_time(&mut self, now_ms: i64, cx: &mut TaskCx) {
        self.node.on_processing_time(now_ms, cx);
    }
    fn process_barrier(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        self.node.process_barrier(barrier, cx);
    }
    fn snapshot_state(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        self.node.snapshot_state(barrier, cx);
    }
    fn notify_checkpoint_complete(&mut self, id: CheckpointId, cx: &mut TaskCx) {
        self.node.notify_checkpoint_complete(id, cx);
    }
    fn end_of_input(&mut self, cx: &mut TaskCx) {
        self.node.end_of_input(cx);
    }
    fn flush(&mut self, cx: &mut TaskCx) {
        self.node.flush(cx);
    }
    fn close(&mut self) -> Result<(), OperatorError> {
        self.node.close()
    }
    fn metrics(&self, out: &mut Vec<(NodeId, OperatorCounters)>) {
        self.node.metrics(out);
    }
}
