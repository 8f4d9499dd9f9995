//! CEP jobs against a plain sequential computation: two consecutive failed logins of one user
//! within a time bound, over out-of-order input with late events, at parallelism 1, 2 and 4,
//! with the memory backend and with LMDB behind a cache far smaller than the number of users.

use eichhorn::cep::{CEP, OverflowPolicy, Pattern};
use eichhorn::prelude::*;
use eichhorn::state::StateBackendKind;

/// `(user, failed, timestamp_ms)`.
type Login = (u32, bool, i64);

/// 3,000 logins of 60 users, out of order by up to 400 ms, a few very late.
fn logins() -> Vec<Login> {
    let mut state = 11u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    (0..3_000i64)
        .map(|i| {
            let user = (next() % 60) as u32;
            let failed = !next().is_multiple_of(3);
            let jitter = (next() % 400) as i64;
            let very_late = if next().is_multiple_of(40) { 3_000 } else { 0 };
            (user, failed, (i * 10 - jitter - very_late).max(0))
        })
        .collect()
}

const OUT_OF_ORDERNESS_MS: i64 = 200;

/// The sequential answer: late events (at or below the watermark `max - ooo - 1` of the
/// records before them), then per user in `(timestamp, arrival)` order, each pair of
/// consecutive failures less than `within` apart is a match, and each failure not followed
/// by another event less than `within` later times out at `timestamp + within`.
/// `(user, first timestamp, second timestamp or timeout time)`.
type Pair = (u32, i64, i64);

fn oracle(input: &[Login], within: i64) -> (Vec<Pair>, Vec<Pair>, u64) {
    let mut watermark = i64::MIN;
    let mut max_ts = i64::MIN;
    let mut late = 0;
    let mut per_user: std::collections::BTreeMap<u32, Vec<(i64, usize, bool)>> = Default::default();
    for (arrival, &(user, failed, ts)) in input.iter().enumerate() {
        if ts <= watermark {
            late += 1;
        } else {
            per_user
                .entry(user)
                .or_default()
                .push((ts, arrival, failed));
        }
        max_ts = max_ts.max(ts);
        watermark = watermark.max(max_ts - OUT_OF_ORDERNESS_MS - 1);
    }
    let mut matches = Vec::new();
    let mut timeouts = Vec::new();
    for (user, mut events) in per_user {
        events.sort_unstable();
        for (i, &(ts, _, failed)) in events.iter().enumerate() {
            if !failed {
                continue;
            }
            match events.get(i + 1) {
                Some(&(next_ts, _, next_failed)) if next_ts - ts < within => {
                    if next_failed {
                        matches.push((user, ts, next_ts));
                    }
                }
                _ => timeouts.push((user, ts, ts + within)),
            }
        }
    }
    matches.sort_unstable();
    timeouts.sort_unstable();
    (matches, timeouts, late)
}

fn login_pattern(within: i64) -> Pattern<Login> {
    Pattern::begin("first")
        .where_(|l: &Login| l.1)
        .next("second")
        .where_(|l: &Login| l.1)
        .within(within)
}

async fn run(
    input: Vec<Login>,
    within: i64,
    backend: StateBackendKind,
    parallelism: u32,
) -> (Vec<Pair>, Vec<Pair>, u64, Vec<Login>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    env.set_state_backend(backend);
    env.configure(|c| {
        c.batch_records_max = 64;
        c.local_state_dir = Some(dir.path().to_path_buf());
        c.state_cache_entries = 8;
    });
    let keyed = env
        .from_collection(input)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(OUT_OF_ORDERNESS_MS)
                .with_timestamp_assigner(|l: &Login, _| l.2),
        )
        .set_parallelism(1)
        .key_by(|l: &Login| l.0);
    let timed_out = OutputTag::<(u32, i64, i64)>::new("timed-out");
    let late_tag = OutputTag::<Login>::new("late");
    let matches = CEP::pattern(keyed, login_pattern(within))
        .side_output_late_data(&late_tag)
        .select_with_timeout(
            &timed_out,
            |m, at| {
                (
                    m.first("first").expect("first").0,
                    m.first("first").expect("first").2,
                    at,
                )
            },
            |m| {
                let first = m.first("first").expect("first");
                let second = m.first("second").expect("second");
                (first.0, first.2, second.2)
            },
        );
    let timeouts = matches.side_output(&timed_out).collect_sink();
    let late_events = matches.side_output(&late_tag).collect_sink();
    let matches = matches.collect_sink();
    let result = env
        .execute("login failures")
        .await
        .unwrap_or_else(|e| panic!("{backend:?} P={parallelism}: {e}"));
    let late = result.operators.iter().map(|m| m.late_records).sum();
    let mut matches = matches.take();
    matches.sort_unstable();
    let mut timeouts = timeouts.take();
    timeouts.sort_unstable();
    (matches, timeouts, late, late_events.take())
}

