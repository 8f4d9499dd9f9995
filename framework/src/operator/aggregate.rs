//! Rolling aggregations on keyed streams: `reduce`, `sum`, `min`, `max`, `min_by`, `max_by`.
//!
//! Each emits the updated aggregate for the record's key after every record (Flink's rolling
//! aggregation). Semantics follow Flink's `AggregationFunction`s:
//! - `sum`, `min`, `max` update one field of the first element seen for the key; the other fields
//!   keep that first element's values;
//! - `min_by`, `max_by` keep the whole element with the smallest (largest) field, the earlier one
//!   on ties.
//!
//! The per-key aggregate lives in the keyed state backend (memory: a fixed-seed hash map that
//! never iterates where order could reach the output; LMDB: a write-back cache over LMDB), and is
//! checkpointed with it.

use super::chain::{Collector, OneInputOperator, OperatorContext, RunContext};
use super::checkpointing::{StateInitContext, StateSnapshotContext};
use super::context::FunctionError;
use crate::api::{Data, Key};
use crate::exchange::Record;
use crate::state::{KeyedStateStore, ValueTable};

/// A reduce step: combines the aggregate so far with a new element.
pub(crate) trait Reducer<T>: Clone + Send + 'static {
    fn reduce(&mut self, aggregate: T, value: T) -> T;
}

/// A user closure as a [`Reducer`].
#[derive(Debug, Clone)]
pub(crate) struct FnReducer<F>(pub(crate) F);

impl<T, F: FnMut(T, T) -> T + Clone + Send + 'static> Reducer<T> for FnReducer<F> {
    #[inline]
    fn reduce(&mut self, aggregate: T, value: T) -> T {
        (self.0)(aggregate, value)
    }
}

/// Which built-in field aggregation to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldAggregation {
    Sum,
    Min,
    Max,
}

/// `sum`/`min`/`max` over a field reached through a lens closure.
#[derive(Debug, Clone)]
pub(crate) struct FieldReducer<L> {
    pub(crate) lens: L,
    pub(crate) kind: FieldAggregation,
}

impl<T, N, L> Reducer<T> for FieldReducer<L>
where
    N: Copy + PartialOrd + std::ops::Add<Output = N>,
    L: Fn(&mut T) -> &mut N + Clone + Send + 'static,
{
    #[inline]
    fn reduce(&mut self, mut aggregate: T, mut value: T) -> T {
        let incoming = *(self.lens)(&mut value);
        let field = (self.lens)(&mut aggregate);
        match self.kind {
            FieldAggregation::Sum => *field = *field + incoming,
            FieldAggregation::Min => {
                if incoming < *field {
                    *field = incoming;
                }
            }
            FieldAggregation::Max => {
                if incoming > *field {
                    *field = incoming;
                }
            }
        }
        aggregate
    }
}

/// `min_by`/`max_by`: keeps the element whose field is smallest (largest); the earlier on ties.
#[derive(Debug, Clone)]
pub(crate) struct ByReducer<S> {
    pub(crate) selector: S,
    pub(crate) keep_max: bool,
}

impl<T, N, S> Reducer<T> for ByReducer<S>
where
    N: PartialOrd,
    S: Fn(&T) -> N + Clone + Send + 'static,
{
    #[inline]
    fn reduce(&mut self, aggregate: T, value: T) -> T {
        let current = (self.selector)(&aggregate);
        let incoming = (self.selector)(&value);
        let replace = if self.keep_max {
            incoming > current
        } else {
            incoming < current
        };
        if replace { value } else { aggregate }
    }
}

/// The name of the keyed state holding a rolling aggregate.
const AGGREGATE_STATE: &str = "rolling-aggregate";

/// The rolling keyed reduce operator. The aggregate per key lives in the job's keyed state
/// backend (memory or LMDB), so it is checkpointed and moves with its key group.
pub(crate) struct RollingReduce<K, T, KS, R> {
    key_selector: KS,
    reducer: R,
    store: Option<KeyedStateStore<K>>,
    _values: std::marker::PhantomData<fn() -> T>,
}

impl<K, T, KS: Clone, R: Clone> Clone for RollingReduce<K, T, KS, R> {
    fn clone(&self) -> Self {
        Self::new(self.key_selector.clone(), self.reducer.clone())
    }
}

impl<K, T, KS, R> RollingReduce<K, T, KS, R> {
    pub(crate) fn new(key_selector: KS, reducer: R) -> Self {
        Self {
            key_selector,
            reducer,
            store: None,
            _values: std::marker::PhantomData,
        }
    }
}

impl<K, T, KS, R> OneInputOperator<T> for RollingReduce<K, T, KS, R>
where
    K: Key,
    T: Data,
    KS: Fn(&T) -> K + Clone + Send + 'static,
    R: Reducer<T>,
{
    type Out = T;

    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        self.store = Some(ctx.keyed_store()?);
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        if let Some(store) = self.store.as_mut() {
            ctx.snapshot_keyed_store(store)?;
        }
        Ok(())
    }

    fn process(
        &mut self,
        record: Record<T>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, T>,
    ) {
        let key = (self.key_selector)(&record.value);
        let store = self.store.get_or_insert_with(KeyedStateStore::default);
        match store.value_table::<T>(AGGREGATE_STATE) {
            Ok(mut table) => {
                if let Some(updated) =
                    reduce_into(&mut table, &mut self.reducer, key, record.value, ctx)
                {
                    out.collect(updated);
                }
            }
            Err(error) => ctx.fail(error.to_string()),
        }
    }

    /// Resolves the aggregate table once per run.
    #[inline]
    fn process_run(&mut self, records: Vec<Record<T>>, run: &mut RunContext<'_, '_, T>) {
        let store = self.store.get_or_insert_with(KeyedStateStore::default);
        let mut table = match store.value_table::<T>(AGGREGATE_STATE) {
            Ok(table) => table,
            Err(error) => return run.context().fail(error.to_string()),
        };
        let (selector, reducer) = (&self.key_selector, &mut self.reducer);
        for record in records {
            run.process_with(record, |record, ctx, out| {
                let key = selector(&record.value);
                if let Some(updated) = reduce_into(&mut table, reducer, key, record.value, ctx) {
                    out.collect(updated);
                }
            });
        }
    }
}

/// Folds `value` into `key`'s aggregate in `table`; returns the updated aggregate (or fails the
/// task on a state error).
#[inline]
fn reduce_into<K: Key, T: Data, R: Reducer<T>>(
    table: &mut ValueTable<'_, K, T>,
    reducer: &mut R,
    key: K,
    value: T,
    ctx: &mut OperatorContext<'_>,
) -> Option<T> {
    match table.get_mut(&key) {
        Ok(Some(aggregate)) => {
            let updated = reducer.reduce(aggregate.clone(), value);
            aggregate.clone_from(&updated);
            Some(updated)
        }
        Ok(None) => match table.insert(key, value.clone()) {
            Ok(()) => Some(value),
            Err(error) => {
                ctx.fail(error.to_string());
                None
            }
        },
        Err(error) => {
            ctx.fail(error.to_string());
            None
        }
    }
}
