//! Triggers: when a window emits (Flink's `Trigger`).
//!
//! A trigger sees every element added to a window and the timers it registered for that window,
//! and answers with a [`TriggerResult`]: continue, fire (emit the window's current result), purge
//! (drop its contents) or both. The window operator owns the window's contents and cleanup; the
//! trigger only decides. Per-window trigger state (a count, the next continuous firing) lives in
//! keyed state scoped to (key, window) ([`WindowScope`]), reached through the
//! [`TriggerContext`]; it lives in the operator's state backend and is checkpointed in the key
//! group of its key, with the window's contents and timers.
//!
//! Built in: [`EventTimeTrigger`] (the default of event-time assigners), [`ProcessingTimeTrigger`]
//! (processing-time assigners), [`CountTrigger`], [`PurgingTrigger`],
//! [`ContinuousEventTimeTrigger`], [`ContinuousProcessingTimeTrigger`] and [`NeverTrigger`]
//! (global windows). Implement [`Trigger`] for your own.

use serde::{Deserialize, Serialize};

use super::{TimeWindow, WindowAssign, WindowAssigner};
use crate::state::{
    KeyedStateAccess, KeyedStateStore, StableHash, StableHasher, StateError, ValueState,
};
use crate::time::TimerService;

/// What a trigger decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerResult {
    /// Nothing happens.
    Continue,
    /// The window emits its current result and keeps its contents.
    Fire,
    /// The window's contents are dropped.
    Purge,
    /// The window emits, then its contents are dropped.
    FireAndPurge,
}

impl TriggerResult {
    /// Whether the window emits.
    pub fn is_fire(self) -> bool {
        matches!(self, Self::Fire | Self::FireAndPurge)
    }

    /// Whether the window's contents are dropped.
    pub fn is_purge(self) -> bool {
        matches!(self, Self::Purge | Self::FireAndPurge)
    }
}

/// The scope of trigger state: a key and one of its windows (Flink's window namespace).
///
/// It hashes as its key alone ([`StableHash`]), so a window's trigger state lives in the key
/// group of its key and moves with the key's other state when parallelism changes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowScope<K> {
    /// The key.
    pub key: K,
    /// The window.
    pub window: TimeWindow,
}

impl<K: StableHash> StableHash for WindowScope<K> {
    fn stable_hash(&self, state: &mut StableHasher) {
        self.key.stable_hash(state);
    }

    fn stable_hash_value(&self) -> u64 {
        self.key.stable_hash_value()
    }
}

/// What a trigger can do for the window it is called for.
pub struct TriggerContext<'a, K> {
    pub(crate) key: &'a K,
    pub(crate) window: TimeWindow,
    pub(crate) scope: WindowScope<K>,
    pub(crate) watermark: i64,
    pub(crate) processing_time: i64,
    pub(crate) timers: &'a mut TimerService<K, TimeWindow>,
    pub(crate) state: &'a mut KeyedStateStore<WindowScope<K>>,
    pub(crate) wakeup_ms: &'a mut Option<i64>,
    pub(crate) error: &'a mut Option<StateError>,
}

impl<K> std::fmt::Debug for TriggerContext<'_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerContext")
            .field("window", &self.window)
            .field("watermark", &self.watermark)
            .finish()
    }
}

impl<K: Ord + std::hash::Hash + Clone + Send + 'static> TriggerContext<'_, K> {
    /// The current watermark.
    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    /// The current processing time.
    pub fn current_processing_time(&self) -> i64 {
        self.processing_time
    }

    /// Notes a timer the backend could not keep: the task fails with it after the call.
    fn check(&mut self, result: Result<bool, StateError>) {
        if let Err(error) = result {
            self.error.get_or_insert(error);
        }
    }

    /// Calls `on_event_time` for this window when the watermark reaches `time`.
    pub fn register_event_time_timer(&mut self, time: i64) {
        let result = self
            .timers
            .register_event_time_timer(self.key.clone(), self.window, time);
        self.check(result);
    }

    /// Cancels an event-time timer of this window.
    pub fn delete_event_time_timer(&mut self, time: i64) {
        let result = self
            .timers
            .delete_event_time_timer(self.key.clone(), self.window, time);
        self.check(result);
    }

