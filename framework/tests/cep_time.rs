//! CEP beyond the keyed event-time basics: a pattern ending in `not_followed_by` (reported when
//! its time bound passes, surviving a savepoint in the middle), CEP over a stream that is not
//! keyed, and CEP in processing time. Each against a plain sequential computation.
//!
//! Timeouts only guard against hangs; no verdict depends on timing (processing-time cases use
//! tokio's paused clock and gaps far larger than the bounds they test).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{read_output, within};
use eichhorn::cep::{CEP, Pattern};
use eichhorn::connectors::{GeneratorSource, RateLimitedSource};
use eichhorn::prelude::*;
use eichhorn::state::StateBackendKind;

/// `(user, failed, timestamp_ms)`.
type Login = (u32, bool, i64);

const RECORDS: u64 = 2_000;
const WITHIN_MS: i64 = 400;
/// Larger than the disorder of the input: no event is late, so a restore (watermarks are not
/// checkpointed) cannot change which events are matched.
const OUT_OF_ORDERNESS_MS: i64 = 300;

/// The `g`-th login: 20 users, out of order by up to 300 ms, one in four a success.
fn login(g: u64) -> Login {
    let h = eichhorn::state::splitmix64(g ^ 0x5eed);
    let user = (h % 20) as u32;
    let failed = !(h >> 8).is_multiple_of(4);
    let ts = (g as i64 * 10 - ((h >> 16) % 300) as i64).max(0);
    (user, failed, ts)
}

/// The sequential answer to "a failure not followed by a success of the same user within
/// `WITHIN_MS`": per user, in `(timestamp, arrival)` order, every failure with no success after
/// it and less than `WITHIN_MS` later. Lines `user,timestamp`, sorted.
fn unanswered_failures_oracle() -> Vec<String> {
    let mut per_user: BTreeMap<u32, Vec<(i64, u64, bool)>> = BTreeMap::new();
    for g in 0..RECORDS {
        let (user, failed, ts) = login(g);
        per_user.entry(user).or_default().push((ts, g, failed));
    }
    let mut lines = Vec::new();
    for (user, mut events) in per_user {
        events.sort_unstable();
        for (i, &(ts, _, failed)) in events.iter().enumerate() {
            let answered = events[i + 1..]
                .iter()
                .take_while(|(next, _, _)| next - ts < WITHIN_MS)
                .any(|(_, _, next_failed)| !next_failed);
            if failed && !answered {
                lines.push(format!("{user},{ts}"));
            }
        }
    }
    lines.sort();
    lines
}

fn unanswered_failure() -> Pattern<Login> {
    Pattern::begin("fail")
        .where_(|l: &Login| l.1)
        .not_followed_by("success")
        .where_(|l: &Login| !l.1)
        .within(WITHIN_MS)
}

fn timestamped(stream: DataStream<Login>) -> DataStream<Login> {
    stream.assign_timestamps_and_watermarks(
        WatermarkStrategy::for_bounded_out_of_orderness_every_event(OUT_OF_ORDERNESS_MS)
            .with_timestamp_assigner(|l: &Login, _| l.2),
    )
}

#[tokio::test(flavor = "current_thread")]
async fn a_final_not_followed_by_matches_the_oracle_at_every_parallelism_and_backend() {
    let expected = unanswered_failures_oracle();
    assert!(
        expected.len() > 100,
        "a meaningful input: {}",
        expected.len()
    );
    for (parallelism, backend) in [
        (1, StateBackendKind::Memory),
        (2, StateBackendKind::Lmdb),
        (4, StateBackendKind::Memory),
    ] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        env.set_state_backend(backend);
        let dir = tempfile::tempdir().expect("tempdir");
        env.configure(|c| c.local_state_dir = Some(dir.path().to_path_buf()));
        let logins = env
            .from_collection((0..RECORDS).map(login).collect::<Vec<_>>())
            .set_parallelism(1);
        let keyed = timestamped(logins).set_parallelism(1).key_by(|l| l.0);
        let out = CEP::pattern(keyed, unanswered_failure())
            .select(|m| {
                let fail = m.first("fail").expect("fail");
                assert!(m.get("success").is_empty(), "negations take no events");
                format!("{},{}", fail.0, fail.2)
            })
            .collect_sink();
        within(env.execute("unanswered failures"))
            .await
            .unwrap_or_else(|e| panic!("p{parallelism} {backend:?}: {e}"));
        let mut lines = out.take();
        lines.sort();
        assert_eq!(lines, expected, "p{parallelism} {backend:?}");
    }
}

