//! Nexmark: the auction benchmark of stream processors (persons register, open auctions and
//! bid), with a seeded generator ([`generator`]) and the queries q0, q1, q2, q3, q4, q5, q7, q8
//! and q11 as Eichhorn jobs ([`queries`]), and the same queries in SQL ([`sql`]).
//!
//! The `nexmark` binary runs one query over a number of generated events into a discarding sink
//! and prints one result line:
//!
//! ```text
//! cargo run --release -p eichhorn-benches --bin nexmark -- --query q5 --events 10000000 \
//!     [--parallelism P] [--checkpoint-interval-ms MS] [--state-backend memory|lmdb] \
//!     [--events-per-s R] [--seed S]
//! RESULT engine=eichhorn job=q5 events=10000000 parallelism=1 ... wall_s=.. events_per_s=.. peak_rss_kb=..
//! ```
//!
//! The generator and the queries follow Flink's Nexmark suite (`nexmark/nexmark`, itself from
//! Apache Beam's Nexmark), so the same workload can run on Flink; where this code departs from
//! it, the module that does says so.
//!
//! # Examples
//!
//! ```
//! use eichhorn::prelude::*;
//! use eichhorn_benches::nexmark::{GeneratorConfig, queries};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let env = StreamEnv::new();
//! let selected = queries::q2(&env, 5_000, GeneratorConfig::default()).collect_sink();
//! env.execute("nexmark q2").await?;
//! assert!(selected.take().iter().all(|(auction, _)| auction % 123 == 0));
//! # Ok(()) }
//! ```

pub mod generator;
pub mod queries;
pub mod sql;

use std::fmt;
use std::str::FromStr;

use eichhorn::operator::window::WindowError;
use eichhorn::prelude::*;

pub use generator::{Auction, Bid, Event, GeneratorConfig, NexmarkGenerator, Person};

use crate::{DISCARD_SINK_NAME, DiscardSink};

/// The Nexmark queries implemented here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// Pass-through of the bids.
    Q0,
    /// Currency conversion.
    Q1,
    /// Selection of a few auctions.
    Q2,
    /// Local item suggestion: a join of persons and auctions.
    Q3,
    /// Average closing price per category.
    Q4,
    /// Hot items: a sliding window.
    Q5,
    /// Highest bid: a tumbling window.
    Q7,
    /// New users: a window join.
    Q8,
    /// User sessions: session windows.
    Q11,
}

impl Query {
    /// Every query.
    pub const ALL: [Self; 9] = [
        Self::Q0,
        Self::Q1,
        Self::Q2,
        Self::Q3,
        Self::Q4,
        Self::Q5,
        Self::Q7,
        Self::Q8,
        Self::Q11,
    ];

    /// The name on the command line and in the result line: `q0` ... `q11`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Q0 => "q0",
            Self::Q1 => "q1",
            Self::Q2 => "q2",
            Self::Q3 => "q3",
            Self::Q4 => "q4",
            Self::Q5 => "q5",
            Self::Q7 => "q7",
            Self::Q8 => "q8",
            Self::Q11 => "q11",
        }
    }

    /// Builds the query over `events` generated events into a [`DiscardSink`] named
    /// [`DISCARD_SINK_NAME`].
    ///
    /// # Errors
    ///
    /// None in practice: the queries' windows are constants a window assigner accepts.
    pub fn build_discarding(
        self,
        env: &StreamEnv,
        events: u64,
        config: GeneratorConfig,
    ) -> Result<DataStreamSink, WindowError> {
        use queries::*;
        let sink = match self {
            Self::Q0 => q0(env, events, config).add_sink(DiscardSink),
            Self::Q1 => q1(env, events, config).add_sink(DiscardSink),
            Self::Q2 => q2(env, events, config).add_sink(DiscardSink),
            Self::Q3 => q3(env, events, config).add_sink(DiscardSink),
            Self::Q4 => q4(env, events, config).add_sink(DiscardSink),
            Self::Q5 => q5(env, events, config)?.add_sink(DiscardSink),
            Self::Q7 => q7(env, events, config)?.add_sink(DiscardSink),
            Self::Q8 => q8(env, events, config)?.add_sink(DiscardSink),
            Self::Q11 => q11(env, events, config)?.add_sink(DiscardSink),
        };
        Ok(sink.name(DISCARD_SINK_NAME))
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A query name that is not one of [`Query::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownQueryError(pub String);

impl fmt::Display for UnknownQueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Query::ALL.iter().map(|query| query.name()).collect();
        write!(
            f,
            "unknown query '{}'; expected one of: {}",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownQueryError {}

impl FromStr for Query {
    type Err = UnknownQueryError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|query| query.name() == name)
            .ok_or_else(|| UnknownQueryError(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_round_trip() {
        for query in Query::ALL {
            assert_eq!(query.name().parse::<Query>(), Ok(query));
        }
        let error = "q6".parse::<Query>().expect_err("unknown query");
        assert_eq!(
            error.to_string(),
            "unknown query 'q6'; expected one of: q0, q1, q2, q3, q4, q5, q7, q8, q11"
        );
    }
}
