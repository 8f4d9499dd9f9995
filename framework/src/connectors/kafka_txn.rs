//! The transaction protocol of the exactly-once Kafka sink, as a sans-IO core: which
//! transactional id each transaction uses and what to do with the producers at every step of
//! the two-phase-commit protocol, including recovery. The sink carries the actions out with
//! rdkafka; the unit tests carry them out against a model of a broker's transaction
//! coordinator and crash the sink at every point.
//!
//! ## Design
//!
//! Every transaction gets a transactional id `<prefix>-<subtask>-<slot>` from a pool of
//! `pool_size` slots per subtask (Flink's pool of transactional producers): the open
//! transaction and the pre-committed ones waiting for their checkpoint hold a slot each, so at
//! most `pool_size - 1` checkpoints can await their notification. Beginning a transaction
//! *initialises* its producer (`init_transactions`), which fences every earlier producer of the
//! same id and aborts what it left open, so an id is never in two transactions at once.
//!
//! A pre-committed transaction records the **producer id and epoch** its producer got from
//! the transaction coordinator (librdkafka reports them in its statistics), and the checkpoint
//! stores them with it. Recovery commits a transaction of the restored checkpoint in one of
//! two ways ([`TransactionCore::recover_commit`]):
//!
//! - its producer is still alive in this process (a failed task, not a dead process): the sink
//!   hands the producers of pre-committed transactions to a process-wide registry when it is
//!   dropped and records there which transactions it committed; the restore takes the producer
//!   back and commits, or skips what was committed;
//! - otherwise (the process died) it is **resumed** as Flink's
//!   `FlinkKafkaInternalProducer.resumeTransaction` does: `EndTxn(commit)` with the recorded
//!   producer id and epoch, sent to the transactional id's coordinator (`FindCoordinator`).
//!   [`ResumeCommit`] decides what the broker's answers mean: the commit went through (or had
//!   already gone through: Kafka answers a repeated commit of the same epoch with success), or
//!   the epoch is fenced, or the transaction is in no state to commit.
//!
//! A fenced epoch means the transaction had ended before: an id's producer is initialised
//! again (bumping its epoch) only when its slot is reused, after the transaction committed,
//! or at `handle_open`, after every pending transaction of the restored checkpoint was
//! committed. (A transaction pre-committed for a checkpoint that never completed is not in any
//! checkpoint a restore uses, and the fence at open aborts it.) Both ways run before any new
//! producer initialises the id, which is the order the two-phase-commit operator keeps:
//! `recover_and_commit`, `recover_and_abort`, then `open`.
//!
//! ## Invariants
//!
//! - A slot is in use from `begin` until its transaction is committed or aborted; a slot in use
//!   is never handed out again.
//! - Recovery aborts (by fencing) every transaction of the restored checkpoint that was open,
//!   and, at open, every id of this subtask's pool, so no transaction a crash left open keeps
//!   `read_committed` consumers waiting.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

/// One transaction of the Kafka sink: what checkpoints store about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaTransaction {
    /// The transactional id (empty at least once).
    pub(crate) transactional_id: String,
    /// Its slot in the subtask's pool.
    pub(crate) slot: u32,
    /// Which use of the id this is (unique in the process that began it).
    pub(crate) generation: u64,
    /// Records sent in it.
    pub(crate) records: u64,
    /// The producer id the coordinator gave its producer (`-1`: not known, at least once).
    pub(crate) producer_id: i64,
    /// The producer epoch of that producer (`-1`: not known).
    pub(crate) producer_epoch: i16,
}

impl Default for KafkaTransaction {
    fn default() -> Self {
        Self {
            transactional_id: String::new(),
            slot: 0,
            generation: 0,
            records: 0,
            producer_id: -1,
            producer_epoch: -1,
        }
    }
}

impl KafkaTransaction {
    /// The producer id and epoch of its producer, once pre-committed in exactly-once mode.
    pub fn producer_id_and_epoch(&self) -> Option<(i64, i16)> {
        (self.producer_id >= 0 && self.producer_epoch >= 0)
            .then_some((self.producer_id, self.producer_epoch))
    }

    /// The records sent in it.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The transactional id (empty in at-least-once mode).
    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }
}

/// What the sink does with its producers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxnAction {
    /// A new producer for `id`: `init_transactions` (fencing earlier producers of `id`), then
    /// `begin_transaction`. Records go to it until it is flushed.
    Begin {
        /// The transactional id.
        id: String,
    },
    /// `flush` the producer of `id`: every record acknowledged (pre-commit).
    Flush {
        /// The transactional id.
        id: String,
    },
    /// `commit_transaction` on the producer of `id`, then drop it.
    Commit {
        /// The transactional id.
        id: String,
    },
    /// `abort_transaction` on the producer of `id`, then drop it.
    Abort {
        /// The transactional id.
        id: String,
    },
    /// A throwaway producer for `id`: `init_transactions` aborts what an earlier producer of
    /// `id` left open.
    Fence {
        /// The transactional id.
        id: String,
    },
}

/// What this process knows about a transaction (the registry of the sink, see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    /// Pre-committed, and its producer is parked in this process.
    Prepared,
    /// Committed by this process.
    Committed,
}

