//! Plans that keep a window aggregation's windows after it: cascaded window aggregations and
//! time-bounded joins with window rows (Flink's window property propagation).
//!
//! A window aggregation (or a window TVF) emits rows that carry their window in
//! `window_start` and `window_end`, and projections keep them (`window_start AS starttime`).
//! Rows of a window `[start, end)` reach the next operator before the watermark passes
//! `end - 1`: the window aggregation emits them when the watermark reaches `end - 1` and
//! forwards that watermark only after them, and a window TVF row's own time is before its
//! window's end. So such rows are an append-only stream whose *window time* (`window_end - 1`)
//! is a valid event time for what follows, and two plans can be bounded by the watermark
//! instead of growing without end:
//!
//! ## Cascaded window aggregations
//!
//! `SELECT MAX(num), starttime, endtime FROM (<window aggregation>) GROUP BY starttime,
//! endtime` (Nexmark q5): a `GROUP BY` over both window columns of windowed rows is again a
//! window aggregation of the same windows, not an updating group aggregation.
//! [`Plan::CascadedWindowAgg`] keys the rows by the group key (the window columns among it), so
//! a key holds one window: its accumulators wait in `ValueState`, an event-time timer at
//! `window_end - 1` emits the key's row once and clears it. The output has the layout of the
//! group aggregation it replaces (`keys ++ results`), append-only, and keeps its window, so
//! a window join of it with another aggregation of the same windows is planned as one
//! ([`crate::time_joins`]).
//!
//! A `GROUP BY` over only one of the window columns, or over windowed rows of an updating
//! input, stays a group aggregation. A join of a cascaded aggregation with rows of another
//! window stays a regular join (as before cascading existed), where two window aggregations
//! of different windows are refused as a window join.
//!
//! ## Window interval joins
//!
//! `bid B JOIN (<TUMBLE aggregation>) B1 ON B.price = B1.maxprice WHERE B.dateTime >=
//! B1.window_start AND B.dateTime < B1.window_end` (Nexmark q7): an inner join's `WHERE`
//! conjuncts are join conditions (Flink pushes them into the join), and these bound the
//! event time `t` of one side by the window of the other. A window row's time
//! `w = window_end - 1` with a window size in `[min, max]` gives `window_start` in
//! `[w + 1 - max, w + 1 - min]`, so each bound on `t` bounds `w` relative to `t`
//! ([`window_time_bounds`]). With both a lower and an upper bound, the join is an interval
//! join ([`Plan::WindowIntervalJoin`]) whose window rows are at their window time: each side's
//! rows wait only until the watermark passes their interval (the outer interval join operator
//! of [`crate::time_joins`], which also runs inner joins), instead of forever in a regular
//! join. The bounding conjuncts stay in the join's condition, so the bounds only choose
//! candidates: the pairs are those of the regular join.
//!
//! ## Invariants
//!
//! - Bounds are implied by the conditions ([`window_time_bounds`] is sound for every window
//!   of the kind), and the conditions are still evaluated on each pair, so the result is that
//!   of the plan it replaces, for rows that are not late.
//! - Every captured plan reads append-only inputs, emits an append-only result, and keeps
//!   state only until the watermark passes the window's (or the interval's) end.

use eichhorn::prelude::*;
use eichhorn::state::ValueState;

use crate::agg::{Accumulator, AggCall};
use crate::expr::{ArithOp, CompareOp, Expr};
use crate::join::JoinKind;
use crate::plan::Plan;
use crate::time_joins::{Keys, window_of};
use crate::types::{Change, Row, Schema, Value};
use crate::window::WindowKind;

/// Whether `plan`'s rows get their windows from a cascaded window aggregation (directly or
/// through calcs keeping the window columns).
pub(crate) fn is_cascaded(plan: &Plan) -> bool {
    match plan {
        Plan::CascadedWindowAgg { .. } => true,
        Plan::Calc { input, .. } => is_cascaded(input),
        _ => false,
    }
}

