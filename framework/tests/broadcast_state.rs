//! The broadcast state pattern against sequential oracles: thresholds per category, broadcast to
//! a stream of payments (keyed by user, and not keyed), at parallelism 1, 2 and 4; broadcast
//! state through a failure and restart, and through a savepoint restored at another
//! parallelism.
//!
//! The two inputs of a broadcast operator interleave as they arrive, so the payments start later
//! (in virtual time) than the rules: every rule is in broadcast state before the first payment,
//! and the oracle applies all rules first. Timeouts only guard against hangs; no verdict depends
//! on timing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eichhorn::checkpoint::RestartStrategy;
use eichhorn::connectors::{CollectionSource, GeneratorSource, RateLimitedSource};
use eichhorn::prelude::*;
use eichhorn::state::{ValueState, splitmix64};

/// `(category, threshold)`: `Some` sets the category's threshold, `None` removes it.
type Rule = (u8, Option<i64>);
/// `(user, category, amount)`.
type Payment = (u32, u8, i64);

const USERS: u64 = 17;
const CATEGORIES: u64 = 5;

/// Rules with updates and a removal; category 4 never gets a threshold.
fn rules() -> Vec<Rule> {
    vec![
        (0, Some(500)),
        (1, Some(100)),
        (2, Some(900)),
        (0, Some(300)),
        (3, Some(0)),
        (2, None),
        (1, Some(700)),
        (3, Some(650)),
    ]
}

/// Payment number `g`.
fn payment(g: u64) -> Payment {
    let mixed = splitmix64(g);
    (
        (mixed % USERS) as u32,
        ((mixed >> 16) % CATEGORIES) as u8,
        ((mixed >> 32) % 1_000) as i64,
    )
}

fn thresholds() -> MapStateDescriptor<u8, i64> {
    MapStateDescriptor::new("thresholds")
}

fn updates() -> MapStateDescriptor<u8, u32> {
    MapStateDescriptor::new("updates")
}

/// Per user: an `alert` line for every payment above its category's threshold (with the user's
/// running alert count), and a `summary` line when the input ends (with the user's total, alert
/// count, and what broadcast state holds then). Rules set or remove thresholds and count updates
/// per category in a second broadcast state.
#[operator(new = false)]
#[derive(Clone)]
struct Alerts {
    thresholds: MapStateDescriptor<u8, i64>,
    updates: MapStateDescriptor<u8, u32>,
    alerts: ValueState<u64>,
    total: ValueState<i64>,
}

impl Alerts {
    fn new() -> Self {
        Self {
            thresholds: thresholds(),
            updates: updates(),
            alerts: ValueState::new("alerts"),
            total: ValueState::new("total"),
        }
    }
}

impl KeyedBroadcastProcessFunction for Alerts {
    type Key = u32;
    type In1 = Payment;
    type In2 = Rule;
    type Out = String;

    fn process_element(
        &mut self,
        (user, category, amount): Payment,
        ctx: &mut KeyedBroadcastReadOnlyContext<'_, u32>,
        out: &mut Collector<'_, String>,
    ) {
        assert_eq!(*ctx.current_key(), user);
        let total = self.total.value(ctx).unwrap_or(0) + amount;
        self.total.update(ctx, total);
        let threshold = ctx
            .broadcast_state(&self.thresholds)
            .get(&category)
            .copied();
        if threshold.is_some_and(|t| amount > t) {
            let alerts = self.alerts.value(ctx).unwrap_or(0) + 1;
            self.alerts.update(ctx, alerts);
            out.collect(format!("alert,{user},{category},{amount},{alerts}"));
        }
        // The end of both inputs (the maximum watermark) fires it, once per user.
        ctx.register_event_time_timer(i64::MAX);
    }