/// How to finish a pre-committed transaction of the restored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Carry out the action (commit on the parked producer).
    Act(TxnAction),
    /// Nothing to do: committed already, or empty.
    Done,
    /// Its producer is gone (the process restarted): resume it with `EndTxn(commit)` under the
    /// recorded producer id and epoch, driven by a [`ResumeCommit`].
    Resume(ResumeCommit),
    /// Its producer is gone and the checkpoint holds no producer id and epoch for it (the
    /// pre-commit always records them, so only a hand-made state lacks them): it cannot be
    /// committed.
    Unresumable(String),
}

/// Kafka's error codes that a resumed commit tells apart (Kafka's `Errors`).
pub(crate) mod error_code {
    /// Success.
    pub(crate) const NONE: i16 = 0;
    /// The request timed out at the broker.
    pub(crate) const REQUEST_TIMED_OUT: i16 = 7;
    /// The coordinator is loading its state.
    pub(crate) const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    /// The coordinator is not available.
    pub(crate) const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    /// This broker is not the coordinator of the id.
    pub(crate) const NOT_COORDINATOR: i16 = 16;
    /// The broker does not support the request at any version we know.
    pub(crate) const UNSUPPORTED_VERSION: i16 = 35;
    /// An older epoch than the coordinator's (brokers before KIP-588).
    pub(crate) const INVALID_PRODUCER_EPOCH: i16 = 47;
    /// The transaction is in no state for this operation.
    pub(crate) const INVALID_TXN_STATE: i16 = 48;
    /// The coordinator no longer knows the transactional id.
    pub(crate) const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    /// The coordinator is still completing the transaction (writing its markers).
    pub(crate) const CONCURRENT_TRANSACTIONS: i16 = 51;
    /// A newer producer of the id fenced this epoch.
    pub(crate) const PRODUCER_FENCED: i16 = 90;
}

/// What a resumed commit does next (see [`ResumeCommit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResumeStep {
    /// Ask a bootstrap broker for the id's coordinator (`FindCoordinator`, key type 1), after
    /// waiting `backoff_ms`, then answer with [`ResumeCommit::handle_coordinator`].
    FindCoordinator {
        /// Wait before the request.
        backoff_ms: u64,
    },
    /// Send `EndTxn(commit)` with the recorded producer id and epoch to the coordinator, after
    /// waiting `backoff_ms`, then answer with [`ResumeCommit::handle_end_txn`].
    EndTxn {
        /// Wait before the request.
        backoff_ms: u64,
    },
    /// The transaction is committed (by this request or an earlier one under the same epoch).
    Committed,
    /// A later producer of the id fenced the epoch: the transaction had ended before, and
    /// only after its commit (see the module docs).
    AlreadyEnded,
    /// It cannot be committed, and asking again will not change that (the coordinator
    /// aborted it, lost the id, or does not support `EndTxn`): why, naming the transaction.
    Failed(String),
    /// No coordinator answered within the attempts: a later restore may succeed. Why, naming
    /// the transaction.
    GaveUp(String),
}

/// Resuming a pre-committed transaction whose producer is gone: `EndTxn(commit)` under the
/// recorded producer id and epoch (Flink's `resumeTransaction` + `commitTransaction`). A sans-IO
/// state machine: start with [`ResumeCommit::start`], carry out each [`ResumeStep`] and feed the
/// answer back, until `Committed`, `AlreadyEnded` or `Failed`. Transient answers (coordinator
/// moving or loading, the transaction still completing, a broken connection) are retried with
/// exponential backoff, at most `attempts_max` requests in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResumeCommit {
    /// The transactional id.
    pub(crate) transactional_id: String,
    /// The recorded producer id.
    pub(crate) producer_id: i64,
    /// The recorded producer epoch.
    pub(crate) producer_epoch: i16,
    records: u64,
    attempts: u32,
    attempts_max: u32,
}

impl ResumeCommit {
    /// The first backoff; doubled per retry up to [`ResumeCommit::BACKOFF_MS_MAX`].
    pub(crate) const BACKOFF_MS_MIN: u64 = 50;
    /// The longest backoff.
    pub(crate) const BACKOFF_MS_MAX: u64 = 1_000;
    /// Requests (both kinds) before giving up: about 20 s of a coordinator that does not
    /// answer.
    pub(crate) const ATTEMPTS_MAX: u32 = 30;

    fn new(txn: &KafkaTransaction, producer_id: i64, producer_epoch: i16) -> Self {
        Self {
            transactional_id: txn.transactional_id.clone(),
            producer_id,
            producer_epoch,
            records: txn.records,
            attempts: 0,
            attempts_max: Self::ATTEMPTS_MAX,
        }
    }

    /// The first step: find the coordinator.
    pub(crate) fn start(&mut self) -> ResumeStep {
        self.attempts = 1;
        ResumeStep::FindCoordinator { backoff_ms: 0 }
    }

    fn name(&self) -> String {
        format!(
            "transaction {} (producer id {}, epoch {}, {} records)",
            self.transactional_id, self.producer_id, self.producer_epoch, self.records
        )
    }

