//! Rewrites of a plan before it runs: the few logical optimizations of Flink's planner that
//! change what a SQL job costs, never what it computes.
//!
//! The planner ([`crate::plan`]) builds a plan that mirrors the query text; the translator
//! runs [`optimize`] on it once, just before it becomes operators, and `EXPLAIN` shows the
//! optimized plan. Planning itself never sees optimized shapes, so rules that recognise a
//! plan's shape (window joins, window aggregations over a TVF) are unaffected.
//!
//! ## Rules
//!
//! - **Filter into an inner join** (Calcite's `FilterJoinRule`): a `WHERE` over an inner
//!   regular join becomes part of the join's condition, so pairs it rejects are never built
//!   nor emitted. Only for inner joins: over an outer join, `WHERE` also drops padded rows,
//!   which an `ON` condition would keep.
//! - **Join input pruning** (Calcite's `ProjectJoinTransposeRule`): a regular join's inputs
//!   keep only the columns the join (keys, condition) and the calc above it read, so the rows
//!   each side keeps in state, and the joined rows, are narrow (Nexmark q4 keeps 4 of an
//!   auction's 10 columns, 3 of a bid's 7).
//! - **Calc merge** (`CalcMergeRule`, restricted): a calc over a calc whose projection only
//!   picks columns and constants folds into one, when at most one of them filters.
//!
//! ## Invariants
//!
//! - A rewritten node has the same schema (types, order), the same append-only property and
//!   the same rows and changes as the original; only the operators in between differ.
//! - Every rule applies to its own output without a change (the rules are idempotent), so
//!   optimizing twice is optimizing once.

use std::collections::BTreeMap;

use crate::expr::Expr;
use crate::join::JoinKind;
use crate::plan::Plan;
use crate::types::Schema;

/// The plan with the rules applied, bottom-up.
pub(crate) fn optimize(plan: &Plan) -> Plan {
    rewrite(plan.clone())
}

fn rewrite(mut plan: Plan) -> Plan {
    for child in children(&mut plan) {
        let taken = std::mem::replace(child, placeholder());
        *child = rewrite(taken);
    }
    apply_rules(plan)
}

/// Applies the rules at the root of `plan` (its inputs are rewritten already).
fn apply_rules(plan: Plan) -> Plan {
    let Plan::Calc {
        input,
        filter,
        projection,
        schema,
    } = plan
    else {
        return plan;
    };
    match *input {
        Plan::Join {
            left,
            right,
            kind,
            left_keys,
            right_keys,
            condition,
            schema: join_schema,
        } => calc_over_join(
            CalcParts {
                filter,
                projection,
                schema,
            },
            JoinParts {
                left: *left,
                right: *right,
                kind,
                left_keys,
                right_keys,
                condition,
                schema: join_schema,
            },
        ),
        Plan::Calc {
            input: inner_input,
            filter: inner_filter,
            projection: inner_projection,
            ..
        } if mergeable(&inner_projection, inner_filter.as_ref(), filter.as_ref()) => {
            let substitute = |e: &Expr| substitute(e, &inner_projection);
            // The merged calc may read fewer columns of a join below it: apply again.
            apply_rules(Plan::Calc {
                input: inner_input,
                filter: inner_filter.or_else(|| filter.as_ref().map(substitute)),
                projection: projection.iter().map(substitute).collect(),
                schema,
            })
        }
        other => Plan::Calc {
            input: Box::new(other),
            filter,
            projection,
            schema,
        },
    }
}

/// A stand-in while a child is being rewritten.
fn placeholder() -> Plan {
    Plan::Union {
        inputs: Vec::new(),
        schema: Schema::default(),
    }
}

/// The inputs of `plan`, to rewrite in place.
fn children(plan: &mut Plan) -> Vec<&mut Plan> {
    match plan {
        Plan::Scan { .. } => Vec::new(),
        Plan::Calc { input, .. }
        | Plan::GroupAgg { input, .. }
        | Plan::WindowAgg { input, .. }
        | Plan::CascadedWindowAgg { input, .. }
        | Plan::WindowTvf { input, .. }
        | Plan::Rank { input, .. }
        | Plan::OverAgg { input, .. }
        | Plan::Sort { input, .. } => vec![&mut **input],
        Plan::Join { left, right, .. }
        | Plan::IntervalJoin { left, right, .. }
        | Plan::WindowIntervalJoin { left, right, .. }
        | Plan::TemporalJoin { left, right, .. }
        | Plan::WindowJoin { left, right, .. } => vec![&mut **left, &mut **right],
        Plan::MatchRecognize(mr) => vec![&mut *mr.input],
        Plan::Union { inputs, .. } => inputs.iter_mut().collect(),
    }
}

