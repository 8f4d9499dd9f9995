//! The PostgreSQL sink against a real PostgreSQL server, started by the test on a free loopback
//! port: upserts at parallelism 1, 2 and 4 against a sequential computation, exactly-once
//! inserts and upserts through failures (mid-stream, between pre-commit and commit, right after
//! a commit), stray prepared transactions rolled back, and errors naming server and statement.
//!
//! Needs PostgreSQL's `initdb`, `pg_ctl` and `psql` (`.ci/run` installs them); without them the
//! tests fail saying so.
#![cfg(feature = "postgres")]

mod connector_support;

use std::collections::BTreeMap;

use connector_support::{
    CommitFailure, assert_same_counts, checkpointed, counts, failing_once, paced, within,
};
use eichhorn::connectors::test_servers::PostgresServer;
use eichhorn::connectors::{PostgresSink, RetryPolicy, SqlValue};
use eichhorn::prelude::*;

fn start() -> PostgresServer {
    PostgresServer::start().unwrap_or_else(|e| panic!("this test needs PostgreSQL: {e}"))
}

/// The rows of `sql`, each split at `|`.
fn rows(server: &PostgresServer, sql: &str) -> Vec<Vec<String>> {
    server
        .psql(sql)
        .expect("query")
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| line.split('|').map(str::to_string).collect())
        .collect()
}

fn int_rows(server: &PostgresServer, sql: &str) -> Vec<i64> {
    rows(server, sql)
        .into_iter()
        .map(|row| row[0].parse().expect("a number"))
        .collect()
}

fn prepared(server: &PostgresServer) -> Vec<String> {
    rows(server, "SELECT gid FROM pg_prepared_xacts ORDER BY gid")
        .into_iter()
        .map(|row| row[0].clone())
        .collect()
}

fn count_upsert(url: &str) -> PostgresSink<(i64, i64)> {
    PostgresSink::upsert(
        url,
        "totals",
        &["k", "total"],
        &["k"],
        |(k, total): &(i64, i64)| vec![SqlValue::from(*k), SqlValue::from(*total)],
    )
    .batch_rows_max(64)
}

/// Key `i % 97`, value `i`: the sequential result is the sum per key.
fn expected_totals(count: u64) -> BTreeMap<i64, i64> {
    let mut totals = BTreeMap::new();
    for i in 0..count as i64 {
        *totals.entry(i % 97).or_insert(0) += i;
    }
    totals
}

