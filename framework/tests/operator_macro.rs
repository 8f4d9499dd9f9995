//! Operators derived with `#[operator]` through the whole runtime: every kind of state field
//! survives failures and restores, savepoints match derived operators by their default uid and
//! restore at another parallelism, and a savepoint whose state no longer matches a field is
//! refused with the field named.
//!
//! Timeouts only guard against hangs; no verdict depends on timing.

mod common;

use common::{committed_lines, failing_at, paced, within};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eichhorn::checkpoint::RestartStrategy;
use eichhorn::connectors::RateLimitedSource;
use eichhorn::prelude::*;
use eichhorn::state::StateBackendKind;
use serde::{Deserialize, Serialize};

const RECORDS: u64 = 3_000;

/// The record `g`: 17 keys, values with both signs.
fn record(g: u64) -> (u64, i64) {
    let mixed = eichhorn::state::splitmix64(g);
    (mixed % 17, (mixed >> 40) as i64 % 100 - 50)
}

/// The mean of the values, as an aggregate function.
#[operator]
struct Mean;

impl AggregateFunction<i64> for Mean {
    type Acc = (i64, u64);
    type Out = i64;
    fn create_accumulator(&mut self) -> (i64, u64) {
        (0, 0)
    }
    fn add(&mut self, value: i64, (sum, count): (i64, u64)) -> (i64, u64) {
        (sum + value, count + 1)
    }
    fn get_result(&mut self, (sum, count): &(i64, u64)) -> i64 {
        if *count == 0 { 0 } else { sum / *count as i64 }
    }
    fn merge(&mut self, a: (i64, u64), b: (i64, u64)) -> (i64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

/// Every kind of keyed state at once; each record emits what the key's state holds.
#[operator]
struct KeyStats {
    #[state]
    sum: ValueState<i64>,
    #[state(name = "recent-values")]
    recent: ListState<i64>,
    #[state]
    residues: MapState<i64, u32>,
    #[state(reduce = |a: i64, b: i64| a.max(b))]
    max: ReducingState<i64>,
    #[state(aggregate = Mean)]
    mean: AggregatingState<i64, (i64, u64), i64>,
    #[state(ttl = 3_600_000)]
    count: ValueState<u64>,
    /// How many recent values to keep.
    keep: usize,
}

impl KeyedProcessFunction for KeyStats {
    type Key = u64;
    type In = (u64, i64);
    type Out = String;

    fn process_element(
        &mut self,
        (key, value): (u64, i64),
        ctx: &mut KeyedContext<'_, '_, u64>,
        out: &mut Collector<'_, String>,
    ) {
        let sum = self.sum.value(ctx).unwrap_or(0) + value;
        self.sum.update(ctx, sum);
        let mut recent = self.recent.get(ctx);
        recent.push(value);
        if recent.len() > self.keep {
            recent.remove(0);
        }
        self.recent.update(ctx, recent.clone());
        let residue = value.rem_euclid(5);
        let seen = self.residues.get(ctx, &residue).unwrap_or(0) + 1;
        self.residues.put(ctx, residue, seen);
        self.max.add(ctx, value);
        self.mean.add(ctx, value);
        let count = self.count.value(ctx).unwrap_or(0) + 1;
        self.count.update(ctx, count);
        out.collect(format!(
            "{key},{sum},{recent:?},{},{},{},{count}",
            self.residues.entries(ctx).len(),
            self.max.get(ctx).unwrap_or_default(),
            self.mean.get(ctx).unwrap_or_default(),
        ));
    }
}

/// The lines `KeyStats` emits for records `0..count`, computed sequentially: the oracle.
fn expected_stats(count: u64, keep: usize) -> Vec<String> {
    #[derive(Default)]
    struct Stats {
        sum: i64,
        recent: Vec<i64>,
        residues: BTreeMap<i64, u32>,
        max: Option<i64>,
        mean: (i64, u64),
        count: u64,
    }
    let mut stats = BTreeMap::<u64, Stats>::new();
    let mut lines: Vec<String> = (0..count)
        .map(|g| {
            let (key, value) = record(g);
            let s = stats.entry(key).or_default();
            s.sum += value;
            s.recent.push(value);
            if s.recent.len() > keep {
                s.recent.remove(0);
            }
            *s.residues.entry(value.rem_euclid(5)).or_insert(0) += 1;
            s.max = Some(s.max.map_or(value, |m| m.max(value)));
            s.mean = (s.mean.0 + value, s.mean.1 + 1);
            s.count += 1;
            format!(
                "{key},{},{:?},{},{},{},{}",
                s.sum,
                s.recent,
                s.residues.len(),
                s.max.unwrap_or_default(),
                s.mean.0 / s.mean.1 as i64,
                s.count
            )
        })
        .collect();
    lines.sort();
    lines
}

/// Counts the records it passed in an operator list field (split on rescaling).
#[operator]
struct CountThrough {
    #[operator_state(name = "passed")]
    passed: OperatorList<u64>,
}

impl MapFunction<(u64, i64)> for CountThrough {
    type Out = (u64, i64);
    fn map(&mut self, value: (u64, i64)) -> (u64, i64) {
        if self.passed.is_empty() {
            self.passed.push(0);
        }
        self.passed[0] += 1;
        value
    }
    fn close(&mut self) -> Result<(), FunctionError> {
        TOTAL_PASSED.fetch_add(self.passed.iter().sum::<u64>(), Ordering::SeqCst);
        Ok(())
    }
}

/// What every `CountThrough` counted when it closed (one test uses it).
static TOTAL_PASSED: AtomicU64 = AtomicU64::new(0);

/// Seeded failures at parallelism 1, 2 and 4 on both backends: the derived operator's state
/// (every keyed kind, with TTL, and an operator list field) comes back from each checkpoint, so
/// the committed output equals the sequential oracle exactly once.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn derived_state_survives_failures_exactly_once() {
    let expected = expected_stats(RECORDS, 3);
    for (run, parallelism) in [1u32, 2, 4].into_iter().enumerate() {
        for backend in [StateBackendKind::Memory, StateBackendKind::Lmdb] {
            let seed = run as u64 * 2 + u64::from(backend == StateBackendKind::Lmdb);
            let r = |i: u64| eichhorn::state::splitmix64(seed * 100 + i);
            let failures: Vec<u64> = (0..2).map(|i| 500 + r(i) % (RECORDS - 500)).collect();
            let dir = tempfile::tempdir().expect("tempdir");
            let env = StreamEnv::new();
            env.set_parallelism(parallelism);
            env.enable_checkpointing(5 + r(5) % 30);
            env.set_state_backend(backend);
            env.configure(|c| c.local_state_dir = Some(dir.path().join("local")));
            env.set_restart_strategy(RestartStrategy::FixedDelay {
                attempts: 5,
                delay_ms: 5,
            });
            paced(&env, RECORDS, 3_000)
                .set_parallelism(1)
                .map(record)
                .set_parallelism(1)
                .map(failing_at(failures.clone()))
                .key_by(|(key, _): &(u64, i64)| *key)
                .process(KeyStats::new(3))
                .write_exactly_once(dir.path().join("out"), |line: &String| line.clone());
            let result = within(env.execute("derived state"))
                .await
                .unwrap_or_else(|e| panic!("P={parallelism} {backend:?}: {e}"));
            assert!(result.restarts >= 1, "P={parallelism} {backend:?} failed");
            assert_eq!(
                committed_lines(&dir.path().join("out")),
                expected,
                "P={parallelism} {backend:?}, failures at {failures:?}"
            );
        }
    }
}

/// An operator list field goes on counting from the checkpoint after a failure, so the counts
/// of the last attempt add up to the input exactly.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn operator_list_fields_are_restored() {
    TOTAL_PASSED.store(0, Ordering::SeqCst);
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.enable_checkpointing(10);
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 2,
        delay_ms: 5,
    });
    let out = paced(&env, RECORDS, 3_000)
        .map(record)
        .map_function(CountThrough::new())
        .map(failing_at(vec![RECORDS / 2]))
        .collect_sink();
    let result = within(env.execute("operator list"))
        .await
        .expect("recovers");
    assert_eq!(result.restarts, 1);
    assert!(out.take().len() as u64 >= RECORDS);
    // The failed attempt closed nothing it counted (it failed), the last attempt closed with
    // the restored counts plus what it saw after the restore: every record once.
    assert_eq!(TOTAL_PASSED.load(Ordering::SeqCst), RECORDS);
}

