//! Oracle tests of the Kafka examples against real servers started by the test (tansu,
//! Redis, PostgreSQL on free loopback ports): `kafka_etl` writes the window minima a sequential
//! computation gives, `kafka_to_redis` leaves every sensor's latest temperature and its whole
//! history, `kafka_to_postgres` every sensor's maximum; records that are not readings are
//! reported with topic, partition and offset.
//!
//! Needs `tansu`, `redis-server` and PostgreSQL (`.ci/run` installs them).

mod common;

use std::collections::BTreeMap;

use eichhorn::connectors::test_servers::{KafkaBroker, PostgresServer, RedisServer};
use eichhorn::connectors::{KafkaProducerRecord, KafkaSink, KafkaSource};
use eichhorn::prelude::*;

const ETL: &str = env!("CARGO_BIN_EXE_kafka_etl");
const TO_REDIS: &str = env!("CARGO_BIN_EXE_kafka_to_redis");
const TO_POSTGRES: &str = env!("CARGO_BIN_EXE_kafka_to_postgres");
const PRODUCE: &str = env!("CARGO_BIN_EXE_kafka_produce");

/// One reading: sensor, timestamp, temperature.
type Reading = (String, i64, f64);

/// Five sensors, 60 readings each 50 ms apart, temperatures that go up and down.
fn readings() -> Vec<Reading> {
    let mut readings = Vec::new();
    for i in 0..60i64 {
        for s in 0..5i64 {
            let temperature = ((i * 7 + s * 13) % 23) as f64 - 5.5;
            readings.push((format!("s{s}"), i * 50 + s, temperature));
        }
    }
    readings
}

/// Writes the readings into a new 3-partition topic `readings` (a sensor's readings in one
/// partition, in time order), plus two values that are not readings. One record per batch:
/// tansu 0.6 reports a topic's end as the last batch's base offset + 1.
async fn produce(broker: &KafkaBroker) {
    broker.create_topic("readings", 3).expect("topic");
    produce_to(&broker.bootstrap_servers(), "readings").await;
}

