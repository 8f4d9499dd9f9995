//! The generic path of the window operator: any assigner, trigger and function, as Flink's
//! `WindowOperator` keeps its windows.
//!
//! Contents live per (key, state window) in a [`KeyedStateStore`] keyed by [`WindowScope`]
//! (state `_window_contents`); merging assigners keep each key's in-flight windows as a
//! [`MergingWindowSet`] in a store keyed by the key (`_window_merging`); trigger state lives in a
//! third store (checkpointed under `_trigger/` and its own names), and trigger and cleanup timers
//! in a [`TimerService`] (`_window_timers`). With the memory backend the stores are hash maps;
//! with LMDB they are LMDB environments behind bounded write-back caches.
//!
//! Per record: assign its windows, merge each with the key's in-flight windows (merging
//! assigners), drop the late ones, add the record to each remaining window's contents, run the
//! trigger and act on its decision, and register the window's cleanup timer. Timers fire in
//! (time, key, window) order: runs are deterministic.
//!
//! The fast paths (`pane_path.rs`, `session_path.rs`) give the same results for the
//! configurations they serve; the operator's tests compare them with this path on random input.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::backend::{decode_entry_key, store_config};
use super::functions::{WindowContext, WindowFunctionCore};
use super::path::{WindowBase as Base, WindowPath};
use super::trigger::{Trigger, TriggerContext, TriggerResult, WindowScope};
use super::{MergingWindowSet, TimeWindow, WindowAssign};
use crate::api::Key;
use crate::operator::checkpointing::check_key_group;
use crate::operator::{Collector, OperatorContext, Record, StateSnapshotContext};
use crate::state::{
    KeyGroup, KeyedBackendConfig, KeyedStateSnapshot, KeyedStateStore, PendingKeyedSnapshot,
    StableHash, StateError,
};
use crate::time::{TimerService, Watermark};

/// The keyed state holding the contents: `(key, state window) -> contents`.
const CONTENTS_STATE: &str = "_window_contents";
/// The keyed state holding merging assigners' in-flight windows: `key -> [(window, state
/// window)]`.
const MERGING_STATE: &str = "_window_merging";
/// The keyed state holding the timers.
const TIMERS_STATE: &str = "_window_timers";
/// The prefix of trigger states' names in a checkpoint.
const TRIGGER_STATE_PREFIX: &str = "_trigger/";

/// Which clock a timer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Domain {
    Event,
    Processing,
}

/// A merging set as the generic path stores it: serialised as its (window, state window)
/// pairs, checked when read back.
#[derive(Debug, Clone, Default)]
struct StoredMergingSet(MergingWindowSet);

impl Serialize for StoredMergingSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.persist().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StoredMergingSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = WindowPairs::deserialize(deserializer)?;
        MergingWindowSet::restore(pairs)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// The generic path: contents per (key, state window), in-flight windows of merging assigners,
/// trigger state and timers (see the module docs). `T`, `KS`, `F` and `Tr` are the operator's
/// types, for the [`WindowBase`](Base) its methods receive.
pub(super) struct GenericPath<K, T, KS, F, Tr> {
    /// The assigner's properties (each a dynamic call to ask).
    is_merging: bool,
    is_global: bool,
    /// Contents per (key, state window), `None` only while a function adds to them (state
    /// [`CONTENTS_STATE`]).
    contents: KeyedStateStore<WindowScope<K>>,
    /// In-flight windows per key, merging assigners only (state [`MERGING_STATE`]).
    merging: KeyedStateStore<K>,
    /// Trigger and cleanup timers.
    timers: TimerService<K, TimeWindow>,
    /// Trigger state per (key, window).
    trigger_state: KeyedStateStore<WindowScope<K>>,
    /// A processing time a trigger asked for, to pass on to the runtime.
    wakeup_ms: Option<i64>,
    state_error: Option<StateError>,
    _base: PhantomData<fn(T, KS, F, Tr)>,
}

impl<K, T, KS, F, Tr> GenericPath<K, T, KS, F, Tr>
where
    K: Ord + std::hash::Hash + Clone + Send + 'static,
{
    /// A generic path for an assigner that merges windows (`is_merging`) or has one global
    /// window (`is_global`); its stores are in memory until [`WindowPath::restore`] opens them.
    pub(super) fn new(is_merging: bool, is_global: bool) -> Self {
        Self {
            is_merging,
            is_global,
            contents: KeyedStateStore::default(),
            merging: KeyedStateStore::default(),
            timers: TimerService::new(),
            trigger_state: KeyedStateStore::default(),
            wakeup_ms: None,
            state_error: None,
            _base: PhantomData,
        }
    }
}

