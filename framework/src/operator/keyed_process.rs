//! The keyed process operator: runs a [`KeyedProcessFunction`] with keyed state and timers
//! (Flink's `KeyedProcessOperator`).
//!
//! Timers are deduplicated per key and timestamp and fire in timestamp order (then key order):
//! event-time timers when the watermark reaches them (never at registration), processing-time
//! timers when processing time does. A timer's output carries the timer's timestamp.
//! Processing-time timers still pending at the end of a bounded input do not fire, as in Flink.

use crate::api::OutputTag;
use crate::api::functions::KeyedProcessFunction;
use crate::operator::window::TimeDomain;
use crate::operator::window::store_config;
use crate::operator::{
    Collector, FunctionError, OneInputOperator, OperatorContext, Record, RuntimeContext,
};
use crate::operator::{StateInitContext, StateSnapshotContext};
use crate::state::{KeyedStateAccess, KeyedStateStore, StateError};
use crate::time::{TimerService, Watermark};

/// What a keyed process function can do while it handles an element or a timer.
pub struct KeyedContext<'a, 'b, K> {
    key: &'a K,
    timestamp: Option<i64>,
    time_domain: Option<TimeDomain>,
    watermark: i64,
    state: &'a mut KeyedStateStore<K>,
    timers: &'a mut TimerService<K, ()>,
    operator: &'a mut OperatorContext<'b>,
}

impl<K> std::fmt::Debug for KeyedContext<'_, '_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedContext")
            .field("timestamp", &self.timestamp)
            .field("watermark", &self.watermark)
            .finish()
    }
}

impl<'a, 'b, K: Ord + std::hash::Hash + Clone + Send + 'static> KeyedContext<'a, 'b, K> {
    pub(crate) fn new(
        key: &'a K,
        timestamp: Option<i64>,
        time_domain: Option<TimeDomain>,
        watermark: i64,
        state: &'a mut KeyedStateStore<K>,
        timers: &'a mut TimerService<K, ()>,
        operator: &'a mut OperatorContext<'b>,
    ) -> Self {
        Self {
            key,
            timestamp,
            time_domain,
            watermark,
            state,
            timers,
            operator,
        }
    }

    /// The key of the element or timer being processed.
    pub fn current_key(&self) -> &K {
        self.key
    }

    /// The element's timestamp (in `on_timer`: the timer's timestamp).
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// In `on_timer`: whether an event-time or a processing-time timer fired.
    pub fn time_domain(&self) -> Option<TimeDomain> {
        self.time_domain
    }

    /// The operator's current watermark.
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    /// The current processing time.
    pub fn current_processing_time(&self) -> i64 {
        self.operator.current_processing_time()
    }

    /// Registers an event-time timer for the current key (once per timestamp); it fires when the
    /// watermark reaches `timestamp`.
    pub fn register_event_time_timer(&mut self, timestamp: i64) {
        let result = self
            .timers
            .register_event_time_timer(self.key.clone(), (), timestamp);
        self.check(result);
    }

    /// Deletes the current key's event-time timer at `timestamp`, if any.
    pub fn delete_event_time_timer(&mut self, timestamp: i64) {
        let result = self
            .timers
            .delete_event_time_timer(self.key.clone(), (), timestamp);
        self.check(result);
    }

    /// Registers a processing-time timer for the current key.
    pub fn register_processing_time_timer(&mut self, timestamp: i64) {
        let result = self
            .timers
            .register_processing_time_timer(self.key.clone(), (), timestamp);
        self.check(result);
        self.operator.request_processing_time(timestamp);
    }

    /// Deletes the current key's processing-time timer at `timestamp`, if any.
    pub fn delete_processing_time_timer(&mut self, timestamp: i64) {
        let result = self
            .timers
            .delete_processing_time_timer(self.key.clone(), (), timestamp);
        self.check(result);
    }

    /// A timer the backend could not keep fails the task (after the callback returns), naming
    /// the error: the function's calls stay infallible, as Flink's.
    fn check(&mut self, result: Result<bool, StateError>) {
        if let Err(error) = result {
            self.operator.fail(format!("timers: {error}"));
        }
    }

    /// Emits `value` to the side output `tag`.
    pub fn output<U: 'static>(&mut self, tag: &OutputTag<U>, value: U) {
        self.operator.output(tag, value);
    }

    /// Counts a record that arrived too late for the function's event-time logic (shown as
    /// `late_records` in the job result), as the built-in windows do.
    pub fn count_late_record(&mut self) {
        self.operator.count_late_record();
    }

    /// Fails the task with `message` (internal keyed operators, such as CEP's, that meet a
    /// limit or a state error inside a timer callback).
    pub(crate) fn fail_task(&mut self, message: String) {
        self.operator.fail(message);
    }
}