    fn process_broadcast_element(
        &mut self,
        (category, threshold): Rule,
        ctx: &mut KeyedBroadcastContext<'_, '_, u32>,
        _out: &mut Collector<'_, String>,
    ) {
        let mut thresholds = ctx.broadcast_state(&self.thresholds);
        match threshold {
            Some(threshold) => {
                thresholds.put(category, threshold);
            }
            None => {
                thresholds.remove(&category);
            }
        }
        let mut updates = ctx.broadcast_state(&self.updates);
        let count = updates.get(&category).copied().unwrap_or(0);
        updates.put(category, count + 1);
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut KeyedBroadcastReadOnlyContext<'_, u32>,
        out: &mut Collector<'_, String>,
    ) {
        assert_eq!(timestamp, i64::MAX);
        let thresholds: Vec<String> = ctx
            .broadcast_state(&self.thresholds)
            .entries()
            .map(|(c, t)| format!("{c}={t}"))
            .collect();
        let updates: u32 = ctx
            .broadcast_state(&self.updates)
            .entries()
            .map(|(_, n)| n)
            .sum();
        let total = self.total.value(ctx).unwrap_or(0);
        let alerts = self.alerts.value(ctx).unwrap_or(0);
        out.collect(format!(
            "summary,{},{total},{alerts},{},{updates}",
            ctx.current_key(),
            thresholds.join(";")
        ));
    }
}

/// The sequential computation of [`Alerts`] over payments `0..count`, sorted.
fn expected_alerts(count: u64) -> Vec<String> {
    let mut thresholds = BTreeMap::new();
    for (category, threshold) in rules() {
        match threshold {
            Some(t) => thresholds.insert(category, t),
            None => thresholds.remove(&category),
        };
    }
    let updates = rules().len();
    let mut per_user: BTreeMap<u32, (i64, u64)> = BTreeMap::new();
    let mut lines = Vec::new();
    for g in 0..count {
        let (user, category, amount) = payment(g);
        let (total, alerts) = per_user.entry(user).or_insert((0, 0));
        *total += amount;
        if thresholds.get(&category).is_some_and(|t| amount > *t) {
            *alerts += 1;
            lines.push(format!("alert,{user},{category},{amount},{alerts}"));
        }
    }
    let thresholds: Vec<String> = thresholds.iter().map(|(c, t)| format!("{c}={t}")).collect();
    for (user, (total, alerts)) in per_user {
        lines.push(format!(
            "summary,{user},{total},{alerts},{},{updates}",
            thresholds.join(";")
        ));
    }
    lines.sort();
    lines
}

/// A source that emits nothing before processing time `start_ms` (its positions are the inner
/// source's).
#[operator(new = false)]
#[derive(Clone)]
struct StartAt<S> {
    inner: S,
    start_ms: i64,
}

impl<T, S: SourceFunction<T>> SourceFunction<T> for StartAt<S> {
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.inner.open(ctx)
    }
    fn poll_next(&mut self, ctx: &mut SourceContext<'_, T>) -> Result<SourcePoll, FunctionError> {
        if ctx.current_processing_time() < self.start_ms {
            return Ok(SourcePoll::Idle);
        }
        self.inner.poll_next(ctx)
    }
    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, FunctionError> {
        self.inner.snapshot_position()
    }
    fn restore_position(&mut self, position: &[u8]) -> Result<(), FunctionError> {
        self.inner.restore_position(position)
    }
}

/// A source that, once the inner source finished, stays open (idle) until processing time
/// `end_ms`: a rules stream that keeps the job checkpointing (periodic checkpoints stop when a
/// source finishes) while the payments run.
#[operator(new = false)]
#[derive(Clone)]
struct OpenUntil<S> {
    inner: S,
    end_ms: i64,
}

impl<T, S: SourceFunction<T>> SourceFunction<T> for OpenUntil<S> {
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.inner.open(ctx)
    }
    fn poll_next(&mut self, ctx: &mut SourceContext<'_, T>) -> Result<SourcePoll, FunctionError> {
        let now = ctx.current_processing_time();
        Ok(match self.inner.poll_next(ctx)? {
            SourcePoll::Finished if now < self.end_ms => SourcePoll::Idle,
            other => other,
        })
    }
    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, FunctionError> {
        self.inner.snapshot_position()
    }
    fn restore_position(&mut self, position: &[u8]) -> Result<(), FunctionError> {
        self.inner.restore_position(position)
    }
}

