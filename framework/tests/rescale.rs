//! Restoring at another parallelism, end to end: source positions are redistributed (a
//! generator-based job saved at parallelism 2 goes on at 3 and at 1 without loss or
//! duplication), a source that cannot be rescaled fails with an error naming it, and the
//! exactly-once file sink recovers the transactions and leftovers of every old subtask when the
//! job comes back at a lower parallelism.
//!
//! Timeouts only guard against hangs; no verdict depends on timing.

mod common;

use common::{read_output, within};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eichhorn::checkpoint::RestartStrategy;

use eichhorn::connectors::{CollectionSource, GeneratorSource, RateLimitedSource};
use eichhorn::prelude::*;

/// Keys of the running counts.
const KEYS: u64 = 23;

/// A running count per key, emitting `key,count` per record: the multiset of its output does
/// not depend on the order in which records of different subtasks arrive.
#[operator(new = false)]
#[derive(Clone)]
struct RunningCount {
    count: eichhorn::state::ValueState<u64>,
}

impl RunningCount {
    fn new() -> Self {
        Self {
            count: eichhorn::state::ValueState::new("count"),
        }
    }
}

impl KeyedProcessFunction for RunningCount {
    type Key = u64;
    type In = u64;
    type Out = String;

    fn process_element(
        &mut self,
        value: u64,
        ctx: &mut KeyedContext<'_, '_, u64>,
        out: &mut Collector<'_, String>,
    ) {
        let count = self.count.value(ctx).unwrap_or(0) + 1;
        self.count.update(ctx, count);
        out.collect(format!("{},{count}", value % KEYS));
    }
}

/// The running counts of the values `0..count`, sorted: the oracle.
fn expected_counts(count: u64) -> Vec<String> {
    let mut per_key = BTreeMap::<u64, u64>::new();
    for v in 0..count {
        *per_key.entry(v % KEYS).or_insert(0) += 1;
    }
    let mut lines: Vec<String> = per_key
        .iter()
        .flat_map(|(key, n)| (1..=*n).map(move |c| format!("{key},{c}")))
        .collect();
    lines.sort();
    lines
}

/// The sorted decimal lines of `0..count`.
fn expected_values(count: u64) -> Vec<String> {
    let mut lines: Vec<String> = (0..count).map(|v| v.to_string()).collect();
    lines.sort();
    lines
}

/// Output directories of one test.
struct Dirs {
    _root: tempfile::TempDir,
    values: PathBuf,
    counts: PathBuf,
    savepoints: PathBuf,
    checkpoints: PathBuf,
}

impl Dirs {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        Self {
            values: root.path().join("values"),
            counts: root.path().join("counts"),
            savepoints: root.path().join("savepoints"),
            checkpoints: root.path().join("checkpoints"),
            _root: root,
        }
    }

    /// Both sinks' output: (values, hidden files), (counts, hidden files).
    fn outputs(&self) -> [(Vec<String>, Vec<String>); 2] {
        [read_output(&self.values), read_output(&self.counts)]
    }

    /// Leaves what a crashed attempt of old subtasks 1 and 2 would: a pre-committed
    /// transaction of a checkpoint that never completed and an in-progress one, in a
    /// generation no checkpoint knows.
    fn plant_leftovers_of_old_subtasks(&self) {
        for dir in [&self.values, &self.counts] {
            for name in [
                ".part-1-90-4.pending",
                ".part-1-90-5.inprogress",
                ".part-2-91-0.pending",
                ".part-2-91-1.inprogress",
            ] {
                std::fs::write(dir.join(name), "999999\n").expect("plant");
            }
        }
    }

    /// Checks that both sinks hold exactly the failure-free output and no hidden file.
    fn check_exactly_once(&self, records: u64, case: &str) {
        let [(values, hidden_values), (counts, hidden_counts)] = self.outputs();
        assert!(
            hidden_values.is_empty() && hidden_counts.is_empty(),
            "{case}: left behind {hidden_values:?} {hidden_counts:?}"
        );
        assert_eq!(values, expected_values(records), "{case}: every value once");
        assert_eq!(counts, expected_counts(records), "{case}: every count once");
    }
}

/// The newest complete checkpoint folder of the run below the checkpoint directory `dir`.
fn newest_checkpoint(dir: &Path) -> PathBuf {
    std::fs::read_dir(common::run_dir(dir))
        .expect("checkpoint dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("_metadata").is_file())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id: u64 = name.strip_prefix("chk-")?.parse().ok()?;
            Some((id, e.path()))
        })
        .max()
        .expect("a complete checkpoint")
        .1
}

/// The generator job at `parallelism` (every operator): `records` paced values into an
/// exactly-once sink of the values and, keyed, of running counts.
fn generator_job(parallelism: u32, records: u64, dirs: &Dirs) -> StreamEnv {
    failing_generator_job(parallelism, records, dirs, None)
}

