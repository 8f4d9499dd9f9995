//! Exactly-once output through the two-phase-commit sink protocol, end to end: the exactly-once
//! file sink's committed files hold every input record exactly once, for a bounded job without
//! checkpoints (the final checkpoint commits) and for a checkpointed job that fails and restarts
//! from its latest completed checkpoint.
//!
//! Timeouts only guard against hangs; no verdict depends on timing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use eichhorn::api::TwoPhaseCommitSink;
use eichhorn::checkpoint::RestartStrategy;
use eichhorn::connectors::{ExactlyOnceFileSink, GeneratorSource, PartFile, RateLimitedSource};
use eichhorn::prelude::*;

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(300), future)
        .await
        .expect("the job hung")
}

/// How often each value occurs.
fn counts(values: impl IntoIterator<Item = u64>) -> BTreeMap<u64, u32> {
    let mut counts = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_insert(0) += 1;
    }
    counts
}

/// What the directory holds: the values of the committed (visible) files, and the names of
/// the hidden ones.
fn read_output(dir: &Path) -> (Vec<u64>, Vec<String>) {
    let mut values = Vec::new();
    let mut hidden = Vec::new();
    for entry in std::fs::read_dir(dir).expect("output directory") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            hidden.push(name);
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("part file");
        assert!(
            text.ends_with('\n'),
            "{name}: a committed file holds whole lines"
        );
        values.extend(text.lines().map(|line| {
            line.parse::<u64>()
                .unwrap_or_else(|e| panic!("{name}: {line:?}: {e}"))
        }));
    }
    hidden.sort();
    (values, hidden)
}

/// A map that panics once, at the `at`-th record it sees over all subtasks and attempts.
fn failing_once(at: u64) -> impl Fn(u64) -> u64 + Clone + Send + 'static {
    let seen = Arc::new(AtomicU64::new(0));
    let fired = Arc::new(AtomicBool::new(false));
    move |v| {
        if seen.fetch_add(1, Ordering::SeqCst) + 1 == at && !fired.swap(true, Ordering::SeqCst) {
            panic!("injected failure at record {at}");
        }
        v
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_bounded_job_commits_everything_with_its_final_checkpoint() {
    for parallelism in [1, 2, 4] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        env.from_generator(10_000, |g| g)
            .rebalance()
            .write_exactly_once(&out, |v: &u64| v.to_string());
        let result = within(env.execute("exactly once, bounded"))
            .await
            .expect("runs");
        assert_eq!(result.restarts, 0);
        let (values, hidden) = read_output(&out);
        assert!(hidden.is_empty(), "P={parallelism}: {hidden:?}");
        assert_eq!(counts(values), counts(0..10_000), "P={parallelism}");
        let sink = result
            .operators
            .iter()
            .find(|o| o.name == "Sink: Exactly-Once File")
            .expect("sink metrics");
        assert_eq!(sink.records_in, 10_000, "P={parallelism}");
    }
}

/// Runs `count` records through a map that fails once at record `fail_at`, into the
/// exactly-once file sink with periodic checkpoints and restarts; checks the committed output.
async fn fail_once_and_check(
    parallelism: u32,
    source: DataStream<u64>,
    env: &StreamEnv,
    out: &Path,
    count: u64,
    fail_at: u64,
) -> JobResult {
    env.set_parallelism(parallelism);
    env.enable_checkpointing(10);
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 3,
        delay_ms: 10,
    });
    source
        .map(failing_once(fail_at))
        .write_as_text_exactly_once(out);
    let result = within(env.execute("exactly once, failing"))
        .await
        .unwrap_or_else(|e| panic!("P={parallelism}: the job recovers: {e}"));
    assert_eq!(result.restarts, 1, "P={parallelism}");
    let (values, hidden) = read_output(out);
    assert!(hidden.is_empty(), "P={parallelism}: {hidden:?}");
    let seen = counts(values);
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        duplicated.is_empty(),
        "P={parallelism}: duplicates {duplicated:?}"
    );
    assert_eq!(seen, counts(0..count), "P={parallelism}: exactly once");
    result
}

/// An unpaced source runs without virtual time passing, so no periodic checkpoint completes
/// before the failure: the restart starts over, and nothing of the crashed attempt may stay
/// (its in-progress files are deleted at open) or be committed.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_failed_job_writes_every_record_exactly_once() {
    for parallelism in [1, 2] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let env = StreamEnv::new();
        let source = env.from_generator(20_000, |g| g);
        fail_once_and_check(parallelism, source, &env, &out, 20_000, 12_345).await;
    }
}

