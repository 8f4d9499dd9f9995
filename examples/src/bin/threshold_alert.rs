//! The threshold alert of "Stream Processing with Apache Flink" (Hueske and Kalavri, chapter 7,
//! `TemperatureAlertFunction`): a flat map with keyed state, written with `#[operator]`.
//!
//! ```text
//! cargo run --release -p eichhorn-examples --bin threshold_alert -- --input FILE
//!     [--threshold F] [--parallelism N]
//! ```
//!
//! Per sensor, the job remembers the last temperature in keyed `ValueState<f64>` and emits
//! `sensor_id,temperature,change` when a reading differs from the sensor's previous one by more
//! than `--threshold` (default 1.7) in either direction; a sensor's first reading only sets the
//! baseline. The function is [`TemperatureAlert`], an `#[operator]` struct with one `#[state]`
//! field and the threshold as configuration.
//!
//! The input holds one reading `sensor_id,timestamp_ms,temperature` per line (see
//! [`eichhorn_examples::sensors`]); malformed lines are reported on stderr as
//! `line N: <reason>: <line>`, counted and skipped. The source and the parser run at
//! parallelism 1; the alert function at `--parallelism N` (default 1).
//!
//! ## Output
//!
//! - stdout: the alerts, one per line; each sensor's alerts in input order (at parallelism 1,
//!   all of them in input order).
//! - stderr: the malformed lines, then `readings: R, alerts: A, malformed lines: M`.

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, ensure};
use clap::Parser;
use eichhorn::prelude::*;
use eichhorn_examples::sensors::{TemperatureAlert, malformed_line_count, parse_readings};
use eichhorn_examples::{init_tracing, print_lines, run_example};

/// Alerts when a sensor's temperature jumps by more than a threshold between readings.
///
/// Reads one reading `sensor_id,timestamp_ms,temperature` per line, remembers each sensor's last
/// temperature in keyed state, and prints `sensor_id,temperature,change` when a reading differs
/// from the sensor's previous one by more than --threshold in either direction. Malformed lines
/// are reported on stderr as `line N: reason: line` and skipped.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    ops: eichhorn_examples::OpsArgs,
    /// The CSV file of readings `sensor_id,timestamp_ms,temperature`.
    #[arg(long)]
    input: PathBuf,
    /// Changes larger than this (in either direction) alert.
    #[arg(long, default_value_t = 1.7)]
    threshold: f64,
    /// The parallelism of the alert function, 1 to 128 (source and parser run at 1).
    #[arg(long, default_value_t = 1, value_parser = eichhorn_examples::parallelism_parser())]
    parallelism: u32,
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    run_example(run).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    ensure!(
        args.threshold.is_finite() && args.threshold >= 0.0,
        "--threshold must be a finite number of at least 0, not {}",
        args.threshold
    );
    File::open(&args.input)
        .with_context(|| format!("cannot open input file '{}'", args.input.display()))?;
    let env = StreamEnv::new();
    args.ops.apply(&env);
    env.set_parallelism(args.parallelism);
    let alerts = parse_readings(env.read_text_file(args.input.clone()))
        .keyed()
        .flat_map_function(TemperatureAlert::new(args.threshold))
        .name("Temperature Alert")
        .collect_sink();
    let result = env.execute("Threshold Alert").await?;
    let alerts = alerts.take();
    let readings = result
        .operator("Temperature Alert")
        .map_or(0, |metrics| metrics.records_in);
    let count = alerts.len();
    print_lines(alerts)?;
    eprintln!(
        "readings: {readings}, alerts: {count}, malformed lines: {}",
        malformed_line_count(&result)?
    );
    Ok(())
}
