//! The pattern API in Flink's vocabulary: a sequence of named stages with conditions,
//! contiguities, quantifiers, a time bound and an after-match skip strategy.
//!
//! A [`Pattern`] is only a description; [`Pattern::compile`] (in `nfa.rs`, beside the automaton
//! it builds) checks it and turns it into the `CompiledPattern` that matches it. Builder calls
//! never fail on their own: a misuse (a quantifier set twice, `until` on a stage that does not
//! loop, a pattern ending with a negation) is recorded and reported by `compile`, naming the
//! stage, as Flink's `MalformedPatternException` does at the call.
//!
//! ## Semantics
//!
//! A match is an assignment of events of one key (in event-time order) to the pattern's
//! positive stages, in stage order, each stage taking as many events as its quantifier allows
//! (zero only if it is optional), every event satisfying its stage's condition (evaluated with
//! the events assigned before it), and `last - first < within`. Between two consecutive events
//! of a match, the skipped events must be allowed by the contiguity that governs the gap:
//!
//! - inside a looping stage, its inner contiguity: `consecutive()` (strict: no event between),
//!   the default (relaxed: no skipped event satisfies the stage's condition) or
//!   `allow_combinations()` (non-deterministic: anything may be skipped);
//! - between stages, the gap may be cut into consecutive pieces, absorbed in order by the
//!   earlier stage's loop (inner contiguity), by each skipped optional stage and by the next
//!   stage (each with its own contiguity: `next` strict, `followed_by` relaxed,
//!   `followed_by_any` non-deterministic), exactly the paths Flink's NFA explores;
//! - `not_next(N)` forbids that the event right after the last event before it satisfies `N`;
//!   `not_followed_by(N)` forbids skipped events satisfying `N` between the events around it;
//! - `not_followed_by(N)` may end a pattern that has `within(W)` (Flink's rule): a match then
//!   also needs that no event after its last one and before `first + W` (exclusive, in
//!   event-time order) satisfies `N`, so it is reported only when `first + W` has passed
//!   (when the first event at or after it arrives, or when the watermark passes it), and
//!   its events are those of the positive stages;
//! - `greedy()` on a looping stage forbids leaving the loop while it could take the event.
//!
//! Each such assignment is one match, reported once, when its last event arrives; an
//! after-match skip strategy then discards partial matches as Flink's does.

use std::fmt;
use std::sync::Arc;

use super::CepError;

/// A condition on an event, seeing the events matched so far (Flink's `IterativeCondition`).
pub type Condition<T> = Arc<dyn Fn(&T, &Context<'_, T>) -> bool + Send + Sync>;

/// What an iterative condition sees besides the event: the partial match it would extend.
pub struct Context<'a, T> {
    view: &'a dyn PartialView<T>,
    timestamp: i64,
}

impl<T> fmt::Debug for Context<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

/// The partial match behind a [`Context`]: the automaton's shared buffer or, in tests, a list.
pub(crate) trait PartialView<T> {
    /// Calls `f` with every event of the partial match assigned to a stage named `name`, in
    /// match order.
    fn for_each(&self, name: &str, f: &mut dyn FnMut(&T));
}

impl<'a, T> Context<'a, T> {
    pub(crate) fn new(view: &'a dyn PartialView<T>, timestamp: i64) -> Self {
        Self { view, timestamp }
    }

    /// The events matched so far by the stages called `name`, in match order.
    pub fn events(&self, name: &str) -> Vec<T>
    where
        T: Clone,
    {
        let mut events = Vec::new();
        self.view.for_each(name, &mut |e| events.push(e.clone()));
        events
    }

    /// Folds the events matched so far by the stages called `name`, without copying them.
    pub fn fold<A>(&self, name: &str, init: A, mut f: impl FnMut(A, &T) -> A) -> A {
        let mut acc = Some(init);
        self.view.for_each(name, &mut |e| {
            if let Some(a) = acc.take() {
                acc = Some(f(a, e));
            }
        });
        match acc {
            Some(a) => a,
            None => unreachable!("the accumulator is put back after every event"),
        }
    }

