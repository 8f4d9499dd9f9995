//! The source operator: the head of a source chain, polling a [`SourceFunction`].

use super::chain::{Chained, OpenContext, OperatorCounters, OperatorError, OperatorInfo};
use super::context::{NodeId, TaskCx};
use crate::api::functions::{SourceContext, SourceFunction, SourcePoll};
use crate::time::Watermark;

/// The runtime's view of a source chain head.
pub(crate) trait SourceTask: Send {
    fn open(&mut self, ctx: &OpenContext) -> Result<(), OperatorError>;
    /// Polls the source once, emitting at most `budget` records. Errors are recorded in `cx`.
    fn poll(&mut self, cx: &mut TaskCx, budget: usize) -> SourcePoll;
    /// The source finished: emits the final watermark and the end of input downstream.
    fn finish(&mut self, cx: &mut TaskCx);
    fn flush(&mut self, cx: &mut TaskCx);
    fn on_processing_time(&mut self, now_ms: i64, cx: &mut TaskCx);
    fn close(&mut self) -> Result<(), OperatorError>;
    fn metrics(&self, out: &mut Vec<(NodeId, OperatorCounters)>);
}

/// Runs a [`SourceFunction`] at the head of a chain.
pub(crate) struct SourceNode<T, S> {
    info: OperatorInfo,
    source: S,
    next: Box<dyn Chained<T>>,
    subtask_index: u32,
    counters: OperatorCounters,
}

impl<T, S> SourceNode<T, S> {
    pub(crate) fn new(info: OperatorInfo, source: S, next: Box<dyn Chained<T>>) -> Self {
        Self {
            info,
            source,
            next,
            subtask_index: 0,
            counters: OperatorCounters::default(),
        }
    }
}

impl<T: Send + 'static, S: SourceFunction<T>> SourceTask for SourceNode<T, S> {
    fn open(&mut self, ctx: &OpenContext) -> Result<(), OperatorError> {
        self.subtask_index = ctx.subtask_index;
        let runtime = ctx.runtime_context(&self.info);
        self.source.open(&runtime).map_err(|source| OperatorError {
            operator: self.info.name.clone(),
            phase: "open",
            source,
        })?;
        self.next.open(ctx)
    }

    fn poll(&mut self, cx: &mut TaskCx, budget: usize) -> SourcePoll {
        cx.current_operator = self.info.node;
        let node = self.info.node;
        let mut ctx = SourceContext::new(
            &mut *self.next,
            cx,
            node,
            budget,
            self.subtask_index,
            self.info.parallelism,
        );
        let result = self.source.poll_next(&mut ctx);
        self.counters.records_out += ctx.finish();
        match result {
            Ok(poll) => poll,
            Err(error) => {
                cx.fail(node, format!("source failed: {error}"));
                SourcePoll::Idle
            }
        }
    }

    fn finish(&mut self, cx: &mut TaskCx) {
        self.next.process_watermark(Watermark::MAX, cx);
        self.next.end_of_input(cx);
    }

    fn flush(&mut self, cx: &mut TaskCx) {
        self.next.flush(cx);
    }

    fn on_processing_time(&mut self, now_ms: i64, cx: &mut TaskCx) {
        self.next.on_processing_time(now_ms, cx);
    }

    fn close(&mut self) -> Result<(), OperatorError> {
        let result = self.source.close().map_err(|source| OperatorError {
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
