//! Joins driven by event time: temporal joins against a versioned table, window joins, and
//! outer interval joins. All three keep their rows in keyed state until the watermark says
//! no partner can still arrive, so each emits an append-only result.
//!
//! ## Temporal joins
//!
//! `o JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.currency = r.currency` (inner or
//! `LEFT`): `rates` is a versioned table (a `PRIMARY KEY` and an event-time attribute); every
//! row of it is a new version of its key, valid from its time until the next version's. Each
//! probe row (left) joins the version of its key valid at its own time (Flink's
//! `TemporalRowTimeJoinOperator`):
//!
//! - probe rows wait in `MapState<time, rows>` with an event-time timer at their time; versions
//!   go into `MapState<time, row>` with a timer at their time;
//! - when the watermark reaches a probe row's time, every version up to that time has arrived
//!   (a later one would be late), so the row joins the newest version at or before its time;
//!   without one (or when the residual condition fails) a `LEFT` join pads it with `NULL`s;
//! - then versions older than the newest one at or before the watermark are removed: no probe
//!   row can still need them. State is bounded by the pending probe rows plus, per key, the
//!   versions not yet behind the watermark.
//!
//! Two versions of a key with the same time: the greater row wins (results do not depend on
//! arrival order, so they are the same at every parallelism). A probe row at or behind the
//! watermark when it arrives is late: counted (`late_records`), not joined.
//!
//! ## Window joins
//!
//! Two window TVFs (or window aggregations) of the same window joined on `window_start`,
//! `window_end` and keys, any of inner, left, right, full. The window columns are part of the equality key, so a key holds
//! the rows of one window: both sides' rows wait in `MapState<row, copies>`, an event-time
//! timer at `window_end - 1` joins them when the window fires (pairs where the residual
//! condition holds, unmatched rows of an outer side padded), and clears the key. A row whose
//! window already fired is late: counted, not joined.
//!
//! ## Outer interval joins
//!
//! `LEFT`, `RIGHT`, `FULL` interval joins (`r.ts BETWEEN l.ts + lower AND l.ts + upper`): a
//! left row at `t` can meet right rows until the watermark passes `t + upper`, a right row at
//! `s` left rows until it passes `s - lower`. Each side's rows wait in
//! `MapState<expiry, [(row, time, matched)]>`; a new row joins the other side's stored rows in
//! its interval at once (pairs are emitted as they are found, as Flink does) and marks them
//! matched; the timer at a row's expiry removes it and, if it never matched and its side is
//! outer, emits it padded with `NULL`s. A row at or behind the watermark on arrival is late:
//! counted, not joined. Inner interval joins use Eichhorn's interval join operator instead.
//!
//! ## Invariants
//!
//! A key with a `NULL` matches nothing (SQL's `NULL = NULL` is not true): such a row of an
//! outer side is emitted padded at once, of an inner side dropped. Every stored row leaves the
//! state through exactly one timer, so nothing is emitted twice and nothing is lost.

use std::collections::BTreeMap;

use eichhorn::prelude::*;
use eichhorn::state::MapState;

use sqlparser::ast::{self, Spanned};

use crate::catalog::{Catalog, CatalogTable};
use crate::error::{Position, SqlError};
use crate::expr::{self, Expr, SchemaResolver};
use crate::join::{JoinKind, Side, has_null};
use crate::plan::Plan;
use crate::types::{Change, Row, Schema, Value};
use crate::window::WindowKind;

/// `left ++ right`.
fn concat(left: &[Value], right: &[Value]) -> Row {
    let mut row = Vec::with_capacity(left.len() + right.len());
    row.extend_from_slice(left);
    row.extend_from_slice(right);
    row
}

/// `row` of `side` padded with `NULL`s for the other side's `other_width` columns.
fn padded(side: Side, row: &[Value], other_width: usize) -> Row {
    let nulls = vec![Value::Null; other_width];
    match side {
        Side::Left => concat(row, &nulls),
        Side::Right => concat(&nulls, row),
    }
}

/// What the append-only event-time joins (window and outer interval) do first with an arriving
/// row, and how they name themselves in what they report.
struct Intake<'a> {
    /// The operator's name.
    name: &'a str,
    /// Where errors go.
    errors: &'a OutputTag<String>,
    /// `"a window join"`.
    join: &'a str,
    /// What the time column is called in messages (`"window_end"`).
    time: &'a str,
    /// Whether the arriving row's side is an outer side (kept, padded, without a partner).
    outer: bool,
}

