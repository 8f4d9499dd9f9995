//! Keyed process functions with state and event-time timers, against a sequential oracle:
//! the temperature-rise alert (the seed's `TempIncreaseAlertFunction`, in event time), on both
//! state backends (LMDB keeping two timers in memory, so its timers are read back from LMDB),
//! and under a failure with recovery from a checkpoint.

mod common;

use std::collections::BTreeMap;

use common::{committed_lines, failing_at, within};
use eichhorn::checkpoint::RestartStrategy;
use eichhorn::connectors::{GeneratorSource, RateLimitedSource};
use eichhorn::prelude::*;
use eichhorn::state::{StateBackendKind, ValueState};
use eichhorn::time::WatermarkStrategy;

type Reading = (u32, i64, i64); // (sensor, timestamp, temperature)

/// On a first or falling reading: delete the pending timer. On a rising reading with no timer
/// pending: a timer at `timestamp + interval`. Equal readings change nothing. A firing timer
/// emits (sensor, timer timestamp) and is forgotten.
#[operator(new = false)]
#[derive(Clone)]
struct TempIncreaseAlert {
    last_temperature: ValueState<i64>,
    timer: ValueState<i64>,
    interval_ms: i64,
}

impl KeyedProcessFunction for TempIncreaseAlert {
    type Key = u32;
    type In = Reading;
    type Out = (u32, i64);

    fn process_element(
        &mut self,
        (_, ts, temperature): Reading,
        ctx: &mut KeyedContext<'_, '_, u32>,
        _out: &mut Collector<'_, (u32, i64)>,
    ) {
        let previous = self.last_temperature.value(ctx);
        self.last_temperature.update(ctx, temperature);
        let pending = self.timer.value(ctx);
        match previous {
            Some(previous) if temperature > previous => {
                if pending.is_none() {
                    let at = ts + self.interval_ms;
                    ctx.register_event_time_timer(at);
                    self.timer.update(ctx, at);
                }
            }
            Some(previous) if temperature == previous => {}
            _ => {
                if let Some(at) = pending {
                    ctx.delete_event_time_timer(at);
                }
                self.timer.clear(ctx);
            }
        }
    }

    fn on_timer(
        &mut self,
        timestamp: i64,
        ctx: &mut KeyedContext<'_, '_, u32>,
        out: &mut Collector<'_, (u32, i64)>,
    ) {
        assert_eq!(ctx.timestamp(), Some(timestamp));
        out.collect((*ctx.current_key(), timestamp));
        self.timer.clear(ctx);
    }
}

fn readings() -> Vec<Reading> {
    let mut state = 99u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    (0..800i64)
        .map(|i| {
            (
                (next() % 4) as u32,
                i * 50 - (next() % 300) as i64,
                (next() % 7) as i64,
            )
        })
        .collect()
}

fn oracle(data: &[Reading], interval: i64, out_of_orderness: i64) -> Vec<(u32, i64)> {
    let mut last: BTreeMap<u32, i64> = BTreeMap::new();
    let mut timer: BTreeMap<u32, i64> = BTreeMap::new();
    let mut fired = Vec::new();
    let mut max_ts = i64::MIN;
    let mut watermark = i64::MIN;
    let fire = |timer: &mut BTreeMap<u32, i64>, fired: &mut Vec<(u32, i64)>, watermark: i64| {
        let mut due: Vec<(i64, u32)> = timer
            .iter()
            .filter(|(_, at)| **at <= watermark)
            .map(|(k, at)| (*at, *k))
            .collect();
        due.sort();
        for (at, key) in due {
            fired.push((key, at));
            timer.remove(&key);
        }
    };
    for &(sensor, ts, temperature) in data {
        let previous = last.insert(sensor, temperature);
        match previous {
            Some(p) if temperature > p => {
                timer.entry(sensor).or_insert(ts + interval);
            }
            Some(p) if temperature == p => {}
            _ => {
                timer.remove(&sensor);
            }
        }
        max_ts = max_ts.max(ts);
        watermark = watermark.max(max_ts - out_of_orderness - 1);
        fire(&mut timer, &mut fired, watermark);
    }
    fire(&mut timer, &mut fired, i64::MAX);
    fired
}

/// Sets `backend`; LMDB lives under `dir` and keeps at most `cache` state entries, pending
/// timer writes and (per time domain) first timers in memory.
fn use_backend(env: &StreamEnv, backend: StateBackendKind, dir: &std::path::Path, cache: usize) {
    env.set_state_backend(backend);
    env.configure(|c| {
        c.local_state_dir = Some(dir.to_path_buf());
        c.state_cache_entries = cache;
    });
}

