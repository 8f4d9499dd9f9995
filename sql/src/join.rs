//! Joins: regular joins of two dynamic tables (a changelog, state bounded by a TTL) and
//! interval joins of two append-only tables (state bounded by the watermark).
//!
//! ## Regular joins
//!
//! `a [INNER | LEFT | RIGHT | FULL] JOIN b ON a.k = b.k [AND ...]`: both inputs are keyed by
//! their equality keys (no equality key: one global key, all rows on one subtask), and each
//! side keeps its rows of a key, with how many copies of each and how many rows of the other
//! side each one joins with, in `MapState` (Flink's `StreamingJoinOperator`):
//!
//! - a row added to one side emits `+I` of its joined rows; on an outer side without a match
//!   it emits `+I` of the row padded with `NULL`s, and when it gives an outer row of the other
//!   side its first match, it first emits `-D` of that row's padded form;
//! - a retracted row (`-U`, `-D`) emits `-D` of what it had emitted, and when it took an outer
//!   row's last match, `+I` of that row padded again.
//!
//! So the output is a changelog (inserts and deletes) even for append-only inputs, except an
//! inner join of append-only inputs, which only inserts. A key with a `NULL` matches nothing,
//! as in SQL. The residual condition (the `ON` conjuncts that are not equalities between the
//! sides) is evaluated on each candidate pair.
//!
//! State grows with the inputs unless `SET 'table.exec.state.ttl' = '...'` bounds it: a row
//! then leaves the state when it was not written for that long in processing time (Flink's
//! state TTL, `OnCreateAndWrite`). Expiry emits nothing: a row that arrives after its partner
//! expired does not join with it, a retraction of an expired row is ignored, and an outer
//! row whose partners expired keeps its last emitted form. Results with a TTL therefore depend
//! on processing time, as in Flink; without one (the default) they depend only on the data.
//!
//! ## Interval joins
//!
//! `a JOIN b ON a.k = b.k AND b.ts BETWEEN a.ts - INTERVAL .. AND a.ts + INTERVAL ..`, both
//! `ts` event-time attributes of append-only inputs: Eichhorn's interval join operator (rows
//! in keyed state until the watermark passes their interval, late rows counted), with the
//! residual condition evaluated on each pair. Append-only output (inner joins only).
//!
//! ## Design
//!
//! [`JoinCore`] holds the rules and works on any [`JoinStore`]; the operator's store is its
//! two `MapState`s, the unit tests' a `BTreeMap`.

use std::collections::BTreeMap;

use eichhorn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::expr::Expr;
use crate::types::{Change, Row, RowKind, Value};

/// Which rows of a join survive without a partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinKind {
    /// Only joined pairs.
    Inner,
    /// Every left row, padded with `NULL`s without a match.
    Left,
    /// Every right row, padded with `NULL`s without a match.
    Right,
    /// Every row of both sides.
    Full,
}

impl JoinKind {
    /// The SQL words: `INNER`, `LEFT`, `RIGHT`, `FULL`.
    pub fn sql(self) -> &'static str {
        match self {
            Self::Inner => "INNER",
            Self::Left => "LEFT",
            Self::Right => "RIGHT",
            Self::Full => "FULL",
        }
    }

    /// Whether rows of `side` without a match are emitted padded.
    pub fn is_outer(self, side: Side) -> bool {
        matches!(
            (self, side),
            (Self::Left | Self::Full, Side::Left) | (Self::Right | Self::Full, Side::Right)
        )
    }
}

/// One input of a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The left input.
    Left,
    /// The right input.
    Right,
}

impl Side {
    fn other(self) -> Self {
        match self {
            Self::Left => Self::Right,
            Self::Right => Self::Left,
        }
    }
}

/// What a join side keeps of one distinct row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinEntry {
    /// Copies of the row.
    pub count: u64,
    /// Rows of the other side (with their copies) that one copy joins with; kept only where
    /// it matters, for the rows of an outer side.
    pub matches: u64,
}

/// Where a join keeps the rows of the current key, per side.
pub trait JoinStore {
    /// The rows of `side` with their entries.
    fn rows(&mut self, side: Side) -> Vec<(Row, JoinEntry)>;
    /// The entry of `row` on `side`.
    fn get(&mut self, side: Side, row: &Row) -> Option<JoinEntry>;
    /// Stores the entry of `row` on `side`.
    fn put(&mut self, side: Side, row: Row, entry: JoinEntry);
    /// Removes `row` from `side`.
    fn remove(&mut self, side: Side, row: &Row);
}

/// An in-memory store (tests, and a plain sequential join).
#[derive(Debug, Default, Clone)]
pub struct MemoryJoinStore {
    left: BTreeMap<Row, JoinEntry>,
    right: BTreeMap<Row, JoinEntry>,
}

