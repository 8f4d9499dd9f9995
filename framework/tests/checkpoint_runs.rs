//! Checkpoints belong to a run of a job, and a restart never duplicates committed output
//! silently:
//!
//! - a new run keeps its checkpoints under its own job id and never restores another run's by
//!   itself; an earlier run's checkpoints are used only when named with `restore_from`;
//! - a restart that would fall back past a damaged or missing checkpoint whose transactions an
//!   exactly-once sink already committed fails the job, naming the checkpoint and what was
//!   committed, unless the user allows the fallback; without such commits it falls back.
//!
//! Every scenario runs on both state backends, on virtual time. Timeouts only guard against
//! hangs; no verdict depends on timing.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{committed_lines, failing_at, paced, read_output, run_dir, within};
use eichhorn::checkpoint::RestartStrategy;
use eichhorn::checkpoint::damage::CheckpointDamage as Damage;
use eichhorn::connectors::ExactlyOnceFileSink;
use eichhorn::prelude::*;
use eichhorn::state::StateBackendKind;

const BACKENDS: [StateBackendKind; 2] = [StateBackendKind::Memory, StateBackendKind::Lmdb];
const KEYS: u64 = 5;

/// `key,running_sum` lines of the values `offset..offset + count` keyed by `value % KEYS`,
/// sorted: what the job below commits, exactly once.
fn expected(count: u64, offset: u64) -> Vec<String> {
    let mut sums = BTreeMap::<u64, u64>::new();
    let mut lines: Vec<String> = (offset..offset + count)
        .map(|v| {
            let sum = sums.entry(v % KEYS).or_insert(0);
            *sum += v;
            format!("{},{sum}", v % KEYS)
        })
        .collect();
    lines.sort();
    lines
}

fn environment(backend: StateBackendKind, checkpoints: &Path) -> StreamEnv {
    let env = StreamEnv::new();
    env.set_parallelism(1);
    env.set_state_backend(backend);
    env.enable_checkpointing(100);
    env.set_checkpoint_storage(checkpoints);
    env.configure(|c| c.checkpointing.retained = 3);
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 2,
        delay_ms: 10,
    });
    env
}

/// Shared between the sink and the tripwire of every attempt.
#[derive(Debug, Clone, Default)]
struct Fault {
    commits: Arc<AtomicU64>,
    armed: Arc<AtomicBool>,
    fired: Arc<AtomicBool>,
    damaged: Arc<AtomicU64>,
}

impl Fault {
    /// A map that panics on the first record after the sink damaged a checkpoint.
    fn tripwire<T>(&self) -> impl Fn(T) -> T + Clone + Send + 'static {
        let fault = self.clone();
        move |value| {
            if fault.armed.load(Ordering::SeqCst) && !fault.fired.swap(true, Ordering::SeqCst) {
                panic!("injected failure after damaging a committed checkpoint");
            }
            value
        }
    }
}

/// An exactly-once file sink that, once it committed the transaction of checkpoint
/// `damage_at` (parallelism 1: one transaction per checkpoint, ids from 1), damages that
/// checkpoint's folder and arms the tripwire: the job then fails with the newest checkpoint
/// damaged and its output committed.
#[operator(new = false)]
#[derive(Clone)]
struct DamagingSink {
    inner: ExactlyOnceFileSink<String>,
    checkpoints: PathBuf,
    damage: Damage,
    damage_at: u64,
    fault: Fault,
}

impl std::fmt::Debug for DamagingSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DamagingSink")
            .field("damage", &self.damage)
            .finish()
    }
}

