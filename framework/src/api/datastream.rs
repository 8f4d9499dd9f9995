//! `DataStream<T>`: the typed handle to a stream under construction, and its transformations.
//!
//! Every method only adds to the stream graph; nothing runs until `StreamEnv::execute`.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use super::env::StreamEnv;
use super::functions::{
    FilterFunction, FlatMapFunction, MapFunction, ProcessFunction, SinkFunction,
};
use super::key::{Data, Key};
use super::output_tag::OutputTag;
use super::sinks::{CollectSink, DataStreamSink};
use crate::connectors::{CollectSinkFunction, PrintSink, TextFileSink};
use crate::error::GraphError;
use crate::graph::{
    ChainingStrategy, InputSide, OperatorKind, OutputSelector, PartitionKind, StreamEdge,
    StreamNode,
};
use crate::operator::{
    FilterOperator, FlatMapOperator, FnFilter, FnFlatMap, FnMap, MapOperator, NodeId, OneInputNode,
    OneInputOperator, ProcessOperator, SinkNode,
};
use crate::runtime::partitioner::PartitionerSpec;
use crate::runtime::registry::{
    OperatorEntry, OperatorFactory, TypedPort, erase_chain, typed_chain,
};
use crate::runtime::writer::{custom_selector, key_group_selector};

/// A stream of `T` under construction (Flink's `DataStream`).
pub struct DataStream<T> {
    pub(crate) env: StreamEnv,
    /// The node outputs this stream reads (several after `union`).
    pub(crate) inputs: Vec<(NodeId, OutputSelector)>,
    /// The partitioning towards the next operator (`None`: forward, or rebalance when the
    /// parallelism changes).
    pub(crate) partitioner: Option<PartitionerSpec>,
    /// The operator that produced this stream, when there is exactly one.
    pub(crate) origin: Option<NodeId>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        Self {
            env: self.env.clone(),
            inputs: self.inputs.clone(),
            partitioner: self.partitioner.clone(),
            origin: self.origin,
            _type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for DataStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStream")
            .field("inputs", &self.inputs)
            .field("origin", &self.origin)
            .finish()
    }
}

/// Wraps a clonable value so factories can be `Sync` without requiring `Sync` of user functions.
pub(crate) struct Template<F>(Mutex<F>);

impl<F: Clone> Template<F> {
    pub(crate) fn new(value: F) -> Self {
        Self(Mutex::new(value))
    }

