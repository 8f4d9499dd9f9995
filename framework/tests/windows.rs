//! Window oracle tests: event-time windows at parallelism 1, 2 and 4 against a sequential
//! replay of Flink's window semantics (watermark after every record, per-window lateness,
//! re-firing on late records within allowed lateness, session merging, late side output).

use std::collections::BTreeMap;

use eichhorn::operator::window::{TimeDomain, TimeWindow, WindowAssigner, WindowContext};
use eichhorn::prelude::*;
use eichhorn::time::WatermarkStrategy;

type Reading = (u32, i64, i64); // (sensor, timestamp, temperature)
type Firing = (u32, i64, i64, i64); // (sensor, window start, window end, min temperature)

/// Readings with jitter (out of order) and a few very late ones.
fn readings() -> Vec<Reading> {
    let mut state = 12_345u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    (0..600i64)
        .map(|i| {
            let sensor = (next() % 5) as u32;
            let jitter = (next() % 900) as i64;
            let very_late = if next() % 25 == 0 { 4_000 } else { 0 };
            let timestamp = (i * 97 - jitter - very_late).max(0);
            let temperature = (next() % 400) as i64 - 100;
            (sensor, timestamp, temperature)
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Tumbling(i64),
    Sliding(i64, i64),
    Session(i64),
}

fn assign(kind: Kind, ts: i64) -> Vec<TimeWindow> {
    match kind {
        Kind::Tumbling(size) => {
            let start = ts - ts.rem_euclid(size);
            vec![TimeWindow::new(start, start + size)]
        }
        Kind::Sliding(size, slide) => {
            let last = ts - ts.rem_euclid(slide);
            let mut out = Vec::new();
            let mut start = last;
            while start > ts - size {
                out.push(TimeWindow::new(start, start + size));
                start -= slide;
            }
            out
        }
        Kind::Session(gap) => vec![TimeWindow::new(ts, ts + gap)],
    }
}

struct InFlight {
    window: TimeWindow,
    min: i64,
    timer_pending: bool,
}

/// The sequential replay: returns (firings, late records).
fn oracle(
    kind: Kind,
    out_of_orderness: i64,
    lateness: i64,
    data: &[Reading],
) -> (Vec<Firing>, Vec<Reading>) {
    let mut windows: BTreeMap<u32, Vec<InFlight>> = BTreeMap::new();
    let mut firings = Vec::new();
    let mut late = Vec::new();
    let mut watermark = i64::MIN;
    let mut max_ts = i64::MIN;
    let is_late = |w: &TimeWindow, watermark: i64| w.end - 1 + lateness <= watermark;
    let advance =
        |windows: &mut BTreeMap<u32, Vec<InFlight>>, firings: &mut Vec<Firing>, watermark: i64| {
            for (sensor, list) in windows.iter_mut() {
                for w in list.iter_mut() {
                    if w.timer_pending && w.window.end - 1 <= watermark {
                        w.timer_pending = false;
                        firings.push((*sensor, w.window.start, w.window.end, w.min));
                    }
                }
                list.retain(|w| !is_late(&w.window, watermark));
            }
        };
    for &(sensor, ts, temperature) in data {
        let list = windows.entry(sensor).or_default();
        let mut accepted = false;
        for new_window in assign(kind, ts) {
            let (result, min) = if let Kind::Session(_) = kind {
                // Merge transitively with every in-flight window the cover intersects.
                let mut cover = new_window;
                let mut min = temperature;
                while let Some(i) = list
                    .iter()
                    .position(|w| w.window.start <= cover.end && w.window.end >= cover.start)
                {
                    let merged = list.remove(i);
                    cover = TimeWindow::new(
                        cover.start.min(merged.window.start),
                        cover.end.max(merged.window.end),
                    );
                    min = min.min(merged.min);
                }
                if is_late(&cover, watermark) {
                    continue;
                }
                list.push(InFlight {
                    window: cover,
                    min,
                    timer_pending: false,
                });
                (cover, min)
            } else {
                if is_late(&new_window, watermark) {
                    continue;
                }
                match list.iter_mut().find(|w| w.window == new_window) {
                    Some(w) => {
                        w.min = w.min.min(temperature);
                        (new_window, w.min)
                    }
                    None => {
                        list.push(InFlight {
                            window: new_window,
                            min: temperature,
                            timer_pending: false,
                        });
                        (new_window, temperature)
                    }
                }
            };
            accepted = true;
            let entry = list
                .iter_mut()
                .find(|w| w.window == result)
                .expect("in flight");
            if result.end - 1 <= watermark {
                firings.push((sensor, result.start, result.end, min));
            } else {
                entry.timer_pending = true;
            }
        }
        if !accepted {
            late.push((sensor, ts, temperature));
        }
        max_ts = max_ts.max(ts);
        let next = max_ts - out_of_orderness - 1;
        if next > watermark {
            watermark = next;
            advance(&mut windows, &mut firings, watermark);
        }
    }
    advance(&mut windows, &mut firings, i64::MAX);
    (firings, late)
}

#[operator(new = false)]
#[derive(Clone)]
struct WithWindow;

impl ProcessWindowFunction<u32, Reading> for WithWindow {
    type Out = Firing;
    fn process(
        &mut self,
        sensor: &u32,
        ctx: &WindowContext,
        elements: Vec<Reading>,
        out: &mut Collector<'_, Firing>,
    ) {
        for (_, _, min) in elements {
            out.collect((*sensor, ctx.window.start, ctx.window.end, min));
        }
    }
}

async fn run(
    kind: Kind,
    out_of_orderness: i64,
    lateness: i64,
    parallelism: u32,
    data: &[Reading],
) -> (Vec<Firing>, Vec<Reading>, u64) {
    let env = StreamEnv::new();
    env.set_parallelism(parallelism);
    env.configure(|c| c.batch_records_max = 16);
    let assigner = match kind {
        Kind::Tumbling(size) => WindowAssigner::tumbling(TimeDomain::EventTime, size, 0),
        Kind::Sliding(size, slide) => {
            WindowAssigner::sliding(TimeDomain::EventTime, size, slide, 0)
        }
        Kind::Session(gap) => WindowAssigner::session(TimeDomain::EventTime, gap),
    }
    .unwrap();
    let late_tag = OutputTag::<Reading>::new("late");
    let firings = env
        .from_collection(data.to_vec())
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(out_of_orderness)
                .with_timestamp_assigner(|r: &Reading, _| r.1),
        )
        // One assigner sees the whole stream, as in the oracle (and the examples' contract).
        .set_parallelism(1)
        .key_by(|r: &Reading| r.0)
        .window(assigner)
        .allowed_lateness(lateness)
        .side_output_late_data(&late_tag)
        .reduce_with_process(|a, b| if b.2 < a.2 { b } else { a }, WithWindow);
    let late = firings.side_output(&late_tag).collect_sink();
    let firings = firings.collect_sink();
    let result = env.execute("windows").await.unwrap();
    let late_count: u64 = result.operators.iter().map(|m| m.late_records).sum();
    (firings.take(), late.take(), late_count)
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[tokio::test]
async fn event_time_windows_match_flink_semantics() {
    let data = readings();
    let kinds = [
        Kind::Tumbling(2_000),
        Kind::Sliding(3_000, 1_000),
        Kind::Session(250),
    ];
    for kind in kinds {
        for (out_of_orderness, lateness) in [(0, 0), (500, 0), (0, 1_500), (300, 800)] {
            let (expected, expected_late) = oracle(kind, out_of_orderness, lateness, &data);
            assert!(!expected.is_empty());
            for parallelism in [1, 2, 4] {
                let (firings, late, late_count) =
                    run(kind, out_of_orderness, lateness, parallelism, &data).await;
                let context = format!(
                    "{kind:?}, out of orderness {out_of_orderness}, lateness {lateness}, parallelism {parallelism}"
                );
                assert_eq!(sorted(firings), sorted(expected.clone()), "{context}");
                assert_eq!(sorted(late), sorted(expected_late.clone()), "{context}");
                assert_eq!(late_count, expected_late.len() as u64, "{context}");
            }
        }
    }
}

#[tokio::test]
async fn late_records_are_counted_even_without_side_output() {
    let env = StreamEnv::new();
    let out = env
        .from_collection(vec![(1u32, 10_000i64, 1i64), (1, 100, 2), (1, 10_500, 3)])
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(0)
                .with_timestamp_assigner(|r: &Reading, _| r.1),
        )
        .key_by(|r: &Reading| r.0)
        .window(WindowAssigner::tumbling(TimeDomain::EventTime, 1_000, 0).unwrap())
        .reduce(|a, b| if b.2 < a.2 { b } else { a })
        .collect_sink();
    let result = env.execute("late").await.unwrap();
    // The third record joins the first one's window; the second is too late for its window.
    assert_eq!(out.take(), vec![(1, 10_000, 1)]);
    let window = result
        .operators
        .iter()
        .find(|m| m.name.starts_with("Window"))
        .unwrap();
    assert_eq!(window.late_records, 1);
}

#[tokio::test]
async fn records_without_timestamps_fail_event_time_windows_clearly() {
    let env = StreamEnv::new();
    let _ = env
        .from_collection(vec![(1u32, 0i64, 0i64)])
        .key_by(|r: &Reading| r.0)
        .window(WindowAssigner::tumbling(TimeDomain::EventTime, 1_000, 0).unwrap())
        .reduce(|a, _| a)
        .collect_sink();
    let error = env.execute("no timestamps").await.unwrap_err().to_string();
    assert!(
        error.contains("assign timestamps before windowing"),
        "{error}"
    );
}

#[tokio::test]
async fn window_all_sees_every_key_in_one_window() {
    let env = StreamEnv::new();
    env.set_parallelism(3);
    let totals = env
        .from_generator(1_000, |g| (g as i64) * 10)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|t: &i64, _| *t),
        )
        .window_all(WindowAssigner::tumbling(TimeDomain::EventTime, 2_500, 0).unwrap())
        .aggregate(Count)
        .collect_sink();
    let result = env.execute("window all").await.unwrap();
    let window = result
        .operators
        .iter()
        .find(|m| m.name.starts_with("Window"))
        .unwrap();
    assert_eq!(window.parallelism, 1);
    // 10 000 ms of timestamps in 2 500 ms windows: 250 elements each, whatever the interleaving
    // of the 3 generator subtasks (their watermarks advance together at the single window).
    let mut totals = totals.take();
    totals.sort();
    assert_eq!(totals.iter().sum::<u64>(), 1_000);
    assert_eq!(totals.len(), 4, "{totals:?}");
}

