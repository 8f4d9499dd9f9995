//! Exactly-once sinks: the two-phase-commit protocol (Flink's `TwoPhaseCommitSinkFunction`).
//!
//! A sink that can hold its output back until a checkpoint completes gives end-to-end
//! exactly-once results: records written after the last completed checkpoint are replayed by
//! the sources after a failure, so they must not be visible yet. The runtime drives the
//! protocol (see [`TwoPhaseCommitSink`]); the sink only says how to begin, pre-commit, commit
//! and abort one transaction of its external system.
//!
//! ## Invariants
//!
//! - Every record goes into exactly one transaction, the one open when it arrived.
//! - A transaction is pre-committed when the checkpoint barrier that ends it reaches the sink,
//!   and committed only once a checkpoint at or after that barrier completed.
//! - A transaction stored in a completed checkpoint as pre-committed is committed again after a
//!   restore (the commit may or may not have happened before the failure): `commit` must be
//!   idempotent.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::functions::SinkContext;
use crate::operator::{FunctionError, RuntimeContext};

/// A transactional sink that publishes its output only when a checkpoint covering it completed
/// (`DataStream::add_two_phase_sink`); Flink's `TwoPhaseCommitSinkFunction`.
///
/// ## Protocol
///
/// Per parallel instance, the runtime calls:
///
/// 1. on a restore: [`recover_and_commit`] for every transaction the restored checkpoint holds as
///    pre-committed (its checkpoint completed, so its output belongs to the result, whether or
///    not the commit ran before the failure), then [`recover_and_abort`] for the transaction
///    that was open at the checkpoint (its records are replayed). At the parallelism of the
///    checkpoint each instance gets the transactions of the old instance with its index; at
///    another, instance `i` of `p` gets those of every old instance `o` with `o mod p == i`,
///    so each old transaction is recovered exactly once, also after a scale-down;
/// 2. [`open`], then [`begin_transaction`]: the first open transaction;
/// 3. [`invoke`] for every record, with the open transaction;
/// 4. when a checkpoint barrier reaches the sink (and at the final checkpoint of a bounded job):
///    [`pre_commit`] of the open transaction (make it durable: flush, sync; after this it must
///    survive a crash and still be committable or abortable), which becomes *pending* for that
///    checkpoint, then [`begin_transaction`] for the records after the barrier. The pending
///    transactions and the new open one are stored in the checkpoint (so `Txn` is
///    serialisable: it is a *handle* to the external transaction, such as a file name or a
///    transaction id, not the data);
/// 5. when checkpoint `n` completed: [`commit`] of every pending transaction of a checkpoint
///    `<= n`, oldest first;
/// 6. at the end: [`abort`] of the open transaction (empty after the final checkpoint), then
///    [`close`].
///
/// A failure anywhere (an `Err` from any method) fails the task with the sink's name and the
/// phase; the job then restarts from its latest completed checkpoint, which step 1 finishes.
/// Because a crash may come after a commit but before the runtime learns about it, `commit`
/// (and `recover_and_commit`) may run again for a transaction that is already committed: it
/// must be **idempotent**. `abort` may also run for a transaction that never wrote anything.
///
/// [`recover_and_commit`]: TwoPhaseCommitSink::recover_and_commit
/// [`recover_and_abort`]: TwoPhaseCommitSink::recover_and_abort
/// [`open`]: TwoPhaseCommitSink::open
/// [`begin_transaction`]: TwoPhaseCommitSink::begin_transaction
/// [`invoke`]: TwoPhaseCommitSink::invoke
/// [`pre_commit`]: TwoPhaseCommitSink::pre_commit
/// [`commit`]: TwoPhaseCommitSink::commit
/// [`abort`]: TwoPhaseCommitSink::abort
/// [`close`]: TwoPhaseCommitSink::close
///
/// # Examples
///
/// A sink that publishes rows into a shared table, keyed by transaction name so that a repeated
/// commit writes the same rows again instead of duplicating them:
///
/// ```
/// use std::collections::BTreeMap;
/// use std::sync::{Arc, Mutex};
///
/// use eichhorn::api::TwoPhaseCommitSink;
/// use eichhorn::prelude::*;
///
/// #[operator]
/// #[derive(Clone, Default)]
/// struct TableSink {
///     /// The published rows, per transaction.
///     table: Arc<Mutex<BTreeMap<String, Vec<u32>>>>,
///     /// Unique transaction names: subtask, attempt, sequence number.
///     prefix: String,
///     next: u64,
/// }
///
/// /// One transaction: its name and the rows staged in it.
/// #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// struct Staged {
///     name: String,
///     rows: Vec<u32>,
/// }
///
/// impl TwoPhaseCommitSink<u32> for TableSink {
///     type Txn = Staged;
///
///     fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
///         self.prefix = format!("{}-{}", ctx.subtask_index, ctx.attempt_number);
///         Ok(())
///     }
///     fn begin_transaction(&mut self) -> Result<Staged, FunctionError> {
///         self.next += 1;
///         Ok(Staged { name: format!("{}-{}", self.prefix, self.next), rows: Vec::new() })
///     }
///     fn invoke(&mut self, txn: &mut Staged, value: u32, _ctx: &SinkContext) -> Result<(), FunctionError> {
///         txn.rows.push(value);
///         Ok(())
///     }
///     fn pre_commit(&mut self, _txn: &mut Staged) -> Result<(), FunctionError> {
///         // The rows are already in the transaction handle, which the checkpoint stores.
///         Ok(())
///     }
///     fn commit(&mut self, txn: Staged) -> Result<(), FunctionError> {
///         // Idempotent: committing twice stores the same rows under the same name.
///         if !txn.rows.is_empty() {
///             self.table.lock().map_err(|_| "table poisoned")?.insert(txn.name, txn.rows);
///         }
///         Ok(())
///     }
///     fn abort(&mut self, _txn: Staged) -> Result<(), FunctionError> {
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let sink = TableSink::default();
/// let env = StreamEnv::new();
/// env.from_collection(vec![1u32, 2, 3]).add_two_phase_sink(sink.clone());
/// env.execute("two-phase").await.unwrap();
/// // The final checkpoint of the bounded job committed everything.
/// let rows: Vec<u32> = sink.table.lock().unwrap().values().flatten().copied().collect();
/// assert_eq!(rows, vec![1, 2, 3]);
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a two-phase commit sink",
    label = "needs an `impl TwoPhaseCommitSink` for this type",
    note = "implement `TwoPhaseCommitSink` for the type (usually a struct with `#[operator]`)"
)]
pub trait TwoPhaseCommitSink<I>: crate::api::Unkeyed + Clone + Send + 'static {
    /// A handle to one transaction of the external system. It is stored in checkpoints (pending
    /// transactions and the open one), so it must stay small and must identify the transaction
    /// across process restarts.
    type Txn: Serialize + DeserializeOwned + Clone + Send + Debug + 'static;

    /// Called once per subtask, after recovery and before the first transaction begins.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming this sink.
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        Ok(())
    }

    /// Starts a new transaction; the records until the next checkpoint barrier go into it.
    ///
    /// # Errors
    ///
    /// Any error fails the task, naming this sink and the phase.
    fn begin_transaction(&mut self) -> Result<Self::Txn, FunctionError>;

    /// Writes one record into `txn` (invisible until the transaction commits).
    ///
    /// # Errors
    ///
    /// Any error fails the task, naming this sink and the phase.
    fn invoke(
        &mut self,
        txn: &mut Self::Txn,
        value: I,
        ctx: &SinkContext,
    ) -> Result<(), FunctionError>;

    /// Makes `txn` durable before the checkpoint is taken: after this, a crash must leave it
    /// committable (by [`TwoPhaseCommitSink::recover_and_commit`]) and abortable. No record is
    /// added to it afterwards.
    ///
    /// # Errors
    ///
    /// Any error fails the task (and so the checkpoint), naming this sink and the phase.
    fn pre_commit(&mut self, txn: &mut Self::Txn) -> Result<(), FunctionError>;

    /// Publishes a pre-committed transaction: its checkpoint completed. Must be idempotent: after
    /// a crash it may run again for a transaction that is already committed.
    ///
    /// # Errors
    ///
    /// Any error fails the task; the restart commits the transaction again.
    fn commit(&mut self, txn: Self::Txn) -> Result<(), FunctionError>;

    /// Discards a transaction: its records will be replayed or are not part of the result. May
    /// run for a transaction that wrote nothing, or whose leftovers are already gone.
    ///
    /// # Errors
    ///
    /// Any error fails the task, naming this sink and the phase.
    fn abort(&mut self, txn: Self::Txn) -> Result<(), FunctionError>;

    /// Commits a pre-committed transaction found in the restored checkpoint (before `open`). It
    /// may already be committed. Defaults to [`TwoPhaseCommitSink::commit`].
    ///
    /// # Errors
    ///
    /// Any error fails the restore, naming this sink and the phase.
    fn recover_and_commit(&mut self, txn: Self::Txn) -> Result<(), FunctionError> {
        self.commit(txn)
    }

    /// Aborts the transaction that was open when the restored checkpoint was taken (before
    /// `open`). Defaults to [`TwoPhaseCommitSink::abort`].
    ///
    /// # Errors
    ///
    /// Any error fails the restore, naming this sink and the phase.
    fn recover_and_abort(&mut self, txn: Self::Txn) -> Result<(), FunctionError> {
        self.abort(txn)
    }

    /// Called once per subtask after the open transaction was aborted at the end of the job.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming this sink.
    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
}
