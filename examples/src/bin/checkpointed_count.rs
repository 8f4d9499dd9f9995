//! A running sum per key with exactly-once output, checkpoints and recovery.
//!
//! ```text
//! cargo run --release -p eichhorn-examples --bin checkpointed_count -- --input FILE --output DIR
//!     [--parallelism N] [--state-backend memory|lmdb] [--checkpoint-interval-ms N]
//!     [--checkpoint-dir DIR] [--source-rate RECORDS_PER_S] [--fail-after-records N]
//!     [--damage-checkpoint KIND] [--restore-from PATH] [--allow-fallback-past-commits]
//! ```
//!
//! The input holds `key,value` lines (`value` a 64-bit integer), read by a checkpointed file
//! source at parallelism 1 (at most `--source-rate` records per second when given). Lines that
//! do not parse are reported on stderr as `line N: <reason>: <line>` and skipped. The job keys
//! by `key` and keeps a running sum per key in keyed `ValueState<i64>` at `--parallelism N`;
//! every record emits `key,running_sum` through the exactly-once file sink into `DIR`. Committed
//! files are the visible files in `DIR`; in-progress and pending files are hidden (`.` names).
//!
//! Checkpoints go to `--checkpoint-dir` (default `DIR/.checkpoints`), in a folder per run named
//! by the run's job id (logged at start and printed at the end): a run restarts only from its
//! own checkpoints, and starts from an earlier run's only with `--restore-from`. Without
//! `--checkpoint-interval-ms` only the final checkpoint at the end of the input runs, and it
//! commits everything. `--fail-after-records N` makes subtask 0 of the sum operator panic once,
//! on its N-th record: the job restarts from the latest completed checkpoint (or from the
//! beginning) and the committed output is the same as without the failure.

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use eichhorn::checkpoint::RestartStrategy;
use eichhorn::checkpoint::damage::CheckpointDamage;
use eichhorn::connectors::{NumberedFileSource, RateLimitedSource};
use eichhorn::prelude::*;
use eichhorn::state::StateBackendKind;
use eichhorn_examples::counting::{BadLine, InjectedFailure, ParseKeyValues, RunningSum};
use eichhorn_examples::{init_tracing, run_example};

/// Running sums per key with exactly-once file output.
///
/// Reads `key,value` lines, keeps a running sum per key in keyed state and writes
/// `key,running_sum` for every record through an exactly-once file sink into --output, with
/// checkpoints and recovery: after a failure (--fail-after-records injects one) the job restarts
/// from the latest checkpoint and the committed output is the same.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    ops: eichhorn_examples::OpsArgs,
    /// The CSV file of `key,value` lines.
    #[arg(long)]
    input: PathBuf,
    /// The output directory (created if missing).
    #[arg(long)]
    output: PathBuf,
    /// The parallelism of the sum operator and the sink, 1 to 128.
    #[arg(long, default_value_t = 1, value_parser = eichhorn_examples::parallelism_parser())]
    parallelism: u32,
    /// Where keyed state lives: memory or lmdb.
    #[arg(long, default_value = "memory")]
    state_backend: StateBackendKind,
    /// Periodic checkpoint interval in milliseconds (off when not given).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_interval_ms: Option<u64>,
    /// Where checkpoints are written (default: DIR/.checkpoints).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Read at most this many records per second.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    source_rate: Option<u64>,
    /// Subtask 0 of the sum operator fails once, on its N-th record.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    fail_after_records: Option<u64>,
    /// Just before the injected failure, damage the newest checkpoint of this run (to watch
    /// recovery skip it, or refuse to when that would duplicate committed output).
    /// One of flip-byte, truncate-state, delete-state, truncate-metadata, delete-checkpoint.
    #[arg(long, value_name = "KIND", requires = "fail_after_records")]
    damage_checkpoint: Option<CheckpointDamage>,
    /// Start from a savepoint, a retained checkpoint (`DIR/<job id>/chk-N`) or an earlier
    /// run's checkpoint folder (`DIR/<job id>`: its newest intact checkpoint). A run never
    /// resumes another run's checkpoints unless named here.
    #[arg(long)]
    restore_from: Option<PathBuf>,
    /// Let a restart fall back past a damaged checkpoint whose output was already committed,
    /// accepting that output twice (otherwise the job fails and says what was committed).
    #[arg(long)]
    allow_fallback_past_commits: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    run_example(run).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    File::open(&args.input)
        .with_context(|| format!("cannot open input file '{}'", args.input.display()))?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create output directory '{}'", args.output.display()))?;
    let checkpoint_dir = args
        .checkpoint_dir
        .clone()
        .unwrap_or_else(|| args.output.join(".checkpoints"));

    let env = StreamEnv::new();
    args.ops.apply(&env);
    env.set_parallelism(args.parallelism);
    env.set_state_backend(args.state_backend);
    env.set_checkpoint_storage(&checkpoint_dir);
    if let Some(interval) = args.checkpoint_interval_ms {
        env.enable_checkpointing(interval);
    }
    if let Some(path) = &args.restore_from {
        env.restore_from(path, false);
    }
    env.allow_fallback_past_commits(args.allow_fallback_past_commits);
    // Recover by itself, with or without periodic checkpoints.
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 3,
        delay_ms: 100,
    });

    let source = NumberedFileSource::new(args.input.clone());
    let lines = match args.source_rate {
        Some(rate) => env.add_source(RateLimitedSource::new(source, rate), "Checkpointed File"),
        None => env.add_source(source, "Checkpointed File"),
    }
    .set_parallelism(1)
    .uid("file-source");
    let bad = OutputTag::<BadLine>::new("bad-lines");
    let records = lines
        .process(ParseKeyValues::new(bad.clone()))
        .name("Parse")
        .uid("parse")
        .set_parallelism(1);
    records
        .side_output(&bad)
        .print_to_err()
        .name("Sink: Bad Lines")
        .set_parallelism(1);
    records
        .key_by(|(key, _): &(String, i64)| key.clone())
        .process(RunningSum::new(args.fail_after_records.map(|after| {
            let failure = InjectedFailure::new(after);
            match args.damage_checkpoint {
                Some(damage) => failure.damaging(checkpoint_dir.clone(), damage),
                None => failure,
            }
        })))
        .name("Running Sum")
        .uid("running-sum")
        .write_exactly_once(args.output.clone(), |line: &String| line.clone())
        .name("Sink: Exactly-Once Files")
        .uid("exactly-once-files");

    let result = env.execute("Checkpointed Count").await?;
    eprintln!(
        "done: job {} ({} restart(s), {} checkpoint(s) completed{}{})",
        result.job_id,
        result.restarts,
        result.completed_checkpoints,
        result
            .checkpoint_dir
            .as_ref()
            .map(|d| format!(", kept in {}", d.display()))
            .unwrap_or_default(),
        result
            .restored_from
            .map(|r| format!(", last restored from {r}"))
            .unwrap_or_default()
    );
    Ok(())
}
