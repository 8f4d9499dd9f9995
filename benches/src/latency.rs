//! The latency benchmark's pieces: a source that emits at a fixed rate and stamps each event
//! with the time it was *scheduled* for, jobs that carry the stamp to the sink, and a sink that
//! records how late each result arrived.
//!
//! Latency is measured from the scheduled time, not from when the source got round to emitting
//! the event: a source that falls behind makes the latency grow instead of hiding it (the
//! "coordinated omission" of load generators that measure from the send time). For a rolling
//! count every event gives a result, timed from its event. A tumbling window's result is timed
//! from the end of its window (the earliest moment it could be complete; event time here is the
//! scheduled time), so its latency is the wait for the watermark, the firing and the delivery.

use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eichhorn::api::{SinkContext, SinkFunction, SourceContext, SourceFunction, SourcePoll};
use eichhorn::operator::window::{TimeDomain, WindowAssigner};
use eichhorn::prelude::*;

/// An event with the time it was scheduled for, in ns since the benchmark's origin.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Stamped {
    /// The key.
    pub key: u64,
    /// How many events this result counts (1 for an event).
    pub count: u64,
    /// Scheduled time, ns since the origin (for a result: the newest of its events).
    pub scheduled_ns: u64,
}

/// Emits `rate` events per second (over all its parallel instances) for `duration`, each
/// stamped with its scheduled time.
#[derive(Debug, Clone)]
pub struct PacedSource {
    origin: Instant,
    rate: u64,
    duration: Duration,
    keys: NonZeroU64,
    /// This instance's index and the number of instances, set at open.
    index: u64,
    instances: u64,
    emitted: u64,
}

impl Operator for PacedSource {}
impl Unkeyed for PacedSource {}

impl PacedSource {
    /// A source of `rate` events per second for `duration`, over `keys` keys, timed from
    /// `origin`.
    pub fn new(origin: Instant, rate: u64, duration: Duration, keys: NonZeroU64) -> Self {
        Self {
            origin,
            rate: rate.max(1),
            duration,
            keys,
            index: 0,
            instances: 1,
            emitted: 0,
        }
    }

    /// This instance's `n`-th event (from 0) is event `n * instances + index` of the whole
    /// stream, scheduled at that number over the rate.
    fn scheduled_ns(&self, n: u64) -> u64 {
        let global = n * self.instances + self.index;
        (u128::from(global) * 1_000_000_000 / u128::from(self.rate)) as u64
    }
}

impl SourceFunction<Stamped> for PacedSource {
    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.index = u64::from(ctx.subtask_index);
        self.instances = u64::from(ctx.parallelism.max(1));
        Ok(())
    }

    fn is_parallel(&self) -> bool {
        true
    }

    fn poll_next(
        &mut self,
        ctx: &mut SourceContext<'_, Stamped>,
    ) -> Result<SourcePoll, FunctionError> {
        let now_ns = self.origin.elapsed().as_nanos() as u64;
        let end_ns = self.duration.as_nanos() as u64;
        loop {
            let at = self.scheduled_ns(self.emitted);
            if at >= end_ns {
                return Ok(SourcePoll::Finished);
            }
            if at > now_ns {
                return Ok(SourcePoll::Idle);
            }
            if ctx.remaining() == 0 {
                return Ok(SourcePoll::MoreAvailable);
            }
            let global = self.emitted * self.instances + self.index;
            ctx.collect_with_timestamp(
                Stamped {
                    key: crate::splitmix64(global) % self.keys.get(),
                    count: 1,
                    scheduled_ns: at,
                },
                (at / 1_000_000) as i64,
            );
            self.emitted += 1;
        }
    }
}

fn merge(a: Stamped, b: Stamped) -> Stamped {
    Stamped {
        key: a.key,
        count: a.count + b.count,
        scheduled_ns: a.scheduled_ns.max(b.scheduled_ns),
    }
}

/// The rolling count: per key, the running count, one result per event.
pub fn rolling(stream: DataStream<Stamped>) -> DataStream<Stamped> {
    stream.key_by(|e: &Stamped| e.key).reduce(merge)
}

/// Counts per key in tumbling event-time windows of `size_ms` (event time: the scheduled time),
/// with watermarks that trail the newest event by nothing.
pub fn tumbling(stream: DataStream<Stamped>, size_ms: i64) -> DataStream<Stamped> {
    stream
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(0)
                .with_timestamp_assigner(|e: &Stamped, _| (e.scheduled_ns / 1_000_000) as i64),
        )
        .key_by(|e: &Stamped| e.key)
        .window(
            WindowAssigner::tumbling(TimeDomain::EventTime, size_ms, 0).expect("a positive size"),
        )
        .reduce(merge)
}