/// Savepoint at parallelism 2, restore at 3, with no `.uid(..)` on the derived operator: its
/// default uid (the type path) matches it, and keyed state moves by key group.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_savepoint_of_a_derived_operator_restores_at_another_parallelism() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let build = |parallelism: u32| {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        env.enable_checkpointing(1_000_000);
        paced(&env, RECORDS, 3_000)
            .set_parallelism(1)
            .uid("source")
            .map(record)
            .set_parallelism(1)
            .key_by(|(key, _): &(u64, i64)| *key)
            .process(KeyStats::new(3))
            .write_exactly_once(out.clone(), |line: &String| line.clone())
            .uid("sink");
        env
    };
    let handle = build(2).execute_async("before").await.expect("starts");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let savepoint = within(handle.stop_with_savepoint(dir.path().join("savepoints")))
        .await
        .expect("savepoint");
    let _ = within(handle.join()).await.expect("stops");
    assert!(!committed_lines(&out).is_empty());
    let second = build(3);
    second.restore_from(&savepoint, false);
    within(second.execute("after")).await.expect("restores");
    assert_eq!(committed_lines(&out), expected_stats(RECORDS, 3));
}

mod v1 {
    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(crate) struct Point {
        pub(crate) x: i64,
    }

    /// The old operator: a running sum in `ValueState<i64>` and the last point.
    #[operator(uid = "summer")]
    pub(crate) struct Summer {
        #[state]
        pub(crate) sum: ValueState<i64>,
        #[state]
        pub(crate) last: ValueState<Point>,
    }

