//! Co-process operators: two inputs with side outputs, and, keyed, with state and timers shared
//! by both inputs of a key (Flink's `CoProcessOperator` and `KeyedCoProcessOperator`).

use super::co::TwoInputOperator;
use super::keyed_process::KeyedRuntime;
use super::{Collector, FunctionError, OperatorContext, Record, RuntimeContext};
use crate::api::functions::{CoProcessFunction, KeyedCoProcessFunction};
use crate::time::Watermark;

/// Runs a [`CoProcessFunction`].
#[derive(Debug, Clone)]
pub(crate) struct CoProcessOperator<F>(pub(crate) F);

impl<A, B, F> TwoInputOperator<A, B> for CoProcessOperator<F>
where
    F: CoProcessFunction<A, B>,
    F::Out: Send + 'static,
{
    type Out = F::Out;
    fn state_schema(&self) -> crate::state::StateSchema {
        crate::api::Operator::state_schema(&self.0)
    }

    fn initialize_state(
        &mut self,
        ctx: &mut crate::operator::StateInitContext,
    ) -> Result<(), FunctionError> {
        crate::api::operator::initialize_fields(&mut self.0, ctx)
    }
    fn snapshot_state(
        &mut self,
        ctx: &mut crate::operator::StateSnapshotContext,
    ) -> Result<(), FunctionError> {
        crate::api::operator::snapshot_fields(&self.0, ctx)
    }
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.0.open(ctx)
    }
    fn process1(
        &mut self,
        record: Record<A>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.0.process_element1(record.value, ctx, out);
    }
    fn process2(
        &mut self,
        record: Record<B>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.0.process_element2(record.value, ctx, out);
    }
    fn close(&mut self) -> Result<(), FunctionError> {
        self.0.close()
    }
}

/// Runs a [`KeyedCoProcessFunction`].
pub(crate) struct KeyedCoProcessOperator<KS1, KS2, F: KeyedCoProcessFunction> {
    key_selector1: KS1,
    key_selector2: KS2,
    function: F,
    runtime: KeyedRuntime<F::Key>,
}

impl<KS1: Clone, KS2: Clone, F: KeyedCoProcessFunction> Clone
    for KeyedCoProcessOperator<KS1, KS2, F>
{
    fn clone(&self) -> Self {
        Self::new(
            self.key_selector1.clone(),
            self.key_selector2.clone(),
            self.function.clone(),
        )
    }
}

impl<KS1, KS2, F: KeyedCoProcessFunction> KeyedCoProcessOperator<KS1, KS2, F> {
    pub(crate) fn new(key_selector1: KS1, key_selector2: KS2, function: F) -> Self {
        Self {
            key_selector1,
            key_selector2,
            function,
            runtime: KeyedRuntime::new(),
        }
    }
}

impl<KS1, KS2, F> TwoInputOperator<F::In1, F::In2> for KeyedCoProcessOperator<KS1, KS2, F>
where
    F: KeyedCoProcessFunction,
    F::In1: Send + 'static,
    F::In2: Send + 'static,
    F::Out: Send + 'static,
    KS1: Fn(&F::In1) -> F::Key + Clone + Send + 'static,
    KS2: Fn(&F::In2) -> F::Key + Clone + Send + 'static,
{
    type Out = F::Out;

    fn state_schema(&self) -> crate::state::StateSchema {
        crate::api::Operator::state_schema(&self.function)
    }

    fn initialize_state(
        &mut self,
        ctx: &mut crate::operator::StateInitContext,
    ) -> Result<(), FunctionError> {
        crate::api::operator::initialize_fields(&mut self.function, ctx)?;
        self.runtime.initialize(ctx)
    }

    fn snapshot_state(
        &mut self,
        ctx: &mut crate::operator::StateSnapshotContext,
    ) -> Result<(), FunctionError> {
        crate::api::operator::snapshot_fields(&self.function, ctx)?;
        self.runtime.snapshot(ctx)
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
        let key = (self.key_selector1)(&record.value);
        let mut keyed = self.runtime.element_context(&key, record.timestamp, ctx);
        self.function
            .process_element1(record.value, &mut keyed, out);
    }

    fn process2(
        &mut self,
        record: Record<F::In2>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let key = (self.key_selector2)(&record.value);
        let mut keyed = self.runtime.element_context(&key, record.timestamp, ctx);
        self.function
            .process_element2(record.value, &mut keyed, out);
    }

    fn on_watermark(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let function = &mut self.function;
        self.runtime
            .on_watermark(watermark, ctx, out, |ts, keyed, out| {
                function.on_timer(ts, keyed, out)
            });
    }

    fn on_processing_time(
        &mut self,
        now_ms: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let function = &mut self.function;
        self.runtime
            .on_processing_time(now_ms, ctx, out, |ts, keyed, out| {
                function.on_timer(ts, keyed, out)
            });
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.function.close()
    }
}
