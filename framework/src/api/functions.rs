//! The function traits users implement: Flink's "rich" functions.
//!
//! Every function has a lifecycle (`open` before the first element, with a [`RuntimeContext`];
//! `close` after the last) and is cloned once per parallel instance, so each subtask owns its
//! copy. Closures work directly with `map`, `flat_map`, `filter` and friends; implement a trait
//! when a function needs `open`/`close` or is reused across jobs.

use crate::operator::{
    Collector, FunctionError, OperatorContext, RuntimeContext, UnrecoverableError,
};

/// Transforms each element into exactly one element (`DataStream::map_function`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a map function",
    label = "needs an `impl MapFunction` for this type",
    note = "implement `MapFunction` for the type (usually a struct with `#[operator]`)"
)]
pub trait MapFunction<I>: crate::api::Unkeyed + Clone + Send + 'static {
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
    /// Maps one element.
    fn map(&mut self, value: I) -> Self::Out;
    /// Called once per subtask after the last element.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming this operator.
    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Restores the function's operator state before `open` (Flink's
    /// `CheckpointedFunction.initializeState`); called on every start, restored or not. Read
    /// lists with [`StateInitContext::list_state`](crate::operator::StateInitContext::list_state).
    ///
    /// # Errors
    ///
    /// The restored state is unusable; the job fails.
    fn initialize_state(
        &mut self,
        _ctx: &mut crate::operator::StateInitContext,
    ) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Stores the function's operator state at a checkpoint (Flink's `snapshotState`), with
    /// [`StateSnapshotContext::add_list_state`](crate::operator::StateSnapshotContext::add_list_state)
    /// in split or union mode.
    ///
    /// # Errors
    ///
    /// The state cannot be stored; the checkpoint fails.
    fn snapshot_state(
        &mut self,
        _ctx: &mut crate::operator::StateSnapshotContext,
    ) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Checkpoint `id` completed (Flink's `CheckpointListener`).
    ///
    /// # Errors
    ///
    /// The function failed to act on it; the job fails.
    fn notify_checkpoint_complete(
        &mut self,
        _id: crate::checkpoint::CheckpointId,
    ) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// Transforms each element into zero or more elements (`DataStream::flat_map_function`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a flat map function",
    label = "needs an `impl FlatMapFunction` for this type",
    note = "implement `FlatMapFunction` for the type (usually a struct with `#[operator]`)"
)]
pub trait FlatMapFunction<I>: crate::api::Unkeyed + Clone + Send + 'static {
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
    /// Emits the outputs for one element into `out`.
    fn flat_map(&mut self, value: I, out: &mut Collector<'_, Self::Out>);
    /// Called once per subtask after the last element.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming this operator.
    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Restores the function's operator state before `open` (Flink's
    /// `CheckpointedFunction.initializeState`); called on every start, restored or not. Read
    /// lists with [`StateInitContext::list_state`](crate::operator::StateInitContext::list_state).
    ///
    /// # Errors
    ///
    /// The restored state is unusable; the job fails.
    fn initialize_state(
        &mut self,
        _ctx: &mut crate::operator::StateInitContext,
    ) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Stores the function's operator state at a checkpoint (Flink's `snapshotState`), with
    /// [`StateSnapshotContext::add_list_state`](crate::operator::StateSnapshotContext::add_list_state)
    /// in split or union mode.
    ///
    /// # Errors
    ///
    /// The state cannot be stored; the checkpoint fails.
    fn snapshot_state(
        &mut self,
        _ctx: &mut crate::operator::StateSnapshotContext,
    ) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Checkpoint `id` completed (Flink's `CheckpointListener`).
    ///
    /// # Errors
    ///
    /// The function failed to act on it; the job fails.
    fn notify_checkpoint_complete(
        &mut self,
        _id: crate::checkpoint::CheckpointId,
    ) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// Keeps the elements for which it returns `true` (`DataStream::filter_function`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a filter function",
    label = "needs an `impl FilterFunction` for this type",
    note = "implement `FilterFunction` for the type (usually a struct with `#[operator]`)"
)]
pub trait FilterFunction<I>: crate::api::Unkeyed + Clone + Send + 'static {
    /// Called once per subtask before the first element.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming this operator.
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Whether to keep `value`.
    fn filter(&mut self, value: &I) -> bool;
    /// Called once per subtask after the last element.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming this operator.
    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// The most general one-input function: any number of outputs, side outputs through
