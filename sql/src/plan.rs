//! The planner: from a parsed query to a tree of logical operators over compiled expressions.
//!
//! The plan is plain data. The `exec` module translates each node onto Eichhorn operators: a
//! [`Plan::Calc`] becomes a process function, a [`Plan::GroupAgg`] a keyed process function with
//! its accumulators in `ValueState`, a [`Plan::WindowAgg`] a keyed process function with
//! `MapState` windows and event-time timers. So a SQL job checkpoints and restores as any job.
//!
//! ## Design
//!
//! Aggregations are planned in three steps, as Calcite does: a pre-projection computes the
//! group keys and the aggregate arguments (so the aggregation operator only sees column
//! indexes), the aggregation emits `[window columns] ++ keys ++ aggregate results`, and a final
//! calc evaluates `HAVING` and the select list over that, with group keys and aggregate calls
//! resolved to its columns.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use sqlparser::ast::{self, Spanned};

use crate::agg::{AggCall, AggFunc};
use crate::catalog::{Catalog, CatalogTable};
use crate::error::{Position, SqlError};
use crate::expr::{
    self, Expr, Resolver, SchemaResolver, Scope, Typed, compile, function_args, position_of,
};
use crate::join::JoinKind;
use crate::over::{OverAgg, OverFrame};
use crate::rank::TopN;
use crate::sort::Sort;
use crate::time_joins::{self, Keys};
use crate::types::{Column, DataType, Schema};
use crate::window::WindowKind;

/// A logical operator and its inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Plan {
    /// Reads a catalog table (a connector or a registered stream).
    Scan {
        /// The table's name as registered (lower case).
        table: String,
        /// Its schema.
        schema: Schema,
    },
    /// Filters, then projects, each change (its kind unchanged).
    Calc {
        /// The input.
        input: Box<Self>,
        /// Rows for which this is not `TRUE` are dropped.
        filter: Option<Expr>,
        /// The output columns, over the input row.
        projection: Vec<Expr>,
        /// The output schema.
        schema: Schema,
    },
    /// A group aggregation: input rows are `keys ++ arguments`; output rows are
    /// `keys ++ results`, as a changelog.
    GroupAgg {
        /// The pre-projected input.
        input: Box<Self>,
        /// How many leading input columns are the group key.
        key_count: usize,
        /// The aggregate calls (arguments index the input row).
        aggs: Vec<AggCall>,
        /// The output schema.
        schema: Schema,
    },
    /// A window aggregation: input rows are `time ++ keys ++ arguments`; output rows are
    /// `window_start, window_end, window_time ++ keys ++ results`, appended when the watermark
    /// passes a window's end.
    WindowAgg {
        /// The pre-projected input.
        input: Box<Self>,
        /// The window function.
        window: WindowKind,
        /// How many input columns after the time are the group key.
        key_count: usize,
        /// The aggregate calls (arguments index the input row).
        aggs: Vec<AggCall>,
        /// The output schema.
        schema: Schema,
    },
    /// A window TVF without aggregation: each row once per window, with the window columns
    /// appended.
    WindowTvf {
        /// The input.
        input: Box<Self>,
        /// The window function (not a session).
        window: WindowKind,
        /// The time column of the input.
        time_column: usize,
        /// The output schema.
        schema: Schema,
    },
    /// A regular join: a changelog of `left ++ right` rows, each side's rows kept per key
    /// (bounded by the state TTL when one is set).
    Join {
        /// The left input.
        left: Box<Self>,
        /// The right input.
        right: Box<Self>,
        /// Inner, left, right or full.
        kind: JoinKind,
        /// The left columns of the equality keys.
        left_keys: Vec<usize>,
        /// The right columns of the equality keys, pairwise with `left_keys`.
        right_keys: Vec<usize>,
        /// The rest of `ON`, over `left ++ right`.
        condition: Option<Expr>,
        /// The output schema.
        schema: Schema,
    },
    /// An interval join of append-only inputs: each left row joins the right rows whose
    /// event time is within `[left time + lower_ms, left time + upper_ms]`; state is dropped
    /// as the watermark passes (an outer side's unmatched rows are then emitted padded).
    IntervalJoin {
        /// The left input.
        left: Box<Self>,
        /// The right input.
        right: Box<Self>,
        /// Inner, left, right or full.
        kind: JoinKind,
        /// The left event-time column.
        left_time: usize,
        /// The right event-time column.
        right_time: usize,
        /// The left columns of the equality keys.
        left_keys: Vec<usize>,
        /// The right columns of the equality keys, pairwise with `left_keys`.
        right_keys: Vec<usize>,
        /// The lower bound of the right time, relative to the left time.
        lower_ms: i64,
        /// The upper bound of the right time, relative to the left time.
        upper_ms: i64,
        /// The rest of `ON`, over `left ++ right`.
        condition: Option<Expr>,
        /// The output schema.
        schema: Schema,
    },
    /// An event-time temporal join: each left row joins the version of the right (versioned)
    /// table valid at its time, emitted when the watermark reaches that time.
    TemporalJoin {
        /// The probe side.
        left: Box<Self>,
        /// The versioned table.
        right: Box<Self>,
        /// Inner or left.
        kind: JoinKind,
        /// The left columns of the equality keys.
        left_keys: Vec<usize>,
        /// The right columns of the equality keys (covering the primary key).
        right_keys: Vec<usize>,
        /// The left event-time column (`FOR SYSTEM_TIME AS OF`).
        left_time: usize,
        /// The versioned table's event-time column.
        right_time: usize,
        /// The rest of `ON`, over `left ++ right`.
        condition: Option<Expr>,
        /// The output schema.
        schema: Schema,
    },
    /// A window join: rows of two window TVFs of the same window joined per window (the
    /// window columns are among the keys), emitted when the window fires.
    WindowJoin {
        /// The left input.
        left: Box<Self>,
        /// The right input.
        right: Box<Self>,
        /// Inner, left, right or full.
        kind: JoinKind,
        /// The left columns of the equality keys (`window_start`, `window_end` among them).
        left_keys: Vec<usize>,
        /// The right columns of the equality keys, pairwise with `left_keys`.
        right_keys: Vec<usize>,
        /// The left `window_end` column.
        left_end: usize,
        /// The right `window_end` column.
        right_end: usize,
        /// The rest of `ON`, over `left ++ right`.
        condition: Option<Expr>,
        /// The output schema.
        schema: Schema,
    },
    /// A cascaded window aggregation: a `GROUP BY` over both window columns of windowed rows
    /// (a window aggregation's or TVF's, through calcs), itself a window aggregation of the
    /// same windows (see [`crate::window_plans`]). Input rows are `keys ++ arguments`, the
    /// window columns among the keys; output rows `keys ++ results`, appended when the
    /// watermark passes the window's end.
    CascadedWindowAgg {
        /// The pre-projected input.
        input: Box<Self>,
        /// The window of the input's rows.
        window: WindowKind,
        /// How many leading input columns are the group key.
        key_count: usize,
        /// The key position of `window_start`.
        start: usize,
        /// The key position of `window_end`.
        end: usize,
        /// The aggregate calls (arguments index the input row).
        aggs: Vec<AggCall>,
        /// The output schema.
        schema: Schema,
    },
    /// An interval join of append-only inputs, one of them windowed rows at their window's
    /// time (`window_end - 1`), the bounds derived from the window's size and the conditions
    /// (see [`crate::window_plans`]): each left row joins the right rows whose time is within
    /// `[left time + lower_ms, left time + upper_ms]` where the condition holds.
    WindowIntervalJoin {
        /// The left input.
        left: Box<Self>,
        /// The right input.
        right: Box<Self>,
        /// Inner, left, right or full.
        kind: JoinKind,
        /// The left columns of the equality keys.
        left_keys: Vec<usize>,
        /// The right columns of the equality keys, pairwise with `left_keys`.
        right_keys: Vec<usize>,
        /// Whether the left side is the windowed one (else the right side is).
        window_left: bool,
        /// The left time column: its event-time attribute, or `window_end` when windowed.
        left_time: usize,
        /// The right time column: its event-time attribute, or `window_end` when windowed.
        right_time: usize,
        /// The lower bound of the right time, relative to the left time.
        lower_ms: i64,
        /// The upper bound of the right time, relative to the left time.
        upper_ms: i64,
        /// The rest of the conditions (the bounding ones among them), over `left ++ right`.
        condition: Option<Expr>,
        /// The output schema.
        schema: Schema,
    },
    /// Top-N (and deduplication, Top-1 by time): per partition, the first `N` rows by the
    /// order, with their rank appended, as a changelog.
    Rank {
        /// The input.
        input: Box<Self>,
        /// The partition columns.
        partition: Vec<usize>,
        /// The order and `N`.
        top: TopN,
        /// The output schema: the input's columns and `rn`.
        schema: Schema,
    },
    /// An `OVER` aggregation: each input row with its aggregates over its frame appended,
    /// emitted when the watermark reaches the row's time.
    OverAgg {
        /// The input.
        input: Box<Self>,
        /// The partition columns.
        partition: Vec<usize>,
        /// The event-time column of the `ORDER BY`.
        time_column: usize,
        /// The frame and the aggregate calls (arguments index the input row).
        over: OverAgg,
        /// The output schema: the input's columns, then the aggregates.
        schema: Schema,
    },
    /// `ORDER BY` / `LIMIT`: a bounded result in order, or rows in event-time order.
    Sort {
        /// The input.
        input: Box<Self>,
        /// The keys, offset, limit and mode.
        sort: Sort,
        /// The output schema (the input's).
        schema: Schema,
    },
    /// `MATCH_RECOGNIZE`: one row per match of a pattern, over CEP.
    MatchRecognize(Box<crate::match_recognize::MatchRecognize>),
    /// `UNION ALL` of inputs with the same column types.
    Union {
        /// The inputs.
        inputs: Vec<Self>,
        /// The output schema (the first input's names).
        schema: Schema,
    },
}

