//! CEP state survives checkpoints: a job stopped with a savepoint in the middle of partial
//! matches (and of events waiting for the watermark) goes on at another parallelism with the
//! other state backend, and a job that fails restarts from its last checkpoint; either way the
//! committed matches and timeouts are exactly the sequential oracle's. The same holds for a
//! pattern with a looping group, stopped while partial matches are inside the loop.
//!
//! Timeouts only guard against hangs; no verdict depends on timing.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{read_output, within};
use eichhorn::cep::{CEP, Pattern};
use eichhorn::connectors::{GeneratorSource, RateLimitedSource};
use eichhorn::prelude::*;

/// `(user, failed, timestamp_ms)`.
type Login = (u32, bool, i64);

const RECORDS: u64 = 3_000;
const WITHIN_MS: i64 = 1_500;
/// Larger than the disorder of the input, so no event is late: watermarks are not part of a
/// checkpoint (as in Flink), so which events are late after a restore depends on where it
/// happened, and the oracle could not be exact.
const OUT_OF_ORDERNESS_MS: i64 = 300;

/// The `g`-th login: 25 users, out of order by up to 300 ms.
fn login(g: u64) -> Login {
    let h = eichhorn::state::splitmix64(g);
    let user = (h % 25) as u32;
    let failed = !(h >> 8).is_multiple_of(3);
    let ts = (g as i64 * 10 - ((h >> 16) % 300) as i64).max(0);
    (user, failed, ts)
}

/// Matches `user,first,second` and timeouts `timeout,user,first,at`, as in `tests/cep.rs`.
fn oracle() -> Vec<String> {
    let mut watermark = i64::MIN;
    let mut max_ts = i64::MIN;
    let mut per_user: std::collections::BTreeMap<u32, Vec<(i64, u64, bool)>> = Default::default();
    for g in 0..RECORDS {
        let (user, failed, ts) = login(g);
        if ts > watermark {
            per_user.entry(user).or_default().push((ts, g, failed));
        }
        max_ts = max_ts.max(ts);
        watermark = watermark.max(max_ts - OUT_OF_ORDERNESS_MS - 1);
    }
    let mut lines = Vec::new();
    for (user, mut events) in per_user {
        events.sort_unstable();
        for (i, &(ts, _, failed)) in events.iter().enumerate() {
            if !failed {
                continue;
            }
            match events.get(i + 1) {
                Some(&(next, _, next_failed)) if next - ts < WITHIN_MS => {
                    if next_failed {
                        lines.push(format!("{user},{ts},{next}"));
                    }
                }
                _ => lines.push(format!("timeout,{user},{ts},{}", ts + WITHIN_MS)),
            }
        }
    }
    lines.sort();
    lines
}

/// The looping-group pattern's matches, `group,user,first,repetitions,repetitions,last`:
/// strictly alternating fail, success (the group, one or more times, consecutive), then a
/// fail, all within `WITHIN_MS`; every start, as the default skip strategy reports.
fn group_oracle() -> Vec<String> {
    let mut watermark = i64::MIN;
    let mut max_ts = i64::MIN;
    let mut per_user: std::collections::BTreeMap<u32, Vec<(i64, u64, bool)>> = Default::default();
    for g in 0..RECORDS {
        let (user, failed, ts) = login(g);
        if ts > watermark {
            per_user.entry(user).or_default().push((ts, g, failed));
        }
        max_ts = max_ts.max(ts);
        watermark = watermark.max(max_ts - OUT_OF_ORDERNESS_MS - 1);
    }
    let mut lines = Vec::new();
    for (user, mut events) in per_user {
        events.sort_unstable();
        for i in 0..events.len() {
            let first = events[i].0;
            let mut k = 0;
            // events[i + 2j] fail and events[i + 2j + 1] success for j < k.
            while let (Some(f), Some(s)) = (events.get(i + 2 * k), events.get(i + 2 * k + 1)) {
                if !f.2 || s.2 || s.0 - first >= WITHIN_MS {
                    break;
                }
                k += 1;
                match events.get(i + 2 * k) {
                    Some(last) if last.2 && last.0 - first < WITHIN_MS => {
                        lines.push(format!("group,{user},{first},{k},{k},{}", last.0));
                    }
                    _ => {}
                }
            }
        }
    }
    lines.sort();
    lines
}

