//! The broadcast state pattern (Flink's `CoBroadcastWithNonKeyedOperator` and
//! `CoBroadcastWithKeyedOperator`): a two-input operator whose second input is broadcast to every
//! subtask and written into **broadcast state**, which the first input can only read.
//!
//! ## Design
//!
//! [`BroadcastStates`] is the store: one `BTreeMap<K, V>` per declared
//! [`MapStateDescriptor`], behind a small object-safe trait so maps of different types live side
//! by side. Functions reach a map through their context: [`BroadcastContext::broadcast_state`]
//! (the broadcast side) lends a [`BroadcastState`] that can change it,
//! [`BroadcastReadOnlyContext::broadcast_state`] and
//! [`KeyedBroadcastReadOnlyContext::broadcast_state`] (the other side, and timers) lend a
//! [`ReadOnlyBroadcastState`] that has no method to change it. The split is in the types: the
//! non-broadcast side cannot write broadcast state, so every subtask, seeing the same broadcast
//! elements in the same order, holds the same content.
//!
//! The keyed operator keeps keyed state and timers in a [`KeyedRuntime`], as the keyed process
//! operators do; its context hands the [`KeyedContext`] through to state handles
//! ([`KeyedStateAccess`]) and timers. Its broadcast side has no current key: its
//! [`KeyedBroadcastContext`] reaches the keyed state of every key instead, through
//! [`KeyedBroadcastContext::apply_to_keyed_state`] ([`KeyedStateStore::apply_to_state`]: the
//! keys with a live value of one state, in key group order on both backends).
//!
//! ## Invariants
//!
//! - Broadcast state is checkpointed as operator list state in [`OperatorStateMode::Broadcast`]
//!   mode, one list per descriptor, elements `(key, value)` in key order. Every subtask stores
//!   its copy; a restore (at any parallelism) gives every subtask one copy.
//! - Only declared states exist: a state restored from a checkpoint but no longer declared is not
//!   restored (and so not checkpointed again).
//! - Accessing an undeclared state, or a declared one with other types, fails the task with a
//!   [`StateError`]; the access then sees an empty state and its writes are dropped.

use std::any::Any;
use std::borrow::Borrow;
use std::cell::Cell;
use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::co::TwoInputOperator;
use super::keyed_process::{KeyedContext, KeyedRuntime};
use super::{
    Collector, FunctionError, OperatorContext, Record, RuntimeContext, StateInitContext,
    StateSnapshotContext,
};
use crate::api::Key;
use crate::api::{
    BroadcastProcessFunction, KeyedBroadcastProcessFunction, MapStateDescriptor, OutputTag,
};
use crate::operator::window::TimeDomain;
use crate::state::{
    KeyedStateAccess, KeyedStateHandle, KeyedStateScope, KeyedStateStore, OperatorStateMode,
    StateError,
};
use crate::time::Watermark;

/// A declared broadcast state with its types erased: its name, its type, and how to create or
/// decode its map.
#[derive(Clone)]
pub(crate) struct BroadcastStateSpec {
    name: String,
    describe: fn() -> String,
    new_map: fn() -> Box<dyn ErasedBroadcastMap>,
    decode: DecodeMap,
}

/// Decodes the restored elements of broadcast state `name` into its typed map.
type DecodeMap = fn(&str, &[Vec<u8>]) -> Result<Box<dyn ErasedBroadcastMap>, StateError>;

impl std::fmt::Debug for BroadcastStateSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastStateSpec")
            .field("name", &self.name)
            .field("type", &(self.describe)())
            .finish()
    }
}

impl BroadcastStateSpec {
    /// The spec of `descriptor`.
    pub(crate) fn of<K, V>(descriptor: &MapStateDescriptor<K, V>) -> Self
    where
        K: Ord + Serialize + DeserializeOwned + Send + 'static,
        V: Serialize + DeserializeOwned + Send + 'static,
    {
        Self {
            name: descriptor.name().to_string(),
            describe: describe::<K, V>,
            new_map: new_map::<K, V>,
            decode: decode_map::<K, V>,
        }
    }

    /// The state's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The state's type, as error messages name it.
    pub(crate) fn type_name(&self) -> String {
        (self.describe)()
    }
}

fn describe<K, V>() -> String {
    format!(
        "BroadcastState<{}, {}>",
        std::any::type_name::<K>(),
        std::any::type_name::<V>()
    )
}

fn new_map<K, V>() -> Box<dyn ErasedBroadcastMap>
where
    K: Ord + Serialize + Send + 'static,
    V: Serialize + Send + 'static,
{
    Box::new(BTreeMap::<K, V>::new())
}

/// Decodes the elements of a broadcast list state: each a postcard `(key, value)`.
fn decode_map<K, V>(
    name: &str,
    elements: &[Vec<u8>],
) -> Result<Box<dyn ErasedBroadcastMap>, StateError>
where
    K: Ord + Serialize + DeserializeOwned + Send + 'static,
    V: Serialize + DeserializeOwned + Send + 'static,
{
    let mut map = BTreeMap::<K, V>::new();
    for (i, bytes) in elements.iter().enumerate() {
        let corrupt = |what: String| {
            StateError::Corrupt(format!(
                "broadcast state '{name}' ({}), entry {i}: {what}",
                describe::<K, V>()
            ))
        };
        let ((key, value), rest) =
            postcard::take_from_bytes::<(K, V)>(bytes).map_err(|e| corrupt(e.to_string()))?;
        if !rest.is_empty() {
            return Err(corrupt(format!("{} trailing bytes", rest.len())));
        }
        if map.insert(key, value).is_some() {
            return Err(corrupt("a key appears twice".to_string()));
        }
    }
    Ok(Box::new(map))
}