impl Plan {
    /// The schema of the rows this plan produces.
    pub fn schema(&self) -> &Schema {
        match self {
            Self::Scan { schema, .. }
            | Self::Calc { schema, .. }
            | Self::GroupAgg { schema, .. }
            | Self::WindowAgg { schema, .. }
            | Self::WindowTvf { schema, .. }
            | Self::Join { schema, .. }
            | Self::IntervalJoin { schema, .. }
            | Self::TemporalJoin { schema, .. }
            | Self::WindowJoin { schema, .. }
            | Self::CascadedWindowAgg { schema, .. }
            | Self::WindowIntervalJoin { schema, .. }
            | Self::Rank { schema, .. }
            | Self::OverAgg { schema, .. }
            | Self::Sort { schema, .. }
            | Self::Union { schema, .. } => schema,
            Self::MatchRecognize(mr) => &mr.schema,
        }
    }

    /// Whether the result only ever gets inserts (no updates or deletes).
    pub fn is_append_only(&self) -> bool {
        match self {
            Self::Scan { .. }
            | Self::WindowAgg { .. }
            | Self::IntervalJoin { .. }
            | Self::TemporalJoin { .. }
            | Self::WindowJoin { .. }
            | Self::CascadedWindowAgg { .. }
            | Self::WindowIntervalJoin { .. }
            | Self::Sort { .. }
            | Self::MatchRecognize(_) => true,
            Self::GroupAgg { .. } | Self::Rank { .. } => false,
            Self::Join {
                kind, left, right, ..
            } => *kind == JoinKind::Inner && left.is_append_only() && right.is_append_only(),
            Self::Calc { input, .. }
            | Self::WindowTvf { input, .. }
            | Self::OverAgg { input, .. } => input.is_append_only(),
            Self::Union { inputs, .. } => inputs.iter().all(Self::is_append_only),
        }
    }

    /// The operator tree as text, root first, one operator a line (`EXPLAIN`).
    pub fn explain(&self) -> String {
        let mut out = String::new();
        self.explain_into(&mut out, 0);
        out
    }

    fn explain_into(&self, out: &mut String, depth: usize) {
        let indent = "  ".repeat(depth);
        let columns = self.schema().names().join(", ");
        let _ = match self {
            Self::Scan { table, .. } => writeln!(
                out,
                "{indent}TableSourceScan(table=[{table}], fields=[{columns}])"
            ),
            Self::Calc { filter, .. } => writeln!(
                out,
                "{indent}Calc(select=[{columns}]{})",
                if filter.is_some() { ", where=[..]" } else { "" },
            ),
            Self::GroupAgg {
                key_count, aggs, ..
            } => writeln!(
                out,
                "{indent}GroupAggregate(groupBy=[{key_count} keys], aggs=[{}], changelog=[I,UB,UA,D], fields=[{columns}])",
                describe_aggs(aggs)
            ),
            Self::WindowAgg {
                window,
                key_count,
                aggs,
                ..
            } => writeln!(
                out,
                "{indent}WindowAggregate(window=[{}], groupBy=[{key_count} keys], aggs=[{}], fields=[{columns}])",
                describe_window(window),
                describe_aggs(aggs)
            ),
            Self::WindowTvf { window, .. } => writeln!(
                out,
                "{indent}WindowTableFunction(window=[{}], fields=[{columns}])",
                describe_window(window)
            ),
            Self::Join {
                kind,
                left_keys,
                right_keys,
                condition,
                ..
            } => writeln!(
                out,
                "{indent}Join(joinType=[{}], keys=[{}]{}, changelog=[{}], fields=[{columns}])",
                kind.sql(),
                describe_keys(left_keys, right_keys),
                if condition.is_some() {
                    ", where=[..]"
                } else {
                    ""
                },
                if self.is_append_only() { "I" } else { "I,D" },
            ),
            Self::IntervalJoin {
                kind,
                left_keys,
                right_keys,
                lower_ms,
                upper_ms,
                condition,
                ..
            } => writeln!(
                out,
                "{indent}IntervalJoin(joinType=[{}], keys=[{}], right time in [left time + {lower_ms} ms, left time + {upper_ms} ms]{}, fields=[{columns}])",
                kind.sql(),
                describe_keys(left_keys, right_keys),
                if condition.is_some() {
                    ", where=[..]"
                } else {
                    ""
                },
            ),
            Self::TemporalJoin {
                kind,
                left_keys,
                right_keys,
                left_time,
                condition,
                ..
            } => writeln!(
                out,
                "{indent}TemporalJoin(joinType=[{}], keys=[{}], version at [$l{left_time}]{}, fields=[{columns}])",
                kind.sql(),
                describe_keys(left_keys, right_keys),
                if condition.is_some() {
                    ", where=[..]"
                } else {
                    ""
                },
            ),
            Self::WindowJoin {
                kind,
                left_keys,
                right_keys,
                condition,
                ..
            } => writeln!(
                out,
                "{indent}WindowJoin(joinType=[{}], keys=[{}]{}, fields=[{columns}])",
                kind.sql(),
                describe_keys(left_keys, right_keys),
                if condition.is_some() {
                    ", where=[..]"
                } else {
                    ""
                },
            ),
            Self::CascadedWindowAgg {
                window,
                key_count,
                start,
                end,
                aggs,
                ..
            } => writeln!(
                out,
                "{indent}WindowAggregate(window=[{}], windowOn=[${start}, ${end}], groupBy=[{key_count} keys], aggs=[{}], fields=[{columns}])",
                describe_window(window),
                describe_aggs(aggs)
            ),
            Self::WindowIntervalJoin {
                kind,
                left_keys,
                right_keys,
                window_left,
                lower_ms,
                upper_ms,
                condition,
                ..
            } => writeln!(
                out,
                "{indent}IntervalJoin(joinType=[{}], keys=[{}], right time in [left time + {lower_ms} ms, left time + {upper_ms} ms], {} time = window_end - 1 ms{}, fields=[{columns}])",
                kind.sql(),
                describe_keys(left_keys, right_keys),
                if *window_left { "left" } else { "right" },
                if condition.is_some() {
                    ", where=[..]"
                } else {
                    ""
                },
            ),
            Self::Rank { partition, top, .. } => writeln!(
                out,
                "{indent}Rank(rankType=[ROW_NUMBER], partitionBy=[{}], orderBy=[{}], rankRange=[1..{}], changelog=[I,UB,UA,D], fields=[{columns}])",
                partition
                    .iter()
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                top.order
                    .iter()
                    .map(|(i, desc)| format!("${i} {}", if *desc { "DESC" } else { "ASC" }))
                    .collect::<Vec<_>>()
                    .join(", "),
                top.limit
            ),
            Self::OverAgg {
                partition,
                time_column,
                over,
                ..
            } => writeln!(
                out,
                "{indent}OverAggregate(partitionBy=[{}], orderBy=[${time_column} ASC], window=[{:?}], aggs=[{}], fields=[{columns}])",
                partition
                    .iter()
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                over.frame,
                describe_aggs(&over.aggs)
            ),
            Self::Sort { sort, .. } => {
                writeln!(out, "{indent}Sort({}, fields=[{columns}])", sort.describe())
            }
            Self::Union { .. } => writeln!(out, "{indent}Union(all=[true], fields=[{columns}])"),
            Self::MatchRecognize(mr) => writeln!(
                out,
                "{indent}Match(pattern=[{}], fields=[{columns}])",
                crate::match_recognize::describe_pattern(mr)
            ),
        };
        match self {
            Self::Scan { .. } => {}
            Self::Calc { input, .. }
            | Self::GroupAgg { input, .. }
            | Self::WindowAgg { input, .. }
            | Self::CascadedWindowAgg { input, .. }
            | Self::WindowTvf { input, .. }
            | Self::Rank { input, .. }
            | Self::OverAgg { input, .. }
            | Self::Sort { input, .. } => input.explain_into(out, depth + 1),
            Self::MatchRecognize(mr) => mr.input.explain_into(out, depth + 1),
            Self::Join { left, right, .. }
            | Self::IntervalJoin { left, right, .. }
            | Self::TemporalJoin { left, right, .. }
            | Self::WindowJoin { left, right, .. }
            | Self::WindowIntervalJoin { left, right, .. } => {
                left.explain_into(out, depth + 1);
                right.explain_into(out, depth + 1);
            }
            Self::Union { inputs, .. } => {
                for input in inputs {
                    input.explain_into(out, depth + 1);
                }
            }
        }
    }
}