impl MemoryJoinStore {
    fn side(&mut self, side: Side) -> &mut BTreeMap<Row, JoinEntry> {
        match side {
            Side::Left => &mut self.left,
            Side::Right => &mut self.right,
        }
    }
}

impl JoinStore for MemoryJoinStore {
    fn rows(&mut self, side: Side) -> Vec<(Row, JoinEntry)> {
        self.side(side)
            .iter()
            .map(|(r, e)| (r.clone(), *e))
            .collect()
    }

    fn get(&mut self, side: Side, row: &Row) -> Option<JoinEntry> {
        self.side(side).get(row).copied()
    }

    fn put(&mut self, side: Side, row: Row, entry: JoinEntry) {
        self.side(side).insert(row, entry);
    }

    fn remove(&mut self, side: Side, row: &Row) {
        self.side(side).remove(row);
    }
}

/// The rules of a regular join for the rows of one key (see the module documentation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinCore {
    kind: JoinKind,
    /// Over `left ++ right`; a pair joins where it is `TRUE`.
    condition: Option<Expr>,
    left_width: usize,
    right_width: usize,
    /// Whether state expires (then a retraction of an unknown row is expected, not an error).
    expiring: bool,
}

impl JoinCore {
    /// A join of rows `left_width` and `right_width` wide.
    pub fn new(
        kind: JoinKind,
        condition: Option<Expr>,
        left_width: usize,
        right_width: usize,
        expiring: bool,
    ) -> Self {
        Self {
            kind,
            condition,
            left_width,
            right_width,
            expiring,
        }
    }

    fn joined(&self, side: Side, row: &[Value], other: &[Value]) -> Row {
        let (left, right) = match side {
            Side::Left => (row, other),
            Side::Right => (other, row),
        };
        let mut joined = Vec::with_capacity(left.len() + right.len());
        joined.extend_from_slice(left);
        joined.extend_from_slice(right);
        joined
    }

    fn padded(&self, side: Side, row: &[Value]) -> Row {
        match side {
            Side::Left => self.joined(side, row, &vec![Value::Null; self.right_width]),
            Side::Right => self.joined(side, row, &vec![Value::Null; self.left_width]),
        }
    }

    /// Handles `change` arriving on `side` for the current key; `key_has_null` says the key
    /// holds a `NULL` (then nothing matches). Changes go to `out`.
    ///
    /// # Errors
    ///
    /// The residual condition failed on a pair, or (without a TTL) a retraction of a row the
    /// join never saw: the input is not a consistent changelog.
    pub fn handle(
        &self,
        side: Side,
        change: &Change,
        key_has_null: bool,
        store: &mut dyn JoinStore,
        out: &mut dyn FnMut(Change),
    ) -> Result<(), String> {
        let accumulate = change.kind.is_accumulate();
        let row = &change.row;
        let emit = |out: &mut dyn FnMut(Change), kind: RowKind, row: Row, copies: u64| {
            for _ in 1..copies {
                out(Change {
                    kind,
                    row: row.clone(),
                });
            }
            if copies > 0 {
                out(Change { kind, row });
            }
        };
        let own_kind = if accumulate {
            RowKind::Insert
        } else {
            RowKind::Delete
        };
        if key_has_null {
            if self.kind.is_outer(side) {
                emit(out, own_kind, self.padded(side, row), 1);
            }
            return Ok(());
        }
        let own = store.get(side, row);
        if !accumulate && own.is_none() {
            if self.expiring {
                // Expired with the state TTL: what it joined with was emitted long ago.
                return Ok(());
            }
            return Err(format!(
                "a retraction of a row the join never received: {change}"
            ));
        }
        let other = side.other();
        let other_outer = self.kind.is_outer(other);
        let mut total = 0u64;
        for (candidate, mut entry) in store.rows(other) {
            let joined = self.joined(side, row, &candidate);
            if let Some(condition) = &self.condition
                && !condition.holds(&joined)?
            {
                continue;
            }
            total += entry.count;
            if accumulate {
                if other_outer && entry.matches == 0 {
                    emit(
                        out,
                        RowKind::Delete,
                        self.padded(other, &candidate),
                        entry.count,
                    );
                }
                emit(out, RowKind::Insert, joined, entry.count);
                if other_outer {
                    entry.matches += 1;
                    store.put(other, candidate, entry);
                }
            } else {
                emit(out, RowKind::Delete, joined, entry.count);
                if other_outer {
                    entry.matches = entry.matches.saturating_sub(1);
                    if entry.matches == 0 {
                        emit(
                            out,
                            RowKind::Insert,
                            self.padded(other, &candidate),
                            entry.count,
                        );
                    }
                    store.put(other, candidate, entry);
                }
            }
        }
        if total == 0 && self.kind.is_outer(side) {
            emit(out, own_kind, self.padded(side, row), 1);
        }
        match (accumulate, own) {
            (true, own) => {
                let count = own.map_or(0, |e| e.count) + 1;
                store.put(
                    side,
                    row.clone(),
                    JoinEntry {
                        count,
                        matches: total,
                    },
                );
            }
            (false, Some(entry)) if entry.count > 1 => store.put(
                side,
                row.clone(),
                JoinEntry {
                    count: entry.count - 1,
                    matches: total,
                },
            ),
            (false, _) => store.remove(side, row),
        }
        Ok(())
    }
}

