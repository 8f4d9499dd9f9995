//! Translating a plan onto Eichhorn operators, and the operators themselves.
//!
//! Each plan node becomes ordinary DataStream operators, so a SQL job checkpoints, restores
//! and rescales as any other job: the CSV source reports its byte offset, group aggregations
//! keep their accumulators in `ValueState`, window aggregations keep theirs in `MapState` and
//! fire with event-time timers.
//!
//! Errors a query raises while running (a division by zero, a failed `CAST`, a `NULL` event
//! time) go to a side output; a sink on it fails the job with the first one, naming the
//! operator and the row, as an [`UnrecoverableError`] (a restart would hit the same row).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;

use eichhorn::api::{SinkContext, SourceContext, SourcePoll};
use eichhorn::prelude::*;
use eichhorn::state::{MapState, ValueState};
use eichhorn::{DataStream, OutputTag, StreamEnv};
use serde::{Deserialize, Serialize};

use crate::agg::{Accumulator, AggCall};
use crate::catalog::{Catalog, CatalogTable, ColumnSource, Connector, ConnectorTable};
use crate::error::SqlError;
use crate::expr::{Expr, cast, parse_timestamp};
use crate::join::{IntervalJoinFn, JoinCore, JoinKind, RegularJoinOp, has_null};
use crate::over::OverAggOp;
use crate::plan::Plan;
use crate::rank::RankOp;
use crate::sort::SortOp;
use crate::time_joins::{
    IntervalJoin, OuterIntervalJoinOp, TemporalJoin, TemporalJoinOp, WindowJoin, WindowJoinOp,
};
use crate::types::{Change, Column, DataType, Row, RowKind, Value};
use crate::window::WindowKind;
use crate::window_plans::{CascadedWindowAggOp, column_bounds};

/// The id of the side output for errors raised while a query runs.
const ERRORS_TAG: &str = "eichhorn-sql-errors";

/// Translates plans onto one `StreamEnv`.
#[derive(Debug)]
pub(crate) struct Translator<'a> {
    env: &'a StreamEnv,
    catalog: &'a Catalog,
    streams: &'a BTreeMap<String, DataStream<Change>>,
    errors: OutputTag<String>,
    error_streams: Vec<DataStream<String>>,
    next_id: u32,
    state_ttl_ms: Option<u64>,
    /// The plans translated so far with their streams: an equal plan met again reads the same
    /// stream (Flink's sub-plan reuse), so a subquery written twice (Nexmark q5's window
    /// aggregation) is computed once.
    translated: Vec<(Plan, DataStream<Change>)>,
}

impl<'a> Translator<'a> {
    /// A translator adding operators to `env`, reading tables of `catalog` and registered
    /// `streams`.
    pub(crate) fn new(
        env: &'a StreamEnv,
        catalog: &'a Catalog,
        streams: &'a BTreeMap<String, DataStream<Change>>,
    ) -> Self {
        Self {
            env,
            catalog,
            streams,
            errors: OutputTag::new(ERRORS_TAG),
            error_streams: Vec::new(),
            next_id: 0,
            state_ttl_ms: None,
            translated: Vec::new(),
        }
    }

    fn uid(&mut self, what: &str) -> String {
        self.next_id += 1;
        format!("sql-{}-{what}", self.next_id)
    }

    /// Adds the sink that fails the job on the first runtime error of any operator.
    pub(crate) fn finish(self) {
        let mut streams = self.error_streams.into_iter();
        if let Some(first) = streams.next() {
            first
                .union(streams)
                .add_sink(ErrorSink::new())
                .name("SQL errors");
        }
    }

    /// The operators computing the query `plan`, optimized first ([`crate::optimize`]), as a
    /// stream of changes.
    ///
    /// # Errors
    ///
    /// A table the plan scans is gone, or a connector cannot be read from.
    pub(crate) fn translate_query(&mut self, plan: &Plan) -> Result<DataStream<Change>, SqlError> {
        self.translate(&crate::optimize::optimize(plan))
    }

    /// The operators computing `plan`, as a stream of changes.
    ///
    /// # Errors
    ///
    /// A table the plan scans is gone, or a connector cannot be read from.
    pub(crate) fn translate(&mut self, plan: &Plan) -> Result<DataStream<Change>, SqlError> {
        // A scan reads its registered stream or adds its source; nothing to reuse.
        if let Plan::Scan { table, .. } = plan {
            return self.scan(table);
        }
        if let Some((_, stream)) = self.translated.iter().find(|(p, _)| p == plan) {
            return Ok(stream.clone());
        }
        let stream = self.translate_new(plan)?;
        self.translated.push((plan.clone(), stream.clone()));
        Ok(stream)
    }