fn describe_aggs(aggs: &[AggCall]) -> String {
    aggs.iter()
        .map(|a| {
            let arg = a.arg.map_or("*".to_string(), |i| format!("${i}"));
            let distinct = if a.distinct { "DISTINCT " } else { "" };
            format!("{:?}({distinct}{arg})", a.func).to_uppercase()
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_keys(left: &[usize], right: &[usize]) -> String {
    if left.is_empty() {
        return "none: one global key".to_string();
    }
    left.iter()
        .zip(right)
        .map(|(l, r)| format!("$l{l} = $r{r}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn describe_window(window: &WindowKind) -> String {
    match window {
        WindowKind::Tumble { size_ms, .. } => format!("TUMBLE(size={size_ms} ms)"),
        WindowKind::Hop {
            slide_ms, size_ms, ..
        } => format!("HOP(slide={slide_ms} ms, size={size_ms} ms)"),
        WindowKind::Cumulate { step_ms, size_ms } => {
            format!("CUMULATE(step={step_ms} ms, max size={size_ms} ms)")
        }
        WindowKind::Session { gap_ms } => format!("SESSION(gap={gap_ms} ms)"),
    }
}

/// A relation in the `FROM` clause while planning: its plan and the names its columns may be
/// qualified with.
struct Relation {
    plan: Plan,
    qualifiers: Vec<Scope>,
    /// The window TVF it came from, with the index of the time column in the TVF's input
    /// (whose columns come first, then `window_start`, `window_end`, `window_time`).
    window: Option<(WindowKind, usize)>,
}

/// Plans `query` against `catalog`.
///
/// # Errors
///
/// Unknown tables or columns, type mismatches, unsupported constructs, with their position.
pub fn plan_query(query: &ast::Query, catalog: &Catalog) -> Result<Plan, SqlError> {
    let position = Position::of(query.span());
    if query.with.is_some() {
        return Err(SqlError::unsupported(
            position,
            "WITH (common table expressions); use CREATE VIEW",
        ));
    }
    let plan = plan_set_expr(&query.body, catalog)?;
    crate::sort::plan_sort(query, plan, catalog)
}

fn plan_set_expr(body: &ast::SetExpr, catalog: &Catalog) -> Result<Plan, SqlError> {
    match body {
        ast::SetExpr::Select(select) => plan_select(select, catalog),
        ast::SetExpr::Query(query) => plan_query(query, catalog),
        ast::SetExpr::SetOperation {
            op: ast::SetOperator::Union,
            set_quantifier,
            left,
            right,
        } => {
            let position = Position::of(body.span());
            let left = plan_set_expr(left, catalog)?;
            let right = plan_set_expr(right, catalog)?;
            let (l, r) = (left.schema(), right.schema());
            if l.columns.len() != r.columns.len() {
                return Err(SqlError::validation(
                    position,
                    format!(
                        "UNION of {} and {} columns: both sides need the same number",
                        l.columns.len(),
                        r.columns.len()
                    ),
                ));
            }
            let mut columns = Vec::with_capacity(l.columns.len());
            for (a, b) in l.columns.iter().zip(&r.columns) {
                let data_type = a.data_type.common(b.data_type).ok_or_else(|| {
                    SqlError::validation(
                        position,
                        format!(
                            "type mismatch in UNION: column '{}' is {} on the left and {} on the right",
                            a.name, a.data_type, b.data_type
                        ),
                    )
                })?;
                let mut column = Column::new(a.name.clone(), data_type);
                column.rowtime = a.rowtime && b.rowtime && a.data_type == b.data_type;
                columns.push(column);
            }
            let schema = Schema::new(columns);
            let union = Plan::Union {
                inputs: vec![left, right],
                schema: schema.clone(),
            };
            match set_quantifier {
                ast::SetQuantifier::All => Ok(union),
                ast::SetQuantifier::None | ast::SetQuantifier::Distinct => Ok(distinct(union)),
                other => Err(SqlError::unsupported(position, format!("UNION {other}"))),
            }
        }
        other => Err(SqlError::unsupported(
            Position::of(other.span()),
            format!("query `{}`", first_line(&other.to_string())),
        )),
    }
}

fn first_line(text: &str) -> String {
    text.chars().take(40).collect()
}

/// `SELECT DISTINCT`: a group aggregation keyed by every column, without aggregates.
fn distinct(input: Plan) -> Plan {
    let mut schema = input.schema().clone();
    for column in &mut schema.columns {
        column.rowtime = false;
    }
    Plan::GroupAgg {
        key_count: schema.columns.len(),
        input: Box::new(input),
        aggs: Vec::new(),
        schema,
    }
}

fn plan_select(select: &ast::Select, catalog: &Catalog) -> Result<Plan, SqlError> {
    let position = Position::of(select.select_token.0.span);
    if select.top.is_some()
        || select.qualify.is_some()
        || !select.named_window.is_empty()
        || !select.lateral_views.is_empty()
        || select.into.is_some()
        || select.prewhere.is_some()
        || !select.cluster_by.is_empty()
        || !select.distribute_by.is_empty()
        || !select.sort_by.is_empty()
        || select.connect_by.is_some()
    {
        return Err(SqlError::unsupported(
            position,
            "this SELECT clause (TOP, QUALIFY, WINDOW, LATERAL VIEW, INTO, ...)",
        ));
    }
    let relation = match select.from.as_slice() {
        [] => {
            return Err(SqlError::unsupported(position, "SELECT without FROM"));
        }
        [one] => {
            let mut relation = match plan_ranked(&one.relation, select.selection.as_ref(), catalog)?
            {
                Some(ranked) => ranked,
                None => plan_relation(&one.relation, catalog)?,
            };
            for (i, join) in one.joins.iter().enumerate() {
                // WHERE is over the last join's output: its conjuncts may bound that join.
                let filter = select
                    .selection
                    .as_ref()
                    .filter(|_| i + 1 == one.joins.len());
                relation = plan_join(relation, join, catalog, filter)?;
            }
            relation
        }
        [_, second, ..] => {
            return Err(SqlError::unsupported(
                Position::of(second.relation.span()).or(position),
                "several tables in FROM (an implicit join): write JOIN .. ON",
            ));
        }
    };
    let group_exprs: &[ast::Expr] = match &select.group_by {
        ast::GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs,
        other => {
            return Err(SqlError::unsupported(position, format!("{other}")));
        }
    };
    let has_aggregates = select.projection.iter().any(|item| match item {
        ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => {
            contains_aggregate(e)
        }
        _ => false,
    }) || select.having.as_ref().is_some_and(contains_aggregate);
    let plan = if !group_exprs.is_empty() || has_aggregates {
        plan_aggregate(select, relation, group_exprs)?
    } else {
        if let Some(having) = &select.having {
            return Err(SqlError::validation(
                position_of(having),
                "HAVING without GROUP BY or an aggregate",
            ));
        }
        let relation = match relation.window {
            Some((window, time_column)) => {
                let Plan::WindowTvf { .. } = &relation.plan else {
                    return Err(SqlError::unsupported(position, "window TVF"));
                };
                if window.is_merging() {
                    return Err(SqlError::unsupported(
                        position,
                        "SESSION windows without a window aggregation (GROUP BY window_start, window_end)",
                    ));
                }
                let _ = time_column;
                relation
            }
            None => relation,
        };
        if has_over(select) {
            plan_over(select, relation)?
        } else {
            plan_projection(select, relation)?
        }
    };
    Ok(match &select.distinct {
        None => plan,
        Some(ast::Distinct::Distinct) => distinct(plan),
        Some(ast::Distinct::On(_)) => {
            return Err(SqlError::unsupported(position, "DISTINCT ON"));
        }
    })
}

/// A plain `SELECT ... FROM r [WHERE ..]`.
fn plan_projection(select: &ast::Select, relation: Relation) -> Result<Plan, SqlError> {
    let schema = relation.plan.schema().clone();
    let mut resolver = SchemaResolver {
        schema: &schema,
        qualifiers: relation.qualifiers.clone(),
    };
    let filter = match &select.selection {
        Some(condition) => Some(compile_condition(condition, &mut resolver)?),
        None => None,
    };
    let (projection, columns) = compile_select_list(
        &select.projection,
        &mut resolver,
        &schema,
        &relation.qualifiers,
    )?;
    Ok(Plan::Calc {
        input: Box::new(relation.plan),
        filter,
        projection,
        schema: Schema::new(columns),
    })
}

fn compile_condition(condition: &ast::Expr, resolver: &mut dyn Resolver) -> Result<Expr, SqlError> {
    let typed = compile(condition, resolver)?;
    if !matches!(typed.data_type, DataType::Boolean | DataType::Null) {
        return Err(SqlError::validation(
            position_of(condition),
            format!(
                "type mismatch: the condition `{condition}` is {}, expected BOOLEAN",
                typed.data_type
            ),
        ));
    }
    Ok(typed.expr)
}

/// Compiles a select list: the expressions and the output columns (named by alias, by column
/// name, or `EXPR$i` as Flink does).
fn compile_select_list(
    items: &[ast::SelectItem],
    resolver: &mut dyn Resolver,
    input: &Schema,
    scopes: &[Scope],
) -> Result<(Vec<Expr>, Vec<Column>), SqlError> {
    let mut projection = Vec::new();
    let mut columns: Vec<Column> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let (expr, alias) = match item {
            ast::SelectItem::UnnamedExpr(e) => (e, None),
            ast::SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            ast::SelectItem::Wildcard(_) | ast::SelectItem::QualifiedWildcard(..) => {
                let only = match item {
                    ast::SelectItem::QualifiedWildcard(kind, _) => {
                        let text = kind.to_string();
                        let name = text.trim_end_matches(".*").to_lowercase();
                        let Some(scope) = scopes.iter().find(|s| s.name == name) else {
                            return Err(SqlError::validation(
                                Position::of(item.span()),
                                format!("table or alias '{name}' not found in this query"),
                            ));
                        };
                        Some(scope.columns.clone())
                    }
                    _ => None,
                };
                for (i, column) in input.columns.iter().enumerate() {
                    if only.as_ref().is_some_and(|range| !range.contains(&i)) {
                        continue;
                    }
                    // Qualified by the scope holding the column, so a join's columns of the
                    // same name on both sides resolve each to its own.
                    let mut name = Vec::new();
                    if let Some(scope) = scopes.iter().find(|s| s.columns.contains(&i)) {
                        name.push(ast::Ident::new(scope.name.clone()));
                    }
                    name.push(ast::Ident::new(column.name.clone()));
                    let reference = if name.len() == 1 {
                        ast::Expr::Identifier(name[0].clone())
                    } else {
                        ast::Expr::CompoundIdentifier(name.clone())
                    };
                    let typed = match resolver.resolve(&reference)? {
                        Some(t) => t,
                        None => resolver.column(&name)?,
                    };
                    // Flink renames a repeated name (a join's `id` on both sides) `id0`.
                    let mut output = column.clone();
                    let mut suffix = 0;
                    while columns
                        .iter()
                        .any(|c| c.name.eq_ignore_ascii_case(&output.name))
                    {
                        output.name = format!("{}{suffix}", column.name);
                        suffix += 1;
                    }
                    projection.push(typed.expr);
                    columns.push(output);
                }
                continue;
            }
        };
        let typed = compile(expr, resolver)?;
        let name = alias.unwrap_or_else(|| match expr {
            ast::Expr::Identifier(i) => i.value.clone(),
            ast::Expr::CompoundIdentifier(parts) => parts
                .last()
                .map_or_else(|| format!("EXPR${index}"), |p| p.value.clone()),
            _ => format!("EXPR${index}"),
        });
        if columns.iter().any(|c| c.name.eq_ignore_ascii_case(&name)) {
            return Err(SqlError::validation(
                position_of(expr),
                format!("duplicate column name '{name}' in the select list; name it with AS"),
            ));
        }
        let rowtime = match typed.expr {
            Expr::Column(i) => input_rowtime(resolver, i, input),
            _ => false,
        };
        columns.push(Column {
            name,
            data_type: if typed.data_type == DataType::Null {
                DataType::String
            } else {
                typed.data_type
            },
            rowtime,
        });
        projection.push(typed.expr);
    }
    Ok((projection, columns))
}

/// Whether column `i` of the input a resolver resolves into is a time attribute. Only plain
/// schema resolution keeps time attributes; after an aggregation only `window_time` does,
/// which the aggregate resolver marks itself.
fn input_rowtime(_resolver: &mut dyn Resolver, i: usize, input: &Schema) -> bool {
    input.columns.get(i).is_some_and(|c| c.rowtime)
}

fn plan_relation(factor: &ast::TableFactor, catalog: &Catalog) -> Result<Relation, SqlError> {
    match factor {
        ast::TableFactor::Table {
            name,
            alias,
            args,
            version,
            ..
        } => {
            let position = Position::of(name.span());
            if version.is_some() {
                return Err(SqlError::unsupported(
                    position,
                    format!(
                        "{name} FOR SYSTEM_TIME AS OF outside a join: a versioned table is read \
                         in a temporal join (`.. JOIN {name} FOR SYSTEM_TIME AS OF o.ts AS r ON ..`)"
                    ),
                ));
            }
            if args.is_some() {
                return Err(SqlError::unsupported(
                    position,
                    format!("table function {name} in FROM: write FROM TABLE({name}(..))"),
                ));
            }
            let plan = scan(name, catalog)?;
            let width = plan.schema().columns.len();
            let mut qualifiers = vec![Scope::new(plain_name(name), 0..width)];
            if let Some(alias) = alias {
                qualifiers = vec![Scope::new(&alias.name.value, 0..width)];
            }
            Ok(Relation {
                plan,
                qualifiers,
                window: None,
            })
        }
        ast::TableFactor::Derived {
            subquery, alias, ..
        } => {
            let plan = plan_query(subquery, catalog)?;
            let width = plan.schema().columns.len();
            Ok(Relation {
                plan,
                qualifiers: alias
                    .iter()
                    .map(|a| Scope::new(&a.name.value, 0..width))
                    .collect(),
                window: None,
            })
        }
        ast::TableFactor::TableFunction { expr, alias } => {
            let mut relation = plan_window_tvf(expr, catalog)?;
            if let Some(alias) = alias {
                let width = relation.plan.schema().columns.len();
                relation.qualifiers = vec![Scope::new(&alias.name.value, 0..width)];
            }
            Ok(relation)
        }
        ast::TableFactor::MatchRecognize { table, alias, .. } => {
            let Some((clause, _)) = crate::match_recognize::Clause::of(factor) else {
                unreachable!("a MATCH_RECOGNIZE factor");
            };
            let input = plan_relation(table, catalog)?;
            let mr = crate::match_recognize::plan_match_recognize(
                &clause,
                input.plan,
                &input.qualifiers,
            )?;
            let width = mr.schema.columns.len();
            Ok(Relation {
                plan: Plan::MatchRecognize(Box::new(mr)),
                qualifiers: alias
                    .iter()
                    .map(|a| Scope::new(&a.name.value, 0..width))
                    .collect(),
                window: None,
            })
        }
        other => Err(SqlError::unsupported(
            Position::of(other.span()),
            format!("FROM `{other}`"),
        )),
    }
}

/// `left JOIN right ON ...`: a regular join, or an interval join when `ON` bounds one side's
/// event time by the other's (`b.ts BETWEEN a.ts - INTERVAL .. AND a.ts + INTERVAL ..`), or
/// (with `filter`, the `WHERE` over this join's output) by the other's windows.
fn plan_join(
    left: Relation,
    join: &ast::Join,
    catalog: &Catalog,
    filter: Option<&ast::Expr>,
) -> Result<Relation, SqlError> {
    let position = Position::of(join.relation.span());
    let (kind, constraint) = match &join.join_operator {
        ast::JoinOperator::Join(c) | ast::JoinOperator::Inner(c) => (JoinKind::Inner, c),
        ast::JoinOperator::Left(c) | ast::JoinOperator::LeftOuter(c) => (JoinKind::Left, c),
        ast::JoinOperator::Right(c) | ast::JoinOperator::RightOuter(c) => (JoinKind::Right, c),
        ast::JoinOperator::FullOuter(c) => (JoinKind::Full, c),
        _ => {
            return Err(SqlError::unsupported(
                position,
                "this kind of join: supported are [INNER] JOIN, LEFT, RIGHT and FULL [OUTER] \
                 JOIN with ON",
            ));
        }
    };
    let ast::JoinConstraint::On(on) = constraint else {
        return Err(SqlError::unsupported(
            position,
            "a join without ON (USING, NATURAL, CROSS): write ON a.k = b.k",
        ));
    };
    let mut left = left;
    // `JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r`: a temporal join of a versioned table.
    let (mut right, versioned) = match &join.relation {
        ast::TableFactor::Table {
            name,
            version: Some(ast::TableVersion::ForSystemTimeAsOf(as_of)),
            ..
        } => {
            let mut factor = join.relation.clone();
            if let ast::TableFactor::Table { version, .. } = &mut factor {
                *version = None;
            }
            (plan_relation(&factor, catalog)?, Some((name, as_of)))
        }
        other => (plan_relation(other, catalog)?, None),
    };
    // A side without a name (a subquery without alias) gets one, as Calcite names them, so
    // a column on both sides is still reported ambiguous rather than taken from the left.
    for (side, name) in [(&mut left, "expr$0"), (&mut right, "expr$1")] {
        if side.qualifiers.is_empty() {
            let width = side.plan.schema().columns.len();
            side.qualifiers.push(Scope::new(name, 0..width));
        }
    }
    let direct_window = left.window.is_some() || right.window.is_some();
    let left_width = left.plan.schema().columns.len();
    let mut columns = left.plan.schema().columns.clone();
    columns.extend(right.plan.schema().columns.iter().cloned());
    let joined = Schema::new(columns);
    let mut qualifiers = left.qualifiers.clone();
    for scope in &right.qualifiers {
        if qualifiers.iter().any(|q| q.name == scope.name) {
            return Err(SqlError::validation(
                position,
                format!(
                    "'{}' names both sides of the join; give one of them an alias",
                    scope.name
                ),
            ));
        }
        qualifiers.push(Scope::new(
            scope.name.clone(),
            scope.columns.start + left_width..scope.columns.end + left_width,
        ));
    }
    let mut resolver = SchemaResolver {
        schema: &joined,
        qualifiers: qualifiers.clone(),
    };
    let mut left_keys = Vec::new();
    let mut right_keys = Vec::new();
    let mut residual: Option<Expr> = None;
    let mut interval: Option<(time_joins::Bounds, Option<Position>)> = None;
    for conjunct in conjuncts(on) {
        if let ast::Expr::BinaryOp {
            left: a,
            op: ast::BinaryOperator::Eq,
            right: b,
        } = conjunct
        {
            let (ta, tb) = (compile(a, &mut resolver)?, compile(b, &mut resolver)?);
            if let (Expr::Column(i), Expr::Column(j)) = (&ta.expr, &tb.expr)
                && ta.data_type == tb.data_type
            {
                let pair = if *i < left_width && *j >= left_width {
                    Some((*i, *j - left_width))
                } else if *j < left_width && *i >= left_width {
                    Some((*j, *i - left_width))
                } else {
                    None
                };
                if let Some((l, r)) = pair {
                    left_keys.push(l);
                    right_keys.push(r);
                    continue;
                }
            }
        }
        if let Some(bounds) = time_bounds(conjunct, &mut resolver, &joined, left_width)? {
            if interval.is_some() {
                return Err(SqlError::unsupported(
                    position_of(conjunct),
                    "a second time bound in a join: give one BETWEEN over the two time \
                     attributes",
                ));
            }
            interval = Some((bounds, position_of(conjunct)));
            continue;
        }
        let condition = compile_condition(conjunct, &mut resolver)?;
        residual = Some(match residual {
            None => condition,
            Some(previous) => Expr::And(Box::new(previous), Box::new(condition)),
        });
    }
    let mut output = joined.clone();
    for column in &mut output.columns {
        column.rowtime = false;
    }
    let keys = time_joins::Keys {
        left: left_keys,
        right: right_keys,
        condition: residual,
    };
    let plan = if let Some((name, as_of)) = versioned {
        time_joins::plan_temporal(
            left.plan,
            right.plan,
            kind,
            keys,
            (name, as_of),
            interval.map(|i| i.1.or(position)),
            &mut resolver,
            catalog,
        )?
    } else if let Some(plan) =
        time_joins::plan_window_join(&left.plan, &right.plan, &keys, position)?
    {
        if let Some((_, at)) = interval {
            return Err(SqlError::unsupported(
                at.or(position),
                "a time bound in a window join: rows join per window",
            ));
        }
        plan.build(left.plan, right.plan, kind, keys, output)
    } else if direct_window {
        return Err(SqlError::unsupported(
            position,
            "a join of a window TVF that is no window join: join two window TVFs of the same \
             window ON l.window_start = r.window_start AND l.window_end = r.window_end (and \
             keys), or aggregate the windows in a view first",
        ));
    } else if let Some(plan) = interval
        .is_none()
        .then(|| {
            // Conjuncts of WHERE that do not compile here are reported where WHERE is
            // planned; the bounds only need those that do.
            let pushed: Vec<Expr> = filter
                .map(conjuncts)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| compile(c, &mut resolver).ok().map(|t| t.expr))
                .collect();
            crate::window_plans::plan_window_interval_join(
                &left.plan,
                &right.plan,
                kind,
                &keys,
                &pushed,
                &output,
            )
        })
        .flatten()
    {
        plan
    } else {
        let Keys {
            left: left_keys,
            right: right_keys,
            condition: residual,
        } = keys;
        plan_regular_or_interval(
            left.plan, right.plan, kind, left_keys, right_keys, residual, interval, output,
            position,
        )?
    };
    Ok(Relation {
        plan,
        qualifiers,
        window: None,
    })
}

/// A regular join, or an interval join with `interval`'s bounds.
#[allow(clippy::too_many_arguments)]
fn plan_regular_or_interval(
    left: Plan,
    right: Plan,
    kind: JoinKind,
    left_keys: Vec<usize>,
    right_keys: Vec<usize>,
    residual: Option<Expr>,
    interval: Option<(time_joins::Bounds, Option<Position>)>,
    output: Schema,
    position: Option<Position>,
) -> Result<Plan, SqlError> {
    Ok(match interval {
        None => Plan::Join {
            left: Box::new(left),
            right: Box::new(right),
            kind,
            left_keys,
            right_keys,
            condition: residual,
            schema: output,
        },
        Some((bounds, at)) => {
            let (lower_ms, upper_ms) = (bounds.lower_ms, bounds.upper_ms);
            if !left.is_append_only() || !right.is_append_only() {
                return Err(SqlError::unsupported(
                    at.or(position),
                    "an interval join of an updating input (a GROUP BY result): both inputs \
                     must be append-only",
                ));
            }
            if lower_ms > upper_ms {
                return Err(SqlError::validation(
                    at.or(position),
                    format!(
                        "the time bounds of the join are empty: the lower bound ({lower_ms} ms) \
                         is after the upper one ({upper_ms} ms)"
                    ),
                ));
            }
            Plan::IntervalJoin {
                left: Box::new(left),
                right: Box::new(right),
                kind,
                left_time: bounds.left_time,
                right_time: bounds.right_time,
                left_keys,
                right_keys,
                lower_ms,
                upper_ms,
                condition: residual,
                schema: output,
            }
        }
    })
}

/// Whether a select item is an aggregate call with `OVER`.
fn over_call(expr: &ast::Expr) -> Option<&ast::Function> {
    match expr {
        ast::Expr::Function(f)
            if f.over.is_some()
                && AggFunc::from_name(&f.name.to_string().to_ascii_uppercase()).is_some() =>
        {
            Some(f)
        }
        _ => None,
    }
}

fn has_over(select: &ast::Select) -> bool {
    select.projection.iter().any(|item| match item {
        ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => {
            over_call(e).is_some()
        }
        _ => false,
    })
}

/// Resolves `OVER` calls of the select list to the `OverAgg`'s result columns.
struct OverResolver<'a> {
    inner: SchemaResolver<'a>,
    /// `(normalized text, column, type)` per `OVER` call.
    calls: Vec<(String, usize, DataType)>,
}

impl Resolver for OverResolver<'_> {
    fn resolve(&mut self, expr: &ast::Expr) -> Result<Option<Typed>, SqlError> {
        let text = normalized(expr);
        Ok(self
            .calls
            .iter()
            .find(|(t, ..)| *t == text)
            .map(|(_, column, data_type)| Typed {
                expr: Expr::Column(*column),
                data_type: *data_type,
            }))
    }

    fn column(&mut self, name: &[ast::Ident]) -> Result<Typed, SqlError> {
        self.inner.column(name)
    }
}

/// `SELECT .., agg(x) OVER (PARTITION BY .. ORDER BY ts <frame>) FROM r [WHERE ..]`.
fn plan_over(select: &ast::Select, relation: Relation) -> Result<Plan, SqlError> {
    let schema = relation.plan.schema().clone();
    let width = schema.columns.len();
    let mut resolver = SchemaResolver {
        schema: &schema,
        qualifiers: relation.qualifiers.clone(),
    };
    let filter = match &select.selection {
        Some(condition) => Some(compile_condition(condition, &mut resolver)?),
        None => None,
    };
    let mut spec_text: Option<String> = None;
    let mut partition = Vec::new();
    let mut time_column = 0;
    let mut frame = OverFrame::UnboundedRange;
    let mut aggs = Vec::new();
    let mut calls = Vec::new();
    for item in &select.projection {
        let (ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. }) =
            item
        else {
            continue;
        };
        let Some(function) = over_call(e) else {
            continue;
        };
        let position = position_of(e);
        let Some(ast::WindowType::WindowSpec(spec)) = &function.over else {
            return Err(SqlError::unsupported(position, "OVER a named window"));
        };
        let text = spec.to_string();
        if spec_text.as_ref().is_some_and(|t| *t != text) {
            return Err(SqlError::unsupported(
                position,
                "OVER aggregations with different windows in one SELECT: give them the same \
                 PARTITION BY, ORDER BY and frame",
            ));
        }
        if spec_text.is_none() {
            partition = spec
                .partition_by
                .iter()
                .map(|p| match compile(p, &mut resolver)?.expr {
                    Expr::Column(i) => Ok(i),
                    _ => Err(SqlError::unsupported(
                        position_of(p),
                        "PARTITION BY of an OVER aggregation must name columns",
                    )),
                })
                .collect::<Result<_, _>>()?;
            time_column = match spec.order_by.as_slice() {
                [order] if order.options.asc != Some(false) => {
                    match compile(&order.expr, &mut resolver)?.expr {
                        Expr::Column(i) if schema.columns[i].rowtime => i,
                        _ => {
                            return Err(SqlError::unsupported(
                                position_of(&order.expr),
                                "the ORDER BY of an OVER aggregation must be an event-time \
                                 attribute (a column with a WATERMARK), ascending",
                            ));
                        }
                    }
                }
                _ => {
                    return Err(SqlError::unsupported(
                        position,
                        "an OVER aggregation needs ORDER BY one event-time attribute, ascending",
                    ));
                }
            };
            frame = over_frame(spec.window_frame.as_ref(), position)?;
            spec_text = Some(text);
        }
        let name = function.name.to_string().to_ascii_uppercase();
        let func = AggFunc::from_name(&name)
            .ok_or_else(|| SqlError::unsupported(position, format!("{name} OVER (..)")))?;
        let ast::FunctionArguments::List(list) = &function.args else {
            return Err(SqlError::validation(
                position,
                format!("{name} needs an argument"),
            ));
        };
        if list.duplicate_treatment.is_some() {
            return Err(SqlError::unsupported(
                position,
                format!("{name}(DISTINCT ..) OVER"),
            ));
        }
        let (arg, arg_type) = match list.args.as_slice() {
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)]
                if func == AggFunc::Count =>
            {
                (None, None)
            }
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(a))] => {
                let typed = compile(a, &mut resolver)?;
                match typed.expr {
                    Expr::Column(i) => (Some(i), Some(typed.data_type)),
                    _ => {
                        return Err(SqlError::unsupported(
                            position_of(a),
                            "the argument of an OVER aggregate must be a column; compute it \
                             in a view",
                        ));
                    }
                }
            }
            _ => {
                return Err(SqlError::validation(
                    position,
                    format!("{name} takes one argument"),
                ));
            }
        };
        let result_type = func
            .result_type(arg_type)
            .map_err(|e| SqlError::validation(position, format!("type mismatch: {e}")))?;
        calls.push((normalized(e), width + aggs.len(), result_type));
        aggs.push(AggCall {
            func,
            distinct: false,
            arg,
            result_type,
        });
    }
    let mut columns = schema.columns.clone();
    for (i, call) in aggs.iter().enumerate() {
        columns.push(Column::new(format!("over${i}"), call.result_type));
    }
    let over_schema = Schema::new(columns);
    let mut over_resolver = OverResolver {
        inner: SchemaResolver {
            schema: &over_schema,
            qualifiers: relation.qualifiers.clone(),
        },
        calls,
    };
    let (projection, columns) = compile_select_list(
        &select.projection,
        &mut over_resolver,
        &schema,
        &relation.qualifiers,
    )?;
    let input = match filter {
        None => relation.plan,
        Some(filter) => Plan::Calc {
            projection: (0..width).map(Expr::Column).collect(),
            schema: schema.clone(),
            input: Box::new(relation.plan),
            filter: Some(filter),
        },
    };
    Ok(Plan::Calc {
        input: Box::new(Plan::OverAgg {
            input: Box::new(input),
            partition,
            time_column,
            over: OverAgg { frame, aggs },
            schema: over_schema,
        }),
        filter: None,
        projection,
        schema: Schema::new(columns),
    })
}

