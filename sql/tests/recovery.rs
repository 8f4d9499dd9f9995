//! A SQL job failed and restored from a checkpoint gives the same result: a group aggregation
//! (a changelog), a hopping window aggregation, a regular join, an outer interval join, a
//! window join, an event-time temporal join (against a versioned CSV table), a cascaded window
//! aggregation with its window join and an interval join with window rows (Nexmark q5's and
//! q7's shapes) over a stream
//! registered with `from_data_stream`, written through an exactly-once file sink, commit exactly the lines the
//! same job commits without the failure, at parallelism 1 and 2, with the memory and LMDB
//! backends.
//!
//! Each run checks that the failure came after a completed checkpoint (the job restored from
//! one), so the SQL operators' state (accumulators in `ValueState`, windows and join rows in
//! `MapState`, timers) was restored, not rebuilt by replaying the whole input. Timeouts only guard against
//! hangs; no verdict depends on timing.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eichhorn::StreamEnv;
use eichhorn::checkpoint::RestartStrategy;
use eichhorn::connectors::{GeneratorSource, RateLimitedSource};
use eichhorn::state::{StateBackendKind, splitmix64};
use eichhorn::time::WatermarkStrategy;
use eichhorn_sql::{Change, Column, DataType, Row, Schema, TableEnv, Value};

/// Rows per run: 3,000 at 10,000 per second of (virtual) time, so checkpoints every 10 ms
/// complete many times.
const ROWS: u64 = 3_000;
/// The row whose map fails (once): well after the first checkpoints.
const FAIL_AT: u64 = 1_800;

fn row(g: u64) -> Row {
    let mixed = splitmix64(g);
    vec![
        Value::BigInt((mixed % 13) as i64),
        Value::BigInt((mixed >> 40) as i64 % 1_000 - 500),
        Value::TimestampLtz(g as i64 * 10),
    ]
}

fn schema() -> Schema {
    Schema::new(vec![
        Column::new("k", DataType::BigInt),
        Column::new("v", DataType::BigInt),
        Column {
            name: "ts".into(),
            data_type: DataType::TimestampLtz,
            rowtime: true,
        },
    ])
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

async fn run(
    query: &str,
    parallelism: u32,
    backend: StateBackendKind,
    dir: &Path,
    out: &Path,
    failed: Option<&'static AtomicBool>,
) -> eichhorn::JobResult {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    env.enable_checkpointing(10);
    env.set_state_backend(backend);
    env.configure(|c| {
        c.local_state_dir = Some(dir.join("local"));
        c.auto_watermark_interval_ms = 20;
    });
    env.set_restart_strategy(RestartStrategy::FixedDelay {
        attempts: 2,
        delay_ms: 10,
    });
    let rows = env
        .add_source(
            RateLimitedSource::new(GeneratorSource::new(Some(ROWS), |g| g), 10_000),
            "paced",
        )
        .set_parallelism(1)
        .map(move |g: u64| {
            if let Some(failed) = failed
                && g == FAIL_AT
                && !failed.swap(true, Ordering::SeqCst)
            {
                panic!("injected failure at row {g}");
            }
            row(g)
        })
        .set_parallelism(1)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|r: &Row, _| r[2].as_i64().unwrap_or(i64::MIN)),
        )
        .set_parallelism(1);
    let mut tenv = TableEnv::new(&env);
    tenv.from_data_stream("events", rows, schema())
        .expect("register");
    tenv.execute_sql(&rates_ddl(dir))
        .await
        .expect("create the versioned table");
    let table = tenv.sql_query(query).expect("plan");
    tenv.to_changelog_stream(&table)
        .expect("translate")
        .write_exactly_once(out, |c: &Change| c.to_string());
    tokio::time::timeout(Duration::from_secs(120), env.execute("sql recovers"))
        .await
        .expect("the job hung")
        .unwrap_or_else(|e| panic!("{query} P={parallelism} {backend:?}: {e}"))
}

/// A versioned table for temporal joins: a rate per key `k` from every second on, read from
/// a CSV file (whose source position is part of the checkpoint).
fn rates_ddl(dir: &Path) -> String {
    let path = dir.join("rates.csv");
    if !path.exists() {
        let text: String = (0..ROWS as i64 / 100)
            .flat_map(|second| {
                (0..13).map(move |k| {
                    let rate = splitmix64((second * 13 + k) as u64) % 100;
                    format!("{k},{rate},{}\n", second * 1_000 + k * 7)
                })
            })
            .collect();
        std::fs::write(&path, text).expect("write rates");
    }
    format!(
        "CREATE TABLE rates (k BIGINT, rate BIGINT, ms BIGINT, ts AS TO_TIMESTAMP_LTZ(ms, 3), \
         PRIMARY KEY (k) NOT ENFORCED, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
         WITH ('connector' = 'filesystem', 'format' = 'csv', 'path' = '{}')",
        path.display()
    )
}