    /// The operators computing `plan`, added to the job.
    fn translate_new(&mut self, plan: &Plan) -> Result<DataStream<Change>, SqlError> {
        match plan {
            Plan::Scan { table, .. } => self.scan(table),
            Plan::Calc {
                input,
                filter,
                projection,
                schema,
            } => {
                let stream = self.translate(input)?;
                let name = format!("Calc(select=[{}])", schema.names().join(", "));
                let uid = self.uid("calc");
                let out = stream
                    .process(CalcOp::new(
                        filter.clone(),
                        projection.clone(),
                        self.errors.clone(),
                        name.clone(),
                    ))
                    .name(&name)
                    .uid(&uid);
                self.error_streams.push(out.side_output(&self.errors));
                Ok(out)
            }
            Plan::WindowTvf {
                input,
                window,
                time_column,
                schema,
            } => {
                let stream = self.translate(input)?;
                let time_type = schema.columns[*time_column].data_type;
                let uid = self.uid("window-tvf");
                let out = stream
                    .process(WindowTvfOp::new(
                        *window,
                        *time_column,
                        time_type,
                        self.errors.clone(),
                    ))
                    .name(&format!("WindowTableFunction({})", window.name()))
                    .uid(&uid);
                self.error_streams.push(out.side_output(&self.errors));
                Ok(out)
            }
            Plan::GroupAgg {
                input,
                key_count,
                aggs,
                ..
            } => {
                let stream = self.translate(input)?;
                let n = *key_count;
                let uid = self.uid("group-aggregate");
                Ok(stream
                    .key_by(move |c: &Change| c.row[..n].to_vec())
                    .process(GroupAggOp::new(aggs.clone(), input.is_append_only()))
                    .name("GroupAggregate")
                    .uid(&uid))
            }
            Plan::WindowAgg {
                input,
                window,
                key_count,
                aggs,
                schema,
            } => {
                let stream = self.translate(input)?;
                let n = *key_count;
                let time_type = schema.columns[2].data_type;
                let uid = self.uid("window-aggregate");
                let out = stream
                    .key_by(move |c: &Change| c.row[1..=n].to_vec())
                    .process(WindowAggOp::new(
                        *window,
                        aggs.clone(),
                        time_type,
                        self.errors.clone(),
                    ))
                    .name(&format!("WindowAggregate({})", window.name()))
                    .uid(&uid);
                self.error_streams.push(out.side_output(&self.errors));
                Ok(out)
            }
            Plan::CascadedWindowAgg {
                input,
                window,
                key_count,
                end,
                aggs,
                ..
            } => {
                let stream = self.translate(input)?;
                let n = *key_count;
                let name = format!("WindowAggregate({}, cascaded)", window.name());
                let uid = self.uid("cascaded-window-aggregate");
                let out = stream
                    .key_by(move |c: &Change| c.row[..n].to_vec())
                    .process(CascadedWindowAggOp::new(
                        aggs.clone(),
                        *end,
                        self.errors.clone(),
                        name.clone(),
                    ))
                    .name(&name)
                    .uid(&uid);
                self.error_streams.push(out.side_output(&self.errors));
                Ok(out)
            }
            Plan::WindowIntervalJoin {
                left,
                right,
                kind,
                left_keys,
                right_keys,
                window_left,
                left_time,
                right_time,
                lower_ms,
                upper_ms,
                condition,
                schema,
            } => {
                // The operator reads time columns; the windowed side's is `window_end`, one
                // more than its window time.
                let (lower_ms, upper_ms) = column_bounds(*window_left, *lower_ms, *upper_ms);
                let name = format!(
                    "IntervalJoin({}, window rows, select=[{}])",
                    kind.sql(),
                    schema.names().join(", ")
                );
                self.outer_interval_join(
                    (left, right),
                    (left_keys, right_keys),
                    (*left_time, *right_time),
                    IntervalJoin {
                        kind: *kind,
                        lower_ms,
                        upper_ms,
                        condition: condition.clone(),
                        left_width: left.schema().columns.len(),
                        right_width: right.schema().columns.len(),
                    },
                    name,
                    "window-interval-join",
                )
            }
            Plan::Join {
                left,
                right,
                kind,
                left_keys,
                right_keys,
                condition,
                schema,
            } => {
                let left_width = left.schema().columns.len();
                let right_width = right.schema().columns.len();
                let left = self.translate(left)?;
                let right = self.translate(right)?;
                let (lk, rk) = (left_keys.clone(), right_keys.clone());
                let name = format!(
                    "Join({}, select=[{}])",
                    kind.sql(),
                    schema.names().join(", ")
                );
                let uid = self.uid("join");
                let core = JoinCore::new(
                    *kind,
                    condition.clone(),
                    left_width,
                    right_width,
                    self.state_ttl_ms.is_some(),
                );
                let out = left
                    .connect(right)
                    .key_by(
                        move |c: &Change| key_of(&c.row, &lk),
                        move |c: &Change| key_of(&c.row, &rk),
                    )
                    .process(RegularJoinOp::new(
                        core,
                        self.state_ttl_ms,
                        self.errors.clone(),
                        name.clone(),
                    ))
                    .name(&name)
                    .uid(&uid);
                self.error_streams.push(out.side_output(&self.errors));
                Ok(out)
            }
            Plan::IntervalJoin {
                left,
                right,
                kind,
                left_time,
                right_time,
                left_keys,
                right_keys,
                lower_ms,
                upper_ms,
                condition,
                schema,
            } if *kind != JoinKind::Inner => {
                let name = format!(
                    "IntervalJoin({}, select=[{}])",
                    kind.sql(),
                    schema.names().join(", ")
                );
                self.outer_interval_join(
                    (left, right),
                    (left_keys, right_keys),
                    (*left_time, *right_time),
                    IntervalJoin {
                        kind: *kind,
                        lower_ms: *lower_ms,
                        upper_ms: *upper_ms,
                        condition: condition.clone(),
                        left_width: left.schema().columns.len(),
                        right_width: right.schema().columns.len(),
                    },
                    name,
                    "interval-join",
                )
            }
            Plan::TemporalJoin {
                left,
                right,
                kind,
                left_keys,
                right_keys,
                left_time,
                right_time,
                condition,
                schema,
            } => {
                let core = TemporalJoin {
                    kind: *kind,
                    condition: condition.clone(),
                    right_width: right.schema().columns.len(),
                };
                let name = format!(
                    "TemporalJoin({}, select=[{}])",
                    kind.sql(),
                    schema.names().join(", ")
                );
                let op = TemporalJoinOp::new(
                    core,
                    *left_time,
                    *right_time,
                    self.errors.clone(),
                    name.clone(),
                );
                self.keyed_join(
                    left,
                    right,
                    left_keys,
                    right_keys,
                    op,
                    &name,
                    "temporal-join",
                )
            }
            Plan::WindowJoin {
                left,
                right,
                kind,
                left_keys,
                right_keys,
                left_end,
                right_end,
                condition,
                schema,
            } => {
                let core = WindowJoin {
                    kind: *kind,
                    condition: condition.clone(),
                    left_width: left.schema().columns.len(),
                    right_width: right.schema().columns.len(),
                };
                let name = format!(
                    "WindowJoin({}, select=[{}])",
                    kind.sql(),
                    schema.names().join(", ")
                );
                let op = WindowJoinOp::new(
                    core,
                    *left_end,
                    *right_end,
                    self.errors.clone(),
                    name.clone(),
                );
                self.keyed_join(left, right, left_keys, right_keys, op, &name, "window-join")
            }
            Plan::IntervalJoin {
                left,
                right,
                left_keys,
                right_keys,
                lower_ms,
                upper_ms,
                condition,
                schema,
                ..
            } => {
                let left = self.translate(left)?;
                let right = self.translate(right)?;
                let (lk, rk) = (left_keys.clone(), right_keys.clone());
                let (lk2, rk2) = (left_keys.clone(), right_keys.clone());
                let name = format!("IntervalJoin(select=[{}])", schema.names().join(", "));
                let uid = self.uid("interval-join");
                // A key with a NULL matches nothing (SQL's `NULL = NULL` is not true).
                let left = left
                    .filter(move |c: &Change| !has_null(&key_of(&c.row, &lk2)))
                    .key_by(move |c: &Change| key_of(&c.row, &lk));
                let right = right
                    .filter(move |c: &Change| !has_null(&key_of(&c.row, &rk2)))
                    .key_by(move |c: &Change| key_of(&c.row, &rk));
                let joined = left
                    .interval_join(right)
                    .between(*lower_ms, *upper_ms)
                    .process(IntervalJoinFn::new())
                    .name(&name)
                    .uid(&uid);
                let Some(condition) = condition else {
                    return Ok(joined);
                };
                let name = format!(
                    "Calc(where=[join condition], select=[{}])",
                    schema.names().join(", ")
                );
                let uid = self.uid("interval-join-condition");
                let out = joined
                    .process(CalcOp::new(
                        Some(condition.clone()),
                        (0..schema.columns.len()).map(Expr::Column).collect(),
                        self.errors.clone(),
                        name.clone(),
                    ))
                    .name(&name)
                    .uid(&uid);
                self.error_streams.push(out.side_output(&self.errors));
                Ok(out)
            }
            Plan::Rank {
                input,
                partition,
                top,
                ..
            } => {
                let stream = self.translate(input)?;
                let partition = partition.clone();
                let uid = self.uid("rank");
                let out = stream
                    .key_by(move |c: &Change| key_of(&c.row, &partition))
                    .process(RankOp::new(top.clone(), self.errors.clone()))
                    .name(&format!("Rank(rankRange=[1..{}])", top.limit))
                    .uid(&uid);
                self.error_streams.push(out.side_output(&self.errors));
                Ok(out)
            }
            Plan::OverAgg {
                input,
                partition,
                time_column,
                over,
                ..
            } => {
                let stream = self.translate(input)?;
                let partition = partition.clone();
                let uid = self.uid("over-aggregate");
                let out = stream
                    .key_by(move |c: &Change| key_of(&c.row, &partition))
                    .process(OverAggOp::new(
                        over.clone(),
                        *time_column,
                        self.errors.clone(),
                    ))
                    .name("OverAggregate")
                    .uid(&uid);
                self.error_streams.push(out.side_output(&self.errors));
                Ok(out)
            }
            Plan::Sort { input, sort, .. } => {
                let stream = self.translate(input)?;
                let uid = self.uid("sort");
                // One key: one subtask sorts (as Flink's sort runs at parallelism 1), and its
                // output reaches the chained sink in order.
                let out = stream
                    .key_by(|_: &Change| Vec::<Value>::new())
                    .process(SortOp::new(sort.clone(), self.errors.clone()))
                    .name(&format!("Sort({})", sort.describe()))
                    .uid(&uid);
                self.error_streams.push(out.side_output(&self.errors));
                Ok(out)
            }
            Plan::MatchRecognize(mr) => {
                let stream = self.translate(&mr.input)?;
                let uid = self.uid("match-recognize");
                let out = crate::match_recognize::translate(stream, mr, self.errors.clone(), &uid);
                self.error_streams.push(out.side_output(&self.errors));
                Ok(out)
            }
            Plan::Union { inputs, .. } => {
                let mut streams = Vec::with_capacity(inputs.len());
                for input in inputs {
                    streams.push(self.translate(input)?);
                }
                let mut streams = streams.into_iter();
                let Some(first) = streams.next() else {
                    return Err(SqlError::unsupported(None, "UNION of nothing"));
                };
                Ok(first.union(streams))
            }
        }
    }