    /// How many events the stages called `name` matched so far.
    pub fn count(&self, name: &str) -> usize {
        self.fold(name, 0, |n, _| n + 1)
    }

    /// The timestamp of the event being tested.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }
}

/// How the events of a match may be spread out (Flink's consuming strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Contiguity {
    /// No event in between (`next`, `consecutive`).
    Strict,
    /// Events in between that do not match are skipped (`followed_by`, the default inside a
    /// loop).
    Relaxed,
    /// Any event in between may be skipped, matching or not (`followed_by_any`,
    /// `allow_combinations`).
    NonDeterministic,
}

/// What happens after a match (Flink's `AfterMatchSkipStrategy`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum AfterMatchSkipStrategy {
    /// Every match is reported (the default).
    #[default]
    NoSkip,
    /// Partial matches that started at or before the match's first event are discarded.
    SkipToNext,
    /// Partial matches that started at or before the match's last event are discarded.
    SkipPastLastEvent,
    /// Partial matches that started before the first event of stage `name` in the match are
    /// discarded (none if the match has no event there).
    SkipToFirst(String),
    /// Partial matches that started before the last event of stage `name` in the match are
    /// discarded (none if the match has no event there).
    SkipToLast(String),
}

/// Whether a stage matches events or forbids them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StageKind {
    Positive,
    NotNext,
    NotFollowedBy,
}

/// One stage of a pattern, as the builder left it.
pub(crate) struct Stage<T> {
    pub(crate) name: String,
    pub(crate) kind: StageKind,
    /// The contiguity to the stage before (ignored for the first).
    pub(crate) outer: Contiguity,
    pub(crate) condition: Option<Condition<T>>,
    pub(crate) until: Option<Condition<T>>,
    pub(crate) min: u32,
    /// `None`: unbounded.
    pub(crate) max: Option<u32>,
    pub(crate) optional: bool,
    pub(crate) greedy: bool,
    pub(crate) inner: Contiguity,
    quantified: bool,
}

impl<T> Clone for Stage<T> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            kind: self.kind,
            outer: self.outer,
            condition: self.condition.clone(),
            until: self.until.clone(),
            min: self.min,
            max: self.max,
            optional: self.optional,
            greedy: self.greedy,
            inner: self.inner,
            quantified: self.quantified,
        }
    }
}

impl<T> Stage<T> {
    fn new(name: &str, kind: StageKind, outer: Contiguity) -> Self {
        Self {
            name: name.to_string(),
            kind,
            outer,
            condition: None,
            until: None,
            min: 1,
            max: Some(1),
            optional: false,
            greedy: false,
            inner: Contiguity::Relaxed,
            quantified: false,
        }
    }

    pub(crate) fn loops(&self) -> bool {
        self.max != Some(self.min)
    }
}

/// A group of stages (`begin_group`, `next_group`, ...) and its quantifier, which repeats the
/// group as a unit (Flink's `GroupPattern`).
#[derive(Debug, Clone)]
pub(crate) struct Group {
    /// Its stages in [`Pattern::stages`]; groups nested in it lie inside.
    pub(crate) range: std::ops::Range<usize>,
    /// Repetitions at least (1 when `optional`).
    pub(crate) min: u32,
    /// Repetitions at most; `None`: unbounded.
    pub(crate) max: Option<u32>,
    /// The group may be skipped as a whole.
    pub(crate) optional: bool,
    /// Contiguity between repetitions (Flink's inner consuming strategy): it governs the
    /// events skipped before the group's first stage in the second and later repetitions.
    pub(crate) inner: Contiguity,
    quantified: bool,
}

impl Group {
    /// Whether the quantifier is more than "once".
    fn quantified_at_all(&self) -> bool {
        self.min != 1 || self.max != Some(1) || self.optional || self.inner != Contiguity::Relaxed
    }
}

/// A pattern as a tree: stages and groups (with their own items) in order.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// A stage, by its index in [`Pattern::stages`].
    Stage(usize),
    /// A group, by its index in `Pattern::groups`, and its items.
    Group(usize, Vec<Self>),
}

