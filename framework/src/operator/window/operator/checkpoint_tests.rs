//! Checkpoints of the window operator: a run snapshotted mid-stream through the node hooks and
//! restored into fresh operators (one, or three owning a third of the key groups each) gives
//! what the uninterrupted run gives, on every path (panes, sessions, generic with merging,
//! timers and trigger state), with either backend for trigger state.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use super::tests::{
    Described, Elements, Event, Opaque, Step, SumCount, assigners, key_of, steps, sum_and_latest,
};
use super::*;
use crate::checkpoint::{CheckpointBarrier, CheckpointId, CheckpointKind};
use crate::operator::testing::Harness;
use crate::operator::window::TimeWindow;
use crate::operator::window::panes::PANES_STATE;
use crate::operator::window::sessions::SESSIONS_STATE;
use crate::operator::window::trigger::{
    ContinuousEventTimeTrigger, CountTrigger, ProcessingTimeTrigger, PurgingTrigger,
    TriggerContext, TriggerResult, WindowScope,
};
use crate::operator::window::{
    AggregateProcessWindow, AggregateWindow, BoxedEvictor, CountEvictor, EvictingWindow,
    ProcessWindow, ReduceWindow, TimeDomain,
};
use crate::operator::{Chained, StreamElement};
use crate::state::snapshot::redistribute;
use crate::state::{
    KeyGroupRange, KeyedBackendConfig, OperatorSnapshot, StateBackendKind, ValueState,
    key_group_for_key, subtask_for_key_group,
};

const MAX_PARALLELISM: u32 = 128;

/// What a run (or a part of one) emitted: its records, late and dropped record counts and its
/// failure.
#[derive(Debug, Clone, PartialEq)]
struct Outcome<O> {
    records: Vec<O>,
    late: u64,
    dropped: u64,
    failure: Option<String>,
}

impl<O: Ord> Outcome<O> {
    /// The parts of a run split by key: the records of all parts, sorted (the order across keys
    /// depends on the split), the counts summed, the first failure.
    fn union(parts: Vec<Self>) -> Self {
        let mut union = Self {
            records: Vec::new(),
            late: 0,
            dropped: 0,
            failure: None,
        };
        for part in parts {
            union.records.extend(part.records);
            union.late += part.late;
            union.dropped += part.dropped;
            union.failure = union.failure.or(part.failure);
        }
        union.records.sort();
        union
    }
}

/// One more step kind: processing time advances to `t` (records are processed at the latest).
#[derive(Debug, Clone)]
enum Input {
    Step(Step),
    ProcessingTime(i64),
}

fn event_time(steps: &[Step]) -> Vec<Input> {
    steps.iter().cloned().map(Input::Step).collect()
}

/// Where trigger state lives in a run.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Memory,
    Lmdb,
}

fn backend_config(
    backend: Backend,
    dir: &Path,
    name: &str,
    parts: u32,
    index: u32,
) -> KeyedBackendConfig {
    let key_groups = KeyGroupRange::for_subtask(MAX_PARALLELISM, parts, index);
    match backend {
        Backend::Memory => KeyedBackendConfig {
            key_groups,
            ..KeyedBackendConfig::memory(MAX_PARALLELISM)
        },
        // A cache of 4 entries: most accesses miss, and write-backs happen.
        Backend::Lmdb => KeyedBackendConfig {
            kind: StateBackendKind::Lmdb,
            local_dir: dir.join(name),
            max_parallelism: MAX_PARALLELISM,
            key_groups,
            cache_entries: 4,
            lmdb_map_size: 16 << 20,
        },
    }
}

/// A harness around `operator`, its state initialized from `init`.
fn start<Op: OneInputOperator<Event>>(
    mut operator: Op,
    init: &mut StateInitContext,
) -> Harness<Event, Op> {
    operator.initialize_state(init).expect("initializes");
    Harness::new(operator)
}

/// Feeds `inputs` (the records of keys `owns` accepts) at processing time `now`; returns the
/// highest watermark fed and the processing time reached.
fn feed<Op: OneInputOperator<Event>>(
    harness: &mut Harness<Event, Op>,
    inputs: &[Input],
    owns: &dyn Fn(u8) -> bool,
    mut now: i64,
) -> (i64, i64) {
    let mut watermark = i64::MIN;
    for input in inputs {
        match input {
            Input::Step(Step::Records(events)) => {
                let records = events
                    .iter()
                    .filter(|event| owns(event.0))
                    .map(|event| Record::with_timestamp(*event, event.1))
                    .collect();
                harness.process(now, records);
            }
            Input::Step(Step::Watermark(timestamp)) => {
                watermark = watermark.max(*timestamp);
                harness
                    .node
                    .process_watermark(Watermark::new(*timestamp), &mut harness.cx);
            }
            Input::ProcessingTime(t) => {
                now = *t;
                harness.advance_processing_time(now);
            }
        }
    }
    (watermark, now)
}