/// [`generator_job`], failing (panicking) once at the `fail_at`-th value.
fn failing_generator_job(
    parallelism: u32,
    records: u64,
    dirs: &Dirs,
    fail_at: Option<u64>,
) -> StreamEnv {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    let seen = Arc::new(AtomicU64::new(0));
    let values = env
        .add_source(
            RateLimitedSource::new(GeneratorSource::new(Some(records), |g| g), 4_000),
            "paced generator",
        )
        .uid("source")
        .map(move |v: u64| {
            if Some(seen.fetch_add(1, Ordering::SeqCst) + 1) == fail_at {
                panic!("injected failure");
            }
            v
        });
    values
        .clone()
        .write_exactly_once(dirs.values.clone(), |v: &u64| v.to_string())
        .uid("values");
    values
        .key_by(|v: &u64| *v % KEYS)
        .process(RunningCount::new())
        .uid("counts")
        .write_exactly_once(dirs.counts.clone(), |line: &String| line.clone())
        .uid("count-sink");
    env
}

/// Runs `env` for `run_ms` of virtual time, then stops it with a savepoint; returns its path.
async fn stop_with_savepoint_after(env: &StreamEnv, run_ms: u64, target: &Path) -> PathBuf {
    let handle = env.execute_async("before savepoint").await.expect("starts");
    tokio::time::sleep(Duration::from_millis(run_ms)).await;
    let savepoint = within(handle.stop_with_savepoint(target))
        .await
        .expect("savepoint");
    let stopped = within(handle.join()).await.expect("stops");
    assert_eq!(stopped.status, JobStatus::Canceled);
    savepoint
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_generator_saved_at_parallelism_two_goes_on_at_three_and_at_one() {
    const RECORDS: u64 = 4_000;
    for restored_parallelism in [3, 1] {
        let case = format!("2 -> {restored_parallelism}");
        let dirs = Dirs::new();
        let first = generator_job(2, RECORDS, &dirs);
        let savepoint = stop_with_savepoint_after(&first, 200, &dirs.savepoints).await;
        let (before, _) = read_output(&dirs.values);
        assert!(
            !before.is_empty() && (before.len() as u64) < RECORDS,
            "{case}: the savepoint was taken midway ({} values)",
            before.len()
        );

        let second = generator_job(restored_parallelism, RECORDS, &dirs);
        second.restore_from(&savepoint, false);
        let result = within(second.execute("after savepoint"))
            .await
            .unwrap_or_else(|e| panic!("{case}: restores: {e}"));
        assert_eq!(
            result.restored_from.as_deref(),
            savepoint.to_str(),
            "{case}"
        );
        let (values, hidden) = read_output(&dirs.values);
        assert!(hidden.is_empty(), "{case}: {hidden:?}");
        assert_eq!(values, expected_values(RECORDS), "{case}: every value once");
        let (counts, hidden) = read_output(&dirs.counts);
        assert!(hidden.is_empty(), "{case}: {hidden:?}");
        assert_eq!(
            counts,
            expected_counts(RECORDS),
            "{case}: keyed state moved"
        );
    }
}

/// A source declared parallel whose every subtask emits all of `inner` (a collection source is
/// non-parallel, so it would run once): its positions cannot be shared out over another number
/// of subtasks.
#[operator(new = false)]
#[derive(Clone)]
struct Replicated<S> {
    inner: S,
}

impl<T, S: SourceFunction<T>> SourceFunction<T> for Replicated<S> {
    fn is_parallel(&self) -> bool {
        true
    }
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.inner.open(ctx)
    }
    fn poll_next(&mut self, ctx: &mut SourceContext<'_, T>) -> Result<SourcePoll, FunctionError> {
        self.inner.poll_next(ctx)
    }
    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, FunctionError> {
        self.inner.snapshot_position()
    }
    fn restore_position(&mut self, position: &[u8]) -> Result<(), FunctionError> {
        self.inner.restore_position(position)
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_source_that_cannot_be_rescaled_fails_naming_itself() {
    let dirs = Dirs::new();
    let build = |parallelism: u32| {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        env.add_source(
            Replicated {
                inner: RateLimitedSource::new(
                    CollectionSource::new((0..2_000u64).collect()),
                    1_000,
                ),
            },
            "replicated collection",
        )
        .uid("source")
        .collect_sink();
        env
    };
    let savepoint = stop_with_savepoint_after(&build(2), 100, &dirs.savepoints).await;
    let second = build(3);
    second.restore_from(&savepoint, false);
    // Periodic checkpoints make the default restart strategy restart without limit: the
    // error must still end the job at once, since every restart would meet it again.
    second.enable_checkpointing(50);
    let error = within(second.execute("rescaled")).await.unwrap_err();
    let message = error.to_string();
    for expected in [
        "Source: replicated collection",
        "checkpointed at parallelism 2, restored at parallelism 3",
        "cannot redistribute its positions",
        "a restart cannot fix this",
    ] {
        assert!(message.contains(expected), "{expected:?} in {message}");
    }
    // At the parallelism it was saved with, it restores.
    let same = build(2);
    same.restore_from(&savepoint, false);
    within(same.execute("same parallelism"))
        .await
        .expect("restores at the same parallelism");
}

/// A job at parallelism 3 crashes for good (no restarts), leaving in-progress and pre-committed
/// files of all three subtasks; it comes back at parallelism 1 from its newest checkpoint. The
/// new subtask recovers the transactions of every old one (committing what the checkpoint holds
/// as pre-committed, deleting the rest) and the leftovers of the old subtasks 1 and 2.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_job_crashed_at_three_comes_back_at_one_without_leftovers() {
    const RECORDS: u64 = 6_000;
    let dirs = Dirs::new();
    let first = failing_generator_job(3, RECORDS, &dirs, Some(3_000));
    first.enable_checkpointing(20);
    first.set_checkpoint_storage(&dirs.checkpoints);
    first.set_restart_strategy(RestartStrategy::None);
    let error = within(first.execute("crashes")).await.unwrap_err();
    assert!(error.to_string().contains("injected failure"), "{error}");
    let [(_, hidden), _] = dirs.outputs();
    assert!(!hidden.is_empty(), "the crash left files behind");
    dirs.plant_leftovers_of_old_subtasks();

    let checkpoint = newest_checkpoint(&dirs.checkpoints);
    let second = generator_job(1, RECORDS, &dirs);
    second.restore_from(&checkpoint, false);
    let result = within(second.execute("at one"))
        .await
        .expect("restores at parallelism 1");
    assert_eq!(result.restored_from.as_deref(), checkpoint.to_str());
    dirs.check_exactly_once(RECORDS, "3 -> 1 after a crash");
}

/// A savepoint taken at parallelism 3 while the job goes on; the job is then cancelled (its
/// open transactions stay behind) and restored at parallelism 1 and at 2.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_savepoint_at_three_restores_at_lower_parallelism_without_leftovers() {
    const RECORDS: u64 = 6_000;
    for restored_parallelism in [1, 2] {
        let case = format!("3 -> {restored_parallelism}");
        let dirs = Dirs::new();
        let first = generator_job(3, RECORDS, &dirs);
        let handle = first.execute_async("saved at three").await.expect("starts");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let savepoint = within(handle.trigger_savepoint(&dirs.savepoints))
            .await
            .expect("savepoint");
        tokio::time::sleep(Duration::from_millis(50)).await;
        handle.cancel();
        let cancelled = within(handle.join()).await.expect("cancelled");
        assert_eq!(cancelled.status, JobStatus::Canceled, "{case}");
        // Let the cancelled subtasks stop before the next job writes.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let [(_, hidden), _] = dirs.outputs();
        assert!(
            !hidden.is_empty(),
            "{case}: open transactions stayed behind"
        );
        dirs.plant_leftovers_of_old_subtasks();

        let second = generator_job(restored_parallelism, RECORDS, &dirs);
        second.restore_from(&savepoint, false);
        within(second.execute("restored lower"))
            .await
            .unwrap_or_else(|e| panic!("{case}: restores: {e}"));
        dirs.check_exactly_once(RECORDS, &case);
    }
}

