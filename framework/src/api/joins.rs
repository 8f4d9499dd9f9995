//! Joins: the interval join of two keyed streams, and window join / co-group.

use serde::{Deserialize, Serialize};

use super::datastream::DataStream;
use super::functions::{ProcessJoinFunction, ProcessWindowFunction};
use super::key::{Data, Key};
use super::keyed::KeyedStream;
use crate::error::GraphError;
use crate::operator::window::{WindowAssigner, WindowContext};
use crate::operator::{Collector, IntervalJoinOperator};

/// `left.interval_join(right)`, waiting for its bounds (Flink's `IntervalJoin`).
#[derive(Debug)]
pub struct IntervalJoin<K, A, B> {
    left: KeyedStream<K, A>,
    right: KeyedStream<K, B>,
}

impl<K: Key, A: Data, B: Data> IntervalJoin<K, A, B> {
    pub(crate) fn new(left: KeyedStream<K, A>, right: KeyedStream<K, B>) -> Self {
        Self { left, right }
    }

    /// Joins each left element at `t` with the right elements at `t + lower_ms ..= t + upper_ms`.
    pub fn between(self, lower_ms: i64, upper_ms: i64) -> IntervalJoined<K, A, B> {
        IntervalJoined {
            join: self,
            lower_ms,
            upper_ms,
            lower_inclusive: true,
            upper_inclusive: true,
        }
    }
}

/// An interval join with bounds (Flink's `IntervalJoined`).
///
/// # Examples
///
/// ```
/// use eichhorn::prelude::*;
/// use eichhorn::time::WatermarkStrategy;
///
/// #[operator]
/// #[derive(Clone)]
/// struct Pair;
/// impl ProcessJoinFunction<(u8, i64), (u8, i64)> for Pair {
///     type Out = (i64, i64);
///     fn process_element(&mut self, l: (u8, i64), r: (u8, i64), _ctx: &JoinContext, out: &mut Collector<'_, (i64, i64)>) {
///         out.collect((l.1, r.1));
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let env = StreamEnv::new();
/// let stamped = |s: DataStream<(u8, i64)>| s.assign_timestamps_and_watermarks(
///     WatermarkStrategy::for_bounded_out_of_orderness_every_event(0).with_timestamp_assigner(|e: &(u8, i64), _| e.1));
/// let left = stamped(env.from_collection(vec![(1u8, 100i64), (1, 200)])).key_by(|e| e.0);
/// let right = stamped(env.from_collection(vec![(1u8, 90i64), (1, 150), (1, 260)])).key_by(|e| e.0);
/// let pairs = left.interval_join(right).between(-20, 60).process(Pair).collect_sink();
/// env.execute("interval join").await.unwrap();
/// let mut pairs = pairs.take();
/// pairs.sort();
/// assert_eq!(pairs, vec![(100, 90), (100, 150), (200, 260)]);
/// # }
/// ```
#[derive(Debug)]
pub struct IntervalJoined<K, A, B> {
    join: IntervalJoin<K, A, B>,
    lower_ms: i64,
    upper_ms: i64,
    lower_inclusive: bool,
    upper_inclusive: bool,
}

impl<K: Key, A: Data, B: Data> IntervalJoined<K, A, B> {
    /// Excludes the lower bound.
    pub fn lower_bound_exclusive(mut self) -> Self {
        self.lower_inclusive = false;
        self
    }

    /// Excludes the upper bound.
    pub fn upper_bound_exclusive(mut self) -> Self {
        self.upper_inclusive = false;
        self
    }

    /// Runs `function` on every joined pair.
    pub fn process<F>(self, function: F) -> DataStream<F::Out>
    where
        F: ProcessJoinFunction<A, B>,
        F::Out: Data,
    {
        let lower = self
            .lower_ms
            .saturating_add(i64::from(!self.lower_inclusive));
        let upper = self
            .upper_ms
            .saturating_sub(i64::from(!self.upper_inclusive));
        if lower > upper {
            self.join
                .left
                .env()
                .record_error(GraphError::InvalidApiUse(format!(
                    "interval join bounds are empty: lower {} must not exceed upper {} (after \
                 exclusive bounds)",
                    lower, upper
                )));
        }
        let key_left = self.join.left.selector();
        let key_right = self.join.right.selector();
        let operator = IntervalJoinOperator::new(lower, upper, key_left, key_right, function);
        self.join
            .left
            .into_stream()
            .connect(self.join.right.into_stream())
            .transform("Interval Join", operator)
            .with_default_uid::<F>()
    }
}

