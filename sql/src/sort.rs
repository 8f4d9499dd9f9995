//! `ORDER BY` and `LIMIT`: on bounded results, and by event time on unbounded ones.
//!
//! A streaming query never ends, so a total order of its result exists only in two cases,
//! the two Flink allows:
//!
//! - **bounded** inputs (every table read is a file or `datagen` with a row count): the sort
//!   holds the final result (the changelog materialized: row -> net copies) and, when the
//!   watermark reaches the end of the input, emits it in order, after `OFFSET` rows and up to
//!   `LIMIT` rows, as inserts. State is the whole (bounded) result.
//! - **unbounded** inputs: `ORDER BY` whose first key is an event-time attribute ascending,
//!   without `LIMIT`/`OFFSET`, over an append-only input. Rows wait in `MapState<time, rows>`
//!   until the watermark reaches their time and leave in order (further keys order the rows
//!   of one time). A row at or behind the watermark on arrival is late: counted
//!   (`late_records`), not emitted.
//!
//! Anything else is refused with a clear error. Both run on one key, so on one subtask (as
//! Flink's sort runs with parallelism 1); the sink after it is chained, so the order reaches
//! it. Rows equal in every key are ordered by their contents, so the order is the same at
//! every parallelism. `NULL`s come first ascending and last descending unless `NULLS
//! FIRST`/`NULLS LAST` says otherwise (Flink's default).

use std::cmp::Ordering;

use eichhorn::prelude::*;
use eichhorn::state::MapState;
use serde::{Deserialize, Serialize};
use sqlparser::ast::{self, Spanned};

use crate::catalog::{Catalog, CatalogTable, Connector};
use crate::error::{Position, SqlError};
use crate::expr::{self, Expr, SchemaResolver};
use crate::plan::Plan;
use crate::types::{Change, Row, Value};

/// One key of an `ORDER BY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SortKey {
    /// The column.
    pub column: usize,
    /// `DESC`.
    pub descending: bool,
    /// Whether `NULL`s come before every value.
    pub nulls_first: bool,
}

/// When a sort emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortMode {
    /// At the end of a bounded input, everything at once.
    Bounded,
    /// As the watermark passes each row's time (the first key's column).
    ByTime {
        /// The event-time column.
        time_column: usize,
    },
}

/// An `ORDER BY` with its `OFFSET` and `LIMIT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sort {
    /// The keys, most significant first.
    pub keys: Vec<SortKey>,
    /// Rows skipped first.
    pub offset: u64,
    /// At most this many rows after the offset.
    pub limit: Option<u64>,
    /// Bounded or by time.
    pub mode: SortMode,
}

impl Sort {
    /// The order of two rows: by the keys, then by the whole row.
    pub fn compare(&self, a: &[Value], b: &[Value]) -> Ordering {
        for key in &self.keys {
            let (x, y) = (&a[key.column], &b[key.column]);
            let order = match (x, y) {
                (Value::Null, Value::Null) => Ordering::Equal,
                (Value::Null, _) if key.nulls_first => Ordering::Less,
                (Value::Null, _) => Ordering::Greater,
                (_, Value::Null) if key.nulls_first => Ordering::Greater,
                (_, Value::Null) => Ordering::Less,
                _ if key.descending => y.cmp(x),
                _ => x.cmp(y),
            };
            if order != Ordering::Equal {
                return order;
            }
        }
        a.cmp(b)
    }

    /// The rows of a bounded result in order, after the offset and within the limit.
    pub fn finish(&self, mut rows: Vec<Row>) -> Vec<Row> {
        rows.sort_by(|a, b| self.compare(a, b));
        let limit = self.limit.map_or(usize::MAX, |l| l as usize);
        rows.into_iter()
            .skip(self.offset as usize)
            .take(limit)
            .collect()
    }