    /// The next request (`step` with its backoff), or `Failed` when the attempts are used up.
    /// A retry waits (exponential backoff); the request following a successful one does not.
    fn next(&mut self, step: fn(u64) -> ResumeStep, retry: bool, why: &str) -> ResumeStep {
        if self.attempts >= self.attempts_max {
            return ResumeStep::GaveUp(format!(
                "committing the recovered {} gave up after {} requests: {why}",
                self.name(),
                self.attempts
            ));
        }
        let doublings = self.attempts.saturating_sub(1).min(16);
        let backoff_ms = if retry {
            (Self::BACKOFF_MS_MIN << doublings).min(Self::BACKOFF_MS_MAX)
        } else {
            0
        };
        self.attempts += 1;
        step(backoff_ms)
    }

    /// The answer to `FindCoordinator`: its error code, or why the request failed (connection,
    /// timeout, malformed answer).
    pub(crate) fn handle_coordinator(&mut self, answer: Result<i16, String>) -> ResumeStep {
        use error_code::*;
        let find = |backoff_ms| ResumeStep::FindCoordinator { backoff_ms };
        let end = |backoff_ms| ResumeStep::EndTxn { backoff_ms };
        match answer {
            Ok(NONE) => self.next(end, false, "the coordinator never answered EndTxn"),
            Ok(
                COORDINATOR_NOT_AVAILABLE
                | COORDINATOR_LOAD_IN_PROGRESS
                | NOT_COORDINATOR
                | REQUEST_TIMED_OUT,
            ) => self.next(find, true, "no coordinator available"),
            Ok(code) => ResumeStep::Failed(format!(
                "committing the recovered {}: FindCoordinator answered error code {code}",
                self.name()
            )),
            Err(error) => self.next(find, true, &error),
        }
    }

    /// The answer to `EndTxn(commit)`: its error code, or why the request failed.
    pub(crate) fn handle_end_txn(&mut self, answer: Result<i16, String>) -> ResumeStep {
        use error_code::*;
        match answer {
            Ok(NONE) => ResumeStep::Committed,
            Ok(CONCURRENT_TRANSACTIONS | COORDINATOR_LOAD_IN_PROGRESS | REQUEST_TIMED_OUT) => self
                .next(
                    |backoff_ms| ResumeStep::EndTxn { backoff_ms },
                    true,
                    "the coordinator is still busy with the transaction",
                ),
            Ok(NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE) => self.next(
                |backoff_ms| ResumeStep::FindCoordinator { backoff_ms },
                true,
                "the coordinator moved",
            ),
            Ok(PRODUCER_FENCED | INVALID_PRODUCER_EPOCH) => ResumeStep::AlreadyEnded,
            Ok(INVALID_TXN_STATE) => ResumeStep::Failed(format!(
                "the recovered {} cannot be committed: the coordinator holds no open or \
                 committed transaction under its epoch, so it aborted it (did \
                 transaction.timeout.ms run out before the restore?) and its records are lost",
                self.name()
            )),
            Ok(UNSUPPORTED_VERSION) => ResumeStep::Failed(format!(
                "the recovered {} cannot be committed: the coordinator does not support EndTxn \
                 (a broker without transactions, e.g. tansu 0.6)",
                self.name()
            )),
            Ok(INVALID_PRODUCER_ID_MAPPING) => ResumeStep::Failed(format!(
                "the recovered {} cannot be committed: the coordinator no longer knows its \
                 transactional id (transactional.id.expiration.ms ran out?)",
                self.name()
            )),
            Ok(code) => ResumeStep::Failed(format!(
                "committing the recovered {}: EndTxn answered error code {code}",
                self.name()
            )),
            Err(error) => self.next(
                |backoff_ms| ResumeStep::FindCoordinator { backoff_ms },
                true,
                &error,
            ),
        }
    }
}

/// A protocol violation or a transaction that cannot be finished.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TxnError {
    /// Every slot holds a transaction: too many checkpoints await their notification.
    #[error(
        "all {pool_size} transactional ids of subtask {subtask} are in use: more checkpoints \
         await their completion than the pool allows (raise the pool size)"
    )]
    PoolExhausted {
        /// The subtask.
        subtask: u32,
        /// The pool size.
        pool_size: u32,
    },
}

/// The transactions of one sink subtask (see the module docs). Call order: the
/// `recover_*` functions for a restored checkpoint, [`TransactionCore::handle_open`], then
/// `handle_begin`, `handle_pre_commit`, `handle_commit` / `handle_abort` as the two-phase-commit
/// protocol goes; after each call drain [`TransactionCore::poll_action`] and carry the actions
/// out in order.
#[derive(Debug)]
pub(crate) struct TransactionCore {
    prefix: String,
    subtask: u32,
    pool_size: u32,
    in_use: BTreeSet<u32>,
    next_slot: u32,
    actions: VecDeque<TxnAction>,
}

impl TransactionCore {
    /// The core of subtask `subtask` with `pool_size` transactional ids under `prefix`.
    pub(crate) fn new(prefix: &str, subtask: u32, pool_size: u32) -> Self {
        assert!(
            pool_size >= 2,
            "one open and at least one pre-committed transaction"
        );
        Self {
            prefix: prefix.to_string(),
            subtask,
            pool_size,
            in_use: BTreeSet::new(),
            next_slot: 0,
            actions: VecDeque::new(),
        }
    }

    /// The transactional id of `slot`.
    pub(crate) fn id(&self, slot: u32) -> String {
        format!("{}-{}-{slot}", self.prefix, self.subtask)
    }