/// [`OperatorContext::output`], the element's timestamp (`DataStream::process`).
///
/// # Examples
///
/// ```
/// use eichhorn::prelude::*;
///
/// #[operator]
/// #[derive(Clone)]
/// struct SplitNegatives {
///     negatives: OutputTag<i64>,
/// }
///
/// impl ProcessFunction<i64> for SplitNegatives {
///     type Out = i64;
///     fn process_element(&mut self, value: i64, ctx: &mut OperatorContext<'_>, out: &mut Collector<'_, i64>) {
///         if value < 0 { ctx.output(&self.negatives, value) } else { out.collect(value) }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let env = StreamEnv::new();
/// let negatives = OutputTag::<i64>::new("negatives");
/// let split = env.from_collection(vec![3, -1, 4, -5]).process(SplitNegatives { negatives: negatives.clone() });
/// let low = split.side_output(&negatives).collect_sink();
/// let high = split.collect_sink();
/// env.execute("split").await.unwrap();
/// assert_eq!(high.take(), vec![3, 4]);
/// assert_eq!(low.take(), vec![-1, -5]);
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a process function",
    label = "needs an `impl ProcessFunction` for this type",
    note = "implement `ProcessFunction` for the type (usually a struct with `#[operator]`)"
)]
pub trait ProcessFunction<I>: crate::api::Unkeyed + Clone + Send + 'static {
    /// The main output type.
    type Out;
    /// Called once per subtask before the first element.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming this operator.
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Processes one element.
    fn process_element(
        &mut self,
        value: I,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, Self::Out>,
    );
    /// Called once when the input ended, before the end is passed downstream (a bounded job's
    /// last chance to emit).
    fn on_end_of_input(
        &mut self,
        _ctx: &mut OperatorContext<'_>,
        _out: &mut Collector<'_, Self::Out>,
    ) {
    }
    /// Restores the function's operator state before `open` (Flink's
    /// `CheckpointedFunction.initializeState`); called on every start, restored or not. Read
    /// lists with [`StateInitContext::list_state`](crate::operator::StateInitContext::list_state).
    ///
    /// # Errors
    ///
    /// The restored state is unusable; the job fails.
    fn initialize_state(
        &mut self,
        _ctx: &mut crate::operator::StateInitContext,
    ) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Stores the function's operator state at a checkpoint (Flink's `snapshotState`), with
    /// [`StateSnapshotContext::add_list_state`](crate::operator::StateSnapshotContext::add_list_state)
    /// in split or union mode.
    ///
    /// # Errors
    ///
    /// The state cannot be stored; the checkpoint fails.
    fn snapshot_state(
        &mut self,
        _ctx: &mut crate::operator::StateSnapshotContext,
    ) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Checkpoint `id` completed (Flink's `CheckpointListener`).
    ///
    /// # Errors
    ///
    /// The function failed to act on it; the job fails.
    fn notify_checkpoint_complete(
        &mut self,
        _id: crate::checkpoint::CheckpointId,
    ) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Called once per subtask after the last element.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming this operator.
    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// Maps each element of two connected streams to one output (`ConnectedStreams::co_map_function`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a co-map function",
    label = "needs an `impl CoMapFunction` for this type",
    note = "implement `CoMapFunction` for the type (usually a struct with `#[operator]`)"
)]
pub trait CoMapFunction<A, B>: crate::api::Unkeyed + Clone + Send + 'static {
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
    /// Maps an element of the first stream.
    fn map1(&mut self, value: A) -> Self::Out;
    /// Maps an element of the second stream.
    fn map2(&mut self, value: B) -> Self::Out;
    /// Called once per subtask after the last element.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming this operator.
    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// Flat-maps each element of two connected streams (`ConnectedStreams::co_flat_map_function`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a co-flat-map function",
    label = "needs an `impl CoFlatMapFunction` for this type",
    note = "implement `CoFlatMapFunction` for the type (usually a struct with `#[operator]`)"
)]
pub trait CoFlatMapFunction<A, B>: crate::api::Unkeyed + Clone + Send + 'static {
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
    /// Handles an element of the first stream.
    fn flat_map1(&mut self, value: A, out: &mut Collector<'_, Self::Out>);
    /// Handles an element of the second stream.
    fn flat_map2(&mut self, value: B, out: &mut Collector<'_, Self::Out>);
    /// Called once per subtask after the last element.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming this operator.
    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// Writes elements out of the job (`DataStream::add_sink`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a sink function",
    label = "needs an `impl SinkFunction` for this type",
    note = "implement `SinkFunction` for the type (usually a struct with `#[operator]`)"
)]
pub trait SinkFunction<I>: crate::api::Unkeyed + Clone + Send + 'static {
    /// Called once per subtask before the first element.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming this sink.
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Writes one element.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming this sink and subtask.
    fn invoke(&mut self, value: I, ctx: &SinkContext) -> Result<(), FunctionError>;
    /// The input ended (a bounded job finishes): flush buffers here.
    ///
    /// # Errors
    ///
    /// Any error fails the job.
    fn finish(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Called once per subtask after the last element.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming this sink.
    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// What a sink knows about the element it writes.
#[derive(Debug, Clone, Copy)]
pub struct SinkContext {
    /// The element's event-time timestamp.
    pub timestamp: Option<i64>,
    /// The sink subtask's index.
    pub subtask_index: u32,
    /// The current watermark at the sink.
    pub current_watermark: i64,
}

/// What a source poll reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourcePoll {
    /// More data may be available right away: poll again soon.
    MoreAvailable,
    /// Nothing available now: poll again after the idle interval (or when woken).
    Idle,
    /// The source is exhausted (a bounded source reached its end).
    Finished,
}