struct Dirs {
    _root: tempfile::TempDir,
    out: PathBuf,
    savepoints: PathBuf,
    checkpoints: PathBuf,
    local: PathBuf,
}

impl Dirs {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        Self {
            out: root.path().join("out"),
            savepoints: root.path().join("savepoints"),
            checkpoints: root.path().join("checkpoints"),
            local: root.path().join("local"),
            _root: root,
        }
    }
}

/// The job: a paced generator of logins at parallelism 1, the login pattern at
/// `parallelism`, matches and timeouts to an exactly-once file sink.
fn job(
    parallelism: u32,
    backend: StateBackendKind,
    dirs: &Dirs,
    fail_at: Option<u64>,
    looping_group: bool,
) -> StreamEnv {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    env.set_state_backend(backend);
    env.enable_checkpointing(50)
        .set_checkpoint_storage(dirs.checkpoints.clone());
    if fail_at.is_some() {
        env.set_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 3,
            delay_ms: 10,
        });
    }
    env.configure(|c| {
        c.batch_records_max = 32;
        c.local_state_dir = Some(dirs.local.clone());
        c.state_cache_entries = 4;
    });
    let seen = Arc::new(AtomicU64::new(0));
    let keyed = env
        .add_source(
            RateLimitedSource::new(GeneratorSource::new(Some(RECORDS), |g| g), 4_000),
            "paced logins",
        )
        .set_parallelism(1)
        .uid("source")
        .map(move |g: u64| {
            if Some(seen.fetch_add(1, Ordering::SeqCst) + 1) == fail_at {
                panic!("injected failure");
            }
            login(g)
        })
        .set_parallelism(1)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(OUT_OF_ORDERNESS_MS)
                .with_timestamp_assigner(|l: &Login, _| l.2),
        )
        .set_parallelism(1)
        .key_by(|l: &Login| l.0);
    if looping_group {
        let pair = Pattern::begin("fail")
            .where_(|l: &Login| l.1)
            .next("success")
            .where_(|l: &Login| !l.1);
        let pattern = Pattern::begin_group(pair)
            .one_or_more()
            .consecutive()
            .next("last")
            .where_(|l: &Login| l.1)
            .within(WITHIN_MS);
        CEP::pattern(keyed, pattern)
            .select(|m| {
                let first = m.first("fail").expect("fail");
                let last = m.first("last").expect("last");
                format!(
                    "group,{},{},{},{},{}",
                    first.0,
                    first.2,
                    m.get("fail").len(),
                    m.get("success").len(),
                    last.2
                )
            })
            .uid("cep")
            .write_exactly_once(dirs.out.clone(), |line: &String| line.clone())
            .uid("sink");
        return env;
    }
    let pattern = Pattern::begin("first")
        .where_(|l: &Login| l.1)
        .next("second")
        .where_(|l: &Login| l.1)
        .within(WITHIN_MS);
    let timed_out = OutputTag::<String>::new("timed-out");
    let matches = CEP::pattern(keyed, pattern).select_with_timeout(
        &timed_out,
        |m, at| {
            let first = m.first("first").expect("first");
            format!("timeout,{},{},{at}", first.0, first.2)
        },
        |m| {
            let (first, second) = (
                m.first("first").expect("first"),
                m.first("second").expect("second"),
            );
            format!("{},{},{}", first.0, first.2, second.2)
        },
    );
    let matches = matches.uid("cep");
    matches
        .side_output(&timed_out)
        .union(vec![matches.clone()])
        .write_exactly_once(dirs.out.clone(), |line: &String| line.clone())
        .uid("sink");
    env
}

/// Fails naming the lines missing and the lines extra (the full lists are long).
fn assert_same(lines: &[String], expected: &[String], case: &str) {
    let missing: Vec<&String> = expected.iter().filter(|l| !lines.contains(l)).collect();
    let extra: Vec<&String> = lines.iter().filter(|l| !expected.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && lines.len() == expected.len(),
        "{case}: every match and timeout once: missing {missing:?}, extra {extra:?}, {} lines for {}",
        lines.len(),
        expected.len()
    );
}

