//! The keyed snapshot micro benchmark: what one checkpoint of a keyed state store costs, on the
//! data path (the barrier) and in the checkpoint writer, without the rest of a job.
//!
//! ```text
//! snapshot --keys 1000000 --state-backend lmdb [--rounds 7] [--touched-percent 40]
//! RESULT bench=snapshot state_backend=lmdb keys=1000000 rounds=7 barrier_ms=.. barrier_cpu_ms=.. streamed_ms=.. streamed_cpu_ms=.. materialized_ms=.. file_bytes=..
//! ```
//!
//! The store holds what the rolling job's sum keeps: a `(u64, u64)` per `u64` key in the
//! value table `rolling-aggregate`. Each round updates `--touched-percent` of the keys (spread
//! over the key space, as a second of the rolling job at a million keys does), then takes a
//! snapshot and reads it out twice: `streamed` is what the checkpoint writer does (the state
//! file's keyed part, written straight from the frozen view), `materialized` builds the
//! `KeyedStateSnapshot` and encodes it, as the writer did before. Medians over the rounds; the
//! `_cpu_ms` figures count this thread's CPU time only (Linux), which other processes on a
//! shared machine do not inflate.

use std::num::NonZeroU64;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use eichhorn::state::snapshot::encode_keyed_snapshot;
use eichhorn::state::{
    KeyGroupRange, KeyedBackendConfig, KeyedStateStore, StateBackendKind, splitmix64,
};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(about = "Eichhorn keyed snapshot micro benchmark")]
struct Args {
    /// Number of keys in the store (at least 1).
    #[arg(long)]
    keys: NonZeroU64,
    /// Where keyed state lives: `memory` or `lmdb`.
    #[arg(long, default_value = "memory")]
    state_backend: StateBackendKind,
    /// Snapshots to take (the figures are medians).
    #[arg(long, default_value = "7")]
    rounds: usize,
    /// The share of keys updated between two snapshots, in percent.
    #[arg(long, default_value = "40")]
    touched_percent: u64,
    /// Skip the materialising path (to profile the streamed one alone).
    #[arg(long)]
    streamed_only: bool,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("snapshot: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

const STATE: &str = "rolling-aggregate";

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let keys = args.keys.get();
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let config = KeyedBackendConfig {
        kind: args.state_backend,
        local_dir: scratch.path().join("lmdb"),
        max_parallelism: 128,
        key_groups: KeyGroupRange::for_subtask(128, 1, 0),
        // The runtime's defaults.
        cache_entries: 1 << 16,
        lmdb_map_size: 4 << 30,
    };
    let mut store = KeyedStateStore::<u64>::open(config).context("cannot open the store")?;
    {
        let mut table = store.value_table::<(u64, u64)>(STATE)?;
        for key in 0..keys {
            table.insert(key, (key, 1))?;
        }
    }
    let touched = keys * args.touched_percent.min(100) / 100;
    let mut barrier = Vec::new();
    let mut barrier_cpu = Vec::new();
    let mut streamed = Vec::new();
    let mut streamed_cpu = Vec::new();
    let mut materialized = Vec::new();
    let mut file_bytes = 0;
    let mut event = 0u64;
    for _ in 0..args.rounds.max(1) {
        {
            let mut table = store.value_table::<(u64, u64)>(STATE)?;
            for _ in 0..touched {
                let key = splitmix64(event) % keys;
                event += 1;
                table.get_or_insert_with(key, || (key, 0))?.1 += 1;
            }
        }
        let (start, cpu) = (Instant::now(), thread_cpu());
        let pending = store.snapshot(0)?;
        barrier.push(start.elapsed());
        barrier_cpu.extend(cpu.zip(thread_cpu()).map(|(a, b)| b - a));
        let (start, cpu) = (Instant::now(), thread_cpu());
        let mut out = Vec::new();
        encode_keyed_snapshot(vec![pending], &mut out)?;
        streamed.push(start.elapsed());
        streamed_cpu.extend(cpu.zip(thread_cpu()).map(|(a, b)| b - a));
        file_bytes = out.len();
        drop(out);
        if args.streamed_only {
            continue;
        }

        let pending = store.snapshot(0)?;
        let start = Instant::now();
        let snapshot = pending.complete()?;
        let bytes = postcard::to_allocvec(&snapshot).context("cannot encode")?;
        drop(snapshot);
        materialized.push(start.elapsed());
        anyhow::ensure!(bytes.len() == file_bytes, "the two paths disagree");
    }
    let backend = match args.state_backend {
        StateBackendKind::Memory => "memory",
        StateBackendKind::Lmdb => "lmdb",
    };
    println!(
        "RESULT bench=snapshot state_backend={backend} keys={keys} rounds={} barrier_ms={:.1} \
         barrier_cpu_ms={:.1} streamed_ms={:.1} streamed_cpu_ms={:.1} materialized_ms={:.1} \
         file_bytes={file_bytes}",
        barrier.len(),
        median_ms(&mut barrier),
        median_ms(&mut barrier_cpu),
        median_ms(&mut streamed),
        median_ms(&mut streamed_cpu),
        median_ms(&mut materialized),
    );
    Ok(())
}

/// The median in milliseconds (NaN for none).
fn median_ms(times: &mut [Duration]) -> f64 {
    times.sort_unstable();
    times
        .get(times.len() / 2)
        .map_or(f64::NAN, |t| t.as_secs_f64() * 1e3)
}

/// The CPU time this thread has used (Linux: `/proc/thread-self/schedstat`), so that figures
/// on a shared machine do not count the time other processes had the CPU; `None` elsewhere.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}