    impl KeyedProcessFunction for Summer {
        type Key = u64;
        type In = (u64, i64);
        type Out = i64;
        fn process_element(
            &mut self,
            (_, value): (u64, i64),
            ctx: &mut KeyedContext<'_, '_, u64>,
            out: &mut Collector<'_, i64>,
        ) {
            let sum = self.sum.value(ctx).unwrap_or(0) + value;
            self.sum.update(ctx, sum);
            self.last.update(ctx, Point { x: value });
            out.collect(sum);
        }
    }
}

mod v2_type {
    use super::*;

    /// The new operator: the sum field became text.
    #[operator(uid = "summer")]
    pub(crate) struct Summer {
        #[state]
        pub(crate) sum: ValueState<String>,
        #[state]
        pub(crate) last: ValueState<super::v1::Point>,
    }

    impl KeyedProcessFunction for Summer {
        type Key = u64;
        type In = (u64, i64);
        type Out = i64;
        fn process_element(
            &mut self,
            (_, value): (u64, i64),
            ctx: &mut KeyedContext<'_, '_, u64>,
            out: &mut Collector<'_, i64>,
        ) {
            self.sum.update(ctx, value.to_string());
            out.collect(value);
        }
    }
}

mod v2_layout {
    use super::*;

    /// `Point` gained a field under the same name.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(crate) struct Point {
        pub(crate) x: i64,
        pub(crate) y: i64,
    }

    #[operator(uid = "summer")]
    pub(crate) struct Summer {
        #[state]
        pub(crate) sum: ValueState<i64>,
        #[state]
        pub(crate) last: ValueState<Point>,
    }

    impl KeyedProcessFunction for Summer {
        type Key = u64;
        type In = (u64, i64);
        type Out = i64;
        fn process_element(
            &mut self,
            (_, value): (u64, i64),
            ctx: &mut KeyedContext<'_, '_, u64>,
            out: &mut Collector<'_, i64>,
        ) {
            self.last.update(ctx, Point { x: value, y: 0 });
            out.collect(value);
        }
    }
}