#[operator(new = false)]
#[derive(Clone)]
struct Count;

impl AggregateFunction<i64> for Count {
    type Acc = u64;
    type Out = u64;
    fn create_accumulator(&mut self) -> u64 {
        0
    }
    fn add(&mut self, _value: i64, acc: u64) -> u64 {
        acc + 1
    }
    fn get_result(&mut self, acc: &u64) -> u64 {
        *acc
    }
    fn merge(&mut self, a: u64, b: u64) -> u64 {
        a + b
    }
}

/// Emits one record per poll, then waits for the idle interval: records spread over virtual
/// processing time.
#[operator(new = false)]
#[derive(Clone)]
struct OnePerPoll {
    next: u32,
    count: u32,
    idle: bool,
}

impl SourceFunction<u32> for OnePerPoll {
    fn poll_next(&mut self, ctx: &mut SourceContext<'_, u32>) -> Result<SourcePoll, FunctionError> {
        if self.next == self.count {
            return Ok(SourcePoll::Finished);
        }
        self.idle = !self.idle;
        if self.idle {
            return Ok(SourcePoll::Idle);
        }
        ctx.collect(self.next);
        self.next += 1;
        Ok(SourcePoll::MoreAvailable)
    }
}

#[operator(new = false)]
#[derive(Clone)]
struct Spans;