    /// The outer interval join operator over `core`, on the join keys (`IntervalJoin` and
    /// `WindowIntervalJoin` plans; `times` are the row-time columns the operator reads).
    fn outer_interval_join(
        &mut self,
        (left, right): (&Plan, &Plan),
        (left_keys, right_keys): (&[usize], &[usize]),
        (left_time, right_time): (usize, usize),
        core: IntervalJoin,
        name: String,
        what: &str,
    ) -> Result<DataStream<Change>, SqlError> {
        let op = OuterIntervalJoinOp::new(
            core,
            left_time,
            right_time,
            self.errors.clone(),
            name.clone(),
        );
        self.keyed_join(left, right, left_keys, right_keys, op, &name, what)
    }

    /// Both inputs keyed by their equality keys into the keyed co-process function `op`.
    #[allow(clippy::too_many_arguments)]
    fn keyed_join<F>(
        &mut self,
        left: &Plan,
        right: &Plan,
        left_keys: &[usize],
        right_keys: &[usize],
        op: F,
        name: &str,
        what: &str,
    ) -> Result<DataStream<Change>, SqlError>
    where
        F: KeyedCoProcessFunction<Key = Vec<Value>, In1 = Change, In2 = Change, Out = Change>,
    {
        let left = self.translate(left)?;
        let right = self.translate(right)?;
        let (lk, rk) = (left_keys.to_vec(), right_keys.to_vec());
        let uid = self.uid(what);
        let out = left
            .connect(right)
            .key_by(
                move |c: &Change| key_of(&c.row, &lk),
                move |c: &Change| key_of(&c.row, &rk),
            )
            .process(op)
            .name(name)
            .uid(&uid);
        self.error_streams.push(out.side_output(&self.errors));
        Ok(out)
    }

