//! Checkpoints after some sources finished (Flink's FLIP-147), end to end: a job with a short
//! and a long source keeps taking periodic checkpoints after the short one finished, a failure
//! after that restores from such a checkpoint without replaying the finished source, and the
//! committed output equals the failure-free run (exactly-once), or holds every record
//! (at-least-once).
//!
//! Timeouts only guard against hangs; no verdict depends on timing.

mod common;

use common::{read_output, within};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use eichhorn::api::CheckpointingMode;
use eichhorn::checkpoint::{CheckpointId, RestartStrategy};
use eichhorn::connectors::{GeneratorSource, RateLimitedSource};
use eichhorn::prelude::*;

/// Records of the short source; it finishes after a few milliseconds of virtual time.
const SHORT: u64 = 300;
/// Records of the long source; it runs for about a second of virtual time.
const LONG: u64 = 10_000;
/// The short source's values start here, so both sources' values are distinct.
const SHORT_OFFSET: u64 = 1_000_000;
/// Keys of the running counts.
const KEYS: u64 = 23;

/// A source wrapper that notes when one of its subtasks reported the end of its input.
#[operator(new = false)]
#[derive(Clone)]
struct Watched<S> {
    inner: S,
    finished: Arc<AtomicBool>,
}

impl<T, S: SourceFunction<T>> SourceFunction<T> for Watched<S> {
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.inner.open(ctx)
    }
    fn poll_next(&mut self, ctx: &mut SourceContext<'_, T>) -> Result<SourcePoll, FunctionError> {
        let poll = self.inner.poll_next(ctx)?;
        if poll == SourcePoll::Finished {
            self.finished.store(true, Ordering::SeqCst);
        }
        Ok(poll)
    }
    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, FunctionError> {
        self.inner.snapshot_position()
    }
    fn restore_position(&mut self, position: &[u8]) -> Result<(), FunctionError> {
        self.inner.restore_position(position)
    }
    fn restore_rescaled_positions(&mut self, positions: &[Vec<u8>]) -> Result<(), FunctionError> {
        self.inner.restore_rescaled_positions(positions)
    }
}

/// A pass-through map that records, per completed checkpoint, whether the short source had
/// finished by the time the completion reached it.
#[operator(new = false)]
#[derive(Clone)]
struct CheckpointWatch {
    short_finished: Arc<AtomicBool>,
    completed: Arc<Mutex<Vec<(u64, bool)>>>,
}

impl MapFunction<u64> for CheckpointWatch {
    type Out = u64;

    fn map(&mut self, value: u64) -> u64 {
        value
    }

    fn notify_checkpoint_complete(&mut self, id: CheckpointId) -> Result<(), FunctionError> {
        let finished = self.short_finished.load(Ordering::SeqCst);
        self.completed
            .lock()
            .map_err(|_| "poisoned")?
            .push((id.0, finished));
        Ok(())
    }
}

/// A running count per key, emitting `key,count` per record: the multiset of its output does
/// not depend on the order in which the two sources interleave.
#[operator(new = false)]
#[derive(Clone)]
struct RunningCount {
    count: eichhorn::state::ValueState<u64>,
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

/// The running counts of both sources' values, sorted: the exactly-once oracle.
fn expected_counts() -> Vec<String> {
    let mut per_key = BTreeMap::<u64, u64>::new();
    for v in (0..LONG).chain(SHORT_OFFSET..SHORT_OFFSET + SHORT) {
        *per_key.entry(v % KEYS).or_insert(0) += 1;
    }
    let mut lines: Vec<String> = per_key
        .iter()
        .flat_map(|(key, n)| (1..=*n).map(move |c| format!("{key},{c}")))
        .collect();
    lines.sort();
    lines
}

/// Fails (panics) once, when the shared record count over all attempts reaches `at`.
fn failing_at(at: u64) -> impl Fn(u64) -> u64 + Clone + Send + 'static {
    let seen = Arc::new(AtomicU64::new(0));
    move |v| {
        if seen.fetch_add(1, Ordering::SeqCst) + 1 == at {
            panic!("injected failure at record {at}");
        }
        v
    }
}

/// What one run observed.
struct Observed {
    result: JobResult,
    /// Records the short source emitted, over all attempts.
    short_emitted: u64,
    /// Completed checkpoints whose completion reached the job after the short source finished.
    completed_after_short: Vec<u64>,
    /// What the branch fed only by the short source received.
    short_branch: Vec<u64>,
}