/// A source of elements, bounded or unbounded (`StreamEnv::add_source`).
///
/// The runtime calls [`SourceFunction::poll_next`] repeatedly; each call emits up to
/// [`SourceContext::remaining`] elements and returns. A source never blocks: when nothing is
/// available it returns [`SourcePoll::Idle`]. Positions are designed to be checkpointed:
/// [`SourceFunction::snapshot_position`] returns the position after the last emitted element and
/// [`SourceFunction::restore_position`] rewinds to it, so a recovered job re-reads exactly the
/// elements after the last checkpoint.
///
/// # Parallel and non-parallel sources
///
/// As in Flink, where a plain `SourceFunction` runs once and a `ParallelSourceFunction` runs at
/// the operator's parallelism, a source is **non-parallel** unless it says otherwise: it runs at
/// parallelism 1 whatever the environment's default (so a file is read once, not once per
/// subtask), and setting a higher parallelism on it explicitly is a
/// [`GraphError::NonParallelOperator`](crate::GraphError::NonParallelOperator) naming the
/// source. A source that splits its input over its subtasks returns `true` from
/// [`SourceFunction::is_parallel`]; then it runs at the environment's default parallelism or
/// the one set on its stream, and each parallel instance is a clone that finds its share of the
/// input through the [`RuntimeContext`] handed to `open` (subtask index and parallelism).
///
/// The built-in file, socket and collection sources are non-parallel; the generator
/// ([`GeneratorSource`](crate::connectors::GeneratorSource)) is parallel, and wrappers such as
/// [`RateLimitedSource`](crate::connectors::RateLimitedSource) are whatever they wrap.
///
/// # Examples
///
/// A parallel source of the numbers below `count`: subtask `j` of `p` emits `j, j + p, ...`.
///
/// ```
/// use eichhorn::prelude::*;
///
/// #[operator(new = false)]
/// #[derive(Clone)]
/// struct Numbers {
///     next: u64,
///     stride: u64,
///     count: u64,
/// }
///
/// impl SourceFunction<u64> for Numbers {
///     fn is_parallel(&self) -> bool {
///         true // each subtask emits its own share
///     }
///     fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
///         self.next = u64::from(ctx.subtask_index);
///         self.stride = u64::from(ctx.parallelism);
///         Ok(())
///     }
///     fn poll_next(&mut self, ctx: &mut SourceContext<'_, u64>) -> Result<SourcePoll, FunctionError> {
///         while ctx.remaining() > 0 && self.next < self.count {
///             ctx.collect(self.next);
///             self.next += self.stride;
///         }
///         Ok(if self.next < self.count { SourcePoll::MoreAvailable } else { SourcePoll::Finished })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), JobError> {
/// let env = StreamEnv::new();
/// env.set_parallelism(3);
/// let out = env
///     .add_source(Numbers { next: 0, stride: 1, count: 10 }, "numbers")
///     .collect_sink();
/// env.execute("numbers").await?;
/// let mut values = out.take();
/// values.sort();
/// assert_eq!(values, (0..10).collect::<Vec<u64>>()); // each number once, from 3 subtasks
/// # Ok(())
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a source function",
    label = "needs an `impl SourceFunction` for this type",
    note = "implement `SourceFunction` for the type (usually a struct with `#[operator]`)"
)]
pub trait SourceFunction<T>: crate::api::Unkeyed + Clone + Send + 'static {
    /// Called once per subtask before the first poll.
    ///
    /// # Errors
    ///
    /// Any error (say, a missing file) fails the job, naming this source.
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Emits available elements into `ctx`, at most `ctx.remaining()` of them.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming this source (malformed input should be reported with its
    /// position).
    fn poll_next(&mut self, ctx: &mut SourceContext<'_, T>) -> Result<SourcePoll, FunctionError>;
    /// Whether this source runs in parallel (Flink's `ParallelSourceFunction`): `true` runs it at
    /// the environment's default parallelism or the one set on its stream, each instance taking
    /// its share of the input; `false`, the default, runs it at parallelism 1 whatever the
    /// environment's default, and an explicit parallelism above 1 is a graph error naming it.
    /// Asked once, when the source is added to the environment.
    fn is_parallel(&self) -> bool {
        false
    }
    /// The position after the last emitted element, as bytes (`None`: not checkpointable).
    ///
    /// # Errors
    ///
    /// The position could not be captured.
    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, FunctionError> {
        Ok(None)
    }
    /// Rewinds to a position returned by [`SourceFunction::snapshot_position`]; called after
    /// `open` when a job restores.
    ///
    /// # Errors
    ///
    /// The position is corrupt or does not fit this source.
    fn restore_position(&mut self, _position: &[u8]) -> Result<(), FunctionError> {
        Err(UnrecoverableError::new("this source cannot restore a position").into())
    }
    /// Restores this instance's share of a source checkpointed at another parallelism; called
    /// after `open` (whose context gave the new subtask index and parallelism) instead of
    /// [`SourceFunction::restore_position`]. `positions` holds what
    /// [`SourceFunction::snapshot_position`] returned on every old subtask, in old subtask
    /// order; every new instance gets all of them and must take a disjoint share, so that
    /// together they go on with every old subtask's input exactly once.
    ///
    /// # Errors
    ///
    /// By default: this source cannot be rescaled (the restore fails, naming the source and both
    /// parallelisms). Also a corrupt position.
    fn restore_rescaled_positions(&mut self, _positions: &[Vec<u8>]) -> Result<(), FunctionError> {
        Err(UnrecoverableError::new(
            "this source cannot redistribute its positions over another parallelism",
        )
        .into())
    }
    /// Checkpoint `id` completed (Flink's `CheckpointListener`): the position of its last
    /// [`SourceFunction::snapshot_position`] is durable. A Kafka source commits its offsets to
    /// the broker here, for monitoring.
    ///
    /// # Errors
    ///
    /// Any error fails the job.
    fn notify_checkpoint_complete(
        &mut self,
        _id: crate::checkpoint::CheckpointId,
    ) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Called once per subtask after the last poll.
    ///
    /// # Errors
    ///
    /// Any error fails the job.
    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// Where a source emits its elements during one poll.
///
/// Elements are gathered into a run and handed to the chain when the poll ends or a watermark is
/// emitted (which must follow the elements before it).
pub struct SourceContext<'a, T> {
    buffer: Vec<crate::operator::Record<T>>,
    next: &'a mut dyn crate::operator::Chained<T>,
    cx: &'a mut crate::operator::TaskCx,
    node: crate::operator::NodeId,
    remaining: usize,
    emitted: u64,
    subtask_index: u32,
    parallelism: u32,
}

impl<T> std::fmt::Debug for SourceContext<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceContext")
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl<'a, T> SourceContext<'a, T> {
    pub(crate) fn new(
        next: &'a mut dyn crate::operator::Chained<T>,
        cx: &'a mut crate::operator::TaskCx,
        node: crate::operator::NodeId,
        budget: usize,
        subtask_index: u32,
        parallelism: u32,
    ) -> Self {
        Self {
            buffer: Vec::with_capacity(budget.min(4096)),
            next,
            cx,
            node,
            remaining: budget,
            emitted: 0,
            subtask_index,
            parallelism,
        }
    }

    /// Emits an element without timestamp.
    #[inline]
    pub fn collect(&mut self, value: T) {
        self.remaining = self.remaining.saturating_sub(1);
        self.buffer.push(crate::operator::Record::new(value));
    }

    /// Emits an element with an event-time timestamp.
    #[inline]
    pub fn collect_with_timestamp(&mut self, value: T, timestamp: i64) {
        self.remaining = self.remaining.saturating_sub(1);
        self.buffer
            .push(crate::operator::Record::with_timestamp(value, timestamp));
    }

    /// Emits a watermark after the elements emitted so far.
    pub fn emit_watermark(&mut self, watermark: crate::time::Watermark) {
        self.hand_over();
        self.next.process_watermark(watermark, self.cx);
        self.cx.current_operator = self.node;
    }

    /// Marks this source instance idle (Flink's `markIdle`): downstream operators stop waiting
    /// for its watermarks until it emits again (then call [`SourceContext::mark_active`]). For
    /// a source with nothing to read, such as a Kafka reader without partitions.
    pub fn mark_idle(&mut self) {
        self.hand_over();
        self.next
            .process_watermark_status(crate::time::WatermarkStatus::Idle, self.cx);
        self.cx.current_operator = self.node;
    }

    /// Marks this source instance active again after [`SourceContext::mark_idle`], before it
    /// emits records.
    pub fn mark_active(&mut self) {
        self.hand_over();
        self.next
            .process_watermark_status(crate::time::WatermarkStatus::Active, self.cx);
        self.cx.current_operator = self.node;
    }

    /// How many more elements this poll may emit (the rest of the poll's budget).
    #[inline]
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Lowers this poll's budget to at most `max` more elements (rate limiting).
    pub fn limit_budget(&mut self, max: usize) {
        self.remaining = self.remaining.min(max);
    }

    /// The current processing time in milliseconds (the runtime's clock at this poll).
    pub fn current_processing_time(&self) -> i64 {
        self.cx.now_ms
    }

    /// This source instance's index.
    pub fn subtask_index(&self) -> u32 {
        self.subtask_index
    }

    /// The source's parallelism.
    pub fn parallelism(&self) -> u32 {
        self.parallelism
    }

    fn hand_over(&mut self) {
        if !self.buffer.is_empty() {
            let run = std::mem::take(&mut self.buffer);
            self.emitted += run.len() as u64;
            self.next.process_batch(run, self.cx);
            self.cx.current_operator = self.node;
        }
    }

    /// Hands the remaining elements to the chain; returns how many the poll emitted.
    pub(crate) fn finish(mut self) -> u64 {
        self.hand_over();
        self.emitted
    }
}

/// Incremental aggregation of a window's elements (Flink's `AggregateFunction`): the window keeps
/// only an accumulator.
///
/// # Examples
///
/// ```
/// use eichhorn::prelude::*;
///
/// /// The average of the values.
/// #[operator]
/// #[derive(Clone)]
/// struct Average;
///
/// impl AggregateFunction<f64> for Average {
///     type Acc = (f64, u64);
///     type Out = f64;
///     fn create_accumulator(&mut self) -> (f64, u64) { (0.0, 0) }
///     fn add(&mut self, value: f64, (sum, count): (f64, u64)) -> (f64, u64) { (sum + value, count + 1) }
///     fn get_result(&mut self, (sum, count): &(f64, u64)) -> f64 { sum / *count as f64 }
///     fn merge(&mut self, a: (f64, u64), b: (f64, u64)) -> (f64, u64) { (a.0 + b.0, a.1 + b.1) }
/// }
/// let mut average = Average;
/// let empty = average.create_accumulator();
/// let acc = average.add(2.0, empty);
/// let acc = average.add(4.0, acc);
/// assert_eq!(average.get_result(&acc), 3.0);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an aggregate function",
    label = "needs an `impl AggregateFunction` for this type",
    note = "implement `AggregateFunction` for the type (usually a struct with `#[operator]`)"
)]
pub trait AggregateFunction<I>: crate::api::Unkeyed + Clone + Send + 'static {
    /// The accumulator a window keeps.
    type Acc: Clone + Send + 'static;
    /// The result.
    type Out;
    /// A new, empty accumulator.
    fn create_accumulator(&mut self) -> Self::Acc;
    /// Adds `value` to the accumulator and returns it.
    fn add(&mut self, value: I, accumulator: Self::Acc) -> Self::Acc;
    /// The result of an accumulator.
    fn get_result(&mut self, accumulator: &Self::Acc) -> Self::Out;
    /// Merges two accumulators (session windows merge).
    fn merge(&mut self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
}

