//! Dynamic patterns: added, replaced and removed through a broadcast stream while the job runs,
//! in event time, against a sequential oracle at parallelism 1, 2 and 4; a description that does
//! not compile is rejected and counted, never a failure; the patterns survive a savepoint.

use eichhorn::cep::{
    AfterMatchSkipStrategy, CEP, CmpOp, ConditionExpr, FieldAccess, PatternDescription,
    PatternUpdate, StageDescription, StageLink, Value,
};
use eichhorn::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Temp {
    sensor: u32,
    celsius: i64,
    ts: i64,
}

impl FieldAccess for Temp {
    fn field(&self, name: &str) -> Option<Value> {
        match name {
            "celsius" => Some(Value::Int(self.celsius)),
            "sensor" => Some(Value::Int(i64::from(self.sensor))),
            _ => None,
        }
    }
}

/// 2,000 readings of 7 sensors, 5 ms apart, out of order by up to 40 ms.
fn temps() -> Vec<Temp> {
    let mut state = 3u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    (0..2_000i64)
        .map(|i| Temp {
            sensor: (next() % 7) as u32,
            celsius: (next() % 45) as i64,
            ts: (i * 5 - (next() % 40) as i64).max(0),
        })
        .collect()
}

fn at_least(celsius: i64) -> ConditionExpr {
    ConditionExpr::compare("celsius", CmpOp::Ge, Value::Int(celsius))
}

fn two_hot(threshold: i64) -> PatternDescription {
    PatternDescription {
        id: "two-hot".into(),
        stages: vec![
            StageDescription::new("a", StageLink::Begin, at_least(threshold)),
            StageDescription::new("b", StageLink::Next, at_least(threshold)),
        ],
        within_ms: None,
        skip: AfterMatchSkipStrategy::NoSkip,
    }
}

fn cold_then_hot() -> PatternDescription {
    PatternDescription {
        id: "cold-then-hot".into(),
        stages: vec![
            StageDescription::new(
                "cold",
                StageLink::Begin,
                ConditionExpr::compare("celsius", CmpOp::Lt, Value::Int(5)),
            ),
            StageDescription::new("hot", StageLink::FollowedBy, at_least(40)),
        ],
        within_ms: Some(300),
        skip: AfterMatchSkipStrategy::NoSkip,
    }
}

/// `(timestamp, update)`: two-hot from 0, cold-then-hot from 2,000, two-hot at 35 from 4,000,
/// a malformed one at 5,000, two-hot removed from 7,000.
fn updates() -> Vec<(i64, PatternUpdate)> {
    let mut malformed = two_hot(1);
    malformed.id = "broken".into();
    malformed.stages[1].link = StageLink::Begin;
    vec![
        (0, PatternUpdate::Upsert(two_hot(30))),
        (2_000, PatternUpdate::Upsert(cold_then_hot())),
        (4_000, PatternUpdate::Upsert(two_hot(35))),
        (5_000, PatternUpdate::Upsert(malformed)),
        (7_000, PatternUpdate::Remove("two-hot".into())),
    ]
}

/// The oracle: per sensor in time order; two-hot pairs of consecutive readings in the same
/// version's span, both at least its threshold; cold-then-hot from 2,000: a cold reading and
/// the first later reading of at least 40, less than 300 ms later.
fn oracle() -> Vec<String> {
    let mut per_sensor: std::collections::BTreeMap<u32, Vec<(i64, usize, i64)>> =
        Default::default();
    for (arrival, t) in temps().into_iter().enumerate() {
        per_sensor
            .entry(t.sensor)
            .or_default()
            .push((t.ts, arrival, t.celsius));
    }
    let two_hot_version = |ts: i64| match ts {
        ..4_000 => Some((1, 30)),
        4_000..7_000 => Some((2, 35)),
        _ => None,
    };
    let mut lines = Vec::new();
    for (sensor, mut readings) in per_sensor {
        readings.sort_unstable();
        for (i, &(ts, _, celsius)) in readings.iter().enumerate() {
            if let (Some(&(next_ts, _, next_c)), Some((v, threshold))) =
                (readings.get(i + 1), two_hot_version(ts))
                && two_hot_version(next_ts) == Some((v, threshold))
                && celsius >= threshold
                && next_c >= threshold
            {
                lines.push(format!("two-hot,{sensor},{ts},{next_ts}"));
            }
            if ts >= 2_000 && celsius < 5 {
                let hot = readings[i + 1..].iter().find(|r| r.2 >= 40);
                if let Some(&(hot_ts, _, _)) = hot
                    && hot_ts - ts < 300
                {
                    lines.push(format!("cold-then-hot,{sensor},{ts},{hot_ts}"));
                }
            }
        }
    }
    lines.sort();
    lines
}

async fn run(parallelism: u32) -> (Vec<String>, Vec<String>, u64) {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    env.configure(|c| c.batch_records_max = 16);
    let updates = env
        .from_collection(updates())
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(0)
                .with_timestamp_assigner(|u: &(i64, PatternUpdate), _| u.0),
        )
        .set_parallelism(1)
        .map(|(_, update)| update)
        .set_parallelism(1);
    let temps = env
        .from_collection(temps())
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(50)
                .with_timestamp_assigner(|t: &Temp, _| t.ts),
        )
        .set_parallelism(1)
        .key_by(|t: &Temp| t.sensor);
    let rejected = OutputTag::<String>::new("rejected");
    let matches = CEP::dynamic_patterns(temps, updates)
        .side_output_rejected_updates(&rejected)
        .select(|m| {
            let events = m.events();
            let (first, last) = (&events[0].event, &events[events.len() - 1].event);
            format!("{},{},{},{}", m.pattern(), first.sensor, first.ts, last.ts)
        });
    let rejected = matches.side_output(&rejected).collect_sink();
    let matches = matches.collect_sink();
    let result = env.execute("dynamic patterns").await.expect("runs");
    let dropped = result.operators.iter().map(|m| m.dropped_records).sum();
    let late: u64 = result.operators.iter().map(|m| m.late_records).sum();
    assert_eq!(late, 0, "the input has no late readings");
    let mut lines = matches.take();
    lines.sort();
    (lines, rejected.take(), dropped)
}

#[tokio::test(flavor = "current_thread")]
async fn patterns_added_replaced_and_removed_in_event_time_match_the_oracle() {
    let expected = oracle();
    assert!(
        expected.iter().filter(|l| l.starts_with("two-hot")).count() > 20
            && expected.iter().filter(|l| l.starts_with("cold")).count() > 10,
        "a meaningful input"
    );
    for parallelism in [1, 2, 4] {
        let (lines, rejected, dropped) = run(parallelism).await;
        assert_eq!(lines, expected, "P={parallelism}");
        assert_eq!(
            rejected.len(),
            1,
            "P={parallelism}: reported once: {rejected:?}"
        );
        assert!(
            rejected[0].contains("cannot be a second Begin"),
            "{rejected:?}"
        );
        assert_eq!(dropped, 1, "P={parallelism}");
    }
}