impl<K, T, KS, F, Tr> GenericPath<K, T, KS, F, Tr>
where
    K: Key,
    T: Clone + Send + 'static,
    KS: Fn(&T) -> K,
    F: WindowFunctionCore<K, T>,
    Tr: Trigger<T>,
{
    /// When a window's state is removed: `max_timestamp + allowed_lateness` (never for global
    /// windows).
    fn cleanup_time(&self, base: &Base<K, T, KS, F, Tr>, window: &TimeWindow) -> i64 {
        if self.is_global {
            i64::MAX
        } else {
            window
                .max_timestamp()
                .saturating_add(base.allowed_lateness_ms)
        }
    }

    fn is_window_late(&self, base: &Base<K, T, KS, F, Tr>, window: &TimeWindow) -> bool {
        base.is_event_time && self.cleanup_time(base, window) <= base.watermark
    }

    fn register_cleanup_timer(
        &mut self,
        base: &mut Base<K, T, KS, F, Tr>,
        key: &K,
        window: TimeWindow,
    ) {
        let cleanup = self.cleanup_time(base, &window);
        if cleanup == i64::MAX {
            return;
        }
        let registered = if base.is_event_time {
            self.timers
                .register_event_time_timer(key.clone(), window, cleanup)
        } else {
            self.wakeup_ms = Some(self.wakeup_ms.map_or(cleanup, |t| t.min(cleanup)));
            self.timers
                .register_processing_time_timer(key.clone(), window, cleanup)
        };
        if let Err(error) = registered {
            self.note(error);
        }
    }

    /// Runs `f` with the trigger and its context for (key, window).
    fn with_trigger<R>(
        &mut self,
        base: &mut Base<K, T, KS, F, Tr>,
        key: &K,
        window: TimeWindow,
        f: impl FnOnce(&mut Tr, &mut TriggerContext<'_, K>) -> R,
    ) -> R {
        let mut ctx = TriggerContext {
            key,
            window,
            scope: WindowScope {
                key: key.clone(),
                window,
            },
            watermark: base.watermark,
            processing_time: base.now_ms,
            timers: &mut self.timers,
            state: &mut self.trigger_state,
            wakeup_ms: &mut self.wakeup_ms,
            error: &mut self.state_error,
        };
        f(&mut base.trigger, &mut ctx)
    }

    /// Notes a state failure: the task fails with the first one (see [`Self::report`]).
    fn note(&mut self, error: StateError) {
        self.state_error.get_or_insert(error);
    }

    /// Adds `value` to the contents of (key, state window).
    fn add_contents(
        &mut self,
        base: &mut Base<K, T, KS, F, Tr>,
        key: &K,
        state_window: TimeWindow,
        value: T,
        timestamp: Option<i64>,
    ) -> Result<(), StateError> {
        let mut table = self
            .contents
            .value_table::<Option<F::Acc>>(CONTENTS_STATE)?;
        let scope = WindowScope {
            key: key.clone(),
            window: state_window,
        };
        let slot = table.get_or_insert_with(scope, || None)?;
        *slot = Some(base.function.add(slot.take(), value, timestamp));
        Ok(())
    }

    /// Takes the contents of (key, state window) out of the backend.
    fn take_contents(
        &mut self,
        key: &K,
        state_window: TimeWindow,
    ) -> Result<Option<F::Acc>, StateError> {
        let mut table = self
            .contents
            .value_table::<Option<F::Acc>>(CONTENTS_STATE)?;
        let scope = WindowScope {
            key: key.clone(),
            window: state_window,
        };
        let Some(slot) = table.get_mut(&scope)? else {
            return Ok(None);
        };
        let taken = slot.take();
        table.remove(&scope)?;
        Ok(taken)
    }

    /// Sets the contents of (key, state window).
    fn put_contents(
        &mut self,
        key: &K,
        state_window: TimeWindow,
        contents: F::Acc,
    ) -> Result<(), StateError> {
        let scope = WindowScope {
            key: key.clone(),
            window: state_window,
        };
        self.contents
            .value_table::<Option<F::Acc>>(CONTENTS_STATE)?
            .insert(scope, Some(contents))
    }

    /// Applies `f` to the in-flight windows of `key`, if it has any, and forgets them if that
    /// leaves none.
    fn with_merging<R>(
        &mut self,
        key: &K,
        f: impl FnOnce(&mut MergingWindowSet) -> R,
    ) -> Result<Option<R>, StateError> {
        let mut table = self
            .merging
            .value_table::<StoredMergingSet>(MERGING_STATE)?;
        let Some(set) = table.get_mut(key)? else {
            return Ok(None);
        };
        let result = f(&mut set.0);
        if set.0.is_empty() {
            table.remove(key)?;
        }
        Ok(Some(result))
    }

    /// The state window of the in-flight `window` of `key`.
    fn state_window_of(
        &mut self,
        key: &K,
        window: &TimeWindow,
    ) -> Result<Option<TimeWindow>, StateError> {
        let mut table = self
            .merging
            .value_table::<StoredMergingSet>(MERGING_STATE)?;
        Ok(table.get(key)?.and_then(|set| set.0.state_window(window)))
    }

    fn emit(
        &mut self,
        base: &mut Base<K, T, KS, F, Tr>,
        key: &K,
        window: TimeWindow,
        state_window: TimeWindow,
        out: &mut Collector<'_, F::Out>,
    ) {
        let window_ctx = WindowContext {
            window,
            current_watermark: base.watermark,
            current_processing_time: base.now_ms,
        };
        let scope = WindowScope {
            key: key.clone(),
            window: state_window,
        };
        let function = &mut base.function;
        let emitted = self
            .contents
            .value_table::<Option<F::Acc>>(CONTENTS_STATE)
            .and_then(|mut table| {
                if let Some(Some(contents)) = table.get_mut(&scope)? {
                    out.set_timestamp(Some(window.max_timestamp()));
                    function.emit(key, &window_ctx, contents, out);
                }
                Ok(())
            });
        if let Err(error) = emitted {
            self.note(error);
        }
    }

    /// Acts on a trigger's decision for `window`.
    fn apply(
        &mut self,
        base: &mut Base<K, T, KS, F, Tr>,
        result: TriggerResult,
        key: &K,
        window: TimeWindow,
        state_window: TimeWindow,
        out: &mut Collector<'_, F::Out>,
    ) {
        if result.is_fire() {
            self.emit(base, key, window, state_window, out);
        }
        if result.is_purge()
            && let Err(error) = self.take_contents(key, state_window)
        {
            self.note(error);
        }
    }

    /// A timer of `window` fired at `time`.
    fn on_timer(
        &mut self,
        base: &mut Base<K, T, KS, F, Tr>,
        key: K,
        window: TimeWindow,
        time: i64,
        domain: Domain,
        out: &mut Collector<'_, F::Out>,
    ) {
        let state_window = if self.is_merging {
            match self.state_window_of(&key, &window) {
                Ok(Some(state_window)) => state_window,
                // The window was merged into another one: its timer is stale.
                Ok(None) => return,
                Err(error) => return self.note(error),
            }
        } else {
            window
        };
        let result = self.with_trigger(base, &key, window, |trigger, ctx| match domain {
            Domain::Event => trigger.on_event_time(time, &window, ctx),
            Domain::Processing => trigger.on_processing_time(time, &window, ctx),
        });
        self.apply(base, result, &key, window, state_window, out);
        let cleanup_domain = if base.is_event_time {
            Domain::Event
        } else {
            Domain::Processing
        };
        if domain == cleanup_domain && time == self.cleanup_time(base, &window) {
            self.clear_all_state(base, &key, window, state_window);
        }
    }

    fn clear_all_state(
        &mut self,
        base: &mut Base<K, T, KS, F, Tr>,
        key: &K,
        window: TimeWindow,
        state_window: TimeWindow,
    ) {
        if let Err(error) = self.take_contents(key, state_window) {
            self.note(error);
        }
        self.with_trigger(base, key, window, |trigger, ctx| {
            trigger.clear(&window, ctx)
        });
        if self.is_merging {
            // The window is known to the set (its state window was found by the caller).
            let retired = self.with_merging(key, |set| {
                let _ = set.retire_window(&window);
            });
            if let Err(error) = retired {
                self.note(error);
            }
        }
    }

    /// Adds `window` to the key's merging set, merging contents, trigger state and timers of the
    /// windows it merges with; returns the resulting window and its state window.
    fn merge_window(
        &mut self,
        base: &mut Base<K, T, KS, F, Tr>,
        key: &K,
        window: TimeWindow,
    ) -> Result<(TimeWindow, TimeWindow), StateError> {
        let mut set = self
            .merging
            .value_table::<StoredMergingSet>(MERGING_STATE)?
            .get_mut(key)?
            .map(std::mem::take)
            .unwrap_or_default()
            .0;
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
            self.with_trigger(base, key, result, |trigger, ctx| {
                trigger.on_merge(&result, ctx)
            });
            for old in merged_windows {
                self.with_trigger(base, key, old, |trigger, ctx| trigger.clear(&old, ctx));
                let cleanup = self.cleanup_time(base, &old);
                if base.is_event_time {
                    self.timers
                        .delete_event_time_timer(key.clone(), old, cleanup)?;
                } else {
                    self.timers
                        .delete_processing_time_timer(key.clone(), old, cleanup)?;
                }
            }
            for merged_state in merged_states {
                if let Some(moved) = self.take_contents(key, merged_state)? {
                    let combined = match self.take_contents(key, state_result)? {
                        Some(existing) => base.function.merge(existing, moved),
                        None => moved,
                    };
                    self.put_contents(key, state_result, combined)?;
                }
            }
        }
        let state_window = set.state_window(&merged).unwrap_or(merged);
        self.merging
            .value_table::<StoredMergingSet>(MERGING_STATE)?
            .insert(key.clone(), StoredMergingSet(set))?;
        Ok((merged, state_window))
    }

    /// Passes on what triggers asked for: a processing-time wake-up, a failure.
    #[inline]
    fn report(&mut self, ctx: &mut OperatorContext<'_>) {
        if let Some(at) = self.wakeup_ms.take() {
            ctx.request_processing_time(at);
        }
        if let Some(error) = self.state_error.take() {
            ctx.fail(error.to_string());
        }
    }

    /// Adds a record: to the contents of each of its windows (merged first for a merging
    /// assigner) that is not late, running the trigger on it.
    #[inline(never)]
    fn add_record(
        &mut self,
        base: &mut Base<K, T, KS, F, Tr>,
        record: Record<T>,
        time: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let mut windows = std::mem::take(&mut base.assigned);
        windows.clear();
        if let Err(error) = base.assigner.assign(time, &mut windows) {
            base.assigned = windows;
            base.unplaceable(record.value, time, &error, ctx);
            return;
        }
        let key = (base.key_selector)(&record.value);
        let mut accepted = false;
        for window in windows.iter().copied() {
            let (window, state_window) = if self.is_merging {
                let (merged, state_window) = match self.merge_window(base, &key, window) {
                    Ok(merged) => merged,
                    Err(error) => {
                        self.note(error);
                        continue;
                    }
                };
                if self.is_window_late(base, &merged) {
                    let retired = self.with_merging(&key, |set| {
                        let _ = set.retire_window(&merged);
                    });
                    if let Err(error) = retired {
                        self.note(error);
                    }
                    continue;
                }
                (merged, state_window)
            } else {
                if self.is_window_late(base, &window) {
                    continue;
                }
                (window, window)
            };
            accepted = true;
            if let Err(error) = self.add_contents(
                base,
                &key,
                state_window,
                record.value.clone(),
                record.timestamp,
            ) {
                self.note(error);
            }
            let result = self.with_trigger(base, &key, window, |trigger, tctx| {
                trigger.on_element(&record.value, record.timestamp, &window, tctx)
            });
            self.apply(base, result, &key, window, state_window, out);
            self.register_cleanup_timer(base, &key, window);
        }
        base.assigned = windows;
        if !accepted {
            base.reject(record.value, time, ctx);
        }
    }
}

