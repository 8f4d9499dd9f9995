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
//!   `dropped_records`. A record whose time has no window that fits in `i64` (within a window
//!   size of the `i64` limits) can never be placed: it is treated as late (counted, sent to the
//!   late side output) and logged with a warning, instead of failing the job. Nothing is dropped
//!   silently.
//! - Processing-time windows fire (and are cleared) when processing time reaches
//!   `max_timestamp`; at the end of a bounded input, pending processing-time windows fire too
//!   (Flink would lose them).
//! - Results carry the window's `max_timestamp` as their timestamp.
//!
//! ## Design
//!
//! The generic path keeps contents per (key, state window) and timers in a [`TimerService`].
//! With the default event-time trigger ([`EventTimeTrigger`]) most of that is implied by the
//! windows themselves, and the operator takes a fast path that stores no timers:
//!
//! - tumbling windows, and sliding windows whose slide divides their size with a function that
//!   combines panes (reduce, aggregate): [`PaneWindows`], one slide-sized pane per record and
//!   key, merged into windows at firing;
//! - session windows: [`SessionWindows`], the in-flight sessions per key with their contents,
//!   merged as [`MergingWindowSet`] merges them.
//!
//! Both modules state why their results, order, timestamps and late and dropped records are the
//! generic path's; the operator's tests compare them on random input.
//!
//! ## Where the windows live
//!
//! Window contents live in the job's keyed state backend, as Flink's window state does; with
//! LMDB they are in LMDB behind its bounded write-back cache, so windows may hold more than
//! memory:
//!
//! - the generic path: contents per (key, state window) in a [`KeyedStateStore`] keyed by
//!   [`WindowScope`] (state `_window_contents`), the in-flight windows of merging assigners in a
//!   store keyed by the key (`_window_merging`), trigger state in a third (as before). With the
//!   memory backend these stores are hash maps;
//! - the fast paths: with the memory backend their contents stay in their own heap structures,
//!   which are the memory backend's form of this state (and what makes them fast); with LMDB
//!   the operator switches to their backend forms when it opens its state: [`BackendPanes`]
//!   (per key one value holding its panes) and [`SessionWindows`] over a store of each key's
//!   sessions. Same semantics, same code where it decides what fires.
//!
//! What tells a watermark which windows to fire is ordered by time, so a watermark visits only
//! what is due: the generic path's timers, the pane index (`(pane start, key)` for every key
//! with contents in a pane, no contents) and the session queue (one entry per key with
//! sessions). Each is a [`TimerService`]: on the heap with the memory backend, in LMDB with the
//! LMDB backend (Flink's RocksDB timer service), keeping a bounded head and write batch in
//! memory. Only the fired marks of recently restored keys stay on the heap (they are few and
//! go once the replay passes them). The timers are checkpointed; the index and the queue are
//! rebuilt from the restored windows.
//!
//! ## Checkpoints
//!
//! Everything the operator keeps is checkpointed as keyed state, each entry in the key group of
//! its key, so that a restore at another parallelism gives every subtask exactly its keys'
//! windows, timers and trigger state (see `snapshot_windows` and `restore_windows`):
//!
//! - the generic path: its stores' snapshots (contents per (key, state window) as
//!   `_window_contents`, the in-flight windows of merging assigners per key as
//!   `_window_merging`, the trigger state under `_trigger/` and their own names), and trigger
//!   and cleanup timers (`_window_timers`);
//! - the fast paths: their contents (`_window_panes`, `_window_sessions`) and, instead of the
//!   timers they do not keep, which windows already fired (`_window_fired`, see
//!   [`FiredWindows`]). The backend forms write exactly what the heap forms write (converted
//!   from the backend's frozen view off the data path), so a checkpoint taken with one backend
//!   restores into the other.
//!
//! The watermark is not checkpointed (as in Flink): a restored operator starts at `i64::MIN`
//! and follows the replayed watermarks. Restoring state the operator's configuration does not
//! produce (another assigner, trigger or function) is an error naming the state, never a silent
//! loss of windows.
//!
//! ## Invariants
//!
//! - Contents exist for a (key, state window) only while the window is in flight (merging) or has
//!   a pending cleanup timer.
//! - Timers fire in (time, key, window) order: runs are deterministic.
//! - A state error (LMDB I/O, a full map, undecodable bytes) fails the task; nothing is dropped
//!   silently.

use std::any::Any;
use std::collections::BTreeMap;
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::backend::store_config;
use super::backend_panes::BackendPanes;
use super::fired::FiredWindows;
use super::panes::{FRESH_STATE, PANES_STATE, PaneStore, PaneWindows};
use super::sessions::{
    HeapSessions, KeySessions, SESSIONS_STATE, SessionTable, SessionWindows, snapshot_store,
};
use super::trigger::{
    DefaultTrigger, EventTimeTrigger, Trigger, TriggerContext, TriggerResult, WindowScope,
};
use super::{
    MergingWindowSet, TimeWindow, WindowAssign, WindowAssigner, WindowError, decode_entry_key,
};
use crate::api::{Key, OutputTag};
use crate::operator::FunctionError;
use crate::operator::checkpointing::{check_key_group, take_keyed_entries};
use crate::operator::{
    Collector, OneInputOperator, OperatorContext, Record, RunContext, RuntimeContext,
    StateInitContext, StateSnapshotContext,
};
use crate::state::{
    DEFAULT_MAX_PARALLELISM, KeyGroup, KeyedBackendConfig, KeyedStateSnapshot, KeyedStateStore,
    PendingKeyedSnapshot, StableHash, StateBackendKind, StateError,
};
use crate::time::{TimerService, Watermark};

/// The keyed state holding the generic path's contents: `(key, state window) -> contents`.
const CONTENTS_STATE: &str = "_window_contents";
/// The keyed state holding merging assigners' in-flight windows: `key -> [(window, state
/// window)]`.
const MERGING_STATE: &str = "_window_merging";
/// The keyed state holding the generic path's timers.
const TIMERS_STATE: &str = "_window_timers";
/// The keyed state holding the fast paths' fired windows: `key -> (through, re-armed)`.
const FIRED_STATE: &str = "_window_fired";
/// The prefix of trigger states' names in a checkpoint.
const TRIGGER_STATE_PREFIX: &str = "_trigger/";

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
    fn initialize_fields(
        &mut self,
        _ctx: &mut crate::operator::StateInitContext,
    ) -> Result<(), FunctionError> {
        Ok(())
    }
    /// Stores the user function's `#[operator]` schema and state fields.
    fn snapshot_fields(
        &self,
        _ctx: &mut crate::operator::StateSnapshotContext,
    ) -> Result<(), FunctionError> {
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

/// How the operator keeps its windows.
///
/// `repr(u8)` gives the enum an explicit tag: telling the variants apart is then one byte
/// comparison per record, not a decoding of a niche in the variants' fields.
#[repr(u8)]
enum FastPath<K, A> {
    /// Contents per (key, state window) and timers: any assigner, trigger and function.
    Generic,
    /// Tumbling or sliding event-time windows with the default trigger, as panes on the heap.
    Panes(PaneWindows<K, A>),
    /// Session windows with the default event-time trigger, on the heap.
    Sessions(SessionWindows<K, A>, HeapSessions<K, A>),
    /// [`FastPath::Panes`] with the contents in the state backend (LMDB).
    BackendPanes(BackendPanes<K, A>),
    /// [`FastPath::Sessions`] with each key's sessions in the state backend (LMDB), state
    /// [`SESSIONS_STATE`].
    BackendSessions(SessionWindows<K, A>, KeyedStateStore<K>),
}

/// Whether `trigger` is Flink's default event-time trigger, whose timers the fast paths imply.
fn is_event_time_trigger<Tr: 'static>(trigger: &Tr) -> bool {
    let trigger = trigger as &dyn Any;
    trigger.is::<EventTimeTrigger>()
        || matches!(
            trigger.downcast_ref::<DefaultTrigger>(),
            Some(DefaultTrigger::EventTime(_))
        )
}

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

