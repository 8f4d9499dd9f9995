//! Helpers the connector tests share: a wrapper that fails a two-phase-commit sink once between
//! pre-commit and commit (or right after a commit), a paced source, a failing map, and a hang
//! guard. The servers themselves come from `eichhorn::connectors::test_servers`.
//!
//! Not every test file uses every helper.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use eichhorn::api::TwoPhaseCommitSink;
use eichhorn::checkpoint::RestartStrategy;
use eichhorn::connectors::{GeneratorSource, RateLimitedSource};
use eichhorn::prelude::*;

/// `count` numbers from a parallel generator paced at `per_second` per subtask (so paused
/// virtual time passes and periodic checkpoints complete while the job runs).
pub(crate) fn paced(env: &StreamEnv, count: u64, per_second: u64) -> DataStream<u64> {
    env.add_source(
        RateLimitedSource::new(GeneratorSource::new(Some(count), |g| g), per_second),
        "paced",
    )
}

/// Checkpoints every 10 ms, up to 3 restarts 10 ms apart.
pub(crate) fn checkpointed(env: &StreamEnv, parallelism: u32) {
    env.set_parallelism(parallelism);
    env.enable_checkpointing(10);
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 3,
        delay_ms: 10,
    });
}

/// A hang guard: no verdict depends on timing.
pub(crate) async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(300), future)
        .await
        .expect("the job hung")
}

/// A map that panics once, at the `at`-th record it sees over all subtasks and attempts: a job
/// killed mid-stream.
pub(crate) fn failing_once<T>(at: u64) -> impl Fn(T) -> T + Clone + Send + 'static {
    let seen = Arc::new(AtomicU64::new(0));
    let fired = Arc::new(AtomicBool::new(false));
    move |v| {
        if seen.fetch_add(1, Ordering::SeqCst) + 1 == at && !fired.swap(true, Ordering::SeqCst) {
            panic!("injected failure at record {at}");
        }
        v
    }
}

/// How often each value occurs.
pub(crate) fn counts<T: Ord>(values: impl IntoIterator<Item = T>) -> BTreeMap<T, u32> {
    let mut counts = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_insert(0) += 1;
    }
    counts
}

/// Wraps a two-phase-commit sink and fails once, at its `fail_at`-th commit of a transaction
/// (over all subtasks and attempts): before the commit (a crash between pre-commit and
/// commit), or right after it (before the runtime learns it happened).
#[derive(Clone)]
pub(crate) struct CommitFailure<S> {
    pub(crate) inner: S,
    pub(crate) commits: Arc<AtomicU64>,
    pub(crate) fired: Arc<AtomicBool>,
    pub(crate) fail_at: u64,
    pub(crate) after_commit: bool,
}

impl<S> CommitFailure<S> {
    pub(crate) fn new(inner: S, fail_at: u64, after_commit: bool) -> Self {
        Self {
            inner,
            commits: Arc::new(AtomicU64::new(0)),
            fired: Arc::new(AtomicBool::new(false)),
            fail_at,
            after_commit,
        }
    }

    /// Whether the failure fired.
    pub(crate) fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl<S> eichhorn::api::Operator for CommitFailure<S> {}
impl<S> eichhorn::api::Unkeyed for CommitFailure<S> {}

impl<T, S: TwoPhaseCommitSink<T>> TwoPhaseCommitSink<T> for CommitFailure<S> {
    type Txn = S::Txn;

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.inner.open(ctx)
    }
    fn begin_transaction(&mut self) -> Result<S::Txn, FunctionError> {
        self.inner.begin_transaction()
    }
    fn invoke(
        &mut self,
        txn: &mut S::Txn,
        value: T,
        ctx: &SinkContext,
    ) -> Result<(), FunctionError> {
        self.inner.invoke(txn, value, ctx)
    }
    fn pre_commit(&mut self, txn: &mut S::Txn) -> Result<(), FunctionError> {
        self.inner.pre_commit(txn)
    }
    fn commit(&mut self, txn: S::Txn) -> Result<(), FunctionError> {
        let fail = self.commits.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at
            && !self.fired.swap(true, Ordering::SeqCst);
        if fail && !self.after_commit {
            return Err("injected failure between pre-commit and commit".into());
        }
        self.inner.commit(txn)?;
        if fail {
            return Err("injected failure right after a commit".into());
        }
        Ok(())
    }
    fn abort(&mut self, txn: S::Txn) -> Result<(), FunctionError> {
        self.inner.abort(txn)
    }
    fn recover_and_commit(&mut self, txn: S::Txn) -> Result<(), FunctionError> {
        self.inner.recover_and_commit(txn)
    }
    fn recover_and_abort(&mut self, txn: S::Txn) -> Result<(), FunctionError> {
        self.inner.recover_and_abort(txn)
    }
    fn close(&mut self) -> Result<(), FunctionError> {
        self.inner.close()
    }
}

/// Asserts that `seen` holds every value of `expected` as often, printing only the first
/// differences (missing or extra values with their counts), never the whole maps.
pub(crate) fn assert_same_counts<T: Ord + std::fmt::Debug>(
    seen: &BTreeMap<T, u32>,
    expected: &BTreeMap<T, u32>,
    case: &str,
) {
    let mut differences = Vec::new();
    for (value, n) in expected {
        let got = seen.get(value).copied().unwrap_or(0);
        if got != *n {
            differences.push(format!("{value:?}: {got} instead of {n}"));
        }
    }
    for (value, n) in seen {
        if !expected.contains_key(value) {
            differences.push(format!("{value:?}: {n} unexpected"));
        }
    }
    assert!(
        differences.is_empty(),
        "{case}: {} differences, first: {:?}",
        differences.len(),
        &differences[..differences.len().min(8)]
    );
}
