//! Test helpers that drive operator cores directly, without actors.

use std::sync::{Arc, Mutex};

use super::chain::{Chained, OpenContext, OperatorCounters, OperatorError};
use super::context::{NodeId, TaskCx};
use crate::api::{SourceContext, SourceFunction, SourcePoll};
use crate::checkpoint::CheckpointBarrier;
use crate::exchange::CreditOutbox;
use crate::exchange::Record;
use crate::time::{Watermark, WatermarkStatus};

/// A chain endpoint that keeps every record it receives.
pub(crate) struct Capture<T>(pub(crate) Arc<Mutex<Vec<T>>>);

impl<T: Send> Chained<T> for Capture<T> {
    fn open(&mut self, _ctx: &OpenContext) -> Result<(), OperatorError> {
        Ok(())
    }
    fn process_batch(&mut self, records: Vec<Record<T>>, _cx: &mut TaskCx) {
        self.0
            .lock()
            .expect("capture lock")
            .extend(records.into_iter().map(|r| r.value));
    }
    fn process_watermark(&mut self, _watermark: Watermark, _cx: &mut TaskCx) {}
    fn process_watermark_status(&mut self, _status: WatermarkStatus, _cx: &mut TaskCx) {}
    fn on_processing_time(&mut self, _now_ms: i64, _cx: &mut TaskCx) {}
    fn process_barrier(&mut self, _barrier: CheckpointBarrier, _cx: &mut TaskCx) {}
    fn snapshot_state(&mut self, _barrier: CheckpointBarrier, _cx: &mut TaskCx) {}
    fn notify_checkpoint_complete(
        &mut self,
        _id: crate::checkpoint::CheckpointId,
        _cx: &mut TaskCx,
    ) {
    }
    fn end_of_input(&mut self, _cx: &mut TaskCx) {}
    fn flush(&mut self, _cx: &mut TaskCx) {}
    fn close(&mut self) -> Result<(), OperatorError> {
        Ok(())
    }
    fn metrics(&self, _out: &mut Vec<(NodeId, OperatorCounters)>) {}
}

/// Polls `source` once with a budget of `budget` records; returns the records and the poll.
pub(crate) fn poll_source<T: Send + 'static, S: SourceFunction<T>>(
    source: &mut S,
    budget: usize,
) -> (Vec<T>, SourcePoll) {
    let captured = Arc::new(Mutex::new(Vec::new()));
    let mut capture = Capture(captured.clone());
    let mut cx = TaskCx::new(CreditOutbox::new(0), NodeId(0));
    let mut ctx = SourceContext::new(&mut capture, &mut cx, NodeId(0), budget, 0, 1);
    let poll = source.poll_next(&mut ctx).expect("poll");
    ctx.finish();
    let records = std::mem::take(&mut *captured.lock().expect("capture lock"));
    (records, poll)
}

/// A chain endpoint that records every element it receives, control elements included.
pub(crate) struct Recorder<T>(pub(crate) Arc<Mutex<Vec<crate::operator::StreamElement<T>>>>);

impl<T: Send> Chained<T> for Recorder<T> {
    fn open(&mut self, _ctx: &OpenContext) -> Result<(), OperatorError> {
        Ok(())
    }
    fn process_batch(&mut self, records: Vec<Record<T>>, _cx: &mut TaskCx) {
        let mut elements = self.0.lock().expect("recorder lock");
        elements.extend(
            records
                .into_iter()
                .map(crate::operator::StreamElement::Record),
        );
    }
    fn process_watermark(&mut self, watermark: Watermark, _cx: &mut TaskCx) {
        let mut elements = self.0.lock().expect("recorder lock");
        elements.push(crate::operator::StreamElement::Watermark(watermark));
    }
    fn process_watermark_status(&mut self, status: WatermarkStatus, _cx: &mut TaskCx) {
        let mut elements = self.0.lock().expect("recorder lock");
        elements.push(crate::operator::StreamElement::WatermarkStatus(status));
    }
    fn on_processing_time(&mut self, _now_ms: i64, _cx: &mut TaskCx) {}
    fn process_barrier(&mut self, _barrier: CheckpointBarrier, _cx: &mut TaskCx) {}
    fn snapshot_state(&mut self, _barrier: CheckpointBarrier, _cx: &mut TaskCx) {}
    fn notify_checkpoint_complete(
        &mut self,
        _id: crate::checkpoint::CheckpointId,
        _cx: &mut TaskCx,
    ) {
    }
    fn end_of_input(&mut self, _cx: &mut TaskCx) {
        let mut elements = self.0.lock().expect("recorder lock");
        elements.push(crate::operator::StreamElement::EndOfInput);
    }
    fn flush(&mut self, _cx: &mut TaskCx) {}
    fn close(&mut self) -> Result<(), OperatorError> {
        Ok(())
    }
    fn metrics(&self, _out: &mut Vec<(NodeId, OperatorCounters)>) {}
}

/// A one-input operator wired to a [`Recorder`], driven by hand.
pub(crate) struct Harness<I, Op: super::OneInputOperator<I>> {
    pub(crate) node: super::OneInputNode<I, Op>,
    pub(crate) cx: TaskCx,
    pub(crate) recorded: Arc<Mutex<Vec<crate::operator::StreamElement<Op::Out>>>>,
}

impl<I: Send + 'static, Op: super::OneInputOperator<I>> Harness<I, Op> {
    pub(crate) fn new(operator: Op) -> Self {
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let info = super::OperatorInfo {
            node: NodeId(1),
            name: "under test".into(),
            uid: None,
            parallelism: 1,
        };
        let node = super::OneInputNode::new(
            info,
            operator,
            Box::new(Recorder(recorded.clone())),
            super::SideOutputs::default(),
        );
        Self {
            node,
            cx: TaskCx::new(CreditOutbox::new(0), NodeId(1)),
            recorded,
        }
    }

    /// Feeds `records` at processing time `now_ms`.
    pub(crate) fn process(&mut self, now_ms: i64, records: Vec<Record<I>>) {
        self.cx.now_ms = now_ms;
        self.node.process_batch(records, &mut self.cx);
    }

    /// Advances processing time to `now_ms`.
    pub(crate) fn advance_processing_time(&mut self, now_ms: i64) {
        self.cx.now_ms = now_ms;
        self.cx.wakeup_ms = None;
        self.node.on_processing_time(now_ms, &mut self.cx);
    }

    /// Takes what the operator emitted so far.
    pub(crate) fn take(&mut self) -> Vec<crate::operator::StreamElement<Op::Out>> {
        std::mem::take(&mut *self.recorded.lock().expect("recorder lock"))
    }
}