/// Whether any of `key` is `NULL`.
pub(crate) fn has_null(key: &[Value]) -> bool {
    key.iter().any(|v| matches!(v, Value::Null))
}

/// The regular join operator: both inputs keyed by their equality keys, each side's rows in
/// `MapState` (with the state TTL when one is set).
#[operator(new = false)]
pub(crate) struct RegularJoinOp {
    #[state]
    left: MapState<Row, JoinEntry>,
    #[state]
    right: MapState<Row, JoinEntry>,
    core: JoinCore,
    errors: OutputTag<String>,
    name: String,
}

impl RegularJoinOp {
    pub(crate) fn new(
        core: JoinCore,
        state_ttl_ms: Option<u64>,
        errors: OutputTag<String>,
        name: String,
    ) -> Self {
        let handle = |name: &str| {
            let state = MapState::new(name);
            match state_ttl_ms {
                Some(ttl) => state.with_ttl(StateTtlConfig::new(ttl)),
                None => state,
            }
        };
        Self {
            left: handle("left"),
            right: handle("right"),
            core,
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
        let key_has_null = has_null(ctx.current_key());
        let mut emitted = Vec::new();
        let result = {
            let mut store = StateStore {
                left: &self.left,
                right: &self.right,
                ctx: &mut *ctx,
            };
            self.core
                .handle(side, &change, key_has_null, &mut store, &mut |c| {
                    emitted.push(c);
                })
        };
        for c in emitted {
            out.collect(c);
        }
        if let Err(e) = result {
            ctx.output(&self.errors, format!("{}: {e}, in row {change}", self.name));
        }
    }
}

/// The operator's two `MapState`s as a [`JoinStore`].
struct StateStore<'s, 'c, 'a, 'b> {
    left: &'s MapState<Row, JoinEntry>,
    right: &'s MapState<Row, JoinEntry>,
    ctx: &'c mut KeyedContext<'a, 'b, Vec<Value>>,
}

impl StateStore<'_, '_, '_, '_> {
    fn state(&self, side: Side) -> &MapState<Row, JoinEntry> {
        match side {
            Side::Left => self.left,
            Side::Right => self.right,
        }
    }
}

impl JoinStore for StateStore<'_, '_, '_, '_> {
    fn rows(&mut self, side: Side) -> Vec<(Row, JoinEntry)> {
        let state = self.state(side).clone();
        state.entries(self.ctx)
    }

    fn get(&mut self, side: Side, row: &Row) -> Option<JoinEntry> {
        let state = self.state(side).clone();
        state.get(self.ctx, row)
    }

    fn put(&mut self, side: Side, row: Row, entry: JoinEntry) {
        let state = self.state(side).clone();
        state.put(self.ctx, row, entry);
    }

    fn remove(&mut self, side: Side, row: &Row) {
        let state = self.state(side).clone();
        state.remove(self.ctx, row);
    }
}

impl KeyedCoProcessFunction for RegularJoinOp {
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
}

/// The pair function of an interval join: the joined row (`left ++ right`). The residual
/// condition runs in a `Calc` after it, whose errors reach the query's error output; the
/// interval join operator counts late rows itself.
#[operator]
pub(crate) struct IntervalJoinFn;

impl ProcessJoinFunction<Change, Change> for IntervalJoinFn {
    type Out = Change;