/// The frame of an `OVER` window: `ROWS`/`RANGE BETWEEN .. PRECEDING AND CURRENT ROW`.
fn over_frame(
    frame: Option<&ast::WindowFrame>,
    position: Option<Position>,
) -> Result<OverFrame, SqlError> {
    let Some(frame) = frame else {
        return Ok(OverFrame::UnboundedRange);
    };
    let wrong = || {
        SqlError::unsupported(
            position,
            "this OVER frame: supported are ROWS BETWEEN n PRECEDING AND CURRENT ROW and RANGE \
             BETWEEN INTERVAL .. PRECEDING AND CURRENT ROW (or UNBOUNDED PRECEDING)",
        )
    };
    if !matches!(
        frame.end_bound,
        None | Some(ast::WindowFrameBound::CurrentRow)
    ) {
        return Err(wrong());
    }
    match (&frame.units, &frame.start_bound) {
        (ast::WindowFrameUnits::Rows, ast::WindowFrameBound::Preceding(None)) => {
            Ok(OverFrame::UnboundedRows)
        }
        (ast::WindowFrameUnits::Range, ast::WindowFrameBound::Preceding(None)) => {
            Ok(OverFrame::UnboundedRange)
        }
        (ast::WindowFrameUnits::Rows, ast::WindowFrameBound::CurrentRow) => Ok(OverFrame::Rows(0)),
        (ast::WindowFrameUnits::Rows, ast::WindowFrameBound::Preceding(Some(n))) => {
            match n.as_ref() {
                ast::Expr::Value(v) => match &v.value {
                    ast::Value::Number(text, _) => text
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n <= 10_000)
                        .map(OverFrame::Rows)
                        .ok_or_else(|| {
                            SqlError::unsupported(
                                position_of(n),
                                "ROWS n PRECEDING needs n between 0 and 10000",
                            )
                        }),
                    _ => Err(wrong()),
                },
                _ => Err(wrong()),
            }
        }
        (ast::WindowFrameUnits::Range, ast::WindowFrameBound::Preceding(Some(n))) => {
            match n.as_ref() {
                ast::Expr::Interval(interval) => Ok(OverFrame::Range(expr::interval_ms(
                    interval,
                    position_of(n),
                )?)),
                _ => Err(wrong()),
            }
        }
        _ => Err(wrong()),
    }
}

