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
//! The operator picks one *path* when it is built, and every path is a type of its own behind
//! one small static trait ([`WindowPath`], in `path.rs`, with the [`WindowBase`] all paths share:
//! the configuration and the clocks):
//!
//! - [`GenericPath`] (`generic_path.rs`): any assigner, trigger and function; contents per
//!   (key, state window) and timers in a [`TimerService`].
//! - With the default event-time trigger ([`EventTimeTrigger`]) most of that is implied by the
//!   windows themselves, and the operator takes a fast path that stores no timers:
//!   - [`PanePath`] (`pane_path.rs`): tumbling windows, and sliding windows whose slide divides
//!     their size with a function that combines panes (aggregate): one slide-sized pane per
//!     record and key, merged into windows at firing ([`PaneWindows`] in `panes.rs`);
//!   - [`SessionPath`] (`session_path.rs`): session windows, the in-flight sessions per key with
//!     their contents, merged as [`MergingWindowSet`] merges them ([`SessionWindows`] in
//!     `sessions.rs`).
//!
//! `panes.rs` and `sessions.rs` state why their results, order, timestamps and late and dropped
//! records are the generic path's; the operator's tests compare them on random input.
//!
//! This file only chooses the path, moves a fast path to its backend form when the state lives
//! in LMDB, and dispatches: one `match` per call (per run of records, per watermark), after
//! which everything, the per-record loop included, is one path's monomorphic code. The
//! function's shared pieces ([`WindowFunctionCore`], `Emitter`) live in `functions.rs`, below
//! every path, so no file of this module imports another in a circle.
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
//!
//! [`MergingWindowSet`]: super::MergingWindowSet
//! [`WindowScope`]: super::trigger::WindowScope
//! [`FiredWindows`]: super::fired::FiredWindows

use std::any::Any;

use super::backend::store_config;
use super::backend_panes::BackendPanes;
use super::functions::WindowFunctionCore;
use super::generic_path::GenericPath;
use super::pane_path::PanePath;
use super::panes::PaneWindows;
use super::path::{WindowBase, WindowPath};
use super::session_path::SessionPath;
use super::sessions::{HeapSessions, SessionWindows};
use super::trigger::{DefaultTrigger, EventTimeTrigger, Trigger};
use super::{WindowAssign, WindowAssigner};
use crate::api::{Key, OutputTag};
use crate::operator::FunctionError;
use crate::operator::{
    Collector, OneInputOperator, OperatorContext, Record, RunContext, RuntimeContext,
    StateInitContext, StateSnapshotContext,
};
use crate::state::{KeyedBackendConfig, KeyedStateStore, StateBackendKind, StateError};
use crate::time::{TimerService, Watermark};

/// How the operator keeps its windows: one path, and for the fast paths the form of their store
/// (see the module's "Design").
///
/// `repr(u8)` gives the enum an explicit tag: telling the variants apart is then one byte
/// comparison per call, not a decoding of a niche in the variants' fields.
// An operator holds one path for its whole life, so the generic path's size costs nothing
// per record; boxing it would add an indirection to every one of its calls.
#[allow(clippy::large_enum_variant)]
#[repr(u8)]
enum OperatorPath<K, T, KS, F: WindowFunctionCore<K, T>, Tr> {
    /// Contents per (key, state window) and timers: any assigner, trigger and function.
    Generic(GenericPath<K, T, KS, F, Tr>),
    /// Tumbling or sliding event-time windows with the default trigger, as panes on the heap.
    Panes(PanePath<K, T, KS, F, Tr, PaneWindows<K, F::Acc>>),
    /// [`OperatorPath::Panes`] with the contents in the state backend (LMDB).
    BackendPanes(PanePath<K, T, KS, F, Tr, BackendPanes<K, F::Acc>>),
    /// Session windows with the default event-time trigger, on the heap.
    Sessions(SessionPath<K, T, KS, F, Tr, HeapSessions<K, F::Acc>>),
    /// [`OperatorPath::Sessions`] with each key's sessions in the state backend (LMDB).
    BackendSessions(SessionPath<K, T, KS, F, Tr, KeyedStateStore<K>>),
}

