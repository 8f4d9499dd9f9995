//! Kafka source and sink (Flink's `KafkaSource` and `KafkaSink`) on rdkafka (librdkafka).
//!
//! ## Source
//!
//! A parallel source whose splits are the topics' partitions. Every subtask reads the
//! partitions it owns: partition `p` of topic `t` belongs to subtask
//! `(fnv1a(t) + p) mod parallelism` (Flink's enumerator spreads a topic's partitions the same
//! way, from a start index that depends on the topic). The consumer is *assigned* its
//! partitions (no consumer-group rebalancing), so which subtask reads what is decided by the job,
//! never by the broker. The position of every split (the next offset to read, and the offset to
//! stop at when bounded) is the source's checkpointed position; a restore at another
//! parallelism merges the positions of every old subtask and each new subtask takes the splits
//! it owns under the new parallelism. Partitions without a stored position start where the
//! [`StartingOffsets`] say, resolved to a concrete offset before the first read, so a checkpoint
//! never holds a symbolic "latest".
//!
//! **Partition discovery** (Flink's `partition.discovery.interval.ms`, on by default every five
//! minutes as in Flink's `KafkaSource`, FLIP-288): an unbounded source looks at the brokers'
//! metadata at that interval and starts reading the partitions of its topics (a list or a
//! pattern) that appeared since: partitions added to a topic and topics created that match the
//! pattern. Each subtask looks for itself and takes what it owns under the same
//! `split_owner` rule, so every partition has exactly one reader without any coordination, and
//! adding partitions never moves one already read. A discovered partition starts at its
//! *earliest* offset whatever the [`StartingOffsets`] say (they apply to the partitions the
//! source found when it started), so records written to it before it was found are not
//! skipped. Its position is in every snapshot from then on. On a restore (at any parallelism),
//! an owned partition the checkpoint does not hold appeared after that job's first listing
//! (every listed partition has a position from the first snapshot on: a snapshot resolves the
//! starting offsets first), so it too starts at the earliest offset: a partition found after
//! the restored checkpoint is read from its start again and one found before from its
//! checkpointed offset, never twice and never skipped. Partitions that disappear (a deleted
//! topic) are not dropped from the source. A look blocks the subtask for one metadata
//! request; a failed look is logged and retried at the next interval.
//!
//! Timestamps are the records' Kafka timestamps unless a [`WatermarkStrategy`] assigns others;
//! watermarks are generated **per partition** inside the source (Flink's per-split
//! watermarks): the subtask's watermark is the minimum over its partitions that are not idle
//! (no record for the strategy's idleness timeout), so a partition that is behind holds event
//! time back and a silent one does not. A subtask with no partition, or only idle ones, marks
//! itself idle.
//!
//! A record the deserialiser rejects is neither dropped nor fatal: it becomes a
//! [`KafkaDeserializationError`] naming topic, partition and offset, sent to the errors stream
//! of [`KafkaSource::build`] (a side output of the source's chain).
//!
//! Polling never blocks: `poll_next` takes what librdkafka has fetched (`poll(0)`), at most the
//! poll's budget, and returns `Idle` otherwise. Metadata and offset look-ups (`open`, the first
//! poll, a discovery) block up to `request_timeout_ms`.
//!
//! ## Sink
//!
//! At least once with librdkafka's idempotent producer (no duplicates from the producer's own
//! retries; duplicates only from a replay after a failure, within the last checkpoint
//! interval): `invoke` enqueues into librdkafka's bounded local queue (a full queue waits,
//! which back-pressures the subtask), delivery errors fail the task naming topic and
//! partition, and the barrier (`pre_commit`) flushes, so a completed checkpoint covers every
//! record before it. Exactly once through Kafka transactions, see `kafka_txn`: a pre-commit
//! records its producer's id and epoch (from librdkafka's statistics) in the checkpoint, so
//! that a restore in a new process can commit the transaction with `EndTxn` (`kafka_wire`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;

pub use super::kafka_txn::KafkaTransaction;
use super::kafka_txn::{Known, Recovery, ResumeCommit, ResumeStep, TransactionCore, TxnAction};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::api::{
    DataStream, SinkContext, SourceContext, SourcePoll, StreamEnv, TwoPhaseCommitSink,
};
use crate::operator::{
    Collector, FunctionError, OperatorContext, RuntimeContext, UnrecoverableError,
};
use crate::time::{Watermark, WatermarkGenerator, WatermarkOutput, WatermarkStrategy};

/// Where a partition without a checkpointed position starts (Flink's `OffsetsInitializer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartingOffsets {
    /// The earliest offset still in the partition.
    #[default]
    Earliest,
    /// The end of the partition: only records produced from now on.
    Latest,
    /// The first record whose timestamp is at or after this many milliseconds since the epoch
    /// (the end when there is none).
    Timestamp(i64),
    /// The consumer group's committed offset (the group id must be set), else the earliest.
    Committed,
}

/// Which topics a source reads.
#[derive(Clone)]
enum TopicSelection {
    /// These topics.
    List(Vec<String>),
    /// Every topic whose name the predicate accepts (Flink's topic pattern).
    Matching(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl fmt::Debug for TopicSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::List(topics) => f.debug_tuple("List").field(topics).finish(),
            Self::Matching(_) => f.write_str("Matching(..)"),
        }
    }
}

/// A Kafka record as the deserialiser sees it.
#[derive(Debug, Clone, Copy)]
pub struct KafkaRecord<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The Kafka timestamp (create or log-append time), if any.
    pub timestamp: Option<i64>,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value, if any (`None` for a tombstone).
    pub payload: Option<&'a [u8]>,
    /// The headers, in order (a header without value has an empty one).
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// A record the deserialiser rejected: where it is and why (sent to the errors stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("cannot deserialise the record at {topic}/{partition}@{offset}: {message}")]
pub struct KafkaDeserializationError {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// What the deserialiser said.
    pub message: String,
    /// The raw value, if any.
    pub payload: Option<Vec<u8>>,
}

type Deserializer<T> = Arc<dyn Fn(&KafkaRecord<'_>) -> Result<T, String> + Send + Sync>;

/// What every instance of a source shares.
#[derive(Debug)]
struct SourceSettings {
    bootstrap_servers: String,
    topics: TopicSelection,
    group_id: Option<String>,
    starting_offsets: StartingOffsets,
    bounded: bool,
    read_committed: bool,
    properties: BTreeMap<String, String>,
    request_timeout_ms: u64,
    watermark_interval_ms: i64,
    /// How often an unbounded source looks for new partitions and topics (`None`: never).
    discovery_interval_ms: Option<i64>,
}

/// The stored position of one split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct SplitPosition {
    /// The next offset to read.
    next_offset: i64,
    /// Bounded sources: the offset to stop before.
    stop_offset: Option<i64>,
}

/// One split (partition) a subtask reads.
struct Split<T> {
    /// `None` until the starting offset is resolved (first poll).
    position: Option<SplitPosition>,
    generator: Option<Box<dyn WatermarkGenerator<T>>>,
    /// This split's watermark so far.
    watermark: i64,
    /// Processing time of its last record (for idleness).
    last_record_ms: Option<i64>,
    /// Starts at the earliest offset whatever the [`StartingOffsets`] say: a partition that
    /// appeared after the source first listed its partitions (Flink's rule for discovered
    /// partitions, FLIP-288), so none of its records is skipped.
    from_earliest: bool,
}

impl<T> Split<T> {
    fn new(from_earliest: bool) -> Self {
        Self {
            position: None,
            generator: None,
            watermark: i64::MIN,
            last_record_ms: None,
            from_earliest,
        }
    }
}

/// The stored positions of a subtask: one entry per split.
type Positions = BTreeMap<(String, i32), SplitPosition>;