/// The largest `N` of a Top-N: its state holds up to `N` rows per partition.
const TOP_N_MAX: i64 = 10_000;

/// `(SELECT .., ROW_NUMBER() OVER (PARTITION BY .. ORDER BY ..) AS rn FROM ..) WHERE rn <= N`:
/// a Top-N (deduplication with `rn = 1`), or `None` when `factor` holds no `ROW_NUMBER`.
/// The outer `WHERE` stays as it is (a filter over the ranked rows, which it keeps).
fn plan_ranked(
    factor: &ast::TableFactor,
    outer_where: Option<&ast::Expr>,
    catalog: &Catalog,
) -> Result<Option<Relation>, SqlError> {
    let ast::TableFactor::Derived {
        subquery, alias, ..
    } = factor
    else {
        return Ok(None);
    };
    let ast::SetExpr::Select(inner) = subquery.body.as_ref() else {
        return Ok(None);
    };
    let found = inner.projection.iter().enumerate().find_map(|(i, item)| {
        let (expr, alias) = match item {
            ast::SelectItem::UnnamedExpr(e) => (e, None),
            ast::SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            _ => return None,
        };
        match expr {
            ast::Expr::Function(f)
                if f.name.to_string().eq_ignore_ascii_case("ROW_NUMBER") && f.over.is_some() =>
            {
                Some((i, f, alias.unwrap_or_else(|| format!("EXPR${i}"))))
            }
            _ => None,
        }
    });
    let Some((index, function, rn_name)) = found else {
        return Ok(None);
    };
    let position = Position::of(function.name.span());
    let Some(ast::WindowType::WindowSpec(spec)) = &function.over else {
        return Err(SqlError::unsupported(
            position,
            "ROW_NUMBER() OVER a named window",
        ));
    };
    if spec.window_frame.is_some() || spec.order_by.is_empty() {
        return Err(SqlError::unsupported(
            position,
            "ROW_NUMBER() needs OVER (PARTITION BY .. ORDER BY ..) without a frame",
        ));
    }
    let limit = outer_where
        .map(conjuncts)
        .unwrap_or_default()
        .into_iter()
        .find_map(|c| rank_limit(c, &rn_name))
        .ok_or_else(|| {
            SqlError::unsupported(
                position,
                format!(
                    "ROW_NUMBER() without `WHERE {rn_name} <= N` (or `{rn_name} = 1`) in the \
                     outer query: only Top-N and deduplication are supported"
                ),
            )
        })?;
    if !(1..=TOP_N_MAX).contains(&limit) {
        return Err(SqlError::unsupported(
            position,
            format!("a Top-N of {limit} rows: N must be between 1 and {TOP_N_MAX}"),
        ));
    }
    // The inner query without ROW_NUMBER, planned as any query.
    let mut without = inner.as_ref().clone();
    without.projection.remove(index);
    let input = plan_select(&without, catalog)?;
    let input_schema = input.schema().clone();
    let column_of = |e: &ast::Expr| -> Result<usize, SqlError> {
        let name = match e {
            ast::Expr::Identifier(i) => Some(i),
            ast::Expr::CompoundIdentifier(parts) => parts.last(),
            _ => None,
        };
        name.and_then(|n| input_schema.index_of(&n.value))
            .ok_or_else(|| {
                SqlError::unsupported(
                    position_of(e),
                    format!(
                        "PARTITION BY and ORDER BY of ROW_NUMBER must name columns the inner \
                         SELECT lists ({}), not `{e}`",
                        input_schema.names().join(", ")
                    ),
                )
            })
    };
    let partition = spec
        .partition_by
        .iter()
        .map(column_of)
        .collect::<Result<Vec<_>, _>>()?;
    let order = spec
        .order_by
        .iter()
        .map(|o| Ok((column_of(&o.expr)?, o.options.asc == Some(false))))
        .collect::<Result<Vec<_>, SqlError>>()?;
    let mut columns = input_schema.columns.clone();
    for column in &mut columns {
        column.rowtime = false;
    }
    columns.push(Column::new(rn_name, DataType::BigInt));
    let width = columns.len();
    let rank = Plan::Rank {
        top: TopN {
            order,
            limit: limit as usize,
            append_only: input.is_append_only(),
        },
        input: Box::new(input),
        partition,
        schema: Schema::new(columns.clone()),
    };
    // `rn` where the inner SELECT lists it.
    let plan = if index + 1 == width {
        rank
    } else {
        let mut order: Vec<usize> = (0..width - 1).collect();
        order.insert(index, width - 1);
        Plan::Calc {
            input: Box::new(rank),
            filter: None,
            projection: order.iter().map(|&i| Expr::Column(i)).collect(),
            schema: Schema::new(order.iter().map(|&i| columns[i].clone()).collect()),
        }
    };
    Ok(Some(Relation {
        qualifiers: alias
            .iter()
            .map(|a| Scope::new(&a.name.value, 0..width))
            .collect(),
        plan,
        window: None,
    }))
}

