//! Kafka to Kafka: sensor readings from a topic, the minimum temperature per sensor and
//! tumbling event-time window, written to another topic (the Flink book's exactly-once
//! pipeline).
//!
//! ```text
//! cargo run -p eichhorn-examples --bin kafka_etl -- --brokers HOST:PORT \
//!     [--input-topic readings] [--output-topic minima] [--window-ms 1000] [--bounded] \
//!     [--exactly-once PREFIX] [--out-of-orderness-ms N] [--idleness-ms N] [--parallelism N] \
//!     [--checkpoint-dir DIR] [--restore-from DIR/JOB_ID] [--abort-at-commit N]
//! ```
//!
//! ## The job
//!
//! `KafkaSource` (one split per partition, watermarks per partition) -> `key_by(sensor_id)` ->
//! tumbling event-time windows of `--window-ms` -> `reduce_with_process(colder,
//! MinTemperature)` -> `KafkaSink` into `--output-topic`, keyed by sensor, one record
//! `sensor_id,window_start_ms,window_end_ms,min_temperature` per window. Checkpoints every
//! `--checkpoint-interval-ms`.
//!
//! With `--exactly-once PREFIX` the sink writes through Kafka transactions (transactional ids
//! `PREFIX-<subtask>-<n>`), committed when their checkpoint completes: consumers reading
//! `read_committed` see every window once, also after failures. That needs a broker that
//! supports transactions; without the flag the sink is at least once (idempotent producer).
//!
//! With `--checkpoint-dir DIR` checkpoints are files under `DIR/<job id>`, and a later run
//! started with `--restore-from DIR/<job id>` goes on from the newest of them, also after the
//! process died: a transaction the dead process pre-committed for a completed checkpoint is
//! committed by the new one with its recorded producer id and epoch. `--abort-at-commit N`
//! aborts the process at the sink's N-th commit (checkpoint completed, transaction not yet
//! committed), the crash this recovery is for.
//!
//! Records that are not readings are printed on stderr as `error: cannot deserialise the record
//! at TOPIC/PARTITION@OFFSET: reason`. At the end (with `--bounded`) the number of windows
//! written is printed on stdout: `windows: N`.

use std::process::ExitCode;

use clap::Parser;
use eichhorn::connectors::{KafkaProducerRecord, KafkaSink};
use eichhorn::operator::window::{TimeDomain, WindowAssigner};
use eichhorn::prelude::*;
use eichhorn_examples::kafka_readings::{AbortAtCommit, KafkaInput, print_errors, read_readings};
use eichhorn_examples::sensors::{MinTemperature, SensorReading, WindowMinimum, colder};
use eichhorn_examples::{init_tracing, run_example};

/// Minimum temperature per sensor and tumbling window, from one Kafka topic to another.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    ops: eichhorn_examples::OpsArgs,
    #[command(flatten)]
    input: KafkaInput,
    /// The topic the window minima go to.
    #[arg(long, value_name = "TOPIC", default_value = "minima")]
    output_topic: String,
    /// The windows' size, in ms.
    #[arg(long, value_name = "MS", default_value_t = 1_000)]
    window_ms: i64,
    /// Write exactly once through Kafka transactions with this transactional id prefix.
    #[arg(long, value_name = "PREFIX")]
    exactly_once: Option<String>,
    /// Extra producer property `key=value` (repeatable), e.g. `linger.ms=5`.
    #[arg(long = "producer-property", value_name = "KEY=VALUE")]
    producer_properties: Vec<String>,
    /// Write checkpoints as files under `DIR/<job id>` (default: in memory).
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<std::path::PathBuf>,
    /// Start from a savepoint, a checkpoint (`DIR/<job id>/chk-N`) or an earlier run's
    /// checkpoint folder (`DIR/<job id>`: its newest intact checkpoint).
    #[arg(long, value_name = "PATH")]
    restore_from: Option<std::path::PathBuf>,
    /// For crash tests: abort the process at the sink's N-th commit, after its checkpoint
    /// completed and before the transaction is committed.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    abort_at_commit: Option<u64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    run_example(run).await
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let assigner = WindowAssigner::tumbling(TimeDomain::EventTime, cli.window_ms, 0)
        .map_err(|e| anyhow::anyhow!("--window-ms {}: {e}", cli.window_ms))?;
    let env = StreamEnv::new();
    cli.ops.apply(&env);
    if let Some(dir) = &cli.checkpoint_dir {
        env.set_checkpoint_storage(dir);
    }
    if let Some(path) = &cli.restore_from {
        env.restore_from(path, false);
    }
    let (readings, errors) = read_readings(&env, &cli.input);
    print_errors(errors);
    let mut sink = KafkaSink::new(
        &cli.input.brokers,
        &cli.output_topic,
        |m: &WindowMinimum| {
            KafkaProducerRecord::value(m.to_string()).with_key(m.sensor_id.clone().into_bytes())
        },
    );
    for property in &cli.producer_properties {
        let (key, value) = property
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--producer-property {property:?}: not KEY=VALUE"))?;
        sink = sink.property(key, value);
    }
    if let Some(prefix) = &cli.exactly_once {
        sink = sink.exactly_once(prefix);
    }
    let minima = readings
        .key_by(|r: &SensorReading| r.sensor_id.clone())
        .window(assigner)
        .reduce_with_process(colder, MinTemperature);
    match cli.abort_at_commit {
        Some(n) => minima.add_two_phase_sink(AbortAtCommit::new(sink, n)),
        None => minima.add_two_phase_sink(sink),
    }
    .name("Sink: Kafka Minima");
    let result = env.execute("kafka etl").await?;
    let windows = result
        .operators
        .iter()
        .filter(|o| o.name == "Sink: Kafka Minima")
        .map(|o| o.records_in)
        .sum::<u64>();
    println!("windows: {windows}");
    Ok(())
}