/// The aggregation of a `GROUP BY` over `pre` (rows `keys ++ arguments`, the first
/// `key_count` columns the group key): a cascaded window aggregation when the key holds both
/// window columns of `pre`'s windowed, append-only rows, else a group aggregation.
pub(crate) fn group_or_cascaded(
    pre: Plan,
    key_count: usize,
    aggs: Vec<AggCall>,
    schema: Schema,
) -> Plan {
    if let Some((window, start, end)) = cascade_keys(&pre, key_count) {
        return Plan::CascadedWindowAgg {
            input: Box::new(pre),
            window,
            key_count,
            start,
            end,
            aggs,
            schema,
        };
    }
    Plan::GroupAgg {
        input: Box::new(pre),
        key_count,
        aggs,
        schema,
    }
}

/// The window and the key positions of `window_start` and `window_end`, when `pre` (a
/// pre-projection calc) groups windowed rows by both.
fn cascade_keys(pre: &Plan, key_count: usize) -> Option<(WindowKind, usize, usize)> {
    let Plan::Calc {
        input, projection, ..
    } = pre
    else {
        return None;
    };
    let (window, start, end) = window_of(input)?;
    if window.is_merging() || !input.is_append_only() {
        return None;
    }
    let keys = projection.get(..key_count)?;
    let start = keys.iter().position(|e| *e == Expr::Column(start))?;
    let end = keys.iter().position(|e| *e == Expr::Column(end))?;
    Some((window, start, end))
}

/// Which window column a time bound compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowEdge {
    /// `window_start`.
    Start,
    /// `window_end`.
    End,
}

/// One bound of an event time `t` by a window: `t >= edge + offset_ms` (a lower bound) or
/// `t <= edge + offset_ms` (an upper bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeBound {
    /// The window column.
    pub edge: WindowEdge,
    /// Whether `t` is at least (`true`) or at most (`false`) the edge plus the offset.
    pub lower: bool,
    /// The offset added to the edge.
    pub offset_ms: i64,
}

/// The smallest and largest window of `window`'s kind, or `None` for sessions (unbounded).
fn size_range(window: &WindowKind) -> Option<(i64, i64)> {
    match *window {
        WindowKind::Tumble { size_ms, .. } | WindowKind::Hop { size_ms, .. } => {
            Some((size_ms, size_ms))
        }
        WindowKind::Cumulate { step_ms, size_ms } => Some((step_ms, size_ms)),
        WindowKind::Session { .. } => None,
    }
}

/// The bounds `[t + lower, t + upper]` of a window's time `w = window_end - 1` that
/// `bounds` on `t` imply for every window of `window`'s kind; `None` without both a lower
/// and an upper bound of `w`, for sessions, or when the bounds are empty.
///
/// With a window size `size` in `[min, max]`, `window_end = w + 1` and `window_start =
/// w + 1 - size`:
/// - `t >= window_end + o` gives `w <= t - 1 - o`; `t >= window_start + o` gives
///   `w <= t + size - 1 - o <= t + max - 1 - o`;
/// - `t <= window_end + o` gives `w >= t - 1 - o`; `t <= window_start + o` gives
///   `w >= t + size - 1 - o >= t + min - 1 - o`.
pub fn window_time_bounds(window: &WindowKind, bounds: &[EdgeBound]) -> Option<(i64, i64)> {
    let (min, max) = size_range(window)?;
    let mut lower: Option<i64> = None;
    let mut upper: Option<i64> = None;
    for bound in bounds {
        let o = bound.offset_ms;
        if bound.lower {
            // An upper bound of w.
            let at_most = match bound.edge {
                WindowEdge::End => (-1i64).checked_sub(o)?,
                WindowEdge::Start => max.checked_sub(1)?.checked_sub(o)?,
            };
            upper = Some(upper.map_or(at_most, |u| u.min(at_most)));
        } else {
            let at_least = match bound.edge {
                WindowEdge::End => (-1i64).checked_sub(o)?,
                WindowEdge::Start => min.checked_sub(1)?.checked_sub(o)?,
            };
            lower = Some(lower.map_or(at_least, |l| l.max(at_least)));
        }
    }
    let (lower, upper) = (lower?, upper?);
    (lower <= upper).then_some((lower, upper))
}