/// An element of either joined stream, for window joins.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TaggedUnion<A, B> {
    /// From the first stream.
    One(A),
    /// From the second stream.
    Two(B),
}

/// `a.join(b)` or `a.co_group(b)`, waiting for keys and a window (Flink's `JoinedStreams` and
/// `CoGroupedStreams`).
#[derive(Debug)]
pub struct WindowJoin<A, B> {
    first: DataStream<A>,
    second: DataStream<B>,
}

impl<A: Data, B: Data> WindowJoin<A, B> {
    pub(crate) fn new(first: DataStream<A>, second: DataStream<B>) -> Self {
        Self { first, second }
    }

    /// Keys both streams and cuts them into windows: elements of one key and window from both
    /// streams meet.
    pub fn window<K, KS1, KS2>(
        self,
        key1: KS1,
        key2: KS2,
        assigner: impl Into<WindowAssigner>,
    ) -> WindowedJoin<K, A, B>
    where
        K: Key,
        KS1: Fn(&A) -> K + Clone + Send + Sync + 'static,
        KS2: Fn(&B) -> K + Clone + Send + Sync + 'static,
    {
        let tagged = self
            .first
            .map(TaggedUnion::<A, B>::One)
            .union([self.second.map(TaggedUnion::<A, B>::Two)]);
        let keyed = tagged.key_by(move |t: &TaggedUnion<A, B>| match t {
            TaggedUnion::One(a) => key1(a),
            TaggedUnion::Two(b) => key2(b),
        });
        WindowedJoin {
            windowed: keyed.window(assigner),
        }
    }
}

/// A windowed join or co-group, waiting for its function.
#[derive(Debug)]
pub struct WindowedJoin<K, A, B> {
    windowed: super::WindowedStream<K, TaggedUnion<A, B>>,
}

/// Splits a window's tagged elements and hands them to the user's function.
struct CoGroupWindow<F, O>(F, std::marker::PhantomData<fn() -> O>);

impl<F: Clone, O> Clone for CoGroupWindow<F, O> {
    fn clone(&self) -> Self {
        Self(self.0.clone(), std::marker::PhantomData)
    }
}

impl<K, A, B, O: 'static, F> ProcessWindowFunction<K, TaggedUnion<A, B>> for CoGroupWindow<F, O>
where
    F: FnMut(&K, Vec<A>, Vec<B>, &mut Collector<'_, O>) + Clone + Send + 'static,
{
    type Out = O;
    fn process(
        &mut self,
        key: &K,
        _ctx: &WindowContext,
        elements: Vec<TaggedUnion<A, B>>,
        out: &mut Collector<'_, O>,
    ) {
        let mut first = Vec::new();
        let mut second = Vec::new();
        for element in elements {
            match element {
                TaggedUnion::One(a) => first.push(a),
                TaggedUnion::Two(b) => second.push(b),
            }
        }
        (self.0)(key, first, second, out);
    }
}

impl<K: Key, A: Data, B: Data> WindowedJoin<K, A, B> {
    /// Co-group: per key and window, `function` gets the elements of both streams (either list
    /// may be empty).
    pub fn co_group<O: Data, F>(self, function: F) -> DataStream<O>
    where
        F: FnMut(&K, Vec<A>, Vec<B>, &mut Collector<'_, O>) + Clone + Send + 'static,
    {
        self.windowed
            .process(CoGroupWindow(function, std::marker::PhantomData))
    }

    /// Join: per key and window, `function` maps every pair of elements from the two streams
    /// (an inner join: a key present in one stream only yields nothing).
    pub fn join<O: Data, F>(self, function: F) -> DataStream<O>
    where
        F: FnMut(A, B) -> O + Clone + Send + 'static,
    {
        let mut function = function;
        self.co_group(
            move |_key: &K, first: Vec<A>, second: Vec<B>, out: &mut Collector<'_, O>| {
                for a in &first {
                    for b in &second {
                        out.collect(function(a.clone(), b.clone()));
                    }
                }
            },
        )
    }
}

crate::api::operator::impl_plain_operator!(CoGroupWindow<F, O>; F, O);
