//! Watermark strategies: how a stream gets its timestamps and watermarks (Flink's
//! `WatermarkStrategy`, `WatermarkGenerator`, `TimestampAssigner`).
//!
//! A strategy combines a timestamp assigner (which event time a record has), a watermark
//! generator (which watermarks follow from the records seen) and, optionally, an idleness
//! timeout. Generators are pure state machines: `on_event` for each record, `on_periodic_emit`
//! every `auto_watermark_interval_ms` of processing time; the timestamp operator drives them.

use std::sync::Arc;

use super::watermark::Watermark;

/// Where a generator puts the watermark it emits (Flink's `WatermarkOutput`).
#[derive(Debug, Default)]
pub struct WatermarkOutput {
    emitted: Option<Watermark>,
}

impl WatermarkOutput {
    /// Emits `watermark` (ignored downstream unless it advances event time).
    pub fn emit_watermark(&mut self, watermark: Watermark) {
        self.emitted = Some(self.emitted.map_or(watermark, |w| w.max(watermark)));
    }

    pub(crate) fn take(&mut self) -> Option<Watermark> {
        self.emitted.take()
    }
}

/// Generates watermarks from the events of one source split or subtask.
pub trait WatermarkGenerator<T>: Send + 'static {
    /// Called for every event, with the timestamp the assigner gave it. Punctuated generators
    /// emit here.
    fn on_event(&mut self, event: &T, timestamp: i64, output: &mut WatermarkOutput);
    /// Called every `auto_watermark_interval_ms` of processing time. Periodic generators emit
    /// here.
    fn on_periodic_emit(&mut self, output: &mut WatermarkOutput);
}

/// Watermarks that trail the largest timestamp seen by a fixed bound (Flink's
/// `BoundedOutOfOrdernessWatermarks`): `watermark = max_timestamp - out_of_orderness_ms - 1`.
#[derive(Debug, Clone)]
pub struct BoundedOutOfOrderness {
    max_timestamp: i64,
    out_of_orderness_ms: i64,
}

impl BoundedOutOfOrderness {
    /// A generator tolerating events up to `out_of_orderness_ms` late.
    pub fn new(out_of_orderness_ms: i64) -> Self {
        let out_of_orderness_ms = out_of_orderness_ms.max(0);
        Self {
            // As in Flink: the first periodic watermark before any event is i64::MIN.
            max_timestamp: i64::MIN
                .saturating_add(out_of_orderness_ms)
                .saturating_add(1),
            out_of_orderness_ms,
        }
    }

    fn current(&self) -> Watermark {
        Watermark::new(
            self.max_timestamp
                .saturating_sub(self.out_of_orderness_ms)
                .saturating_sub(1),
        )
    }
}

impl BoundedOutOfOrderness {
    /// Takes in the timestamp of an event (what [`WatermarkGenerator::on_event`] does, without
    /// the event): the timestamp operator calls this directly, inlined into its loop.
    #[inline]
    pub(crate) fn observe(&mut self, timestamp: i64) {
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    /// The watermark [`WatermarkGenerator::on_periodic_emit`] emits now.
    #[inline]
    pub(crate) fn current_watermark(&self) -> Watermark {
        self.current()
    }
}

impl<T> WatermarkGenerator<T> for BoundedOutOfOrderness {
    #[inline]
    fn on_event(&mut self, _event: &T, timestamp: i64, _output: &mut WatermarkOutput) {
        self.observe(timestamp);
    }

    fn on_periodic_emit(&mut self, output: &mut WatermarkOutput) {
        output.emit_watermark(self.current());
    }
}

/// Emits the inner generator's periodic watermark after every event as well: for tests and
/// examples whose results must not depend on processing time.
#[derive(Debug, Clone)]
pub struct EveryEvent<G>(pub G);

impl<T, G: WatermarkGenerator<T>> WatermarkGenerator<T> for EveryEvent<G> {
    fn on_event(&mut self, event: &T, timestamp: i64, output: &mut WatermarkOutput) {
        self.0.on_event(event, timestamp, output);
        self.0.on_periodic_emit(output);
    }

