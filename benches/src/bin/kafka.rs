//! The Kafka benchmark: the connectors' throughput against a real broker, one result line.
//!
//! ```text
//! kafka --records 200000 [--partitions 4] [--keys 1000] [--parallelism 2]
//!       [--brokers HOST:PORT] [--checkpoint-interval-ms 1000] [--exactly-once PREFIX]
//!       [--input-batch N]
//! RESULT engine=eichhorn job=kafka records=.. partitions=.. keys=.. parallelism=.. guarantee=..
//!   checkpoint_interval=.. input_batch=.. produce_s=.. sink_events_per_s=.. consume_s=..
//!   source_events_per_s=.. pipeline_s=.. pipeline_events_per_s=.. bare_consume_s=..
//!   bare_produce_s=.. ceiling_events_per_s=.. pipeline_vs_ceiling=.. completed_checkpoints=..
//!   peak_rss_kb=..
//! ```
//!
//! Without `--brokers` it starts tansu (in-memory storage) on a free loopback port and stops it
//! at the end. Three jobs run one after the other, each timed from submission to its end:
//!
//! 1. **sink**: a generator of `--records` numbers -> `KafkaSink` (at least once, idempotent
//!    producer) into a new input topic of `--partitions` partitions, keyed by the record's key;
//! 2. **source**: a bounded `KafkaSource` of the input topic -> a discarding sink;
//! 3. **pipeline**: the bounded source -> `key_by` -> rolling count -> `KafkaSink` into a new
//!    output topic, at least once or, with `--exactly-once PREFIX`, through Kafka transactions
//!    (which tansu 0.6 does not support: use `--brokers` with a broker that does), with a
//!    checkpoint every `--checkpoint-interval-ms` (default 1000).
//!
//! 4. **ceiling**: the broker's own limit for the pipeline, with bare librdkafka clients and no
//!    Eichhorn: a consumer reads the input topic from the start, then an idempotent producer
//!    writes as many records of the output's size (librdkafka's default batching, as the
//!    pipeline's sink). `ceiling_events_per_s` is the records over the sum of the two times, and
//!    `pipeline_vs_ceiling` the pipeline's rate over it (the issue's target: at least 0.5). The
//!    pipeline overlaps reading and writing, so the ratio can exceed 1.
//!
//! The output topic is then read back with a plain consumer and checked against a sequential
//! computation: exactly `--records` records, and for each key the counts `1..=n` where `n` is
//! the number of input records of that key (duplicates, which at least once allows after a
//! failure, would fail the check; this run has no failure). A mismatch exits non-zero.
//!
//! tansu 0.6 answers `ListOffsets` (latest) with the last *batch*'s base offset + 1, so a
//! bounded source stops at the true end only if every batch of the input holds one record: the
//! input is written with `batch.num.messages=1` when the bench starts tansu (`--input-batch`
//! changes it; with `--brokers` librdkafka's default batching is used unless it is given).
//! The pipeline's output is read back with a plain consumer, which does not need that.

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroU64};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use eichhorn::connectors::test_servers::KafkaBroker;
use eichhorn::connectors::{KafkaProducerRecord, KafkaRecord, KafkaSink, KafkaSource};
use eichhorn::prelude::*;
use eichhorn::state::{StateBackendKind, splitmix64};
use eichhorn_benches::harness::{
    checkpoint_interval_field, execute_timed, positive_u32, positive_u64, prepare_env,
};
use eichhorn_benches::{DISCARD_SINK_NAME, DiscardSink, peak_rss_field};
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    about = "Eichhorn Kafka benchmark: sink, source and source -> rolling count -> sink against a real broker"
)]
struct Args {
    /// Number of input records (at least 1).
    #[arg(long, value_parser = positive_u64)]
    records: NonZeroU64,
    /// Partitions of the input and output topics (at least 1).
    #[arg(long, default_value = "4", value_parser = positive_u32)]
    partitions: NonZeroU32,
    /// Number of distinct keys (at least 1).
    #[arg(long, default_value = "1000", value_parser = positive_u64)]
    keys: NonZeroU64,
    /// Parallelism of every operator (at least 1).
    #[arg(long, default_value = "1", value_parser = positive_u32)]
    parallelism: NonZeroU32,
    /// The brokers (`HOST:PORT,...`); without it the bench starts tansu on loopback.
    #[arg(long)]
    brokers: Option<String>,
    /// Checkpoint interval of the pipeline job, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    checkpoint_interval_ms: u64,
    /// Write the pipeline's output exactly once through Kafka transactions with this
    /// transactional id prefix (needs a broker with transactions).
    #[arg(long, value_name = "PREFIX")]
    exactly_once: Option<String>,
    /// Records per producer batch when writing the input (`batch.num.messages`).
    #[arg(long, value_parser = positive_u32)]
    input_batch: Option<NonZeroU32>,
}

