//! The Kafka source and sink against a real Kafka-compatible broker (tansu, in-memory storage),
//! started by the test on a free loopback port: records written by the sink are read back by
//! the source at parallelism 1, 2 and 4; deserialisation errors reach the errors stream naming
//! topic, partition and offset; per-partition watermarks keep a partition that is read late
//! from being late; a job killed mid-stream restores its offsets and writes every record once
//! into an exactly-once file sink; keys, partitions and headers arrive as sent.
//!
//! Needs `tansu` (`cargo install tansu --locked --features dynostore`; `.ci/run` installs it);
//! without it the tests fail saying so. Jobs run on real time: the broker answers on its own
//! threads. No verdict depends on timing.
#![cfg(feature = "kafka")]

mod connector_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use connector_support::{assert_same_counts, counts, failing_once, within};
use eichhorn::checkpoint::RestartStrategy;
use eichhorn::connectors::test_servers::KafkaBroker;
use eichhorn::connectors::{KafkaProducerRecord, KafkaSink, KafkaSource, StartingOffsets};
use eichhorn::operator::window::{TimeDomain, WindowAssigner};
use eichhorn::prelude::*;
use eichhorn::time::WatermarkStrategy;

fn start() -> KafkaBroker {
    KafkaBroker::start().unwrap_or_else(|e| panic!("this test needs a Kafka broker: {e}"))
}

