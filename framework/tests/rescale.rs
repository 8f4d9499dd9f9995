//! Restoring at another parallelism, end to end: source positions are redistributed (a
//! generator-based job saved at parallelism 2 goes on at 3 and at 1 without loss or
//! duplication), a source that cannot be rescaled fails with an error naming it, and the
//! exactly-once file sink recovers the transactions and leftovers of every old subtask when the
//! job comes back at a lower parallelism.
//!
//! Timeouts only guard against hangs; no verdict depends on timing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use eichhorn::connectors::{CollectionSource, GeneratorSource, RateLimitedSource};
use eichhorn::prelude::*;

/// Keys of the running counts.
const KEYS: u64 = 23;

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(300), future)
        .await
        .expect("the job hung")
}

/// A running count per key, emitting `key,count` per record: the multiset of its output does
/// not depend on the order in which records of different subtasks arrive.
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

/// The committed lines of an exactly-once file sink directory (sorted) and its hidden files.
fn read_output(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut lines = Vec::new();
    let mut hidden = Vec::new();
    for entry in std::fs::read_dir(dir).expect("output dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            hidden.push(name);
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("part file");
        lines.extend(text.lines().map(str::to_string));
    }
    lines.sort();
    hidden.sort();
    (lines, hidden)
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
}

impl Dirs {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        Self {
            values: root.path().join("values"),
            counts: root.path().join("counts"),
            savepoints: root.path().join("savepoints"),
            _root: root,
        }
    }
}

/// The generator job at `parallelism` (every operator): `records` paced values into an
/// exactly-once sink of the values and, keyed, of running counts.
fn generator_job(parallelism: u32, records: u64, dirs: &Dirs) -> StreamEnv {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    let values = env
        .add_source(
            RateLimitedSource::new(GeneratorSource::new(Some(records), |g| g), 4_000),
            "paced generator",
        )
        .uid("source");
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

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_source_that_cannot_be_rescaled_fails_naming_itself() {
    let dirs = Dirs::new();
    let build = |parallelism: u32| {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        // Every subtask of a collection source emits the whole collection: its positions
        // cannot be shared out over another number of subtasks.
        env.add_source(
            RateLimitedSource::new(CollectionSource::new((0..2_000u64).collect()), 1_000),
            "replicated collection",
        )
        .uid("source")
        .collect_sink();
        env
    };
    let savepoint = stop_with_savepoint_after(&build(2), 100, &dirs.savepoints).await;
    let second = build(3);
    second.restore_from(&savepoint, false);
    let error = within(second.execute("rescaled")).await.unwrap_err();
    let message = error.to_string();
    for expected in [
        "Source: replicated collection",
        "checkpointed at parallelism 2, restored at parallelism 3",
        "cannot redistribute its positions",
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
