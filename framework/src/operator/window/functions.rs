//! The ways a window turns its contents into results: `reduce`, `aggregate`, `process`, and
//! reduce or aggregate followed by a process function (incremental state, window metadata).
//!
//! Aggregate functions (with or without a process function after them) combine panes
//! ([`WindowFunctionCore::combines_panes`]): a sliding window's contents may be merged from the
//! contents of its slide-sized panes, since `AggregateFunction::merge` promises that merging what
//! two sets of elements accumulated gives what accumulating them all gives (session windows rely
//! on it too). Reduce closures do not: they may depend on arrival order, and Flink folds each
//! sliding window's elements in arrival order. Functions that keep all elements do not either:
//! their merge concatenates, and the elements' order would follow the panes.
//!
//! What a window keeps (its accumulator, its elements) is checkpointed, so it is serialisable:
//! elements are stream data, and an aggregate function's accumulator must be `Serialize +
//! DeserializeOwned` (Flink's accumulator serializer).
//!
//! The "then process" variants wrap the plain reduce and aggregate cores for their incremental
//! half and only differ in what they emit.
//!
//! This file also holds what every part of the window operator shares about functions: the
//! [`WindowFunctionCore`] trait, the [`WindowContext`] a function sees, and the [`Emitter`]
//! through which a window's result leaves. They sit here, below the operator and its paths
//! (`operator.rs`, `generic_path.rs`, `pane_path.rs`, `session_path.rs`) and the stores the paths
//! drive (`panes.rs`, `backend_panes.rs`, `sessions.rs`), so that each of those imports them
//! without importing the others.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::TimeWindow;
use crate::api::functions::{AggregateFunction, ProcessWindowFunction};
use crate::operator::{
    Collector, FunctionError, RuntimeContext, StateInitContext, StateSnapshotContext,
};

/// What a window knows when its function runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowContext {
    /// The window being emitted.
    pub window: TimeWindow,
    /// The operator's current watermark.
    pub current_watermark: i64,
    /// The current processing time.
    pub current_processing_time: i64,
}

