//! Kafka to PostgreSQL (the Flink book's JDBC sink example): the highest temperature of every
//! sensor, upserted into a table.
//!
//! ```text
//! cargo run -p eichhorn-examples --bin kafka_to_postgres -- --brokers HOST:PORT \
//!     --postgres "host=127.0.0.1 port=5432 user=postgres dbname=postgres" \
//!     [--table sensor_max] [--input-topic readings] [--bounded] [--exactly-once PREFIX]
//! ```
//!
//! The table must exist:
//!
//! ```sql
//! CREATE TABLE sensor_max (sensor_id TEXT PRIMARY KEY, max_temperature DOUBLE PRECISION NOT NULL)
//! ```
//!
//! The job: `KafkaSource` -> `key_by(sensor_id)` -> a rolling maximum of the temperature ->
//! `PostgresSink` upserting `(sensor_id, max_temperature)`. Upserts are idempotent, so at least
//! once already leaves the right table after a failure; `--exactly-once PREFIX` writes each
//! checkpoint's rows in a prepared transaction (`PREPARE TRANSACTION`, needs
//! `max_prepared_transactions` > 0) committed when the checkpoint completes. At the end (with
//! `--bounded`) the number of upserts is printed: `upserts: N`.

use std::process::ExitCode;

use clap::Parser;
use eichhorn::connectors::{PostgresSink, SqlValue};
use eichhorn::prelude::*;
use eichhorn_examples::kafka_readings::{KafkaInput, print_errors, read_readings};
use eichhorn_examples::sensors::SensorReading;
use eichhorn_examples::{init_tracing, run_example};

/// Highest temperature per sensor, from Kafka into a PostgreSQL table.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    ops: eichhorn_examples::OpsArgs,
    #[command(flatten)]
    input: KafkaInput,
    /// The PostgreSQL connection string (libpq style).
    #[arg(long, value_name = "CONNECTION")]
    postgres: String,
    /// The table (`sensor_id TEXT PRIMARY KEY, max_temperature DOUBLE PRECISION`).
    #[arg(long, value_name = "TABLE", default_value = "sensor_max")]
    table: String,
    /// Write exactly once through prepared transactions with this id prefix.
    #[arg(long, value_name = "PREFIX")]
    exactly_once: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    run_example(run).await
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let env = StreamEnv::new();
    cli.ops.apply(&env);
    let (readings, errors) = read_readings(&env, &cli.input);
    print_errors(errors);
    let mut sink = PostgresSink::upsert(
        &cli.postgres,
        &cli.table,
        &["sensor_id", "max_temperature"],
        &["sensor_id"],
        |(sensor, max): &(String, f64)| vec![SqlValue::from(sensor.as_str()), SqlValue::from(*max)],
    );
    if let Some(prefix) = &cli.exactly_once {
        sink = sink.exactly_once(prefix);
    }
    readings
        .map(|r: SensorReading| (r.sensor_id, r.temperature))
        .key_by(|(sensor, _): &(String, f64)| sensor.clone())
        .max(|(_, t)| t)
        .add_two_phase_sink(sink)
        .name("Sink: PostgreSQL");
    let result = env.execute("kafka to postgres").await?;
    let upserts = result
        .operators
        .iter()
        .filter(|o| o.name == "Sink: PostgreSQL")
        .map(|o| o.records_in)
        .sum::<u64>();
    println!("upserts: {upserts}");
    Ok(())
}