impl TwoPhaseCommitSink<String> for DamagingSink {
    type Txn = <ExactlyOnceFileSink<String> as TwoPhaseCommitSink<String>>::Txn;

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.inner.open(ctx)
    }

    fn begin_transaction(&mut self) -> Result<Self::Txn, FunctionError> {
        self.inner.begin_transaction()
    }

    fn invoke(
        &mut self,
        txn: &mut Self::Txn,
        value: String,
        ctx: &eichhorn::api::SinkContext,
    ) -> Result<(), FunctionError> {
        self.inner.invoke(txn, value, ctx)
    }

    fn pre_commit(&mut self, txn: &mut Self::Txn) -> Result<(), FunctionError> {
        self.inner.pre_commit(txn)
    }

    fn commit(&mut self, txn: Self::Txn) -> Result<(), FunctionError> {
        self.inner.commit(txn)?;
        let commits = self.fault.commits.fetch_add(1, Ordering::SeqCst) + 1;
        if commits == self.damage_at && !self.fault.armed.load(Ordering::SeqCst) {
            let folder = run_dir(&self.checkpoints).join(format!("chk-{commits}"));
            self.damage.apply(&folder).expect("damages the checkpoint");
            self.fault.damaged.store(commits, Ordering::SeqCst);
            self.fault.armed.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    fn abort(&mut self, txn: Self::Txn) -> Result<(), FunctionError> {
        self.inner.abort(txn)
    }

    fn recover_and_commit(&mut self, txn: Self::Txn) -> Result<(), FunctionError> {
        self.inner.recover_and_commit(txn)
    }

    fn recover_and_abort(&mut self, txn: Self::Txn) -> Result<(), FunctionError> {
        self.inner.recover_and_abort(txn)
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.inner.close()
    }
}

/// Lines that occur more than once.
fn duplicates(lines: &[String]) -> Vec<String> {
    let mut seen = BTreeMap::<&String, u32>::new();
    for line in lines {
        *seen.entry(line).or_insert(0) += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(l, _)| l.clone())
        .collect()
}

struct Run {
    _dir: tempfile::TempDir,
    checkpoints: PathBuf,
    output: PathBuf,
}

impl Run {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self {
            checkpoints: dir.path().join("checkpoints"),
            output: dir.path().join("out"),
            _dir: dir,
        }
    }
}

/// The damaged job: `count` values; the sink damages checkpoint 5 after committing it, then
/// the job fails.
fn damaged_job(
    run: &Run,
    backend: StateBackendKind,
    damage: Damage,
    count: u64,
    fault: &Fault,
    sink_values_below: Option<u64>,
) -> StreamEnv {
    let env = environment(backend, &run.checkpoints);
    let lines = sums_job(&env, count, 0, fault.tripwire());
    let lines = match sink_values_below {
        // Only the first records reach the sink: later transactions are empty.
        Some(limit) => lines.filter(move |line: &String| sum_of(line) < limit),
        None => lines,
    };
    lines.add_two_phase_sink(DamagingSink {
        inner: ExactlyOnceFileSink::new(&run.output, |line: &String| line.clone()),
        checkpoints: run.checkpoints.clone(),
        damage,
        damage_at: 5,
        fault: fault.clone(),
    });
    env
}

