//! The broadcast state pattern (Flink's `BroadcastStream`, `BroadcastConnectedStream`,
//! `BroadcastProcessFunction` and `KeyedBroadcastProcessFunction`).
//!
//! A low-volume stream (rules, thresholds, configuration) is broadcast to every subtask of an
//! operator and stored there in **broadcast state**: maps named by [`MapStateDescriptor`]s. The
//! other input, keyed or not, reads that state while it processes its elements. Only the
//! broadcast side can change broadcast state (the other side's context is read-only, in its
//! type), so every subtask holds the same content; checkpoints store it as broadcast operator
//! state and a restore, at any parallelism, gives every subtask one copy.
//!
//! The two inputs are not ordered against each other: an element of the other input may arrive
//! before or after a broadcast element sent earlier. Functions that need every rule first buffer
//! their elements (in keyed state) until then, for example until an event-time timer fires: the
//! operator's watermark is the minimum over both inputs.
//!
//! [`KeyedBroadcastProcessFunction`] shows the whole pattern in an example.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::connected::ConnectedStreams;
use super::datastream::DataStream;
use super::key::{Data, Key};
use super::keyed::KeyedStream;
use crate::error::GraphError;
use crate::operator::{
    BroadcastContext, BroadcastProcessOperator, BroadcastReadOnlyContext, BroadcastStateSpec,
    Collector, FunctionError, KeyedBroadcastContext, KeyedBroadcastProcessOperator,
    KeyedBroadcastReadOnlyContext, RuntimeContext,
};

/// Names a broadcast state and its key and value types (Flink's `MapStateDescriptor`).
///
/// Declare it on the broadcast stream ([`DataStream::broadcast_state`],
/// [`BroadcastStream::with_state`]) and use it in the function to reach the state
/// ([`BroadcastContext::broadcast_state`]). The name identifies the state in checkpoints and
/// savepoints: keep it when the job changes.
///
/// # Examples
///
/// ```
/// use eichhorn::api::MapStateDescriptor;
///
/// let thresholds = MapStateDescriptor::<String, i64>::new("thresholds");
/// assert_eq!(thresholds.name(), "thresholds");
/// ```
pub struct MapStateDescriptor<K, V> {
    name: String,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for MapStateDescriptor<K, V> {
    fn clone(&self) -> Self {
        Self::new(&self.name)
    }
}

impl<K, V> std::fmt::Debug for MapStateDescriptor<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapStateDescriptor")
            .field("name", &self.name)
            .field("key", &std::any::type_name::<K>())
            .field("value", &std::any::type_name::<V>())
            .finish()
    }
}

impl<K, V> MapStateDescriptor<K, V> {
    /// A descriptor of the map state `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            _types: PhantomData,
        }
    }

    /// The state's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A stream broadcast to every subtask of the operator it is connected to, with the broadcast
/// states that operator keeps (Flink's `BroadcastStream`). Made by
/// [`DataStream::broadcast_state`]; consumed by [`DataStream::connect_broadcast`] or
/// [`KeyedStream::connect_broadcast`].
///
/// Broadcast state is a map per declared [`MapStateDescriptor`], in key order. Only the
/// broadcast side can change it (the other side's context is read-only, in its type), so every
/// subtask holds the same content. Checkpoints and savepoints store it as broadcast operator
/// state: a restore, at any parallelism, gives every subtask one copy. A state the restored
/// snapshot holds but the job no longer declares is not restored.
#[derive(Debug)]
pub struct BroadcastStream<T> {
    stream: DataStream<T>,
    states: Vec<BroadcastStateSpec>,
}

impl<T: Data> BroadcastStream<T> {
    pub(crate) fn new(stream: DataStream<T>) -> Self {
        Self {
            stream: stream.broadcast(),
            states: Vec::new(),
        }
    }