/// A typed broadcast map seen without its types.
trait ErasedBroadcastMap: Send {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Adds the map to a checkpoint as broadcast list state `name`.
    fn snapshot(&self, name: &str, ctx: &mut StateSnapshotContext) -> Result<(), StateError>;
}

impl<K, V> ErasedBroadcastMap for BTreeMap<K, V>
where
    K: Ord + Serialize + Send + 'static,
    V: Serialize + Send + 'static,
{
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn snapshot(&self, name: &str, ctx: &mut StateSnapshotContext) -> Result<(), StateError> {
        let entries: Vec<(&K, &V)> = self.iter().collect();
        ctx.add_list_state(name, OperatorStateMode::Broadcast, &entries)
    }
}

/// The broadcast states of one operator instance: a map per declared descriptor.
///
/// Call order: [`BroadcastStates::initialize`] once before the first element, then any number of
/// accesses and [`BroadcastStates::snapshot`]s. An access that fails records its error; the
/// operator takes it with [`BroadcastStates::take_error`] after each call into user code.
pub(crate) struct BroadcastStates {
    /// In declaration order.
    states: Vec<(BroadcastStateSpec, Box<dyn ErasedBroadcastMap>)>,
    /// The first failed access since the last `take_error` (read-only accesses borrow the store
    /// shared, hence the cell).
    error: Cell<Option<StateError>>,
}

impl std::fmt::Debug for BroadcastStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastStates")
            .field(
                "states",
                &self
                    .states
                    .iter()
                    .map(|(s, _)| s.name())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Clone for BroadcastStates {
    /// The declared states, empty: every operator instance starts from its own (restored) state.
    fn clone(&self) -> Self {
        Self::new(self.states.iter().map(|(spec, _)| spec.clone()).collect())
    }
}

impl BroadcastStates {
    /// Empty maps for the declared `specs` (names are unique: the API checks them).
    pub(crate) fn new(specs: Vec<BroadcastStateSpec>) -> Self {
        Self {
            states: specs
                .into_iter()
                .map(|spec| {
                    let map = (spec.new_map)();
                    (spec, map)
                })
                .collect(),
            error: Cell::new(None),
        }
    }

    /// Restores every declared state from the checkpoint (empty if it has none).
    ///
    /// # Errors
    ///
    /// [`StateError::Corrupt`] if a restored state is not broadcast state or does not decode
    /// with the declared types.
    pub(crate) fn initialize(&mut self, ctx: &mut StateInitContext) -> Result<(), StateError> {
        for (spec, map) in &mut self.states {
            *map = match ctx.take_operator_state(spec.name()) {
                None => (spec.new_map)(),
                Some(restored) if restored.mode != OperatorStateMode::Broadcast => {
                    return Err(StateError::Corrupt(format!(
                        "operator state '{}' of '{}' is stored as {:?} state, not as broadcast \
                         state",
                        spec.name(),
                        ctx.state_id(),
                        restored.mode
                    )));
                }
                Some(restored) => (spec.decode)(spec.name(), &restored.elements)?,
            };
        }
        Ok(())
    }

    /// Adds every state to the checkpoint (nothing when the snapshot is not persisted).
    ///
    /// # Errors
    ///
    /// A key or value cannot be encoded.
    pub(crate) fn snapshot(&self, ctx: &mut StateSnapshotContext) -> Result<(), StateError> {
        if ctx.is_persisted() {
            for (spec, map) in &self.states {
                map.snapshot(spec.name(), ctx)?;
            }
        }
        Ok(())
    }

    /// The error of the first failed access since the last call, if any.
    pub(crate) fn take_error(&self) -> Option<StateError> {
        self.error.take()
    }

    fn fail(&self, error: StateError) {
        let first = self.error.take().unwrap_or(error);
        self.error.set(Some(first));
    }

    fn index_of<K: 'static, V: 'static>(
        &self,
        descriptor: &MapStateDescriptor<K, V>,
    ) -> Result<usize, StateError> {
        let Some(index) = self
            .states
            .iter()
            .position(|(spec, _)| spec.name() == descriptor.name())
        else {
            return Err(StateError::Backend(format!(
                "broadcast state '{}' is not declared: pass its descriptor to \
                 `broadcast_state` (or `BroadcastStream::with_state`)",
                descriptor.name()
            )));
        };
        let (spec, map) = &self.states[index];
        if map.as_any().is::<BTreeMap<K, V>>() {
            Ok(index)
        } else {
            Err(StateError::TypeMismatch {
                name: spec.name().to_string(),
                registered: spec.type_name(),
                requested: describe::<K, V>(),
            })
        }
    }

    /// The map of `descriptor`, or `None` after recording why not.
    fn map<K: 'static, V: 'static>(
        &self,
        descriptor: &MapStateDescriptor<K, V>,
    ) -> Option<&BTreeMap<K, V>> {
        match self.index_of(descriptor) {
            Ok(index) => self.states[index].1.as_any().downcast_ref(),
            Err(error) => {
                self.fail(error);
                None
            }
        }
    }

    /// The map of `descriptor`, mutably, or `None` after recording why not.
    fn map_mut<K: 'static, V: 'static>(
        &mut self,
        descriptor: &MapStateDescriptor<K, V>,
    ) -> Option<&mut BTreeMap<K, V>> {
        match self.index_of(descriptor) {
            Ok(index) => self.states[index].1.as_any_mut().downcast_mut(),
            Err(error) => {
                self.fail(error);
                None
            }
        }
    }
}

/// Read access to one broadcast state (Flink's `ReadOnlyBroadcastState`): what the
/// non-broadcast side and timers get. It has no method that changes the state.
///
/// A state the function may not use (undeclared, other types) reads as empty; the task fails.
///
/// Modifying broadcast state from the non-broadcast side does not compile:
///
/// ```compile_fail,E0599
/// use eichhorn::prelude::*;
/// use eichhorn::api::MapStateDescriptor;
///
/// #[operator]
/// #[derive(Clone)]
/// struct Sneaky { limits: MapStateDescriptor<String, i64> }
///
/// impl BroadcastProcessFunction<(String, i64), (String, i64)> for Sneaky {
///     type Out = i64;
///     fn process_element(&mut self, (k, v): (String, i64), ctx: &mut BroadcastReadOnlyContext<'_, '_>, _out: &mut Collector<'_, i64>) {
///         ctx.broadcast_state(&self.limits).put(k, v); // no `put` on a read-only state
///     }
///     fn process_broadcast_element(&mut self, (k, v): (String, i64), ctx: &mut BroadcastContext<'_, '_>, _out: &mut Collector<'_, i64>) {
///         ctx.broadcast_state(&self.limits).put(k, v);
///     }
/// }
/// ```
pub struct ReadOnlyBroadcastState<'a, K, V> {
    map: Option<&'a BTreeMap<K, V>>,
}

