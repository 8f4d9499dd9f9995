//! An exactly-once sink for simulations: what committed transactions wrote, and nothing else.
//!
//! [`CommittedOutput::sink`] is a [`TwoPhaseCommitSink`]: records go into the open transaction,
//! which the runtime pre-commits at a checkpoint barrier and commits when the checkpoint
//! completed. Only committed transactions become visible in [`CommittedOutput::committed`], under
//! a name unique per run, subtask, attempt and transaction, so a repeated commit after a restore
//! stores the same rows again instead of twice. It is the exactly-once oracle's view of a job.
//!
//! The output also keeps its **commit log** (every commit in the order it happened, with its
//! rows), which the checkpoint-consistency oracle replays, and survives a simulated process
//! crash: [`CommittedOutput::continue_from`] hands the rows of a crashed run to the next run,
//! as an external database keeps them.
//!
//! On a simulated cluster every node builds the job, so every node has its own output, and a
//! sink subtask commits into the output of the node it runs on. [`CommittedOutput::merged`]
//! puts them together as the one external database they stand for: the rows of every node, and
//! the commits in the order they happened across nodes (each commit is stamped from a
//! process-wide counter; all nodes of a run share one thread, so the stamps order them).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use eichhorn::api::{Data, Operator, SinkContext, TwoPhaseCommitSink, Unkeyed};
use eichhorn::prelude::{FunctionError, RuntimeContext};

/// What committed: rows per transaction name, the commits in order, and the run number that
/// keeps transaction names of runs after a crash apart.
#[derive(Debug)]
struct Committed<T> {
    rows: BTreeMap<String, Vec<T>>,
    log: Vec<(String, Vec<T>)>,
    /// The stamp of each commit of `log` (same length), from [`COMMIT_STAMP`].
    stamps: Vec<u64>,
    run: u32,
}

/// Orders commits across the outputs of one run's nodes. Stamps are only compared, never
/// hashed or shown, so other simulations taking stamps in other threads do no harm.
static COMMIT_STAMP: AtomicU64 = AtomicU64::new(0);

type Table<T> = Arc<Mutex<Committed<T>>>;

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

fn lock<T>(table: &Table<T>) -> MutexGuard<'_, Committed<T>> {
    table
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<T: Data> CommittedOutput<T> {
    /// An empty output.
    pub fn new() -> Self {
        Self {
            table: Arc::new(Mutex::new(Committed {
                rows: BTreeMap::new(),
                log: Vec::new(),
                stamps: Vec::new(),
                run: 0,
            })),
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
        lock(&self.table).rows.values().flatten().cloned().collect()
    }

    /// Every commit in the order it happened: the transaction's name and rows (a transaction
    /// committed again after a restore appears again).
    pub fn commit_log(&self) -> Vec<(String, Vec<T>)> {
        lock(&self.table).log.clone()
    }

    /// Takes over what `previous` (the output of a crashed run of the same job) committed, so
    /// this run's commits add to it; this run's transaction names differ from the crashed
    /// run's. Call it before the run starts.
    pub fn continue_from(&self, previous: &Self) {
        let (rows, log, stamps, run) = {
            let previous = lock(&previous.table);
            (
                previous.rows.clone(),
                previous.log.clone(),
                previous.stamps.clone(),
                previous.run,
            )
        };
        let mut table = lock(&self.table);
        table.rows = rows;
        table.log = log;
        table.stamps = stamps;
        table.run = run + 1;
    }

    /// The outputs of the nodes of one cluster run as one: every node's rows (transaction
    /// names are unique per subtask and attempt, and a subtask's attempt runs on one node), and
    /// every node's commits in the order they happened.
    pub fn merged(outputs: &[Self]) -> Self {
        let merged = Self::new();
        let mut stamped = Vec::new();
        {
            let mut table = lock(&merged.table);
            for output in outputs {
                let node = lock(&output.table);
                for (name, rows) in &node.rows {
                    table.rows.insert(name.clone(), rows.clone());
                }
                stamped.extend(node.stamps.iter().copied().zip(node.log.iter().cloned()));
                table.run = table.run.max(node.run);
            }
            stamped.sort_by_key(|(stamp, _)| *stamp);
            for (stamp, commit) in stamped {
                table.stamps.push(stamp);
                table.log.push(commit);
            }
        }
        merged
    }
}

/// The sink of a [`CommittedOutput`].
#[derive(Debug)]
pub struct CommittedSink<T> {
    table: Table<T>,
    /// `<run>-<subtask>-<attempt>`, set at open.
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
        let run = lock(&self.table).run;
        self.prefix = format!(
            "{run:02}-{:04}-{:04}",
            ctx.subtask_index, ctx.attempt_number
        );
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
            let mut table = lock(&self.table);
            table.log.push((txn.name.clone(), txn.rows.clone()));
            table
                .stamps
                .push(COMMIT_STAMP.fetch_add(1, Ordering::Relaxed));
            table.rows.insert(txn.name, txn.rows);
        }
        Ok(())
    }

    fn abort(&mut self, _txn: Staged<T>) -> Result<(), FunctionError> {
        Ok(())
    }
}
