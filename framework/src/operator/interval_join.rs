//! The interval join (Flink's `IntervalJoinOperator`).
//!
//! `left.key_by(k).interval_join(right.key_by(k)).between(lower, upper)` joins each left element
//! at `t` with every right element of the same key at `t + lower ..= t + upper` (bounds can be
//! made exclusive). Both sides are buffered per key and timestamp; an element is removed when the
//! watermark passes the last time a partner could still arrive (Flink's cleanup timers). A pair's
//! result carries the larger of the two timestamps. An element older than the watermark is late:
//! it is counted (`late_records`) and not joined, as in Flink.
//!
//! ## Design
//!
//! The buffers live in the job's keyed state backend, as Flink keeps them in `MapState`: one
//! [`KeyedStateStore`] keyed by `(key, timestamp)` ([`Namespaced`], in the key group of the
//! key) with the states `_join_left` and `_join_right` (`Vec` of the elements at that key and
//! timestamp). With the LMDB backend they are in LMDB behind its bounded write-back cache, so
//! the buffers may exceed memory; with the memory backend the store is a hash map.
//!
//! A partner lookup needs a key's timestamps in a range, which the buffer store (point lookups
//! only) cannot answer. So each side keeps an index: per key, its buffered timestamps, sorted
//! (states `_join_left_times` and `_join_right_times` of a second [`KeyedStateStore`] keyed by
//! the key; in LMDB with the LMDB backend, behind its own bounded cache). A lookup reads the
//! key's timestamps once, takes the range by binary search and reads each timestamp's elements
//! from the buffers. The cleanup timers are a [`TimerService`], in LMDB with the LMDB backend
//! too. So with LMDB nothing in the join grows in memory with the buffered data.
//!
//! ## Checkpoints
//!
//! The store's snapshot holds both buffers, each entry in the key group of its key: `_join_left`
//! and `_join_right` map `(key, timestamp)` to the elements; `_join_timers` holds the timers. A
//! restore at another parallelism gives every subtask exactly its keys' buffers and timers; the
//! indexes are derived data, never checkpointed: a restore rebuilds them from the restored
//! entries' keys (the elements stay encoded until read).
//! The format does not depend on the backend, so a checkpoint taken with one restores into the
//! other. The watermark is not checkpointed (as in Flink): after a restore nothing is late until
//! the replayed watermark comes.
//!
//! ## Invariants
//!
//! - A side's index lists `timestamp` for `key` iff its buffer has an entry at
//!   `(key, timestamp)`, with at least one element, and a cleanup timer of that side at the
//!   entry's cleanup time; a key without timestamps has no index value.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::checkpointing::check_key_group;
use super::co::TwoInputOperator;
use super::window::{decode_entry_key, store_config};
use super::{
    Collector, FunctionError, OperatorContext, Record, StateInitContext, StateSnapshotContext,
};
use crate::api::Key;
use crate::api::functions::{JoinContext, ProcessJoinFunction};
use crate::state::namespaced::Namespaced;
use crate::state::{
    DEFAULT_MAX_PARALLELISM, KeyGroup, KeyedStateSnapshot, KeyedStateStore, StateError,
};
use crate::time::{TimerService, Watermark};

/// The keyed state holding the left buffer: `(key, timestamp) -> elements`.
const LEFT_STATE: &str = "_join_left";
/// The keyed state holding the right buffer: `(key, timestamp) -> elements`.
const RIGHT_STATE: &str = "_join_right";
/// The keyed state holding the cleanup timers.
const TIMERS_STATE: &str = "_join_timers";
/// The index of the left buffer: per key, its buffered timestamps (never checkpointed).
const LEFT_INDEX: &str = "_join_left_times";
/// The index of the right buffer.
const RIGHT_INDEX: &str = "_join_right_times";

/// Which buffer a cleanup timer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
    /// Both buffers, `(key, timestamp) -> elements`, in the job's backend.
    buffers: KeyedStateStore<Namespaced<K, i64>>,
    /// Per key, the sorted timestamps of each buffer (see the module's "Design"): states
    /// [`LEFT_INDEX`] and [`RIGHT_INDEX`], never checkpointed.
    index: KeyedStateStore<K>,
    /// The partner timestamps of the element at hand (kept for its allocation).
    partners: Vec<i64>,
    timers: TimerService<K, JoinSide>,
    watermark: i64,
    /// The number of key groups, for checkpoints.
    max_parallelism: u32,
    _elements: PhantomData<fn() -> (A, B)>,
}

impl<K: Ord + std::hash::Hash + Clone, A, B, KS1: Clone, KS2: Clone, F: Clone> Clone
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

