//! The synthetic benchmark workload: event generation and job builders shared by the
//! `synthetic` binary and its tests.
//!
//! The semantics are fixed, because the same jobs run on other engines (Flink) for comparison:
//!
//! - Event number `g` has the hash `h = splitmix64(g)` (the splitmix64 finalizer), the key
//!   `h % keys`, the event time `g / 100` milliseconds and the value `h % 10000`.
//! - Source subtask `j` of `p` emits `g = s * p + j` for `s = 0, 1, ...`, which is what
//!   [`StreamEnv::from_generator`] does.
//! - [`Job::Stateless`] maps `value * 908 / 1000` and keeps the events whose `key % 10 != 0`.
//! - [`Job::Rolling`] keys by `key` and emits the running count of the key, one output per input.
//! - [`Job::Tumbling`], [`Job::Sliding`] and [`Job::Session`] take the event time as timestamp,
//!   with monotonous watermarks (`WatermarkStrategy::for_monotonous_timestamps`) on the source
//!   stream, key by `key` and count the events of each event-time window: 1 s tumbling windows,
//!   10 s windows sliding every 1 s, and sessions with a 100 ms gap. Each window emits
//!   `(key, count)` with the window's `max_timestamp` as timestamp.
//! - [`Job::Timers`] computes the tumbling job's results with a keyed process function instead
//!   of the window operator ([`TimerCount`]): per event, one map-state update and an
//!   event-time timer at the end of its second; per timer, one emit. It measures keyed state
//!   plus the timer service (on the heap, or in LMDB with the LMDB backend).
//! - [`Job::Fanout`] is the rolling job with few input records and many outputs each: the source
//!   emits record `r` for `r = 0 .. ceil(events / k)`, a `flat_map` turns record `r` into events
//!   `r * k .. min((r + 1) * k, events)` (`k`: outputs per record, by default all events from one
//!   record), which are keyed and counted as in [`Job::Rolling`]. It is word count with `k` words
//!   per line, and keeps the cost of one record with millions of outputs visible (it was once
//!   quadratic in `k`).
//!
//! Timing is not done here: the binary measures around `StreamEnv::execute`.
//!
//! # Examples
//!
//! ```
//! use std::num::NonZeroU64;
//!
//! use eichhorn::prelude::*;
//! use eichhorn_benches::{Event, stateless};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = NonZeroU64::new(100).ok_or("zero keys")?;
//! let env = StreamEnv::new();
//! let kept = stateless(&env, 1_000, keys).collect_sink();
//! env.execute("stateless").await?;
//! assert_eq!(kept.len() as u64, eichhorn_benches::expected_stateless_count(1_000, keys));
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eichhorn::operator::window::{TimeDomain, WindowAssigner, WindowError};
use eichhorn::prelude::*;
use eichhorn::time::WatermarkStrategy;
use serde::{Deserialize, Serialize};

pub mod chart;
pub mod harness;
pub mod latency;
pub mod nexmark;

/// The name of the discarding sink, to find its metrics in the `JobResult`.
pub const DISCARD_SINK_NAME: &str = "Sink: Discard";

/// The window size of [`Job::Tumbling`].
pub const TUMBLING_SIZE_MS: i64 = 1_000;
/// The window size of [`Job::Sliding`].
pub const SLIDING_SIZE_MS: i64 = 10_000;
/// The slide of [`Job::Sliding`].
pub const SLIDING_SLIDE_MS: i64 = 1_000;
/// The session gap of [`Job::Session`].
pub const SESSION_GAP_MS: i64 = 100;

// Every event lies in `size / slide` sliding windows only if the slide divides the size.
const _: () = assert!(SLIDING_SIZE_MS % SLIDING_SLIDE_MS == 0);

/// What a window job emits per window: `(key, number of events)`.
pub type WindowCount = (u64, u64);

/// The splitmix64 finalizer (wrapping `u64` arithmetic): a bijective mix of all 64 bits.
///
/// # Examples
///
/// ```
/// assert_eq!(eichhorn_benches::splitmix64(0), 0);
/// assert_eq!(eichhorn_benches::splitmix64(1), 0x5692_161d_100b_05e5);
/// ```
#[inline]
pub fn splitmix64(g: u64) -> u64 {
    let mut z = g;
    z ^= z >> 30;
    z = z.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z ^= z >> 27;
    z = z.wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One synthetic event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `splitmix64(g) % keys`.
    pub key: u64,
    /// Event time in milliseconds: `g / 100` (100 events per millisecond).
    pub timestamp_ms: u64,
    /// `splitmix64(g) % 10000`.
    pub value: u64,
}

