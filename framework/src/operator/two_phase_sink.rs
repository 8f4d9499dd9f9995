//! The two-phase-commit sink operator: the leaf of a chain that drives a
//! [`TwoPhaseCommitSink`] through Flink's protocol (begin, pre-commit at the barrier, commit on
//! checkpoint completion, recover on restore).
//!
//! ## Design
//!
//! The operator holds the open transaction and, in checkpoint order, the pre-committed
//! transactions waiting for their checkpoint to complete. At a barrier (or the final snapshot of
//! a bounded job) the open transaction is pre-committed and becomes pending for that checkpoint,
//! a new one begins, and the operator stores one list-state element holding both
//! ([`TRANSACTIONS_STATE`]), tagged with the subtask index, in union mode: on a restore every
//! new subtask sees the transactions of every old one (Flink's sinks keep what they need to
//! clean up after a rescale in union state too). New subtask `i` of `p` recovers the elements
//! of the old subtasks `o` with `o mod p == i`: at the same parallelism its own, after a
//! rescale every old subtask's exactly once. Old subtask `o < p` always goes to new subtask
//! `o`, so a sink that names its transactions by subtask index (the exactly-once file sink)
//! cleans up after old subtask `o` in the one new subtask that also writes under that index,
//! before it writes, and never races another subtask over the same names.
//!
//! ## Invariants
//!
//! - Pending transactions are ordered by checkpoint id, strictly increasing.
//! - Between `open` and `close` there is always an open transaction, unless a sink call failed
//!   (the task then fails; nothing more is written).
//! - A sink error never panics: it fails the task through [`TaskCx::fail`] with the phase, and
//!   the runtime names the operator.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::chain::{Chained, OpenContext, OperatorCounters, OperatorError, OperatorInfo};
use super::checkpointing::StateSnapshotContext;
use super::context::{CommitReport, FunctionError, NodeId, TaskCx};
use crate::api::TwoPhaseCommitSink;
use crate::api::functions::SinkContext;
use crate::checkpoint::{CheckpointBarrier, CheckpointId};
use crate::exchange::Record;
use crate::state::OperatorStateMode;
use crate::time::{Watermark, WatermarkStatus};

/// The name of the operator list state holding the transactions of a two-phase-commit sink.
pub(crate) const TRANSACTIONS_STATE: &str = "two-phase-commit-transactions";

/// What one subtask stores per checkpoint (restored form).
#[derive(Debug, Deserialize)]
struct TransactionState<T> {
    /// The subtask that stored it.
    subtask_index: u32,
    /// Pre-committed transactions, oldest first, with the checkpoint that ended each.
    pending: Vec<(CheckpointId, T)>,
    /// The transaction open when the snapshot was taken.
    current: Option<T>,
}

/// What one subtask stores per checkpoint (borrowed form; encodes exactly as
/// [`TransactionState`] decodes, without cloning the transactions).
#[derive(Serialize)]
struct TransactionStateRef<'a, T> {
    subtask_index: u32,
    pending: &'a VecDeque<(CheckpointId, T)>,
    current: Option<&'a T>,
}

/// Restored transactions to recover: pre-committed ones with their checkpoint, and open ones.
type RestoredShare<T> = (Vec<(CheckpointId, T)>, Vec<T>);

/// What earlier versions stored per subtask, in split mode (no subtask index).
#[derive(Debug, Deserialize)]
struct SplitTransactionState<T> {
    pending: Vec<(CheckpointId, T)>,
    current: Option<T>,
}

/// Runs a [`TwoPhaseCommitSink`] as the leaf of a chain.
pub(crate) struct TwoPhaseCommitSinkNode<I, S: TwoPhaseCommitSink<I>> {
    info: OperatorInfo,
    sink: S,
    subtask_index: u32,
    watermark: i64,
    counters: OperatorCounters,
    /// The open transaction.
    current: Option<S::Txn>,
    /// Pre-committed transactions waiting for their checkpoint, by increasing checkpoint id.
    pending: VecDeque<(CheckpointId, S::Txn)>,
    /// Records written into the open transaction.
    current_records: u64,
    /// Records in each pending transaction, in the order of `pending` (not stored in
    /// checkpoints: only reported to the JobManager when committed).
    pending_records: VecDeque<u64>,
    _input: std::marker::PhantomData<fn(I)>,
}