/// Runs `$call` with `$path` bound to the operator's path, whichever it is: the one dispatch
/// of a call, after which the code is the path's own.
macro_rules! on_path {
    ($operator:expr, $path:ident => $call:expr) => {
        match $operator {
            OperatorPath::Generic($path) => $call,
            OperatorPath::Panes($path) => $call,
            OperatorPath::BackendPanes($path) => $call,
            OperatorPath::Sessions($path) => $call,
            OperatorPath::BackendSessions($path) => $call,
        }
    };
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

/// The window operator: the configuration and clocks every path shares, and its path.
pub(crate) struct WindowOperator<K, T, KS, F: WindowFunctionCore<K, T>, Tr> {
    base: WindowBase<K, T, KS, F, Tr>,
    path: OperatorPath<K, T, KS, F, Tr>,
}

impl<K, T, KS, F, Tr> Clone for WindowOperator<K, T, KS, F, Tr>
where
    K: Key,
    T: Clone + Send + 'static,
    KS: Clone,
    F: WindowFunctionCore<K, T>,
    Tr: Trigger<T>,
{
    /// A new operator of the same configuration, without windows.
    fn clone(&self) -> Self {
        let base = &self.base;
        Self::new(
            base.assigner,
            base.key_selector.clone(),
            base.function.clone(),
            base.trigger.clone(),
            base.allowed_lateness_ms,
            base.late_tag.clone(),
        )
    }
}

impl<K, T, KS, F, Tr> WindowOperator<K, T, KS, F, Tr>
where
    K: Key,
    T: Clone + Send + 'static,
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
        let base = WindowBase::new(
            assigner,
            key_selector,
            function,
            trigger,
            allowed_lateness_ms,
            late_tag,
        );
        let path = Self::choose_path(&base);
        Self { base, path }
    }

    /// The path for this configuration: a fast path for event time with the default trigger
    /// (and for sliding windows a slide that divides the size and a function that combines
    /// panes), the generic path otherwise.
    fn choose_path(base: &WindowBase<K, T, KS, F, Tr>) -> OperatorPath<K, T, KS, F, Tr> {
        let assigner = &base.assigner;
        let lateness = base.allowed_lateness_ms;
        let generic = || {
            OperatorPath::Generic(GenericPath::new(
                assigner.is_merging(),
                assigner.is_global(),
            ))
        };
        if !assigner.is_event_time() || !is_event_time_trigger(&base.trigger) {
            return generic();
        }
        match assigner {
            WindowAssigner::Tumbling(tumbling) => OperatorPath::Panes(PanePath::new(
                PaneWindows::new(tumbling.size_ms(), tumbling.size_ms(), lateness),
            )),
            WindowAssigner::Sliding(sliding)
                if sliding.size_ms() % sliding.slide_ms() == 0
                    && (sliding.size_ms() == sliding.slide_ms()
                        || base.function.combines_panes()) =>
            {
                OperatorPath::Panes(PanePath::new(PaneWindows::new(
                    sliding.size_ms(),
                    sliding.slide_ms(),
                    lateness,
                )))
            }
            WindowAssigner::Session(sessions) => OperatorPath::Sessions(SessionPath::new(
                SessionWindows::new(sessions.gap_ms(), lateness),
                HeapSessions::default(),
            )),
            _ => generic(),
        }
    }
}

