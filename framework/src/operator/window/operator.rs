//! The keyed window operator (Flink's `WindowOperator` with the default triggers).
//!
//! Per record: take its time (event timestamp, or processing time), assign its windows, drop the
//! windows that are already late, add the record to each remaining window's contents and run the
//! trigger. With a merging assigner (sessions) the new window first merges with the key's
//! in-flight windows through the [`MergingWindowSet`]: their contents merge into one state window
//! and their timers are replaced by the merged window's.
//!
//! ## Semantics (Flink's, exactly)
//!
//! - A [`Trigger`] decides when a window emits and when its contents are purged; the operator
//!   owns contents and cleanup. With the default event-time trigger a window fires when the
//!   watermark reaches `window.max_timestamp()`, and a record added to a window whose end the
//!   watermark already passed (accepted thanks to allowed lateness) fires it again at once.
//! - A window is late when `max_timestamp + allowed_lateness <= watermark`; its state is cleared
//!   by a cleanup timer at that time. A record none of whose windows accepted it, and which is
//!   late itself (`timestamp + allowed_lateness <= watermark`), is counted (`late_records`) and
//!   sent to the late side output when one is configured. A record that falls between sliding
//!   windows (slide > size) is not late: Flink drops it, and so do we, counting it as
//!   `dropped_records`. Nothing is dropped silently.
//! - Processing-time windows fire (and are cleared) when processing time reaches
//!   `max_timestamp`; at the end of a bounded input, pending processing-time windows fire too
//!   (Flink would lose them).
//! - Results carry the window's `max_timestamp` as their timestamp.
//!
//! ## Invariants
//!
//! - Contents exist for a (key, state window) only while the window is in flight (merging) or has
//!   a pending cleanup timer.
//! - Timers fire in (time, key, window) order: runs are deterministic.

use std::collections::BTreeMap;

use super::trigger::{Trigger, TriggerContext, TriggerResult};
use super::{MergingWindowSet, TimeWindow, WindowAssign, WindowAssigner};
use crate::api::OutputTag;
use crate::operator::FunctionError;
use crate::operator::{Collector, OneInputOperator, OperatorContext, Record, RuntimeContext};
use crate::state::{KeyedStateStore, StateError};
use crate::time::{TimerService, Watermark};

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
    /// What a window keeps.
    type Acc: Clone + Send + 'static;
    /// What a window emits.
    type Out: Send + 'static;
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Adds `value` to a window's contents (`None`: the window is new).
    fn add(&mut self, contents: Option<Self::Acc>, value: T, timestamp: Option<i64>) -> Self::Acc;
    /// Merges the contents of two session windows.
    fn merge(&mut self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
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
}

/// Which clock a timer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Domain {
    Event,
    Processing,
}

/// The window operator.
pub(crate) struct WindowOperator<K, T, KS, F: WindowFunctionCore<K, T>, Tr> {
    assigner: WindowAssigner,
    key_selector: KS,
    function: F,
    trigger: Tr,
    allowed_lateness_ms: i64,
    late_tag: Option<OutputTag<T>>,
    /// Contents per (key, state window).
    contents: BTreeMap<(K, TimeWindow), F::Acc>,
    /// In-flight windows per key (merging assigners only).
    merging: BTreeMap<K, MergingWindowSet>,
    /// Trigger and cleanup timers.
    timers: TimerService<K, TimeWindow>,
    /// Trigger state per (key, window).
    trigger_state: KeyedStateStore<(K, TimeWindow)>,
    /// A processing time a trigger asked for, to pass on to the runtime.
    wakeup_ms: Option<i64>,
    state_error: Option<StateError>,
    watermark: i64,
    now_ms: i64,
    assigned: Vec<TimeWindow>,
}

impl<K, T, KS, F, Tr> Clone for WindowOperator<K, T, KS, F, Tr>
where
    K: Ord + Clone + Send + 'static,
    KS: Clone,
    F: WindowFunctionCore<K, T>,
    Tr: Trigger<T>,
{
    fn clone(&self) -> Self {
        Self::new(
            self.assigner,
            self.key_selector.clone(),
            self.function.clone(),
            self.trigger.clone(),
            self.allowed_lateness_ms,
            self.late_tag.clone(),
        )
    }
}