    /// Bounds the state of regular joins to `ttl_ms` of processing time without a write
    /// (`SET 'table.exec.state.ttl'`).
    pub(crate) fn with_state_ttl(mut self, ttl_ms: Option<u64>) -> Self {
        self.state_ttl_ms = ttl_ms;
        self
    }

    fn scan(&mut self, table: &str) -> Result<DataStream<Change>, SqlError> {
        if let Some(stream) = self.streams.get(table) {
            return Ok(stream.clone());
        }
        let Some(CatalogTable::Connector(t)) = self.catalog.get(table) else {
            return Err(SqlError::validation(
                None,
                format!("table '{table}' cannot be read"),
            ));
        };
        let t = t.clone();
        let uid = self.uid("source");
        let raw = match &t.connector {
            Connector::FileSystem {
                path,
                ignore_parse_errors,
                field_delimiter,
            } => self
                .env
                .add_source(
                    CsvSource::new(
                        path.clone(),
                        t.physical.clone(),
                        *ignore_parse_errors,
                        *field_delimiter,
                    ),
                    &format!("TableSourceScan({})", t.name),
                )
                .uid(&uid),
            Connector::Datagen { rows } => self
                .env
                .add_source(
                    DatagenSource::new(t.physical.clone(), *rows),
                    &format!("TableSourceScan({})", t.name),
                )
                .uid(&uid),
            Connector::Print | Connector::Blackhole => {
                return Err(SqlError::validation(
                    None,
                    format!("table '{}' is a sink; it cannot be read", t.name),
                ));
            }
        };
        Ok(self.with_computed_columns_and_watermarks(raw, &t))
    }

    /// Adds the computed columns and assigns event time and watermarks, at the source's
    /// parallelism (chained to it), as Flink does in its table sources.
    fn with_computed_columns_and_watermarks(
        &mut self,
        raw: DataStream<Change>,
        table: &ConnectorTable,
    ) -> DataStream<Change> {
        let projection = table
            .sources
            .iter()
            .map(|s| match s {
                ColumnSource::Physical(i) => Expr::Column(*i),
                ColumnSource::Computed(e) => e.clone(),
            })
            .collect();
        let name = format!("Calc(computed columns of {})", table.name);
        let uid = self.uid("computed-columns");
        let computed = raw
            .process(CalcOp::new(
                None,
                projection,
                self.errors.clone(),
                name.clone(),
            ))
            .name(&name)
            .uid(&uid)
            .set_parallelism(1);
        self.error_streams.push(computed.side_output(&self.errors));
        match table.watermark {
            None => computed,
            Some(spec) => {
                let column = spec.column;
                computed
                    .assign_timestamps_and_watermarks(
                        WatermarkStrategy::for_bounded_out_of_orderness_every_event(spec.delay_ms)
                            .with_timestamp_assigner(move |c: &Change, _| {
                                // A NULL event time sorts before every window: it is late.
                                c.row
                                    .get(column)
                                    .and_then(Value::as_i64)
                                    .unwrap_or(i64::MIN)
                            }),
                    )
                    .set_parallelism(1)
            }
        }
    }
}