/// Reads Kafka topics as a parallel source with checkpointed per-partition offsets, per-partition
/// watermarks, and deserialisation errors in a side stream. See the module docs.
///
/// # Examples
///
/// ```
/// use eichhorn::connectors::test_servers::KafkaBroker;
/// use eichhorn::connectors::{KafkaProducerRecord, KafkaSink, KafkaSource, StartingOffsets};
/// use eichhorn::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = KafkaBroker::start()?; // a throwaway broker (tansu) on a free loopback port
/// broker.create_topic("readings", 2)?;
/// let env = StreamEnv::new();
/// env.from_collection(vec!["21.5".to_string(), "oops".into(), "19".into()])
///     .add_two_phase_sink(
///         KafkaSink::new(&broker.bootstrap_servers(), "readings", |v: &String| {
///             KafkaProducerRecord::value(v.clone()).with_partition(0)
///         })
///         .property("batch.num.messages", "1"), // tansu reports ends by batch
///     );
/// env.execute("write readings").await?;
///
/// let env = StreamEnv::new();
/// let readings = KafkaSource::new(&broker.bootstrap_servers(), &["readings"], |record| {
///     let text = std::str::from_utf8(record.payload.unwrap_or_default()).map_err(|e| e.to_string())?;
///     text.parse::<f64>().map_err(|e| format!("{text:?}: {e}"))
/// })
/// .starting_offsets(StartingOffsets::Earliest)
/// .bounded() // stop at the topic's current end
/// .build(&env, "readings");
/// let values = readings.records.collect_sink();
/// let errors = readings.errors.collect_sink();
/// env.execute("read readings").await?;
/// assert_eq!(values.take(), vec![21.5, 19.0]);
/// assert_eq!(errors.take()[0].to_string(), "cannot deserialise the record at readings/0@1: \"oops\": invalid float literal");
/// # Ok(()) }
/// ```
pub struct KafkaSource<T> {
    settings: Arc<SourceSettings>,
    deserializer: Deserializer<T>,
    strategy: Option<WatermarkStrategy<T>>,
    consumer: Option<BaseConsumer>,
    splits: BTreeMap<(String, i32), Split<T>>,
    subtask_index: u32,
    parallelism: u32,
    /// Whether the consumer's assignment matches `splits`.
    assigned: bool,
    /// The watermark emitted last.
    emitted_watermark: i64,
    last_periodic_ms: Option<i64>,
    idle: bool,
    /// The positions of the last snapshot, committed to the broker when its checkpoint
    /// completes (for monitoring: the source restores from its checkpoints, not from these).
    snapshot_offsets: Option<Positions>,
    /// Whether the last commit to the broker was asynchronous (close makes it synchronous).
    committed_async: Option<Positions>,
    /// Processing time of the last partition discovery.
    last_discovery_ms: Option<i64>,
}

/// The streams of a [`KafkaSource`]: the deserialised records and the rejected ones.
#[derive(Debug)]
pub struct KafkaStreams<T> {
    /// The deserialised records, with their timestamps.
    pub records: DataStream<T>,
    /// The records the deserialiser rejected, naming topic, partition and offset.
    pub errors: DataStream<KafkaDeserializationError>,
}

impl<T: crate::api::Data> KafkaSource<T> {
    /// A source of `topics` on the brokers `bootstrap_servers`, deserialising each record with
    /// `deserializer` (an `Err` goes to the errors stream). Unbounded, from the earliest offsets,
    /// `read_committed`.
    pub fn new(
        bootstrap_servers: &str,
        topics: &[&str],
        deserializer: impl Fn(&KafkaRecord<'_>) -> Result<T, String> + Send + Sync + 'static,
    ) -> Self {
        Self::with_topics(
            bootstrap_servers,
            TopicSelection::List(topics.iter().map(|t| (*t).to_string()).collect()),
            deserializer,
        )
    }

    /// A source of every topic whose name `pattern` accepts (found when the source opens).
    pub fn matching(
        bootstrap_servers: &str,
        pattern: impl Fn(&str) -> bool + Send + Sync + 'static,
        deserializer: impl Fn(&KafkaRecord<'_>) -> Result<T, String> + Send + Sync + 'static,
    ) -> Self {
        Self::with_topics(
            bootstrap_servers,
            TopicSelection::Matching(Arc::new(pattern)),
            deserializer,
        )
    }

    fn with_topics(
        bootstrap_servers: &str,
        topics: TopicSelection,
        deserializer: impl Fn(&KafkaRecord<'_>) -> Result<T, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            settings: Arc::new(SourceSettings {
                bootstrap_servers: bootstrap_servers.to_string(),
                topics,
                group_id: None,
                starting_offsets: StartingOffsets::Earliest,
                bounded: false,
                read_committed: true,
                properties: BTreeMap::new(),
                request_timeout_ms: 30_000,
                watermark_interval_ms: 200,
                discovery_interval_ms: Some(DISCOVERY_INTERVAL_MS_DEFAULT),
            }),
            deserializer: Arc::new(deserializer),
            strategy: None,
            consumer: None,
            splits: BTreeMap::new(),
            subtask_index: 0,
            parallelism: 1,
            assigned: false,
            emitted_watermark: i64::MIN,
            last_periodic_ms: None,
            idle: false,
            snapshot_offsets: None,
            committed_async: None,
            last_discovery_ms: None,
        }
    }

    fn settings_mut(&mut self) -> &mut SourceSettings {
        Arc::get_mut(&mut self.settings)
            .expect("configured before the source is cloned into the job")
    }

    /// Where partitions without a checkpointed position start (default: earliest).
    pub fn starting_offsets(mut self, starting: StartingOffsets) -> Self {
        self.settings_mut().starting_offsets = starting;
        self
    }

    /// The consumer group (for [`StartingOffsets::Committed`] and monitoring tools).
    pub fn group_id(mut self, group_id: &str) -> Self {
        self.settings_mut().group_id = Some(group_id.to_string());
        self
    }

    /// Stops at the partitions' ends as they are when the source first reads them (Flink's
    /// `setBounded(OffsetsInitializer.latest())`): the job finishes.
    pub fn bounded(mut self) -> Self {
        self.settings_mut().bounded = true;
        self
    }

    /// Reads uncommitted transactional records too (`read_uncommitted`; default
    /// `read_committed`).
    pub fn read_uncommitted(mut self) -> Self {
        self.settings_mut().read_committed = false;
        self
    }

    /// Sets a librdkafka consumer property.
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.settings_mut()
            .properties
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Timestamps and per-partition watermarks from `strategy` (its idleness timeout marks a
    /// silent partition idle). Without one, records carry their Kafka timestamps and the source
    /// emits no watermarks.
    pub fn watermarks(mut self, strategy: WatermarkStrategy<T>) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// How often periodic watermarks are generated, in processing time (default 200 ms).
    pub fn watermark_interval_ms(mut self, interval_ms: i64) -> Self {
        self.settings_mut().watermark_interval_ms = interval_ms.max(1);
        self
    }

    /// How often an unbounded source checks the brokers' metadata for partitions and topics
    /// that appeared since it started (Flink's `partition.discovery.interval.ms`; default five
    /// minutes, as Flink's `KafkaSource`); zero or less turns discovery off. New partitions are
    /// read from their earliest offset. Bounded sources never discover.
    pub fn partition_discovery_interval_ms(mut self, interval_ms: i64) -> Self {
        self.settings_mut().discovery_interval_ms = (interval_ms > 0).then_some(interval_ms);
        self
    }

    /// Adds the source to `env` as `name` and returns its record and error streams.
    pub fn build(self, env: &StreamEnv, name: &str) -> KafkaStreams<T> {
        let tag = crate::api::OutputTag::<KafkaDeserializationError>::new(format!(
            "{name}: deserialisation errors"
        ));
        let records = env
            .add_source(self, name)
            .process(SplitErrors { tag: tag.clone() })
            .name(&format!("{name}: split errors"));
        let errors = records.side_output(&tag);
        KafkaStreams { records, errors }
    }
}

impl<T> KafkaSource<T> {
    fn server(&self) -> String {
        format!("kafka://{}", self.settings.bootstrap_servers)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.request_timeout_ms)
    }