#[tokio::test(flavor = "current_thread")]
async fn matches_equal_the_sequential_oracle_on_both_backends_at_every_parallelism() {
    let input = logins();
    for within in [150, 2_000] {
        let (matches, timeouts, late) = oracle(&input, within);
        assert!(
            matches.len() > 50 && timeouts.len() > 50 && late > 10,
            "a meaningful input"
        );
        for backend in [StateBackendKind::Memory, StateBackendKind::Lmdb] {
            for parallelism in [1, 2, 4] {
                let (m, t, l, late_events) = run(input.clone(), within, backend, parallelism).await;
                let what = format!("within {within} {backend:?} P={parallelism}");
                assert_eq!(m, matches, "matches, {what}");
                assert_eq!(t, timeouts, "timeouts, {what}");
                assert_eq!(l, late, "late count, {what}");
                assert_eq!(late_events.len() as u64, late, "late side output, {what}");
            }
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_flood_of_start_events_keeps_partial_matches_bounded() {
    // One user, 20,000 failures and never a match: followed_by_any keeps every failure as a
    // start; the limit keeps the 100 newest and counts the rest as dropped.
    let input: Vec<Login> = (0..20_000i64).map(|i| (7, true, i)).collect();
    let env = StreamEnv::new();
    let keyed = env
        .from_collection(input)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(0)
                .with_timestamp_assigner(|l: &Login, _| l.2),
        )
        .key_by(|l: &Login| l.0);
    let pattern = Pattern::begin("fail")
        .where_(|l: &Login| l.1)
        .followed_by_any("success")
        .where_(|l: &Login| !l.1);
    let out = CEP::pattern(keyed, pattern)
        .max_partial_matches_per_key(100, OverflowPolicy::DropOldest)
        .select(|m| m.events().len())
        .collect_sink();
    let result = env.execute("flood").await.expect("runs");
    assert!(out.take().is_empty());
    let dropped: u64 = result.operators.iter().map(|m| m.dropped_records).sum();
    assert_eq!(dropped, 20_000 - 100);

    // With the policy to fail, the job fails naming the limit.
    let env = StreamEnv::new();
    let keyed = env
        .from_collection((0..1_000i64).map(|i| (7, true, i)).collect::<Vec<Login>>())
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(0)
                .with_timestamp_assigner(|l: &Login, _| l.2),
        )
        .key_by(|l: &Login| l.0);
    let pattern = Pattern::begin("fail")
        .where_(|l: &Login| l.1)
        .followed_by("ok")
        .where_(|l: &Login| !l.1);
    let _ = CEP::pattern(keyed, pattern)
        .max_partial_matches_per_key(10, OverflowPolicy::Fail)
        .select(|m| m.events().len())
        .collect_sink();
    let error = env
        .execute("flood fails")
        .await
        .expect_err("fails")
        .to_string();
    assert!(error.contains("more than 10 partial matches"), "{error}");
}

#[tokio::test(flavor = "current_thread")]
async fn records_without_timestamps_and_malformed_patterns_are_errors() {
    let env = StreamEnv::new();
    let keyed = env
        .from_collection(vec![(1u32, true, 0i64)])
        .key_by(|l: &Login| l.0);
    let _ = CEP::pattern(keyed, login_pattern(10))
        .select(|m| m.events().len())
        .collect_sink();
    let error = env
        .execute("no timestamps")
        .await
        .expect_err("fails")
        .to_string();
    assert!(error.contains("no timestamp"), "{error}");

    let env = StreamEnv::new();
    let keyed = env
        .from_collection(vec![(1u32, true, 0i64)])
        .key_by(|l: &Login| l.0);
    let bad = Pattern::begin("a")
        .where_(|l: &Login| l.1)
        .not_followed_by("b");
    let _ = CEP::pattern(keyed, bad)
        .select(|m| m.events().len())
        .collect_sink();
    let error = env
        .execute("bad pattern")
        .await
        .expect_err("fails")
        .to_string();
    assert!(
        error.contains("negative stage 'b' can end a pattern only with within()"),
        "{error}"
    );
}