/// Writes the readings (and the two values that are not) into the existing `topic` of
/// `brokers`.
async fn produce_to(brokers: &str, topic: &str) {
    let mut values: Vec<(i32, String)> = readings()
        .into_iter()
        .map(|(sensor, ts, t)| {
            let partition = sensor[1..].parse::<i32>().unwrap() % 3;
            (partition, format!("{sensor},{ts},{t}"))
        })
        .collect();
    values.insert(7, (1, "not a reading".to_string()));
    values.insert(20, (2, "s1,12x,3".to_string()));
    let env = StreamEnv::new();
    env.from_collection(values).add_two_phase_sink(
        KafkaSink::new(brokers, topic, |(p, v): &(i32, String)| {
            KafkaProducerRecord::value(v.clone()).with_partition(*p)
        })
        .property("batch.num.messages", "1"),
    );
    env.execute("produce readings").await.expect("produced");
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_malformed_reported(output: &std::process::Output) {
    let stderr = stderr(output);
    assert!(
        stderr.contains("error: cannot deserialise the record at readings/1@")
            && stderr.contains("not a reading"),
        "{stderr}"
    );
    assert!(
        stderr.contains("readings/2@") && stderr.contains("12x"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_etl_writes_the_window_minima_of_a_sequential_computation() {
    let broker = KafkaBroker::start().unwrap_or_else(|e| panic!("needs tansu: {e}"));
    produce(&broker).await;
    let mut expected: BTreeMap<(String, i64), f64> = BTreeMap::new();
    for (sensor, ts, t) in readings() {
        let start = ts - ts.rem_euclid(1_000);
        let min = expected.entry((sensor, start)).or_insert(f64::INFINITY);
        *min = min.min(t);
    }
    for parallelism in ["1", "2"] {
        let output_topic = format!("minima-{parallelism}");
        broker.create_topic(&output_topic, 2).expect("topic");
        let output = common::run(
            ETL,
            &[
                "--brokers",
                &broker.bootstrap_servers(),
                "--output-topic",
                &output_topic,
                "--bounded",
                "--parallelism",
                parallelism,
                "--producer-property",
                "batch.num.messages=1",
            ],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        assert_malformed_reported(&output);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(&format!("windows: {}", expected.len())),
            "{stdout}"
        );

        let env = StreamEnv::new();
        let streams =
            KafkaSource::new(&broker.bootstrap_servers(), &[output_topic.as_str()], |r| {
                let text = std::str::from_utf8(r.payload.unwrap_or_default())
                    .map_err(|e| e.to_string())?;
                Ok(text.to_string())
            })
            .bounded()
            .build(&env, "minima");
        let lines = streams.records.collect_sink();
        env.execute("read minima").await.expect("read");
        let mut got: BTreeMap<(String, i64), f64> = BTreeMap::new();
        for line in lines.take() {
            let fields: Vec<&str> = line.split(',').collect();
            let key = (fields[0].to_string(), fields[1].parse().unwrap());
            assert_eq!(fields[2].parse::<i64>().unwrap(), key.1 + 1_000, "{line}");
            assert!(
                got.insert(key, fields[3].parse().unwrap()).is_none(),
                "once: {line}"
            );
        }
        assert_eq!(got, expected, "P={parallelism}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_redis_keeps_the_latest_temperature_and_the_history_exactly_once() {
    let broker = KafkaBroker::start().unwrap_or_else(|e| panic!("needs tansu: {e}"));
    let redis = RedisServer::start().unwrap_or_else(|e| panic!("needs Redis: {e}"));
    produce(&broker).await;
    let output = common::run(
        TO_REDIS,
        &[
            "--brokers",
            &broker.bootstrap_servers(),
            "--redis",
            &redis.url(),
            "--bounded",
            "--parallelism",
            "2",
            "--exactly-once",
            "example",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_malformed_reported(&output);
    let mut latest = BTreeMap::new();
    let mut history: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (sensor, ts, t) in readings() {
        latest.insert(sensor.clone(), t.to_string());
        history.entry(sensor).or_default().push(format!("{ts},{t}"));
    }
    let flat = redis.cli(&["HGETALL", "sensors:latest"]).unwrap();
    let lines: Vec<&str> = flat.lines().collect();
    let got: BTreeMap<String, String> = lines
        .chunks(2)
        .map(|pair| (pair[0].to_string(), pair[1].to_string()))
        .collect();
    assert_eq!(got, latest);
    for (sensor, expected) in history {
        let list = redis
            .cli(&["LRANGE", &format!("sensor:{sensor}"), "0", "-1"])
            .unwrap();
        let got: Vec<String> = list.lines().map(str::to_string).collect();
        assert_eq!(got, expected, "{sensor}: in order, each once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_postgres_upserts_every_sensors_maximum() {
    let broker = KafkaBroker::start().unwrap_or_else(|e| panic!("needs tansu: {e}"));
    let postgres = PostgresServer::start().unwrap_or_else(|e| panic!("needs PostgreSQL: {e}"));
    produce(&broker).await;
    postgres
        .psql("CREATE TABLE sensor_max (sensor_id TEXT PRIMARY KEY, max_temperature DOUBLE PRECISION NOT NULL)")
        .unwrap();
    for exactly_once in [false, true] {
        postgres.psql("TRUNCATE sensor_max").unwrap();
        let brokers = broker.bootstrap_servers();
        let connection = postgres.connection_string();
        let mut args = vec![
            "--brokers",
            &brokers,
            "--postgres",
            &connection,
            "--bounded",
            "--parallelism",
            "2",
        ];
        if exactly_once {
            args.extend(["--exactly-once", "example"]);
        }
        let output = common::run(TO_POSTGRES, &args);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_malformed_reported(&output);
        let mut expected: BTreeMap<String, f64> = BTreeMap::new();
        for (sensor, _, t) in readings() {
            let max = expected.entry(sensor).or_insert(f64::NEG_INFINITY);
            *max = max.max(t);
        }
        let rows = postgres
            .psql("SELECT sensor_id, max_temperature FROM sensor_max")
            .unwrap();
        let got: BTreeMap<String, f64> = rows
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (sensor, max) = l.split_once('|').unwrap();
                (sensor.to_string(), max.parse().unwrap())
            })
            .collect();
        assert_eq!(got, expected, "exactly_once={exactly_once}");
    }
}

/// The README's way to feed the Kafka examples: `kafka_produce` writes a file of readings (and
/// a line that is not one) to a topic, keyed by sensor, and `kafka_etl` reads it: the minima of
/// the sequential computation, the bad line reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_produce_writes_a_file_that_kafka_etl_reads() {
    let broker = KafkaBroker::start().unwrap_or_else(|e| panic!("needs tansu: {e}"));
    broker.create_topic("readings", 3).expect("topic");
    broker.create_topic("minima", 2).expect("topic");
    let brokers = broker.bootstrap_servers();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("readings.csv");
    let mut text: String = readings()
        .iter()
        .map(|(sensor, ts, t)| format!("{sensor},{ts},{t}\n"))
        .collect();
    text.push_str("not a reading\n");
    std::fs::write(&file, text).expect("write the readings");
    let input = file.to_str().expect("a UTF-8 path");

    let produced = common::run(PRODUCE, &["--brokers", &brokers, "--input", input]);
    assert!(produced.status.success(), "{}", stderr(&produced));
    let stdout = String::from_utf8_lossy(&produced.stdout);
    assert!(
        stdout.contains(&format!("records: {}", readings().len() + 1)),
        "{stdout}"
    );
    let missing = common::run(PRODUCE, &["--brokers", &brokers, "--input", "no-such.csv"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no-such.csv"),
        "{}",
        stderr(&missing)
    );

    let output = common::run(
        ETL,
        &[
            "--brokers",
            &brokers,
            "--bounded",
            "--producer-property",
            "batch.num.messages=1",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("not a reading"),
        "{}",
        stderr(&output)
    );
    let expected = expected_minima();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("windows: {}", expected.len())),
        "{stdout}"
    );
    assert_eq!(read_minima(&brokers, "minima").await, expected);
}

/// The window minima a sequential computation gives for [`readings`] and one-second windows.
fn expected_minima() -> BTreeMap<(String, i64), f64> {
    let mut expected: BTreeMap<(String, i64), f64> = BTreeMap::new();
    for (sensor, ts, t) in readings() {
        let start = ts - ts.rem_euclid(1_000);
        let min = expected.entry((sensor, start)).or_insert(f64::INFINITY);
        *min = min.min(t);
    }
    expected
}

/// The minima in `topic` (read `read_committed` from the start to its end), each window once.
async fn read_minima(brokers: &str, topic: &str) -> BTreeMap<(String, i64), f64> {
    let env = StreamEnv::new();
    let streams = KafkaSource::new(brokers, &[topic], |r| {
        let text = std::str::from_utf8(r.payload.unwrap_or_default()).map_err(|e| e.to_string())?;
        Ok(text.to_string())
    })
    .bounded()
    .build(&env, "minima");
    let lines = streams.records.collect_sink();
    env.execute("read minima").await.expect("read");
    let mut got: BTreeMap<(String, i64), f64> = BTreeMap::new();
    for line in lines.take() {
        let fields: Vec<&str> = line.split(',').collect();
        let key = (fields[0].to_string(), fields[1].parse().unwrap());
        assert!(
            got.insert(key, fields[3].parse().unwrap()).is_none(),
            "once: {line}"
        );
    }
    got
}

/// Exactly once across a *process* crash: `kafka_etl --exactly-once` aborts its process at
/// the sink's first commit (the checkpoint completed, the transaction pre-committed and not
/// committed), a new process restores from the checkpoint folder and commits that
/// transaction with its recorded producer id and epoch (`EndTxn` at the coordinator), and the
/// output topic read `read_committed` holds the minima of a failure-free run, each once.
///
/// Needs a broker that ends transactions (tansu 0.6 does not): runs against the brokers in
/// `EICHHORN_TEST_KAFKA_TXN_BROKERS`, and says plainly that it was skipped otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_etl_exactly_once_survives_a_process_crash_between_pre_commit_and_commit() {
    let Ok(brokers) = std::env::var("EICHHORN_TEST_KAFKA_TXN_BROKERS") else {
        eprintln!(
            "SKIPPED kafka_etl_exactly_once_survives_a_process_crash_between_pre_commit_and_commit: \
             set EICHHORN_TEST_KAFKA_TXN_BROKERS to a Kafka broker that supports transactions \
             (tansu 0.6 does not end transactions)"
        );
        return;
    };
    // Names of their own on a broker that outlives the test.
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis()
    );
    let input = format!("eos-readings-{run_id}");
    let output = format!("eos-minima-{run_id}");
    eichhorn::connectors::test_servers::create_kafka_topic(&brokers, &input, 3).expect("topic");
    eichhorn::connectors::test_servers::create_kafka_topic(&brokers, &output, 2).expect("topic");
    produce_to(&brokers, &input).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let checkpoints = dir.path().join("checkpoints");
    let checkpoints_arg = checkpoints.to_string_lossy().into_owned();
    let prefix = format!("eos-etl-{run_id}");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--brokers",
            brokers.as_str(),
            "--input-topic",
            input.as_str(),
            "--output-topic",
            output.as_str(),
            "--bounded",
            "--parallelism",
            "2",
            "--checkpoint-interval-ms",
            "50",
            "--exactly-once",
            prefix.as_str(),
            "--checkpoint-dir",
            checkpoints_arg.as_str(),
        ]
        .iter()
        .map(|a| (*a).to_string())
        .collect();
        args.extend(extra.iter().map(|a| (*a).to_string()));
        args
    };
    let crash_args = args(&["--abort-at-commit", "1"]);
    let crash_args: Vec<&str> = crash_args.iter().map(String::as_str).collect();
    let crashed = common::run(ETL, &crash_args);
    assert!(
        !crashed.status.success()
            && stderr(&crashed).contains("aborting the process before commit 1"),
        "the first run must die at its first commit: {}",
        stderr(&crashed)
    );
    // The dead run's checkpoint folder: `checkpoints/<job id>`.
    let job_dirs: Vec<_> = std::fs::read_dir(&checkpoints)
        .expect("checkpoints written")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(job_dirs.len(), 1, "{job_dirs:?}");
    let restore = job_dirs[0].to_string_lossy().into_owned();
    let restored_args = args(&["--restore-from", restore.as_str()]);
    let restored_args: Vec<&str> = restored_args.iter().map(String::as_str).collect();
    let restored = common::run(ETL, &restored_args);
    assert!(restored.status.success(), "{}", stderr(&restored));
    assert_eq!(
        read_minima(&brokers, &output).await,
        expected_minima(),
        "the minima of a failure-free run, each once"
    );
}

/// The same crash against tansu, which cannot end transactions: the restored process finds
/// the transaction coordinator of the dead process's pre-committed transaction and asks it to
/// commit under the producer id and epoch the checkpoint recorded; tansu does not support
/// `EndTxn`, so the restore fails and says so, naming the transaction, its producer id and
/// epoch (never a silent loss). The test above checks the commit itself on a full broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_etl_restored_after_a_process_crash_resumes_the_transaction_it_left() {
    let broker = KafkaBroker::start().unwrap_or_else(|e| panic!("needs tansu: {e}"));
    produce(&broker).await;
    broker.create_topic("minima", 2).expect("topic");
    let dir = tempfile::tempdir().expect("tempdir");
    let checkpoints = dir.path().join("checkpoints");
    let checkpoints_arg = checkpoints.to_string_lossy().into_owned();
    let brokers = broker.bootstrap_servers();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--brokers",
            brokers.as_str(),
            "--bounded",
            "--checkpoint-interval-ms",
            "50",
            "--exactly-once",
            "crash",
            "--checkpoint-dir",
            checkpoints_arg.as_str(),
            "--producer-property",
            "batch.num.messages=1",
        ]
        .iter()
        .map(|a| (*a).to_string())
        .collect();
        args.extend(extra.iter().map(|a| (*a).to_string()));
        args
    };
    let crash_args = args(&["--abort-at-commit", "1"]);
    let crash_args: Vec<&str> = crash_args.iter().map(String::as_str).collect();
    let crashed = common::run(ETL, &crash_args);
    assert!(
        !crashed.status.success()
            && stderr(&crashed).contains("aborting the process before commit 1"),
        "the first run must die at its first commit: {}",
        stderr(&crashed)
    );
    let job_dirs: Vec<_> = std::fs::read_dir(&checkpoints)
        .expect("checkpoints written")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(job_dirs.len(), 1, "{job_dirs:?}");
    let restore = job_dirs[0].to_string_lossy().into_owned();
    let restored_args = args(&["--restore-from", restore.as_str()]);
    let restored_args: Vec<&str> = restored_args.iter().map(String::as_str).collect();
    let restored = common::run(ETL, &restored_args);
    let stderr = stderr(&restored);
    assert!(!restored.status.success(), "tansu cannot commit: {stderr}");
    assert!(
        stderr.contains("the recovered transaction crash-0-")
            && stderr.contains("(producer id ")
            && stderr.contains("the coordinator does not support EndTxn"),
        "{stderr}"
    );
}
