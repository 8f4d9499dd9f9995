//! Dynamic patterns (beyond Flink, FLINK-7129): patterns added, replaced and removed while the
//! job runs, through a broadcast stream of serialisable [`PatternDescription`]s.
//!
//! A description is data, not closures: stages with conditions over named fields of the event
//! ([`FieldAccess`]), so it can travel on a stream and live in a checkpoint. An update applies
//! from its timestamp on in event time (at once if it has none): events of each key are
//! matched, in timestamp order, by the patterns in force at their timestamp. Replacing a
//! pattern starts its partial matches over; removing it drops them. Descriptions that do not
//! compile are rejected (counted as dropped records, logged, and sent to a side output if one
//! is set), never a failure of the job.
//!
//! The operator's watermark is the smaller of both inputs', as in Flink: an update stream
//! without watermarks holds matching back until it ends, so give it timestamps and watermarks
//! (or idleness) when it is unbounded.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::function::PatternProcessFunction;
use super::operator::{ActivePattern, CepCore, CepSettings, Epochs};
use super::{AfterMatchSkipStrategy, CepError, Contiguity, Pattern};
use crate::api::{Data, Key, OutputTag};
use crate::operator::{
    Collector, FunctionError, OperatorContext, Record, RuntimeContext, StateInitContext,
    StateSnapshotContext, TwoInputOperator,
};
use crate::state::OperatorStateMode;
use crate::time::Watermark;

/// A value a condition compares a field with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// An integer (compares with floats numerically).
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
}

impl Value {
    fn compare(&self, other: &Self) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Self::Int(a), Self::Int(b)) => Some(a.cmp(b)),
            (Self::Int(a), Self::Float(b)) => (*a as f64).partial_cmp(b),
            (Self::Float(a), Self::Int(b)) => a.partial_cmp(&(*b as f64)),
            (Self::Float(a), Self::Float(b)) => a.partial_cmp(b),
            (Self::Str(a), Self::Str(b)) => Some(a.cmp(b)),
            (Self::Bool(a), Self::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// How an event exposes its fields to described conditions.
pub trait FieldAccess {
    /// The value of field `name`, or `None` if the event has no such field.
    fn field(&self, name: &str) -> Option<Value>;
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A condition on an event's fields. A missing field or values of different kinds make a
/// comparison false.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConditionExpr {
    /// Always true.
    True,
    /// `field op value`.
    Compare {
        /// The field's name.
        field: String,
        /// The comparison.
        op: CmpOp,
        /// The value compared with.
        value: Value,
    },
    /// All of them.
    And(Vec<Self>),
    /// Any of them.
    Or(Vec<Self>),
    /// Not it.
    Not(Box<Self>),
}

impl ConditionExpr {
    /// `field op value`.
    pub fn compare(field: &str, op: CmpOp, value: Value) -> Self {
        Self::Compare {
            field: field.to_string(),
            op,
            value,
        }
    }

    /// Whether `event` satisfies the condition.
    pub fn holds<T: FieldAccess>(&self, event: &T) -> bool {
        match self {
            Self::True => true,
            Self::Compare { field, op, value } => {
                let Some(ordering) = event.field(field).and_then(|f| f.compare(value)) else {
                    return *op == CmpOp::Ne && event.field(field).is_some();
                };
                match op {
                    CmpOp::Eq => ordering.is_eq(),
                    CmpOp::Ne => ordering.is_ne(),
                    CmpOp::Lt => ordering.is_lt(),
                    CmpOp::Le => ordering.is_le(),
                    CmpOp::Gt => ordering.is_gt(),
                    CmpOp::Ge => ordering.is_ge(),
                }
            }
            Self::And(all) => all.iter().all(|c| c.holds(event)),
            Self::Or(any) => any.iter().any(|c| c.holds(event)),
            Self::Not(c) => !c.holds(event),
        }
    }
}

/// How a described stage follows the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StageLink {
    /// The first stage.
    Begin,
    /// `next`.
    Next,
    /// `followed_by`.
    FollowedBy,
    /// `followed_by_any`.
    FollowedByAny,
    /// `not_next`.
    NotNext,
    /// `not_followed_by`.
    NotFollowedBy,
}

