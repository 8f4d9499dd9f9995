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

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use eichhorn::prelude::*;
use serde::{Deserialize, Serialize};

/// The name of the discarding sink, to find its metrics in the `JobResult`.
pub const DISCARD_SINK_NAME: &str = "Sink: Discard";

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
}

impl Job {
    /// Every job, in the order of [`Job::name`]'s documentation.
    pub const ALL: [Self; 2] = [Self::Stateless, Self::Rolling];

    /// The name used on the command line and in the result line: `stateless` or `rolling`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stateless => "stateless",
            Self::Rolling => "rolling",
        }
    }

    /// The number of records the sink must receive for `events` events over `keys` keys.
    pub fn expected_sink_records(self, events: u64, keys: NonZeroU64) -> u64 {
        match self {
            Self::Stateless => expected_stateless_count(events, keys),
            Self::Rolling => events,
        }
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

/// The number of events the stateless job keeps, by a plain loop (no framework involved).
pub fn expected_stateless_count(events: u64, keys: NonZeroU64) -> u64 {
    (0..events)
        .filter(|&g| stateless_keeps(&Event::from_index(g, keys)))
        .count() as u64
}

/// A sink that drops every element (through [`std::hint::black_box`], so the value is not
/// optimised away).
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardSink;

impl<T> SinkFunction<T> for DiscardSink {
    #[inline]
    fn invoke(&mut self, value: T, _ctx: &SinkContext) -> Result<(), FunctionError> {
        std::hint::black_box(value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

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
            "unknown job 'windowed'; expected one of: stateless, rolling"
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
}