impl<K, T, KS, F, Tr> WindowOperator<K, T, KS, F, Tr>
where
    K: Ord + Clone + Send + 'static,
    F: WindowFunctionCore<K, T>,
    Tr: Trigger<T>,
{
    pub(crate) fn new(
        assigner: WindowAssigner,
        key_selector: KS,
        function: F,
        trigger: Tr,
        allowed_lateness_ms: i64,
        late_tag: Option<OutputTag<T>>,
    ) -> Self {
        Self {
            assigner,
            key_selector,
            function,
            trigger,
            // Lateness only applies to event time (Flink ignores it for processing time).
            allowed_lateness_ms: if assigner.is_event_time() {
                allowed_lateness_ms.max(0)
            } else {
                0
            },
            late_tag,
            contents: BTreeMap::new(),
            merging: BTreeMap::new(),
            timers: TimerService::new(),
            trigger_state: KeyedStateStore::default(),
            wakeup_ms: None,
            state_error: None,
            watermark: i64::MIN,
            now_ms: 0,
            assigned: Vec::new(),
        }
    }

    /// When a window's state is removed: `max_timestamp + allowed_lateness` (never for global
    /// windows).
    fn cleanup_time(&self, window: &TimeWindow) -> i64 {
        if self.assigner.is_global() {
            i64::MAX
        } else {
            window
                .max_timestamp()
                .saturating_add(self.allowed_lateness_ms)
        }
    }

    fn is_window_late(&self, window: &TimeWindow) -> bool {
        self.assigner.is_event_time() && self.cleanup_time(window) <= self.watermark
    }

    fn register_cleanup_timer(&mut self, key: &K, window: TimeWindow) {
        let cleanup = self.cleanup_time(&window);
        if cleanup == i64::MAX {
            return;
        }
        if self.assigner.is_event_time() {
            self.timers
                .register_event_time_timer(key.clone(), window, cleanup);
        } else {
            self.timers
                .register_processing_time_timer(key.clone(), window, cleanup);
            self.wakeup_ms = Some(self.wakeup_ms.map_or(cleanup, |t| t.min(cleanup)));
        }
    }

    /// Runs `f` with the trigger and its context for (key, window).
    fn with_trigger<R>(
        &mut self,
        key: &K,
        window: TimeWindow,
        f: impl FnOnce(&mut Tr, &mut TriggerContext<'_, K>) -> R,
    ) -> R {
        let mut ctx = TriggerContext {
            key,
            window,
            scope: (key.clone(), window),
            watermark: self.watermark,
            processing_time: self.now_ms,
            timers: &mut self.timers,
            state: &mut self.trigger_state,
            wakeup_ms: &mut self.wakeup_ms,
            error: &mut self.state_error,
        };
        f(&mut self.trigger, &mut ctx)
    }

    fn emit(
        &mut self,
        key: &K,
        window: TimeWindow,
        state_window: TimeWindow,
        out: &mut Collector<'_, F::Out>,
    ) {
        let Some(contents) = self.contents.get_mut(&(key.clone(), state_window)) else {
            return;
        };
        let window_ctx = WindowContext {
            window,
            current_watermark: self.watermark,
            current_processing_time: self.now_ms,
        };
        out.set_timestamp(Some(window.max_timestamp()));
        self.function.emit(key, &window_ctx, contents, out);
    }

    /// Acts on a trigger's decision for `window`.
    fn apply(
        &mut self,
        result: TriggerResult,
        key: &K,
        window: TimeWindow,
        state_window: TimeWindow,
        out: &mut Collector<'_, F::Out>,
    ) {
        if result.is_fire() {
            self.emit(key, window, state_window, out);
        }
        if result.is_purge() {
            self.contents.remove(&(key.clone(), state_window));
        }
    }

    /// A timer of `window` fired at `time`.
    fn on_timer(
        &mut self,
        key: K,
        window: TimeWindow,
        time: i64,
        domain: Domain,
        out: &mut Collector<'_, F::Out>,
    ) {
        let state_window = if self.assigner.is_merging() {
            match self
                .merging
                .get(&key)
                .and_then(|set| set.state_window(&window))
            {
                Some(state_window) => state_window,
                // The window was merged into another one: its timer is stale.
                None => return,
            }
        } else {
            window
        };
        let result = self.with_trigger(&key, window, |trigger, ctx| match domain {
            Domain::Event => trigger.on_event_time(time, &window, ctx),
            Domain::Processing => trigger.on_processing_time(time, &window, ctx),
        });
        self.apply(result, &key, window, state_window, out);
        let cleanup_domain = if self.assigner.is_event_time() {
            Domain::Event
        } else {
            Domain::Processing
        };
        if domain == cleanup_domain && time == self.cleanup_time(&window) {
            self.clear_all_state(&key, window, state_window);
        }
    }

    fn clear_all_state(&mut self, key: &K, window: TimeWindow, state_window: TimeWindow) {
        self.contents.remove(&(key.clone(), state_window));
        self.with_trigger(key, window, |trigger, ctx| trigger.clear(&window, ctx));
        if let Some(set) = self.merging.get_mut(key) {
            // The window is known to the set (its state window was found by the caller).
            let _ = set.retire_window(&window);
            if set.is_empty() {
                self.merging.remove(key);
            }
        }
    }

    /// Adds `window` to the key's merging set, merging contents, trigger state and timers of the
    /// windows it merges with; returns the resulting window and its state window.
    fn merge_window(&mut self, key: &K, window: TimeWindow) -> (TimeWindow, TimeWindow) {
        let mut set = self.merging.remove(key).unwrap_or_default();
        let mut merges: Vec<(TimeWindow, Vec<TimeWindow>, TimeWindow, Vec<TimeWindow>)> =
            Vec::new();
        let merged = set.add_window(window, |merge| {
            merges.push((
                merge.merge_result,
                merge.merged_windows.to_vec(),
                merge.state_window_result,
                merge.merged_state_windows.to_vec(),
            ));
            Ok::<(), std::convert::Infallible>(())
        });
        let Ok(merged) = merged;
        for (result, merged_windows, state_result, merged_states) in merges {
            // Flink's order: the trigger learns the merge, the merged windows' trigger state and
            // cleanup timers go, then their contents merge into the state window.
            self.with_trigger(key, result, |trigger, ctx| trigger.on_merge(&result, ctx));
            for old in merged_windows {
                self.with_trigger(key, old, |trigger, ctx| trigger.clear(&old, ctx));
                let cleanup = self.cleanup_time(&old);
                if self.assigner.is_event_time() {
                    self.timers
                        .delete_event_time_timer(key.clone(), old, cleanup);
                } else {
                    self.timers
                        .delete_processing_time_timer(key.clone(), old, cleanup);
                }
            }
            for merged_state in merged_states {
                if let Some(moved) = self.contents.remove(&(key.clone(), merged_state)) {
                    let target = (key.clone(), state_result);
                    let combined = match self.contents.remove(&target) {
                        Some(existing) => self.function.merge(existing, moved),
                        None => moved,
                    };
                    self.contents.insert(target, combined);
                }
            }
        }
        let state_window = set.state_window(&merged).unwrap_or(merged);
        self.merging.insert(key.clone(), set);
        (merged, state_window)
    }

    fn report(&mut self, ctx: &mut OperatorContext<'_>) {
        if let Some(at) = self.wakeup_ms.take() {
            ctx.request_processing_time(at);
        }
        if let Some(error) = self.state_error.take() {
            ctx.fail(error.to_string());
        }
    }
}

impl<K, T, KS, F, Tr> OneInputOperator<T> for WindowOperator<K, T, KS, F, Tr>
where
    K: Ord + Clone + Send + 'static,
    T: Clone + Send + 'static,
    KS: Fn(&T) -> K + Clone + Send + 'static,
    F: WindowFunctionCore<K, T>,
    Tr: Trigger<T>,
{
    type Out = F::Out;

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.function.open(ctx)
    }

    fn process(
        &mut self,
        record: Record<T>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.now_ms = ctx.current_processing_time();
        let time = match self.assigner.assignment_time(record.timestamp, self.now_ms) {
            Ok(time) => time,
            Err(error) => {
                ctx.fail(format!("{error}: assign timestamps before windowing"));
                return;
            }
        };
        let mut windows = std::mem::take(&mut self.assigned);
        windows.clear();
        if let Err(error) = self.assigner.assign(time, &mut windows) {
            ctx.fail(error.to_string());
            self.assigned = windows;
            return;
        }
        let key = (self.key_selector)(&record.value);
        let mut accepted = false;
        for window in windows.iter().copied() {
            let (window, state_window) = if self.assigner.is_merging() {
                let (merged, state_window) = self.merge_window(&key, window);
                if self.is_window_late(&merged) {
                    if let Some(set) = self.merging.get_mut(&key) {
                        let _ = set.retire_window(&merged);
                        if set.is_empty() {
                            self.merging.remove(&key);
                        }
                    }
                    continue;
                }
                (merged, state_window)
            } else {
                if self.is_window_late(&window) {
                    continue;
                }
                (window, window)
            };
            accepted = true;
            let slot = (key.clone(), state_window);
            let existing = self.contents.remove(&slot);
            let updated = self
                .function
                .add(existing, record.value.clone(), record.timestamp);
            self.contents.insert(slot, updated);
            let result = self.with_trigger(&key, window, |trigger, tctx| {
                trigger.on_element(&record.value, record.timestamp, &window, tctx)
            });
            self.apply(result, &key, window, state_window, out);
            self.register_cleanup_timer(&key, window);
        }
        self.assigned = windows;
        if !accepted {
            // Flink side-outputs a skipped record only if it is late itself; a record that falls
            // between sliding windows (slide > size) is not late, and Flink drops it. We drop it
            // too, but count it.
            let late = self.assigner.is_event_time()
                && time.saturating_add(self.allowed_lateness_ms) <= self.watermark;
            if late {
                ctx.count_late_record();
                if let Some(tag) = &self.late_tag {
                    ctx.output(tag, record.value);
                }
            } else {
                ctx.count_dropped_record();
            }
        }
        self.report(ctx);
    }

    fn on_watermark(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.now_ms = ctx.current_processing_time();
        self.watermark = self.watermark.max(watermark.timestamp);
        while let Some(timer) = self.timers.pop_event_time_timer(self.watermark) {
            self.on_timer(
                timer.key,
                timer.namespace,
                timer.timestamp,
                Domain::Event,
                out,
            );
        }
        self.report(ctx);
    }

    fn on_processing_time(
        &mut self,
        now_ms: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.now_ms = now_ms;
        while let Some(timer) = self.timers.pop_processing_time_timer(now_ms) {
            self.on_timer(
                timer.key,
                timer.namespace,
                timer.timestamp,
                Domain::Processing,
                out,
            );
        }
        if let Some(next) = self.timers.next_processing_time_timer() {
            ctx.request_processing_time(next);
        }
        self.report(ctx);
    }

    fn on_end_of_input(&mut self, ctx: &mut OperatorContext<'_>, out: &mut Collector<'_, F::Out>) {
        // Event-time windows already fired on the final watermark. Processing-time timers would
        // be lost at the end of a bounded input: fire the ones pending now (not the ones their
        // triggers register while firing, or a continuous trigger would never end).
        let pending: Vec<_> =
            std::iter::from_fn(|| self.timers.pop_processing_time_timer(i64::MAX)).collect();
        for timer in pending {
            self.on_timer(
                timer.key,
                timer.namespace,
                timer.timestamp,
                Domain::Processing,
                out,
            );
        }
        self.report(ctx);
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.function.close()
    }
}
