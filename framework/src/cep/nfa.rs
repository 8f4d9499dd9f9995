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
//! Positions are the pattern's positive stages with its groups written out (`Builder`): a
//! group repeated `lo..=hi` times is that many copies, a looping one ends with a copy whose
//! end leads back to its start; proceed edges between positions (skipping an optional stage
//! or repetition, leaving a loop) are folded into per-position masks at compile time, so a
//! waiting position may lie before the partial match's own when a group loops.
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
use super::pattern::{Item, Pattern, StageKind};
use super::{CepError, Match, MatchedEvent, OverflowPolicy};

/// Most positions a pattern may have once its groups are expanded (one bit each in a partial
/// match; the top bit is [`SELF_ENTRY`]).
pub(crate) const STAGES_MAX: usize = 63;

/// In [`Partial::alive`], bit `stage` is the loop of the partial match's own position, so
/// this bit stands for entering that position afresh (through a group's loop).
const SELF_ENTRY: u64 = 1 << STAGES_MAX;

/// No negation cut the partial match's targets.
const NO_THRESHOLD: u8 = u8::MAX;

/// How matches completed together are ordered: their events' sequence numbers, then the
/// stages (as written) that took them.
type MatchKey = (Vec<u64>, Vec<usize>);

/// A position: a positive stage in one copy of its groups, compiled.
struct CStage<T> {
    name: Arc<str>,
    /// The stage's index among the pattern's positive stages as written (copies share it).
    label: usize,
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
    /// Positions a match can begin with.
    start_mask: u64,
    /// Per position: the positions that can wait for the next event once it has taken
    /// enough events (following ones, and those reached by skipping optional ones).
    reach_done: Vec<u64>,
    /// Per position: the positions reached from waiting at it by skipping it (it is optional,
    /// or heads an optional repetition of a group), transitively.
    skip_closure: Vec<u64>,
    /// Per position: whether a match can end once it has taken enough events.
    tail_end: Vec<bool>,
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
    /// Waiting positions still open: bit `stage` is the position's own loop, other bits
    /// entering position `w` (after it, or before it through a group's loop), and
    /// [`SELF_ENTRY`] entering its own position afresh.
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

/// Expands a pattern's tree into positions and the proceed edges between them.
///
/// The graph has a *wait* node per position (a partial match waiting to enter it), a *done*
/// node per position (it took enough events), and junctions; its edges are proceed edges
/// (no event taken). A stage is `entry -> wait`, `done -> exit` and, if optional,
/// `wait -> exit`. A group repeated `min..=max` times is `min` copies in a row, then
/// `max - min` optional copies, each of which can be skipped from its first position's wait
/// node to the group's exit (Flink's proceed edge from a group's first state); a looping
/// group is `min` copies and one more whose end leads back to its start and whose first
/// position can proceed to the exit. Copies after the first enter their first position with
/// the group's inner contiguity.
struct Builder<'p, T> {
    pattern: &'p Pattern<T>,
    /// Per stage of the pattern: its index among the positive stages.
    labels: Vec<usize>,
    stages: Vec<CStage<T>>,
    negations: Vec<Negation<T>>,
    /// Proceed edges per node.
    edges: Vec<Vec<usize>>,
    wait: Vec<usize>,
    done: Vec<usize>,
}