    fn on_periodic_emit(&mut self, output: &mut WatermarkOutput) {
        self.0.on_periodic_emit(output);
    }
}

/// Emits no watermark at all (event time never advances except at the end of input).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWatermarks;

impl<T> WatermarkGenerator<T> for NoWatermarks {
    fn on_event(&mut self, _event: &T, _timestamp: i64, _output: &mut WatermarkOutput) {}
    fn on_periodic_emit(&mut self, _output: &mut WatermarkOutput) {}
}

type GeneratorFactory<T> = Arc<dyn Fn() -> Box<dyn WatermarkGenerator<T>> + Send + Sync>;
type TimestampAssigner<T> = Arc<dyn Fn(&T, Option<i64>) -> i64 + Send + Sync>;

/// How a stream gets timestamps and watermarks (Flink's `WatermarkStrategy`).
///
/// # Examples
///
/// ```
/// use eichhorn::time::WatermarkStrategy;
///
/// // Events carry their time in milliseconds; up to 5 s out of order; a source partition that
/// // sends nothing for a minute stops holding event time back.
/// let strategy = WatermarkStrategy::<(String, i64)>::for_bounded_out_of_orderness(5_000)
///     .with_timestamp_assigner(|event, _| event.1)
///     .with_idleness(60_000);
/// # let _ = strategy;
/// ```
pub struct WatermarkStrategy<T> {
    pub(crate) generator: GeneratorFactory<T>,
    /// The generator `generator` creates when it is a built-in one: a fresh
    /// [`BoundedOutOfOrderness`] and whether it emits after every event as well
    /// ([`EveryEvent`]). The timestamp operator then runs it inline, without a dynamic call per
    /// record; `None` for any other generator.
    pub(crate) builtin: Option<(BoundedOutOfOrderness, bool)>,
    pub(crate) timestamp_assigner: Option<TimestampAssigner<T>>,
    pub(crate) idleness_ms: Option<i64>,
    pub(crate) ingestion_time: bool,
}

impl<T> Clone for WatermarkStrategy<T> {
    fn clone(&self) -> Self {
        Self {
            generator: self.generator.clone(),
            builtin: self.builtin.clone(),
            timestamp_assigner: self.timestamp_assigner.clone(),
            idleness_ms: self.idleness_ms,
            ingestion_time: self.ingestion_time,
        }
    }
}

impl<T> std::fmt::Debug for WatermarkStrategy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatermarkStrategy")
            .field("idleness_ms", &self.idleness_ms)
            .field("ingestion_time", &self.ingestion_time)
            .finish()
    }
}

impl<T: 'static> WatermarkStrategy<T> {
    /// A strategy with a custom generator, created once per parallel instance.
    pub fn for_generator<G, F>(factory: F) -> Self
    where
        G: WatermarkGenerator<T>,
        F: Fn() -> G + Send + Sync + 'static,
    {
        Self {
            generator: Arc::new(move || Box::new(factory())),
            builtin: None,
            timestamp_assigner: None,
            idleness_ms: None,
            ingestion_time: false,
        }
    }

    /// Periodic watermarks `max_timestamp - out_of_orderness_ms - 1` (Flink's
    /// `forBoundedOutOfOrderness`).
    pub fn for_bounded_out_of_orderness(out_of_orderness_ms: i64) -> Self {
        let mut strategy =
            Self::for_generator(move || BoundedOutOfOrderness::new(out_of_orderness_ms));
        strategy.builtin = Some((BoundedOutOfOrderness::new(out_of_orderness_ms), false));
        strategy
    }

    /// Periodic watermarks for ascending timestamps: `max_timestamp - 1` (Flink's
    /// `forMonotonousTimestamps`).
    pub fn for_monotonous_timestamps() -> Self {
        Self::for_bounded_out_of_orderness(0)
    }

    /// Bounded out-of-orderness watermarks emitted after every event as well as periodically:
    /// results then depend only on the data, not on processing time.
    pub fn for_bounded_out_of_orderness_every_event(out_of_orderness_ms: i64) -> Self {
        let mut strategy = Self::for_generator(move || {
            EveryEvent(BoundedOutOfOrderness::new(out_of_orderness_ms))
        });
        strategy.builtin = Some((BoundedOutOfOrderness::new(out_of_orderness_ms), true));
        strategy
    }

    /// No watermarks (Flink's `noWatermarks`).
    pub fn no_watermarks() -> Self {
        Self::for_generator(|| NoWatermarks)
    }

    /// Ingestion time: each record's timestamp is the processing time at which it passes the
    /// assigner, and watermarks follow it (Flink's `IngestionTimeWatermarkStrategy`).
    pub fn ingestion_time() -> Self {
        let mut strategy = Self::for_monotonous_timestamps();
        strategy.ingestion_time = true;
        strategy
    }

    /// Takes each record's timestamp from `assigner(record, previous_timestamp)`.
    pub fn with_timestamp_assigner<F>(mut self, assigner: F) -> Self
    where
        F: Fn(&T, Option<i64>) -> i64 + Send + Sync + 'static,
    {
        self.timestamp_assigner = Some(Arc::new(assigner));
        self
    }

    /// Marks the stream idle after `timeout_ms` of processing time without records, so it does
    /// not hold back the watermark downstream (Flink's `withIdleness`).
    pub fn with_idleness(mut self, timeout_ms: i64) -> Self {
        self.idleness_ms = Some(timeout_ms);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_out_of_orderness_follows_flink() {
        let mut g = BoundedOutOfOrderness::new(5);
        let mut out = WatermarkOutput::default();
        WatermarkGenerator::<()>::on_periodic_emit(&mut g, &mut out);
        assert_eq!(out.take(), Some(Watermark::MIN));
        WatermarkGenerator::<()>::on_event(&mut g, &(), 100, &mut out);
        WatermarkGenerator::<()>::on_event(&mut g, &(), 90, &mut out);
        assert_eq!(out.take(), None, "periodic: nothing on events");
        WatermarkGenerator::<()>::on_periodic_emit(&mut g, &mut out);
        assert_eq!(out.take(), Some(Watermark::new(94)));
    }

    #[test]
    fn every_event_emits_after_each_event() {
        let mut g = EveryEvent(BoundedOutOfOrderness::new(0));
        let mut out = WatermarkOutput::default();
        WatermarkGenerator::<()>::on_event(&mut g, &(), 7, &mut out);
        assert_eq!(out.take(), Some(Watermark::new(6)));
    }
}