/// The values of `columns` of `row`: a join key.
fn key_of(row: &[Value], columns: &[usize]) -> Vec<Value> {
    columns
        .iter()
        .map(|&i| row.get(i).cloned().unwrap_or(Value::Null))
        .collect()
}

/// Filters, then projects, each change.
///
/// The row is owned: a projected column is moved out of it where no later output column reads
/// it again (cloned otherwise), so a projection that picks columns copies no strings, and an
/// identity projection passes the row on as it is.
#[operator(new = false)]
struct CalcOp {
    filter: Option<Expr>,
    projection: Vec<Expr>,
    errors: OutputTag<String>,
    name: String,
    /// Per output column: whether it is the last one to read its input column (then it may
    /// take the value instead of cloning it).
    last_read: Vec<bool>,
    /// Whether the projection is every input column in order (checked against each row's
    /// width).
    identity: bool,
}

impl CalcOp {
    fn new(
        filter: Option<Expr>,
        projection: Vec<Expr>,
        errors: OutputTag<String>,
        name: String,
    ) -> Self {
        let last_read = projection
            .iter()
            .enumerate()
            .map(|(k, e)| !projection[k + 1..].iter().any(|later| later == e))
            .collect();
        let identity = projection
            .iter()
            .enumerate()
            .all(|(k, e)| *e == Expr::Column(k));
        Self {
            filter,
            projection,
            errors,
            name,
            last_read,
            identity,
        }
    }

    /// The projected row, or `None` where the filter drops it; on an error, the row is
    /// returned intact with it (nothing is moved before every expression succeeded).
    fn apply(&self, mut row: Row) -> Result<Option<Row>, (String, Row)> {
        if let Some(filter) = &self.filter {
            match filter.holds(&row) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => return Err((e, row)),
            }
        }
        if self.identity && row.len() == self.projection.len() {
            return Ok(Some(row));
        }
        // Computed columns first, over the intact row; plain columns are moved in after.
        let mut out = Vec::with_capacity(self.projection.len());
        for e in &self.projection {
            match e {
                Expr::Column(i) if *i < row.len() => out.push(Value::Null),
                e => match e.eval(&row) {
                    Ok(v) => out.push(v),
                    Err(e) => return Err((e, row)),
                },
            }
        }
        for ((slot, e), last) in out.iter_mut().zip(&self.projection).zip(&self.last_read) {
            if let Expr::Column(i) = e
                && let Some(value) = row.get_mut(*i)
            {
                *slot = if *last {
                    std::mem::replace(value, Value::Null)
                } else {
                    value.clone()
                };
            }
        }
        Ok(Some(out))
    }
}

impl ProcessFunction<Change> for CalcOp {
    type Out = Change;

    fn process_element(
        &mut self,
        change: Change,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, Change>,
    ) {
        let kind = change.kind;
        match self.apply(change.row) {
            Ok(Some(row)) => out.collect(Change { kind, row }),
            Ok(None) => {}
            Err((e, row)) => ctx.output(
                &self.errors,
                format!("{}: {e}, in row {}", self.name, Change { kind, row }),
            ),
        }
    }
}

/// A window TVF without aggregation: the row once per window, with the window columns.
#[operator]
struct WindowTvfOp {
    window: WindowKind,
    time_column: usize,
    time_type: DataType,
    errors: OutputTag<String>,
}

impl ProcessFunction<Change> for WindowTvfOp {
    type Out = Change;

    fn process_element(
        &mut self,
        change: Change,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, Change>,
    ) {
        let Some(ts) = change.row.get(self.time_column).and_then(Value::as_i64) else {
            ctx.output(
                &self.errors,
                format!(
                    "{}: the event time is NULL, in row {change}",
                    self.window.name()
                ),
            );
            return;
        };
        for (start, end) in self.window.assign(ts) {
            let mut row = change.row.clone();
            row.extend(window_columns(start, end, self.time_type));
            out.collect(Change {
                kind: change.kind,
                row,
            });
        }
    }
}

/// `window_start`, `window_end`, `window_time` of the window `[start, end)`.
fn window_columns(start: i64, end: i64, time_type: DataType) -> [Value; 3] {
    let time = end - 1;
    [
        Value::Timestamp(start),
        Value::Timestamp(end),
        if time_type == DataType::TimestampLtz {
            Value::TimestampLtz(time)
        } else {
            Value::Timestamp(time)
        },
    ]
}