/// `count` payment numbers from one subtask (keep the operators up to `key_by` at parallelism
/// 1 too, so each user's payments stay in order), starting at processing time 50 ms, at most
/// `per_second` of them per second.
fn payment_numbers(env: &StreamEnv, count: u64, per_second: u64) -> DataStream<u64> {
    env.add_source(
        StartAt {
            inner: RateLimitedSource::new(GeneratorSource::new(Some(count), |g| g), per_second),
            start_ms: 50,
        },
        "payments",
    )
    .set_parallelism(1)
    .uid("payments")
}

/// The rules, from one subtask that stays open until processing time `end_ms`.
fn rule_stream(env: &StreamEnv, end_ms: i64) -> DataStream<Rule> {
    env.add_source(
        OpenUntil {
            inner: CollectionSource::new(rules()),
            end_ms,
        },
        "rules",
    )
    .set_parallelism(1)
    .uid("rules")
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(600), future)
        .await
        .expect("the job hung")
}

/// The committed lines of an exactly-once file sink directory, sorted.
fn committed_lines(dir: &std::path::Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).expect("output dir") {
        let entry = entry.expect("entry");
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("part file");
        lines.extend(text.lines().map(str::to_string));
    }
    lines.sort();
    lines
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn keyed_broadcast_state_matches_the_oracle() {
    const PAYMENTS: u64 = 2_000;
    let expected = expected_alerts(PAYMENTS);
    assert!(expected.iter().filter(|l| l.starts_with("alert")).count() > 100);
    for parallelism in [1, 2, 4] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        env.configure(|c| c.batch_records_max = 16);
        let rules = env
            .from_collection(rules())
            .broadcast_state(&thresholds())
            .with_state(&updates());
        let out = payment_numbers(&env, PAYMENTS, 1_000_000)
            .map(payment)
            .set_parallelism(1)
            .key_by(|p: &Payment| p.0)
            .connect_broadcast(rules)
            .process(Alerts::new())
            .collect_sink();
        within(env.execute("alerts")).await.expect("runs");
        let mut lines = out.take();
        lines.sort();
        assert_eq!(lines, expected, "parallelism {parallelism}");
    }
}

/// Passes payments above their category's threshold; every subtask reports each rule it
/// applies.
#[operator(new = false)]
#[derive(Clone)]
struct AboveThreshold {
    thresholds: MapStateDescriptor<u8, i64>,
}

impl BroadcastProcessFunction<Payment, Rule> for AboveThreshold {
    type Out = String;

    fn process_element(
        &mut self,
        (user, category, amount): Payment,
        ctx: &mut BroadcastReadOnlyContext<'_, '_>,
        out: &mut Collector<'_, String>,
    ) {
        let thresholds = ctx.broadcast_state(&self.thresholds);
        if thresholds.get(&category).is_some_and(|t| amount > *t) {
            out.collect(format!("above,{user},{category},{amount}"));
        }
    }