impl<I, S: TwoPhaseCommitSink<I>> std::fmt::Debug for TwoPhaseCommitSinkNode<I, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwoPhaseCommitSinkNode")
            .field("info", &self.info)
            .field("current", &self.current)
            .field("pending", &self.pending)
            .finish()
    }
}

impl<I, S: TwoPhaseCommitSink<I>> TwoPhaseCommitSinkNode<I, S> {
    /// Wraps `sink`.
    pub(crate) fn new(info: OperatorInfo, sink: S) -> Self {
        Self {
            info,
            sink,
            subtask_index: 0,
            watermark: i64::MIN,
            counters: OperatorCounters::default(),
            current: None,
            pending: VecDeque::new(),
            current_records: 0,
            pending_records: VecDeque::new(),
            _input: std::marker::PhantomData,
        }
    }

    fn operator_error(&self, phase: &'static str, source: FunctionError) -> OperatorError {
        OperatorError {
            operator: self.info.name.clone(),
            phase,
            source,
        }
    }

    /// This subtask's share of the restored transactions: those of the old subtasks `o` with
    /// `o mod p == i` (see the module docs); from a split-mode checkpoint of an earlier
    /// version, the elements the split gave this subtask.
    /// The sink's own state fields (`#[operator]`) are restored first, from the same state.
    fn restored_share(&mut self, ctx: &OpenContext) -> Result<RestoredShare<S::Txn>, String> {
        let mut init = ctx.state_init(&self.info);
        crate::api::operator::initialize_fields(&mut self.sink, &mut init)
            .map_err(|error| format!("state fields: {error}"))?;
        let Some(state) = init.take_operator_state(TRANSACTIONS_STATE) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let parallelism = self.info.parallelism.max(1);
        let mut pending = Vec::new();
        let mut open = Vec::new();
        for (i, bytes) in state.elements.iter().enumerate() {
            let corrupt = |e: postcard::Error| format!("transactions of element {i}: {e}");
            match state.mode {
                OperatorStateMode::Union => {
                    let element: TransactionState<S::Txn> =
                        postcard::from_bytes(bytes).map_err(corrupt)?;
                    if element.subtask_index % parallelism == self.subtask_index {
                        pending.extend(element.pending);
                        open.extend(element.current);
                    }
                }
                OperatorStateMode::Split => {
                    let element: SplitTransactionState<S::Txn> =
                        postcard::from_bytes(bytes).map_err(corrupt)?;
                    pending.extend(element.pending);
                    open.extend(element.current);
                }
                OperatorStateMode::Broadcast => {
                    return Err("transactions stored as broadcast state".to_string());
                }
            }
        }
        Ok((pending, open))
    }

    /// Recovers this subtask's share of the restored transactions: commits the pending ones
    /// (their checkpoint completed), oldest first, then aborts the ones that were open.
    fn recover(&mut self, ctx: &OpenContext) -> Result<(), OperatorError> {
        let (mut pending, open) = self
            .restored_share(ctx)
            .map_err(|error| self.operator_error("initialize_state", error.into()))?;
        // After a rescale the elements of several subtasks meet here: commit in checkpoint
        // order (stable, so each subtask's own order stays).
        pending.sort_by_key(|(id, _)| *id);
        for (_, txn) in pending {
            self.sink
                .recover_and_commit(txn)
                .map_err(|source| self.operator_error("recover_and_commit", source))?;
        }
        for txn in open {
            self.sink
                .recover_and_abort(txn)
                .map_err(|source| self.operator_error("recover_and_abort", source))?;
        }
        Ok(())
    }