/// The unanswered-failure job over a paced source, to an exactly-once file sink.
fn paced_job(parallelism: u32, backend: StateBackendKind, root: &std::path::Path) -> StreamEnv {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    env.set_state_backend(backend);
    env.enable_checkpointing(50)
        .set_checkpoint_storage(root.join("checkpoints"));
    env.configure(|c| {
        c.batch_records_max = 32;
        c.local_state_dir = Some(root.join("local"));
    });
    let logins = env
        .add_source(
            RateLimitedSource::new(GeneratorSource::new(Some(RECORDS), |g| g), 4_000),
            "paced logins",
        )
        .set_parallelism(1)
        .uid("source")
        .map(login)
        .set_parallelism(1);
    let keyed = timestamped(logins).set_parallelism(1).key_by(|l| l.0);
    CEP::pattern(keyed, unanswered_failure())
        .select(|m| {
            let fail = m.first("fail").expect("fail");
            format!("{},{}", fail.0, fail.2)
        })
        .uid("cep")
        .write_exactly_once(root.join("out"), |line: &String| line.clone())
        .uid("sink");
    env
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn matches_waiting_on_a_final_negation_survive_a_savepoint_at_another_parallelism() {
    let expected = unanswered_failures_oracle();
    for (before, after) in [
        ((1, StateBackendKind::Memory), (3, StateBackendKind::Lmdb)),
        ((4, StateBackendKind::Lmdb), (2, StateBackendKind::Memory)),
    ] {
        let case = format!("{before:?} -> {after:?}");
        let root = tempfile::tempdir().expect("tempdir");
        let first = paced_job(before.0, before.1, root.path());
        let handle = first.execute_async("before").await.expect("starts");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let savepoint: PathBuf = within(handle.stop_with_savepoint(&root.path().join("sp")))
            .await
            .expect("savepoint");
        within(handle.join()).await.expect("stops");
        let (cut, _) = read_output(&root.path().join("out"));
        assert!(
            cut.len() < expected.len() / 2,
            "{case}: the savepoint was taken midway ({} lines)",
            cut.len()
        );
        let second = paced_job(after.0, after.1, root.path());
        second.restore_from(&savepoint, false);
        within(second.execute("after"))
            .await
            .unwrap_or_else(|e| panic!("{case}: restores: {e}"));
        let (mut lines, hidden) = read_output(&root.path().join("out"));
        assert!(hidden.is_empty(), "{case}: {hidden:?}");
        lines.sort();
        assert_eq!(lines, expected, "{case}: every match once");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn unkeyed_cep_sees_one_sequence_at_every_parallelism() {
    // Two failures in a row, whoever had them, in event-time order (ties in arrival order).
    let input: Vec<Login> = (0..RECORDS).map(login).collect();
    let mut ordered: Vec<(i64, usize, bool)> = input
        .iter()
        .enumerate()
        .map(|(i, l)| (l.2, i, l.1))
        .collect();
    ordered.sort_unstable();
    let mut expected: Vec<(i64, i64)> = ordered
        .windows(2)
        .filter(|w| w[0].2 && w[1].2 && w[1].0 - w[0].0 < WITHIN_MS)
        .map(|w| (w[0].0, w[1].0))
        .collect();
    expected.sort_unstable();
    for parallelism in [1, 2, 4] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        let logins = timestamped(env.from_collection(input.clone()).set_parallelism(1));
        let pattern = Pattern::begin("a")
            .where_(|l: &Login| l.1)
            .next("b")
            .where_(|l: &Login| l.1)
            .within(WITHIN_MS);
        let out = CEP::pattern_unkeyed(logins, pattern)
            .select(|m| (m.first("a").expect("a").2, m.first("b").expect("b").2))
            .collect_sink();
        let result = within(env.execute("unkeyed")).await.expect("runs");
        let cep = result
            .operators
            .iter()
            .filter(|o| o.name.starts_with("CEP"))
            .count();
        assert_eq!(cep, 1, "p{parallelism}: one CEP subtask");
        let mut pairs = out.take();
        pairs.sort_unstable();
        assert_eq!(pairs, expected, "p{parallelism}");
    }
}

/// Emits `first`, stays idle until processing time `gap_ms`, emits `second` (if any), then
/// ends.
#[operator(new = false)]
#[derive(Clone)]
struct TwoApart {
    first: Option<u32>,
    second: Option<u32>,
    gap_ms: i64,
    done: bool,
}

impl SourceFunction<u32> for TwoApart {
    fn poll_next(&mut self, ctx: &mut SourceContext<'_, u32>) -> Result<SourcePoll, FunctionError> {
        if let Some(first) = self.first.take() {
            ctx.collect(first);
            return Ok(SourcePoll::MoreAvailable);
        }
        if self.done {
            return Ok(SourcePoll::Finished);
        }
        if ctx.current_processing_time() < self.gap_ms {
            return Ok(SourcePoll::Idle);
        }
        self.done = true;
        if let Some(second) = self.second.take() {
            ctx.collect(second);
        }
        Ok(SourcePoll::MoreAvailable)
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn processing_time_cep_matches_in_arrival_order_and_times_out_on_the_clock() {
    // No timestamps at all: matching follows arrival order per key.
    let values: Vec<(u32, u32)> = (0..400u32).map(|i| (i % 3, (i * 7) % 5)).collect();
    let mut expected = Vec::new();
    for key in 0..3 {
        let seq: Vec<u32> = values.iter().filter(|v| v.0 == key).map(|v| v.1).collect();
        for w in seq.windows(2) {
            if w[0] == 1 && w[1] >= 3 {
                expected.push((key, w[0], w[1]));
            }
        }
    }
    expected.sort_unstable();
    for parallelism in [1, 2, 4] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        let keyed = env
            .from_collection(values.clone())
            .set_parallelism(1)
            .key_by(|v: &(u32, u32)| v.0);
        let pattern = Pattern::begin("a")
            .where_(|v: &(u32, u32)| v.1 == 1)
            .next("b")
            .where_(|v: &(u32, u32)| v.1 >= 3)
            .within(3_600_000);
        let out = CEP::pattern(keyed, pattern)
            .in_processing_time()
            .select(|m| {
                let (a, b) = (m.first("a").expect("a"), m.first("b").expect("b"));
                (a.0, a.1, b.1)
            })
            .collect_sink();
        within(env.execute("processing time")).await.expect("runs");
        let mut found = out.take();
        found.sort_unstable();
        assert_eq!(found, expected, "p{parallelism}");
    }
    // `within` counts processing time: 1 then 2, 200 ms apart, match within 1 s but not
    // within 50 ms, where the 1 times out 50 ms after it arrived: when the 2 arrives, or
    // without a 2, on the processing-time timer while the source is idle (the end of the
    // input does not fire time bounds in processing time).
    for (bound, second, matches, timeouts) in [
        (1_000i64, Some(2), 1usize, 0usize),
        (50, Some(2), 0, 1),
        (50, None, 0, 1),
        (1_000, None, 0, 0),
    ] {
        let env = StreamEnv::new();
        env.configure(|c| c.source_idle_poll_ms = 5);
        let keyed = env
            .add_source(
                TwoApart {
                    first: Some(1),
                    second,
                    gap_ms: 200,
                    done: false,
                },
                "two apart",
            )
            .key_by(|_| 0u8);
        let pattern = Pattern::begin("a")
            .where_(|v: &u32| *v == 1)
            .followed_by("b")
            .where_(|v: &u32| *v == 2)
            .within(bound);
        let timed_out = OutputTag::<(i64, i64)>::new("timed out");
        let found = CEP::pattern(keyed, pattern)
            .in_processing_time()
            .select_with_timeout(
                &timed_out,
                |m, at| (m.start_timestamp().expect("a"), at),
                |m| {
                    (
                        m.start_timestamp().expect("a"),
                        m.end_timestamp().expect("b"),
                    )
                },
            );
        let late = found.side_output(&timed_out).collect_sink();
        let found = found.collect_sink();
        within(env.execute("processing-time bound"))
            .await
            .expect("runs");
        let (found, late) = (found.take(), late.take());
        assert_eq!(
            (found.len(), late.len()),
            (matches, timeouts),
            "within {bound}, then {second:?}"
        );
        for (start, end) in found {
            assert!(
                end >= 200 && end - start > 100,
                "the events' processing times: {start} {end}"
            );
        }
        for (start, at) in late {
            assert_eq!(at - start, bound, "timed out at arrival + within");
        }
    }
}