/// Runs the two-source job at `parallelism` (the short source at 1), failing once at record
/// `fail_at` of the union. The union goes to an exactly-once file sink under `out` (running
/// counts per key) or, without `out`, to `collected`.
async fn run(
    parallelism: u32,
    mode: CheckpointingMode,
    fail_at: Option<u64>,
    out: Option<&Path>,
    collected: &mut Vec<u64>,
) -> Observed {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    env.enable_checkpointing(20);
    env.configure(|c| c.checkpointing.mode = mode);
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 3,
        delay_ms: 5,
    });
    let short_emitted = Arc::new(AtomicU64::new(0));
    let short_finished = Arc::new(AtomicBool::new(false));
    let counter = short_emitted.clone();
    let short = env
        .add_source(
            Watched {
                inner: RateLimitedSource::new(
                    GeneratorSource::new(Some(SHORT), move |g| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        SHORT_OFFSET + g
                    }),
                    10_000,
                ),
                finished: short_finished.clone(),
            },
            "short",
        )
        .set_parallelism(1)
        .uid("short");
    let long = env
        .add_source(
            RateLimitedSource::new(GeneratorSource::new(Some(LONG), |g| g), 5_000),
            "long",
        )
        .uid("long");
    // A task fed only by the short source: it finishes early and must still acknowledge.
    let short_branch = short.clone().rebalance().map(|v: u64| v).collect_sink();
    let completed = Arc::new(Mutex::new(Vec::new()));
    let unioned = long
        .union([short])
        .map_function(CheckpointWatch {
            short_finished,
            completed: completed.clone(),
        })
        .uid("watch");
    let failing = match fail_at {
        Some(at) => unioned.map(failing_at(at)),
        None => unioned.map(|v: u64| v),
    };
    let sink = match out {
        Some(dir) => {
            failing
                .key_by(|v: &u64| *v % KEYS)
                .process(RunningCount {
                    count: eichhorn::state::ValueState::new("count"),
                })
                .uid("count")
                .write_exactly_once(dir, |line: &String| line.clone());
            None
        }
        None => Some(failing.collect_sink()),
    };
    let result = within(env.execute("finished sources"))
        .await
        .unwrap_or_else(|e| panic!("P={parallelism} {mode:?}: the job recovers: {e}"));
    if let Some(sink) = sink {
        *collected = sink.take();
    }
    let completed_after_short = completed
        .lock()
        .expect("completed")
        .iter()
        .filter(|(_, finished)| *finished)
        .map(|(id, _)| *id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Observed {
        result,
        short_emitted: short_emitted.load(Ordering::SeqCst),
        completed_after_short,
        short_branch: short_branch.take(),
    }
}

/// The id of the checkpoint a job restored from (`memory:chk-<id>`).
fn restored_id(result: &JobResult) -> u64 {
    let location = result.restored_from.as_deref().expect("restored");
    location
        .strip_prefix("memory:chk-")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not an in-memory checkpoint: {location}"))
}