/// The key of input record `g`.
fn key_of(g: u64, keys: u64) -> u64 {
    splitmix64(g) % keys
}

fn parse_number(record: &KafkaRecord<'_>) -> Result<u64, String> {
    let payload = record.payload.ok_or("no value")?;
    let text = std::str::from_utf8(payload).map_err(|e| e.to_string())?;
    text.parse().map_err(|e| format!("{text:?}: {e}"))
}

/// Creates `topics` with `partitions` partitions each (replication factor 1).
fn create_topics(brokers: &str, topics: &[&str], partitions: i32) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("cannot create a Kafka admin client")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = runtime
        .block_on(admin.create_topics(&new, &options))
        .with_context(|| format!("{brokers}: creating topics {topics:?}"))?;
    for result in results {
        if let Err((name, code)) = result {
            bail!("{brokers}: cannot create topic {name}: {code}");
        }
    }
    Ok(())
}

/// Reads `expected` records of `topic` from the start with a plain consumer (no end offsets
/// needed); fails if fewer arrive with no progress for 30 s. Returns `(key, count)` pairs.
fn read_back(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expected: u64,
) -> anyhow::Result<Vec<(u64, u64)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("eichhorn-bench-check-{topic}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .context("cannot create a Kafka consumer")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .context("assignment")?;
    }
    consumer.assign(&assignment).context("assign")?;
    let mut out = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    let mut last_progress = Instant::now();
    while (out.len() as u64) < expected {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                last_progress = Instant::now();
                let payload = message.payload().unwrap_or_default();
                let text = std::str::from_utf8(payload).context("output record not UTF-8")?;
                let (key, count) = text
                    .split_once(',')
                    .with_context(|| format!("output record {text:?} is not key,count"))?;
                out.push((
                    key.parse().with_context(|| format!("key of {text:?}"))?,
                    count
                        .parse()
                        .with_context(|| format!("count of {text:?}"))?,
                ));
            }
            Some(Err(error)) => bail!("{brokers}: reading {topic} back: {error}"),
            None if last_progress.elapsed() > Duration::from_secs(30) => bail!(
                "{brokers}: only {} of {expected} records in {topic} after 30 s without progress",
                out.len()
            ),
            None => {}
        }
    }
    // Anything beyond the expected records would be a duplicate: look a little longer.
    let extra_deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < extra_deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.with_context(|| format!("reading {topic} back"))?;
            bail!(
                "{topic} holds more than {expected} records (one more at partition {} offset {})",
                message.partition(),
                message.offset()
            );
        }
    }
    Ok(out)
}

/// Counts failed deliveries of the bare producer (a failure must not pass for speed).
#[derive(Debug, Default)]
struct DeliveryFailures(AtomicU64);

impl ClientContext for DeliveryFailures {}