/// `N` of `rn <= N`, `rn < N + 1`, `rn = 1`, `N >= rn`, where `rn` is `name`.
fn rank_limit(conjunct: &ast::Expr, name: &str) -> Option<i64> {
    let ast::Expr::BinaryOp { left, op, right } = conjunct else {
        return None;
    };
    let is_rn = |e: &ast::Expr| match e {
        ast::Expr::Identifier(i) => i.value.eq_ignore_ascii_case(name),
        ast::Expr::CompoundIdentifier(parts) => parts
            .last()
            .is_some_and(|i| i.value.eq_ignore_ascii_case(name)),
        _ => false,
    };
    let number = |e: &ast::Expr| match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n.parse::<i64>().ok(),
            _ => None,
        },
        _ => None,
    };
    use ast::BinaryOperator as Op;
    let (op, n) = if is_rn(left) {
        (op.clone(), number(right)?)
    } else if is_rn(right) {
        let flipped = match op {
            Op::Gt => Op::Lt,
            Op::GtEq => Op::LtEq,
            Op::Lt => Op::Gt,
            Op::LtEq => Op::GtEq,
            other => other.clone(),
        };
        (flipped, number(left)?)
    } else {
        return None;
    };
    match op {
        Op::LtEq => Some(n),
        Op::Lt => Some(n - 1),
        Op::Eq if n == 1 => Some(1),
        _ => None,
    }
}

/// The `AND`ed parts of a condition.
fn conjuncts(expr: &ast::Expr) -> Vec<&ast::Expr> {
    match expr {
        ast::Expr::BinaryOp {
            left,
            op: ast::BinaryOperator::And,
            right,
        } => {
            let mut parts = conjuncts(left);
            parts.extend(conjuncts(right));
            parts
        }
        ast::Expr::Nested(inner) => conjuncts(inner),
        other => vec![other],
    }
}

/// `x.ts BETWEEN y.ts [- INTERVAL ..] AND y.ts [+ INTERVAL ..]` over the time attributes of
/// the two sides: the bounds of the right time relative to the left time, or `None` when the
/// condition has another shape (then it is an ordinary condition).
fn time_bounds(
    conjunct: &ast::Expr,
    resolver: &mut SchemaResolver<'_>,
    joined: &Schema,
    left_width: usize,
) -> Result<Option<time_joins::Bounds>, SqlError> {
    let ast::Expr::Between {
        expr,
        negated: false,
        low,
        high,
    } = conjunct
    else {
        return Ok(None);
    };
    let time_column =
        |e: &ast::Expr, resolver: &mut SchemaResolver<'_>| -> Result<Option<usize>, SqlError> {
            Ok(match compile(e, resolver)?.expr {
                Expr::Column(i) if joined.columns[i].rowtime => Some(i),
                _ => None,
            })
        };
    let Some(subject) = time_column(expr, resolver)? else {
        return Ok(None);
    };
    let mut bound = |e: &ast::Expr| -> Result<Option<(usize, i64)>, SqlError> {
        let (base, offset) = match e {
            ast::Expr::BinaryOp {
                left,
                op: op @ (ast::BinaryOperator::Plus | ast::BinaryOperator::Minus),
                right,
            } => {
                let ast::Expr::Interval(interval) = right.as_ref() else {
                    return Ok(None);
                };
                let ms = expr::interval_ms(interval, position_of(right))?;
                (
                    left.as_ref(),
                    if *op == ast::BinaryOperator::Minus {
                        -ms
                    } else {
                        ms
                    },
                )
            }
            other => (other, 0),
        };
        Ok(time_column(base, resolver)?.map(|column| (column, offset)))
    };
    let (Some((low_base, low)), Some((high_base, high))) = (bound(low)?, bound(high)?) else {
        return Ok(None);
    };
    let subject_left = subject < left_width;
    if low_base != high_base || (low_base < left_width) == subject_left {
        return Ok(None);
    }
    // right ∈ [left + low, left + high], or left ∈ [right + low, right + high], that is
    // right ∈ [left - high, left - low].
    let (left_time, right_time) = if subject_left {
        (subject, low_base - left_width)
    } else {
        (low_base, subject - left_width)
    };
    let (lower_ms, upper_ms) = if subject_left {
        (-high, -low)
    } else {
        (low, high)
    };
    Ok(Some(time_joins::Bounds {
        lower_ms,
        upper_ms,
        left_time,
        right_time,
    }))
}