/// The state of one group: how many rows it holds and the accumulators.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GroupState {
    rows: i64,
    accumulators: Vec<Accumulator>,
}

/// A group aggregation: updates the group's accumulators with each change and emits the
/// group's new result as a changelog (`+I` for a new group, `-U`/`+U` for a changed result,
/// `-D` when the group's last row is retracted).
///
/// Over an append-only input, `MIN` and `MAX` keep one value instead of the multiset of
/// values (no retraction can come to need the others), as Flink's `MaxWithoutRetract`.
#[operator]
struct GroupAggOp {
    #[state]
    group: ValueState<GroupState>,
    aggs: Vec<AggCall>,
    append_only_input: bool,
}

impl GroupAggOp {
    fn result(&self, key: &[Value], state: &GroupState) -> Row {
        let mut row = key.to_vec();
        row.extend(
            self.aggs
                .iter()
                .zip(&state.accumulators)
                .map(|(call, acc)| call.result(acc)),
        );
        row
    }
}

impl KeyedProcessFunction for GroupAggOp {
    type Key = Vec<Value>;
    type In = Change;
    type Out = Change;

    fn process_element(
        &mut self,
        change: Change,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) {
        let key = ctx.current_key().clone();
        let mut state = self.group.value(ctx).unwrap_or_else(|| GroupState {
            rows: 0,
            accumulators: self
                .aggs
                .iter()
                .map(|call| {
                    if self.append_only_input {
                        call.create_append_only()
                    } else {
                        call.create()
                    }
                })
                .collect(),
        });
        let before = (state.rows > 0).then(|| self.result(&key, &state));
        let retract = !change.kind.is_accumulate();
        state.rows += if retract { -1 } else { 1 };
        for (call, acc) in self.aggs.iter().zip(&mut state.accumulators) {
            call.accumulate(acc, &change.row, retract);
        }
        let after = (state.rows > 0).then(|| self.result(&key, &state));
        if state.rows == 0 {
            self.group.clear(ctx);
        } else {
            self.group.update(ctx, state);
        }
        match (before, after) {
            (None, Some(row)) => out.collect(Change {
                kind: RowKind::Insert,
                row,
            }),
            (Some(row), None) => out.collect(Change {
                kind: RowKind::Delete,
                row,
            }),
            // An unchanged result is not emitted again (as Flink without state TTL).
            (Some(old), Some(new)) if old != new => {
                out.collect(Change {
                    kind: RowKind::UpdateBefore,
                    row: old,
                });
                out.collect(Change {
                    kind: RowKind::UpdateAfter,
                    row: new,
                });
            }
            _ => {}
        }
    }
}

/// A window aggregation: accumulators per window in `MapState`, an event-time timer at each
/// window's last millisecond; the timer emits the window's row and drops its state. Session
/// windows merge as rows bridge their gaps.
#[operator]
struct WindowAggOp {
    #[state]
    windows: MapState<(i64, i64), Vec<Accumulator>>,
    window: WindowKind,
    aggs: Vec<AggCall>,
    time_type: DataType,
    errors: OutputTag<String>,
}

impl WindowAggOp {
    fn add(&self, accumulators: &mut [Accumulator], row: &[Value]) {
        for (call, acc) in self.aggs.iter().zip(accumulators) {
            call.accumulate(acc, row, false);
        }
    }

    fn fresh(&self) -> Vec<Accumulator> {
        // A window's accumulators only ever add.
        self.aggs.iter().map(AggCall::create_append_only).collect()
    }
}

impl KeyedProcessFunction for WindowAggOp {
    type Key = Vec<Value>;
    type In = Change;
    type Out = Change;

