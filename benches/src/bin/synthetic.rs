//! The synthetic benchmark: runs one job of `eichhorn_benches` into a discarding sink and prints
//! one result line.
//!
//! ```text
//! synthetic --job stateless --events 50000000 --keys 10000 [--parallelism 2] [--batch-records 1024]
//! RESULT engine=eichhorn job=stateless events=50000000 keys=10000 parallelism=2 ... outputs=.. count_sum=.. wall_s=.. cpu_s=.. events_per_s=.. peak_rss_kb=..
//! synthetic --job fanout --events 2000000 --keys 10000 [--outputs-per-record 10]
//! RESULT engine=eichhorn job=fanout events=2000000 keys=10000 parallelism=1 ... outputs_per_record=2000000 wall_s=.. events_per_s=.. peak_rss_kb=..
//! ```
//!
//! The fanout job is the rolling job with few input records of many outputs each (all events
//! from one input record unless `--outputs-per-record` says otherwise); comparing
//! `--outputs-per-record 10` with the default shows what a record with millions of outputs
//! costs per event.
//!
//! `outputs` is the number of records the sink received and `count_sum` the sum of the window
//! counts (0 for the jobs without windows), so another engine's run can be checked against
//! this one; `cpu_s` is the CPU time of the process over the same span as `wall_s`.
//!
//! `wall_s` runs from the start of job execution to its completion (`StreamEnv::execute`);
//! process start-up and the correctness check are outside it. After the run, the sink's record
//! count is compared with the expected count (for the window jobs: the number of windows, except
//! for sessions, whose number depends on watermark timing), and for the window jobs the sum of
//! the emitted counts with the number of (event, window) pairs; a mismatch exits non-zero.
//!
//! `peak_rss_kb` is the process's peak resident set size (`VmHWM` from `/proc/self/status`,
//! read after the run and the check), so it includes the runtime, the generator and the
//! checks. Where it cannot be read (not Linux) the field says `peak_rss_kb=unknown` and the
//! reason goes to stderr.

use eichhorn_benches::harness::{
    backend_name, checkpoint_interval_field, cpu_field, execute_timed, positive_u32, positive_u64,
    prepare_env, process_cpu_seconds,
};
use std::num::{NonZeroU32, NonZeroU64};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use eichhorn::prelude::*;
use eichhorn::state::StateBackendKind;
use eichhorn_benches::{
    CountSumSink, DISCARD_SINK_NAME, DiscardSink, Job, fanout, peak_rss_field, rolling, stateless,
    windowed,
};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(about = "Eichhorn synthetic benchmark: stateless, rolling-count, window and timer jobs")]
struct Args {
    /// The job: `stateless`, `rolling`, `tumbling`, `sliding`, `session`, `timers` or `fanout`.
    #[arg(long)]
    job: Job,
    /// Number of events (at least 1).
    #[arg(long, value_parser = positive_u64)]
    events: NonZeroU64,
    /// Number of distinct keys (at least 1).
    #[arg(long, value_parser = positive_u64)]
    keys: NonZeroU64,
    /// Parallelism of every operator (at least 1).
    #[arg(long, default_value = "1", value_parser = positive_u32)]
    parallelism: NonZeroU32,
    /// Records per batch between subtasks (default: the framework's default).
    #[arg(long)]
    batch_records: Option<usize>,
    /// Override the credits (batches) each input channel grants (experiments only).
    #[arg(long)]
    credits: Option<u32>,
    /// Where keyed state lives: `memory` or `lmdb`.
    #[arg(long, default_value = "memory")]
    state_backend: StateBackendKind,
    /// Take a checkpoint every this many milliseconds (written to a temporary directory).
    #[arg(long)]
    checkpoint_interval_ms: Option<u64>,
    /// Fanout job only: the outputs of each input record (at least 1); default: all events
    /// from one input record.
    #[arg(long, value_parser = positive_u64)]
    outputs_per_record: Option<NonZeroU64>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("synthetic: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let events = args.events.get();
    let keys = args.keys;
    let parallelism = args.parallelism.get();
    if args.outputs_per_record.is_some() && args.job != Job::Fanout {
        bail!(
            "--outputs-per-record applies to the fanout job only, not '{}'",
            args.job
        );
    }
    let outputs_per_record = args.outputs_per_record.unwrap_or(args.events);

    // Computed before the timed region: the stateless and window counts need a pass over every
    // event.
    let expected = args.job.expected_sink_records(events, keys);
    let expected_sum = args.job.expected_count_sum(events);

    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    if let Some(credits) = args.credits {
        env.configure(|config| config.credits_per_channel = credits);
    }
    if let Some(batch_records) = args.batch_records {
        env.configure(|config| config.batch_records_max = batch_records);
    }
    // Checkpoints and LMDB's working files go to a temporary directory removed at the end.
    let _scratch = prepare_env(&env, args.state_backend, args.checkpoint_interval_ms)?;
    let count_sum = CountSumSink::new();
    match args.job {
        Job::Stateless => stateless(&env, events, keys)
            .add_sink(DiscardSink)
            .name(DISCARD_SINK_NAME),
        Job::Rolling => rolling(&env, events, keys)
            .add_sink(DiscardSink)
            .name(DISCARD_SINK_NAME),
        Job::Fanout => fanout(&env, events, keys, outputs_per_record)
            .add_sink(DiscardSink)
            .name(DISCARD_SINK_NAME),
        Job::Tumbling | Job::Sliding | Job::Session | Job::Timers => {
            windowed(args.job, &env, events, keys)
                .context("invalid window parameters")?
                .context("not a window job")?
                .add_sink(count_sum.clone())
                .name(DISCARD_SINK_NAME)
        }
    };

    let job_name = format!("synthetic {}", args.job);
    let cpu_before = process_cpu_seconds();
    let (result, wall) = execute_timed(&env, &job_name)?;
    let cpu = cpu_field(cpu_before, process_cpu_seconds());
    let sink = result
        .operator(DISCARD_SINK_NAME)
        .with_context(|| format!("no metrics for '{DISCARD_SINK_NAME}' in the job result"))?;
    if let Some(expected) = expected
        && sink.records_in != expected
    {
        bail!(
            "wrong result: the sink received {} records, expected {expected}",
            sink.records_in
        );
    }
    if let Some(expected_sum) = expected_sum
        && count_sum.total() != expected_sum
    {
        bail!(
            "wrong result: the window counts add up to {}, expected {expected_sum}",
            count_sum.total()
        );
    }

    let wall_s = wall.as_secs_f64();
    let events_per_s = events as f64 / wall_s;
    let backend = backend_name(args.state_backend);
    let checkpoints = checkpoint_interval_field(args.checkpoint_interval_ms);
    // Only the fanout job has this field, so the other jobs' lines stay as they were.
    let fanout = if args.job == Job::Fanout {
        format!(" outputs_per_record={outputs_per_record}")
    } else {
        String::new()
    };
    println!(
        "RESULT engine=eichhorn job={} events={events} keys={keys} parallelism={parallelism} \
         state_backend={backend} checkpoint_interval={checkpoints} completed_checkpoints={}{fanout} \
         outputs={} count_sum={} wall_s={wall_s:.6} {cpu} events_per_s={events_per_s:.0} {}",
        args.job,
        result.completed_checkpoints,
        sink.records_in,
        count_sum.total(),
        peak_rss_field()
    );
    Ok(())
}
