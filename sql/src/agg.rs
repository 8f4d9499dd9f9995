//! Aggregate functions and their accumulators: a pure core shared by group aggregation (which
//! retracts) and window aggregation (which only adds).
//!
//! Every accumulator can retract what it accumulated, so a group aggregation over an updating
//! input (an aggregation of a view that itself aggregates) stays exact: `COUNT`, `SUM` and `AVG`
//! keep counts, `MIN`, `MAX` and `COUNT(DISTINCT ..)` keep the multiset of their values.
//!
//! Result types follow Flink: `COUNT` is `BIGINT`; `SUM`, `MIN`, `MAX` and `AVG` have their
//! argument's type (`AVG` of a `BIGINT` is a `BIGINT`, truncated, as in Flink); `SUM`, `MIN`,
//! `MAX` and `AVG` of no non-null values are `NULL`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{DataType, Value};

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggFunc {
    /// `COUNT(*)`, `COUNT(x)` (non-null values), `COUNT(DISTINCT x)`.
    Count,
    /// `SUM(x)`.
    Sum,
    /// `MIN(x)`.
    Min,
    /// `MAX(x)`.
    Max,
    /// `AVG(x)`.
    Avg,
}

impl AggFunc {
    /// The function called `name` (upper case), if it is an aggregate.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "COUNT" => Self::Count,
            "SUM" => Self::Sum,
            "MIN" => Self::Min,
            "MAX" => Self::Max,
            "AVG" => Self::Avg,
            _ => return None,
        })
    }

    /// The result type for an argument of type `arg` (`None` for `COUNT(*)`), or why the
    /// argument does not fit.
    ///
    /// # Errors
    ///
    /// `SUM` or `AVG` of a non-number.
    pub fn result_type(self, arg: Option<DataType>) -> Result<DataType, String> {
        match (self, arg) {
            (Self::Count, _) => Ok(DataType::BigInt),
            (Self::Sum | Self::Avg, Some(t)) if t.is_numeric() => Ok(match t {
                DataType::Null => DataType::BigInt,
                t => t,
            }),
            (Self::Min | Self::Max, Some(t)) if t != DataType::Interval => Ok(t),
            (f, Some(t)) => Err(format!("{f:?} cannot aggregate {t}").to_uppercase()),
            (f, None) => Err(format!("{f:?}(*) is not an aggregate; use COUNT(*)").to_uppercase()),
        }
    }
}

/// One aggregate call of a query: function, `DISTINCT`, and the input column of its argument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggCall {
    /// The function.
    pub func: AggFunc,
    /// `DISTINCT`.
    pub distinct: bool,
    /// The input column of the argument (`None` for `COUNT(*)`).
    pub arg: Option<usize>,
    /// The result type.
    pub result_type: DataType,
}

/// The running state of one aggregate call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Accumulator {
    /// A count of rows or non-null values.
    Count(i64),
    /// A sum with the number of non-null values in it (in the result type).
    Sum {
        /// The sum so far.
        sum: Value,
        /// How many values it holds.
        count: i64,
    },
    /// The multiset of values (for `MIN`, `MAX`, `COUNT(DISTINCT)`).
    Values(BTreeMap<Value, i64>),
    /// The smallest (`MIN`) or largest (`MAX`) value so far, over an input that never
    /// retracts (Flink's `MaxWithoutRetractAggFunction`): one value instead of a multiset.
    Extreme(Option<Value>),
}

impl AggCall {
    /// A fresh accumulator.
    pub fn create(&self) -> Accumulator {
        match (self.func, self.distinct) {
            (AggFunc::Min | AggFunc::Max, _) | (_, true) => Accumulator::Values(BTreeMap::new()),
            (AggFunc::Count, false) => Accumulator::Count(0),
            (AggFunc::Sum | AggFunc::Avg, false) => Accumulator::Sum {
                sum: zero(self.result_type),
                count: 0,
            },
        }
    }

    /// A fresh accumulator for an input that never retracts (an append-only input, a window):
    /// `MIN` and `MAX` keep their best value only, not the multiset of values a retraction
    /// would need.
    pub fn create_append_only(&self) -> Accumulator {
        match (self.func, self.distinct) {
            (AggFunc::Min | AggFunc::Max, false) => Accumulator::Extreme(None),
            _ => self.create(),
        }
    }

