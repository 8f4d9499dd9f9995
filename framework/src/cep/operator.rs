//! The CEP operator (Flink's `CepOperator`): buffers each key's events until the watermark
//! passes them, feeds them to the automaton in event-time order, and hands matches and
//! timed-out partial matches to a [`PatternProcessFunction`].
//!
//! ## Design
//!
//! Per key, one keyed-state value ([`KeyState`]) holds the events waiting for the watermark
//! (ordered by timestamp, then arrival), and each pattern's automaton state (partial matches
//! and shared buffer). Being one value of the keyed state store, it lives in either backend,
//! is checkpointed with it and moves with its key group on a rescale. Each key has at most one
//! event-time timer, at its earliest waiting event or partial-match timeout; when it fires, the
//! due events are matched in order, expired partial matches time out, and the timer moves on.
//! A key with nothing left is removed from the state (`within` cleans partial matches).
//!
//! ## Invariants
//!
//! - an event at or below the watermark on arrival is late: counted, sent to the late side
//!   output if there is one, never matched (Flink CEP drops it);
//! - a key's waiting events never exceed `max_pending_events` (the job fails, naming the
//!   limit, rather than dropping data), its partial matches never exceed
//!   `max_partial_matches` (the policy decides: drop the oldest and count, or fail).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::function::{PatternContext, PatternProcessFunction};
use super::nfa::{Limit, NfaOutput, NfaState};
use super::{CompiledPattern, OverflowPolicy};
use crate::api::{Data, Key, OutputTag};
use crate::operator::KeyedRuntime;
use crate::operator::{
    Collector, FunctionError, KeyedContext, OneInputOperator, OperatorContext, Record,
    RuntimeContext, StateInitContext, StateSnapshotContext,
};
use crate::state::{KeyedStateAccess, StateError};
use crate::time::Watermark;

/// The keyed state holding each key's [`KeyState`].
pub(crate) const CEP_STATE: &str = "_cep";

/// One key's CEP state: waiting events and one automaton state per pattern.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "T: Serialize", deserialize = "T: Deserialize<'de>"))]
pub(crate) struct KeyState<T> {
    /// Events waiting for the watermark, by `(timestamp, arrival number)`.
    pending: BTreeMap<(i64, u64), T>,
    /// Numbers arriving events (ties of equal timestamps keep arrival order).
    arrivals: u64,
    /// Numbers matched events, in matching order (the automaton's sequence numbers).
    matched: u64,
    /// The key's event-time timer, if one is registered.
    timer: Option<i64>,
    /// Per pattern (by id): its version and automaton state.
    pub(crate) nfas: Vec<(String, u64, NfaState<T>)>,
}

impl<T> Default for KeyState<T> {
    fn default() -> Self {
        Self {
            pending: BTreeMap::new(),
            arrivals: 0,
            matched: 0,
            timer: None,
            nfas: Vec::new(),
        }
    }
}

impl<T> KeyState<T> {
    fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.nfas.iter().all(|(_, _, nfa)| nfa.is_empty())
    }
}

/// A pattern the operator matches: an id (its name, or the id of a dynamic pattern), a
/// version (changed when a dynamic pattern is replaced) and the automaton.
pub(crate) struct ActivePattern<T> {
    pub(crate) id: String,
    pub(crate) version: u64,
    pub(crate) compiled: Arc<CompiledPattern<T>>,
}

impl<T> Clone for ActivePattern<T> {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            version: self.version,
            compiled: self.compiled.clone(),
        }
    }
}

/// The patterns in force over event time: from each epoch's start timestamp on, its patterns
/// match (a static pattern has one epoch from the beginning of time; dynamic updates add
/// epochs at their timestamps).
pub(crate) struct Epochs<T> {
    epochs: Vec<(i64, Vec<ActivePattern<T>>)>,
}

impl<T> Clone for Epochs<T> {
    fn clone(&self) -> Self {
        Self {
            epochs: self.epochs.clone(),
        }
    }
}