impl<K: Ord + std::hash::Hash + Clone + Send + 'static> KeyedStateAccess<K>
    for KeyedContext<'_, '_, K>
{
    fn current_key(&self) -> &K {
        self.key
    }
    fn state_store(&mut self) -> &mut KeyedStateStore<K> {
        self.state
    }
    fn key_and_store(&mut self) -> (std::borrow::Cow<'_, K>, &mut KeyedStateStore<K>) {
        (std::borrow::Cow::Borrowed(self.key), self.state)
    }
    fn state_error(&mut self, error: StateError) {
        self.operator.fail(error.to_string());
    }
    fn current_processing_time(&self) -> i64 {
        self.operator.current_processing_time()
    }
}

/// What keyed process operators share: keyed state, per-key timers and the watermark, and
/// building the [`KeyedContext`] for elements and firing timers.
pub(crate) struct KeyedRuntime<K> {
    state: KeyedStateStore<K>,
    timers: TimerService<K, ()>,
    watermark: i64,
    max_parallelism: u32,
}

/// The keyed state name under which a keyed process operator's timers are checkpointed.
const TIMER_STATE: &str = "_timers";

impl<K: crate::api::Key> KeyedRuntime<K> {
    /// Opens the state backend and restores state and timers (the key groups this instance
    /// owns).
    pub(crate) fn initialize(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        let mut keyed = ctx.take_keyed_snapshot();
        let timers = keyed.take_state(TIMER_STATE);
        let config = ctx.backend_config().clone();
        self.timers = TimerService::open(&store_config(&config, "timers", 1))?;
        self.timers.restore_keyed_snapshot(&timers, TIMER_STATE)?;
        let mut store = KeyedStateStore::open(config)?;
        if !keyed.is_empty() {
            store.restore(keyed)?;
        }
        self.state = store;
        self.max_parallelism = ctx.backend_config().max_parallelism;
        Ok(())
    }

    /// Snapshots keyed state and timers.
    pub(crate) fn snapshot(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        ctx.snapshot_keyed_store(&mut self.state)?;
        if ctx.is_persisted() && !self.timers.is_empty() {
            let timers = self
                .timers
                .snapshot_keyed(TIMER_STATE, self.max_parallelism)?;
            ctx.add_keyed(timers);
        }
        Ok(())
    }
}