    fn process_broadcast_element(
        &mut self,
        (category, threshold): Rule,
        ctx: &mut BroadcastContext<'_, '_>,
        out: &mut Collector<'_, String>,
    ) {
        let mut thresholds = ctx.broadcast_state(&self.thresholds);
        match threshold {
            Some(t) => thresholds.put(category, t),
            None => thresholds.remove(&category),
        };
        out.collect(format!("rule,{category},{}", thresholds.len()));
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn non_keyed_broadcast_state_matches_the_oracle() {
    const PAYMENTS: u64 = 2_000;
    let mut thresholds = BTreeMap::new();
    let mut rule_lines = Vec::new();
    for (category, threshold) in rules() {
        match threshold {
            Some(t) => thresholds.insert(category, t),
            None => thresholds.remove(&category),
        };
        rule_lines.push(format!("rule,{category},{}", thresholds.len()));
    }
    let above: Vec<String> = (0..PAYMENTS)
        .map(payment)
        .filter(|(_, c, a)| thresholds.get(c).is_some_and(|t| a > t))
        .map(|(u, c, a)| format!("above,{u},{c},{a}"))
        .collect();
    for parallelism in [1u32, 2, 4] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        env.configure(|c| c.batch_records_max = 16);
        let rules = env
            .from_collection(rules())
            .broadcast_state(&self::thresholds());
        let out = payment_numbers(&env, PAYMENTS, 1_000_000)
            .map(payment)
            .set_parallelism(1)
            .rebalance()
            .connect_broadcast(rules)
            .process(AboveThreshold {
                thresholds: self::thresholds(),
            })
            .collect_sink();
        within(env.execute("above")).await.expect("runs");
        let mut lines = out.take();
        lines.sort();
        // Every subtask applied every rule, in order.
        let mut expected: Vec<String> = rule_lines
            .iter()
            .flat_map(|line| std::iter::repeat_n(line.clone(), parallelism as usize))
            .chain(above.iter().cloned())
            .collect();
        expected.sort();
        assert_eq!(lines, expected, "parallelism {parallelism}");
    }
}

/// Reads a broadcast state the stream did not declare.
#[operator(new = false)]
#[derive(Clone)]
struct Undeclared;

impl BroadcastProcessFunction<u32, u32> for Undeclared {
    type Out = u32;
    fn process_element(
        &mut self,
        value: u32,
        ctx: &mut BroadcastReadOnlyContext<'_, '_>,
        out: &mut Collector<'_, u32>,
    ) {
        let limits = MapStateDescriptor::<u32, u32>::new("limits");
        if !ctx.broadcast_state(&limits).contains(&value) {
            out.collect(value);
        }
    }
    fn process_broadcast_element(
        &mut self,
        _value: u32,
        _ctx: &mut BroadcastContext<'_, '_>,
        _out: &mut Collector<'_, u32>,
    ) {
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn undeclared_or_conflicting_broadcast_state_fails_with_a_clear_error() {
    let env = StreamEnv::new();
    let rules = env
        .from_collection(vec![1u32])
        .broadcast_state(&MapStateDescriptor::<u32, u32>::new("other"));
    env.from_collection(vec![1u32, 2])
        .connect_broadcast(rules)
        .process(Undeclared)
        .collect_sink();
    let error = within(env.execute("undeclared")).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("broadcast state 'limits' is not declared"),
        "{error}"
    );

    let env = StreamEnv::new();
    let rules = env
        .from_collection(vec![1u32])
        .broadcast_state(&MapStateDescriptor::<u32, u32>::new("limits"))
        .with_state(&MapStateDescriptor::<u32, String>::new("limits"));
    env.from_collection(vec![1u32])
        .connect_broadcast(rules)
        .process(Undeclared)
        .collect_sink();
    let error = within(env.execute("conflicting")).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("broadcast state 'limits' is declared as BroadcastState<u32, u32> and as"),
        "{error}"
    );
}

static FAILED_ONCE: AtomicBool = AtomicBool::new(false);

/// Broadcast state comes back from the checkpoint after a failure: the rules source has emitted
/// its rules before the checkpoint and does not emit them again, so every alert after the
/// restart depends on restored broadcast state (as the summaries do).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn broadcast_state_survives_a_failure_and_restart() {
    const PAYMENTS: u64 = 3_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.enable_checkpointing(20);
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 2,
        delay_ms: 10,
    });
    let rules = rule_stream(&env, 2_000)
        .broadcast_state(&thresholds())
        .with_state(&updates());
    payment_numbers(&env, PAYMENTS, 10_000)
        .map(|g: u64| {
            if g == 2_000 && !FAILED_ONCE.swap(true, Ordering::SeqCst) {
                panic!("injected failure at payment {g}");
            }
            g
        })
        .set_parallelism(1)
        .map(payment)
        .set_parallelism(1)
        .key_by(|p: &Payment| p.0)
        .connect_broadcast(rules)
        .process(Alerts::new())
        .uid("alerts")
        .write_exactly_once(dir.path().join("out"), |line: &String| line.clone());
    let result = within(env.execute("alerts with failure"))
        .await
        .expect("recovers");
    assert_eq!(result.restarts, 1);
    assert!(
        result
            .restored_from
            .as_deref()
            .is_some_and(|r| r.starts_with("memory:chk-")),
        "restored from {:?}",
        result.restored_from
    );
    assert_eq!(
        committed_lines(&dir.path().join("out")),
        expected_alerts(PAYMENTS)
    );
}

