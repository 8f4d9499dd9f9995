//! Complex event processing (Flink CEP): patterns over keyed event streams, matched in event
//! time by an automaton whose state lives in keyed state.
//!
//! - [`Pattern`] describes what to look for, in Flink's vocabulary: named stages with
//!   conditions (iterative ones see the events matched so far), contiguities (`next`,
//!   `followed_by`, `followed_by_any`, `not_next`, `not_followed_by`), quantifiers, `within`,
//!   groups and an [`AfterMatchSkipStrategy`]. Its module documentation states the semantics.
//! - [`CEP::pattern`] applies it to a [`KeyedStream`](crate::KeyedStream) and gives a
//!   [`PatternStream`]: `select`, `flat_select` or `process` the matches; timed-out partial
//!   matches and late events go to side outputs.
//! - [`CEP::pattern_unkeyed`] matches over a stream that is not keyed (one sequence, one
//!   subtask); [`PatternStream::in_processing_time`] matches in arrival order with the
//!   subtask's processing time as timestamps and `within` on processing-time timers.
//! - [`CEP::dynamic_patterns`] matches patterns that arrive on a broadcast stream as
//!   [`PatternDescription`]s: added, replaced and removed while the job runs.
//!
//! ## Design
//!
//! The automaton ([`CompiledPattern`], `nfa.rs`) is a pure core over one key's state: the
//! partial matches and a shared buffer holding each event once however many partial matches
//! use it (`buffer.rs`). The operator (`operator.rs`) keeps, per key, that state plus the
//! events waiting for the watermark in one keyed-state value, so both state backends hold it,
//! checkpoints store it, and a restore at another parallelism moves it with its key group.
//! One event-time timer per key (at its earliest waiting event or partial-match timeout) drives
//! it. A per-key limit bounds partial matches ([`OverflowPolicy`]); another bounds waiting
//! events.
//!
//! A pattern ending in `not_followed_by` (with `within`, as Flink requires) keeps each complete
//! match as a *stop* partial match sharing the nodes of the one that completed it: an event the
//! negation forbids ends it, and when `within` passes (`advance_time`, driven by the same
//! per-key timer) it is reported as a match, with the skip strategy applied then. In processing
//! time the operator matches each event on arrival and the per-key timer is a processing-time
//! one; nothing waits for watermarks.

mod buffer;
mod dynamic;
mod function;
mod nfa;
mod operator;
mod pattern;
#[cfg(test)]
mod reference;
mod stream;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use dynamic::{
    CmpOp, ConditionExpr, FieldAccess, PatternDescription, PatternUpdate, QuantifierDescription,
    StageDescription, StageLink, Value,
};
pub use function::{PatternContext, PatternProcessFunction};
pub use nfa::CompiledPattern;
pub use pattern::{AfterMatchSkipStrategy, Condition, Context, Contiguity, Pattern};
pub use stream::{
    CEP, DynamicPatternStream, MAX_PARTIAL_MATCHES_DEFAULT, MAX_PENDING_EVENTS_DEFAULT,
    PatternStream,
};

/// What to do when a key has more partial matches than its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum OverflowPolicy {
    /// Drop the oldest partial matches (counted as dropped records in the job result).
    #[default]
    DropOldest,
    /// Fail the job, naming the pattern and the limit.
    Fail,
}

/// A CEP error: a malformed pattern or description, or a limit the job reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CepError {
    /// The pattern cannot be compiled.
    #[error("malformed pattern '{pattern}': {message}")]
    Pattern {
        /// The pattern's name.
        pattern: String,
        /// What is wrong, naming the stage.
        message: String,
    },
    /// A key has more partial matches than allowed and the policy is to fail.
    #[error("pattern '{pattern}': a key has more than {limit} partial matches")]
    TooManyPartialMatches {
        /// The pattern's name.
        pattern: String,
        /// The limit.
        limit: usize,
    },
}

/// One event of a match, with the stage that took it.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedEvent<T> {
    /// The name of the stage that took the event.
    pub stage: Arc<str>,
    /// The event's timestamp.
    pub timestamp: i64,
    /// The event.
    pub event: T,
    /// The index of the stage among the pattern's positive stages as written (every
    /// repetition of a group shares it).
    pub(crate) position: usize,
}

/// A match (or a timed-out partial match): its events in order, each with its stage (Flink's
/// `Map<String, List<T>>`, kept in match order).
#[derive(Debug, Clone, PartialEq)]
pub struct Match<T> {
    pattern: Arc<str>,
    events: Vec<MatchedEvent<T>>,
}

impl<T> Match<T> {
    /// The name of the pattern that matched.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The events taken by the stages called `name`, in order.
    pub fn get(&self, name: &str) -> Vec<&T> {
        self.events
            .iter()
            .filter(|e| &*e.stage == name)
            .map(|e| &e.event)
            .collect()
    }

    /// The first event taken by the stages called `name`.
    pub fn first(&self, name: &str) -> Option<&T> {
        self.events
            .iter()
            .find(|e| &*e.stage == name)
            .map(|e| &e.event)
    }

    /// Every event of the match, in order.
    pub fn events(&self) -> &[MatchedEvent<T>] {
        &self.events
    }

    /// The names of the stages that took events, in match order, each once.
    pub fn stage_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for e in &self.events {
            if names.last() != Some(&&*e.stage) && !names.contains(&&*e.stage) {
                names.push(&e.stage);
            }
        }
        names
    }

    /// The first event's timestamp.
    pub fn start_timestamp(&self) -> Option<i64> {
        self.events.first().map(|e| e.timestamp)
    }

    /// The last event's timestamp.
    pub fn end_timestamp(&self) -> Option<i64> {
        self.events.last().map(|e| e.timestamp)
    }

    /// The match's events without their stages.
    pub fn into_events(self) -> Vec<T> {
        self.events.into_iter().map(|e| e.event).collect()
    }
}