impl<T> Builder<'_, T> {
    const START: usize = 0;
    const END: usize = 1;

    fn node(&mut self) -> usize {
        self.edges.push(Vec::new());
        self.edges.len() - 1
    }

    fn edge(&mut self, from: usize, to: usize) {
        self.edges[from].push(to);
    }

    /// Expands `items` between `entry` and `exit`; `head`: the contiguity of the first
    /// position if a group copy imposes one. Fails (with the count so far) past
    /// [`STAGES_MAX`] positions.
    fn sequence(
        &mut self,
        items: &[Item],
        entry: usize,
        exit: usize,
        head: Option<Contiguity>,
    ) -> Result<(), usize> {
        let mut current = entry;
        for (i, item) in items.iter().enumerate() {
            let next = if i + 1 == items.len() {
                exit
            } else {
                self.node()
            };
            let head = if i == 0 { head } else { None };
            self.item(item, current, next, head)?;
            current = next;
        }
        if items.is_empty() {
            self.edge(entry, exit);
        }
        Ok(())
    }

    fn item(
        &mut self,
        item: &Item,
        entry: usize,
        exit: usize,
        head: Option<Contiguity>,
    ) -> Result<(), usize> {
        let pattern = self.pattern;
        match item {
            Item::Stage(i) => {
                let stage = &pattern.stages[*i];
                if stage.kind != StageKind::Positive {
                    // `validate` rejects a negation first, so a position precedes it.
                    let after =
                        u8::try_from(self.stages.len().saturating_sub(1)).unwrap_or(u8::MAX);
                    self.negations.push(Negation {
                        after,
                        not_next: stage.kind == StageKind::NotNext,
                        condition: stage.condition.clone(),
                    });
                    self.edge(entry, exit);
                    return Ok(());
                }
                if self.stages.len() == STAGES_MAX {
                    return Err(self.stages.len() + 1);
                }
                self.stages.push(CStage {
                    name: stage.name.as_str().into(),
                    label: self.labels[*i],
                    condition: stage.condition.clone(),
                    until: stage.until.clone(),
                    min: stage.min,
                    max: stage.max,
                    greedy: stage.greedy,
                    inner: stage.inner,
                    outer: head.unwrap_or(stage.outer),
                });
                let (wait, done) = (self.node(), self.node());
                self.wait.push(wait);
                self.done.push(done);
                self.edge(entry, wait);
                self.edge(done, exit);
                if stage.optional {
                    self.edge(wait, exit);
                }
            }
            Item::Group(k, items) => {
                let group = &pattern.groups[*k];
                let mut current = entry;
                for copy in 0..group.min {
                    let next = self.node();
                    let first = self.stages.len();
                    let head = if copy == 0 { head } else { Some(group.inner) };
                    self.sequence(items, current, next, head)?;
                    if copy == 0 && group.optional {
                        self.edge(self.wait[first], exit);
                    }
                    current = next;
                }
                match group.max {
                    Some(max) => {
                        for _ in group.min..max {
                            let next = self.node();
                            let first = self.stages.len();
                            self.sequence(items, current, next, Some(group.inner))?;
                            self.edge(self.wait[first], exit);
                            current = next;
                        }
                        self.edge(current, exit);
                    }
                    None => {
                        let end = self.node();
                        let first = self.stages.len();
                        self.sequence(items, current, end, Some(group.inner))?;
                        self.edge(end, current);
                        self.edge(self.wait[first], exit);
                    }
                }
            }
        }
        Ok(())
    }

    /// Per node, the nodes reachable from it by one or more proceed edges.
    fn closures(&self) -> Vec<Vec<bool>> {
        let count = self.edges.len();
        (0..count)
            .map(|from| {
                let mut seen = vec![false; count];
                let mut stack: Vec<usize> = self.edges[from].clone();
                while let Some(node) = stack.pop() {
                    if !seen[node] {
                        seen[node] = true;
                        stack.extend(self.edges[node].iter().copied());
                    }
                }
                seen
            })
            .collect()
    }
}