    /// Recovery of a transaction the restored checkpoint holds as pre-committed: commit it on
    /// the producer that prepared it, if this process still has it.
    ///
    /// `known`: what the process-wide registry says about it (for this generation).
    pub(crate) fn recover_commit(txn: &KafkaTransaction, known: Option<Known>) -> Recovery {
        match known {
            _ if txn.records == 0 => Recovery::Done,
            Some(Known::Prepared) => Recovery::Act(TxnAction::Commit {
                id: txn.transactional_id.clone(),
            }),
            Some(Known::Committed) => Recovery::Done,
            None => match txn.producer_id_and_epoch() {
                Some((producer_id, producer_epoch)) => {
                    Recovery::Resume(ResumeCommit::new(txn, producer_id, producer_epoch))
                }
                None => Recovery::Unresumable(txn.transactional_id.clone()),
            },
        }
    }

    /// Recovery of the transaction that was open at the restored checkpoint: fence its id,
    /// aborting it (and whatever later transaction used the id).
    pub(crate) fn recover_abort(txn: &KafkaTransaction) -> Option<TxnAction> {
        (!txn.transactional_id.is_empty()).then(|| TxnAction::Fence {
            id: txn.transactional_id.clone(),
        })
    }

    /// The subtask opens: fence every id of its pool (after the recoveries), so nothing a
    /// crashed attempt left open survives.
    pub(crate) fn handle_open(&mut self) {
        for slot in 0..self.pool_size {
            let id = self.id(slot);
            self.actions.push_back(TxnAction::Fence { id });
        }
    }

    /// Begins a transaction in the next free slot.
    ///
    /// # Errors
    ///
    /// [`TxnError::PoolExhausted`] when every slot holds a transaction.
    pub(crate) fn handle_begin(&mut self, generation: u64) -> Result<KafkaTransaction, TxnError> {
        let slot = (0..self.pool_size)
            .map(|i| (self.next_slot + i) % self.pool_size)
            .find(|slot| !self.in_use.contains(slot))
            .ok_or(TxnError::PoolExhausted {
                subtask: self.subtask,
                pool_size: self.pool_size,
            })?;
        self.in_use.insert(slot);
        self.next_slot = (slot + 1) % self.pool_size;
        let id = self.id(slot);
        self.actions.push_back(TxnAction::Begin { id: id.clone() });
        Ok(KafkaTransaction {
            producer_id: -1,
            producer_epoch: -1,
            transactional_id: id,
            slot,
            generation,
            records: 0,
        })
    }

    /// The barrier reached the sink: flush the open transaction.
    pub(crate) fn handle_pre_commit(&mut self, txn: &KafkaTransaction) {
        self.actions.push_back(TxnAction::Flush {
            id: txn.transactional_id.clone(),
        });
    }

    /// Its checkpoint completed: commit, and free the slot.
    pub(crate) fn handle_commit(&mut self, txn: &KafkaTransaction) {
        self.actions.push_back(TxnAction::Commit {
            id: txn.transactional_id.clone(),
        });
        self.release(txn);
    }

    /// Discarded: abort, and free the slot.
    pub(crate) fn handle_abort(&mut self, txn: &KafkaTransaction) {
        self.actions.push_back(TxnAction::Abort {
            id: txn.transactional_id.clone(),
        });
        self.release(txn);
    }

    fn release(&mut self, txn: &KafkaTransaction) {
        if txn.transactional_id == self.id(txn.slot) {
            self.in_use.remove(&txn.slot);
        }
    }

    /// The next action to carry out.
    pub(crate) fn poll_action(&mut self) -> Option<TxnAction> {
        self.actions.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// What the coordinator remembers about an id's last transaction.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    enum Ended {
        #[default]
        Nothing,
        Committed,
        Aborted,
    }

    /// A broker's transaction coordinator, reduced to what the protocol relies on: a producer
    /// epoch per transactional id (initialising bumps it and aborts the open transaction),
    /// records held per open transaction, how the last transaction ended, and a log of
    /// committed records. `end_txn` answers as Kafka's coordinator does (a repeated commit
    /// under the same epoch succeeds, an older epoch is fenced, a commit of an aborted or
    /// empty transaction is an invalid state).
    #[derive(Debug, Default)]
    struct Broker {
        epochs: BTreeMap<String, u64>,
        open: BTreeMap<String, Vec<u64>>,
        ended: BTreeMap<String, Ended>,
        log: Vec<u64>,
        /// `EndTxn` answers `CONCURRENT_TRANSACTIONS` this many times first (markers being
        /// written), to exercise the retries.
        busy_answers: u32,
    }