impl<K, V> std::fmt::Debug for ReadOnlyBroadcastState<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOnlyBroadcastState")
            .field("len", &self.map.map_or(0, BTreeMap::len))
            .finish()
    }
}

impl<K, V> Clone for ReadOnlyBroadcastState<'_, K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for ReadOnlyBroadcastState<'_, K, V> {}

impl<'a, K: Ord, V> ReadOnlyBroadcastState<'a, K, V> {
    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&'a V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.map?.get(key)
    }

    /// Whether `key` has a value.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.map.is_some_and(|map| map.contains_key(key))
    }

    /// Every entry, in key order.
    pub fn entries(self) -> impl Iterator<Item = (&'a K, &'a V)> + 'a {
        self.map.into_iter().flat_map(BTreeMap::iter)
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.map.map_or(0, BTreeMap::len)
    }

    /// Whether the state has no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Read and write access to one broadcast state (Flink's `BroadcastState`): what the broadcast
/// side gets.
///
/// Every subtask applies the same broadcast elements, so the function must change the state
/// the same way in each: depending only on the element and the state, never on the subtask,
/// processing time or randomness.
///
/// A state the function may not use (undeclared, other types) reads as empty and drops writes;
/// the task fails.
pub struct BroadcastState<'a, K, V> {
    map: Option<&'a mut BTreeMap<K, V>>,
}

impl<K, V> std::fmt::Debug for BroadcastState<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastState")
            .field("len", &self.len())
            .finish()
    }
}

impl<K, V> BroadcastState<'_, K, V> {
    /// The number of entries.
    pub fn len(&self) -> usize {
        self.map.as_deref().map_or(0, BTreeMap::len)
    }

    /// Whether the state has no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        if let Some(map) = self.map.as_deref_mut() {
            map.clear();
        }
    }
}

impl<K: Ord, V> BroadcastState<'_, K, V> {
    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.map.as_deref()?.get(key)
    }

    /// Whether `key` has a value.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.map.as_deref().is_some_and(|map| map.contains_key(key))
    }

    /// Every entry, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.as_deref().into_iter().flat_map(BTreeMap::iter)
    }

    /// Sets the value of `key`; returns the old one.
    pub fn put(&mut self, key: K, value: V) -> Option<V> {
        self.map.as_deref_mut()?.insert(key, value)
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.map.as_deref_mut()?.remove(key)
    }
}

/// What a [`BroadcastProcessFunction`] sees while it handles an element of the non-broadcast
/// input: broadcast state to read, the element's timestamp, side outputs.
pub struct BroadcastReadOnlyContext<'a, 'b> {
    operator: &'a mut OperatorContext<'b>,
    broadcast: &'a BroadcastStates,
    watermark: i64,
}

impl std::fmt::Debug for BroadcastReadOnlyContext<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastReadOnlyContext")
            .field("timestamp", &self.operator.timestamp())
            .field("watermark", &self.watermark)
            .finish()
    }
}

