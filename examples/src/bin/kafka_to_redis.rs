//! Kafka to Redis (the Flink book's `RedisSink` example): the latest temperature of every
//! sensor in a Redis hash, and every reading pushed onto a list per sensor.
//!
//! ```text
//! cargo run -p eichhorn-examples --bin kafka_to_redis -- --brokers HOST:PORT \
//!     --redis redis://127.0.0.1:6379/0 [--input-topic readings] [--bounded] \
//!     [--exactly-once PREFIX] [--parallelism N]
//! ```
//!
//! The job: `KafkaSource` -> `key_by(sensor_id)` -> `RedisSink`, writing per reading
//! `HSET sensors:latest <sensor_id> <temperature>` (the hash of every sensor's latest
//! temperature: readings of a sensor arrive in order) and `RPUSH sensor:<sensor_id>
//! <timestamp_ms>,<temperature>` (its history). `HSET` is idempotent, so at least once already
//! leaves the right hash after a failure; `RPUSH` is not, so `--exactly-once PREFIX` stages each
//! checkpoint's writes and applies them atomically when the checkpoint completes. At the end
//! (with `--bounded`) the number of readings written is printed: `readings: N`.

use std::process::ExitCode;

use clap::Parser;
use eichhorn::connectors::{RedisSink, RedisWrite};
use eichhorn::prelude::*;
use eichhorn_examples::kafka_readings::{KafkaInput, print_errors, read_readings};
use eichhorn_examples::sensors::SensorReading;
use eichhorn_examples::{init_tracing, run_example};

/// Latest temperature per sensor and reading history, from Kafka into Redis.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    ops: eichhorn_examples::OpsArgs,
    #[command(flatten)]
    input: KafkaInput,
    /// The Redis URL, `redis://host:port/db`.
    #[arg(long, value_name = "URL")]
    redis: String,
    /// Write exactly once (staged per checkpoint) with this prefix for the staging keys.
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
    let writes = readings
        .key_by(|r: &SensorReading| r.sensor_id.clone())
        .flat_map(|r: SensorReading| {
            vec![
                RedisWrite::hset(
                    "sensors:latest",
                    r.sensor_id.clone(),
                    r.temperature.to_string(),
                ),
                RedisWrite::rpush(
                    format!("sensor:{}", r.sensor_id),
                    format!("{},{}", r.timestamp_ms, r.temperature),
                ),
            ]
        });
    let mut sink = RedisSink::new(&cli.redis, |w: &RedisWrite| w.clone());
    if let Some(prefix) = &cli.exactly_once {
        sink = sink.exactly_once(prefix);
    }
    writes.add_two_phase_sink(sink).name("Sink: Redis");
    let result = env.execute("kafka to redis").await?;
    let writes = result
        .operators
        .iter()
        .filter(|o| o.name == "Sink: Redis")
        .map(|o| o.records_in)
        .sum::<u64>();
    println!("readings: {}", writes / 2);
    Ok(())
}