/// What `harness` emitted so far (records only), with its counters and failure.
fn outcome<Op: OneInputOperator<Event>>(harness: &mut Harness<Event, Op>) -> Outcome<Op::Out> {
    let mut metrics = Vec::new();
    harness.node.metrics(&mut metrics);
    let counters = metrics[0].1;
    let records = harness
        .take()
        .into_iter()
        .filter_map(|element| match element {
            StreamElement::Record(record) => Some(record.value),
            _ => None,
        })
        .collect();
    Outcome {
        records,
        late: counters.late_records,
        dropped: counters.dropped_records,
        failure: harness.cx.failure.take().map(|failure| failure.message),
    }
}

/// Ends the input: the final watermark, then the end of input.
fn finish<Op: OneInputOperator<Event>>(harness: &mut Harness<Event, Op>) -> Outcome<Op::Out> {
    harness
        .node
        .process_watermark(Watermark::MAX, &mut harness.cx);
    harness.node.end_of_input(&mut harness.cx);
    outcome(harness)
}

fn uninterrupted<Op: OneInputOperator<Event>>(operator: Op, inputs: &[Input]) -> Outcome<Op::Out> {
    let mut init = StateInitContext::empty(MAX_PARALLELISM);
    let mut harness = start(operator, &mut init);
    feed(&mut harness, inputs, &|_| true, 0);
    finish(&mut harness)
}

/// How a run is interrupted.
#[derive(Debug, Clone, Copy)]
struct Interruption {
    /// Inputs before the checkpoint.
    cut: usize,
    /// Inputs before an earlier checkpoint, restored from and run up to `cut` by one subtask.
    earlier_cut: Option<usize>,
    /// Subtasks after the (last) restore, each owning its share of the key groups.
    parts: u32,
    /// Whether the restored subtasks first see the watermark reached before the checkpoint
    /// again, as replayed sources produce it: then they must continue exactly as the
    /// uninterrupted run. Without it they start at `i64::MIN`, as Flink's restored operators.
    refeed_watermark: bool,
    /// The backend of the first run and of the last restore, and of the restore between them
    /// (with `earlier_cut`): checkpoints of either restore into the other.
    backends: (Backend, Backend),
}

/// Snapshots the operator of `harness` through its node's hook and returns the snapshot after
/// a round trip through its stored form.
fn checkpoint<Op: OneInputOperator<Event>>(
    harness: &mut Harness<Event, Op>,
    id: u64,
) -> OperatorSnapshot {
    let barrier = CheckpointBarrier {
        id: CheckpointId(id),
        kind: CheckpointKind::Checkpoint,
    };
    harness.node.snapshot_state(barrier, &mut harness.cx);
    let (_, pending) = harness.cx.snapshots.pop().expect("a snapshot");
    let snapshot = pending.complete().expect("completes");
    let stored = postcard::to_allocvec(&snapshot).expect("encodes");
    postcard::from_bytes(&stored).expect("decodes")
}

/// A subtask `index` of `parts` restored from `snapshot` (its share), at processing time `now`,
/// fed `watermark` first if it is given.
fn restore<Op: OneInputOperator<Event>>(
    make: &dyn Fn() -> Op,
    snapshot: &OperatorSnapshot,
    config: KeyedBackendConfig,
    (parts, index): (u32, u32),
    now: i64,
    watermark: Option<i64>,
) -> Harness<Event, Op> {
    let share = redistribute(
        std::slice::from_ref(snapshot),
        MAX_PARALLELISM,
        parts,
        index,
    )
    .expect("redistributes");
    let mut init = StateInitContext::restored(share, CheckpointId(1), config);
    let mut harness = start(make(), &mut init);
    harness.cx.now_ms = now;
    if let Some(watermark) = watermark.filter(|w| *w > i64::MIN) {
        feed(
            &mut harness,
            &[Input::Step(Step::Watermark(watermark))],
            &|_| true,
            now,
        );
    }
    harness
}