    impl Broker {
        fn init(&mut self, id: &str) -> u64 {
            if self.open.remove(id).is_some() {
                self.ended.insert(id.to_string(), Ended::Aborted);
            }
            let epoch = self.epochs.entry(id.to_string()).or_insert(0);
            *epoch += 1;
            *epoch
        }
        fn check(&self, id: &str, epoch: u64) -> Result<(), String> {
            if self.epochs.get(id) == Some(&epoch) {
                Ok(())
            } else {
                Err(format!("producer of {id} fenced"))
            }
        }
        fn send(&mut self, id: &str, epoch: u64, record: u64) -> Result<(), String> {
            self.check(id, epoch)?;
            self.open.entry(id.to_string()).or_default().push(record);
            Ok(())
        }
        fn commit(&mut self, id: &str, epoch: u64) -> Result<(), String> {
            self.check(id, epoch)?;
            let records = self.open.remove(id).unwrap_or_default();
            self.log.extend(records);
            self.ended.insert(id.to_string(), Ended::Committed);
            Ok(())
        }
        fn abort(&mut self, id: &str, epoch: u64) -> Result<(), String> {
            self.check(id, epoch)?;
            self.open.remove(id);
            self.ended.insert(id.to_string(), Ended::Aborted);
            Ok(())
        }
        /// `EndTxn(commit)` from a client that resumed `id` under `epoch`.
        fn end_txn(&mut self, id: &str, epoch: i16) -> i16 {
            if self.busy_answers > 0 {
                self.busy_answers -= 1;
                return error_code::CONCURRENT_TRANSACTIONS;
            }
            let current = self.epochs.get(id).copied().unwrap_or(0);
            if u64::try_from(epoch).expect("recorded") < current {
                return error_code::PRODUCER_FENCED;
            }
            if self.open.contains_key(id) {
                self.commit(id, current).expect("current epoch");
                return error_code::NONE;
            }
            match self.ended.get(id).copied().unwrap_or_default() {
                Ended::Committed => error_code::NONE,
                Ended::Aborted | Ended::Nothing => error_code::INVALID_TXN_STATE,
            }
        }
    }

    /// Drives a resumed commit against the model; `io_failures` first requests fail as a
    /// broken connection would.
    fn resume(broker: &mut Broker, mut resume: ResumeCommit, mut io_failures: u32) -> ResumeStep {
        let mut step = resume.start();
        loop {
            step = match step {
                ResumeStep::FindCoordinator { .. } if io_failures > 0 => {
                    io_failures -= 1;
                    resume.handle_coordinator(Err("connection refused".into()))
                }
                ResumeStep::FindCoordinator { .. } => resume.handle_coordinator(Ok(0)),
                ResumeStep::EndTxn { .. } => {
                    let code = broker.end_txn(&resume.transactional_id, resume.producer_epoch);
                    resume.handle_end_txn(Ok(code))
                }
                done => return done,
            };
        }
    }

    /// The process-wide registry: per transactional id, the generation it knows and what it
    /// knows about it, with the parked producer's epoch.
    type Registry = BTreeMap<String, (u64, Known, u64)>;

    /// The sink around the core, as `KafkaSink` does it: its producers (id -> epoch).
    struct Sink {
        core: TransactionCore,
        producers: BTreeMap<String, u64>,
    }

    impl Sink {
        fn carry_out(
            &mut self,
            broker: &mut Broker,
            registry: &mut Registry,
            generations: &BTreeMap<String, u64>,
        ) {
            while let Some(action) = self.core.poll_action() {
                match action {
                    TxnAction::Begin { id } => {
                        let epoch = broker.init(&id);
                        self.producers.insert(id, epoch);
                    }
                    TxnAction::Flush { .. } => {}
                    TxnAction::Commit { id } => {
                        let epoch = self.producers.remove(&id).expect("a live producer");
                        broker.commit(&id, epoch).expect("commit");
                        registry.insert(id.clone(), (generations[&id], Known::Committed, epoch));
                    }
                    TxnAction::Abort { id } => {
                        let epoch = self.producers.remove(&id).expect("a live producer");
                        broker.abort(&id, epoch).expect("abort");
                    }
                    TxnAction::Fence { id } => {
                        broker.init(&id);
                    }
                }
            }
        }

        /// Pre-commit as `KafkaSink::pre_commit` does: flush, then record the producer id and
        /// epoch.
        fn pre_commit(&mut self, txn: &mut KafkaTransaction) {
            self.core.handle_pre_commit(txn);
            let epoch = self.producers[&txn.transactional_id];
            txn.producer_id = 1_000 + i64::from(txn.slot);
            txn.producer_epoch = i16::try_from(epoch).expect("small");
        }

        /// The sink is dropped (its task failed): park the producers of pre-committed
        /// transactions.
        fn drop_into(self, registry: &mut Registry, pending: &[KafkaTransaction]) {
            for txn in pending {
                if let Some(epoch) = self.producers.get(&txn.transactional_id) {
                    registry.insert(
                        txn.transactional_id.clone(),
                        (txn.generation, Known::Prepared, *epoch),
                    );
                }
            }
        }
    }

