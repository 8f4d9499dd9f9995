//! `WindowedStream<K, T>`: a keyed stream cut into windows.
//!
//! Window contents (elements, accumulators), trigger state and timers are checkpointed as keyed
//! state, so keys, elements and accumulators are serialisable.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::datastream::DataStream;
use super::functions::{AggregateFunction, ProcessWindowFunction};
use super::key::{Data, Key};
use super::keyed::KeyedStream;
use super::output_tag::OutputTag;
use crate::error::GraphError;
use crate::operator::window::trigger::{DefaultTrigger, Trigger};
use crate::operator::window::{
    AggregateProcessWindow, AggregateWindow, BoxedEvictor, EvictingWindow, Evictor, ProcessWindow,
    ReduceProcessWindow, ReduceWindow, WindowAssign, WindowAssigner, WindowFunctionCore,
    WindowOperator,
};

/// A keyed stream with a window assigner (Flink's `WindowedStream`): set lateness and the late
/// side output, then say what each window computes.
///
/// # Examples
///
/// ```
/// use eichhorn::prelude::*;
/// use eichhorn::operator::window::{TimeDomain, WindowAssigner};
/// use eichhorn::time::WatermarkStrategy;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let env = StreamEnv::new();
/// let readings = vec![("a".to_string(), 1_000i64, 5.0f64), ("a".to_string(), 2_000, 3.0), ("a".to_string(), 6_000, 9.0)];
/// let minima = env
///     .from_collection(readings)
///     .assign_timestamps_and_watermarks(
///         WatermarkStrategy::for_bounded_out_of_orderness_every_event(0)
///             .with_timestamp_assigner(|r: &(String, i64, f64), _| r.1),
///     )
///     .key_by(|r| r.0.clone())
///     .window(WindowAssigner::tumbling(TimeDomain::EventTime, 5_000, 0)?)
///     .reduce(|a, b| if b.2 < a.2 { b } else { a })
///     .collect_sink();
/// env.execute("windows").await?;
/// let temps: Vec<f64> = minima.take().into_iter().map(|r| r.2).collect();
/// assert_eq!(temps, vec![3.0, 9.0]);
/// # Ok(()) }
/// ```
pub struct WindowedStream<K, T, Tr = DefaultTrigger> {
    keyed: KeyedStream<K, T>,
    assigner: WindowAssigner,
    trigger: Tr,
    evictor: Option<BoxedEvictor<T>>,
    allowed_lateness_ms: i64,
    late_tag: Option<OutputTag<T>>,
}

impl<K, T, Tr> std::fmt::Debug for WindowedStream<K, T, Tr> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowedStream")
            .field("assigner", &self.assigner)
            .field("allowed_lateness_ms", &self.allowed_lateness_ms)
            .finish()
    }
}

impl<K: Key, T: Data> WindowedStream<K, T> {
    pub(crate) fn new(keyed: KeyedStream<K, T>, assigner: WindowAssigner) -> Self {
        Self {
            keyed,
            trigger: DefaultTrigger::for_assigner(&assigner),
            assigner,
            evictor: None,
            allowed_lateness_ms: 0,
            late_tag: None,
        }
    }
}

impl<K: Key, T: Data, Tr: Trigger<T>> WindowedStream<K, T, Tr> {
    /// Replaces the assigner's default trigger (Flink's `trigger`).
    pub fn trigger<Tr2: Trigger<T>>(self, trigger: Tr2) -> WindowedStream<K, T, Tr2> {
        if self.assigner.is_merging() && !trigger.can_merge() {
            self.keyed.env().record_error(GraphError::InvalidApiUse(format!(
                "the {} window assigner merges windows, and this trigger does not support merging",
                self.assigner.kind()
            )));
        }
        WindowedStream {
            keyed: self.keyed,
            assigner: self.assigner,
            trigger,
            evictor: self.evictor,
            allowed_lateness_ms: self.allowed_lateness_ms,
            late_tag: self.late_tag,
        }
    }

