//! The Nexmark benchmark: runs one query of `eichhorn_benches::nexmark` over generated events
//! into a discarding sink and prints one result line.
//!
//! ```text
//! cargo run --release -p eichhorn-benches --bin nexmark -- --query q5 --events 10000000 \
//!     [--parallelism 2] [--checkpoint-interval-ms 1000] [--state-backend memory|lmdb] \
//!     [--events-per-s 10000000] [--seed 0] [--sql]
//! RESULT engine=eichhorn job=q5 events=10000000 parallelism=2 state_backend=memory checkpoint_interval=1000ms completed_checkpoints=.. outputs=.. wall_s=.. cpu_s=.. events_per_s=.. peak_rss_kb=..
//! ```
//!
//! The queries are `q0` (pass-through), `q1` (currency conversion), `q2` (selection), `q3`
//! (local item suggestion, a join), `q4` (average closing price per category), `q5` (hot items,
//! sliding windows), `q7` (highest bid, tumbling windows), `q8` (new users, a window join) and
//! `q11` (user sessions); `eichhorn_benches::nexmark::queries` defines them.
//!
//! The events are those of Flink's Nexmark generator (persons, auctions and bids 1:3:46), from
//! `--seed`, with event time advancing `--events-per-s` events per second (default 10,000,000,
//! the rate of Flink's Nexmark suite, which runs 100,000,000 events: 10 s of event time).
//!
//! With `--sql` the query runs as SQL through `eichhorn-sql` (`eichhorn_benches::nexmark::sql`)
//! over the same events, and the line says `engine=eichhorn-sql`; `outputs` then counts the
//! changes of its changelog (an updating query emits retractions too).
//!
//! `wall_s` runs from the start of job execution to its completion (`StreamEnv::execute`);
//! `events_per_s` is `events / wall_s`; `outputs` is the number of records the sink received;
//! `cpu_s` is the CPU time of the process over the span of `wall_s`;
//! `peak_rss_kb` is the process's peak resident set size (`VmHWM`, or `unknown` with the reason
//! on stderr). Checkpoints and LMDB files go to a temporary directory removed at the end.

use eichhorn_benches::harness::{
    backend_name, checkpoint_interval_field, cpu_field, execute_timed, positive_u32, positive_u64,
    prepare_env, process_cpu_seconds,
};
use std::num::{NonZeroU32, NonZeroU64};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use eichhorn::prelude::*;
use eichhorn::state::StateBackendKind;
use eichhorn_benches::nexmark::{GeneratorConfig, Query};
use eichhorn_benches::{DISCARD_SINK_NAME, DiscardSink, peak_rss_field};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    about = "Eichhorn Nexmark benchmark: one query over generated persons, auctions and bids"
)]
struct Args {
    /// The query: `q0`, `q1`, `q2`, `q3`, `q4`, `q5`, `q7`, `q8` or `q11`.
    #[arg(long)]
    query: Query,
    /// Number of events (at least 1).
    #[arg(long, value_parser = positive_u64)]
    events: NonZeroU64,
    /// Parallelism of every operator (at least 1).
    #[arg(long, default_value = "1", value_parser = positive_u32)]
    parallelism: NonZeroU32,
    /// Take a checkpoint every this many milliseconds (written to a temporary directory).
    #[arg(long)]
    checkpoint_interval_ms: Option<u64>,
    /// Where keyed state lives: `memory` or `lmdb`.
    #[arg(long, default_value = "memory")]
    state_backend: StateBackendKind,
    /// Events per second of event time (at least 1).
    #[arg(long, default_value = "10000000", value_parser = positive_u64)]
    events_per_s: NonZeroU64,
    /// Seeds the generator.
    #[arg(long, default_value = "0")]
    seed: u64,
    /// Runs the query's SQL through `eichhorn-sql` (`engine=eichhorn-sql`) instead of its
    /// DataStream version.
    #[arg(long)]
    sql: bool,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("nexmark: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let events = args.events.get();
    let parallelism = args.parallelism.get();
    let config = GeneratorConfig {
        seed: args.seed,
        events_per_s: args.events_per_s,
        ..GeneratorConfig::default()
    };

    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    let _scratch = prepare_env(&env, args.state_backend, args.checkpoint_interval_ms)?;
    let engine = if args.sql {
        eichhorn_benches::nexmark::sql::build(&env, args.query, events, config)
            .with_context(|| format!("cannot plan query {} in SQL", args.query))?
            .add_sink(DiscardSink)
            .name(DISCARD_SINK_NAME);
        "eichhorn-sql"
    } else {
        args.query
            .build_discarding(&env, events, config)
            .with_context(|| format!("cannot build query {}", args.query))?;
        "eichhorn"
    };

    let job_name = format!("nexmark {}", args.query);
    let cpu_before = process_cpu_seconds();
    let (result, wall) = execute_timed(&env, &job_name)?;
    let cpu = cpu_field(cpu_before, process_cpu_seconds());
    let sink = result
        .operator(DISCARD_SINK_NAME)
        .with_context(|| format!("no metrics for '{DISCARD_SINK_NAME}' in the job result"))?;

    let wall_s = wall.as_secs_f64();
    let events_per_s = events as f64 / wall_s;
    let backend = backend_name(args.state_backend);
    let checkpoints = checkpoint_interval_field(args.checkpoint_interval_ms);
    println!(
        "RESULT engine={engine} job={} events={events} parallelism={parallelism} \
         state_backend={backend} checkpoint_interval={checkpoints} completed_checkpoints={} \
         outputs={} wall_s={wall_s:.6} {cpu} events_per_s={events_per_s:.0} {}",
        args.query,
        result.completed_checkpoints,
        sink.records_in,
        peak_rss_field()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        Args::try_parse_from(std::iter::once("nexmark").chain(args.iter().copied()))
            .map_err(|error| error.to_string())
    }

    #[test]
    fn arguments_parse_with_defaults() {
        let args = parse(&["--query", "q11", "--events", "1000"]).expect("valid arguments");
        assert_eq!(args.query, Query::Q11);
        assert_eq!(args.events.get(), 1_000);
        assert_eq!(args.parallelism.get(), 1);
        assert_eq!(args.events_per_s.get(), 10_000_000);
        assert!(matches!(args.state_backend, StateBackendKind::Memory));
        assert_eq!(args.checkpoint_interval_ms, None);
        assert!(!args.sql);
        let args = parse(&["--query", "q5", "--events", "10", "--sql"]).expect("valid arguments");
        assert!(args.sql);
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        let error = parse(&["--query", "q6", "--events", "10"]).expect_err("unknown query");
        assert!(error.contains("unknown query 'q6'"), "{error}");
        let error = parse(&["--query", "q1", "--events", "0"]).expect_err("no events");
        assert!(error.contains("must be at least 1"), "{error}");
        let error = parse(&["--query", "q1", "--events", "10", "--parallelism", "x"])
            .expect_err("bad parallelism");
        assert!(
            error.contains("'x' is not a non-negative integer"),
            "{error}"
        );
        let error = parse(&["--events", "10"]).expect_err("no query");
        assert!(error.contains("--query"), "{error}");
    }
}