impl ProcessWindowFunction<u32, u32> for Spans {
    type Out = (i64, i64, usize);
    fn process(
        &mut self,
        _key: &u32,
        ctx: &WindowContext,
        elements: Vec<u32>,
        out: &mut Collector<'_, (i64, i64, usize)>,
    ) {
        out.collect((ctx.window.start, ctx.window.end, elements.len()));
    }
}

#[tokio::test(start_paused = true)]
async fn processing_time_windows_fire_on_the_runtime_clock() {
    let env = StreamEnv::new();
    env.configure(|c| c.source_idle_poll_ms = 10);
    let spans = env
        .add_source(
            OnePerPoll {
                next: 0,
                count: 100,
                idle: false,
            },
            "one per poll",
        )
        .key_by(|_| 0u32)
        .window(WindowAssigner::tumbling(TimeDomain::ProcessingTime, 100, 0).unwrap())
        .process(Spans)
        .collect_sink();
    env.execute("processing time").await.unwrap();
    let spans = spans.take();
    // Windows are aligned to processing time (0 at job start on a paused runtime), distinct,
    // and together hold every record; pending windows fire at the end of the input.
    assert!(spans.len() > 3, "{spans:?}");
    assert_eq!(spans.iter().map(|s| s.2).sum::<usize>(), 100);
    for (start, end, _) in &spans {
        assert_eq!(end - start, 100);
        assert_eq!(start.rem_euclid(100), 0);
    }
    let mut starts: Vec<i64> = spans.iter().map(|s| s.0).collect();
    starts.dedup();
    assert_eq!(
        starts.len(),
        spans.len(),
        "each window fires once: {spans:?}"
    );
}

