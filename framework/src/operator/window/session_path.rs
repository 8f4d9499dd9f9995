//! The session path of the window operator: session windows with the default event-time
//! trigger.
//!
//! The path keeps no timers and no merging sets: each key's in-flight sessions hold their
//! contents and merge as [`MergingWindowSet`](super::MergingWindowSet) would merge them, and a
//! queue with one entry per key tells a watermark which keys have sessions due (see
//! `sessions.rs` for why that gives the generic path's results). Where the sessions live is the
//! store's business ([`SessionStore`]): a map on the heap (the memory backend's form) or a
//! store in the state backend (LMDB). This file is what both share: a record's way into its
//! key's sessions, what a watermark does, and the fired marks of restored keys
//! ([`FiredWindows`]), which stand in for the timers the path does not keep. The store is a type
//! parameter: each form's per-record code is compiled on its own, with no dispatch per record.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use super::backend::{first, take_checked};
use super::fired::FiredWindows;
use super::functions::{Emitter, WindowFunctionCore};
use super::path::{WindowBase, WindowPath};
use super::sessions::{SESSIONS_STATE, SessionStore, SessionTable, SessionWindows};
use super::{TimeWindow, WindowAssign};
use crate::api::Key;
use crate::operator::{Collector, OperatorContext, Record, StateSnapshotContext};
use crate::state::{KeyedBackendConfig, KeyedStateSnapshot, StateError};
use crate::time::Watermark;

/// The session path over the store `S` (see the module docs). `T`, `KS`, `F` and `Tr` are the
/// operator's types, for the [`WindowBase`] its methods receive.
pub(super) struct SessionPath<K, T, KS, F: WindowFunctionCore<K, T>, Tr, S> {
    /// The sessions' queue and working memory.
    pub(super) sessions: SessionWindows<K, F::Acc>,
    /// The sessions of every key.
    pub(super) store: S,
    /// Which sessions of restored keys fired before the checkpoint.
    fired: FiredWindows<K>,
    _base: PhantomData<fn(T, KS, Tr)>,
}

impl<K, T, KS, F, Tr, S> SessionPath<K, T, KS, F, Tr, S>
where
    K: Key,
    F: WindowFunctionCore<K, T>,
{
    /// The path over `sessions` and `store` (without any), with no fired marks.
    pub(super) fn new(sessions: SessionWindows<K, F::Acc>, store: S) -> Self {
        Self {
            sessions,
            store,
            fired: FiredWindows::new(),
            _base: PhantomData,
        }
    }
}

impl<K, T, KS, F, Tr, S> WindowPath<K, T, KS, F, Tr> for SessionPath<K, T, KS, F, Tr, S>
where
    K: Key,
    T: Clone + Send + 'static,
    KS: Fn(&T) -> K,
    F: WindowFunctionCore<K, T>,
    S: SessionStore<K, F::Acc>,
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
        let Some(window) = self.sessions.window_of(time) else {
            // The window does not fit in i64: the assigner says why.
            let mut windows = std::mem::take(&mut base.assigned);
            windows.clear();
            let assigned = base.assigner.assign(time, &mut windows);
            base.assigned = windows;
            match assigned {
                Err(error) => base.unplaceable(record.value, time, &error, ctx),
                Ok(()) => ctx.fail(format!(
                    "{}: the session window of time {time} ms does not fit in an i64, but the \
                     assigner placed it",
                    base.task_name
                )),
            }
            return;
        };
        let key = (base.key_selector)(&record.value);
        let mut emitter = Emitter {
            out,
            watermark: base.watermark,
            processing_time: base.now_ms,
        };
        let sessions = &mut self.sessions;
        let fired = &mut self.fired;
        let function = &mut base.function;
        let added = self.store.table().and_then(|mut table| {
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
        });
        match added {
            Ok(None) => {}
            Ok(Some(rejected)) => base.reject(rejected, time, ctx),
            Err(error) => ctx.fail(error.to_string()),
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
        let sessions = &mut self.sessions;
        let fired = &self.fired;
        let function = &mut base.function;
        let advanced = self.store.table().and_then(|mut table| {
            sessions.advance(&mut table, previous, function, &mut emitter, fired)
        });
        if let Err(error) = advanced {
            ctx.fail(error.to_string());
        }
        self.fired.advance(base.watermark);
    }

    fn snapshot(
        &mut self,
        base: &mut WindowBase<K, T, KS, F, Tr>,
        ctx: &mut StateSnapshotContext,
    ) -> Result<(), StateError> {
        let parts = self.store.snapshot(
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
        let mut table = self.store.table()?;
        for (key, windows) in take_sessions::<K, F::Acc>(keyed, max_parallelism)? {
            self.sessions
                .restore_key(&mut table, key, windows, base.watermark)?;
        }
        drop(table);
        self.fired
            .restore_marks(keyed, max_parallelism, base.watermark)
    }

    #[cfg(test)]
    fn entries_in_memory(&self) -> usize {
        self.store.entries_in_memory(&self.sessions)
    }
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
    K: Key,
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
