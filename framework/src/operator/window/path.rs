//! What the window operator's three paths share: the operator's configuration and clocks
//! ([`WindowBase`]) and the small trait each path implements ([`WindowPath`]).
//!
//! The window operator (`operator.rs`) picks one path when it is built and keeps it:
//!
//! - `generic_path.rs`: any assigner, trigger and function; contents per (key, state window)
//!   and timers, as Flink's `WindowOperator` keeps them;
//! - `pane_path.rs`: tumbling and sliding event-time windows with the default trigger, as panes
//!   (`panes.rs` on the heap, `backend_panes.rs` in the state backend);
//! - `session_path.rs`: session windows with the default event-time trigger (`sessions.rs`).
//!
//! Each path owns only what it keeps; what they all need (the assigner, the key selector, the
//! function, the trigger as configured, allowed lateness, the late side output, the watermark
//! and processing time) is the operator's [`WindowBase`], lent to every call. The trait is static:
//! the operator matches on its path once per call (once per run of records), and everything
//! below that, the per-record loop included, is monomorphic code of one path.
//!
//! ## Call order
//!
//! The operator calls [`WindowPath::restore`] once (from `initialize_state`, after the path
//! moved to its backend form), then any sequence of [`WindowPath::process_run`],
//! [`WindowPath::process_record`], [`WindowPath::on_watermark`],
//! [`WindowPath::on_processing_time`] and [`WindowPath::snapshot`], then
//! [`WindowPath::on_end_of_input`] at the end of a bounded input.

use std::marker::PhantomData;

use super::functions::{Emitter, WindowFunctionCore};
use super::{TimeWindow, WindowAssign, WindowAssigner, WindowError};
use crate::api::OutputTag;
use crate::operator::{Collector, OperatorContext, Record, RunContext, StateSnapshotContext};
use crate::state::{DEFAULT_MAX_PARALLELISM, KeyedBackendConfig, KeyedStateSnapshot, StateError};
use crate::time::Watermark;

/// What every path of the window operator shares: the configuration (assigner, key selector,
/// function, trigger, allowed lateness, late side output) and the operator's clocks.
pub(super) struct WindowBase<K, T, KS, F, Tr> {
    pub(super) assigner: WindowAssigner,
    pub(super) key_selector: KS,
    pub(super) function: F,
    /// The trigger as configured: the generic path runs it; the fast paths imply it (and it is
    /// kept so that a clone of the operator can choose its path again).
    pub(super) trigger: Tr,
    pub(super) allowed_lateness_ms: i64,
    pub(super) late_tag: Option<OutputTag<T>>,
    /// The assigner's time domain (a dynamic call to ask).
    pub(super) is_event_time: bool,
    /// The number of key groups, for checkpoints.
    pub(super) max_parallelism: u32,
    pub(super) watermark: i64,
    pub(super) now_ms: i64,
    /// Scratch space for the assigner's windows (no allocation per record once grown).
    pub(super) assigned: Vec<TimeWindow>,
    /// `name (index/parallelism)` from `open`, for warnings about records it cannot place.
    pub(super) task_name: String,
    _key: PhantomData<fn(&T) -> K>,
}

impl<K, T, KS, F, Tr> WindowBase<K, T, KS, F, Tr> {
    /// The configuration, with lateness clamped as Flink does (it only applies to event time).
    pub(super) fn new(
        assigner: WindowAssigner,
        key_selector: KS,
        function: F,
        trigger: Tr,
        allowed_lateness_ms: i64,
        late_tag: Option<OutputTag<T>>,
    ) -> Self {
        let allowed_lateness_ms = if assigner.is_event_time() {
            allowed_lateness_ms.max(0)
        } else {
            0
        };
        Self {
            is_event_time: assigner.is_event_time(),
            assigner,
            key_selector,
            function,
            trigger,
            allowed_lateness_ms,
            late_tag,
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            watermark: i64::MIN,
            now_ms: 0,
            assigned: Vec::new(),
            task_name: String::from("window operator"),
            _key: PhantomData,
        }
    }

    /// Notes a watermark (and the processing time of `ctx`); returns the previous watermark.
    /// The watermark never goes back.
    #[inline]
    pub(super) fn observe_watermark(
        &mut self,
        watermark: Watermark,
        ctx: &OperatorContext<'_>,
    ) -> i64 {
        self.now_ms = ctx.current_processing_time();
        let previous = self.watermark;
        self.watermark = self.watermark.max(watermark.timestamp);
        previous
    }