async fn stop_with_savepoint_after(env: &StreamEnv, run_ms: u64, target: &Path) -> PathBuf {
    let handle = env.execute_async("before savepoint").await.expect("starts");
    tokio::time::sleep(Duration::from_millis(run_ms)).await;
    let savepoint = within(handle.stop_with_savepoint(target))
        .await
        .expect("savepoint");
    let stopped = within(handle.join()).await.expect("stops");
    assert_eq!(stopped.status, JobStatus::Canceled);
    savepoint
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_savepoint_in_the_middle_of_partial_matches_restores_at_another_parallelism_and_backend()
{
    let expected = oracle();
    assert!(expected.len() > 200, "a meaningful input");
    for (before, after) in [
        ((1, StateBackendKind::Memory), (3, StateBackendKind::Lmdb)),
        ((2, StateBackendKind::Lmdb), (1, StateBackendKind::Memory)),
        ((4, StateBackendKind::Lmdb), (2, StateBackendKind::Lmdb)),
    ] {
        let case = format!("{before:?} -> {after:?}");
        let dirs = Dirs::new();
        let first = job(before.0, before.1, &dirs, None, false);
        let savepoint = stop_with_savepoint_after(&first, 300, &dirs.savepoints).await;
        let (cut, _) = read_output(&dirs.out);
        assert!(
            !cut.is_empty() && cut.len() < expected.len() / 2,
            "{case}: the savepoint was taken midway ({} lines)",
            cut.len()
        );
        let second = job(after.0, after.1, &dirs, None, false);
        second.restore_from(&savepoint, false);
        within(second.execute("after savepoint"))
            .await
            .unwrap_or_else(|e| panic!("{case}: restores: {e}"));
        let (lines, hidden) = read_output(&dirs.out);
        assert!(hidden.is_empty(), "{case}: {hidden:?}");
        assert_same(&lines, &expected, &case);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_failure_restarts_from_the_last_checkpoint_without_losing_partial_matches() {
    let expected = oracle();
    for backend in [StateBackendKind::Memory, StateBackendKind::Lmdb] {
        let dirs = Dirs::new();
        let env = job(2, backend, &dirs, Some(1_700), false);
        let result = within(env.execute("failing")).await.expect("recovers");
        assert!(result.restarts >= 1, "{backend:?}: the failure happened");
        let (lines, hidden) = read_output(&dirs.out);
        assert!(hidden.is_empty(), "{backend:?}: {hidden:?}");
        assert_same(&lines, &expected, &format!("{backend:?}"));
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_savepoint_inside_a_looping_group_restores_at_another_parallelism_and_backend() {
    let expected = group_oracle();
    assert!(
        expected.iter().any(|l| l.split(',').nth(3) == Some("2")),
        "the input repeats the group"
    );
    for (before, after) in [
        ((1, StateBackendKind::Memory), (3, StateBackendKind::Lmdb)),
        ((2, StateBackendKind::Lmdb), (1, StateBackendKind::Memory)),
    ] {
        let case = format!("group {before:?} -> {after:?}");
        let dirs = Dirs::new();
        let first = job(before.0, before.1, &dirs, None, true);
        let savepoint = stop_with_savepoint_after(&first, 300, &dirs.savepoints).await;
        let (cut, _) = read_output(&dirs.out);
        assert!(
            !cut.is_empty() && cut.len() < expected.len() / 2,
            "{case}: the savepoint was taken midway ({} lines)",
            cut.len()
        );
        let second = job(after.0, after.1, &dirs, None, true);
        second.restore_from(&savepoint, false);
        within(second.execute("after savepoint"))
            .await
            .unwrap_or_else(|e| panic!("{case}: restores: {e}"));
        let (lines, hidden) = read_output(&dirs.out);
        assert!(hidden.is_empty(), "{case}: {hidden:?}");
        assert_same(&lines, &expected, &case);
    }
}