/// How a window's contents are kept and turned into results: incrementally (reduce, aggregate)
/// or as all elements (process, evictors).
pub(crate) trait WindowFunctionCore<K, T>: Clone + Send + 'static {
    /// What a window keeps (checkpointed with it).
    type Acc: Clone + Send + Serialize + DeserializeOwned + 'static;
    /// What a window emits.
    type Out: Send + 'static;
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Adds `value` to a window's contents (`None`: the window is new).
    fn add(&mut self, contents: Option<Self::Acc>, value: T, timestamp: Option<i64>) -> Self::Acc;
    /// Merges the contents of two session windows.
    fn merge(&mut self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
    /// Whether a sliding window's contents may be computed by merging the contents of its panes
    /// (time slices) in time order: merging what two element sets accumulated must give what
    /// accumulating all their elements in arrival order gives. True for aggregate functions,
    /// whose `merge` is part of the user's contract (Flink's `AggregateFunction.merge`, also used
    /// by session windows); false for reduce closures, which may depend on arrival order, so
    /// sliding reduces keep Flink's per-window folding. Tumbling windows use panes regardless (a
    /// pane is the window). False unless overridden.
    fn combines_panes(&self) -> bool {
        false
    }
    /// Emits a window's result (an evictor may remove contents).
    fn emit(
        &mut self,
        key: &K,
        ctx: &WindowContext,
        contents: &mut Self::Acc,
        out: &mut Collector<'_, Self::Out>,
    );
    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Checks the restored schema of the user function and restores its `#[operator]` state
    /// fields (the process function's when there are two).
    fn initialize_fields(&mut self, _ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Stores the user function's `#[operator]` schema and state fields.
    fn snapshot_fields(&self, _ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// Emits window results: the collector and what a [`WindowContext`] needs besides the window.
pub(super) struct Emitter<'o, 'c, O> {
    pub(super) out: &'o mut Collector<'c, O>,
    pub(super) watermark: i64,
    pub(super) processing_time: i64,
}

impl<O> Emitter<'_, '_, O> {
    /// Emits `window`'s result for `key` from `contents`, stamped with the window's
    /// `max_timestamp`.
    #[inline]
    pub(super) fn emit<K, T, F: WindowFunctionCore<K, T, Out = O>>(
        &mut self,
        function: &mut F,
        key: &K,
        window: TimeWindow,
        contents: &mut F::Acc,
    ) {
        let ctx = WindowContext {
            window,
            current_watermark: self.watermark,
            current_processing_time: self.processing_time,
        };
        self.out.set_timestamp(Some(window.max_timestamp()));
        function.emit(key, &ctx, contents, self.out);
    }
}

/// `initialize_fields`/`snapshot_fields` of a window function core that forward to the user
/// function in field `$field` (its `#[operator]` schema and state fields).
macro_rules! user_function_fields {
    ($field:tt) => {
        fn initialize_fields(
            &mut self,
            ctx: &mut crate::operator::StateInitContext,
        ) -> Result<(), FunctionError> {
            crate::api::operator::initialize_fields(&mut self.$field, ctx)
        }
        fn snapshot_fields(
            &self,
            ctx: &mut crate::operator::StateSnapshotContext,
        ) -> Result<(), FunctionError> {
            crate::api::operator::snapshot_fields(&self.$field, ctx)
        }
    };
}

/// `reduce`: the window keeps one value, combined as records arrive.
#[derive(Debug, Clone)]
pub(crate) struct ReduceWindow<F>(pub(crate) F);

impl<K, T, F> WindowFunctionCore<K, T> for ReduceWindow<F>
where
    T: Clone + Send + Serialize + DeserializeOwned + 'static,
    F: FnMut(T, T) -> T + Clone + Send + 'static,
{
    type Acc = T;
    type Out = T;
    fn add(&mut self, contents: Option<T>, value: T, _timestamp: Option<i64>) -> T {
        match contents {
            Some(acc) => (self.0)(acc, value),
            None => value,
        }
    }
    fn merge(&mut self, a: T, b: T) -> T {
        (self.0)(a, b)
    }
    fn combines_panes(&self) -> bool {
        // A reduce closure may depend on arrival order ("keep the first"): Flink folds each
        // sliding window's elements in arrival order, and so must we to give the same results.
        false
    }
    fn emit(
        &mut self,
        _key: &K,
        _ctx: &WindowContext,
        contents: &mut T,
        out: &mut Collector<'_, T>,
    ) {
        out.collect(contents.clone());
    }
}

/// `aggregate`: the window keeps an accumulator.
#[derive(Debug, Clone)]
pub(crate) struct AggregateWindow<A>(pub(crate) A);

impl<A> AggregateWindow<A> {
    /// Adds `value` to the accumulator (a new one for a new window).
    fn accumulate<T>(&mut self, contents: Option<A::Acc>, value: T) -> A::Acc
    where
        A: AggregateFunction<T>,
    {
        let acc = contents.unwrap_or_else(|| self.0.create_accumulator());
        self.0.add(value, acc)
    }
}

impl<K, T, A> WindowFunctionCore<K, T> for AggregateWindow<A>
where
    A: AggregateFunction<T>,
    A::Acc: Serialize + DeserializeOwned,
    A::Out: Send + 'static,
{
    user_function_fields!(0);
    type Acc = A::Acc;
    type Out = A::Out;
    fn add(&mut self, contents: Option<A::Acc>, value: T, _timestamp: Option<i64>) -> A::Acc {
        self.accumulate(contents, value)
    }
    fn merge(&mut self, a: A::Acc, b: A::Acc) -> A::Acc {
        self.0.merge(a, b)
    }
    fn combines_panes(&self) -> bool {
        true
    }
    fn emit(
        &mut self,
        _key: &K,
        _ctx: &WindowContext,
        contents: &mut A::Acc,
        out: &mut Collector<'_, A::Out>,
    ) {
        out.collect(self.0.get_result(contents));
    }
}

/// `process`: the window keeps all its elements and hands them to a process function.
#[derive(Debug, Clone)]
pub(crate) struct ProcessWindow<P>(pub(crate) P);

impl<K, T, P> WindowFunctionCore<K, T> for ProcessWindow<P>
where
    T: Clone + Send + Serialize + DeserializeOwned + 'static,
    P: ProcessWindowFunction<K, T>,
    P::Out: Send + 'static,
{
    user_function_fields!(0);
    type Acc = Vec<T>;
    type Out = P::Out;
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.0.open(ctx)
    }
    fn add(&mut self, contents: Option<Vec<T>>, value: T, _timestamp: Option<i64>) -> Vec<T> {
        let mut elements = contents.unwrap_or_default();
        elements.push(value);
        elements
    }
    fn merge(&mut self, mut a: Vec<T>, b: Vec<T>) -> Vec<T> {
        a.extend(b);
        a
    }
    fn emit(
        &mut self,
        key: &K,
        ctx: &WindowContext,
        contents: &mut Vec<T>,
        out: &mut Collector<'_, P::Out>,
    ) {
        self.0.process(key, ctx, contents.clone(), out);
    }
    fn close(&mut self) -> Result<(), FunctionError> {
        self.0.close()
    }
}

/// `reduce` then `process`: incremental reduce, and the process function gets the one reduced
/// value with the window's metadata.
#[derive(Debug, Clone)]
pub(crate) struct ReduceProcessWindow<F, P>(pub(crate) ReduceWindow<F>, pub(crate) P);

impl<K, T, F, P> WindowFunctionCore<K, T> for ReduceProcessWindow<F, P>
where
    T: Clone + Send + Serialize + DeserializeOwned + 'static,
    F: FnMut(T, T) -> T + Clone + Send + 'static,
    P: ProcessWindowFunction<K, T>,
    P::Out: Send + 'static,
{
    user_function_fields!(1);
    type Acc = T;
    type Out = P::Out;
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.1.open(ctx)
    }
    fn add(&mut self, contents: Option<T>, value: T, timestamp: Option<i64>) -> T {
        WindowFunctionCore::<K, T>::add(&mut self.0, contents, value, timestamp)
    }
    fn merge(&mut self, a: T, b: T) -> T {
        WindowFunctionCore::<K, T>::merge(&mut self.0, a, b)
    }
    fn combines_panes(&self) -> bool {
        WindowFunctionCore::<K, T>::combines_panes(&self.0)
    }
    fn emit(
        &mut self,
        key: &K,
        ctx: &WindowContext,
        contents: &mut T,
        out: &mut Collector<'_, P::Out>,
    ) {
        self.1.process(key, ctx, vec![contents.clone()], out);
    }
    fn close(&mut self) -> Result<(), FunctionError> {
        self.1.close()
    }
}

/// `aggregate` then `process`: incremental aggregation, and the process function gets the one
/// result with the window's metadata.
#[derive(Debug, Clone)]
pub(crate) struct AggregateProcessWindow<A, P>(pub(crate) AggregateWindow<A>, pub(crate) P);

impl<K, T, A, P> WindowFunctionCore<K, T> for AggregateProcessWindow<A, P>
where
    A: AggregateFunction<T>,
    A::Acc: Serialize + DeserializeOwned,
    P: ProcessWindowFunction<K, A::Out>,
    P::Out: Send + 'static,
{
    user_function_fields!(1);
    type Acc = A::Acc;
    type Out = P::Out;
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.1.open(ctx)
    }
    fn add(&mut self, contents: Option<A::Acc>, value: T, _timestamp: Option<i64>) -> A::Acc {
        self.0.accumulate(contents, value)
    }
    fn merge(&mut self, a: A::Acc, b: A::Acc) -> A::Acc {
        self.0.0.merge(a, b)
    }
    fn combines_panes(&self) -> bool {
        // `AggregateFunction::merge` is the user's promise that accumulators combine.
        true
    }
    fn emit(
        &mut self,
        key: &K,
        ctx: &WindowContext,
        contents: &mut A::Acc,
        out: &mut Collector<'_, P::Out>,
    ) {
        let result = self.0.0.get_result(contents);
        self.1.process(key, ctx, vec![result], out);
    }
    fn close(&mut self) -> Result<(), FunctionError> {
        self.1.close()
    }
}