    /// Adds (or, with `retract`, removes) the input `row` to `acc`.
    ///
    /// # Panics
    ///
    /// A retraction on an accumulator of [`AggCall::create_append_only`]: the planner only
    /// makes those for inputs that never retract, so this is a bug.
    pub fn accumulate(&self, acc: &mut Accumulator, row: &[Value], retract: bool) {
        let value = match self.arg {
            None => Value::BigInt(1),
            Some(i) => match row.get(i) {
                Some(v) if !v.is_null() => v.clone(),
                // NULLs are not counted, summed or compared.
                _ => return,
            },
        };
        let sign: i64 = if retract { -1 } else { 1 };
        match acc {
            Accumulator::Count(n) => *n += sign,
            Accumulator::Sum { sum, count } => {
                *sum = add(sum, &value, retract);
                *count += sign;
            }
            Accumulator::Extreme(best) => {
                assert!(
                    !retract,
                    "a retraction reached {:?} over an append-only input",
                    self.func
                );
                self.keep_best(best, value);
            }
            Accumulator::Values(values) => {
                let n = values.entry(value.clone()).or_insert(0);
                *n += sign;
                if *n == 0 {
                    values.remove(&value);
                }
            }
        }
    }

    /// Merges `other` into `acc` (session windows that grew together).
    pub fn merge(&self, acc: &mut Accumulator, other: Accumulator) {
        match (acc, other) {
            (Accumulator::Count(a), Accumulator::Count(b)) => *a += b,
            (Accumulator::Sum { sum, count }, Accumulator::Sum { sum: s, count: c }) => {
                *sum = add(sum, &s, false);
                *count += c;
            }
            (Accumulator::Values(a), Accumulator::Values(b)) => {
                for (value, n) in b {
                    let entry = a.entry(value.clone()).or_insert(0);
                    *entry += n;
                    if *entry == 0 {
                        a.remove(&value);
                    }
                }
            }
            (Accumulator::Extreme(best), Accumulator::Extreme(other)) => {
                if let Some(value) = other {
                    self.keep_best(best, value);
                }
            }
            // A multiset from state written before `MIN`/`MAX` of append-only inputs kept one
            // value (a savepoint of an older version), merged with a window of this one: both
            // become the one value.
            (acc @ Accumulator::Values(_), Accumulator::Extreme(other)) => {
                let mut best = self.extreme_of(acc);
                if let Some(value) = other {
                    self.keep_best(&mut best, value);
                }
                *acc = Accumulator::Extreme(best);
            }
            (Accumulator::Extreme(best), values @ Accumulator::Values(_)) => {
                if let Some(value) = self.extreme_of(&values) {
                    self.keep_best(best, value);
                }
            }
            // Otherwise accumulators of one call have the same shape (`create` decides it): a
            // mismatch is a bug, and the job restarts from its last checkpoint.
            (acc, other) => panic!("merging accumulators of different shapes: {acc:?}, {other:?}"),
        }
    }

    /// The least (`MIN`) or greatest (`MAX`) member of a multiset accumulator; `None` for
    /// other shapes or an empty multiset.
    fn extreme_of(&self, acc: &Accumulator) -> Option<Value> {
        let Accumulator::Values(values) = acc else {
            return None;
        };
        let mut members = values.iter().filter(|(_, n)| **n > 0).map(|(v, _)| v);
        if self.func == AggFunc::Min {
            members.next().cloned()
        } else {
            members.next_back().cloned()
        }
    }

    /// Replaces `best` by `value` where `value` is better (smaller for `MIN`, larger for
    /// `MAX`).
    fn keep_best(&self, best: &mut Option<Value>, value: Value) {
        let better = match best {
            None => true,
            Some(current) if self.func == AggFunc::Min => value < *current,
            Some(current) => value > *current,
        };
        if better {
            *best = Some(value);
        }
    }

