//! The interval join (Flink's `IntervalJoinOperator`).
//!
//! `left.key_by(k).interval_join(right.key_by(k)).between(lower, upper)` joins each left element
//! at `t` with every right element of the same key at `t + lower ..= t + upper` (bounds can be
//! made exclusive). Both sides are buffered per key and timestamp; an element is removed when the
//! watermark passes the last time a partner could still arrive (Flink's cleanup timers). A pair's
//! result carries the larger of the two timestamps. An element older than the watermark is late:
//! it is counted (`late_records`) and not joined, as in Flink.
//!
//! ## Checkpoints
//!
//! Both buffers and the cleanup timers are checkpointed as keyed state, each entry in the key
//! group of its key: `_join_left` and `_join_right` hold `(key, timestamp) -> elements`,
//! `_join_timers` the timers. A restore at another parallelism gives every subtask exactly its
//! keys' buffers and timers. The watermark is not checkpointed (as in Flink): after a restore
//! nothing is late until the replayed watermark comes.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::checkpointing::{check_key_group, deferred_keyed_state, take_keyed_entries};
use super::co::TwoInputOperator;
use super::{
    Collector, FunctionError, OperatorContext, Record, StateInitContext, StateSnapshotContext,
};
use crate::api::Key;
use crate::api::functions::{JoinContext, ProcessJoinFunction};
use crate::state::{DEFAULT_MAX_PARALLELISM, KeyedStateSnapshot, PendingKeyedSnapshot, StateError};
use crate::time::{TimerService, Watermark};

/// The keyed state holding the left buffer: `(key, timestamp) -> elements`.
const LEFT_STATE: &str = "_join_left";
/// The keyed state holding the right buffer: `(key, timestamp) -> elements`.
const RIGHT_STATE: &str = "_join_right";
/// The keyed state holding the cleanup timers.
const TIMERS_STATE: &str = "_join_timers";

/// Which buffer a cleanup timer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum JoinSide {
    Left,
    Right,
}

/// The interval join operator.
pub(crate) struct IntervalJoinOperator<K, A, B, KS1, KS2, F> {
    lower_ms: i64,
    upper_ms: i64,
    key_left: KS1,
    key_right: KS2,
    function: F,
    left: BTreeMap<K, BTreeMap<i64, Vec<A>>>,
    right: BTreeMap<K, BTreeMap<i64, Vec<B>>>,
    timers: TimerService<K, JoinSide>,
    watermark: i64,
    /// The number of key groups, for checkpoints.
    max_parallelism: u32,
}

impl<K: Ord + Clone, A, B, KS1: Clone, KS2: Clone, F: Clone> Clone
    for IntervalJoinOperator<K, A, B, KS1, KS2, F>
{
    fn clone(&self) -> Self {
        Self::new(
            self.lower_ms,
            self.upper_ms,
            self.key_left.clone(),
            self.key_right.clone(),
            self.function.clone(),
        )
    }
}

impl<K: Ord + Clone, A, B, KS1, KS2, F> IntervalJoinOperator<K, A, B, KS1, KS2, F> {
    /// `lower_ms..=upper_ms`, inclusive (exclusive bounds are adjusted by the caller).
    pub(crate) fn new(
        lower_ms: i64,
        upper_ms: i64,
        key_left: KS1,
        key_right: KS2,
        function: F,
    ) -> Self {
        Self {
            lower_ms,
            upper_ms,
            key_left,
            key_right,
            function,
            left: BTreeMap::new(),
            right: BTreeMap::new(),
            timers: TimerService::new(),
            watermark: i64::MIN,
            max_parallelism: DEFAULT_MAX_PARALLELISM,
        }
    }

    /// The timestamp of an element, or a failure for one without (event time is required).
    fn timestamp_of(record_timestamp: Option<i64>, ctx: &mut OperatorContext<'_>) -> Option<i64> {
        if record_timestamp.is_none() {
            ctx.fail("interval join: a record has no timestamp; assign timestamps before joining");
        }
        record_timestamp
    }
}