/// A calc's fields.
struct CalcParts {
    filter: Option<Expr>,
    projection: Vec<Expr>,
    schema: Schema,
}

/// A regular join's fields.
struct JoinParts {
    left: Plan,
    right: Plan,
    kind: JoinKind,
    left_keys: Vec<usize>,
    right_keys: Vec<usize>,
    condition: Option<Expr>,
    schema: Schema,
}

/// A calc over a regular join: its filter into the join (inner joins), then each join input
/// narrowed to the columns read above it.
fn calc_over_join(calc: CalcParts, join: JoinParts) -> Plan {
    let CalcParts {
        mut filter,
        mut projection,
        schema,
    } = calc;
    let JoinParts {
        left,
        right,
        kind,
        mut left_keys,
        mut right_keys,
        mut condition,
        schema: join_schema,
    } = join;
    if kind == JoinKind::Inner
        && let Some(f) = filter.take()
    {
        condition = Some(match condition {
            None => f,
            Some(c) => Expr::And(Box::new(c), Box::new(f)),
        });
    }
    let left_width = left.schema().columns.len();
    let right_width = right.schema().columns.len();
    let mut used = vec![false; left_width + right_width];
    let mut mark = |i: usize| {
        if let Some(u) = used.get_mut(i) {
            *u = true;
        }
    };
    for e in filter.iter().chain(&projection).chain(&condition) {
        for_each_column(e, &mut mark);
    }
    left_keys.iter().for_each(|&i| mark(i));
    right_keys.iter().for_each(|&i| mark(i + left_width));
    // A side keeps at least one column: a join of zero-width rows would still be right, but
    // narrow enough is narrow enough, and plans stay easy to read.
    let mut kept_left: Vec<usize> = (0..left_width).filter(|&i| used[i]).collect();
    if kept_left.is_empty() && left_width > 0 {
        kept_left.push(0);
    }
    let mut kept_right: Vec<usize> = (0..right_width).filter(|&i| used[i + left_width]).collect();
    if kept_right.is_empty() && right_width > 0 {
        kept_right.push(0);
    }
    let (left, right) = if kept_left.len() == left_width && kept_right.len() == right_width {
        (left, right)
    } else {
        // Old joined index -> new joined index.
        let mut moved = BTreeMap::new();
        for (new, &old) in kept_left.iter().enumerate() {
            moved.insert(old, new);
        }
        for (new, &old) in kept_right.iter().enumerate() {
            moved.insert(old + left_width, new + kept_left.len());
        }
        let remap = |i: usize| moved.get(&i).copied().unwrap_or(i);
        for e in filter
            .iter_mut()
            .chain(&mut projection)
            .chain(&mut condition)
        {
            map_columns(e, &remap);
        }
        for k in &mut left_keys {
            *k = remap(*k);
        }
        for k in &mut right_keys {
            *k = remap(*k + left_width) - kept_left.len();
        }
        (narrow(left, &kept_left), narrow(right, &kept_right))
    };
    let mut columns = Vec::with_capacity(kept_left.len() + kept_right.len());
    columns.extend(kept_left.iter().map(|&i| join_schema.columns[i].clone()));
    columns.extend(
        kept_right
            .iter()
            .map(|&i| join_schema.columns[i + left_width].clone()),
    );
    Plan::Calc {
        input: Box::new(Plan::Join {
            left: Box::new(left),
            right: Box::new(right),
            kind,
            left_keys,
            right_keys,
            condition,
            schema: Schema::new(columns),
        }),
        filter,
        projection,
        schema,
    }
}

/// `plan` keeping only the columns `kept` (in order); a calc on top of it absorbs the
/// narrowing.
fn narrow(plan: Plan, kept: &[usize]) -> Plan {
    if kept.len() == plan.schema().columns.len() {
        return plan;
    }
    let columns: Vec<_> = kept
        .iter()
        .map(|&i| plan.schema().columns[i].clone())
        .collect();
    match plan {
        Plan::Calc {
            input,
            filter,
            projection,
            ..
        } => Plan::Calc {
            input,
            filter,
            projection: kept.iter().map(|&i| projection[i].clone()).collect(),
            schema: Schema::new(columns),
        },
        other => Plan::Calc {
            input: Box::new(other),
            filter: None,
            projection: kept.iter().map(|&i| Expr::Column(i)).collect(),
            schema: Schema::new(columns),
        },
    }
}

