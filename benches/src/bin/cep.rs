//! The CEP benchmark: a pattern over a keyed, event-time stream into a discarding sink, one
//! result line.
//!
//! ```text
//! cep --job followed-by --events 10000000 --keys 10000 [--within-ms 60000] [--parallelism 2]
//!     [--state-backend memory|lmdb] [--checkpoint-interval-ms 1000]
//! RESULT engine=eichhorn job=cep-followed-by events=.. keys=.. parallelism=.. state_backend=.. checkpoint_interval=.. completed_checkpoints=.. matches=.. wall_s=.. cpu_s=.. events_per_s=.. peak_rss_kb=..
//! ```
//!
//! Event `g` (from a parallel generator) belongs to key `splitmix64(g) % keys`, has kind
//! `(splitmix64(g) >> 32) % 3` and event time `g` ms, so each generator subtask's timestamps
//! rise and no event is late. The jobs:
//!
//! - `followed-by`: `begin(a: kind 0).followed_by(b: kind 1).followed_by(c: kind 2)`
//!   within `--within-ms` (default 60,000);
//! - `login`: `begin(first: kind != 0).next(second: kind != 0)` within `--within-ms` (the login
//!   pattern: kind 0 is a success, the others failures).
//!
//! The number of matches is checked against a plain sequential computation over the same
//! events (per key, in time order); a mismatch exits non-zero. `wall_s` covers the job's
//! execution only, and `cpu_s` is the process's CPU time over the same span.

use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroU64};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use eichhorn::cep::{CEP, Pattern};
use eichhorn::prelude::*;
use eichhorn::state::{StateBackendKind, splitmix64};
use eichhorn_benches::harness::{
    backend_name, checkpoint_interval_field, cpu_field, execute_timed, positive_u32, positive_u64,
    prepare_env, process_cpu_seconds,
};
use eichhorn_benches::{DISCARD_SINK_NAME, DiscardSink, peak_rss_field};

/// `(key, kind, timestamp_ms)`.
type Event = (u64, u8, i64);

/// The CEP jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CepJob {
    /// Three events with `followed_by` and `within`.
    FollowedBy,
    /// Two consecutive failures (`next`) within the bound.
    Login,
}

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(about = "Eichhorn CEP benchmark: a three-event followed_by pattern or the login pattern")]
struct Args {
    /// The job.
    #[arg(long, value_enum)]
    job: CepJob,
    /// Number of events (at least 1).
    #[arg(long, value_parser = positive_u64)]
    events: NonZeroU64,
    /// Number of distinct keys (at least 1).
    #[arg(long, value_parser = positive_u64)]
    keys: NonZeroU64,
    /// The pattern's time bound in milliseconds of event time (one event per ms).
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(i64).range(1..))]
    within_ms: i64,
    /// Parallelism of every operator (at least 1).
    #[arg(long, default_value = "1", value_parser = positive_u32)]
    parallelism: NonZeroU32,
    /// Where keyed state lives: `memory` or `lmdb`.
    #[arg(long, default_value = "memory")]
    state_backend: StateBackendKind,
    /// Take a checkpoint every this many milliseconds (written to a temporary directory).
    #[arg(long)]
    checkpoint_interval_ms: Option<u64>,
}

fn event(g: u64, keys: u64) -> Event {
    let h = splitmix64(g);
    (h % keys, ((h >> 32) % 3) as u8, g as i64)
}

/// The matches a sequential pass finds (the oracle of the run's match count).
fn expected_matches(job: CepJob, events: u64, keys: u64, within: i64) -> u64 {
    let mut matches = 0u64;
    match job {
        CepJob::Login => {
            let mut last: HashMap<u64, (i64, bool)> = HashMap::new();
            for g in 0..events {
                let (key, kind, ts) = event(g, keys);
                let failed = kind != 0;
                if let Some((last_ts, last_failed)) = last.insert(key, (ts, failed))
                    && last_failed
                    && failed
                    && ts - last_ts < within
                {
                    matches += 1;
                }
            }
        }
        CepJob::FollowedBy => {
            // Per key, the open partial matches: (start, the stage they wait for).
            let mut open: HashMap<u64, Vec<(i64, u8)>> = HashMap::new();
            for g in 0..events {
                let (key, kind, ts) = event(g, keys);
                let partials = open.entry(key).or_default();
                partials.retain(|(start, _)| ts - start < within);
                let mut completed = 0;
                partials.retain_mut(|(_, waits_for)| {
                    if kind != *waits_for {
                        return true;
                    }
                    if kind == 2 {
                        completed += 1;
                        return false;
                    }
                    *waits_for = 2;
                    true
                });
                matches += completed;
                if kind == 0 {
                    partials.push((ts, 1));
                }
            }
        }
    }
    matches
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cep: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let events = args.events.get();
    let keys = args.keys.get();
    let parallelism = args.parallelism.get();
    let within = args.within_ms;
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    let _scratch = prepare_env(&env, args.state_backend, args.checkpoint_interval_ms)?;
    let keyed = env
        .from_generator(events, move |g| event(g, keys))
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(0)
                .with_timestamp_assigner(|e: &Event, _| e.2),
        )
        .key_by(|e: &Event| e.0);
    let pattern = match args.job {
        CepJob::FollowedBy => Pattern::begin("a")
            .where_(|e: &Event| e.1 == 0)
            .followed_by("b")
            .where_(|e: &Event| e.1 == 1)
            .followed_by("c")
            .where_(|e: &Event| e.1 == 2),
        CepJob::Login => Pattern::begin("first")
            .where_(|e: &Event| e.1 != 0)
            .next("second")
            .where_(|e: &Event| e.1 != 0),
    }
    .within(within);
    CEP::pattern(keyed, pattern)
        .select(|m| m.end_timestamp().unwrap_or_default())
        .add_sink(DiscardSink)
        .name(DISCARD_SINK_NAME);

    let job = match args.job {
        CepJob::FollowedBy => "cep-followed-by",
        CepJob::Login => "cep-login",
    };
    let cpu_before = process_cpu_seconds();
    let (result, wall) = execute_timed(&env, job)?;
    let cpu = cpu_field(cpu_before, process_cpu_seconds());
    let matches = result
        .operator(DISCARD_SINK_NAME)
        .with_context(|| format!("no metrics for '{DISCARD_SINK_NAME}' in the job result"))?
        .records_in;
    let dropped: u64 = result.operators.iter().map(|m| m.dropped_records).sum();
    let late: u64 = result.operators.iter().map(|m| m.late_records).sum();
    if dropped != 0 || late != 0 {
        bail!(
            "{dropped} partial matches dropped and {late} events late: the run is not comparable"
        );
    }
    let expected = expected_matches(args.job, events, keys, within);
    if matches != expected {
        bail!("wrong result: {matches} matches, expected {expected}");
    }
    let wall_s = wall.as_secs_f64();
    println!(
        "RESULT engine=eichhorn job={job} events={events} keys={keys} parallelism={parallelism} \
         state_backend={} checkpoint_interval={} completed_checkpoints={} matches={matches} \
         wall_s={wall_s:.6} {cpu} events_per_s={:.0} {}",
        backend_name(args.state_backend),
        checkpoint_interval_field(args.checkpoint_interval_ms),
        result.completed_checkpoints,
        events as f64 / wall_s,
        peak_rss_field()
    );
    Ok(())
}