fn buffer<K: Ord + Clone, V>(
    buffers: &mut BTreeMap<K, BTreeMap<i64, Vec<V>>>,
    key: &K,
    timestamp: i64,
    value: V,
) {
    buffers
        .entry(key.clone())
        .or_default()
        .entry(timestamp)
        .or_default()
        .push(value);
}

/// One buffer as keyed state `name`: copied now, encoded off the data path.
fn snapshot_buffer<K: Key, V: Clone + Serialize + Send + 'static>(
    buffers: &BTreeMap<K, BTreeMap<i64, Vec<V>>>,
    name: &'static str,
    max_parallelism: u32,
) -> Option<PendingKeyedSnapshot> {
    let entries: Vec<(K, i64, Vec<V>)> = buffers
        .iter()
        .flat_map(|(key, per_time)| {
            per_time
                .iter()
                .map(move |(timestamp, values)| (key.clone(), *timestamp, values.clone()))
        })
        .collect();
    deferred_keyed_state(name, max_parallelism, entries)
}

/// Restores one buffer from keyed state `name` in `keyed`.
fn restore_buffer<K: Key, V: DeserializeOwned>(
    buffers: &mut BTreeMap<K, BTreeMap<i64, Vec<V>>>,
    keyed: &mut KeyedStateSnapshot,
    name: &str,
    max_parallelism: u32,
) -> Result<(), StateError> {
    for (group, (key, timestamp), values) in take_keyed_entries::<(K, i64), Vec<V>>(keyed, name)? {
        check_key_group(&key, group, max_parallelism, name)?;
        if values.is_empty() {
            return Err(StateError::Corrupt(format!(
                "state '{name}', key group {}: an empty buffer entry",
                group.0
            )));
        }
        let per_time = buffers.entry(key).or_default();
        if per_time.insert(timestamp, values).is_some() {
            return Err(StateError::Corrupt(format!(
                "state '{name}', key group {}: an entry appears twice",
                group.0
            )));
        }
    }
    Ok(())
}

fn remove<K: Ord, V>(buffers: &mut BTreeMap<K, BTreeMap<i64, Vec<V>>>, key: &K, timestamp: i64) {
    if let Some(per_key) = buffers.get_mut(key) {
        per_key.remove(&timestamp);
        if per_key.is_empty() {
            buffers.remove(key);
        }
    }
}