/// A table name without quotes, lower case (names are case-insensitive).
fn plain_name(name: &ast::ObjectName) -> String {
    name.0
        .iter()
        .map(|part| match part.as_ident() {
            Some(ident) => ident.value.to_lowercase(),
            None => part.to_string().to_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A catalog table or view as a plan.
fn scan(name: &ast::ObjectName, catalog: &Catalog) -> Result<Plan, SqlError> {
    let position = Position::of(name.span());
    let key = plain_name(name);
    match catalog.get(&key) {
        Some(CatalogTable::View { query, .. }) => plan_query(query, catalog),
        Some(table) => Ok(Plan::Scan {
            table: key,
            schema: table.schema().clone(),
        }),
        None => Err(SqlError::validation(
            position,
            format!(
                "table '{name}' not found; known tables: {}",
                if catalog.is_empty() {
                    "none".to_string()
                } else {
                    catalog.names().join(", ")
                }
            ),
        )),
    }
}

/// `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '10' SECOND))` and its siblings.
fn plan_window_tvf(expr: &ast::Expr, catalog: &Catalog) -> Result<Relation, SqlError> {
    let position = position_of(expr);
    let ast::Expr::Function(function) = expr else {
        return Err(SqlError::unsupported(position, format!("TABLE({expr})")));
    };
    let name = function.name.to_string().to_ascii_uppercase();
    let args = function_args(function)?;
    let expected = match name.as_str() {
        "TUMBLE" => "TUMBLE(TABLE t, DESCRIPTOR(ts), size [, offset])",
        "HOP" => "HOP(TABLE t, DESCRIPTOR(ts), slide, size [, offset])",
        "CUMULATE" => "CUMULATE(TABLE t, DESCRIPTOR(ts), step, size)",
        "SESSION" => "SESSION(TABLE t, DESCRIPTOR(ts), gap)",
        _ => {
            return Err(SqlError::unsupported(
                position,
                format!("table function {name}: supported are TUMBLE, HOP, CUMULATE and SESSION"),
            ));
        }
    };
    let (min, max) = match name.as_str() {
        "TUMBLE" => (3, 4),
        "HOP" => (4, 5),
        "CUMULATE" => (4, 4),
        _ => (3, 3),
    };
    if args.len() < min || args.len() > max {
        return Err(SqlError::validation(
            position,
            format!(
                "{name} takes {min}{} arguments: {expected}",
                if max > min {
                    format!(" or {max}")
                } else {
                    String::new()
                }
            ),
        ));
    }
    let table_name = match args[0] {
        ast::Expr::Identifier(i) => ast::ObjectName::from(vec![i.clone()]),
        ast::Expr::CompoundIdentifier(parts) => ast::ObjectName::from(parts.clone()),
        other => {
            return Err(SqlError::unsupported(
                position_of(other),
                format!("the first argument of {name} must be TABLE name: {expected}"),
            ));
        }
    };
    let input = scan(&table_name, catalog)?;
    let time_ident = match args[1] {
        ast::Expr::Function(d) if d.name.to_string().eq_ignore_ascii_case("DESCRIPTOR") => {
            match function_args(d)?.as_slice() {
                [ast::Expr::Identifier(i)] => i.clone(),
                _ => {
                    return Err(SqlError::validation(
                        position_of(args[1]),
                        "DESCRIPTOR takes one column name",
                    ));
                }
            }
        }
        other => {
            return Err(SqlError::validation(
                position_of(other),
                format!(
                    "the second argument of {name} must be DESCRIPTOR(time column): {expected}"
                ),
            ));
        }
    };
    let schema = input.schema().clone();
    let Some(time_column) = schema.index_of(&time_ident.value) else {
        return Err(SqlError::validation(
            Position::of(time_ident.span),
            format!(
                "column '{}' not found; available columns: {}",
                time_ident.value,
                schema.names().join(", ")
            ),
        ));
    };
    let time = &schema.columns[time_column];
    if !time.rowtime {
        return Err(SqlError::validation(
            Position::of(time_ident.span),
            format!(
                "the time column of {name} must be an event-time attribute (a column with a \
                 WATERMARK FOR declaration), but '{}' of type {} is not",
                time.name, time.data_type
            ),
        ));
    }
    let mut durations = Vec::new();
    for arg in &args[2..] {
        let ast::Expr::Interval(interval) = arg else {
            return Err(SqlError::validation(
                position_of(arg),
                format!("{name} takes INTERVAL arguments: {expected}"),
            ));
        };
        durations.push(expr::interval_ms(interval, position_of(arg))?);
    }
    let window = match (name.as_str(), durations.as_slice()) {
        ("TUMBLE", [size, rest @ ..]) => WindowKind::Tumble {
            size_ms: *size,
            offset_ms: rest.first().copied().unwrap_or(0),
        },
        ("HOP", [slide, size, rest @ ..]) => WindowKind::Hop {
            slide_ms: *slide,
            size_ms: *size,
            offset_ms: rest.first().copied().unwrap_or(0),
        },
        ("CUMULATE", [step, size]) => WindowKind::Cumulate {
            step_ms: *step,
            size_ms: *size,
        },
        (_, [gap]) => WindowKind::Session { gap_ms: *gap },
        _ => {
            return Err(SqlError::validation(
                position,
                format!("wrong arguments: {expected}"),
            ));
        }
    };
    window
        .validate()
        .map_err(|e| SqlError::validation(position, format!("{name}: {e}")))?;
    let mut columns = schema.columns.clone();
    columns.push(Column::new("window_start", DataType::Timestamp));
    columns.push(Column::new("window_end", DataType::Timestamp));
    columns.push(Column {
        name: "window_time".into(),
        data_type: time.data_type,
        rowtime: true,
    });
    let width = columns.len();
    let plan = Plan::WindowTvf {
        input: Box::new(input),
        window,
        time_column,
        schema: Schema::new(columns),
    };
    Ok(Relation {
        plan,
        qualifiers: vec![Scope::new(plain_name(&table_name), 0..width)],
        window: Some((window, time_column)),
    })
}

/// Whether `expr` calls an aggregate function (outside `OVER`).
fn contains_aggregate(expr: &ast::Expr) -> bool {
    let mut found = false;
    let _ = ast::visit_expressions(expr, |e| {
        if let ast::Expr::Function(f) = e
            && f.over.is_none()
            && AggFunc::from_name(&f.name.to_string().to_ascii_uppercase()).is_some()
        {
            found = true;
            return std::ops::ControlFlow::Break(());
        }
        std::ops::ControlFlow::Continue(())
    });
    found
}

/// Normalized text of an expression, to match select items against `GROUP BY` items.
fn normalized(expr: &ast::Expr) -> String {
    expr.to_string().to_lowercase()
}

/// Resolves the select list and `HAVING` of an aggregate query over the aggregation's output.
struct AggResolver<'a> {
    /// The schema the group keys and aggregate arguments are compiled against.
    input: &'a Schema,
    qualifiers: Vec<Scope>,
    /// `(normalized text, compiled over input)` of each group key.
    keys: Vec<(String, Typed)>,
    /// `(normalized text, call, compiled argument)` of each aggregate call met so far.
    aggs: Vec<(String, AggFunc, bool, Option<Typed>)>,
    /// Whether the output starts with `window_start, window_end, window_time`.
    windowed: bool,
}

impl AggResolver<'_> {
    fn offset(&self) -> usize {
        if self.windowed { 3 } else { 0 }
    }

    fn agg_type(&self, index: usize) -> DataType {
        let (_, func, _, arg) = &self.aggs[index];
        func.result_type(arg.as_ref().map(|a| a.data_type))
            .unwrap_or(DataType::BigInt)
    }
}

impl Resolver for AggResolver<'_> {
    fn resolve(&mut self, expr: &ast::Expr) -> Result<Option<Typed>, SqlError> {
        let text = normalized(expr);
        if let Some(i) = self.keys.iter().position(|(k, _)| *k == text) {
            return Ok(Some(Typed {
                expr: Expr::Column(self.offset() + i),
                data_type: self.keys[i].1.data_type,
            }));
        }
        let ast::Expr::Function(function) = expr else {
            return Ok(None);
        };
        let name = function.name.to_string().to_ascii_uppercase();
        let Some(func) = AggFunc::from_name(&name) else {
            return Ok(None);
        };
        let position = position_of(expr);
        if function.over.is_some() {
            return Err(SqlError::unsupported(
                position,
                format!("{name}(..) OVER (..)"),
            ));
        }
        if function.filter.is_some() {
            return Err(SqlError::unsupported(
                position,
                format!("{name}(..) FILTER (..)"),
            ));
        }
        let ast::FunctionArguments::List(list) = &function.args else {
            return Err(SqlError::validation(
                position,
                format!("{name} needs an argument"),
            ));
        };
        let distinct = matches!(
            list.duplicate_treatment,
            Some(ast::DuplicateTreatment::Distinct)
        );
        let arg = match list.args.as_slice() {
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)]
                if func == AggFunc::Count && !distinct =>
            {
                None
            }
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e))] => {
                if contains_aggregate(e) {
                    return Err(SqlError::validation(
                        position_of(e),
                        "aggregate functions cannot be nested",
                    ));
                }
                let mut inner = SchemaResolver {
                    schema: self.input,
                    qualifiers: self.qualifiers.clone(),
                };
                Some(compile(e, &mut inner)?)
            }
            _ => {
                return Err(SqlError::validation(
                    position,
                    format!("{name} takes one argument"),
                ));
            }
        };
        let result_type = func
            .result_type(arg.as_ref().map(|a| a.data_type))
            .map_err(|e| SqlError::validation(position, format!("type mismatch: {e}")))?;
        let index = match self.aggs.iter().position(|(t, ..)| *t == text) {
            Some(i) => i,
            None => {
                self.aggs.push((text, func, distinct, arg));
                self.aggs.len() - 1
            }
        };
        Ok(Some(Typed {
            expr: Expr::Column(self.offset() + self.keys.len() + index),
            data_type: result_type,
        }))
    }

    fn column(&mut self, name: &[ast::Ident]) -> Result<Typed, SqlError> {
        let Some(last) = name.last() else {
            return Err(SqlError::validation(None, "empty column name"));
        };
        if self.windowed {
            let index = ["window_start", "window_end", "window_time"]
                .iter()
                .position(|w| w.eq_ignore_ascii_case(&last.value));
            if let Some(i) = index {
                let data_type = self.input.columns[self.input.columns.len() - 3 + i].data_type;
                return Ok(Typed {
                    expr: Expr::Column(i),
                    data_type,
                });
            }
        }
        // Resolve to check the column exists (a better error for a typo), then refuse it.
        expr::resolve_in_schema(self.input, &self.qualifiers, name)?;
        Err(SqlError::validation(
            Position::of(last.span),
            format!(
                "column '{}' must appear in GROUP BY or be used in an aggregate function",
                last.value
            ),
        ))
    }
}

