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
//! - Event-time trigger: a window fires when the watermark reaches `window.max_timestamp()`; a
//!   record added to a window whose end the watermark already passed (accepted thanks to
//!   allowed lateness) fires it again at once, with all its contents.
//! - A window is late when `max_timestamp + allowed_lateness <= watermark`; its state is cleared
//!   by a cleanup timer at that time. A record none of whose windows accepted it is late: it is
//!   counted (`late_records` in the job result) and sent to the late side output when one is
//!   configured. Nothing is dropped silently.
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

use super::{MergingWindowSet, TimeWindow, WindowAssign, WindowAssigner};
use crate::api::OutputTag;
use crate::operator::FunctionError;
use crate::operator::{Collector, OneInputOperator, OperatorContext, Record, RuntimeContext};
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
/// or as all elements (process).
pub(crate) trait WindowFunctionCore<K, T>: Clone + Send + 'static {
    /// What a window keeps.
    type Acc: Clone + Send + 'static;
    /// What a window emits.
    type Out: Send + 'static;
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Adds `value` to a window's contents (`None`: the window is new).
    fn add(&mut self, contents: Option<Self::Acc>, value: T) -> Self::Acc;
    /// Merges the contents of two session windows.
    fn merge(&mut self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
    /// Emits a window's result.
    fn emit(
        &mut self,
        key: &K,
        ctx: &WindowContext,
        contents: &Self::Acc,
        out: &mut Collector<'_, Self::Out>,
    );
    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// The window operator.
pub(crate) struct WindowOperator<K, T, KS, F: WindowFunctionCore<K, T>> {
    assigner: WindowAssigner,
    key_selector: KS,
    function: F,
    allowed_lateness_ms: i64,
    late_tag: Option<OutputTag<T>>,
    /// Contents per (key, state window).
    contents: BTreeMap<(K, TimeWindow), F::Acc>,
    /// In-flight windows per key (merging assigners only).
    merging: BTreeMap<K, MergingWindowSet>,
    timers: TimerService<K, TimeWindow>,
    watermark: i64,
    assigned: Vec<TimeWindow>,
}

impl<K: Clone, T, KS: Clone, F: WindowFunctionCore<K, T>> Clone for WindowOperator<K, T, KS, F>
where
    K: Ord,
{
    fn clone(&self) -> Self {
        Self::new(
            self.assigner,
            self.key_selector.clone(),
            self.function.clone(),
            self.allowed_lateness_ms,
            self.late_tag.clone(),
        )
    }
}

impl<K: Ord + Clone, T, KS, F: WindowFunctionCore<K, T>> WindowOperator<K, T, KS, F> {
    pub(crate) fn new(
        assigner: WindowAssigner,
        key_selector: KS,
        function: F,
        allowed_lateness_ms: i64,
        late_tag: Option<OutputTag<T>>,
    ) -> Self {
        Self {
            assigner,
            key_selector,
            function,
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
            watermark: i64::MIN,
            assigned: Vec::new(),
        }
    }

    fn cleanup_time(&self, window: &TimeWindow) -> i64 {
        window
            .max_timestamp()
            .saturating_add(self.allowed_lateness_ms)
    }

    fn is_window_late(&self, window: &TimeWindow) -> bool {
        self.assigner.is_event_time() && self.cleanup_time(window) <= self.watermark
    }

    fn emit(
        &mut self,
        key: &K,
        window: TimeWindow,
        state_window: TimeWindow,
        ctx: &OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let Some(contents) = self.contents.get(&(key.clone(), state_window)) else {
            return;
        };
        let window_ctx = WindowContext {
            window,
            current_watermark: self.watermark,
            current_processing_time: ctx.current_processing_time(),
        };
        out.set_timestamp(Some(window.max_timestamp()));
        self.function.emit(key, &window_ctx, contents, out);
    }

    /// The trigger's `onElement` plus the cleanup timer, for a window that just got a record.
    fn on_element(
        &mut self,
        key: &K,
        window: TimeWindow,
        state_window: TimeWindow,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        if self.assigner.is_event_time() {
            if window.max_timestamp() <= self.watermark {
                self.emit(key, window, state_window, ctx, out);
            } else {
                self.timers
                    .register_event_time_timer(key.clone(), window, window.max_timestamp());
            }
            let cleanup = self.cleanup_time(&window);
            self.timers
                .register_event_time_timer(key.clone(), window, cleanup);
        } else {
            self.timers
                .register_processing_time_timer(key.clone(), window, window.max_timestamp());
            ctx.request_processing_time(window.max_timestamp());
        }
    }

    /// A timer of `window` fired at `time`.
    fn on_timer(
        &mut self,
        key: K,
        window: TimeWindow,
        time: i64,
        ctx: &OperatorContext<'_>,
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
        let event_time = self.assigner.is_event_time();
        if time == window.max_timestamp() {
            self.emit(&key, window, state_window, ctx, out);
        }
        let cleanup = if event_time {
            time == self.cleanup_time(&window)
        } else {
            true
        };
        if cleanup {
            self.contents.remove(&(key.clone(), state_window));
            if let Some(set) = self.merging.get_mut(&key) {
                // The window is known to the set (its state window was found above).
                let _ = set.retire_window(&window);
                if set.is_empty() {
                    self.merging.remove(&key);
                }
            }
        }
    }
}

impl<K, T, KS, F> OneInputOperator<T> for WindowOperator<K, T, KS, F>
where
    K: Ord + Clone + Send + 'static,
    T: Clone + Send + 'static,
    KS: Fn(&T) -> K + Clone + Send + 'static,
    F: WindowFunctionCore<K, T>,
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
        let time = match self
            .assigner
            .assignment_time(record.timestamp, ctx.current_processing_time())
        {
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
                let Self {
                    merging,
                    contents,
                    function,
                    timers,
                    assigner,
                    allowed_lateness_ms,
                    watermark,
                    ..
                } = self;
                let set = merging.entry(key.clone()).or_default();
                let merged = set.add_window(window, |merge| {
                    for merged_state in merge.merged_state_windows {
                        if let Some(moved) = contents.remove(&(key.clone(), *merged_state)) {
                            let target = (key.clone(), merge.state_window_result);
                            let combined = match contents.remove(&target) {
                                Some(existing) => function.merge(existing, moved),
                                None => moved,
                            };
                            contents.insert(target, combined);
                        }
                    }
                    for old in merge.merged_windows {
                        if assigner.is_event_time() {
                            timers.delete_event_time_timer(key.clone(), *old, old.max_timestamp());
                            let cleanup = old.max_timestamp().saturating_add(*allowed_lateness_ms);
                            timers.delete_event_time_timer(key.clone(), *old, cleanup);
                        } else {
                            timers.delete_processing_time_timer(
                                key.clone(),
                                *old,
                                old.max_timestamp(),
                            );
                        }
                    }
                    // The trigger's onMerge: the merged window fires at its own end.
                    let result = merge.merge_result;
                    if assigner.is_event_time() && result.max_timestamp() > *watermark {
                        timers.register_event_time_timer(
                            key.clone(),
                            result,
                            result.max_timestamp(),
                        );
                    }
                    Ok::<(), std::convert::Infallible>(())
                });
                let Ok(merged) = merged;
                if self.is_window_late(&merged) {
                    if let Some(set) = self.merging.get_mut(&key) {
                        let _ = set.retire_window(&merged);
                    }
                    continue;
                }
                let state_window = self
                    .merging
                    .get(&key)
                    .and_then(|set| set.state_window(&merged))
                    .unwrap_or(merged);
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
            let updated = self.function.add(existing, record.value.clone());
            self.contents.insert(slot, updated);
            self.on_element(&key, window, state_window, ctx, out);
        }
        if self.assigner.is_merging()
            && self
                .merging
                .get(&key)
                .is_some_and(MergingWindowSet::is_empty)
        {
            self.merging.remove(&key);
        }
        self.assigned = windows;
        if !accepted {
            ctx.count_late_record();
            if let Some(tag) = &self.late_tag {
                ctx.output(tag, record.value);
            }
        }
    }

    fn on_watermark(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.watermark = self.watermark.max(watermark.timestamp);
        while let Some(timer) = self.timers.pop_event_time_timer(self.watermark) {
            self.on_timer(timer.key, timer.namespace, timer.timestamp, ctx, out);
        }
    }

    fn on_processing_time(
        &mut self,
        now_ms: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        while let Some(timer) = self.timers.pop_processing_time_timer(now_ms) {
            self.on_timer(timer.key, timer.namespace, timer.timestamp, ctx, out);
        }
        if let Some(next) = self.timers.next_processing_time_timer() {
            ctx.request_processing_time(next);
        }
    }

    fn on_end_of_input(&mut self, ctx: &mut OperatorContext<'_>, out: &mut Collector<'_, F::Out>) {
        // Event-time windows already fired on the final watermark. Processing-time windows would
        // be lost at the end of a bounded input: fire them now.
        while let Some(timer) = self.timers.pop_processing_time_timer(i64::MAX) {
            self.on_timer(
                timer.key,
                timer.namespace,
                timer.namespace.max_timestamp(),
                ctx,
                out,
            );
        }
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.function.close()
    }
}
