//! The minimum temperature per sensor and event-time window, with Flink's window semantics:
//! tumbling, sliding or session windows, bounded out-of-orderness, allowed lateness and a side
//! output for late readings.
//!
//! ```text
//! cargo run --release -p eichhorn-examples --bin sensor_windows -- --input FILE --window SPEC \
//!     [--out-of-orderness-ms N] [--allowed-lateness-ms N] [--parallelism N] [--late-output FILE]
//! ```
//!
//! `SPEC` is `tumbling:SIZE_MS`, `sliding:SIZE_MS:SLIDE_MS` or `session:GAP_MS`. The input holds
//! one reading `sensor_id,timestamp_ms,temperature` per line (see
//! [`eichhorn_examples::sensors`] for the exact format). A reading whose timestamp is so close
//! to the limits of `i64` that no window of `SPEC` can hold it (e.g. `9223372036854775807`) is
//! a malformed line: reported with its number, counted and skipped.
//!
//! ## The job
//!
//! `read_text_file` (non-parallel) -> `Parse Readings` (parallelism 1; malformed lines to a side
//! output) -> `assign_timestamps_and_watermarks` (parallelism 1; bounded out-of-orderness, a
//! watermark after every reading) -> `key_by(sensor_id)` -> `window(SPEC)` with
//! `allowed_lateness` and `side_output_late_data` -> `reduce_with_process(colder,
//! MinTemperature)` at `--parallelism` -> collect sinks.
//!
//! One timestamp assigner sees every reading in file order and emits a watermark after each, and
//! each window subtask receives readings and watermarks from that one assigner in that order, so
//! the result depends only on the file, not on timing or parallelism.
//!
//! ## Output
//!
//! - stdout: one line per window firing, `sensor_id,window_start_ms,window_end_ms,min_temperature`
//!   (`window_end_ms` exclusive; the temperature in Rust's default `f64` `Display`, e.g. `21.5`,
//!   `-3`). A window fires when the watermark passes its end, and again for every reading that
//!   arrives within the allowed lateness; touching session windows merge. Lines of different
//!   sensors may interleave in any order.
//! - `--late-output FILE`: the input lines of the readings no window accepted (Flink's
//!   `sideOutputLateData`), in input order. The file is created (empty) even without late
//!   readings.
//! - stderr: `line N: <reason>: <line>` for every malformed line, then the summary
//!   `malformed lines: M, late records: L` and the totals of lines read, readings and firings.
//!
//! ## How malformed lines and late readings are counted in the job result
//!
//! Malformed lines go to a side output read by the sink `Sink: Malformed Lines`, which prints
//! them on stderr; its `records_in` in the [`JobResult`] is the malformed count. Late readings
//! are the window operator's `late_records`. The program checks both: the lines read by
//! `Parse Readings` must be the readings (what `Timestamps/Watermarks` received) plus the
//! malformed lines, and the late count must equal the late readings collected.
//!
//! Errors (a bad `--window`, a missing input file, an unwritable late output, a line that is not
//! UTF-8) are printed as `error: <message>` on stderr with a non-zero exit code.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, ensure};
use clap::Parser;
use eichhorn::prelude::*;
use eichhorn::time::WatermarkStrategy;
use eichhorn_examples::sensors::{
    MinTemperature, PARSE_OPERATOR_NAME, SensorReading, WindowSpec, colder, malformed_line_count,
    parse_readings_for_windows, records_in,
};
use eichhorn_examples::{init_tracing, print_lines, run_example};

/// The name of the timestamp assigner; its `records_in` counts the readings.
const TIMESTAMPS_OPERATOR_NAME: &str = "Timestamps/Watermarks";

/// The id of the window operator's late side output.
const LATE_READINGS_TAG: &str = "late-readings";