/// The window operator.
pub(crate) struct WindowOperator<K, T, KS, F: WindowFunctionCore<K, T>, Tr> {
    assigner: WindowAssigner,
    key_selector: KS,
    function: F,
    trigger: Tr,
    allowed_lateness_ms: i64,
    late_tag: Option<OutputTag<T>>,
    /// The assigner's properties (each a dynamic call to ask).
    is_event_time: bool,
    is_merging: bool,
    is_global: bool,
    /// The fast path, if the configuration has one; the fields below serve the generic path.
    fast: FastPath<K, F::Acc>,
    /// Which windows of restored keys fired before the checkpoint (fast paths only).
    fired: FiredWindows<K>,
    /// Contents per (key, state window), `None` only while a function adds to them (state
    /// [`CONTENTS_STATE`]).
    contents: KeyedStateStore<WindowScope<K>>,
    /// In-flight windows per key, merging assigners only (state [`MERGING_STATE`]).
    merging: KeyedStateStore<K>,
    /// Trigger and cleanup timers.
    timers: TimerService<K, TimeWindow>,
    /// Trigger state per (key, window).
    trigger_state: KeyedStateStore<WindowScope<K>>,
    /// The number of key groups, for checkpoints.
    max_parallelism: u32,
    /// A processing time a trigger asked for, to pass on to the runtime.
    wakeup_ms: Option<i64>,
    state_error: Option<StateError>,
    watermark: i64,
    now_ms: i64,
    assigned: Vec<TimeWindow>,
    /// `name (index/parallelism)` from `open`, for warnings about records it cannot place.
    task_name: String,
}