    fn consumer(&self) -> Result<&BaseConsumer, FunctionError> {
        self.consumer
            .as_ref()
            .ok_or_else(|| "the Kafka source is not open".into())
    }

    /// The partitions of the selected topics that this subtask owns.
    fn discover(&self) -> Result<Vec<(String, i32)>, FunctionError> {
        let consumer = self.consumer()?;
        let metadata = consumer
            .fetch_metadata(None, self.timeout())
            .map_err(|e| format!("{}: fetching metadata failed: {e}", self.server()))?;
        let topics: Vec<(&str, Vec<i32>)> = metadata
            .topics()
            .iter()
            .map(|t| (t.name(), t.partitions().iter().map(|p| p.id()).collect()))
            .collect();
        owned_partitions(
            &self.settings.topics,
            &topics,
            self.subtask_index,
            self.parallelism,
        )
        .map_err(|missing| format!("{}: topic {missing} does not exist", self.server()).into())
    }

    /// Periodic discovery (unbounded sources): adds the owned partitions that appeared since
    /// the last look, to be read from their earliest offset. A failed look is logged and
    /// retried at the next interval (the partitions already read go on).
    fn discover_new(&mut self) {
        let found = match self.discover() {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(server = %self.server(), %error, "Kafka partition discovery failed; retried at the next interval");
                return;
            }
        };
        for key in found {
            if !self.splits.contains_key(&key) {
                tracing::info!(topic = %key.0, partition = key.1, subtask = self.subtask_index, "discovered a new Kafka partition; reading it from the earliest offset");
                self.splits.insert(key, Split::new(true));
                self.assigned = false;
            }
        }
    }

    /// Resolves the starting (and, bounded, stopping) offsets of splits without a position,
    /// then assigns every split to the consumer.
    fn assign(&mut self) -> Result<(), FunctionError> {
        let timeout = self.timeout();
        let server = self.server();
        let starting = self.settings.starting_offsets;
        let bounded = self.settings.bounded;
        let consumer = self
            .consumer
            .as_ref()
            .ok_or("the Kafka source is not open")?;
        let mut committed = BTreeMap::new();
        if starting == StartingOffsets::Committed {
            let mut list = TopicPartitionList::new();
            for (topic, partition) in self.splits.keys() {
                list.add_partition(topic, *partition);
            }
            let offsets = consumer
                .committed_offsets(list, timeout)
                .map_err(|e| format!("{server}: reading committed offsets failed: {e}"))?;
            for element in offsets.elements() {
                if let Offset::Offset(offset) = element.offset() {
                    committed.insert((element.topic().to_string(), element.partition()), offset);
                }
            }
        }
        let mut by_time = BTreeMap::new();
        if let StartingOffsets::Timestamp(ms) = starting {
            let mut list = TopicPartitionList::new();
            for ((topic, partition), split) in &self.splits {
                if split.position.is_none() {
                    list.add_partition_offset(topic, *partition, Offset::Offset(ms))
                        .map_err(|e| e.to_string())?;
                }
            }
            if list.count() > 0 {
                let offsets = consumer.offsets_for_times(list, timeout).map_err(|e| {
                    format!("{server}: looking up offsets for time {ms} failed: {e}")
                })?;
                for element in offsets.elements() {
                    if let Offset::Offset(offset) = element.offset() {
                        by_time.insert((element.topic().to_string(), element.partition()), offset);
                    }
                }
            }
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), split) in &mut self.splits {
            if split.position.is_none() {
                let (low, high) = consumer
                    .fetch_watermarks(topic, *partition, timeout)
                    .map_err(|e| {
                        format!("{server}: reading the offsets of {topic}/{partition} failed: {e}")
                    })?;
                let key = (topic.clone(), *partition);
                let starting = if split.from_earliest {
                    StartingOffsets::Earliest
                } else {
                    starting
                };
                let next_offset = match starting {
                    StartingOffsets::Earliest => low,
                    StartingOffsets::Latest => high,
                    StartingOffsets::Timestamp(_) => by_time.get(&key).copied().unwrap_or(high),
                    StartingOffsets::Committed => committed.get(&key).copied().unwrap_or(low),
                };
                split.position = Some(SplitPosition {
                    next_offset,
                    stop_offset: bounded.then_some(high),
                });
            }
            if bounded
                && let Some(position) = &mut split.position
                && position.stop_offset.is_none()
            {
                // Restored from an unbounded run: stop at the end the partition has now.
                let (_, high) = consumer
                    .fetch_watermarks(topic, *partition, timeout)
                    .map_err(|e| {
                        format!("{server}: reading the offsets of {topic}/{partition} failed: {e}")
                    })?;
                position.stop_offset = Some(high);
            }
            let position = split.position.expect("resolved just above");
            list.add_partition_offset(topic, *partition, Offset::Offset(position.next_offset))
                .map_err(|e| e.to_string())?;
        }
        consumer
            .assign(&list)
            .map_err(|e| format!("{server}: assigning partitions failed: {e}"))?;
        self.assigned = true;
        Ok(())
    }

    fn positions(&self) -> Positions {
        self.splits
            .iter()
            .filter_map(|(key, split)| split.position.map(|p| (key.clone(), p)))
            .collect()
    }

    /// Takes the owned splits' restored positions. With discovery on, an owned partition the
    /// restored checkpoint does not know appeared after that checkpoint's job first listed its
    /// partitions (every listed partition has a position from the first snapshot on), so it
    /// starts at the earliest offset, as Flink restores a discovered partition.
    fn set_positions(&mut self, positions: Positions) {
        for (key, position) in positions {
            if split_owner(&key.0, key.1, self.parallelism) == self.subtask_index {
                self.splits
                    .entry(key)
                    .or_insert_with(|| Split::new(false))
                    .position = Some(position);
            }
        }
        if self.settings.discovery_interval_ms.is_some() {
            for split in self.splits.values_mut() {
                if split.position.is_none() {
                    split.from_earliest = true;
                }
            }
        }
        self.assigned = false;
    }

    fn all_done(&self) -> bool {
        self.settings.bounded
            && self.splits.values().all(|s| {
                s.position
                    .is_some_and(|p| p.stop_offset.is_some_and(|stop| p.next_offset >= stop))
            })
    }
}

/// Flink's default partition discovery interval for the `KafkaSource` (five minutes).
const DISCOVERY_INTERVAL_MS_DEFAULT: i64 = 300_000;

/// The partitions of `topics` (name and partition ids, as the metadata lists them) that the
/// selection reads and subtask `subtask_index` of `parallelism` owns, in metadata order. Err:
/// a listed topic that has no partitions (does not exist).
fn owned_partitions(
    selection: &TopicSelection,
    topics: &[(&str, Vec<i32>)],
    subtask_index: u32,
    parallelism: u32,
) -> Result<Vec<(String, i32)>, String> {
    let mut owned = Vec::new();
    for (name, partitions) in topics {
        let selected = match selection {
            TopicSelection::List(list) => list.iter().any(|t| t == name),
            TopicSelection::Matching(pattern) => !name.starts_with("__") && pattern(name),
        };
        if !selected {
            continue;
        }
        for partition in partitions {
            if split_owner(name, *partition, parallelism) == subtask_index {
                owned.push(((*name).to_string(), *partition));
            }
        }
    }
    if let TopicSelection::List(list) = selection
        && let Some(missing) = list.iter().find(|t| {
            !topics
                .iter()
                .any(|(name, partitions)| name == t && !partitions.is_empty())
        })
    {
        return Err(missing.clone());
    }
    Ok(owned)
}

/// The subtask owning partition `partition` of `topic` at `parallelism`: `(fnv1a(topic) +
/// partition) mod parallelism`, stable across processes and versions.
pub fn split_owner(topic: &str, partition: i32, parallelism: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in topic.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let start = hash % u64::from(parallelism.max(1));
    let slot = (start + u64::from(partition.unsigned_abs())) % u64::from(parallelism.max(1));
    u32::try_from(slot).expect("below a u32 parallelism")
}