impl<'a> BroadcastReadOnlyContext<'a, '_> {
    /// The broadcast state `descriptor` names, to read.
    pub fn broadcast_state<K: 'static, V: 'static>(
        &self,
        descriptor: &MapStateDescriptor<K, V>,
    ) -> ReadOnlyBroadcastState<'a, K, V> {
        let broadcast: &'a BroadcastStates = self.broadcast;
        ReadOnlyBroadcastState {
            map: broadcast.map(descriptor),
        }
    }

    /// The element's event-time timestamp, if it has one.
    pub fn timestamp(&self) -> Option<i64> {
        self.operator.timestamp()
    }

    /// The operator's current watermark (the minimum over both inputs).
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    /// The current processing time in milliseconds.
    pub fn current_processing_time(&self) -> i64 {
        self.operator.current_processing_time()
    }

    /// Emits `value` to the side output `tag`.
    pub fn output<U: 'static>(&mut self, tag: &OutputTag<U>, value: U) {
        self.operator.output(tag, value);
    }
}

/// What a broadcast process function sees while it handles an element of the broadcast input:
/// broadcast state to read and write, the element's timestamp, side outputs.
pub struct BroadcastContext<'a, 'b> {
    operator: &'a mut OperatorContext<'b>,
    broadcast: &'a mut BroadcastStates,
    watermark: i64,
}

impl std::fmt::Debug for BroadcastContext<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastContext")
            .field("timestamp", &self.operator.timestamp())
            .field("watermark", &self.watermark)
            .finish()
    }
}

impl BroadcastContext<'_, '_> {
    /// The broadcast state `descriptor` names, to read and change.
    pub fn broadcast_state<K: 'static, V: 'static>(
        &mut self,
        descriptor: &MapStateDescriptor<K, V>,
    ) -> BroadcastState<'_, K, V> {
        BroadcastState {
            map: self.broadcast.map_mut(descriptor),
        }
    }

    /// The element's event-time timestamp, if it has one.
    pub fn timestamp(&self) -> Option<i64> {
        self.operator.timestamp()
    }

    /// The operator's current watermark (the minimum over both inputs).
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    /// The current processing time in milliseconds.
    pub fn current_processing_time(&self) -> i64 {
        self.operator.current_processing_time()
    }

    /// Emits `value` to the side output `tag`.
    pub fn output<U: 'static>(&mut self, tag: &OutputTag<U>, value: U) {
        self.operator.output(tag, value);
    }
}

/// What a [`KeyedBroadcastProcessFunction`] sees while it handles an element of the broadcast
/// input (Flink's `KeyedBroadcastProcessFunction.Context`): broadcast state to read and write,
/// the element's timestamp, side outputs, and the keyed state of every key of this subtask
/// through [`KeyedBroadcastContext::apply_to_keyed_state`] (there is no current key here).
pub struct KeyedBroadcastContext<'a, 'b, K> {
    broadcast: BroadcastContext<'a, 'b>,
    keyed: &'a mut KeyedStateStore<K>,
}

impl<K> std::fmt::Debug for KeyedBroadcastContext<'_, '_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedBroadcastContext")
            .field("broadcast", &self.broadcast)
            .field("keyed", &self.keyed)
            .finish()
    }
}

