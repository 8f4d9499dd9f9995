//! The sink operator: the leaf of a chain that hands elements to a [`SinkFunction`].

use super::chain::{Chained, OpenContext, OperatorCounters, OperatorError, OperatorInfo};
use super::checkpointing::StateSnapshotContext;
use super::context::{NodeId, TaskCx};
use crate::api::functions::{SinkContext, SinkFunction};
use crate::checkpoint::{CheckpointBarrier, CheckpointId};
use crate::exchange::Record;
use crate::time::{Watermark, WatermarkStatus};

/// Runs a [`SinkFunction`]; a failed write fails the task with the sink's name.
pub(crate) struct SinkNode<I, S> {
    info: OperatorInfo,
    sink: S,
    subtask_index: u32,
    watermark: i64,
    counters: OperatorCounters,
    finished: bool,
    /// Whether the sink declares state fields (`#[operator]`), to store at checkpoints.
    has_state_fields: bool,
    _input: std::marker::PhantomData<fn(I)>,
}

impl<I, S> SinkNode<I, S> {
    pub(crate) fn new(info: OperatorInfo, sink: S) -> Self {
        Self {
            info,
            sink,
            subtask_index: 0,
            watermark: i64::MIN,
            counters: OperatorCounters::default(),
            finished: false,
            has_state_fields: false,
            _input: std::marker::PhantomData,
        }
    }
}

impl<I, S: SinkFunction<I>> SinkNode<I, S> {
    /// Stores the sink's state fields (`#[operator]`) in the task's checkpoint parts.
    fn snapshot_fields(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        if !self.has_state_fields {
            return;
        }
        cx.current_operator = self.info.node;
        let mut ctx = StateSnapshotContext::new(barrier, cx.now_ms, cx.persist_snapshots);
        match crate::api::operator::snapshot_fields(&self.sink, &mut ctx) {
            Ok(()) => cx
                .snapshots
                .push((self.info.state_id(), ctx.into_pending())),
            Err(error) => cx.fail(
                self.info.node,
                format!("snapshot of checkpoint {} failed: {error}", barrier.id.0),
            ),
        }
    }
}

impl<I: Send + 'static, S: SinkFunction<I>> Chained<I> for SinkNode<I, S> {
    fn open(&mut self, ctx: &OpenContext) -> Result<(), OperatorError> {
        self.subtask_index = ctx.subtask_index;
        self.has_state_fields = !self.sink.state_schema().fields.is_empty();
        let mut init = ctx.state_init(&self.info);
        crate::api::operator::initialize_fields(&mut self.sink, &mut init).map_err(|source| {
            OperatorError {
                operator: self.info.name.clone(),
                phase: "initialize_state",
                source,
            }
        })?;
        let runtime = ctx.runtime_context(&self.info);
        self.sink.open(&runtime).map_err(|source| OperatorError {
            operator: self.info.name.clone(),
            phase: "open",
            source,
        })
    }

    fn process_batch(&mut self, records: Vec<Record<I>>, cx: &mut TaskCx) {
        cx.current_operator = self.info.node;
        for record in records {
            self.counters.records_in += 1;
            let ctx = SinkContext {
                timestamp: record.timestamp,
                subtask_index: self.subtask_index,
                current_watermark: self.watermark,
            };
            if let Err(error) = self.sink.invoke(record.value, &ctx) {
                // The job fails with this error; the rest of the run is not written.
                cx.fail(self.info.node, format!("write failed: {error}"));
                return;
            }
        }
    }

    fn process_watermark(&mut self, watermark: Watermark, _cx: &mut TaskCx) {
        self.watermark = watermark.timestamp;
    }

    fn process_watermark_status(&mut self, _status: WatermarkStatus, _cx: &mut TaskCx) {}

    fn on_processing_time(&mut self, _now_ms: i64, _cx: &mut TaskCx) {}

    fn process_barrier(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        // A leaf: nothing to forward the barrier to.
        self.snapshot_fields(barrier, cx);
    }

    fn snapshot_state(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        self.snapshot_fields(barrier, cx);
    }

    fn notify_checkpoint_complete(&mut self, _id: CheckpointId, _cx: &mut TaskCx) {}

    fn end_of_input(&mut self, cx: &mut TaskCx) {
        if self.finished {
            return;
        }
        self.finished = true;
        cx.current_operator = self.info.node;
        if let Err(error) = self.sink.finish() {
            cx.fail(self.info.node, format!("finish failed: {error}"));
        }
    }

    fn flush(&mut self, _cx: &mut TaskCx) {}

    fn close(&mut self) -> Result<(), OperatorError> {
        self.sink.close().map_err(|source| OperatorError {
            operator: self.info.name.clone(),
            phase: "close",
            source,
        })
    }

    fn metrics(&self, out: &mut Vec<(NodeId, OperatorCounters)>) {
        out.push((self.info.node, self.counters));
    }
}