impl<K, T, KS, F, Tr> WindowPath<K, T, KS, F, Tr> for GenericPath<K, T, KS, F, Tr>
where
    K: Key,
    T: Clone + Send + 'static,
    KS: Fn(&T) -> K,
    F: WindowFunctionCore<K, T>,
    Tr: Trigger<T>,
{
    #[inline]
    fn process(
        &mut self,
        base: &mut Base<K, T, KS, F, Tr>,
        record: Record<T>,
        time: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.add_record(base, record, time, ctx, out);
        self.report(ctx);
    }

    fn on_watermark(
        &mut self,
        base: &mut Base<K, T, KS, F, Tr>,
        watermark: Watermark,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        base.observe_watermark(watermark, ctx);
        // Even a watermark that does not advance fires the timers a trigger registered at or
        // below it since the last one.
        loop {
            match self.timers.pop_event_time_timer(base.watermark) {
                Ok(Some(timer)) => self.on_timer(
                    base,
                    timer.key,
                    timer.namespace,
                    timer.timestamp,
                    Domain::Event,
                    out,
                ),
                Ok(None) => break,
                Err(error) => {
                    self.note(error);
                    break;
                }
            }
        }
        self.report(ctx);
    }

    fn on_processing_time(
        &mut self,
        base: &mut Base<K, T, KS, F, Tr>,
        now_ms: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        base.now_ms = now_ms;
        loop {
            match self.timers.pop_processing_time_timer(now_ms) {
                Ok(Some(timer)) => self.on_timer(
                    base,
                    timer.key,
                    timer.namespace,
                    timer.timestamp,
                    Domain::Processing,
                    out,
                ),
                Ok(None) => break,
                Err(error) => {
                    self.note(error);
                    break;
                }
            }
        }
        match self.timers.next_processing_time_timer() {
            Ok(Some(next)) => ctx.request_processing_time(next),
            Ok(None) => {}
            Err(error) => self.note(error),
        }
        self.report(ctx);
    }

    fn on_end_of_input(
        &mut self,
        base: &mut Base<K, T, KS, F, Tr>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        // Event-time windows already fired on the final watermark. Processing-time timers would
        // be lost at the end of a bounded input: fire the ones pending now (not the ones their
        // triggers register while firing, or a continuous trigger would never end).
        let mut pending = Vec::new();
        if let Err(error) = self.timers.advance_processing_time(i64::MAX, &mut pending) {
            self.note(error);
        }
        for timer in pending {
            self.on_timer(
                base,
                timer.key,
                timer.namespace,
                timer.timestamp,
                Domain::Processing,
                out,
            );
        }
        self.report(ctx);
    }

    fn snapshot(
        &mut self,
        base: &mut Base<K, T, KS, F, Tr>,
        ctx: &mut StateSnapshotContext,
    ) -> Result<(), StateError> {
        let now_ms = ctx.current_processing_time();
        let triggers = self.trigger_state.snapshot(now_ms)?;
        if !matches!(&triggers, PendingKeyedSnapshot::Ready(s) if s.is_empty()) {
            ctx.add_keyed(with_trigger_prefix(triggers));
        }
        ctx.snapshot_keyed_store(&mut self.contents)?;
        if self.is_merging {
            ctx.snapshot_keyed_store(&mut self.merging)?;
        }
        if !self.timers.is_empty() {
            ctx.add_keyed(
                self.timers
                    .snapshot_keyed(TIMERS_STATE, base.max_parallelism)?,
            );
        }
        Ok(())
    }

    fn restore(
        &mut self,
        base: &mut Base<K, T, KS, F, Tr>,
        config: &KeyedBackendConfig,
        keyed: &mut KeyedStateSnapshot,
    ) -> Result<(), StateError> {
        let max_parallelism = base.max_parallelism;
        // Only this path runs triggers with state and keeps contents per window: the fast paths
        // keep no such stores (and so open no LMDB environment for them).
        let stores = if self.is_merging { 3 } else { 2 };
        let mut store = KeyedStateStore::open(store_config(config, "trigger", stores))?;
        let triggers = take_trigger_states(keyed)?;
        if !triggers.is_empty() {
            store.restore(triggers)?;
        }
        self.trigger_state = store;
        let contents = keyed.take_state(CONTENTS_STATE);
        check_entry_keys(
            &contents,
            CONTENTS_STATE,
            max_parallelism,
            |scope: WindowScope<K>| scope.key,
        )?;
        self.contents = open_restored(store_config(config, "contents", stores), contents)?;
        // Resolved now, so that contents of another type are a restore error (and, in memory,
        // undecodable ones; LMDB decodes them as they are read).
        self.contents
            .value_table::<Option<F::Acc>>(CONTENTS_STATE)?;
        if self.is_merging {
            let merging = keyed.take_state(MERGING_STATE);
            check_entry_keys(&merging, MERGING_STATE, max_parallelism, |key: K| key)?;
            self.merging = open_restored(store_config(config, "merging", stores), merging)?;
            self.merging
                .value_table::<StoredMergingSet>(MERGING_STATE)?;
        }
        let timers = keyed.take_state(TIMERS_STATE);
        self.timers = TimerService::open(&store_config(config, "timers", stores))?;
        self.timers.restore_keyed_snapshot(&timers, TIMERS_STATE)?;
        Ok(())
    }

    #[cfg(test)]
    fn entries_in_memory(&self) -> usize {
        self.contents.entries_in_memory()
            + self.merging.entries_in_memory()
            + self.trigger_state.entries_in_memory()
            + self.timers.entries_in_memory()
    }
}