impl<K: Key> KeyedBroadcastContext<'_, '_, K> {
    /// The broadcast state `descriptor` names, to read and change.
    pub fn broadcast_state<BK: 'static, BV: 'static>(
        &mut self,
        descriptor: &MapStateDescriptor<BK, BV>,
    ) -> BroadcastState<'_, BK, BV> {
        self.broadcast.broadcast_state(descriptor)
    }

    /// Runs `function` over the keyed state of every key of this subtask that holds a live
    /// value of `state` (Flink's `applyToKeyedState`): once per key, with the key and a context
    /// scoped to it to pass to the handles, to read, change or clear the key's state (any
    /// state of the key, not only `state`).
    ///
    /// Keys come in key group order and, within a key group, by their postcard bytes: the same
    /// order on both state backends and in every run. Values expired under `state`'s TTL are
    /// not visited. LMDB writes its cache back and scans the state's range of each key group.
    /// Every subtask runs the function over its own keys when the broadcast element reaches it.
    ///
    /// A state error (another type under the state's name, corrupt bytes, a backend failure)
    /// fails the task; the keys after it are not visited.
    ///
    /// # Examples
    ///
    /// A broadcast `"reset"` clears every user's count, on every subtask:
    ///
    /// ```
    /// use eichhorn::prelude::*;
    /// use eichhorn::state::ValueState;
    ///
    /// #[operator]
    /// struct Count {
    ///     #[state(name = "count")]
    ///     counts: ValueState<u64>,
    /// }
    ///
    /// impl KeyedBroadcastProcessFunction for Count {
    ///     type Key = u32;
    ///     type In1 = u32;
    ///     type In2 = String;
    ///     type Out = (u32, u64);
    ///
    ///     fn process_element(&mut self, user: u32, ctx: &mut KeyedBroadcastReadOnlyContext<'_, u32>, out: &mut Collector<'_, (u32, u64)>) {
    ///         let count = self.counts.value(ctx).unwrap_or(0) + 1;
    ///         self.counts.update(ctx, count);
    ///         out.collect((user, count));
    ///     }
    ///
    ///     fn process_broadcast_element(&mut self, command: String, ctx: &mut KeyedBroadcastContext<'_, '_, u32>, out: &mut Collector<'_, (u32, u64)>) {
    ///         if command == "reset" {
    ///             let counts = &self.counts;
    ///             ctx.apply_to_keyed_state(counts, |user, state| {
    ///                 // Report the reset as (user, 0), then clear the count.
    ///                 if counts.value(state).is_some() {
    ///                     out.collect((*user, 0));
    ///                 }
    ///                 counts.clear(state);
    ///             });
    ///         }
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let env = StreamEnv::new();
    /// env.set_parallelism(2);
    /// let commands = MapStateDescriptor::<String, ()>::new("commands");
    /// let users = env.from_collection(vec![1u32, 2, 1, 2]);
    /// let resets = env
    ///     .from_collection(vec!["reset".to_string()])
    ///     .broadcast_state(&commands);
    /// let counts = users
    ///     .key_by(|user: &u32| *user)
    ///     .connect_broadcast(resets)
    ///     .process(Count::new())
    ///     .collect_sink();
    /// env.execute("reset counts").await.unwrap();
    /// // The two inputs are not ordered against each other: whether the reset came before,
    /// // between or after a user's elements depends on timing. Each user counts to 2 unless a
    /// // reset came in between; a reset reports only the users that had counted.
    /// let counts = counts.take();
    /// for user in [1, 2] {
    ///     let seen: Vec<u64> = counts.iter().filter(|(u, _)| *u == user).map(|(_, c)| *c).collect();
    ///     assert!(seen.len() >= 2, "{seen:?}");
    ///     assert!(seen.iter().all(|count| *count <= 2));
    /// }
    /// # }
    /// ```
    pub fn apply_to_keyed_state<H: KeyedStateHandle>(
        &mut self,
        state: &H,
        mut function: impl FnMut(&K, &mut KeyedStateScope<'_, K>),
    ) {
        let now_ms = self.broadcast.current_processing_time();
        if let Err(error) = self.keyed.apply_to_state(state, now_ms, &mut function) {
            self.broadcast.operator.fail(error.to_string());
        }
    }

    /// The element's event-time timestamp, if it has one.
    pub fn timestamp(&self) -> Option<i64> {
        self.broadcast.timestamp()
    }

    /// The operator's current watermark (the minimum over both inputs).
    pub fn current_watermark(&self) -> i64 {
        self.broadcast.current_watermark()
    }

    /// The current processing time in milliseconds.
    pub fn current_processing_time(&self) -> i64 {
        self.broadcast.current_processing_time()
    }

    /// Emits `value` to the side output `tag`.
    pub fn output<U: 'static>(&mut self, tag: &OutputTag<U>, value: U) {
        self.broadcast.output(tag, value);
    }
}

/// A [`KeyedContext`] with its lifetimes erased.
///
/// A timer's context is only lent to the operator (`&mut KeyedContext<'x, 'y, K>`), and the
/// lifetimes inside cannot be shortened behind `&mut`; a trait object can name them as one, so
/// [`KeyedBroadcastReadOnlyContext`] needs one lifetime instead of three.
trait KeyedScope<K>: KeyedStateAccess<K> {
    fn with_context(&mut self, f: &mut dyn FnMut(&mut KeyedContext<'_, '_, K>));
    fn with_context_ref(&self, f: &mut dyn FnMut(&KeyedContext<'_, '_, K>));
}

impl<K: Ord + std::hash::Hash + Clone + Send + 'static> KeyedScope<K> for KeyedContext<'_, '_, K> {
    fn with_context(&mut self, f: &mut dyn FnMut(&mut KeyedContext<'_, '_, K>)) {
        f(self);
    }
    fn with_context_ref(&self, f: &mut dyn FnMut(&KeyedContext<'_, '_, K>)) {
        f(self);
    }
}

/// What a [`KeyedBroadcastProcessFunction`] sees while it handles an element of the keyed input
/// or a timer: broadcast state to read, the current key's keyed state (pass the context to
/// [`ValueState`](crate::state::ValueState) and the other handles), timers, side outputs.
pub struct KeyedBroadcastReadOnlyContext<'a, K> {
    keyed: &'a mut (dyn KeyedScope<K> + 'a),
    broadcast: &'a BroadcastStates,
}

impl<K> std::fmt::Debug for KeyedBroadcastReadOnlyContext<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("KeyedBroadcastReadOnlyContext");
        self.keyed.with_context_ref(&mut |keyed| {
            out.field("keyed", keyed);
        });
        out.finish()
    }
}