/// Runs `inputs[..cut]` (with a checkpoint and a restore at `earlier_cut` first, if set),
/// snapshots the operator, restores the snapshot into `parts` fresh operators and runs the rest
/// of the inputs on each (records of the keys it owns); returns the outcome before the (last)
/// checkpoint and the outcome of each restored part.
fn interrupted<Op: OneInputOperator<Event>>(
    make: &dyn Fn() -> Op,
    inputs: &[Input],
    how: Interruption,
) -> (Outcome<Op::Out>, Vec<Outcome<Op::Out>>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first_backend, between_backend) = how.backends;
    let config = |name: &str, parts: u32, index: u32| {
        let backend = if name == "between" {
            between_backend
        } else {
            first_backend
        };
        backend_config(backend, dir.path(), name, parts, index)
    };
    let refeed = |watermark: i64| how.refeed_watermark.then_some(watermark);
    let mut init = StateInitContext::restored(
        OperatorSnapshot::default(),
        CheckpointId(0),
        config("first", 1, 0),
    );
    let mut harness = start(make(), &mut init);
    let first_cut = how.earlier_cut.unwrap_or(how.cut).min(how.cut);
    let (mut watermark, mut now) = feed(&mut harness, &inputs[..first_cut], &|_| true, 0);
    let mut before = Outcome {
        records: Vec::new(),
        late: 0,
        dropped: 0,
        failure: None,
    };
    if how.earlier_cut.is_some() {
        let snapshot = checkpoint(&mut harness, 1);
        before = outcome(&mut harness);
        drop(harness);
        harness = restore(
            make,
            &snapshot,
            config("between", 1, 0),
            (1, 0),
            now,
            refeed(watermark),
        );
        let (fed, reached) = feed(&mut harness, &inputs[first_cut..how.cut], &|_| true, now);
        watermark = watermark.max(fed);
        now = reached;
    }
    let snapshot = checkpoint(&mut harness, 2);
    let last = outcome(&mut harness);
    before.records.extend(last.records);
    before.late += last.late;
    before.dropped += last.dropped;
    before.failure = before.failure.or(last.failure);
    drop(harness);

    let restored = (0..how.parts)
        .map(|index| {
            let name = format!("after-{index}");
            let part = (how.parts, index);
            let mut harness = restore(
                make,
                &snapshot,
                config(&name, how.parts, index),
                part,
                now,
                refeed(watermark),
            );
            let owns = move |key: u8| {
                let group = key_group_for_key(&key, MAX_PARALLELISM);
                subtask_for_key_group(group, MAX_PARALLELISM, how.parts) == index
            };
            feed(&mut harness, &inputs[how.cut..], &owns, now);
            finish(&mut harness)
        })
        .collect();
    (before, restored)
}

/// The uninterrupted run, and checks that interrupting it at `cut` (restoring into one and
/// into three subtasks, and restoring twice) changes nothing. `backend` is used throughout;
/// [`check_restores_across`] mixes two.
fn check_restores<Op>(
    make: &dyn Fn() -> Op,
    inputs: &[Input],
    cut: usize,
    backend: Backend,
) -> Outcome<Op::Out>
where
    Op: OneInputOperator<Event>,
    Op::Out: Ord + Clone + std::fmt::Debug,
{
    check_restores_across(make, inputs, cut, (backend, backend))
}

/// [`check_restores`] with the first run and the last restore on `backends.0`, the restore
/// between (when restoring twice) on `backends.1`.
fn check_restores_across<Op>(
    make: &dyn Fn() -> Op,
    inputs: &[Input],
    cut: usize,
    backends: (Backend, Backend),
) -> Outcome<Op::Out>
where
    Op: OneInputOperator<Event>,
    Op::Out: Ord + Clone + std::fmt::Debug,
{
    let whole = uninterrupted(make(), inputs);
    let one = Interruption {
        cut,
        earlier_cut: None,
        parts: 1,
        refeed_watermark: true,
        backends,
    };
    let joined = |(mut before, after): (Outcome<Op::Out>, Vec<Outcome<Op::Out>>)| {
        for part in after {
            before.records.extend(part.records);
            before.late += part.late;
            before.dropped += part.dropped;
            before.failure = before.failure.or(part.failure);
        }
        before
    };
    assert_eq!(
        joined(interrupted(make, inputs, one)),
        whole,
        "restored into one subtask at {cut} ({backends:?})"
    );
    let twice = Interruption {
        earlier_cut: Some(cut / 2),
        ..one
    };
    assert_eq!(
        joined(interrupted(make, inputs, twice)),
        whole,
        "restored at {} and at {cut} ({backends:?})",
        cut / 2
    );
    let (before, after) = interrupted(make, inputs, Interruption { parts: 3, ..one });
    let mut parts = after;
    parts.push(before);
    assert_eq!(
        Outcome::union(parts),
        Outcome::union(vec![whole.clone()]),
        "restored into three subtasks at {cut} ({backends:?})"
    );
    whole
}

/// A restore into one subtask that starts at watermark `i64::MIN` (no watermark fed again):
/// records after the restore and before the next watermark are not late, as in Flink. With
/// `earlier_cut`, the run was restored from `i64::MIN` there too.
fn restored_from_min<Op>(
    make: &dyn Fn() -> Op,
    inputs: &[Input],
    cut: usize,
    earlier_cut: Option<usize>,
    backends: (Backend, Backend),
) -> Outcome<Op::Out>
where
    Op: OneInputOperator<Event>,
    Op::Out: Ord,
{
    let how = Interruption {
        cut,
        earlier_cut,
        parts: 1,
        refeed_watermark: false,
        backends,
    };
    let (before, after) = interrupted(make, inputs, how);
    let mut parts = after;
    parts.push(before);
    Outcome::union(parts)
}

