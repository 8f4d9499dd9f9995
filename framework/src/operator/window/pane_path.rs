//! The pane path of the window operator: tumbling windows, and sliding windows whose slide
//! divides their size with a function that combines panes, with the default event-time trigger.
//!
//! The path keeps no timers and no contents per window: a record goes once to its slide-sized
//! pane, and a watermark fires the windows whose end it passed by merging their panes (see
//! `panes.rs` for why that gives the generic path's results, order, timestamps and late and
//! dropped records). Where the panes' contents live is the store's business ([`PaneStore`]):
//! on the heap ([`PaneWindows`](super::panes::PaneWindows), the memory backend's form) or in
//! the state backend ([`BackendPanes`](super::backend_panes::BackendPanes), LMDB). This file
//! is what both share: a record's way into its pane, the run loop, what a watermark does, and
//! the fired marks of restored keys ([`FiredWindows`]), which stand in for the timers the path
//! does not keep.
//!
//! ## Performance
//!
//! This is the operator's hottest loop. [`WindowPath::process_run`] takes a run of records with
//! one check of the fired marks: while none are left from a restore, a record for the heap's
//! current pane ([`PaneStore::current_pane`]) is added in place, without locating its pane,
//! and only the others take [`WindowPath::process_record`]. The store is a type parameter, so
//! each form's loop is compiled on its own, with no dispatch per record.

use std::marker::PhantomData;

use super::WindowError;
use super::backend::{first, take_checked};
use super::fired::FiredWindows;
use super::functions::{Emitter, WindowFunctionCore};
use super::panes::{FRESH_STATE, PANES_STATE, PaneStore};
use super::path::{WindowBase, WindowPath};
use crate::api::Key;
use crate::operator::{Collector, OperatorContext, Record, RunContext, StateSnapshotContext};
use crate::state::{KeyedBackendConfig, KeyedStateSnapshot, StateError};
use crate::time::Watermark;

/// The pane path over the store `P` (see the module docs). `T`, `KS`, `F` and `Tr` are the
/// operator's types, for the [`WindowBase`] its methods receive.
pub(super) struct PanePath<K, T, KS, F, Tr, P> {
    pub(super) panes: P,
    /// Which windows of restored keys fired before the checkpoint.
    fired: FiredWindows<K>,
    _base: PhantomData<fn(T, KS, F, Tr)>,
}

/// Why [`PanePath::add`] did not add a record.
enum PaneAddError<T> {
    /// The record's time has no window that fits in `i64`: the record, and the assigner's error.
    Unplaceable(T, WindowError),
    /// The backend failed: the message to fail the task with.
    Failed(String),
}

