//! The latency benchmark: drives a job at a fixed event rate and prints end-to-end latency
//! percentiles, from the time each event was scheduled to the time its result reached the sink.
//!
//! ```text
//! latency --job rolling --rate 200000 --seconds 10 [--keys 10000] [--parallelism 1]
//!         [--buffer-timeout-ms N] [--idle-poll-ms N] [--watermark-interval-ms N]
//!         [--window-ms 1000] [--warmup-seconds 2]
//! RESULT engine=eichhorn job=latency-rolling rate=200000 seconds=10 parallelism=1 buffer_timeout_ms=default ... samples=.. p50_us=.. p99_us=.. p999_us=.. max_us=.. peak_rss_kb=..
//! ```
//!
//! Without `--buffer-timeout-ms` and `--idle-poll-ms` the job runs with Eichhorn's defaults
//! (partial batches linger up to 5 ms; an idle source polls again after 10 ms). The low-latency
//! settings are `--buffer-timeout-ms 0 --idle-poll-ms 1 --watermark-interval-ms 1`: every batch
//! leaves at once, the source looks for due events every millisecond, and watermarks follow
//! the events within a millisecond (Flink's `setBufferTimeout(0)` and
//! `setAutoWatermarkInterval`). For the tumbling job the latency of a
//! window's result is measured from the end of its window, so it is the wait for the watermark,
//! the firing and the delivery.
//! Results scheduled in the first `--warmup-seconds` are not counted. The sustained rate must
//! be one the job can keep up with, or the latency grows with the run.

use std::num::{NonZeroU32, NonZeroU64};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, ValueEnum};
use eichhorn::prelude::*;
use eichhorn_benches::harness::{execute_timed, positive_u32, positive_u64};
use eichhorn_benches::latency::{LatencySink, PacedSource, quantile, rolling, tumbling};
use eichhorn_benches::peak_rss_field;

/// The measured job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LatencyJob {
    /// Per-key running count: one result per event.
    Rolling,
    /// Per-key counts in tumbling event-time windows.
    Tumbling,
}

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(about = "Eichhorn latency benchmark: end-to-end latency percentiles at a fixed rate")]
struct Args {
    /// The job: `rolling` or `tumbling`.
    #[arg(long, value_enum)]
    job: LatencyJob,
    /// Events per second, over all source instances.
    #[arg(long, value_parser = positive_u64)]
    rate: NonZeroU64,
    /// How long the source emits, in seconds.
    #[arg(long, value_parser = positive_u64)]
    seconds: NonZeroU64,
    /// Distinct keys.
    #[arg(long, default_value = "10000", value_parser = positive_u64)]
    keys: NonZeroU64,
    /// Parallelism of every operator.
    #[arg(long, default_value = "1", value_parser = positive_u32)]
    parallelism: NonZeroU32,
    /// How long partial batches may wait (default: the framework's).
    #[arg(long)]
    buffer_timeout_ms: Option<u64>,
    /// How soon an idle source polls again (default: the framework's).
    #[arg(long)]
    idle_poll_ms: Option<u64>,
    /// How often periodic watermarks are emitted (default: the framework's, 200 ms).
    #[arg(long)]
    watermark_interval_ms: Option<u64>,
    /// Tumbling job only: the window size.
    #[arg(long, default_value = "1000")]
    window_ms: i64,
    /// Results scheduled in the first this many seconds are not counted.
    #[arg(long, default_value = "2")]
    warmup_seconds: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("latency: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn field(value: Option<u64>) -> String {
    value.map_or_else(|| "default".to_string(), |v| v.to_string())
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.window_ms <= 0 {
        bail!("--window-ms must be positive, got {}", args.window_ms);
    }
    if args.warmup_seconds >= args.seconds.get() {
        bail!(
            "--warmup-seconds {} leaves nothing of a {}-second run to measure",
            args.warmup_seconds,
            args.seconds
        );
    }
    let env = StreamEnv::new();
    env.set_parallelism(args.parallelism.get());
    env.configure(|c| {
        if let Some(ms) = args.buffer_timeout_ms {
            c.buffer_timeout_ms = ms;
        }
        if let Some(ms) = args.idle_poll_ms {
            c.source_idle_poll_ms = ms;
        }
        if let Some(ms) = args.watermark_interval_ms {
            c.auto_watermark_interval_ms = ms;
        }
    });
    let origin = Instant::now();
    let source = PacedSource::new(
        origin,
        args.rate.get(),
        Duration::from_secs(args.seconds.get()),
        args.keys,
    );
    let mut sink = LatencySink::new(origin, Duration::from_secs(args.warmup_seconds));
    if args.job == LatencyJob::Tumbling {
        sink = sink.for_windows(args.window_ms as u64);
    }
    let events = env.add_source(source, "paced events");
    let results = match args.job {
        LatencyJob::Rolling => rolling(events),
        LatencyJob::Tumbling => tumbling(events, args.window_ms),
    };
    results.add_sink(sink.clone());
    let job = match args.job {
        LatencyJob::Rolling => "latency-rolling",
        LatencyJob::Tumbling => "latency-tumbling",
    };
    let (_result, wall) = execute_timed(&env, job)?;
    let latencies = sink.sorted_latencies();
    if latencies.is_empty() {
        bail!("no result arrived after the warm-up");
    }
    println!(
        "RESULT engine=eichhorn job={job} rate={} seconds={} keys={} parallelism={} \
         buffer_timeout_ms={} idle_poll_ms={} watermark_interval_ms={} wall_s={:.3} samples={} p50_us={} p99_us={} \
         p999_us={} max_us={} {}",
        args.rate,
        args.seconds,
        args.keys,
        args.parallelism,
        field(args.buffer_timeout_ms),
        field(args.idle_poll_ms),
        field(args.watermark_interval_ms),
        wall.as_secs_f64(),
        latencies.len(),
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        quantile(&latencies, 0.999),
        latencies.last().copied().unwrap_or(0),
        peak_rss_field(),
    );
    Ok(())
}