    pub(crate) fn instance(&self) -> F {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl<T: Data> DataStream<T> {
    pub(crate) fn from_node(env: StreamEnv, node: NodeId, output: OutputSelector) -> Self {
        Self {
            env,
            inputs: vec![(node, output)],
            partitioner: None,
            origin: Some(node),
            _type: PhantomData,
        }
    }

    /// Adds edges from this stream's inputs into `target` on `side`.
    pub(crate) fn connect_to(&self, target: NodeId, side: InputSide) {
        let partitioner = self
            .partitioner
            .clone()
            .unwrap_or_else(PartitionerSpec::implicit);
        let mut inner = self.env.lock();
        for (source, output) in &self.inputs {
            let index = inner.graph.add_edge(StreamEdge {
                source: *source,
                output: output.clone(),
                target,
                side,
                partitioning: partitioner.partitioning(),
            });
            inner.registry.add_edge(index, partitioner.clone());
        }
    }

    /// Adds a one-input operator reading this stream.
    pub(crate) fn transform<O, Op>(self, name: &str, operator: Op) -> DataStream<O>
    where
        O: Data,
        Op: OneInputOperator<T, Out = O> + Clone,
    {
        let state_schema = operator.state_schema();
        let template = Template::new(operator);
        let factory = OperatorFactory::OneInput(Arc::new(move |info, main, side| {
            let node = OneInputNode::new(info, template.instance(), typed_chain::<O>(main), side);
            erase_chain::<T>(Box::new(node))
        }));
        let id = self.env.add_node(
            StreamNode {
                state_schema,
                ..StreamNode::new(OperatorKind::OneInput, name)
            },
            OperatorEntry::new(
                factory,
                Some(TypedPort::<T>::arc()),
                Some(TypedPort::<O>::arc()),
            ),
        );
        self.connect_to(id, InputSide::First);
        DataStream::from_node(self.env.clone(), id, OutputSelector::Main)
    }

    /// Applies `f` to every element.
    pub fn map<O: Data, F>(self, f: F) -> DataStream<O>
    where
        F: FnMut(T) -> O + Clone + Send + 'static,
    {
        self.transform("Map", MapOperator(FnMap(f)))
    }

    /// Applies a [`MapFunction`] (with `open`/`close`) to every element.
    pub fn map_function<F>(self, f: F) -> DataStream<F::Out>
    where
        F: MapFunction<T>,
        F::Out: Data,
    {
        self.transform("Map", MapOperator(f))
            .with_default_uid::<F>()
    }

    /// Replaces every element by the elements of the iterator `f` returns for it.
    pub fn flat_map<O: Data, I, F>(self, f: F) -> DataStream<O>
    where
        I: IntoIterator<Item = O>,
        F: FnMut(T) -> I + Clone + Send + 'static,
    {
        self.transform("Flat Map", FlatMapOperator(FnFlatMap(f)))
    }

    /// Applies a [`FlatMapFunction`] to every element.
    pub fn flat_map_function<F>(self, f: F) -> DataStream<F::Out>
    where
        F: FlatMapFunction<T>,
        F::Out: Data,
    {
        self.transform("Flat Map", FlatMapOperator(f))
            .with_default_uid::<F>()
    }

    /// Keeps the elements for which `f` returns `true`.
    pub fn filter<F>(self, f: F) -> Self
    where
        F: FnMut(&T) -> bool + Clone + Send + 'static,
    {
        self.transform("Filter", FilterOperator(FnFilter(f)))
    }

    /// Keeps the elements a [`FilterFunction`] accepts.
    pub fn filter_function<F: FilterFunction<T>>(self, f: F) -> Self {
        self.transform("Filter", FilterOperator(f))
            .with_default_uid::<F>()
    }

    /// Applies a [`ProcessFunction`]: any number of outputs, side outputs, timestamps.
    pub fn process<F>(self, f: F) -> DataStream<F::Out>
    where
        F: ProcessFunction<T>,
        F::Out: Data,
    {
        self.transform("Process", ProcessOperator(f))
            .with_default_uid::<F>()
    }

    /// Assigns event-time timestamps and generates watermarks per `strategy` (Flink's
    /// `assignTimestampsAndWatermarks`).
    ///
    /// # Examples
    ///
    /// ```
    /// use eichhorn::prelude::*;
    /// use eichhorn::time::WatermarkStrategy;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let env = StreamEnv::new();
    /// let stamped = env
    ///     .from_collection(vec![("a".to_string(), 1_000i64), ("b".to_string(), 3_000)])
    ///     .assign_timestamps_and_watermarks(
    ///         WatermarkStrategy::for_bounded_out_of_orderness_every_event(500)
    ///             .with_timestamp_assigner(|event: &(String, i64), _| event.1),
    ///     )
    ///     .process(StampOf)
    ///     .collect_sink();
    /// env.execute("timestamps").await.unwrap();
    /// assert_eq!(stamped.take(), vec![1_000, 3_000]);
    ///
    /// #[operator]
    /// #[derive(Clone)]
    /// struct StampOf;
    /// impl ProcessFunction<(String, i64)> for StampOf {
    ///     type Out = i64;
    ///     fn process_element(&mut self, _: (String, i64), ctx: &mut OperatorContext<'_>, out: &mut Collector<'_, i64>) {
    ///         out.collect(ctx.timestamp().unwrap());
    ///     }
    /// }
    /// # }
    /// ```
    pub fn assign_timestamps_and_watermarks(
        self,
        strategy: crate::time::WatermarkStrategy<T>,
    ) -> Self {
        let interval_ms =
            i64::try_from(self.env.config().auto_watermark_interval_ms).unwrap_or(i64::MAX);
        self.transform(
            "Timestamps/Watermarks",
            crate::operator::TimestampsAndWatermarks::new(strategy, interval_ms),
        )
    }

    /// Partitions the stream by the key `key_selector` extracts: all elements with one key go to
    /// the same subtask (via its key group).
    pub fn key_by<K: Key, KS>(self, key_selector: KS) -> super::KeyedStream<K, T>
    where
        KS: Fn(&T) -> K + Clone + Send + Sync + 'static,
    {
        // The writer calls the selector through one dynamic call, with the user's closure
        // inlined into it.
        let spec = PartitionerSpec::with_selector(
            PartitionKind::Hash,
            key_group_selector(key_selector.clone()),
        );
        let selector: Arc<dyn Fn(&T) -> K + Send + Sync> = Arc::new(key_selector);
        super::KeyedStream::new(self.with_partitioner(spec), selector)
    }

    /// Partitions the stream by the elements' own key ([`super::KeyBy`], usually derived with
    /// `#[derive(KeyBy)]` and `#[key]` on the key field).
    pub fn keyed(self) -> super::KeyedStream<T::Key, T>
    where
        T: super::KeyBy,
    {
        self.key_by(|element: &T| element.key())
    }

    /// Cuts the whole (non-keyed) stream into windows, evaluated by one subtask (Flink's
    /// `windowAll`).
    pub fn window_all(
        self,
        assigner: impl Into<crate::operator::window::WindowAssigner>,
    ) -> super::AllWindowedStream<T> {
        super::AllWindowedStream::new(self, assigner.into())
    }

    /// Joins this stream with `other` per key and window (Flink's `join` / `coGroup`); continue
    /// with `window(key1, key2, assigner)` and then `join` or `co_group`.
    pub fn join<B: Data>(self, other: DataStream<B>) -> super::WindowJoin<T, B> {
        super::WindowJoin::new(self, other)
    }

    /// Merges this stream with `others` of the same type; no operator is added, the next
    /// operator reads all of them.
    pub fn union(mut self, others: impl IntoIterator<Item = Self>) -> Self {
        for other in others {
            self.inputs.extend(other.inputs);
        }
        self.origin = None;
        self
    }

    /// Connects this stream with `other` (of another type) for a two-input operator.
    pub fn connect<B: Data>(self, other: DataStream<B>) -> super::ConnectedStreams<T, B> {
        super::ConnectedStreams::new(self, other)
    }

    fn with_partitioner(mut self, spec: PartitionerSpec) -> Self {
        self.partitioner = Some(spec);
        self
    }

    /// Subtask `i` sends to subtask `i` of the next operator (equal parallelism required).
    pub fn forward(self) -> Self {
        self.with_partitioner(PartitionerSpec::simple(PartitionKind::Forward))
    }

    /// Round-robin over all subtasks of the next operator.
    pub fn rebalance(self) -> Self {
        self.with_partitioner(PartitionerSpec::simple(PartitionKind::Rebalance))
    }

    /// Round-robin over a local subset of the next operator's subtasks.
    pub fn rescale(self) -> Self {
        self.with_partitioner(PartitionerSpec::simple(PartitionKind::Rescale))
    }

    /// A random subtask of the next operator for every element (seeded by the job's seed).
    pub fn shuffle(self) -> Self {
        self.with_partitioner(PartitionerSpec::simple(PartitionKind::Shuffle))
    }

    /// Every element to every subtask of the next operator.
    pub fn broadcast(self) -> Self {
        self.with_partitioner(PartitionerSpec::simple(PartitionKind::Broadcast))
    }

    /// Every element to subtask 0 of the next operator.
    pub fn global(self) -> Self {
        self.with_partitioner(PartitionerSpec::simple(PartitionKind::Global))
    }

    /// A user function of the key picks the subtask: `partitioner(&key, subtask_count)` must
    /// return a value below `subtask_count` (otherwise the job fails naming the operator).
    pub fn partition_custom<K, P, KS>(self, partitioner: P, key_selector: KS) -> Self
    where
        K: 'static,
        P: Fn(&K, u32) -> u32 + Send + Sync + 'static,
        KS: Fn(&T) -> K + Send + Sync + 'static,
    {
        let spec = PartitionerSpec::with_selector(
            PartitionKind::Custom,
            custom_selector(partitioner, key_selector),
        );
        self.with_partitioner(spec)
    }

    fn edit_origin(self, what: &str, edit: impl FnOnce(&mut StreamNode)) -> Self {
        match self.origin {
            Some(node) => edit(self.env.lock().graph.node_mut(node)),
            None => self.env.record_error(GraphError::InvalidApiUse(format!(
                "{what} applies to the stream of one operator, not to a union"
            ))),
        }
        self
    }

    /// Gives the operator that produced this stream the default uid of its function `F`
    /// ([`super::Operator::default_uid`]) unless one is set. A uid another operator already has
    /// gets the suffix `#2`, `#3`, ... in the order the operators were added, so two uses of one
    /// `#[operator]` type keep distinct, stable ids.
    pub(crate) fn with_default_uid<F: super::Operator>(self) -> Self {
        if let (Some(uid), Some(node)) = (F::default_uid(), self.origin) {
            self.env.assign_default_uid(node, uid);
        }
        self
    }

    /// Names the operator that produced this stream.
    pub fn name(self, name: &str) -> Self {
        self.edit_origin("name()", |n| n.name = name.to_string())
    }

    /// Sets the stable id of the operator that produced this stream (used to match state in
    /// savepoints).
    pub fn uid(self, uid: &str) -> Self {
        self.edit_origin("uid()", |n| n.uid = Some(uid.to_string()))
    }

    /// Sets the parallelism of the operator that produced this stream.
    pub fn set_parallelism(self, parallelism: u32) -> Self {
        self.edit_origin("set_parallelism()", |n| n.parallelism = Some(parallelism))
    }

    /// Never chains the operator that produced this stream with its neighbours.
    pub fn disable_chaining(self) -> Self {
        self.edit_origin("disable_chaining()", |n| {
            n.chaining = ChainingStrategy::Never
        })
    }

    /// Starts a new chain at the operator that produced this stream.
    pub fn start_new_chain(self) -> Self {
        self.edit_origin("start_new_chain()", |n| {
            if n.chaining == ChainingStrategy::Always {
                n.chaining = ChainingStrategy::Head;
            }
        })
    }

    /// The side output `tag` of the operator that produced this stream.
    pub fn side_output<U: Data>(&self, tag: &OutputTag<U>) -> DataStream<U> {
        let Some(origin) = self.origin else {
            self.env.record_error(GraphError::InvalidApiUse(format!(
                "side_output('{}') needs the stream of one operator, not a union",
                tag.id()
            )));
            return DataStream {
                env: self.env.clone(),
                inputs: Vec::new(),
                partitioner: None,
                origin: None,
                _type: PhantomData,
            };
        };
        {
            let mut inner = self.env.lock();
            let port = TypedPort::<U>::arc();
            let Some(entry) = inner.registry.operator_mut(origin) else {
                drop(inner);
                self.env.record_error(GraphError::Internal(format!(
                    "side_output('{}'): operator {} is not registered",
                    tag.id(),
                    origin.0
                )));
                return DataStream::from_node(self.env.clone(), origin, OutputSelector::Main);
            };
            let existing = entry.side_ports.get(tag.id()).cloned();
            match existing {
                Some(existing) if existing.type_id() != port.type_id() => {
                    let error = GraphError::SideOutputTypeMismatch {
                        tag: tag.id().to_string(),
                        first: existing.type_name(),
                        second: port.type_name(),
                    };
                    inner.errors.push(error);
                }
                Some(_) => {}
                None => {
                    entry.side_ports.insert(tag.id().to_string(), port);
                    inner.graph.add_side_output(origin, tag.id());
                }
            }
        }
        DataStream::from_node(
            self.env.clone(),
            origin,
            OutputSelector::Side(tag.id().to_string()),
        )
    }

    /// Adds a sink.
    pub fn add_sink<S: SinkFunction<T>>(self, sink: S) -> DataStreamSink {
        self.add_sink_named(sink, "Sink: Unnamed")
    }

    /// Adds a sink node built by `factory` and connects this stream to it.
    fn add_sink_factory(
        self,
        factory: OperatorFactory,
        name: &str,
        state_schema: crate::state::StateSchema,
    ) -> DataStreamSink {
        let id = self.env.add_node(
            StreamNode {
                state_schema,
                ..StreamNode::new(OperatorKind::Sink, name)
            },
            OperatorEntry::new(factory, Some(TypedPort::<T>::arc()), None),
        );
        self.connect_to(id, InputSide::First);
        DataStreamSink::new(self.env.clone(), id)
    }

    pub(crate) fn add_sink_named<S: SinkFunction<T>>(self, sink: S, name: &str) -> DataStreamSink {
        let state_schema = crate::api::Operator::state_schema(&sink);
        let template = Template::new(sink);
        let factory = OperatorFactory::Sink(Arc::new(move |info| {
            erase_chain::<T>(Box::new(SinkNode::new(info, template.instance())))
        }));
        let env = self.env.clone();
        let sink = self.add_sink_factory(factory, name, state_schema);
        if let Some(uid) = S::default_uid() {
            env.assign_default_uid(sink.node, uid);
        }
        sink
    }

    /// Prints every element to stdout with `Display`; at parallelism above 1 each line starts
    /// with `N> `, the printing subtask's index plus one (Flink's `print()`).
    pub fn print(self) -> DataStreamSink
    where
        T: std::fmt::Display,
    {
        self.add_sink_named(PrintSink::new(String::new(), false), "Sink: Print")
    }

    /// Like [`DataStream::print`], with `prefix` before each line (`prefix:N> ` in parallel).
    pub fn print_with_prefix(self, prefix: &str) -> DataStreamSink
    where
        T: std::fmt::Display,
    {
        self.add_sink_named(PrintSink::new(prefix.to_string(), false), "Sink: Print")
    }

    /// Like [`DataStream::print`], to stderr.
    pub fn print_to_err(self) -> DataStreamSink
    where
        T: std::fmt::Display,
    {
        self.add_sink_named(
            PrintSink::new(String::new(), true),
            "Sink: Print to Std. Err",
        )
    }

    /// Collects every element for the caller: read them with [`CollectSink::take`] after the
    /// job (or while an unbounded job runs).
    pub fn collect_sink(self) -> CollectSink<T> {
        let handle = CollectSink::new();
        let env = self.env.clone();
        let sink = self.add_sink_named(CollectSinkFunction::new(handle.shared()), "Sink: Collect");
        // In a cluster the sink runs on a TaskManager; the registry lets its elements travel
        // to this handle on the JobManager.
        env.lock().registry.add_collector(
            sink.node,
            Arc::new(crate::runtime::registry::TypedCollector(handle.shared())),
        );
        handle
    }

    /// Writes every element as a line of text (`Display`). At parallelism 1 `path` is a file;
    /// above 1 it is a directory with one file per subtask, named `1`, `2`, ... (Flink's
    /// `writeAsText`).
    pub fn write_as_text(self, path: impl Into<std::path::PathBuf>) -> DataStreamSink
    where
        T: std::fmt::Display,
    {
        self.add_sink_named(TextFileSink::new(path.into()), "Sink: Text File")
    }

    /// Adds an exactly-once sink driven by the two-phase-commit protocol (Flink's
    /// `TwoPhaseCommitSinkFunction`): records go into a transaction that is pre-committed when
    /// a checkpoint barrier reaches the sink and committed when that checkpoint completed (for
    /// a bounded job, at the latest by its final checkpoint). After a failure the restored
    /// checkpoint's pre-committed transactions are committed and the open one is aborted. See
    /// [`super::TwoPhaseCommitSink`] for the protocol and an example.
    pub fn add_two_phase_sink<S: super::TwoPhaseCommitSink<T>>(self, sink: S) -> DataStreamSink {
        self.add_two_phase_sink_named(sink, "Sink: Two-Phase Commit")
    }

    pub(crate) fn add_two_phase_sink_named<S: super::TwoPhaseCommitSink<T>>(
        self,
        sink: S,
        name: &str,
    ) -> DataStreamSink {
        let state_schema = crate::api::Operator::state_schema(&sink);
        let template = Template::new(sink);
        let factory = OperatorFactory::Sink(Arc::new(move |info| {
            erase_chain::<T>(Box::new(crate::operator::TwoPhaseCommitSinkNode::new(
                info,
                template.instance(),
            )))
        }));
        let env = self.env.clone();
        let sink = self.add_sink_factory(factory, name, state_schema);
        if let Some(uid) = S::default_uid() {
            env.assign_default_uid(sink.node, uid);
        }
        sink
    }

    /// Writes every element as a line, `formatter(&element)`, into part files in the directory
    /// `dir`, exactly once (an [`crate::connectors::ExactlyOnceFileSink`]): a file becomes
    /// visible only when the checkpoint covering its records completed, so after failures and
    /// restarts the visible files hold every element exactly once. Hidden files (names starting
    /// with `.`) are transactions not yet committed; readers skip them.
    ///
    /// # Examples
    ///
    /// ```
    /// use eichhorn::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let dir = tempfile::tempdir().unwrap();
    /// let env = StreamEnv::new();
    /// env.from_collection(vec![("a".to_string(), 1u32), ("b".to_string(), 2)])
    ///     .write_exactly_once(dir.path(), |(word, n): &(String, u32)| format!("{word},{n}"));
    /// env.execute("csv").await.unwrap();
    /// let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    /// assert_eq!(files.len(), 1, "one committed part file");
    /// assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), "a,1\nb,2\n");
    /// # }
    /// ```
    pub fn write_exactly_once(
        self,
        dir: impl Into<std::path::PathBuf>,
        formatter: impl Fn(&T) -> String + Send + Sync + 'static,
    ) -> DataStreamSink {
        self.add_two_phase_sink_named(
            crate::connectors::ExactlyOnceFileSink::new(dir, formatter),
            "Sink: Exactly-Once File",
        )
    }

    /// Like [`DataStream::write_exactly_once`], writing each element's `Display`.
    pub fn write_as_text_exactly_once(self, dir: impl Into<std::path::PathBuf>) -> DataStreamSink
    where
        T: std::fmt::Display,
    {
        self.add_two_phase_sink_named(
            crate::connectors::ExactlyOnceFileSink::display(dir),
            "Sink: Exactly-Once File",
        )
    }

    /// Broadcasts this stream to every subtask of the operator it is connected to, which keeps
    /// the broadcast state `descriptor` names (Flink's `broadcast(descriptor)`); declare more
    /// states with [`super::BroadcastStream::with_state`]. Connect it with
    /// [`DataStream::connect_broadcast`] or [`super::KeyedStream::connect_broadcast`]. See
    /// [`super::KeyedBroadcastProcessFunction`] for the pattern and an example.
    ///
    /// ([`DataStream::broadcast`] only sets the partitioning, with no state.)
    pub fn broadcast_state<K, V>(
        self,
        descriptor: &super::MapStateDescriptor<K, V>,
    ) -> super::BroadcastStream<T>
    where
        K: Ord + serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        V: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        super::BroadcastStream::new(self).with_state(descriptor)
    }

    /// Connects this stream with a broadcast stream, for a
    /// [`super::BroadcastProcessFunction`] (Flink's `connect(broadcastStream)`).
    pub fn connect_broadcast<B: Data>(
        self,
        broadcast: super::BroadcastStream<B>,
    ) -> super::BroadcastConnectedStream<T, B> {
        super::BroadcastConnectedStream::new(self, broadcast)
    }
}
