//! The source operator: the head of a source chain, polling a [`SourceFunction`].

use super::chain::{Chained, OpenContext, OperatorCounters, OperatorError, OperatorInfo};
use super::checkpointing::PendingOperatorSnapshot;
use super::context::{NodeId, TaskCx};
use crate::api::functions::{SourceContext, SourceFunction, SourcePoll};
use crate::checkpoint::{CheckpointBarrier, CheckpointId};
use crate::state::{OperatorListState, OperatorStateMode};
use crate::time::Watermark;

/// The operator list state that holds a source's position (one element per subtask).
pub(crate) const SOURCE_POSITION_STATE: &str = "source-position";

/// The runtime's view of a source chain head.
pub(crate) trait SourceTask: Send {
    fn open(&mut self, ctx: &OpenContext) -> Result<(), OperatorError>;
    /// Polls the source once, emitting at most `budget` records. Errors are recorded in `cx`.
    fn poll(&mut self, cx: &mut TaskCx, budget: usize) -> SourcePoll;
    /// The source finished: emits the final watermark and the end of input downstream.
    fn finish(&mut self, cx: &mut TaskCx);
    fn flush(&mut self, cx: &mut TaskCx);
    fn on_processing_time(&mut self, now_ms: i64, cx: &mut TaskCx);
    /// Injects a checkpoint barrier: snapshots the source's position and every chained
    /// operator, then sends the barrier downstream.
    fn trigger_checkpoint(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx);
    /// Snapshots the source and its chain without sending a barrier (the final checkpoint).
    fn snapshot_state(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx);
    fn notify_checkpoint_complete(&mut self, id: CheckpointId, cx: &mut TaskCx);
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

impl<T, S: SourceFunction<T>> SourceNode<T, S> {
    /// Stores the source's position as this subtask's element of the position list state.
    fn snapshot_position(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        cx.current_operator = self.info.node;
        match self.source.snapshot_position() {
            Ok(position) => {
                let mut pending = PendingOperatorSnapshot::default();
                if let Some(position) = position {
                    pending.operator.push(OperatorListState {
                        name: SOURCE_POSITION_STATE.to_string(),
                        mode: OperatorStateMode::Split,
                        elements: vec![position],
                    });
                }
                cx.snapshots.push((self.info.state_id(), pending));
            }
            Err(error) => cx.fail(
                self.info.node,
                format!("snapshot of checkpoint {} failed: {error}", barrier.id.0),
            ),
        }
    }
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
        let mut init = ctx.state_init(&self.info);
        if let Some(state) = init.take_operator_state(SOURCE_POSITION_STATE) {
            let restore = match state.elements.as_slice() {
                [position] => self.source.restore_position(position),
                [] => Ok(()),
                more => Err(format!(
                    "{} source positions for one subtask: a source restores at the \
                     parallelism it was checkpointed with",
                    more.len()
                )
                .into()),
            };
            restore.map_err(|source| OperatorError {
                operator: self.info.name.clone(),
                phase: "restore",
                source,
            })?;
        }
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

    fn trigger_checkpoint(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        self.snapshot_position(barrier, cx);
        self.next.process_barrier(barrier, cx);
    }

    fn snapshot_state(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        self.snapshot_position(barrier, cx);
        self.next.snapshot_state(barrier, cx);
    }

    fn notify_checkpoint_complete(&mut self, id: CheckpointId, cx: &mut TaskCx) {
        self.next.notify_checkpoint_complete(id, cx);
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