impl Event {
    /// Event number `g` of a workload with `keys` distinct keys.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::num::NonZeroU64;
    ///
    /// let keys = NonZeroU64::new(10).ok_or("zero keys")?;
    /// let event = eichhorn_benches::Event::from_index(250, keys);
    /// assert_eq!(event.timestamp_ms, 2);
    /// assert!(event.key < 10 && event.value < 10_000);
    /// # Ok::<(), &str>(())
    /// ```
    #[inline]
    pub fn from_index(g: u64, keys: NonZeroU64) -> Self {
        let h = splitmix64(g);
        Self {
            key: h % keys,
            timestamp_ms: g / 100,
            value: h % 10_000,
        }
    }
}

/// The benchmark jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Map the value, filter on the key: no state, no exchange.
    Stateless,
    /// Running count per key: a hash exchange and keyed state.
    Rolling,
    /// Count per key and 1 s event-time tumbling window.
    Tumbling,
    /// Count per key and 10 s event-time window, sliding every 1 s.
    Sliding,
    /// Count per key and event-time session (100 ms gap).
    Session,
    /// The tumbling job's counts from a keyed process function with event-time timers.
    Timers,
    /// The rolling count over events that come from few input records with many outputs each.
    Fanout,
}

impl Job {
    /// Every job, in the order of [`Job::name`]'s documentation.
    pub const ALL: [Self; 7] = [
        Self::Stateless,
        Self::Rolling,
        Self::Tumbling,
        Self::Sliding,
        Self::Session,
        Self::Timers,
        Self::Fanout,
    ];