impl<T> Epochs<T> {
    /// The patterns of one epoch covering all of time.
    pub(crate) fn fixed(patterns: Vec<ActivePattern<T>>) -> Self {
        Self {
            epochs: vec![(i64::MIN, patterns)],
        }
    }

    /// The patterns in force at event time `ts`.
    pub(crate) fn active_at(&self, ts: i64) -> &[ActivePattern<T>] {
        let index = self.epochs.partition_point(|(from, _)| *from <= ts);
        match index.checked_sub(1) {
            Some(i) => &self.epochs[i].1,
            None => &[],
        }
    }

    /// The pattern `id` at `version`, in any epoch.
    pub(crate) fn find(&self, id: &str, version: u64) -> Option<&ActivePattern<T>> {
        self.epochs
            .iter()
            .rev()
            .flat_map(|(_, patterns)| patterns.iter())
            .find(|p| p.id == id && p.version == version)
    }

    /// Applies a change from event time `from` on: `change` edits the patterns of the epoch
    /// starting there (created from the one in force) and of every later epoch.
    pub(crate) fn change(&mut self, from: i64, mut change: impl FnMut(&mut Vec<ActivePattern<T>>)) {
        let index = self.epochs.partition_point(|(start, _)| *start < from);
        if self
            .epochs
            .get(index)
            .is_none_or(|(start, _)| *start != from)
        {
            let current = self.active_at(from).to_vec();
            self.epochs.insert(index, (from, current));
        }
        for (_, patterns) in &mut self.epochs[index..] {
            change(patterns);
        }
    }

    /// Forgets epochs that end at or before `watermark` (events up to it are matched).
    pub(crate) fn prune(&mut self, watermark: i64) {
        let keep_from = self.epochs.partition_point(|(from, _)| *from <= watermark);
        if keep_from > 1 {
            self.epochs.drain(..keep_from - 1);
        }
    }
}

/// The operator's limits and side outputs.
#[derive(Debug)]
pub(crate) struct CepSettings<T> {
    pub(crate) late_tag: Option<OutputTag<T>>,
    pub(crate) max_partial_matches: usize,
    pub(crate) policy: OverflowPolicy,
    pub(crate) max_pending_events: usize,
    /// Match in processing time (arrival order) instead of event time.
    pub(crate) processing_time: bool,
}

impl<T> Clone for CepSettings<T> {
    fn clone(&self) -> Self {
        Self {
            late_tag: self.late_tag.clone(),
            max_partial_matches: self.max_partial_matches,
            policy: self.policy,
            max_pending_events: self.max_pending_events,
            processing_time: self.processing_time,
        }
    }
}

/// The keyed CEP machinery, shared by the static and the dynamic operator.
pub(crate) struct CepCore<K, T> {
    pub(crate) runtime: KeyedRuntime<K>,
    pub(crate) settings: CepSettings<T>,
    pub(crate) watermark: i64,
}

impl<K: Key, T: Data> CepCore<K, T> {
    pub(crate) fn new(settings: CepSettings<T>) -> Self {
        Self {
            runtime: KeyedRuntime::new(),
            settings,
            watermark: i64::MIN,
        }
    }

    fn limit(&self) -> Limit {
        Limit {
            max_partials: self.settings.max_partial_matches,
            policy: self.settings.policy,
        }
    }

    /// Buffers one event of `key` (or counts it late).
    pub(crate) fn process(
        &mut self,
        key: &K,
        value: T,
        timestamp: Option<i64>,
        patterns: &Epochs<T>,
        ctx: &mut OperatorContext<'_>,
    ) {
        let Some(ts) = timestamp else {
            ctx.fail(
                "CEP matches in event time, but a record has no timestamp: assign timestamps \
                 and watermarks (assign_timestamps_and_watermarks) before CEP::pattern",
            );
            return;
        };
        if ts <= self.watermark {
            ctx.count_late_record();
            if let Some(tag) = &self.settings.late_tag {
                ctx.output(tag, value);
            }
            return;
        }
        let max_pending = self.settings.max_pending_events;
        let mut keyed = self.runtime.element_context(key, Some(ts), ctx);
        let (old, new) = match buffer_event(&mut keyed, key, ts, value, max_pending, patterns) {
            Ok(timers) => timers,
            Err(message) => {
                keyed.fail_task(message);
                return;
            }
        };
        if old != new {
            if let Some(old) = old {
                keyed.delete_event_time_timer(old);
            }
            if let Some(new) = new {
                keyed.register_event_time_timer(new);
            }
        }
    }

