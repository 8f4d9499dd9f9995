//! The simulator's built-in jobs, run by the `eichhorn-sim` command line: `wordcount`,
//! `keyed_sum`, `windows` and `join`.
//!
//! Each commits [`Row`]s through the exactly-once sink ([`CommittedOutput`]), checkpoints every
//! 50 ms of virtual time, and reads paced sources so checkpoints and faults fall between
//! records. Every row carries its key and a sequence number within the key, and the jobs are
//! built so the rows do not depend on how parallel inputs interleave (each key's records come
//! from one source subtask in order, or the result is order-independent): a fault-free run is
//! the truth for the multiset, sequence and consistency oracles whatever the timing.
//!
//! Multi-input subtasks are the point: every keyed operator reads from two source subtasks
//! (or two sources), so barrier alignment matters.

use eichhorn::connectors::{GeneratorSource, RateLimitedSource};
use eichhorn::operator::window::{TimeDomain, WindowAssigner};
use eichhorn::prelude::*;

use crate::CommittedOutput;
use crate::faults::FaultConfig;
use crate::oracles::Oracles;

/// A committed row of a built-in job.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Row {
    /// The key.
    pub key: u64,
    /// The row's number within its key, from 1.
    pub seq: u64,
    /// The job's result for the row.
    pub value: u64,
}

/// A built-in job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BuiltinJob {
    /// Running word counts over lines from two source subtasks.
    Wordcount,
    /// Running sums per key over two source subtasks.
    KeyedSum,
    /// Sums per key in event-time tumbling windows.
    Windows,
    /// An interval join of two sources.
    Join,
}

/// Records each source subtask reads (the sum over subtasks for [`BuiltinJob::KeyedSum`]).
const RECORDS: u64 = 3_000;
/// Records per second per source subtask.
const RATE: u64 = 4_000;
/// Checkpoint interval, ms of virtual time.
const CHECKPOINT_MS: u64 = 50;
/// The vocabulary of the word count.
const WORDS: u64 = 13;

impl BuiltinJob {
    /// Every built-in job.
    pub const ALL: [Self; 4] = [Self::Wordcount, Self::KeyedSum, Self::Windows, Self::Join];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Wordcount => "wordcount",
            Self::KeyedSum => "keyed_sum",
            Self::Windows => "windows",
            Self::Join => "join",
        }
    }

    /// The job called `name`.
    ///
    /// # Errors
    ///
    /// An unknown name, with the known ones.
    pub fn from_name(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|j| j.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown job '{name}' (built-in jobs: {})",
                    Self::ALL.map(Self::name).join(", ")
                )
            })
    }

    /// The fault configuration that fits the job's length (about 380 ms of virtual time
    /// without faults): `config` with faults in the first 350 ms and storage faults on the
    /// first 6 checkpoints.
    pub fn fit(self, config: FaultConfig) -> FaultConfig {
        config.within(350, 6)
    }

    /// The oracles for the job: all of them; each key's rows in order except for the join.
    pub fn oracles(self) -> Oracles<Row> {
        Oracles::new()
            .sequenced(|row: &Row| (row.key, row.seq))
            .ordered_per_key(self != Self::Join)
    }

    /// Declares the job on `env`; returns the output its exactly-once sink commits to.
    pub fn build(self, env: &StreamEnv) -> CommittedOutput<Row> {
        env.set_parallelism(2);
        env.enable_checkpointing(CHECKPOINT_MS);
        env.configure(|c| {
            c.batch_records_max = 32;
            c.credits_per_channel = 2;
        });
        let output = CommittedOutput::new();
        let sink = output.sink();
        match self {
            Self::Wordcount => wordcount(env).add_two_phase_sink(sink),
            Self::KeyedSum => keyed_sum(env).add_two_phase_sink(sink),
            Self::Windows => windows(env).add_two_phase_sink(sink),
            Self::Join => join(env).add_two_phase_sink(sink),
        };
        output
    }
}