impl<K, T, KS, F, Tr> Clone for WindowOperator<K, T, KS, F, Tr>
where
    K: Ord + Hash + Clone + Send + 'static,
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
    K: Ord + Hash + Clone + Send + 'static,
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
        // Lateness only applies to event time (Flink ignores it for processing time).
        let allowed_lateness_ms = if assigner.is_event_time() {
            allowed_lateness_ms.max(0)
        } else {
            0
        };
        let fast = Self::fast_path(&assigner, &function, &trigger, allowed_lateness_ms);
        Self {
            is_event_time: assigner.is_event_time(),
            is_merging: assigner.is_merging(),
            is_global: assigner.is_global(),
            fast,
            assigner,
            key_selector,
            function,
            trigger,
            allowed_lateness_ms,
            late_tag,
            fired: FiredWindows::new(),
            contents: KeyedStateStore::default(),
            merging: KeyedStateStore::default(),
            timers: TimerService::new(),
            trigger_state: KeyedStateStore::default(),
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            wakeup_ms: None,
            state_error: None,
            watermark: i64::MIN,
            now_ms: 0,
            task_name: String::from("window operator"),
            assigned: Vec::new(),
        }
    }

    /// The fast path for this configuration: event time with the default trigger, and for
    /// sliding windows a slide that divides the size and a function that combines panes.
    fn fast_path(
        assigner: &WindowAssigner,
        function: &F,
        trigger: &Tr,
        allowed_lateness_ms: i64,
    ) -> FastPath<K, F::Acc> {
        if !assigner.is_event_time() || !is_event_time_trigger(trigger) {
            return FastPath::Generic;
        }
        match assigner {
            WindowAssigner::Tumbling(tumbling) => FastPath::Panes(PaneWindows::new(
                tumbling.size_ms(),
                tumbling.size_ms(),
                allowed_lateness_ms,
            )),
            WindowAssigner::Sliding(sliding)
                if sliding.size_ms() % sliding.slide_ms() == 0
                    && (sliding.size_ms() == sliding.slide_ms() || function.combines_panes()) =>
            {
                FastPath::Panes(PaneWindows::new(
                    sliding.size_ms(),
                    sliding.slide_ms(),
                    allowed_lateness_ms,
                ))
            }
            WindowAssigner::Session(sessions) => FastPath::Sessions(
                SessionWindows::new(sessions.gap_ms(), allowed_lateness_ms),
                HeapSessions::default(),
            ),
            _ => FastPath::Generic,
        }
    }

    /// When a window's state is removed: `max_timestamp + allowed_lateness` (never for global
    /// windows).
    fn cleanup_time(&self, window: &TimeWindow) -> i64 {
        if self.is_global {
            i64::MAX
        } else {
            window
                .max_timestamp()
                .saturating_add(self.allowed_lateness_ms)
        }
    }

    fn is_window_late(&self, window: &TimeWindow) -> bool {
        self.is_event_time && self.cleanup_time(window) <= self.watermark
    }

    fn register_cleanup_timer(&mut self, key: &K, window: TimeWindow) {
        let cleanup = self.cleanup_time(&window);
        if cleanup == i64::MAX {
            return;
        }
        let registered = if self.is_event_time {
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
            watermark: self.watermark,
            processing_time: self.now_ms,
            timers: &mut self.timers,
            state: &mut self.trigger_state,
            wakeup_ms: &mut self.wakeup_ms,
            error: &mut self.state_error,
        };
        f(&mut self.trigger, &mut ctx)
    }

    /// Notes a state failure: the task fails with the first one (see [`Self::report`]).
    fn note(&mut self, error: StateError) {
        self.state_error.get_or_insert(error);
    }

    /// Adds `value` to the contents of (key, state window).
    fn add_contents(
        &mut self,
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
        *slot = Some(self.function.add(slot.take(), value, timestamp));
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
        key: &K,
        window: TimeWindow,
        state_window: TimeWindow,
        out: &mut Collector<'_, F::Out>,
    ) {
        let window_ctx = WindowContext {
            window,
            current_watermark: self.watermark,
            current_processing_time: self.now_ms,
        };
        let scope = WindowScope {
            key: key.clone(),
            window: state_window,
        };
        let function = &mut self.function;
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
        result: TriggerResult,
        key: &K,
        window: TimeWindow,
        state_window: TimeWindow,
        out: &mut Collector<'_, F::Out>,
    ) {
        if result.is_fire() {
            self.emit(key, window, state_window, out);
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
        let result = self.with_trigger(&key, window, |trigger, ctx| match domain {
            Domain::Event => trigger.on_event_time(time, &window, ctx),
            Domain::Processing => trigger.on_processing_time(time, &window, ctx),
        });
        self.apply(result, &key, window, state_window, out);
        let cleanup_domain = if self.is_event_time {
            Domain::Event
        } else {
            Domain::Processing
        };
        if domain == cleanup_domain && time == self.cleanup_time(&window) {
            self.clear_all_state(&key, window, state_window);
        }
    }

    fn clear_all_state(&mut self, key: &K, window: TimeWindow, state_window: TimeWindow) {
        if let Err(error) = self.take_contents(key, state_window) {
            self.note(error);
        }
        self.with_trigger(key, window, |trigger, ctx| trigger.clear(&window, ctx));
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
            self.with_trigger(key, result, |trigger, ctx| trigger.on_merge(&result, ctx));
            for old in merged_windows {
                self.with_trigger(key, old, |trigger, ctx| trigger.clear(&old, ctx));
                let cleanup = self.cleanup_time(&old);
                if self.is_event_time {
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
                        Some(existing) => self.function.merge(existing, moved),
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
}

impl<K, T, KS, F, Tr> WindowOperator<K, T, KS, F, Tr>
where
    K: Key,
    T: Clone + Send + 'static,
    KS: Fn(&T) -> K + Clone + Send + 'static,
    F: WindowFunctionCore<K, T>,
    Tr: Trigger<T>,
{
    /// The time a record is assigned by (its timestamp for event time, the processing time
    /// otherwise); `None`, failing the task, for an event-time record without timestamp.
    #[inline]
    fn assignment_time(
        &self,
        timestamp: Option<i64>,
        ctx: &mut OperatorContext<'_>,
    ) -> Option<i64> {
        if self.is_event_time
            && let Some(time) = timestamp
        {
            return Some(time);
        }
        match self.assigner.assignment_time(timestamp, self.now_ms) {
            Ok(time) => Some(time),
            Err(error) => {
                ctx.fail(format!("{error}: assign timestamps before windowing"));
                None
            }
        }
    }

    /// A record no window accepted. Flink side-outputs it only if it is late itself; a record
    /// that falls between sliding windows (slide > size) is not late, and Flink drops it. We drop
    /// it too, but count it.
    fn reject(&self, value: T, time: i64, ctx: &mut OperatorContext<'_>) {
        let late =
            self.is_event_time && time.saturating_add(self.allowed_lateness_ms) <= self.watermark;
        if late {
            ctx.count_late_record();
            if let Some(tag) = &self.late_tag {
                ctx.output(tag, value);
            }
        } else {
            ctx.count_dropped_record();
        }
    }

    /// A record whose time has no window that fits in `i64` (a time within a window size of the
    /// limits of `i64`): no window can ever hold it, and no watermark can pass it, so it is
    /// treated as a late record rather than failing the job for one bad timestamp: counted in
    /// `late_records`, sent to the late side output when one is configured, and logged.
    #[cold]
    fn unplaceable(&self, value: T, time: i64, error: &WindowError, ctx: &mut OperatorContext<'_>) {
        let destination = if self.late_tag.is_some() {
            "sent to the late side output"
        } else {
            "dropped"
        };
        tracing::warn!(
            "{}: a record with timestamp {time} ms cannot be placed in a window ({error}); it is \
             counted as late and {destination}",
            self.task_name,
        );
        ctx.count_late_record();
        if let Some(tag) = &self.late_tag {
            ctx.output(tag, value);
        }
    }

    /// Any assigner, trigger and function: contents per (key, state window), timers.
    #[inline(never)]
    fn process_generic(
        &mut self,
        record: Record<T>,
        time: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let mut windows = std::mem::take(&mut self.assigned);
        windows.clear();
        if let Err(error) = self.assigner.assign(time, &mut windows) {
            self.assigned = windows;
            self.unplaceable(record.value, time, &error, ctx);
            return;
        }
        let key = (self.key_selector)(&record.value);
        let mut accepted = false;
        for window in windows.iter().copied() {
            let (window, state_window) = if self.is_merging {
                let (merged, state_window) = match self.merge_window(&key, window) {
                    Ok(merged) => merged,
                    Err(error) => {
                        self.note(error);
                        continue;
                    }
                };
                if self.is_window_late(&merged) {
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
                if self.is_window_late(&window) {
                    continue;
                }
                (window, window)
            };
            accepted = true;
            if let Err(error) =
                self.add_contents(&key, state_window, record.value.clone(), record.timestamp)
            {
                self.note(error);
            }
            let result = self.with_trigger(&key, window, |trigger, tctx| {
                trigger.on_element(&record.value, record.timestamp, &window, tctx)
            });
            self.apply(result, &key, window, state_window, out);
            self.register_cleanup_timer(&key, window);
        }
        self.assigned = windows;
        if !accepted {
            self.reject(record.value, time, ctx);
        }
    }

    /// Tumbling and sliding windows with the default event-time trigger (see `panes.rs`), with
    /// their contents on the heap or in the backend.
    #[inline]
    fn process_pane(
        &mut self,
        record: Record<T>,
        time: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let key = (self.key_selector)(&record.value);
        let mut record_cx = PaneRecord {
            function: &mut self.function,
            fired: &mut self.fired,
            assigner: &self.assigner,
            assigned: &mut self.assigned,
            emitter: Emitter {
                out,
                watermark: self.watermark,
                processing_time: self.now_ms,
            },
        };
        let added = match &mut self.fast {
            FastPath::Panes(panes) => record_cx.add(panes, key, record, time),
            FastPath::BackendPanes(panes) => record_cx.add(panes, key, record, time),
            _ => return,
        };
        match added {
            Ok(None) => {}
            Ok(Some(rejected)) => self.reject(rejected, time, ctx),
            Err(PaneAddError::Unplaceable(value, error)) => {
                self.unplaceable(value, time, &error, ctx);
            }
            Err(PaneAddError::Failed(message)) => ctx.fail(message),
        }
    }

    /// Session windows with the default event-time trigger (see `sessions.rs`), on the heap or
    /// in the backend.
    #[inline]
    fn process_session(
        &mut self,
        record: Record<T>,
        time: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let window = match &self.fast {
            FastPath::Sessions(sessions, _) | FastPath::BackendSessions(sessions, _) => {
                sessions.window_of(time)
            }
            _ => return,
        };
        let Some(window) = window else {
            // The window does not fit in i64: the assigner says why.
            let mut windows = std::mem::take(&mut self.assigned);
            windows.clear();
            let assigned = self.assigner.assign(time, &mut windows);
            self.assigned = windows;
            match assigned {
                Err(error) => self.unplaceable(record.value, time, &error, ctx),
                Ok(()) => ctx.fail(format!(
                    "{}: the session window of time {time} ms does not fit in an i64, but the \
                     assigner placed it",
                    self.task_name
                )),
            }
            return;
        };
        let key = (self.key_selector)(&record.value);
        let mut emitter = Emitter {
            out,
            watermark: self.watermark,
            processing_time: self.now_ms,
        };
        let function = &mut self.function;
        let fired = &mut self.fired;
        let added = match &mut self.fast {
            FastPath::Sessions(sessions, keys) => add_to_session(
                sessions,
                keys,
                function,
                fired,
                key,
                window,
                record,
                &mut emitter,
            ),
            FastPath::BackendSessions(sessions, store) => store
                .value_table::<KeySessions<F::Acc>>(SESSIONS_STATE)
                .and_then(|mut table| {
                    add_to_session(
                        sessions,
                        &mut table,
                        function,
                        fired,
                        key,
                        window,
                        record,
                        &mut emitter,
                    )
                }),
            _ => return,
        };
        match added {
            Ok(None) => {}
            Ok(Some(rejected)) => self.reject(rejected, time, ctx),
            Err(error) => ctx.fail(error.to_string()),
        }
    }
}

/// What a record on a pane path works with, besides the panes.
struct PaneRecord<'a, 'o, 'c, K, F: WindowFunctionCore<K, T>, T> {
    function: &'a mut F,
    fired: &'a mut FiredWindows<K>,
    assigner: &'a WindowAssigner,
    assigned: &'a mut Vec<TimeWindow>,
    emitter: Emitter<'o, 'c, F::Out>,
}

impl<K: Hash + Ord + Clone, T: Clone, F: WindowFunctionCore<K, T>> PaneRecord<'_, '_, '_, K, F, T> {
    /// Adds the record (of `key`, assigned at `time`) to `panes`: to its pane, and to what a
    /// restored key received since the restore; fires the pane's windows that fired already
    /// again. Returns the record back if no window accepted it.
    ///
    /// # Errors
    ///
    /// [`PaneAddError::Unplaceable`] with the record for a time whose windows do not fit in
    /// `i64`; [`PaneAddError::Failed`] with the backend's error.
    #[inline]
    fn add<P: PaneStore<K, F::Acc>>(
        &mut self,
        panes: &mut P,
        key: K,
        record: Record<T>,
        time: i64,
    ) -> Result<Option<T>, PaneAddError<T>> {
        let watermark = self.emitter.watermark;
        let located = match panes.locate(time, self.assigner, self.assigned, watermark) {
            Ok(located) => located,
            Err(error @ WindowError::TimeOutOfRange { .. }) => {
                return Err(PaneAddError::Unplaceable(record.value, error));
            }
            Err(error) => return Err(PaneAddError::Failed(error.to_string())),
        };
        let Some(index) = located else {
            return Ok(Some(record.value));
        };
        // If some windows of the pane fired already, the record fires those still kept again.
        let refire_key = panes.has_fired(index, watermark).then(|| key.clone());
        // After a restore, a record of a key whose windows fired before the checkpoint re-arms
        // the pane's windows that fired, and is kept apart for windows cleaned up before it.
        let restored = (!self.fired.is_empty() && self.fired.is_marked(&key))
            .then(|| (key.clone(), record.value.clone()));
        let failed = |error: StateError| PaneAddError::Failed(error.to_string());
        panes
            .add(index, self.function, key, record.value, record.timestamp)
            .map_err(failed)?;
        if let Some((key, value)) = restored {
            for window in panes.windows_of(index) {
                self.fired.rearm(&key, window.max_timestamp(), watermark);
            }
            panes
                .add_fresh(index, self.function, key, value, record.timestamp)
                .map_err(failed)?;
        }
        if let Some(key) = refire_key {
            panes
                .fire_late_record(index, self.function, &key, &mut self.emitter, self.fired)
                .map_err(failed)?;
        }
        Ok(None)
    }
}

/// Why [`PaneRecord::add`] did not add a record.
enum PaneAddError<T> {
    /// The record's time has no window that fits in `i64`: the record, and the assigner's error.
    Unplaceable(T, WindowError),
    /// The backend failed: the message to fail the task with.
    Failed(String),
}

/// Adds a record (of `key`, in `window`) to the sessions in `keys`; after a restore, re-arms
/// the session it joins if that fired before the checkpoint. Returns the record back if no
/// window accepted it.
///
/// # Errors
///
/// The table's (the state backend failed).
#[inline]
#[allow(clippy::too_many_arguments)]
fn add_to_session<K, T, F>(
    sessions: &mut SessionWindows<K, F::Acc>,
    keys: &mut impl SessionTable<K, F::Acc>,
    function: &mut F,
    fired: &mut FiredWindows<K>,
    key: K,
    window: TimeWindow,
    record: Record<T>,
    emitter: &mut Emitter<'_, '_, F::Out>,
) -> Result<Option<T>, StateError>
where
    K: Hash + Ord + Clone + 'static,
    F: WindowFunctionCore<K, T>,
{
    // After a restore, a record of a key whose sessions fired before the checkpoint re-arms
    // the session it joins, if that fired.
    let restored_key = (!fired.is_empty() && fired.is_marked(&key)).then(|| key.clone());
    let rejected = sessions.add(
        keys,
        key,
        window,
        record.value,
        record.timestamp,
        function,
        emitter,
    )?;
    if rejected.is_some() {
        return Ok(rejected);
    }
    if let Some(key) = restored_key
        && let Some(session) = SessionWindows::session_of(keys, &key, &window)?
    {
        fired.rearm(&key, session.max_timestamp(), emitter.watermark);
    }
    Ok(None)
}

impl<K, T, KS, F, Tr> WindowOperator<K, T, KS, F, Tr>
where
    K: Key,
    F: WindowFunctionCore<K, T>,
    Tr: Trigger<T>,
{
    /// Stores the operator's windows in a checkpoint (see the module's "Checkpoints").
    fn snapshot_windows(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), StateError> {
        if !ctx.is_persisted() {
            return Ok(());
        }
        let max_parallelism = self.max_parallelism;
        let now_ms = ctx.current_processing_time();
        // What the operator keeps on the heap is copied now and encoded by checkpoint storage,
        // off the data path (`deferred_keyed_state`); what the backend keeps is read from a
        // view frozen now, off the data path too (LMDB).
        let parts = match &mut self.fast {
            FastPath::Generic => {
                let triggers = self.trigger_state.snapshot(now_ms)?;
                if !matches!(&triggers, PendingKeyedSnapshot::Ready(s) if s.is_empty()) {
                    ctx.add_keyed(with_trigger_prefix(triggers));
                }
                ctx.snapshot_keyed_store(&mut self.contents)?;
                if self.is_merging {
                    ctx.snapshot_keyed_store(&mut self.merging)?;
                }
                if self.timers.is_empty() {
                    Vec::new()
                } else {
                    vec![self.timers.snapshot_keyed(TIMERS_STATE, max_parallelism)?]
                }
            }
            FastPath::Panes(panes) => {
                panes.snapshot(&self.fired, FIRED_STATE, self.watermark, max_parallelism)
            }
            FastPath::BackendPanes(panes) => vec![panes.snapshot(
                &self.fired,
                FIRED_STATE,
                self.watermark,
                max_parallelism,
                now_ms,
            )?],
            FastPath::Sessions(_, keys) => SessionWindows::snapshot(
                keys,
                &self.fired,
                FIRED_STATE,
                self.watermark,
                max_parallelism,
            ),
            FastPath::BackendSessions(_, store) => vec![snapshot_store::<K, F::Acc>(
                store,
                &self.fired,
                FIRED_STATE,
                self.watermark,
                max_parallelism,
                now_ms,
            )?],
        };
        for part in parts {
            ctx.add_keyed(part);
        }
        Ok(())
    }

    /// The entries its state stores, timers and indexes hold in memory (all of them for memory
    /// stores and heap timers, the cached ones for LMDB; the heap forms of the fast paths keep
    /// no store).
    #[cfg(test)]
    fn stored_entries_in_memory(&self) -> usize {
        let fast = match &self.fast {
            FastPath::BackendPanes(panes) => panes.entries_in_memory(),
            FastPath::BackendSessions(sessions, store) => {
                store.entries_in_memory() + sessions.queue_entries_in_memory()
            }
            FastPath::Generic | FastPath::Panes(_) | FastPath::Sessions(..) => 0,
        };
        fast + self.contents.entries_in_memory()
            + self.merging.entries_in_memory()
            + self.trigger_state.entries_in_memory()
            + self.timers.entries_in_memory()
    }

    /// With the LMDB backend, moves the fast paths' windows (none yet) to their backend forms,
    /// opening their store (see the module's "Where the windows live").
    fn move_to_backend(&mut self, config: &KeyedBackendConfig) -> Result<(), StateError> {
        if config.kind != StateBackendKind::Lmdb {
            return Ok(());
        }
        self.fast = match std::mem::replace(&mut self.fast, FastPath::Generic) {
            FastPath::Panes(panes) => {
                debug_assert!(panes.is_empty(), "windows move before any record");
                let store = KeyedStateStore::open(config.clone())?;
                let keys = TimerService::open(&store_config(config, "panes", 2))?;
                FastPath::BackendPanes(BackendPanes::<K, F::Acc>::new(panes.grid(), store, keys))
            }
            FastPath::Sessions(mut sessions, keys) => {
                debug_assert!(sessions.is_empty() && keys.is_empty());
                sessions.open_queue(&store_config(config, "queue", 2))?;
                FastPath::BackendSessions(sessions, KeyedStateStore::open(config.clone())?)
            }
            other => other,
        };
        Ok(())
    }

    /// Opens the state in the job's backend and restores the windows of the key groups this
    /// instance owns (see the module's "Checkpoints").
    fn restore_windows(&mut self, ctx: &mut StateInitContext) -> Result<(), StateError> {
        let config = ctx.backend_config().clone();
        let max_parallelism = config.max_parallelism;
        self.max_parallelism = max_parallelism;
        self.move_to_backend(&config)?;
        let mut keyed = ctx.take_keyed_snapshot();
        match &mut self.fast {
            FastPath::Generic => {
                // Only the generic path runs triggers with state and keeps contents per window:
                // the fast paths keep no such stores (and so open no LMDB environment for them).
                let stores = if self.is_merging { 3 } else { 2 };
                let mut store = KeyedStateStore::open(store_config(&config, "trigger", stores))?;
                let triggers = take_trigger_states(&mut keyed)?;
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
                self.contents = open_restored(store_config(&config, "contents", stores), contents)?;
                // Resolved now, so that contents of another type are a restore error (and, in
                // memory, undecodable ones; LMDB decodes them as they are read).
                self.contents
                    .value_table::<Option<F::Acc>>(CONTENTS_STATE)?;
                if self.is_merging {
                    let merging = keyed.take_state(MERGING_STATE);
                    check_entry_keys(&merging, MERGING_STATE, max_parallelism, |key: K| key)?;
                    self.merging =
                        open_restored(store_config(&config, "merging", stores), merging)?;
                    self.merging
                        .value_table::<StoredMergingSet>(MERGING_STATE)?;
                }
                let timers = keyed.take_state(TIMERS_STATE);
                self.timers = TimerService::open(&store_config(&config, "timers", stores))?;
                self.timers.restore_keyed_snapshot(&timers, TIMERS_STATE)?;
            }
            FastPath::Panes(panes) => {
                let mut by_start: BTreeMap<i64, Vec<(K, F::Acc)>> = BTreeMap::new();
                for ((key, start), acc) in take_checked::<(K, i64), F::Acc, K>(
                    &mut keyed,
                    PANES_STATE,
                    max_parallelism,
                    first,
                )? {
                    by_start.entry(start).or_default().push((key, acc));
                }
                for (start, contents) in by_start {
                    panes.restore_pane(start, contents, &self.assigner, &mut self.assigned)?;
                }
                for ((key, start), acc) in take_checked::<(K, i64), F::Acc, K>(
                    &mut keyed,
                    FRESH_STATE,
                    max_parallelism,
                    first,
                )? {
                    panes.restore_fresh(key, start, acc)?;
                }
            }
            FastPath::BackendPanes(panes) => {
                let contents = take_checked::<(K, i64), F::Acc, K>(
                    &mut keyed,
                    PANES_STATE,
                    max_parallelism,
                    first,
                )?;
                let fresh = take_checked::<(K, i64), F::Acc, K>(
                    &mut keyed,
                    FRESH_STATE,
                    max_parallelism,
                    first,
                )?;
                panes.restore(contents, fresh, &self.assigner, &mut self.assigned)?;
            }
            FastPath::Sessions(sessions, keys) => {
                for (key, windows) in take_sessions::<K, F::Acc>(&mut keyed, max_parallelism)? {
                    sessions.restore_key(keys, key, windows, self.watermark)?;
                }
            }
            FastPath::BackendSessions(sessions, store) => {
                let mut table = store.value_table::<KeySessions<F::Acc>>(SESSIONS_STATE)?;
                for (key, windows) in take_sessions::<K, F::Acc>(&mut keyed, max_parallelism)? {
                    sessions.restore_key(&mut table, key, windows, self.watermark)?;
                }
            }
        }
        if !matches!(self.fast, FastPath::Generic) {
            let marks = take_checked::<K, (i64, Vec<i64>), K>(
                &mut keyed,
                FIRED_STATE,
                max_parallelism,
                itself,
            )?;
            for (key, (through, rearmed)) in marks {
                if through > self.watermark {
                    self.fired.restore(key, through, &rearmed);
                }
            }
        }
        if let Some(left) = keyed.states.first() {
            return Err(StateError::Corrupt(format!(
                "state '{}' is not a state of this window operator ({:?}): were its assigner, \
                 trigger or function changed?",
                left.name, self.assigner
            )));
        }
        Ok(())
    }
}

/// Takes state `name` out of `keyed`, decoded (see [`take_keyed_entries`]), checking that each
/// entry's key (`key_of` its entry key) is in the key group it was stored in.
fn take_checked<E, V, K: StableHash>(
    keyed: &mut KeyedStateSnapshot,
    name: &str,
    max_parallelism: u32,
    key_of: fn(&E) -> &K,
) -> Result<Vec<(E, V)>, StateError>
where
    E: DeserializeOwned,
    V: DeserializeOwned,
{
    take_keyed_entries::<E, V>(keyed, name)?
        .into_iter()
        .map(|(group, entry_key, value)| {
            check_key_group(key_of(&entry_key), group, max_parallelism, name)?;
            Ok((entry_key, value))
        })
        .collect()
}

/// The key of an entry key with a namespace.
fn first<K, N>(entry_key: &(K, N)) -> &K {
    &entry_key.0
}

/// The key of an entry key without a namespace.
fn itself<K>(key: &K) -> &K {
    key
}

/// The sessions of state [`SESSIONS_STATE`] in `keyed`, per key (checked as
/// [`take_checked`] does).
fn take_sessions<K: Key, A: DeserializeOwned>(
    keyed: &mut KeyedStateSnapshot,
    max_parallelism: u32,
) -> Result<BTreeMap<K, Vec<(TimeWindow, A)>>, StateError> {
    let mut by_key: BTreeMap<K, Vec<(TimeWindow, A)>> = BTreeMap::new();
    for ((key, window), acc) in
        take_checked::<(K, TimeWindow), A, K>(keyed, SESSIONS_STATE, max_parallelism, first)?
    {
        by_key.entry(key).or_default().push((window, acc));
    }
    Ok(by_key)
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

/// A merging set as checkpointed: its (window, state window) pairs.
type WindowPairs = Vec<(TimeWindow, TimeWindow)>;

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

impl<K, T, KS, F, Tr> WindowOperator<K, T, KS, F, Tr>
where
    K: Key,
    T: Clone + Send + 'static,
    KS: Fn(&T) -> K + Clone + Send + 'static,
    F: WindowFunctionCore<K, T>,
    Tr: Trigger<T>,
{
    /// A run on the pane path: records that simply go to the current pane (see
    /// `PaneWindows::current_pane`) are added in one loop, the others go through
    /// [`process`](OneInputOperator::process). Out of line, so that the other paths' loop keeps
    /// `process` inlined.
    #[inline(never)]
    fn pane_run(&mut self, records: Vec<Record<T>>, run: &mut RunContext<'_, '_, F::Out>) {
        self.now_ms = run.context().current_processing_time();
        let watermark = self.watermark;
        for record in records {
            // Event time is implied by the pane path.
            let pane = match (&mut self.fast, record.timestamp) {
                (FastPath::Panes(panes), Some(time)) => panes.current_pane(time, watermark),
                _ => None,
            };
            if let Some(pane) = pane {
                let key = (self.key_selector)(&record.value);
                pane.add(&mut self.function, key, record.value, record.timestamp);
            } else {
                run.process_with(record, |record, ctx, out| self.process(record, ctx, out));
            }
        }
    }
}

impl<K, T, KS, F, Tr> OneInputOperator<T> for WindowOperator<K, T, KS, F, Tr>
where
    K: Key,
    T: Clone + Send + 'static,
    KS: Fn(&T) -> K + Clone + Send + 'static,
    F: WindowFunctionCore<K, T>,
    Tr: Trigger<T>,
{
    type Out = F::Out;

    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        self.function.initialize_fields(ctx)?;
        Ok(self.restore_windows(ctx)?)
    }

    fn snapshot_state(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        self.function.snapshot_fields(ctx)?;
        Ok(self.snapshot_windows(ctx)?)
    }

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.task_name = ctx.task_name_with_subtask();
        self.function.open(ctx)
    }

    #[inline]
    fn process(
        &mut self,
        record: Record<T>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.now_ms = ctx.current_processing_time();
        let Some(time) = self.assignment_time(record.timestamp, ctx) else {
            return;
        };
        match self.fast {
            FastPath::Generic => {
                self.process_generic(record, time, ctx, out);
                self.report(ctx);
            }
            // No trigger runs on the fast paths: nothing to report (a failing backend fails
            // the task there).
            FastPath::Panes(_) | FastPath::BackendPanes(_) => {
                self.process_pane(record, time, ctx, out);
            }
            FastPath::Sessions(..) | FastPath::BackendSessions(..) => {
                self.process_session(record, time, ctx, out);
            }
        }
    }

    /// Tumbling and sliding windows with the default trigger take `pane_run`; every other
    /// path takes the records one by one, as the trait's default does.
    #[inline]
    fn process_run(&mut self, records: Vec<Record<T>>, run: &mut RunContext<'_, '_, F::Out>) {
        // After a restore, records of keys whose windows fired before the checkpoint need
        // `process_pane`'s care (`fired`): the run loop is for the usual case.
        if matches!(self.fast, FastPath::Panes(_)) && self.fired.is_empty() {
            self.pane_run(records, run);
            return;
        }
        for record in records {
            run.process_with(record, |record, ctx, out| self.process(record, ctx, out));
        }
    }

    fn on_watermark(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.now_ms = ctx.current_processing_time();
        let previous = self.watermark;
        self.watermark = self.watermark.max(watermark.timestamp);
        if self.watermark > previous {
            let mut emitter = Emitter {
                out: &mut *out,
                watermark: self.watermark,
                processing_time: self.now_ms,
            };
            let fired = &self.fired;
            let function = &mut self.function;
            let advanced = match &mut self.fast {
                FastPath::Generic => Ok(()),
                FastPath::Panes(panes) => {
                    panes.advance(previous, function, &mut emitter, fired);
                    Ok(())
                }
                FastPath::BackendPanes(panes) => {
                    PaneStore::advance(panes, previous, function, &mut emitter, fired)
                }
                FastPath::Sessions(sessions, keys) => {
                    sessions.advance(keys, previous, function, &mut emitter, fired)
                }
                FastPath::BackendSessions(sessions, store) => store
                    .value_table::<KeySessions<F::Acc>>(SESSIONS_STATE)
                    .and_then(|mut table| {
                        sessions.advance(&mut table, previous, function, &mut emitter, fired)
                    }),
            };
            if let Err(error) = advanced {
                self.note(error);
            }
            self.fired.advance(self.watermark);
            let retained = match &mut self.fast {
                FastPath::Panes(panes) => {
                    panes.retain_fresh(&self.fired);
                    Ok(())
                }
                FastPath::BackendPanes(panes) => PaneStore::retain_fresh(panes, &self.fired),
                _ => Ok(()),
            };
            if let Err(error) = retained {
                self.note(error);
            }
        }
        // The fast paths register no timers: this serves the generic path.
        loop {
            match self.timers.pop_event_time_timer(self.watermark) {
                Ok(Some(timer)) => self.on_timer(
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
        now_ms: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        self.now_ms = now_ms;
        loop {
            match self.timers.pop_processing_time_timer(now_ms) {
                Ok(Some(timer)) => self.on_timer(
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

    fn on_end_of_input(&mut self, ctx: &mut OperatorContext<'_>, out: &mut Collector<'_, F::Out>) {
        // Event-time windows already fired on the final watermark. Processing-time timers would
        // be lost at the end of a bounded input: fire the ones pending now (not the ones their
        // triggers register while firing, or a continuous trigger would never end).
        let mut pending = Vec::new();
        if let Err(error) = self.timers.advance_processing_time(i64::MAX, &mut pending) {
            self.note(error);
        }
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

#[cfg(test)]
mod checkpoint_tests;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::api::functions::{AggregateFunction, ProcessWindowFunction};
    use crate::operator::testing::Harness;
    use crate::operator::window::{
        AggregateProcessWindow, AggregateWindow, BoxedEvictor, CountEvictor, EvictingWindow,
        ProcessWindow, ReduceWindow, TimeDomain,
    };
    use crate::operator::{Chained, StreamElement};

    /// `(key, timestamp, value)`.
    pub(super) type Event = (u8, i64, i64);

    pub(super) fn key_of(event: &Event) -> u8 {
        event.0
    }

    /// The default event-time trigger behind a type the operator does not recognise, which keeps
    /// it on the generic path: the reference the fast paths are compared with.
    #[derive(Clone)]
    pub(super) struct Opaque;

    impl<T> Trigger<T> for Opaque {
        fn on_element<K: Ord + Clone + Send + 'static>(
            &mut self,
            element: &T,
            timestamp: Option<i64>,
            window: &TimeWindow,
            ctx: &mut TriggerContext<'_, K>,
        ) -> TriggerResult {
            Trigger::<T>::on_element(&mut EventTimeTrigger, element, timestamp, window, ctx)
        }
        fn on_event_time<K: Ord + Clone + Send + 'static>(
            &mut self,
            time: i64,
            window: &TimeWindow,
            ctx: &mut TriggerContext<'_, K>,
        ) -> TriggerResult {
            Trigger::<T>::on_event_time(&mut EventTimeTrigger, time, window, ctx)
        }
        fn on_processing_time<K: Ord + Clone + Send + 'static>(
            &mut self,
            time: i64,
            window: &TimeWindow,
            ctx: &mut TriggerContext<'_, K>,
        ) -> TriggerResult {
            Trigger::<T>::on_processing_time(&mut EventTimeTrigger, time, window, ctx)
        }
        fn can_merge(&self) -> bool {
            true
        }
        fn on_merge<K: Ord + Clone + Send + 'static>(
            &mut self,
            window: &TimeWindow,
            ctx: &mut TriggerContext<'_, K>,
        ) {
            Trigger::<T>::on_merge(&mut EventTimeTrigger, window, ctx);
        }
        fn clear<K: Ord + Clone + Send + 'static>(
            &mut self,
            window: &TimeWindow,
            ctx: &mut TriggerContext<'_, K>,
        ) {
            Trigger::<T>::clear(&mut EventTimeTrigger, window, ctx);
        }
    }

    /// Sum and count of the values: merges consistently, in any order.
    #[derive(Clone)]
    pub(super) struct SumCount;
    crate::api::operator::impl_plain_operator!(SumCount);

    impl AggregateFunction<Event> for SumCount {
        type Acc = (i64, u64);
        type Out = (i64, u64);
        fn create_accumulator(&mut self) -> (i64, u64) {
            (0, 0)
        }
        fn add(&mut self, value: Event, (sum, count): (i64, u64)) -> (i64, u64) {
            (sum + value.2, count + 1)
        }
        fn get_result(&mut self, acc: &(i64, u64)) -> (i64, u64) {
            *acc
        }
        fn merge(&mut self, a: (i64, u64), b: (i64, u64)) -> (i64, u64) {
            (a.0 + b.0, a.1 + b.1)
        }
    }

    pub(super) fn sum_and_latest(a: Event, b: Event) -> Event {
        (a.0, a.1.max(b.1), a.2 + b.2)
    }

    /// Emits the window, the watermark and the values in the order the window holds them (so
    /// that arrival order and merge order show).
    #[derive(Clone)]
    pub(super) struct Elements;
    crate::api::operator::impl_plain_operator!(Elements);

    impl ProcessWindowFunction<u8, Event> for Elements {
        type Out = (u8, TimeWindow, i64, Vec<i64>);
        fn process(
            &mut self,
            key: &u8,
            ctx: &WindowContext,
            elements: Vec<Event>,
            out: &mut Collector<'_, Self::Out>,
        ) {
            let values = elements.iter().map(|e| e.2).collect();
            out.collect((*key, ctx.window, ctx.current_watermark, values));
        }
    }

    /// Emits an aggregate with the window's metadata.
    #[derive(Clone)]
    pub(super) struct Described;
    crate::api::operator::impl_plain_operator!(Described);

    impl ProcessWindowFunction<u8, (i64, u64)> for Described {
        type Out = (u8, TimeWindow, i64, (i64, u64));
        fn process(
            &mut self,
            key: &u8,
            ctx: &WindowContext,
            elements: Vec<(i64, u64)>,
            out: &mut Collector<'_, Self::Out>,
        ) {
            for result in elements {
                out.collect((*key, ctx.window, ctx.current_watermark, result));
            }
        }
    }

    #[derive(Debug, Clone)]
    pub(super) enum Step {
        Records(Vec<Event>),
        Watermark(i64),
    }

    /// What a run emitted, its late and dropped record counts, and its failure.
    type Run<O> = (Vec<StreamElement<O>>, u64, u64, Option<String>);

    /// Feeds `steps` and a final `Watermark::MAX`; returns everything emitted, the late and
    /// dropped record counts and the failure, if any.
    fn drive<Op: OneInputOperator<Event>>(operator: Op, steps: &[Step]) -> Run<Op::Out> {
        let mut harness = Harness::new(operator);
        for step in steps {
            match step {
                Step::Records(events) => {
                    let records = events
                        .iter()
                        .map(|event| Record::with_timestamp(*event, event.1))
                        .collect();
                    harness.process(0, records);
                }
                Step::Watermark(timestamp) => harness
                    .node
                    .process_watermark(Watermark::new(*timestamp), &mut harness.cx),
            }
        }
        harness
            .node
            .process_watermark(Watermark::MAX, &mut harness.cx);
        let mut metrics = Vec::new();
        harness.node.metrics(&mut metrics);
        let counters = metrics[0].1;
        (
            harness.take(),
            counters.late_records,
            counters.dropped_records,
            harness.cx.failure.take().map(|failure| failure.message),
        )
    }

    /// Runs `function` on the fast path (if the configuration has one) and on the generic one;
    /// returns both runs and whether the fast path was taken.
    fn both<F>(
        assigner: WindowAssigner,
        lateness: i64,
        function: F,
        steps: &[Step],
    ) -> (Run<F::Out>, Run<F::Out>, bool)
    where
        F: WindowFunctionCore<u8, Event>,
    {
        let tag = OutputTag::new("late");
        let fast = WindowOperator::<u8, Event, _, _, _>::new(
            assigner,
            key_of as fn(&Event) -> u8,
            function.clone(),
            DefaultTrigger::for_assigner(&assigner),
            lateness,
            Some(tag.clone()),
        );
        let took_fast_path = !matches!(fast.fast, FastPath::Generic);
        let generic = WindowOperator::<u8, Event, _, _, _>::new(
            assigner,
            key_of as fn(&Event) -> u8,
            function,
            Opaque,
            lateness,
            Some(tag),
        );
        assert!(matches!(generic.fast, FastPath::Generic));
        (drive(fast, steps), drive(generic, steps), took_fast_path)
    }

    /// `operator` with its state opened in LMDB, in `dir`, with a cache of 4 entries (most
    /// accesses miss, write-backs are frequent).
    fn in_lmdb<Op: OneInputOperator<Event>>(mut operator: Op, dir: &std::path::Path) -> Op {
        let config = KeyedBackendConfig {
            kind: StateBackendKind::Lmdb,
            local_dir: dir.to_path_buf(),
            cache_entries: 4,
            lmdb_map_size: 16 << 20,
            ..KeyedBackendConfig::memory(DEFAULT_MAX_PARALLELISM)
        };
        let mut init = StateInitContext::restored(
            crate::state::OperatorSnapshot::default(),
            crate::checkpoint::CheckpointId(0),
            config,
        );
        operator.initialize_state(&mut init).expect("opens");
        operator
    }

    /// Runs `function` on its fast path with the windows on the heap, and with the state in
    /// LMDB on its fast path and on the generic path; returns the three runs.
    fn on_lmdb<F>(
        assigner: WindowAssigner,
        lateness: i64,
        function: F,
        steps: &[Step],
    ) -> [Run<F::Out>; 3]
    where
        F: WindowFunctionCore<u8, Event>,
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let tag = OutputTag::new("late");
        let fast = || {
            WindowOperator::<u8, Event, _, _, _>::new(
                assigner,
                key_of as fn(&Event) -> u8,
                function.clone(),
                DefaultTrigger::for_assigner(&assigner),
                lateness,
                Some(tag.clone()),
            )
        };
        let generic = WindowOperator::<u8, Event, _, _, _>::new(
            assigner,
            key_of as fn(&Event) -> u8,
            function.clone(),
            Opaque,
            lateness,
            Some(tag.clone()),
        );
        let lmdb_fast = in_lmdb(fast(), &dir.path().join("fast"));
        assert!(!matches!(
            lmdb_fast.fast,
            FastPath::Panes(_) | FastPath::Sessions(..)
        ));
        [
            drive(fast(), steps),
            drive(lmdb_fast, steps),
            drive(in_lmdb(generic, &dir.path().join("generic")), steps),
        ]
    }

    pub(super) fn assigners() -> impl Strategy<Value = WindowAssigner> {
        let event = TimeDomain::EventTime;
        prop_oneof![
            (1i64..16)
                .prop_flat_map(|size| (Just(size), -(size - 1)..size))
                .prop_map(move |(size, offset)| {
                    WindowAssigner::tumbling(event, size, offset).expect("valid tumbling windows")
                }),
            (1i64..6, 1i64..5)
                .prop_flat_map(|(slide, panes)| (Just(slide), Just(panes), -(slide - 1)..slide))
                .prop_map(move |(slide, panes, offset)| {
                    WindowAssigner::sliding(event, slide * panes, slide, offset)
                        .expect("valid sliding windows")
                }),
            (1i64..10).prop_map(move |gap| {
                WindowAssigner::session(event, gap).expect("valid session windows")
            }),
        ]
    }

    /// Records drifting forward in time with jitter (so some are late, some within the allowed
    /// lateness), in batches, between watermarks that mostly advance. With a stride of 1000 the
    /// records are far apart (windows rarely share records, and sessions fire through the heap
    /// rather than the calendar).
    pub(super) fn steps() -> impl Strategy<Value = Vec<Step>> {
        let draws = proptest::collection::vec((0u8..10, 0u8..4, -25i64..6, -50i64..50), 0..150);
        (draws, prop_oneof![3 => Just(1i64), 1 => Just(1_000i64)]).prop_map(|(draws, stride)| {
            let mut steps = Vec::new();
            let mut batch = Vec::new();
            for (position, (kind, key, jitter, value)) in draws.into_iter().enumerate() {
                let now = (i64::try_from(position).unwrap_or(0) / 2 - 10) * stride;
                if kind < 7 {
                    batch.push((key, now + jitter, value));
                    continue;
                }
                if !batch.is_empty() {
                    steps.push(Step::Records(std::mem::take(&mut batch)));
                }
                if kind < 9 {
                    steps.push(Step::Watermark(now + jitter / 2));
                }
            }
            if !batch.is_empty() {
                steps.push(Step::Records(batch));
            }
            steps
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn fast_paths_match_the_generic_path(
            assigner in assigners(),
            lateness in prop_oneof![Just(0i64), 0i64..20],
            steps in steps(),
        ) {
            let (fast, generic, took) = both(assigner, lateness, AggregateWindow(SumCount), &steps);
            prop_assert!(took, "aggregate always has a fast path");
            prop_assert_eq!(fast, generic, "aggregate");

            let reduce = ReduceWindow(sum_and_latest as fn(Event, Event) -> Event);
            let (fast, generic, _) = both(assigner, lateness, reduce, &steps);
            prop_assert_eq!(fast, generic, "reduce");

            let described = AggregateProcessWindow(AggregateWindow(SumCount), Described);
            let (fast, generic, _) = both(assigner, lateness, described, &steps);
            prop_assert_eq!(fast, generic, "aggregate with process");

            // All elements, in the window's order: panes only for tumbling windows.
            let (fast, generic, took) = both(assigner, lateness, ProcessWindow(Elements), &steps);
            prop_assert_eq!(took, !matches!(assigner, WindowAssigner::Sliding(s) if s.size_ms() != s.slide_ms()));
            prop_assert_eq!(fast, generic, "process");

            // An evictor changes the contents it emits from.
            let evicting = EvictingWindow {
                function: ProcessWindow(Elements),
                evictor: BoxedEvictor::new(CountEvictor::of(2)),
            };
            let (fast, generic, _) = both(assigner, lateness, evicting, &steps);
            prop_assert_eq!(fast, generic, "evictor");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// With the state in LMDB, both paths give what the heap's fast path gives.
        #[test]
        fn lmdb_windows_match_the_heap(
            assigner in assigners(),
            lateness in prop_oneof![Just(0i64), 0i64..20],
            steps in steps(),
        ) {
            let [heap, fast, generic] = on_lmdb(assigner, lateness, AggregateWindow(SumCount), &steps);
            prop_assert!(heap.3.is_none() && generic.3.is_none(), "{:?}", generic.3);
            prop_assert_eq!(&fast, &heap, "aggregate, fast path");
            prop_assert_eq!(&generic, &heap, "aggregate, generic path");

            let [heap, fast, generic] = on_lmdb(assigner, lateness, ProcessWindow(Elements), &steps);
            prop_assert_eq!(&fast, &heap, "process, fast path");
            prop_assert_eq!(&generic, &heap, "process, generic path");

            let evicting = EvictingWindow {
                function: ProcessWindow(Elements),
                evictor: BoxedEvictor::new(CountEvictor::of(2)),
            };
            let [heap, fast, generic] = on_lmdb(assigner, lateness, evicting, &steps);
            prop_assert_eq!(&fast, &heap, "evictor, fast path");
            prop_assert_eq!(&generic, &heap, "evictor, generic path");
        }
    }

    #[test]
    fn records_at_the_limits_of_time_are_late_on_every_path_and_the_job_goes_on() {
        let event = TimeDomain::EventTime;
        let assigners = [
            WindowAssigner::tumbling(event, 10, 3).expect("valid"),
            WindowAssigner::sliding(event, 10, 5, 0).expect("valid"),
            WindowAssigner::session(event, 10).expect("valid"),
        ];
        for assigner in assigners {
            for time in [i64::MAX, i64::MAX - 3, i64::MIN, i64::MIN + 2] {
                let steps = [
                    Step::Records(vec![(1, 5, 1), (1, time, 2), (2, 7, 3)]),
                    Step::Watermark(20),
                ];
                let (fast, generic, took) = both(assigner, 0, AggregateWindow(SumCount), &steps);
                assert!(took);
                assert_eq!(fast, generic, "{assigner:?} at {time}");
                let (elements, late, dropped, failure) = fast;
                assert_eq!(failure, None, "{assigner:?} at {time}");
                assert_eq!(dropped, 0, "{assigner:?} at {time}");
                // Windows ending after i64::MAX do not exist; those of a time near i64::MIN may.
                let placeable = assigner.assign(time, &mut Vec::new()).is_ok();
                assert!(time < 0 || !placeable, "{assigner:?} at {time}");
                assert_eq!(late, u64::from(!placeable), "{assigner:?} at {time}");
                // The records at 5 and 7 are placed and fire (sessions of different keys).
                let results = elements
                    .iter()
                    .filter(|element| matches!(element, StreamElement::Record(_)))
                    .count();
                assert!(results >= 2, "{assigner:?} at {time}: {elements:?}");
            }
        }
        // Without a timestamp, every path reports the same error.
        for assigner in assigners {
            let tag = OutputTag::new("late");
            let operator = WindowOperator::<u8, Event, _, _, _>::new(
                assigner,
                key_of as fn(&Event) -> u8,
                AggregateWindow(SumCount),
                DefaultTrigger::for_assigner(&assigner),
                0,
                Some(tag),
            );
            let mut harness = Harness::new(operator);
            harness.process(0, vec![Record::new((1, 0, 0))]);
            let failure = harness.cx.failure.take().map(|failure| failure.message);
            assert!(
                failure
                    .as_deref()
                    .is_some_and(|m| m.contains("assign timestamps before windowing")),
                "{failure:?}"
            );
        }
    }

    #[test]
    fn fast_paths_are_taken_only_for_the_default_event_time_trigger() {
        let event = TimeDomain::EventTime;
        let sliding = WindowAssigner::sliding(event, 10, 3, 0).expect("valid");
        let processing = WindowAssigner::tumbling(TimeDomain::ProcessingTime, 10, 0).expect("ok");
        let function = AggregateWindow(SumCount);
        let paths = [
            (sliding, DefaultTrigger::for_assigner(&sliding)),
            (processing, DefaultTrigger::for_assigner(&processing)),
            (
                WindowAssigner::global(),
                DefaultTrigger::for_assigner(&WindowAssigner::global()),
            ),
        ];
        for (assigner, trigger) in paths {
            let operator = WindowOperator::<u8, Event, _, _, _>::new(
                assigner,
                key_of as fn(&Event) -> u8,
                function.clone(),
                trigger,
                0,
                None,
            );
            assert!(matches!(operator.fast, FastPath::Generic), "{assigner:?}");
        }
        let tumbling = WindowAssigner::tumbling(event, 10, 0).expect("valid");
        let explicit = WindowOperator::<u8, Event, _, _, _>::new(
            tumbling,
            key_of as fn(&Event) -> u8,
            function,
            EventTimeTrigger,
            0,
            None,
        );
        assert!(matches!(explicit.fast, FastPath::Panes(_)));
    }
}