    /// Pre-commits the open transaction for `barrier`, begins the next one, and stores both in
    /// the task's checkpoint parts.
    fn checkpoint(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        cx.current_operator = self.info.node;
        let id = barrier.id;
        let Some(mut txn) = self.current.take() else {
            cx.fail(
                self.info.node,
                format!("no open transaction at checkpoint {}", id.0),
            );
            return;
        };
        if let Err(error) = self.sink.pre_commit(&mut txn) {
            cx.fail(
                self.info.node,
                format!("pre_commit for checkpoint {} failed: {error}", id.0),
            );
            self.current = Some(txn);
            return;
        }
        if let Some((last, _)) = self.pending.back() {
            assert!(
                *last < id,
                "checkpoint {} after checkpoint {}: barriers must arrive in increasing order",
                id.0,
                last.0
            );
        }
        self.pending.push_back((id, txn));
        self.pending_records
            .push_back(std::mem::take(&mut self.current_records));
        match self.sink.begin_transaction() {
            Ok(next) => self.current = Some(next),
            Err(error) => {
                cx.fail(
                    self.info.node,
                    format!(
                        "begin_transaction after checkpoint {} failed: {error}",
                        id.0
                    ),
                );
                return;
            }
        }
        #[cfg(feature = "sim-sabotage")]
        if crate::sabotage::is(crate::sabotage::Sabotage::CommitBeforeCheckpoint) {
            // The bug: commit at the barrier, before the checkpoint is complete.
            while let Some((_, txn)) = self.pending.pop_front() {
                self.pending_records.pop_front();
                if let Err(error) = self.sink.commit(txn) {
                    cx.fail(self.info.node, format!("commit failed: {error}"));
                    return;
                }
            }
        }
        let mut ctx = StateSnapshotContext::new(barrier, cx.now_ms, cx.persist_snapshots);
        if let Err(error) = crate::api::operator::snapshot_fields(&self.sink, &mut ctx) {
            cx.fail(
                self.info.node,
                format!("snapshot of checkpoint {} failed: {error}", id.0),
            );
            return;
        }
        let state = TransactionStateRef {
            subtask_index: self.subtask_index,
            pending: &self.pending,
            current: self.current.as_ref(),
        };
        match ctx.add_list_state(TRANSACTIONS_STATE, OperatorStateMode::Union, &[state]) {
            Ok(()) => cx
                .snapshots
                .push((self.info.state_id(), ctx.into_pending())),
            Err(error) => cx.fail(
                self.info.node,
                format!("snapshot of checkpoint {} failed: {error}", id.0),
            ),
        }
    }
}

