//! The automaton that matches a compiled pattern over one key's events (Flink's `NFA`), and the
//! per-key state it works on.
//!
//! ## Design
//!
//! A partial match is the label of its last event (the stage that took it and how many events
//! that stage took) plus what the events skipped since allow: a bit per *waiting position*
//! (the stage's own loop, or a later stage reachable by skipping optional ones) saying whether
//! the skipped events so far can be absorbed by the positions up to it, each by its own
//! contiguity. This is Flink's set of computation states folded into one per partial match:
//! the NFA explores every path through its proceed edges, we keep the union of them, so every
//! match is found exactly once (Flink's versioned shared buffer exists to tell the paths
//! apart; ours need not). An event then either is taken by an enterable position (a new node
//! in the shared buffer) or is skipped (the bits shrink); a partial match with no bit left is
//! dead.
//!
//! Per event: time out what `within` expired, step every partial match, start new ones, emit
//! the matches completed by this event in order (earliest start first, then by their events)
//! applying the after-match skip strategy, and enforce the per-key limit on partial matches.
//!
//! ## Invariants
//!
//! - `partials` is sorted by start (event sequence number): new partial matches start at the
//!   newest event and inherit their parent's start, so the oldest are at the front;
//! - every partial match holds one reference on its node in the shared buffer; nothing else
//!   does, besides the nodes' own links.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::buffer::{NO_NODE, SharedBuffer};
use super::pattern::{AfterMatchSkipStrategy, Condition, Context, Contiguity, PartialView};
use super::pattern::{Pattern, StageKind};
use super::{CepError, Match, MatchedEvent, OverflowPolicy};

/// Most positive stages a pattern may have (one bit each in a partial match).
pub(crate) const STAGES_MAX: usize = 63;

/// No negation cut the partial match's targets.
const NO_THRESHOLD: u8 = u8::MAX;

/// A positive stage, compiled.
struct CStage<T> {
    name: Arc<str>,
    condition: Option<Condition<T>>,
    until: Option<Condition<T>>,
    min: u32,
    max: Option<u32>,
    greedy: bool,
    inner: Contiguity,
    outer: Contiguity,
}

/// A negative stage between positive stages `after` and `after + 1`.
struct Negation<T> {
    after: u8,
    not_next: bool,
    condition: Option<Condition<T>>,
}

/// The skip strategy with the stage names resolved.
#[derive(Debug, Clone)]
enum Skip {
    None,
    ToNext,
    PastLast,
    ToFirst(Arc<str>),
    ToLast(Arc<str>),
}

/// A checked pattern, ready to match: share it (`Arc`) between keys and subtasks.
pub struct CompiledPattern<T> {
    name: Arc<str>,
    stages: Vec<CStage<T>>,
    negations: Vec<Negation<T>>,
    within_ms: Option<i64>,
    skip: Skip,
    /// A `not_followed_by` ending the pattern: completed matches wait for `within` to pass.
    final_negation: Option<Option<Condition<T>>>,
    /// Stages a match can begin with (every stage before them optional).
    start_mask: u64,
    /// Per stage: the later stages reachable by skipping optional ones.
    reach_after: Vec<u64>,
    /// Per stage: whether every later stage is optional (a match can end here).
    tail_optional: Vec<bool>,
}

impl<T> std::fmt::Debug for CompiledPattern<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPattern")
            .field("name", &self.name)
            .field(
                "stages",
                &self.stages.iter().map(|s| &*s.name).collect::<Vec<_>>(),
            )
            .field("within_ms", &self.within_ms)
            .field("skip", &self.skip)
            .finish_non_exhaustive()
    }
}

/// One partial match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Partial {
    node: u32,
    stage: u8,
    count: u32,
    start_ts: i64,
    start_seq: u64,
    /// Waiting positions still open: bit `stage` is the stage's loop, higher bits later stages.
    alive: u64,
    /// Stages above this one were cut off by a negation (until the next taken event).
    threshold: u8,
    /// No event was skipped since the last taken one.
    gap_empty: bool,
    /// This partial match was already reported as a match (so it does not time out).
    completed: bool,
    /// A complete match waiting for its time bound to pass without an event satisfying the
    /// final `not_followed_by` (reported as a match when it times out).
    #[serde(default)]
    stop: bool,
}

