//! Top-N and deduplication: `ROW_NUMBER() OVER (PARTITION BY .. ORDER BY ..)` filtered with
//! `rn <= N` (or `rn = 1`, deduplication) in the outer query.
//!
//! One keyed operator per query, keyed by the partition columns: the partition's rows sorted
//! by the `ORDER BY` columns (ties broken by the whole row, so the result does not depend on
//! the order in which rows of equal sort keys arrive, which differs between parallelisms), in
//! `ValueState`. For an append-only input only the first `N` rows are kept (a row that falls
//! out can never come back), so state is bounded by `N` per partition; an updating input (a
//! `GROUP BY` result) keeps every row, since a retraction can bring a lower one back.
//!
//! Each change emits the difference between the partition's old and new first `N` rows, by
//! rank: `-U`/`+U` where a rank's row changed, `+I` for a new rank, `-D` for a rank that is
//! gone. Deduplication is Top-1 ordered by the event-time attribute: `ASC` keeps the first row
//! of each key, `DESC` the last, in event time (Flink's rowtime deduplication), updating the
//! result when an out-of-order row is earlier (or later) than the kept one.

use std::cmp::Ordering;

use eichhorn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::types::{Change, Row, RowKind, Value};

/// The rules of a Top-N over one partition's sorted rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopN {
    /// `(column, descending)` pairs of the `ORDER BY`.
    pub order: Vec<(usize, bool)>,
    /// `N`.
    pub limit: usize,
    /// Whether the input only inserts (then only `N` rows are kept).
    pub append_only: bool,
}

impl TopN {
    /// The order of two rows: the `ORDER BY` columns, then the whole row.
    pub fn compare(&self, a: &[Value], b: &[Value]) -> Ordering {
        for &(column, descending) in &self.order {
            let ordering = a.get(column).cmp(&b.get(column));
            let ordering = if descending {
                ordering.reverse()
            } else {
                ordering
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        a.cmp(b)
    }

    /// Applies `change` to the sorted `rows` of its partition and emits the change of the
    /// first `N` rows (each with its rank appended).
    ///
    /// # Errors
    ///
    /// A retraction of a row the partition does not hold: the input is no consistent
    /// changelog.
    pub fn apply(
        &self,
        rows: &mut Vec<Row>,
        change: &Change,
        out: &mut dyn FnMut(Change),
    ) -> Result<(), String> {
        let before: Vec<Row> = rows.iter().take(self.limit).cloned().collect();
        let position = rows.binary_search_by(|r| self.compare(r, &change.row));
        if change.kind.is_accumulate() {
            let at = position.unwrap_or_else(|at| at);
            if self.append_only && at >= self.limit {
                // Beyond the first N of an append-only input: it can never rank.
                return Ok(());
            }
            rows.insert(at, change.row.clone());
            if self.append_only {
                rows.truncate(self.limit);
            }
        } else {
            match position {
                Ok(at) => {
                    rows.remove(at);
                }
                Err(_) => {
                    return Err(format!(
                        "a retraction of a row the Top-N does not hold: {change}"
                    ));
                }
            }
        }
        let ranked = |row: &Row, rank: usize| {
            let mut row = row.clone();
            row.push(Value::BigInt(rank as i64 + 1));
            row
        };
        let after = rows.iter().take(self.limit);
        let mut after = after.collect::<Vec<_>>().into_iter();
        for rank in 0..self.limit {
            match (before.get(rank), after.next()) {
                (Some(old), Some(new)) if old != new => {
                    out(Change {
                        kind: RowKind::UpdateBefore,
                        row: ranked(old, rank),
                    });
                    out(Change {
                        kind: RowKind::UpdateAfter,
                        row: ranked(new, rank),
                    });
                }
                (Some(old), None) => out(Change {
                    kind: RowKind::Delete,
                    row: ranked(old, rank),
                }),
                (None, Some(new)) => out(Change::insert(ranked(new, rank))),
                (None, None) => break,
                _ => {}
            }
        }
        Ok(())
    }
}

/// The Top-N operator: the partition's sorted rows in `ValueState`.
#[operator]
pub(crate) struct RankOp {
    #[state]
    rows: ValueState<Vec<Row>>,
    top: TopN,
    errors: OutputTag<String>,
}

impl KeyedProcessFunction for RankOp {
    type Key = Vec<Value>;
    type In = Change;
    type Out = Change;

    fn process_element(
        &mut self,
        change: Change,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) {
        let mut rows = self.rows.value(ctx).unwrap_or_default();
        let mut emitted = Vec::new();
        if let Err(e) = self.top.apply(&mut rows, &change, &mut |c| emitted.push(c)) {
            ctx.output(&self.errors, format!("Rank: {e}"));
            return;
        }
        if rows.is_empty() {
            self.rows.clear(ctx);
        } else {
            self.rows.update(ctx, rows);
        }
        for c in emitted {
            out.collect(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::materialize;
    use proptest::prelude::*;

    proptest! {
        /// After any sequence of inserts and retractions the emitted changelog materializes
        /// to the first N rows of the remaining ones, ranked; an append-only input keeps at
        /// most N rows.
        #[test]
        fn the_changelog_is_the_top_n_of_the_remaining_rows(
            ops in proptest::collection::vec((0i64..6, 0i64..4, any::<bool>()), 0..40),
            limit in 1usize..4,
            descending in any::<bool>(),
            append_only in any::<bool>(),
        ) {
            let top = TopN { order: vec![(0, descending)], limit, append_only };
            let mut rows = Vec::new();
            let mut bag: Vec<Row> = Vec::new();
            let mut changes = Vec::new();
            for (value, tag, retract) in ops {
                let row = vec![Value::BigInt(value), Value::BigInt(tag)];
                let kind = if retract && !append_only {
                    let Some(i) = bag.iter().position(|r| *r == row) else { continue };
                    bag.remove(i);
                    RowKind::Delete
                } else {
                    bag.push(row.clone());
                    RowKind::Insert
                };
                top.apply(&mut rows, &Change { kind, row }, &mut |c| changes.push(c))
                    .expect("consistent");
                if append_only {
                    prop_assert!(rows.len() <= limit);
                }
            }
            bag.sort_by(|a, b| top.compare(a, b));
            let expected: Vec<Row> = bag
                .iter()
                .take(limit)
                .enumerate()
                .map(|(i, r)| [r.clone(), vec![Value::BigInt(i as i64 + 1)]].concat())
                .collect();
            let mut actual: Vec<Row> = materialize(changes)
                .expect("consistent changelog")
                .into_iter()
                .flat_map(|(row, n)| std::iter::repeat_n(row, n as usize))
                .collect();
            actual.sort_by_key(|r| r.last().cloned());
            prop_assert_eq!(actual, expected);
        }
    }
}