async fn failures_change_nothing(query: &str, failed: &'static AtomicBool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = dir.path().join("reference");
    let result = run(
        query,
        1,
        StateBackendKind::Memory,
        dir.path(),
        &reference,
        None,
    )
    .await;
    assert_eq!(result.restarts, 0);
    let expected = committed_lines(&reference);
    assert!(expected.len() > 20, "{query}: {} lines", expected.len());
    for (parallelism, backend) in [
        (1, StateBackendKind::Memory),
        (2, StateBackendKind::Memory),
        (2, StateBackendKind::Lmdb),
    ] {
        let context = format!("{query} P={parallelism} {backend:?}");
        let out = dir.path().join(format!("out-{parallelism}-{backend:?}"));
        failed.store(false, Ordering::SeqCst);
        let result = run(query, parallelism, backend, dir.path(), &out, Some(failed)).await;
        assert!(failed.load(Ordering::SeqCst), "{context}: the map failed");
        assert_eq!(result.restarts, 1, "{context}");
        assert!(
            result.restored_from.is_some(),
            "{context}: the failure came after a completed checkpoint"
        );
        assert_eq!(committed_lines(&out), expected, "{context}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_group_aggregation_recovers_exactly_once() {
    static FAILED: AtomicBool = AtomicBool::new(false);
    failures_change_nothing(
        "SELECT k, COUNT(*) AS n, SUM(v) AS s, MAX(v) AS m, COUNT(DISTINCT v % 7) AS d \
         FROM events GROUP BY k",
        &FAILED,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_window_aggregation_recovers_exactly_once() {
    static FAILED: AtomicBool = AtomicBool::new(false);
    failures_change_nothing(
        "SELECT window_start, window_end, k, COUNT(*) AS n, SUM(v) AS s \
         FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '500' MILLISECOND, INTERVAL '1' SECOND)) \
         GROUP BY window_start, window_end, k",
        &FAILED,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_join_recovers_exactly_once() {
    static FAILED: AtomicBool = AtomicBool::new(false);
    // Both sides' rows live in the join's MapState; the restored job must neither lose a
    // pair (state gone) nor repeat one (state and input replayed twice).
    failures_change_nothing(
        "SELECT a.k, a.v, b.v AS w, b.ts FROM events a \
         JOIN (SELECT k, v, ts FROM events WHERE v > 440) b ON a.k = b.k AND a.v < -420",
        &FAILED,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_outer_interval_join_recovers_exactly_once() {
    static FAILED: AtomicBool = AtomicBool::new(false);
    // Rows wait in MapState (with whether they matched) until the watermark passes their
    // interval; a restored job must pad exactly the rows that never matched.
    failures_change_nothing(
        "SELECT a.k, a.v, b.v AS w FROM events a FULL JOIN \
         (SELECT k, v, ts FROM events WHERE v > 300) b ON a.k = b.k \
         AND b.ts BETWEEN a.ts - INTERVAL '40' MILLISECOND AND a.ts + INTERVAL '60' MILLISECOND",
        &FAILED,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_window_join_recovers_exactly_once() {
    static FAILED: AtomicBool = AtomicBool::new(false);
    failures_change_nothing(
        "SELECT l.k, l.v, r.v AS w, l.window_start FROM \
         TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '200' MILLISECOND)) l LEFT JOIN \
         (SELECT * FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '200' MILLISECOND)) \
          WHERE v > 200) r \
         ON l.k = r.k AND l.window_start = r.window_start AND l.window_end = r.window_end",
        &FAILED,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_temporal_join_recovers_exactly_once() {
    static FAILED: AtomicBool = AtomicBool::new(false);
    // Probe rows and versions wait in MapState for the watermark; a restored job must join
    // each row with the same version, once.
    failures_change_nothing(
        "SELECT e.k, e.v, r.rate, r.ms FROM events e \
         LEFT JOIN rates FOR SYSTEM_TIME AS OF e.ts AS r ON e.k = r.k",
        &FAILED,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_cascaded_window_aggregation_and_its_window_join_recover_exactly_once() {
    static FAILED: AtomicBool = AtomicBool::new(false);
    // Nexmark q5's shape: the per-window maximum is a cascaded window aggregation (its
    // accumulators in ValueState, a timer per window), joined per window.
    let counts = "SELECT k, COUNT(*) AS num, window_start AS starttime, window_end AS endtime \
         FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '500' MILLISECOND, INTERVAL '1' SECOND)) \
         GROUP BY k, window_start, window_end";
    failures_change_nothing(
        &format!(
            "SELECT A.endtime, A.k, A.num FROM ({counts}) A JOIN ( \
               SELECT MAX(C.num) AS maxn, C.starttime, C.endtime FROM ({counts}) C \
               GROUP BY C.starttime, C.endtime) M \
             ON A.starttime = M.starttime AND A.endtime = M.endtime AND A.num >= M.maxn"
        ),
        &FAILED,
    )
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_interval_join_with_window_rows_recovers_exactly_once() {
    static FAILED: AtomicBool = AtomicBool::new(false);
    // Nexmark q7's shape: rows wait for the window rows at their window time in MapState.
    failures_change_nothing(
        "SELECT B1.window_end, e.k, e.v FROM events e JOIN ( \
           SELECT MAX(v) AS maxv, window_start, window_end \
           FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '1' SECOND)) \
           GROUP BY window_start, window_end) B1 \
         ON e.v = B1.maxv WHERE e.ts >= B1.window_start AND e.ts < B1.window_end",
        &FAILED,
    )
    .await;
}