/// A savepoint taken at one parallelism restores at another: every new subtask gets one copy of
/// the broadcast state (the rules are not sent again), keyed state and timers move by key group.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn broadcast_state_restores_from_a_savepoint_at_another_parallelism() {
    const PAYMENTS: u64 = 3_000;
    for (before, after) in [(2, 3), (4, 1)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let build = |parallelism: u32| {
            let env = StreamEnv::new();
            env.set_parallelism(parallelism);
            env.enable_checkpointing(1_000_000);
            let rules = rule_stream(&env, 3_000)
                .broadcast_state(&thresholds())
                .with_state(&updates());
            payment_numbers(&env, PAYMENTS, 4_000)
                .map(payment)
                .set_parallelism(1)
                .key_by(|p: &Payment| p.0)
                .connect_broadcast(rules)
                .process(Alerts::new())
                .uid("alerts")
                .write_exactly_once(out.clone(), |line: &String| line.clone())
                .uid("sink");
            env
        };
        let first = build(before);
        let handle = first
            .execute_async("before savepoint")
            .await
            .expect("starts");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let savepoint = within(handle.stop_with_savepoint(dir.path().join("savepoints")))
            .await
            .expect("savepoint");
        let stopped = within(handle.join()).await.expect("stops");
        assert_eq!(stopped.status, JobStatus::Canceled);
        let committed = committed_lines(&out);
        assert!(
            !committed.is_empty() && committed.iter().all(|l| l.starts_with("alert")),
            "{before} -> {after}: the first job committed alerts only: {} lines",
            committed.len()
        );

        let second = build(after);
        second.restore_from(&savepoint, false);
        let result = within(second.execute("after savepoint"))
            .await
            .expect("restores");
        assert_eq!(
            result.restored_from.as_deref(),
            Some(savepoint.to_str().expect("utf-8"))
        );
        assert_eq!(
            committed_lines(&out),
            expected_alerts(PAYMENTS),
            "{before} -> {after}"
        );
    }
}

/// Totals per user; a broadcast `reset` reports and clears every user's total through
/// `apply_to_keyed_state`; a timer at the end of input reports what each user added since.
#[operator(new = false)]
#[derive(Clone)]
struct Resets {
    totals: ValueState<i64>,
}

impl KeyedBroadcastProcessFunction for Resets {
    type Key = u32;
    type In1 = Payment;
    type In2 = String;
    type Out = String;

    fn process_element(
        &mut self,
        (_, _, amount): Payment,
        ctx: &mut KeyedBroadcastReadOnlyContext<'_, u32>,
        _out: &mut Collector<'_, String>,
    ) {
        let total = self.totals.value(ctx).unwrap_or(0) + amount;
        self.totals.update(ctx, total);
        ctx.register_event_time_timer(i64::MAX);
    }

    fn process_broadcast_element(
        &mut self,
        command: String,
        ctx: &mut KeyedBroadcastContext<'_, '_, u32>,
        out: &mut Collector<'_, String>,
    ) {
        assert_eq!(command, "reset");
        let totals = &self.totals;
        ctx.apply_to_keyed_state(totals, |user, state| {
            out.collect(format!("reset,{user},{}", totals.value(state).unwrap_or(0)));
            totals.clear(state);
        });
    }