impl ProducerContext for DeliveryFailures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        if result.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The broker's ceiling for the pipeline, measured with bare librdkafka clients (no Eichhorn):
/// the time a consumer takes to read the `records` of `input` from the start, and the time an
/// idempotent producer takes to write as many records of the pipeline's output size to `topic`,
/// batched as librdkafka batches by default (as the pipeline's sink is). Their sum is what bare
/// clients take to move the pipeline's records through the broker one after the other; the
/// pipeline reads and writes at the same time, so it can be faster than that.
fn broker_ceiling(
    brokers: &str,
    input: &str,
    topic: &str,
    partitions: i32,
    records: u64,
    keys: u64,
) -> anyhow::Result<(Duration, Duration)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("eichhorn-bench-ceiling-{input}"))
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create a Kafka consumer")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(input, partition, Offset::Beginning)
            .context("assignment")?;
    }
    consumer.assign(&assignment).context("assign")?;
    let started = Instant::now();
    let mut read = 0u64;
    let mut last_progress = Instant::now();
    while read < records {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => {
                read += 1;
                last_progress = Instant::now();
            }
            Some(Err(error)) => bail!("{brokers}: reading {input}: {error}"),
            None if last_progress.elapsed() > Duration::from_secs(30) => bail!(
                "{brokers}: only {read} of {records} records in {input} after 30 s without progress"
            ),
            None => {}
        }
    }
    let consume = started.elapsed();
    drop(consumer);

    let producer: BaseProducer<DeliveryFailures> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .create_with_context(DeliveryFailures::default())
        .context("cannot create a Kafka producer")?;
    let started = Instant::now();
    for g in 0..records {
        let key = key_of(g, keys).to_string();
        let value = format!("{key},{g}");
        let mut record = BaseRecord::to(topic).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => bail!("{brokers}: producing to {topic}: {error}"),
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .with_context(|| format!("{brokers}: flushing to {topic}"))?;
    let produce = started.elapsed();
    let failed = producer.context().0.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{brokers}: {failed} of {records} records to {topic} were not delivered");
    }
    Ok((consume, produce))
}