impl Intake<'_> {
    /// Admits `change` of `side`: a retraction and a row whose time (column `time_column`) is
    /// NULL are reported; a row with a NULL key matches nothing and is padded with the other
    /// side's `other_width` NULLs at once when its side is outer. Returns the row's time when
    /// it goes on to be joined.
    fn admit(
        &self,
        side: Side,
        change: &Change,
        time_column: usize,
        other_width: usize,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) -> Option<i64> {
        if !change.kind.is_accumulate() {
            let message = format!(
                "{}: a retraction in {}, in row {change}",
                self.name, self.join
            );
            ctx.output(self.errors, message);
            return None;
        }
        let Some(time) = change.row.get(time_column).and_then(Value::as_i64) else {
            let message = format!("{}: {} is NULL, in row {change}", self.name, self.time);
            ctx.output(self.errors, message);
            return None;
        };
        if has_null(ctx.current_key()) {
            if self.outer {
                out.collect(Change::insert(padded(side, &change.row, other_width)));
            }
            return None;
        }
        Some(time)
    }
}

/// Whether `condition` (none: always) holds on `joined`.
fn holds(condition: Option<&Expr>, joined: &[Value]) -> Result<bool, String> {
    match condition {
        None => Ok(true),
        Some(c) => c.holds(joined),
    }
}

/// The version valid at `time`: the newest at or before it.
pub fn version_at(versions: &BTreeMap<i64, Row>, time: i64) -> Option<(i64, &Row)> {
    versions.range(..=time).next_back().map(|(t, r)| (*t, r))
}

/// The versions no probe row at or after `watermark` can need: all older than the newest
/// version at or before `watermark`.
pub fn obsolete_versions(versions: &BTreeMap<i64, Row>, watermark: i64) -> Vec<i64> {
    match version_at(versions, watermark) {
        None => Vec::new(),
        Some((newest, _)) => versions.range(..newest).map(|(t, _)| *t).collect(),
    }
}

/// The rules of a temporal join for the rows of one key.
#[derive(Debug, Clone)]
pub struct TemporalJoin {
    /// Inner or left.
    pub kind: JoinKind,
    /// The rest of `ON`, over `probe ++ version`.
    pub condition: Option<Expr>,
    /// How many columns a version row has (the padding of a `LEFT` join).
    pub right_width: usize,
}