impl<K, T, KS, F, Tr, P> PanePath<K, T, KS, F, Tr, P>
where
    K: Key,
    T: Clone,
    F: WindowFunctionCore<K, T>,
    P: PaneStore<K, F::Acc>,
{
    /// The path over `panes` (without any), with no fired marks.
    pub(super) fn new(panes: P) -> Self {
        Self {
            panes,
            fired: FiredWindows::new(),
            _base: PhantomData,
        }
    }

    /// Adds the record (of `key`, assigned at `time`) to its pane, and to what a restored key
    /// received since the restore; fires the pane's windows that fired already again. Returns
    /// the record back if no window accepted it.
    ///
    /// # Errors
    ///
    /// [`PaneAddError::Unplaceable`] with the record for a time whose windows do not fit in
    /// `i64`; [`PaneAddError::Failed`] with the backend's error.
    #[inline]
    fn add(
        &mut self,
        base: &mut WindowBase<K, T, KS, F, Tr>,
        emitter: &mut Emitter<'_, '_, F::Out>,
        key: K,
        record: Record<T>,
        time: i64,
    ) -> Result<Option<T>, PaneAddError<T>> {
        let function = &mut base.function;
        let panes = &mut self.panes;
        let watermark = emitter.watermark;
        let located = match panes.locate(time, &base.assigner, &mut base.assigned, watermark) {
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
            .add(index, function, key, record.value, record.timestamp)
            .map_err(failed)?;
        if let Some((key, value)) = restored {
            for window in panes.windows_of(index) {
                self.fired.rearm(&key, window.max_timestamp(), watermark);
            }
            panes
                .add_fresh(index, function, key, value, record.timestamp)
                .map_err(failed)?;
        }
        if let Some(key) = refire_key {
            panes
                .fire_late_record(index, function, &key, emitter, &self.fired)
                .map_err(failed)?;
        }
        Ok(None)
    }
}

impl<K, T, KS, F, Tr, P> WindowPath<K, T, KS, F, Tr> for PanePath<K, T, KS, F, Tr, P>
where
    K: Key,
    T: Clone + Send + 'static,
    KS: Fn(&T) -> K,
    F: WindowFunctionCore<K, T>,
    P: PaneStore<K, F::Acc>,
{
    /// No trigger runs on this path: nothing to report afterwards (a failing backend fails the
    /// task here).
    #[inline]
    fn process(
        &mut self,
        base: &mut WindowBase<K, T, KS, F, Tr>,
        record: Record<T>,
        time: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let key = (base.key_selector)(&record.value);
        let mut emitter = Emitter {
            out,
            watermark: base.watermark,
            processing_time: base.now_ms,
        };
        let added = self.add(base, &mut emitter, key, record, time);
        match added {
            Ok(None) => {}
            Ok(Some(rejected)) => base.reject(rejected, time, ctx),
            Err(PaneAddError::Unplaceable(value, error)) => {
                base.unplaceable(value, time, &error, ctx);
            }
            Err(PaneAddError::Failed(message)) => ctx.fail(message),
        }
    }

    /// Records that simply go to the current pane (see [`PaneStore::current_pane`]) are added
    /// in this loop, the others through [`process_record`](WindowPath::process_record). After a
    /// restore, records of keys whose windows fired before the checkpoint need `add`'s care
    /// (`fired`): the shortcut is for the usual case.
    #[inline(never)]
    fn process_run(
        &mut self,
        base: &mut WindowBase<K, T, KS, F, Tr>,
        records: Vec<Record<T>>,
        run: &mut RunContext<'_, '_, F::Out>,
    ) {
        if !self.fired.is_empty() {
            for record in records {
                run.process_with(record, |record, ctx, out| {
                    self.process_record(base, record, ctx, out);
                });
            }
            return;
        }
        base.now_ms = run.context().current_processing_time();
        let watermark = base.watermark;
        for record in records {
            // Event time is implied by the pane path.
            let pane = match record.timestamp {
                Some(time) => self.panes.current_pane(time, watermark),
                None => None,
            };
            if let Some(pane) = pane {
                let key = (base.key_selector)(&record.value);
                pane.add(&mut base.function, key, record.value, record.timestamp);
            } else {
                run.process_with(record, |record, ctx, out| {
                    self.process_record(base, record, ctx, out);
                });
            }
        }
    }

    fn on_watermark(
        &mut self,
        base: &mut WindowBase<K, T, KS, F, Tr>,
        watermark: Watermark,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let previous = base.observe_watermark(watermark, ctx);
        if base.watermark <= previous {
            return;
        }
        let mut emitter = base.emitter(out);
        if let Err(error) =
            self.panes
                .advance(previous, &mut base.function, &mut emitter, &self.fired)
        {
            ctx.fail(error.to_string());
        }
        self.fired.advance(base.watermark);
        if let Err(error) = self.panes.retain_fresh(&self.fired) {
            ctx.fail(error.to_string());
        }
    }

    fn snapshot(
        &mut self,
        base: &mut WindowBase<K, T, KS, F, Tr>,
        ctx: &mut StateSnapshotContext,
    ) -> Result<(), StateError> {
        // What the heap keeps is copied now and encoded by checkpoint storage, off the data
        // path (`deferred_keyed_state`); what the backend keeps is read from a view frozen now,
        // off the data path too (LMDB).
        let parts = self.panes.snapshot(
            &self.fired,
            base.watermark,
            base.max_parallelism,
            ctx.current_processing_time(),
        )?;
        for part in parts {
            ctx.add_keyed(part);
        }
        Ok(())
    }

    fn restore(
        &mut self,
        base: &mut WindowBase<K, T, KS, F, Tr>,
        _config: &KeyedBackendConfig,
        keyed: &mut KeyedStateSnapshot,
    ) -> Result<(), StateError> {
        let max_parallelism = base.max_parallelism;
        let contents =
            take_checked::<(K, i64), F::Acc, K>(keyed, PANES_STATE, max_parallelism, first)?;
        let fresh =
            take_checked::<(K, i64), F::Acc, K>(keyed, FRESH_STATE, max_parallelism, first)?;
        self.panes
            .restore(contents, fresh, &base.assigner, &mut base.assigned)?;
        self.fired
            .restore_marks(keyed, max_parallelism, base.watermark)
    }

    #[cfg(test)]
    fn entries_in_memory(&self) -> usize {
        self.panes.entries_in_memory()
    }
}
