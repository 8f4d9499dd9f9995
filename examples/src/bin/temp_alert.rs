//! The temperature-rise alert with timers (the seed's `TempIncreaseAlertFunction`, in event
//! time).
//!
//! ```text
//! cargo run --release -p eichhorn-examples --bin temp_alert -- --input FILE [--interval-ms N]
//!     [--out-of-orderness-ms N] [--parallelism N]
//! ```
//!
//! Per sensor, a reading higher than the previous one starts a timer `--interval-ms` (default
//! 1000) of event time later, unless one is pending; a first reading or a lower one cancels the
//! pending timer; equal readings change nothing. When the watermark reaches a timer, the line
//! `sensor_id,timer_timestamp_ms` is printed on stdout.
//!
//! The input holds one reading `sensor_id,timestamp_ms,temperature` per line; malformed lines
//! are reported on stderr as `line N: <reason>: <line>`, counted (the job result's
//! `Sink: Malformed Lines` received them) and skipped. The source, the parser and the timestamp
//! assigner run at parallelism 1 and emit a watermark after every reading (bounded
//! out-of-orderness, `--out-of-orderness-ms`, default 0), so alerts depend only on the file; the
//! keyed alert function runs at `--parallelism N` (default 1).

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use eichhorn::prelude::*;
use eichhorn::time::WatermarkStrategy;
use eichhorn_examples::sensors::{
    SensorReading, TempIncreaseAlert, malformed_line_count, parse_readings,
};
use eichhorn_examples::{init_tracing, print_lines, run_example};

/// Alerts when a sensor's temperature keeps rising for an interval of event time.
///
/// Reads one reading `sensor_id,timestamp_ms,temperature` per line. Per sensor, a rise starts an
/// event-time timer --interval-ms later and a drop cancels it; when the watermark reaches a
/// timer, the line `sensor_id,timer_timestamp_ms` is printed. Malformed lines are reported on
/// stderr as `line N: reason: line` and skipped.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    ops: eichhorn_examples::OpsArgs,
    /// The CSV file of readings `sensor_id,timestamp_ms,temperature`.
    #[arg(long)]
    input: PathBuf,
    /// How long (event time, ms) a rise must last before it alerts.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(0..))]
    interval_ms: i64,
    /// How far behind the largest timestamp seen the watermark stays, in milliseconds.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    out_of_orderness_ms: i64,
    /// The parallelism of the alert function, 1 to 128 (source, parser and assigner run at 1).
    #[arg(long, default_value_t = 1, value_parser = eichhorn_examples::parallelism_parser())]
    parallelism: u32,
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    run_example(run).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    File::open(&args.input)
        .with_context(|| format!("cannot open input file '{}'", args.input.display()))?;
    let env = StreamEnv::new();
    args.ops.apply(&env);
    env.set_parallelism(args.parallelism);
    let alerts = parse_readings(env.read_text_file(args.input.clone()))
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(args.out_of_orderness_ms)
                .with_timestamp_assigner(|reading: &SensorReading, _| reading.timestamp_ms),
        )
        .set_parallelism(1)
        .keyed()
        .process(TempIncreaseAlert::new(args.interval_ms))
        .name("Temperature Increase Alert")
        .collect_sink();
    let result = env.execute("Temperature Alert").await?;
    print_lines(alerts.take())?;
    eprintln!("malformed lines: {}", malformed_line_count(&result)?);
    Ok(())
}