/// Leftovers under subtask indices the restored savepoint never knew: a savepoint at
/// parallelism 1, an attempt restored from it at parallelism 3 that is cancelled before any
/// checkpoint (its open transactions stay behind under indices 0, 1 and 2), then the job
/// restored from the savepoint again at parallelism 1. Subtask 0 of 1 owns every index.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn leftovers_of_subtasks_the_savepoint_never_knew_are_removed() {
    const RECORDS: u64 = 4_000;
    let dirs = Dirs::new();
    let savepoint =
        stop_with_savepoint_after(&generator_job(1, RECORDS, &dirs), 200, &dirs.savepoints).await;
    let committed = dirs.outputs();

    let wider = generator_job(3, RECORDS, &dirs);
    wider.restore_from(&savepoint, false);
    let handle = wider.execute_async("at three").await.expect("starts");
    tokio::time::sleep(Duration::from_millis(100)).await;
    handle.cancel();
    within(handle.join()).await.expect("cancelled");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let [(values, hidden), _] = dirs.outputs();
    assert_eq!(
        values, committed[0].0,
        "the cancelled attempt committed nothing"
    );
    assert!(
        hidden.iter().any(|h| h.starts_with(".part-2-")),
        "the cancelled attempt left files of subtask 2: {hidden:?}"
    );

    let again = generator_job(1, RECORDS, &dirs);
    again.restore_from(&savepoint, false);
    within(again.execute("at one again"))
        .await
        .expect("restores");
    dirs.check_exactly_once(RECORDS, "1 -> 3 (cancelled) -> 1");
}