    /// Calls `on_processing_time` for this window when processing time reaches `time`.
    pub fn register_processing_time_timer(&mut self, time: i64) {
        let result =
            self.timers
                .register_processing_time_timer(self.key.clone(), self.window, time);
        self.check(result);
        *self.wakeup_ms = Some(self.wakeup_ms.map_or(time, |t| t.min(time)));
    }

    /// Cancels a processing-time timer of this window.
    pub fn delete_processing_time_timer(&mut self, time: i64) {
        let result = self
            .timers
            .delete_processing_time_timer(self.key.clone(), self.window, time);
        self.check(result);
    }
}

impl<K: Ord + std::hash::Hash + Clone + Send + 'static> KeyedStateAccess<WindowScope<K>>
    for TriggerContext<'_, K>
{
    fn current_key(&self) -> &WindowScope<K> {
        &self.scope
    }
    fn state_store(&mut self) -> &mut KeyedStateStore<WindowScope<K>> {
        self.state
    }
    fn key_and_store(
        &mut self,
    ) -> (
        std::borrow::Cow<'_, WindowScope<K>>,
        &mut KeyedStateStore<WindowScope<K>>,
    ) {
        (std::borrow::Cow::Borrowed(&self.scope), self.state)
    }
    fn state_error(&mut self, error: StateError) {
        self.error.get_or_insert(error);
    }
}

/// Decides when a window emits (Flink's `Trigger`).
///
/// Methods are generic over the key type so one trigger works for every keyed stream.
pub trait Trigger<T>: Clone + Send + 'static {
    /// An element was added to `window`.
    fn on_element<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        element: &T,
        timestamp: Option<i64>,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult;

    /// An event-time timer of `window` fired (default: continue).
    fn on_event_time<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        _time: i64,
        _window: &TimeWindow,
        _ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }

    /// A processing-time timer of `window` fired (default: continue).
    fn on_processing_time<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        _time: i64,
        _window: &TimeWindow,
        _ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }

    /// Whether this trigger supports merging windows (session windows).
    fn can_merge(&self) -> bool {
        false
    }

    /// Session windows merged into `window` (the merged windows' state was cleared).
    fn on_merge<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        _window: &TimeWindow,
        _ctx: &mut TriggerContext<'_, K>,
    ) {
    }

    /// The window is being removed: drop timers and trigger state.
    fn clear<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    );
}

/// Fires once the watermark passes the window's end (Flink's `EventTimeTrigger`); a late element
/// accepted within the allowed lateness fires the window again at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventTimeTrigger;

impl<T> Trigger<T> for EventTimeTrigger {
    fn on_element<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        _element: &T,
        _timestamp: Option<i64>,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        if window.max_timestamp() <= ctx.current_watermark() {
            TriggerResult::Fire
        } else {
            ctx.register_event_time_timer(window.max_timestamp());
            TriggerResult::Continue
        }
    }

    fn on_event_time<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        time: i64,
        window: &TimeWindow,
        _ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        if time == window.max_timestamp() {
            TriggerResult::Fire
        } else {
            TriggerResult::Continue
        }
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn on_merge<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) {
        // Only register a timer if the watermark has not passed the end of the merged window yet:
        // otherwise the window fires with its next element, or is cleaned up.
        if window.max_timestamp() > ctx.current_watermark() {
            ctx.register_event_time_timer(window.max_timestamp());
        }
    }

    fn clear<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) {
        ctx.delete_event_time_timer(window.max_timestamp());
    }
}

/// Fires once processing time passes the window's end (Flink's `ProcessingTimeTrigger`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessingTimeTrigger;

impl<T> Trigger<T> for ProcessingTimeTrigger {
    fn on_element<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        _element: &T,
        _timestamp: Option<i64>,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        ctx.register_processing_time_timer(window.max_timestamp());
        TriggerResult::Continue
    }

    fn on_processing_time<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        _time: i64,
        _window: &TimeWindow,
        _ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        TriggerResult::Fire
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn on_merge<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) {
        if window.max_timestamp() > ctx.current_processing_time() {
            ctx.register_processing_time_timer(window.max_timestamp());
        }
    }

    fn clear<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) {
        ctx.delete_processing_time_timer(window.max_timestamp());
    }
}