    /// Removes elements before (and after) the window function runs (Flink's `evictor`). The
    /// window then keeps all its elements.
    pub fn evictor<E: Evictor<T>>(mut self, evictor: E) -> Self {
        self.evictor = Some(BoxedEvictor::new(evictor));
        self
    }

    /// Keeps windows for `lateness_ms` after the watermark passed their end: records arriving in
    /// that time are added and fire the window again (event time only; default 0).
    pub fn allowed_lateness(mut self, lateness_ms: i64) -> Self {
        self.allowed_lateness_ms = lateness_ms.max(0);
        self
    }

    /// Sends records that arrive too late for any window to the side output `tag` (read it with
    /// `side_output(&tag)` on the result). Without it they are dropped, and counted either way
    /// (`late_records` in the job result).
    ///
    /// A record whose timestamp is so close to the limits of `i64` that none of its windows fits
    /// in an `i64` (e.g. `i64::MAX`) is treated the same way, with a warning in the log: one such
    /// record does not fail the job.
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.late_tag = Some(tag.clone());
        self
    }

    /// Adds the window operator running `function`; `state_schema` is the state its user
    /// function declares (recorded in the job descriptor, so its fingerprint covers it).
    fn build<O: Data, F>(
        self,
        function_name: &str,
        function: F,
        state_schema: crate::state::StateSchema,
    ) -> DataStream<O>
    where
        F: WindowFunctionCore<K, T, Out = O>,
    {
        let evicting = if self.evictor.is_some() {
            ", Evictor"
        } else {
            ""
        };
        let name = format!(
            "Window({}, {function_name}{evicting})",
            self.assigner.kind()
        );
        let selector = self.keyed.selector();
        let stream = self.keyed.into_stream();
        let windowed = match self.evictor {
            Some(evictor) => {
                let function = EvictingWindow { function, evictor };
                let operator = WindowOperator::new(
                    self.assigner,
                    selector,
                    function,
                    self.trigger,
                    self.allowed_lateness_ms,
                    self.late_tag,
                );
                stream.transform(&name, operator)
            }
            None => {
                let operator = WindowOperator::new(
                    self.assigner,
                    selector,
                    function,
                    self.trigger,
                    self.allowed_lateness_ms,
                    self.late_tag,
                );
                stream.transform(&name, operator)
            }
        };
        if let Some(node) = windowed.origin {
            windowed.env.lock().graph.node_mut(node).state_schema = state_schema;
        }
        windowed
    }

    /// Each window emits the reduction of its elements (kept incrementally).
    pub fn reduce<F>(self, reduce: F) -> DataStream<T>
    where
        F: FnMut(T, T) -> T + Clone + Send + 'static,
    {
        self.build(
            "Reduce",
            ReduceWindow(reduce),
            crate::state::StateSchema::empty(),
        )
    }

    /// Each window emits the result of an [`AggregateFunction`] over its elements. The
    /// accumulator is checkpointed with the window, so it is serialisable.
    pub fn aggregate<A>(self, aggregate: A) -> DataStream<A::Out>
    where
        A: AggregateFunction<T>,
        A::Acc: Serialize + DeserializeOwned,
        A::Out: Data,
    {
        let schema = crate::api::Operator::state_schema(&aggregate);
        self.build("Aggregate", AggregateWindow(aggregate), schema)
            .with_default_uid::<A>()
    }

    /// Each window hands all its elements to a [`ProcessWindowFunction`].
    pub fn process<P>(self, process: P) -> DataStream<P::Out>
    where
        P: ProcessWindowFunction<K, T>,
        P::Out: Data,
    {
        let schema = crate::api::Operator::state_schema(&process);
        self.build("Process", ProcessWindow(process), schema)
            .with_default_uid::<P>()
    }

    /// Reduces incrementally, then hands the reduced value and the window's metadata to a
    /// [`ProcessWindowFunction`].
    pub fn reduce_with_process<F, P>(self, reduce: F, process: P) -> DataStream<P::Out>
    where
        F: FnMut(T, T) -> T + Clone + Send + 'static,
        P: ProcessWindowFunction<K, T>,
        P::Out: Data,
    {
        let schema = crate::api::Operator::state_schema(&process);
        self.build(
            "Reduce, Process",
            ReduceProcessWindow(ReduceWindow(reduce), process),
            schema,
        )
        .with_default_uid::<P>()
    }

    /// Aggregates incrementally, then hands the result and the window's metadata to a
    /// [`ProcessWindowFunction`].
    pub fn aggregate_with_process<A, P>(self, aggregate: A, process: P) -> DataStream<P::Out>
    where
        A: AggregateFunction<T>,
        A::Acc: Serialize + DeserializeOwned,
        P: ProcessWindowFunction<K, A::Out>,
        P::Out: Data,
    {
        let schema = crate::api::Operator::state_schema(&process);
        self.build(
            "Aggregate, Process",
            AggregateProcessWindow(AggregateWindow(aggregate), process),
            schema,
        )
        .with_default_uid::<P>()
    }
}

