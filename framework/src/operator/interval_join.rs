//! The interval join (Flink's `IntervalJoinOperator`).
//!
//! `left.key_by(k).interval_join(right.key_by(k)).between(lower, upper)` joins each left element
//! at `t` with every right element of the same key at `t + lower ..= t + upper` (bounds can be
//! made exclusive). Both sides are buffered per key and timestamp; an element is removed when the
//! watermark passes the last time a partner could still arrive (Flink's cleanup timers). A pair's
//! result carries the larger of the two timestamps. An element older than the watermark is late:
//! it is counted (`late_records`) and not joined, as in Flink.

use std::collections::BTreeMap;

use super::co::TwoInputOperator;
use super::{Collector, FunctionError, OperatorContext, Record};
use crate::api::functions::{JoinContext, ProcessJoinFunction};
use crate::time::{TimerService, Watermark};

/// Which buffer a cleanup timer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum JoinSide {
    Left,
    Right,
}

/// The interval join operator.
pub(crate) struct IntervalJoinOperator<K, A, B, KS1, KS2, F> {
    lower_ms: i64,
    upper_ms: i64,
    key_left: KS1,
    key_right: KS2,
    function: F,
    left: BTreeMap<K, BTreeMap<i64, Vec<A>>>,
    right: BTreeMap<K, BTreeMap<i64, Vec<B>>>,
    timers: TimerService<K, JoinSide>,
    watermark: i64,
}

impl<K: Ord + Clone, A, B, KS1: Clone, KS2: Clone, F: Clone> Clone
    for IntervalJoinOperator<K, A, B, KS1, KS2, F>
{
    fn clone(&self) -> Self {
        Self::new(
            self.lower_ms,
            self.upper_ms,
            self.key_left.clone(),
            self.key_right.clone(),
            self.function.clone(),
        )
    }
}

impl<K: Ord + Clone, A, B, KS1, KS2, F> IntervalJoinOperator<K, A, B, KS1, KS2, F> {
    /// `lower_ms..=upper_ms`, inclusive (exclusive bounds are adjusted by the caller).
    pub(crate) fn new(
        lower_ms: i64,
        upper_ms: i64,
        key_left: KS1,
        key_right: KS2,
        function: F,
    ) -> Self {
        Self {
            lower_ms,
            upper_ms,
            key_left,
            key_right,
            function,
            left: BTreeMap::new(),
            right: BTreeMap::new(),
            timers: TimerService::new(),
            watermark: i64::MIN,
        }
    }

    /// The timestamp of an element, or a failure for one without (event time is required).
    fn timestamp_of(record_timestamp: Option<i64>, ctx: &mut OperatorContext<'_>) -> Option<i64> {
        if record_timestamp.is_none() {
            ctx.fail("interval join: a record has no timestamp; assign timestamps before joining");
        }
        record_timestamp
    }
}

fn buffer<K: Ord + Clone, V>(
    buffers: &mut BTreeMap<K, BTreeMap<i64, Vec<V>>>,
    key: &K,
    timestamp: i64,
    value: V,
) {
    buffers
        .entry(key.clone())
        .or_default()
        .entry(timestamp)
        .or_default()
        .push(value);
}

fn remove<K: Ord, V>(buffers: &mut BTreeMap<K, BTreeMap<i64, Vec<V>>>, key: &K, timestamp: i64) {
    if let Some(per_key) = buffers.get_mut(key) {
        per_key.remove(&timestamp);
        if per_key.is_empty() {
            buffers.remove(key);
        }
    }
}

impl<K, A, B, KS1, KS2, F> TwoInputOperator<A, B> for IntervalJoinOperator<K, A, B, KS1, KS2, F>
where
    K: Ord + Clone + Send + 'static,
    A: Clone + Send + 'static,
    B: Clone + Send + 'static,
    KS1: Fn(&A) -> K + Clone + Send + 'static,
    KS2: Fn(&B) -> K + Clone + Send + 'static,
    F: ProcessJoinFunction<A, B>,
    F::Out: Send + 'static,
{
    type Out = F::Out;

    fn process1(
        &mut self,
        record: Record<A>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let Some(ts) = Self::timestamp_of(record.timestamp, ctx) else {
            return;
        };
        if ts < self.watermark {
            ctx.count_late_record();
            return;
        }
        let key = (self.key_left)(&record.value);
        if let Some(candidates) = self.right.get(&key) {
            let from = ts.saturating_add(self.lower_ms);
            let to = ts.saturating_add(self.upper_ms);
            for (&right_ts, rights) in candidates.range(from..=to) {
                let join = JoinContext {
                    left_timestamp: ts,
                    right_timestamp: right_ts,
                };
                for right in rights {
                    out.set_timestamp(Some(join.timestamp()));
                    self.function
                        .process_element(record.value.clone(), right.clone(), &join, out);
                }
            }
        }
        let cleanup = if self.upper_ms > 0 {
            ts.saturating_add(self.upper_ms)
        } else {
            ts
        };
        self.timers
            .register_event_time_timer(key.clone(), JoinSide::Left, cleanup);
        buffer(&mut self.left, &key, ts, record.value);
    }

    fn process2(
        &mut self,
        record: Record<B>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, F::Out>,
    ) {
        let Some(ts) = Self::timestamp_of(record.timestamp, ctx) else {
            return;
        };
        if ts < self.watermark {
            ctx.count_late_record();
            return;
        }
        let key = (self.key_right)(&record.value);
        if let Some(candidates) = self.left.get(&key) {
            let from = ts.saturating_sub(self.upper_ms);
            let to = ts.saturating_sub(self.lower_ms);
            for (&left_ts, lefts) in candidates.range(from..=to) {
                let join = JoinContext {
                    left_timestamp: left_ts,
                    right_timestamp: ts,
                };
                for left in lefts {
                    out.set_timestamp(Some(join.timestamp()));
                    self.function
                        .process_element(left.clone(), record.value.clone(), &join, out);
                }
            }
        }
        // For the right side the bounds are mirrored: a left partner can come up to -lower later.
        let cleanup = if self.lower_ms < 0 {
            ts.saturating_sub(self.lower_ms)
        } else {
            ts
        };
        self.timers
            .register_event_time_timer(key.clone(), JoinSide::Right, cleanup);
        buffer(&mut self.right, &key, ts, record.value);
    }

    fn on_watermark(
        &mut self,
        watermark: Watermark,
        _ctx: &mut OperatorContext<'_>,
        _out: &mut Collector<'_, F::Out>,
    ) {
        self.watermark = self.watermark.max(watermark.timestamp);
        while let Some(timer) = self.timers.pop_event_time_timer(self.watermark) {
            match timer.namespace {
                JoinSide::Left => {
                    let ts = if self.upper_ms > 0 {
                        timer.timestamp - self.upper_ms
                    } else {
                        timer.timestamp
                    };
                    remove(&mut self.left, &timer.key, ts);
                }
                JoinSide::Right => {
                    let ts = if self.lower_ms < 0 {
                        timer.timestamp + self.lower_ms
                    } else {
                        timer.timestamp
                    };
                    remove(&mut self.right, &timer.key, ts);
                }
            }
        }
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        Ok(())
    }
}