/// Checks that every entry of `part` (state `name` of a store) has a key (`key_of` its decoded
/// entry key) in the key group it was stored in, and appears once.
fn check_entry_keys<E: DeserializeOwned, K: StableHash>(
    part: &KeyedStateSnapshot,
    name: &str,
    max_parallelism: u32,
    key_of: impl Fn(E) -> K,
) -> Result<(), StateError> {
    for entry in &part.entries {
        let key = key_of(decode_entry_key::<E>(name, entry)?);
        check_key_group(&key, KeyGroup(entry.key_group), max_parallelism, name)?;
    }
    // Sorted, so a second entry of a key follows the first.
    if let Some(pair) = part.entries.windows(2).find(|p| p[0].key == p[1].key) {
        return Err(twice(name, pair[1].key_group));
    }
    Ok(())
}

/// A store opened as `config` says, holding `restored` (if it holds anything).
fn open_restored<K: Key>(
    config: KeyedBackendConfig,
    restored: KeyedStateSnapshot,
) -> Result<KeyedStateStore<K>, StateError> {
    let mut store = KeyedStateStore::open(config)?;
    if !restored.is_empty() {
        store.restore(restored)?;
    }
    Ok(store)
}

/// The same entry restored twice.
fn twice(state: &str, key_group: u32) -> StateError {
    StateError::Corrupt(format!(
        "state '{state}', key group {key_group}: an entry appears twice"
    ))
}