async fn savepoint_of_v1(dir: &std::path::Path) -> std::path::PathBuf {
    let env = StreamEnv::new();
    paced(&env, 2_000, 2_000)
        .uid("source")
        .map(record)
        .key_by(|(key, _): &(u64, i64)| *key)
        .process(v1::Summer::new())
        .collect_sink();
    let handle = env.execute_async("v1").await.expect("starts");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let savepoint = within(handle.stop_with_savepoint(dir))
        .await
        .expect("savepoint");
    let _ = within(handle.join()).await;
    savepoint
}

/// A state field whose type changed is refused at restore, naming the field and both types;
/// so is a struct in state that gained a field; the unchanged operator restores.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_changed_state_field_is_refused_with_the_field_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let savepoint = savepoint_of_v1(dir.path()).await;
    // With periodic checkpoints the default restart strategy restarts without limit: a
    // mismatch that a restart cannot fix must still fail the job at once.
    let restore = |env: &StreamEnv| {
        env.restore_from(&savepoint, false);
        env.enable_checkpointing(50);
    };

    let env = StreamEnv::new();
    paced(&env, 2_000, 2_000)
        .uid("source")
        .map(record)
        .key_by(|(key, _): &(u64, i64)| *key)
        .process(v2_type::Summer::new())
        .collect_sink();
    restore(&env);
    let error = within(env.execute("v2 type"))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("state field `sum`"), "{error}");
    assert!(
        error.contains("`ValueState<i64>` to `ValueState<String>`"),
        "{error}"
    );
    assert!(!error.contains("`last`"), "{error}");

    let env = StreamEnv::new();
    paced(&env, 2_000, 2_000)
        .uid("source")
        .map(record)
        .key_by(|(key, _): &(u64, i64)| *key)
        .process(v2_layout::Summer::new())
        .collect_sink();
    restore(&env);
    let error = within(env.execute("v2 layout"))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("state field `last`"), "{error}");
    assert!(error.contains("stored layout changed"), "{error}");
    assert!(error.contains("a restart cannot fix this"), "{error}");

    let env = StreamEnv::new();
    let sums = paced(&env, 2_000, 2_000)
        .uid("source")
        .map(record)
        .key_by(|(key, _): &(u64, i64)| *key)
        .process(v1::Summer::new())
        .collect_sink();
    restore(&env);
    within(env.execute("v1 again")).await.expect("restores");
    assert!(!sums.take().is_empty());
}

/// Two uses of one derived type get distinct default uids (`#2`), so both restore.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn two_uses_of_one_derived_type_keep_their_own_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let build = || {
        let env = StreamEnv::new();
        let base = paced(&env, 2_000, 2_000).uid("source").map(record);
        let first = base
            .clone()
            .key_by(|(key, _): &(u64, i64)| *key)
            .process(v1::Summer::new())
            .collect_sink();
        let second = base
            .map(|(key, value): (u64, i64)| (key, value * 2))
            .key_by(|(key, _): &(u64, i64)| *key)
            .process(v1::Summer::new())
            .collect_sink();
        (env, first, second)
    };
    let (env, _, _) = build();
    let handle = env.execute_async("twice").await.expect("starts");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let savepoint = within(handle.stop_with_savepoint(dir.path()))
        .await
        .expect("savepoint");
    let _ = within(handle.join()).await;
    let (env, first, second) = build();
    env.restore_from(&savepoint, false);
    within(env.execute("twice again")).await.expect("restores");
    // Every running sum of the second operator is twice the first's for the same record, as
    // long as each restored its own state.
    let (first, second) = (first.take(), second.take());
    assert!(!first.is_empty());
    assert_eq!(first.len(), second.len());
    assert_eq!(2 * first.iter().sum::<i64>(), second.iter().sum::<i64>());
}

/// What every `CountingSink` counted when it closed.
static SINK_COUNTED: AtomicU64 = AtomicU64::new(0);

/// A sink counting what it got in an operator list field.
#[operator]
struct CountingSink {
    #[operator_state]
    received: OperatorList<u64>,
}