    /// The result of `acc`.
    pub fn result(&self, acc: &Accumulator) -> Value {
        match acc {
            Accumulator::Extreme(best) => best.clone().unwrap_or(Value::Null),
            Accumulator::Count(n) => Value::BigInt(*n),
            Accumulator::Sum { count: 0, .. } => Value::Null,
            Accumulator::Sum { sum, count } => match (self.func, sum) {
                (AggFunc::Avg, Value::BigInt(s)) => Value::BigInt(s / count),
                (AggFunc::Avg, Value::Double(s)) => Value::Double(s / *count as f64),
                (_, s) => s.clone(),
            },
            Accumulator::Values(values) => {
                // Retractions of values never added leave negative counts: not a member.
                let mut present = values.iter().filter(|(_, n)| **n > 0).map(|(v, _)| v);
                match self.func {
                    AggFunc::Count => Value::BigInt(present.count() as i64),
                    AggFunc::Min => present.next().cloned().unwrap_or(Value::Null),
                    AggFunc::Max => present.next_back().cloned().unwrap_or(Value::Null),
                    AggFunc::Sum | AggFunc::Avg => {
                        let mut sum = zero(self.result_type);
                        let mut count = 0i64;
                        for v in present {
                            sum = add(&sum, v, false);
                            count += 1;
                        }
                        let acc = Accumulator::Sum { sum, count };
                        Self {
                            distinct: false,
                            ..self.clone()
                        }
                        .result(&acc)
                    }
                }
            }
        }
    }
}

fn zero(data_type: DataType) -> Value {
    match data_type {
        DataType::Double => Value::Double(0.0),
        _ => Value::BigInt(0),
    }
}