/// A unique topic name per call (tests share no broker, but a test may make several topics).
fn topic(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn parse_u64(record: &eichhorn::connectors::KafkaRecord<'_>) -> Result<u64, String> {
    let payload = record.payload.ok_or("no value")?;
    let text = std::str::from_utf8(payload).map_err(|e| e.to_string())?;
    text.parse().map_err(|e| format!("{text:?}: {e}"))
}

/// A sink into `topic` that sends one record per batch: tansu 0.6 answers `ListOffsets`
/// (latest) with the last *batch*'s base offset + 1 instead of the last offset + 1, so a
/// bounded source stops at the right end only when every batch holds one record. Real Kafka
/// brokers need no such setting.
fn sink<T>(
    broker: &KafkaBroker,
    topic: &str,
    serializer: impl Fn(&T) -> KafkaProducerRecord + Send + Sync + 'static,
) -> KafkaSink<T> {
    KafkaSink::new(&broker.bootstrap_servers(), topic, serializer)
        .property("batch.num.messages", "1")
        .property("linger.ms", "0")
}

/// Writes `values` into `topic` with the sink (keyed by the value, so partitions spread).
async fn produce(broker: &KafkaBroker, topic: &str, values: Vec<String>) {
    let env = StreamEnv::new();
    env.from_collection(values)
        .add_two_phase_sink(sink(broker, topic, |v: &String| {
            KafkaProducerRecord::value(v.clone()).with_key(v.as_bytes().to_vec())
        }));
    within(env.execute("produce")).await.expect("produced");
}

/// Reads `topic` to its current end at `parallelism`.
async fn read_all(broker: &KafkaBroker, topic: &str, parallelism: u32) -> Vec<u64> {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    let streams = KafkaSource::new(&broker.bootstrap_servers(), &[topic], parse_u64)
        .bounded()
        .build(&env, "numbers");
    let out = streams.records.collect_sink();
    within(env.execute("read")).await.expect("read");
    out.take()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_by_the_sink_are_read_back_once_at_parallelism_1_2_4() {
    let broker = start();
    let name = topic("numbers");
    broker.create_topic(&name, 4).expect("topic");
    produce(
        &broker,
        &name,
        (0..3_000u64).map(|n| n.to_string()).collect(),
    )
    .await;
    for parallelism in [1, 2, 4] {
        let read = read_all(&broker, &name, parallelism).await;
        assert_same_counts(
            &counts(read),
            &counts(0..3_000u64),
            &format!("P={parallelism}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_go_to_the_errors_stream_naming_topic_partition_and_offset() {
    let broker = start();
    let name = topic("mixed");
    broker.create_topic(&name, 1).expect("topic");
    let values = vec![
        "1".to_string(),
        "two".into(),
        "3".into(),
        "".into(),
        "5".into(),
    ];
    produce(&broker, &name, values).await;
    let env = StreamEnv::new();
    let streams = KafkaSource::new(&broker.bootstrap_servers(), &[name.as_str()], parse_u64)
        .bounded()
        .build(&env, "mixed");
    let good = streams.records.collect_sink();
    let bad = streams.errors.collect_sink();
    within(env.execute("read")).await.expect("read");
    assert_eq!(good.take(), vec![1, 3, 5]);
    let bad = bad.take();
    let located: Vec<(String, i32, i64)> = bad
        .iter()
        .map(|e| (e.topic.clone(), e.partition, e.offset))
        .collect();
    assert_eq!(located, vec![(name.clone(), 0, 1), (name.clone(), 0, 3)]);
    assert!(
        bad[0].to_string().contains(&format!("{name}/0@1")),
        "{}",
        bad[0]
    );
    assert!(bad[0].message.contains("\"two\""), "{}", bad[0].message);
    assert_eq!(bad[0].payload.as_deref(), Some(&b"two"[..]));
}

/// Partition 0 and 1 hold the same event times; the source reads them in any interleaving.
/// With one watermark per partition (the minimum is what counts) no record is late for a
/// one-second tumbling window, and the window counts equal the sequential ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_partition_watermarks_keep_a_partition_read_late_from_being_late() {
    let broker = start();
    let name = topic("events");
    broker.create_topic(&name, 2).expect("topic");
    // Event time = the value in ms; both partitions get 0..4000 (partition chosen explicitly).
    let env = StreamEnv::new();
    env.from_generator(8_000, |i| i)
        .add_two_phase_sink(sink(&broker, &name, |i: &u64| {
            KafkaProducerRecord::value((i % 4_000).to_string()).with_partition((i / 4_000) as i32)
        }));
    within(env.execute("produce")).await.expect("produced");

    for parallelism in [1, 2] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        let streams = KafkaSource::new(&broker.bootstrap_servers(), &[name.as_str()], parse_u64)
            .bounded()
            .watermarks(
                WatermarkStrategy::for_bounded_out_of_orderness(0)
                    .with_timestamp_assigner(|v: &u64, _| *v as i64),
            )
            .watermark_interval_ms(1)
            .build(&env, "events");
        let counts_per_window = streams
            .records
            .map(|v| (v / 1_000, 1u64))
            .key_by(|(w, _): &(u64, u64)| *w)
            .window(WindowAssigner::tumbling(TimeDomain::EventTime, 1_000, 0).unwrap())
            .reduce(|(w, a), (_, b)| (w, a + b))
            .collect_sink();
        let result = within(env.execute("windows")).await.expect("runs");
        let mut got = counts_per_window.take();
        got.sort();
        assert_eq!(
            got,
            vec![(0, 2_000), (1, 2_000), (2, 2_000), (3, 2_000)],
            "P={parallelism}"
        );
        let late: u64 = result.operators.iter().map(|o| o.late_records).sum();
        assert_eq!(late, 0, "P={parallelism}: no record was late");
    }
}

/// Kafka -> a map killed mid-stream -> the exactly-once file sink: the restored source offsets
/// replay exactly what the restored checkpoint did not cover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_mid_stream_restores_its_offsets_exactly_once() {
    let broker = start();
    let name = topic("replay");
    broker.create_topic(&name, 3).expect("topic");
    produce(
        &broker,
        &name,
        (0..5_000u64).map(|n| n.to_string()).collect(),
    )
    .await;
    for parallelism in [1, 2] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        env.enable_checkpointing(20);
        env.set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 3,
            delay_ms: 10,
        });
        KafkaSource::new(&broker.bootstrap_servers(), &[name.as_str()], parse_u64)
            .bounded()
            .starting_offsets(StartingOffsets::Earliest)
            .build(&env, "replay")
            .records
            .map(failing_once(2_500))
            .write_as_text_exactly_once(&out);
        let result = within(env.execute("replay")).await.expect("recovers");
        assert_eq!(result.restarts, 1, "P={parallelism}");
        let mut values = Vec::new();
        for entry in std::fs::read_dir(&out).expect("output") {
            let entry = entry.expect("entry");
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).expect("part");
            values.extend(text.lines().map(|l| l.parse::<u64>().expect("number")));
        }
        assert_same_counts(
            &counts(values),
            &counts(0..5_000u64),
            &format!("P={parallelism}"),
        );
    }
}