impl SinkFunction<(u64, i64)> for CountingSink {
    fn invoke(&mut self, _value: (u64, i64), _ctx: &SinkContext) -> Result<(), FunctionError> {
        if self.received.is_empty() {
            self.received.push(0);
        }
        self.received[0] += 1;
        Ok(())
    }
    fn close(&mut self) -> Result<(), FunctionError> {
        SINK_COUNTED.fetch_add(self.received.iter().sum::<u64>(), Ordering::SeqCst);
        Ok(())
    }
}

/// A sink's operator list field is restored after a failure: the last attempt's counts add
/// up to the input, every record exactly once.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sink_state_fields_are_restored() {
    SINK_COUNTED.store(0, Ordering::SeqCst);
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.enable_checkpointing(10);
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 2,
        delay_ms: 5,
    });
    paced(&env, RECORDS, 3_000)
        .map(record)
        .map(failing_at(vec![RECORDS / 3]))
        .add_sink(CountingSink::new());
    let result = within(env.execute("sink state")).await.expect("recovers");
    assert_eq!(result.restarts, 1);
    assert_eq!(SINK_COUNTED.load(Ordering::SeqCst), RECORDS);
}

/// A source that keeps its own position in an operator list field instead of
/// `snapshot_position`: `next` is the next value to emit.
#[operator]
struct Counter {
    #[operator_state]
    next: OperatorList<u64>,
    /// How many values to emit.
    count: u64,
}

impl SourceFunction<u64> for Counter {
    fn poll_next(&mut self, ctx: &mut SourceContext<'_, u64>) -> Result<SourcePoll, FunctionError> {
        if self.next.is_empty() {
            self.next.push(0);
        }
        if self.next[0] >= self.count {
            return Ok(SourcePoll::Finished);
        }
        ctx.collect(self.next[0]);
        self.next[0] += 1;
        Ok(SourcePoll::MoreAvailable)
    }
}

/// A derived source's state field is its position: after failures it resumes from the
/// checkpoint, and the exactly-once output holds every value once.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_derived_source_resumes_from_its_state_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = StreamEnv::new();
    env.enable_checkpointing(10);
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 3,
        delay_ms: 5,
    });
    env.add_source(
        RateLimitedSource::new(Counter::new(RECORDS), 3_000),
        "counter",
    )
    .set_parallelism(1)
    .map(failing_at(vec![RECORDS / 4, RECORDS / 2]))
    .set_parallelism(1)
    .write_exactly_once(dir.path().join("out"), |n: &u64| n.to_string());
    let result = within(env.execute("derived source"))
        .await
        .expect("recovers");
    assert_eq!(result.restarts, 2);
    let mut values: Vec<u64> = committed_lines(&dir.path().join("out"))
        .iter()
        .map(|line| line.parse().expect("number"))
        .collect();
    values.sort_unstable();
    assert_eq!(values, (0..RECORDS).collect::<Vec<_>>());
}

/// What the table sink's "database" holds: committed rows, and every transaction id ever begun.
#[derive(Default)]
struct Table {
    committed: Vec<u64>,
    committed_txns: std::collections::BTreeSet<u64>,
    begun: std::collections::BTreeSet<u64>,
    reused: Vec<u64>,
}

/// A two-phase-commit sink whose transaction ids come from a counter kept in an operator list
/// field, so a restarted sink never reuses an id (a database would reject it).
#[operator]
struct TableSink {
    #[operator_state(name = "next-transaction")]
    next_txn: OperatorList<u64>,
    /// The shared table.
    table: Arc<std::sync::Mutex<Table>>,
}

impl TwoPhaseCommitSink<u64> for TableSink {
    type Txn = (u64, Vec<u64>);