    /// `ORDER BY ..` as `EXPLAIN` shows it.
    pub fn describe(&self) -> String {
        let keys = self
            .keys
            .iter()
            .map(|k| {
                format!(
                    "${} {}",
                    k.column,
                    if k.descending { "DESC" } else { "ASC" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut text = match self.mode {
            SortMode::Bounded => format!("orderBy=[{keys}], at=[end of input]"),
            SortMode::ByTime { time_column } => {
                format!("orderBy=[{keys}], at=[watermark passes ${time_column}]")
            }
        };
        if self.offset > 0 {
            text.push_str(&format!(", offset=[{}]", self.offset));
        }
        if let Some(limit) = self.limit {
            text.push_str(&format!(", fetch=[{limit}]"));
        }
        text
    }
}

/// Whether every table `plan` reads ends (a file, or `datagen` with a row count).
fn is_bounded(plan: &Plan, catalog: &Catalog) -> bool {
    match plan {
        Plan::Scan { table, .. } => matches!(
            catalog.get(table),
            Some(CatalogTable::Connector(t))
                if matches!(t.connector, Connector::FileSystem { .. } | Connector::Datagen { .. })
        ),
        Plan::Calc { input, .. }
        | Plan::GroupAgg { input, .. }
        | Plan::WindowAgg { input, .. }
        | Plan::CascadedWindowAgg { input, .. }
        | Plan::WindowTvf { input, .. }
        | Plan::Rank { input, .. }
        | Plan::OverAgg { input, .. }
        | Plan::Sort { input, .. } => is_bounded(input, catalog),
        Plan::MatchRecognize(mr) => is_bounded(&mr.input, catalog),
        Plan::Join { left, right, .. }
        | Plan::IntervalJoin { left, right, .. }
        | Plan::TemporalJoin { left, right, .. }
        | Plan::WindowJoin { left, right, .. }
        | Plan::WindowIntervalJoin { left, right, .. } => {
            is_bounded(left, catalog) && is_bounded(right, catalog)
        }
        Plan::Union { inputs, .. } => inputs.iter().all(|i| is_bounded(i, catalog)),
    }
}

/// A non-negative integer literal of `LIMIT` or `OFFSET`.
fn count(e: &ast::Expr, what: &str) -> Result<u64, SqlError> {
    let position = expr::position_of(e);
    if let ast::Expr::Value(v) = e
        && let ast::Value::Number(text, _) = &v.value
        && let Ok(n) = text.parse::<u64>()
    {
        return Ok(n);
    }
    Err(SqlError::validation(
        position,
        format!("{what} `{e}`: expected a non-negative integer"),
    ))
}

/// Plans the `ORDER BY`, `OFFSET` and `LIMIT` of `query` over its body's plan `input`;
/// without any of them returns `input`.
///
/// # Errors
///
/// A key that is no column of the select list, a bad count, `FETCH`, `LIMIT` on an unbounded
/// query, an unbounded `ORDER BY` not led by an event-time attribute ascending or over an
/// updating input.
pub(crate) fn plan_sort(
    query: &ast::Query,
    input: Plan,
    catalog: &Catalog,
) -> Result<Plan, SqlError> {
    let position = Position::of(query.span());
    if let Some(fetch) = &query.fetch {
        return Err(SqlError::unsupported(
            Position::of(fetch.span()).or(position),
            "FETCH FIRST: write LIMIT n",
        ));
    }
    let (limit, offset) = match &query.limit_clause {
        None => (None, None),
        Some(ast::LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if !limit_by.is_empty() {
                return Err(SqlError::unsupported(position, "LIMIT .. BY"));
            }
            (limit.as_ref(), offset.as_ref().map(|o| &o.value))
        }
        Some(ast::LimitClause::OffsetCommaLimit { offset, limit }) => (Some(limit), Some(offset)),
    };
    if query.order_by.is_none() && limit.is_none() && offset.is_none() {
        return Ok(input);
    }
    let limit = limit.map(|e| count(e, "LIMIT")).transpose()?;
    let offset = offset.map(|e| count(e, "OFFSET")).transpose()?.unwrap_or(0);
    let schema = input.schema().clone();
    let mut keys = Vec::new();
    let mut first_at = position;
    if let Some(order_by) = &query.order_by {
        let at = Position::of(order_by.span()).or(position);
        first_at = at;
        let ast::OrderByKind::Expressions(exprs) = &order_by.kind else {
            return Err(SqlError::unsupported(at, "ORDER BY ALL: name the columns"));
        };
        for item in exprs {
            let item_at = expr::position_of(&item.expr).or(at);
            if item.with_fill.is_some() {
                return Err(SqlError::unsupported(item_at, "ORDER BY .. WITH FILL"));
            }
            let mut resolver = SchemaResolver {
                schema: &schema,
                qualifiers: Vec::new(),
            };
            let typed = expr::compile(&item.expr, &mut resolver)?;
            let Expr::Column(column) = typed.expr else {
                return Err(SqlError::unsupported(
                    item_at,
                    format!(
                        "ORDER BY `{}`: name a column of the select list (give the expression \
                         a name with AS)",
                        item.expr
                    ),
                ));
            };
            let descending = item.options.asc == Some(false);
            keys.push(SortKey {
                column,
                descending,
                nulls_first: item.options.nulls_first.unwrap_or(!descending),
            });
        }
    }
    let mode = if is_bounded(&input, catalog) {
        SortMode::Bounded
    } else {
        if limit.is_some() || offset > 0 {
            return Err(SqlError::unsupported(
                position,
                "LIMIT / OFFSET on an unbounded query (it reads a stream): the result never \
                 ends, so its first rows are never known",
            ));
        }
        let time_column = match keys.first() {
            Some(k) if !k.descending && schema.columns[k.column].rowtime => k.column,
            _ => {
                return Err(SqlError::unsupported(
                    first_at,
                    "ORDER BY on an unbounded query (it reads a stream) must start with an \
                     event-time attribute ascending",
                ));
            }
        };
        if !input.is_append_only() {
            return Err(SqlError::unsupported(
                first_at,
                "ORDER BY on an unbounded updating result (a GROUP BY or join changelog)",
            ));
        }
        SortMode::ByTime { time_column }
    };
    let mut schema = schema;
    if mode == SortMode::Bounded {
        for column in &mut schema.columns {
            column.rowtime = false;
        }
    }
    Ok(Plan::Sort {
        input: Box::new(input),
        sort: Sort {
            keys,
            offset,
            limit,
            mode,
        },
        schema,
    })
}

/// The sort operator, on one key: a bounded result in `rows` (row -> net copies), or rows
/// waiting for the watermark in `pending` (time -> rows).
#[operator(new = false)]
pub(crate) struct SortOp {
    #[state]
    rows: MapState<Row, i64>,
    #[state]
    pending: MapState<i64, Vec<Row>>,
    sort: Sort,
    errors: OutputTag<String>,
}

impl SortOp {
    pub(crate) fn new(sort: Sort, errors: OutputTag<String>) -> Self {
        Self {
            rows: MapState::new("rows"),
            pending: MapState::new("pending"),
            sort,
            errors,
        }
    }
}

impl KeyedProcessFunction for SortOp {
    type Key = Vec<Value>;
    type In = Change;
    type Out = Change;

    fn process_element(
        &mut self,
        change: Change,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        _out: &mut Collector<'_, Change>,
    ) {
        match self.sort.mode {
            SortMode::Bounded => {
                let delta = if change.kind.is_accumulate() { 1 } else { -1 };
                let copies = self.rows.get(ctx, &change.row).unwrap_or(0) + delta;
                if copies == 0 {
                    self.rows.remove(ctx, &change.row);
                } else {
                    self.rows.put(ctx, change.row, copies);
                }
                ctx.register_event_time_timer(i64::MAX);
            }
            SortMode::ByTime { time_column } => {
                let Some(time) = change.row.get(time_column).and_then(Value::as_i64) else {
                    let message = format!("Sort: the event time is NULL, in row {change}");
                    ctx.output(&self.errors, message);
                    return;
                };
                if time <= ctx.current_watermark() {
                    ctx.count_late_record();
                    return;
                }
                let mut rows = self.pending.get(ctx, &time).unwrap_or_default();
                rows.push(change.row);
                self.pending.put(ctx, time, rows);
                ctx.register_event_time_timer(time);
            }
        }
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) {
        let rows = match self.sort.mode {
            SortMode::Bounded => {
                let mut rows = Vec::new();
                for (row, copies) in self.rows.entries(ctx) {
                    if copies < 0 {
                        let message = format!(
                            "Sort: the input retracted {} more copies than it inserted of row {}",
                            -copies,
                            Change::insert(row)
                        );
                        ctx.output(&self.errors, message);
                        continue;
                    }
                    rows.extend(std::iter::repeat_n(row, copies as usize));
                }
                self.rows.clear(ctx);
                self.sort.finish(rows)
            }
            SortMode::ByTime { .. } => {
                let Some(mut rows) = self.pending.get(ctx, &timestamp) else {
                    return;
                };
                self.pending.remove(ctx, &timestamp);
                rows.sort_by(|a, b| self.sort.compare(a, b));
                rows
            }
        };
        for row in rows {
            out.collect(Change::insert(row));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A bounded sort is the rows ordered by the keys (ties by the whole row), sliced by
        /// offset and limit, whatever order they came in.
        #[test]
        fn a_bounded_sort_is_an_ordered_slice_of_its_rows(
            rows in proptest::collection::vec((0i64..4, proptest::option::of(0i64..4)), 0..30),
            descending in any::<bool>(),
            offset in 0u64..5,
            limit in proptest::option::of(0u64..10),
        ) {
            let value = |v: Option<i64>| v.map_or(Value::Null, Value::BigInt);
            let rows: Vec<Row> = rows.iter().map(|&(a, b)| vec![big(a), value(b)]).collect();
            let sort = Sort {
                keys: vec![SortKey { column: 1, descending, nulls_first: !descending }],
                offset,
                limit,
                mode: SortMode::Bounded,
            };
            let mut reversed = rows.clone();
            reversed.reverse();
            let out = sort.finish(rows.clone());
            prop_assert_eq!(&out, &sort.finish(reversed));
            // The oracle: NULLs first ascending, last descending; ties by the whole row.
            let mut expected = rows;
            expected.sort_by_key(|r| {
                let key = r[1].as_i64();
                let rank = match (key, descending) {
                    (None, false) => (0, 0),
                    (Some(k), false) => (1, k),
                    (Some(k), true) => (1, -k),
                    (None, true) => (2, 0),
                };
                (rank, r.clone())
            });
            let expected: Vec<Row> = expected
                .into_iter()
                .skip(offset as usize)
                .take(limit.map_or(usize::MAX, |l| l as usize))
                .collect();
            prop_assert_eq!(out, expected);
        }
    }

    fn big(v: i64) -> Value {
        Value::BigInt(v)
    }

    #[test]
    fn keys_order_rows_with_nulls_where_asked_then_offset_and_limit() {
        let rows = vec![
            vec![big(1), big(5)],
            vec![Value::Null, big(1)],
            vec![big(2), big(5)],
            vec![big(3), big(4)],
        ];
        let mut sort = Sort {
            keys: vec![
                SortKey {
                    column: 1,
                    descending: true,
                    nulls_first: false,
                },
                SortKey {
                    column: 0,
                    descending: false,
                    nulls_first: true,
                },
            ],
            offset: 0,
            limit: None,
            mode: SortMode::Bounded,
        };
        let firsts = |out: Vec<Row>| out.into_iter().map(|r| r[0].clone()).collect::<Vec<_>>();
        assert_eq!(
            firsts(sort.finish(rows.clone())),
            vec![big(1), big(2), big(3), Value::Null]
        );
        sort.offset = 1;
        sort.limit = Some(2);
        assert_eq!(firsts(sort.finish(rows.clone())), vec![big(2), big(3)]);
        sort.keys = vec![SortKey {
            column: 0,
            descending: true,
            nulls_first: true,
        }];
        sort.offset = 0;
        sort.limit = None;
        assert_eq!(
            firsts(sort.finish(rows)),
            vec![Value::Null, big(3), big(2), big(1)]
        );
    }
}