impl<'a, K: Ord + std::hash::Hash + Clone + Send + 'static> KeyedBroadcastReadOnlyContext<'a, K> {
    /// The broadcast state `descriptor` names, to read.
    pub fn broadcast_state<BK: 'static, BV: 'static>(
        &self,
        descriptor: &MapStateDescriptor<BK, BV>,
    ) -> ReadOnlyBroadcastState<'a, BK, BV> {
        let broadcast: &'a BroadcastStates = self.broadcast;
        ReadOnlyBroadcastState {
            map: broadcast.map(descriptor),
        }
    }

    /// The key of the element or timer being processed.
    pub fn current_key(&self) -> &K {
        self.keyed.current_key()
    }

    /// The element's timestamp (in `on_timer`: the timer's timestamp).
    pub fn timestamp(&self) -> Option<i64> {
        let mut timestamp = None;
        self.keyed
            .with_context_ref(&mut |keyed| timestamp = keyed.timestamp());
        timestamp
    }

    /// In `on_timer`: whether an event-time or a processing-time timer fired.
    pub fn time_domain(&self) -> Option<TimeDomain> {
        let mut domain = None;
        self.keyed
            .with_context_ref(&mut |keyed| domain = keyed.time_domain());
        domain
    }

    /// The operator's current watermark (the minimum over both inputs).
    pub fn current_watermark(&self) -> i64 {
        let mut watermark = i64::MIN;
        self.keyed
            .with_context_ref(&mut |keyed| watermark = keyed.current_watermark());
        watermark
    }

    /// The current processing time in milliseconds.
    pub fn current_processing_time(&self) -> i64 {
        self.keyed.current_processing_time()
    }

    /// Registers an event-time timer for the current key (once per timestamp); it fires when the
    /// watermark reaches `timestamp`.
    pub fn register_event_time_timer(&mut self, timestamp: i64) {
        self.keyed
            .with_context(&mut |keyed| keyed.register_event_time_timer(timestamp));
    }

    /// Deletes the current key's event-time timer at `timestamp`, if any.
    pub fn delete_event_time_timer(&mut self, timestamp: i64) {
        self.keyed
            .with_context(&mut |keyed| keyed.delete_event_time_timer(timestamp));
    }

    /// Registers a processing-time timer for the current key.
    pub fn register_processing_time_timer(&mut self, timestamp: i64) {
        self.keyed
            .with_context(&mut |keyed| keyed.register_processing_time_timer(timestamp));
    }

    /// Deletes the current key's processing-time timer at `timestamp`, if any.
    pub fn delete_processing_time_timer(&mut self, timestamp: i64) {
        self.keyed
            .with_context(&mut |keyed| keyed.delete_processing_time_timer(timestamp));
    }

    /// Emits `value` to the side output `tag`.
    pub fn output<U: 'static>(&mut self, tag: &OutputTag<U>, value: U) {
        let mut value = Some(value);
        self.keyed.with_context(&mut |keyed| {
            if let Some(value) = value.take() {
                keyed.output(tag, value);
            }
        });
    }
}

impl<K> KeyedStateAccess<K> for KeyedBroadcastReadOnlyContext<'_, K> {
    fn current_key(&self) -> &K {
        self.keyed.current_key()
    }
    fn state_store(&mut self) -> &mut KeyedStateStore<K> {
        self.keyed.state_store()
    }
    fn state_error(&mut self, error: StateError) {
        self.keyed.state_error(error);
    }
    fn current_processing_time(&self) -> i64 {
        self.keyed.current_processing_time()
    }
}

/// Runs a [`BroadcastProcessFunction`]: input 1 is the non-broadcast stream, input 2 the
/// broadcast stream.
#[derive(Debug, Clone)]
pub(crate) struct BroadcastProcessOperator<F> {
    function: F,
    broadcast: BroadcastStates,
    watermark: i64,
}

impl<F> BroadcastProcessOperator<F> {
    pub(crate) fn new(function: F, specs: Vec<BroadcastStateSpec>) -> Self {
        Self {
            function,
            broadcast: BroadcastStates::new(specs),
            watermark: i64::MIN,
        }
    }
}

impl<A, B, F> TwoInputOperator<A, B> for BroadcastProcessOperator<F>
where
    F: BroadcastProcessFunction<A, B>,
    F::Out: Send + 'static,
{
    type Out = F::Out;

    fn state_schema(&self) -> crate::state::StateSchema {
        crate::api::Operator::state_schema(&self.function)
    }

    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        crate::api::operator::initialize_fields(&mut self.function, ctx)?;
        Ok(self.broadcast.initialize(ctx)?)
    }

    fn snapshot_state(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        crate::api::operator::snapshot_fields(&self.function, ctx)?;
        Ok(self.broadcast.snapshot(ctx)?)
    }

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.function.open(ctx)
    }

    fn process1(
        &mut self,
        record: Record<A>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let mut read_only = BroadcastReadOnlyContext {
            operator: ctx,
            broadcast: &self.broadcast,
            watermark: self.watermark,
        };
        self.function
            .process_element(record.value, &mut read_only, out);
        if let Some(error) = self.broadcast.take_error() {
            ctx.fail(error.to_string());
        }
    }

    fn process2(
        &mut self,
        record: Record<B>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let mut writable = BroadcastContext {
            operator: ctx,
            broadcast: &mut self.broadcast,
            watermark: self.watermark,
        };
        self.function
            .process_broadcast_element(record.value, &mut writable, out);
        if let Some(error) = self.broadcast.take_error() {
            ctx.fail(error.to_string());
        }
    }

    fn on_watermark(
        &mut self,
        watermark: Watermark,
        _ctx: &mut OperatorContext<'_>,
        _out: &mut Collector<'_, F::Out>,
    ) {
        self.watermark = self.watermark.max(watermark.timestamp);
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.function.close()
    }
}