fn plan_aggregate(
    select: &ast::Select,
    relation: Relation,
    group_exprs: &[ast::Expr],
) -> Result<Plan, SqlError> {
    let position = Position::of(select.select_token.0.span);
    let tvf_schema = relation.plan.schema().clone();
    let (base, window) = match relation.window {
        Some((window, time_column)) => {
            let Plan::WindowTvf { input, .. } = relation.plan else {
                return Err(SqlError::unsupported(position, "window TVF"));
            };
            (*input, Some((window, time_column)))
        }
        None => (relation.plan, None),
    };
    let base_schema = base.schema().clone();
    // Group keys and aggregate arguments are computed on the input rows; in a window
    // aggregation the window columns are not part of them.
    let mut key_asts = Vec::new();
    let mut window_keys = 0;
    for e in group_exprs {
        let is_window_column = window.is_some()
            && matches!(e, ast::Expr::Identifier(i) if ["window_start", "window_end", "window_time"].iter().any(|w| w.eq_ignore_ascii_case(&i.value)));
        if is_window_column {
            if let ast::Expr::Identifier(i) = e
                && !i.value.eq_ignore_ascii_case("window_time")
            {
                window_keys += 1;
            }
            continue;
        }
        key_asts.push(e);
    }
    if window.is_some() && window_keys < 2 {
        return Err(SqlError::unsupported(
            position,
            "a GROUP BY over a window TVF must include window_start and window_end",
        ));
    }
    let mut key_resolver = SchemaResolver {
        schema: &base_schema,
        qualifiers: relation.qualifiers.clone(),
    };
    let mut keys = Vec::with_capacity(key_asts.len());
    for e in &key_asts {
        if contains_aggregate(e) {
            return Err(SqlError::validation(
                position_of(e),
                "GROUP BY cannot hold an aggregate function",
            ));
        }
        keys.push((normalized(e), compile(e, &mut key_resolver)?));
    }
    let filter = match &select.selection {
        Some(condition) => Some(compile_condition(condition, &mut key_resolver)?),
        None => None,
    };
    let windowed = window.is_some();
    let mut resolver = AggResolver {
        input: if windowed { &tvf_schema } else { &base_schema },
        qualifiers: relation.qualifiers.clone(),
        keys,
        aggs: Vec::new(),
        windowed,
    };
    // The select list and HAVING, over the aggregation's output.
    let mut output_columns: Vec<Column> = Vec::new();
    if windowed {
        output_columns.extend(
            tvf_schema.columns[tvf_schema.columns.len() - 3..]
                .iter()
                .cloned(),
        );
    }
    let having = match &select.having {
        Some(h) => Some(compile_condition(h, &mut resolver)?),
        None => None,
    };
    // Compile the select list against a schema that is completed once all calls are known;
    // column names and rowtime flags come from the intermediate schema built below.
    let placeholder = Schema::default();
    let (projection, mut columns) =
        compile_select_list(&select.projection, &mut resolver, &placeholder, &[])?;
    for (text, typed) in &resolver.keys {
        let name = match typed.expr {
            Expr::Column(i) => base_schema.columns[i].name.clone(),
            _ => text.clone(),
        };
        output_columns.push(Column::new(name, typed.data_type));
    }
    for i in 0..resolver.aggs.len() {
        output_columns.push(Column::new(format!("agg${i}"), resolver.agg_type(i)));
    }
    // Only window_time stays a time attribute after a window aggregation.
    for (column, expr) in columns.iter_mut().zip(&projection) {
        column.rowtime = windowed && matches!(expr, Expr::Column(2));
    }
    // The pre-projection: [time] ++ keys ++ aggregate arguments.
    let mut pre = Vec::new();
    let mut pre_columns = Vec::new();
    if let Some((_, time_column)) = window {
        pre.push(Expr::Column(time_column));
        pre_columns.push(base_schema.columns[time_column].clone());
    }
    for (text, typed) in &resolver.keys {
        pre.push(typed.expr.clone());
        pre_columns.push(Column::new(text.clone(), typed.data_type));
    }
    let mut aggs = Vec::with_capacity(resolver.aggs.len());
    for (i, (text, func, distinct, arg)) in resolver.aggs.iter().enumerate() {
        let arg_index = arg.as_ref().map(|a| {
            pre.push(a.expr.clone());
            pre_columns.push(Column::new(format!("arg${i}:{text}"), a.data_type));
            pre.len() - 1
        });
        aggs.push(AggCall {
            func: *func,
            distinct: *distinct,
            arg: arg_index,
            result_type: resolver.agg_type(i),
        });
    }
    let pre_plan = Plan::Calc {
        input: Box::new(base),
        filter,
        projection: pre,
        schema: Schema::new(pre_columns),
    };
    let key_count = resolver.keys.len();
    let intermediate = Schema::new(output_columns);
    let aggregate = match window {
        Some((window, _)) => {
            if !pre_plan.is_append_only() {
                return Err(SqlError::unsupported(
                    position,
                    "a window aggregation over an updating input",
                ));
            }
            Plan::WindowAgg {
                input: Box::new(pre_plan),
                window,
                key_count,
                aggs,
                schema: intermediate,
            }
        }
        None => crate::window_plans::group_or_cascaded(pre_plan, key_count, aggs, intermediate),
    };
    Ok(Plan::Calc {
        input: Box::new(aggregate),
        filter: having,
        projection,
        schema: Schema::new(columns),
    })
}

/// Checks that every column a plan's calc reads exists in its input (a planner self-check run
/// by the tests: an index out of range would be a planner bug, never a user error).
pub fn check_indexes(plan: &Plan) -> Result<(), String> {
    fn max_column(expr: &Expr, max: &mut Option<usize>) {
        match expr {
            Expr::Column(i) => *max = Some(max.map_or(*i, |m: usize| m.max(*i))),
            Expr::Literal(_) => {}
            Expr::Not(e) | Expr::Negate(e) | Expr::IsNull(e, _) => max_column(e, max),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Arith(_, a, b, _) | Expr::Compare(_, a, b) => {
                max_column(a, max);
                max_column(b, max);
            }
            Expr::Like { expr, pattern, .. } => {
                max_column(expr, max);
                max_column(pattern, max);
            }
            Expr::Concat(v) | Expr::Call(_, v) => v.iter().for_each(|e| max_column(e, max)),
            Expr::Case {
                operand,
                branches,
                otherwise,
            } => {
                if let Some(o) = operand {
                    max_column(o, max);
                }
                for (w, t) in branches {
                    max_column(w, max);
                    max_column(t, max);
                }
                max_column(otherwise, max);
            }
            Expr::Cast { expr, .. } => max_column(expr, max),
            Expr::InList { expr, list, .. } => {
                max_column(expr, max);
                list.iter().for_each(|e| max_column(e, max));
            }
        }
    }
    match plan {
        Plan::Scan { .. } => Ok(()),
        Plan::Calc {
            input,
            filter,
            projection,
            ..
        } => {
            let width = input.schema().columns.len();
            let mut max = None;
            for e in projection.iter().chain(filter) {
                max_column(e, &mut max);
            }
            if max.is_some_and(|m| m >= width) {
                return Err(format!("calc reads column {max:?} of {width}"));
            }
            check_indexes(input)
        }
        Plan::GroupAgg { input, .. }
        | Plan::WindowAgg { input, .. }
        | Plan::CascadedWindowAgg { input, .. }
        | Plan::WindowTvf { input, .. }
        | Plan::Rank { input, .. }
        | Plan::OverAgg { input, .. } => check_indexes(input),
        Plan::Sort { input, sort, .. } => {
            let width = input.schema().columns.len();
            if sort.keys.iter().any(|k| k.column >= width) {
                return Err(format!("sort reads a column beyond its {width} inputs"));
            }
            check_indexes(input)
        }
        Plan::MatchRecognize(mr) => check_indexes(&mr.input),
        Plan::Join {
            left,
            right,
            left_keys,
            right_keys,
            condition,
            ..
        }
        | Plan::IntervalJoin {
            left,
            right,
            left_keys,
            right_keys,
            condition,
            ..
        }
        | Plan::TemporalJoin {
            left,
            right,
            left_keys,
            right_keys,
            condition,
            ..
        }
        | Plan::WindowJoin {
            left,
            right,
            left_keys,
            right_keys,
            condition,
            ..
        }
        | Plan::WindowIntervalJoin {
            left,
            right,
            left_keys,
            right_keys,
            condition,
            ..
        } => {
            let (lw, rw) = (left.schema().columns.len(), right.schema().columns.len());
            let mut max = None;
            if let Some(c) = condition {
                max_column(c, &mut max);
            }
            if max.is_some_and(|m| m >= lw + rw)
                || left_keys.iter().any(|&k| k >= lw)
                || right_keys.iter().any(|&k| k >= rw)
            {
                return Err(format!("join reads a column beyond its {lw} + {rw} inputs"));
            }
            check_indexes(left)?;
            check_indexes(right)
        }
        Plan::Union { inputs, .. } => inputs.iter().try_for_each(check_indexes),
    }
}

/// Column names of a schema joined for messages.
pub fn column_list(schema: &Schema) -> String {
    schema.names().join(", ")
}

/// Options as `'k' = 'v'` pairs, for `DESCRIBE` and messages.
pub fn options_list(options: &BTreeMap<String, String>) -> String {
    options
        .iter()
        .map(|(k, v)| format!("'{k}' = '{v}'"))
        .collect::<Vec<_>>()
        .join(", ")
}