    /// Where a run crashes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum CrashPoint {
        /// While records go into the open transaction.
        MidTransaction,
        /// After the barrier pre-committed, before the checkpoint completed.
        AfterPreCommit,
        /// After the checkpoint completed, before the commit.
        BeforeCommit,
        /// During the commits: the first pending transaction committed, the others not (and
        /// the sink never learnt of the first).
        DuringCommit,
        /// After the commit, before the next checkpoint.
        AfterCommit,
    }

    /// A second crash while restoring from the first one.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum RestoreCrash {
        /// The restore completes.
        Never,
        /// After the pending transactions were recovered, before `open` fenced the pool.
        BeforeOpen,
        /// After `open` fenced the pool, before the next checkpoint.
        AfterOpen,
    }

    /// What a checkpoint stored: the pre-committed transactions and the open one, and the
    /// source position (records before the barrier).
    #[derive(Debug, Clone)]
    struct Stored {
        pending: Vec<KafkaTransaction>,
        current: KafkaTransaction,
        position: u64,
    }

    /// A run's crashes.
    #[derive(Debug, Clone, Copy)]
    struct Crashes {
        /// Where the first crash comes.
        at: CrashPoint,
        /// In which checkpoint.
        checkpoint: u64,
        /// Whether the process dies (the registry of parked producers is lost) rather than a
        /// task failing.
        process_dies: bool,
        /// A second crash during the restore (the process dies again).
        restore: RestoreCrash,
        /// The coordinator answers `EndTxn` busy this many times, and this many requests
        /// fail as broken connections.
        transient_failures: u32,
    }

    /// What a run produced: the broker's committed log, the transactions recovery could not
    /// resume, and how the resumed ones ended.
    #[derive(Debug, Default)]
    struct Outcome {
        log: Vec<u64>,
        unresumable: Vec<String>,
        resumed: Vec<ResumeStep>,
    }

    /// Runs records `0..count` with a barrier every `interval` records and crashes as
    /// `crashes` say.
    fn run(count: u64, interval: u64, crashes: Crashes) -> Outcome {
        let mut broker = Broker {
            busy_answers: crashes.transient_failures,
            ..Broker::default()
        };
        let mut registry = Registry::new();
        let mut generations: BTreeMap<String, u64> = BTreeMap::new();
        let mut next_generation = 0;
        let mut stored: Option<Stored> = None;
        let mut crashed = false;
        let mut restore_crashes = match crashes.restore {
            RestoreCrash::Never => 0,
            RestoreCrash::BeforeOpen | RestoreCrash::AfterOpen => 1,
        };
        let mut outcome = Outcome::default();
        'attempt: loop {
            if crashed && crashes.process_dies {
                registry.clear();
            }
            let mut sink = Sink {
                core: TransactionCore::new("job", 0, 3),
                producers: BTreeMap::new(),
            };
            let mut position = 0;
            let restoring = stored.is_some();
            if let Some(state) = &stored {
                // Recovery, as the two-phase-commit operator drives it.
                for txn in &state.pending {
                    let known = registry
                        .get(&txn.transactional_id)
                        .filter(|(generation, _, _)| *generation == txn.generation)
                        .map(|(_, known, _)| *known);
                    match TransactionCore::recover_commit(txn, known) {
                        Recovery::Act(action) => {
                            let (_, _, epoch) =
                                registry.remove(&txn.transactional_id).expect("parked");
                            sink.producers.insert(txn.transactional_id.clone(), epoch);
                            generations.insert(txn.transactional_id.clone(), txn.generation);
                            sink.core.actions.push_back(action);
                        }
                        Recovery::Done => {}
                        Recovery::Resume(resumed) => {
                            let step = resume(&mut broker, resumed, crashes.transient_failures);
                            outcome.resumed.push(step);
                        }
                        Recovery::Unresumable(id) => outcome.unresumable.push(id),
                    }
                }
                if let Some(action) = TransactionCore::recover_abort(&state.current) {
                    sink.core.actions.push_back(action);
                }
                sink.carry_out(&mut broker, &mut registry, &generations);
                position = state.position;
                if crashes.restore == RestoreCrash::BeforeOpen && restore_crashes > 0 {
                    restore_crashes -= 1;
                    registry.clear();
                    continue 'attempt;
                }
            }
            sink.core.handle_open();
            next_generation += 1;
            let mut current = sink.core.handle_begin(next_generation).expect("a slot");
            generations.insert(current.transactional_id.clone(), current.generation);
            sink.carry_out(&mut broker, &mut registry, &generations);
            if restoring && crashes.restore == RestoreCrash::AfterOpen && restore_crashes > 0 {
                restore_crashes -= 1;
                registry.clear();
                continue 'attempt;
            }
            let mut pending: Vec<KafkaTransaction> = Vec::new();
            let mut checkpoint = 0;
            let mut record = position;
            let crash_here = |crashed: bool, at: CrashPoint, checkpoint: u64| {
                !crashed && crashes.at == at && crashes.checkpoint == checkpoint
            };
            while record < count {
                let end = (record + interval).min(count);
                for r in record..end {
                    let epoch = sink.producers[&current.transactional_id];
                    broker
                        .send(&current.transactional_id, epoch, r)
                        .expect("send");
                    current.records += 1;
                    if crash_here(crashed, CrashPoint::MidTransaction, checkpoint)
                        && r == (record + end) / 2
                    {
                        crashed = true;
                        sink.drop_into(&mut registry, &pending);
                        continue 'attempt;
                    }
                }
                record = end;
                checkpoint += 1;
                // The barrier: pre-commit, begin the next, store.
                sink.pre_commit(&mut current);
                pending.push(current);
                next_generation += 1;
                current = sink.core.handle_begin(next_generation).expect("a slot");
                generations.insert(current.transactional_id.clone(), current.generation);
                sink.carry_out(&mut broker, &mut registry, &generations);
                if crash_here(crashed, CrashPoint::AfterPreCommit, checkpoint) {
                    // The checkpoint never completes: the restore uses the previous one.
                    crashed = true;
                    sink.drop_into(&mut registry, &pending);
                    continue 'attempt;
                }
                stored = Some(Stored {
                    pending: pending.clone(),
                    current: current.clone(),
                    position: record,
                });
                if crash_here(crashed, CrashPoint::BeforeCommit, checkpoint) {
                    crashed = true;
                    sink.drop_into(&mut registry, &pending);
                    continue 'attempt;
                }
                if crash_here(crashed, CrashPoint::DuringCommit, checkpoint) {
                    // The first commit reached the coordinator; the sink died before it
                    // learnt so (no registry entry) and before the others.
                    crashed = true;
                    let first = pending.remove(0);
                    let epoch = sink
                        .producers
                        .remove(&first.transactional_id)
                        .expect("live");
                    broker
                        .commit(&first.transactional_id, epoch)
                        .expect("commit");
                    sink.drop_into(&mut registry, &pending);
                    continue 'attempt;
                }
                // The notification: commit every pending transaction.
                for txn in pending.drain(..) {
                    sink.core.handle_commit(&txn);
                }
                sink.carry_out(&mut broker, &mut registry, &generations);
                if crash_here(crashed, CrashPoint::AfterCommit, checkpoint) {
                    crashed = true;
                    sink.drop_into(&mut registry, &pending);
                    continue 'attempt;
                }
            }
            // The end: the open transaction (empty after the final checkpoint) is aborted.
            sink.core.handle_abort(&current);
            sink.carry_out(&mut broker, &mut registry, &generations);
            outcome.log = broker.log;
            return outcome;
        }
    }

    const CRASH_POINTS: [CrashPoint; 5] = [
        CrashPoint::MidTransaction,
        CrashPoint::AfterPreCommit,
        CrashPoint::BeforeCommit,
        CrashPoint::DuringCommit,
        CrashPoint::AfterCommit,
    ];

    fn assert_exactly_once(outcome: &Outcome, what: &str) {
        let mut log = outcome.log.clone();
        log.sort_unstable();
        assert_eq!(log, (0..100).collect::<Vec<_>>(), "{what}");
        assert!(outcome.unresumable.is_empty(), "{what}: {outcome:?}");
        assert!(
            outcome
                .resumed
                .iter()
                .all(|s| matches!(s, ResumeStep::Committed | ResumeStep::AlreadyEnded)),
            "{what}: {:?}",
            outcome.resumed
        );
    }

    #[test]
    fn every_crash_point_of_a_task_failure_gives_every_record_exactly_once() {
        for at in CRASH_POINTS {
            for checkpoint in 0..4 {
                let outcome = run(
                    100,
                    10,
                    Crashes {
                        at,
                        checkpoint,
                        process_dies: false,
                        restore: RestoreCrash::Never,
                        transient_failures: 0,
                    },
                );
                assert_exactly_once(&outcome, &format!("{at:?} at checkpoint {checkpoint}"));
            }
        }
    }

    #[test]
    fn every_crash_point_of_a_process_restart_gives_every_record_exactly_once() {
        let mut resumed = 0;
        for at in CRASH_POINTS {
            for checkpoint in 1..4 {
                for restore in [
                    RestoreCrash::Never,
                    RestoreCrash::BeforeOpen,
                    RestoreCrash::AfterOpen,
                ] {
                    for transient_failures in [0, 3] {
                        let outcome = run(
                            100,
                            10,
                            Crashes {
                                at,
                                checkpoint,
                                process_dies: true,
                                restore,
                                transient_failures,
                            },
                        );
                        let what =
                            format!("{at:?} at {checkpoint}, {restore:?}, {transient_failures}");
                        assert_exactly_once(&outcome, &what);
                        resumed += outcome.resumed.len();
                        if matches!(at, CrashPoint::BeforeCommit | CrashPoint::DuringCommit) {
                            // The pending transaction(s) of the restored checkpoint were
                            // resumed under their recorded epochs.
                            assert!(
                                outcome.resumed.first() == Some(&ResumeStep::Committed),
                                "{what}: {:?}",
                                outcome.resumed
                            );
                        }
                        if restore == RestoreCrash::AfterOpen
                            && matches!(at, CrashPoint::BeforeCommit)
                        {
                            // The second restore finds the epoch fenced by the first one's
                            // open: it had committed.
                            assert_eq!(
                                outcome.resumed.last(),
                                Some(&ResumeStep::AlreadyEnded),
                                "{what}"
                            );
                        }
                    }
                }
            }
        }
        assert!(resumed > 0, "some transactions were resumed");
    }

    fn resume_of(records: u64) -> ResumeCommit {
        let txn = KafkaTransaction {
            transactional_id: "p-0-1".into(),
            slot: 1,
            generation: 4,
            records,
            producer_id: 7,
            producer_epoch: 3,
        };
        match TransactionCore::recover_commit(&txn, None) {
            Recovery::Resume(resume) => resume,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_resumed_commit_tells_the_coordinators_answers_apart() {
        use error_code::*;
        let mut r = resume_of(5);
        assert_eq!((r.producer_id, r.producer_epoch), (7, 3));
        assert_eq!(r.start(), ResumeStep::FindCoordinator { backoff_ms: 0 });
        assert_eq!(
            r.handle_coordinator(Ok(NONE)),
            ResumeStep::EndTxn { backoff_ms: 0 }
        );
        assert_eq!(
            r.handle_end_txn(Ok(CONCURRENT_TRANSACTIONS)),
            ResumeStep::EndTxn { backoff_ms: 100 },
            "the markers are being written: ask again, after a while"
        );
        assert_eq!(
            r.handle_end_txn(Ok(NOT_COORDINATOR)),
            ResumeStep::FindCoordinator { backoff_ms: 200 }
        );
        assert_eq!(
            r.handle_coordinator(Err("connection reset".into())),
            ResumeStep::FindCoordinator { backoff_ms: 400 }
        );
        assert_eq!(r.handle_end_txn(Ok(NONE)), ResumeStep::Committed);
        for fenced in [PRODUCER_FENCED, INVALID_PRODUCER_EPOCH] {
            assert_eq!(
                resume_of(5).handle_end_txn(Ok(fenced)),
                ResumeStep::AlreadyEnded
            );
        }
        for (code, says) in [
            (INVALID_TXN_STATE, "transaction.timeout.ms"),
            (
                INVALID_PRODUCER_ID_MAPPING,
                "transactional.id.expiration.ms",
            ),
            (UNSUPPORTED_VERSION, "does not support EndTxn"),
            (53, "error code 53"),
        ] {
            let ResumeStep::Failed(message) = resume_of(5).handle_end_txn(Ok(code)) else {
                panic!("{code} fails");
            };
            assert!(message.contains(says), "{message}");
            assert!(
                message.contains("p-0-1 (producer id 7, epoch 3, 5 records)"),
                "{message}"
            );
        }
        let ResumeStep::Failed(message) = resume_of(5).handle_coordinator(Ok(53)) else {
            panic!("an authorisation failure fails");
        };
        assert!(
            message.contains("FindCoordinator answered error code 53"),
            "{message}"
        );
    }

    #[test]
    fn a_resumed_commit_gives_up_after_its_attempts_with_the_last_reason() {
        let mut r = resume_of(1);
        let mut step = r.start();
        let mut requests = 1;
        let mut backoffs = Vec::new();
        while let ResumeStep::FindCoordinator { backoff_ms } = step {
            backoffs.push(backoff_ms);
            step = r.handle_coordinator(Err("connection refused".into()));
            requests += 1;
        }
        let ResumeStep::GaveUp(message) = step else {
            panic!("{step:?}");
        };
        assert_eq!(requests, ResumeCommit::ATTEMPTS_MAX + 1);
        assert!(
            message.contains("gave up after 30 requests: connection refused"),
            "{message}"
        );
        assert_eq!(
            backoffs.iter().copied().max(),
            Some(ResumeCommit::BACKOFF_MS_MAX)
        );
    }

    #[test]
    fn slots_are_reused_only_after_their_transaction_ended() {
        let mut core = TransactionCore::new("p", 3, 3);
        let a = core.handle_begin(0).unwrap();
        let b = core.handle_begin(0).unwrap();
        let c = core.handle_begin(0).unwrap();
        assert_eq!(
            [
                a.transactional_id.as_str(),
                b.transactional_id.as_str(),
                c.transactional_id.as_str()
            ],
            ["p-3-0", "p-3-1", "p-3-2"]
        );
        assert_eq!(
            core.handle_begin(0).unwrap_err(),
            TxnError::PoolExhausted {
                subtask: 3,
                pool_size: 3
            }
        );
        core.handle_commit(&b);
        assert_eq!(core.handle_begin(0).unwrap().transactional_id, "p-3-1");
        let actions: Vec<TxnAction> = std::iter::from_fn(|| core.poll_action()).collect();
        assert_eq!(
            actions.last(),
            Some(&TxnAction::Begin { id: "p-3-1".into() })
        );
    }

    #[test]
    fn recovery_commits_live_transactions_and_fences_open_ones() {
        let txn = KafkaTransaction {
            transactional_id: "p-0-1".into(),
            slot: 1,
            generation: 4,
            records: 5,
            producer_id: -1,
            producer_epoch: -1,
        };
        assert_eq!(
            TransactionCore::recover_commit(&txn, Some(Known::Prepared)),
            Recovery::Act(TxnAction::Commit { id: "p-0-1".into() })
        );
        assert_eq!(
            TransactionCore::recover_commit(&txn, Some(Known::Committed)),
            Recovery::Done
        );
        assert_eq!(
            TransactionCore::recover_commit(&txn, None),
            Recovery::Unresumable("p-0-1".into()),
            "no producer id and epoch recorded"
        );
        let empty = KafkaTransaction {
            records: 0,
            ..txn.clone()
        };
        assert_eq!(
            TransactionCore::recover_commit(&empty, None),
            Recovery::Done
        );
        assert_eq!(
            TransactionCore::recover_abort(&txn),
            Some(TxnAction::Fence { id: "p-0-1".into() })
        );
        let mut core = TransactionCore::new("p", 0, 2);
        core.handle_open();
        let fenced: Vec<TxnAction> = std::iter::from_fn(|| core.poll_action()).collect();
        assert_eq!(
            fenced,
            vec![
                TxnAction::Fence { id: "p-0-0".into() },
                TxnAction::Fence { id: "p-0-1".into() }
            ]
        );
    }
}