/// `column + offset` for `Column(column)`, `Column(column) ± literal` and `literal +
/// Column(column)`.
fn column_plus_offset(expr: &Expr) -> Option<(usize, i64)> {
    let literal = |e: &Expr| match e {
        Expr::Literal(Value::BigInt(v)) => Some(*v),
        _ => None,
    };
    match expr {
        Expr::Column(c) => Some((*c, 0)),
        Expr::Arith(ArithOp::Add, a, b, _) => match (a.as_ref(), b.as_ref()) {
            (Expr::Column(c), other) | (other, Expr::Column(c)) => Some((*c, literal(other)?)),
            _ => None,
        },
        Expr::Arith(ArithOp::Sub, a, b, _) => match a.as_ref() {
            Expr::Column(c) => Some((*c, literal(b)?.checked_neg()?)),
            _ => None,
        },
        _ => None,
    }
}

/// The bound a conjunct puts on column `time` by the window columns `start` and `end` (all
/// indexes into the joined row), if it is a comparison of that shape.
pub(crate) fn edge_bound(
    conjunct: &Expr,
    time: usize,
    start: usize,
    end: usize,
) -> Option<EdgeBound> {
    let Expr::Compare(op, a, b) = conjunct else {
        return None;
    };
    // Normalize to `time op other`.
    let (op, other) = if **a == Expr::Column(time) {
        (*op, b.as_ref())
    } else if **b == Expr::Column(time) {
        let flipped = match op {
            CompareOp::Lt => CompareOp::Gt,
            CompareOp::LtEq => CompareOp::GtEq,
            CompareOp::Gt => CompareOp::Lt,
            CompareOp::GtEq => CompareOp::LtEq,
            other => *other,
        };
        (flipped, a.as_ref())
    } else {
        return None;
    };
    let (column, offset_ms) = column_plus_offset(other)?;
    let edge = if column == start {
        WindowEdge::Start
    } else if column == end {
        WindowEdge::End
    } else {
        return None;
    };
    // Times are whole milliseconds: `t > x` is `t >= x + 1`, `t < x` is `t <= x - 1`.
    let (lower, offset_ms) = match op {
        CompareOp::GtEq => (true, offset_ms),
        CompareOp::Gt => (true, offset_ms.checked_add(1)?),
        CompareOp::LtEq => (false, offset_ms),
        CompareOp::Lt => (false, offset_ms.checked_sub(1)?),
        CompareOp::Eq | CompareOp::NotEq => return None,
    };
    Some(EdgeBound {
        edge,
        lower,
        offset_ms,
    })
}

/// The conjuncts of a condition.
fn conjuncts_of(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::And(a, b) => {
            let mut parts = conjuncts_of(a);
            parts.extend(conjuncts_of(b));
            parts
        }
        other => vec![other],
    }
}

/// A window interval join found in a join's conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    window_left: bool,
    /// The plain side's event-time column (an index into its side).
    time: usize,
    /// The windowed side's `window_end` column (an index into its side).
    window_end: usize,
    /// The window time relative to the plain side's time.
    lower_ms: i64,
    upper_ms: i64,
}

