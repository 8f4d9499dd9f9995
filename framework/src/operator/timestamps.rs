//! The timestamp and watermark assigner (Flink's `TimestampsAndWatermarksOperator`).
//!
//! Gives each record its event-time timestamp, feeds the watermark generator, and emits the
//! generator's watermarks when they advance: after events (punctuated generators) and every
//! `auto_watermark_interval_ms` of processing time (periodic generators). Watermarks from upstream
//! are replaced by its own, except the final `Watermark::MAX` of a bounded input, which it passes
//! on. With an idleness timeout it declares the stream idle after that much processing time
//! without records, and active again with the next record.
//!
//! ## Design
//!
//! This operator runs once per record of every event-time source, so its record path is kept
//! small: the built-in bounded out-of-orderness generator (periodic, or after every event) is
//! held by value in [`Generator`] rather than behind a trait object. For the common case (an
//! active stream, an assigner and the periodic generator) `process_run` handles a whole run in
//! one loop, where a record costs the assigner's call and a maximum; everything else goes record
//! by record through `process`, and other generators are called through their trait object,
//! exactly as before. Either way the generator sees the same timestamps in the same order and
//! the same watermarks come out.

use super::chain::{Collector, OneInputOperator, OperatorContext, RunContext};
use crate::exchange::{Control, Record};
use crate::time::{
    BoundedOutOfOrderness, Watermark, WatermarkGenerator, WatermarkOutput, WatermarkStatus,
    WatermarkStrategy,
};

/// The watermark generator of one parallel instance.
enum Generator<T> {
    /// The built-in periodic generator: a record only raises the maximum timestamp.
    Periodic(BoundedOutOfOrderness),
    /// The built-in generator emitting after every event as well (`EveryEvent`).
    EveryEvent(BoundedOutOfOrderness),
    /// Any other generator, called through its trait object.
    Custom(Box<dyn WatermarkGenerator<T>>),
}

impl<T: 'static> Generator<T> {
    fn for_strategy(strategy: &WatermarkStrategy<T>) -> Self {
        match &strategy.builtin {
            Some((generator, false)) => Self::Periodic(generator.clone()),
            Some((generator, true)) => Self::EveryEvent(generator.clone()),
            None => Self::Custom((strategy.generator)()),
        }
    }
}

/// Assigns timestamps and generates watermarks per a [`WatermarkStrategy`].
pub(crate) struct TimestampsAndWatermarks<T> {
    strategy: WatermarkStrategy<T>,
    generator: Generator<T>,
    interval_ms: i64,
    /// The last watermark emitted.
    emitted: Watermark,
    idle: bool,
    last_record_ms: Option<i64>,
    /// Where a [`Generator::Custom`] generator emits.
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
            generator: Generator::for_strategy(&strategy),
            strategy,
            interval_ms,
            emitted: Watermark::MIN,
            idle: false,
            last_record_ms: None,
            output: WatermarkOutput::default(),
        }
    }

    /// The event-time timestamp of `record`, which passes the operator at `now_ms`.
    #[inline]
    fn timestamp_of(&self, record: &Record<T>, now_ms: i64) -> i64 {
        if self.strategy.ingestion_time {
            return now_ms;
        }
        match &self.strategy.timestamp_assigner {
            Some(assigner) => assigner(&record.value, record.timestamp),
            // As in Flink: a record without timestamp and without assigner has the smallest
            // timestamp.
            None => record.timestamp.unwrap_or(i64::MIN),
        }
    }

    /// Emits `watermark` if it advances event time.
    #[inline]
    fn emit_if_later<O>(&mut self, watermark: Watermark, out: &mut Collector<'_, O>) {
        if watermark > self.emitted {
            self.emitted = watermark;
            out.emit_control(Control::Watermark(watermark));
        }
    }

    /// Emits what a [`Generator::Custom`] generator put in `output`, if it advances event time.
    fn emit_if_advanced<O>(&mut self, out: &mut Collector<'_, O>) {
        if let Some(watermark) = self.output.take() {
            self.emit_if_later(watermark, out);
        }
    }

    /// Feeds a record to a [`Generator::Custom`] generator and emits the record and what the
    /// generator emitted. Out of line: the built-in generators keep the record loop small.
    #[inline(never)]
    fn process_custom(&mut self, record: Record<T>, timestamp: i64, out: &mut Collector<'_, T>) {
        if let Generator::Custom(generator) = &mut self.generator {
            generator.on_event(&record.value, timestamp, &mut self.output);
        }
        out.collect_with_timestamp(record.value, timestamp);
        self.emit_if_advanced(out);
    }

    /// The generator's periodic emission.
    fn periodic_emit(&mut self, out: &mut Collector<'_, T>) {
        match &mut self.generator {
            Generator::Periodic(generator) | Generator::EveryEvent(generator) => {
                let watermark = generator.current_watermark();
                self.emit_if_later(watermark, out);
            }
            Generator::Custom(generator) => {
                generator.on_periodic_emit(&mut self.output);
                self.emit_if_advanced(out);
            }
        }
    }
}

