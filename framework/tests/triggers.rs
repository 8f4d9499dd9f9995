//! Triggers, evictors and count windows.

use std::collections::BTreeMap;

use eichhorn::operator::window::trigger::{
    ContinuousEventTimeTrigger, CountTrigger, PurgingTrigger, Trigger, TriggerContext,
    TriggerResult,
};
use eichhorn::operator::window::{TimeDomain, TimeEvictor, TimeWindow, WindowAssigner};
use eichhorn::prelude::*;
use eichhorn::time::WatermarkStrategy;

fn data() -> Vec<(u8, i64)> {
    (0..500i64)
        .map(|i| ((i * 7 % 5) as u8, i * 13 % 101))
        .collect()
}

fn per_key(data: &[(u8, i64)]) -> BTreeMap<u8, Vec<i64>> {
    let mut map: BTreeMap<u8, Vec<i64>> = BTreeMap::new();
    for (k, v) in data {
        map.entry(*k).or_default().push(*v);
    }
    map
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[tokio::test]
async fn count_windows_match_flink() {
    let data = data();
    let mut tumbling = Vec::new();
    let mut sliding = Vec::new();
    for (key, values) in per_key(&data) {
        // countWindow(3): full chunks only; a partial last chunk never fires.
        for chunk in values.chunks_exact(3) {
            tumbling.push((key, chunk.iter().sum::<i64>()));
        }
        // countWindow(4, 2): every second element, the sum of the last (up to) four.
        for n in (2..=values.len()).step_by(2) {
            sliding.push((key, values[n.saturating_sub(4)..n].iter().sum::<i64>()));
        }
    }
    for parallelism in [1, 2, 4] {
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        let source = env.from_collection(data.clone());
        let t = source
            .clone()
            .key_by(|e: &(u8, i64)| e.0)
            .count_window(3)
            .reduce(|a, b| (a.0, a.1 + b.1))
            .collect_sink();
        let s = source
            .key_by(|e: &(u8, i64)| e.0)
            .count_window_slide(4, 2)
            .reduce(|a, b| (a.0, a.1 + b.1))
            .collect_sink();
        env.execute("count windows").await.unwrap();
        assert_eq!(
            sorted(t.take()),
            sorted(tumbling.clone()),
            "tumbling, parallelism {parallelism}"
        );
        assert_eq!(
            sorted(s.take()),
            sorted(sliding.clone()),
            "sliding, parallelism {parallelism}"
        );
    }
}

/// Runs `(key, timestamp)` records with a watermark after each through a 10 s tumbling
/// event-time window with `configure` applied, collecting (window start, count) per firing.
async fn run_windowed<F>(records: Vec<(u8, i64)>, configure: F) -> Vec<(i64, usize)>
where
    F: FnOnce(eichhorn::api::WindowedStream<u8, (u8, i64)>) -> DataStream<(i64, usize)>,
{
    let env = StreamEnv::new();
    let windowed = env
        .from_collection(records)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(0)
                .with_timestamp_assigner(|e: &(u8, i64), _| e.1),
        )
        .key_by(|e: &(u8, i64)| e.0)
        .window(WindowAssigner::tumbling(TimeDomain::EventTime, 10_000, 0).unwrap());
    let out = configure(windowed).collect_sink();
    env.execute("triggers").await.unwrap();
    out.take()
}

#[operator(new = false)]
#[derive(Clone)]
struct CountPerWindow;

impl ProcessWindowFunction<u8, (u8, i64)> for CountPerWindow {
    type Out = (i64, usize);
    fn process(
        &mut self,
        _key: &u8,
        ctx: &eichhorn::operator::window::WindowContext,
        elements: Vec<(u8, i64)>,
        out: &mut Collector<'_, (i64, usize)>,
    ) {
        out.collect((ctx.window.start, elements.len()));
    }
}

