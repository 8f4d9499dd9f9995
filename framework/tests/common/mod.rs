//! Helpers the checkpoint and recovery tests share: a paced source (so paused virtual time
//! advances while a job runs and periodic checkpoints happen), injected failures, the committed
//! output of an exactly-once file sink, and a hang guard.
//!
//! Not every test file uses every helper.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eichhorn::connectors::{GeneratorSource, RateLimitedSource};
use eichhorn::prelude::*;

/// `count` numbers from a parallel generator paced at `per_second` per subtask.
pub(crate) fn paced(env: &StreamEnv, count: u64, per_second: u64) -> DataStream<u64> {
    env.add_source(
        RateLimitedSource::new(GeneratorSource::new(Some(count), |g| g), per_second),
        "paced",
    )
}

/// Awaits `future`, failing the test if it takes two virtual minutes: a hang guard only, no
/// verdict depends on timing.
pub(crate) async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), future)
        .await
        .expect("the job hung")
}

/// Fails (panics) when the shared record count, over all attempts, reaches one of `at`: each
/// point fails once, since the count only grows.
pub(crate) fn failing_at<T>(at: Vec<u64>) -> impl Fn(T) -> T + Clone + Send + 'static {
    let seen = Arc::new(AtomicU64::new(0));
    move |r| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        if at.contains(&n) {
            panic!("injected failure at record {n}");
        }
        r
    }
}

/// The committed lines of an exactly-once file sink directory (its visible files), sorted,
/// and the names of its hidden (uncommitted) files, sorted.
pub(crate) fn read_output(dir: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let mut lines = Vec::new();
    let mut hidden = Vec::new();
    for entry in std::fs::read_dir(dir).expect("output dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            hidden.push(name);
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("part file");
        lines.extend(text.lines().map(str::to_string));
    }
    lines.sort();
    hidden.sort();
    (lines, hidden)
}

/// The committed lines of an exactly-once file sink directory, sorted.
pub(crate) fn committed_lines(dir: &std::path::Path) -> Vec<String> {
    read_output(dir).0
}

/// The checkpoint folder of the one run below the checkpoint directory `dir`
/// (`<dir>/<job id>`, see `eichhorn::checkpoint::storage`).
///
/// # Panics
///
/// `dir` holds no run, or more than one.
pub(crate) fn run_dir(dir: &std::path::Path) -> std::path::PathBuf {
    let runs: Vec<_> = std::fs::read_dir(dir)
        .expect("checkpoint dir")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<eichhorn::checkpoint::JobId>().is_ok())
        })
        .map(|e| e.path())
        .collect();
    assert_eq!(runs.len(), 1, "one run below {}: {runs:?}", dir.display());
    runs.into_iter().next().expect("one run")
}