impl<K: Ord + std::hash::Hash + Clone, A, B, KS1, KS2, F>
    IntervalJoinOperator<K, A, B, KS1, KS2, F>
{
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
            buffers: KeyedStateStore::default(),
            index: KeyedStateStore::default(),
            partners: Vec::new(),
            timers: TimerService::new(),
            watermark: i64::MIN,
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            _elements: PhantomData,
        }
    }

    /// The timestamp of an element, or a failure for one without (event time is required).
    fn timestamp_of(record_timestamp: Option<i64>, ctx: &mut OperatorContext<'_>) -> Option<i64> {
        if record_timestamp.is_none() {
            ctx.fail("interval join: a record has no timestamp; assign timestamps before joining");
        }
        record_timestamp
    }

    /// The cleanup time of a left element at `timestamp`: no right partner can come later.
    fn left_cleanup(&self, timestamp: i64) -> i64 {
        if self.upper_ms > 0 {
            timestamp.saturating_add(self.upper_ms)
        } else {
            timestamp
        }
    }

    /// The cleanup time of a right element at `timestamp`: the bounds are mirrored, a left
    /// partner can come up to `-lower` later.
    fn right_cleanup(&self, timestamp: i64) -> i64 {
        if self.lower_ms < 0 {
            timestamp.saturating_sub(self.lower_ms)
        } else {
            timestamp
        }
    }
}

/// Rebuilds index state `index_name` of buffer `name` from the buffer's restored entries
/// (`part`), checking that each key is in the key group it was stored in.
fn restore_index<K: Key>(
    part: &KeyedStateSnapshot,
    name: &str,
    max_parallelism: u32,
    index: &mut KeyedStateStore<K>,
    index_name: &str,
) -> Result<(), StateError> {
    let mut times = index.value_table::<Vec<i64>>(index_name)?;
    for entry in &part.entries {
        let (key, timestamp): (K, i64) = decode_entry_key(name, entry)?;
        check_key_group(&key, KeyGroup(entry.key_group), max_parallelism, name)?;
        if !insert_time(times.get_or_insert_with(key, Vec::new)?, timestamp) {
            return Err(StateError::Corrupt(format!(
                "state '{name}', key group {}: an entry appears twice",
                entry.key_group
            )));
        }
    }
    Ok(())
}

/// Adds `timestamp` to a key's sorted timestamps; returns whether it was new.
fn insert_time(times: &mut Vec<i64>, timestamp: i64) -> bool {
    match times.binary_search(&timestamp) {
        Ok(_) => false,
        Err(at) => {
            times.insert(at, timestamp);
            true
        }
    }
}

/// Adds `timestamp` to `key`'s timestamps in index state `index_name` (a no-op if listed).
fn add_time<K: Key>(
    index: &mut KeyedStateStore<K>,
    index_name: &str,
    key: &K,
    timestamp: i64,
) -> Result<(), StateError> {
    let mut table = index.value_table::<Vec<i64>>(index_name)?;
    insert_time(table.get_or_insert_with(key.clone(), Vec::new)?, timestamp);
    Ok(())
}

/// Copies the timestamps of index state `index_name` for `key` within `from..=to` into `out`.
fn times_within<K: Key>(
    index: &mut KeyedStateStore<K>,
    index_name: &str,
    key: &K,
    from: i64,
    to: i64,
    out: &mut Vec<i64>,
) -> Result<(), StateError> {
    out.clear();
    if let Some(times) = index.value_table::<Vec<i64>>(index_name)?.get(key)? {
        let start = times.partition_point(|&t| t < from);
        let end = times.partition_point(|&t| t <= to);
        out.extend_from_slice(&times[start..end.max(start)]);
    }
    Ok(())
}