    /// Matches one event of `key` now, in processing time (no buffering, no lateness).
    pub(crate) fn process_now<O, F>(
        &mut self,
        key: &K,
        value: T,
        patterns: &Epochs<T>,
        function: &mut F,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, O>,
    ) where
        F: PatternProcessFunction<K, T, O>,
    {
        let now = ctx.current_processing_time();
        let limit = self.limit();
        let want_timeouts = function.handles_timeouts();
        let mut keyed = self.runtime.element_context(key, Some(now), ctx);
        match match_now(
            &mut keyed,
            now,
            value,
            patterns,
            limit,
            want_timeouts,
            function,
            out,
        ) {
            Ok(dropped) => {
                for _ in 0..dropped {
                    ctx.count_dropped_record();
                }
            }
            Err(message) => ctx.fail(message),
        }
    }

    /// Processing time advanced: times out the partial matches of the keys whose timer is due.
    pub(crate) fn on_processing_time<O, F>(
        &mut self,
        now_ms: i64,
        patterns: &Epochs<T>,
        function: &mut F,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, O>,
    ) where
        F: PatternProcessFunction<K, T, O>,
    {
        let want_timeouts = function.handles_timeouts();
        self.runtime
            .on_processing_time(now_ms, ctx, out, |ts, keyed, out| {
                if let Err(message) = expire_now(keyed, ts, patterns, want_timeouts, function, out)
                {
                    keyed.fail_task(message);
                }
            });
    }

    /// Advances the watermark: matches every key's due events.
    pub(crate) fn on_watermark<O, F>(
        &mut self,
        watermark: Watermark,
        patterns: &Epochs<T>,
        function: &mut F,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, O>,
    ) where
        F: PatternProcessFunction<K, T, O>,
    {
        self.watermark = self.watermark.max(watermark.timestamp);
        let limit = self.limit();
        let mut dropped = 0u64;
        let want_timeouts = function.handles_timeouts();
        self.runtime
            .on_watermark(watermark, ctx, out, |ts, keyed, out| {
                match fire(keyed, ts, patterns, limit, want_timeouts, function, out) {
                    Ok(n) => dropped += n,
                    Err(message) => keyed.fail_task(message),
                }
            });
        for _ in 0..dropped {
            ctx.count_dropped_record();
        }
    }
}

/// Adds an event to its key's waiting events; returns the key's timer before and after.
fn buffer_event<K: Key, T: Data>(
    keyed: &mut KeyedContext<'_, '_, K>,
    key: &K,
    ts: i64,
    value: T,
    max_pending: usize,
    patterns: &Epochs<T>,
) -> Result<(Option<i64>, Option<i64>), String> {
    let mut table = keyed
        .state_store()
        .value_table::<KeyState<T>>(CEP_STATE)
        .map_err(|e| format!("CEP state: {e}"))?;
    let state = table
        .get_or_insert_with(key.clone(), KeyState::default)
        .map_err(|e| format!("CEP state: {e}"))?;
    if state.pending.len() >= max_pending {
        return Err(format!(
            "CEP: a key has more than {max_pending} events waiting for the watermark \
             (max_pending_events_per_key); is the watermark advancing?"
        ));
    }
    state.pending.insert((ts, state.arrivals), value);
    state.arrivals += 1;
    let old = state.timer;
    state.timer = next_timer(state, patterns);
    Ok((old, state.timer))
}