/// Records each result's latency (µs from its reference time to its arrival), skipping results
/// scheduled before `warmup`. The reference time is the result's scheduled time, or, for
/// window results, the end of its window.
#[derive(Debug, Clone)]
pub struct LatencySink {
    origin: Instant,
    warmup_ns: u64,
    /// For window results: the window size in ns (the reference is the window's end).
    window_ns: Option<u64>,
    latencies: Arc<Mutex<Vec<u32>>>,
    local: Vec<u32>,
}

impl Operator for LatencySink {}
impl Unkeyed for LatencySink {}

impl LatencySink {
    /// A sink timing from `origin`, ignoring results scheduled in the first `warmup`.
    pub fn new(origin: Instant, warmup: Duration) -> Self {
        Self {
            origin,
            warmup_ns: warmup.as_nanos() as u64,
            window_ns: None,
            latencies: Arc::new(Mutex::new(Vec::new())),
            local: Vec::new(),
        }
    }

    /// This sink for the results of tumbling windows of `size_ms`: timed from their window's
    /// end.
    pub fn for_windows(mut self, size_ms: u64) -> Self {
        self.window_ns = Some(size_ms.max(1) * 1_000_000);
        self
    }

    /// The time a result is timed from.
    fn reference_ns(&self, value: &Stamped) -> u64 {
        match self.window_ns {
            Some(size) => (value.scheduled_ns / size + 1) * size,
            None => value.scheduled_ns,
        }
    }

    /// Every latency recorded, in µs, sorted.
    pub fn sorted_latencies(&self) -> Vec<u32> {
        let mut all = self
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        all.sort_unstable();
        all
    }
}

impl SinkFunction<Stamped> for LatencySink {
    fn invoke(&mut self, value: Stamped, _ctx: &SinkContext) -> Result<(), FunctionError> {
        if value.scheduled_ns < self.warmup_ns {
            return Ok(());
        }
        let now_ns = self.origin.elapsed().as_nanos() as u64;
        let micros = now_ns.saturating_sub(self.reference_ns(&value)) / 1_000;
        self.local.push(u32::try_from(micros).unwrap_or(u32::MAX));
        if self.local.len() >= 4_096 {
            self.flush_local();
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        self.flush_local();
        Ok(())
    }
}

impl LatencySink {
    fn flush_local(&mut self) {
        self.latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .append(&mut self.local);
    }
}

/// The `q`-quantile (0..=1) of sorted values, by the nearest-rank method; 0 when empty.
pub fn quantile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let values: Vec<u32> = (1..=1000).collect();
        assert_eq!(quantile(&values, 0.5), 500);
        assert_eq!(quantile(&values, 0.99), 990);
        assert_eq!(quantile(&values, 0.999), 999);
        assert_eq!(quantile(&values, 1.0), 1000);
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(quantile(&[7], 0.999), 7);
    }

    #[test]
    fn window_results_are_timed_from_the_window_end() {
        let sink = LatencySink::new(Instant::now(), Duration::ZERO).for_windows(500);
        let result = Stamped {
            key: 0,
            count: 3,
            scheduled_ns: 1_234_000_000,
        };
        assert_eq!(sink.reference_ns(&result), 1_500_000_000);
        let plain = LatencySink::new(Instant::now(), Duration::ZERO);
        assert_eq!(plain.reference_ns(&result), 1_234_000_000);
    }

    #[test]
    fn instances_share_the_schedule_without_overlap() {
        let origin = Instant::now();
        let keys = NonZeroU64::new(10).unwrap();
        let mut a = PacedSource::new(origin, 1_000, Duration::from_secs(1), keys);
        let mut b = a.clone();
        (a.index, a.instances) = (0, 2);
        (b.index, b.instances) = (1, 2);
        let mut all: Vec<u64> = (0..500)
            .flat_map(|n| [a.scheduled_ns(n), b.scheduled_ns(n)])
            .collect();
        all.sort_unstable();
        let expected: Vec<u64> = (0..1_000u64).map(|i| i * 1_000_000).collect();
        assert_eq!(all, expected, "every ms one event, none twice");
    }
}
