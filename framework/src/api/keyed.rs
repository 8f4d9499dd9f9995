//! `KeyedStream<K, T>`: a stream partitioned by key, with rolling aggregations.

use std::sync::Arc;

use super::datastream::DataStream;
use super::functions::KeyedProcessFunction;
use super::key::{Data, Key};
use crate::operator::{ByReducer, FieldAggregation, FieldReducer, FnReducer, RollingReduce};

/// A stream whose elements are partitioned by a key (Flink's `KeyedStream`): every element of
/// one key is processed by the same subtask, which keeps that key's state.
pub struct KeyedStream<K, T> {
    stream: DataStream<T>,
    key_selector: Arc<dyn Fn(&T) -> K + Send + Sync>,
}

impl<K, T> std::fmt::Debug for KeyedStream<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStream")
            .field("stream", &self.stream)
            .finish()
    }
}

impl<K, T> Clone for KeyedStream<K, T> {
    fn clone(&self) -> Self {
        Self {
            stream: self.stream.clone(),
            key_selector: self.key_selector.clone(),
        }
    }
}

impl<K: Key, T: Data> KeyedStream<K, T> {
    pub(crate) fn new(
        stream: DataStream<T>,
        key_selector: Arc<dyn Fn(&T) -> K + Send + Sync>,
    ) -> Self {
        Self {
            stream,
            key_selector,
        }
    }

