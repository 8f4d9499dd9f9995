//! Writes the lines of a file to a Kafka topic, one record per line: the input of the Kafka
//! examples (`kafka_etl`, `kafka_to_redis`, `kafka_to_postgres`), from a file of readings.
//!
//! ```text
//! cargo run -p eichhorn-examples --bin kafka_produce -- --brokers HOST:PORT --input FILE \
//!     [--topic readings] [--records-per-batch N]
//! ```
//!
//! The job: a text file source -> `KafkaSink` (at least once, idempotent producer). Each line
//! is the record's value, and its first comma-separated field (a reading's sensor id) the
//! record's key, so one sensor's readings go to one partition, in file order. Empty lines are
//! written too (the consumers report them as malformed, as they report any record that is not
//! a reading). At the end the number of records written is printed: `records: N`.
//!
//! `--records-per-batch` (default 1) sets librdkafka's `batch.num.messages`: tansu 0.6 reports
//! a partition's end as its last batch's base offset + 1, so a bounded source reading a topic
//! tansu stores stops at the true end only when every batch holds one record. Against Kafka,
//! pass a larger number.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use eichhorn::connectors::{KafkaProducerRecord, KafkaSink};
use eichhorn::prelude::*;
use eichhorn_examples::{init_tracing, run_example};

/// The sink's name, to read its count from the job's result.
const SINK: &str = "Sink: Kafka";

/// Writes a file's lines to a Kafka topic.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    ops: eichhorn_examples::OpsArgs,
    /// The brokers, `HOST:PORT[,HOST:PORT...]`.
    #[arg(long, value_name = "HOST:PORT")]
    brokers: String,
    /// The topic to write to (it must exist).
    #[arg(long, default_value = "readings")]
    topic: String,
    /// The file whose lines are written.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Records per producer batch (librdkafka's `batch.num.messages`).
    #[arg(long, value_name = "N", default_value = "1")]
    records_per_batch: NonZeroU32,
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    run_example(run).await
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if !cli.input.is_file() {
        anyhow::bail!("--input {}: no such file", cli.input.display());
    }
    let env = StreamEnv::new();
    cli.ops.apply(&env);
    let sink = KafkaSink::new(&cli.brokers, &cli.topic, |line: &String| {
        let key = line
            .split(',')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        KafkaProducerRecord::value(line.clone()).with_key(key)
    })
    .property("batch.num.messages", &cli.records_per_batch.to_string());
    env.read_text_file(&cli.input)
        .add_two_phase_sink(sink)
        .name(SINK);
    let result = env.execute("kafka produce").await?;
    let records: u64 = result
        .operators
        .iter()
        .filter(|o| o.name == SINK)
        .map(|o| o.records_in)
        .sum();
    println!("records: {records}");
    Ok(())
}
