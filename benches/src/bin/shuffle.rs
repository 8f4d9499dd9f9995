//! The cross-node shuffle benchmark: the rolling job (a keyed running count) in one process or
//! on a cluster, where the keyed exchange crosses TaskManagers.
//!
//! ```text
//! cargo run --release -p eichhorn-benches --bin shuffle -- [--events N] [--keys K] [--parallelism P]
//! benches/shuffle.sh [EVENTS]     # one process, then a JobManager and two TaskManagers, alternately
//! ```
//!
//! It is a cluster application like the examples (`eichhorn::cluster::run_application`): with
//! `--jobmanager --bind ADDR` it deploys on the TaskManagers that join (`--taskmanager --join
//! ADDR --slots 1`, two of them for parallelism 2, so subtask `i` of the source and of the count
//! share TaskManager `i` and half the records cross nodes). Prints one line on the JobManager
//! (or the single process):
//! `RESULT engine=eichhorn job=shuffle events=.. parallelism=.. wall_s=.. events_per_s=..`,
//! timed from submission to the job's end (on a cluster that includes waiting for the
//! TaskManagers, deployment and their building the job). Each TaskManager logs the bytes its
//! data channels sent when the job ends.

use std::num::NonZeroU64;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use clap::Parser;
use eichhorn::prelude::*;
use eichhorn_benches::harness::positive_u64;
use eichhorn_benches::{DISCARD_SINK_NAME, DiscardSink, rolling};

/// The rolling job (keyed running count), locally or on a cluster.
#[derive(Debug, Parser)]
struct Args {
    /// Events to generate.
    #[arg(long, default_value = "10000000", value_parser = positive_u64)]
    events: NonZeroU64,
    /// Distinct keys.
    #[arg(long, default_value = "10000", value_parser = positive_u64)]
    keys: NonZeroU64,
    /// The job's parallelism.
    #[arg(long, default_value_t = 2)]
    parallelism: u32,
    /// Batches a consumer lets each channel have in flight (the default configuration's when
    /// not given).
    #[arg(long)]
    credits_per_channel: Option<u32>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,eichhorn=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    eichhorn::cluster::run_application(|args: Vec<String>| async move {
        match run(Args::parse_from(args)).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        }
    })
    .await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let events = args.events.get();
    let env = StreamEnv::new();
    env.set_parallelism(args.parallelism);
    if let Some(credits) = args.credits_per_channel {
        env.configure(|config| config.credits_per_channel = credits.max(1));
    }
    rolling(&env, events, args.keys)
        .add_sink(DiscardSink)
        .name(DISCARD_SINK_NAME);
    let start = Instant::now();
    let result = env.execute("shuffle").await.context("the job failed")?;
    let wall = start.elapsed();
    ensure!(
        result.status == JobStatus::Finished,
        "the job ended as {:?}",
        result.status
    );
    let records = result
        .operator(DISCARD_SINK_NAME)
        .map(|sink| sink.records_in)
        .context("no sink metrics")?;
    ensure!(
        records == events,
        "the sink received {records} records, expected {events}"
    );
    let wall_s = wall.as_secs_f64();
    println!(
        "RESULT engine=eichhorn job=shuffle events={events} parallelism={} wall_s={wall_s:.3} \
         events_per_s={:.0}",
        args.parallelism,
        events as f64 / wall_s
    );
    Ok(())
}
