//! An exactly-once sink for simulations: what committed transactions wrote, and nothing else.
//!
//! [`CommittedOutput::sink`] is a [`TwoPhaseCommitSink`]: records go into the open transaction,
//! which the runtime pre-commits at a checkpoint barrier and commits when the checkpoint
//! completed. Only committed transactions become visible in [`CommittedOutput::committed`], under
//! a name unique per subtask, attempt and transaction, so a repeated commit after a restore
//! stores the same rows again instead of twice. It is the exactly-once oracle's view of a job.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use eichhorn::api::{Data, Operator, SinkContext, TwoPhaseCommitSink, Unkeyed};
use eichhorn::prelude::{FunctionError, RuntimeContext};

/// Committed rows per transaction name.
type Table<T> = Arc<Mutex<BTreeMap<String, Vec<T>>>>;

/// The rows an exactly-once job committed; make the job's sink with [`CommittedOutput::sink`].
#[derive(Debug)]
pub struct CommittedOutput<T> {
    table: Table<T>,
}

impl<T> Clone for CommittedOutput<T> {
    fn clone(&self) -> Self {
        Self {
            table: Arc::clone(&self.table),
        }
    }
}

impl<T: Data> Default for CommittedOutput<T> {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(table: &Table<T>) -> MutexGuard<'_, BTreeMap<String, Vec<T>>> {
    table
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<T: Data> CommittedOutput<T> {
    /// An empty output.
    pub fn new() -> Self {
        Self {
            table: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// The sink that commits into this output (`stream.add_two_phase_sink(output.sink())`).
    pub fn sink(&self) -> CommittedSink<T> {
        CommittedSink {
            table: Arc::clone(&self.table),
            prefix: String::new(),
            next: 0,
        }
    }

    /// Every committed row, transactions in name order.
    pub fn committed(&self) -> Vec<T> {
        lock(&self.table).values().flatten().cloned().collect()
    }
}

/// The sink of a [`CommittedOutput`].
#[derive(Debug)]
pub struct CommittedSink<T> {
    table: Table<T>,
    /// `<subtask>-<attempt>`, set at open.
    prefix: String,
    next: u64,
}

impl<T> Clone for CommittedSink<T> {
    fn clone(&self) -> Self {
        Self {
            table: Arc::clone(&self.table),
            prefix: self.prefix.clone(),
            next: self.next,
        }
    }
}

impl<T> Operator for CommittedSink<T> {}
impl<T> Unkeyed for CommittedSink<T> {}

/// One transaction: its unique name and its rows (the rows live in the checkpoint with it).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Staged<T> {
    name: String,
    rows: Vec<T>,
}

impl<T> std::fmt::Debug for Staged<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged")
            .field("name", &self.name)
            .field("rows", &self.rows.len())
            .finish()
    }
}

impl<T: Data> TwoPhaseCommitSink<T> for CommittedSink<T> {
    type Txn = Staged<T>;

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.prefix = format!("{:04}-{:04}", ctx.subtask_index, ctx.attempt_number);
        Ok(())
    }

    fn begin_transaction(&mut self) -> Result<Staged<T>, FunctionError> {
        self.next += 1;
        Ok(Staged {
            name: format!("{}-{:08}", self.prefix, self.next),
            rows: Vec::new(),
        })
    }

    fn invoke(
        &mut self,
        txn: &mut Staged<T>,
        value: T,
        _ctx: &SinkContext,
    ) -> Result<(), FunctionError> {
        txn.rows.push(value);
        Ok(())
    }

    fn pre_commit(&mut self, _txn: &mut Staged<T>) -> Result<(), FunctionError> {
        Ok(())
    }

    fn commit(&mut self, txn: Staged<T>) -> Result<(), FunctionError> {
        if !txn.rows.is_empty() {
            lock(&self.table).insert(txn.name, txn.rows);
        }
        Ok(())
    }

    fn abort(&mut self, _txn: Staged<T>) -> Result<(), FunctionError> {
        Ok(())
    }
}