/// Kafka -> Kafka at least once through a failure: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_kafka_at_least_once_loses_nothing_through_a_failure() {
    let broker = start();
    let input = topic("in");
    let output = topic("out");
    broker.create_topic(&input, 2).expect("topic");
    broker.create_topic(&output, 2).expect("topic");
    produce(
        &broker,
        &input,
        (0..4_000u64).map(|n| n.to_string()).collect(),
    )
    .await;
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.enable_checkpointing(20);
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 3,
        delay_ms: 10,
    });
    KafkaSource::new(&broker.bootstrap_servers(), &[input.as_str()], parse_u64)
        .bounded()
        .build(&env, "in")
        .records
        .map(failing_once(1_999))
        .add_two_phase_sink(sink(&broker, &output, |v: &u64| {
            KafkaProducerRecord::value(v.to_string())
        }));
    let result = within(env.execute("kafka to kafka"))
        .await
        .expect("recovers");
    assert_eq!(result.restarts, 1);
    let read = read_all(&broker, &output, 1).await;
    let seen = counts(read);
    let missing: Vec<_> = (0..4_000u64)
        .filter(|v| !seen.contains_key(v))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "lost {missing:?}");
}

/// Keys, explicit partitions, other topics and headers arrive as the serialiser made them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_partitions_topics_and_headers_arrive_as_sent() {
    let broker = start();
    let name = topic("routed");
    let other = topic("other");
    broker.create_topic(&name, 3).expect("topic");
    broker.create_topic(&other, 1).expect("topic");
    let env = StreamEnv::new();
    let other_topic = other.clone();
    env.from_collection((0..30u64).collect::<Vec<_>>())
        .add_two_phase_sink(sink(&broker, &name, move |v: &u64| {
            let record = KafkaProducerRecord::value(v.to_string())
                .with_key(format!("k{v}").into_bytes())
                .with_header("source", b"test".to_vec());
            if v.is_multiple_of(10) {
                record.with_topic(other_topic.clone())
            } else {
                record.with_partition((v % 3) as i32)
            }
        }));
    within(env.execute("routed")).await.expect("produced");

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let env = StreamEnv::new();
    let sink = seen.clone();
    let streams = KafkaSource::new(
        &broker.bootstrap_servers(),
        &[name.as_str(), other.as_str()],
        move |r| {
            let value = parse_u64(r)?;
            assert_eq!(
                r.headers,
                &[("source", &b"test"[..])],
                "headers arrive in order"
            );
            sink.lock().unwrap().push((
                r.topic.to_string(),
                r.partition,
                r.key.map(<[u8]>::to_vec),
                value,
            ));
            Ok(value)
        },
    )
    .bounded()
    .build(&env, "routed");
    let _ = streams.records.collect_sink();
    within(env.execute("read")).await.expect("read");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 30);
    for (topic, partition, key, value) in seen {
        assert_eq!(key, Some(format!("k{value}").into_bytes()));
        if value.is_multiple_of(10) {
            assert_eq!(topic, other);
        } else {
            assert_eq!(
                (topic.as_str(), partition),
                (name.as_str(), (value % 3) as i32)
            );
        }
    }
}

/// Kafka -> Kafka exactly once through a failure mid-stream and one between pre-commit and
/// commit: the output topic, read `read_committed` from the start, holds every record once.
/// Needs a broker that ends transactions (tansu 0.6 answers `EndTxn` with "not supported"):
/// runs against the brokers in `EICHHORN_TEST_KAFKA_TXN_BROKERS` (e.g. `127.0.0.1:9092`, with
/// auto-created topics), and says plainly that it was skipped otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_kafka_exactly_once_with_transactions() {
    let Ok(brokers) = std::env::var("EICHHORN_TEST_KAFKA_TXN_BROKERS") else {
        eprintln!(
            "SKIPPED kafka_to_kafka_exactly_once_with_transactions: set \
             EICHHORN_TEST_KAFKA_TXN_BROKERS to a Kafka broker that supports transactions \
             (tansu 0.6 does not end transactions)"
        );
        return;
    };
    let input = topic("eos-in");
    let output = topic("eos-out");
    // Produce the input (auto-created topic).
    let env = StreamEnv::new();
    env.from_collection((0..4_000u64).collect::<Vec<_>>())
        .add_two_phase_sink(KafkaSink::new(&brokers, &input, |v: &u64| {
            KafkaProducerRecord::value(v.to_string())
        }));
    within(env.execute("produce")).await.expect("produced");

    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.enable_checkpointing(50);
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 3,
        delay_ms: 10,
    });
    let failing = connector_support::CommitFailure::new(
        KafkaSink::new(&brokers, &output, |v: &u64| {
            KafkaProducerRecord::value(v.to_string())
        })
        .exactly_once(&format!("eichhorn-test-{output}")),
        3,
        false,
    );
    KafkaSource::new(&brokers, &[input.as_str()], parse_u64)
        .bounded()
        .build(&env, "in")
        .records
        .map(failing_once(1_500))
        .add_two_phase_sink(failing.clone());
    within(env.execute("exactly once")).await.expect("recovers");

    let env = StreamEnv::new();
    let streams = KafkaSource::new(&brokers, &[output.as_str()], parse_u64)
        .bounded()
        .build(&env, "check");
    let out = streams.records.collect_sink();
    within(env.execute("read")).await.expect("read");
    assert_same_counts(&counts(out.take()), &counts(0..4_000u64), "exactly once");
}