impl<I: Send + 'static, S: TwoPhaseCommitSink<I>> Chained<I> for TwoPhaseCommitSinkNode<I, S> {
    fn open(&mut self, ctx: &OpenContext) -> Result<(), OperatorError> {
        self.subtask_index = ctx.subtask_index;
        self.recover(ctx)?;
        let runtime = ctx.runtime_context(&self.info);
        self.sink
            .open(&runtime)
            .map_err(|source| self.operator_error("open", source))?;
        let txn = self
            .sink
            .begin_transaction()
            .map_err(|source| self.operator_error("begin_transaction", source))?;
        self.current = Some(txn);
        Ok(())
    }

    fn process_batch(&mut self, records: Vec<Record<I>>, cx: &mut TaskCx) {
        cx.current_operator = self.info.node;
        let Some(txn) = self.current.as_mut() else {
            cx.fail(self.info.node, "invoke without an open transaction".into());
            return;
        };
        // Counted per batch: on an invoke error the task fails, and the count no longer matters.
        self.current_records += records.len() as u64;
        for record in records {
            self.counters.records_in += 1;
            let ctx = SinkContext {
                timestamp: record.timestamp,
                subtask_index: self.subtask_index,
                current_watermark: self.watermark,
            };
            if let Err(error) = self.sink.invoke(txn, record.value, &ctx) {
                // The job fails with this error; the rest of the run is not written.
                cx.fail(self.info.node, format!("invoke failed: {error}"));
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
        self.checkpoint(barrier, cx);
    }

    fn snapshot_state(&mut self, barrier: CheckpointBarrier, cx: &mut TaskCx) {
        self.checkpoint(barrier, cx);
    }

    fn notify_checkpoint_complete(&mut self, id: CheckpointId, cx: &mut TaskCx) {
        cx.current_operator = self.info.node;
        while self
            .pending
            .front()
            .is_some_and(|(pending, _)| *pending <= id)
        {
            let Some((pending, txn)) = self.pending.pop_front() else {
                break;
            };
            let records = self.pending_records.pop_front().unwrap_or(0);
            let committed = self.sink.commit(txn);
            if records > 0 {
                // Reported even when the commit failed: it may have been partly done.
                cx.committed.push(CommitReport {
                    checkpoint: pending,
                    operator: self.info.name.clone(),
                    records,
                });
            }
            if let Err(error) = committed {
                // The restart commits it again from the checkpoint that holds it.
                cx.fail(
                    self.info.node,
                    format!(
                        "commit of checkpoint {} (completed: {}) failed: {error}",
                        pending.0, id.0
                    ),
                );
                return;
            }
        }
    }

    fn end_of_input(&mut self, _cx: &mut TaskCx) {
        // Nothing to do: the final checkpoint pre-commits the open transaction and its
        // completion commits it.
    }

    fn flush(&mut self, _cx: &mut TaskCx) {}

    fn close(&mut self) -> Result<(), OperatorError> {
        let aborted = match self.current.take() {
            Some(txn) => self
                .sink
                .abort(txn)
                .map_err(|source| self.operator_error("abort", source)),
            None => Ok(()),
        };
        // Pending transactions stay as they are: a restore from their checkpoint commits them.
        let closed = self
            .sink
            .close()
            .map_err(|source| self.operator_error("close", source));
        aborted.and(closed)
    }

    fn metrics(&self, out: &mut Vec<(NodeId, OperatorCounters)>) {
        out.push((self.info.node, self.counters));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::checkpoint::CheckpointKind;
    use crate::exchange::CreditOutbox;
    use crate::operator::checkpointing::TaskStateInit;
    use crate::operator::{FunctionError, RuntimeContext};
    use crate::state::snapshot::redistribute;
    use crate::state::{OperatorSnapshot, StateBackendKind};

    /// A transaction of the fake sink: a number and its records.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct FakeTxn {
        id: u32,
        values: Vec<u32>,
    }

    /// A sink that records every call, and fails in the phase named by `fail_in`.
    #[derive(Clone)]
    struct FakeSink {
        calls: Arc<Mutex<Vec<String>>>,
        next_id: u32,
        fail_in: Option<&'static str>,
    }
    crate::api::operator::impl_plain_operator!(FakeSink);

    impl FakeSink {
        fn new(first_id: u32) -> (Self, Arc<Mutex<Vec<String>>>) {
            let calls = Arc::new(Mutex::new(Vec::new()));
            let sink = Self {
                calls: calls.clone(),
                next_id: first_id,
                fail_in: None,
            };
            (sink, calls)
        }

        fn call(&mut self, phase: &'static str, detail: String) -> Result<(), FunctionError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("{phase} {detail}").trim_end().to_string());
            if self.fail_in == Some(phase) {
                return Err(format!("injected {phase} failure").into());
            }
            Ok(())
        }
    }

    fn txn_text(txn: &FakeTxn) -> String {
        format!("{}{:?}", txn.id, txn.values)
    }

    impl TwoPhaseCommitSink<u32> for FakeSink {
        type Txn = FakeTxn;

        fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
            self.call("open", ctx.subtask_index.to_string())
        }
        fn begin_transaction(&mut self) -> Result<FakeTxn, FunctionError> {
            let id = self.next_id;
            self.next_id += 1;
            self.call("begin", id.to_string())?;
            Ok(FakeTxn {
                id,
                values: Vec::new(),
            })
        }
        fn invoke(
            &mut self,
            txn: &mut FakeTxn,
            value: u32,
            _ctx: &SinkContext,
        ) -> Result<(), FunctionError> {
            self.call("invoke", format!("{} {value}", txn.id))?;
            txn.values.push(value);
            Ok(())
        }
        fn pre_commit(&mut self, txn: &mut FakeTxn) -> Result<(), FunctionError> {
            self.call("pre_commit", txn_text(txn))
        }
        fn commit(&mut self, txn: FakeTxn) -> Result<(), FunctionError> {
            self.call("commit", txn_text(&txn))
        }
        fn abort(&mut self, txn: FakeTxn) -> Result<(), FunctionError> {
            self.call("abort", txn_text(&txn))
        }
        fn recover_and_commit(&mut self, txn: FakeTxn) -> Result<(), FunctionError> {
            self.call("recover_and_commit", txn_text(&txn))
        }
        fn recover_and_abort(&mut self, txn: FakeTxn) -> Result<(), FunctionError> {
            self.call("recover_and_abort", txn_text(&txn))
        }
        fn close(&mut self) -> Result<(), FunctionError> {
            self.call("close", String::new())
        }
    }

    struct Harness {
        node: TwoPhaseCommitSinkNode<u32, FakeSink>,
        cx: TaskCx,
        calls: Arc<Mutex<Vec<String>>>,
    }

    impl Harness {
        fn new(sink: FakeSink, calls: Arc<Mutex<Vec<String>>>) -> Self {
            Self::with_parallelism(sink, calls, 1)
        }

        fn with_parallelism(
            sink: FakeSink,
            calls: Arc<Mutex<Vec<String>>>,
            parallelism: u32,
        ) -> Self {
            let info = OperatorInfo {
                node: NodeId(7),
                name: "2pc under test".into(),
                uid: Some("sink".into()),
                parallelism,
            };
            Self {
                node: TwoPhaseCommitSinkNode::new(info, sink),
                cx: TaskCx::new(CreditOutbox::new(0), NodeId(7)),
                calls,
            }
        }

        /// A fresh sink whose transactions are numbered from `first_id`, opened with `restored`
        /// state (of checkpoint `from`).
        fn open(first_id: u32, restored: Option<(CheckpointId, OperatorSnapshot)>) -> Self {
            Self::open_at(first_id, 0, 1, restored)
        }

        /// [`Harness::open`] as subtask `subtask_index` of `parallelism`.
        fn open_at(
            first_id: u32,
            subtask_index: u32,
            parallelism: u32,
            restored: Option<(CheckpointId, OperatorSnapshot)>,
        ) -> Self {
            let (sink, calls) = FakeSink::new(first_id);
            let mut harness = Self::with_parallelism(sink, calls, parallelism);
            let mut ctx = open_context(restored);
            ctx.subtask_index = subtask_index;
            harness.node.open(&ctx).expect("open");
            harness
        }

        fn records(&mut self, values: &[u32]) {
            let records = values.iter().map(|v| Record::new(*v)).collect();
            self.node.process_batch(records, &mut self.cx);
        }

        fn barrier(&mut self, id: u64) {
            self.node.process_barrier(barrier(id), &mut self.cx);
        }

        fn notify(&mut self, id: u64) {
            self.node
                .notify_checkpoint_complete(CheckpointId(id), &mut self.cx);
        }

        fn take_calls(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }

        /// The state the last barrier stored, as a restore would get it back.
        fn last_snapshot(&mut self) -> OperatorSnapshot {
            let (state_id, pending) = self.cx.snapshots.pop().expect("a snapshot");
            assert_eq!(state_id, "sink");
            pending.complete().expect("complete")
        }

        fn failure(&self) -> Option<String> {
            self.cx.failure.as_ref().map(|f| {
                assert_eq!(f.operator, NodeId(7), "the failure names the sink");
                f.message.clone()
            })
        }
    }

    fn barrier(id: u64) -> CheckpointBarrier {
        CheckpointBarrier {
            id: CheckpointId(id),
            kind: CheckpointKind::Checkpoint,
        }
    }

    fn open_context(restored: Option<(CheckpointId, OperatorSnapshot)>) -> OpenContext {
        let (from, states) = match restored {
            Some((id, snapshot)) => (Some(id), BTreeMap::from([("sink".to_string(), snapshot)])),
            None => (None, BTreeMap::new()),
        };
        OpenContext {
            job_name: "test".into(),
            job_id: crate::checkpoint::JobId(7),
            subtask_index: 0,
            max_parallelism: 128,
            attempt_number: 0,
            state: Arc::new(TaskStateInit::new(
                states,
                from,
                StateBackendKind::Memory,
                std::env::temp_dir(),
                1_000,
                1 << 20,
            )),
            metrics: None,
        }
    }

    #[test]
    fn records_go_into_the_open_transaction_and_a_barrier_pre_commits_it() {
        let mut h = Harness::open(0, None);
        assert_eq!(h.take_calls(), vec!["open 0", "begin 0"]);
        h.records(&[1, 2]);
        h.barrier(1);
        h.records(&[3]);
        assert_eq!(
            h.take_calls(),
            vec![
                "invoke 0 1",
                "invoke 0 2",
                "pre_commit 0[1, 2]",
                "begin 1",
                "invoke 1 3",
            ],
            "nothing is committed before the checkpoint completes"
        );
        assert_eq!(
            h.cx.snapshots.len(),
            1,
            "the barrier stored the transactions"
        );
        assert!(h.failure().is_none());
        let mut metrics = Vec::new();
        h.node.metrics(&mut metrics);
        assert_eq!(metrics[0].1.records_in, 3);
    }

    #[test]
    fn the_final_snapshot_pre_commits_and_its_completion_commits() {
        let mut h = Harness::open(0, None);
        h.records(&[5]);
        h.node.end_of_input(&mut h.cx);
        h.node.snapshot_state(barrier(9), &mut h.cx);
        h.notify(9);
        h.node.close().expect("close");
        assert_eq!(
            h.take_calls(),
            vec![
                "open 0",
                "begin 0",
                "invoke 0 5",
                "pre_commit 0[5]",
                "begin 1",
                "commit 0[5]",
                "abort 1[]",
                "close",
            ]
        );
        assert_eq!(h.cx.snapshots.len(), 1);
    }

    #[test]
    fn completion_commits_pending_transactions_in_order_up_to_its_id() {
        let mut h = Harness::open(0, None);
        h.records(&[1]);
        h.barrier(1);
        h.records(&[2]);
        h.barrier(2);
        h.records(&[3]);
        h.barrier(3);
        h.records(&[4]);
        h.take_calls();
        // Checkpoint 1 completes late, after barriers 2 and 3 passed: only its transaction.
        h.notify(1);
        assert_eq!(h.take_calls(), vec!["commit 0[1]"]);
        // Checkpoint 3 completes (2 was aborted or is subsumed): 2 and 3, oldest first.
        h.notify(3);
        assert_eq!(h.take_calls(), vec!["commit 1[2]", "commit 2[3]"]);
        // A repeated or older notification commits nothing more.
        h.notify(2);
        h.notify(3);
        assert!(h.take_calls().is_empty());
        h.node.close().expect("close");
        assert_eq!(h.take_calls(), vec!["abort 3[4]", "close"]);
    }

    #[test]
    fn a_restore_commits_the_pending_transactions_again_and_aborts_the_open_one() {
        let mut h = Harness::open(0, None);
        h.records(&[1]);
        h.barrier(1);
        h.records(&[2]);
        h.barrier(2);
        h.records(&[3]);
        let snapshot = h.last_snapshot();
        // Checkpoint 1's notification arrives, then the task crashes before 2's does.
        h.notify(1);
        assert_eq!(h.take_calls().last().unwrap(), "commit 0[1]");
        drop(h);

        let mut restored = Harness::open(10, Some((CheckpointId(2), snapshot)));
        assert_eq!(
            restored.take_calls(),
            vec![
                // Both were pre-committed in checkpoint 2: 0 was committed already (commit
                // is idempotent), 1 maybe not.
                "recover_and_commit 0[1]",
                "recover_and_commit 1[2]",
                // Opened after checkpoint 2: its records are replayed.
                "recover_and_abort 2[]",
                "open 0",
                "begin 10",
            ]
        );
        // Nothing of the old attempt stays pending.
        restored.notify(5);
        assert!(restored.take_calls().is_empty());
    }

    /// The snapshots of checkpoint 4 of `parallelism` subtasks; subtask `j` numbers its
    /// transactions from `100 * j` and wrote the record `100 * j + 1`.
    fn snapshots_of(parallelism: u32) -> Vec<OperatorSnapshot> {
        (0..parallelism)
            .map(|j| {
                let mut h = Harness::open_at(100 * j, j, parallelism, None);
                h.records(&[100 * j + 1]);
                h.barrier(4);
                h.last_snapshot()
            })
            .collect()
    }

    /// What new subtask `index` of `parallelism` recovers from `old`, before it opens.
    fn recovered(old: &[OperatorSnapshot], index: u32, parallelism: u32) -> Vec<String> {
        let share = redistribute(old, 128, parallelism, index).expect("redistribute");
        let h = Harness::open_at(900, index, parallelism, Some((CheckpointId(4), share)));
        let mut calls = h.take_calls();
        assert_eq!(
            calls.split_off(calls.len() - 2),
            [format!("open {index}"), "begin 900".into()]
        );
        calls
    }

    #[test]
    fn a_rescaled_restore_recovers_the_transactions_of_every_old_subtask() {
        let old = snapshots_of(2);
        assert_eq!(
            recovered(&old, 0, 1),
            vec![
                "recover_and_commit 0[1]",
                "recover_and_commit 100[101]",
                "recover_and_abort 1[]",
                "recover_and_abort 101[]",
            ]
        );
    }

    #[test]
    fn old_subtask_o_is_recovered_by_new_subtask_o_mod_p() {
        let old = snapshots_of(3);
        // Scale-down to 2: old 0 and 2 to new 0, old 1 to new 1 (which also writes under
        // index 1, so only it may clean up after old subtask 1).
        assert_eq!(
            recovered(&old, 0, 2),
            vec![
                "recover_and_commit 0[1]",
                "recover_and_commit 200[201]",
                "recover_and_abort 1[]",
                "recover_and_abort 201[]",
            ]
        );
        assert_eq!(
            recovered(&old, 1, 2),
            vec!["recover_and_commit 100[101]", "recover_and_abort 101[]"]
        );
        // Same parallelism: each its own. Scale-up: the new subtask 3 recovers nothing.
        for j in 0..3 {
            assert_eq!(
                recovered(&old, j, 3),
                vec![
                    format!("recover_and_commit {}[{}]", 100 * j, 100 * j + 1),
                    format!("recover_and_abort {}[]", 100 * j + 1),
                ]
            );
        }
        assert!(recovered(&old, 3, 4).is_empty());
    }

    #[test]
    fn split_mode_transactions_of_earlier_versions_are_recovered() {
        #[derive(Serialize)]
        struct Earlier {
            pending: Vec<(CheckpointId, FakeTxn)>,
            current: Option<FakeTxn>,
        }
        let txn = |id: u32, values: Vec<u32>| FakeTxn { id, values };
        let element = postcard::to_allocvec(&Earlier {
            pending: vec![(CheckpointId(3), txn(5, vec![1]))],
            current: Some(txn(6, vec![])),
        })
        .unwrap();
        let snapshot = OperatorSnapshot {
            operator: vec![crate::state::OperatorListState {
                name: TRANSACTIONS_STATE.into(),
                mode: OperatorStateMode::Split,
                elements: vec![element],
            }],
            ..OperatorSnapshot::default()
        };
        assert_eq!(
            recovered(&[snapshot], 0, 1),
            vec!["recover_and_commit 5[1]", "recover_and_abort 6[]"]
        );
    }

    #[test]
    fn sink_errors_fail_the_task_with_the_phase() {
        for (phase, expected) in [
            ("invoke", "invoke failed: injected invoke failure"),
            ("pre_commit", "pre_commit for checkpoint 1 failed"),
            ("commit", "commit of checkpoint 1 (completed: 1) failed"),
        ] {
            let (mut sink, calls) = FakeSink::new(0);
            sink.fail_in = Some(phase);
            let mut h = Harness::new(sink, calls);
            h.node.open(&open_context(None)).expect("open");
            h.records(&[1]);
            h.barrier(1);
            h.notify(1);
            let failure = h.failure().expect("the task failed");
            assert!(failure.contains(expected), "{phase}: {failure}");
        }
        for phase in ["open", "begin"] {
            let (mut sink, calls) = FakeSink::new(0);
            sink.fail_in = Some(phase);
            let mut h = Harness::new(sink, calls);
            let error = h.node.open(&open_context(None)).unwrap_err();
            assert_eq!(error.operator, "2pc under test");
            assert!(error.to_string().contains("injected"), "{error}");
        }
        let (mut sink, calls) = FakeSink::new(0);
        sink.fail_in = Some("abort");
        let mut h = Harness::new(sink, calls);
        h.node.open(&open_context(None)).expect("open");
        let error = h.node.close().unwrap_err();
        assert_eq!(error.phase, "abort");
        assert_eq!(h.take_calls().last().unwrap(), "close", "closed anyway");
    }
}
