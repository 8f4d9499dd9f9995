//! Test helpers that drive operator cores directly, without actors.

use std::sync::{Arc, Mutex};

use super::chain::{Chained, OpenContext, OperatorCounters, OperatorError};
use super::context::{NodeId, TaskCx};
use super::element::Record;
use crate::api::{SourceContext, SourceFunction, SourcePoll};
use crate::checkpoint::CheckpointBarrier;
use crate::runtime::credit::CreditOutbox;
use crate::time::Watermark;

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
    fn process_barrier(&mut self, _barrier: CheckpointBarrier, _cx: &mut TaskCx) {}
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