/// The automaton's state for one key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "T: Serialize", deserialize = "T: Deserialize<'de>"))]
pub(crate) struct NfaState<T> {
    pub(crate) partials: Vec<Partial>,
    pub(crate) buffer: SharedBuffer<T>,
}

impl<T> Default for NfaState<T> {
    fn default() -> Self {
        Self {
            partials: Vec::new(),
            buffer: SharedBuffer::default(),
        }
    }
}

impl<T> NfaState<T> {
    /// Whether nothing is pending: the key's state can be dropped.
    pub(crate) fn is_empty(&self) -> bool {
        self.partials.is_empty()
    }

    /// The earliest event time at which a partial match times out.
    pub(crate) fn next_timeout(&self, within_ms: Option<i64>) -> Option<i64> {
        let within = within_ms?;
        self.partials
            .iter()
            .map(|p| p.start_ts.saturating_add(within))
            .min()
    }

    /// Live partial matches.
    #[cfg(test)]
    pub(crate) fn partial_count(&self) -> usize {
        self.partials.len()
    }
}

/// What processing produced.
#[derive(Debug)]
pub(crate) struct NfaOutput<T> {
    /// Completed matches, in emission order.
    pub(crate) matches: Vec<Match<T>>,
    /// Timed-out partial matches with the time they timed out at.
    pub(crate) timeouts: Vec<(Match<T>, i64)>,
    /// Partial matches dropped by the per-key limit.
    pub(crate) dropped: u64,
    /// Whether timed-out partial matches are wanted (else they are only discarded).
    pub(crate) want_timeouts: bool,
}

impl<T> NfaOutput<T> {
    pub(crate) fn new(want_timeouts: bool) -> Self {
        Self {
            matches: Vec::new(),
            timeouts: Vec::new(),
            dropped: 0,
            want_timeouts,
        }
    }
}

/// The per-key limit on partial matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit {
    pub(crate) max_partials: usize,
    pub(crate) policy: OverflowPolicy,
}

/// The partial match behind an iterative condition's context.
struct BufferView<'a, T> {
    buffer: &'a SharedBuffer<T>,
    node: u32,
    names: &'a [CStage<T>],
}

impl<T> PartialView<T> for BufferView<'_, T> {
    fn for_each(&self, name: &str, f: &mut dyn FnMut(&T)) {
        if self.node == NO_NODE {
            return;
        }
        let mut found: Vec<&T> = Vec::new();
        for (node, slot) in self.buffer.chain(self.node) {
            if &*self.names[node.stage as usize].name == name {
                found.push(&slot.event);
            }
        }
        for event in found.into_iter().rev() {
            f(event);
        }
    }
}

/// What an event does to one partial match (decided before the buffer changes).
enum Step {
    /// Take the event into `stage`, after `prev` (a node, or none for a new match).
    Take {
        prev: u32,
        stage: u8,
        count: u32,
        start_ts: i64,
        start_seq: u64,
    },
    /// Keep the partial match, skipping the event.
    Keep(Partial),
}

/// Conditions of one stage for one event and partial match, each evaluated at most once.
struct Memo {
    known: u64,
    value: u64,
}

impl Memo {
    fn new() -> Self {
        Self { known: 0, value: 0 }
    }
}

impl<T> CompiledPattern<T> {
    /// The pattern's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The time bound, if any.
    pub fn within_ms(&self) -> Option<i64> {
        self.within_ms
    }
}