/// Compiling lives beside the automaton it builds, so `pattern.rs` (the builder) does not
/// import the automaton that imports it.
impl<T: 'static> Pattern<T> {
    /// Checks the pattern and builds its automaton.
    ///
    /// # Errors
    ///
    /// [`CepError::Pattern`] naming the stage and the misuse: a builder error, a repeated
    /// stage name, a negative stage at the end (but `not_followed_by` with `within`), a
    /// quantifier option on a stage that does not loop, a skip strategy naming an unknown stage,
    /// a misused group quantifier (see the README), more than 63 stages once groups are
    /// written out.
    pub fn compile(&self) -> Result<CompiledPattern<T>, CepError>
    where
        T: Clone,
    {
        CompiledPattern::compile(self)
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
        let mut labels = vec![usize::MAX; pattern.stages.len()];
        let mut next_label = 0;
        for (i, stage) in pattern.stages.iter().enumerate() {
            if stage.kind == StageKind::Positive {
                labels[i] = next_label;
                next_label += 1;
            }
        }
        let mut builder = Builder {
            pattern,
            labels,
            stages: Vec::new(),
            negations: Vec::new(),
            edges: vec![Vec::new(), Vec::new()],
            wait: Vec::new(),
            done: Vec::new(),
        };
        let too_many = |count: usize| CepError::Pattern {
            pattern: pattern.name.clone(),
            message: format!(
                "the pattern has more than {STAGES_MAX} stages once its groups are expanded \
                 (each repetition of a group counts, a looping group once more than its \
                 minimum): {count} so far"
            ),
        };
        builder
            .sequence(
                &pattern.items(),
                Builder::<T>::START,
                Builder::<T>::END,
                None,
            )
            .map_err(too_many)?;
        let final_negation = match pattern.stages.last() {
            Some(last) if last.kind == StageKind::NotFollowedBy => {
                // The last thing expanded is the final negation of the last repetition.
                builder.negations.pop();
                Some(last.condition.clone())
            }
            _ => None,
        };
        let closure = builder.closures();
        let n = builder.stages.len();
        let wait_mask = |nodes: &Vec<bool>| -> u64 {
            (0..n)
                .filter(|&p| nodes[builder.wait[p]])
                .fold(0u64, |mask, p| mask | 1 << p)
        };
        let start_mask = wait_mask(&closure[Builder::<T>::START]);
        let reach_done = (0..n)
            .map(|p| wait_mask(&closure[builder.done[p]]))
            .collect();
        let skip_closure = (0..n)
            .map(|p| wait_mask(&closure[builder.wait[p]]))
            .collect();
        let tail_end = (0..n)
            .map(|p| closure[builder.done[p]][Builder::<T>::END])
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
            stages: builder.stages,
            negations: builder.negations,
            within_ms: pattern.within_ms,
            skip,
            final_negation,
            start_mask,
            reach_done,
            skip_closure,
            tail_end,
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
            alive |= Self::encode(self.reach_done[s], s);
        }
        alive
    }

    /// `positions` as [`Partial::alive`] bits of a partial match at position `a`.
    fn encode(positions: u64, a: usize) -> u64 {
        let own = 1u64 << a;
        let entry = if positions & own != 0 { SELF_ENTRY } else { 0 };
        (positions & !own) | entry
    }

    /// The positions waited for to be entered in `alive` of a partial match at position `a`.
    fn decode(alive: u64, a: usize) -> u64 {
        let own = 1u64 << a;
        let entry = if alive & SELF_ENTRY != 0 { own } else { 0 };
        (alive & !own & !SELF_ENTRY) | entry
    }

    fn completes(&self, s: usize, count: u32) -> bool {
        count >= self.stages[s].min && self.tail_end[s]
    }

    /// The positions partial match `p` can enter with the next event: those still alive and
    /// those reached from them (or from its loop) by proceed edges, up to `threshold`.
    fn reachable(&self, p: &Partial, threshold: u8) -> u64 {
        let a = p.stage as usize;
        let mut reach = Self::decode(p.alive, a);
        let mut rest = reach;
        while rest != 0 {
            let u = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            reach |= self.skip_closure[u];
        }
        if p.alive & (1 << a) != 0 && p.count >= self.stages[a].min {
            reach |= self.reach_done[a];
        }
        // A negation after position `threshold` cuts off what lies beyond it; positions at or
        // before the partial match's own (a group's loop back) never cross a negation.
        if threshold != NO_THRESHOLD {
            let upto = (threshold as usize).max(a);
            reach &= if upto + 1 >= STAGES_MAX {
                u64::MAX
            } else {
                (1u64 << (upto + 1)) - 1
            };
        }
        reach
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
        // Takes: the loop, then every enterable position.
        if loop_alive && self.take(a, &mut memo, event, &view, ts) {
            steps.push(take_step(a, p.count + 1));
        }
        if !greedy_block {
            let mut enterable = self.reachable(p, threshold);
            while enterable != 0 {
                let w = enterable.trailing_zeros() as usize;
                enterable &= enterable - 1;
                if self.take(w, &mut memo, event, &view, ts) {
                    steps.push(take_step(w, 1));
                }
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
        if !greedy_block {
            let mut waiting = self.reachable(p, threshold);
            while waiting != 0 {
                let w = waiting.trailing_zeros() as usize;
                waiting &= waiting - 1;
                let ignore = match self.stages[w].outer {
                    Contiguity::Strict => false,
                    Contiguity::Relaxed => !self.cond(w, &mut memo, event, &view, ts),
                    Contiguity::NonDeterministic => true,
                };
                if ignore {
                    alive |= Self::encode(1 << w, a);
                }
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
        let mut due: Vec<(usize, MatchKey)> = partials
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
        let mut found: Vec<(usize, MatchKey)> = complete
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

    /// The sequence numbers of a partial match's events, in order, then the stages that took
    /// them (so that matches of the same events are ordered too).
    fn sequence(&self, buffer: &SharedBuffer<T>, node: u32) -> MatchKey {
        let mut seqs: Vec<u64> = buffer.chain(node).map(|(_, e)| e.seq).collect();
        let mut labels: Vec<usize> = buffer
            .chain(node)
            .map(|(n, _)| self.stages[n.stage as usize].label)
            .collect();
        seqs.reverse();
        labels.reverse();
        (seqs, labels)
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
                position: self.stages[n.stage as usize].label,
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