    /// The name used on the command line and in the result line: `stateless`, `rolling`,
    /// `tumbling`, `sliding`, `session`, `timers` or `fanout`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stateless => "stateless",
            Self::Rolling => "rolling",
            Self::Tumbling => "tumbling",
            Self::Sliding => "sliding",
            Self::Session => "session",
            Self::Timers => "timers",
            Self::Fanout => "fanout",
        }
    }

    /// The number of records the sink must receive for `events` events over `keys` keys;
    /// `None` for [`Job::Session`], whose sessions depend on when watermarks arrive (two events
    /// exactly one gap apart are one session, unless a watermark between them closed the first).
    ///
    /// For the tumbling and sliding jobs this is a pass over all events.
    pub fn expected_sink_records(self, events: u64, keys: NonZeroU64) -> Option<u64> {
        match self {
            Self::Stateless => Some(expected_stateless_count(events, keys)),
            Self::Rolling | Self::Fanout => Some(events),
            Self::Tumbling | Self::Timers => Some(expected_window_count(
                events,
                keys,
                TUMBLING_SIZE_MS,
                TUMBLING_SIZE_MS,
            )),
            Self::Sliding => Some(expected_window_count(
                events,
                keys,
                SLIDING_SIZE_MS,
                SLIDING_SLIDE_MS,
            )),
            Self::Session => None,
        }
    }

    /// The sum of the counts the windows of a window job emit (`None` for the other jobs):
    /// every event is counted once per window it lies in, and at the end of the input the final
    /// watermark fires every window.
    pub fn expected_count_sum(self, events: u64) -> Option<u64> {
        let windows_per_event = match self {
            Self::Stateless | Self::Rolling | Self::Fanout => return None,
            Self::Tumbling | Self::Session | Self::Timers => 1,
            Self::Sliding => SLIDING_SIZE_MS / SLIDING_SLIDE_MS,
        };
        events.checked_mul(windows_per_event.unsigned_abs())
    }

    /// Whether the job ends in windows of `(key, count)` ([`WindowCount`]).
    pub fn is_windowed(self) -> bool {
        matches!(
            self,
            Self::Tumbling | Self::Sliding | Self::Session | Self::Timers
        )
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A job name that is not one of [`Job::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownJobError(pub String);

impl fmt::Display for UnknownJobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Job::ALL.iter().map(|job| job.name()).collect();
        write!(
            f,
            "unknown job '{}'; expected one of: {}",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownJobError {}

impl FromStr for Job {
    type Err = UnknownJobError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|job| job.name() == name)
            .ok_or_else(|| UnknownJobError(name.to_string()))
    }
}

/// The event source: events `0..events`, split over the environment's parallelism.
pub fn events_source(env: &StreamEnv, events: u64, keys: NonZeroU64) -> DataStream<Event> {
    env.from_generator(events, move |g| Event::from_index(g, keys))
}

/// Whether the stateless job keeps `event`.
#[inline]
pub fn stateless_keeps(event: &Event) -> bool {
    !event.key.is_multiple_of(10)
}

/// The stateless job up to (excluding) the sink: `value * 908 / 1000`, then `key % 10 != 0`.
pub fn stateless(env: &StreamEnv, events: u64, keys: NonZeroU64) -> DataStream<Event> {
    events_source(env, events, keys)
        .map(|event: Event| Event {
            value: event.value * 908 / 1000,
            ..event
        })
        .filter(stateless_keeps)
}

/// The rolling job up to (excluding) the sink: per input event one `(key, running count)`.
pub fn rolling(env: &StreamEnv, events: u64, keys: NonZeroU64) -> DataStream<(u64, u64)> {
    events_source(env, events, keys)
        .map(|event: Event| (event.key, 1u64))
        .key_by(|&(key, _): &(u64, u64)| key)
        .sum(|(_, count): &mut (u64, u64)| count)
}

/// The fanout job up to (excluding) the sink: `ceil(events / outputs_per_record)` input
/// records, each turned by a `flat_map` into up to `outputs_per_record` consecutive events
/// (`(key, 1)` pairs), then one `(key, running count)` per event as in [`rolling`].
pub fn fanout(
    env: &StreamEnv,
    events: u64,
    keys: NonZeroU64,
    outputs_per_record: NonZeroU64,
) -> DataStream<(u64, u64)> {
    let per_record = outputs_per_record.get();
    let records = events.div_ceil(per_record);
    env.from_generator(records, |r| r)
        .flat_map(move |r: u64| {
            let first = r.saturating_mul(per_record);
            let end = first.saturating_add(per_record).min(events);
            (first..end).map(move |g| (Event::from_index(g, keys).key, 1u64))
        })
        .key_by(|&(key, _): &(u64, u64)| key)
        .sum(|(_, count): &mut (u64, u64)| count)
}

/// The event time of `event` in milliseconds.
#[inline]
pub fn event_time_ms(event: &Event) -> i64 {
    // `g / 100` for a `u64` `g` is below `i64::MAX`.
    i64::try_from(event.timestamp_ms).unwrap_or(i64::MAX)
}

/// The event source with event-time timestamps and monotonous (periodic) watermarks.
pub fn timestamped_events(env: &StreamEnv, events: u64, keys: NonZeroU64) -> DataStream<Event> {
    events_source(env, events, keys).assign_timestamps_and_watermarks(
        WatermarkStrategy::for_monotonous_timestamps()
            .with_timestamp_assigner(|event: &Event, _| event_time_ms(event)),
    )
}

/// Counts events, keeping the key of the events counted: an [`AggregateFunction`] does not see
/// the window's key, so the key rides along in the accumulator `(key, count)`.
#[operator(new = false)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CountAggregate;

impl AggregateFunction<Event> for CountAggregate {
    type Acc = WindowCount;
    type Out = WindowCount;

    #[inline]
    fn create_accumulator(&mut self) -> WindowCount {
        (0, 0)
    }

    #[inline]
    fn add(&mut self, event: Event, (_, count): WindowCount) -> WindowCount {
        (event.key, count + 1)
    }

    #[inline]
    fn get_result(&mut self, accumulator: &WindowCount) -> WindowCount {
        *accumulator
    }

    #[inline]
    fn merge(&mut self, a: WindowCount, b: WindowCount) -> WindowCount {
        let key = if a.1 > 0 { a.0 } else { b.0 };
        (key, a.1 + b.1)
    }
}

/// A window job up to (excluding) the sink: count per key and window of `assigner`.
pub fn windowed_count(
    env: &StreamEnv,
    events: u64,
    keys: NonZeroU64,
    assigner: WindowAssigner,
) -> DataStream<WindowCount> {
    timestamped_events(env, events, keys)
        .key_by(|event: &Event| event.key)
        .window(assigner)
        .aggregate(CountAggregate)
}

/// The tumbling job up to (excluding) the sink: count per key and 1 s event-time window.
///
/// # Errors
///
/// None in practice: the window parameters are constants a window assigner accepts.
pub fn tumbling(
    env: &StreamEnv,
    events: u64,
    keys: NonZeroU64,
) -> Result<DataStream<WindowCount>, WindowError> {
    let assigner = WindowAssigner::tumbling(TimeDomain::EventTime, TUMBLING_SIZE_MS, 0)?;
    Ok(windowed_count(env, events, keys, assigner))
}

/// The sliding job up to (excluding) the sink: count per key and 10 s event-time window,
/// sliding every 1 s.
///
/// # Errors
///
/// None in practice: the window parameters are constants a window assigner accepts.
pub fn sliding(
    env: &StreamEnv,
    events: u64,
    keys: NonZeroU64,
) -> Result<DataStream<WindowCount>, WindowError> {
    let assigner =
        WindowAssigner::sliding(TimeDomain::EventTime, SLIDING_SIZE_MS, SLIDING_SLIDE_MS, 0)?;
    Ok(windowed_count(env, events, keys, assigner))
}

/// The session job up to (excluding) the sink: count per key and event-time session with a
/// 100 ms gap.
///
/// # Errors
///
/// None in practice: the gap is a constant a window assigner accepts.
pub fn session(
    env: &StreamEnv,
    events: u64,
    keys: NonZeroU64,
) -> Result<DataStream<WindowCount>, WindowError> {
    let assigner = WindowAssigner::session(TimeDomain::EventTime, SESSION_GAP_MS)?;
    Ok(windowed_count(env, events, keys, assigner))
}

/// The window job `job` up to (excluding) the sink; `None` for the jobs without windows.
///
/// # Errors
///
/// None in practice: the window parameters are constants a window assigner accepts.
pub fn windowed(
    job: Job,
    env: &StreamEnv,
    events: u64,
    keys: NonZeroU64,
) -> Result<Option<DataStream<WindowCount>>, WindowError> {
    Ok(Some(match job {
        Job::Stateless | Job::Rolling | Job::Fanout => return Ok(None),
        Job::Tumbling => tumbling(env, events, keys)?,
        Job::Sliding => sliding(env, events, keys)?,
        Job::Session => session(env, events, keys)?,
        Job::Timers => timer_counts(env, events, keys),
    }))
}

/// Counts events per key and second of event time with timers, as the tumbling job does with
/// windows: per event, one map-state update (window end -> count) and an event-time timer at
/// the end of the event's second (registered once per key and second: the timer service
/// deduplicates); the timer emits `(key, count)` with its timestamp and drops the count.
#[operator(uid = "timer-count")]
#[derive(Debug)]
pub struct TimerCount {
    /// Per window end (the last millisecond of a second), the events counted so far.
    #[state]
    counts: MapState<i64, u64>,
}

impl KeyedProcessFunction for TimerCount {
    type Key = u64;
    type In = Event;
    type Out = WindowCount;

    fn process_element(
        &mut self,
        _event: Event,
        ctx: &mut KeyedContext<'_, '_, u64>,
        _out: &mut Collector<'_, WindowCount>,
    ) {
        let time = ctx.timestamp().unwrap_or_default();
        let end = time - time.rem_euclid(TUMBLING_SIZE_MS) + TUMBLING_SIZE_MS - 1;
        let count = self.counts.get(ctx, &end).unwrap_or(0) + 1;
        self.counts.put(ctx, end, count);
        ctx.register_event_time_timer(end);
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut KeyedContext<'_, '_, u64>,
        out: &mut Collector<'_, WindowCount>,
    ) {
        if let Some(count) = self.counts.get(ctx, &timestamp) {
            self.counts.remove(ctx, &timestamp);
            out.collect((*ctx.current_key(), count));
        }
    }
}

/// The timers job up to (excluding) the sink: [`TimerCount`] over the timestamped events.
pub fn timer_counts(env: &StreamEnv, events: u64, keys: NonZeroU64) -> DataStream<WindowCount> {
    timestamped_events(env, events, keys)
        .key_by(|event: &Event| event.key)
        .process(TimerCount::new())
}

/// The number of windows of `size_ms`, sliding every `slide_ms` (which divides `size_ms`),
/// with at least one event, over all keys, by a plain loop (no framework involved).
///
/// Events come in time order, so per key it suffices to remember the last slide-sized pane seen:
/// an event in pane `p` lies in the windows starting in panes `p - size/slide + 1 ..= p`, of
/// which those after the last pane seen are new.
pub fn expected_window_count(events: u64, keys: NonZeroU64, size_ms: i64, slide_ms: i64) -> u64 {
    assert!(
        slide_ms > 0 && size_ms % slide_ms == 0,
        "the slide must divide the size"
    );
    let panes_per_window = (size_ms / slide_ms).unsigned_abs();
    let slide = slide_ms.unsigned_abs();
    // Per key the last pane seen plus `panes_per_window` (0: none yet, which is at least a
    // window's panes before any pane), in a vector for small key counts.
    const DENSE_KEYS_MAX: u64 = 1 << 22;
    let mut dense: Vec<u64> = Vec::new();
    let mut sparse: HashMap<u64, u64> = HashMap::new();
    if keys.get() <= DENSE_KEYS_MAX {
        dense = vec![0; usize::try_from(keys.get()).unwrap_or(0)];
    }
    let mut windows = 0;
    for g in 0..events {
        let event = Event::from_index(g, keys);
        let next_pane = event.timestamp_ms / slide + panes_per_window;
        let last = if dense.is_empty() {
            sparse.entry(event.key).or_insert(0)
        } else {
            // `key < keys <= DENSE_KEYS_MAX` fits in `usize`.
            &mut dense[usize::try_from(event.key).unwrap_or(0)]
        };
        if next_pane > *last {
            windows += (next_pane - *last).min(panes_per_window);
            *last = next_pane;
        }
    }
    windows
}

/// The number of events the stateless job keeps, by a plain loop (no framework involved).
pub fn expected_stateless_count(events: u64, keys: NonZeroU64) -> u64 {
    (0..events)
        .filter(|&g| stateless_keeps(&Event::from_index(g, keys)))
        .count() as u64
}

/// A sink that drops every element (through [`std::hint::black_box`], so the value is not
/// optimised away).
#[operator(new = false)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardSink;

impl<T> SinkFunction<T> for DiscardSink {
    #[inline]
    fn invoke(&mut self, value: T, _ctx: &SinkContext) -> Result<(), FunctionError> {
        std::hint::black_box(value);
        Ok(())
    }
}

/// A discarding sink for the window jobs that adds up the counts it receives, for the
/// correctness check. Each subtask sums locally and adds its sum to the shared total once, at
/// the end of its input, so the per-record path has no atomics.
#[operator(new = false)]
#[derive(Debug, Clone, Default)]
pub struct CountSumSink {
    total: Arc<AtomicU64>,
    sum: u64,
}

impl CountSumSink {
    /// A sink with a total of 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counts summed by every subtask that finished its input (clones share the total).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

impl SinkFunction<WindowCount> for CountSumSink {
    #[inline]
    fn invoke(&mut self, (_, count): WindowCount, _ctx: &SinkContext) -> Result<(), FunctionError> {
        self.sum += count;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), FunctionError> {
        self.total
            .fetch_add(std::mem::take(&mut self.sum), Ordering::Relaxed);
        Ok(())
    }
}

/// The peak resident set size of this process in KiB (`VmHWM` in `/proc/self/status`, Linux).
///
/// # Errors
///
/// A message saying why it could not be read: the file is missing (not Linux), has no `VmHWM`
/// line, or the line is not `VmHWM: <n> kB`.
pub fn peak_rss_kb() -> Result<u64, String> {
    const PATH: &str = "/proc/self/status";
    let status =
        std::fs::read_to_string(PATH).map_err(|error| format!("cannot read {PATH}: {error}"))?;
    parse_vm_hwm_kb(&status).ok_or_else(|| format!("no 'VmHWM: <n> kB' line in {PATH}"))
}

/// The value of the `VmHWM: <n> kB` line of a `/proc/<pid>/status` text.
fn parse_vm_hwm_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let mut fields = line["VmHWM:".len()..].split_whitespace();
    let value = fields.next()?.parse().ok()?;
    (fields.next() == Some("kB")).then_some(value)
}

/// The `peak_rss_kb=` field of a result line: the figure of [`peak_rss_kb`], or `unknown`
/// (with the reason on stderr, so the line keeps its shape for scripts that parse it).
pub fn peak_rss_field() -> String {
    match peak_rss_kb() {
        Ok(kb) => format!("peak_rss_kb={kb}"),
        Err(reason) => {
            eprintln!("warning: peak memory unknown: {reason}");
            "peak_rss_kb=unknown".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    fn keys(n: u64) -> NonZeroU64 {
        NonZeroU64::new(n).expect("non-zero key count")
    }

    /// splitmix64 with the multiplications done in `u128` and reduced by hand.
    fn splitmix64_u128(g: u64) -> u64 {
        let modulus = 1u128 << 64;
        let mut z = u128::from(g);
        z ^= z >> 30;
        z = (z * 0xbf58_476d_1ce4_e5b9) % modulus;
        z ^= z >> 27;
        z = (z * 0x94d0_49bb_1331_11eb) % modulus;
        (z ^ (z >> 31)) as u64
    }

    #[test]
    fn vm_hwm_is_parsed_from_a_status_text() {
        let status =
            "Name:\tsynthetic\nVmPeak:\t  20000 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(parse_vm_hwm_kb(status), Some(12_345));
        assert_eq!(parse_vm_hwm_kb("VmRSS:\t 100 kB\n"), None);
        assert_eq!(parse_vm_hwm_kb("VmHWM:\t 12 MB\n"), None);
        assert_eq!(parse_vm_hwm_kb("VmHWM:\t lots kB\n"), None);
    }

    #[test]
    fn peak_rss_of_this_process_is_positive_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_kb().expect("VmHWM readable") > 0);
        }
    }

    #[test]
    fn splitmix64_matches_known_values() {
        // The first outputs of Vigna's splitmix64 generator seeded with 0: the finalizer of
        // multiples of the golden gamma.
        let gamma = 0x9e37_79b9_7f4a_7c15u64;
        assert_eq!(splitmix64(gamma), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(gamma.wrapping_mul(2)), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(splitmix64(gamma.wrapping_mul(3)), 0x06c4_5d18_8009_454f);
        assert_eq!(splitmix64(0), 0);
        assert_eq!(splitmix64(1), 0x5692_161d_100b_05e5);
        assert_eq!(splitmix64(12345), 0xf36c_f116_4265_dd51);
        assert_eq!(splitmix64(u64::MAX), 0xb4d0_55fc_f2cb_bd7b);
    }

    #[test]
    fn splitmix64_matches_wide_arithmetic() {
        for g in (0..1000).chain([u64::MAX, u64::MAX / 3, 1 << 63]) {
            assert_eq!(splitmix64(g), splitmix64_u128(g), "g = {g}");
        }
    }

    #[test]
    fn event_fields_follow_the_definition() {
        let event = Event::from_index(12345, keys(7));
        let h = 0xf36c_f116_4265_dd51u64;
        assert_eq!(
            event,
            Event {
                key: h % 7,
                timestamp_ms: 123,
                value: h % 10_000,
            }
        );
    }

    #[test]
    fn job_names_round_trip() {
        for job in Job::ALL {
            assert_eq!(job.name().parse::<Job>(), Ok(job));
        }
        let error = "windowed".parse::<Job>().expect_err("unknown job");
        assert_eq!(
            error.to_string(),
            "unknown job 'windowed'; expected one of: stateless, rolling, tumbling, sliding, session, timers, fanout"
        );
    }

    #[test]
    fn expected_stateless_count_matches_a_hand_loop() {
        let mut kept = 0;
        for g in 0..1000u64 {
            let h = splitmix64_u128(g);
            if !(h % 100).is_multiple_of(10) {
                kept += 1;
            }
        }
        assert_eq!(expected_stateless_count(1000, keys(100)), kept);
        // Cross-checked once with an independent Python computation.
        assert_eq!(kept, 909);
    }

    async fn run_stateless(parallelism: u32) -> Vec<Event> {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        let out = stateless(&env, 5_000, keys(100)).collect_sink();
        env.execute("stateless test").await.expect("job runs");
        out.take()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stateless_job_matches_a_sequential_computation() {
        let mut expected: Vec<Event> = (0..5_000)
            .map(|g| Event::from_index(g, keys(100)))
            .filter(stateless_keeps)
            .map(|e| Event {
                value: e.value * 908 / 1000,
                ..e
            })
            .collect();
        expected.sort_by_key(|e| (e.timestamp_ms, e.key, e.value));
        for parallelism in [1, 2] {
            let mut actual = run_stateless(parallelism).await;
            actual.sort_by_key(|e| (e.timestamp_ms, e.key, e.value));
            assert_eq!(actual, expected, "parallelism {parallelism}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rolling_job_counts_per_key() {
        let events = 20_000;
        let key_count = 37;
        let mut expected: HashMap<u64, u64> = HashMap::new();
        for g in 0..events {
            *expected.entry(splitmix64(g) % key_count).or_default() += 1;
        }
        for parallelism in [1, 2] {
            let env = StreamEnv::new();
            env.set_parallelism(parallelism);
            let out = rolling(&env, events, keys(key_count)).collect_sink();
            env.execute("rolling test").await.expect("job runs");
            let outputs = out.take();
            assert_eq!(outputs.len() as u64, events, "one output per input");
            // Per key the outputs arrive in order (one subtask owns a key): 1, 2, ..., count.
            let mut seen: HashMap<u64, u64> = HashMap::new();
            for (key, count) in outputs {
                let previous = seen.entry(key).or_default();
                assert_eq!(count, *previous + 1, "key {key}, parallelism {parallelism}");
                *previous = count;
            }
            assert_eq!(seen, expected, "parallelism {parallelism}");
        }
    }

    /// The fanout job gives the rolling job's counts, whether all events come from one input
    /// record or from records of 7 (the last one shorter).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fanout_job_counts_like_the_rolling_job() {
        let events = 20_000;
        let key_count = 37;
        let mut expected: HashMap<u64, u64> = HashMap::new();
        for g in 0..events {
            *expected.entry(splitmix64(g) % key_count).or_default() += 1;
        }
        for per_record in [events, 7] {
            for parallelism in [1, 2] {
                let env = StreamEnv::new();
                env.set_parallelism(parallelism);
                let per_record_nz = NonZeroU64::new(per_record).expect("positive");
                let out = fanout(&env, events, keys(key_count), per_record_nz).collect_sink();
                env.execute("fanout test").await.expect("job runs");
                let outputs = out.take();
                let label = format!("{per_record} per record, parallelism {parallelism}");
                assert_eq!(outputs.len() as u64, events, "{label}");
                let mut seen: HashMap<u64, u64> = HashMap::new();
                for (key, count) in outputs {
                    let previous = seen.entry(key).or_default();
                    assert_eq!(count, *previous + 1, "key {key}, {label}");
                    *previous = count;
                }
                assert_eq!(seen, expected, "{label}");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn discard_sink_counts_its_input() {
        let env = StreamEnv::new();
        rolling(&env, 1_000, keys(10))
            .add_sink(DiscardSink)
            .name(DISCARD_SINK_NAME);
        let result = env.execute("discard test").await.expect("job runs");
        let sink = result.operator(DISCARD_SINK_NAME).expect("sink metrics");
        assert_eq!(sink.records_in, 1_000);
    }

    /// A sink keeping each window result with its timestamp (the window's `max_timestamp`).
    #[operator(new = false)]
    #[derive(Clone, Default)]
    struct StampedSink(Arc<Mutex<Vec<(u64, i64, u64)>>>);

    impl SinkFunction<WindowCount> for StampedSink {
        fn invoke(
            &mut self,
            (key, count): WindowCount,
            ctx: &SinkContext,
        ) -> Result<(), FunctionError> {
            let timestamp = ctx.timestamp.expect("window results carry a timestamp");
            self.0
                .lock()
                .expect("not poisoned")
                .push((key, timestamp, count));
            Ok(())
        }
    }

    /// Runs window job `job` and returns its `(key, window max_timestamp, count)` results,
    /// sorted, and the total of the count-sum sink (which sees the same results).
    async fn run_windowed(
        job: Job,
        events: u64,
        key_count: u64,
        parallelism: u32,
        watermark_interval_ms: u64,
    ) -> (Vec<(u64, i64, u64)>, u64) {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        env.configure(|config| config.auto_watermark_interval_ms = watermark_interval_ms);
        let windows = windowed(job, &env, events, keys(key_count))
            .expect("valid windows")
            .expect("a window job");
        let stamped = StampedSink::default();
        windows.clone().add_sink(stamped.clone());
        let sum = CountSumSink::new();
        windows.add_sink(sum.clone()).name(DISCARD_SINK_NAME);
        env.execute("window test").await.expect("job runs");
        let mut results = stamped.0.lock().expect("not poisoned").clone();
        results.sort_unstable();
        (results, sum.total())
    }

    /// Fixed windows by a plain loop: `(key, max_timestamp, count)` per non-empty window.
    fn sequential_windows(
        events: u64,
        key_count: u64,
        size_ms: i64,
        slide_ms: i64,
    ) -> Vec<(u64, i64, u64)> {
        let mut counts: BTreeMap<(u64, i64), u64> = BTreeMap::new();
        for g in 0..events {
            let event = Event::from_index(g, keys(key_count));
            let time = event_time_ms(&event);
            let mut start = time - time.rem_euclid(slide_ms);
            while start > time - size_ms {
                *counts.entry((event.key, start)).or_default() += 1;
                start -= slide_ms;
            }
        }
        counts
            .into_iter()
            .map(|((key, start), count)| (key, start + size_ms - 1, count))
            .collect()
    }

    #[test]
    fn expected_window_count_matches_a_set_of_windows() {
        for (events, key_count) in [
            (0, 3),
            (1, 1),
            (5_000, 7),
            (250_000, 113),
            (40_000, 1 << 23),
        ] {
            for (size, slide) in [(1_000, 1_000), (10_000, 1_000), (300, 100)] {
                assert_eq!(
                    expected_window_count(events, keys(key_count), size, slide),
                    sequential_windows(events, key_count, size, slide).len() as u64,
                    "{events} events, {key_count} keys, size {size}, slide {slide}"
                );
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fixed_window_jobs_match_a_sequential_computation() {
        let (events, key_count) = (60_000, 37);
        for (job, size, slide) in [
            (Job::Tumbling, TUMBLING_SIZE_MS, TUMBLING_SIZE_MS),
            (Job::Sliding, SLIDING_SIZE_MS, SLIDING_SLIDE_MS),
            (Job::Timers, TUMBLING_SIZE_MS, TUMBLING_SIZE_MS),
        ] {
            let expected = sequential_windows(events, key_count, size, slide);
            assert_eq!(
                job.expected_sink_records(events, keys(key_count)),
                Some(expected.len() as u64)
            );
            // Watermarks every millisecond fire windows while the input runs, every 200 ms
            // (the default) mostly at its end.
            for (parallelism, interval_ms) in [(1, 200), (1, 1), (2, 1)] {
                let (results, sum) =
                    run_windowed(job, events, key_count, parallelism, interval_ms).await;
                let context = format!("{job}, parallelism {parallelism}, interval {interval_ms}");
                assert_eq!(results, expected, "{context}");
                assert_eq!(Some(sum), job.expected_count_sum(events), "{context}");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn session_job_matches_a_sequential_computation() {
        let (events, key_count) = (60_000, 37);
        let gap = SESSION_GAP_MS;
        let mut times: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
        for g in 0..events {
            let event = Event::from_index(g, keys(key_count));
            times
                .entry(event.key)
                .or_default()
                .push(event_time_ms(&event));
        }
        for (parallelism, interval_ms) in [(1, 200), (1, 1), (2, 1)] {
            let (results, sum) =
                run_windowed(Job::Session, events, key_count, parallelism, interval_ms).await;
            let context = format!("parallelism {parallelism}, interval {interval_ms}");
            assert_eq!(
                Some(sum),
                Job::Session.expected_count_sum(events),
                "{context}"
            );
            // Per key, the sessions (in time order) cut the key's events into runs whose
            // neighbours are at most a gap apart; between two runs the distance is at least a
            // gap (exactly a gap only if a watermark closed the first session in between), and
            // each session ends a gap after its last event.
            let mut sessions: BTreeMap<u64, Vec<(i64, u64)>> = BTreeMap::new();
            for (key, max_timestamp, count) in results {
                sessions
                    .entry(key)
                    .or_default()
                    .push((max_timestamp, count));
            }
            assert_eq!(
                sessions.keys().collect::<Vec<_>>(),
                times.keys().collect::<Vec<_>>(),
                "{context}"
            );
            for (key, key_times) in &times {
                let mut next = 0;
                for &(max_timestamp, count) in &sessions[key] {
                    let count = usize::try_from(count).expect("small count");
                    let run = &key_times[next..next + count];
                    assert!(
                        run.windows(2).all(|w| w[1] - w[0] <= gap),
                        "{context}, key {key}"
                    );
                    assert_eq!(
                        run[count - 1] + gap - 1,
                        max_timestamp,
                        "{context}, key {key}"
                    );
                    if next > 0 {
                        assert!(run[0] - key_times[next - 1] >= gap, "{context}, key {key}");
                    }
                    next += count;
                }
                assert_eq!(next, key_times.len(), "{context}, key {key}");
            }
        }
    }
}