impl<T: Send + 'static> OneInputOperator<T> for TimestampsAndWatermarks<T> {
    type Out = T;

    #[inline]
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
        let timestamp = self.timestamp_of(&record, now_ms);
        // The record goes out before the watermarks it causes, whichever the generator.
        match &mut self.generator {
            Generator::Periodic(generator) => {
                generator.observe(timestamp);
                out.collect_with_timestamp(record.value, timestamp);
            }
            Generator::EveryEvent(generator) => {
                generator.observe(timestamp);
                let watermark = generator.current_watermark();
                out.collect_with_timestamp(record.value, timestamp);
                self.emit_if_later(watermark, out);
            }
            Generator::Custom(_) => self.process_custom(record, timestamp, out),
        }
    }

    /// The common case in one loop: an active stream, timestamps from the assigner and a
    /// periodic built-in generator, so that a record costs the assigner's call and a maximum.
    /// Anything else goes through [`process`](Self::process), record by record.
    #[inline]
    fn process_run(&mut self, records: Vec<Record<T>>, run: &mut RunContext<'_, '_, T>) {
        let plain = !self.idle && !self.strategy.ingestion_time;
        if let (true, Generator::Periodic(generator), Some(assigner)) = (
            plain,
            &mut self.generator,
            &self.strategy.timestamp_assigner,
        ) {
            if !records.is_empty() {
                self.last_record_ms = Some(run.context().current_processing_time());
            }
            for record in records {
                let timestamp = assigner(&record.value, record.timestamp);
                generator.observe(timestamp);
                run.process_with(record, |record, _ctx, out| {
                    out.collect_with_timestamp(record.value, timestamp);
                });
            }
            return;
        }
        for record in records {
            run.process_with(record, |record, ctx, out| self.process(record, ctx, out));
        }
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
            self.periodic_emit(out);
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

    /// Runs `strategy` (timestamps from the values) over out-of-order runs, with processing
    /// time advancing between them, an idle phase and the end of input.
    fn drive(strategy: WatermarkStrategy<i64>) -> Vec<StreamElement<i64>> {
        let strategy = strategy
            .with_timestamp_assigner(|v: &i64, _| *v)
            .with_idleness(1_000);
        let mut h = Harness::new(TimestampsAndWatermarks::new(strategy, 200));
        h.advance_processing_time(0);
        let timestamps: Vec<i64> = (0..300).map(|i| (i * 37) % 101 + i * 3 - 50).collect();
        for (n, run) in timestamps.chunks(7).enumerate() {
            let now_ms = i64::try_from(n).expect("small") * 90;
            h.process(now_ms, records(run));
            h.advance_processing_time(now_ms + 45);
            if n == 20 {
                h.advance_processing_time(now_ms + 5_000);
            }
        }
        h.node.process_watermark(Watermark::MAX, &mut h.cx);
        h.take()
    }

    #[test]
    fn built_in_generators_match_themselves_behind_a_trait_object() {
        for bound in [0, 1, 17] {
            let builtin = WatermarkStrategy::for_bounded_out_of_orderness(bound);
            let operator = TimestampsAndWatermarks::new(builtin.clone(), 200);
            assert!(matches!(operator.generator, Generator::Periodic(_)));
            let custom =
                WatermarkStrategy::for_generator(move || BoundedOutOfOrderness::new(bound));
            let expected = drive(custom);
            assert!(expected.iter().any(|e| matches!(e, W(_))));
            assert_eq!(drive(builtin), expected, "periodic, bound {bound}");

            let builtin = WatermarkStrategy::for_bounded_out_of_orderness_every_event(bound);
            let operator = TimestampsAndWatermarks::new(builtin.clone(), 200);
            assert!(matches!(operator.generator, Generator::EveryEvent(_)));
            let custom = WatermarkStrategy::for_generator(move || {
                crate::time::EveryEvent(BoundedOutOfOrderness::new(bound))
            });
            assert_eq!(drive(builtin), drive(custom), "every event, bound {bound}");
        }
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