fn add(sum: &Value, value: &Value, retract: bool) -> Value {
    match (sum, value) {
        (Value::BigInt(s), Value::BigInt(v)) => Value::BigInt(if retract {
            s.wrapping_sub(*v)
        } else {
            s.wrapping_add(*v)
        }),
        (s, v) => {
            let (s, v) = (s.as_f64().unwrap_or(0.0), v.as_f64().unwrap_or(0.0));
            Value::Double(if retract { s - v } else { s + v })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn call(func: AggFunc, distinct: bool, result_type: DataType) -> AggCall {
        AggCall {
            func,
            distinct,
            arg: Some(0),
            result_type,
        }
    }

    proptest! {
        /// Adding values then retracting some gives what adding only the rest gives.
        #[test]
        fn retraction_undoes_accumulation(
            values in proptest::collection::vec(proptest::option::of(-50i64..50), 0..30),
            retracted in proptest::collection::vec(any::<bool>(), 30),
        ) {
            for (func, distinct) in [
                (AggFunc::Count, false), (AggFunc::Count, true), (AggFunc::Sum, false),
                (AggFunc::Min, false), (AggFunc::Max, false), (AggFunc::Avg, false),
                (AggFunc::Sum, true),
            ] {
                let c = call(func, distinct, DataType::BigInt);
                let row = |v: &Option<i64>| vec![v.map_or(Value::Null, Value::BigInt)];
                let mut all = c.create();
                let mut kept = c.create();
                for (v, r) in values.iter().zip(&retracted) {
                    c.accumulate(&mut all, &row(v), false);
                    if !r {
                        c.accumulate(&mut kept, &row(v), false);
                    }
                }
                for (v, r) in values.iter().zip(&retracted) {
                    if *r {
                        c.accumulate(&mut all, &row(v), true);
                    }
                }
                prop_assert_eq!(c.result(&all), c.result(&kept), "{:?} distinct={}", func, distinct);
            }
        }

        /// Over an input that never retracts, `MIN` and `MAX` with one best value give what the
        /// multiset gives, and so do two such accumulators merged (sessions that grew
        /// together).
        #[test]
        fn extremes_without_retraction_match_the_multiset(
            values in proptest::collection::vec(proptest::option::of(-50i64..50), 0..30),
            split in 0usize..30,
        ) {
            for func in [AggFunc::Min, AggFunc::Max] {
                let c = call(func, false, DataType::BigInt);
                let row = |v: &Option<i64>| vec![v.map_or(Value::Null, Value::BigInt)];
                let mut multiset = c.create();
                let (mut first, mut second) = (c.create_append_only(), c.create_append_only());
                prop_assert!(matches!(first, Accumulator::Extreme(None)));
                for (i, v) in values.iter().enumerate() {
                    c.accumulate(&mut multiset, &row(v), false);
                    let part = if i < split { &mut first } else { &mut second };
                    c.accumulate(part, &row(v), false);
                }
                c.merge(&mut first, second);
                prop_assert_eq!(c.result(&first), c.result(&multiset), "{:?}", func);
            }
        }

        /// The results equal a direct computation over the values.
        #[test]
        fn results_match_a_direct_computation(values in proptest::collection::vec(-1000i64..1000, 1..30)) {
            let run = |func, distinct| {
                let c = call(func, distinct, DataType::BigInt);
                let mut acc = c.create();
                for v in &values {
                    c.accumulate(&mut acc, &[Value::BigInt(*v)], false);
                }
                c.result(&acc)
            };
            let sum: i64 = values.iter().sum();
            let distinct: std::collections::BTreeSet<_> = values.iter().collect();
            prop_assert_eq!(run(AggFunc::Count, false), Value::BigInt(values.len() as i64));
            prop_assert_eq!(run(AggFunc::Count, true), Value::BigInt(distinct.len() as i64));
            prop_assert_eq!(run(AggFunc::Sum, false), Value::BigInt(sum));
            prop_assert_eq!(run(AggFunc::Avg, false), Value::BigInt(sum / values.len() as i64));
            prop_assert_eq!(run(AggFunc::Min, false), Value::BigInt(*values.iter().min().unwrap()));
            prop_assert_eq!(run(AggFunc::Max, false), Value::BigInt(*values.iter().max().unwrap()));
        }
    }

    proptest! {
        /// The append-only `MIN` and `MAX` (one value) give the multiset's results, also
        /// after merging (session windows).
        #[test]
        fn append_only_extremes_equal_the_multiset(
            values in proptest::collection::vec(proptest::option::of(-50i64..50), 0..30),
            split in 0usize..30,
        ) {
            for func in [AggFunc::Min, AggFunc::Max] {
                let c = call(func, false, DataType::BigInt);
                let row = |v: &Option<i64>| vec![v.map_or(Value::Null, Value::BigInt)];
                let split = split.min(values.len());
                let (mut multiset, mut extreme) = (c.create(), c.create_append_only());
                let mut other = c.create_append_only();
                for v in &values {
                    c.accumulate(&mut multiset, &row(v), false);
                }
                for v in &values[..split] {
                    c.accumulate(&mut extreme, &row(v), false);
                }
                for v in &values[split..] {
                    c.accumulate(&mut other, &row(v), false);
                }
                c.merge(&mut extreme, other);
                prop_assert!(matches!(extreme, Accumulator::Extreme(_)));
                prop_assert_eq!(c.result(&extreme), c.result(&multiset), "{:?}", func);
            }
        }
    }

    #[test]
    fn a_multiset_from_older_state_merges_into_one_value() {
        for (func, expected) in [(AggFunc::Min, 2), (AggFunc::Max, 9)] {
            let c = call(func, false, DataType::BigInt);
            let mut old = c.create();
            for v in [5, 2, 9] {
                c.accumulate(&mut old, &[Value::BigInt(v)], false);
            }
            let mut new = c.create_append_only();
            c.accumulate(&mut new, &[Value::BigInt(4)], false);
            let mut a = old.clone();
            c.merge(&mut a, new.clone());
            assert_eq!(
                c.result(&a),
                Value::BigInt(expected),
                "{func:?}: old into new"
            );
            assert!(matches!(a, Accumulator::Extreme(_)));
            let mut b = new;
            c.merge(&mut b, old);
            assert_eq!(
                c.result(&b),
                Value::BigInt(expected),
                "{func:?}: new into old"
            );
        }
    }

    #[test]
    fn nulls_are_skipped_and_empty_sums_are_null() {
        let c = call(AggFunc::Sum, false, DataType::Double);
        let mut acc = c.create();
        c.accumulate(&mut acc, &[Value::Null], false);
        assert_eq!(c.result(&acc), Value::Null);
        c.accumulate(&mut acc, &[Value::Double(1.5)], false);
        assert_eq!(c.result(&acc), Value::Double(1.5));
        let count_star = AggCall {
            func: AggFunc::Count,
            distinct: false,
            arg: None,
            result_type: DataType::BigInt,
        };
        let mut acc = count_star.create();
        count_star.accumulate(&mut acc, &[Value::Null], false);
        assert_eq!(count_star.result(&acc), Value::BigInt(1));
    }
}