/// Runs a [`KeyedBroadcastProcessFunction`]: input 1 is the keyed stream (with keyed state and
/// timers), input 2 the broadcast stream.
pub(crate) struct KeyedBroadcastProcessOperator<KS, F: KeyedBroadcastProcessFunction> {
    key_selector: KS,
    function: F,
    runtime: KeyedRuntime<F::Key>,
    broadcast: BroadcastStates,
    watermark: i64,
}

impl<KS: Clone, F: KeyedBroadcastProcessFunction> Clone for KeyedBroadcastProcessOperator<KS, F> {
    fn clone(&self) -> Self {
        Self {
            key_selector: self.key_selector.clone(),
            function: self.function.clone(),
            runtime: KeyedRuntime::new(),
            broadcast: self.broadcast.clone(),
            watermark: i64::MIN,
        }
    }
}

impl<KS, F: KeyedBroadcastProcessFunction> KeyedBroadcastProcessOperator<KS, F> {
    pub(crate) fn new(key_selector: KS, function: F, specs: Vec<BroadcastStateSpec>) -> Self {
        Self {
            key_selector,
            function,
            runtime: KeyedRuntime::new(),
            broadcast: BroadcastStates::new(specs),
            watermark: i64::MIN,
        }
    }
}

impl<KS, F> TwoInputOperator<F::In1, F::In2> for KeyedBroadcastProcessOperator<KS, F>
where
    F: KeyedBroadcastProcessFunction,
    F::In1: Send + 'static,
    F::In2: Send + 'static,
    F::Out: Send + 'static,
    KS: Fn(&F::In1) -> F::Key + Clone + Send + 'static,
{
    type Out = F::Out;

    fn state_schema(&self) -> crate::state::StateSchema {
        crate::api::Operator::state_schema(&self.function)
    }

    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        crate::api::operator::initialize_fields(&mut self.function, ctx)?;
        self.runtime.initialize(ctx)?;
        Ok(self.broadcast.initialize(ctx)?)
    }

    fn snapshot_state(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        crate::api::operator::snapshot_fields(&self.function, ctx)?;
        self.runtime.snapshot(ctx)?;
        Ok(self.broadcast.snapshot(ctx)?)
    }

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.function.open(ctx)
    }

    fn process1(
        &mut self,
        record: Record<F::In1>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let key = (self.key_selector)(&record.value);
        let mut keyed = self.runtime.element_context(&key, record.timestamp, ctx);
        let mut read_only = KeyedBroadcastReadOnlyContext {
            keyed: &mut keyed,
            broadcast: &self.broadcast,
        };
        self.function
            .process_element(record.value, &mut read_only, out);
        if let Some(error) = self.broadcast.take_error() {
            keyed.state_error(error);
        }
    }

    fn process2(
        &mut self,
        record: Record<F::In2>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let mut writable = KeyedBroadcastContext {
            broadcast: BroadcastContext {
                operator: ctx,
                broadcast: &mut self.broadcast,
                watermark: self.watermark,
            },
            keyed: self.runtime.state_store(),
        };
        self.function
            .process_broadcast_element(record.value, &mut writable, out);
        if let Some(error) = self.broadcast.take_error() {
            ctx.fail(error.to_string());
        }
    }

    fn on_watermark(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.watermark = self.watermark.max(watermark.timestamp);
        let function = &mut self.function;
        let broadcast = &self.broadcast;
        self.runtime
            .on_watermark(watermark, ctx, out, |timestamp, keyed, out| {
                fire(function, broadcast, timestamp, keyed, out);
            });
    }

    fn on_processing_time(
        &mut self,
        now_ms: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let function = &mut self.function;
        let broadcast = &self.broadcast;
        self.runtime
            .on_processing_time(now_ms, ctx, out, |timestamp, keyed, out| {
                fire(function, broadcast, timestamp, keyed, out);
            });
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.function.close()
    }
}

