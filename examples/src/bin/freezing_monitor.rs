//! Freezing alarms through a side output, as the `FreezingMonitor` of "Stream Processing with
//! Apache Flink" (Hueske and Kalavri, chapter 6).
//!
//! ```text
//! cargo run --release -p eichhorn-examples --bin freezing_monitor -- --input FILE [--threshold F]
//! ```
//!
//! The job is `read_text_file` -> `Parse Readings` (malformed lines to a side output) ->
//! `Freezing Monitor`, a process function that emits every reading unchanged on its main output
//! and, for a reading below `--threshold` (default 32.0 °F), the alarm
//! `Freezing Alarm for <sensor_id>` to the side output `freezing-alarms`. Everything runs at
//! parallelism 1, so alarms come in input order.
//!
//! The input holds one reading `sensor_id,timestamp_ms,temperature` per line (see
//! [`eichhorn_examples::sensors`] for the exact format).
//!
//! ## Output
//!
//! - stdout: the alarms, one per line, in input order.
//! - stderr: `line N: <reason>: <line>` for every malformed line, then
//!   `readings: R, freezing alarms: A, malformed lines: M`.
//!
//! The counts come from the job result: readings are what the sink on the main output
//! (`Sink: Readings`, which discards them) received, and malformed lines what the sink
//! `Sink: Malformed Lines` received (it prints them on stderr).
//!
//! Errors (a missing input file, a line that is not UTF-8, a threshold that is not a number)
//! are printed as `error: <message>` on stderr with a non-zero exit code.

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, ensure};
use clap::Parser;
use eichhorn::prelude::*;
use eichhorn_examples::sensors::{
    DiscardSink, FREEZING_ALARMS_TAG, FREEZING_THRESHOLD_F, FreezingMonitor, PARSE_OPERATOR_NAME,
    malformed_line_count, parse_readings, records_in,
};
use eichhorn_examples::{init_tracing, print_lines, run_example};

/// The sink on the monitor's main output; its `records_in` counts the readings.
const READINGS_SINK_NAME: &str = "Sink: Readings";

/// Prints a freezing alarm for every sensor reading below a threshold.
///
/// Reads one reading `sensor_id,timestamp_ms,temperature` per line and prints
/// `Freezing Alarm for <sensor_id>` for every reading below --threshold, in input order: the
/// alarms travel on a side output, as in the FreezingMonitor of "Stream Processing with Apache
/// Flink". Malformed lines are reported on stderr as `line N: reason: line` and skipped.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    ops: eichhorn_examples::OpsArgs,
    /// The CSV file of readings `sensor_id,timestamp_ms,temperature`.
    #[arg(long)]
    input: PathBuf,
    /// Readings below this temperature raise an alarm.
    #[arg(long, default_value_t = FREEZING_THRESHOLD_F, value_parser = finite_number, allow_negative_numbers = true)]
    threshold: f64,
}

/// Parses a finite `f64` (a NaN threshold would silently raise no alarm at all).
fn finite_number(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(value),
        _ => Err(format!("'{text}' is not a finite number")),
    }
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
    env.set_parallelism(1);
    let alarms_tag = OutputTag::<String>::new(FREEZING_ALARMS_TAG);
    let monitored = parse_readings(env.read_text_file(args.input.clone()))
        .process(FreezingMonitor::new(alarms_tag.clone(), args.threshold))
        .name("Freezing Monitor");
    let alarms = monitored.side_output(&alarms_tag).collect_sink();
    monitored.add_sink(DiscardSink).name(READINGS_SINK_NAME);
    let result = env.execute("Freezing Monitor").await?;

    let alarms = alarms.take();
    print_lines(&alarms)?;
    let lines = records_in(&result, PARSE_OPERATOR_NAME)?;
    let readings = records_in(&result, READINGS_SINK_NAME)?;
    let malformed = malformed_line_count(&result)?;
    ensure!(
        readings + malformed == lines,
        "the job read {lines} lines but counted {readings} readings and {malformed} malformed lines"
    );
    eprintln!(
        "readings: {readings}, freezing alarms: {}, malformed lines: {malformed}",
        alarms.len()
    );
    Ok(())
}