/// A pattern: a sequence of named stages (Flink's `Pattern`).
///
/// # Examples
///
/// ```
/// use eichhorn::cep::Pattern;
///
/// // Two failed logins in a row within ten seconds.
/// let pattern = Pattern::<(String, bool)>::begin("first")
///     .where_(|(_, ok): &(String, bool)| !ok)
///     .next("second")
///     .where_(|(_, ok): &(String, bool)| !ok)
///     .within(10_000);
/// assert!(pattern.compile().is_ok());
///
/// // Misuse is reported when compiled, naming the stage.
/// let bad = Pattern::<u32>::begin("a").times(2).times(3);
/// assert!(bad.compile().unwrap_err().to_string().contains("'a'"));
/// ```
pub struct Pattern<T> {
    pub(crate) stages: Vec<Stage<T>>,
    pub(crate) within_ms: Option<i64>,
    pub(crate) skip: AfterMatchSkipStrategy,
    pub(crate) name: String,
    errors: Vec<String>,
    /// The groups, inner ones before the groups around them.
    pub(crate) groups: Vec<Group>,
    /// The group added last (`followed_by_group` ...), which quantifiers then apply to,
    /// until the next stage is added.
    last_group: Option<usize>,
}

impl<T> Clone for Pattern<T> {
    fn clone(&self) -> Self {
        Self {
            stages: self.stages.clone(),
            within_ms: self.within_ms,
            skip: self.skip.clone(),
            name: self.name.clone(),
            errors: self.errors.clone(),
            groups: self.groups.clone(),
            last_group: self.last_group,
        }
    }
}

impl<T> fmt::Debug for Pattern<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pattern")
            .field(
                "stages",
                &self.stages.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .field("within_ms", &self.within_ms)
            .field("skip", &self.skip)
            .finish()
    }
}