/// The same with a paced source, so that virtual time passes while the job runs: checkpoints
/// complete and commit files before the failure, and the restart restores from one of them.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_job_restored_from_a_checkpoint_writes_every_record_exactly_once() {
    for parallelism in [1, 2] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let env = StreamEnv::new();
        let source = env.add_source(
            RateLimitedSource::new(GeneratorSource::new(Some(20_000), |g| g), 20_000),
            "paced",
        );
        let result = fail_once_and_check(parallelism, source, &env, &out, 20_000, 12_345).await;
        assert!(
            result.completed_checkpoints >= 10,
            "P={parallelism}: {} checkpoints",
            result.completed_checkpoints
        );
        assert!(
            result.restored_from.is_some(),
            "P={parallelism}: the restart restored a checkpoint"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_sink_error_fails_the_job_naming_the_sink_and_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "x").expect("write");
    let env = StreamEnv::new();
    env.from_collection(vec![1u64, 2, 3])
        .add_two_phase_sink(ExactlyOnceFileSink::display(&not_a_dir))
        .name("my sink");
    let error = within(env.execute("bad directory"))
        .await
        .expect_err("cannot create the directory");
    let message = error.to_string();
    assert!(message.contains("my sink"), "{message}");
    assert!(
        message.contains(&not_a_dir.display().to_string()),
        "{message}"
    );
}

/// The exactly-once file sink, failing once at its `fail_at`-th non-empty commit (over all
/// subtasks and attempts): before committing, or right after.
#[operator(new = false)]
#[derive(Clone)]
struct CommitFailure {
    inner: ExactlyOnceFileSink<u64>,
    commits: Arc<AtomicU64>,
    fired: Arc<AtomicBool>,
    fail_at: u64,
    after_commit: bool,
}

impl TwoPhaseCommitSink<u64> for CommitFailure {
    type Txn = PartFile;

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.inner.open(ctx)
    }
    fn begin_transaction(&mut self) -> Result<PartFile, FunctionError> {
        self.inner.begin_transaction()
    }
    fn invoke(
        &mut self,
        txn: &mut PartFile,
        value: u64,
        ctx: &SinkContext,
    ) -> Result<(), FunctionError> {
        self.inner.invoke(txn, value, ctx)
    }
    fn pre_commit(&mut self, txn: &mut PartFile) -> Result<(), FunctionError> {
        self.inner.pre_commit(txn)
    }
    fn commit(&mut self, txn: PartFile) -> Result<(), FunctionError> {
        let fail = txn.records() > 0
            && self.commits.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at
            && !self.fired.swap(true, Ordering::SeqCst);
        if fail && !self.after_commit {
            return Err("injected failure before the commit".into());
        }
        self.inner.commit(txn)?;
        if fail {
            return Err("injected failure after the commit".into());
        }
        Ok(())
    }
    fn abort(&mut self, txn: PartFile) -> Result<(), FunctionError> {
        self.inner.abort(txn)
    }
    fn recover_and_commit(&mut self, txn: PartFile) -> Result<(), FunctionError> {
        self.inner.recover_and_commit(txn)
    }
    fn recover_and_abort(&mut self, txn: PartFile) -> Result<(), FunctionError> {
        self.inner.recover_and_abort(txn)
    }
}

/// A crash between pre-commit and commit (or right after a commit, before the runtime knows
/// it happened): the restore commits the restored checkpoint's pending transactions, once.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_crash_around_a_commit_is_completed_by_the_restore() {
    for after_commit in [false, true] {
        for parallelism in [1, 2] {
            let case = format!("P={parallelism}, after_commit={after_commit}");
            let dir = tempfile::tempdir().expect("tempdir");
            let out = dir.path().join("out");
            let env = StreamEnv::new();
            env.set_parallelism(parallelism);
            env.enable_checkpointing(10);
            env.set_restart_strategy(RestartStrategy::FixedDelay {
                attempts: 3,
                delay_ms: 10,
            });
            env.add_source(
                RateLimitedSource::new(GeneratorSource::new(Some(10_000), |g| g), 20_000),
                "paced",
            )
            .add_two_phase_sink(CommitFailure {
                inner: ExactlyOnceFileSink::display(&out),
                commits: Arc::new(AtomicU64::new(0)),
                fired: Arc::new(AtomicBool::new(false)),
                fail_at: 10,
                after_commit,
            });
            let result = within(env.execute("commit failure"))
                .await
                .unwrap_or_else(|e| panic!("{case}: the job recovers: {e}"));
            assert_eq!(result.restarts, 1, "{case}");
            assert!(
                result.restored_from.is_some(),
                "{case}: restored a checkpoint"
            );
            let (values, hidden) = read_output(&out);
            assert!(hidden.is_empty(), "{case}: {hidden:?}");
            assert_eq!(counts(values), counts(0..10_000), "{case}: exactly once");
        }
    }
}