/// Prefixes the trigger states' names with [`TRIGGER_STATE_PREFIX`], so that they cannot meet
/// the operator's own states whatever a trigger calls them (a deferred snapshot on reading).
fn with_trigger_prefix(pending: PendingKeyedSnapshot) -> PendingKeyedSnapshot {
    fn prefixed(mut snapshot: KeyedStateSnapshot) -> KeyedStateSnapshot {
        for meta in &mut snapshot.states {
            meta.name = format!("{TRIGGER_STATE_PREFIX}{}", meta.name);
        }
        snapshot
    }
    match pending {
        PendingKeyedSnapshot::Ready(snapshot) => PendingKeyedSnapshot::Ready(prefixed(snapshot)),
        PendingKeyedSnapshot::Deferred(produce) => {
            PendingKeyedSnapshot::Deferred(Box::new(move || produce().map(prefixed)))
        }
        PendingKeyedSnapshot::Frozen(mut frozen) => {
            for meta in &mut frozen.states {
                meta.name = format!("{TRIGGER_STATE_PREFIX}{}", meta.name);
            }
            PendingKeyedSnapshot::Frozen(frozen)
        }
    }
}

/// Takes the trigger states (named with [`TRIGGER_STATE_PREFIX`]) out of `keyed`, under their
/// own names.
///
/// # Errors
///
/// [`StateError::Corrupt`] if an entry refers to a state the snapshot does not name.
fn take_trigger_states(keyed: &mut KeyedStateSnapshot) -> Result<KeyedStateSnapshot, StateError> {
    let names: Vec<String> = keyed
        .states
        .iter()
        .filter(|meta| meta.name.starts_with(TRIGGER_STATE_PREFIX))
        .map(|meta| meta.name.clone())
        .collect();
    let mut triggers = KeyedStateSnapshot::default();
    for name in names {
        let mut part = keyed.take_state(&name);
        for meta in &mut part.states {
            meta.name = name[TRIGGER_STATE_PREFIX.len()..].to_string();
        }
        triggers.merge(part)?;
    }
    Ok(triggers)
}

/// A merging set as checkpointed: its (window, state window) pairs.
type WindowPairs = Vec<(TimeWindow, TimeWindow)>;