/// Offsets are committed to the broker when checkpoints complete (for monitoring): a second job
/// of the same group starting from the committed offsets reads only what came after the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_committed_on_checkpoints_start_the_next_job_of_the_group() {
    let broker = start();
    let name = topic("committed");
    broker.create_topic(&name, 2).expect("topic");
    produce(&broker, &name, (0..500u64).map(|n| n.to_string()).collect()).await;
    let read_group = |parallelism: u32| {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        env.enable_checkpointing(20);
        let streams = KafkaSource::new(&broker.bootstrap_servers(), &[name.as_str()], parse_u64)
            .group_id("monitoring")
            .starting_offsets(StartingOffsets::Committed)
            .bounded()
            .build(&env, "group");
        (env, streams.records.collect_sink())
    };
    let (env, first) = read_group(2);
    within(env.execute("first")).await.expect("runs");
    assert_same_counts(&counts(first.take()), &counts(0..500u64), "first job");
    produce(
        &broker,
        &name,
        (500..700u64).map(|n| n.to_string()).collect(),
    )
    .await;
    let (env, second) = read_group(1);
    within(env.execute("second")).await.expect("runs");
    assert_same_counts(
        &counts(second.take()),
        &counts(500..700u64),
        "second job: only the new records",
    );
}

/// A topic pattern reads every matching topic and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_pattern_reads_every_matching_topic() {
    let broker = start();
    let a = topic("pattern-a");
    let b = topic("pattern-b");
    let other = topic("unrelated");
    for (name, values) in [(&a, 0..100u64), (&b, 100..200), (&other, 200..300)] {
        broker.create_topic(name, 2).expect("topic");
        produce(&broker, name, values.map(|n| n.to_string()).collect()).await;
    }
    for parallelism in [1, 2] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        let streams = KafkaSource::matching(
            &broker.bootstrap_servers(),
            |name| name.starts_with("pattern-"),
            parse_u64,
        )
        .bounded()
        .build(&env, "pattern");
        let out = streams.records.collect_sink();
        within(env.execute("pattern")).await.expect("runs");
        assert_same_counts(
            &counts(out.take()),
            &counts(0..200u64),
            &format!("P={parallelism}"),
        );
    }
}