/// A non-keyed stream with a window assigner (Flink's `AllWindowedStream`, from
/// `DataStream::window_all`). All elements go through one window operator at parallelism 1.
pub struct AllWindowedStream<T, Tr = DefaultTrigger> {
    inner: WindowedStream<(), T, Tr>,
}

impl<T, Tr> std::fmt::Debug for AllWindowedStream<T, Tr> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AllWindowedStream")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<T: Data> AllWindowedStream<T> {
    pub(crate) fn new(stream: DataStream<T>, assigner: WindowAssigner) -> Self {
        Self {
            inner: WindowedStream::new(stream.global().key_by(|_: &T| ()), assigner),
        }
    }
}

impl<T: Data, Tr: Trigger<T>> AllWindowedStream<T, Tr> {
    /// See [`WindowedStream::trigger`].
    pub fn trigger<Tr2: Trigger<T>>(self, trigger: Tr2) -> AllWindowedStream<T, Tr2> {
        AllWindowedStream {
            inner: self.inner.trigger(trigger),
        }
    }

    /// See [`WindowedStream::evictor`].
    pub fn evictor<E: Evictor<T>>(self, evictor: E) -> Self {
        Self {
            inner: self.inner.evictor(evictor),
        }
    }

    /// See [`WindowedStream::allowed_lateness`].
    pub fn allowed_lateness(self, lateness_ms: i64) -> Self {
        Self {
            inner: self.inner.allowed_lateness(lateness_ms),
        }
    }

    /// See [`WindowedStream::side_output_late_data`].
    pub fn side_output_late_data(self, tag: &OutputTag<T>) -> Self {
        Self {
            inner: self.inner.side_output_late_data(tag),
        }
    }

    /// Each window emits the reduction of its elements.
    pub fn reduce<F>(self, reduce: F) -> DataStream<T>
    where
        F: FnMut(T, T) -> T + Clone + Send + 'static,
    {
        self.inner.reduce(reduce).set_parallelism(1)
    }

    /// Each window emits the result of an [`AggregateFunction`] (see
    /// [`WindowedStream::aggregate`]).
    pub fn aggregate<A>(self, aggregate: A) -> DataStream<A::Out>
    where
        A: AggregateFunction<T>,
        A::Acc: Serialize + DeserializeOwned,
        A::Out: Data,
    {
        self.inner.aggregate(aggregate).set_parallelism(1)
    }

    /// Each window hands all its elements to a [`ProcessWindowFunction`] (whose key is `()`).
    pub fn process<P>(self, process: P) -> DataStream<P::Out>
    where
        P: ProcessWindowFunction<(), T>,
        P::Out: Data,
    {
        self.inner.process(process).set_parallelism(1)
    }
}
