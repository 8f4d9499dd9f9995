//! The timestamp and watermark assigner (Flink's `TimestampsAndWatermarksOperator`).
//!
//! Gives each record its event-time timestamp, feeds the watermark generator, and emits the
//! generator's watermarks when they advance: after events (punctuated generators) and every
//! `auto_watermark_interval_ms` of processing time (periodic generators). Watermarks from upstream
//! are replaced by its own, except the final `Watermark::MAX` of a bounded input, which it passes
//! on. With an idleness timeout it declares the stream idle after that much processing time
//! without records, and active again with the next record.

use super::chain::{Collector, OneInputOperator, OperatorContext};
use super::element::{Control, Record};
use crate::time::{
    Watermark, WatermarkGenerator, WatermarkOutput, WatermarkStatus, WatermarkStrategy,
};

/// Assigns timestamps and generates watermarks per a [`WatermarkStrategy`].
pub(crate) struct TimestampsAndWatermarks<T> {
    strategy: WatermarkStrategy<T>,
    generator: Box<dyn WatermarkGenerator<T>>,
    interval_ms: i64,
    /// The last watermark emitted.
    emitted: Watermark,
    idle: bool,
    last_record_ms: Option<i64>,
    output: WatermarkOutput,
}

impl<T: 'static> Clone for TimestampsAndWatermarks<T> {
    fn clone(&self) -> Self {
        Self::new(self.strategy.clone(), self.interval_ms)
    }
}

impl<T: 'static> TimestampsAndWatermarks<T> {
    pub(crate) fn new(strategy: WatermarkStrategy<T>, interval_ms: i64) -> Self {
        Self {
            generator: (strategy.generator)(),
            strategy,
            interval_ms,
            emitted: Watermark::MIN,
            idle: false,
            last_record_ms: None,
            output: WatermarkOutput::default(),
        }
    }

    fn emit_if_advanced<O>(&mut self, out: &mut Collector<'_, O>) {
        if let Some(watermark) = self.output.take()
            && watermark > self.emitted
        {
            self.emitted = watermark;
            out.emit_control(Control::Watermark(watermark));
        }
    }
}