impl<K: Ord + std::hash::Hash + Clone + Send + 'static> KeyedRuntime<K> {
    pub(crate) fn new() -> Self {
        Self {
            state: KeyedStateStore::default(),
            timers: TimerService::new(),
            watermark: i64::MIN,
            max_parallelism: crate::state::DEFAULT_MAX_PARALLELISM,
        }
    }

    /// The keyed state of every key (the broadcast side of a keyed broadcast operator applies
    /// functions to it, with no current key).
    pub(crate) fn state_store(&mut self) -> &mut KeyedStateStore<K> {
        &mut self.state
    }

    /// The context for an element of `key`.
    pub(crate) fn element_context<'a, 'b>(
        &'a mut self,
        key: &'a K,
        timestamp: Option<i64>,
        operator: &'a mut OperatorContext<'b>,
    ) -> KeyedContext<'a, 'b, K> {
        KeyedContext::new(
            key,
            timestamp,
            None,
            self.watermark,
            &mut self.state,
            &mut self.timers,
            operator,
        )
    }

    /// Advances the watermark and fires the due event-time timers in order (timers registered
    /// while firing fire in the same advance when due).
    pub(crate) fn on_watermark<O>(
        &mut self,
        watermark: Watermark,
        operator: &mut OperatorContext<'_>,
        out: &mut Collector<'_, O>,
        mut on_timer: impl FnMut(i64, &mut KeyedContext<'_, '_, K>, &mut Collector<'_, O>),
    ) {
        self.watermark = self.watermark.max(watermark.timestamp);
        loop {
            let timer = match self.timers.pop_event_time_timer(self.watermark) {
                Ok(Some(timer)) => timer,
                Ok(None) => break,
                Err(error) => {
                    operator.fail(format!("timers: {error}"));
                    return;
                }
            };
            self.fire(
                timer.key,
                timer.timestamp,
                TimeDomain::EventTime,
                operator,
                out,
                &mut on_timer,
            );
        }
    }

    /// Fires the due processing-time timers and asks to be called at the next one.
    pub(crate) fn on_processing_time<O>(
        &mut self,
        now_ms: i64,
        operator: &mut OperatorContext<'_>,
        out: &mut Collector<'_, O>,
        mut on_timer: impl FnMut(i64, &mut KeyedContext<'_, '_, K>, &mut Collector<'_, O>),
    ) {
        loop {
            let timer = match self.timers.pop_processing_time_timer(now_ms) {
                Ok(Some(timer)) => timer,
                Ok(None) => break,
                Err(error) => {
                    operator.fail(format!("timers: {error}"));
                    return;
                }
            };
            self.fire(
                timer.key,
                timer.timestamp,
                TimeDomain::ProcessingTime,
                operator,
                out,
                &mut on_timer,
            );
        }
        match self.timers.next_processing_time_timer() {
            Ok(Some(next)) => operator.request_processing_time(next),
            Ok(None) => {}
            Err(error) => operator.fail(format!("timers: {error}")),
        }
    }

    fn fire<O>(
        &mut self,
        key: K,
        timestamp: i64,
        domain: TimeDomain,
        operator: &mut OperatorContext<'_>,
        out: &mut Collector<'_, O>,
        on_timer: &mut impl FnMut(i64, &mut KeyedContext<'_, '_, K>, &mut Collector<'_, O>),
    ) {
        out.set_timestamp(Some(timestamp));
        let mut keyed = KeyedContext::new(
            &key,
            Some(timestamp),
            Some(domain),
            self.watermark,
            &mut self.state,
            &mut self.timers,
            operator,
        );
        on_timer(timestamp, &mut keyed, out);
    }
}

/// Runs a [`KeyedProcessFunction`].
pub(crate) struct KeyedProcessOperator<KS, F: KeyedProcessFunction> {
    key_selector: KS,
    function: F,
    runtime: KeyedRuntime<F::Key>,
}

impl<KS: Clone, F: KeyedProcessFunction> Clone for KeyedProcessOperator<KS, F> {
    fn clone(&self) -> Self {
        Self::new(self.key_selector.clone(), self.function.clone())
    }
}

impl<KS, F: KeyedProcessFunction> KeyedProcessOperator<KS, F> {
    pub(crate) fn new(key_selector: KS, function: F) -> Self {
        Self {
            key_selector,
            function,
            runtime: KeyedRuntime::new(),
        }
    }
}

impl<KS, F> OneInputOperator<F::In> for KeyedProcessOperator<KS, F>
where
    F: KeyedProcessFunction,
    F::In: Send + 'static,
    F::Out: Send + 'static,
    KS: Fn(&F::In) -> F::Key + Clone + Send + 'static,
{
    type Out = F::Out;

    fn state_schema(&self) -> crate::state::StateSchema {
        crate::api::Operator::state_schema(&self.function)
    }

    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        crate::api::operator::initialize_fields(&mut self.function, ctx)?;
        self.runtime.initialize(ctx)
    }

    fn snapshot_state(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        crate::api::operator::snapshot_fields(&self.function, ctx)?;
        self.runtime.snapshot(ctx)
    }

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.function.open(ctx)
    }

    fn process(
        &mut self,
        record: Record<F::In>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let key = (self.key_selector)(&record.value);
        let mut keyed = self.runtime.element_context(&key, record.timestamp, ctx);
        self.function.process_element(record.value, &mut keyed, out);
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

/// Runs a [`KeyedFlatMapFunction`](crate::api::KeyedFlatMapFunction) as a keyed process
/// function without timers; its identity and state are the wrapped function's.
#[derive(Debug, Clone)]
pub(crate) struct KeyedFlatMap<F>(pub(crate) F);

impl<F: crate::api::KeyedFlatMapFunction> crate::api::Operator for KeyedFlatMap<F> {
    fn default_uid() -> Option<&'static str> {
        F::default_uid()
    }
    fn state_schema(&self) -> crate::state::StateSchema {
        self.0.state_schema()
    }
    fn restore_state_fields(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        self.0.restore_state_fields(ctx)
    }
    fn snapshot_state_fields(&self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        self.0.snapshot_state_fields(ctx)
    }
}

impl<F: crate::api::KeyedFlatMapFunction> KeyedProcessFunction for KeyedFlatMap<F> {
    type Key = F::Key;
    type In = F::In;
    type Out = F::Out;

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.0.open(ctx)
    }

    fn process_element(
        &mut self,
        value: F::In,
        ctx: &mut KeyedContext<'_, '_, F::Key>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.0.flat_map(value, ctx, out);
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.0.close()
    }
}