/// The key's next timer: its earliest waiting event or partial-match timeout.
fn next_timer<T>(state: &KeyState<T>, patterns: &Epochs<T>) -> Option<i64> {
    let first_event = state.pending.keys().next().map(|(ts, _)| *ts);
    let timeouts = state.nfas.iter().filter_map(|(id, version, nfa)| {
        let within = patterns
            .find(id, *version)
            .and_then(|p| p.compiled.within_ms());
        nfa.next_timeout(within)
    });
    first_event.into_iter().chain(timeouts).min()
}

/// The automaton state of `pattern` in `state`, created (or reset, for a new version) on use.
fn nfa_for<'s, T>(state: &'s mut KeyState<T>, pattern: &ActivePattern<T>) -> &'s mut NfaState<T> {
    let index = match state.nfas.iter().position(|(id, _, _)| *id == pattern.id) {
        Some(i) => {
            if state.nfas[i].1 != pattern.version {
                // A replaced pattern starts over: the old version's partial matches do not
                // fit the new stages.
                state.nfas[i] = (pattern.id.clone(), pattern.version, NfaState::default());
            }
            i
        }
        None => {
            state
                .nfas
                .push((pattern.id.clone(), pattern.version, NfaState::default()));
            state.nfas.len() - 1
        }
    };
    &mut state.nfas[index].2
}

/// A key's timer fired: matches its due events. Returns the partial matches dropped.
fn fire<K, T, O, F>(
    keyed: &mut KeyedContext<'_, '_, K>,
    ts: i64,
    patterns: &Epochs<T>,
    limit: Limit,
    want_timeouts: bool,
    function: &mut F,
    out: &mut Collector<'_, O>,
) -> Result<u64, String>
where
    K: Key,
    T: Data,
    F: PatternProcessFunction<K, T, O>,
{
    let key = keyed.current_key().clone();
    let watermark = keyed.current_watermark();
    let state_error = |e: StateError| format!("CEP state: {e}");
    let mut state = {
        let mut table = keyed
            .state_store()
            .value_table::<KeyState<T>>(CEP_STATE)
            .map_err(state_error)?;
        match table.get_mut(&key).map_err(state_error)? {
            // A timer that was moved or whose key was cleaned: nothing to do.
            Some(state) if state.timer == Some(ts) => std::mem::take(state),
            _ => return Ok(0),
        }
    };
    state.timer = None;
    let mut dropped = 0;
    while let Some(entry) = state.pending.first_entry() {
        if entry.key().0 > watermark {
            break;
        }
        let ((event_ts, _), event) = entry.remove_entry();
        let seq = state.matched;
        state.matched += 1;
        let active = patterns.active_at(event_ts);
        // Patterns removed by this event's time are forgotten with their partial matches.
        state
            .nfas
            .retain(|(id, _, _)| active.iter().any(|p| &p.id == id));
        for pattern in active {
            let mut output = NfaOutput::new(want_timeouts);
            let nfa = nfa_for(&mut state, pattern);
            pattern
                .compiled
                .process(nfa, event.clone(), seq, event_ts, limit, &mut output)
                .map_err(|e| e.to_string())?;
            dropped += output.dropped;
            emit(keyed, output, event_ts, function, out);
        }
    }
    let mut nfas = std::mem::take(&mut state.nfas);
    for (id, version, nfa) in &mut nfas {
        if let Some(pattern) = patterns.find(id, *version) {
            let mut output = NfaOutput::new(want_timeouts);
            pattern.compiled.advance_time(nfa, watermark, &mut output);
            emit(keyed, output, watermark, function, out);
        } else {
            // Its version is gone from every epoch: nothing can match it any more.
            *nfa = NfaState::default();
        }
    }
    nfas.retain(|(_, _, nfa)| !nfa.is_empty());
    state.nfas = nfas;
    let mut table = keyed
        .state_store()
        .value_table::<KeyState<T>>(CEP_STATE)
        .map_err(state_error)?;
    if state.is_empty() {
        table.remove(&key).map_err(state_error)?;
        return Ok(dropped);
    }
    let next = next_timer(&state, patterns);
    state.timer = next;
    table.insert(key, state).map_err(state_error)?;
    if let Some(next) = next {
        keyed.register_event_time_timer(next);
    }
    Ok(dropped)
}