/// Checks every function kind with `assigner` on its fast path (if it has one) and on the
/// generic path: interrupted runs equal the uninterrupted one, and after a restore from
/// `i64::MIN` the fast path still behaves exactly like the generic path (Flink's semantics,
/// with its timers checkpointed). Each run keeps its state on `backends` (see
/// [`check_restores_across`]); the uninterrupted reference runs in memory.
fn check_all_functions(
    assigner: WindowAssigner,
    lateness: i64,
    steps: &[Step],
    cut: usize,
    backends: (Backend, Backend),
) {
    fn paths<F: WindowFunctionCore<u8, Event>>(
        assigner: WindowAssigner,
        lateness: i64,
        function: F,
        inputs: &[Input],
        cut: usize,
        backends: (Backend, Backend),
    ) where
        F::Out: Ord + Clone + std::fmt::Debug,
    {
        let fast = || {
            WindowOperator::<u8, Event, _, _, _>::new(
                assigner,
                key_of as fn(&Event) -> u8,
                function.clone(),
                DefaultTrigger::for_assigner(&assigner),
                lateness,
                None,
            )
        };
        let generic = || {
            WindowOperator::<u8, Event, _, _, _>::new(
                assigner,
                key_of as fn(&Event) -> u8,
                function.clone(),
                Opaque,
                lateness,
                None,
            )
        };
        let fast_whole = check_restores_across(&fast, inputs, cut, backends);
        let generic_whole = check_restores_across(&generic, inputs, cut, backends);
        assert_eq!(fast_whole, generic_whole);
        for earlier_cut in [None, Some(cut / 2)] {
            assert_eq!(
                restored_from_min(&fast, inputs, cut, earlier_cut, backends),
                restored_from_min(&generic, inputs, cut, earlier_cut, backends),
                "fast and generic paths after a restore from i64::MIN at {cut} (and {earlier_cut:?})"
            );
        }
    }
    let inputs = event_time(steps);
    let cut = cut.min(inputs.len());
    paths(
        assigner,
        lateness,
        AggregateWindow(SumCount),
        &inputs,
        cut,
        backends,
    );
    let reduce = ReduceWindow(sum_and_latest as fn(Event, Event) -> Event);
    paths(assigner, lateness, reduce, &inputs, cut, backends);
    let described = AggregateProcessWindow(AggregateWindow(SumCount), Described);
    paths(assigner, lateness, described, &inputs, cut, backends);
    paths(
        assigner,
        lateness,
        ProcessWindow(Elements),
        &inputs,
        cut,
        backends,
    );
    let evicting = EvictingWindow {
        function: ProcessWindow(Elements),
        evictor: BoxedEvictor::new(CountEvictor::of(2)),
    };
    paths(assigner, lateness, evicting, &inputs, cut, backends);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]

    #[test]
    fn restored_windows_go_on_as_if_never_stopped(
        assigner in assigners(),
        lateness in prop_oneof![Just(0i64), 0i64..20],
        steps in steps(),
        cut in 0usize..80,
    ) {
        check_all_functions(assigner, lateness, &steps, cut, (Backend::Memory, Backend::Memory));
    }
}

/// Runs in LMDB restored in LMDB (from one checkpoint), and, restoring twice, an LMDB
/// checkpoint restored in memory and a memory checkpoint restored in LMDB.
const ACROSS: (Backend, Backend) = (Backend::Lmdb, Backend::Memory);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// With the windows in LMDB (a cache of 4 entries: most accesses miss, write-backs are
    /// frequent), and with checkpoints moving between the backends, restored runs go on as the
    /// uninterrupted run in memory.
    #[test]
    fn lmdb_windows_restore_as_memory_ones(
        assigner in assigners(),
        lateness in prop_oneof![Just(0i64), 0i64..20],
        steps in steps(),
        cut in 0usize..80,
    ) {
        check_all_functions(assigner, lateness, &steps, cut, ACROSS);
    }
}

/// Deterministic records: `count` events of keys `0..keys` drifting forward in time with
/// jitter, a watermark every `every` records.
fn drifting(count: u64, keys: u64, every: u64) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut batch = Vec::new();
    for i in 0..count {
        let mixed = crate::state::splitmix64(i);
        let key = (mixed % keys) as u8;
        let time = (i as i64) * 3 + ((mixed >> 20) % 11) as i64 - 5;
        batch.push((key, time, ((mixed >> 40) % 100) as i64));
        if (i + 1) % every == 0 {
            steps.push(Step::Records(std::mem::take(&mut batch)));
            steps.push(Step::Watermark(time - 4));
        }
    }
    if !batch.is_empty() {
        steps.push(Step::Records(batch));
    }
    steps
}

