//! The Redis sink against a real Redis server, started by the test on a free loopback port:
//! `HSET` of rolling sums at parallelism 1, 2 and 4 against a sequential computation, through a
//! failure at least once; exactly-once `LPUSH` and `SET` through failures (mid-stream, between
//! pre-commit and commit, right after a commit); stray staging hashes deleted; errors naming
//! the server.
//!
//! Needs `redis-server` and `redis-cli` (`.ci/run` installs them); without them the tests fail
//! saying so.
#![cfg(feature = "redis")]

mod connector_support;

use std::collections::BTreeMap;

use connector_support::{
    CommitFailure, assert_same_counts, checkpointed, counts, failing_once, paced, within,
};
use eichhorn::connectors::test_servers::{RedisServer, free_port};
use eichhorn::connectors::{RedisSink, RedisWrite, RetryPolicy};
use eichhorn::prelude::*;

fn start() -> RedisServer {
    RedisServer::start().unwrap_or_else(|e| panic!("this test needs Redis: {e}"))
}

fn lines(server: &RedisServer, args: &[&str]) -> Vec<String> {
    server
        .cli(args)
        .expect("redis-cli")
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Key `i % 97`, value `i`: the sum per key.
fn expected_totals(count: u64) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for i in 0..count as i64 {
        *totals.entry(format!("k{}", i % 97)).or_insert(0) += i;
    }
    totals
}

fn hash_totals(server: &RedisServer) -> BTreeMap<String, i64> {
    let flat = lines(server, &["HGETALL", "totals"]);
    flat.chunks(2)
        .map(|pair| (pair[0].clone(), pair[1].parse().expect("a number")))
        .collect()
}

fn totals_sink(url: &str) -> RedisSink<(i64, i64)> {
    RedisSink::new(url, |(k, total): &(i64, i64)| {
        RedisWrite::hset("totals", format!("k{k}"), total.to_string())
    })
    .batch_writes_max(50)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn rolling_sums_in_a_hash_equal_the_sequential_result() {
    let server = start();
    for parallelism in [1, 2, 4] {
        server.cli(&["FLUSHALL"]).unwrap();
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        env.from_generator(5_000, |i| ((i % 97) as i64, i as i64))
            .key_by(|(k, _): &(i64, i64)| *k)
            .sum(|(_, v)| v)
            .add_two_phase_sink(totals_sink(&server.url()));
        within(env.execute("sums to redis")).await.expect("runs");
        assert_eq!(
            hash_totals(&server),
            expected_totals(5_000),
            "P={parallelism}"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hset_at_least_once_through_a_failure_ends_as_the_failure_free_hash() {
    let server = start();
    for parallelism in [1, 2] {
        server.cli(&["FLUSHALL"]).unwrap();
        let env = StreamEnv::new();
        checkpointed(&env, parallelism);
        paced(&env, 6_000, 20_000)
            .map(failing_once(2_222))
            .map(|i| ((i % 97) as i64, i as i64))
            .key_by(|(k, _): &(i64, i64)| *k)
            .sum(|(_, v)| v)
            .add_two_phase_sink(totals_sink(&server.url()));
        let result = within(env.execute("sums, failing"))
            .await
            .expect("recovers");
        assert_eq!(result.restarts, 1, "P={parallelism}");
        assert_eq!(
            hash_totals(&server),
            expected_totals(6_000),
            "P={parallelism}"
        );
    }
}

/// `LPUSH` is not idempotent: only the exactly-once mode keeps a replay from pushing twice.
fn list_sink(url: &str) -> RedisSink<u64> {
    RedisSink::new(url, |n: &u64| {
        if n.is_multiple_of(2) {
            RedisWrite::lpush("numbers", n.to_string())
        } else {
            RedisWrite::set(format!("n:{n}"), n.to_string())
        }
    })
    .batch_writes_max(64)
    .exactly_once("numbers")
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn exactly_once_lpush_and_set_through_failures_hold_every_record_once() {
    let server = start();
    let count = 6_000u64;
    for (case, parallelism, kill_at, commit_failure) in [
        ("killed mid-stream", 1, Some(3_210), None),
        ("killed mid-stream", 2, Some(3_210), None),
        ("between pre-commit and commit", 1, None, Some(false)),
        ("between pre-commit and commit", 2, None, Some(false)),
        ("right after a commit", 2, None, Some(true)),
    ] {
        let case = format!("{case}, P={parallelism}");
        server.cli(&["FLUSHALL"]).unwrap();
        let env = StreamEnv::new();
        checkpointed(&env, parallelism);
        let mut stream = paced(&env, count, 20_000);
        if let Some(at) = kill_at {
            stream = stream.map(failing_once(at));
        }
        let sink = list_sink(&server.url());
        match commit_failure {
            Some(after_commit) => {
                let failing = CommitFailure::new(sink, 10, after_commit);
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
        let pushed: Vec<u64> = lines(&server, &["LRANGE", "numbers", "0", "-1"])
            .iter()
            .map(|l| l.parse().expect("a number"))
            .collect();
        assert_same_counts(
            &counts(pushed),
            &counts((0..count).filter(|n| n % 2 == 0)),
            &format!("{case}: LPUSH exactly once"),
        );
        let keys = lines(&server, &["KEYS", "n:*"]);
        assert_eq!(keys.len() as u64, count / 2, "{case}: SET");
        assert!(
            lines(&server, &["KEYS", "eichhorn:txn:*"]).is_empty(),
            "{case}: no staging hash left"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn staging_hashes_no_checkpoint_will_commit_are_deleted_at_open() {
    let server = start();
    let job = "0123456789abcdef0123456789abcdef";
    let stray = format!("eichhorn:txn:numbers:0:{job}:2:5");
    let other = format!("eichhorn:txn:other:0:{job}:2:5");
    for key in [&stray, &other] {
        server
            .cli(&[
                "HSET", key, "n", "1", "0:c", "LPUSH", "0:k", "numbers", "0:f", "", "0:v", "-1",
            ])
            .unwrap();
    }
    let env = StreamEnv::new();
    env.from_generator(10, |i| i * 2)
        .add_two_phase_sink(list_sink(&server.url()));
    within(env.execute("numbers")).await.expect("runs");
    let pushed = lines(&server, &["LRANGE", "numbers", "0", "-1"]);
    assert_eq!(
        pushed.len(),
        10,
        "the stray's -1 was never applied: {pushed:?}"
    );
    assert_eq!(lines(&server, &["KEYS", "eichhorn:txn:*"]), vec![other]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_missing_server_fails_the_job_naming_it_after_the_retries() {
    let port = free_port().unwrap();
    let env = StreamEnv::new();
    env.from_generator(10, |i| i)
        .add_two_phase_sink(
            RedisSink::new(&format!("redis://127.0.0.1:{port}/0"), |n: &u64| {
                RedisWrite::set("k", n.to_string())
            })
            .retry_policy(RetryPolicy {
                retries_max: 2,
                backoff_initial_ms: 1,
                backoff_max_ms: 2,
            }),
        )
        .name("cache sink");
    let error = within(env.execute("no redis"))
        .await
        .expect_err("fails")
        .to_string();
    assert!(error.contains("cache sink"), "{error}");
    assert!(
        error.contains(&format!("redis://127.0.0.1:{port}/0: connect")),
        "{error}"
    );
    assert!(error.contains("after 2 retries"), "{error}");
}