/// Calls `on_timer` with a read-only view of broadcast state.
fn fire<F: KeyedBroadcastProcessFunction>(
    function: &mut F,
    broadcast: &BroadcastStates,
    timestamp: i64,
    keyed: &mut KeyedContext<'_, '_, F::Key>,
    out: &mut Collector<'_, F::Out>,
) {
    let mut read_only = KeyedBroadcastReadOnlyContext { keyed, broadcast };
    function.on_timer(timestamp, &mut read_only, out);
    if let Some(error) = broadcast.take_error() {
        keyed.state_error(error);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap as Map;
    use std::sync::Arc;

    use super::*;
    use crate::checkpoint::{CheckpointBarrier, CheckpointId, CheckpointKind};
    use crate::operator::TaskStateInit;
    use crate::state::snapshot::redistribute;
    use crate::state::{OperatorListState, OperatorSnapshot, StateBackendKind};

    fn limits() -> MapStateDescriptor<String, i64> {
        MapStateDescriptor::new("limits")
    }

    fn versions() -> MapStateDescriptor<u8, u32> {
        MapStateDescriptor::new("versions")
    }

    fn declared() -> BroadcastStates {
        BroadcastStates::new(vec![
            BroadcastStateSpec::of(&limits()),
            BroadcastStateSpec::of(&versions()),
        ])
    }

    fn snapshot(states: &BroadcastStates) -> OperatorSnapshot {
        let barrier = CheckpointBarrier {
            id: CheckpointId(1),
            kind: CheckpointKind::Checkpoint,
        };
        let mut ctx = StateSnapshotContext::new(barrier, 0, true);
        states.snapshot(&mut ctx).expect("snapshots");
        ctx.into_pending().complete().expect("completes")
    }

    fn init_from(snapshot: OperatorSnapshot) -> StateInitContext {
        let task = TaskStateInit::new(
            Map::from([("op".to_string(), snapshot)]),
            Some(CheckpointId(1)),
            StateBackendKind::Memory,
            std::env::temp_dir(),
            16,
            1 << 20,
        );
        StateInitContext::new(&Arc::new(task), "op", 128, 1, 0)
    }

    fn contents(states: &BroadcastStates) -> Vec<(String, i64)> {
        ReadOnlyBroadcastState {
            map: states.map(&limits()),
        }
        .entries()
        .map(|(k, v)| (k.clone(), *v))
        .collect()
    }

    #[test]
    fn states_are_written_read_and_snapshotted_in_key_order() {
        let mut states = declared();
        {
            let mut state = BroadcastState {
                map: states.map_mut(&limits()),
            };
            assert_eq!(state.put("b".into(), 2), None);
            assert_eq!(state.put("a".into(), 1), None);
            assert_eq!(state.put("c".into(), 3), None);
            assert_eq!(state.put("b".into(), 20), Some(2));
            assert_eq!(state.remove("c"), Some(3));
            assert!(state.contains("a"));
            assert_eq!(state.get("b"), Some(&20));
            assert_eq!(state.len(), 2);
        }
        BroadcastState {
            map: states.map_mut(&versions()),
        }
        .put(7, 1);
        assert!(states.take_error().is_none());
        assert_eq!(contents(&states), vec![("a".into(), 1), ("b".into(), 20)]);

        let snapshot = snapshot(&states);
        let stored = snapshot.operator_state("limits").expect("stored");
        assert_eq!(stored.mode, OperatorStateMode::Broadcast);
        let decoded: Vec<(String, i64)> = stored
            .elements
            .iter()
            .map(|e| postcard::from_bytes(e).expect("decodes"))
            .collect();
        assert_eq!(decoded, vec![("a".into(), 1), ("b".into(), 20)]);
    }

    #[test]
    fn every_subtask_restores_one_copy_at_any_parallelism() {
        let mut states = declared();
        BroadcastState {
            map: states.map_mut(&limits()),
        }
        .put("x".into(), 9);
        // Two old subtasks with the same content, restored at parallelism 3.
        let old = vec![snapshot(&states), snapshot(&states)];
        for index in 0..3 {
            let share = redistribute(&old, 128, 3, index).expect("redistributes");
            let mut restored = declared();
            restored
                .initialize(&mut init_from(share))
                .expect("restores");
            assert_eq!(contents(&restored), vec![("x".into(), 9)]);
            let versions = ReadOnlyBroadcastState {
                map: restored.map(&versions()),
            };
            assert!(versions.is_empty());
        }
    }

    #[test]
    fn undeclared_or_mistyped_access_is_reported_and_reads_empty() {
        let mut states = declared();
        let other = MapStateDescriptor::<String, i64>::new("other");
        assert_eq!(
            ReadOnlyBroadcastState {
                map: states.map(&other)
            }
            .len(),
            0
        );
        let error = states.take_error().expect("reported").to_string();
        assert!(error.contains("'other' is not declared"), "{error}");

        let wrong = MapStateDescriptor::<String, String>::new("limits");
        let mut state = BroadcastState {
            map: states.map_mut(&wrong),
        };
        assert_eq!(state.put("a".into(), "b".into()), None);
        assert!(state.is_empty());
        let error = states.take_error().expect("reported").to_string();
        assert!(
            error.contains("state 'limits' holds BroadcastState<alloc::string::String, i64>"),
            "{error}"
        );
        assert!(states.take_error().is_none(), "taken once");
    }

    #[test]
    fn restoring_other_types_or_modes_is_corrupt() {
        let mut states = declared();
        BroadcastState {
            map: states.map_mut(&limits()),
        }
        .put("x".into(), 9);
        let snapshot = snapshot(&states);
        let mut mistyped =
            BroadcastStates::new(vec![BroadcastStateSpec::of(&MapStateDescriptor::<
                u64,
                String,
            >::new("limits"))]);
        assert!(matches!(
            mistyped.initialize(&mut init_from(snapshot)),
            Err(StateError::Corrupt(_))
        ));

        let split = OperatorSnapshot {
            keyed: Default::default(),
            operator: vec![OperatorListState {
                name: "limits".into(),
                mode: OperatorStateMode::Split,
                elements: Vec::new(),
            }],
        };
        let error = declared()
            .initialize(&mut init_from(split))
            .expect_err("not broadcast state");
        assert!(error.to_string().contains("as Split state"), "{error}");
    }
}