#[test]
fn the_fixed_windows_restore_at_every_cut() {
    let event = TimeDomain::EventTime;
    let steps = drifting(120, 7, 5);
    for assigner in [
        WindowAssigner::tumbling(event, 20, 0).expect("valid"),
        WindowAssigner::sliding(event, 30, 10, 0).expect("valid"),
        WindowAssigner::session(event, 8).expect("valid"),
    ] {
        for lateness in [0, 15] {
            for cut in 0..=steps.len() {
                check_all_functions(
                    assigner,
                    lateness,
                    &steps,
                    cut,
                    (Backend::Memory, Backend::Memory),
                );
            }
            // Fewer cuts with LMDB: each run opens a few environments.
            for cut in (0..=steps.len()).step_by(6) {
                check_all_functions(assigner, lateness, &steps, cut, ACROSS);
            }
        }
    }
}

#[test]
fn count_windows_keep_their_counts() {
    let steps = drifting(60, 5, 4);
    let inputs = event_time(&steps);
    let global = WindowAssigner::global();
    // `count_window(3)`: global windows, a purging count trigger.
    let tumbling = || {
        WindowOperator::<u8, Event, _, _, _>::new(
            global,
            key_of as fn(&Event) -> u8,
            ProcessWindow(Elements),
            PurgingTrigger::of(CountTrigger::of(3)),
            0,
            None,
        )
    };
    // `count_window_slide(3, 2)`: a count trigger and a count evictor.
    let sliding = || {
        WindowOperator::<u8, Event, _, _, _>::new(
            global,
            key_of as fn(&Event) -> u8,
            EvictingWindow {
                function: ProcessWindow(Elements),
                evictor: BoxedEvictor::new(CountEvictor::of(3)),
            },
            CountTrigger::of(2),
            0,
            None,
        )
    };
    let mut per_key = [0usize; 5];
    for step in &steps {
        if let Step::Records(events) = step {
            for event in events {
                per_key[usize::from(event.0)] += 1;
            }
        }
    }
    let full_windows: usize = per_key.iter().map(|n| n / 3).sum();
    for backend in [Backend::Memory, Backend::Lmdb] {
        for cut in 0..=inputs.len() {
            let whole = check_restores(&tumbling, &inputs, cut, backend);
            assert_eq!(
                whole.records.len(),
                full_windows,
                "every third record of a key fires"
            );
            check_restores(&sliding, &inputs, cut, backend);
        }
    }
}

/// A trigger with state of its own: fires when the values added to a window reach `threshold`
/// (then starts counting again), and at the window's end.
#[derive(Clone)]
struct SumTrigger {
    threshold: i64,
    sum: ValueState<i64>,
}

impl SumTrigger {
    fn new(threshold: i64) -> Self {
        Self {
            threshold,
            sum: ValueState::new("sum"),
        }
    }
}

impl Trigger<Event> for SumTrigger {
    fn on_element<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        element: &Event,
        _timestamp: Option<i64>,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        if window.max_timestamp() <= ctx.current_watermark() {
            return TriggerResult::Fire;
        }
        ctx.register_event_time_timer(window.max_timestamp());
        let sum = self.sum.value(ctx).unwrap_or(0) + element.2;
        if sum >= self.threshold {
            self.sum.clear(ctx);
            TriggerResult::Fire
        } else {
            self.sum.update(ctx, sum);
            TriggerResult::Continue
        }
    }

    fn on_event_time<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        time: i64,
        window: &TimeWindow,
        _ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        if time == window.max_timestamp() {
            TriggerResult::Fire
        } else {
            TriggerResult::Continue
        }
    }

    fn clear<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) {
        ctx.delete_event_time_timer(window.max_timestamp());
        self.sum.clear(ctx);
    }
}

#[test]
fn trigger_state_and_timers_are_restored() {
    let steps = drifting(90, 6, 5);
    let inputs = event_time(&steps);
    let event = TimeDomain::EventTime;
    let tumbling = WindowAssigner::tumbling(event, 40, 0).expect("valid");
    let sliding = WindowAssigner::sliding(event, 40, 20, 0).expect("valid");
    for assigner in [tumbling, sliding] {
        let custom = || {
            WindowOperator::<u8, Event, _, _, _>::new(
                assigner,
                key_of as fn(&Event) -> u8,
                AggregateWindow(SumCount),
                SumTrigger::new(150),
                10,
                None,
            )
        };
        let continuous = || {
            WindowOperator::<u8, Event, _, _, _>::new(
                assigner,
                key_of as fn(&Event) -> u8,
                ProcessWindow(Elements),
                ContinuousEventTimeTrigger::of(7),
                10,
                None,
            )
        };
        for backend in [Backend::Memory, Backend::Lmdb] {
            for cut in 0..=inputs.len() {
                let whole = check_restores(&custom, &inputs, cut, backend);
                assert!(whole.records.len() > 30, "{}", whole.records.len());
                check_restores(&continuous, &inputs, cut, backend);
            }
        }
    }
}