/// Finds the bounds on the plain side's time attributes by the windowed side's windows in
/// `conjuncts` (over `left ++ right`); returns what it found and which conjuncts bound it.
fn find(left: &Plan, right: &Plan, conjuncts: &[&Expr]) -> Option<(Found, Vec<usize>)> {
    let left_width = left.schema().columns.len();
    for window_left in [false, true] {
        let (windowed, plain, windowed_at, plain_at) = if window_left {
            (left, right, 0, left_width)
        } else {
            (right, left, left_width, 0)
        };
        let Some((window, start, end)) = window_of(windowed) else {
            continue;
        };
        if !windowed.is_append_only() || !plain.is_append_only() {
            continue;
        }
        for (time, column) in plain.schema().columns.iter().enumerate() {
            if !column.rowtime {
                continue;
            }
            let mut bounds = Vec::new();
            let mut used = Vec::new();
            for (i, conjunct) in conjuncts.iter().enumerate() {
                if let Some(bound) = edge_bound(
                    conjunct,
                    plain_at + time,
                    windowed_at + start,
                    windowed_at + end,
                ) {
                    bounds.push(bound);
                    used.push(i);
                }
            }
            if let Some((lower_ms, upper_ms)) = window_time_bounds(&window, &bounds) {
                let found = Found {
                    window_left,
                    time,
                    window_end: end,
                    lower_ms,
                    upper_ms,
                };
                return Some((found, used));
            }
        }
    }
    None
}

/// Plans a join as a window interval join when one side's rows are windowed, the other's
/// have an event-time attribute, and the conditions bound that time by the windows from both
/// sides. `keys` holds the equality keys and the rest of `ON`; `pushed` the conjuncts of an
/// inner join's `WHERE` (over `left ++ right`), of which those that bound the time join the
/// condition. `None` (the caller plans a regular join) otherwise.
pub(crate) fn plan_window_interval_join(
    left: &Plan,
    right: &Plan,
    kind: JoinKind,
    keys: &Keys,
    pushed: &[Expr],
    schema: &Schema,
) -> Option<Plan> {
    let mut candidates: Vec<&Expr> = keys.condition.iter().flat_map(conjuncts_of).collect();
    let on_count = candidates.len();
    if kind == JoinKind::Inner {
        candidates.extend(pushed.iter().flat_map(conjuncts_of));
    }
    let (found, used) = find(left, right, &candidates)?;
    // The bounding conjuncts of WHERE join the condition; those of ON are in it already.
    let mut condition = keys.condition.clone();
    for &i in used.iter().filter(|&&i| i >= on_count) {
        let bound = candidates[i].clone();
        condition = Some(match condition {
            None => bound,
            Some(c) => Expr::And(Box::new(c), Box::new(bound)),
        });
    }
    // Bounds of the right time relative to the left time.
    let (left_time, right_time, lower_ms, upper_ms) = if found.window_left {
        // w ∈ [t + lower, t + upper] with t the right time: t ∈ [w - upper, w - lower].
        (
            found.window_end,
            found.time,
            found.upper_ms.checked_neg()?,
            found.lower_ms.checked_neg()?,
        )
    } else {
        (found.time, found.window_end, found.lower_ms, found.upper_ms)
    };
    Some(Plan::WindowIntervalJoin {
        left: Box::new(left.clone()),
        right: Box::new(right.clone()),
        kind,
        left_keys: keys.left.clone(),
        right_keys: keys.right.clone(),
        window_left: found.window_left,
        left_time,
        right_time,
        lower_ms,
        upper_ms,
        condition,
        schema: schema.clone(),
    })
}

/// The bounds of a window interval join over its time *columns* (`window_end` itself for the
/// windowed side, one more than its window time): right column in `[left column + lower,
/// left column + upper]`.
pub(crate) fn column_bounds(window_left: bool, lower_ms: i64, upper_ms: i64) -> (i64, i64) {
    if window_left {
        // left column = w + 1: right ∈ [w + lower, w + upper] = [column + lower - 1, ..].
        (lower_ms.saturating_sub(1), upper_ms.saturating_sub(1))
    } else {
        (lower_ms.saturating_add(1), upper_ms.saturating_add(1))
    }
}

