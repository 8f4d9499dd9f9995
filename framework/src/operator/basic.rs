//! Stateless one-input operators: map, flat map, filter, process; and the closure adapters that
//! let plain closures stand in for the function traits.

use super::chain::{Collector, OneInputOperator, OperatorContext, RunContext};
use super::checkpointing::{StateInitContext, StateSnapshotContext};
use super::context::{FunctionError, RuntimeContext};
use crate::api::functions::{FilterFunction, FlatMapFunction, MapFunction, ProcessFunction};
use crate::checkpoint::CheckpointId;
use crate::exchange::Record;

/// `map`: one output per input.
#[derive(Debug, Clone)]
pub(crate) struct MapOperator<F>(pub(crate) F);

impl<I: 'static, F: MapFunction<I>> OneInputOperator<I> for MapOperator<F>
where
    F::Out: Send + 'static,
{
    type Out = F::Out;

    fn state_schema(&self) -> crate::state::StateSchema {
        crate::api::Operator::state_schema(&self.0)
    }

    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        crate::api::operator::initialize_fields(&mut self.0, ctx)?;
        self.0.initialize_state(ctx)
    }

    fn snapshot_state(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        crate::api::operator::snapshot_fields(&self.0, ctx)?;
        self.0.snapshot_state(ctx)
    }

    fn notify_checkpoint_complete(&mut self, id: CheckpointId) -> Result<(), FunctionError> {
        self.0.notify_checkpoint_complete(id)
    }

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.0.open(ctx)
    }

    #[inline]
    fn process(
        &mut self,
        record: Record<I>,
        _ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let value = self.0.map(record.value);
        out.collect(value);
    }

    /// The run in one pass: each record's value mapped, its timestamp kept (what
    /// [`MapOperator::process`] does per record). When input and output records have the same
    /// size and alignment, std's in-place `collect` writes the outputs over the inputs.
    #[inline]
    fn process_run(&mut self, records: Vec<Record<I>>, run: &mut RunContext<'_, '_, F::Out>) {
        let mapped = records
            .into_iter()
            .map(|record| Record {
                value: self.0.map(record.value),
                timestamp: record.timestamp,
            })
            .collect();
        run.emit_run(mapped);
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.0.close()
    }
}

/// `flat_map`: any number of outputs per input.
#[derive(Debug, Clone)]
pub(crate) struct FlatMapOperator<F>(pub(crate) F);

impl<I: 'static, F: FlatMapFunction<I>> OneInputOperator<I> for FlatMapOperator<F>
where
    F::Out: Send + 'static,
{
    type Out = F::Out;

    fn state_schema(&self) -> crate::state::StateSchema {
        crate::api::Operator::state_schema(&self.0)
    }

    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        crate::api::operator::initialize_fields(&mut self.0, ctx)?;
        self.0.initialize_state(ctx)
    }

    fn snapshot_state(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        crate::api::operator::snapshot_fields(&self.0, ctx)?;
        self.0.snapshot_state(ctx)
    }

    fn notify_checkpoint_complete(&mut self, id: CheckpointId) -> Result<(), FunctionError> {
        self.0.notify_checkpoint_complete(id)
    }

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.0.open(ctx)
    }

    #[inline]
    fn process(
        &mut self,
        record: Record<I>,
        _ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.0.flat_map(record.value, out);
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.0.close()
    }
}

/// `filter`: keeps the inputs the predicate accepts.
#[derive(Debug, Clone)]
pub(crate) struct FilterOperator<F>(pub(crate) F);

impl<I: Send + 'static, F: FilterFunction<I>> OneInputOperator<I> for FilterOperator<F> {
    type Out = I;

    fn state_schema(&self) -> crate::state::StateSchema {
        crate::api::Operator::state_schema(&self.0)
    }

    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        crate::api::operator::initialize_fields(&mut self.0, ctx)
    }

    fn snapshot_state(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        crate::api::operator::snapshot_fields(&self.0, ctx)
    }

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.0.open(ctx)
    }

    #[inline]
    fn process(
        &mut self,
        record: Record<I>,
        _ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, I>,
    ) {
        if self.0.filter(&record.value) {
            out.collect(record.value);
        }
    }

    /// The run in one pass: the kept records, in order, in the run's own buffer (an in-place
    /// `collect`).
    #[inline]
    fn process_run(&mut self, records: Vec<Record<I>>, run: &mut RunContext<'_, '_, I>) {
        let kept = records
            .into_iter()
            .filter(|record| self.0.filter(&record.value))
            .collect();
        run.emit_run(kept);
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.0.close()
    }
}

/// `process`: a [`ProcessFunction`] with side outputs.
#[derive(Debug, Clone)]
pub(crate) struct ProcessOperator<F>(pub(crate) F);

impl<I: 'static, F: ProcessFunction<I>> OneInputOperator<I> for ProcessOperator<F>
where
    F::Out: Send + 'static,
{
    type Out = F::Out;

    fn state_schema(&self) -> crate::state::StateSchema {
        crate::api::Operator::state_schema(&self.0)
    }

    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        crate::api::operator::initialize_fields(&mut self.0, ctx)?;
        self.0.initialize_state(ctx)
    }

    fn snapshot_state(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        crate::api::operator::snapshot_fields(&self.0, ctx)?;
        self.0.snapshot_state(ctx)
    }

    fn notify_checkpoint_complete(&mut self, id: CheckpointId) -> Result<(), FunctionError> {
        self.0.notify_checkpoint_complete(id)
    }

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.0.open(ctx)
    }

    fn process(
        &mut self,
        record: Record<I>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.0.process_element(record.value, ctx, out);
    }

    fn on_end_of_input(&mut self, ctx: &mut OperatorContext<'_>, out: &mut Collector<'_, F::Out>) {
        self.0.on_end_of_input(ctx, out);
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.0.close()
    }
}

/// A closure as a [`MapFunction`].
#[derive(Debug, Clone)]
pub(crate) struct FnMap<F>(pub(crate) F);

impl<I, O, F: FnMut(I) -> O + Clone + Send + 'static> MapFunction<I> for FnMap<F> {
    type Out = O;
    #[inline]
    fn map(&mut self, value: I) -> O {
        (self.0)(value)
    }
}

/// A closure returning an iterator as a [`FlatMapFunction`].
#[derive(Debug, Clone)]
pub(crate) struct FnFlatMap<F>(pub(crate) F);

impl<I, It, F> FlatMapFunction<I> for FnFlatMap<F>
where
    It: IntoIterator,
    F: FnMut(I) -> It + Clone + Send + 'static,
{
    type Out = It::Item;
    #[inline]
    fn flat_map(&mut self, value: I, out: &mut Collector<'_, It::Item>) {
        for item in (self.0)(value) {
            out.collect(item);
        }
    }
}

/// A predicate closure as a [`FilterFunction`].
#[derive(Debug, Clone)]
pub(crate) struct FnFilter<F>(pub(crate) F);

impl<I, F: FnMut(&I) -> bool + Clone + Send + 'static> FilterFunction<I> for FnFilter<F> {
    #[inline]
    fn filter(&mut self, value: &I) -> bool {
        (self.0)(value)
    }
}

crate::api::operator::impl_plain_operator!(FnMap<F>; F);
crate::api::operator::impl_plain_operator!(FnFlatMap<F>; F);
crate::api::operator::impl_plain_operator!(FnFilter<F>; F);