impl TemporalJoin {
    /// Joins the probe rows of one time with the versions of their key.
    ///
    /// # Errors
    ///
    /// The residual condition failed to evaluate on a pair.
    pub fn probe(
        &self,
        time: i64,
        rows: &[Row],
        versions: &BTreeMap<i64, Row>,
        out: &mut dyn FnMut(Row),
    ) -> Result<(), String> {
        let version = version_at(versions, time).map(|(_, r)| r);
        for row in rows {
            let joined = match version {
                Some(v) => {
                    let joined = concat(row, v);
                    holds(self.condition.as_ref(), &joined)?.then_some(joined)
                }
                None => None,
            };
            match joined {
                Some(joined) => out(joined),
                None if self.kind == JoinKind::Left => {
                    out(padded(Side::Left, row, self.right_width));
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// The temporal join operator: probe rows (input 1) and versions (input 2) keyed by the join
/// key.
#[operator(new = false)]
pub(crate) struct TemporalJoinOp {
    #[state]
    probes: MapState<i64, Vec<Row>>,
    #[state]
    versions: MapState<i64, Row>,
    core: TemporalJoin,
    left_time: usize,
    right_time: usize,
    errors: OutputTag<String>,
    name: String,
}

impl TemporalJoinOp {
    pub(crate) fn new(
        core: TemporalJoin,
        left_time: usize,
        right_time: usize,
        errors: OutputTag<String>,
        name: String,
    ) -> Self {
        Self {
            probes: MapState::new("probes"),
            versions: MapState::new("versions"),
            core,
            left_time,
            right_time,
            errors,
            name,
        }
    }

    fn time_of(
        &self,
        change: &Change,
        column: usize,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
    ) -> Option<i64> {
        if !change.kind.is_accumulate() {
            ctx.output(
                &self.errors,
                format!(
                    "{}: a retraction in an append-only input, in row {change}",
                    self.name
                ),
            );
            return None;
        }
        let time = change.row.get(column).and_then(Value::as_i64);
        if time.is_none() {
            ctx.output(
                &self.errors,
                format!("{}: the event time is NULL, in row {change}", self.name),
            );
        }
        time
    }
}

impl KeyedCoProcessFunction for TemporalJoinOp {
    type Key = Vec<Value>;
    type In1 = Change;
    type In2 = Change;
    type Out = Change;

    fn process_element1(
        &mut self,
        change: Change,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) {
        let Some(time) = self.time_of(&change, self.left_time, ctx) else {
            return;
        };
        if has_null(ctx.current_key()) {
            if self.core.kind == JoinKind::Left {
                out.collect(Change::insert(padded(
                    Side::Left,
                    &change.row,
                    self.core.right_width,
                )));
            }
            return;
        }
        if time <= ctx.current_watermark() {
            ctx.count_late_record();
            return;
        }
        let mut rows = self.probes.get(ctx, &time).unwrap_or_default();
        rows.push(change.row);
        self.probes.put(ctx, time, rows);
        ctx.register_event_time_timer(time);
    }

    fn process_element2(
        &mut self,
        change: Change,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        _out: &mut Collector<'_, Change>,
    ) {
        let Some(time) = self.time_of(&change, self.right_time, ctx) else {
            return;
        };
        if has_null(ctx.current_key()) {
            return;
        }
        let row = match self.versions.get(ctx, &time) {
            Some(existing) if existing >= change.row => existing,
            _ => change.row,
        };
        self.versions.put(ctx, time, row);
        ctx.register_event_time_timer(time);
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) {
        let versions: BTreeMap<i64, Row> = self.versions.entries(ctx).into_iter().collect();
        if let Some(mut rows) = self.probes.get(ctx, &timestamp) {
            self.probes.remove(ctx, &timestamp);
            rows.sort();
            let result = self.core.probe(timestamp, &rows, &versions, &mut |row| {
                out.collect(Change::insert(row));
            });
            if let Err(e) = result {
                ctx.output(&self.errors, format!("{}: {e}", self.name));
            }
        }
        // Timers fire in time order and later probe rows are after the watermark, so the
        // newest version at or before this timer is the oldest one still needed.
        for time in obsolete_versions(&versions, timestamp) {
            self.versions.remove(ctx, &time);
        }
    }
}

/// The rules of a window join for the rows of one window and key.
#[derive(Debug, Clone)]
pub struct WindowJoin {
    /// Which unmatched rows are emitted padded.
    pub kind: JoinKind,
    /// The rest of `ON`, over `left ++ right`.
    pub condition: Option<Expr>,
    /// Columns of a left row.
    pub left_width: usize,
    /// Columns of a right row.
    pub right_width: usize,
}

impl WindowJoin {
    /// Joins the rows of one fired window (rows with their copies).
    ///
    /// # Errors
    ///
    /// The residual condition failed to evaluate on a pair.
    pub fn fire(
        &self,
        left: &[(Row, u64)],
        right: &[(Row, u64)],
        out: &mut dyn FnMut(Row),
    ) -> Result<(), String> {
        let mut right_matched = vec![false; right.len()];
        for (l, l_copies) in left {
            let mut matched = false;
            for (j, (r, r_copies)) in right.iter().enumerate() {
                let joined = concat(l, r);
                if holds(self.condition.as_ref(), &joined)? {
                    matched = true;
                    right_matched[j] = true;
                    for _ in 0..l_copies * r_copies {
                        out(joined.clone());
                    }
                }
            }
            if !matched && self.kind.is_outer(Side::Left) {
                for _ in 0..*l_copies {
                    out(padded(Side::Left, l, self.right_width));
                }
            }
        }
        if self.kind.is_outer(Side::Right) {
            for ((r, copies), matched) in right.iter().zip(right_matched) {
                if !matched {
                    for _ in 0..*copies {
                        out(padded(Side::Right, r, self.left_width));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The window join operator: both inputs keyed by `window_start, window_end` and the keys.
#[operator(new = false)]
pub(crate) struct WindowJoinOp {
    #[state]
    left: MapState<Row, u64>,
    #[state]
    right: MapState<Row, u64>,
    core: WindowJoin,
    left_end: usize,
    right_end: usize,
    errors: OutputTag<String>,
    name: String,
}

impl WindowJoinOp {
    pub(crate) fn new(
        core: WindowJoin,
        left_end: usize,
        right_end: usize,
        errors: OutputTag<String>,
        name: String,
    ) -> Self {
        Self {
            left: MapState::new("left"),
            right: MapState::new("right"),
            core,
            left_end,
            right_end,
            errors,
            name,
        }
    }

    fn handle(
        &mut self,
        side: Side,
        change: Change,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) {
        let intake = Intake {
            name: &self.name,
            errors: &self.errors,
            join: "a window join",
            time: "window_end",
            outer: self.core.kind.is_outer(side),
        };
        let (end_column, other_width) = match side {
            Side::Left => (self.left_end, self.core.right_width),
            Side::Right => (self.right_end, self.core.left_width),
        };
        let Some(end) = intake.admit(side, &change, end_column, other_width, ctx, out) else {
            return;
        };
        let fire_at = end - 1;
        if fire_at <= ctx.current_watermark() {
            ctx.count_late_record();
            return;
        }
        let state = match side {
            Side::Left => &self.left,
            Side::Right => &self.right,
        };
        let copies = state.get(ctx, &change.row).unwrap_or(0) + 1;
        state.put(ctx, change.row, copies);
        ctx.register_event_time_timer(fire_at);
    }
}

impl KeyedCoProcessFunction for WindowJoinOp {
    type Key = Vec<Value>;
    type In1 = Change;
    type In2 = Change;
    type Out = Change;

    fn process_element1(
        &mut self,
        change: Change,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) {
        self.handle(Side::Left, change, ctx, out);
    }

    fn process_element2(
        &mut self,
        change: Change,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) {
        self.handle(Side::Right, change, ctx, out);
    }

    fn on_timer(
        &mut self,
        _timestamp: i64,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) {
        // MapState entries come in key order, so the output does not depend on arrival.
        let left = self.left.entries(ctx);
        let right = self.right.entries(ctx);
        self.left.clear(ctx);
        self.right.clear(ctx);
        let result = self.core.fire(&left, &right, &mut |row| {
            out.collect(Change::insert(row));
        });
        if let Err(e) = result {
            ctx.output(&self.errors, format!("{}: {e}", self.name));
        }
    }
}

/// A row of an outer interval join waiting for partners.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    /// The row.
    pub row: Row,
    /// Its event time.
    pub time: i64,
    /// Whether it joined with a row of the other side.
    pub matched: bool,
}

/// The rules of an outer interval join: right time in `[left time + lower_ms, left time +
/// upper_ms]`.
#[derive(Debug, Clone)]
pub struct IntervalJoin {
    /// Left, right or full (inner interval joins over two event-time attributes use
    /// Eichhorn's operator); inner for a window interval join ([`crate::window_plans`]).
    pub kind: JoinKind,
    /// The lower bound of the right time, relative to the left time.
    pub lower_ms: i64,
    /// The upper bound of the right time, relative to the left time.
    pub upper_ms: i64,
    /// The rest of `ON`, over `left ++ right`.
    pub condition: Option<Expr>,
    /// Columns of a left row.
    pub left_width: usize,
    /// Columns of a right row.
    pub right_width: usize,
}

impl IntervalJoin {
    /// When the watermark at or past this time means a row of `side` at `time` can meet no
    /// more partners.
    pub fn expiry(&self, side: Side, time: i64) -> i64 {
        match side {
            Side::Left => time.saturating_add(self.upper_ms),
            Side::Right => time.saturating_sub(self.lower_ms),
        }
    }

    /// Whether a left row at `left` and a right row at `right` are within the bounds.
    pub fn within(&self, left: i64, right: i64) -> bool {
        right >= left.saturating_add(self.lower_ms) && right <= left.saturating_add(self.upper_ms)
    }

    /// Joins a new `row` of `side` at `time` with the other side's stored rows (marking those
    /// it meets), emitting the pairs; returns whether it met any.
    ///
    /// # Errors
    ///
    /// The residual condition failed to evaluate on a pair.
    pub fn arrive(
        &self,
        side: Side,
        row: &[Value],
        time: i64,
        others: &mut [Pending],
        out: &mut dyn FnMut(Row),
    ) -> Result<bool, String> {
        let mut matched = false;
        for other in others.iter_mut() {
            let (joined, in_bounds) = match side {
                Side::Left => (concat(row, &other.row), self.within(time, other.time)),
                Side::Right => (concat(&other.row, row), self.within(other.time, time)),
            };
            if in_bounds && holds(self.condition.as_ref(), &joined)? {
                matched = true;
                other.matched = true;
                out(joined);
            }
        }
        Ok(matched)
    }

    /// The padded form of an expired row of `side`, if it never matched and `side` is outer.
    pub fn expire(&self, side: Side, pending: &Pending) -> Option<Row> {
        if pending.matched || !self.kind.is_outer(side) {
            return None;
        }
        let other_width = match side {
            Side::Left => self.right_width,
            Side::Right => self.left_width,
        };
        Some(padded(side, &pending.row, other_width))
    }
}

/// The outer interval join operator: both inputs keyed by the equality keys.
#[operator(new = false)]
pub(crate) struct OuterIntervalJoinOp {
    #[state]
    left: MapState<i64, Vec<Pending>>,
    #[state]
    right: MapState<i64, Vec<Pending>>,
    core: IntervalJoin,
    left_time: usize,
    right_time: usize,
    errors: OutputTag<String>,
    name: String,
}

impl OuterIntervalJoinOp {
    pub(crate) fn new(
        core: IntervalJoin,
        left_time: usize,
        right_time: usize,
        errors: OutputTag<String>,
        name: String,
    ) -> Self {
        Self {
            left: MapState::new("left"),
            right: MapState::new("right"),
            core,
            left_time,
            right_time,
            errors,
            name,
        }
    }

    fn handle(
        &mut self,
        side: Side,
        change: Change,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) {
        let intake = Intake {
            name: &self.name,
            errors: &self.errors,
            join: "an interval join",
            time: "the event time",
            outer: self.core.kind.is_outer(side),
        };
        let (time_column, other_width) = match side {
            Side::Left => (self.left_time, self.core.right_width),
            Side::Right => (self.right_time, self.core.left_width),
        };
        let Some(time) = intake.admit(side, &change, time_column, other_width, ctx, out) else {
            return;
        };
        if time <= ctx.current_watermark() {
            ctx.count_late_record();
            return;
        }
        let (own, others) = match side {
            Side::Left => (&self.left, &self.right),
            Side::Right => (&self.right, &self.left),
        };
        let mut matched = false;
        for (expiry, mut rows) in others.entries(ctx) {
            let before: Vec<bool> = rows.iter().map(|p| p.matched).collect();
            let result = self
                .core
                .arrive(side, &change.row, time, &mut rows, &mut |row| {
                    out.collect(Change::insert(row));
                });
            match result {
                Ok(m) => matched |= m,
                Err(e) => {
                    ctx.output(&self.errors, format!("{}: {e}, in row {change}", self.name));
                    return;
                }
            }
            if rows.iter().map(|p| p.matched).ne(before) {
                others.put(ctx, expiry, rows);
            }
        }
        let expiry = self.core.expiry(side, time);
        let mut rows = own.get(ctx, &expiry).unwrap_or_default();
        rows.push(Pending {
            row: change.row,
            time,
            matched,
        });
        own.put(ctx, expiry, rows);
        ctx.register_event_time_timer(expiry);
    }
}

impl KeyedCoProcessFunction for OuterIntervalJoinOp {
    type Key = Vec<Value>;
    type In1 = Change;
    type In2 = Change;
    type Out = Change;

    fn process_element1(
        &mut self,
        change: Change,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) {
        self.handle(Side::Left, change, ctx, out);
    }

    fn process_element2(
        &mut self,
        change: Change,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) {
        self.handle(Side::Right, change, ctx, out);
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) {
        for side in [Side::Left, Side::Right] {
            let state = match side {
                Side::Left => &self.left,
                Side::Right => &self.right,
            };
            // A timer registered at or behind the watermark fires with a later one: take
            // every expiry up to this timer.
            for (expiry, rows) in state.entries(ctx) {
                if expiry > timestamp {
                    continue;
                }
                state.remove(ctx, &expiry);
                for pending in &rows {
                    if let Some(row) = self.core.expire(side, pending) {
                        out.collect(Change::insert(row));
                    }
                }
            }
        }
    }
}

/// The event-time bounds of an interval join: right time in `[left time + lower_ms, left
/// time + upper_ms]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) lower_ms: i64,
    pub(crate) upper_ms: i64,
    /// The left event-time column (an index into the left input).
    pub(crate) left_time: usize,
    /// The right event-time column (an index into the right input).
    pub(crate) right_time: usize,
}

/// The equality keys and the residual condition of a join's `ON`.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) left: Vec<usize>,
    pub(crate) right: Vec<usize>,
    pub(crate) condition: Option<Expr>,
}

/// The window a plan's rows belong to: its window function and its `window_start` and
/// `window_end` columns, if it is a window TVF or a (cascaded) window aggregation, or a calc
/// over one that keeps both columns.
pub(crate) fn window_of(plan: &Plan) -> Option<(WindowKind, usize, usize)> {
    match plan {
        Plan::CascadedWindowAgg {
            window, start, end, ..
        } => Some((*window, *start, *end)),
        Plan::WindowTvf { input, window, .. } => {
            let width = input.schema().columns.len();
            Some((*window, width, width + 1))
        }
        Plan::WindowAgg { window, .. } => Some((*window, 0, 1)),
        Plan::Calc {
            input, projection, ..
        } => {
            let (window, start, end) = window_of(input)?;
            let start = projection.iter().position(|e| *e == Expr::Column(start))?;
            let end = projection.iter().position(|e| *e == Expr::Column(end))?;
            Some((window, start, end))
        }
        _ => None,
    }
}

/// A window join found in a join's `ON`: the `window_end` columns of both sides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowJoinPlan {
    left_end: usize,
    right_end: usize,
}

impl WindowJoinPlan {
    pub(crate) fn build(
        self,
        left: Plan,
        right: Plan,
        kind: JoinKind,
        keys: Keys,
        schema: Schema,
    ) -> Plan {
        Plan::WindowJoin {
            left: Box::new(left),
            right: Box::new(right),
            kind,
            left_keys: keys.left,
            right_keys: keys.right,
            left_end: self.left_end,
            right_end: self.right_end,
            condition: keys.condition,
            schema,
        }
    }
}

/// Whether a join is a window join: both sides window TVFs or window aggregations (or calcs
/// over them keeping the window columns) and `ON` equating both `window_start`s and both `window_end`s.
///
/// # Errors
///
/// The two sides use different windows, or session windows.
pub(crate) fn plan_window_join(
    left: &Plan,
    right: &Plan,
    keys: &Keys,
    position: Option<Position>,
) -> Result<Option<WindowJoinPlan>, SqlError> {
    let (Some((left_window, ls, le)), Some((right_window, rs, re))) =
        (window_of(left), window_of(right))
    else {
        return Ok(None);
    };
    let equated = |l: usize, r: usize| keys.left.iter().zip(&keys.right).any(|p| p == (&l, &r));
    if !equated(ls, rs) || !equated(le, re) {
        return Ok(None);
    }
    if left_window != right_window {
        // A cascaded aggregation's rows were a group aggregation's before it existed: such
        // a join stays the regular join it was.
        if crate::window_plans::is_cascaded(left) || crate::window_plans::is_cascaded(right) {
            return Ok(None);
        }
        return Err(SqlError::unsupported(
            position,
            format!(
                "a window join of two different windows ({} and {}): both sides need the same \
                 window",
                crate::plan::describe_window(&left_window),
                crate::plan::describe_window(&right_window)
            ),
        ));
    }
    if left_window.is_merging() {
        return Err(SqlError::unsupported(
            position,
            "a window join of SESSION windows: join TUMBLE, HOP or CUMULATE windows",
        ));
    }
    Ok(Some(WindowJoinPlan {
        left_end: le,
        right_end: re,
    }))
}

/// Plans `left JOIN name FOR SYSTEM_TIME AS OF as_of ON keys`: `as_of` must be the left
/// side's event-time attribute, `name` a table with a `PRIMARY KEY` and a `WATERMARK` whose
/// key the equalities cover.
///
/// # Errors
///
/// Any of those requirements unmet, a `RIGHT` or `FULL` temporal join, a time bound in `ON`
/// (`bound_at`), an updating probe side.
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_temporal(
    left: Plan,
    right: Plan,
    kind: JoinKind,
    keys: Keys,
    (name, as_of): (&ast::ObjectName, &ast::Expr),
    bound_at: Option<Option<Position>>,
    resolver: &mut SchemaResolver<'_>,
    catalog: &Catalog,
) -> Result<Plan, SqlError> {
    let position = Position::of(name.span());
    if !matches!(kind, JoinKind::Inner | JoinKind::Left) {
        return Err(SqlError::unsupported(
            position,
            format!(
                "a {} temporal join: temporal joins are INNER or LEFT joins",
                kind.sql()
            ),
        ));
    }
    if let Some(at) = bound_at {
        return Err(SqlError::unsupported(
            at.or(position),
            "a time bound in a temporal join: each row joins the version valid at its time",
        ));
    }
    let left_width = left.schema().columns.len();
    let at = expr::compile(as_of, resolver)?;
    let left_time = match at.expr {
        Expr::Column(i) if i < left_width && resolver.schema.columns[i].rowtime => i,
        _ => {
            return Err(SqlError::unsupported(
                expr::position_of(as_of).or(position),
                format!(
                    "FOR SYSTEM_TIME AS OF `{as_of}`: name an event-time attribute of the left \
                     side (processing-time temporal joins are not supported)"
                ),
            ));
        }
    };
    let table_name = name.to_string();
    let versioned = match catalog.get(&table_name.to_lowercase()) {
        Some(CatalogTable::Connector(t)) if !t.primary_key.is_empty() => t,
        _ => {
            return Err(SqlError::validation(
                position,
                format!(
                    "'{table_name}' is no versioned table: a temporal join needs a table with a \
                     PRIMARY KEY (..) NOT ENFORCED and a WATERMARK"
                ),
            ));
        }
    };
    let Some(watermark) = versioned.watermark else {
        return Err(SqlError::validation(
            position,
            format!(
                "'{table_name}' is no versioned table: it has no WATERMARK (an event-time \
                 temporal join needs the versions' event time)"
            ),
        ));
    };
    for &column in &versioned.primary_key {
        if !keys.right.contains(&column) {
            return Err(SqlError::validation(
                position,
                format!(
                    "the temporal join's ON must equate the primary key of '{table_name}' \
                     ({}) with columns of the left side; '{}' is missing",
                    versioned
                        .primary_key
                        .iter()
                        .map(|&i| versioned.schema.columns[i].name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    versioned.schema.columns[column].name
                ),
            ));
        }
    }
    if !left.is_append_only() {
        return Err(SqlError::unsupported(
            position,
            "a temporal join of an updating input (a GROUP BY result): the left side must be \
             append-only",
        ));
    }
    let mut schema = resolver.schema.clone();
    for column in &mut schema.columns {
        column.rowtime = false;
    }
    Ok(Plan::TemporalJoin {
        left: Box::new(left),
        right: Box::new(right),
        kind,
        left_keys: keys.left,
        right_keys: keys.right,
        left_time,
        right_time: watermark.column,
        condition: keys.condition,
        schema,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Dropping the obsolete versions at each watermark (as the operator does at each
        /// timer) never changes which version a later probe row joins.
        #[test]
        fn dropping_obsolete_versions_never_changes_a_later_probe(
            versions in proptest::collection::vec((0i64..100, 0i64..5), 0..20),
            probes in proptest::collection::vec(0i64..120, 1..20),
        ) {
            let all: BTreeMap<i64, Row> = versions
                .iter()
                .map(|&(t, v)| (t, vec![big(v)]))
                .collect();
            let mut kept = all.clone();
            let mut probes = probes;
            probes.sort_unstable();
            for &time in &probes {
                prop_assert_eq!(version_at(&kept, time), version_at(&all, time));
                for obsolete in obsolete_versions(&kept, time) {
                    kept.remove(&obsolete);
                }
            }
        }

        /// A row of an outer interval join expires only after every partner's time: a left
        /// row at `t` and a right row at `s` within the bounds have `s <= expiry(left)` and
        /// `t <= expiry(right)`, so the partner that comes later (not late: after the
        /// watermark) still finds the other one stored.
        #[test]
        fn partners_never_arrive_after_a_row_expired(
            t in -1_000i64..1_000,
            s in -1_000i64..1_000,
            lower in -300i64..300,
            width in 0i64..300,
        ) {
            let join = IntervalJoin {
                kind: JoinKind::Full,
                lower_ms: lower,
                upper_ms: lower + width,
                condition: None,
                left_width: 1,
                right_width: 1,
            };
            if join.within(t, s) {
                prop_assert!(s <= join.expiry(Side::Left, t));
                prop_assert!(t <= join.expiry(Side::Right, s));
            }
        }
    }

    fn big(v: i64) -> Value {
        Value::BigInt(v)
    }

    #[test]
    fn a_probe_joins_the_version_valid_at_its_time() {
        let versions: BTreeMap<i64, Row> = [(10, vec![big(1)]), (20, vec![big(2)])]
            .into_iter()
            .collect();
        assert_eq!(version_at(&versions, 9), None);
        assert_eq!(version_at(&versions, 10).map(|v| v.0), Some(10));
        assert_eq!(version_at(&versions, 19).map(|v| v.0), Some(10));
        assert_eq!(version_at(&versions, 25).map(|v| v.0), Some(20));
        assert_eq!(obsolete_versions(&versions, 15), Vec::<i64>::new());
        assert_eq!(obsolete_versions(&versions, 20), vec![10]);
        let join = TemporalJoin {
            kind: JoinKind::Left,
            condition: None,
            right_width: 1,
        };
        let mut out = Vec::new();
        join.probe(5, &[vec![big(7)]], &versions, &mut |r| out.push(r))
            .expect("probe");
        join.probe(15, &[vec![big(8)]], &versions, &mut |r| out.push(r))
            .expect("probe");
        assert_eq!(out, vec![vec![big(7), Value::Null], vec![big(8), big(1)]]);
    }

    #[test]
    fn a_window_join_pads_the_unmatched_rows_of_outer_sides() {
        // left < right: 1 joins 2 and both copies of 3; 5 joins nothing; 0 is joined by
        // nothing.
        let less = Expr::Compare(
            crate::expr::CompareOp::Lt,
            Box::new(Expr::Column(0)),
            Box::new(Expr::Column(1)),
        );
        let left = [(vec![big(1)], 1), (vec![big(5)], 1)];
        let right = [(vec![big(0)], 1), (vec![big(2)], 1), (vec![big(3)], 2)];
        let joined = vec![
            vec![big(1), big(2)],
            vec![big(1), big(3)],
            vec![big(1), big(3)],
        ];
        let left_padded = vec![big(5), Value::Null];
        let right_padded = vec![Value::Null, big(0)];
        for (kind, padded) in [
            (JoinKind::Inner, vec![]),
            (JoinKind::Left, vec![left_padded.clone()]),
            (JoinKind::Right, vec![right_padded.clone()]),
            (JoinKind::Full, vec![left_padded, right_padded]),
        ] {
            let join = WindowJoin {
                kind,
                condition: Some(less.clone()),
                left_width: 1,
                right_width: 1,
            };
            let mut out = Vec::new();
            join.fire(&left, &right, &mut |r| out.push(r))
                .expect("fire");
            out.sort();
            let mut expected = [joined.clone(), padded].concat();
            expected.sort();
            assert_eq!(out, expected, "{kind:?}");
        }
    }

    #[test]
    fn an_outer_interval_row_is_padded_only_without_partners() {
        let join = IntervalJoin {
            kind: JoinKind::Full,
            lower_ms: -5,
            upper_ms: 10,
            condition: None,
            left_width: 1,
            right_width: 1,
        };
        assert_eq!(join.expiry(Side::Left, 100), 110);
        assert_eq!(join.expiry(Side::Right, 100), 105);
        let mut rights = vec![
            Pending {
                row: vec![big(1)],
                time: 94,
                matched: false,
            },
            Pending {
                row: vec![big(2)],
                time: 111,
                matched: false,
            },
        ];
        let mut out = Vec::new();
        let matched = join
            .arrive(Side::Left, &[big(0)], 100, &mut rights, &mut |r| {
                out.push(r)
            })
            .expect("arrive");
        // 94 is 6 ms before: outside [-5, 10]; 111 is 11 ms after: outside too.
        assert!(!matched);
        assert!(out.is_empty());
        rights[0].time = 95;
        let matched = join
            .arrive(Side::Left, &[big(0)], 100, &mut rights, &mut |r| {
                out.push(r)
            })
            .expect("arrive");
        assert!(matched && rights[0].matched && !rights[1].matched);
        assert_eq!(join.expire(Side::Right, &rights[0]), None);
        assert_eq!(
            join.expire(Side::Right, &rights[1]),
            Some(vec![Value::Null, big(2)])
        );
    }
}