fn table_totals(server: &PostgresServer) -> BTreeMap<i64, i64> {
    rows(server, "SELECT k, total FROM totals")
        .into_iter()
        .map(|row| (row[0].parse().unwrap(), row[1].parse().unwrap()))
        .collect()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn rolling_sums_upserted_at_least_once_equal_the_sequential_result() {
    let server = start();
    for parallelism in [1, 2, 4] {
        server
            .psql("DROP TABLE IF EXISTS totals; CREATE TABLE totals (k BIGINT PRIMARY KEY, total BIGINT NOT NULL)")
            .unwrap();
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        env.from_generator(5_000, |i| ((i % 97) as i64, i as i64))
            .key_by(|(k, _): &(i64, i64)| *k)
            .sum(|(_, v)| v)
            .add_two_phase_sink(count_upsert(&server.connection_string()));
        within(env.execute("sums to postgres")).await.expect("runs");
        assert_eq!(
            table_totals(&server),
            expected_totals(5_000),
            "P={parallelism}"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn upserts_through_a_failure_at_least_once_end_as_the_failure_free_table() {
    let server = start();
    for parallelism in [1, 2] {
        server
            .psql("DROP TABLE IF EXISTS totals; CREATE TABLE totals (k BIGINT PRIMARY KEY, total BIGINT NOT NULL)")
            .unwrap();
        let env = StreamEnv::new();
        checkpointed(&env, parallelism);
        let result = paced(&env, 6_000, 20_000)
            .map(failing_once(3_333))
            .map(|i| ((i % 97) as i64, i as i64))
            .key_by(|(k, _): &(i64, i64)| *k)
            .sum(|(_, v)| v)
            .add_two_phase_sink(count_upsert(&server.connection_string()));
        let _ = result;
        let result = within(env.execute("sums, failing"))
            .await
            .expect("recovers");
        assert_eq!(result.restarts, 1, "P={parallelism}");
        assert_eq!(
            table_totals(&server),
            expected_totals(6_000),
            "P={parallelism}"
        );
    }
}

fn values_insert(url: &str) -> PostgresSink<u64> {
    PostgresSink::insert(url, "numbers", &["n"], |n: &u64| {
        vec![SqlValue::from(*n as i64)]
    })
    .batch_rows_max(100)
    .exactly_once("numbers")
}

/// Exactly-once plain inserts (not idempotent): a job killed mid-stream, and a crash between
/// pre-commit and commit or right after a commit, leave every number in the table once.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn exactly_once_inserts_through_failures_hold_every_record_once() {
    let server = start();
    for (case, parallelism, kill_at, commit_failure) in [
        ("killed mid-stream", 1, Some(4_321), None),
        ("killed mid-stream", 2, Some(4_321), None),
        ("between pre-commit and commit", 1, None, Some(false)),
        ("between pre-commit and commit", 2, None, Some(false)),
        ("right after a commit", 2, None, Some(true)),
    ] {
        let case = format!("{case}, P={parallelism}");
        server
            .psql("DROP TABLE IF EXISTS numbers; CREATE TABLE numbers (n BIGINT NOT NULL)")
            .unwrap();
        let env = StreamEnv::new();
        checkpointed(&env, parallelism);
        let mut stream = paced(&env, 8_000, 20_000);
        if let Some(at) = kill_at {
            stream = stream.map(failing_once(at));
        }
        let sink = values_insert(&server.connection_string());
        match commit_failure {
            Some(after_commit) => {
                let failing = CommitFailure::new(sink, 12, after_commit);
                stream.add_two_phase_sink(failing.clone());
                let result = within(env.execute("numbers")).await.expect("recovers");
                assert!(failing.fired(), "{case}: the failure was injected");
                assert_eq!(result.restarts, 1, "{case}");
                assert!(
                    result.restored_from.is_some(),
                    "{case}: restored a checkpoint"
                );
            }
            None => {
                stream.add_two_phase_sink(sink);
                let result = within(env.execute("numbers")).await.expect("recovers");
                assert_eq!(result.restarts, 1, "{case}");
            }
        }
        let seen = counts(int_rows(&server, "SELECT n FROM numbers"));
        assert_same_counts(&seen, &counts(0..8_000), &format!("{case}: exactly once"));
        assert!(
            prepared(&server).is_empty(),
            "{case}: no prepared transaction left"
        );
    }
}

/// Exactly-once upserts of rolling sums through a crash between pre-commit and commit: the
/// table equals the failure-free result.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn exactly_once_upserts_through_a_commit_failure_equal_the_failure_free_table() {
    let server = start();
    for parallelism in [1, 2] {
        server
            .psql("DROP TABLE IF EXISTS totals; CREATE TABLE totals (k BIGINT PRIMARY KEY, total BIGINT NOT NULL)")
            .unwrap();
        let env = StreamEnv::new();
        checkpointed(&env, parallelism);
        let failing = CommitFailure::new(
            count_upsert(&server.connection_string()).exactly_once("totals"),
            8,
            false,
        );
        paced(&env, 6_000, 20_000)
            .map(|i| ((i % 97) as i64, i as i64))
            .key_by(|(k, _): &(i64, i64)| *k)
            .sum(|(_, v)| v)
            .add_two_phase_sink(failing.clone());
        let result = within(env.execute("sums, exactly once"))
            .await
            .expect("recovers");
        assert!(failing.fired(), "P={parallelism}: the failure was injected");
        assert_eq!(result.restarts, 1, "P={parallelism}");
        assert_eq!(
            table_totals(&server),
            expected_totals(6_000),
            "P={parallelism}"
        );
        assert!(prepared(&server).is_empty(), "P={parallelism}");
    }
}

/// A prepared transaction a crash left behind (prepared at a barrier whose checkpoint never
/// completed, so no checkpoint knows it) is rolled back when the sink opens, and its rows never
/// appear; prepared transactions of other prefixes are left alone.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn prepared_transactions_no_checkpoint_knows_are_rolled_back_at_open() {
    let server = start();
    server
        .psql("CREATE TABLE numbers (n BIGINT NOT NULL)")
        .unwrap();
    let job = "0123456789abcdef0123456789abcdef";
    server
        .psql(&format!(
            "BEGIN; INSERT INTO numbers VALUES (-1); PREPARE TRANSACTION 'numbers-0-{job}-3-9'"
        ))
        .unwrap();
    server
        .psql(&format!(
            "BEGIN; INSERT INTO numbers VALUES (-2); PREPARE TRANSACTION 'other-0-{job}-3-9'"
        ))
        .unwrap();
    let env = StreamEnv::new();
    env.from_generator(100, |i| i)
        .add_two_phase_sink(values_insert(&server.connection_string()));
    within(env.execute("numbers")).await.expect("runs");
    assert_eq!(
        counts(int_rows(&server, "SELECT n FROM numbers")),
        counts(0..100)
    );
    assert_eq!(prepared(&server), vec![format!("other-0-{job}-3-9")]);
    server
        .psql(&format!("ROLLBACK PREPARED 'other-0-{job}-3-9'"))
        .unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn errors_name_the_server_and_the_statement() {
    let server = start();
    // A table that does not exist: the statement is named.
    let env = StreamEnv::new();
    env.from_generator(10, |i| i)
        .add_two_phase_sink(PostgresSink::insert(
            &server.connection_string(),
            "missing",
            &["n"],
            |n: &u64| vec![SqlValue::from(*n as i64)],
        ))
        .name("numbers sink");
    let error = within(env.execute("bad table"))
        .await
        .expect_err("fails")
        .to_string();
    let server_name = format!("postgres://127.0.0.1:{}/postgres", server.port());
    assert!(error.contains("numbers sink"), "{error}");
    assert!(error.contains(&server_name), "{error}");
    assert!(error.contains(r#"INSERT INTO "missing""#), "{error}");
    assert!(error.contains("does not exist"), "{error}");

    // A value of the wrong type for its column: both types named.
    server.psql("CREATE TABLE typed (n INTEGER)").unwrap();
    let env = StreamEnv::new();
    env.from_generator(10, |i| i)
        .add_two_phase_sink(PostgresSink::insert(
            &server.connection_string(),
            "typed",
            &["n"],
            |_: &u64| vec![SqlValue::from("text")],
        ));
    let error = within(env.execute("bad type"))
        .await
        .expect_err("fails")
        .to_string();
    assert!(
        error.contains("int4") && error.contains("String"),
        "{error}"
    );

    // Nobody listens: retried with backoff, then a failure naming the server and `connect`.
    let port = eichhorn::connectors::test_servers::free_port().unwrap();
    let env = StreamEnv::new();
    env.from_generator(10, |i| i).add_two_phase_sink(
        PostgresSink::insert(
            &format!("host=127.0.0.1 port={port} user=postgres"),
            "numbers",
            &["n"],
            |n: &u64| vec![SqlValue::from(*n as i64)],
        )
        .retry_policy(RetryPolicy {
            retries_max: 2,
            backoff_initial_ms: 1,
            backoff_max_ms: 2,
        }),
    );
    let error = within(env.execute("no server"))
        .await
        .expect_err("fails")
        .to_string();
    assert!(
        error.contains(&format!("postgres://127.0.0.1:{port}/postgres: connect")),
        "{error}"
    );
    assert!(error.contains("after 2 retries"), "{error}");
}

/// The server drops the sink's connections mid-stream (`pg_terminate_backend`): at least once,
/// the sink reconnects with backoff and repeats the batch, the job never restarts, and the
/// table equals the sequential result.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_lost_connection_is_retried_without_restarting_the_job() {
    let server = std::sync::Arc::new(start());
    server
        .psql("CREATE TABLE totals (k BIGINT PRIMARY KEY, total BIGINT NOT NULL)")
        .unwrap();
    let killer = std::sync::Arc::clone(&server);
    let env = StreamEnv::new();
    paced(&env, 5_000, 20_000)
        .map(|i| ((i % 97) as i64, i as i64))
        .map(move |(k, v)| {
            if v == 1_000 || v == 3_000 {
                killer
                    .psql(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                    )
                    .expect("terminate");
            }
            (k, v)
        })
        .key_by(|(k, _): &(i64, i64)| *k)
        .sum(|(_, v)| v)
        .add_two_phase_sink(
            count_upsert(&server.connection_string()).retry_policy(RetryPolicy {
                retries_max: 5,
                backoff_initial_ms: 10,
                backoff_max_ms: 100,
            }),
        );
    let result = within(env.execute("sums, connections lost"))
        .await
        .expect("runs");
    assert_eq!(result.restarts, 0, "retried, not restarted");
    assert_eq!(table_totals(&server), expected_totals(5_000));
}