/// Checks the pipeline's output against the sequential rolling counts.
fn check(output: &[(u64, u64)], records: u64, keys: u64) -> anyhow::Result<()> {
    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for g in 0..records {
        *expected.entry(key_of(g, keys)).or_default() += 1;
    }
    let mut seen: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &(key, count) in output {
        seen.entry(key).or_default().push(count);
    }
    for (key, n) in &expected {
        let mut counts = seen.remove(key).unwrap_or_default();
        counts.sort_unstable();
        if counts != (1..=*n).collect::<Vec<_>>() {
            let shown: Vec<u64> = counts.iter().take(10).copied().collect();
            bail!(
                "wrong result for key {key}: {} counts (first {shown:?}), expected 1..={n}",
                counts.len()
            );
        }
    }
    if let Some((key, counts)) = seen.into_iter().next() {
        bail!(
            "wrong result: key {key} is not in the input but has {} counts",
            counts.len()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kafka: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let records = args.records.get();
    let keys = args.keys.get();
    let parallelism = args.parallelism.get();
    let partitions = i32::try_from(args.partitions.get()).context("--partitions is too large")?;
    let (_broker, brokers) = match &args.brokers {
        Some(brokers) => (None, brokers.clone()),
        None => {
            let broker = KafkaBroker::start().context("starting tansu")?;
            let brokers = broker.bootstrap_servers();
            (Some(broker), brokers)
        }
    };
    let input_batch = args
        .input_batch
        .map(NonZeroU32::get)
        .or(args.brokers.is_none().then_some(1));
    // Unique names: a broker given with --brokers may hold earlier runs' topics.
    let run_id = splitmix64(u64::from(std::process::id()) ^ records);
    let input = format!("eichhorn-bench-in-{run_id:x}");
    let output = format!("eichhorn-bench-out-{run_id:x}");
    let bare = format!("eichhorn-bench-bare-{run_id:x}");
    create_topics(&brokers, &[&input, &output, &bare], partitions)?;

    // 1. The sink alone.
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    let mut sink = KafkaSink::new(&brokers, &input, move |g: &u64| {
        KafkaProducerRecord::value(g.to_string()).with_key(key_of(*g, keys).to_string())
    });
    if let Some(batch) = input_batch {
        sink = sink
            .property("batch.num.messages", &batch.to_string())
            .property("linger.ms", "0");
    }
    env.from_generator(records, |g| g).add_two_phase_sink(sink);
    let (_, produce) = execute_timed(&env, "kafka bench: sink")?;

    // 2. The source alone.
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    let streams = KafkaSource::new(&brokers, &[input.as_str()], parse_number)
        .bounded()
        .build(&env, "Source: Kafka Input");
    streams
        .records
        .add_sink(DiscardSink)
        .name(DISCARD_SINK_NAME);
    let (result, consume) = execute_timed(&env, "kafka bench: source")?;
    let consumed = result
        .operator(DISCARD_SINK_NAME)
        .with_context(|| format!("no metrics for '{DISCARD_SINK_NAME}'"))?
        .records_in;
    if consumed != records {
        bail!("the source read {consumed} records, expected {records}");
    }

    // 3. Source -> rolling count -> sink, with checkpoints.
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    let _scratch = prepare_env(
        &env,
        StateBackendKind::Memory,
        Some(args.checkpoint_interval_ms),
    )?;
    let streams = KafkaSource::new(&brokers, &[input.as_str()], parse_number)
        .bounded()
        .build(&env, "Source: Kafka Input");
    let mut sink = KafkaSink::new(&brokers, &output, |c: &(u64, u64)| {
        KafkaProducerRecord::value(format!("{},{}", c.0, c.1)).with_key(c.0.to_string())
    });
    if let Some(prefix) = &args.exactly_once {
        sink = sink.exactly_once(prefix);
    }
    streams
        .records
        .map(move |g: u64| (key_of(g, keys), 1u64))
        .key_by(|c: &(u64, u64)| c.0)
        .sum(|c: &mut (u64, u64)| &mut c.1)
        .add_two_phase_sink(sink);
    let (result, pipeline) = execute_timed(&env, "kafka bench: pipeline")?;
    let out = read_back(&brokers, &output, partitions, records)?;
    check(&out, records, keys)?;

    // 4. The broker's own ceiling for the pipeline: bare clients read the input and write as
    //    many records.
    let (bare_consume, bare_produce) =
        broker_ceiling(&brokers, &input, &bare, partitions, records, keys)?;
    let ceiling = bare_consume + bare_produce;

    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    println!(
        "RESULT engine=eichhorn job=kafka records={records} partitions={partitions} keys={keys} \
         parallelism={parallelism} guarantee={} checkpoint_interval={} input_batch={} \
         produce_s={:.6} sink_events_per_s={:.0} consume_s={:.6} source_events_per_s={:.0} \
         pipeline_s={:.6} pipeline_events_per_s={:.0} bare_consume_s={:.6} bare_produce_s={:.6} \
         ceiling_events_per_s={:.0} pipeline_vs_ceiling={:.2} completed_checkpoints={} {}",
        if args.exactly_once.is_some() {
            "exactly-once"
        } else {
            "at-least-once"
        },
        checkpoint_interval_field(Some(args.checkpoint_interval_ms)),
        input_batch.map_or_else(|| "default".to_string(), |b| b.to_string()),
        produce.as_secs_f64(),
        rate(produce),
        consume.as_secs_f64(),
        rate(consume),
        pipeline.as_secs_f64(),
        rate(pipeline),
        bare_consume.as_secs_f64(),
        bare_produce.as_secs_f64(),
        rate(ceiling),
        rate(pipeline) / rate(ceiling),
        result.completed_checkpoints,
        peak_rss_field()
    );
    Ok(())
}