/// Processing time: matches `event` of the keyed context's key at `now`, then moves the key's
/// processing-time timer to its earliest partial-match timeout. Returns the partial matches
/// dropped.
#[allow(clippy::too_many_arguments)]
fn match_now<K, T, O, F>(
    keyed: &mut KeyedContext<'_, '_, K>,
    now: i64,
    event: T,
    patterns: &Epochs<T>,
    limit: Limit,
    want_timeouts: bool,
    function: &mut F,
    out: &mut Collector<'_, O>,
) -> Result<u64, String>
where
    K: Key,
    T: Data,
    F: PatternProcessFunction<K, T, O>,
{
    let key = keyed.current_key().clone();
    let mut state = take_state(keyed, &key)?.unwrap_or_default();
    let seq = state.matched;
    state.matched += 1;
    let mut dropped = 0;
    for pattern in patterns.active_at(now) {
        let mut output = NfaOutput::new(want_timeouts);
        let nfa = nfa_for(&mut state, pattern);
        pattern
            .compiled
            .process(nfa, event.clone(), seq, now, limit, &mut output)
            .map_err(|e| e.to_string())?;
        dropped += output.dropped;
        emit(keyed, output, now, function, out);
    }
    store_processing_state(keyed, key, state, patterns)?;
    Ok(dropped)
}

/// Processing time: a key's timer fired at `now`; times out its expired partial matches.
fn expire_now<K, T, O, F>(
    keyed: &mut KeyedContext<'_, '_, K>,
    now: i64,
    patterns: &Epochs<T>,
    want_timeouts: bool,
    function: &mut F,
    out: &mut Collector<'_, O>,
) -> Result<(), String>
where
    K: Key,
    T: Data,
    F: PatternProcessFunction<K, T, O>,
{
    let key = keyed.current_key().clone();
    let Some(mut state) = take_state(keyed, &key)? else {
        return Ok(());
    };
    if state.timer != Some(now) {
        // A timer that was moved: put the state back untouched.
        return put_state(keyed, key, state);
    }
    state.timer = None;
    for (id, version, nfa) in &mut state.nfas {
        if let Some(pattern) = patterns.find(id, *version) {
            let mut output = NfaOutput::new(want_timeouts);
            pattern.compiled.advance_time(nfa, now, &mut output);
            emit(keyed, output, now, function, out);
        }
    }
    store_processing_state(keyed, key, state, patterns)
}

/// Takes the key's CEP state, if it has one (leaving an empty one until it is stored back).
fn take_state<K: Key, T: Data>(
    keyed: &mut KeyedContext<'_, '_, K>,
    key: &K,
) -> Result<Option<KeyState<T>>, String> {
    let state_error = |e: StateError| format!("CEP state: {e}");
    let mut table = keyed
        .state_store()
        .value_table::<KeyState<T>>(CEP_STATE)
        .map_err(state_error)?;
    Ok(table.get_mut(key).map_err(state_error)?.map(std::mem::take))
}

/// Stores the key's CEP state.
fn put_state<K: Key, T: Data>(
    keyed: &mut KeyedContext<'_, '_, K>,
    key: K,
    state: KeyState<T>,
) -> Result<(), String> {
    let state_error = |e: StateError| format!("CEP state: {e}");
    let mut table = keyed
        .state_store()
        .value_table::<KeyState<T>>(CEP_STATE)
        .map_err(state_error)?;
    table.insert(key, state).map_err(state_error)
}