impl<T: 'static> Pattern<T> {
    /// A pattern whose first stage is called `name` (Flink's `Pattern.begin`).
    pub fn begin(name: &str) -> Self {
        Self {
            stages: vec![Stage::new(name, StageKind::Positive, Contiguity::Relaxed)],
            within_ms: None,
            skip: AfterMatchSkipStrategy::NoSkip,
            name: name.to_string(),
            errors: Vec::new(),
            groups: Vec::new(),
            last_group: None,
        }
    }

    /// A pattern starting with `name` and using `skip` after each match (Flink's
    /// `Pattern.begin(name, skipStrategy)`).
    pub fn begin_with_skip(name: &str, skip: AfterMatchSkipStrategy) -> Self {
        Self::begin(name).with_skip_strategy(skip)
    }

    /// A pattern starting with a group: the stages of `group` as a unit that quantifiers
    /// (`times`, `times_range`, `one_or_more`, `times_or_more`, `optional`, `consecutive`,
    /// `allow_combinations`) called right after apply to. Groups nest. The events of a
    /// repeated group are named by its stages (`a -> [a1, a2]`, `b -> [b1, b2]`).
    ///
    /// # Examples
    ///
    /// ```
    /// use eichhorn::cep::Pattern;
    ///
    /// // (a b) two to four times, repetitions directly after each other, then c.
    /// let pair = Pattern::<char>::begin("a")
    ///     .where_(|e: &char| *e == 'a')
    ///     .next("b")
    ///     .where_(|e: &char| *e == 'b');
    /// let pattern = Pattern::begin_group(pair)
    ///     .times_range(2, 4)
    ///     .consecutive()
    ///     .followed_by("c")
    ///     .where_(|e: &char| *e == 'c');
    /// assert!(pattern.compile().is_ok());
    ///
    /// // Flink refuses greedy() on a group, and so does compile().
    /// let greedy = Pattern::begin_group(Pattern::<char>::begin("a")).one_or_more().greedy();
    /// let error = greedy.compile().unwrap_err().to_string();
    /// assert!(error.contains("group starting at stage 'a'"));
    /// ```
    pub fn begin_group(group: Self) -> Self {
        let mut pattern = Self {
            stages: Vec::new(),
            within_ms: None,
            skip: group.skip.clone(),
            name: group.name.clone(),
            errors: Vec::new(),
            groups: Vec::new(),
            last_group: None,
        };
        pattern.push_group(group, Contiguity::Relaxed);
        pattern
    }

    /// Sets the after-match skip strategy.
    pub fn with_skip_strategy(mut self, skip: AfterMatchSkipStrategy) -> Self {
        self.skip = skip;
        self
    }

    /// The name used for this pattern in matches and errors (its first stage's by default).
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    fn last(&mut self) -> &mut Stage<T> {
        let Some(last) = self.stages.last_mut() else {
            unreachable!("a pattern always has a stage");
        };
        last
    }

    fn push(mut self, name: &str, kind: StageKind, outer: Contiguity) -> Self {
        self.last_group = None;
        self.stages.push(Stage::new(name, kind, outer));
        self
    }

    fn push_group(&mut self, group: Self, outer: Contiguity) {
        self.errors.extend(group.errors);
        if group.within_ms.is_some() {
            self.errors.push(format!(
                "group '{}' sets within(): set it on the enclosing pattern",
                group.name
            ));
        }
        let start = self.stages.len();
        for (i, mut stage) in group.stages.into_iter().enumerate() {
            if i == 0 {
                stage.outer = outer;
            }
            self.stages.push(stage);
        }
        for mut inner in group.groups {
            inner.range = inner.range.start + start..inner.range.end + start;
            self.groups.push(inner);
        }
        self.groups.push(Group {
            range: start..self.stages.len(),
            min: 1,
            max: Some(1),
            optional: false,
            inner: Contiguity::Relaxed,
            quantified: false,
        });
        self.last_group = Some(self.groups.len() - 1);
    }

    /// The name of the group added last, for errors: "group starting at stage 'x'".
    fn group_name(&self, group: usize) -> String {
        format!(
            "group starting at stage '{}'",
            self.stages[self.groups[group].range.start].name
        )
    }

    /// Records that `what` does not apply to the group added last; `true` if there is one.
    fn refuse_on_group(&mut self, what: &str) -> bool {
        let Some(group) = self.last_group else {
            return false;
        };
        let message = format!("{}: {what}", self.group_name(group));
        self.errors.push(message);
        true
    }

    /// The items of `range` as a tree; `container` is the group whose items they are.
    pub(crate) fn items_in(
        &self,
        range: std::ops::Range<usize>,
        container: Option<usize>,
    ) -> Vec<Item> {
        let mut items = Vec::new();
        let mut i = range.start;
        while i < range.end {
            // The outermost group starting here inside the container (a group nested with
            // the same stages as its container comes earlier in `groups`).
            let outermost = self
                .groups
                .iter()
                .enumerate()
                .filter(|(k, g)| {
                    g.range.start == i
                        && g.range.end <= range.end
                        && container.is_none_or(|c| g.range != self.groups[c].range || *k < c)
                })
                .max_by_key(|(k, g)| (g.range.end, *k));
            match outermost {
                Some((k, g)) => {
                    items.push(Item::Group(k, self.items_in(g.range.clone(), Some(k))));
                    i = g.range.end;
                }
                None => {
                    items.push(Item::Stage(i));
                    i += 1;
                }
            }
        }
        items
    }

    /// The whole pattern as a tree.
    pub(crate) fn items(&self) -> Vec<Item> {
        self.items_in(0..self.stages.len(), None)
    }

    /// Whether `items` can match without taking an event.
    pub(crate) fn nullable(&self, items: &[Item]) -> bool {
        items.iter().all(|item| match item {
            Item::Stage(i) => {
                let stage = &self.stages[*i];
                stage.kind != StageKind::Positive || stage.optional
            }
            Item::Group(k, inner) => self.groups[*k].optional || self.nullable(inner),
        })
    }

    /// Adds a stage that must follow the previous one directly (strict contiguity).
    pub fn next(self, name: &str) -> Self {
        self.push(name, StageKind::Positive, Contiguity::Strict)
    }

    /// Adds a stage that follows the previous one, skipping events that do not match
    /// (relaxed contiguity).
    pub fn followed_by(self, name: &str) -> Self {
        self.push(name, StageKind::Positive, Contiguity::Relaxed)
    }

    /// Adds a stage that follows the previous one, possibly skipping matching events too
    /// (non-deterministic relaxed contiguity: every combination is a match).
    pub fn followed_by_any(self, name: &str) -> Self {
        self.push(name, StageKind::Positive, Contiguity::NonDeterministic)
    }

    /// Adds a negative stage: the event right after the previous stage's last event must not
    /// satisfy its condition.
    pub fn not_next(self, name: &str) -> Self {
        self.push(name, StageKind::NotNext, Contiguity::Strict)
    }

    /// Adds a negative stage: no event between the previous stage and the next one may
    /// satisfy its condition. At the end of a pattern (which then needs [`Pattern::within`]),
    /// no event may satisfy it between the match's last event and the end of its time bound;
    /// the match is reported when that bound passes.
    pub fn not_followed_by(self, name: &str) -> Self {
        self.push(name, StageKind::NotFollowedBy, Contiguity::Relaxed)
    }

    /// Adds a group with strict contiguity to the previous stage.
    pub fn next_group(mut self, group: Self) -> Self {
        self.push_group(group, Contiguity::Strict);
        self
    }

    /// Adds a group with relaxed contiguity to the previous stage.
    pub fn followed_by_group(mut self, group: Self) -> Self {
        self.push_group(group, Contiguity::Relaxed);
        self
    }

    /// Adds a group with non-deterministic relaxed contiguity to the previous stage.
    pub fn followed_by_any_group(mut self, group: Self) -> Self {
        self.push_group(group, Contiguity::NonDeterministic);
        self
    }

    /// Adds a condition on the event alone to the last stage (and-ed with earlier ones).
    pub fn where_(self, condition: impl Fn(&T) -> bool + Send + Sync + 'static) -> Self {
        self.where_iterative(move |event, _| condition(event))
    }

    /// Adds an iterative condition, which also sees the events matched so far, to the last
    /// stage (and-ed with earlier ones).
    pub fn where_iterative(
        mut self,
        condition: impl Fn(&T, &Context<'_, T>) -> bool + Send + Sync + 'static,
    ) -> Self {
        if self.refuse_on_group("a group takes no condition, its stages do (where_)") {
            return self;
        }
        let new: Condition<T> = Arc::new(condition);
        let stage = self.last();
        stage.condition = Some(match stage.condition.take() {
            None => new,
            Some(old) => Arc::new(move |e: &T, c: &Context<'_, T>| old(e, c) && new(e, c)),
        });
        self
    }

    /// A condition on a part of the event (Flink's `subtype`): the stage takes an event only
    /// if `part` finds the part (an enum variant, a field that may be missing) and
    /// `condition` holds for it.
    pub fn where_subtype<S: 'static>(
        self,
        part: impl Fn(&T) -> Option<&S> + Send + Sync + 'static,
        condition: impl Fn(&S) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.where_(move |event| part(event).is_some_and(&condition))
    }

    /// Adds an alternative to the last stage's condition: it matches if the conditions so far
    /// hold or this one does.
    pub fn or(self, condition: impl Fn(&T) -> bool + Send + Sync + 'static) -> Self {
        self.or_iterative(move |event, _| condition(event))
    }

    /// Adds an iterative alternative to the last stage's condition.
    pub fn or_iterative(
        mut self,
        condition: impl Fn(&T, &Context<'_, T>) -> bool + Send + Sync + 'static,
    ) -> Self {
        if self.refuse_on_group("a group takes no condition, its stages do (or)") {
            return self;
        }
        let new: Condition<T> = Arc::new(condition);
        let stage = self.last();
        stage.condition = Some(match stage.condition.take() {
            None => new,
            Some(old) => Arc::new(move |e: &T, c: &Context<'_, T>| old(e, c) || new(e, c)),
        });
        self
    }

    /// Stops a looping stage: once an event satisfies `condition`, the loop takes no more
    /// events (and the event itself is not taken).
    pub fn until(mut self, condition: impl Fn(&T) -> bool + Send + Sync + 'static) -> Self {
        if self.refuse_on_group("until() on a group is not supported (put it on a stage)") {
            return self;
        }
        let stage = self.last();
        if stage.until.is_some() {
            let message = format!("stage '{}' has until() twice", stage.name);
            self.errors.push(message);
        } else {
            stage.until = Some(Arc::new(move |e: &T, _: &Context<'_, T>| condition(e)));
        }
        self
    }

    fn quantify(mut self, min: u32, max: Option<u32>, what: &str) -> Self {
        if let Some(group) = self.last_group {
            return self.quantify_group(group, min, max, what);
        }
        let stage = self.last();
        let error = if stage.quantified {
            Some(format!(
                "stage '{}' already has a quantifier; {what} cannot be added",
                stage.name
            ))
        } else if stage.kind != StageKind::Positive {
            Some(format!(
                "negative stage '{}' cannot have a quantifier ({what})",
                stage.name
            ))
        } else if max.is_some_and(|max| max < min) || max == Some(0) {
            Some(format!("stage '{}': {what} is an empty range", stage.name))
        } else {
            stage.quantified = true;
            stage.min = min;
            stage.max = max;
            if min == 0 {
                stage.optional = true;
                stage.min = 1;
            }
            None
        };
        self.errors.extend(error);
        self
    }

    /// A quantifier on the group added last: it repeats the group as a unit.
    fn quantify_group(mut self, group: usize, min: u32, max: Option<u32>, what: &str) -> Self {
        let name = self.group_name(group);
        let g = &mut self.groups[group];
        if g.quantified {
            self.errors.push(format!(
                "{name} already has a quantifier; {what} cannot be added"
            ));
        } else if max.is_some_and(|max| max < min) || max == Some(0) {
            self.errors
                .push(format!("{name}: {what} is an empty range"));
        } else {
            g.quantified = true;
            g.min = min.max(1);
            g.max = max;
            g.optional |= min == 0;
        }
        self
    }

    /// The last stage matches exactly `n` events.
    pub fn times(self, n: u32) -> Self {
        self.quantify(n, Some(n), &format!("times({n})"))
    }

    /// The last stage matches `lo` to `hi` events (both included).
    pub fn times_range(self, lo: u32, hi: u32) -> Self {
        self.quantify(lo, Some(hi), &format!("times_range({lo}, {hi})"))
    }

    /// The last stage matches one or more events.
    pub fn one_or_more(self) -> Self {
        self.quantify(1, None, "one_or_more()")
    }

    /// The last stage matches `n` or more events.
    pub fn times_or_more(self, n: u32) -> Self {
        self.quantify(n, None, &format!("times_or_more({n})"))
    }

    /// The last stage may match no event at all.
    pub fn optional(mut self) -> Self {
        if let Some(group) = self.last_group {
            self.groups[group].optional = true;
            return self;
        }
        let stage = self.last();
        if stage.kind != StageKind::Positive {
            let message = format!("negative stage '{}' cannot be optional", stage.name);
            self.errors.push(message);
        } else {
            stage.optional = true;
        }
        self
    }

    /// The last (looping) stage takes as many events as it can before the next stage starts.
    pub fn greedy(mut self) -> Self {
        if self.refuse_on_group("greedy() does not apply to a group (as in Flink)") {
            return self;
        }
        self.last().greedy = true;
        self
    }

    /// Events of the last (looping) stage must follow each other directly.
    pub fn consecutive(mut self) -> Self {
        match self.last_group {
            Some(group) => self.groups[group].inner = Contiguity::Strict,
            None => self.last().inner = Contiguity::Strict,
        }
        self
    }

    /// Events of the last (looping) stage may skip matching events too: every combination.
    pub fn allow_combinations(mut self) -> Self {
        match self.last_group {
            Some(group) => self.groups[group].inner = Contiguity::NonDeterministic,
            None => self.last().inner = Contiguity::NonDeterministic,
        }
        self
    }

    /// A match must end less than `ms` milliseconds of event time after it started
    /// (`last - first < ms`); partial matches older than that time out.
    pub fn within(mut self, ms: i64) -> Self {
        if ms <= 0 {
            self.errors
                .push(format!("within({ms}): the time bound must be positive"));
        } else {
            self.within_ms = Some(self.within_ms.map_or(ms, |old| old.min(ms)));
        }
        self
    }

    pub(crate) fn validate(&self) -> Result<(), CepError> {
        let mut errors = self.errors.clone();
        let mut seen: Vec<&str> = Vec::new();
        for (i, stage) in self.stages.iter().enumerate() {
            if seen.contains(&stage.name.as_str()) {
                errors.push(format!("stage name '{}' is used twice", stage.name));
            }
            seen.push(&stage.name);
            if stage.until.is_some() && stage.max.is_some() {
                errors.push(format!(
                    "stage '{}': until() needs a looping stage (one_or_more, times_or_more)",
                    stage.name
                ));
            }
            if stage.greedy && !stage.loops() {
                errors.push(format!(
                    "stage '{}': greedy() needs a looping stage",
                    stage.name
                ));
            }
            // `times(n).consecutive()` is fine (Flink allows it): the inner contiguity governs
            // the gaps between a stage's events, which any stage taking several events has.
            if stage.inner != Contiguity::Relaxed && stage.max == Some(1) {
                errors.push(format!(
                    "stage '{}': consecutive() and allow_combinations() need a quantifier over several events",
                    stage.name
                ));
            }
            if stage.kind != StageKind::Positive && i == 0 {
                errors.push(format!(
                    "negative stage '{}' cannot begin a pattern",
                    stage.name
                ));
            }
            if i + 1 == self.stages.len() {
                match stage.kind {
                    StageKind::Positive => {}
                    StageKind::NotFollowedBy if self.within_ms.is_some() => {}
                    StageKind::NotFollowedBy => errors.push(format!(
                        "negative stage '{}' can end a pattern only with within(): \
                         not_followed_by() at the end needs a time bound",
                        stage.name
                    )),
                    StageKind::NotNext => errors.push(format!(
                        "negative stage '{}' cannot end a pattern (not_next)",
                        stage.name
                    )),
                }
            }
        }
        self.validate_groups(&self.items(), false, &mut errors);
        if self.nullable(&self.items()) {
            errors.push(format!(
                "pattern '{}' has only optional stages: it would match nothing",
                self.name
            ));
        }
        match &self.skip {
            AfterMatchSkipStrategy::SkipToFirst(name)
            | AfterMatchSkipStrategy::SkipToLast(name)
                if !self
                    .stages
                    .iter()
                    .any(|s| &s.name == name && s.kind == StageKind::Positive) =>
            {
                errors.push(format!(
                    "the after-match skip strategy names stage '{name}', which the pattern does not have"
                ));
            }
            _ => {}
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CepError::Pattern {
                pattern: self.name.clone(),
                message: errors.join("; "),
            })
        }
    }

    /// Checks the groups in `items`; `varying`: an enclosing group repeats a varying number
    /// of times (a range, a loop, optional).
    fn validate_groups(&self, items: &[Item], varying: bool, errors: &mut Vec<String>) {
        for item in items {
            match item {
                Item::Stage(i) => {
                    let stage = &self.stages[*i];
                    if varying && stage.kind != StageKind::Positive {
                        errors.push(format!(
                            "negative stage '{}' is inside a group that repeats a varying \
                             number of times (times_range, one_or_more, times_or_more, \
                             optional): negations in groups need times(n)",
                            stage.name
                        ));
                    }
                }
                Item::Group(k, inner) => {
                    let group = &self.groups[*k];
                    let name = self.group_name(*k);
                    if group.inner != Contiguity::Relaxed && group.max == Some(1) {
                        errors.push(format!(
                            "{name}: consecutive() and allow_combinations() need a quantifier over several repetitions"
                        ));
                    }
                    if group.quantified_at_all() && self.nullable(inner) {
                        errors.push(format!(
                            "{name}: every stage in it is optional, so a repetition could match no event"
                        ));
                    }
                    let varies = group.optional || group.max != Some(group.min);
                    self.validate_groups(inner, varying || varies, errors);
                }
            }
        }
    }
}
