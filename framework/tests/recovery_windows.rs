//! Windows survive failures: a windowed job with periodic checkpoints, a restart strategy and a
//! map that fails once commits, through an exactly-once sink, exactly what the same job commits
//! without the failure, at parallelism 1 and 2 and with the memory and LMDB backends (LMDB with
//! a write-back cache of 4 entries for 13 keys, so the windows are read back from LMDB). A
//! savepoint taken with one backend and parallelism restores with the other backend at another
//! parallelism (windows move by key group).
//!
//! Each run checks that the failure came after a checkpoint completed (the job restored from
//! one), so the windows in flight at the failure were restored, not rebuilt from a replay of
//! the whole input. Timeouts only guard against hangs; no verdict depends on timing.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eichhorn::checkpoint::RestartStrategy;
use eichhorn::connectors::{GeneratorSource, RateLimitedSource};
use eichhorn::operator::window::trigger::{EventTimeTrigger, PurgingTrigger};
use eichhorn::operator::window::{TimeDomain, WindowAssigner};
use eichhorn::prelude::*;
use eichhorn::state::StateBackendKind;
use eichhorn::time::WatermarkStrategy;

/// Records per run: 3,000 at 10,000 per second of (virtual) time, so about 30 checkpoints
/// complete at a 10 ms interval.
const RECORDS: u64 = 3_000;
/// The record whose map fails (once): well after the first checkpoints.
const FAIL_AT: u64 = 1_800;

/// `(key, first timestamp, last timestamp, sum, count)`: an event, and what a window reduces
/// its events to.
type Event = (u64, i64, i64, i64, u64);

/// Event `g`: 13 keys, event time `10 * g` ms (in order), values with both signs.
fn event(g: u64) -> Event {
    let mixed = eichhorn::state::splitmix64(g);
    let time = i64::try_from(g).unwrap_or(i64::MAX) * 10;
    (
        mixed % 13,
        time,
        time,
        (mixed >> 40) as i64 % 1_000 - 500,
        1,
    )
}

fn combine(a: Event, b: Event) -> Event {
    (a.0, a.1.min(b.1), a.2.max(b.2), a.3 + b.3, a.4 + b.4)
}

fn line(e: &Event) -> String {
    format!("{},{},{},{},{}", e.0, e.1, e.2, e.3, e.4)
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), future)
        .await
        .expect("the job hung")
}

/// The committed lines of an exactly-once file sink directory, sorted.
fn committed_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).expect("output dir") {
        let entry = entry.expect("entry");
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).expect("part file");
        lines.extend(text.lines().map(str::to_string));
    }
    lines.sort();
    lines
}

/// The events counted in committed lines (the last field): every event exactly once.
fn events_counted(lines: &[String]) -> u64 {
    lines
        .iter()
        .map(|l| {
            l.rsplit(',')
                .next()
                .and_then(|c| c.parse::<u64>().ok())
                .expect("a count")
        })
        .sum()
}

/// Which windows a job computes.
#[derive(Debug, Clone, Copy)]
enum Windows {
    /// Tumbling event-time windows of 1 s.
    Tumbling,
    /// Session windows with a gap of 200 ms.
    Sessions,
    /// Sliding windows of 1 s every 250 ms: a reduce folds each window's elements, the generic
    /// path (contents per window, timers).
    Sliding,
    /// Session windows with a trigger the fast path does not know: the generic path with
    /// merging sets.
    MergingGeneric,
}

/// The windows of `windows` over `events`, reduced with [`combine`].
fn windowed(windows: Windows, events: KeyedStream<u64, Event>) -> DataStream<Event> {
    let event = TimeDomain::EventTime;
    match windows {
        Windows::Tumbling => events
            .window(WindowAssigner::tumbling(event, 1_000, 0).expect("valid"))
            .reduce(combine),
        Windows::Sessions => events
            .window(WindowAssigner::session(event, 200).expect("valid"))
            .reduce(combine),
        Windows::Sliding => events
            .window(WindowAssigner::sliding(event, 1_000, 250, 0).expect("valid"))
            .reduce(combine),
        Windows::MergingGeneric => events
            .window(WindowAssigner::session(event, 200).expect("valid"))
            .trigger(PurgingTrigger::of(EventTimeTrigger))
            .reduce(combine),
    }
}

/// Runs the windowed job into `out`; with `fail`, its map panics once, at record [`FAIL_AT`],
/// which `failed` remembers over the restart.
async fn run(
    windows: Windows,
    parallelism: u32,
    backend: StateBackendKind,
    dir: &Path,
    out: &Path,
    failed: Option<&'static AtomicBool>,
) -> eichhorn::runtime::JobResult {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    env.enable_checkpointing(10);
    env.set_state_backend(backend);
    env.configure(|c| {
        c.local_state_dir = Some(dir.join("local"));
        c.auto_watermark_interval_ms = 20;
        // Fewer cache entries than keys: LMDB holds the windows.
        c.state_cache_entries = 4;
    });
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 2,
        delay_ms: 10,
    });
    let events = env
        .add_source(
            RateLimitedSource::new(GeneratorSource::new(Some(RECORDS), |g| g), 10_000),
            "paced",
        )
        .set_parallelism(1)
        .map(move |g: u64| {
            if let Some(failed) = failed
                && g == FAIL_AT
                && !failed.swap(true, Ordering::SeqCst)
            {
                panic!("injected failure at record {g}");
            }
            event(g)
        })
        .set_parallelism(1)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|e: &Event, _| e.1),
        )
        .set_parallelism(1)
        .key_by(|e: &Event| e.0);
    windowed(windows, events).write_exactly_once(out, line);
    within(env.execute("windows recover"))
        .await
        .unwrap_or_else(|e| panic!("{windows:?} P={parallelism} {backend:?}: {e}"))
}