impl<K, A, B, KS1, KS2, F> TwoInputOperator<A, B> for IntervalJoinOperator<K, A, B, KS1, KS2, F>
where
    K: Key,
    A: Clone + Send + Serialize + DeserializeOwned + 'static,
    B: Clone + Send + Serialize + DeserializeOwned + 'static,
    KS1: Fn(&A) -> K + Clone + Send + 'static,
    KS2: Fn(&B) -> K + Clone + Send + 'static,
    F: ProcessJoinFunction<A, B>,
    F::Out: Send + 'static,
{
    type Out = F::Out;

    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        let max_parallelism = ctx.backend_config().max_parallelism;
        self.max_parallelism = max_parallelism;
        let mut keyed = ctx.take_keyed_snapshot();
        restore_buffer(&mut self.left, &mut keyed, LEFT_STATE, max_parallelism)?;
        restore_buffer(&mut self.right, &mut keyed, RIGHT_STATE, max_parallelism)?;
        let timers = keyed.take_state(TIMERS_STATE);
        self.timers.restore_keyed_snapshot(&timers, TIMERS_STATE)?;
        if let Some(left) = keyed.states.first() {
            return Err(StateError::Corrupt(format!(
                "state '{}' is not a state of an interval join",
                left.name
            ))
            .into());
        }
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        if !ctx.is_persisted() {
            return Ok(());
        }
        let max_parallelism = self.max_parallelism;
        let left = snapshot_buffer(&self.left, LEFT_STATE, max_parallelism);
        let right = snapshot_buffer(&self.right, RIGHT_STATE, max_parallelism);
        let timers = (self.timers.event_time_timer_count() > 0).then(|| {
            let timers = self.timers.clone();
            PendingKeyedSnapshot::Deferred(Box::new(move || {
                timers.to_keyed_snapshot(TIMERS_STATE, max_parallelism)
            }))
        });
        for part in [left, right, timers].into_iter().flatten() {
            ctx.add_keyed(part);
        }
        Ok(())
    }

    fn process1(
        &mut self,
        record: Record<A>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let Some(ts) = Self::timestamp_of(record.timestamp, ctx) else {
            return;
        };
        if ts < self.watermark {
            ctx.count_late_record();
            return;
        }
        let key = (self.key_left)(&record.value);
        if let Some(candidates) = self.right.get(&key) {
            let from = ts.saturating_add(self.lower_ms);
            let to = ts.saturating_add(self.upper_ms);
            for (&right_ts, rights) in candidates.range(from..=to) {
                let join = JoinContext {
                    left_timestamp: ts,
                    right_timestamp: right_ts,
                };
                for right in rights {
                    out.set_timestamp(Some(join.timestamp()));
                    self.function
                        .process_element(record.value.clone(), right.clone(), &join, out);
                }
            }
        }
        let cleanup = if self.upper_ms > 0 {
            ts.saturating_add(self.upper_ms)
        } else {
            ts
        };
        self.timers
            .register_event_time_timer(key.clone(), JoinSide::Left, cleanup);
        buffer(&mut self.left, &key, ts, record.value);
    }

    fn process2(
        &mut self,
        record: Record<B>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let Some(ts) = Self::timestamp_of(record.timestamp, ctx) else {
            return;
        };
        if ts < self.watermark {
            ctx.count_late_record();
            return;
        }
        let key = (self.key_right)(&record.value);
        if let Some(candidates) = self.left.get(&key) {
            let from = ts.saturating_sub(self.upper_ms);
            let to = ts.saturating_sub(self.lower_ms);
            for (&left_ts, lefts) in candidates.range(from..=to) {
                let join = JoinContext {
                    left_timestamp: left_ts,
                    right_timestamp: ts,
                };
                for left in lefts {
                    out.set_timestamp(Some(join.timestamp()));
                    self.function
                        .process_element(left.clone(), record.value.clone(), &join, out);
                }
            }
        }
        // For the right side the bounds are mirrored: a left partner can come up to -lower later.
        let cleanup = if self.lower_ms < 0 {
            ts.saturating_sub(self.lower_ms)
        } else {
            ts
        };
        self.timers
            .register_event_time_timer(key.clone(), JoinSide::Right, cleanup);
        buffer(&mut self.right, &key, ts, record.value);
    }

    fn on_watermark(
        &mut self,
        watermark: Watermark,
        _ctx: &mut OperatorContext<'_>,
        _out: &mut Collector<'_, F::Out>,
    ) {
        self.watermark = self.watermark.max(watermark.timestamp);
        while let Some(timer) = self.timers.pop_event_time_timer(self.watermark) {
            match timer.namespace {
                JoinSide::Left => {
                    let ts = if self.upper_ms > 0 {
                        timer.timestamp - self.upper_ms
                    } else {
                        timer.timestamp
                    };
                    remove(&mut self.left, &timer.key, ts);
                }
                JoinSide::Right => {
                    let ts = if self.lower_ms < 0 {
                        timer.timestamp + self.lower_ms
                    } else {
                        timer.timestamp
                    };
                    remove(&mut self.right, &timer.key, ts);
                }
            }
        }
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::checkpoint::{CheckpointBarrier, CheckpointId, CheckpointKind};
    use crate::operator::co::{TwoInputChained, TwoInputNode};
    use crate::operator::testing::Recorder;
    use crate::operator::{NodeId, OperatorInfo, SideOutputs, StreamElement, TaskCx};
    use crate::runtime::credit::CreditOutbox;
    use crate::state::snapshot::redistribute;
    use crate::state::{
        KeyGroupRange, KeyedBackendConfig, OperatorSnapshot, key_group_for_key,
        subtask_for_key_group,
    };

    /// `(key, timestamp, value)` on either side.
    type Event = (u8, i64, i64);
    /// `(key, left value, right value)`.
    type Pair = (u8, i64, i64);

    #[derive(Clone)]
    struct Pairs;
    crate::api::operator::impl_plain_operator!(Pairs);

    impl ProcessJoinFunction<Event, Event> for Pairs {
        type Out = Pair;
        fn process_element(
            &mut self,
            left: Event,
            right: Event,
            _ctx: &JoinContext,
            out: &mut Collector<'_, Pair>,
        ) {
            out.collect((left.0, left.2, right.2));
        }
    }

    fn key_of(event: &Event) -> u8 {
        event.0
    }

    type Join = IntervalJoinOperator<u8, Event, Event, fn(&Event) -> u8, fn(&Event) -> u8, Pairs>;

    fn join() -> Join {
        IntervalJoinOperator::new(-5, 10, key_of as fn(&Event) -> u8, key_of, Pairs)
    }

    #[derive(Debug, Clone)]
    enum Input {
        Left(Vec<Event>),
        Right(Vec<Event>),
        Watermark(i64),
    }

    /// A join node wired to a recorder, its state initialized from `init`.
    struct Harness {
        node: TwoInputNode<Join, Event, Event>,
        cx: TaskCx,
        recorded: Arc<Mutex<Vec<StreamElement<Pair>>>>,
    }

    impl Harness {
        fn new(init: &mut StateInitContext) -> Self {
            let mut operator = join();
            operator.initialize_state(init).expect("initializes");
            let recorded = Arc::new(Mutex::new(Vec::new()));
            let info = OperatorInfo {
                node: NodeId(1),
                name: "join".into(),
                uid: None,
                parallelism: 1,
            };
            let node = TwoInputNode::new(
                info,
                operator,
                Box::new(Recorder(recorded.clone())),
                SideOutputs::default(),
            );
            Self {
                node,
                cx: TaskCx::new(CreditOutbox::new(0), NodeId(1)),
                recorded,
            }
        }

        /// Feeds the inputs of the keys `owns` accepts; returns the highest watermark.
        fn feed(&mut self, inputs: &[Input], owns: &dyn Fn(u8) -> bool) -> i64 {
            let records = |events: &[Event]| {
                events
                    .iter()
                    .filter(|e| owns(e.0))
                    .map(|e| Record::with_timestamp(*e, e.1))
                    .collect::<Vec<_>>()
            };
            let mut watermark = i64::MIN;
            for input in inputs {
                match input {
                    Input::Left(events) => self.node.process_batch1(records(events), &mut self.cx),
                    Input::Right(events) => {
                        self.node.process_batch2(records(events), &mut self.cx);
                    }
                    Input::Watermark(t) => {
                        watermark = watermark.max(*t);
                        self.node
                            .process_watermark(Watermark::new(*t), &mut self.cx);
                    }
                }
            }
            watermark
        }

        fn checkpoint(&mut self) -> OperatorSnapshot {
            let barrier = CheckpointBarrier {
                id: CheckpointId(1),
                kind: CheckpointKind::Checkpoint,
            };
            self.node.snapshot_state(barrier, &mut self.cx);
            let (_, pending) = self.cx.snapshots.pop().expect("a snapshot");
            let snapshot = pending.complete().expect("completes");
            let stored = postcard::to_allocvec(&snapshot).expect("encodes");
            postcard::from_bytes(&stored).expect("decodes")
        }

        /// The pairs emitted so far, and the late records counted.
        fn take(&mut self) -> (Vec<Pair>, u64) {
            let mut metrics = Vec::new();
            self.node.metrics(&mut metrics);
            let pairs = std::mem::take(&mut *self.recorded.lock().expect("recorder"))
                .into_iter()
                .filter_map(|e| match e {
                    StreamElement::Record(r) => Some(r.value),
                    _ => None,
                })
                .collect();
            assert!(self.cx.failure.is_none(), "{:?}", self.cx.failure);
            (pairs, metrics[0].1.late_records)
        }
    }

    /// Both sides drifting forward with jitter, over 6 keys, with watermarks.
    fn inputs() -> Vec<Input> {
        let mut inputs = Vec::new();
        for i in 0..60u64 {
            let mixed = crate::state::splitmix64(i + 1_000);
            let event = (
                (mixed % 6) as u8,
                (i as i64) * 2 + ((mixed >> 20) % 7) as i64 - 3,
                i as i64,
            );
            inputs.push(if mixed >> 40 & 1 == 0 {
                Input::Left(vec![event])
            } else {
                Input::Right(vec![event])
            });
            if i % 5 == 4 {
                inputs.push(Input::Watermark((i as i64) * 2 - 6));
            }
        }
        inputs
    }

    #[test]
    fn a_restored_join_keeps_its_buffers_and_timers() {
        let inputs = inputs();
        let mut whole = Harness::new(&mut StateInitContext::empty(128));
        whole.feed(&inputs, &|_| true);
        whole.feed(&[Input::Watermark(i64::MAX)], &|_| true);
        let (mut expected, late) = whole.take();
        assert!(expected.len() > 20, "{}", expected.len());
        expected.sort_unstable();

        for cut in 0..=inputs.len() {
            for parts in [1u32, 3] {
                let mut before = Harness::new(&mut StateInitContext::empty(128));
                let watermark = before.feed(&inputs[..cut], &|_| true);
                let snapshot = before.checkpoint();
                let (mut pairs, mut late_total) = before.take();
                for index in 0..parts {
                    let share = redistribute(std::slice::from_ref(&snapshot), 128, parts, index)
                        .expect("redistributes");
                    let config = KeyedBackendConfig {
                        key_groups: KeyGroupRange::for_subtask(128, parts, index),
                        ..KeyedBackendConfig::memory(128)
                    };
                    let mut init = StateInitContext::restored(share, CheckpointId(1), config);
                    let mut after = Harness::new(&mut init);
                    let owns = |key: u8| {
                        subtask_for_key_group(key_group_for_key(&key, 128), 128, parts) == index
                    };
                    if watermark > i64::MIN {
                        after.feed(&[Input::Watermark(watermark)], &owns);
                    }
                    after.feed(&inputs[cut..], &owns);
                    after.feed(&[Input::Watermark(i64::MAX)], &owns);
                    let (more, more_late) = after.take();
                    pairs.extend(more);
                    late_total += more_late;
                }
                pairs.sort_unstable();
                assert_eq!(pairs, expected, "cut {cut}, {parts} parts");
                assert_eq!(late_total, late, "cut {cut}, {parts} parts");
            }
        }
    }

    #[test]
    fn a_corrupt_buffer_is_an_error_naming_it() {
        let mut before = Harness::new(&mut StateInitContext::empty(128));
        before.feed(&inputs()[..20], &|_| true);
        let mut snapshot = before.checkpoint();
        let index = snapshot.keyed.state_index(LEFT_STATE).expect("left buffer");
        let entry = snapshot
            .keyed
            .entries
            .iter_mut()
            .find(|e| e.state == index)
            .expect("an entry");
        entry.value.truncate(1);
        let mut init =
            StateInitContext::restored(snapshot, CheckpointId(1), KeyedBackendConfig::memory(128));
        let error = join()
            .initialize_state(&mut init)
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains("corrupt") && error.contains(LEFT_STATE),
            "{error}"
        );
    }
}