/// Fires every `count` elements (Flink's `CountTrigger`); the count restarts after each firing.
#[derive(Debug, Clone)]
pub struct CountTrigger {
    count: u64,
    seen: ValueState<u64>,
}

impl CountTrigger {
    /// Fires every `count` elements (at least 1).
    pub fn of(count: u64) -> Self {
        Self {
            count: count.max(1),
            seen: ValueState::new("eichhorn.count-trigger"),
        }
    }
}

impl<T> Trigger<T> for CountTrigger {
    fn on_element<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        _element: &T,
        _timestamp: Option<i64>,
        _window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        let seen = self.seen.value(ctx).unwrap_or(0) + 1;
        if seen >= self.count {
            self.seen.clear(ctx);
            TriggerResult::Fire
        } else {
            self.seen.update(ctx, seen);
            TriggerResult::Continue
        }
    }

    fn clear<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        _window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) {
        self.seen.clear(ctx);
    }
}

/// Turns the inner trigger's `Fire` into `FireAndPurge` (Flink's `PurgingTrigger`).
#[derive(Debug, Clone)]
pub struct PurgingTrigger<Tr>(pub Tr);

impl<Tr> PurgingTrigger<Tr> {
    /// Purges after every firing of `trigger`.
    pub fn of(trigger: Tr) -> Self {
        Self(trigger)
    }
}

fn purging(result: TriggerResult) -> TriggerResult {
    if result.is_fire() {
        TriggerResult::FireAndPurge
    } else {
        result
    }
}

impl<T, Tr: Trigger<T>> Trigger<T> for PurgingTrigger<Tr> {
    fn on_element<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        element: &T,
        timestamp: Option<i64>,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        purging(self.0.on_element(element, timestamp, window, ctx))
    }

    fn on_event_time<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        time: i64,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        purging(self.0.on_event_time(time, window, ctx))
    }

    fn on_processing_time<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        time: i64,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        purging(self.0.on_processing_time(time, window, ctx))
    }

    fn can_merge(&self) -> bool {
        self.0.can_merge()
    }

    fn on_merge<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) {
        self.0.on_merge(window, ctx);
    }

    fn clear<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) {
        self.0.clear(window, ctx);
    }
}

/// Fires every `interval_ms` of event time while the window is open, and at its end (Flink's
/// `ContinuousEventTimeTrigger`).
#[derive(Debug, Clone)]
pub struct ContinuousEventTimeTrigger {
    interval_ms: i64,
    next: ValueState<i64>,
}

impl ContinuousEventTimeTrigger {
    /// Fires every `interval_ms` (at least 1) of event time.
    pub fn of(interval_ms: i64) -> Self {
        Self {
            interval_ms: interval_ms.max(1),
            next: ValueState::new("eichhorn.continuous-event-time"),
        }
    }
}

impl ContinuousEventTimeTrigger {
    /// Flink's `registerNextFireTimestamp`: the next firing is one interval later, but never
    /// after the window's end.
    fn register_next<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &self,
        time: i64,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) {
        let next = time
            .saturating_add(self.interval_ms)
            .min(window.max_timestamp());
        ctx.register_event_time_timer(next);
        self.next.update(ctx, next);
    }
}

impl<T> Trigger<T> for ContinuousEventTimeTrigger {
    fn on_element<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        _element: &T,
        timestamp: Option<i64>,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        if window.max_timestamp() <= ctx.current_watermark() {
            return TriggerResult::Fire;
        }
        ctx.register_event_time_timer(window.max_timestamp());
        if self.next.value(ctx).is_none() {
            // Flink aligns the firings to multiples of the interval.
            let time = timestamp.unwrap_or(ctx.current_watermark());
            let start = time - time.rem_euclid(self.interval_ms);
            self.register_next(start, window, ctx);
        }
        TriggerResult::Continue
    }

    fn on_event_time<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        time: i64,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        if time == window.max_timestamp() {
            return TriggerResult::Fire;
        }
        if self.next.value(ctx) == Some(time) {
            let next = time.saturating_add(self.interval_ms);
            ctx.register_event_time_timer(next);
            self.next.update(ctx, next);
            return TriggerResult::Fire;
        }
        TriggerResult::Continue
    }

    fn clear<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) {
        if let Some(next) = self.next.value(ctx) {
            ctx.delete_event_time_timer(next);
        }
        ctx.delete_event_time_timer(window.max_timestamp());
        self.next.clear(ctx);
    }
}

