//! Co-process operators: two inputs with side outputs, and, keyed, with state and timers shared
//! by both inputs of a key (Flink's `CoProcessOperator` and `KeyedCoProcessOperator`).

use super::co::TwoInputOperator;
use super::keyed_process::KeyedContext;
use super::window::TimeDomain;
use super::{Collector, FunctionError, OperatorContext, Record, RuntimeContext};
use crate::api::functions::{CoProcessFunction, KeyedCoProcessFunction};
use crate::state::KeyedStateStore;
use crate::time::{TimerService, Watermark};

/// Runs a [`CoProcessFunction`].
#[derive(Debug, Clone)]
pub(crate) struct CoProcessOperator<F>(pub(crate) F);

impl<A, B, F> TwoInputOperator<A, B> for CoProcessOperator<F>
where
    F: CoProcessFunction<A, B>,
    F::Out: Send + 'static,
{
    type Out = F::Out;
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
    state: KeyedStateStore<F::Key>,
    timers: TimerService<F::Key, ()>,
    watermark: i64,
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
            state: KeyedStateStore::default(),
            timers: TimerService::new(),
            watermark: i64::MIN,
        }
    }

    fn fire(
        &mut self,
        key: F::Key,
        timestamp: i64,
        domain: TimeDomain,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        out.set_timestamp(Some(timestamp));
        let mut keyed = KeyedContext::new(
            &key,
            Some(timestamp),
            Some(domain),
            self.watermark,
            &mut self.state,
            &mut self.timers,
            ctx,
        );
        self.function.on_timer(timestamp, &mut keyed, out);
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
        let mut keyed = KeyedContext::new(
            &key,
            record.timestamp,
            None,
            self.watermark,
            &mut self.state,
            &mut self.timers,
            ctx,
        );
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
        let mut keyed = KeyedContext::new(
            &key,
            record.timestamp,
            None,
            self.watermark,
            &mut self.state,
            &mut self.timers,
            ctx,
        );
        self.function
            .process_element2(record.value, &mut keyed, out);
    }

    fn on_watermark(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.watermark = self.watermark.max(watermark.timestamp);
        while let Some(timer) = self.timers.pop_event_time_timer(self.watermark) {
            self.fire(timer.key, timer.timestamp, TimeDomain::EventTime, ctx, out);
        }
    }

    fn on_processing_time(
        &mut self,
        now_ms: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        while let Some(timer) = self.timers.pop_processing_time_timer(now_ms) {
            self.fire(
                timer.key,
                timer.timestamp,
                TimeDomain::ProcessingTime,
                ctx,
                out,
            );
        }
        if let Some(next) = self.timers.next_processing_time_timer() {
            ctx.request_processing_time(next);
        }
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.function.close()
    }
}
