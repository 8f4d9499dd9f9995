//! The source operator: the head of a source chain, polling a [`SourceFunction`].
//!
//! ## Positions in checkpoints
//!
//! Each subtask stores its source's position as one element of the operator list state
//! [`SOURCE_POSITION_STATE`], in union mode and tagged with the subtask index and parallelism
//! ([`PositionEntry`]): on a restore every new subtask sees every old position. At the same
//! parallelism a subtask takes its own (`restore_position`); at another one the source decides
//! how to share them out (`restore_rescaled_positions`), or fails the restore naming itself.
//! Checkpoints of earlier versions stored bare positions in split mode; they restore at the
//! parallelism they were taken with.

use super::chain::{Chained, OpenContext, OperatorCounters, OperatorError, OperatorInfo};
use super::checkpointing::StateSnapshotContext;
use super::context::{NodeId, TaskCx, UnrecoverableError};
use crate::api::functions::{SourceContext, SourceFunction, SourcePoll};
use crate::checkpoint::{CheckpointBarrier, CheckpointId};
use crate::operator::FunctionError;
use crate::state::{OperatorListState, OperatorStateMode};
use crate::time::Watermark;

/// The operator list state that holds a source's position (one element per subtask).
pub(crate) const SOURCE_POSITION_STATE: &str = "source-position";