#[tokio::test]
async fn continuous_event_time_trigger_fires_every_interval_and_at_the_end() {
    let records = vec![(1, 500), (1, 2_500), (1, 4_100), (1, 9_000), (1, 12_000)];
    let firings = run_windowed(records, |w| {
        w.trigger(ContinuousEventTimeTrigger::of(2_000))
            .process(CountPerWindow)
    })
    .await;
    // Flink's trace: the watermark follows each record, so the timer at 2000 fires after the
    // record at 2500 (2 elements), 4000 after 4100 (3); the watermark 8999 after 9000 fires
    // 6000 and 8000 (4 each) and registers min(10000, 9999); 9999 fires on the watermark after
    // 12 000 (4). Window [10000, 20000) starts its intervals at 12000: 14000, 16000, 18000 and
    // its end 19999 fire on the final watermark.
    let expected = vec![
        (0, 2),
        (0, 3),
        (0, 4),
        (0, 4),
        (0, 4),
        (10_000, 1),
        (10_000, 1),
        (10_000, 1),
        (10_000, 1),
    ];
    assert_eq!(firings, expected);
}

#[tokio::test]
async fn purging_trigger_drops_contents_after_each_firing() {
    let records = vec![(1, 1_000), (1, 2_000), (1, 11_000), (1, 3_000)];
    // With 5 s of allowed lateness the record at 3 000 re-opens window [0, 10000): with purging,
    // only that record is in it.
    let env = StreamEnv::new();
    let out = env
        .from_collection(records)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(0)
                .with_timestamp_assigner(|e: &(u8, i64), _| e.1),
        )
        .key_by(|e: &(u8, i64)| e.0)
        .window(WindowAssigner::tumbling(TimeDomain::EventTime, 10_000, 0).unwrap())
        .allowed_lateness(5_000)
        .trigger(PurgingTrigger::of(
            eichhorn::operator::window::trigger::EventTimeTrigger,
        ))
        .process(CountPerWindow)
        .collect_sink();
    env.execute("purging").await.unwrap();
    assert_eq!(out.take(), vec![(0, 2), (0, 1), (10_000, 1)]);
}

/// Fires (and purges) as soon as an element's value reaches 10.
#[derive(Clone)]
struct FireOnBigValue;

impl Trigger<(u8, i64)> for FireOnBigValue {
    fn on_element<K: Ord + Clone + Send + 'static>(
        &mut self,
        element: &(u8, i64),
        _timestamp: Option<i64>,
        _window: &TimeWindow,
        _ctx: &mut TriggerContext<'_, K>,
    ) -> TriggerResult {
        if element.1 >= 10 {
            TriggerResult::FireAndPurge
        } else {
            TriggerResult::Continue
        }
    }
    fn clear<K: Ord + Clone + Send + 'static>(
        &mut self,
        _window: &TimeWindow,
        _ctx: &mut TriggerContext<'_, K>,
    ) {
    }
}

#[tokio::test]
async fn user_triggers_decide_when_windows_fire() {
    let env = StreamEnv::new();
    let out = env
        .from_collection(vec![(1u8, 3i64), (1, 4), (1, 12), (1, 1), (1, 10), (1, 2)])
        .key_by(|e: &(u8, i64)| e.0)
        .window(WindowAssigner::global())
        .trigger(FireOnBigValue)
        .reduce(|a, b| (a.0, a.1 + b.1))
        .collect_sink();
    env.execute("user trigger").await.unwrap();
    // 3+4+12, then 1+10; the trailing 2 never fires (global windows end with the input).
    assert_eq!(out.take(), vec![(1, 19), (1, 11)]);
}

#[tokio::test]
async fn time_evictor_keeps_recent_elements() {
    let records = vec![(1, 1_000), (1, 2_000), (1, 6_500), (1, 7_000)];
    let firings = run_windowed(records, |w| {
        w.evictor(TimeEvictor::of(5_000)).process(CountPerWindow)
    })
    .await;
    // At the window's end the newest element is at 7 000: 1 000 and 2 000 (<= 2 000) go.
    assert_eq!(firings, vec![(0, 2)]);
}

#[tokio::test]
async fn a_merging_assigner_rejects_a_trigger_that_cannot_merge() {
    let env = StreamEnv::new();
    let _ = env
        .from_collection(vec![(1u8, 1i64)])
        .key_by(|e: &(u8, i64)| e.0)
        .window(WindowAssigner::session(TimeDomain::EventTime, 100).unwrap())
        .trigger(CountTrigger::of(2))
        .reduce(|a, _| a)
        .collect_sink();
    let error = env.execute("bad trigger").await.unwrap_err().to_string();
    assert!(error.contains("does not support merging"), "{error}");
}