    /// The emitter of window results into `out`, at the current watermark and processing time.
    #[inline]
    pub(super) fn emitter<'o, 'c, O>(&self, out: &'o mut Collector<'c, O>) -> Emitter<'o, 'c, O> {
        Emitter {
            out,
            watermark: self.watermark,
            processing_time: self.now_ms,
        }
    }

    /// The time a record is assigned by (its timestamp for event time, the processing time
    /// otherwise); `None`, failing the task, for an event-time record without timestamp.
    #[inline]
    pub(super) fn assignment_time(
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
}

impl<K, T: 'static, KS, F, Tr> WindowBase<K, T, KS, F, Tr> {
    /// A record no window accepted. Flink side-outputs it only if it is late itself; a record
    /// that falls between sliding windows (slide > size) is not late, and Flink drops it. We drop
    /// it too, but count it.
    pub(super) fn reject(&self, value: T, time: i64, ctx: &mut OperatorContext<'_>) {
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
    pub(super) fn unplaceable(
        &self,
        value: T,
        time: i64,
        error: &WindowError,
        ctx: &mut OperatorContext<'_>,
    ) {
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
}

/// One way of keeping windows: what the window operator asks of its path. See the module
/// docs for the paths and the call order.
///
/// Every method gets the operator's [`WindowBase`]; a path keeps only its own state. Errors of
/// the state backend fail the task (through `ctx`) where a method has no `Result`.
pub(super) trait WindowPath<K, T, KS, F: WindowFunctionCore<K, T>, Tr> {
    /// Adds a record whose windows are assigned at `time`, firing what it fires at once.
    fn process(
        &mut self,
        base: &mut WindowBase<K, T, KS, F, Tr>,
        record: Record<T>,
        time: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    );

    /// Takes one record as it arrives: notes the processing time, finds the time its windows
    /// are assigned at, and [`process`](Self::process)es it.
    #[inline]
    fn process_record(
        &mut self,
        base: &mut WindowBase<K, T, KS, F, Tr>,
        record: Record<T>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        base.now_ms = ctx.current_processing_time();
        let Some(time) = base.assignment_time(record.timestamp, ctx) else {
            return;
        };
        self.process(base, record, time, ctx, out);
    }

    /// Takes a run of records in order; by default one by one through
    /// [`process_record`](Self::process_record).
    #[inline]
    fn process_run(
        &mut self,
        base: &mut WindowBase<K, T, KS, F, Tr>,
        records: Vec<Record<T>>,
        run: &mut RunContext<'_, '_, F::Out>,
    ) {
        for record in records {
            run.process_with(record, |record, ctx, out| {
                self.process_record(base, record, ctx, out);
            });
        }
    }

    /// A watermark arrived (the base has not seen it yet): fires and cleans up what it makes
    /// due.
    fn on_watermark(
        &mut self,
        base: &mut WindowBase<K, T, KS, F, Tr>,
        watermark: Watermark,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    );

    /// Processing time reached `now_ms`. Nothing to do unless the path keeps processing-time
    /// timers.
    fn on_processing_time(
        &mut self,
        _base: &mut WindowBase<K, T, KS, F, Tr>,
        _now_ms: i64,
        _ctx: &mut OperatorContext<'_>,
        _out: &mut Collector<'_, F::Out>,
    ) {
    }

    /// The bounded input ended (after the final watermark). Nothing to do unless the path keeps
    /// processing-time timers.
    fn on_end_of_input(
        &mut self,
        _base: &mut WindowBase<K, T, KS, F, Tr>,
        _ctx: &mut OperatorContext<'_>,
        _out: &mut Collector<'_, F::Out>,
    ) {
    }

    /// Adds what the path keeps to a checkpoint (only called for a persisted one).
    ///
    /// # Errors
    ///
    /// The state backend's.
    fn snapshot(
        &mut self,
        base: &mut WindowBase<K, T, KS, F, Tr>,
        ctx: &mut StateSnapshotContext,
    ) -> Result<(), StateError>;

    /// Opens the path's state as `config` says and takes what it keeps out of `keyed`; the
    /// operator then checks that nothing else is left.
    ///
    /// # Errors
    ///
    /// The state backend's, or [`StateError::Corrupt`] for restored state that does not fit.
    fn restore(
        &mut self,
        base: &mut WindowBase<K, T, KS, F, Tr>,
        config: &KeyedBackendConfig,
        keyed: &mut KeyedStateSnapshot,
    ) -> Result<(), StateError>;

    /// The entries its stores, timers and indexes hold in memory (all of them for memory stores
    /// and heap timers, the cached ones for LMDB; the heap forms of the fast paths keep no
    /// store).
    #[cfg(test)]
    fn entries_in_memory(&self) -> usize;
}