/// Computes the minimum temperature per sensor and event-time window of a CSV file.
///
/// Reads one reading `sensor_id,timestamp_ms,temperature` per line and prints a line
/// `sensor_id,window_start_ms,window_end_ms,min_temperature` for every firing of the tumbling,
/// sliding or session windows of --window, with Flink's semantics: bounded out-of-orderness,
/// allowed lateness, and the readings no window accepted in --late-output. Malformed lines
/// (and readings no window can hold) are reported on stderr as `line N: reason: line` and
/// skipped.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    ops: eichhorn_examples::OpsArgs,
    /// The CSV file of readings `sensor_id,timestamp_ms,temperature`.
    #[arg(long)]
    input: PathBuf,
    /// The windows: tumbling:SIZE_MS, sliding:SIZE_MS:SLIDE_MS or session:GAP_MS.
    #[arg(long, value_name = "SPEC")]
    window: WindowSpec,
    /// How far behind the largest timestamp seen the watermark stays, in milliseconds.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    out_of_orderness_ms: i64,
    /// How long a window accepts readings after the watermark passed its end, in milliseconds.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    allowed_lateness_ms: i64,
    /// The parallelism of the window operator, 1 to 128 (the source, the parser and the
    /// timestamp assigner always run at 1).
    #[arg(long, default_value_t = 1, value_parser = eichhorn_examples::parallelism_parser())]
    parallelism: u32,
    /// Where to write the input lines of the readings no window accepted.
    #[arg(long, value_name = "FILE")]
    late_output: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    run_example(run).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let assigner = args.window.assigner()?;
    // Fail before the job on paths that cannot work; the job would fail too, less directly.
    File::open(&args.input)
        .with_context(|| format!("cannot open input file '{}'", args.input.display()))?;
    let late_file = args
        .late_output
        .as_deref()
        .map(|path| {
            File::create(path)
                .map(|file| (path, file))
                .with_context(|| format!("cannot create late output file '{}'", path.display()))
        })
        .transpose()?;

    let env = StreamEnv::new();
    args.ops.apply(&env);
    env.set_parallelism(args.parallelism);
    let late_tag = OutputTag::<SensorReading>::new(LATE_READINGS_TAG);
    // A reading too close to the limits of i64 for any window is a malformed line.
    let minima = parse_readings_for_windows(env.read_text_file(args.input.clone()), assigner)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(args.out_of_orderness_ms)
                .with_timestamp_assigner(|reading: &SensorReading, _| reading.timestamp_ms),
        )
        .name(TIMESTAMPS_OPERATOR_NAME)
        // One assigner sees every reading in file order: watermarks depend only on the file.
        .set_parallelism(1)
        .keyed()
        .window(assigner)
        .allowed_lateness(args.allowed_lateness_ms)
        .side_output_late_data(&late_tag)
        .reduce_with_process(colder, MinTemperature);
    let late = minima.side_output(&late_tag).collect_sink();
    let firings = minima.collect_sink();
    let result = env.execute("Sensor Windows").await?;

    let firings = firings.take();
    print_lines(&firings)?;
    let mut late = late.take();
    late.sort_by_key(|reading| reading.line_number);
    if let Some((path, file)) = late_file {
        write_late_lines(&late, path, file)?;
    }

    let lines = records_in(&result, PARSE_OPERATOR_NAME)?;
    let malformed = malformed_line_count(&result)?;
    let late_records: u64 = result.operators.iter().map(|m| m.late_records).sum();
    ensure!(
        late_records == late.len() as u64,
        "the job counted {late_records} late records but emitted {} to the late output",
        late.len()
    );
    let readings = records_in(&result, TIMESTAMPS_OPERATOR_NAME)?;
    ensure!(
        readings + malformed == lines,
        "the job read {lines} lines but counted {readings} readings and {malformed} malformed lines"
    );
    eprintln!("malformed lines: {malformed}, late records: {late_records}");
    eprintln!(
        "lines read: {lines}, readings: {readings}, window firings: {}",
        firings.len()
    );
    Ok(())
}

/// Writes the input line of every late reading to the late output file.
fn write_late_lines(late: &[SensorReading], path: &Path, file: File) -> anyhow::Result<()> {
    let mut writer = BufWriter::new(file);
    late.iter()
        .try_for_each(|reading| writeln!(writer, "{}", reading.line))
        .and_then(|()| writer.flush())
        .with_context(|| format!("cannot write late output file '{}'", path.display()))
}