/// Fires every `interval_ms` of processing time while the window holds elements (Flink's
/// `ContinuousProcessingTimeTrigger`).
#[derive(Debug, Clone)]
pub struct ContinuousProcessingTimeTrigger {
    interval_ms: i64,
    next: ValueState<i64>,
}

impl ContinuousProcessingTimeTrigger {
    /// Fires every `interval_ms` (at least 1) of processing time.
    pub fn of(interval_ms: i64) -> Self {
        Self {
            interval_ms: interval_ms.max(1),
            next: ValueState::new("eichhorn.continuous-processing-time"),
        }
    }
}

impl<T> Trigger<T> for ContinuousProcessingTimeTrigger {
    fn on_element<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        _element: &T,
        _timestamp: Option<i64>,
        _window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        if self.next.value(ctx).is_none() {
            let now = ctx.current_processing_time();
            let next = now - now.rem_euclid(self.interval_ms) + self.interval_ms;
            ctx.register_processing_time_timer(next);
            self.next.update(ctx, next);
        }
        TriggerResult::Continue
    }

    fn on_processing_time<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        time: i64,
        _window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        if self.next.value(ctx) == Some(time) {
            let next = time.saturating_add(self.interval_ms);
            ctx.register_processing_time_timer(next);
            self.next.update(ctx, next);
            return TriggerResult::Fire;
        }
        TriggerResult::Continue
    }

    fn clear<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        _window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) {
        if let Some(next) = self.next.value(ctx) {
            ctx.delete_processing_time_timer(next);
        }
        self.next.clear(ctx);
    }
}

/// Never fires (the default of global windows: give them a trigger).
#[derive(Debug, Clone, Copy, Default)]
pub struct NeverTrigger;

impl<T> Trigger<T> for NeverTrigger {
    fn on_element<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        _element: &T,
        _timestamp: Option<i64>,
        _window: &TimeWindow,
        _ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        TriggerResult::Continue
    }
    fn clear<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        _window: &TimeWindow,
        _ctx: &mut TriggerContext<'_, K>,
    ) {
    }
}

/// The trigger an assigner gets unless one is set: the default of its kind, as in Flink.
#[derive(Debug, Clone, Copy)]
pub enum DefaultTrigger {
    /// For event-time assigners.
    EventTime(EventTimeTrigger),
    /// For processing-time assigners.
    ProcessingTime(ProcessingTimeTrigger),
    /// For global windows.
    Never(NeverTrigger),
}

impl DefaultTrigger {
    /// The default trigger of `assigner`.
    pub fn for_assigner(assigner: &WindowAssigner) -> Self {
        if assigner.is_global() {
            Self::Never(NeverTrigger)
        } else if assigner.is_event_time() {
            Self::EventTime(EventTimeTrigger)
        } else {
            Self::ProcessingTime(ProcessingTimeTrigger)
        }
    }
}

macro_rules! delegate {
    ($self:ident, $t:ident => $body:expr) => {
        match $self {
            DefaultTrigger::EventTime($t) => $body,
            DefaultTrigger::ProcessingTime($t) => $body,
            DefaultTrigger::Never($t) => $body,
        }
    };
}

impl<T> Trigger<T> for DefaultTrigger {
    fn on_element<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        element: &T,
        timestamp: Option<i64>,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        delegate!(self, t => Trigger::<T>::on_element(t, element, timestamp, window, ctx))
    }
    fn on_event_time<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        time: i64,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        delegate!(self, t => Trigger::<T>::on_event_time(t, time, window, ctx))
    }
    fn on_processing_time<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        time: i64,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        delegate!(self, t => Trigger::<T>::on_processing_time(t, time, window, ctx))
    }
    fn can_merge(&self) -> bool {
        delegate!(self, t => Trigger::<T>::can_merge(t))
    }
    fn on_merge<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) {
        delegate!(self, t => Trigger::<T>::on_merge(t, window, ctx))
    }
    fn clear<K: Ord + std::hash::Hash + Clone + Send + 'static>(
        &mut self,
        window: &TimeWindow,
        ctx: &mut TriggerContext<'_, K>,
    ) {
        delegate!(self, t => Trigger::<T>::clear(t, window, ctx))
    }
}