/// One subtask's element of [`SOURCE_POSITION_STATE`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct PositionEntry {
    /// The subtask that stored it.
    subtask_index: u32,
    /// The source's parallelism when it was stored.
    parallelism: u32,
    /// What the source's `snapshot_position` returned.
    position: Vec<u8>,
}

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
        let mut fields = StateSnapshotContext::new(barrier, cx.now_ms, cx.persist_snapshots);
        if let Err(error) = crate::api::operator::snapshot_fields(&self.source, &mut fields) {
            cx.fail(
                self.info.node,
                format!("snapshot of checkpoint {} failed: {error}", barrier.id.0),
            );
            return;
        }
        match self.source.snapshot_position() {
            Ok(position) => {
                let mut pending = fields.into_pending();
                if let Some(position) = position {
                    let entry = PositionEntry {
                        subtask_index: self.subtask_index,
                        parallelism: self.info.parallelism,
                        position,
                    };
                    let element = match postcard::to_allocvec(&entry) {
                        Ok(element) => element,
                        Err(error) => {
                            cx.fail(
                                self.info.node,
                                format!(
                                    "snapshot of checkpoint {} failed: cannot encode the \
                                     position: {error}",
                                    barrier.id.0
                                ),
                            );
                            return;
                        }
                    };
                    pending.operator.push(OperatorListState {
                        name: SOURCE_POSITION_STATE.to_string(),
                        mode: OperatorStateMode::Union,
                        elements: vec![element],
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

impl<T, S: SourceFunction<T>> SourceNode<T, S> {
    /// Restores the source from the positions of the old subtasks: its own at the same
    /// parallelism, a share of all of them at another.
    fn restore(&mut self, state: &OperatorListState) -> Result<(), FunctionError> {
        #[cfg(feature = "sim-sabotage")]
        if crate::sabotage::is(crate::sabotage::Sabotage::SkipSourceRestore) {
            // The bug: the source starts from the beginning.
            return Ok(());
        }
        let parallelism = self.info.parallelism;
        match state.mode {
            OperatorStateMode::Split => match state.elements.as_slice() {
                // An earlier version's bare position.
                [position] => self.source.restore_position(position),
                [] => Ok(()),
                more => Err(UnrecoverableError::new(format!(
                    "{} source positions for one subtask, stored by an earlier version that \
                     restores only at the parallelism it was checkpointed with",
                    more.len()
                ))
                .into()),
            },
            OperatorStateMode::Union => {
                let mut entries = Vec::with_capacity(state.elements.len());
                for (i, element) in state.elements.iter().enumerate() {
                    let entry: PositionEntry = postcard::from_bytes(element).map_err(|e| {
                        UnrecoverableError::new(format!("source position {i} is corrupt: {e}"))
                    })?;
                    entries.push(entry);
                }
                let Some(old_parallelism) = entries.first().map(|e| e.parallelism) else {
                    return Ok(());
                };
                entries.sort_by_key(|e| e.subtask_index);
                let complete = entries.len() == old_parallelism as usize
                    && entries
                        .iter()
                        .enumerate()
                        .all(|(i, e)| e.subtask_index as usize == i)
                    && entries.iter().all(|e| e.parallelism == old_parallelism);
                if old_parallelism == parallelism {
                    return match entries
                        .iter()
                        .find(|e| e.subtask_index == self.subtask_index)
                    {
                        Some(entry) => self.source.restore_position(&entry.position),
                        None => Ok(()),
                    };
                }
                let context = format!(
                    "checkpointed at parallelism {old_parallelism}, restored at parallelism \
                     {parallelism}"
                );
                if !complete {
                    return Err(UnrecoverableError::new(format!(
                        "{context}: the checkpoint holds positions of subtasks {:?} only, so \
                         they cannot be redistributed",
                        entries.iter().map(|e| e.subtask_index).collect::<Vec<_>>()
                    ))
                    .into());
                }
                let positions: Vec<Vec<u8>> = entries.into_iter().map(|e| e.position).collect();
                self.source
                    .restore_rescaled_positions(&positions)
                    .map_err(|e| {
                        let message = format!("{context}: {e}");
                        // Keep what the source said about restarts.
                        if UnrecoverableError::is_in(e.as_ref()) {
                            UnrecoverableError::new(message).into()
                        } else {
                            message.into()
                        }
                    })
            }
            OperatorStateMode::Broadcast => Err(UnrecoverableError::new(
                "source positions stored as broadcast state: corrupt checkpoint",
            )
            .into()),
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
        let mut init = ctx.state_init(&self.info);
        crate::api::operator::initialize_fields(&mut self.source, &mut init).map_err(|source| {
            OperatorError {
                operator: self.info.name.clone(),
                phase: "initialize_state",
                source,
            }
        })?;
        let runtime = ctx.runtime_context(&self.info);
        self.source.open(&runtime).map_err(|source| OperatorError {
            operator: self.info.name.clone(),
            phase: "open",
            source,
        })?;
        if let Some(state) = init.take_operator_state(SOURCE_POSITION_STATE) {
            self.restore(&state).map_err(|source| OperatorError {
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
        cx.current_operator = self.info.node;
        if let Err(error) = self.source.notify_checkpoint_complete(id) {
            cx.fail(
                self.info.node,
                format!("notify_checkpoint_complete({}) failed: {error}", id.0),
            );
        }
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::operator::testing::Capture;

    /// A source that records how it was restored.
    #[derive(Clone, Default)]
    struct Recorder {
        calls: Arc<Mutex<Vec<String>>>,
    }
    crate::api::operator::impl_plain_operator!(Recorder);

    impl SourceFunction<u64> for Recorder {
        fn poll_next(
            &mut self,
            _ctx: &mut SourceContext<'_, u64>,
        ) -> Result<SourcePoll, FunctionError> {
            Ok(SourcePoll::Finished)
        }
        fn restore_position(&mut self, position: &[u8]) -> Result<(), FunctionError> {
            self.calls.lock().unwrap().push(format!("own {position:?}"));
            Ok(())
        }
        fn restore_rescaled_positions(
            &mut self,
            positions: &[Vec<u8>],
        ) -> Result<(), FunctionError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("rescaled {positions:?}"));
            Ok(())
        }
    }

    fn node(
        subtask_index: u32,
        parallelism: u32,
    ) -> (SourceNode<u64, Recorder>, Arc<Mutex<Vec<String>>>) {
        let source = Recorder::default();
        let calls = source.calls.clone();
        let info = OperatorInfo {
            node: NodeId(0),
            name: "Source: recorder".into(),
            uid: None,
            parallelism,
        };
        let mut node = SourceNode::new(info, source, Box::new(Capture(Arc::default())));
        node.subtask_index = subtask_index;
        (node, calls)
    }

    fn union(entries: &[(u32, u32, u8)]) -> OperatorListState {
        OperatorListState {
            name: SOURCE_POSITION_STATE.into(),
            mode: OperatorStateMode::Union,
            elements: entries
                .iter()
                .map(|&(subtask_index, parallelism, byte)| {
                    postcard::to_allocvec(&PositionEntry {
                        subtask_index,
                        parallelism,
                        position: vec![byte],
                    })
                    .unwrap()
                })
                .collect(),
        }
    }

    #[test]
    fn at_the_same_parallelism_a_subtask_takes_its_own_position() {
        let (mut n, calls) = node(1, 2);
        n.restore(&union(&[(1, 2, 11), (0, 2, 10)])).unwrap();
        assert_eq!(*calls.lock().unwrap(), vec!["own [11]"]);
    }

    #[test]
    fn at_another_parallelism_the_source_gets_every_position_in_subtask_order() {
        let (mut n, calls) = node(0, 3);
        n.restore(&union(&[(1, 2, 11), (0, 2, 10)])).unwrap();
        assert_eq!(*calls.lock().unwrap(), vec!["rescaled [[10], [11]]"]);
        let (mut n, _) = node(0, 3);
        let error = n.restore(&union(&[(1, 2, 11)])).unwrap_err().to_string();
        assert!(
            error.contains("checkpointed at parallelism 2, restored at parallelism 3")
                && error.contains("subtasks [1] only"),
            "{error}"
        );
    }

    #[test]
    fn split_positions_of_earlier_versions_restore_at_their_parallelism_only() {
        let split = |elements: Vec<Vec<u8>>| OperatorListState {
            name: SOURCE_POSITION_STATE.into(),
            mode: OperatorStateMode::Split,
            elements,
        };
        let (mut n, calls) = node(0, 1);
        n.restore(&split(vec![vec![7]])).unwrap();
        n.restore(&split(vec![])).unwrap();
        assert_eq!(*calls.lock().unwrap(), vec!["own [7]"]);
        let error = n
            .restore(&split(vec![vec![1], vec![2]]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("earlier version"), "{error}");
        let corrupt = OperatorListState {
            name: SOURCE_POSITION_STATE.into(),
            mode: OperatorStateMode::Union,
            elements: vec![vec![0xff; 3]],
        };
        assert!(
            n.restore(&corrupt)
                .unwrap_err()
                .to_string()
                .contains("corrupt")
        );
    }
}