impl<T: Send + 'static> OneInputOperator<T> for TimestampsAndWatermarks<T> {
    type Out = T;

    fn process(
        &mut self,
        record: Record<T>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, T>,
    ) {
        let now_ms = ctx.current_processing_time();
        self.last_record_ms = Some(now_ms);
        if self.idle {
            self.idle = false;
            out.emit_control(Control::WatermarkStatus(WatermarkStatus::Active));
        }
        let timestamp = if self.strategy.ingestion_time {
            now_ms
        } else {
            match &self.strategy.timestamp_assigner {
                Some(assigner) => assigner(&record.value, record.timestamp),
                // As in Flink: a record without timestamp and without assigner has the
                // smallest timestamp.
                None => record.timestamp.unwrap_or(i64::MIN),
            }
        };
        self.generator
            .on_event(&record.value, timestamp, &mut self.output);
        out.collect_with_timestamp(record.value, timestamp);
        self.emit_if_advanced(out);
    }

    fn forwards_watermarks(&self) -> bool {
        false
    }

    fn on_watermark(
        &mut self,
        watermark: Watermark,
        _ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, T>,
    ) {
        // Upstream event time is replaced by ours, except the end of a bounded input.
        if watermark == Watermark::MAX && self.emitted < Watermark::MAX {
            self.emitted = Watermark::MAX;
            out.emit_control(Control::Watermark(Watermark::MAX));
        }
    }

    fn on_processing_time(
        &mut self,
        now_ms: i64,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, T>,
    ) {
        let last_record_ms = *self.last_record_ms.get_or_insert(now_ms);
        if let Some(timeout_ms) = self.strategy.idleness_ms
            && !self.idle
            && now_ms.saturating_sub(last_record_ms) >= timeout_ms
        {
            self.idle = true;
            out.emit_control(Control::WatermarkStatus(WatermarkStatus::Idle));
        }
        if !self.idle && self.interval_ms > 0 {
            self.generator.on_periodic_emit(&mut self.output);
            self.emit_if_advanced(out);
        }
        let mut next_ms = i64::MAX;
        if self.interval_ms > 0 {
            next_ms = now_ms.saturating_add(self.interval_ms);
        }
        if let Some(timeout_ms) = self.strategy.idleness_ms
            && !self.idle
        {
            next_ms = next_ms.min(last_record_ms.saturating_add(timeout_ms).max(now_ms + 1));
        }
        if next_ms < i64::MAX {
            ctx.request_processing_time(next_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::Chained;
    use crate::operator::StreamElement::{self, Record as R, Watermark as W, WatermarkStatus as S};
    use crate::operator::testing::Harness;

    fn records(timestamps: &[i64]) -> Vec<Record<i64>> {
        timestamps.iter().map(|t| Record::new(*t)).collect()
    }

    fn stamped(value: i64) -> StreamElement<i64> {
        R(Record::with_timestamp(value, value))
    }

    #[test]
    fn every_event_watermarks_follow_each_record() {
        let strategy = WatermarkStrategy::for_bounded_out_of_orderness_every_event(10)
            .with_timestamp_assigner(|v: &i64, _| *v);
        let mut h = Harness::new(TimestampsAndWatermarks::new(strategy, 0));
        h.advance_processing_time(0);
        h.process(0, records(&[100, 90, 120]));
        assert_eq!(
            h.take(),
            vec![
                stamped(100),
                W(Watermark::new(89)),
                stamped(90),
                stamped(120),
                W(Watermark::new(109))
            ],
            "a late record does not emit a watermark that does not advance"
        );
    }

    #[test]
    fn periodic_watermarks_on_processing_time_and_max_passes() {
        let strategy = WatermarkStrategy::for_bounded_out_of_orderness(0)
            .with_timestamp_assigner(|v: &i64, _| *v);
        let mut h = Harness::new(TimestampsAndWatermarks::new(strategy, 200));
        h.advance_processing_time(0);
        assert_eq!(h.take(), vec![], "Watermark::MIN is not an advance");
        h.process(50, records(&[1_000, 1_500]));
        assert_eq!(h.take(), vec![stamped(1_000), stamped(1_500)]);
        assert_eq!(
            h.cx.wakeup_ms,
            Some(200),
            "next periodic emission requested"
        );
        h.advance_processing_time(200);
        assert_eq!(h.take(), vec![W(Watermark::new(1_499))]);
        // Upstream watermarks are replaced, except the end of input.
        h.node.process_watermark(Watermark::new(5_000), &mut h.cx);
        assert_eq!(h.take(), vec![]);
        h.node.process_watermark(Watermark::MAX, &mut h.cx);
        assert_eq!(h.take(), vec![W(Watermark::MAX)]);
    }

    #[test]
    fn idleness_after_timeout_and_active_again_with_a_record() {
        let strategy = WatermarkStrategy::for_bounded_out_of_orderness(0)
            .with_timestamp_assigner(|v: &i64, _| *v)
            .with_idleness(1_000);
        let mut h = Harness::new(TimestampsAndWatermarks::new(strategy, 200));
        h.advance_processing_time(0);
        h.process(100, records(&[7]));
        h.advance_processing_time(200);
        assert_eq!(h.take(), vec![stamped(7), W(Watermark::new(6))]);
        h.advance_processing_time(1_000);
        assert_eq!(h.take(), vec![], "900 ms without records: not idle yet");
        h.advance_processing_time(1_100);
        assert_eq!(h.take(), vec![S(crate::time::WatermarkStatus::Idle)]);
        h.process(1_150, records(&[9]));
        assert_eq!(
            h.take(),
            vec![S(crate::time::WatermarkStatus::Active), stamped(9)]
        );
    }

    #[test]
    fn ingestion_time_stamps_with_processing_time() {
        let mut h = Harness::new(TimestampsAndWatermarks::new(
            WatermarkStrategy::ingestion_time(),
            200,
        ));
        h.advance_processing_time(0);
        h.process(1_234, records(&[1]));
        assert_eq!(h.take(), vec![R(Record::with_timestamp(1, 1_234))]);
    }
}