    fn process_element(
        &mut self,
        left: Change,
        right: Change,
        _ctx: &JoinContext,
        out: &mut Collector<'_, Change>,
    ) {
        let mut row = left.row;
        row.extend(right.row);
        out.collect(Change::insert(row));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::materialize;
    use proptest::prelude::*;

    fn big(v: i64) -> Value {
        Value::BigInt(v)
    }

    /// A nested-loop join of two bags (the oracle).
    fn oracle(kind: JoinKind, left: &[Row], right: &[Row]) -> Vec<Row> {
        let mut out = Vec::new();
        let matches = |l: &Row, r: &Row| l[0] == r[0];
        for l in left {
            let mut any = false;
            for r in right.iter().filter(|r| matches(l, r)) {
                any = true;
                out.push([l.clone(), r.clone()].concat());
            }
            if !any && kind.is_outer(Side::Left) {
                out.push([l.clone(), vec![Value::Null; 2]].concat());
            }
        }
        if kind.is_outer(Side::Right) {
            for r in right {
                if !left.iter().any(|l| matches(l, r)) {
                    out.push([vec![Value::Null; 2], r.clone()].concat());
                }
            }
        }
        out.sort();
        out
    }

    proptest! {
        /// Any interleaving of inserts and retractions on both sides leaves the join of what
        /// remains, for every join kind, and the changelog never retracts what it did not
        /// insert.
        #[test]
        fn the_changelog_materializes_to_the_join_of_the_remaining_rows(
            ops in proptest::collection::vec((any::<bool>(), 0i64..3, 0i64..3, any::<bool>()), 0..40),
        ) {
            for kind in [JoinKind::Inner, JoinKind::Left, JoinKind::Right, JoinKind::Full] {
                let core = JoinCore::new(kind, None, 2, 2, false);
                // One store per key, as the keyed operator has: rows of other keys never meet.
                let mut stores: BTreeMap<i64, MemoryJoinStore> = BTreeMap::new();
                let mut changes = Vec::new();
                let (mut left, mut right): (Vec<Row>, Vec<Row>) = (Vec::new(), Vec::new());
                for &(on_left, key, value, retract) in &ops {
                    let row = vec![big(key), big(value)];
                    let (side, bag) = if on_left { (Side::Left, &mut left) } else { (Side::Right, &mut right) };
                    let kind = if retract {
                        // Retract only what is there, as a consistent changelog does.
                        let Some(i) = bag.iter().position(|r| *r == row) else { continue };
                        bag.remove(i);
                        RowKind::Delete
                    } else {
                        bag.push(row.clone());
                        RowKind::Insert
                    };
                    let store = stores.entry(key).or_default();
                    core.handle(side, &Change { kind, row }, false, store, &mut |c| changes.push(c))
                        .expect("consistent");
                }
                let mut result: Vec<Row> = materialize(changes)
                    .expect("a consistent changelog")
                    .into_iter()
                    .flat_map(|(row, n)| std::iter::repeat_n(row, n as usize))
                    .collect();
                result.sort();
                prop_assert_eq!(result, oracle(kind, &left, &right), "{:?}", kind);
            }
        }
    }

    #[test]
    fn an_outer_row_is_padded_until_its_first_match_and_after_its_last() {
        let core = JoinCore::new(JoinKind::Left, None, 1, 1, false);
        let mut store = MemoryJoinStore::default();
        let mut out = Vec::new();
        let mut run = |side, kind, v: i64, store: &mut MemoryJoinStore| {
            core.handle(
                side,
                &Change {
                    kind,
                    row: vec![big(v)],
                },
                false,
                store,
                &mut |c| out.push(c.to_string()),
            )
            .expect("handled");
        };
        run(Side::Left, RowKind::Insert, 1, &mut store);
        run(Side::Right, RowKind::Insert, 2, &mut store);
        run(Side::Right, RowKind::Delete, 2, &mut store);
        assert_eq!(
            out,
            vec![
                "+I,1,<NULL>",
                "-D,1,<NULL>",
                "+I,1,2",
                "-D,1,2",
                "+I,1,<NULL>"
            ]
        );
    }

    #[test]
    fn null_keys_match_nothing_and_unknown_retractions_are_errors_without_a_ttl() {
        let core = JoinCore::new(JoinKind::Full, None, 1, 1, false);
        let mut store = MemoryJoinStore::default();
        let mut out = Vec::new();
        for side in [Side::Left, Side::Right] {
            core.handle(
                side,
                &Change::insert(vec![Value::Null]),
                true,
                &mut store,
                &mut |c| out.push(c.to_string()),
            )
            .expect("handled");
        }
        assert_eq!(out, vec!["+I,<NULL>,<NULL>", "+I,<NULL>,<NULL>"]);
        let retraction = Change {
            kind: RowKind::Delete,
            row: vec![big(5)],
        };
        let error = core
            .handle(Side::Left, &retraction, false, &mut store, &mut |_| {})
            .expect_err("unknown row");
        assert!(error.contains("never received"), "{error}");
        let expiring = JoinCore::new(JoinKind::Full, None, 1, 1, true);
        expiring
            .handle(Side::Left, &retraction, false, &mut store, &mut |_| {})
            .expect("an expired row's retraction is ignored");
    }
}
