//! Chain heads that consume type-erased batches from input channels.
//!
//! The subtask actor is type-agnostic: it moves [`ErasedBatch`]es between its input gate and the
//! head. The head downcasts each batch once, then feeds records to its chain one at a time,
//! stopping early when downstream is out of credit, and hands control elements (watermarks,
//! barriers, end of input) back to the actor, which owns the per-channel bookkeeping.

use crate::checkpoint::CheckpointBarrier;
use crate::operator::{
    Chained, ErasedBatch, NodeId, OpenContext, OperatorCounters, OperatorError, StreamElement,
    TaskCx, TwoInputChained,
};
use crate::time::Watermark;

/// Which input of a two-input operator a channel feeds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum InputSide {
    /// The only input, or the first of two.
    First,
    /// The second input of a two-input operator.
    Second,
}

/// A control element taken out of the current batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Watermark(Watermark),
    Barrier(CheckpointBarrier),
    EndOfInput,
}

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
    fn process_barrier(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx);
    fn end_of_input(&mut self, cx: &mut TaskCx);
    fn flush(&mut self, cx: &mut TaskCx);
    fn close(&mut self) -> Result<(), OperatorError>;
    fn metrics(&self, out: &mut Vec<(NodeId, OperatorCounters)>);
}

/// Feeds the elements of `batch` to `process` until a stop condition.
#[inline]
fn drive<T>(
    batch: &mut Option<std::vec::IntoIter<StreamElement<T>>>,
    cx: &mut TaskCx,
    mut process: impl FnMut(crate::operator::Record<T>, &mut TaskCx),
) -> Step {
    let Some(elements) = batch else {
        return Step::Exhausted;
    };
    for element in elements.by_ref() {
        match element {
            StreamElement::Record(record) => {
                process(record, cx);
                if cx.must_pause() {
                    return Step::Paused;
                }
            }
            StreamElement::Watermark(w) => return Step::Control(Control::Watermark(w)),
            StreamElement::Barrier(b) => return Step::Control(Control::Barrier(b)),
            StreamElement::EndOfInput => return Step::Control(Control::EndOfInput),
        }
    }
    *batch = None;
    Step::Exhausted
}

/// The head of a chain with one input of type `T`.
pub(crate) struct OneInputHead<T> {
    name: String,
    chain: Box<dyn Chained<T>>,
    current: Option<std::vec::IntoIter<StreamElement<T>>>,
}

impl<T> OneInputHead<T> {
    pub(crate) fn new(name: String, chain: Box<dyn Chained<T>>) -> Self {
        Self {
            name,
            chain,
            current: None,
        }
    }
}

impl<T: Send + 'static> InputTask for OneInputHead<T> {
    fn open(&mut self, ctx: &OpenContext) -> Result<(), OperatorError> {
        self.chain.open(ctx)
    }
    fn begin(&mut self, side: InputSide, batch: ErasedBatch) -> Result<(), BatchTypeError> {
        debug_assert!(self.current.is_none());
        let elements = batch.downcast::<T>().ok_or_else(|| BatchTypeError {
            side,
            operator: self.name.clone(),
        })?;
        self.current = Some(elements.into_iter());
        Ok(())
    }
    fn resume(&mut self, cx: &mut TaskCx) -> Step {
        let chain = &mut self.chain;
        drive(&mut self.current, cx, |record, cx| {
            chain.process(record, cx)
        })
    }
    fn process_watermark(&mut self, watermark: Watermark, cx: &mut TaskCx) {
        self.chain.process_watermark(watermark, cx);
    }
    fn process_barrier(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        self.chain.process_barrier(barrier, cx);
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
    First(Option<std::vec::IntoIter<StreamElement<A>>>),
    Second(Option<std::vec::IntoIter<StreamElement<B>>>),
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
                TwoInputBatch::First(Some(batch.downcast::<A>().ok_or_else(error)?.into_iter()))
            }
            InputSide::Second => {
                TwoInputBatch::Second(Some(batch.downcast::<B>().ok_or_else(error)?.into_iter()))
            }
        };
        Ok(())
    }
    fn resume(&mut self, cx: &mut TaskCx) -> Step {
        let node = &mut self.node;
        let step = match &mut self.current {
            TwoInputBatch::None => Step::Exhausted,
            TwoInputBatch::First(batch) => drive(batch, cx, |r, cx| node.process1(r, cx)),
            TwoInputBatch::Second(batch) => drive(batch, cx, |r, cx| node.process2(r, cx)),
        };
        if step == Step::Exhausted {
            self.current = TwoInputBatch::None;
        }
        step
    }
    fn process_watermark(&mut self, watermark: Watermark, cx: &mut TaskCx) {
        self.node.process_watermark(watermark, cx);
    }
    fn process_barrier(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        self.node.process_barrier(barrier, cx);
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