/// A described quantifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuantifierDescription {
    /// One event.
    Once,
    /// `times(n)`.
    Times(u32),
    /// `times_range(lo, hi)`.
    TimesRange(u32, u32),
    /// `one_or_more()`.
    OneOrMore,
    /// `times_or_more(n)`.
    TimesOrMore(u32),
}

/// One described stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageDescription {
    /// The stage's name.
    pub name: String,
    /// How it follows the stage before.
    pub link: StageLink,
    /// Its condition.
    pub condition: ConditionExpr,
    /// Its quantifier.
    pub quantifier: QuantifierDescription,
    /// `optional()`.
    pub optional: bool,
    /// `greedy()`.
    pub greedy: bool,
    /// Contiguity inside a loop: `Strict` is `consecutive()`, `NonDeterministic`
    /// `allow_combinations()`.
    pub inner: Contiguity,
    /// `until(..)`.
    pub until: Option<ConditionExpr>,
}

impl StageDescription {
    /// A stage taking one event that satisfies `condition`.
    pub fn new(name: &str, link: StageLink, condition: ConditionExpr) -> Self {
        Self {
            name: name.to_string(),
            link,
            condition,
            quantifier: QuantifierDescription::Once,
            optional: false,
            greedy: false,
            inner: Contiguity::Relaxed,
            until: None,
        }
    }

    /// The same stage with `quantifier`.
    pub fn with_quantifier(mut self, quantifier: QuantifierDescription) -> Self {
        self.quantifier = quantifier;
        self
    }
}

/// A pattern as data (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternDescription {
    /// The pattern's id: matches name it ([`super::Match::pattern`]); an update with the same
    /// id replaces it.
    pub id: String,
    /// Its stages, the first with [`StageLink::Begin`].
    pub stages: Vec<StageDescription>,
    /// `within(ms)`.
    pub within_ms: Option<i64>,
    /// The after-match skip strategy.
    pub skip: AfterMatchSkipStrategy,
}

impl PatternDescription {
    /// Builds the pattern it describes.
    ///
    /// # Errors
    ///
    /// [`CepError::Pattern`] if the description is malformed (no stage, a first stage that
    /// does not begin, a `Begin` later on) or the pattern does not compile.
    pub fn to_pattern<T: FieldAccess + 'static>(&self) -> Result<Pattern<T>, CepError> {
        let malformed = |message: String| CepError::Pattern {
            pattern: self.id.clone(),
            message,
        };
        let mut pattern: Option<Pattern<T>> = None;
        for (i, stage) in self.stages.iter().enumerate() {
            let p = match (pattern.take(), stage.link) {
                (None, StageLink::Begin) => Pattern::begin(&stage.name),
                (None, _) => {
                    return Err(malformed(format!(
                        "stage '{}' must be the Begin stage",
                        stage.name
                    )));
                }
                (Some(_), StageLink::Begin) => {
                    return Err(malformed(format!(
                        "stage {i} ('{}') cannot be a second Begin",
                        stage.name
                    )));
                }
                (Some(p), StageLink::Next) => p.next(&stage.name),
                (Some(p), StageLink::FollowedBy) => p.followed_by(&stage.name),
                (Some(p), StageLink::FollowedByAny) => p.followed_by_any(&stage.name),
                (Some(p), StageLink::NotNext) => p.not_next(&stage.name),
                (Some(p), StageLink::NotFollowedBy) => p.not_followed_by(&stage.name),
            };
            let condition = stage.condition.clone();
            let mut p = p.where_(move |e: &T| condition.holds(e));
            p = match stage.quantifier {
                QuantifierDescription::Once => p,
                QuantifierDescription::Times(n) => p.times(n),
                QuantifierDescription::TimesRange(lo, hi) => p.times_range(lo, hi),
                QuantifierDescription::OneOrMore => p.one_or_more(),
                QuantifierDescription::TimesOrMore(n) => p.times_or_more(n),
            };
            p = match stage.inner {
                Contiguity::Strict => p.consecutive(),
                Contiguity::NonDeterministic => p.allow_combinations(),
                Contiguity::Relaxed => p,
            };
            if stage.greedy {
                p = p.greedy();
            }
            if let Some(until) = stage.until.clone() {
                p = p.until(move |e: &T| until.holds(e));
            }
            if stage.optional {
                p = p.optional();
            }
            pattern = Some(p);
        }
        let mut pattern = pattern.ok_or_else(|| malformed("it has no stage".to_string()))?;
        if let Some(within) = self.within_ms {
            pattern = pattern.within(within);
        }
        let pattern = pattern
            .with_skip_strategy(self.skip.clone())
            .named(&self.id);
        pattern.validate()?;
        Ok(pattern)
    }
}