impl<K, T, KS, F, Tr> WindowOperator<K, T, KS, F, Tr>
where
    K: Key,
    T: Clone + Send + 'static,
    KS: Fn(&T) -> K,
    F: WindowFunctionCore<K, T>,
    Tr: Trigger<T>,
{
    /// With the LMDB backend, moves a fast path's windows (none yet) to their backend form,
    /// opening its store (see the module's "Where the windows live").
    fn move_to_backend(&mut self, config: &KeyedBackendConfig) -> Result<(), StateError> {
        if config.kind != StateBackendKind::Lmdb {
            return Ok(());
        }
        let moved = match &mut self.path {
            OperatorPath::Panes(path) => {
                debug_assert!(path.panes.is_empty(), "windows move before any record");
                let store = KeyedStateStore::open(config.clone())?;
                let keys = TimerService::open(&store_config(config, "panes", 2))?;
                OperatorPath::BackendPanes(PanePath::new(BackendPanes::new(
                    path.panes.grid(),
                    store,
                    keys,
                )))
            }
            OperatorPath::Sessions(path) => {
                debug_assert!(path.sessions.is_empty() && path.store.is_empty());
                let mut sessions = path.sessions.empty_like();
                sessions.open_queue(&store_config(config, "queue", 2))?;
                OperatorPath::BackendSessions(SessionPath::new(
                    sessions,
                    KeyedStateStore::open(config.clone())?,
                ))
            }
            _ => return Ok(()),
        };
        self.path = moved;
        Ok(())
    }

    /// Opens the state in the job's backend and restores the windows of the key groups this
    /// instance owns (see the module's "Checkpoints").
    fn restore_windows(&mut self, ctx: &mut StateInitContext) -> Result<(), StateError> {
        let config = ctx.backend_config().clone();
        self.base.max_parallelism = config.max_parallelism;
        self.move_to_backend(&config)?;
        let mut keyed = ctx.take_keyed_snapshot();
        on_path!(&mut self.path, path => path.restore(&mut self.base, &config, &mut keyed))?;
        if let Some(left) = keyed.states.first() {
            return Err(StateError::Corrupt(format!(
                "state '{}' is not a state of this window operator ({:?}): were its assigner, \
                 trigger or function changed?",
                left.name, self.base.assigner
            )));
        }
        Ok(())
    }

    /// Stores the operator's windows in a checkpoint (see the module's "Checkpoints").
    fn snapshot_windows(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), StateError> {
        if !ctx.is_persisted() {
            return Ok(());
        }
        on_path!(&mut self.path, path => path.snapshot(&mut self.base, ctx))
    }

    /// The entries its state stores, timers and indexes hold in memory (all of them for memory
    /// stores and heap timers, the cached ones for LMDB; the heap forms of the fast paths keep
    /// no store).
    #[cfg(test)]
    fn stored_entries_in_memory(&self) -> usize {
        on_path!(&self.path, path => WindowPath::<K, T, KS, F, Tr>::entries_in_memory(path))
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
        self.base.function.initialize_fields(ctx)?;
        Ok(self.restore_windows(ctx)?)
    }

    fn snapshot_state(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        self.base.function.snapshot_fields(ctx)?;
        Ok(self.snapshot_windows(ctx)?)
    }

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.base.task_name = ctx.task_name_with_subtask();
        self.base.function.open(ctx)
    }

    #[inline]
    fn process(
        &mut self,
        record: Record<T>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        on_path!(&mut self.path, path => path.process_record(&mut self.base, record, ctx, out));
    }

    /// One dispatch per run: the path's own loop takes the records.
    #[inline]
    fn process_run(&mut self, records: Vec<Record<T>>, run: &mut RunContext<'_, '_, F::Out>) {
        on_path!(&mut self.path, path => path.process_run(&mut self.base, records, run));
    }

    fn on_watermark(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        on_path!(&mut self.path, path => path.on_watermark(&mut self.base, watermark, ctx, out));
    }

    fn on_processing_time(
        &mut self,
        now_ms: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        on_path!(&mut self.path, path => path.on_processing_time(&mut self.base, now_ms, ctx, out));
    }

    fn on_end_of_input(&mut self, ctx: &mut OperatorContext<'_>, out: &mut Collector<'_, F::Out>) {
        on_path!(&mut self.path, path => path.on_end_of_input(&mut self.base, ctx, out));
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.base.function.close()
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
    use crate::operator::window::trigger::{TriggerContext, TriggerResult};
    use crate::operator::window::{
        AggregateProcessWindow, AggregateWindow, BoxedEvictor, CountEvictor, EvictingWindow,
        ProcessWindow, ReduceWindow, TimeDomain, TimeWindow, WindowContext,
    };
    use crate::operator::{Chained, StreamElement};
    use crate::state::{DEFAULT_MAX_PARALLELISM, StateBackendKind};

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
        fn on_element<K: Ord + std::hash::Hash + Clone + Send + 'static>(
            &mut self,
            element: &T,
            timestamp: Option<i64>,
            window: &TimeWindow,
            ctx: &mut TriggerContext<'_, K>,
        ) -> TriggerResult {
            Trigger::<T>::on_element(&mut EventTimeTrigger, element, timestamp, window, ctx)
        }
        fn on_event_time<K: Ord + std::hash::Hash + Clone + Send + 'static>(
            &mut self,
            time: i64,
            window: &TimeWindow,
            ctx: &mut TriggerContext<'_, K>,
        ) -> TriggerResult {
            Trigger::<T>::on_event_time(&mut EventTimeTrigger, time, window, ctx)
        }
        fn on_processing_time<K: Ord + std::hash::Hash + Clone + Send + 'static>(
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
        fn on_merge<K: Ord + std::hash::Hash + Clone + Send + 'static>(
            &mut self,
            window: &TimeWindow,
            ctx: &mut TriggerContext<'_, K>,
        ) {
            Trigger::<T>::on_merge(&mut EventTimeTrigger, window, ctx);
        }
        fn clear<K: Ord + std::hash::Hash + Clone + Send + 'static>(
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
        let took_fast_path = !matches!(fast.path, OperatorPath::Generic(_));
        let generic = WindowOperator::<u8, Event, _, _, _>::new(
            assigner,
            key_of as fn(&Event) -> u8,
            function,
            Opaque,
            lateness,
            Some(tag),
        );
        assert!(matches!(generic.path, OperatorPath::Generic(_)));
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
            lmdb_fast.path,
            OperatorPath::Panes(_) | OperatorPath::Sessions(..)
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
            assert!(
                matches!(operator.path, OperatorPath::Generic(_)),
                "{assigner:?}"
            );
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
        assert!(matches!(explicit.path, OperatorPath::Panes(_)));
    }
}