/// An unbounded Kafka job at parallelism 2 stopped with a savepoint once it read the first
/// half, goes on from the savepoint at parallelism 3 (the partitions' offsets redistributed)
/// and bounded: the exactly-once file output holds every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_savepoint_at_parallelism_two_goes_on_at_three() {
    use std::sync::atomic::AtomicU64;
    let broker = start();
    let name = topic("rescale");
    broker.create_topic(&name, 6).expect("topic");
    produce(
        &broker,
        &name,
        (0..3_000u64).map(|n| n.to_string()).collect(),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let savepoints = dir.path().join("savepoints");
    let job = |parallelism: u32, bounded: bool, seen: Arc<AtomicU64>| {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        env.enable_checkpointing(20);
        let mut source = KafkaSource::new(&broker.bootstrap_servers(), &[name.as_str()], parse_u64);
        if bounded {
            source = source.bounded();
        }
        source
            .build(&env, "rescaled")
            .records
            .map(move |v| {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                v
            })
            .write_as_text_exactly_once(&out);
        env
    };
    let seen = Arc::new(AtomicU64::new(0));
    let handle = job(2, false, Arc::clone(&seen))
        .execute_async("before savepoint")
        .await
        .expect("starts");
    // Wait (a hang guard bounds it) until the first half went through, whenever that is.
    within(async {
        while seen.load(std::sync::atomic::Ordering::SeqCst) < 3_000 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let savepoint = within(handle.stop_with_savepoint(&savepoints))
        .await
        .expect("savepoint");
    within(handle.join()).await.expect("stops");
    produce(
        &broker,
        &name,
        (3_000..6_000u64).map(|n| n.to_string()).collect(),
    )
    .await;

    let second = job(3, true, Arc::new(AtomicU64::new(0)));
    second.restore_from(&savepoint, false);
    let result = within(second.execute("after savepoint"))
        .await
        .expect("restores");
    assert_eq!(result.restored_from.as_deref(), savepoint.to_str());
    let mut values = Vec::new();
    for entry in std::fs::read_dir(&out).expect("output") {
        let entry = entry.expect("entry");
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("part");
        values.extend(text.lines().map(|l| l.parse::<u64>().expect("number")));
    }
    assert_same_counts(&counts(values), &counts(0..6_000u64), "2 -> 3");
}

/// Reads the exactly-once text output `dir` (every committed part file).
fn committed_numbers(dir: &std::path::Path) -> Vec<u64> {
    let mut values = Vec::new();
    for entry in std::fs::read_dir(dir).expect("output") {
        let entry = entry.expect("entry");
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("part");
        values.extend(text.lines().map(|l| l.parse::<u64>().expect("number")));
    }
    values
}

/// Partition discovery: an unbounded job reading a topic pattern finds a topic created while
/// it runs and reads it from its earliest offset (records written before it was found
/// included); stopped with a savepoint and restored at another parallelism (bounded, starting
/// at *latest*), it reads a topic created after the savepoint from its earliest offset too,
/// and the partitions it knew from their checkpointed offsets. The exactly-once output holds
/// every record once (tansu has no `CreatePartitions`; partitions added to a topic are the same
/// case for the source, covered by the unit tests of `owned_partitions`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_created_while_running_are_discovered_and_survive_a_rescale() {
    use std::sync::atomic::AtomicU64;
    let broker = start();
    for (first, second) in [(2u32, 3u32), (4, 1)] {
        let prefix = topic("discovered");
        let [a, b, c] = ["a", "b", "c"].map(|t| format!("{prefix}-{t}"));
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let savepoints = dir.path().join("savepoints");
        let job = |parallelism: u32, bounded: bool, seen: Arc<AtomicU64>| {
            let env = StreamEnv::new();
            env.set_parallelism(parallelism);
            env.enable_checkpointing(20);
            let pattern = format!("{prefix}-");
            let mut source = KafkaSource::matching(
                &broker.bootstrap_servers(),
                move |name| name.starts_with(&pattern),
                parse_u64,
            )
            .partition_discovery_interval_ms(20);
            source = if bounded {
                // Partitions found at the restore that the savepoint lacks start at the
                // earliest offset regardless.
                source.bounded().starting_offsets(StartingOffsets::Latest)
            } else {
                source.starting_offsets(StartingOffsets::Earliest)
            };
            source
                .build(&env, "discovering")
                .records
                .map(move |v| {
                    seen.fetch_add(1, Ordering::SeqCst);
                    v
                })
                .write_as_text_exactly_once(&out);
            env
        };
        let wait_for = |seen: Arc<AtomicU64>, count: u64| async move {
            while seen.load(Ordering::SeqCst) < count {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        broker.create_topic(&a, 2).expect("topic");
        produce(&broker, &a, (0..300u64).map(|n| n.to_string()).collect()).await;
        let seen = Arc::new(AtomicU64::new(0));
        let handle = job(first, false, Arc::clone(&seen))
            .execute_async("discovering")
            .await
            .expect("starts");
        within(wait_for(Arc::clone(&seen), 300)).await;
        // A matching topic appears while the job runs; its records are written before and
        // after the job finds it.
        broker.create_topic(&b, 3).expect("topic");
        produce(&broker, &b, (300..600u64).map(|n| n.to_string()).collect()).await;
        within(wait_for(Arc::clone(&seen), 600)).await;
        let savepoint = within(handle.stop_with_savepoint(&savepoints))
            .await
            .expect("savepoint");
        within(handle.join()).await.expect("stops");

        broker.create_topic(&c, 2).expect("topic");
        produce(&broker, &c, (600..800u64).map(|n| n.to_string()).collect()).await;
        produce(&broker, &a, (800..900u64).map(|n| n.to_string()).collect()).await;
        produce(
            &broker,
            &b,
            (900..1_000u64).map(|n| n.to_string()).collect(),
        )
        .await;
        let restored = job(second, true, Arc::new(AtomicU64::new(0)));
        restored.restore_from(&savepoint, false);
        within(restored.execute("restored"))
            .await
            .expect("restores");
        assert_same_counts(
            &counts(committed_numbers(&out)),
            &counts(0..1_000u64),
            &format!("{first} -> {second}"),
        );
    }
}