    fn on_timer(
        &mut self,
        _timestamp: i64,
        ctx: &mut KeyedBroadcastReadOnlyContext<'_, u32>,
        out: &mut Collector<'_, String>,
    ) {
        let total = self.totals.value(ctx).unwrap_or(0);
        out.collect(format!("total,{},{total}", ctx.current_key()));
    }
}

/// `apply_to_keyed_state` visits every user with a total on every subtask, on both backends
/// (LMDB with a 4-entry cache: most totals were written back, a few are cached), in key group
/// order; what it clears is gone for the elements after it. Payments `0..400` come at 0 ms, the
/// reset at 50 ms, payments `400..600` at 100 ms.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn apply_to_keyed_state_reaches_every_key_on_both_backends() {
    use eichhorn::state::{StateBackendKind, key_group_for_key};
    let before: Vec<Payment> = (0..400).map(payment).collect();
    let after: Vec<Payment> = (400..600).map(payment).collect();
    let mut reset: BTreeMap<u32, i64> = BTreeMap::new();
    for (user, _, amount) in &before {
        *reset.entry(*user).or_default() += amount;
    }
    let mut totals: BTreeMap<u32, i64> = reset.keys().map(|user| (*user, 0)).collect();
    for (user, _, amount) in &after {
        *totals.entry(*user).or_default() += amount;
    }
    let mut expected: Vec<String> = reset
        .iter()
        .map(|(user, total)| format!("reset,{user},{total}"))
        .chain(
            totals
                .iter()
                .map(|(user, total)| format!("total,{user},{total}")),
        )
        .collect();
    expected.sort();
    let mut key_order: Vec<u32> = reset.keys().copied().collect();
    // Within a key group, keys come in the order of their postcard bytes.
    key_order.sort_by_key(|user| {
        (
            key_group_for_key(user, 128).0,
            postcard::to_allocvec(user).expect("encodes"),
        )
    });
    let dir = tempfile::tempdir().expect("tempdir");
    for backend in [StateBackendKind::Memory, StateBackendKind::Lmdb] {
        for parallelism in [1u32, 2, 4] {
            let env = StreamEnv::new();
            env.set_parallelism(parallelism);
            env.set_state_backend(backend);
            env.configure(|c| {
                c.batch_records_max = 16;
                c.state_cache_entries = 4;
                c.local_state_dir = Some(dir.path().join(format!("{backend:?}-{parallelism}")));
            });
            let commands = MapStateDescriptor::<String, ()>::new("commands");
            let resets = env
                .add_source(
                    StartAt {
                        inner: CollectionSource::new(vec!["reset".to_string()]),
                        start_ms: 50,
                    },
                    "resets",
                )
                .set_parallelism(1)
                .broadcast_state(&commands);
            let first = env.from_collection(before.clone()).set_parallelism(1);
            let second = env
                .add_source(
                    StartAt {
                        inner: CollectionSource::new(after.clone()),
                        start_ms: 100,
                    },
                    "later payments",
                )
                .set_parallelism(1);
            let out = first
                .union([second])
                .key_by(|p: &Payment| p.0)
                .connect_broadcast(resets)
                .process(Resets {
                    totals: ValueState::new("total"),
                })
                .collect_sink();
            within(env.execute("resets")).await.expect("runs");
            let lines = out.take();
            if parallelism == 1 {
                let visited: Vec<u32> = lines
                    .iter()
                    .filter_map(|line| line.strip_prefix("reset,"))
                    .map(|rest| rest.split(',').next().expect("user").parse().expect("u32"))
                    .collect();
                assert_eq!(visited, key_order, "{backend:?}: key group order");
            }
            let mut lines = lines;
            lines.sort();
            assert_eq!(lines, expected, "{backend:?} at parallelism {parallelism}");
        }
    }
}