impl std::fmt::Display for BuiltinJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A paced generator of `0..count` at parallelism 2 (subtask `j` reads `g = j, j + 2, ..`).
fn paced(env: &StreamEnv, count: u64, name: &str) -> DataStream<u64> {
    env.add_source(
        RateLimitedSource::new(GeneratorSource::new(Some(count), |g| g), RATE),
        name,
    )
    .uid(name)
}

/// Lines of three words; the running count of a word numbers its rows (1, 2, ..) whatever
/// the order lines arrive in.
fn wordcount(env: &StreamEnv) -> DataStream<Row> {
    paced(env, RECORDS, "lines")
        .map(|g: u64| {
            (0..3)
                .map(|i| format!("w{}", (g * 7 + i * 5) % WORDS))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .flat_map(|line: String| {
            line.split(' ')
                .map(|w| (w.to_string(), 1u64))
                .collect::<Vec<_>>()
        })
        .key_by(|pair: &(String, u64)| pair.0.clone())
        .reduce(|a: (String, u64), b: (String, u64)| (a.0, a.1 + b.1))
        .uid("count")
        .map(|(word, count): (String, u64)| Row {
            key: word[1..].parse().unwrap_or(u64::MAX),
            seq: count,
            value: count,
        })
}

/// Running sums over keys `g % 8`: subtask `j` of the source reads the `g` of parity `j`, so
/// each key's records come from one subtask, in order, and its running sums are fixed.
fn keyed_sum(env: &StreamEnv) -> DataStream<Row> {
    paced(env, RECORDS, "numbers")
        .map(|g: u64| Row {
            key: g % 8,
            seq: g / 8 + 1,
            value: g,
        })
        .key_by(|row: &Row| row.key)
        .reduce(|sum: Row, next: Row| Row {
            key: sum.key,
            seq: next.seq,
            value: sum.value + next.value,
        })
        .uid("sum")
}

/// Sums of each key in 100 ms event-time tumbling windows; a window's number (from 1) is its
/// row's sequence number.
fn windows(env: &StreamEnv) -> DataStream<Row> {
    paced(env, RECORDS, "events")
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(0)
                .with_timestamp_assigner(|g: &u64, _| *g as i64),
        )
        .map(|g: u64| Row {
            key: g % 7,
            seq: g / 100 + 1,
            value: g,
        })
        .key_by(|row: &Row| row.key)
        .window(WindowAssigner::tumbling(TimeDomain::EventTime, 100, 0).expect("100 ms > 0"))
        .reduce(|a: Row, b: Row| Row {
            key: a.key,
            seq: a.seq,
            value: a.value + b.value,
        })
        .uid("window")
}

/// Joins each order with the price of the same key at the same time (one per order): two
/// sources, each at parallelism 2, so the join reads four channels.
fn join(env: &StreamEnv) -> DataStream<Row> {
    let stamped = |stream: DataStream<u64>| {
        stream.assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(0)
                .with_timestamp_assigner(|g: &u64, _| *g as i64),
        )
    };
    let orders = stamped(paced(env, RECORDS / 2, "orders")).key_by(|g: &u64| g % 5);
    let prices = stamped(paced(env, RECORDS / 2, "prices")).key_by(|g: &u64| g % 5);
    orders
        .interval_join(prices)
        .between(0, 0)
        .process(PriceOrder)
        .uid("join")
}

/// Prices an order: the order `g` is row `g / 5 + 1` of key `g % 5`.
#[operator]
#[derive(Clone)]
struct PriceOrder;

impl ProcessJoinFunction<u64, u64> for PriceOrder {
    type Out = Row;

    fn process_element(
        &mut self,
        order: u64,
        price: u64,
        _ctx: &JoinContext,
        out: &mut Collector<'_, Row>,
    ) {
        out.collect(Row {
            key: order % 5,
            seq: order / 5 + 1,
            value: order * (price % 3 + 1),
        });
    }
}