    fn process_element(
        &mut self,
        change: Change,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        _out: &mut Collector<'_, Change>,
    ) {
        let Some(ts) = change.row.first().and_then(Value::as_i64) else {
            ctx.output(
                &self.errors,
                format!(
                    "{} aggregation: the event time is NULL, in row {change}",
                    self.window.name()
                ),
            );
            return;
        };
        let watermark = ctx.current_watermark();
        let mut late = true;
        if self.window.is_merging() {
            let Some(&(mut start, mut end)) = self.window.assign(ts).first() else {
                return;
            };
            let mut merged = self.fresh();
            let mut absorbed = Vec::new();
            // Windows are in start order; a merge can only grow the range, so one pass over
            // the sorted windows, repeated until nothing more joins, finds them all.
            let existing = self.windows.entries(ctx);
            loop {
                let before = absorbed.len();
                for (window, _) in &existing {
                    let (s, e) = *window;
                    if !absorbed.contains(window) && s <= end && e >= start {
                        absorbed.push(*window);
                        start = start.min(s);
                        end = end.max(e);
                    }
                }
                if absorbed.len() == before {
                    break;
                }
            }
            if end - 1 <= watermark {
                ctx.count_late_record();
                tracing::debug!(ts, watermark, "late row dropped by a session window");
                return;
            }
            for (window, accumulators) in existing {
                if absorbed.contains(&window) {
                    for (call, (acc, other)) in
                        self.aggs.iter().zip(merged.iter_mut().zip(accumulators))
                    {
                        call.merge(acc, other);
                    }
                    self.windows.remove(ctx, &window);
                    if window.1 != end {
                        ctx.delete_event_time_timer(window.1 - 1);
                    }
                }
            }
            self.add(&mut merged, &change.row);
            self.windows.put(ctx, (start, end), merged);
            ctx.register_event_time_timer(end - 1);
            return;
        }
        // One write for all of the row's windows; a window's timer is registered when the
        // window is created (it leaves the state only through that timer, and timers are
        // checkpointed with it), not again for every row.
        let mut updated = Vec::new();
        for (start, end) in self.window.assign(ts) {
            if end - 1 <= watermark {
                continue;
            }
            late = false;
            let mut accumulators = match self.windows.get(ctx, &(start, end)) {
                Some(existing) => existing,
                None => {
                    ctx.register_event_time_timer(end - 1);
                    self.fresh()
                }
            };
            self.add(&mut accumulators, &change.row);
            updated.push(((start, end), accumulators));
        }
        self.windows.put_all(ctx, updated);
        if late {
            ctx.count_late_record();
            tracing::debug!(ts, watermark, "late row dropped by a window aggregation");
        }
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) {
        let key = ctx.current_key().clone();
        for ((start, end), accumulators) in self.windows.entries(ctx) {
            if end - 1 != timestamp {
                continue;
            }
            let mut row: Row = window_columns(start, end, self.time_type).into();
            row.extend(key.iter().cloned());
            row.extend(
                self.aggs
                    .iter()
                    .zip(&accumulators)
                    .map(|(call, acc)| call.result(acc)),
            );
            out.collect(Change::insert(row));
            self.windows.remove(ctx, &(start, end));
        }
    }
}

/// Fails the job with the first runtime error of the query.
#[operator]
struct ErrorSink;

impl SinkFunction<String> for ErrorSink {
    fn invoke(&mut self, error: String, _ctx: &SinkContext) -> Result<(), FunctionError> {
        Err(UnrecoverableError::new(error).into())
    }
}

/// Reads a CSV file (no header, fields in the declared order of the physical columns) as
/// inserts. Non-parallel; its position is the byte offset and line of the next record, so a
/// restored job reads on after the last checkpointed row.
///
/// A malformed row fails the job naming the file and line; with `ignore_parse_errors` it is
/// reported on stderr with its line and skipped.
#[operator(new = false)]
struct CsvSource {
    path: PathBuf,
    columns: Vec<Column>,
    ignore_parse_errors: bool,
    field_delimiter: u8,
    reader: ReaderSlot,
}

/// The open reader; a clone (a new subtask) opens its own.
#[derive(Debug, Default)]
struct ReaderSlot(Option<csv::Reader<File>>);

impl Clone for ReaderSlot {
    fn clone(&self) -> Self {
        Self(None)
    }
}

impl CsvSource {
    fn new(
        path: PathBuf,
        columns: Vec<Column>,
        ignore_parse_errors: bool,
        field_delimiter: u8,
    ) -> Self {
        Self {
            path,
            columns,
            ignore_parse_errors,
            field_delimiter,
            reader: ReaderSlot(None),
        }
    }

    /// The row of `record`, or what is wrong with it.
    fn parse(&self, record: &csv::ByteRecord) -> Result<Row, String> {
        if record.len() != self.columns.len() {
            return Err(format!(
                "expected {} fields ({}), found {}",
                self.columns.len(),
                self.columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                record.len()
            ));
        }
        let mut row = Vec::with_capacity(self.columns.len());
        for (field, column) in record.iter().zip(&self.columns) {
            let text = std::str::from_utf8(field)
                .map_err(|_| format!("column '{}': not valid UTF-8", column.name))?;
            row.push(
                parse_field(text, column.data_type)
                    .map_err(|e| format!("column '{}' ({}): {e}", column.name, column.data_type))?,
            );
        }
        Ok(row)
    }
}

/// One CSV field as a value of `data_type`; an empty field is `NULL` except for strings.
fn parse_field(text: &str, data_type: DataType) -> Result<Value, String> {
    if text.is_empty() && data_type != DataType::String {
        return Ok(Value::Null);
    }
    match data_type {
        DataType::String => Ok(Value::String(text.to_string())),
        DataType::Timestamp => Ok(Value::Timestamp(parse_timestamp(text)?)),
        DataType::TimestampLtz => Ok(Value::TimestampLtz(parse_timestamp(text)?)),
        other => cast(Value::String(text.to_string()), other),
    }
}

impl SourceFunction<Change> for CsvSource {
    fn open(&mut self, _ctx: &RuntimeContext) -> Result<(), FunctionError> {
        let file = File::open(&self.path).map_err(|e| {
            UnrecoverableError::new(format!(
                "cannot open CSV file '{}': {e}",
                self.path.display()
            ))
        })?;
        self.reader.0 = Some(
            csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .delimiter(self.field_delimiter)
                .from_reader(file),
        );
        Ok(())
    }