fn decode_positions(bytes: &[u8]) -> Result<Positions, FunctionError> {
    let entries: Vec<((String, i32), SplitPosition)> = postcard::from_bytes(bytes)
        .map_err(|e| UnrecoverableError::new(format!("corrupt Kafka source position: {e}")))?;
    Ok(entries.into_iter().collect())
}

impl<T> Clone for KafkaSource<T> {
    fn clone(&self) -> Self {
        Self {
            settings: Arc::clone(&self.settings),
            deserializer: Arc::clone(&self.deserializer),
            strategy: self.strategy.clone(),
            consumer: None,
            splits: BTreeMap::new(),
            subtask_index: 0,
            parallelism: 1,
            assigned: false,
            emitted_watermark: i64::MIN,
            last_periodic_ms: None,
            idle: false,
            snapshot_offsets: None,
            committed_async: None,
            last_discovery_ms: None,
        }
    }
}

impl<T> fmt::Debug for KafkaSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSource")
            .field("settings", &self.settings)
            .field("splits", &self.splits.keys().collect::<Vec<_>>())
            .finish()
    }
}

crate::api::operator::impl_plain_operator!(KafkaSource<T>; T);

impl<T: crate::api::Data> crate::api::SourceFunction<Result<T, KafkaDeserializationError>>
    for KafkaSource<T>
{
    fn is_parallel(&self) -> bool {
        true
    }

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.subtask_index = ctx.subtask_index;
        self.parallelism = ctx.parallelism;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.settings.bootstrap_servers)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set(
                "client.id",
                format!("eichhorn-{}-{}", ctx.operator_name, ctx.subtask_index),
            )
            .set(
                "isolation.level",
                if self.settings.read_committed {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            )
            .set(
                "group.id",
                self.settings
                    .group_id
                    .clone()
                    .unwrap_or_else(|| format!("eichhorn-{}", ctx.job_name)),
            );
        for (key, value) in &self.settings.properties {
            config.set(key, value);
        }
        let consumer: BaseConsumer = config.create().map_err(|e| {
            UnrecoverableError::new(format!("{}: cannot create a consumer: {e}", self.server()))
        })?;
        self.consumer = Some(consumer);
        for key in self.discover()? {
            self.splits.entry(key).or_insert_with(|| Split::new(false));
        }
        Ok(())
    }

    fn poll_next(
        &mut self,
        ctx: &mut SourceContext<'_, Result<T, KafkaDeserializationError>>,
    ) -> Result<SourcePoll, FunctionError> {
        let now = ctx.current_processing_time();
        if let Some(interval_ms) = self.settings.discovery_interval_ms
            && !self.settings.bounded
        {
            // `open` listed the partitions: the first periodic look is one interval later.
            let last = *self.last_discovery_ms.get_or_insert(now);
            if now - last >= interval_ms {
                self.last_discovery_ms = Some(now);
                self.discover_new();
            }
        }
        if !self.assigned {
            self.assign()?;
        }
        if self.all_done() {
            return Ok(SourcePoll::Finished);
        }
        if self.splits.is_empty() {
            if !self.idle {
                ctx.mark_idle();
                self.idle = true;
            }
            return Ok(if self.settings.bounded {
                SourcePoll::Finished
            } else {
                SourcePoll::Idle
            });
        }
        let mut emitted = 0usize;
        let mut output = WatermarkOutput::default();
        while ctx.remaining() > 0 {
            let consumer = self
                .consumer
                .as_ref()
                .ok_or("the Kafka source is not open")?;
            let Some(message) = consumer.poll(Duration::ZERO) else {
                break;
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    // Transport errors are retried by librdkafka; report and poll again later.
                    tracing::warn!(server = %self.server(), %error, "Kafka consumer error");
                    break;
                }
            };
            let key = (message.topic().to_string(), message.partition());
            let Some(split) = self.splits.get_mut(&key) else {
                continue;
            };
            let Some(position) = &mut split.position else {
                continue;
            };
            let offset = message.offset();
            if offset < position.next_offset {
                continue;
            }
            if position.stop_offset.is_some_and(|stop| offset >= stop) {
                position.next_offset = position
                    .next_offset
                    .max(position.stop_offset.unwrap_or(offset));
                continue;
            }
            position.next_offset = offset + 1;
            let headers: Vec<(&str, &[u8])> = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key, h.value.unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            let record = KafkaRecord {
                headers: &headers,
                topic: message.topic(),
                partition: message.partition(),
                offset,
                timestamp: message.timestamp().to_millis(),
                key: message.key(),
                payload: message.payload(),
            };
            let kafka_ts = record.timestamp;
            match (self.deserializer)(&record) {
                Ok(value) => {
                    let timestamp = match &self.strategy {
                        Some(strategy) => match &strategy.timestamp_assigner {
                            Some(assign) => Some(assign(&value, kafka_ts)),
                            None => kafka_ts,
                        },
                        None => kafka_ts,
                    };
                    if let (Some(strategy), Some(ts)) = (&self.strategy, timestamp) {
                        let generator = split
                            .generator
                            .get_or_insert_with(|| (strategy.generator)());
                        generator.on_event(&value, ts, &mut output);
                        if let Some(w) = output.take() {
                            split.watermark = split.watermark.max(w.timestamp);
                        }
                    }
                    split.last_record_ms = Some(now);
                    match timestamp {
                        Some(ts) => ctx.collect_with_timestamp(Ok(value), ts),
                        None => ctx.collect(Ok(value)),
                    }
                }
                Err(message_text) => {
                    let error = KafkaDeserializationError {
                        topic: record.topic.to_string(),
                        partition: record.partition,
                        offset,
                        message: message_text,
                        payload: record.payload.map(<[u8]>::to_vec),
                    };
                    match kafka_ts {
                        Some(ts) => ctx.collect_with_timestamp(Err(error), ts),
                        None => ctx.collect(Err(error)),
                    }
                }
            }
            emitted += 1;
        }
        if emitted > 0 && self.idle {
            ctx.mark_active();
            self.idle = false;
        }
        if let Some(strategy) = &self.strategy {
            let due = self
                .last_periodic_ms
                .is_none_or(|last| now - last >= self.settings.watermark_interval_ms);
            if due {
                self.last_periodic_ms = Some(now);
                for split in self.splits.values_mut() {
                    if let Some(generator) = &mut split.generator {
                        generator.on_periodic_emit(&mut output);
                        if let Some(w) = output.take() {
                            split.watermark = split.watermark.max(w.timestamp);
                        }
                    }
                }
            }
            let idleness = strategy.idleness_ms;
            let active: Vec<i64> = self
                .splits
                .values()
                .filter(|s| match (idleness, s.last_record_ms) {
                    (Some(timeout), Some(last)) => now - last < timeout,
                    (Some(_), None) => false,
                    (None, _) => true,
                })
                .map(|s| s.watermark)
                .collect();
            match active.iter().min() {
                Some(&combined) if combined > self.emitted_watermark => {
                    self.emitted_watermark = combined;
                    ctx.emit_watermark(Watermark::new(combined));
                }
                None if idleness.is_some() && !self.idle => {
                    ctx.mark_idle();
                    self.idle = true;
                }
                _ => {}
            }
        }
        if self.all_done() {
            return Ok(SourcePoll::Finished);
        }
        Ok(if ctx.remaining() == 0 {
            SourcePoll::MoreAvailable
        } else {
            SourcePoll::Idle
        })
    }

    fn snapshot_position(&mut self) -> Result<Option<Vec<u8>>, FunctionError> {
        // Every owned split gets a concrete position before the first snapshot (a restore
        // takes a split the snapshot does not hold for a discovered one, see `set_positions`).
        if !self.assigned {
            self.assign()?;
        }
        let positions = self.positions();
        self.snapshot_offsets = Some(positions.clone());
        let entries: Vec<((String, i32), SplitPosition)> = positions.into_iter().collect();
        let bytes = postcard::to_allocvec(&entries).map_err(|e| e.to_string())?;
        Ok(Some(bytes))
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), FunctionError> {
        let positions = decode_positions(position)?;
        self.set_positions(positions);
        Ok(())
    }

    fn restore_rescaled_positions(&mut self, positions: &[Vec<u8>]) -> Result<(), FunctionError> {
        let mut merged = Positions::new();
        for bytes in positions {
            merged.extend(decode_positions(bytes)?);
        }
        self.set_positions(merged);
        Ok(())
    }

    fn notify_checkpoint_complete(
        &mut self,
        _id: crate::checkpoint::CheckpointId,
    ) -> Result<(), FunctionError> {
        // Asynchronous: the broker's answer never stalls the source; a failure is only logged
        // (the offsets are for monitoring and `StartingOffsets::Committed`).
        if let Some(positions) = self.snapshot_offsets.take() {
            self.commit_offsets(&positions, rdkafka::consumer::CommitMode::Async);
            self.committed_async = Some(positions);
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        // The last asynchronous commit may still be in flight: repeat it synchronously.
        if let Some(positions) = self.committed_async.take() {
            self.commit_offsets(&positions, rdkafka::consumer::CommitMode::Sync);
        }
        self.consumer = None;
        Ok(())
    }
}