/// Whether a calc over a calc with `inner_projection` can be one calc: the inner projection
/// only picks columns and constants (so substituting it evaluates nothing twice), and at most
/// one of the two filters (so the outer filter never runs on a row the inner one dropped).
fn mergeable(inner_projection: &[Expr], inner: Option<&Expr>, outer: Option<&Expr>) -> bool {
    inner_projection
        .iter()
        .all(|e| matches!(e, Expr::Column(_) | Expr::Literal(_)))
        && (inner.is_none() || outer.is_none())
}

/// `e` over a calc's input instead of its output (`projection` only picks columns and
/// constants).
fn substitute(e: &Expr, projection: &[Expr]) -> Expr {
    match e {
        Expr::Column(i) => projection.get(*i).cloned().unwrap_or(Expr::Column(*i)),
        other => {
            let mut copy = other.clone();
            for child in expr_children(&mut copy) {
                *child = substitute(child, projection);
            }
            copy
        }
    }
}

/// Calls `f` with every column `e` reads.
pub(crate) fn for_each_column(e: &Expr, f: &mut impl FnMut(usize)) {
    if let Expr::Column(i) = e {
        f(*i);
        return;
    }
    match e {
        Expr::Column(_) | Expr::Literal(_) => {}
        Expr::Not(a) | Expr::Negate(a) | Expr::IsNull(a, _) | Expr::Cast { expr: a, .. } => {
            for_each_column(a, f);
        }
        Expr::And(a, b) | Expr::Or(a, b) | Expr::Arith(_, a, b, _) | Expr::Compare(_, a, b) => {
            for_each_column(a, f);
            for_each_column(b, f);
        }
        Expr::Like { expr, pattern, .. } => {
            for_each_column(expr, f);
            for_each_column(pattern, f);
        }
        Expr::Concat(v) | Expr::Call(_, v) => v.iter().for_each(|a| for_each_column(a, f)),
        Expr::Case {
            operand,
            branches,
            otherwise,
        } => {
            if let Some(o) = operand {
                for_each_column(o, f);
            }
            for (w, t) in branches {
                for_each_column(w, f);
                for_each_column(t, f);
            }
            for_each_column(otherwise, f);
        }
        Expr::InList { expr, list, .. } => {
            for_each_column(expr, f);
            list.iter().for_each(|a| for_each_column(a, f));
        }
    }
}

/// Renumbers every column `e` reads with `f`.
fn map_columns(e: &mut Expr, f: &impl Fn(usize) -> usize) {
    if let Expr::Column(i) = e {
        *i = f(*i);
        return;
    }
    for child in expr_children(e) {
        map_columns(child, f);
    }
}