/// The cascaded window aggregation operator: rows keyed by the group key, which holds the
/// window, so one key is one window; its accumulators wait in `ValueState` until the timer at
/// `window_end - 1`.
#[operator(new = false)]
pub(crate) struct CascadedWindowAggOp {
    #[state]
    accumulators: ValueState<Vec<Accumulator>>,
    aggs: Vec<AggCall>,
    /// The key position of `window_end`.
    end: usize,
    errors: OutputTag<String>,
    name: String,
}

impl CascadedWindowAggOp {
    pub(crate) fn new(
        aggs: Vec<AggCall>,
        end: usize,
        errors: OutputTag<String>,
        name: String,
    ) -> Self {
        Self {
            accumulators: ValueState::new("accumulators"),
            aggs,
            end,
            errors,
            name,
        }
    }
}

impl KeyedProcessFunction for CascadedWindowAggOp {
    type Key = Vec<Value>;
    type In = Change;
    type Out = Change;

    fn process_element(
        &mut self,
        change: Change,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        _out: &mut Collector<'_, Change>,
    ) {
        if !change.kind.is_accumulate() {
            let message = format!(
                "{}: a retraction of a window's row, in row {change}",
                self.name
            );
            ctx.output(&self.errors, message);
            return;
        }
        let Some(end) = ctx.current_key().get(self.end).and_then(Value::as_i64) else {
            let message = format!("{}: window_end is NULL, in row {change}", self.name);
            ctx.output(&self.errors, message);
            return;
        };
        let fire_at = end.saturating_sub(1);
        if fire_at <= ctx.current_watermark() {
            ctx.count_late_record();
            return;
        }
        // The timer is registered with the key's first row: the state leaves only through it.
        let mut accumulators = self.accumulators.value(ctx).unwrap_or_else(|| {
            ctx.register_event_time_timer(fire_at);
            self.aggs.iter().map(AggCall::create_append_only).collect()
        });
        for (call, acc) in self.aggs.iter().zip(&mut accumulators) {
            call.accumulate(acc, &change.row, false);
        }
        self.accumulators.update(ctx, accumulators);
    }