impl<T> KafkaSource<T> {
    /// Commits `positions` as the consumer group's offsets; failures are logged.
    fn commit_offsets(&self, positions: &Positions, mode: rdkafka::consumer::CommitMode) {
        let Some(consumer) = &self.consumer else {
            return;
        };
        let mut list = TopicPartitionList::new();
        for ((topic, partition), position) in positions {
            if list
                .add_partition_offset(topic, *partition, Offset::Offset(position.next_offset))
                .is_err()
            {
                return;
            }
        }
        if list.count() == 0 {
            return;
        }
        if let Err(error) = consumer.commit(&list, mode) {
            tracing::warn!(server = %self.server(), %error, "committing Kafka offsets (for monitoring) failed");
        }
    }
}

/// Splits the source's output into records and deserialisation errors (a side output).
#[derive(Clone)]
struct SplitErrors {
    tag: crate::api::OutputTag<KafkaDeserializationError>,
}

crate::api::operator::impl_plain_operator!(SplitErrors);

impl<T> crate::api::ProcessFunction<Result<T, KafkaDeserializationError>> for SplitErrors {
    type Out = T;

    fn process_element(
        &mut self,
        value: Result<T, KafkaDeserializationError>,
        ctx: &mut OperatorContext<'_>,
        out: &mut Collector<'_, T>,
    ) {
        match value {
            Ok(value) => out.collect(value),
            Err(error) => {
                tracing::warn!(%error, "Kafka record sent to the deserialisation errors");
                ctx.output(&self.tag, error);
            }
        }
    }
}

/// One record for the Kafka sink: its value and, optionally, key, partition, topic and headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaProducerRecord {
    /// The topic (`None`: the sink's default topic).
    pub topic: Option<String>,
    /// The key (`None`: no key).
    pub key: Option<Vec<u8>>,
    /// The value.
    pub value: Vec<u8>,
    /// The partition (`None`: chosen by the key's hash, or spread without a key).
    pub partition: Option<i32>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl KafkaProducerRecord {
    /// A record with only a value.
    pub fn value(value: impl Into<Vec<u8>>) -> Self {
        Self {
            value: value.into(),
            ..Self::default()
        }
    }

    /// With a key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Into a given partition.
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Into another topic than the sink's default.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// With a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Collects the first delivery failure (librdkafka calls back on its own threads), and the
/// producer id and epoch the coordinator assigned, from librdkafka's statistics (its only
/// report of them).
#[derive(Debug, Default)]
struct DeliveryReports {
    failure: Mutex<Option<String>>,
    identity: Mutex<Option<(i64, i16)>>,
}

/// The part of librdkafka's statistics JSON the sink reads.
#[derive(Debug, Deserialize)]
struct StatisticsEos {
    eos: Option<EosStatistics>,
}

/// librdkafka's `eos` statistics: the idempotent producer's state and identity.
#[derive(Debug, Deserialize)]
struct EosStatistics {
    idemp_state: String,
    producer_id: i64,
    producer_epoch: i64,
}

impl ClientContext for DeliveryReports {
    fn stats_raw(&self, statistics: &[u8]) {
        // Only the `eos` object is parsed (the rest can be large).
        let Ok(StatisticsEos { eos: Some(eos) }) = serde_json::from_slice(statistics) else {
            return;
        };
        // "Assigned": the producer holds the id and epoch from its one `init_transactions`
        // (each transaction has a producer of its own, so they are that transaction's).
        if eos.idemp_state == "Assigned"
            && eos.producer_id >= 0
            && let Ok(epoch) = i16::try_from(eos.producer_epoch)
            && epoch >= 0
        {
            *self.identity.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((eos.producer_id, epoch));
        }
    }
}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        if let Err((error, message)) = result {
            let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
            if failure.is_none() {
                *failure = Some(format!(
                    "delivery to {}/{} failed: {error}",
                    message.topic(),
                    message.partition()
                ));
            }
        }
    }
}

/// Settings every sink instance shares.
#[derive(Debug)]
struct SinkSettings {
    bootstrap_servers: String,
    topic: String,
    guarantee: crate::connectors::DeliveryGuarantee,
    transactional_id_prefix: String,
    pool_size: u32,
    properties: BTreeMap<String, String>,
    request_timeout_ms: u64,
}

/// Writes every element to Kafka as the [`KafkaProducerRecord`] its serialiser makes: key and
/// partition selection, headers, at least once with the idempotent producer (see the module
/// docs). Add it with `DataStream::add_two_phase_sink`.
///
/// # Examples
///
/// ```
/// use eichhorn::connectors::test_servers::KafkaBroker;
/// use eichhorn::connectors::{KafkaProducerRecord, KafkaSink};
/// use eichhorn::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = KafkaBroker::start()?;
/// broker.create_topic("minima", 3)?;
/// let env = StreamEnv::new();
/// let sink = KafkaSink::new(&broker.bootstrap_servers(), "minima", |(id, t): &(String, f64)| {
///     KafkaProducerRecord::value(t.to_string())
///         .with_key(id.as_bytes().to_vec()) // partition by the key's hash
///         .with_header("unit", "celsius")
/// });
/// // Against a broker with transactions: `sink.exactly_once("minima-job")`.
/// env.from_collection(vec![("sensor-1".to_string(), 21.5f64)]).add_two_phase_sink(sink);
/// let result = env.execute("write kafka").await?;
/// assert_eq!(result.restarts, 0);
/// # Ok(()) }
/// ```
pub struct KafkaSink<T> {
    settings: Arc<SinkSettings>,
    serializer: Arc<dyn Fn(&T) -> KafkaProducerRecord + Send + Sync>,
    /// At least once: the one producer.
    producer: Option<BaseProducer<DeliveryReports>>,
    /// Exactly once: the transaction protocol, and a producer per transaction in flight.
    core: Option<TransactionCore>,
    producers: BTreeMap<String, (u64, BaseProducer<DeliveryReports>)>,
    /// Exactly once: the pre-committed transactions (id -> generation), parked in the registry
    /// if this instance is dropped before committing them.
    prepared: BTreeMap<String, u64>,
    client_id: String,
}