/// The failure-free output, then a run with a failure for each parallelism and backend.
async fn failures_change_nothing(windows: Windows, failed: &'static AtomicBool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = dir.path().join("reference");
    let result = run(
        windows,
        1,
        StateBackendKind::Memory,
        dir.path(),
        &reference,
        None,
    )
    .await;
    assert_eq!(result.restarts, 0);
    let expected = committed_lines(&reference);
    let windows_per_event = if let Windows::Sliding = windows { 4 } else { 1 };
    assert_eq!(
        events_counted(&expected),
        RECORDS * windows_per_event,
        "{windows:?}"
    );
    assert!(
        expected.len() > 30,
        "{windows:?}: {} windows",
        expected.len()
    );

    for parallelism in [1, 2] {
        for backend in [StateBackendKind::Memory, StateBackendKind::Lmdb] {
            let context = format!("{windows:?} P={parallelism} {backend:?}");
            let out = dir.path().join(format!("out-{parallelism}-{backend:?}"));
            failed.store(false, Ordering::SeqCst);
            let result = run(
                windows,
                parallelism,
                backend,
                dir.path(),
                &out,
                Some(failed),
            )
            .await;
            assert!(failed.load(Ordering::SeqCst), "{context}: the map failed");
            assert_eq!(result.restarts, 1, "{context}");
            assert!(
                result.restored_from.is_some(),
                "{context}: the failure came after a completed checkpoint"
            );
            assert_eq!(committed_lines(&out), expected, "{context}");
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn tumbling_windows_recover_exactly_once() {
    static FAILED: AtomicBool = AtomicBool::new(false);
    failures_change_nothing(Windows::Tumbling, &FAILED).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn session_windows_recover_exactly_once() {
    static FAILED: AtomicBool = AtomicBool::new(false);
    failures_change_nothing(Windows::Sessions, &FAILED).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sliding_windows_recover_exactly_once() {
    static FAILED: AtomicBool = AtomicBool::new(false);
    failures_change_nothing(Windows::Sliding, &FAILED).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn merging_windows_with_a_custom_trigger_recover_exactly_once() {
    static FAILED: AtomicBool = AtomicBool::new(false);
    failures_change_nothing(Windows::MergingGeneric, &FAILED).await;
}

/// A savepoint of windows in flight, taken at parallelism 2 with one backend, restores at
/// parallelism 3 with the other: every key group's windows go to the subtask that owns it now,
/// and the job commits what a job that never stopped commits.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_savepoint_of_windows_restores_at_another_parallelism_and_backend() {
    for windows in [Windows::Tumbling, Windows::Sessions, Windows::Sliding] {
        for (before, after) in [
            (StateBackendKind::Lmdb, StateBackendKind::Memory),
            (StateBackendKind::Memory, StateBackendKind::Lmdb),
        ] {
            let context = format!("{windows:?} {before:?} -> {after:?}");
            let dir = tempfile::tempdir().expect("tempdir");
            let reference = dir.path().join("reference");
            run(
                windows,
                1,
                StateBackendKind::Memory,
                dir.path(),
                &reference,
                None,
            )
            .await;
            let expected = committed_lines(&reference);

            let out = dir.path().join("out");
            let build = |parallelism: u32, backend: StateBackendKind| {
                let env = StreamEnv::new();
                env.set_parallelism(parallelism);
                env.enable_checkpointing(1_000_000);
                env.set_state_backend(backend);
                env.configure(|c| {
                    c.local_state_dir = Some(dir.path().join(format!("local-{parallelism}")));
                    c.auto_watermark_interval_ms = 20;
                    c.state_cache_entries = 4;
                });
                let events = env
                    .add_source(
                        RateLimitedSource::new(GeneratorSource::new(Some(RECORDS), |g| g), 10_000),
                        "paced",
                    )
                    .set_parallelism(1)
                    .uid("source")
                    .map(event)
                    .set_parallelism(1)
                    .assign_timestamps_and_watermarks(
                        WatermarkStrategy::for_monotonous_timestamps()
                            .with_timestamp_assigner(|e: &Event, _| e.1),
                    )
                    .set_parallelism(1)
                    .key_by(|e: &Event| e.0);
                windowed(windows, events)
                    .uid("windows")
                    .write_exactly_once(out.clone(), line)
                    .uid("sink");
                env
            };
            let first = build(2, before);
            let handle = first.execute_async("before").await.expect("starts");
            // About half of the input (at 10,000 records per second of virtual time).
            tokio::time::sleep(Duration::from_millis(150)).await;
            let savepoint = within(handle.stop_with_savepoint(dir.path().join("savepoints")))
                .await
                .unwrap_or_else(|e| panic!("{context}: savepoint: {e}"));
            within(handle.join()).await.expect("stops");
            let committed = committed_lines(&out).len();
            assert!(
                committed > 0 && committed < expected.len(),
                "{context}: {committed} of {} windows before the savepoint",
                expected.len()
            );

            let second = build(3, after);
            second.restore_from(&savepoint, false);
            let result = within(second.execute("after"))
                .await
                .unwrap_or_else(|e| panic!("{context}: {e}"));
            assert!(result.restored_from.is_some(), "{context}");
            assert_eq!(committed_lines(&out), expected, "{context}");
        }
    }
}