/// Processing time: drops finished automata, stores the key's state (or forgets the key) and
/// moves its timer to the earliest partial-match timeout.
fn store_processing_state<K: Key, T: Data>(
    keyed: &mut KeyedContext<'_, '_, K>,
    key: K,
    mut state: KeyState<T>,
    patterns: &Epochs<T>,
) -> Result<(), String> {
    state.nfas.retain(|(_, _, nfa)| !nfa.is_empty());
    let old = state.timer;
    let new = next_timer(&state, patterns);
    if old != new {
        if let Some(old) = old {
            keyed.delete_processing_time_timer(old);
        }
        if let Some(new) = new {
            keyed.register_processing_time_timer(new);
        }
    }
    state.timer = new;
    if state.is_empty() {
        let state_error = |e: StateError| format!("CEP state: {e}");
        let mut table = keyed
            .state_store()
            .value_table::<KeyState<T>>(CEP_STATE)
            .map_err(state_error)?;
        return table.remove(&key).map_err(state_error);
    }
    put_state(keyed, key, state)
}

/// Hands an event's matches and timeouts to the function.
fn emit<K, T, O, F>(
    keyed: &mut KeyedContext<'_, '_, K>,
    output: NfaOutput<T>,
    event_ts: i64,
    function: &mut F,
    out: &mut Collector<'_, O>,
) where
    K: Key,
    T: Data,
    F: PatternProcessFunction<K, T, O>,
{
    for (timed_out, at) in output.timeouts {
        out.set_timestamp(Some(at));
        function.process_timed_out_match(timed_out, &mut PatternContext::new(keyed, at));
    }
    out.set_timestamp(Some(event_ts));
    for m in output.matches {
        function.process_match(m, &mut PatternContext::new(keyed, event_ts), out);
    }
}

/// Matches one static pattern over a keyed stream.
pub(crate) struct CepOperator<KS, K, T, O, F> {
    key_selector: KS,
    patterns: Epochs<T>,
    function: F,
    core: CepCore<K, T>,
    _out: std::marker::PhantomData<fn() -> O>,
}

impl<KS: Clone, K: Key, T: Data, O, F: Clone> Clone for CepOperator<KS, K, T, O, F> {
    fn clone(&self) -> Self {
        Self::new(
            self.key_selector.clone(),
            self.patterns.clone(),
            self.function.clone(),
            self.core.settings.clone(),
        )
    }
}

impl<KS, K: Key, T: Data, O, F> CepOperator<KS, K, T, O, F> {
    pub(crate) fn new(
        key_selector: KS,
        patterns: Epochs<T>,
        function: F,
        settings: CepSettings<T>,
    ) -> Self {
        Self {
            key_selector,
            patterns,
            function,
            core: CepCore::new(settings),
            _out: std::marker::PhantomData,
        }
    }
}

impl<KS, K, T, O, F> OneInputOperator<T> for CepOperator<KS, K, T, O, F>
where
    K: Key,
    T: Data,
    O: Send + 'static,
    F: PatternProcessFunction<K, T, O>,
    KS: Fn(&T) -> K + Clone + Send + 'static,
{
    type Out = O;

    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        self.core.runtime.initialize(ctx)
    }

    fn snapshot_state(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        self.core.runtime.snapshot(ctx)
    }

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.function.open(ctx)
    }

    fn process(
        &mut self,
        record: Record<T>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, O>,
    ) {
        let key = (self.key_selector)(&record.value);
        if self.core.settings.processing_time {
            self.core.process_now(
                &key,
                record.value,
                &self.patterns,
                &mut self.function,
                ctx,
                out,
            );
        } else {
            self.core
                .process(&key, record.value, record.timestamp, &self.patterns, ctx);
        }
    }

    fn on_watermark(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, O>,
    ) {
        if self.core.settings.processing_time {
            // Matching does not wait for watermarks; pass them on.
            self.core.watermark = self.core.watermark.max(watermark.timestamp);
            self.core
                .runtime
                .on_watermark(watermark, ctx, out, |_, _, _| {});
        } else {
            self.core
                .on_watermark(watermark, &self.patterns, &mut self.function, ctx, out);
        }
    }

    fn on_processing_time(
        &mut self,
        now_ms: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, O>,
    ) {
        self.core
            .on_processing_time(now_ms, &self.patterns, &mut self.function, ctx, out);
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.function.close()
    }
}