#[tokio::test]
async fn records_between_sliding_windows_are_dropped_and_counted_not_late() {
    let env = StreamEnv::new();
    let late_tag = OutputTag::<Reading>::new("late");
    let out = env
        .from_collection(vec![(1u32, 100i64, 5i64), (1, 1_500, 1), (1, 3_100, 7)])
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness_every_event(0)
                .with_timestamp_assigner(|r: &Reading, _| r.1),
        )
        .key_by(|r: &Reading| r.0)
        // 1 s windows every 3 s: [0, 1000), [3000, 4000), ...; 1 500 is in none of them.
        .window(WindowAssigner::sliding(TimeDomain::EventTime, 1_000, 3_000, 0).unwrap())
        .side_output_late_data(&late_tag)
        .reduce(|a, b| if b.2 < a.2 { b } else { a });
    let late = out.side_output(&late_tag).collect_sink();
    let out = out.collect_sink();
    let result = env.execute("gaps").await.unwrap();
    assert_eq!(sorted(out.take()), vec![(1, 100, 5), (1, 3_100, 7)]);
    assert_eq!(
        late.take(),
        vec![],
        "not late: Flink does not side-output it"
    );
    let window = result
        .operators
        .iter()
        .find(|m| m.name.starts_with("Window"))
        .unwrap();
    assert_eq!((window.late_records, window.dropped_records), (0, 1));
}

#[tokio::test]
async fn a_record_no_window_can_hold_goes_to_the_late_output_and_the_job_finishes() {
    let kinds = [
        WindowAssigner::tumbling(TimeDomain::EventTime, 1_000, 0).unwrap(),
        WindowAssigner::sliding(TimeDomain::EventTime, 2_000, 1_000, 0).unwrap(),
        WindowAssigner::session(TimeDomain::EventTime, 500).unwrap(),
    ];
    for assigner in kinds {
        let env = StreamEnv::new();
        let late_tag = OutputTag::<Reading>::new("late");
        let out = env
            // i64::MAX has no window whose end fits in an i64.
            .from_collection(vec![(1u32, 100i64, 5i64), (2, 200, 3), (1, i64::MAX, 1)])
            .assign_timestamps_and_watermarks(
                WatermarkStrategy::for_bounded_out_of_orderness_every_event(0)
                    .with_timestamp_assigner(|r: &Reading, _| r.1),
            )
            .set_parallelism(1)
            .key_by(|r: &Reading| r.0)
            .window(assigner)
            .side_output_late_data(&late_tag)
            .reduce(|a, b| if b.2 < a.2 { b } else { a });
        let late = out.side_output(&late_tag).collect_sink();
        let out = out.collect_sink();
        let result = env
            .execute("limits")
            .await
            .unwrap_or_else(|error| panic!("{assigner:?}: the job failed: {error}"));
        let mut firings = out.take();
        firings.sort();
        firings.dedup();
        assert_eq!(firings, vec![(1, 100, 5), (2, 200, 3)], "{assigner:?}");
        assert_eq!(late.take(), vec![(1, i64::MAX, 1)], "{assigner:?}");
        let window = result
            .operators
            .iter()
            .find(|m| m.name.starts_with("Window"))
            .unwrap();
        assert_eq!(
            (window.late_records, window.dropped_records),
            (1, 0),
            "{assigner:?}"
        );
    }
}
