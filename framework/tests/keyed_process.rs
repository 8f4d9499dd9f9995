//! Keyed process functions with state and event-time timers, against a sequential oracle:
//! the temperature-rise alert (the seed's `TempIncreaseAlertFunction`, in event time).

use std::collections::BTreeMap;

use eichhorn::prelude::*;
use eichhorn::state::ValueState;
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

#[tokio::test]
async fn temperature_rise_alert_matches_the_oracle() {
    let data = readings();
    for (interval, out_of_orderness) in [(1_000, 0), (300, 200)] {
        let mut expected = oracle(&data, interval, out_of_orderness);
        expected.sort();
        assert!(!expected.is_empty());
        for parallelism in [1, 2, 4] {
            let env = StreamEnv::new();
            env.set_parallelism(parallelism);
            env.configure(|c| c.batch_records_max = 16);
            let alerts = env
                .from_collection(data.clone())
                .assign_timestamps_and_watermarks(
                    WatermarkStrategy::for_bounded_out_of_orderness_every_event(out_of_orderness)
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
                "interval {interval}, parallelism {parallelism}"
            );
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