    /// Declares one more broadcast state. Declaring a name twice with the same types changes
    /// nothing; with other types, the job fails to build.
    pub fn with_state<K, V>(mut self, descriptor: &MapStateDescriptor<K, V>) -> Self
    where
        K: Ord + Serialize + DeserializeOwned + Send + 'static,
        V: Serialize + DeserializeOwned + Send + 'static,
    {
        let spec = BroadcastStateSpec::of(descriptor);
        match self.states.iter().find(|s| s.name() == spec.name()) {
            None => self.states.push(spec),
            Some(existing) if existing.type_name() == spec.type_name() => {}
            Some(existing) => self
                .stream
                .env
                .record_error(GraphError::InvalidApiUse(format!(
                    "broadcast state '{}' is declared as {} and as {}",
                    spec.name(),
                    existing.type_name(),
                    spec.type_name()
                ))),
        }
        self
    }
}

/// A stream connected with a [`BroadcastStream`], for a [`BroadcastProcessFunction`] (Flink's
/// `BroadcastConnectedStream` of a non-keyed stream). Made by [`DataStream::connect_broadcast`].
#[derive(Debug)]
pub struct BroadcastConnectedStream<A, B> {
    stream: DataStream<A>,
    broadcast: BroadcastStream<B>,
}

impl<A: Data, B: Data> BroadcastConnectedStream<A, B> {
    pub(crate) fn new(stream: DataStream<A>, broadcast: BroadcastStream<B>) -> Self {
        Self { stream, broadcast }
    }

    /// Applies a [`BroadcastProcessFunction`]: the stream's elements are partitioned as before
    /// (forward, or as set on the stream), the broadcast elements go to every subtask.
    ///
    /// # Examples
    ///
    /// Every subtask sees every broadcast element: at parallelism 2 each rule is applied twice.
    ///
    /// ```
    /// use eichhorn::prelude::*;
    ///
    /// #[operator]
    /// #[derive(Clone)]
    /// struct Allow {
    ///     allowed: MapStateDescriptor<String, ()>,
    /// }
    ///
    /// impl BroadcastProcessFunction<String, String> for Allow {
    ///     type Out = String;
    ///     fn process_element(&mut self, word: String, ctx: &mut BroadcastReadOnlyContext<'_, '_>, out: &mut Collector<'_, String>) {
    ///         if ctx.broadcast_state(&self.allowed).contains(&word) {
    ///             out.collect(word);
    ///         }
    ///     }
    ///     fn process_broadcast_element(&mut self, word: String, ctx: &mut BroadcastContext<'_, '_>, out: &mut Collector<'_, String>) {
    ///         ctx.broadcast_state(&self.allowed).put(word.clone(), ());
    ///         out.collect(format!("allowed {word}"));
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let env = StreamEnv::new();
    /// let allowed = MapStateDescriptor::new("allowed");
    /// let rules = env.from_collection(vec!["a".to_string()]).broadcast_state(&allowed);
    /// let out = env
    ///     .from_collection(Vec::<String>::new())
    ///     .connect_broadcast(rules)
    ///     .process(Allow { allowed })
    ///     .set_parallelism(2)
    ///     .collect_sink();
    /// env.execute("allow").await.unwrap();
    /// assert_eq!(out.take(), vec!["allowed a".to_string(), "allowed a".to_string()]);
    /// # }
    /// ```
    pub fn process<F>(self, function: F) -> DataStream<F::Out>
    where
        F: BroadcastProcessFunction<A, B>,
        F::Out: Data,
    {
        let operator = BroadcastProcessOperator::new(function, self.broadcast.states);
        ConnectedStreams::new(self.stream, self.broadcast.stream)
            .transform("Broadcast Process", operator)
            .with_default_uid::<F>()
    }
}

/// A keyed stream connected with a [`BroadcastStream`], for a
/// [`KeyedBroadcastProcessFunction`] (Flink's `BroadcastConnectedStream` of a keyed stream).
/// Made by [`KeyedStream::connect_broadcast`].
#[derive(Debug)]
pub struct KeyedBroadcastConnectedStream<K, A, B> {
    keyed: KeyedStream<K, A>,
    broadcast: BroadcastStream<B>,
}