/// The direct subexpressions of `e`.
fn expr_children(e: &mut Expr) -> Vec<&mut Expr> {
    match e {
        Expr::Column(_) | Expr::Literal(_) => Vec::new(),
        Expr::Not(a) | Expr::Negate(a) | Expr::IsNull(a, _) | Expr::Cast { expr: a, .. } => {
            vec![&mut **a]
        }
        Expr::And(a, b) | Expr::Or(a, b) | Expr::Arith(_, a, b, _) | Expr::Compare(_, a, b) => {
            vec![&mut **a, &mut **b]
        }
        Expr::Like { expr, pattern, .. } => vec![&mut **expr, &mut **pattern],
        Expr::Concat(v) | Expr::Call(_, v) => v.iter_mut().collect(),
        Expr::Case {
            operand,
            branches,
            otherwise,
        } => {
            let mut out: Vec<&mut Expr> = Vec::new();
            if let Some(o) = operand {
                out.push(&mut **o);
            }
            for (w, t) in branches {
                out.push(w);
                out.push(t);
            }
            out.push(&mut **otherwise);
            out
        }
        Expr::InList { expr, list, .. } => {
            let mut out: Vec<&mut Expr> = vec![&mut **expr];
            out.extend(list.iter_mut());
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::CompareOp;
    use crate::types::{Column, DataType};

    fn scan(table: &str, names: &[&str]) -> Plan {
        Plan::Scan {
            table: table.to_string(),
            schema: Schema::new(
                names
                    .iter()
                    .map(|n| Column::new(*n, DataType::BigInt))
                    .collect(),
            ),
        }
    }

    fn col(i: usize) -> Expr {
        Expr::Column(i)
    }

    fn schema(plan: &Plan, columns: &[usize]) -> Schema {
        Schema::new(
            columns
                .iter()
                .map(|&i| plan.schema().columns[i].clone())
                .collect(),
        )
    }

    /// `SELECT a.k, b.v FROM a JOIN b ON a.k = b.k WHERE b.t >= a.t` over
    /// `a(k, x, t, y)` and `b(z, k, v, t)`.
    fn calc_over_join(kind: JoinKind) -> Plan {
        let left = scan("a", &["k", "x", "t", "y"]);
        let right = scan("b", &["z", "k", "v", "t"]);
        let mut columns = left.schema().columns.clone();
        columns.extend(right.schema().columns.iter().cloned());
        let join = Plan::Join {
            left: Box::new(left),
            right: Box::new(right),
            kind,
            left_keys: vec![0],
            right_keys: vec![1],
            condition: None,
            schema: Schema::new(columns),
        };
        let out = schema(&join, &[0, 6]);
        Plan::Calc {
            input: Box::new(join),
            filter: Some(Expr::Compare(
                CompareOp::GtEq,
                Box::new(col(7)),
                Box::new(col(2)),
            )),
            projection: vec![col(0), col(6)],
            schema: out,
        }
    }

    #[test]
    fn an_inner_join_takes_the_filter_and_keeps_only_the_columns_read() {
        let optimized = optimize(&calc_over_join(JoinKind::Inner));
        let Plan::Calc {
            input,
            filter,
            projection,
            ..
        } = &optimized
        else {
            panic!("{optimized:?}");
        };
        assert_eq!(*filter, None, "the filter moved into the join");
        let Plan::Join {
            left,
            right,
            left_keys,
            right_keys,
            condition,
            schema,
            ..
        } = &**input
        else {
            panic!("{input:?}");
        };
        // a keeps k, t; b keeps k, v, t: the joined row is [a.k, a.t, b.k, b.v, b.t].
        assert_eq!(schema.names(), vec!["k", "t", "k", "v", "t"]);
        assert_eq!(left.schema().names(), vec!["k", "t"]);
        assert_eq!(right.schema().names(), vec!["k", "v", "t"]);
        assert_eq!((left_keys.clone(), right_keys.clone()), (vec![0], vec![0]));
        assert_eq!(
            *condition,
            Some(Expr::Compare(
                CompareOp::GtEq,
                Box::new(col(4)),
                Box::new(col(1))
            ))
        );
        assert_eq!(*projection, vec![col(0), col(3)]);
        assert_eq!(optimized.schema(), calc_over_join(JoinKind::Inner).schema());
        assert_eq!(
            optimize(&optimized),
            optimized,
            "optimizing twice changes nothing"
        );
    }

    #[test]
    fn an_outer_join_keeps_its_where_above_it() {
        let optimized = optimize(&calc_over_join(JoinKind::Left));
        let Plan::Calc { input, filter, .. } = &optimized else {
            panic!("{optimized:?}");
        };
        // WHERE drops padded rows an ON condition would keep: it stays a filter.
        assert_eq!(
            *filter,
            Some(Expr::Compare(
                CompareOp::GtEq,
                Box::new(col(4)),
                Box::new(col(1))
            ))
        );
        let Plan::Join { condition, .. } = &**input else {
            panic!("{input:?}");
        };
        assert_eq!(*condition, None);
        assert_eq!(optimize(&optimized), optimized);
    }

    #[test]
    fn calcs_that_only_pick_columns_merge() {
        let base = scan("a", &["k", "x", "t"]);
        let inner_schema = schema(&base, &[2, 0]);
        let inner = Plan::Calc {
            input: Box::new(base),
            filter: Some(Expr::IsNull(Box::new(col(1)), true)),
            projection: vec![col(2), col(0)],
            schema: inner_schema.clone(),
        };
        let outer = Plan::Calc {
            input: Box::new(inner.clone()),
            filter: None,
            projection: vec![
                col(1),
                col(0),
                Expr::Literal(crate::types::Value::BigInt(1)),
            ],
            schema: Schema::new(
                inner_schema
                    .columns
                    .iter()
                    .rev()
                    .cloned()
                    .chain([Column::new("one", DataType::BigInt)])
                    .collect(),
            ),
        };
        let Plan::Calc {
            input,
            filter,
            projection,
            ..
        } = optimize(&outer)
        else {
            panic!("a calc");
        };
        assert!(matches!(*input, Plan::Scan { .. }));
        assert_eq!(filter, Some(Expr::IsNull(Box::new(col(1)), true)));
        assert_eq!(
            projection,
            vec![
                col(0),
                col(2),
                Expr::Literal(crate::types::Value::BigInt(1))
            ]
        );
        // Two filters stay two calcs: the outer one must not see rows the inner one drops.
        let filtered = Plan::Calc {
            input: Box::new(inner),
            filter: Some(Expr::IsNull(Box::new(col(0)), false)),
            projection: vec![col(0)],
            schema: schema(&outer, &[0]),
        };
        assert_eq!(optimize(&filtered), filtered);
    }
}