/// Processes all elements of a window (or its pre-aggregated result) with the window's metadata
/// (Flink's `ProcessWindowFunction`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a process window function",
    label = "needs an `impl ProcessWindowFunction` for this type",
    note = "implement `ProcessWindowFunction` for the type (usually a struct with `#[operator]`)"
)]
pub trait ProcessWindowFunction<K, I>: crate::api::Unkeyed + Clone + Send + 'static {
    /// The output type.
    type Out;
    /// Called once per subtask before the first window.
    ///
    /// # Errors
    ///
    /// Any error fails the job, naming this operator.
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Emits the results of one window firing: `elements` are the window's contents (with
    /// reduce or aggregate first, the one pre-aggregated value).
    fn process(
        &mut self,
        key: &K,
        ctx: &crate::operator::window::WindowContext,
        elements: Vec<I>,
        out: &mut Collector<'_, Self::Out>,
    );
    /// Called once per subtask after the last window.
    ///
    /// # Errors
    ///
    /// Any error fails the job.
    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// A process function on a keyed stream: keyed state, event-time and processing-time timers,
/// side outputs (Flink's `KeyedProcessFunction`).
///
/// # Examples
///
/// ```
/// use eichhorn::prelude::*;
/// use eichhorn::state::ValueState;
/// use eichhorn::time::WatermarkStrategy;
///
/// /// Emits a key's count 10 ms (event time) after its first element.
/// #[operator]
/// struct CountLater {
///     #[state]
///     count: ValueState<u64>,
/// }
///
/// impl KeyedProcessFunction for CountLater {
///     type Key = char;
///     type In = (char, i64);
///     type Out = (char, u64);
///     fn process_element(&mut self, (_, ts): (char, i64), ctx: &mut KeyedContext<'_, '_, char>, _out: &mut Collector<'_, (char, u64)>) {
///         let count = self.count.value(ctx).unwrap_or(0);
///         if count == 0 {
///             ctx.register_event_time_timer(ts + 10);
///         }
///         self.count.update(ctx, count + 1);
///     }
///     fn on_timer(&mut self, _ts: i64, ctx: &mut KeyedContext<'_, '_, char>, out: &mut Collector<'_, (char, u64)>) {
///         let count = self.count.value(ctx).unwrap_or(0);
///         out.collect((*ctx.current_key(), count));
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let env = StreamEnv::new();
/// let counts = env
///     .from_collection(vec![('a', 1i64), ('b', 2), ('a', 5), ('a', 30)])
///     .assign_timestamps_and_watermarks(
///         WatermarkStrategy::for_bounded_out_of_orderness_every_event(0)
///             .with_timestamp_assigner(|e: &(char, i64), _| e.1),
///     )
///     .key_by(|e: &(char, i64)| e.0)
///     .process(CountLater::new())
///     .collect_sink();
/// env.execute("timers").await.unwrap();
/// // The timers at 11 and 12 fire on the watermark that follows ('a', 30): by then 'a' has
/// // counted that element too.
/// assert_eq!(counts.take(), vec![('a', 3), ('b', 1)]);
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a keyed process function",
    label = "needs an `impl KeyedProcessFunction` for this type",
    note = "implement `KeyedProcessFunction` for the type (usually a struct with `#[operator]`)"
)]
pub trait KeyedProcessFunction: crate::api::Operator + Clone + Send + 'static {
    /// The key type.
    type Key: crate::api::Key;
    /// The input type.
    type In;
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
    /// Processes one element of the current key.
    fn process_element(
        &mut self,
        value: Self::In,
        ctx: &mut crate::operator::KeyedContext<'_, '_, Self::Key>,
        out: &mut Collector<'_, Self::Out>,
    );
    /// A timer of the current key fired at `timestamp`.
    fn on_timer(
        &mut self,
        _timestamp: i64,
        _ctx: &mut crate::operator::KeyedContext<'_, '_, Self::Key>,
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

/// A flat map on a keyed stream with keyed state: Flink's `RichFlatMapFunction` after
/// `keyBy` (`KeyedStream::flat_map_function`). The context scopes state to the element's key;
/// it has no timers (use a [`KeyedProcessFunction`] for those).
///
/// # Examples
///
/// ```
/// use eichhorn::prelude::*;
/// use eichhorn::state::ValueState;
///
/// /// Emits (key, change) when a key's value moved by more than `threshold`.
/// #[operator]
/// struct Jumps {
///     #[state]
///     last: ValueState<i64>,
///     threshold: i64,
/// }
///
/// impl KeyedFlatMapFunction for Jumps {
///     type Key = char;
///     type In = (char, i64);
///     type Out = (char, i64);
///     fn flat_map(&mut self, (key, value): (char, i64), ctx: &mut KeyedContext<'_, '_, char>, out: &mut Collector<'_, (char, i64)>) {
///         if let Some(last) = self.last.value(ctx) && (value - last).abs() > self.threshold {
///             out.collect((key, value - last));
///         }
///         self.last.update(ctx, value);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let env = StreamEnv::new();
/// let jumps = env
///     .from_collection(vec![('a', 1i64), ('b', 5), ('a', 9), ('b', 6), ('a', 10)])
///     .key_by(|e: &(char, i64)| e.0)
///     .flat_map_function(Jumps::new(3))
///     .collect_sink();
/// env.execute("jumps").await.unwrap();
/// assert_eq!(jumps.take(), vec![('a', 8)]);
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a keyed flat map function",
    label = "needs an `impl KeyedFlatMapFunction` for this type",
    note = "implement `KeyedFlatMapFunction` for the type (usually a struct with `#[operator]`)"
)]
pub trait KeyedFlatMapFunction: crate::api::Operator + Clone + Send + 'static {
    /// The key type.
    type Key: crate::api::Key;
    /// The input type.
    type In;
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
    /// Emits the outputs for one element of the current key into `out`.
    fn flat_map(
        &mut self,
        value: Self::In,
        ctx: &mut crate::operator::KeyedContext<'_, '_, Self::Key>,
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

/// A process function on two connected streams (Flink's `CoProcessFunction`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a co-process function",
    label = "needs an `impl CoProcessFunction` for this type",
    note = "implement `CoProcessFunction` for the type (usually a struct with `#[operator]`)"
)]
pub trait CoProcessFunction<A, B>: crate::api::Unkeyed + Clone + Send + 'static {
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
    /// Processes an element of the first stream.
    fn process_element1(
        &mut self,
        value: A,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, Self::Out>,
    );
    /// Processes an element of the second stream.
    fn process_element2(
        &mut self,
        value: B,
        ctx: &mut OperatorContext<'_>,
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

/// A process function on two connected keyed streams: keyed state and timers shared by both
/// inputs of a key (Flink's `KeyedCoProcessFunction`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a keyed co-process function",
    label = "needs an `impl KeyedCoProcessFunction` for this type",
    note = "implement `KeyedCoProcessFunction` for the type (usually a struct with `#[operator]`)"
)]
pub trait KeyedCoProcessFunction: crate::api::Operator + Clone + Send + 'static {
    /// The key type (both streams are keyed by it).
    type Key: crate::api::Key;
    /// The first input type.
    type In1;
    /// The second input type.
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
    /// Processes an element of the first stream.
    fn process_element1(
        &mut self,
        value: Self::In1,
        ctx: &mut crate::operator::KeyedContext<'_, '_, Self::Key>,
        out: &mut Collector<'_, Self::Out>,
    );
    /// Processes an element of the second stream.
    fn process_element2(
        &mut self,
        value: Self::In2,
        ctx: &mut crate::operator::KeyedContext<'_, '_, Self::Key>,
        out: &mut Collector<'_, Self::Out>,
    );
    /// A timer of the current key fired.
    fn on_timer(
        &mut self,
        _timestamp: i64,
        _ctx: &mut crate::operator::KeyedContext<'_, '_, Self::Key>,
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

/// The timestamps of a joined pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinContext {
    /// The left element's timestamp.
    pub left_timestamp: i64,
    /// The right element's timestamp.
    pub right_timestamp: i64,
}

impl JoinContext {
    /// The joined result's timestamp: the larger of the two.
    pub fn timestamp(&self) -> i64 {
        self.left_timestamp.max(self.right_timestamp)
    }
}

/// Processes the pairs of an interval join (Flink's `ProcessJoinFunction`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a process join function",
    label = "needs an `impl ProcessJoinFunction` for this type",
    note = "implement `ProcessJoinFunction` for the type (usually a struct with `#[operator]`)"
)]
pub trait ProcessJoinFunction<A, B>: crate::api::Unkeyed + Clone + Send + 'static {
    /// The output type.
    type Out;
    /// Emits the results for one pair.
    fn process_element(
        &mut self,
        left: A,
        right: B,
        ctx: &JoinContext,
        out: &mut Collector<'_, Self::Out>,
    );
}