/// Checks what every run must show: periodic checkpoints went on after the short source
/// finished, the restore (if any) came from one of them, and the short source never replayed.
fn check_finished_source(observed: &Observed, restarts: u32, case: &str) {
    let after = &observed.completed_after_short;
    assert!(
        after.len() >= 5,
        "{case}: checkpoints after the short source finished: {after:?}"
    );
    assert_eq!(observed.result.restarts, restarts, "{case}");
    if restarts > 0 {
        // The first checkpoint seen after the short source finished may have been triggered
        // before; any later one was taken with the short source finished.
        let id = restored_id(&observed.result);
        assert!(
            after.iter().skip(1).any(|a| *a <= id),
            "{case}: restored chk-{id}, taken before the short source finished ({after:?})"
        );
    }
    assert_eq!(
        observed.short_emitted, SHORT,
        "{case}: the finished short source was replayed"
    );
    let mut branch = observed.short_branch.clone();
    branch.sort_unstable();
    let expected: Vec<u64> = (SHORT_OFFSET..SHORT_OFFSET + SHORT).collect();
    assert_eq!(branch, expected, "{case}: the short-only branch");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn checkpoints_go_on_after_a_source_finished_and_restore_exactly_once() {
    for parallelism in [1, 2] {
        let case = format!("P={parallelism}");
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let observed = run(
            parallelism,
            CheckpointingMode::ExactlyOnce,
            Some(7_000),
            Some(&out),
            &mut Vec::new(),
        )
        .await;
        check_finished_source(&observed, 1, &case);
        let (lines, hidden) = read_output(&out);
        assert!(hidden.is_empty(), "{case}: {hidden:?}");
        assert_eq!(lines, expected_counts(), "{case}: exactly once");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn without_failures_checkpoints_go_on_after_a_source_finished() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let observed = run(
        2,
        CheckpointingMode::ExactlyOnce,
        None,
        Some(&out),
        &mut Vec::new(),
    )
    .await;
    check_finished_source(&observed, 0, "no failure");
    assert!(observed.result.completed_checkpoints >= 20);
    assert_eq!(read_output(&out), (expected_counts(), Vec::new()));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn at_least_once_checkpoints_go_on_after_a_source_finished() {
    for parallelism in [1, 2] {
        let case = format!("P={parallelism}, at-least-once");
        let mut collected = Vec::new();
        let observed = run(
            parallelism,
            CheckpointingMode::AtLeastOnce,
            Some(7_000),
            None,
            &mut collected,
        )
        .await;
        check_finished_source(&observed, 1, &case);
        let distinct: BTreeSet<u64> = collected.iter().copied().collect();
        let expected: BTreeSet<u64> = (0..LONG)
            .chain(SHORT_OFFSET..SHORT_OFFSET + SHORT)
            .collect();
        assert_eq!(distinct, expected, "{case}: every record at least once");
    }
}

/// Counts its records in operator state and emits the total when its input ends, without
/// clearing it: restored from a checkpoint taken after that, it must not emit it again.
#[operator]
struct TotalAtEnd {
    #[operator_state(name = "count")]
    count: eichhorn::state::OperatorList<u64>,
}

impl ProcessFunction<u64> for TotalAtEnd {
    type Out = String;

    fn process_element(
        &mut self,
        _value: u64,
        _ctx: &mut OperatorContext<'_>,
        _out: &mut Collector<'_, String>,
    ) {
        if self.count.is_empty() {
            self.count.push(0);
        }
        self.count[0] += 1;
    }

    fn on_end_of_input(&mut self, _ctx: &mut OperatorContext<'_>, out: &mut Collector<'_, String>) {
        out.collect(format!("total {}", self.count.iter().sum::<u64>()));
    }
}

/// Flink's "finished on restore": an operator whose input ended before the checkpoint a job
/// restores from does not run its end-of-input hook again, so what it emitted there is
/// committed once. (Before, the restored operator saw its restored source finish again and
/// emitted its total twice.)
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_finished_operator_does_not_end_its_input_again_after_a_restore() {
    for parallelism in [1, 2] {
        let case = format!("P={parallelism}");
        let dir = tempfile::tempdir().expect("tempdir");
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        env.enable_checkpointing(20);
        env.set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 3,
            delay_ms: 5,
        });
        let short_finished = Arc::new(AtomicBool::new(false));
        env.add_source(
            Watched {
                inner: RateLimitedSource::new(GeneratorSource::new(Some(SHORT), |g| g), 10_000),
                finished: short_finished.clone(),
            },
            "short",
        )
        .set_parallelism(1)
        .uid("short")
        .process(TotalAtEnd::new())
        .uid("total")
        .write_exactly_once(dir.path().join("totals"), |line: &String| line.clone());
        let completed = Arc::new(Mutex::new(Vec::new()));
        env.add_source(
            RateLimitedSource::new(GeneratorSource::new(Some(LONG), |g| g), 5_000),
            "long",
        )
        .uid("long")
        .map_function(CheckpointWatch {
            short_finished,
            completed: completed.clone(),
        })
        .map(failing_at(7_000))
        .write_exactly_once(dir.path().join("long"), |v: &u64| v.to_string());
        let result = within(env.execute("finished on restore"))
            .await
            .unwrap_or_else(|e| panic!("{case}: the job recovers: {e}"));
        assert_eq!(result.restarts, 1, "{case}");
        // The restore came from a checkpoint taken after the short branch finished.
        let after: Vec<u64> = completed
            .lock()
            .expect("completed")
            .iter()
            .filter(|(_, finished)| *finished)
            .map(|(id, _)| *id)
            .collect();
        let id = restored_id(&result);
        assert!(
            after.iter().skip(1).any(|a| *a <= id),
            "{case}: restored chk-{id}, taken before the short source finished ({after:?})"
        );
        let (totals, hidden) = read_output(&dir.path().join("totals"));
        assert!(hidden.is_empty(), "{case}: {hidden:?}");
        // One total per subtask of the operator, each once.
        assert_eq!(totals.len(), parallelism as usize, "{case}: {totals:?}");
        let sum: u64 = totals
            .iter()
            .map(|l| {
                l.trim_start_matches("total ")
                    .parse::<u64>()
                    .expect("a total")
            })
            .sum();
        assert_eq!(sum, SHORT, "{case}: {totals:?}");
        let (long, _) = read_output(&dir.path().join("long"));
        assert_eq!(
            long.len() as u64,
            LONG,
            "{case}: the long branch exactly once"
        );
    }
}