impl<K: Key, A: Data, B: Data> KeyedBroadcastConnectedStream<K, A, B> {
    pub(crate) fn new(keyed: KeyedStream<K, A>, broadcast: BroadcastStream<B>) -> Self {
        Self { keyed, broadcast }
    }

    /// Applies a [`KeyedBroadcastProcessFunction`]: the keyed elements go to the subtask of
    /// their key (with its keyed state and timers), the broadcast elements to every subtask.
    /// See [`KeyedBroadcastProcessFunction`] for an example.
    pub fn process<F>(self, function: F) -> DataStream<F::Out>
    where
        F: KeyedBroadcastProcessFunction<Key = K, In1 = A, In2 = B>,
        F::Out: Data,
    {
        let operator = KeyedBroadcastProcessOperator::new(
            self.keyed.selector(),
            function,
            self.broadcast.states,
        );
        ConnectedStreams::new(self.keyed.into_stream(), self.broadcast.stream)
            .transform("Keyed Broadcast Process", operator)
            .with_default_uid::<F>()
    }
}

/// A function on a stream connected with a broadcast stream (Flink's
/// `BroadcastProcessFunction`): `A` is the stream's element type, `B` the broadcast element type.
///
/// Elements of the stream get a [`BroadcastReadOnlyContext`], which reads broadcast state;
/// broadcast elements get a [`BroadcastContext`], which also changes it. Each subtask applies
/// every broadcast element to its own copy of the state, so `process_broadcast_element` must
/// change it the same way in every subtask (depending on the element and the state only).
/// See [`BroadcastConnectedStream::process`] for an example.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a broadcast process function",
    label = "needs an `impl BroadcastProcessFunction` for this type",
    note = "implement `BroadcastProcessFunction` for the type (usually a struct with `#[operator]`)"
)]
pub trait BroadcastProcessFunction<A, B>: crate::api::Unkeyed + Clone + Send + 'static {
    /// The output type.
    type Out;
    /// Called once per subtask before the first element.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming this operator.
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Processes an element of the (non-broadcast) stream, with read-only broadcast state.
    fn process_element(
        &mut self,
        value: A,
        ctx: &mut BroadcastReadOnlyContext<'_, '_>,
        out: &mut Collector<'_, Self::Out>,
    );
    /// Processes an element of the broadcast stream, with read-write broadcast state.
    fn process_broadcast_element(
        &mut self,
        value: B,
        ctx: &mut BroadcastContext<'_, '_>,
        out: &mut Collector<'_, Self::Out>,
    );
    /// Called once per subtask after the last element.
    ///
    /// # Errors
    ///
    /// Any error fails the job.
    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// A function on a keyed stream connected with a broadcast stream (Flink's