fn sum_of(line: &str) -> u64 {
    line.split(',')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Running sums per key of the values `offset..offset + count`, as `key,sum` lines.
fn sums_job(
    env: &StreamEnv,
    count: u64,
    offset: u64,
    tripwire: impl Fn(String) -> String + Clone + Send + 'static,
) -> DataStream<String> {
    paced(env, count, 1_000)
        .uid("source")
        .map(move |v: u64| v + offset)
        .key_by(|v: &u64| v % KEYS)
        .process(RunningSum::new())
        .uid("sums")
        .map(tripwire)
}

/// `key,running_sum` per value, in keyed state.
#[operator(uid = "sums")]
#[derive(Debug, Clone)]
struct RunningSum {
    #[state]
    sum: ValueState<u64>,
}

impl KeyedProcessFunction for RunningSum {
    type Key = u64;
    type In = u64;
    type Out = String;

    fn process_element(
        &mut self,
        value: u64,
        ctx: &mut KeyedContext<'_, '_, u64>,
        out: &mut Collector<'_, String>,
    ) {
        let sum = self.sum.value(ctx).unwrap_or(0) + value;
        self.sum.update(ctx, sum);
        out.collect(format!("{},{sum}", value % KEYS));
    }
}

/// Item 1 of the issue: a second run over the same checkpoint directory, failing early, must
/// restart from the beginning of its own input, not from the first run's final checkpoint.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_new_run_never_restores_another_runs_checkpoint() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let checkpoints = dir.path().join("checkpoints");
        let mut run_ids = Vec::new();
        // Three runs in a row over one checkpoint directory, each on other input, the later
        // ones failing early; each commits exactly its own running sums.
        for (run, offset) in [0u64, 1_000_000, 2_000_000].into_iter().enumerate() {
            let output = dir.path().join(format!("out-{run}"));
            let env = StreamEnv::new();
            env.set_parallelism(1);
            env.set_state_backend(backend);
            // Far longer than the run: only the final checkpoint is taken.
            env.enable_checkpointing(100_000_000);
            env.set_checkpoint_storage(&checkpoints);
            env.set_restart_strategy(RestartStrategy::FixedDelay {
                attempts: 1,
                delay_ms: 10,
            });
            let fail_at = if run == 0 { vec![] } else { vec![100] };
            sums_job(&env, 1_000, offset, failing_at(fail_at))
                .write_exactly_once(&output, |line: &String| line.clone());
            let result = within(env.execute("runs")).await.expect("runs");
            assert_eq!(result.restarts, u32::from(run > 0), "{backend:?} run {run}");
            assert_eq!(
                result.restored_from, None,
                "{backend:?} run {run} restarted from the beginning"
            );
            assert_eq!(
                committed_lines(&output),
                expected(1_000, offset),
                "{backend:?} run {run}: exactly its own input"
            );
            let own = result.checkpoint_dir.expect("directory storage");
            assert_eq!(own, checkpoints.join(result.job_id.to_string()));
            assert!(own.join("chk-1").join("_metadata").is_file());
            run_ids.push(result.job_id);
        }
        run_ids.dedup();
        assert_eq!(run_ids.len(), 3, "every run has its own id");

        // An earlier run's checkpoints are used when named: its final state, with the source
        // at the end of its input, so the resumed run (into the same output) has nothing left
        // to write.
        let first = checkpoints.join(run_ids[0].to_string());
        for path in [first.clone(), first.join("chk-1")] {
            let output = dir.path().join("out-0");
            let env = StreamEnv::new();
            env.set_parallelism(1);
            env.set_state_backend(backend);
            env.set_checkpoint_storage(&checkpoints);
            env.restore_from(&path, false);
            sums_job(&env, 1_000, 0, |line| line)
                .write_exactly_once(&output, |line: &String| line.clone());
            let result = within(env.execute("resumed")).await.expect("resumes");
            let restored = result.restored_from.expect("restored");
            assert!(
                restored.ends_with(&format!("{}/chk-1", run_ids[0])),
                "{restored}"
            );
            assert_eq!(committed_lines(&output), expected(1_000, 0), "{path:?}");
        }

        // The directory holding several runs is not a checkpoint: the error names the runs.
        let env = StreamEnv::new();
        env.restore_from(&checkpoints, false);
        sums_job(&env, 10, 0, |line| line).collect_sink();
        let error = within(env.execute("ambiguous")).await.unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, JobError::Restore(_)), "{message}");
        for id in &run_ids {
            assert!(message.contains(&id.to_string()), "{message}");
        }
    }
}

/// Item 2 of the issue: the newest checkpoint is damaged (every kind of damage) after the sink
/// committed its transactions, then the job fails. Falling back to the previous checkpoint
/// would write that output again: the job fails at once, naming the checkpoint and what was
/// committed, and the committed output has no duplicate.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn falling_back_past_committed_output_fails_the_job_naming_it() {
    for backend in BACKENDS {
        for damage in Damage::ALL {
            let case = format!("{backend:?} {damage:?}");
            let run = Run::new();
            let fault = Fault::default();
            let env = damaged_job(&run, backend, damage, 3_000, &fault, None);
            let error = within(env.execute("damaged")).await.unwrap_err();
            let message = error.to_string();
            assert_eq!(fault.damaged.load(Ordering::SeqCst), 5, "{case}");
            assert!(matches!(error, JobError::Restore(_)), "{case}: {message}");
            assert!(
                message.contains("cannot restart from checkpoint 4")
                    && message.contains("checkpoint 5: ")
                    && message.contains("records")
                    && message.contains("allow_fallback_past_commits"),
                "{case}: {message}"
            );
            if damage != Damage::DeleteCheckpoint {
                assert!(
                    message.contains("chk-5"),
                    "{case}: names the damage: {message}"
                );
            }
            let (lines, _) = read_output(&run.output);
            assert!(duplicates(&lines).is_empty(), "{case}: duplicated output");
            let all = expected(3_000, 0);
            assert!(lines.iter().all(|l| all.binary_search(l).is_ok()), "{case}");
        }
    }
}

