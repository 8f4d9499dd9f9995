//! What the Kafka examples share: sensor readings read from a Kafka topic, with per-partition
//! event-time watermarks, and the command-line options that say where from.
//!
//! A record's value is one reading `sensor_id,timestamp_ms,temperature` (the format of
//! [`crate::sensors`]); a value that is not one goes to the errors stream, naming topic,
//! partition and offset, and is printed on stderr by [`print_errors`].

use clap::Args;
use eichhorn::connectors::{
    KafkaDeserializationError, KafkaRecord, KafkaSink, KafkaSource, KafkaTransaction,
    StartingOffsets,
};
use eichhorn::prelude::*;
use eichhorn::time::WatermarkStrategy;

use crate::sensors::SensorReading;

/// Where the readings come from.
#[derive(Debug, Clone, Args)]
pub struct KafkaInput {
    /// Kafka's bootstrap servers, `host:port[,host:port...]`.
    #[arg(long, value_name = "HOST:PORT")]
    pub brokers: String,
    /// The topic of readings.
    #[arg(long, value_name = "TOPIC", default_value = "readings")]
    pub input_topic: String,
    /// Stop at the end the topic has when the job starts (else run until stopped).
    #[arg(long)]
    pub bounded: bool,
    /// How far readings may come out of order per partition, in ms.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub out_of_orderness_ms: i64,
    /// A partition without readings for this long stops holding event time back, in ms.
    #[arg(long, value_name = "MS")]
    pub idleness_ms: Option<i64>,
    /// Parallelism of the job (sources, windows, sinks).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = crate::parallelism_parser())]
    pub parallelism: u32,
    /// Checkpoint interval, in ms.
    #[arg(long, value_name = "MS", default_value_t = 1_000)]
    pub checkpoint_interval_ms: u64,
}

/// Parses a record's value as a reading; its line number is its offset + 1.
///
/// # Errors
///
/// The value is missing, not UTF-8, or not a reading.
pub fn parse_record(record: &KafkaRecord<'_>) -> Result<SensorReading, String> {
    let payload = record.payload.ok_or("no value")?;
    let line = std::str::from_utf8(payload).map_err(|e| format!("not UTF-8: {e}"))?;
    let line_number = u64::try_from(record.offset).unwrap_or(0) + 1;
    SensorReading::parse(line, line_number).map_err(|e| format!("{e}: {line:?}"))
}

/// The readings of `input` in `env` (with checkpointing and parallelism set from it), with
/// event time from each reading and watermarks per partition, and the records that were not
/// readings.
pub fn read_readings(
    env: &StreamEnv,
    input: &KafkaInput,
) -> (
    DataStream<SensorReading>,
    DataStream<KafkaDeserializationError>,
) {
    env.set_parallelism(input.parallelism);
    env.enable_checkpointing(input.checkpoint_interval_ms);
    let mut strategy = WatermarkStrategy::for_bounded_out_of_orderness(input.out_of_orderness_ms)
        .with_timestamp_assigner(|r: &SensorReading, _| r.timestamp_ms);
    if let Some(idleness) = input.idleness_ms {
        strategy = strategy.with_idleness(idleness);
    }
    let mut source = KafkaSource::new(&input.brokers, &[input.input_topic.as_str()], parse_record)
        .starting_offsets(StartingOffsets::Earliest)
        .watermarks(strategy);
    if input.bounded {
        source = source.bounded();
    }
    let streams = source.build(env, "Source: Kafka Readings");
    (streams.records, streams.errors)
}

/// Prints every record that was not a reading on stderr: `error: <what and where>`.
pub fn print_errors(errors: DataStream<KafkaDeserializationError>) {
    errors
        .map(|e| format!("error: {e}"))
        .add_sink(StderrLines)
        .name("Sink: Malformed Records");
}

/// Writes lines to stderr.
#[operator]
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrLines;

impl SinkFunction<String> for StderrLines {
    fn invoke(&mut self, line: String, _ctx: &SinkContext) -> Result<(), FunctionError> {
        eprintln!("{line}");
        Ok(())
    }
}

/// Wraps a Kafka sink so that the process **aborts** (no destructors, no flushes: as a crash)
/// when the sink is about to commit the `commit_number`-th transaction that holds records,
/// counted over the process: its checkpoint completed, the transaction is pre-committed and
/// not committed. The crash tests of `kafka_etl` restart the process from its checkpoints and
/// check that the output is as without the crash.
#[derive(Debug)]
pub struct AbortAtCommit<T> {
    inner: KafkaSink<T>,
    commit_number: u64,
}

impl<T> Clone for AbortAtCommit<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            commit_number: self.commit_number,
        }
    }
}

impl<T> AbortAtCommit<T> {
    /// `inner`, aborting the process at its `commit_number`-th commit of a transaction with
    /// records (1 = the first).
    pub fn new(inner: KafkaSink<T>, commit_number: u64) -> Self {
        Self {
            inner,
            commit_number,
        }
    }
}

impl<T> eichhorn::api::Operator for AbortAtCommit<T> {}
impl<T> eichhorn::api::Unkeyed for AbortAtCommit<T> {}

impl<T: Send + 'static> eichhorn::api::TwoPhaseCommitSink<T> for AbortAtCommit<T> {
    type Txn = KafkaTransaction;

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.inner.open(ctx)
    }
    fn begin_transaction(&mut self) -> Result<KafkaTransaction, FunctionError> {
        self.inner.begin_transaction()
    }
    fn invoke(
        &mut self,
        txn: &mut KafkaTransaction,
        value: T,
        ctx: &eichhorn::api::SinkContext,
    ) -> Result<(), FunctionError> {
        self.inner.invoke(txn, value, ctx)
    }
    fn pre_commit(&mut self, txn: &mut KafkaTransaction) -> Result<(), FunctionError> {
        self.inner.pre_commit(txn)
    }
    fn commit(&mut self, txn: KafkaTransaction) -> Result<(), FunctionError> {
        static COMMITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        if txn.records() > 0
            && COMMITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == self.commit_number
        {
            eprintln!(
                "aborting the process before commit {} (transaction {}, {} records)",
                self.commit_number,
                txn.transactional_id(),
                txn.records()
            );
            std::process::abort();
        }
        self.inner.commit(txn)
    }
    fn abort(&mut self, txn: KafkaTransaction) -> Result<(), FunctionError> {
        self.inner.abort(txn)
    }
    fn recover_and_commit(&mut self, txn: KafkaTransaction) -> Result<(), FunctionError> {
        self.inner.recover_and_commit(txn)
    }
    fn recover_and_abort(&mut self, txn: KafkaTransaction) -> Result<(), FunctionError> {
        self.inner.recover_and_abort(txn)
    }
    fn close(&mut self) -> Result<(), FunctionError> {
        self.inner.close()
    }
}
