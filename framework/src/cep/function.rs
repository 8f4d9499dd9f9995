//! What a pattern stream's matches go to: the user's [`PatternProcessFunction`] with its
//! [`PatternContext`], and the functions behind `select`, `flat_select` and
//! `select_with_timeout`. The operators (`operator.rs`, `dynamic.rs`) call these; the stream
//! API (`stream.rs`) builds them, so neither has to import the other for them.

use super::Match;
use crate::api::{Key, OutputTag};
use crate::operator::{Collector, FunctionError, KeyedContext, RuntimeContext};

/// What a pattern function can do besides emitting: side outputs, the key, the time.
pub struct PatternContext<'a, 'b, 'c, K> {
    keyed: &'a mut KeyedContext<'b, 'c, K>,
    timestamp: i64,
}

impl<K> std::fmt::Debug for PatternContext<'_, '_, '_, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatternContext")
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

impl<'a, 'b, 'c, K: Key> PatternContext<'a, 'b, 'c, K> {
    pub(crate) fn new(keyed: &'a mut KeyedContext<'b, 'c, K>, timestamp: i64) -> Self {
        Self { keyed, timestamp }
    }

    /// The match's timestamp: its last event's (for a timeout: when it timed out).
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The key the match belongs to.
    pub fn current_key(&self) -> &K {
        self.keyed.current_key()
    }

    /// The operator's current watermark.
    pub fn current_watermark(&self) -> i64 {
        self.keyed.current_watermark()
    }

    /// Emits `value` to the side output `tag`.
    pub fn output<U: 'static>(&mut self, tag: &OutputTag<U>, value: U) {
        self.keyed.output(tag, value);
    }
}

/// Turns matches into output (Flink's `PatternProcessFunction`, with its
/// `TimedOutPartialMatchHandler` as a method).
pub trait PatternProcessFunction<K, T, O>: Clone + Send + 'static {
    /// Called once per parallel instance before the first match.
    ///
    /// # Errors
    ///
    /// The job fails with the error.
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        Ok(())
    }

    /// Handles one match.
    fn process_match(
        &mut self,
        m: Match<T>,
        ctx: &mut PatternContext<'_, '_, '_, K>,
        out: &mut Collector<'_, O>,
    );

    /// Whether timed-out partial matches are wanted ([`Self::process_timed_out_match`] is
    /// only called if so; without it they are discarded without being copied out).
    fn handles_timeouts(&self) -> bool {
        false
    }

    /// Handles a partial match that `within` expired (send it to a side output).
    fn process_timed_out_match(&mut self, _m: Match<T>, _ctx: &mut PatternContext<'_, '_, '_, K>) {}

    /// Called once after the last match.
    ///
    /// # Errors
    ///
    /// The job fails with the error.
    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
}

/// `select`: one output per match.
#[derive(Clone)]
pub(super) struct Select<F>(pub(super) F);

impl<K, T, O, F> PatternProcessFunction<K, T, O> for Select<F>
where
    F: FnMut(Match<T>) -> O + Clone + Send + 'static,
{
    fn process_match(
        &mut self,
        m: Match<T>,
        _: &mut PatternContext<'_, '_, '_, K>,
        out: &mut Collector<'_, O>,
    ) {
        out.collect((self.0)(m));
    }
}

/// `flat_select`: any number of outputs per match.
#[derive(Clone)]
pub(super) struct FlatSelect<F>(pub(super) F);

impl<K, T, O, F> PatternProcessFunction<K, T, O> for FlatSelect<F>
where
    F: FnMut(Match<T>, &mut Collector<'_, O>) + Clone + Send + 'static,
{
    fn process_match(
        &mut self,
        m: Match<T>,
        _: &mut PatternContext<'_, '_, '_, K>,
        out: &mut Collector<'_, O>,
    ) {
        (self.0)(m, out);
    }
}

/// `select_with_timeout`: matches to the main output, timeouts to a side output.
pub(super) struct SelectWithTimeout<S, F, U> {
    pub(super) select: S,
    pub(super) timeout: F,
    pub(super) tag: OutputTag<U>,
}

impl<S: Clone, F: Clone, U> Clone for SelectWithTimeout<S, F, U> {
    fn clone(&self) -> Self {
        Self {
            select: self.select.clone(),
            timeout: self.timeout.clone(),
            tag: self.tag.clone(),
        }
    }
}

impl<K, T, O, U, S, F> PatternProcessFunction<K, T, O> for SelectWithTimeout<S, F, U>
where
    K: Key,
    U: Send + 'static,
    S: FnMut(Match<T>) -> O + Clone + Send + 'static,
    F: FnMut(Match<T>, i64) -> U + Clone + Send + 'static,
{
    fn process_match(
        &mut self,
        m: Match<T>,
        _: &mut PatternContext<'_, '_, '_, K>,
        out: &mut Collector<'_, O>,
    ) {
        out.collect((self.select)(m));
    }

    fn handles_timeouts(&self) -> bool {
        true
    }

    fn process_timed_out_match(&mut self, m: Match<T>, ctx: &mut PatternContext<'_, '_, '_, K>) {
        let value = (self.timeout)(m, ctx.timestamp());
        ctx.output(&self.tag, value);
    }
}