/// An element of the pattern-update stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PatternUpdate {
    /// Adds the pattern, or replaces the one with its id.
    Upsert(PatternDescription),
    /// Removes the pattern with this id.
    Remove(String),
}

/// The operator state holding the dynamic patterns.
const PATTERNS_STATE: &str = "_cep_patterns";

/// The patterns of one epoch: `(id, version, description)`.
type EpochDescriptions = Vec<(String, u64, PatternDescription)>;

/// What a checkpoint keeps of the patterns: each epoch's descriptions, and the last version
/// given to each id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Registry {
    epochs: Vec<(i64, EpochDescriptions)>,
    versions: BTreeMap<String, u64>,
}

/// Matches the patterns of a broadcast update stream over a keyed stream.
pub(crate) struct DynamicCepOperator<KS, K, T, O, F> {
    key_selector: KS,
    function: F,
    core: CepCore<K, T>,
    epochs: Epochs<T>,
    registry: Registry,
    rejected: Option<OutputTag<String>>,
    /// Only the first subtask reports rejected updates (every subtask rejects its copy).
    reports: bool,
    _out: std::marker::PhantomData<fn() -> O>,
}

impl<KS: Clone, K: Key, T: Data + FieldAccess, O, F: Clone> Clone
    for DynamicCepOperator<KS, K, T, O, F>
{
    fn clone(&self) -> Self {
        Self::new(
            self.key_selector.clone(),
            self.function.clone(),
            self.core.settings.clone(),
            self.rejected.clone(),
        )
    }
}

impl<KS, K: Key, T: Data + FieldAccess, O, F> DynamicCepOperator<KS, K, T, O, F> {
    pub(crate) fn new(
        key_selector: KS,
        function: F,
        settings: CepSettings<T>,
        rejected: Option<OutputTag<String>>,
    ) -> Self {
        Self {
            key_selector,
            function,
            core: CepCore::new(settings),
            epochs: Epochs::fixed(Vec::new()),
            registry: Registry::default(),
            rejected,
            reports: true,
            _out: std::marker::PhantomData,
        }
    }

    /// Applies an update from event time `from` on.
    fn apply(&mut self, update: &PatternUpdate, from: i64) -> Result<(), CepError> {
        match update {
            PatternUpdate::Upsert(description) => {
                let compiled = Arc::new(description.to_pattern::<T>()?.compile()?);
                let version = self
                    .registry
                    .versions
                    .entry(description.id.clone())
                    .or_insert(0);
                *version += 1;
                let active = ActivePattern {
                    id: description.id.clone(),
                    version: *version,
                    compiled,
                };
                self.epochs.change(from, |patterns| {
                    patterns.retain(|p| p.id != active.id);
                    patterns.push(active.clone());
                    patterns.sort_by(|a, b| a.id.cmp(&b.id));
                });
                self.change_registry(from, |list| {
                    list.retain(|(id, _, _)| *id != description.id);
                    list.push((description.id.clone(), active.version, description.clone()));
                    list.sort_by(|a, b| a.0.cmp(&b.0));
                });
            }
            PatternUpdate::Remove(id) => {
                self.epochs
                    .change(from, |patterns| patterns.retain(|p| &p.id != id));
                self.change_registry(from, |list| list.retain(|(i, _, _)| i != id));
            }
        }
        Ok(())
    }

