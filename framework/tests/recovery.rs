//! Checkpoints and recovery through the whole runtime: periodic checkpoints complete, a failed
//! subtask restarts the job from the latest completed checkpoint, sources rewind, restart
//! strategies are applied, savepoints are taken and restored.
//!
//! Timeouts only guard against hangs; no verdict depends on timing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use eichhorn::checkpoint::RestartStrategy;
use eichhorn::connectors::{GeneratorSource, RateLimitedSource};
use eichhorn::prelude::*;

/// `count` numbers from a parallel source paced at `per_second` per subtask, so that virtual
/// time passes while it runs and periodic checkpoints happen.
fn paced(env: &StreamEnv, count: u64, per_second: u64) -> DataStream<u64> {
    env.add_source(
        RateLimitedSource::new(GeneratorSource::new(Some(count), |g| g), per_second),
        "paced",
    )
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), future)
        .await
        .expect("the job hung")
}

fn counts(values: Vec<u64>) -> BTreeMap<u64, u32> {
    let mut counts = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_insert(0) += 1;
    }
    counts
}

/// A map that panics once, at the `at`-th record it sees over all attempts.
fn failing_once(at: u64) -> impl Fn(u64) -> u64 + Clone + Send + 'static {
    let seen = Arc::new(AtomicU64::new(0));
    let fired = Arc::new(AtomicBool::new(false));
    move |v| {
        if seen.fetch_add(1, Ordering::SeqCst) + 1 == at && !fired.swap(true, Ordering::SeqCst) {
            panic!("injected failure at record {at}");
        }
        v
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_failed_job_restarts_from_a_checkpoint_and_loses_nothing() {
    for parallelism in [1, 2] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        env.enable_checkpointing(20);
        env.set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 2,
            delay_ms: 10,
        });
        let out = paced(&env, 20_000, 20_000)
            .map(failing_once(12_345))
            .collect_sink();
        let result = within(env.execute("recover")).await.expect("recovers");
        assert_eq!(result.restarts, 1, "P={parallelism}");
        // The collect sink is not transactional: replayed records may appear twice
        // (at-least-once), but none is missing.
        let seen = counts(out.take());
        assert_eq!(seen.len(), 20_000, "P={parallelism}: every record arrived");
        assert!(
            result.completed_checkpoints >= 10,
            "P={parallelism}: {}",
            result.completed_checkpoints
        );
        assert!(
            result
                .restored_from
                .as_deref()
                .is_some_and(|r| r.starts_with("memory:chk-")),
            "P={parallelism}: restored from {:?}",
            result.restored_from
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn without_checkpointing_the_job_fails_as_before() {
    let env = StreamEnv::new();
    env.from_generator(1_000, |g| g)
        .map(failing_once(10))
        .collect_sink();
    let error = within(env.execute("no-restart")).await.unwrap_err();
    assert!(error.to_string().contains("injected failure"), "{error}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn restart_attempts_run_out() {
    let env = StreamEnv::new();
    env.enable_checkpointing(5);
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 2,
        delay_ms: 1,
    });
    env.from_generator(1_000, |g| g)
        .map(|v: u64| -> u64 {
            if v == 500 {
                panic!("always fails at 500");
            }
            v
        })
        .collect_sink();
    let error = within(env.execute("gives-up")).await.unwrap_err();
    assert!(error.to_string().contains("always fails at 500"), "{error}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn checkpoints_are_written_to_the_directory_and_pruned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = StreamEnv::new();
    env.enable_checkpointing(10);
    env.set_checkpoint_storage(dir.path());
    env.configure(|c| c.checkpointing.retained = 2);
    let out = paced(&env, 5_000, 10_000).collect_sink();
    let result = within(env.execute("stored")).await.expect("runs");
    assert_eq!(out.len(), 5_000);
    assert!(
        result.completed_checkpoints >= 2,
        "{}",
        result.completed_checkpoints
    );
    let mut folders: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    assert_eq!(folders.len(), 2, "retained 2: {folders:?}");
    for folder in folders {
        assert!(
            dir.path().join(&folder).join("_metadata").is_file(),
            "{folder}"
        );
    }
}