    fn on_timer(
        &mut self,
        _timestamp: i64,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) {
        let Some(accumulators) = self.accumulators.value(ctx) else {
            return;
        };
        self.accumulators.clear(ctx);
        let mut row: Row = ctx.current_key().clone();
        row.extend(
            self.aggs
                .iter()
                .zip(&accumulators)
                .map(|(call, acc)| call.result(acc)),
        );
        out.collect(Change::insert(row));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bound(edge: WindowEdge, lower: bool, offset_ms: i64) -> EdgeBound {
        EdgeBound {
            edge,
            lower,
            offset_ms,
        }
    }

    fn windows() -> impl Strategy<Value = WindowKind> {
        prop_oneof![
            (1i64..40).prop_map(|size_ms| WindowKind::Tumble {
                size_ms,
                offset_ms: 0
            }),
            (1i64..20, 1i64..5).prop_map(|(slide_ms, factor)| WindowKind::Hop {
                slide_ms,
                size_ms: slide_ms * factor,
                offset_ms: 0
            }),
            (1i64..20, 1i64..5).prop_map(|(step_ms, factor)| WindowKind::Cumulate {
                step_ms,
                size_ms: step_ms * factor
            }),
        ]
    }

    fn edge_bounds() -> impl Strategy<Value = Vec<EdgeBound>> {
        proptest::collection::vec(
            (any::<bool>(), any::<bool>(), -50i64..50).prop_map(|(start, lower, offset)| {
                let edge = if start {
                    WindowEdge::Start
                } else {
                    WindowEdge::End
                };
                bound(edge, lower, offset)
            }),
            1..4,
        )
    }

    proptest! {
        /// The bounds are implied by the conditions: every window of the kind whose edges
        /// satisfy all bounds of `t` has its time `window_end - 1` within `[t + lower, t +
        /// upper]`. So the interval join never misses a pair the conditions admit.
        #[test]
        fn window_time_bounds_hold_for_every_admitted_window(
            window in windows(),
            bounds in edge_bounds(),
            t in -200i64..200,
        ) {
            let Some((lower, upper)) = window_time_bounds(&window, &bounds) else {
                return Ok(());
            };
            let mut all = std::collections::BTreeSet::new();
            for x in t - 300..t + 300 {
                all.extend(window.assign(x));
            }
            for (start, end) in all {
                let admitted = bounds.iter().all(|b| {
                    let edge = match b.edge {
                        WindowEdge::Start => start,
                        WindowEdge::End => end,
                    };
                    if b.lower { t >= edge + b.offset_ms } else { t <= edge + b.offset_ms }
                });
                if admitted {
                    let w = end - 1;
                    prop_assert!(
                        t + lower <= w && w <= t + upper,
                        "{window:?} [{start}, {end}) for t={t}: w={w} outside [{lower}, {upper}]"
                    );
                }
            }
        }
    }

    #[test]
    fn bounds_of_the_nexmark_q7_conditions() {
        let tumble = WindowKind::Tumble {
            size_ms: 10_000,
            offset_ms: 0,
        };
        // window_start <= t < window_end: w in [t, t + size - 1], exactly the window of t.
        let own = [
            bound(WindowEdge::Start, true, 0),
            bound(WindowEdge::End, false, -1),
        ];
        assert_eq!(window_time_bounds(&tumble, &own), Some((0, 9_999)));
        // Flink's t BETWEEN window_end - 10 s AND window_end.
        let flink = [
            bound(WindowEdge::End, true, -10_000),
            bound(WindowEdge::End, false, 0),
        ];
        assert_eq!(window_time_bounds(&tumble, &flink), Some((-1, 9_999)));
        // One side only, sessions, or empty bounds: no interval.
        assert_eq!(window_time_bounds(&tumble, &own[..1]), None);
        let session = WindowKind::Session { gap_ms: 10 };
        assert_eq!(window_time_bounds(&session, &own), None);
        let empty = [
            bound(WindowEdge::End, true, 0),
            bound(WindowEdge::End, false, -5),
        ];
        assert_eq!(window_time_bounds(&tumble, &empty), None);
    }

    #[test]
    fn conditions_are_read_as_bounds_of_the_time_column() {
        let column = |i| Box::new(Expr::Column(i));
        let compare = |op, a, b| Expr::Compare(op, a, b);
        let minus = |c, ms| {
            Box::new(Expr::Arith(
                ArithOp::Sub,
                Box::new(Expr::Column(c)),
                Box::new(Expr::Literal(Value::BigInt(ms))),
                crate::types::DataType::Timestamp,
            ))
        };
        // Time column 0, window_start 5, window_end 6.
        let read = |e: &Expr| edge_bound(e, 0, 5, 6);
        assert_eq!(
            read(&compare(CompareOp::Lt, column(0), column(6))),
            Some(bound(WindowEdge::End, false, -1))
        );
        assert_eq!(
            read(&compare(CompareOp::Lt, column(5), column(0))),
            Some(bound(WindowEdge::Start, true, 1))
        );
        assert_eq!(
            read(&compare(CompareOp::GtEq, column(0), minus(6, 1_000))),
            Some(bound(WindowEdge::End, true, -1_000))
        );
        assert_eq!(
            read(&compare(CompareOp::LtEq, minus(5, 7), column(0))),
            Some(bound(WindowEdge::Start, true, -7))
        );
        // Other columns, equalities and other shapes are ordinary conditions.
        assert_eq!(read(&compare(CompareOp::Lt, column(1), column(6))), None);
        assert_eq!(read(&compare(CompareOp::Lt, column(0), column(4))), None);
        assert_eq!(read(&compare(CompareOp::Eq, column(0), column(6))), None);
        assert_eq!(read(&Expr::Column(0)), None);
    }
}