/// Allowing the fallback restores the previous checkpoint and finishes the job; the output of
/// the damaged checkpoint is then committed twice, as the user accepted.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_allowed_fallback_finishes_with_the_duplicates_it_accepted() {
    for backend in BACKENDS {
        let run = Run::new();
        let fault = Fault::default();
        let env = damaged_job(&run, backend, Damage::FlipByte, 3_000, &fault, None);
        env.allow_fallback_past_commits(true);
        let result = within(env.execute("allowed")).await.expect("falls back");
        assert_eq!(result.restarts, 1);
        let restored = result.restored_from.expect("restored");
        assert!(restored.ends_with("chk-4"), "{restored}");
        let (mut lines, hidden) = read_output(&run.output);
        assert!(hidden.is_empty(), "{hidden:?}");
        assert!(
            !duplicates(&lines).is_empty(),
            "{backend:?}: checkpoint 5's output twice"
        );
        lines.dedup();
        assert_eq!(lines, expected(3_000, 0), "{backend:?}: nothing lost");
    }
}

/// Without commits after the checkpoint it falls back to (the sink's later transactions are
/// empty), a damaged newest checkpoint is skipped and the output is exactly once.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn without_commits_after_it_the_fallback_is_silent_and_exact() {
    for backend in BACKENDS {
        for damage in [Damage::FlipByte, Damage::DeleteCheckpoint] {
            let case = format!("{backend:?} {damage:?}");
            let run = Run::new();
            let fault = Fault::default();
            // Sums below 100 come only from the first values, long before checkpoint 4.
            let env = damaged_job(&run, backend, damage, 3_000, &fault, Some(100));
            let result = within(env.execute("no commits")).await.expect("falls back");
            assert_eq!(fault.damaged.load(Ordering::SeqCst), 5, "{case}");
            assert_eq!(result.restarts, 1, "{case}");
            let restored = result.restored_from.expect("restored");
            assert!(restored.ends_with("chk-4"), "{case}: {restored}");
            let exact: Vec<String> = expected(3_000, 0)
                .into_iter()
                .filter(|l| sum_of(l) < 100)
                .collect();
            assert_eq!(committed_lines(&run.output), exact, "{case}");
        }
    }
}

/// A cancelled run's retained checkpoints resume it when named: the second run, restored from
/// the first run's folder, commits the rest, and the output is exactly once.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_cancelled_run_resumes_from_its_retained_checkpoints_exactly_once() {
    for backend in BACKENDS {
        let run = Run::new();
        let env = environment(backend, &run.checkpoints);
        sums_job(&env, 3_000, 0, |line| line)
            .write_exactly_once(&run.output, |line: &String| line.clone());
        let handle = env.execute_async("cancelled").await.expect("starts");
        let first = handle.job_id();
        tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
        handle.cancel();
        let result = within(handle.join()).await.expect("cancels");
        assert_eq!(result.status, JobStatus::Canceled, "{backend:?}");
        let partial = committed_lines(&run.output);
        assert!(
            !partial.is_empty() && partial.len() < 3_000,
            "{backend:?}: {} lines committed before the cancel",
            partial.len()
        );

        let env = environment(backend, &run.checkpoints);
        env.restore_from(run.checkpoints.join(first.to_string()), false);
        sums_job(&env, 3_000, 0, |line| line)
            .write_exactly_once(&run.output, |line: &String| line.clone());
        let result = within(env.execute("resumed")).await.expect("resumes");
        assert_ne!(result.job_id, first, "a new run");
        assert!(result.restored_from.is_some(), "{backend:?}");
        let (lines, hidden) = read_output(&run.output);
        assert!(hidden.is_empty(), "{backend:?}: {hidden:?}");
        assert_eq!(lines, expected(3_000, 0), "{backend:?}: exactly once");
    }
}