    fn poll_next(
        &mut self,
        ctx: &mut SourceContext<'_, Change>,
    ) -> Result<SourcePoll, FunctionError> {
        let mut record = csv::ByteRecord::new();
        while ctx.remaining() > 0 {
            let reader = self
                .reader
                .0
                .as_mut()
                .ok_or("CSV source polled before open")?;
            let line = reader.position().line();
            let more = reader.read_byte_record(&mut record).map_err(|e| {
                UnrecoverableError::new(format!("'{}' line {line}: {e}", self.path.display()))
            })?;
            if !more {
                return Ok(SourcePoll::Finished);
            }
            let line = record.position().map_or(line, csv::Position::line);
            match self.parse(&record) {
                Ok(row) => ctx.collect(Change::insert(row)),
                Err(e) => {
                    let message = format!("'{}' line {line}: {e}", self.path.display());
                    if self.ignore_parse_errors {
                        eprintln!("skipped malformed CSV row: {message}");
                    } else {
                        return Err(UnrecoverableError::new(format!(
                            "malformed CSV row (set 'csv.ignore-parse-errors' = 'true' to skip \
                             such rows): {message}"
                        ))
                        .into());
                    }
                }
            }
        }
        Ok(SourcePoll::MoreAvailable)
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, FunctionError> {
        let reader = self
            .reader
            .0
            .as_ref()
            .ok_or("CSV source snapshot before open")?;
        let position = reader.position();
        let mut bytes = position.byte().to_le_bytes().to_vec();
        bytes.extend_from_slice(&position.line().to_le_bytes());
        bytes.extend_from_slice(&position.record().to_le_bytes());
        Ok(Some(bytes))
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), FunctionError> {
        let word = |i: usize| -> Result<u64, FunctionError> {
            position
                .get(i * 8..i * 8 + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| {
                    format!(
                        "CSV source '{}': a position must be 24 bytes, got {}",
                        self.path.display(),
                        position.len()
                    )
                    .into()
                })
        };
        let mut restored = csv::Position::new();
        restored
            .set_byte(word(0)?)
            .set_line(word(1)?)
            .set_record(word(2)?);
        let reader = self
            .reader
            .0
            .as_mut()
            .ok_or("CSV source restored before open")?;
        reader.seek(restored).map_err(|e| {
            format!(
                "CSV source '{}': cannot seek to byte {}: {e}",
                self.path.display(),
                word(0).unwrap_or(0)
            )
        })?;
        Ok(())
    }
}

/// Generates `rows` rows of pseudo-random values (a fixed seed: every run the same), as
/// Flink's `datagen` connector with `number-of-rows`. Its position is the next row's index.
#[operator(new = false)]
struct DatagenSource {
    columns: Vec<Column>,
    rows: u64,
    next: u64,
}

impl DatagenSource {
    fn new(columns: Vec<Column>, rows: u64) -> Self {
        Self {
            columns,
            rows,
            next: 0,
        }
    }

    fn row(&self, index: u64) -> Row {
        self.columns
            .iter()
            .enumerate()
            .map(|(c, column)| {
                let bits =
                    eichhorn::state::splitmix64(index.wrapping_mul(31).wrapping_add(c as u64));
                match column.data_type {
                    DataType::BigInt => Value::BigInt((bits >> 1) as i64),
                    DataType::Double => Value::Double((bits >> 11) as f64 / (1u64 << 53) as f64),
                    DataType::String => Value::String(format!("{bits:016x}")),
                    // Milliseconds within a day of the epoch, rising with the row index.
                    DataType::Timestamp => Value::Timestamp(index as i64),
                    DataType::TimestampLtz => Value::TimestampLtz(index as i64),
                    DataType::Boolean => Value::Boolean(bits & 1 == 1),
                    DataType::Interval | DataType::Null => Value::Null,
                }
            })
            .collect()
    }
}

impl SourceFunction<Change> for DatagenSource {
    fn poll_next(
        &mut self,
        ctx: &mut SourceContext<'_, Change>,
    ) -> Result<SourcePoll, FunctionError> {
        while ctx.remaining() > 0 {
            if self.next >= self.rows {
                return Ok(SourcePoll::Finished);
            }
            ctx.collect(Change::insert(self.row(self.next)));
            self.next += 1;
        }
        Ok(SourcePoll::MoreAvailable)
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, FunctionError> {
        Ok(Some(self.next.to_le_bytes().to_vec()))
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), FunctionError> {
        let bytes = <[u8; 8]>::try_from(position).map_err(|_| {
            format!(
                "datagen: a position must be 8 bytes, got {}",
                position.len()
            )
        })?;
        self.next = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// Prints every change as Flink's `print` connector does: `+I[a, 1]`.
#[operator]
pub(crate) struct PrintSink;

impl SinkFunction<Change> for PrintSink {
    fn invoke(&mut self, change: Change, _ctx: &SinkContext) -> Result<(), FunctionError> {
        let values: Vec<String> = change.row.iter().map(Value::to_string).collect();
        println!("{}[{}]", change.kind.short(), values.join(", "));
        Ok(())
    }
}

/// Drops every change (Flink's `blackhole` connector).
#[operator]
pub(crate) struct BlackholeSink;

impl SinkFunction<Change> for BlackholeSink {
    fn invoke(&mut self, _change: Change, _ctx: &SinkContext) -> Result<(), FunctionError> {
        Ok(())
    }
}