/// `KeyedBroadcastProcessFunction`): keyed state and timers on the keyed side, read-only
/// broadcast state there and in timers, read-write broadcast state on the broadcast side, where
/// [`KeyedBroadcastContext::apply_to_keyed_state`] also reaches the keyed state of every key.
///
/// The two inputs are not ordered against each other: an element of the keyed stream may
/// arrive before or after a broadcast element sent earlier. A function that needs every rule
/// first buffers its elements (in keyed state) until then, for example until an event-time
/// timer fires: the operator's watermark is the minimum over both inputs.
///
/// # Examples
///
/// Thresholds per category, broadcast to a stream keyed by user; each user's amounts above the
/// threshold of their category are counted when the input ends (an event-time timer at the end
/// of time fires once both inputs ended, so every threshold has arrived by then).
///
/// ```
/// use eichhorn::prelude::*;
/// use eichhorn::state::ListState;
///
/// /// (category, threshold)
/// type Rule = (String, i64);
/// /// (user, category, amount)
/// type Payment = (u32, String, i64);
///
/// #[operator]
/// #[derive(Clone)]
/// struct CountAbove {
///     thresholds: MapStateDescriptor<String, i64>,
///     payments: ListState<(String, i64)>,
/// }
///
/// impl KeyedBroadcastProcessFunction for CountAbove {
///     type Key = u32;
///     type In1 = Payment;
///     type In2 = Rule;
///     type Out = (u32, usize);
///
///     fn process_element(&mut self, (_, category, amount): Payment, ctx: &mut KeyedBroadcastReadOnlyContext<'_, u32>, _out: &mut Collector<'_, (u32, usize)>) {
///         self.payments.add(ctx, (category, amount));
///         ctx.register_event_time_timer(i64::MAX);
///     }
///
///     fn process_broadcast_element(&mut self, (category, threshold): Rule, ctx: &mut KeyedBroadcastContext<'_, '_, u32>, _out: &mut Collector<'_, (u32, usize)>) {
///         ctx.broadcast_state(&self.thresholds).put(category, threshold);
///     }
///
///     fn on_timer(&mut self, _timestamp: i64, ctx: &mut KeyedBroadcastReadOnlyContext<'_, u32>, out: &mut Collector<'_, (u32, usize)>) {
///         let thresholds = ctx.broadcast_state(&self.thresholds);
///         let above = self
///             .payments
///             .get(ctx)
///             .into_iter()
///             .filter(|(category, amount)| thresholds.get(category).is_some_and(|t| amount > t))
///             .count();
///         out.collect((*ctx.current_key(), above));
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let env = StreamEnv::new();
/// env.set_parallelism(2);
/// let thresholds = MapStateDescriptor::<String, i64>::new("thresholds");
/// let rules = env
///     .from_collection(vec![("books".to_string(), 50), ("games".to_string(), 20)])
///     .broadcast_state(&thresholds);
/// let payments = env.from_collection(vec![
///     (1u32, "books".to_string(), 60),
///     (2, "games".to_string(), 10),
///     (1, "games".to_string(), 30),
///     (2, "food".to_string(), 99),
/// ]);
/// let counts = payments
///     .key_by(|p: &Payment| p.0)
///     .connect_broadcast(rules)
///     .process(CountAbove { thresholds, payments: ListState::new("payments") })
///     .collect_sink();
/// env.execute("count above").await.unwrap();
/// let mut counts = counts.take();
/// counts.sort();
/// assert_eq!(counts, vec![(1, 2), (2, 0)]);
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a keyed broadcast process function",
    label = "needs an `impl KeyedBroadcastProcessFunction` for this type",
    note = "implement `KeyedBroadcastProcessFunction` for the type (usually a struct with `#[operator]`)"
)]
pub trait KeyedBroadcastProcessFunction: crate::api::Operator + Clone + Send + 'static {
    /// The key type of the keyed stream.
    type Key: Key;
    /// The keyed stream's element type.
    type In1;
    /// The broadcast stream's element type.
    type In2;
    /// The output type.
    type Out;
    /// Called once per subtask before the first element.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming this operator.
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Processes an element of the keyed stream: keyed state of its key, timers, read-only
    /// broadcast state.
    fn process_element(
        &mut self,
        value: Self::In1,
        ctx: &mut KeyedBroadcastReadOnlyContext<'_, Self::Key>,
        out: &mut Collector<'_, Self::Out>,
    );
    /// Processes an element of the broadcast stream, with read-write broadcast state. There is
    /// no current key here: [`KeyedBroadcastContext::apply_to_keyed_state`] runs a function
    /// over the keyed state of every key of the subtask.
    fn process_broadcast_element(
        &mut self,
        value: Self::In2,
        ctx: &mut KeyedBroadcastContext<'_, '_, Self::Key>,
        out: &mut Collector<'_, Self::Out>,
    );
    /// A timer of the current key fired at `timestamp`.
    fn on_timer(
        &mut self,
        _timestamp: i64,
        _ctx: &mut KeyedBroadcastReadOnlyContext<'_, Self::Key>,
        _out: &mut Collector<'_, Self::Out>,
    ) {
    }
    /// Called once per subtask after the last element.
    ///
    /// # Errors
    ///
    /// Any error fails the job.
    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
}