#[test]
fn processing_time_windows_keep_their_timers() {
    // Records at processing times 0, 10, 20, ... and a clock step after every second batch.
    let mut inputs = Vec::new();
    for (i, step) in drifting(80, 5, 4).into_iter().enumerate() {
        if let Step::Records(_) = step {
            inputs.push(Input::Step(step));
            if i % 4 == 2 {
                inputs.push(Input::ProcessingTime((i as i64) * 7));
            }
        }
    }
    let assigner = WindowAssigner::tumbling(TimeDomain::ProcessingTime, 30, 0).expect("valid");
    let make = || {
        WindowOperator::<u8, Event, _, _, _>::new(
            assigner,
            key_of as fn(&Event) -> u8,
            ProcessWindow(Elements),
            ProcessingTimeTrigger,
            0,
            None,
        )
    };
    for cut in 0..=inputs.len() {
        let whole = check_restores(&make, &inputs, cut, Backend::Memory);
        let fed: usize = inputs
            .iter()
            .map(|input| match input {
                Input::Step(Step::Records(events)) => events.len(),
                _ => 0,
            })
            .sum();
        let emitted: usize = whole.records.iter().map(|r| r.3.len()).sum();
        assert_eq!(emitted, fed, "every record is in one window");
    }
}

/// The snapshot of an operator after `steps`.
fn snapshot_after<Op: OneInputOperator<Event>>(operator: Op, steps: &[Step]) -> OperatorSnapshot {
    let mut init = StateInitContext::empty(MAX_PARALLELISM);
    let mut harness = start(operator, &mut init);
    feed(&mut harness, &event_time(steps), &|_| true, 0);
    let barrier = CheckpointBarrier {
        id: CheckpointId(1),
        kind: CheckpointKind::Checkpoint,
    };
    harness.node.snapshot_state(barrier, &mut harness.cx);
    let (_, pending) = harness.cx.snapshots.pop().expect("a snapshot");
    pending.complete().expect("completes")
}