/// The producers of pre-committed transactions whose sink instance was dropped (a failed
/// task), and which transactions this process committed, per transactional id (one entry per
/// id: bounded by the ids in use). See `kafka_txn`.
type Registry = BTreeMap<String, (u64, Known, Option<BaseProducer<DeliveryReports>>)>;

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    static REGISTRY: std::sync::OnceLock<Mutex<Registry>> = std::sync::OnceLock::new();
    REGISTRY
        .get_or_init(|| Mutex::new(Registry::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// How often transactional producers report statistics (the producer id and epoch a
/// pre-commit records; see `KafkaSink::producer_identity`), in milliseconds.
const STATISTICS_INTERVAL_MS: u64 = 50;

/// A generation number unique in this process (which use of a transactional id a
/// transaction is).
fn next_generation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl<T> KafkaSink<T> {
    /// A sink into `topic` (the default for records that name none) on `bootstrap_servers`,
    /// at least once with the idempotent producer.
    pub fn new(
        bootstrap_servers: &str,
        topic: &str,
        serializer: impl Fn(&T) -> KafkaProducerRecord + Send + Sync + 'static,
    ) -> Self {
        Self {
            settings: Arc::new(SinkSettings {
                bootstrap_servers: bootstrap_servers.to_string(),
                topic: topic.to_string(),
                guarantee: crate::connectors::DeliveryGuarantee::AtLeastOnce,
                transactional_id_prefix: String::new(),
                pool_size: 5,
                properties: BTreeMap::new(),
                request_timeout_ms: 60_000,
            }),
            serializer: Arc::new(serializer),
            producer: None,
            core: None,
            producers: BTreeMap::new(),
            prepared: BTreeMap::new(),
            client_id: String::new(),
        }
    }

    /// Exactly once through Kafka transactions: transactional ids `<prefix>-<subtask>-<slot>`
    /// (unique per sink among the producers of the cluster), a transaction per checkpoint
    /// interval, committed when its checkpoint completes. Consumers must read with
    /// `isolation.level=read_committed`. The broker must support transactions (tansu 0.6 does
    /// not). A transaction pre-committed for a completed checkpoint is committed by the restore
    /// also when the process died before committing it: the checkpoint holds its producer id
    /// and epoch, and the restore ends it at the transaction coordinator (Flink's
    /// `resumeTransaction`). The broker must keep it open until then
    /// (`transaction.timeout.ms`, set to 15 minutes; the broker's
    /// `transaction.max.timeout.ms` must allow it).
    ///
    /// # Panics
    ///
    /// When called on a clone of a sink already added to a job.
    pub fn exactly_once(mut self, transactional_id_prefix: &str) -> Self {
        let settings = Arc::get_mut(&mut self.settings)
            .expect("configured before the sink is cloned into the job");
        settings.guarantee = crate::connectors::DeliveryGuarantee::ExactlyOnce;
        settings.transactional_id_prefix = transactional_id_prefix.to_string();
        self
    }

    /// Sets a librdkafka producer property (e.g. `linger.ms`, `compression.type`).
    ///
    /// # Panics
    ///
    /// When called on a clone of a sink already added to a job.
    pub fn property(mut self, key: &str, value: &str) -> Self {
        Arc::get_mut(&mut self.settings)
            .expect("configured before the sink is cloned into the job")
            .properties
            .insert(key.to_string(), value.to_string());
        self
    }

    fn server(&self) -> String {
        format!("kafka://{}", self.settings.bootstrap_servers)
    }

    fn exactly_once_mode(&self) -> bool {
        self.settings.guarantee == crate::connectors::DeliveryGuarantee::ExactlyOnce
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.request_timeout_ms)
    }

    /// The producer records of `txn` go to.
    fn producer_for(
        &self,
        txn: &KafkaTransaction,
    ) -> Result<&BaseProducer<DeliveryReports>, FunctionError> {
        if self.exactly_once_mode() {
            return self
                .producers
                .get(txn.transactional_id())
                .map(|(_, p)| p)
                .ok_or_else(|| {
                    format!("no producer for transaction {}", txn.transactional_id()).into()
                });
        }
        self.producer
            .as_ref()
            .ok_or_else(|| "the Kafka sink is not open".into())
    }

    /// A producer, with `transactional.id` = `transactional_id` when given.
    fn create_producer(
        &self,
        transactional_id: Option<&str>,
    ) -> Result<BaseProducer<DeliveryReports>, FunctionError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.settings.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("client.id", &self.client_id)
            .set(
                "message.timeout.ms",
                self.settings.request_timeout_ms.to_string(),
            );
        if let Some(id) = transactional_id {
            // Statistics carry the producer id and epoch that a pre-commit records (see
            // `producer_identity`); their interval bounds how long that waits.
            config
                .set("transactional.id", id)
                .set("transaction.timeout.ms", "900000")
                .set("statistics.interval.ms", STATISTICS_INTERVAL_MS.to_string());
        }
        for (key, value) in &self.settings.properties {
            config.set(key, value);
        }
        config
            .create_with_context(DeliveryReports::default())
            .map_err(|e| {
                UnrecoverableError::new(format!("{}: cannot create a producer: {e}", self.server()))
                    .into()
            })
    }

    /// Carries out what the transaction core decided, in order.
    fn carry_out(&mut self) -> Result<(), FunctionError> {
        let timeout = self.timeout();
        let server = self.server();
        while let Some(action) = self.core.as_mut().and_then(TransactionCore::poll_action) {
            match action {
                TxnAction::Begin { id } => {
                    let producer = self.create_producer(Some(&id))?;
                    producer
                        .init_transactions(timeout)
                        .map_err(|e| format!("{server}: init_transactions of {id} failed: {e}"))?;
                    producer
                        .begin_transaction()
                        .map_err(|e| format!("{server}: begin_transaction of {id} failed: {e}"))?;
                    self.producers.insert(id, (next_generation(), producer));
                }
                TxnAction::Flush { id } => {
                    let (generation, producer) =
                        self.producers.get(&id).ok_or("no producer to flush")?;
                    producer
                        .flush(timeout)
                        .map_err(|e| format!("{server}: flushing transaction {id} failed: {e}"))?;
                    check_deliveries(&server, producer)?;
                    self.prepared.insert(id, *generation);
                }
                TxnAction::Commit { id } => {
                    let (generation, producer) =
                        self.producers.remove(&id).ok_or("no producer to commit")?;
                    producer.commit_transaction(timeout).map_err(|e| {
                        format!("{server}: committing transaction {id} failed: {e}")
                    })?;
                    self.prepared.remove(&id);
                    registry().insert(id, (generation, Known::Committed, None));
                }
                TxnAction::Abort { id } => {
                    if let Some((_, producer)) = self.producers.remove(&id) {
                        producer.abort_transaction(timeout).map_err(|e| {
                            format!("{server}: aborting transaction {id} failed: {e}")
                        })?;
                    }
                    self.prepared.remove(&id);
                }
                TxnAction::Fence { id } => {
                    let producer = self.create_producer(Some(&id))?;
                    producer.init_transactions(timeout).map_err(|e| {
                        format!("{server}: fencing {id} (init_transactions) failed: {e}")
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The producer id and epoch of the producer of transaction `id`, from librdkafka's
    /// statistics: waits (polling the producer) for the first report after
    /// `init_transactions`, at most the request timeout.
    fn producer_identity(&self, id: &str) -> Result<(i64, i16), FunctionError> {
        let (_, producer) = self
            .producers
            .get(id)
            .ok_or_else(|| format!("no producer for transaction {id}"))?;
        let poll = Duration::from_millis(5);
        let polls_max = self.settings.request_timeout_ms / 5 + 1;
        for _ in 0..polls_max {
            let identity = *producer
                .context()
                .identity
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(identity) = identity {
                return Ok(identity);
            }
            producer.poll(poll);
        }
        Err(format!(
            "{}: the producer id and epoch of transaction {id} did not appear in librdkafka's \
             statistics within {} ms (is statistics.interval.ms overridden with 0?)",
            self.server(),
            self.settings.request_timeout_ms
        )
        .into())
    }

    /// Commits a pre-committed transaction whose producer is gone with `EndTxn` under its
    /// recorded producer id and epoch (see `kafka_txn::ResumeCommit`), blocking the restore
    /// through the retries' backoff.
    fn resume_commit(&self, mut resume: ResumeCommit) -> ResumeStep {
        let timeout = self.timeout();
        let mut coordinator: Option<String> = None;
        let mut step = resume.start();
        loop {
            step = match step {
                ResumeStep::FindCoordinator { backoff_ms } => {
                    std::thread::sleep(Duration::from_millis(backoff_ms));
                    let answer = super::kafka_wire::find_transaction_coordinator(
                        &self.settings.bootstrap_servers,
                        &resume.transactional_id,
                        timeout,
                    )
                    .map(|(code, address)| {
                        coordinator = Some(address);
                        code
                    });
                    resume.handle_coordinator(answer)
                }
                ResumeStep::EndTxn { backoff_ms } => {
                    std::thread::sleep(Duration::from_millis(backoff_ms));
                    let answer = match &coordinator {
                        Some(address) => super::kafka_wire::commit_transaction(
                            address,
                            &resume.transactional_id,
                            resume.producer_id,
                            resume.producer_epoch,
                            timeout,
                        ),
                        None => Err("no coordinator known".to_string()),
                    };
                    resume.handle_end_txn(answer)
                }
                done => return done,
            };
        }
    }

    /// The first delivery failure of the at-least-once producer.
    fn check_deliveries(&self) -> Result<(), FunctionError> {
        match &self.producer {
            Some(producer) => check_deliveries(&self.server(), producer),
            None => Ok(()),
        }
    }
}

/// The first delivery failure of `producer`, as an error naming the server.
fn check_deliveries(
    server: &str,
    producer: &BaseProducer<DeliveryReports>,
) -> Result<(), FunctionError> {
    let failure = producer
        .context()
        .failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    match failure {
        Some(failure) => Err(format!("{server}: {failure}").into()),
        None => Ok(()),
    }
}

impl<T> Clone for KafkaSink<T> {
    fn clone(&self) -> Self {
        Self {
            settings: Arc::clone(&self.settings),
            serializer: Arc::clone(&self.serializer),
            producer: None,
            core: None,
            producers: BTreeMap::new(),
            prepared: BTreeMap::new(),
            client_id: String::new(),
        }
    }
}

impl<T> Drop for KafkaSink<T> {
    fn drop(&mut self) {
        // A failed task: park the producers of pre-committed transactions, so that the restore
        // commits them (librdkafka cannot resume another producer's transaction).
        if self.prepared.is_empty() {
            return;
        }
        let mut registry = registry();
        for (id, generation) in std::mem::take(&mut self.prepared) {
            if let Some((_, producer)) = self.producers.remove(&id) {
                registry.insert(id, (generation, Known::Prepared, Some(producer)));
            }
        }
    }
}

impl<T> fmt::Debug for KafkaSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSink")
            .field("settings", &self.settings)
            .finish()
    }
}

crate::api::operator::impl_plain_operator!(KafkaSink<T>; T);

impl<T: Send + 'static> TwoPhaseCommitSink<T> for KafkaSink<T> {
    type Txn = KafkaTransaction;

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        self.client_id = format!("eichhorn-{}-{}", ctx.operator_name, ctx.subtask_index);
        if self.exactly_once_mode() {
            let prefix = &self.settings.transactional_id_prefix;
            if prefix.is_empty() {
                return Err(UnrecoverableError::new(
                    "Kafka sink: exactly once needs a transactional id prefix",
                )
                .into());
            }
            let mut core =
                TransactionCore::new(prefix, ctx.subtask_index, self.settings.pool_size.max(2));
            core.handle_open();
            self.core = Some(core);
            self.carry_out()?;
        } else {
            self.producer = Some(self.create_producer(None)?);
        }
        Ok(())
    }

    fn begin_transaction(&mut self) -> Result<KafkaTransaction, FunctionError> {
        let Some(core) = &mut self.core else {
            return Ok(KafkaTransaction::default());
        };
        let mut txn = core.handle_begin(0).map_err(|e| e.to_string())?;
        self.carry_out()?;
        txn.generation = self
            .producers
            .get(txn.transactional_id())
            .map_or(0, |(generation, _)| *generation);
        Ok(txn)
    }

    fn invoke(
        &mut self,
        txn: &mut KafkaTransaction,
        value: T,
        _ctx: &SinkContext,
    ) -> Result<(), FunctionError> {
        let record = (self.serializer)(&value);
        let topic = record.topic.as_deref().unwrap_or(&self.settings.topic);
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in &record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        let mut base = BaseRecord::to(topic)
            .payload(&record.value)
            .headers(headers);
        if let Some(key) = &record.key {
            base = base.key(key);
        }
        if let Some(partition) = record.partition {
            base = base.partition(partition);
        }
        let server = self.server();
        let producer = self.producer_for(txn)?;
        // A full local queue waits for deliveries (bounded by librdkafka's
        // queue.buffering.max.messages): the back-pressure of this sink.
        let mut pending = base;
        loop {
            match producer.send(pending) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    producer.poll(Duration::from_millis(50));
                    pending = back;
                }
                Err((error, _)) => {
                    return Err(format!("{server}: producing to {topic} failed: {error}").into());
                }
            }
        }
        producer.poll(Duration::ZERO);
        check_deliveries(&server, producer)?;
        txn.records += 1;
        Ok(())
    }

    fn pre_commit(&mut self, txn: &mut KafkaTransaction) -> Result<(), FunctionError> {
        if let Some(core) = &mut self.core {
            core.handle_pre_commit(txn);
            self.carry_out()?;
            // Recorded in the checkpoint: a restore in another process resumes the
            // transaction with them.
            let (producer_id, producer_epoch) = self.producer_identity(txn.transactional_id())?;
            txn.producer_id = producer_id;
            txn.producer_epoch = producer_epoch;
            return Ok(());
        }
        let timeout = self.timeout();
        let server = self.server();
        let producer = self.producer_for(txn)?;
        producer
            .flush(timeout)
            .map_err(|e| format!("{server}: flushing failed: {e}"))?;
        check_deliveries(&server, producer)
    }

    fn commit(&mut self, txn: KafkaTransaction) -> Result<(), FunctionError> {
        if let Some(core) = &mut self.core {
            core.handle_commit(&txn);
            self.carry_out()?;
        }
        Ok(())
    }

    fn abort(&mut self, txn: KafkaTransaction) -> Result<(), FunctionError> {
        if let Some(core) = &mut self.core {
            core.handle_abort(&txn);
            self.carry_out()?;
        }
        Ok(())
    }

    fn recover_and_commit(&mut self, txn: KafkaTransaction) -> Result<(), FunctionError> {
        if !self.exactly_once_mode() {
            return Ok(());
        }
        let id = txn.transactional_id().to_string();
        let parked = {
            let mut registry = registry();
            match registry.get(&id) {
                Some((generation, known, _)) if *generation == txn.generation => {
                    let known = *known;
                    let producer = if known == Known::Prepared {
                        registry.remove(&id).and_then(|(_, _, p)| p)
                    } else {
                        None
                    };
                    (Some(known), producer)
                }
                _ => (None, None),
            }
        };
        match TransactionCore::recover_commit(&txn, parked.0) {
            Recovery::Act(TxnAction::Commit { id }) => {
                let producer = parked.1.ok_or("a parked producer")?;
                producer.commit_transaction(self.timeout()).map_err(|e| {
                    format!(
                        "{}: committing recovered transaction {id} failed: {e}",
                        self.server()
                    )
                })?;
                registry().insert(id, (txn.generation, Known::Committed, None));
            }
            Recovery::Act(other) => {
                return Err(format!("unexpected recovery action {other:?}").into());
            }
            Recovery::Done => {}
            Recovery::Resume(resume) => match self.resume_commit(resume) {
                ResumeStep::Committed => {
                    tracing::info!(transactional_id = %id, records = txn.records(), "committed a recovered Kafka transaction with its recorded producer id and epoch");
                    registry().insert(id, (txn.generation, Known::Committed, None));
                }
                ResumeStep::AlreadyEnded => {
                    tracing::info!(transactional_id = %id, "a recovered Kafka transaction had been committed before (its epoch is fenced)");
                }
                ResumeStep::Failed(message) => {
                    // No restart can commit it: fail the job, naming the transaction.
                    return Err(
                        UnrecoverableError::new(format!("{}: {message}", self.server())).into(),
                    );
                }
                ResumeStep::GaveUp(message) => {
                    // A restart tries again (the broker may be back); the restart strategy
                    // bounds how often.
                    return Err(format!("{}: {message}", self.server()).into());
                }
                other => return Err(format!("unexpected resume step {other:?}").into()),
            },
            Recovery::Unresumable(id) => {
                tracing::error!(
                    transactional_id = %id,
                    records = txn.records(),
                    "a pre-committed Kafka transaction without a recorded producer id and epoch \
                     cannot be resumed after a process restart: \
                     it was committed if the crash came after its commit, else its records are lost"
                );
            }
        }
        Ok(())
    }

    fn recover_and_abort(&mut self, txn: KafkaTransaction) -> Result<(), FunctionError> {
        if !self.exactly_once_mode() {
            return Ok(());
        }
        if let Some(TxnAction::Fence { id }) = TransactionCore::recover_abort(&txn) {
            let producer = self.create_producer(Some(&id))?;
            producer.init_transactions(self.timeout()).map_err(|e| {
                format!(
                    "{}: fencing {id} (init_transactions) failed: {e}",
                    self.server()
                )
            })?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        if let Some(producer) = &self.producer {
            producer
                .flush(self.timeout())
                .map_err(|e| format!("{}: flushing failed: {e}", self.server()))?;
        }
        self.check_deliveries()?;
        self.producer = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_one_owner_and_a_topic_spreads_over_all_subtasks() {
        for parallelism in 1..=5u32 {
            let mut load = vec![0u32; parallelism as usize];
            for partition in 0..(parallelism as i32 * 3) {
                let owner = split_owner("sensors", partition, parallelism);
                assert!(owner < parallelism);
                load[owner as usize] += 1;
            }
            assert!(load.iter().all(|n| *n == 3), "P={parallelism}: {load:?}");
        }
        assert_eq!(split_owner("t", 7, 0), 0, "parallelism 0 counts as 1");
    }

    fn all_owned(
        selection: &TopicSelection,
        topics: &[(&str, Vec<i32>)],
        parallelism: u32,
    ) -> Vec<Vec<(String, i32)>> {
        (0..parallelism)
            .map(|subtask| owned_partitions(selection, topics, subtask, parallelism).unwrap())
            .collect()
    }

    #[test]
    fn discovery_takes_added_partitions_and_matching_topics_without_moving_any() {
        let pattern = TopicSelection::Matching(Arc::new(|name: &str| name.starts_with("in-")));
        let before = [
            ("in-a", vec![0, 1]),
            ("other", vec![0]),
            ("__internal", vec![0]),
        ];
        let after = [
            ("in-a", vec![0, 1, 2, 3]),
            ("other", vec![0, 1]),
            ("__internal", vec![0]),
            ("in-b", vec![0, 1, 2]),
        ];
        for parallelism in 1..=4 {
            let old = all_owned(&pattern, &before, parallelism);
            let new = all_owned(&pattern, &after, parallelism);
            for (subtask, (old, new)) in old.iter().zip(&new).enumerate() {
                assert!(
                    old.iter().all(|key| new.contains(key)),
                    "P={parallelism} subtask {subtask}: a partition moved: {old:?} -> {new:?}"
                );
            }
            let mut every: Vec<(String, i32)> = new.into_iter().flatten().collect();
            every.sort();
            let expected: Vec<(String, i32)> = [("in-a", 0..4), ("in-b", 0..3)]
                .into_iter()
                .flat_map(|(t, ps)| ps.map(move |p| (t.to_string(), p)))
                .collect();
            assert_eq!(every, expected, "P={parallelism}: each partition once");
        }
        let list = TopicSelection::List(vec!["in-a".into(), "gone".into()]);
        assert_eq!(
            owned_partitions(&list, &after, 0, 1).unwrap_err(),
            "gone",
            "a listed topic that does not exist is named"
        );
    }

    proptest::proptest! {
        /// Growing topics (more partitions, more topics): at every parallelism each partition
        /// has one owner, and a partition's owner never changes as others appear.
        #[test]
        fn discovered_partitions_have_one_stable_owner(
            sizes in proptest::collection::vec((1i32..6, 0i32..6), 1..5),
            parallelism in 1u32..6,
        ) {
            let names: Vec<String> = (0..sizes.len()).map(|i| format!("t{i}")).collect();
            let before: Vec<(&str, Vec<i32>)> = names
                .iter()
                .zip(&sizes)
                .map(|(n, (first, _))| (n.as_str(), (0..*first).collect()))
                .collect();
            let after: Vec<(&str, Vec<i32>)> = names
                .iter()
                .zip(&sizes)
                .map(|(n, (first, added))| (n.as_str(), (0..first + added).collect()))
                .collect();
            let list = TopicSelection::List(names.clone());
            let old = all_owned(&list, &before, parallelism);
            let new = all_owned(&list, &after, parallelism);
            for (old, new) in old.iter().zip(&new) {
                proptest::prop_assert!(old.iter().all(|key| new.contains(key)));
            }
            let mut every: Vec<(String, i32)> = new.into_iter().flatten().collect();
            let count = every.len();
            every.sort();
            every.dedup();
            let total: i32 = sizes.iter().map(|(a, b)| a + b).sum();
            proptest::prop_assert_eq!(every.len(), count);
            proptest::prop_assert_eq!(count, total as usize);
        }
    }

    #[test]
    fn a_restore_with_discovery_reads_partitions_the_checkpoint_lacks_from_the_earliest() {
        let restored: Positions = [(
            ("t".to_string(), 0),
            SplitPosition {
                next_offset: 7,
                stop_offset: None,
            },
        )]
        .into_iter()
        .collect();
        for discovery in [true, false] {
            let mut source = KafkaSource::<u8>::new("x", &["t"], |_| Ok(0))
                .starting_offsets(StartingOffsets::Latest);
            if !discovery {
                source = source.partition_discovery_interval_ms(0);
            }
            // `open` listed partitions 0 and 1; the checkpoint knows only 0.
            source.splits.insert(("t".into(), 0), Split::new(false));
            source.splits.insert(("t".into(), 1), Split::new(false));
            source.set_positions(restored.clone());
            let zero = &source.splits[&("t".to_string(), 0)];
            let one = &source.splits[&("t".to_string(), 1)];
            assert_eq!(zero.position.map(|p| p.next_offset), Some(7));
            assert!(!zero.from_earliest);
            assert_eq!(one.from_earliest, discovery, "discovery {discovery}");
        }
    }

    #[test]
    fn positions_round_trip_and_garbage_is_an_unrecoverable_error() {
        let mut positions = Positions::new();
        positions.insert(
            ("a".into(), 0),
            SplitPosition {
                next_offset: 5,
                stop_offset: Some(9),
            },
        );
        positions.insert(
            ("b".into(), 3),
            SplitPosition {
                next_offset: 0,
                stop_offset: None,
            },
        );
        let entries: Vec<_> = positions.clone().into_iter().collect();
        let bytes = postcard::to_allocvec(&entries).unwrap();
        assert_eq!(decode_positions(&bytes).unwrap(), positions);
        let error = decode_positions(&[0xff, 0xff, 0xff]).unwrap_err();
        assert!(UnrecoverableError::is_in(error.as_ref()), "{error}");
    }

    #[test]
    fn a_rescaled_restore_takes_exactly_the_owned_splits() {
        let all: Positions = (0..12)
            .map(|p| {
                (
                    ("t".to_string(), p),
                    SplitPosition {
                        next_offset: i64::from(p),
                        stop_offset: None,
                    },
                )
            })
            .collect();
        let mut seen = Positions::new();
        for subtask in 0..3 {
            let mut source = KafkaSource::<u8>::new("x", &["t"], |_| Ok(0));
            source.subtask_index = subtask;
            source.parallelism = 3;
            source.set_positions(all.clone());
            for (key, split) in &source.splits {
                assert_eq!(split_owner(&key.0, key.1, 3), subtask);
                assert!(
                    seen.insert(key.clone(), split.position.unwrap()).is_none(),
                    "one owner"
                );
            }
        }
        assert_eq!(seen, all, "every split taken once");
    }
}