#[tokio::test]
async fn temperature_rise_alert_matches_the_oracle() {
    let data = readings();
    let dir = tempfile::tempdir().expect("tempdir");
    for (interval, out_of_orderness) in [(1_000, 0), (300, 200)] {
        let mut expected = oracle(&data, interval, out_of_orderness);
        expected.sort();
        assert!(!expected.is_empty());
        for backend in [StateBackendKind::Memory, StateBackendKind::Lmdb] {
            for parallelism in [1, 2, 4] {
                let env = StreamEnv::new();
                env.set_parallelism(parallelism);
                env.configure(|c| c.batch_records_max = 16);
                use_backend(&env, backend, dir.path(), 2);
                let alerts = env
                    .from_collection(data.clone())
                    .assign_timestamps_and_watermarks(
                        WatermarkStrategy::for_bounded_out_of_orderness_every_event(
                            out_of_orderness,
                        )
                        .with_timestamp_assigner(|r: &Reading, _| r.1),
                    )
                    .set_parallelism(1)
                    .key_by(|r: &Reading| r.0)
                    .process(TempIncreaseAlert {
                        last_temperature: ValueState::new("last-temperature"),
                        timer: ValueState::new("timer"),
                        interval_ms: interval,
                    })
                    .collect_sink();
                env.execute("alerts").await.unwrap();
                let mut alerts = alerts.take();
                alerts.sort();
                assert_eq!(
                    alerts, expected,
                    "interval {interval}, {backend:?}, parallelism {parallelism}"
                );
            }
        }
    }
}

/// Reading `g` of a paced generator: 50 sensors, in event-time order 50 ms apart (so that the
/// watermark after a restore is the one the failure-free run had at the same record).
fn paced_reading(g: u64) -> Reading {
    let h = g
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(29)
        .wrapping_mul(0xbf58_476d_1ce4_e5b9);
    ((h % 50) as u32, g as i64 * 50, ((h >> 20) % 5) as i64)
}

/// Alerts with timers in flight survive a failure: the committed output equals the oracle's
/// with either backend at parallelism 1, 2 and 4, restored from a checkpoint. LMDB holds up to 50
/// timers with 8 in its head and at most 8 pending writes, so checkpoints hold timers from both.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn timers_survive_a_failure_on_both_backends() {
    const RECORDS: u64 = 3_000;
    // Long enough that many timers are pending at once, and many are deleted before firing.
    const INTERVAL_MS: i64 = 5_000;
    let data: Vec<Reading> = (0..RECORDS).map(paced_reading).collect();
    let mut expected: Vec<String> = oracle(&data, INTERVAL_MS, 0)
        .iter()
        .map(|(sensor, at)| format!("{sensor},{at}"))
        .collect();
    expected.sort();
    assert!(expected.len() > 100, "{} alerts", expected.len());
    let dir = tempfile::tempdir().expect("tempdir");
    for backend in [StateBackendKind::Memory, StateBackendKind::Lmdb] {
        for parallelism in [1, 2, 4] {
            let context = format!("{backend:?} P={parallelism}");
            let out = dir.path().join(format!("out-{backend:?}-{parallelism}"));
            let env = StreamEnv::new();
            env.set_parallelism(parallelism);
            env.enable_checkpointing(10);
            use_backend(&env, backend, &dir.path().join("local"), 8);
            env.set_restart_strategy(RestartStrategy::FixedDelay {
                attempts: 2,
                delay_ms: 10,
            });
            env.add_source(
                RateLimitedSource::new(GeneratorSource::new(Some(RECORDS), paced_reading), 10_000),
                "readings",
            )
            .set_parallelism(1)
            .map(failing_at(vec![1_800]))
            .set_parallelism(1)
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_bounded_out_of_orderness_every_event(0)
                    .with_timestamp_assigner(|r: &Reading, _| r.1),
            )
            .set_parallelism(1)
            .key_by(|r: &Reading| r.0)
            .process(TempIncreaseAlert {
                last_temperature: ValueState::new("last-temperature"),
                timer: ValueState::new("timer"),
                interval_ms: INTERVAL_MS,
            })
            .write_exactly_once(&out, |(sensor, at): &(u32, i64)| format!("{sensor},{at}"));
            let result = within(env.execute("alerts recover"))
                .await
                .unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_eq!(result.restarts, 1, "{context}");
            assert!(
                result.restored_from.is_some(),
                "{context}: restored from a checkpoint"
            );
            assert_eq!(committed_lines(&out), expected, "{context}");
        }
    }
}

/// A state read with the wrong type fails the job with both types named.
#[operator(new = false)]
#[derive(Clone)]
struct Confused;

impl KeyedProcessFunction for Confused {
    type Key = u32;
    type In = u32;
    type Out = u32;
    fn process_element(
        &mut self,
        value: u32,
        ctx: &mut KeyedContext<'_, '_, u32>,
        _out: &mut Collector<'_, u32>,
    ) {
        ValueState::<u32>::new("slot").update(ctx, value);
        let _ = ValueState::<String>::new("slot").value(ctx);
    }
}

#[tokio::test]
async fn state_type_mismatch_fails_the_job_with_a_clear_error() {
    let env = StreamEnv::new();
    let _ = env
        .from_collection(vec![1u32])
        .key_by(|v| *v)
        .process(Confused)
        .collect_sink();
    let error = env.execute("confused").await.unwrap_err().to_string();
    assert!(
        error.contains("state 'slot' holds u32, not alloc::string::String"),
        "{error}"
    );
}