fn restore_error<Op: OneInputOperator<Event>>(
    mut operator: Op,
    snapshot: OperatorSnapshot,
) -> String {
    let mut init = StateInitContext::restored(
        snapshot,
        CheckpointId(1),
        KeyedBackendConfig::memory(MAX_PARALLELISM),
    );
    match operator.initialize_state(&mut init) {
        Ok(()) => panic!("restored"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn damaged_or_foreign_state_is_an_error_naming_it() {
    let event = TimeDomain::EventTime;
    let steps = drifting(30, 4, 5);
    let cases: [(WindowAssigner, &str); 2] = [
        (
            WindowAssigner::tumbling(event, 20, 0).expect("valid"),
            PANES_STATE,
        ),
        (
            WindowAssigner::session(event, 8).expect("valid"),
            SESSIONS_STATE,
        ),
    ];
    for (assigner, state) in cases {
        let make = || {
            WindowOperator::<u8, Event, _, _, _>::new(
                assigner,
                key_of as fn(&Event) -> u8,
                AggregateWindow(SumCount),
                DefaultTrigger::for_assigner(&assigner),
                0,
                None,
            )
        };
        let snapshot = snapshot_after(make(), &steps[..steps.len() - 1]);
        assert!(
            snapshot.keyed.state_index(state).is_some(),
            "{:?}",
            snapshot.keyed.states
        );

        // A value that does not decode.
        let mut damaged = snapshot.clone();
        let index = damaged.keyed.state_index(state).expect("state");
        let entry = damaged
            .keyed
            .entries
            .iter_mut()
            .find(|e| e.state == index)
            .expect("an entry");
        entry.value = vec![0xff; 3];
        let error = restore_error(make(), damaged);
        assert!(
            error.contains("corrupt") && error.contains(state),
            "{error}"
        );

        // A key in the wrong key group.
        let mut moved = snapshot.clone();
        let entry = moved
            .keyed
            .entries
            .iter_mut()
            .find(|e| e.state == index)
            .expect("an entry");
        entry.key_group = (entry.key_group + 1) % MAX_PARALLELISM;
        moved.keyed.entries.sort();
        let error = restore_error(make(), moved);
        assert!(
            error.contains("key group") && error.contains(state),
            "{error}"
        );

        // The same windows on the generic path do not take the fast path's state.
        let generic = WindowOperator::<u8, Event, _, _, _>::new(
            assigner,
            key_of as fn(&Event) -> u8,
            AggregateWindow(SumCount),
            Opaque,
            0,
            None,
        );
        let error = restore_error(generic, snapshot.clone());
        assert!(error.contains(state), "{error}");

        // Another accumulator type is refused.
        let other = WindowOperator::<u8, Event, _, _, _>::new(
            assigner,
            key_of as fn(&Event) -> u8,
            ReduceWindow(sum_and_latest as fn(Event, Event) -> Event),
            DefaultTrigger::for_assigner(&assigner),
            0,
            None,
        );
        let error = restore_error(other, snapshot);
        assert!(
            error.contains(state) && error.contains("(i64, u64)"),
            "{error}"
        );
    }
}

#[test]
fn a_pane_off_the_grid_is_refused() {
    let event = TimeDomain::EventTime;
    let steps = drifting(30, 4, 5);
    let size_20 = WindowAssigner::tumbling(event, 20, 0).expect("valid");
    let make = |assigner: WindowAssigner| {
        WindowOperator::<u8, Event, _, _, _>::new(
            assigner,
            key_of as fn(&Event) -> u8,
            AggregateWindow(SumCount),
            DefaultTrigger::for_assigner(&assigner),
            0,
            None,
        )
    };
    let snapshot = snapshot_after(make(size_20), &steps[..steps.len() - 1]);
    let size_30 = WindowAssigner::tumbling(event, 30, 0).expect("valid");
    let error = restore_error(make(size_30), snapshot);
    assert!(error.contains("not a pane start"), "{error}");
}

#[test]
fn trigger_state_is_stored_in_the_key_group_of_its_key() {
    let steps = drifting(40, 9, 50);
    let assigner = WindowAssigner::tumbling(TimeDomain::EventTime, 1_000, 0).expect("valid");
    let make = || {
        WindowOperator::<u8, Event, _, _, _>::new(
            assigner,
            key_of as fn(&Event) -> u8,
            AggregateWindow(SumCount),
            SumTrigger::new(1_000_000),
            0,
            None,
        )
    };
    let snapshot = snapshot_after(make(), &steps);
    let index = snapshot
        .keyed
        .state_index("_trigger/sum")
        .expect("the trigger's state, under its prefix");
    let mut seen = 0;
    for entry in snapshot.keyed.entries.iter().filter(|e| e.state == index) {
        let scope: WindowScope<u8> = postcard::from_bytes(&entry.key).expect("a scope");
        assert_eq!(
            key_group_for_key(&scope.key, MAX_PARALLELISM).0,
            entry.key_group
        );
        seen += 1;
    }
    let mut windows = std::collections::BTreeSet::new();
    for step in &steps {
        if let Step::Records(events) = step {
            windows.extend(events.iter().map(|e| (e.0, e.1.div_euclid(1_000))));
        }
    }
    assert_eq!(seen, windows.len(), "one sum per key and window");
}

/// After a restore from `i64::MIN`, a record the original run found late brings back a sliding
/// window whose state was cleaned up before the checkpoint, while a later window still keeps a
/// pane of it: the window emits only the new record, as on the generic path.
#[test]
fn a_window_cleaned_before_the_checkpoint_comes_back_with_new_records_only() {
    // Windows of 8 sliding by 4 from 1: [-3, 5) and [1, 9) share the pane [1, 5).
    let assigner = WindowAssigner::sliding(TimeDomain::EventTime, 8, 4, 1).expect("valid");
    let steps = vec![
        Step::Records(vec![(0, 3, 5), (0, 2, 7)]),
        // [-3, 5) fires and is cleaned up (lateness 7); [1, 9) fires and is kept.
        Step::Watermark(12),
        // After the restore: late in the original run, not for the restarted watermark.
        Step::Records(vec![(0, -2, 100)]),
        Step::Watermark(13),
    ];
    let inputs = event_time(&steps);
    let fast = || {
        WindowOperator::<u8, Event, _, _, _>::new(
            assigner,
            key_of as fn(&Event) -> u8,
            AggregateWindow(SumCount),
            DefaultTrigger::for_assigner(&assigner),
            7,
            None,
        )
    };
    let generic = || {
        WindowOperator::<u8, Event, _, _, _>::new(
            assigner,
            key_of as fn(&Event) -> u8,
            AggregateWindow(SumCount),
            Opaque,
            7,
            None,
        )
    };
    for backends in [(Backend::Memory, Backend::Memory), ACROSS] {
        let fast = restored_from_min(&fast, &inputs, 2, None, backends);
        let generic = restored_from_min(&generic, &inputs, 2, None, backends);
        assert_eq!(fast, generic, "{backends:?}");
        // Before: [-3, 5) and [1, 9) with both records. After: [-7, 1) and [-3, 5) with the
        // new one only; [1, 9) fired before and does not fire again.
        assert_eq!(fast.records, vec![(12, 2), (12, 2), (100, 1), (100, 1)]);
    }
}

/// A window operator under test, noting after every call the most entries its state stores
/// held in memory.
struct Probed<KS, F: WindowFunctionCore<u8, Event>, Tr> {
    operator: WindowOperator<u8, Event, KS, F, Tr>,
    in_memory_max: Arc<AtomicUsize>,
}

impl<KS, F, Tr> Probed<KS, F, Tr>
where
    KS: Fn(&Event) -> u8 + Clone + Send + 'static,
    F: WindowFunctionCore<u8, Event>,
    Tr: Trigger<Event>,
{
    fn observe(&self) {
        let in_memory = self.operator.stored_entries_in_memory();
        self.in_memory_max.fetch_max(in_memory, Ordering::Relaxed);
    }
}

impl<KS, F, Tr> OneInputOperator<Event> for Probed<KS, F, Tr>
where
    KS: Fn(&Event) -> u8 + Clone + Send + 'static,
    F: WindowFunctionCore<u8, Event>,
    Tr: Trigger<Event>,
{
    type Out = F::Out;

    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        self.operator.initialize_state(ctx)
    }

    fn snapshot_state(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        self.operator.snapshot_state(ctx)
    }

    fn process(
        &mut self,
        record: Record<Event>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.operator.process(record, ctx, out);
        self.observe();
    }

    fn on_watermark(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.operator.on_watermark(watermark, ctx, out);
        self.observe();
    }

    fn on_end_of_input(&mut self, ctx: &mut OperatorContext<'_>, out: &mut Collector<'_, F::Out>) {
        self.operator.on_end_of_input(ctx, out);
        self.observe();
    }
}

/// Runs `make()`'s operator over `steps` with its state in memory and in LMDB with a cache of
/// `CACHE` entries, checkpointing before the final watermark: with LMDB the stores, timers and
/// indexes never hold more than three times the cache in memory (the stores share the cache;
/// a timer service keeps up to its share in its head and again in pending writes), while the
/// checkpoint (read back from LMDB) holds at least `entries_min` entries and equals the memory
/// backend's, as do the results.
fn check_lmdb_resident<KS, F, Tr>(
    make: &dyn Fn() -> WindowOperator<u8, Event, KS, F, Tr>,
    steps: &[Step],
    entries_min: usize,
) where
    KS: Fn(&Event) -> u8 + Clone + Send + 'static,
    F: WindowFunctionCore<u8, Event>,
    F::Out: PartialEq + std::fmt::Debug,
    Tr: Trigger<Event>,
{
    const CACHE: usize = 8;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut runs = Vec::new();
    for backend in [Backend::Memory, Backend::Lmdb] {
        let config = KeyedBackendConfig {
            cache_entries: CACHE,
            ..backend_config(backend, dir.path(), "resident", 1, 0)
        };
        let in_memory_max = Arc::new(AtomicUsize::new(0));
        let probed = Probed {
            operator: make(),
            in_memory_max: in_memory_max.clone(),
        };
        let mut init =
            StateInitContext::restored(OperatorSnapshot::default(), CheckpointId(0), config);
        let mut harness = start(probed, &mut init);
        feed(&mut harness, &event_time(steps), &|_| true, 0);
        let snapshot = checkpoint(&mut harness, 1);
        let outcome = finish(&mut harness);
        runs.push((snapshot, outcome, in_memory_max.load(Ordering::Relaxed)));
    }
    let (lmdb_snapshot, lmdb_outcome, lmdb_in_memory) = runs.pop().expect("an LMDB run");
    let (memory_snapshot, memory_outcome, _) = runs.pop().expect("a memory run");
    assert!(
        lmdb_snapshot.keyed.entries.len() >= entries_min,
        "{} entries",
        lmdb_snapshot.keyed.entries.len()
    );
    assert!(
        lmdb_in_memory <= 3 * CACHE,
        "{lmdb_in_memory} entries in memory"
    );
    assert_eq!(lmdb_snapshot, memory_snapshot);
    assert_eq!(lmdb_outcome, memory_outcome);
    assert!(lmdb_outcome.failure.is_none(), "{:?}", lmdb_outcome.failure);
}

#[test]
fn lmdb_windows_live_in_lmdb() {
    // 200 keys, a record of each every 20 ms, and a watermark 200 ms behind: every key has
    // several windows in flight at the checkpoint.
    let mut steps = Vec::new();
    for round in 0..12i64 {
        let batch = (0..200u8)
            .map(|key| (key, round * 20 + i64::from(key % 7), round + i64::from(key)))
            .collect();
        steps.push(Step::Records(batch));
        steps.push(Step::Watermark(round * 20 - 200));
    }
    let event = TimeDomain::EventTime;
    let tumbling = WindowAssigner::tumbling(event, 50, 0).expect("valid");
    let sliding = WindowAssigner::sliding(event, 100, 25, 0).expect("valid");
    let sessions = WindowAssigner::session(event, 30).expect("valid");
    for assigner in [tumbling, sliding, sessions] {
        let fast = || {
            WindowOperator::<u8, Event, _, _, _>::new(
                assigner,
                key_of as fn(&Event) -> u8,
                AggregateWindow(SumCount),
                DefaultTrigger::for_assigner(&assigner),
                10,
                None,
            )
        };
        check_lmdb_resident(&fast, &steps, 200);
        let generic = || {
            WindowOperator::<u8, Event, _, _, _>::new(
                assigner,
                key_of as fn(&Event) -> u8,
                ProcessWindow(Elements),
                Opaque,
                10,
                None,
            )
        };
        check_lmdb_resident(&generic, &steps, 400);
    }
}