impl<T: Clone + 'static> CompiledPattern<T> {
    pub(crate) fn compile(pattern: &Pattern<T>) -> Result<Self, CepError> {
        pattern.validate()?;
        let mut stages: Vec<CStage<T>> = Vec::new();
        let mut optional: Vec<bool> = Vec::new();
        let mut negations = Vec::new();
        let mut final_negation = None;
        for (i, stage) in pattern.stages.iter().enumerate() {
            match stage.kind {
                // `validate` allows a final negation only as `not_followed_by` with `within`.
                StageKind::NotFollowedBy if i + 1 == pattern.stages.len() => {
                    final_negation = Some(stage.condition.clone());
                }
                StageKind::Positive => {
                    optional.push(stage.optional);
                    stages.push(CStage {
                        name: stage.name.as_str().into(),
                        condition: stage.condition.clone(),
                        until: stage.until.clone(),
                        min: stage.min,
                        max: stage.max,
                        greedy: stage.greedy,
                        inner: stage.inner,
                        outer: stage.outer,
                    });
                }
                StageKind::NotNext | StageKind::NotFollowedBy => {
                    // `validate` rejects a negation first or last, so a stage precedes it.
                    let after = u8::try_from(stages.len().saturating_sub(1)).unwrap_or(u8::MAX);
                    negations.push(Negation {
                        after,
                        not_next: stage.kind == StageKind::NotNext,
                        condition: stage.condition.clone(),
                    });
                }
            }
        }
        let n = stages.len();
        let mut start_mask = 0u64;
        for (s, _) in stages.iter().enumerate() {
            start_mask |= 1 << s;
            if !optional[s] {
                break;
            }
        }
        let reach_after: Vec<u64> = (0..n)
            .map(|a| {
                let mut mask = 0u64;
                for (b, &skippable) in optional.iter().enumerate().skip(a + 1) {
                    mask |= 1 << b;
                    if !skippable {
                        break;
                    }
                }
                mask
            })
            .collect();
        let tail_optional: Vec<bool> = (0..n)
            .map(|a| optional[a + 1..].iter().all(|&o| o))
            .collect();
        let resolve = |name: &String| -> Arc<str> { name.as_str().into() };
        let skip = match &pattern.skip {
            AfterMatchSkipStrategy::NoSkip => Skip::None,
            AfterMatchSkipStrategy::SkipToNext => Skip::ToNext,
            AfterMatchSkipStrategy::SkipPastLastEvent => Skip::PastLast,
            AfterMatchSkipStrategy::SkipToFirst(name) => Skip::ToFirst(resolve(name)),
            AfterMatchSkipStrategy::SkipToLast(name) => Skip::ToLast(resolve(name)),
        };
        Ok(Self {
            name: pattern.name.as_str().into(),
            stages,
            negations,
            within_ms: pattern.within_ms,
            skip,
            final_negation,
            start_mask,
            reach_after,
            tail_optional,
        })
    }

    fn holds(
        condition: Option<&Condition<T>>,
        event: &T,
        view: &dyn PartialView<T>,
        ts: i64,
    ) -> bool {
        match condition {
            None => true,
            Some(c) => c(event, &Context::new(view, ts)),
        }
    }

    /// The stage's condition (memoised per event and partial match).
    fn cond(
        &self,
        s: usize,
        memo: &mut Memo,
        event: &T,
        view: &dyn PartialView<T>,
        ts: i64,
    ) -> bool {
        let bit = 1u64 << s;
        if memo.known & bit == 0 {
            memo.known |= bit;
            if Self::holds(self.stages[s].condition.as_ref(), event, view, ts) {
                memo.value |= bit;
            }
        }
        memo.value & bit != 0
    }

    fn until(&self, s: usize, event: &T, view: &dyn PartialView<T>, ts: i64) -> bool {
        self.stages[s]
            .until
            .as_ref()
            .is_some_and(|u| u(event, &Context::new(view, ts)))
    }

    /// Whether stage `s` takes the event.
    fn take(
        &self,
        s: usize,
        memo: &mut Memo,
        event: &T,
        view: &dyn PartialView<T>,
        ts: i64,
    ) -> bool {
        self.cond(s, memo, event, view, ts) && !self.until(s, event, view, ts)
    }

    /// The waiting positions right after stage `s` took its `count`-th event.
    fn initial_alive(&self, s: usize, count: u32) -> u64 {
        let stage = &self.stages[s];
        let mut alive = 0;
        if stage.max.is_none_or(|max| count < max) {
            alive |= 1 << s;
        }
        if count >= stage.min {
            alive |= self.reach_after[s];
        }
        alive
    }

    fn completes(&self, s: usize, count: u32) -> bool {
        count >= self.stages[s].min && self.tail_optional[s]
    }

    /// Decides what `event` does to partial match `p`; pushes the steps.
    fn step(
        &self,
        p: &Partial,
        buffer: &SharedBuffer<T>,
        event: &T,
        ts: i64,
        steps: &mut Vec<Step>,
    ) {
        let a = p.stage as usize;
        let view = BufferView {
            buffer,
            node: p.node,
            names: &self.stages,
        };
        if p.stop {
            // A complete match waiting for its bound: an event the final negation forbids
            // ends it, any other passes.
            let forbidden = self
                .final_negation
                .as_ref()
                .is_some_and(|c| Self::holds(c.as_ref(), event, &view, ts));
            if !forbidden {
                steps.push(Step::Keep(*p));
            }
            return;
        }
        let mut memo = Memo::new();
        let mut threshold = p.threshold;
        if p.gap_empty {
            for neg in self
                .negations
                .iter()
                .filter(|n| n.not_next && n.after as usize >= a)
            {
                if neg.after < threshold && Self::holds(neg.condition.as_ref(), event, &view, ts) {
                    threshold = neg.after;
                }
            }
        }
        let loop_alive = p.alive & (1 << a) != 0;
        let greedy_block =
            self.stages[a].greedy && loop_alive && self.take(a, &mut memo, event, &view, ts);
        let take_step = |stage: usize, count: u32| Step::Take {
            prev: p.node,
            stage: stage as u8,
            count,
            start_ts: p.start_ts,
            start_seq: p.start_seq,
        };
        // Takes: the loop, then every enterable later stage.
        if loop_alive && self.take(a, &mut memo, event, &view, ts) {
            steps.push(take_step(a, p.count + 1));
        }
        let mut enterable = loop_alive;
        for w in a + 1..self.stages.len() {
            let bit = 1u64 << w;
            if self.initial_alive_mask(p) & bit == 0 {
                break;
            }
            enterable |= p.alive & bit != 0;
            if w > threshold as usize {
                break;
            }
            if enterable && !greedy_block && self.take(w, &mut memo, event, &view, ts) {
                steps.push(take_step(w, 1));
            }
        }
        // Skipping the event.
        for neg in self
            .negations
            .iter()
            .filter(|n| !n.not_next && n.after as usize >= a)
        {
            if neg.after < threshold && Self::holds(neg.condition.as_ref(), event, &view, ts) {
                threshold = neg.after;
            }
        }
        let mut alive = 0u64;
        if loop_alive {
            let ignore = match self.stages[a].inner {
                Contiguity::Strict => false,
                Contiguity::Relaxed => !self.cond(a, &mut memo, event, &view, ts),
                Contiguity::NonDeterministic => true,
            } && !self.until(a, event, &view, ts);
            if ignore {
                alive |= 1 << a;
            }
        }
        let mut running = loop_alive;
        for w in a + 1..self.stages.len() {
            let bit = 1u64 << w;
            if self.initial_alive_mask(p) & bit == 0 || w > threshold as usize {
                break;
            }
            running |= p.alive & bit != 0;
            if !running || greedy_block {
                continue;
            }
            let ignore = match self.stages[w].outer {
                Contiguity::Strict => false,
                Contiguity::Relaxed => !self.cond(w, &mut memo, event, &view, ts),
                Contiguity::NonDeterministic => true,
            };
            if ignore {
                alive |= bit;
            }
        }
        if alive != 0 {
            steps.push(Step::Keep(Partial {
                alive,
                threshold,
                gap_empty: false,
                ..*p
            }));
        }
    }

    /// The positions a partial match could ever wait at (before any event was skipped).
    fn initial_alive_mask(&self, p: &Partial) -> u64 {
        self.initial_alive(p.stage as usize, p.count)
    }

    /// Times out the partial matches that `within` expired at event time `ts`: complete
    /// matches waiting on a final `not_followed_by` are reported as matches (earliest start
    /// first, then by their events, applying the skip strategy), the others as timeouts.
    pub(crate) fn advance_time(&self, state: &mut NfaState<T>, ts: i64, out: &mut NfaOutput<T>) {
        let Some(within) = self.within_ms else {
            return;
        };
        let expired = |p: &Partial| ts.saturating_sub(p.start_ts) >= within;
        if !state.partials.iter().any(expired) {
            return;
        }
        let partials = std::mem::take(&mut state.partials);
        let mut pruned = vec![false; partials.len()];
        let mut due: Vec<(usize, Vec<u64>)> = partials
            .iter()
            .enumerate()
            .filter(|(_, p)| p.stop && expired(p))
            .map(|(i, p)| (i, self.sequence(&state.buffer, p.node)))
            .collect();
        due.sort_by(|a, b| {
            partials[a.0]
                .start_seq
                .cmp(&partials[b.0].start_seq)
                .then_with(|| a.1.cmp(&b.1))
        });
        for (i, _) in &due {
            if pruned[*i] {
                continue;
            }
            pruned[*i] = true;
            out.matches
                .push(self.extract(&state.buffer, partials[*i].node));
            if let Some((bound, inclusive)) = self.pruning(&state.buffer, partials[*i].node) {
                for (j, p) in partials.iter().enumerate() {
                    if p.start_seq < bound || (inclusive && p.start_seq == bound) {
                        pruned[j] = true;
                    }
                }
            }
        }
        let mut kept = Vec::with_capacity(partials.len());
        for (p, pruned) in partials.into_iter().zip(pruned) {
            if pruned {
                state.buffer.release(p.node);
            } else if expired(&p) {
                if out.want_timeouts && !p.completed && !p.stop {
                    let timed_out = self.extract(&state.buffer, p.node);
                    out.timeouts
                        .push((timed_out, p.start_ts.saturating_add(within)));
                }
                state.buffer.release(p.node);
            } else {
                kept.push(p);
            }
        }
        state.partials = kept;
    }

    /// Processes one event of the key (after timing out what it expires).
    ///
    /// # Errors
    ///
    /// [`CepError::TooManyPartialMatches`] when the limit's policy is to fail.
    pub(crate) fn process(
        &self,
        state: &mut NfaState<T>,
        event: T,
        seq: u64,
        ts: i64,
        limit: Limit,
        out: &mut NfaOutput<T>,
    ) -> Result<(), CepError> {
        self.advance_time(state, ts, out);
        let mut steps = Vec::with_capacity(state.partials.len() + 1);
        // Which old partial matches survive (as themselves) is known from their steps.
        let mut owners: Vec<usize> = Vec::with_capacity(state.partials.len() + 1);
        for (i, p) in state.partials.iter().enumerate() {
            let before = steps.len();
            self.step(p, &state.buffer, &event, ts, &mut steps);
            owners.extend(std::iter::repeat_n(i, steps.len() - before));
        }
        let empty = BufferView {
            buffer: &state.buffer,
            node: NO_NODE,
            names: &self.stages,
        };
        let mut memo = Memo::new();
        let mut mask = self.start_mask;
        while mask != 0 {
            let s = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if self.take(s, &mut memo, &event, &empty, ts) {
                steps.push(Step::Take {
                    prev: NO_NODE,
                    stage: s as u8,
                    count: 1,
                    start_ts: ts,
                    start_seq: seq,
                });
                owners.push(usize::MAX);
            }
        }
        // Apply: new nodes first, then release the old partial matches that did not survive.
        let takes = steps.iter().any(|s| matches!(s, Step::Take { .. }));
        let slot = takes.then(|| state.buffer.add_event(seq, ts, event));
        let mut kept_old = vec![false; state.partials.len()];
        let mut next: Vec<Partial> = Vec::with_capacity(steps.len());
        let mut complete: Vec<usize> = Vec::new();
        let mut drop_after: Vec<bool> = Vec::with_capacity(steps.len());
        for (step, owner) in steps.into_iter().zip(owners) {
            match step {
                Step::Keep(p) => {
                    kept_old[owner] = true;
                    next.push(p);
                    drop_after.push(false);
                }
                Step::Take {
                    prev,
                    stage,
                    count,
                    start_ts,
                    start_seq,
                } => {
                    let Some(slot) = slot else {
                        unreachable!("the event is stored when a step takes it");
                    };
                    let node = state.buffer.add_node(slot, stage, prev);
                    let alive = self.initial_alive(stage as usize, count);
                    let completes = self.completes(stage as usize, count);
                    let taken = Partial {
                        node,
                        stage,
                        count,
                        start_ts,
                        start_seq,
                        alive,
                        threshold: NO_THRESHOLD,
                        gap_empty: true,
                        completed: false,
                        stop: false,
                    };
                    if completes && self.final_negation.is_some() {
                        // The match waits for its bound; the partial match goes on (if it
                        // can) without timing out, as its events are already a match's.
                        state.buffer.retain(node);
                        drop_after.push(false);
                        next.push(Partial {
                            alive: 0,
                            stop: true,
                            ..taken
                        });
                        drop_after.push(alive == 0);
                        next.push(Partial {
                            completed: true,
                            ..taken
                        });
                        continue;
                    }
                    if completes {
                        complete.push(next.len());
                    }
                    drop_after.push(alive == 0);
                    next.push(taken);
                }
            }
        }
        for (p, kept) in state.partials.iter().zip(&kept_old) {
            if !*kept {
                state.buffer.release(p.node);
            }
        }
        if let Some(slot) = slot {
            state.buffer.release_event(slot);
        }
        // Matches completed by this event, earliest start first, then by their events.
        let mut found: Vec<(usize, Vec<u64>)> = complete
            .iter()
            .map(|&i| (i, self.sequence(&state.buffer, next[i].node)))
            .collect();
        found.sort_by(|a, b| {
            next[a.0]
                .start_seq
                .cmp(&next[b.0].start_seq)
                .then_with(|| a.1.cmp(&b.1))
        });
        let mut pruned = vec![false; next.len()];
        for (i, _) in &found {
            if pruned[*i] {
                continue;
            }
            let m = self.extract(&state.buffer, next[*i].node);
            next[*i].completed = true;
            if let Some((bound, inclusive)) = self.pruning(&state.buffer, next[*i].node) {
                for (j, p) in next.iter().enumerate() {
                    if p.start_seq < bound || (inclusive && p.start_seq == bound) {
                        pruned[j] = true;
                    }
                }
            }
            out.matches.push(m);
        }
        let mut partials = Vec::with_capacity(next.len());
        for (i, p) in next.into_iter().enumerate() {
            if pruned[i] || drop_after[i] {
                state.buffer.release(p.node);
            } else {
                partials.push(p);
            }
        }
        if partials.len() > limit.max_partials {
            let excess = partials.len() - limit.max_partials;
            match limit.policy {
                OverflowPolicy::Fail => {
                    state.partials = partials;
                    return Err(CepError::TooManyPartialMatches {
                        pattern: self.name.to_string(),
                        limit: limit.max_partials,
                    });
                }
                OverflowPolicy::DropOldest => {
                    for p in partials.drain(..excess) {
                        state.buffer.release(p.node);
                    }
                    out.dropped += excess as u64;
                }
            }
        }
        state.partials = partials;
        Ok(())
    }

    /// The sequence numbers of a partial match's events, in order.
    fn sequence(&self, buffer: &SharedBuffer<T>, node: u32) -> Vec<u64> {
        let mut seqs: Vec<u64> = buffer.chain(node).map(|(_, e)| e.seq).collect();
        seqs.reverse();
        seqs
    }

    /// Partial matches starting before `bound` (or at it, if inclusive) are discarded after
    /// the match ending at `node`.
    fn pruning(&self, buffer: &SharedBuffer<T>, node: u32) -> Option<(u64, bool)> {
        let mut steps: Vec<(u8, u64)> = buffer.chain(node).map(|(n, e)| (n.stage, e.seq)).collect();
        steps.reverse();
        let named = |name: &str| -> Vec<u64> {
            steps
                .iter()
                .filter(|(stage, _)| &*self.stages[*stage as usize].name == name)
                .map(|(_, seq)| *seq)
                .collect()
        };
        match &self.skip {
            Skip::None => None,
            Skip::ToNext => steps.first().map(|(_, seq)| (*seq, true)),
            Skip::PastLast => steps.last().map(|(_, seq)| (*seq, true)),
            Skip::ToFirst(name) => named(name).first().map(|seq| (*seq, false)),
            Skip::ToLast(name) => named(name).last().map(|seq| (*seq, false)),
        }
    }

    /// The events of the partial match ending at `node`.
    fn extract(&self, buffer: &SharedBuffer<T>, node: u32) -> Match<T> {
        let mut events: Vec<MatchedEvent<T>> = buffer
            .chain(node)
            .map(|(n, e)| MatchedEvent {
                stage: self.stages[n.stage as usize].name.clone(),
                timestamp: e.timestamp,
                event: e.event.clone(),
                position: n.stage as usize,
            })
            .collect();
        events.reverse();
        Match {
            pattern: self.name.clone(),
            events,
        }
    }
}

#[cfg(test)]
impl<T> NfaState<T> {
    /// Checks the shared buffer's reference counts against the live partial matches.
    pub(crate) fn check(&self) {
        let holders: Vec<u32> = self.partials.iter().map(|p| p.node).collect();
        self.buffer.check(&holders);
        assert!(
            self.partials
                .windows(2)
                .all(|w| w[0].start_seq <= w[1].start_seq),
            "partial matches sorted by start"
        );
    }
}
