//! `OVER` aggregations: `agg(x) OVER (PARTITION BY .. ORDER BY ts ROWS|RANGE BETWEEN ..
//! PRECEDING AND CURRENT ROW)` over an event-time attribute, append-only.
//!
//! Rows wait in keyed `MapState` (by event time) until the watermark reaches their time, so
//! each partition's rows are aggregated in event-time order whatever order they came in (as
//! Flink's `RowTimeRowsBoundedPrecedingFunction` and its siblings do); an event-time timer at
//! the row's time releases it. Rows of one time are taken in the order of their contents, so
//! the result does not depend on arrival order. A row at or behind the watermark when it
//! arrives is late: dropped and counted (`late_records`), as in Flink.
//!
//! The frame's rows (`ROWS n PRECEDING`: the last `n + 1` rows; `RANGE interval PRECEDING`:
//! the rows no older than the interval, the current row's peers of equal time included) are
//! kept in `ValueState` and aggregated afresh for each row, so any aggregate works and the
//! state is bounded by the frame. `UNBOUNDED PRECEDING` keeps running accumulators instead.

use eichhorn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::agg::{Accumulator, AggCall};
use crate::types::{Change, Row, Value};

/// The rows an `OVER` aggregate sees, ending at the current row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OverFrame {
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW`.
    Rows(u64),
    /// `RANGE BETWEEN INTERVAL .. PRECEDING AND CURRENT ROW`: rows with time in
    /// `[time - ms, time]`.
    Range(i64),
    /// `ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW`.
    UnboundedRows,
    /// `RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW` (the default): all rows up to the
    /// current row's time, its peers included.
    UnboundedRange,
}

/// What an `OVER` partition keeps between rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OverState {
    /// The rows of a bounded frame, with their times, oldest first.
    history: Vec<(i64, Row)>,
    /// The running accumulators of an unbounded frame.
    accumulators: Option<Vec<Accumulator>>,
}

/// The rules of an `OVER` aggregation for one partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverAgg {
    /// The frame.
    pub frame: OverFrame,
    /// The aggregate calls (arguments index the input row).
    pub aggs: Vec<AggCall>,
}

impl OverAgg {
    fn results(&self, accumulators: &[Accumulator]) -> Vec<Value> {
        self.aggs
            .iter()
            .zip(accumulators)
            .map(|(call, acc)| call.result(acc))
            .collect()
    }

    fn over<'a>(&self, rows: impl Iterator<Item = &'a Row>) -> Vec<Value> {
        let mut accumulators: Vec<Accumulator> = self.aggs.iter().map(AggCall::create).collect();
        for row in rows {
            for (call, acc) in self.aggs.iter().zip(&mut accumulators) {
                call.accumulate(acc, row, false);
            }
        }
        self.results(&accumulators)
    }

    /// Aggregates the rows of one event time `ts` (sorted), in order, after every earlier
    /// time's rows; each output row is the input row with the aggregates appended.
    pub fn fire(&self, state: &mut OverState, ts: i64, rows: Vec<Row>) -> Vec<Row> {
        let mut out = Vec::with_capacity(rows.len());
        match self.frame {
            OverFrame::Rows(preceding) => {
                for row in rows {
                    state.history.push((ts, row.clone()));
                    let keep = preceding.saturating_add(1) as usize;
                    if state.history.len() > keep {
                        state.history.drain(..state.history.len() - keep);
                    }
                    let mut result = row;
                    result.extend(self.over(state.history.iter().map(|(_, r)| r)));
                    out.push(result);
                }
            }
            OverFrame::Range(range_ms) => {
                state
                    .history
                    .extend(rows.iter().map(|row| (ts, row.clone())));
                let oldest = ts.saturating_sub(range_ms);
                state.history.retain(|(t, _)| *t >= oldest);
                let results = self.over(state.history.iter().map(|(_, r)| r));
                for mut row in rows {
                    row.extend(results.iter().cloned());
                    out.push(row);
                }
            }
            OverFrame::UnboundedRows | OverFrame::UnboundedRange => {
                let mut accumulators = state
                    .accumulators
                    .take()
                    .unwrap_or_else(|| self.aggs.iter().map(AggCall::create).collect());
                let peers = self.frame == OverFrame::UnboundedRange;
                if peers {
                    for row in &rows {
                        for (call, acc) in self.aggs.iter().zip(&mut accumulators) {
                            call.accumulate(acc, row, false);
                        }
                    }
                }
                for mut row in rows {
                    if !peers {
                        for (call, acc) in self.aggs.iter().zip(&mut accumulators) {
                            call.accumulate(acc, &row, false);
                        }
                    }
                    row.extend(self.results(&accumulators));
                    out.push(row);
                }
                state.accumulators = Some(accumulators);
            }
        }
        out
    }
}

/// The `OVER` operator: rows wait in `MapState` by time until the watermark reaches it.
#[operator]
pub(crate) struct OverAggOp {
    #[state]
    pending: MapState<i64, Vec<Row>>,
    #[state]
    partition: ValueState<OverState>,
    over: OverAgg,
    time_column: usize,
    errors: OutputTag<String>,
}

impl KeyedProcessFunction for OverAggOp {
    type Key = Vec<Value>;
    type In = Change;
    type Out = Change;

    fn process_element(
        &mut self,
        change: Change,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        _out: &mut Collector<'_, Change>,
    ) {
        let Some(ts) = change.row.get(self.time_column).and_then(Value::as_i64) else {
            ctx.output(
                &self.errors,
                format!("OverAggregate: the event time is NULL, in row {change}"),
            );
            return;
        };
        if ts <= ctx.current_watermark() {
            ctx.count_late_record();
            return;
        }
        let mut rows = self.pending.get(ctx, &ts).unwrap_or_default();
        rows.push(change.row);
        self.pending.put(ctx, ts, rows);
        ctx.register_event_time_timer(ts);
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut KeyedContext<'_, '_, Vec<Value>>,
        out: &mut Collector<'_, Change>,
    ) {
        let Some(mut rows) = self.pending.get(ctx, &timestamp) else {
            return;
        };
        self.pending.remove(ctx, &timestamp);
        rows.sort();
        let mut state = self.partition.value(ctx).unwrap_or_default();
        for row in self.over.fire(&mut state, timestamp, rows) {
            out.collect(Change::insert(row));
        }
        self.partition.update(ctx, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agg::AggFunc;
    use crate::types::DataType;
    use proptest::prelude::*;

    fn sum_and_count() -> Vec<AggCall> {
        vec![
            AggCall {
                func: AggFunc::Sum,
                distinct: false,
                arg: Some(1),
                result_type: DataType::BigInt,
            },
            AggCall {
                func: AggFunc::Count,
                distinct: false,
                arg: None,
                result_type: DataType::BigInt,
            },
        ]
    }

    proptest! {
        /// Each frame aggregates exactly the rows a direct reading of its definition picks,
        /// over rows sorted by time (then contents).
        #[test]
        fn frames_match_their_definition(
            mut rows in proptest::collection::vec((0i64..20, 0i64..50), 1..30),
            n in 0u64..4,
            range in 0i64..6,
        ) {
            rows.sort();
            let rows: Vec<Row> = rows.iter().map(|(t, v)| vec![Value::BigInt(*t), Value::BigInt(*v)]).collect();
            let time = |r: &Row| r[0].as_i64().expect("time");
            for frame in [OverFrame::Rows(n), OverFrame::Range(range), OverFrame::UnboundedRows, OverFrame::UnboundedRange] {
                let over = OverAgg { frame, aggs: sum_and_count() };
                let mut state = OverState::default();
                let mut actual = Vec::new();
                let mut i = 0;
                while i < rows.len() {
                    let ts = time(&rows[i]);
                    let peers: Vec<Row> = rows[i..].iter().take_while(|r| time(r) == ts).cloned().collect();
                    i += peers.len();
                    actual.extend(over.fire(&mut state, ts, peers));
                }
                for (index, (row, result)) in rows.iter().zip(&actual).enumerate() {
                    let ts = time(row);
                    let frame_rows: Vec<&Row> = match frame {
                        OverFrame::Rows(n) => rows[index.saturating_sub(n as usize)..=index].iter().collect(),
                        OverFrame::Range(ms) => rows.iter().filter(|r| time(r) >= ts - ms && time(r) <= ts).collect(),
                        OverFrame::UnboundedRows => rows[..=index].iter().collect(),
                        OverFrame::UnboundedRange => rows.iter().filter(|r| time(r) <= ts).collect(),
                    };
                    let sum: i64 = frame_rows.iter().map(|r| r[1].as_i64().expect("v")).sum();
                    prop_assert_eq!(&result[..2], &row[..], "{:?}", frame);
                    prop_assert_eq!(&result[2..], &[Value::BigInt(sum), Value::BigInt(frame_rows.len() as i64)][..], "{:?} row {}", frame, index);
                }
            }
        }
    }
}