/// Removes `timestamp` from `key`'s timestamps in index state `index_name` (the key's value
/// goes with its last timestamp).
fn remove_time<K: Key>(
    index: &mut KeyedStateStore<K>,
    index_name: &str,
    key: &K,
    timestamp: i64,
) -> Result<(), StateError> {
    let mut table = index.value_table::<Vec<i64>>(index_name)?;
    let Some(times) = table.get_mut(key)? else {
        return Ok(());
    };
    if let Ok(at) = times.binary_search(&timestamp) {
        times.remove(at);
    }
    if times.is_empty() {
        table.remove(key)?;
    }
    Ok(())
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

    fn state_schema(&self) -> crate::state::StateSchema {
        crate::api::Operator::state_schema(&self.function)
    }

    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        crate::api::operator::initialize_fields(&mut self.function, ctx)?;
        let config = ctx.backend_config().clone();
        let max_parallelism = config.max_parallelism;
        self.max_parallelism = max_parallelism;
        let mut keyed = ctx.take_keyed_snapshot();
        let left = keyed.take_state(LEFT_STATE);
        let right = keyed.take_state(RIGHT_STATE);
        let mut index = KeyedStateStore::open(store_config(&config, "index", 1))?;
        restore_index(&left, LEFT_STATE, max_parallelism, &mut index, LEFT_INDEX)?;
        restore_index(
            &right,
            RIGHT_STATE,
            max_parallelism,
            &mut index,
            RIGHT_INDEX,
        )?;
        self.index = index;
        let mut buffers = left;
        buffers.merge(right)?;
        self.timers = TimerService::open(&store_config(&config, "timers", 1))?;
        let mut store = KeyedStateStore::open(config)?;
        if !buffers.is_empty() {
            store.restore(buffers)?;
        }
        // Resolved now, so that restored buffers of other element types are a restore error
        // (and, in memory, undecodable ones too; LMDB decodes them as they are read).
        store.value_table::<Vec<A>>(LEFT_STATE)?;
        store.value_table::<Vec<B>>(RIGHT_STATE)?;
        self.buffers = store;
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
        crate::api::operator::snapshot_fields(&self.function, ctx)?;
        if !ctx.is_persisted() {
            return Ok(());
        }
        ctx.snapshot_keyed_store(&mut self.buffers)?;
        let max_parallelism = self.max_parallelism;
        if !self.timers.is_empty() {
            ctx.add_keyed(self.timers.snapshot_keyed(TIMERS_STATE, max_parallelism)?);
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
        let from = ts.saturating_add(self.lower_ms);
        let to = ts.saturating_add(self.upper_ms);
        let mut times = std::mem::take(&mut self.partners);
        let joined = times_within(&mut self.index, RIGHT_INDEX, &key, from, to, &mut times)
            .and_then(|()| self.buffers.value_table::<Vec<B>>(RIGHT_STATE))
            .and_then(|mut rights| {
                for right_ts in &times {
                    let entry = Namespaced::new(key.clone(), *right_ts);
                    let Some(partners) = rights.get(&entry)? else {
                        return Err(missing(RIGHT_STATE, *right_ts));
                    };
                    let join = JoinContext {
                        left_timestamp: ts,
                        right_timestamp: *right_ts,
                    };
                    for right in partners {
                        out.set_timestamp(Some(join.timestamp()));
                        self.function.process_element(
                            record.value.clone(),
                            right.clone(),
                            &join,
                            out,
                        );
                    }
                }
                Ok(())
            });
        self.partners = times;
        let cleanup = self.left_cleanup(ts);
        let buffered = joined.and_then(|()| {
            self.buffers
                .value_table::<Vec<A>>(LEFT_STATE)?
                .get_or_insert_with(Namespaced::new(key.clone(), ts), Vec::new)
                .map(|elements| elements.push(record.value))
        });
        if let Err(error) = buffered {
            ctx.fail(error.to_string());
            return;
        }
        if let Err(error) = add_time(&mut self.index, LEFT_INDEX, &key, ts) {
            ctx.fail(error.to_string());
            return;
        }
        if let Err(error) = self
            .timers
            .register_event_time_timer(key, JoinSide::Left, cleanup)
        {
            ctx.fail(format!("timers: {error}"));
        }
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
        let from = ts.saturating_sub(self.upper_ms);
        let to = ts.saturating_sub(self.lower_ms);
        let mut times = std::mem::take(&mut self.partners);
        let joined = times_within(&mut self.index, LEFT_INDEX, &key, from, to, &mut times)
            .and_then(|()| self.buffers.value_table::<Vec<A>>(LEFT_STATE))
            .and_then(|mut lefts| {
                for left_ts in &times {
                    let entry = Namespaced::new(key.clone(), *left_ts);
                    let Some(partners) = lefts.get(&entry)? else {
                        return Err(missing(LEFT_STATE, *left_ts));
                    };
                    let join = JoinContext {
                        left_timestamp: *left_ts,
                        right_timestamp: ts,
                    };
                    for left in partners {
                        out.set_timestamp(Some(join.timestamp()));
                        self.function.process_element(
                            left.clone(),
                            record.value.clone(),
                            &join,
                            out,
                        );
                    }
                }
                Ok(())
            });
        self.partners = times;
        let cleanup = self.right_cleanup(ts);
        let buffered = joined.and_then(|()| {
            self.buffers
                .value_table::<Vec<B>>(RIGHT_STATE)?
                .get_or_insert_with(Namespaced::new(key.clone(), ts), Vec::new)
                .map(|elements| elements.push(record.value))
        });
        if let Err(error) = buffered {
            ctx.fail(error.to_string());
            return;
        }
        if let Err(error) = add_time(&mut self.index, RIGHT_INDEX, &key, ts) {
            ctx.fail(error.to_string());
            return;
        }
        if let Err(error) = self
            .timers
            .register_event_time_timer(key, JoinSide::Right, cleanup)
        {
            ctx.fail(format!("timers: {error}"));
        }
    }

    fn on_watermark(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext<'_>,
        _out: &mut Collector<'_, F::Out>,
    ) {
        self.watermark = self.watermark.max(watermark.timestamp);
        loop {
            let timer = match self.timers.pop_event_time_timer(self.watermark) {
                Ok(Some(timer)) => timer,
                Ok(None) => break,
                Err(error) => {
                    ctx.fail(format!("timers: {error}"));
                    return;
                }
            };
            let removed = match timer.namespace {
                JoinSide::Left => {
                    let ts = if self.upper_ms > 0 {
                        timer.timestamp - self.upper_ms
                    } else {
                        timer.timestamp
                    };
                    let unindexed = remove_time(&mut self.index, LEFT_INDEX, &timer.key, ts);
                    if let Err(error) = unindexed {
                        ctx.fail(error.to_string());
                        return;
                    }
                    self.buffers
                        .value_table::<Vec<A>>(LEFT_STATE)
                        .and_then(|mut t| t.remove(&Namespaced::new(timer.key, ts)))
                }
                JoinSide::Right => {
                    let ts = if self.lower_ms < 0 {
                        timer.timestamp + self.lower_ms
                    } else {
                        timer.timestamp
                    };
                    let unindexed = remove_time(&mut self.index, RIGHT_INDEX, &timer.key, ts);
                    if let Err(error) = unindexed {
                        ctx.fail(error.to_string());
                        return;
                    }
                    self.buffers
                        .value_table::<Vec<B>>(RIGHT_STATE)
                        .and_then(|mut t| t.remove(&Namespaced::new(timer.key, ts)))
                }
            };
            if let Err(error) = removed {
                ctx.fail(error.to_string());
                return;
            }
        }
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// An index entry without its buffer entry: the store lost what the index promised.
fn missing(state: &str, timestamp: i64) -> StateError {
    StateError::Corrupt(format!(
        "state '{state}': no elements at timestamp {timestamp}, which the index lists"
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::checkpoint::{CheckpointBarrier, CheckpointId, CheckpointKind};
    use crate::exchange::CreditOutbox;
    use crate::operator::co::{TwoInputChained, TwoInputNode};
    use crate::operator::testing::Recorder;
    use crate::operator::{NodeId, OperatorInfo, SideOutputs, StreamElement, TaskCx};
    use crate::state::snapshot::redistribute;
    use crate::state::{
        KeyGroupRange, KeyedBackendConfig, OperatorSnapshot, StateBackendKind, key_group_for_key,
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

    /// The join, noting the most entries its buffers held in memory after any call.
    struct Probed {
        join: Join,
        in_memory_max: Arc<AtomicUsize>,
    }

    impl Probed {
        fn observe(&self) {
            let join = &self.join;
            let in_memory = join.buffers.entries_in_memory()
                + join.index.entries_in_memory()
                + join.timers.entries_in_memory();
            self.in_memory_max.fetch_max(in_memory, Ordering::Relaxed);
        }
    }

    impl TwoInputOperator<Event, Event> for Probed {
        type Out = Pair;
        fn process1(
            &mut self,
            record: Record<Event>,
            ctx: &mut OperatorContext<'_>,
            out: &mut Collector<'_, Pair>,
        ) {
            self.join.process1(record, ctx, out);
            self.observe();
        }
        fn process2(
            &mut self,
            record: Record<Event>,
            ctx: &mut OperatorContext<'_>,
            out: &mut Collector<'_, Pair>,
        ) {
            self.join.process2(record, ctx, out);
            self.observe();
        }
        fn on_watermark(
            &mut self,
            watermark: Watermark,
            ctx: &mut OperatorContext<'_>,
            out: &mut Collector<'_, Pair>,
        ) {
            self.join.on_watermark(watermark, ctx, out);
            self.observe();
        }
        fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
            self.join.initialize_state(ctx)
        }
        fn snapshot_state(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
            self.join.snapshot_state(ctx)
        }
    }

    /// A join node wired to a recorder, its state initialized from `init`.
    struct Harness {
        node: TwoInputNode<Probed, Event, Event>,
        cx: TaskCx,
        recorded: Arc<Mutex<Vec<StreamElement<Pair>>>>,
        in_memory_max: Arc<AtomicUsize>,
    }

    impl Harness {
        fn new(init: &mut StateInitContext) -> Self {
            let in_memory_max = Arc::new(AtomicUsize::new(0));
            let mut operator = Probed {
                join: join(),
                in_memory_max: in_memory_max.clone(),
            };
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
                in_memory_max,
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

    /// A backend of `kind` owning the key groups of subtask `index` of `parts`, LMDB ones with
    /// a cache of 4 entries (most accesses miss, write-backs are frequent) in `dir/name`.
    fn config(
        kind: StateBackendKind,
        dir: &std::path::Path,
        name: &str,
        (parts, index): (u32, u32),
    ) -> KeyedBackendConfig {
        KeyedBackendConfig {
            kind,
            local_dir: dir.join(name),
            key_groups: KeyGroupRange::for_subtask(128, parts, index),
            cache_entries: 4,
            lmdb_map_size: 16 << 20,
            ..KeyedBackendConfig::memory(128)
        }
    }

    const MEMORY: StateBackendKind = StateBackendKind::Memory;
    const LMDB: StateBackendKind = StateBackendKind::Lmdb;

    #[test]
    fn a_restored_join_keeps_its_buffers_and_timers() {
        let inputs = inputs();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut whole = Harness::new(&mut StateInitContext::empty(128));
        whole.feed(&inputs, &|_| true);
        whole.feed(&[Input::Watermark(i64::MAX)], &|_| true);
        let (mut expected, late) = whole.take();
        assert!(expected.len() > 20, "{}", expected.len());
        expected.sort_unstable();

        // Both backends, and checkpoints of one restored into the other.
        for (from, to) in [
            (MEMORY, MEMORY),
            (LMDB, LMDB),
            (MEMORY, LMDB),
            (LMDB, MEMORY),
        ] {
            for cut in (0..=inputs.len()).step_by(if from == to { 1 } else { 7 }) {
                for parts in [1u32, 3] {
                    let context = format!("{from:?} -> {to:?}, cut {cut}, {parts} parts");
                    let mut init = StateInitContext::restored(
                        OperatorSnapshot::default(),
                        CheckpointId(0),
                        config(from, dir.path(), "before", (1, 0)),
                    );
                    let mut before = Harness::new(&mut init);
                    let watermark = before.feed(&inputs[..cut], &|_| true);
                    let snapshot = before.checkpoint();
                    let (mut pairs, mut late_total) = before.take();
                    drop(before);
                    for index in 0..parts {
                        let share =
                            redistribute(std::slice::from_ref(&snapshot), 128, parts, index)
                                .expect("redistributes");
                        let name = format!("after-{index}");
                        let config = config(to, dir.path(), &name, (parts, index));
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
                    assert_eq!(pairs, expected, "{context}");
                    assert_eq!(late_total, late, "{context}");
                }
            }
        }
    }

    /// With LMDB, the buffers, their index and the timers are in LMDB: memory holds at most 4
    /// entries of each of the three stores' caches (buffers, index, the timers' head and
    /// pending writes) while the buffers hold many more, and checkpoints read them back from
    /// LMDB equal to the memory backend's.
    #[test]
    fn lmdb_buffers_live_in_lmdb() {
        let dir = tempfile::tempdir().expect("temp dir");
        let inputs: Vec<Input> = inputs()
            .into_iter()
            .filter(|input| !matches!(input, Input::Watermark(_)))
            .collect();
        let mut snapshots = Vec::new();
        for kind in [MEMORY, LMDB] {
            let mut init = StateInitContext::restored(
                OperatorSnapshot::default(),
                CheckpointId(0),
                config(kind, dir.path(), "join", (1, 0)),
            );
            let mut harness = Harness::new(&mut init);
            harness.feed(&inputs, &|_| true);
            let snapshot = harness.checkpoint();
            let buffered = snapshot
                .keyed
                .entries
                .iter()
                .filter(|e| e.state != snapshot.keyed.state_index(TIMERS_STATE).unwrap_or(9))
                .count();
            assert!(buffered > 40, "{buffered} buffer entries");
            let in_memory_max = harness.in_memory_max.load(Ordering::Relaxed);
            match kind {
                MEMORY => assert!(in_memory_max >= buffered),
                _ => assert!(in_memory_max <= 4 * 4, "{in_memory_max} entries in memory"),
            }
            harness.take();
            snapshots.push(snapshot);
        }
        assert_eq!(snapshots[0], snapshots[1]);
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