    fn change_registry(&mut self, from: i64, mut change: impl FnMut(&mut EpochDescriptions)) {
        let epochs = &mut self.registry.epochs;
        let index = epochs.partition_point(|(start, _)| *start < from);
        if epochs.get(index).is_none_or(|(start, _)| *start != from) {
            let current = index
                .checked_sub(1)
                .map(|i| epochs[i].1.clone())
                .unwrap_or_default();
            epochs.insert(index, (from, current));
        }
        for (_, list) in &mut epochs[index..] {
            change(list);
        }
    }
}

impl<KS, K, T, O, F> TwoInputOperator<T, PatternUpdate> for DynamicCepOperator<KS, K, T, O, F>
where
    K: Key,
    T: Data + FieldAccess,
    O: Send + 'static,
    F: PatternProcessFunction<K, T, O>,
    KS: Fn(&T) -> K + Clone + Send + 'static,
{
    type Out = O;

    fn initialize_state(&mut self, ctx: &mut StateInitContext) -> Result<(), FunctionError> {
        self.core.runtime.initialize(ctx)?;
        let restored: Vec<Registry> = ctx.list_state(PATTERNS_STATE)?;
        if let Some(registry) = restored.into_iter().next() {
            let mut epochs = Vec::new();
            for (from, list) in &registry.epochs {
                let mut patterns = Vec::new();
                for (id, version, description) in list {
                    let compiled = description
                        .to_pattern::<T>()
                        .and_then(|p| p.compile())
                        .map_err(|e| format!("restored dynamic pattern '{id}': {e}"))?;
                    patterns.push(ActivePattern {
                        id: id.clone(),
                        version: *version,
                        compiled: Arc::new(compiled),
                    });
                }
                epochs.push((*from, patterns));
            }
            self.epochs = Epochs::fixed(Vec::new());
            for (from, patterns) in epochs {
                self.epochs.change(from, |list| *list = patterns.clone());
            }
            self.registry = registry;
        }
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &mut StateSnapshotContext) -> Result<(), FunctionError> {
        self.core.runtime.snapshot(ctx)?;
        ctx.add_list_state(
            PATTERNS_STATE,
            OperatorStateMode::Broadcast,
            std::slice::from_ref(&self.registry),
        )?;
        Ok(())
    }

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.reports = ctx.subtask_index == 0;
        self.function.open(ctx)
    }

    fn process1(
        &mut self,
        record: Record<T>,
        ctx: &mut OperatorContext<'_>,
        _out: &mut Collector<'_, O>,
    ) {
        let key = (self.key_selector)(&record.value);
        self.core
            .process(&key, record.value, record.timestamp, &self.epochs, ctx);
    }

    fn process2(
        &mut self,
        record: Record<PatternUpdate>,
        ctx: &mut OperatorContext<'_>,
        _out: &mut Collector<'_, O>,
    ) {
        // Events up to the watermark are matched: an update applies after them at the earliest.
        let from = record
            .timestamp
            .unwrap_or(i64::MIN)
            .max(self.core.watermark.saturating_add(1));
        if let Err(error) = self.apply(&record.value, from)
            && self.reports
        {
            tracing::warn!(%error, "dynamic CEP pattern update rejected");
            ctx.count_dropped_record();
            if let Some(tag) = &self.rejected {
                ctx.output(tag, error.to_string());
            }
        }
    }

    fn on_watermark(
        &mut self,
        watermark: Watermark,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, O>,
    ) {
        self.core
            .on_watermark(watermark, &self.epochs, &mut self.function, ctx, out);
        // Epochs that ended before the watermark matched their last events.
        self.epochs.prune(self.core.watermark);
        let keep_from = self
            .registry
            .epochs
            .partition_point(|(from, _)| *from <= self.core.watermark);
        if keep_from > 1 {
            self.registry.epochs.drain(..keep_from - 1);
        }
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.function.close()
    }
}