    /// The key selector as a clonable closure.
    pub(crate) fn selector(&self) -> impl Fn(&T) -> K + Clone + Send + 'static {
        let selector = self.key_selector.clone();
        move |value: &T| selector(value)
    }

    /// The key-partitioned stream, for operators that do not need the key (the partitioning
    /// still applies to the next operator).
    pub fn into_stream(self) -> DataStream<T> {
        self.stream
    }

    /// Rolling reduce: for every element, emits `reduce(aggregate, element)` for its key, where
    /// the aggregate starts as the key's first element.
    ///
    /// # Examples
    ///
    /// ```
    /// use eichhorn::prelude::*;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let env = StreamEnv::new();
    /// let sums = env
    ///     .from_collection(vec![("a".to_string(), 1i64), ("b".to_string(), 2), ("a".to_string(), 3)])
    ///     .key_by(|(word, _)| word.clone())
    ///     .reduce(|(word, x), (_, y)| (word, x + y))
    ///     .collect_sink();
    /// env.execute("rolling").await.unwrap();
    /// assert_eq!(sums.take(), vec![("a".to_string(), 1), ("b".to_string(), 2), ("a".to_string(), 4)]);
    /// # }
    /// ```
    pub fn reduce<F>(self, reduce: F) -> DataStream<T>
    where
        F: FnMut(T, T) -> T + Clone + Send + 'static,
    {
        let operator = RollingReduce::new(self.selector(), FnReducer(reduce));
        self.stream.transform("Keyed Reduce", operator)
    }

    fn field_aggregation<N, L>(self, lens: L, kind: FieldAggregation, name: &str) -> DataStream<T>
    where
        N: Copy + PartialOrd + std::ops::Add<Output = N>,
        L: Fn(&mut T) -> &mut N + Clone + Send + 'static,
    {
        let operator = RollingReduce::new(self.selector(), FieldReducer { lens, kind });
        self.stream.transform(name, operator)
    }

    /// Rolling sum of the field `lens` points to; the other fields are those of the key's first
    /// element (Flink's `sum`).
    pub fn sum<N, L>(self, lens: L) -> DataStream<T>
    where
        N: Copy + PartialOrd + std::ops::Add<Output = N>,
        L: Fn(&mut T) -> &mut N + Clone + Send + 'static,
    {
        self.field_aggregation(lens, FieldAggregation::Sum, "Keyed Sum")
    }

    /// Rolling minimum of a field; the other fields are those of the key's first element
    /// (Flink's `min`; use [`KeyedStream::min_by`] for the whole minimal element).
    pub fn min<N, L>(self, lens: L) -> DataStream<T>
    where
        N: Copy + PartialOrd + std::ops::Add<Output = N>,
        L: Fn(&mut T) -> &mut N + Clone + Send + 'static,
    {
        self.field_aggregation(lens, FieldAggregation::Min, "Keyed Min")
    }

    /// Rolling maximum of a field; the other fields are those of the key's first element.
    pub fn max<N, L>(self, lens: L) -> DataStream<T>
    where
        N: Copy + PartialOrd + std::ops::Add<Output = N>,
        L: Fn(&mut T) -> &mut N + Clone + Send + 'static,
    {
        self.field_aggregation(lens, FieldAggregation::Max, "Keyed Max")
    }

    /// The element with the smallest field value so far (the earliest on ties).
    pub fn min_by<N, S>(self, field: S) -> DataStream<T>
    where
        N: PartialOrd,
        S: Fn(&T) -> N + Clone + Send + 'static,
    {
        let operator = RollingReduce::new(
            self.selector(),
            ByReducer {
                selector: field,
                keep_max: false,
            },
        );
        self.stream.transform("Keyed Min By", operator)
    }

    /// The element with the largest field value so far (the earliest on ties).
    pub fn max_by<N, S>(self, field: S) -> DataStream<T>
    where
        N: PartialOrd,
        S: Fn(&T) -> N + Clone + Send + 'static,
    {
        let operator = RollingReduce::new(
            self.selector(),
            ByReducer {
                selector: field,
                keep_max: true,
            },
        );
        self.stream.transform("Keyed Max By", operator)
    }

    /// Cuts each key's elements into windows (Flink's `window`).
    pub fn window(
        self,
        assigner: impl Into<crate::operator::window::WindowAssigner>,
    ) -> super::WindowedStream<K, T> {
        super::WindowedStream::new(self, assigner.into())
    }

    /// Windows of `size` elements per key, emitted and purged when full (Flink's
    /// `countWindow(size)`: global windows with a purging count trigger).
    pub fn count_window(
        self,
        size: u64,
    ) -> super::WindowedStream<
        K,
        T,
        crate::operator::window::trigger::PurgingTrigger<
            crate::operator::window::trigger::CountTrigger,
        >,
    > {
        use crate::operator::window::trigger::{CountTrigger, PurgingTrigger};
        self.window(crate::operator::window::WindowAssigner::global())
            .trigger(PurgingTrigger::of(CountTrigger::of(size)))
    }

    /// The last `size` elements per key, emitted every `slide` elements (Flink's
    /// `countWindow(size, slide)`: global windows, a count evictor and a count trigger).
    pub fn count_window_slide(
        self,
        size: u64,
        slide: u64,
    ) -> super::WindowedStream<K, T, crate::operator::window::trigger::CountTrigger> {
        use crate::operator::window::trigger::CountTrigger;
        self.window(crate::operator::window::WindowAssigner::global())
            .trigger(CountTrigger::of(slide))
            .evictor(crate::operator::window::CountEvictor::of(
                usize::try_from(size).unwrap_or(usize::MAX),
            ))
    }

    /// Joins with `other` by key on event-time intervals (Flink's `intervalJoin`); set the
    /// bounds with `between`.
    pub fn interval_join<B: Data>(self, other: KeyedStream<K, B>) -> super::IntervalJoin<K, T, B> {
        super::IntervalJoin::new(self, other)
    }

    pub(crate) fn env(&self) -> &super::StreamEnv {
        &self.stream.env
    }

    /// `map` on the key-partitioned stream.
    pub fn map<O: Data, F>(self, f: F) -> DataStream<O>
    where
        F: FnMut(T) -> O + Clone + Send + 'static,
    {
        self.stream.map(f)
    }

    /// `flat_map` on the key-partitioned stream.
    pub fn flat_map<O: Data, I, F>(self, f: F) -> DataStream<O>
    where
        I: IntoIterator<Item = O>,
        F: FnMut(T) -> I + Clone + Send + 'static,
    {
        self.stream.flat_map(f)
    }

    /// `filter` on the key-partitioned stream.
    pub fn filter<F>(self, f: F) -> DataStream<T>
    where
        F: FnMut(&T) -> bool + Clone + Send + 'static,
    {
        self.stream.filter(f)
    }

    /// Applies a [`KeyedProcessFunction`]: keyed state, timers and side outputs per key.
    pub fn process<F>(self, f: F) -> DataStream<F::Out>
    where
        F: KeyedProcessFunction<Key = K, In = T>,
        F::Out: Data,
    {
        let operator = crate::operator::KeyedProcessOperator::new(self.selector(), f);
        self.stream
            .transform("Keyed Process", operator)
            .with_default_uid::<F>()
    }

    /// Applies a [`super::KeyedFlatMapFunction`]: a flat map with keyed state (Flink's rich
    /// flat map after `keyBy`).
    pub fn flat_map_function<F>(self, f: F) -> DataStream<F::Out>
    where
        F: super::KeyedFlatMapFunction<Key = K, In = T>,
        F::Out: Data,
    {
        let operator = crate::operator::KeyedProcessOperator::new(
            self.selector(),
            crate::operator::KeyedFlatMap(f),
        );
        self.stream
            .transform("Keyed Flat Map", operator)
            .with_default_uid::<F>()
    }

    /// Connects this keyed stream with a broadcast stream, for a
    /// [`super::KeyedBroadcastProcessFunction`] (Flink's `connect(broadcastStream)` on a keyed
    /// stream): elements stay partitioned by key, broadcast elements reach every subtask.
    pub fn connect_broadcast<B: Data>(
        self,
        broadcast: super::BroadcastStream<B>,
    ) -> super::KeyedBroadcastConnectedStream<K, T, B> {
        super::KeyedBroadcastConnectedStream::new(self, broadcast)
    }
}