    fn begin_transaction(&mut self) -> Result<(u64, Vec<u64>), FunctionError> {
        if self.next_txn.is_empty() {
            self.next_txn.push(0);
        }
        // Ids are per subtask in the test (parallelism 1).
        let id = self.next_txn[0];
        self.next_txn[0] += 1;
        let mut table = self.table.lock().expect("table");
        if !table.begun.insert(id) {
            table.reused.push(id);
        }
        Ok((id, Vec::new()))
    }
    fn invoke(
        &mut self,
        txn: &mut (u64, Vec<u64>),
        value: u64,
        _ctx: &SinkContext,
    ) -> Result<(), FunctionError> {
        txn.1.push(value);
        Ok(())
    }
    fn pre_commit(&mut self, _txn: &mut (u64, Vec<u64>)) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Idempotent, as the protocol requires: a restore re-commits what its checkpoint
    /// pre-committed, which may have been committed already.
    fn commit(&mut self, (id, rows): (u64, Vec<u64>)) -> Result<(), FunctionError> {
        let mut table = self.table.lock().expect("table");
        if table.committed_txns.insert(id) {
            table.committed.extend(rows);
        }
        Ok(())
    }
    fn abort(&mut self, _txn: (u64, Vec<u64>)) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// A two-phase-commit sink's state field (its transaction counter) is restored with its
/// transactions: after failures no transaction id is reused and every row commits once.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_derived_two_phase_sink_keeps_its_transaction_counter() {
    let table = Arc::new(std::sync::Mutex::new(Table::default()));
    let env = StreamEnv::new();
    env.set_parallelism(1);
    env.enable_checkpointing(10);
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 3,
        delay_ms: 5,
    });
    paced(&env, RECORDS, 3_000)
        .map(failing_at(vec![RECORDS / 3, 2 * RECORDS / 3]))
        .add_two_phase_sink(TableSink::new(table.clone()));
    let result = within(env.execute("table sink")).await.expect("recovers");
    assert_eq!(result.restarts, 2);
    let table = table.lock().expect("table");
    assert!(table.reused.is_empty(), "reused ids {:?}", table.reused);
    let mut committed = table.committed.clone();
    committed.sort_unstable();
    let missing_or_twice = committed != (0..RECORDS).collect::<Vec<_>>();
    assert!(!missing_or_twice, "{} rows committed", committed.len());
}

/// What every `WindowCounter` counted when it closed.
static WINDOWS_FIRED: AtomicU64 = AtomicU64::new(0);

/// A process window function counting the windows it saw in an operator list field.
#[operator]
struct WindowCounter {
    #[operator_state]
    fired: OperatorList<u64>,
}

impl ProcessWindowFunction<u64, u64> for WindowCounter {
    type Out = u64;
    fn process(
        &mut self,
        _key: &u64,
        _ctx: &eichhorn::operator::window::WindowContext,
        elements: Vec<u64>,
        out: &mut Collector<'_, u64>,
    ) {
        if self.fired.is_empty() {
            self.fired.push(0);
        }
        self.fired[0] += 1;
        out.collect(elements.len() as u64);
    }
    fn close(&mut self) -> Result<(), FunctionError> {
        WINDOWS_FIRED.fetch_add(self.fired.iter().sum::<u64>(), Ordering::SeqCst);
        Ok(())
    }
}

/// A process window function's state field is restored with the windows: after a failure the
/// last attempt's count is every window once.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn window_function_state_fields_are_restored() {
    use eichhorn::operator::window::{TimeDomain, WindowAssigner};
    use eichhorn::time::WatermarkStrategy;
    WINDOWS_FIRED.store(0, Ordering::SeqCst);
    let env = StreamEnv::new();
    env.set_parallelism(1);
    env.enable_checkpointing(10);
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 2,
        delay_ms: 5,
    });
    let sizes = paced(&env, RECORDS, 3_000)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(0)
                .with_timestamp_assigner(|g: &u64, _| *g as i64),
        )
        .map(failing_at(vec![RECORDS / 2]))
        .key_by(|_: &u64| 0u64)
        .window(WindowAssigner::tumbling(TimeDomain::EventTime, 100, 0).expect("assigner"))
        .process(WindowCounter::new())
        .collect_sink();
    let result = within(env.execute("window state")).await.expect("recovers");
    assert_eq!(result.restarts, 1);
    assert!(sizes.take().iter().all(|size| *size == 100));
    assert_eq!(WINDOWS_FIRED.load(Ordering::SeqCst), RECORDS / 100);
}
